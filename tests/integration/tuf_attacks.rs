//! TUF's attack catalogue (theupdateframework.io, "Security"), each fed to
//! a real host through `abupdate install` from an in-test server on
//! loopback, and each refused: exit 1, one error line naming what is wrong,
//! the booted slot's bytes, its bootloader flags and the boot order
//! untouched, no reboot; where the payload was found bad mid-stream, the
//! target slot is left marked bad.
//!
//! | attack | test |
//! | --- | --- |
//! | arbitrary installation | `arbitrary_install_altered_after_signing`; unsigned and self-signed: `refusal_table` (missing signature, untrusted key) |
//! | rollback | `rollback_to_an_older_release` |
//! | fast-forward after key rotation | `fast_forward_with_a_rotated_out_key` |
//! | indefinite freeze (wrong clock, far-future `created`) | `freeze_*`; expired: `refusal_table` |
//! | endless data | `refusal_table` (manifest, payload) |
//! | slow retrieval | `slow_retrieval_*` |
//! | mix-and-match | `mix_and_match_*` |
//! | wrong hardware | `wrong_hardware` |
//! | key compromise below threshold | `key_compromise_below_threshold`, `key_compromise_one_key_under_two_key_ids` |
//! | malicious mirror (altered, stale or replayed) | `malicious_mirror_*` |
//!
//! Each test prints its row: `TUF | attack | refusal`.

use crate::common::hostile_server;

use crate::common::host::{bin, image, run, text, HostOptions, TestHost, Untouched};
use crate::common::hostile_server::{files_of, head, not_found, serve, trickle, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEN: usize = 1 << 20;

/// A test host whose stalls are cut after 2 s and whose retries within the
/// run (`[update] retries`, 5 by default) wait 100 ms doubling: a slow
/// retrieval stays bounded by the retries times the stall window.
fn host(name: &str) -> TestHost {
    let h = TestHost::new(&format!("tuf-{name}"), "1.0", HostOptions::default());
    set_config(
        &h,
        "read_timeout = \"5s\"",
        "read_timeout = \"2s\"\nretry_delay = \"100ms\"",
    );
    h
}

fn set_config(h: &TestHost, from: &str, to: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    assert!(cfg.contains(from), "config has no {from:?}");
    std::fs::write(&h.config, cfg.replacen(from, to, 1)).expect("config");
}

/// A key pair `name.key`, `name.pub` in `h.dir`.
fn keygen(h: &TestHost, name: &str) -> (PathBuf, PathBuf) {
    let (sk, pk) = (
        h.dir.join(format!("{name}.key")),
        h.dir.join(format!("{name}.pub")),
    );
    crate::common::host::keygen(&sk, &pk);
    (sk, pk)
}

/// Pack `version` (an image of LEN bytes) signed with `secret`.
fn pack_with(h: &TestHost, secret: &Path, dir: &str, version: &str, extra: &[&str]) -> PathBuf {
    let raw = h.dir.join(format!("{dir}.raw"));
    std::fs::write(&raw, image(version, LEN)).expect("image");
    let out = run(Command::new(bin())
        .args(["pack", "--secret"])
        .arg(secret)
        .args(["--compatible", crate::common::host::COMPATIBLE])
        .args(["--version", version, "--level", "3"])
        .arg(format!("--image=rootfs={}", raw.display()))
        .arg("--out")
        .arg(h.dir.join(dir))
        .args(extra));
    assert!(out.status.success(), "pack: {}", text(&out));
    h.dir.join(dir).join("release.json")
}

fn sign(secret: &Path, file: &Path, comment: &str) -> String {
    let out = run(Command::new(bin())
        .args(["sign", "--secret"])
        .arg(secret)
        .args(["--trusted-comment", comment])
        .arg(file));
    assert!(out.status.success(), "sign: {}", text(&out));
    std::fs::read_to_string(format!("{}.minisig", file.display())).expect("minisig")
}

type Files = BTreeMap<String, Arc<Vec<u8>>>;

/// Serve `files` faithfully (with `Range`); 404 for anything else.
fn serve_files(files: Files) -> Server {
    Server::start(move |req, s| match files.get(req.path.as_str()) {
        Some(data) => serve(req, s, data),
        None => not_found(s),
    })
}

fn file(bytes: impl Into<Vec<u8>>) -> Arc<Vec<u8>> {
    Arc::new(bytes.into())
}

fn install(h: &TestHost, url: &str) -> Output {
    h.abupdate(&["install", url])
}

/// Exit 1, the last line the one error naming `needle`, nothing flipped.
/// Returns the error line.
fn refused(h: &TestHost, b: &Untouched, out: &Output, needle: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "exit code: {}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or("").to_string();
    assert!(
        line.starts_with("abupdate: ") && line.contains(needle),
        "error line {line:?} does not name {needle:?}; stderr: {stderr}"
    );
    h.assert_untouched(b, &line);
    assert_eq!(h.abupdate(&["health"]).status.code(), Some(0));
    line
}

/// `abupdate --json ARGS` failing with exit 1: its `{"error", "kind"}`.
fn json_error(h: &TestHost, args: &[&str]) -> serde_json::Value {
    let out = h.abupdate(&[&["--json"][..], args].concat());
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn row(attack: &str, line: &str) {
    println!("TUF | {attack} | {line}");
}

#[test]
fn arbitrary_install_altered_after_signing() {
    let h = host("altered");
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let mut files = files_of(m.parent().expect("dir"));
    // Point the signed release at the attacker's payload.
    let text_ = String::from_utf8(files["/release.json"].to_vec()).expect("utf8");
    files.insert(
        "/release.json".into(),
        file(text_.replace("rootfs-2.0.img.zst", "evil.img.zst")),
    );
    let srv = serve_files(files);
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &srv.url("/release.json")),
        "signature does not match the manifest",
    );
    assert!(
        srv.requests().iter().all(|r| !r.path.contains("evil")),
        "fetched the attacker's payload"
    );
    row("arbitrary installation (altered manifest)", &line);
}

