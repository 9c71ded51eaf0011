//! `pack` and `fleet` killed at every durable step, the fault-matrix way:
//! each flow runs once with `ABUPDATE_FAILPOINT_TRACE` to list the steps it
//! takes (each payload staged and renamed, the payloads synced, each bound
//! signature, the manifest written and renamed, each standard signature,
//! the clean-up, and the torn-write points inside them), then, from the same
//! starting directory, it is aborted at each of them (as kill -9 or a power
//! cut would stop it). After each abort, a host reading the directory sees
//! the previous complete release or the new complete one:
//!
//! - `abupdate check` verifies the manifest (signatures, threshold, parse),
//!   and its version and rollout are the old or the new ones;
//! - `abupdate install` writes every payload it names into a slot and the
//!   slot's bytes are that version's image (the hashes matched);
//! - the real `minisign -V` accepts the manifest once the run is re-done,
//!   the re-run finishes the job, and no temporary file is left.
//!
//! Flows: a first `pack` into an empty directory, a `pack` of 3.0 over a
//! published 2.0 (segments and a delta: several payloads), a `fleet` pause,
//! and an m-of-n `fleet` advance re-signed by two keys.

use crate::common::host::{bin, image, run, text, HostOptions, TestHost, COMPATIBLE};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LEN: usize = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    PackFirst,
    PackOver,
    FleetPause,
    FleetMofN,
}

/// What a host may see in the directory.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Nothing,
    Release {
        version: String,
        paused: bool,
        percent: Option<f64>,
    },
}

/// Keys, images and the starting directory of one flow.
struct Setup {
    flow: Flow,
    work: PathBuf,
    secrets: Vec<PathBuf>,
    publics: Vec<PathBuf>,
    base: PathBuf,
    reports: PathBuf,
}

