//! Time as the manifest and the config write it: RFC 3339 timestamps (the
//! `time` crate's calendar: a date that does not exist, such as 31
//! November, is refused, never moved) as Unix seconds, and durations.
//!
//! Durations stay hand-written: the config's grammar is a number and one
//! unit (`250ms`, `300s` or `300`, `5m`, `2h`, `1d`), which a general
//! duration crate would widen (months, years, `1h 30m`) for no gain.

use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix seconds (the
/// fraction dropped). A leap second is taken only where one can be, the
/// last second of a month in UTC, as the second before it. An instant
/// outside the years 0000 to 9999 in UTC (`0000-01-01T00:00:00+00:30`) is
/// refused: it could not be written back, and `format_rfc3339` would move it.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || format!("not an RFC 3339 time: {text:?}");
    // RFC 3339 separates date and time with `T` (any case), or a space;
    // `time` would take any byte there.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return Err(bad());
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .ok()
        .filter(|secs| (FIRST..=LAST).contains(secs))
        .ok_or_else(bad)
}

/// The instants RFC 3339 can write: years 0000 to 9999.
const FIRST: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// Format Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`. An instant outside the
/// years 0000 to 9999 (a ramp of a billion minutes) is shown as the first
/// or last one RFC 3339 can write.
pub fn format_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs.clamp(FIRST, LAST))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".into())
}

/// Unix seconds as a person reads them (`status`): RFC 3339 when the
/// instant is one it can write, else said to be out of range with the
/// raw seconds. A state time out there (a clock set wildly wrong, a hand
/// edited `state.json`) is shown as it is, not moved to year 0000 or 9999
/// as [`format_rfc3339`] must (it writes files other programs read).
pub fn show_rfc3339(secs: i64) -> String {
    match (FIRST..=LAST).contains(&secs) {
        true => format_rfc3339(secs),
        false => format!("out of range (Unix time {secs})"),
    }
}

/// Parse a duration such as `300s`, `5m`, `2h`, `1d`, `250ms` or a bare
/// number of seconds. A number too large for its unit is an error, never
/// saturated: callers bound each duration (see `config`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    duration_of(text)?.ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// As [`parse_duration`], but a number too large for its unit is
/// `Duration::MAX`: builds before e3950a4 saturated it and loaded the
/// config, which `config` now clamps to the key's maximum instead of
/// refusing (an upgrade keeps configs).
pub fn parse_duration_saturating(text: &str) -> Result<std::time::Duration, String> {
    Ok(duration_of(text)?.unwrap_or(std::time::Duration::MAX))
}

/// The duration written, or `None` when its number is too large for its unit.
fn duration_of(text: &str) -> Result<Option<std::time::Duration>, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("not a duration: {text:?} (expected e.g. 300s, 5m, 2h)");
    let mult = match unit.trim() {
        "" | "s" | "ms" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    let n: u64 = match num.parse() {
        Ok(n) => n,
        Err(_) if !num.is_empty() => return Ok(None),
        Err(_) => return Err(bad()),
    };
    if unit.trim() == "ms" {
        return Ok(Some(std::time::Duration::from_millis(n)));
    }
    Ok(n.checked_mul(mult).map(std::time::Duration::from_secs))
}

