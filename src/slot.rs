//! Slot names, slot devices, and the storage underneath them.
//!
//! Invariant: no byte of the booted slot's storage, of the running root
//! filesystem's, or of any mounted filesystem's is ever written through a
//! slot device. Device numbers alone cannot promise that: a second loop
//! device over the booted slot's file, a whole disk and its partition, a
//! loop device over a partition or a device-mapper target over it all reach
//! the same bytes under another number. So every device is resolved to the
//! storage it finally lands on ([`Extent`]: a regular file by inode, or a
//! bottom block device, with the byte range used), following partitions to
//! their disk, loop devices to their backing file (`loop/backing_file`,
//! `loop/offset`) and stacked devices to their `slaves/` in sysfs; a target
//! is refused when one of its extents overlaps one of a device in use, or
//! when anything is built on it (`holders/`), or when a file its bytes land
//! in lives in a filesystem on the booted slot ([`check_file_homes`]: the
//! file is written through that filesystem, and the booted slot's bytes
//! change with it). The kernel guards the rest:
//! the target is opened `O_EXCL`, which fails while it is mounted, an active
//! swap, or held by another exclusive user, and the claim is kept for the
//! whole write.
//!
//! Device-mapper and md targets are followed through `slaves/` as a whole
//! (their mapping tables are not read): a dm device over part of a disk
//! counts as using all of it, which can only refuse more, never less.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One of the two system copies.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SlotName {
    /// Slot A (RAUC's `system0`).
    A,
    /// Slot B (RAUC's `system1`).
    B,
}

impl SlotName {
    /// The slot that is not `self`.
    pub fn other(self) -> SlotName {
        match self {
            SlotName::A => SlotName::B,
            SlotName::B => SlotName::A,
        }
    }

    /// `"A"` or `"B"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "A",
            SlotName::B => "B",
        }
    }

    /// Both slots, in order.
    pub const ALL: [SlotName; 2] = [SlotName::A, SlotName::B];
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SlotName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" | "a" => Ok(SlotName::A),
            "B" | "b" => Ok(SlotName::B),
            _ => Err(format!("unknown slot {s:?} (expected A or B)")),
        }
    }
}

/// Errors about slot devices; each names the device.
#[derive(Debug)]
pub enum SlotError {
    /// A device that cannot be read or inspected.
    Io {
        /// The device.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A device that may not be written (booted, mounted, in use).
    Refused {
        /// The device.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An image larger than the slot device that would take it.
    TooSmall {
        /// The device.
        path: PathBuf,
        /// The image's class.
        class: String,
        /// The image's size.
        image: u64,
        /// The device's size.
        device: u64,
    },
    /// The target reaches bytes that something in use also reaches.
    SharedStorage {
        /// The target.
        path: PathBuf,
        /// What it shares storage with.
        other: PathBuf,
        /// What that is (`slot A rootfs, the booted slot`).
        what: String,
        /// The storage both reach.
        backing: String,
        /// First byte shared.
        start: u64,
        /// End of the shared bytes (exclusive; `u64::MAX`: the end).
        end: u64,
    },
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SlotError::Refused { path, reason } => write!(f, "{}: {reason}", path.display()),
            SlotError::TooSmall {
                path,
                class,
                image,
                device,
            } => write!(
                f,
                "{class} image is {image} bytes, larger than {} ({device} bytes)",
                path.display()
            ),
            SlotError::SharedStorage {
                path,
                other,
                what,
                backing,
                start,
                end,
            } => write!(
                f,
                "{}: shares its storage with {} ({what}): both reach bytes {start}..{} of {backing}; refusing to write it",
                path.display(),
                other.display(),
                if *end == u64::MAX { "end".to_string() } else { end.to_string() },
            ),
        }
    }
}

impl std::error::Error for SlotError {}

// BLKGETSIZE64 is _IOR(0x12, 114, size_t): encoding it with the platform's
// size_t keeps the request number right on 32-bit ARM too.
nix::ioctl_read!(
    /// `BLKGETSIZE64`: a block device's size in bytes.
    blk_get_size64,
    0x12,
    114,
    usize
);

/// A slot's partition (or, for tests and demos, a regular file).
#[derive(Debug)]
pub struct Device {
    /// The path configured.
    pub path: PathBuf,
    /// Block device number, or `None` for a regular file.
    pub rdev: Option<(u64, u64)>,
    /// (st_dev, st_ino) of a regular file.
    pub file_id: Option<(u64, u64)>,
    /// Bytes.
    pub size: u64,
}

