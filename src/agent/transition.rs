//! Every change of the bootloader, in order with the state: the few legal
//! sequences of the flows, one method each. No flow calls the bootloader's
//! writes ([`crate::boot::Bootloader::set_state`], `activate`) or saves the
//! state around them by itself.
//!
//! The ordering rules (the agent's invariants 3 and 4):
//! 1. **Fit first.** Before an install marks anything, the env after
//!    marking the target bad and then activating it must fit
//!    ([`Transition::check_install`]): an image is never written that
//!    cannot be activated.
//! 2. **Bad right before the first byte, then recorded.** An install marks
//!    its target bad only right before the target's first byte changes,
//!    and then records the transaction (`writing`) before that byte is
//!    written ([`Transition::arm`], called from the writer's
//!    `before_write`): what fails before it (a server answering 503, a
//!    payload cut before its first chunk) leaves the target as it was, and
//!    a power cut at any instant finds the target untouched or marked bad.
//! 3. **Activate after verify, with the transaction recorded.** Only an
//!    [`Armed`] install (its transaction on disk) can be activated
//!    ([`Transition::stage`]), and the install flow stages only after every
//!    image was read back from the medium and hashed right. The state then
//!    says `staged`; a crash in between leaves `writing` with the slot
//!    activated, which the trial's boot settles by the slot's bytes. A
//!    save of `staged` that fails (a full or read-only state file system)
//!    undoes the activation before the error is returned: the target bad,
//!    the running slot next and good again, as `writing` (still on disk)
//!    says; each of those writes is one a crash may stop at, and each
//!    leaves a bootloader `writing` describes.
//! 4. **Retire as one pair.** A failed trial is marked bad and the slot it
//!    came from activated (one pair, then the failed list):
//!    [`Transition::retire`] is the one way a trial is retired, whether
//!    its checks failed, its bytes were wrong or it never came up. A
//!    record of it that is lost (its save failed, or the run was cut) is
//!    finished by the next `health` on that boot where the bootloader
//!    tells the mark bad (`verdict::BootView::booted_retired`): the
//!    pair, written first, is what makes the retirement.
//!    A staged trial the release channel no longer offers is disarmed by
//!    the same pair ([`Transition::disarm`]), without the failed list; one
//!    an operator cancels ([`Transition::cancel`]) too, held on the list
//!    as cancelled (the timer's runs skip it; an `install` by hand not).
//! 5. **The bootloader first, then the record** for a commit, a re-bless,
//!    `mark-good`/`mark-bad` and a manual rollback: the record never
//!    claims more than the bootloader will do.
//!
//! Every state write goes through the [`StateLock`] the transition holds:
//! only the instance holding the lock changes the host.
//!
//! Each step's time (its outcome, `last_success`, the slot's and the
//! probation's records) is its release's next outcome time ([`step_time`]): never
//! before the release's previous outcome on this host, so a commit under a
//! clock still at 2000 is not taken for a step before the install.

use super::verdict::Failure;
use super::Host;
use crate::boot::BootState;
use crate::error::Result;
use crate::report::Outcome;
use crate::slot::SlotName;
use crate::state::{build_of, State, StateLock, Transaction};
use crate::timefmt::now;

/// The bootloader and the state of one host, under its lock.
pub(super) struct Transition<'a> {
    host: &'a Host,
    lock: &'a StateLock,
}

/// An install whose target is marked bad and whose transaction is on disk
/// (rule 2): what [`Transition::stage`] and [`Transition::abandon`] take.
/// Only [`Transition::arm`] makes one.
#[derive(Debug)]
pub(super) struct Armed {
    transaction: Transaction,
}

