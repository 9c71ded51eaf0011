//! The verbs a person runs by hand (`mark-good`, `mark-bad`, `rollback`)
//! on every bootloader: one rule (`agent::recovery::judge`) keeps a slot
//! holding a proven good system bootable, unless `--force`. A refusal is
//! one line naming the slot and the way out, exit 1, and changes neither
//! the bootloader nor the state.

use crate::common::host::{text, HostOptions};
use crate::common::loaders::{release, Host, Loader, EFI_A, EFI_B, EFI_SHELL};
use std::process::Output;

const LEN: usize = 3 << 20;
const LOADERS: [Loader; 4] = [
    Loader::Grub,
    Loader::Uboot,
    Loader::Efi,
    Loader::SystemdBoot,
];

/// A host booted from A (good), B never written; on EFI B's entry is in
/// `BootOrder` as a board prepared for RAUC has it.
fn fresh(name: &str, loader: Loader) -> Host {
    let h = Host::new(name, loader, "1.0", LEN, HostOptions::default());
    if loader == Loader::Efi {
        use abupdate::boot::efivar::{u16_bytes, GLOBAL_GUID, NV_BS_RT};
        let order = u16_bytes(&[EFI_A, EFI_B, EFI_SHELL]);
        h.efi_vars()
            .set("BootOrder", GLOBAL_GUID, NV_BS_RT, &order)
            .expect("BootOrder");
    }
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{loader:?} health: {}", text(&out));
    h
}

/// `h` after the timer's install of 2.0 into B was cut while writing (the
/// slot's first fsync fails): its transaction left `writing`.
fn write_cut(mut h: Host) -> Host {
    h.use_release(release(LEN));
    let out = h.abupdate_env(
        &["update", "--now", "--no-reboot"],
        &[("ABUPDATE_FAILPOINT", "fsync")],
    );
    assert!(!out.status.success(), "{:?}: {}", h.loader, text(&out));
    assert_eq!(
        h.state()["transaction"]["phase"],
        "writing",
        "{:?}",
        h.loader
    );
    h
}

/// `args` is refused with one line holding each of `says`, exit 1, and
/// the bootloader, the state and the reboot log stay as they were.
fn refused(h: &Host, args: &[&str], says: &[&str]) -> Output {
    let (env, state, reboots) = (h.env(), h.state(), h.reboots());
    let out = h.abupdate(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?} {args:?}: {}",
        h.loader,
        text(&out)
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    for s in says {
        assert!(
            err.contains(s),
            "{:?} {args:?}: {err} lacks {s:?}",
            h.loader
        );
    }
    assert_eq!(
        h.env(),
        env,
        "{:?} {args:?} changed the bootloader",
        h.loader
    );
    assert_eq!(
        h.state(),
        state,
        "{:?} {args:?} changed the state",
        h.loader
    );
    assert_eq!(h.reboots(), reboots, "{args:?} rebooted");
    out
}

/// `args` is refused (as [`refused`]) with each of `says`, and its line
/// suggests no `--force`: what it refuses, no `--force` allows.
fn refused_even_forced(h: &Host, args: &[&str], says: &[&str]) {
    let out = refused(h, args, says);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--force or not") && !err.contains("use --force"),
        "{:?} {args:?}: {err}",
        h.loader
    );
    for slot in ["A", "B"] {
        assert!(
            !err.contains(&format!("{slot} --force")),
            "{:?} {args:?} suggests a forced verb: {err}",
            h.loader
        );
    }
}

