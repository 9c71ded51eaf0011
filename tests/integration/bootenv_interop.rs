//! Our bootloader-environment codecs against the real tools: GRUB's
//! `grub-editenv`, libubootenv's `fw_printenv`/`fw_setenv`, U-Boot's
//! `mkimage`, `filefrag` for the in-place write, and a real U-Boot
//! (qemu_arm in QEMU) running `scripts/uboot/boot.cmd` from an environment
//! our backend wrote.
//!
//! The tools are required (Debian: grub2-common, libubootenv-tool,
//! u-boot-tools, e2fsprogs, u-boot-qemu, qemu-system-arm); a missing tool
//! fails the test, it does not skip it.

use abupdate::boot::grubenv::{self, GrubEnv};
use abupdate::boot::ubootenv::{self, UbootEnv, UbootEnvConfig};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "bootenv-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run a tool; its stdout. Panics with its stderr when it fails or is
/// missing.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); install the bootloader tools"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Bytes that the test knows to be text.
fn t(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("text")
}

// ---------------------------------------------------------------- GRUB --

#[test]
fn grub_editenv_lists_exactly_what_we_wrote() {
    let dir = scratch("grub-list");
    let file = dir.join("grubenv");
    let mut env = GrubEnv::new();
    let want = vars(&[
        ("ORDER", "B A"),
        ("A_OK", "1"),
        ("spaces", "a value with spaces"),
        ("equals", "x=y=z"),
        ("backslash", "C:\\boot\\"),
        ("newline", "line1\nline2"),
        ("empty", ""),
    ]);
    for (n, v) in &want {
        env.set(n, v).unwrap();
    }
    grubenv::write(&file, &env).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1024);
    let listed = run("grub-editenv", &[s(&file), "list"]);
    let expected: String = want
        .iter()
        .map(|(n, v)| format!("{}={}\n", t(n), t(v)))
        .collect();
    assert_eq!(listed, expected);
}

#[test]
fn we_read_what_grub_editenv_wrote_and_keep_foreign_variables() {
    let dir = scratch("grub-read");
    let file = dir.join("grubenv");
    run("grub-editenv", &[s(&file), "create"]);
    run(
        "grub-editenv",
        &[
            s(&file),
            "set",
            "saved_entry=gnulinux-advanced>x",
            "ORDER=A B",
            "eq=a=b",
            "bs=one\\two",
            "next_entry=",
        ],
    );
    let env = grubenv::read(&file).unwrap();
    assert_eq!(
        env.vars(),
        vars(&[
            ("saved_entry", "gnulinux-advanced>x"),
            ("ORDER", "A B"),
            ("eq", "a=b"),
            ("bs", "one\\two"),
            ("next_entry", ""),
        ])
    );

    // Change ours, add one; the foreign ones stay, in order.
    let mut env = env;
    env.set("ORDER", "B A").unwrap();
    env.set("B_OK", "1").unwrap();
    grubenv::write(&file, &env).unwrap();
    assert_eq!(
        run("grub-editenv", &[s(&file), "list"]),
        "saved_entry=gnulinux-advanced>x\nORDER=B A\neq=a=b\nbs=one\\two\nnext_entry=\nB_OK=1\n"
    );
    // And grub-editenv can keep editing what we wrote.
    run("grub-editenv", &[s(&file), "unset", "eq"]);
    run("grub-editenv", &[s(&file), "set", "A_OK=0"]);
    let env = grubenv::read(&file).unwrap();
    assert_eq!(env.get("eq"), None);
    assert_eq!(env.get("A_OK"), Some(&b"0"[..]));
    assert_eq!(env.get("saved_entry"), Some(&b"gnulinux-advanced>x"[..]));
}

/// Physical extents of a file from `filefrag -v`, or `None` where the file
/// system cannot tell (no FIEMAP).
fn extents(file: &Path) -> Option<Vec<String>> {
    let out = Command::new("filefrag").arg("-v").arg(file).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let ext: Vec<String> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.split(':')
                .next()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        // ext: logical: physical: length: [expected:] flags — keep the
        // physical range and length.
        .map(|l| {
            let cols: Vec<&str> = l.split(':').map(str::trim).collect();
            format!("{} {} {}", cols[1], cols[2], cols.get(3).unwrap_or(&""))
        })
        .collect();
    (!ext.is_empty()).then_some(ext)
}

fn sync_file(file: &Path) {
    std::fs::File::open(file).unwrap().sync_all().unwrap();
}

#[test]
fn our_write_is_in_place_same_inode_same_blocks() {
    let dir = scratch("grub-inplace");
    let file = dir.join("grubenv");
    run("grub-editenv", &[s(&file), "create"]);
    run("grub-editenv", &[s(&file), "set", "foreign=1"]);
    // fsync forces delayed allocation, so the extents are real.
    sync_file(&file);
    let before = std::fs::metadata(&file).unwrap();
    let ext_before = extents(&file);

    let mut env = grubenv::read(&file).unwrap();
    env.set("ORDER", "B A").unwrap();
    env.set("B_OK", "1").unwrap();
    env.set("B_TRY", "0").unwrap();
    grubenv::write(&file, &env).unwrap();
    sync_file(&file);

    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(
        after.ino(),
        before.ino(),
        "file was replaced, not rewritten"
    );
    assert_eq!(after.dev(), before.dev());
    assert_eq!(after.len(), 1024);
    assert_eq!(after.blocks(), before.blocks());
    match (ext_before, extents(&file)) {
        (Some(b), Some(a)) => assert_eq!(a, b, "data moved to other blocks"),
        (None, None) => eprintln!("no FIEMAP here: checked inode and block count only"),
        (b, a) => panic!("extents readable only once: {b:?} / {a:?}"),
    }
    assert_eq!(
        run("grub-editenv", &[s(&file), "list"]),
        "foreign=1\nORDER=B A\nB_OK=1\nB_TRY=0\n"
    );
}

