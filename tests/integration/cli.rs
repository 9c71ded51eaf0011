//! The command line as an operator meets it: every command's `--help`,
//! usage errors (exit 2, one line), and arguments that are not UTF-8 (a
//! file name is bytes): an error naming the file, never a panic.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output};

fn abupdate(args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_abupdate"))
        .args(args)
        .output()
        .expect("run abupdate")
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const COMMANDS: [&str; 14] = [
    "status",
    "check",
    "update",
    "install",
    "health",
    "mark-good",
    "mark-bad",
    "rollback",
    "keygen",
    "sign",
    "verify",
    "fleet",
    "pack",
    "help",
];

#[test]
fn every_command_has_help_and_the_usage_lists_every_command() {
    let out = abupdate(&os(&["--help"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let usage = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(usage.starts_with("usage: abupdate"), "{usage}");
    for cmd in COMMANDS {
        assert!(
            usage.contains(&format!("\n  {cmd}")),
            "{cmd} missing:\n{usage}"
        );
        for args in [vec![cmd, "--help"], vec!["help", cmd], vec!["-h", cmd]] {
            let out = abupdate(&os(&args));
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            let help = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                help.starts_with("usage: abupdate") && help.contains(&format!(" {cmd}")),
                "{args:?}:\n{help}"
            );
        }
    }
    let out = abupdate(&os(&["pack", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    for flag in [
        "--secret FILE",
        "--image CLASS=PATH",
        "--delta-window-log N",
    ] {
        assert!(help.contains(flag), "{flag}:\n{help}");
    }
    assert!(!help.contains("--no-reboot"), "{help}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, want) in [
        (vec!["frobnicate"], "unknown command \"frobnicate\""),
        (vec!["status", "--bogus"], "status: unknown option --bogus"),
        (
            vec!["check", "--no-reboot"],
            "check: unknown option --no-reboot",
        ),
        (vec!["--now", "check"], "check: unknown option --now"),
        (vec!["install"], "install needs a SOURCE"),
        (vec!["keygen", "--secret"], "--secret needs a value"),
        (vec!["update", "--now=1"], "--now takes no value"),
        (vec!["mark-good", "C"], "unknown slot \"C\""),
        (
            vec!["pack", "--level", "x"],
            "--level: \"x\" is not a number",
        ),
    ] {
        let out = abupdate(&os(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // With --json the same error is also a JSON object on stdout.
    for args in [
        vec!["--json", "fleet", "--bogus"],
        vec!["--json", "pack", "--level", "99"],
    ] {
        let out = abupdate(&os(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e}): {}", stderr(&out)));
        assert_eq!(v["kind"], "usage", "{args:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let out = abupdate(&os(&["-V"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("abupdate "));
}

#[test]
fn arguments_that_are_not_utf8_are_errors_naming_them_not_panics() {
    let odd = |prefix: &str| {
        let mut b = prefix.as_bytes().to_vec();
        b.extend_from_slice(b"\xff\xfe");
        OsString::from_vec(b)
    };
    let dir = crate::common::host::scratch("cli-not-utf8");
    let base = dir.to_string_lossy().into_owned();

    // A config path: read as bytes, missing: a config error naming it.
    let out = abupdate(&[
        "--config".into(),
        odd(&format!("{base}/config-")),
        "status".into(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{base}/config-")), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Key and file names: the file is found by its bytes.
    let secret = odd(&format!("{base}/key-"));
    let public = odd(&format!("{base}/pub-"));
    let file = odd(&format!("{base}/file-"));
    std::fs::write(&file, b"signed bytes").expect("write file");
    let run = |args: Vec<OsString>| {
        let out = abupdate(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    };
    run(vec![
        "keygen".into(),
        "--secret".into(),
        secret.clone(),
        "--public".into(),
        public.clone(),
    ]);
    run(vec!["sign".into(), "--secret".into(), secret, file.clone()]);
    let mut sig = file.clone();
    sig.push(".minisig");
    assert!(std::path::Path::new(&sig).is_file(), "{sig:?}");
    run(vec!["verify".into(), "--public".into(), public, file]);

    // A word that must be text: refused by name, exit 2.
    let out = abupdate(&["check".into(), odd("http://h/r")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Named byte for byte (stop 58: the bytes were U+FFFD, so two
    // different arguments read the same).
    assert!(
        stderr(&out).contains(r#"check: "http://h/r\xff\xfe" is not UTF-8 text"#),
        "{}",
        stderr(&out)
    );
    let out = abupdate(&[odd("frob")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#"unknown command "frob\xff\xfe""#),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full or closed stdout or stderr is no panic (which aborts, exit 134).
/// Output lost to a full stdout fails a success (exit 1, said on stderr):
/// `status > file` on a full disk is no status; an exit code of its own
/// stands. A reader that has gone (`--help | true`) chose to stop: exit 0.
#[test]
fn lost_output_fails_a_success_and_a_reader_gone_is_no_failure() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    for (args, code) in [
        (vec!["-V"], 1),
        (vec!["--help"], 1),
        (vec!["frobnicate"], 2),
        (vec!["--json", "frobnicate"], 2),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_abupdate"))
            .args(&args)
            .stdout(full())
            .stderr(full())
            .status()
            .expect("run abupdate");
        assert_eq!(out.code(), Some(code), "{args:?}: {out:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_abupdate"))
        .arg("-V")
        .stdout(full())
        .output()
        .expect("run abupdate");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "abupdate: standard output: No space left on device (os error 28): the command's output was lost\n"
    );
    // A reader that has gone: `abupdate --help | true`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_abupdate"))
        .arg("--help")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// Found from outside (stop 47): `sign` of a FIFO waited forever and of
/// `/dev/zero` read forever; a multi-line `--trusted-comment` was signed
/// altered (line breaks made spaces); `verify` printed the signed comment
/// raw, escape sequences and all. Now: one line naming the file, or the
/// option (exit 2); the comment shown escaped.
#[test]
fn sign_and_verify_take_regular_files_and_one_line_comments_only() {
    let dir = crate::common::host::scratch("cli-sign-inputs");
    let p = |name: &str| dir.join(name).into_os_string();
    keygen(&dir, "a.key", "a.pub");
    // A key in a directory that is not there: named as given, not by the
    // temporary file beside it.
    let out = abupdate(&[
        "keygen".into(),
        "--secret".into(),
        p("nodir/b.key"),
        "--public".into(),
        p("nodir/b.pub"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "abupdate: {}: No such file or directory (os error 2)",
            dir.join("nodir/b.key").display()
        )
    );
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    for target in [fifo.into_os_string(), "/dev/zero".into()] {
        // Bounded by `timeout`: before the fix these never returned.
        let out = Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_abupdate"))
            .args(["sign", "--secret"])
            .arg(p("a.key"))
            .arg(&target)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{target:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&*target.to_string_lossy()) && err.contains("not a regular file"),
            "{err}"
        );
    }
    std::fs::write(dir.join("file"), b"signed bytes").expect("write");
    for comment in ["two\nlines", "cr\rhere", &"x".repeat(9000)] {
        let mut args = os(&["sign", "--trusted-comment", comment, "--secret"]);
        args.push(p("a.key"));
        args.push(p("file"));
        let out = abupdate(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--trusted-comment"),
            "{}",
            stderr(&out)
        );
        assert!(!dir.join("file.minisig").exists(), "signed anyway");
    }
    let mut args = os(&[
        "sign",
        "--trusted-comment",
        "tag \x1b[2J\u{202e}",
        "--secret",
    ]);
    args.push(p("a.key"));
    args.push(p("file"));
    let out = abupdate(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = os(&["verify", "--public"]);
    args.push(p("a.pub"));
    args.push(p("file"));
    let out = abupdate(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        shown.contains("Trusted comment: tag \\x1b[2J\\xe2\\x80\\xae"),
        "{shown}"
    );
    assert!(!shown.contains('\x1b'), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key pair made by `keygen` in `dir`: the secret key `secret`, the
/// public key `public`.
fn keygen(dir: &std::path::Path, secret: &str, public: &str) {
    let out = abupdate(&[
        "keygen".into(),
        "--secret".into(),
        dir.join(secret).into_os_string(),
        "--public".into(),
        dir.join(public).into_os_string(),
    ]);
    assert!(out.status.success(), "keygen: {}", stderr(&out));
}

/// Found from outside (stop 48): a usage error echoed a 120 kB argument
/// whole, and no command at all exited 0. The line is bounded, and no
/// command is a usage error (exit 2), in JSON too.
#[test]
fn a_usage_error_is_one_bounded_line_and_no_command_is_one() {
    let huge = "x".repeat(120_000);
    let out = abupdate(&os(&["pack", "--level", &huge]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{} bytes", err.len());
    assert!(
        err.len() < 1100 && err.trim_end().ends_with('…'),
        "{} bytes",
        err.len()
    );
    let out = abupdate(&os(&[]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no command given"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let out = abupdate(&os(&["--json"]));
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["kind"], "usage", "{doc}");
    // After `--`, `--json` is an operand: no JSON.
    let out = abupdate(&os(&["status", "--", "--json"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = abupdate(&os(&["help"]));
    assert_eq!(out.status.code(), Some(0));
}

/// Found from outside (stop 48): a write past `ulimit -f` killed abupdate
/// with SIGXFSZ, silently (exit 153). It is an error naming the file.
#[test]
fn a_write_past_the_file_size_limit_is_an_error_not_a_silent_death() {
    let dir = crate::common::host::scratch("cli-fsize");
    let p = |name: &str| dir.join(name).into_os_string();
    keygen(&dir, "k.key", "k.pub");
    // 1 MiB that does not compress: its payload passes a 64 KiB limit.
    let mut image = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in image.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(dir.join("img"), &image).expect("image");
    let out = Command::new("sh")
        .args(["-c", "ulimit -f 128; exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_abupdate"))
        .args(["pack", "--secret"])
        .arg(p("k.key"))
        .args([
            "--compatible",
            "c",
            "--version",
            "1.0",
            "--level",
            "1",
            "--image",
        ])
        .arg(format!("rootfs={}", dir.join("img").display()))
        .arg("--out")
        .arg(p("out"))
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{:?}: {err}", out.status);
    assert!(err.contains("File too large"), "{err}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("abupdate: ")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found from outside (stop 47): a secret key others could read was used
/// without a word. `sign` and `pack` now warn, naming the key and its mode
/// (and still sign: a secrets mount may carry any mode); `keygen`'s own
/// keys (0600) get no warning.
#[test]
fn a_secret_key_others_can_read_is_named_in_a_warning_when_it_signs() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = crate::common::host::scratch("cli-key-mode");
    let p = |name: &str| dir.join(name).into_os_string();
    keygen(&dir, "k.key", "k.pub");
    std::fs::write(dir.join("file"), b"signed bytes").expect("write");
    let sign = || abupdate(&["sign".into(), "--secret".into(), p("k.key"), p("file")]);
    let out = sign();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(dir.join("k.key"), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        let out = sign();
        assert!(out.status.success(), "{mode:o}: {}", stderr(&out));
        let err = stderr(&out);
        let warning = format!(
            "warning: secret key {} can be read by others than its owner (mode {mode:04o})",
            dir.join("k.key").display()
        );
        assert!(err.contains(&warning), "{mode:o}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found from outside (stop 47): a `--prometheus` URL that is not one (a
/// space or a quote in it) was named with its password in clear.
#[test]
fn a_prometheus_url_that_is_no_url_is_named_without_its_password() {
    for url in [
        "http://us er:s3cr3tpw@127.0.0.1:9",
        "http://user:s3cr3t\"pw@127.0.0.1:9",
        "http://user:s3cr3t pw@127.0.0.1:9/prom",
    ] {
        let out = abupdate(&os(&[
            "fleet",
            "--secret",
            "/nonexistent.key",
            "--manifest",
            "/nonexistent/release.json",
            "--prometheus",
            url,
            "--dry-run",
        ]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--prometheus http://***@127.0.0.1:9"), "{err}");
        assert!(!err.contains("s3cr3t"), "{url}: {err}");
    }
}

/// Found from outside (stop 47): a local SOURCE whose name is not UTF-8
/// text (a file name is bytes) was refused as "not UTF-8 text", while
/// `verify` took the same path. It is read as the file those bytes name.
#[test]
fn a_local_source_whose_name_is_not_utf8_is_read_as_those_bytes() {
    use crate::common::host::{image, HostOptions, TestHost};
    let h = TestHost::new("cli-source-bytes", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 16), &[]);
    let dir = m.parent().expect("dir");
    let mut odd = dir.as_os_str().to_owned().into_vec();
    odd.extend_from_slice(b"-\xff%41");
    let odd = std::path::PathBuf::from(OsString::from_vec(odd));
    std::fs::rename(dir, &odd).expect("rename");
    let out = Command::new(env!("CARGO_BIN_EXE_abupdate"))
        .arg("--config")
        .arg(&h.config)
        .arg("check")
        .arg(odd.join("release.json"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(100), "{}", stderr(&out));
}

/// Found from outside (stop 47): `--quiet` ("no progress or log lines")
/// still printed each retry and the give-up line before the error. Under
/// it a failing run writes its one error line only.
#[test]
fn quiet_leaves_only_the_error_line() {
    use crate::common::host::{HostOptions, TestHost};
    let h = TestHost::new("cli-quiet", "1.0", HostOptions::default());
    let port = crate::common::prometheus::free_port();
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(
        "[update]\n",
        &format!(
            "[update]\nurl = \"http://127.0.0.1:{port}/release.json\"\nretries = 2\nretry_delay = \"10ms\"\n"
        ),
    );
    std::fs::write(&h.config, cfg).expect("config");
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).lines().count() > 1,
        "retries are logged: {}",
        stderr(&out)
    );
    for quiet in ["--quiet", "-q"] {
        let out = h.abupdate(&[quiet, "check"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{quiet}: {err}");
        assert!(
            err.starts_with(&format!("abupdate: http://127.0.0.1:{port}/release.json: ")),
            "{err}"
        );
    }
}

/// The operator's tools answer `--json` too (they printed their text lines
/// before): each document names what the command wrote, and its digests
/// are those of the bytes on disk, so a release pipeline can take the
/// manifest's SHA-256 (what hosts record) from `pack` itself.
#[test]
fn operator_tools_answer_json_naming_what_they_wrote() {
    use crate::common::host::sha;
    let dir = crate::common::host::scratch("cli-operator-json");
    let p = |name: &str| dir.join(name).into_os_string();
    let json = |args: Vec<OsString>, code: i32| -> serde_json::Value {
        let out = abupdate(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not one JSON document ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    // `--quiet` leaves out log lines, never the result.
    let mut args = os(&["--json", "--quiet", "keygen", "--secret"]);
    args.extend([p("k.key"), "--public".into(), p("k.pub")]);
    let made = json(args, 0);
    let key_id = made["key_id"].as_str().expect("key_id").to_string();
    let public = std::fs::read_to_string(dir.join("k.pub")).expect("k.pub");
    assert!(public.contains(&key_id), "{key_id} not in {public}");
    assert_eq!(made["secret"], *dir.join("k.key").to_string_lossy());
    assert_eq!(made["public"], *dir.join("k.pub").to_string_lossy());

    std::fs::write(dir.join("file"), b"signed bytes").expect("write");
    let mut args = os(&[
        "--json",
        "sign",
        "--trusted-comment",
        "tag \x1b[2J",
        "--secret",
    ]);
    args.extend([p("k.key"), p("file")]);
    let signed = json(args, 0);
    assert_eq!(
        signed["signature"],
        *dir.join("file.minisig").to_string_lossy()
    );
    assert_eq!(signed["key_id"], *key_id);
    assert_eq!(signed["trusted_comment"], "tag \\x1b[2J");
    assert!(dir.join("file.minisig").is_file());
    let mut args = os(&["--json", "verify", "--public"]);
    args.extend([p("k.pub"), p("file")]);
    let verified = json(args.clone(), 0);
    assert_eq!(
        verified,
        serde_json::json!({"verified": true, "key_id": key_id, "trusted_comment": "tag \\x1b[2J"})
    );
    std::fs::write(dir.join("file"), b"other bytes").expect("write");
    let refused = json(args, 1);
    assert_eq!(refused["kind"], "signature", "{refused}");

    let image: Vec<u8> = (0..9u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("rootfs.img"), &image).expect("image");
    let mut args = os(&["--json", "pack", "--compatible", "c", "--version", "2.0"]);
    args.extend(["--secret".into(), p("k.key"), "--image".into()]);
    let mut image_arg = OsString::from("rootfs=");
    image_arg.push(p("rootfs.img"));
    args.extend([
        image_arg,
        "--out".into(),
        p("out"),
        "--level".into(),
        "1".into(),
    ]);
    let packed = json(args, 0);
    let manifest = std::fs::read(dir.join("out/release.json")).expect("release.json");
    let doc: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest");
    let rootfs = &doc["images"]["rootfs"];
    let payload = dir.join("out").join(rootfs["url"].as_str().expect("url"));
    assert_eq!(
        packed["manifest"],
        *dir.join("out/release.json").to_string_lossy()
    );
    assert_eq!(packed["manifest_sha256"], *sha(&manifest));
    assert_eq!(packed["version"], "2.0");
    assert_eq!(packed["created"], doc["created"]);
    assert_eq!(packed["expires"], doc["expires"]);
    assert_eq!(
        packed["images"]["rootfs"],
        serde_json::json!({
            "size": image.len(),
            "download_size": std::fs::metadata(&payload).expect("payload").len(),
            "segments": rootfs["segments"].as_array().expect("segments").len(),
            "deltas": 0,
        })
    );
    assert_eq!(packed["notes"], serde_json::json!([]));

    let channel = |action: &str, extra: &[OsString], releases: usize, halt: bool| {
        let mut args = os(&["--json", "channel", action]);
        args.push(p("out/channel.json"));
        args.extend(extra.iter().cloned());
        args.extend(["--secret".into(), p("k.key")]);
        let written = json(args, 0);
        let bytes = std::fs::read(dir.join("out/channel.json")).expect("channel.json");
        let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("channel");
        assert_eq!(
            written["channel"],
            *dir.join("out/channel.json").to_string_lossy()
        );
        assert_eq!(written["sha256"], *sha(&bytes), "{action}");
        assert_eq!(written["created"], doc["created"], "{action}");
        assert_eq!(written["expires"], doc["expires"], "{action}");
        assert_eq!(written["releases"], releases, "{action}");
        assert_eq!(written["halt"], halt, "{action}");
    };
    channel("add", &[p("out/release.json")], 1, false);
    channel("halt", &[], 1, true);
    let _ = std::fs::remove_dir_all(&dir);
}
