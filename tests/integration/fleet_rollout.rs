//! Fleet behaviour of one host with the real binary: where it stands in a
//! rollout and why it waits, pause, maintenance windows, backoff, the
//! Prometheus textfile (checked by the reference parser) and the webhook, the
//! operator's `fleet` tool, and a site cache (a real nginx `proxy_cache`)
//! that serves the second host of a site and a resumed download.

use crate::common::host::{image, run, snapshot, text, HostOptions, TestHost, COMPATIBLE};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

fn with_url(h: &TestHost, m: &std::path::Path, extra: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(
        "[update]\n",
        &format!("[update]\nurl = \"file://{}\"\n", m.display()),
    );
    std::fs::write(&h.config, format!("{cfg}\n{extra}\n")).expect("config");
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not json ({e}): {}", text(out)))
}

#[test]
fn check_says_where_the_host_stands_and_why_it_waits() {
    let h = TestHost::new("fleet-standing", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "5"]);
    with_url(&h, &m, "[rollout]\nwariness = 0.9\n");
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j = json(&out);
    assert_eq!(j["reason"], "waiting_for_wave");
    assert_eq!(j["rollout"]["percentage"], 5.0);
    assert_eq!(j["rollout"]["included"], false);
    assert!(
        j["message"].as_str().is_some_and(|m| m.contains("90.00%")),
        "{j}"
    );
    // The timer's update installs nothing while the host waits.
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.reboots(), 0);
    assert!(h.state()["transaction"].is_null());
    // A manual install is the operator's decision: no rollout applies.
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("p")]);
    assert!(out.status.success(), "{}", text(&out));

    // A canary (wariness 0) is in the first wave.
    let h = TestHost::new("fleet-canary", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "5"]);
    with_url(&h, &m, "[rollout]\nwariness = 0.0\n");
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    assert_eq!(json(&out)["rollout"]["included"], true);
}

#[test]
fn a_paused_rollout_installs_nowhere() {
    let h = TestHost::new("fleet-paused", "1.0", HostOptions::default());
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 20),
        &["--percent", "100", "--paused"],
    );
    with_url(&h, &m, "[rollout]\nwariness = 0.0\n");
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(json(&out)["message"]
        .as_str()
        .is_some_and(|m| m.contains("paused")));
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.reboots(), 0);
}

