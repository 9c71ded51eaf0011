//! A config an earlier version accepted still loads (README "Upgrades keep
//! configs"): the build in a trial slot reads the config the build that
//! installed it accepted, and a refusal there would leave the trial without
//! a verdict, so a good release would fall back on every such host. Each
//! value narrowed since is read as the nearest one this build takes, with
//! one warning naming the file, line, key, the value and what is used.

use crate::common::host::{image, logging_systemctl, text, HostOptions, TestHost};

/// A drop-in as 213989b accepted it (values later builds refused).
const NARROWED: &str = include_str!("../fixtures/config-213989b-narrowed.toml");

#[test]
fn a_config_213989b_accepted_loads_with_warnings_and_the_trial_commits() {
    let mut h = TestHost::new("config-213989b", "1.0", HostOptions::default());
    let r2 = h.pack("r2", "2.0", &image("2.0", 4096), &[]);
    let out = h.abupdate(&["install", r2.to_str().expect("utf8")]);
    assert!(out.status.success(), "install 2.0: {}", text(&out));
    let dropin = h.dir.join("config.d/50-kept.toml");
    std::fs::create_dir_all(h.dir.join("config.d")).expect("config.d");
    std::fs::write(&dropin, NARROWED).expect("drop-in");
    // `systemctl` as a stand-in that logs what it is asked and passes.
    let (asked, path) = logging_systemctl(&h.dir);

    assert_eq!(h.boot(), "B");
    let out = h.abupdate_env(&["health"], &[("PATH", &path)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    let at = |line: usize| format!("warning: {}:{line}: ", dropin.display());
    let expected = [
        (
            6,
            "update.threshold: 0 means at least 1 signature by a trusted key; using 1",
        ),
        (
            7,
            "update.read_timeout: \"0s\" must be more than zero; using the default 1m",
        ),
        (
            8,
            "update.connect_timeout: \"2h\" is longer than the 1h this key allows; using 1h",
        ),
        (
            9,
            "update.jitter: \"2d\" is longer than the 1d this key allows; using 1d",
        ),
        (
            10,
            "update.backoff_max: \"31d\" is longer than the 30d this key allows; using 30d",
        ),
        (
            15,
            "health.check_timeout: \"2d\" is longer than the 25m this key allows; using 25m",
        ),
        (
            16,
            "health.interval: \"2h\" is longer than the 1h this key allows; using 1h",
        ),
        (
            19,
            "report.webhook_timeout: \"2m\" is longer than the 1m this key allows; using 1m",
        ),
        (
            21,
            "reboot.window[0]: day \"Thurs\": expected mon, tue, wed, thu, fri, sat, sun \
             (or the full name) or *; read as earlier versions did: thu,sat 02:00:00 for 2h at +01:00",
        ),
    ];
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning: ")).collect();
    for (line, what) in expected {
        let want = format!("{}{what}", at(line));
        assert_eq!(
            warnings.iter().filter(|w| w.ends_with(&want)).count(),
            1,
            "{want:?} not warned once: {stderr}"
        );
    }
    let mirror = format!("{}update.mirror: ", at(11));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&mirror) && w.ends_with("; fetching from the origin")),
        "{stderr}"
    );
    // One warning per value, nothing for the unit: `sshd` is what systemctl
    // itself reads as `sshd.service`, and that is what is asked.
    assert_eq!(warnings.len(), expected.len() + 1, "{stderr}");
    let asked = std::fs::read_to_string(&asked).expect("systemctl ran");
    assert_eq!(asked, "is-active --quiet -- sshd.service\n");
    assert_eq!(h.grub_vars().get("B_OK").map(String::as_str), Some("1"));
}
