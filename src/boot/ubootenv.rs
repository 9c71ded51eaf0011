//! U-Boot environment: `fw_env.config` parser, env codec, redundant-copy
//! reader and power-cut-safe writer, compatible with libubootenv's
//! `fw_printenv`/`fw_setenv` and U-Boot's own `env` code.
//!
//! Invariant: with a redundant environment (two lines in `fw_env.config`),
//! a write only ever touches the copy that is NOT the one U-Boot and
//! `fw_printenv` currently select, and gives it the next flag value; the
//! selected copy stays intact until the new one is complete and synced. A
//! power cut mid-write leaves a copy with a bad CRC, which every reader skips
//! in favour of the old, valid copy. A single-copy environment has no such
//! fallback (U-Boot's own `saveenv` has the same limit): it is rewritten in
//! place with one write and an `fsync`.
//!
//! Layout of one copy (`size` bytes, from `fw_env.config`):
//! - single:    CRC-32 (little endian) | data
//! - redundant: CRC-32 (little endian) | flags byte | data
//!
//! The CRC covers the whole data area. Data is `name=value\0` strings ended
//! by an empty string (`\0\0`); the rest is padding. We pad with `\0` as
//! U-Boot's `env_export` does (`mkenvimage` pads with 0xff by default; both
//! read the same since the CRC covers the padding as stored).
//!
//! The data is bytes. A copy is valid when its CRC matches, and that (with
//! the flags) alone decides which copy is current: what the variables hold
//! (text or not) never makes a copy "invalid", or a write would go over the
//! copy in use. The current copy's strings are kept byte for byte; only the
//! variables a backend sets are replaced (see `UbootEnv`).
//!
//! Which copy is current (libubootenv `libuboot_load`, U-Boot
//! `env_import_redund`): a copy whose CRC fails is never used; if both are
//! valid, the higher flag wins, except that 0xff against 0 means 0 wrapped
//! around and wins (incremental scheme, used for files, block devices, NAND
//! and UBI), or 0xff means "active" (boolean scheme of NOR flash). Equal
//! flags pick the first copy. Writes use the incremental scheme only: the
//! boolean scheme exists only on MTD NOR flash, which we refuse (erasing
//! flash sectors is out of scope).
//!
//! Locking: like libubootenv we hold an exclusive `flock` on
//! `/var/lock/fw_printenv.lock` for the whole read-modify-write, so a
//! concurrent `fw_setenv` cannot interleave with us. As in libubootenv, a
//! lock file that cannot be opened does not stop the operation.

use super::{io_err, show, BootError};
use nix::fcntl::{Flock, FlockArg};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// The lock file libubootenv's tools use by default.
pub const LOCK_FILE: &str = "/var/lock/fw_printenv.lock";

/// Largest environment we accept from a config (U-Boot's are a few KiB to a
/// few hundred KiB); guards against allocating for a garbage size.
const MAX_ENV_SIZE: usize = 16 << 20;

/// Largest `fw_env.config` we read.
const MAX_CONFIG_SIZE: u64 = 64 << 10;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 as zlib's `crc32(0, data, len)` (IEEE 802.3, reflected,
/// polynomial 0xEDB88320), which U-Boot and libubootenv use.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// How the flags byte of a redundant environment orders the two copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagScheme {
    /// Each save writes the other copy's flag + 1 (wrapping): files, block
    /// devices, NAND, UBI.
    Incremental,
    /// The active copy has 1 (or 0xff, erased), the obsolete one 0: NOR.
    Boolean,
}

/// Which copy (0 or 1) a reader uses, given whether each copy's CRC is
/// valid and their flags bytes; `None` when neither is valid. Exactly
/// libubootenv's `libuboot_load` decision.
pub fn select_copy(scheme: FlagScheme, valid: [bool; 2], flags: [u8; 2]) -> Option<usize> {
    match valid {
        [false, false] => None,
        [true, false] => Some(0),
        [false, true] => Some(1),
        [true, true] => {
            let mut current = if flags[1] > flags[0] { 1 } else { 0 };
            match scheme {
                FlagScheme::Boolean => {
                    if flags[1] == 0xff {
                        current = 1;
                    } else if flags[0] == 0xff {
                        current = 0;
                    }
                }
                FlagScheme::Incremental => {
                    // The counter wrapped from 0xff to 0.
                    if flags[0] == 0xff && flags[1] == 0 {
                        current = 1;
                    } else if flags[1] == 0xff && flags[0] == 0 {
                        current = 0;
                    }
                }
            }
            Some(current)
        }
    }
}

/// One line of `fw_env.config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvDevice {
    /// A regular file or a block device.
    pub path: PathBuf,
    /// Byte offset; negative counts back from the end of a block device.
    pub offset: i64,
    /// Size of one environment copy in bytes.
    pub size: usize,
    /// Erase sector size (MTD only; kept for completeness).
    pub sector_size: Option<u64>,
    /// Number of sectors (MTD only; kept for completeness).
    pub sectors: Option<u64>,
}

impl EnvDevice {
    fn describe(&self) -> String {
        format!("{}@{:#x}", self.path.display(), self.offset)
    }
}

/// A parsed `fw_env.config`: one device line (single copy) or two
/// (redundant copies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UbootEnvConfig {
    source: String,
    devices: Vec<EnvDevice>,
}

