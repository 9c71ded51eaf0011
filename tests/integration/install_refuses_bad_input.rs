//! Bad input beyond the SPEC's refusal list (one row each in
//! `refusal_table.rs`): slots that share storage (loop devices,
//! partitions), targets in use, malformed signed manifests, a medium that
//! reads back other bytes. Each gets a one-line error naming the thing,
//! exit 1, and leaves the booted slot, its bytes and the boot order
//! untouched; a payload found bad mid-stream leaves the target marked bad.

use crate::common::host::{
    bounded, error_lines, image, segment_frame, text, with_fifo, HostOptions, TestHost, Untouched,
};
use std::path::Path;

/// Exit 1, one line on stderr containing `needle`, nothing flipped.
fn assert_refused(host: &TestHost, b: &Untouched, out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code; output: {}",
        text(out)
    );
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "error {:?} does not mention {needle:?}",
        lines[0]
    );
    host.assert_untouched(b, needle);
    assert_eq!(host.reboots(), 0, "a reboot was requested");
}

fn install(host: &TestHost, manifest: &std::path::Path) -> std::process::Output {
    host.abupdate(&[
        "install",
        "--no-reboot",
        manifest.to_str().expect("utf8 path"),
    ])
}

fn host(name: &str) -> TestHost {
    TestHost::new(name, "1.0", HostOptions::default())
}

/// A loop device this test set up, detached when dropped.
struct Loop(String);

impl Loop {
    /// `losetup` over `backing` (a file or a block device).
    fn over(backing: &std::path::Path) -> Loop {
        let out = crate::common::host::run(
            std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(backing),
        );
        assert!(out.status.success(), "losetup: {}", text(&out));
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A 32 MiB disk (a loop device over a file in `dir`) with two 12 MiB
    /// partitions, `{disk}p1` and `{disk}p2`. `partx` adds them, so this
    /// works on kernels without partition table parsers too.
    fn partitioned(dir: &std::path::Path) -> Loop {
        let file = dir.join("disk.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(32 << 20))
            .expect("disk file");
        let disk = Loop::over(&file);
        let mut sfdisk = std::process::Command::new("sfdisk")
            .args(["-q", &disk.0])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sfdisk");
        std::io::Write::write_all(
            sfdisk.stdin.as_mut().expect("stdin"),
            b"label: gpt\n,12M\n,12M\n",
        )
        .expect("partition table");
        assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");
        // Already there when the kernel parsed the table itself.
        let _ = std::process::Command::new("partx")
            .args(["-a", &disk.0])
            .output();
        for p in [disk.part(1), disk.part(2)] {
            assert!(p.exists(), "{} did not appear", p.display());
        }
        disk
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(&self.0)
    }

    fn part(&self, n: u32) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}p{n}", self.0))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .output();
    }
}

/// Point slot `slot`'s rootfs at `dev` in the host's config.
fn set_slot(h: &TestHost, slot: usize, dev: &std::path::Path) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let name = ["A", "B"][slot];
    let old = format!("[slots.{name}]\nrootfs = \"{}\"", h.slots[slot].display());
    assert!(cfg.contains(&old), "{old} not in the config");
    let new = format!("[slots.{name}]\nrootfs = \"{}\"", dev.display());
    std::fs::write(&h.config, cfg.replace(&old, &new)).expect("config");
}

/// A host booted from `a` holding 1.0, with `b` as its other slot.
fn host_on(h: &mut TestHost, a: &std::path::Path, b: &std::path::Path) {
    set_slot(h, 0, a);
    h.slots[0] = a.to_path_buf();
    set_slot(h, 1, b);
    crate::common::host::write_at_start(a, &image("1.0", 4096));
    h.slots = [a.to_path_buf(), b.to_path_buf()];
}

fn assert_names(out: &std::process::Output, names: &[&std::path::Path]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in names {
        assert!(
            stderr.contains(&n.display().to_string()),
            "{} not named: {stderr}",
            n.display()
        );
    }
}

