//! Bootloader backends behind one small trait.
//!
//! Invariant: every change a backend makes is one atomic write of the
//! bootloader's environment (grubenv, U-Boot env), or a sequence of atomic
//! writes ordered so that each intermediate state is one of the two
//! (EFI variables, systemd-boot entry renames), so a power cut at any
//! instant leaves an environment the real bootloader reads and that names
//! a good slot first.

use crate::slot::SlotName;
use std::fmt;

pub mod custom;
pub mod efi;
pub mod efivar;
pub mod grub;
pub mod grubenv;
pub mod systemd_boot;
pub mod uboot;
pub mod ubootenv;

/// Whether the bootloader may boot a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootState {
    Good,
    Bad,
}

impl fmt::Display for BootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootState::Good => "good",
            BootState::Bad => "bad",
        })
    }
}

/// Errors of the bootloader layer; the message names the file or script.
#[derive(Debug)]
pub enum BootError {
    Io {
        path: String,
        source: std::io::Error,
    },
    Format {
        path: String,
        reason: String,
    },
    Script {
        script: String,
        verb: String,
        reason: String,
    },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Io { path, source } => write!(f, "{path}: {source}"),
            BootError::Format { path, reason } => write!(f, "{path}: {reason}"),
            BootError::Script {
                script,
                verb,
                reason,
            } => {
                write!(f, "boot backend {script} {verb}: {reason}")
            }
        }
    }
}

impl std::error::Error for BootError {}

/// What abupdate needs from a bootloader. Implementations keep RAUC's
/// variable contracts so boards prepared for RAUC work unchanged.
pub trait Bootloader {
    /// The slot the bootloader will try first on the next boot.
    fn primary(&self) -> Result<Option<SlotName>, BootError>;
    /// Whether the bootloader considers `slot` bootable.
    fn state(&self, slot: SlotName) -> Result<BootState, BootError>;
    /// Mark `slot` good (re-bless: reset its tries) or bad (never boot it).
    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError>;
    /// Make `slot` the one booted next, as a trial with a fresh try budget,
    /// in one write of the environment.
    fn activate(&self, slot: SlotName) -> Result<(), BootError>;
    /// The slot the bootloader says it booted, when it can tell.
    fn booted(&self) -> Result<Option<SlotName>, BootError> {
        Ok(None)
    }
    /// The raw variables, for `status`.
    fn describe(&self) -> Result<Vec<(String, String)>, BootError>;
}