impl Device {
    /// Look at a device without opening it for writing.
    pub fn inspect(path: &Path) -> Result<Device, SlotError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let io = |source| SlotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.file_type().is_block_device() {
            let file = std::fs::File::open(path).map_err(io)?;
            let mut raw: usize = 0;
            // SAFETY: the ioctl writes one size_t into `raw`, which lives for the call.
            unsafe { blk_get_size64(std::os::fd::AsRawFd::as_raw_fd(&file), &mut raw) }
                .map_err(|e| io(e.into()))?;
            let rdev = meta.rdev();
            Ok(Device {
                path: path.to_path_buf(),
                rdev: Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))),
                file_id: None,
                size: raw as u64,
            })
        } else if meta.file_type().is_file() {
            Ok(Device {
                path: path.to_path_buf(),
                rdev: None,
                file_id: Some((meta.dev(), meta.ino())),
                size: meta.len(),
            })
        } else {
            Err(SlotError::Refused {
                path: path.to_path_buf(),
                reason: "is neither a block device nor a regular file".into(),
            })
        }
    }

    /// The storage this device's bytes land on.
    pub fn storage(&self, sys: &Sysfs) -> Storage {
        match (self.rdev, self.file_id) {
            (Some(rdev), _) => sys.storage(rdev),
            (None, Some((dev, ino))) => Storage {
                extents: vec![Extent {
                    backing: Backing::File { dev, ino },
                    start: 0,
                    end: self.size,
                    name: self.path.display().to_string(),
                }],
                holders: Vec::new(),
            },
            (None, None) => Storage::default(),
        }
    }

    /// Ask the kernel whether anything holds the block device exclusively
    /// (a mounted filesystem, an active swap, a device-mapper or md device,
    /// another writer that opened it `O_EXCL`), before anything is changed
    /// for the install. A regular file has no such claim.
    pub fn probe_exclusive(&self) -> Result<(), SlotError> {
        if self.rdev.is_none() {
            return Ok(());
        }
        open_exclusive(&self.path, false, 0)
            .map(drop)
            .map_err(|source| SlotError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Further attempts at a claim that is busy, 50 ms apart.
const CLAIM_RETRIES: usize = 20;

/// Open a slot device; for writing, a block device is opened `O_EXCL`:
/// the open fails while the device is mounted, an active swap, or held by
/// another exclusive user (device-mapper, md, another `O_EXCL` writer), and
/// while the returned file is open nobody can mount or claim it. (Linux
/// ignores `O_EXCL` without `O_CREAT` on regular files.) `flags` adds open
/// flags such as `O_DIRECT`.
pub fn open_exclusive(path: &Path, write: bool, flags: i32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_EXCL | flags)
            .open(path)
    };
    // A claim others hold for an instant (a probe of the device right
    // after another writer closed it: seen once in the test suite) is
    // waited out, up to a second; a device in use longer is refused.
    let mut opened = open();
    for _ in 0..CLAIM_RETRIES {
        match &opened {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                opened = open();
            }
            _ => break,
        }
    }
    let file = opened.map_err(|e| match e.raw_os_error() {
        Some(nix::libc::EBUSY) => std::io::Error::new(
            e.kind(),
            "device is in use (mounted, an active swap, or held by another device or writer)",
        ),
        _ => e,
    })?;
    // A regular file has no `O_EXCL` claim: an exclusive `flock`, held as
    // long as this open file, stands in for it, so two writers (an
    // operator who removed the state dir under a running install, and
    // started another) never write one file slot at once.
    if write && file.metadata()?.is_file() {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        let locked =
            unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        if locked != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(nix::libc::EWOULDBLOCK) => std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    "slot file is being written by another process (it holds its flock)",
                ),
                _ => e,
            });
        }
    }
    Ok(file)
}

/// The device number of the filesystem holding `/`.
pub fn root_device() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").ok()?.dev();
    Some((nix::sys::stat::major(dev), nix::sys::stat::minor(dev)))
}

/// What a byte range finally lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A regular file, by `(st_dev, st_ino)`.
    File {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
    },
    /// A block device with no lower device that sysfs shows (a disk, an
    /// NVMe namespace, an MMC), or one sysfs does not know: by number.
    Disk {
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
    },
    /// A loop device's backing file that no path reaches any more (sysfs
    /// says `(deleted)`), by the name sysfs gives it.
    Unreachable(OsString),
}

/// A byte range `[start, end)` of a backing store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// What the range lives on.
    pub backing: Backing,
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// The backing's name for messages (a file path, `/dev/NAME`); not
    /// part of its identity.
    pub name: String,
}

impl Extent {
    /// Whether the two ranges share at least one byte of one backing.
    pub fn overlaps(&self, other: &Extent) -> bool {
        self.backing == other.backing
            && self.start < self.end
            && other.start < other.end
            && self.start < other.end
            && other.start < self.end
    }
}

/// Where a device's bytes land, and what is built on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    /// The byte ranges it reaches.
    pub extents: Vec<Extent>,
    /// Devices stacked on this one (or on one of its partitions), found
    /// recursively through sysfs `holders/`, by kernel name.
    pub holders: Vec<String>,
}

impl Storage {
    /// The bytes `offset`..`offset + len` of this storage (a bootloader's
    /// environment at an offset of its device), on what they land.
    pub fn within(&self, offset: u64, len: u64) -> Storage {
        let extents = self
            .extents
            .iter()
            .filter_map(|e| {
                let start = e.start.checked_add(offset)?;
                let end = start.saturating_add(len).min(e.end);
                (start < end).then(|| Extent {
                    start,
                    end,
                    ..e.clone()
                })
            })
            .collect();
        Storage {
            extents,
            holders: Vec::new(),
        }
    }
}