/// Say a duration the way a config file writes it: `90s`, `2h`, `250ms`.
pub fn format_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    match secs {
        0 => "0s".into(),
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_rfc3339_cannot_write_is_shown_out_of_range_with_its_unix_seconds() {
        assert_eq!(show_rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(show_rfc3339(LAST), "9999-12-31T23:59:59Z");
        assert_eq!(show_rfc3339(FIRST), "0000-01-01T00:00:00Z");
        assert_eq!(
            show_rfc3339(LAST + 1),
            "out of range (Unix time 253402300800)"
        );
        assert_eq!(
            show_rfc3339(FIRST - 1),
            "out of range (Unix time -62167219201)"
        );
        assert_eq!(
            show_rfc3339(i64::MIN),
            "out of range (Unix time -9223372036854775808)"
        );
    }

    #[test]
    fn round_trips_known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00Z"), Ok(1_795_168_800));
        assert_eq!(format_rfc3339(1_795_168_800), "2026-11-20T10:00:00Z");
        assert_eq!(
            parse_rfc3339("2026-11-20T11:00:00+01:00"),
            Ok(1_795_168_800)
        );
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00.250Z"), Ok(1_795_168_800));
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2026-11-20T10:00:00-23:59").is_ok());
        for t in [0i64, 951_782_400, 4_102_444_800, -86_400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t));
        }
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2026-11-20",
            "2026-13-01T00:00:00Z",
            "2026-11-20T10:00:00",
            "2026-11-20T25:00:00Z",
            "2026-11-20T10:00:00+0100",
            "2026-11-20Tx0:00:00Z",
            "２０２６-11-20T10:00:00Z",
            // Found by the timefmt fuzz target: dates that do not exist were
            // accepted and silently moved (November 31st = December 1st).
            "2026-11-31T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2100-02-29T10:00:00Z",
            "2026-04-31T10:00:00Z",
            "2026-11-20T10:00:00+24:00",
            "2026-11-20T10:00:00-99:00",
            "2026-11-20T10:00:00+01:60",
            // A leap second only ends a month (UTC): others do not exist.
            "2026-11-20T10:00:60Z",
            // A separator other than T, t or space.
            "2026-11-20x10:00:00Z",
            "2026-11-20T10:00:00Zjunk",
            // Found by the timefmt fuzz target: before year 0000 in UTC, an
            // instant RFC 3339 cannot write (it came back moved).
            "0000-01-01t00:00:00+00:30",
            "9999-12-31T23:59:59-00:01",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn accepts_what_rfc_3339_allows() {
        let t = 1_795_168_800;
        assert_eq!(parse_rfc3339("2026-11-20t10:00:00z"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-20 10:00:00Z"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00.999999999999Z"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-20T10:00:00-00:00"), Ok(t));
        // The last second of June 2016 was a leap second: taken as the
        // second before it.
        assert_eq!(
            parse_rfc3339("2016-06-30T23:59:60Z"),
            parse_rfc3339("2016-06-30T23:59:59Z")
        );
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00Z"), Ok(FIRST));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(LAST));
    }

    #[test]
    fn instants_beyond_rfc_3339_years_format_as_its_bounds() {
        assert_eq!(format_rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(LAST + 1), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-86_400), "1969-12-31T00:00:00Z");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("300s").map(|d| d.as_secs()), Ok(300));
        assert_eq!(parse_duration("5m").map(|d| d.as_secs()), Ok(300));
        assert_eq!(parse_duration("2h").map(|d| d.as_secs()), Ok(7200));
        assert_eq!(parse_duration("45").map(|d| d.as_secs()), Ok(45));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("250ms").map(|d| d.as_millis()), Ok(250));
    }

    #[test]
    fn durations_too_long_for_their_unit_are_errors_not_saturated() {
        for text in [
            "18446744073709551615d",
            "18446744073709551615h",
            "307445734561825861m",
            "99999999999999999999s",
        ] {
            let e = parse_duration(text).expect_err(text);
            assert!(e.contains("too long"), "{text}: {e}");
            // What the config clamps: longer than any key's maximum.
            assert_eq!(
                parse_duration_saturating(text),
                Ok(std::time::Duration::MAX),
                "{text}"
            );
        }
        assert!(parse_duration_saturating("2 fortnights").is_err());
        assert_eq!(
            parse_duration_saturating("2h").map(|d| d.as_secs()),
            Ok(7200)
        );
        assert_eq!(
            parse_duration("18446744073709551615s").map(|d| d.as_secs()),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn formats_durations_as_written() {
        let s = std::time::Duration::from_secs;
        assert_eq!(format_duration(s(90)), "90s");
        assert_eq!(format_duration(s(120)), "2m");
        assert_eq!(format_duration(s(7200)), "2h");
        assert_eq!(format_duration(s(86400)), "1d");
        assert_eq!(format_duration(s(0)), "0s");
        assert_eq!(
            format_duration(std::time::Duration::from_millis(1500)),
            "1500ms"
        );
    }
}
