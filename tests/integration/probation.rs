//! Probation after a commit (`[health] probation`): a committed release is
//! watched for unclean restarts and failing check runs; more than
//! `probation_failures` within the window rolls it back to the old slot
//! (`rolled_back_late`), a clean window ends the probation, and while it
//! lasts nothing is written to the old slot and nothing is fetched but the
//! release channel: a withdrawal of the release rolls it back late, a halt
//! rolls nothing back. A late rollback (a withdrawal's too) needs a usable
//! old slot: otherwise the release is kept (`no_fallback`).

use crate::common::channel::{channel, channel_host, channel_path};
use crate::common::host::{bounded, image, text, with_fifo, HostOptions, TestHost};

/// A host on 1.0 with 2.0 committed in slot B and on probation
/// (`extra` more `[health]` lines), and 3.0 packed and offered.
fn on_probation(name: &str, extra: &str) -> (TestHost, std::path::PathBuf) {
    let h = probation_host(name, extra);
    commit_on_probation(h)
}

/// A host on 1.0 in slot A with `[health] probation = "24h"` (`extra` more
/// `[health]` lines).
fn probation_host(name: &str, extra: &str) -> TestHost {
    TestHost::new(
        name,
        "1.0",
        HostOptions {
            extra_config: format!("probation = \"24h\"\n{extra}"),
            ..Default::default()
        },
    )
}

/// Install 2.0 into slot B of `h`, boot it and commit it (on probation),
/// then pack and offer 3.0.
fn commit_on_probation(mut h: TestHost) -> (TestHost, std::path::PathBuf) {
    let r2 = h.pack("r2", "2.0", &image("2.0", 4096), &[]);
    let out = h.abupdate(&["install", r2.to_str().expect("utf8")]);
    assert!(out.status.success(), "install 2.0: {}", text(&out));
    h.commit_trial_on_probation("2.0");
    assert_eq!(h.state()["probation"]["slot"], "B");
    assert_eq!(h.state()["probation"]["failures"], 0);
    let r3 = h.pack("r3", "3.0", &image("3.0", 4096), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let url = format!("[update]\nurl = \"file://{}\"\n", r3.display());
    std::fs::write(&h.config, cfg.replacen("[update]\n", &url, 1)).expect("config");
    (h, r3)
}

/// 2.0 was rolled back late: B bad, A boots next, 2.0 on the failed list,
/// the outcome recorded; then A boots and is healthy.
fn assert_rolled_back_late(h: &mut TestHost) {
    let s = h.state();
    assert!(s["probation"].is_null(), "{s}");
    assert_eq!(s["slots"]["B"]["status"], "bad", "{s}");
    assert_eq!(s["failed"][0]["version"], "2.0", "{s}");
    assert!(
        s["failed"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("failed on probation")),
        "{s}"
    );
    assert!(
        s["outcomes"].to_string().contains("rolled_back_late"),
        "{s}"
    );
    assert_eq!(
        h.boot(),
        "A",
        "the old slot does not boot: {:?}",
        h.grub_vars()
    );
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("healthy"), "{}", text(&out));
}

#[test]
fn a_slot_that_restarts_uncleanly_three_times_is_rolled_back_late() {
    let (mut h, _) = on_probation("prob-unclean", "");
    for n in 1..=2 {
        assert_eq!(h.boot(), "B", "restart {n}");
        let out = h.abupdate(&["--json", "health"]);
        assert!(out.status.success(), "restart {n}: {}", text(&out));
        assert!(text(&out).contains("on_probation"), "{}", text(&out));
        assert_eq!(h.state()["probation"]["failures"], n);
    }
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["--json", "health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("rolled_back_late"), "{}", text(&out));
    assert_eq!(h.reboots(), 2, "the install's reboot, then the rollback's");
    assert_rolled_back_late(&mut h);
}

/// A host whose first abupdate action is an install (fresh, or reset by
/// deleting `state.json`, as the README says) still has its old slot as
/// the fallback: the install records the booted, good slot A as holding
/// 1.0 before it writes B, so the failed probation rolls back to it.
#[test]
fn a_host_reset_before_its_first_install_rolls_back_late_to_the_slot_it_ran() {
    let h = probation_host("prob-reset-host", "");
    std::fs::remove_file(h.state_dir.join("state.json")).expect("reset the host");
    let (mut h, _) = commit_on_probation(h);
    let a = &h.state()["slots"]["A"];
    assert_eq!(
        (&a["status"], &a["version"]),
        (&"good".into(), &"1.0".into()),
        "{a}"
    );
    for n in 1..=2 {
        assert_eq!(h.boot(), "B", "restart {n}");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "restart {n}: {}", text(&out));
    }
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["--json", "health"]);
    assert!(text(&out).contains("rolled_back_late"), "{}", text(&out));
    assert_rolled_back_late(&mut h);
}

