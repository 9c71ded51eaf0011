//! The whole update loop on one host, with the real `grub-editenv` reading
//! the env we write and the test playing GRUB's selection (the VM test runs
//! the real GRUB): install → trial boot → commit; → health fails → rolled
//! back and never retried; → trial never comes up → recorded as failed.

use crate::common::host::{date, image, now, text, HostOptions, TestHost};
use crate::common::prometheus::textfile_has;

fn var(h: &TestHost, k: &str) -> String {
    h.grub_vars().get(k).cloned().unwrap_or_default()
}

/// `install --no-reboot` of the manifest `m`, which fails: exit 1, kind
/// `kind`.
fn install_fails_as(h: &TestHost, m: &std::path::Path, kind: &str) {
    let m = m.to_str().expect("utf8 path");
    let out = h.abupdate(&["--json", "install", m, "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], kind, "{v}");
}

fn host_with_release(name: &str) -> (TestHost, std::path::PathBuf) {
    let h = TestHost::new(name, "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 3 << 20), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(
        "[update]\n",
        &format!("[update]\nurl = \"file://{}\"\n", m.display()),
    );
    std::fs::write(&h.config, cfg).expect("config");
    (h, m)
}

#[test]
fn update_then_healthy_trial_is_committed() {
    let (mut h, _) = host_with_release("loop-commit");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));

    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1, "update must request the reboot");
    // Activated as a trial: B first, good, not yet tried.
    assert_eq!(var(&h, "ORDER"), "B A");
    assert_eq!(
        (var(&h, "B_OK").as_str(), var(&h, "B_TRY").as_str()),
        ("1", "0")
    );
    assert_eq!(h.state()["transaction"]["phase"], "staged");

    assert_eq!(h.boot(), "B");
    assert_eq!(
        var(&h, "B_TRY"),
        "1",
        "GRUB marks the slot it boots as tried"
    );
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert_eq!(
        (var(&h, "B_OK").as_str(), var(&h, "B_TRY").as_str()),
        ("1", "0")
    );
    assert!(h.state()["transaction"].is_null());
    assert_eq!(h.state()["slots"]["B"]["status"], "good");

    // Committed means the next boots keep choosing B, re-blessed each time.
    for _ in 0..3 {
        assert_eq!(h.boot(), "B");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(var(&h, "B_TRY"), "0");
    }
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = h.abupdate(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status["booted_slot"], "B");
    assert_eq!(status["booted_version"], "2.0");
    assert_eq!(status["primary_slot"], "B");
}

/// Found from outside (stop 47): a grubenv whose other variables run past
/// its first sector (a long `kernelopts`: `grub-editenv` and GRUB fill all
/// 1024 bytes) made every write fail, the re-bless on each boot included:
/// the booted slot used up its try and the host had no slot left to boot.
/// Each of these writes changes one sector of the block; they go through,
/// and the other variables stay as they were.
#[test]
fn an_env_filled_past_its_first_sector_by_other_variables_still_boots_updates_and_commits() {
    let (mut h, _) = host_with_release("loop-long-kernelopts");
    let opts = "root=/dev/mapper/rootvg-root ro rd.lvm.lv=rootvg/root ".repeat(12);
    h.grub_set(&[("kernelopts", &opts)]);
    assert!(std::fs::read(&h.grubenv).expect("grubenv")[512..]
        .iter()
        .any(|&b| b != b'#'));
    // Boots of the committed slot: GRUB sets A_TRY, health clears it.
    for _ in 0..2 {
        assert_eq!(h.boot(), "A");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "re-bless: {}", text(&out));
        assert_eq!(var(&h, "A_TRY"), "0");
    }
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "update: {}", text(&out));
    assert_eq!(var(&h, "ORDER"), "B A");
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "commit: {}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert_eq!(h.boot(), "B");
    assert_eq!(var(&h, "kernelopts"), opts);
}