#[test]
fn rollback_to_an_older_release() {
    let h = host("rollback");
    let m = h.pack("r09", "0.9", &image("0.9", LEN), &[]);
    let srv = serve_files(files_of(m.parent().expect("dir")));
    let b = h.untouched();
    let url = srv.url("/release.json");
    let line = refused(&h, &b, &install(&h, &url), "not newer than the booted 1.0");
    // Named by the judgement that refused it, as `check` names it.
    let v = json_error(&h, &["install", &url]);
    assert_eq!(v["kind"], "not_newer", "{v}");
    // The timer does not take it either.
    let out = h.abupdate(&["--json", "check", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reason"], "not_newer");
    row("rollback (older signed release)", &line);
}

#[test]
fn fast_forward_with_a_rotated_out_key() {
    let h = host("rotation");
    // Key rotation: the new image ships K2; K1 (h.secret_key) is retired.
    let (k2, k2_pub) = keygen(&h, "k2");
    std::fs::copy(&k2_pub, h.public_key.with_file_name("k2.pub")).expect("install K2");
    std::fs::remove_file(&h.public_key).expect("retire K1");
    // Whoever holds the retired K1 signs a far newer release.
    let m = pack_with(&h, &h.secret_key, "r9", "9.0", &[]);
    let srv = serve_files(files_of(m.parent().expect("dir")));
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &srv.url("/release.json")),
        "signed by untrusted key",
    );
    // K2 signs fine: the rotation itself works.
    let m2 = pack_with(&h, &k2, "r2", "2.0", &[]);
    let srv2 = serve_files(files_of(m2.parent().expect("dir")));
    let out = h.abupdate(&["install", "--no-reboot", &srv2.url("/release.json")]);
    assert!(out.status.success(), "K2 release: {}", text(&out));
    row("fast-forward after key rotation (retired key)", &line);
}

/// The host's clock runs 12 hours behind (a reset, a dead RTC battery, no
/// NTP yet). It verifies a manifest dated by the right clock (12 hours is
/// within the tolerated skew, so the date is believed); from then on its
/// clock is never believed to be earlier than that, so an old manifest
/// whose expiry is still ahead of the wrong clock is refused.
#[test]
fn freeze_against_a_host_whose_clock_was_set_back() {
    use abupdate::timefmt::{format_rfc3339, now};
    let h = host("clock");
    let day = 86_400;
    let real_now = now() + 12 * 3600;
    let newer = h.pack(
        "r3",
        "3.0",
        &image("3.0", LEN),
        &[
            "--created",
            &format_rfc3339(real_now),
            "--expires",
            &format_rfc3339(real_now + 60 * day),
        ],
    );
    let old = h.pack(
        "r2",
        "2.0",
        &image("2.0", LEN),
        &[
            "--created",
            &format_rfc3339(real_now - 40 * day),
            "--expires",
            &format_rfc3339(real_now - 6 * 3600),
        ],
    );
    let srv_new = serve_files(files_of(newer.parent().expect("dir")));
    let out = h.abupdate(&["check", &srv_new.url("/release.json")]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    assert_eq!(h.state()["newest_created"], real_now);
    let srv_old = serve_files(files_of(old.parent().expect("dir")));
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &srv_old.url("/release.json")),
        "expired",
    );
    // By the host's own (wrong) clock the old manifest is still valid.
    assert!(real_now - 6 * 3600 > now());
    row("indefinite freeze (host clock set back)", &line);
}

