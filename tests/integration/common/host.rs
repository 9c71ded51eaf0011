//! A test host: config, keys, two slots (regular files or loop devices), a
//! grubenv read by the real `grub-editenv`, the host facts as files, and a
//! reboot command that records its call. `boot()` plays the bootloader's
//! part with the one model of our GRUB script (`common::grub`), so a whole update loop
//! runs without a VM; the VM test runs the real GRUB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const COMPATIBLE: &str = "abupdate-test";

/// What a refused command must leave as it was: the boot env, the booted
/// slot's bytes, and the reboots requested so far.
pub struct Untouched {
    pub env: std::collections::BTreeMap<String, String>,
    slot_a: String,
    reboots: usize,
}

/// SHA-256 of `data`, in lowercase hex (as manifests and `state.json` hold it).
pub fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_abupdate")
}

/// The error lines of `stderr` (not the progress line saying what is
/// being written, nor a warning about the config).
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.starts_with("abupdate: ")
                && !l.contains("writing")
                && !l.starts_with("abupdate: warning: ")
        })
        .collect()
}

/// Run a command and return its output, panicking only if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The one directory this test process writes its files under:
/// `$TMPDIR/abupdate-it-<pid>`, removed when the process exits, however the
/// tests ended (passed, failed or panicked; not when killed). Each test's
/// directories go earlier with their owners (`TestHost`, `Nginx`); the
/// process-wide fixtures (`loaders`' shared releases) only here. Before, a
/// run left about 130 MB in /tmp.
pub fn scratch_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    extern "C" fn remove_root() {
        if let Some(d) = ROOT.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    ROOT.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("abupdate-it-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the test process's scratch root");
        // SAFETY: registers a C-ABI function without arguments that cannot
        // unwind (it ignores every error); the C library runs it at exit.
        let rc = unsafe { nix::libc::atexit(remove_root) };
        assert_eq!(rc, 0, "atexit");
        d
    })
}

/// A fresh scratch directory under [`scratch_root`], unique in the process
/// (all tests share one: two modules may pick the same `name`).
pub fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = scratch_root().join(format!("{name}-{n}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Every file of directory `dir` with its bytes: what a refused command
/// must leave as it was. A directory not there holds no files (a refused
/// `pack --out NEW` makes none).
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    entries
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

/// Every signature file of manifest `m`: `release.json.minisig`,
/// `release.json.N.minisig` and the ones bound to a manifest's bytes
/// (`release.json.<tag>[.N].minisig`, see `abupdate::publish`).
pub fn signature_files(m: &Path) -> Vec<PathBuf> {
    let name = m.file_name().map(|n| n.to_string_lossy().into_owned());
    let prefix = format!("{}.", name.unwrap_or_default());
    let dir = m.parent().expect("manifest dir");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("release dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".minisig"))
        })
        .collect();
    out.sort();
    out
}

/// Where the frame of segment `index` of the rootfs lies in its payload,
/// and its signed BLAKE3, as the manifest at `m` says: (offset, length,
/// digest).
pub fn segment_frame(m: &Path, index: usize) -> (u64, u64, Option<String>) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("json");
    let seg = &v["images"]["rootfs"]["segments"][index];
    (
        seg["patch_offset"].as_u64().expect("patch_offset"),
        seg["patch_length"].as_u64().expect("patch_length"),
        seg["patch_blake3"].as_str().map(str::to_string),
    )
}

/// A synthetic image whose first line names its version, so `boot()` can
/// read "os-release" from the slot's own bytes.
pub fn image(version: &str, len: usize) -> Vec<u8> {
    let mut v = format!("IMAGE_VERSION={version}\n").into_bytes();
    let mut x: u32 = version
        .bytes()
        .fold(2166136261, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Compressible but not trivial: runs of repeated pseudo-random bytes.
        let run = (x % 64) as usize + 1;
        let byte = (x >> 8) as u8;
        v.extend(std::iter::repeat_n(byte, run.min(len - v.len())));
    }
    v
}