#[test]
fn failing_health_rolls_back_and_the_release_is_never_retried() {
    let (mut h, _) = host_with_release("loop-rollback");
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    h.add_health_check("10-app", "echo 'app did not start' >&2; exit 1");
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("app did not start"), "{}", text(&out));
    assert_eq!(h.reboots(), 2, "rollback must reboot");
    assert_eq!(var(&h, "ORDER"), "A B");
    assert_eq!(var(&h, "B_OK"), "0");
    let failed = &h.state()["failed"];
    assert_eq!(failed[0]["version"], "2.0", "{failed}");

    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm");
    assert_eq!(h.boot(), "A");
    assert!(h.abupdate(&["health"]).status.success());
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("already failed"), "{}", text(&out));
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        h.reboots(),
        2,
        "a failed release must not be installed again"
    );

    // A newer release is taken.
    let m3 = h.pack("r3", "3.0", &image("3.0", 2 << 20), &[]);
    let out = h.abupdate(&["install", "--no-reboot", m3.to_str().expect("p")]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_trial_that_never_comes_up_is_recorded_as_failed() {
    let (mut h, _) = host_with_release("loop-never-booted");
    assert!(h.abupdate(&["update"]).status.success());
    // GRUB tried B (B_TRY=1), it hung; the next boot falls back to A.
    assert_eq!(h.boot(), "B");
    assert_eq!(h.boot(), "A");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("never came up"), "{}", text(&out));
    assert_eq!(h.reboots(), 1, "no reboot after a fallback");
    assert_eq!(h.state()["failed"][0]["version"], "2.0");
    assert_eq!(var(&h, "B_OK"), "0");
    assert_eq!(var(&h, "A_TRY"), "0", "the running slot is re-blessed");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn staged_but_not_rebooted_waits() {
    let (h, _) = host_with_release("loop-staged");
    assert!(h.abupdate(&["update", "--no-reboot"]).status.success());
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("waits for a reboot"), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    assert_eq!(var(&h, "ORDER"), "B A");
}

#[test]
fn manual_mark_and_rollback() {
    let (mut h, _) = host_with_release("loop-manual");
    // Rollback to an empty slot is refused.
    let out = h.abupdate(&["rollback", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refusing"), "{}", text(&out));
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    assert!(h.abupdate(&["mark-good"]).status.success());
    assert!(h.state()["transaction"].is_null());
    // Back to A by hand: A is a good slot.
    let out = h.abupdate(&["rollback", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(var(&h, "ORDER"), "A B");
    assert_eq!(h.boot(), "A");
    assert!(h.abupdate(&["mark-bad", "B"]).status.success());
    assert_eq!(var(&h, "B_OK"), "0");
}

/// Cut `state.json` in half, as a damaged data partition might leave it.
fn damage_state(h: &TestHost) -> Vec<u8> {
    let path = h.state_dir.join("state.json");
    let full = std::fs::read(&path).expect("state.json");
    std::fs::write(&path, &full[..full.len() / 2]).expect("truncate");
    full[..full.len() / 2].to_vec()
}

#[test]
fn a_damaged_state_json_does_not_cost_a_boot_and_keeps_the_failed_list() {
    let (mut h, _) = host_with_release("loop-damaged-state");
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    h.add_health_check("10-app", "exit 1");
    assert_eq!(h.abupdate(&["health"]).status.code(), Some(1));
    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm");
    assert_eq!(h.boot(), "A");
    assert!(h.abupdate(&["health"]).status.success());
    // One more save after the failure was recorded (the timer's check).
    assert_eq!(h.abupdate(&["check"]).status.code(), Some(0));

    let damaged = damage_state(&h);
    // GRUB boots A and sets A_TRY=1: only a re-bless keeps A bootable.
    assert_eq!(h.boot(), "A");
    assert_eq!(var(&h, "A_TRY"), "1");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("state.json is damaged"),
        "not reported: {}",
        text(&out)
    );
    assert_eq!(var(&h, "A_TRY"), "0", "the booted slot was not re-blessed");
    assert_eq!(
        (var(&h, "ORDER").as_str(), var(&h, "B_OK").as_str()),
        ("A B", "0")
    );
    let state = h.state();
    assert_eq!(state["failed"][0]["version"], "2.0", "{state}");
    assert_eq!(state["metrics"]["failures"]["state_corrupt"], 1, "{state}");
    assert_eq!(
        std::fs::read(h.state_dir.join("state.json.corrupt")).expect("damaged bytes kept"),
        damaged
    );
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("already failed"), "{}", text(&out));

    // mark-good by hand works on a damaged state too.
    damage_state(&h);
    let out = h.abupdate(&["mark-good"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["failed"][0]["version"], "2.0");
}

#[test]
fn a_damaged_state_json_without_a_good_copy_still_reblesses_the_booted_slot() {
    let mut h = TestHost::new("loop-damaged-fresh", "1.0", HostOptions::default());
    assert!(!h.state_dir.join("state.json.prev").exists());
    damage_state(&h);
    assert_eq!(h.boot(), "A");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("fresh state"), "{}", text(&out));
    assert_eq!(var(&h, "A_TRY"), "0", "the booted slot was not re-blessed");
    let state = h.state();
    assert_eq!(state["slots"]["A"]["status"], "good", "{state}");
    assert_eq!(state["slots"]["A"]["version"], "1.0", "{state}");
    assert_eq!(state["metrics"]["failures"]["state_corrupt"], 1, "{state}");
}

/// A host booted into the trial of 2.0 in slot B (GRUB set `B_TRY=1`)
/// whose `state.json` was then damaged. With `older_copy`, the good copy
/// left is one from before the install (slot A committed, no trial: as
/// when the copy one step behind was lost too); without, none is left (a
/// build that kept none): a fresh state stands in. Neither records the
/// trial.
fn trial_with_damaged_state(name: &str, older_copy: bool) -> TestHost {
    let (mut h, _) = host_with_release(name);
    assert!(h.abupdate(&["health"]).status.success());
    let before = std::fs::read(h.state_dir.join("state.json")).expect("state before");
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    assert_eq!(var(&h, "B_TRY"), "1");
    damage_state(&h);
    let prev = h.state_dir.join("state.json.prev");
    match older_copy {
        true => std::fs::write(&prev, before).expect("older copy"),
        false => std::fs::remove_file(&prev).expect("no good copy"),
    }
    h
}

#[test]
fn a_trial_the_damaged_state_does_not_describe_rolls_back_when_its_check_fails() {
    let mut h = trial_with_damaged_state("loop-undescribed-fail", true);
    h.add_health_check("10-app", "echo 'app did not start' >&2; exit 1");
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("does not describe it"), "{said}");
    assert!(said.contains("app did not start"), "{said}");
    assert!(said.contains("rolled back 2.0"), "{said}");
    assert_eq!(h.reboots(), 2, "the rollback reboots");
    assert_eq!(
        (var(&h, "ORDER").as_str(), var(&h, "B_OK").as_str()),
        ("A B", "0"),
        "the failed trial is bad and the old slot boots next"
    );
    assert_eq!(h.state()["failed"][0]["version"], "2.0");
    assert_eq!(h.boot(), "A");
    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm");
    assert!(h.abupdate(&["health"]).status.success());
    assert_eq!(var(&h, "A_TRY"), "0");
    let out = h.abupdate(&["check"]);
    assert!(text(&out).contains("already failed"), "{}", text(&out));
}

/// Adds `[report] textfile` to `h`'s configuration (with `health`, more
/// `[health]` lines first); the textfile's path.
fn with_textfile(h: &TestHost, health: &str) -> std::path::PathBuf {
    let prom = h.dir.join("abupdate.prom");
    let mut config = std::fs::read_to_string(&h.config).expect("config");
    config.push_str(&format!(
        "{health}\n[report]\ntextfile = \"{}\"\n",
        prom.display()
    ));
    std::fs::write(&h.config, config).expect("config");
    prom
}

#[test]
fn a_trial_the_damaged_state_does_not_describe_commits_when_its_check_passes() {
    let mut h = trial_with_damaged_state("loop-undescribed-pass", false);
    // GRUB cannot tell this boot from a committed one's: the commit is
    // recorded and reported, but no probation starts (a release committed
    // long before would be on probation again).
    let prom = with_textfile(&h, "probation = \"24h\"");
    h.add_health_check("10-app", "exit 0");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("running health checks"), "{said}");
    assert!(said.contains("10-app: pass"), "{said}");
    assert!(said.contains("committed 2.0"), "{said}");
    assert_eq!(h.reboots(), 1, "no reboot");
    assert_eq!(
        (
            var(&h, "ORDER").as_str(),
            var(&h, "B_OK").as_str(),
            var(&h, "B_TRY").as_str()
        ),
        ("B A", "1", "0")
    );
    let state = h.state();
    assert_eq!(state["slots"]["B"]["status"], "good", "{state}");
    assert_eq!(state["slots"]["B"]["version"], "2.0", "{state}");
    assert!(state["probation"].is_null(), "{state}");
    assert!(
        textfile_has(
            &prom,
            "abupdate_release_outcome{",
            &["release=\"2.0\"", "outcome=\"committed\""]
        ),
        "not reported: {state}"
    );
    assert_eq!(h.boot(), "B");
}

/// GRUB counts every boot as a try, so a committed host whose state was
/// damaged (no good copy left) has its checks run as a trial's. A failing
/// one keeps the slot, as before, but it is a health failure of this host
/// (`health`), not a trial failure of the release it runs: it used to be
/// counted as `no_fallback`, which `fleet` counts against a release.
#[test]
fn a_failing_check_on_a_committed_grub_host_with_a_damaged_state_is_the_hosts_not_the_releases() {
    let (mut h, _) = host_with_release("loop-damaged-committed");
    let prom = with_textfile(&h, "");
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    assert!(h.abupdate(&["health"]).status.success(), "2.0 committed");
    assert_eq!(h.boot(), "B");
    assert_eq!(var(&h, "B_TRY"), "1", "GRUB tries B on every boot");
    damage_state(&h);
    std::fs::remove_file(h.state_dir.join("state.json.prev")).expect("no good copy");
    h.add_health_check("10-app", "echo 'disk full' >&2; exit 1");

    let out = h.abupdate(&["--json", "health"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("disk full"), "{said}");
    assert!(said.contains("not against 2.0"), "{said}");
    assert_eq!(
        (
            var(&h, "ORDER").as_str(),
            var(&h, "B_OK").as_str(),
            var(&h, "B_TRY").as_str()
        ),
        ("B A", "1", "0"),
        "the slot that runs is kept bootable, as before"
    );
    let state = h.state();
    assert_eq!(state["metrics"]["failures"]["health"], 1, "{state}");
    assert!(
        state["metrics"]["failures"]["no_fallback"].is_null(),
        "{state}"
    );
    assert!(
        textfile_has(
            &prom,
            "abupdate_failures_total{",
            &["kind=\"health\"", "} 1"]
        ),
        "{state}"
    );
    assert!(
        !textfile_has(&prom, "abupdate_", &["no_fallback"]),
        "counted as no_fallback: {}",
        std::fs::read_to_string(&prom).unwrap_or_default()
    );
    assert!(
        !textfile_has(&prom, "abupdate_release_outcome{", &["outcome=\"failed\""]),
        "a failure of a release"
    );
}

#[test]
fn a_failed_trial_the_damaged_state_does_not_describe_is_kept_when_the_old_slot_is_bad() {
    let h = trial_with_damaged_state("loop-undescribed-no-fallback", true);
    h.grub_set(&[("A_OK", "0")]);
    h.add_health_check("10-app", "exit 1");
    let out = h.abupdate(&["--json", "health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("\"no_fallback\""), "{said}");
    assert!(said.contains("slot A is no fallback"), "{said}");
    assert_eq!(h.reboots(), 1, "nowhere to reboot to");
    assert_eq!(
        (
            var(&h, "ORDER").as_str(),
            var(&h, "A_OK").as_str(),
            var(&h, "B_OK").as_str(),
            var(&h, "B_TRY").as_str()
        ),
        ("B A", "0", "1", "0"),
        "the only bootable slot stays bootable; the bad one is not activated"
    );
}

/// Review 9, 01: with no record left, nothing says the other slot holds a
/// system (GRUB flags a slot never written bootable), and on GRUB every
/// boot is a try. A failing check keeps the booted slot, whether it runs
/// a trial (B) or its only release (A, B never written); it used to roll
/// back into the other slot, bricking a host whose B held nothing.
#[test]
fn a_failing_check_on_a_damaged_state_without_a_record_never_rolls_back_into_the_unknown_slot() {
    let h = trial_with_damaged_state("loop-undescribed-fresh", false);
    h.add_health_check("10-app", "exit 1");
    let out = h.abupdate(&["--json", "health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("\"no_fallback\""), "{}", text(&out));
    assert_eq!(h.reboots(), 1, "no reboot");
    assert_eq!(
        (
            var(&h, "ORDER").as_str(),
            var(&h, "B_OK").as_str(),
            var(&h, "B_TRY").as_str()
        ),
        ("B A", "1", "0"),
        "the trial that runs is kept bootable"
    );

    let mut h = TestHost::new("loop-damaged-only-release", "1.0", HostOptions::default());
    assert!(h.abupdate(&["health"]).status.success());
    damage_state(&h);
    std::fs::remove_file(h.state_dir.join("state.json.prev")).ok();
    assert_eq!(h.boot(), "A");
    assert_eq!(var(&h, "A_TRY"), "1", "GRUB tries A on every boot");
    h.add_health_check("10-app", "echo 'network not up yet' >&2; exit 1");
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("network not up yet"), "{}", text(&out));
    assert_eq!(h.reboots(), 0, "no reboot");
    assert_eq!(
        (
            var(&h, "ORDER").as_str(),
            var(&h, "A_OK").as_str(),
            var(&h, "A_TRY").as_str()
        ),
        ("A B", "1", "0"),
        "the only release stays the one that boots"
    );
    let state = h.state();
    assert_ne!(
        state["slots"]["B"]["status"], "good",
        "B is guessed: {state}"
    );
    assert_eq!(h.boot(), "A");
}

#[test]
fn a_damaged_state_that_holds_the_booted_slot_committed_re_blesses_it_unchecked() {
    let (mut h, _) = host_with_release("loop-damaged-committed");
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    // Right after the commit (review 9, 02: the last good copy held the
    // trial until the next save, and the committed release was judged as
    // one again): the commit is saved twice.
    assert!(h.abupdate(&["health"]).status.success());
    damage_state(&h);
    assert_eq!(h.boot(), "B");
    assert_eq!(var(&h, "B_TRY"), "1", "GRUB tries B on every boot");
    // Checks run only on a trial: a failing one changes nothing here.
    h.add_health_check("10-app", "exit 1");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("state.json is damaged"), "{said}");
    assert!(!said.contains("10-app"), "{said}");
    assert_eq!(h.reboots(), 1);
    assert_eq!(
        (var(&h, "ORDER").as_str(), var(&h, "B_TRY").as_str()),
        ("B A", "0")
    );
}

