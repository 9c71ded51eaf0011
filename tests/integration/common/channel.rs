//! A host reading a release channel (`[update] channel`) written by the
//! real `abupdate channel`, signed with the host's key: shared by
//! `release_channel.rs` and `probation.rs`.

use super::host::{bin, run, text, HostOptions, TestHost};
use std::path::PathBuf;
use std::process::{Command, Output};

/// A host booted on `version`, reading the channel `<dir>/channel.json`.
pub fn channel_host(name: &str, version: &str, opts: HostOptions) -> TestHost {
    let h = TestHost::new(name, version, opts);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(
        "[update]\n",
        &format!("[update]\nchannel = \"{}\"\n", channel_path(&h).display()),
    );
    std::fs::write(&h.config, cfg).expect("config");
    h
}

/// The host's `channel.json`.
pub fn channel_path(h: &TestHost) -> PathBuf {
    h.dir.join("channel.json")
}

/// `abupdate channel ACTION FILE EXTRA… --secret KEY` on this host's channel.
pub fn channel_cmd(h: &TestHost, action: &str, extra: &[&str]) -> Output {
    run(Command::new(bin())
        .args(["channel", action])
        .arg(channel_path(h))
        .args(extra)
        .arg("--secret")
        .arg(&h.secret_key))
}

/// [`channel_cmd`], which must succeed.
pub fn channel(h: &TestHost, action: &str, extra: &[&str]) {
    let out = channel_cmd(h, action, extra);
    assert!(out.status.success(), "channel {action}: {}", text(&out));
}

/// `abupdate channel ACTION … ` refused: exit 1, one line saying `says`,
/// the channel as it was.
/// `abupdate channel ACTION … ` refused: exit 1, one line saying `says`,
/// the channel as it was.
pub fn refused_edit(h: &TestHost, action: &str, extra: &[&str], says: &str) {
    let before = std::fs::read(channel_path(h)).expect("channel");
    let out = channel_cmd(h, action, extra);
    assert_eq!(out.status.code(), Some(1), "{action}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(says) && err.lines().count() == 1,
        "{action}: {err}"
    );
    assert_eq!(
        std::fs::read(channel_path(h)).expect("channel"),
        before,
        "{action}"
    );
}
