//! RAUC's slot transitions on each backend (GRUB, U-Boot, EFI,
//! systemd-boot), as tables: start environment → operation → the whole
//! environment after, and what each backend then says about the slots. Every end state is also read back with the real tool
//! (`grub-editenv`, `fw_printenv`), and every U-Boot change is checked to be
//! exactly one environment write (the redundant flag advances by one).

use abupdate::boot::custom::CustomBackend;
use abupdate::boot::grub::GrubBackend;
use abupdate::boot::grubenv::{self, GrubEnv};
use abupdate::boot::uboot::UbootBackend;
use abupdate::boot::ubootenv::{self, UbootEnv, UbootEnvConfig};
use abupdate::boot::{BootError, BootState, Bootloader};
use abupdate::slot::SlotName::{self, A, B};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use BootState::{Bad, Good};

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "transitions-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); install the bootloader tools"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Only look.
    Query,
    Good(SlotName),
    Bad(SlotName),
    Activate(SlotName),
}

fn apply(b: &dyn Bootloader, op: Op) -> Result<(), BootError> {
    match op {
        Op::Query => Ok(()),
        Op::Good(s) => b.set_state(s, Good),
        Op::Bad(s) => b.set_state(s, Bad),
        Op::Activate(s) => b.activate(s),
    }
}

struct Case {
    name: &'static str,
    tries: u32,
    start: &'static [(&'static str, &'static str)],
    op: Op,
    end: &'static [(&'static str, &'static str)],
    primary: Option<SlotName>,
    states: [BootState; 2],
}

fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// An env's variables as text (these cases hold only text).
fn texts<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    vars: impl IntoIterator<Item = (N, V)>,
) -> Vec<(String, String)> {
    let t = |b: &[u8]| String::from_utf8(b.to_vec()).expect("text");
    vars.into_iter()
        .map(|(n, v)| (t(n.as_ref()), t(v.as_ref())))
        .collect()
}

// ---------------------------------------------------------------- GRUB --

const GRUB_CASES: &[Case] = &[
    Case {
        name: "booted A re-blessed after GRUB set A_TRY",
        tries: 1,
        start: &[
            ("saved_entry", "0"),
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ],
        op: Op::Good(A),
        end: &[
            ("saved_entry", "0"),
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ],
        primary: Some(A),
        states: [Good, Bad],
    },
    Case {
        name: "activate B: OK, not tried, first, in one write",
        tries: 1,
        start: &[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ],
        op: Op::Activate(B),
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "GRUB tried B once (B_TRY=1): A boots next",
        tries: 1,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ],
        op: Op::Query,
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ],
        primary: Some(A),
        states: [Good, Good],
    },
    Case {
        name: "commit B after its trial",
        tries: 1,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ],
        op: Op::Good(B),
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "reject B after its trial: rollback to A",
        tries: 1,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ],
        op: Op::Bad(B),
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ],
        primary: Some(A),
        states: [Good, Bad],
    },
    Case {
        name: "A_OK=yes is not OK (GRUB's -eq reads it as 0)",
        tries: 1,
        start: &[
            ("ORDER", "A B"),
            ("A_OK", "yes"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ],
        op: Op::Query,
        end: &[
            ("ORDER", "A B"),
            ("A_OK", "yes"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ],
        primary: Some(B),
        states: [Bad, Good],
    },
    Case {
        name: "empty env: RAUC's defaults (ORDER A B, nothing OK)",
        tries: 1,
        start: &[],
        op: Op::Query,
        end: &[],
        primary: Some(A),
        states: [Bad, Bad],
    },
    Case {
        name: "activate on an empty env writes only what it needs",
        tries: 1,
        start: &[("foreign", "kept")],
        op: Op::Activate(B),
        end: &[
            ("foreign", "kept"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
            ("ORDER", "B A"),
        ],
        primary: Some(B),
        states: [Bad, Good],
    },
    Case {
        name: "nothing bootable: the first in ORDER",
        tries: 1,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ],
        op: Op::Query,
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ],
        primary: Some(B),
        states: [Bad, Good],
    },
    // A trial cancelled by `mark-bad` keeps ORDER: the booted slot's try
    // is spent, so GRUB's new round boots the first OK slot of ORDER,
    // never the slot marked bad ahead of it (found from outside: `status`
    // named it).
    Case {
        name: "query: used up, the slot ahead marked bad: the new round's first OK slot",
        tries: 1,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ],
        op: Op::Query,
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ],
        primary: Some(A),
        states: [Good, Bad],
    },
    Case {
        name: "activate keeps other words of ORDER (a rescue entry)",
        tries: 1,
        start: &[("ORDER", "A R B"), ("A_OK", "1"), ("A_TRY", "0")],
        op: Op::Activate(B),
        end: &[
            ("ORDER", "B A R"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    // Budget mode: X_LEFT counts boots, X_TRY no longer blocks.
    Case {
        name: "budget: activate B gives it the budget",
        tries: 3,
        start: &[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
            ("B_LEFT", "0"),
        ],
        op: Op::Activate(B),
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
            ("B_LEFT", "3"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "budget: B booted twice, one boot left, still first",
        tries: 3,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
            ("B_LEFT", "1"),
        ],
        op: Op::Query,
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
            ("B_LEFT", "1"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "budget: B used up, A boots",
        tries: 3,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
            ("B_LEFT", "0"),
        ],
        op: Op::Query,
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
            ("B_LEFT", "0"),
        ],
        primary: Some(A),
        states: [Good, Good],
    },
    Case {
        name: "budget: commit B refills its budget",
        tries: 3,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
            ("B_LEFT", "1"),
        ],
        op: Op::Good(B),
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
            ("B_LEFT", "3"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "budget: reject B empties its budget",
        tries: 3,
        start: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
            ("B_LEFT", "2"),
        ],
        op: Op::Bad(B),
        end: &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
            ("B_LEFT", "0"),
        ],
        primary: Some(A),
        states: [Good, Bad],
    },
];