#[test]
fn the_reboot_waits_for_the_maintenance_window() {
    let h = TestHost::new("fleet-window", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    // A window that is certainly closed now: it opens 6 hours from now.
    let now = abupdate::timefmt::now();
    let later = (now + 6 * 3600).rem_euclid(86400);
    let start = format!("{:02}:{:02}", later / 3600, later % 3600 / 60);
    with_url(
        &h,
        &m,
        &format!("[[reboot.window]]\ndays = [\"*\"]\nstart = \"{start}\"\nlength = \"1h\"\n"),
    );
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("waits for the maintenance window"),
        "{}",
        text(&out)
    );
    assert_eq!(h.reboots(), 0, "rebooted outside the window");
    assert_eq!(h.state()["transaction"]["phase"], "staged", "not staged");
    let status = json(&h.abupdate(&["--json", "status"]));
    assert!(status["reboot_window"].as_str().is_some(), "{status}");

    // Inside a window, the next tick reboots into the staged slot without
    // writing it again.
    let earlier = (now - 1800).rem_euclid(86400);
    let start = format!("{:02}:{:02}", earlier / 3600, earlier % 3600 / 60);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace("length = \"1h\"", "length = \"2h\"");
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.starts_with("start = ") {
                format!("start = \"{start}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&h.config, cfg).expect("config");
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already staged"), "{}", text(&out));
    assert_eq!(h.reboots(), 1, "no reboot inside the window");
}

#[test]
fn failures_back_off_and_now_skips_the_wait() {
    let h = TestHost::new("fleet-backoff", "1.0", HostOptions::default());
    let missing = h.dir.join("nowhere/release.json");
    with_url(&h, &missing, "");
    let out = h.abupdate(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(h.state()["metrics"]["consecutive_failures"], 1);
    let out = h.abupdate(&["--json", "update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["outcome"], "backing_off");
    let out = h.abupdate(&["update", "--now"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--now did not run: {}",
        text(&out)
    );
    assert_eq!(h.state()["metrics"]["consecutive_failures"], 2);
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    std::fs::create_dir_all(missing.parent().expect("dir")).expect("mkdir");
    for f in ["release.json", "release.json.minisig", "rootfs-2.0.img.zst"] {
        std::fs::copy(m.with_file_name(f), missing.with_file_name(f)).expect("copy");
    }
    assert!(h.abupdate(&["update", "--now"]).status.success());
    assert_eq!(
        h.state()["metrics"]["consecutive_failures"],
        0,
        "success must reset the backoff"
    );
}

#[test]
fn a_backoff_set_under_a_clock_far_ahead_does_not_stick_and_status_shows_the_backoff() {
    let h = TestHost::new("fleet-far-backoff", "1.0", HostOptions::default());
    let missing = h.dir.join("nowhere/release.json");
    with_url(&h, &missing, "");
    let out = h.abupdate(&["update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let now = abupdate::timefmt::now();

    // status shows the backoff the timer keeps, in text and JSON.
    let status = json(&h.abupdate(&["--json", "status"]));
    let until = status["backoff_until"]
        .as_str()
        .unwrap_or_else(|| panic!("no backoff_until in {status}"));
    let until = abupdate::timefmt::parse_rfc3339(until).expect("RFC 3339");
    assert!(
        until > now && until <= now + 6 * 3600 + 60,
        "{until} vs {now}"
    );
    let out = h.abupdate(&["status"]);
    assert!(
        text(&out).contains("backing off after 1 failed runs until"),
        "{}",
        text(&out)
    );

    // A failure under a clock ten years ahead left this behind.
    let path = h.state_dir.join("state.json");
    let mut state = h.state();
    let far = now + 10 * 365 * 86400;
    state["metrics"]["retry_after"] = far.into();
    std::fs::write(&path, state.to_string()).expect("write state");
    let status = json(&h.abupdate(&["--json", "status"]));
    assert!(status["backoff_until"].is_null(), "{status}");
    let out = h.abupdate(&["--json", "update"]);
    assert_ne!(
        json(&out)["outcome"],
        "backing_off",
        "a backoff ten years ahead held the timer: {}",
        text(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run did not happen: {}",
        text(&out)
    );
    let after = h.state()["metrics"]["retry_after"]
        .as_i64()
        .expect("retry_after");
    assert!(
        after <= now + 6 * 3600 + 60,
        "new backoff {after} beyond backoff_max"
    );
}

/// A webhook receiver: records each POST body, answers 204.
fn webhook_server() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/report", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, rx)
}

/// A webhook that accepts every connection, reads the request and never
/// answers; says on the channel each time a request came in.
fn hanging_webhook() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/report", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = tx.send(());
            held.push(stream);
        }
    });
    (url, rx)
}

#[test]
fn a_hanging_webhook_holds_neither_the_state_lock_nor_the_reboot_past_its_bound() {
    let (url, requests) = hanging_webhook();
    // Its credentials never reach the line that says it failed (found from
    // outside: every failed delivery wrote them to the journal).
    let url = format!(
        "{}?token=H00K-T0KEN",
        url.replacen("http://", "http://hook:h00k-s3cret@", 1)
    );
    let mut h = TestHost::new("fleet-hanging-webhook", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    with_url(
        &h,
        &m,
        &format!("[report]\nwebhook = \"{url}\"\nwebhook_timeout = \"2s\"\n"),
    );

    // The reboot waits for the report at most webhook_timeout.
    let start = std::time::Instant::now();
    let out = h.abupdate(&["update"]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1, "no reboot");
    assert!(requests.try_recv().is_ok(), "the report was never sent");
    // 2 s of webhook_timeout, with a generous margin for the install itself.
    assert!(
        took < std::time::Duration::from_secs(6),
        "update with a hanging webhook took {took:?}"
    );
    assert!(
        text(&out).contains("report not delivered: http://***@127.0.0.1:")
            && !text(&out).contains("h00k-s3cret")
            && !text(&out).contains("H00K-T0KEN"),
        "{}",
        text(&out)
    );

    // While a report hangs, the state lock is free: mark-good works.
    assert_eq!(h.boot(), "B");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replace("webhook_timeout = \"2s\"", "webhook_timeout = \"10s\""),
    )
    .expect("config");
    let start = std::time::Instant::now();
    let mut health = Command::new(crate::common::host::bin())
        .arg("--config")
        .arg(&h.config)
        .arg("health")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn health");
    requests
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("health never reported its commit");
    // The report is on its way; give health a moment to finish its flow.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = h.abupdate(&["mark-good"]);
    let status = health.wait().expect("health");
    assert!(
        out.status.success(),
        "mark-good while the webhook hangs: {}",
        text(&out)
    );
    assert!(status.success());
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(14),
        "health with a hanging webhook took {took:?}"
    );
}

/// Release 2.0 for `h` at its update URL, with its verdicts reported to a
/// textfile (the path given back with the manifest's) and the webhook at
/// `url`.
fn reporting_release(h: &TestHost, url: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let prom = h.dir.join("abupdate.prom");
    with_url(
        h,
        &m,
        &format!(
            "[report]\ntextfile = \"{}\"\nwebhook = \"{url}\"\n",
            prom.display()
        ),
    );
    (m, prom)
}

#[test]
fn verdicts_are_reported_as_a_prometheus_textfile_and_a_webhook() {
    let (url, bodies) = webhook_server();
    let mut h = TestHost::new("fleet-report", "1.0", HostOptions::default());
    let (m, prom) = reporting_release(&h, &url);
    assert!(h.abupdate(&["update"]).status.success());
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));

    let events: Vec<serde_json::Value> = bodies
        .try_iter()
        .map(|b| serde_json::from_str(&b).expect("event json"))
        .collect();
    let outcomes: Vec<&str> = events
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["installed", "committed"], "{events:?}");
    assert_eq!(events[1]["release"], "2.0");
    let doc: abupdate::manifest::ManifestDoc =
        serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("doc");
    let build = doc.build();
    assert_eq!(events[0]["build"], build.as_str(), "{events:?}");
    assert_eq!(events[1]["build"], build.as_str(), "{events:?}");
    assert_eq!(events[1]["booted_slot"], "B");
    let host = events[1]["host"].as_str().expect("host id");
    assert_eq!(host.len(), 32);
    assert!(
        !host.contains("0123456789abcdef"),
        "the raw machine id leaked"
    );

    // The reference parser of the text format reads every family. (The
    // release came from a file: no bytes were downloaded.)
    let script = format!(
        "from prometheus_client.parser import text_string_to_metric_families as p\n\
         fams = {{f.name: f for f in p(open({path:?}).read())}}\n\
         s = {{(x.name, tuple(sorted(x.labels.items()))): x.value for f in fams.values() for x in f.samples}}\n\
         c = ('compatible', {COMPATIBLE:?})\n\
         assert s[('abupdate_booted_info', (c, ('slot', 'B'), ('version', '2.0')))] == 1, s\n\
         assert s[('abupdate_commits_total', (c,))] == 1, s\n\
         assert s[('abupdate_installs_total', (c,))] == 1, s\n\
         assert s[('abupdate_downloaded_bytes_total', (c,))] == 0, s\n\
         assert s[('abupdate_last_success_timestamp_seconds', (c,))] > 1.7e9, s\n\
         assert s[('abupdate_release_outcome', (('build', {build:?}), c, ('outcome', 'committed'), ('release', '2.0')))] > 1.7e9, s\n\
         assert fams['abupdate_failures'].type == 'counter', fams\n\
         print(len(fams), 'families')\n",
        path = prom.display().to_string()
    );
    let out = run(Command::new("python3").arg("-c").arg(script));
    assert!(
        out.status.success(),
        "textfile rejected: {}\n{}",
        text(&out),
        std::fs::read_to_string(&prom).unwrap_or_default()
    );

    // A failure is reported with its kind, and counted in the textfile.
    let bad = h.dir.join("r2/release.json.minisig");
    std::fs::write(&bad, "garbage").expect("write");
    let m3 = h.pack("r3", "3.0", &image("3.0", 1 << 20), &[]);
    for sig in crate::common::host::signature_files(&m3) {
        std::fs::write(sig, "garbage").expect("write");
    }
    let out = h.abupdate(&["install", "--no-reboot", m3.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(1));
    let failed: serde_json::Value = serde_json::from_str(
        &bodies
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("failure event"),
    )
    .expect("json");
    assert_eq!(
        (failed["outcome"].as_str(), failed["error_kind"].as_str()),
        (Some("failed"), Some("signature")),
        "{failed}"
    );
    let text_ = std::fs::read_to_string(&prom).expect("prom");
    assert!(
        text_.contains(&format!(
            "abupdate_failures_total{{kind=\"signature\",compatible=\"{COMPATIBLE}\"}} 1"
        )),
        "{text_}"
    );
}

/// Review G: a host without an RTC boots its trial on a clock behind the
/// one it installed under (the image's build date, 2000) until NTP syncs,
/// and its commit, stamped before its install, left the host counted as
/// installed, never committed (a rollout never reached `advance_when`), and
/// moved `last_success` back. The install's record here is set ahead of
/// the trial's clock (ten years) to stand for that: the commit is still
/// stamped after it, alike in the state, the textfile and the webhook
/// report, and `fleet` counts the host committed.
#[test]
fn a_commit_under_a_clock_behind_the_install_is_still_its_later_step() {
    let (url, bodies) = webhook_server();
    let mut h = TestHost::new("fleet-clock-behind", "1.0", HostOptions::default());
    let (m, prom) = reporting_release(&h, &url);
    assert!(h.abupdate(&["update"]).status.success());
    let recv = || -> serde_json::Value {
        let body = bodies
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a report");
        serde_json::from_str(&body).expect("event json")
    };
    let mut installed = recv();
    assert_eq!(installed["outcome"], "installed", "{installed}");
    let ahead = crate::common::host::now() + 10 * 365 * 86400;
    h.edit_state(|s| {
        for r in s["outcomes"].as_array_mut().expect("outcomes") {
            r["time"] = ahead.into();
        }
        s["metrics"]["last_success"] = ahead.into();
    });
    installed["time"] = ahead.into();

    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    let committed = recv();
    assert_eq!(committed["outcome"], "committed", "{committed}");
    assert_eq!(committed["time"], ahead + 1, "{committed}");
    let state = h.state();
    let time_of = |outcome: &str| {
        state["outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .find(|r| r["outcome"] == outcome)
            .map(|r| r["time"].clone())
    };
    assert_eq!(time_of("installed"), Some(ahead.into()), "{state}");
    assert_eq!(time_of("committed"), Some((ahead + 1).into()), "{state}");
    assert_eq!(state["metrics"]["last_success"], ahead + 1, "moved back");
    let prom_text = std::fs::read_to_string(&prom).expect("textfile");
    assert!(
        prom_text.lines().any(
            |l| l.starts_with("abupdate_release_outcome{release=\"2.0\"")
                && l.contains("outcome=\"committed\"")
                && l.ends_with(&format!(" {}", ahead + 1))
        ),
        "{prom_text}"
    );

    let reports = h.dir.join("reports.jsonl");
    std::fs::write(&reports, format!("{installed}\n{committed}\n")).expect("reports");
    let out = fleet(
        &m,
        &[&h.secret_key],
        &reports,
        &["--fleet-size", "1", "--dry-run"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (j["installed"].as_u64(), j["committed"].as_u64()),
        (Some(0), Some(1)),
        "{j}"
    );
}

#[test]
fn the_operator_pauses_a_failing_release_by_re_signing_its_manifest() {
    let h = TestHost::new("fleet-operator", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let reports = h.dir.join("reports.jsonl");
    let mut lines = String::new();
    for i in 0..6 {
        lines.push_str(&format!(
            "{{\"host\":\"h{i}\",\"compatible\":\"{COMPATIBLE}\",\"release\":\"2.0\",\"booted_slot\":\"A\",\"booted_version\":\"1.0\",\"outcome\":\"rolled_back\",\"error_kind\":\"health\",\"message\":null,\"time\":{i}}}\n"
        ));
    }
    std::fs::write(&reports, lines).expect("reports");
    let keys = h.dir.join("keys");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "--json",
            "fleet",
            "--manifest",
            m.to_str().expect("p"),
            "--keys",
            keys.to_str().expect("p"),
            "--secret",
            h.secret_key.to_str().expect("p"),
            "--reports",
            reports.to_str().expect("p"),
            "--max-failures",
            "5",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let out = run(Command::new(crate::common::host::bin()).args(args(&[])));
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (j["action"].as_str(), j["failed"].as_u64()),
        (Some("pause"), Some(6)),
        "{j}"
    );
    // Re-signed: the real minisign accepts the new manifest.
    let out = run(Command::new("minisign")
        .arg("-Vm")
        .arg(&m)
        .arg("-p")
        .arg(&h.public_key));
    assert!(
        out.status.success(),
        "minisign rejects the re-signed manifest: {}",
        text(&out)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("m")).expect("json");
    assert_eq!(doc["rollout"]["paused"], true);
    // Hosts now see it paused.
    with_url(&h, &m, "[rollout]\nwariness = 0.0\n");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("paused"), "{}", text(&out));
}

#[test]
fn a_site_cache_serves_the_second_host_and_a_resumed_download() {
    use crate::common::http::Nginx;
    let h1 = TestHost::new(
        "fleet-cache-1",
        "1.0",
        HostOptions {
            slot_size: 40 << 20,
            ..Default::default()
        },
    );
    let m = h1.pack("r2", "2.0", &image("2.0", 32 << 20), &["--no-compress"]);
    let Some(origin) = Nginx::start(m.parent().expect("dir"), "") else {
        return;
    };
    // The site cache: a stock nginx reverse proxy with proxy_cache in front
    // of the origin; it fetches each file from the origin once, then serves
    // whole files and byte ranges from its cache.
    let cache_dir = crate::common::host::scratch("site-cache");
    let empty = crate::common::host::scratch("site-cache-root");
    let extra = format!(
        "location / {{ proxy_pass http://127.0.0.1:{port}; proxy_cache site; proxy_cache_valid 200 1h; \
         proxy_cache_key $uri; add_header X-Cache $upstream_cache_status; }}",
        port = origin.port
    );
    let Some(cache) = Nginx::start_with_http(
        &empty,
        &extra,
        &format!(
            "proxy_cache_path {} keys_zone=site:1m max_size=1g;",
            cache_dir.display()
        ),
    ) else {
        return;
    };
    let origin_url = origin.url("release.json");
    let mirror = format!("mirror = \"http://127.0.0.1:{}\"\n", cache.port);

    let hosts: Vec<TestHost> = (2..=3)
        .map(|i| {
            TestHost::new(
                &format!("fleet-cache-{i}"),
                "1.0",
                HostOptions {
                    slot_size: 40 << 20,
                    ..Default::default()
                },
            )
        })
        .collect();
    for h in std::iter::once(&h1).chain(hosts.iter()) {
        let cfg = std::fs::read_to_string(&h.config).expect("config");
        std::fs::write(
            &h.config,
            cfg.replace("[update]\n", &format!("[update]\n{mirror}")),
        )
        .expect("config");
    }
    // Every host trusts the same release key.
    for h in &hosts {
        std::fs::copy(&h1.public_key, &h.public_key).expect("key");
    }
    let payload = "rootfs-2.0.img";
    let origin_payload_gets = || {
        origin
            .log()
            .iter()
            .filter(|l| l.uri.ends_with(payload))
            .count()
    };

    let out = h1.abupdate(&["install", "--no-reboot", &origin_url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(origin_payload_gets(), 1);
    let out = hosts[0].abupdate(&["install", "--no-reboot", &origin_url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        origin_payload_gets(),
        1,
        "the second host of the site went to the origin"
    );

    #[cfg(feature = "failpoints")]
    {
        use std::os::unix::process::ExitStatusExt;
        let h = &hosts[1];
        let out = h.abupdate_env(
            &["install", "--no-reboot", &origin_url],
            &[("ABUPDATE_FAILPOINT", "chunk-written:3")],
        );
        assert_eq!(out.status.signal(), Some(6), "{}", text(&out));
        let out = h.abupdate(&["install", "--no-reboot", &origin_url]);
        assert!(out.status.success(), "{}", text(&out));
        let cached: Vec<_> = cache
            .wait_log(1)
            .into_iter()
            .filter(|l| l.uri.ends_with(payload))
            .collect();
        let resumed = cached
            .iter()
            .find(|l| l.range.is_some())
            .expect("a resumed range request reached the cache");
        assert_eq!(resumed.status, 206, "{cached:?}");
        assert_eq!(
            origin_payload_gets(),
            1,
            "the resumed download went to the origin"
        );
        println!("site cache log for the payload: {cached:?}");
    }
}

/// One report as a host's webhook posts it.
fn report(host: &str, compatible: &str, outcome: &str, kind: Option<&str>, time: i64) -> String {
    serde_json::json!({
        "host": host, "compatible": compatible, "release": "2.0", "booted_slot": "A",
        "booted_version": "1.0", "outcome": outcome, "error_kind": kind, "message": null,
        "time": time,
    })
    .to_string()
}

/// `n` hosts `bad0`… of the release's `compatible` that rolled it back
/// (their checks failed) at `time`.
fn rollbacks(n: usize, time: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            report(
                &format!("bad{i}"),
                COMPATIBLE,
                "rolled_back",
                Some("health"),
                time,
            )
        })
        .collect()
}

/// `abupdate fleet` on manifest `m`, signing with `secrets`.
fn fleet(m: &Path, secrets: &[&Path], reports: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(crate::common::host::bin());
    c.args(["--json", "fleet", "--manifest"]).arg(m);
    for s in secrets {
        c.arg("--secret").arg(s);
    }
    c.arg("--reports").arg(reports).args(extra);
    run(&mut c)
}

/// Whether the real minisign accepts `sig` (default `m.minisig`) over `m`.
fn minisign_accepts(m: &Path, public: &Path, sig: Option<&Path>) -> bool {
    let mut c = Command::new("minisign");
    c.arg("-Vm").arg(m).arg("-p").arg(public);
    if let Some(s) = sig {
        c.arg("-x").arg(s);
    }
    run(&mut c).status.success()
}

fn stderr_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err.trim_end().to_string()
}

/// Issue 20.1: `fleet` signed whatever `release.json` held. Someone who can
/// write the manifest (image URL and hash changed, the old signature kept)
/// and post one report got the tampered content signed with the release
/// key. Now the manifest must pass the hosts' trust gate first: with the
/// hosts' keys (`--keys`), and without them against the re-signing key.
#[test]
fn fleet_refuses_to_re_sign_a_tampered_manifest() {
    let h = TestHost::new("fleet-tampered", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("m")).expect("json");
    doc["images"]["rootfs"]["url"] = "http://evil.example/rootfs.img.zst".into();
    doc["images"]["rootfs"]["sha256"] = "0".repeat(64).into();
    std::fs::write(&m, serde_json::to_vec_pretty(&doc).expect("json")).expect("tamper");
    assert!(!minisign_accepts(&m, &h.public_key, None));
    let reports = h.dir.join("reports.jsonl");
    std::fs::write(&reports, report("h1", COMPATIBLE, "committed", None, 1)).expect("r");
    let dir = m.parent().expect("dir");
    let before = snapshot(dir);
    let keys = h.dir.join("keys");
    for extra in [vec![], vec!["--keys", keys.to_str().expect("p")]] {
        let mut args = vec!["--waves", "1,5,25,100", "--fleet-size", "100"];
        args.extend(extra.iter());
        let out = fleet(&m, &[&h.secret_key], &reports, &args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", text(&out));
        let line = stderr_line(&out);
        assert!(
            line.contains("release.json") && line.contains("signature does not match"),
            "{line}"
        );
        assert_eq!(snapshot(dir), before, "{extra:?}: the directory changed");
        assert!(
            !minisign_accepts(&m, &h.public_key, None),
            "the tampered manifest got signed"
        );
    }
}

/// Issue 20.2: `fleet --secret other.key` (a key the hosts do not trust)
/// replaced a good signature, so hosts refused the manifest and never saw
/// the pause. Now only the keys that signed it may re-sign it.
#[test]
fn fleet_refuses_a_key_that_did_not_sign_the_manifest() {
    let h = TestHost::new("fleet-wrong-key", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let reports = h.dir.join("reports.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            report(
                &format!("h{i}"),
                COMPATIBLE,
                "rolled_back",
                Some("health"),
                i,
            )
        })
        .collect();
    std::fs::write(&reports, lines.join("\n")).expect("r");
    let other_keys = h.dir.join("other-keys");
    std::fs::create_dir_all(&other_keys).expect("mkdir");
    let other = h.dir.join("other.key");
    let out = run(Command::new(crate::common::host::bin())
        .args(["keygen", "--secret"])
        .arg(&other)
        .arg("--public")
        .arg(other_keys.join("other.pub")));
    assert!(out.status.success(), "{}", text(&out));
    let dir = m.parent().expect("dir");
    let before = snapshot(dir);
    let out = fleet(&m, &[&other], &reports, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = stderr_line(&out);
    assert!(
        line.contains("release.json") && line.contains("untrusted key"),
        "{line}"
    );
    assert_eq!(snapshot(dir), before, "the directory changed");
    // Trusted by the hosts too, but it did not sign this manifest.
    std::fs::copy(&h.public_key, other_keys.join("release.pub")).expect("copy");
    let keys = ["--keys", other_keys.to_str().expect("p")];
    let out = fleet(&m, &[&other], &reports, &keys);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr_line(&out).contains("did not sign"), "{}", text(&out));
    assert_eq!(snapshot(dir), before, "the directory changed");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(&h.config, cfg + "[rollout]\nwariness = 0.0\n").expect("config");
    let out = h.abupdate(&["check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    // The right key pauses it, and the hosts see the pause.
    let out = fleet(&m, &[&h.secret_key], &reports, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "pause");
    let out = h.abupdate(&["check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("paused"), "{}", text(&out));
}

/// m-of-n: a manifest two keys signed is re-signed by both or not at all.
/// One key alone would leave the other signature stale over the new
/// content, and hosts with `threshold = 2` would refuse the paused manifest.
#[test]
fn fleet_with_m_of_n_needs_every_key_that_signed() {
    let h = TestHost::new("fleet-m-of-n", "1.0", HostOptions::default());
    let second = h.dir.join("second.key");
    let out = run(Command::new(crate::common::host::bin())
        .args(["keygen", "--secret"])
        .arg(&second)
        .arg("--public")
        .arg(h.dir.join("keys/second.pub")));
    assert!(out.status.success(), "{}", text(&out));
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replace("[update]\n", "[update]\nthreshold = 2\n") + "[rollout]\nwariness = 0.0\n",
    )
    .expect("config");
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 20),
        &["--percent", "1", "--secret", second.to_str().expect("p")],
    );
    let out = h.abupdate(&["check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(100), "2 of 2: {}", text(&out));
    let reports = h.dir.join("reports.jsonl");
    std::fs::write(&reports, report("h1", COMPATIBLE, "committed", None, 1)).expect("r");
    let keys = h.dir.join("keys");
    let k = ["--keys", keys.to_str().expect("p"), "--threshold", "2"];
    let waves = ["--waves", "1,5,100", "--fleet-size", "100"];
    let dir = m.parent().expect("dir");
    let before = snapshot(dir);
    for args in [vec![], k.to_vec()] {
        let args: Vec<&str> = args.into_iter().chain(waves).collect();
        let out = fleet(&m, &[&h.secret_key], &reports, &args);
        assert_eq!(out.status.code(), Some(1), "one key: {}", text(&out));
        stderr_line(&out);
        assert_eq!(snapshot(dir), before, "the directory changed");
    }
    let args: Vec<&str> = k.into_iter().chain(waves).collect();
    let out = fleet(&m, &[&h.secret_key, &second], &reports, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "advance");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("m")).expect("json");
    assert_eq!(doc["rollout"]["percent"], 5.0);
    assert!(minisign_accepts(&m, &h.public_key, None));
    assert!(minisign_accepts(
        &m,
        &keys.join("second.pub"),
        Some(&m.with_file_name("release.json.1.minisig"))
    ));
    let out = h.abupdate(&["--json", "check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
}

/// Issue 20.4: one `other-arm64` host's commit advanced our release and
/// five of its rollbacks paused it; network stalls counted as failures of
/// the release; one torn report line, one without `compatible`, or a
/// directory of pretty-printed reports made `fleet` exit 1, so nothing
/// could be paused. Now only what the release caused on hosts of its own
/// `compatible` counts, and unreadable reports are skipped and counted.
#[test]
fn fleet_counts_only_what_the_release_caused_on_its_compatible() {
    let h = TestHost::new("fleet-counting", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let reports = h.dir.join("reports");
    std::fs::create_dir_all(&reports).expect("mkdir");
    let mut lines = vec![report("arm-ok", "other-arm64", "committed", None, 1)];
    lines.extend((0..5).map(|i| report(&format!("arm{i}"), "other-arm64", "rolled_back", None, 1)));
    lines.extend((0..6).map(|i| {
        report(
            &format!("stall{i}"),
            COMPATIBLE,
            "failed",
            Some("network"),
            1,
        )
    }));
    lines.push(report("busy", COMPATIBLE, "failed", Some("locked"), 1));
    lines.push("{\"host\":\"torn\",\"compatible\":\"abupd".into());
    lines.push(r#"{"host":"old-agent","release":"2.0","outcome":"rolled_back","time":1}"#.into());
    std::fs::write(reports.join("a.jsonl"), lines.join("\n") + "\n").expect("r");
    // One pretty-printed report per file, as a receiver may store them.
    let committed: serde_json::Value =
        serde_json::from_str(&report("ours", COMPATIBLE, "committed", None, 2)).expect("json");
    std::fs::write(
        reports.join("ours.json"),
        serde_json::to_string_pretty(&committed).expect("json"),
    )
    .expect("r");
    let out = fleet(
        &m,
        &[&h.secret_key],
        &reports,
        &["--waves", "1,5,25,100", "--fleet-size", "100"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["failed"].as_u64(),
            j["not_counted"].as_u64(),
            j["malformed_reports"].as_u64()
        ),
        (Some("advance"), Some(1), Some(0), Some(7), Some(2)),
        "{j}"
    );
    // Our own hosts' rollbacks do pause it.
    let ours = rollbacks(5, 3);
    std::fs::write(reports.join("b.jsonl"), ours.join("\n")).expect("r");
    let out = fleet(&m, &[&h.secret_key], &reports, &["--max-failures", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "pause", "{}", text(&out));
}

/// Found from outside (stop 47): a report file cut off mid-write while the
/// receiver wrote pretty-printed JSON hid every report before the tear
/// (all of them counted malformed), and the rollout advanced over six
/// rollbacks. The tear costs only itself: the rollout pauses.
#[test]
fn a_report_file_torn_mid_write_still_counts_the_failures_before_the_tear() {
    let h = TestHost::new("fleet-torn-reports", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let reports = h.dir.join("reports");
    std::fs::create_dir_all(&reports).expect("mkdir");
    let good: Vec<String> = (0..3)
        .map(|i| report(&format!("ok{i}"), COMPATIBLE, "committed", None, 1))
        .collect();
    std::fs::write(reports.join("good.jsonl"), good.join("\n") + "\n").expect("r");
    let mut failed: Vec<String> = (0..6)
        .map(|i| {
            let r = report(
                &format!("bad{i}"),
                COMPATIBLE,
                "rolled_back",
                Some("health"),
                2,
            );
            let v: serde_json::Value = serde_json::from_str(&r).expect("json");
            serde_json::to_string_pretty(&v).expect("pretty")
        })
        .collect();
    failed.push("{\"host\":\"torn\",\"compat".into());
    std::fs::write(reports.join("failed.json"), failed.join("\n")).expect("r");
    let out = fleet(
        &m,
        &[&h.secret_key],
        &reports,
        &[
            "--waves",
            "1,5,25,100",
            "--fleet-size",
            "100",
            "--max-failures",
            "5",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["failed"].as_u64(),
            j["malformed_reports"].as_u64()
        ),
        (Some("pause"), Some(3), Some(6), Some(1)),
        "{j}"
    );
}

/// Issue 20.5 (operator half) and a minor: every re-sign advances `created`
/// (now, and after the replaced manifest's even when this clock is behind),
/// so hosts can tell the paused copy from a cached unpaused one; unknown
/// fields, and the release's track, are signed content and survive the
/// re-sign.
#[test]
fn every_re_sign_advances_created_and_keeps_unknown_fields() {
    use abupdate::timefmt::{now, parse_rfc3339};
    let h = TestHost::new("fleet-created", "1.0", HostOptions::default());
    // Published by a build machine whose clock is 10 minutes ahead.
    let ahead = abupdate::timefmt::format_rfc3339(now() + 600);
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 20),
        &["--percent", "1", "--created", &ahead, "--track", "stable"],
    );
    h.resign(&m, |doc| {
        doc["x-vendor"] = serde_json::json!({"build": "b-1234"});
        doc["rollout"]["x-note"] = "canaries first".into();
        serde_json::to_string_pretty(doc).ok()
    });
    let reports = h.dir.join("reports.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| report(&format!("h{i}"), COMPATIBLE, "rolled_back", None, i))
        .collect();
    std::fs::write(&reports, lines.join("\n")).expect("r");
    let created = |m: &Path| {
        let d: serde_json::Value =
            serde_json::from_slice(&std::fs::read(m).expect("m")).expect("json");
        parse_rfc3339(d["created"].as_str().expect("created")).expect("time")
    };
    let first = created(&m);
    let out = fleet(&m, &[&h.secret_key], &reports, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("m")).expect("json");
    assert_eq!(doc["rollout"]["paused"], true);
    assert_eq!(doc["x-vendor"]["build"], "b-1234", "{doc}");
    assert_eq!(doc["rollout"]["x-note"], "canaries first", "{doc}");
    assert_eq!(doc["track"], "stable", "the track is signed content: {doc}");
    assert!(created(&m) > first, "created did not advance: {doc}");
    assert!(minisign_accepts(&m, &h.public_key, None));
}

/// A minor of issue 20: `--waves 100,1,5,25` jumped from 1% to 100%. An
/// operator's typo is refused, not guessed at.
#[test]
fn fleet_refuses_waves_out_of_order() {
    let h = TestHost::new("fleet-waves", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let reports = h.dir.join("reports.jsonl");
    std::fs::write(&reports, report("h1", COMPATIBLE, "committed", None, 1)).expect("r");
    let before = std::fs::read(&m).expect("m");
    for waves in ["100,1,5,25", "1,5,25", "1,nan,100"] {
        let out = fleet(
            &m,
            &[&h.secret_key],
            &reports,
            &["--waves", waves, "--fleet-size", "100"],
        );
        assert_eq!(out.status.code(), Some(2), "{waves}: {}", text(&out));
        assert!(stderr_line(&out).contains("--waves"), "{}", text(&out));
    }
    assert_eq!(std::fs::read(&m).expect("m"), before);
}

/// Issue 20.3, the host's half: a host that fetched the new manifest while
/// the old signature was still in place (between the publisher's two
/// renames, a kill there, or a cache holding the old `.minisig`) verifies
/// the manifest from the signatures bound to its bytes.
#[test]
fn a_host_between_the_manifest_and_its_signature_verifies_the_new_manifest() {
    let h = TestHost::new("fleet-mid-publish", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let sig = m.with_file_name("release.json.minisig");
    let old_sig = std::fs::read(&sig).expect("sig");
    let reports = h.dir.join("reports.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| report(&format!("h{i}"), COMPATIBLE, "rolled_back", None, i))
        .collect();
    std::fs::write(&reports, lines.join("\n")).expect("r");
    let out = fleet(&m, &[&h.secret_key], &reports, &[]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&sig, old_sig).expect("the instant between the renames");
    assert!(!minisign_accepts(&m, &h.public_key, None));
    let out = h.abupdate(&["check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("paused"), "{}", text(&out));
    // A copy that is neither (no bound signature of its bytes) is refused.
    let mut body = std::fs::read(&m).expect("m");
    body.extend_from_slice(b" ");
    std::fs::write(&m, body).expect("m");
    let out = h.abupdate(&["check", m.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("signature does not match"),
        "{}",
        text(&out)
    );
}

/// With `--out`, the published copy carries the rollout's state: a pause
/// there is never undone by a later run deciding from `--manifest` alone,
/// and an `--out` holding another release is never replaced.
#[test]
fn fleet_with_out_decides_from_the_published_copy_and_keeps_other_releases() {
    let h = TestHost::new("fleet-out", "1.0", HostOptions::default());
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 16),
        &["--waves", "2,10,50,100"],
    );
    let other = h.pack("live", "3.0", &image("3.0", 1 << 16), &[]);
    let live = other.parent().expect("dir");
    let reports = h.dir.join("reports.jsonl");
    let now = abupdate::timefmt::now();
    std::fs::write(
        &reports,
        report("h1", COMPATIBLE, "rolled_back", None, now) + "\n",
    )
    .expect("reports");
    let into = |out: &Path| {
        let out = out.to_str().expect("path");
        let args = ["--fleet-size", "100", "--max-failures", "1", "--out", out];
        fleet(&m, &[h.secret_key.as_path()], &reports, &args)
    };
    let before = snapshot(live);
    let out = into(live);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("holds release 3.0"), "{}", text(&out));
    assert_eq!(snapshot(live), before, "another release was replaced");

    let sync = h.dir.join("sync");
    let run = |what: &str| {
        let out = into(&sync);
        assert!(out.status.success(), "{what}: {}", text(&out));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sync.join("release.json")).expect("published"))
                .expect("json");
        (json(&out)["action"].as_str().unwrap_or("").to_string(), doc)
    };
    let (action, doc) = run("the failure");
    assert_eq!(action, "pause");
    assert_eq!(doc["rollout"]["paused"], true, "{doc}");
    // The failure is gone from the reports (a rotated log), commits came:
    // the published copy stays paused.
    let commits: Vec<String> = (0..3)
        .map(|i| report(&format!("c{i}"), COMPATIBLE, "committed", None, now + 60))
        .collect();
    std::fs::write(&reports, commits.join("\n") + "\n").expect("reports");
    let (action, doc) = run("healthy reports");
    assert_eq!(action, "keep", "{doc}");
    assert_eq!(doc["rollout"]["paused"], true, "a pause was undone: {doc}");
}

/// The outside review: with `--out`, a pause made by hand in `--manifest`
/// (signed, with the same or a later `created`) was dropped or never
/// written, and another build of the same version replaced the published
/// one with its wave state. A pause is published whatever the fleet says;
/// another build is refused, naming both.
#[test]
fn fleet_with_out_publishes_a_pause_made_by_hand_and_refuses_another_build() {
    let h = TestHost::new("fleet-out-pause", "1.0", HostOptions::default());
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 1 << 16),
        &["--waves", "2,10,50,100"],
    );
    let reports = h.dir.join("reports.jsonl");
    let now = abupdate::timefmt::now();
    let commits: Vec<String> = (0..3)
        .map(|i| report(&format!("c{i}"), COMPATIBLE, "committed", None, now))
        .collect();
    std::fs::write(&reports, commits.join("\n") + "\n").expect("reports");
    let sync = h.dir.join("sync");
    let into = || {
        let out = sync.to_str().expect("path");
        fleet(
            &m,
            &[h.secret_key.as_path()],
            &reports,
            &["--fleet-size", "100", "--out", out],
        )
    };
    let published = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(sync.join("release.json")).expect("published"))
            .expect("json")
    };
    let out = into();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "advance", "{}", text(&out));
    assert_eq!(published()["rollout"]["percent"], 10.0);

    // Paused by hand in --manifest, `created` unchanged (older than the
    // published copy's), then again with a later `created`.
    for later in [false, true] {
        let _ = std::fs::remove_dir_all(&sync);
        let out = into();
        assert!(out.status.success(), "{}", text(&out));
        let original = std::fs::read(&m).expect("manifest");
        h.resign(&m, |v| {
            v["rollout"]["paused"] = true.into();
            if later {
                v["created"] = abupdate::timefmt::format_rfc3339(now + 5).into();
            }
            None
        });
        let out = into();
        assert!(out.status.success(), "later={later}: {}", text(&out));
        assert_eq!(
            json(&out)["action"],
            "pause",
            "later={later}: {}",
            text(&out)
        );
        let doc = published();
        assert_eq!(doc["rollout"]["paused"], true, "later={later}: {doc}");
        assert!(minisign_accepts(
            &sync.join("release.json"),
            &h.public_key,
            None
        ));
        // Healthy reports do not undo it.
        let out = into();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(published()["rollout"]["paused"], true);
        std::fs::write(&m, original).expect("restore");
        h.resign(&m, |_| None);
    }

    // Another build of 2.0 (another image) is refused; the published copy
    // stays as it was.
    let _ = std::fs::remove_dir_all(&sync);
    assert!(into().status.success());
    let before = snapshot(&sync);
    let rebuilt = h.pack(
        "r2b",
        "2.0",
        &image("2.0b", 1 << 16),
        &["--waves", "2,10,50,100"],
    );
    let out = fleet(
        &rebuilt,
        &[h.secret_key.as_path()],
        &reports,
        &["--fleet-size", "100", "--out", sync.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = stderr_line(&out);
    assert!(
        line.contains("another build of release 2.0") && line.contains("r2b"),
        "{line}"
    );
    assert_eq!(snapshot(&sync), before, "the published copy changed");
}

/// Found from outside: `fleet --dry-run` ("nothing written") made the
/// `--out` directory and removed what a killed run had left in the
/// release directory. It changes nothing on disk: the release directory
/// byte for byte, no `--out` made; the decision is still told.
#[test]
fn a_dry_run_changes_nothing_on_disk() {
    let h = TestHost::new("fleet-dry-run", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &["--percent", "1"]);
    let dir = m.parent().expect("dir");
    std::fs::write(
        dir.join(".rootfs-9.img.zst.abupdate-tmp"),
        b"left by a killed run",
    )
    .expect("leftover");
    let reports = h.dir.join("reports.jsonl");
    std::fs::write(&reports, rollbacks(6, 2).join("\n") + "\n").expect("reports");
    let before = crate::common::host::snapshot(dir);
    let out_dir = h.dir.join("published/sub");
    let out = fleet(
        &m,
        &[&h.secret_key],
        &reports,
        &[
            "--fleet-size",
            "100",
            "--max-failures",
            "5",
            "--dry-run",
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "pause", "{}", text(&out));
    assert_eq!(crate::common::host::snapshot(dir), before);
    assert!(!h.dir.join("published").exists(), "--out made by a dry run");
}
