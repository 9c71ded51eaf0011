//! SPEC "What it must refuse", one row per refusal: the input that breaks
//! the rule, the `--json` error `kind` it must be refused with (README
//! "Error kinds"), and what must stay untouched. Every row is fed to a real
//! host through `abupdate --json install --no-reboot` and must end with:
//! exit 1, one `abupdate: ` error line on stderr naming the thing, the
//! `{"error", "kind"}` object on stdout, and the booted slot (its bytes and
//! flags), the boot order, the booted slot's record in `state.json` and the
//! reboots requested as they were. The target slot is, per row, left as it
//! was (refused before its first byte) or marked bad (a payload found bad
//! mid-stream).
//!
//! Each refusal is tested here and only here; other files test what goes
//! beyond it (TUF's framing over HTTP, the timer's back-off, loop devices).

use crate::common::host::{image, text, HostOptions, TestHost};
use crate::common::hostile_server::{files_of, head, not_found, serve, write_endless, Server};
use std::path::PathBuf;
use std::process::{Child, Command};

const LEN: usize = 1 << 20;

/// What the refusal must leave of the target slot (B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Refused before the first byte: B's flag and record as they were.
    AsItWas,
    /// Found bad mid-stream: B marked bad, no transaction pending.
    MarkedBad,
}

/// What a row's setup hands the install: the manifest, and whatever must
/// live while it runs (a server, a process holding the lock).
struct Input {
    source: String,
    _server: Option<Server>,
    _lock_holder: Option<Holder>,
}

/// A process holding the state lock, killed when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Input {
    fn path(p: PathBuf) -> Input {
        Input {
            source: p.display().to_string(),
            _server: None,
            _lock_holder: None,
        }
    }
}

/// One SPEC refusal.
struct Row {
    /// The SPEC's words for it.
    refusal: &'static str,
    /// Makes the bad input on a fresh host booted from 1.0 in slot A.
    input: fn(&mut TestHost) -> Input,
    /// The `--json` error kind.
    kind: &'static str,
    /// A phrase the one error line must contain.
    says: &'static str,
    target: Target,
}

fn release(h: &TestHost, version: &str, extra: &[&str]) -> PathBuf {
    h.pack(&format!("r{version}"), version, &image(version, LEN), extra)
}

fn remove_signatures(m: &std::path::Path) {
    for sig in crate::common::host::signature_files(m) {
        std::fs::remove_file(sig).expect("rm signature");
    }
}

fn bad_signature(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &[]);
    let manifest = std::fs::read_to_string(&m).expect("manifest");
    std::fs::write(&m, manifest.replacen("\"2.0\"", "\"2.1\"", 1)).expect("write");
    Input::path(m)
}

fn missing_signature(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &[]);
    remove_signatures(&m);
    Input::path(m)
}

fn untrusted_key(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &[]);
    let (sk, pk) = (h.dir.join("other.key"), h.dir.join("other.pub"));
    let (sk_s, pk_s) = (sk.display().to_string(), pk.display().to_string());
    let out = h.abupdate(&["keygen", "--secret", &sk_s, "--public", &pk_s]);
    assert!(out.status.success(), "keygen: {}", text(&out));
    remove_signatures(&m);
    let out = h.abupdate(&["sign", "--secret", &sk_s, &m.display().to_string()]);
    assert!(out.status.success(), "sign: {}", text(&out));
    Input::path(m)
}

fn other_compatible(h: &mut TestHost) -> Input {
    Input::path(release(h, "2.0", &["--compatible", "someone-elses-board"]))
}

fn not_newer(h: &mut TestHost) -> Input {
    Input::path(release(h, "0.9", &[]))
}

fn expired(h: &mut TestHost) -> Input {
    Input::path(release(
        h,
        "2.0",
        &[
            "--created",
            "2020-01-01T00:00:00Z",
            "--expires",
            "2020-02-01T00:00:00Z",
        ],
    ))
}

/// A server answering every request with data that never ends.
fn endless_manifest(_: &mut TestHost) -> Input {
    let srv = Server::start(|_, s| {
        head(s, "200 OK", "");
        write_endless(s);
    });
    Input {
        source: srv.url("/release.json"),
        _server: Some(srv),
        _lock_holder: None,
    }
}

