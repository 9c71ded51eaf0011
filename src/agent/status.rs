//! `status`: everything the host knows, as one view. It reads, never
//! writes: no lock is needed, and it shows a host another instance is
//! changing.

use super::Host;
use crate::error::Result;
use crate::slot::SlotName;
use crate::state::{Phase, SlotRecord, Transaction};
use crate::timefmt::now;
use std::collections::BTreeMap;

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
                    .map(|(c, p)| (c.clone(), p.display().to_string()))
                    .collect(),
                record: state.slot(slot),
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
        booted_version: booted.and_then(|b| host.booted_version(&state, b)),
        primary_slot: host.boot.primary()?,
        slots,
        transaction: state.transaction.clone(),
        failed: state.failed.clone(),
        bootloader: host.boot.describe()?.into_iter().collect(),
        reboot_window,
        rollout_position: host.position(),
        backoff_until: crate::schedule::backing_off_until(
            state.metrics.retry_after,
            now(),
            host.config.update.backoff_max,
        )
        .map(crate::timefmt::format_rfc3339),
        reboot_lock: state.fleetlock.clone(),
        probation: state.probation.clone(),
        metrics: state.metrics.clone(),
    })
}
