//! Pacing: how fast, and when, payload bytes may cross a thin link shared
//! with the business (`[update] max_rate`, `rate_windows`,
//! `download_windows`).
//!
//! Invariant: a payload body is read no faster than the rate in force
//! (averaged over any stretch longer than the bucket's quarter second), and
//! not at all outside the download windows when they apply. The decisions
//! are pure functions of the configuration, the time and the bytes read
//! ([`Pacing::at`], [`Bucket::take`]); the readers of `fetch` only apply
//! them. Documents (manifests, signatures: at most 1 MiB) are not paced.
//!
//! The rate is the application's read rate: TCP then holds the server to it
//! through the receive window, as curl's `--limit-rate` does. What the kernel
//! buffers before the first read (its receive buffer) is the only burst.

use std::time::{Duration, Instant};

use crate::schedule::Window;

/// The slowest rate that may be configured: below this a download of an
/// image would take weeks, so it is a typo (and it would trip the stall
/// guard's idea of a dead link).
pub const MIN_RATE: u64 = 1000;

/// A rate of a window: bytes per second, `None` for unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// When the rate holds.
    pub window: Window,
    /// Bytes per second; `None`: unlimited.
    pub rate: Option<u64>,
}

/// When and how fast payloads may be downloaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pacing {
    /// Outside every rate window: bytes per second, `None` for unlimited.
    pub max_rate: Option<u64>,
    /// The first window that holds the time sets the rate.
    pub rate_windows: Vec<RateWindow>,
    /// When any is set, payload bytes move only inside one of them.
    pub download_windows: Vec<Window>,
}

/// What a download may do at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// Read, at most `rate` bytes per second.
    Go {
        /// Bytes per second; `None`: unlimited.
        rate: Option<u64>,
    },
    /// Outside every download window: read nothing until the next one
    /// opens.
    Wait {
        /// When it opens (Unix seconds).
        until: i64,
    },
}

impl Pacing {
    /// Nothing to pace: no rate and no window.
    pub fn is_unlimited(&self) -> bool {
        self.max_rate.is_none()
            && self.rate_windows.iter().all(|w| w.rate.is_none())
            && self.download_windows.is_empty()
    }

    /// The same pacing without its download windows (a manual install is
    /// the operator's own decision; the rate still holds).
    pub fn without_download_windows(&self) -> Pacing {
        Pacing {
            download_windows: Vec::new(),
            ..self.clone()
        }
    }

    /// The rate in force at `now`, ignoring the download windows.
    pub fn rate_at(&self, now: i64) -> Option<u64> {
        self.rate_windows
            .iter()
            .find(|w| w.window.contains(now))
            .map_or(self.max_rate, |w| w.rate)
    }

    /// What a download may do at `now`.
    pub fn at(&self, now: i64) -> Allowance {
        let windows = &self.download_windows;
        if windows.is_empty() || windows.iter().any(|w| w.contains(now)) {
            return Allowance::Go {
                rate: self.rate_at(now),
            };
        }
        // A window always has a day and opens at least weekly, so there
        // is a next opening; the fallback only guards the arithmetic.
        let until = crate::schedule::next_window(windows, now).unwrap_or(now + 60);
        Allowance::Wait { until }
    }
}

/// `2MB/s`, `500kB/s`, `1.5MiB/s`, `10Mbit/s`, `unlimited`: bytes per
/// second, `None` for unlimited. SI prefixes are powers of 1000, `Ki`/`Mi`/
/// `Gi` powers of 1024; `bit` counts bits. At least `MIN_RATE`.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let bad = || {
        format!("{text:?}: expected a rate such as \"2MB/s\", \"500kB/s\", \"10Mbit/s\" or \"unlimited\"")
    };
    let unit_start = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(unit_start);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix("/s").ok_or_else(bad)?;
    if number.is_empty() || number.starts_with('.') || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let per_second = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "bit" => 1.0 / 8.0,
        "kbit" | "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        _ => return Err(bad()),
    };
    let bytes = value * per_second;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?}: too large"));
    }
    let bytes = bytes.round() as u64;
    if bytes < MIN_RATE {
        return Err(format!(
            "{text:?}: below the slowest rate allowed ({MIN_RATE} B/s)"
        ));
    }
    Ok(Some(bytes))
}

