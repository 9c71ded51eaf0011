//! `status`: everything the host knows, as one view. It reads, never
//! writes, and reads the state once: every field comes from that one
//! snapshot (the timer's plan included), so an install saving the state
//! meanwhile never shows half its old state and half its new in one
//! output. No lock is needed for that, nor taken: a save is an atomic
//! rename, so the one read sees one whole state, and `status` never waits
//! behind a long install holding the instance lock.
//!
//! Every value read from outside (os-release's version, the state's
//! records, whose versions, boot ids and failure reasons came from files,
//! children and servers; the bootloader's variables) is shown by the one
//! quoting rule, [`crate::text::show`], when this view is built
//! ([`shown`]): text and `--json` print the same escaped, lossless strings,
//! and no raw control character or bidirectional override reaches a
//! terminal.
//!
//! What the timer's next tick does (a late rollback's owed reboot asked
//! for, or a backoff waited out) is not worked out here: it is
//! [`super::update::plan`]'s decision, made from the same facts the
//! timer's run reads ([`tick`] words it), so `status` cannot say a backoff
//! delays a reboot the timer asks for at every tick.

use super::Host;
use crate::error::Result;
use crate::slot::SlotName;
use crate::state::{FailedRelease, Phase, Probation, SlotRecord, Transaction};
use crate::text::show;
use crate::timefmt::now;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt as _;

/// Everything `status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// The slot running now, when the host can tell.
    pub booted_slot: Option<SlotName>,
    /// The release running now (os-release, else the record).
    pub booted_version: Option<String>,
    /// The slot the bootloader tries first on the next boot.
    pub primary_slot: Option<SlotName>,
    /// Each slot: its devices, record and bootloader flag.
    pub slots: BTreeMap<SlotName, SlotView>,
    /// The update in flight.
    pub transaction: Option<Transaction>,
    /// Releases that failed here and are never installed again.
    pub failed: Vec<crate::state::FailedRelease>,
    /// abupdate's variables in the bootloader env, shown losslessly
    /// ([`crate::boot::show`]).
    pub bootloader: BTreeMap<String, String>,
    /// A staged release waits for this maintenance window to reboot.
    pub reboot_window: Option<String>,
    /// Where this host stands in the fleet, 0 to 1.
    pub rollout_position: f64,
    /// The timer's `update` waits until then after failures (what `update`
    /// itself would decide now; `update --now` runs anyway).
    pub backoff_until: Option<String>,
    /// What that backoff delays (`None` without one): never a late
    /// rollback's owed reboot.
    pub backoff_delays: Option<BackoffDelays>,
    /// A late rollback's reboot that is owed, and when the timer asks for
    /// it.
    pub reboot_owed: Option<OwedReboot>,
    /// The FleetLock group whose reboot lock this host may hold (taken for
    /// a trial, not yet given back).
    pub reboot_lock: Option<String>,
    /// Why this host could not take its next update as it stands
    /// (`check: line`, the check a trial fails over:
    /// [`Host::next_update_blocked`]).
    pub next_update_blocked: Option<String>,
    /// The committed release on probation, or the last one whose
    /// probation ended (passed, switched off, or failed with no fallback).
    pub probation: Option<crate::state::Probation>,
    /// Counters and the bytes the last install fetched (`last_install_fetched`)
    /// against a full install (`last_install_full`).
    pub metrics: crate::state::Metrics,
}

/// One slot, as `status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct SlotView {
    /// Class → device path.
    pub devices: BTreeMap<String, String>,
    /// What the state records of it.
    pub record: SlotRecord,
    /// `good` or `bad` in the bootloader, when it can be read.
    pub bootloader_state: Option<String>,
}

/// A late rollback's owed reboot (the channel withdrew the release on
/// probation; the old slot boots next already), as `status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct OwedReboot {
    /// The slot the reboot boots (the old one).
    pub slot: SlotName,
    /// The release rolled back.
    pub version: String,
    /// When the timer asks for it.
    pub asked: OwedAsk,
    /// The FleetLock group whose lock is asked for first, when
    /// `[reboot] fleetlock` is configured.
    pub lock_group: Option<String>,
}

/// When the timer asks for an owed reboot ([`super::update::Then`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwedAsk {
    /// At every tick, whatever the backoff: the site's lock, then the
    /// reboot (a refused lock is asked for again at the next tick).
    EveryTick,
    /// Once the maintenance window opens (`reboot_window`), then at every
    /// tick; not before, whatever the backoff.
    MaintenanceWindow,
}