/// The real release, its payload followed by data that never ends.
fn endless_payload(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &["--no-compress"]);
    let files = files_of(m.parent().expect("dir"));
    let srv = Server::start(move |req, s| match req.path.as_str() {
        "/rootfs-2.0.img" => {
            head(s, "200 OK", "");
            crate::common::hostile_server::write_all_capped(s, &files["/rootfs-2.0.img"]);
            write_endless(s);
        }
        p => match files.get(p) {
            Some(d) => serve(req, s, d),
            None => not_found(s),
        },
    });
    Input {
        source: srv.url("/release.json"),
        _server: Some(srv),
        _lock_holder: None,
    }
}

fn payload_hash_differs(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &["--no-compress"]);
    let payload = m.with_file_name("rootfs-2.0.img");
    let mut data = std::fs::read(&payload).expect("payload");
    data[700_000] ^= 0x40;
    std::fs::write(&payload, data).expect("write");
    Input::path(m)
}

fn image_larger_than_its_slot(h: &mut TestHost) -> Input {
    // The slots hold 8 MiB.
    Input::path(h.pack("r2", "2.0", &image("2.0", 12 << 20), &[]))
}

fn target_is_the_booted_slot(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let (a, b) = (h.slots[0].display(), h.slots[1].display());
    let to = cfg.replace(&format!("rootfs = \"{b}\""), &format!("rootfs = \"{a}\""));
    assert_ne!(cfg, to, "the config names no B rootfs");
    std::fs::write(&h.config, to).expect("config");
    Input::path(m)
}

