//! A config or a host fact that cannot be read one way is refused up front:
//! one line naming the key (config: exit 2) or the file (host fact: exit
//! 1), before anything runs, the boot order and the booted slot untouched.

use crate::common::host::{image, logging_systemctl, text, HostOptions, TestHost};

/// Merge `toml` over the host's config as a drop-in.
fn dropin(h: &TestHost, toml: &str) {
    let dir = h.dir.join("config.d");
    std::fs::create_dir_all(&dir).expect("config.d");
    std::fs::write(dir.join("50-test.toml"), toml).expect("drop-in");
}

/// Exactly one line on stderr, containing every needle.
fn one_line_naming(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{:?} does not name {n:?}", lines[0]);
    }
}

/// Exactly one `warning:` line on stderr, containing every needle.
fn one_warning_naming(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("warning: ")).collect();
    assert_eq!(lines.len(), 1, "expected one warning: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{:?} does not name {n:?}", lines[0]);
    }
}

/// Out of its range, a duration is clamped into it with a warning (earlier
/// versions loaded such values: README "Upgrades keep configs"); the
/// range keeps every deadline computable, so nothing aborts.
#[test]
fn absurd_durations_are_clamped_with_a_warning_naming_the_key_not_aborts() {
    let h = TestHost::new("facts-durations", "1.0", HostOptions::default());
    let r2 = h.pack("r2", "2.0", &image("2.0", 4096), &[]);
    let check = ["check", r2.to_str().expect("utf8")];
    // `check` exits 100: an update is available.
    for (table, key, command, code) in [
        ("health", "timeout", &["health"][..], 0),
        ("update", "read_timeout", &check[..], 100),
        ("update", "connect_timeout", &check[..], 100),
        ("health", "check_timeout", &["health"][..], 0),
    ] {
        dropin(
            &h,
            &format!("[{table}]\n{key} = \"18446744073709551615s\"\n"),
        );
        let out = h.abupdate(command);
        // No overflow abort, no refusal.
        assert_eq!(
            out.status.code(),
            Some(code),
            "{table}.{key}: {}",
            text(&out)
        );
        one_warning_naming(&out, &[&format!("{table}.{key}"), "longer than"]);
    }
    dropin(&h, "[health]\ncheck_timeout = \"0s\"\n");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    one_warning_naming(
        &out,
        &[
            "health.check_timeout",
            "must be more than zero; using the default 1m",
        ],
    );
}

