//! Every `--json` output: the stable shapes the README documents (section
//! "`--json` (stable)"), one type each.
//!
//! Invariant: a field is added, renamed or removed only here, and every
//! shape has a test that pins its exact keys and values. Each output is one
//! JSON document on stdout, printed by [`print()`]: keys sorted (as they have
//! been since the first release), pretty-printed.

use crate::agent::NoUpdate;
use crate::rollout::Standing;
use crate::slot::SlotName;
use serde::Serialize;
use std::collections::BTreeMap;

/// Print one output on stdout.
pub fn print(value: &impl Serialize) {
    // Through a `Value`: its map sorts the keys, whatever the field order.
    match serde_json::to_value(value).and_then(|v| serde_json::to_string_pretty(&v)) {
        Ok(text) => crate::tell!("{text}"),
        Err(e) => crate::shout!("abupdate: cannot print JSON: {e}"),
    }
}

/// `check` (and nothing else: `update` says [`Update`]).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Check<'a> {
    /// A verified release applies: exit 100.
    Available {
        /// Always `true`.
        update_available: bool,
        /// The release's version.
        version: &'a str,
        /// The SHA-256 of the verified manifest's bytes (hex).
        manifest_sha256: &'a str,
        /// Where the verified manifest came from (the mirror, a redirect's
        /// target), without user info.
        source: String,
        /// Where this host stands in the release's rollout.
        rollout: Option<&'a Standing>,
    },
    /// Nothing to do: exit 0.
    UpToDate {
        /// Always `false`.
        update_available: bool,
        /// `not_newer`, `previously_failed`, `cancelled`, `not_modified`, `waiting_for_wave`,
        /// `halted`, `on_withdrawn`, `on_probation`.
        reason: NoUpdate,
        /// The reason in words, as the text output prints it.
        message: &'a str,
        /// `null` for `not_modified` (the manifest was not fetched again).
        rollout: Option<&'a Standing>,
    },
}

impl<'a> Check<'a> {
    /// `{"update_available": true, …}`: a verified release applies.
    pub fn available(
        version: &'a str,
        manifest_sha256: &'a str,
        source: String,
        rollout: Option<&'a Standing>,
    ) -> Check<'a> {
        Check::Available {
            update_available: true,
            version,
            manifest_sha256,
            source,
            rollout,
        }
    }

    /// `{"update_available": false, …}`: nothing to do, and why.
    pub fn up_to_date(
        reason: NoUpdate,
        message: &'a str,
        rollout: Option<&'a Standing>,
    ) -> Check<'a> {
        Check::UpToDate {
            update_available: false,
            reason,
            message,
            rollout,
        }
    }
}

/// `update` when it installs nothing (when it installs: [`Install`]).
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Update<'a> {
    /// `{"outcome": "backing_off", "until"}`: an earlier failure asks to
    /// wait until then.
    BackingOff {
        /// When the backoff ends (RFC 3339).
        until: String,
    },
    /// `{"outcome": "up_to_date", "reason", "message", "rollout"}`, with
    /// `check`'s reasons.
    UpToDate {
        /// Why nothing applies (`check`'s reasons).
        reason: NoUpdate,
        /// The reason in words.
        message: &'a str,
        /// Where this host stands in the release's rollout.
        rollout: Option<&'a Standing>,
    },
    /// `{"outcome": "rolled_back_late", "release", "message"}`: the booted
    /// release failed its probation and was rolled back.
    RolledBackLate {
        /// The release rolled back.
        release: &'a str,
        /// Why, in words.
        message: &'a str,
    },
    /// `{"outcome": "no_fallback", "release", "message"}` (exit 1): the
    /// booted release failed its probation, but the old slot is not
    /// usable: kept, nothing rolled back.
    NoFallback {
        /// The release kept.
        release: &'a str,
        /// Why, naming the old slot and what is wrong with it.
        message: &'a str,
    },
    /// `{"outcome": "disarmed", "release", "message"}`: a staged release
    /// the release channel no longer offers was disarmed (the running
    /// slot boots next).
    Disarmed {
        /// The release that was staged.
        release: &'a str,
        /// Why, in words (the release, its slot, the channel).
        message: &'a str,
    },
}

