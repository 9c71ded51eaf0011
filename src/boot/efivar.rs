//! UEFI variables through efivarfs, and the binary formats the EFI backend
//! reads and writes: `EFI_LOAD_OPTION` (a `Boot####` variable), its device
//! path (`HD()/File()`), `BootOrder` and `BootNext`.
//!
//! Invariant: every change of a variable is ONE `write()` of the 4-byte
//! attributes followed by the data, which efivarfs hands to the firmware's
//! `SetVariable()` as a whole (edk2 keeps its variable store
//! fault-tolerant across power cuts), so the firmware sees the old or the
//! new value, never a mix. The write is done as libefivar does it
//! (`efivarfs_set_variable`): clear the immutable flag efivarfs may set
//! (`FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS`), write, put the flag back.
//!
//! A directory that is not efivarfs stands in for it in tests and demos
//! (this machine has no EFI): one file per variable, named `Name-GUID`,
//! holding attributes + data exactly as efivarfs shows them, which the real
//! `efibootmgr` and `efivar` read with `EFIVARFS_PATH=DIR/`. A regular file
//! system does not replace a file's contents atomically the way
//! `SetVariable()` does, so there the same one write goes to a temporary
//! file that is synced and renamed over the variable (immutable flag handled
//! the same way), which keeps "old or new value" across a crash.
//!
//! Outside bytes stay bytes: a description is UCS-2 and compared as UCS-2;
//! a device path is kept as the bytes the firmware stored.

use super::{format_err, io_err, BootError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `EFI_GLOBAL_VARIABLE`: `Boot####`, `BootOrder`, `BootNext`, `BootCurrent`.
pub const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Non-volatile, boot-service and runtime access: what the firmware and
/// efibootmgr use for boot variables.
pub const NV_BS_RT: u32 = 0x7;
/// `LOAD_OPTION_ACTIVE`: the firmware only boots active options.
pub const LOAD_OPTION_ACTIVE: u32 = 0x1;
/// efivarfs' `statfs` magic.
const EFIVARFS_MAGIC: u32 = 0xde5e_81e4;
/// `FS_IMMUTABLE_FL` of `FS_IOC_GETFLAGS`.
const FS_IMMUTABLE_FL: nix::libc::c_long = 0x10;
/// A boot variable is a few hundred bytes; anything larger is not one.
const MAX_VAR_BYTES: u64 = 64 << 10;

nix::ioctl_read!(
    /// `FS_IOC_GETFLAGS` (the immutable flag of an efivarfs file).
    fs_ioc_getflags, b'f', 1, nix::libc::c_long);
nix::ioctl_write_ptr!(
    /// `FS_IOC_SETFLAGS`.
    fs_ioc_setflags, b'f', 2, nix::libc::c_long);

/// Where the variables live: efivarfs, or a directory standing in for it.
#[derive(Clone, Debug)]
pub struct EfiVars {
    dir: PathBuf,
}

/// The immutable flag of `file`, when the file system has flags at all.
fn flags(file: &File) -> Option<nix::libc::c_long> {
    let mut f: nix::libc::c_long = 0;
    // SAFETY: the ioctl writes at most one long into `f`, which outlives it.
    unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut f) }.ok()?;
    Some(f)
}

