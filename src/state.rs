//! Host state: `state.json` and the instance lock, under the state dir.
//!
//! Invariants: `state.json` is always either the previous complete version
//! or the new complete version (temp file, fsync, rename, fsync of the dir:
//! the data partition is read by Linux, which replays the journal), and only
//! the holder of the exclusive lock writes it. A state dir others could
//! change is named (`StateDir::open_to_others`) for the command to refuse:
//! `state.json` says which slot is proven good and the newest release seen.
//!
//! A damaged state never costs a boot. Before each replace, the file being
//! replaced, when it is a good state, is kept as `state.json.prev` (its own
//! file, fsynced). `load` never fails on a `state.json` that does not parse,
//! is larger than [`MAX_STATE_BYTES`] or cannot be read: it says so on
//! stderr, counts `failures{kind="state_corrupt"}`, and goes on with
//! `state.json.prev`, else with a fresh state (what a host without a state
//! file has; the flows rebuild the booted slot's record from the bootloader
//! and os-release; a trial such a state does not describe is judged by
//! what the bootloader says, `agent::verdict`). The damaged file is kept as
//! `state.json.corrupt` at the next save. Fields this version does not know (a newer version's) are
//! kept as read and written back, so a downgrade's save does not drop them;
//! so is a slot status this version does not know ([`SlotStatus::Other`]).
//!
//! Who may write is a type: only a [`StateLock`] (what [`StateDir::lock`]
//! returns to the one instance holding the lock) has a `save`, as bootupd's
//! `StateLockGuard::update_state`. The slot records change through
//! [`State`]'s transitions (`begin_write`, `stage`, `commit`,
//! `retire_trial`, …), one method per step of a flow, not by hand.
//! `tests/fixtures/state-v0.1-*.json`, written by release 0.1, pin the
//! format: they load, and save back unchanged.

use crate::error::Kind;
use crate::manifest::Version;
use crate::slot::SlotName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Errors of the state dir; each names the file.
#[derive(Debug)]
pub enum StateError {
    /// A file that cannot be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A state that cannot be serialized.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bootloader change `state.json` could not record (`source`), and
    /// what became of the bootloader after (`bootloader`: restored, or
    /// why not).
    NotRecorded {
        /// `state.json`.
        path: PathBuf,
        /// What was not recorded (`slot B staged with 2.0`).
        what: String,
        /// The save's error.
        source: Box<StateError>,
        /// What the bootloader holds now, in words.
        bootloader: String,
    },
    /// Another instance holds the lock.
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it (`pid N`).
        holder: String,
    },
    /// The lock this run took no longer stands at its name: the state
    /// directory was removed or replaced while the run held it, and another
    /// run may hold the new one.
    LockLost {
        /// The lock file (or the state dir, on a read-only filesystem).
        path: PathBuf,
    },
}

impl StateError {
    /// This run does not hold the state lock: another instance holds it, or
    /// the lock this run took no longer stands at its name (the state dir
    /// removed under it), also when that is why a bootloader change went
    /// unrecorded. Such a run saves nothing, a failure's count included
    /// (kind `locked`).
    pub fn is_without_the_lock(&self) -> bool {
        match self {
            StateError::Locked { .. } | StateError::LockLost { .. } => true,
            StateError::NotRecorded { source, .. } => source.is_without_the_lock(),
            _ => false,
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StateError::Corrupt { path, reason } => write!(f, "{}: {reason}", path.display()),
            StateError::NotRecorded {
                path,
                what,
                source,
                bootloader,
            } => write!(
                f,
                "{}: cannot record {what} ({source}); {bootloader}",
                path.display()
            ),
            StateError::Locked { path, holder } => {
                write!(
                    f,
                    "another abupdate is running ({holder} holds {})",
                    path.display()
                )
            }
            StateError::LockLost { path } => write!(
                f,
                "{} is no longer the lock this run took (the state directory was removed or \
                 replaced while it ran, and another abupdate may hold it now): nothing more is saved",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StateError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fields of a record that this version does not know, kept as read.
pub type Unknown = BTreeMap<String, serde_json::Value>;

/// One image as written into a slot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageRef {
    /// The image's SHA-256 (hex).
    pub sha256: String,
    /// The image's size in bytes.
    pub size: u64,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The build ([`crate::manifest::build_id`]) of a release whose images
/// are `images`; `None` without any (a record of an older version).
pub fn build_of(images: &BTreeMap<String, ImageRef>) -> Option<String> {
    (!images.is_empty()).then(|| {
        crate::manifest::build_id(
            images
                .iter()
                .map(|(class, i)| (class.as_str(), i.sha256.as_str(), i.size)),
        )
    })
}

/// What a slot holds, as this host recorded it. Serialized as its name
/// (`"good"`); a name this version does not know (a newer version's) is
/// kept as [`SlotStatus::Other`] and written back as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SlotStatus {
    /// Nothing known to be there.
    #[default]
    Empty,
    /// Being written (marked bad in the bootloader first).
    Installing,
    /// Written, read back and verified; not yet committed.
    Installed,
    /// Committed: booted and passed its health checks.
    Good,
    /// Failed (its write, its trial) or marked bad by hand.
    Bad,
    /// Runs, and is kept bootable, but failed its health checks on a boot
    /// no record described, with no other slot known to hold a good
    /// system to go to (`health`'s keep without a fallback): never a
    /// fallback, never blessed unchecked; good again only on a boot whose
    /// checks pass ([`State::checks_passed`]).
    Failing,
    /// A status this version does not know: kept, never taken as usable.
    Other(String),
}

impl SlotStatus {
    /// The name in `state.json` and `status`.
    pub fn as_str(&self) -> &str {
        match self {
            SlotStatus::Empty => "empty",
            SlotStatus::Installing => "installing",
            SlotStatus::Installed => "installed",
            SlotStatus::Good => "good",
            SlotStatus::Bad => "bad",
            SlotStatus::Failing => "failing",
            SlotStatus::Other(s) => s,
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> SlotStatus {
        match name {
            "empty" => SlotStatus::Empty,
            "installing" => SlotStatus::Installing,
            "installed" => SlotStatus::Installed,
            "good" => SlotStatus::Good,
            "bad" => SlotStatus::Bad,
            "failing" => SlotStatus::Failing,
            other => SlotStatus::Other(other.to_string()),
        }
    }

    /// Whether the slot holds a system worth booting: committed, or
    /// written and verified (its first boot is then its trial).
    pub fn is_usable(&self) -> bool {
        matches!(self, SlotStatus::Good | SlotStatus::Installed)
    }
}

impl fmt::Display for SlotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SlotStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SlotStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SlotStatus::parse(&s))
    }
}

/// What this host knows of one slot's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SlotRecord {
    /// What the slot holds.
    pub status: SlotStatus,
    /// The release written there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 of that release's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Class → the image written there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageRef>,
    /// When it was written (Unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<i64>,
    /// The [`AGENT_PROTOCOL`] of the abupdate that committed the slot's
    /// release: the verdict runs from the booted slot, so that build is the
    /// one the slot runs. Absent: committed by an older build (or never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<u32>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// What a build that commits a slot promises about the abupdate the slot
/// then runs, recorded as the slot record's `agent`. 1: it gives back the
/// site's reboot lock (`[reboot] fleetlock`) on the healthy boot after a
/// reboot into it. Builds before this field (213989b knows no FleetLock at
/// all) promise nothing: a reboot into their slot must not hold the lock.
pub const AGENT_PROTOCOL: u32 = 1;

impl SlotRecord {
    /// Whether the abupdate in this slot gives back a reboot lock held
    /// across the reboot into it ([`AGENT_PROTOCOL`] 1 or later).
    pub fn gives_back_reboot_lock(&self) -> bool {
        self.agent.is_some_and(|a| a >= 1)
    }
}

/// Where an update stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Target marked bad, payload being written.
    Writing,
    /// Written, verified and activated: the next boot is the trial.
    Staged,
}

/// The reboot of a planned late rollback (the release channel withdrew the
/// release on probation) that waits for the site's reboot lock: the
/// bootloader already boots `slot` next, so any reboot (a power cut too)
/// boots the last good release; the timer asks for the lock each tick.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlannedReboot {
    /// The slot the reboot goes to (the old slot, its fallback).
    pub slot: SlotName,
    /// The release rolled back.
    pub version: String,
}

/// The update in flight, if any.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transaction {
    /// The slot it was installed from (booted then).
    pub from: SlotName,
    /// The slot being written, then on trial.
    pub to: SlotName,
    /// The release.
    pub version: String,
    /// SHA-256 of the release's manifest.
    pub manifest_sha256: String,
    /// Where it stands.
    pub phase: Phase,
    /// When it began (Unix time).
    pub started: i64,
    /// The kernel boot id when the slot was staged: a different one means
    /// the host has rebooted since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_boot_id: Option<String>,
    /// Class → the image being written, so a boot can check the slot.
    #[serde(default)]
    pub images: BTreeMap<String, ImageRef>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// A committed release on probation (`[health] probation`): its slot is
/// watched for unclean restarts and failing checks until `until`; the
/// other slot is its fallback and nothing is written to it meanwhile. The
/// release itself is the slot's record (committed, it names it). Once the
/// window ended clean (`passed`), the record stays as the last one's.
///
/// Unlike the long-lived records it keeps no fields it does not know (a
/// newer version's): a probation lasts days, and the binary stays small.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Probation {
    /// The slot on probation; the other one is its fallback.
    pub slot: SlotName,
    /// The release on probation.
    pub version: String,
    /// When the probation began (the commit, Unix time).
    pub started: i64,
    /// When it ends (Unix time).
    pub until: i64,
    /// The clock's floor when the window started: the newest `created` the
    /// host believed then (`newest_created`). No longer read (the window is
    /// counted on the host's uptime, `ran`); written for the versions that
    /// measured it on the wall clock and restart a window started below
    /// it, which may run in the other slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i64>,
    /// The last boot id seen during the probation: a different one is a
    /// restart, clean or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Seconds of the window counted so far: the time the release ran, as
    /// the host's uptime measures it between the runs that watched it
    /// (`agent::probation::counted`), never the wall clock, which an RTC
    /// reset or an NTP step moves. `None`: none counted yet (a commit, or
    /// a record an earlier version wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran: Option<i64>,
    /// The host's uptime (whole seconds since boot) at the last run that
    /// counted `ran`, on the boot `boot_id` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<i64>,
    /// Unclean restarts and failing check runs counted so far.
    #[serde(default)]
    pub failures: u32,
    /// What the latest failure was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// When the window ended clean (Unix time): the probation is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<i64>,
    /// When it ended because the configuration turned probation off
    /// (`probation = "0"`, Unix time): over, neither passed nor failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off: Option<i64>,
    /// When it failed while the old slot was not usable (Unix time): over,
    /// the release kept running, since there was nothing to fall back to
    /// (`last_failure` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_fallback: Option<i64>,
}

/// Why a release is on the list of releases not installed again
/// ([`State::failed`]). Serialized as its name; a name this version does
/// not know (a newer version's) is kept as [`Hold::Other`], written back
/// as read, and held like a failure: never installed again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Hold {
    /// It failed here (its trial, its probation, or rejected while it
    /// ran): never installed again.
    #[default]
    Failed,
    /// An operator cancelled it while it was staged and never booted
    /// (`mark-bad` of its slot): not a failure of the release, but the
    /// timer does not take it again; an `install` of it by hand does.
    Cancelled,
    /// An operator rolled the host back from it by hand after it was
    /// committed here (`rollback`, `mark-bad` of its slot): a failure of
    /// the release here (reported `rolled_back_late`), so the timer does
    /// not take it again; an `install` of it by hand does (the operator's
    /// own verdict, theirs to revise), and lifts the hold. An older
    /// version reads it as a hold it does not know: held as a failure.
    Rejected,
    /// A hold this version does not know.
    Other(String),
}

impl Hold {
    /// The name in `state.json`.
    pub fn as_str(&self) -> &str {
        match self {
            Hold::Failed => "failed",
            Hold::Cancelled => "cancelled",
            Hold::Rejected => "rejected",
            Hold::Other(s) => s,
        }
    }

    /// Whether an `install` by hand is refused too (anything but an
    /// operator's own decision, a cancel or a rejection after the commit;
    /// the unknown included).
    pub fn binds_the_operator(&self) -> bool {
        !matches!(self, Hold::Cancelled | Hold::Rejected)
    }

    /// How firmly it holds: a cancel (no verdict), then an operator's
    /// rejection, then a failure (and a hold this version does not know,
    /// which nothing replaces).
    fn strength(&self) -> u8 {
        match self {
            Hold::Cancelled => 0,
            Hold::Rejected => 1,
            Hold::Failed => 2,
            Hold::Other(_) => 3,
        }
    }

    /// `failed` is the default, left out of `state.json` (as older
    /// versions wrote it).
    fn is_failed(&self) -> bool {
        *self == Hold::Failed
    }
}

impl Serialize for Hold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Hold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| match s.as_str() {
            "failed" => Hold::Failed,
            "cancelled" => Hold::Cancelled,
            "rejected" => Hold::Rejected,
            _ => Hold::Other(s),
        })
    }
}

/// A release that failed on this host and is never installed again, or
/// one an operator cancelled ([`Hold`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FailedRelease {
    /// The release.
    pub version: String,
    /// SHA-256 of its manifest.
    pub manifest_sha256: String,
    /// Why it failed.
    pub reason: String,
    /// When (Unix time).
    pub at: i64,
    /// Why it is held: failed (left out), or `cancelled` by an operator.
    #[serde(default, skip_serializing_if = "Hold::is_failed")]
    pub hold: Hold,
    /// Written at the commit of a release on probation, before any
    /// fallback can happen: held as a failure unless that probation is
    /// still running ([`State::held`]); the write that ends the probation
    /// as passed (or switched off, or kept for want of a fallback) removes
    /// it. Versions without probation read the entry and ignore the field,
    /// so a host back on the old slot there refuses the release as one
    /// that failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Validators of the last manifest response, for a conditional GET.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LastCheck {
    /// The manifest URL checked.
    pub url: String,
    /// When (Unix time).
    pub at: i64,
    /// The answer's `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The answer's `Last-Modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// `expires` of the manifest those validators stand for. Once past, the
    /// next check fetches the manifest in full: a server answering 304 for
    /// ever must not hide that what it serves has expired (a freeze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The booted version the manifest was judged against: after a rollback
    /// the same manifest may apply again, so its 304 must not be trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_version: Option<String>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Counters and timestamps for reports; they survive reboots.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// When the manifest was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<i64>,
    /// When an install or commit last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<i64>,
    /// Failures by error kind.
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    /// Payload bytes received over the network.
    #[serde(default)]
    pub downloaded_bytes: u64,
    /// Range requests a server answered with the whole file (it, or a
    /// proxy, ignores `Range`): a resume that went on from the whole
    /// answer, a delta given up for the full payload. A warning, not a
    /// failure: the bytes before the range crossed the link again. Absent
    /// while 0 (a state file of an earlier version saves back as it was).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub range_ignored: u64,
    /// Releases written and staged.
    #[serde(default)]
    pub installs: u64,
    /// Trials committed.
    #[serde(default)]
    pub commits: u64,
    /// Trials rolled back or never booted.
    #[serde(default)]
    pub rollbacks: u64,
    /// Failed `update` runs in a row; drives the backoff.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// No timer-driven `update` before this time (backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
    /// Bytes the last install fetched, and what a full install would have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_install_fetched: Option<u64>,
    /// What a full install of the last release fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_install_full: Option<u64>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The hash of a booted slot's prefix, valid for one boot: a delta's source