/// One mistyped date (`2100`) or a build machine with a wrong clock signs
/// a manifest far in the future. Had the host believed it, its clock's
/// floor would sit in 2100 and every later release would be "expired":
/// the whole fleet frozen until `state.json` were edited by hand. The host
/// refuses it (an error, so monitoring sees it), remembers nothing of it,
/// and takes the next correctly dated release.
/// Give the manifest at `m` these `created` and `expires` and sign it again
/// with the release key.
fn redate(h: &TestHost, m: &Path, created: &str, expires: &str) {
    let text_ = std::fs::read_to_string(m).expect("manifest");
    let v: serde_json::Value = serde_json::from_str(&text_).expect("json");
    let was_created = v["created"].as_str().expect("created").to_string();
    let was_expires = v["expires"].as_str().expect("expires").to_string();
    std::fs::write(
        m,
        text_
            .replacen(&was_created, created, 1)
            .replacen(&was_expires, expires, 1),
    )
    .expect("write");
    sign(&h.secret_key, m, "timestamp:2\tfile:release.json");
}

#[test]
fn freeze_by_a_far_future_created() {
    let h = host("far-future");
    // `pack` refuses such a date (no host would take it): the attacker
    // (a stolen key) dates the signed manifest by hand.
    let m = h.pack("r9", "9.0", &image("9.0", LEN), &[]);
    redate(&h, &m, "2100-01-01T00:00:00Z", "2100-02-01T00:00:00Z");
    let srv = serve_files(files_of(m.parent().expect("dir")));
    let url = srv.url("/release.json");
    let out = h.abupdate(&["--json", "check", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "created_ahead", "{v}");
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &url),
        "created 2100-01-01T00:00:00Z is more than a day ahead of this host's clock",
    );
    let floor = h.state()["newest_created"].as_i64().unwrap_or(0);
    assert!(floor < 4_000_000_000, "the floor was raised to {floor}");

    // The same date with `expires` before it: valid for no instant.
    let swapped = h.pack("r9b", "9.0", &image("9.0", LEN), &[]);
    redate(&h, &swapped, "2100-01-01T00:00:00Z", "2099-12-01T00:00:00Z");
    let srv_swapped = serve_files(files_of(swapped.parent().expect("dir")));
    refused(
        &h,
        &b,
        &install(&h, &srv_swapped.url("/release.json")),
        "expires: 2099-12-01T00:00:00Z is not after created 2100-01-01T00:00:00Z",
    );

    // The next release, dated right, installs.
    let good = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let srv_good = serve_files(files_of(good.parent().expect("dir")));
    let out = h.abupdate(&["install", "--no-reboot", &srv_good.url("/release.json")]);
    assert!(out.status.success(), "{}", text(&out));
    row("indefinite freeze (far-future created)", &line);
}

