//! Health checks: the evidence on which a trial slot is committed or
//! rolled back.
//!
//! Invariant: a verdict of healthy needs every configured check to pass in
//! the same round; a check that hangs is killed (with everything it
//! started) at its own timeout or at the verdict's deadline, whichever
//! comes first, and counts as failed; so the whole verdict is reached
//! within `[health] timeout`. Checks run through [`crate::child`]: what a
//! check leaves running in the background is killed when it exits and
//! never holds the verdict; its output is drained, never blocking it.
//! A check that cannot run fails, it is never skipped: every entry of
//! `[health] dir` but hidden ones (`.name`) is a check, and one that is not
//! a regular executable file (a dangling link, a file never made
//! executable) or that others could replace (the file, or a directory on
//! its way: `[health] dir` itself, its parents, a link's target's; the rule
//! hooks follow, [`crate::safe_path`]: it runs as root) fails naming why; so
//! does a configured dir that is missing or unreadable. What runs is the
//! file that was judged, never the name looked up again.

use crate::config::Health;
use crate::fetch::Roots;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One check and how it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The check, as the log names it.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What it said (the last line of its output), or why it failed.
    pub detail: String,
}

/// The checks a config asks for, in the order they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// An executable in `[health] dir`: exit 0 = healthy.
    Executable(PathBuf),
    /// `[health] dir` itself when it cannot be listed: always fails.
    Unlisted {
        /// The dir.
        dir: PathBuf,
        /// Why it cannot be listed.
        reason: String,
    },
    /// A systemd unit that must be active.
    Unit(String),
    /// An HTTP URL that must answer 2xx.
    Http(String),
}

impl Check {
    /// The check, as the log names it.
    pub fn name(&self) -> String {
        match self {
            // A file name is bytes: shown by the shared rule (`\xNN` for
            // what is not text or is a control), never lossily.
            Check::Executable(p) => crate::text::show_path(p),
            Check::Unlisted { dir, .. } => crate::text::show_path(dir),
            Check::Unit(u) => format!("unit {u}"),
            // Shown in logs, reasons, JSON and reports: no user info.
            Check::Http(u) => format!("GET {}", crate::fetch::redact(u)),
        }
    }
}

/// Every entry of the health dir but hidden ones (sorted by name), then
/// units, then URLs. A dir that is missing is no executable checks when it
/// is the default one; a configured one that is missing, or any that
/// cannot be listed, is a check that fails.
pub fn configured_checks(cfg: &Health) -> Vec<Check> {
    let mut checks = Vec::new();
    let failing = |reason: String| Check::Unlisted {
        dir: cfg.dir.clone(),
        reason,
    };
    match crate::files::listed(&cfg.dir, b"") {
        Ok(names) => {
            // Others who could empty the directory would pass every
            // verdict with no check at all: the directory is one more
            // check, failing first.
            let open = crate::safe_path::program_dir(&cfg.dir).err();
            checks.extend(
                open.map(|why| failing(format!("[health] dir others could change: {why}"))),
            );
            checks.extend(
                names
                    .into_iter()
                    .map(|name| Check::Executable(cfg.dir.join(name))),
            );
        }
        // The default dir absent is no checks, unless others could have
        // removed it (found from outside: in a mode-0777 /etc/abupdate a
        // user renamed health.d away and a failing release committed).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !cfg.dir_required => {
            checks.extend(removable_by_others(&cfg.dir).map(|why| {
                failing(format!(
                    "[health] dir is missing from a directory others could change: {why}"
                ))
            }));
        }
        Err(e) => checks.push(failing(format!("[health] dir cannot be listed: {e}"))),
    }
    checks.extend(cfg.units.iter().cloned().map(Check::Unit));
    checks.extend(cfg.http.iter().cloned().map(Check::Http));
    checks
}

/// Why others could have removed `dir`: its parent, when that exists, is
/// one whose entries others could change ([`crate::safe_path::program_dir`]).
/// `None`: no parent, or one only root could change.
fn removable_by_others(dir: &std::path::Path) -> Option<String> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty())?;
    if std::fs::symlink_metadata(parent).is_err() {
        return None;
    }
    crate::safe_path::program_dir(parent)
        .err()
        .map(|why| format!("{}: {why}", crate::text::show_path(parent)))
}