/// is verified once per boot, not once per check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceHash {
    /// The boot it was hashed in.
    pub boot_id: String,
    /// The booted slot's device.
    pub device: String,
    /// Bytes hashed from its start.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: String,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Whether two release names are the same release, compared as versions
/// when both parse (`3.0` is `3.0.0`), else as text.
/// Whether `a` and `b` name one release: compared as versions when both
/// parse (`3.0` is `3.0.0`), else as text.
pub fn same_version(a: &str, b: &str) -> bool {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The `format` of `state.json` this version writes (and reads).
pub const STATE_FORMAT: u32 = 1;

/// The largest `state.json` read. A real one is a few KiB (the failed list
/// holds at most [`MAX_FAILED_RELEASES`] entries of bounded size); anything
/// bigger is damage, is not read into memory whole, and is never written.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// Entries the failed list keeps. A host whose every nightly fails its
/// checks for years must not grow `state.json` towards
/// [`MAX_STATE_BYTES`] (past it the state reads as damaged and no later
/// change sticks), nor fill a small data partition: beyond this many, the
/// lowest version goes first ([`State::hold`]). A release that old, offered
/// again, is tried again: its trial fails and the host rolls back, as the
/// first time.
pub const MAX_FAILED_RELEASES: usize = 64;

/// Bytes of an entry's `reason` kept: what the checks said, cut (the whole
/// of it went to the log and the report when it happened).
pub const MAX_FAILED_REASON_BYTES: usize = 512;

/// The error kind counted (and reported) when `state.json` is unusable.
pub const STATE_CORRUPT_KIND: &str = Kind::StateCorrupt.as_str();

/// Why a state file could not be used.
#[derive(Debug, PartialEq)]
enum Unusable {
    Missing,
    Damaged(String),
}

/// Read and parse one state file, reading at most [`MAX_STATE_BYTES`].
/// A file that cannot be read for lack of permission is an error, not
/// damage: another user's `status` must not mistake it for corruption.
fn read_state(path: &Path) -> Result<Result<State, Unusable>, StateError> {
    // A FIFO or a device where the state belongs is damage, never a hang.
    let file = match crate::files::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err(Unusable::Missing)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
        Err(e) => return Ok(Err(Unusable::Damaged(e.to_string()))),
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes) {
        return Ok(Err(Unusable::Damaged(e.to_string())));
    }
    Ok(parse_state(&bytes))
}

/// A state from `bytes`, or what is wrong with them.
fn parse_state(bytes: &[u8]) -> Result<State, Unusable> {
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(Unusable::Damaged(format!(
            "larger than {MAX_STATE_BYTES} bytes"
        )));
    }
    let mut state: State =
        serde_json::from_slice(bytes).map_err(|e| Unusable::Damaged(e.to_string()))?;
    if state.format != STATE_FORMAT {
        return Err(Unusable::Damaged(format!(
            "state format {} is not {STATE_FORMAT}",
            state.format
        )));
    }
    // An install goes from one slot to the other: a transaction that names
    // one slot twice describes none (a hand edit), and acting on it would
    // judge the wrong slot.
    if let Some(t) = state.transaction.as_ref().filter(|t| t.from == t.to) {
        return Err(Unusable::Damaged(format!(
            "its transaction goes from slot {} to slot {}",
            t.from, t.to
        )));
    }
    state.installed_outcomes_as_read = state
        .outcomes
        .iter()
        .filter(|o| o.outcome == crate::report::Outcome::Installed.as_str())
        .map(|o| o.release.clone())
        .collect();
    Ok(state)
}

fn fresh() -> State {
    State {
        format: STATE_FORMAT,
        ..Default::default()
    }
}

/// Sources whose newest `created` is remembered.
const MAX_SOURCES: usize = 32;

/// The bytes a host verified from one source with one `created`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceDigest {
    /// The document's `created`.
    pub created: i64,
    /// SHA-256 of its bytes (of the first one, when `conflicting`).
    pub sha256: String,
    /// Another document with other bytes was verified at that `created`:
    /// neither is acted on (`manifest::FloorBytes::Conflicting`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflicting: bool,
    /// The release version of that manifest (none for a channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Everything `state.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// What each slot holds.
    #[serde(default)]
    pub slots: BTreeMap<SlotName, SlotRecord>,
    /// The update in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
    /// Releases that failed here and are never installed again.
    #[serde(default)]
    pub failed: Vec<FailedRelease>,
    /// Newest believed `created` of any verified manifest: the clock's
    /// lower bound (see `manifest::created_plausible`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_created: Option<i64>,
    /// Newest believed `created` verified per source (`manifest::source_key`):
    /// nothing older from that source is acted on (TUF's timestamp rule).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub newest_by_source: BTreeMap<String, i64>,
    /// SHA-256 of the document verified per source with its newest
    /// `created` (the other half of its `manifest::Floor`): the same date
    /// with other bytes is a replay. A separate map, so a state file
    /// without it (older) still loads (unknown: the next verified document
    /// is taken and recorded), and an older abupdate after a rollback keeps
    /// it as an unknown field; each entry names the `created` it belongs
    /// to, so one left behind by such a binary's newer date is ignored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256_by_source: BTreeMap<String, SourceDigest>,
    /// Validators of the last manifest that did not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<LastCheck>,
    /// Counters for reports.
    #[serde(default)]
    pub metrics: Metrics,
    /// Hashes of the booted slot's prefix, per boot (delta sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_hashes: Vec<SourceHash>,
    /// The FleetLock group whose reboot lock this host may hold: set before
    /// the lock is asked for, cleared once it is released (`fleetlock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleetlock: Option<String>,
    /// A planned late rollback's reboot that waits for the site's lock,
    /// until the host boots its slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_reboot: Option<PlannedReboot>,
    /// The committed release on probation, or the last one that passed
    /// it ([`State::on_probation`] tells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation: Option<Probation>,
    /// Latest outcome times of the last few releases, for the textfile
    /// (bounded by `report::record_outcome`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<crate::report::OutcomeRecord>,
    /// Fields this version does not know, kept as read.
    #[serde(flatten)]
    pub unknown: Unknown,
    /// Set by [`StateDir::load`] when `state.json` could not be used: what
    /// was wrong and what stands in for it. Never saved; a flow that would
    /// not save otherwise saves a recovered state, so the damage is
    /// repaired (and counted) once.
    #[serde(skip)]
    pub recovered: Option<String>,
    /// The releases `state.json`, as read, holds an `installed` outcome of
    /// (set by [`StateDir::load`], never saved): the evidence that a build
    /// keeping `outcomes` installed them, which [`State::commit`] reads on
    /// the build that staged the trial ([`State::mark_installer_agent`]).
    #[serde(skip)]
    pub installed_outcomes_as_read: Vec<String>,
}

impl State {
    /// The versions on the failed list that `by_hand` (an operator's
    /// `install`) may not install: every one for the timer's runs; for a
    /// run by hand, all but those the operator cancelled.
    pub fn failed_versions(&self, by_hand: bool) -> Vec<String> {
        self.held()
            .filter(|f| !by_hand || f.hold.binds_the_operator())
            .map(|f| f.version.clone())
            .collect()
    }

    /// The versions held as failures here (every entry but an operator's
    /// cancel) that a run may not install: every one for the timer's
    /// runs; for a run by hand (`by_hand`), all but those the operator
    /// rejected after their commit ([`Hold::Rejected`]).
    pub fn failures(&self, by_hand: bool) -> Vec<String> {
        self.held()
            .filter(|f| f.hold != Hold::Cancelled)
            .filter(|f| !by_hand || f.hold.binds_the_operator())
            .map(|f| f.version.clone())
            .collect()
    }

    /// The versions an operator cancelled ([`Hold::Cancelled`]).
    pub fn cancelled_versions(&self) -> Vec<String> {
        self.held()
            .filter(|f| f.hold == Hold::Cancelled)
            .map(|f| f.version.clone())
            .collect()
    }

    /// The failed list as it holds now: every entry but the provisional
    /// one of the release whose probation is running (it has not failed;
    /// it stands for the failure a fallback would be, [`State::commit`]).
    /// A provisional entry whose probation is no longer running is a
    /// failure: the host left the probation without passing it (the
    /// bootloader fell back, and an older version may have saved since).
    pub fn held(&self) -> impl Iterator<Item = &FailedRelease> {
        let running = self.on_probation().map(|p| p.version.as_str());
        self.failed.iter().filter(move |f| {
            !(f.provisional && running.is_some_and(|v| same_version(&f.version, v)))
        })
    }

    /// Whether `version` is held on the failed list as it holds now
    /// ([`State::held`], compared as versions).
    pub fn holds(&self, version: &str) -> bool {
        self.held().any(|f| same_version(&f.version, version))
    }

    /// The entry of `version` on the failed list (compared as versions:
    /// `3.0` is the entry of `3.0.0`).
    fn failed_entry(&mut self, version: &str) -> Option<&mut FailedRelease> {
        let at = self.failed_index(version)?;
        self.failed.get_mut(at)
    }

    fn failed_index(&self, version: &str) -> Option<usize> {
        self.failed
            .iter()
            .position(|f| same_version(&f.version, version))
    }

    /// The probation of `version` ended without failing it: its
    /// provisional entry goes (a real one stays).
    fn drop_provisional(&mut self, version: &str) {
        self.failed
            .retain(|f| !(f.provisional && same_version(&f.version, version)));
    }

    /// Put a release on the failed list (once per version, compared as
    /// versions). One an operator had cancelled and then installed again
    /// by hand, which now failed, becomes a failure.
    pub fn record_failed(&mut self, version: &str, manifest_sha256: &str, reason: &str, at: i64) {
        self.hold(version, manifest_sha256, reason, at, Hold::Failed);
    }

    /// Put `version` on the failed list held as `hold`; an entry there
    /// already stays, but only a firmer hold replaces it
    /// ([`Hold::strength`]): a cancel never softens a failure, and a
    /// failure hardens a cancel or an operator's rejection. A provisional
    /// entry is no verdict: any hold replaces it.
    ///
    /// Invariant: the one way an entry is made, so the list stays bounded
    /// here: a reason of at most [`MAX_FAILED_REASON_BYTES`], and at most
    /// [`MAX_FAILED_RELEASES`] entries, the lowest versions dropped first
    /// (never the provisional entry of a probation that runs).
    fn hold(&mut self, version: &str, manifest_sha256: &str, reason: &str, at: i64, hold: Hold) {
        let reason = &crate::text::cut(reason, MAX_FAILED_REASON_BYTES);
        match self.failed_entry(version) {
            Some(f) if f.provisional || f.hold.strength() < hold.strength() => {
                f.manifest_sha256 = manifest_sha256.to_string();
                f.reason = reason.to_string();
                f.at = at;
                f.hold = hold;
                f.provisional = false;
            }
            Some(_) => {}
            None => self.failed.push(FailedRelease {
                version: version.to_string(),
                manifest_sha256: manifest_sha256.to_string(),
                reason: reason.to_string(),
                at,
                hold,
                provisional: false,
                unknown: Unknown::new(),
            }),
        }
        self.bound_failed_list();
    }

