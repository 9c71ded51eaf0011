//! Bandwidth through the real binary against a real nginx: `[update]
//! max_rate` holds a 10 MB download within 10% of the rate over 20 s
//! (measured as the bytes of the partial download over time, and the one
//! request nginx logged); outside `download_windows` the timer does not
//! start a download (a manual install does), and a download whose window
//! closes ends the run (the state lock free, the bytes kept) and the next
//! run inside a window resumes it with `Range`.

use crate::common::host::{image, text, HostOptions, TestHost};
use crate::common::http::{LogLine, Nginx};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A host with slots of 16 MiB whose config gets `keys` in `[update]`.
fn host(name: &str, keys: &str) -> TestHost {
    let h = TestHost::new(
        &format!("pacing-{name}"),
        "1.0",
        HostOptions {
            slot_size: 16 << 20,
            ..Default::default()
        },
    );
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen("[update]\n", &format!("[update]\n{keys}\n"), 1),
    )
    .expect("config");
    h
}

/// Release 2.0 of `len` bytes, uncompressed (payload bytes = image bytes),
/// served by nginx; the manifest's URL.
fn serve(h: &TestHost, len: usize) -> (Nginx, String) {
    let m = h.pack("r2", "2.0", &image("2.0", len), &["--no-compress"]);
    let nginx = Nginx::start(m.parent().expect("dir"), "").expect("nginx");
    let url = nginx.url("/release.json");
    (nginx, url)
}

fn payload_lines(nginx: &Nginx) -> Vec<LogLine> {
    nginx
        .log()
        .into_iter()
        .filter(|l| l.uri.ends_with(".img"))
        .collect()
}

/// The partial download's size now (`None` before it exists and after it
/// is removed at the end).
fn partial_size(state_dir: &Path) -> Option<u64> {
    std::fs::read_dir(state_dir.join("partial"))
        .ok()?
        .filter_map(|e| e.ok())
        // Not the object's validator kept next to it (`.validator`).
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .next()
}

/// Run `args` while sampling the partial download's size every 100 ms:
/// (output, samples of (seconds since start, bytes), the start in Unix
/// seconds).
fn sampled(h: &TestHost, args: &[&str]) -> (std::process::Output, Vec<(f64, u64)>, f64) {
    let unix_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let child = std::process::Command::new(crate::common::host::bin())
        .arg("--config")
        .arg(&h.config)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn abupdate");
    let started = Instant::now();
    let state_dir: PathBuf = h.state_dir.clone();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        // Stops when the download is over (the partial is removed) or at
        // a bound far past the test's expectations.
        let mut seen = false;
        while started.elapsed() < Duration::from_secs(120) {
            match partial_size(&state_dir) {
                Some(n) => {
                    seen = true;
                    samples.push((started.elapsed().as_secs_f64(), n));
                }
                None if seen => break,
                None => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    });
    let out = child.wait_with_output().expect("abupdate");
    (out, sampler.join().expect("sampler"), unix_start)
}

/// The bytes at `t` seconds (the last sample at or before it).
fn at(samples: &[(f64, u64)], t: f64) -> (f64, u64) {
    *samples
        .iter()
        .rev()
        .find(|(s, _)| *s <= t)
        .unwrap_or(&samples[0])
}