#[test]
fn a_second_loop_device_over_the_booted_slots_file_is_refused() {
    let mut h = TestHost::new(
        "alias-loop",
        "1.0",
        HostOptions {
            loop_devices: true,
            ..Default::default()
        },
    );
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let alias = Loop::over(&h.dir.join("slot-a.img"));
    let a = h.slots[0].clone();
    host_on(&mut h, &a, &alias.path());
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&alias.path(), &a, &h.dir.join("slot-a.img")]);
}

#[test]
fn a_whole_disk_and_its_partition_are_one_storage() {
    let mut h = host("disk-and-part");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let disk = Loop::partitioned(&h.dir);
    // Booted from a partition, the whole disk as the target...
    host_on(&mut h, &disk.part(1), &disk.path());
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&disk.path(), &disk.part(1)]);
    // ...and booted from the whole disk, a partition as the target.
    let (p1, whole) = (disk.part(1), disk.path());
    host_on(&mut h, &whole, &p1);
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&disk.path(), &disk.part(1)]);
}

#[test]
fn two_partitions_of_one_disk_are_separate_slots() {
    let mut h = host("side-by-side");
    let img = image("2.0", 1 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let disk = Loop::partitioned(&h.dir);
    host_on(&mut h, &disk.part(1), &disk.part(2));
    let before = h.slot_sha(0);
    let out = install(&h, &m);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, img.len()), img);
    assert_eq!(h.slot_sha(0), before, "the booted partition changed");
}

#[test]
fn a_loop_device_over_a_partition_of_the_booted_disk_is_refused() {
    let mut h = host("loop-over-part");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let disk = Loop::partitioned(&h.dir);
    let over = Loop::over(&disk.part(1));
    host_on(&mut h, &disk.part(1), &over.path());
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&over.path(), &disk.part(1)]);
    // Booted from the whole disk: the loop device over its partition is
    // inside it too.
    let whole = disk.path();
    host_on(&mut h, &whole, &over.path());
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&over.path(), &disk.path()]);
}

#[test]
fn a_regular_file_slot_that_is_loop_mounted_is_refused() {
    let h = host("file-mounted");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let out = crate::common::host::run(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&h.slots[1]),
    );
    assert!(out.status.success(), "mkfs.ext4: {}", text(&out));
    let lo = Loop::over(&h.slots[1]);
    let mnt = h.dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    let out = crate::common::host::run(std::process::Command::new("mount").arg(&lo.0).arg(&mnt));
    assert!(out.status.success(), "mount: {}", text(&out));
    let b = h.untouched();
    let out = install(&h, &m);
    let _ = std::process::Command::new("umount").arg(&mnt).output();
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&h.slots[1], &lo.path()]);
    // (ext4 itself writes to it on mount and unmount.)
    assert_ne!(
        h.slot_bytes(1, 4096),
        image("2.0", 4096),
        "the mounted file was written"
    );
}

/// Point the host's `[system] mountinfo` at `table`.
fn use_mount_table(h: &TestHost, table: &Path) {
    let config = std::fs::read_to_string(&h.config).expect("config");
    let config = config.replacen(
        "[system]\n",
        &format!("[system]\nmountinfo = \"{}\"\n", table.display()),
        1,
    );
    std::fs::write(&h.config, config).expect("config");
}

#[test]
fn a_mount_point_that_is_not_utf8_does_not_hide_a_mounted_target() {
    use std::os::unix::fs::MetadataExt;
    let h = host("mount-bytes");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    // The target's file is mounted through a loop device; another mount
    // point in the table is not UTF-8 (a tmpfs named `caf\xe9`).
    let lo = Loop::over(&h.slots[1]);
    let rdev = std::fs::metadata(lo.path()).expect("loop device").rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let mut table = std::fs::read("/proc/self/mountinfo").expect("mountinfo");
    table.extend_from_slice(b"900 22 0:77 / /srv/caf\xe9 rw - tmpfs tmpfs rw\n");
    table.extend_from_slice(
        format!("901 22 {major}:{minor} / /srv/data rw - ext4 {} rw\n", lo.0).as_bytes(),
    );
    let path = h.dir.join("mountinfo");
    std::fs::write(&path, table).expect("mountinfo");
    use_mount_table(&h, &path);
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "shares its storage with");
    assert_names(&out, &[&h.slots[1], &lo.path()]);
}