#[test]
fn grub_transitions() {
    let dir = scratch("grub");
    for (i, case) in GRUB_CASES.iter().enumerate() {
        let file = dir.join(format!("grubenv{i}"));
        let mut env = GrubEnv::new();
        for (n, v) in case.start {
            env.set(n, v).unwrap();
        }
        grubenv::write(&file, &env).unwrap();
        let backend = GrubBackend::new(file.clone(), case.tries);
        apply(&backend, case.op).unwrap_or_else(|e| panic!("{}: {e}", case.name));

        let after = grubenv::read(&file).unwrap();
        assert_eq!(
            texts(after.vars().iter().cloned()),
            owned(case.end),
            "{}",
            case.name
        );
        // GRUB's own tool reads the same.
        let listed = run("grub-editenv", &[file.to_str().unwrap(), "list"]);
        let expected: String = case.end.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
        assert_eq!(listed, expected, "{}", case.name);

        assert_eq!(
            backend.primary().unwrap(),
            case.primary,
            "{}: primary",
            case.name
        );
        for (slot, want) in [A, B].into_iter().zip(case.states) {
            assert_eq!(
                backend.state(slot).unwrap(),
                want,
                "{}: state {slot}",
                case.name
            );
        }
        // Setting the state it reports must read back the same.
        for slot in [A, B] {
            let s = backend.state(slot).unwrap();
            backend.set_state(slot, s).unwrap();
            assert_eq!(backend.state(slot).unwrap(), s, "{}", case.name);
        }
    }
}

#[test]
fn grub_describe_and_missing_file() {
    let dir = scratch("grub-describe");
    let file = dir.join("grubenv");
    let backend = GrubBackend::new(file.clone(), 1);
    // A missing grubenv is an error naming it, not silently "defaults".
    let err = backend.primary().unwrap_err().to_string();
    assert!(err.contains("grubenv"), "{err}");
    assert!(backend.activate(B).is_err());
    assert!(!file.exists());

    run("grub-editenv", &[file.to_str().unwrap(), "create"]);
    run(
        "grub-editenv",
        &[file.to_str().unwrap(), "set", "other=1", "A_OK=1"],
    );
    backend.activate(B).unwrap();
    assert_eq!(
        backend.describe().unwrap(),
        owned(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("B_OK", "1"),
            ("B_TRY", "0")
        ])
    );
}

// -------------------------------------------------------------- U-Boot --