fn run_command(cmd: Command, timeout: Duration) -> (bool, String) {
    match crate::child::run(cmd, timeout) {
        Err(e) => (false, e.to_string()),
        Ok(f) => {
            let line = f.last_line();
            match (f.ending.success(), line.is_empty()) {
                (true, _) => (true, line),
                (false, true) => (false, f.ending.to_string()),
                (false, false) => (false, format!("{}: {line}", f.ending)),
            }
        }
    }
}

fn run_http(url: &str, timeout: Duration, roots: &Roots) -> (bool, String) {
    // Without roots: the files looked at, before any handshake (not
    // rustls' "UnknownIssuer", which names none).
    if let Some(line) = roots.refuses_to(url, "verify its https health check") {
        return (false, format!("TLS: {line}"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(roots.tls_config())
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(resp) if resp.status().is_success() => (true, resp.status().to_string()),
        Ok(resp) => (false, format!("HTTP {}", resp.status())),
        // ureq names its timer ("timeout: global"), not the wait.
        Err(ureq::Error::Timeout(_)) => (
            false,
            format!(
                "no whole answer within {}",
                crate::timefmt::format_duration(timeout)
            ),
        ),
        Err(e) => (false, crate::fetch::redact(&e.to_string()).into_owned()),
    }
}

/// Run one check once (an https one verifying its server with `roots`:
/// the host's, [`crate::fetch::trust_roots`]).
pub fn run_check(check: &Check, timeout: Duration, roots: &Roots) -> CheckResult {
    let (passed, detail) = match check {
        Check::Executable(p) => match crate::safe_path::command(p) {
            Ok(cmd) => run_command(cmd, timeout),
            Err(reason) => (false, format!("not run: {reason}")),
        },
        Check::Unlisted { reason, .. } => (false, reason.clone()),
        Check::Unit(u) => {
            let path = std::env::var_os("PATH");
            match crate::safe_path::command_on_path("systemctl", path.as_deref()) {
                Ok(mut c) => {
                    // After `--`: a name is never read as an option (config
                    // validation refuses such names anyway, see
                    // `check_unit_name`).
                    c.args(["is-active", "--quiet", "--"]).arg(u);
                    run_command(c, timeout)
                }
                Err(reason) => (false, format!("not run: {reason}")),
            }
        }
        Check::Http(u) => run_http(u, timeout, roots),
    };
    CheckResult {
        name: check.name(),
        passed,
        detail,
    }
}

/// What is left of the verdict's time at `now`, for the next check:
/// `check_timeout`, or less when the deadline is nearer. `None`: no time left,
/// the check is not started.
pub fn check_budget(check_timeout: Duration, now: Instant, deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(now);
    (!left.is_zero()).then(|| check_timeout.min(left))
}

/// Whether another round may start at `now`: after `interval`, a round as
/// long as the last one must still end before the deadline.
pub fn another_round(
    now: Instant,
    interval: Duration,
    last_round: Duration,
    deadline: Instant,
) -> bool {
    now.checked_add(interval)
        .and_then(|t| t.checked_add(last_round))
        .is_some_and(|end| end <= deadline)
}

/// Run every check, round after round, until all pass in one round or the
/// overall timeout leaves no room for another round. Returns the last round.
/// Every check gets at most what is left of `[health] timeout`, so the
/// verdict comes within it (plus the time to kill a check).
pub fn run_until_verdict(
    cfg: &Health,
    log: &mut dyn FnMut(&CheckResult),
) -> (bool, Vec<CheckResult>) {
    let checks = configured_checks(cfg);
    let deadline = crate::child::deadline_after(Instant::now(), cfg.timeout);
    // The roots every client of the host uses: the update servers' own.
    let roots = crate::fetch::trust_roots(cfg.ca_file.as_deref(), &cfg.ca_bundles);
    loop {
        let round_start = Instant::now();
        let mut results = Vec::with_capacity(checks.len());
        for check in &checks {
            let result = match check_budget(cfg.check_timeout, Instant::now(), deadline) {
                Some(budget) => run_check(check, budget, &roots),
                None => CheckResult {
                    name: check.name(),
                    passed: false,
                    detail: format!(
                        "not run: the verdict's deadline ([health] timeout = {}) passed",
                        crate::timefmt::format_duration(cfg.timeout)
                    ),
                },
            };
            log(&result);
            results.push(result);
        }
        if results.iter().all(|r| r.passed) {
            return (true, results);
        }
        if !another_round(
            Instant::now(),
            cfg.interval,
            round_start.elapsed(),
            deadline,
        ) {
            return (false, results);
        }
        std::thread::sleep(cfg.interval);
    }
}

/// `name` as `systemctl` reads it: without a unit type suffix (`sshd`,
/// `getty@tty1`) it means `NAME.service`, as `systemctl is-active`
/// completes it (and earlier versions passed it on so); then checked by
/// [`check_unit_name`]. A name starting with `-` is never completed: an
/// earlier version passed it before `--`, as an option.
pub fn unit_name(name: &str) -> Result<String, String> {
    let refused = match check_unit_name(name) {
        Ok(()) => return Ok(name.to_string()),
        Err(e) => e,
    };
    if name.starts_with('-') || has_unit_type(name) {
        return Err(refused);
    }
    let service = format!("{name}.service");
    check_unit_name(&service).map(|()| service)
}

/// The unit types `systemctl` knows (`unit_type_from_string`).
const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// Whether `name` ends in `.TYPE` for a unit type.
fn has_unit_type(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, suffix)| UNIT_TYPES.contains(&suffix))
}

