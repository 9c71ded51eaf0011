//! The release channel (`[update] channel`) on a real host: the channel
//! written by `abupdate channel`, read by the timer's `update`, with the
//! real `grub-editenv` and the test playing GRUB (as `update_loop.rs`).
//!
//! | promise | test |
//! | --- | --- |
//! | through a barrier, never past it | `a_host_goes_through_a_barrier_never_past_it` |
//! | withdrawn: never installed, hosts on it move on | `a_withdrawn_release_is_never_installed_and_a_host_on_it_moves_on` |
//! | halt stops installs, not verdicts | `a_halt_stops_installs_but_a_trial_still_gets_its_verdict` |
//! | forged, expired, replayed, mismatched: refused, boot order untouched | `bad_channels_are_refused_with_their_kind_and_touch_nothing` |
//! | `expires` more than 3650 days after `created`: refused, boot order untouched; `resign` repairs it | `a_channel_valid_for_more_than_3650_days_is_refused_and_resign_repairs_it` |
//! | the operator never re-signs a tampered channel | `the_operator_refuses_to_resign_a_tampered_channel` |
//! | an edit never publishes under the threshold or with a key outside `--keys` | `a_channel_edit_never_publishes_what_the_hosts_gate_would_refuse` |
//! | `url` and `channel` together: a config error | `url_and_channel_together_are_a_config_error` |
//! | a re-signed manifest (`fleet`'s waves): unpinned installs, pinned refused | `a_re_signed_manifest_installs_unpinned_and_is_refused_pinned` |
//! | an unknown booted version: refused, never guessed below every release | `an_unknown_booted_version_is_refused_naming_os_release` |
//! | on a withdrawn release, nothing newer: its own reason | `on_a_withdrawn_release_with_nothing_newer_check_says_on_withdrawn` |
//! | a staged trial withdrawn: disarmed, the booted slot boots next, not failed | `a_staged_trial_is_disarmed_when_its_release_is_withdrawn` |
//! | a halt disarms a staged trial; a resume stages it again | `a_halt_disarms_a_staged_trial_and_a_resume_stages_it_again` |
//! | a channel unreachable or replayed: the staged trial stays armed | `an_unreachable_or_stale_channel_disarms_nothing` |
//! | a halt re-signed with the same `created`: neither copy is acted on | `a_halt_signed_with_the_same_created_is_not_undone_by_a_replay` |
//! | withdrawn during its download: disarmed by the last look, never booted | `a_release_withdrawn_during_its_download_is_disarmed_not_booted` |
//! | the last look cannot be made: stays staged, no reboot; the next run reboots | `a_last_look_that_cannot_be_made_keeps_the_trial_staged_and_the_next_run_reboots` |
//! | an interrupted write of a release withdrawn since: ended, slot bad | `an_interrupted_write_of_a_withdrawn_release_is_ended_not_redone` |
//! | a barrier the operator cancelled: held as a cancel, not a failure; by hand it goes on | `a_cancelled_barrier_holds_the_timer_as_cancelled_and_an_install_by_hand_goes_on` |
//! | a release that expires before its channel: every edit warns, exit 0 | `a_release_expiring_before_its_channel_is_warned_of` |

use crate::common::channel::{channel, channel_cmd, channel_host, channel_path, refused_edit};
use crate::common::host::{bin, date, image, now, run, text, HostOptions, TestHost};
use std::path::PathBuf;
use std::process::{Command, Output};

const LEN: usize = 1 << 20;

/// A host booted on `version`, reading the channel `<dir>/channel.json`.
fn host(name: &str, version: &str) -> TestHost {
    channel_host(&format!("channel-{name}"), version, HostOptions::default())
}

/// Pack release `version` and list it in the channel.
fn release(h: &TestHost, version: &str, barrier: bool) -> PathBuf {
    let m = h.pack(&format!("r{version}"), version, &image(version, LEN), &[]);
    let path = m.to_str().expect("path");
    match barrier {
        true => channel(h, "add", &[path, "--barrier"]),
        false => channel(h, "add", &[path]),
    }
    m
}

/// The timer's run, then the reboot and the boot-time verdict: the version
/// the host runs after it.
fn update_and_commit(h: &mut TestHost) -> String {
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "update: {}", text(&out));
    h.boot();
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "health: {}", text(&out));
    booted(h)
}

