//! Host state: `state.json` and the instance lock, under the state dir.
//!
//! Invariants: `state.json` is always either the previous complete version
//! or the new complete version (temp file, fsync, rename, fsync of the dir:
//! the data partition is read by Linux, which replays the journal), and only
//! the holder of the exclusive lock writes it.
//!
//! A damaged state never costs a boot. Before each replace, the file being
//! replaced, when it is a good state, is kept as `state.json.prev` (its own
//! file, fsynced). `load` never fails on a `state.json` that does not parse,
//! is larger than [`MAX_STATE_BYTES`] or cannot be read: it says so on
//! stderr, counts `failures{kind="state_corrupt"}`, and goes on with
//! `state.json.prev`, else with a fresh state (what a host without a state
//! file has; the flows rebuild the booted slot's record from the bootloader
//! and os-release). The damaged file is kept as `state.json.corrupt` at the
//! next save. Fields this version does not know (a newer version's) are
//! kept as read and written back, so a downgrade's save does not drop them.

use crate::manifest::Version;
use crate::slot::SlotName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum StateError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Corrupt {
        path: PathBuf,
        reason: String,
    },
    Locked {
        path: PathBuf,
        holder: String,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StateError::Corrupt { path, reason } => write!(f, "{}: {reason}", path.display()),
            StateError::Locked { path, holder } => {
                write!(
                    f,
                    "another abupdate is running ({holder} holds {})",
                    path.display()
                )
            }
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
    pub sha256: String,
    pub size: u64,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// What this host knows of one slot's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SlotRecord {
    /// `empty`, `installing`, `installed` (written and verified), `good`, `bad`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Class → the image written there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
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

/// The update in flight, if any.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transaction {
    pub from: SlotName,
    pub to: SlotName,
    pub version: String,
    pub manifest_sha256: String,
    pub phase: Phase,
    pub started: i64,
    /// The kernel boot id when the slot was staged: a different one means
    /// the host has rebooted since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_boot_id: Option<String>,
    /// Class → the image being written, so a boot can check the slot.
    #[serde(default)]
    pub images: BTreeMap<String, ImageRef>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// A release that failed on this host and is never installed again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FailedRelease {
    pub version: String,
    pub manifest_sha256: String,
    pub reason: String,
    pub at: i64,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Validators of the last manifest response, for a conditional GET.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LastCheck {
    pub url: String,
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
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
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Counters and timestamps for reports; they survive reboots.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<i64>,
    /// Failures by error kind.
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    #[serde(default)]
    pub downloaded_bytes: u64,
    #[serde(default)]
    pub installs: u64,
    #[serde(default)]
    pub commits: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_install_full: Option<u64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The hash of a booted slot's prefix, valid for one boot: a delta's source
/// is verified once per boot, not once per check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceHash {
    pub boot_id: String,
    pub device: String,
    pub size: u64,
    pub sha256: String,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub const STATE_FORMAT: u32 = 1;

/// The largest `state.json` read. A real one is a few KiB (the failed list
/// grows by one entry per failed release); anything bigger is damage, and
/// is not read into memory whole.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// The error kind counted (and reported) when `state.json` is unusable.
pub const STATE_CORRUPT_KIND: &str = "state_corrupt";

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
    let file = match File::open(path) {
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
    let state: State =
        serde_json::from_slice(bytes).map_err(|e| Unusable::Damaged(e.to_string()))?;
    if state.format != STATE_FORMAT {
        return Err(Unusable::Damaged(format!(
            "state format {} is not {STATE_FORMAT}",
            state.format
        )));
    }
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub format: u32,
    #[serde(default)]
    pub slots: BTreeMap<SlotName, SlotRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<LastCheck>,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_hashes: Vec<SourceHash>,
    /// Latest outcome times of the last few releases, for the textfile
    /// (bounded by `report::record_outcome`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<crate::report::OutcomeRecord>,
    #[serde(flatten)]
    pub unknown: Unknown,
    /// Set by [`StateDir::load`] when `state.json` could not be used: what
    /// was wrong and what stands in for it. Never saved; a flow that would
    /// not save otherwise saves a recovered state, so the damage is
    /// repaired (and counted) once.
    #[serde(skip)]
    pub recovered: Option<String>,
}

impl State {
    pub fn failed_versions(&self) -> Vec<String> {
        self.failed.iter().map(|f| f.version.clone()).collect()
    }

    pub fn record_failed(&mut self, version: &str, manifest_sha256: &str, reason: &str, at: i64) {
        // Compared as versions: `3.0` is already there for `3.0.0`.
        let same = |recorded: &str| match (Version::parse(recorded), Version::parse(version)) {
            (Ok(a), Ok(b)) => a == b,
            _ => recorded == version,
        };
        if !self.failed.iter().any(|f| same(&f.version)) {
            self.failed.push(FailedRelease {
                version: version.to_string(),
                manifest_sha256: manifest_sha256.to_string(),
                reason: reason.to_string(),
                at,
                unknown: Unknown::new(),
            });
        }
    }

    pub fn slot(&self, slot: SlotName) -> SlotRecord {
        self.slots
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| SlotRecord {
                status: "empty".into(),
                ..Default::default()
            })
    }

    /// Remember a believed `created` verified from `source` (a
    /// `manifest::source_key`). Only a `created` that
    /// `manifest::created_plausible` accepted may come here.
    pub fn note_created(&mut self, source: &str, created: i64) {
        if self.newest_created.is_none_or(|c| created > c) {
            self.newest_created = Some(created);
        }
        let newest = self
            .newest_by_source
            .entry(source.to_string())
            .or_insert(created);
        *newest = (*newest).max(created);
        // Bounded: manual installs from many paths must not grow the file
        // for ever. The source with the oldest record goes first.
        while self.newest_by_source.len() > MAX_SOURCES {
            let oldest = self
                .newest_by_source
                .iter()
                .min_by_key(|(_, c)| **c)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.newest_by_source.remove(&k),
                None => break,
            };
        }
    }
}

