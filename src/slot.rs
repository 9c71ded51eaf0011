//! Slot names and slot devices.
//!
//! Invariant: the booted slot's devices are never opened for writing, and
//! neither is any device that is mounted.

use std::fmt;
use std::str::FromStr;

/// One of the two system copies.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SlotName {
    A,
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

    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "A",
            SlotName::B => "B",
        }
    }

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
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    Refused {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SlotError::Refused { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for SlotError {}

// BLKGETSIZE64 is _IOR(0x12, 114, size_t): encoding it with the platform's
// size_t keeps the request number right on 32-bit ARM too.
nix::ioctl_read!(blk_get_size64, 0x12, 114, usize);

/// A slot's partition (or, for tests and demos, a regular file).
#[derive(Debug)]
pub struct Device {
    pub path: std::path::PathBuf,
    /// Block device number, or `None` for a regular file.
    pub rdev: Option<(u64, u64)>,
    /// (st_dev, st_ino) of a regular file.
    pub file_id: Option<(u64, u64)>,
    pub size: u64,
}

impl Device {
    /// Look at a device without opening it for writing.
    pub fn inspect(path: &std::path::Path) -> Result<Device, SlotError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let io = |source| SlotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.file_type().is_block_device() {
            let file = std::fs::File::open(path).map_err(io)?;
            let mut size: u64 = 0;
            let mut raw: usize = 0;
            // SAFETY: the ioctl writes one size_t into `raw`, which lives for the call.
            unsafe { blk_get_size64(std::os::fd::AsRawFd::as_raw_fd(&file), &mut raw) }
                .map_err(|e| io(e.into()))?;
            size += raw as u64;
            let rdev = meta.rdev();
            Ok(Device {
                path: path.to_path_buf(),
                rdev: Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))),
                file_id: None,
                size,
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

    /// Whether two paths are the same device or file.
    pub fn same_as(&self, other: &Device) -> bool {
        (self.rdev.is_some() && self.rdev == other.rdev)
            || (self.file_id.is_some() && self.file_id == other.file_id)
    }

    /// Refuse to write a device that is mounted or that holds the running
    /// system (`/`).
    pub fn check_writable(
        &self,
        mounted: &[(u64, u64)],
        root_dev: Option<(u64, u64)>,
    ) -> Result<(), SlotError> {
        if let Some(rdev) = self.rdev {
            if root_dev == Some(rdev) {
                return Err(SlotError::Refused {
                    path: self.path.clone(),
                    reason: "is the running root filesystem".into(),
                });
            }
            if mounted.contains(&rdev) {
                return Err(SlotError::Refused {
                    path: self.path.clone(),
                    reason: format!("is mounted (device {}:{})", rdev.0, rdev.1),
                });
            }
        }
        Ok(())
    }
}

/// The device number of the filesystem holding `/`.
pub fn root_device() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").ok()?.dev();
    Some((nix::sys::stat::major(dev), nix::sys::stat::minor(dev)))
}
