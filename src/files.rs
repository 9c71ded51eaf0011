//! Files opened from outside (config, keys, signatures, state, reports,
//! trust roots, bootloader environments): an open never hangs, and a small
//! file's read never grows without bound.
//!
//! Invariant: such a file is opened without blocking (`O_NONBLOCK`: a FIFO
//! put where a file belongs does not hold the open), must be a regular file
//! (a FIFO, a device such as `/dev/zero`, a directory is refused naming it;
//! only a bootloader environment may also be a device, [`Accept`]), and a
//! small file is read up to its cap and one byte more: a file over the cap
//! is refused, never read whole first.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What may stand at an outside path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// A regular file only.
    Regular,
    /// A regular file, a block or a character device (a bootloader
    /// environment on a partition or a flash device).
    RegularOrDevice,
}

/// Open `path` as `opts` say, adding `O_NONBLOCK` so that a FIFO does not
/// hold the open (a write-only open of one fails at once), then refuse
/// what `accept` does not take. The flag stays on the file: reads and
/// writes of regular files and devices ignore it.
pub fn open_checked(path: &Path, opts: &mut OpenOptions, accept: Accept) -> io::Result<File> {
    let file = opts.custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    let kind = file.metadata()?.file_type();
    let device = kind.is_block_device() || kind.is_char_device();
    match (accept, kind.is_file(), device) {
        (_, true, _) | (Accept::RegularOrDevice, _, true) => Ok(file),
        (Accept::Regular, ..) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )),
        (Accept::RegularOrDevice, ..) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or a device",
        )),
    }
}

/// Open `path` for reading as a regular file, without blocking on a FIFO.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_checked(path, OpenOptions::new().read(true), Accept::Regular)
}

/// The bytes of the regular file at `path`, at most `cap` of them: a larger
/// file is an error saying so.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, cap: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_blocking() {
        let d = TempDir::new("files");
        let fifo = d.path().join("state.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        for p in [fifo.as_path(), Path::new("/dev/zero"), d.path()] {
            let e = read_capped(p, 1024).expect_err("not a regular file");
            assert!(e.to_string().contains("not a regular file"), "{p:?}: {e}");
        }
    }

    #[test]
    fn a_device_is_taken_only_where_a_device_may_stand() {
        let d = TempDir::new("files");
        let fifo = d.path().join("uboot.env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let rw = || {
            let mut o = OpenOptions::new();
            o.read(true).write(true);
            o
        };
        let e = open_checked(&fifo, &mut rw(), Accept::RegularOrDevice).expect_err("fifo");
        assert_eq!(e.to_string(), "not a regular file or a device");
        let e = open_checked(&fifo, OpenOptions::new().write(true), Accept::Regular)
            .expect_err("a write-only open of a FIFO fails at once");
        assert_eq!(e.raw_os_error(), Some(nix::libc::ENXIO), "{e}");
        open_checked(Path::new("/dev/null"), &mut rw(), Accept::RegularOrDevice).expect("device");
        assert!(open_checked(Path::new("/dev/null"), &mut rw(), Accept::Regular).is_err());
    }

    #[test]
    fn a_file_over_its_cap_is_refused_and_one_at_it_is_read() {
        let d = TempDir::new("files");
        let p = d.path().join("key.pub");
        std::fs::write(&p, vec![b'x'; 10]).unwrap();
        assert_eq!(read_capped(&p, 10).unwrap().len(), 10);
        let e = read_capped(&p, 9).expect_err("over the cap");
        assert_eq!(e.to_string(), "larger than 9 bytes");
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert!(read_text_capped(&p, 10).is_err());
    }
}
