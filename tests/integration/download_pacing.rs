//! Bandwidth through the real binary against a real nginx: `[update]
//! max_rate` holds a 10 MB download within 10% of the rate over 20 s
//! (measured as the bytes of the partial download over time, and the one
//! request nginx logged); outside `download_windows` the timer does not
//! start a download (a manual install does), and a download whose window
//! closes pauses, sends nothing, and resumes with `Range` in the next one.

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

#[test]
fn a_download_pauses_when_its_window_closes_and_resumes_with_range_in_the_next() {
    const LEN: usize = 2_000_000;
    let h = host("window", "max_rate = \"100kB/s\"");
    let (nginx, url) = serve(&h, LEN);
    // The first window closes 10 s from now, the next opens 10 s later:
    // at 100 kB/s about half the payload comes in each.
    let now = unix_now();
    let (close, open) = (now + 10, now + 20);
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
    let (out, samples, unix_start) = sampled(&h, &["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("outside the download windows; paused until"),
        "{stderr}"
    );

    // Nothing moved while the windows were closed (a second of margin on
    // each side for the clock's ticks).
    let in_gap: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| {
            let unix = t + unix_start;
            unix > close as f64 + 1.5 && unix < open as f64 - 1.5
        })
        .map(|(_, n)| *n)
        .collect();
    assert!(in_gap.len() >= 3, "no samples in the gap: {samples:?}");
    assert!(
        in_gap.windows(2).all(|w| w[0] == w[1]),
        "bytes moved outside the windows: {in_gap:?}"
    );
    let paused_at = in_gap[0];
    assert!(
        paused_at > 0 && paused_at < LEN as u64,
        "paused at {paused_at}"
    );

    // Two requests: the first cut at the window's end, the second a Range
    // from exactly where the bytes stopped.
    let lines = payload_lines(&nginx);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].range, None);
    assert_eq!(lines[1].status, 206);
    assert_eq!(
        lines[1].range.as_deref(),
        Some(format!("bytes={paused_at}-").as_str())
    );
    assert_eq!(lines[1].body_bytes_sent, LEN as u64 - paused_at);
}