#[test]
fn a_mount_table_that_cannot_be_read_refuses_the_install() {
    let h = host("mount-unreadable");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let missing = h.dir.join("no-mountinfo");
    use_mount_table(&h, &missing);
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "cannot read the mount table");
    assert!(
        text(&out).contains(&missing.display().to_string()),
        "{}",
        text(&out)
    );
}

#[test]
fn a_target_another_process_holds_exclusively_is_refused() {
    let h = TestHost::new(
        "held-excl",
        "1.0",
        HostOptions {
            loop_devices: true,
            ..Default::default()
        },
    );
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    use std::os::unix::fs::OpenOptionsExt;
    // What a mount, a swapon or a device-mapper table does to a device.
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&h.slots[1])
        .expect("O_EXCL open");
    let before = h.slot_sha(1);
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "in use");
    assert_names(&out, &[&h.slots[1]]);
    assert_eq!(h.slot_sha(1), before, "the held device was written");
    assert_eq!(h.grub_vars().get("B_OK"), b.env.get("B_OK"));
}

#[test]
fn two_classes_of_one_release_on_the_same_storage_are_refused() {
    let h = host("two-classes");
    let dir = h.dir.join("r2");
    let (root_img, boot_img) = (h.dir.join("rootfs.raw"), h.dir.join("boot.raw"));
    std::fs::write(&root_img, image("2.0", 1 << 20)).expect("rootfs image");
    std::fs::write(&boot_img, image("2.0-boot", 64 << 10)).expect("boot image");
    let out = crate::common::host::run(
        std::process::Command::new(crate::common::host::bin())
            .arg("pack")
            .arg("--secret")
            .arg(&h.secret_key)
            .args([
                "--compatible",
                crate::common::host::COMPATIBLE,
                "--version",
                "2.0",
            ])
            .arg(format!("--image=rootfs={}", root_img.display()))
            .arg(format!("--image=boot={}", boot_img.display()))
            .arg("--out")
            .arg(&dir),
    );
    assert!(out.status.success(), "pack: {}", text(&out));
    // Slot B's boot partition configured as its rootfs again (a typo).
    let boot_a = h.dir.join("boot-a.img");
    std::fs::File::create(&boot_a)
        .and_then(|f| f.set_len(1 << 20))
        .expect("boot a");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let b_root = format!("rootfs = \"{}\"\n", h.slots[1].display());
    let cfg = cfg
        .replacen(
            "[slots.B]\n",
            &format!("[slots.B]\nboot = \"{}\"\n", h.slots[1].display()),
            1,
        )
        .replacen(
            "[slots.A]\n",
            &format!("[slots.A]\nboot = \"{}\"\n", boot_a.display()),
            1,
        );
    assert!(cfg.contains(&b_root));
    std::fs::write(&h.config, cfg).expect("config");
    let b = h.untouched();
    let out = install(&h, &dir.join("release.json"));
    assert_refused(&h, &b, &out, "also written by this release");
    assert_names(&out, &[&h.slots[1]]);
}