/// Something whose storage a target must not share: the booted slot's
/// devices, the root filesystem, mounted filesystems, the other targets.
#[derive(Clone, Debug)]
pub struct InUse {
    /// Its path.
    pub path: PathBuf,
    /// What it is, for messages.
    pub what: String,
    /// Where its bytes land.
    pub storage: Storage,
}

/// Refuse `target` (at `path`) when something is built on it or when it
/// shares a byte with anything in `in_use`.
pub fn check_target(path: &Path, target: &Storage, in_use: &[InUse]) -> Result<(), SlotError> {
    if !target.holders.is_empty() {
        return Err(SlotError::Refused {
            path: path.to_path_buf(),
            reason: format!(
                "is in use: {} built on it (sysfs holders); refusing to write it",
                target.holders.join(", ")
            ),
        });
    }
    for used in in_use {
        for t in &target.extents {
            if let Some(u) = used.storage.extents.iter().find(|u| t.overlaps(u)) {
                return Err(SlotError::SharedStorage {
                    path: path.to_path_buf(),
                    other: used.path.clone(),
                    what: used.what.clone(),
                    backing: t.name.clone(),
                    start: t.start.max(u.start),
                    end: t.end.min(u.end),
                });
            }
        }
    }
    Ok(())
}

/// Refuse a target (at `path`) whose bytes land in a file (a file slot, or
/// a loop device's backing file) that lives in a filesystem on the booted
/// slot's storage (`booted`: the booted slot's devices): writing it changes
/// the booted slot's bytes (a slot image others verify, a delta's base)
/// even though no byte is written through a device. Found from outside
/// (stop 48): slot B a file inside slot A's mounted filesystem was
/// written, and A's checksum changed. A file on any other filesystem (the
/// root's, a data partition's, tmpfs) is what file slots are for.
pub fn check_file_homes(
    path: &Path,
    target: &Storage,
    sys: &Sysfs,
    booted: &[InUse],
) -> Result<(), SlotError> {
    for e in &target.extents {
        if let Backing::File { dev, .. } = e.backing {
            let file_system = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            check_file_home(path, file_system, sys, booted)?;
        }
    }
    Ok(())
}

/// [`check_file_homes`] for one file, in the filesystem on `file_system`
/// (its `st_dev`).
fn check_file_home(
    path: &Path,
    file_system: (u64, u64),
    sys: &Sysfs,
    booted: &[InUse],
) -> Result<(), SlotError> {
    // Major 0: an anonymous device (tmpfs, overlay): no slot under it.
    if file_system.0 == 0 {
        return Ok(());
    }
    let home = sys.storage(file_system);
    for used in booted {
        if let Some(e) = home
            .extents
            .iter()
            .find(|h| used.storage.extents.iter().any(|u| h.overlaps(u)))
        {
            return Err(SlotError::Refused {
                path: path.to_path_buf(),
                reason: format!(
                    "is a file in a filesystem on {} ({}, {}): writing it would change {}'s bytes; refusing to write it",
                    e.name,
                    used.path.display(),
                    used.what,
                    used.path.display()
                ),
            });
        }
    }
    Ok(())
}

/// How deep stacked devices are followed (loop over loop over partition…);
/// deeper stacks, or a loop that backs itself, stop there.
const MAX_DEPTH: u32 = 16;