#[test]
fn clean_restarts_are_not_failures() {
    let (mut h, _) = on_probation("prob-clean", "");
    for _ in 0..4 {
        h.shut_down_cleanly();
        assert_eq!(h.boot(), "B");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let s = h.state();
    assert_eq!(s["probation"]["failures"], 0, "{s}");
    assert_eq!(s["slots"]["B"]["status"], "good");
}

#[test]
fn failing_check_reruns_on_the_timer_roll_back_on_the_third() {
    let (mut h, _) = on_probation("prob-checks", "");
    h.add_health_check("10-leak", "echo out of memory; exit 1");
    for n in 1..=2 {
        let out = h.abupdate(&["update"]);
        assert!(out.status.success(), "run {n}: {}", text(&out));
        assert_eq!(h.state()["probation"]["failures"], n);
        assert!(
            h.state()["probation"]["last_failure"]
                .as_str()
                .is_some_and(|f| f.contains("out of memory")),
            "{}",
            h.state()
        );
    }
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rolled_back_late"), "{}", text(&out));
    std::fs::remove_file(h.health_dir.join("10-leak")).expect("rm check");
    assert_rolled_back_late(&mut h);
}

#[test]
fn probation_failures_sets_the_limit() {
    let (mut h, _) = on_probation("prob-limit", "probation_failures = 0\n");
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_rolled_back_late(&mut h);
}

#[test]
fn during_probation_nothing_is_fetched_install_is_refused_and_check_says_so() {
    let (h, r3) = on_probation("prob-refuse", "");
    let before = h.slot_sha(0);
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("\"on_probation\""), "{}", text(&out));
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"on_probation\""), "{}", text(&out));
    let out = h.abupdate(&["install", r3.to_str().expect("utf8")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is on probation until"),
        "{}",
        text(&out)
    );
    assert_eq!(h.slot_sha(0), before, "the fallback slot was written");
    let out = h.abupdate(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["probation"]["version"], "2.0", "{v}");
    assert_eq!(v["probation"]["slot"], "B", "{v}");
    assert_eq!(h.state()["slots"]["A"]["status"], "good");
}

