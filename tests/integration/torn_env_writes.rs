//! A power cut *inside* a durable write, not just between two of them: the
//! write lands partly (`ABUPDATE_FAILPOINT=grubenv-write|ubootenv-write|
//! state-tmp-write` with `ABUPDATE_TEAR_BYTES=k`: the first k bytes reach
//! the medium, then the process dies), stale temp files lie around, one
//! U-Boot copy rots. Each time the real tools still read the env, the host
//! boots a good slot, and re-running the command finishes the job.
//!
//! And what every env write must keep so that the next power cut or boot
//! finds a good slot: the copy in use is never written, variables we do
//! not own survive byte for byte (text or not), a committed U-Boot slot
//! keeps RAUC's attempts, and an install that could not be activated never
//! starts.

use crate::common::loaders;

use crate::common::host::{image, text, HostOptions};
use crate::common::loaders::{Host, Loader, UBOOT_COPY};
use abupdate::boot::ubootenv::{self, select_copy, FlagScheme, UbootEnvConfig};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const IMAGE_LEN: usize = 5 << 20;

fn host(name: &str, loader: Loader) -> Host {
    let mut h = Host::new(
        name,
        loader,
        "1.0",
        IMAGE_LEN,
        HostOptions {
            slot_size: 8 << 20,
            ..Default::default()
        },
    );
    h.use_release(loaders::release(IMAGE_LEN));
    h
}

fn slot_is(h: &Host, slot: usize, version: &str) -> bool {
    h.slot_bytes(slot, IMAGE_LEN) == image(version, IMAGE_LEN)
}

/// Abort `args` inside write `point` after `keep` bytes.
fn tear(h: &Host, args: &[&str], point: &str, keep: usize) {
    let keep = keep.to_string();
    let out = h.abupdate_env(
        args,
        &[
            ("ABUPDATE_FAILPOINT", point),
            ("ABUPDATE_TEAR_BYTES", keep.as_str()),
        ],
    );
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{point}/{keep}: no abort: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("tore a write"),
        "{point}/{keep}: {}",
        text(&out)
    );
}

/// The env is readable, the next boot is a complete good slot, and the
/// re-run of `update` stages 2.0, which then boots and commits.
fn assert_recovers(mut h: Host, what: &str) {
    let env = h
        .try_env()
        .unwrap_or_else(|e| panic!("{what}: env unreadable: {e}"));
    let primary = h
        .primary()
        .unwrap_or_else(|| panic!("{what}: no slot boots: {env:?}"));
    let (idx, version) = if primary == "B" {
        (1, "2.0")
    } else {
        (0, "1.0")
    };
    assert!(
        slot_is(&h, idx, version),
        "{what}: primary {primary} is not a complete {version}: {env:?}"
    );
    let _ = h.state();
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{what}: re-run: {}", text(&out));
    assert_eq!(h.boot(), "B", "{what}: {:?}", h.env());
    let out = h.abupdate(&["health"]);
    assert!(
        text(&out).contains("committed 2.0"),
        "{what}: {}",
        text(&out)
    );
    assert!(
        !h.state_dir.join("state.json.tmp").exists(),
        "{what}: stale temp left"
    );
}

/// GRUB rewrites its 1024-byte block in place; a disk writes a 512-byte
/// sector atomically, so a cut leaves 0, 1 or 2 new sectors, and the
/// second sector is always padding. Every such tear, at each of the two env
/// writes of an install (mark the target bad, activate it), reads back as
/// the old or the new env.
#[test]
fn grubenv_torn_at_every_sector_boundary() {
    let mut cases = Vec::new();
    for nth in [1, 2] {
        for keep in [0, 512, 1024] {
            let point = format!("grubenv-write:{nth}");
            let h = host(&format!("torn-grub-{nth}-{keep}"), Loader::Grub);
            let before = std::fs::read(&h.grubenv).expect("grubenv");
            tear(&h, &["update"], &point, keep);
            let after = std::fs::read(&h.grubenv).expect("grubenv");
            assert_eq!(after.len(), 1024, "{point}/{keep}: size changed");
            if nth == 1 {
                assert_eq!(after[keep..], before[keep..], "{point}/{keep}: tail");
            }
            cases.push(format!("{point}+{keep}B"));
            assert_recovers(h, &format!("grubenv torn at {point} after {keep} bytes"));
        }
    }
    println!("grubenv tears recovered: {}", cases.join(", "));
}