/// A unit name by systemd's rules (`unit_name_is_valid` in systemd's
/// `src/basic/unit-name.c`), for `systemctl is-active`: shorter than 256
/// bytes; `PREFIX[@INSTANCE].TYPE` with a known unit type; the characters
/// before the type are ASCII letters, digits and `:-_.\`, plus `@` (not
/// first); a template (`foo@.service`) is never active, so it is refused.
pub fn check_unit_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a unit name ({why})"));
    if name.is_empty() || name.len() >= 256 {
        return bad("1 to 255 characters");
    }
    let Some((stem, _)) = name.rsplit_once('.').filter(|_| has_unit_type(name)) else {
        return bad("no unit type suffix such as .service");
    };
    if stem.is_empty() || stem.starts_with('@') {
        return bad("empty name before the type or the @");
    }
    if !stem
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    {
        return bad("only letters, digits and :-_.\\@ are allowed");
    }
    if stem.find('@').is_some_and(|at| at + 1 == stem.len()) {
        return bad("a template is never active; name an instance");
    }
    Ok(())
}

/// Failed checks a verdict's reason names; the rest are counted. The
/// reason goes to the log, `state.json`'s failed list, the reports and
/// `--json`: one bounded line however many checks fail (found from
/// outside, stop 48: 1000 failing checks made an 85 kB reason).
pub const NAMED_FAILURES: usize = 3;

