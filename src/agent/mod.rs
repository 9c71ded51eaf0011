//! The update agent: the flows that tie trust, transport, slots, the
//! bootloader and the state together. One file per flow:
//!
//! | file | what |
//! | --- | --- |
//! | `host.rs` | [`Host`]: the config, state dir and bootloader, and the host's facts (booted slot, boot id, position), each read once per command |
//! | `check.rs` | `check`: the manifest (chosen from the release channel when one is configured, [`crate::channel`]) through the trust gate ([`crate::trust::gate`]) and one judgement of it ([`crate::manifest::evaluate`]) |
//! | `install.rs` | `install` and the write of `update`: targets, payloads or deltas, staging |
//! | `transition.rs` | every bootloader change in order with the state: the few legal sequences (invariants 3 and 4) |
//! | `verdict.rs` | `health`: the boot-time verdict, a pure decision over facts and the runner that applies it |
//! | `probation.rs` | the watch after a commit (`[health] probation`): a pure decision over facts and its runner; a late rollback |
//! | `recovery.rs` | retiring a failed trial, finishing a rollback, re-blessing, `mark-good`/`mark-bad`, `rollback`, the reboot |
//! | `status.rs` | `status` |
//! | `report.rs` | the textfile and the webhook after each outcome; the failure counters and the backoff |
//! | `update.rs` | the timer's `update`: backoff, jitter, then check and install |
//!
//! Invariants kept here, in order of the install flow:
//! 1. nothing is written before the manifest is verified (a
//!    [`crate::trust::gate::Verified`]) and applies (`check.rs`);
//! 2. the target is never the booted slot, nor mounted, nor the root device
//!    (`install.rs`, with the checks of [`crate::slot`]);
//! 3. the target is marked bad in the bootloader right before its first
//!    byte is written, and not earlier (a failure until then, such as a
//!    server answering 503, leaves its flag and record as they were), and
//!    activated only after its read-back hash matched (`transition.rs`);
//! 4. the state records a transaction before the bootloader is changed for
//!    it, so every boot can tell a trial from a fallback from an
//!    interrupted write (`transition.rs`, judged in `verdict.rs`).

mod check;
mod host;
mod install;
pub mod probation;
mod recovery;
mod report;
mod status;
mod transition;
mod update;
mod verdict;

pub use crate::trust::gate::Verified;
pub use check::{check, CheckOptions, CheckOutcome, NoUpdate};
pub use host::{Host, Purpose};
pub use install::{install, InstallOptions, Installed};
pub use recovery::{judge, mark, rollback, Manual, ManualDone, ManualFacts, ManualPlan};
pub use report::{publish, record_failure};
pub use status::{status, BackoffDelays, OwedAsk, OwedReboot, SlotView, Status};
pub use update::{update, UpdateOptions, UpdateOutcome};
pub use verdict::{decide, health, Decision, Facts, Failure, Verdict};

use crate::slot::SlotName;
use crate::state::SlotStatus;
use std::fmt;

/// Log one line to stderr (journald adds timestamps); URLs in it lose their
/// user info.
pub fn log(msg: &str) {
    crate::say!(
        "abupdate: {}",
        crate::error::one_line(&crate::fetch::redact(msg))
    );
}