/// The kernel's view of block devices, read from a sysfs tree (`/sys` on a
/// host; a directory of plain files in tests).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// sysfs under `root` (tests use a fake tree).
    pub fn new(root: &Path) -> Sysfs {
        Sysfs {
            root: root.to_path_buf(),
        }
    }

    /// The system's `/sys`.
    pub fn system() -> Sysfs {
        Sysfs::new(Path::new("/sys"))
    }

    /// The storage of block device `major:minor`, whole.
    pub fn storage(&self, dev: (u64, u64)) -> Storage {
        let mut extents = Vec::new();
        self.resolve(dev, 0, None, 0, &mut extents);
        let mut holders = Vec::new();
        if let Some(dir) = self.dir(dev) {
            self.holders(&dir, 0, &mut holders);
        }
        holders.sort();
        holders.dedup();
        Storage { extents, holders }
    }

    /// The regular file a loop device `dev` reads and writes through the
    /// page cache (`loop/backing_file`, not deleted, `loop/dio` not 1),
    /// if that is what `dev` is. Such a device turns direct writes into
    /// dirty pages of that file, which the kernel writes out only when
    /// asked (`install::writer`, "Write-out").
    pub fn cached_loop_file(&self, dev: (u64, u64)) -> Option<PathBuf> {
        let dir = self.dir(dev)?;
        let name = loop_backing_name(&dir)?;
        if read_number(&dir.join("loop/dio")) == Some(1) {
            return None;
        }
        let path = PathBuf::from(OsString::from_vec(name.clone()));
        live_backing(&name, &path)
            .is_some_and(|m| m.is_file())
            .then_some(path)
    }

    /// What to call device `dev` in a message: `/dev/NAME` by its kernel
    /// name, else its number.
    pub fn name(&self, dev: (u64, u64)) -> String {
        self.dir(dev)
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| format!("/dev/{n}"))
            .unwrap_or_else(|| format!("device {}:{}", dev.0, dev.1))
    }

    /// `/sys/dev/block/MAJ:MIN`, resolved to the device's own directory
    /// (a partition's lies inside its disk's).
    fn dir(&self, (major, minor): (u64, u64)) -> Option<PathBuf> {
        std::fs::canonicalize(self.root.join("dev/block").join(format!("{major}:{minor}"))).ok()
    }

    /// Append the extents that bytes `[start, start + len)` of block device
    /// `dev` land on (`len` `None`: to the device's end).
    fn resolve(
        &self,
        dev: (u64, u64),
        start: u64,
        len: Option<u64>,
        depth: u32,
        out: &mut Vec<Extent>,
    ) {
        let disk = |end: u64, out: &mut Vec<Extent>| {
            out.push(Extent {
                backing: Backing::Disk {
                    major: dev.0,
                    minor: dev.1,
                },
                start,
                end,
                name: self.name(dev),
            })
        };
        let Some(dir) = self.dir(dev).filter(|_| depth < MAX_DEPTH) else {
            // Unknown to sysfs (or too deep): the number is all we know.
            return disk(len.map_or(u64::MAX, |l| start.saturating_add(l)), out);
        };
        let size = read_number(&dir.join("size")).map(|s| s.saturating_mul(512));
        let len = len
            .or_else(|| size.map(|s| s.saturating_sub(start)))
            .unwrap_or(u64::MAX - start);
        let end = start.saturating_add(len);
        // A partition: the same bytes of its disk, shifted.
        if dir.join("partition").exists() {
            let parent = dir.parent().and_then(|p| read_dev(&p.join("dev")));
            let first = read_number(&dir.join("start")).map(|s| s.saturating_mul(512));
            if let (Some(parent), Some(first)) = (parent, first) {
                return self.resolve(
                    parent,
                    first.saturating_add(start),
                    Some(len),
                    depth + 1,
                    out,
                );
            }
            return disk(end, out);
        }
        // A loop device: the same bytes of its backing file or device.
        if let Some(raw) = loop_backing_name(&dir) {
            let offset = read_number(&dir.join("loop/offset")).unwrap_or(0);
            let first = offset.saturating_add(start);
            return self.resolve_file(raw, first, len, depth, out);
        }
        // A stacked device (device-mapper, md): all of each lower device,
        // since its mapping table is not read here.
        if let Ok(entries) = std::fs::read_dir(dir.join("slaves")) {
            let mut any = false;
            for entry in entries.flatten() {
                if let Some(lower) = read_dev(&entry.path().join("dev")) {
                    any = true;
                    self.resolve(lower, 0, None, depth + 1, out);
                }
            }
            if any {
                return;
            }
        }
        disk(end, out)
    }

    /// A loop device's backing (`name` as sysfs gives it): a regular file
    /// by inode, a block device by its own storage.
    fn resolve_file(&self, name: Vec<u8>, start: u64, len: u64, depth: u32, out: &mut Vec<Extent>) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let end = start.saturating_add(len);
        let path = PathBuf::from(OsString::from_vec(name.clone()));
        let meta = live_backing(&name, &path);
        match meta {
            Some(m) if m.file_type().is_block_device() => {
                let rdev = m.rdev();
                let lower = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
                self.resolve(lower, start, Some(len), depth + 1, out)
            }
            Some(m) => out.push(Extent {
                backing: Backing::File {
                    dev: m.dev(),
                    ino: m.ino(),
                },
                start,
                end,
                name: path.display().to_string(),
            }),
            None => out.push(Extent {
                backing: Backing::Unreachable(path.as_os_str().to_owned()),
                start,
                end,
                name: String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned(),
            }),
        }
    }

    /// Kernel names of the devices built on `dir`'s device or on one of its
    /// partitions, and on those, recursively.
    fn holders(&self, dir: &Path, depth: u32, out: &mut Vec<String>) {
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("partition").exists() {
                self.holders(&path, depth + 1, out);
            }
        }
        let Ok(holders) = std::fs::read_dir(dir.join("holders")) else {
            return;
        };
        for holder in holders.flatten() {
            out.push(holder.file_name().to_string_lossy().into_owned());
            if let Ok(upper) = std::fs::canonicalize(holder.path()) {
                self.holders(&upper, depth + 1, out);
            }
        }
    }
}

/// A decimal number from a sysfs file.
/// What a loop device (its sysfs directory `dir`) is backed by, as sysfs
/// names it (`loop/backing_file`, without its newline): bytes, since a
/// file name is. `None` for any other device.
fn loop_backing_name(dir: &Path) -> Option<Vec<u8>> {
    let mut name =
        crate::files::read_capped(&dir.join("loop/backing_file"), MAX_SYSFS_BYTES).ok()?;
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    Some(name)
}

/// The metadata of the backing file `path` a loop device names `name`,
/// unless sysfs says it was deleted: the name may be another file's now.
fn live_backing(name: &[u8], path: &Path) -> Option<std::fs::Metadata> {
    if name.ends_with(b" (deleted)") {
        return None;
    }
    std::fs::metadata(path).ok()
}

/// The most read of a sysfs attribute: one page, or a path's length.
const MAX_SYSFS_BYTES: u64 = 8192;