/// A server that answers every conditional request with 304 would keep a
/// host on "nothing new" for ever. Once the manifest it stands for has
/// expired, the host asks for it in full and says so.
///
/// Found writing this test: the validators of a manifest were reused after
/// it expired, so a host frozen by 304s reported "not_modified" for ever.
#[test]
fn freeze_by_answering_304_forever() {
    use abupdate::timefmt::{format_rfc3339, now};
    let h = host("freeze-304");
    // The booted release's own manifest, about to expire.
    let m = h.pack(
        "r1",
        "1.0",
        &image("1.0", LEN),
        &["--expires", &format_rfc3339(now() + 3)],
    );
    let doc = Arc::new(std::fs::read(&m).expect("manifest"));
    let files = files_of(m.parent().expect("dir"));
    let srv = Server::start(move |req, s| {
        if req.path == "/release.json" {
            if req.header("if-none-match") == Some("\"r1\"") {
                head(s, "304 Not Modified", "ETag: \"r1\"\r\n");
            } else {
                head(
                    s,
                    "200 OK",
                    &format!("ETag: \"r1\"\r\nContent-Length: {}\r\n", doc.len()),
                );
                hostile_server::write_all_capped(s, &doc);
            }
            return;
        }
        match files.get(req.path.as_str()) {
            Some(d) => serve(req, s, d),
            None => not_found(s),
        }
    });
    set_config(
        &h,
        "[update]\n",
        &format!("[update]\nurl = \"{}\"\n", srv.url("/release.json")),
    );
    let check = |want: &str| {
        let out = h.abupdate(&["--json", "check"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["reason"], want, "{v}");
        v["message"].as_str().unwrap_or_default().to_string()
    };
    check("not_newer");
    check("not_modified");
    std::thread::sleep(Duration::from_secs(4));
    // Expired is an error, not "nothing new": exit 1, every tick.
    let expired = || {
        let out = h.abupdate(&["--json", "check"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["kind"], "expired", "{v}");
        // The line ends with the host's clock ("(now …)"), which moves
        // between the two runs.
        let line = v["error"].as_str().unwrap_or_default();
        line.split(" (now ").next().unwrap_or(line).to_string()
    };
    let line = expired();
    assert_eq!(expired(), line);
    let conditional = srv
        .requests()
        .iter()
        .filter(|r| r.path == "/release.json" && r.header("if-none-match").is_some())
        .count();
    assert_eq!(
        conditional, 1,
        "only the check before expiry was conditional"
    );
    let full_gets = srv
        .requests()
        .iter()
        .filter(|r| r.path == "/release.json" && r.header("if-none-match").is_none())
        .count();
    assert_eq!(
        full_gets, 3,
        "each check after expiry fetched the manifest in full"
    );
    row("indefinite freeze (304 for ever)", &line);
}

#[test]
fn slow_retrieval_of_the_payload() {
    let h = host("slow-payload");
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &["--no-compress"]);
    let files = files_of(m.parent().expect("dir"));
    let srv = Server::start(move |req, s| match req.path.as_str() {
        "/rootfs-2.0.img" => {
            let data = &files["/rootfs-2.0.img"];
            head(s, "200 OK", &format!("Content-Length: {}\r\n", data.len()));
            trickle(s, data, 60);
        }
        p => match files.get(p) {
            Some(d) => serve(req, s, d),
            None => not_found(s),
        },
    });
    let b = h.untouched();
    let started = Instant::now();
    let line = refused(&h, &b, &install(&h, &srv.url("/release.json")), "stalled");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Stalled before its first chunk reached the target: the target was
    // never marked bad, nothing is pending.
    h.assert_target_never_marked_bad(&b);
    row("slow retrieval (payload, 1 byte/s)", &line);
}

#[test]
fn slow_retrieval_of_the_manifest() {
    let h = host("slow-manifest");
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let doc = std::fs::read(&m).expect("manifest");
    let srv = Server::start(move |_, s| {
        head(s, "200 OK", &format!("Content-Length: {}\r\n", doc.len()));
        trickle(s, &doc, 60);
    });
    let b = h.untouched();
    let started = Instant::now();
    let line = refused(&h, &b, &install(&h, &srv.url("/release.json")), "stalled");
    assert!(started.elapsed() < Duration::from_secs(30));
    row("slow retrieval (manifest, 1 byte/s)", &line);
}

#[test]
fn mix_and_match_payload_of_another_release() {
    let h = host("mix-payload");
    let a = h.pack("r2", "2.0", &image("2.0", LEN), &["--no-compress"]);
    let b3 = h.pack("r3", "3.0", &image("3.0", LEN), &["--no-compress"]);
    let mut files = files_of(a.parent().expect("dir"));
    let other = std::fs::read(b3.with_file_name("rootfs-3.0.img")).expect("payload 3.0");
    files.insert("/rootfs-2.0.img".into(), file(other));
    let srv = serve_files(files);
    let b = h.untouched();
    let line = refused(&h, &b, &install(&h, &srv.url("/release.json")), "SHA-256");
    h.assert_target_bad();
    row("mix-and-match (manifest 2.0, payload 3.0)", &line);
}

#[test]
fn mix_and_match_signature_of_another_release() {
    let h = host("mix-sig");
    let a = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let b3 = h.pack("r3", "3.0", &image("3.0", LEN), &[]);
    let mut files = files_of(a.parent().expect("dir"));
    // 3.0's manifest under 2.0's genuine signature.
    files.insert(
        "/release.json".into(),
        file(std::fs::read(&b3).expect("manifest 3.0")),
    );
    let srv = serve_files(files);
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &srv.url("/release.json")),
        "signature does not match the manifest",
    );
    row("mix-and-match (manifest 3.0, signature of 2.0)", &line);
}

