//! Install hooks: a site's own executables run at three points of an
//! update (`[hooks] pre_install`, `post_install`, `pre_reboot`), told what
//! is being installed where through their environment, with RAUC's names
//! where RAUC has one (a hook written for RAUC's handler interface reads the
//! same variables).
//!
//! Invariant: a hook runs through [`crate::child`] (its own process group,
//! killed with everything it started when it exits or at `[hooks]
//! timeout`, its output drained and only its ends kept), and only a hook
//! that exits 0 lets the flow go on: a failing `pre_install` refuses the
//! install before anything is marked or written, a failing `post_install`
//! leaves the written target bad (never activated), a failing `pre_reboot`
//! holds the reboot (the staged slot waits). A hook that others could
//! replace is refused, it would run as root: the file group- or
//! world-writable or owned by another user than root or us, or a directory
//! on its way (its own, `/`'s, a link's) that others can change
//! ([`crate::safe_path`], which also runs the very file it judged).
//!
//! The environment (see [`environment`]), for the release's images numbered
//! 1..N in class order:
//!
//! | variable | value |
//! | --- | --- |
//! | `ABUPDATE_HOOK` | `pre_install`, `post_install` or `pre_reboot` |
//! | `RAUC_SYSTEM_COMPATIBLE` | `[update] compatible` |
//! | `RAUC_MF_COMPATIBLE`, `RAUC_MF_VERSION` | the signed manifest's |
//! | `ABUPDATE_MANIFEST_SHA256` | SHA-256 of the verified manifest |
//! | `RAUC_UPDATE_SOURCE` | the manifest's URL (user info as `***`) |
//! | `RAUC_CURRENT_BOOTNAME` | the booted slot, `A` or `B` |
//! | `ABUPDATE_TARGET_SLOT` | the slot written, `A` or `B` |
//! | `RAUC_TARGET_SLOTS` | `1 2 …`: the image numbers |
//! | `RAUC_SLOT_NAME_<N>` | `<class>.0` for slot A, `<class>.1` for B |
//! | `RAUC_SLOT_CLASS_<N>`, `RAUC_SLOT_DEVICE_<N>`, `RAUC_SLOT_BOOTNAME_<N>` | the target partition |
//! | `RAUC_IMAGE_NAME_<N>`, `RAUC_IMAGE_CLASS_<N>`, `RAUC_IMAGE_DIGEST_<N>`, `RAUC_IMAGE_SIZE_<N>` | the image (`url` as signed, class, SHA-256, size) |
//! | `RAUC_SLOT_NAME`, … `RAUC_IMAGE_SIZE` (no suffix) | the same, when the release has one image (RAUC's slot-hook names) |

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::child::Ending;
use crate::slot::SlotName;

/// Where in the flow a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Before anything is marked or written.
    PreInstall,
    /// Written and read back, not yet activated.
    PostInstall,
    /// Staged and the site lock taken, right before the reboot.
    PreReboot,
}

impl Point {
    /// The name in `[hooks]`, `$1` and `ABUPDATE_HOOK`.
    pub fn name(self) -> &'static str {
        match self {
            Point::PreInstall => "pre_install",
            Point::PostInstall => "post_install",
            Point::PreReboot => "pre_reboot",
        }
    }
}

/// One image of the release, as the hooks see it.
#[derive(Clone, Debug)]
pub struct Image<'a> {
    /// The image class (`rootfs`, …).
    pub class: &'a str,
    /// The target slot's device for the class.
    pub device: &'a Path,
    /// The image's `url` as the signed manifest names it.
    pub name: &'a str,
    /// The image's SHA-256, as signed.
    pub sha256: &'a str,
    /// The image's size in bytes.
    pub size: u64,
}

/// What the hooks are told.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// `[update] compatible`.
    pub compatible: &'a str,
    /// The manifest's `compatible`.
    pub manifest_compatible: &'a str,
    /// The manifest's `version`.
    pub version: &'a str,
    /// SHA-256 of the verified manifest.
    pub manifest_sha256: &'a str,
    /// The manifest's location; shown without user info.
    pub source: &'a str,
    /// The booted slot.
    pub booted: SlotName,
    /// The slot written.
    pub target: SlotName,
    /// In class order.
    pub images: Vec<Image<'a>>,
}

