//! Releases published to an S3-compatible bucket and installed from it,
//! against a real S3 implementation (the moto server), published with
//! Debian's awscli as the README says (`aws s3 sync`, the manifest last):
//! path-style and virtual-host URLs, the idle tick as ONE conditional GET
//! answered 304 (counted in the server's request log), `Range` for a
//! resumed download and for deltas, presigned URLs from a private bucket
//! (the signature's own URL from `[update] signature_url`, payloads by
//! absolute presigned URLs in the signed manifest), and HTTPS with a
//! private CA (`[update] ca_file`). Hosts only GET: no credentials.

use crate::common::s3;
use crate::common::tls;

use crate::common::host::{image, run, text, HostOptions, TestHost};
use crate::common::s3::{Request, S3};
use std::path::Path;

/// Point the host at `url`, with more `[update]` keys.
fn configure(h: &TestHost, url: &str, extra: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace("[update]\n", &format!("[update]\nurl = \"{url}\"\n{extra}"));
    std::fs::write(&h.config, cfg).expect("config");
}

/// Boot the staged slot B and let health commit it.
fn reboot_and_commit(h: &mut TestHost) {
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
}

fn get(target: &str, status: u16) -> Request {
    Request {
        method: "GET".into(),
        target: target.into(),
        status,
    }
}

