//! Facts the host tells about itself, each read from a configurable file so
//! tests need no root paths: the booted slot (kernel command line), the
//! booted version (os-release), the boot id, the mount table; and the one
//! action on the host as a whole, the reboot.
//!
//! Invariant: a fact that says two things is refused, never read one way
//! (two slot markers naming different slots); os-release is read by its own
//! rules (os-release(5): shell-like quoting), and the reboot command is a
//! bounded child like every other ([`crate::child`]). The files are bytes:
//! a byte that is not UTF-8 anywhere in them (a mount point, a kernel
//! argument, a pretty name) never hides the ASCII markers read from them
//! ([`read_fact`]); and the mount table, which guards the target against a
//! mounted filesystem, is refused when unreadable rather than read as empty
//! ([`mounted_devices_of`]).

use crate::slot::SlotName;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Longest the reboot command may run. `systemctl reboot` returns once the
/// job is queued; a command still running after this is hung.
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A kernel command line that does not name one booted slot clearly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// Two markers name different slots (`rauc.slot=A abupdate.slot=B`).
    Conflict {
        /// The first marker.
        first: String,
        /// The marker that disagrees.
        second: String,
    },
    /// Our own marker names no slot (`abupdate.slot=C`).
    BadValue {
        /// The marker.
        word: String,
    },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::Conflict { first, second } => {
                write!(f, "{first} and {second} name different booted slots")
            }
            CmdlineError::BadValue { word } => write!(f, "{word}: expected A or B"),
        }
    }
}

impl std::error::Error for CmdlineError {}

/// Errors of the host's facts and of its reboot; each names the file or
/// command.
#[derive(Debug)]
pub enum SystemError {
    /// The kernel command line names the booted slot in two ways.
    Cmdline {
        /// The command line file read.
        path: std::path::PathBuf,
        /// What is wrong with it.
        error: CmdlineError,
    },
    /// Neither the command line, the bootloader nor `/` tells the booted slot.
    BootedSlotUnknown {
        /// The command line file read.
        cmdline: std::path::PathBuf,
    },
    /// The reboot command is empty, could not run or failed.
    Reboot(String),
    /// The mount table cannot be read: which filesystems are mounted is
    /// unknown, so no target can be shown to be free.
    MountTable {
        /// The mountinfo file.
        path: std::path::PathBuf,
        /// Why it cannot be read.
        error: std::io::Error,
    },
}

