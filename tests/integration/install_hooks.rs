//! Install hooks through the real binary: `pre_install`, `post_install`
//! and `pre_reboot` run in that order with RAUC's variables; a failing
//! pre-install hook refuses the install touching nothing; a failing
//! post-install hook leaves the written target bad and never activated; a
//! failing pre-reboot hook holds the reboot (the slot stays staged, the next
//! run reboots); a hook is bounded in time with everything it started; a
//! hook, or the reboot command, in a directory others can write is refused,
//! never run.

use crate::common::host::{chmod_x, image, text, HostOptions, TestHost};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LEN: usize = 256 << 10;

/// A host with hooks in `dir/hooks/`, each one configured; `timeout` for
/// each.
fn host(name: &str, timeout: &str) -> TestHost {
    let h = TestHost::new(
        &format!("hooks-{name}"),
        "1.0",
        HostOptions {
            extra_config: String::new(),
            ..Default::default()
        },
    );
    let hooks = h.dir.join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!(
            "{cfg}\n[hooks]\npre_install = \"{d}/pre-install\"\npost_install = \"{d}/post-install\"\npre_reboot = \"{d}/pre-reboot\"\ntimeout = \"{timeout}\"\n",
            d = hooks.display()
        ),
    )
    .expect("config");
    for name in ["pre-install", "post-install", "pre-reboot"] {
        set_hook(&h, name, "exit 0");
    }
    h
}

fn hook_path(h: &TestHost, name: &str) -> PathBuf {
    h.dir.join("hooks").join(name)
}

/// The hook `name` logs its argument and environment to `hooks.log` (one
/// line per call), then runs `body`.
fn set_hook(h: &TestHost, name: &str, body: &str) {
    let p = hook_path(h, name);
    let log = h.dir.join("hooks.log");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$1 hook=$ABUPDATE_HOOK version=$RAUC_MF_VERSION booted=$RAUC_CURRENT_BOOTNAME \
             slot=$RAUC_SLOT_NAME bootname=$RAUC_SLOT_BOOTNAME device=$RAUC_SLOT_DEVICE \
             device1=$RAUC_SLOT_DEVICE_1 targets=$RAUC_TARGET_SLOTS class=$RAUC_IMAGE_CLASS \
             digest=$RAUC_IMAGE_DIGEST size=$RAUC_IMAGE_SIZE compatible=$RAUC_SYSTEM_COMPATIBLE\" >> {}\n{body}\n",
            log.display()
        ),
    )
    .expect("hook");
    chmod_x(&p);
}

fn hook_log(h: &TestHost) -> Vec<String> {
    std::fs::read_to_string(h.dir.join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn release(h: &TestHost) -> (PathBuf, String) {
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("json");
    let sha = manifest["images"]["rootfs"]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    (m, sha)
}

fn last_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_three_hooks_run_in_order_with_raucs_variables() {
    let mut h = host("order", "10s");
    let (m, sha) = release(&h);
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1);
    let log = hook_log(&h);
    assert_eq!(log.len(), 3, "{log:?}");
    let b = h.slots[1].display().to_string();
    for (line, point) in log
        .iter()
        .zip(["pre_install", "post_install", "pre_reboot"])
    {
        let want = format!(
            "{point} hook={point} version=2.0 booted=A slot=rootfs.1 bootname=B device={b} \
             device1={b} targets=1 class=rootfs digest={sha} size={LEN} compatible={}",
            crate::common::host::COMPATIBLE
        );
        assert_eq!(line, &want);
    }
    assert_eq!(h.boot(), "B");
}

#[test]
fn a_failing_pre_install_hook_refuses_the_install_touching_nothing() {
    let h = host("pre", "10s");
    set_hook(&h, "pre-install", "echo 'battery at 3%' >&2; exit 3");
    let (m, _) = release(&h);
    let before = h.untouched();
    let slot_b = h.slot_sha(1);
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        last_line(&out),
        format!(
            "abupdate: pre_install hook {} failed: exit status 3: battery at 3%",
            hook_path(&h, "pre-install").display()
        )
    );
    h.assert_untouched(&before, "pre_install refused");
    assert_eq!(h.grub_vars().get("B_OK"), before.env.get("B_OK"));
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("A B"));
    assert_eq!(h.slot_sha(1), slot_b, "the target's bytes changed");
    assert!(h.state()["transaction"].is_null());
    assert_ne!(h.state()["slots"]["B"]["status"], "bad");
    assert_eq!(hook_log(&h).len(), 1, "only the pre-install hook ran");
}

