//! `status`: everything the host knows, as one view. It reads, never
//! writes: no lock is needed, and it shows a host another instance is
//! changing.
//!
//! Every value read from outside (os-release's version, the state's
//! records, whose versions, boot ids and failure reasons came from files,
//! children and servers; the bootloader's variables) is shown by the one
//! quoting rule, [`crate::text::show`], when this view is built
//! ([`shown`]): text and `--json` print the same escaped, lossless strings,
//! and no raw control character or bidirectional override reaches a
//! terminal.

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
    /// The FleetLock group whose reboot lock this host may hold (taken for
    /// a trial, not yet given back).
    pub reboot_lock: Option<String>,
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

/// Everything the host knows now.
pub fn status(host: &Host) -> Result<Status> {
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
    let reboot_window = (staged && !crate::schedule::may_reboot(windows, now()))
        .then(|| crate::schedule::next_window(windows, now()).map(crate::timefmt::format_rfc3339))
        .flatten();
    Ok(Status {
        booted_slot: booted,
        booted_version: booted
            .and_then(|b| host.booted_version_bytes(&state, b))
            .map(|v| show(&v)),
        primary_slot: host.boot.primary()?,
        slots,
        transaction: state.transaction.clone().map(shown::transaction),
        failed: state.failed.iter().cloned().map(shown::failed).collect(),
        bootloader: host.boot.describe()?.into_iter().collect(),
        reboot_window,
        rollout_position: host.position(),
        backoff_until: crate::schedule::backing_off_until(
            state.metrics.retry_after,
            now(),
            host.config.update.backoff_max,
        )
        .map(crate::timefmt::format_rfc3339),
        reboot_lock: state.fleetlock.as_deref().map(shown::text),
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

    pub(super) fn record(r: SlotRecord) -> SlotRecord {
        SlotRecord {
            version: opt(r.version),
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
            reason: text(&f.reason),
            ..f
        }
    }

    pub(super) fn probation(p: Probation) -> Probation {
        Probation {
            version: text(&p.version),
            boot_id: opt(p.boot_id),
            last_failure: opt(p.last_failure),
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

    #[test]
    fn state_text_is_shown_by_the_quoting_rule() {
        let hostile = String::from_utf8_lossy(HOSTILE).into_owned();
        let f = shown::failed(FailedRelease {
            version: "2.0".into(),
            manifest_sha256: "ab".into(),
            reason: format!("health check said {hostile}"),
            at: 1,
            hold: Default::default(),
            unknown: Default::default(),
        });
        assert_eq!(
            f.reason,
            "health check said 1.0\\xe2\\x80\\xae\\x1b[2J\u{fffd}"
        );
        let r = shown::record(SlotRecord {
            version: Some(hostile.clone()),
            ..Default::default()
        });
        assert!(!r.version.expect("version").contains(['\u{1b}', '\u{202e}']));
        assert_eq!(shown::text("a\\b"), "a\\\\b");
    }
}