/// RAUC's slot name: `<class>.<index>`, A being index 0.
fn slot_name(class: &str, slot: SlotName) -> String {
    let index = if slot == SlotName::A { 0 } else { 1 };
    format!("{class}.{index}")
}

/// The variables a hook at `point` gets (see the module doc).
pub fn environment(point: Point, facts: &Facts) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| env.push((k.to_string(), v));
    set("ABUPDATE_HOOK", point.name().into());
    set("RAUC_SYSTEM_COMPATIBLE", facts.compatible.into());
    set("RAUC_MF_COMPATIBLE", facts.manifest_compatible.into());
    set("RAUC_MF_VERSION", facts.version.into());
    set("ABUPDATE_MANIFEST_SHA256", facts.manifest_sha256.into());
    set(
        "RAUC_UPDATE_SOURCE",
        crate::fetch::redact(facts.source).into_owned().into(),
    );
    set("RAUC_CURRENT_BOOTNAME", facts.booted.as_str().into());
    set("ABUPDATE_TARGET_SLOT", facts.target.as_str().into());
    let numbers: Vec<String> = (1..=facts.images.len()).map(|n| n.to_string()).collect();
    set("RAUC_TARGET_SLOTS", numbers.join(" ").into());
    let single = facts.images.len() == 1;
    for (i, image) in facts.images.iter().enumerate() {
        let n = i + 1;
        let values: [(&str, OsString); 8] = [
            (
                "RAUC_SLOT_NAME",
                slot_name(image.class, facts.target).into(),
            ),
            ("RAUC_SLOT_CLASS", image.class.into()),
            ("RAUC_SLOT_DEVICE", image.device.as_os_str().to_owned()),
            ("RAUC_SLOT_BOOTNAME", facts.target.as_str().into()),
            ("RAUC_IMAGE_NAME", image.name.into()),
            ("RAUC_IMAGE_CLASS", image.class.into()),
            ("RAUC_IMAGE_DIGEST", image.sha256.into()),
            ("RAUC_IMAGE_SIZE", image.size.to_string().into()),
        ];
        for (name, value) in values {
            if single {
                set(name, value.clone());
            }
            set(&format!("{name}_{n}"), value);
        }
    }
    env
}

/// Why a hook stopped the flow; names the hook and the file.
#[derive(Debug)]
pub enum HookError {
    /// It ran and did not exit 0 (or ran out of time).
    Failed {
        /// Where it ran.
        point: Point,
        /// The hook file.
        path: PathBuf,
        /// How it ended.
        ending: Ending,
        /// Its last line of stderr, else stdout.
        line: String,
    },
    /// It could not be run.
    NotRun {
        /// Where it was to run.
        point: Point,
        /// The hook file.
        path: PathBuf,
        /// Why it could not run.
        reason: String,
    },
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Failed {
                point,
                path,
                ending,
                line,
            } => {
                write!(
                    f,
                    "{} hook {} failed: {ending}",
                    point.name(),
                    path.display()
                )?;
                if !line.is_empty() {
                    write!(f, ": {line}")?;
                }
                Ok(())
            }
            HookError::NotRun {
                point,
                path,
                reason,
            } => write!(f, "{} hook {}: {reason}", point.name(), path.display()),
        }
    }
}

impl std::error::Error for HookError {}

