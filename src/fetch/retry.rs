//! Retries within a run: a server that answers 429, 502, 503 or 504, or a
//! link that resets or stalls, is asked again after a wait, before the run
//! fails (and the timer's own backoff takes over).
//!
//! Invariant: only what [`FetchError::is_transient`] calls worth another
//! try is retried, at most `retries` times without real progress, each
//! after at least the server's `Retry-After`; a `Retry-After` longer than
//! `retry_after_max` is not waited for in the run (the run fails at once,
//! naming it). The decision is a pure function ([`RetryPolicy::next`]) of
//! the error, the failures so far and a random number.

use std::time::Duration;

use super::FetchError;

/// The longest wait between two tries when the server names none.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Bytes that must arrive between two failures for the count of failures
/// to start again ([`failures_before`]): a download over a link that drops
/// every few hundred kB keeps going (each try moves it on; a MiB, the
/// bound before, was more than such a link carries, so a payload's frame
/// never completed, run after run), a server that trickles a few bytes per
/// try does not. The retries of one download stay bounded: each try that
/// starts the count again moved it on by this much, and its size is
/// signed.
pub const PROGRESS_RESETS_AFTER: u64 = 64 << 10;

/// The failures without progress before this one: `failures` so far,
/// unless `since_failure` bytes (since the previous failure) are real
/// progress, which starts the count again.
pub fn failures_before(failures: u32, since_failure: u64) -> u32 {
    match since_failure >= PROGRESS_RESETS_AFTER {
        true => 0,
        false => failures,
    }
}

/// How a transport retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first one, per request or body, without progress.
    pub retries: u32,
    /// The first wait when the server names none; doubled per failure up to
    /// `MAX_DELAY`, half of it random (jitter: hosts of a fleet that
    /// failed together do not come back together).
    pub first_delay: Duration,
    /// The longest `Retry-After` waited for within the run.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            first_delay: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (the first failure is the answer).
    pub fn none() -> Self {
        RetryPolicy {
            retries: 0,
            ..RetryPolicy::default()
        }
    }
}

/// What to do after a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Fail with the error; the reason is logged when there is one beyond
    /// the error itself.
    GiveUp(Option<String>),
}

impl RetryPolicy {
    /// After `failures` earlier failures without progress, `err` happened:
    /// try again (after how long), or give up. `random` is any random
    /// number (the jitter).
    pub fn next(&self, err: &FetchError, failures: u32, random: u64) -> Next {
        if !err.is_transient() {
            return Next::GiveUp(None);
        }
        if failures >= self.retries {
            return Next::GiveUp(
                (self.retries > 0)
                    .then(|| format!("gave up after {} retries (update.retries)", self.retries)),
            );
        }
        let backoff = self
            .first_delay
            .saturating_mul(1u32 << failures.min(16))
            .min(MAX_DELAY);
        let half = backoff / 2;
        let jitter = match half.as_millis() {
            0 => Duration::ZERO,
            ms => Duration::from_millis(random % (ms as u64 + 1)),
        };
        let wait = half + jitter;
        match err.retry_after() {
            Some(asked) if asked > self.retry_after_max => Next::GiveUp(Some(format!(
                "not waiting {}s for it: more than update.retry_after_max ({}s)",
                asked.as_secs(),
                self.retry_after_max.as_secs()
            ))),
            Some(asked) => Next::Retry(asked.max(wait)),
            None => Next::Retry(wait),
        }
    }
}

/// Failures of one request or body, and the progress since the last one.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    failures: u32,
    since_failure: u64,
}

impl Attempts {
    /// `n` bytes arrived.
    pub fn progress(&mut self, n: u64) {
        self.since_failure = self.since_failure.saturating_add(n);
    }

    /// `err` happened: the policy's answer, counting it. Logs the retry
    /// (or why not) to stderr, naming the location.
    pub fn after(&mut self, policy: &RetryPolicy, err: &FetchError) -> Next {
        self.after_within(policy, err, Duration::MAX)
    }

    /// [`Attempts::after`] with `left` of a deadline over every attempt: a
    /// retry whose wait does not end before it is not made.
    pub fn after_within(&mut self, policy: &RetryPolicy, err: &FetchError, left: Duration) -> Next {
        self.failures = failures_before(self.failures, self.since_failure);
        let next = match policy.next(err, self.failures, random()) {
            Next::Retry(wait) if wait >= left => Next::GiveUp(Some(format!(
                "no time left for another attempt within its deadline ({} x read_timeout)",
                super::DOCUMENT_DEADLINE_READS
            ))),
            next => next,
        };
        match &next {
            Next::Retry(wait) => {
                self.failures += 1;
                crate::say!(
                    "abupdate: {err}; retrying in {:.1}s (retry {} of {})",
                    wait.as_secs_f64(),
                    self.failures,
                    policy.retries
                );
            }
            // The error itself is the run's own last line: named by its
            // location here, not said twice.
            Next::GiveUp(Some(why)) => crate::say!("abupdate: {}: {why}", err.location()),
            Next::GiveUp(None) => {}
        }
        self.since_failure = 0;
        next
    }
}