#[test]
fn wrong_hardware() {
    let h = host("hardware");
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", LEN),
        &["--compatible", "someone-elses-board"],
    );
    let srv = serve_files(files_of(m.parent().expect("dir")));
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &srv.url("/release.json")),
        "someone-elses-board",
    );
    // The timer fails on it too (not "nothing new"), every tick, and backs off.
    set_config(
        &h,
        "[update]\n",
        &format!("[update]\nurl = \"{}\"\n", srv.url("/release.json")),
    );
    // (The refused install above counts as the first failure.)
    for failures in 2..=3 {
        let out = h.abupdate(&["update", "--now", "--no-reboot"]);
        refused(&h, &b, &out, "someone-elses-board");
        let metrics = &h.state()["metrics"];
        assert_eq!(metrics["consecutive_failures"], failures, "{metrics}");
        assert_eq!(metrics["failures"]["incompatible"], failures, "{metrics}");
        assert!(metrics["retry_after"].as_i64().is_some(), "{metrics}");
    }
    row("wrong hardware (other compatible)", &line);
}

#[test]
fn key_compromise_below_threshold() {
    let h = host("threshold");
    set_config(&h, "[update]\n", "[update]\nthreshold = 2\n");
    let (k2, k2_pub) = keygen(&h, "k2");
    std::fs::copy(&k2_pub, h.public_key.with_file_name("k2.pub")).expect("trust K2");
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let mut files = files_of(m.parent().expect("dir"));
    // The attacker holds K1 only: two signatures, both by K1, and junk.
    let k1_again = sign(&h.secret_key, &m, "timestamp:2\tfile:release.json");
    files.insert("/release.json.1.minisig".into(), file(k1_again));
    files.insert("/release.json.2.minisig".into(), file("not a signature"));
    let srv = serve_files(files.clone());
    let b = h.untouched();
    let line = refused(
        &h,
        &b,
        &install(&h, &srv.url("/release.json")),
        "release.json",
    );
    assert!(
        line.contains("threshold is 2") || line.contains("release.json.2.minisig"),
        "{line}"
    );
    drop(srv);
    // K1 + K2 meet the threshold.
    let k2_sig = sign(&k2, &m, "timestamp:3\tfile:release.json");
    files.insert("/release.json.1.minisig".into(), file(k2_sig));
    files.remove("/release.json.2.minisig");
    let srv = serve_files(files);
    let out = h.abupdate(&["install", "--no-reboot", &srv.url("/release.json")]);
    assert!(out.status.success(), "2 of 2: {}", text(&out));
    row("key compromise below threshold (1 of 2 keys)", &line);
}

/// Line 2 of a minisign file (a key or a signature) with the 8 key id bytes
/// after the 2-byte algorithm replaced, through the real `base64` tool. The
/// key id is not covered by any signature.
fn relabel(h: &TestHost, minisign_file: &str, id: &[u8; 8]) -> String {
    let mut lines: Vec<String> = minisign_file.lines().map(str::to_owned).collect();
    let escaped: String = id.iter().map(|b| format!("\\{b:03o}")).collect();
    let out = run(Command::new("sh").args([
        "-c",
        &format!(
            "printf '%s' \"$0\" | base64 -d > \"$1\" && \
             {{ head -c 2 \"$1\"; printf '{escaped}'; tail -c +11 \"$1\"; }} | base64 -w0",
        ),
        &lines[1],
        &h.dir.join("relabel.bin").display().to_string(),
    ]));
    assert!(out.status.success(), "base64: {}", text(&out));
    lines[1] = String::from_utf8(out.stdout).expect("base64 output");
    lines.join("\n") + "\n"
}

