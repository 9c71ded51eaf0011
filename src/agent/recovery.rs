//! The recovery verbs: retiring a failed trial, finishing a rollback,
//! re-blessing, `mark-good`/`mark-bad`, `rollback`, the reboot.

use super::report::publish;
use super::{log, Host, Verdict};
use crate::boot::BootState;
use crate::error::{Error, Result};
use crate::slot::SlotName;
use crate::state::{Phase, State, Transaction};
use crate::system;
use crate::timefmt::now;

pub(super) fn rollback_trial(
    host: &Host,
    state: &mut State,
    t: &Transaction,
    reason: &str,
    no_reboot: bool,
) -> Result<Verdict> {
    log(&format!(
        "rolling back {} in slot {}: {reason}",
        t.version, t.to
    ));
    host.boot.set_state(t.to, BootState::Bad)?;
    host.boot.activate(t.from)?;
    crate::failpoint::hit("rolled-back");
    state.record_failed(&t.version, &t.manifest_sha256, reason, now());
    let mut rec = state.slot(t.to);
    rec.status = "bad".into();
    state.slots.insert(t.to, rec);
    state.transaction = None;
    state.metrics.rollbacks += 1;
    *state.metrics.failures.entry("health".into()).or_default() += 1;
    host.state_dir.save(&state.clone())?;
    publish(
        host,
        state,
        Some(("rolled_back", t.version.as_str())),
        Some(("health", reason)),
    );
    if !no_reboot {
        log(&format!("rebooting into slot {}", t.from));
        reboot(host)?;
    }
    Ok(Verdict::RolledBack {
        version: t.version.clone(),
        reason: reason.to_string(),
    })
}

/// The booted slot is recorded bad (its trial failed, or `mark-bad`) while
/// the other slot is good: the rollback was recorded but the reboot never
/// happened (a crash after the state write, a failed reboot command,
/// `--no-reboot`). Re-blessing would make the failed slot bootable again;
/// make sure the good slot boots next and reboot into it instead.
pub(super) fn finish_rollback(
    host: &Host,
    state: &State,
    booted: SlotName,
    no_reboot: bool,
) -> Result<Verdict> {
    let other = booted.other();
    if host.boot.state(booted)? == BootState::Good {
        host.boot.set_state(booted, BootState::Bad)?;
    }
    if host.boot.primary()? != Some(other) || host.boot.state(other)? != BootState::Good {
        host.boot.activate(other)?;
    }
    let rec = state.slot(booted);
    let reason = format!("slot {booted} is marked bad; slot {other} boots next");
    log(&reason);
    if !no_reboot {
        log(&format!("rebooting into slot {other}"));
        reboot(host)?;
    }
    Ok(Verdict::RolledBack {
        version: rec.version.unwrap_or_else(|| "the booted release".into()),
        reason,
    })
}

/// Run the reboot command. Reports still in flight get until their
/// deadline first (`[report] webhook_timeout`): the reboot would cut them
/// off. The state lock stays held until the host goes down: no other
/// instance acts on a host that is about to reboot.
pub(super) fn reboot(host: &Host) -> Result<()> {
    crate::report::flush();
    system::reboot(&host.config.system.reboot).map_err(Error::Refused)
}

/// Mark the running, healthy slot good again. The bootloader script sets
/// TRY on every slot it visits; re-blessing on each healthy boot keeps a
/// later failure of the other slot from leaving both flagged.
pub(super) fn rebless(host: &Host, state: &mut State, booted: SlotName) -> Result<()> {
    host.boot.set_state(booted, BootState::Good)?;
    let mut rec = state.slot(booted);
    if rec.status != "good" && (rec.status == "installed" || rec.status == "empty") {
        rec.status = "good".into();
        if rec.version.is_none() {
            rec.version = host.booted_version(state, booted);
        }
        state.slots.insert(booted, rec);
        host.state_dir.save(state)?;
    } else if state.recovered.is_some() {
        // Repair a damaged state.json (and keep its count) once.
        host.state_dir.save(state)?;
    }
    Ok(())
}

/// `mark-good` / `mark-bad` by hand.
pub fn mark(host: &Host, slot: Option<SlotName>, good: bool) -> Result<SlotName> {
    let _lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let slot = match slot {
        Some(s) => s,
        None => host.booted_slot()?,
    };
    host.boot.set_state(
        slot,
        if good {
            BootState::Good
        } else {
            BootState::Bad
        },
    )?;
    let mut rec = state.slot(slot);
    rec.status = if good { "good" } else { "bad" }.into();
    state.slots.insert(slot, rec);
    if good
        && state
            .transaction
            .as_ref()
            .is_some_and(|t| t.to == slot && t.phase == Phase::Staged)
    {
        state.transaction = None;
    }
    host.state_dir.save(&state)?;
    Ok(slot)
}

/// Boot the other slot (if it holds a good system).
pub fn rollback(host: &Host, force: bool, no_reboot: bool) -> Result<SlotName> {
    let _lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let other = booted.other();
    let rec = state.slot(other);
    let usable = matches!(rec.status.as_str(), "good" | "installed");
    if !usable && !force {
        return Err(Error::Refused(format!(
            "slot {other} is {} in the state; refusing to roll back to it (use --force)",
            rec.status
        )));
    }
    host.boot.activate(other)?;
    crate::failpoint::hit("rollback");
    // Onto a slot that is staged and never tried: the boot is its trial,
    // so the transaction stays (health then judges it); anything else in
    // flight is abandoned.
    let staged_there = state
        .transaction
        .as_ref()
        .is_some_and(|t| t.to == other && t.phase == Phase::Staged);
    if !staged_there {
        state.transaction = None;
    }
    if !usable {
        // The operator vouches for it: no longer "bad", so the health
        // check on its boot blesses it instead of rolling back again.
        let mut rec = rec;
        rec.status = "installed".into();
        state.slots.insert(other, rec);
    }
    host.state_dir.save(&state)?;
    log(&format!("slot {other} is now primary"));
    if !no_reboot {
        reboot(host)?;
    }
    Ok(other)
}
