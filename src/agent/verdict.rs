//! `health`: the boot-time verdict, run by `abupdate-health.service` on
//! every boot. zincati's update agent is the model: the decision is a pure
//! function ([`decide`]) from plain facts (the booted slot, the transaction,
//! the slot records, the boot id, the trial's bytes, the checks' result) to
//! a [`Decision`], unit-tested branch by branch; [`health`] is the small
//! runner that gathers the facts a decision asks for, one at a time, and
//! applies the final one through [`super::transition`].
//!
//! Invariant: every boot tells a trial from a fallback from an interrupted
//! write by the recorded transaction alone (recorded before any bootloader
//! change, `transition.rs` rule 3), and a trial is committed only when its
//! bytes are those of its release and every check passed in one round
//! ([`crate::health`]). A trial that fails in any way is retired the one
//! way there is ([`super::transition::Transition::retire`]).
//!
//! When the state records no transaction and does not hold the booted slot
//! committed (with the release that runs, when it was damaged and a last
//! good copy stands in), it cannot say there is no trial, whatever made it
//! so: `state.json` damaged, deleted (a fresh state), or deleted and saved
//! fresh since by a run on the old slot. The
//! bootloader decides ([`BootView`]). A slot it holds retired (marked bad,
//! the other slot next) was retired on this boot on the records that were
//! lost: that retirement is finished ([`Failure::Unrecorded`]), never
//! undone. A booted slot it counts as tried and
//! not blessed is judged as a trial: its checks run, a pass blesses it, a
//! failure retires it to the other slot when the bootloader holds that one
//! bootable and untried *and* the state that stands in records it
//! committed, else keeps it ([`Decision::KeepWithoutFallback`]): GRUB and
//! U-Boot count every boot as a try, so this judges committed hosts too,
//! and the other slot is never guessed from bootloader flags. It is never
//! blessed unchecked. A slot so kept stays bootable and is recorded
//! failing ([`SlotStatus::Failing`]), never good: judged by its checks on
//! every boot until they pass, whatever the bootloader counts, and no
//! fallback (nothing is installed from it: the other slot may hold the
//! last good system). Its release is credited or blamed as a trial's only
//! when the bootloader tells a trial's boot from a committed one's
//! ([`BootSays`]): only then does a pass start its probation, and a
//! failure that keeps it count `no_fallback` (else `health`, the host's).
//! Unless the state was damaged, a pass is a plain re-bless where the
//! bootloader cannot tell: a fresh host reports no commit of the release
//! it was given.
//!
//! A booted trial is judged after the bootloader is read ([`BootView`]):
//! when it holds the trial slot marked bad ([`BootView::booted_marked_bad`])
//! and boots the other slot next, a retirement (failed checks, an
//! operator's `mark-bad` or `rollback`) wrote the bootloader and its record
//! was lost (the state save failed: a full or read-only state file system;
//! or the run was cut before it). That retirement is finished
//! ([`Failure::Unrecorded`]), never re-judged by the checks: a trial the
//! bootloader holds bad is never committed. Only GRUB and U-Boot tell a
//! mark bad from their own boot counting
//! ([`crate::boot::Bootloader::marked_bad`]); on EFI, systemd-boot and a
//! custom bootloader a trial is judged by its record and checks alone.
//! The same holds after a commit, where EFI and systemd-boot tell the mark
//! too ([`crate::boot::Bootloader::committed_marked_bad`]): a booted
//! committed slot the bootloader holds retired, with the other slot
//! recorded committed, is a late rollback whose record was lost, finished,
//! never re-blessed
//! (`decide_committed`); so is the other slot retired while this one runs
//! when leaving it rejects its release (the reboot came before the
//! record): recorded, its release not installed again.

use super::probation;
use super::recovery::{finish_rollback, finish_unrecorded_late, reboot, retire_trial};
use super::report::publish;
use super::transition::Transition;
use super::{log, Host};
use crate::error::{Kind, Result};
use crate::report::Outcome;
use crate::slot::SlotName;
use crate::state::{Phase, SlotStatus, State, StateLock, Transaction};

/// What `health` concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No trial pending: the booted slot was re-blessed.
    Healthy,
    /// The trial slot passed its checks and is now committed.
    Committed {
        /// The release committed.
        version: String,
    },
    /// The trial slot failed: marked bad, rolled back.
    RolledBack {
        /// The release rolled back.
        version: String,
        /// Why.
        reason: String,
    },
    /// The bootloader fell back from a trial that never came up.
    TrialNeverBooted {
        /// The release that never came up.
        version: String,
    },
    /// A slot is staged and the host has not rebooted into it yet.
    AwaitingReboot {
        /// The release staged.
        version: String,
    },
    /// The booted release is on probation and still within its limit.
    OnProbation {
        /// The release on probation.
        version: String,
        /// When the probation ends (Unix time).
        until: i64,
        /// Failures counted so far.
        failures: u32,
    },
    /// The booted release's probation ended clean.
    ProbationPassed {
        /// The release.
        version: String,
    },
    /// The booted release's probation ended because the configuration
    /// turned probation off (`probation = "0"`).
    ProbationOff {
        /// The release.
        version: String,
    },
    /// A committed release failed its probation: retired, the old slot
    /// activated (and rebooted into, unless it already runs).
    RolledBackLate {
        /// The release rolled back.
        version: String,
        /// Why.
        reason: String,
    },
    /// A committed release failed its probation, but the old slot is not
    /// usable: the release is kept, its probation ended as failed, nothing
    /// in the bootloader changed.
    NoFallback {
        /// The release kept.
        version: String,
        /// Why, naming the old slot and what is wrong with it.
        reason: String,
    },
}

/// What the verdict is decided from: plain data, read by the runner.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The slot running now.
    pub booted: SlotName,
    /// The update in flight, as recorded.
    pub transaction: Option<&'a Transaction>,
    /// The booted slot's record.
    pub booted_status: &'a SlotStatus,
    /// The other slot's record.
    pub other_status: &'a SlotStatus,
    /// This boot's id.
    pub boot_id: Option<&'a str>,
    /// Whether the booted trial's bytes are its release's, once read back
    /// ([`Decision::VerifyTrialBytes`] asks for it).
    pub trial_intact: Option<bool>,
    /// The health checks' result, once run ([`Decision::RunChecks`] asks
    /// for it): `Err` says which failed.
    pub checks: Option<std::result::Result<(), String>>,
    /// `state.json` was damaged: the records are its last good copy's or a
    /// fresh state's ([`crate::state::State::recovered`]).
    pub state_damaged: bool,
    /// The booted slot's record names another release than the one
    /// running (os-release's): the records are of an older boot, not this
    /// one. Only read when the state was damaged, where a last good copy
    /// several saves behind (its later saves lost) may hold the booted
    /// slot committed with the release it held before this trial.
    pub booted_record_stale: bool,
    /// What the bootloader says of both slots, once read
    /// ([`Decision::ReadBootloader`] asks for it).
    pub boot: Option<BootView>,
    /// Leaving the other slot would be rejecting the release there, as
    /// `mark-bad` of it is judged on the records
    /// ([`super::recovery::judge`]: abupdate committed it, it is newer than
    /// the booted one's, nothing is pending and no probation of it runs),
    /// and its release is not held on the failed list already (a build,
    /// this one or an older one in the other slot, recorded the
    /// retirement).
    pub other_rejectable: bool,
}

/// What the bootloader says of the slots: for a boot the state does not
/// describe, and for a trial's boot (was it retired already?).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootView {
    /// The booted slot's boot is a try no one blessed
    /// ([`crate::boot::Bootloader::tried`]); `None`: cannot tell.
    pub booted_tried: Option<bool>,
    /// The booted slot may be booted ([`crate::boot::Bootloader::state`]).
    /// Not so once a retirement of its trial marked it bad and was cut
    /// before the state was saved (on GRUB that write also clears its
    /// `TRY`): the verdict is then taken again, never a re-bless.
    pub booted_good: bool,
    /// The other slot may be booted ([`crate::boot::Bootloader::state`]).
    pub other_good: bool,
    /// The other slot was tried and never blessed since; `None`: cannot
    /// tell.
    pub other_tried: Option<bool>,
    /// `booted_tried` tells a trial's boot from a committed release's
    /// ([`crate::boot::Bootloader::tells_a_trial_boot`]: systemd-boot, EFI
    /// when the booted entry is out of `BootOrder`); on GRUB and U-Boot
    /// its yes holds for every boot, on EFI for a pick in the boot menu.
    pub tells_trials: bool,
    /// The booted slot carries the mark a retirement leaves, not only
    /// spent tries ([`crate::boot::Bootloader::marked_bad`]); `None`:
    /// cannot tell (EFI, systemd-boot, custom, or a read that failed).
    pub booted_marked_bad: Option<bool>,
    /// The bootloader boots the other slot next and holds it good
    /// ([`crate::boot::Bootloader::primary`], `state`).
    pub other_next: bool,
    /// The other slot carries the mark a retirement leaves, read as a
    /// committed slot's ([`crate::boot::Bootloader::committed_marked_bad`]:
    /// asked only where it is recorded committed); `None`: cannot tell.
    pub other_committed_marked_bad: Option<bool>,
    /// The booted slot, read as a committed slot's the same way.
    pub booted_committed_marked_bad: Option<bool>,
    /// The bootloader boots the booted slot next.
    pub booted_next: bool,
}