#[test]
fn status_shows_the_probation_window_in_rfc3339() {
    use abupdate::timefmt::format_rfc3339;
    let (h, _) = on_probation("prob-status-text", "");
    let p = h.state()["probation"].clone();
    let (started, until) = (
        p["started"].as_i64().expect("started"),
        p["until"].as_i64().expect("until"),
    );
    let out = h.abupdate(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    let want = format!(
        "probation: 2.0 on slot B since {} until {}; failures counted: 0",
        format_rfc3339(started),
        format_rfc3339(until)
    );
    assert!(shown.contains(&want), "{shown}");
    assert!(!shown.contains(&until.to_string()), "{shown}");
    // `--json` keeps its Unix times: scripts read them as numbers.
    let out = h.abupdate(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["probation"]["until"], until, "{v}");
}

#[test]
fn a_clean_window_ends_the_probation_and_updates_resume() {
    let (mut h, _) = on_probation("prob-ends", "");
    assert_eq!(h.boot(), "B");
    assert!(h.abupdate(&["health"]).status.success());
    // This boot has run the 24 h window.
    h.set_uptime(10 + 86_400);
    let out = h.abupdate(&["--json", "health"]);
    assert!(text(&out).contains("probation_passed"), "{}", text(&out));
    let s = h.state();
    assert!(s["probation"]["passed"].is_i64(), "{s}");
    assert_eq!(s["probation"]["version"], "2.0");
    assert_eq!(s["probation"]["failures"], 1, "the one unclean restart");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
}

#[test]
fn a_bootloader_fallback_during_probation_is_recorded_as_a_late_rollback() {
    let (mut h, _) = on_probation("prob-fellback", "");
    let reboots = h.reboots();
    h.boot_as("A");
    let out = h.abupdate(&["--json", "health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("fell back"), "{}", text(&out));
    assert_eq!(h.reboots(), reboots, "the old slot already runs");
    assert_rolled_back_late(&mut h);
}

/// Issue (review 3, 1): `mark-bad` of the booted B while 2.0 was on
/// probation only marked it: the same boot's `health` said `rolled_back`
/// with 2.0 not on the failed list and the probation still open, and the
/// next boot recorded a second verdict (`rolled_back_late`, "slot B fell
/// back"). The operator's rejection of the release on probation, by
/// `mark-bad` or `rollback`, is now one manual late rollback, recorded at
/// once.
#[test]
fn rejecting_the_release_on_probation_by_hand_is_one_late_rollback() {
    for (name, verb, typed) in [
        ("prob-markbad", &["mark-bad"][..], "mark-bad B"),
        (
            "prob-rollback",
            &["rollback", "--no-reboot"][..],
            "rollback",
        ),
    ] {
        let (mut h, _) = on_probation(name, "");
        let out = h.abupdate(&[&["--json"][..], verb].concat());
        assert!(out.status.success(), "{verb:?}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            (&v["outcome"], &v["release"], &v["slot"]),
            (&"rolled_back_late".into(), &"2.0".into(), &"A".into()),
            "{verb:?}: {v}"
        );
        let reason = format!(
            "failed on probation: rejected by hand during its probation (`abupdate {typed}`)"
        );
        let s = h.state();
        assert_eq!(s["failed"][0]["reason"], reason.as_str(), "{verb:?}: {s}");
        assert!(
            s["probation"].is_null(),
            "{verb:?}: the probation ends: {s}"
        );
        // The same boot's `health` only finishes the rollback (the reboot
        // `mark-bad` does not do); it records no verdict of its own.
        let out = h.abupdate(&["--json", "health"]);
        assert_eq!(out.status.code(), Some(1), "{verb:?}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            v["outcome"], "rolled_back_late",
            "{verb:?}: the same verdict: {v}"
        );
        assert_eq!(h.state()["failed"], s["failed"], "{verb:?}");
        assert_eq!(h.state()["outcomes"], s["outcomes"], "{verb:?}");
        assert_rolled_back_late(&mut h);
        let s = h.state();
        assert_eq!(
            s["failed"].as_array().map(Vec::len),
            Some(1),
            "{verb:?}: {s}"
        );
        assert_eq!(
            s["failed"][0]["reason"],
            reason.as_str(),
            "{verb:?}: the next boot recorded a second verdict: {s}"
        );
    }
}

/// Issue (review 3, 3): a FIFO at `state_dir/shutdown-mark` during a
/// probation held `health` for ever (and the state lock with it: the next
/// `update` said another abupdate held it); a 300 MB sparse mark was read
/// whole; the same for `[system] boot_id`. The mark is refused at once,
/// naming it (as an unreadable mark is), a huge one unread; a boot id that
/// is no regular file is absent (restarts not counted).
#[test]
fn a_fifo_or_a_huge_file_at_the_mark_or_the_boot_id_never_hangs_health() {
    let (mut h, _) = on_probation("prob-markfifo", "");
    assert_eq!(h.boot(), "B", "an unclean restart");
    let mark = h.state_dir.join("shutdown-mark");
    let shown = mark.display().to_string();
    with_fifo(&mark, || {
        let (code, err) = bounded(&h.config, &["health"]);
        assert_eq!(code, Some(1), "hung or passed: {err}");
        assert!(
            err.lines().count() == 1 && err.contains(&shown) && err.contains("not a regular file"),
            "{err}"
        );
        let (code, err) = bounded(&h.config, &["update", "--no-reboot"]);
        assert!(!err.contains("holds"), "the state lock was kept: {err}");
        assert_eq!(code, Some(1), "{err}");
    });
    let saved = std::fs::read(&mark).expect("mark");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&mark)
        .expect("mark");
    f.set_len(300 << 20).expect("sparse");
    let (code, err) = bounded(&h.config, &["health"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&shown) && err.contains("larger than"), "{err}");
    std::fs::write(&mark, saved).expect("mark back");
    let boot_id = h.boot_id.clone();
    with_fifo(&boot_id, || {
        let (code, err) = bounded(&h.config, &["health"]);
        assert_eq!(code, Some(0), "a boot id that is no file is absent: {err}");
    });
    assert_eq!(h.state()["probation"]["failures"], 0, "{}", h.state());
}

/// Rewrite `state.json` with `edit` applied.
#[test]
fn with_no_shutdown_mark_ever_written_restarts_are_not_counted_and_a_warning_names_it() {
    let (mut h, _) = on_probation("prob-nomark", "");
    let mark = h.state_dir.join("shutdown-mark");
    std::fs::remove_file(&mark).expect("rm mark");
    for n in 1..=4 {
        assert_eq!(h.boot(), "B", "restart {n}");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "restart {n}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("warning: {} was never written", mark.display())),
            "{err}"
        );
    }
    assert_eq!(h.state()["probation"]["failures"], 0, "{}", h.state());
    assert_eq!(h.state()["slots"]["B"]["status"], "good");
}

#[test]
fn an_unreadable_shutdown_mark_is_an_error_naming_it() {
    let (mut h, _) = on_probation("prob-badmark", "");
    let mark = h.state_dir.join("shutdown-mark");
    std::fs::remove_file(&mark).expect("rm mark");
    std::fs::create_dir(&mark).expect("a directory in its place");
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&mark.display().to_string()),
        "{}",
        text(&out)
    );
}