/// A redundant U-Boot env: we only ever write the copy readers do not
/// use, so a torn write (a bad CRC) leaves the old copy in charge for both
/// `fw_printenv` and U-Boot; the re-run writes that copy again.
#[test]
fn uboot_copy_torn_anywhere_falls_back_to_the_other_copy() {
    let mut cases = Vec::new();
    for nth in [1, 2] {
        for keep in [1, 4, 5, 64, UBOOT_COPY / 2] {
            let point = format!("ubootenv-write:{nth}");
            let h = host(&format!("torn-uboot-{nth}-{keep}"), Loader::Uboot);
            let env_before = h.env();
            tear(&h, &["update"], &point, keep);
            // Whatever the tear left, the readers see the env as it was
            // before this write: the write that tore is the one lost.
            let env_after = h.env();
            // Whatever the tear left, readers see the env before this write
            // or, when every byte that differs had landed (the rest is zero
            // padding in both), after it: never a mix, never nothing.
            let order = env_after.get("BOOT_ORDER").map(String::as_str);
            let allowed: &[&str] = if nth == 1 {
                &["A B", "A"]
            } else {
                &["A", "B A"]
            };
            assert!(
                order.is_some_and(|o| allowed.contains(&o)),
                "{point}/{keep}: {env_after:?}"
            );
            assert_eq!(env_after.get("bootcmd"), env_before.get("bootcmd"));
            cases.push(format!("{point}+{keep}B"));
            assert_recovers(h, &format!("U-Boot env torn at {point} after {keep} bytes"));
        }
    }
    println!("U-Boot tears recovered: {}", cases.join(", "));
}

/// `state.json` is replaced by a temp file, fsync and rename: a cut while
/// the temp file is written leaves it truncated next to the intact old
/// state, which is what every later run reads; the next save replaces both.
#[test]
fn state_temp_file_torn_at_every_save_of_an_install() {
    for loader in [Loader::Grub, Loader::Uboot] {
        for nth in 1..=3 {
            let point = format!("state-tmp-write:{nth}");
            let h = host(&format!("torn-state-{nth}"), loader);
            let before = std::fs::read(h.state_dir.join("state.json")).ok();
            tear(&h, &["update"], &point, 100);
            let tmp = std::fs::read(h.state_dir.join("state.json.tmp")).expect("torn temp file");
            assert_eq!(tmp.len(), 100, "{point}: the tear is on disk");
            if nth == 1 {
                assert_eq!(
                    std::fs::read(h.state_dir.join("state.json")).ok(),
                    before,
                    "{point}: state.json changed"
                );
            }
            let out = h.abupdate(&["--json", "status"]);
            assert!(out.status.success(), "{point}: {}", text(&out));
            assert_recovers(h, &format!("{loader:?} state temp torn at {point}"));
        }
    }
}

/// Stale temp files from an earlier cut (ours: `state.json.tmp`;
/// `grub-editenv`'s: `grubenv.new`) change nothing and are replaced.
#[test]
fn stale_temp_files_are_ignored() {
    let h = host("stale-temp", Loader::Grub);
    std::fs::write(h.state_dir.join("state.json.tmp"), b"{\"format\": 1, \"slo").expect("tmp");
    let grub_new = h.grubenv.with_extension("new");
    std::fs::write(&grub_new, b"# GRUB Environment Block\nORDER=B A\nB_OK=1\n").expect("new");
    let out = h.abupdate(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.primary(), Some("A"));
    // grub-editenv itself replaces its stale temp file.
    h.grub_set(&[("saved_entry", "x")]);
    assert_eq!(h.env().get("B_OK").map(String::as_str), Some("0"));
    assert_recovers(h, "stale temp files");
}