impl fmt::Display for SystemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SystemError::Cmdline { path, error } => write!(f, "{}: {error}", path.display()),
            SystemError::BootedSlotUnknown { cmdline } => write!(
                f,
                "cannot tell which slot is booted: no abupdate.slot= or rauc.slot= in {} and / is on neither slot's devices",
                cmdline.display()
            ),
            SystemError::Reboot(reason) => f.write_str(reason),
            SystemError::MountTable { path, error } => write!(
                f,
                "{}: cannot read the mount table ({error}): no target is written without knowing what is mounted",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SystemError {}

/// The booted slot named on the kernel command line by `abupdate.slot=X`
/// (ours) or `rauc.slot=X` (what boards prepared for RAUC pass). Markers
/// that disagree are an error: which one the bootloader meant cannot be
/// known. A `rauc.slot=` naming a slot we do not know (a RAUC bootname
/// other than `A`/`B`/`system0`/`system1`) is not ours to read.
pub fn booted_slot_from_cmdline(cmdline: &[u8]) -> Result<Option<SlotName>, CmdlineError> {
    let mut found: Option<(SlotName, &[u8])> = None;
    // Outside bytes: a word is named as `text::show` writes it (a byte
    // that is not UTF-8 as `\xNN`, never U+FFFD; found from outside, stop
    // 58), so two different words never read the same.
    let shown = |word: &[u8]| crate::text::show(word);
    for word in cmdline
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
    {
        let slot = if let Some(v) = word.strip_prefix(b"abupdate.slot=") {
            Some(match v {
                b"A" | b"a" => SlotName::A,
                b"B" | b"b" => SlotName::B,
                _ => return Err(CmdlineError::BadValue { word: shown(word) }),
            })
        } else if let Some(v) = word.strip_prefix(b"rauc.slot=") {
            // RAUC names slots `A`/`B` or `system0`/`system1`.
            match v {
                b"system0" | b"A" | b"a" => Some(SlotName::A),
                b"system1" | b"B" | b"b" => Some(SlotName::B),
                _ => None,
            }
        } else {
            None
        };
        match (slot, found) {
            (Some(s), Some((f, first))) if s != f => {
                return Err(CmdlineError::Conflict {
                    first: shown(first),
                    second: shown(word),
                })
            }
            (Some(s), None) => found = Some((s, word)),
            _ => {}
        }
    }
    Ok(found.map(|(s, _)| s))
}

/// The value of one os-release assignment, by os-release(5): a value in
/// double quotes takes backslash escapes of `"`, `\\`, `$` and `` ` ``; in
/// single quotes it is literal; unquoted, a backslash escapes the next
/// character and whitespace ends the value (what follows is a comment or
/// nothing). Adjacent pieces join, as in the shell. `None` for a quote that
/// is never closed. On bytes: every byte the rules look at is ASCII (and no
/// byte of a multi-byte UTF-8 character is), so a value that is not UTF-8
/// comes out byte for byte, for `status` to show losslessly.
fn shell_value(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bytes = raw.iter().copied();
    while let Some(c) = bytes.next() {
        match c {
            b'"' => loop {
                match bytes.next()? {
                    b'"' => break,
                    b'\\' => match bytes.next()? {
                        e @ (b'"' | b'\\' | b'$' | b'`') => out.push(e),
                        // A line continuation is not a character.
                        b'\n' => {}
                        other => out.extend([b'\\', other]),
                    },
                    other => out.push(other),
                }
            },
            b'\'' => loop {
                match bytes.next()? {
                    b'\'' => break,
                    other => out.push(other),
                }
            },
            b'\\' => out.extend(bytes.next()),
            // The shell's field separators: ASCII whitespace only.
            c if c.is_ascii_whitespace() => break,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `IMAGE_VERSION=` of an os-release file, else `VERSION_ID=`, unquoted by
/// os-release(5)'s rules. A key assigned twice takes the last value, as the
/// shell does; an empty value counts as absent. A last assignment the shell
/// cannot read (a quote never closed) is that key's value as written, so
/// it is refused as a version naming what is there: skipped, it left an
/// earlier line or `VERSION_ID` (`12` on a Debian-based image, newer than
/// any release) as the booted version, and the host stopped updating with
/// "not newer" and exit 0 (found from outside, stop 58).
pub fn version_from_os_release(text: &str) -> Option<String> {
    version_bytes_from_os_release(text.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// [`version_from_os_release`] of the file's bytes, as bytes: what `status`
/// shows (through [`crate::text::show`]) without losing a byte.
pub fn version_bytes_from_os_release(text: &[u8]) -> Option<Vec<u8>> {
    let value = |key: &[u8]| {
        // The last assignment: the first one found from the end.
        text.split(|b| *b == b'\n')
            .rev()
            .find_map(|l| {
                let l = l.trim_ascii_start();
                if l.starts_with(b"#") {
                    return None;
                }
                let raw = l.strip_prefix(key)?.strip_prefix(b"=")?;
                Some(shell_value(raw).unwrap_or_else(|| raw.to_vec()))
            })
            .filter(|v| !v.is_empty())
    };
    value(b"IMAGE_VERSION").or_else(|| value(b"VERSION_ID"))
}

/// `major:minor` of every mounted filesystem, from a mountinfo file.
pub fn mounted_devices(mountinfo: &str) -> Vec<(u64, u64)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (maj, min) = l.split_whitespace().nth(2)?.split_once(':')?;
            Some((maj.parse().ok()?, min.parse().ok()?))
        })
        .collect()
}

/// The mounted filesystems of the mountinfo file at `path`. Unlike the
/// other facts, a table that cannot be read is an error, never "nothing
/// is mounted": the target check would pass a mounted filesystem.
pub fn mounted_devices_of(path: &Path) -> Result<Vec<(u64, u64)>, SystemError> {
    let bytes = crate::files::read_capped(path, MAX_MOUNT_TABLE_BYTES).map_err(|error| {
        SystemError::MountTable {
            path: path.to_path_buf(),
            error,
        }
    })?;
    Ok(mounted_devices(&String::from_utf8_lossy(&bytes)))
}

/// The most read of a host fact file (cmdline, os-release, machine-id, boot
/// id): the kernel's command line is at most a few KiB, the others less.
pub const MAX_FACT_BYTES: u64 = 64 << 10;

/// The most read of the mount table: thousands of mounts (containers)
/// fit; more is not a mount table.
pub const MAX_MOUNT_TABLE_BYTES: u64 = 16 << 20;

/// Read a small host file by the rules of outside files
/// ([`crate::files::read_capped`]: a FIFO there never hangs the read, a
/// file over [`MAX_FACT_BYTES`] is not read whole); unreadable, missing,
/// not a regular file or too large is `None`. For the facts only parsed,
/// never shown (the machine and boot ids, the uptime): a byte that is not
/// UTF-8 turns into U+FFFD. The kernel command line and os-release, whose
/// words a message names, are read as bytes ([`read_fact_bytes`]).
pub fn read_fact(path: &Path) -> Option<String> {
    read_fact_bytes(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// [`read_fact`] as the file's bytes, for a value shown to a person.
pub fn read_fact_bytes(path: &Path) -> Option<Vec<u8>> {
    crate::files::read_capped(path, MAX_FACT_BYTES).ok()
}

/// Run the configured reboot command, bounded like every child
/// ([`REBOOT_TIMEOUT`]). It returns when the command does (a real reboot
/// never returns to us; a test's command does).
pub fn reboot(argv: &[String]) -> Result<(), SystemError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| SystemError::Reboot("system.reboot is empty".to_string()))?;
    crate::failpoint::hit("reboot-requested");
    // Run as root: only a program nobody else could have put there or
    // swapped (the rule of hooks and checks).
    let path = std::env::var_os("PATH");
    let mut cmd = crate::safe_path::command_on_path(prog, path.as_deref())
        .map_err(|why| SystemError::Reboot(format!("reboot command not run: {why}")))?;
    cmd.args(args);
    let done = crate::child::run(cmd, REBOOT_TIMEOUT)
        .map_err(|e| SystemError::Reboot(format!("reboot command: {e}")))?;
    if done.ending.success() {
        return Ok(());
    }
    let line = done.last_line();
    Err(SystemError::Reboot(if line.is_empty() {
        format!("reboot command {prog} failed: {}", done.ending)
    } else {
        format!("reboot command {prog} failed: {}: {line}", done.ending)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_booted_slot_on_cmdline() {
        let slot = |c: &str| booted_slot_from_cmdline(c.as_bytes()).expect(c);
        assert_eq!(
            slot("root=/dev/vda3 abupdate.slot=B quiet"),
            Some(SlotName::B)
        );
        assert_eq!(slot("rauc.slot=A ro"), Some(SlotName::A));
        assert_eq!(slot("rauc.slot=system1"), Some(SlotName::B));
        // Two markers that agree are one fact.
        assert_eq!(slot("rauc.slot=system0 abupdate.slot=A"), Some(SlotName::A));
        assert_eq!(slot("root=/dev/sda1"), None);
        // A RAUC bootname we do not know is not ours to read.
        assert_eq!(slot("rauc.slot=recovery"), None);
        assert_eq!(slot("abupdate.slot=b"), Some(SlotName::B));
        assert_eq!(slot("rauc.slot=a"), Some(SlotName::A));
    }

    #[test]
    fn conflicting_slot_markers_are_refused_naming_both() {
        for (cmdline, first, second) in [
            (
                "rauc.slot=A abupdate.slot=B",
                "rauc.slot=A",
                "abupdate.slot=B",
            ),
            (
                "abupdate.slot=A ro abupdate.slot=B",
                "abupdate.slot=A",
                "abupdate.slot=B",
            ),
            (
                "rauc.slot=system1 abupdate.slot=A",
                "rauc.slot=system1",
                "abupdate.slot=A",
            ),
        ] {
            let e = booted_slot_from_cmdline(cmdline.as_bytes()).expect_err(cmdline);
            assert_eq!(
                e,
                CmdlineError::Conflict {
                    first: first.into(),
                    second: second.into()
                }
            );
            assert_eq!(
                e.to_string(),
                format!("{first} and {second} name different booted slots")
            );
        }
        assert_eq!(
            booted_slot_from_cmdline(b"abupdate.slot=C").map_err(|e| e.to_string()),
            Err("abupdate.slot=C: expected A or B".into())
        );
        // Outside bytes named losslessly (stop 58: `\xff` became U+FFFD).
        assert_eq!(
            booted_slot_from_cmdline(b"abupdate.slot=C\xff\x1b[2J").map_err(|e| e.to_string()),
            Err("abupdate.slot=C\\xff\\x1b[2J: expected A or B".into())
        );
        assert_eq!(
            booted_slot_from_cmdline(b"rauc.slot=A\xe9 abupdate.slot=B rauc.slot=A")
                .map_err(|e| e.to_string()),
            Err("abupdate.slot=B and rauc.slot=A name different booted slots".into())
        );
    }

    #[test]
    fn reads_versions_from_os_release() {
        assert_eq!(
            version_from_os_release("ID=x\nIMAGE_VERSION=\"2026.11.3\"\nVERSION_ID=12\n")
                .as_deref(),
            Some("2026.11.3")
        );
        assert_eq!(
            version_from_os_release("VERSION_ID=12\n").as_deref(),
            Some("12")
        );
        assert_eq!(version_from_os_release("ID=x\n"), None);
    }

    #[test]
    fn os_release_values_are_unquoted_by_its_shell_like_rules() {
        for (text, want) in [
            ("IMAGE_VERSION=\"2.0\"\n", Some("2.0")),
            ("IMAGE_VERSION='2.0'\n", Some("2.0")),
            ("IMAGE_VERSION=2.0\n", Some("2.0")),
            ("IMAGE_VERSION=\"2.0\" # release\n", Some("2.0")),
            ("IMAGE_VERSION=2.0 # release\n", Some("2.0")),
            ("IMAGE_VERSION=\"2.0\"\r\n", Some("2.0")),
            ("IMAGE_VERSION=\"2.\\\"0\\$\"\n", Some("2.\"0$")),
            ("IMAGE_VERSION='2.\\0'\n", Some("2.\\0")),
            ("IMAGE_VERSION=\"2\"'.0'\n", Some("2.0")),
            // The shell's last assignment wins.
            ("IMAGE_VERSION=1.0\nIMAGE_VERSION=\"2.0\"\n", Some("2.0")),
            // Comments and empty values are no version.
            ("#IMAGE_VERSION=9.9\nVERSION_ID=\"12\"\n", Some("12")),
            ("IMAGE_VERSION=\"\"\nVERSION_ID=12\n", Some("12")),
            // An unterminated quote is that value as written: not a
            // version, never skipped for an earlier line or VERSION_ID.
            ("IMAGE_VERSION=\"2.0\nVERSION_ID=12\n", Some("\"2.0")),
            ("IMAGE_VERSION=1.0\nIMAGE_VERSION='3.0\n", Some("'3.0")),
            ("IMAGE_VERSION_EXTRA=3\n", None),
        ] {
            assert_eq!(version_from_os_release(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn parses_mountinfo_device_numbers() {
        let info = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
                    30 22 7:3 / /mnt rw - ext4 /dev/loop3 rw\n";
        assert_eq!(mounted_devices(info), vec![(259, 2), (7, 3)]);
    }

    #[test]
    fn bytes_that_are_not_utf8_hide_no_fact() {
        let dir = crate::testutil::TempDir::new("facts");
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let cmdline = file(
            "cmdline",
            b"BOOT_IMAGE=/vmlinuz label=caf\xe9 abupdate.slot=B ro\n",
        );
        let bytes = read_fact_bytes(&cmdline).expect("a cmdline that is not UTF-8 is still read");
        assert_eq!(booted_slot_from_cmdline(&bytes), Ok(Some(SlotName::B)));
        let os = file(
            "os-release",
            b"PRETTY_NAME=\"Edge OS caf\xe9\"\nID=t\nIMAGE_VERSION=3.0\n",
        );
        let text = read_fact(&os).expect("an os-release that is not UTF-8 is still read");
        assert_eq!(version_from_os_release(&text).as_deref(), Some("3.0"));
        let info = file(
            "mountinfo",
            b"22 1 259:2 / / rw - ext4 /dev/vda rw\n40 22 0:77 / /caf\xe9 rw - tmpfs tmpfs rw\n30 22 7:3 / /mnt rw - ext4 /dev/loop3 rw\n",
        );
        assert_eq!(
            mounted_devices_of(&info).unwrap(),
            vec![(259, 2), (0, 77), (7, 3)]
        );
    }

    #[test]
    fn a_fact_file_that_is_a_fifo_or_huge_is_absent_without_hanging_or_reading_it_whole() {
        // A FIFO at `[system] boot_id` held `health` forever (and the state
        // lock with it); a sparse 300 MB file was read whole into memory.
        let dir = crate::testutil::TempDir::new("facts");
        let fifo = dir.path().join("boot_id");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let read = crate::testutil::within_5s(move || read_fact(&fifo));
        assert_eq!(read, None, "a FIFO is no fact and never blocks");
        let huge = dir.path().join("os-release");
        let f = std::fs::File::create(&huge).unwrap();
        f.set_len(300 << 20).unwrap();
        assert_eq!(read_fact(&huge), None, "over the cap: not read");
        f.set_len(MAX_FACT_BYTES).unwrap();
        assert!(read_fact(&huge).is_some(), "at the cap: read");
        let info = dir.path().join("mountinfo");
        std::fs::File::create(&info)
            .unwrap()
            .set_len(MAX_MOUNT_TABLE_BYTES + 1)
            .unwrap();
        let err = mounted_devices_of(&info).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let _ = std::fs::remove_file(&info);
        nix::unistd::mkfifo(&info, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let read = crate::testutil::within_5s(move || mounted_devices_of(&info));
        let err = read.unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_mount_table_that_cannot_be_read_is_an_error_naming_it() {
        let dir = crate::testutil::TempDir::new("facts");
        let missing = dir.path().join("mountinfo");
        let err = mounted_devices_of(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        assert!(err.contains("cannot read the mount table"), "{err}");
        // A directory cannot be read as one either.
        let err = mounted_devices_of(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot read the mount table"), "{err}");
    }
}