fn set_flags(file: &File, f: nix::libc::c_long) -> std::io::Result<()> {
    // SAFETY: the ioctl reads one long from `f`, which outlives it.
    unsafe { fs_ioc_setflags(file.as_raw_fd(), &f) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Clear the immutable flag of the file at `path` (if it exists and has
/// one); returns the open file and its original flags, to restore them.
fn make_mutable(path: &Path) -> Result<Option<(File, nix::libc::c_long)>, BootError> {
    let file = match crate::files::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    match flags(&file) {
        Some(f) if f & FS_IMMUTABLE_FL != 0 => {
            set_flags(&file, f & !FS_IMMUTABLE_FL).map_err(|e| io_err(path, e))?;
            Ok(Some((file, f)))
        }
        _ => Ok(None),
    }
}

impl EfiVars {
    /// The variables under `dir` (efivarfs, or a stand-in directory).
    pub fn new(dir: PathBuf) -> EfiVars {
        EfiVars { dir }
    }

    /// Where the variables are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of variable `name` in vendor `guid`.
    pub fn path(&self, name: &str, guid: &str) -> PathBuf {
        self.dir.join(format!("{name}-{guid}"))
    }

    fn is_efivarfs(&self) -> bool {
        // f_type is i64 on 64-bit Linux and narrower on 32-bit; compare
        // the low 32 bits, where the magic lives.
        #[allow(clippy::unnecessary_cast)]
        nix::sys::statfs::statfs(&self.dir)
            .map(|s| s.filesystem_type().0 as u32 == EFIVARFS_MAGIC)
            .unwrap_or(false)
    }

    /// Attributes and data of a variable; `None` when it does not exist.
    pub fn get(&self, name: &str, guid: &str) -> Result<Option<(u32, Vec<u8>)>, BootError> {
        let path = self.path(name, guid);
        // A variable is a regular file (efivarfs, or the stand-in's); a
        // FIFO there does not hold the open.
        let file = match crate::files::open_regular(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_VAR_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err(&path, e))?;
        if bytes.len() as u64 > MAX_VAR_BYTES {
            return Err(format_err(&path, "larger than any boot variable"));
        }
        if bytes.len() < 4 {
            return Err(format_err(&path, "shorter than its 4-byte attributes"));
        }
        let attrs = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok(Some((attrs, bytes.split_off(4))))
    }

    /// Set a variable in one write of attributes + data (see the module docs).
    pub fn set(&self, name: &str, guid: &str, attrs: u32, data: &[u8]) -> Result<(), BootError> {
        let path = self.path(name, guid);
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&attrs.to_le_bytes());
        buf.extend_from_slice(data);
        if self.is_efivarfs() {
            self.set_efivarfs(&path, &buf)?;
        } else {
            self.set_standin(&path, &buf)?;
        }
        crate::failpoint::hit("efivar-written");
        Ok(())
    }

    /// As libefivar: open for writing (creating it when new), clear the
    /// immutable flag, one write, restore the flag.
    fn set_efivarfs(&self, path: &Path, buf: &[u8]) -> Result<(), BootError> {
        let restore = make_mutable(path)?;
        let existed = path.exists();
        let result = (|| {
            let mut opts = OpenOptions::new();
            opts.write(true)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK);
            if !existed {
                opts.create_new(true).mode(0o644);
            }
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = opts.open(path).map_err(|e| io_err(path, e))?;
            // A variable created just now may be immutable already.
            let created_flags = match flags(&file) {
                Some(f) if !existed && f & FS_IMMUTABLE_FL != 0 => {
                    set_flags(&file, f & !FS_IMMUTABLE_FL).map_err(|e| io_err(path, e))?;
                    Some(f)
                }
                _ => None,
            };
            let n = file.write(buf).map_err(|e| io_err(path, e))?;
            if let Some(f) = created_flags {
                let _ = set_flags(&file, f);
            }
            if n != buf.len() {
                return Err(format_err(
                    path,
                    format!("efivarfs took {n} of {} bytes", buf.len()),
                ));
            }
            Ok(())
        })();
        if let Some((file, f)) = restore {
            let _ = set_flags(&file, f);
        }
        result
    }

    /// The stand-in: the same bytes in one write to a temporary file,
    /// synced, renamed over the variable, the directory synced.
    fn set_standin(&self, path: &Path, buf: &[u8]) -> Result<(), BootError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = self.dir.join(format!(".{}.tmp", name.unwrap_or_default()));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
                .open(&tmp)
                .map_err(|e| io_err(&tmp, e))?;
            f.write_all(buf).map_err(|e| io_err(&tmp, e))?;
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
        }
        let restore = make_mutable(path)?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        self.sync_dir()?;
        if let Some((_, f)) = restore {
            let file = crate::files::open_regular(path).map_err(|e| io_err(path, e))?;
            set_flags(&file, f).map_err(|e| io_err(path, e))?;
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), BootError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))
    }

    /// Delete a variable (absent is fine).
    pub fn delete(&self, name: &str, guid: &str) -> Result<(), BootError> {
        let path = self.path(name, guid);
        make_mutable(&path)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path, e)),
        }
        if !self.is_efivarfs() {
            self.sync_dir()?;
        }
        crate::failpoint::hit("efivar-written");
        Ok(())
    }

    /// The numbers of every `Boot####` variable, ascending.
    pub fn boot_entries(&self) -> Result<Vec<u16>, BootError> {
        let dir = std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let suffix = format!("-{GLOBAL_GUID}");
        let mut nums: Vec<u16> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let var = name.strip_suffix(&suffix)?;
                parse_boot_name(var)
            })
            .collect();
        nums.sort_unstable();
        nums.dedup();
        Ok(nums)
    }

    /// A `Boot####` variable, parsed; `None` when absent.
    pub fn load_option(&self, num: u16) -> Result<Option<LoadOption>, BootError> {
        let name = boot_name(num);
        match self.get(&name, GLOBAL_GUID)? {
            None => Ok(None),
            Some((_, data)) => LoadOption::parse(&data)
                .map(Some)
                .map_err(|r| format_err(&self.path(&name, GLOBAL_GUID), r)),
        }
    }

    /// A list of boot numbers (`BootOrder`); empty when absent.
    pub fn get_u16_list(&self, name: &str) -> Result<Vec<u16>, BootError> {
        match self.get(name, GLOBAL_GUID)? {
            None => Ok(Vec::new()),
            Some((_, data)) => u16_list(&data)
                .ok_or_else(|| format_err(&self.path(name, GLOBAL_GUID), "odd length")),
        }
    }

    /// One boot number (`BootNext`, `BootCurrent`); `None` when absent.
    pub fn get_u16(&self, name: &str) -> Result<Option<u16>, BootError> {
        match self.get(name, GLOBAL_GUID)? {
            None => Ok(None),
            Some((_, data)) if data.len() == 2 => Ok(Some(u16::from_le_bytes([data[0], data[1]]))),
            Some(_) => Err(format_err(
                &self.path(name, GLOBAL_GUID),
                "is not one 2-byte boot number",
            )),
        }
    }
}

