//! The fleet loop on Prometheus with the real parts: the host's textfile
//! read by the real node_exporter, and `abupdate fleet --prometheus`
//! deciding waves from a real Prometheus 2.42 holding 50 hosts' series
//! (backfilled with `promtool tsdb create-blocks-from openmetrics`).

use crate::common::host::{image, run, snapshot, text, HostOptions, TestHost, COMPATIBLE};
use crate::common::prometheus::{self as prom, Scraped};
use std::path::{Path, PathBuf};
use std::process::Command;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not json ({e}): {}", text(out)))
}

fn set_url(h: &TestHost, m: &Path) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(
        "[update]\n",
        &format!("[update]\nurl = \"file://{}\"\n", m.display()),
    );
    std::fs::write(&h.config, cfg).expect("config");
}

/// Every sample of `name` in a scrape.
fn samples<'a>(all: &'a [Scraped], name: &str) -> Vec<&'a Scraped> {
    all.iter().filter(|s| s.name == name).collect()
}

/// Issue 15.1: the host metrics contract, as the real node_exporter's
/// textfile collector reads it: per-release outcomes (with the error kind
/// of a failure), the booted release, the rollout position, and
/// `compatible` and the operator's labels on every series.
#[test]
fn the_real_node_exporter_reads_the_textfile_with_every_label() {
    let textfiles = crate::common::host::scratch("node-exporter-textfiles");
    let prom_file = textfiles.join("abupdate.prom");
    let mut h = TestHost::new(
        "fleet-node-exporter",
        "1.0",
        HostOptions {
            extra_config: format!(
                "[report]\ntextfile = \"{}\"\nlabels = {{ site = \"store \\\"0042\\\"\", region = \"eu\" }}\n",
                prom_file.display()
            ),
            ..Default::default()
        },
    );
    let m2 = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let out = h.abupdate(&["install", "--no-reboot", m2.to_str().expect("p")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    // A release whose payload is gone: the timer's update fails, naming it.
    let m3 = h.pack("r3", "3.0", &image("3.0", 1 << 20), &[]);
    std::fs::remove_file(m3.with_file_name("rootfs-3.0.img.zst")).expect("rm payload");
    set_url(&h, &m3);
    let out = h.abupdate(&["update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let exporter = prom::node_exporter(&textfiles);
    let (status, body) = prom::get(&exporter.url("/metrics")).expect("scrape");
    assert_eq!(status, 200);
    let all = prom::parse_exposition(&body);
    let errors = samples(&all, "node_textfile_scrape_error");
    assert_eq!(
        errors.iter().map(|s| s.value).collect::<Vec<_>>(),
        [0.0],
        "node_exporter refused the textfile: {}",
        std::fs::read_to_string(&prom_file).unwrap_or_default()
    );
    let ours: Vec<&Scraped> = all
        .iter()
        .filter(|s| s.name.starts_with("abupdate_"))
        .collect();
    assert!(ours.len() >= 14, "{body}");
    for s in &ours {
        assert_eq!(
            (
                s.labels.get("compatible").map(String::as_str),
                s.labels.get("site").map(String::as_str),
                s.labels.get("region").map(String::as_str)
            ),
            (Some(COMPATIBLE), Some("store \"0042\""), Some("eu")),
            "{s:?}"
        );
    }
    let outcome = |release: &str, outcome: &str| {
        samples(&all, "abupdate_release_outcome")
            .into_iter()
            .find(|s| s.labels["release"] == release && s.labels["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} of {release} in {body}"))
    };
    let now = abupdate::timefmt::now() as f64;
    let installed = outcome("2.0", "installed");
    let committed = outcome("2.0", "committed");
    assert!(
        installed.value <= committed.value && (now - committed.value).abs() < 600.0,
        "{installed:?} {committed:?}"
    );
    assert!(!committed.labels.contains_key("kind"), "{committed:?}");
    let failed = outcome("3.0", "failed");
    assert_eq!(
        failed.labels.get("kind").map(String::as_str),
        Some("not_found"),
        "{failed:?}"
    );
    // Each outcome names the build it is about: the manifest's images.
    let build = |m: &Path| {
        let d: abupdate::manifest::ManifestDoc =
            serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("doc");
        d.build()
    };
    for (s, m) in [(installed, &m2), (committed, &m2), (failed, &m3)] {
        assert_eq!(
            s.labels.get("build").map(String::as_str),
            Some(build(m).as_str()),
            "{s:?}"
        );
    }
    let booted = samples(&all, "abupdate_booted_release_info");
    assert_eq!(booted.len(), 1, "{body}");
    assert_eq!(
        (
            booted[0].labels["release"].as_str(),
            booted[0].labels["slot"].as_str(),
            booted[0].value
        ),
        ("2.0", "B", 1.0)
    );
    let position = samples(&all, "abupdate_rollout_position");
    assert!(
        position.len() == 1 && (0.0..1.0).contains(&position[0].value),
        "{position:?}"
    );
    // The series hosts always had are still there, under their names.
    for name in [
        "abupdate_booted_info",
        "abupdate_last_check_timestamp_seconds",
        "abupdate_last_success_timestamp_seconds",
        "abupdate_failures_total",
        "abupdate_downloaded_bytes_total",
        "abupdate_installs_total",
        "abupdate_commits_total",
        "abupdate_rollbacks_total",
        "abupdate_update_pending",
    ] {
        assert!(!samples(&all, name).is_empty(), "{name} missing: {body}");
    }
}

/// 50 hosts of `COMPATIBLE` (plus 5 of another `compatible`), as their
/// textfiles say it through node_exporter, two samples per series in the
/// last five minutes before `now`. Positions are (i + 0.5) / 50, so a 10%
/// wave covers hosts 0 to 4; even hosts are in region eu, odd ones in us.
///
/// - release 2.0: hosts 0-4 installed and committed; host 7 failed it with
///   a network error (not the release's fault).
/// - release 3.0: hosts 0, 2, 4 (eu) committed; hosts 1, 3 (us) rolled it
///   back; the 5 hosts of `other-arm64` rolled back their own 3.0.
fn fleet_series(now: i64) -> String {
    let mut outcome = Vec::new();
    let mut position = Vec::new();
    let host = |compatible: &str, i: usize| {
        format!(
            "compatible=\"{compatible}\",instance=\"host-{i:02}:9100\",job=\"node\",region=\"{}\",site=\"store-{i:04}\"",
            if i % 2 == 0 { "eu" } else { "us" }
        )
    };
    let mut add = |labels: String, value: i64| {
        for t in [now - 240, now - 60] {
            outcome.push(format!("abupdate_release_outcome{{{labels}}} {value} {t}"));
        }
    };
    for i in 0..5 {
        let h = host(COMPATIBLE, i);
        add(
            format!("{h},release=\"2.0\",outcome=\"installed\""),
            now - 3000,
        );
        add(
            format!("{h},release=\"2.0\",outcome=\"committed\""),
            now - 2400,
        );
        add(
            format!("{h},release=\"3.0\",outcome=\"installed\""),
            now - 1800,
        );
        let verdict = if i % 2 == 0 {
            "committed"
        } else {
            "rolled_back"
        };
        add(
            format!("{h},release=\"3.0\",outcome=\"{verdict}\""),
            now - 1500,
        );
    }
    add(
        format!(
            "{},release=\"2.0\",outcome=\"failed\",kind=\"network\"",
            host(COMPATIBLE, 7)
        ),
        now - 1000,
    );
    for i in 0..5 {
        let h = host("other-arm64", 60 + i);
        add(
            format!("{h},release=\"3.0\",outcome=\"rolled_back\""),
            now - 1500,
        );
    }
    for i in 0..50 {
        for t in [now - 240, now - 60] {
            position.push(format!(
                "abupdate_rollout_position{{{}}} {} {t}",
                host(COMPATIBLE, i),
                (i as f64 + 0.5) / 50.0
            ));
        }
    }
    format!(
        "# HELP abupdate_release_outcome Unix time of the latest outcome of a release.\n\
         # TYPE abupdate_release_outcome gauge\n{}\n\
         # HELP abupdate_rollout_position Position.\n\
         # TYPE abupdate_rollout_position gauge\n{}\n# EOF\n",
        outcome.join("\n"),
        position.join("\n")
    )
}

/// A release directory for the controller: `version` packed with waves
/// 10/50/100 (first wave 10%), dated `created`.
fn release(h: &TestHost, name: &str, version: &str, created: i64) -> PathBuf {
    h.pack(
        name,
        version,
        &image(version, 1 << 16),
        &[
            "--waves",
            "10,50,100",
            "--created",
            &abupdate::timefmt::format_rfc3339(created),
        ],
    )
}

fn controller(h: &TestHost, m: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    prom::fleet(h, &["--json"], m, url, extra)
}

fn doc(m: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("json")
}

fn minisign_accepts(m: &Path, public: &Path) -> bool {
    run(Command::new("minisign")
        .arg("-Vm")
        .arg(m)
        .arg("-p")
        .arg(public))
    .status
    .success()
}

/// Issue 15.2: a healthy wave that has soaked advances, a wave with
/// failures over the threshold pauses, a wave still inside its soak is
/// held; only the release's own `compatible` (and the operator's selector)
/// counts. Each decision is re-signed so that minisign and the hosts
/// accept it.
#[test]
fn a_real_prometheus_advances_a_healthy_wave_pauses_a_failing_one_and_holds_a_soaking_one() {
    let h = TestHost::new("fleet-prom-decide", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &fleet_series(now));
    let url = p.url("");

    // Good: 5 of the 5 hosts of the 10% wave committed, an hour ago.
    let good = release(&h, "good", "2.0", now - 3600);
    let out = controller(&h, &good, &url, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["failed"].as_u64(),
            j["not_counted"].as_u64(),
            j["wave_hosts"].as_u64(),
            j["fleet_hosts"].as_u64()
        ),
        (
            Some("advance"),
            Some(5),
            Some(0),
            Some(1),
            Some(5),
            Some(50)
        ),
        "{j}"
    );
    let d = doc(&good);
    assert_eq!(d["rollout"]["percent"], 50.0, "{d}");
    let started = abupdate::timefmt::parse_rfc3339(
        d["rollout"]["wave_started"].as_str().expect("wave_started"),
    )
    .expect("time");
    assert!((started - now).abs() < 120, "{d}");
    assert!(minisign_accepts(&good, &h.public_key));
    // The next run: the 50% wave (25 hosts) has 5 commits: held.
    let out = controller(&h, &good, &url, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "keep", "{}", text(&out));
    assert_eq!(json(&out)["wave_hosts"], 25, "{}", text(&out));

    // Soaking: the same healthy wave, published a minute ago.
    let soaking = release(&h, "soaking", "2.0", now - 60);
    let before = snapshot(soaking.parent().expect("dir"));
    let out = controller(&h, &soaking, &url, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(j["action"], "keep", "{j}");
    assert!(
        j["reason"].as_str().is_some_and(|r| r.contains("soaking")),
        "{j}"
    );
    assert_eq!(snapshot(soaking.parent().expect("dir")), before);

    // Failing: 2 of the wave's hosts rolled 3.0 back (the other
    // compatible's 5 rollbacks do not count).
    let bad = release(&h, "bad", "3.0", now - 3600);
    let out = controller(&h, &bad, &url, &["--max-failures", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["failed"].as_u64()
        ),
        (Some("pause"), Some(3), Some(2)),
        "{j}"
    );
    assert_eq!(doc(&bad)["rollout"]["paused"], true);
    assert!(minisign_accepts(&bad, &h.public_key));
    // Hosts see the pause.
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(&h.config, cfg + "[rollout]\nwariness = 0.0\n").expect("config");
    let out = h.abupdate(&["check", bad.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("paused"), "{}", text(&out));

    // The operator's selector: region eu alone is healthy (3 of its 3).
    // Published into --out: the manifest and its signatures, there only.
    let eu = release(&h, "bad-eu", "3.0", now - 3600);
    let eu_before = snapshot(eu.parent().expect("dir"));
    let out_dir = h.dir.join("to-sync");
    let out = controller(
        &h,
        &eu,
        &url,
        &[
            "--max-failures",
            "2",
            "--selector",
            "region=\"eu\"",
            "--out",
            out_dir.to_str().expect("p"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["failed"].as_u64(),
            j["wave_hosts"].as_u64()
        ),
        (Some("advance"), Some(0), Some(3)),
        "{j}"
    );
    assert_eq!(snapshot(eu.parent().expect("dir")), eu_before);
    let published = out_dir.join("release.json");
    assert_eq!(doc(&published)["rollout"]["percent"], 50.0);
    assert!(minisign_accepts(&published, &h.public_key));

    // --dry-run prints every query with its answer and writes nothing.
    let dry = release(&h, "dry", "2.0", now - 3600);
    let before = snapshot(dry.parent().expect("dir"));
    let mut c = Command::new(crate::common::host::bin());
    c.args(["fleet", "--dry-run", "--manifest"])
        .arg(&dry)
        .arg("--secret")
        .arg(&h.secret_key)
        .args(["--prometheus", &url]);
    let out = run(&mut c);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("query: ").count(), 6, "{stdout}");
    // The store's memory of the wave, asked at its start (`created`).
    let start = abupdate::timefmt::format_rfc3339(now - 3600);
    assert!(
        stdout.contains(&format!("query: count(up) at {start}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("query: count by (outcome, kind, in_wave) (((label_replace(topk"),
        "{stdout}"
    );
    assert!(
        stdout.contains("{in_wave=\"1\",outcome=\"committed\"} 5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("advance [dry run: not written]"),
        "{stdout}"
    );
    assert_eq!(snapshot(dry.parent().expect("dir")), before);
}

/// Issue 15.2, never advance blind: no series for the release, an error
/// answer, or Prometheus down is a non-zero exit with one line naming the
/// URL, and the release directory stays byte for byte as it was.
#[test]
fn no_series_an_error_answer_or_prometheus_down_changes_nothing_and_exits_1() {
    let h = TestHost::new("fleet-prom-blind", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &fleet_series(now));
    let m = release(&h, "r", "9.9", now - 3600);
    let dir = m.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    let down = format!("http://127.0.0.1:{}", prom::free_port());
    for (url, extra, says) in [
        (
            p.url(""),
            vec![],
            "no host of abupdate-test reports release 9.9",
        ),
        (
            p.url(""),
            vec!["--selector", "site=~\"(\""],
            "query refused (bad_data)",
        ),
        (down.clone(), vec![], "Prometheus unreachable"),
    ] {
        let out = controller(&h, &m, &url, &extra);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{url} {extra:?}: {}",
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(
            err.contains(says) && err.contains("/api/v1/query"),
            "{url} {extra:?}: {err}"
        );
        assert_eq!(
            snapshot(&dir),
            before,
            "{url} {extra:?}: the directory changed"
        );
    }
    // A healthy, soaked wave of another release is no excuse either: with
    // the answers for it, the same run decides (control for the above).
    let good = release(&h, "good", "2.0", now - 3600);
    let out = controller(&h, &good, &p.url(""), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["action"], "advance");
}

/// The outside review's fleet attacks, as series in one Prometheus, each
/// scenario its own region (selected with `--selector`) and release:
///
/// - `silent` (5.0): ten hosts in the 10% wave, scraped every minute for
///   the last 50 minutes; five committed, five installed and went silent
///   15 minutes ago (what a release that breaks its hosts looks like).
/// - `nopos` (5.0): one host committed, no host exports a position.
/// - `anon` (5.0): outcome series without the `instance` label.
/// - `sybil` (7.0): ten hosts in the wave, four rolled back, six installed;
///   one more host exports 200 committed series (and positions) that
///   differ only in `site`.
/// - `skew` (6.0): twenty hosts, 18 committed; two installed, then rolled
///   back with a clock that read 30 s after the epoch.
fn attack_series(now: i64) -> String {
    let mut lines = Vec::new();
    // A host of `region`: its position, and outcome series of `release`
    // (outcome, value), scraped every minute from `from` to `to` seconds
    // ago; `extra` labels after its own (none for `instance`: "anon").
    let mut host = |region: &str,
                    i: usize,
                    extra: &str,
                    position: Option<f64>,
                    outcomes: &[(&str, &str, i64)],
                    (from, to): (i64, i64)| {
        let l = match region {
            "anon" => format!("compatible=\"{COMPATIBLE}\",job=\"node\",region=\"anon\""),
            _ => format!(
                "compatible=\"{COMPATIBLE}\",instance=\"{region}-{i:02}:9100\",job=\"node\",region=\"{region}\"{extra}"
            ),
        };
        let mut t = now - from;
        while t <= now - to {
            if let Some(p) = position {
                lines.push(format!("abupdate_rollout_position{{{l}}} {p} {t}"));
            }
            for (release, outcome, value) in outcomes {
                lines.push(format!(
                    "abupdate_release_outcome{{{l},release=\"{release}\",outcome=\"{outcome}\"}} {value} {t}"
                ));
            }
            t += 60;
        }
    };
    let wave = |i: usize, of: f64| Some((i as f64 + 0.5) / of);
    for i in 0..10 {
        match i < 5 {
            true => host(
                "silent",
                i,
                "",
                wave(i, 100.0),
                &[("5.0", "committed", now - 1500)],
                (3000, 60),
            ),
            false => host(
                "silent",
                i,
                "",
                wave(i, 100.0),
                &[("5.0", "installed", now - 2000)],
                (3000, 900),
            ),
        }
    }
    host(
        "nopos",
        0,
        "",
        None,
        &[("5.0", "committed", now - 1500)],
        (600, 60),
    );
    host(
        "anon",
        0,
        "",
        None,
        &[("5.0", "committed", now - 1500)],
        (600, 60),
    );
    for i in 0..10 {
        let o = if i < 4 { "rolled_back" } else { "installed" };
        host(
            "sybil",
            i,
            "",
            wave(i, 100.0),
            &[("7.0", o, now - 1500)],
            (600, 60),
        );
    }
    for f in 0..200 {
        let site = format!(",site=\"fake{f}\"");
        host(
            "sybil",
            99,
            &site,
            Some(0.01),
            &[("7.0", "committed", now - 1500)],
            (600, 60),
        );
    }
    for i in 0..20 {
        let outcomes: &[(&str, &str, i64)] = match i < 18 {
            true => &[("6.0", "committed", now - 1500)],
            false => &[("6.0", "installed", now - 900), ("6.0", "rolled_back", 30)],
        };
        host("skew", i, "", wave(i, 200.0), outcomes, (600, 60));
    }
    openmetrics(&lines)
}

/// A host counts once however many series it exports, a failure counts
/// whatever the host's clock said, hosts gone silent in a wave still count
/// in its size, and a wave whose size or hosts cannot be known is not
/// decided: none of these advances the wave.
#[test]
fn silent_hosts_skewed_clocks_many_series_of_one_host_or_no_positions_never_advance_a_wave() {
    let h = TestHost::new("fleet-prom-attacks", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &attack_series(now));
    let url = p.url("");
    let decide = |version: &str, region: &str| {
        let m = release(&h, &format!("{region}-{version}"), version, now - 3600);
        let out = controller(
            &h,
            &m,
            &url,
            &["--selector", &format!("region=\"{region}\"")],
        );
        (m, out)
    };

    let (_, out) = decide("5.0", "silent");
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["wave_hosts"].as_u64()
        ),
        (Some("keep"), Some(5), Some(10)),
        "{j}"
    );

    let (_, out) = decide("7.0", "sybil");
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["failed"].as_u64(),
            j["wave_hosts"].as_u64()
        ),
        (Some("keep"), Some(1), Some(4), Some(11)),
        "{j}"
    );

    let (m, out) = decide("6.0", "skew");
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["failed"].as_u64()
        ),
        (Some("pause"), Some(18), Some(2)),
        "{j}"
    );
    assert_eq!(doc(&m)["rollout"]["paused"], true);

    for (region, says) in [
        ("nopos", "no abupdate_rollout_position series"),
        ("anon", "have no instance label"),
    ] {
        let (m, out) = decide("5.0", region);
        let dir = m.parent().expect("dir").to_path_buf();
        assert_eq!(out.status.code(), Some(1), "{region}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(
            err.contains(says) && err.contains("not deciding blind"),
            "{region}: {err}"
        );
        assert_ne!(doc(&m)["rollout"]["paused"], true, "{region}");
        assert_eq!(
            doc(&m)["rollout"]["percent"],
            10.0,
            "{region}: {}",
            dir.display()
        );
    }
}

/// A store restarted on an empty database in the middle of a wave (or one
/// whose retention is shorter than the wave) has forgotten the host that
/// installed the release and went silent before the restart: the hosts it
/// still hears all committed. Asked at the wave's start, it holds no scrape
/// at all: the controller says so in one line and decides nothing. The very
/// same series in a store that remembers the wave's start (where the
/// silent host never existed) advance it.
#[test]
fn a_store_that_forgot_the_waves_start_is_not_decided_on() {
    let h = TestHost::new("fleet-prom-forgot", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let created = now - 3600;
    let restart = now - 1200;
    // The 10% wave: hosts 0-4 of 50. Host 3 installed at now - 3000 and
    // went silent (its samples were before the restart, lost with it);
    // what the store holds since the restart: 49 hosts' positions, and
    // hosts 0, 1, 2 and 4 committed.
    let mut lines = Vec::new();
    for i in (0..50).filter(|&i| i != 3) {
        let outcomes: &[Outcome] = match i {
            0..=4 => &[("2.0", "committed", now - 2400)],
            _ => &[],
        };
        let position = (i as f64 + 0.5) / 50.0;
        let window = [(restart, now - 60)];
        host_lines(
            &mut lines,
            &format!("host-{i:02}:9100"),
            "eu",
            position,
            outcomes,
            &window,
        );
    }
    let series = openmetrics(&lines);
    let forgot = prom::prometheus_remembering(&h.dir.join("restarted"), &series, restart);
    let m = release(&h, "forgot", "2.0", created);
    let before = snapshot(m.parent().expect("dir"));
    let out = controller(&h, &m, &forgot.url(""), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    let start = abupdate::timefmt::format_rfc3339(created);
    assert!(
        err.contains(&format!(
            "the store holds no sample at {start}, when the wave started"
        )) && err.contains("not deciding blind"),
        "{err}"
    );
    assert_eq!(snapshot(m.parent().expect("dir")), before, "written");

    let remembers = prom::prometheus_with(&h.dir.join("remembers"), &series);
    let out = controller(&h, &m, &remembers.url(""), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["committed"].as_u64(),
            j["wave_hosts"].as_u64()
        ),
        (Some("advance"), Some(4), Some(4)),
        "{j}"
    );
}

/// An outcome series: (release, outcome, value).
type Outcome<'a> = (&'a str, &'a str, i64);

/// Positions and outcomes of `region`'s hosts, one sample a minute in
/// each of `windows` (absolute Unix times, ends included): `outcomes` are
/// (release, outcome, value).
fn host_lines(
    lines: &mut Vec<String>,
    instance: &str,
    region: &str,
    position: f64,
    outcomes: &[Outcome],
    windows: &[(i64, i64)],
) {
    let l = format!(
        "compatible=\"{COMPATIBLE}\",instance=\"{instance}\",job=\"node\",region=\"{region}\""
    );
    for &(from, to) in windows {
        let mut t = from;
        while t <= to {
            lines.push(format!("abupdate_rollout_position{{{l}}} {position} {t}"));
            for (release, outcome, value) in outcomes {
                lines.push(format!(
                    "abupdate_release_outcome{{{l},release=\"{release}\",outcome=\"{outcome}\"}} {value} {t}"
                ));
            }
            t += 60;
        }
    }
}

fn openmetrics(lines: &[String]) -> String {
    let of = |name: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(name))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "# TYPE abupdate_release_outcome gauge\n{}\n# TYPE abupdate_rollout_position gauge\n{}\n# EOF\n",
        of("abupdate_release_outcome"),
        of("abupdate_rollout_position")
    )
}

/// Finding 2 of the outside review: QA lab hosts of the release's
/// `compatible` (position 0.99) that ran `abupdate install` by hand, which
/// ignores the rollout, committed it; the 10% wave (hosts 0-4) has one
/// host staged (`installed`) and four that have not polled yet. Their
/// nine commits advanced the wave, and the reason claimed them as the
/// wave's ("9 of ~10 hosts in the 10% wave committed"). Only in-wave
/// commits count now; the outside ones are named as such.
#[test]
fn commits_of_hosts_outside_the_wave_do_not_advance_it() {
    let h = TestHost::new("fleet-prom-outside", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let started = now - 3 * 3600;
    let recent = [(now - 600, now - 60)];
    let mut lines = Vec::new();
    for i in 0..50 {
        let outcomes: &[Outcome] = match i {
            0 => &[("8.0", "installed", started + 600)],
            _ => &[],
        };
        let position = (i as f64 + 0.5) / 50.0;
        let name = format!("host-{i:02}:9100");
        host_lines(&mut lines, &name, "outside", position, outcomes, &recent);
    }
    for j in 0..9 {
        host_lines(
            &mut lines,
            &format!("lab-{j:02}:9100"),
            "outside",
            0.99,
            &[("8.0", "committed", started - 3600)],
            &recent,
        );
    }
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics(&lines));
    let m = release(&h, "outside", "8.0", started);
    let before = snapshot(m.parent().expect("dir"));
    let out = controller(&h, &m, &p.url(""), &["--selector", "region=\"outside\""]);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["reason"].as_str(),
            j["wave_hosts"].as_u64(),
            j["committed"].as_u64(),
        ),
        (
            Some("keep"),
            Some(
                "wave 10%: 0 of ~5 hosts committed, 5 needed; \
                 9 committed outside the wave, not counted"
            ),
            Some(5),
            Some(9),
        ),
        "{j}"
    );
    assert_eq!(
        j["in_wave"],
        serde_json::json!({"installed": 1, "committed": 0, "failed": 0, "committed_outside": 9}),
        "{j}"
    );
    assert_eq!(snapshot(m.parent().expect("dir")), before);
}

/// Found from outside (stop 48): a host just inside a wave's edge (its
/// position x 100 below the percentage, so it took the release) exported
/// its position rounded to six places, the controller read it outside the
/// wave, and the host's `installed` held nothing: the canary's commit
/// alone advanced. The position is written with every digit and the
/// controller applies the hosts' own rule: the wave keeps.
#[test]
fn a_host_just_inside_a_waves_edge_holds_the_wave() {
    let h = TestHost::new("fleet-prom-edge", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let started = now - 3 * 3600;
    let recent = [(now - 600, now - 60)];
    // Inside the 10% wave by the hosts' rule; "0.100000" at six places.
    let edge = 0.0999996_f64;
    assert!(edge * 100.0 < 10.0);
    let mut lines = Vec::new();
    for (name, position, outcome) in [
        ("canary:9100", 0.05, "committed"),
        ("edge:9100", edge, "installed"),
        ("outside:9100", 0.5, "committed"),
    ] {
        let written: f64 = abupdate::report::position_sample(position)
            .parse()
            .expect("a number");
        host_lines(
            &mut lines,
            name,
            "edge",
            written,
            &[("8.0", outcome, started + 600)],
            &recent,
        );
    }
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics(&lines));
    let m = release(&h, "edge", "8.0", started);
    keeps_a_two_host_wave(
        &h,
        &m,
        &p.url(""),
        &["--selector", "region=\"edge\""],
        serde_json::json!({"installed": 1, "committed": 1, "failed": 0, "committed_outside": 1}),
    );
}

/// The controller keeps the first wave of `m`, whose two hosts one
/// installed and one committed (`in_wave`: the wave's tally as `--json`
/// gives it), and changes nothing in its directory.
fn keeps_a_two_host_wave(
    h: &TestHost,
    m: &Path,
    url: &str,
    extra: &[&str],
    in_wave: serde_json::Value,
) {
    let before = snapshot(m.parent().expect("dir"));
    let out = controller(h, m, url, extra);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (j["action"].as_str(), j["wave_hosts"].as_u64()),
        (Some("keep"), Some(2)),
        "{j}"
    );
    assert_eq!(j["in_wave"], in_wave, "{j}");
    assert_eq!(snapshot(m.parent().expect("dir")), before);
}

/// Found from outside (stop 48): a release dated ahead of the clocks
/// (hosts take a `created` up to a day ahead) was installed by the first
/// wave before its `created`; the first wave's lookback, since `created`,
/// shrank to its 10-minute floor, and a wave host that installed and went
/// silent 30 minutes ago was forgotten: the canary's commit advanced the
/// wave. The first wave's reports are looked for from a day before
/// `created`: the silent host holds the wave.
#[test]
fn a_first_wave_installed_before_its_created_still_counts_its_silent_host() {
    let h = TestHost::new("fleet-prom-ahead", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let created = now - 60;
    let mut lines = Vec::new();
    host_lines(
        &mut lines,
        "canary:9100",
        "ahead",
        0.05,
        &[("8.0", "committed", now - 50 * 60)],
        &[(now - 55 * 60, now - 60)],
    );
    host_lines(
        &mut lines,
        "silent:9100",
        "ahead",
        0.07,
        &[("8.0", "installed", now - 54 * 60)],
        &[(now - 55 * 60, now - 30 * 60)],
    );
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics(&lines));
    let m = release(&h, "ahead", "8.0", created);
    keeps_a_two_host_wave(
        &h,
        &m,
        &p.url(""),
        &["--selector", "region=\"ahead\"", "--soak", "0s"],
        serde_json::json!({"installed": 1, "committed": 1, "failed": 0, "committed_outside": 0}),
    );
}

/// Review 8, finding 01: `in_wave` is the outcome query's own join
/// marker, but a host writes its outcome series' labels itself (its
/// textfile, or an operator's `[report] labels`). One host outside the
/// wave exporting `in_wave="no"` made every run fail ("unexpected in_wave
/// label"), so a failing wave was never paused; one exporting
/// `in_wave="1"` had its commit counted as the wave's. The query drops
/// the hosts' own value: region `veto` (two of the five wave hosts rolled
/// back) pauses, and region `forge` (four of five committed) keeps.
#[test]
fn an_in_wave_label_a_host_writes_itself_neither_blocks_a_pause_nor_joins_the_wave() {
    let h = TestHost::new("fleet-prom-own-label", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let started = now - 3 * 3600;
    let recent = [(now - 600, now - 60)];
    let mut lines = Vec::new();
    for (region, wave) in [
        ("veto", ["rolled_back", "rolled_back", "", "", ""]),
        (
            "forge",
            ["committed", "committed", "committed", "committed", ""],
        ),
    ] {
        for i in 0..50 {
            let outcome = wave.get(i).copied().unwrap_or_default();
            let outcomes: &[Outcome] = match outcome {
                "" => &[],
                o => &[("8.0", o, started + 600)],
            };
            let position = (i as f64 + 0.5) / 50.0;
            let name = format!("{region}-{i:02}:9100");
            host_lines(&mut lines, &name, region, position, outcomes, &recent);
        }
        let own = match region {
            "veto" => "no",
            _ => "1",
        };
        let lab = format!("{region}-lab:9100");
        let mut lab_lines = Vec::new();
        let committed: &[Outcome] = &[("8.0", "committed", started + 900)];
        host_lines(&mut lab_lines, &lab, region, 0.99, committed, &recent);
        lines.extend(lab_lines.into_iter().map(|l| {
            l.replace(
                "outcome=\"committed\"",
                &format!("outcome=\"committed\",in_wave=\"{own}\""),
            )
        }));
    }
    assert!(lines.iter().any(|l| l.contains("in_wave=\"no\"")));
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics(&lines));
    let decide = |region: &str| {
        let m = release(&h, region, "8.0", started);
        let selector = format!("region=\"{region}\"");
        let out = controller(
            &h,
            &m,
            &p.url(""),
            &["--selector", &selector, "--max-failures", "1"],
        );
        assert!(out.status.success(), "{region}: {}", text(&out));
        (m, json(&out))
    };

    let (m, j) = decide("veto");
    assert_eq!(j["action"].as_str(), Some("pause"), "{j}");
    assert_eq!(
        j["in_wave"],
        serde_json::json!({"installed": 0, "committed": 0, "failed": 2, "committed_outside": 1}),
        "{j}"
    );
    assert_eq!(doc(&m)["rollout"]["paused"], true);

    let (m, j) = decide("forge");
    assert_eq!(
        (j["action"].as_str(), j["wave_hosts"].as_u64()),
        (Some("keep"), Some(5)),
        "{j}"
    );
    assert_eq!(
        j["in_wave"],
        serde_json::json!({"installed": 0, "committed": 4, "failed": 0, "committed_outside": 1}),
        "{j}"
    );
    assert_eq!(doc(&m)["rollout"]["percent"], 10.0);
}

/// Finding 1 of the outside review: in the 10% wave (hosts 0-4) host 0
/// committed; hosts 1-4 installed and went silent half an hour into the
/// wave (a release that breaks their network). 49 hours later the wave's
/// size was sampled at 24 steps of the wave's age, none of which fell in
/// the silent hosts' half hour, and their `installed` series had gone
/// stale: "1 of ~1 hosts committed" advanced the wave. The wave's start is
/// chosen here so that the old steps miss them every time (the reviewer
/// saw it in 4 runs of 6, by luck of alignment). Every sample of the
/// lookback counts now: they hold the wave as `installed`.
#[test]
fn hosts_silent_since_early_in_an_old_wave_still_hold_it() {
    let h = TestHost::new("fleet-prom-early", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    // The silent hosts' life in the wave: [alive, gone].
    let alive = now - 49 * 3600;
    let gone = alive + 30 * 60;
    let mut lines = Vec::new();
    for i in 0..50 {
        let (outcomes, windows): (&[Outcome], Vec<(i64, i64)>) = match i {
            0 => (
                &[
                    ("9.0", "installed", alive),
                    ("9.0", "committed", alive + 600),
                ],
                vec![(alive, gone), (now - 600, now - 60)],
            ),
            1..=4 => (&[("9.0", "installed", alive)], vec![(alive, gone)]),
            _ => (&[], vec![(alive, gone), (now - 600, now - 60)]),
        };
        let position = (i as f64 + 0.5) / 50.0;
        let name = format!("host-{i:02}:9100");
        host_lines(&mut lines, &name, "early", position, outcomes, &windows);
    }
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics(&lines));
    // A wave start before `alive` whose age L gives the old subquery steps
    // of L/24 seconds, aligned to multiples of the step, none in
    // [alive, gone + 5 min] (an instant sees a sample for 5 minutes); L a
    // multiple of 24 so that the step stays the same for 23 seconds.
    let t = abupdate::timefmt::now();
    let step = ((t - alive) / 24 + 1..)
        .find(|s| {
            let next = (alive + s - 1) / s * s;
            next > gone + 300
        })
        .expect("a step");
    let m = release(&h, "early", "9.0", t - 24 * step);
    let before = snapshot(m.parent().expect("dir"));
    let out = controller(&h, &m, &p.url(""), &["--selector", "region=\"early\""]);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (
            j["action"].as_str(),
            j["reason"].as_str(),
            j["wave_hosts"].as_u64()
        ),
        (
            Some("keep"),
            Some("wave 10%: 1 of ~5 hosts committed, 5 needed"),
            Some(5)
        ),
        "{j}"
    );
    assert_eq!(
        j["in_wave"],
        serde_json::json!({"installed": 4, "committed": 1, "failed": 0, "committed_outside": 0}),
        "{j}"
    );
    assert_eq!(snapshot(m.parent().expect("dir")), before);
}

/// Finding 6 of the outside review: 2.0 re-packed with another image (a
/// rebuild under the same version) was advanced on the commits of build 1,
/// which its hosts kept reporting (build 2 is "not newer" to them). Each
/// region's 10% wave (hosts 0-4) committed 2.0: region `old` build 1,
/// region `new` build 2, region `legacy` with no `build` label (hosts of
/// an older abupdate: counted as before). On `old` alone fleet refuses to
/// decide build 2 (no host reports it); `new` and `legacy` advance it.
#[test]
fn commits_of_another_build_of_the_version_do_not_advance_it() {
    let h = TestHost::new("fleet-prom-build", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let started = now - 3 * 3600;
    let recent = [(now - 600, now - 60)];
    let build_of = |m: &Path| {
        let d: abupdate::manifest::ManifestDoc =
            serde_json::from_slice(&std::fs::read(m).expect("manifest")).expect("doc");
        d.build()
    };
    let packed = |name: &str, bytes: &[u8]| {
        let created = abupdate::timefmt::format_rfc3339(started);
        h.pack(
            name,
            "2.0",
            bytes,
            &["--waves", "10,50,100", "--created", &created],
        )
    };
    let build1 = build_of(&packed("build1", &image("2.0", 1 << 16)));
    let rebuilt = |name: &str| packed(name, &image("2.0 rebuilt", 1 << 16));
    let build2 = build_of(&rebuilt("build2"));
    assert_ne!(build1, build2);
    let mut lines = Vec::new();
    for (region, build) in [
        ("old", Some(&build1)),
        ("new", Some(&build2)),
        ("legacy", None),
    ] {
        let mut of_region = Vec::new();
        for i in 0..50 {
            let outcomes: &[Outcome] = match i {
                0..5 => &[("2.0", "committed", started + 600)],
                _ => &[],
            };
            let position = (i as f64 + 0.5) / 50.0;
            let name = format!("{region}-{i:02}:9100");
            host_lines(&mut of_region, &name, region, position, outcomes, &recent);
        }
        lines.extend(of_region.into_iter().map(|l| match build {
            Some(b) => l.replace("release=\"2.0\"", &format!("release=\"2.0\",build=\"{b}\"")),
            None => l,
        }));
    }
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics(&lines));
    // Build 1's commits are no report of build 2: not deciding blind,
    // nothing re-signed (before: "advance", on 5 commits).
    let m = rebuilt("build2-old");
    let before = snapshot(m.parent().expect("dir"));
    let out = controller(&h, &m, &p.url(""), &["--selector", "region=\"old\""]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("reports release 2.0 build {build2}")),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(m.parent().expect("dir")), before);
    for region in ["new", "legacy"] {
        let m = rebuilt(&format!("build2-{region}"));
        let selector = format!("region=\"{region}\"");
        let out = controller(&h, &m, &p.url(""), &["--selector", &selector]);
        assert!(out.status.success(), "{region}: {}", text(&out));
        let j = json(&out);
        assert_eq!(
            (j["action"].as_str(), j["in_wave"]["committed"].as_u64()),
            (Some("advance"), Some(5)),
            "{region}: {j}"
        );
        assert_eq!(build_of(&m), build2, "a wave advance changed the build");
    }
}

