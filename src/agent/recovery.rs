//! The recovery flows: retiring a failed trial (the one way, for every
//! failure), finishing a rollback whose reboot never happened, and the
//! verbs a person runs by hand (`mark-good`, `mark-bad`, `rollback`), as
//! rauc's `mark.c` keeps them apart from the install.
//!
//! Invariant: a manual change never leaves the bootloader and the state
//! disagreeing about which slot may boot (`transition.rs` rule 5), and a
//! rollback onto a slot the state does not hold as usable needs `--force`.

use super::report::publish;
use super::transition::Transition;
use super::verdict::{reboot_into, Failure, Verdict};
use super::{log, Host, Refusal};
use crate::error::Result;
use crate::slot::SlotName;
use crate::state::{State, Transaction};

/// Retire the trial `t` that failed (`why`), or the committed release on
/// probation that failed late: marked bad, the slot it came from
/// activated, its release on the failed list, reported; then, for a slot
/// that is running, the reboot into the old slot, and where the bootloader
/// already fell back, the re-bless of the running slot.
pub(super) fn retire_trial(
    host: &Host,
    flip: &Transition,
    state: &mut State,
    t: &Transaction,
    why: &Failure,
    no_reboot: bool,
) -> Result<Verdict> {
    let reason = why.reason(t);
    match why {
        Failure::NeverBooted => log(&reason),
        Failure::Late { .. } => log(&format!(
            "rolling back {} in slot {} late: {reason}",
            t.version, t.to
        )),
        _ => log(&format!(
            "rolling back {} in slot {}: {reason}",
            t.version, t.to
        )),
    }
    flip.retire(state, t, why)?;
    let report = Some((why.outcome(), t.version.as_str()));
    let error = Some((why.kind(), reason.as_str()));
    let version = t.version.clone();
    if why.fell_back() {
        // The running slot is the one it fell back to.
        flip.rebless(state, t.from)?;
        publish(host, state, report, error);
    } else {
        publish(host, state, report, error);
        reboot_into(host, t.from, no_reboot)?;
    }
    Ok(match why {
        Failure::NeverBooted => Verdict::TrialNeverBooted { version },
        Failure::Late { .. } => Verdict::RolledBackLate { version, reason },
        _ => Verdict::RolledBack { version, reason },
    })
}

/// Disarm the staged trial `t` the release channel no longer offers
/// (`why`: one line naming the release, its slot and the channel): the
/// running slot boots next again ([`Transition::disarm`], then re-blessed:
/// the activation gave it a fresh try budget), reported as `disarmed`. No
/// reboot: the running slot is the one that boots next.
pub(super) fn disarm(
    host: &Host,
    lock: &crate::state::StateLock,
    state: &mut State,
    t: &Transaction,
    why: &str,
) -> Result<String> {
    let flip = Transition::new(host, lock);
    flip.disarm(state, t)?;
    flip.rebless(state, t.from)?;
    let line = format!("{why}: disarmed, slot {} stays the next boot", t.from);
    log(&line);
    host.release_reboot_lock(lock, state);
    publish(
        host,
        state,
        Some((crate::report::Outcome::Disarmed, t.version.as_str())),
        None,
    );
    Ok(line)
}

/// The booted slot is recorded bad (its trial failed, or `mark-bad`) while
/// the other slot is usable: the rollback was recorded but the reboot never
/// happened (a crash after the state write, a failed reboot command,
/// `--no-reboot`). Make sure the good slot boots next and reboot into it.
pub(super) fn finish_rollback(
    host: &Host,
    flip: &Transition,
    state: &State,
    booted: SlotName,
    no_reboot: bool,
) -> Result<Verdict> {
    let other = booted.other();
    flip.finish_rollback(booted)?;
    let reason = format!("slot {booted} is marked bad; slot {other} boots next");
    log(&reason);
    reboot_into(host, other, no_reboot)?;
    Ok(Verdict::RolledBack {
        version: state
            .slot(booted)
            .version
            .unwrap_or_else(|| "the booted release".into()),
        reason,
    })
}

/// Run the reboot command. Reports still in flight get until their
/// deadline first (`[report] webhook_timeout`): the reboot would cut them
/// off. The state lock stays held until the host goes down: no other
/// instance acts on a host that is about to reboot.
pub(super) fn reboot(host: &Host) -> Result<()> {
    crate::report::flush();
    Ok(crate::system::reboot(&host.config.system.reboot)?)
}

/// `mark-good` / `mark-bad` by hand: `slot`, else the booted one.
pub fn mark(host: &Host, slot: Option<SlotName>, good: bool) -> Result<SlotName> {
    let lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let slot = match slot {
        Some(s) => s,
        None => host.booted_slot()?,
    };
    Transition::new(host, &lock).mark(&mut state, slot, good)?;
    Ok(slot)
}

/// Boot the other slot (if it holds a good system, or `force`).
pub fn rollback(host: &Host, force: bool, no_reboot: bool) -> Result<SlotName> {
    let lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let other = booted.other();
    let status = state.slot(other).status;
    let usable = status.is_usable();
    if !usable && !force {
        return Err(Refusal::NotUsable {
            slot: other,
            status,
        }
        .into());
    }
    Transition::new(host, &lock).switch_to(&mut state, other, !usable)?;
    log(&format!("slot {other} is now primary"));
    if !no_reboot {
        reboot(host)?;
    }
    Ok(other)
}
