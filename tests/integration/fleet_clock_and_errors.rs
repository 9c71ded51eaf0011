//! `fleet --prometheus` decides at the store's now, and only when the
//! store's clock agrees with this machine's; a redirected query and a
//! mistyped key or file path are errors that say so (outside review,
//! findings 3 and 8).
//!
//! The scripted query APIs here tell the controller's queries apart by
//! what their answers must carry: the tally's is grouped by `outcome`
//! (and `in_wave`: the 5 committed hosts are the wave's), the wave's by
//! `in_wave` alone, the store's memory of the wave's start is `count(up)`
//! (its 50 targets); every other query is a count (an empty vector: 0).

use crate::common::host::{bin, image, run, snapshot, text, HostOptions, TestHost, COMPATIBLE};
use crate::common::hostile_server::{head, Req, Server};
use crate::common::prometheus as prom;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The form fields of a query (`query`, `time`, `timeout`), decoded.
fn form(req: &Req) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).expect("utf-8")
    };
    String::from_utf8_lossy(&req.body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn field(req: &Req, name: &str) -> Option<String> {
    form(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn answer(stream: &mut TcpStream, date: i64, body: &str) {
    answer_with(stream, "200 OK", date, body)
}

/// [`answer`] under HTTP status `status` (`"503 Service Unavailable"`).
fn answer_with(stream: &mut TcpStream, status: &str, date: i64, body: &str) {
    let date = httpdate(date);
    head(
        stream,
        status,
        &format!(
            "Content-Type: application/json\r\nDate: {date}\r\nContent-Length: {}\r\n",
            body.len()
        ),
    );
    let _ = stream.write_all(body.as_bytes());
}

/// An HTTP `Date` (IMF-fixdate) of Unix seconds `t`.
fn httpdate(t: i64) -> String {
    let out = run(Command::new("date")
        .args(["-u", "-d"])
        .arg(format!("@{t}"))
        .arg("+%a, %d %b %Y %H:%M:%S GMT"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A query API whose clock is `ahead` seconds ahead of this machine's
/// (its `time()` and its `Date`, whole seconds), holding a healthy 10%
/// wave: 5 of its 5 hosts committed (of 50). Each sample is stamped with
/// the instant asked.
fn healthy_store(ahead: i64) -> Server {
    store(ahead, "200 OK")
}

/// [`healthy_store`], but the tally's answer (its body the same) comes
/// under HTTP status `tally_status`.
fn store(ahead: i64, tally_status: &'static str) -> Server {
    Server::start(move |req, s| {
        let now = abupdate::timefmt::now() + ahead;
        let query = field(req, "query").unwrap_or_default();
        let Some(at) = field(req, "time") else {
            // The store's now: `time()` evaluated at its own clock.
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{now},"{now}"]}}]}}}}"#
            );
            return answer(s, now, &body);
        };
        let mut status = "200 OK";
        let result = if query.contains("by (outcome") {
            status = tally_status;
            format!(r#"[{{"metric":{{"outcome":"committed","in_wave":"1"}},"value":[{at},"5"]}}]"#)
        } else if query.contains("in_wave") {
            format!(
                r#"[{{"metric":{{"in_wave":"1"}},"value":[{at},"5"]}},{{"metric":{{"in_wave":"0"}},"value":[{at},"45"]}}]"#
            )
        } else if query == "count(up)" {
            // The store remembers the wave's start: its 50 targets.
            format!(r#"[{{"metric":{{}},"value":[{at},"50"]}}]"#)
        } else {
            "[]".into()
        };
        answer_with(
            s,
            status,
            now,
            &format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#
            ),
        )
    })
}

/// A release of `COMPATIBLE` in its 10% wave (then 50, 100), published
/// two hours ago: soaked.
fn release(h: &TestHost, name: &str) -> PathBuf {
    let created = abupdate::timefmt::now() - 7200;
    h.pack(
        name,
        "2.0",
        &image("2.0", 1 << 16),
        &[
            "--waves",
            "10,50,100",
            "--created",
            &abupdate::timefmt::format_rfc3339(created),
        ],
    )
}

/// `abupdate fleet` (its human output: the tests read its one error line).
fn fleet(h: &TestHost, m: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    prom::fleet(h, &[], m, url, extra)
}

fn doc(m: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("json")
}

/// The one line of stderr, checked to be one.
fn one_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {}", text(out));
    err
}