/// The state dir bind-mounted read-only on itself, unmounted when dropped.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(dir: &std::path::Path) -> ReadOnly {
        let sh = |args: &[&str]| {
            let out = crate::common::host::run(
                std::process::Command::new("mount")
                    .args(args)
                    .arg(dir)
                    .arg(dir),
            );
            assert!(out.status.success(), "mount {args:?}: {}", text(&out));
        };
        sh(&["--bind"]);
        let ro = ReadOnly(dir.to_path_buf());
        sh(&["-o", "remount,bind,ro"]);
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_read_only_state_dir_still_reblesses_the_booted_slot() {
    let mut h = TestHost::new("loop-state-ro", "1.0", HostOptions::default());
    for lock_file in [true, false] {
        if !lock_file {
            std::fs::remove_file(h.state_dir.join("lock")).expect("rm lock");
        }
        assert_eq!(h.boot(), "A");
        assert_eq!(var(&h, "A_TRY"), "1");
        let ro = ReadOnly::mount(&h.state_dir);
        let out = h.abupdate(&["health"]);
        drop(ro);
        assert!(
            out.status.success(),
            "lock file {lock_file}: {}",
            text(&out)
        );
        assert_eq!(
            var(&h, "A_TRY"),
            "0",
            "lock file {lock_file}: the booted slot was not re-blessed"
        );
    }
}