#[test]
fn a_missing_grubenv_is_created_full_size_and_a_wrong_size_one_is_refused() {
    let dir = scratch("grub-create");
    let file = dir.join("grubenv");
    let mut env = GrubEnv::new();
    env.set("ORDER", "A B").unwrap();
    grubenv::write(&file, &env).unwrap();
    sync_file(&file);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 1024);
    // Not sparse: the block is allocated (st_blocks counts 512-byte units).
    assert!(meta.blocks() >= 2, "blocks: {}", meta.blocks());
    assert_eq!(run("grub-editenv", &[s(&file), "list"]), "ORDER=A B\n");

    let odd = dir.join("odd");
    std::fs::write(&odd, vec![b'#'; 2048]).unwrap();
    let err = grubenv::write(&odd, &env).unwrap_err().to_string();
    assert!(err.contains("odd") && err.contains("2048"), "{err}");
    assert_eq!(std::fs::read(&odd).unwrap(), vec![b'#'; 2048]);
    let err = grubenv::read(&odd).unwrap_err().to_string();
    assert!(err.contains("odd"), "{err}");
}

#[test]
fn a_change_across_both_sectors_is_refused_and_the_file_is_untouched() {
    let dir = scratch("grub-full");
    let file = dir.join("grubenv");
    run("grub-editenv", &[s(&file), "create"]);
    let before = std::fs::read(&file).unwrap();
    let mut env = grubenv::read(&file).unwrap();
    env.set("big", "x".repeat(600)).unwrap();
    let err = grubenv::write(&file, &env).unwrap_err().to_string();
    assert!(err.contains("grubenv") && err.contains("sector"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

// -------------------------------------------------------------- U-Boot --

const COPY: usize = 0x4000;

/// An env file of two copies' room and a config for it.
fn uboot_setup(name: &str, redundant: bool) -> (PathBuf, PathBuf, UbootEnvConfig) {
    let dir = scratch(name);
    let file = dir.join("uboot.env");
    std::fs::write(&file, vec![0u8; 2 * COPY]).unwrap();
    let conf = dir.join("fw_env.config");
    let mut text = format!("# test env\n{} 0x0 {COPY:#x}\n", s(&file));
    if redundant {
        text.push_str(&format!("{} 0x4000 0x4000\n", s(&file)));
    }
    std::fs::write(&conf, text).unwrap();
    let cfg = UbootEnvConfig::load(&conf).unwrap();
    assert_eq!(cfg.redundant(), redundant);
    (file, conf, cfg)
}

/// What `fw_printenv` shows, as a map (it sorts names).
fn fw_printenv(conf: &Path) -> BTreeMap<String, String> {
    run("fw_printenv", &["-c", s(conf)])
        .lines()
        .map(|l| {
            let (n, v) = l.split_once('=').expect("name=value");
            (n.to_string(), v.to_string())
        })
        .collect()
}

fn fw_setenv(conf: &Path, name: &str, value: &str) {
    run("fw_setenv", &["-c", s(conf), name, value]);
}

fn ours(cfg: &UbootEnvConfig) -> BTreeMap<String, String> {
    as_map(&ubootenv::read(cfg).unwrap())
}

fn sample_env() -> UbootEnv {
    let mut env = UbootEnv::new();
    env.set("bootcmd", "run distro_bootcmd; reset").unwrap();
    env.set("BOOT_ORDER", "A B").unwrap();
    env.set("BOOT_A_LEFT", "3").unwrap();
    env.set("BOOT_B_LEFT", "3").unwrap();
    env.set("args", "console=ttyS0,115200 root=/dev/mmcblk0p2 x=y")
        .unwrap();
    env
}

fn as_map(env: &UbootEnv) -> BTreeMap<String, String> {
    env.vars().into_iter().map(|(n, v)| (t(n), t(v))).collect()
}

#[test]
fn fw_printenv_reads_our_single_and_redundant_env() {
    for redundant in [false, true] {
        let (_, conf, cfg) = uboot_setup("uboot-read", redundant);
        let env = sample_env();
        ubootenv::write(&cfg, &env).unwrap();
        assert_eq!(fw_printenv(&conf), as_map(&env), "redundant={redundant}");
        // And again, now that there is a valid copy to supersede.
        let mut env = env;
        env.set("BOOT_ORDER", "B A").unwrap();
        ubootenv::write(&cfg, &env).unwrap();
        assert_eq!(fw_printenv(&conf), as_map(&env), "redundant={redundant}");
        assert_eq!(ours(&cfg), as_map(&env));
    }
}

#[test]
fn we_read_what_fw_setenv_wrote() {
    for redundant in [false, true] {
        let (_, conf, cfg) = uboot_setup("uboot-setenv", redundant);
        ubootenv::write(&cfg, &sample_env()).unwrap();
        fw_setenv(&conf, "BOOT_B_LEFT", "2");
        fw_setenv(&conf, "spaced", "a b  c=d");
        let mut want = as_map(&sample_env());
        want.insert("BOOT_B_LEFT".into(), "2".into());
        want.insert("spaced".into(), "a b  c=d".into());
        assert_eq!(ours(&cfg), want, "redundant={redundant}");
        // fw_setenv with no value deletes.
        run("fw_setenv", &["-c", s(&conf), "spaced"]);
        want.remove("spaced");
        assert_eq!(ours(&cfg), want);
    }
}

#[test]
fn fifty_alternating_writes_keep_both_sides_in_agreement() {
    let (file, conf, cfg) = uboot_setup("uboot-alternate", true);
    ubootenv::write(&cfg, &sample_env()).unwrap();
    for i in 0..50u32 {
        let value = format!("{i:x}");
        if i % 2 == 0 {
            let mut env = ubootenv::read(&cfg).unwrap();
            env.set("BOOT_A_LEFT", &value).unwrap();
            env.set(format!("ours{i}"), "x").unwrap();
            ubootenv::write(&cfg, &env).unwrap();
        } else {
            fw_setenv(&conf, "BOOT_A_LEFT", &value);
        }
        let theirs = fw_printenv(&conf);
        assert_eq!(ours(&cfg), theirs, "after write {i}");
        assert_eq!(theirs["BOOT_A_LEFT"], value);
    }
    // Each write went to the other copy with the next flag: 51 writes from
    // an all-zero file, the first to copy 1 (as libubootenv: both invalid
    // means copy 0 is "current").
    let raw = std::fs::read(&file).unwrap();
    let (f0, f1) = (raw[4], raw[COPY + 4]);
    assert_eq!(ubootenv::read(&cfg).unwrap().flag(), Some(f0.max(f1)));
    assert_eq!(f0.abs_diff(f1), 1, "flags {f0} {f1}");
}

fn flip(file: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn one_corrupt_copy_falls_back_to_the_other_for_both_readers() {
    let (file, conf, cfg) = uboot_setup("uboot-corrupt", true);
    let old = sample_env();
    ubootenv::write(&cfg, &old).unwrap(); // copy 1
    let mut new = old.clone();
    new.set("BOOT_ORDER", "B A").unwrap();
    new.set("BOOT_B_LEFT", "3").unwrap();
    ubootenv::write(&cfg, &new).unwrap(); // copy 0
    assert_eq!(ubootenv::read(&cfg).unwrap().copy(), 0);

    // A torn write of the newer copy: readers go back to the older one.
    flip(&file, 20);
    assert_eq!(fw_printenv(&conf), as_map(&old));
    assert_eq!(ours(&cfg), as_map(&old));
    assert_eq!(ubootenv::read(&cfg).unwrap().copy(), 1);

    // Our next write must go over the broken copy, not the good one.
    let mut third = old.clone();
    third.set("n", "3").unwrap();
    ubootenv::write(&cfg, &third).unwrap();
    assert_eq!(ubootenv::read(&cfg).unwrap().copy(), 0);
    assert_eq!(fw_printenv(&conf), as_map(&third));

    // Break the other copy too: both readers fail, and we say why.
    flip(&file, 20);
    flip(&file, COPY as u64 + 30);
    let err = ubootenv::read(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("fw_env.config") && err.contains("no valid U-Boot environment copy"),
        "{err}"
    );
    assert!(err.contains("CRC"), "{err}");
    let out = Command::new("fw_printenv")
        .args(["-c", s(&conf)])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Write raw copies with given flags, bypassing our writer.
fn raw_copies(file: &Path, copies: [(&UbootEnv, u8); 2]) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    for (i, (env, flag)) in copies.iter().enumerate() {
        let img = env.encode_copy(COPY, Some(*flag)).unwrap();
        f.write_all_at(&img, (i * COPY) as u64).unwrap();
    }
}

#[test]
fn flag_order_and_wrap_around_agree_with_libubootenv() {
    let (file, conf, cfg) = uboot_setup("uboot-wrap", true);
    let mut a = UbootEnv::new();
    a.set("which", "copy0").unwrap();
    let mut b = UbootEnv::new();
    b.set("which", "copy1").unwrap();
    for (flags, winner) in [
        ([5u8, 4u8], "copy0"),
        ([4, 5], "copy1"),
        ([7, 7], "copy0"),
        ([0xff, 0], "copy1"),
        ([0, 0xff], "copy0"),
        ([0xfe, 0xff], "copy1"),
    ] {
        raw_copies(&file, [(&a, flags[0]), (&b, flags[1])]);
        assert_eq!(fw_printenv(&conf)["which"], winner, "flags {flags:?}");
        assert_eq!(ours(&cfg)["which"], winner, "flags {flags:?}");
    }
    // From 0xff/0 (copy 1 current), our write goes to copy 0 with flag 1.
    raw_copies(&file, [(&a, 0xff), (&b, 0)]);
    let mut c = UbootEnv::new();
    c.set("which", "ours").unwrap();
    ubootenv::write(&cfg, &c).unwrap();
    let raw = std::fs::read(&file).unwrap();
    assert_eq!((raw[4], raw[COPY + 4]), (1, 0));
    assert_eq!(fw_printenv(&conf)["which"], "ours");
    fw_setenv(&conf, "which", "theirs");
    let raw = std::fs::read(&file).unwrap();
    assert_eq!((raw[4], raw[COPY + 4]), (1, 2));
    assert_eq!(ours(&cfg)["which"], "theirs");
}

#[test]
fn an_env_padded_with_0xff_like_mkenvimage_reads_too() {
    let (file, conf, cfg) = uboot_setup("uboot-ff", false);
    let mut data = b"bootdelay=2\0BOOT_ORDER=A B\0\0".to_vec();
    data.resize(COPY - 4, 0xff);
    let mut img = ubootenv::crc32(&data).to_le_bytes().to_vec();
    img.extend_from_slice(&data);
    std::fs::write(&file, &img).unwrap();
    let want: BTreeMap<String, String> = [("bootdelay", "2"), ("BOOT_ORDER", "A B")]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(fw_printenv(&conf), want);
    assert_eq!(ours(&cfg), want);
}

#[test]
fn uboot_boot_script_compiles_with_mkimage() {
    let dir = scratch("mkimage");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/uboot/boot.cmd");
    let out = dir.join("boot.scr");
    run(
        "mkimage",
        &[
            "-A",
            "arm",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            "abupdate",
            "-d",
            s(&src),
            s(&out),
        ],
    );
    let listed = run("mkimage", &["-l", s(&out)]);
    assert!(listed.contains("Script"), "{listed}");
    // The script uses exactly the variables the backend writes.
    let text = std::fs::read_to_string(&src).unwrap();
    for v in [
        "BOOT_ORDER",
        "BOOT_A_LEFT",
        "BOOT_B_LEFT",
        "abupdate.slot=",
        "rauc.slot=",
    ] {
        assert!(text.contains(v), "{v} missing from boot.cmd");
    }
}

// ------------------------------------------- boot.cmd in a real U-Boot --

const UBOOT_QEMU: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
/// qemu_arm keeps a single-copy environment of 0x40000 bytes at the start
/// of the second flash bank.
const QEMU_ENV_SIZE: usize = 0x40000;
const FLASH_SIZE: u64 = 64 << 20;

/// Boot U-Boot (Debian's u-boot-qemu, qemu_arm) once in QEMU with the
/// environment in `flash1` and our compiled boot script served over TFTP;
/// the serial output until U-Boot resets (QEMU exits, `-no-reboot`).
fn boot_uboot_once(dir: &Path, flash1: &Path) -> String {
    use std::io::Read;
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-M",
            "virt",
            "-m",
            "128",
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,file={}",
            s(&dir.join("flash0.img"))
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", s(flash1)))
        .arg("-nic")
        .arg(format!("user,tftp={}", s(dir)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run qemu-system-arm ({e}); install qemu-system-arm"));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "U-Boot did not reset within 120 s:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn boot_script_in_real_uboot_boots_what_the_backend_predicts() {
    use abupdate::boot::uboot::UbootBackend;
    use abupdate::boot::{BootState, Bootloader};
    use abupdate::slot::SlotName::{self, A, B};

    assert!(
        Path::new(UBOOT_QEMU).exists(),
        "{UBOOT_QEMU} missing; install u-boot-qemu"
    );
    let dir = scratch("uboot-qemu");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/uboot/boot.cmd");
    run(
        "mkimage",
        &[
            "-A",
            "arm",
            "-T",
            "script",
            "-C",
            "none",
            "-d",
            s(&src),
            s(&dir.join("boot.scr")),
        ],
    );
    std::fs::copy(UBOOT_QEMU, dir.join("flash0.img")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("flash0.img"))
        .unwrap()
        .set_len(FLASH_SIZE)
        .unwrap();

    // What U-Boot needs besides our variables: no delay, fetch and run the
    // script, and a stand-in for loading the kernel that reports what the
    // script chose (then the script resets, which ends QEMU).
    let base: &[(&str, &str)] = &[
        ("bootdelay", "0"),
        ("scriptaddr", "0x40200000"),
        (
            "bootcmd",
            "dhcp ${scriptaddr} boot.scr; source ${scriptaddr}",
        ),
        ("default_bootargs", "console=ttyAMA0"),
        (
            "abupdate_boot",
            "echo ABUPDATE-BOOT ${abupdate_slot} ${BOOT_A_LEFT} ${BOOT_B_LEFT} ${bootargs}",
        ),
    ];
    type Prep = fn(&UbootBackend);
    /// The slot booted and both counters after the boot; `None`: no slot
    /// had attempts left.
    type Booted = Option<(SlotName, &'static str, &'static str)>;
    type Vars = &'static [(&'static str, &'static str)];
    let scenarios: &[(&str, Vars, Prep, Booted)] = &[
        (
            "activate B",
            &[
                ("BOOT_ORDER", "A B"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "0"),
            ],
            |b| b.activate(B).unwrap(),
            Some((B, "3", "2")),
        ),
        (
            "B used up: A",
            &[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "0"),
            ],
            |_| (),
            Some((A, "2", "0")),
        ),
        (
            "B rejected: A",
            &[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "2"),
            ],
            |b| b.set_state(B, BootState::Bad).unwrap(),
            Some((A, "2", "0")),
        ),
        ("no variables: defaults", &[], |_| (), Some((A, "2", "3"))),
        (
            "hex counters",
            &[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "10"),
            ],
            |_| (),
            Some((B, "3", "f")),
        ),
        (
            "all used up: reset",
            &[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "0"),
                ("BOOT_B_LEFT", "0"),
            ],
            |_| (),
            None,
        ),
    ];
    for (i, (name, start, prep, want)) in scenarios.iter().enumerate() {
        let flash1 = dir.join(format!("flash1-{i}.img"));
        std::fs::File::create(&flash1)
            .unwrap()
            .set_len(FLASH_SIZE)
            .unwrap();
        let conf = dir.join(format!("fw_env-{i}.config"));
        std::fs::write(&conf, format!("{} 0x0 {QEMU_ENV_SIZE:#x}\n", s(&flash1))).unwrap();
        let cfg = UbootEnvConfig::load(&conf).unwrap();
        let mut env = UbootEnv::new();
        for (n, v) in base.iter().chain(start.iter()) {
            env.set(n, v).unwrap();
        }
        ubootenv::write(&cfg, &env).unwrap();
        let backend = UbootBackend::new(conf, 3).unwrap();
        prep(&backend);
        let predicted = backend.primary().unwrap();

        let out = boot_uboot_once(&dir, &flash1);
        assert!(
            out.contains("Loading Environment from Flash... OK"),
            "{name}: U-Boot did not accept our environment:\n{out}"
        );
        let line = out.lines().find(|l| l.starts_with("ABUPDATE-BOOT "));
        match want {
            Some((slot, a_left, b_left)) => {
                let line = line.unwrap_or_else(|| panic!("{name}: no boot:\n{out}"));
                let expected = format!(
                    "ABUPDATE-BOOT {slot} {a_left} {b_left} console=ttyAMA0 root=/dev/mmcblk0p{} \
                     abupdate.slot={slot} rauc.slot={slot}",
                    if *slot == A { 2 } else { 3 }
                );
                assert_eq!(line.trim_end(), expected, "{name}");
                assert_eq!(
                    predicted,
                    Some(*slot),
                    "{name}: backend predicted otherwise"
                );
            }
            None => {
                assert!(line.is_none(), "{name}: booted:\n{out}");
                assert!(
                    out.contains("no slot has attempts left; resetting both to 3"),
                    "{name}:\n{out}"
                );
                // After the reset the script boots the first in BOOT_ORDER.
                assert_eq!(predicted, Some(B), "{name}");
            }
        }
    }
}

// ------------------------------------------------ bytes, not text (#13) --

use abupdate::boot::ubootenv::{select_copy, FlagScheme};
use abupdate::boot::{BootState, Bootloader};
use abupdate::slot::SlotName;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Run a tool with byte arguments; its stdout bytes. Panics with its
/// stderr when it fails.
fn run_bytes(cmd: &str, args: &[&[u8]]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e})"));
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What `fw_printenv` prints for `env`: each variable once (its last
/// value), sorted by name bytes as libubootenv keeps its list.
fn uboot_listing(env: &UbootEnv) -> Vec<u8> {
    let mut vars = env.vars();
    vars.sort();
    let mut out = Vec::new();
    for (n, v) in vars {
        out.extend_from_slice(n);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// What `grub-editenv list` prints for `env`: file order.
fn grub_listing(env: &GrubEnv) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in env.vars() {
        out.extend_from_slice(n);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn copy_of(raw: &[u8], i: usize) -> &[u8] {
    &raw[i * COPY..(i + 1) * COPY]
}

/// The reproduction, on the backend `mark-good` uses:
/// `fw_setenv ethaddr …; fw_setenv splash $'\xff\xfe\x01'` on a redundant
/// env, then mark A good. The copy U-Boot uses (the one holding `splash`)
/// must not be written; the other copy gets the next flag and every
/// variable, `splash` byte for byte.
#[test]
fn uboot_copy_in_use_with_a_non_utf8_value_stays_intact_and_the_other_copy_is_written() {
    let (file, conf, cfg) = uboot_setup("uboot-nonutf8", true);
    ubootenv::write(&cfg, &sample_env()).unwrap();
    fw_setenv(&conf, "ethaddr", "00:11:22:33:44:55");
    run_bytes(
        "fw_setenv",
        &[
            b"-c",
            conf.as_os_str().as_bytes(),
            b"splash",
            b"\xff\xfe\x01",
        ],
    );
    let before = std::fs::read(&file).unwrap();
    let flags = [before[4], before[COPY + 4]];
    let in_use = select_copy(FlagScheme::Incremental, [true, true], flags).unwrap();
    assert_eq!(
        ubootenv::read(&cfg).unwrap().copy(),
        in_use,
        "we read another copy than the readers"
    );

    let backend = abupdate::boot::uboot::UbootBackend::new(conf.clone(), 1).unwrap();
    backend.set_state(SlotName::A, BootState::Good).unwrap();

    let after = std::fs::read(&file).unwrap();
    assert!(
        copy_of(&after, in_use) == copy_of(&before, in_use),
        "the copy in use (flag {}) was written",
        flags[in_use]
    );
    let other = 1 - in_use;
    assert_eq!(after[other * COPY + 4], flags[in_use].wrapping_add(1));
    let env = ubootenv::read(&cfg).unwrap();
    assert_eq!(env.copy(), other);
    assert_eq!(env.get("splash"), Some(&b"\xff\xfe\x01"[..]));
    assert_eq!(env.get("ethaddr"), Some(&b"00:11:22:33:44:55"[..]));
    assert_eq!(
        run_bytes(
            "fw_printenv",
            &[b"-c", conf.as_os_str().as_bytes(), b"-n", b"splash"]
        ),
        b"\xff\xfe\x01\n"
    );
    assert_eq!(
        run_bytes("fw_printenv", &[b"-c", conf.as_os_str().as_bytes()]),
        uboot_listing(&env)
    );
}

/// Single copy: a value that is not UTF-8 is read (as `fw_printenv` reads
/// it) and kept by every write.
#[test]
fn uboot_single_copy_with_a_non_utf8_value_is_read_and_kept() {
    let (_, conf, cfg) = uboot_setup("uboot-single-nonutf8", false);
    ubootenv::write(&cfg, &sample_env()).unwrap();
    let c = conf.as_os_str().as_bytes();
    run_bytes("fw_setenv", &[b"-c", c, b"splash", b"\xff\xfe\x01"]);
    let backend = abupdate::boot::uboot::UbootBackend::new(conf.clone(), 1).unwrap();
    backend.set_state(SlotName::B, BootState::Bad).unwrap();
    backend.activate(SlotName::B).unwrap();
    backend.set_state(SlotName::B, BootState::Good).unwrap();
    let env = ubootenv::read(&cfg).unwrap();
    assert_eq!(env.get("splash"), Some(&b"\xff\xfe\x01"[..]));
    assert_eq!(env.get("BOOT_ORDER"), Some(&b"B A"[..]));
    assert_eq!(run_bytes("fw_printenv", &[b"-c", c]), uboot_listing(&env));
}

/// A grubenv value that is not UTF-8 (`grub-editenv grubenv set
/// splash=$'\xff\xfe'`) does not block the re-bless, and stays as it was.
#[test]
fn grubenv_with_a_non_utf8_value_is_rewritten_keeping_it() {
    let dir = scratch("grub-nonutf8");
    let file = dir.join("grubenv");
    let f = file.as_os_str().as_bytes();
    run_bytes("grub-editenv", &[f, b"create"]);
    run_bytes(
        "grub-editenv",
        &[
            f,
            b"set",
            b"splash=\xff\xfe",
            b"A_OK=1",
            b"A_TRY=1",
            b"ORDER=A B",
        ],
    );
    let backend = abupdate::boot::grub::GrubBackend::new(file.clone(), 1);
    backend.set_state(SlotName::A, BootState::Good).unwrap();
    let env = grubenv::read(&file).unwrap();
    assert_eq!(env.get("splash"), Some(&b"\xff\xfe"[..]));
    assert_eq!(env.get("A_TRY"), Some(&b"0"[..]));
    assert_eq!(
        run_bytes("grub-editenv", &[f, b"list"]),
        b"splash=\xff\xfe\nA_OK=1\nA_TRY=0\nORDER=A B\n"
    );
}

/// The current copy is the one whose CRC holds and whose flag is newer,
/// whatever its data says. When that data cannot be read as a string list
/// (U-Boot's import fails on it, libubootenv reads past its end), we say
/// so, naming the copy, and write nothing: never the older copy's
/// variables over it.
#[test]
fn a_current_copy_whose_data_does_not_parse_is_an_error_and_is_not_written() {
    let (file, conf, cfg) = uboot_setup("uboot-unparsable", true);
    let img0 = sample_env().encode_copy(COPY, Some(1)).unwrap();
    let data = vec![b'a'; COPY - 5];
    let mut img1 = ubootenv::crc32(&data).to_le_bytes().to_vec();
    img1.push(2);
    img1.extend_from_slice(&data);
    let mut raw = img0;
    raw.extend_from_slice(&img1);
    std::fs::write(&file, &raw).unwrap();

    let err = ubootenv::read(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("fw_env.config") && err.contains("@0x4000") && err.contains("not terminated"),
        "{err}"
    );
    let backend = abupdate::boot::uboot::UbootBackend::new(conf.clone(), 1).unwrap();
    assert!(backend.set_state(SlotName::A, BootState::Good).is_err());
    assert!(std::fs::read(&file).unwrap() == raw, "the env was written");
    // libubootenv, too, stays on that copy (0.3.2 lists nothing from it):
    // it never falls back to the older copy's variables.
    let out = Command::new("fw_printenv")
        .args(["-c", s(&conf)])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains("bootcmd="),
        "fw_printenv fell back: {listed}"
    );
}

#[test]
fn a_wrong_size_grubenv_is_reported_with_its_own_size() {
    let dir = scratch("grub-size");
    let file = dir.join("grubenv");
    let mut block = GrubEnv::new().to_block().unwrap().to_vec();
    block.resize(2048, b'#');
    std::fs::write(&file, &block).unwrap();
    let err = grubenv::read(&file).unwrap_err().to_string();
    assert!(
        err.contains("grubenv") && err.contains("2048 bytes") && !err.contains("1025"),
        "{err}"
    );
    let err = grubenv::write(&file, &GrubEnv::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("2048 bytes"), "{err}");
}

#[test]
fn a_short_uboot_env_file_is_reported_with_the_copy_it_lacks() {
    let (file, _, cfg) = uboot_setup("uboot-short", false);
    std::fs::write(&file, vec![0u8; 100]).unwrap();
    let err = ubootenv::read(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("uboot.env") && err.contains("ends before") && err.contains("0x4000 bytes"),
        "{err}"
    );
}

/// `fw_env.config` names devices by path, and a path is bytes.
#[test]
fn fw_env_config_with_a_non_utf8_device_path_is_read_as_bytes() {
    let dir = scratch("uboot-path");
    let mut name = dir.as_os_str().as_bytes().to_vec();
    name.extend_from_slice(b"/env-\xff.bin");
    let env_file = PathBuf::from(OsStr::from_bytes(&name));
    std::fs::write(&env_file, vec![0u8; COPY]).unwrap();
    let conf = dir.join("fw_env.config");
    let mut text = name.clone();
    text.extend_from_slice(b" 0x0 0x4000\n");
    std::fs::write(&conf, &text).unwrap();
    let cfg = UbootEnvConfig::load(&conf).unwrap();
    assert_eq!(cfg.devices()[0].path, env_file);
    ubootenv::write(&cfg, &sample_env()).unwrap();
    assert_eq!(fw_printenv(&conf), as_map(&sample_env()));
}

/// A tiny deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Bytes biased towards the ones parsers trip on.
    fn bytes(&mut self, max: usize, forbidden: &[u8]) -> Vec<u8> {
        let len = self.below(max + 1);
        let special = b"=\n\\# \t\xff\xfe\x80\xc3AB0";
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let b = match self.below(3) {
                0 => special[self.below(special.len())],
                1 => b'a' + self.below(26) as u8,
                _ => self.next() as u8,
            };
            if !forbidden.contains(&b) {
                out.push(b);
            }
        }
        out
    }
}

const OURS_UBOOT: [&[u8]; 3] = [b"BOOT_ORDER", b"BOOT_A_LEFT", b"BOOT_B_LEFT"];
const OURS_GRUB: [&[u8]; 7] = [
    b"ORDER", b"A_OK", b"A_TRY", b"A_LEFT", b"B_OK", b"B_TRY", b"B_LEFT",
];

#[derive(Clone, Copy, Debug)]
enum Op {
    Good(SlotName),
    Bad(SlotName),
    Activate(SlotName),
}

fn apply_op(b: &dyn Bootloader, op: Op) -> Result<(), abupdate::boot::BootError> {
    match op {
        Op::Good(s) => b.set_state(s, BootState::Good),
        Op::Bad(s) => b.set_state(s, BootState::Bad),
        Op::Activate(s) => b.activate(s),
    }
}

fn random_op(rng: &mut Rng) -> Op {
    let slot = if rng.below(2) == 0 {
        SlotName::A
    } else {
        SlotName::B
    };
    match rng.below(3) {
        0 => Op::Good(slot),
        1 => Op::Bad(slot),
        _ => Op::Activate(slot),
    }
}

/// A U-Boot entry: sometimes ours (with garbage or real words), sometimes
/// a repeat of an earlier name, sometimes a string without '='.
fn uboot_entry(rng: &mut Rng, earlier: &[Vec<u8>]) -> Vec<u8> {
    let name = match rng.below(6) {
        0 => OURS_UBOOT[rng.below(3)].to_vec(),
        1 if !earlier.is_empty() => {
            let e = &earlier[rng.below(earlier.len())];
            e.split(|&b| b == b'=').next().unwrap().to_vec()
        }
        _ => {
            let mut n = rng.bytes(8, b"=\0");
            if n.is_empty() || n.starts_with(b".") {
                n.insert(0, b'v');
            }
            n
        }
    };
    let mut e = name;
    if rng.below(10) != 0 {
        e.push(b'=');
        if rng.below(3) == 0 {
            e.extend_from_slice([&b"A B"[..], b"B A", b"3", b"0", b"1", b"A"][rng.below(6)]);
        } else {
            e.extend_from_slice(&rng.bytes(40, b"\0"));
        }
    }
    e
}

fn raw_copy(entries: &[Vec<u8>], redundant: bool, flag: u8, corrupt: bool) -> Vec<u8> {
    let header = if redundant { 5 } else { 4 };
    let mut data = Vec::new();
    for e in entries {
        data.extend_from_slice(e);
        data.push(0);
    }
    data.push(0);
    // Padding as U-Boot (0) or mkenvimage (0xff) leaves it.
    let pad = if flag % 2 == 0 { 0 } else { 0xff };
    data.resize(COPY - header, pad);
    let mut crc = ubootenv::crc32(&data);
    if corrupt {
        crc ^= 1;
    }
    let mut out = crc.to_le_bytes().to_vec();
    if redundant {
        out.push(flag);
    }
    out.extend_from_slice(&data);
    out
}

fn not_ours<'a>(entries: &'a [Vec<u8>], ours: &[&[u8]]) -> Vec<&'a [u8]> {
    entries
        .iter()
        .map(Vec::as_slice)
        .filter(|e| {
            let name = e.split(|&b| b == b'=').next().unwrap();
            !ours.contains(&name)
        })
        .collect()
}

/// The property the issue asks for, on random environments full of bytes
/// that are not text (fixed seed): every backend change leaves every
/// variable it does not own byte for byte (order, repeats and strings
/// without '=' included), U-Boot's copy in use is never written and the
/// written copy carries the next flag (across the 0xff→0 wrap too), and the
/// result is what the real readers read: `fw_printenv` and `grub-editenv`
/// list exactly our view of it (on a subset of the cases; every case is
/// checked against our reader).
#[test]
fn env_codecs_keep_arbitrary_bytes_of_variables_they_do_not_change() {
    let mut rng = Rng(0x5eed_ab0d_a7e5_0013);
    let (mut real_uboot, mut real_grub) = (0, 0);
    for case in 0..400 {
        // ---- U-Boot, single or redundant
        let redundant = rng.below(3) != 0;
        let (file, conf, cfg) = uboot_setup("prop-uboot", redundant);
        let mut entries = Vec::new();
        for _ in 0..rng.below(12) {
            let e = uboot_entry(&mut rng, &entries);
            entries.push(e);
        }
        let older: Vec<Vec<u8>> = vec![b"older=1".to_vec()];
        let flags = [
            [0u8, 1, 0xfe, 0xff, 7][rng.below(5)],
            [0u8, 1, 0xfe, 0xff, 8][rng.below(5)],
        ];
        let (in_use, raw) = if redundant {
            let in_use = select_copy(FlagScheme::Incremental, [true, true], flags).unwrap();
            // Sometimes the older copy is torn: the current one still wins.
            let torn_older = rng.below(4) == 0;
            let mut raw = Vec::new();
            for (i, flag) in flags.iter().enumerate() {
                raw.extend_from_slice(&if i == in_use {
                    raw_copy(&entries, true, *flag, false)
                } else {
                    raw_copy(&older, true, *flag, torn_older)
                });
            }
            (in_use, raw)
        } else {
            let mut raw = raw_copy(&entries, false, flags[0], false);
            raw.resize(2 * COPY, 0);
            (0, raw)
        };
        std::fs::write(&file, &raw).unwrap();
        let before = ubootenv::read(&cfg).unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(before.entries(), entries.as_slice(), "case {case}: read");
        let op = random_op(&mut rng);
        let tries = 1 + rng.below(3) as u32;
        let backend = abupdate::boot::uboot::UbootBackend::new(conf.clone(), tries).unwrap();
        apply_op(&backend, op).unwrap_or_else(|e| panic!("case {case} {op:?}: {e}"));
        let after_raw = std::fs::read(&file).unwrap();
        let after = ubootenv::read(&cfg).unwrap();
        if redundant {
            assert!(
                copy_of(&after_raw, in_use) == copy_of(&raw, in_use),
                "case {case} {op:?}: copy in use written"
            );
            assert_eq!(after.copy(), 1 - in_use, "case {case}");
            assert_eq!(
                after.flag(),
                Some(flags[in_use].wrapping_add(1)),
                "case {case}"
            );
        }
        assert_eq!(
            not_ours(after.entries(), &OURS_UBOOT),
            not_ours(&entries, &OURS_UBOOT),
            "case {case} {op:?}: a variable we do not own changed"
        );
        let (slot, left) = match op {
            Op::Good(s) => (s, "3".to_string()),
            Op::Bad(s) => (s, "0".to_string()),
            Op::Activate(s) => (s, format!("{tries:x}")),
        };
        assert_eq!(
            after.get(format!("BOOT_{slot}_LEFT")),
            Some(left.as_bytes()),
            "case {case} {op:?}"
        );
        if case % 8 == 0 {
            real_uboot += 1;
            let listed = run_bytes("fw_printenv", &[b"-c", conf.as_os_str().as_bytes()]);
            assert_eq!(
                String::from_utf8_lossy(&listed),
                String::from_utf8_lossy(&uboot_listing(&after)),
                "case {case} {op:?}: fw_printenv"
            );
            assert_eq!(listed, uboot_listing(&after), "case {case}");
        }

        // ---- GRUB
        let dir = scratch("prop-grub");
        let gfile = dir.join("grubenv");
        let mut env = GrubEnv::new();
        for _ in 0..rng.below(8) {
            let name = if rng.below(4) == 0 {
                OURS_GRUB[rng.below(OURS_GRUB.len())].to_vec()
            } else {
                let mut n = rng.bytes(8, b"=\n\0");
                if n.is_empty() || n[0] == b'#' {
                    n.insert(0, b'v');
                }
                n
            };
            let value = rng.bytes(30, b"\0");
            env.set(&name, &value).unwrap();
        }
        // Leave room for what the backend adds (the first sector).
        while env.to_block().is_err() || grub_listing(&env).len() > 300 {
            let first = env.vars()[0].0.clone();
            env.remove(&first);
        }
        // Half the time the real tool writes the starting block.
        let by_tool = case % 2 == 0;
        if by_tool {
            let g = gfile.as_os_str().as_bytes();
            run_bytes("grub-editenv", &[g, b"create"]);
            if !env.vars().is_empty() {
                let args: Vec<Vec<u8>> = env
                    .vars()
                    .iter()
                    .map(|(n, v)| [&n[..], b"=", &v[..]].concat())
                    .collect();
                let mut all: Vec<&[u8]> = vec![g, b"set"];
                all.extend(args.iter().map(Vec::as_slice));
                run_bytes("grub-editenv", &all);
            }
        } else {
            grubenv::write(&gfile, &env).unwrap();
        }
        let before = grubenv::read(&gfile).unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(before, env, "case {case}: read what was written");
        let op = random_op(&mut rng);
        let tries = 1 + rng.below(3) as u32;
        let backend = abupdate::boot::grub::GrubBackend::new(gfile.clone(), tries);
        apply_op(&backend, op).unwrap_or_else(|e| panic!("case {case} {op:?}: {e}"));
        let after = grubenv::read(&gfile).unwrap();
        let keep = |e: &GrubEnv| -> Vec<(Vec<u8>, Vec<u8>)> {
            e.vars()
                .iter()
                .filter(|(n, _)| !OURS_GRUB.contains(&n.as_slice()))
                .cloned()
                .collect()
        };
        assert_eq!(keep(&after), keep(&env), "case {case} {op:?}: grub");
        if case % 8 == 1 || by_tool && case % 8 == 0 {
            real_grub += 1;
            let listed = run_bytes("grub-editenv", &[gfile.as_os_str().as_bytes(), b"list"]);
            assert_eq!(
                listed,
                grub_listing(&after),
                "case {case} {op:?}: grub-editenv"
            );
        }
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("400 cases; fw_printenv checked {real_uboot}, grub-editenv {real_grub}");
}
