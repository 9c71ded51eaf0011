//! The operator's side of a rollout, hawkBit-style but stateless: count
//! what the fleet says about a release, then pause it (too many failures)
//! or advance it to its next wave (the wave is healthy and has soaked), by
//! rewriting and re-signing its manifest.
//!
//! Invariant: the decision is one pure function ([`decide::decide`]) of
//! plain numbers — a [`Tally`] of the release's outcomes and the number of
//! hosts its wave covers — the signed rollout plan, the policy and the
//! time, so the fleet simulation runs exactly what an operator runs, from
//! either source: Prometheus ([`prometheus`], the primary) or the webhook's
//! reports ([`reports`]). A paused rollout is never advanced by this tool,
//! and nothing is decided blind: an unreachable source, an error answer or
//! no series for the release is an error, never "zero hosts". Only what the
//! release itself caused, on hosts of its own `compatible`, counts against
//! it ([`counts_against_release`]), and, failing safe, the trials that
//! failed on hosts of an abupdate too old to say either
//! ([`Tally::failed_unattributed`]): those may be of another release.
//!
//! Invariant of the evidence: only in-wave commits advance a wave; a host
//! that reported the release in the wave is never forgotten within the
//! lookback. Failures count from every host of the `compatible` (a failure
//! anywhere is evidence against the release); a commit counts towards
//! advancing only when its host's position is inside the current wave
//! ([`Facts::in_wave`]), so a lab host's manual `install` is shown, never
//! counted. A host's latest outcome in the lookback and its position at
//! any sample in it are read from every raw sample, never at steps
//! ([`prometheus::Queries`]), and only from a store that still holds the
//! wave's start ([`prometheus::HISTORY_QUERY`]): one restarted on an empty
//! database has forgotten the hosts that went silent. The reports carry no
//! position: from them the wave's own commits cannot be told apart, and
//! the reason says so.
//!
//! The controller keeps no state: the waves, the current wave and when it
//! started live in the signed manifest's `rollout` block; the thresholds
//! are flags ([`controller`]). Verifying the manifest before it is changed,
//! re-signing it and publishing it atomically are [`crate::publish`]'s.

pub mod clock;
pub mod controller;
pub mod decide;
pub mod prometheus;
pub mod reports;

pub use decide::{apply, check_waves, decide, parse_waves, Action, Facts, Plan, Policy};
pub use reports::{parse_reports, read_reports, tally, Reports};

use crate::error::Kind;
use crate::report::Outcome;

/// Outcomes of one release across the fleet (each host counted once, by its
/// latest outcome that says something about the release).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Hosts whose latest word is "installed" (no verdict yet).
    pub installed: u64,
    /// Hosts whose trial of the release passed its checks and was committed.
    pub committed: u64,
    /// Hosts the release failed on (rolled back, never booted, or refused
    /// for a fault of the release).
    pub failed: u64,
    /// Failures that do not blame the release (a network stall, a busy
    /// host, …): shown, not counted against it.
    pub not_counted: u64,
    /// Of `failed`: hosts of an abupdate older than the `compatible`
    /// label (their series carry no release either) whose rollback
    /// counter rose in the lookback. They cannot be told apart from hosts
    /// that rolled back another release, so they count against this one:
    /// a release that moves hosts off such a version would otherwise be
    /// judged by its successes only (the version in the slot it falls back
    /// to rewrites the textfile without the outcome).
    pub failed_unattributed: u64,
}

/// A tally with nothing `not_counted` (the tests of `decide` and `reports`).
#[cfg(test)]
pub(crate) fn test_tally(installed: u64, committed: u64, failed: u64) -> Tally {
    Tally {
        installed,
        committed,
        failed,
        not_counted: 0,
        failed_unattributed: 0,
    }
}

impl Tally {
    /// Hosts with a verdict on the release: committed or failed (the base of
    /// the failure rate).
    pub fn finished(&self) -> u64 {
        self.committed + self.failed
    }
}

/// `error_kind`s of a `failed` outcome that blame the release itself: its
/// payload or manifest is wrong (hash, size, length, signature, parse),
/// or it failed its probation with no slot to fall back to (`no_fallback`).
/// Everything else — the network, an HTTP status, TLS, a busy host
/// (`locked`), the host's own disk, state or bootloader, kinds this list
/// does not know yet — says nothing about the release.
pub const RELEASE_FAULT_KINDS: &[Kind] = &[
    Kind::Payload,
    Kind::HashMismatch,
    Kind::Size,
    Kind::TooLong,
    Kind::TooShort,
    Kind::Signature,
    Kind::Manifest,
    Kind::NoFallback,
];

/// What one outcome says about the release it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The host installed the release; no verdict yet.
    Installed,
    /// The host's trial of the release was committed.
    Committed,
    /// The release failed on this host.
    Failed,
    /// A failure the release did not cause.
    NotCounted,
    /// An outcome this tool does not know.
    Unknown,
}

/// Classify one outcome (`None`: a label this version does not know,
/// [`Outcome::parse`]): rolled back (at the trial or later) and never
/// booted trials count against the release; a `failed` run only with a
/// kind in [`RELEASE_FAULT_KINDS`].
pub fn counts_against_release(outcome: Option<Outcome>, error_kind: Option<&str>) -> Verdict {
    match outcome {
        Some(Outcome::Installed) => Verdict::Installed,
        Some(Outcome::Committed) => Verdict::Committed,
        Some(Outcome::RolledBack | Outcome::TrialNeverBooted | Outcome::RolledBackLate) => {
            Verdict::Failed
        }
        Some(Outcome::Failed)
            if error_kind.is_some_and(|k| RELEASE_FAULT_KINDS.iter().any(|r| *r == k)) =>
        {
            Verdict::Failed
        }
        Some(Outcome::Failed | Outcome::Disarmed) => Verdict::NotCounted,
        None => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_is_classified() {
        use Verdict::*;
        for (outcome, kind, want) in [
            ("installed", None, Installed),
            ("committed", None, Committed),
            ("rolled_back", Some("health"), Failed),
            ("rolled_back", None, Failed),
            ("rolled_back_late", None, Failed),
            ("disarmed", None, NotCounted),
            ("trial_never_booted", None, Failed),
            ("failed", Some("payload"), Failed),
            ("failed", Some("too_long"), Failed),
            ("failed", Some("manifest"), Failed),
            ("failed", Some("no_fallback"), Failed),
            ("failed", Some("network"), NotCounted),
            ("failed", Some("tls"), NotCounted),
            ("failed", Some("device"), NotCounted),
            ("failed", Some("a-kind-from-the-future"), NotCounted),
            ("failed", None, NotCounted),
            ("checked", None, Unknown),
        ] {
            assert_eq!(
                counts_against_release(Outcome::parse(outcome), kind),
                want,
                "{outcome} {kind:?}"
            );
        }
    }
}