/// A token bucket: bytes accrue at the rate, up to a quarter second's worth
/// (at least one read's, [`Bucket::chunk`]), so an idle spell cannot be
/// spent as a burst. It starts empty, at every new rate too: the first
/// bytes wait their time like the rest (a full bucket at the start let
/// ~16 KiB through at once, 16 s worth at the slowest rate).
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: Option<u64>,
    /// May go negative: a read took more than was there; the reader then
    /// sleeps it back to zero.
    tokens: f64,
    last: Option<Instant>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            rate: None,
            tokens: 0.0,
            last: None,
        }
    }
}

impl Bucket {
    /// The most a read should ask for at `rate`: a fraction of a second's
    /// bytes, so the rate holds smoothly (at least 1 KiB, at most 64 KiB).
    pub fn chunk(rate: Option<u64>) -> usize {
        match rate {
            None => usize::MAX,
            Some(r) => usize::try_from(r / 20)
                .unwrap_or(usize::MAX)
                .clamp(1024, 64 << 10),
        }
    }

    fn capacity(rate: u64) -> f64 {
        (rate as f64 / 4.0).max(Bucket::chunk(Some(rate)) as f64)
    }

    /// `n` bytes were read at `now` under `rate`: how long to sleep (before
    /// handing them out) so that the bytes read keep to the rate from the
    /// first one. A change of rate starts a fresh, empty bucket.
    pub fn take(&mut self, now: Instant, rate: Option<u64>, n: u64) -> Duration {
        let Some(r) = rate else {
            self.rate = None;
            self.last = None;
            return Duration::ZERO;
        };
        if self.rate != rate || self.last.is_none() {
            self.rate = rate;
            self.tokens = 0.0;
            self.last = Some(now);
        }
        let elapsed = self
            .last
            .map(|l| now.saturating_duration_since(l).as_secs_f64())
            .unwrap_or(0.0);
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * r as f64).min(Bucket::capacity(r));
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / r as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::parse_rfc3339;

    fn t(s: &str) -> i64 {
        parse_rfc3339(s).expect(s)
    }

    fn window(start: &str, length: &str) -> Window {
        Window::parse(&["*".to_string()], start, length, None).expect("window")
    }