/// A random number from the kernel (for jitter only).
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if ok {
        u64::from_le_bytes(bytes)
    } else {
        u64::from(std::process::id()).wrapping_mul(2654435761)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> FetchError {
        FetchError::HttpStatus {
            location: "http://h/p".into(),
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn reset() -> FetchError {
        FetchError::Network {
            location: "http://h/p".into(),
            detail: "connection reset".into(),
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        retries: 3,
        first_delay: Duration::from_secs(2),
        retry_after_max: Duration::from_secs(300),
    };

    #[test]
    fn the_retried_failures_are_the_transient_ones() {
        for s in [429, 502, 503, 504, 500, 408] {
            assert!(
                matches!(POLICY.next(&status(s, None), 0, 0), Next::Retry(_)),
                "{s}"
            );
        }
        assert!(matches!(POLICY.next(&reset(), 0, 0), Next::Retry(_)));
        for s in [400, 401, 403, 501] {
            assert_eq!(
                POLICY.next(&status(s, None), 0, 0),
                Next::GiveUp(None),
                "{s}"
            );
        }
        let not_found = FetchError::NotFound {
            location: "x".into(),
            status: Some(404),
        };
        assert_eq!(POLICY.next(&not_found, 0, 0), Next::GiveUp(None));
        let tls = FetchError::Tls {
            location: "x".into(),
            detail: "bad cert".into(),
        };
        assert_eq!(POLICY.next(&tls, 0, 0), Next::GiveUp(None));
    }

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_the_count_is_bounded() {
        // Half the backoff fixed, half random.
        assert_eq!(
            POLICY.next(&reset(), 0, 0),
            Next::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            POLICY.next(&reset(), 0, u64::MAX),
            Next::Retry(Duration::from_millis(1000 + u64::MAX % 1001))
        );
        assert_eq!(
            POLICY.next(&reset(), 2, 0),
            Next::Retry(Duration::from_secs(4))
        );
        let many = RetryPolicy {
            retries: 100,
            ..POLICY
        };
        assert_eq!(many.next(&reset(), 40, 0), Next::Retry(MAX_DELAY / 2));
        match POLICY.next(&reset(), 3, 0) {
            Next::GiveUp(Some(why)) => assert!(why.contains("3 retries"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(RetryPolicy::none().next(&reset(), 0, 0), Next::GiveUp(None));
    }

    #[test]
    fn retry_after_is_a_floor_and_too_long_a_one_fails_at_once() {
        assert_eq!(
            POLICY.next(&status(503, Some(30)), 0, 0),
            Next::Retry(Duration::from_secs(30))
        );
        // The server's wait is the least; our backoff may be longer.
        assert_eq!(
            POLICY.next(&status(429, Some(0)), 2, 0),
            Next::Retry(Duration::from_secs(4))
        );
        match POLICY.next(&status(503, Some(3600)), 0, 0) {
            Next::GiveUp(Some(why)) => {
                assert!(
                    why.contains("3600s") && why.contains("retry_after_max"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn progress_between_failures_starts_the_count_again_a_trickle_does_not() {
        // A link that drops every 400 kB moves on at each try.
        assert_eq!(failures_before(4, 400_000), 0);
        assert_eq!(failures_before(4, PROGRESS_RESETS_AFTER), 0);
        // A few bytes, or none, per try: every failure counts.
        assert_eq!(failures_before(4, PROGRESS_RESETS_AFTER - 1), 4);
        assert_eq!(failures_before(4, 100), 4);
        assert_eq!(failures_before(0, 0), 0);
        // So 400 kB between failures never gives up, 100 bytes does.
        let policy = RetryPolicy {
            retries: 2,
            first_delay: Duration::ZERO,
            retry_after_max: Duration::from_secs(1),
        };
        let mut flaky = Attempts::default();
        for _ in 0..20 {
            flaky.progress(400_000);
            assert!(matches!(flaky.after(&policy, &reset()), Next::Retry(_)));
        }
        let mut trickle = Attempts::default();
        let gave_up = (0..20).position(|_| {
            trickle.progress(100);
            matches!(trickle.after(&policy, &reset()), Next::GiveUp(_))
        });
        assert_eq!(gave_up, Some(2));
    }

    #[test]
    fn enough_progress_starts_the_count_again_a_trickle_does_not() {
        let mut a = Attempts::default();
        let policy = RetryPolicy {
            retries: 1,
            first_delay: Duration::ZERO,
            retry_after_max: Duration::from_secs(1),
        };
        assert!(matches!(a.after(&policy, &reset()), Next::Retry(_)));
        a.progress(100);
        assert!(matches!(a.after(&policy, &reset()), Next::GiveUp(_)));
        let mut b = Attempts::default();
        assert!(matches!(b.after(&policy, &reset()), Next::Retry(_)));
        b.progress(PROGRESS_RESETS_AFTER);
        assert!(matches!(b.after(&policy, &reset()), Next::Retry(_)));
    }
}