fn booted(h: &TestHost) -> String {
    let out = h.abupdate(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["booted_version"].as_str().unwrap_or_default().to_string()
}

fn check_json(h: &TestHost) -> (Option<i32>, serde_json::Value) {
    let out = h.abupdate(&["--json", "check"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json: {e}: {}", text(&out)));
    (out.status.code(), v)
}

#[test]
fn a_host_goes_through_a_barrier_never_past_it() {
    let mut h = host("barrier", "1.0");
    release(&h, "2.0", true);
    release(&h, "3.0", false);
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        h.state()["transaction"]["version"],
        "2.0",
        "1.0 must go to the barrier 2.0, not to 3.0"
    );
    h.boot();
    assert!(h.abupdate(&["health"]).status.success());
    assert_eq!(booted(&h), "2.0");
    assert_eq!(update_and_commit(&mut h), "3.0");
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn a_cancelled_barrier_holds_the_timer_as_cancelled_and_an_install_by_hand_goes_on() {
    let h = host("cancelled-barrier", "1.0");
    let barrier = release(&h, "2.0", true);
    release(&h, "3.0", false);
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = h.abupdate(&["mark-bad", "B"]);
    assert!(out.status.success(), "mark-bad B: {}", text(&out));
    for args in [
        &["--json", "check"][..],
        &["--json", "update", "--no-reboot"],
    ] {
        let verb = args[1];
        let out = h.abupdate(args);
        assert_eq!(out.status.code(), Some(0), "{verb}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["reason"], "cancelled", "{verb}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("stuck at barrier 2.0: the operator cancelled it")
                && message.contains(&format!("`abupdate install {}`", barrier.display())),
            "{verb}: {message}"
        );
    }
    assert!(
        h.state()["transaction"].is_null(),
        "the timer staged something"
    );
    let out = h.abupdate(&["install", barrier.to_str().expect("path"), "--no-reboot"]);
    assert!(out.status.success(), "install by hand: {}", text(&out));
    assert_eq!(h.state()["transaction"]["version"], "2.0");
}

#[test]
fn a_withdrawn_release_is_never_installed_and_a_host_on_it_moves_on() {
    // A host on 1.0: the withdrawn 2.1 is not offered, the newer good 2.2 is.
    let mut h = host("withdrawn", "1.0");
    release(&h, "2.1", false);
    channel(&h, "withdraw", &["2.1"]);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(0), "withdrawn 2.1 offered: {v}");
    assert_eq!(h.reboots(), 0);
    release(&h, "2.2", false);
    assert_eq!(update_and_commit(&mut h), "2.2");

    // A host already on 2.1 when it is withdrawn moves to the next good one
    // (2.2, the fix), not to the newest.
    let mut on = host("withdrawn-on", "2.1");
    release(&on, "2.1", false);
    release(&on, "2.2", false);
    release(&on, "3.0", false);
    let (code, v) = check_json(&on);
    assert_eq!(code, Some(100), "{v}");
    channel(&on, "withdraw", &["2.1"]);
    assert_eq!(update_and_commit(&mut on), "2.2");
}

#[test]
fn a_halt_stops_installs_but_a_trial_still_gets_its_verdict() {
    let mut h = host("halt", "1.0");
    release(&h, "2.0", false);
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1);
    // Halted while 2.0 is on trial: its verdict still comes.
    channel(&h, "halt", &[]);
    h.boot();
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    // And no new install starts.
    release(&h, "3.0", false);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["reason"], "halted", "{v}");
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1, "a halted channel must start no install");
    channel(&h, "resume", &[]);
    assert_eq!(update_and_commit(&mut h), "3.0");
}

/// Write `doc` as the channel, signed with the host's key.
fn write_signed(h: &TestHost, doc: &serde_json::Value) {
    write_signed_at(h, &channel_path(h), doc)
}

/// Write `doc` at `p` (a channel or a manifest), signed with the host's key.
fn write_signed_at(h: &TestHost, p: &std::path::Path, doc: &serde_json::Value) {
    std::fs::write(p, serde_json::to_vec_pretty(doc).expect("json")).expect("write");
    for sig in crate::common::host::signature_files(p) {
        std::fs::remove_file(sig).expect("rm");
    }
    let out = run(Command::new(bin())
        .arg("sign")
        .arg("--secret")
        .arg(&h.secret_key)
        .arg(p));
    assert!(out.status.success(), "sign: {}", text(&out));
}

/// Re-sign the manifest at `m` with a newer `created`, as `abupdate fleet`
/// does on each wave: the same release, other bytes.
fn re_sign_manifest(h: &TestHost, m: &std::path::Path) {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("json");
    doc["created"] = date(now() + 5).into();
    write_signed_at(h, m, &doc);
}

fn current(h: &TestHost) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(channel_path(h)).expect("channel")).expect("json")
}

/// `update` refused with exit 1 and `kind`, nothing on the device changed.
fn refused(h: &TestHost, kind: &str, what: &str) {
    let before = h.untouched();
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], kind, "{what}: {v}");
    h.assert_untouched(&before, what);
    assert!(h.state()["transaction"].is_null(), "{what}");
    assert_eq!(h.slot_sha(1), empty_slot(h), "{what}: slot B written");
}

fn empty_slot(h: &TestHost) -> String {
    use sha2::Digest;
    let len = std::fs::metadata(&h.slots[1]).expect("slot").len() as usize;
    format!("{:x}", sha2::Sha256::digest(vec![0u8; len]))
}

