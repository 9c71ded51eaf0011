//! Whose "now" a `fleet --prometheus` run decides at: the store's.
//!
//! A query evaluated at this machine's now sees what the store holds up to
//! that instant of the store's timeline: with the store's clock an hour
//! ahead, the last hour's failures would be invisible and a failing wave
//! could advance on older commits. So the run first reads the store's own
//! now (`vector(time())` asked without `time`, [`super::prometheus::Client::store_time`]),
//! compares it with this machine's clock ([`Reading::check`]), refuses to
//! decide when they differ by more than `--max-clock-skew`, and otherwise
//! evaluates every query of the run, the soak and the new `wave_started` at
//! that one instant.
//!
//! Why `time()` and not the HTTP `Date` header: `time()` is answered by
//! the engine that evaluates the decision's queries, through the same
//! fronts (a query-frontend, an auth proxy), and is the instant it
//! evaluates at (VictoriaMetrics evaluates "now" 30 s in the past,
//! `-search.latencyOffset`; its `time()` says so, its `Date` does not).
//! `Date` is written by whatever HTTP server answers last (an nginx in
//! front, a cache), to the second, and may be absent. Every store the
//! controller supports (Prometheus, Thanos, Mimir, VictoriaMetrics)
//! implements `time()` and `vector()`.
//!
//! Invariant: the comparison is a pure function of three readings; a
//! reading between the request's sending and its answer is no skew at all
//! (the store read its clock somewhere in between).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `--max-clock-skew` unless given: above VictoriaMetrics' default
/// 30 s latency offset and any round trip, far below a soak.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(60);

/// The widest `--max-clock-skew` taken.
pub const MAX_MAX_SKEW: Duration = Duration::from_secs(3600);

/// This machine's clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The store's clock read once, with this machine's clock around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The store's now (its `time()`), in Unix milliseconds.
    pub store_ms: i64,
    /// This machine's clock when the request was sent.
    pub sent_ms: i64,
    /// This machine's clock when the answer had arrived.
    pub received_ms: i64,
}

/// The store's clock and this machine's differ by more than allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skew {
    /// The store's now, Unix seconds.
    pub store: i64,
    /// This machine's now (when the answer arrived), Unix seconds.
    pub local: i64,
    /// How far the store is ahead (negative: behind), in milliseconds,
    /// beyond the round trip.
    pub by_ms: i64,
    /// The skew allowed.
    pub max: Duration,
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whole seconds up to ten minutes, then whole minutes (a clock an
        // hour off, read across a round trip, is "1h", not "3599s").
        let secs = self.by_ms.unsigned_abs().div_ceil(1000);
        let by = match secs < 600 {
            true => Duration::from_secs(secs),
            false => Duration::from_secs((self.by_ms.unsigned_abs() + 30_000) / 60_000 * 60),
        };
        write!(
            f,
            "the store's clock reads {}, this machine's {}: the store is {} {} (more than \
             --max-clock-skew {}); queries at either clock's now would miss or misplace the \
             hosts' newest samples: fix the clock that is wrong (NTP): not deciding",
            crate::timefmt::format_rfc3339(self.store),
            crate::timefmt::format_rfc3339(self.local),
            crate::timefmt::format_duration(by),
            if self.by_ms > 0 { "ahead" } else { "behind" },
            crate::timefmt::format_duration(self.max),
        )
    }
}

impl Reading {
    /// How far the store's clock is ahead of this machine's (negative:
    /// behind), in milliseconds: 0 when its reading falls between sending
    /// the request and receiving the answer.
    pub fn skew_ms(&self) -> i64 {
        if self.store_ms < self.sent_ms {
            self.store_ms - self.sent_ms
        } else if self.store_ms > self.received_ms {
            self.store_ms - self.received_ms
        } else {
            0
        }
    }

    /// The run's instant (the store's now, whole Unix seconds) when the
    /// two clocks agree within `max`; else the skew.
    pub fn check(&self, max: Duration) -> Result<i64, Skew> {
        let by_ms = self.skew_ms();
        if by_ms.unsigned_abs() as u128 > max.as_millis() {
            return Err(Skew {
                store: self.store_ms.div_euclid(1000),
                local: self.received_ms.div_euclid(1000),
                by_ms,
                max,
            });
        }
        Ok(self.store_ms.div_euclid(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;

    fn reading(store_ms: i64, sent_ms: i64, received_ms: i64) -> Reading {
        Reading {
            store_ms,
            sent_ms,
            received_ms,
        }
    }

    #[test]
    fn a_store_reading_within_the_round_trip_is_no_skew() {
        assert_eq!(reading(T + 400, T, T + 900).skew_ms(), 0);
        assert_eq!(reading(T, T, T).skew_ms(), 0);
        assert_eq!(reading(T + 900, T, T + 900).skew_ms(), 0);
        // Outside it, the distance to the nearer end.
        assert_eq!(reading(T + 2_000, T, T + 900).skew_ms(), 1_100);
        assert_eq!(reading(T - 30_000, T, T + 900).skew_ms(), -30_000);
    }

    #[test]
    fn the_run_decides_at_the_stores_now_when_the_clocks_agree() {
        let max = Duration::from_secs(60);
        assert_eq!(reading(T + 400, T, T + 900).check(max), Ok(T / 1000));
        // VictoriaMetrics' default latency offset: 30 s behind, taken.
        assert_eq!(
            reading(T - 30_000 + 999, T, T + 50).check(max),
            Ok(T / 1000 - 30)
        );
        // Exactly the limit, either way, is taken.
        assert!(reading(T + 60_050, T, T + 50).check(max).is_ok());
        assert!(reading(T - 60_000, T, T + 50).check(max).is_ok());
        // Whole seconds, rounded down, before the epoch too.
        assert_eq!(reading(-1, -5, 5).check(max), Ok(-1));
    }

    #[test]
    fn a_store_an_hour_ahead_or_behind_is_refused_naming_both_times() {
        let max = Duration::from_secs(60);
        let ahead = reading(T + 3_600_000, T, T + 200)
            .check(max)
            .expect_err("an hour ahead");
        assert_eq!(
            ahead,
            Skew {
                store: T / 1000 + 3600,
                local: T / 1000,
                by_ms: 3_600_000 - 200,
                max,
            }
        );
        let line = ahead.to_string();
        assert!(
            line.starts_with(
                "the store's clock reads 2027-01-15T09:00:00Z, this machine's 2027-01-15T08:00:00Z:"
            ),
            "{line}"
        );
        assert!(
            line.contains("the store is 1h ahead (more than --max-clock-skew 1m)"),
            "{line}"
        );
        let behind = reading(T - 61_000, T, T + 10).check(max).expect_err("61 s");
        assert_eq!(behind.by_ms, -61_000);
        assert!(
            behind.to_string().contains("the store is 61s behind"),
            "{behind}"
        );
        // Widened by the operator.
        assert!(reading(T + 3_600_000, T, T + 200)
            .check(Duration::from_secs(3600))
            .is_ok());
    }
}
