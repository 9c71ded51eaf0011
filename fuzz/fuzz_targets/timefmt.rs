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
    }
    let _ = parse_duration(&text);
});