#[test]
fn bad_channels_are_refused_with_their_kind_and_touch_nothing() {
    let h = host("refused", "1.0");
    release(&h, "2.0", false);
    let good = current(&h);
    let saved: Vec<(PathBuf, Vec<u8>)> = std::iter::once(channel_path(&h))
        .chain(crate::common::host::signature_files(&channel_path(&h)))
        .map(|p| {
            let b = std::fs::read(&p).expect("read");
            (p, b)
        })
        .collect();

    // Forged: one byte changed after signing.
    let p = channel_path(&h);
    let bytes = std::fs::read(&p).expect("channel");
    std::fs::write(
        &p,
        String::from_utf8_lossy(&bytes).replace("false", "true "),
    )
    .expect("forge");
    refused(&h, "signature", "forged");

    // Expired (signed by the right key).
    let mut doc = good.clone();
    doc["created"] = date(now() - 20 * 86400).into();
    doc["expires"] = date(now() - 86400).into();
    write_signed(&h, &doc);
    refused(&h, "expired", "expired");

    // The manifest the channel points to is not the one it binds. Each
    // edit advances `created`, as the operator's tools do (the same date
    // with other bytes would be refused as a replay).
    let mut doc = good.clone();
    doc["created"] = date(now() + 10).into();
    doc["releases"][0]["sha256"] = "0".repeat(64).into();
    write_signed(&h, &doc);
    refused(&h, "hash_mismatch", "manifest hash mismatch");
    let mut doc = good.clone();
    doc["created"] = date(now() + 20).into();
    doc["releases"][0]["version"] = "2.5".into();
    write_signed(&h, &doc);
    refused(&h, "hash_mismatch", "manifest version mismatch");

    // Replayed: a newer channel was seen (its manifest then refused: its
    // date is still the floor); the older one comes back.
    let mut doc = good.clone();
    doc["created"] = date(now() + 60).into();
    doc["releases"][0]["sha256"] = "1".repeat(64).into();
    write_signed(&h, &doc);
    refused(&h, "hash_mismatch", "newer channel, mismatched manifest");
    for sig in crate::common::host::signature_files(&p) {
        std::fs::remove_file(sig).expect("rm");
    }
    for (path, bytes) in &saved {
        std::fs::write(path, bytes).expect("restore");
    }
    refused(&h, "stale", "replayed");
}

#[test]
fn a_channel_valid_for_more_than_3650_days_is_refused_and_resign_repairs_it() {
    let h = host("valid-too-long", "1.0");
    release(&h, "2.0", false);
    // Signed by the right key, dated now, but valid until year 9999: a
    // frozen copy of it would never expire.
    let mut doc = current(&h);
    doc["created"] = date(now() + 10).into();
    doc["expires"] = "9999-12-31T23:59:59Z".into();
    write_signed(&h, &doc);
    refused(&h, "manifest", "valid until 9999");
    let out = h.abupdate(&["update", "--now"]);
    let message = text(&out);
    assert!(
        message.contains(
            "channel.json: expires 9999-12-31T23:59:59Z is more than 3650 days after created"
        ),
        "{message}"
    );
    // The operator's tool re-dates it (a channel it signs is valid days,
    // not millennia), and the host acts on it again.
    channel(&h, "resign", &[]);
    let out = h.abupdate(&["update", "--now"]);
    assert!(out.status.success(), "update: {}", text(&out));
}

#[test]
fn the_operator_refuses_to_resign_a_tampered_channel() {
    let h = host("tampered", "1.0");
    release(&h, "2.0", false);
    let p = channel_path(&h);
    let tampered = std::fs::read_to_string(&p)
        .expect("channel")
        .replace("\"halt\": false", "\"halt\": true");
    std::fs::write(&p, &tampered).expect("tamper");
    for action in ["resign", "resume", "halt"] {
        let out = channel_cmd(&h, action, &[]);
        assert_eq!(out.status.code(), Some(1), "{action}: {}", text(&out));
        assert!(text(&out).contains("channel.json"), "{}", text(&out));
        assert_eq!(std::fs::read_to_string(&p).expect("channel"), tampered);
    }
    // A manifest outside the channel's directory cannot be listed: hosts
    // fetch it relative to the channel.
    let m = h.pack("r9", "9.0", &image("9.0", LEN), &[]);
    std::fs::create_dir_all(h.dir.join("sub")).expect("sub");
    let out = run(Command::new(bin())
        .args(["channel", "add"])
        .arg(h.dir.join("sub/channel.json"))
        .arg(&m)
        .arg("--secret")
        .arg(&h.secret_key));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not inside"), "{}", text(&out));
    assert!(!h.dir.join("sub/channel.json").exists());
}