/// A pseudo-random image (incompressible, so its payload has many chunks)
/// whose first line names its version.
fn noise(version: &str, len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ version.len() as u64;
    let mut v = format!("IMAGE_VERSION={version}\n").into_bytes();
    v.extend((v.len()..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    v
}

#[test]
fn a_release_installs_from_a_path_style_bucket_url_and_the_idle_tick_is_one_304() {
    let mut h = TestHost::new("s3-path", "1.0", HostOptions::default());
    let img = image("2.0", 1 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let s3 = S3::start(&h.dir);
    s3.make_bucket("edge", true);
    s3.publish(m.parent().expect("dir"), "s3://edge/stable");
    configure(&h, &format!("{}/edge/stable/release.json", s3.endpoint), "");

    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, img.len()), img);
    reboot_and_commit(&mut h);

    // The first tick on the committed release fetches and verifies it (not
    // newer: nothing to do) and keeps its ETag...
    let before = s3.requests().len();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        s3.gets_since(before),
        [
            get("/edge/stable/release.json", 200),
            get("/edge/stable/release.json.minisig", 200)
        ]
    );
    // ...so every idle tick after it is one conditional GET answered 304.
    for _ in 0..2 {
        let before = s3.requests().len();
        let out = h.abupdate(&["update", "--now", "--no-reboot"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            s3.requests()[before..],
            [get("/edge/stable/release.json", 304)],
            "an idle tick is one request answered 304"
        );
    }
    assert_eq!(h.reboots(), 0);
}

#[test]
fn a_virtual_host_bucket_url_resolves_the_bucket_from_the_host_name() {
    let mut h = TestHost::new("s3-vhost", "1.0", HostOptions::default());
    let img = image("2.0", 1 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let s3 = S3::start(&h.dir);
    s3.make_bucket("edge", true);
    s3.publish(m.parent().expect("dir"), "s3://edge/stable");
    let name = "edge.s3.abupdate.test";
    // The name resolves only inside the test's own mount namespace.
    assert!(
        std::net::ToSocketAddrs::to_socket_addrs(&(name, s3.port)).is_err(),
        "{name} resolves on this machine"
    );
    configure(
        &h,
        &format!("http://{name}:{}/stable/release.json", s3.port),
        "",
    );
    let before = s3.requests().len();
    let argv = [
        crate::common::host::bin().as_ref(),
        "--config".as_ref(),
        h.config.as_os_str(),
        "update".as_ref(),
        "--now".as_ref(),
        "--no-reboot".as_ref(),
    ];
    let out = run(&mut s3::with_hosts(&h.dir, &[name], &argv));
    assert!(out.status.success(), "{}", text(&out));
    // No bucket in the paths: moto took it from the Host header.
    assert_eq!(
        s3.gets_since(before),
        [
            get("/stable/release.json", 200),
            get("/stable/release.json.minisig", 200),
            get("/stable/rootfs-2.0.img.zst", 200),
        ]
    );
    assert_eq!(h.slot_bytes(1, img.len()), img);
    reboot_and_commit(&mut h);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_download_cut_mid_payload_resumes_from_s3_with_a_range_request() {
    use std::os::unix::process::ExitStatusExt;
    let h = TestHost::new(
        "s3-resume",
        "1.0",
        HostOptions {
            slot_size: 12 << 20,
            ..Default::default()
        },
    );
    let img = noise("2.0", 8 << 20);
    // One frame: its writer cuts at a chunk (`chunk-written`), while the
    // segmented writer may hold the whole download before its first segment lands.
    let m = h.pack("r2", "2.0", &img, &["--one-frame"]);
    let s3 = S3::start(&h.dir);
    s3.make_bucket("edge", true);
    s3.publish(m.parent().expect("dir"), "s3://edge/stable");
    configure(&h, &format!("{}/edge/stable/release.json", s3.endpoint), "");
    let out = h.abupdate_env(
        &["update", "--now", "--no-reboot"],
        &[("ABUPDATE_FAILPOINT", "chunk-written:3")],
    );
    assert_eq!(out.status.signal(), Some(6), "not cut: {}", text(&out));
    let payload = m.with_file_name("rootfs-2.0.img.zst");
    let size = std::fs::metadata(&payload).expect("payload").len();
    let kept: u64 = std::fs::read_dir(h.state_dir.join("partial"))
        .expect("partial dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(kept > 0 && kept < size, "kept {kept} of {size}");

    let before = s3.requests().len();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    let payload_gets: Vec<Request> = s3
        .gets_since(before)
        .into_iter()
        .filter(|r| r.target.ends_with(".img.zst"))
        .collect();
    assert_eq!(
        payload_gets,
        [get("/edge/stable/rootfs-2.0.img.zst", 206)],
        "the resume asks S3 for the missing bytes only"
    );
    assert_eq!(h.slot_bytes(1, img.len()), img);
}

#[test]
fn a_delta_is_fetched_from_s3_by_range_requests_only() {
    let mut h = TestHost::new(
        "s3-delta",
        "1.0",
        HostOptions {
            slot_size: 8 << 20,
            loop_devices: true,
            ..Default::default()
        },
    );
    let v1 = noise("1.0", 4 << 20);
    let mut v2 = v1.clone();
    v2[..18].copy_from_slice(b"IMAGE_VERSION=2.0\n");
    v2[2 << 20..(2 << 20) + 4096].fill(7);
    crate::common::host::write_at_start(&h.slots[0], &v1);
    let old = h.dir.join("v1.img");
    std::fs::write(&old, &v1).expect("v1");
    let from = format!("rootfs={}", old.display());
    let m = h.pack(
        "r2",
        "2.0",
        &v2,
        &["--segment-size", "1", "--delta-from", &from],
    );
    let s3 = S3::start(&h.dir);
    s3.make_bucket("edge", true);
    s3.publish(m.parent().expect("dir"), "s3://edge/stable");
    configure(&h, &format!("{}/edge/stable/release.json", s3.endpoint), "");
    let before = s3.requests().len();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    let payload_gets: Vec<Request> = s3
        .gets_since(before)
        .into_iter()
        .filter(|r| !r.target.contains("release.json"))
        .collect();
    assert_eq!(
        payload_gets.len(),
        4,
        "one Range request per segment: {payload_gets:?}"
    );
    for r in &payload_gets {
        assert!(
            r.target.starts_with("/edge/stable/rootfs-2.0.from-") && r.status == 206,
            "not a ranged delta GET: {r:?}"
        );
    }
    assert_eq!(h.slot_bytes(1, v2.len()), v2);
    assert_eq!(h.boot(), "B");
    assert!(h.abupdate(&["health"]).status.success());
}

/// Rewrite the manifest's payload URL and sign it again, as an operator
/// serving payloads by presigned URLs does (`jq` + `abupdate sign`); the
/// signatures bound to the old bytes go.
fn point_payload_at(h: &TestHost, manifest: &Path, url: &str) {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("json");
    doc["images"]["rootfs"]["url"] = url.into();
    std::fs::write(
        manifest,
        serde_json::to_vec_pretty(&doc).expect("serialize"),
    )
    .expect("manifest");
    for sig in crate::common::host::signature_files(manifest) {
        std::fs::remove_file(sig).expect("rm signature");
    }
    let out = run(std::process::Command::new(crate::common::host::bin())
        .arg("sign")
        .arg("--secret")
        .arg(&h.secret_key)
        .arg(manifest));
    assert!(out.status.success(), "sign: {}", text(&out));
}

/// The `X-Amz-Signature` of a URL or request target.
fn amz_signature(url: &str) -> &str {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix("X-Amz-Signature="))
        .unwrap_or_else(|| panic!("no X-Amz-Signature in {url}"))
}

#[test]
fn presigned_urls_install_from_a_private_bucket_each_object_with_its_own_signature() {
    let mut h = TestHost::new("s3-presigned", "1.0", HostOptions::default());
    let img = image("2.0", 1 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let s3 = S3::start(&h.dir);
    s3.make_bucket("private", false);
    let prefix = "s3://private/edge/stable";
    // Presigning needs no object: the payload's URL goes into the manifest
    // before it is signed and published.
    let payload_url = s3.presign(&format!("{prefix}/rootfs-2.0.img.zst"), 3600);
    point_payload_at(&h, &m, &payload_url);
    s3.publish(m.parent().expect("dir"), prefix);
    let manifest_url = s3.presign(&format!("{prefix}/release.json"), 3600);
    let signature_url = s3.presign(&format!("{prefix}/release.json.minisig"), 3600);

    // Unsigned requests are refused: the bucket is private, and the error
    // names the URL.
    let plain = format!("{}/private/edge/stable/release.json", s3.endpoint);
    let before = h.untouched();
    let out = h.abupdate(&["check", &plain]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{plain}: HTTP 403")),
        "{}",
        text(&out)
    );
    h.assert_untouched(&before, "a private bucket's 403");

    configure(
        &h,
        &manifest_url,
        &format!("signature_url = \"{signature_url}\"\n"),
    );
    // A presigned URL's signature lets anyone fetch the object: it is
    // shown as *** like user info.
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
    let source = check["source"].as_str().unwrap_or_default();
    assert!(
        source.contains("X-Amz-Signature=***")
            && !source.contains(amz_signature(&manifest_url))
            && source.contains("X-Amz-Expires=3600"),
        "{check}"
    );
    let before = s3.requests().len();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    let gets = s3.gets_since(before);
    let paths: Vec<(&str, u16)> = gets
        .iter()
        .map(|r| (r.target.split('?').next().unwrap_or(""), r.status))
        .collect();
    assert_eq!(
        paths,
        [
            ("/private/edge/stable/release.json", 200),
            ("/private/edge/stable/release.json.minisig", 200),
            ("/private/edge/stable/rootfs-2.0.img.zst", 200),
        ]
    );
    // Each object was asked for with its own presigned signature (the
    // manifest's query is not the signature file's).
    for (request, url) in gets
        .iter()
        .zip([&manifest_url, &signature_url, &payload_url])
    {
        assert_eq!(
            amz_signature(&request.target),
            amz_signature(url),
            "{request:?}"
        );
    }
    assert_eq!(h.slot_bytes(1, img.len()), img);
    reboot_and_commit(&mut h);
}

#[test]
fn https_with_a_private_ca_installs_only_when_the_ca_file_is_configured() {
    let mut h = TestHost::new("s3-tls", "1.0", HostOptions::default());
    let img = image("2.0", 1 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let pki = h.dir.join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let ca = tls::make_pki(&pki).expect("openssl makes a test CA");
    let s3 = S3::start_tls(&h.dir, &pki.join("leaf.pem"), &pki.join("leaf.key"), &ca);
    s3.make_bucket("edge", true);
    s3.publish(m.parent().expect("dir"), "s3://edge/stable");
    let url = format!("{}/edge/stable/release.json", s3.endpoint);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Without the CA, the server is not trusted: a TLS error naming the
    // URL, nothing changed.
    configure(&h, &url, "");
    let before = h.untouched();
    let out = h.abupdate(&["--json", "update", "--now", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(err["kind"], "tls", "{err}");
    assert!(
        err["error"].as_str().is_some_and(|e| e.starts_with(&url)),
        "{err}"
    );
    h.assert_untouched(&before, "an untrusted server");

    std::fs::write(
        &h.config,
        std::fs::read_to_string(&h.config).expect("config").replace(
            "[update]\n",
            &format!("[update]\nca_file = \"{}\"\n", ca.display()),
        ),
    )
    .expect("config");
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, img.len()), img);
    reboot_and_commit(&mut h);
}
