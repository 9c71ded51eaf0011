//! When the timer acts: maintenance windows for reboots, jitter on polls,
//! exponential backoff after failures.
//!
//! Invariant: these are pure functions of the configuration, the time and
//! the failure count, so the fleet simulation and the tests judge exactly
//! what a host does. Windows use fixed UTC offsets (`zone = "+02:00"`):
//! named zones would need the tz database, which a minimal image may lack.

use std::time::Duration;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A weekly maintenance window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    /// Seconds after local midnight (`HH:MM`, or `HH:MM:SS`).
    pub start_second: u32,
    /// As configured, to the second (`90s` is 90 seconds, not a minute).
    pub length_seconds: u32,
    /// Local time = UTC + this.
    pub offset_seconds: i64,
}

/// `digits` as a number when it is 1 to `max_len` ASCII digits, nothing
/// else (no sign, no space: `str::parse` would take `+5` and `-30`).
fn digits(text: &str, max_len: usize) -> Option<u32> {
    (!text.is_empty() && text.len() <= max_len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `UTC`/`Z`, or `+HH:MM`/`-HH:MM` with two digits each, at most 14:00 (the
/// widest offset in use).
fn parse_offset(zone: &str) -> Result<i64, String> {
    if matches!(zone, "UTC" | "utc" | "Z") {
        return Ok(0);
    }
    let bad = || format!("zone {zone:?}: expected UTC or a fixed offset such as +02:00");
    let (sign, rest) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m) = (digits(h, 2).ok_or_else(bad)?, digits(m, 2).ok_or_else(bad)?);
    if m > 59 || h * 60 + m > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * (h as i64 * 3600 + m as i64 * 60))
}

/// `mon` or `monday` (any case) → its index, Monday first.
fn parse_day(day: &str) -> Option<usize> {
    let d = day.to_ascii_lowercase();
    DAYS.iter()
        .position(|n| *n == d)
        .or_else(|| DAY_NAMES.iter().position(|n| *n == d))
}

impl Window {
    /// `days`: names (`mon`…`sun`), `*` for every day; `start`: `HH:MM`
    /// (or `HH:MM:SS`); `length`: a duration (`2h`); `zone`: UTC unless
    /// given.
    pub fn parse(
        days: &[String],
        start: &str,
        length: &str,
        zone: Option<&str>,
    ) -> Result<Window, String> {
        let mut set = [false; 7];
        for d in days {
            if d == "*" {
                set = [true; 7];
                continue;
            }
            let i = parse_day(d).ok_or_else(|| {
                format!(
                    "day {d:?}: expected mon, tue, wed, thu, fri, sat, sun (or the full name) or *"
                )
            })?;
            set[i] = true;
        }
        if !set.iter().any(|&b| b) {
            return Err("names no day".into());
        }
        let bad_start = || format!("start {start:?}: expected HH:MM (or HH:MM:SS)");
        let (h, rest) = start.split_once(':').ok_or_else(bad_start)?;
        let (m, s) = match rest.split_once(':') {
            Some((m, s)) => (m, Some(s)),
            None => (rest, None),
        };
        let two = |t: &str| if t.len() == 2 { digits(t, 2) } else { None };
        let seconds = match s {
            None => Some(0),
            Some(s) => two(s),
        };
        let (h, m, s) = match (digits(h, 2), two(m), seconds) {
            (Some(h), Some(m), Some(s)) if h < 24 && m < 60 && s < 60 => (h, m, s),
            _ => return Err(bad_start()),
        };
        let length_text = length;
        let length = crate::timefmt::parse_duration(length_text)
            .map_err(|e| format!("length {length_text:?}: {e}"))?;
        if length < std::time::Duration::from_secs(60)
            || length > std::time::Duration::from_secs(7 * 86400)
        {
            return Err(format!(
                "length {length_text:?}: must be between 1 minute and 7 days"
            ));
        }
        if length.subsec_nanos() != 0 {
            return Err(format!("length {length_text:?}: whole seconds only"));
        }
        Ok(Window {
            days: set,
            start_second: (h * 60 + m) * 60 + s,
            length_seconds: length.as_secs() as u32,
            offset_seconds: zone.map(parse_offset).transpose()?.unwrap_or(0),
        })
    }

    /// The window as builds up to 213989b read it, for a config they
    /// accepted that [`Window::parse`] refuses (config: "upgrades keep
    /// configs"): a day is any word starting with a day's three letters
    /// (`thurs`), `start` is `H:M` with any number of digits, a `length`
    /// counts whole minutes up to 7 days (a number too large for its unit
    /// too), a `zone` is a sign and `H:M` up to 14:59, held to the widest
    /// offset in use (±14:00). What they refused is refused.
    pub fn parse_as_before(
        days: &[String],
        start: &str,
        length: &str,
        zone: Option<&str>,
    ) -> Option<Window> {
        let mut set = [false; 7];
        for d in days {
            let d = d.to_ascii_lowercase();
            if d == "*" {
                set = [true; 7];
                continue;
            }
            set[DAYS.iter().position(|n| d.starts_with(n))?] = true;
        }
        let (h, m) = start.split_once(':')?;
        let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => (h, m),
            _ => return None,
        };
        let minutes = crate::timefmt::parse_duration_saturating(length)
            .ok()?
            .as_secs()
            / 60;
        if !set.iter().any(|&b| b) || !(1..=7 * 24 * 60).contains(&minutes) {
            return None;
        }
        let offset = match zone {
            None | Some("UTC" | "utc" | "Z") => 0,
            Some(zone) => {
                let (sign, rest) = match zone.as_bytes().first() {
                    Some(b'+') => (1, &zone[1..]),
                    Some(b'-') => (-1, &zone[1..]),
                    _ => return None,
                };
                let (h, m) = rest.split_once(':')?;
                let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
                if h > 14 || m > 59 {
                    return None;
                }
                (sign * (h * 3600 + m * 60)).clamp(-14 * 3600, 14 * 3600)
            }
        };
        Some(Window {
            days: set,
            start_second: (h * 60 + m) * 60,
            length_seconds: (minutes * 60) as u32,
            offset_seconds: offset,
        })
    }

    /// The window as a config writes it: `thu,sat 02:00:00 for 2h at
    /// +02:00` (for messages).
    pub fn describe(&self) -> String {
        let days: Vec<&str> = DAYS
            .iter()
            .zip(self.days)
            .filter_map(|(name, on)| on.then_some(*name))
            .collect();
        let days = match days.len() {
            7 => "*".to_string(),
            _ => days.join(","),
        };
        let (s, o) = (self.start_second, self.offset_seconds.unsigned_abs());
        format!(
            "{days} {:02}:{:02}:{:02} for {} at {}{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            crate::timefmt::format_duration(Duration::from_secs(self.length_seconds.into())),
            if self.offset_seconds < 0 { '-' } else { '+' },
            o / 3600,
            o / 60 % 60
        )
    }

    /// Opening times (UTC seconds) of this window on the local days around `now`.
    fn openings_near(&self, now: i64) -> impl Iterator<Item = i64> + '_ {
        let local = now + self.offset_seconds;
        let today = local.div_euclid(86400);
        (-8..=8).filter_map(move |delta| {
            let day = today + delta;
            // 1970-01-01 was a Thursday (index 3 from Monday).
            let weekday = (day + 3).rem_euclid(7) as usize;
            self.days[weekday].then(|| day * 86400 + self.start_second as i64 - self.offset_seconds)
        })
    }

    /// Whether `now` (Unix time) is inside the window.
    pub fn contains(&self, now: i64) -> bool {
        let len = self.length_seconds as i64;
        self.openings_near(now)
            .any(|open| open <= now && now < open + len)
    }
}

