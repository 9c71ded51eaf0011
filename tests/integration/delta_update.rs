//! Delta updates: only what changed crosses the wire, rebuilt against the
//! booted slot's exact bytes; a full install whenever anything does not
//! match; resumable per segment; memory-bounded. Served by a real nginx.

use crate::common::host::{run, sha, text, HostOptions, TestHost};
use crate::common::http::Nginx;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// A pseudo-random but incompressible-ish image of `len` bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// v1, and v2 = v1 with what an update does to a filesystem: a few blocks
/// rewritten, a region shifted by an insertion, some new data appended in
/// free space.
fn versions(len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut v1 = noise(7, len);
    v1[..16].copy_from_slice(b"IMAGE_VERSION=1\n");
    let mut v2 = v1.clone();
    v2[..16].copy_from_slice(b"IMAGE_VERSION=2\n");
    v2[3 * MIB..3 * MIB + 64 * 1024].copy_from_slice(&noise(11, 64 * 1024));
    let shifted: Vec<u8> = v1[9 * MIB..11 * MIB].to_vec();
    v2[9 * MIB + 3000..11 * MIB + 3000].copy_from_slice(&shifted);
    v2[len - 2 * MIB..len - 2 * MIB + 200 * 1024].copy_from_slice(&noise(13, 200 * 1024));
    (v1, v2)
}

struct Setup {
    host: TestHost,
    manifest: PathBuf,
    v2: Vec<u8>,
    booted_sha: String,
    nginx: Nginx,
}

fn setup(name: &str, len: usize, nginx_extra: &str) -> Option<Setup> {
    setup_packed(name, len, nginx_extra, &[])
}

/// `setup` with more `pack` arguments.
fn setup_packed(name: &str, len: usize, nginx_extra: &str, pack_extra: &[&str]) -> Option<Setup> {
    let host = TestHost::new(
        name,
        "1.0",
        HostOptions {
            slot_size: (len + 4 * MIB) as u64,
            loop_devices: true,
            ..Default::default()
        },
    );
    let (v1, v2) = versions(len);
    crate::common::host::write_at_start(&host.slots[0], &v1);
    let old = host.dir.join("v1.img");
    std::fs::write(&old, &v1).expect("v1");
    let delta_from = format!("rootfs={}", old.display());
    let mut args = vec![
        "--segment-size",
        "2",
        "--delta-from",
        &delta_from,
        "--delta-level",
        "9",
    ];
    args.extend_from_slice(pack_extra);
    let manifest = host.pack("r2", "2.0", &v2, &args);
    let nginx = Nginx::start_with_http(manifest.parent().expect("dir"), nginx_extra, "")?;
    let booted_sha = host.slot_sha(0);
    Some(Setup {
        host,
        manifest,
        v2,
        booted_sha,
        nginx,
    })
}

fn delta_of(manifest: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("m")).expect("json");
    let deltas = m["images"]["rootfs"]["deltas"]
        .as_object()
        .expect("deltas")
        .clone();
    assert_eq!(deltas.len(), 1);
    deltas.into_iter().next().expect("one delta").1
}

fn bytes_sent(nginx: &Nginx, suffix: &str) -> u64 {
    nginx
        .log()
        .iter()
        .filter(|l| l.uri.ends_with(suffix))
        .map(|l| l.body_bytes_sent)
        .sum()
}

/// Install the release with the abupdate binary `bin` and check that it
/// rebuilt v2 by delta: it reports, and nginx sent, exactly the segments'
/// patch bytes and no full-payload byte; slot B holds v2; the booted slot
/// is unchanged. Returns the patch bytes.
fn install_by_delta(s: &Setup, bin: &Path) -> u64 {
    let out = &run(std::process::Command::new(bin)
        .arg("--config")
        .arg(&s.host.config)
        .args(["--json", "install", "--no-reboot"])
        .arg(s.nginx.url("release.json")));
    assert!(out.status.success(), "{}", text(out));
    let delta = delta_of(&s.manifest);
    let total = patch_total(&delta);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report["network_bytes"].as_u64(),
        Some(total),
        "{}",
        text(out)
    );
    s.nginx.wait_log(3);
    assert_eq!(
        bytes_sent(&s.nginx, delta["url"].as_str().expect("url")),
        total,
        "server sent more than the segments"
    );
    assert_eq!(
        bytes_sent(&s.nginx, "rootfs-2.0.img.zst"),
        0,
        "the full payload was fetched"
    );
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2, "slot B is not v2");
    assert_eq!(s.host.slot_sha(0), s.booted_sha, "the booted slot changed");
    total
}