impl UbootEnvConfig {
    /// Parse the text of an `fw_env.config`, as libubootenv does: lines
    /// `device offset size [sector-size [num-sectors]]`, `#` comments, the
    /// offset in C notation (`0x` hex, leading `0` octal, else decimal; may
    /// be negative), sizes always hexadecimal (`4000` is 0x4000) with an
    /// optional `0x`. Stricter than libubootenv where it would silently skip
    /// or ignore a line: a line that does not parse, or a third device, is
    /// an error naming the line. `path_for_messages` names the file in
    /// errors. The text is bytes: a device path is taken byte for byte (a
    /// file name need not be UTF-8), the numbers must be ASCII.
    // Long on purpose: libubootenv's line format (numbers in three notations,
    // optional fields, comments) read field by field, each error naming its
    // line.
    pub fn parse(
        text: impl AsRef<[u8]>,
        path_for_messages: &str,
    ) -> Result<UbootEnvConfig, BootError> {
        let err = |line: usize, reason: String| BootError::Format {
            path: path_for_messages.to_string(),
            reason: format!("line {line}: {reason}"),
        };
        let mut devices = Vec::new();
        for (i, raw) in text.as_ref().split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let fields: Vec<&[u8]> = raw
                .split(|b| matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c))
                .filter(|f| !f.is_empty())
                .take_while(|f| !f.starts_with(b"#"))
                .collect();
            if fields.is_empty() {
                continue;
            }
            if fields.len() < 3 {
                return Err(err(
                    n,
                    "expected \"device offset size [sector-size [sectors]]\"".to_string(),
                ));
            }
            if fields.len() > 6 {
                return Err(err(n, "too many fields".to_string()));
            }
            let dev = fields[0];
            if dev.starts_with(b"/dev/mtd") || dev.starts_with(b"/dev/ubi") {
                return Err(err(
                    n,
                    format!(
                        "{}: MTD/UBI environments are not supported \
                         (only regular files and block devices)",
                        show(dev)
                    ),
                ));
            }
            // Numbers are ASCII; anything else is simply not a number.
            let text = |f: &[u8]| std::str::from_utf8(f).unwrap_or("").to_string();
            let bad = |what: &str, f: &[u8]| err(n, format!("bad {what} \"{}\"", show(f)));
            let offset = parse_c_int(&text(fields[1])).ok_or_else(|| bad("offset", fields[1]))?;
            let size = parse_hex(&text(fields[2]))
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| bad("size (hexadecimal)", fields[2]))?;
            if !(8..=MAX_ENV_SIZE).contains(&size) {
                return Err(err(
                    n,
                    format!("size {size:#x} out of range (8 bytes to {MAX_ENV_SIZE:#x})"),
                ));
            }
            let sector_size = match fields.get(3) {
                Some(f) => Some(parse_hex(&text(f)).ok_or_else(|| bad("sector size", f))?),
                None => None,
            };
            let sectors = match fields.get(4) {
                Some(f) => Some(parse_hex(&text(f)).ok_or_else(|| bad("sector count", f))?),
                None => None,
            };
            if let Some(f) = fields.get(5) {
                text(f)
                    .parse::<i32>()
                    .map_err(|_| bad("MTD lock flag", f))?;
            }
            if devices.len() == 2 {
                return Err(err(
                    n,
                    "a third environment device (at most two: primary and redundant)".to_string(),
                ));
            }
            if let Some(first) = devices.first() {
                let first: &EnvDevice = first;
                if first.size != size {
                    return Err(err(
                        n,
                        format!(
                            "redundant copy size {size:#x} differs from the first ({:#x})",
                            first.size
                        ),
                    ));
                }
            }
            let device = EnvDevice {
                path: PathBuf::from(OsStr::from_bytes(dev)),
                offset,
                size,
                sector_size,
                sectors,
            };
            if let Some(first) = devices.first() {
                // One name, offsets counted from the same end: comparable
                // here (the rest when the devices are opened).
                if first.path == device.path && (first.offset < 0) == (device.offset < 0) {
                    let at = [first.offset as i128, device.offset as i128];
                    if let Some(why) = overlap(first, &device, at) {
                        return Err(err(n, why));
                    }
                }
            }
            devices.push(device);
        }
        if devices.is_empty() {
            return Err(BootError::Format {
                path: path_for_messages.to_string(),
                reason: "no environment device line".to_string(),
            });
        }
        Ok(UbootEnvConfig {
            source: path_for_messages.to_string(),
            devices,
        })
    }

    /// Read and parse the config file at `path`.
    pub fn load(path: &Path) -> Result<UbootEnvConfig, BootError> {
        // A config is a few lines of a regular file: a wrong path (a disk)
        // is not read whole, a FIFO does not hold the open.
        let text =
            crate::files::read_capped(path, MAX_CONFIG_SIZE).map_err(|e| match e.kind() {
                std::io::ErrorKind::FileTooLarge => BootError::Format {
                    path: path.display().to_string(),
                    reason: format!("larger than {MAX_CONFIG_SIZE} bytes (not an fw_env.config)"),
                },
                _ => io_err(path, e),
            })?;
        let config = UbootEnvConfig::parse(&text, &path.display().to_string())?;
        // Two names for one file or device, or offsets from either end,
        // hide an overlap from `parse`; the devices tell. One that cannot
        // be opened yet is reported when the env is read (and every write
        // checks again).
        if let Ok(Some(why)) = copies_overlap(&config) {
            return Err(BootError::Format {
                path: path.display().to_string(),
                reason: why,
            });
        }
        Ok(config)
    }

    /// Whether there are two copies.
    pub fn redundant(&self) -> bool {
        self.devices.len() == 2
    }

    /// Size of one copy in bytes.
    pub fn size(&self) -> usize {
        self.devices[0].size
    }

    /// The device lines, in file order.
    pub fn devices(&self) -> &[EnvDevice] {
        &self.devices
    }

    /// The config's path, as given for messages.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Why the two copies `a` and `b` (on one file or device, the same size),