fn must(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", text(&out));
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("mkdir");
    if let Ok(rd) = std::fs::read_dir(from) {
        for e in rd.flatten() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

fn report(host: &str, outcome: &str, time: i64) -> String {
    serde_json::json!({
        "host": host, "compatible": COMPATIBLE, "release": "2.0", "booted_slot": "A",
        "booted_version": "1.0", "outcome": outcome, "error_kind": null, "message": null,
        "time": time,
    })
    .to_string()
}

impl Setup {
    fn new(flow: Flow) -> Setup {
        let work = crate::common::host::scratch(&format!("publish-{flow:?}"));
        let n = if flow == Flow::FleetMofN { 2 } else { 1 };
        let keys = work.join("keys");
        std::fs::create_dir_all(&keys).expect("mkdir");
        let (mut secrets, mut publics) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (s, p) = (
                work.join(format!("k{i}.key")),
                keys.join(format!("k{i}.pub")),
            );
            must(
                run(Command::new(bin())
                    .args(["keygen", "--secret"])
                    .arg(&s)
                    .arg("--public")
                    .arg(&p)),
                "keygen",
            );
            secrets.push(s);
            publics.push(p);
        }
        for v in ["1.0", "2.0", "3.0"] {
            std::fs::write(work.join(format!("{v}.raw")), image(v, LEN)).expect("image");
        }
        let reports = work.join("reports.jsonl");
        let lines: Vec<String> = match flow {
            Flow::FleetPause => (0..6)
                .map(|i| report(&format!("h{i}"), "rolled_back", i))
                .collect(),
            _ => vec![report("h1", "committed", 1)],
        };
        std::fs::write(&reports, lines.join("\n")).expect("reports");
        let s = Setup {
            flow,
            base: work.join("base"),
            work,
            secrets,
            publics,
            reports,
        };
        std::fs::create_dir_all(&s.base).expect("mkdir");
        let extra: &[&str] = match flow {
            Flow::PackFirst => &[],
            Flow::PackOver => &["--segment-size", "1"],
            Flow::FleetPause => &["--percent", "100"],
            Flow::FleetMofN => &["--percent", "1"],
        };
        if flow != Flow::PackFirst {
            must(s.pack(&s.base, "2.0", extra), "base");
        }
        s
    }

    fn pack(&self, out: &Path, version: &str, extra: &[&str]) -> Output {
        let mut c = Command::new(bin());
        c.arg("pack");
        for k in &self.secrets {
            c.arg("--secret").arg(k);
        }
        c.args([
            "--compatible",
            COMPATIBLE,
            "--version",
            version,
            "--level",
            "3",
        ])
        .arg(format!(
            "--image=rootfs={}",
            self.work.join(format!("{version}.raw")).display()
        ))
        .arg("--out")
        .arg(out)
        .args(extra);
        run(&mut c)
    }

    /// The flow's command on directory `dir`, with `env` set.
    fn command(&self, dir: &Path, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        match self.flow {
            Flow::PackFirst | Flow::PackOver => {
                let from = format!("rootfs={}", self.work.join("2.0.raw").display());
                let (version, extra) = match self.flow {
                    Flow::PackFirst => ("2.0", vec!["--segment-size", "1"]),
                    _ => ("3.0", vec!["--segment-size", "1", "--delta-from", &from]),
                };
                c.arg("pack");
                for k in &self.secrets {
                    c.arg("--secret").arg(k);
                }
                c.args([
                    "--compatible",
                    COMPATIBLE,
                    "--version",
                    version,
                    "--level",
                    "3",
                ])
                .arg(format!(
                    "--image=rootfs={}",
                    self.work.join(format!("{version}.raw")).display()
                ))
                .arg("--out")
                .arg(dir)
                .args(extra);
            }
            Flow::FleetPause | Flow::FleetMofN => {
                c.args(["fleet", "--manifest"])
                    .arg(dir.join("release.json"));
                for k in &self.secrets {
                    c.arg("--secret").arg(k);
                }
                c.arg("--keys")
                    .arg(self.work.join("keys"))
                    .args(["--threshold", &self.secrets.len().to_string()])
                    .arg("--reports")
                    .arg(&self.reports)
                    .args([
                        "--max-failures",
                        "5",
                        "--waves",
                        "1,5,100",
                        "--fleet-size",
                        "100",
                    ]);
            }
        }
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// What a host sees before and after a complete run.
    fn old_and_new(&self) -> (Seen, Seen) {
        let rel = |version: &str, paused, percent| Seen::Release {
            version: version.into(),
            paused,
            percent,
        };
        match self.flow {
            Flow::PackFirst => (Seen::Nothing, rel("2.0", false, None)),
            Flow::PackOver => (rel("2.0", false, None), rel("3.0", false, None)),
            Flow::FleetPause => (
                rel("2.0", false, Some(100.0)),
                rel("2.0", true, Some(100.0)),
            ),
            Flow::FleetMofN => (rel("2.0", false, Some(1.0)), rel("2.0", false, Some(5.0))),
        }
    }

    /// A fresh host (booted 1.0, trusting this flow's keys, a canary)
    /// reads `dir`: what it sees, asserted complete and verifiable.
    fn host_sees(&self, dir: &Path, tag: &str, at: &str) -> Seen {
        let mut h = TestHost::new(
            &format!("publish-{:?}-{tag}", self.flow),
            "1.0",
            HostOptions::default(),
        );
        let keys = h.dir.join("keys");
        let _ = std::fs::remove_file(&h.public_key);
        for p in &self.publics {
            std::fs::copy(p, keys.join(p.file_name().expect("name"))).expect("trust");
        }
        let cfg = std::fs::read_to_string(&h.config).expect("config");
        let cfg = cfg.replace(
            "[update]\n",
            &format!("[update]\nthreshold = {}\n", self.publics.len()),
        );
        std::fs::write(&h.config, cfg + "[rollout]\nwariness = 0.0\n").expect("config");
        let m = dir.join("release.json");
        if !m.exists() {
            return Seen::Nothing;
        }
        let out = h.abupdate(&["--json", "check", m.to_str().expect("p")]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{at}: check --json ({e}): {}", text(&out)));
        match out.status.code() {
            Some(100) => {}
            Some(0) => assert!(
                j["message"].as_str().is_some_and(|m| m.contains("paused")),
                "{at}: {j}"
            ),
            _ => panic!("{at}: the host cannot verify the release: {}", text(&out)),
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&m).expect("m")).expect("json");
        let version = doc["version"].as_str().expect("version").to_string();
        // Every payload it names is complete: the install writes and hashes it.
        let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("p")]);
        assert!(out.status.success(), "{at}: install: {}", text(&out));
        assert_eq!(h.boot(), "B", "{at}");
        let written = h.slot_bytes(1, LEN);
        assert!(
            written == image(&version, LEN),
            "{at}: slot B is not {version}'s image"
        );
        Seen::Release {
            version,
            paused: doc["rollout"]["paused"].as_bool().unwrap_or(false),
            percent: doc["rollout"]["percent"].as_f64(),
        }
    }

    /// The failpoints the flow passes, as `name:N`.
    fn trace(&self) -> Vec<String> {
        let dir = self.work.join("trace");
        copy_dir(&self.base, &dir);
        let log = self.work.join("trace.log");
        let _ = std::fs::remove_file(&log);
        must(
            self.command(
                &dir,
                &[("ABUPDATE_FAILPOINT_TRACE", log.to_str().expect("utf8"))],
            ),
            "trace run",
        );
        let names = std::fs::read_to_string(&log).unwrap_or_default();
        let mut seen = std::collections::BTreeMap::<String, u32>::new();
        names
            .lines()
            .filter(|n| n.starts_with("publish-"))
            .map(|n| {
                let c = seen.entry(n.to_string()).or_default();
                *c += 1;
                format!("{n}:{c}")
            })
            .collect()
    }
}