/// A mirror this build cannot use (earlier versions took any text there)
/// is left out with one warning naming it, and the origin serves: the
/// config still loads (README "Upgrades keep configs"), and signatures
/// make every source alike.
#[test]
fn mirror_that_is_not_an_http_url_is_left_out_with_a_warning() {
    let h = host("mirror-config");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    for mirror in ["site-cache:8080", "http://cache/?tenant=a"] {
        std::fs::write(
            &h.config,
            cfg.replacen(
                "[update]\n",
                &format!("[update]\nmirror = \"{mirror}\"\n"),
                1,
            ),
        )
        .expect("config");
        let b = h.untouched();
        let out = h.abupdate(&["check", m.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(100), "{mirror}: {}", text(&out));
        assert!(
            text(&out).contains("update available: 2.0"),
            "{}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("warning: ")
                && stderr.contains("update.mirror")
                && stderr.contains(mirror)
                && stderr.contains("fetching from the origin"),
            "{stderr}"
        );
        h.assert_untouched(&b, mirror);
    }
}

#[test]
fn a_key_named_twice_in_the_signed_manifest_is_refused() {
    let h = host("duplicate-key");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    h.resign(&m, |v| {
        // Two readings of one signed document: serde took the last.
        let real = v["images"]["rootfs"].to_string();
        let mut evil = v["images"]["rootfs"].clone();
        evil["url"] = "http://evil.invalid/rootfs.img.zst".into();
        let text = v.to_string();
        let one = format!(r#""images":{{"rootfs":{real}}}"#);
        assert!(text.contains(&one), "{text}");
        Some(text.replacen(
            &one,
            &format!(r#""images":{{"rootfs":{real},"rootfs":{evil}}}"#),
            1,
        ))
    });
    let b = h.untouched();
    let out = h.abupdate(&["check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(1), "check: {}", text(&out));
    assert_refused(
        &h,
        &b,
        &install(&h, &m),
        "release manifest: images.rootfs: appears twice",
    );
    h.assert_target_never_marked_bad(&b);
}

/// An empty image (what `pack` once made of an empty file): the host would
/// "write" nothing and activate a slot holding whatever it held.
#[test]
fn an_empty_image_in_the_signed_manifest_is_refused() {
    let h = host("empty-image");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--no-compress"]);
    std::fs::write(m.with_file_name("rootfs-2.0.img"), b"").expect("empty payload");
    h.resign(&m, |v| {
        v["images"]["rootfs"]["size"] = 0.into();
        // SHA-256 of no bytes.
        v["images"]["rootfs"]["sha256"] =
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into();
        None
    });
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "images.rootfs.size: 0");
    h.assert_target_never_marked_bad(&b);
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("A B"));
}

/// `check` applies every refusal `install` makes that needs no device: it
/// never says "update available" for a release `install` always refuses,
/// and `install` refuses it before the target is marked bad.
#[test]
fn check_refuses_what_install_always_refuses() {
    let h = host("uninstallable");
    // (what, the edit, the `--json` kind, the error's words)
    type Case = (
        &'static str,
        fn(&mut serde_json::Value),
        &'static str,
        &'static str,
    );
    let cases: [Case; 3] = [
        (
            "unknown image class",
            |v| {
                let img = v["images"]["rootfs"].take();
                v["images"] = serde_json::json!({ "firmware": img });
            },
            "unknown_class",
            "release image class \"firmware\" has no partition in the slot to write (configured: rootfs)",
        ),
        (
            "size 2^64-1",
            |v| v["images"]["rootfs"]["size"] = u64::MAX.into(),
            "manifest",
            "images.rootfs.size: 18446744073709551615 is larger than any device",
        ),
        (
            "window_log above max_window_log",
            |v| v["images"]["rootfs"]["window_log"] = 28.into(),
            "window_too_large",
            "needs a zstd window of 2^28 bytes, this host allows 2^27 (update.max_window_log)",
        ),
    ];
    for (i, (what, edit, kind, needle)) in cases.into_iter().enumerate() {
        let m = h.pack(&format!("r{i}"), "2.0", &image("2.0", 1 << 20), &[]);
        h.resign(&m, |v| {
            edit(v);
            None
        });
        let b = h.untouched();
        let out = h.abupdate(&["--json", "check", m.to_str().expect("p")]);
        assert_eq!(out.status.code(), Some(1), "{what}: check: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["kind"], kind, "{what}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains(needle),
            "{what}: {v}"
        );
        assert_refused(&h, &b, &install(&h, &m), needle);
        h.assert_target_never_marked_bad(&b);
    }
}

/// The manifest's image hash is wrong while its payload is intact: the
/// error names the release's payload and says the release is inconsistent,
/// rather than blaming the slot ("read back from …").
#[test]
fn a_wrong_image_hash_in_the_release_blames_the_release() {
    let h = host("wrong-image-hash");
    // One frame: the host hashes the whole image (a segmented payload is
    // checked segment by segment, below).
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--one-frame"]);
    h.resign(&m, |v| {
        v["images"]["rootfs"]["sha256"] = "0f".repeat(32).into();
        None
    });
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "the release is inconsistent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rootfs image from "), "{stderr}");
    assert!(stderr.contains("rootfs-2.0.img.zst"), "{stderr}");
    assert!(!stderr.contains("read back from"), "{stderr}");
    h.assert_target_bad();
}

/// Segments too large for the decoders' memory budget on a host (a
/// segment, 1 MiB and a frame within 27 MiB: `--segment-size 14` of data
/// that does not compress): `pack` says hosts decode the payload as one
/// stream, and a host installs it so, byte for byte. The default segments
/// of the same data get no note.
#[test]
fn segments_past_the_decoders_budget_are_noted_by_pack_and_installed_as_one_stream() {
    let h = TestHost::new(
        "one-stream-segments",
        "1.0",
        HostOptions {
            slot_size: 32 << 20,
            ..HostOptions::default()
        },
    );
    let data = crate::common::http::pattern(28 << 20, 7);
    let (m, packed) = h.pack_output("r2", "2.0", &data, &["--segment-size", "14"]);
    assert!(packed.status.success(), "{}", text(&packed));
    let said = String::from_utf8_lossy(&packed.stderr);
    assert!(
        said.contains("note: rootfs: segments of up to 14680064 bytes with frames of up to ")
            && said.contains("hosts decode this payload as one stream"),
        "{said}"
    );
    let out = install(&h, &m);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        h.slot_bytes(1, data.len()) == data,
        "slot B holds the image"
    );
    let (_, default) = h.pack_output("r3", "3.0", &data, &[]);
    assert!(default.status.success(), "{}", text(&default));
    assert!(
        !String::from_utf8_lossy(&default.stderr).contains("note:"),
        "{}",
        text(&default)
    );
    // Segments over 16 MiB are one stream whatever their frames: the note
    // says that, not the budget (review 13).
    let (_, large) = h.pack_output(
        "r4",
        "4.0",
        &image("4.0", 24 << 20),
        &["--segment-size", "20"],
    );
    let said = String::from_utf8_lossy(&large.stderr);
    assert!(
        large.status.success()
            && said.contains(
                "note: rootfs: segments of up to 20971520 bytes are larger than the 16777216 bytes a host decodes on every core: hosts decode this payload as one stream"
            ),
        "{}",
        text(&large)
    );
}

