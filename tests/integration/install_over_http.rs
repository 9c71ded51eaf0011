//! Installs over HTTP from a real nginx into loop-device slots: a 256 MiB
//! image, a download cut by a kill -9 and resumed with `Range` (only the
//! missing bytes cross the wire: from the partial download for one frame,
//! from the segments the slot holds for a segmented payload), and remote
//! manifests that try to make the host read local files or accept short
//! payloads.

use crate::common::host::{image, text, HostOptions, TestHost};
use crate::common::http::Nginx;

#[cfg(feature = "failpoints")]
fn payload_requests(nginx: &Nginx, name: &str) -> Vec<crate::common::http::LogLine> {
    nginx
        .log()
        .into_iter()
        .filter(|l| l.uri.ends_with(name))
        .collect()
}

/// Start an install of `url` and abort it, as kill -9 would, at failpoint
/// `point` (mid-image).
#[cfg(feature = "failpoints")]
fn install_killed_mid_image(h: &TestHost, url: &str, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = h.abupdate_env(
        &["install", "--no-reboot", url],
        &[("ABUPDATE_FAILPOINT", point)],
    );
    assert_eq!(
        out.status.signal(),
        Some(6),
        "did not abort: {}",
        text(&out)
    );
}

/// Bytes of downloads kept in `state_dir/partial` (0 without any): the
/// `.part` files, not the validators kept next to them.
#[cfg(feature = "failpoints")]
fn kept_download_bytes(h: &TestHost) -> u64 {
    std::fs::read_dir(h.state_dir.join("partial"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// One zstd frame (releases before segments), killed after 20 pipeline
/// chunks (10 MiB) of the image were written.
#[cfg(feature = "failpoints")]
#[test]
fn a_256_mib_image_over_http_into_a_loop_device_resumes_after_kill_9() {
    resumes_after_kill_9("http-256", &["--one-frame"], "chunk-written:20");
}

/// A 256 MiB release served by nginx, and an install of it into loop
/// devices aborted at failpoint `point` (kill -9 mid-image).
#[cfg(feature = "failpoints")]
struct Killed {
    h: TestHost,
    img: Vec<u8>,
    manifest: serde_json::Value,
    nginx: Nginx,
    url: String,
    payload_size: u64,
}

#[cfg(feature = "failpoints")]
const PAYLOAD_NAME: &str = "rootfs-2.0.img.zst";

#[cfg(feature = "failpoints")]
impl Killed {
    /// Run the install again: it succeeds with two requests for the
    /// payload in all, the first (cut) one without a range. Returns the
    /// run's output and the requests.
    fn resume(&self) -> (std::process::Output, Vec<crate::common::http::LogLine>) {
        let out = self.h.abupdate(&["install", "--no-reboot", &self.url]);
        assert!(out.status.success(), "resume failed: {}", text(&out));
        self.nginx.wait_log(4);
        let reqs = payload_requests(&self.nginx, PAYLOAD_NAME);
        assert_eq!(reqs.len(), 2, "{reqs:?}");
        assert_eq!(reqs[0].range, None);
        (out, reqs)
    }

    /// Slot B holds the image and boots next.
    fn assert_staged(&self) {
        assert_eq!(
            self.h.slot_bytes(1, self.img.len()),
            self.img,
            "slot B does not hold the image"
        );
        assert_eq!(
            self.h.grub_vars().get("ORDER").map(String::as_str),
            Some("B A")
        );
    }
}

#[cfg(feature = "failpoints")]
fn killed_mid_image(name: &str, pack: &[&str], point: &str) -> Option<Killed> {
    let h = TestHost::new(
        name,
        "1.0",
        HostOptions {
            slot_size: 272 << 20,
            loop_devices: true,
            ..Default::default()
        },
    );
    let img = image("2.0", 256 << 20);
    let m = h.pack("r2", "2.0", &img, pack);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("json");
    let nginx = Nginx::start(m.parent().expect("dir"), "")?;
    let url = nginx.url("release.json");
    let payload_size = std::fs::metadata(m.with_file_name(PAYLOAD_NAME))
        .expect("payload")
        .len();
    install_killed_mid_image(&h, &url, point);
    Some(Killed {
        h,
        img,
        manifest,
        nginx,
        url,
        payload_size,
    })
}

/// The default segmented payload, its segments decoded by parallel
/// workers, killed after the twelfth segment (of 4 MiB) counted as written.
/// The workers finish in any order, so what the slot holds as a prefix is
/// fewer: a worker descheduled on segment 0 (a loaded CI machine) while
/// the others wrote five left none at all, and the run resumed at byte 0.
/// Nothing of the payload was kept on the data partition: the second run
/// reads back the segments the slot holds and fetches only the frames
/// after them, with one `Range` request from a frame's first byte.
#[cfg(feature = "failpoints")]
#[test]
fn a_cut_download_of_a_segmented_payload_resumes_from_the_segments_in_the_slot() {
    let Some(k) = killed_mid_image("http-256-segments", &[], "segment-written:12") else {
        return;
    };
    let payload_size = k.payload_size;
    let frame_starts: Vec<u64> = k.manifest["images"]["rootfs"]["segments"]
        .as_array()
        .expect("segmented by default")
        .iter()
        .map(|s| s["patch_offset"].as_u64().expect("patch_offset"))
        .collect();
    assert_eq!(
        kept_download_bytes(&k.h),
        0,
        "payload bytes were kept on the data partition"
    );

    let (out, reqs) = k.resume();
    let start: u64 = reqs[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the second run did not resume: {reqs:?}"));
    let held = frame_starts
        .iter()
        .position(|&f| f == start)
        .unwrap_or_else(|| panic!("resumed at {start}, not at a frame's first byte"));
    assert!(held >= 1, "resumed at the first frame: {reqs:?}");
    assert!(
        text(&out).contains(&format!("holds the first {held} segments")),
        "{}",
        text(&out)
    );
    assert_eq!(
        reqs[1].body_bytes_sent,
        payload_size - start,
        "resumed request fetched more than the missing frames"
    );
    println!(
        "payload {payload_size} bytes: the slot held {held} segments, resume fetched {} (server sent {} in the cut request)",
        reqs[1].body_bytes_sent, reqs[0].body_bytes_sent
    );
    k.assert_staged();
}

#[cfg(feature = "failpoints")]
fn resumes_after_kill_9(name: &str, pack: &[&str], point: &str) {
    let Some(k) = killed_mid_image(name, pack, point) else {
        return;
    };
    let payload_size = k.payload_size;
    assert_eq!(
        k.manifest["images"]["rootfs"]["segments"].is_array(),
        pack.is_empty(),
        "{name}: segmented by default, one frame when asked"
    );
    let partial = kept_download_bytes(&k.h);
    assert!(
        partial > 0 && partial < payload_size,
        "partial {partial} of {payload_size}"
    );

    let (_, reqs) = k.resume();
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={partial}-").as_str()),
        "{reqs:?}"
    );
    assert_eq!(
        reqs[1].body_bytes_sent,
        payload_size - partial,
        "resumed request fetched more than the missing bytes"
    );
    println!(
        "payload {payload_size} bytes: first run kept {partial}, resume fetched {} (server sent {} in the cut request)",
        reqs[1].body_bytes_sent, reqs[0].body_bytes_sent
    );
    k.assert_staged();
    assert!(
        std::fs::read_dir(k.h.state_dir.join("partial"))
            .expect("dir")
            .next()
            .is_none(),
        "partial left behind"
    );
}

#[test]
fn install_over_http_into_a_loop_device() {
    let h = TestHost::new(
        "http-plain",
        "1.0",
        HostOptions {
            slot_size: 16 << 20,
            loop_devices: true,
            ..Default::default()
        },
    );
    let img = image("2.0", 12 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let out = h.abupdate(&[
        "--json",
        "install",
        "--no-reboot",
        &nginx.url("release.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["installed"], "2.0");
    assert_eq!(h.slot_bytes(1, img.len()), img);
}

/// Free space in the image (a 4 MiB segment signed as all zeros) is zeroed
/// by the loop device itself (`BLKZEROOUT`), not decoded and sent: the old
/// bytes under it are gone, and every other byte is the image's.
#[test]
fn a_zero_segment_replaces_the_old_bytes_of_a_loop_device() {
    let h = TestHost::new(
        "zero-segment-loop",
        "1.0",
        HostOptions {
            slot_size: 16 << 20,
            loop_devices: true,
            ..Default::default()
        },
    );
    let mut img = image("2.0", 12 << 20);
    img[4 << 20..8 << 20].fill(0);
    std::fs::write(&h.slots[1], vec![0x5au8; 16 << 20]).expect("old bytes in slot B");
    let m = h.pack("r2", "2.0", &img, &[]);
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let out = h.abupdate(&["install", "--no-reboot", &nginx.url("release.json")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        h.slot_bytes(1, img.len()) == img,
        "slot B does not hold the image"
    );
    assert!(
        h.slot_bytes(1, 16 << 20)[12 << 20..]
            .iter()
            .all(|&b| b == 0x5a),
        "bytes past the image were touched"
    );
}

/// Install the release `nginx` serves onto a slot whose first read-back
/// returns a flipped bit: the run fails, naming the medium.
#[cfg(feature = "failpoints")]
fn installs_onto_a_failing_medium(h: &TestHost, nginx: &Nginx) {
    let out = h.abupdate_env(
        &["install", "--no-reboot", &nginx.url("release.json")],
        &[("ABUPDATE_FAILPOINT", "read-back-differs:1")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the medium is failing"),
        "{}",
        text(&out)
    );
}

/// A slot that reads back other bytes than were written, over HTTP: the
/// segment's frame went back to the reader once decoded, so it is fetched
/// once more (one `Range` request for exactly its bytes), checked against
/// its signed BLAKE3 and decoded, and the medium is named, not the release.
#[cfg(feature = "failpoints")]
#[test]
fn a_failing_medium_is_told_from_a_bad_release_with_the_frame_fetched_again() {
    let h = TestHost::new("http-bad-medium", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 3 << 20), &[]);
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    installs_onto_a_failing_medium(&h, &nginx);
    let (at, len, _) = crate::common::host::segment_frame(&m, 0);
    let again: Vec<_> = payload_requests(&nginx, "rootfs-2.0.img.zst")
        .into_iter()
        .filter(|r| r.range.is_some())
        .collect();
    assert_eq!(again.len(), 1, "one request for the frame again: {again:?}");
    assert_eq!(
        again[0].range.as_deref(),
        Some(format!("bytes={at}-{}", at + len - 1).as_str())
    );
    assert_eq!((again[0].status, again[0].body_bytes_sent), (206, len));
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("A B"));
}

/// The same, from a server that allows one connection per client (nginx
/// `limit_conn 1`) and a payload far larger than the socket buffers, so
/// the server is still sending it when the writer stops: the payload's
/// connection is closed before the frame is asked for once more, and the
/// medium is still named (with it open, the frame's request was refused
/// with a 503 and the run ended as the source's failure, every time).
#[cfg(feature = "failpoints")]
#[test]
fn a_failing_medium_is_told_by_a_server_that_allows_one_connection_per_client() {
    let len = 64 << 20;
    let h = TestHost::new(
        "http-bad-medium-one-conn",
        "1.0",
        HostOptions {
            slot_size: len as u64 + (4 << 20),
            ..HostOptions::default()
        },
    );
    // Incompressible after its header: the payload is as large as the image.
    let mut data = image("2.0", 4096);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let m = h.pack("r2", "2.0", &data, &["--level", "1"]);
    let Some(nginx) = Nginx::start_with_http(
        m.parent().expect("dir"),
        "limit_conn per_client 1;",
        "limit_conn_zone $binary_remote_addr zone=per_client:1m;",
    ) else {
        return;
    };
    installs_onto_a_failing_medium(&h, &nginx);
    let requests = payload_requests(&nginx, "rootfs-2.0.img.zst");
    let whole = requests
        .iter()
        .find(|r| r.range.is_none())
        .expect("the payload's request");
    let payload = std::fs::metadata(m.with_file_name("rootfs-2.0.img.zst"))
        .expect("payload")
        .len();
    assert!(
        whole.body_bytes_sent < payload,
        "the payload was sent whole before the writer stopped, which tests nothing: {requests:?}"
    );
    let again: Vec<_> = requests.iter().filter(|r| r.range.is_some()).collect();
    assert_eq!(
        again.len(),
        1,
        "one request for the frame again: {requests:?}"
    );
    assert_eq!(again[0].status, 206, "{requests:?}");
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("A B"));
}

#[test]
fn a_remote_manifest_cannot_point_at_local_files() {
    let h = TestHost::new("http-file-url", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    h.resign(&m, |doc| {
        Some(
            doc.to_string()
                .replace("\"rootfs-2.0.img.zst\"", "\"file:///etc/shadow\""),
        )
    });
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let before = h.grub_vars();
    let out = h.abupdate(&["install", "--no-reboot", &nginx.url("release.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("file:///etc/shadow"), "{}", text(&out));
    assert_eq!(h.grub_vars().get("ORDER"), before.get("ORDER"));
    assert_eq!(h.grub_vars().get("A_OK"), before.get("A_OK"));
}

#[test]
fn a_payload_shorter_than_declared_leaves_the_target_bad() {
    let h = TestHost::new("http-short", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 2 << 20), &["--no-compress"]);
    let payload = m.with_file_name("rootfs-2.0.img");
    let data = std::fs::read(&payload).expect("payload");
    std::fs::write(&payload, &data[..data.len() - 1000]).expect("truncate");
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let out = h.abupdate(&["install", "--no-reboot", &nginx.url("release.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("rootfs-2.0.img"), "{}", text(&out));
    assert_eq!(h.grub_vars().get("B_OK").map(String::as_str), Some("0"));
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("A B"));
    assert_eq!(h.reboots(), 0);
}

/// Point the host's `[update] url` at `url`.
fn set_update_url(h: &TestHost, url: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace("[update]\n", &format!("[update]\nurl = \"{url}\"\n"));
    std::fs::write(&h.config, cfg).expect("config");
}

/// An idle tick is one conditional GET; and the URL's credentials (user
/// info, a `token` parameter) are never kept in `state.json`, which others
/// may read (found from outside: the validators' record held them).
#[test]
fn an_idle_timer_tick_is_one_conditional_get() {
    let h = TestHost::new("http-idle", "2.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let url =
        nginx
            .url("release.json?token=T0KEN-9")
            .replacen("http://", "http://tick:s3cret-7@", 1);
    set_update_url(&h, &url);
    for _ in 0..3 {
        let out = h.abupdate(&["update"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    for file in ["state.json", "state.json.prev"] {
        let kept = std::fs::read_to_string(h.state_dir.join(file)).unwrap_or_default();
        assert!(
            !kept.contains("s3cret-7") && !kept.contains("T0KEN-9"),
            "{file}: {kept}"
        );
    }
    let log = nginx.wait_log(4);
    let manifest_gets: Vec<u16> = log
        .iter()
        .filter(|l| l.uri.starts_with("/release.json?"))
        .map(|l| l.status)
        .collect();
    assert_eq!(manifest_gets, [200, 304, 304], "{log:?}");
    let bytes_after_first: u64 = log.iter().skip(2).map(|l| l.body_bytes_sent).sum();
    assert_eq!(
        bytes_after_first, 0,
        "idle ticks transferred bytes: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.uri.contains("rootfs")),
        "a payload was fetched: {log:?}"
    );
}

/// nginx's `ETag` is the file's mtime in whole seconds and its size, and
/// `Last-Modified` is whole seconds: two manifests of one size published
/// within one second looked unchanged to a host that had fetched the first
/// (and kept its validators: here a release not newer than the booted one),
/// which was answered 304 and did not see the second release.
#[test]
fn a_release_published_within_the_second_of_the_last_is_seen_not_answered_304() {
    // A few rounds: each `pack` of a small image at level 3 and each
    // `check` take milliseconds, so most rounds publish twice in one second.
    for round in 0..3 {
        let h = TestHost::new(
            &format!("http-same-second-{round}"),
            "2.0",
            HostOptions::default(),
        );
        let dir = h.dir.join("rel");
        std::fs::create_dir_all(&dir).expect("dir");
        let Some(nginx) = Nginx::start(&dir, "") else {
            return;
        };
        set_update_url(&h, &nginx.url("release.json"));
        let publish = |version: &str| {
            let m = h.pack("rel", version, &image(version, 4096), &[]);
            let meta = std::fs::metadata(&m).expect("manifest");
            let mtime = meta.modified().expect("mtime");
            let secs = mtime.duration_since(std::time::UNIX_EPOCH).expect("epoch");
            (secs.as_secs(), meta.len())
        };
        let first = publish("2.0");
        let out = h.abupdate(&["check", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("\"not_newer\""), "{}", text(&out));
        let second = publish("3.0");
        let out = h.abupdate(&["check", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(100),
            "round {round}: {}",
            text(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["version"], "3.0", "{}", text(&out));
        assert_eq!(
            first.1, second.1,
            "the manifests are of one size, as the case needs"
        );
        assert!(
            first.0 < second.0,
            "dated a whole second past the last: {first:?} {second:?}"
        );
        // Each `check`: the manifest and its signature.
        let gets: Vec<u16> = nginx
            .wait_log(4)
            .iter()
            .filter(|l| l.uri.ends_with("release.json"))
            .map(|l| l.status)
            .collect();
        assert_eq!(gets, [200, 200]);
    }
}

#[test]
fn a_data_partition_too_small_for_the_payload_streams_without_resume() {
    let h = TestHost::new(
        "http-small-data",
        "1.0",
        HostOptions {
            slot_size: 24 << 20,
            ..Default::default()
        },
    );
    let img = image("2.0", 16 << 20);
    let m = h.pack("r2", "2.0", &img, &["--no-compress"]);
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    // The state dir on an 8 MiB filesystem: a 16 MiB resumable download
    // cannot fit there.
    let _ = std::fs::remove_dir_all(&h.state_dir);
    std::fs::create_dir_all(&h.state_dir).expect("state dir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
        .arg(&h.state_dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP: cannot mount a tmpfs (not root?)");
        return;
    }
    let out = h.abupdate(&["install", "--no-reboot", &nginx.url("release.json")]);
    let _ = std::process::Command::new("umount")
        .arg(&h.state_dir)
        .status();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("streaming without resume"),
        "{}",
        text(&out)
    );
    assert_eq!(h.slot_bytes(1, img.len()), img);
}

/// With `resume_downloads = false` the payload goes only into the slot:
/// nothing of it lands on the data partition, even when the install is
/// killed mid-stream, and the next run starts the download over.
#[cfg(feature = "failpoints")]
#[test]
fn with_resume_off_nothing_is_kept_on_the_data_partition_and_a_cut_download_starts_over() {
    let h = TestHost::new(
        "http-no-resume",
        "1.0",
        HostOptions {
            slot_size: 72 << 20,
            loop_devices: true,
            ..Default::default()
        },
    );
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen("[update]\n", "[update]\nresume_downloads = false\n", 1),
    )
    .expect("config");
    let img = image("2.0", 64 << 20);
    let m = h.pack("r2", "2.0", &img, &[]);
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let url = nginx.url("release.json");
    install_killed_mid_image(&h, &url, "segment-written:5");
    assert_eq!(
        kept_download_bytes(&h),
        0,
        "payload bytes were written to the data partition"
    );

    let out = h.abupdate(&["install", "--no-reboot", &url]);
    assert!(out.status.success(), "{}", text(&out));
    nginx.wait_log(4);
    let reqs = payload_requests(&nginx, PAYLOAD_NAME);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs.iter().all(|r| r.range.is_none()),
        "a download was resumed: {reqs:?}"
    );
    assert_eq!(h.slot_bytes(1, img.len()), img);
}

/// A partial download damaged on the data partition (one byte flipped, as
/// a bad sector or a stray write would): the resumed payload fails its
/// hash, is discarded and fetched once from byte 0, and the install
/// succeeds; the failure is never the release's. `downloaded_bytes` counts
/// both attempts' bytes from the network.
#[test]
fn a_resumed_download_that_fails_its_hash_is_fetched_again_from_zero() {
    let h = TestHost::new("http-partial-flip", "1.0", HostOptions::default());
    let img = image("2.0", 3 << 20);
    let m = h.pack("r2", "2.0", &img, &["--one-frame"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("json");
    let rootfs = &manifest["images"]["rootfs"];
    let payload =
        std::fs::read(m.with_file_name(rootfs["url"].as_str().expect("url"))).expect("payload");
    let sha = rootfs["download_sha256"].as_str().expect("download_sha256");
    let mut kept = payload[..payload.len() / 2].to_vec();
    kept[1000] ^= 0xff;
    std::fs::create_dir_all(h.state_dir.join("partial")).expect("partial dir");
    std::fs::write(h.state_dir.join(format!("partial/{sha}.part")), &kept).expect("partial");
    let Some(nginx) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    let out = h.abupdate(&["install", "--no-reboot", &nginx.url("release.json")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("discarding it and fetching the payload once from the start"),
        "{}",
        text(&out)
    );
    assert_eq!(h.slot_bytes(1, img.len()), img);
    let name = rootfs["url"].as_str().expect("url");
    nginx.wait_log(3);
    let ranges: Vec<_> = nginx
        .log()
        .into_iter()
        .filter(|l| l.uri.ends_with(name))
        .map(|l| l.range)
        .collect();
    assert_eq!(ranges, [Some(format!("bytes={}-", kept.len())), None]);
    // The discarded attempt's bytes crossed the link too: both count.
    assert_eq!(
        h.state()["metrics"]["downloaded_bytes"],
        (payload.len() - kept.len() + payload.len()) as u64,
        "the discarded attempt's bytes are not counted"
    );
}