/// `Boot0001` for 1: four uppercase hex digits, as the UEFI spec names them.
pub fn boot_name(num: u16) -> String {
    format!("Boot{num:04X}")
}

/// The number of a `Boot####` variable name (hex digits of either case,
/// as firmware writes them).
pub fn parse_boot_name(name: &str) -> Option<u16> {
    let hex = name.strip_prefix("Boot")?;
    if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

/// Little-endian u16s; `None` for an odd length.
pub fn u16_list(data: &[u8]) -> Option<Vec<u16>> {
    if data.len() % 2 != 0 {
        return None;
    }
    Some(
        data.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

/// A list of `u16` as the little-endian bytes UEFI stores (`BootOrder`).
pub fn u16_bytes(list: &[u16]) -> Vec<u8> {
    list.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// UCS-2 of a string, without a terminator.
pub fn ucs2(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn ucs2_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_le_bytes()).collect()
}

/// An `EFI_LOAD_OPTION` (UEFI 2.10, 3.1.3):
/// `u32 Attributes, u16 FilePathListLength, CHAR16 Description[] (NUL-terminated),
/// EFI_DEVICE_PATH_PROTOCOL FilePathList[FilePathListLength bytes], u8 OptionalData[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOption {
    /// `LOAD_OPTION_ACTIVE` and friends.
    pub attributes: u32,
    /// UCS-2 code units, without the terminator.
    pub description: Vec<u16>,
    /// The device path bytes, End node included.
    pub file_path_list: Vec<u8>,
    /// Bytes after the device paths, passed to the loaded image.
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// Parse a `Boot####` variable's data (its attributes word removed).
    pub fn parse(data: &[u8]) -> Result<LoadOption, String> {
        if data.len() < 6 {
            return Err("load option shorter than its header".into());
        }
        let attributes = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let fpl_len = u16::from_le_bytes([data[4], data[5]]) as usize;
        let mut description = Vec::new();
        let mut at = 6;
        loop {
            let Some(pair) = data.get(at..at + 2) else {
                return Err("description has no terminating NUL".into());
            };
            at += 2;
            let unit = u16::from_le_bytes([pair[0], pair[1]]);
            if unit == 0 {
                break;
            }
            description.push(unit);
        }
        let Some(file_path_list) = data.get(at..at + fpl_len) else {
            return Err(format!(
                "FilePathListLength {fpl_len} runs past the end of the load option"
            ));
        };
        check_device_path(file_path_list)?;
        Ok(LoadOption {
            attributes,
            description,
            file_path_list: file_path_list.to_vec(),
            optional_data: data[at + fpl_len..].to_vec(),
        })
    }

    /// The option's bytes, as [`LoadOption::parse`] reads them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.attributes.to_le_bytes());
        v.extend_from_slice(&(self.file_path_list.len() as u16).to_le_bytes());
        v.extend_from_slice(&ucs2_bytes(&self.description));
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&self.file_path_list);
        v.extend_from_slice(&self.optional_data);
        v
    }

    /// The description for a person ([`crate::text::show_utf16`]: escaped,
    /// nothing replaced).
    pub fn description_shown(&self) -> String {
        crate::text::show_utf16(&self.description)
    }

    /// The path of the first `File()` node, for a person (as
    /// [`Self::description_shown`]).
    pub fn file_path_shown(&self) -> Option<String> {
        let mut at = 0;
        while let Some(h) = self.file_path_list.get(at..at + 4) {
            let len = u16::from_le_bytes([h[2], h[3]]) as usize;
            if h[0] == 4 && h[1] == 4 {
                let units = u16_list(self.file_path_list.get(at + 4..at + len)?)?;
                let units: Vec<u16> = units.into_iter().take_while(|&u| u != 0).collect();
                return Some(crate::text::show_utf16(&units));
            }
            if h[0] == 0x7f || len < 4 {
                return None;
            }
            at += len;
        }
        None
    }
}

