//! Host state: `state.json` and the instance lock, under the state dir.
//!
//! Invariant: `state.json` is always either the previous complete version or
//! the new complete version (temp file, fsync, rename, fsync of the dir: the
//! data partition is read by Linux, which replays the journal), and only the
//! holder of the exclusive lock writes it.

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

/// One image as written into a slot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageRef {
    pub sha256: String,
    pub size: u64,
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
}

/// A release that failed on this host and is never installed again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FailedRelease {
    pub version: String,
    pub manifest_sha256: String,
    pub reason: String,
    pub at: i64,
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
}

/// The hash of a booted slot's prefix, valid for one boot: a delta's source
/// is verified once per boot, not once per check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceHash {
    pub boot_id: String,
    pub device: String,
    pub size: u64,
    pub sha256: String,
}

pub const STATE_FORMAT: u32 = 1;

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

    /// Load the state; a missing file is a fresh host.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    format: STATE_FORMAT,
                    ..Default::default()
                })
            }
            Err(e) => return Err(StateError::Io { path, source: e }),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.format != STATE_FORMAT {
            return Err(StateError::Corrupt {
                path,
                reason: format!("state format {} is not {STATE_FORMAT}", state.format),
            });
        }
        Ok(state)
    }

    /// Replace `state.json` atomically and durably.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        self.ensure()?;
        let path = self.state_file();
        let tmp = self.dir.join("state.json.tmp");
        let mut body = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        body.push(b'\n');
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
    fn corrupt_state_is_an_error_naming_the_file() {
        let sd = StateDir::new(&tmpdir("corrupt"));
        sd.ensure().expect("mkdir");
        std::fs::write(sd.state_file(), b"{\"format\":1,").expect("write");
        let e = sd.load().expect_err("corrupt accepted");
        assert!(e.to_string().contains("state.json"), "{e}");
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