#[test]
fn a_delta_from_the_exact_booted_image_fetches_only_its_segments() {
    let Some(s) = setup("delta-exact", 24 * MIB, "") else {
        return;
    };
    let full = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&s.manifest).expect("m"))
        .expect("json")["images"]["rootfs"]["download_size"]
        .as_u64()
        .expect("size");
    let patch_total = install_by_delta(&s, Path::new(crate::common::host::bin()));
    assert!(
        patch_total * 5 < full,
        "delta {patch_total} is not much smaller than the full {full}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&s.host.abupdate(&["--json", "status"]).stdout).expect("status");
    println!(
        "delta: {patch_total} bytes fetched vs {full} for the full payload ({:.1}%)",
        patch_total as f64 * 100.0 / full as f64
    );
    let st = s.host.state();
    assert_eq!(
        st["metrics"]["last_install_fetched"].as_u64(),
        Some(patch_total)
    );
    assert_eq!(st["metrics"]["last_install_full"].as_u64(), Some(full));
    assert!(status["slots"]["B"]["record"]["version"] == "2.0");
    // One range a segment, all on one keep-alive connection: each range's
    // end is read, which hands the connection back for the next (before,
    // every range came on a connection of its own; over HTTPS, a
    // handshake each) (review 14).
    let ranges: Vec<_> = s
        .nginx
        .log()
        .into_iter()
        .filter(|l| l.uri.contains(".from-") && l.range.is_some())
        .collect();
    assert!(ranges.len() > 2, "{ranges:?}");
    let connections: std::collections::BTreeSet<u64> =
        ranges.iter().map(|l| l.connection).collect();
    assert_eq!(connections.len(), 1, "{ranges:?}");
}

/// A release server that redirects each of a delta's ranges to a mirror
/// (here itself, under another path) costs no connection per range: each
/// redirect's short body is read to its end, so the connection serves the
/// redirected request and the next range. Before, every redirect's
/// connection was dropped with its unread body: a new connection (over
/// HTTPS a handshake) per range (review 14's note).
#[test]
fn a_delta_redirected_range_by_range_keeps_one_connection() {
    let redirect = r#"
        location ~ "^/[^/]+\.from-" { absolute_redirect off; return 302 /mirror$uri; }
        location ^~ /mirror/ { rewrite ^/mirror/(.*)$ /$1 break; }
    "#;
    let Some(s) = setup("delta-redirected", 16 * MIB, redirect) else {
        return;
    };
    let out = &run(std::process::Command::new(crate::common::host::bin())
        .arg("--config")
        .arg(&s.host.config)
        .args(["--json", "install", "--no-reboot"])
        .arg(s.nginx.url("release.json")));
    assert!(out.status.success(), "{}", text(out));
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2, "slot B is not v2");
    s.nginx.wait_log(3);
    let delta: Vec<_> = s
        .nginx
        .log()
        .into_iter()
        .filter(|l| l.uri.contains(".from-"))
        .collect();
    let redirected = delta.iter().filter(|l| l.status == 302).count();
    let served = delta
        .iter()
        .filter(|l| l.status == 206 && l.uri.starts_with("/mirror/"))
        .count();
    assert!(redirected > 2 && redirected == served, "{delta:?}");
    let connections: std::collections::BTreeSet<u64> = delta.iter().map(|l| l.connection).collect();
    assert_eq!(connections.len(), 1, "{delta:?}");
}