impl<'a> Transition<'a> {
    pub(super) fn new(host: &'a Host, lock: &'a StateLock) -> Transition<'a> {
        Transition { host, lock }
    }

    /// The state lock this transition writes with (a reboot lock is
    /// recorded under it).
    pub(super) fn lock(&self) -> &StateLock {
        self.lock
    }

    /// Save `state` (the lock holder's write).
    pub(super) fn save(&self, state: &State) -> Result<()> {
        Ok(self.lock.save(state)?)
    }

    /// Rule 1: the env after this install's two writes fits. Writes nothing.
    pub(super) fn check_install(&self, target: SlotName) -> Result<()> {
        Ok(self.host.boot.check_activate(target)?)
    }

    /// Rule 2: mark `t.to` bad, then record `t` (`writing`, the target's
    /// record `installing`).
    pub(super) fn arm(&self, state: &mut State, t: Transaction) -> Result<Armed> {
        self.host.boot.set_state(t.to, BootState::Bad)?;
        crate::failpoint::hit("target-marked-bad");
        state.begin_write(t.clone());
        self.save(state)?;
        Ok(Armed { transaction: t })
    }

    /// The write of an armed install failed: nothing is pending any more,
    /// and the target is recorded bad (the bootloader already says so).
    pub(super) fn abandon(&self, state: &mut State, armed: Armed) -> Result<()> {
        state.abandon_write(armed.transaction.to);
        self.save(state)
    }

    /// Rule 3: activate the armed, verified target, then record it staged.
    /// `update` adds what the install fetched to the counters before the
    /// state is saved.
    pub(super) fn stage(
        &self,
        state: &mut State,
        armed: Armed,
        update: impl FnOnce(&mut State),
    ) -> Result<()> {
        let t = armed.transaction;
        self.host.boot.activate(t.to)?;
        crate::failpoint::hit("activated");
        // What is on disk (`writing`), kept for a save that fails.
        let before = state.clone();
        let at = step_time(state, &t.version);
        state.stage(&t, self.host.boot_id(), at);
        update(state);
        state.metrics.last_success = Some(at);
        record(state, &t, Outcome::Installed, at);
        let Err(source) = self.lock.save(state) else {
            return Ok(());
        };
        // The record says `writing` and the bootloader would boot the
        // target next: an install that exits 1 must not leave a reboot
        // into a release no record stages (found from outside: a state
        // file system that filled after the verify).
        *state = before;
        let bootloader = match self.undo_activation(&t) {
            Ok(()) => format!(
                "the bootloader was restored: slot {} is marked bad and slot {} boots next",
                t.to, t.from
            ),
            Err(e) => format!(
                "restoring the bootloader failed too ({e}): slot {} may boot next with {}, which no record stages",
                t.to, t.version
            ),
        };
        Err(self.not_recorded(
            format!("slot {} staged with {}", t.to, t.version),
            source,
            bootloader,
        ))
    }

    /// The error of a save that failed after the bootloader was written:
    /// what was not recorded, why, and what the bootloader holds now.
    fn not_recorded(
        &self,
        what: String,
        source: crate::state::StateError,
        bootloader: String,
    ) -> crate::error::Error {
        crate::state::StateError::NotRecorded {
            path: self.lock.state_file(),
            what,
            source: Box::new(source),
            bootloader,
        }
        .into()
    }

    /// Undo an activation of `t.to` whose `staged` record was not saved:
    /// `t.to` bad, `t.from` (running) activated, then good again (the
    /// activation gave it a trial's budget): what the recorded `writing`
    /// says, after each write.
    fn undo_activation(&self, t: &Transaction) -> std::result::Result<(), crate::boot::BootError> {
        self.host.boot.set_state(t.to, BootState::Bad)?;
        self.host.boot.activate(t.from)?;
        self.host.boot.set_state(t.from, BootState::Good)
    }

    /// The trial in `t.to` passed: good in the bootloader, then committed
    /// (on probation for `probation` seconds, when not zero: one state
    /// write).
    pub(super) fn commit(&self, state: &mut State, t: &Transaction, probation: u64) -> Result<()> {
        self.host.boot.set_state(t.to, BootState::Good)?;
        crate::failpoint::hit("committed");
        let at = step_time(state, &t.version);
        state.commit(t, at, probation, self.host.boot_id());
        record(state, t, Outcome::Committed, at);
        self.save(state)?;
        // Saved again, so the last good copy (`state.json.prev`, what a
        // damaged state falls back to) records the commit too: one step
        // behind, it held the trial, and a damaged state.json until the
        // next install had health judge the committed release as a trial
        // again, a failing check rolling it back (review 9, 02).
        self.save(state)
    }

    /// A trial in `booted` that the damaged `state.json` did not describe
    /// passed its checks: good in the bootloader, then committed as far as
    /// the facts allow ([`State::commit_undescribed`]): `version`
    /// (os-release's) on probation for `probation` seconds when not zero,
    /// and its `committed` outcome recorded. With no version known there
    /// is nothing to put on probation or to record an outcome of: the
    /// record is blessed as a re-bless would. Saved twice, as
    /// [`Transition::commit`] is, so the last good copy records it too.
    pub(super) fn commit_undescribed(
        &self,
        state: &mut State,
        booted: SlotName,
        version: Option<&str>,
        probation: u64,
    ) -> Result<()> {
        self.host.boot.set_state(booted, BootState::Good)?;
        match version {
            Some(version) => {
                let at = step_time(state, version);
                state.commit_undescribed(booted, version, at, probation, self.host.boot_id());
                // No build: the images the trial wrote are not known.
                crate::report::record_outcome(
                    &mut state.outcomes,
                    version,
                    None,
                    Outcome::Committed,
                    None,
                    at,
                );
            }
            None => {
                // Its checks passed: a slot kept failing is good again.
                state.checks_passed(booted);
                state.bless(booted, || None);
                state.mark_agent(booted);
            }
        }
        self.save(state)?;
        self.save(state)
    }

    /// Rule 4: the trial `t` failed (or the committed release it stands
    /// for was rejected by hand): bad, the slot it came from activated,
    /// then the failed list and the record.
    pub(super) fn retire(&self, state: &mut State, t: &Transaction, why: &Failure) -> Result<()> {
        self.host.boot.set_state(t.to, BootState::Bad)?;
        crate::failpoint::hit("retire-marked-bad");
        self.host.boot.activate(t.from)?;
        crate::failpoint::hit("rolled-back");
        let at = step_time(state, &t.version);
        state.retire_trial(
            t,
            why.holds_release(),
            &why.reason(t),
            why.kind(),
            why.hold(),
            at,
        );
        record(state, t, why.outcome(), at);
        let Err(source) = self.lock.save(state) else {
            return Ok(());
        };
        // The bootloader already left the release: say so, and what the
        // next boot does, rather than a bare "No space left on device".
        Err(self.not_recorded(
            format!("slot {} retired ({} rolled back)", t.to, t.version),
            source,
            format!(
                "the bootloader holds slot {} bad and boots slot {} next: a reboot leaves the release",
                t.to, t.from
            ),
        ))
    }

    /// Rule 4's pair for a staged trial `t` the release channel no longer
    /// offers (withdrawn, halted): `t.to` bad, `t.from` (running) activated,
    /// then the record ([`State::disarm`]: nothing pending, not on the
    /// failed list). A crash before the record leaves `staged` recorded;
    /// the next `update` disarms again (each write idempotent).
    pub(super) fn disarm(&self, state: &mut State, t: &Transaction) -> Result<()> {
        self.disarm_pair(t)?;
        let at = step_time(state, &t.version);
        state.disarm(t);
        record(state, t, Outcome::Disarmed, at);
        self.save(state)
    }

    /// An interrupted write `t` (recorded `writing`, into the slot that
    /// is not booted) of a release the timer no longer installs: ended by
    /// the pair of a disarm (`t.to` bad, which it is already unless the
    /// crash came after its activation; `t.from`, running, activated),
    /// then the record ([`State::abandon_write`]: nothing pending, the
    /// slot bad). A crash before the record leaves `writing`, which the
    /// next `update` ends again (each write idempotent).
    pub(super) fn end_write(&self, state: &mut State, t: &Transaction) -> Result<()> {
        self.disarm_pair(t)?;
        state.abandon_write(t.to);
        self.save(state)
    }

    /// Rule 4's pair for a staged trial `t` an operator cancelled
    /// (`mark-bad` of its slot, `why`), then the record
    /// ([`State::cancel`]: disarmed, the release held as cancelled, not
    /// failed). A crash before the record leaves `staged` recorded with
    /// `t.to` bad: the operator's `mark-bad` runs again.
    pub(super) fn cancel(&self, state: &mut State, t: &Transaction, why: &str) -> Result<()> {
        self.disarm_pair(t)?;
        let at = step_time(state, &t.version);
        state.cancel(t, why, at);
        record(state, t, Outcome::Disarmed, at);
        self.save(state)
    }

    /// `t.to` bad, then `t.from` (running) activated.
    fn disarm_pair(&self, t: &Transaction) -> Result<()> {
        self.host.boot.set_state(t.to, BootState::Bad)?;
        crate::failpoint::hit("disarm-marked-bad");
        self.host.boot.activate(t.from)?;
        crate::failpoint::hit("disarmed");
        Ok(())
    }

    /// The running slot failed its checks and nothing else is known to
    /// boot: it stays bootable (good in the bootloader, as a re-bless
    /// leaves it, so its tries are not spent), and its record says it
    /// failed ([`crate::state::SlotStatus::Failing`]): never a fallback,
    /// never blessed unchecked. The caller saves.
    pub(super) fn keep_failing(&self, state: &mut State, booted: SlotName) -> Result<()> {
        self.host.boot.set_state(booted, BootState::Good)?;
        let version = self.host.booted_version(state, booted);
        state.keep_failing(booted, version);
        state.mark_agent(booted);
        Ok(())
    }

    /// Mark the running, healthy slot good again. The bootloader script
    /// sets TRY on every slot it visits; re-blessing on each healthy boot
    /// keeps a later failure of the other slot from leaving both flagged.
    /// The record follows when it said written (or nothing); a damaged
    /// `state.json` is repaired (and its count kept) here once.
    pub(super) fn rebless(&self, state: &mut State, booted: SlotName) -> Result<()> {
        self.host.boot.set_state(booted, BootState::Good)?;
        let version = self.host.booted_version(state, booted);
        if state.bless(booted, || version) || state.recovered.is_some() {
            state.mark_agent(booted);
            self.save(state)?;
        } else if state.mark_agent(booted) {
            // Only the mark is new (the first boot of this build on a slot
            // it did not commit): a state dir that cannot be written must
            // not fail the re-blessing; the next boot records it.
            if let Err(e) = self.save(state) {
                super::log(&format!("{e}"));
            }
        }
        Ok(())
    }

    /// The booted slot is recorded bad while the other is usable: make sure
    /// the booted slot is bad in the bootloader too and the other boots
    /// next as a good slot, writing only what is not so already (each read
    /// after the previous write).
    pub(super) fn finish_rollback(&self, booted: SlotName) -> Result<()> {
        let boot = &self.host.boot;
        let other = booted.other();
        if boot.state(booted)? == BootState::Good {
            boot.set_state(booted, BootState::Bad)?;
        }
        if boot.primary()? != Some(other) || boot.state(other)? != BootState::Good {
            boot.activate(other)?;
        }
        Ok(())
    }

    /// `mark-good` / `mark-bad`: the bootloader, then the record.
    pub(super) fn mark(&self, state: &mut State, slot: SlotName, good: bool) -> Result<()> {
        let flag = match good {
            true => BootState::Good,
            false => BootState::Bad,
        };
        self.host.boot.set_state(slot, flag)?;
        state.mark(slot, good);
        self.save(state)
    }

    /// `mark-good --force` of the booted `slot` a rollback left: it boots
    /// next again, as a good slot, then the record ([`State::cancel_rollback`]).
    /// Cut between the two, the record still says bad and the next `health`
    /// finishes the rollback: the operator's cancel is lost, never the
    /// slot rolled back to.
    pub(super) fn cancel_rollback(&self, state: &mut State, slot: SlotName) -> Result<()> {
        self.host.boot.activate(slot)?;
        state.cancel_rollback(slot);
        self.save(state)
    }

    /// A manual rollback: `slot` boots next, then the record (see
    /// [`State::switched_to`]).
    pub(super) fn switch_to(&self, state: &mut State, slot: SlotName, vouched: bool) -> Result<()> {
        self.host.boot.activate(slot)?;
        crate::failpoint::hit("rollback");
        state.switched_to(slot, vouched);
        self.save(state)
    }
}

/// The time of a step of `version` taken now: its next outcome time
/// ([`crate::report::outcome_time`]).
fn step_time(state: &State, version: &str) -> i64 {
    crate::report::outcome_time(&state.outcomes, version, now())
}

/// The outcome `outcome` of `t`'s release at `at`, in the log the host's
/// report and textfile are made from, under the build `t` wrote: a rebuild
/// under the same version is told apart from the one it replaces.
fn record(state: &mut State, t: &Transaction, outcome: Outcome, at: i64) {
    crate::report::record_outcome(
        &mut state.outcomes,
        &t.version,
        build_of(&t.images).as_deref(),
        outcome,
        None,
        at,
    );
}