const UBOOT_CASES: &[Case] = &[
    Case {
        name: "re-bless booted A: counter back to tries",
        tries: 3,
        start: &[
            ("bootcmd", "run boot_abupdate"),
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "2"),
            ("BOOT_B_LEFT", "3"),
        ],
        op: Op::Good(A),
        end: &[
            ("bootcmd", "run boot_abupdate"),
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ],
        primary: Some(A),
        states: [Good, Good],
    },
    Case {
        name: "activate B: first in BOOT_ORDER with fresh tries, one write",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Activate(B),
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "B used up by the script: A boots",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Query,
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        primary: Some(A),
        states: [Good, Bad],
    },
    Case {
        name: "reject B: out of BOOT_ORDER, no tries",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "2"),
        ],
        op: Op::Bad(B),
        end: &[
            ("BOOT_ORDER", "A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        primary: Some(A),
        states: [Good, Bad],
    },
    Case {
        name: "commit B after trial",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "2"),
        ],
        op: Op::Good(B),
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "mark good a slot removed earlier: back in BOOT_ORDER, last",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Good(B),
        end: &[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ],
        primary: Some(A),
        states: [Good, Good],
    },
    Case {
        name: "all used up: the script resets, first in BOOT_ORDER boots",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "0"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Query,
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "0"),
            ("BOOT_B_LEFT", "0"),
        ],
        primary: Some(B),
        states: [Bad, Bad],
    },
    Case {
        name: "counters are hex: tries 10 is written 'a'; '10' reads as 16",
        tries: 10,
        start: &[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "10"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Activate(B),
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "10"),
            ("BOOT_B_LEFT", "a"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "missing variables: the script's defaults (A B, 3 each)",
        tries: 3,
        start: &[("bootdelay", "2")],
        op: Op::Query,
        end: &[("bootdelay", "2")],
        primary: Some(A),
        states: [Good, Good],
    },
    Case {
        name: "activate with missing variables",
        tries: 3,
        start: &[("bootdelay", "2")],
        op: Op::Activate(B),
        end: &[
            ("bootdelay", "2"),
            ("BOOT_B_LEFT", "3"),
            ("BOOT_ORDER", "B A"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "commit with tries 1: the committed slot gets RAUC's 3 attempts, not 1",
        tries: 1,
        start: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Good(B),
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "activate with tries 1: the trial gets exactly 1 attempt",
        tries: 1,
        start: &[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
        op: Op::Activate(B),
        end: &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "1"),
        ],
        primary: Some(B),
        states: [Good, Good],
    },
    Case {
        name: "reject the only slot left: BOOT_ORDER dropped, script default again",
        tries: 3,
        start: &[
            ("BOOT_ORDER", "A"),
            ("BOOT_A_LEFT", "1"),
            ("BOOT_B_LEFT", "2"),
        ],
        op: Op::Bad(A),
        end: &[("BOOT_A_LEFT", "0"), ("BOOT_B_LEFT", "2")],
        primary: Some(B),
        states: [Bad, Good],
    },
];

fn uboot_env_file(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let file = dir.join(format!("{name}.env"));
    std::fs::write(&file, vec![0u8; 0x4000]).unwrap();
    let conf = dir.join(format!("{name}.config"));
    let f = file.to_str().unwrap();
    std::fs::write(&conf, format!("{f} 0x0 0x2000\n{f} 0x2000 0x2000\n")).unwrap();
    (file, conf)
}

#[test]
fn uboot_transitions() {
    let dir = scratch("uboot");
    for (i, case) in UBOOT_CASES.iter().enumerate() {
        let (_, conf) = uboot_env_file(&dir, &format!("case{i}"));
        let cfg = UbootEnvConfig::load(&conf).unwrap();
        let mut env = UbootEnv::new();
        for (n, v) in case.start {
            env.set(n, v).unwrap();
        }
        ubootenv::write(&cfg, &env).unwrap();
        let flag_before = ubootenv::read(&cfg).unwrap().flag().unwrap();

        let backend = UbootBackend::new(conf.clone(), case.tries).unwrap();
        apply(&backend, case.op).unwrap_or_else(|e| panic!("{}: {e}", case.name));

        let after = ubootenv::read(&cfg).unwrap();
        assert_eq!(texts(after.vars()), owned(case.end), "{}", case.name);
        let writes = after.flag().unwrap().wrapping_sub(flag_before);
        let want_writes = if matches!(case.op, Op::Query) { 0 } else { 1 };
        assert_eq!(writes, want_writes, "{}: environment writes", case.name);
        // libubootenv reads the same.
        let theirs: BTreeMap<String, String> = run("fw_printenv", &["-c", conf.to_str().unwrap()])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let expected: BTreeMap<String, String> = owned(case.end).into_iter().collect();
        assert_eq!(theirs, expected, "{}", case.name);

        assert_eq!(
            backend.primary().unwrap(),
            case.primary,
            "{}: primary",
            case.name
        );
        for (slot, want) in [A, B].into_iter().zip(case.states) {
            assert_eq!(
                backend.state(slot).unwrap(),
                want,
                "{}: state {slot}",
                case.name
            );
        }
    }
}

#[test]
fn uboot_config_errors_name_the_file() {
    let dir = scratch("uboot-conf");
    let conf = dir.join("fw_env.config");
    let err = UbootBackend::new(conf.clone(), 3).unwrap_err().to_string();
    assert!(err.contains("fw_env.config"), "{err}");
    std::fs::write(&conf, "/dev/mtd1 0x0 0x20000 0x20000\n").unwrap();
    let err = UbootBackend::new(conf.clone(), 3).unwrap_err().to_string();
    assert!(
        err.contains("fw_env.config") && err.contains("MTD"),
        "{err}"
    );
    // A device that is missing is an error on use, naming the device.
    let missing = dir.join("nothere.env");
    std::fs::write(&conf, format!("{} 0 0x1000\n", missing.display())).unwrap();
    let backend = UbootBackend::new(conf, 3).unwrap();
    let err = backend.activate(B).unwrap_err().to_string();
    assert!(err.contains("nothere.env"), "{err}");
}

#[test]
fn uboot_describe_shows_only_our_variables() {
    let dir = scratch("uboot-describe");
    let (_, conf) = uboot_env_file(&dir, "d");
    let cfg = UbootEnvConfig::load(&conf).unwrap();
    let mut env = UbootEnv::new();
    env.set("bootcmd", "boot").unwrap();
    env.set("BOOT_ORDER", "A B").unwrap();
    ubootenv::write(&cfg, &env).unwrap();
    let backend = UbootBackend::new(conf, 0).unwrap();
    backend.activate(B).unwrap();
    assert_eq!(
        backend.describe().unwrap(),
        owned(&[("BOOT_ORDER", "B A"), ("BOOT_B_LEFT", "3")])
    );
}

#[test]
fn uboot_good_tries_is_what_a_committed_slot_gets() {
    let dir = scratch("uboot-good-tries");
    let (_, conf) = uboot_env_file(&dir, "g");
    let cfg = UbootEnvConfig::load(&conf).unwrap();
    ubootenv::write(&cfg, &UbootEnv::new()).unwrap();
    let backend = UbootBackend::new(conf, 1).unwrap().with_good_tries(5);
    backend.activate(B).unwrap();
    assert_eq!(
        ubootenv::read(&cfg).unwrap().get("BOOT_B_LEFT"),
        Some(&b"1"[..])
    );
    backend.set_state(B, Good).unwrap();
    assert_eq!(
        ubootenv::read(&cfg).unwrap().get("BOOT_B_LEFT"),
        Some(&b"5"[..])
    );
}

/// `health` finishes a retirement whose record was lost when the
/// bootloader holds the booted trial marked bad and the other slot next
/// (`agent::verdict`). GRUB tells the mark (`X_OK=0`) from its own
/// counting (`X_TRY=1`, `X_LEFT=0`), both modes, on the trial's last try
/// too; so does U-Boot (out of `BOOT_ORDER`, not `BOOT_X_LEFT=0`).
#[test]
fn grub_and_uboot_tell_a_retired_trial_from_one_on_its_last_try() {
    let dir = scratch("marked-bad");
    for tries in [1, 3] {
        let file = dir.join(format!("grubenv{tries}"));
        let mut env = GrubEnv::new();
        for (n, v) in [("ORDER", "A B"), ("A_OK", "1"), ("A_TRY", "0")] {
            env.set(n, v).unwrap();
        }
        grubenv::write(&file, &env).unwrap();
        let grub = GrubBackend::new(file.clone(), tries);
        // The install: B bad, then activated.
        grub.set_state(B, Bad).unwrap();
        grub.activate(B).unwrap();
        // GRUB boots B and spends every try it has.
        let mut env = grubenv::read(&file).unwrap();
        env.set("B_TRY", "1").unwrap();
        if tries > 1 {
            env.set("B_LEFT", "0").unwrap();
        }
        grubenv::write(&file, &env).unwrap();
        assert_eq!(grub.primary().unwrap(), Some(A), "grub {tries}: used up");
        assert_eq!(grub.marked_bad(B).unwrap(), Some(false), "grub {tries}");
        // A retirement's pair.
        grub.set_state(B, Bad).unwrap();
        grub.activate(A).unwrap();
        assert_eq!(grub.marked_bad(B).unwrap(), Some(true), "grub {tries}");
        assert_eq!(grub.marked_bad(A).unwrap(), Some(false), "grub {tries}");
    }
    for tries in [1, 3] {
        let (_, conf) = uboot_env_file(&dir, &format!("uboot{tries}"));
        let cfg = UbootEnvConfig::load(&conf).unwrap();
        ubootenv::write(&cfg, &UbootEnv::new()).unwrap();
        let uboot = UbootBackend::new(conf, tries).unwrap();
        uboot.set_state(B, Bad).unwrap();
        uboot.activate(B).unwrap();
        // The script takes every attempt B has: its state reads bad.
        let mut env = ubootenv::read(&cfg).unwrap();
        env.set("BOOT_B_LEFT", "0").unwrap();
        ubootenv::write(&cfg, &env).unwrap();
        assert_eq!(uboot.state(B).unwrap(), Bad, "uboot {tries}: spent");
        assert_eq!(uboot.marked_bad(B).unwrap(), Some(false), "uboot {tries}");
        uboot.set_state(B, Bad).unwrap();
        uboot.activate(A).unwrap();
        assert_eq!(uboot.marked_bad(B).unwrap(), Some(true), "uboot {tries}");
        assert_eq!(uboot.marked_bad(A).unwrap(), Some(false), "uboot {tries}");
    }
    // RAUC's custom interface has `get-state` only: cannot tell, and
    // asks the script nothing.
    let custom_dir = scratch("marked-bad-custom");
    let custom = CustomBackend::new(install_script(&custom_dir));
    put(&custom_dir, "state.B", "bad\n");
    assert_eq!(custom.marked_bad(B).unwrap(), None);
    assert_eq!(log(&custom_dir), "");
}

/// `status` shows raw values; one that is not UTF-8 is escaped (lossless),
/// not a reason for `status` to fail.
#[test]
fn describe_renders_values_that_are_not_utf8_escaped() {
    let dir = scratch("describe-bytes");
    let (_, conf) = uboot_env_file(&dir, "d");
    let cfg = UbootEnvConfig::load(&conf).unwrap();
    let mut env = UbootEnv::new();
    env.set("BOOT_ORDER", b"A B \xff\\").unwrap();
    env.set("splash", b"\xfe").unwrap();
    ubootenv::write(&cfg, &env).unwrap();
    let backend = UbootBackend::new(conf, 1).unwrap();
    assert_eq!(
        backend.describe().unwrap(),
        owned(&[("BOOT_ORDER", "A B \\xff\\\\")])
    );
    assert_eq!(backend.primary().unwrap(), Some(A));

    let file = dir.join("grubenv");
    let mut env = GrubEnv::new();
    env.set("ORDER", b"B \x80A").unwrap();
    env.set("B_OK", "1").unwrap();
    grubenv::write(&file, &env).unwrap();
    let backend = GrubBackend::new(file, 1);
    assert_eq!(
        backend.describe().unwrap(),
        owned(&[("ORDER", "B \\x80A"), ("B_OK", "1")])
    );
    assert_eq!(backend.primary().unwrap(), Some(B));
}

/// An install marks the target bad, writes the image, then activates it:
/// an env with room for the first write but not for the last must be
/// refused before anything is written.
#[test]
fn check_activate_refuses_an_env_without_room_for_the_activation_and_writes_nothing() {
    let dir = scratch("check-activate");
    // U-Boot: no BOOT_ORDER yet; mark-bad B adds "BOOT_ORDER=A" (13 bytes
    // with its NUL), the activation makes it "BOOT_ORDER=B A" (2 more).
    let (file, conf) = uboot_env_file(&dir, "full");
    let cfg = UbootEnvConfig::load(&conf).unwrap();
    let data_len = 0x2000 - 5;
    let fixed = "BOOT_A_LEFT=3\0BOOT_B_LEFT=0\0".len() + "pad=\0".len() + 1;
    let mut env = UbootEnv::new();
    env.set("BOOT_A_LEFT", "3").unwrap();
    env.set("BOOT_B_LEFT", "0").unwrap();
    env.set("pad", "x".repeat(data_len - fixed - 13)).unwrap();
    ubootenv::write(&cfg, &env).unwrap();
    let backend = UbootBackend::new(conf.clone(), 1).unwrap();
    let before = std::fs::read(&file).unwrap();
    let err = backend.check_activate(B).unwrap_err().to_string();
    assert!(
        err.contains("full.config") && err.contains("activating slot B") && err.contains("need"),
        "{err}"
    );
    assert!(std::fs::read(&file).unwrap() == before, "check wrote");
    // The check was right: mark-bad fits, the activation does not.
    backend.set_state(B, Bad).unwrap();
    assert!(backend.activate(B).is_err());
    // With one byte less of padding both fit, and the check says so.
    let mut env = ubootenv::read(&cfg).unwrap();
    env.remove("BOOT_ORDER");
    env.set("pad", "x".repeat(data_len - fixed - 15)).unwrap();
    ubootenv::write(&cfg, &env).unwrap();
    backend.check_activate(B).unwrap();

    // GRUB: the same with its first sector; no ORDER yet, the activation
    // adds "ORDER=B A\n".
    let gfile = dir.join("grubenv");
    let mut env = GrubEnv::new();
    env.set("B_OK", "0").unwrap();
    env.set("B_TRY", "0").unwrap();
    let used = grubenv::SIGNATURE.len() + "B_OK=0\nB_TRY=0\npad=\n".len();
    env.set("pad", "y".repeat(grubenv::SECTOR - used - 5))
        .unwrap();
    grubenv::write(&gfile, &env).unwrap();
    let before = std::fs::read(&gfile).unwrap();
    let backend = GrubBackend::new(gfile.clone(), 1);
    let err = backend.check_activate(B).unwrap_err().to_string();
    assert!(
        err.contains("grubenv") && err.contains("activating slot B") && err.contains("sector"),
        "{err}"
    );
    assert_eq!(std::fs::read(&gfile).unwrap(), before, "check wrote");
    backend.set_state(B, Bad).unwrap();
    assert!(backend.activate(B).is_err());
}

// -------------------------------------------------------------- custom --

/// A RAUC custom backend that keeps its state in files next to it.
const SCRIPT: &str = r#"#!/bin/sh
D=$(dirname "$0")
echo "$*" >> "$D/log"
if [ -e "$D/fail" ]; then echo "boom: $(cat "$D/fail")" >&2; echo "ignored"; exit 3; fi
case "$1" in
  get-primary) cat "$D/primary" ;;
  set-primary) printf '%s\n' "$2" > "$D/primary" ;;
  get-state) cat "$D/state.$2" ;;
  set-state) printf '%s\n' "$3" > "$D/state.$2" ;;
  get-current) cat "$D/current" ;;
  *) echo "unknown verb $1" >&2; exit 2 ;;