/// whose offsets resolve to `at` (bytes from the start), share bytes, if
/// they do: every write goes to the copy not in use, so overlapping copies
/// would have each write destroy the copy in use, and a power cut
/// mid-write leave none. Pure.
fn overlap(a: &EnvDevice, b: &EnvDevice, at: [i128; 2]) -> Option<String> {
    let size = a.size.max(b.size) as i128;
    let shared = size - (at[0] - at[1]).abs();
    (shared > 0).then(|| {
        format!(
            "the two environment copies overlap: {} ({:#x} bytes) and {} ({:#x} bytes) share \
             {shared:#x} bytes; each write would go over the copy in use",
            a.describe(),
            a.size,
            b.describe(),
            b.size,
        )
    })
}

/// The copies of `cfg` as the devices resolve them: why they overlap, if
/// they do (one file or device, under one name or two: a link, a second
/// device node; an offset from the end of a device against one from its
/// start). `None` for a single copy.
fn copies_overlap(cfg: &UbootEnvConfig) -> Result<Option<String>, BootError> {
    use std::os::unix::fs::MetadataExt;
    let [a, b] = cfg.devices.as_slice() else {
        return Ok(None);
    };
    let ((fa, oa), (fb, ob)) = (open_device(a, false)?, open_device(b, false)?);
    let meta = |f: &File, d: &EnvDevice| f.metadata().map_err(|e| io_err(&d.path, e));
    let (ma, mb) = (meta(&fa, a)?, meta(&fb, b)?);
    let same = (ma.dev(), ma.ino()) == (mb.dev(), mb.ino())
        || (ma.file_type().is_block_device()
            && mb.file_type().is_block_device()
            && ma.rdev() == mb.rdev());
    Ok(same
        .then(|| overlap(a, b, [oa as i128, ob as i128]))
        .flatten())
}

/// `strtoll(s, _, 0)` over the whole token.
fn parse_c_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    // Digits only: Rust's from_str_radix would also take a second sign
    // ("0x+10", "-+5"), which strtoll (and so libubootenv) reads otherwise;
    // a config we might read differently from fw_printenv is refused.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(digits, radix).ok()?;
    let v = i64::try_from(v).ok()?;
    Some(if neg { -v } else { v })
}

/// `%x` over the whole token: hexadecimal with an optional `0x`.
fn parse_hex(s: &str) -> Option<u64> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if h.is_empty() || h.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(h, 16).ok()
}

/// The variables of a U-Boot environment: the strings of its data area,
/// byte for byte and in stored order, and which copy they were read from.
///
/// An entry is one stored `name=value` string (without its NUL). Entries
/// are never re-encoded: the ones we do not change, odd ones included (a
/// name or value that is not UTF-8, a repeated name, a string without `=`),
/// are written back exactly as they were read. Lookups see what libubootenv
/// and U-Boot see: the last `name=` entry of a name wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UbootEnv {
    entries: Vec<Vec<u8>>,
    copy: usize,
    flag: Option<u8>,
}

/// The name of a stored entry: up to its first `=` (all of it without one).
fn entry_name(entry: &[u8]) -> &[u8] {
    match entry.iter().position(|&b| b == b'=') {
        Some(i) => &entry[..i],
        None => entry,
    }
}

/// The value of a stored entry; `None` for a string without `=`, which
/// libubootenv skips.
fn entry_value(entry: &[u8]) -> Option<&[u8]> {
    let i = entry.iter().position(|&b| b == b'=')?;
    Some(&entry[i + 1..])
}

/// Size of one copy's header: CRC, plus the flags byte when redundant.
fn header_len(redundant: bool) -> usize {
    if redundant {
        5
    } else {
        4
    }
}