/// A textfile as abupdate 213989b wrote it (no `compatible`, no
/// `abupdate_release_outcome`): `tests/fixtures/textfile-213989b-*.prom`.
const OLD_STAGED: &str = include_str!("../fixtures/textfile-213989b-staged.prom");
const OLD_ROLLED_BACK: &str = include_str!("../fixtures/textfile-213989b-rolled-back.prom");
const OLD_NEVER_BOOTED: &str = include_str!("../fixtures/textfile-213989b-never-booted.prom");

/// The samples of an older host's `textfile` as Prometheus scrapes them
/// from `instance` in `region`, one a minute in `[from, to]`: the host's
/// last install at `installed`, its position `position`.
fn old_host_lines(
    lines: &mut Vec<String>,
    textfile: &str,
    (instance, region): (&str, &str),
    position: f64,
    installed: i64,
    (from, to): (i64, i64),
) {
    let host = format!("instance=\"{instance}\",job=\"node\",region=\"{region}\"");
    for sample in textfile.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = sample.rsplit_once(' ').expect("a sample");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, format!("{},{host}", rest.trim_end_matches('}'))),
            None => (series, host.clone()),
        };
        let value = match name {
            "abupdate_rollout_position" => position.to_string(),
            n if n.ends_with("_timestamp_seconds") => installed.to_string(),
            _ => value.to_string(),
        };
        let mut t = from;
        while t <= to {
            lines.push(format!("{name}{{{labels}}} {value} {t}"));
            t += 60;
        }
    }
}

