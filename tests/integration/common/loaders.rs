//! The test host with any bootloader: GRUB (a grubenv read by the real
//! `grub-editenv`), U-Boot (a redundant environment in a regular file,
//! read by the real `fw_printenv -c`), EFI (a directory standing in for
//! efivarfs, read by the real `efibootmgr` through `EFIVARFS_PATH`) or
//! systemd-boot (an ESP on a tmpfs mount, read by the real `bootctl
//! list`), and `boot()` playing each one's slot selection: GRUB's script
//! (`common::grub`, the one model of `scripts/grub/grub.cfg`),
//! `scripts/uboot/boot.cmd` (first slot in BOOT_ORDER with BOOT_x_LEFT > 0,
//! take one attempt; none left: reset both to 3), the UEFI boot manager
//! (`BootNext`, deleted as it is used, else the first active `BootOrder`
//! entry; `BootCurrent` set), or systemd-boot (the entry `bootctl` marks
//! default, its counter bumped as systemd-boot renames it).
//!
//! Used as `crate::common::loaders`.

use crate::common::host::{bin, image, run, text, write_at_start, HostOptions, TestHost};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    Grub,
    Uboot,
    Efi,
    SystemdBoot,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::Grub => "grub",
            Loader::Uboot => "uboot",
            Loader::Efi => "efi",
            Loader::SystemdBoot => "systemd-boot",
        }
    }
}

/// The `Boot####` numbers of the test host's slots and of a foreign entry
/// (a firmware shell) that must be kept in `BootOrder`.
pub const EFI_A: u16 = 0x0001;
pub const EFI_B: u16 = 0x0002;
pub const EFI_SHELL: u16 = 0x0000;

/// One release 2.0 (`image("2.0", len)`), packed once per kind and size
/// and signed by its own key, so that many hosts can install it.
pub struct Release {
    pub manifest: PathBuf,
    pub public_key: String,
}

/// The packed releases, keyed by kind AND size: all tests share one
/// process, and a test asking for 3 MiB must not get another's 9 MiB.
fn cached(len: usize, tag: &'static str, make: impl FnOnce() -> Release) -> &'static Release {
    type Cache = Mutex<BTreeMap<(&'static str, usize), &'static Release>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    // Held while packing: two tests asking for one release pack it once.
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry((tag, len))
        .or_insert_with(|| Box::leak(Box::new(make())))
}

/// A host on `loader`, 1.0 booted in slot A, with 4 MiB slots for an image
/// of `image_len` bytes: the EFI and systemd-boot tests' host.
pub fn small_host(name: &str, loader: Loader, image_len: usize) -> Host {
    Host::new(
        name,
        loader,
        "1.0",
        image_len,
        HostOptions {
            slot_size: 4 << 20,
            ..Default::default()
        },
    )
}

pub fn release(len: usize) -> &'static Release {
    cached(len, "full", || make_release(len, "full", &[]))
}

/// Release 2.0 in 1 MiB segments (decoded by parallel workers).
pub fn segmented_release(len: usize) -> &'static Release {
    cached(len, "segmented", || {
        make_release(len, "segmented", &["--segment-size", "1"])
    })
}

/// Release 2.0 as one zstd frame (`--one-frame`: every release before
/// segments; decoded as one stream).
pub fn one_frame_release(len: usize) -> &'static Release {
    cached(len, "one-frame", || {
        make_release(len, "one-frame", &["--one-frame"])
    })
}

/// The same release 2.0 with a delta from `image("1.0", len)` in 2 MiB
/// segments (served over HTTP: deltas are fetched by range).
pub fn delta_release(len: usize) -> &'static Release {
    cached(len, "delta", || {
        let old = super::host::scratch_root().join(format!("shared-v1-{len}"));
        std::fs::write(&old, image("1.0", len)).expect("v1");
        let from = format!("rootfs={}", old.display());
        let r = make_release(
            len,
            "delta",
            &["--segment-size", "2", "--delta-from", &from],
        );
        let _ = std::fs::remove_file(&old);
        r
    })
}