/// Whether one copy's stored CRC matches its data area: the only test
/// U-Boot and libubootenv apply before choosing a copy. What the data says
/// (its bytes need not be UTF-8, or even well formed) plays no part.
pub fn crc_valid(copy: &[u8], redundant: bool) -> Result<(), String> {
    let header = header_len(redundant);
    if copy.len() <= header {
        return Err(format!("copy is {} bytes, too short", copy.len()));
    }
    let stored = u32::from_le_bytes([copy[0], copy[1], copy[2], copy[3]]);
    let actual = crc32(&copy[header..]);
    if stored != actual {
        return Err(format!(
            "CRC mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    Ok(())
}

/// Split a data area into its stored strings, up to the empty string that
/// ends the list. Errors when a string runs into the end of the area (no
/// reader can tell where it ends). Never panics.
pub fn parse_data(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut entries = Vec::new();
    let mut p = 0;
    loop {
        let Some(len) = data[p..].iter().position(|&b| b == 0) else {
            return Err(format!("variable at data byte {p} is not terminated"));
        };
        if len == 0 {
            return Ok(entries);
        }
        entries.push(data[p..p + len].to_vec());
        p += len + 1;
    }
}

impl UbootEnv {
    /// An empty environment.
    pub fn new() -> UbootEnv {
        UbootEnv::default()
    }

    /// The value of `name`, if set: the last `name=` entry, as libubootenv
    /// (`fw_printenv`) and U-Boot's import read it.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let name = name.as_ref();
        self.entries
            .iter()
            .rev()
            .filter(|e| entry_name(e) == name)
            .find_map(|e| entry_value(e))
    }

    /// Set `name`: its first entry becomes `name=value` and any later
    /// entries of the same name go, so every reader sees this value; a new
    /// name is appended. U-Boot forbids empty names and `=` in names; NUL
    /// ends a string so neither may hold one.
    pub fn set(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), String> {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.is_empty() || name.iter().any(|&b| b == b'=' || b == 0) {
            return Err(format!("invalid U-Boot variable name \"{}\"", show(name)));
        }
        if value.contains(&0) {
            return Err(format!("value of {} contains a NUL byte", show(name)));
        }
        let mut entry = Vec::with_capacity(name.len() + 1 + value.len());
        entry.extend_from_slice(name);
        entry.push(b'=');
        entry.extend_from_slice(value);
        match self.entries.iter().position(|e| entry_name(e) == name) {
            Some(first) => {
                self.entries[first] = entry;
                let mut i = 0;
                self.entries.retain(|e| {
                    i += 1;
                    i - 1 <= first || entry_name(e) != name
                });
            }
            None => self.entries.push(entry),
        }
        Ok(())
    }

    /// Remove every entry of `name`; returns the value readers saw.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        let name = name.as_ref();
        let old = self.get(name).map(<[u8]>::to_vec);
        self.entries.retain(|e| entry_name(e) != name);
        old
    }

    /// The variables as `fw_printenv` lists them: `name=value` entries with
    /// a non-empty name, each name once (at its first position, with its
    /// last value).
    pub fn vars(&self) -> Vec<(&[u8], &[u8])> {
        let mut out: Vec<(&[u8], &[u8])> = Vec::new();
        for e in &self.entries {
            let (name, Some(value)) = (entry_name(e), entry_value(e)) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(v) => v.1 = value,
                None => out.push((name, value)),
            }
        }
        out
    }

    /// The stored strings, exactly as they will be written.
    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    /// The copy (0 or 1) this environment was read from.
    pub fn copy(&self) -> usize {
        self.copy
    }

    /// The flags byte of that copy (redundant environments only).
    pub fn flag(&self) -> Option<u8> {
        self.flag
    }

    /// Encode one copy of `size` bytes: with `flag` the redundant layout,
    /// without it the single layout.
    pub fn encode_copy(&self, size: usize, flag: Option<u8>) -> Result<Vec<u8>, String> {
        let header = header_len(flag.is_some());
        let data_len = size
            .checked_sub(header)
            .ok_or_else(|| format!("environment size {size} is smaller than its header"))?;
        let mut data = Vec::with_capacity(data_len);
        for entry in &self.entries {
            data.extend_from_slice(entry);
            data.push(0);
        }
        // The empty string that ends the list.
        data.push(0);
        if data.len() > data_len {
            return Err(format!(
                "variables need {} bytes, the environment holds {data_len}",
                data.len()
            ));
        }
        data.resize(data_len, 0);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&crc32(&data).to_le_bytes());
        if let Some(f) = flag {
            out.push(f);
        }
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Decode one copy: its CRC must match, and its data be a terminated
    /// string list. Never panics.
    pub fn decode_copy(bytes: &[u8], redundant: bool) -> Result<UbootEnv, String> {
        crc_valid(bytes, redundant)?;
        let entries = parse_data(&bytes[header_len(redundant)..])?;
        Ok(UbootEnv {
            entries,
            copy: 0,
            flag: redundant.then(|| bytes[4]),
        })
    }
}

/// Exclusive lock shared with libubootenv's tools; released on drop.
struct EnvLock(#[allow(dead_code)] Option<Flock<File>>);

fn lock() -> EnvLock {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(LOCK_FILE);
    EnvLock(
        file.ok()
            .and_then(|f| Flock::lock(f, FlockArg::LockExclusive).ok()),
    )
}

impl UbootEnvConfig {
    /// Each copy's bytes on its file or device (a negative offset resolved
    /// against the device's size); a copy that cannot be opened is left
    /// out (no slot can be written over what is not there).
    pub fn stores(&self) -> Vec<super::EnvStore> {
        self.devices
            .iter()
            .filter_map(|dev| {
                let (_, offset) = open_device(dev, false).ok()?;
                Some(super::EnvStore {
                    path: dev.path.clone(),
                    range: Some((offset, dev.size as u64)),
                })
            })
            .collect()
    }
}

/// Open one device and resolve its absolute offset.
fn open_device(dev: &EnvDevice, writable: bool) -> Result<(File, u64), BootError> {
    // Not blocking on a FIFO; what else stands there is judged below.
    let mut file = crate::files::open_checked(
        &dev.path,
        OpenOptions::new().read(true).write(writable),
        crate::files::Accept::RegularOrDevice,
    )
    .map_err(|e| io_err(&dev.path, e))?;
    let ft = file
        .metadata()
        .map_err(|e| io_err(&dev.path, e))?
        .file_type();
    let is_block = ft.is_block_device();
    if !(ft.is_file() || is_block) {
        return Err(BootError::Format {
            path: dev.path.display().to_string(),
            reason: "not a regular file or block device (MTD character devices \
                     are not supported)"
                .to_string(),
        });
    }
    let offset = if dev.offset >= 0 {
        dev.offset as u64
    } else {
        if !is_block {
            // libubootenv resolves negative offsets with BLKGETSIZE64,
            // which only block devices answer.
            return Err(BootError::Format {
                path: dev.path.display().to_string(),
                reason: "a negative offset needs a block device".to_string(),
            });
        }
        let end = file
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err(&dev.path, e))?;
        end.checked_sub(dev.offset.unsigned_abs())
            .ok_or_else(|| BootError::Format {
                path: dev.path.display().to_string(),
                reason: format!("offset {} is before the start of the device", dev.offset),
            })?
    };
    Ok((file, offset))
}