/// What the bootloader says a boot the damaged state does not describe
/// is, for what its verdict is credited or blamed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootSays {
    /// A trial's boot (EFI through `BootNext`, systemd-boot's entry still
    /// counting tries): a pass starts the release's probation and a
    /// failure is its trial's.
    Trial,
    /// A trial's or a committed release's boot, the bootloader cannot
    /// tell (GRUB, U-Boot, custom, or a read that failed): no probation
    /// starts (a long-committed release would be on it again, and a
    /// failure later counted against it), and a failure is the host's
    /// (`health`), never counted against the release.
    CannotTell,
}

impl BootView {
    /// The booted slot may be on a trial: a bootloader that cannot tell
    /// is not taken to say no, and one that holds it bad was retiring it.
    pub fn booted_on_trial(&self) -> bool {
        self.booted_tried != Some(false) || !self.booted_good
    }

    /// The other slot is somewhere to roll back to: bootable, and not a
    /// slot the bootloader already tried and fell back from.
    pub fn other_is_fallback(&self) -> bool {
        self.other_good && self.other_tried != Some(true)
    }

    /// The booted slot was retired in the bootloader: marked bad (not
    /// just its tries spent) and the other slot boots next, as
    /// [`super::transition::Transition::retire`]'s pair leaves it. A trial
    /// on its last try looks so only on bootloaders that cannot tell a
    /// mark from their counting, which answer `None` here.
    pub fn booted_retired(&self) -> bool {
        self.booted_marked_bad == Some(true) && self.other_next
    }

    /// The other slot was retired in the bootloader while this one runs
    /// (marked bad, this one next): a retirement finished by its reboot.
    pub fn other_retired(&self) -> bool {
        self.other_committed_marked_bad == Some(true) && self.booted_next
    }

    /// [`BootView::booted_retired`] of a booted slot recorded committed.
    pub fn booted_committed_retired(&self) -> bool {
        self.booted_committed_marked_bad == Some(true) && self.other_next
    }

    /// What this boot is, as far as the bootloader tells.
    pub fn booted_says(&self) -> BootSays {
        match self.tells_trials && self.booted_tried == Some(true) {
            true => BootSays::Trial,
            false => BootSays::CannotTell,
        }
    }
}

/// How a trial failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Its health checks failed (what they said).
    Checks(String),
    /// Its transaction never reached `staged` and its bytes are not its
    /// release's.
    Corrupt,
    /// It never came up: the bootloader fell back.
    NeverBooted,
    /// Rejected by hand while the host ran it (`rollback`, `mark-bad` of
    /// the slot on trial): the operator's verdict.
    Rejected(super::recovery::Manual),
    /// Its health checks failed (what they said) on a trial `state.json`
    /// did not describe (damaged): its record names no release (nothing
    /// says which bytes it holds).
    UndescribedChecks(String),
    /// Retired in the bootloader (marked bad, the other slot next:
    /// [`BootView::booted_retired`]) by a run whose record was lost: the
    /// state save failed, or the run was cut. Why it was retired (failed
    /// checks, `mark-bad`, `rollback`) was in that record; the retirement
    /// is finished, never undone. `staged`: the transaction reached
    /// `staged`, so the slot holds its release's bytes.
    Unrecorded {
        /// The transaction was `staged` (its bytes verified).
        staged: bool,
        /// The slot held a committed release (its probation failed, or an
        /// operator rejected it after its commit): a late rollback.
        late: bool,
        /// The host already runs the other slot: the reboot the failed
        /// save's error advised came before this `health`.
        left: bool,
    },
    /// Committed here, then rejected by hand (`rollback`, `mark-bad` of
    /// its slot) with no probation running: the operator's verdict after
    /// the commit, a late rollback held from the timer only
    /// ([`crate::state::Hold::Rejected`]). With `left` the host already
    /// runs the other slot (it left the release before the verb).
    RejectedCommitted {
        /// The verb.
        op: super::recovery::Manual,
        /// The other slot already runs (no reboot needed).
        left: bool,
    },
    /// Committed, then failed its probation (`agent::probation`): what
    /// failed. With `fell_back` the old slot already runs.
    Late {
        /// What failed, in words.
        what: String,
        /// The old slot already runs (no reboot needed).
        fell_back: bool,
    },
}

impl Failure {
    /// Why, for the log, the failed list and the report.
    pub fn reason(&self, t: &Transaction) -> String {
        match self {
            Failure::Checks(what) => format!("health checks failed: {what}"),
            Failure::UndescribedChecks(what) => format!(
                "health checks failed on a trial state.json did not describe: {what}"
            ),
            Failure::Corrupt => "the trial slot's contents do not match the release".into(),
            Failure::Unrecorded { .. } => format!(
                "slot {} was retired in the bootloader (marked bad, slot {} boots next) by a run whose record was never saved; the retirement is finished",
                t.to, t.from
            ),
            Failure::NeverBooted => format!(
                "slot {} never came up with {}; the bootloader fell back to {}",
                t.to, t.version, t.from
            ),
            Failure::Late { what, .. } => format!("failed on probation: {what}"),
            Failure::Rejected(op) => {
                format!("rejected by hand during its trial (`abupdate {op}`)")
            }
            Failure::RejectedCommitted { op, .. } => {
                format!("rejected by hand after its commit (`abupdate {op}`)")
            }
        }
    }

    /// Whether the trial's slot holds its release's bytes (staged, or read
    /// back right on its boot): then its record names the release.
    pub fn holds_release(&self) -> bool {
        !matches!(
            self,
            Failure::Corrupt
                | Failure::UndescribedChecks(_)
                | Failure::Unrecorded { staged: false, .. }
        )
    }

    /// The failure counted (`abupdate_failures_total{kind}`) and reported.
    pub fn kind(&self) -> Kind {
        match self {
            Failure::Checks(_)
            | Failure::UndescribedChecks(_)
            | Failure::Corrupt
            | Failure::Late { .. }
            | Failure::Rejected(_)
            | Failure::Unrecorded { .. }
            | Failure::RejectedCommitted { .. } => Kind::Health,
            Failure::NeverBooted => Kind::TrialNeverBooted,
        }
    }

    /// The webhook's outcome.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Checks(_)
            | Failure::UndescribedChecks(_)
            | Failure::Corrupt
            | Failure::Unrecorded { late: false, .. }
            | Failure::Rejected(_) => Outcome::RolledBack,
            Failure::NeverBooted => Outcome::TrialNeverBooted,
            Failure::Late { .. }
            | Failure::RejectedCommitted { .. }
            | Failure::Unrecorded { late: true, .. } => Outcome::RolledBackLate,
        }
    }

    /// How its release is held on the failed list: failed (every run),
    /// or, rejected by hand after its commit, held from the timer only.
    pub fn hold(&self) -> crate::state::Hold {
        match self {
            Failure::RejectedCommitted { .. } => crate::state::Hold::Rejected,
            _ => crate::state::Hold::Failed,
        }
    }

    /// Whether the old slot already runs: the bootloader fell back, so
    /// the running slot is re-blessed instead of rebooted into.
    pub fn fell_back(&self) -> bool {
        matches!(
            self,
            Failure::NeverBooted
                | Failure::Late {
                    fell_back: true,
                    ..
                }
                | Failure::RejectedCommitted { left: true, .. }
                | Failure::Unrecorded { left: true, .. }
        )
    }
}

/// What to do on this boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A fact is missing: read the booted trial's images back and hash them
    /// (its transaction never reached `staged`: a crash between activation
    /// and the state write).
    VerifyTrialBytes,
    /// A fact is missing: run the health checks on the booted trial.
    RunChecks,
    /// The trial passed: commit it.
    Commit,
    /// The booted trial failed: retire it and reboot into the old slot.
    RollBack(Failure),
    /// The old slot is running after a staged trial, on another boot than
    /// the one that staged it: the trial never came up. Retire it; the
    /// running slot is re-blessed.
    TrialNeverBooted,
    /// Staged on this very boot: the reboot into it is still to come.
    AwaitingReboot,
    /// An install into the other slot was cut before it was staged: the
    /// next `update` redoes it; the running slot is re-blessed.
    InterruptedWrite,
    /// No trial, the booted slot recorded bad and the other usable: the
    /// rollback was recorded but the reboot never happened. Make the other
    /// slot boot next and reboot into it (re-blessing would make the failed
    /// slot bootable again).
    FinishRollback,
    /// No trial pending: re-bless the booted slot.
    Rebless,
    /// A fact is missing: ask the bootloader ([`BootView`]): the booted
    /// slot is the recorded trial's (was it retired already?), or the
    /// state was damaged and records no trial.
    ReadBootloader,
    /// A trial the state did not describe passed its checks: commit the
    /// booted slot as far as known (its record is rebuilt from
    /// os-release; its outcome recorded; on probation only when the
    /// bootloader told a trial, [`BootSays`]).
    CommitUndescribed(BootSays),
    /// A trial the state did not describe failed its checks (what they
    /// said) and the other slot is no fallback: keep the booted slot
    /// (blessed: nothing better boots), reported as failed: `no_fallback`
    /// when the bootloader told a trial, else `health` ([`BootSays`]).
    KeepWithoutFallback(String, BootSays),
}