/// Run the hook at `path` for `point` with `env` added, at most `timeout`.
pub fn run(
    point: Point,
    path: &Path,
    timeout: Duration,
    env: &[(String, OsString)],
) -> Result<(), HookError> {
    let mut cmd = crate::safe_path::command(path).map_err(|reason| HookError::NotRun {
        point,
        path: path.to_path_buf(),
        reason,
    })?;
    cmd.arg(point.name());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let done = crate::child::run(cmd, timeout).map_err(|e| HookError::NotRun {
        point,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if done.ending.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        point,
        path: path.to_path_buf(),
        ending: done.ending,
        line: done.last_line(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn facts(images: Vec<Image<'static>>) -> Facts<'static> {
        Facts {
            compatible: "acme-edge",
            manifest_compatible: "acme-edge",
            version: "2.0",
            manifest_sha256: "ab12",
            source: "https://user:pw@updates.example.net/release.json",
            booted: SlotName::A,
            target: SlotName::B,
            images,
        }
    }

    fn get<'e>(env: &'e [(String, OsString)], k: &str) -> Option<&'e str> {
        env.iter()
            .find(|(name, _)| name == k)
            .and_then(|(_, v)| v.to_str())
    }

    fn rootfs() -> Image<'static> {
        Image {
            class: "rootfs",
            device: Path::new("/dev/sda3"),
            name: "rootfs-2.0.img.zst",
            sha256: "ff00",
            size: 4096,
        }
    }

    #[test]
    fn one_image_gets_raucs_slot_hook_names_and_the_numbered_ones() {
        let env = environment(Point::PostInstall, &facts(vec![rootfs()]));
        for (k, v) in [
            ("ABUPDATE_HOOK", "post_install"),
            ("RAUC_MF_VERSION", "2.0"),
            (
                "RAUC_UPDATE_SOURCE",
                "https://***@updates.example.net/release.json",
            ),
            ("RAUC_CURRENT_BOOTNAME", "A"),
            ("ABUPDATE_TARGET_SLOT", "B"),
            ("RAUC_TARGET_SLOTS", "1"),
            ("RAUC_SLOT_NAME", "rootfs.1"),
            ("RAUC_SLOT_DEVICE", "/dev/sda3"),
            ("RAUC_SLOT_DEVICE_1", "/dev/sda3"),
            ("RAUC_SLOT_BOOTNAME", "B"),
            ("RAUC_IMAGE_NAME", "rootfs-2.0.img.zst"),
            ("RAUC_IMAGE_DIGEST_1", "ff00"),
            ("RAUC_IMAGE_SIZE", "4096"),
            ("RAUC_SYSTEM_COMPATIBLE", "acme-edge"),
        ] {
            assert_eq!(get(&env, k), Some(v), "{k}");
        }
    }

    #[test]
    fn several_images_are_numbered_only() {
        let boot = Image {
            class: "boot",
            device: Path::new("/dev/sda5"),
            name: "boot.img",
            sha256: "aa",
            size: 1,
        };
        let env = environment(Point::PreInstall, &facts(vec![boot, rootfs()]));
        assert_eq!(get(&env, "RAUC_TARGET_SLOTS"), Some("1 2"));
        assert_eq!(get(&env, "RAUC_SLOT_CLASS_1"), Some("boot"));
        assert_eq!(get(&env, "RAUC_SLOT_NAME_2"), Some("rootfs.1"));
        assert_eq!(get(&env, "RAUC_SLOT_DEVICE"), None);
    }

    #[test]
    fn a_device_path_that_is_not_utf8_reaches_the_hook_as_bytes() {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let path = PathBuf::from(OsString::from_vec(b"/dev/disk/by-label/r\xff".to_vec()));
        let image = Image {
            device: Box::leak(path.into_boxed_path()),
            ..rootfs()
        };
        let env = environment(Point::PreInstall, &facts(vec![image]));
        let dev = env
            .iter()
            .find(|(k, _)| k == "RAUC_SLOT_DEVICE")
            .map(|(_, v)| v.as_bytes().to_vec());
        assert_eq!(dev.as_deref(), Some(&b"/dev/disk/by-label/r\xff"[..]));
    }

    #[test]
    fn a_failing_hook_is_named_with_its_last_line_and_a_writable_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("hooks");
        let hook = dir.join("pre-install");
        std::fs::write(
            &hook,
            "#!/bin/sh\necho \"$1 $RAUC_MF_VERSION\" >&2\nexit 3\n",
        )
        .expect("hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let env = environment(Point::PreInstall, &facts(vec![rootfs()]));
        let e = run(Point::PreInstall, &hook, Duration::from_secs(10), &env).expect_err("exit 3");
        assert_eq!(
            e.to_string(),
            format!(
                "pre_install hook {} failed: exit status 3: pre_install 2.0",
                hook.display()
            )
        );
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = run(Point::PreInstall, &hook, Duration::from_secs(10), &env).expect_err("0777");
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        let slow = dir.join("slow");
        std::fs::write(&slow, "#!/bin/sh\nsleep 100\n").expect("hook");
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let started = std::time::Instant::now();
        let e = run(Point::PreReboot, &slow, Duration::from_millis(300), &env).expect_err("slow");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("timed out after 300ms"), "{e}");
    }
}