/// `mark-good`, `mark-bad` and `rollback`: what the verb did, one shape
/// per `agent::ManualDone` (exit 0; a refusal is an [`Error`]).
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Manual<'a> {
    /// `{"outcome": "marked", "slot", "good", "message"}`: the slot's
    /// flag and record set.
    Marked {
        /// The slot marked.
        slot: SlotName,
        /// Marked good (`true`) or bad.
        good: bool,
        /// The line the text output prints.
        message: &'a str,
    },
    /// `{"outcome": "rolled_back", "release", "slot", "rebooting",
    /// "message"}`: the running trial rejected, retired as a failed trial
    /// (on the failed list); `slot` boots next.
    RolledBack {
        /// The release rejected.
        release: &'a str,
        /// The slot that boots next.
        slot: SlotName,
        /// The reboot into `slot` was asked for (`rollback` without
        /// `--no-reboot`; `mark-bad` never reboots).
        rebooting: bool,
        /// The line the text output prints.
        message: &'a str,
    },
    /// `{"outcome": "rolled_back_late", "release", "slot", "rebooting",
    /// "message"}`: the committed release on probation rejected, retired
    /// as a failed probation (on the failed list, the probation over).
    RolledBackLate {
        /// The release rejected.
        release: &'a str,
        /// The slot that boots next.
        slot: SlotName,
        /// The reboot into `slot` was asked for.
        rebooting: bool,
        /// The line the text output prints.
        message: &'a str,
    },
    /// `{"outcome": "cancelled", "release", "slot", "message"}`: a
    /// release staged in `slot` and never booted, cancelled (held from
    /// the timer); the running slot stays the next boot.
    Cancelled {
        /// The release cancelled.
        release: &'a str,
        /// The slot it was staged in (now bad).
        slot: SlotName,
        /// The line the text output prints.
        message: &'a str,
    },
    /// `{"outcome": "switched", "slot", "rebooting", "message"}`:
    /// `rollback` made the committed other slot the next boot.
    Switched {
        /// The slot that boots next.
        slot: SlotName,
        /// The reboot into `slot` was asked for.
        rebooting: bool,
        /// The line the text output prints.
        message: &'a str,
    },
    /// `{"outcome": "unchanged", "message"}`: nothing was left to change
    /// when the verb ran.
    Unchanged {
        /// The line the text output prints.
        message: &'a str,
    },
}

/// `install`, and `update` when it installed.
#[derive(Debug, Serialize)]
pub struct Install<'a> {
    /// The version written.
    pub installed: &'a str,
    /// The slot written (the one that boots next).
    pub slot: SlotName,
    /// Bytes of the images written.
    pub payload_bytes: u64,
    /// Bytes fetched over the network (less with a delta).
    pub network_bytes: u64,
    /// The host reboots into the new slot now (`false` with `--no-reboot`
    /// or outside the maintenance window: the next boot tries it).
    pub rebooting: bool,
}

/// What `health` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthOutcome {
    /// No trial pending: the booted slot was re-blessed.
    Healthy,
    /// The trial slot passed its checks and is committed.
    Committed,
    /// Exit 1.
    RolledBack,
    /// The booted slot is the old one after a staged trial, on another boot:
    /// the trial never came up; recorded as failed.
    TrialNeverBooted,
    /// Staged on this very boot: the reboot into the trial is still to come.
    AwaitingReboot,
    /// The booted release is on probation, within its limit.
    OnProbation,
    /// The booted release's probation ended clean.
    ProbationPassed,
    /// The booted release's probation ended because the configuration
    /// turned it off (`probation = "0"`).
    ProbationOff,
    /// Exit 1: the booted release failed its probation and was rolled
    /// back.
    RolledBackLate,
    /// Exit 1: the booted release failed its probation, but the old slot
    /// is not usable: kept, nothing rolled back.
    NoFallback,
}

/// `health`.
#[derive(Debug, Serialize)]
pub struct Health<'a> {
    /// What was decided.
    pub outcome: HealthOutcome,
    /// The line the text output prints.
    pub message: &'a str,
}

/// `fleet`'s decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetAction {
    /// Nothing changes.
    Keep,
    /// The rollout is paused: no more hosts start installing.
    Pause,
    /// The rollout moves to the next wave.
    Advance,
}

