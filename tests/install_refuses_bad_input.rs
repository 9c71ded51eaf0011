//! Every bad input of the install contract gets a one-line error naming the
//! thing, exit 1, and leaves the booted slot, its bytes and the boot order
//! untouched. A payload found bad mid-stream leaves the target marked bad.

mod common;

use common::host::{image, text, HostOptions, TestHost, Untouched};

/// Exit 1, one line on stderr containing `needle`, nothing flipped.
fn assert_refused(host: &TestHost, b: &Untouched, out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code; output: {}",
        text(out)
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("abupdate: ") && !l.contains("writing"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "error {:?} does not mention {needle:?}",
        lines[0]
    );
    host.assert_untouched(b, needle);
    assert_eq!(host.reboots(), 0, "a reboot was requested");
}

fn install(host: &TestHost, manifest: &std::path::Path) -> std::process::Output {
    host.abupdate(&[
        "install",
        "--no-reboot",
        manifest.to_str().expect("utf8 path"),
    ])
}

fn host(name: &str) -> TestHost {
    TestHost::new(name, "1.0", HostOptions::default())
}

#[test]
fn tampered_manifest_byte() {
    let h = host("tampered-manifest");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let b = h.untouched();
    let mut text_ = std::fs::read_to_string(&m).expect("manifest");
    text_ = text_.replacen("\"2.0\"", "\"2.1\"", 1);
    std::fs::write(&m, text_).expect("write");
    assert_refused(&h, &b, &install(&h, &m), "signature");
}

#[test]
fn tampered_payload_byte_leaves_target_marked_bad() {
    let h = host("tampered-payload");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--no-compress"]);
    let payload = m.with_file_name("rootfs-2.0.img");
    let mut data = std::fs::read(&payload).expect("payload");
    data[700_000] ^= 0x40;
    std::fs::write(&payload, data).expect("write");
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "SHA-256");
    assert_eq!(
        h.grub_vars().get("B_OK").map(String::as_str),
        Some("0"),
        "target not marked bad"
    );
    assert_eq!(h.state()["slots"]["B"]["status"], "bad");
    assert!(
        h.state()["transaction"].is_null(),
        "a transaction is left pending"
    );
}

#[test]
fn signature_by_untrusted_key() {
    let h = host("untrusted");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let other_sk = h.dir.join("other.key");
    let other_pk = h.dir.join("other.pub");
    let out = h.abupdate(&[
        "keygen",
        "--secret",
        other_sk.to_str().expect("p"),
        "--public",
        other_pk.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = h.abupdate(&[
        "sign",
        "--secret",
        other_sk.to_str().expect("p"),
        m.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "untrusted key");
}

#[test]
fn truncated_minisig() {
    let h = host("truncated-sig");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let sig = m.with_file_name("release.json.minisig");
    let data = std::fs::read(&sig).expect("sig");
    std::fs::write(&sig, &data[..data.len() / 2]).expect("write");
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "release.json.minisig");
}

#[test]
fn wrong_compatible() {
    let h = host("compatible");
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 20),
        &["--compatible", "someone-elses-board"],
    );
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "someone-elses-board");
}

#[test]
fn older_or_equal_version() {
    let h = host("older");
    let b = h.untouched();
    let m = h.pack("r09", "0.9", &image("0.9", 1 << 20), &[]);
    assert_refused(&h, &b, &install(&h, &m), "not newer");
    let m = h.pack("r10", "1.0", &image("1.0", 1 << 20), &[]);
    assert_refused(&h, &b, &install(&h, &m), "not newer");
    // A manual downgrade is allowed when asked for.
    let m = h.pack("r09b", "0.9", &image("0.9", 1 << 20), &[]);
    let out = h.abupdate(&[
        "install",
        "--no-reboot",
        "--allow-downgrade",
        m.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn expired_manifest() {
    let h = host("expired");
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 20),
        &[
            "--created",
            "2020-01-01T00:00:00Z",
            "--expires",
            "2020-02-01T00:00:00Z",
        ],
    );
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "expired");
}

#[test]
fn manifest_of_100_mib() {
    let h = host("huge-manifest");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let mut body = std::fs::read(&m).expect("manifest");
    body.truncate(body.len() - 2);
    body.extend(std::iter::repeat_n(b' ', 100 << 20));
    body.extend_from_slice(b"}\n");
    std::fs::write(&m, &body).expect("write");
    let out = h.abupdate(&[
        "sign",
        "--secret",
        h.secret_key.to_str().expect("p"),
        m.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "release.json");
}

#[test]
fn payload_longer_than_declared() {
    let h = host("long-payload");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let payload = m.with_file_name("rootfs-2.0.img.zst");
    let mut data = std::fs::read(&payload).expect("payload");
    data.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(&payload, data).expect("write");
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "rootfs-2.0.img.zst");
}

#[test]
fn image_larger_than_its_slot() {
    let h = host("too-big");
    let m = h.pack("r2", "2.0", &image("2.0", 12 << 20), &[]);
    let b = h.untouched();
    let out = install(&h, &m);
    assert_refused(&h, &b, &out, "larger than");
    // Refused before any write: the target was never marked bad.
    assert_eq!(h.grub_vars().get("B_OK"), b.env.get("B_OK"));
}

#[test]
fn target_that_is_the_booted_device() {
    let h = host("booted-target");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let a = h.slots[0].display().to_string();
    let b_path = h.slots[1].display().to_string();
    std::fs::write(
        &h.config,
        cfg.replace(
            &format!("rootfs = \"{b_path}\""),
            &format!("rootfs = \"{a}\""),
        ),
    )
    .expect("write");
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "booted slot");
}

#[test]
fn second_instance() {
    let h = host("second-instance");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let lock = h.state_dir.join("lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock");
    // Wait until the lock is really held.
    for _ in 0..100 {
        let probe = std::process::Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .expect("flock -n");
        if !probe.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let b = h.untouched();
    let out = install(&h, &m);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_refused(&h, &b, &out, "another abupdate is running");
}

#[test]
fn missing_signature_file() {
    let h = host("no-sig");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    std::fs::remove_file(m.with_file_name("release.json.minisig")).expect("rm");
    let b = h.untouched();
    assert_refused(&h, &b, &install(&h, &m), "minisig");
}

#[test]
fn mirror_that_is_not_an_http_url_is_a_config_error() {
    let h = host("mirror-config");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    for mirror in ["site-cache:8080", "http://cache/?tenant=a"] {
        std::fs::write(
            &h.config,
            cfg.replacen(
                "[update]\n",
                &format!("[update]\nmirror = \"{mirror}\"\n"),
                1,
            ),
        )
        .expect("config");
        let b = h.untouched();
        let out = h.abupdate(&["check", m.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(2), "{mirror}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("update.mirror") && stderr.contains(mirror),
            "{stderr}"
        );
        h.assert_untouched(&b, mirror);
    }
}
