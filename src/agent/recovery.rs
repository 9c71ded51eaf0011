//! The recovery flows: retiring a failed trial (the one way, for every
//! failure), finishing a rollback whose reboot never happened, and the
//! verbs a person runs by hand (`mark-good`, `mark-bad`, `rollback`), as
//! rauc's `mark.c` keeps them apart from the install.
//!
//! Invariant: a manual change never leaves the bootloader and the state
//! disagreeing about which slot may boot (`transition.rs` rule 5), and
//! never leaves the host without a bootable slot holding a proven good
//! system unless the operator says `--force`: one pure rule ([`judge`])
//! for `mark-good`, `mark-bad` and `rollback`, over the records, so it
//! holds alike on every bootloader, and, for `mark-bad`, the bootloader's
//! word on the slot it leaves to boot (the records can be behind it).
//!
//! What `--force` may not override, as it would make GRUB boot nothing or
//! lose the last good system: a slot the records show empty, being written
//! or naming no release written whole is never made bootable
//! ([`Refusal::NoWholeImage`], whose advice is the install, never
//! `--force`); an empty record is refused so only when the slot holds
//! nothing (its start reads as zeros: a state lost since leaves empty
//! records over slots that hold systems); and a release staged and never
//! tried is never marked good (its trial proves it). A slot whose bytes no
//! longer read back as the digests its record keeps is not made the next
//! boot, nor the only bootable one, nor good, without `--force`
//! ([`Refusal::Damaged`]): before any verb does so, the runner reads it
//! back with the install's own check
//! ([`crate::install::slot_holds_recorded`]). Bytes changed since they were
//! written are damage or a read-write mount of the slot, which only the
//! operator can tell apart.

use super::report::publish;
use super::transition::Transition;
use super::verdict::{reboot_into, Failure, Verdict};
use super::{log, Host, Refusal};
use crate::error::Result;
use crate::manifest::Version;
use crate::slot::SlotName;
use crate::state::{Phase, SlotRecord, SlotStatus, State, Transaction};
use std::fmt;

/// Retire the trial `t` that failed (`why`), or the committed release on
/// probation that failed late, or one an operator rejected by hand after
/// its commit: marked bad, the slot it came from
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
    let late = why.outcome() == crate::report::Outcome::RolledBackLate;
    match why {
        Failure::NeverBooted => log(&reason),
        _ if late => log(&format!(
            "rolling back {} in slot {} late: {reason}",
            t.version, t.to
        )),
        _ => log(&format!(
            "rolling back {} in slot {}: {reason}",
            t.version, t.to
        )),
    }
    flip.retire(state, t, why)?;
    let build = crate::state::build_of(&t.images);
    let report = Some((why.outcome(), t.version.as_str(), build.as_deref()));
    let error = Some((why.kind(), reason.as_str()));
    let version = t.version.clone();
    if why.fell_back() {
        // The running slot is the one it fell back to.
        flip.rebless(state, t.from)?;
        publish(host, state, report, error);
    } else {
        publish(host, state, report, error);
        reboot_into(host, flip.lock(), state, t.from, no_reboot)?;
    }
    Ok(match why {
        Failure::NeverBooted => Verdict::TrialNeverBooted { version },
        _ if late => Verdict::RolledBackLate { version, reason },
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
    disarmed(host, lock, state, t);
    Ok(line)
}

/// After a disarm or a cancel of the staged trial `t`: no reboot is owed,
/// so the site's lock goes back, and the outcome is reported `disarmed`
/// (not counted for or against the release).
fn disarmed(host: &Host, lock: &crate::state::StateLock, state: &mut State, t: &Transaction) {
    host.release_reboot_lock(lock, state);
    publish(
        host,
        state,
        Some((
            crate::report::Outcome::Disarmed,
            t.version.as_str(),
            crate::state::build_of(&t.images).as_deref(),
        )),
        None,
    );
}

/// The operator's `op` (`mark-bad` of its slot) cancels the pending
/// release `t` (staged, or still being written): the same pair as a disarm, the release held as cancelled, the
/// running slot re-blessed (the activation gave it a fresh try budget),
/// reported `disarmed`: an operator's decision is no verdict on the
/// release, and the boot finds nothing pending (no `trial_never_booted`).
fn cancel_pending(
    host: &Host,
    lock: &crate::state::StateLock,
    state: &mut State,
    t: &Transaction,
    op: Manual,
) -> Result<()> {
    let flip = Transition::new(host, lock);
    let when = match t.phase {
        Phase::Writing => "while being written, never staged",
        _ => "while staged, never booted",
    };
    let why = format!("cancelled by the operator (`abupdate {op}`) {when}");
    flip.cancel(state, t, &why)?;
    flip.rebless(state, t.from)?;
    log(&format!(
        "release {} in slot {} {why}: slot {} stays the next boot; the timer does not install it again (`abupdate install` of it by hand does)",
        t.version, t.to, t.from
    ));
    disarmed(host, lock, state, t);
    Ok(())
}

/// The booted slot is recorded bad (its trial failed, or `mark-bad`) while
/// the other slot is usable: the rollback was recorded but the reboot never
/// happened (a crash after the state write, a failed reboot command,
/// `--no-reboot`, or a planned rollback waiting for the site's lock). Make
/// sure the good slot boots next, then reboot into it; with
/// `wait_for_lock` (a planned late rollback: [`State::reboot_owed`]) only
/// once the site's reboot lock is taken (no lock: an error of kind
/// `fleetlock`, no reboot, the order already switched).
pub(super) fn finish_rollback(
    host: &Host,
    flip: &Transition,
    state: &mut State,
    booted: SlotName,
    no_reboot: bool,
    wait_for_lock: bool,
) -> Result<Verdict> {
    let other = booted.other();
    flip.finish_rollback(booted)?;
    let reason = format!("slot {booted} is marked bad; slot {other} boots next");
    log(&reason);
    if wait_for_lock && !no_reboot {
        let waiting = format!("slot {other} boots next, at any reboot");
        host.take_reboot_lock(flip.lock(), state, &waiting)?;
    }
    reboot_into(host, flip.lock(), state, other, no_reboot)?;
    let version = state.slot(booted).version;
    // Finishing is no verdict of its own: it says what the retirement
    // recorded (a late rollback, e.g. `mark-bad` on probation, stays one).
    let late = version
        .as_deref()
        .is_some_and(|v| retired_late(&state.outcomes, v));
    let version = version.unwrap_or_else(|| "the booted release".into());
    Ok(match late {
        true => Verdict::RolledBackLate { version, reason },
        false => Verdict::RolledBack { version, reason },
    })
}

/// The booted slot is recorded committed, and the bootloader holds it
/// retired (marked bad, the other slot, committed too, next) by a late
/// rollback whose record was lost ([`Failure::Unrecorded`], late: the
/// verdict's `decide_committed`); or, `left`, that reboot came first and
/// the other slot is the one retired, its release newer and committed:
/// retired in the record as the rejection it was, the running slot
/// re-blessed, no reboot. Otherwise finished as `mark-bad` of the booted slot
/// is judged on the records ([`judge`]): a rejection of the release there
/// (on probation, or committed and left for an older release) is retired
/// as a late rollback and held as failed (why it was retired was in the
/// record lost: the stricter hold); else (a way forward, a copy of the
/// same release, a slot abupdate never installed) the slot is only
/// recorded bad, a verdict on nothing, and the rollback finished.
pub(super) fn finish_unrecorded_late(
    host: &Host,
    flip: &Transition,
    state: &mut State,
    booted: SlotName,
    why: &Failure,
    no_reboot: bool,
) -> Result<Verdict> {
    // Left already: the other slot is the one retired, and only when
    // leaving it rejects its release (`verdict::decide_committed`).
    if why.fell_back() {
        let other = booted.other();
        return match state.committed_release(other) {
            Some(t) => retire_trial(host, flip, state, &t, why, no_reboot),
            // Not reached (a rejection names its release): recorded as the
            // bootloader holds it, the running slot kept.
            None => {
                flip.mark(state, other, false)?;
                flip.rebless(state, booted)?;
                Ok(Verdict::Healthy)
            }
        };
    }
    let keeper = KeeperInBootloader::default();
    let release = match plan(state, booted, Manual::MarkBad(booted), false, keeper) {
        Ok(ManualPlan::RejectOnProbation) => state.probation_release(),
        Ok(ManualPlan::RejectCommitted { slot }) if slot == booted => {
            state.committed_release(booted)
        }
        _ => None,
    };
    if let Some(t) = release {
        return retire_trial(host, flip, state, &t, why, no_reboot);
    }
    log(&format!(
        "slot {booted} is marked bad in the bootloader and slot {} boots next, by a run whose record was never saved: recorded so",
        booted.other()
    ));
    flip.mark(state, booted, false)?;
    finish_rollback(host, flip, state, booted, no_reboot, false)
}

/// Whether `version`'s latest rollback recorded in `outcomes` was a late
/// one (`rolled_back_late`, not `rolled_back`).
fn retired_late(outcomes: &[crate::report::OutcomeRecord], version: &str) -> bool {
    use crate::report::Outcome;
    let latest = |o: Outcome| {
        outcomes
            .iter()
            .filter(|r| r.release == version && r.outcome == o.as_str())
            .map(|r| r.time)
            .max()
    };
    match (latest(Outcome::RolledBackLate), latest(Outcome::RolledBack)) {
        (Some(late), Some(trial)) => late >= trial,
        (late, _) => late.is_some(),
    }
}

/// Run the reboot command. Reports still in flight get until their
/// deadline first (`[report] webhook_timeout`): the reboot would cut them
/// off. The state lock stays held until the host goes down: no other
/// instance acts on a host that is about to reboot.
pub(super) fn reboot(host: &Host) -> Result<()> {
    crate::report::flush();
    Ok(crate::system::reboot(&host.config.system.reboot)?)
}

/// A verb run by hand that changes which slot may boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manual {
    /// `mark-good SLOT`.
    MarkGood(SlotName),
    /// `mark-bad SLOT`.
    MarkBad(SlotName),
    /// `rollback`: the other slot boots next.
    Rollback,
}