/// `fleet`: the decision and what it came from.
#[derive(Debug, Serialize)]
pub struct Fleet<'a> {
    /// The manifest's version.
    pub release: &'a str,
    /// What was decided.
    pub action: FleetAction,
    /// Why, in words.
    pub reason: &'a str,
    /// The manifest was re-signed and published (never on `--dry-run`).
    pub changed: bool,
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// `prometheus` or `reports`.
    pub source: &'a str,
    /// The current wave's percentage (`rollout.percent`).
    pub percent: Option<f64>,
    /// Hosts the current wave covers.
    pub wave_hosts: Option<u64>,
    /// Hosts reporting (Prometheus), or `--fleet-size`.
    pub fleet_hosts: Option<u64>,
    /// Hosts that installed the release (every host of its `compatible`).
    pub installed: u64,
    /// Hosts that committed it (every host: inside the wave or not).
    pub committed: u64,
    /// Hosts where it failed, counted against the release.
    pub failed: u64,
    /// Of `failed`: hosts of an abupdate older than the `compatible` label
    /// whose rollback counter rose in the lookback (`--prometheus`; which
    /// release they rolled back is not known).
    pub failed_unattributed: u64,
    /// Failures the release did not cause (network, the host's own…).
    pub not_counted: u64,
    /// The same counts of the wave's own hosts, the only commits that
    /// advance it (`--prometheus` with a wave; null: not known).
    pub in_wave: Option<FleetWave>,
    /// Reports skipped because they could not be read (`--reports`).
    pub malformed_reports: Option<u64>,
    /// Every PromQL query asked and its answer (`--prometheus`).
    pub queries: Vec<FleetQuery<'a>>,
}

/// What the hosts inside the current wave say about the release.
#[derive(Debug, Serialize)]
pub struct FleetWave {
    /// Wave hosts whose latest word is "installed".
    pub installed: u64,
    /// Wave hosts that committed it.
    pub committed: u64,
    /// Wave hosts where it failed.
    pub failed: u64,
    /// Hosts outside the wave that committed it: shown, never counted
    /// towards advancing.
    pub committed_outside: u64,
}

/// One query `fleet` asked, and Prometheus's answer.
#[derive(Debug, Serialize)]
pub struct FleetQuery<'a> {
    /// The PromQL expression.
    pub query: &'a str,
    /// Its instant vector.
    pub answer: Vec<FleetSample<'a>>,
}

/// One sample of an instant vector.
#[derive(Debug, Serialize)]
pub struct FleetSample<'a> {
    /// The sample's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The sample's value.
    pub value: f64,
}

/// `keygen`: the pair written.
#[derive(Debug, Serialize)]
pub struct Keygen<'a> {
    /// The key id, as minisign prints it (hex).
    pub key_id: &'a str,
    /// Where the secret key was written.
    pub secret: String,
    /// Where the public key was written.
    pub public: String,
}

/// `sign`: the signature written.
#[derive(Debug, Serialize)]
pub struct Sign<'a> {
    /// `FILE.minisig`.
    pub signature: String,
    /// The id of the key that signed.
    pub key_id: &'a str,
    /// The signed comment, shown as `verify` shows it.
    pub trusted_comment: String,
}

/// `verify`: a signature that verified (one that does not is an
/// [`Error`]).
#[derive(Debug, Serialize)]
pub struct Verify<'a> {
    /// Always `true`.
    pub verified: bool,
    /// The id of the key it verified with.
    pub key_id: &'a str,
    /// The signed comment: signed, yet outside bytes, so shown escaped
    /// (a control character or a bidirectional override as `\xNN`, `\` as
    /// `\\`), as in the text output.
    pub trusted_comment: String,
}

/// `pack`: the release written.
#[derive(Debug, Serialize)]
pub struct Pack<'a> {
    /// `release.json` in the output directory.
    pub manifest: String,
    /// SHA-256 of the signed manifest's bytes (hex): what hosts record and
    /// `check --json` prints.
    pub manifest_sha256: &'a str,
    /// The release's version.
    pub version: &'a str,
    /// When it was signed (RFC 3339).
    pub created: &'a str,
    /// When hosts stop taking it (RFC 3339).
    pub expires: &'a str,
    /// Class → what was packed.
    pub images: BTreeMap<&'a str, PackedImage>,
    /// Notes for the release manager (also on stderr), one line each.
    pub notes: &'a [String],
}

/// One image of [`Pack`].
#[derive(Debug, Serialize)]
pub struct PackedImage {
    /// Bytes of the image (what lands in a slot).
    pub size: u64,
    /// Bytes of the full payload.
    pub download_size: Option<u64>,
    /// Independent frames of the full payload (0: one stream).
    pub segments: usize,
    /// Deltas packed (`--delta-from`).
    pub deltas: usize,
}