/// What a backoff delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffDelays {
    /// The timer's next attempt (check, download, install) waits until
    /// `backoff_until`.
    NextAttempt,
    /// A late rollback's reboot is owed: the timer asks for it regardless
    /// (nothing is installed meanwhile), and the backoff delays only the
    /// attempts after it (each refused lock counts a failure and grows the
    /// backoff, which still never delays the reboot).
    AttemptsAfterTheOwedReboot,
}

/// What the timer's next tick does, in `status`'s words, from what
/// [`super::update::plan`] decided (`then`): when an owed reboot is asked
/// for, and what a running backoff (`backing_off`) delays. Pure.
fn tick(then: &super::update::Then, backing_off: bool) -> (Option<OwedAsk>, Option<BackoffDelays>) {
    use super::update::Then;
    let owed = match then {
        Then::FinishRollback => Some(OwedAsk::EveryTick),
        Then::WaitForRebootWindow => Some(OwedAsk::MaintenanceWindow),
        Then::BackOff { .. } | Then::Attempt => None,
    };
    let delays = backing_off.then_some(match owed {
        Some(_) => BackoffDelays::AttemptsAfterTheOwedReboot,
        None => BackoffDelays::NextAttempt,
    });
    (owed, delays)
}

/// Everything the host knows now.
pub fn status(host: &Host) -> Result<Status> {
    // The one read of the state (see the module docs).
    let state = host.state_dir.load()?;
    let booted = host.booted_slot().ok();
    let mut slots = BTreeMap::new();
    for slot in SlotName::ALL {
        slots.insert(
            slot,
            SlotView {
                devices: host.config.slots[&slot]
                    .iter()
                    .map(|(c, p)| (show(c.as_bytes()), show(p.as_os_str().as_bytes())))
                    .collect(),
                record: shown::record(state.slot(slot)),
                bootloader_state: host.boot.state(slot).ok().map(|s| s.to_string()),
            },
        );
    }
    let windows = &host.config.reboot.windows;
    let staged = state
        .transaction
        .as_ref()
        .is_some_and(|t| t.phase == Phase::Staged);
    // The timer's view (not `--now`): what its next tick would do.
    let facts = super::update::facts_of(host, &state, Default::default());
    let (asked, backoff_delays) = tick(
        &super::update::plan(&facts).then,
        facts.backing_off.is_some(),
    );
    let reboot_owed = asked.and_then(|asked| {
        let owed = state.reboot_owed(booted?)?;
        Some(OwedReboot {
            slot: owed.slot,
            version: shown::text(&owed.version),
            asked,
            lock_group: host
                .config
                .reboot
                .fleetlock
                .as_ref()
                .map(|f| shown::text(&f.group)),
        })
    });
    let waits_for_window = staged || asked == Some(OwedAsk::MaintenanceWindow);
    let reboot_window = (waits_for_window && !crate::schedule::may_reboot(windows, now()))
        .then(|| crate::schedule::next_window(windows, now()).map(crate::timefmt::format_rfc3339))
        .flatten();
    Ok(Status {
        booted_slot: booted,
        booted_version: booted
            .and_then(|b| host.booted_version(&state, b))
            .as_deref()
            .map(shown::version),
        primary_slot: host.boot.primary()?,
        slots,
        transaction: state.transaction.clone().map(shown::transaction),
        // As it holds now: not the provisional entry of the probation
        // running (`probation` shows that one).
        failed: state.held().cloned().map(shown::failed).collect(),
        bootloader: host.boot.describe()?.into_iter().collect(),
        reboot_window,
        rollout_position: host.position(),
        backoff_until: crate::schedule::backing_off_until(
            state.metrics.retry_after,
            now(),
            host.config.update.backoff_max,
        )
        .map(crate::timefmt::format_rfc3339),
        backoff_delays,
        reboot_owed,
        reboot_lock: state.fleetlock.as_deref().map(shown::text),
        next_update_blocked: host
            .next_update_blocked()
            .map(|(check, line)| format!("{check}: {line}")),
        probation: state.probation.clone().map(shown::probation),
        metrics: state.metrics.clone(),
    })
}

/// The state's records with each text value as [`show`] writes it. Pure.
mod shown {
    use super::*;

    /// `s` (state text, once outside bytes) by the quoting rule.
    pub(super) fn text(s: &str) -> String {
        show(s.as_bytes())
    }

    fn opt(s: Option<String>) -> Option<String> {
        s.as_deref().map(text)
    }

    /// A booted version ([`Host::booted_version`]), or a slot record's:
    /// os-release's already as [`show`] writes it, so kept as it is
    /// ([`crate::text::show_shown`]).
    pub(super) fn version(s: &str) -> String {
        crate::text::show_shown(s)
    }