/// A segment in the middle of a segmented payload whose bytes do not hash
/// to its signed digest (the release's table is wrong, its payload intact
/// and validly signed): the install stops, the error names the segment's
/// bytes and the digest, and the target, partly written, stays marked bad.
#[test]
fn a_bad_segment_mid_way_leaves_the_target_bad() {
    let h = host("bad-segment");
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 8 << 20),
        &["--segment-size", "1"],
    );
    h.resign(&m, |v| {
        v["images"]["rootfs"]["segments"][4]["blake3"] = "0f".repeat(32).into();
        None
    });
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "the segment at bytes 4194304..5242880");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rootfs payload from "), "{stderr}");
    assert!(
        stderr.contains(&format!("the signed manifest says {}", "0f".repeat(32))),
        "{stderr}"
    );
    assert!(stderr.contains("BLAKE3"), "{stderr}");
    h.assert_target_bad();
}

/// A byte of the payload changed on its way (mirror, disk, an attacker),
/// the signed manifest intact: the frame it falls in does not hash to its
/// signed BLAKE3, and it is refused before the decoder sees it, naming the
/// segment and its bytes in the payload; the target stays marked bad.
#[test]
fn a_damaged_frame_is_refused_before_it_is_decoded() {
    let h = host("damaged-frame");
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 8 << 20),
        &["--segment-size", "1"],
    );
    let (at, len, signed) = segment_frame(&m, 4);
    assert!(signed.is_some(), "pack signs each frame");
    let payload = m.with_file_name("rootfs-2.0.img.zst");
    let mut bytes = std::fs::read(&payload).expect("payload");
    bytes[(at + len / 2) as usize] ^= 0x20;
    std::fs::write(&payload, bytes).expect("damage payload");
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(
        &h,
        &b,
        &out,
        &format!(
            "the frame of segment 4 (payload bytes {at}..{}) has BLAKE3",
            at + len
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it was not decoded"), "{stderr}");
    assert!(stderr.contains("rootfs-2.0.img.zst"), "{stderr}");
    h.assert_target_bad();
}

/// The slot returns other bytes than were written (a failing medium,
/// injected on a read-back): the error names the device and the offset,
/// and the release is not blamed; for one stream (the second 512 KiB chunk
/// read back) and for a segment (its first 1 MiB read back).
#[cfg(feature = "failpoints")] // the read-back fault is injected by a failpoint
#[test]
fn a_medium_that_reads_back_other_bytes_is_named_with_the_offset() {
    for (name, extra, point, offset) in [
        (
            "one-frame",
            &["--one-frame"][..],
            "read-back-differs:2",
            786432,
        ),
        ("segments", &[][..], "read-back-differs:1", 524288),
    ] {
        let h = host(&format!("bad-medium-{name}"));
        let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), extra);
        let b = h.untouched();
        let out = h.abupdate_env(
            &["install", "--no-reboot", m.to_str().expect("p")],
            &[("ABUPDATE_FAILPOINT", point)],
        );
        // The middle byte of what was read back.
        let want = format!(
            "{}: read back other bytes than were written at offset {offset}: the medium is failing",
            h.slots[1].display()
        );
        assert_refused(&h, &b, &out, &want);
        h.assert_target_bad();
        // The payload was fine: the next install (a good medium) succeeds.
        let out = install(&h, &m);
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
}