/// Found from outside (stop 47): `channel` verified the channel at
/// `--threshold 2`, then published a halt signed by the one key it was
/// given (a halt no threshold-2 host believes, and every host's check
/// failing); and it signed a new channel with a key outside `--keys`. Both
/// are refused, with nothing written.
#[test]
fn a_channel_edit_never_publishes_what_the_hosts_gate_would_refuse() {
    let h = host("gate", "1.0");
    let second = h.dir.join("second.key");
    let keys = h.dir.join("operator-keys");
    let host_keys = h.dir.join("host-keys");
    for d in [&keys, &host_keys] {
        std::fs::create_dir_all(d).expect("mkdir");
        std::fs::copy(&h.public_key, d.join("host.pub")).expect("copy");
    }
    let out = run(Command::new(bin())
        .arg("keygen")
        .arg("--secret")
        .arg(&second)
        .arg("--public")
        .arg(keys.join("second.pub")));
    assert!(out.status.success(), "keygen: {}", text(&out));
    let m = h.pack(
        "r2.0",
        "2.0",
        &image("2.0", LEN),
        &["--secret", &second.to_string_lossy()],
    );
    let keys_arg = keys.to_string_lossy().into_owned();
    let at_two = ["--keys", keys_arg.as_str(), "--threshold", "2"];
    let out = run(Command::new(bin())
        .args(["channel", "add"])
        .arg(channel_path(&h))
        .arg(&m)
        .arg("--secret")
        .arg(&h.secret_key)
        .arg("--secret")
        .arg(&second)
        .args(at_two));
    assert!(out.status.success(), "add with both keys: {}", text(&out));
    let channel_files = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&h.dir)
            .expect("ls")
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_name().to_string_lossy().starts_with("channel.json"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = channel_files();
    assert!(
        before.len() >= 3,
        "the channel and its two signatures: {before:?}"
    );
    let out = channel_cmd(&h, "halt", &at_two);
    assert_eq!(
        out.status.code(),
        Some(1),
        "halt with one key: {}",
        text(&out)
    );
    // The second key's signature would stay behind, stale over new bytes.
    assert!(
        text(&out).contains("channel.json.1.minisig: not by one of the --secret keys"),
        "{}",
        text(&out)
    );
    assert_eq!(
        channel_files(),
        before,
        "halt under the threshold wrote something"
    );
    // A new channel, signed by a key the hosts do not trust.
    let other = h.dir.join("other.json");
    let out = run(Command::new(bin())
        .args(["channel", "add"])
        .arg(&other)
        .arg(&m)
        .arg("--secret")
        .arg(&second)
        .arg("--keys")
        .arg(&host_keys));
    assert_eq!(out.status.code(), Some(1), "untrusted key: {}", text(&out));
    assert!(
        text(&out).contains("not publishing what the hosts would refuse"),
        "{}",
        text(&out)
    );
    assert!(!other.exists());
}

#[test]
fn a_manifest_path_a_url_reads_otherwise_is_not_listed() {
    let h = host("odd-name", "1.0");
    let m = h.pack("r2.0", "2.0", &image("2.0", LEN), &[]);
    channel(&h, "add", &[m.to_str().expect("path")]);
    // A directory whose name a URL reads otherwise (`#` starts a fragment:
    // hosts would fetch `2.0`) is refused, the channel unchanged.
    let odd = h.pack("2.0#x", "9.1", &image("9.1", LEN), &[]);
    let before = std::fs::read(channel_path(&h)).expect("channel");
    let out = run(Command::new(bin())
        .args(["channel", "add"])
        .arg(channel_path(&h))
        .arg(&odd)
        .arg("--secret")
        .arg(&h.secret_key));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("a URL reads otherwise"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(channel_path(&h)).expect("channel"), before);
}

#[test]
fn url_and_channel_together_are_a_config_error() {
    let h = host("both", "1.0");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replace("[update]\n", "[update]\nurl = \"/x/release.json\"\n"),
    )
    .expect("config");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("update.channel"), "{}", text(&out));
}

#[test]
fn a_re_signed_manifest_installs_unpinned_and_is_refused_pinned() {
    let mut h = host("pin", "1.0");
    let m = h.pack("r2.0", "2.0", &image("2.0", LEN), &[]);
    channel(&h, "add", &[m.to_str().expect("path"), "--pin"]);
    assert!(current(&h)["releases"][0]["sha256"].is_string());
    re_sign_manifest(&h, &m);
    refused(
        &h,
        "hash_mismatch",
        "a pinned release whose manifest was re-signed",
    );
    // `channel pin` binds the manifest as it is now (a re-bind).
    let pinned = current(&h)["releases"][0]["sha256"].clone();
    channel(&h, "pin", &["2.0"]);
    assert_ne!(current(&h)["releases"][0]["sha256"], pinned);
    // `--now`: past the back-off the refusal started.
    let out = h.abupdate(&["update", "--now"]);
    assert!(out.status.success(), "update: {}", text(&out));
    h.boot();
    assert!(h.abupdate(&["health"]).status.success());
    assert_eq!(booted(&h), "2.0");
    // Unpinned is the default: a re-signed (wave advanced) manifest installs.
    let m = release(&h, "3.0", false);
    assert!(current(&h)["releases"][1].get("sha256").is_none());
    re_sign_manifest(&h, &m);
    assert_eq!(update_and_commit(&mut h), "3.0");
    channel(&h, "pin", &["3.0"]);
    assert!(current(&h)["releases"][1]["sha256"].is_string());
    channel(&h, "unpin", &["3.0"]);
    assert!(current(&h)["releases"][1].get("sha256").is_none());
    let out = channel_cmd(&h, "pin", &["9.9"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("9.9 is not listed"), "{}", text(&out));
}

#[test]
fn an_unknown_booted_version_is_refused_naming_os_release() {
    let h = host("unknown", "1.0");
    release(&h, "2.0", true);
    release(&h, "4.0", false);
    std::fs::write(&h.os_release, "ID=test\nIMAGE_VERSION=3.0-rc1\n").expect("os-release");
    // The booted slot's record (1.0, installed there) places it, as on a
    // host with `url`: up to the barrier 2.0.
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(100), "{v}");
    forget_the_record(&h);
    let before = h.untouched();
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "refused", "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains("\"3.0-rc1\""), "{msg}");
    assert!(msg.contains(&h.os_release.display().to_string()), "{msg}");
    h.assert_untouched(&before, "unknown booted version");
    assert!(h.state()["transaction"].is_null());
    assert_eq!(h.slot_sha(1), empty_slot(&h), "slot B written");
}