#[test]
fn probation_switched_off_ends_a_running_one_as_off_not_passed() {
    let (h, _) = on_probation("prob-off", "");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let off = cfg.replacen("probation = \"24h\"", "probation = \"0\"", 1);
    assert_ne!(cfg, off);
    std::fs::write(&h.config, off).expect("config");
    let out = h.abupdate(&["--json", "health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("probation_off"), "{}", text(&out));
    let p = &h.state()["probation"];
    assert!(p["off"].is_i64(), "{p}");
    assert!(p["passed"].is_null(), "{p}");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
}

#[test]
fn a_failing_release_is_kept_when_the_old_slot_is_not_usable() {
    let (h, _) = on_probation("prob-nofallback", "");
    let out = h.abupdate(&["mark-bad", "A"]);
    assert!(out.status.success(), "mark-bad A: {}", text(&out));
    let env = h.grub_vars();
    let (slot_a, slot_b, reboots) = (h.slot_sha(0), h.slot_sha(1), h.reboots());
    h.add_health_check("10-leak", "echo out of memory; exit 1");
    for n in 1..=2 {
        let out = h.abupdate(&["update"]);
        assert!(out.status.success(), "run {n}: {}", text(&out));
    }
    let out = h.abupdate(&["--json", "update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("update json");
    assert_eq!(v["outcome"], "no_fallback", "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("probation failed (3 failures within its probation")
            && message.ends_with("but slot A is marked bad: keeping 2.0; no fallback"),
        "{message}"
    );
    assert!(message.contains("out of memory"), "{message}");
    assert_eq!(h.grub_vars(), env, "the bootloader env changed");
    assert_eq!((h.slot_sha(0), h.slot_sha(1)), (slot_a, slot_b));
    assert_eq!(h.reboots(), reboots, "a reboot was requested");
    let s = h.state();
    assert_eq!(s["slots"]["A"]["status"], "bad", "{s}");
    assert_eq!(s["slots"]["B"]["status"], "good", "{s}");
    assert!(s["failed"].as_array().is_none_or(Vec::is_empty), "{s}");
    let p = &s["probation"];
    assert!(p["no_fallback"].is_i64(), "{p}");
    assert!(p["passed"].is_null(), "{p}");
    assert_eq!(p["last_failure"], message, "{p}");
    // The count says what the message says: the failure that ended the
    // probation is one of them.
    assert_eq!(p["failures"], 3, "{p}");
    let status: serde_json::Value =
        serde_json::from_slice(&h.abupdate(&["--json", "status"]).stdout).expect("status json");
    assert_eq!(status["probation"]["failures"], 3, "{status}");
    assert_eq!(s["metrics"]["failures"]["no_fallback"], 1, "{s}");
    let outcome = s["outcomes"].as_array().and_then(|o| {
        o.iter()
            .find(|o| o["release"] == "2.0" && o["outcome"] == "failed")
    });
    assert_eq!(
        outcome.map(|o| &o["kind"]),
        Some(&serde_json::json!("no_fallback")),
        "{s}"
    );
}

#[test]
fn a_release_failing_at_boot_is_kept_when_the_old_slot_is_unbootable() {
    let (mut h, _) = on_probation("prob-nofallback-boot", "probation_failures = 0\n");
    h.grub_set(&[("A_OK", "0")]);
    assert_eq!(h.boot(), "B", "an unclean restart");
    let order = h.grub_vars().get("ORDER").cloned();
    let reboots = h.reboots();
    let out = h.abupdate(&["--json", "health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("\"no_fallback\""), "{}", text(&out));
    assert!(
        text(&out).contains("slot A is marked unbootable in the bootloader: keeping 2.0"),
        "{}",
        text(&out)
    );
    let env = h.grub_vars();
    assert_eq!(
        (
            env.get("ORDER").cloned(),
            env.get("A_OK").map(String::as_str)
        ),
        (order, Some("0"))
    );
    assert_eq!(h.reboots(), reboots, "a reboot was requested");
    assert_eq!(h.state()["slots"]["B"]["status"], "good");
    assert_eq!(h.boot(), "B", "the kept release boots again");
}

/// A host on 1.0 reading a release channel, with 2.0 (listed there)
/// committed in slot B and on probation.
fn on_probation_from_channel(name: &str) -> TestHost {
    let mut h = channel_host(
        name,
        "1.0",
        HostOptions {
            extra_config: "probation = \"24h\"\n".into(),
            ..Default::default()
        },
    );
    let r2 = h.pack("r2", "2.0", &image("2.0", 4096), &[]);
    channel(&h, "add", &[r2.to_str().expect("utf8")]);
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "update to 2.0: {}", text(&out));
    h.commit_trial_on_probation("2.0");
    h
}

#[test]
fn a_release_withdrawn_during_probation_is_rolled_back_late() {
    let mut h = on_probation_from_channel("prob-withdrawn");
    let out = h.abupdate(&["--json", "update"]);
    assert!(text(&out).contains("\"on_probation\""), "{}", text(&out));
    channel(&h, "withdraw", &["2.0"]);
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back_late", "{v}");
    let why = format!(
        "release 2.0 is withdrawn from the release channel {}",
        channel_path(&h).display()
    );
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains(&why)),
        "{v}"
    );
    assert!(
        h.state()["failed"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&why)),
        "{}",
        h.state()
    );
    assert_eq!(h.reboots(), 2, "the install's reboot, then the rollback's");
    assert_rolled_back_late(&mut h);
}

#[test]
fn a_halt_during_probation_rolls_nothing_back() {
    let mut h = on_probation_from_channel("prob-halt");
    channel(&h, "halt", &[]);
    let before = (h.grub_vars(), h.reboots());
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"on_probation\""), "{}", text(&out));
    assert_eq!((h.grub_vars(), h.reboots()), before);
    assert_eq!(h.boot(), "B");
}