/// A FIFO put where a local release's manifest, its signature or its
/// payload belongs (left alone at stop 43: `install` waited for a writer
/// for ever). The manifest and the signature must be regular files
/// and are refused at once; the payload may be streamed through a pipe,
/// and one with no writer ends at once. One line naming the path, exit 1,
/// the booted slot and the boot order untouched; with the files back the
/// same release installs.
#[test]
fn a_fifo_at_a_local_releases_path_is_refused_at_once_naming_it() {
    let h = host("fifo-release");
    let m = h.pack("r2", "2.0", &image("2.0", 2 << 20), &[]);
    let shown = m.to_str().expect("utf8 path");
    let cases = [
        (m.clone(), "not a regular file"),
        (
            m.with_file_name("release.json.minisig"),
            "not a regular file",
        ),
        (m.with_file_name("rootfs-2.0.img.zst"), "ended after 0 of"),
    ];
    for (path, words) in &cases {
        assert!(path.exists(), "{} is part of the release", path.display());
        with_fifo(path, || {
            let b = h.untouched();
            let (code, err) = bounded(&h.config, &["install", "--no-reboot", shown]);
            let what = format!("a FIFO at {}", path.display());
            assert!(code.is_some(), "{what}: hung");
            assert_eq!(code, Some(1), "{what}: {err}");
            let lines = error_lines(&err);
            assert_eq!(lines.len(), 1, "{what}: {err}");
            assert!(
                lines[0].contains(&path.display().to_string()) && lines[0].contains(words),
                "{what}: {err}"
            );
            h.assert_untouched(&b, &what);
            assert_eq!(h.reboots(), 0, "{what}: a reboot was requested");
        });
    }
    let out = install(&h, &m);
    assert!(out.status.success(), "with the files back: {}", text(&out));
}