fn second_instance(h: &mut TestHost) -> Input {
    let m = release(h, "2.0", &[]);
    let lock = h.state_dir.join("lock");
    let holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock");
    // Wait until the lock is really held.
    for _ in 0..250 {
        let free = Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .expect("flock -n");
        if !free.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Input {
        _lock_holder: Some(Holder(holder)),
        ..Input::path(m)
    }
}

/// 3.0 failed its trial here (rolled back, booted A again); the same
/// release comes back spelled `3.0.0`.
fn previously_failed(h: &mut TestHost) -> Input {
    let m = release(h, "3.0", &[]);
    let out = h.abupdate(&["install", "--no-reboot", &m.display().to_string()]);
    assert!(out.status.success(), "install 3.0: {}", text(&out));
    assert_eq!(h.boot(), "B");
    h.add_health_check("10-app", "exit 1");
    let out = h.abupdate(&["health", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "health: {}", text(&out));
    std::fs::remove_file(h.health_dir.join("10-app")).expect("rm check");
    assert_eq!(h.boot(), "A");
    assert!(h.abupdate(&["health"]).status.success());
    Input::path(h.pack("r300", "3.0.0", &image("3.0", LEN), &[]))
}

const TABLE: &[Row] = &[
    Row {
        refusal: "bad signature",
        input: bad_signature,
        kind: "signature",
        says: "signature",
        target: Target::AsItWas,
    },
    Row {
        refusal: "missing signature",
        input: missing_signature,
        kind: "signature",
        says: "release.json.minisig",
        target: Target::AsItWas,
    },
    Row {
        refusal: "untrusted key",
        input: untrusted_key,
        kind: "signature",
        says: "untrusted key",
        target: Target::AsItWas,
    },
    Row {
        refusal: "manifest not for this compatible",
        input: other_compatible,
        kind: "incompatible",
        says: "release.json: is for compatible \"someone-elses-board\", this host is",
        target: Target::AsItWas,
    },
    Row {
        refusal: "version not newer than the booted one",
        input: not_newer,
        kind: "not_newer",
        says: "not newer than the booted 1.0",
        target: Target::AsItWas,
    },
    Row {
        refusal: "expired manifest",
        input: expired,
        kind: "expired",
        says: "expired at 2020-02-01T00:00:00Z",
        target: Target::AsItWas,
    },
    Row {
        refusal: "manifest larger than stated (endless data)",
        input: endless_manifest,
        kind: "too_long",
        says: "more than the 1048576 bytes allowed",
        target: Target::AsItWas,
    },
    Row {
        refusal: "payload larger than stated (endless data)",
        input: endless_payload,
        kind: "too_long",
        says: "rootfs-2.0.img",
        target: Target::MarkedBad,
    },
    Row {
        refusal: "payload whose hash differs",
        input: payload_hash_differs,
        kind: "hash_mismatch",
        says: "SHA-256",
        target: Target::MarkedBad,
    },
    Row {
        refusal: "image larger than its slot",
        input: image_larger_than_its_slot,
        kind: "slot",
        says: "larger than",
        target: Target::AsItWas,
    },
    Row {
        refusal: "target device that is the booted one",
        input: target_is_the_booted_slot,
        kind: "slot",
        says: "booted slot",
        target: Target::AsItWas,
    },
    Row {
        refusal: "a second instance running",
        input: second_instance,
        kind: "locked",
        says: "another abupdate is running",
        target: Target::AsItWas,
    },
    Row {
        refusal: "release that already failed its trial here",
        input: previously_failed,
        kind: "previously_failed",
        says: "release 3.0.0 already failed its trial on this host",
        target: Target::AsItWas,
    },
];

/// Feeds one row to a fresh host and checks everything the SPEC asks of a
/// refusal; returns what went wrong, if anything.
fn check(i: usize, row: &Row) -> Result<(), String> {
    let mut h = TestHost::new(&format!("refusal-{i}"), "1.0", HostOptions::default());
    let input = (row.input)(&mut h);
    let before = h.untouched();
    let state_before = h.state();
    let out = h.abupdate(&["--json", "install", "--no-reboot", &input.source]);
    drop(input);
    let what = format!("{}: {}", row.refusal, text(&out));
    if out.status.code() != Some(1) {
        return Err(format!("exit {:?}: {what}", out.status.code()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = crate::common::host::error_lines(&stderr);
    if lines.len() != 1 || !lines[0].contains(row.says) {
        return Err(format!("want one error line saying {:?}: {what}", row.says));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("stdout not JSON ({e}): {what}"))?;
    if json["kind"] != row.kind {
        return Err(format!("kind {} (want {}): {what}", json["kind"], row.kind));
    }
    h.assert_untouched(&before, row.refusal);
    let state = h.state();
    if state["slots"]["A"] != state_before["slots"]["A"] {
        return Err(format!("the booted slot's record changed: {state}"));
    }
    if !state["transaction"].is_null() {
        return Err(format!("a transaction is left pending: {state}"));
    }
    let b_ok = h.grub_vars().get("B_OK").cloned();
    match row.target {
        Target::AsItWas => {
            if b_ok != before.env.get("B_OK").cloned()
                || state["slots"]["B"] != state_before["slots"]["B"]
            {
                return Err(format!(
                    "the target changed before its first byte: {b_ok:?}, {state}"
                ));
            }
        }
        Target::MarkedBad => {
            if b_ok.as_deref() != Some("0") || state["slots"]["B"]["status"] != "bad" {
                return Err(format!("the target is not marked bad: {b_ok:?}, {state}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_spec_refusal_is_refused_with_its_kind_and_touches_nothing() {
    let failures: Vec<String> = TABLE
        .iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let r = check(i, row);
            println!(
                "refusal | {} | {} | {}",
                row.refusal,
                row.kind,
                if r.is_ok() { "ok" } else { "FAILED" }
            );
            r.err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        TABLE.len(),
        failures.join("\n")
    );
}

/// A downgrade refused as `not_newer` is taken when the operator asks for it.
#[test]
fn allow_downgrade_lifts_the_not_newer_refusal() {
    let mut h = TestHost::new("refusal-downgrade", "1.0", HostOptions::default());
    let m = not_newer(&mut h).source.clone();
    let out = h.abupdate(&["install", "--no-reboot", &m]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = h.abupdate(&["install", "--no-reboot", "--allow-downgrade", &m]);
    assert!(out.status.success(), "{}", text(&out));
}