/// Issue (review 2, 1 and 2): `mark-bad` of the booted A while B was never
/// written took A out of the boot order for good on U-Boot and EFI;
/// `mark-good B` on the empty B was accepted and let `rollback` boot it.
/// And found from outside after: `mark-bad A --force` was refused with the
/// advice `mark-good B --force`, which was accepted on B's empty record;
/// `mark-bad A --force` then made GRUB boot an empty slot for ever. No
/// `--force` makes a slot never written bootable, and no refusal says so.
#[test]
fn no_verb_leaves_only_a_never_written_slot_bootable() {
    let install = "`abupdate install` writes a release into it";
    for loader in LOADERS {
        let h = fresh("manual-empty", loader);
        for force in [&[][..], &["--force"][..]] {
            let with = |args: &[&'static str]| [args, force].concat();
            refused_even_forced(
                &h,
                &with(&["mark-bad"]),
                &[
                    "marking slot A bad would leave only slot B to boot: slot B is empty in the state",
                    install,
                ],
            );
            refused_even_forced(
                &h,
                &with(&["mark-good", "B"]),
                &[
                    "slot B is empty in the state",
                    "refusing to mark it good",
                    install,
                ],
            );
            refused_even_forced(
                &h,
                &with(&["rollback", "--no-reboot"]),
                &[
                    "slot B is empty in the state",
                    "refusing to roll back to it",
                    install,
                ],
            );
        }
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        assert!(h.bootable("A"), "{loader:?}");
    }
}

/// Found from outside: `install` killed half-way through its write into B
/// (its record `installing`, the transaction `writing`); `rollback` was
/// refused with the advice `--force`, and `rollback --force` dropped the
/// write's transaction and made B the next boot: the next `health`
/// blessed it unchecked, `status` called it good, and a later install
/// overwrote the last good system. Refused, `--force` or not, pointing to
/// finishing or cancelling the write; a `mark-bad` of it still cancels it.
#[test]
fn no_force_boots_a_slot_whose_write_was_cut() {
    let finish = "`abupdate update` or `abupdate install` finishes the write";
    for loader in LOADERS {
        let h = write_cut(fresh("manual-force-writing", loader));
        for force in [&[][..], &["--force"][..]] {
            let with = |args: &[&'static str]| [args, force].concat();
            let writing = "slot B is being written with 2.0 (cut before it was staged)";
            refused_even_forced(
                &h,
                &with(&["rollback", "--no-reboot"]),
                &[
                    writing,
                    "refusing to roll back to it",
                    finish,
                    "`abupdate mark-bad B` cancels it",
                ],
            );
            refused_even_forced(&h, &with(&["mark-good", "B"]), &[writing, finish]);
            refused_even_forced(
                &h,
                &with(&["mark-bad", "A"]),
                &[
                    "marking slot A bad would leave only slot B to boot",
                    writing,
                ],
            );
        }
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        assert!(h.bootable("A") && !h.bootable("B"), "{loader:?}");
        let out = h.abupdate(&["mark-bad", "B"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert!(h.state()["transaction"].is_null(), "{loader:?}");
    }
}

/// Issue (review 2, 3): `rollback` from the good booted A while 2.0 was
/// staged in B, never tried, made B primary and rebooted into the untried
/// release. It is refused, pointing to `mark-bad B`, which cancels it.
#[test]
fn rollback_onto_a_staged_untried_release_is_refused() {
    for loader in LOADERS {
        let mut h = fresh("manual-staged", loader);
        h.use_release(release(LEN));
        let out = h.abupdate(&["update", "--no-reboot"]);
        assert!(out.status.success(), "{loader:?} update: {}", text(&out));
        assert_eq!(h.state()["transaction"]["phase"], "staged", "{loader:?}");
        refused(
            &h,
            &["rollback"],
            &[
                "slot B holds a release staged and never tried",
                "`abupdate mark-bad B`",
                "--force",
            ],
        );
        let out = h.abupdate(&["mark-bad", "B"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        assert!(!h.bootable("B"), "{loader:?}");
    }
}

/// Found from outside (stop 47): `mark-good B` of a release staged in B
/// and never booted recorded B committed, and `mark-bad A` after it then
/// took the booted, committed A out: the only bootable slot was one that
/// never booted. `mark-good` of the other slot needs it committed; the
/// chain is refused at its first step, on every bootloader.
#[test]
fn mark_good_never_makes_a_slot_that_never_booted_a_proven_one() {
    for loader in LOADERS {
        let mut h = fresh("manual-good-untried", loader);
        h.use_release(release(LEN));
        let out = h.abupdate(&["update", "--no-reboot"]);
        assert!(out.status.success(), "{loader:?} update: {}", text(&out));
        refused(
            &h,
            &["mark-good", "B"],
            &[
                "slot B holds a release staged and never tried",
                "not a proven good system",
                "--force",
            ],
        );
        refused(
            &h,
            &["mark-bad", "A"],
            &[
                "marking slot A bad would leave no good slot to boot",
                "--force",
            ],
        );
        assert!(h.bootable("A"), "{loader:?}");
    }
}

/// Issue (review 2, 4): `rollback` while booted into a trial went back to
/// A without recording the release failed, so the timer installed it and
/// rebooted into it again. `rollback` and `mark-bad` of the trial slot now
/// retire it as a failed trial, the one way there is.
#[test]
fn rejecting_a_running_trial_puts_its_release_on_the_failed_list() {
    for loader in LOADERS {
        for verb in [&["rollback", "--no-reboot"][..], &["mark-bad"][..]] {
            let mut h = fresh("manual-reject", loader);
            h.use_release(release(LEN));
            let out = h.abupdate(&["update", "--no-reboot"]);
            assert!(out.status.success(), "{loader:?} update: {}", text(&out));
            assert_eq!(h.boot(), "B", "{loader:?}");
            let out = h.abupdate(verb);
            assert!(out.status.success(), "{loader:?} {verb:?}: {}", text(&out));
            let state = h.state();
            assert_eq!(
                state["failed"][0]["version"], "2.0",
                "{loader:?} {verb:?}: {state}"
            );
            assert!(
                state["transaction"].is_null(),
                "{loader:?} {verb:?}: {state}"
            );
            assert_eq!(state["slots"]["B"]["status"], "bad", "{loader:?} {verb:?}");
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");
            assert_eq!(h.boot(), "A", "{loader:?} {verb:?}");
            let out = h.abupdate(&["health"]);
            assert!(out.status.success(), "{loader:?} {verb:?}: {}", text(&out));
            let out = h.abupdate(&["--json", "update", "--no-reboot"]);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("previously_failed"),
                "{loader:?} {verb:?}: the timer takes 2.0 again: {}",
                text(&out)
            );
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");
        }
    }
}

/// Issue (brief 1): `mark-bad B` of a release staged by `install
/// --no-reboot` and never booted left its transaction, so the next boot's
/// `health` recorded `trial_never_booted` (a failure of the release for the
/// fleet) and the next `update` staged it again. The cancel is now the
/// operator's decision: nothing pending, reported `disarmed` (not counted),
/// held from the timer, said by `status`; an `install` by hand takes it.
#[test]
fn cancelling_a_staged_release_is_the_operators_decision_not_a_failure() {
    for loader in LOADERS {
        let mut h = fresh("manual-cancel", loader);
        let rel = release(LEN);
        h.use_release(rel);
        let manifest = rel.manifest.to_str().expect("utf-8 path");
        let out = h.abupdate(&["install", "--no-reboot", manifest]);
        assert!(out.status.success(), "{loader:?} install: {}", text(&out));
        assert_eq!(h.state()["transaction"]["phase"], "staged", "{loader:?}");
        let out = h.abupdate(&["mark-bad", "B"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        let state = h.state();
        assert!(state["transaction"].is_null(), "{loader:?}: {state}");
        assert_eq!(state["failed"][0]["version"], "2.0", "{loader:?}: {state}");
        assert_eq!(state["failed"][0]["hold"], "cancelled", "{loader:?}");
        assert!(
            state["outcomes"].to_string().contains("disarmed"),
            "{loader:?}: {state}"
        );
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        assert!(!h.bootable("B"), "{loader:?}");
        let out = h.abupdate(&["status"]);
        assert!(
            text(&out).contains("cancelled release 2.0: cancelled by the operator"),
            "{loader:?}: {}",
            text(&out)
        );
        // The next boot's verdict finds no trial to blame.
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{loader:?} health: {}", text(&out));
        let state = h.state();
        assert!(
            !state["outcomes"].to_string().contains("trial_never_booted"),
            "{loader:?}: {state}"
        );
        // The timer does not undo the operator's decision.
        timer_leaves_it_cancelled(&h, loader, &["--json", "update", "--no-reboot"]);
        // The operator's own install does, and lifts the cancel.
        let out = h.abupdate(&["install", "--no-reboot", manifest]);
        assert!(out.status.success(), "{loader:?} install: {}", text(&out));
        let state = h.state();
        assert_eq!(state["transaction"]["phase"], "staged", "{loader:?}");
        assert_eq!(
            state["failed"],
            serde_json::json!([]),
            "{loader:?}: {state}"
        );
    }
}

/// A write still pending in the other slot (`writing`: a timer download
/// whose window closed, or a power cut, here the failpoint after the
/// bytes) is resumed by the next `update`. `mark-bad` of its slot used to
/// mark the slot only and exit 0, and the next run resumed, staged and
/// booted the release anyway. It cancels it now as it cancels a staged
/// one: nothing pending, held as cancelled, the timer leaves it alone.
#[test]
fn cancelling_a_write_still_pending_holds_it_from_the_timer() {
    use serde_json::json;
    for loader in LOADERS {
        let h = write_cut(fresh("manual-cancel-writing", loader));
        assert_eq!(
            json_of(&h, &["mark-bad", "B"]),
            json!({"outcome": "cancelled", "release": "2.0", "slot": "B",
                   "message": "cancelled 2.0 being written to slot B; slot A stays the next boot"}),
            "{loader:?}"
        );
        let state = h.state();
        assert!(state["transaction"].is_null(), "{loader:?}: {state}");
        assert_eq!(state["failed"][0]["version"], "2.0", "{loader:?}: {state}");
        assert_eq!(state["failed"][0]["hold"], "cancelled", "{loader:?}");
        assert!(
            state["failed"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("while being written")),
            "{loader:?}: {state}"
        );
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        assert!(!h.bootable("B"), "{loader:?}");
        // The timer neither resumes nor stages it.
        timer_leaves_it_cancelled(&h, loader, &["--json", "update", "--now", "--no-reboot"]);
        assert_eq!(h.reboots(), 0, "{loader:?}");
    }
}

/// The timer's run (`args`, with `--json`) leaves the cancelled 2.0
/// alone: reason `cancelled`, nothing pending, slot A still boots next.
fn timer_leaves_it_cancelled(h: &Host, loader: Loader, args: &[&str]) {
    let out = h.abupdate(args);
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        said["reason"] == "cancelled" && said["outcome"] == "up_to_date",
        "{loader:?}: the timer takes 2.0 again: {}",
        text(&out)
    );
    assert!(h.state()["transaction"].is_null(), "{loader:?}");
    assert_eq!(h.primary(), Some("A"), "{loader:?}");
}

/// `args` with `--json`: exit 0 and the one JSON document on stdout.
fn json_of(h: &Host, args: &[&str]) -> serde_json::Value {
    let out = h.abupdate(&[&["--json"][..], args].concat());
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", text(&out)))
}

/// Issue (review 3, 2): `--json mark-good`, `mark-bad A`, `mark-good A
/// --force` and `rollback --no-reboot` exited 0 with nothing on stdout,
/// though `--json` promises the result. Each result is now its documented
/// shape (README "`--json` (stable)", `cli::json::Manual`).
#[test]
fn each_manual_verb_prints_its_result_as_json() {
    use serde_json::json;
    let mut h = fresh("manual-json", Loader::Grub);
    assert_eq!(
        json_of(&h, &["mark-good"]),
        json!({"outcome": "marked", "slot": "A", "good": true,
               "message": "marked slot A good"})
    );
    h.use_release(release(LEN));
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert!(out.status.success(), "update: {}", text(&out));
    assert_eq!(
        json_of(&h, &["mark-bad", "B"]),
        json!({"outcome": "cancelled", "release": "2.0", "slot": "B",
               "message": "cancelled 2.0 staged in slot B; slot A stays the next boot"})
    );
    assert_eq!(
        json_of(&h, &["mark-good", "B", "--force"]),
        json!({"outcome": "marked", "slot": "B", "good": true,
               "message": "marked slot B good"})
    );
    assert_eq!(
        json_of(&h, &["rollback", "--no-reboot"]),
        json!({"outcome": "switched", "slot": "B", "rebooting": false,
               "message": "slot B boots next"})
    );
    // Rejecting a running trial.
    let mut h = fresh("manual-json-trial", Loader::Grub);
    h.use_release(release(LEN));
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert!(out.status.success(), "update: {}", text(&out));
    assert_eq!(h.boot(), "B");
    assert_eq!(
        json_of(&h, &["rollback", "--no-reboot"]),
        json!({"outcome": "rolled_back", "release": "2.0", "slot": "A", "rebooting": false,
               "message": "rolled back 2.0: rejected by hand; slot A boots next"})
    );
}

/// Issue (attack5, finding 4): with probation off (the default), leaving a
/// committed 2.0 by hand (its checks passed, the service then misbehaved)
/// only switched or marked the slots: the textfile kept `committed` as
/// 2.0's outcome, `abupdate_rollbacks_total` stayed 0 (the fleet counted a
/// success), and the next timer run installed 2.0 again into the slot just
/// left and staged it. `rollback` from it, or `mark-bad` of its slot, is
/// now the operator's verdict on it: `rolled_back_late`, a rollback
/// counted, the release held from the timer; the operator's own `install`
/// takes it again.
#[test]
fn a_hand_rollback_of_a_committed_release_holds_it_from_the_timer_and_reports_it() {
    use serde_json::json;
    for loader in LOADERS {
        for verb in [&["rollback", "--no-reboot"][..], &["mark-bad"][..]] {
            let mut h = fresh("manual-leave", loader);
            let prom = h.dir.join("abupdate.prom");
            let mut config = std::fs::read_to_string(&h.config).expect("config");
            config.push_str(&format!("\n[report]\ntextfile = \"{}\"\n", prom.display()));
            std::fs::write(&h.config, config).expect("config");
            let rel = release(LEN);
            h.use_release(rel);
            let out = h.abupdate(&["update", "--now", "--no-reboot"]);
            assert!(out.status.success(), "{loader:?} update: {}", text(&out));
            assert_eq!(h.boot(), "B", "{loader:?}");
            let out = h.abupdate(&["health"]);
            assert!(
                text(&out).contains("committed 2.0"),
                "{loader:?}: {}",
                text(&out)
            );
            // The service misbehaves; the operator rolls 2.0 back by hand.
            assert_eq!(
                json_of(&h, verb),
                json!({"outcome": "rolled_back_late", "release": "2.0", "slot": "A",
                       "rebooting": false,
                       "message": "rolled back from 2.0 by hand; 2.0 held from the timer (`abupdate install` of it by hand takes it again); slot A boots next"}),
                "{loader:?} {verb:?}"
            );
            // The reviewer's second step changes nothing more.
            let out = h.abupdate(&["mark-bad", "B", "--force"]);
            assert!(out.status.success(), "{loader:?} {verb:?}: {}", text(&out));
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");
            assert!(!h.bootable("B"), "{loader:?} {verb:?}");
            assert_eq!(h.boot(), "A", "{loader:?} {verb:?}");
            let out = h.abupdate(&["health"]);
            assert!(out.status.success(), "{loader:?} {verb:?}: {}", text(&out));

            // Reported against 2.0, and counted.
            let textfile = std::fs::read_to_string(&prom).expect("textfile");
            let has = |head: &str, parts: &[&str]| {
                textfile
                    .lines()
                    .any(|l| l.starts_with(head) && parts.iter().all(|p| l.contains(p)))
            };
            assert!(
                has(
                    "abupdate_release_outcome{",
                    &["release=\"2.0\"", "outcome=\"rolled_back_late\""]
                ),
                "{loader:?} {verb:?}: {textfile}"
            );
            assert!(
                has("abupdate_rollbacks_total", &["} 1"]),
                "{loader:?} {verb:?}: {textfile}"
            );
            // On the failed list, held from the timer only.
            let status = json_of(&h, &["status"]);
            let failed = &status["failed"];
            assert_eq!(failed.as_array().map(Vec::len), Some(1), "{status}");
            assert_eq!(failed[0]["version"], "2.0", "{loader:?} {verb:?}");
            assert_eq!(failed[0]["hold"], "rejected", "{loader:?} {verb:?}");
            assert!(
                failed[0]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("rejected by hand after its commit")),
                "{loader:?} {verb:?}: {status}"
            );

            // The next timer run leaves it alone: nothing written, nothing
            // staged, A still boots next.
            let (env, b_bytes) = (h.env(), h.slot_sha(1));
            let out = h.abupdate(&["--json", "update", "--now", "--no-reboot"]);
            let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert!(
                said["outcome"] == "up_to_date" && said["reason"] == "previously_failed",
                "{loader:?} {verb:?}: the timer takes 2.0 again: {}",
                text(&out)
            );
            assert_eq!(h.env(), env, "{loader:?} {verb:?}: the boot order changed");
            assert_eq!(
                h.slot_sha(1),
                b_bytes,
                "{loader:?} {verb:?}: slot B written"
            );
            assert!(h.state()["transaction"].is_null(), "{loader:?} {verb:?}");
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");

            // The operator's own install takes it again, and lifts the hold.
            let manifest = rel.manifest.to_str().expect("utf-8 path");
            let out = h.abupdate(&["install", "--no-reboot", manifest]);
            assert!(out.status.success(), "{loader:?} install: {}", text(&out));
            let state = h.state();
            assert_eq!(
                state["transaction"]["phase"], "staged",
                "{loader:?} {verb:?}"
            );
            assert_eq!(state["failed"], json!([]), "{loader:?} {verb:?}: {state}");
            assert_eq!(h.primary(), Some("B"), "{loader:?} {verb:?}");
        }
    }
}

/// A fresh `loader` host with 2.0 installed into slot B, booted and
/// committed there; slot A (1.0) its fallback.
fn committed_2_0_in_b(name: &str, loader: Loader) -> Host {
    let mut h = fresh(name, loader);
    h.use_release(release(LEN));
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{loader:?} update: {}", text(&out));
    assert_eq!(h.boot(), "B", "{loader:?}");
    let out = h.abupdate(&["health"]);
    assert!(
        text(&out).contains("committed 2.0"),
        "{loader:?}: {}",
        text(&out)
    );
    h
}

/// Found from outside: with slot A's bytes changed since its commit (bit
/// rot, a stray `dd`), `rollback` made it the next boot and marked the
/// running good slot bad. Each verb that would make it bootable reads it
/// back and is refused, naming the device, nothing changed; `--force`
/// boots it as it is (found from outside again: a slot mounted
/// read-write before reads back changed too, and was left unreachable).
#[test]
fn a_slot_that_no_longer_reads_back_as_recorded_is_booted_only_by_force() {
    use crate::common::host::{image, sha, write_at_start};
    for loader in LOADERS {
        let h = committed_2_0_in_b("manual-damaged", loader);
        h.edit_state(|s| {
            s["slots"]["A"]["images"] = serde_json::json!({
                "rootfs": {"sha256": sha(&image("1.0", LEN)), "size": LEN}
            });
        });
        write_at_start(&h.slots[0], b"GARBAGE");
        for args in [
            &["rollback", "--no-reboot"][..],
            &["mark-bad"],
            &["mark-good", "A"],
        ] {
            refused(
                &h,
                args,
                &[
                    "would leave slot A to boot, but its rootfs image (",
                    "no longer reads back as the SHA-256 its record keeps for 1.0",
                    "(changed since it was written: damaged, or mounted read-write)",
                    "`--force` boots it as it is",
                ],
            );
        }
        assert_eq!(h.primary(), Some("B"), "{loader:?}");
        assert!(h.bootable("B"), "{loader:?}");
        let out = h.abupdate(&["rollback", "--no-reboot", "--force"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert!(
            text(&out).contains(
                "no longer reads back as its record says: made bootable on your word (--force)"
            ),
            "{loader:?}: {}",
            text(&out)
        );
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
    }
}

/// Found from outside: after `state.json` was lost, the fresh state's
/// record of slot A (1.0, still booted by the bootloader) is empty, and no
/// verb, `--force` or not, reached the old system. An empty record over a
/// slot that holds something is the operator's to vouch for; a plain verb
/// is still refused.
#[test]
fn after_the_state_is_lost_force_still_reaches_the_old_system() {
    for loader in LOADERS {
        let h = committed_2_0_in_b("manual-state-lost", loader);
        std::fs::remove_file(h.state_dir.join("state.json")).expect("state lost");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        let a = &h.state()["slots"]["A"];
        assert!(
            matches!(a["status"].as_str(), None | Some("empty")),
            "{loader:?}: {a}"
        );
        refused(
            &h,
            &["rollback", "--no-reboot"],
            &["slot A is empty in the state", "use --force"],
        );
        let out = h.abupdate(&["rollback", "--no-reboot", "--force"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
    }
}

/// Found from outside: a FIFO at the slot's path (a careless operator's
/// `mkfifo`) held `rollback`'s new read-back for ever, with the state lock,
/// and the boot's `health` waited on it. Refused at once, naming it.
#[test]
fn a_fifo_at_the_slot_read_back_is_refused_at_once() {
    let h = committed_2_0_in_b("manual-fifo-slot", Loader::Grub);
    let slot = &h.slots[0];
    std::fs::rename(slot, slot.with_extension("real")).expect("mv");
    let made = std::process::Command::new("mkfifo")
        .arg(slot)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let started = std::time::Instant::now();
    refused(
        &h,
        &["rollback", "--no-reboot"],
        &[&slot.display().to_string()],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the read-back waited on the FIFO"
    );
}

/// Found from outside: `mark-good B --force` of a release staged in B and
/// never tried committed it without a boot, its transaction dropped.
#[test]
fn a_release_staged_and_never_tried_is_never_marked_good_even_forced() {
    for loader in LOADERS {
        let mut h = fresh("manual-good-staged", loader);
        h.use_release(release(LEN));
        let out = h.abupdate(&["update", "--now", "--no-reboot"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        refused_even_forced(
            &h,
            &["mark-good", "B", "--force"],
            &[
                "slot B holds a release staged and never tried",
                "`abupdate mark-bad B` cancels it",
            ],
        );
        assert_eq!(h.state()["transaction"]["phase"], "staged", "{loader:?}");
    }
}

/// Found from outside: after `rollback --no-reboot` from the committed
/// 2.0 (B marked bad, A next), `install` said to run `abupdate mark-good`
/// first; a plain `mark-good` was accepted, undid the rollback unseen,
/// and the next install overwrote the slot rolled back to, while `status`
/// called B both good and failed. The install says to reboot (or how to
/// cancel); `mark-good` needs `--force`, and forced it cancels the
/// rollback whole: B good and next again, 2.0 no longer held.
#[test]
fn a_rollback_waiting_for_its_reboot_is_finished_or_cancelled_never_undone_unseen() {
    for loader in LOADERS {
        let h = committed_2_0_in_b("manual-cancel-rollback", loader);
        let out = h.abupdate(&["rollback", "--no-reboot"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        let manifest = release(LEN).manifest.to_str().expect("utf-8 path");
        // (An install's refusal is counted in the state's metrics.)
        let env = h.env();
        let out = h.abupdate(&["install", "--allow-downgrade", "--no-reboot", manifest]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{loader:?}: {err}");
        for says in [
            "the booted slot B was rolled back from",
            "reboot to finish the rollback",
            "`abupdate mark-good B --force` cancels it",
        ] {
            assert!(err.contains(says), "{loader:?}: {err} lacks {says:?}");
        }
        assert_eq!(h.env(), env, "{loader:?}: the install changed the boot");
        refused(
            &h,
            &["mark-good"],
            &[
                "slot B was rolled back from",
                "reboot to finish the rollback",
                "`abupdate mark-good B --force` to cancel it",
            ],
        );
        let out = h.abupdate(&["mark-good", "--force"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert!(
            text(&out).contains("the rollback from slot B is cancelled"),
            "{loader:?}: {}",
            text(&out)
        );
        let state = h.state();
        assert_eq!(state["slots"]["B"]["status"], "good", "{loader:?}");
        assert_eq!(
            state["failed"],
            serde_json::json!([]),
            "{loader:?}: {state}"
        );
        assert_eq!(h.primary(), Some("B"), "{loader:?}");
        assert!(h.bootable("A") && h.bootable("B"), "{loader:?}");
    }
}

/// A fresh `loader` host that installed 2.0 into slot B and booted it:
/// 2.0 on its trial.
fn booted_into_2_0(name: &str, loader: Loader) -> Host {
    let mut h = fresh(name, loader);
    h.use_release(release(LEN));
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert!(out.status.success(), "{loader:?} update: {}", text(&out));
    assert_eq!(h.boot(), "B", "{loader:?}");
    h
}

/// Found from outside: `mark-bad B` (or `rollback`) of the booted trial
/// wrote the bootloader (B bad, A next), then its save of `state.json`
/// failed (a full state file system) and it exited 1; the next `health`
/// on that boot ran the checks and committed the release the operator
/// rejected (`B_OK=1`, nothing on the failed list). The bootloader holds
/// the retirement: `health` finishes it (B bad, 2.0 on the failed list,
/// outcome `rolled_back`, exit 1, the reboot into A), never commits it.
/// GRUB and U-Boot tell the mark bad from their own counting (on EFI,
/// systemd-boot and a custom bootloader it looks like any trial: the unit
/// tests of `agent::verdict` and `Bootloader::marked_bad` say why).
#[test]
fn a_rejected_trial_whose_record_was_lost_is_retired_by_health_never_committed() {
    for loader in [Loader::Grub, Loader::Uboot] {
        for verb in [&["mark-bad"][..], &["rollback", "--no-reboot"][..]] {
            let mut h = booted_into_2_0("manual-lost-reject", loader);
            // The state file system is full from the retirement's pair on.
            let out = h.abupdate_env(verb, &[("ABUPDATE_STATE_FULL_AFTER", "rolled-back")]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{loader:?} {verb:?}: {}",
                text(&out)
            );
            assert!(
                text(&out).contains("No space left on device"),
                "{loader:?} {verb:?}: {}",
                text(&out)
            );
            assert_eq!(h.state()["transaction"]["phase"], "staged", "record lost");
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");
            assert!(!h.bootable("B"), "{loader:?} {verb:?}");
            // Space comes back; `health` runs again on the same boot.
            let reboots = h.reboots();
            let out = h.abupdate(&["health"]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{loader:?} {verb:?}: {}",
                text(&out)
            );
            assert!(
                text(&out).contains("rolled back 2.0")
                    && text(&out).contains("a run whose record was never saved"),
                "{loader:?} {verb:?}: {}",
                text(&out)
            );
            let state = h.state();
            assert!(
                state["transaction"].is_null(),
                "{loader:?} {verb:?}: {state}"
            );
            assert_eq!(state["slots"]["B"]["status"], "bad", "{loader:?} {verb:?}");
            assert_eq!(state["failed"][0]["version"], "2.0", "{loader:?} {verb:?}");
            let outcomes = state["outcomes"].to_string();
            assert!(
                outcomes.contains("rolled_back") && !outcomes.contains("committed"),
                "{loader:?} {verb:?}: {outcomes}"
            );
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");
            assert!(!h.bootable("B"), "{loader:?} {verb:?}: 2.0 committed");
            assert_eq!(h.reboots(), reboots + 1, "{loader:?}: the reboot into A");
            assert_eq!(h.boot(), "A", "{loader:?} {verb:?}");
            let out = h.abupdate(&["health"]);
            assert!(out.status.success(), "{loader:?} {verb:?}: {}", text(&out));
        }
    }
}

/// 2.0 committed in slot B of a fresh `loader` host, then rejected by
/// `verb` while the state file system is full from the retirement's pair
/// on: the bootloader holds B retired, `state.json` still 2.0 committed.
/// The verb's output.
fn reject_commit_unsaved(h: &mut Host, loader: Loader, verb: &[&str]) -> Output {
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    let out = h.abupdate_env(verb, &[("ABUPDATE_STATE_FULL_AFTER", "rolled-back")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{loader:?} {verb:?}: {}",
        text(&out)
    );
    assert_eq!(h.state()["slots"]["B"]["status"], "good", "record lost");
    out
}

/// `health`'s run `out` finished the late rollback of 2.0 whose record was
/// lost: said so, B recorded bad, 2.0 on the failed list, reported
/// `rolled_back_late`, A next.
fn finished_unrecorded_late(h: &Host, out: &Output, what: &str) {
    assert!(
        text(out).contains("rolling back 2.0 in slot B late")
            && text(out).contains("a run whose record was never saved"),
        "{what}: {}",
        text(out)
    );
    let state = h.state();
    assert_eq!(state["slots"]["B"]["status"], "bad", "{what}: {state}");
    assert_eq!(state["failed"][0]["version"], "2.0", "{what}");
    let outcomes = state["outcomes"].to_string();
    assert!(outcomes.contains("rolled_back_late"), "{what}: {outcomes}");
    assert_eq!(h.primary(), Some("A"), "{what}: re-blessed");
}

/// The same class after a commit (found in review; on EFI and systemd-boot
/// found from outside again, whose marks it did not read): `rollback` (or
/// `mark-bad`) of the committed 2.0 wrote the bootloader (B bad, A next),
/// its state save failed, and the next `health` on that boot re-blessed B
/// and the rollback was undone. The failed save now says what the
/// bootloader holds, and `health` finishes the rollback as a late one (B
/// bad, 2.0 on the failed list, `rolled_back_late`, the reboot into A),
/// never re-blesses B.
#[test]
fn a_rejected_commit_whose_record_was_lost_is_rolled_back_by_health_never_re_blessed() {
    for loader in [
        Loader::Grub,
        Loader::Uboot,
        Loader::Efi,
        Loader::SystemdBoot,
    ] {
        for verb in [&["mark-bad"][..], &["rollback", "--no-reboot"][..]] {
            let mut h = booted_into_2_0("manual-lost-late", loader);
            let out = reject_commit_unsaved(&mut h, loader, verb);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            let last = err.lines().last().unwrap_or_default();
            for says in [
                "cannot record slot B retired (2.0 rolled back)",
                "No space left on device",
                "the bootloader holds slot B bad and boots slot A next",
            ] {
                assert!(last.contains(says), "{loader:?} {verb:?}: {says}: {err}");
            }
            assert_eq!(h.primary(), Some("A"), "{loader:?} {verb:?}");
            // Space comes back; `health` runs again on the same boot.
            let reboots = h.reboots();
            let out = h.abupdate(&["health"]);
            finished_unrecorded_late(&h, &out, &format!("{loader:?} {verb:?}"));
            assert!(!h.bootable("B"), "{loader:?} {verb:?}: re-blessed");
            assert_eq!(h.reboots(), reboots + 1, "{loader:?}: the reboot into A");
            assert_eq!(h.boot(), "A", "{loader:?} {verb:?}");
            let out = h.abupdate(&["health"]);
            assert!(out.status.success(), "{loader:?} {verb:?}: {}", text(&out));
        }
    }
}

/// Found from outside: the same failed save, then the reboot its error
/// advises came before any `health`: the host ran A with B (2.0) marked
/// bad in the bootloader but recorded good, `health` said "healthy", and
/// the next `update` installed 2.0 again and rebooted into it. The
/// rejection is recorded on that boot (B bad, 2.0 on the failed list,
/// `rolled_back_late`, no reboot: A runs), and the timer leaves 2.0 alone.
#[test]
fn a_rejected_commit_whose_record_was_lost_stays_rejected_after_the_reboot() {
    for loader in [
        Loader::Grub,
        Loader::Uboot,
        Loader::Efi,
        Loader::SystemdBoot,
    ] {
        let mut h = booted_into_2_0("manual-lost-left", loader);
        reject_commit_unsaved(&mut h, loader, &["rollback", "--no-reboot"]);
        assert_eq!(h.boot(), "A", "{loader:?}: the advised reboot");
        let reboots = h.reboots();
        let out = h.abupdate(&["health"]);
        finished_unrecorded_late(&h, &out, &format!("{loader:?}"));
        assert_eq!(h.state()["slots"]["A"]["status"], "good", "{loader:?}");
        assert_eq!(h.reboots(), reboots, "{loader:?}: A runs, no reboot");
        // The timer does not take 2.0 again.
        let b = h.slot_sha(1);
        let out = h.abupdate(&["--json", "update", "--now", "--no-reboot"]);
        let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(
            said["reason"],
            "previously_failed",
            "{loader:?}: {}",
            text(&out)
        );
        assert_eq!(h.slot_sha(1), b, "{loader:?}: slot B written again");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
    }
}

/// Found from outside: the state file system filled after the slot was
/// verified; `install` activated B, its save of `staged` failed, and it
/// exited 1 with only "state.json.tmp: No space left on device" while the
/// bootloader booted B next and `status` said "installing". The
/// activation is undone before the error: B bad, A next and good, no
/// reboot, and the one-line error names `state.json` and says the
/// bootloader was restored. The record still says `writing`, which the
/// next boot's `health` and `update` handle as an interrupted write.
#[test]
fn an_install_whose_staging_cannot_be_saved_restores_the_bootloader() {
    for loader in [Loader::Grub, Loader::Uboot] {
        let mut h = fresh("install-unsaved-stage", loader);
        let rel = release(LEN);
        h.use_release(rel);
        let manifest = rel.manifest.to_str().expect("utf-8 path");
        let out = h.abupdate_env(
            &["install", manifest],
            &[("ABUPDATE_STATE_FULL_AFTER", "activated")],
        );
        assert_eq!(out.status.code(), Some(1), "{loader:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let last = err.lines().last().unwrap_or_default();
        let state_file = h.state_dir.join("state.json");
        for says in [
            format!(
                "{}: cannot record slot B staged with 2.0",
                state_file.display()
            ),
            "No space left on device".into(),
            "the bootloader was restored: slot B is marked bad and slot A boots next".into(),
        ] {
            assert!(last.contains(&says), "{loader:?}: {err} lacks {says:?}");
        }
        assert_eq!(h.primary(), Some("A"), "{loader:?}");
        assert!(!h.bootable("B"), "{loader:?}");
        assert!(h.bootable("A"), "{loader:?}");
        assert_eq!(h.reboots(), 0, "{loader:?}");
        assert_eq!(h.state()["transaction"]["phase"], "writing", "{loader:?}");
        assert_eq!(h.boot(), "A", "{loader:?}");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{loader:?} health: {}", text(&out));
        // Space back: the install goes through.
        let out = h.abupdate(&["install", "--no-reboot", manifest]);
        assert!(out.status.success(), "{loader:?} install: {}", text(&out));
        assert_eq!(h.primary(), Some("B"), "{loader:?}");
    }
}

/// Found from outside (a random walk of verbs, cuts and resets): the
/// records can be behind the bootloader, and `mark-bad` judged on them
/// alone left nothing to boot. Three ways there, each refused now, the
/// bootloader left as it was, until `--force` (and, where the slot left
/// is held bad too, `mark-good --force` of it first):
/// a `rollback` cut between marking B bad and activating A, then
/// `mark-bad A`; an `install` on a full state file system (A, its target,
/// marked bad and not recorded), then `mark-bad` of the booted B; a
/// `rollback`, then `state.json` deleted, then `mark-bad A`.
#[test]
fn mark_bad_never_leaves_no_bootable_slot_when_the_records_are_behind_the_bootloader() {
    use crate::common::grub::{choose, How};
    use crate::common::host::{image, TestHost};
    for case in ["cut rollback", "install on a full state", "state deleted"] {
        let mut h = TestHost::new(
            &format!("mark-bad-behind-{}", case.replace(' ', "-")),
            "1.0",
            HostOptions::default(),
        );
        let m = h.pack("r2", "2.0", &image("2.0", 64 << 10), &[]);
        let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("p")]);
        assert!(out.status.success(), "{case}: {}", text(&out));
        assert_eq!(h.boot(), "B");
        assert!(h.abupdate(&["health"]).status.success(), "{case}");
        let target = match case {
            "cut rollback" => {
                let out = h.abupdate_env(&["rollback"], &[("ABUPDATE_FAILPOINT", "env-written:1")]);
                assert!(!out.status.success(), "{case}: not cut: {}", text(&out));
                "A"
            }
            "install on a full state" => {
                let m3 = h.pack("r3", "3.0", &image("3.0", 64 << 10), &[]);
                let out = h.abupdate_env(
                    &["install", "--no-reboot", m3.to_str().expect("p")],
                    &[("ABUPDATE_STATE_FULL_AFTER", "state-written")],
                );
                assert!(!out.status.success(), "{case}: {}", text(&out));
                "B"
            }
            _ => {
                assert!(h.abupdate(&["rollback", "--no-reboot"]).status.success());
                std::fs::remove_file(h.state_dir.join("state.json")).expect("rm");
                "A"
            }
        };
        let env = h.grub_vars();
        assert_ne!(choose(&env).how, How::NoOkSlot, "{case}: {env:?}");
        let out = h.abupdate(&["mark-bad", target]);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
        assert!(
            text(&out).contains("would leave no bootable slot: the bootloader holds slot"),
            "{case}: {}",
            text(&out)
        );
        assert_eq!(h.grub_vars(), env, "{case}: the bootloader changed");
        // `--force` vouches for the slot left, but a plain mark of the only
        // slot the bootloader boots would still leave it none: refused,
        // pointing at `mark-good` of the other; once that is done, it goes.
        let other = if target == "A" { "B" } else { "A" };
        let out = h.abupdate(&["mark-bad", target, "--force"]);
        match case {
            "install on a full state" => {
                assert!(out.status.success(), "{case}: --force: {}", text(&out))
            }
            _ => {
                assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
                assert!(
                    text(&out).contains(&format!(
                        "would leave no slot the bootloader boots: it holds slot {other} bad too"
                    )),
                    "{case}: {}",
                    text(&out)
                );
                assert_eq!(h.grub_vars(), env, "{case}: the bootloader changed");
                let out = h.abupdate(&["mark-good", other, "--force"]);
                assert!(out.status.success(), "{case}: {}", text(&out));
                let out = h.abupdate(&["mark-bad", target, "--force"]);
                assert!(out.status.success(), "{case}: --force: {}", text(&out));
            }
        }
        let env = h.grub_vars();
        assert_ne!(choose(&env).how, How::NoOkSlot, "{case}: {env:?}");
    }
}

/// Found from outside (a random walk, seed 2257): an install into A whose
/// records were lost (the state file system filled before its staging was
/// saved: the bootloader was restored, A marked bad over bytes that are now
/// the new release's; then `state.json` damaged, so a copy from before the
/// install stood in, recording A good with 1.0) let `rollback` make A the
/// next boot, and mark B, the good slot, bad. A slot the bootloader holds
/// bad is no slot to go to on a record the bootloader is ahead of.
#[test]
fn rollback_is_refused_to_a_slot_the_bootloader_holds_bad_behind_its_record() {
    use crate::common::host::{image, TestHost};
    let mut h = TestHost::new("rollback-behind", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 64 << 10), &[]);
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("p")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "B");
    assert!(h.abupdate(&["health"]).status.success());
    let m3 = h.pack("r3", "3.0", &image("3.0", 64 << 10), &[]);
    let out = h.abupdate_env(
        &["install", "--no-reboot", m3.to_str().expect("p")],
        &[("ABUPDATE_STATE_FULL_AFTER", "read-back")],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(h.grub_vars()["A_OK"], "0", "the restore marks A bad");
    std::fs::write(h.state_dir.join("state.json"), "{\"slots\": nope").expect("damage");
    let env = h.grub_vars();
    let out = h.abupdate(&["--json", "rollback", "--no-reboot"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "refused", "{said}");
    assert!(
        said.contains("would boot slot A, which the bootloader holds bad"),
        "{said}"
    );
    assert_eq!(h.grub_vars(), env, "the bootloader changed");
    let out = h.abupdate(&["rollback", "--no-reboot", "--force"]);
    assert!(out.status.success(), "--force: {}", text(&out));
    assert_eq!(h.grub_vars()["ORDER"], "A B");
}