pub struct TestHost {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub secret_key: PathBuf,
    pub public_key: PathBuf,
    pub slots: [PathBuf; 2],
    pub grubenv: PathBuf,
    pub cmdline: PathBuf,
    pub os_release: PathBuf,
    pub boot_id: PathBuf,
    pub reboot_log: PathBuf,
    pub state_dir: PathBuf,
    pub health_dir: PathBuf,
    loops: Vec<String>,
    boots: u32,
}

pub struct HostOptions {
    pub slot_size: u64,
    pub loop_devices: bool,
    pub extra_config: String,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            slot_size: 8 << 20,
            loop_devices: false,
            extra_config: String::new(),
        }
    }
}

impl TestHost {
    /// A host booted from slot A holding `version`, committed.
    pub fn new(name: &str, booted_version: &str, opts: HostOptions) -> TestHost {
        let dir = scratch(name);
        let mut slots = [dir.join("slot-a.img"), dir.join("slot-b.img")];
        let mut loops = Vec::new();
        for (i, s) in slots.clone().iter().enumerate() {
            let f = std::fs::File::create(s).expect("slot file");
            f.set_len(opts.slot_size).expect("slot size");
            if opts.loop_devices {
                let out = run(Command::new("losetup").args(["-f", "--show"]).arg(s));
                assert!(out.status.success(), "losetup: {}", text(&out));
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                loops.push(dev.clone());
                slots[i] = PathBuf::from(dev);
            }
        }
        let secret_key = dir.join("release.key");
        let public_key = dir.join("keys/release.pub");
        std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
        keygen(&secret_key, &public_key);
        let health_dir = dir.join("health.d");
        std::fs::create_dir_all(&health_dir).expect("health dir");
        let reboot_log = dir.join("reboots.log");
        let reboot = dir.join("reboot.sh");
        sh_script(&reboot, &format!("echo reboot >> {}", reboot_log.display()));
        let host = TestHost {
            config: dir.join("config.toml"),
            grubenv: dir.join("grubenv"),
            cmdline: dir.join("cmdline"),
            os_release: dir.join("os-release"),
            boot_id: dir.join("boot_id"),
            state_dir: dir.join("state"),
            secret_key,
            public_key,
            slots,
            reboot_log,
            health_dir,
            loops,
            boots: 0,
            dir,
        };
        let config = format!(
            r#"[update]
compatible = "{COMPATIBLE}"
state_dir = "{state}"
keys_dirs = ["{keys}"]
read_timeout = "5s"
connect_timeout = "5s"

[system]
cmdline = "{cmdline}"
os_release = "{os_release}"
machine_id = "{dir}/machine-id"
boot_id = "{boot_id}"
uptime = "{dir}/uptime"
reboot = ["{reboot}"]

[bootloader]
kind = "grub"
grubenv = "{grubenv}"

[slots.A]
rootfs = "{a}"
[slots.B]
rootfs = "{b}"

[health]
dir = "{health}"
timeout = "3s"
check_timeout = "2s"
interval = "1s"
{extra}
"#,
            state = host.state_dir.display(),
            keys = host.dir.join("keys").display(),
            cmdline = host.cmdline.display(),
            os_release = host.os_release.display(),
            dir = host.dir.display(),
            boot_id = host.boot_id.display(),
            reboot = reboot.display(),
            grubenv = host.grubenv.display(),
            a = host.slots[0].display(),
            b = host.slots[1].display(),
            health = host.health_dir.display(),
            extra = opts.extra_config,
        );
        std::fs::write(&host.config, config).expect("config");
        std::fs::write(
            host.dir.join("machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .expect("machine-id");
        // Slot A holds the booted release; GRUB's env says A is good and first.
        let img = image(booted_version, 4096);
        write_at_start(&host.slots[0], &img);
        let out = run(Command::new("grub-editenv")
            .arg(&host.grubenv)
            .arg("create"));
        assert!(out.status.success(), "grub-editenv create: {}", text(&out));
        host.grub_set(&[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        let mut host = host;
        host.boot();
        // Every boot runs the health service: it re-blesses the booted slot.
        let out = host.abupdate(&["health"]);
        assert!(out.status.success(), "first health: {}", text(&out));
        host
    }

    /// Run abupdate with this host's config.
    pub fn abupdate(&self, args: &[&str]) -> Output {
        self.abupdate_env(args, &[])
    }

    pub fn abupdate_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&self.config).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// Run `body` (sh) as the `post_install` hook: after the slot is
    /// written, before it is staged and rebooted into, so what it does
    /// happens during the install (an operator pulling the release).
    pub fn post_install_hook(&self, body: &str) {
        let hook = self.dir.join("post-install");
        std::fs::write(&hook, format!("#!/bin/sh\n{body}\n")).expect("hook");
        chmod_x(&hook);
        let cfg = std::fs::read_to_string(&self.config).expect("config");
        let hooks = format!("{cfg}\n[hooks]\npost_install = \"{}\"\n", hook.display());
        std::fs::write(&self.config, hooks).expect("config");
    }

    /// Rewrite the manifest at `m` with `edit` (on its JSON value, then
    /// serialised compactly, or the text it returns) and sign it again with
    /// the release key: a release engineer's edit, validly signed.
    pub fn resign(&self, m: &Path, edit: impl FnOnce(&mut serde_json::Value) -> Option<String>) {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("json");
        let body = edit(&mut v).unwrap_or_else(|| v.to_string());
        std::fs::write(m, body).expect("write manifest");
        let out = self.abupdate(&[
            "sign",
            "--secret",
            self.secret_key.to_str().expect("p"),
            m.to_str().expect("p"),
        ]);
        assert!(out.status.success(), "sign: {}", text(&out));
    }

    /// Pack `image` as release `version` into `<dir>/<name>/`.
    pub fn pack(&self, name: &str, version: &str, image: &[u8], extra: &[&str]) -> PathBuf {
        let (manifest, out) = self.pack_output(name, version, image, extra);
        assert!(out.status.success(), "pack: {}", text(&out));
        manifest
    }

    /// [`TestHost::pack`], returning `pack`'s output as well (its notes),
    /// whether it succeeded or not.
    pub fn pack_output(
        &self,
        name: &str,
        version: &str,
        image: &[u8],
        extra: &[&str],
    ) -> (PathBuf, std::process::Output) {
        let out_dir = self.dir.join(name);
        let img = self.dir.join(format!("{name}.raw"));
        std::fs::write(&img, image).expect("image");
        let mut c = Command::new(bin());
        c.args(["pack", "--secret"])
            .arg(&self.secret_key)
            .args(["--version", version])
            .args(defaults_unless_given(
                &[("--compatible", COMPATIBLE), ("--level", "3")],
                extra,
            ))
            .arg(format!("--image=rootfs={}", img.display()))
            .arg("--out")
            .arg(&out_dir)
            .args(extra);
        (out_dir.join("release.json"), run(&mut c))
    }

    pub fn grub_vars(&self) -> std::collections::BTreeMap<String, String> {
        let out = run(Command::new("grub-editenv").arg(&self.grubenv).arg("list"));
        assert!(out.status.success(), "grub-editenv list: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    pub fn grub_set(&self, vars: &[(&str, &str)]) {
        let mut c = Command::new("grub-editenv");
        c.arg(&self.grubenv).arg("set");
        for (k, v) in vars {
            c.arg(format!("{k}={v}"));
        }
        let out = run(&mut c);
        assert!(out.status.success(), "grub-editenv set: {}", text(&out));
    }

    /// Play GRUB: one boot through `grub.cfg` as [`crate::common::grub`]
    /// models it (its flags written back), then "boot" that slot: the
    /// cmdline names it, os-release comes from its bytes, and the boot id
    /// changes. Returns the slot booted.
    pub fn boot(&mut self) -> &'static str {
        let choice = crate::common::grub::choose(&self.grub_vars());
        if !choice.writes.is_empty() {
            let writes: Vec<(&str, &str)> = choice
                .writes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.grub_set(&writes);
        }
        self.boot_as(choice.slot);
        choice.slot
    }

    /// Boot `slot` regardless of the env (what a fallback or a manual pick does).
    pub fn boot_as(&mut self, slot: &str) {
        self.boots += 1;
        std::fs::write(
            &self.cmdline,
            format!("root=/dev/x ro abupdate.slot={slot} quiet\n"),
        )
        .expect("cmdline");
        let idx = if slot == "B" { 1 } else { 0 };
        let version = slot_version(&self.slots[idx]).unwrap_or_default();
        std::fs::write(
            &self.os_release,
            format!("ID=test\nIMAGE_VERSION={version}\n"),
        )
        .expect("os-release");
        std::fs::write(
            &self.boot_id,
            format!("boot-{}-{}\n", std::process::id(), self.boots),
        )
        .expect("boot id");
        // Up for a few seconds when abupdate first runs on this boot.
        self.set_uptime(10);
    }

    /// This boot has been up `secs` seconds (`[system] uptime`, as
    /// `/proc/uptime` reads): what a probation's window is counted in.
    pub fn set_uptime(&self, secs: u64) {
        std::fs::write(self.dir.join("uptime"), format!("{secs}.42 {secs}.00\n")).expect("uptime");
    }

    /// Snapshot what a refusal must not change (see [`Untouched`]).
    pub fn untouched(&self) -> Untouched {
        Untouched {
            env: self.grub_vars(),
            slot_a: self.slot_sha(0),
            reboots: self.reboots(),
        }
    }

    /// Refused before a byte of the target (slot B) was written: it was
    /// never marked bad, and nothing is pending.
    pub fn assert_target_never_marked_bad(&self, before: &Untouched) {
        assert_eq!(
            self.grub_vars().get("B_OK"),
            before.env.get("B_OK"),
            "the target was marked bad"
        );
        assert_ne!(self.state()["slots"]["B"]["status"], "bad");
        assert!(
            self.state()["transaction"].is_null(),
            "transaction left pending"
        );
    }

    /// The payload was written (in part) and found wrong: the target (slot
    /// B) stays marked bad, and nothing is pending.
    pub fn assert_target_bad(&self) {
        assert_eq!(
            self.grub_vars().get("B_OK").map(String::as_str),
            Some("0"),
            "target not marked bad"
        );
        assert_eq!(self.state()["slots"]["B"]["status"], "bad");
        assert!(
            self.state()["transaction"].is_null(),
            "transaction left pending"
        );
    }

    /// The boot order and the booted slot's flags, its bytes, and the
    /// reboots requested are as in `before`; `what` names the case.
    pub fn assert_untouched(&self, before: &Untouched, what: &str) {
        let env = self.grub_vars();
        for var in ["ORDER", "A_OK", "A_TRY"] {
            assert_eq!(env.get(var), before.env.get(var), "{what}: {var} changed");
        }
        assert_eq!(
            self.slot_sha(0),
            before.slot_a,
            "{what}: the booted slot's bytes changed"
        );
        assert_eq!(
            self.reboots(),
            before.reboots,
            "{what}: a reboot was requested"
        );
    }

    /// SHA-256 (hex) of slot `i`'s whole device or file.
    pub fn slot_sha(&self, i: usize) -> String {
        sha(&std::fs::read(&self.slots[i]).expect("read slot"))
    }

    pub fn reboots(&self) -> usize {
        std::fs::read_to_string(&self.reboot_log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_dir.join("state.json"))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).expect("state.json parses")
    }

    /// Slot B holds a good older system (0.9), as a board provisioned
    /// with both slots has it: the bootloader holds it good and the state
    /// records it committed. (`mark-good B --force` set this up before; it
    /// no longer vouches for a slot the records show empty.)
    pub fn b_holds_older_system(&self) {
        self.grub_set(&[("B_OK", "1"), ("B_TRY", "0")]);
        self.edit_state(|s| {
            if s.get("format").is_none() {
                s["format"] = 1.into();
            }
            s["slots"]["B"] = serde_json::json!({"status": "good", "version": "0.9"});
        });
    }

    /// Rewrite `state.json` through `edit` (what another build wrote).
    pub fn edit_state(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut s = self.state();
        edit(&mut s);
        std::fs::write(
            self.state_dir.join("state.json"),
            serde_json::to_vec(&s).expect("json"),
        )
        .expect("state");
    }

    pub fn slot_bytes(&self, slot: usize, len: usize) -> Vec<u8> {
        let mut f = std::fs::File::open(&self.slots[slot]).expect("open slot");
        let mut buf = vec![0u8; len];
        std::io::Read::read_exact(&mut f, &mut buf).expect("read slot");
        buf
    }

    /// A second class for a multi-image release (a boot image beside the
    /// rootfs): a `size`-byte file as its device in each slot, configured
    /// next to the slot's rootfs. Returns slot A's and slot B's.
    pub fn add_class(&self, class: &str, size: u64) -> [PathBuf; 2] {
        let devices = ["a", "b"].map(|s| self.dir.join(format!("{class}-{s}.img")));
        let mut cfg = std::fs::read_to_string(&self.config).expect("config");
        for (slot, dev) in self.slots.iter().zip(&devices) {
            let f = std::fs::File::create(dev).expect("class device");
            f.set_len(size).expect("class device size");
            let line = format!("rootfs = \"{}\"\n", slot.display());
            assert!(cfg.contains(&line), "fixture changed");
            cfg = cfg.replace(&line, &format!("{line}{class} = \"{}\"\n", dev.display()));
        }
        std::fs::write(&self.config, cfg).expect("config");
        devices
    }

    /// What `abupdate-shutdown-mark.service` does at an orderly shutdown:
    /// write this boot's id as the clean-shutdown mark.
    pub fn shut_down_cleanly(&self) {
        let id = std::fs::read_to_string(&self.boot_id).expect("boot id");
        std::fs::write(self.state_dir.join("shutdown-mark"), id).expect("shutdown mark");
    }

    /// The orderly reboot into the trial of `version` staged in slot B, and
    /// `health` committing it onto its probation (`[health] probation`).
    pub fn commit_trial_on_probation(&mut self, version: &str) {
        self.shut_down_cleanly();
        assert_eq!(self.boot(), "B");
        let out = self.abupdate(&["health"]);
        let committed = format!("committed {version}");
        assert!(text(&out).contains(&committed), "{}", text(&out));
        assert_eq!(self.state()["probation"]["version"], version);
    }

    /// One daily maintenance window (`[[reboot.window]]`, two hours, UTC)
    /// that is open now, or certainly closed (it opens twelve hours after
    /// the current hour began); the window set before is replaced.
    pub fn set_reboot_window(&self, open: bool) {
        let hour = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 3600
            % 24;
        let window = |start: u64| {
            format!(
                "[[reboot.window]]\ndays = [\"*\"]\nstart = \"{start:02}:00\"\nlength = \"2h\"\n"
            )
        };
        let (now_open, closed) = (window(hour), window((hour + 12) % 24));
        let cfg = std::fs::read_to_string(&self.config).expect("config");
        let cfg = cfg.replace(&now_open, "").replace(&closed, "");
        let wanted = if open { now_open } else { closed };
        std::fs::write(&self.config, format!("{cfg}\n{wanted}")).expect("config");
    }

    /// `[system] reboot` runs `program` instead of the fixture's script.
    pub fn set_reboot_command(&self, program: &Path) {
        let cfg = std::fs::read_to_string(&self.config).expect("config");
        let line = cfg
            .lines()
            .find(|l| l.starts_with("reboot = "))
            .expect("reboot line")
            .to_string();
        let cfg = cfg.replace(&line, &format!("reboot = [\"{}\"]", program.display()));
        std::fs::write(&self.config, cfg).expect("config");
    }

    pub fn add_health_check(&self, name: &str, body: &str) {
        sh_script(&self.health_dir.join(name), body);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for l in &self.loops {
            let _ = Command::new("losetup").arg("-d").arg(l).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A host booted into a trial of 2.0 in slot B, `health` not run yet;
/// `health_config` is merged over the host's `[health]` (a drop-in).
pub fn host_on_trial(name: &str, health_config: &str) -> TestHost {
    let mut h = TestHost::new(name, "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let out = h.abupdate(&["install", m.to_str().expect("utf8 path")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "B");
    let dropins = h.dir.join("config.d");
    std::fs::create_dir_all(&dropins).expect("config.d");
    std::fs::write(
        dropins.join("50-health.toml"),
        format!("[health]\n{health_config}"),
    )
    .expect("drop-in");
    h
}

/// RFC 3339 UTC (what `created` and `expires` hold) of Unix seconds `t`.
pub fn date(t: i64) -> String {
    // RFC 3339 UTC from Unix seconds (days from civil, Howard Hinnant).
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The clock, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// An executable `sh` script at `p` running `body`.
pub fn sh_script(p: &Path, body: &str) {
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).expect("script");
    chmod_x(p);
}

/// A `systemctl` stand-in in `dir/bin` that logs each call's arguments to
/// `dir/systemctl.log` and passes: (that log, a `PATH` that finds it first).
pub fn logging_systemctl(dir: &Path) -> (PathBuf, String) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let asked = dir.join("systemctl.log");
    sh_script(
        &bin.join("systemctl"),
        &format!("echo \"$*\" >> {}", asked.display()),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (asked, path)
}

/// A new key pair from `abupdate keygen`: the secret key at `secret`, the
/// public one at `public`.
pub fn keygen(secret: &Path, public: &Path) {
    let out = run(Command::new(bin())
        .arg("keygen")
        .arg("--secret")
        .arg(secret)
        .arg("--public")
        .arg(public));
    assert!(out.status.success(), "keygen: {}", text(&out));
}

/// Each `(flag, value)` of `defaults` that `given` does not set itself
/// (as `--flag V` or `--flag=V`): a flag is given once.
pub fn defaults_unless_given(defaults: &[(&str, &str)], given: &[&str]) -> Vec<String> {
    defaults
        .iter()
        .filter(|(flag, _)| {
            !given
                .iter()
                .any(|g| g == flag || g.starts_with(&format!("{flag}=")))
        })
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

pub fn chmod_x(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub fn write_at_start(path: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open slot for seeding");
    f.write_all_at(data, 0).expect("seed slot");
    f.sync_all().expect("sync");
}

/// The version named in the first line of a slot's bytes.
pub fn slot_version(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = [0u8; 64];
    std::io::Read::read_exact(&mut f, &mut buf).ok()?;
    let line = buf.split(|&b| b == b'\n').next()?;
    String::from_utf8_lossy(line)
        .strip_prefix("IMAGE_VERSION=")
        .map(str::to_string)
}

/// Run abupdate `args` with the config `config`, killed after 10 s: its
/// exit code (None when it had to be killed) and stderr.
pub fn bounded(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("abupdate");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err);
            return (status.code(), err);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Put a FIFO at `path` for the length of `f`, then the file back.
pub fn with_fifo(path: &Path, f: impl FnOnce()) {
    let saved = std::fs::read(path).ok();
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    f();
    std::fs::remove_file(path).expect("remove the FIFO");
    if let Some(bytes) = saved {
        std::fs::write(path, bytes).expect("put the file back");
    }
}