/// Nodes of at least 4 bytes each, within the list, ending with an End of
/// Entire Device Path node (type 0x7f, subtype 0xff) exactly at its end:
/// what the kernel's efivarfs checks for a `Boot####` write.
fn check_device_path(dp: &[u8]) -> Result<(), String> {
    let mut at = 0;
    loop {
        let Some(h) = dp.get(at..at + 4) else {
            return Err("device path has no End node".into());
        };
        let len = u16::from_le_bytes([h[2], h[3]]) as usize;
        if len < 4 || at + len > dp.len() {
            return Err(format!("device path node at byte {at} has length {len}"));
        }
        if h[0] == 0x7f && h[1] == 0xff {
            return if at + len == dp.len() {
                Ok(())
            } else {
                Err("device path continues past its End node".into())
            };
        }
        at += len;
    }
}

/// A GPT partition as a `HD()` media device path node names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardDrive {
    /// 1-based.
    pub partition_number: u32,
    /// In the disk's logical blocks.
    pub start_lba: u64,
    /// In the disk's logical blocks.
    pub size_lba: u64,
    /// The partition's unique GUID, in its on-disk (EFI) byte order.
    pub signature: [u8; 16],
}

/// `HD(…)/File(loader)/End`, as efibootmgr and the firmware's boot manager
/// write it: Media Device Path type 4, subtype 1 (42 bytes: partition
/// number, start, size, signature, MBR type 2 = GPT, signature type 2 =
/// GUID), then subtype 4 (File Path: NUL-terminated UCS-2), then End.
pub fn device_path(hd: &HardDrive, loader: &str) -> Vec<u8> {
    let mut v = vec![4, 1, 42, 0];
    v.extend_from_slice(&hd.partition_number.to_le_bytes());
    v.extend_from_slice(&hd.start_lba.to_le_bytes());
    v.extend_from_slice(&hd.size_lba.to_le_bytes());
    v.extend_from_slice(&hd.signature);
    v.extend_from_slice(&[2, 2]);
    let mut path = ucs2(loader);
    path.push(0);
    let len = 4 + path.len() * 2;
    v.extend_from_slice(&[4, 4]);
    v.extend_from_slice(&(len as u16).to_le_bytes());
    v.extend_from_slice(&ucs2_bytes(&path));
    v.extend_from_slice(&[0x7f, 0xff, 4, 0]);
    v
}