/// Finding 3: a store whose clock is an hour ahead held three failures of
/// the last hour that a query at this machine's now did not see, and the
/// wave advanced. Now the run reads the store's clock first, and refuses
/// with both times before asking anything else; nothing is written.
#[test]
fn a_store_clock_an_hour_ahead_is_refused_naming_both_times_and_nothing_is_written() {
    let h = TestHost::new("fleet-clock-ahead", "1.0", HostOptions::default());
    let store = healthy_store(3600);
    let m = release(&h, "r");
    let dir = m.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    let now = abupdate::timefmt::now();
    let out = fleet(&h, &m, &store.url(""), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = one_line(&out);
    let (store_time, local_time) = (
        abupdate::timefmt::format_rfc3339(now + 3600),
        abupdate::timefmt::format_rfc3339(now),
    );
    assert!(
        err.contains(&format!(
            "{}: the store's clock reads ",
            store.url("/api/v1/query")
        )) && err.contains(&store_time[..15])
            && err.contains(&local_time[..15])
            && err.contains("the store is 1h ahead (more than --max-clock-skew 1m)"),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before, "the release directory changed");
    // Nothing but the clock was asked.
    let asked: Vec<_> = store
        .requests()
        .iter()
        .map(|r| field(r, "query").unwrap_or_default())
        .collect();
    assert_eq!(asked, ["vector(time())"], "{asked:?}");
    // The operator may widen the tolerance (a store that evaluates "now"
    // in the past on purpose): then the run decides, at the store's now.
    let out = fleet(&h, &m, &store.url(""), &["--max-clock-skew", "1h"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(doc(&m)["rollout"]["percent"], 50.0);
}

/// Within the tolerance, every query of a run is evaluated at one
/// instant, the store's now (not this machine's), and the soak and the
/// new `wave_started` are measured on it.
#[test]
fn a_store_clock_within_the_tolerance_decides_every_query_and_wave_started_at_the_stores_now() {
    let h = TestHost::new("fleet-clock-near", "1.0", HostOptions::default());
    let store = healthy_store(20);
    let m = release(&h, "r");
    let now = abupdate::timefmt::now();
    let out = fleet(&h, &m, &store.url(""), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("advance"), "{}", text(&out));
    let requests = store.requests();
    assert_eq!(
        field(&requests[0], "query").as_deref(),
        Some("vector(time())")
    );
    assert_eq!(field(&requests[0], "time"), None, "{requests:?}");
    let store_now: i64 = requests[1..]
        .iter()
        .filter(|r| field(r, "query").as_deref() != Some("count(up)"))
        .map(|r| field(r, "time").expect("a decision query names its instant"))
        .map(|t| t.parse().expect("whole seconds"))
        .reduce(|a: i64, b| {
            assert_eq!(a, b, "two instants in one run");
            a
        })
        .expect("decision queries");
    assert_eq!(requests.len(), 7, "{requests:?}");
    assert!(
        (store_now - (now + 20)).abs() <= 3,
        "asked at {store_now}, the store's now is about {}",
        now + 20
    );
    let started = doc(&m)["rollout"]["wave_started"]
        .as_str()
        .expect("wave_started")
        .to_string();
    assert_eq!(started, abupdate::timefmt::format_rfc3339(store_now));
}

/// Finding 8: a front answering the query's POST with 302 was followed
/// as a GET without the query, and the run said "no host … reports
/// release 2.0". A redirect is not followed; the one line names both
/// addresses and the root to give instead.
/// Found from outside: a store whose clock ran 50 s ahead (within the
/// tolerance) dated the advance it published with `--out`; a pause made by
/// hand in `--manifest` was then published dated by this machine's clock,
/// and from the source's rollout: older than the copy the wave's hosts had
/// verified (they refused it as `stale`, a replay), and its wave rolled
/// back. It is the published copy paused: dated past it, its wave kept.
#[test]
fn a_pause_by_hand_is_published_past_the_copy_the_hosts_hold_its_wave_kept() {
    let h = TestHost::new("fleet-clock-hand-pause", "1.0", HostOptions::default());
    let store = healthy_store(50);
    let m = release(&h, "r");
    let out_dir = h.dir.join("out");
    let out_arg = ["--out", out_dir.to_str().expect("path")];
    let out = fleet(&h, &m, &store.url(""), &out_arg);
    assert!(out.status.success(), "{}", text(&out));
    let advanced = doc(&out_dir.join("release.json"));
    assert_eq!(advanced["rollout"]["percent"], 50.0, "{advanced}");
    h.resign(&m, |v| {
        v["rollout"]["paused"] = true.into();
        None
    });
    let out = fleet(&h, &m, &store.url(""), &out_arg);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("paused by hand"), "{}", text(&out));
    let paused = doc(&out_dir.join("release.json"));
    assert_eq!(paused["rollout"]["paused"], true, "{paused}");
    assert_eq!(
        paused["rollout"]["percent"], 50.0,
        "wave rolled back: {paused}"
    );
    let (was, now) = (
        advanced["created"].as_str().expect("created"),
        paused["created"].as_str().expect("created"),
    );
    assert!(
        now > was,
        "the pause is dated {now}, the copy hosts hold {was}"
    );
}

#[test]
fn a_redirected_query_is_not_followed_and_the_error_names_both_addresses() {
    let h = TestHost::new("fleet-redirect", "1.0", HostOptions::default());
    let front = Server::start(|req, s| {
        if req.path == "/api/v1/query" {
            head(
                s,
                "302 Found",
                "Location: /new/api/v1/query\r\nContent-Length: 0\r\n",
            );
        } else {
            let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
            answer(s, abupdate::timefmt::now(), body);
        }
    });
    let m = release(&h, "r");
    let dir = m.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    let out = fleet(&h, &m, &front.url(""), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = one_line(&out);
    assert!(
        err.contains(&format!(
            "{}: HTTP 302 redirect to {}, not followed",
            front.url("/api/v1/query"),
            front.url("/new/api/v1/query")
        )) && err.ends_with(&format!(
            "use --prometheus {} (not deciding blind)",
            front.url("/new")
        )),
        "{err}"
    );
    let paths: Vec<_> = front.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/v1/query"], "followed: {paths:?}");
    assert_eq!(snapshot(&dir), before);
    // An absolute Location on the same path names the root to use.
    let moved = Server::start(|_, s| {
        head(
            s,
            "308 Permanent Redirect",
            "Location: https://prom.example/prometheus/api/v1/query\r\nContent-Length: 0\r\n",
        )
    });
    let err = one_line(&fleet(&h, &m, &moved.url(""), &[]));
    assert!(
        err.ends_with("use --prometheus https://prom.example/prometheus (not deciding blind)"),
        "{err}"
    );
}

/// Found from outside (stop 47): an HTTP 503 whose body read as a
/// successful answer (a proxy's cached page, a server failing half way)
/// was taken as the fleet's answer, and the wave advanced. Only a success
/// status carries data: exit 1, nothing written, the status named.
#[test]
fn an_error_status_is_no_answer_whatever_its_body_says() {
    let h = TestHost::new("fleet-503", "1.0", HostOptions::default());
    let m = release(&h, "r");
    let dir = m.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    let failing = store(0, "503 Service Unavailable");
    let out = fleet(&h, &m, &failing.url(""), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = one_line(&out);
    assert!(
        err.contains(&format!("{}: HTTP 503: ", failing.url("/api/v1/query"))),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before);
    // The same answers under 200 advance the wave: the status alone
    // made the difference.
    let healthy = healthy_store(0);
    let out = fleet(&h, &m, &healthy.url(""), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(doc(&m)["rollout"]["percent"], 50.0, "{}", text(&out));
}

/// Finding 8: a mistyped `--secret` said "k.kye: entity not found". Every
/// key or file path `fleet` and `channel` take is named with what it is
/// and what the system said, on one line.
#[test]
fn a_mistyped_secret_manifest_or_keys_path_is_named_with_what_it_is() {
    let h = TestHost::new("fleet-paths", "1.0", HostOptions::default());
    let m = release(&h, "r");
    let missing = h.dir.join("release.kye");
    let no_keys = h.dir.join("keyz");
    let no_manifest = h.dir.join("r/relaese.json");
    let enoent = "No such file or directory";
    let fleet_with = |manifest: &Path, secret: &Path, keys: &Path| {
        run(Command::new(bin())
            .args(["fleet", "--dry-run", "--manifest"])
            .arg(manifest)
            .arg("--secret")
            .arg(secret)
            .arg("--keys")
            .arg(keys)
            .args(["--prometheus", "http://127.0.0.1:9"]))
    };
    let keys = h.dir.join("keys");
    for (out, path, what) in [
        (
            fleet_with(&m, &missing, &keys),
            &missing,
            "cannot read the secret key (--secret)",
        ),
        (
            fleet_with(&no_manifest, &h.secret_key, &keys),
            &no_manifest,
            "cannot read the manifest (--manifest)",
        ),
        (
            fleet_with(&m, &h.secret_key, &no_keys),
            &no_keys,
            "cannot read the trusted keys directory (--keys)",
        ),
        (
            run(Command::new(bin())
                .args(["channel", "add"])
                .arg(h.dir.join("channel.json"))
                .arg(&m)
                .arg("--secret")
                .arg(&missing)),
            &missing,
            "cannot read the secret key (--secret)",
        ),
        (
            run(Command::new(bin())
                .args(["channel", "add"])
                .arg(h.dir.join("channel.json"))
                .arg(&m)
                .arg("--secret")
                .arg(&h.secret_key)
                .arg("--keys")
                .arg(&no_keys)),
            &no_keys,
            "cannot read the trusted keys directory (--keys)",
        ),
    ] {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = one_line(&out);
        assert_eq!(
            err,
            format!(
                "abupdate: {}: {what}: {enoent} (os error 2)",
                path.display()
            ),
        );
    }
    assert!(!h.dir.join("channel.json").exists());
}

/// Relay one request to the real Prometheus at `port` and its answer back.
fn relay(port: u16, req: &Req, client: &mut TcpStream) {
    let mut upstream = TcpStream::connect(("127.0.0.1", port)).expect("prometheus");
    let content_type = req.header("content-type").unwrap_or("text/plain");
    let _ = write!(
        upstream,
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.path,
        req.body.len()
    );
    let _ = upstream.write_all(&req.body);
    let mut answer = Vec::new();
    let _ = upstream.read_to_end(&mut answer);
    let _ = client.write_all(&answer);
}

/// The real Prometheus answers the store's clock (`vector(time())`) as the
/// controller reads it; every decision query is then asked at that one
/// instant (and the store's memory of the wave at the wave's start), and
/// the decision is the same as before.
#[test]
fn a_real_prometheus_is_asked_its_time_and_every_query_at_that_instant() {
    let h = TestHost::new("fleet-clock-real", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    // 50 hosts report positions; hosts 0-4 (the 10% wave) committed 2.0.
    let mut lines = Vec::new();
    for i in 0..50 {
        let l = format!("compatible=\"{COMPATIBLE}\",instance=\"host-{i:02}:9100\",job=\"node\"");
        for t in [now - 240, now - 60] {
            lines.push(format!(
                "abupdate_rollout_position{{{l}}} {} {t}",
                (i as f64 + 0.5) / 50.0
            ));
            if i < 5 {
                lines.push(format!(
                    "abupdate_release_outcome{{{l},release=\"2.0\",outcome=\"committed\"}} {} {t}",
                    now - 2400
                ));
            }
        }
    }
    let series = format!(
        "# TYPE abupdate_release_outcome gauge\n{}\n# TYPE abupdate_rollout_position gauge\n{}\n# EOF\n",
        lines
            .iter()
            .filter(|l| l.starts_with("abupdate_release_outcome"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        lines
            .iter()
            .filter(|l| l.starts_with("abupdate_rollout_position"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &series);
    let port = p.port;
    let proxy = Server::start(move |req, s| relay(port, req, s));
    let m = release(&h, "r");
    let created = doc(&m)["created"]
        .as_str()
        .map(abupdate::timefmt::parse_rfc3339);
    let out = fleet(&h, &m, &proxy.url(""), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("advance (to 50%: 5 of ~5 hosts"),
        "{}",
        text(&out)
    );
    let requests = proxy.requests();
    assert_eq!(requests.len(), 7, "{requests:?}");
    assert_eq!(
        (
            field(&requests[0], "query").as_deref(),
            field(&requests[0], "time")
        ),
        (Some("vector(time())"), None)
    );
    // The store's memory of the wave is asked at the wave's start (the
    // manifest's `created`: the first wave), every count at the one now.
    let (history, counts): (Vec<&Req>, Vec<&Req>) = requests[1..]
        .iter()
        .partition(|r| field(r, "query").as_deref() == Some("count(up)"));
    let history_at = history.iter().map(|r| field(r, "time")).collect::<Vec<_>>();
    assert_eq!(
        history_at,
        [created.and_then(Result::ok).map(|t| t.to_string())]
    );
    let instants: Vec<String> = counts
        .iter()
        .map(|r| field(r, "time").expect("time"))
        .collect();
    assert_eq!(instants.len(), 5);
    assert!(instants.iter().all(|t| *t == instants[0]), "{instants:?}");
    let at: i64 = instants[0].parse().expect("whole seconds");
    assert!((at - now).abs() <= 60, "{at} vs {now}");
    assert_eq!(
        doc(&m)["rollout"]["wave_started"].as_str(),
        Some(abupdate::timefmt::format_rfc3339(at).as_str())
    );
}