impl fmt::Display for Manual {
    /// The command as typed (`mark-bad B`, `rollback`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Manual::MarkGood(slot) => write!(f, "mark-good {slot}"),
            Manual::MarkBad(slot) => write!(f, "mark-bad {slot}"),
            Manual::Rollback => f.write_str("rollback"),
        }
    }
}

/// What the slot a verb would make bootable (the one [`reads_back`]
/// names) read back as, against the digests its record keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReadBack {
    /// Not read (yet): the verb makes no other slot bootable, or the
    /// records refuse it before any read.
    #[default]
    NotRead,
    /// Its record keeps no digest to read back against: a slot adopted as
    /// found (the image a host was provisioned with), one committed on a
    /// boot the state did not describe, or a record of an older build.
    /// Taken on its record's word, as before the read-back existed: it was
    /// booted and committed (or the operator forces it), and refusing would
    /// leave the first update of every host without a rollback but a
    /// `--force`, which waives more than the bytes.
    NoDigest,
    /// Every image its record names read back whole as recorded.
    Matches,
    /// Its record is empty and every device of it reads as zeros at its
    /// start ([`BLANK_PROBE`]): nothing was ever written there.
    Blank,
    /// The first image that did not.
    Mismatch {
        /// The image's class (`rootfs`).
        class: String,
        /// Its device in that slot.
        device: std::path::PathBuf,
    },
}

/// The slot `op` would make bootable that is not the booted one, and so
/// must read back as its record says before it runs: the one `rollback`
/// goes to, the one `mark-bad` of the booted slot leaves as the only one,
/// the one `mark-good` of the other slot makes a fallback. `None` for the
/// verbs that leave only the booted slot to boot or bless it (it runs).
pub fn reads_back(op: Manual, booted: SlotName) -> Option<SlotName> {
    match op {
        Manual::Rollback => Some(booted.other()),
        Manual::MarkBad(slot) if slot == booted => Some(slot.other()),
        Manual::MarkGood(slot) if slot != booted => Some(slot),
        Manual::MarkBad(_) | Manual::MarkGood(_) => None,
    }
}

/// What a manual verb is judged from: the records, plain data.
#[derive(Clone, Debug)]
pub struct ManualFacts<'a> {
    /// The slot running now.
    pub booted: SlotName,
    /// The update in flight, as recorded.
    pub transaction: Option<&'a Transaction>,
    /// Slot A's record.
    pub a: &'a SlotRecord,
    /// Slot B's record.
    pub b: &'a SlotRecord,
    /// The slot whose committed release is on probation (a probation
    /// recorded and not over), if any.
    pub probation: Option<SlotName>,
    /// `--force`: the operator vouches for what the records do not show.
    pub force: bool,
    /// The bootloader holds the slot a `mark-bad` would leave to boot, or
    /// a `rollback` would go to, bad (read only for those verbs; `false`
    /// when it cannot tell). The records can be behind it (a verb or an
    /// install cut between its bootloader write and its save, a state
    /// deleted or damaged since, a stale copy standing in), and a record of
    /// a good slot the bootloader holds bad is no slot to leave or to go
    /// to: what it holds may not be what the record says.
    pub keeper_held_bad: bool,
    /// The slot a `mark-bad` would leave to boot is the booted one, the
    /// bootloader counts its boot as a try no one has blessed, and the
    /// records do not hold it committed (read only for `mark-bad`; `false`
    /// when the bootloader cannot tell). A state deleted or damaged between
    /// a staging and `health` leaves a trial so: a slot nothing judged is
    /// no slot to leave as the only one.
    pub keeper_unjudged: bool,
    /// What the slot [`reads_back`] names read back as.
    pub read_back: ReadBack,
    /// The booted slot's release is on the failed list ([`State::holds`]):
    /// with its record bad, a rollback from it (rejected by hand, or its
    /// trial or probation failed) whose reboot has not happened yet.
    pub booted_held: bool,
}