/// No transaction recorded (and no rollback to finish). A state that holds
/// the booted slot committed (with the release running, when the state was
/// damaged: a record of another is an older boot's) describes this boot.
/// Any other describes none, whatever the reason: no `state.json` (a
/// fresh host, or an operator's reset), a damaged one, or one saved since
/// such a reset (a `health` on the old slot between a staging and its
/// reboot saves a fresh state that knows no trial). Then the bootloader
/// is asked, and a try is judged by its checks as any trial: never
/// blessed unchecked.
fn decide_undescribed(f: &Facts) -> Decision {
    let stale = f.state_damaged && f.booted_record_stale;
    if *f.booted_status == SlotStatus::Good && !stale {
        return decide_committed(f);
    }
    // Written, with nothing in flight, in a state that is not a stand-in:
    // the operator's `rollback --force` onto a slot not recorded usable
    // ([`crate::state::State::switched_to`]). Their word made it bootable,
    // not proven: its boot is judged by its checks as a trial's, and good
    // only once they pass; re-blessed unchecked, it was called good and
    // became the fallback the next install left as the last good system
    // (found from outside: a forced rollback onto a write killed
    // half-way).
    let vouched = *f.booted_status == SlotStatus::Installed && !f.state_damaged;
    if vouched {
        match &f.checks {
            None => return Decision::RunChecks,
            Some(Ok(())) => return Decision::Rebless,
            // Failed: judged below as any undescribed boot whose checks
            // failed (back to a committed other slot, else kept).
            Some(Err(_)) => {}
        }
    }
    let Some(boot) = f.boot else {
        return Decision::ReadBootloader;
    };
    // The bootloader holds the booted slot retired (marked bad, the other
    // slot next, bootable and untried): only a retirement written on this
    // boot leaves it so (a failed trial's, a `rollback`'s, a `mark-bad`'s),
    // made on records the lost state held. It is finished, as a described
    // trial's is; a re-bless would undo it, and checks that pass now would
    // commit what was left (found from outside: a failed trial retired,
    // `state.json` deleted before the reboot, then `health`).
    if boot.booted_retired() && boot.other_is_fallback() {
        return Decision::RollBack(Failure::Unrecorded {
            staged: false,
            late: false,
            left: false,
        });
    }
    // A slot kept failing (its checks failed, nothing else known to boot)
    // is judged by its checks on every boot, whatever the bootloader
    // counts, until they pass.
    let failing = *f.booted_status == SlotStatus::Failing;
    if !boot.booted_on_trial() && !failing && !vouched {
        return Decision::Rebless;
    }
    match &f.checks {
        None => Decision::RunChecks,
        // A pass where the bootloader cannot tell a trial's boot from any
        // other is a re-bless (of a slot kept failing too: good again),
        // unless damage lost a record: a fresh host reports no commit of
        // the release it was provisioned with.
        Some(Ok(())) => match (f.state_damaged, boot.booted_says()) {
            (false, BootSays::CannotTell) => Decision::Rebless,
            (_, says) => Decision::CommitUndescribed(says),
        },
        // Where to go is never taken from the bootloader's flags alone: on
        // GRUB and U-Boot every boot is a try and a slot never written may
        // be flagged bootable, so without a record of the other slot
        // committed, a failing check on a committed host would roll it
        // back into nothing (review 9, 01).
        Some(Err(what)) if boot.other_is_fallback() && *f.other_status == SlotStatus::Good => {
            Decision::RollBack(Failure::UndescribedChecks(what.clone()))
        }
        Some(Err(what)) => Decision::KeepWithoutFallback(what.clone(), boot.booted_says()),
    }
}

/// The booted slot is recorded committed and nothing is pending: re-bless
/// it, unless the bootloader holds it retired (marked bad, the other slot
/// next: [`BootView::booted_retired`]) while the other slot is recorded
/// committed too. Then a late rollback (a failed probation, an operator's
/// `rollback` or `mark-bad` of a committed release) wrote the bootloader
/// and its record was lost (the save failed, or the run was cut): it is
/// finished ([`Failure::Unrecorded`], late), never undone by a re-bless.
/// Asked only where there is a slot to go to: a host with one committed
/// slot keeps it bootable. The same once the reboot the failed save's
/// error advised came first: the booted slot next, the other one (newer,
/// committed: what `mark-bad` of it would judge a rejection,
/// [`Facts::other_rejectable`]) marked bad; the rejection is recorded
/// then, not forgotten and its release installed again by the next
/// `update`.
fn decide_committed(f: &Facts) -> Decision {
    if *f.other_status != SlotStatus::Good {
        return Decision::Rebless;
    }
    let Some(boot) = f.boot else {
        return Decision::ReadBootloader;
    };
    let left = match (
        boot.booted_committed_retired(),
        f.other_rejectable && boot.other_retired(),
    ) {
        (true, _) => false,
        (false, true) => true,
        (false, false) => return Decision::Rebless,
    };
    Decision::RollBack(Failure::Unrecorded {
        staged: true,
        late: true,
        left,
    })
}

/// The verdict on this boot, from `facts` alone.
pub fn decide(f: &Facts) -> Decision {
    let Some(t) = f.transaction else {
        if *f.booted_status == SlotStatus::Bad && f.other_status.is_usable() {
            return Decision::FinishRollback;
        }
        return decide_undescribed(f);
    };
    if f.booted == t.to {
        let Some(boot) = f.boot else {
            return Decision::ReadBootloader;
        };
        // A retirement whose record was lost (the save failed, or the run
        // was cut): finished, never judged again by the checks, which may
        // pass now and would commit what was rejected.
        if boot.booted_retired() {
            return Decision::RollBack(Failure::Unrecorded {
                staged: t.phase == Phase::Staged,
                late: false,
                left: false,
            });
        }
        if t.phase == Phase::Writing {
            match f.trial_intact {
                None => return Decision::VerifyTrialBytes,
                Some(false) => return Decision::RollBack(Failure::Corrupt),
                Some(true) => {}
            }
        }
        return match &f.checks {
            None => Decision::RunChecks,
            Some(Ok(())) => Decision::Commit,
            Some(Err(what)) => Decision::RollBack(Failure::Checks(what.clone())),
        };
    }
    match t.phase {
        Phase::Writing => Decision::InterruptedWrite,
        Phase::Staged if t.staged_boot_id.is_some() && t.staged_boot_id.as_deref() == f.boot_id => {
            Decision::AwaitingReboot
        }
        Phase::Staged => Decision::TrialNeverBooted,
    }
}

/// Whether `booted`'s record names a release other than the one running
/// (os-release's); `false` when either is unknown.
fn record_of_another_release(host: &Host, state: &crate::state::State, booted: SlotName) -> bool {
    match (state.slot(booted).version, host.os_release_version()) {
        (Some(r), Some(v)) => !crate::state::same_version(&r, &v),
        _ => false,
    }
}

/// The longest `health` waits for the state lock: with `[health] timeout`
/// at most 25 minutes, the verdict still comes within the unit's 30.
const HEALTH_LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(4 * 60);