/// `channel`: the channel written.
#[derive(Debug, Serialize)]
pub struct Channel<'a> {
    /// `channel.json`.
    pub channel: String,
    /// SHA-256 of its signed bytes (hex).
    pub sha256: &'a str,
    /// When it was signed (RFC 3339).
    pub created: String,
    /// When hosts stop acting on it (RFC 3339).
    pub expires: String,
    /// The fleet-wide halt.
    pub halt: bool,
    /// Releases listed.
    pub releases: usize,
}

/// Any command that fails: on stdout, with the line on stderr.
#[derive(Debug, Serialize)]
pub struct Error<'a> {
    /// The one-line message.
    pub error: &'a str,
    /// The README's error kinds (`network`, `signature`, …).
    pub kind: crate::error::Kind,
}

/// `status`. The nested records are `state.json`'s own (`record`,
/// `transaction`, `failed`, `metrics`), serialized as they are stored.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// The slot running now (`null` when the host cannot tell).
    pub booted_slot: Option<SlotName>,
    /// The release running now (os-release, else the slot's record).
    pub booted_version: Option<&'a str>,
    /// The slot the bootloader boots next.
    pub primary_slot: Option<SlotName>,
    /// `A` and `B`: each slot's devices, record and bootloader state.
    pub slots: BTreeMap<SlotName, Slot<'a>>,
    /// The update in flight (`state.json`'s `transaction`), if any.
    pub transaction: Option<&'a crate::state::Transaction>,
    /// Releases that failed here and are not taken again, those an
    /// operator cancelled while staged (`"hold": "cancelled"`) and those
    /// an operator rolled back from by hand after their commit
    /// (`"hold": "rejected"`): the timer does not take these two again,
    /// an `install` by hand does.
    pub failed: &'a [crate::state::FailedRelease],
    /// abupdate's own bootloader variables, each value shown losslessly
    /// (bytes that are not UTF-8 text as `\xNN`).
    pub bootloader: &'a BTreeMap<String, String>,
    /// The maintenance window a staged release waits for.
    pub reboot_window: Option<&'a str>,
    /// This host's place in the fleet, 0 to 1.
    pub rollout_position: f64,
    /// The timer's `update` waits until then (RFC 3339).
    pub backoff_until: Option<&'a str>,
    /// What that backoff delays: `next_attempt`, or
    /// `attempts_after_the_owed_reboot` (a late rollback's reboot is owed
    /// and asked for regardless); `null` without a backoff.
    pub backoff_delays: Option<crate::agent::BackoffDelays>,
    /// A late rollback's owed reboot (`slot`, `version`, `asked`:
    /// `every_tick` or `maintenance_window`, `lock_group`), if any.
    pub reboot_owed: Option<&'a crate::agent::OwedReboot>,
    /// The FleetLock group whose reboot lock this host may hold.
    pub reboot_lock: Option<&'a str>,
    /// Why this host could not take its next update as it stands
    /// (`check: line`: what a trial on it would fail over), else `null`.
    pub next_update_blocked: Option<&'a str>,
    /// The committed release on probation, or the last one (passed,
    /// switched off, or failed with no fallback) (`state.json`'s
    /// `probation`: `slot`, `version`, `started`, `until`, `failures`,
    /// `passed`, `off`, `no_fallback`, …), if any.
    pub probation: Option<&'a crate::state::Probation>,
    /// Counters and times (`state.json`'s `metrics`).
    pub metrics: &'a crate::state::Metrics,
}

/// One slot in [`Status`].
#[derive(Debug, Serialize)]
pub struct Slot<'a> {
    /// Class → device path.
    pub devices: &'a BTreeMap<String, String>,
    /// The slot's record in `state.json` (status, version, …).
    pub record: &'a crate::state::SlotRecord,
    /// `good` or `bad`, as the bootloader sees it.
    pub bootloader_state: Option<&'a str>,
}