/// Found from outside (stop 58): a state filesystem out of space or
/// inodes with its lock file gone (a state dir reset on a full data
/// partition) lost the boot's verdict: `…/lock: No space left on device`,
/// nothing judged, and the next boot fell back. As on a read-only one,
/// the lock is taken on what can be opened and the booted slot is
/// re-blessed; only the state's own save fails.
#[test]
fn a_full_state_filesystem_without_its_lock_file_still_reblesses_the_booted_slot() {
    let mut h = TestHost::new("loop-state-full", "1.0", HostOptions::default());
    assert_eq!(h.boot(), "A");
    assert_eq!(var(&h, "A_TRY"), "1");
    let state = std::fs::read(h.state_dir.join("state.json")).expect("state");
    let mounted = crate::common::host::run(
        std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=64k,nr_inodes=3,mode=0755",
                "tmpfs",
            ])
            .arg(&h.state_dir),
    );
    assert!(mounted.status.success(), "{}", text(&mounted));
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).output();
        }
    }
    let _unmount = Unmount(&h.state_dir);
    std::fs::write(h.state_dir.join("state.json"), state).expect("state on the tmpfs");
    // Every inode taken: no lock file, no `partial` can be made.
    let mut n = 0;
    while std::fs::write(h.state_dir.join(format!("fill-{n}")), b"").is_ok() {
        n += 1;
    }
    assert!(!h.state_dir.join("lock").exists() && !h.state_dir.join("partial").exists());
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(var(&h, "A_TRY"), "0", "the booted slot was not re-blessed");
}

#[test]
fn fields_a_newer_version_wrote_survive_a_save() {
    let h = TestHost::new("loop-newer-fields", "1.0", HostOptions::default());
    let path = h.state_dir.join("state.json");
    let mut state = h.state();
    state["attestation"] = serde_json::json!({"until": 42});
    state["slots"]["A"]["verity_root"] = serde_json::json!("abc");
    std::fs::write(&path, serde_json::to_vec(&state).expect("json")).expect("write");
    let out = h.abupdate(&["mark-good"]);
    assert!(out.status.success(), "{}", text(&out));
    let saved = h.state();
    assert_eq!(saved["attestation"]["until"], 42, "{saved}");
    assert_eq!(saved["slots"]["A"]["verity_root"], "abc", "{saved}");
}

#[test]
fn a_staged_record_the_bootloader_undid_is_installed_again_not_reported_staged() {
    let h = TestHost::new("loop-stale-staged", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let install = || h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8 path")]);
    let out = install();
    assert!(out.status.success(), "{}", text(&out));
    assert!(var(&h, "ORDER").starts_with('B') && var(&h, "B_OK") == "1");
    // The bootloader's env is reset behind abupdate's back (another tool,
    // a hand edit): the record still says staged. (`mark-bad B` is the
    // operator's cancel, which ends the record: `manual_verbs`.)
    h.grub_set(&[("ORDER", "A B"), ("B_OK", "0")]);
    assert_eq!(var(&h, "B_OK"), "0");
    let out = install();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no longer boots it next: installing it again"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("already staged"), "{}", text(&out));
    assert!(var(&h, "ORDER").starts_with('B'), "{:?}", h.grub_vars());
    assert_eq!(var(&h, "B_OK"), "1", "{:?}", h.grub_vars());
    // Staged for real, a third install is the shortcut again.
    let out = install();
    assert!(text(&out).contains("already staged"), "{}", text(&out));
}

#[test]
fn a_staged_slot_damaged_before_the_reboot_is_read_back_and_written_again() {
    // Segmented (BLAKE3 per segment) and one-frame (the image's SHA-256).
    for (name, extra) in [
        ("seg", &["--segment-size", "1"][..]),
        ("one", &["--one-frame"][..]),
    ] {
        let h = TestHost::new(
            &format!("loop-staged-damaged-{name}"),
            "1.0",
            HostOptions::default(),
        );
        let img = image("2.0", 3 << 20);
        let m = h.pack("r2", "2.0", &img, extra);
        let install = || h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8 path")]);
        let out = install();
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_eq!(h.slot_bytes(1, img.len()), img, "{name}");
        // One byte of the staged slot flips before the reboot.
        let mut flipped = h.slot_bytes(1, 1_500_001)[1_500_000..].to_vec();
        flipped[0] ^= 0xff;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&h.slots[1])
            .expect("slot");
        std::os::unix::fs::FileExt::write_all_at(&f, &flipped, 1_500_000).expect("flip");
        drop(f);
        let out = install();
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("no longer reads back as signed: installing it again"),
            "{name}: {}",
            text(&out)
        );
        assert!(
            !text(&out).contains("already staged"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(
            h.slot_bytes(1, img.len()),
            img,
            "{name}: slot B written again"
        );
        assert!(var(&h, "ORDER").starts_with('B'), "{:?}", h.grub_vars());
        assert_eq!(var(&h, "B_OK"), "1", "{:?}", h.grub_vars());
        // Whole again, the next install is the shortcut.
        let out = install();
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("already staged"),
            "{name}: {}",
            text(&out)
        );
    }
}

