//! Outside bytes (a bootloader variable, a child's output) as text for a
//! person: one line, nothing a terminal acts on, nothing lost; and a
//! bounded cut of it for a one-line message.

use std::fmt::Write as _;

/// Outside bytes (an env variable, a script's answer) as one line of text
/// that maps back to exactly those bytes: UTF-8 text as it is, except that
/// a backslash is written `\\`, and each byte of a control character
/// (C0, DEL, C1), of a bidirectional override, or that is not part of
/// valid UTF-8 is written `\xNN` (two lower-case hex digits): nothing
/// reaches a terminal raw. So `splash=\xff\xfe\x01` in `status` is the three bytes
/// FF FE 01, never a lossy replacement character.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                // A control character (C0, DEL, C1: a terminal may act on
                // U+009B as on ESC [) or a bidirectional override (it
                // reorders what follows on the screen): its UTF-8 bytes.
                c if acts_on_screen(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// UTF-16 from outside (an EFI variable's description or path) as
/// [`show`] writes text: each character as `show` writes its UTF-8, and a
/// unit that is no character (a lone surrogate) as `\u{XXXX}`, its value
/// in lower-case hex. Nothing is replaced, so two different names never
/// show the same.
pub fn show_utf16(units: &[u16]) -> String {
    let mut out = String::with_capacity(units.len());
    for c in char::decode_utf16(units.iter().copied()) {
        match c {
            Ok(c) => out.push_str(&show(c.encode_utf8(&mut [0u8; 4]).as_bytes())),
            Err(e) => {
                let _ = write!(out, "\\u{{{:04x}}}", e.unpaired_surrogate());
            }
        }
    }
    out
}

/// A path (a file name is outside bytes too) as [`show`] writes it: one
/// line, bytes that are not text as `\xNN`, nothing lost. The one way a
/// message, a log line or a `--json` document shows a path.
pub fn show_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    show(path.as_os_str().as_bytes())
}

/// Text already in [`show`]'s form (a value `show` wrote and the state
/// kept, such as a slot record's version read from os-release) as one
/// line for a person: kept as it is, so nothing is escaped twice
/// (`show_shown(&show(b)) == show(b)`); a character that acts on the
/// screen ([`acts_on_screen`]) in it (text an older build stored raw) is still
/// written `\xNN` as `show` writes it, so nothing reaches a terminal raw.
pub fn show_shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if acts_on_screen(c) => out.push_str(&show(c.to_string().as_bytes())),
            c => out.push(c),
        }
    }
    out
}

/// Whether `c` reorders text on the screen (the Unicode bidirectional
/// marks, embeddings, overrides and isolates).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` acts on what a person or a log reads instead of showing:
/// a control character (C0, DEL, C1), a bidirectional control, or the
/// Unicode line and paragraph separators (U+2028, U+2029: a line break to
/// Python's `splitlines`, JavaScript and many log pipelines, so one
/// message from outside could become two; found from outside, stop 58).
/// What every message and every record escapes.
pub fn acts_on_screen(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Marks where [`show_bounded`] cut.
pub const CUT: &str = "…";

/// Text already one line for a person (a usage error naming the argument
/// given) in at most `max` bytes: its start, marked [`CUT`] when cut, the
/// cut between two characters.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(CUT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &text[..end])
}

