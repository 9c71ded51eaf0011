//! The EFI backend against the real EFI tools: an entry abupdate recreates
//! is byte for byte what `efibootmgr --create-only --unicode` writes for
//! the same partition (a GPT disk on a loop device), a slot entry the
//! firmware dropped is recreated before `BootNext` or `BootOrder` names it
//! (the trial slot at install, the booted slot at its health check),
//! efivarfs' immutable flag is cleared for the write and put back, and
//! damaged variables are refused with their file named, and so are two
//! entries with one slot's description (until `entry` says which). NVRAM is a
//! directory standing in for efivarfs (this machine has no EFI), read with
//! the real `efibootmgr` through `EFIVARFS_PATH`.

use crate::common::loaders;

use crate::common::host::{has_tool, run, scratch, text};
use crate::common::loaders::{Host, Loader, EFI_A, EFI_B};
use abupdate::boot::efi::{EfiBackend, EfiSlot};
use abupdate::boot::efivar::{boot_name, u16_bytes, EfiVars, GLOBAL_GUID, NV_BS_RT};
use abupdate::boot::{BootState, Bootloader};
use abupdate::slot::SlotName::{A, B};
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGE_LEN: usize = 3 << 20;
const PARTUUID: &str = "3f1b1a5e-5c2d-4e4b-9a7f-0123456789ab";

/// A 40 MiB GPT disk on a loop device with an ESP as partition 1; detached
/// on drop.
struct Disk {
    dev: String,
}

impl Disk {
    fn new(dir: &Path) -> Disk {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(40 << 20))
            .expect("disk image");
        let mut sfdisk = Command::new("sfdisk");
        sfdisk
            .arg("-q")
            .arg(&img)
            .stdin(std::process::Stdio::piped());
        let mut child = sfdisk.spawn().expect("sfdisk");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(
                format!("label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid={PARTUUID}\n")
                    .as_bytes(),
            )
            .expect("table");
        assert!(child.wait().expect("sfdisk").success());
        let out = run(Command::new("losetup").args(["-fP", "--show"]).arg(&img));
        assert!(out.status.success(), "losetup: {}", text(&out));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let disk = Disk { dev };
        // The kernel does not always scan at attach time here; ask again.
        if !Path::new(&disk.part()).exists() {
            let _ = run(Command::new("partx").args(["-a", &disk.dev]));
        }
        assert!(
            Path::new(&disk.part()).exists(),
            "{}: no partition device",
            disk.part()
        );
        disk
    }

    fn part(&self) -> String {
        format!("{}p1", self.dev)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

fn var_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(format!("{name}-{GLOBAL_GUID}"))).expect("variable")
}

fn slot_config(partition: &str) -> EfiSlot {
    EfiSlot {
        entry: None,
        description: "abupdate B".into(),
        loader: Some("/EFI/b/grubx64.efi".into()),
        partition: Some(partition.into()),
        options: Some("root=x quiet".into()),
    }
}