/// What a flow refuses to do in this host's present state (kind
/// `refused`); each says what to do instead.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An install while the booted slot is still on trial.
    TrialPending {
        /// The booted slot, on trial.
        slot: SlotName,
        /// The release on trial.
        version: String,
    },
    /// An install while the booted release is on probation: the old slot
    /// is its fallback.
    OnProbation {
        /// The slot on probation.
        slot: SlotName,
        /// The release on probation.
        version: String,
        /// When the probation ends (Unix time).
        until: i64,
    },
    /// An install from a booted slot the bootloader does not hold good.
    BootedNotGood {
        /// The booted slot.
        slot: SlotName,
    },
    /// An install from a booted slot recorded bad: a rollback from it
    /// (`rollback --no-reboot`, a failed trial or probation) waits for its
    /// reboot.
    BootedRolledBack {
        /// The booted slot.
        slot: SlotName,
    },
    /// `mark-good` (without `--force`) of the booted slot recorded bad with
    /// its release on the failed list: it would undo the rollback from it
    /// unseen.
    RolledBackFrom {
        /// The booted slot.
        slot: SlotName,
    },
    /// A manual verb (even forced) that would make bootable a slot the
    /// records show empty, being written, or naming no release written
    /// whole there ([`recovery::judge`]).
    NoWholeImage {
        /// The command.
        op: Manual,
        /// The slot it would make bootable.
        slot: SlotName,
        /// What the state says it holds.
        status: SlotStatus,
        /// The release being written there, if a write is in flight.
        writing: Option<String>,
    },
    /// A manual verb (without `--force`) that would make bootable a slot
    /// whose image no longer reads back as the digest its record keeps.
    Damaged {
        /// The command.
        op: Manual,
        /// The slot read back.
        slot: SlotName,
        /// The first image class that did not match.
        class: String,
        /// Its device.
        device: std::path::PathBuf,
        /// The release its record names.
        version: Option<String>,
    },
    /// An install from a booted slot whose boot the bootloader counts as a
    /// try no one has blessed, which the records do not hold committed: it
    /// would be recorded the fallback of the new release unjudged.
    BootedUnjudged {
        /// The booted slot.
        slot: SlotName,
    },
    /// An install from a booted slot kept running after its checks failed
    /// with no slot known to go back to ([`crate::state::SlotStatus::Failing`]):
    /// the slot it would write may hold the last good system.
    BootedFailing {
        /// The booted slot.
        slot: SlotName,
    },
    /// A manual verb (`mark-good`, `mark-bad`, `rollback`) that would
    /// leave no slot holding a proven good system bootable
    /// ([`recovery::judge`]).
    NoGoodSlot {
        /// The command.
        op: Manual,
        /// The slot that is not a proven good system: the one to mark
        /// good or roll back to, or the one left after `mark-bad`.
        slot: SlotName,
        /// What the state says it holds.
        status: SlotStatus,
        /// It holds a release staged and never tried.
        staged: bool,
    },
    /// `install` from the configured URL, whose server said the manifest
    /// did not change since it last did not apply.
    Unchanged {
        /// The manifest's location.
        location: String,
    },
    /// `install` of a release whose wave has not reached this host.
    WaitingForWave {
        /// Which release, and where the wave stands.
        reason: String,
    },
    /// `install` from a source that offers nothing to install for another
    /// reason (the channel halted or listing nothing newer, the booted
    /// release withdrawn): that reason.
    NothingToInstall {
        /// Why, as `check` says it.
        reason: String,
    },
    /// `install` from the release channel found a staged trial the channel
    /// no longer offers: it was disarmed, and nothing was installed.
    Disarmed {
        /// The line that says so (the release, its slot, why).
        line: String,
    },
    /// `mark-bad` would leave `slot` to boot, or `rollback` would go to
    /// it, which the records hold good but the bootloader holds bad: the
    /// records are behind the bootloader.
    HeldBadInBootloader {
        /// The verb.
        op: Manual,
        /// The slot it would leave.
        slot: SlotName,
    },
    /// A forced `mark-bad` would leave no slot the bootloader boots: the
    /// slot it leaves is held bad there too.
    NoBootableSlot {
        /// The verb.
        op: Manual,
        /// The slot it would leave, held bad.
        slot: SlotName,
    },
    /// `mark-bad` would leave only the booted slot, whose boot the
    /// bootloader counts as a try no one has blessed and the records do
    /// not hold committed: nothing judged it.
    KeeperUnjudged {
        /// The verb.
        op: Manual,
        /// The booted slot it would leave as the only one.
        slot: SlotName,
    },
    /// The booted version is unknown or not a dotted-number version
    /// ([`check::booted_release`]): no release can be judged newer than
    /// it, so the timer's runs (and any run through a release channel)
    /// refuse rather than guess it below every release.
    BootedVersionUnknown {
        /// The configured os-release file.
        os_release: std::path::PathBuf,
        /// The version read (os-release, else the state), if any, as
        /// [`crate::text::show`] writes it.
        found: Option<String>,
        /// Whether the release channel was to place the host (else a
        /// manifest's version was to be compared with the booted one).
        through_channel: bool,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TrialPending { slot, version } => write!(
                f,
                "slot {slot} is on trial with {version}; run `abupdate health` (or mark-good) before installing"
            ),
            Refusal::OnProbation {
                slot,
                version,
                until,
            } => write!(
                f,
                "{version} in slot {slot} is on probation until {}; the other slot is its fallback and is not written before then",
                crate::timefmt::format_rfc3339(*until)
            ),
            Refusal::BootedNotGood { slot } => write!(
                f,
                "the booted slot {slot} is not marked good in the bootloader; run `abupdate mark-good` first"
            ),
            Refusal::BootedRolledBack { slot } => write!(
                f,
                "the booted slot {slot} was rolled back from (marked bad, slot {} boots next) and \
                 the reboot into slot {} has not happened: reboot to finish the rollback \
                 (`abupdate mark-good {slot} --force` cancels it instead); nothing was installed",
                slot.other(),
                slot.other()
            ),
            Refusal::RolledBackFrom { slot } => write!(
                f,
                "slot {slot} was rolled back from (its release rejected or failed, on the failed \
                 list; slot {} boots next) and the reboot has not happened: reboot to finish the \
                 rollback, or `abupdate mark-good {slot} --force` to cancel it (slot {slot} boots \
                 next again, its release no longer held)",
                slot.other()
            ),
            Refusal::NoWholeImage {
                op,
                slot,
                status,
                writing,
            } => {
                let what = match (writing, status) {
                    (Some(v), _) => format!(
                        "slot {slot} is being written with {v} (cut before it was staged)"
                    ),
                    (None, SlotStatus::Empty) => format!(
                        "slot {slot} is empty in the state and holds nothing (its start reads as zeros)"
                    ),
                    (None, _) => format!(
                        "slot {slot} is {status} in the state and names no release written whole there"
                    ),
                };
                let way = match writing {
                    Some(_) => format!(
                        "`abupdate update` or `abupdate install` finishes the write, and its trial's health commits it; `abupdate mark-bad {slot}` cancels it"
                    ),
                    None => "`abupdate install` writes a release into it, and its trial's health commits it".to_string(),
                };
                match op {
                    Manual::MarkGood(_) => write!(
                        f,
                        "{what}: no image to boot, --force or not; refusing to mark it good ({way})"
                    ),
                    Manual::MarkBad(target) => write!(
                        f,
                        "marking slot {target} bad would leave only slot {slot} to boot: {what}, no image to boot, --force or not ({way})"
                    ),
                    Manual::Rollback => write!(
                        f,
                        "{what}: no image to boot, --force or not; refusing to roll back to it ({way})"
                    ),
                }
            }
            Refusal::Damaged {
                op,
                slot,
                class,
                device,
                version,
            } => write!(
                f,
                "`abupdate {op}` would leave slot {slot} to boot, but its {class} image ({}) no \
                 longer reads back as the SHA-256 its record keeps for {} (changed since it was \
                 written: damaged, or mounted read-write): refused, nothing changed (`abupdate \
                 install` writes a release into slot {slot} again; `--force` boots it as it is)",
                crate::text::show_path(device),
                version.as_deref().unwrap_or("its release")
            ),
            Refusal::BootedUnjudged { slot } => write!(
                f,
                "the booted slot {slot} runs on a try no one has blessed and state.json does not \
                 record it committed (a state deleted or damaged since its staging): `abupdate \
                 health` judges it first; nothing was installed"
            ),
            Refusal::BootedFailing { slot } => write!(
                f,
                "the booted slot {slot} failed its health checks and runs only because no other \
                 slot was known to boot: installing would overwrite slot {}, which may hold the \
                 last good system (`abupdate health` judges {slot} again at its next boot, \
                 `abupdate mark-good` vouches for it, `abupdate rollback --force` boots {}); \
                 nothing was installed",
                slot.other(),
                slot.other()
            ),
            Refusal::NoGoodSlot {
                op,
                slot,
                status,
                staged,
            } => {
                let what = match staged {
                    true => format!("slot {slot} holds a release staged and never tried"),
                    false => format!("slot {slot} is {status} in the state"),
                };
                match op {
                    Manual::MarkGood(_) if *staged => write!(
                        f,
                        "{what}, not a proven good system (committed after a boot); refusing to mark it good, --force or not (boot it: its trial's health commits it; `abupdate mark-bad {slot}` cancels it)"
                    ),
                    Manual::MarkGood(_) => write!(
                        f,
                        "{what}, not a proven good system (committed after a boot); refusing to mark it good (boot it: its trial's health commits it; or use --force)"
                    ),
                    Manual::MarkBad(target) => write!(
                        f,
                        "marking slot {target} bad would leave no good slot to boot: {what}, not a proven good system (use --force)"
                    ),
                    Manual::Rollback if *staged => write!(
                        f,
                        "{what}, not a proven good system; refusing to roll back to it (`abupdate mark-bad {slot}` cancels the staged release; or use --force)"
                    ),
                    Manual::Rollback => write!(
                        f,
                        "{what}, not a proven good system; refusing to roll back to it (use --force)"
                    ),
                }
            }
            Refusal::HeldBadInBootloader {
                op: Manual::Rollback,
                slot,
            } => write!(
                f,
                "`abupdate rollback` would boot slot {slot}, which the bootloader holds bad and \
                 state.json does not record so (an install or a verb cut before its save, or a \
                 state deleted or damaged since): it may not hold the release its record names \
                 (use --force if it does)"
            ),
            Refusal::HeldBadInBootloader { op, slot } => write!(
                f,
                "`abupdate {op}` would leave no bootable slot: the bootloader holds slot {slot} bad, \
                 which state.json does not record (a verb cut before its save, or a state deleted \
                 since); `abupdate health` finishes what was cut (or use --force)"
            ),
            Refusal::NoBootableSlot { op, slot } => write!(
                f,
                "`abupdate {op} --force` would leave no slot the bootloader boots: it holds slot \
                 {slot} bad too; if slot {slot} holds a good system, `abupdate mark-good {slot} \
                 --force` first"
            ),
            Refusal::KeeperUnjudged { op, slot } => write!(
                f,
                "`abupdate {op}` would leave only slot {slot}, which runs on a try no one has \
                 blessed and state.json does not record committed (a state deleted or damaged \
                 since its staging); `abupdate health` judges it first (or use --force)"
            ),
            Refusal::Unchanged { location } => write!(
                f,
                "{location}: release manifest unchanged since the last check"
            ),
            Refusal::WaitingForWave { reason } => f.write_str(reason),
            Refusal::NothingToInstall { reason } => write!(f, "nothing to install: {reason}"),
            Refusal::Disarmed { line } => {
                write!(f, "{line}; nothing installed (run it again to install what the channel offers)")
            }
            Refusal::BootedVersionUnknown {
                os_release,
                found,
                through_channel,
            } => {
                let p = os_release.display();
                match found {
                    Some(v) => write!(f, "the booted version \"{v}\" (from {p}, else the state) is not a dotted-number version"),
                    None => write!(f, "{p} states no IMAGE_VERSION or VERSION_ID and the state records no booted version"),
                }?;
                match through_channel {
                    true => f.write_str(": the release channel cannot place this host"),
                    false => f.write_str(": no release can be judged newer than it"),
                }?;
                f.write_str("; fix it, or install a release explicitly")
            }
        }
    }
}

impl std::error::Error for Refusal {}