/// [`show`] of `bytes` in at most `max` bytes of text: when longer, only
/// its start, or (`from_end`) its end, marked cut with [`CUT`]. The cut
/// falls between two characters' (or bytes') renderings, never inside an
/// escape.
pub fn show_bounded(bytes: &[u8], max: usize, from_end: bool) -> String {
    let mut pieces: Vec<String> = Vec::new();
    for chunk in bytes.utf8_chunks() {
        let mut buf = [0u8; 4];
        pieces.extend(
            chunk
                .valid()
                .chars()
                .map(|c| show(c.encode_utf8(&mut buf).as_bytes())),
        );
        pieces.extend(chunk.invalid().iter().map(|b| show(&[*b])));
    }
    if pieces.iter().map(String::len).sum::<usize>() <= max {
        return pieces.concat();
    }
    let room = max.saturating_sub(CUT.len());
    let mut used = 0;
    let mut fits = |p: &&String| {
        used += p.len();
        used <= room
    };
    if from_end {
        let mut kept: Vec<&String> = pieces.iter().rev().take_while(&mut fits).collect();
        kept.reverse();
        let kept: String = kept.into_iter().map(String::as_str).collect();
        format!("{CUT}{kept}")
    } else {
        let kept: String = pieces.iter().take_while(fits).map(String::as_str).collect();
        format!("{kept}{CUT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of `show`, to prove it loses nothing.
    fn unshow(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                if b[i + 1] == b'\\' {
                    out.push(b'\\');
                    i += 2;
                } else {
                    assert_eq!(b[i + 1], b'x', "{s:?}");
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 4;
                }
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    /// An EFI variable's name from another tool: a lone surrogate is
    /// named by its value, never replaced (two names that differ only
    /// there must not show the same); the rest is what `show` writes.
    #[test]
    fn show_utf16_names_a_lone_surrogate_and_escapes_like_show() {
        let units = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
        assert_eq!(show_utf16(&units("abupdate A")), "abupdate A");
        assert_eq!(show_utf16(&units("\\EFI\x1b[2J")), "\\\\EFI\\x1b[2J");
        assert_eq!(show_utf16(&units("Ä😀")), "Ä😀");
        assert_eq!(show_utf16(&[0x41, 0xd800, 0x42]), "A\\u{d800}B");
        assert_eq!(show_utf16(&[0xdfff]), "\\u{dfff}");
        assert_ne!(show_utf16(&[0xd800]), show_utf16(&[0xd801]));
        assert_eq!(show_utf16(&[]), "");
    }

    #[test]
    fn cut_keeps_short_text_and_cuts_long_text_between_characters() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(100);
        let c = cut(&long, 51);
        assert!(c.len() <= 51 && c.ends_with(CUT), "{c}");
        assert!(c.trim_end_matches(CUT).chars().all(|ch| ch == 'é'), "{c}");
    }

    #[test]
    fn show_shown_keeps_what_show_wrote_and_escapes_what_it_would_have() {
        for bytes in [
            &b"1.0\xff"[..],
            b"C:\\x",
            b"1.0\xe2\x80\xae\x1b[2J",
            "gr\u{fc}n".as_bytes(),
        ] {
            assert_eq!(show_shown(&show(bytes)), show(bytes), "{bytes:?}");
        }
        // Raw text an older build stored: escaped, a backslash kept.
        assert_eq!(
            show_shown("1.0\u{1b}[2J\u{202e}"),
            "1.0\\x1b[2J\\xe2\\x80\\xae"
        );
        assert_eq!(show_shown("1.0\u{fffd}"), "1.0\u{fffd}");
    }

    #[test]
    fn show_escapes_only_what_is_not_printable_text_and_loses_nothing() {
        assert_eq!(show(b"A B"), "A B");
        assert_eq!(show("grün".as_bytes()), "grün");
        assert_eq!(show(b"\xff\xfe\x01"), "\\xff\\xfe\\x01");
        assert_eq!(show(b"C:\\x"), "C:\\\\x");
        assert_eq!(show(b"a\nb\x7f"), "a\\x0ab\\x7f");
        // A literal backslash-x in the text cannot be taken for an escape.
        assert_ne!(show(b"\\xff"), show(b"\xff"));
        let mut seed = 0x1234_5678_9abc_def1u64;
        for len in 0..64 {
            for _ in 0..32 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 24) as u8
                    })
                    .collect();
                let s = show(&v);
                assert!(!s.contains('\n'), "one line: {s:?}");
                assert_eq!(unshow(&s), v, "{s:?}");
            }
        }
    }

    #[test]
    fn terminal_controls_are_escaped_as_their_bytes() {
        // ESC [ 2 J, the 8-bit CSI (U+009B), a right-to-left override.
        assert_eq!(show(b"\x1b[2J"), "\\x1b[2J");
        assert_eq!(show("\u{9b}31m".as_bytes()), "\\xc2\\x9b31m");
        assert_eq!(show("a\u{202e}b".as_bytes()), "a\\xe2\\x80\\xaeb");
    }

    /// Found from outside (stop 58): U+2028 and U+2029 end a line for
    /// Python's `splitlines`, JavaScript and log pipelines, so an
    /// os-release value or a check's output could split one line in two.
    #[test]
    fn unicode_line_separators_and_the_arabic_letter_mark_are_escaped() {
        assert_eq!(show("1.0\u{2028}x".as_bytes()), "1.0\\xe2\\x80\\xa8x");
        assert_eq!(show("a\u{2029}b".as_bytes()), "a\\xe2\\x80\\xa9b");
        assert_eq!(show("a\u{61c}b".as_bytes()), "a\\xd8\\x9cb");
        assert_eq!(show_shown("1.0\u{2028}x"), "1.0\\xe2\\x80\\xa8x");
        assert_eq!(
            show_shown(&show("1.0\u{2029}".as_bytes())),
            show("1.0\u{2029}".as_bytes())
        );
        assert_eq!(
            unshow(&show("p\u{2028}q".as_bytes())),
            "p\u{2028}q".as_bytes()
        );
    }

    #[test]
    fn a_bounded_rendering_keeps_its_end_or_start_marked_cut() {
        assert_eq!(show_bounded(b"short", 300, true), "short");
        let long = vec![b'e'; 16 << 10];
        let end = show_bounded(&long, 300, true);
        assert!(end.len() <= 300 && end.starts_with(CUT), "{}", end.len());
        assert_eq!(end.len(), 300, "as much as fits");
        let start = show_bounded(&long, 300, false);
        assert!(start.len() <= 300 && start.ends_with(CUT));
        // Never inside an escape, nor a character: ends whole.
        let mixed: Vec<u8> = b"x\xff"
            .iter()
            .chain("ü".as_bytes())
            .copied()
            .cycle()
            .take(4000)
            .collect();
        for max in 290..310 {
            let s = show_bounded(&mixed, max, true);
            assert!(s.len() <= max, "{max}");
            let body = &s[CUT.len()..];
            assert!(
                body.starts_with('x') || body.starts_with("\\xff") || body.starts_with('ü'),
                "{max}: {body}"
            );
        }
    }
}
