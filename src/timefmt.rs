//! UTC timestamps in the one form the manifest uses (RFC 3339, `Z` or an
//! offset), as Unix seconds. Hand-written so the binary carries no calendar
//! crate; the civil-date arithmetic is Howard Hinnant's `days_from_civil`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn number(s: &str, what: &str) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {s:?}"));
    }
    s.parse::<i64>().map_err(|_| format!("bad {what} {s:?}"))
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || format!("not an RFC 3339 time: {text:?}");
    if !text.is_ascii() || text.len() < 20 {
        return Err(bad());
    }
    let (date, rest) = text.split_at(10);
    let sep = rest.as_bytes()[0];
    if sep != b'T' && sep != b't' && sep != b' ' {
        return Err(bad());
    }
    let rest = &rest[1..];
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let (year, month, day) = (
        number(d[0], "year")?,
        number(d[1], "month")?,
        number(d[2], "day")?,
    );
    if rest.len() < 9 {
        return Err(bad());
    }
    let (clock, mut zone) = rest.split_at(8);
    let c: Vec<&str> = clock.split(':').collect();
    if c.len() != 3 || c.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let (hour, minute, second) = (
        number(c[0], "hour")?,
        number(c[1], "minute")?,
        number(c[2], "second")?,
    );
    if let Some(frac) = zone.strip_prefix('.') {
        let digits = frac.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        zone = &frac[digits..];
    }
    let offset = match zone {
        "Z" | "z" => 0,
        _ if zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) => {
            let (h, m) = (
                number(&zone[1..3], "offset")?,
                number(&zone[4..6], "offset")?,
            );
            if &zone[3..4] != ":" {
                return Err(bad());
            }
            // RFC 3339 time-numoffset: hours 00-23, minutes 00-59.
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let secs = h * 3600 + m * 60;
            if zone.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset)
}

/// Format Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parse a duration such as `300s`, `5m`, `2h`, `1d`, `250ms` or a bare
/// number of seconds. A number too large for its unit is an error, never
/// saturated: callers bound each duration (see `config`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("not a duration: {text:?} (expected e.g. 300s, 5m, 2h)");
    let n: u64 = match num.parse() {
        Ok(n) => n,
        Err(_) if !num.is_empty() => return Err(format!("{text:?} is too long a duration")),
        Err(_) => return Err(bad()),
    };
    let mult = match unit.trim() {
        "" | "s" => 1,
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
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
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
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
        }
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