/// Each family's samples together (OpenMetrics), every family untyped.
fn openmetrics_any(lines: &[String]) -> String {
    let mut by_family: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for l in lines {
        let name = l.split(['{', ' ']).next().expect("a name");
        by_family.entry(name).or_default().push(l);
    }
    let mut out: String = by_family
        .values()
        .flat_map(|v| v.iter().map(|l| format!("{l}\n")))
        .collect();
    out.push_str("# EOF\n");
    out
}

/// Finding F1 of the version-crossing review: hosts on abupdate 213989b
/// (no `compatible` label) install release 4.0, which ships the current
/// binary; where 4.0 fails, the host falls back to 213989b, which rewrites
/// the textfile in its own format, so no outcome of 4.0 is left to see.
/// In region `cross`'s 10% wave (hosts 0-4), hosts 0-2 run the current
/// abupdate and committed 4.0; host 3 failed its trial (its old series
/// before the install, a gap while 4.0 ran, then `abupdate_rollbacks_total`
/// 1), host 4's trial never booted (first scraped after it fell back). The
/// controller saw 3 of 3 commits and advanced; it pauses now, naming them.
/// Not counted: older hosts with old rollbacks (host 40 all along, host 41
/// first scraped now but installed nothing in the wave), a counter reset
/// (host 42), and an older host that rolled back in another region.
#[test]
fn hosts_that_fell_back_to_an_abupdate_without_compatible_count_failed() {
    let h = TestHost::new("fleet-prom-old-fallback", "1.0", HostOptions::default());
    let now = abupdate::timefmt::now();
    let started = now - 3 * 3600;
    // The hosts of the current abupdate: 0-2 committed 4.0; 3 and 4 are
    // the older ones below.
    let committed: &[Outcome] = &[
        ("4.0", "installed", started + 600),
        ("4.0", "committed", started + 900),
    ];
    let mut lines = Vec::new();
    for i in (0..50).filter(|i| !(3..=4).contains(i)) {
        // Host 43 is also an older host come back (below): it committed.
        let outcomes = if i < 3 || i == 43 { committed } else { &[] };
        let (name, position) = (format!("cross-{i:02}:9100"), (i as f64 + 0.5) / 50.0);
        let recent = [(now - 600, now - 60)];
        host_lines(&mut lines, &name, "cross", position, outcomes, &recent);
    }
    // (textfile, host, last install, scraped from, to): the host's region
    // is its name's first part, its position its number's.
    let (s, n) = (started, now);
    let (inst, ago) = (started + 600, started - 86400);
    let (staged, back, never) = (OLD_STAGED, OLD_ROLLED_BACK, OLD_NEVER_BOOTED);
    for (textfile, name, installed, window) in [
        // Host 3: 213989b's series from before the wave, staged 4.0,
        // scraped again once it fell back.
        (staged, "cross-03", inst, (s - 1200, s + 1800)),
        (back, "cross-03", inst, (s + 2400, n - 60)),
        // Host 4: first scraped after its trial never booted.
        (never, "cross-04", inst, (n - 900, n - 60)),
        // Not counted: an old rollback, seen all along or first now.
        (back, "cross-40", ago, (s - 1200, n - 60)),
        (back, "cross-41", ago, (n - 900, n - 60)),
        // Back after the wave started, its rollback of long ago first
        // seen now, and the release installed and committed since: it is
        // counted by its outcome, committed, never failed (review 7, N3).
        (back, "cross-43", inst, (n - 900, n - 60)),
        // A counter back to 0 (its state lost) is no rollback.
        (back, "cross-42", ago, (s - 1200, s + 1800)),
        (staged, "cross-42", inst, (s + 2400, n - 60)),
        // Another region's rollback, as host 3's.
        (staged, "other-03", inst, (s - 1200, s + 1800)),
        (back, "other-03", inst, (s + 2400, n - 60)),
    ] {
        let (region, i) = name.split_once('-').expect("region-number");
        let position = (i.parse::<f64>().expect("a number") + 0.5) / 50.0;
        let host = (&format!("{name}:9100")[..], region);
        old_host_lines(&mut lines, textfile, host, position, installed, window);
    }
    let p = prom::prometheus_with(&h.dir.join("prometheus"), &openmetrics_any(&lines));
    let m = release(&h, "cross", "4.0", started);
    let before = snapshot(m.parent().expect("dir"));
    let cross = ["--selector", "region=\"cross\""];
    let older = "of the failed, 2 hosts of an older abupdate (no `compatible` label) rolled \
                 back in the lookback (which release is not known)";
    // Under the default limits (5 failures): counted and named, not paused.
    let dry = [&cross[..], &["--dry-run"]].concat();
    let out = controller(&h, &m, &p.url(""), &dry);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    // Committed: 0-2 in the wave, 43 outside it.
    for (key, want) in [("failed", 2), ("failed_unattributed", 2), ("committed", 4)] {
        assert_eq!(j[key], want, "{key}: {j}");
    }
    assert!(
        j["reason"].as_str().is_some_and(|r| r.ends_with(older)),
        "{j}"
    );
    // The reviewer's limit: paused (before: "advance", 3 of ~3 committed).
    let limit = [&cross[..], &["--max-failures", "2"]].concat();
    let out = controller(&h, &m, &p.url(""), &limit);
    assert!(out.status.success(), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        (j["action"].as_str(), j["reason"].as_str()),
        (
            Some("pause"),
            Some(format!("2 hosts failed (limit 2); {older}").as_str())
        ),
        "{j}"
    );
    assert_eq!(doc(&m)["rollout"]["paused"], true);
    assert_ne!(snapshot(m.parent().expect("dir")), before);
    assert!(minisign_accepts(&m, &h.public_key));
}