/// A copy that rots at rest (a flipped bit anywhere): readers take the
/// other copy, and the next write lands on the rotten one, repairing it.
#[test]
fn uboot_one_copy_rotten_at_rest() {
    for rotten in ["current", "previous"] {
        let mut h = host(&format!("rot-{rotten}"), Loader::Uboot);
        let out = h.abupdate(&["update"]);
        assert!(out.status.success(), "{}", text(&out));
        let staged = h.env();
        assert_eq!(staged.get("BOOT_ORDER").map(String::as_str), Some("B A"));
        let raw = std::fs::read(&h.uboot_env).expect("env");
        let flags = [raw[4], raw[UBOOT_COPY + 4]];
        let current = if flags[1] == flags[0].wrapping_add(1) {
            1
        } else {
            0
        };
        let victim = if rotten == "current" {
            current
        } else {
            1 - current
        };
        let mut bad = raw.clone();
        bad[victim * UBOOT_COPY + 100] ^= 0x20;
        std::fs::write(&h.uboot_env, &bad).expect("rot");
        let env = h.env();
        if rotten == "current" {
            // Back to the env before activation: B marked bad, A boots.
            assert_ne!(env, staged);
            assert_eq!(env.get("BOOT_ORDER").map(String::as_str), Some("A"));
            assert_eq!(h.primary(), Some("A"));
            assert_eq!(h.boot(), "A");
            // The staged trial never ran: recorded, and the env repaired.
            let out = h.abupdate(&["health"]);
            assert!(out.status.success(), "{}", text(&out));
            assert!(text(&out).contains("never came up"), "{}", text(&out));
            assert_eq!(h.state()["failed"][0]["version"], "2.0");
        } else {
            assert_eq!(env, staged);
            assert_eq!(h.boot(), "B");
            let out = h.abupdate(&["health"]);
            assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
        }
        // Whichever copy rotted, the last write replaced it: both valid.
        assert_eq!(h.torn_uboot_copies(), Vec::<usize>::new(), "{rotten}");
        assert!(h.try_env().is_ok());
    }
}

/// A grubenv cut to a wrong size (not by us: our writes never change its
/// size) is refused with the file named, never rewritten blindly; once an
/// operator recreates it, `mark-good` of the running slot makes the host
/// bootable and updatable again.
#[test]
fn truncated_grubenv_is_refused_clearly_and_recovered_by_hand() {
    let h = host("truncated-grubenv", Loader::Grub);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&h.grubenv)
        .expect("grubenv");
    f.set_len(512).expect("truncate");
    drop(f);
    for args in [&["health"][..], &["status"][..], &["mark-good"][..]] {
        let out = h.abupdate(args);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines()
                .any(|l| l.contains("grubenv") && l.contains("512 bytes")),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::metadata(&h.grubenv).expect("meta").len(), 512);
    }
    assert!(slot_is(&h, 0, "1.0"));
    let out = std::process::Command::new("grub-editenv")
        .arg(&h.grubenv)
        .arg("create")
        .output()
        .expect("grub-editenv");
    assert!(out.status.success(), "{}", text(&out));
    let out = h.abupdate(&["mark-good"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.primary(), Some("A"));
    assert_recovers(h, "recreated grubenv");
}

/// Run a bootloader tool with byte arguments; its stdout.
fn tool(cmd: &str, args: &[&[u8]]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd}: {}", text(&out));
    out.stdout
}

fn fw_setenv(h: &Host, name: &[u8], value: &[u8]) {
    tool(
        "fw_setenv",
        &[b"-c", h.fw_conf.as_os_str().as_bytes(), name, value],
    );
}

fn fw_value(h: &Host, name: &[u8]) -> Vec<u8> {
    tool(
        "fw_printenv",
        &[b"-c", h.fw_conf.as_os_str().as_bytes(), b"-n", name],
    )
}