/// The state directory: `state.json`, `lock`, `partial/`.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Where partial downloads are kept, keyed by the payload's hash.
    pub fn partial_file(&self, download_sha256: &str) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{download_sha256}.part"))
    }

    pub fn ensure(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(self.dir.join("partial")).map_err(io(&self.dir))
    }

    /// Where the last good state before the current one is kept.
    pub fn prev_file(&self) -> PathBuf {
        self.dir.join("state.json.prev")
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
        eprintln!("abupdate: {note}");
        *state
            .metrics
            .failures
            .entry(STATE_CORRUPT_KIND.into())
            .or_default() += 1;
        state.recovered = Some(note);
        Ok(state)
    }

    /// Replace `state.json` atomically and durably, keeping the state it
    /// replaces as `state.json.prev` when that is good, or as
    /// `state.json.corrupt` when it is damaged.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        self.ensure()?;
        let path = self.state_file();
        let tmp = self.dir.join("state.json.tmp");
        let mut body = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        body.push(b'\n');
        if let Err(e) = self.keep_previous(&path) {
            // The copy is a safety net; the save itself still matters more.
            eprintln!("abupdate: cannot keep the previous state: {e}");
        }
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
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
        match File::open(path) {
            Ok(f) => f
                .take(MAX_STATE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(io(path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(path)(e)),
        };
        if parse_state(&bytes).is_err() {
            let corrupt = self.corrupt_file();
            let _ = std::fs::remove_file(&corrupt);
            return std::fs::hard_link(path, &corrupt).map_err(io(&corrupt));
        }
        let prev = self.prev_file();
        let tmp = self.dir.join("state.json.prev.tmp");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &prev).map_err(io(&prev))
    }

    /// Take the exclusive instance lock, or say who holds it.
    pub fn lock(&self) -> Result<InstanceLock, StateError> {
        self.ensure()?;
        let path = self.dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let fd = file.as_fd().try_clone_to_owned().map_err(io(&path))?;
        match nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let _ = file.set_len(0);
                let _ = file.seek(SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
                Ok(InstanceLock { _lock: lock })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
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

/// Held for the life of a command that may change the host.
pub struct InstanceLock {
    _lock: nix::fcntl::Flock<std::os::fd::OwnedFd>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("abupdate-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saves_and_loads_round_trip() {
        let sd = StateDir::new(&tmpdir("rt"));
        let mut s = sd.load().expect("fresh");
        assert_eq!(s.format, STATE_FORMAT);
        s.slots.insert(
            SlotName::B,
            SlotRecord {
                status: "installed".into(),
                version: Some("2".into()),
                ..Default::default()
            },
        );
        s.record_failed("3", "ff", "health", 7);
        s.record_failed("3", "ff", "again", 8);
        sd.save(&s).expect("save");
        let back = sd.load().expect("load");
        assert_eq!(back, s);
        assert_eq!(back.failed.len(), 1);
        assert!(!sd.path().join("state.json.tmp").exists());
    }

    /// Two saves: `first` (failed list: 3.0) then a second with one more
    /// install; returns the second.
    fn two_saves(sd: &StateDir) -> (State, State) {
        let mut first = sd.load().expect("fresh");
        first.record_failed("3.0", "ff", "health", 7);
        sd.save(&first).expect("first save");
        let mut second = first.clone();
        second.metrics.installs += 1;
        sd.save(&second).expect("second save");
        (first, second)
    }

    #[test]
    fn the_failed_list_compares_versions_and_old_files_load() {
        // A state file written before versions were compared as numbers.
        let old = br#"{"format":1,"failed":[{"version":"3.0","manifest_sha256":"ff","reason":"health","at":7}],"newest_created":1795168800}"#;
        let sd = StateDir::new(&tmpdir("failed-versions"));
        sd.ensure().expect("mkdir");
        std::fs::write(sd.state_file(), old).expect("write");
        let mut s = sd.load().expect("an old state file loads");
        assert!(s.newest_by_source.is_empty());
        s.record_failed("3.0.0", "ee", "health", 8);
        assert_eq!(s.failed.len(), 1, "3.0.0 is the 3.0 already listed");
        s.record_failed("3.0.1", "dd", "health", 9);
        assert_eq!(s.failed_versions(), ["3.0", "3.0.1"]);
    }

    #[test]
    fn created_is_remembered_per_source_and_the_sources_are_bounded() {
        let mut s = State::default();
        s.note_created("https://a/r.json", 100);
        s.note_created("https://a/r.json", 50);
        s.note_created("https://b/r.json", 70);
        assert_eq!(s.newest_by_source["https://a/r.json"], 100);
        assert_eq!(s.newest_by_source["https://b/r.json"], 70);
        assert_eq!(s.newest_created, Some(100));
        for i in 0..100 {
            s.note_created(&format!("/usb/{i}/release.json"), 1000 + i);
        }
        assert_eq!(s.newest_by_source.len(), MAX_SOURCES);
        // The sources with the oldest records went first.
        assert!(!s.newest_by_source.contains_key("https://a/r.json"));
        assert!(s.newest_by_source.contains_key("/usb/99/release.json"));
        assert_eq!(s.newest_created, Some(1099));
    }

    #[test]
    fn the_state_before_each_replace_is_kept_as_prev() {
        let sd = StateDir::new(&tmpdir("prev"));
        let (first, second) = two_saves(&sd);
        let prev = |sd: &StateDir| {
            serde_json::from_slice::<State>(&std::fs::read(sd.prev_file()).expect("prev"))
                .expect("prev parses")
        };
        assert_eq!(prev(&sd), first);
        let mut third = second.clone();
        third.metrics.commits += 1;
        sd.save(&third).expect("third save");
        assert_eq!(prev(&sd), second);
        assert_eq!(sd.load().expect("load"), third);
        assert!(!sd.path().join("state.json.prev.tmp").exists());
    }

    #[test]
    fn a_damaged_state_falls_back_to_the_last_good_copy() {
        let sd = StateDir::new(&tmpdir("damaged"));
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
        sd.save(&back).expect("save");
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
        let sd = StateDir::new(&tmpdir("no-prev"));
        let mut s = sd.load().expect("fresh");
        s.record_failed("3.0", "ff", "health", 7);
        sd.save(&s).expect("save");
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
        let sd = StateDir::new(&tmpdir("cap"));
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
        let sd = StateDir::new(&tmpdir("unknown"));
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
        s.slots.get_mut(&SlotName::A).expect("A").status = "bad".into();
        sd.save(&s).expect("save");
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
    fn second_lock_names_the_holder() {
        let sd = StateDir::new(&tmpdir("lock"));
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
}