/// A hook in a directory others can write could be swapped for their
/// own program between the check and the run: it is refused before it
/// runs, as one whose file others can write, and the install touches
/// nothing.
#[test]
fn a_hook_in_a_directory_others_can_write_is_refused_touching_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let h = host("open-dir", "10s");
    let hooks = h.dir.join("hooks");
    std::fs::set_permissions(&hooks, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (m, _) = release(&h);
    let before = h.untouched();
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let hook = hook_path(&h, "pre-install");
    assert_eq!(
        last_line(&out),
        format!(
            "abupdate: pre_install hook {p}: directory {d} is writable by group or others \
             (mode 0777): others could replace {p}; it would run as root",
            p = hook.display(),
            d = hooks.display()
        )
    );
    h.assert_untouched(&before, "pre_install refused");
    assert!(hook_log(&h).is_empty(), "a hook ran: {:?}", hook_log(&h));
}

#[test]
fn a_failing_post_install_hook_leaves_the_target_bad() {
    let h = host("post", "10s");
    // The hook sees the written image: it checks the slot's bytes itself.
    set_hook(
        &h,
        "post-install",
        "got=$(head -c \"$RAUC_IMAGE_SIZE\" \"$RAUC_SLOT_DEVICE\" | sha256sum | cut -d' ' -f1)\n\
         [ \"$got\" = \"$RAUC_IMAGE_DIGEST\" ] && echo written-and-verified >> \"$(dirname \"$0\")/../seen\"\n\
         echo 'site check failed' >&2; exit 1",
    );
    let (m, _) = release(&h);
    let before = h.untouched();
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        last_line(&out).ends_with("failed: exit status 1: site check failed"),
        "{}",
        last_line(&out)
    );
    assert_eq!(
        std::fs::read_to_string(h.dir.join("seen")).unwrap_or_default(),
        "written-and-verified\n"
    );
    h.assert_untouched(&before, "post_install failed");
    let env = h.grub_vars();
    assert_eq!(
        env.get("B_OK").map(String::as_str),
        Some("0"),
        "target not bad"
    );
    assert_eq!(
        env.get("ORDER").map(String::as_str),
        Some("A B"),
        "activated"
    );
    assert_eq!(h.state()["slots"]["B"]["status"], "bad");
    assert!(h.state()["transaction"].is_null());
    assert_eq!(h.reboots(), 0);
}

#[test]
fn a_failing_pre_reboot_hook_holds_the_reboot_until_a_later_run() {
    let h = host("reboot", "10s");
    set_hook(&h, "pre-reboot", "echo 'workloads not drained' >&2; exit 2");
    let (m, _) = release(&h);
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        last_line(&out).ends_with("failed: exit status 2: workloads not drained"),
        "{}",
        last_line(&out)
    );
    assert_eq!(h.reboots(), 0, "rebooted past a failing pre-reboot hook");
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    set_hook(&h, "pre-reboot", "exit 0");
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already staged"), "{}", text(&out));
    assert_eq!(h.reboots(), 1);
}

/// `[system] reboot` runs as root like a hook: a command in a directory
/// others can write (one `chmod 777` of a careless operator) is never run;
/// the install reports it in one line and the slot waits staged, rebooted
/// into by the next run once the directory is safe again.
#[test]
fn a_reboot_command_in_a_directory_others_can_write_is_never_run() {
    use std::os::unix::fs::PermissionsExt;
    let h = host("reboot-open", "10s");
    let bin = h.dir.join("sbin");
    std::fs::create_dir_all(&bin).expect("sbin");
    let reboot = bin.join("reboot-now");
    std::fs::write(
        &reboot,
        format!("#!/bin/sh\necho reboot >> {}\n", h.reboot_log.display()),
    )
    .expect("reboot script");
    chmod_x(&reboot);
    h.set_reboot_command(&reboot);
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (m, _) = release(&h);
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        last_line(&out).contains(&format!(
            "reboot command not run: directory {} is writable by group or others (mode 0777)",
            bin.display()
        )),
        "{}",
        last_line(&out)
    );
    assert_eq!(h.reboots(), 0, "a reboot command others could replace ran");
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 1);
}

#[test]
fn a_hook_is_killed_at_its_timeout_with_what_it_started() {
    let h = host("timeout", "1s");
    let pidfile = h.dir.join("bg.pid");
    set_hook(
        &h,
        "pre-install",
        &format!(
            "sleep 1000 & echo $! > {}\nwhile true; do echo chatter; done",
            pidfile.display()
        ),
    );
    let (m, _) = release(&h);
    let before = h.untouched();
    let started = Instant::now();
    let out = h.abupdate(&["install", m.to_str().expect("utf8")]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        last_line(&out).contains("failed: timed out after 1s"),
        "{}",
        last_line(&out)
    );
    h.assert_untouched(&before, "timed out");
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        "the hook's background sleep {pid} survived"
    );
}
