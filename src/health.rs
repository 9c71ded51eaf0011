//! Health checks: the evidence on which a trial slot is committed or
//! rolled back.
//!
//! Invariant: a verdict of healthy needs every configured check to pass in
//! the same round; a check that hangs is killed at its own timeout and
//! counts as failed, and the whole verdict is reached within
//! `[health] timeout`.

use crate::config::Health;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One check and how it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The checks a config asks for, in the order they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Executable(PathBuf),
    Unit(String),
    Http(String),
}

impl Check {
    pub fn name(&self) -> String {
        match self {
            Check::Executable(p) => p.display().to_string(),
            Check::Unit(u) => format!("unit {u}"),
            // Shown in logs, reasons, JSON and reports: no user info.
            Check::Http(u) => format!("GET {}", crate::fetch::redact(u)),
        }
    }
}

/// Executables in the health dir (sorted by name), then units, then URLs.
/// A missing dir means no executable checks.
pub fn configured_checks(cfg: &Health) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let mut exes: Vec<PathBuf> = std::fs::read_dir(&cfg.dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    std::fs::metadata(p)
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
                .collect()
        })
        .unwrap_or_default();
    exes.sort();
    let mut checks: Vec<Check> = exes.into_iter().map(Check::Executable).collect();
    checks.extend(cfg.units.iter().cloned().map(Check::Unit));
    checks.extend(cfg.http.iter().cloned().map(Check::Http));
    checks
}

fn run_command(mut cmd: Command, timeout: Duration) -> (bool, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run: {e}")),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut out);
                }
                if out.trim().is_empty() {
                    if let Some(mut s) = child.stdout.take() {
                        let _ = s.read_to_string(&mut out);
                    }
                }
                let line = out
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return (
                    status.success(),
                    if status.success() {
                        line
                    } else {
                        format!("{status}: {line}")
                    },
                );
            }
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return (false, format!("timed out after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return (false, format!("wait: {e}")),
        }
    }
}

fn run_http(url: &str, timeout: Duration) -> (bool, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(resp) if resp.status().is_success() => (true, resp.status().to_string()),
        Ok(resp) => (false, format!("HTTP {}", resp.status())),
        Err(e) => (false, crate::fetch::redact(&e.to_string()).into_owned()),
    }
}

/// Run one check once.
pub fn run_check(check: &Check, timeout: Duration) -> CheckResult {
    let (passed, detail) = match check {
        Check::Executable(p) => run_command(Command::new(p), timeout),
        Check::Unit(u) => {
            let mut c = Command::new("systemctl");
            c.args(["is-active", "--quiet", u]);
            run_command(c, timeout)
        }
        Check::Http(u) => run_http(u, timeout),
    };
    CheckResult {
        name: check.name(),
        passed,
        detail,
    }
}

/// Run every check, round after round, until all pass in one round or the
/// overall timeout leaves no room for another round. Returns the last round.
pub fn run_until_verdict(
    cfg: &Health,
    log: &mut dyn FnMut(&CheckResult),
) -> (bool, Vec<CheckResult>) {
    let checks = configured_checks(cfg);
    let deadline = Instant::now() + cfg.timeout;
    loop {
        let round_start = Instant::now();
        let left = deadline.saturating_duration_since(round_start);
        let per_check = cfg.check_timeout.min(left.max(Duration::from_secs(1)));
        let results: Vec<CheckResult> = checks.iter().map(|c| run_check(c, per_check)).collect();
        for r in &results {
            log(r);
        }
        if results.iter().all(|r| r.passed) {
            return (true, results);
        }
        let next = Instant::now() + cfg.interval;
        if next + round_start.elapsed() > deadline {
            return (false, results);
        }
        std::thread::sleep(cfg.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn cfg(dir: PathBuf, timeout: u64) -> Health {
        Health {
            dir,
            timeout: Duration::from_secs(timeout),
            check_timeout: Duration::from_secs(1),
            interval: Duration::from_millis(100),
            units: vec![],
            http: vec![],
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("abupdate-health-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn all_passing_checks_are_healthy() {
        let d = dir("pass");
        script(&d, "10-ok", "exit 0");
        std::fs::write(d.join("README"), "not executable").expect("write");
        let (ok, results) = run_until_verdict(&cfg(d, 5), &mut |_| {});
        assert!(ok);
        assert_eq!(results.len(), 1);
    }

    #[test]
    fn a_failing_check_fails_the_verdict_with_its_message() {
        let d = dir("fail");
        script(&d, "10-ok", "exit 0");
        script(&d, "20-db", "echo 'database down' >&2; exit 3");
        let (ok, results) = run_until_verdict(&cfg(d, 1), &mut |_| {});
        assert!(!ok);
        let bad = results.iter().find(|r| !r.passed).expect("a failure");
        assert!(
            bad.name.ends_with("20-db") && bad.detail.contains("database down"),
            "{bad:?}"
        );
    }

    #[test]
    fn a_hanging_check_is_killed_and_fails() {
        let d = dir("hang");
        script(&d, "10-hang", "sleep 30");
        let start = Instant::now();
        let (ok, results) = run_until_verdict(&cfg(d, 2), &mut |_| {});
        assert!(!ok);
        assert!(results[0].detail.contains("timed out"), "{results:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_check_that_recovers_within_the_timeout_passes() {
        let d = dir("flaky");
        let marker = d.join("count");
        script(
            &d,
            "10-flaky",
            &format!(
                "echo x >> {m}; [ $(wc -l < {m}) -ge 3 ]",
                m = marker.display()
            ),
        );
        let (ok, _) = run_until_verdict(&cfg(d, 10), &mut |_| {});
        assert!(ok);
    }
}