fn make_release(len: usize, tag: &str, extra: &[&str]) -> Release {
    {
        let dir = super::host::scratch_root().join(format!("shared-rel-{tag}-{len}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("release dir");
        let (sk, pk) = (dir.join("release.key"), dir.join("release.pub"));
        let out = run(Command::new(bin())
            .args(["keygen", "--secret"])
            .arg(&sk)
            .arg("--public")
            .arg(&pk));
        assert!(out.status.success(), "keygen: {}", text(&out));
        let raw = dir.join("rootfs.raw");
        std::fs::write(&raw, image("2.0", len)).expect("image");
        let out = run(Command::new(bin())
            .args(["pack", "--secret"])
            .arg(&sk)
            .args([
                "--compatible",
                crate::common::host::COMPATIBLE,
                "--version",
                "2.0",
                "--level",
                "3",
            ])
            .arg(format!("--image=rootfs={}", raw.display()))
            .arg("--out")
            .arg(dir.join("r2"))
            .args(extra));
        assert!(out.status.success(), "pack: {}", text(&out));
        Release {
            manifest: dir.join("r2/release.json"),
            public_key: std::fs::read_to_string(&pk).expect("pub"),
        }
    }
}

/// Size of one U-Boot environment copy.
pub const UBOOT_COPY: usize = 0x4000;

/// A U-Boot environment as a board booted from slot A keeps it: A first
/// with its tries, B none.
pub fn booted_a_env() -> abupdate::boot::ubootenv::UbootEnv {
    let mut env = abupdate::boot::ubootenv::UbootEnv::new();
    for (k, v) in [
        ("bootcmd", "run distro_bootcmd"),
        ("BOOT_ORDER", "A B"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "0"),
    ] {
        env.set(k, v).expect("set");
    }
    env
}

/// Write [`booted_a_env`] into every copy `fw_conf` names.
pub fn seed_uboot_env(fw_conf: &Path) {
    use abupdate::boot::ubootenv::{self, UbootEnvConfig};
    let cfg = UbootEnvConfig::load(fw_conf).expect("fw_env.config");
    ubootenv::write(&cfg, &booted_a_env()).expect("seed env");
}

pub struct Host {
    pub h: TestHost,
    pub loader: Loader,
    /// U-Boot: the fw_env.config and the file holding both copies.
    pub fw_conf: PathBuf,
    pub uboot_env: PathBuf,
    /// EFI: the efivarfs stand-in; systemd-boot: the ESP (a tmpfs mount).
    pub efivars: PathBuf,
    pub esp: PathBuf,
    esp_mounted: bool,
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.esp_mounted {
            let _ = Command::new("umount").arg(&self.esp).output();
        }
    }
}

impl std::ops::Deref for Host {
    type Target = TestHost;
    fn deref(&self) -> &TestHost {
        &self.h
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut TestHost {
        &mut self.h
    }
}

/// `BOOT_x_LEFT` as RAUC and the script read it (hex, unset = 3).
pub fn uboot_left(env: &BTreeMap<String, String>, slot: &str) -> u64 {
    match env.get(&format!("BOOT_{slot}_LEFT")).map(String::as_str) {
        None | Some("") => 3,
        Some(v) => {
            let v = v.trim_start_matches("0x");
            let digits: String = v.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            u64::from_str_radix(&digits, 16).unwrap_or(0)
        }
    }
}

pub fn uboot_order(env: &BTreeMap<String, String>) -> Vec<String> {
    match env.get("BOOT_ORDER").map(String::as_str) {
        None | Some("") => vec!["A".into(), "B".into()],
        Some(v) => v.split_whitespace().map(str::to_string).collect(),
    }
}

fn slot_name(s: &str) -> &'static str {
    if s == "B" {
        "B"
    } else {
        "A"
    }
}

impl Host {
    /// A host booted from slot A holding `version` (its first `a_len`
    /// bytes are the whole image, so its hash is checkable), committed.
    pub fn new(name: &str, loader: Loader, version: &str, a_len: usize, opts: HostOptions) -> Host {
        let h = TestHost::new(&format!("{name}-{}", loader.name()), version, opts);
        write_at_start(&h.slots[0], &crate::common::host::image(version, a_len));
        let fw_conf = h.dir.join("fw_env.config");
        let uboot_env = h.dir.join("uboot.env");
        let efivars = h.dir.join("efivars");
        let esp = h.dir.join("esp");
        let mut host = Host {
            h,
            loader,
            fw_conf,
            uboot_env,
            efivars,
            esp,
            esp_mounted: false,
        };
        match loader {
            Loader::Grub => {}
            Loader::Uboot => host.switch_to_uboot(),
            Loader::Efi => host.switch_to_efi(),
            Loader::SystemdBoot => host.switch_to_systemd_boot(),
        }
        host
    }

    /// Replace the fixture's `[bootloader]` GRUB lines with `lines`.
    fn set_bootloader_config(&self, lines: &str) {
        let config = std::fs::read_to_string(&self.config).expect("config");
        let grub_lines = format!(
            "kind = \"grub\"\ngrubenv = \"{}\"\n",
            self.grubenv.display()
        );
        assert!(config.contains(&grub_lines), "fixture config changed");
        std::fs::write(&self.config, config.replace(&grub_lines, lines)).expect("config");
        let _ = std::fs::remove_file(&self.grubenv);
    }

    pub fn efi_vars(&self) -> abupdate::boot::efivar::EfiVars {
        abupdate::boot::efivar::EfiVars::new(self.efivars.clone())
    }

    /// NVRAM as a fresh EFI host has it: a shell entry and both slots'
    /// entries (HD()/File() on a made-up ESP), A first in BootOrder, B not
    /// in it (its slot holds nothing yet).
    fn switch_to_efi(&mut self) {
        use abupdate::boot::efivar::{
            boot_name, device_path, u16_bytes, ucs2, HardDrive, LoadOption, GLOBAL_GUID,
            LOAD_OPTION_ACTIVE, NV_BS_RT,
        };
        std::fs::create_dir_all(&self.efivars).expect("efivars dir");
        let vars = self.efi_vars();
        let hd = HardDrive {
            partition_number: 1,
            start_lba: 2048,
            size_lba: 1 << 18,
            signature: abupdate::boot::efivar::guid_bytes("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
                .expect("guid"),
        };
        for (num, desc, loader) in [
            (EFI_SHELL, "EFI Internal Shell", "\\EFI\\BOOT\\shellx64.efi"),
            (EFI_A, "abupdate A", "\\EFI\\abupdate-a\\grubx64.efi"),
            (EFI_B, "abupdate B", "\\EFI\\abupdate-b\\grubx64.efi"),
        ] {
            let opt = LoadOption {
                attributes: LOAD_OPTION_ACTIVE,
                description: ucs2(desc),
                file_path_list: device_path(&hd, loader),
                optional_data: Vec::new(),
            };
            vars.set(&boot_name(num), GLOBAL_GUID, NV_BS_RT, &opt.to_bytes())
                .expect("Boot####");
        }
        vars.set(
            "BootOrder",
            GLOBAL_GUID,
            NV_BS_RT,
            &u16_bytes(&[EFI_A, EFI_SHELL]),
        )
        .expect("BootOrder");
        self.set_bootloader_config(&format!(
            "kind = \"efi\"\nefivarfs = \"{}\"\n",
            self.efivars.display()
        ));
        assert_eq!(self.boot(), "A");
        let out = self.abupdate(&["health"]);
        assert!(out.status.success(), "first EFI health: {}", text(&out));
    }

    /// An ESP (tmpfs: the root of a file system, as `bootctl` wants it)
    /// with `default abupdate-*` in loader.conf, A's entry good, B's bad.
    fn switch_to_systemd_boot(&mut self) {
        std::fs::create_dir_all(&self.esp).expect("esp dir");
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&self.esp));
        assert!(out.status.success(), "mount tmpfs: {}", text(&out));
        self.esp_mounted = true;
        for d in ["loader/entries", "abupdate/a", "abupdate/b"] {
            std::fs::create_dir_all(self.esp.join(d)).expect("esp dirs");
        }
        std::fs::write(
            self.esp.join("loader/loader.conf"),
            "timeout 0\ndefault abupdate-*\n",
        )
        .expect("loader.conf");
        for (slot, name) in [("a", "abupdate-1-a.conf"), ("b", "abupdate-0-b+0.conf")] {
            std::fs::write(
                self.esp.join(format!("abupdate/{slot}/linux")),
                b"MZ kernel",
            )
            .expect("kernel");
            std::fs::write(
                self.esp.join("loader/entries").join(name),
                format!(
                    "title abupdate slot {up}\nlinux /abupdate/{slot}/linux\noptions root=x abupdate.slot={up}\n",
                    up = slot.to_ascii_uppercase()
                ),
            )
            .expect("entry");
        }
        // Its own efivars directory: never the test machine's
        // `LoaderEntryDefault`/`LoaderEntryOneShot`.
        std::fs::create_dir_all(&self.efivars).expect("efivars dir");
        self.set_bootloader_config(&format!(
            "kind = \"systemd-boot\"\nesp = \"{}\"\nefivarfs = \"{}\"\n",
            self.esp.display(),
            self.efivars.display()
        ));
        assert_eq!(self.boot(), "A");
        let out = self.abupdate(&["health"]);
        assert!(
            out.status.success(),
            "first systemd-boot health: {}",
            text(&out)
        );
    }

    /// `bootctl list` of the ESP: per entry (`entry ID`) its source file
    /// name and (`tries ID`) its tries; `default` = the id systemd marks
    /// default.
    pub fn bootctl_list(&self) -> Result<BTreeMap<String, String>, String> {
        let out = Command::new("bootctl")
            .arg(format!("--esp-path={}", self.esp.display()))
            .arg("list")
            .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
            .output()
            .map_err(|e| format!("cannot run bootctl: {e}"))?;
        if !out.status.success() {
            return Err(format!("bootctl list: {:?}: {}", out.status, text(&out)));
        }
        let mut env = BTreeMap::new();
        for block in String::from_utf8_lossy(&out.stdout).split("\n\n") {
            let field = |k: &str| {
                block.lines().find_map(|l| {
                    let (key, v) = l.trim().split_once(':')?;
                    (key.trim() == k).then(|| v.trim().to_string())
                })
            };
            let Some(id) = field("id") else { continue };
            let source = field("source").unwrap_or_default();
            let file = source.rsplit('/').next().unwrap_or_default().to_string();
            if field("title").is_some_and(|t| t.contains("(default)")) {
                env.insert("default".to_string(), id.clone());
            }
            if let Some(t) = field("tries") {
                env.insert(format!("tries {id}"), t);
            }
            env.insert(format!("entry {id}"), file);
        }
        Ok(env)
    }

    /// Our slot's entry (id, file name) in a `bootctl_list` map.
    pub fn sd_entry(env: &BTreeMap<String, String>, slot: &str) -> Option<(String, String)> {
        let tail = format!("-{}.conf", slot.to_ascii_lowercase());
        env.iter().find_map(|(k, v)| {
            let id = k.strip_prefix("entry ")?;
            (id.starts_with("abupdate-") && id.ends_with(&tail))
                .then(|| (id.to_string(), v.clone()))
        })
    }

    /// `efibootmgr -v` on the stand-in: BootOrder, BootNext, BootCurrent,
    /// and `Boot####` → `*description<TAB>device path` (`*`: active).
    pub fn efibootmgr(&self) -> Result<BTreeMap<String, String>, String> {
        let out = Command::new("efibootmgr")
            .arg("-v")
            .env("EFIVARFS_PATH", format!("{}/", self.efivars.display()))
            .output()
            .map_err(|e| format!("cannot run efibootmgr: {e}"))?;
        if !out.status.success() || !out.stderr.is_empty() {
            return Err(format!("efibootmgr: {:?}: {}", out.status, text(&out)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                if let Some((k, v)) = l.split_once(": ") {
                    return Some((k.to_string(), v.to_string()));
                }
                let (k, v) = l.split_at(l.find(['*', ' '])?);
                Some((k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// The slot a boot number's entry is for, by its description.
    pub fn efi_slot(env: &BTreeMap<String, String>, num: &str) -> Option<&'static str> {
        let v = env.get(&format!("Boot{num}"))?;
        let desc = v.trim_start_matches(['*', ' ']).split('\t').next()?.trim();
        match desc {
            "abupdate A" => Some("A"),
            "abupdate B" => Some("B"),
            _ => None,
        }
    }

    pub fn efi_order(env: &BTreeMap<String, String>) -> Vec<String> {
        env.get("BootOrder")
            .map(|o| o.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn switch_to_uboot(&mut self) {
        std::fs::write(&self.uboot_env, vec![0u8; 2 * UBOOT_COPY]).expect("env file");
        std::fs::write(
            &self.fw_conf,
            format!(
                "# abupdate test: redundant env in a file\n{e} 0x0 {UBOOT_COPY:#x}\n{e} {UBOOT_COPY:#x} {UBOOT_COPY:#x}\n",
                e = self.uboot_env.display()
            ),
        )
        .expect("fw_env.config");
        seed_uboot_env(&self.fw_conf);
        let config = std::fs::read_to_string(&self.config).expect("config");
        let grub_lines = format!(
            "kind = \"grub\"\ngrubenv = \"{}\"\n",
            self.grubenv.display()
        );
        assert!(config.contains(&grub_lines), "fixture config changed");
        std::fs::write(
            &self.config,
            config.replace(
                &grub_lines,
                &format!(
                    "kind = \"uboot\"\nfw_env_config = \"{}\"\n",
                    self.fw_conf.display()
                ),
            ),
        )
        .expect("config");
        let _ = std::fs::remove_file(&self.grubenv);
        assert_eq!(self.boot(), "A");
        let out = self.abupdate(&["health"]);
        assert!(out.status.success(), "first U-Boot health: {}", text(&out));
    }

    /// Trust `rel`'s key and make it the configured release; shorten the
    /// health verdict so that a failing trial takes a second.
    pub fn use_release(&mut self, rel: &Release) {
        let url = format!("file://{}", rel.manifest.display());
        self.use_release_at(rel, &url);
    }

    /// Trust `rel`'s key and read it through a release channel of this
    /// host's own: `<host>/rel/channel.json`, the release's files hard
    /// linked into `<host>/rel/r2/` (a channel lists only manifests inside
    /// its directory, and each channel edit holds its directory), written
    /// and signed by the real `abupdate channel` with the release's key.
    /// Returns the channel's path.
    pub fn use_channel(&mut self, rel: &Release) -> PathBuf {
        std::fs::write(&self.public_key, &rel.public_key).expect("trust the release key");
        let from = rel.manifest.parent().expect("the release's directory");
        let to = self.dir.join("rel/r2");
        std::fs::create_dir_all(&to).expect("rel dir");
        for entry in std::fs::read_dir(from).expect("release dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name");
            std::fs::hard_link(&path, to.join(name)).expect("link a release file");
        }
        let channel = self.dir.join("rel/channel.json");
        self.channel_edit(rel, &channel, "add");
        let cfg = std::fs::read_to_string(&self.config)
            .expect("config")
            .replacen(
                "[update]\n",
                &format!("[update]\nchannel = \"{}\"\n", channel.display()),
                1,
            );
        std::fs::write(&self.config, cfg).expect("config");
        channel
    }

    /// `abupdate channel ACTION CHANNEL`: `add` this host's copy of `rel`
    /// (see [`Host::use_channel`]), or `withdraw` its 2.0; signed with the
    /// release's key.
    pub fn channel_edit(&self, rel: &Release, channel: &Path, action: &str) {
        let shared = rel
            .manifest
            .parent()
            .and_then(Path::parent)
            .expect("the release's directory");
        let what = match action {
            "add" => self.dir.join("rel/r2/release.json").into_os_string(),
            _ => "2.0".into(),
        };
        let out = run(Command::new(bin())
            .args(["channel", action])
            .arg(channel)
            .arg(what)
            .arg("--secret")
            .arg(shared.join("release.key")));
        assert!(out.status.success(), "channel {action}: {}", text(&out));
    }

    /// As `use_release`, fetched from `url` (e.g. a server of its directory).
    pub fn use_release_at(&mut self, rel: &Release, url: &str) {
        std::fs::write(&self.public_key, &rel.public_key).expect("trust the release key");
        let cfg = std::fs::read_to_string(&self.config)
            .expect("config")
            .replacen("[update]\n", &format!("[update]\nurl = \"{url}\"\n"), 1)
            .replacen("\ntimeout = \"3s\"\n", "\ntimeout = \"1s\"\n", 1)
            .replacen("check_timeout = \"2s\"", "check_timeout = \"1s\"", 1);
        std::fs::write(&self.config, cfg).expect("config");
    }

    /// The environment as the real tool reads it, or its complaint.
    pub fn try_env(&self) -> Result<BTreeMap<String, String>, String> {
        let out = match self.loader {
            Loader::Efi => return self.efibootmgr(),
            Loader::SystemdBoot => return self.bootctl_list(),
            Loader::Grub => Command::new("grub-editenv")
                .arg(&self.grubenv)
                .arg("list")
                .output(),
            Loader::Uboot => Command::new("fw_printenv")
                .arg("-c")
                .arg(&self.fw_conf)
                .output(),
        }
        .map_err(|e| format!("cannot run the env tool: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("Cannot read environment") {
            return Err(format!("{:?}: {}", out.status, text(&out)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// U-Boot: the copies of the redundant env that are not whole (a bad
    /// CRC), by index; empty on the other loaders (one env, or none).
    /// A torn write may leave one bad for a while (readers use the other);
    /// the next write must land on it.
    pub fn torn_uboot_copies(&self) -> Vec<usize> {
        if self.loader != Loader::Uboot {
            return Vec::new();
        }
        let raw = std::fs::read(&self.uboot_env).expect("env");
        (0..2)
            .filter(|i| {
                let copy = &raw[i * UBOOT_COPY..(i + 1) * UBOOT_COPY];
                abupdate::boot::ubootenv::UbootEnv::decode_copy(copy, true).is_err()
            })
            .collect()
    }

    pub fn env(&self) -> BTreeMap<String, String> {
        self.try_env()
            .unwrap_or_else(|e| panic!("{} env unreadable: {e}", self.loader.name()))
    }

    fn set(&self, vars: &[(&str, &str)]) {
        match self.loader {
            Loader::Efi | Loader::SystemdBoot => unreachable!("no env variables to set"),
            Loader::Grub => self.h.grub_set(vars),
            Loader::Uboot => {
                for (k, v) in vars {
                    let out = Command::new("fw_setenv")
                        .arg("-c")
                        .arg(&self.fw_conf)
                        .args([k, v])
                        .output()
                        .expect("fw_setenv");
                    assert!(out.status.success(), "fw_setenv: {}", text(&out));
                }
            }
        }
    }

    /// Whether the bootloader would consider `slot` at all.
    pub fn bootable(&self, slot: &str) -> bool {
        let env = self.env();
        match self.loader {
            Loader::Grub => {
                env.get(&format!("{slot}_OK")).map(String::as_str) == Some("1")
                    && env.get(&format!("{slot}_TRY")).map(String::as_str) != Some("1")
            }
            Loader::Uboot => {
                uboot_order(&env).iter().any(|s| s == slot) && uboot_left(&env, slot) > 0
            }
            Loader::Efi => {
                let ours = |n: &String| Self::efi_slot(&env, n) == Some(slot_name(slot));
                Self::efi_order(&env).iter().any(ours) || env.get("BootNext").is_some_and(ours)
            }
            Loader::SystemdBoot => match Self::sd_entry(&env, slot) {
                Some((id, _)) => env
                    .get(&format!("tries {id}"))
                    .is_none_or(|t| !t.starts_with("0 left")),
                None => false,
            },
        }
    }

    /// The slot the bootloader boots next, without changing the env.
    /// GRUB: `common::grub`'s model of our `grub.cfg`; `None` when no slot
    /// is OK at all (the script then boots the first of ORDER blindly:
    /// never a safe state). U-Boot: `boot.cmd`.
    pub fn primary(&self) -> Option<&'static str> {
        let env = self.env();
        match self.loader {
            Loader::Grub => crate::common::grub::primary(&env),
            Loader::Uboot => {
                let order = uboot_order(&env);
                order
                    .iter()
                    .find(|s| uboot_left(&env, s) > 0)
                    .or(order.first())
                    .map(|s| slot_name(s))
            }
            Loader::Efi => self.efi_next(&env).and_then(|n| Self::efi_slot(&env, &n)),
            Loader::SystemdBoot => {
                let id = env.get("default")?;
                ["A", "B"]
                    .into_iter()
                    .find(|s| Self::sd_entry(&env, s).is_some_and(|(i, _)| &i == id))
            }
        }
    }

    /// What the UEFI boot manager boots next: BootNext, else the first
    /// BootOrder entry that exists and is active.
    fn efi_next(&self, env: &BTreeMap<String, String>) -> Option<String> {
        if let Some(n) = env.get("BootNext") {
            return Some(n.clone());
        }
        Self::efi_order(env).into_iter().find(|n| {
            env.get(&format!("Boot{n}"))
                .is_some_and(|v| v.starts_with('*'))
        })
    }

    /// EFI: someone at the console picks `slot`'s entry in the firmware's
    /// boot menu: booted, `BootCurrent` names it, `BootNext` and
    /// `BootOrder` untouched (the firmware does not change them for a
    /// menu pick).
    pub fn pick_in_boot_menu(&mut self, slot: &'static str) {
        use abupdate::boot::efivar::GLOBAL_GUID;
        assert_eq!(self.loader, Loader::Efi, "a firmware boot menu is EFI's");
        let env = self.env();
        let num = Self::efi_order(&env)
            .into_iter()
            .chain(
                env.keys()
                    .filter_map(|k| k.strip_prefix("Boot"))
                    .map(str::to_string),
            )
            .find(|n| Self::efi_slot(&env, n) == Some(slot))
            .unwrap_or_else(|| panic!("no entry for slot {slot}: {env:?}"));
        let n = u16::from_str_radix(&num, 16).expect("boot number");
        self.efi_vars()
            .set("BootCurrent", GLOBAL_GUID, 0x6, &n.to_le_bytes())
            .expect("BootCurrent");
        self.h.boot_as(slot);
    }

    /// Play the bootloader: pick, record the attempt, boot.
    pub fn boot(&mut self) -> &'static str {
        let slot = self.hang().unwrap_or_else(|e| panic!("{e}"));
        self.h.boot_as(slot);
        slot
    }

    /// Play the bootloader up to the hand-over, and no further: pick and
    /// record the attempt as [`Host::boot`] does (GRUB's and U-Boot's
    /// counters, `BootNext` consumed and `BootCurrent` set, the entry's
    /// counter renamed), then nothing comes up (a kernel that hangs before
    /// userspace, a reset by the watchdog): the slot picked, or why none
    /// was (EFI: the firmware boots an entry that is not a slot).
    pub fn hang(&mut self) -> Result<&'static str, String> {
        match self.loader {
            Loader::Efi => {
                use abupdate::boot::efivar::GLOBAL_GUID;
                let env = self.env();
                let num = self
                    .efi_next(&env)
                    .ok_or_else(|| format!("the firmware finds nothing to boot: {env:?}"))?;
                let slot = Self::efi_slot(&env, &num)
                    .ok_or_else(|| format!("the firmware boots Boot{num}, not a slot: {env:?}"))?;
                let vars = self.efi_vars();
                // The boot manager deletes BootNext before it boots it.
                vars.delete("BootNext", GLOBAL_GUID)
                    .expect("delete BootNext");
                let n = u16::from_str_radix(&num, 16).expect("boot number");
                vars.set("BootCurrent", GLOBAL_GUID, 0x6, &n.to_le_bytes())
                    .expect("BootCurrent");
                Ok(slot)
            }
            Loader::SystemdBoot => {
                let env = self.env();
                let slot = self
                    .primary()
                    .ok_or_else(|| format!("no default entry: {env:?}"))?;
                let (_, file) = Self::sd_entry(&env, slot).expect("entry");
                // systemd-boot renames a counted entry before booting it.
                let (base, counter) = abupdate::boot::systemd_boot::split_counter(&file, ".conf");
                if let Some((left, done)) = counter {
                    let dir = self.esp.join("loader/entries");
                    let next = format!("{base}+{}-{}.conf", left.saturating_sub(1), done + 1);
                    std::fs::rename(dir.join(&file), dir.join(next)).expect("bump counter");
                }
                Ok(slot)
            }
            Loader::Grub => {
                let choice = crate::common::grub::choose(&self.env());
                let writes: Vec<(&str, &str)> = choice
                    .writes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !writes.is_empty() {
                    self.set(&writes);
                }
                Ok(choice.slot)
            }
            Loader::Uboot => {
                let env = self.env();
                let order = uboot_order(&env);
                match order.iter().find(|s| uboot_left(&env, s) > 0) {
                    Some(s) => {
                        let left = uboot_left(&env, s) - 1;
                        let s = slot_name(s);
                        self.set(&[(&format!("BOOT_{s}_LEFT"), &format!("{left:x}"))]);
                        Ok(s)
                    }
                    None => {
                        // No attempts anywhere: reset both to 3, restart.
                        self.set(&[("BOOT_A_LEFT", "3"), ("BOOT_B_LEFT", "3")]);
                        self.hang()
                    }
                }
            }
        }
    }
}