    #[test]
    fn rates_are_read_in_bytes_per_second() {
        for (text, bytes) in [
            ("2MB/s", 2_000_000),
            ("500kB/s", 500_000),
            ("500 kB/s", 500_000),
            ("1.5MiB/s", 1_572_864),
            ("10Mbit/s", 1_250_000),
            ("64KiB/s", 65_536),
            ("1000B/s", 1000),
        ] {
            assert_eq!(parse_rate(text), Ok(Some(bytes)), "{text}");
        }
        assert_eq!(parse_rate("unlimited"), Ok(None));
        for bad in [
            "2MB", "fast", "2 MB/h", "-1MB/s", "1..5MB/s", ".5MB/s", "10b/s", "999B/s", "", "MB/s",
            "1e9MB/s",
        ] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn the_first_rate_window_holding_the_time_sets_the_rate() {
        let pacing = Pacing {
            max_rate: Some(2_000_000),
            rate_windows: vec![
                RateWindow {
                    window: window("08:00", "12h"),
                    rate: Some(500_000),
                },
                RateWindow {
                    window: window("06:00", "4h"),
                    rate: Some(1_000_000),
                },
                RateWindow {
                    window: window("22:00", "4h"),
                    rate: None,
                },
            ],
            download_windows: Vec::new(),
        };
        assert_eq!(pacing.rate_at(t("2026-11-24T09:00:00Z")), Some(500_000));
        assert_eq!(pacing.rate_at(t("2026-11-24T07:00:00Z")), Some(1_000_000));
        assert_eq!(pacing.rate_at(t("2026-11-24T23:00:00Z")), None);
        assert_eq!(pacing.rate_at(t("2026-11-25T04:00:00Z")), Some(2_000_000));
        assert_eq!(
            pacing.at(t("2026-11-24T09:00:00Z")),
            Allowance::Go {
                rate: Some(500_000)
            }
        );
        assert!(!pacing.is_unlimited());
        assert!(Pacing::default().is_unlimited());
    }

    #[test]
    fn outside_the_download_windows_a_download_waits_for_the_next_one() {
        let pacing = Pacing {
            max_rate: None,
            rate_windows: Vec::new(),
            download_windows: vec![window("20:00", "10h"), window("12:00", "1h")],
        };
        assert_eq!(
            pacing.at(t("2026-11-24T21:00:00Z")),
            Allowance::Go { rate: None }
        );
        assert_eq!(
            pacing.at(t("2026-11-25T05:59:59Z")),
            Allowance::Go { rate: None }
        );
        assert_eq!(
            pacing.at(t("2026-11-25T06:00:00Z")),
            Allowance::Wait {
                until: t("2026-11-25T12:00:00Z")
            }
        );
        assert_eq!(
            pacing.at(t("2026-11-25T13:00:00Z")),
            Allowance::Wait {
                until: t("2026-11-25T20:00:00Z")
            }
        );
        let manual = pacing.without_download_windows();
        assert_eq!(
            manual.at(t("2026-11-25T13:00:00Z")),
            Allowance::Go { rate: None }
        );
    }

    #[test]
    fn from_the_first_byte_no_more_is_handed_out_than_the_rate_allows() {
        // The slowest rate, 30 kB read a chunk at a time, each handed out
        // after the sleep the bucket asks for: at no instant are more bytes
        // out than the rate times the time since the first read.
        for r in [MIN_RATE, 100_000, 2_000_000] {
            let mut b = Bucket::default();
            let start = Instant::now();
            let mut now = start;
            let mut out = 0u64;
            let chunk = Bucket::chunk(Some(r)) as u64;
            while out < 30_000 {
                now += b.take(now, Some(r), chunk);
                out += chunk;
                let allowed = now.duration_since(start).as_secs_f64() * r as f64;
                assert!(
                    out as f64 <= allowed + 1e-6,
                    "{r} B/s: {out} bytes out by {allowed}"
                );
            }
        }
        // An idle spell earns at most a quarter second, or one read.
        let mut b = Bucket::default();
        let start = Instant::now();
        b.take(start, Some(MIN_RATE), 1024);
        let later = start + Duration::from_secs(600);
        assert_eq!(b.take(later, Some(MIN_RATE), 1024), Duration::ZERO);
        assert!(b.take(later, Some(MIN_RATE), 1024) >= Duration::from_millis(1000));
    }

    #[test]
    fn the_bucket_holds_the_rate_and_spends_no_idle_time_as_a_burst() {
        let rate = Some(100_000);
        let mut b = Bucket::default();
        let start = Instant::now();
        // An empty bucket first: a sleep per read, the first one included.
        let d = b.take(start, rate, 10_000);
        assert!((d.as_secs_f64() - 0.1).abs() < 1e-6, "{d:?}");
        // Reading 1 MB in 10 KB steps, sleeping as told, takes 10 s.
        let mut now = start + d;
        let mut total = Duration::ZERO;
        for _ in 0..100 {
            let d = b.take(now, rate, 10_000);
            now += d;
            total += d;
        }
        assert!((total.as_secs_f64() - 10.0).abs() < 1e-3, "{total:?}");
        // An hour idle earns a quarter second, not an hour.
        let later = now + Duration::from_secs(3600);
        assert_eq!(b.take(later, rate, 25_000), Duration::ZERO);
        assert!(b.take(later, rate, 10_000) > Duration::from_millis(99));
        // Unlimited never sleeps; a new rate starts a fresh, empty bucket.
        assert_eq!(b.take(later, None, 1 << 30), Duration::ZERO);
        let d = b.take(later, Some(1_000_000), 250_000);
        assert!((d.as_secs_f64() - 0.25).abs() < 1e-6, "{d:?}");
        assert_eq!(Bucket::chunk(Some(100_000)), 5_000);
        assert_eq!(Bucket::chunk(Some(1_000)), 1024);
        assert_eq!(Bucket::chunk(Some(100_000_000)), 64 << 10);
    }
}