/// The boot-time verdict: gather the facts [`decide`] asks for, then apply
/// its decision.
pub fn health(host: &Host, no_reboot: bool, quiet: bool) -> Result<Verdict> {
    // A command run by hand at boot (a `status`-like `check`, a manual
    // verb) holds the lock a moment: the boot's verdict waits for it
    // rather than being lost, within its own timeout and never so long
    // that the unit's backstop (30 minutes) comes first.
    let wait = host.config.health.timeout.min(HEALTH_LOCK_WAIT_MAX);
    let lock = host.state_dir.lock_within(wait)?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let flip = Transition::new(host, &lock);
    let transaction = state.transaction.clone();
    let booted_status = state.slot(booted).status;
    let other_status = state.slot(booted.other()).status;
    let boot_id = host.boot_id();
    let mut facts = Facts {
        booted,
        transaction: transaction.as_ref(),
        booted_status: &booted_status,
        other_status: &other_status,
        boot_id: boot_id.as_deref(),
        trial_intact: None,
        checks: None,
        state_damaged: state.recovered.is_some(),
        booted_record_stale: record_of_another_release(host, &state, booted),
        boot: None,
        other_rejectable: other_rejectable(&state, booted),
    };
    let decision = loop {
        match decide(&facts) {
            Decision::VerifyTrialBytes => facts.trial_intact = Some(trial_intact(host, &facts)),
            Decision::ReadBootloader => facts.boot = Some(boot_view(host, booted)),
            Decision::RunChecks => {
                match facts.transaction {
                    Some(t) => log(&format!(
                        "slot {} is on trial with {}: running health checks",
                        facts.booted, t.version
                    )),
                    None => log(&format!(
                        "slot {} is on a try no one has blessed in the bootloader, and state.json does not describe it: judging it as a trial, running health checks",
                        facts.booted
                    )),
                }
                // Before the operator's checks: a host that would refuse
                // its next update, or cannot verify its update server,
                // must not commit what it runs now.
                facts.checks = Some(match host.next_update_blocked() {
                    Some((check, line)) => {
                        if !quiet {
                            log(&format!("check {check}: FAIL ({line})"));
                        }
                        Err(format!("{check}: {line}"))
                    }
                    None => run_checks(host, quiet),
                });
            }
            decision => break decision,
        }
    };
    let t = transaction.as_ref();
    let version = || t.map(|t| t.version.clone()).unwrap_or_default();
    let booted_version = || {
        host.booted_version(&state, booted)
            .unwrap_or_else(|| "the booted release".into())
    };
    match (decision, t) {
        (Decision::CommitUndescribed(says), _) => {
            let known = host.booted_version(&state, booted);
            let probation = match (says, &known) {
                (BootSays::Trial, Some(_)) => host.config.health.probation.as_secs(),
                _ => 0,
            };
            let version = booted_version();
            flip.commit_undescribed(&mut state, booted, known.as_deref(), probation)?;
            log(&format!(
                "committed {version} in slot {booted} (its checks passed; state.json did not describe the trial)"
            ));
            if probation > 0 {
                log(&format!(
                    "{version} is on probation for {}",
                    crate::timefmt::format_duration(host.config.health.probation)
                ));
            } else if says == BootSays::CannotTell && !host.config.health.probation.is_zero() {
                log(&format!(
                    "{version} is not put on probation: the bootloader cannot tell this boot from one of a release committed before"
                ));
            }
            host.release_reboot_lock(&lock, &mut state);
            // No build: the images the trial wrote are not known.
            let event = (Outcome::Committed, version.as_str(), None);
            publish(host, &state, Some(event), None);
            Ok(Verdict::Committed { version })
        }
        (Decision::RollBack(why @ Failure::Unrecorded { late: true, .. }), None) => {
            finish_unrecorded_late(host, &flip, &mut state, booted, &why, no_reboot)
        }
        (Decision::RollBack(why), None) => {
            let t = undescribed_trial(booted, booted_version());
            // The slot rolled back to is the one the bootloader holds good
            // and untried: recorded so (naming no version), a re-run after
            // the state write finishes the rollback instead of re-blessing
            // the failed slot.
            state.adopt_fallback(&t);
            retire_trial(host, &flip, &mut state, &t, &why, no_reboot)
        }
        (Decision::KeepWithoutFallback(what, says), _) => {
            let version = booted_version();
            let other = booted.other();
            let mut reason = format!(
                "health checks failed on a trial state.json did not describe: {what}; slot {other} is no fallback (no record shows it committed, or the bootloader holds it bad or tried it and fell back): {version} is kept in slot {booted}"
            );
            // A failure on a boot that may be a committed release's is no
            // trial failure of that release: counted as this host's
            // health failure, which `fleet` does not count against it.
            let kind = match says {
                BootSays::Trial => Kind::NoFallback,
                BootSays::CannotTell => {
                    reason.push_str(&format!(
                        "; the bootloader cannot tell a trial from a committed boot, so this counts as a health failure of this host, not against {version}"
                    ));
                    Kind::Health
                }
            };
            log(&reason);
            let known = host.booted_version(&state, booted);
            // The only slot that boots stays bootable, recorded as failing
            // its checks: no proven system, no fallback for what comes next
            // (found from outside: recorded good, a random walk).
            flip.keep_failing(&mut state, booted)?;
            state.count_failure(kind);
            // A trial the bootloader told failed: its release's outcome,
            // as a probation that fails with no fallback records it (no
            // build: the images the trial wrote are not known).
            let failed = match (says, &known) {
                (BootSays::Trial, Some(release)) => {
                    crate::report::record_outcome(
                        &mut state.outcomes,
                        release,
                        None,
                        Outcome::Failed,
                        Some(kind.as_str()),
                        crate::timefmt::now(),
                    );
                    Some((Outcome::Failed, release.as_str(), None))
                }
                _ => None,
            };
            flip.save(&state)?;
            publish(host, &state, failed, Some((kind, reason.as_str())));
            Ok(Verdict::NoFallback { version, reason })
        }
        (Decision::Commit, Some(t)) => {
            let probation = host.config.health.probation.as_secs();
            flip.commit(&mut state, t, probation)?;
            log(&format!("committed {} in slot {booted}", t.version));
            if probation > 0 {
                log(&format!(
                    "{} is on probation for {}",
                    t.version,
                    crate::timefmt::format_duration(host.config.health.probation)
                ));
            }
            host.release_reboot_lock(&lock, &mut state);
            let build = crate::state::build_of(&t.images);
            let event = (Outcome::Committed, t.version.as_str(), build.as_deref());
            publish(host, &state, Some(event), None);
            Ok(Verdict::Committed { version: version() })
        }
        (Decision::RollBack(why), Some(t)) => {
            retire_trial(host, &flip, &mut state, t, &why, no_reboot)
        }
        (Decision::TrialNeverBooted, Some(t)) => {
            let verdict =
                retire_trial(host, &flip, &mut state, t, &Failure::NeverBooted, no_reboot)?;
            // The fallback's boot is good again: the site's lock goes back.
            host.release_reboot_lock(&lock, &mut state);
            Ok(verdict)
        }
        (Decision::AwaitingReboot, _) => {
            flip.rebless(&mut state, booted)?;
            Ok(Verdict::AwaitingReboot { version: version() })
        }
        (Decision::InterruptedWrite, Some(t)) => {
            log(&format!(
                "an install of {} into slot {} was interrupted; it will be redone",
                t.version, t.to
            ));
            flip.rebless(&mut state, booted)?;
            host.release_reboot_lock(&lock, &mut state);
            Ok(Verdict::Healthy)
        }
        (Decision::FinishRollback, _) => {
            // A planned late rollback's reboot waits for the site's lock
            // here too; a failing slot's does not.
            let planned = state.reboot_owed(booted).is_some();
            finish_rollback(host, &flip, &mut state, booted, no_reboot, planned)
        }
        _ => {
            let watched =
                probation::watch(host, &flip, &mut state, booted, None, (no_reboot, quiet))?;
            if let Some(v @ Verdict::RolledBackLate { .. }) = watched {
                return Ok(v);
            }
            // A slot kept failing is good again only on a boot whose
            // checks ran and passed (its record saved after the
            // bootloader's flag, as a re-bless saves).
            let passed = facts.checks == Some(Ok(())) && state.checks_passed(booted);
            flip.rebless(&mut state, booted)?;
            if passed {
                flip.save(&state)?;
            }
            if state.settle_planned_reboot(booted) {
                flip.save(&state)?;
            }
            // A good slot runs and no trial is pending: a lock still held
            // (the boot after a rollback, a planned one's too) goes back to
            // the site.
            host.release_reboot_lock(&lock, &mut state);
            publish(host, &state, None, None);
            Ok(watched.unwrap_or(Verdict::Healthy))
        }
    }
}

/// What the bootloader says of `booted` and the other slot. A read that
/// fails is logged and says "cannot tell" (the booted slot is then judged;
/// the other slot is no fallback).
fn boot_view(host: &Host, booted: SlotName) -> BootView {
    let other = booted.other();
    // One path for every read that fails: logged, and "cannot tell".
    let known = |r: std::result::Result<Option<bool>, crate::boot::BootError>| {
        r.unwrap_or_else(|e| {
            log(&format!("{e}"));
            None
        })
    };
    let good = |slot: SlotName| {
        known(
            host.boot
                .state(slot)
                .map(|s| Some(s == crate::boot::BootState::Good)),
        ) == Some(true)
    };
    let other_good = good(other);
    let primary = host.boot.primary().unwrap_or_else(|e| {
        log(&format!("{e}"));
        None
    });
    let other_next = other_good && primary == Some(other);
    BootView {
        booted_tried: known(host.boot.tried(booted)),
        booted_good: good(booted),
        other_good,
        other_tried: known(host.boot.tried(other)),
        tells_trials: host.boot.tells_a_trial_boot(booted),
        booted_marked_bad: known(host.boot.marked_bad(booted)),
        other_next,
        other_committed_marked_bad: known(host.boot.committed_marked_bad(other)),
        booted_committed_marked_bad: known(host.boot.committed_marked_bad(booted)),
        booted_next: primary == Some(booted),
    }
}

/// [`Facts::other_rejectable`], read from `state`.
fn other_rejectable(state: &State, booted: SlotName) -> bool {
    let other = booted.other();
    let held = state
        .slot(other)
        .version
        .as_deref()
        .is_some_and(|v| state.holds(v));
    !held && super::recovery::leaving_rejects(state, booted, other)
}

/// The trial in `booted` that no record describes, as the transaction it
/// was, for a failure to retire the one way there is: from the other slot,
/// holding `version` (os-release's), no manifest or images known.
fn undescribed_trial(booted: SlotName, version: String) -> Transaction {
    Transaction {
        from: booted.other(),
        to: booted,
        version,
        // The manifest's digest was in the record the damage lost: the
        // failed list's entry names none rather than a guessed one.
        manifest_sha256: String::new(),
        phase: Phase::Staged,
        started: 0,
        staged_boot_id: None,
        images: Default::default(),
        unknown: Default::default(),
    }
}

/// Whether every image of the booted trial reads back as its release's.
fn trial_intact(host: &Host, facts: &Facts) -> bool {
    let Some(t) = facts.transaction else {
        return false;
    };
    t.images.iter().all(|(class, image)| {
        host.config.device(facts.booted, class).is_some_and(|p| {
            crate::install::hash_path(p, image.size).is_ok_and(|h| h == image.sha256)
        })
    })
}

/// Run the health checks on the booted slot: `Err` names each check that
/// failed, with what it said.
pub(super) fn run_checks(host: &Host, quiet: bool) -> std::result::Result<(), String> {
    let (ok, results) = crate::health::run_until_verdict(&host.config.health, &mut |r| {
        if !quiet {
            log(&format!(
                "check {}: {}{}",
                r.name,
                if r.passed { "pass" } else { "FAIL" },
                if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.detail)
                }
            ));
        }
    });
    crate::failpoint::hit("health-verdict");
    if ok {
        return Ok(());
    }
    Err(crate::health::failed_summary(&results))
}