/// `h`'s state lost (a record that parses would place the host): the
/// boot's re-bless rebuilds the booted slot's record from os-release.
fn forget_the_record(h: &TestHost) {
    std::fs::remove_file(h.state_dir.join("state.json")).expect("state lost");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "health: {}", text(&out));
}

#[test]
fn on_a_withdrawn_release_with_nothing_newer_check_says_on_withdrawn() {
    let h = host("on-withdrawn", "2.1");
    release(&h, "2.0", false);
    release(&h, "2.1", false);
    let (_, v) = check_json(&h);
    assert_eq!(v["reason"], "not_newer", "{v}");
    channel(&h, "withdraw", &["2.1"]);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["reason"], "on_withdrawn", "{v}");
}

#[test]
fn install_from_the_channel_says_why_nothing_is_installed() {
    let h = host("install-nothing", "2.0");
    release(&h, "2.0", false);
    let source = channel_path(&h);
    let source = source.to_str().expect("utf8");
    for (why, edit) in [
        (
            "nothing to install: the release channel lists nothing newer than the booted release",
            None,
        ),
        (
            "nothing to install: the release channel is halted: no install starts",
            Some("halt"),
        ),
    ] {
        if let Some(action) = edit {
            channel(&h, action, &[]);
        }
        let out = h.abupdate(&["install", source]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(why), "{}", text(&out));
        assert!(!text(&out).contains("unchanged"), "{}", text(&out));
    }
}

/// 2.0 staged in slot B by `update --no-reboot` (the reboot waits): B is
/// GRUB's next boot, A runs.
fn staged(name: &str) -> TestHost {
    let h = host(name, "1.0");
    release(&h, "2.0", false);
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert!(out.status.success(), "update: {}", text(&out));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    assert_eq!(h.state()["transaction"]["to"], "B");
    assert_eq!(next_boot(&h), "B", "{:?}", h.grub_vars());
    h
}

/// The slot GRUB boots next (the model in `common::grub`), read only.
fn next_boot(h: &TestHost) -> &'static str {
    crate::common::grub::choose(&h.grub_vars()).slot
}

/// The staged 2.0 was disarmed: nothing pending, A boots next and is
/// blessed, B not bootable and recorded bad, 2.0 not on the failed list,
/// no reboot asked for, `disarmed` reported.
fn assert_disarmed(h: &TestHost, out: &Output, why: &str) {
    assert!(out.status.success(), "{}", text(out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("update json");
    assert_eq!(v["outcome"], "disarmed", "{v}");
    assert_eq!(v["release"], "2.0", "{v}");
    let want =
        format!("release 2.0 was staged in slot B and {why}: disarmed, slot A stays the next boot");
    assert_eq!(v["message"], want.as_str(), "{v}");
    assert!(text(out).contains(&want), "the line: {}", text(out));
    let s = h.state();
    assert!(s["transaction"].is_null(), "{s}");
    assert!(s["failed"].as_array().is_none_or(|f| f.is_empty()), "{s}");
    assert_eq!(s["slots"]["B"]["status"], "bad", "{s}");
    assert_eq!(s["slots"]["A"]["status"], "good", "{s}");
    assert!(s["outcomes"].to_string().contains("disarmed"), "{s}");
    let env = h.grub_vars();
    assert_eq!(next_boot(h), "A", "{env:?}");
    assert_eq!(env.get("ORDER").map(String::as_str), Some("A B"), "{env:?}");
    assert_eq!(env.get("B_OK").map(String::as_str), Some("0"), "{env:?}");
    assert_eq!(env.get("A_OK").map(String::as_str), Some("1"), "{env:?}");
    assert_eq!(h.reboots(), 0, "a disarm asks for no reboot");
}

#[test]
fn a_staged_trial_is_disarmed_when_its_release_is_withdrawn() {
    let mut h = staged("disarm-withdrawn");
    channel(&h, "withdraw", &["2.0"]);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["reason"], "staged_not_offered", "{v}");
    assert_eq!(
        h.state()["transaction"]["phase"],
        "staged",
        "check changes nothing"
    );
    let out = h.abupdate(&["--json", "update"]);
    let why = format!(
        "is withdrawn from the release channel {}",
        channel_path(&h).display()
    );
    assert_disarmed(&h, &out, &why);
    // The next run installs nothing: 2.0 is withdrawn.
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("up_to_date"), "{}", text(&out));
    assert!(h.state()["transaction"].is_null());
    assert_eq!(h.reboots(), 0);
    // A power cut now boots the running release, healthy.
    assert_eq!(h.boot(), "A");
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("healthy"), "{}", text(&out));
    assert_eq!(booted(&h), "1.0");
}