impl<'a> From<&'a crate::agent::Status> for Status<'a> {
    fn from(s: &'a crate::agent::Status) -> Status<'a> {
        Status {
            booted_slot: s.booted_slot,
            booted_version: s.booted_version.as_deref(),
            primary_slot: s.primary_slot,
            slots: s
                .slots
                .iter()
                .map(|(&name, st)| {
                    let slot = Slot {
                        devices: &st.devices,
                        record: &st.record,
                        bootloader_state: st.bootloader_state.as_deref(),
                    };
                    (name, slot)
                })
                .collect(),
            transaction: s.transaction.as_ref(),
            failed: &s.failed,
            bootloader: &s.bootloader,
            reboot_window: s.reboot_window.as_deref(),
            rollout_position: s.rollout_position,
            backoff_until: s.backoff_until.as_deref(),
            backoff_delays: s.backoff_delays,
            reboot_owed: s.reboot_owed.as_ref(),
            reboot_lock: s.reboot_lock.as_deref(),
            next_update_blocked: s.next_update_blocked.as_deref(),
            probation: s.probation.as_ref(),
            metrics: &s.metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn value(v: &impl Serialize) -> Value {
        serde_json::to_value(v).expect("serializes")
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn standing() -> Standing {
        Standing {
            position: 0.25,
            percentage: 10.0,
            included: false,
            paused: false,
            reason: Some("this host is at 25.00% of the fleet".into()),
        }
    }

    #[test]
    fn check_available_shape() {
        let s = standing();
        let v = value(&Check::available(
            "2.0",
            "ab12",
            "http://h/release.json".into(),
            Some(&s),
        ));
        assert_eq!(
            v,
            json!({
                "update_available": true, "version": "2.0", "manifest_sha256": "ab12",
                "source": "http://h/release.json",
                "rollout": {"position": 0.25, "percentage": 10.0, "included": false,
                            "paused": false, "reason": "this host is at 25.00% of the fleet"},
            })
        );
        let v = value(&Check::available(
            "2.0",
            "ab12",
            "file:///r.json".into(),
            None,
        ));
        assert_eq!(v["rollout"], Value::Null);
    }

    #[test]
    fn check_up_to_date_shape() {
        let v = value(&Check::up_to_date(
            NoUpdate::NotNewer,
            "release 1.0 is not newer",
            None,
        ));
        assert_eq!(
            v,
            json!({
                "update_available": false, "reason": "not_newer",
                "message": "release 1.0 is not newer", "rollout": null,
            })
        );
    }

    #[test]
    fn update_shapes() {
        let v = value(&Update::BackingOff {
            until: "2026-11-20T10:00:00Z".into(),
        });
        assert_eq!(
            v,
            json!({"outcome": "backing_off", "until": "2026-11-20T10:00:00Z"})
        );
        let s = standing();
        let v = value(&Update::UpToDate {
            reason: NoUpdate::WaitingForWave,
            message: "waits",
            rollout: Some(&s),
        });
        assert_eq!(keys(&v), ["message", "outcome", "reason", "rollout"]);
        assert_eq!(v["outcome"], "up_to_date");
        assert_eq!(v["reason"], "waiting_for_wave");
        assert_eq!(v["rollout"]["included"], false);
        let v = value(&Update::RolledBackLate {
            release: "2.0",
            message: "rolled back 2.0 late",
        });
        assert_eq!(
            v,
            json!({"outcome": "rolled_back_late", "release": "2.0", "message": "rolled back 2.0 late"})
        );
        let v = value(&Update::NoFallback {
            release: "2.0",
            message: "no fallback",
        });
        assert_eq!(
            v,
            json!({"outcome": "no_fallback", "release": "2.0", "message": "no fallback"})
        );
        let v = value(&Update::Disarmed {
            release: "2.0",
            message: "release 2.0 was staged in slot B",
        });
        assert_eq!(
            v,
            json!({"outcome": "disarmed", "release": "2.0", "message": "release 2.0 was staged in slot B"})
        );
        assert_eq!(
            value(&NoUpdate::StagedNotOffered),
            json!("staged_not_offered")
        );
        assert_eq!(value(&NoUpdate::OnProbation), json!("on_probation"));
        assert_eq!(value(&NoUpdate::OnWithdrawn), json!("on_withdrawn"));
        assert_eq!(value(&NoUpdate::Halted), json!("halted"));
    }

    #[test]
    fn install_shape() {
        let v = value(&Install {
            installed: "2.0",
            slot: SlotName::B,
            payload_bytes: 1 << 20,
            network_bytes: 4096,
            rebooting: true,
        });
        assert_eq!(
            v,
            json!({"installed": "2.0", "slot": "B", "payload_bytes": 1048576,
                   "network_bytes": 4096, "rebooting": true})
        );
    }

    #[test]
    fn health_shape_and_every_outcome() {
        let v = value(&Health {
            outcome: HealthOutcome::RolledBack,
            message: "rolled back 3.0: check failed",
        });
        assert_eq!(
            v,
            json!({"outcome": "rolled_back", "message": "rolled back 3.0: check failed"})
        );
        for (o, name) in [
            (HealthOutcome::Healthy, "healthy"),
            (HealthOutcome::Committed, "committed"),
            (HealthOutcome::RolledBack, "rolled_back"),
            (HealthOutcome::TrialNeverBooted, "trial_never_booted"),
            (HealthOutcome::AwaitingReboot, "awaiting_reboot"),
            (HealthOutcome::OnProbation, "on_probation"),
            (HealthOutcome::ProbationPassed, "probation_passed"),
            (HealthOutcome::ProbationOff, "probation_off"),
            (HealthOutcome::RolledBackLate, "rolled_back_late"),
            (HealthOutcome::NoFallback, "no_fallback"),
        ] {
            assert_eq!(value(&o), json!(name));
        }
    }

    /// One of each manual verb's outputs.
    fn every_manual() -> Vec<Manual<'static>> {
        use SlotName::{A, B};
        let m = "msg";
        vec![
            Manual::Marked {
                slot: B,
                good: true,
                message: m,
            },
            Manual::RolledBack {
                release: "2.0",
                slot: A,
                rebooting: true,
                message: m,
            },
            Manual::RolledBackLate {
                release: "2.0",
                slot: A,
                rebooting: false,
                message: m,
            },
            Manual::Cancelled {
                release: "2.0",
                slot: B,
                message: m,
            },
            Manual::Switched {
                slot: B,
                rebooting: true,
                message: m,
            },
            Manual::Unchanged { message: m },
        ]
    }

    #[test]
    fn manual_verb_shapes() {
        let shapes: Vec<Value> = every_manual().iter().map(value).collect();
        assert_eq!(
            shapes,
            vec![
                json!({"outcome": "marked", "slot": "B", "good": true, "message": "msg"}),
                json!({"outcome": "rolled_back", "release": "2.0", "slot": "A",
                       "rebooting": true, "message": "msg"}),
                json!({"outcome": "rolled_back_late", "release": "2.0", "slot": "A",
                       "rebooting": false, "message": "msg"}),
                json!({"outcome": "cancelled", "release": "2.0", "slot": "B", "message": "msg"}),
                json!({"outcome": "switched", "slot": "B", "rebooting": true, "message": "msg"}),
                json!({"outcome": "unchanged", "message": "msg"}),
            ]
        );
    }

    /// README's list of the manual verbs' outcomes is exactly what
    /// [`Manual`] prints, as for `check`'s reasons below.
    #[test]
    fn readme_lists_every_manual_outcome() {
        // Exhaustive: a new output does not compile until `every_manual`
        // has it, and then it must be in the README.
        for m in every_manual() {
            match m {
                Manual::Marked { .. }
                | Manual::RolledBack { .. }
                | Manual::RolledBackLate { .. }
                | Manual::Cancelled { .. }
                | Manual::Switched { .. }
                | Manual::Unchanged { .. } => {}
            }
        }
        let mut outcomes: Vec<String> = every_manual()
            .iter()
            .map(|m| value(m)["outcome"].as_str().expect("a name").to_string())
            .collect();
        outcomes.sort();
        assert_eq!(
            documented("The manual verbs' `outcome` is one of ", ".\n"),
            outcomes
        );
    }

    #[test]
    fn fleet_shape() {
        let labels = BTreeMap::from([("outcome".to_string(), "failed".to_string())]);
        let v = value(&Fleet {
            release: "2.0",
            action: FleetAction::Pause,
            reason: "6 hosts failed (limit 5)",
            changed: true,
            dry_run: false,
            source: "prometheus",
            percent: Some(2.0),
            wave_hosts: Some(20),
            fleet_hosts: Some(1000),
            installed: 10,
            committed: 3,
            failed: 6,
            failed_unattributed: 2,
            not_counted: 1,
            in_wave: Some(FleetWave {
                installed: 4,
                committed: 1,
                failed: 2,
                committed_outside: 2,
            }),
            malformed_reports: None,
            queries: vec![FleetQuery {
                query: "count(x)",
                answer: vec![FleetSample {
                    labels: &labels,
                    value: 6.0,
                }],
            }],
        });
        assert_eq!(
            v,
            json!({"release": "2.0", "action": "pause", "reason": "6 hosts failed (limit 5)",
                   "changed": true, "dry_run": false, "source": "prometheus", "percent": 2.0,
                   "wave_hosts": 20, "fleet_hosts": 1000, "installed": 10, "committed": 3,
                   "failed": 6, "failed_unattributed": 2, "not_counted": 1, "malformed_reports": null,
                   "in_wave": {"installed": 4, "committed": 1, "failed": 2,
                               "committed_outside": 2},
                   "queries": [{"query": "count(x)",
                                "answer": [{"labels": {"outcome": "failed"}, "value": 6.0}]}]})
        );
        assert_eq!(value(&FleetAction::Keep), json!("keep"));
        assert_eq!(value(&FleetAction::Advance), json!("advance"));
    }

    #[test]
    fn operator_tool_shapes() {
        let v = value(&Keygen {
            key_id: "29332418EABDF0BB",
            secret: "k.key".into(),
            public: "k.pub".into(),
        });
        assert_eq!(
            v,
            json!({"key_id": "29332418EABDF0BB", "secret": "k.key", "public": "k.pub"})
        );
        let v = value(&Sign {
            signature: "f.minisig".into(),
            key_id: "29332418EABDF0BB",
            trusted_comment: "c".into(),
        });
        assert_eq!(keys(&v), ["key_id", "signature", "trusted_comment"]);
        let v = value(&Verify {
            verified: true,
            key_id: "29332418EABDF0BB",
            trusted_comment: "c".into(),
        });
        assert_eq!(
            v,
            json!({"verified": true, "key_id": "29332418EABDF0BB", "trusted_comment": "c"})
        );
        let notes = vec!["note".to_string()];
        let v = value(&Pack {
            manifest: "out/release.json".into(),
            manifest_sha256: "ab12",
            version: "2.0",
            created: "2026-12-06T00:00:00Z",
            expires: "2027-03-06T00:00:00Z",
            images: BTreeMap::from([(
                "rootfs",
                PackedImage {
                    size: 8,
                    download_size: Some(4),
                    segments: 2,
                    deltas: 1,
                },
            )]),
            notes: &notes,
        });
        assert_eq!(
            v,
            json!({
                "manifest": "out/release.json", "manifest_sha256": "ab12", "version": "2.0",
                "created": "2026-12-06T00:00:00Z", "expires": "2027-03-06T00:00:00Z",
                "images": {"rootfs": {"size": 8, "download_size": 4, "segments": 2, "deltas": 1}},
                "notes": ["note"],
            })
        );
        let v = value(&Channel {
            channel: "www/channel.json".into(),
            sha256: "cd34",
            created: "2026-12-06T00:00:00Z".into(),
            expires: "2026-12-13T00:00:00Z".into(),
            halt: false,
            releases: 3,
        });
        assert_eq!(
            v,
            json!({
                "channel": "www/channel.json", "sha256": "cd34",
                "created": "2026-12-06T00:00:00Z", "expires": "2026-12-13T00:00:00Z",
                "halt": false, "releases": 3,
            })
        );
    }

    #[test]
    fn error_shape() {
        let v = value(&Error {
            error: "http://h/r.json: HTTP 404",
            kind: crate::error::Kind::NotFound,
        });
        assert_eq!(
            v,
            json!({"error": "http://h/r.json: HTTP 404", "kind": "not_found"})
        );
    }

    /// The backticked names of README.md's text from `start` to `end` that
    /// stand outside any parentheses or braces (those
    /// explain a name: they are not names of the list); a `slots.{A,B}`
    /// names `slots`.
    fn documented(start: &str, end: &str) -> Vec<String> {
        let readme = include_str!("../../README.md");
        let at = readme.find(start).expect("the README has the list") + start.len();
        let text = &readme[at..];
        let text = &text[..text.find(end).expect("the list ends")];
        let (mut depth, mut names, mut tick) = (0i32, Vec::new(), None);
        for (i, c) in text.char_indices() {
            match (c, tick) {
                ('`', None) => tick = Some(i + 1),
                ('`', Some(from)) => {
                    if depth == 0 {
                        let name = &text[from..i];
                        names.push(name.split('.').next().unwrap_or(name).to_string());
                    }
                    tick = None;
                }
                (_, Some(_)) => {}
                ('(' | '{', None) => depth += 1,
                (')' | '}', None) => depth -= 1,
                _ => {}
            }
        }
        names.sort();
        names
    }

    /// README's `check` reasons and `status` keys are exactly what the
    /// binary can print: a reason or key added without its line in the
    /// README (or a documented one that is gone) fails here.
    #[test]
    fn readme_lists_every_check_reason_and_status_key() {
        let every = [
            NoUpdate::NotModified,
            NoUpdate::NotNewer,
            NoUpdate::PreviouslyFailed,
            NoUpdate::Cancelled,
            NoUpdate::WaitingForWave,
            NoUpdate::OnProbation,
            NoUpdate::Halted,
            NoUpdate::OnWithdrawn,
            NoUpdate::WaitingForDownloadWindow,
            NoUpdate::StagedNotOffered,
        ];
        // Exhaustive: a new reason does not compile until it is listed
        // above, and then it must be in the README.
        for r in every {
            match r {
                NoUpdate::NotModified
                | NoUpdate::NotNewer
                | NoUpdate::PreviouslyFailed
                | NoUpdate::Cancelled
                | NoUpdate::WaitingForWave
                | NoUpdate::OnProbation
                | NoUpdate::Halted
                | NoUpdate::OnWithdrawn
                | NoUpdate::WaitingForDownloadWindow
                | NoUpdate::StagedNotOffered => {}
            }
        }
        let mut reasons: Vec<String> = every
            .iter()
            .map(|r| value(r).as_str().expect("a name").to_string())
            .collect();
        reasons.sort();
        assert_eq!(
            documented("`reason` is one of ", ":\nthe ordinary"),
            reasons
        );
        let status = value(&Status::from(&sample_status()));
        let keys: Vec<String> = keys(&status).into_iter().map(String::from).collect();
        assert_eq!(documented("\n`status`: ", "\n\n"), keys);
    }

    fn sample_status() -> crate::agent::Status {
        let mut slots = BTreeMap::new();
        for name in SlotName::ALL {
            slots.insert(
                name,
                crate::agent::SlotView {
                    devices: BTreeMap::from([("rootfs".to_string(), format!("/dev/{name}"))]),
                    record: crate::state::SlotRecord::default(),
                    bootloader_state: Some("good".into()),
                },
            );
        }
        crate::agent::Status {
            booted_slot: Some(SlotName::A),
            booted_version: Some("1.0".into()),
            primary_slot: Some(SlotName::A),
            slots,
            transaction: None,
            failed: Vec::new(),
            bootloader: BTreeMap::from([("ORDER".to_string(), "A B".to_string())]),
            reboot_window: None,
            rollout_position: 0.5,
            backoff_until: None,
            backoff_delays: None,
            reboot_owed: None,
            reboot_lock: None,
            next_update_blocked: None,
            probation: None,
            metrics: Default::default(),
        }
    }

    #[test]
    fn status_shape() {
        let v = value(&Status::from(&sample_status()));
        assert_eq!(
            keys(&v),
            [
                "backoff_delays",
                "backoff_until",
                "booted_slot",
                "booted_version",
                "bootloader",
                "failed",
                "metrics",
                "next_update_blocked",
                "primary_slot",
                "probation",
                "reboot_lock",
                "reboot_owed",
                "reboot_window",
                "rollout_position",
                "slots",
                "transaction",
            ]
        );
        assert_eq!(keys(&v["slots"]), ["A", "B"]);
        assert_eq!(
            keys(&v["slots"]["B"]),
            ["bootloader_state", "devices", "record"]
        );
        assert_eq!(v["slots"]["B"]["devices"], json!({"rootfs": "/dev/B"}));
        assert_eq!(v["slots"]["B"]["bootloader_state"], "good");
        assert_eq!(v["booted_slot"], "A");
        assert_eq!(v["bootloader"], json!({"ORDER": "A B"}));
        assert_eq!(v["transaction"], Value::Null);
        assert_eq!(v["backoff_until"], Value::Null);
        assert_eq!(v["failed"], json!([]));
        assert_eq!(v["probation"], Value::Null);
        assert_eq!(v["backoff_delays"], Value::Null);
        assert_eq!(v["reboot_owed"], Value::Null);
        assert_eq!(v["next_update_blocked"], Value::Null);
        let mut owed = sample_status();
        owed.backoff_until = Some("2027-01-15T08:00:00Z".into());
        owed.backoff_delays = Some(crate::agent::BackoffDelays::AttemptsAfterTheOwedReboot);
        owed.reboot_owed = Some(crate::agent::OwedReboot {
            slot: SlotName::A,
            version: "2.0".into(),
            asked: crate::agent::OwedAsk::EveryTick,
            lock_group: Some("store-7".into()),
        });
        let v = value(&Status::from(&owed));
        assert_eq!(v["backoff_delays"], "attempts_after_the_owed_reboot");
        assert_eq!(
            v["reboot_owed"],
            json!({"slot": "A", "version": "2.0", "asked": "every_tick", "lock_group": "store-7"})
        );
    }
}
