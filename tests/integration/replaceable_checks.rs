//! A health check that others could replace is never run as root and never
//! decides a trial. Found from outside: in a `health.d` of mode 0777 a user
//! swapped `10-ok` between a link to root's `/bin/false` and a script of
//! their own, between abupdate's check of the file and its exec; their
//! script ran as root and committed the release. Through the real binary:
//! such a check fails `not run:` naming the directory others can write and
//! its mode, and the trial rolls back; a link whose way only root can
//! change still runs. The rule is unit-tested branch by branch in
//! `src/safe_path.rs`, and that the file judged is the file run there too.

use crate::common::host::{host_on_trial, sh_script, text, TestHost};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A check at `p` that would pass, leaving `h.dir/ran` behind when it runs.
fn passing_check(h: &TestHost, p: &Path) -> PathBuf {
    let ran = h.dir.join("ran");
    sh_script(p, &format!("touch {}; exit 0", ran.display()));
    ran
}

/// `health` on `h`'s trial of 2.0 rolls it back, the check at `check`
/// failing with `not run: {why}`, and nothing left behind by the check.
fn rolls_back_not_run(mut h: TestHost, check: &Path, why: &str, ran: &Path) {
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = format!("check {}: FAIL (not run: {why})", check.display());
    assert!(text(&out).contains(&line), "no {line:?} in {}", text(&out));
    assert!(text(&out).contains("rolling back 2.0"), "{}", text(&out));
    assert!(!ran.exists(), "the check others could replace ran");
    assert_eq!(h.state()["failed"][0]["version"], "2.0");
    assert_ne!(h.state()["slots"]["B"]["status"], "good");
    assert_eq!(h.boot(), "A");
}

#[test]
fn a_check_in_a_health_dir_others_can_write_is_not_run_and_the_trial_rolls_back() {
    let h = host_on_trial("replaceable-dir", "");
    let check = h.health_dir.join("10-ok");
    let ran = passing_check(&h, &check);
    chmod(&h.health_dir, 0o777);
    let why = format!(
        "directory {} is writable by group or others (mode 0777): others could replace {}; \
         it would run as root",
        h.health_dir.display(),
        check.display()
    );
    rolls_back_not_run(h, &check, &why, &ran);
}

#[test]
fn a_check_linked_into_a_directory_others_can_write_is_not_run_and_the_trial_rolls_back() {
    let h = host_on_trial("replaceable-link", "");
    let open = h.dir.join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o777);
    let target = open.join("ok");
    let ran = passing_check(&h, &target);
    let check = h.health_dir.join("10-ok");
    std::os::unix::fs::symlink(&target, &check).expect("symlink");
    let why = format!(
        "directory {} is writable by group or others (mode 0777): others could replace {}; \
         it would run as root",
        open.display(),
        target.display()
    );
    rolls_back_not_run(h, &check, &why, &ran);
}

/// The rule refuses what others could change, not links: a check linked to
/// a file on a way only root can change runs, and its pass commits.
#[test]
fn a_check_linked_to_a_file_only_root_can_change_runs_and_commits() {
    let mut h = host_on_trial("replaceable-safe-link", "");
    let lib = h.dir.join("lib");
    std::fs::create_dir(&lib).expect("mkdir");
    chmod(&lib, 0o755);
    chmod(&h.health_dir, 0o755);
    let target = lib.join("ok");
    let ran = passing_check(&h, &target);
    std::os::unix::fs::symlink(&target, h.health_dir.join("10-ok")).expect("symlink");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert!(ran.exists(), "the check did not run");
    assert_eq!(h.boot(), "B");
}