#[test]
fn a_halt_disarms_a_staged_trial_and_a_resume_stages_it_again() {
    let mut h = staged("disarm-halt");
    channel(&h, "halt", &[]);
    let out = h.abupdate(&["--json", "update"]);
    let why = format!(
        "the release channel {} is halted",
        channel_path(&h).display()
    );
    assert_disarmed(&h, &out, &why);
    let out = h.abupdate(&["--json", "update"]);
    assert!(text(&out).contains("\"halted\""), "{}", text(&out));
    assert_eq!(next_boot(&h), "A");
    channel(&h, "resume", &[]);
    let out = h.abupdate(&["update", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    assert_eq!(h.state()["transaction"]["version"], "2.0");
    assert_eq!(next_boot(&h), "B");
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
}

#[test]
fn an_unreachable_or_stale_channel_disarms_nothing() {
    let h = staged("disarm-unreachable");
    let armed = |what: &str| {
        let s = h.state();
        assert_eq!(s["transaction"]["phase"], "staged", "{what}: {s}");
        assert_eq!(s["slots"]["B"]["status"], "installed", "{what}: {s}");
        assert_eq!(next_boot(&h), "B", "{what}: {:?}", h.grub_vars());
    };
    let p = channel_path(&h);
    let files: Vec<PathBuf> = std::iter::once(p.clone())
        .chain(crate::common::host::signature_files(&p))
        .collect();
    let offered: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    // Unreachable: the channel is gone.
    for f in &files {
        std::fs::rename(f, f.with_extension("away")).expect("hide");
    }
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    armed("unreachable");
    for f in &files {
        std::fs::rename(f.with_extension("away"), f).expect("back");
    }
    // Replayed: a newer channel that withdraws 2.0 is signed but the host
    // saw a still newer one that offers it; the withdrawing one is stale.
    channel(&h, "withdraw", &["2.0"]);
    let withdrawing: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    let mut doc: serde_json::Value = serde_json::from_slice(&offered[0]).expect("json");
    doc["created"] = date(now() + 60).into();
    write_signed(&h, &doc);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    armed("the newer channel offers it");
    for sig in crate::common::host::signature_files(&p) {
        std::fs::remove_file(sig).expect("rm");
    }
    for (f, b) in files.iter().zip(&withdrawing) {
        std::fs::write(f, b).expect("replay");
    }
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "stale", "{v}");
    armed("stale");
    assert!(h.state()["failed"].as_array().is_none_or(|f| f.is_empty()));
    assert_eq!(h.reboots(), 0);
    // The same withdrawal, signed newer than any seen: believed, disarmed.
    let mut doc: serde_json::Value = serde_json::from_slice(&withdrawing[0]).expect("json");
    doc["created"] = date(now() + 120).into();
    write_signed(&h, &doc);
    let out = h.abupdate(&["--json", "update", "--now"]);
    let why = format!("is withdrawn from the release channel {}", p.display());
    assert_disarmed(&h, &out, &why);
}

/// A halt edited by hand and signed with `abupdate sign`, its `created`
/// left as it was: the host that saw the open channel refuses the halted
/// one as a replay (same `created`, other bytes), and then the open one
/// too (which of the two is the newer cannot be told), where it used to
/// take the replayed open channel and install. A channel with a newer
/// `created` is acted on again.
#[test]
fn a_halt_signed_with_the_same_created_is_not_undone_by_a_replay() {
    let h = host("same-created", "1.0");
    release(&h, "2.0", false);
    let open = current(&h);
    write_signed(&h, &open);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(100), "{v}");
    let mut halted = open.clone();
    halted["halt"] = true.into();
    write_signed(&h, &halted);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["kind"], "stale", "{v}");
    let created = open["created"].as_str().expect("created");
    let want = format!(
        "channel {}: created {created} is that of another document with other bytes this host already verified from there (created {created})",
        channel_path(&h).display()
    );
    assert!(
        v["error"].as_str().is_some_and(|e| e.starts_with(&want)),
        "{v}"
    );
    write_signed(&h, &open);
    refused(
        &h,
        "stale",
        "the open channel replayed with the same created",
    );
    channel(&h, "resign", &[]);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(100), "{v}");
}