/// The attacker holds one key (K1) of a threshold of 2. K1's public key
/// is written a second time under another key id (a `.pub` a careless
/// operator installs, or one shipped in both key directories under two
/// names), and K1's real signature is copied with that id: the real
/// `minisign -V` accepts each file alone, but they are one key.
#[test]
fn key_compromise_one_key_under_two_key_ids() {
    let h = host("threshold-alias");
    set_config(&h, "[update]\n", "[update]\nthreshold = 2\n");
    // A second trusted key the attacker does not hold: the host's keys
    // could meet 2, so what decides is how the signatures are counted.
    let (_, k2_pub) = keygen(&h, "k2");
    std::fs::copy(&k2_pub, h.public_key.with_file_name("k2.pub")).expect("trust K2");
    let alias_id = *b"\x01alias\x02\x03";
    let k1_pub = std::fs::read_to_string(&h.public_key).expect("K1 pub");
    let alias_pub = h.public_key.with_file_name("k1-alias.pub");
    std::fs::write(&alias_pub, relabel(&h, &k1_pub, &alias_id)).expect("alias pub");
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let genuine = std::fs::read_to_string(m.with_file_name("release.json.minisig")).expect("sig");
    let copied = m.with_file_name("release.json.1.minisig");
    std::fs::write(&copied, relabel(&h, &genuine, &alias_id)).expect("copied sig");
    if crate::common::host::has_tool("minisign") {
        let out = run(Command::new("minisign")
            .arg("-Vm")
            .arg(&m)
            .arg("-x")
            .arg(&copied)
            .arg("-p")
            .arg(&alias_pub));
        assert!(out.status.success(), "minisign -V: {}", text(&out));
    }
    let srv = serve_files(files_of(m.parent().expect("dir")));
    let b = h.untouched();
    let url = srv.url("/release.json");
    let out = h.abupdate(&["check", &url]);
    assert_eq!(out.status.code(), Some(1), "check: {}", text(&out));
    let line = refused(
        &h,
        &b,
        &install(&h, &url),
        "1 valid signature from a trusted key, threshold is 2 (1 more by an already counted key)",
    );
    row(
        "key compromise below threshold (1 key under 2 key ids)",
        &line,
    );
}

/// A server of `files` by path (404 for any other), and the handle that
/// changes what it serves from then on (a site cache going stale).
fn files_server(files: Files) -> (Arc<std::sync::Mutex<Files>>, Server) {
    let serving = Arc::new(std::sync::Mutex::new(files));
    let shared = serving.clone();
    let server = Server::start(move |req, s| {
        let files = shared.lock().unwrap().clone();
        match files.get(req.path.as_str()) {
            Some(data) => serve(req, s, data),
            None => not_found(s),
        }
    });
    (serving, server)
}

/// Make the files server `serving` offer the release directory of manifest
/// `m` under `/edge` (the origin's paths), as a site cache would.
fn publish_under_edge(serving: &std::sync::Mutex<Files>, m: &Path) {
    *serving.lock().unwrap() = files_of(m.parent().expect("dir"))
        .into_iter()
        .map(|(p, d)| (format!("/edge{p}"), d))
        .collect();
}

/// A configured site cache serves the origin's paths; it is as untrusted
/// as any server.
fn mirror_host(name: &str, mirror: &Server) -> TestHost {
    let h = host(name);
    set_config(
        &h,
        "[update]\n",
        &format!(
            "[update]\nmirror = \"http://127.0.0.1:{}\"\nurl = \"http://updates.invalid/edge/release.json\"\n",
            mirror.port
        ),
    );
    h
}