#[test]
fn a_unit_named_like_an_option_is_left_out_with_a_warning_and_never_passed_to_systemctl() {
    // Earlier versions passed `-h` to `systemctl is-active --quiet`, which
    // answered 0: a check that always passed. Refusing it would fail the
    // trial of the release carrying this build on every such host.
    let mut h = TestHost::new("facts-units", "1.0", HostOptions::default());
    let (asked, path) = logging_systemctl(&h.dir);
    // The trial of 2.0 runs the checks.
    let r2 = h.pack("r2", "2.0", &image("2.0", 4096), &[]);
    let out = h.abupdate(&["install", r2.to_str().expect("utf8")]);
    assert!(out.status.success(), "install 2.0: {}", text(&out));
    assert_eq!(h.boot(), "B");
    dropin(&h, "[health]\nunits = [\"sshd\", \"-h\"]\n");
    let out = h.abupdate_env(&["health"], &[("PATH", &path)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    one_warning_naming(&out, &["health.units[1]", "\"-h\"", "left out"]);
    let asked = std::fs::read_to_string(&asked).expect("systemctl ran");
    assert!(!asked.contains("-h"), "{asked}");
    assert!(asked.contains("sshd.service"), "{asked}");
}

#[test]
fn conflicting_slot_markers_on_the_command_line_are_refused_naming_both() {
    let h = TestHost::new("facts-cmdline", "1.0", HostOptions::default());
    let before = h.untouched();
    std::fs::write(&h.cmdline, "root=/dev/x rauc.slot=A abupdate.slot=B ro\n").expect("cmdline");
    for command in [&["mark-good"][..], &["health"][..]] {
        let out = h.abupdate(command);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", text(&out));
        one_line_naming(
            &out,
            &[
                &h.cmdline.display().to_string(),
                "rauc.slot=A and abupdate.slot=B",
            ],
        );
    }
    h.assert_untouched(&before, "conflicting markers");
    assert_eq!(h.grub_vars().get("B_OK").map(String::as_str), Some("0"));
}

#[test]
fn os_release_is_read_by_its_quoting_rules() {
    let h = TestHost::new("facts-os-release", "1.0", HostOptions::default());
    std::fs::write(
        &h.os_release,
        "ID=test\nIMAGE_VERSION=1.0\nIMAGE_VERSION=\"2.0\" # the release\n",
    )
    .expect("os-release");
    let out = h.abupdate(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["booted_version"], "2.0");
}

/// os-release is outside bytes: `status` shows its version by the one
/// quoting rule, in text and `--json` alike, losing no byte (the
/// reviewer's value: a bidi override, an ESC sequence, a byte not UTF-8;
/// and stop 58's, a Unicode line separator, which split the line for
/// Python's `splitlines` and log pipelines).
#[test]
fn status_shows_a_hostile_os_release_version_escaped_and_lossless() {
    let h = TestHost::new("facts-os-release-bytes", "1.0", HostOptions::default());
    std::fs::write(
        &h.os_release,
        b"ID=test\nIMAGE_VERSION=1.0\xe2\x80\xae\x1b[2J\xff\xe2\x80\xa8x\n",
    )
    .expect("os-release");
    let shown = r"1.0\xe2\x80\xae\x1b[2J\xff\xe2\x80\xa8x";
    let out = h.abupdate(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = &out.stdout;
    let raw = |s: &[u8], c: &str| s.windows(3).any(|w| w == c.as_bytes());
    assert!(
        !stdout.contains(&0x1b) && !raw(stdout, "\u{202e}") && !raw(stdout, "\u{2028}"),
        "raw bytes reached the terminal: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(stdout).contains(&format!("booted version: {shown}\n")),
        "{}",
        text(&out)
    );
    let out = h.abupdate(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!raw(&out.stdout, "\u{202e}") && !raw(&out.stdout, "\u{2028}"));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["booted_version"], shown);
}

/// The kernel command line is outside bytes too: a marker naming no slot
/// is refused naming the word byte for byte (stop 58: a byte not UTF-8
/// became U+FFFD and ESC `\u{1b}`, another notation), nothing raw on the
/// terminal, the boot order untouched.
#[test]
fn a_bad_slot_marker_on_the_cmdline_is_named_byte_for_byte() {
    let h = TestHost::new("facts-cmdline-bytes", "1.0", HostOptions::default());
    let before = h.untouched();
    std::fs::write(&h.cmdline, b"ro abupdate.slot=C\xff\x1b[2J quiet\n").expect("cmdline");
    for args in [&["health"][..], &["mark-good"]] {
        let out = h.abupdate(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(!out.stderr.contains(&0x1b), "{}", text(&out));
        assert!(
            text(&out).contains(r"abupdate.slot=C\xff\x1b[2J: expected A or B"),
            "{args:?}: {}",
            text(&out)
        );
    }
    h.assert_untouched(&before, "a bad slot marker");
}

/// The booted slot's record, which the re-bless fills from os-release (a
/// host whose state was lost), keeps the version's bytes as the one
/// quoting rule writes them, never U+FFFD: `status` shows it as it shows
/// `booted_version`, the same value read from the record (os-release gone)
/// is the same version, and one other byte makes another version.
#[test]
fn the_slot_record_keeps_a_hostile_os_release_version_losslessly() {
    let h = TestHost::new("facts-record-bytes", "1.0", HostOptions::default());
    let shown = r"1.0\xe2\x80\xae\x1b[2J\xff";
    std::fs::write(
        &h.os_release,
        b"ID=test\nIMAGE_VERSION=1.0\xe2\x80\xae\x1b[2J\xff\n",
    )
    .expect("os-release");
    std::fs::remove_file(h.state_dir.join("state.json")).expect("state lost");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["slots"]["A"]["version"], shown, "{}", h.state());
    let status = |h: &TestHost| {
        let out = h.abupdate(&["--json", "status"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let v = status(&h);
    assert_eq!(v["booted_version"], shown, "{v}");
    assert_eq!(v["slots"]["A"]["record"]["version"], shown, "{v}");
    let out = h.abupdate(&["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("slot A: good version {shown} ")),
        "{stdout}"
    );
    // Read from the record alone: the same version, not escaped twice.
    std::fs::remove_file(&h.os_release).expect("os-release gone");
    assert_eq!(status(&h)["booted_version"], shown);
    // Another byte: another version, not the recorded one.
    std::fs::write(
        &h.os_release,
        b"ID=test\nIMAGE_VERSION=1.0\xe2\x80\xae\x1b[2J\xfe\n",
    )
    .expect("os-release");
    let v = status(&h);
    assert_eq!(v["booted_version"], r"1.0\xe2\x80\xae\x1b[2J\xfe", "{v}");
    assert_eq!(v["slots"]["A"]["record"]["version"], shown, "{v}");
}

/// Upgrade hazard: `build` became a label abupdate sets itself (on
/// `abupdate_release_outcome`) after configs could name it. A config the
/// previous version ran with still loads: `check`, `status` and the timer's
/// `update` each warn once, naming the key and its file, and the outcome
/// carries abupdate's build, not the operator's.
#[test]
fn a_build_label_from_before_abupdate_took_it_loads_with_one_warning() {
    let mut h = TestHost::new("facts-build-label", "1.0", HostOptions::default());
    let textfile = h.dir.join("abupdate.prom");
    let m2 = h.pack(
        "r2",
        "2.0",
        &crate::common::host::image("2.0", 1 << 20),
        &[],
    );
    dropin(
        &h,
        &format!(
            "[update]\nurl = \"file://{}\"\n[report]\ntextfile = \"{}\"\nlabels = {{ build = \"x\", site = \"s\" }}\n",
            m2.display(),
            textfile.display()
        ),
    );
    let warns = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(lines.len(), 1, "one warning: {}", text(out));
        for n in [
            "report.labels.build",
            "config.d/50-test.toml",
            "abupdate_release_outcome",
        ] {
            assert!(lines[0].contains(n), "{:?} does not name {n:?}", lines[0]);
        }
    };
    let out = h.abupdate(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    warns(&out);
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    warns(&out);
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    warns(&out);
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    let doc: abupdate::manifest::ManifestDoc =
        serde_json::from_slice(&std::fs::read(&m2).expect("manifest")).expect("doc");
    let prom = std::fs::read_to_string(&textfile).expect("textfile");
    let committed = prom
        .lines()
        .find(|l| l.starts_with("abupdate_release_outcome{") && l.contains("outcome=\"committed\""))
        .unwrap_or_else(|| panic!("no commit in {prom}"));
    assert!(
        committed.contains(&format!("build=\"{}\"", doc.build())),
        "{committed}"
    );
    assert_eq!(committed.matches("build=").count(), 1, "{committed}");
    assert!(committed.contains("site=\"s\""), "{committed}");
}