/// The booted version the channel cannot place is outside bytes: named
/// by the one quoting rule, byte for byte (no raw ESC or U+202E, no U+FFFD).
#[test]
fn an_unplaceable_booted_version_is_named_escaped_and_lossless() {
    let h = host("unknown-bytes", "1.0");
    release(&h, "2.0", false);
    std::fs::write(
        &h.os_release,
        b"ID=test\nIMAGE_VERSION=1.0\xe2\x80\xae\x1b[2J\xff\n",
    )
    .expect("os-release");
    forget_the_record(&h);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(1), "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(r#"the booted version "1.0\xe2\x80\xae\x1b[2J\xff" (from "#),
        "{msg}"
    );
}

/// `abupdate channel withdraw` of `version` on `h`'s channel, as a shell
/// command (for a hook: the operator acting during an install).
fn withdraw_cmd(h: &TestHost, version: &str) -> String {
    format!(
        "{} channel withdraw {} {version} --secret {} >/dev/null",
        bin(),
        channel_path(h).display(),
        h.secret_key.display()
    )
}

#[test]
fn a_release_withdrawn_during_its_download_is_disarmed_not_booted() {
    let h = host("withdrawn-mid-download", "1.0");
    release(&h, "2.0", false);
    h.post_install_hook(&withdraw_cmd(&h, "2.0"));
    let out = h.abupdate(&["--json", "update"]);
    let why = format!(
        "is withdrawn from the release channel {}",
        channel_path(&h).display()
    );
    assert_disarmed(&h, &out, &why);
}