#[test]
fn an_unreadable_channel_during_probation_fails_the_run_and_rolls_nothing_back() {
    let mut h = on_probation_from_channel("prob-unreadable");
    let before = (h.grub_vars(), h.reboots());
    // Unreachable: the failed run it is (exit 1, the error and its kind),
    // counted once; the watch goes on.
    let p = channel_path(&h);
    std::fs::rename(&p, p.with_extension("away")).expect("hide");
    let out = h.abupdate(&["--json", "update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["error"].is_string() && v["kind"].is_string(), "{v}");
    assert!(!text(&out).contains("up_to_date"), "{}", text(&out));
    let s = h.state();
    let counted: u64 = s["metrics"]["failures"]
        .as_object()
        .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(counted, 1, "the unreadable channel is counted: {s}");
    assert_eq!(s["probation"]["version"], "2.0", "{s}");
    assert!(s["probation"]["last_failure"].is_null(), "{s}");
    assert_eq!(s["slots"]["B"]["status"], "good", "{s}");
    // Only the entry the commit wrote for its probation, still provisional.
    let real = |f: &Vec<serde_json::Value>| f.iter().any(|f| f["provisional"] != true);
    assert!(!s["failed"].as_array().is_some_and(real), "{s}");
    assert_eq!((h.grub_vars(), h.reboots()), before);
    assert_eq!(h.boot(), "B");
}

#[test]
fn a_withdrawal_s_late_rollback_waits_for_the_maintenance_window() {
    let mut h = on_probation_from_channel("prob-withdrawn-window");
    h.set_reboot_window(false);
    channel(&h, "withdraw", &["2.0"]);
    for run in ["the withdrawal's", "a later tick's"] {
        let out = h.abupdate(&["--json", "update"]);
        assert!(out.status.success(), "{run}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["outcome"], "rolled_back_late", "{run}: {v}");
        assert!(
            text(&out).contains("waits for the maintenance window"),
            "{run}: {}",
            text(&out)
        );
        assert_eq!(h.reboots(), 1, "{run}: only the install's reboot");
        assert_eq!(h.state()["planned_reboot"]["slot"], "A", "{run}");
        let next = crate::common::grub::choose(&h.grub_vars()).slot;
        assert_eq!(next, "A", "{run}: the boot order is switched at once");
    }
    // Inside a window, the owed reboot comes.
    h.set_reboot_window(true);
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 2, "the owed reboot, in the window");
    // No FleetLock here: no lock is claimed to be taken.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let said = v["message"].as_str().unwrap_or_default();
    assert!(
        said.ends_with("slot A boots next: rebooting") && !said.contains("lock"),
        "{v}"
    );
    assert_rolled_back_late(&mut h);
}

#[test]
fn a_withdrawal_during_probation_keeps_the_release_when_the_old_slot_is_bad() {
    let h = on_probation_from_channel("prob-withdrawn-nofallback");
    let out = h.abupdate(&["mark-bad", "A"]);
    assert!(out.status.success(), "mark-bad A: {}", text(&out));
    channel(&h, "withdraw", &["2.0"]);
    let before = (h.grub_vars(), h.reboots(), h.slot_sha(0), h.slot_sha(1));
    let out = h.abupdate(&["--json", "update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "no_fallback", "{v}");
    let why = format!(
        "release 2.0 is withdrawn from the release channel {}",
        channel_path(&h).display()
    );
    let want =
        format!("probation failed ({why}) but slot A is marked bad: keeping 2.0; no fallback");
    assert_eq!(v["message"], want.as_str(), "{v}");
    assert_eq!(
        (h.grub_vars(), h.reboots(), h.slot_sha(0), h.slot_sha(1)),
        before,
        "nothing rolled back"
    );
    let s = h.state();
    assert_eq!(s["slots"]["B"]["status"], "good", "{s}");
    assert!(s["failed"].as_array().is_none_or(Vec::is_empty), "{s}");
    assert!(s["probation"]["no_fallback"].is_i64(), "{s}");
    assert_eq!(s["metrics"]["failures"]["no_fallback"], 1, "{s}");
}

/// Found from outside: the window was on the wall clock. A
/// window recorded far ahead (an RTC years ahead at the commit), far back
/// (reset to 2000) or already over by the clock (`until` in 1970) neither
/// restarts nor ends it: the window is the time the release ran, on the
/// host's uptime. It ends once this boot has run it, however wrong the
/// recorded times, and not before.
#[test]
fn recorded_times_on_a_wrong_clock_neither_restart_nor_end_the_window() {
    let years: i64 = 10 * 365 * 86400;
    for (name, started, until) in [
        (
            "prob-ahead",
            2_000_000_000 + years,
            2_000_000_000 + years + 86_400,
        ),
        ("prob-2000", 946_684_800_i64, 946_684_800 + 86_400),
        ("prob-over", 0, 1),
    ] {
        let (mut h, _) = on_probation(name, "");
        h.edit_state(|s| {
            s["probation"]["started"] = started.into();
            s["probation"]["until"] = until.into();
            s["probation"]["failures"] = 2.into();
        });
        h.shut_down_cleanly();
        assert_eq!(h.boot(), "B");
        h.set_uptime(3_600);
        let out = h.abupdate(&["--json", "health"]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("\"on_probation\""),
            "{name}: {}",
            text(&out)
        );
        let p = &h.state()["probation"];
        assert!(p["passed"].is_null(), "{name}: {p}");
        assert_eq!(p["failures"], 2, "{name}: {p}");
        assert_eq!(p["ran"], 3_600, "{name}: {p}");
        assert_eq!(
            p["started"], started,
            "{name}: the start is never rewritten"
        );
        // What is left of the window, from now, for people.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let left = p["until"].as_i64().expect("until") - now;
        assert!(
            (86_400 - 3_600 - 60..=86_400 - 3_600).contains(&left),
            "{name}: {p}"
        );
        // The rest of the window on the same boot ends it.
        h.set_uptime(86_400);
        let out = h.abupdate(&["--json", "health"]);
        assert!(
            text(&out).contains("probation_passed"),
            "{name}: {}",
            text(&out)
        );
    }
}

/// Found from outside: a host whose
/// clock read 2000 at every boot (no RTC battery, NTP minutes later) and
/// that rebooted every 50 minutes kept 2.0 on a 1 h probation for good:
/// each boot restarted the window twice, and 3.0 was never installed. The
/// window counts the time each boot ran under watch, whatever the clock.
#[test]
fn a_host_that_reboots_before_each_window_ends_still_ends_its_probation() {
    let (mut h, _) = on_probation("prob-reboots", "");
    // Boots of 50 minutes, each watched at its start and 45 minutes in.
    let mut passed = false;
    for boot in 1..=40 {
        h.shut_down_cleanly();
        assert_eq!(h.boot(), "B", "boot {boot}");
        let out = h.abupdate(&["--json", "health"]);
        assert!(out.status.success(), "boot {boot}: {}", text(&out));
        h.set_uptime(45 * 60);
        let out = h.abupdate(&["--json", "update"]);
        if text(&out).contains("2.0 passed its probation") {
            // 24 h of running, 45 minutes (the first ten seconds
            // included) a boot: the 32nd boot; and 3.0 comes at once.
            assert_eq!(boot, 32, "{}", text(&out));
            assert!(
                text(&out).contains("\"installed\": \"3.0\""),
                "{}",
                text(&out)
            );
            passed = true;
            break;
        }
        assert!(
            text(&out).contains("\"on_probation\""),
            "boot {boot}: {}",
            text(&out)
        );
    }
    assert!(passed, "still on probation: {}", h.state()["probation"]);
    assert_eq!(h.state()["probation"]["failures"], 0);
}

/// The keys and JSON types of a failed-list entry as release 0.1 reads it
/// (`tests/fixtures/state-v0.1-rolled-back.json`): every one must be there
/// with its type, or that version does not parse the state at all.
fn keys_an_older_version_reads() -> Vec<(String, &'static str)> {
    let fixture: serde_json::Value =
        serde_json::from_slice(include_bytes!("../fixtures/state-v0.1-rolled-back.json"))
            .expect("fixture json");
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        _ => "other",
    };
    fixture["failed"][0]
        .as_object()
        .expect("a failed entry")
        .iter()
        .map(|(k, v)| (k.clone(), kind(v)))
        .collect()
}

/// Issue (review 6, F4): 2.0 committed on probation, then the bootloader
/// went back to slot A before any `health` recorded a failure (U-Boot's
/// tries ran out on a release that panics after its commit; a late
/// rollback cut between its bootloader writes and its state write). Slot A
/// ran a version that knows no probation: it saw no trial and nothing
/// failed, and its timer installed 2.0 again. The commit now puts 2.0 on
/// the failed list provisionally, in the entry shape those versions read:
/// not held while its probation runs, removed when it passes, and held as
/// a failure once the probation is gone without passing (such a version
/// saves the state without the fields it does not know).
#[test]
fn a_release_on_probation_is_held_as_failed_unless_its_probation_runs_or_passed() {
    let (mut h, _) = on_probation("prob-provisional", "");
    let s = h.state();
    let entry = &s["failed"][0];
    assert_eq!(
        (&entry["version"], &entry["provisional"]),
        (&"2.0".into(), &true.into()),
        "{s}"
    );
    for (key, kind) in keys_an_older_version_reads() {
        let ok = match kind {
            "string" => entry[&key].is_string(),
            "number" => entry[&key].is_i64(),
            _ => true,
        };
        assert!(ok, "{key} is not a {kind} in {entry}");
    }
    // While its probation runs, 2.0 has not failed here.
    let out = h.abupdate(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");
    assert!(!text(&h.abupdate(&["status"])).contains("failed release"));

    // The bootloader fell back to A; an older version ran there and saved
    // what it knows (no `probation`, no `provisional`).
    let r2 = h.pack("r2-again", "2.0", &image("2.0", 4096), &[]);
    h.edit_state(|s| {
        s.as_object_mut().map(|s| s.remove("probation"));
        if let Some(f) = s["failed"][0].as_object_mut() {
            f.remove("provisional");
        }
    });
    h.grub_set(&[("B_OK", "0"), ("ORDER", "A B")]);
    h.boot_as("A");
    let out = h.abupdate(&["--json", "health"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = h.abupdate(&["install", r2.to_str().expect("utf8"), "--no-reboot"]);
    assert!(!out.status.success(), "2.0 installed again: {}", text(&out));
    assert!(text(&out).contains("2.0"), "{}", text(&out));
    let out = h.abupdate(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["failed"][0]["version"], "2.0", "{v}");
}

/// The other half of the provisional entry: a probation that passes, or
/// is switched off, leaves nothing on the failed list (the same write).
#[test]
fn a_probation_that_passes_or_is_switched_off_takes_its_release_off_the_failed_list() {
    let (h, _) = on_probation("prob-provisional-passed", "");
    h.set_uptime(10 + 86_400);
    let out = h.abupdate(&["--json", "health"]);
    assert!(text(&out).contains("probation_passed"), "{}", text(&out));
    let s = h.state();
    assert!(s["failed"].as_array().is_some_and(Vec::is_empty), "{s}");

    let (h, _) = on_probation("prob-provisional-off", "");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen("probation = \"24h\"", "probation = \"0\"", 1),
    )
    .expect("config");
    let out = h.abupdate(&["--json", "health"]);
    assert!(text(&out).contains("probation_off"), "{}", text(&out));
    let s = h.state();
    assert!(s["failed"].as_array().is_some_and(Vec::is_empty), "{s}");
}

/// Issue (review 6, F1): an older version installed 2.0 and, unlike this
/// one, wrote no record of the booted slot A (its `state.json` names only
/// the slot it wrote and the transaction from A). 2.0 committed on
/// probation here, failed it, and was kept: "slot A is recorded empty …
/// no fallback", though A had booted fine and held 1.0. The commit adopts
/// the slot the transaction came from as good.
/// An operator's `rollback` of it is no longer refused ("slot A is empty
/// in the state") either.
#[test]
fn a_release_an_older_version_installed_falls_back_to_the_slot_it_came_from() {
    for (name, by_hand) in [("prob-old-install", false), ("prob-old-install-hand", true)] {
        let mut h = probation_host(name, "probation_failures = 0\n");
        let r2 = h.pack("r2", "2.0", &image("2.0", 4096), &[]);
        let out = h.abupdate(&["install", r2.to_str().expect("utf8")]);
        assert!(out.status.success(), "install 2.0: {}", text(&out));
        h.edit_state(|s| {
            s["slots"].as_object_mut().map(|slots| slots.remove("A"));
        });
        assert_eq!(h.state()["transaction"]["from"], "A");
        h.commit_trial_on_probation("2.0");
        assert_eq!(h.state()["slots"]["A"]["status"], "good", "{}", h.state());
        let out = match by_hand {
            true => h.abupdate(&["--json", "rollback", "--no-reboot"]),
            false => {
                assert_eq!(h.boot(), "B", "an unclean restart");
                h.abupdate(&["--json", "health"])
            }
        };
        assert!(
            text(&out).contains("rolled_back_late"),
            "{name}: {}",
            text(&out)
        );
        assert_rolled_back_late(&mut h);
    }
}

/// N6 (a trial the damaged `state.json` does not describe) on the
/// bootloaders that tell a trial's boot from a committed one's. Their
/// hosts (`common::loaders`) are built with the `failpoints` feature, as
/// the fault matrix's are.
#[cfg(feature = "failpoints")]
mod undescribed {
    use crate::common::host::{text, HostOptions};
    use crate::common::loaders::{release, Host, Loader};
    use crate::common::prometheus::textfile_has;

    /// On `loader`, a host that installed 2.0 and booted its trial (slot B)
    /// with `[health] probation = "24h"` and a textfile, whose `state.json`
    /// was then damaged (still JSON, no longer loads) with no good copy left:
    /// nothing records the trial. The textfile's path.
    fn undescribed_trial_on(name: &str, loader: Loader) -> (Host, std::path::PathBuf) {
        const LEN: usize = 3 << 20;
        let mut h = Host::new(
            name,
            loader,
            "1.0",
            LEN,
            HostOptions {
                slot_size: 16 << 20,
                extra_config: "probation = \"24h\"\n".into(),
                ..Default::default()
            },
        );
        let prom = h.dir.join("abupdate.prom");
        let mut config = std::fs::read_to_string(&h.config).expect("config");
        config.push_str(&format!("\n[report]\ntextfile = \"{}\"\n", prom.display()));
        std::fs::write(&h.config, config).expect("config");
        h.use_release(release(LEN));
        let out = h.abupdate(&["update"]);
        assert!(out.status.success(), "{loader:?} update: {}", text(&out));
        h.shut_down_cleanly();
        assert_eq!(h.boot(), "B", "{loader:?}: the trial did not boot");
        h.edit_state(|s| s["transaction"]["from"] = "C".into());
        std::fs::remove_file(h.state_dir.join("state.json.prev")).expect("no good copy");
        (h, prom)
    }

    /// N6's commit on a bootloader that tells a trial's boot from a committed
    /// one's (EFI: through `BootNext`; systemd-boot: an entry still counting
    /// tries): a trial that the damaged `state.json` did not describe passes
    /// its checks and is committed as any trial is: its release on
    /// probation, its `committed` outcome recorded and reported. It used to
    /// be only re-blessed: no probation, no outcome.
    #[test]
    fn a_trial_committed_through_a_damaged_state_starts_its_probation_and_reports_its_commit() {
        use Loader;
        for loader in [Loader::Efi, Loader::SystemdBoot] {
            let (mut h, prom) = undescribed_trial_on("probation-undescribed", loader);
            let out = h.abupdate(&["health"]);
            let said = text(&out);
            assert!(out.status.success(), "{loader:?}: {said}");
            assert!(said.contains("does not describe it"), "{loader:?}: {said}");
            assert!(said.contains("committed 2.0"), "{loader:?}: {said}");
            assert!(
                said.contains("2.0 is on probation for"),
                "{loader:?}: {said}"
            );
            let state = h.state();
            assert_eq!(state["probation"]["version"], "2.0", "{loader:?}: {state}");
            assert_eq!(state["probation"]["slot"], "B", "{loader:?}: {state}");
            assert_eq!(state["slots"]["B"]["status"], "good", "{loader:?}: {state}");
            assert_ne!(
                state["slots"]["A"]["status"], "good",
                "{loader:?}: the other slot is never guessed: {state}"
            );
            let committed = state["outcomes"].as_array().is_some_and(|o| {
                o.iter()
                    .any(|r| r["release"] == "2.0" && r["outcome"] == "committed")
            });
            assert!(committed, "{loader:?}: no outcome recorded: {state}");
            assert!(
                textfile_has(
                    &prom,
                    "abupdate_release_outcome{",
                    &["release=\"2.0\"", "outcome=\"committed\""]
                ),
                "{loader:?}: not reported: {state}"
            );

            // The next healthy boot is the probation's, as after any commit.
            h.shut_down_cleanly();
            assert_eq!(h.boot(), "B");
            let out = h.abupdate(&["--json", "health"]);
            assert!(out.status.success(), "{loader:?}: {}", text(&out));
            assert!(
                text(&out).contains("\"on_probation\""),
                "{loader:?}: {}",
                text(&out)
            );
        }
    }

    /// Review 10, finding 4: on EFI a pick of the old slot in the firmware's
    /// boot menu (its entry still in `BootOrder`, not first; no `BootNext`)
    /// on a damaged state is no trial: its checks pass, it is committed
    /// without a probation (a release committed long before would be on
    /// it again, and a short outage later counted against it). Only an
    /// entry out of `BootOrder` (an armed trial's) is told a trial.
    #[test]
    fn an_efi_boot_menu_pick_on_a_damaged_state_starts_no_probation() {
        let (mut h, _prom) = undescribed_trial_on("probation-menu-pick", Loader::Efi);
        // Put the state back and commit 2.0 through its trial.
        std::fs::remove_file(h.state_dir.join("state.json")).expect("state");
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{}", text(&out));
        let env = h.env();
        let order = Host::efi_order(&env);
        assert_eq!(
            order
                .iter()
                .filter_map(|n| Host::efi_slot(&env, n))
                .collect::<Vec<_>>(),
            ["B", "A"],
            "{env:?}"
        );
        h.shut_down_cleanly();
        h.pick_in_boot_menu("A");
        h.edit_state(|s| s["transaction"]["from"] = "C".into());
        let _ = std::fs::remove_file(h.state_dir.join("state.json.prev"));
        let out = h.abupdate(&["health"]);
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        assert!(!said.contains("on probation for"), "{said}");
        assert!(h.state()["probation"].is_null(), "{}", h.state());
    }

    /// The same trial failing its checks, with no slot recorded committed to
    /// go back to: kept, and, the bootloader telling a trial, a failure of
    /// its release (`failed`, kind `no_fallback`, as a probation that fails
    /// with no fallback), which it used to record nowhere but the host's
    /// counter.
    #[test]
    fn a_told_trial_kept_through_a_damaged_state_for_want_of_a_fallback_is_reported_against_its_release(
    ) {
        use Loader;
        for loader in [Loader::Efi, Loader::SystemdBoot] {
            let (h, prom) = undescribed_trial_on("probation-undescribed-kept", loader);
            h.add_health_check("10-app", "exit 1");
            let out = h.abupdate(&["--json", "health"]);
            let said = text(&out);
            assert_eq!(out.status.code(), Some(1), "{loader:?}: {said}");
            assert!(said.contains("\"no_fallback\""), "{loader:?}: {said}");
            assert_eq!(h.reboots(), 1, "{loader:?}: nowhere to reboot to");
            let state = h.state();
            assert!(state["probation"].is_null(), "{loader:?}: {state}");
            assert_eq!(
                state["metrics"]["failures"]["no_fallback"], 1,
                "{loader:?}: {state}"
            );
            assert!(
                textfile_has(
                    &prom,
                    "abupdate_release_outcome{",
                    &[
                        "release=\"2.0\"",
                        "outcome=\"failed\"",
                        "kind=\"no_fallback\""
                    ]
                ),
                "{loader:?}: not reported: {state}"
            );
        }
    }
}