#[test]
fn recreated_entry_is_byte_for_byte_what_efibootmgr_writes() {
    assert!(
        has_tool("efibootmgr"),
        "efibootmgr missing (scripts/deps.sh)"
    );
    let dir = scratch("efi-bytes");
    let disk = Disk::new(&dir);
    let theirs = dir.join("theirs");
    std::fs::create_dir_all(&theirs).expect("dir");
    let out = run(Command::new("efibootmgr")
        .env("EFIVARFS_PATH", format!("{}/", theirs.display()))
        .args([
            "--create-only",
            "-d",
            &disk.dev,
            "-p",
            "1",
            "-L",
            "abupdate B",
        ])
        .args(["-l", "\\EFI\\b\\grubx64.efi", "-u", "root=x quiet"]));
    assert!(out.status.success(), "efibootmgr -c: {}", text(&out));
    let want = var_bytes(&theirs, "Boot0000");

    for partition in [disk.part(), format!("PARTUUID={PARTUUID}")] {
        let ours = dir.join(format!("ours-{}", partition.len()));
        std::fs::create_dir_all(&ours).expect("dir");
        let vars = EfiVars::new(ours.clone());
        vars.set("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(&[]))
            .expect("BootOrder");
        let slots = [(A, EfiSlot::default_for(A)), (B, slot_config(&partition))];
        let backend = EfiBackend::new(ours.clone(), slots.into_iter().collect());
        backend.activate(B).expect("activate recreates B");
        assert_eq!(
            var_bytes(&ours, "Boot0000"),
            want,
            "{partition}: our entry differs from efibootmgr's"
        );
        assert_eq!(var_bytes(&ours, "BootNext"), [7, 0, 0, 0, 0, 0]);
        assert_eq!(backend.primary().expect("primary"), Some(B));
        // And efibootmgr decodes it as HD()/File() on that partition.
        let out = run(Command::new("efibootmgr")
            .arg("-v")
            .env("EFIVARFS_PATH", format!("{}/", ours.display())));
        let listing = text(&out);
        assert!(
            listing.contains(&format!("HD(1,GPT,{PARTUUID},0x800,0x10000)"))
                && listing.contains("File(\\EFI\\b\\grubx64.efi)")
                && listing.contains("BootNext: 0000"),
            "{listing}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The test host with both slots' entries configurable for recreation on
/// `disk`'s ESP.
fn efi_host(name: &str, disk: &Disk) -> Host {
    let mut h = loaders::small_host(name, Loader::Efi, IMAGE_LEN);
    h.use_release(loaders::release(IMAGE_LEN));
    let mut cfg = std::fs::read_to_string(&h.config).expect("config");
    for slot in ["A", "B"] {
        cfg.push_str(&format!(
            "\n[bootloader.efi.{slot}]\nloader = \"\\\\EFI\\\\abupdate-{l}\\\\grubx64.efi\"\npartition = \"{p}\"\n",
            l = slot.to_ascii_lowercase(),
            p = disk.part()
        ));
    }
    std::fs::write(&h.config, cfg).expect("config");
    h
}

fn efi_entry(h: &Host, num: u16) -> Option<String> {
    h.efibootmgr()
        .expect("efibootmgr reads NVRAM")
        .get(&boot_name(num))
        .cloned()
}

#[test]
fn a_slot_entry_the_firmware_dropped_is_recreated_before_it_is_relied_on() {
    let dir = scratch("efi-dropped");
    let disk = Disk::new(&dir);
    let mut h = efi_host("efi-dropped", &disk);
    let vars = h.efi_vars();
    // The firmware lost B's entry (a power cut, an NVRAM reset).
    vars.delete(&boot_name(EFI_B), GLOBAL_GUID).expect("drop B");
    assert_eq!(efi_entry(&h, EFI_B), None);
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "update: {}", text(&out));
    assert!(text(&out).contains("recreating Boot0002"), "{}", text(&out));
    let entry = efi_entry(&h, EFI_B).expect("B's entry recreated");
    assert!(
        entry.contains("abupdate B")
            && entry.contains(&format!("HD(1,GPT,{PARTUUID},0x800,0x10000)"))
            && entry.contains("File(\\EFI\\abupdate-b\\grubx64.efi)"),
        "{entry}"
    );
    assert_eq!(h.env().get("BootNext").map(String::as_str), Some("0002"));
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert_eq!(
        h.env().get("BootOrder").map(String::as_str),
        Some("0002,0001,0000")
    );

    // Now the booted slot's entry goes: its health check (every boot)
    // recreates it and keeps it first, so the next reset still boots B.
    vars.delete(&boot_name(EFI_B), GLOBAL_GUID).expect("drop B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "health: {}", text(&out));
    assert!(efi_entry(&h, EFI_B).is_some(), "B not recreated");
    assert_eq!(h.primary(), Some("B"));
    assert_eq!(h.boot(), "B");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found from outside: the firmware dropped the target's entry and the
/// config gives no loader and partition to make it again; the install
/// wrote the whole image, then failed to activate it, on every run. It is
/// refused before the first byte, naming the slot and the keys, with the
/// boot order and the slot untouched.
#[test]
fn an_install_whose_entry_cannot_be_made_is_refused_before_it_writes() {
    let mut h = loaders::small_host("efi-no-entry", Loader::Efi, IMAGE_LEN);
    h.use_release(loaders::release(IMAGE_LEN));
    h.efi_vars()
        .delete(&boot_name(EFI_B), GLOBAL_GUID)
        .expect("drop B");
    let before = h.env();
    let slot_b = h.slot_sha(1);
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no Boot#### entry for slot B")
            && error.contains("bootloader.efi.B has no loader and partition"),
        "{v}"
    );
    assert_eq!(h.slot_sha(1), slot_b, "slot B written");
    assert_eq!(h.env(), before, "NVRAM changed");
    assert!(h.state()["transaction"].is_null(), "{}", h.state());
}

/// efivarfs marks variables immutable; the write clears the flag and puts
/// it back (libefivar's `efivarfs_set_variable`), here on the stand-in.
#[test]
fn immutable_variables_are_written_and_stay_immutable() {
    let mut h = loaders::small_host("efi-immutable", Loader::Efi, IMAGE_LEN);
    h.use_release(loaders::release(IMAGE_LEN));
    let order = h.efivars.join(format!("BootOrder-{GLOBAL_GUID}"));
    let chattr = |flag: &str, p: &Path| run(Command::new("chattr").arg(flag).arg(p));
    if !chattr("+i", &order).status.success() {
        eprintln!("no immutable flag on this file system; skipping");
        return;
    }
    let lsattr = |p: &PathBuf| text(&run(Command::new("lsattr").arg(p)));
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert_eq!(
        h.env().get("BootOrder").map(String::as_str),
        Some("0002,0001,0000")
    );
    let attrs = lsattr(&order);
    assert!(
        attrs.split_whitespace().next().unwrap_or("").contains('i'),
        "flag not restored: {attrs}"
    );
    chattr("-i", &order);
}

#[test]
fn damaged_variables_are_refused_with_their_file_named() {
    let h = loaders::small_host("efi-damaged", Loader::Efi, IMAGE_LEN);
    let vars = h.efi_vars();
    // An odd-length BootOrder: not a list of u16.
    std::fs::write(vars.path("BootOrder", GLOBAL_GUID), [7, 0, 0, 0, 1, 0, 0]).expect("damage");
    let out = h.abupdate(&["mark-bad", "B"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains(&format!("BootOrder-{GLOBAL_GUID}: odd length")) && msg.lines().count() == 1,
        "{msg}"
    );
    // A Boot#### that is not a load option is not taken for a slot.
    std::fs::write(vars.path("BootOrder", GLOBAL_GUID), [7, 0, 0, 0, 1, 0]).expect("repair");
    std::fs::write(
        vars.path(&boot_name(EFI_A), GLOBAL_GUID),
        [7, 0, 0, 0, 1, 0, 0, 0, b'a', 0],
    )
    .expect("damage A");
    let backend = EfiBackend::new(
        h.efivars.clone(),
        [(A, EfiSlot::default_for(A)), (B, EfiSlot::default_for(B))]
            .into_iter()
            .collect(),
    );
    assert_eq!(backend.state(A).expect("state"), BootState::Bad);
    let e = backend
        .set_state(A, BootState::Good)
        .expect_err("recreated without loader and partition");
    assert!(e.to_string().contains("bootloader.efi.A"), "{e}");
    // Nothing was written.
    assert_eq!(
        vars.get_u16_list("BootOrder").expect("BootOrder"),
        vec![EFI_A]
    );
}

/// Two `Boot####` with slot B's description (the firmware recreated the
/// entry after an NVRAM reset, another tool's): abupdate cannot tell which
/// one boots B, and taking one would leave the other in `BootOrder` while B
/// is marked bad and written. Refused with one line naming both entries and
/// the key that settles it; nothing written. With `entry` set, the update
/// goes ahead.
#[test]
fn two_entries_with_a_slots_description_are_refused_until_entry_says_which() {
    let mut h = loaders::small_host("efi-duplicate", Loader::Efi, IMAGE_LEN);
    h.use_release(loaders::release(IMAGE_LEN));
    let vars = h.efi_vars();
    let b_entry = var_bytes(&h.efivars, &boot_name(EFI_B));
    std::fs::write(vars.path(&boot_name(0x0003), GLOBAL_GUID), &b_entry).expect("Boot0003");
    vars.set(
        "BootOrder",
        GLOBAL_GUID,
        NV_BS_RT,
        &u16_bytes(&[EFI_A, 0x0000, 0x0003]),
    )
    .expect("BootOrder");
    let before = (h.env(), h.slot_sha(1));
    for args in [&["update"][..], &["mark-bad", "B"]] {
        let out = h.abupdate(args);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {msg}");
        assert!(
            msg.lines().count() == 1
                && msg.contains(
                    "Boot0002 and Boot0003 both have slot B's description \"abupdate B\""
                )
                && msg.contains("set entry = 0x0002")
                && msg.contains("[bootloader.efi.B]"),
            "{args:?}: {msg}"
        );
        assert_eq!((h.env(), h.slot_sha(1)), before, "{args:?} wrote something");
    }
    assert_eq!(h.boot(), "A");

    let mut cfg = std::fs::read_to_string(&h.config).expect("config");
    cfg.push_str("\n[bootloader.efi.B]\nentry = 0x0002\n");
    std::fs::write(&h.config, cfg).expect("config");
    // --now: the refused update is a failure the timer backs off from.
    let out = h.abupdate(&["update", "--now"]);
    assert!(out.status.success(), "update: {}", text(&out));
    assert_eq!(h.env().get("BootNext").map(String::as_str), Some("0002"));
    assert_eq!(h.boot(), "B");
}