/// Found from outside: a file slot configured as one of abupdate's own
/// files was written over: the grubenv (the boot environment destroyed),
/// the config, a trusted key or `state.json` (each staged over). Each is
/// refused naming it and what it is, before a byte of it changes.
#[test]
fn a_slot_configured_over_abupdates_own_files_is_refused() {
    let mut h = host("own-files");
    // An image small enough to fit each of them.
    let m = h.pack("r2", "2.0", &image("2.0", 512), &[]);
    let state = h.state_dir.join("state.json");
    assert!(state.exists(), "the fixture's host has a state");
    for (target, what) in [
        (h.grubenv.clone(), "the bootloader's environment"),
        (h.config.clone(), "abupdate's config"),
        (h.public_key.clone(), "a trusted key"),
        (state, "abupdate's state"),
    ] {
        let b_was = h.slots[1].clone();
        set_slot(&h, 1, &target);
        h.slots[1] = target.clone();
        let bytes = std::fs::read(&target).expect("target");
        let b = h.untouched();
        let out = install(&h, &m);
        assert_refused(&h, &b, &out, &format!("({what})"));
        assert_names(&out, &[&target]);
        // The state records the refusal (replaced whole, as every save).
        match what {
            "abupdate's state" => assert_eq!(h.state()["slots"]["A"]["status"], "good"),
            _ => assert_eq!(std::fs::read(&target).expect("target"), bytes, "{what}"),
        }
        set_slot(&h, 1, &b_was);
        h.slots[1] = b_was;
    }
    let out = install(&h, &m);
    assert!(out.status.success(), "{}", text(&out));
}

/// U-Boot's environment copies where `fw_env.config` puts them: the env's
/// own bytes on its device, not the whole device. Slot B's partition
/// holding the copies is refused naming them; the copies on the whole
/// disk before the first partition (where boards keep them) stop no slot.
#[cfg(feature = "failpoints")] // common::loaders
#[test]
fn a_slot_over_the_uboot_environment_is_refused_by_its_bytes_on_the_device() {
    use crate::common::loaders::{seed_uboot_env, Host, Loader, UBOOT_COPY};
    let mut h = Host::new(
        "uboot-env-bytes",
        Loader::Uboot,
        "1.0",
        4096,
        HostOptions::default(),
    );
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let disk = Loop::partitioned(&h.dir);
    let env_on = |h: &Host, dev: &Path, at: usize| {
        std::fs::write(
            &h.fw_conf,
            format!(
                "{d} {at:#x} {UBOOT_COPY:#x}\n{d} {:#x} {UBOOT_COPY:#x}\n",
                at + UBOOT_COPY,
                d = dev.display()
            ),
        )
        .expect("fw_env.config");
        seed_uboot_env(&h.fw_conf);
    };
    let (p1, p2) = (disk.part(1), disk.part(2));
    host_on(&mut h.h, &p1, &p2);
    // The copies at the start of slot B's partition.
    env_on(&h, &p2, 0);
    let env_bytes = std::fs::read(&p2).expect("p2")[..2 * UBOOT_COPY].to_vec();
    let out = install(&h, &m);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shares its storage with") && err.contains("(the bootloader's environment)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&p2).expect("p2")[..2 * UBOOT_COPY],
        env_bytes[..]
    );
    // The copies on the whole disk at 512 KiB, before the first partition
    // (1 MiB): slot B's partition is none of their bytes.
    env_on(&h, &disk.path(), 512 << 10);
    let out = install(&h, &m);
    assert!(out.status.success(), "{}", text(&out));
}