#[test]
fn the_rate_is_held_within_ten_percent_over_twenty_seconds() {
    const RATE: f64 = 500_000.0;
    const LEN: usize = 10_000_000;
    let h = host("rate", "max_rate = \"500kB/s\"");
    let (nginx, url) = serve(&h, LEN);
    let started = Instant::now();
    let (out, samples, _) = sampled(&h, &["install", "--no-reboot", &url]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    // One request, the whole payload: nothing was fetched twice.
    let lines = payload_lines(&nginx);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (lines[0].status, lines[0].body_bytes_sent),
        (200, LEN as u64)
    );

    // Over the 20 s: from the first second (past the kernel's receive
    // buffer, the only burst) to the last sample.
    let (t0, b0) = at(&samples, 1.0);
    let (t1, b1) = *samples.last().expect("samples");
    let rate = (b1 - b0) as f64 / (t1 - t0);
    println!(
        "pacing | 500kB/s | {LEN} bytes in {:.1}s | {:.0} B/s from {t0:.1}s to {t1:.1}s | {} samples",
        took.as_secs_f64(),
        rate,
        samples.len()
    );
    assert!(t1 - t0 > 17.0, "only {:.1}s measured", t1 - t0);
    assert!(
        (rate - RATE).abs() <= 0.10 * RATE,
        "{rate:.0} B/s is not within 10% of {RATE}"
    );
    // And held throughout: every 5 s stretch within 15%.
    let mut t = t0;
    while t + 5.0 <= t1 {
        let (a, x) = at(&samples, t);
        let (b, y) = at(&samples, t + 5.0);
        let r = (y - x) as f64 / (b - a);
        assert!(
            (r - RATE).abs() <= 0.15 * RATE,
            "{r:.0} B/s from {a:.1}s to {b:.1}s"
        );
        t += 5.0;
    }
    assert!(took > Duration::from_secs(18), "took only {took:?}");
}

