//! Every child abupdate starts is bounded in time and output and killed with
//! all its descendants: health checks (a trial's verdict), the reboot
//! command. The real binary runs them; each test asserts the wall time of
//! the command against its configured bound (with a generous margin: a
//! bound, not a benchmark) and that no process the child started survives.
//! (The custom boot backend's verbs are tested in `boot_transitions.rs`,
//! the runner itself in `src/child.rs`.)

use crate::common::host::{bin, host_on_trial, image, text, HostOptions, TestHost};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run abupdate with `h`'s config, failing the test (instead of hanging it)
/// when it takes longer than `limit`. Returns its output and wall time.
fn run_within(h: &TestHost, args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = Command::new(bin())
        .arg("--config")
        .arg(&h.config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn abupdate");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.expect("abupdate output"), start.elapsed()),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("abupdate {args:?} still running after {limit:?}");
        }
    }
}

/// Whether `pid` is gone (a zombie nobody reaped yet is dead too), within 5 s.
fn dies(pid: u32) -> bool {
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

/// The pids written, one a line, to `file` by a child.
fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect()
}

#[test]
fn a_check_that_leaves_a_background_process_or_prints_a_lot_is_judged_at_once() {
    let h = host_on_trial(
        "children-bg",
        "timeout = \"20s\"\ncheck_timeout = \"10s\"\n",
    );
    let pidfile = h.dir.join("bg.pids");
    h.add_health_check(
        "10-daemonish",
        &format!("sleep 1000 & echo $! >> {}; exit 0", pidfile.display()),
    );
    // 1 MiB on stdout: sixteen pipe buffers, then a passing exit.
    h.add_health_check(
        "20-chatty",
        "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo 'all fine' >&2",
    );
    let (out, took) = run_within(&h, &["health"], Duration::from_secs(30));
    let started = pids(&pidfile);
    for &pid in &started {
        assert!(dies(pid), "the check's background process {pid} survived");
    }
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert!(
        text(&out).contains("20-chatty: pass (all fine)"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(5), "verdict took {took:?}");
    assert_eq!(started.len(), 1);
}

#[test]
fn hanging_checks_are_judged_within_the_health_timeout_and_leave_no_process() {
    let h = host_on_trial(
        "children-hang",
        "timeout = \"3s\"\ncheck_timeout = \"2s\"\ninterval = \"1s\"\n",
    );
    let pidfile = h.dir.join("hang.pids");
    for i in 1..=4 {
        h.add_health_check(
            &format!("{i}0-hang"),
            &format!(
                "sleep 1000 & echo $! >> {p}; sh -c 'sleep 1000 & echo $! >> {p}; wait' & wait",
                p = pidfile.display()
            ),
        );
    }
    let (out, took) = run_within(&h, &["health", "--no-reboot"], Duration::from_secs(60));
    let started = pids(&pidfile);
    assert!(!started.is_empty());
    for &pid in &started {
        assert!(dies(pid), "a killed check's descendant {pid} survived");
    }
    // A rolled-back trial is exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("rolling back 2.0"), "{}", text(&out));
    assert!(text(&out).contains("timed out after 2s"), "{}", text(&out));
    assert!(
        text(&out).contains("not run: the verdict's deadline"),
        "{}",
        text(&out)
    );
    // 3 s of [health] timeout, plus a generous margin.
    assert!(took < Duration::from_millis(5500), "verdict took {took:?}");
}

#[test]
fn the_reboot_command_is_bounded_and_leaves_no_process() {
    let mut h = TestHost::new("children-reboot", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    // A reboot command that leaves a process behind holding its output.
    let pidfile = h.dir.join("reboot.pids");
    let reboot = h.dir.join("reboot-bg.sh");
    std::fs::write(
        &reboot,
        format!(
            "#!/bin/sh\nsleep 1000 & echo $! >> {}\necho reboot >> {}\n",
            pidfile.display(),
            h.reboot_log.display()
        ),
    )
    .expect("reboot script");
    crate::common::host::chmod_x(&reboot);
    h.set_reboot_command(&reboot);
    let (out, took) = run_within(
        &h,
        &["install", m.to_str().expect("utf8 path")],
        Duration::from_secs(30),
    );
    let started = pids(&pidfile);
    for &pid in &started {
        assert!(dies(pid), "the reboot command's process {pid} survived");
    }
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1);
    assert_eq!(started.len(), 1);
    assert!(took < Duration::from_secs(10), "install took {took:?}");
    assert_eq!(h.boot(), "B");
}

/// Issue (review 2, 7): abupdate SIGKILLed (the OOM killer, systemd's
/// stop timeout) while a custom backend verb ran left the verb running; it
/// wrote the bootloader later, after another command. A child now dies
/// with abupdate, and its write never happens; so does what the verb
/// started itself (a `sleep` in the background, which the kernel's death
/// signal on the verb alone left running), and what it started in a session
/// of its own (`setsid`).
#[test]
fn a_verb_and_what_it_started_die_with_a_killed_abupdate_and_never_write() {
    let h = TestHost::new("children-orphan", "1.0", HostOptions::default());
    let script = h.dir.join("backend.sh");
    let (pidfile, written) = (h.dir.join("verb.pid"), h.dir.join("written"));
    let (started, escaped) = (h.dir.join("started.pid"), h.dir.join("escaped.pid"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get-primary) sleep 1000 & echo $! > {started}; setsid sleep 1000 & echo $! > {escaped}; echo $$ > {pid}; sleep 2; echo A > {written}; echo A ;;\n  get-current) echo A ;;\n  *) echo good ;;\nesac\n",
            started = started.display(),
            escaped = escaped.display(),
            pid = pidfile.display(),
            written = written.display()
        ),
    )
    .expect("script");
    crate::common::host::chmod_x(&script);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let grub = format!("kind = \"grub\"\ngrubenv = \"{}\"\n", h.grubenv.display());
    assert!(cfg.contains(&grub), "fixture config changed");
    let custom = format!("kind = \"custom\"\nscript = \"{}\"\n", script.display());
    std::fs::write(&h.config, cfg.replace(&grub, &custom)).expect("config");
    let mut abupdate = Command::new(bin())
        .arg("--config")
        .arg(&h.config)
        .arg("status")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn abupdate");
    let until = Instant::now() + Duration::from_secs(10);
    while pids(&pidfile).is_empty() {
        assert!(Instant::now() < until, "the verb never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    abupdate.kill().expect("SIGKILL abupdate");
    let _ = abupdate.wait();
    let verb = pids(&pidfile)[0];
    assert!(dies(verb), "verb {verb} outlived the killed abupdate");
    let sleeper = pids(&started)[0];
    assert!(
        dies(sleeper),
        "the verb's background process {sleeper} outlived the killed abupdate"
    );
    // In a session of its own (found from outside: it used to escape).
    let escapee = pids(&escaped)[0];
    assert!(
        dies(escapee),
        "the verb's setsid process {escapee} outlived the killed abupdate"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!written.exists(), "the dead abupdate's verb wrote");
}

/// Found from outside (stop 58): `health` started with an empty `PATH` (a
/// cron line, a wrapper that cleared the environment) passed it on, so a
/// check's own `sleep` was "not found" and a good trial was rolled back.
/// A `PATH` without an absolute directory is none: the children get the
/// default, and the trial is judged on itself.
#[test]
fn a_check_started_with_an_empty_path_finds_its_programs() {
    for path in ["", ".:bin"] {
        let h = host_on_trial(&format!("children-path-{}", path.len()), "");
        h.add_health_check(
            "10-uses-path",
            "sleep 0 && grep -q . /dev/null; test $? = 1",
        );
        let out = h.abupdate_env(&["health"], &[("PATH", path)]);
        assert!(out.status.success(), "PATH={path:?}: {}", text(&out));
        assert!(
            text(&out).contains("committed 2.0"),
            "PATH={path:?}: {}",
            text(&out)
        );
    }
}