/// Whether a reboot may happen now: no windows, or inside one.
pub fn may_reboot(windows: &[Window], now: i64) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

/// The next time a window opens after `now`, if any window is configured.
pub fn next_window(windows: &[Window], now: i64) -> Option<i64> {
    windows
        .iter()
        .flat_map(|w| w.openings_near(now))
        .filter(|&t| t > now)
        .min()
}

/// Delay before retrying after `failures` consecutive failed runs.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1).min(20))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Until when the timer backs off, given the `retry_after` in the state.
/// `None`: run now. A `retry_after` further ahead than `max` cannot come
/// from our backoff on this clock (it never schedules more than `max` from
/// the time of the failure): it was set under a clock that ran ahead, and
/// is not believed, so a wrong clock cannot park the host for years.
pub fn backing_off_until(retry_after: Option<i64>, now: i64, max: Duration) -> Option<i64> {
    let until = retry_after?;
    let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
    (until > now && until <= now.saturating_add(max)).then_some(until)
}

/// A uniformly random delay in `[0, max)`, from the kernel's randomness.
pub fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    let r = if ok {
        u64::from_le_bytes(bytes)
    } else {
        std::process::id() as u64 * 2654435761
    };
    Duration::from_millis(r % max.as_millis().max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::parse_rfc3339;

    fn t(s: &str) -> i64 {
        parse_rfc3339(s).expect(s)
    }

    fn days(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn window_on_given_days_in_utc() {
        // 2026-11-24 is a Tuesday.
        let w = Window::parse(&days(&["tue", "thu"]), "02:00", "2h", None).expect("window");
        assert!(w.contains(t("2026-11-24T02:00:00Z")));
        assert!(w.contains(t("2026-11-24T03:59:59Z")));
        assert!(!w.contains(t("2026-11-24T04:00:00Z")));
        assert!(!w.contains(t("2026-11-25T02:30:00Z")), "wednesday");
        assert!(w.contains(t("2026-11-26T02:30:00Z")), "thursday");
        assert_eq!(
            next_window(std::slice::from_ref(&w), t("2026-11-24T05:00:00Z")),
            Some(t("2026-11-26T02:00:00Z"))
        );
    }

    #[test]
    fn window_across_midnight_with_an_offset() {
        // Sundays 23:00-01:00 at UTC+02:00 = Sunday 21:00-23:00 UTC.
        let w = Window::parse(&days(&["sun"]), "23:00", "2h", Some("+02:00")).expect("window");
        assert!(w.contains(t("2026-11-29T21:30:00Z")));
        assert!(w.contains(t("2026-11-29T22:59:00Z")));
        assert!(!w.contains(t("2026-11-29T23:00:00Z")));
        assert!(!w.contains(t("2026-11-29T20:59:00Z")));
        assert!(may_reboot(&[], 0));
        assert!(!may_reboot(&[w], t("2026-11-24T12:00:00Z")));
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(Window::parse(&days(&["funday"]), "02:00", "1h", None).is_err());
        assert!(Window::parse(&days(&["*"]), "25:00", "1h", None).is_err());
        assert!(Window::parse(&days(&["*"]), "02:00", "0s", None).is_err());
        assert!(Window::parse(&days(&["*"]), "02:00", "1h", Some("Europe/Berlin")).is_err());
    }

    #[test]
    fn day_names_are_whole_words() {
        for bad in ["monkey", "sunny", "thurs", "fr", "mo", "", "wednes"] {
            let e = Window::parse(&days(&[bad]), "02:00", "1h", None).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let w = Window::parse(&days(&["Monday", "SUN", "wed"]), "02:00", "1h", None)
            .expect("full and short names");
        assert_eq!(w.days, [true, false, true, false, false, false, true]);
    }

    #[test]
    fn offsets_are_sign_and_two_digit_fields() {
        for bad in [
            "+00:-30", "+-3:00", "+3:00", "+03:0", "+03:000", "03:00", "+03", "+ 3:00", "+15:00",
            "+14:01", "-03:60", "+03:+5",
        ] {
            assert!(
                Window::parse(&days(&["*"]), "02:00", "1h", Some(bad)).is_err(),
                "{bad:?} accepted"
            );
        }
        for (zone, secs) in [
            ("+02:00", 7200),
            ("-09:30", -34200),
            ("+14:00", 50400),
            ("+00:00", 0),
            ("Z", 0),
            ("UTC", 0),
        ] {
            let w = Window::parse(&days(&["*"]), "02:00", "1h", Some(zone)).expect(zone);
            assert_eq!(w.offset_seconds, secs, "{zone}");
        }
        for bad in ["+2:00", "2:+5", "02:5", "-1:00", "24:00"] {
            assert!(
                Window::parse(&days(&["*"]), bad, "1h", None).is_err(),
                "start {bad:?} accepted"
            );
        }
        assert!(Window::parse(&days(&["*"]), "2:05", "1h", None).is_ok());
    }

    #[test]
    fn a_start_may_name_its_second() {
        let w = Window::parse(&days(&["*"]), "02:00:30", "60s", None).expect("HH:MM:SS");
        let open = t("2026-11-24T02:00:30Z");
        assert!(!w.contains(open - 1));
        assert!(w.contains(open));
        assert!(w.contains(open + 59));
        assert!(!w.contains(open + 60));
        assert_eq!(next_window(&[w], open - 5), Some(open));
        for bad in ["02:00:60", "02:00:5", "02:00:", "02:00:30:00", "02::30"] {
            assert!(
                Window::parse(&days(&["*"]), bad, "1h", None).is_err(),
                "start {bad:?} accepted"
            );
        }
    }

    #[test]
    fn window_lengths_are_kept_to_the_second() {
        let w = Window::parse(&days(&["*"]), "02:00", "90s", None).expect("90s");
        assert_eq!(w.length_seconds, 90);
        let open = t("2026-11-24T02:00:00Z");
        assert!(w.contains(open + 89));
        assert!(!w.contains(open + 90));
        assert!(Window::parse(&days(&["*"]), "02:00", "59s", None).is_err());
        assert!(Window::parse(&days(&["*"]), "02:00", "1500ms", None).is_err());
        let e = Window::parse(&days(&["*"]), "02:00", "18446744073709551615d", None)
            .expect_err("overflow");
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn windows_earlier_versions_accepted_are_read_as_they_read_them() {
        // `written`: days (comma-separated), start, length and a zone.
        let old = |written: &str| {
            let f: Vec<&str> = written.split(' ').collect();
            let (d, zone) = (
                days(&f[0].split(',').collect::<Vec<_>>()),
                f.get(3).copied(),
            );
            assert!(
                Window::parse(&d, f[1], f[2], zone).is_err(),
                "{written} is not narrowed"
            );
            Window::parse_as_before(&d, f[1], f[2], zone)
                .map(|w| w.describe())
                .unwrap_or_else(|| panic!("{written} refused"))
        };
        for (written, read) in [
            // A day by its first three letters.
            (
                "Thurs,tues,weds 02:00 2h",
                "tue,wed,thu 02:00:00 for 2h at +00:00",
            ),
            // A start of one-digit minutes, a sign, leading zeros.
            ("* 2:5 1h", "* 02:05:00 for 1h at +00:00"),
            ("* +2:00 1h", "* 02:00:00 for 1h at +00:00"),
            ("* 002:00 1h", "* 02:00:00 for 1h at +00:00"),
            // A length in whole minutes: a second past 7 days, a fraction.
            ("* 02:00 604859s", "* 02:00:00 for 7d at +00:00"),
            ("* 02:00 60500ms", "* 02:00:00 for 1m at +00:00"),
            // A zone of one-digit fields; past +14:00, held there.
            ("* 02:00 1h +1:00", "* 02:00:00 for 1h at +01:00"),
            ("* 02:00 1h -9:30", "* 02:00:00 for 1h at -09:30"),
            ("* 02:00 1h +14:59", "* 02:00:00 for 1h at +14:00"),
        ] {
            assert_eq!(old(written), read, "{written}");
        }
        // What they refused stays refused.
        for (d, start, length, zone) in [
            (&["fr"][..], "02:00", "1h", None),
            (&["*"][..], "24:00", "1h", None),
            (&["*"][..], "02:00:30", "1h", None),
            (&["*"][..], "02:00", "59s", None),
            (&["*"][..], "02:00", "8d", None),
            (&["*"][..], "02:00", "1h", Some("+15:00")),
            (&["*"][..], "02:00", "1h", Some("Europe/Berlin")),
            (&[][..], "02:00", "1h", None),
        ] {
            assert!(
                Window::parse_as_before(&days(d), start, length, zone).is_none(),
                "{d:?} {start} {length} {zone:?} accepted"
            );
        }
    }

    #[test]
    fn a_backoff_is_never_believed_further_ahead_than_its_maximum() {
        let max = Duration::from_secs(6 * 3600);
        let now = t("2026-11-24T12:00:00Z");
        assert_eq!(backing_off_until(None, now, max), None);
        assert_eq!(backing_off_until(Some(now - 1), now, max), None);
        assert_eq!(backing_off_until(Some(now), now, max), None);
        assert_eq!(
            backing_off_until(Some(now + 300), now, max),
            Some(now + 300)
        );
        assert_eq!(
            backing_off_until(Some(now + 6 * 3600), now, max),
            Some(now + 6 * 3600)
        );
        // Ten years ahead: a clock that ran ahead set it.
        assert_eq!(
            backing_off_until(Some(t("2036-11-24T12:00:00Z")), now, max),
            None
        );
        assert_eq!(
            backing_off_until(Some(i64::MAX), i64::MAX - 5, Duration::MAX),
            Some(i64::MAX)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        assert_eq!(backoff(0, base, max), Duration::ZERO);
        assert_eq!(backoff(1, base, max), base);
        assert_eq!(backoff(2, base, max), base * 2);
        assert_eq!(backoff(3, base, max), base * 4);
        assert_eq!(backoff(4, base, max), base * 8);
        assert_eq!(backoff(5, base, max), max);
        assert_eq!(backoff(400, base, max), max);
        let j = jitter(Duration::from_secs(10));
        assert!(j < Duration::from_secs(10));
    }
}