/// After a retirement that needs it, the reboot into the old slot. A
/// site's reboot lock held for it is given back first when that slot's
/// abupdate would never give it back
/// ([`crate::state::SlotRecord::gives_back_reboot_lock`]):
/// held across the reboot, it would block the whole site's reboots. When
/// the server does not take it back before a planned reboot there is no
/// reboot: that slot's build would never retry, so the reboot stays owed
/// (`planned_reboot`; the boot order is already switched) and this run
/// fails with kind `fleetlock`; the next run gives the lock back, then
/// reboots.
pub(super) fn reboot_into(
    host: &Host,
    lock: &StateLock,
    state: &mut State,
    slot: SlotName,
    no_reboot: bool,
) -> Result<()> {
    if !no_reboot {
        if let Some(group) = state.fleetlock.clone() {
            if !state.slot(slot).gives_back_reboot_lock() {
                log(&format!(
                    "slot {slot}'s release was committed by an abupdate that does not give back the site's reboot lock: giving back the lock of group {group} before rebooting"
                ));
                let planned = state
                    .planned_reboot
                    .as_ref()
                    .is_some_and(|p| p.slot == slot);
                match host.give_back_reboot_lock(lock, state) {
                    Ok(()) => {}
                    // A failing host still reboots at once (nothing makes
                    // its reboot owed).
                    Err(e) if !planned => log(&format!("{e}; rebooting all the same")),
                    Err(e) => {
                        return Err(crate::error::Error::FleetLock(
                            crate::fleetlock::FleetLockError::NotGivenBack {
                                group,
                                slot: slot.to_string(),
                                reason: e,
                            },
                        ))
                    }
                }
            }
        }
        log(&format!("rebooting into slot {slot}"));
        reboot(host)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Hold, ImageRef};
    use std::collections::BTreeMap;

    fn transaction(to: SlotName, phase: Phase, staged_boot_id: Option<&str>) -> Transaction {
        Transaction {
            from: to.other(),
            to,
            version: "2.0".into(),
            manifest_sha256: "aa".into(),
            phase,
            started: 1,
            staged_boot_id: staged_boot_id.map(str::to_string),
            images: BTreeMap::from([("rootfs".to_string(), ImageRef::default())]),
            unknown: Default::default(),
        }
    }

    /// Booted B, boot "boot-2"; `t` the transaction, the records given.
    fn facts<'a>(
        t: Option<&'a Transaction>,
        booted_status: &'a SlotStatus,
        other_status: &'a SlotStatus,
    ) -> Facts<'a> {
        Facts {
            booted: SlotName::B,
            transaction: t,
            booted_status,
            other_status,
            boot_id: Some("boot-2"),
            trial_intact: None,
            checks: None,
            state_damaged: false,
            booted_record_stale: false,
            boot: None,
            other_rejectable: false,
        }
    }

    /// What a bootloader says: the booted slot tried or not, the other
    /// slot bootable and untried.
    fn view(booted_tried: Option<bool>) -> BootView {
        BootView {
            booted_tried,
            booted_good: true,
            other_good: true,
            other_tried: Some(false),
            tells_trials: false,
            booted_marked_bad: Some(false),
            other_next: false,
            other_committed_marked_bad: Some(false),
            booted_committed_marked_bad: Some(false),
            booted_next: true,
        }
    }

    #[test]
    fn a_damaged_state_asks_the_bootloader_whether_the_booted_slot_is_on_trial() {
        // A fresh state stands in for the damaged one: no records at all.
        let mut f = facts(None, &EMPTY, &EMPTY);
        f.state_damaged = true;
        assert_eq!(decide(&f), Decision::ReadBootloader);
        // Its last good copy, naming the booted slot written or being
        // written, or in a status this version does not know: the same.
        for booted in [
            &INSTALLED,
            &SlotStatus::Installing,
            &SlotStatus::Other("x".into()),
        ] {
            let mut f = facts(None, booted, &GOOD);
            f.state_damaged = true;
            assert_eq!(decide(&f), Decision::ReadBootloader, "{booted}");
        }
    }

    /// A stand-in that records the booted slot committed with another
    /// release than the one running describes an older boot: the
    /// bootloader is asked, and a try is judged by its checks. Its
    /// record alone (no damage) or a record of the release running is
    /// a committed boot, re-blessed.
    #[test]
    fn a_damaged_states_stand_in_recording_another_release_committed_is_no_committed_boot() {
        let mut f = facts(None, &GOOD, &GOOD);
        f.boot = Some(view(Some(true)));
        f.booted_record_stale = true;
        assert_eq!(decide(&f), Decision::Rebless, "not damaged");
        f.state_damaged = true;
        assert_eq!(decide(&f), Decision::RunChecks);
        f.checks = Some(Err("app".into()));
        assert_eq!(
            decide(&f),
            Decision::RollBack(Failure::UndescribedChecks("app".into()))
        );
        f.booted_record_stale = false;
        f.checks = None;
        assert_eq!(decide(&f), Decision::Rebless, "its own release");
    }

    /// Found from outside (a random walk): a trial no record described
    /// failed its checks with no fallback, and the slot kept was recorded
    /// `good` with the release that had just failed. It is recorded
    /// `failing` now, and a failing slot is judged by its checks on every
    /// boot, whatever the bootloader counts (a boot not counted as a try
    /// blesses any other slot no record holds committed): a pass makes it
    /// good, a failure keeps it again, and a failing other slot is never
    /// where a failure goes back to.
    #[test]
    fn a_slot_kept_failing_is_judged_by_its_checks_on_every_boot_never_reblessed_unchecked() {
        const FAILING: SlotStatus = SlotStatus::Failing;
        let mut f = facts(None, &FAILING, &EMPTY);
        assert_eq!(decide(&f), Decision::ReadBootloader);
        for tried in [Some(false), Some(true), None] {
            f.boot = Some(view(tried));
            f.checks = None;
            assert_eq!(decide(&f), Decision::RunChecks, "tried {tried:?}");
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), Decision::Rebless, "tried {tried:?}");
            f.checks = Some(Err("app".into()));
            assert_eq!(
                decide(&f),
                Decision::KeepWithoutFallback("app".into(), BootSays::CannotTell),
                "tried {tried:?}"
            );
        }
        // A damaged state: the pass is the commit it would be for any try.
        f.state_damaged = true;
        f.checks = Some(Ok(()));
        assert_eq!(
            decide(&f),
            Decision::CommitUndescribed(BootSays::CannotTell)
        );
        // Another slot's try fails: a failing slot is no fallback, even
        // where the bootloader holds it bootable and untried.
        let mut f = facts(None, &EMPTY, &FAILING);
        f.boot = Some(view(Some(true)));
        f.checks = Some(Err("app".into()));
        assert_eq!(
            decide(&f),
            Decision::KeepWithoutFallback("app".into(), BootSays::CannotTell)
        );
    }

    /// Found from outside: `state.json` deleted between a staging and its
    /// reboot (or deleted, then saved fresh by a `health` on the old slot
    /// before the reboot): `health` on the trial said "healthy; no trial
    /// pending", its failing checks never run. A state that does not hold
    /// the booted slot committed describes no boot, whether the file is
    /// there or not: a try is judged by its checks; a pass where the
    /// bootloader cannot tell a trial is a plain re-bless (a fresh host
    /// reports no commit), one where it can is the trial's commit; a
    /// failure keeps the slot (no record of a fallback).
    #[test]
    fn a_state_that_does_not_hold_the_booted_slot_committed_never_blesses_a_try_unchecked() {
        for booted in [&EMPTY, &SlotStatus::Installing, &BAD] {
            let mut f = facts(None, booted, &EMPTY);
            assert_eq!(decide(&f), Decision::ReadBootloader, "{booted}");
            f.boot = Some(view(Some(false)));
            assert_eq!(decide(&f), Decision::Rebless, "no try: a committed boot");
            f.boot = Some(view(Some(true)));
            assert_eq!(decide(&f), Decision::RunChecks, "{booted}");
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), Decision::Rebless, "cannot tell a trial");
            let mut trial = view(Some(true));
            trial.tells_trials = true;
            f.boot = Some(trial);
            assert_eq!(decide(&f), Decision::CommitUndescribed(BootSays::Trial));
            f.boot = Some(view(Some(true)));
            f.checks = Some(Err("app".into()));
            assert_eq!(
                decide(&f),
                Decision::KeepWithoutFallback("app".into(), BootSays::CannotTell),
                "{booted}"
            );
        }
        // The state holds the booted slot committed: it describes the boot.
        let f = facts(None, &GOOD, &EMPTY);
        assert_eq!(decide(&f), Decision::Rebless, "a committed boot");
        // Written with nothing in flight: the operator's `rollback
        // --force` vouched for it (below). A stand-in (damaged) state is
        // judged as any undescribed boot.
        let mut f = facts(None, &INSTALLED, &EMPTY);
        f.state_damaged = true;
        assert_eq!(decide(&f), Decision::ReadBootloader, "a stand-in");
    }

    /// Found from outside: a `rollback --force` onto a slot nothing
    /// committed (a write killed half-way, then) was re-blessed by the
    /// next `health` without its checks, called good, and the next install
    /// overwrote the last good system. The operator's word makes it
    /// bootable, never proven: its checks judge it, on every bootloader.
    #[test]
    fn a_slot_a_forced_rollback_vouched_for_is_blessed_only_after_its_checks() {
        for (other, says) in [(&GOOD, view(Some(true))), (&EMPTY, view(None))] {
            let mut f = facts(None, &INSTALLED, other);
            assert_eq!(decide(&f), Decision::RunChecks, "{other}: never unchecked");
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), Decision::Rebless, "{other}: passed");
            f.checks = Some(Err("c: broken".into()));
            assert_eq!(decide(&f), Decision::ReadBootloader, "{other}");
            f.boot = Some(says);
            let failed = decide(&f);
            assert_ne!(failed, Decision::Rebless, "{other}: failed, never blessed");
            assert!(
                matches!(
                    failed,
                    Decision::RollBack(Failure::UndescribedChecks(_))
                        | Decision::KeepWithoutFallback(..)
                ),
                "{other}: {failed:?}"
            );
        }
    }

    /// Found from outside: a failed trial retired (marked bad, the other
    /// slot next), `state.json` deleted before the reboot, then `health`
    /// on that boot re-blessed the failed slot. The retirement stands
    /// whatever the state lost and whatever the checks would say now.
    #[test]
    fn a_retirement_whose_records_were_lost_is_finished_never_undone() {
        let retired = BootView {
            booted_good: false,
            booted_marked_bad: Some(true),
            other_next: true,
            booted_next: false,
            ..view(Some(true))
        };
        let finish = Decision::RollBack(Failure::Unrecorded {
            staged: false,
            late: false,
            left: false,
        });
        for damaged in [false, true] {
            let mut f = facts(None, &EMPTY, &EMPTY);
            f.state_damaged = damaged;
            f.boot = Some(retired);
            assert_eq!(decide(&f), finish, "damaged {damaged}");
            for checks in [Ok(()), Err("app".to_string())] {
                f.checks = Some(checks);
                assert_eq!(decide(&f), finish, "never judged again");
            }
            // No slot to go to (the other bad, or tried and fallen back
            // from): the only slot that boots is kept, as before.
            f.checks = Some(Err("app".into()));
            for other in [
                BootView {
                    other_good: false,
                    ..retired
                },
                BootView {
                    other_tried: Some(true),
                    ..retired
                },
            ] {
                f.boot = Some(other);
                assert!(
                    matches!(decide(&f), Decision::KeepWithoutFallback(..)),
                    "{:?}",
                    decide(&f)
                );
            }
            // Marked bad but itself next (no retirement's pair), or a
            // bootloader that cannot tell a mark from its counting: judged
            // by its checks as any try.
            f.checks = None;
            for not_retired in [
                BootView {
                    other_next: false,
                    booted_next: true,
                    ..retired
                },
                BootView {
                    booted_marked_bad: None,
                    ..retired
                },
            ] {
                f.boot = Some(not_retired);
                assert_eq!(decide(&f), Decision::RunChecks);
            }
        }
    }

    #[test]
    fn a_trial_the_damaged_state_does_not_describe_is_judged_by_its_checks() {
        for tried in [Some(true), None] {
            // The last good copy records the other slot committed.
            let mut f = facts(None, &EMPTY, &GOOD);
            f.state_damaged = true;
            f.boot = Some(view(tried));
            assert_eq!(decide(&f), Decision::RunChecks, "{tried:?}");
            f.checks = Some(Ok(()));
            assert_eq!(
                decide(&f),
                Decision::CommitUndescribed(BootSays::CannotTell),
                "{tried:?}"
            );
            f.checks = Some(Err("c: broken".into()));
            assert_eq!(
                decide(&f),
                Decision::RollBack(Failure::UndescribedChecks("c: broken".into())),
                "{tried:?}"
            );
        }
    }

    #[test]
    fn a_failed_undescribed_trial_is_kept_when_the_bootloader_offers_no_fallback() {
        let mut f = facts(None, &EMPTY, &GOOD);
        f.state_damaged = true;
        f.checks = Some(Err("c: broken".into()));
        let keep = Decision::KeepWithoutFallback("c: broken".into(), BootSays::CannotTell);
        // The other slot bad in the bootloader.
        f.boot = Some(BootView {
            other_good: false,
            ..view(Some(true))
        });
        assert_eq!(decide(&f), keep);
        // Bootable, but tried and never blessed: the bootloader fell back
        // from it.
        f.boot = Some(BootView {
            other_tried: Some(true),
            ..view(Some(true))
        });
        assert_eq!(decide(&f), keep);
        // Cannot tell whether it was tried: bootable is enough.
        f.boot = Some(BootView {
            other_tried: None,
            ..view(Some(true))
        });
        assert_eq!(
            decide(&f),
            Decision::RollBack(Failure::UndescribedChecks("c: broken".into()))
        );
    }

    /// Review 9, 01: on GRUB and U-Boot every boot is a try, and a slot
    /// never written may be flagged bootable. A fresh state (or a last
    /// good copy that does not hold the other slot committed) is no
    /// evidence that the other slot holds a system: a failing check keeps
    /// the booted slot, never rolls back into it.
    #[test]
    fn a_failed_undescribed_trial_never_rolls_back_into_a_slot_no_record_shows_committed() {
        for other in [&EMPTY, &INSTALLED, &SlotStatus::Installing, &BAD] {
            let mut f = facts(None, &EMPTY, other);
            f.state_damaged = true;
            f.boot = Some(view(Some(true)));
            assert_eq!(decide(&f), Decision::RunChecks, "{other}");
            f.checks = Some(Ok(()));
            assert_eq!(
                decide(&f),
                Decision::CommitUndescribed(BootSays::CannotTell),
                "{other}"
            );
            f.checks = Some(Err("c: broken".into()));
            assert_eq!(
                decide(&f),
                Decision::KeepWithoutFallback("c: broken".into(), BootSays::CannotTell),
                "{other}"
            );
        }
    }

    /// Only a bootloader that tells a trial's boot from a committed one's
    /// (EFI, systemd-boot) and says this one is a trial's credits the
    /// release with a trial: on GRUB and U-Boot (every boot a try), a
    /// custom bootloader or a read that failed, a pass starts no
    /// probation and a failure kept is the host's, not the release's.
    #[test]
    fn an_undescribed_boot_is_a_trial_of_its_release_only_when_the_bootloader_tells_one() {
        for (tells_trials, booted_tried, booted_good, says) in [
            (true, Some(true), true, BootSays::Trial),
            (true, None, true, BootSays::CannotTell),
            (true, Some(false), false, BootSays::CannotTell),
            (false, Some(true), true, BootSays::CannotTell),
            (false, None, true, BootSays::CannotTell),
            (false, Some(false), false, BootSays::CannotTell),
        ] {
            let at = format!("{tells_trials} {booted_tried:?} {booted_good}");
            let mut f = facts(None, &EMPTY, &EMPTY);
            f.state_damaged = true;
            f.boot = Some(BootView {
                tells_trials,
                booted_good,
                ..view(booted_tried)
            });
            assert_eq!(decide(&f), Decision::RunChecks, "{at}");
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), Decision::CommitUndescribed(says), "{at}");
            f.checks = Some(Err("c: broken".into()));
            assert_eq!(
                decide(&f),
                Decision::KeepWithoutFallback("c: broken".into(), says),
                "{at}"
            );
        }
        // A bootloader that tells says this boot is no trial's: re-blessed.
        let mut f = facts(None, &EMPTY, &EMPTY);
        f.state_damaged = true;
        f.boot = Some(BootView {
            tells_trials: true,
            ..view(Some(false))
        });
        assert_eq!(decide(&f), Decision::Rebless);
    }

    #[test]
    fn a_booted_slot_the_bootloader_holds_bad_is_judged_again_never_re_blessed() {
        // A retirement cut after its first write: on GRUB the slot is
        // bad and its TRY cleared.
        let mut f = facts(None, &EMPTY, &GOOD);
        f.state_damaged = true;
        f.boot = Some(BootView {
            booted_good: false,
            ..view(Some(false))
        });
        assert_eq!(decide(&f), Decision::RunChecks);
        f.checks = Some(Err("c: broken".into()));
        assert_eq!(
            decide(&f),
            Decision::RollBack(Failure::UndescribedChecks("c: broken".into()))
        );
    }

    #[test]
    fn a_damaged_state_re_blesses_when_no_trial_is_pending() {
        // The bootloader says the booted slot's boot was blessed.
        let mut f = facts(None, &EMPTY, &EMPTY);
        f.state_damaged = true;
        f.boot = Some(view(Some(false)));
        assert_eq!(decide(&f), Decision::Rebless);
        // The last good copy holds the booted slot committed: no trial;
        // the bootloader is asked only whether a late rollback's record
        // was lost (below).
        let mut f = facts(None, &GOOD, &GOOD);
        f.state_damaged = true;
        f.boot = Some(view(Some(true)));
        assert_eq!(decide(&f), Decision::Rebless);
        // A recorded rollback still finishes first.
        let mut f = facts(None, &BAD, &GOOD);
        f.state_damaged = true;
        assert_eq!(decide(&f), Decision::FinishRollback);
    }

    #[test]
    fn an_intact_state_holding_the_booted_slot_committed_never_runs_the_checks() {
        for other in [&EMPTY, &INSTALLED, &GOOD] {
            let mut f = facts(None, &GOOD, other);
            f.boot = Some(view(Some(true)));
            f.checks = Some(Err("c: broken".into()));
            assert_eq!(decide(&f), Decision::Rebless, "{other}");
        }
    }

    /// Found from outside (a random walk): `state.json` deleted while a
    /// release was staged, then a run on the old slot (`health`, a refused
    /// `mark-bad`, `update`) saved a fresh state before the reboot; on the
    /// trial `health` found an intact state with no trial and re-blessed
    /// it, its failing checks never run. An intact state that does not hold
    /// the booted slot committed describes no boot either: the try is
    /// judged by its checks, and rolled back where the state records the
    /// other slot committed and the bootloader holds it bootable.
    #[test]
    fn an_intact_state_that_does_not_hold_the_booted_slot_committed_judges_a_try_by_its_checks() {
        for booted in [&EMPTY, &SlotStatus::Installing] {
            let mut f = facts(None, booted, &GOOD);
            assert_eq!(decide(&f), Decision::ReadBootloader, "{booted}");
            f.boot = Some(view(Some(true)));
            assert_eq!(decide(&f), Decision::RunChecks, "{booted}");
            f.checks = Some(Err("c: broken".into()));
            assert_eq!(
                decide(&f),
                Decision::RollBack(Failure::UndescribedChecks("c: broken".into())),
                "{booted}"
            );
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), Decision::Rebless, "{booted}: cannot tell");
        }
    }

    #[test]
    fn an_intact_state_holding_the_booted_slot_committed_asks_the_bootloader_only_with_a_committed_fallback(
    ) {
        for (booted, other, asks) in [
            (&GOOD, &GOOD, true),
            (&GOOD, &EMPTY, false),
            (&GOOD, &INSTALLED, false),
            (&GOOD, &BAD, false),
            // A boot the state does not describe: always asked (the
            // operator's vouched `rollback --force` runs its checks first,
            // below).
            (&EMPTY, &GOOD, true),
        ] {
            let want = match asks {
                true => Decision::ReadBootloader,
                false => Decision::Rebless,
            };
            assert_eq!(
                decide(&facts(None, booted, other)),
                want,
                "{booted}/{other}"
            );
        }
    }

    /// Defect class of row 3 after a commit: `rollback` of the committed
    /// release (or its failed probation) wrote the bootloader (booted slot
    /// bad, the other next), the state save failed, and the next `health`
    /// re-blessed the slot, undoing the rollback. A committed slot the
    /// bootloader holds retired is rolled back late, never re-blessed;
    /// what the bootloader says of an ordinary committed boot is not taken
    /// for that.
    #[test]
    fn a_committed_slot_the_bootloader_holds_retired_is_rolled_back_late_never_re_blessed() {
        let lost = Decision::RollBack(Failure::Unrecorded {
            staged: true,
            late: true,
            left: false,
        });
        // As a committed slot's mark is read (`committed_marked_bad`): on
        // EFI and systemd-boot only that one tells (found from outside).
        let committed_retired = BootView {
            booted_committed_marked_bad: Some(true),
            ..retired()
        };
        let efi_retired = BootView {
            booted_marked_bad: None,
            ..committed_retired
        };
        for (damaged, boot) in [
            (false, committed_retired),
            (true, committed_retired),
            (false, efi_retired),
        ] {
            let mut f = facts(None, &GOOD, &GOOD);
            f.state_damaged = damaged;
            f.boot = Some(boot);
            assert_eq!(decide(&f), lost, "damaged {damaged}");
            // Passing checks change nothing: they are not asked.
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), lost, "damaged {damaged}, checks");
        }
        for (what, boot) in [
            ("a committed boot", view(Some(false))),
            ("grub/u-boot counting a try", on_trial()),
            (
                "tries spent, other next",
                BootView {
                    booted_good: false,
                    other_next: true,
                    ..on_trial()
                },
            ),
            (
                "cannot tell a mark",
                BootView {
                    booted_committed_marked_bad: None,
                    ..committed_retired
                },
            ),
            (
                "a trial's mark only",
                BootView {
                    booted_committed_marked_bad: Some(false),
                    ..retired()
                },
            ),
            (
                "marked bad, other not next",
                BootView {
                    other_next: false,
                    ..committed_retired
                },
            ),
        ] {
            let mut f = facts(None, &GOOD, &GOOD);
            f.boot = Some(boot);
            assert_eq!(decide(&f), Decision::Rebless, "{what}");
        }
    }

    /// Found from outside: the failed save's error advised a reboot; after
    /// it the host ran A, B (2.0, committed, newer) marked bad in the
    /// bootloader and recorded good, `health` re-blessed A and the next
    /// `update` installed 2.0 again. The other slot retired in the
    /// bootloader is recorded retired when leaving it rejects its release;
    /// otherwise (an older release there, a slot whose write was being
    /// armed) the boot is an ordinary one.
    #[test]
    fn a_rejection_whose_reboot_came_before_its_record_is_recorded_not_forgotten() {
        let left_retired = BootView {
            other_good: false,
            other_committed_marked_bad: Some(true),
            ..view(Some(false))
        };
        let mut f = facts(None, &GOOD, &GOOD);
        f.other_rejectable = true;
        assert_eq!(decide(&f), Decision::ReadBootloader);
        f.boot = Some(left_retired);
        assert_eq!(
            decide(&f),
            Decision::RollBack(Failure::Unrecorded {
                staged: true,
                late: true,
                left: true,
            })
        );
        for (what, rejectable, boot) in [
            ("an older release left", false, left_retired),
            (
                "cannot tell a mark",
                true,
                BootView {
                    other_committed_marked_bad: None,
                    ..left_retired
                },
            ),
            (
                "the other slot next",
                true,
                BootView {
                    booted_next: false,
                    ..left_retired
                },
            ),
            ("an ordinary boot", true, view(Some(false))),
        ] {
            f.other_rejectable = rejectable;
            f.boot = Some(boot);
            assert_eq!(decide(&f), Decision::Rebless, "{what}");
        }
    }

    #[test]
    fn a_damaged_state_that_records_the_trial_is_judged_by_its_record() {
        let t = transaction(SlotName::B, Phase::Staged, Some("boot-1"));
        let mut f = facts(Some(&t), &INSTALLED, &GOOD);
        f.state_damaged = true;
        assert_eq!(decide(&f), Decision::ReadBootloader);
        f.boot = Some(on_trial());
        assert_eq!(decide(&f), Decision::RunChecks);
        f.checks = Some(Err("x".into()));
        assert_eq!(decide(&f), Decision::RollBack(Failure::Checks("x".into())));
    }

    /// What the bootloader says on an ordinary trial's boot: the booted
    /// slot tried, not marked bad.
    fn on_trial() -> BootView {
        view(Some(true))
    }

    /// What the bootloader says once a retirement of the booted trial
    /// wrote it: marked bad, the other slot good and next.
    fn retired() -> BootView {
        BootView {
            booted_good: false,
            booted_marked_bad: Some(true),
            other_next: true,
            booted_next: false,
            ..view(Some(true))
        }
    }

    /// Defect found from outside: `mark-bad B` of the booted trial wrote
    /// the bootloader, its state save failed (a full state file system),
    /// and the next `health` ran the checks and committed the release the
    /// operator rejected. A trial the bootloader holds retired is retired
    /// in the record too, whatever the checks would say, staged or not.
    #[test]
    fn a_booted_trial_the_bootloader_holds_retired_is_retired_never_committed() {
        for (phase, booted, staged) in [
            (Phase::Staged, &INSTALLED, true),
            (Phase::Writing, &SlotStatus::Installing, false),
        ] {
            let t = transaction(SlotName::B, phase, Some("boot-1"));
            let mut f = facts(Some(&t), booted, &GOOD);
            f.boot = Some(retired());
            let retire = Decision::RollBack(Failure::Unrecorded {
                staged,
                late: false,
                left: false,
            });
            assert_eq!(decide(&f), retire, "{phase:?}: no checks, no bytes read");
            f.trial_intact = Some(true);
            f.checks = Some(Ok(()));
            assert_eq!(
                decide(&f),
                retire,
                "{phase:?}: passing checks commit nothing"
            );
            // The same with a damaged state that still records the trial.
            f.state_damaged = true;
            assert_eq!(decide(&f), retire, "{phase:?}: damaged");
        }
    }

    /// What a trial's boot may look like mid-trial on each bootloader is
    /// never taken for a retirement: only a mark bad the bootloader tells
    /// from its own counting, with the other slot next, is one.
    #[test]
    fn an_ordinary_trial_is_never_taken_for_a_lost_retirement() {
        let t = transaction(SlotName::B, Phase::Staged, Some("boot-1"));
        for (what, boot) in [
            // GRUB classic: B_TRY=1 (used up), A next; B_OK=1.
            (
                "grub, try used up",
                BootView {
                    other_next: true,
                    ..on_trial()
                },
            ),
            // U-Boot, tries 1: BOOT_B_LEFT=0 (state bad), A next, B still
            // in BOOT_ORDER.
            (
                "u-boot, last attempt taken",
                BootView {
                    booted_good: false,
                    other_next: true,
                    ..on_trial()
                },
            ),
            // EFI: the trial's entry out of BootOrder, A first; systemd-boot
            // at `+0-1`; a custom script saying bad: cannot tell.
            (
                "efi, systemd-boot, custom",
                BootView {
                    booted_good: false,
                    booted_marked_bad: None,
                    other_next: true,
                    ..on_trial()
                },
            ),
            // Marked bad but the bootloader does not boot the other slot
            // next (both bad: GRUB boots the first of ORDER blindly).
            (
                "marked bad, other not next",
                BootView {
                    other_next: false,
                    ..retired()
                },
            ),
            // A read that failed.
            (
                "unreadable",
                BootView {
                    booted_tried: None,
                    booted_good: false,
                    other_good: false,
                    other_tried: None,
                    tells_trials: false,
                    booted_marked_bad: None,
                    other_next: false,
                    other_committed_marked_bad: None,
                    booted_committed_marked_bad: None,
                    booted_next: false,
                },
            ),
        ] {
            let mut f = facts(Some(&t), &INSTALLED, &GOOD);
            f.boot = Some(boot);
            assert!(!boot.booted_retired(), "{what}");
            assert_eq!(decide(&f), Decision::RunChecks, "{what}");
            f.checks = Some(Ok(()));
            assert_eq!(decide(&f), Decision::Commit, "{what}");
        }
    }

    /// The bootloader's view decides only on the trial's own boot: the
    /// old slot after a staged trial, an interrupted write, staged on this
    /// boot are judged by the record as before.
    #[test]
    fn a_boot_of_the_old_slot_is_judged_by_the_record_alone() {
        for (phase, boot_id, decision) in [
            (Phase::Staged, Some("boot-1"), Decision::TrialNeverBooted),
            (Phase::Staged, Some("boot-2"), Decision::AwaitingReboot),
            (Phase::Writing, None, Decision::InterruptedWrite),
        ] {
            let t = transaction(SlotName::A, phase, boot_id);
            let f = facts(Some(&t), &GOOD, &INSTALLED);
            assert_eq!(decide(&f), decision, "{phase:?} {boot_id:?}");
        }
    }

    const GOOD: SlotStatus = SlotStatus::Good;
    const INSTALLED: SlotStatus = SlotStatus::Installed;
    const BAD: SlotStatus = SlotStatus::Bad;
    const EMPTY: SlotStatus = SlotStatus::Empty;

    #[test]
    fn a_staged_trial_runs_its_checks_then_commits_or_rolls_back() {
        let t = transaction(SlotName::B, Phase::Staged, Some("boot-1"));
        let mut f = facts(Some(&t), &INSTALLED, &GOOD);
        assert_eq!(decide(&f), Decision::ReadBootloader, "was it retired?");
        f.boot = Some(on_trial());
        assert_eq!(
            decide(&f),
            Decision::RunChecks,
            "no bytes check when staged"
        );
        f.checks = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Commit);
        f.checks = Some(Err("10-db: down".into()));
        assert_eq!(
            decide(&f),
            Decision::RollBack(Failure::Checks("10-db: down".into()))
        );
    }

    #[test]
    fn a_trial_that_never_reached_staged_is_judged_by_its_bytes_first() {
        let t = transaction(SlotName::B, Phase::Writing, None);
        let mut f = facts(Some(&t), &SlotStatus::Installing, &GOOD);
        f.boot = Some(on_trial());
        assert_eq!(decide(&f), Decision::VerifyTrialBytes);
        f.trial_intact = Some(false);
        assert_eq!(decide(&f), Decision::RollBack(Failure::Corrupt));
        f.trial_intact = Some(true);
        assert_eq!(decide(&f), Decision::RunChecks, "intact: an ordinary trial");
        f.checks = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Commit);
        f.checks = Some(Err("x".into()));
        assert_eq!(decide(&f), Decision::RollBack(Failure::Checks("x".into())));
    }

    #[test]
    fn the_old_slot_after_a_staged_trial_on_another_boot_means_it_never_came_up() {
        let t = transaction(SlotName::A, Phase::Staged, Some("boot-1"));
        let f = facts(Some(&t), &GOOD, &INSTALLED);
        assert_eq!(decide(&f), Decision::TrialNeverBooted);
        // A staged record without a boot id (an older state) is never
        // taken for this boot.
        let t = transaction(SlotName::A, Phase::Staged, None);
        let mut f = facts(Some(&t), &GOOD, &INSTALLED);
        assert_eq!(decide(&f), Decision::TrialNeverBooted);
        f.boot_id = None;
        assert_eq!(decide(&f), Decision::TrialNeverBooted);
    }

    #[test]
    fn staged_on_this_very_boot_awaits_the_reboot() {
        let t = transaction(SlotName::A, Phase::Staged, Some("boot-2"));
        let f = facts(Some(&t), &GOOD, &INSTALLED);
        assert_eq!(decide(&f), Decision::AwaitingReboot);
    }

    #[test]
    fn an_install_cut_before_staging_is_redone_and_the_running_slot_blessed() {
        let t = transaction(SlotName::A, Phase::Writing, None);
        let f = facts(Some(&t), &GOOD, &SlotStatus::Installing);
        assert_eq!(decide(&f), Decision::InterruptedWrite);
    }

    #[test]
    fn no_trial_re_blesses_the_booted_slot() {
        for (booted, other) in [
            (&GOOD, &GOOD),
            // (Installed with nothing in flight, a forced rollback's, is
            // judged by its checks first: above.)
            (&EMPTY, &EMPTY),
            (&GOOD, &BAD),
            // Bad, but nothing better to go to: keep running.
            (&BAD, &BAD),
            (&BAD, &EMPTY),
            (&BAD, &SlotStatus::Installing),
            (&BAD, &SlotStatus::Other("probation".into())),
        ] {
            let mut f = facts(None, booted, other);
            // An ordinary boot, as the bootloader reads it.
            f.boot = Some(view(Some(false)));
            assert_eq!(decide(&f), Decision::Rebless, "{booted} / {other}");
        }
    }

    #[test]
    fn a_recorded_rollback_whose_reboot_never_happened_is_finished() {
        for other in [&GOOD, &INSTALLED] {
            assert_eq!(
                decide(&facts(None, &BAD, other)),
                Decision::FinishRollback,
                "{other}"
            );
        }
    }

    #[test]
    fn each_failure_names_its_kind_outcome_and_reason() {
        let t = transaction(SlotName::B, Phase::Staged, None);
        let checks = Failure::Checks("10-db: down".into());
        assert_eq!(
            (checks.kind(), checks.outcome()),
            (Kind::Health, Outcome::RolledBack)
        );
        assert_eq!(checks.reason(&t), "health checks failed: 10-db: down");
        assert_eq!(
            (Failure::Corrupt.kind(), Failure::Corrupt.outcome()),
            (Kind::Health, Outcome::RolledBack)
        );
        let never = Failure::NeverBooted;
        assert_eq!(
            (never.kind(), never.outcome()),
            (Kind::TrialNeverBooted, Outcome::TrialNeverBooted)
        );
        assert_eq!(
            never.reason(&t),
            "slot B never came up with 2.0; the bootloader fell back to A"
        );
        assert!(never.fell_back());
        for fell_back in [false, true] {
            let late = Failure::Late {
                what: "3 failures".into(),
                fell_back,
            };
            assert_eq!(
                (late.kind(), late.outcome(), late.fell_back()),
                (Kind::Health, Outcome::RolledBackLate, fell_back)
            );
            assert_eq!(late.reason(&t), "failed on probation: 3 failures");
            assert!(late.holds_release());
        }
        assert!(!checks.fell_back());
        let undescribed = Failure::UndescribedChecks("c: broken".into());
        assert_eq!(
            (
                undescribed.kind(),
                undescribed.outcome(),
                undescribed.fell_back(),
                undescribed.hold()
            ),
            (Kind::Health, Outcome::RolledBack, false, Hold::Failed)
        );
        assert!(!undescribed.holds_release(), "no record says what it holds");
        for (staged, late, left, outcome) in [
            (true, false, false, Outcome::RolledBack),
            (false, false, false, Outcome::RolledBack),
            (true, true, false, Outcome::RolledBackLate),
            (true, true, true, Outcome::RolledBackLate),
        ] {
            let lost = Failure::Unrecorded { staged, late, left };
            assert_eq!(
                (lost.kind(), lost.outcome(), lost.fell_back(), lost.hold()),
                (Kind::Health, outcome, left, Hold::Failed)
            );
            assert_eq!(lost.holds_release(), staged, "verified bytes only");
            assert_eq!(
                lost.reason(&t),
                "slot B was retired in the bootloader (marked bad, slot A boots next) by a run whose record was never saved; the retirement is finished"
            );
        }
        assert_eq!(
            undescribed.reason(&t),
            "health checks failed on a trial state.json did not describe: c: broken"
        );
        let rejected = Failure::Rejected(super::super::recovery::Manual::Rollback);
        assert_eq!(
            (rejected.kind(), rejected.outcome(), rejected.fell_back()),
            (Kind::Health, Outcome::RolledBack, false)
        );
        assert_eq!(
            rejected.reason(&t),
            "rejected by hand during its trial (`abupdate rollback`)"
        );
        assert!(rejected.holds_release());
        assert_eq!(rejected.hold(), Hold::Failed, "binds the operator too");
        assert_eq!(checks.hold(), Hold::Failed);
        // Rejected by hand after its commit: a late rollback, held from
        // the timer only; already left when the other slot runs.
        use super::super::recovery::Manual;
        for (op, left) in [
            (Manual::Rollback, false),
            (Manual::MarkBad(SlotName::B), true),
        ] {
            let after = Failure::RejectedCommitted { op, left };
            assert_eq!(
                (after.kind(), after.outcome(), after.fell_back()),
                (Kind::Health, Outcome::RolledBackLate, left)
            );
            assert_eq!(after.hold(), Hold::Rejected);
            assert_eq!(
                after.reason(&t),
                format!("rejected by hand after its commit (`abupdate {op}`)")
            );
            assert!(after.holds_release());
        }
    }
}
