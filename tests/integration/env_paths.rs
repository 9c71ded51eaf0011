//! What stands at a bootloader environment's path (grubenv,
//! `fw_env.config`, the U-Boot env file, an EFI variable, systemd-boot's
//! `loader.conf` and entries) is opened without blocking and refused
//! unless it is a regular file (or, for the U-Boot env, a device): one
//! line naming the path, never a hang of the boot-time `health`.

use crate::common::host::{bounded, with_fifo, HostOptions};
use crate::common::loaders::{Host, Loader};
use std::path::PathBuf;

/// Issue (review 2, 6): a FIFO at any bootloader env path made `status`,
/// `health` and `mark-good` hang for ever.
#[test]
fn a_fifo_at_a_bootloader_env_path_is_refused_at_once_naming_it() {
    for loader in [
        Loader::Grub,
        Loader::Uboot,
        Loader::Efi,
        Loader::SystemdBoot,
    ] {
        let h = Host::new("env-fifo", loader, "1.0", 1 << 20, HostOptions::default());
        let paths: Vec<PathBuf> = match loader {
            Loader::Grub => vec![h.grubenv.clone()],
            Loader::Uboot => vec![h.fw_conf.clone(), h.uboot_env.clone()],
            Loader::Efi => {
                use abupdate::boot::efivar::GLOBAL_GUID;
                vec![h.efi_vars().path("BootOrder", GLOBAL_GUID)]
            }
            Loader::SystemdBoot => vec![
                h.esp.join("loader/loader.conf"),
                h.esp.join("loader/entries/abupdate-1-a.conf"),
            ],
        };
        for path in paths {
            with_fifo(&path, || {
                for args in [&["status"][..], &["health"], &["mark-good"]] {
                    let (code, err) = bounded(&h.config, args);
                    let what = format!("{loader:?} {args:?} with a FIFO at {}", path.display());
                    assert!(code.is_some(), "{what}: hung");
                    // A verb that never reads the file there may succeed
                    // (systemd-boot's re-bless reads no loader.conf);
                    // `status` reads them all.
                    if code == Some(0) && args != ["status"] {
                        continue;
                    }
                    assert_eq!(code, Some(1), "{what}: {err}");
                    let shown = path.display().to_string();
                    assert!(
                        err.lines().count() == 1 && err.contains(&shown),
                        "{what}: {err}"
                    );
                }
            });
            let (code, err) = bounded(&h.config, &["health"]);
            assert_eq!(code, Some(0), "{loader:?} after {}: {err}", path.display());
        }
    }
}
