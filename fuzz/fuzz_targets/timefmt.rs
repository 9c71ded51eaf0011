//! `parse_rfc3339` and `parse_duration` on arbitrary text. Properties: no
//! panic; a parsed instant formats to a canonical form that parses back to
//! the same instant.
#![no_main]

use abupdate::timefmt::{format_rfc3339, parse_duration, parse_rfc3339};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = parse_rfc3339(&text) {
        let canonical = format_rfc3339(t);
        assert_eq!(
            parse_rfc3339(&canonical),
            Ok(t),
            "{text:?} -> {t} -> {canonical:?}"
        );
        // A date that is already in canonical form (UTC, no fraction, no
        // leap second) formats back to itself: no calendar date that does
        // not exist (February 31st) is accepted and silently moved.
        let b = text.as_bytes();
        if b.len() == 20 && b[10] == b'T' && b[19] == b'Z' && &text[17..19] != "60" {
            assert_eq!(canonical, text, "accepted a date that does not exist");
        }
    }
    let _ = parse_duration(&text);
});