/// Why a round failed, as one line: the first [`NAMED_FAILURES`] failed
/// checks with what each said, and how many more failed.
pub fn failed_summary(results: &[CheckResult]) -> String {
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed).collect();
    let mut text = failed
        .iter()
        .take(NAMED_FAILURES)
        .map(|r| format!("{}: {}", r.name, r.detail))
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(more) = failed.len().checked_sub(NAMED_FAILURES).filter(|&n| n > 0) {
        text.push_str(&format!(
            "; and {more} more failed check{}",
            if more == 1 { "" } else { "s" }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_verdicts_reason_names_three_failed_checks_and_counts_the_rest() {
        let result = |i: usize, passed: bool| CheckResult {
            name: format!("{i:04}-check"),
            passed,
            detail: "x".repeat(300),
        };
        let few: Vec<CheckResult> = (0..4).map(|i| result(i, i == 1)).collect();
        let text = failed_summary(&few);
        assert_eq!(text.matches("-check: ").count(), 3, "{text}");
        assert!(
            !text.contains("0001-check") && !text.contains("more"),
            "{text}"
        );
        let many: Vec<CheckResult> = (0..3000).map(|i| result(i, false)).collect();
        let text = failed_summary(&many);
        assert!(
            text.starts_with("0000-check: x") && text.contains("0002-check"),
            "{text}"
        );
        assert!(!text.contains("0003-check"), "{text}");
        assert!(text.ends_with("; and 2997 more failed checks"), "{text}");
        assert!(text.len() < 1100, "{} bytes", text.len());
        assert_eq!(failed_summary(&[result(0, true)]), "");
    }

    /// Found from outside (stop 47): a check named `x\xff\x1b[31m` was
    /// shown as `x\u{fffd}\u{1b}[31m`: two names could look the same.
    #[test]
    fn a_checks_name_is_shown_byte_for_byte_and_escaped() {
        use std::os::unix::ffi::OsStringExt;
        let name = std::ffi::OsString::from_vec(b"/etc/abupdate/health.d/x\xff\x1b[31m".to_vec());
        assert_eq!(
            Check::Executable(PathBuf::from(name)).name(),
            "/etc/abupdate/health.d/x\\xff\\x1b[31m"
        );
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn cfg(dir: PathBuf, timeout: u64) -> Health {
        Health {
            dir,
            dir_required: true,
            timeout: Duration::from_secs(timeout),
            check_timeout: Duration::from_secs(1),
            interval: Duration::from_millis(100),
            units: vec![],
            http: vec![],
            ca_file: None,
            ca_bundles: crate::fetch::system_ca_bundles(),
            probation: Duration::ZERO,
            probation_failures: 2,
        }
    }

    fn dir(name: &str) -> TempDir {
        TempDir::new(&format!("health-{name}"))
    }

    #[test]
    fn all_passing_checks_are_healthy() {
        let d = dir("pass");
        script(&d, "10-ok", "exit 0");
        // Hidden files are not checks (an editor's swap file, `.keep`).
        std::fs::write(d.join(".10-ok.swp"), "not a check").expect("write");
        let (ok, results) = run_until_verdict(&cfg(d.to_path_buf(), 5), &mut |_| {});
        assert!(ok, "{results:?}");
        assert_eq!(results.len(), 1);
    }

    /// The one failed result of a verdict on `d`, which must be unhealthy.
    /// One round only (the interval is the whole timeout): a later round
    /// may start so near the deadline on a loaded machine that a passing
    /// check runs out of budget and fails too.
    fn the_failure(c: &Health) -> CheckResult {
        let c = Health {
            interval: c.timeout,
            ..c.clone()
        };
        let (ok, results) = run_until_verdict(&c, &mut |_| {});
        assert!(!ok, "{results:?}");
        let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed).collect();
        assert_eq!(failed.len(), 1, "{results:?}");
        failed[0].clone()
    }

    #[test]
    fn a_check_that_cannot_run_fails_naming_why_never_skipped() {
        for (name, make, why) in [
            (
                "20-never-chmodded",
                &(|p: &std::path::Path| {
                    std::fs::write(p, "#!/bin/sh\nexit 1\n").expect("write");
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                        .expect("chmod");
                }) as &dyn Fn(&std::path::Path),
                "not executable (mode 0644)",
            ),
            (
                "20-dangling",
                &|p: &std::path::Path| {
                    std::os::unix::fs::symlink("/nonexistent/healthcheck", p).expect("symlink");
                },
                "No such file or directory (os error 2)",
            ),
            (
                "20-writable-by-all",
                &|p: &std::path::Path| {
                    std::fs::write(p, "#!/bin/sh\nexit 0\n").expect("write");
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))
                        .expect("chmod");
                },
                "writable by group or others (mode 0777); it would run as root",
            ),
            (
                "20-a-directory",
                &|p: &std::path::Path| std::fs::create_dir(p).expect("mkdir"),
                "not a regular file",
            ),
        ] {
            let d = dir("unrunnable");
            script(&d, "10-ok", "exit 0");
            make(&d.join(name));
            let failed = the_failure(&cfg(d.to_path_buf(), 1));
            assert!(failed.name.ends_with(name), "{name}: {failed:?}");
            assert_eq!(failed.detail, format!("not run: {why}"), "{name}");
        }
    }

    /// Found from outside: a user who could write `health.d` deleted every
    /// check, and the empty list passed the verdict. A directory others
    /// could empty is a check that fails, whatever is left in it.
    #[test]
    fn a_health_dir_others_could_empty_fails_the_verdict_even_when_empty() {
        let d = dir("emptied");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let failed = the_failure(&cfg(d.to_path_buf(), 1));
        assert_eq!(failed.name, d.display().to_string());
        assert_eq!(
            failed.detail,
            "[health] dir others could change: writable by group or others (mode 0777): others could remove the programs in it"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let (ok, results) = run_until_verdict(&cfg(d.to_path_buf(), 1), &mut |_| {});
        assert!(ok && results.is_empty(), "{results:?}");
    }

    /// Found from outside: an http check whose server never answered
    /// failed with ureq's "timeout: global", naming its timer, not the wait.
    #[test]
    fn an_http_check_that_never_answers_fails_naming_its_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/ready", listener.local_addr().expect("addr"));
        let roots = crate::fetch::trust_roots(None, &[]);
        let result = run_check(&Check::Http(url), Duration::from_secs(1), &roots);
        assert!(!result.passed, "{result:?}");
        assert_eq!(result.detail, "no whole answer within 1s");
        drop(listener);
    }

    /// Found from outside: with the default dir's parent writable by
    /// others, a user renamed `health.d` away and the verdict passed with
    /// no checks. A default dir missing from such a parent fails.
    #[test]
    fn a_default_health_dir_missing_from_a_directory_others_can_change_fails() {
        let d = dir("renamed");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut default = cfg(d.join("health.d"), 1);
        default.dir_required = false;
        let failed = the_failure(&default);
        assert_eq!(
            failed.detail,
            format!(
                "[health] dir is missing from a directory others could change: {}: writable by group or others (mode 0777): others could remove the programs in it",
                d.display()
            )
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let (ok, results) = run_until_verdict(&default, &mut |_| {});
        assert!(ok && results.is_empty(), "{results:?}");
    }

    #[test]
    fn a_configured_health_dir_that_is_missing_fails_the_default_one_is_no_checks() {
        let d = dir("missing");
        let missing = d.join("heath.d");
        let failed = the_failure(&cfg(missing.clone(), 1));
        assert_eq!(failed.name, missing.display().to_string());
        assert!(
            failed.detail.starts_with("[health] dir cannot be listed: "),
            "{failed:?}"
        );
        let mut default = cfg(missing, 1);
        default.dir_required = false;
        let (ok, results) = run_until_verdict(&default, &mut |_| {});
        assert!(ok && results.is_empty(), "{results:?}");
    }

    #[test]
    fn a_failing_check_fails_the_verdict_with_its_message() {
        let d = dir("fail");
        script(&d, "10-ok", "exit 0");
        script(&d, "20-db", "echo 'database down' >&2; exit 3");
        let (ok, results) = run_until_verdict(&cfg(d.to_path_buf(), 1), &mut |_| {});
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
        let (ok, results) = run_until_verdict(&cfg(d.to_path_buf(), 2), &mut |_| {});
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
        let (ok, _) = run_until_verdict(&cfg(d.to_path_buf(), 10), &mut |_| {});
        assert!(ok);
    }

    /// Whether `pid` is gone (a zombie nobody reaped yet is dead too).
    fn dead(pid: u32) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            };
            if gone || Instant::now() > until {
                return gone;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pids(file: &std::path::Path) -> Vec<u32> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("pid"))
            .collect()
    }

    /// The verdict on another thread, so a verdict that hangs fails the
    /// test instead of hanging it.
    fn verdict_within(cfg: Health, limit: Duration) -> (bool, Vec<CheckResult>, Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = Instant::now();
            let (ok, results) = run_until_verdict(&cfg, &mut |_| {});
            let _ = tx.send((ok, results, start.elapsed()));
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no verdict within {limit:?}"))
    }

    #[test]
    fn a_check_that_leaves_a_background_process_passes_at_once_and_the_process_dies() {
        let d = dir("background");
        let pidfile = d.join("pids");
        script(
            &d,
            "10-bg",
            &format!("sleep 1000 & echo $! > {}; exit 0", pidfile.display()),
        );
        let (ok, results, took) = verdict_within(cfg(d.to_path_buf(), 5), Duration::from_secs(20));
        assert!(ok, "{results:?}");
        assert!(took < Duration::from_secs(3), "verdict took {took:?}");
        for pid in pids(&pidfile) {
            assert!(dead(pid), "the check's background sleep {pid} survived");
        }
    }

    #[test]
    fn a_passing_check_that_prints_more_than_a_pipe_holds_passes() {
        let d = dir("chatty");
        script(
            &d,
            "10-chatty",
            "head -c 200000 /dev/zero | tr '\\0' x; echo; echo 'all fine' >&2",
        );
        let (ok, results, _) = verdict_within(cfg(d.to_path_buf(), 5), Duration::from_secs(20));
        assert!(ok, "{results:?}");
        assert_eq!(results[0].detail, "all fine");
    }

    #[test]
    fn hanging_checks_keep_the_overall_deadline_and_leave_no_process() {
        let d = dir("five-hang");
        let pidfile = d.join("pids");
        for i in 1..=5 {
            script(
                &d,
                &format!("{i}0-hang"),
                &format!("sleep 1000 & echo $! >> {}; wait", pidfile.display()),
            );
        }
        let mut c = cfg(d.to_path_buf(), 2);
        c.check_timeout = Duration::from_millis(1500);
        let (ok, results, took) = verdict_within(c, Duration::from_secs(30));
        assert!(!ok);
        // 2 s of timeout, with a generous margin for a loaded machine.
        assert!(took < Duration::from_millis(3500), "verdict took {took:?}");
        assert!(
            results[0].detail.contains("timed out after 1.5s"),
            "{results:?}"
        );
        assert!(results[4].detail.starts_with("not run"), "{results:?}");
        let started = pids(&pidfile);
        assert!(!started.is_empty());
        for pid in started {
            assert!(dead(pid), "a killed check's child {pid} survived");
        }
    }

    #[test]
    fn each_check_gets_at_most_what_is_left() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(check_budget(s(3), now, now + s(10)), Some(s(3)));
        assert_eq!(check_budget(s(3), now, now + s(2)), Some(s(2)));
        assert_eq!(check_budget(s(3), now + s(2), now + s(2)), None);
        assert_eq!(check_budget(s(3), now + s(5), now + s(2)), None);
    }

    #[test]
    fn another_round_only_when_it_fits_before_the_deadline() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert!(another_round(now, s(1), s(2), now + s(3)));
        assert!(!another_round(now, s(1), s(2), now + s(2)));
        assert!(!another_round(now, Duration::MAX, s(0), now + s(2)));
    }

    #[test]
    fn unit_names_follow_systemds_rules() {
        for good in [
            "sshd.service",
            "getty@tty1.service",
            "dev-sda1.device",
            "var-lib\\x2dabupdate.mount",
            "a:b_c-d.e.timer",
            "foo@bar@baz.service",
        ] {
            assert_eq!(check_unit_name(good), Ok(()), "{good}");
        }
        for bad in [
            "--version.",
            "--version",
            "-h",
            "sshd",
            "sshd.servic",
            ".service",
            "@foo.service",
            "getty@.service",
            "a b.service",
            "a/b.service",
            "ünï.service",
            "",
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.service", "a".repeat(248));
        assert!(check_unit_name(&long).is_err(), "256 bytes accepted");
        assert!(check_unit_name(&long[1..]).is_ok(), "255 bytes refused");
    }

    #[test]
    fn a_unit_without_a_type_is_a_service_as_systemctl_reads_it() {
        for (written, used) in [
            ("sshd", "sshd.service"),
            ("getty@tty1", "getty@tty1.service"),
            ("foo.bar", "foo.bar.service"),
            ("sshd.service", "sshd.service"),
            ("-.mount", "-.mount"),
        ] {
            assert_eq!(unit_name(written).as_deref(), Ok(used), "{written}");
        }
        // Completing never makes a name valid that could be an option, a
        // template or outside systemd's characters.
        for bad in [
            "-h",
            "--version",
            "--version.",
            "getty@",
            "a b",
            "a/b",
            "",
            "@foo",
            "getty@.service",
        ] {
            assert!(unit_name(bad).is_err(), "{bad:?} accepted");
        }
        let e = unit_name("-h").expect_err("-h");
        assert!(e.contains("no unit type suffix"), "{e}");
    }
}
