//! When the timer acts: maintenance windows for reboots, jitter on polls,
//! exponential backoff after failures.
//!
//! Invariant: these are pure functions of the configuration, the time and
//! the failure count, so the fleet simulation and the tests judge exactly
//! what a host does. Windows use fixed UTC offsets (`zone = "+02:00"`):
//! named zones would need the tz database, which a minimal image may lack.

use std::time::Duration;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A weekly maintenance window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight.
    pub start_minute: u32,
    pub length_minutes: u32,
    /// Local time = UTC + this.
    pub offset_seconds: i64,
}

fn parse_offset(zone: &str) -> Result<i64, String> {
    match zone {
        "UTC" | "utc" | "Z" | "+00:00" => return Ok(0),
        _ => {}
    }
    let bad = || format!("zone {zone:?}: expected UTC or a fixed offset such as +02:00");
    let (sign, rest) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

impl Window {
    /// `days`: names (`mon`…`sun`), `*` for every day; `start`: `HH:MM`;
    /// `length`: a duration (`2h`); `zone`: UTC unless given.
    pub fn parse(
        days: &[String],
        start: &str,
        length: &str,
        zone: Option<&str>,
    ) -> Result<Window, String> {
        let mut set = [false; 7];
        for d in days {
            let d = d.to_ascii_lowercase();
            if d == "*" {
                set = [true; 7];
                continue;
            }
            let i = DAYS.iter().position(|n| d.starts_with(n)).ok_or_else(|| {
                format!("day {d:?}: expected mon, tue, wed, thu, fri, sat, sun or *")
            })?;
            set[i] = true;
        }
        if !set.iter().any(|&b| b) {
            return Err("names no day".into());
        }
        let (h, m) = start
            .split_once(':')
            .ok_or_else(|| format!("start {start:?}: expected HH:MM"))?;
        let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => (h, m),
            _ => return Err(format!("start {start:?}: expected HH:MM")),
        };
        let length = crate::timefmt::parse_duration(length)?;
        let length_minutes = (length.as_secs() / 60) as u32;
        if length_minutes == 0 || length_minutes > 7 * 24 * 60 {
            return Err(format!(
                "length {length:?}: must be between 1 minute and 7 days"
            ));
        }
        Ok(Window {
            days: set,
            start_minute: h * 60 + m,
            length_minutes,
            offset_seconds: zone.map(parse_offset).transpose()?.unwrap_or(0),
        })
    }

    /// Opening times (UTC seconds) of this window on the local days around `now`.
    fn openings_near(&self, now: i64) -> impl Iterator<Item = i64> + '_ {
        let local = now + self.offset_seconds;
        let today = local.div_euclid(86400);
        (-8..=8).filter_map(move |delta| {
            let day = today + delta;
            // 1970-01-01 was a Thursday (index 3 from Monday).
            let weekday = (day + 3).rem_euclid(7) as usize;
            self.days[weekday]
                .then(|| day * 86400 + self.start_minute as i64 * 60 - self.offset_seconds)
        })
    }

    pub fn contains(&self, now: i64) -> bool {
        let len = self.length_minutes as i64 * 60;
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