fn read_raw(dev: &EnvDevice) -> Result<Vec<u8>, BootError> {
    let (file, offset) = open_device(dev, false)?;
    let mut buf = vec![0u8; dev.size];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // Say what was expected, not "failed to fill whole buffer".
            BootError::Format {
                path: dev.path.display().to_string(),
                reason: format!(
                    "ends before the end of the environment copy \
                     ({:#x} bytes at offset {offset:#x})",
                    dev.size
                ),
            }
        } else {
            io_err(&dev.path, e)
        }
    })?;
    Ok(buf)
}

/// Which copy the next write goes to, and its flags byte, from the copies'
/// CRC validity and flags as they are on the devices now: always the copy
/// readers do NOT use, with that copy's flag + 1 (wrapping from 0xff to 0,
/// which readers take as newer), so the copy in use stays intact until the
/// new one is complete. With no valid copy, libubootenv's choice: copy 0
/// counts as current, copy 1 is written.
pub fn write_target(valid: [bool; 2], flags: [u8; 2]) -> (usize, u8) {
    let current = select_copy(FlagScheme::Incremental, valid, flags).unwrap_or(0);
    (1 - current, flags[current].wrapping_add(1))
}

/// Both copies as a reader sees them: each one's bytes when it could be
/// read and its CRC matches, else why not; and the flags bytes.
struct Copies {
    copies: Vec<Result<Vec<u8>, String>>,
    flags: [u8; 2],
}

fn read_copies(cfg: &UbootEnvConfig) -> Copies {
    let redundant = cfg.redundant();
    let mut copies = Vec::new();
    let mut flags = [0u8; 2];
    for (i, dev) in cfg.devices.iter().enumerate() {
        let copy = read_raw(dev).map_err(|e| e.to_string()).and_then(|raw| {
            if redundant {
                flags[i] = raw[4];
            }
            crc_valid(&raw, redundant).map(|()| raw)
        });
        copies.push(copy);
    }
    Copies { copies, flags }
}

impl Copies {
    fn valid(&self) -> [bool; 2] {
        [
            self.copies[0].is_ok(),
            self.copies.get(1).is_some_and(Result::is_ok),
        ]
    }

    /// The copy readers use (CRC validity and flags only) and its bytes.
    fn current(&self) -> Option<(usize, &[u8])> {
        let i = if self.copies.len() == 1 {
            0
        } else {
            select_copy(FlagScheme::Incremental, self.valid(), self.flags)?
        };
        self.copies[i].as_deref().ok().map(|raw| (i, raw))
    }
}

fn read_locked(cfg: &UbootEnvConfig) -> Result<UbootEnv, BootError> {
    let copies = read_copies(cfg);
    let Some((i, raw)) = copies.current() else {
        let why: Vec<String> = cfg
            .devices
            .iter()
            .zip(&copies.copies)
            .map(|(d, r)| match r {
                Ok(_) => format!("{}: ok", d.describe()),
                Err(e) => format!("{}: {e}", d.describe()),
            })
            .collect();
        return Err(BootError::Format {
            path: cfg.source.clone(),
            reason: format!("no valid U-Boot environment copy ({})", why.join("; ")),
        });
    };
    let redundant = cfg.redundant();
    // The copy in use is what every reader takes, well formed or not; if
    // its data cannot be read, neither can U-Boot's or fw_printenv's, and
    // falling back to the other copy would hide it (and make the next
    // write overwrite the copy in use).
    let entries =
        parse_data(&raw[header_len(redundant)..]).map_err(|reason| BootError::Format {
            path: cfg.source.clone(),
            reason: format!("{}: {reason}", cfg.devices[i].describe()),
        })?;
    Ok(UbootEnv {
        entries,
        copy: i,
        flag: redundant.then(|| raw[4]),
    })
}

/// Read the current environment (the copy U-Boot would load).
pub fn read(cfg: &UbootEnvConfig) -> Result<UbootEnv, BootError> {
    let _lock = lock();
    read_locked(cfg)
}

/// Path of the sysfs switch that write-protects an eMMC boot partition
/// (`/dev/mmcblkNbootM`), as libubootenv's `fileprotect` handles it.
fn force_ro_switch(dev: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(dev).ok()?;
    let name = real.to_str()?.strip_prefix("/dev/")?;
    let rest = name.strip_prefix("mmcblk")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = rest[digits..].strip_prefix("boot")?;
    if digits == 0 || rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let p = PathBuf::from(format!("/sys/class/block/{name}/force_ro"));
    p.exists().then_some(p)
}

