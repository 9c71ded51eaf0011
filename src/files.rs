//! Files opened from outside (config, keys, signatures, state, reports,
//! trust roots, bootloader environments, a local release's documents and
//! payloads): an open never hangs, and a small file's read never grows
//! without bound.
//!
//! Invariant: such a file is opened without blocking (`O_NONBLOCK`: a FIFO
//! put where a file belongs does not hold the open), must be a regular file
//! (a FIFO, a device such as `/dev/zero`, a directory is refused naming it;
//! only a bootloader environment may also be a device, [`Accept`]), and a
//! small file is read up to its cap and one byte more: a file over the cap
//! is refused, never read whole first. A local payload, which may be
//! streamed through a pipe or read off a device, is not held to "regular
//! only" ([`open_stream`]); its open does not wait either. A file we write
//! whole is made anew under a temporary name, through nothing that stood
//! there ([`create_replacing`]).

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

/// A new, empty regular file at `path` for writing (a temporary file that
/// is then renamed over the real one): whatever stood at the name (a
/// leftover of a killed run, a FIFO, a symlink to elsewhere) is unlinked
/// first, never opened, and the create does not follow a link put there
/// meanwhile (`O_EXCL`, `O_NOFOLLOW`). So the write neither waits on a FIFO
/// nor lands where a link points. Mode 0644 at most, whatever the umask:
/// none of these files is for others to write (`state.json` least of all,
/// [`crate::state::StateDir::open_to_others`]).
pub fn create_replacing(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Open `path` for reading as a regular file, without blocking on a FIFO.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_checked(path, OpenOptions::new().read(true), Accept::Regular)
}

/// Open `path` for reading as a stream of bytes that may also be a pipe or
/// a device (a local payload): without waiting for a FIFO's writer. A FIFO
/// is then read blocking again, as any pipe: one being written streams, one
/// with no writer at the open ends at once (its reads return 0). With the
/// metadata the open looked at, so a caller does not ask again.
pub fn open_stream(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.file_type().is_fifo() {
        set_nonblocking(&file, false)?;
    }
    Ok((file, meta))
}

/// Set or clear `O_NONBLOCK` on an open file.
pub fn set_nonblocking(file: &File, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = match on {
        true => flags | OFlag::O_NONBLOCK,
        false => flags - OFlag::O_NONBLOCK,
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
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

/// The names in directory `dir` a drop-in directory counts (`config.d`,
/// a key directory, `[health] dir`): every entry whose name ends with
/// `suffix` (and is more than it), hidden ones (`.name`: an editor's lock
/// or swap file, a package manager's leftover) left out, compared as
/// bytes (a name that is not UTF-8 counts as any other), in byte order.
/// An entry that cannot be read fails the listing: a directory half read
/// would drop what the other half says.
pub fn listed(dir: &Path, suffix: &[u8]) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let bytes = name.as_encoded_bytes();
        if !bytes.starts_with(b".") && bytes.len() > suffix.len() && bytes.ends_with(suffix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::path::PathBuf;

    /// A FIFO named `name` in `d`, put where a file belongs.
    fn fifo_in(d: &TempDir, name: &str) -> PathBuf {
        let fifo = d.path().join(name);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        fifo
    }

    #[test]
    fn a_drop_in_directory_lists_its_suffix_by_bytes_without_hidden_names() {
        use std::os::unix::ffi::OsStrExt;
        let d = TempDir::new("listed");
        let names: [&[u8]; 8] = [
            b"50-site.toml",
            b"10-b\xff.toml",
            b".#50-site.toml",
            b".hidden.toml",
            b"50-site.toml~",
            b"notes.txt",
            b".toml",
            b"20-a.toml",
        ];
        for n in names {
            std::fs::write(d.path().join(std::ffi::OsStr::from_bytes(n)), "").expect("write");
        }
        // An editor's lock: a dangling link, never followed by a listing.
        std::os::unix::fs::symlink("root@host.1:1", d.path().join(".#20-a.toml")).expect("ln");
        let names_of = |suffix: &[u8]| -> Vec<Vec<u8>> {
            listed(d.path(), suffix)
                .expect("listed")
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect()
        };
        assert_eq!(
            names_of(b".toml"),
            [&b"10-b\xff.toml"[..], b"20-a.toml", b"50-site.toml"]
        );
        assert_eq!(
            names_of(b""),
            [
                &b"10-b\xff.toml"[..],
                b"20-a.toml",
                b"50-site.toml",
                b"50-site.toml~",
                b"notes.txt"
            ]
        );
        assert!(listed(d.path().join("gone").as_path(), b"").is_err());
    }

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_blocking() {
        let d = TempDir::new("files");
        let fifo = fifo_in(&d, "state.json");
        for p in [fifo.as_path(), Path::new("/dev/zero"), d.path()] {
            let e = read_capped(p, 1024).expect_err("not a regular file");
            assert!(e.to_string().contains("not a regular file"), "{p:?}: {e}");
        }
    }

    #[test]
    fn a_device_is_taken_only_where_a_device_may_stand() {
        let d = TempDir::new("files");
        let fifo = fifo_in(&d, "uboot.env");
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
    fn a_stream_opens_a_fifo_without_a_writer_at_once_and_reads_its_end() {
        let d = TempDir::new("files");
        let fifo = fifo_in(&d, "rootfs.img.zst");
        let path = fifo.clone();
        let got = crate::testutil::within_5s(move || {
            let mut bytes = Vec::new();
            open_stream(&path)?.0.read_to_end(&mut bytes)?;
            io::Result::Ok(bytes)
        });
        assert_eq!(got.expect("no writer: the end at once"), b"");
    }

    #[test]
    fn a_stream_from_a_fifo_being_written_blocks_for_its_bytes() {
        let d = TempDir::new("files");
        let fifo = fifo_in(&d, "rootfs.img.zst");
        // A writer there before the stream opens (read-write: its open
        // does not wait), whose bytes come 200 ms later.
        let mut writer = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("writer");
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            std::io::Write::write_all(&mut writer, b"late bytes").expect("write");
        });
        let got = crate::testutil::within_5s(move || {
            let mut bytes = Vec::new();
            open_stream(&fifo)?.0.read_to_end(&mut bytes)?;
            io::Result::Ok(bytes)
        });
        late.join().expect("writer thread");
        // Read blocking: the wait for the bytes is neither an end nor an
        // error (non-blocking, the first read would fail at once).
        assert_eq!(got.expect("the writer's bytes"), b"late bytes");
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