/// A signed manifest whose full segment table says other digests than its
/// delta's (the delta would be checked against bytes the full payload
/// never holds) is refused as a whole, naming the first difference, with
/// nothing touched.
#[test]
fn a_delta_whose_segments_are_not_the_full_payloads_is_refused() {
    let Some(s) = setup("delta-other-table", 16 * MIB, "") else {
        return;
    };
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.manifest).expect("m")).expect("json");
    let seg = &mut m["images"]["rootfs"]["segments"][1];
    seg["sha256"] = "00".repeat(32).into();
    seg["blake3"] = "00".repeat(32).into();
    std::fs::write(&s.manifest, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    let out = s.host.abupdate(&[
        "sign",
        "--secret",
        &s.host.secret_key.display().to_string(),
        &s.manifest.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let before = s.host.untouched();
    let out = s
        .host
        .abupdate(&["install", "--no-reboot", &s.nginx.url("release.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or("");
    assert!(line.contains("images.rootfs.deltas."), "{line}");
    assert!(
        line.contains("segment 1 sha256 is") && line.contains("the full payload's is 0000"),
        "{line}"
    );
    s.host.assert_untouched(&before, "refused");
    s.host.assert_target_never_marked_bad(&before);
    assert_eq!(
        bytes_sent(&s.nginx, ".zst"),
        0,
        "a payload byte was fetched"
    );
}

#[test]
fn a_booted_slot_that_differs_from_its_record_falls_back_to_full() {
    let Some(s) = setup("delta-modified", 24 * MIB, "") else {
        return;
    };
    // The record says slot A holds v1, but someone mounted it read-write.
    let source_sha = {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&s.manifest).expect("m")).expect("json");
        m["images"]["rootfs"]["deltas"]
            .as_object()
            .expect("deltas")
            .keys()
            .next()
            .expect("key")
            .clone()
    };
    let mut state = s.host.state();
    state["slots"]["A"] = serde_json::json!({"status": "good", "version": "1.0", "images": {"rootfs": {"sha256": source_sha, "size": 24 * MIB}}});
    std::fs::write(
        s.host.state_dir.join("state.json"),
        serde_json::to_vec(&state).expect("json"),
    )
    .expect("state");
    let mut byte = s.host.slot_bytes(0, 5 * MIB);
    byte[5 * MIB - 1] ^= 0xff;
    crate::common::host::write_at_start(&s.host.slots[0], &byte);
    let modified_sha = s.host.slot_sha(0);

    let out = s
        .host
        .abupdate(&["install", "--no-reboot", &s.nginx.url("release.json")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no longer holds the bytes recorded"),
        "{}",
        text(&out)
    );
    s.nginx.wait_log(3);
    assert!(
        bytes_sent(&s.nginx, "rootfs-2.0.img.zst") > 0,
        "the full payload was not fetched"
    );
    assert_eq!(
        bytes_sent(
            &s.nginx,
            delta_of(&s.manifest)["url"].as_str().expect("url")
        ),
        0
    );
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2);
    assert_eq!(s.host.slot_sha(0), modified_sha, "the booted slot changed");
}

/// A server that ignores `Range` cannot serve a delta's segments (taking
/// each from the whole file would fetch the whole delta once per
/// segment): the delta is given up at its first segment, saying which
/// URL ignores Range, the full payload is installed in the same run, and
/// `range_ignored` counts it as a warning, not a failure.
#[test]
fn a_server_without_range_falls_back_to_full() {
    let Some(s) = setup("delta-no-range", 24 * MIB, "max_ranges 0;") else {
        return;
    };
    let out = s
        .host
        .abupdate(&["install", "--no-reboot", &s.nginx.url("release.json")]);
    assert!(out.status.success(), "{}", text(&out));
    let delta_url = s
        .nginx
        .url(delta_of(&s.manifest)["url"].as_str().expect("url"));
    assert!(
        text(&out).contains(&format!(
            "delta not used (segment 0: {delta_url}: the server ignores Range: HTTP 200 with the whole file to bytes=0-"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2);
    assert_eq!(s.host.slot_sha(0), s.booted_sha, "the booted slot changed");
    let metrics = &s.host.state()["metrics"];
    assert_eq!(metrics["range_ignored"], 1, "{metrics}");
    assert!(
        metrics["failures"].get("range_ignored").is_none(),
        "{metrics}"
    );
}

#[cfg(feature = "failpoints")]
#[test]
fn kill_9_mid_delta_then_rerun_fetches_no_finished_segment_twice() {
    use std::os::unix::process::ExitStatusExt;
    let Some(s) = setup("delta-resume", 24 * MIB, "") else {
        return;
    };
    let delta = delta_of(&s.manifest);
    let patch_total = patch_total(&delta);
    let url = s.nginx.url("release.json");
    let out = s.host.abupdate_env(
        &["install", "--no-reboot", &url],
        &[("ABUPDATE_FAILPOINT", "delta-segment-written:5")],
    );
    assert_eq!(out.status.signal(), Some(6), "{}", text(&out));
    let out = s.host.abupdate(&["install", "--no-reboot", &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("5 already done"), "{}", text(&out));
    s.nginx.wait_log(6);
    let sent = bytes_sent(&s.nginx, delta["url"].as_str().expect("url"));
    assert_eq!(
        sent, patch_total,
        "segments fetched twice: server sent {sent}, the segments total {patch_total}"
    );
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2);
    assert_eq!(s.host.slot_sha(0), s.booted_sha, "the booted slot changed");
}

/// A re-pack of the same image from the same source with other segments
/// numbers other byte ranges: a journal of the first packing must not make
/// the second skip segments (the read-back would catch it, at the price of
/// a full download).
#[cfg(feature = "failpoints")]
#[test]
fn a_journal_from_a_repack_with_other_segments_is_not_reused() {
    use std::os::unix::process::ExitStatusExt;
    let Some(s) = setup("delta-repack", 24 * MIB, "") else {
        return;
    };
    let out = s.host.abupdate_env(
        &["install", "--no-reboot", &s.nginx.url("release.json")],
        &[("ABUPDATE_FAILPOINT", "delta-segment-written:5")],
    );
    assert_eq!(out.status.signal(), Some(6), "{}", text(&out));
    // Same source, same image, 4 MiB segments instead of 2: segment 4 now
    // ends at 20 MiB, where the journal's ended at 10 MiB.
    let old = format!("rootfs={}", s.host.dir.join("v1.img").display());
    let m2 = s.host.pack(
        "r2b",
        "2.0",
        &s.v2,
        &[
            "--segment-size",
            "4",
            "--delta-from",
            &old,
            "--delta-level",
            "9",
        ],
    );
    let Some(nginx) = Nginx::start_with_http(m2.parent().expect("dir"), "", "") else {
        return;
    };
    let out = s.host.abupdate(&[
        "--json",
        "install",
        "--no-reboot",
        &nginx.url("release.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("installing the full image"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("0 already done"), "{}", text(&out));
    nginx.wait_log(3);
    assert_eq!(bytes_sent(&nginx, "rootfs-2.0.img.zst"), 0);
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2);
    assert_eq!(s.host.slot_sha(0), s.booted_sha, "the booted slot changed");
}

/// Delta bytes fetched before the delta is given up crossed the network:
/// they count in the install's `network_bytes` and in `downloaded_bytes`.
/// The segments the delta wrote before it gave up are kept: the full
/// payload is fetched from the first frame after them.
#[test]
fn delta_bytes_fetched_before_a_fallback_count_as_downloaded() {
    let Some(s) = setup("delta-counted", 24 * MIB, "") else {
        return;
    };
    let delta = delta_of(&s.manifest);
    let segs = delta["segments"].as_array().expect("segments");
    let k = 3;
    let field = |i: usize, f: &str| segs[i][f].as_u64().expect("number");
    // The last byte of segment k's patch damaged on the server.
    let payload = s
        .manifest
        .with_file_name(delta["url"].as_str().expect("url"));
    let mut data = std::fs::read(&payload).expect("delta payload");
    let last = (field(k, "patch_offset") + field(k, "patch_length") - 1) as usize;
    data[last] ^= 0x55;
    std::fs::write(&payload, data).expect("write");
    let rootfs =
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&s.manifest).expect("m"))
            .expect("json")["images"]["rootfs"]
            .clone();
    let full = rootfs["download_size"].as_u64().expect("size");
    // The delta wrote and verified the segments before k: the full payload
    // resumes after them, from its frame k.
    let full_from_k = full
        - rootfs["segments"][k]["patch_offset"]
            .as_u64()
            .expect("offset");
    let given_up: u64 = (0..=k).map(|i| field(i, "patch_length")).sum();
    let out = s.host.abupdate(&[
        "--json",
        "install",
        "--no-reboot",
        &s.nginx.url("release.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("delta not used"), "{}", text(&out));
    // The damaged frame was refused by its signed BLAKE3 before decoding.
    assert!(
        text(&out).contains(&format!(
            "segment {k}: its frame (delta bytes {}..{}) has BLAKE3",
            field(k, "patch_offset"),
            field(k, "patch_offset") + field(k, "patch_length")
        )) && text(&out).contains("not decoded"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("holds the first {k} segments")),
        "{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report["network_bytes"].as_u64(),
        Some(full_from_k + given_up)
    );
    let st = s.host.state();
    assert_eq!(
        st["metrics"]["downloaded_bytes"].as_u64(),
        Some(full_from_k + given_up),
        "{}",
        st["metrics"]
    );
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2);
}

fn patch_total(delta: &serde_json::Value) -> u64 {
    delta["segments"]
        .as_array()
        .expect("segs")
        .iter()
        .map(|g| g["patch_length"].as_u64().expect("len"))
        .sum()
}

/// The 32-bit host build (i686, static musl, no `pack`); a no-op build when
/// `scripts/test.sh` made it already.
fn bin32() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir");
        let out = run(std::process::Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--release", "--quiet", "--no-default-features"])
            .args(["--target", "i686-unknown-linux-musl"])
            .arg("--target-dir")
            .arg(target_dir));
        assert!(
            out.status.success(),
            "cannot build the 32-bit host binary (scripts/deps.sh installs the i686 target and gcc-multilib): {}",
            text(&out)
        );
        let bin = target_dir.join("i686-unknown-linux-musl/release/abupdate");
        let elf = std::fs::read(&bin).expect("32-bit binary");
        assert_eq!(&elf[..5], b"\x7fELF\x01", "not a 32-bit ELF: {}", bin.display());
        bin
    })
}

fn run32(host: &TestHost, args: &[&str]) -> std::process::Output {
    run(std::process::Command::new(bin32())
        .arg("--config")
        .arg(&host.config)
        .args(args))
}

#[test]
fn a_source_wider_than_the_window_is_split_into_regions_and_still_applies() {
    // 24 MiB source, 2 MiB segments, a 2^23-byte window: each segment
    // references the 6 MiB of the old image around its own offset.
    let Some(s) = setup_packed("delta-regions", 24 * MIB, "", &["--delta-window-log", "23"]) else {
        return;
    };
    let delta = delta_of(&s.manifest);
    assert_eq!(delta["window_log"], 23);
    for g in delta["segments"].as_array().expect("segs") {
        let (src_off, src_len) = (
            g["source"]["offset"].as_u64().expect("source region"),
            g["source"]["length"].as_u64().expect("source region"),
        );
        let (off, len) = (
            g["offset"].as_u64().expect("o"),
            g["length"].as_u64().expect("l"),
        );
        assert_eq!(src_len, 6 * MIB as u64, "{g}");
        assert!(src_off + src_len <= 24 * MIB as u64, "{g}");
        assert!(
            src_off <= off && off + len <= src_off + src_len,
            "segment outside its region: {g}"
        );
    }
    let total = install_by_delta(&s, Path::new(crate::common::host::bin()));
    println!("delta in 6 MiB source regions: {total} bytes");
}

#[test]
fn a_32_bit_host_applies_a_delta_packed_for_its_window() {
    let Some(s) = setup_packed("delta-32bit", 24 * MIB, "", &["--delta-window-log", "23"]) else {
        return;
    };
    install_by_delta(&s, bin32());
}

#[test]
fn a_32_bit_host_installs_the_full_image_when_a_delta_needs_a_2_gib_window() {
    let Some(s) = setup("delta-32bit-wide", 24 * MIB, "") else {
        return;
    };
    // A release whose delta declares a 2^31-byte window (valid: the window
    // covers more than the source), signed like any other.
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.manifest).expect("m")).expect("json");
    for d in m["images"]["rootfs"]["deltas"]
        .as_object_mut()
        .expect("deltas")
        .values_mut()
    {
        d["window_log"] = 31.into();
    }
    std::fs::write(&s.manifest, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    let out = s.host.abupdate(&[
        "sign",
        "--secret",
        &s.host.secret_key.display().to_string(),
        &s.manifest.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let out = run32(
        &s.host,
        &["install", "--no-reboot", &s.nginx.url("release.json")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("need a 2^31-byte zstd window; this host decodes at most 2^30"),
        "{}",
        text(&out)
    );
    s.nginx.wait_log(3);
    assert!(bytes_sent(&s.nginx, "rootfs-2.0.img.zst") > 0);
    assert_eq!(
        bytes_sent(
            &s.nginx,
            delta_of(&s.manifest)["url"].as_str().expect("url")
        ),
        0
    );
    assert_eq!(&s.host.slot_bytes(1, s.v2.len()), &s.v2);
    assert_eq!(s.host.slot_sha(0), s.booted_sha);
}

/// Run `cmd` inside a fresh cgroup-v1 memory cgroup limited to `limit`;
/// `None` when this machine has no writable memory controller.
fn in_memory_cgroup(
    limit: u64,
    args: &[&str],
    host: &TestHost,
) -> Option<(std::process::Output, u64)> {
    let cg = PathBuf::from(format!(
        "/sys/fs/cgroup/memory/abupdate-delta-{}",
        std::process::id()
    ));
    if std::fs::create_dir(&cg).is_err() {
        eprintln!("SKIP cgroup part: no writable cgroup v1 memory controller");
        return None;
    }
    std::fs::write(cg.join("memory.limit_in_bytes"), limit.to_string()).expect("limit");
    let _ = std::fs::write(cg.join("memory.memsw.limit_in_bytes"), limit.to_string());
    let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.display());
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(crate::common::host::bin())
        .arg("--config")
        .arg(&host.config)
        .args(args);
    let out = run(&mut c);
    let peak = std::fs::read_to_string(cg.join("memory.max_usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_dir(&cg);
    Some((out, peak))
}

#[test]
fn a_delta_applies_inside_a_128_mib_memory_cgroup() {
    // The booted image is larger than the limit: the mapped source must
    // stay reclaimable page cache, and anonymous memory small.
    let Some(s) = setup("delta-cgroup", 136 * MIB, "") else {
        return;
    };
    let Some((out, peak)) = in_memory_cgroup(
        128 << 20,
        &["install", "--no-reboot", &s.nginx.url("release.json")],
        &s.host,
    ) else {
        return;
    };
    assert!(
        out.status.success(),
        "apply failed inside 128 MiB: {}",
        text(&out)
    );
    assert!(text(&out).contains("by delta"), "{}", text(&out));
    assert_eq!(sha(&s.host.slot_bytes(1, s.v2.len())), sha(&s.v2));
    println!("delta of a 136 MiB image applied in a 128 MiB cgroup; peak usage {} MiB (page cache included)", peak >> 20);
}

#[test]
fn mkimage_builds_byte_identical_images_of_one_tree() {
    let dir = crate::common::host::scratch("mkimage");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
    std::fs::create_dir_all(tree.join("usr/bin")).expect("mkdir");
    std::fs::write(tree.join("etc/os-release"), "IMAGE_VERSION=1.0\n").expect("write");
    for bin in ["/bin/ls", "/bin/cat", "/bin/sh"] {
        let name = Path::new(bin).file_name().expect("name");
        std::fs::copy(bin, tree.join("usr/bin").join(name)).expect("copy");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mkimage.sh");
    let mut images = Vec::new();
    for name in ["a.img", "b.img"] {
        let img = dir.join(name);
        let out = run(std::process::Command::new(&script)
            .arg(&tree)
            .arg(&img)
            .arg("16"));
        assert!(out.status.success(), "{}", text(&out));
        images.push(std::fs::read(&img).expect("image"));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(images[0].len(), 16 * MIB);
    assert!(images[0] == images[1], "two builds of one tree differ");
    let out = run(std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(dir.join("a.img")));
    assert!(out.status.success(), "e2fsck: {}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
