//! What decides what root trusts (the trusted keys, the config and its
//! drop-ins, the state directory) is used only when nobody but root could
//! have changed it. Found from outside, as a careless operator: with the
//! key directory at mode 0777 (one `chmod -R 777 /etc/abupdate`), another
//! user put a key of their own beside the release key and signed a release
//! with it alone, and `install` wrote that release into the slot as root,
//! ready to boot. Through the real binary: a key directory others can
//! write, a key file another user owns, a config or a drop-in others can
//! write and a state directory others can write are each refused with one
//! line naming them, before a byte of a slot, the bootloader's env or the
//! state changes; put right, the same host installs. `health` and `status`
//! go on with a warning where the config or the state directory is open
//! (a trial's verdict is never refused for what its previous version
//! accepted). The rule is unit-tested branch by branch in
//! `src/safe_path.rs`.

use crate::common::host::{
    bin, host_on_trial, image, keygen, run, text, HostOptions, TestHost, COMPATIBLE,
};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The one line `out` said on stderr, which must be its only one, exit
/// `code`.
fn refused(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// A release of `version` signed by the key at `secret` alone, in
/// `h.dir/name`.
fn release_signed_by(h: &TestHost, secret: &Path, name: &str, version: &str) -> PathBuf {
    let img = h.dir.join(format!("{name}.raw"));
    std::fs::write(&img, image(version, 8192)).expect("image");
    let out_dir = h.dir.join(name);
    let out = run(Command::new(bin())
        .args(["pack", "--level", "3", "--compatible", COMPATIBLE])
        .args(["--version", version, "--secret"])
        .arg(secret)
        .arg(format!("--image=rootfs={}", img.display()))
        .arg("--out")
        .arg(&out_dir));
    assert!(out.status.success(), "pack: {}", text(&out));
    out_dir.join("release.json")
}

/// `h`'s slot records and pending transaction, the bootloader's env and
/// slot B's bytes as they are: what a refusal must leave as it found it
/// (it counts itself in the state's metrics, as every failure does).
fn as_found(h: &TestHost) -> (String, std::collections::BTreeMap<String, String>, String) {
    let state = h.state();
    let records = format!("{} {}", state["slots"], state["transaction"]);
    (records, h.grub_vars(), h.slot_sha(1))
}

/// `health` and `status` on `h` go on, each warning once about `line`.
fn warns_and_judges(h: &TestHost, line: &str) {
    for args in [["health"], ["status"]] {
        let out = h.abupdate(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        let warned: Vec<&str> = err.lines().filter(|l| l.contains("warning: ")).collect();
        assert_eq!(
            warned,
            [format!(
                "abupdate: warning: {line}; health and status go on (a trial fails over it), \
                 the other commands refuse it"
            )],
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_key_planted_where_others_can_write_is_never_trusted() {
    let h = TestHost::new("planted-key", "1.0", HostOptions::default());
    let keys = h.dir.join("keys");
    // Another user's key, and a release signed with it alone.
    let theirs = h.dir.join("theirs.key");
    let planted = keys.join("zz-theirs.pub");
    keygen(&theirs, &planted);
    chown(&planted, Some(NOBODY), Some(NOBODY)).expect("chown");
    let m = release_signed_by(&h, &theirs, "theirs", "6.6.6");
    let m = m.to_str().expect("utf-8");
    let before = h.untouched();
    let found = as_found(&h);

    chmod(&keys, 0o777);
    let err = refused(&h.abupdate(&["install", "--no-reboot", m]), 1);
    assert_eq!(
        err,
        format!(
            "abupdate: {}: writable by group or others (mode 0777): others could add or replace \
             files in it; root would trust what they put there (chmod go-w)",
            keys.display()
        )
    );
    h.assert_untouched(&before, "key directory 0777");
    assert_eq!(as_found(&h), found, "key directory 0777");

    // The directory put right, the key another user owns is still there.
    chmod(&keys, 0o755);
    let err = refused(&h.abupdate(&["install", "--no-reboot", m]), 1);
    assert_eq!(
        err,
        format!(
            "abupdate: {}: owned by uid {NOBODY}, neither root nor uid 0 that abupdate runs as: \
             its owner could change it; root would trust what they put there",
            planted.display()
        )
    );
    assert_eq!(as_found(&h), found, "a key another user owns");

    // Without it, their release is one signed by a key nobody trusts, and
    // the host's own release installs.
    std::fs::remove_file(&planted).expect("rm");
    let err = refused(&h.abupdate(&["install", "--no-reboot", m]), 1);
    assert!(err.contains("signed by untrusted key"), "{err}");
    assert_eq!(as_found(&h), found, "an untrusted key");
    let ours = h.pack("ours", "2.0", &image("2.0", 8192), &[]);
    let out = h.abupdate(&["install", "--no-reboot", ours.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["slots"]["B"]["version"], "2.0");
}

#[test]
fn a_config_or_drop_in_others_could_write_refuses_acting_and_is_warned_about_when_judging() {
    let h = TestHost::new("open-config", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 8192), &[]);
    let m = m.to_str().expect("utf-8");
    let before = h.untouched();
    let found = as_found(&h);

    chmod(&h.config, 0o666);
    let line = format!(
        "{}: writable by group or others (mode 0666): others could change it; root would trust \
         what they put there (chmod go-w)",
        h.config.display()
    );
    for args in [vec!["check", m], vec!["install", "--no-reboot", m]] {
        let err = refused(&h.abupdate(&args), 2);
        assert_eq!(err, format!("abupdate: {line}"), "{args:?}");
    }
    h.assert_untouched(&before, "config 0666");
    assert_eq!(as_found(&h), found, "config 0666");
    // The boot's verdict is never refused for it (an upgrade's trial reads
    // the config its previous version accepted): it goes on, warning.
    warns_and_judges(&h, &line);
    chmod(&h.config, 0o644);

    // A drop-in directory others can write: they could add a drop-in
    // naming their own key directory.
    let dropins = h.dir.join("config.d");
    std::fs::create_dir(&dropins).expect("mkdir");
    chmod(&dropins, 0o1777);
    let dropin = dropins.join("50-theirs.toml");
    std::fs::write(&dropin, "[update]\nkeys_dirs = [\"/nonexistent\"]\n").expect("drop-in");
    let err = refused(&h.abupdate(&["install", "--no-reboot", m]), 2);
    assert_eq!(
        err,
        format!(
            "abupdate: {}: writable by group or others (mode 1777): others could add or replace \
             files in it; root would trust what they put there (chmod go-w)",
            dropins.display()
        )
    );
    chmod(&dropins, 0o755);
    chown(&dropin, Some(NOBODY), None).expect("chown");
    let err = refused(&h.abupdate(&["install", "--no-reboot", m]), 2);
    assert!(
        err.starts_with(&format!(
            "abupdate: {}: owned by uid {NOBODY}",
            dropin.display()
        )),
        "{err}"
    );
    assert_eq!(as_found(&h), found, "a drop-in another user owns");

    std::fs::remove_file(&dropin).expect("rm");
    let out = h.abupdate(&["install", "--no-reboot", m]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["slots"]["B"]["version"], "2.0");
}

#[test]
fn a_state_directory_others_could_write_refuses_acting_and_is_warned_about_when_judging() {
    let h = TestHost::new("open-state", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 8192), &[]);
    let m = m.to_str().expect("utf-8");
    let before = h.untouched();
    let found = as_found(&h);

    chmod(&h.state_dir, 0o777);
    let line = format!(
        "{} (the state directory): writable by group or others (mode 0777): others could add or \
         replace files in it; root would trust what they put there (chmod go-w)",
        h.state_dir.display()
    );
    for args in [
        vec!["check", m],
        vec!["install", "--no-reboot", m],
        vec!["mark-bad", "B"],
    ] {
        let err = refused(&h.abupdate(&args), 2);
        assert_eq!(err, format!("abupdate: {line}"), "{args:?}");
    }
    h.assert_untouched(&before, "state directory 0777");
    assert_eq!(as_found(&h), found, "state directory 0777");
    warns_and_judges(&h, &line);
    chmod(&h.state_dir, 0o755);
    let out = h.abupdate(&["install", "--no-reboot", m]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["slots"]["B"]["version"], "2.0");
}

/// A trial on a host that would refuse its next update is not committed:
/// committed, it would refuse every release after it, the one that fixes it
/// included, and its release would reach every wave. Each way it could:
/// the config, the state directory, a key directory others could change,
/// no key left, fewer keys than the threshold. The release rolls back
/// naming why, the operator's checks never run, and the old slot boots.
#[test]
fn a_trial_on_a_host_that_would_refuse_its_next_update_rolls_back_naming_why() {
    type Spoil = fn(&TestHost) -> String;
    let cases: [(&str, Spoil); 5] = [
        ("config", |h| {
            chmod(&h.config, 0o666);
            format!(
                "{}: writable by group or others (mode 0666)",
                h.config.display()
            )
        }),
        ("state", |h| {
            chmod(&h.state_dir, 0o777);
            format!("{} (the state directory): writable", h.state_dir.display())
        }),
        ("keys", |h| {
            chmod(&h.dir.join("keys"), 0o775);
            format!(
                "{}: writable by group or others (mode 0775)",
                h.dir.join("keys").display()
            )
        }),
        ("no-key", |h| {
            std::fs::remove_file(&h.public_key).expect("rm");
            format!("no trusted keys in {}", h.dir.join("keys").display())
        }),
        ("threshold", |h| {
            let cfg = std::fs::read_to_string(&h.config).expect("config");
            let cfg = cfg.replacen("[update]\n", "[update]\nthreshold = 2\n", 1);
            std::fs::write(&h.config, cfg).expect("config");
            format!(
                "1 distinct trusted key in {}, fewer than the threshold, 2",
                h.dir.join("keys").display()
            )
        }),
    ];
    for (name, spoil) in cases {
        let mut h = host_on_trial(&format!("stranding-{name}"), "");
        let ran = h.dir.join("ran");
        h.add_health_check("10-ok", &format!("touch {}; exit 0", ran.display()));
        let why = spoil(&h);
        let out = h.abupdate(&["health"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let said = text(&out);
        let fail = said
            .lines()
            .find(|l| l.contains("check trusted-files: FAIL ("))
            .unwrap_or_else(|| panic!("{name}: no trusted-files line in {said}"));
        assert!(fail.contains(&why), "{name}: {fail}");
        assert!(
            fail.ends_with(": this host would refuse its next update)"),
            "{name}: {fail}"
        );
        assert!(said.contains("rolling back 2.0"), "{name}: {said}");
        assert!(!ran.exists(), "{name}: the operator's check ran");
        assert_eq!(h.state()["failed"][0]["version"], "2.0", "{name}");
        assert_eq!(h.boot(), "A", "{name}");
    }
}

#[test]
fn a_committed_host_that_would_refuse_its_next_update_says_so_in_status_and_install_names_why() {
    let h = TestHost::new("blocked-status", "1.0", HostOptions::default());
    let blocked = |h: &TestHost| {
        let out = h.abupdate(&["status"]);
        assert!(out.status.success(), "{}", text(&out));
        let said: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("next update:"))
            .map(String::from)
            .collect();
        let out = h.abupdate(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        (said, v["next_update_blocked"].clone())
    };
    assert_eq!(blocked(&h), (Vec::new(), serde_json::Value::Null));

    // One key for a threshold of 2: no release could ever pass the gate.
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replacen("[update]\n", "[update]\nthreshold = 2\n", 1);
    std::fs::write(&h.config, cfg).expect("config");
    let why = format!(
        "1 distinct trusted key in {}, fewer than the threshold, 2",
        h.dir.join("keys").display()
    );
    let line = format!("trusted-files: {why}: this host would refuse its next update");
    assert_eq!(
        blocked(&h),
        (
            vec![format!("next update: blocked ({line})")],
            serde_json::Value::String(line)
        )
    );
    // The gate says the same, before any signature, and changes nothing.
    let m = h.pack("ours", "2.0", &image("2.0", 8192), &[]);
    let found = as_found(&h);
    let err = refused(
        &h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf-8")]),
        1,
    );
    assert!(err.ends_with(&why), "{err}");
    assert_eq!(as_found(&h), found);
}

/// Found from outside: anything but a directory at `state_dir/partial` (a
/// stray file, a link) stopped every command that keeps state, the boot's
/// `health` too, so a good trial was never committed and the bootloader fell
/// back on the next boot; and a link to another directory had `install`
/// remove every file in it. The entry is replaced by a directory; what a
/// link names is never touched.
#[test]
fn a_stray_entry_at_partial_costs_no_verdict_and_no_file_it_names() {
    let mut h = host_on_trial("partial-stray-file", "");
    let partial = h.state_dir.join("partial");
    std::fs::remove_dir_all(&partial).expect("rmdir");
    std::fs::write(&partial, "stray").expect("stray file");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["slots"]["B"]["status"], "good", "{}", text(&out));
    assert!(std::fs::symlink_metadata(&partial)
        .expect("partial")
        .is_dir());
    assert_eq!(h.boot(), "B", "the trial committed boots on");

    let h = TestHost::new("partial-link", "1.0", HostOptions::default());
    let other = h.dir.join("elsewhere");
    std::fs::create_dir(&other).expect("elsewhere");
    std::fs::write(other.join("passwd"), "keep").expect("victim");
    let partial = h.state_dir.join("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&h.state_dir).expect("state dir");
    std::os::unix::fs::symlink(&other, &partial).expect("link");
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8 path")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(other.join("passwd")).expect("victim"),
        b"keep"
    );
    assert!(std::fs::symlink_metadata(&partial)
        .expect("partial")
        .is_dir());
}