impl ManualFacts<'_> {
    /// The trial the host runs now, if any: booted into the slot the
    /// transaction writes or staged.
    fn running_trial(&self) -> bool {
        self.transaction.is_some_and(|t| t.to == self.booted)
    }

    /// The host runs the committed release on probation (booted from its
    /// slot: not fallen back).
    fn running_probation(&self) -> bool {
        self.probation == Some(self.booted)
    }

    /// Whether `slot` is not the booted one and holds the transaction's
    /// release, staged (written, verified, activated) and never booted.
    fn staged_in(&self, slot: SlotName) -> bool {
        slot != self.booted
            && self
                .transaction
                .is_some_and(|t| t.to == slot && t.phase == Phase::Staged)
    }

    /// Whether `slot` is not the booted one and the transaction's release
    /// is pending there: staged and never booted, or still being written
    /// (a timer download its window stopped, or a write a power cut
    /// interrupted: the next `update` resumes it).
    fn pending_in(&self, slot: SlotName) -> bool {
        slot != self.booted
            && self
                .transaction
                .is_some_and(|t| t.to == slot && matches!(t.phase, Phase::Staged | Phase::Writing))
    }

    fn record(&self, slot: SlotName) -> &SlotRecord {
        match slot {
            SlotName::A => self.a,
            SlotName::B => self.b,
        }
    }

    fn status(&self, slot: SlotName) -> &SlotStatus {
        &self.record(slot).status
    }

    /// Whether going from `slot` to the other one (a `rollback` from the
    /// booted slot, or `mark-bad` of it, or of the other slot the host
    /// already left) is the operator's verdict against the release there:
    /// abupdate installed and committed it (its record `good`, naming the
    /// release and its manifest: not a slot adopted as found), nothing is
    /// in flight and no probation of it runs (those are a trial's or a
    /// probation's rejection), and the slot the host goes to does not hold
    /// the same release or a newer one (a way forward, or a rollback to a
    /// copy of what is left, says nothing against it). A release the other
    /// slot names none of, or whose versions do not compare, is left
    /// behind: the operator went back from it.
    fn leaves_committed(&self, slot: SlotName) -> bool {
        let left = self.record(slot);
        let committed = left.status == SlotStatus::Good
            && left.manifest_sha256.is_some()
            && self.transaction.is_none()
            && self.probation != Some(slot);
        let Some(version) = left.version.as_deref().filter(|_| committed) else {
            return false;
        };
        let Some(kept) = self.record(slot.other()).version.as_deref() else {
            return true;
        };
        match (Version::parse(version), Version::parse(kept)) {
            (Ok(left), Ok(kept)) => kept < left,
            _ => kept != version,
        }
    }

    /// Whether the records say `slot` holds an image written whole: not
    /// empty, not being written (a transaction's write into it, or a
    /// record that says so), and, when recorded bad or in a status this
    /// version does not know, naming the release it held (a failed write,
    /// a cancelled one, a slot marked bad while empty name none). No
    /// `--force` makes a slot without one bootable: the operator's word
    /// cannot vouch for bytes never written (found from outside: a
    /// `rollback --force` onto a write killed half-way dropped its
    /// transaction, and the next `health` blessed the slot).
    fn holds_whole_image(&self, slot: SlotName) -> bool {
        let writing = self
            .transaction
            .is_some_and(|t| t.to == slot && t.phase == Phase::Writing);
        let rec = self.record(slot);
        !writing
            && match rec.status {
                // An empty record over a slot that holds something (its
                // start is not zeros): a state lost or reset since, whose
                // fresh record is empty (found from outside: after
                // `state.json` was lost no verb, `--force` or not, reached
                // the old system). The operator's `--force` may vouch for
                // it; never for a slot that holds nothing.
                SlotStatus::Empty => self.read_back == ReadBack::NoDigest,
                SlotStatus::Installing => false,
                SlotStatus::Good | SlotStatus::Installed | SlotStatus::Failing => true,
                SlotStatus::Bad | SlotStatus::Other(_) => rec.version.is_some(),
            }
    }

    /// The refusal of `op` for the slot it would make bootable, `slot`
    /// (not the booted one), which holds no image written whole by the
    /// records ([`ManualFacts::holds_whole_image`]): `--force` or not.
    fn no_whole_image(&self, op: Manual, slot: SlotName) -> Refusal {
        let writing = self
            .transaction
            .filter(|t| t.to == slot && t.phase == Phase::Writing)
            .map(|t| t.version.clone());
        Refusal::NoWholeImage {
            op,
            slot,
            status: self.status(slot).clone(),
            writing,
        }
    }

    /// The refusal of `op` when the slot it would make bootable read back
    /// otherwise than its record says, unless `--force`: changed since it
    /// was written, by damage (bit rot: a rollback onto it was the host's
    /// last boot, found from outside) or by a read-write mount of it (an
    /// ext4 mount count: a slot booted read-write before, found from
    /// outside), which only the operator can tell apart.
    fn damaged(&self, op: Manual) -> std::result::Result<(), Refusal> {
        if self.force {
            return Ok(());
        }
        match (reads_back(op, self.booted), &self.read_back) {
            (Some(slot), ReadBack::Mismatch { class, device }) => Err(Refusal::Damaged {
                op,
                slot,
                class: class.clone(),
                device: device.clone(),
                version: self.record(slot).version.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether `slot` holds a proven good system: the booted slot unless
    /// it is recorded bad (or being written, or in a status this version
    /// does not know) or still on its trial (it runs: it boots); the other
    /// slot only when committed (`good`): a slot staged and never tried,
    /// empty, being written or bad is no fallback.
    fn proven_good(&self, slot: SlotName) -> bool {
        let status = self.status(slot);
        if self.transaction.is_some_and(|t| t.to == slot) {
            return false;
        }
        if slot == self.booted {
            matches!(
                status,
                SlotStatus::Good | SlotStatus::Empty | SlotStatus::Installed
            )
        } else {
            *status == SlotStatus::Good
        }
    }
}

/// What a manual verb does, once [`judge`]d.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualPlan {
    /// Set `slot`'s flag, then its record.
    Mark {
        /// The slot.
        slot: SlotName,
        /// Good or bad.
        good: bool,
    },
    /// The host runs a trial and the operator rejects it (`rollback`, or
    /// `mark-bad` of the booted trial slot): retired as any failed trial
    /// ([`retire_trial`]: bad, the old slot activated, the release on the
    /// failed list), so the timer does not install it again.
    RejectTrial,
    /// The host runs a committed release on probation and the operator
    /// rejects it (`rollback`, or `mark-bad` of the booted slot): a manual
    /// late rollback, retired as a probation that failed ([`retire_trial`]
    /// with [`Failure::Late`]: bad, the old slot activated, the release on
    /// the failed list, the probation over, `rolled_back_late`), once, so
    /// the next boot finds nothing to record and the timer does not
    /// install it again. Before, `mark-bad` only marked the slot and the
    /// next boot recorded a second verdict (a fall-back).
    RejectOnProbation,
    /// The host leaves by hand the release abupdate committed in `slot`
    /// (no trial, no probation running): `rollback` from it, `mark-bad`
    /// of it while it runs, or `mark-bad` of it after the host left it
    /// (the bootloader's menu, an older abupdate's `rollback`: the timer
    /// would install it again). The operator's verdict after the commit:
    /// retired as a late rollback ([`retire_trial`] with
    /// [`Failure::RejectedCommitted`]: bad, the other slot activated,
    /// `rolled_back_late`, a rollback counted), its release held from the
    /// timer ([`crate::state::Hold::Rejected`]); an `install` of it by
    /// hand takes it again. Before, the verb only switched or marked: the
    /// fleet counted the host a success, and the next timer run installed
    /// the release again.
    RejectCommitted {
        /// The slot holding the release rejected.
        slot: SlotName,
    },
    /// `mark-bad` of the other slot, which holds a release pending there:
    /// staged and never booted, or still being written (its download
    /// stopped by a closed window, or cut by a power loss; the next
    /// `update` would resume it). The operator cancels it. Disarmed (bad,
    /// the running slot activated, nothing pending), reported `disarmed`
    /// (not counted for or against the release) and held as cancelled, so
    /// the timer neither stages nor resumes it again
    /// ([`crate::state::Hold::Cancelled`]).
    CancelPending,
    /// `mark-good --force` of the booted slot, recorded bad with its
    /// release on the failed list: the rollback from it, whose reboot has
    /// not happened, is cancelled. Marked good and the next boot again,
    /// its release off the failed list (the operator's word over the
    /// earlier verdict; kept, `status` would call the slot good and its
    /// release failed at once).
    CancelRollback {
        /// The booted slot.
        slot: SlotName,
    },
    /// Make `slot` the one booted next (a manual rollback); `vouched`: the
    /// operator forced it onto a slot not recorded usable. Not a verdict
    /// on the release left: the host goes to a copy of it or a newer one,
    /// or it is no release abupdate committed here.
    SwitchTo {
        /// The slot booted next.
        slot: SlotName,
        /// Forced onto a slot not recorded usable.
        vouched: bool,
    },
}

/// The one rule of the manual verbs: after the change a slot holding a
/// proven good system must still be bootable, unless `--force`; and,
/// `--force` or not, some slot the bootloader boots. Pure: the verdict on
/// `op` from `f` alone.
pub fn judge(op: Manual, f: &ManualFacts) -> std::result::Result<ManualPlan, Refusal> {
    let refuse = |slot: SlotName| {
        let status = f.status(slot).clone();
        let staged = f.staged_in(slot);
        Err(Refusal::NoGoodSlot {
            op,
            slot,
            status,
            staged,
        })
    };
    // A slot other than the booted one, not proven good, that the verb
    // would make bootable: `--force` vouches for a record, never for an
    // image the records say was never written whole.
    let unwritten =
        |slot: SlotName| slot != f.booted && !f.proven_good(slot) && !f.holds_whole_image(slot);
    match op {
        Manual::MarkGood(slot) if slot == f.booted => {
            // Recorded bad with its release held: a rollback from it (by
            // hand, or its checks failed) waits for its reboot. A plain
            // mark-good undid it unseen, and the timer then overwrote the
            // slot rolled back to (found from outside); cancelling it is
            // the operator's explicit word.
            if *f.status(slot) == SlotStatus::Bad && f.booted_held {
                return match f.force {
                    true => Ok(ManualPlan::CancelRollback { slot }),
                    false => Err(Refusal::RolledBackFrom { slot }),
                };
            }
            // It runs.
            Ok(ManualPlan::Mark { slot, good: true })
        }
        Manual::MarkGood(slot) => {
            // The other is recorded good (committed, a proven good system)
            // only when it is one already: marking a slot never booted
            // good would make it proven without a boot, and a `mark-bad`
            // of the booted slot after it would leave only that slot
            // (found from outside, stop 47). Else the operator's word,
            // `--force`, for an image written whole that reads back so.
            if unwritten(slot) {
                return Err(f.no_whole_image(op, slot));
            }
            // A release staged and never tried is proven by its trial,
            // never by a mark: forced, it was committed without a boot and
            // its transaction dropped, and a plain `mark-bad` of the
            // booted slot then left it the only one (found from outside).
            if f.staged_in(slot) || (!f.proven_good(slot) && !f.force) {
                return refuse(slot);
            }
            f.damaged(op)?;
            Ok(ManualPlan::Mark { slot, good: true })
        }
        Manual::MarkBad(slot) => {
            let keeper = slot.other();
            if unwritten(keeper) {
                return Err(f.no_whole_image(op, keeper));
            }
            if !f.proven_good(keeper) && !f.force {
                return refuse(keeper);
            }
            if f.keeper_held_bad && !f.force {
                return Err(Refusal::HeldBadInBootloader { op, slot: keeper });
            }
            if f.keeper_unjudged && !f.force {
                return Err(Refusal::KeeperUnjudged { op, slot: keeper });
            }
            f.damaged(op)?;
            if slot == f.booted && f.running_trial() {
                return Ok(ManualPlan::RejectTrial);
            }
            if slot == f.booted && f.running_probation() {
                return Ok(ManualPlan::RejectOnProbation);
            }
            if f.pending_in(slot) {
                return Ok(ManualPlan::CancelPending);
            }
            if f.leaves_committed(slot) {
                return Ok(ManualPlan::RejectCommitted { slot });
            }
            // A mark only marks: with the slot left held bad too, the
            // bootloader would have nothing to boot (found from outside:
            // `--force` on a fresh host left A_OK=0 B_OK=0). `--force`
            // vouches for what the records do not show; the operator's
            // word that the slot left holds a good system is `mark-good`
            // of it, which makes it bootable.
            if f.keeper_held_bad {
                return Err(Refusal::NoBootableSlot { op, slot: keeper });
            }
            Ok(ManualPlan::Mark { slot, good: false })
        }
        Manual::Rollback => {
            let other = f.booted.other();
            if unwritten(other) {
                return Err(f.no_whole_image(op, other));
            }
            if !f.proven_good(other) && !f.force {
                return refuse(other);
            }
            if f.keeper_held_bad && !f.force {
                return Err(Refusal::HeldBadInBootloader { op, slot: other });
            }
            f.damaged(op)?;
            if f.running_trial() {
                return Ok(ManualPlan::RejectTrial);
            }
            if f.running_probation() {
                return Ok(ManualPlan::RejectOnProbation);
            }
            if f.leaves_committed(f.booted) {
                return Ok(ManualPlan::RejectCommitted { slot: f.booted });
            }
            Ok(ManualPlan::SwitchTo {
                slot: other,
                vouched: !f.status(other).is_usable(),
            })
        }
    }
}

/// Whether leaving `slot` for the other one (from `booted`) would be the
/// operator's rejection of the release there, as `mark-bad` of it is
/// judged on `state`'s records ([`ManualPlan::RejectCommitted`]).
pub(super) fn leaving_rejects(state: &State, booted: SlotName, slot: SlotName) -> bool {
    matches!(
        plan(
            state,
            booted,
            Manual::MarkBad(slot),
            false,
            KeeperInBootloader::default()
        ),
        Ok(ManualPlan::RejectCommitted { slot: s }) if s == slot
    )
}

/// What the bootloader says of the slot a `mark-bad` would leave to boot
/// (or a `rollback` would go to): [`ManualFacts::keeper_held_bad`] and
/// [`ManualFacts::keeper_unjudged`]; and what the slot [`reads_back`]
/// names read back as ([`ManualFacts::read_back`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KeeperInBootloader {
    held_bad: bool,
    unjudged: bool,
    bytes: ReadBack,
}

/// Judge `op` on this host's records ([`judge`]), or refuse.
fn plan(
    state: &State,
    booted: SlotName,
    op: Manual,
    force: bool,
    keeper: KeeperInBootloader,
) -> std::result::Result<ManualPlan, Refusal> {
    let (a, b) = (state.slot(SlotName::A), state.slot(SlotName::B));
    let booted_held = state.slot(booted).version.is_some_and(|v| state.holds(&v));
    judge(
        op,
        &ManualFacts {
            booted,
            transaction: state.transaction.as_ref(),
            a: &a,
            b: &b,
            probation: state.on_probation().map(|p| p.slot),
            force,
            keeper_held_bad: keeper.held_bad,
            keeper_unjudged: keeper.unjudged,
            read_back: keeper.bytes,
            booted_held,
        },
    )
}

/// Read `slot` back against the digests its record keeps (each image's
/// SHA-256 over its size), with the install's own check, the first image
/// that does not match ending the read. A class its record names that no
/// device of the configuration holds any more is not read: the config
/// changed, and what is not there is no damage of the slot
/// (`install.rs`'s `staged_damage` skips it alike).
///
/// A record that is empty is probed instead: [`ReadBack::Blank`] when
/// every device of the slot reads as zeros at its start. Each device is
/// looked at first as a slot is ([`crate::slot::Device::inspect`]: a block
/// device or a regular file, never a FIFO, whose open would wait for ever
/// with the state lock held; found from outside).
fn read_back(host: &Host, slot: SlotName, record: &SlotRecord) -> Result<ReadBack> {
    let devices = host.config.slots.get(&slot);
    for device in devices.into_iter().flat_map(|d| d.values()) {
        crate::slot::Device::inspect(device)?;
    }
    if record.status == SlotStatus::Empty {
        for device in devices.into_iter().flat_map(|d| d.values()) {
            if !starts_blank(device)? {
                return Ok(ReadBack::NoDigest);
            }
        }
        return Ok(ReadBack::Blank);
    }
    if record.images.is_empty() {
        return Ok(ReadBack::NoDigest);
    }
    for (class, image) in &record.images {
        let Some(device) = host.config.device(slot, class) else {
            continue;
        };
        if !crate::install::slot_holds_recorded(device, image)? {
            return Ok(ReadBack::Mismatch {
                class: class.clone(),
                device: device.to_path_buf(),
            });
        }
    }
    Ok(ReadBack::Matches)
}

/// How much of a device [`starts_blank`] reads: past any partition table,
/// superblock or boot sector a system image starts with.
const BLANK_PROBE: usize = 64 << 10;

/// Whether `device` reads as zeros over its first [`BLANK_PROBE`] bytes
/// (or all of it, when smaller): nothing was ever written there.
fn starts_blank(device: &std::path::Path) -> Result<bool> {
    use std::io::Read;
    let io = |source| crate::slot::SlotError::Io {
        path: device.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(BLANK_PROBE);
    std::fs::File::open(device)
        .map_err(io)?
        .take(BLANK_PROBE as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok(head.iter().all(|&b| b == 0))
}

/// What a manual verb did: plain data for its output (`--json` and the
/// text line), one variant per [`ManualPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualDone {
    /// `slot`'s flag and record set ([`ManualPlan::Mark`]).
    Marked {
        /// The slot marked.
        slot: SlotName,
        /// Good or bad.
        good: bool,
    },
    /// The release the host ran was rejected and retired
    /// ([`ManualPlan::RejectTrial`], [`ManualPlan::RejectOnProbation`],
    /// [`ManualPlan::RejectCommitted`]).
    Rejected {
        /// The release rejected.
        version: String,
        /// Committed (on probation or not), not on its trial.
        late: bool,
        /// Held from the timer only (rejected after its commit with no
        /// probation running): an `install` of it by hand takes it.
        timer_only: bool,
        /// The slot that boots next.
        next: SlotName,
    },
    /// A pending release cancelled ([`ManualPlan::CancelPending`]).
    Cancelled {
        /// The release cancelled.
        version: String,
        /// The slot it was staged in or being written to (now bad).
        slot: SlotName,
        /// Staged (written and verified), not still being written.
        staged: bool,
    },
    /// `slot` made the one booted next ([`ManualPlan::SwitchTo`]).
    Switched {
        /// The slot booted next.
        slot: SlotName,
    },
    /// The plan's record was gone when applied (nothing to reject or
    /// cancel): nothing changed.
    Unchanged,
}

/// `mark-good` / `mark-bad` by hand: `slot`, else the booted one; refused
/// ([`judge`]) when it would leave no proven good slot bootable, unless
/// `force`.
pub fn mark(host: &Host, slot: Option<SlotName>, good: bool, force: bool) -> Result<ManualDone> {
    let booted = host.booted_slot()?;
    let slot = slot.unwrap_or(booted);
    let op = match good {
        true => Manual::MarkGood(slot),
        false => Manual::MarkBad(slot),
    };
    run_manual(host, op, force, true)
}

/// Boot the other slot if it holds a proven good system (or `force`).
pub fn rollback(host: &Host, force: bool, no_reboot: bool) -> Result<ManualDone> {
    run_manual(host, Manual::Rollback, force, no_reboot)
}

/// Judge `op` on this host's records under the lock, then apply it: the
/// one runner of the manual verbs.
fn run_manual(host: &Host, op: Manual, force: bool, no_reboot: bool) -> Result<ManualDone> {
    let lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let flip = Transition::new(host, &lock);
    // The slot the verb leaves to boot: the one `mark-bad` keeps, the one
    // `rollback` goes to (`mark-good` leaves the boot as it is).
    let keeper = match op {
        Manual::MarkBad(slot) => Some(slot.other()),
        Manual::Rollback => Some(booted.other()),
        Manual::MarkGood(_) => None,
    };
    let mut keeper = keeper.map_or_else(KeeperInBootloader::default, |keeper| KeeperInBootloader {
        held_bad: host.boot.state(keeper).ok() == Some(crate::boot::BootState::Bad),
        unjudged: keeper == booted && host.booted_unjudged(&state, booted),
        bytes: ReadBack::NotRead,
    });
    // The records judged first, then the slot made bootable read back
    // (a read of its whole image) only for a verb they allow, and judged
    // again on what it holds.
    // An empty record is probed before (a read of 64 KiB): whether the
    // slot holds anything decides whether the records refuse it.
    let target = reads_back(op, booted);
    if let Some(slot) = target.filter(|s| state.slot(*s).status == SlotStatus::Empty) {
        keeper.bytes = read_back(host, slot, &state.slot(slot))?;
    }
    let mut judged = plan(&state, booted, op, force, keeper.clone())?;
    if let Some(slot) = target.filter(|_| keeper.bytes == ReadBack::NotRead) {
        keeper.bytes = read_back(host, slot, &state.slot(slot))?;
        judged = plan(&state, booted, op, force, keeper.clone())?;
    }
    match (&keeper.bytes, target) {
        (ReadBack::NoDigest, Some(slot)) => log(&format!(
            "slot {slot}'s record keeps no digest to read it back against (adopted as found, recorded by an older build, or a state lost since): taken on its record's word"
        )),
        (ReadBack::Mismatch { class, device }, Some(slot)) => log(&format!(
            "slot {slot}'s {class} image ({}) no longer reads back as its record says: made bootable on your word (--force)",
            crate::text::show_path(device)
        )),
        _ => {}
    }
    match judged {
        ManualPlan::Mark { slot, good } => {
            flip.mark(&mut state, slot, good)?;
            Ok(ManualDone::Marked { slot, good })
        }
        ManualPlan::RejectTrial => {
            let Some(t) = state.transaction.clone() else {
                return Ok(ManualDone::Unchanged);
            };
            retire_trial(
                host,
                &flip,
                &mut state,
                &t,
                &Failure::Rejected(op),
                no_reboot,
            )?;
            Ok(ManualDone::Rejected {
                version: t.version,
                late: false,
                timer_only: false,
                next: t.from,
            })
        }
        ManualPlan::RejectOnProbation => {
            let Some(release) = state.probation_release() else {
                return Ok(ManualDone::Unchanged);
            };
            let why = Failure::Late {
                what: format!("rejected by hand during its probation (`abupdate {op}`)"),
                fell_back: false,
            };
            retire_trial(host, &flip, &mut state, &release, &why, no_reboot)?;
            Ok(ManualDone::Rejected {
                version: release.version,
                late: true,
                timer_only: false,
                next: release.from,
            })
        }
        ManualPlan::RejectCommitted { slot } => {
            let Some(release) = state.committed_release(slot) else {
                return Ok(ManualDone::Unchanged);
            };
            let why = Failure::RejectedCommitted {
                op,
                left: slot != booted,
            };
            retire_trial(host, &flip, &mut state, &release, &why, no_reboot)?;
            Ok(ManualDone::Rejected {
                version: release.version,
                late: true,
                timer_only: true,
                next: release.from,
            })
        }
        ManualPlan::CancelPending => {
            let Some(t) = state.transaction.clone() else {
                return Ok(ManualDone::Unchanged);
            };
            cancel_pending(host, &lock, &mut state, &t, op)?;
            Ok(ManualDone::Cancelled {
                staged: t.phase == Phase::Staged,
                version: t.version,
                slot: t.to,
            })
        }
        ManualPlan::CancelRollback { slot } => {
            flip.cancel_rollback(&mut state, slot)?;
            // No reboot is owed any more: the site's lock goes back.
            host.release_reboot_lock(&lock, &mut state);
            log(&format!(
                "the rollback from slot {slot} is cancelled by hand (`abupdate {op} --force`): slot {slot} is good and boots next again, its release {} no longer held",
                state.slot(slot).version.as_deref().unwrap_or("(unnamed)")
            ));
            Ok(ManualDone::Marked { slot, good: true })
        }
        ManualPlan::SwitchTo { slot, vouched } => {
            flip.switch_to(&mut state, slot, vouched)?;
            log(&format!("slot {slot} is now primary"));
            if !no_reboot {
                reboot(host)?;
            }
            Ok(ManualDone::Switched { slot })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use SlotName::{A, B};
    use SlotStatus::{Bad, Empty, Good, Installed, Installing};

    fn staged(to: SlotName, phase: Phase) -> Transaction {
        Transaction {
            from: to.other(),
            to,
            version: "2.0".into(),
            manifest_sha256: "aa".into(),
            phase,
            started: 1,
            staged_boot_id: Some("boot-1".into()),
            images: BTreeMap::new(),
            unknown: Default::default(),
        }
    }

    /// A slot's record saying `status` and nothing of its release.
    fn rec(status: SlotStatus) -> SlotRecord {
        SlotRecord {
            status,
            ..Default::default()
        }
    }

    /// A slot's record saying `status`, holding `version`, which abupdate
    /// `installed` (its manifest recorded) or adopted as found.
    fn holding(status: SlotStatus, version: &str, installed: bool) -> SlotRecord {
        SlotRecord {
            status,
            version: Some(version.into()),
            manifest_sha256: installed.then(|| "ee".into()),
            ..Default::default()
        }
    }

    /// Judge `op` on a host booted from A with these records.
    fn judged(
        op: Manual,
        a: SlotStatus,
        b: SlotStatus,
        t: Option<&Transaction>,
        force: bool,
    ) -> std::result::Result<ManualPlan, Refusal> {
        judged_on(op, A, (&rec(a), &rec(b)), (t, None), force)
    }

    /// Judge `op` on a host booted from `booted` with these full records.
    fn judged_on(
        op: Manual,
        booted: SlotName,
        (a, b): (&SlotRecord, &SlotRecord),
        (transaction, probation): (Option<&Transaction>, Option<SlotName>),
        force: bool,
    ) -> std::result::Result<ManualPlan, Refusal> {
        judge(
            op,
            &facts_on(booted, (a, b), (transaction, probation), force),
        )
    }

    /// The facts of a host booted from `booted` with these full records,
    /// its bootloader holding no slot bad that the records call good.
    fn facts_on<'a>(
        booted: SlotName,
        (a, b): (&'a SlotRecord, &'a SlotRecord),
        (transaction, probation): (Option<&'a Transaction>, Option<SlotName>),
        force: bool,
    ) -> ManualFacts<'a> {
        ManualFacts {
            booted,
            transaction,
            a,
            b,
            probation,
            force,
            keeper_held_bad: false,
            keeper_unjudged: false,
            read_back: ReadBack::NotRead,
            booted_held: false,
        }
    }

    fn refused_for(r: std::result::Result<ManualPlan, Refusal>) -> (SlotName, SlotStatus, bool) {
        match r {
            Err(Refusal::NoGoodSlot {
                slot,
                status,
                staged,
                ..
            }) => (slot, status, staged),
            other => panic!("not refused: {other:?}"),
        }
    }

    /// Found from outside: a `rollback` cut between marking the booted
    /// slot bad and activating the other (or a state deleted after it)
    /// left records saying both committed, and `mark-bad` of the other
    /// left the bootloader nothing to boot. The bootloader's word on the
    /// slot left to boot is asked too; `--force` is the operator's.
    ///
    /// And a `rollback` to a slot recorded good that the bootloader holds
    /// bad (found from outside, a random walk, seed 2257): an install into
    /// it whose records were lost (a full state file system, then a damage
    /// that put a stale copy in their place) left it marked bad over bytes
    /// that were no longer the recorded release; `rollback` made it the
    /// next boot, a failing release, and the good slot marked bad.
    #[test]
    fn mark_bad_and_rollback_are_refused_when_the_bootloader_holds_the_slot_they_leave_bad() {
        // (booted, verb, the slot it leaves to boot)
        let cases = [
            (A, Manual::MarkBad(B), A),
            (A, Manual::MarkBad(A), B),
            (B, Manual::MarkBad(A), B),
            (A, Manual::Rollback, B),
            (B, Manual::Rollback, A),
        ];
        for (booted, op, keeper) in cases {
            let judged_with = |force| {
                judge(
                    op,
                    &ManualFacts {
                        keeper_held_bad: true,
                        ..facts_on(booted, (&rec(Good), &rec(Good)), (None, None), force)
                    },
                )
            };
            assert_eq!(
                judged_with(false),
                Err(Refusal::HeldBadInBootloader { op, slot: keeper }),
                "booted {booted}, {op}"
            );
            // `--force` vouches for the slot left; a plain mark would still
            // leave the bootloader nothing to boot.
            match (op, judged_with(true)) {
                (Manual::Rollback, forced) => assert!(forced.is_ok(), "--force: {forced:?}"),
                (_, forced) => assert_eq!(
                    forced,
                    Err(Refusal::NoBootableSlot { op, slot: keeper }),
                    "booted {booted}, {op} --force"
                ),
            }
        }
    }

    /// Found from outside: `mark-bad A --force` on a fresh host (B never
    /// written, held bad) left A_OK=0 B_OK=0. A slot left that holds a
    /// release the bootloader holds bad: refused, pointing at `mark-good B
    /// --force`; with the bootloader holding it good, the forced mark goes
    /// on. (B never written: below, refused whatever the bootloader says.)
    #[test]
    fn a_forced_mark_bad_never_leaves_no_slot_the_bootloader_boots() {
        let rejected = holding(Bad, "1.0", true);
        let forced = |held_bad| {
            judge(
                Manual::MarkBad(A),
                &ManualFacts {
                    keeper_held_bad: held_bad,
                    ..facts_on(A, (&rec(Good), &rejected), (None, None), true)
                },
            )
        };
        assert_eq!(
            forced(true),
            Err(Refusal::NoBootableSlot {
                op: Manual::MarkBad(A),
                slot: B
            })
        );
        assert_eq!(
            forced(true).map_err(|r| r.to_string()),
            Err("`abupdate mark-bad A --force` would leave no slot the bootloader boots: it holds slot B bad too; if slot B holds a good system, `abupdate mark-good B --force` first".into())
        );
        assert_eq!(
            forced(false),
            Ok(ManualPlan::Mark {
                slot: A,
                good: false
            })
        );
    }

    /// Found from outside: on a fresh host (B never written), `mark-bad A
    /// --force` was refused with the advice `mark-good B --force`; that was
    /// accepted on B's empty record, and `mark-bad A --force` then made
    /// GRUB boot an empty slot for ever. `--force` vouches for records,
    /// never for an image the records say was never written whole, and no
    /// refusal there suggests it.
    #[test]
    fn no_force_makes_a_slot_never_written_whole_bootable() {
        let w = staged(B, Phase::Writing);
        let cases: [(SlotRecord, Option<&Transaction>); 5] = [
            (rec(Empty), None),
            (rec(Installing), None),
            (rec(Installing), Some(&w)),
            // A failed or cancelled write, a slot marked bad while empty.
            (rec(Bad), None),
            (rec(SlotStatus::Other("probation".into())), None),
        ];
        for (b, t) in &cases {
            for op in [Manual::MarkGood(B), Manual::MarkBad(A), Manual::Rollback] {
                for (held_bad, bytes) in [
                    (false, ReadBack::NotRead),
                    (true, ReadBack::NotRead),
                    (false, ReadBack::Blank),
                ] {
                    let r = judge(
                        op,
                        &ManualFacts {
                            keeper_held_bad: held_bad,
                            read_back: bytes,
                            ..facts_on(A, (&rec(Good), b), (*t, None), true)
                        },
                    );
                    assert_eq!(
                        r,
                        Err(Refusal::NoWholeImage {
                            op,
                            slot: B,
                            status: b.status.clone(),
                            writing: t.map(|t| t.version.clone()),
                        }),
                        "{op} --force, B {}",
                        b.status
                    );
                    let msg = r.expect_err("refused").to_string();
                    assert!(!msg.contains("use --force"), "{msg}");
                    assert!(!msg.contains("B --force"), "{msg}");
                    assert!(msg.contains("--force or not"), "{msg}");
                    let way = match t {
                        Some(_) => "finishes the write",
                        None => "`abupdate install` writes a release into it",
                    };
                    assert!(msg.contains(way), "{msg}");
                }
            }
        }
    }

    /// Found from outside: after `state.json` was lost, the fresh state's
    /// record of the old slot is empty although the slot holds its system
    /// (the bootloader still boots it), and no verb, `--force` or not,
    /// reached it. An empty record over a slot that holds something
    /// (its start is not zeros) is the operator's to vouch for.
    #[test]
    fn an_empty_record_over_a_slot_that_holds_something_is_forced_not_refused_outright() {
        for op in [Manual::MarkGood(B), Manual::MarkBad(A), Manual::Rollback] {
            let judged_with = |force| {
                judge(
                    op,
                    &ManualFacts {
                        read_back: ReadBack::NoDigest,
                        ..facts_on(A, (&rec(Good), &rec(Empty)), (None, None), force)
                    },
                )
            };
            assert!(judged_with(true).is_ok(), "{op}: {:?}", judged_with(true));
            assert!(
                matches!(judged_with(false), Err(Refusal::NoGoodSlot { .. })),
                "{op}: {:?}",
                judged_with(false)
            );
        }
    }

    /// Found from outside: `mark-good B --force` of a release staged in B
    /// and never tried committed it without a boot (its transaction
    /// dropped), and a plain `mark-bad A` then left it the only slot to
    /// boot. Its trial proves it, never a mark; the refusal says so.
    #[test]
    fn a_release_staged_and_never_tried_is_never_marked_good() {
        let t = staged(B, Phase::Staged);
        for force in [false, true] {
            let r = judged(Manual::MarkGood(B), Good, Installed, Some(&t), force);
            let msg = r.expect_err("refused").to_string();
            assert!(
                msg.contains("slot B holds a release staged and never tried")
                    && msg.contains("--force or not")
                    && msg.contains("`abupdate mark-bad B` cancels it"),
                "force={force}: {msg}"
            );
            assert!(!msg.contains("use --force"), "{msg}");
        }
    }

    /// Found from outside: with slot B's bytes damaged since its commit
    /// (bit rot, a stray `dd`), `rollback` made it the next boot and
    /// marked the running good slot bad. A verb that makes the other slot
    /// bootable is refused on its read-back; one that leaves only the
    /// booted slot reads nothing. `--force` boots it as it is (found from
    /// outside again: a slot booted read-write before, its ext4 mount count
    /// changed, could never be gone back to): only the operator can tell
    /// damage from a mount.
    #[test]
    fn a_slot_that_no_longer_reads_back_as_recorded_is_made_bootable_only_by_force() {
        let (a, b) = (holding(Good, "3.0", true), holding(Good, "2.0", true));
        let damage = ReadBack::Mismatch {
            class: "rootfs".into(),
            device: "/dev/vdb".into(),
        };
        for op in [Manual::Rollback, Manual::MarkBad(A), Manual::MarkGood(B)] {
            assert_eq!(reads_back(op, A), Some(B), "{op}");
            let damaged = |force| {
                judge(
                    op,
                    &ManualFacts {
                        read_back: damage.clone(),
                        ..facts_on(A, (&a, &b), (None, None), force)
                    },
                )
            };
            assert_eq!(
                damaged(false),
                Err(Refusal::Damaged {
                    op,
                    slot: B,
                    class: "rootfs".into(),
                    device: "/dev/vdb".into(),
                    version: Some("2.0".into()),
                }),
                "{op}"
            );
            assert!(damaged(true).is_ok(), "{op} --force: {:?}", damaged(true));
            // Read back whole, or with no digest to read against (a slot
            // adopted as found): as the records judge it.
            for bytes in [ReadBack::Matches, ReadBack::NoDigest] {
                let r = judge(
                    op,
                    &ManualFacts {
                        read_back: bytes.clone(),
                        ..facts_on(A, (&a, &b), (None, None), false)
                    },
                );
                assert!(r.is_ok(), "{op} {bytes:?}: {r:?}");
            }
        }
        // Leaving only the booted slot, or blessing it: nothing to read.
        for op in [Manual::MarkBad(B), Manual::MarkGood(A)] {
            assert_eq!(reads_back(op, A), None, "{op}");
        }
        // The running trial's rejection goes to the slot it came from: read.
        let t = staged(A, Phase::Staged);
        let r = judge(
            Manual::Rollback,
            &ManualFacts {
                read_back: damage,
                ..facts_on(A, (&rec(Installed), &b), (Some(&t), None), false)
            },
        );
        assert!(matches!(r, Err(Refusal::Damaged { slot: B, .. })), "{r:?}");
        let msg = r.expect_err("refused").to_string();
        assert_eq!(
            msg,
            "`abupdate rollback` would leave slot B to boot, but its rootfs image (/dev/vdb) no longer reads back as the SHA-256 its record keeps for 2.0 (changed since it was written: damaged, or mounted read-write): refused, nothing changed (`abupdate install` writes a release into slot B again; `--force` boots it as it is)"
        );
    }

    /// Found from outside: after `rollback --no-reboot` from the committed
    /// release (the booted slot A recorded bad, its release held, B next),
    /// a plain `mark-good` undid the rollback unseen and the timer then
    /// overwrote B. It needs `--force`, and forced it cancels the rollback
    /// (the hold lifted with it).
    #[test]
    fn mark_good_of_a_booted_slot_rolled_back_from_needs_force_and_cancels_the_rollback() {
        let (a, b) = (holding(Bad, "3.0", true), holding(Good, "2.0", true));
        let judged_with = |held, force| {
            judge(
                Manual::MarkGood(A),
                &ManualFacts {
                    booted_held: held,
                    ..facts_on(A, (&a, &b), (None, None), force)
                },
            )
        };
        assert_eq!(
            judged_with(true, false),
            Err(Refusal::RolledBackFrom { slot: A })
        );
        let msg = judged_with(true, false).expect_err("refused").to_string();
        assert!(
            msg.contains("reboot to finish the rollback") && msg.contains("mark-good A --force"),
            "{msg}"
        );
        assert_eq!(
            judged_with(true, true),
            Ok(ManualPlan::CancelRollback { slot: A })
        );
        // Recorded bad with nothing held (marked bad by hand as a bare
        // mark): marked good again, as before.
        assert_eq!(
            judged_with(false, false),
            Ok(ManualPlan::Mark {
                slot: A,
                good: true
            })
        );
    }

    /// Found from outside (a random walk): `state.json` deleted while a
    /// trial ran unjudged (before `health`), then `mark-bad` of the other
    /// slot left only the trial bootable, a release whose checks fail. The
    /// fresh records call the booted slot usable; the bootloader says its
    /// boot is a try no one has blessed.
    #[test]
    fn mark_bad_is_refused_when_it_would_leave_only_an_unjudged_try() {
        for booted in [A, B] {
            let judged_with = |target: SlotName, force| {
                judge(
                    Manual::MarkBad(target),
                    &ManualFacts {
                        keeper_unjudged: true,
                        ..facts_on(booted, (&rec(Empty), &rec(Empty)), (None, None), force)
                    },
                )
            };
            assert_eq!(
                judged_with(booted.other(), false),
                Err(Refusal::KeeperUnjudged {
                    op: Manual::MarkBad(booted.other()),
                    slot: booted
                })
            );
            assert!(judged_with(booted.other(), true).is_ok(), "--force");
        }
    }

    #[test]
    fn mark_bad_of_the_booted_slot_is_refused_unless_the_other_is_committed() {
        // (Empty or being written: refused forced too, above.)
        let t = staged(B, Phase::Staged);
        for (b, t, staged) in [
            (holding(Bad, "1.0", true), None, false),
            (rec(Installed), Some(&t), true),
            (rec(Installed), None, false),
            (holding(SlotStatus::Failing, "1.0", true), None, false),
        ] {
            let op = Manual::MarkBad(A);
            let on = |force| judged_on(op, A, (&rec(Good), &b), (t, None), force);
            let b = b.status.clone();
            assert_eq!(refused_for(on(false)), (B, b.clone(), staged), "{b}");
            assert_eq!(
                on(true),
                Ok(ManualPlan::Mark {
                    slot: A,
                    good: false
                }),
                "--force: {b}"
            );
        }
        assert_eq!(
            judged(Manual::MarkBad(A), Good, Good, None, false),
            Ok(ManualPlan::Mark {
                slot: A,
                good: false
            })
        );
    }

    #[test]
    fn mark_bad_of_the_other_slot_needs_the_booted_one_not_recorded_bad() {
        for a in [Good, Empty, Installed] {
            assert_eq!(
                judged(Manual::MarkBad(B), a.clone(), Installed, None, false),
                Ok(ManualPlan::Mark {
                    slot: B,
                    good: false
                }),
                "{a}"
            );
        }
        // Cancelling a staged release from the good booted slot.
        let t = staged(B, Phase::Staged);
        assert_eq!(
            judged(Manual::MarkBad(B), Good, Installed, Some(&t), false),
            Ok(ManualPlan::CancelPending)
        );
        let r = judged(Manual::MarkBad(B), Bad, Good, None, false);
        assert_eq!(refused_for(r), (A, Bad, false));
        // Nor one kept running after its checks failed (`health` found no
        // fallback): it runs, but is no proven good system.
        let r = judged(Manual::MarkBad(B), SlotStatus::Failing, Good, None, false);
        assert_eq!(refused_for(r), (A, SlotStatus::Failing, false));
        // The booted slot on its trial is not proven either.
        let t = staged(A, Phase::Staged);
        let r = judged(Manual::MarkBad(B), Installed, Good, Some(&t), false);
        assert_eq!(refused_for(r), (A, Installed, false));
    }

    /// Only a committed other slot is marked good without `--force`: one
    /// written and verified but never booted (`installed`, or staged) is
    /// no proven good system, and marking it good made it one, so a
    /// `mark-bad` of the booted slot after it left only a slot that never
    /// booted (found from outside, stop 47).
    #[test]
    fn mark_good_of_the_other_slot_needs_a_committed_system() {
        // (Empty, being written, or naming no release: refused forced
        // too, above.)
        for b in [
            rec(Installed),
            holding(Bad, "1.0", true),
            holding(SlotStatus::Other("probation".into()), "1.0", true),
        ] {
            let on = |force| {
                judged_on(
                    Manual::MarkGood(B),
                    A,
                    (&rec(Good), &b),
                    (None, None),
                    force,
                )
            };
            let b = b.status.clone();
            assert_eq!(refused_for(on(false)), (B, b.clone(), false), "{b}");
            assert_eq!(
                on(true),
                Ok(ManualPlan::Mark {
                    slot: B,
                    good: true
                }),
                "--force: {b}"
            );
        }
        assert_eq!(
            judged(Manual::MarkGood(B), Good, Good, None, false),
            Ok(ManualPlan::Mark {
                slot: B,
                good: true
            })
        );
        // A write in flight there is not verified, whatever the record
        // says (refused forced too); a release staged there never booted.
        let t = staged(B, Phase::Writing);
        let r = judged(Manual::MarkGood(B), Good, Installed, Some(&t), true);
        assert!(
            matches!(r, Err(Refusal::NoWholeImage { slot: B, .. })),
            "{r:?}"
        );
        let t = staged(B, Phase::Staged);
        let r = judged(Manual::MarkGood(B), Good, Installed, Some(&t), false);
        assert_eq!(refused_for(r).0, B);
        // So the chain that lost the good slot is refused at its first step.
        let r = judged(Manual::MarkBad(A), Good, Installed, None, false);
        assert_eq!(refused_for(r), (B, Installed, false));
    }

    #[test]
    fn mark_good_of_the_booted_slot_is_always_allowed() {
        let t = staged(A, Phase::Staged);
        for (a, t) in [(Bad, None), (Empty, None), (Installed, Some(&t))] {
            assert_eq!(
                judged(Manual::MarkGood(A), a.clone(), Empty, t, false),
                Ok(ManualPlan::Mark {
                    slot: A,
                    good: true
                }),
                "{a}"
            );
        }
    }

    #[test]
    fn rollback_goes_only_to_a_committed_slot_unless_forced() {
        assert_eq!(
            judged(Manual::Rollback, Good, Good, None, false),
            Ok(ManualPlan::SwitchTo {
                slot: B,
                vouched: false
            })
        );
        // (Empty or being written: refused forced too, above.)
        let t = staged(B, Phase::Staged);
        for (b, t, staged) in [
            (holding(Bad, "1.0", true), None, false),
            // Staged, never tried: not a proven system.
            (rec(Installed), Some(&t), true),
        ] {
            let on = |force| judged_on(Manual::Rollback, A, (&rec(Good), &b), (t, None), force);
            let b = b.status.clone();
            assert_eq!(refused_for(on(false)), (B, b.clone(), staged), "{b}");
            assert_eq!(
                on(true),
                Ok(ManualPlan::SwitchTo {
                    slot: B,
                    vouched: !b.is_usable()
                }),
                "--force: {b}"
            );
        }
    }

    #[test]
    fn rejecting_the_running_trial_retires_it_and_cancelling_a_pending_one_disarms_it() {
        // Booted A on its trial (from B, good).
        let t = staged(A, Phase::Staged);
        for op in [Manual::Rollback, Manual::MarkBad(A)] {
            assert_eq!(
                judged(op, Installed, Good, Some(&t), false),
                Ok(ManualPlan::RejectTrial),
                "{op}"
            );
        }
        let bad = holding(Bad, "1.0", true);
        let on = |force| {
            judged_on(
                Manual::Rollback,
                A,
                (&rec(Installed), &bad),
                (Some(&t), None),
                force,
            )
        };
        assert_eq!(refused_for(on(false)), (B, Bad, false));
        assert_eq!(on(true), Ok(ManualPlan::RejectTrial));
        // Staged in B, not booted yet: mark-bad B cancels it (the
        // operator's decision, not a verdict on the release), also when
        // forced from a booted slot not proven good.
        let t = staged(B, Phase::Staged);
        assert_eq!(
            judged(Manual::MarkBad(B), Good, Installed, Some(&t), false),
            Ok(ManualPlan::CancelPending)
        );
        assert_eq!(
            judged(Manual::MarkBad(B), Bad, Installed, Some(&t), true),
            Ok(ManualPlan::CancelPending)
        );
        // A write still pending (its download stopped by a closed window,
        // or cut by a power loss: the next `update` resumes it) is
        // cancelled the same way; marking the slot alone would let the
        // next run resume, stage and boot it.
        let w = staged(B, Phase::Writing);
        for b in [Installing, Bad] {
            assert_eq!(
                judged(Manual::MarkBad(B), Good, b.clone(), Some(&w), false),
                Ok(ManualPlan::CancelPending),
                "{b}"
            );
        }
    }

    #[test]
    fn rejecting_the_release_on_probation_is_one_late_rollback() {
        // Booted B, 2.0 committed there and on probation, A good.
        let on = |op, a: SlotStatus, probation, force| {
            let a = holding(a, "1.0", true);
            judged_on(op, B, (&a, &rec(Good)), (None, probation), force)
        };
        for op in [Manual::MarkBad(B), Manual::Rollback] {
            assert_eq!(
                on(op, Good, Some(B), false),
                Ok(ManualPlan::RejectOnProbation),
                "{op}: not a bare mark or switch the next boot records again"
            );
            let r = on(op, Bad, Some(B), false);
            assert_eq!(refused_for(r), (A, Bad, false), "{op}: no good fallback");
            assert_eq!(
                on(op, Bad, Some(B), true),
                Ok(ManualPlan::RejectOnProbation),
                "{op} --force"
            );
        }
        // No probation, or the bootloader fell back to A already: as before.
        assert_eq!(
            on(Manual::MarkBad(B), Good, None, false),
            Ok(ManualPlan::Mark {
                slot: B,
                good: false
            })
        );
        assert_eq!(
            on(Manual::Rollback, Good, None, false),
            Ok(ManualPlan::SwitchTo {
                slot: A,
                vouched: false
            })
        );
        assert_eq!(
            on(Manual::MarkBad(A), Good, Some(A), false),
            Ok(ManualPlan::Mark {
                slot: A,
                good: false
            }),
            "the slot on probation not running (fell back): no rejection of it"
        );
    }

    /// Booted B, which holds 2.0 that abupdate installed and committed
    /// (no probation: `probation = 0`, the default), A holding 1.0.
    fn committed_in_b(a: SlotStatus) -> (SlotRecord, SlotRecord) {
        (holding(a, "1.0", false), holding(Good, "2.0", true))
    }

    #[test]
    fn leaving_a_committed_release_by_hand_rejects_it() {
        // The reviewer's case (attack5, 4): `rollback` or `mark-bad B`
        // from the committed 2.0 is a verdict on it, not a bare switch.
        let (a, b) = committed_in_b(Good);
        for op in [Manual::Rollback, Manual::MarkBad(B)] {
            assert_eq!(
                judged_on(op, B, (&a, &b), (None, None), false),
                Ok(ManualPlan::RejectCommitted { slot: B }),
                "{op}"
            );
        }
        // Still the one rule first: no proven good fallback, refused
        // unless forced, and forced it is the same rejection.
        let (bad_a, b) = committed_in_b(Bad);
        for op in [Manual::Rollback, Manual::MarkBad(B)] {
            let r = judged_on(op, B, (&bad_a, &b), (None, None), false);
            assert_eq!(refused_for(r), (A, Bad, false), "{op}");
            assert_eq!(
                judged_on(op, B, (&bad_a, &b), (None, None), true),
                Ok(ManualPlan::RejectCommitted { slot: B }),
                "{op} --force"
            );
        }
        // The host left it already (the boot menu, an older abupdate's
        // `rollback`) and runs 1.0: `mark-bad B` rejects it, or the timer
        // installs it again.
        assert_eq!(
            judged_on(Manual::MarkBad(B), A, (&a, &b), (None, None), false),
            Ok(ManualPlan::RejectCommitted { slot: B })
        );
        // A version that does not compare, differing from what the host
        // goes to, or none known there: the host goes back from it.
        let odd = holding(Good, "build-7", true);
        let unnamed = rec(Good);
        for (a, b) in [(&a, &odd), (&unnamed, &b)] {
            assert_eq!(
                judged_on(Manual::Rollback, B, (a, b), (None, None), false),
                Ok(ManualPlan::RejectCommitted { slot: B }),
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn a_trial_or_a_probation_keeps_its_own_rejection() {
        let (a, b) = committed_in_b(Good);
        // On probation: the probation's late rollback, as before.
        for op in [Manual::Rollback, Manual::MarkBad(B)] {
            assert_eq!(
                judged_on(op, B, (&a, &b), (None, Some(B)), false),
                Ok(ManualPlan::RejectOnProbation),
                "{op}"
            );
        }
        // On its trial (the record says installed, the transaction names
        // B): the trial's rejection.
        let t = staged(B, Phase::Staged);
        let trial = holding(Installed, "2.0", true);
        assert_eq!(
            judged_on(Manual::Rollback, B, (&a, &trial), (Some(&t), None), false),
            Ok(ManualPlan::RejectTrial)
        );
        // Anything in flight (here a release staged in A the operator
        // forces a rollback onto): no verdict on the committed release, a
        // switch.
        let w = staged(A, Phase::Staged);
        let staged_a = rec(Installed);
        assert_eq!(
            judged_on(Manual::Rollback, B, (&staged_a, &b), (Some(&w), None), true),
            Ok(ManualPlan::SwitchTo {
                slot: A,
                vouched: false
            })
        );
        // Found from outside: a write into A killed half-way, forced onto,
        // dropped its transaction, and the next `health` blessed the slot.
        // Refused, `--force` or not.
        let w = staged(A, Phase::Writing);
        assert!(matches!(
            judged_on(
                Manual::Rollback,
                B,
                (&rec(Installing), &b),
                (Some(&w), None),
                true
            ),
            Err(Refusal::NoWholeImage { slot: A, .. })
        ));
    }

    #[test]
    fn leaving_for_the_same_or_a_newer_release_is_no_verdict() {
        // Booted A with 1.0, installed and committed here; B holds 2.0,
        // committed: `rollback` there is a way forward, not a verdict on
        // 1.0; `mark-bad B` from A rejects 2.0 instead (above).
        let (a, b) = (holding(Good, "1.0", true), holding(Good, "2.0", true));
        assert_eq!(
            judged_on(Manual::Rollback, A, (&a, &b), (None, None), false),
            Ok(ManualPlan::SwitchTo {
                slot: B,
                vouched: false
            })
        );
        // Both slots hold 2.0 (spelt either way): the host keeps running it.
        for same in ["2.0", "2.0.0"] {
            let a = holding(Good, same, true);
            assert_eq!(
                judged_on(Manual::Rollback, B, (&a, &b), (None, None), false),
                Ok(ManualPlan::SwitchTo {
                    slot: A,
                    vouched: false
                }),
                "{same}"
            );
        }
        let odd = holding(Good, "build-7", true);
        assert_eq!(
            judged_on(Manual::Rollback, B, (&odd, &odd), (None, None), false),
            Ok(ManualPlan::SwitchTo {
                slot: A,
                vouched: false
            }),
            "the same release, though its version does not compare"
        );
        // A release adopted as found (no manifest: abupdate never
        // installed it here) is no release this host judges.
        let adopted = holding(Good, "2.0", false);
        let (a, _) = committed_in_b(Good);
        assert_eq!(
            judged_on(Manual::Rollback, B, (&a, &adopted), (None, None), false),
            Ok(ManualPlan::SwitchTo {
                slot: A,
                vouched: false
            })
        );
    }

    #[test]
    fn marking_the_other_slot_bad_when_it_holds_an_older_release_is_a_mark() {
        // Booted B with the committed 2.0; A holds 1.0, also installed and
        // committed here: the host does not leave it, nothing is rejected.
        let (a, b) = (holding(Good, "1.0", true), holding(Good, "2.0", true));
        assert_eq!(
            judged_on(Manual::MarkBad(A), B, (&a, &b), (None, None), false),
            Ok(ManualPlan::Mark {
                slot: A,
                good: false
            })
        );
        // Nor when it holds the same release.
        let same = holding(Good, "2.0", true);
        assert_eq!(
            judged_on(Manual::MarkBad(A), B, (&same, &b), (None, None), false),
            Ok(ManualPlan::Mark {
                slot: A,
                good: false
            })
        );
    }

    #[test]
    fn a_repeated_rollback_rejects_the_release_once() {
        // After the rejection (B bad, A activated, the reboot not yet
        // done), `rollback` or `mark-bad B` again: no second verdict.
        let (a, _) = committed_in_b(Good);
        let rejected = holding(Bad, "2.0", true);
        assert_eq!(
            judged_on(Manual::Rollback, B, (&a, &rejected), (None, None), false),
            Ok(ManualPlan::SwitchTo {
                slot: A,
                vouched: false
            })
        );
        assert_eq!(
            judged_on(Manual::MarkBad(B), B, (&a, &rejected), (None, None), true),
            Ok(ManualPlan::Mark {
                slot: B,
                good: false
            })
        );
        // Booted A, back on 1.0: rolling "back" onto the rejected 2.0 is
        // refused (B is bad), and forced is a switch, no verdict on 1.0.
        let r = judged_on(Manual::Rollback, A, (&a, &rejected), (None, None), false);
        assert_eq!(refused_for(r), (B, Bad, false));
        assert_eq!(
            judged_on(Manual::Rollback, A, (&a, &rejected), (None, None), true),
            Ok(ManualPlan::SwitchTo {
                slot: B,
                vouched: true
            })
        );
        assert_eq!(
            judged_on(Manual::MarkBad(B), A, (&a, &rejected), (None, None), false),
            Ok(ManualPlan::Mark {
                slot: B,
                good: false
            }),
            "marked again: its rejection is recorded already"
        );
    }

    #[test]
    fn finishing_a_rollback_says_late_only_after_a_late_retirement() {
        use crate::report::{record_outcome, Outcome};
        let mut log = Vec::new();
        record_outcome(&mut log, "2.0", None, Outcome::Committed, None, 10);
        assert!(!retired_late(&log, "2.0"), "not rolled back at all");
        record_outcome(&mut log, "2.0", None, Outcome::RolledBackLate, None, 20);
        assert!(retired_late(&log, "2.0"));
        assert!(!retired_late(&log, "3.0"), "another release");
        record_outcome(&mut log, "2.0", None, Outcome::RolledBack, None, 30);
        assert!(
            !retired_late(&log, "2.0"),
            "installed again by hand, its trial rejected"
        );
    }

    #[test]
    fn each_refusal_is_one_line_naming_the_slot_and_the_way_out() {
        let t = staged(B, Phase::Staged);
        for (op, b, t, says) in [
            (Manual::MarkBad(A), Installed, None, "marking slot A bad would leave no good slot to boot: slot B is installed in the state, not a proven good system (use --force)"),
            (Manual::MarkGood(B), Installed, None, "slot B is installed in the state, not a proven good system (committed after a boot); refusing to mark it good (boot it"),
            (Manual::Rollback, Installed, None, "slot B is installed in the state, not a proven good system; refusing to roll back to it (use --force)"),
            (Manual::Rollback, Installed, Some(&t), "slot B holds a release staged and never tried, not a proven good system; refusing to roll back to it (`abupdate mark-bad B` cancels the staged release; or use --force)"),
        ] {
            let msg = judged(op, Good, b, t, false).expect_err("refused").to_string();
            assert!(msg.contains(says) && msg.contains("--force"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        // Never written whole: the install is the way, not `--force`.
        for (op, says) in [
            (Manual::MarkBad(A), "marking slot A bad would leave only slot B to boot: slot B is empty in the state and holds nothing (its start reads as zeros), no image to boot, --force or not (`abupdate install` writes a release into it"),
            (Manual::MarkGood(B), "slot B is empty in the state and holds nothing (its start reads as zeros): no image to boot, --force or not; refusing to mark it good (`abupdate install`"),
            (Manual::Rollback, "slot B is empty in the state and holds nothing (its start reads as zeros): no image to boot, --force or not; refusing to roll back to it (`abupdate install`"),
        ] {
            let msg = judged(op, Good, Empty, None, false).expect_err("refused").to_string();
            assert!(msg.contains(says), "{msg}");
            assert!(!msg.contains("use --force") && !msg.contains('\n'), "{msg}");
        }
    }
}