esac
"#;

/// Write the script from a child process, so no descriptor of it is open
/// in this (multi-threaded) test process when it is executed (ETXTBSY).
fn install_script(dir: &Path) -> PathBuf {
    let path = dir.join("backend.sh");
    run(
        "sh",
        &[
            "-c",
            "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"",
            "sh",
            SCRIPT,
            path.to_str().unwrap(),
        ],
    );
    path
}

fn put(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

#[test]
fn custom_backend_speaks_raucs_verbs() {
    let dir = scratch("custom");
    let script = install_script(&dir);
    put(&dir, "primary", "A\n");
    put(&dir, "state.A", "good\n");
    put(&dir, "state.B", "bad\n");
    put(&dir, "current", "A\nextra line\n");
    let b = CustomBackend::new(script);

    assert_eq!(b.primary().unwrap(), Some(A));
    assert_eq!(b.state(A).unwrap(), Good);
    assert_eq!(b.state(B).unwrap(), Bad);
    assert_eq!(b.booted().unwrap(), Some(A));
    assert_eq!(
        log(&dir),
        "get-primary\nget-state A\nget-state B\nget-current\n"
    );

    std::fs::remove_file(dir.join("log")).unwrap();
    b.activate(B).unwrap();
    assert_eq!(log(&dir), "set-state B good\nset-primary B\n");
    assert_eq!(b.primary().unwrap(), Some(B));
    assert_eq!(b.state(B).unwrap(), Good);

    b.set_state(B, Bad).unwrap();
    assert_eq!(b.state(B).unwrap(), Bad);
    b.set_state(B, Good).unwrap();
    assert_eq!(b.state(B).unwrap(), Good);
    assert_eq!(
        b.describe().unwrap(),
        owned(&[("primary", "B"), ("A.state", "good"), ("B.state", "good")])
    );
}

/// Answers are bytes: RAUC reads `get-current`'s first line only, so what
/// follows it (not text here) changes nothing; surrounding white space is
/// stripped as `g_strstrip` does.
#[test]
fn custom_backend_reads_answers_as_bytes() {
    let dir = scratch("custom-bytes");
    let script = install_script(&dir);
    std::fs::write(dir.join("current"), b"B\n\xff\xfe log noise\n").unwrap();
    put(&dir, "primary", "\t A \r\n");
    put(&dir, "state.B", "  bad\n\n");
    let b = CustomBackend::new(script);
    assert_eq!(b.booted().unwrap(), Some(B));
    assert_eq!(b.primary().unwrap(), Some(A));
    assert_eq!(b.state(B).unwrap(), Bad);
}

#[test]
fn custom_backend_errors_name_verb_and_stderr() {
    let dir = scratch("custom-err");
    let script = install_script(&dir);
    let b = CustomBackend::new(script.clone());
    put(&dir, "primary", "C\n");
    put(&dir, "state.A", "maybe\n");
    put(&dir, "current", "\n");

    let check = |r: Result<(), BootError>, verb: &str, has: &str| match r {
        Err(BootError::Script {
            script: s,
            verb: v,
            reason,
        }) => {
            assert_eq!(s, script.display().to_string());
            assert_eq!(v, verb);
            assert!(reason.contains(has), "{verb}: {reason}");
        }
        other => panic!("{verb}: expected a script error, got {other:?}"),
    };
    check(b.primary().map(|_| ()), "get-primary", "\"C\"");
    check(b.state(A).map(|_| ()), "get-state A", "\"maybe\"");
    check(b.booted().map(|_| ()), "get-current", "slot name");
    // get-state B: no state file, cat fails with its message on stderr.
    check(b.state(B).map(|_| ()), "get-state B", "exit status 1");
    // An answer that is not text is shown escaped, not lossily.
    put(&dir, "state.A", "go\u{1}od\n");
    std::fs::write(dir.join("primary"), b"\xffA\n").unwrap();
    check(b.primary().map(|_| ()), "get-primary", "\"\\xffA\"");
    check(b.state(A).map(|_| ()), "get-state A", "\"go\\x01od\"");

    put(&dir, "fail", "disk full");
    check(
        b.set_state(A, Good),
        "set-state A good",
        "exit status 3: boom: disk full",
    );
    check(b.activate(B), "set-state B good", "boom: disk full");
    let shown = b.activate(B).unwrap_err().to_string();
    assert!(
        shown.contains("backend.sh") && shown.contains("set-state B good"),
        "{shown}"
    );

    let missing = CustomBackend::new(dir.join("no-such-script"));
    match missing.primary() {
        Err(BootError::Script { verb, reason, .. }) => {
            assert_eq!(verb, "get-primary");
            assert!(reason.contains("cannot run"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The custom backend's script writes the boot order as root: held to the
/// rule hooks and checks follow (README "Who could replace a program run
/// as root"). In a directory others can write it is not run, and the verb
/// fails naming that directory.
#[test]
fn custom_backend_script_others_could_replace_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("custom-replaceable");
    let script = install_script(&dir);
    put(&dir, "primary", "A\n");
    let b = CustomBackend::new(script.clone());
    assert_eq!(b.primary().expect("a safe script answers"), Some(A));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    match b.primary() {
        Err(BootError::Script { verb, reason, .. }) => {
            assert_eq!(verb, "get-primary");
            assert!(
                reason.contains("writable by group or others (mode 0777)")
                    && reason.contains("it would run as root"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A backend whose verbs misbehave as processes: `get-primary` answers but
/// leaves a background process holding its output open; `set-state`
/// succeeds; `set-primary` hangs.
const UNRULY_SCRIPT: &str = r#"#!/bin/sh
D=$(dirname "$0")
case "$1" in
  get-primary) sleep 1000 & echo $! > "$D/bg.pid"; echo A ;;
  set-state) ;;
  set-primary) sleep 1000 & echo $! > "$D/hung.pid"; wait ;;
  *) exit 2 ;;
esac
"#;

fn install_unruly_script(dir: &Path) -> PathBuf {
    let path = dir.join("unruly.sh");
    run(
        "sh",
        &[
            "-c",
            "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"",
            "sh",
            UNRULY_SCRIPT,
            path.to_str().unwrap(),
        ],
    );
    path
}

/// Whether `pid` is gone (a zombie nobody reaped yet is dead too), within 5 s.
fn dies(pid: &str) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        };
        if gone || std::time::Instant::now() > until {
            return gone;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Issue (brief 3): a verb that failed after 200 KB on one stderr line
/// made a 16 KB "one-line" error, and its bytes reached the terminal raw.
/// The error quotes the line's end, cut (`…`) within 300 bytes, escaped.
#[test]
fn custom_backend_error_quotes_a_huge_stderr_line_bounded_and_escaped() {
    let dir = scratch("custom-huge-err");
    let b = CustomBackend::new(install_script(&dir));
    let mut fail = vec![b'e'; 200_000];
    fail.extend_from_slice(b"\x1b[2J\xc2\x9b\xff: disk full");
    std::fs::write(dir.join("fail"), &fail).unwrap();
    let err = b.set_state(A, Good).unwrap_err().to_string();
    let (head, quoted) = err.split_once(": exit status 3: ").expect(&err);
    assert!(head.ends_with("set-state A good"), "{head}");
    assert!(quoted.len() <= 300, "{} bytes quoted", quoted.len());
    assert!(
        quoted.starts_with("…eee") && quoted.ends_with("e\\x1b[2J\\xc2\\x9b\\xff: disk full"),
        "{quoted}"
    );
    assert!(!err.chars().any(char::is_control), "{err:?}");
}

#[test]
fn custom_backend_verb_is_not_held_by_a_background_process_and_leaves_none() {
    let dir = scratch("custom-bg");
    let b = CustomBackend::new(install_unruly_script(&dir));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(b.primary().map_err(|e| e.to_string()));
    });
    let answer = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("get-primary held by the process it left behind");
    assert_eq!(answer, Ok(Some(A)));
    let bg = std::fs::read_to_string(dir.join("bg.pid")).unwrap();
    assert!(dies(&bg), "get-primary's background process {bg} survived");
}

#[test]
fn custom_backend_verb_that_hangs_is_killed_at_its_limit() {
    let dir = scratch("custom-hang");
    let limit = std::time::Duration::from_millis(500);
    let b = CustomBackend::with_timeout(install_unruly_script(&dir), limit);
    let start = std::time::Instant::now();
    match b.activate(B) {
        Err(BootError::Script { verb, reason, .. }) => {
            assert_eq!(verb, "set-primary B");
            assert_eq!(reason, "timed out after 500ms");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    let hung = std::fs::read_to_string(dir.join("hung.pid")).unwrap();
    assert!(dies(&hung), "the hung verb's child {hung} survived");
}

// ----------------------------------------------------------------- EFI --

/// One EFI case: `BootOrder`, `BootNext` before and after (the slots' entries
/// are Boot0001 = A, Boot0002 = B; Boot0000 is a firmware entry), and the
/// number of variable writes the operation made (each one atomic).
struct EfiCase {
    name: &'static str,
    order: &'static [u16],
    next: Option<u16>,
    op: Op,
    end_order: &'static [u16],
    end_next: Option<u16>,
    writes: usize,
    primary: Option<SlotName>,
    states: [BootState; 2],
}

const EFI_CASES: &[EfiCase] = &[
    EfiCase {
        name: "re-bless booted A, already first: nothing written",
        order: &[1, 0],
        next: None,
        op: Op::Good(A),
        end_order: &[1, 0],
        end_next: None,
        writes: 0,
        primary: Some(A),
        states: [Good, Bad],
    },
    EfiCase {
        name: "install: B marked bad leaves the order and BootNext",
        order: &[1, 2, 0],
        next: Some(2),
        op: Op::Bad(B),
        end_order: &[1, 0],
        end_next: None,
        writes: 2,
        primary: Some(A),
        states: [Good, Bad],
    },
    EfiCase {
        name: "activate B: BootNext only, A stays first for the fallback",
        order: &[1, 0],
        next: None,
        op: Op::Activate(B),
        end_order: &[1, 0],
        end_next: Some(2),
        writes: 1,
        primary: Some(B),
        states: [Good, Bad],
    },
    EfiCase {
        name: "commit B: first in BootOrder, one write",
        order: &[1, 0],
        next: None,
        op: Op::Good(B),
        end_order: &[2, 1, 0],
        end_next: None,
        writes: 1,
        primary: Some(B),
        states: [Good, Good],
    },
    EfiCase {
        name: "roll back to A after B's trial: A boots next anyway, nothing written",
        order: &[1, 0],
        next: None,
        op: Op::Activate(A),
        end_order: &[1, 0],
        end_next: None,
        writes: 0,
        primary: Some(A),
        states: [Good, Bad],
    },
    EfiCase {
        name: "rollback to A with B committed: BootNext",
        order: &[2, 1, 0],
        next: None,
        op: Op::Activate(A),
        end_order: &[2, 1, 0],
        end_next: Some(1),
        writes: 1,
        primary: Some(A),
        states: [Good, Good],
    },
    EfiCase {
        name: "mark-bad A with B first",
        order: &[2, 1, 0],
        next: None,
        op: Op::Bad(A),
        end_order: &[2, 0],
        end_next: None,
        writes: 1,
        primary: Some(B),
        states: [Bad, Good],
    },
    EfiCase {
        name: "a firmware entry first: the first slot in the order is primary",
        order: &[0, 2, 1],
        next: None,
        op: Op::Query,
        end_order: &[0, 2, 1],
        end_next: None,
        writes: 0,
        primary: Some(B),
        states: [Good, Good],
    },
];

#[test]
fn efi_transitions() {
    use abupdate::boot::efi::{EfiBackend, EfiSlot};
    use abupdate::boot::efivar::{
        boot_name, device_path, u16_bytes, ucs2, EfiVars, HardDrive, LoadOption, GLOBAL_GUID,
        LOAD_OPTION_ACTIVE, NV_BS_RT,
    };
    let hd = HardDrive {
        partition_number: 1,
        start_lba: 2048,
        size_lba: 4096,
        signature: [9; 16],
    };
    for case in EFI_CASES {
        let dir = scratch("efi");
        let vars = EfiVars::new(dir.clone());
        for (n, d) in [
            (0, "EFI Internal Shell"),
            (1, "abupdate A"),
            (2, "abupdate B"),
        ] {
            let opt = LoadOption {
                attributes: LOAD_OPTION_ACTIVE,
                description: ucs2(d),
                file_path_list: device_path(&hd, "\\EFI\\x.efi"),
                optional_data: Vec::new(),
            };
            vars.set(&boot_name(n), GLOBAL_GUID, NV_BS_RT, &opt.to_bytes())
                .unwrap();
        }
        vars.set("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(case.order))
            .unwrap();
        if let Some(n) = case.next {
            vars.set("BootNext", GLOBAL_GUID, NV_BS_RT, &n.to_le_bytes())
                .unwrap();
        }
        let slots = [(A, EfiSlot::default_for(A)), (B, EfiSlot::default_for(B))];
        let backend = EfiBackend::new(dir.clone(), slots.into_iter().collect());
        let mtimes = || -> Vec<_> {
            ["BootOrder", "BootNext"]
                .iter()
                .map(|v| {
                    std::fs::metadata(vars.path(v, GLOBAL_GUID))
                        .ok()
                        .map(|m| m.ino())
                })
                .collect()
        };
        use std::os::unix::fs::MetadataExt;
        let before = mtimes();
        apply(&backend, case.op).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let after = mtimes();
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(changed, case.writes, "{}: writes", case.name);
        assert_eq!(
            vars.get_u16_list("BootOrder").unwrap(),
            case.end_order,
            "{}: BootOrder",
            case.name
        );
        assert_eq!(
            vars.get_u16("BootNext").unwrap(),
            case.end_next,
            "{}",
            case.name
        );
        assert_eq!(backend.primary().unwrap(), case.primary, "{}", case.name);
        assert_eq!(
            [backend.state(A).unwrap(), backend.state(B).unwrap()],
            case.states,
            "{}",
            case.name
        );
        // The real efibootmgr reads the result.
        let out = Command::new("efibootmgr")
            .env("EFIVARFS_PATH", format!("{}/", dir.display()))
            .output()
            .expect("efibootmgr (scripts/deps.sh)");
        let listing = String::from_utf8_lossy(&out.stdout);
        let order: Vec<String> = case.end_order.iter().map(|n| format!("{n:04X}")).collect();
        assert!(
            listing.contains(&format!("BootOrder: {}", order.join(","))),
            "{}: {listing}",
            case.name
        );
    }
}

// -------------------------------------------------------- systemd-boot --

struct SdCase {
    name: &'static str,
    tries: u32,
    start: &'static [&'static str],
    op: Op,
    end: &'static [&'static str],
    primary: Option<SlotName>,
    states: [BootState; 2],
}

const SD_CASES: &[SdCase] = &[
    SdCase {
        name: "install: B bad",
        tries: 3,
        start: &["abupdate-1-a.conf", "abupdate-2-b.conf"],
        op: Op::Bad(B),
        end: &["abupdate-1-a.conf", "abupdate-2-b+0.conf"],
        primary: Some(A),
        states: [Good, Bad],
    },
    SdCase {
        name: "activate B: newer generation and +tries in one rename",
        tries: 3,
        start: &["abupdate-3-a.conf", "abupdate-2-b+0.conf"],
        op: Op::Activate(B),
        end: &["abupdate-3-a.conf", "abupdate-4-b+3.conf"],
        primary: Some(B),
        states: [Good, Good],
    },
    SdCase {
        name: "activate B already newer keeps its generation",
        tries: 1,
        start: &["abupdate-1-a.conf", "abupdate-5-b+0-2.conf"],
        op: Op::Activate(B),
        end: &["abupdate-1-a.conf", "abupdate-5-b+1.conf"],
        primary: Some(B),
        states: [Good, Good],
    },
    SdCase {
        name: "commit B: the counter dropped (bless-boot good)",
        tries: 3,
        start: &["abupdate-1-a.conf", "abupdate-3-b+2-1.conf"],
        op: Op::Good(B),
        end: &["abupdate-1-a.conf", "abupdate-3-b.conf"],
        primary: Some(B),
        states: [Good, Good],
    },
    SdCase {
        name: "roll back B: +0 keeping done (bless-boot bad)",
        tries: 3,
        start: &["abupdate-1-a.conf", "abupdate-3-b+2-1.conf"],
        op: Op::Bad(B),
        end: &["abupdate-1-a.conf", "abupdate-3-b+0-1.conf"],
        primary: Some(A),
        states: [Good, Bad],
    },
    SdCase {
        name: "activate A that boots next anyway: nothing renamed",
        tries: 3,
        start: &["abupdate-1-a.conf", "abupdate-3-b+0-1.conf"],
        op: Op::Activate(A),
        end: &["abupdate-1-a.conf", "abupdate-3-b+0-1.conf"],
        primary: Some(A),
        states: [Good, Bad],
    },
    SdCase {
        name: "rollback to A with B committed",
        tries: 3,
        start: &["abupdate-1-a.conf", "abupdate-3-b.conf"],
        op: Op::Activate(A),
        end: &["abupdate-3-b.conf", "abupdate-4-a+3.conf"],
        primary: Some(A),
        states: [Good, Good],
    },
    SdCase {
        name: "trial counted down by systemd-boot: A boots",
        tries: 3,
        start: &["abupdate-1-a.conf", "abupdate-3-b+0-3.conf"],
        op: Op::Query,
        end: &["abupdate-1-a.conf", "abupdate-3-b+0-3.conf"],
        primary: Some(A),
        states: [Good, Bad],
    },
];

#[test]
fn systemd_boot_transitions() {
    use abupdate::boot::systemd_boot::SystemdBootBackend;
    for case in SD_CASES {
        let esp = scratch("sdboot");
        let entries = esp.join("loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(esp.join("loader/loader.conf"), "default abupdate-*\n").unwrap();
        for f in case.start {
            std::fs::write(entries.join(f), "title t\nlinux /k\n").unwrap();
        }
        let backend =
            SystemdBootBackend::new(esp.clone(), "abupdate".into(), case.tries, BTreeMap::new());
        apply(&backend, case.op).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut names: Vec<String> = std::fs::read_dir(&entries)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, case.end, "{}", case.name);
        assert_eq!(backend.primary().unwrap(), case.primary, "{}", case.name);
        assert_eq!(
            [backend.state(A).unwrap(), backend.state(B).unwrap()],
            case.states,
            "{}",
            case.name
        );
    }
}