/// A loader path as the firmware wants it: backslashes, one leading.
pub fn efi_path(loader: &str) -> String {
    let p = loader.replace('/', "\\");
    format!("\\{}", p.trim_start_matches('\\'))
}

/// A GUID as text → its EFI byte order (the first three fields little-endian).
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || text.len() != 36 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(out)
}

/// Text of a GUID stored in EFI byte order (lowercase, as `blkid` shows PARTUUIDs).
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn read_sys(path: &Path) -> Result<String, BootError> {
    crate::files::read_text_capped(path, 8192)
        .map(|s| s.trim().to_string())
        .map_err(|e| io_err(path, e))
}

/// The GPT entry of partition `number` on `disk` (logical block size `lbs`):
/// first LBA, last LBA, unique GUID.
fn gpt_entry(disk: &Path, lbs: u64, number: u32) -> Result<(u64, u64, [u8; 16]), BootError> {
    use std::os::unix::fs::FileExt;
    let f = File::open(disk).map_err(|e| io_err(disk, e))?;
    let mut hdr = [0u8; 92];
    f.read_exact_at(&mut hdr, lbs)
        .map_err(|e| io_err(disk, e))?;
    if &hdr[0..8] != b"EFI PART" {
        return Err(format_err(disk, "has no GPT header at LBA 1"));
    }
    let u32_at = |o: usize| u32::from_le_bytes([hdr[o], hdr[o + 1], hdr[o + 2], hdr[o + 3]]);
    let entries_lba = u64::from_le_bytes(hdr[72..80].try_into().unwrap_or([0; 8]));
    let count = u32_at(80);
    let size = u32_at(84) as u64;
    if number == 0 || number > count || size < 128 {
        return Err(format_err(
            disk,
            format!("GPT has no partition entry {number} ({count} entries of {size} bytes)"),
        ));
    }
    let mut e = [0u8; 128];
    f.read_exact_at(&mut e, entries_lba * lbs + (number as u64 - 1) * size)
        .map_err(|e| io_err(disk, e))?;
    let first = u64::from_le_bytes(e[32..40].try_into().unwrap_or([0; 8]));
    let last = u64::from_le_bytes(e[40..48].try_into().unwrap_or([0; 8]));
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&e[16..32]);
    if guid == [0; 16] || last < first {
        return Err(format_err(disk, format!("GPT entry {number} is empty")));
    }
    Ok((first, last, guid))
}

/// The `HD()` node of a partition block device, from sysfs (its number and
/// disk) and the disk's own GPT (start, size, GUID), as efibootmgr takes them.
pub fn hard_drive_of(partition: &Path) -> Result<HardDrive, BootError> {
    let real = std::fs::canonicalize(partition).map_err(|e| io_err(partition, e))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sys = Path::new("/sys/class/block").join(&name);
    let number: u32 = read_sys(&sys.join("partition"))?
        .parse()
        .map_err(|_| format_err(partition, "is not a partition (sysfs has no number)"))?;
    let parent = std::fs::canonicalize(sys.join("..")).map_err(|e| io_err(&sys, e))?;
    let disk_name = parent
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lbs: u64 = read_sys(&parent.join("queue/logical_block_size"))?
        .parse()
        .unwrap_or(512);
    let disk = Path::new("/dev").join(&disk_name);
    let (first, last, signature) = gpt_entry(&disk, lbs, number)?;
    Ok(HardDrive {
        partition_number: number,
        start_lba: first,
        size_lba: last - first + 1,
        signature,
    })
}