    /// Drop the lowest versions (the oldest entry first among equals, a
    /// version that does not parse lowest) until the failed list holds
    /// [`MAX_FAILED_RELEASES`], keeping the provisional entry of the
    /// probation that runs (it is the running release's fallback record).
    fn bound_failed_list(&mut self) {
        while self.failed.len() > MAX_FAILED_RELEASES {
            let running = self.on_probation().map(|p| p.version.clone());
            let lowest = self
                .failed
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    !(f.provisional
                        && running
                            .as_deref()
                            .is_some_and(|v| same_version(&f.version, v)))
                })
                .min_by_key(|(_, f)| (Version::parse(&f.version).ok(), f.at))
                .map(|(i, _)| i);
            match lowest {
                Some(i) => {
                    self.failed.remove(i);
                }
                None => break,
            }
        }
    }

    /// `slot`'s record; an empty one when none is kept.
    pub fn slot(&self, slot: SlotName) -> SlotRecord {
        self.slots.get(&slot).cloned().unwrap_or_default()
    }

    /// The build of release `version` as a slot holds it (the booted
    /// first slot recording it); `None` when no slot records its images.
    pub fn build_of_version(&self, version: &str) -> Option<String> {
        self.slots
            .values()
            .filter(|r| r.version.as_deref() == Some(version))
            .find_map(|r| build_of(&r.images))
    }

    /// `slot`'s record to change in place (an empty one inserted first).
    pub fn slot_mut(&mut self, slot: SlotName) -> &mut SlotRecord {
        self.slots.entry(slot).or_default()
    }

    /// Right before the first byte of `t.to` changes (its bootloader flag
    /// already says bad): `t` is the update in flight and the target's
    /// record says what is there now, a slot being written.
    pub fn begin_write(&mut self, t: Transaction) {
        self.slots.insert(
            t.to,
            SlotRecord {
                status: SlotStatus::Installing,
                ..Default::default()
            },
        );
        self.transaction = Some(t);
    }

    /// A write into `target` that began failed: nothing is pending any more
    /// and what is there is known bad.
    pub fn abandon_write(&mut self, target: SlotName) {
        self.transaction = None;
        self.slots.insert(
            target,
            SlotRecord {
                status: SlotStatus::Bad,
                ..Default::default()
            },
        );
    }

    /// `t`'s slot is written, verified and activated: the next boot is its
    /// trial. The slot's record names what it holds.
    pub fn stage(&mut self, t: &Transaction, boot_id: Option<String>, at: i64) {
        self.slots.insert(
            t.to,
            SlotRecord {
                status: SlotStatus::Installed,
                installed_at: Some(at),
                ..Default::default()
            },
        );
        self.record_release(t);
        // An operator's `install` of a release they had cancelled, or
        // rejected after its commit, lifts the hold (the timer never
        // stages one it holds).
        if let Some(at) = self.failed_index(&t.version) {
            if !self.failed[at].hold.binds_the_operator() {
                self.failed.remove(at);
            }
        }
        self.transaction = Some(Transaction {
            phase: Phase::Staged,
            staged_boot_id: boot_id,
            ..t.clone()
        });
        self.metrics.installs += 1;
    }

    /// `t.to` holds `t`'s release (read back and hashed right): its record
    /// names it. The one place a record learns its release from a
    /// transaction: staging, and a trial's end when its transaction never
    /// reached `staged` (a power cut between the activation and that state
    /// write leaves the record `installing`, naming nothing).
    fn record_release(&mut self, t: &Transaction) {
        let rec = self.slot_mut(t.to);
        rec.version = Some(t.version.clone());
        rec.manifest_sha256 = Some(t.manifest_sha256.clone());
        rec.images = t.images.clone();
    }

    /// The trial `t` passed its checks: committed, its record naming its
    /// release, the slot it came from its fallback ([`State::adopt_fallback`]);
    /// with a `probation` window (seconds, non-zero) the release is on
    /// probation from `at`, seen last on `boot_id`, and on the failed list
    /// provisionally in the same write: the bootloader may fall back
    /// before any `health` records a failure (U-Boot's tries run out, a
    /// late rollback cut after its bootloader writes), and the old slot
    /// may run a version that knows no probation but reads the failed list.
    pub fn commit(&mut self, t: &Transaction, at: i64, probation: u64, boot_id: Option<String>) {
        self.adopt_fallback(t);
        self.mark_installer_agent(t);
        self.start_probation(t.to, &t.version, &t.manifest_sha256, at, probation, boot_id);
        self.record_release(t);
        self.slot_mut(t.to).status = SlotStatus::Good;
        self.mark_agent(t.to);
        self.transaction = None;
        self.metrics.commits += 1;
        self.metrics.last_success = Some(at);
    }

    /// A trial in `slot` that the damaged `state.json` did not describe
    /// passed its checks (`agent::verdict`): committed as far as what is
    /// known allows. Its record is good, naming `version` (os-release's)
    /// when it names none; with a `probation` window (seconds, non-zero)
    /// `version` is on probation from `at` as after any commit. What the
    /// lost record held is not guessed: no manifest digest or images are
    /// written (the provisional failed-list entry's digest is empty), and
    /// the other slot is not adopted as a fallback ([`State::commit`]
    /// adopts it because an install began from it; nothing says one did).
    pub fn commit_undescribed(
        &mut self,
        slot: SlotName,
        version: &str,
        at: i64,
        probation: u64,
        boot_id: Option<String>,
    ) {
        // The digest of the manifest this release came from was in the
        // record the damage lost: unknown, so empty, never made up.
        self.start_probation(slot, version, "", at, probation, boot_id);
        let rec = self.slot_mut(slot);
        rec.status = SlotStatus::Good;
        if rec.version.is_none() {
            rec.version = Some(version.to_string());
        }
        self.mark_agent(slot);
        self.transaction = None;
        self.metrics.commits += 1;
        self.metrics.last_success = Some(at);
    }

    /// `version`, committed in `slot` at `at`, is on probation for
    /// `probation` seconds (none when zero), seen last on `boot_id`, and
    /// on the failed list provisionally in the same write (see
    /// [`State::commit`]) under `manifest_sha256` (empty: unknown).
    fn start_probation(
        &mut self,
        slot: SlotName,
        version: &str,
        manifest_sha256: &str,
        at: i64,
        probation: u64,
        boot_id: Option<String>,
    ) {
        if probation > 0 && self.failed_index(version).is_none() {
            self.failed.push(FailedRelease {
                version: version.to_string(),
                manifest_sha256: manifest_sha256.to_string(),
                reason: format!(
                    "left its probation in slot {slot} for slot {} without passing it",
                    slot.other()
                ),
                at,
                hold: Hold::Failed,
                provisional: true,
                unknown: Unknown::new(),
            });
        }
        self.probation = (probation > 0).then(|| Probation {
            slot,
            version: version.to_string(),
            started: at,
            until: at.saturating_add(i64::try_from(probation).unwrap_or(i64::MAX)),
            floor: self.newest_created,
            boot_id,
            ran: None,
            uptime: None,
            failures: 0,
            last_failure: None,
            passed: None,
            off: None,
            no_fallback: None,
        });
    }

    /// The trial `t` failed (its checks, its bytes, or it never came up),
    /// or the committed release `t` stands for was rejected: its release
    /// goes on the failed list (held as `hold`), its slot is bad, nothing
    /// is pending, and the rollback is counted under `kind`. With `holds`
    /// (the slot's bytes are the release's) the record names the release
    /// that failed; without (its bytes did not read back right) it names
    /// none.
    pub fn retire_trial(
        &mut self,
        t: &Transaction,
        holds: bool,
        reason: &str,
        kind: Kind,
        hold: Hold,
        at: i64,
    ) {
        self.hold(&t.version, &t.manifest_sha256, reason, at, hold);
        if holds {
            self.record_release(t);
        }
        self.slot_mut(t.to).status = SlotStatus::Bad;
        self.transaction = None;
        self.probation = None;
        self.metrics.rollbacks += 1;
        self.count_failure(kind);
    }

    /// The staged trial `t` was disarmed (the release channel no longer
    /// offers it; the bootloader already boots `t.from` again): nothing is
    /// pending and the slot, which still holds the release, is recorded
    /// bad (not bootable: a `rollback` onto it needs `--force`). Not a
    /// failure of the release here: the failed list is not touched.
    pub fn disarm(&mut self, t: &Transaction) {
        self.record_release(t);
        self.slot_mut(t.to).status = SlotStatus::Bad;
        self.transaction = None;
    }

    /// An operator cancelled the staged trial `t` (`mark-bad` of its slot,
    /// the bootloader already booting `t.from` again): disarmed, and its
    /// release held as [`Hold::Cancelled`] (`why` says by whom), so the
    /// timer does not stage it again while an `install` by hand may.
    pub fn cancel(&mut self, t: &Transaction, why: &str, at: i64) {
        self.disarm(t);
        self.hold(&t.version, &t.manifest_sha256, why, at, Hold::Cancelled);
    }

    /// The probation's window ended with no more failures than tolerated:
    /// the release is past probation, recorded as such, and off the failed
    /// list (one write).
    pub fn end_probation(&mut self, at: i64) {
        if let Some(p) = self.probation.as_mut() {
            p.passed = Some(at);
            let version = p.version.clone();
            self.drop_provisional(&version);
        }
    }

    /// The configuration turned probation off (`probation = "0"`) while
    /// one ran: it ends at `at`, recorded as switched off (`off`), not as
    /// passed.
    pub fn switch_off_probation(&mut self, at: i64) {
        if let Some(p) = self.probation.as_mut() {
            p.off = Some(at);
            let version = p.version.clone();
            self.drop_provisional(&version);
        }
    }

    /// The release on probation failed it while the old slot was not
    /// usable: it ends at `at`, recorded as failed with no fallback
    /// (`no_fallback`, `why` as its last failure, `failures` its count,
    /// the failure that ended it included); the release stays.
    pub fn fail_probation_without_fallback(&mut self, at: i64, why: &str, failures: u32) {
        if let Some(p) = self.probation.as_mut() {
            p.no_fallback = Some(at);
            p.failures = failures;
            p.last_failure = Some(why.to_string());
            let version = p.version.clone();
            self.drop_provisional(&version);
        }
    }

    /// The planned reboot still owed while `booted` runs (`None` once the
    /// host boots its slot).
    pub fn reboot_owed(&self, booted: SlotName) -> Option<&PlannedReboot> {
        self.planned_reboot.as_ref().filter(|p| p.slot != booted)
    }

    /// `booted` runs: a planned reboot into it is done and forgotten.
    /// Whether the record changed.
    pub fn settle_planned_reboot(&mut self, booted: SlotName) -> bool {
        let done = self
            .planned_reboot
            .as_ref()
            .is_some_and(|p| p.slot == booted);
        if done {
            self.planned_reboot = None;
        }
        done
    }

    /// The release on probation now (not one that passed it, whose
    /// probation was switched off, or that failed it with no fallback).
    pub fn on_probation(&self) -> Option<&Probation> {
        self.probation
            .as_ref()
            .filter(|p| p.passed.is_none() && p.off.is_none() && p.no_fallback.is_none())
    }

    /// The release on probation as the trial it was (from its slot's
    /// record), for a late rollback to retire like any failed trial.
    pub fn probation_release(&self) -> Option<Transaction> {
        let p = self.on_probation()?;
        let rec = self.slot(p.slot);
        Some(Transaction {
            from: p.slot.other(),
            to: p.slot,
            version: p.version.clone(),
            manifest_sha256: rec.manifest_sha256.unwrap_or_default(),
            phase: Phase::Staged,
            started: p.started,
            staged_boot_id: None,
            images: rec.images,
            unknown: Unknown::new(),
        })
    }

    /// The release abupdate installed and committed in `slot` (its record
    /// `good`, naming the release and its manifest) as the trial it was,
    /// for an operator's rejection of it to retire like any failed trial.
    pub fn committed_release(&self, slot: SlotName) -> Option<Transaction> {
        let rec = self.slot(slot);
        if rec.status != SlotStatus::Good {
            return None;
        }
        Some(Transaction {
            from: slot.other(),
            to: slot,
            version: rec.version?,
            manifest_sha256: rec.manifest_sha256?,
            phase: Phase::Staged,
            started: rec.installed_at.unwrap_or_default(),
            staged_boot_id: None,
            images: rec.images,
            unknown: Unknown::new(),
        })
    }

    /// The booted `slot` failed its checks and is kept, as nothing else is
    /// known to boot ([`SlotStatus::Failing`]). Its record names the
    /// release that runs, `version` when known: a record of another
    /// release (an older boot's, in a copy that stood in for a damaged
    /// state) is replaced, its manifest and images with it, which were not
    /// this release's. Whether the record changed.
    pub fn keep_failing(&mut self, slot: SlotName, version: Option<String>) -> bool {
        let rec = self.slot_mut(slot);
        let mut changed = rec.status != SlotStatus::Failing;
        rec.status = SlotStatus::Failing;
        if let Some(v) = version.filter(|v| rec.version.as_deref() != Some(v)) {
            let another = rec.version.is_some();
            rec.version = Some(v);
            if another {
                rec.manifest_sha256 = None;
                rec.images.clear();
                rec.installed_at = None;
            }
            changed = true;
        }
        changed
    }

    /// The booted `slot`'s health checks passed on this boot: a slot kept
    /// failing ([`State::keep_failing`]) is good again. Whether the record
    /// changed.
    pub fn checks_passed(&mut self, slot: SlotName) -> bool {
        let rec = self.slot_mut(slot);
        if rec.status != SlotStatus::Failing {
            return false;
        }
        rec.status = SlotStatus::Good;
        true
    }

    /// The booted `slot` came up healthy with no trial pending: a record
    /// that says written (or nothing) becomes good, its version filled in
    /// from `version` when unknown (never one kept failing: only its
    /// checks make it good, [`State::checks_passed`]). Whether the record
    /// changed.
    pub fn bless(&mut self, slot: SlotName, version: impl FnOnce() -> Option<String>) -> bool {
        let rec = self.slot_mut(slot);
        if !matches!(rec.status, SlotStatus::Installed | SlotStatus::Empty) {
            return false;
        }
        rec.status = SlotStatus::Good;
        if rec.version.is_none() {
            rec.version = version();
        }
        true
    }

    /// This build runs from the booted `slot` (its verdict's commit or
    /// re-blessing): its record says so ([`AGENT_PROTOCOL`]). Whether the
    /// record changed.
    pub fn mark_agent(&mut self, slot: SlotName) -> bool {
        let rec = self.slot_mut(slot);
        let changed = rec.agent != Some(AGENT_PROTOCOL);
        rec.agent = Some(AGENT_PROTOCOL);
        changed
    }

    /// Before an install writes the other slot, the booted `slot` (which
    /// the bootloader holds good: the install refuses otherwise) runs a
    /// proven system: a record that says nothing of it (a fresh host, one
    /// reset by deleting `state.json`, one whose state was lost) is
    /// adopted as good, holding `version` (the running one, from
    /// os-release) when it names none. Without this the slot left behind
    /// stays `empty` and a late rollback has no fallback, though it holds
    /// the last good release. Only the booted slot: what the other one
    /// holds is never guessed. Whether the record changed.
    pub fn adopt_booted(&mut self, slot: SlotName, version: Option<String>) -> bool {
        let rec = self.slot_mut(slot);
        if rec.status != SlotStatus::Empty {
            return false;
        }
        rec.status = SlotStatus::Good;
        if rec.version.is_none() {
            rec.version = version;
        }
        true
    }

    /// The slot `t` was installed from was booted, and good in the
    /// bootloader, when the install began (every version refuses to
    /// install otherwise): a record that says nothing of it is adopted as
    /// good, naming no version (none is known: it is read from os-release
    /// once it runs again). Only an older version leaves it so (one that
    /// kept no record of the booted slot; this one adopts it before
    /// writing, [`State::adopt_booted`]): without this a release such a
    /// version installed has no fallback for its probation or a
    /// `rollback`.
    /// Whether the record changed.
    pub fn adopt_fallback(&mut self, t: &Transaction) -> bool {
        self.adopt_booted(t.from, None)
    }

    /// The slot `t` was installed from runs a build that gives back the
    /// site's reboot lock when the state as read shows an `installed`
    /// outcome of `t`'s release: `outcomes` came in 6c78463, three minutes
    /// before FleetLock (81cff9d); 1cf963b writes that outcome at every
    /// install but no `agent` in its records, and 213989b neither writes
    /// `outcomes` nor keeps it (it drops unknown fields on save). The
    /// from-slot's build installed and staged `t`, so it saved the state
    /// last before this build's verdict; the outcome is read as loaded, not
    /// from `self.outcomes`, which this run may have added to. Without this
    /// every host upgraded from 1cf963b would give back the lock before a
    /// late rollback's reboot, and a withdrawal would reboot a whole site
    /// at once. A slot bad or being written is never marked. Whether the
    /// record changed.
    pub fn mark_installer_agent(&mut self, t: &Transaction) -> bool {
        // As versions, as every other comparison of release names here
        // (`2.0` is `2.0.0`).
        let evidence = self
            .installed_outcomes_as_read
            .iter()
            .any(|release| same_version(release, &t.version));
        let usable = matches!(
            self.slot(t.from).status,
            SlotStatus::Good | SlotStatus::Installed
        );
        if !evidence || !usable || self.slot(t.from).gives_back_reboot_lock() {
            return false;
        }
        self.mark_agent(t.from)
    }

    /// `mark-good` / `mark-bad` by hand. Marking a staged slot good commits
    /// it: its transaction is done.
    pub fn mark(&mut self, slot: SlotName, good: bool) {
        self.slot_mut(slot).status = match good {
            true => SlotStatus::Good,
            false => SlotStatus::Bad,
        };
        let staged_there = self
            .transaction
            .as_ref()
            .is_some_and(|t| t.to == slot && t.phase == Phase::Staged);
        if good && staged_there {
            self.transaction = None;
        }
    }

    /// `mark-good --force` of the booted `slot` a rollback left (recorded
    /// bad, its release held, the other slot next): good again, its release
    /// off the failed list (whatever held it: the operator's word over the
    /// earlier verdict, or `status` would call the slot good and its
    /// release failed at once), and no reboot owed into the other slot.
    pub fn cancel_rollback(&mut self, slot: SlotName) {
        self.mark(slot, true);
        if let Some(v) = self.slot(slot).version {
            self.failed.retain(|f| !same_version(&f.version, &v));
        }
        if self.planned_reboot.as_ref().is_some_and(|p| p.slot != slot) {
            self.planned_reboot = None;
        }
    }

    /// A manual rollback onto `slot` made it the one booted next: a slot
    /// staged and never tried keeps its transaction (the boot is its
    /// trial, judged by `health`); anything else in flight is abandoned.
    /// With `vouched`, the operator forced it onto a slot not recorded as
    /// usable: no longer bad, so the health check on its boot blesses it
    /// instead of rolling back again.
    pub fn switched_to(&mut self, slot: SlotName, vouched: bool) {
        let staged_there = self
            .transaction
            .as_ref()
            .is_some_and(|t| t.to == slot && t.phase == Phase::Staged);
        if !staged_there {
            self.transaction = None;
        }
        if vouched {
            self.slot_mut(slot).status = SlotStatus::Installed;
        }
    }

    /// Count one failure of `kind` (`abupdate_failures_total{kind}`).
    pub fn count_failure(&mut self, kind: Kind) {
        *self
            .metrics
            .failures
            .entry(kind.as_str().to_string())
            .or_default() += 1;
    }

    /// Remember a believed `created` verified from `source` (a
    /// `manifest::source_key`). Only a `created` that
    /// `manifest::created_plausible` accepted may come here. `keep` (the
    /// configured release channel's source) is never evicted: its floor is
    /// what stops a replayed channel from undoing a withdrawal or a halt.
    ///
    /// `sha256` (of the document's bytes) becomes the floor's when `created`
    /// raises it, or equals it with no bytes known yet. Other bytes at the
    /// known date mark it conflicting: both are refused from then on, until
    /// a newer `created` (which of the two was the newer cannot be told).
    pub fn note_created(
        &mut self,
        source: &str,
        created: i64,
        sha256: &str,
        version: Option<&str>,
        keep: Option<&str>,
    ) {
        if self.newest_created.is_none_or(|c| created > c) {
            self.newest_created = Some(created);
        }
        let newest = self
            .newest_by_source
            .entry(source.to_string())
            .or_insert(created);
        *newest = (*newest).max(created);
        use crate::manifest::FloorBytes;
        if *newest == created {
            match self.floor(source).map(|f| f.bytes) {
                Some(FloorBytes::Unknown) => {
                    self.sha256_by_source.insert(
                        source.to_string(),
                        SourceDigest {
                            created,
                            sha256: sha256.to_string(),
                            conflicting: false,
                            version: version.map(str::to_string),
                        },
                    );
                }
                Some(FloorBytes::Known(known)) if known != sha256 => {
                    if let Some(d) = self.sha256_by_source.get_mut(source) {
                        // A higher release at the same date is the newer
                        // one (`manifest::against_floor`); a lower one
                        // changes nothing; one release twice is a clash.
                        match crate::manifest::release_order(version, d.version.as_deref()) {
                            Some(std::cmp::Ordering::Greater) => {
                                d.sha256 = sha256.to_string();
                                d.version = version.map(str::to_string);
                            }
                            Some(std::cmp::Ordering::Less) => {}
                            _ => d.conflicting = true,
                        }
                    }
                }
                _ => {}
            }
        }
        // Bounded: manual installs from many paths must not grow the file
        // for ever. The source with the oldest record goes first.
        while self.newest_by_source.len() > MAX_SOURCES {
            let oldest = self
                .newest_by_source
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != keep)
                .min_by_key(|(_, c)| **c)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.sha256_by_source.remove(&k);
                    self.newest_by_source.remove(&k)
                }
                None => break,
            };
        }
    }

    /// The floor kept for `source` (a `manifest::source_key`): its newest
    /// `created` and, when recorded for that very date, its bytes' SHA-256.
    pub fn floor(&self, source: &str) -> Option<crate::manifest::Floor> {
        let created = *self.newest_by_source.get(source)?;
        use crate::manifest::FloorBytes;
        let digest = self
            .sha256_by_source
            .get(source)
            .filter(|d| d.created == created);
        let bytes = match digest {
            Some(d) if d.conflicting => FloorBytes::Conflicting,
            Some(d) => FloorBytes::Known(d.sha256.clone()),
            None => FloorBytes::Unknown,
        };
        let version = digest.and_then(|d| d.version.clone());
        Some(crate::manifest::Floor {
            created,
            bytes,
            version,
        })
    }
}