fn write_raw(dev: &EnvDevice, image: &[u8]) -> Result<(), BootError> {
    let protect = force_ro_switch(&dev.path);
    if let Some(p) = &protect {
        std::fs::write(p, b"0").map_err(|e| io_err(p, e))?;
    }
    let result = (|| {
        let (file, offset) = open_device(dev, true)?;
        if let Some(keep) = crate::failpoint::tear("ubootenv-write", image.len()) {
            let _ = file.write_all_at(&image[..keep], offset);
            let _ = file.sync_all();
            crate::failpoint::torn("ubootenv-write");
        }
        file.write_all_at(image, offset)
            .map_err(|e| io_err(&dev.path, e))?;
        file.sync_all().map_err(|e| io_err(&dev.path, e))
    })();
    if let Some(p) = &protect {
        // Best effort, as libubootenv: the write's own result matters more.
        let _ = std::fs::write(p, b"1");
    }
    if result.is_ok() {
        crate::failpoint::hit("env-written");
    }
    result
}

fn write_locked(cfg: &UbootEnvConfig, env: &UbootEnv) -> Result<(), BootError> {
    let format_err = |reason: String| BootError::Format {
        path: cfg.source.clone(),
        reason,
    };
    if !cfg.redundant() {
        let image = env.encode_copy(cfg.size(), None).map_err(format_err)?;
        return write_raw(&cfg.devices[0], &image);
    }
    // Copies that share bytes would have this write go over the one in
    // use (checked at load too; the devices may have changed since).
    if let Some(why) = copies_overlap(cfg)? {
        return Err(format_err(why));
    }
    // Decide the target from what is on the devices now, not from when
    // `env` was read: writing over the copy readers currently select would
    // lose the only valid environment if the power failed mid-write.
    let copies = read_copies(cfg);
    let (target, flag) = write_target(copies.valid(), copies.flags);
    let image = env
        .encode_copy(cfg.size(), Some(flag))
        .map_err(format_err)?;
    write_raw(&cfg.devices[target], &image)
}

/// Write `env` as the new current environment (see the module docs for
/// which copy is written).
pub fn write(cfg: &UbootEnvConfig, env: &UbootEnv) -> Result<(), BootError> {
    let _lock = lock();
    write_locked(cfg, env)
}

/// Read, change and write the environment under one lock: the change is one
/// environment write. Returns the environment written.
pub fn update<F>(cfg: &UbootEnvConfig, change: F) -> Result<UbootEnv, BootError>
where
    F: FnOnce(&mut UbootEnv) -> Result<(), BootError>,
{
    let _lock = lock();
    let mut env = read_locked(cfg)?;
    change(&mut env)?;
    write_locked(cfg, &env)?;
    Ok(env)
}