/// The bucket starts empty: from the first byte no more arrives than the
/// rate allows (a full bucket let 16 KiB through at once, 3 s worth here).
#[test]
fn the_rate_holds_from_the_first_byte_without_a_burst() {
    const RATE: f64 = 5_000.0;
    const LEN: usize = 30_000;
    let h = host("no-burst", "max_rate = \"5kB/s\"");
    let (_nginx, url) = serve(&h, LEN);
    let (out, samples, _) = sampled(&h, &["install", "--no-reboot", &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    // The partial appears before the request: its first sample is the
    // latest the download can have started.
    let (t0, _) = *samples.first().expect("samples");
    for &(t, bytes) in &samples {
        // One read (a chunk: 1 KiB at this rate) of slack.
        let allowed = RATE * (t - t0 + 0.1) + 1024.0;
        assert!(
            bytes as f64 <= allowed,
            "{bytes} bytes {:.1}s in: more than {allowed:.0} ({samples:?})",
            t - t0
        );
    }
}

/// `HH:MM:SS` (UTC) of `unix` seconds.
fn clock(unix: u64) -> String {
    let s = unix % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn windows(spans: &[(u64, u64)]) -> String {
    spans
        .iter()
        .map(|(start, len)| {
            format!(
                "[[update.download_windows]]\nstart = \"{}\"\nlength = \"{len}s\"\n",
                clock(*start)
            )
        })
        .collect()
}

#[test]
fn the_timer_does_not_start_a_download_outside_its_windows_a_manual_install_does() {
    let now = unix_now();
    // One window, an hour from now.
    let h = host("closed", "");
    let (nginx, url) = serve(&h, 1 << 20);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!(
            "{}\n{}",
            cfg.replacen("[update]\n", &format!("[update]\nurl = \"{url}\"\n"), 1),
            windows(&[(now + 3600, 600)])
        ),
    )
    .expect("config");
    let before = h.untouched();
    let out = h.abupdate(&["--json", "update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["reason"], "waiting_for_download_window", "{json}");
    assert!(
        payload_lines(&nginx).is_empty(),
        "payload fetched outside the window"
    );
    h.assert_untouched(&before, "outside the download window");
    assert!(h.state()["transaction"].is_null());
    // The operator's own install is not held.
    let out = h.abupdate(&["install", "--no-reboot", &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(payload_lines(&nginx).len(), 1);
}

/// What a timer run stopped by its download window's close left, and the
/// next run inside a window that resumed it.
struct Resumed {
    /// The signed manifest.
    manifest: serde_json::Value,
    /// The payload's size in bytes.
    payload_size: u64,
    /// The partial download kept on the data partition, in bytes.
    kept_partial: Option<u64>,
    /// The payload requests nginx logged (both runs).
    lines: Vec<LogLine>,
    /// Every request nginx logged during the resuming run, for any file.
    resume_log: Vec<LogLine>,
    /// The resuming run.
    out: std::process::Output,
    /// The host, its release staged.
    h: TestHost,
}

/// Release 2.0 of `len` bytes packed with `pack`, downloaded by the timer
/// at a rate that brings about 40% of its payload before its window
/// closes, 8 s from now; the next window opens 25 s from now. Checks what
/// holds whatever the payload's shape: the download ends the run at the
/// close (exit 0, `waiting_for_download_window`, not a failure: no
/// backoff) instead of sleeping until the next window with the state lock
/// held, so that another run meanwhile takes the lock (it was refused as
/// "locked by pid N" for the whole pause) and asks for nothing; the
/// install stays recorded as being written; the next run inside a window
/// resumes with one `Range` request and stages the release.
fn stopped_by_window_then_resumed(name: &str, len: usize, pack: &[&str]) -> Resumed {
    resumed_after_window(host(name, ""), name, len, pack, |_| {})
}

/// [`stopped_by_window_then_resumed`] on `h`, with `between` done to the
/// host after the close and before the next window's run (a stray write
/// into a slot).
fn resumed_after_window(
    h: TestHost,
    name: &str,
    len: usize,
    pack: &[&str],
    between: impl FnOnce(&TestHost),
) -> Resumed {
    let m = h.pack("r2", "2.0", &image("2.0", len), pack);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("json");
    let payload_name = manifest["images"]["rootfs"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    let payload_size = std::fs::metadata(m.with_file_name(&payload_name))
        .expect("payload")
        .len();
    let nginx = Nginx::start(m.parent().expect("dir"), "").expect("nginx");
    let url = nginx.url("/release.json");
    let rate = (payload_size / 20).max(1000);
    let now = unix_now();
    let (close, open) = (now + 8, now + 25);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!(
            "{}\n{}",
            cfg.replacen(
                "[update]\n",
                &format!("[update]\nurl = \"{url}\"\nmax_rate = \"{rate}B/s\"\n"),
                1
            ),
            windows(&[(close - 60, 60), (open, 120)])
        ),
    )
    .expect("config");
    let requests = || -> Vec<LogLine> {
        nginx
            .log()
            .into_iter()
            .filter(|l| l.uri.ends_with(&payload_name))
            .collect()
    };
    let timer = ["--json", "update", "--now", "--no-reboot"];
    let mut first = std::process::Command::new(crate::common::host::bin())
        .arg("--config")
        .arg(&h.config)
        .args(timer)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn abupdate");
    // The run ends at the close (a few seconds of margin), long before
    // the next window opens.
    let ended_by = close + 6;
    while unix_now() < ended_by && first.try_wait().expect("try_wait").is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(unix_now() < open, "{name}: the test ran too slowly to tell");
    // The windows are still closed: another verb (here the timer's own
    // next run) takes the state lock.
    let second = h.abupdate(&timer);
    let still_running = first.try_wait().expect("try_wait").is_none();
    if still_running {
        // The old sleep: not left behind holding the lock.
        first.kill().expect("kill");
    }
    let first = first.wait_with_output().expect("abupdate");
    assert!(
        second.status.success() && !text(&second).contains("locked"),
        "{name}: a run while the download waits for its window: {}",
        text(&second)
    );
    assert!(
        !still_running,
        "{name}: the first run still held the lock {}s after its window closed: {}",
        ended_by - close,
        text(&first)
    );
    for out in [&first, &second] {
        assert!(out.status.success(), "{name}: {}", text(out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["outcome"], "up_to_date", "{name}: {json}");
        assert_eq!(
            json["reason"], "waiting_for_download_window",
            "{name}: {json}"
        );
    }
    window_stop_is_no_failure(&h, name, &first);
    let kept_partial = partial_size(&h.state_dir);
    // One request: the second run asked for nothing outside the window.
    let cut = requests();
    assert_eq!(cut.len(), 1, "{name}: {cut:?}");
    assert_eq!(cut[0].range, None);

    between(&h);
    // The next run inside a window resumes and stages the release.
    while unix_now() <= open {
        std::thread::sleep(Duration::from_millis(200));
    }
    let logged_before = nginx.log().len();
    let out = h.abupdate(&timer);
    assert!(out.status.success(), "{name}: {}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["installed"], "2.0", "{name}: {json}");
    assert_eq!(h.slot_bytes(1, len), image("2.0", len));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    let lines = requests();
    assert_eq!(lines.len(), 2, "{name}: {lines:?}");
    assert_eq!(lines[1].status, 206, "{name}: {lines:?}");
    let resume_log = nginx.log().split_off(logged_before);
    Resumed {
        manifest,
        payload_size,
        kept_partial,
        lines,
        resume_log,
        out,
        h,
    }
}

/// The offset a `Range: bytes=N-` asks from.
/// What a run stopped by its download window's close leaves (`out` is
/// that run): the close said on stderr, nothing counted and no backoff
/// (a closing window is no failure), and release 2.0's install recorded
/// as being written (its target bad), so that the next run redoes it.
/// Returns the state for the caller's own checks.
fn window_stop_is_no_failure(
    h: &TestHost,
    name: &str,
    out: &std::process::Output,
) -> serde_json::Value {
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the download window closed"),
        "{name}: {}",
        text(out)
    );
    let state = h.state();
    assert_eq!(state["metrics"]["consecutive_failures"], 0, "{state}");
    assert!(state["metrics"]["retry_after"].is_null(), "{state}");
    assert_eq!(
        state["metrics"]["failures"],
        serde_json::json!({}),
        "{state}"
    );
    assert_eq!(state["transaction"]["phase"], "writing", "{state}");
    assert_eq!(state["transaction"]["version"], "2.0", "{state}");
    state
}

fn range_start(line: &LogLine) -> u64 {
    line.range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("not a resume: {line:?}"))
}

/// One frame (here uncompressed): the bytes so far are kept on the data
/// partition and the next window's run asks from exactly the next byte.
#[test]
fn a_download_whose_window_closes_ends_the_run_and_the_next_window_resumes_it() {
    let r = stopped_by_window_then_resumed("window", 2_000_000, &["--no-compress"]);
    let kept = r.kept_partial.expect("the partial download is kept");
    assert!(kept > 0 && kept < r.payload_size, "kept {kept}");
    assert_eq!(range_start(&r.lines[1]), kept);
    assert_eq!(r.lines[1].body_bytes_sent, r.payload_size - kept);
    println!(
        "window | one-frame payload of {} bytes: {kept} kept, the resume fetched {}",
        r.payload_size, r.lines[1].body_bytes_sent
    );
}

/// A segmented payload: nothing goes to the data partition; the segments
/// written before the close stay in the slot, and the next window's run
/// reads them back against their signed digests and asks only for the
/// frames after them.
#[test]
fn a_segmented_download_whose_window_closes_resumes_from_the_segments_in_the_slot() {
    let r = stopped_by_window_then_resumed("window-seg", 12 << 20, &["--segment-size", "1"]);
    assert_eq!(
        r.kept_partial, None,
        "payload bytes kept on the data partition"
    );
    let frame_starts: Vec<u64> = r.manifest["images"]["rootfs"]["segments"]
        .as_array()
        .expect("segmented")
        .iter()
        .map(|s| s["patch_offset"].as_u64().expect("patch_offset"))
        .collect();
    let start = range_start(&r.lines[1]);
    let held = frame_starts
        .iter()
        .position(|&f| f == start)
        .unwrap_or_else(|| panic!("resumed at {start}, not at a frame's first byte"));
    assert!(held >= 1, "resumed at the first frame: {:?}", r.lines);
    assert!(
        text(&r.out).contains(&format!("holds the first {held} segments")),
        "{}",
        text(&r.out)
    );
    assert_eq!(r.lines[1].body_bytes_sent, r.payload_size - start);
    println!(
        "window | segmented payload of {} bytes: the slot held {held} of {} segments, the resume fetched {}",
        r.payload_size,
        frame_starts.len(),
        r.lines[1].body_bytes_sent
    );
}

/// A boot image of this many bytes beside the rootfs: its payload crosses
/// the link well within the first second of the window (a thirtieth of the
/// rootfs's), long before the window closes.
const BOOT_LEN: usize = 256 << 10;

/// A multi-image release on `h` (made with `name`): a `boot` device in
/// each slot and a one-frame `boot` image packed beside a one-frame rootfs
/// of 8 MiB, whose download the window closes. Both images go through
/// the one-stream pipeline; `boot` (first by name) is written whole, its
/// partial download removed, before the rootfs starts.
fn two_images_stopped_by_window(name: &str, between: impl FnOnce(&TestHost)) -> Resumed {
    let h = host(name, "");
    let boot_devices = h.add_class("boot", 1 << 20);
    let boot_raw = h.dir.join("boot-2.0.raw");
    std::fs::write(&boot_raw, image("2.0-boot", BOOT_LEN)).expect("boot image");
    let boot_arg = format!("--image=boot={}", boot_raw.display());
    let r = resumed_after_window(h, name, 8 << 20, &["--one-frame", &boot_arg], between);
    // Whatever the resuming run fetched, both slots end as signed.
    let boot_b = std::fs::read(&boot_devices[1]).expect("boot slot B");
    assert_eq!(&boot_b[..BOOT_LEN], &image("2.0-boot", BOOT_LEN)[..]);
    r
}

/// The requests for the boot image's payload in `log`.
fn boot_requests<'a>(r: &Resumed, log: &'a [LogLine]) -> Vec<&'a LogLine> {
    let url = r.manifest["images"]["boot"]["url"]
        .as_str()
        .expect("boot url");
    assert!(
        r.manifest["images"]["boot"]["segments"].is_null(),
        "one frame"
    );
    log.iter().filter(|l| l.uri.ends_with(url)).collect()
}

/// The defect this pins: a one-frame image written whole and verified
/// keeps no partial download (it is removed once written), so a release
/// whose later image was stopped by the window's close fetched the
/// finished image again from byte 0 in the next window, though its slot
/// held it. The next run reads the slot back against the image's signed
/// SHA-256 and fetches none of it: only the rest of the rootfs, from its
/// partial download.
#[test]
fn a_finished_one_frame_image_is_not_fetched_again_when_a_later_image_s_window_closes() {
    let r = two_images_stopped_by_window("window-two-images", |_| {});
    let boot = boot_requests(&r, &r.resume_log);
    let boot_bytes: u64 = boot.iter().map(|l| l.body_bytes_sent).sum();
    assert!(
        boot.is_empty(),
        "the finished boot image was fetched again ({boot_bytes} bytes): {boot:?}"
    );
    assert!(
        text(&r.out).contains("already holds boot 2.0 (read back and matched): not fetched again"),
        "{}",
        text(&r.out)
    );
    // The rootfs: only what its partial download did not hold.
    let kept = r
        .kept_partial
        .expect("the rootfs's partial download is kept");
    assert_eq!(range_start(&r.lines[1]), kept);
    assert_eq!(r.lines[1].body_bytes_sent, r.payload_size - kept);
    let fetched: u64 = r
        .resume_log
        .iter()
        .filter(|l| l.uri.ends_with(".zst"))
        .map(|l| l.body_bytes_sent)
        .sum();
    assert_eq!(fetched, r.payload_size - kept, "{:?}", r.resume_log);
    assert_eq!(r.h.state()["metrics"]["last_install_fetched"], fetched);
    println!(
        "window | two one-frame images: the resume fetched {fetched} bytes ({} of the rootfs's {} kept), none of the finished boot image",
        kept, r.payload_size
    );
}

/// The slot is what counts, not the record of a finished write: a boot
/// image whose slot had one byte changed after the window closed (a stray
/// write, a failing medium) reads back wrong, and is fetched whole and
/// written again; the release still stages with both slots as signed.
#[test]
fn a_finished_image_whose_slot_changed_after_the_window_closed_is_fetched_again() {
    let r = two_images_stopped_by_window("window-two-images-changed", |h| {
        let dev = h.dir.join("boot-b.img");
        let mut bytes = std::fs::read(&dev).expect("boot slot B");
        assert_eq!(
            &bytes[..BOOT_LEN],
            &image("2.0-boot", BOOT_LEN)[..],
            "the first run did not finish the boot image"
        );
        bytes[BOOT_LEN / 2] ^= 0x01;
        std::fs::write(&dev, bytes).expect("boot slot B");
    });
    let boot = boot_requests(&r, &r.resume_log);
    let payload = r.h.dir.join("r2").join(
        r.manifest["images"]["boot"]["url"]
            .as_str()
            .expect("boot url"),
    );
    let payload_size = std::fs::metadata(payload).expect("boot payload").len();
    assert_eq!(boot.len(), 1, "{boot:?}");
    assert_eq!((boot[0].status, boot[0].range.as_deref()), (200, None));
    assert_eq!(boot[0].body_bytes_sent, payload_size);
    assert!(
        !text(&r.out).contains("already holds boot"),
        "{}",
        text(&r.out)
    );
}

/// A segment read back wrong (a failing medium, injected) whose frame is
/// fetched once more to tell the medium from the release, while the
/// download window closes: the server holds that one range request until
/// after the close. The close is no evidence against the release: the
/// run ends as any window stop (exit 0, `waiting_for_download_window`,
/// nothing counted, no backoff, nothing on the failed list), the write
/// stays pending `writing` with the target marked bad, and the next run
/// inside a window (the medium good again) resumes and stages the release.
/// Before, the re-fetch's failure blamed the payload (`hash_mismatch`,
/// counted and reported against the release).
#[cfg(feature = "failpoints")]
#[test]
fn a_window_that_closes_while_a_frame_is_fetched_again_stops_the_run_without_blaming_the_release() {
    use crate::common::hostile_server::{files_of, not_found, serve, Server};
    let h = host("window-again", "");
    let len = 4 << 20;
    let m = h.pack("r2", "2.0", &image("2.0", len), &["--segment-size", "1"]);
    let files = files_of(m.parent().expect("dir"));
    let now = unix_now();
    // The window closes at the start of the second `close` (3 s from now
    // at most); the next one opens at `open`.
    let (close, open) = (now + 3, now + 9);
    let held_until = close + 1;
    let srv = Server::start(move |req, s| match files.get(req.path.as_str()) {
        Some(d) => {
            // Only the frame fetched once more asks for a closed range.
            if req.range_end().is_some() {
                while unix_now() < held_until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            serve(req, s, d)
        }
        None => not_found(s),
    });
    let url = srv.url("/release.json");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!(
            "{}\n{}",
            cfg.replacen("[update]\n", &format!("[update]\nurl = \"{url}\"\n"), 1),
            windows(&[(close - 60, 60), (open, 120)])
        ),
    )
    .expect("config");
    let timer = ["--json", "update", "--now", "--no-reboot"];
    let out = h.abupdate_env(&timer, &[("ABUPDATE_FAILPOINT", "read-back-differs:1")]);
    let again: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|r| r.range_end().is_some())
        .collect();
    assert_eq!(again.len(), 1, "the frame was not fetched again: {again:?}");
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["reason"], "waiting_for_download_window", "{json}");
    let state = window_stop_is_no_failure(&h, "window-again", &out);
    assert_eq!(state["failed"], serde_json::json!([]), "{state}");
    assert_eq!(
        h.grub_vars().get("B_OK").map(String::as_str),
        Some("0"),
        "the target is not marked bad while its write is pending"
    );

    while unix_now() <= open {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = h.abupdate(&timer);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["installed"], "2.0", "{json}");
    assert_eq!(h.slot_bytes(1, len), image("2.0", len));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
}