/// Which of the entries `names` of `partial/` are stale: every one but the
/// partial downloads (`<sha256>.part`, [`StateDir::partial_file`]) of the
/// payloads hashing to `keep`, and their validators (`<sha256>.validator`,
/// the object's ETag for `If-Range`). `partial/` is abupdate's own
/// directory: anything else in it is a leftover too.
fn stale_partials(names: &[String], keep: &[&str]) -> Vec<String> {
    let kept = |name: &str| {
        [".part", ".validator"].iter().any(|ext| {
            name.strip_suffix(ext)
                .is_some_and(|sha| keep.contains(&sha))
        })
    };
    names.iter().filter(|name| !kept(name)).cloned().collect()
}

/// The state directory: `state.json`, `lock`, `partial/`.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state dir at `dir`.
    pub fn new(dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where `state.json` is.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Where partial downloads are kept, keyed by the payload's hash.
    pub fn partial_file(&self, download_sha256: &str) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{download_sha256}.part"))
    }

    /// Remove the partial download of the payload hashing to
    /// `download_sha256`, and the validator kept with it. Best effort.
    pub fn remove_partial(&self, download_sha256: &str) {
        let part = self.partial_file(download_sha256);
        let _ = std::fs::remove_file(crate::fetch::validator_file(&part));
        let _ = std::fs::remove_file(part);
    }

    /// Remove every partial download but those of the payloads hashing to
    /// `keep` (the release being installed: empty once it is written), so
    /// that downloads of releases replaced before they finished do not fill
    /// the data partition. Best effort: an entry that cannot be removed is
    /// left. Returns the names removed.
    pub fn prune_partials(&self, keep: &[&str]) -> Vec<String> {
        let dir = self.dir.join("partial");
        // Only in a directory of ours: never through a link to another
        // (found from outside: every file in it was removed).
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        stale_partials(&names, keep)
            .into_iter()
            .filter(|name| std::fs::remove_file(dir.join(name)).is_ok())
            .collect()
    }

    /// Create the dir (and `partial/`) if missing: mode 0755 at most, so
    /// that a umask of 0 does not leave it open to others
    /// ([`Self::open_to_others`]). Anything but a directory at `partial`
    /// (a file, a link, to a directory too) is removed first, the link and
    /// not what it names: found from outside, a stray file there stopped
    /// every command that keeps state, the boot's verdict included, and a
    /// link had `install` remove every file in the directory it named.
    pub fn ensure(&self) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        let partial = self.dir.join("partial");
        if std::fs::symlink_metadata(&partial).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(&partial).map_err(io(&partial))?;
        }
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&partial)
        {
            // The downloads' directory is made when it can be: a state
            // filesystem that takes nothing new still has a verdict to
            // make ([`Self::lock`]); a download there fails naming it.
            Err(e) if takes_nothing_new(&e) && self.dir.is_dir() => Ok(()),
            made => made.map_err(io(&partial)),
        }
    }

    /// When others than root (or the user abupdate runs as) could change
    /// the state directory ([`crate::safe_path::trusted_dir`]) or
    /// `state.json` in it, one line naming it and why: whoever writes `state.json` decides which slot is
    /// proven good, which trial has been judged and which release is the
    /// newest this host has seen (what refuses an older signed release
    /// replayed). For the command to refuse or warn about
    /// ([`crate::agent::Purpose`]). None when it is not there yet:
    /// [`Self::ensure`] makes it root's.
    pub fn open_to_others(&self) -> Option<String> {
        if std::fs::symlink_metadata(&self.dir).is_err() {
            return None;
        }
        if let Err(why) = crate::safe_path::trusted_dir(&self.dir) {
            return Some(format!(
                "{} (the state directory): {why}",
                crate::text::show_path(&self.dir)
            ));
        }
        // Written whole at mode 0644, but a chmod could open it in place.
        let state = self.state_file();
        let why = std::fs::symlink_metadata(&state)
            .ok()
            .and_then(|_| crate::safe_path::trusted_file(&state).err())?;
        Some(format!("{}: {why}", crate::text::show_path(&state)))
    }

    /// Where the last good state before the current one is kept.
    pub fn prev_file(&self) -> PathBuf {
        self.dir.join("state.json.prev")
    }

    /// The instance lock's file ([`Self::lock`]).
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Where a damaged `state.json` is kept when it is replaced.
    pub fn corrupt_file(&self) -> PathBuf {
        self.dir.join("state.json.corrupt")
    }

    /// Load the state; a missing file is a fresh host. A damaged one is
    /// never an error: see the module docs.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_file();
        let problem = match read_state(&path)? {
            Ok(state) => return Ok(state),
            Err(Unusable::Missing) => return Ok(fresh()),
            Err(Unusable::Damaged(problem)) => problem,
        };
        let prev = self.prev_file();
        let (mut state, instead) = match read_state(&prev) {
            Ok(Ok(state)) => (
                state,
                format!(
                    "using the last good copy {} (the change saved after it is lost)",
                    prev.display()
                ),
            ),
            _ => (
                fresh(),
                format!(
                    "no good copy in {}: starting from a fresh state (the failed list, slot records and counters are lost; the booted slot's record is rebuilt)",
                    prev.display()
                ),
            ),
        };
        let note = format!("{} is damaged ({problem}); {instead}", path.display());
        crate::say!("abupdate: {note}");
        state.count_failure(Kind::StateCorrupt);
        state.recovered = Some(note);
        Ok(state)
    }

    /// Replace `state.json` atomically and durably, keeping the state it
    /// replaces as `state.json.prev` when that is good, or as
    /// `state.json.corrupt` when it is damaged. Only [`StateLock::save`]
    /// calls it.
    fn write(&self, state: &State) -> Result<(), StateError> {
        self.ensure()?;
        let path = self.state_file();
        let tmp = self.dir.join("state.json.tmp");
        let mut body = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        body.push(b'\n');
        // Never a file the next load would take for damage (and so drop
        // this change and every later one with it).
        if body.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::Corrupt {
                path,
                reason: format!(
                    "not written: {} bytes, more than the {MAX_STATE_BYTES} a state may hold",
                    body.len()
                ),
            });
        }
        if crate::failpoint::state_full() {
            return Err(io(&tmp)(std::io::Error::from_raw_os_error(
                nix::libc::ENOSPC,
            )));
        }
        if let Err(e) = self.keep_previous(&path) {
            // The copy is a safety net; the save itself still matters more.
            crate::say!("abupdate: cannot keep the previous state: {e}");
        }
        let mut f = crate::files::create_replacing(&tmp).map_err(io(&tmp))?;
        if let Some(keep) = crate::failpoint::tear("state-tmp-write", body.len()) {
            let _ = f.write_all(&body[..keep]);
            let _ = f.sync_all();
            crate::failpoint::torn("state-tmp-write");
        }
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        crate::failpoint::hit("state-written");
        Ok(())
    }

    /// Copy a good `state.json` to `state.json.prev` (temp file, fsync,
    /// rename; the caller's directory fsync makes it durable with the new
    /// state), or link a damaged one to `state.json.corrupt` for a look
    /// later, leaving the last good `.prev` alone.
    fn keep_previous(&self, path: &Path) -> Result<(), StateError> {
        let mut bytes = Vec::new();
        let mut regular = true;
        match crate::files::open_regular(path) {
            Ok(f) => f
                .take(MAX_STATE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(io(path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Not a regular file (a FIFO): damaged, kept aside like one.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                regular = false;
                0
            }
            Err(e) => return Err(io(path)(e)),
        };
        if !regular || parse_state(&bytes).is_err() {
            let corrupt = self.corrupt_file();
            let _ = std::fs::remove_file(&corrupt);
            return std::fs::hard_link(path, &corrupt).map_err(io(&corrupt));
        }
        let prev = self.prev_file();
        let tmp = self.dir.join("state.json.prev.tmp");
        let mut f = crate::files::create_replacing(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &prev).map_err(io(&prev))
    }

    /// Take the exclusive instance lock, or say who holds it. The lock is
    /// what may save the state.
    ///
    /// On a state filesystem that takes nothing new (gone read-only, a
    /// data partition remounted after errors; or full, or over quota, with
    /// the lock file gone: found from outside, stop 58) the lock is taken
    /// on what can still be opened for reading, the lock file else the dir
    /// (`flock` needs no write access):
    /// the boot's verdict and its re-bless write the bootloader, not the
    /// state, and must not be lost to it; only the state's own save fails.
    ///
    /// A lock on a file that no longer stands at its name locks nothing (the
    /// state dir removed and made again by another run between our open
    /// and our lock, found from outside: two installs then wrote one slot):
    /// it is taken again on what stands there now, and the holder checks
    /// it before every save ([`StateLock::save`]).
    pub fn lock(&self) -> Result<StateLock, StateError> {
        for _ in 0..LOCK_ATTEMPTS {
            if let Some(lock) = self.lock_once()? {
                return Ok(lock);
            }
        }
        Err(StateError::LockLost {
            path: self.dir.join("lock"),
        })
    }

    /// [`Self::lock`], waiting up to `wait` while another instance holds
    /// it (asked again every quarter second): for a command that must not
    /// be lost to a short one run by hand, the boot's verdict.
    pub fn lock_within(&self, wait: std::time::Duration) -> Result<StateLock, StateError> {
        let deadline = crate::child::deadline_after(std::time::Instant::now(), wait);
        loop {
            match self.lock() {
                Err(StateError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    std::thread::sleep(left.min(std::time::Duration::from_millis(250)));
                }
                taken => return taken,
            }
        }
    }

    /// One attempt of [`Self::lock`]: `None` when the file locked was
    /// replaced before the lock was taken.
    fn lock_once(&self) -> Result<Option<StateLock>, StateError> {
        self.ensure()?;
        let path = self.lock_file();
        let (mut file, locked) = match open_lock_file(&path) {
            Err(e) if takes_nothing_new(&e) => match crate::files::open_regular(&path) {
                Ok(f) => (f, path.clone()),
                Err(_) => (File::open(&self.dir).map_err(io(&path))?, self.dir.clone()),
            },
            opened => (opened.map_err(io(&path))?, path.clone()),
        };
        let fd = file.as_fd().try_clone_to_owned().map_err(io(&path))?;
        match nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let identity = file_identity(&file.metadata().map_err(io(&path))?);
                if !stands_at(&locked, identity) {
                    return Ok(None);
                }
                let _ = file.set_len(0);
                let _ = file.seek(SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Some(StateLock {
                    dir: self.clone(),
                    locked,
                    identity,
                    _lock: lock,
                }))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                // A pid; whatever else was left there is not read whole.
                let _ = (&mut file).take(64).read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("pid {pid}"),
                };
                Err(StateError::Locked { path, holder })
            }
            Err((_, e)) => Err(StateError::Io {
                path,
                source: e.into(),
            }),
        }
    }
}

/// Whether making a file or directory failed because the filesystem takes
/// nothing new: read-only, full, or over quota ([`StateDir::lock`]).
fn takes_nothing_new(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EROFS | nix::libc::ENOSPC | nix::libc::EDQUOT)
    )
}

/// The exclusive instance lock of one state dir, held for the life of a
/// command that may change the host. Only its holder saves the state.
pub struct StateLock {
    dir: StateDir,
    /// What was locked (the lock file; the state dir on a read-only
    /// filesystem) and its (st_dev, st_ino).
    locked: PathBuf,
    identity: (u64, u64),
    _lock: nix::fcntl::Flock<std::os::fd::OwnedFd>,
}