/// What `update` would write, without writing: read, change, and check
/// that the result fits one copy. Returns the environment it would write.
pub fn plan<F>(cfg: &UbootEnvConfig, change: F) -> Result<UbootEnv, BootError>
where
    F: FnOnce(&mut UbootEnv) -> Result<(), BootError>,
{
    let env = {
        let _lock = lock();
        read_locked(cfg)?
    };
    let mut env = env;
    change(&mut env)?;
    let flag = cfg.redundant().then_some(0);
    env.encode_copy(cfg.size(), flag)
        .map_err(|reason| BootError::Format {
            path: cfg.source.clone(),
            reason,
        })?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(&[0u8; 32]), 0x190A_55AD);
    }

    #[test]
    fn selection_matches_libubootenv() {
        use FlagScheme::*;
        let t = [true, true];
        assert_eq!(select_copy(Incremental, [false, false], [0, 0]), None);
        assert_eq!(select_copy(Incremental, [true, false], [0, 9]), Some(0));
        assert_eq!(select_copy(Incremental, [false, true], [9, 0]), Some(1));
        assert_eq!(select_copy(Incremental, t, [1, 2]), Some(1));
        assert_eq!(select_copy(Incremental, t, [2, 1]), Some(0));
        assert_eq!(select_copy(Incremental, t, [3, 3]), Some(0));
        assert_eq!(select_copy(Incremental, t, [0xff, 0]), Some(1));
        assert_eq!(select_copy(Incremental, t, [0, 0xff]), Some(0));
        assert_eq!(select_copy(Incremental, t, [0xfe, 0xff]), Some(1));
        assert_eq!(select_copy(Boolean, t, [1, 0]), Some(0));
        assert_eq!(select_copy(Boolean, t, [0, 1]), Some(1));
        assert_eq!(select_copy(Boolean, t, [0xff, 1]), Some(0));
        assert_eq!(select_copy(Boolean, t, [1, 0xff]), Some(1));
        assert_eq!(select_copy(Boolean, t, [0xff, 0xff]), Some(1));
    }

    #[test]
    fn config_parses_like_libubootenv() {
        let c = UbootEnvConfig::parse(
            "# comment\n\n/tmp/env 0x0 0x4000\n/tmp/env\t16384 4000 0x1000 2 # redundant\n",
            "cfg",
        )
        .unwrap();
        assert!(c.redundant());
        assert_eq!(c.size(), 0x4000);
        assert_eq!(c.devices()[1].offset, 16384);
        assert_eq!(c.devices()[1].sector_size, Some(0x1000));
        assert_eq!(c.devices()[1].sectors, Some(2));
        let c = UbootEnvConfig::parse("/dev/mmcblk0 -0x2000 0x2000\n", "cfg").unwrap();
        assert!(!c.redundant());
        assert_eq!(c.devices()[0].offset, -0x2000);
        assert_eq!(parse_c_int("010"), Some(8));
    }

    #[test]
    fn config_errors_name_file_and_line() {
        for bad in [
            "",
            "# only\n",
            "/tmp/e 0x0\n",
            "/tmp/e zz 0x4000\n",
            "/tmp/e 0 0\n",
            "/tmp/e 0 0x4000\n/tmp/e 0x4000 0x2000\n",
            "/tmp/e 0 0x4000\n/tmp/e 0x4000 0x4000\n/tmp/e 0x8000 0x4000\n",
            "/dev/mtd0 0 0x4000\n",
            "/dev/ubi0:env 0 0x4000\n",
            // Found fuzzing by hand: a second sign was accepted (Rust's
            // from_str_radix takes one), strtoll reads these otherwise.
            "/tmp/e 0x+4000 0x4000\n",
            "/tmp/e ++16 0x4000\n",
            "/tmp/e -+16 0x4000\n",
            "/tmp/e 0+7 0x4000\n",
            "/tmp/e 0x 0x4000\n",
            "/tmp/e - 0x4000\n",
        ] {
            let e = UbootEnvConfig::parse(bad, "/etc/fw_env.config").unwrap_err();
            assert!(
                e.to_string().starts_with("/etc/fw_env.config: "),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn overlapping_copies_on_one_file_are_refused_naming_both() {
        for (text, shared) in [
            ("/tmp/e 0x0 0x2000\n/tmp/e 0x1000 0x2000\n", "0x1000 bytes"),
            ("/tmp/e 0x1000 0x2000\n/tmp/e 0x0 0x2000\n", "0x1000 bytes"),
            ("/tmp/e 0x0 0x2000\n/tmp/e 0x0 0x2000\n", "0x2000 bytes"),
            (
                "/dev/sda -0x4000 0x2000\n/dev/sda -0x3000 0x2000\n",
                "0x1000 bytes",
            ),
        ] {
            let e = UbootEnvConfig::parse(text, "/etc/fw_env.config")
                .expect_err(text)
                .to_string();
            assert!(
                e.starts_with("/etc/fw_env.config: line 2: the two environment copies overlap")
                    && e.contains(shared)
                    && !e.contains('\n'),
                "{text:?}: {e}"
            );
        }
        for ok in [
            "/tmp/e 0x0 0x2000\n/tmp/e 0x2000 0x2000\n",
            "/tmp/e 0x2000 0x2000\n/tmp/e 0x0 0x2000\n",
            "/tmp/e 0x0 0x2000\n/tmp/f 0x0 0x2000\n",
            "/dev/sda -0x4000 0x2000\n/dev/sda -0x2000 0x2000\n",
        ] {
            UbootEnvConfig::parse(ok, "cfg").expect(ok);
        }
    }

    #[test]
    fn overlapping_copies_under_two_names_of_one_file_are_refused_at_load() {
        let d = crate::testutil::TempDir::new("fwenv-overlap");
        let env = d.path().join("uboot.env");
        std::fs::write(&env, vec![0u8; 0x4000]).unwrap();
        let link = d.path().join("link.env");
        std::os::unix::fs::symlink(&env, &link).unwrap();
        let cfg = d.path().join("fw_env.config");
        std::fs::write(
            &cfg,
            format!(
                "{} 0x0 0x2000\n{} 0x1000 0x2000\n",
                env.display(),
                link.display()
            ),
        )
        .unwrap();
        let e = UbootEnvConfig::load(&cfg).expect_err("overlap").to_string();
        assert!(e.contains("the two environment copies overlap"), "{e}");
        std::fs::write(
            &cfg,
            format!(
                "{} 0x0 0x2000\n{} 0x2000 0x2000\n",
                env.display(),
                link.display()
            ),
        )
        .unwrap();
        UbootEnvConfig::load(&cfg).expect("apart");
    }

    #[test]
    fn copies_are_compared_where_the_devices_put_them() {
        let dev = |offset: i64| EnvDevice {
            path: PathBuf::from("/dev/x"),
            offset,
            size: 0x2000,
            sector_size: None,
            sectors: None,
        };
        // 0x8000 from the end of a 0xa000-byte device is 0x2000 from its start.
        let (a, b) = (dev(0x1000), dev(-0x8000));
        let why = overlap(&a, &b, [0x1000, 0x2000]).expect("overlap");
        assert!(why.contains("share 0x1000 bytes"), "{why}");
        assert_eq!(overlap(&a, &b, [0x1000, 0x3000]), None);
        assert_eq!(overlap(&a, &b, [0x3000, 0x1000]), None);
    }

    #[test]
    fn copy_round_trips_and_checks_crc() {
        let mut env = UbootEnv::new();
        env.set("bootcmd", "run x; run y").unwrap();
        env.set("BOOT_ORDER", "A B").unwrap();
        env.set("empty", "").unwrap();
        for flag in [None, Some(7u8)] {
            let img = env.encode_copy(0x100, flag).unwrap();
            assert_eq!(img.len(), 0x100);
            let back = UbootEnv::decode_copy(&img, flag.is_some()).unwrap();
            assert_eq!(back.vars(), env.vars());
            assert_eq!(back.entries(), env.entries());
            assert_eq!(back.flag(), flag);
            let mut bad = img.clone();
            bad[0x80] ^= 1;
            assert!(UbootEnv::decode_copy(&bad, flag.is_some())
                .unwrap_err()
                .contains("CRC"));
        }
        assert!(env.encode_copy(20, None).is_err());
    }

    #[test]
    fn decode_never_panics() {
        let mut env = UbootEnv::new();
        env.set("a", "1").unwrap();
        let base = env.encode_copy(64, Some(1)).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..70 {
            for _ in 0..50 {
                let mut m: Vec<u8> = base.iter().cycle().take(len).copied().collect();
                for b in m.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if seed % 5 == 0 {
                        *b = (seed >> 40) as u8;
                    }
                }
                // Fix the CRC so the data parser is exercised too.
                if m.len() > 5 {
                    let c = crc32(&m[5..]).to_le_bytes();
                    m[..4].copy_from_slice(&c);
                }
                let _ = UbootEnv::decode_copy(&m, true);
                let _ = UbootEnv::decode_copy(&m, false);
            }
        }
    }

    #[test]
    fn write_target_is_always_the_copy_not_in_use_with_the_next_flag() {
        let t = [true, true];
        // Both valid: the other copy than select_copy's, flag + 1.
        assert_eq!(write_target(t, [1, 2]), (0, 3));
        assert_eq!(write_target(t, [2, 1]), (1, 3));
        assert_eq!(write_target(t, [7, 7]), (1, 8));
        // Wrap-around: 0xff + 1 = 0, which readers take as the newer.
        assert_eq!(write_target(t, [0xfe, 0xff]), (0, 0));
        assert_eq!(write_target(t, [0xff, 0]), (0, 1));
        assert_eq!(write_target(t, [0, 0xff]), (1, 1));
        assert_eq!(write_target(t, [0xff, 0xff]), (1, 0));
        // One valid: the invalid one, whatever its flag says.
        assert_eq!(write_target([true, false], [3, 200]), (1, 4));
        assert_eq!(write_target([false, true], [200, 3]), (0, 4));
        // None valid: libubootenv's choice, copy 1 with copy 0's flag + 1.
        assert_eq!(write_target([false, false], [9, 4]), (1, 10));
        // Exhaustively: never the copy in use, and afterwards the written
        // copy is the one readers select.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for valid in [[true, true], [true, false], [false, true]] {
                    let flags = [a, b];
                    let current = select_copy(FlagScheme::Incremental, valid, flags);
                    let (target, flag) = write_target(valid, flags);
                    assert_ne!(Some(target), current, "{valid:?} {flags:?}");
                    let mut after = flags;
                    after[target] = flag;
                    let mut now_valid = valid;
                    now_valid[target] = true;
                    assert_eq!(
                        select_copy(FlagScheme::Incremental, now_valid, after),
                        Some(target),
                        "{valid:?} {flags:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn crc_alone_decides_validity_whatever_the_bytes_hold() {
        let data = b"splash=\xff\xfe\x01\0\xe9t\xe9=1\0noequals\0\0";
        let mut img = crc32(data).to_le_bytes().to_vec();
        img.extend_from_slice(data);
        assert!(crc_valid(&img, false).is_ok());
        let env = UbootEnv::decode_copy(&img, false).unwrap();
        assert_eq!(env.get("splash"), Some(&b"\xff\xfe\x01"[..]));
        assert_eq!(env.get(b"\xe9t\xe9"), Some(&b"1"[..]));
        // A string without '=' is no variable, but it is kept.
        assert_eq!(env.get("noequals"), None);
        assert_eq!(env.entries().len(), 3);
        let back = env.encode_copy(img.len(), None).unwrap();
        assert_eq!(back, img, "re-encoded byte for byte");
    }

    #[test]
    fn set_and_remove_touch_only_the_named_entries() {
        let mut env = UbootEnv::new();
        env.entries = vec![
            b"a=1".to_vec(),
            b"BOOT_ORDER=\xff".to_vec(),
            b"b=\xfe".to_vec(),
            b"BOOT_ORDER=A B".to_vec(),
            b"BOOT_ORDER".to_vec(),
            b"c".to_vec(),
        ];
        // The last `name=` entry is what readers see.
        assert_eq!(env.get("BOOT_ORDER"), Some(&b"A B"[..]));
        assert_eq!(env.vars()[1], (&b"BOOT_ORDER"[..], &b"A B"[..]));
        env.set("BOOT_ORDER", "B A").unwrap();
        assert_eq!(
            env.entries(),
            [&b"a=1"[..], b"BOOT_ORDER=B A", b"b=\xfe", b"c"]
        );
        env.set("new", b"\x80").unwrap();
        assert_eq!(env.entries().last().unwrap(), b"new=\x80");
        assert_eq!(env.remove("b"), Some(b"\xfe".to_vec()));
        assert_eq!(
            env.entries(),
            [&b"a=1"[..], b"BOOT_ORDER=B A", b"c", b"new=\x80"]
        );
        assert!(env.set("x=y", "1").is_err());
        assert!(env.set("", "1").is_err());
        assert!(env.set("x", b"a\0b").is_err());
    }

    #[test]
    fn unterminated_data_is_an_error() {
        let mut data = vec![b'a'; 16];
        data[1] = b'=';
        let mut img = crc32(&data).to_le_bytes().to_vec();
        img.extend_from_slice(&data);
        assert!(UbootEnv::decode_copy(&img, false).is_err());
    }
}
