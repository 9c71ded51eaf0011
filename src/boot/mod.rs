//! Bootloader backends behind one small trait.
//!
//! Invariant: every change a backend makes is one atomic write of the
//! bootloader's environment (grubenv, U-Boot env), or a sequence of atomic
//! writes ordered so that each intermediate state is one of the two
//! (EFI variables, systemd-boot entry renames), so a power cut at any
//! instant leaves an environment the real bootloader reads and that names
//! a good slot first.
//!
//! Environment variables are bytes: a backend parses only the variables it
//! owns (from their bytes, as the bootloader's script reads them) and
//! writes every other variable back byte for byte. Bytes shown to a person
//! (`status`, error messages) go through [`show`], which is lossless.

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
    /// May be booted.
    Good,
    /// Never booted.
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
    /// An env file or device that cannot be read or written.
    Io {
        /// The file or device.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// An env whose bytes are not what the bootloader reads.
    Format {
        /// The file or device.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A custom backend's verb that failed.
    Script {
        /// The backend script.
        script: String,
        /// The verb (`get-primary`, `set-state`, …).
        verb: String,
        /// What went wrong.
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

/// [`BootError::Io`] for the env file or device at `path`.
pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> BootError {
    BootError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// [`BootError::Format`] for the env file or device at `path`.
pub(crate) fn format_err(path: &std::path::Path, reason: impl Into<String>) -> BootError {
    BootError::Format {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Where a bootloader keeps its variables on storage a slot could be
/// configured over: a file or device, and on a device the bytes of it
/// (`range`: offset, length) that hold them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvStore {
    /// The file or device.
    pub path: std::path::PathBuf,
    /// The bytes of it that hold the variables; `None`: all of it.
    pub range: Option<(u64, u64)>,
}

/// What abupdate needs from a bootloader. Implementations keep RAUC's
/// variable contracts so boards prepared for RAUC work unchanged.
pub trait Bootloader {
    /// Where it keeps its variables on storage a slot could be configured
    /// over (GRUB's grubenv, U-Boot's environment copies): no target may
    /// be written over them. None for variables outside any slot's reach
    /// (EFI's NVRAM).
    fn env_stores(&self) -> Vec<EnvStore> {
        Vec::new()
    }

    /// The slot the bootloader will try first on the next boot.
    fn primary(&self) -> Result<Option<SlotName>, BootError>;
    /// Whether the bootloader considers `slot` bootable.
    fn state(&self, slot: SlotName) -> Result<BootState, BootError>;
    /// Mark `slot` good (re-bless: reset its tries) or bad (never boot it).
    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError>;
    /// Make `slot` the one booted next, as a trial with a fresh try budget,
    /// in one write of the environment.
    fn activate(&self, slot: SlotName) -> Result<(), BootError>;
    /// Check, writing nothing, that an install into `slot` can finish: the
    /// environment after marking `slot` bad and then activating it (what
    /// the install writes before and after the image) can be stored. The
    /// install calls it before it marks the target bad, so it never writes
    /// a whole image it cannot activate. Backends that cannot tell say yes.
    fn check_activate(&self, slot: SlotName) -> Result<(), BootError> {
        let _ = slot;
        Ok(())
    }
    /// The slot the bootloader says it booted, when it can tell.
    fn booted(&self) -> Result<Option<SlotName>, BootError> {
        Ok(None)
    }
    /// Whether the bootloader spent a try of `slot` that no one has
    /// blessed since (marked good again): `Some(true)` for a slot booted on
    /// its trial, or tried and fallen back from; `None` when this
    /// bootloader cannot tell. GRUB and U-Boot spend a try on every boot,
    /// so for the booted slot they say yes on each one; EFI tells a boot
    /// through `BootNext` (a trial) from one through `BootOrder`, and
    /// systemd-boot an entry that still counts tries from a blessed one.
    /// Asked when the state does not describe the boot (`agent::verdict`)
    /// and of the booted slot a `mark-bad` would leave as the only one
    /// (`agent::recovery`).
    fn tried(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        let _ = slot;
        Ok(None)
    }
    /// Whether a yes of [`Bootloader::tried`] for `booted` (the slot
    /// running) tells this boot is a trial's, not a committed release's:
    /// on EFI when its entry is out of `BootOrder` (an armed trial, booted
    /// through `BootNext`; a pick in the firmware's menu boots an entry
    /// still in it), on systemd-boot always (an entry still counting
    /// tries). GRUB and U-Boot spend a try on every boot, so their yes
    /// holds for a committed boot too, and a custom bootloader answers
    /// nothing.
    fn tells_a_trial_boot(&self, booted: SlotName) -> bool {
        let _ = booted;
        false
    }
    /// Whether `slot` carries the mark a retirement leaves
    /// (`set_state(slot, Bad)`) and nothing in a boot of it does:
    /// `Some(true)` marked bad, `Some(false)` not, `None` when this
    /// bootloader cannot tell a slot marked bad from one whose tries its
    /// own boot counting spent. GRUB: `X_OK` not 1 (its script sets `X_TRY`
    /// and counts `X_LEFT`, never clears `X_OK`). U-Boot: the slot out of
    /// `BOOT_ORDER` (the script takes attempts, never a slot out of the
    /// order; `BOOT_X_LEFT=0` is also a trial's last attempt taken). EFI:
    /// cannot tell (an armed trial's entry is out of `BootOrder` exactly as
    /// a bad one's). systemd-boot: cannot tell (`+0-DONE` is also a trial
    /// whose last try systemd-boot counted). Custom: cannot tell (RAUC's
    /// interface has `get-state` only, which a counting bootloader may
    /// answer `bad` for a trial on its last try). Asked by `health` on a
    /// trial's boot (`agent::verdict`): a booted trial marked bad while the
    /// other slot boots next is a retirement whose record was lost, never
    /// a trial to commit.
    fn marked_bad(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        let _ = slot;
        Ok(None)
    }
    /// [`Bootloader::marked_bad`] of a slot recorded committed with no
    /// trial pending. EFI and systemd-boot tell then what they cannot of a
    /// trial: neither counts a committed slot's tries (the firmware passes
    /// over an entry that fails and keeps it in `BootOrder`; systemd-boot's
    /// bless drops the counter), so only a retirement takes a committed
    /// slot's entry out of `BootOrder` (kept, not `BootNext`) or renames it
    /// `+0`. Found from outside: a `rollback` of a committed release cut
    /// before its record was saved was undone there by the next `health`,
    /// and the release installed again. Asked by `health` of a committed
    /// host (`agent::verdict`, `decide_committed`).
    fn committed_marked_bad(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        self.marked_bad(slot)
    }
    /// The raw variables, for `status`; values rendered by [`show`].
    fn describe(&self) -> Result<Vec<(String, String)>, BootError>;
}

/// Outside bytes as one line of text ([`crate::text::show`]), here for
/// the backends and `status`.
pub use crate::text::show;

/// The words of a list variable (`ORDER`, `BOOT_ORDER`), split on ASCII
/// white space as the bootloader scripts' `for` loops split them; a word is
/// bytes (only `A` and `B` mean anything to us, the others are kept).
pub(crate) fn words(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .filter(|w| !w.is_empty())
}

/// `words` joined by one space: the value written back.
pub(crate) fn join_words<W: AsRef<[u8]>>(words: &[W]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(w.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_ascii_white_space_and_keep_bytes() {
        let w: Vec<&[u8]> = words(b"  A\tB\n\xff R ").collect();
        assert_eq!(w, [&b"A"[..], b"B", b"\xff", b"R"]);
        assert_eq!(join_words(&w), b"A B \xff R");
        assert_eq!(words(b"").count(), 0);
    }
}