impl StateLock {
    /// Replace `state.json` atomically and durably (see [`StateDir`]'s
    /// module docs): only the holder of the lock writes it, and only while
    /// its lock still stands at its name (else [`StateError::LockLost`]:
    /// the directory was replaced under the run, and the state in it is
    /// another run's).
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        if !stands_at(&self.locked, self.identity) {
            return Err(StateError::LockLost {
                path: self.locked.clone(),
            });
        }
        self.dir.write(state)
    }

    /// `state.json`, for messages.
    pub fn state_file(&self) -> PathBuf {
        self.dir.state_file()
    }
}

/// Attempts of [`StateDir::lock`] when the lock file is replaced under it.
const LOCK_ATTEMPTS: u32 = 3;

fn file_identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Whether the file with `identity` is what stands at `path` now.
fn stands_at(path: &Path, identity: (u64, u64)) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| file_identity(&m) == identity)
}

/// The lock file, opened to be written (the holder's pid goes in it): a
/// regular file only. What else stands at its name (a symlink to a disk, a
/// FIFO, a device) is never opened to be written, let alone truncated: it
/// is removed and the lock file made anew, once.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Only root may open it: `flock` needs no more than a read-only open,
    // so a lock file others can read is one any user can hold, and with
    // it withhold a trial's verdict until the bootloader falls back and
    // the release is blamed (found from outside). One that others could
    // open (made by an earlier version, 0644) is made anew, so a
    // descriptor opened on it before locks nothing now; a run holding the
    // old one finds its lock lost before it saves ([`StateLock::save`]).
    if std::fs::symlink_metadata(path)
        .is_ok_and(|m| !m.is_file() || m.permissions().mode() & 0o077 != 0)
    {
        match std::fs::remove_file(path) {
            // Another run made it anew first.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // Not following a link put there since, not waiting on a FIFO.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    #[test]
    fn partials_of_other_payloads_are_stale_and_those_being_downloaded_are_kept() {
        let names: Vec<String> = [
            "aa.part",
            "bb.part",
            "cc.part",
            "aa",
            "bb.part.tmp",
            "aa.validator",
            "bb.validator",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            super::stale_partials(&names, &["aa", "cc"]),
            ["bb.part", "aa", "bb.part.tmp", "bb.validator"]
        );
        assert_eq!(super::stale_partials(&names, &[]), names);
        assert!(super::stale_partials(&[], &["aa"]).is_empty());
    }

    #[test]
    fn anything_but_a_directory_at_partial_is_replaced_and_what_a_link_names_is_untouched() {
        let d = crate::testutil::TempDir::new("partial-not-a-dir");
        let sd = super::StateDir::new(d.path());
        let partial = d.path().join("partial");
        // A stray file: replaced by the directory.
        std::fs::write(&partial, "stray").expect("file");
        sd.ensure().expect("a file at partial/ is replaced");
        assert!(std::fs::symlink_metadata(&partial).expect("dir").is_dir());
        // A link to another directory: the link goes, never a file it names,
        // neither by `ensure` nor by a prune before it.
        let other = d.path().join("other");
        std::fs::create_dir(&other).expect("other");
        std::fs::write(other.join("passwd"), "keep").expect("victim");
        std::fs::remove_dir(&partial).expect("rmdir");
        std::os::unix::fs::symlink(&other, &partial).expect("link");
        assert!(
            sd.prune_partials(&[]).is_empty(),
            "nothing pruned through a link"
        );
        sd.ensure().expect("a link at partial/ is replaced");
        assert!(std::fs::symlink_metadata(&partial).expect("dir").is_dir());
        assert_eq!(
            std::fs::read(other.join("passwd")).expect("victim"),
            b"keep"
        );
        // A dangling link too.
        std::fs::remove_dir(&partial).expect("rmdir");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &partial).expect("link");
        sd.ensure()
            .expect("a dangling link at partial/ is replaced");
        assert!(std::fs::symlink_metadata(&partial).expect("dir").is_dir());
    }

    #[test]
    fn prune_partials_removes_what_is_stale_and_leaves_what_is_kept() {
        let d = crate::testutil::TempDir::new("prune-partials");
        let sd = super::StateDir::new(d.path());
        // No `partial/` yet: nothing to do, no error.
        assert!(sd.prune_partials(&["aa"]).is_empty());
        sd.ensure().expect("dirs");
        for sha in ["aa", "bb", "cc"] {
            std::fs::write(sd.partial_file(sha), sha).expect("partial");
        }
        let mut removed = sd.prune_partials(&["bb"]);
        removed.sort();
        assert_eq!(removed, ["aa.part", "cc.part"]);
        assert!(sd.partial_file("bb").exists());
        assert!(!sd.partial_file("aa").exists() && !sd.partial_file("cc").exists());
        assert_eq!(sd.prune_partials(&[]), ["bb.part"]);
        // One payload's partial goes with its validator.
        std::fs::write(sd.partial_file("aa"), "aa").expect("partial");
        std::fs::write(d.path().join("partial/aa.validator"), "\"v1\"").expect("validator");
        sd.remove_partial("aa");
        assert!(sd.prune_partials(&[]).is_empty());
    }

    use super::*;
    use crate::testutil::TempDir;

    fn tmpdir(name: &str) -> TempDir {
        TempDir::new(&format!("state-{name}"))
    }

    /// Whoever can write the state dir decides which slot is proven good
    /// and which release is the newest seen: one others could change, or a
    /// `state.json` opened in place, is named with why; one not there yet,
    /// or root's alone, is not.
    #[test]
    fn a_state_directory_others_could_change_is_named_with_why() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("open");
        let sd = StateDir::new(&dir.join("state"));
        assert_eq!(sd.open_to_others(), None, "not there yet");
        sd.ensure().expect("made");
        assert_eq!(sd.open_to_others(), None, "made root's");
        let state = sd.state_file();
        sd.lock().expect("lock").save(&fresh()).expect("save");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o646)).expect("chmod");
        assert_eq!(
            sd.open_to_others(),
            Some(format!(
                "{}: writable by group or others (mode 0646): others could change it; root would \
                 trust what they put there (chmod go-w)",
                state.display()
            ))
        );
        sd.lock().expect("lock").save(&fresh()).expect("save again");
        assert_eq!(sd.open_to_others(), None, "a save puts it right");
        std::fs::set_permissions(sd.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(
            sd.open_to_others(),
            Some(format!(
                "{} (the state directory): writable by group or others (mode 0777): others could \
                 add or replace files in it; root would trust what they put there (chmod go-w)",
                sd.path().display()
            ))
        );
    }

    #[test]
    fn saves_and_loads_round_trip() {
        let dir = tmpdir("rt");
        let sd = StateDir::new(&dir);
        let mut s = sd.load().expect("fresh");
        assert_eq!(s.format, STATE_FORMAT);
        s.slots.insert(
            SlotName::B,
            SlotRecord {
                status: SlotStatus::Installed,
                version: Some("2".into()),
                ..Default::default()
            },
        );
        s.record_failed("3", "ff", "health", 7);
        s.record_failed("3", "ff", "again", 8);
        sd.lock().expect("lock").save(&s).expect("save");
        let back = sd.load().expect("load");
        assert_eq!(back, s);
        assert_eq!(back.failed.len(), 1);
        assert!(!sd.path().join("state.json.tmp").exists());
    }

    /// Found from outside (a host whose every nightly failed its checks
    /// for years): the failed list grew 336 to 1,302 bytes a release, and
    /// after ~800 releases `state.json` passed the size a load takes, read
    /// as damaged, and no change stuck again. The list keeps the highest
    /// versions, each reason cut, and the saved file stays small.
    #[test]
    fn the_failed_list_keeps_its_highest_versions_within_its_bound() {
        let dir = tmpdir("bounded");
        let sd = StateDir::new(&dir);
        let mut s = sd.load().expect("fresh");
        let long = "x".repeat(5000);
        // Out of order: the lowest versions go, not the oldest entries.
        for n in (1..=150).rev().chain(151..=1000) {
            s.record_failed(&format!("1.{n}"), &"f".repeat(64), &long, n);
        }
        assert_eq!(s.failed.len(), MAX_FAILED_RELEASES);
        let lowest = 1000 - MAX_FAILED_RELEASES + 1;
        assert!(s.holds(&format!("1.{lowest}")) && s.holds("1.1000"));
        assert!(!s.holds(&format!("1.{}", lowest - 1)) && !s.holds("1.1"));
        assert!(s
            .failed
            .iter()
            .all(|f| f.reason.len() <= MAX_FAILED_REASON_BYTES && f.reason.starts_with("xxx")));
        sd.lock().expect("lock").save(&s).expect("save");
        let bytes = std::fs::metadata(sd.state_file()).expect("state").len();
        assert!(bytes < 64 << 10, "{bytes} bytes");
        assert_eq!(sd.load().expect("load"), s);
    }

    #[test]
    fn the_failed_list_bound_never_drops_a_running_probations_own_entry() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        s.commit(&t, 10, 3600, Some("boot-2".into()));
        assert_eq!(s.on_probation().map(|p| p.version.as_str()), Some("2.0"));
        // Every other entry is newer than the release on probation.
        for n in 1..=2 * MAX_FAILED_RELEASES {
            s.record_failed(&format!("3.{n}"), "ff", "checks", 20 + n as i64);
        }
        assert_eq!(s.failed.len(), MAX_FAILED_RELEASES);
        assert!(s.failed.iter().any(|f| f.provisional && f.version == "2.0"));
        // Once its probation ends, it is an entry like any other.
        s.probation = None;
        s.record_failed("3.999", "ff", "checks", 999);
        assert!(!s.failed.iter().any(|f| f.version == "2.0"));
    }

    /// A state the next load would take for damage is never written: the
    /// save fails, and the file on disk stays the last good one.
    #[test]
    fn a_state_too_large_to_load_is_refused_not_written() {
        let dir = tmpdir("too-large");
        let sd = StateDir::new(&dir);
        let mut s = sd.load().expect("fresh");
        s.record_failed("3", "ff", "health", 7);
        let lock = sd.lock().expect("lock");
        lock.save(&s).expect("save");
        let before = std::fs::read(sd.state_file()).expect("state");
        s.failed[0].unknown.insert(
            "note".into(),
            serde_json::Value::String("y".repeat(MAX_STATE_BYTES as usize)),
        );
        let e = lock.save(&s).expect_err("too large");
        assert!(e.to_string().contains("not written"), "{e}");
        assert_eq!(std::fs::read(sd.state_file()).expect("state"), before);
    }

    /// Found from outside (stop 47): a FIFO at `state.json.tmp` or
    /// `state.json.prev.tmp` held `health` for ever with the lock taken
    /// (after its commit was written to the bootloader), and a symlink at
    /// `lock` or at a temporary file had the pid or the state written
    /// wherever it pointed (a disk's first sector). Nothing at those names
    /// is opened to be written: it is replaced.
    #[test]
    fn nothing_standing_at_the_state_dirs_own_names_is_written_through() {
        let dir = tmpdir("foreign");
        let sd = StateDir::new(&dir);
        let s = sd.load().expect("fresh");
        sd.lock().expect("lock").save(&s).expect("first save");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        for name in ["state.json.tmp", "state.json.prev.tmp"] {
            let fifo = dir.path().join(name);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
        }
        std::fs::remove_file(dir.path().join("lock")).expect("rm lock");
        std::os::unix::fs::symlink(&victim, dir.path().join("lock")).expect("symlink");
        let mut s = sd.load().expect("load");
        s.metrics.installs += 1;
        // A FIFO would have blocked this save for ever: the test would hang.
        sd.lock().expect("lock").save(&s).expect("save over FIFOs");
        assert_eq!(sd.load().expect("load"), s);
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert!(std::fs::symlink_metadata(dir.path().join("lock"))
            .expect("lock")
            .is_file());
        assert!(
            std::fs::symlink_metadata(dir.path().join("state.json.prev"))
                .expect("prev")
                .is_file()
        );
        // A symlink at the temporary file: replaced, the target untouched.
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).expect("symlink");
        s.metrics.installs += 1;
        sd.lock()
            .expect("lock")
            .save(&s)
            .expect("save over a symlink");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert!(std::fs::symlink_metadata(sd.state_file())
            .expect("state")
            .is_file());
        assert_eq!(sd.load().expect("load"), s);
    }

    /// Two saves: `first` (failed list: 3.0) then a second with one more
    /// install; returns the second.
    fn two_saves(sd: &StateDir) -> (State, State) {
        let mut first = sd.load().expect("fresh");
        first.record_failed("3.0", "ff", "health", 7);
        sd.lock().expect("lock").save(&first).expect("first save");
        let mut second = first.clone();
        second.metrics.installs += 1;
        sd.lock().expect("lock").save(&second).expect("second save");
        (first, second)
    }

    #[test]
    fn the_failed_list_compares_versions_and_old_files_load() {
        // A state file written before versions were compared as numbers.
        let old = br#"{"format":1,"failed":[{"version":"3.0","manifest_sha256":"ff","reason":"health","at":7}],"newest_created":1795168800}"#;
        let dir = tmpdir("failed-versions");
        let sd = StateDir::new(&dir);
        sd.ensure().expect("mkdir");
        std::fs::write(sd.state_file(), old).expect("write");
        let mut s = sd.load().expect("an old state file loads");
        assert!(s.newest_by_source.is_empty());
        s.record_failed("3.0.0", "ee", "health", 8);
        assert_eq!(s.failed.len(), 1, "3.0.0 is the 3.0 already listed");
        s.record_failed("3.0.1", "dd", "health", 9);
        assert_eq!(s.failed_versions(true), ["3.0", "3.0.1"]);
    }

    #[test]
    fn the_floor_records_the_bytes_verified_at_its_created_and_old_files_load() {
        // A state file written before the floor kept the bytes: unknown.
        let old = br#"{"format":1,"newest_created":100,"newest_by_source":{"https://c/channel.json":100}}"#;
        let dir = tmpdir("floor-digests");
        let sd = StateDir::new(&dir);
        sd.ensure().expect("mkdir");
        std::fs::write(sd.state_file(), old).expect("write");
        let mut s = sd.load().expect("an old state file loads");
        let src = "https://c/channel.json";
        use crate::manifest::FloorBytes;
        let bytes = |s: &State| s.floor(src).expect("a floor").bytes;
        assert_eq!(bytes(&s), FloorBytes::Unknown);
        // The next document at that date is taken and its bytes recorded.
        s.note_created(src, 100, "aa", None, None);
        assert_eq!(bytes(&s), FloorBytes::Known("aa".into()));
        // The same again changes nothing; an older date leaves the floor.
        s.note_created(src, 100, "aa", None, None);
        s.note_created(src, 90, "cc", None, None);
        assert_eq!(bytes(&s), FloorBytes::Known("aa".into()));
        // Other bytes at that date: neither is taken from then on.
        s.note_created(src, 100, "bb", None, None);
        assert_eq!(bytes(&s), FloorBytes::Conflicting);
        sd.lock().expect("lock").save(&s).expect("save");
        assert_eq!(sd.load().expect("load"), s, "the conflict is kept");
        // A newer date moves the floor, bytes and all.
        s.note_created(src, 101, "dd", None, None);
        assert_eq!(s.floor(src).expect("floor").created, 101);
        assert_eq!(bytes(&s), FloorBytes::Known("dd".into()));
        // A date raised by an abupdate that kept no bytes (after a
        // rollback): the recorded bytes belong to another date, unknown.
        s.newest_by_source.insert(src.into(), 102);
        assert_eq!(bytes(&s), FloorBytes::Unknown);
        sd.lock().expect("lock").save(&s).expect("save");
        assert_eq!(sd.load().expect("load"), s);
    }

    #[test]
    fn created_is_remembered_per_source_and_the_sources_are_bounded() {
        let mut s = State::default();
        s.note_created("https://a/r.json", 100, "00", None, None);
        s.note_created("https://a/r.json", 50, "00", None, None);
        s.note_created("https://b/r.json", 70, "00", None, None);
        assert_eq!(s.newest_by_source["https://a/r.json"], 100);
        assert_eq!(s.newest_by_source["https://b/r.json"], 70);
        assert_eq!(s.newest_created, Some(100));
        for i in 0..100 {
            s.note_created(
                &format!("/usb/{i}/release.json"),
                1000 + i,
                "00",
                None,
                None,
            );
        }
        assert_eq!(s.newest_by_source.len(), MAX_SOURCES);
        // The sources with the oldest records went first.
        assert!(!s.newest_by_source.contains_key("https://a/r.json"));
        assert!(!s.sha256_by_source.contains_key("https://a/r.json"));
        assert!(s.newest_by_source.contains_key("/usb/99/release.json"));
        assert_eq!(s.newest_created, Some(1099));
    }

    #[test]
    fn the_configured_channels_floor_is_never_evicted() {
        let mut s = State::default();
        let channel = Some("https://c/channel.json");
        s.note_created("https://c/channel.json", 10, "00", None, channel);
        for i in 0..100 {
            s.note_created(
                &format!("/usb/{i}/release.json"),
                1000 + i,
                "00",
                None,
                channel,
            );
        }
        assert_eq!(s.newest_by_source.len(), MAX_SOURCES);
        assert_eq!(s.newest_by_source["https://c/channel.json"], 10);
        assert!(s.newest_by_source.contains_key("/usb/99/release.json"));
    }

    #[test]
    fn the_state_before_each_replace_is_kept_as_prev() {
        let dir = tmpdir("prev");
        let sd = StateDir::new(&dir);
        let (first, second) = two_saves(&sd);
        let prev = |sd: &StateDir| {
            serde_json::from_slice::<State>(&std::fs::read(sd.prev_file()).expect("prev"))
                .expect("prev parses")
        };
        assert_eq!(prev(&sd), first);
        let mut third = second.clone();
        third.metrics.commits += 1;
        sd.lock().expect("lock").save(&third).expect("third save");
        assert_eq!(prev(&sd), second);
        assert_eq!(sd.load().expect("load"), third);
        assert!(!sd.path().join("state.json.prev.tmp").exists());
    }

    #[test]
    fn a_fifo_at_state_json_is_damage_never_a_hang() {
        let dir = tmpdir("fifo");
        let sd = StateDir::new(&dir);
        let (first, _) = two_saves(&sd);
        std::fs::remove_file(sd.state_file()).expect("rm");
        nix::unistd::mkfifo(
            &sd.state_file(),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let back = sd.load().expect("a FIFO is damage, not an error");
        assert_eq!(back.failed, first.failed, "the last good copy is used");
        let note = back.recovered.clone().expect("recovery noted");
        assert!(note.contains("not a regular file"), "{note}");
        // The next save puts a file in its place and the FIFO aside.
        sd.lock().expect("lock").save(&back).expect("save");
        assert!(std::fs::metadata(sd.state_file()).expect("state").is_file());
        assert!(!std::fs::metadata(sd.corrupt_file())
            .expect("corrupt")
            .is_file());
        assert_eq!(sd.load().expect("load").recovered, None);
    }

    #[test]
    fn a_damaged_state_falls_back_to_the_last_good_copy() {
        let dir = tmpdir("damaged");
        let sd = StateDir::new(&dir);
        let (first, _) = two_saves(&sd);
        let full = std::fs::read(sd.state_file()).expect("state");
        std::fs::write(sd.state_file(), &full[..full.len() / 2]).expect("truncate");
        let back = sd.load().expect("a damaged state is not an error");
        assert_eq!(back.failed, first.failed, "the failed list is lost");
        assert_eq!(back.metrics.failures.get(STATE_CORRUPT_KIND), Some(&1));
        let note = back.recovered.clone().expect("recovery noted");
        assert!(note.contains("state.json is damaged"), "{note}");
        assert!(note.contains("state.json.prev"), "{note}");
        // The next save repairs it, keeps the damaged bytes aside and
        // leaves the last good copy alone.
        sd.lock().expect("lock").save(&back).expect("save");
        assert_eq!(
            std::fs::read(sd.corrupt_file()).expect("corrupt kept"),
            full[..full.len() / 2]
        );
        let again = sd.load().expect("load");
        assert_eq!(again.recovered, None);
        assert_eq!(again.failed, first.failed);
        assert_eq!(again.metrics.failures.get(STATE_CORRUPT_KIND), Some(&1));
        let prev: State =
            serde_json::from_slice(&std::fs::read(sd.prev_file()).expect("prev")).expect("prev");
        assert_eq!(prev, first);
    }

    #[test]
    fn a_damaged_state_without_a_good_copy_loads_fresh_and_says_so() {
        let dir = tmpdir("no-prev");
        let sd = StateDir::new(&dir);
        let mut s = sd.load().expect("fresh");
        s.record_failed("3.0", "ff", "health", 7);
        sd.lock().expect("lock").save(&s).expect("save");
        assert!(!sd.prev_file().exists());
        std::fs::write(sd.state_file(), b"").expect("truncate");
        let back = sd.load().expect("a damaged state is not an error");
        assert_eq!(back.format, STATE_FORMAT);
        assert!(back.failed.is_empty() && back.slots.is_empty());
        assert_eq!(back.metrics.failures.get(STATE_CORRUPT_KIND), Some(&1));
        let note = back.recovered.expect("recovery noted");
        assert!(note.contains("fresh state"), "{note}");
        // A damaged copy is no better.
        std::fs::write(sd.prev_file(), b"{\"format\":1,").expect("damaged prev");
        assert!(sd.load().expect("load").failed.is_empty());
    }

    #[test]
    fn a_state_file_over_the_cap_is_not_read_and_counts_as_damaged() {
        let dir = tmpdir("cap");
        let sd = StateDir::new(&dir);
        let (first, second) = two_saves(&sd);
        // Valid JSON, one byte over the cap: read whole it would load.
        let mut big = serde_json::to_vec(&second).expect("json");
        big.resize(MAX_STATE_BYTES as usize + 1, b' ');
        std::fs::write(sd.state_file(), &big).expect("pad");
        let back = sd.load().expect("load");
        assert_eq!(back.metrics.installs, first.metrics.installs);
        let note = back.recovered.expect("recovery noted");
        assert!(
            note.contains(&format!("larger than {MAX_STATE_BYTES} bytes")),
            "{note}"
        );
    }

    #[test]
    fn unknown_fields_survive_a_load_and_save() {
        let dir = tmpdir("unknown");
        let sd = StateDir::new(&dir);
        sd.ensure().expect("mkdir");
        let newer = serde_json::json!({
            "format": 1,
            "channel_floor": {"stable": 5},
            "slots": {"A": {"status": "good", "version": "1.0", "slot_hint": "x",
                            "images": {"rootfs": {"sha256": "aa", "size": 1, "verity": "r"}}}},
            "transaction": {"from": "A", "to": "B", "version": "2.0", "manifest_sha256": "bb",
                            "phase": "staged", "started": 1, "images": {}, "attempt": 2},
            "failed": [{"version": "3.0", "manifest_sha256": "cc", "reason": "r", "at": 1,
                        "channel": "beta"}],
            "last_check": {"url": "u", "at": 1, "mirror": "m"},
            "metrics": {"installs": 1, "probation_resets": 4},
            "source_hashes": [{"boot_id": "b", "device": "d", "size": 1, "sha256": "dd",
                               "region": [0, 1]}]
        });
        std::fs::write(sd.state_file(), serde_json::to_vec(&newer).expect("json")).expect("w");
        let mut s = sd.load().expect("load");
        assert_eq!(s.recovered, None);
        s.metrics.installs += 1;
        s.slots.get_mut(&SlotName::A).expect("A").status = SlotStatus::Bad;
        sd.lock().expect("lock").save(&s).expect("save");
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sd.state_file()).expect("read")).expect("json");
        assert_eq!(saved["channel_floor"], newer["channel_floor"]);
        assert_eq!(saved["slots"]["A"]["slot_hint"], "x");
        assert_eq!(saved["slots"]["A"]["status"], "bad");
        assert_eq!(saved["slots"]["A"]["images"]["rootfs"]["verity"], "r");
        assert_eq!(saved["transaction"]["attempt"], 2);
        assert_eq!(saved["failed"][0]["channel"], "beta");
        assert_eq!(saved["last_check"]["mirror"], "m");
        assert_eq!(saved["metrics"]["probation_resets"], 4);
        assert_eq!(saved["metrics"]["installs"], 2);
        assert_eq!(
            saved["source_hashes"][0]["region"],
            newer["source_hashes"][0]["region"]
        );
    }

    #[test]
    fn unknown_floats_and_big_numbers_in_flattened_records_load_and_save_as_written() {
        // serde's `flatten` buffers a record before serde_json's exact
        // numbers (`arbitrary_precision`) reach it: a non-integer there
        // must still load, and every number save back digit for digit.
        let dir = tmpdir("unknown-numbers");
        let sd = StateDir::new(&dir);
        sd.ensure().expect("mkdir");
        let newer = r#"{"format": 1,
            "slots": {"A": {"status": "good", "version": "1.0", "weight": 1.5,
                            "big": 123456789012345678901234567890,
                            "images": {"rootfs": {"sha256": "aa", "size": 1, "ratio": 0.25}}}},
            "failed": [{"version": "3.0", "manifest_sha256": "cc", "reason": "r", "at": 1,
                        "score": 2.0e-3}],
            "metrics": {"installs": 1, "mean_seconds": 12.75}}"#;
        std::fs::write(sd.state_file(), newer).expect("w");
        let s = sd.load().expect("load");
        assert_eq!(
            s.slots.get(&SlotName::A).expect("A").status,
            SlotStatus::Good
        );
        sd.lock().expect("lock").save(&s).expect("save");
        let saved = std::fs::read_to_string(sd.state_file()).expect("read");
        for kept in [
            "\"weight\":1.5",
            "\"big\":123456789012345678901234567890",
            "\"ratio\":0.25",
            "\"mean_seconds\":12.75",
        ] {
            assert!(
                saved.replace([' ', '\n'], "").contains(kept),
                "{kept} in {saved}"
            );
        }
    }

    /// `state.json` files written by release 0.1 (`tests/fixtures/`, taken
    /// from real runs: a staged update, a write cut by a crash, a trial
    /// rolled back) load with every typed field read, and save back to the
    /// same JSON: the serde names did not change.
    #[test]
    fn state_files_of_release_0_1_load_and_save_back_unchanged() {
        let fixtures: [(&str, &[u8]); 3] = [
            (
                "staged",
                include_bytes!("../tests/fixtures/state-v0.1-staged.json"),
            ),
            (
                "writing",
                include_bytes!("../tests/fixtures/state-v0.1-writing.json"),
            ),
            (
                "rolled-back",
                include_bytes!("../tests/fixtures/state-v0.1-rolled-back.json"),
            ),
        ];
        for (name, bytes) in fixtures {
            let dir = tmpdir(&format!("v0.1-{name}"));
            let sd = StateDir::new(&dir);
            sd.ensure().expect("mkdir");
            std::fs::write(sd.state_file(), bytes).expect("write");
            let s = sd.load().expect("load");
            assert_eq!(s.recovered, None, "{name}: loaded as damaged");
            assert!(s.unknown.is_empty(), "{name}: fields not read");
            for rec in s.slots.values() {
                assert!(rec.unknown.is_empty(), "{name}: slot fields not read");
                assert!(
                    !matches!(rec.status, SlotStatus::Other(_)),
                    "{name}: {} not read as a known status",
                    rec.status
                );
            }
            match name {
                "staged" => {
                    assert_eq!(s.slot(SlotName::A).status, SlotStatus::Installed);
                    assert_eq!(s.slot(SlotName::B).status, SlotStatus::Good);
                    let t = s.transaction.as_ref().expect("transaction");
                    assert_eq!(
                        (t.from, t.to, t.phase),
                        (SlotName::B, SlotName::A, Phase::Staged)
                    );
                    assert!(t.staged_boot_id.is_some());
                }
                "writing" => {
                    assert_eq!(s.slot(SlotName::A).status, SlotStatus::Installing);
                    let t = s.transaction.as_ref().expect("transaction");
                    assert_eq!(t.phase, Phase::Writing);
                }
                _ => {
                    assert_eq!(s.slot(SlotName::A).status, SlotStatus::Bad);
                    assert_eq!(s.failed_versions(true), ["3.0"]);
                    assert_eq!(s.metrics.failures.get("health"), Some(&1));
                }
            }
            sd.lock().expect("lock").save(&s).expect("save");
            let read = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json");
            assert_eq!(
                read(&std::fs::read(sd.state_file()).expect("saved")),
                read(bytes),
                "{name}: saved back differently"
            );
        }
    }

    #[test]
    fn a_slot_status_this_version_does_not_know_is_kept_and_never_usable() {
        let rec: SlotRecord =
            serde_json::from_str(r#"{"status": "probation", "version": "2.0"}"#).expect("json");
        assert_eq!(rec.status, SlotStatus::Other("probation".into()));
        assert!(!rec.status.is_usable());
        assert_eq!(
            serde_json::to_value(&rec).expect("json")["status"],
            "probation"
        );
        for (name, status) in [
            ("empty", SlotStatus::Empty),
            ("installing", SlotStatus::Installing),
            ("installed", SlotStatus::Installed),
            ("good", SlotStatus::Good),
            ("bad", SlotStatus::Bad),
            ("failing", SlotStatus::Failing),
        ] {
            assert_eq!(SlotStatus::parse(name), status);
            assert_eq!(serde_json::to_value(&status).expect("json"), name);
            assert_eq!(
                status.is_usable(),
                matches!(status, SlotStatus::Good | SlotStatus::Installed)
            );
        }
    }

    /// A slot kept failing its checks is good again only through
    /// [`State::checks_passed`] (or the operator's `mark-good`): a re-bless
    /// leaves it failing, and keeping it names the release that runs.
    #[test]
    fn a_slot_kept_failing_is_good_only_once_its_checks_pass() {
        let mut s = State::default();
        assert!(s.keep_failing(SlotName::B, Some("3.0".into())));
        let rec = s.slot(SlotName::B);
        assert_eq!(
            (&rec.status, rec.version.as_deref()),
            (&SlotStatus::Failing, Some("3.0"))
        );
        assert!(
            !s.keep_failing(SlotName::B, Some("3.0".into())),
            "unchanged"
        );
        assert!(
            !s.bless(SlotName::B, || None),
            "a re-bless keeps it failing"
        );
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Failing);
        assert!(!s.checks_passed(SlotName::A), "only a failing slot changes");
        assert_eq!(s.slot(SlotName::A).status, SlotStatus::Empty);
        assert!(s.checks_passed(SlotName::B));
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Good);
        // The record names the release that runs: one of another release
        // (a stale copy's) is replaced, with what it said of that release.
        let rec = s.slot_mut(SlotName::B);
        rec.manifest_sha256 = Some("00".repeat(32));
        rec.installed_at = Some(1);
        assert!(s.keep_failing(SlotName::B, Some("4.0".into())));
        let rec = s.slot(SlotName::B);
        assert_eq!(
            (
                rec.version.as_deref(),
                &rec.manifest_sha256,
                rec.installed_at
            ),
            (Some("4.0"), &None, None)
        );
        // An unknown running release leaves the name the record has.
        assert!(!s.keep_failing(SlotName::B, None));
        assert_eq!(s.slot(SlotName::B).version.as_deref(), Some("4.0"));
    }

    fn transaction(from: SlotName, phase: Phase) -> Transaction {
        Transaction {
            from,
            to: from.other(),
            version: "2.0".into(),
            manifest_sha256: "aa".into(),
            phase,
            started: 1,
            staged_boot_id: None,
            images: BTreeMap::from([(
                "rootfs".to_string(),
                ImageRef {
                    sha256: "bb".into(),
                    size: 7,
                    ..Default::default()
                },
            )]),
            unknown: Unknown::new(),
        }
    }

    /// Found from outside (stop 47): a state whose transaction named one
    /// slot twice (a hand edit) had `health` judge the wrong slot: it
    /// blamed the release for a trial it never checked. Such a state is
    /// damaged: the last good copy is used, and it says so.
    #[test]
    fn a_transaction_from_a_slot_to_itself_is_a_damaged_state() {
        let dir = tmpdir("self-transaction");
        let sd = StateDir::new(&dir);
        let (first, mut second) = two_saves(&sd);
        let mut t = transaction(SlotName::B, Phase::Staged);
        t.to = SlotName::B;
        second.transaction = Some(t);
        let text = serde_json::to_vec(&second).expect("json");
        std::fs::write(sd.state_file(), &text).expect("write");
        let back = sd.load().expect("a damaged state is not an error");
        assert_eq!(back.transaction, None);
        assert_eq!(back.failed, first.failed);
        let note = back.recovered.expect("recovery noted");
        assert!(
            note.contains("its transaction goes from slot B to slot B"),
            "{note}"
        );
    }

    #[test]
    fn an_install_writes_then_stages_or_abandons_its_target() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Writing);
        s.begin_write(t.clone());
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Installing);
        assert_eq!(s.transaction.as_ref(), Some(&t));
        let mut failed = s.clone();
        failed.abandon_write(SlotName::B);
        assert_eq!(failed.slot(SlotName::B).status, SlotStatus::Bad);
        assert_eq!(failed.transaction, None);

        s.stage(&t, Some("boot-1".into()), 9);
        let rec = s.slot(SlotName::B);
        assert_eq!(rec.status, SlotStatus::Installed);
        assert_eq!(rec.version.as_deref(), Some("2.0"));
        assert_eq!(rec.manifest_sha256.as_deref(), Some("aa"));
        assert_eq!(rec.images, t.images);
        assert_eq!(rec.installed_at, Some(9));
        let staged = s.transaction.as_ref().expect("staged");
        assert_eq!(staged.phase, Phase::Staged);
        assert_eq!(staged.staged_boot_id.as_deref(), Some("boot-1"));
        assert_eq!(s.metrics.installs, 1);
    }

    #[test]
    fn an_operators_cancel_holds_the_release_from_the_timer_until_staged_by_hand() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        s.cancel(&t, "cancelled by the operator", 10);
        assert_eq!(s.transaction, None, "nothing pending: no trial at boot");
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Bad);
        assert_eq!(s.failed[0].hold, Hold::Cancelled);
        assert_eq!(s.failed_versions(false), ["2.0"], "the timer holds it");
        assert!(s.failed_versions(true).is_empty(), "the operator may not");
        assert_eq!(s.cancelled_versions(), ["2.0"]);
        // Saved as `"hold": "cancelled"`, read back the same; a failure
        // leaves the field out, as older versions wrote it.
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["failed"][0]["hold"], "cancelled");
        let back: State = serde_json::from_value(json).expect("read");
        assert_eq!(back.failed, s.failed);
        // An install by hand staging it lifts the cancel.
        let mut again = s.clone();
        again.stage(&transaction(SlotName::A, Phase::Writing), None, 11);
        assert!(again.failed.is_empty(), "{:?}", again.failed);
        // A failure hardens a cancel (also spelt otherwise); a cancel
        // never softens a failure.
        let mut hard = s.clone();
        hard.record_failed("2.0.0", "cc", "checks failed", 12);
        assert_eq!(hard.failed.len(), 1);
        assert_eq!(
            (hard.failed[0].hold.clone(), hard.failed[0].at),
            (Hold::Failed, 12)
        );
        assert!(serde_json::to_value(&hard).expect("json")["failed"][0]
            .get("hold")
            .is_none());
        hard.cancel(&t, "cancelled", 13);
        assert_eq!(hard.failed[0].hold, Hold::Failed);
        hard.stage(&t, None, 14);
        assert_eq!(hard.failed.len(), 1, "a failure is not lifted by a stage");
    }

    #[test]
    fn an_operators_rejection_after_the_commit_holds_the_timer_not_the_operator() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        assert_eq!(s.committed_release(SlotName::B), None, "nothing there");
        s.stage(&t, None, 9);
        assert_eq!(
            s.committed_release(SlotName::B),
            None,
            "staged, not committed"
        );
        s.commit(&t, 10, 0, None);
        let release = s.committed_release(SlotName::B).expect("committed");
        assert_eq!(
            (release.from, release.to, release.version.as_str()),
            (SlotName::A, SlotName::B, "2.0")
        );
        assert_eq!(
            (release.manifest_sha256.as_str(), &release.images),
            ("aa", &t.images)
        );
        assert_eq!(
            s.committed_release(SlotName::A),
            None,
            "a slot adopted (no manifest recorded) holds no release abupdate committed"
        );
        s.retire_trial(
            &release,
            true,
            "rejected by hand after its commit",
            Kind::Health,
            Hold::Rejected,
            11,
        );
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Bad);
        assert_eq!(s.committed_release(SlotName::B), None, "rejected once");
        assert_eq!(
            (s.metrics.rollbacks, s.metrics.failures.get("health")),
            (1, Some(&1))
        );
        assert_eq!(s.failed[0].hold, Hold::Rejected);
        assert_eq!(s.failed_versions(false), ["2.0"], "the timer holds it");
        assert_eq!(s.failures(false), ["2.0"], "as a failure, not a cancel");
        assert!(s.cancelled_versions().is_empty());
        assert!(s.failed_versions(true).is_empty(), "the operator may");
        assert!(s.failures(true).is_empty(), "the operator may");
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["failed"][0]["hold"], "rejected");
        let back: State = serde_json::from_value(json).expect("read");
        assert_eq!(back.failed, s.failed);
        // An install by hand staging it lifts the hold.
        let mut again = s.clone();
        again.stage(&transaction(SlotName::A, Phase::Writing), None, 12);
        assert!(again.failed.is_empty(), "{:?}", again.failed);
        // A failure hardens it; a cancel does not soften it.
        let mut soft = s.clone();
        soft.cancel(&t, "cancelled", 13);
        assert_eq!(soft.failed[0].hold, Hold::Rejected);
        s.record_failed("2.0", "aa", "checks failed", 14);
        assert_eq!(
            (s.failed.len(), s.failed[0].hold.clone()),
            (1, Hold::Failed)
        );
        // A rejection does not soften a cancel's hardening either way: a
        // cancelled release rejected later is a rejection.
        let mut c = fresh();
        c.stage(&t, None, 9);
        c.cancel(&t, "cancelled", 10);
        c.hold("2.0", "aa", "rejected", 11, Hold::Rejected);
        assert_eq!(c.failed[0].hold, Hold::Rejected);
    }

    #[test]
    fn a_hold_this_version_does_not_know_is_kept_and_binds_every_run() {
        let raw = r#"{"format":1,"failed":[{"version":"3.0","manifest_sha256":"ff","reason":"r","at":1,"hold":"quarantined"}]}"#;
        let s: State = serde_json::from_str(raw).expect("read");
        assert_eq!(s.failed[0].hold, Hold::Other("quarantined".into()));
        assert_eq!(s.failed_versions(true), ["3.0"]);
        let back = serde_json::to_value(&s).expect("json");
        assert_eq!(back["failed"][0]["hold"], "quarantined");
    }

    #[test]
    fn a_trial_is_committed_or_retired_keeping_its_record() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        let mut committed = s.clone();
        committed.commit(&t, 10, 0, None);
        assert_eq!(committed.slot(SlotName::B).status, SlotStatus::Good);
        assert_eq!(committed.slot(SlotName::B).version.as_deref(), Some("2.0"));
        assert_eq!(committed.transaction, None);
        assert_eq!(
            (committed.metrics.commits, committed.metrics.last_success),
            (1, Some(10))
        );

        s.retire_trial(&t, true, "checks failed", Kind::Health, Hold::Failed, 11);
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Bad);
        assert_eq!(s.slot(SlotName::B).version.as_deref(), Some("2.0"));
        assert_eq!(s.transaction, None);
        assert_eq!(s.failed_versions(true), ["2.0"]);
        assert_eq!(s.metrics.rollbacks, 1);
        assert_eq!(s.metrics.failures.get("health"), Some(&1));
    }

    /// The committing build marks the slot it runs from; a record an older
    /// build wrote (no `agent`) and a slot only staged promise nothing.
    #[test]
    fn a_commit_marks_the_slot_with_the_agent_protocol_older_records_lack_it() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        assert!(!s.slot(SlotName::B).gives_back_reboot_lock(), "staged only");
        s.commit(&t, 10, 0, None);
        assert_eq!(s.slot(SlotName::B).agent, Some(AGENT_PROTOCOL));
        assert!(s.slot(SlotName::B).gives_back_reboot_lock());
        let old: SlotRecord = serde_json::from_str(r#"{"status":"good","version":"1.0"}"#).unwrap();
        assert!(!old.gives_back_reboot_lock());
        // A newer protocol still gives it back.
        let newer: SlotRecord = serde_json::from_str(r#"{"status":"good","agent":7}"#).unwrap();
        assert!(newer.gives_back_reboot_lock());
    }

    /// 1cf963b gives back the lock but writes no `agent`; its state shows
    /// an `installed` outcome of the release it staged, 213989b's shows no
    /// `outcomes`. Only the outcome as read counts, and a bad slot is never
    /// marked.
    #[test]
    fn a_commit_marks_the_fallback_when_the_state_read_shows_an_install_by_1cf963b() {
        let staged = |outcomes: &str, a: &str| {
            let text = format!(
                r#"{{"format":1,"slots":{{"A":{{"status":"{a}","version":"1.0"}}}},{outcomes}"transaction":{{"from":"A","to":"B","version":"2.0","manifest_sha256":"aa","phase":"staged","started":1}}}}"#
            );
            parse_state(text.as_bytes()).unwrap()
        };
        let by_35 = r#""outcomes":[{"release":"2.0","outcome":"installed","time":5}],"#;
        let t = transaction(SlotName::A, Phase::Staged);

        let mut s = staged(by_35, "good");
        s.commit(&t, 10, 0, None);
        assert_eq!(s.slot(SlotName::A).agent, Some(AGENT_PROTOCOL), "1cf963b's");

        let mut s = staged("", "good");
        crate::report::record_outcome(
            &mut s.outcomes,
            "2.0",
            None,
            crate::report::Outcome::Installed,
            None,
            9,
        );
        s.commit(&t, 10, 0, None);
        assert_eq!(s.slot(SlotName::A).agent, None, "213989b's: added this run");

        let mut s = staged(by_35, "bad");
        s.commit(&t, 10, 0, None);
        assert_eq!(s.slot(SlotName::A).agent, None, "a bad slot");
    }

    /// The outcome's release and the trial's version are release names:
    /// compared as versions (as [`same_version`] does everywhere), an
    /// `installed` outcome of `2.0` is evidence for a trial of `2.0.0`; a
    /// different version is not.
    #[test]
    fn an_installed_outcome_of_2_0_is_evidence_for_a_trial_of_2_0_0() {
        let staged = |release: &str| {
            let text = format!(
                r#"{{"format":1,"slots":{{"A":{{"status":"good","version":"1.0"}}}},"outcomes":[{{"release":"{release}","outcome":"installed","time":5}}]}}"#
            );
            parse_state(text.as_bytes()).unwrap()
        };
        let mut t = transaction(SlotName::A, Phase::Staged);
        t.version = "2.0.0".into();

        let mut s = staged("2.0");
        assert!(s.mark_installer_agent(&t));
        assert_eq!(s.slot(SlotName::A).agent, Some(AGENT_PROTOCOL));

        let mut s = staged("2.0.1");
        assert!(!s.mark_installer_agent(&t));
        assert_eq!(s.slot(SlotName::A).agent, None);
    }

    #[test]
    fn a_probation_records_the_clock_floor_known_at_its_commit() {
        // The clock read 10 (an RTC reset) at a commit after a release
        // created at 500 was believed: the window's start is known wrong,
        // and the floor it is judged by stays 500 while newer manifests
        // raise the host's floor later.
        let mut s = fresh();
        s.note_created("https://a/r.json", 500, "aa", None, None);
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        s.commit(&t, 10, 3600, None);
        s.note_created("https://a/r.json", 900, "bb", None, None);
        let p = s.on_probation().expect("on probation");
        assert_eq!((p.started, p.floor), (10, Some(500)));
    }

    #[test]
    fn a_commit_with_a_window_starts_a_probation_that_a_retirement_or_its_end_clears() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        s.commit(&t, 10, 3600, Some("boot-2".into()));
        let p = s.on_probation().cloned().expect("on probation");
        assert_eq!((p.started, p.until, p.failures), (10, 3610, 0));
        assert_eq!(p.boot_id.as_deref(), Some("boot-2"));
        assert_eq!((p.slot, p.version.as_str()), (SlotName::B, "2.0"));
        let release = s.probation_release().expect("release");
        assert_eq!((release.from, release.to), (SlotName::A, SlotName::B));
        assert_eq!(release.manifest_sha256, "aa");
        assert_eq!(release.images, t.images);
        let mut ended = s.clone();
        ended.end_probation(3700);
        assert_eq!(ended.on_probation(), None);
        assert_eq!(ended.probation.as_ref().and_then(|p| p.passed), Some(3700));
        assert_eq!(ended.probation_release(), None);
        let mut off = s.clone();
        off.switch_off_probation(3000);
        assert_eq!(off.on_probation(), None, "switched off: over");
        let p = off.probation.as_ref().expect("kept");
        assert_eq!((p.off, p.passed), (Some(3000), None), "not passed");
        let mut kept = s.clone();
        kept.fail_probation_without_fallback(3100, "slot A is marked bad", 3);
        assert_eq!(kept.on_probation(), None, "failed with no fallback: over");
        let p = kept.probation.as_ref().expect("kept");
        assert_eq!((p.no_fallback, p.passed, p.off), (Some(3100), None, None));
        assert_eq!(
            p.failures, 3,
            "the count includes the failure that ended it"
        );
        assert_eq!(p.last_failure.as_deref(), Some("slot A is marked bad"));
        let mut planned = s.clone();
        planned.planned_reboot = Some(PlannedReboot {
            slot: SlotName::A,
            version: "2.0".into(),
        });
        assert!(
            planned.reboot_owed(SlotName::B).is_some(),
            "owed while B runs"
        );
        assert!(
            !planned.settle_planned_reboot(SlotName::B),
            "B runs: still owed"
        );
        assert!(planned.settle_planned_reboot(SlotName::A), "A runs: done");
        assert_eq!(planned.planned_reboot, None);
        assert!(planned.reboot_owed(SlotName::B).is_none());
        s.retire_trial(&release, true, "late", Kind::Health, Hold::Failed, 20);
        assert_eq!(s.probation, None);
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Bad);
        assert_eq!(s.failed_versions(true), ["2.0"]);
        let round: State =
            serde_json::from_slice(&serde_json::to_vec(&ended).expect("json")).expect("reads back");
        assert_eq!(round, ended);
    }

    /// N6's commit: what a commit knows without the lost record. The
    /// release (os-release's) is on probation and held provisionally with
    /// no manifest digest (unknown, never guessed), and the other slot is
    /// not adopted as a fallback (no record says it holds a system).
    #[test]
    fn an_undescribed_commit_starts_a_probation_without_a_digest_or_a_guessed_fallback() {
        let mut s = fresh();
        s.commit_undescribed(SlotName::B, "2.0", 10, 3600, Some("boot-2".into()));
        let p = s.on_probation().cloned().expect("on probation");
        assert_eq!((p.slot, p.version.as_str()), (SlotName::B, "2.0"));
        assert_eq!((p.started, p.until, p.failures), (10, 3610, 0));
        assert_eq!(p.boot_id.as_deref(), Some("boot-2"));
        assert_eq!(s.failed.len(), 1);
        assert!(s.failed[0].provisional);
        assert_eq!(s.failed[0].manifest_sha256, "", "unknown, not made up");
        assert_eq!(s.failed_versions(true), Vec::<String>::new());
        let rec = s.slot(SlotName::B);
        assert_eq!(rec.status, SlotStatus::Good);
        assert_eq!(rec.version.as_deref(), Some("2.0"));
        assert_eq!((rec.manifest_sha256, rec.images.len()), (None, 0));
        assert_eq!(rec.agent, Some(AGENT_PROTOCOL));
        assert_eq!(s.slot(SlotName::A).status, SlotStatus::Empty, "not guessed");
        assert_eq!((s.metrics.commits, s.metrics.last_success), (1, Some(10)));
        let release = s.probation_release().expect("release");
        assert_eq!((release.from, release.to), (SlotName::A, SlotName::B));
        assert_eq!(release.manifest_sha256, "");

        // Without a window: committed, nothing on probation or held.
        let mut s = fresh();
        s.commit_undescribed(SlotName::B, "2.0", 10, 0, None);
        assert_eq!((s.probation.as_ref(), s.failed.len()), (None, 0));
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Good);
        assert_eq!(s.metrics.commits, 1);
    }

    /// The provisional entry a probation's commit writes, in each way a
    /// probation ends: not held while it runs; gone once it passes, is
    /// switched off or keeps the release for want of a fallback; a
    /// failure (no longer provisional) once a late rollback or an
    /// operator's rejection records it; and held as a failure when the
    /// probation record is gone without passing (an older version saved).
    #[test]
    fn a_release_on_probation_is_held_provisionally_until_its_probation_ends() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        s.commit(&t, 10, 3600, None);
        let entry = s.failed.first().expect("a provisional entry");
        assert!(entry.provisional && entry.hold == Hold::Failed, "{entry:?}");
        assert_eq!(s.held().count(), 0, "not held while it runs");
        assert!(s.failed_versions(false).is_empty() && s.failures(false).is_empty());
        for end in [
            State::end_probation as fn(&mut State, i64),
            State::switch_off_probation,
            |s: &mut State, at| s.fail_probation_without_fallback(at, "no fallback", 3),
        ] {
            let mut ended = s.clone();
            end(&mut ended, 3700);
            assert!(ended.failed.is_empty(), "{:?}", ended.failed);
        }
        for (hold, by_hand) in [(Hold::Failed, vec!["2.0"]), (Hold::Rejected, vec![])] {
            let mut late = s.clone();
            let release = late.probation_release().expect("release");
            late.retire_trial(&release, true, "late", Kind::Health, hold.clone(), 20);
            let f = &late.failed[0];
            assert_eq!(
                (f.provisional, &f.hold, f.reason.as_str()),
                (false, &hold, "late")
            );
            assert_eq!(late.failed_versions(false), ["2.0"]);
            assert_eq!(late.failed_versions(true), by_hand);
        }
        let mut saved_by_older = s.clone();
        saved_by_older.probation = None;
        assert_eq!(saved_by_older.failures(false), ["2.0"]);
        assert_eq!(saved_by_older.failed_versions(true), ["2.0"]);
        let mut none = fresh();
        none.commit(&t, 10, 0, None);
        assert!(none.failed.is_empty(), "no probation, no entry");
    }

    /// A transaction an older version wrote names the slot it came from
    /// without a record of it: the commit adopts it as good (naming no
    /// version); a record that says anything is left as it is.
    #[test]
    fn a_commit_adopts_the_slot_its_transaction_came_from_when_unrecorded() {
        let t = transaction(SlotName::A, Phase::Staged);
        let mut s = fresh();
        s.stage(&t, None, 9);
        s.commit(&t, 10, 0, None);
        assert_eq!(s.slot(SlotName::A).status, SlotStatus::Good);
        assert_eq!(s.slot(SlotName::A).version, None);
        let mut s = fresh();
        s.slot_mut(SlotName::A).status = SlotStatus::Bad;
        s.stage(&t, None, 9);
        s.commit(&t, 10, 0, None);
        assert_eq!(s.slot(SlotName::A).status, SlotStatus::Bad);
    }

    /// A power cut between the activation and the `staged` state write
    /// leaves the target `installing`, naming nothing: the trial's end
    /// names its release from the transaction (the VM test's scenario 7
    /// found a commit that kept `{"status":"good"}` alone), except when its
    /// bytes did not read back as the release's.
    #[test]
    fn a_trial_never_staged_is_committed_or_retired_naming_its_release() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Writing);
        s.begin_write(t.clone());
        let named = |s: &State, status: SlotStatus| {
            let rec = s.slot(SlotName::B);
            assert_eq!(rec.status, status);
            assert_eq!(rec.version.as_deref(), Some("2.0"));
            assert_eq!(rec.manifest_sha256.as_deref(), Some("aa"));
            assert_eq!(rec.images, t.images);
        };
        let mut committed = s.clone();
        committed.commit(&t, 10, 0, None);
        named(&committed, SlotStatus::Good);
        let mut failed = s.clone();
        failed.retire_trial(&t, true, "checks failed", Kind::Health, Hold::Failed, 11);
        named(&failed, SlotStatus::Bad);
        s.retire_trial(&t, false, "bytes differ", Kind::Health, Hold::Failed, 11);
        let rec = s.slot(SlotName::B);
        assert_eq!(rec.status, SlotStatus::Bad);
        assert_eq!((rec.version, rec.images.len()), (None, 0));
        assert_eq!(s.failed_versions(true), ["2.0"]);
    }

    /// Only a record that says written (or nothing) becomes good on a
    /// healthy boot; good stays good, and bad, installing and unknown
    /// statuses are not the re-bless's to change.
    #[test]
    fn a_healthy_boot_blesses_only_an_installed_or_empty_record() {
        for (status, blessed) in [
            (SlotStatus::Empty, true),
            (SlotStatus::Installed, true),
            (SlotStatus::Good, false),
            (SlotStatus::Bad, false),
            (SlotStatus::Installing, false),
            (SlotStatus::Other("probation".into()), false),
        ] {
            let mut s = fresh();
            s.slot_mut(SlotName::A).status = status.clone();
            let changed = s.bless(SlotName::A, || Some("1.0".into()));
            assert_eq!(changed, blessed, "{status}");
            let want = if blessed {
                SlotStatus::Good
            } else {
                status.clone()
            };
            assert_eq!(s.slot(SlotName::A).status, want, "{status}");
            let version = s.slot(SlotName::A).version;
            assert_eq!(version.is_some(), blessed, "{status}");
        }
    }

    /// An install adopts the booted slot only when its record says
    /// nothing: a fresh host's becomes good holding the running version;
    /// a record that says anything (bad, being written, good with its own
    /// version, unknown) is not the adoption's to change, and the other
    /// slot's record is never touched.
    #[test]
    fn an_install_adopts_only_an_empty_booted_record_as_good_with_the_running_version() {
        let mut s = fresh();
        assert!(s.adopt_booted(SlotName::A, Some("1.0".into())));
        let rec = s.slot(SlotName::A);
        assert_eq!(rec.status, SlotStatus::Good);
        assert_eq!(rec.version.as_deref(), Some("1.0"));
        assert_eq!(s.slot(SlotName::B), SlotRecord::default());
        // An unknown running version still leaves a good record.
        let mut s = fresh();
        assert!(s.adopt_booted(SlotName::B, None));
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Good);
        assert_eq!(s.slot(SlotName::A), SlotRecord::default());
        for status in [
            SlotStatus::Good,
            SlotStatus::Installed,
            SlotStatus::Bad,
            SlotStatus::Installing,
            SlotStatus::Other("probation".into()),
        ] {
            let mut s = fresh();
            s.slot_mut(SlotName::A).status = status.clone();
            s.slot_mut(SlotName::A).version = Some("0.9".into());
            let before = s.slot(SlotName::A);
            assert!(!s.adopt_booted(SlotName::A, Some("1.0".into())), "{status}");
            assert_eq!(s.slot(SlotName::A), before, "{status}");
        }
    }

    #[test]
    fn marking_and_switching_by_hand() {
        let mut s = fresh();
        let t = transaction(SlotName::A, Phase::Staged);
        s.stage(&t, None, 9);
        let mut bad = s.clone();
        bad.mark(SlotName::B, false);
        assert_eq!(bad.slot(SlotName::B).status, SlotStatus::Bad);
        assert!(bad.transaction.is_some(), "mark-bad leaves the transaction");
        let mut good = s.clone();
        good.mark(SlotName::B, true);
        assert_eq!(good.transaction, None, "mark-good commits a staged slot");
        let mut onto_staged = s.clone();
        onto_staged.switched_to(SlotName::B, false);
        assert!(onto_staged.transaction.is_some(), "its boot is its trial");
        let mut away = s.clone();
        away.switched_to(SlotName::A, true);
        assert_eq!(away.transaction, None);
        assert_eq!(away.slot(SlotName::A).status, SlotStatus::Installed);
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tmpdir("lock");
        let sd = StateDir::new(&dir);
        let first = sd.lock().expect("first lock");
        let e = sd.lock().err().expect("second lock granted");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        sd.lock().expect("lock after release");
    }

    /// Found from outside: a lock file others could open was one any user
    /// could hold (`flock` needs only a read-only open), withholding a
    /// trial's verdict. The lock file is root's alone (0600), and one an
    /// earlier version made 0644, held by whoever opened it then, is made
    /// anew: their lock holds nothing.
    #[test]
    fn the_lock_file_is_roots_alone_and_one_others_could_hold_is_made_anew() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("lock-mode");
        let sd = StateDir::new(&dir);
        let mode = |p: &Path| std::fs::metadata(p).expect("lock").permissions().mode() & 0o777;
        let path = dir.join("lock");
        drop(sd.lock().expect("lock"));
        assert_eq!(mode(&path), 0o600);
        // As an earlier version left it, locked by another opener.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let theirs = File::open(&path).expect("open read-only");
        let _held = nix::fcntl::Flock::lock(theirs, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("their lock");
        let ours = sd.lock().expect("their lock holds nothing");
        assert_eq!(mode(&path), 0o600);
        ours.save(&fresh()).expect("saves");
    }

    /// Found from outside (stop 48): the state dir removed under a running
    /// install and made again by a second install; the first still held a
    /// lock on the old file, and both wrote. The first one's next save is
    /// refused, and the second one's state stands.
    #[test]
    fn a_lock_whose_directory_was_replaced_saves_nothing() {
        let dir = tmpdir("lock-lost");
        let sd = StateDir::new(&dir);
        let first = sd.lock().expect("first lock");
        first.save(&fresh()).expect("save while the lock stands");
        std::fs::remove_dir_all(&*dir).expect("rm -rf the state dir");
        let second = sd.lock().expect("a new lock on the new directory");
        let mut theirs = fresh();
        theirs.record_failed("3", "ff", "theirs", 9);
        second.save(&theirs).expect("the second run saves");
        let e = first.save(&fresh()).expect_err("the first run saved");
        assert!(matches!(e, StateError::LockLost { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("is no longer the lock this run took"),
            "{e}"
        );
        assert_eq!(sd.load().expect("load"), theirs);
        // Also when it is why a bootloader change went unrecorded.
        assert!(e.is_without_the_lock());
        let unrecorded = |source| StateError::NotRecorded {
            path: dir.join("state.json"),
            what: "slot B staged".into(),
            source: Box::new(source),
            bootloader: "restored".into(),
        };
        assert!(unrecorded(e).is_without_the_lock());
        let full = StateError::Io {
            path: dir.join("state.json"),
            source: std::io::Error::other("no space"),
        };
        assert!(!full.is_without_the_lock());
        assert!(!unrecorded(full).is_without_the_lock());
    }

    /// A forced `mark-good` of the booted slot a rollback left cancels it
    /// whole: the slot good, its release (spelt either way) off the failed
    /// list whatever held it, no reboot owed into the other slot; another
    /// release's entry stays.
    #[test]
    fn cancelling_a_rollback_lifts_the_hold_of_the_slots_release_and_the_owed_reboot() {
        let mut s = State::default();
        let rec = s.slot_mut(SlotName::B);
        rec.status = SlotStatus::Bad;
        rec.version = Some("2.0".into());
        s.hold("2.0.0", "aa", "rejected by hand", 1, Hold::Rejected);
        s.record_failed("1.5", "bb", "its trial failed", 1);
        s.planned_reboot = Some(PlannedReboot {
            slot: SlotName::A,
            version: "2.0".into(),
        });
        s.cancel_rollback(SlotName::B);
        assert_eq!(s.slot(SlotName::B).status, SlotStatus::Good);
        assert!(!s.holds("2.0"));
        assert!(s.holds("1.5"), "another release's entry");
        assert_eq!(s.planned_reboot, None);
    }
}