    pub(super) fn record(r: SlotRecord) -> SlotRecord {
        SlotRecord {
            version: r.version.as_deref().map(version),
            manifest_sha256: opt(r.manifest_sha256),
            ..r
        }
    }

    pub(super) fn transaction(t: Transaction) -> Transaction {
        Transaction {
            version: text(&t.version),
            manifest_sha256: text(&t.manifest_sha256),
            staged_boot_id: opt(t.staged_boot_id),
            ..t
        }
    }

    pub(super) fn failed(f: FailedRelease) -> FailedRelease {
        FailedRelease {
            version: text(&f.version),
            manifest_sha256: text(&f.manifest_sha256),
            // Made of shown text already (a check's output as `show`
            // wrote it): kept, so nothing is escaped twice.
            reason: crate::text::show_shown(&f.reason),
            // Past its probation, a provisional entry is a failure.
            provisional: false,
            ..f
        }
    }

    pub(super) fn probation(p: Probation) -> Probation {
        Probation {
            version: text(&p.version),
            boot_id: opt(p.boot_id),
            last_failure: p.last_failure.as_deref().map(crate::text::show_shown),
            ..p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The os-release value the reviewer used: a bidi override, an ESC
    /// sequence and a byte that is not UTF-8.
    const HOSTILE: &[u8] = b"1.0\xe2\x80\xae\x1b[2J\xff";

    #[test]
    fn os_release_version_is_read_byte_for_byte_and_shown_escaped() {
        let mut file = b"ID=test\nIMAGE_VERSION=".to_vec();
        file.extend_from_slice(HOSTILE);
        file.push(b'\n');
        let raw = crate::system::version_bytes_from_os_release(&file).expect("a version");
        assert_eq!(raw, HOSTILE, "no byte lost or replaced");
        assert_eq!(show(&raw), "1.0\\xe2\\x80\\xae\\x1b[2J\\xff");
    }

    /// `status` says what the timer's next tick does as `update::plan`
    /// decided it: an owed reboot is asked for at every tick (or once the
    /// window opens) whatever the backoff, which then delays only the
    /// attempts after it.
    #[test]
    fn status_says_an_owed_reboot_is_asked_for_at_every_tick_whatever_the_backoff() {
        use super::super::update::Then;
        let backoff = Then::BackOff { until: 1 };
        for (then, backing_off, want) in [
            (
                Then::FinishRollback,
                true,
                (
                    Some(OwedAsk::EveryTick),
                    Some(BackoffDelays::AttemptsAfterTheOwedReboot),
                ),
            ),
            (
                Then::FinishRollback,
                false,
                (Some(OwedAsk::EveryTick), None),
            ),
            (
                Then::WaitForRebootWindow,
                true,
                (
                    Some(OwedAsk::MaintenanceWindow),
                    Some(BackoffDelays::AttemptsAfterTheOwedReboot),
                ),
            ),
            (
                Then::WaitForRebootWindow,
                false,
                (Some(OwedAsk::MaintenanceWindow), None),
            ),
            (backoff, true, (None, Some(BackoffDelays::NextAttempt))),
            (Then::Attempt, false, (None, None)),
        ] {
            assert_eq!(tick(&then, backing_off), want, "{then:?} {backing_off}");
        }
    }

    #[test]
    fn state_text_is_shown_by_the_quoting_rule() {
        let hostile = String::from_utf8_lossy(HOSTILE).into_owned();
        let f = shown::failed(FailedRelease {
            version: "2.0".into(),
            manifest_sha256: "ab".into(),
            reason: format!("health check said {hostile}"),
            at: 1,
            hold: Default::default(),
            provisional: false,
            unknown: Default::default(),
        });
        assert_eq!(
            f.reason,
            "health check said 1.0\\xe2\\x80\\xae\\x1b[2J\u{fffd}"
        );
        // A reason is made of shown text (a check's output as `show` wrote
        // it): kept as it is, never escaped twice (found from outside:
        // `final\x0dover` was shown `final\\x0dover`, a backslash then).
        let shown_once = shown::failed(FailedRelease {
            reason: "exit status 3: final\\x0dover".into(),
            ..f.clone()
        });
        assert_eq!(shown_once.reason, "exit status 3: final\\x0dover");
        let r = shown::record(SlotRecord {
            version: Some(hostile.clone()),
            ..Default::default()
        });
        assert!(!r.version.expect("version").contains(['\u{1b}', '\u{202e}']));
        assert_eq!(shown::text("a\\b"), "a\\\\b");
    }
}