fn no_temporary_files(dir: &Path, at: &str) {
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "{at}: {name} left behind");
    }
}

fn matrix(flow: Flow) {
    let s = Setup::new(flow);
    let (old, new) = s.old_and_new();
    let points = s.trace();
    for want in [
        "publish-bound-signature-written:1",
        "publish-manifest-renamed:1",
        "publish-signature-written:1",
        "publish-cleaned:1",
    ] {
        assert!(
            points.iter().any(|p| p == want),
            "{flow:?}: {want} not passed: {points:?}"
        );
    }
    if flow == Flow::PackOver {
        assert!(
            points.iter().any(|p| p == "publish-payload-written:2"),
            "{flow:?}: {points:?}"
        );
    }
    for (i, point) in points.iter().enumerate() {
        let at = format!("{flow:?} killed at {point}");
        let dir = s.work.join(format!("crash-{i}"));
        copy_dir(&s.base, &dir);
        let out = s.command(&dir, &[("ABUPDATE_FAILPOINT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{at}: did not abort there: {}",
            text(&out)
        );
        let seen = s.host_sees(&dir, &format!("{i}"), &at);
        assert!(
            seen == old || seen == new,
            "{at}: a host sees {seen:?}, neither {old:?} nor {new:?}"
        );
        // Re-running the command finishes the job.
        must(s.command(&dir, &[]), &format!("{at}: re-run"));
        assert_eq!(
            s.host_sees(&dir, &format!("{i}-after"), &at),
            new,
            "{at}: after the re-run"
        );
        no_temporary_files(&dir, &at);
        let m = dir.join("release.json");
        for (k, p) in s.publics.iter().enumerate() {
            let sig = match k {
                0 => dir.join("release.json.minisig"),
                k => dir.join(format!("release.json.{k}.minisig")),
            };
            let out = run(Command::new("minisign")
                .arg("-Vm")
                .arg(&m)
                .arg("-p")
                .arg(p)
                .arg("-x")
                .arg(&sig));
            assert!(
                out.status.success(),
                "{at}: minisign rejects {}: {}",
                sig.display(),
                text(&out)
            );
        }
    }
    println!(
        "publish crash matrix {flow:?}: {} points: {}",
        points.len(),
        points.join(", ")
    );
}

#[test]
fn a_first_pack_killed_at_every_step_leaves_nothing_or_the_complete_release() {
    matrix(Flow::PackFirst);
}

#[test]
fn a_pack_over_a_published_release_killed_at_every_step_leaves_the_old_or_the_new() {
    matrix(Flow::PackOver);
}

#[test]
fn a_fleet_pause_killed_at_every_step_leaves_the_old_or_the_paused_manifest() {
    matrix(Flow::FleetPause);
}

#[test]
fn an_m_of_n_fleet_advance_killed_at_every_step_leaves_the_old_or_the_new_manifest() {
    matrix(Flow::FleetMofN);
}