#[test]
fn a_last_look_that_cannot_be_made_keeps_the_trial_staged_and_the_next_run_reboots() {
    let h = host("last-look-unreachable", "1.0");
    release(&h, "2.0", false);
    let p = channel_path(&h);
    let away = p.with_extension("away");
    h.post_install_hook(&format!("mv {} {}", p.display(), away.display()));
    let out = h.abupdate(&["--json", "update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["error"].is_string() && v["kind"].is_string(), "{v}");
    assert_eq!(h.reboots(), 0, "no reboot without a last look");
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    std::fs::rename(&away, &p).expect("back");
    // The next run's own fetch is its look: the staged trial is rebooted into.
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["rebooting"], true, "{v}");
    assert_eq!(h.reboots(), 1);
    assert_eq!(next_boot(&h), "B");
}

#[test]
fn an_interrupted_write_of_a_withdrawn_release_is_ended_not_redone() {
    // Cut once the bytes are written, and cut after the activation but before the
    // record said staged: both leave `writing`.
    for point in ["fsync", "activated"] {
        let mut h = host(&format!("ended-write-{point}"), "1.0");
        release(&h, "2.0", false);
        let out = h.abupdate_env(&["update"], &[("ABUPDATE_FAILPOINT", point)]);
        assert!(!out.status.success(), "{point}: {}", text(&out));
        assert_eq!(h.state()["transaction"]["phase"], "writing", "{point}");
        channel(&h, "withdraw", &["2.0"]);
        let out = h.abupdate(&["--json", "update"]);
        assert!(out.status.success(), "{point}: {}", text(&out));
        assert!(
            text(&out).contains("the interrupted install of 2.0 into slot B is ended, not redone"),
            "{point}: {}",
            text(&out)
        );
        let s = h.state();
        assert!(s["transaction"].is_null(), "{point}: {s}");
        assert_eq!(s["slots"]["B"]["status"], "bad", "{point}: {s}");
        assert_eq!(next_boot(&h), "A", "{point}: {:?}", h.grub_vars());
        assert_eq!(h.reboots(), 0, "{point}");
        // The next boot promises no redo.
        assert_eq!(h.boot(), "A");
        let out = h.abupdate(&["health"]);
        assert!(!text(&out).contains("redone"), "{point}: {}", text(&out));
        // A newer release still installs over the bad slot.
        release(&h, "3.0", false);
        let out = h.abupdate(&["update", "--no-reboot"]);
        assert!(out.status.success(), "{point}: {}", text(&out));
        assert_eq!(h.state()["transaction"]["version"], "3.0", "{point}");
    }
}

/// Found from outside (years of nightlies, one `channel add` each): the
/// 2,033rd add published a channel past the 256 KiB hosts read, and from
/// then on no host took any channel, a later `halt` included; nothing
/// could drop entries. Now the edit that would pass the hosts' limit is
/// refused, naming it and `prune`, with the channel left as it was; a
/// channel already past it is pruned, and hosts read it again.
#[test]
fn a_channel_hosts_could_not_read_is_never_published_and_prune_shrinks_one() {
    let h = host("too-long", "1.0");
    release(&h, "2.0", false);
    // Signed by the right key, as an older `channel add` left it: past the
    // hosts' limit by nightlies of the 1.x line (and one barrier).
    let mut doc = current(&h);
    let mut releases = vec![serde_json::json!({
        "version": "0.9", "manifest": "r2.0/release.json", "barrier": true, "withdrawn": false,
    })];
    releases.extend((1..=2100).map(|n| {
        serde_json::json!({
            "version": format!("1.1.{n}"), "manifest": "r2.0/release.json",
            "barrier": false, "withdrawn": false,
        })
    }));
    releases.extend(
        doc["releases"]
            .as_array()
            .expect("releases")
            .iter()
            .cloned(),
    );
    doc["releases"] = releases.into();
    doc["created"] = date(now() + 1).into();
    write_signed(&h, &doc);
    let long = std::fs::read(channel_path(&h)).expect("channel");
    assert!(long.len() > 256 << 10, "{} bytes", long.len());
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("more than the 262144 bytes allowed"),
        "{}",
        text(&out)
    );
    // A halt, too, would reach no host: refused, nothing written.
    let out = channel_cmd(&h, "halt", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(
        message.contains("more than the 262144 hosts read")
            && message.contains("channel prune FILE VERSION"),
        "{message}"
    );
    assert_eq!(std::fs::read(channel_path(&h)).expect("channel"), long);
    // Pruned below 2.0: the barrier and 2.0 stay, and hosts read it again.
    channel(&h, "prune", &["2.0"]);
    let pruned = current(&h);
    let left: Vec<&str> = pruned["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .filter_map(|r| r["version"].as_str())
        .collect();
    assert_eq!(left, ["0.9", "2.0"]);
    channel(&h, "halt", &[]);
    channel(&h, "resume", &[]);
    let (code, v) = check_json(&h);
    assert_eq!(code, Some(100), "{v}");
    assert_eq!(v["version"], "2.0", "{v}");
}

/// Found from outside: another product's release added to a channel was
/// the newest its hosts took, refused as incompatible on every tick, and
/// the channel's next release never reached them. `add` refuses it, the
/// channel unchanged, and the hosts go on to their own next release.
#[test]
fn a_release_of_another_product_is_not_listed() {
    let h = host("other-product", "1.0");
    release(&h, "2.0", false);
    let img = h.dir.join("other.raw");
    std::fs::write(&img, image("4.0", LEN)).expect("image");
    let out = run(Command::new(bin())
        .args(["pack", "--level", "3", "--compatible", "another-product"])
        .args(["--version", "4.0", "--secret"])
        .arg(&h.secret_key)
        .arg(format!("--image=rootfs={}", img.display()))
        .arg("--out")
        .arg(h.dir.join("other")));
    assert!(out.status.success(), "pack: {}", text(&out));
    let other = h.dir.join("other/release.json");
    not_listed(
        &h,
        &other,
        "is for compatible \"another-product\", the channel's releases for \"abupdate-test\" (r2.0/release.json)",
    );
}

/// `channel add` of `m` refused (one line saying `says`, the channel as
/// it was), and the host still offered the release listed before, 2.0.
fn not_listed(h: &TestHost, m: &std::path::Path, says: &str) {
    refused_edit(h, "add", &[m.to_str().expect("path")], says);
    let (code, v) = check_json(h);
    assert_eq!(
        (code, v["version"].as_str()),
        (Some(100), Some("2.0")),
        "{v}"
    );
}

/// Found from outside: a release that expires before the channel naming it
/// was listed without a word; from its expiry every host refused it as the
/// newest release and waited on it. `add` (and every edit after it) says
/// so while the channel outlives it, and is silent once it does not.
#[test]
fn a_release_expiring_before_its_channel_is_warned_of() {
    let h = host("expiring-first", "1.0");
    let (m, out) = h.pack_output("r2.0", "2.0", &image("2.0", LEN), &["--expires-days", "3"]);
    assert!(out.status.success(), "pack: {}", text(&out));
    let m = m.to_str().expect("path");
    let out = channel_cmd(&h, "add", &[m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains("abupdate: warning: release 2.0 (r2.0/release.json) expires at ")
            && err.contains("before this channel (")
            && err.matches("warning").count() == 1,
        "{}",
        text(&out)
    );
    let listed = current(&h);
    assert_eq!(listed["releases"][0]["version"], "2.0", "{listed}");
    let silent = |out: Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success() && !err.contains("warning"), "{err}");
    };
    silent(channel_cmd(&h, "resign", &["--expires-days", "2"]));
    silent(channel_cmd(&h, "withdraw", &["2.0"]));
}

/// Found from outside: an expired release (or one dated ahead) was listed;
/// as the newest, every host took it and refused it on every tick, never
/// reaching the good release below it. `add` refuses it, naming why.
#[test]
fn an_expired_release_is_not_listed() {
    let h = host("expired-listed", "1.0");
    release(&h, "2.0", false);
    let (m, out) = h.pack_output(
        "r3.0",
        "3.0",
        &image("3.0", LEN),
        &[
            "--created",
            "2019-12-01T00:00:00Z",
            "--expires",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "pack: {}", text(&out));
    not_listed(
        &h,
        &m,
        "r3.0/release.json: expired at 2020-01-01T00:00:00Z (now ",
    );
}