/// The partition named `spec`: a device path, or `PARTUUID=<guid>` looked
/// up in every partitioned disk's GPT (no udev needed).
pub fn find_partition(spec: &str) -> Result<HardDrive, BootError> {
    let Some(uuid) = spec.strip_prefix("PARTUUID=") else {
        return hard_drive_of(Path::new(spec));
    };
    let want = guid_bytes(uuid).ok_or_else(|| BootError::Format {
        path: spec.to_string(),
        reason: "is not a GUID".into(),
    })?;
    let dir = Path::new("/sys/class/block");
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    for e in entries.filter_map(|e| e.ok()) {
        if !e.path().join("partition").exists() {
            continue;
        }
        let dev = Path::new("/dev").join(e.file_name());
        if let Ok(hd) = hard_drive_of(&dev) {
            if hd.signature == want {
                return Ok(hd);
            }
        }
    }
    Err(BootError::Format {
        path: spec.to_string(),
        reason: "no GPT partition has this unique GUID".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn guid_text_round_trips_in_efi_byte_order() {
        let t = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        let b = guid_bytes(t).expect("guid");
        assert_eq!(&b[..4], &[0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(&b[8..], &[0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
        assert_eq!(guid_text(&b), t);
        assert!(guid_bytes("0fc63daf-8483-4772-8e79-3d69d8477de").is_none());
        assert!(guid_bytes("0fc63daf84834772-8e79-3d69d8477de4x").is_none());
    }

    #[test]
    fn boot_names_are_four_hex_digits() {
        assert_eq!(boot_name(0x1a), "Boot001A");
        assert_eq!(parse_boot_name("Boot001a"), Some(0x1a));
        assert_eq!(parse_boot_name("Boot001A"), Some(0x1a));
        assert_eq!(parse_boot_name("BootOrder"), None);
        assert_eq!(parse_boot_name("BootNext"), None);
        assert_eq!(parse_boot_name("Boot01"), None);
    }

    #[test]
    fn load_option_round_trips_and_rejects_damage() {
        let hd = HardDrive {
            partition_number: 1,
            start_lba: 2048,
            size_lba: 4096,
            signature: [7; 16],
        };
        let opt = LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: ucs2("abupdate A"),
            file_path_list: device_path(&hd, "\\EFI\\a\\grubx64.efi"),
            optional_data: ucs2_bytes(&ucs2("root=x")),
        };
        let bytes = opt.to_bytes();
        let back = LoadOption::parse(&bytes).expect("parse");
        assert_eq!(back, opt);
        assert_eq!(back.description_shown(), "abupdate A");
        assert_eq!(
            back.file_path_shown().as_deref(),
            Some("\\\\EFI\\\\a\\\\grubx64.efi")
        );
        // HD node 42 bytes, File node 4 + 2 * (18 chars + NUL), End 4.
        assert_eq!(opt.file_path_list.len(), 42 + 42 + 4);
        for cut in [3, 8, 30, 6 + 22 + 10] {
            assert!(LoadOption::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut no_end = bytes.clone();
        let end = 6 + 22 + opt.file_path_list.len() - 4;
        no_end[end] = 0x04;
        assert!(LoadOption::parse(&no_end).is_err());
    }

    #[test]
    fn loader_paths_get_backslashes() {
        assert_eq!(efi_path("/EFI/a/grubx64.efi"), "\\EFI\\a\\grubx64.efi");
        assert_eq!(efi_path("\\EFI\\a\\x.efi"), "\\EFI\\a\\x.efi");
        assert_eq!(efi_path("EFI\\a\\x.efi"), "\\EFI\\a\\x.efi");
    }

    #[test]
    fn standin_writes_replace_whole_values_and_keep_the_immutable_flag() {
        let dir = TempDir::new("efivar");
        let vars = EfiVars::new(dir.to_path_buf());
        vars.set("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(&[1, 2, 3]))
            .expect("set");
        let path = vars.path("BootOrder", GLOBAL_GUID);
        let file = File::open(&path).expect("open");
        let immutable = flags(&file).is_some_and(|f| {
            set_flags(&file, f | FS_IMMUTABLE_FL).is_ok()
                && flags(&file).is_some_and(|g| g & FS_IMMUTABLE_FL != 0)
        });
        drop(file);
        // Shorter than before: no stale tail.
        vars.set("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(&[2]))
            .expect("set over");
        assert_eq!(vars.get_u16_list("BootOrder").expect("get"), vec![2]);
        assert_eq!(std::fs::read(&path).expect("read").len(), 6);
        if immutable {
            let file = File::open(&path).expect("open");
            assert!(flags(&file).is_some_and(|g| g & FS_IMMUTABLE_FL != 0));
            let _ = set_flags(&file, 0);
        }
        vars.delete("BootOrder", GLOBAL_GUID).expect("delete");
        assert_eq!(vars.get("BootOrder", GLOBAL_GUID).expect("get"), None);
    }
}
