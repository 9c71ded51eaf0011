//! The systemd-boot backend against the real systemd tooling: for a table
//! of entry sets (generations, counters, `loader.conf` defaults) our
//! choice of the next boot is the entry `bootctl list` marks default; a
//! slot's kernel, an image class installed as a file on the ESP, is the old
//! or the new file at every crash point of an update, never missing or
//! partial; and a slot entry missing from the ESP is written from config.
//! The ESP is a tmpfs mount (the root of a file system, which `bootctl`
//! requires; this kernel has no vfat).

use crate::common::loaders;

use crate::common::host::{image, run, scratch, sha, text, HostOptions};
use crate::common::loaders::{Host, Loader};
use abupdate::boot::systemd_boot::{entry_name, parse_entry};
use abupdate::slot::SlotName::{self, A, B};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const IMAGE_LEN: usize = 3 << 20;

/// A tmpfs mounted at `dir`, unmounted on drop.
struct Esp {
    dir: std::path::PathBuf,
}

impl Esp {
    fn new(dir: &Path) -> Esp {
        std::fs::create_dir_all(dir).expect("esp dir");
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir));
        assert!(out.status.success(), "mount: {}", text(&out));
        Esp {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Esp {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

fn bootctl_default(esp: &Path) -> Option<String> {
    let out = run(Command::new("bootctl")
        .arg(format!("--esp-path={}", esp.display()))
        .arg("list")
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1"));
    assert!(out.status.success(), "bootctl list: {}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing.split("\n\n").find_map(|block| {
        let default = block
            .lines()
            .any(|l| l.trim().starts_with("title:") && l.contains("(default)"));
        let source = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("source:"))?;
        default.then(|| source.trim().rsplit('/').next().unwrap_or("").to_string())
    })
}

/// One row: the entry files on the ESP, `loader.conf`'s default, the
/// `LoaderEntryDefault` variable, and the slot that boots next (`None`:
/// another OS's entry).
type SelectCase = (
    Vec<String>,
    Option<&'static str>,
    Option<&'static str>,
    Option<SlotName>,
);

#[test]
fn our_next_boot_is_the_entry_bootctl_marks_default() {
    use abupdate::boot::systemd_boot::SystemdBootBackend;
    use abupdate::boot::Bootloader;
    let dir = scratch("sdboot-select");
    let esp = Esp::new(&dir.join("esp"));
    let entries = esp.dir.join("loader/entries");
    let efivars = dir.join("efivars");
    let e = |g: u64, s: SlotName, c: Option<(u64, u64)>| entry_name("abupdate", g, s, c);
    // Another OS's entry; its id sorts after ours.
    let other = || "aaa-other.conf".to_string();
    let cases: Vec<SelectCase> = vec![
        (
            vec![e(1, A, None), e(0, B, Some((0, 0)))],
            None,
            None,
            Some(A),
        ),
        (
            vec![e(1, A, None), e(2, B, Some((3, 0)))],
            None,
            None,
            Some(B),
        ),
        (
            vec![e(1, A, None), e(2, B, Some((0, 1)))],
            Some("abupdate-*"),
            None,
            Some(A),
        ),
        (
            vec![e(9, A, None), e(10, B, Some((1, 2)))],
            Some("abupdate-*"),
            None,
            Some(B),
        ),
        (
            vec![e(11, A, Some((2, 1))), e(10, B, None)],
            None,
            None,
            Some(A),
        ),
        (
            vec![e(3, A, Some((0, 3))), e(2, B, Some((0, 1)))],
            None,
            None,
            Some(A),
        ),
        // A default pinned to one slot picks it even when bad: what the
        // backend must never write, shown here as systemd behaves.
        (
            vec![e(1, A, None), e(2, B, Some((0, 1)))],
            Some("abupdate-*-b*"),
            None,
            Some(B),
        ),
        // A stale default (its entry removed) matches nothing: skipped,
        // the first entry boots.
        (
            vec![e(1, A, None), e(2, B, Some((3, 0))), other()],
            Some("abupdate-1-a.conf.old"),
            None,
            Some(B),
        ),
        // One matching another OS's entry pins it.
        (
            vec![e(1, A, None), e(2, B, Some((3, 0))), other()],
            Some("aaa-*"),
            None,
            None,
        ),
        // A stale `LoaderEntryDefault` is skipped too: loader.conf
        // decides, or the first entry. (bootctl in a container reads no EFI
        // variable: it agrees with systemd-boot here because systemd-boot
        // ignores the stale one.)
        (
            vec![e(1, A, None), e(2, B, Some((0, 1))), other()],
            Some("abupdate-*"),
            Some("old-os.conf"),
            Some(A),
        ),
        (
            vec![e(1, A, None), e(2, B, Some((3, 0)))],
            None,
            Some("old-os.conf"),
            Some(B),
        ),
        // A `LoaderEntryDefault` matching another OS's entry pins it
        // (over loader.conf); bootctl cannot see the variable here, so only
        // our choice is checked.
        (
            vec![e(1, A, None), e(2, B, Some((3, 0))), other()],
            Some("abupdate-*"),
            Some("aaa-other.conf"),
            None,
        ),
    ];
    for (i, (names, default, var, want)) in cases.iter().enumerate() {
        let _ = std::fs::remove_dir_all(esp.dir.join("loader"));
        let _ = std::fs::remove_dir_all(&efivars);
        std::fs::create_dir_all(&entries).expect("entries");
        std::fs::create_dir_all(&efivars).expect("efivars");
        std::fs::create_dir_all(esp.dir.join("k")).expect("k");
        std::fs::write(esp.dir.join("k/linux"), b"MZ").expect("kernel");
        std::fs::write(
            esp.dir.join("loader/loader.conf"),
            match default {
                Some(d) => format!("default {d}\n"),
                None => String::new(),
            },
        )
        .expect("loader.conf");
        for n in names {
            std::fs::write(entries.join(n), "title t\nlinux /k/linux\n").expect("entry");
        }
        if let Some(v) = var {
            set_loader_entry_default(&abupdate::boot::efivar::EfiVars::new(efivars.clone()), v);
        }
        let backend =
            SystemdBootBackend::new(esp.dir.clone(), "abupdate".into(), 3, Default::default())
                .with_efivars(efivars.clone());
        let ours = backend.primary().expect("primary");
        assert_eq!(ours, *want, "case {i}: {names:?} {default:?} {var:?}");
        let foreign_var = var.is_some_and(|v| names.iter().any(|n| n.as_str() == v));
        if foreign_var {
            continue;
        }
        let theirs = bootctl_default(&esp.dir)
            .and_then(|f| parse_entry("abupdate", &f))
            .map(|e| e.slot);
        assert_eq!(
            theirs, ours,
            "case {i}: bootctl disagrees: {names:?} {default:?} {var:?}"
        );
    }
    drop(esp);
    let _ = std::fs::remove_dir_all(&dir);
}

fn kernel(version: &str) -> Vec<u8> {
    image(&format!("kernel-{version}"), 700 << 10)
}

/// A systemd-boot host whose slots also have a `kernel` class: a file on
/// the ESP; release 2.0 carries both classes.
fn kernel_host(name: &str) -> Host {
    let h = loaders::small_host(name, Loader::SystemdBoot, IMAGE_LEN);
    for slot in ["a", "b"] {
        std::fs::write(h.esp.join(format!("abupdate/{slot}/linux")), kernel("1.0"))
            .expect("old kernel");
    }
    let mut cfg = std::fs::read_to_string(&h.config).expect("config");
    for (i, slot) in ["a", "b"].into_iter().enumerate() {
        let line = format!("rootfs = \"{}\"\n", h.slots[i].display());
        assert!(cfg.contains(&line), "fixture changed");
        cfg = cfg.replace(
            &line,
            &format!(
                "{line}kernel = \"{}\"\n",
                h.esp.join(format!("abupdate/{slot}/linux")).display()
            ),
        );
    }
    std::fs::write(&h.config, cfg).expect("config");
    let kfile = h.dir.join("kernel-2.0");
    std::fs::write(&kfile, kernel("2.0")).expect("kernel image");
    let manifest = h.pack(
        "r2",
        "2.0",
        &image("2.0", IMAGE_LEN),
        &[&format!("--image=kernel={}", kfile.display())],
    );
    let url = format!("file://{}", manifest.display());
    let cfg = std::fs::read_to_string(&h.config)
        .expect("config")
        .replacen("[update]\n", &format!("[update]\nurl = \"{url}\"\n"), 1);
    std::fs::write(&h.config, cfg).expect("config");
    h
}

#[test]
fn a_kernel_on_the_esp_is_the_old_or_the_new_file_at_every_crash_point() {
    let h = kernel_host("sdboot-kernel-trace");
    let log = h.dir.join("trace.log");
    let out = h.abupdate_env(
        &["update"],
        &[("ABUPDATE_FAILPOINT_TRACE", log.to_str().expect("utf8"))],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let points: Vec<String> = std::fs::read_to_string(&log)
        .expect("trace")
        .lines()
        .map(|n| {
            let c = seen.entry(n.to_string()).or_default();
            *c += 1;
            format!("{n}:{c}")
        })
        .collect();
    assert!(
        points.iter().any(|p| p == "file-replaced:1"),
        "the kernel was not installed as a file: {points:?}"
    );
    drop(h);
    let (old, new) = (sha(&kernel("1.0")), sha(&kernel("2.0")));
    for point in &points {
        let mut h = kernel_host(&format!("sdboot-kernel-{}", point.replace(':', "-")));
        let out = h.abupdate_env(&["update"], &[("ABUPDATE_FAILPOINT", point)]);
        assert_eq!(out.status.signal(), Some(6), "{point}: {}", text(&out));
        let file = h.esp.join("abupdate/b/linux");
        let now = sha(&std::fs::read(&file).unwrap_or_else(|e| panic!("{point}: B's kernel: {e}")));
        assert!(now == old || now == new, "{point}: B's kernel is partial");
        // systemd-boot boots B only once its kernel is the new one.
        if h.primary() == Some("B") {
            assert_eq!(now, new, "{point}: B boots next with the old kernel");
        }
        let out = h.abupdate(&["update"]);
        assert!(out.status.success(), "{point}: re-run: {}", text(&out));
        assert_eq!(h.boot(), "B", "{point}");
        assert_eq!(sha(&std::fs::read(&file).expect("kernel")), new, "{point}");
        let out = h.abupdate(&["health"]);
        assert!(
            text(&out).contains("committed 2.0"),
            "{point}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_missing_slot_entry_is_written_from_config() {
    let mut h = loaders::small_host("sdboot-missing", Loader::SystemdBoot, IMAGE_LEN);
    h.use_release(loaders::release(IMAGE_LEN));
    let entries = h.esp.join("loader/entries");
    std::fs::remove_file(entries.join("abupdate-0-b+0.conf")).expect("drop B's entry");
    let (slot_b, state) = (h.slot_sha(1), h.state());
    let out = h.abupdate(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("bootloader.systemd-boot.B has no linux or efi"),
        "{}",
        text(&out)
    );
    // Found from outside (stop 47): the image was written first, and the
    // missing entry found only at the activation. Now before a byte.
    assert_eq!(h.slot_sha(1), slot_b, "slot B was written");
    assert_eq!(h.state()["transaction"], state["transaction"]);
    let mut cfg = std::fs::read_to_string(&h.config).expect("config");
    cfg.push_str(
        "\n[bootloader.systemd-boot.B]\ntitle = \"Edge OS (B)\"\nlinux = \"/abupdate/b/linux\"\noptions = \"root=PARTUUID=x ro\"\n",
    );
    std::fs::write(&h.config, cfg).expect("config");
    let out = h.abupdate(&["update", "--now"]);
    assert!(out.status.success(), "{}", text(&out));
    let env = h.env();
    let (id, file) =
        Host::sd_entry(&env, "B").unwrap_or_else(|| panic!("B not listed: {env:?} {}", text(&out)));
    assert_eq!(env.get("default"), Some(&id), "{env:?}");
    assert_eq!(file, "abupdate-2-b+1.conf");
    let conf = std::fs::read_to_string(entries.join(&file)).expect("entry");
    assert_eq!(
        conf,
        "title Edge OS (B)\nlinux /abupdate/b/linux\noptions root=PARTUUID=x ro abupdate.slot=B\n"
    );
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert!(entries.join("abupdate-2-b.conf").exists());
}

/// A power cut between a rename on vfat and the renamed file's sync leaves
/// the new name with size 0 (seen on a real ESP in the OVMF scenario 5):
/// systemd-boot skips such an entry, so abupdate must not count it either.
#[test]
fn an_empty_entry_left_by_a_cut_rename_counts_as_missing_and_is_written_again() {
    let mut h = loaders::small_host("sdboot-empty", Loader::SystemdBoot, IMAGE_LEN);
    h.use_release(loaders::release(IMAGE_LEN));
    let entries = h.esp.join("loader/entries");
    std::fs::write(entries.join("abupdate-0-b+0.conf"), b"").expect("empty B's entry");
    let mut cfg = std::fs::read_to_string(&h.config).expect("config");
    cfg.push_str("\n[bootloader.systemd-boot.B]\nlinux = \"/abupdate/b/linux\"\n");
    std::fs::write(&h.config, cfg).expect("config");
    let out = h.abupdate(&["update", "--now"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = std::fs::read_dir(&entries)
        .expect("entries")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["abupdate-1-a.conf", "abupdate-2-b+1.conf"],
        "the empty file stays"
    );
    let conf = std::fs::read_to_string(entries.join("abupdate-2-b+1.conf")).expect("entry");
    assert_eq!(
        conf,
        "title abupdate slot B\nlinux /abupdate/b/linux\noptions abupdate.slot=B\n"
    );
    assert_eq!(h.boot(), "B");
}

/// Issue (review 2, 10): `loader.conf` pinning slot A's entry (`default
/// abupdate-1-a.conf`, as `bootctl set-default` or an image may leave it):
/// the trial never booted and a good release was recorded as
/// `trial_never_booted`. The install is refused before anything is
/// written, naming loader.conf and the line.
#[test]
fn an_install_under_a_default_pinned_to_one_slot_is_refused_naming_the_line() {
    let mut h = Host::new(
        "sd-pinned",
        Loader::SystemdBoot,
        "1.0",
        IMAGE_LEN,
        HostOptions::default(),
    );
    let conf = h.esp.join("loader/loader.conf");
    std::fs::write(&conf, "timeout 0\ndefault abupdate-1-a.conf\n").expect("loader.conf");
    let rel = loaders::release(IMAGE_LEN);
    h.use_release(rel);
    let entries = |h: &Host| {
        let mut names: Vec<String> = std::fs::read_dir(h.esp.join("loader/entries"))
            .expect("entries")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (before, state) = (entries(&h), h.state());
    refused_before_writing(
        &h,
        &format!(
            "{}: line 2: `default abupdate-1-a.conf` pins one slot's entry",
            conf.display()
        ),
    );
    assert_eq!(entries(&h), before, "an entry was renamed");
    assert_eq!(h.state()["slots"]["B"], state["slots"]["B"]);
}

/// `update` refused with one line saying `says`, before slot B or the
/// record of any install was touched.
fn refused_before_writing(h: &Host, says: &str) {
    let (slot_b, state) = (h.slot_sha(1), h.state());
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.lines().count() == 1 && err.contains(says), "{err}");
    assert_eq!(h.slot_sha(1), slot_b, "slot B was written");
    assert_eq!(h.state()["transaction"], state["transaction"]);
}

/// Found from outside: with no `default`, systemd-boot boots the first of
/// all its entries, and another OS's entry (`debian.conf`: its id sorts
/// before ours) was that first; the install said "the next boot tries it"
/// and the trial would never boot. It is refused before anything is
/// written, naming `loader.conf`; `default abupdate-*` lets it go on.
#[test]
fn an_install_with_another_os_entry_and_no_default_is_refused_until_one_is_set() {
    let mut h = Host::new(
        "sd-other-no-default",
        Loader::SystemdBoot,
        "1.0",
        IMAGE_LEN,
        HostOptions::default(),
    );
    let conf = h.esp.join("loader/loader.conf");
    std::fs::write(&conf, "timeout 3\n").expect("loader.conf without a default");
    let other = h.esp.join("loader/entries/debian.conf");
    std::fs::write(
        &other,
        "title Debian rescue\nlinux /debian/vmlinuz\noptions ro\n",
    )
    .expect("another OS's entry");
    // What systemd-boot's own tool makes of that ESP: the other entry first.
    let dir = scratch("sd-other-no-default-bootctl");
    let esp = Esp::new(&dir.join("esp"));
    let copy = run(Command::new("cp")
        .arg("-r")
        .arg(h.esp.join("loader"))
        .arg(&esp.dir));
    assert!(copy.status.success(), "{}", text(&copy));
    assert_eq!(bootctl_default(&esp.dir).as_deref(), Some("debian.conf"));
    drop(esp);
    h.use_release(loaders::release(IMAGE_LEN));
    refused_before_writing(
        &h,
        &format!(
            "{}: no `default`, so systemd-boot boots the first of its entries, which may be debian.conf and not slot B's trial; add `default abupdate-*`",
            conf.display()
        ),
    );
    let mut text_conf = std::fs::read_to_string(&conf).unwrap_or_default();
    text_conf.push_str("default abupdate-*\n");
    std::fs::write(&conf, text_conf).expect("loader.conf");
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.primary(), Some("B"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bootctl set-default ID`: the variable as systemd-boot reads it (UTF-16,
/// NUL-terminated, non-volatile, boot and runtime access).
fn set_loader_entry_default(vars: &abupdate::boot::efivar::EfiVars, id: &str) {
    use abupdate::boot::systemd_boot::LOADER_GUID;
    let id: Vec<u8> = id
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    vars.set("LoaderEntryDefault", LOADER_GUID, 7, &id)
        .expect("LoaderEntryDefault");
}

/// Issue (brief 2): `LoaderEntryDefault` (`bootctl set-default`) pinning
/// slot A's entry was not read, while the same pin in loader.conf is
/// refused: the trial never booted and a good release was recorded as
/// `trial_never_booted`. The install is now refused the same way, naming
/// the variable's file, before anything is written.
#[test]
fn an_install_under_a_loader_entry_default_pinned_to_one_slot_is_refused() {
    let mut h = Host::new(
        "sd-efivar-pinned",
        Loader::SystemdBoot,
        "1.0",
        IMAGE_LEN,
        HostOptions::default(),
    );
    set_loader_entry_default(&h.efi_vars(), "abupdate-1-a.conf");
    h.use_release(loaders::release(IMAGE_LEN));
    let (slot_b, state) = (h.slot_sha(1), h.state());
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.lines().count() == 1
            && err.contains("LoaderEntryDefault-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f: `LoaderEntryDefault` is `abupdate-1-a.conf` and pins one slot's entry"),
        "{err}"
    );
    assert_eq!(h.slot_sha(1), slot_b, "slot B was written");
    assert_eq!(h.state()["transaction"], state["transaction"]);
    assert_eq!(h.state()["slots"]["B"], state["slots"]["B"]);
}

/// Issue (brief sdb): a stale `LoaderEntryDefault` (naming an entry since
/// removed) refused every install as if it pinned slot A, while
/// systemd-boot ignores a default that matches no entry. The install now
/// goes ahead with one warning naming the variable, and B boots next; the
/// same variable naming another OS's entry on the ESP still pins it and
/// stays refused.
#[test]
fn a_stale_loader_entry_default_is_skipped_with_a_warning_and_one_naming_another_os_refuses() {
    let mut h = Host::new(
        "sd-efivar-stale",
        Loader::SystemdBoot,
        "1.0",
        IMAGE_LEN,
        HostOptions::default(),
    );
    set_loader_entry_default(&h.efi_vars(), "old-os.conf");
    let other = h.esp.join("loader/entries/old-os.conf");
    std::fs::write(&other, "title Old OS\nlinux /old/linux\n").expect("other OS entry");
    h.use_release(loaders::release(IMAGE_LEN));
    let (slot_b, state) = (h.slot_sha(1), h.state());
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("`LoaderEntryDefault` is `old-os.conf` and pins one slot's entry"),
        "{}",
        text(&out)
    );
    assert_eq!(h.slot_sha(1), slot_b, "slot B was written");
    assert_eq!(h.state()["transaction"], state["transaction"]);
    std::fs::remove_file(&other).expect("remove the other OS's entry");
    // `--now`: past the backoff the refusal started.
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    let warnings: Vec<&str> = std::str::from_utf8(&out.stderr)
        .expect("utf8")
        .lines()
        .filter(|l| l.contains("matches no boot entry on the ESP"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("`LoaderEntryDefault` is `old-os.conf`"),
        "{}",
        text(&out)
    );
    assert_eq!(h.primary(), Some("B"));
}