fn must(h: &Host, args: &[&str]) -> String {
    let out = h.abupdate(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// Issue #13.1 as reported, with the real tools and the binary: a
/// redundant env where `fw_setenv` put a value that is not UTF-8 into the
/// copy in use. `mark-good A` must write the OTHER copy, with the next
/// flag, keeping `splash` and `ethaddr` byte for byte; and the host updates
/// and commits as usual with the value still there.
#[test]
fn uboot_mark_good_with_a_non_utf8_value_writes_the_other_copy_and_keeps_every_byte() {
    let mut h = host("nonutf8-uboot", Loader::Uboot);
    fw_setenv(&h, b"ethaddr", b"00:11:22:33:44:55");
    fw_setenv(&h, b"splash", b"\xff\xfe\x01");
    let before = std::fs::read(&h.uboot_env).expect("env");
    let flags = [before[4], before[UBOOT_COPY + 4]];
    let in_use = select_copy(FlagScheme::Incremental, [true, true], flags).expect("valid");
    let copy = |raw: &[u8], i: usize| raw[i * UBOOT_COPY..(i + 1) * UBOOT_COPY].to_vec();

    must(&h, &["mark-good", "A"]);
    let after = std::fs::read(&h.uboot_env).expect("env");
    assert!(
        copy(&after, in_use) == copy(&before, in_use),
        "the copy in use (copy {in_use}, flag {}) was written",
        flags[in_use]
    );
    assert_eq!(
        after[(1 - in_use) * UBOOT_COPY + 4],
        flags[in_use].wrapping_add(1),
        "the other copy does not carry the next flag"
    );
    assert_eq!(fw_value(&h, b"splash"), b"\xff\xfe\x01\n");
    assert_eq!(fw_value(&h, b"ethaddr"), b"00:11:22:33:44:55\n");

    must(&h, &["update"]);
    assert_eq!(fw_value(&h, b"splash"), b"\xff\xfe\x01\n");
    assert_eq!(h.boot(), "B");
    assert!(must(&h, &["health"]).contains("committed 2.0"));
    assert_eq!(fw_value(&h, b"splash"), b"\xff\xfe\x01\n");
    assert_eq!(fw_value(&h, b"ethaddr"), b"00:11:22:33:44:55\n");
}

/// A single-copy env holding a value that is not UTF-8: `install` and
/// `mark-good` used to refuse ("value of splash is not UTF-8") though
/// `fw_printenv` reads it. Now the update runs and the value stays.
#[test]
fn single_copy_uboot_env_with_a_non_utf8_value_installs_and_commits() {
    let mut h = host("nonutf8-uboot-single", Loader::Uboot);
    std::fs::write(
        &h.fw_conf,
        format!("{} 0x0 {UBOOT_COPY:#x}\n", h.uboot_env.display()),
    )
    .expect("single-copy config");
    let cfg = UbootEnvConfig::load(&h.fw_conf).expect("config");
    let env = loaders::booted_a_env();
    ubootenv::write(&cfg, &env).expect("single copy");
    fw_setenv(&h, b"splash", b"\xff\xfe\x01");
    must(&h, &["mark-good"]);
    must(&h, &["update"]);
    assert_eq!(fw_value(&h, b"splash"), b"\xff\xfe\x01\n");
    assert_eq!(h.boot(), "B");
    assert!(must(&h, &["health"]).contains("committed 2.0"));
    assert_eq!(fw_value(&h, b"splash"), b"\xff\xfe\x01\n");
}

/// Issue #13.10: `grub-editenv grubenv set splash=$'\xff\xfe'`, and GRUB
/// has set A_TRY=1 booting A. `health` must re-bless A (else the next boot
/// falls to B), the value stays byte for byte, the update runs, and
/// `status --json` shows a value of ours that is not UTF-8 escaped.
#[test]
fn grub_with_a_non_utf8_value_reblesses_updates_and_shows_it_escaped() {
    let mut h = host("nonutf8-grub", Loader::Grub);
    let g = h.grubenv.as_os_str().as_bytes().to_vec();
    tool(
        "grub-editenv",
        &[
            &g,
            b"set",
            b"splash=\xff\xfe",
            b"A_TRY=1",
            b"ORDER=A B \xff",
        ],
    );
    let out = must(&h, &["health"]);
    assert!(!out.contains("not UTF-8"), "{out}");
    let listed = tool("grub-editenv", &[&g, b"list"]);
    assert!(
        listed.windows(10).any(|w| w == b"splash=\xff\xfe\n"),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    assert!(
        listed.windows(8).any(|w| w == b"A_TRY=0\n"),
        "not re-blessed: {}",
        String::from_utf8_lossy(&listed)
    );
    let status: serde_json::Value =
        serde_json::from_str(&must(&h, &["--json", "status"])).expect("status JSON");
    assert_eq!(status["bootloader"]["ORDER"], "A B \\xff", "{status}");

    must(&h, &["update"]);
    assert_eq!(h.boot(), "B");
    assert!(must(&h, &["health"]).contains("committed 2.0"));
    let listed = tool("grub-editenv", &[&g, b"list"]);
    assert!(
        listed.windows(10).any(|w| w == b"splash=\xff\xfe\n"),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    let status: serde_json::Value =
        serde_json::from_str(&must(&h, &["--json", "status"])).expect("status JSON");
    assert_eq!(status["bootloader"]["ORDER"], "B A \\xff", "{status}");
}

/// Issue #13.11: with `tries` unset (1), the trial gets one attempt but the
/// committed slot gets RAUC's 3, so one interrupted boot of the good slot
/// does not fall back to the older one; `[bootloader] good_tries` sets it.
#[test]
fn uboot_committed_slot_keeps_booting_after_an_interrupted_boot() {
    let mut h = host("good-tries", Loader::Uboot);
    must(&h, &["update"]);
    assert_eq!(h.env()["BOOT_B_LEFT"], "1", "the trial's attempts");
    assert_eq!(h.boot(), "B");
    assert!(must(&h, &["health"]).contains("committed 2.0"));
    assert_eq!(h.env()["BOOT_B_LEFT"], "3", "the committed slot's attempts");
    // A boot of B that never reaches `health` (power cut, hang, watchdog):
    // the next boot is still B.
    assert_eq!(h.boot(), "B");
    assert_eq!(
        h.boot(),
        "B",
        "one interrupted boot fell back: {:?}",
        h.env()
    );
    assert!(must(&h, &["health"]).contains("healthy"));
    assert_eq!(h.env()["BOOT_B_LEFT"], "3");

    let cfg = std::fs::read_to_string(&h.config).expect("config");
    assert!(cfg.contains("kind = \"uboot\"\n"));
    std::fs::write(
        &h.config,
        cfg.replace("kind = \"uboot\"\n", "kind = \"uboot\"\ngood_tries = 5\n"),
    )
    .expect("config");
    must(&h, &["mark-good"]);
    assert_eq!(h.env()["BOOT_B_LEFT"], "5");
}

/// A U-Boot env with room for marking the target bad but not for the
/// activation: refused before the target is marked bad or written, with one
/// line naming the env config, and nothing changed (issue #13, minor).
#[test]
fn uboot_env_without_room_for_the_activation_refuses_before_writing_the_slot() {
    let h = host("env-full", Loader::Uboot);
    let cfg = UbootEnvConfig::load(&h.fw_conf).expect("config");
    // No BOOT_ORDER (the script's "A B"): marking B bad adds
    // "BOOT_ORDER=A" (13 bytes with its NUL), activating B makes it
    // "BOOT_ORDER=B A" (2 more). Pad to leave exactly those 13 bytes.
    let mut env = ubootenv::read(&cfg).expect("env");
    env.remove("BOOT_ORDER");
    let used: usize = env.entries().iter().map(|e| e.len() + 1).sum::<usize>() + 1;
    let room = UBOOT_COPY - 5;
    env.set("pad", "p".repeat(room - 13 - used - "pad=".len() - 1))
        .expect("pad");
    ubootenv::write(&cfg, &env).expect("write");
    let env_before = std::fs::read(&h.uboot_env).expect("env");
    let (a, b) = (h.slot_sha(0), h.slot_sha(1));
    let state_before = h.state();

    let out = h.abupdate(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("abupdate:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("fw_env.config") && lines[0].contains("activating slot B"),
        "{err}"
    );
    assert!(
        std::fs::read(&h.uboot_env).expect("env") == env_before,
        "env written"
    );
    assert_eq!(h.slot_sha(1), b, "the target slot was written");
    assert_eq!(h.slot_sha(0), a);
    assert_eq!(h.state()["transaction"], state_before["transaction"]);
    assert!(h.state()["transaction"].is_null(), "{}", h.state());
}
