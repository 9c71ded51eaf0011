//! The update agent: the flows that tie trust, transport, slots, the
//! bootloader and the state together (`check`, `install`, `health`, the
//! recovery verbs, `status`).
//!
//! Invariants kept here, in order of the install flow:
//! 1. nothing is written before the manifest is verified and applies;
//! 2. the target is never the booted slot, nor mounted, nor the root device;
//! 3. the target is marked bad in the bootloader right before its first
//!    byte is written, and not earlier (a failure until then, such as a
//!    server answering 503, leaves its flag and record as they were), and
//!    activated only after its read-back hash matched;
//! 4. the state records a transaction before the bootloader is changed for
//!    it, so every boot can tell a trial from a fallback from an
//!    interrupted write.

mod check;
mod host;
mod install;
mod recovery;
mod report;
mod status;
mod update;
mod verdict;

pub use check::{check, fetch_verified, CheckOptions, CheckOutcome, Verified};
pub use host::Host;
pub use install::{install, InstallOptions, Installed};
pub use recovery::{mark, rollback};
pub use report::{publish, record_failure};
pub use status::{status, SlotStatus, Status};
pub use update::{update, UpdateOptions, UpdateOutcome};
pub use verdict::{health, Verdict};

/// Log one line to stderr (journald adds timestamps); URLs in it lose their
/// user info.
pub fn log(msg: &str) {
    eprintln!("abupdate: {}", crate::fetch::redact(msg));
}