#[test]
fn partial_downloads_of_replaced_releases_are_removed_by_the_next_install() {
    let h = TestHost::new("loop-partial-prune", "1.0", HostOptions::default());
    let partial = h.state_dir.join("partial");
    std::fs::create_dir_all(&partial).expect("partial dir");
    // Left by cut downloads of releases since replaced.
    for sha in ["1", "2"] {
        std::fs::write(
            partial.join(format!("{}.part", sha.repeat(64))),
            vec![7u8; 1 << 20],
        )
        .expect("old partial");
    }
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--one-frame"]);
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8 path")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("removed 2 partial download(s)"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&partial).expect("partial dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_os_release_version_that_does_not_parse_falls_back_to_the_installed_record() {
    let h = TestHost::new("loop-odd-version", "1.0", HostOptions::default());
    assert_eq!(h.state()["slots"]["A"]["version"], "1.0");
    std::fs::write(&h.os_release, "ID=test\nIMAGE_VERSION=rolling\n").expect("os-release");
    let old = h.pack("r09", "0.9", &image("0.9", 1 << 16), &[]);
    let out = h.abupdate(&["check", old.to_str().expect("utf8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("not newer"), "{}", text(&out));
}

/// A booted version that is not a dotted number (`3.0-rc1`, `v3.0`, a
/// byte that is not UTF-8, a quote never closed) with no record to fall back on (a host whose
/// state was lost: the re-bless rebuilds the record from that same
/// os-release) cannot be compared: the timer's `check` and `update` refuse
/// it as a channel host does (kind `refused`, naming os-release and the
/// value), never taking it as older than every release and installing
/// 2.0 over 3.0; while a record that parses still places it, and an
/// operator's explicit `install` still installs.
#[test]
fn an_unparsable_booted_version_without_a_record_is_refused_never_downgraded() {
    let (h, m) = host_with_release("loop-unparsable-version");
    // A record that parses places the host, as before: 1.0 < 2.0.
    std::fs::write(&h.os_release, "ID=test\nIMAGE_VERSION=3.0-rc1\n").expect("os-release");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    for (version, shown) in [
        (&b"3.0-rc1"[..], "3.0-rc1"),
        (b"v3.0", "v3.0"),
        (b"3.0\xff", r"3.0\xff"),
        // A quote never closed (found from outside, stop 58): the value as
        // written, not the VERSION_ID below it (12: newer than any
        // release, so every `check` said "not newer", exit 0, for ever).
        (b"\"3.0", "\"3.0"),
    ] {
        let mut os_release = b"ID=test\nVERSION_ID=12\nIMAGE_VERSION=".to_vec();
        os_release.extend_from_slice(version);
        os_release.push(b'\n');
        std::fs::write(&h.os_release, os_release).expect("os-release");
        std::fs::remove_file(h.state_dir.join("state.json")).expect("state lost");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{}", text(&out));
        let before = h.untouched();
        for args in [&["--json", "check"][..], &["--json", "update", "--now"]] {
            let out = h.abupdate(args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} {shown}: {}",
                text(&out)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(v["kind"], "refused", "{args:?} {shown}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(&format!("\"{shown}\"")), "{msg}");
            assert!(msg.contains(&h.os_release.display().to_string()), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        h.assert_untouched(&before, "unparsable booted version");
        assert_eq!(var(&h, "B_OK"), "0", "{shown}");
        assert!(h.state()["transaction"].is_null(), "{}", h.state());
    }
    // The operator's explicit install compares no version (README).
    let out = h.abupdate(&["install", m.to_str().expect("utf8 path"), "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["version"], "2.0", "{}", h.state());
}

#[test]
fn a_release_paused_during_its_download_is_disarmed_not_booted() {
    let (h, m) = host_with_release("loop-paused-mid-download");
    // The operator's `paused: true` re-signing of the same release, put in
    // place of the offered manifest while the install runs: dated after
    // it, as `pack` and `fleet` date a re-signing in place (one of the same
    // second, other bytes, is a replay: the trial stays staged).
    let later = date(now() + 2);
    let paused = h.pack(
        "r2-paused",
        "2.0",
        &image("2.0", 3 << 20),
        &["--paused", "--created", &later],
    );
    let dir = m.parent().expect("dir");
    let copy = format!("cp {}* {}/", paused.display(), dir.display());
    h.post_install_hook(&copy);
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "disarmed", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("paused") && m.contains("disarmed")),
        "{v}"
    );
    assert_eq!(h.reboots(), 0, "a paused release is not booted");
    assert_eq!(var(&h, "ORDER"), "A B");
    assert_eq!(var(&h, "B_OK"), "0");
    assert!(h.state()["transaction"].is_null(), "{}", h.state());
}

/// `status` read the state twice (its view, then the timer's plan): a
/// damaged `state.json` was reported twice in one output. It reads it once.
#[test]
fn status_reads_a_damaged_state_once_and_says_so_once() {
    let (h, _) = host_with_release("status-damaged-once");
    assert!(h.abupdate(&["update"]).status.success());
    damage_state(&h);
    let out = h.abupdate(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("state.json is damaged").count(),
        1,
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json["transaction"]["version"], "2.0",
        "the last good copy: {json}"
    );
}

/// `status` read the state for its view and again for the timer's plan,
/// without the lock: an install saving the state in between showed both in
/// one output (a backoff's end from the one, and what it delays from the
/// other). Here the state flips between backing off and not, by atomic
/// renames as a save makes them, while `status` runs: every output is one
/// of the two, whole. No lock is waited for: the install's lock is held
/// throughout.
#[test]
fn status_shows_one_state_while_another_instance_saves_state() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (h, _) = host_with_release("status-one-snapshot");
    assert!(h.abupdate(&["update"]).status.success());
    let mut backing_off = h.state();
    let until = abupdate::timefmt::now() + 600;
    backing_off["metrics"]["retry_after"] = until.into();
    let mut not = backing_off.clone();
    not["metrics"]["retry_after"] = serde_json::Value::Null;
    let bodies = [backing_off, not].map(|s| serde_json::to_vec_pretty(&s).expect("json"));
    let path = h.state_dir.join("state.json");
    let tmp = h.state_dir.join("state.json.test-tmp");
    // The instance lock, as an install holds it.
    let lock = std::fs::File::open(h.state_dir.join("lock")).expect("lock file");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("the instance lock");
    let stop = AtomicBool::new(false);
    // The runs first, checked once the writer stopped: a failed check
    // never leaves it writing (the scope would wait for it forever).
    let outs: Vec<_> = std::thread::scope(|s| {
        s.spawn(|| {
            for body in bodies.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::fs::write(&tmp, body).expect("tmp");
                std::fs::rename(&tmp, &path).expect("rename");
            }
        });
        let outs = (0..200)
            .map(|_| h.abupdate(&["--json", "status"]))
            .collect();
        stop.store(true, Ordering::Relaxed);
        outs
    });
    let mut seen = std::collections::BTreeSet::new();
    for out in outs {
        assert!(out.status.success(), "{}", text(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let view = (
            json["backoff_until"].is_null(),
            json["backoff_delays"].is_null(),
            json["metrics"]["retry_after"].is_null(),
        );
        assert!(
            view.0 == view.1 && view.0 == view.2,
            "two states in one output: {json}"
        );
        seen.insert(view.0);
    }
    assert_eq!(seen.len(), 2, "the state did not flip during the runs");
}

/// Found from outside (years of failing nightlies): the failed list grew by
/// one entry per failed release until `state.json` passed the 1 MiB a load
/// takes; from then on it read as damaged, no change stuck, and the host
/// rebooted into a release it had already rolled back, tick after tick.
/// Through the real binary: a host with a full list fails one more trial,
/// and the list stays at its bound, holding the new failure (whose long
/// reason is cut) and dropping the lowest version.
#[test]
fn a_host_whose_failed_list_is_full_still_records_the_next_failure_and_stays_bounded() {
    let mut h = crate::common::host::host_on_trial("failed-list-full", "");
    h.edit_state(|s| {
        s["failed"] = (1..=64)
            .map(|n| {
                serde_json::json!({
                    "version": format!("1.0.{n}"), "manifest_sha256": "ff",
                    "reason": "health checks failed", "at": n,
                })
            })
            .collect();
    });
    h.add_health_check("10-noisy", "head -c 4000 /dev/zero | tr '\\0' x; exit 1");
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(h.boot(), "A");
    let state = h.state();
    let failed = state["failed"].as_array().expect("failed list");
    let versions: Vec<&str> = failed
        .iter()
        .filter_map(|f| f["version"].as_str())
        .collect();
    assert_eq!(versions.len(), 64, "{versions:?}");
    assert!(
        versions.contains(&"2.0") && versions.contains(&"1.0.64"),
        "{versions:?}"
    );
    assert!(!versions.contains(&"1.0.1"), "{versions:?}");
    let reason = failed.iter().find(|f| f["version"] == "2.0").expect("2.0")["reason"]
        .as_str()
        .expect("reason");
    assert!(reason.len() <= 512, "{} bytes", reason.len());
    // And the timer does not take it again.
    let out = h.abupdate(&[
        "--json",
        "check",
        h.dir.join("r2/release.json").to_str().expect("utf8"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reason"], "previously_failed", "{}", text(&out));
}

/// Found from outside: a last good copy several saves behind (the saves
/// after it lost) held the booted slot committed with the release it held
/// before this trial, and `health` took the trial of a failing release for
/// a committed boot: "healthy; no trial pending", on every boot, no check
/// run. A record of another release than the one running is an older
/// boot's: the trial is judged by its checks, and rolls back.
#[test]
fn a_trial_a_stale_good_copy_records_committed_with_another_release_is_judged_by_its_checks() {
    let (mut h, _) = host_with_release("loop-stale-copy");
    assert!(h.abupdate(&["health"]).status.success());
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    assert!(h.abupdate(&["health"]).status.success());
    assert_eq!(h.state()["slots"]["B"]["status"], "good");
    // A committed 1.0 and B committed 2.0: the copy that will stand in.
    let older = std::fs::read(h.state_dir.join("state.json")).expect("state");
    let m3 = h.pack("r3", "3.0", &image("3.0", 3 << 20), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace("/r2/release.json", "/r3/release.json");
    std::fs::write(&h.config, cfg).expect("config");
    assert!(m3.exists());
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "A");
    damage_state(&h);
    std::fs::write(h.state_dir.join("state.json.prev"), older).expect("older copy");
    h.add_health_check("10-app", "echo 'app did not start' >&2; exit 1");
    let out = h.abupdate(&["health"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("app did not start"), "{said}");
    assert!(said.contains("rolled back 3.0"), "{said}");
    assert_eq!(h.boot(), "B");
}

/// A host whose trial of 2.0 fails its checks, staged with `state.json`
/// deleted before its reboot (not booted yet), and whose configured URL
/// offers 3.0 now: the path of 3.0's manifest.
fn failing_trial_with_state_deleted(name: &str) -> (TestHost, String) {
    let (h, m) = host_with_release(name);
    h.add_health_check("10-app", "echo 'app broken' >&2; exit 1");
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(h.state_dir.join("state.json")).expect("rm");
    let m3 = h.pack("r3", "3.0", &image("3.0", 3 << 20), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(&format!("{}", m.display()), &format!("{}", m3.display()));
    std::fs::write(&h.config, cfg).expect("config");
    (h, m3.to_str().expect("utf8").to_string())
}

/// `install` of `m3` and `update --now` are both refused (kind `refused`,
/// the line saying `says`), the env and the transaction untouched.
fn assert_installs_refused(h: &TestHost, m3: &str, says: &str) {
    let env = h.grub_vars();
    for args in [
        vec!["--json", "install", m3],
        vec!["--json", "update", "--now"],
    ] {
        let out = h.abupdate(&args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["kind"], "refused", "{args:?}: {said}");
        assert!(said.contains(says), "{said}");
        assert_eq!(h.grub_vars(), env, "{args:?}: the env changed");
        assert!(h.state()["transaction"].is_null(), "{args:?}");
    }
}

/// Found from outside (a random walk): `state.json` deleted while 2.0 was
/// staged, the trial booted, and before its `health` an install of 3.0
/// into the other slot recorded the unjudged 2.0 good, as the new trial's
/// fallback (a release whose checks fail). An install from a try nothing
/// judged is refused, writing nothing, and so is a `mark-bad` that would
/// leave it the only slot: `health` judges it first.
#[test]
fn an_install_from_a_try_nothing_judged_is_refused_until_health_judges_it() {
    let (mut h, m3) = failing_trial_with_state_deleted("loop-unjudged-install");
    assert_eq!(h.boot(), "B");
    let env = h.grub_vars();
    assert_installs_refused(&h, &m3, "runs on a try no one has blessed");
    assert_ne!(h.state()["slots"]["B"]["status"], "good");
    // Nor is the other slot marked bad, leaving the unjudged try alone.
    let out = h.abupdate(&["mark-bad", "A"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("would leave only slot B"), "{said}");
    assert_eq!(h.grub_vars(), env, "mark-bad: the env changed");
    let out = h.abupdate(&["health"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("running health checks"), "{said}");
}

/// Found from outside (a random walk): a trial that failed its checks was
/// retired (B marked bad, A next), `state.json` was deleted before the
/// reboot, and `health` on that boot re-blessed B: the failed release
/// good in GRUB and in the records. The bootloader's retirement is what
/// the lost records decided: finished, never undone, whatever the checks
/// would say now.
#[test]
fn a_retirement_whose_state_was_deleted_before_its_reboot_is_finished_not_undone() {
    let (mut h, m) = host_with_release("loop-retired-deleted");
    h.add_health_check("10-app", "echo 'app broken' >&2; exit 1");
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let retired = h.grub_vars();
    assert_eq!(retired["B_OK"], "0", "{retired:?}");
    assert_eq!(retired["ORDER"], "A B", "{retired:?}");
    // Checks that pass now (the app came up late) change nothing either.
    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm");
    std::fs::remove_file(h.state_dir.join("state.json")).expect("rm");
    let out = h.abupdate(&["--json", "health"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back", "{said}");
    assert!(said.contains("retired in the bootloader"), "{said}");
    assert!(!said.contains("running health checks"), "{said}");
    let env = h.grub_vars();
    assert_eq!(
        (env["B_OK"].as_str(), env["ORDER"].as_str()),
        ("0", "A B"),
        "{env:?}"
    );
    assert_ne!(h.state()["slots"]["B"]["status"], "good");
    assert_eq!(h.boot(), "A", "the next boot leaves the failed release");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Found from outside (a random walk, seeds 1141, 1203 and 5022): a trial
/// no record described (`state.json` deleted between its staging and its
/// reboot) failed its checks with no slot known to go back to, and the
/// slot kept was recorded `good` with the release whose checks had just
/// failed: a proven system for `mark-bad A`, and the fallback of the next
/// `update`, which overwrote slot A, the last good system (seeds 5022 and
/// 5209 of 120 steps). It is kept bootable and recorded `failing`, nothing
/// is installed from it, its checks run on every boot until they pass,
/// and only then is it good and updates go on.
#[test]
fn a_slot_kept_after_its_checks_failed_is_recorded_failing_until_they_pass() {
    let (mut h, m3) = failing_trial_with_state_deleted("loop-kept-failing");
    let m3 = m3.as_str();
    let slot_a = h.slot_sha(0);
    for boot in 1..=2 {
        assert_eq!(h.boot(), "B", "boot {boot}");
        let out = h.abupdate(&["--json", "health"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "boot {boot}: {said}");
        assert!(said.contains("app broken"), "boot {boot}: {said}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["outcome"], "no_fallback", "boot {boot}: {said}");
        let b = &h.state()["slots"]["B"];
        assert_eq!(
            (b["status"].as_str(), b["version"].as_str()),
            (Some("failing"), Some("2.0")),
            "boot {boot}: {b}"
        );
        assert_eq!(h.grub_vars()["B_OK"], "1", "kept bootable");
        let env = h.grub_vars();
        let out = h.abupdate(&["mark-bad", "A"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("failing"), "{}", text(&out));
        assert_eq!(h.grub_vars(), env, "a refused mark-bad changed the env");
        // Slot A may hold the last good system (1.0 here): nothing the
        // timer or the operator installs overwrites it from a failing slot.
        assert_installs_refused(&h, m3, "may hold the last good system");
        assert_eq!(h.slot_sha(0), slot_a, "slot A was written");
    }
    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm");
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["--json", "health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("running health checks"),
        "{}",
        text(&out)
    );
    assert_eq!(h.state()["slots"]["B"]["status"], "good");
    // Good again: the fixed release goes into the other slot.
    let out = h.abupdate(&["install", "--no-reboot", m3]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.grub_vars()["ORDER"], "A B");
}

/// Found from outside (a random walk): `state.json` deleted (the
/// operator's reset) between a staging and its reboot, and `health` on
/// the trial said "healthy; no trial pending" without running its failing
/// check, and blessed it. A missing state describes no boot: the try is
/// judged by its checks, the failure said and exit 1 (kept: the fresh
/// state records no fallback). A fresh host's first `health` with passing
/// checks stays a plain re-bless, reporting no commit.
#[test]
fn a_trial_whose_state_was_deleted_before_its_reboot_is_judged_by_its_checks() {
    let (mut h, m) = host_with_release("loop-state-deleted");
    let prom = with_textfile(&h, "");
    h.add_health_check("10-app", "echo 'app broken' >&2; exit 1");
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(h.state_dir.join("state.json")).expect("rm");
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("running health checks"), "{said}");
    assert!(said.contains("app broken"), "{said}");
    assert!(!said.contains("no trial pending"), "{said}");
    // A fresh host whose checks pass: re-blessed, no commit reported.
    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm");
    std::fs::remove_file(h.state_dir.join("state.json")).expect("rm");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !textfile_has(
            &prom,
            "abupdate_release_outcome{",
            &["outcome=\"committed\""]
        ),
        "a fresh host reported a commit"
    );
}

/// Found from outside: `update` on a host with no release source counted
/// the config's fault as a failed attempt, and the backoff then answered
/// every run with exit 0. It is a usage error on every run, never counted.
#[test]
fn an_update_without_a_release_source_says_so_on_every_run_and_counts_no_failure() {
    let h = TestHost::new("no-source", "1.0", HostOptions::default());
    for run in 0..2 {
        for args in [
            &["update", "--no-reboot"][..],
            &["--json", "update", "--no-reboot"],
        ] {
            let out = h.abupdate(args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "run {run} {args:?}: {}",
                text(&out)
            );
            assert!(
                text(&out)
                    .contains("no release source: give one or set update.url or update.channel"),
                "run {run} {args:?}: {}",
                text(&out)
            );
        }
    }
    let m = &h.state()["metrics"];
    assert_eq!(m["consecutive_failures"], 0, "{m}");
    assert!(m.get("retry_after").is_none(), "{m}");
}

/// Found from outside (stop 58): an operator's `install` the host refuses
/// (an older release, one that failed here) put the timer into backoff and
/// counted a failure, so a typo delayed the next update by minutes to
/// hours. A refused command tries nothing: no failure, no backoff, and the
/// timer's next `update` installs at once; an install that fails in the
/// trying (a payload gone) still counts.
#[test]
fn an_install_the_host_refuses_counts_no_failure_and_delays_no_timer_run() {
    let (h, _) = host_with_release("loop-refused-install");
    let old = h.pack("r09", "0.9", &image("0.9", 1 << 16), &[]);
    install_fails_as(&h, &old, "not_newer");
    let metrics = &h.state()["metrics"];
    assert_eq!(metrics["consecutive_failures"], 0, "{metrics}");
    assert!(metrics.get("retry_after").is_none(), "{metrics}");
    assert!(
        h.state()["outcomes"]
            .as_array()
            .is_none_or(|o| o.is_empty()),
        "{}",
        h.state()
    );
    let out = h.abupdate(&["--json", "update", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["version"], "2.0", "{}", h.state());
    // An install that fails in the trying still counts.
    let gone = h.pack("r3", "3.0", &image("3.0", 1 << 16), &[]);
    let dir = gone.parent().expect("dir");
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        if e.path().extension().is_some_and(|x| x == "zst") {
            std::fs::remove_file(e.path()).expect("payload gone");
        }
    }
    let out = h.abupdate(&["install", gone.to_str().expect("utf8"), "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        h.state()["metrics"]["consecutive_failures"],
        1,
        "{}",
        h.state()
    );
}

/// Found from outside (stop 58): the state directory removed under an
/// install (here by its post-install hook, before the activation is
/// saved) ended the run as README's source table says (nothing more
/// saved), but as kind `state`, and the failure's bookkeeping then took the
/// lock anew: a fresh state directory with a failure counted and the timer
/// backing off. A run without its lock is `locked` and saves nothing.
#[test]
fn an_install_whose_state_dir_is_removed_under_it_is_locked_and_saves_nothing() {
    let (h, m) = host_with_release("loop-state-dir-removed");
    h.post_install_hook(&format!("rm -rf {}", h.state_dir.display()));
    install_fails_as(&h, &m, "locked");
    assert!(
        !h.state_dir.join("state.json").exists(),
        "a run without its lock saved a state"
    );
    assert_eq!(var(&h, "B_OK"), "0", "the activation was undone");
}

/// Found from outside (stop 58): a relative SOURCE was kept as typed, so
/// `releases/release.json` typed in two directories was one source (the
/// second, an older release, refused as a replay of the first, naming
/// another file) and one file typed two ways was two. It is keyed by the
/// file it names (found from outside again: `..` kept two spellings apart).
#[test]
fn a_relative_source_is_keyed_by_the_file_it_names() {
    let h = TestHost::new("loop-relative-source", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 16), &[]);
    let dir = m.parent().expect("release dir");
    let name = std::path::Path::new(dir.file_name().expect("name"));
    // Typed relative, and with `..` in it: one file, one source.
    for relative in [
        name.join("release.json"),
        name.join("..").join(name).join("release.json"),
    ] {
        let out = std::process::Command::new(crate::common::host::bin())
            .current_dir(dir.parent().expect("parent"))
            .arg("--config")
            .arg(&h.config)
            .arg("check")
            .arg(&relative)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    }
    let sources = &h.state()["newest_by_source"];
    let keys: Vec<&String> = sources.as_object().expect("map").keys().collect();
    assert_eq!(keys, [&m.display().to_string()], "{sources}");
}

/// `health` at boot while another abupdate holds the state lock a moment (a
/// command run by hand; left at stop 55): the verdict waits for the lock
/// and is made, not lost to a `locked` exit. A holder that outlasts the
/// wait (`[health] timeout`, here 3 s) still gets `locked`, the trial
/// unjudged and the boot order as it was.
#[test]
fn health_waits_for_a_lock_held_a_moment_and_gives_up_past_its_timeout() {
    for (hold, committed) in [("1", true), ("30", false)] {
        let h = crate::common::host::host_on_trial(&format!("health-lock-{hold}"), "");
        let lock = h.state_dir.join("lock");
        assert!(lock.is_file(), "the install made the lock file");
        let ready = h.dir.join("holding");
        let mut holder = std::process::Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["-c", &format!("touch {}; sleep {hold}", ready.display())])
            .spawn()
            .expect("flock");
        while !ready.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let before = h.untouched();
        let out = h.abupdate(&["--json", "health"]);
        let _ = holder.kill();
        let _ = holder.wait();
        if committed {
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(h.state()["slots"]["B"]["status"], "good", "{}", h.state());
        } else {
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(v["kind"], "locked", "{v}");
            h.assert_untouched(&before, "a verdict past the lock's wait");
            assert_eq!(h.state()["transaction"]["phase"], "staged", "{}", h.state());
        }
    }
}
