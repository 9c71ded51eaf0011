//! Facts the host tells about itself, each read from a configurable file so
//! tests need no root paths: the booted slot (kernel command line), the
//! booted version (os-release), the boot id, the mount table; and the one
//! action on the host as a whole, the reboot.

use crate::slot::SlotName;
use std::path::Path;
use std::process::Command;

/// The booted slot named on the kernel command line by `abupdate.slot=X`
/// (ours) or `rauc.slot=X` (what boards prepared for RAUC pass).
pub fn booted_slot_from_cmdline(cmdline: &str) -> Option<SlotName> {
    let mut found = None;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("abupdate.slot=") {
            return v.parse().ok();
        }
        if let Some(v) = word.strip_prefix("rauc.slot=") {
            // RAUC names slots `A`/`B` or `system0`/`system1`.
            found = match v {
                "system0" => Some(SlotName::A),
                "system1" => Some(SlotName::B),
                _ => v.parse().ok(),
            };
        }
    }
    found
}

/// `IMAGE_VERSION=` of an os-release file, else `VERSION_ID=`.
pub fn version_from_os_release(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (!v.is_empty()).then(|| v.to_string())
        })
    };
    value("IMAGE_VERSION").or_else(|| value("VERSION_ID"))
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

/// Read a small host file; missing is `None`.
pub fn read_fact(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Run the configured reboot command. It returns when the command does
/// (a real reboot never returns to us; a test's command does).
pub fn reboot(argv: &[String]) -> Result<(), String> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| "system.reboot is empty".to_string())?;
    crate::failpoint::hit("reboot-requested");
    let status = Command::new(prog)
        .args(args)
        .status()
        .map_err(|e| format!("reboot command {prog}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("reboot command {prog} failed: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_booted_slot_on_cmdline() {
        assert_eq!(
            booted_slot_from_cmdline("root=/dev/vda3 abupdate.slot=B quiet"),
            Some(SlotName::B)
        );
        assert_eq!(
            booted_slot_from_cmdline("rauc.slot=A ro"),
            Some(SlotName::A)
        );
        assert_eq!(
            booted_slot_from_cmdline("rauc.slot=system1"),
            Some(SlotName::B)
        );
        assert_eq!(
            booted_slot_from_cmdline("rauc.slot=A abupdate.slot=B"),
            Some(SlotName::B)
        );
        assert_eq!(booted_slot_from_cmdline("root=/dev/sda1"), None);
        assert_eq!(booted_slot_from_cmdline("abupdate.slot=C"), None);
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
    fn parses_mountinfo_device_numbers() {
        let info = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
                    30 22 7:3 / /mnt rw - ext4 /dev/loop3 rw\n";
        assert_eq!(mounted_devices(info), vec![(259, 2), (7, 3)]);
    }
}