/// The mirror flips one bit of the compressed payload. Refused (the
/// bit is caught by zstd's frame checksum or the payload's SHA-256), the
/// target left bad, and once the mirror serves the real bytes again the
/// host updates: nothing of the bad download is kept and resumed.
///
/// Found by this test: a payload that zstd refused kept its partial
/// download, every later run resumed from it and failed the same way (the
/// host never updated again), and the error named neither file nor URL.
#[test]
fn malicious_mirror_alters_the_payload() {
    let maker = host("mirror-payload-maker");
    let m = maker.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let genuine: Files = files_of(m.parent().expect("dir"))
        .into_iter()
        .map(|(p, d)| (format!("/edge{p}"), d))
        .collect();
    let mut altered = genuine.clone();
    let mut evil = genuine["/edge/rootfs-2.0.img.zst"].to_vec();
    let mid = evil.len() / 2;
    evil[mid] ^= 0x01;
    altered.insert("/edge/rootfs-2.0.img.zst".into(), file(evil));
    let (serving, mirror) = files_server(altered);
    let h = mirror_host("mirror-payload", &mirror);
    std::fs::copy(&maker.public_key, &h.public_key).expect("trust the maker's key");
    let b = h.untouched();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    let line = refused(&h, &b, &out, "/edge/rootfs-2.0.img.zst");
    // The altered frame was refused before it was decoded, and it is the
    // payload's only one: no byte of the target was written, so it was not
    // even marked bad.
    assert!(line.contains("the frame of segment 0"), "{line}");
    assert!(line.contains("it was not decoded"), "{line}");
    h.assert_target_never_marked_bad(&b);
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.path == "/edge/release.json"),
        "the mirror was not used"
    );
    // Twice: a kept partial download would fail the same way forever.
    for _ in 0..2 {
        let out = h.abupdate(&["update", "--now", "--no-reboot"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    }
    *serving.lock().unwrap() = genuine;
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(
        out.status.success(),
        "after the mirror was fixed: {}",
        text(&out)
    );
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    row("malicious mirror (altered payload)", &line);
}

/// TUF's timestamp rule, through a site cache: the origin paused 2.0
/// (re-signed, `created` advanced) and the host saw the pause. A stale
/// cache then serves the copy from before the pause, and later an older,
/// validly signed 1.5. Both are older than what this host verified from the
/// same source: refused, nothing written. A newer re-sign is taken.
#[test]
fn malicious_mirror_replays_an_older_manifest() {
    use abupdate::timefmt::{format_rfc3339, now};
    let (serving, mirror) = files_server(Files::default());
    let h = mirror_host("mirror-stale", &mirror);
    let t = now() - 3600;
    let at = |secs: i64| format_rfc3339(t + secs);
    let expires = format_rfc3339(t + 30 * 86_400);
    let pack = |dir: &str, version: &str, created: i64, extra: &[&str]| {
        let created = at(created);
        let mut args = vec!["--created", &created, "--expires", &expires];
        args.extend_from_slice(extra);
        h.pack(dir, version, &image(version, LEN), &args)
    };
    let publish = |m: &Path| publish_under_edge(&serving, m);
    let open = pack("r2-open", "2.0", 0, &[]);
    let paused = pack("r2-paused", "2.0", 60, &["--paused"]);
    let older = pack("r15", "1.5", 0, &[]);

    publish(&paused);
    let out = h.abupdate(&["--json", "update", "--now", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reason"], "waiting_for_wave", "{v}");

    let b = h.untouched();
    let mut line = String::new();
    for stale in [&open, &older] {
        publish(stale);
        let out = h.abupdate(&["update", "--now", "--no-reboot"]);
        // Named by the URL actually fetched: the mirror's, not the origin's.
        line = refused(
            &h,
            &b,
            &out,
            &format!(
                "release manifest {}: created {} is older than one this host already verified from there",
                mirror.url("/edge/release.json"),
                at(0)
            ),
        );
        assert_eq!(
            h.grub_vars().get("B_OK"),
            b.env.get("B_OK"),
            "B was touched"
        );
        assert_ne!(h.state()["slots"]["B"]["status"], "installed");
    }
    assert_eq!(h.state()["metrics"]["failures"]["stale"], 2);

    // The origin resumes 2.0 with a new signature: `created` advanced.
    let resumed = pack("r2-resumed", "2.0", 120, &[]);
    publish(&resumed);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    row(
        "malicious mirror (stale copy after a pause, older release)",
        &line,
    );
}

/// A pause re-signed by hand without advancing `created` (`abupdate sign`
/// or minisign over an edited manifest): the host that saw the pause
/// refuses the unpaused copy with the same `created` as a replay (naming
/// the mirror's URL and the date), where it used to take "the same date" as
/// the same manifest and install. Both copies are refused from then on;
/// one with a newer `created` is taken.
#[test]
fn a_replay_with_the_same_created_and_other_bytes_is_refused() {
    use abupdate::timefmt::{format_rfc3339, now};
    let (serving, mirror) = files_server(Files::default());
    let h = mirror_host("mirror-same-created", &mirror);
    let t = now() - 3600;
    let (created, expires) = (format_rfc3339(t), format_rfc3339(t + 30 * 86_400));
    let dated = ["--created", &created, "--expires", &expires];
    let open = h.pack("r2-open", "2.0", &image("2.0", LEN), &dated);
    // The pause, edited by hand and re-signed with the same `created`.
    let paused = h.pack("r2-paused", "2.0", &image("2.0", LEN), &dated);
    h.resign(&paused, |v| {
        v["rollout"] = serde_json::json!({"percent": 100, "paused": true});
        None
    });
    let publish = |m: &Path| publish_under_edge(&serving, m);
    publish(&paused);
    let out = h.abupdate(&["--json", "update", "--now", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reason"], "waiting_for_wave", "{v}");

    let b = h.untouched();
    publish(&open);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    let line = refused(
        &h,
        &b,
        &out,
        &format!(
            "release manifest {}: created {created} is that of another document with other bytes this host already verified from there (created {created})",
            mirror.url("/edge/release.json")
        ),
    );
    // Which of the two is the newer cannot be told: the pause is not
    // taken again either (fail closed) until a newer `created`.
    publish(&paused);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    refused(&h, &b, &out, "a re-sign that did not advance created");
    let resumed = h.pack("r2-resumed", "2.0", &image("2.0", LEN), &[]);
    publish(&resumed);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    row("replay with the same created (hand re-sign)", &line);
}

/// Releases packed within one second (a build pipeline) and published in
/// turn at one URL share a `created`: the higher release is the newer one,
/// no replay; the lower one offered again after it is older.
#[test]
fn two_releases_with_one_created_at_one_url_are_ordered_by_release() {
    use abupdate::timefmt::{format_rfc3339, now};
    let (serving, mirror) = files_server(Files::default());
    let h = mirror_host("mirror-one-created", &mirror);
    let t = now() - 3600;
    let (created, expires) = (format_rfc3339(t), format_rfc3339(t + 30 * 86_400));
    let dated = [
        "--created",
        &created,
        "--expires",
        &expires,
        "--percent",
        "100",
    ];
    let r2 = h.pack("r2", "2.0", &image("2.0", LEN), &dated);
    let r3 = h.pack("r3", "3.0", &image("3.0", LEN), &dated);
    let publish = |m: &Path| publish_under_edge(&serving, m);
    publish(&r2);
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(100), "2.0: {}", text(&out));
    publish(&r3);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "3.0 after 2.0: {}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("3.0", LEN));
    let b = h.untouched();
    publish(&r2);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    refused(&h, &b, &out, "older than one this host already verified");
}

/// A release channel through a site cache that replays an older channel:
/// refused as stale, and the error names the URL actually fetched (the
/// mirror's), not the configured origin's.
#[test]
fn a_stale_channel_through_a_mirror_is_refused_naming_the_mirror() {
    let (serving, mirror) = files_server(Files::default());
    let h = mirror_host("mirror-channel", &mirror);
    set_config(
        &h,
        "url = \"http://updates.invalid/edge/release.json\"\n",
        "channel = \"http://updates.invalid/edge/channel.json\"\n",
    );
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let dir = m.parent().expect("dir").to_path_buf();
    let edit = |action: &[&str]| {
        let out = run(Command::new(bin())
            .arg("channel")
            .args(action)
            .arg("--secret")
            .arg(&h.secret_key));
        assert!(out.status.success(), "channel: {}", text(&out));
        files_of(&dir)
            .into_iter()
            .map(|(p, d)| (format!("/edge{p}"), d))
            .collect::<Files>()
    };
    let chan = dir.join("channel.json");
    let (c, r) = (chan.to_str().expect("p"), m.to_str().expect("p"));
    let old = edit(&["add", c, r]);
    let halted = edit(&["halt", c]);
    *serving.lock().unwrap() = halted;
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    *serving.lock().unwrap() = old;
    let v = json_error(&h, &["check"]);
    assert_eq!(v["kind"], "stale", "{v}");
    let want = format!("channel {}: created ", mirror.url("/edge/channel.json"));
    assert!(
        v["error"].as_str().is_some_and(|e| e.starts_with(&want)),
        "{v}"
    );
}

#[test]
fn malicious_mirror_alters_the_manifest() {
    let maker = host("mirror-manifest-maker");
    let m = maker.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let files: Files = files_of(m.parent().expect("dir"))
        .into_iter()
        .map(|(p, d)| {
            let d = if p == "/release.json" {
                let t = String::from_utf8(d.to_vec()).expect("utf8");
                file(t.replace("\"2.0\"", "\"2.0.1\""))
            } else {
                d
            };
            (format!("/edge{p}"), d)
        })
        .collect();
    let mirror = serve_files(files);
    let h = mirror_host("mirror-manifest", &mirror);
    std::fs::copy(&maker.public_key, &h.public_key).expect("trust the maker's key");
    let b = h.untouched();
    let out = h.abupdate(&["update", "--now"]);
    let line = refused(&h, &b, &out, "signature does not match the manifest");
    row("malicious mirror (altered manifest)", &line);
}