fn read_number(path: &Path) -> Option<u64> {
    crate::files::read_text_capped(path, MAX_SYSFS_BYTES)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `MAJ:MIN` from a sysfs `dev` file.
fn read_dev(path: &Path) -> Option<(u64, u64)> {
    let text = crate::files::read_text_capped(path, MAX_SYSFS_BYTES).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Everything a target must not share storage with: the booted slot's
/// devices (`booted`: what to call each, and its path; one that cannot be
/// inspected is skipped), the root filesystem's device and every mounted
/// device (device numbers, as `/` and mountinfo give them).
pub fn in_use(
    booted: &[(String, PathBuf)],
    mounted: &[(u64, u64)],
    root: Option<(u64, u64)>,
    sys: &Sysfs,
) -> Vec<InUse> {
    let mut out: Vec<InUse> = booted
        .iter()
        .filter_map(|(what, path)| {
            let dev = Device::inspect(path).ok()?;
            Some(InUse {
                path: path.clone(),
                what: what.clone(),
                storage: dev.storage(sys),
            })
        })
        .collect();
    if let Some(root) = root {
        out.push(InUse {
            path: PathBuf::from(sys.name(root)),
            what: "the running root filesystem".into(),
            storage: sys.storage(root),
        });
    }
    let mut seen = Vec::new();
    // Major 0 is the kernel's anonymous devices (tmpfs, overlay, proc):
    // no block device stands under them.
    for &dev in mounted.iter().filter(|d| d.0 != 0) {
        if seen.contains(&dev) {
            continue;
        }
        seen.push(dev);
        out.push(InUse {
            path: PathBuf::from(sys.name(dev)),
            what: format!("mounted, device {}:{}", dev.0, dev.1),
            storage: sys.storage(dev),
        });
    }
    out
}

/// The one slot whose devices hold the root filesystem's storage; `None`
/// when none does or when both do (then the storage cannot tell).
pub fn slot_holding(root: &Storage, slots: &[(SlotName, Storage)]) -> Option<SlotName> {
    let holding: Vec<SlotName> = slots
        .iter()
        .filter(|(_, s)| {
            s.extents
                .iter()
                .any(|e| root.extents.iter().any(|r| e.overlaps(r)))
        })
        .map(|(slot, _)| *slot)
        .collect();
    let first = *holding.first()?;
    holding.iter().all(|&s| s == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// A sysfs tree of plain files and symlinks, shaped like the kernel's.
    struct FakeSys {
        root: PathBuf,
        /// Holds the tree; removed with it when the test ends.
        _dir: TempDir,
    }

    impl FakeSys {
        fn new(name: &str) -> FakeSys {
            let dir = TempDir::new(&format!("sysfs-{name}"));
            std::fs::create_dir_all(dir.join("dev/block")).expect("fake sysfs");
            FakeSys {
                root: std::fs::canonicalize(&dir).expect("canonical root"),
                _dir: dir,
            }
        }

        fn sys(&self) -> Sysfs {
            Sysfs::new(&self.root)
        }

        /// A device directory at `dir` numbered `dev`, `sectors` long.
        fn device(&self, dir: &Path, dev: (u64, u64), sectors: u64) -> PathBuf {
            std::fs::create_dir_all(dir).expect("device dir");
            std::fs::write(dir.join("dev"), format!("{}:{}\n", dev.0, dev.1)).expect("dev");
            std::fs::write(dir.join("size"), format!("{sectors}\n")).expect("size");
            std::os::unix::fs::symlink(
                dir,
                self.root.join(format!("dev/block/{}:{}", dev.0, dev.1)),
            )
            .expect("dev link");
            dir.to_path_buf()
        }

        fn disk(&self, name: &str, dev: (u64, u64), sectors: u64) -> PathBuf {
            self.device(&self.root.join("devices/block").join(name), dev, sectors)
        }

        fn part(&self, disk: &Path, name: &str, dev: (u64, u64), start: u64, sectors: u64) {
            let dir = self.device(&disk.join(name), dev, sectors);
            std::fs::write(dir.join("partition"), "1\n").expect("partition");
            std::fs::write(dir.join("start"), format!("{start}\n")).expect("start");
        }

        fn loop_dev(&self, name: &str, dev: (u64, u64), sectors: u64, backing: &[u8], offset: u64) {
            let dir = self.disk(name, dev, sectors);
            std::fs::create_dir_all(dir.join("loop")).expect("loop dir");
            let mut line = backing.to_vec();
            line.push(b'\n');
            std::fs::write(dir.join("loop/backing_file"), line).expect("backing_file");
            std::fs::write(dir.join("loop/offset"), format!("{offset}\n")).expect("offset");
        }

        /// `upper` is built on `lower`: `upper/slaves/lower`, `lower/holders/upper`.
        fn stack(&self, upper: &Path, lower: &Path) {
            for (dir, sub, to) in [(upper, "slaves", lower), (lower, "holders", upper)] {
                std::fs::create_dir_all(dir.join(sub)).expect("link dir");
                let name = to.file_name().expect("name");
                std::os::unix::fs::symlink(to, dir.join(sub).join(name)).expect("link");
            }
        }

        fn file(&self, name: &str, len: u64) -> PathBuf {
            let p = self.root.join(name);
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(len))
                .expect("backing file");
            p
        }
    }

    fn disk_extent(dev: (u64, u64), start: u64, end: u64) -> (Backing, u64, u64) {
        (
            Backing::Disk {
                major: dev.0,
                minor: dev.1,
            },
            start,
            end,
        )
    }

    fn plain(s: &Storage) -> Vec<(Backing, u64, u64)> {
        s.extents
            .iter()
            .map(|e| (e.backing.clone(), e.start, e.end))
            .collect()
    }

    fn used(path: &str, storage: Storage) -> InUse {
        InUse {
            path: PathBuf::from(path),
            what: "the booted slot".into(),
            storage,
        }
    }

    /// A file slot inside the booted slot's filesystem (A a loop device
    /// over a file, mounted; B a file in it) is refused; a file slot on
    /// another disk or on tmpfs is not.
    #[test]
    fn a_file_slot_inside_the_booted_slots_filesystem_is_refused() {
        let f = FakeSys::new("file-home");
        let backing = f.file("a.img", 4096 * 512);
        f.loop_dev("loop0", (7, 0), 4096, backing.as_os_str().as_bytes(), 0);
        let sdb = f.disk("sdb", (8, 16), 1000);
        f.part(&sdb, "sdb1", (8, 17), 100, 900);
        let sys = f.sys();
        let booted = [used("/dev/loop0", sys.storage((7, 0)))];
        let b = Path::new("/mnt/a/slot-b.img");
        let e = check_file_home(b, (7, 0), &sys, &booted).expect_err("inside A");
        assert!(
            e.to_string()
                .starts_with("/mnt/a/slot-b.img: is a file in a filesystem on ")
                && e.to_string().contains("would change /dev/loop0's bytes"),
            "{e}"
        );
        assert!(check_file_home(b, (8, 17), &sys, &booted).is_ok());
        assert!(check_file_home(b, (0, 45), &sys, &booted).is_ok());
        // A loop device over a file in A's filesystem reaches the same
        // bytes: its storage's file extent lives there.
        let over_file_in_a = Storage {
            extents: vec![Extent {
                backing: Backing::File {
                    dev: nix::sys::stat::makedev(7, 0),
                    ino: 12,
                },
                start: 0,
                end: 1 << 20,
                name: "/mnt/a/b.img".into(),
            }],
            holders: Vec::new(),
        };
        let lb = Path::new("/dev/loop1");
        assert!(check_file_homes(lb, &over_file_in_a, &sys, &booted).is_err());
        assert!(check_file_homes(lb, &sys.storage((8, 17)), &sys, &booted).is_ok());
        // A's partition, B a file in A's filesystem: refused the same way.
        let booted = [used("/dev/sdb1", sys.storage((8, 17)))];
        assert!(check_file_home(b, (8, 17), &sys, &booted).is_err());
        assert!(check_file_home(b, (7, 0), &sys, &booted).is_ok());
    }

    /// A regular file has no `O_EXCL` claim: its exclusive flock stands
    /// in for one, for as long as the writer keeps it open.
    #[test]
    fn a_file_slot_open_for_writing_is_claimed_until_it_is_closed() {
        let dir = TempDir::new("slot-flock");
        let slot = dir.join("b.img");
        std::fs::write(&slot, vec![0u8; 4096]).expect("slot");
        let writer = open_exclusive(&slot, true, 0).expect("first writer");
        let e = open_exclusive(&slot, true, 0).expect_err("second writer");
        assert!(
            e.to_string().contains("being written by another process"),
            "{e}"
        );
        // Readers are not writers.
        open_exclusive(&slot, false, 0).expect("a reader");
        drop(writer);
        open_exclusive(&slot, true, 0).expect("after the first closed");
    }

    #[test]
    fn a_partition_is_a_byte_range_of_its_disk() {
        let f = FakeSys::new("part");
        let sda = f.disk("sda", (8, 0), 1000);
        f.part(&sda, "sda1", (8, 1), 100, 300);
        f.part(&sda, "sda2", (8, 2), 400, 600);
        let sys = f.sys();
        assert_eq!(
            plain(&sys.storage((8, 2))),
            vec![disk_extent((8, 0), 400 * 512, 1000 * 512)]
        );
        let (whole, p1, p2) = (
            sys.storage((8, 0)),
            sys.storage((8, 1)),
            sys.storage((8, 2)),
        );
        assert!(whole.extents[0].overlaps(&p1.extents[0]));
        assert!(whole.extents[0].overlaps(&p2.extents[0]));
        assert!(!p1.extents[0].overlaps(&p2.extents[0]));
        assert_eq!(whole.extents[0].name, "/dev/sda");
    }

    #[test]
    fn a_loop_device_is_its_backing_files_bytes_from_its_offset() {
        let f = FakeSys::new("loop");
        let img = f.file("slot-a.img", 1 << 20);
        f.loop_dev("loop0", (7, 0), 2048, img.as_os_str().as_bytes(), 0);
        f.loop_dev("loop1", (7, 1), 1024, img.as_os_str().as_bytes(), 512 << 10);
        let sys = f.sys();
        let file = Device::inspect(&img).expect("file").storage(&sys);
        let (l0, l1) = (sys.storage((7, 0)), sys.storage((7, 1)));
        assert_eq!(plain(&l1)[0].1..plain(&l1)[0].2, (512 << 10)..(1 << 20));
        assert_eq!(l0.extents[0].backing, file.extents[0].backing);
        assert!(l0.extents[0].overlaps(&l1.extents[0]));
        assert!(file.extents[0].overlaps(&l1.extents[0]));
        assert_eq!(l1.extents[0].name, img.display().to_string());
        // Another file is other storage.
        let other = Device::inspect(&f.file("slot-b.img", 1 << 20))
            .expect("file")
            .storage(&sys);
        assert!(!other.extents[0].overlaps(&l0.extents[0]));
    }

    #[test]
    fn a_deleted_backing_file_is_known_by_its_name() {
        let f = FakeSys::new("deleted");
        f.loop_dev("loop0", (7, 0), 8, b"/var/tmp/slot.img (deleted)", 0);
        f.loop_dev("loop1", (7, 1), 8, b"/var/tmp/slot.img (deleted)", 0);
        f.loop_dev("loop2", (7, 2), 8, b"/var/tmp/other\xff.img (deleted)", 0);
        let sys = f.sys();
        let (a, b, c) = (
            sys.storage((7, 0)),
            sys.storage((7, 1)),
            sys.storage((7, 2)),
        );
        assert!(matches!(a.extents[0].backing, Backing::Unreachable(_)));
        assert!(a.extents[0].overlaps(&b.extents[0]));
        assert!(!a.extents[0].overlaps(&c.extents[0]));
        // The name's bytes stay bytes.
        assert_eq!(
            c.extents[0].backing,
            Backing::Unreachable(OsString::from_vec(
                b"/var/tmp/other\xff.img (deleted)".to_vec()
            ))
        );
    }

    #[test]
    fn only_a_loop_device_over_a_cached_regular_file_has_a_file_to_write_out() {
        let f = FakeSys::new("write-out");
        let img = f.file("slot-b.img", 1 << 20);
        f.loop_dev("loop0", (7, 0), 2048, img.as_os_str().as_bytes(), 0);
        // The same file, but the loop device does direct I/O itself.
        f.loop_dev("loop1", (7, 1), 2048, img.as_os_str().as_bytes(), 0);
        let dio = f.root.join("devices/block/loop1/loop/dio");
        std::fs::write(dio, "1\n").expect("dio");
        f.loop_dev("loop2", (7, 2), 8, b"/var/tmp/slot.img (deleted)", 0);
        // A loop device over something that is not a regular file.
        f.loop_dev("loop3", (7, 3), 8, b"/dev/null", 0);
        f.disk("sda", (8, 0), 2048);
        let sys = f.sys();
        assert_eq!(sys.cached_loop_file((7, 0)), Some(img));
        for dev in [(7, 1), (7, 2), (7, 3), (8, 0), (9, 9)] {
            assert_eq!(sys.cached_loop_file(dev), None, "{dev:?}");
        }
    }

    #[test]
    fn a_device_mapper_target_is_all_of_its_lower_devices() {
        // This kernel has no device-mapper: its sysfs shape is all that
        // is followed, so a fake tree of it is the test.
        let f = FakeSys::new("dm");
        let sda = f.disk("sda", (8, 0), 1000);
        f.part(&sda, "sda1", (8, 1), 100, 300);
        f.part(&sda, "sda2", (8, 2), 400, 600);
        let dm0 = f.disk("dm-0", (253, 0), 600);
        f.stack(&dm0, &sda.join("sda2"));
        // dm-1 (e.g. dm-verity) on dm-0: followed recursively.
        let dm1 = f.disk("dm-1", (253, 1), 500);
        f.stack(&dm1, &dm0);
        let sys = f.sys();
        let expect = vec![disk_extent((8, 0), 400 * 512, 1000 * 512)];
        assert_eq!(plain(&sys.storage((253, 0))), expect);
        assert_eq!(plain(&sys.storage((253, 1))), expect);
        // Mounted dm-1 keeps sda2 and the whole disk from being written,
        // not sda1.
        let in_use = vec![used("/dev/dm-1", sys.storage((253, 1)))];
        let sda1 = sys.storage((8, 1));
        let sda2 = Storage {
            holders: Vec::new(),
            ..sys.storage((8, 2))
        };
        let whole = Storage {
            holders: Vec::new(),
            ..sys.storage((8, 0))
        };
        check_target(Path::new("/dev/sda1"), &sda1, &in_use).expect("sda1 is free");
        for (path, s) in [("/dev/sda2", &sda2), ("/dev/sda", &whole)] {
            let e = check_target(Path::new(path), s, &in_use).expect_err("shared");
            let msg = e.to_string();
            assert!(msg.starts_with(path), "{msg}");
            assert!(msg.contains("/dev/dm-1 (the booted slot)"), "{msg}");
            assert!(msg.contains("of /dev/sda"), "{msg}");
        }
    }

    #[test]
    fn a_device_something_is_built_on_is_refused_naming_the_holders() {
        let f = FakeSys::new("holders");
        let sda = f.disk("sda", (8, 0), 1000);
        f.part(&sda, "sda2", (8, 2), 400, 600);
        let dm0 = f.disk("dm-0", (253, 0), 600);
        f.stack(&dm0, &sda.join("sda2"));
        let dm1 = f.disk("dm-1", (253, 1), 600);
        f.stack(&dm1, &dm0);
        let sys = f.sys();
        // On the partition, and (through it) on the whole disk.
        for dev in [(8, 2), (8, 0)] {
            let s = sys.storage(dev);
            assert_eq!(s.holders, vec!["dm-0".to_string(), "dm-1".to_string()]);
            let e = check_target(Path::new("/dev/x"), &s, &[]).expect_err("held");
            assert!(e.to_string().contains("dm-0, dm-1 built on it"), "{e}");
        }
        assert!(sys.storage((253, 1)).holders.is_empty());
    }

    #[test]
    fn a_device_sysfs_does_not_know_is_its_number_to_the_end() {
        let f = FakeSys::new("unknown");
        let s = f.sys().storage((259, 7));
        assert_eq!(plain(&s), vec![disk_extent((259, 7), 0, u64::MAX)]);
        assert_eq!(s.extents[0].name, "device 259:7");
        assert!(s.extents[0].overlaps(&s.extents[0]));
    }

    #[test]
    fn a_cycle_in_sysfs_ends() {
        let f = FakeSys::new("cycle");
        let a = f.disk("dm-0", (253, 0), 8);
        let b = f.disk("dm-1", (253, 1), 8);
        f.stack(&a, &b);
        f.stack(&b, &a);
        let s = f.sys().storage((253, 0));
        assert!(!s.extents.is_empty());
        assert!(s.holders.contains(&"dm-1".to_string()));
    }

    #[test]
    fn check_target_refuses_only_a_shared_byte() {
        let ext = |ino, start, end| Extent {
            backing: Backing::File { dev: 1, ino },
            start,
            end,
            name: format!("/img{ino}"),
        };
        let storage = |e: Extent| Storage {
            extents: vec![e],
            holders: Vec::new(),
        };
        let in_use = vec![used("/dev/loop0", storage(ext(5, 0, 100)))];
        let ok = |t: Extent| check_target(Path::new("/dev/loop1"), &storage(t), &in_use);
        ok(ext(5, 100, 200)).expect("adjacent ranges share no byte");
        ok(ext(6, 0, 100)).expect("another file");
        ok(ext(5, 7, 7)).expect("an empty range");
        let e = ok(ext(5, 99, 200)).expect_err("one byte shared");
        assert_eq!(
            e.to_string(),
            "/dev/loop1: shares its storage with /dev/loop0 (the booted slot): both reach bytes 99..100 of /img5; refusing to write it"
        );
        check_target(Path::new("/dev/loop1"), &storage(ext(5, 0, 1)), &[]).expect("nothing in use");
    }

    #[test]
    fn the_slot_holding_root_is_the_only_one_that_overlaps_it() {
        let ext = |start, end| Extent {
            backing: Backing::Disk { major: 8, minor: 0 },
            start,
            end,
            name: "/dev/sda".into(),
        };
        let st = |e: Vec<Extent>| Storage {
            extents: e,
            holders: Vec::new(),
        };
        let root = st(vec![ext(100, 200)]);
        let a = (SlotName::A, st(vec![ext(0, 150)]));
        let b = (SlotName::B, st(vec![ext(200, 300)]));
        assert_eq!(
            slot_holding(&root, &[a.clone(), b.clone()]),
            Some(SlotName::A)
        );
        assert_eq!(slot_holding(&root, std::slice::from_ref(&b)), None);
        let b_too = (SlotName::B, st(vec![ext(150, 250)]));
        assert_eq!(slot_holding(&root, &[a.clone(), b_too]), None);
        // Two classes of one slot: still that slot.
        let a2 = (SlotName::A, st(vec![ext(180, 190)]));
        assert_eq!(slot_holding(&root, &[a, a2, b]), Some(SlotName::A));
    }

    #[test]
    fn in_use_names_booted_root_and_each_mounted_device_once() {
        let f = FakeSys::new("in-use");
        let sda = f.disk("sda", (8, 0), 1000);
        f.part(&sda, "sda1", (8, 1), 100, 300);
        let img = f.file("a.img", 4096);
        let list = in_use(
            &[
                ("slot A rootfs, the booted slot".into(), img.clone()),
                (
                    "slot A boot, the booted slot".into(),
                    f.root.join("missing"),
                ),
            ],
            &[(8, 1), (0, 21), (8, 1)],
            Some((8, 1)),
            &f.sys(),
        );
        let names: Vec<(String, String)> = list
            .iter()
            .map(|u| (u.path.display().to_string(), u.what.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    img.display().to_string(),
                    "slot A rootfs, the booted slot".into()
                ),
                ("/dev/sda1".into(), "the running root filesystem".into()),
                ("/dev/sda1".into(), "mounted, device 8:1".into()),
            ]
        );
    }
}
