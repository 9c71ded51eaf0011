//! Release tracks (`[update] track`, `pack --track`, `channel --track`): a
//! signature says who signed a document, not which channel or release
//! directory it was published for; the signed `track` does. Every case is
//! the server's (or a mirror's, a DNS answer's) move of a real document
//! signed by the fleet's one key to a host's URL, through the real binary.
//!
//! | promise | test |
//! | --- | --- |
//! | another track's channel at the host's URL: refused, a halt stands, its `created` not believed | `another_tracks_channel_at_the_hosts_url_is_refused_and_the_halt_stands` |
//! | another track's manifest (or one without a track) at the host's `url`: refused, nothing written | `another_tracks_manifest_at_the_hosts_url_is_refused_and_nothing_is_written` |
//! | another track's (or product's) manifest at the last look before the reboot: the trial stays staged, not disarmed | `another_tracks_or_products_manifest_at_the_last_look_keeps_the_trial_staged` |
//! | a replayed (stale) manifest at the last look: the trial stays staged, not disarmed | `a_replayed_manifest_at_the_last_look_keeps_the_trial_staged` |
//! | a channel's unpinned manifest replaced by another track's of the same version: refused; a pinned one of no track installs | `a_channel_names_manifests_of_its_track_unless_it_pins_their_bytes` |
//! | the operator's tools: a track is set once, `add` refuses another track's release unless `--pin`, `pack` never swaps one | `the_operators_tools_keep_a_track_as_it_was_set` |
//! | a malformed track: a one-line error naming it | `a_malformed_track_is_refused_naming_it` |

use crate::common::channel::{channel, channel_cmd, channel_host, channel_path, refused_edit};
use crate::common::host::{date, image, now, signature_files, text, HostOptions, TestHost};
use std::path::{Path, PathBuf};

const LEN: usize = 1 << 20;

/// `track = "stable"` in the host's `[update]`.
fn follow_stable(h: &TestHost) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replacen("[update]\n", "[update]\ntrack = \"stable\"\n", 1);
    std::fs::write(&h.config, cfg).expect("config");
}

/// The document's `created` (RFC 3339 UTC, so text order is time order).
fn created(p: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p).expect("document")).expect("json");
    v["created"].as_str().expect("created").to_string()
}

/// Run `again` (a re-signing) until the document at `later` is dated after
/// the one at `earlier`: the attacker's copy must be the newer one, or the
/// host's floor would refuse it without any track.
fn until_later(later: &Path, earlier: &Path, again: impl Fn()) {
    for _ in 0..5 {
        if created(later) > created(earlier) {
            return;
        }
        again();
    }
    panic!(
        "{} never dated after {}",
        later.display(),
        earlier.display()
    );
}

/// `version` packed into `name` with `extra` and dated after the manifest
/// at `earlier` (packed again until it is): the attacker's newer copy.
fn packed_after(
    h: &TestHost,
    name: &str,
    version: &str,
    extra: &[&str],
    earlier: &Path,
) -> PathBuf {
    let pack = || h.pack(name, version, &image(version, LEN), extra);
    let m = pack();
    until_later(&m, earlier, || {
        pack();
    });
    m
}

/// What a server does: the document at `from`, and its signatures, served
/// at `to` (the signatures there before removed).
fn serve_at(from: &Path, to: &Path) {
    for sig in signature_files(to) {
        std::fs::remove_file(sig).expect("rm signature");
    }
    std::fs::copy(from, to).expect("copy document");
    let name = to.file_name().expect("name").to_string_lossy().into_owned();
    for sig in signature_files(from) {
        let suffix = sig.file_name().expect("name").to_string_lossy()[name.len()..].to_string();
        let target = to.with_file_name(format!("{name}{suffix}"));
        std::fs::copy(&sig, target).expect("copy signature");
    }
}

/// A copy of the file at `p` with its signatures, to put back later.
fn saved(p: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::iter::once(p.to_path_buf())
        .chain(signature_files(p))
        .map(|f| {
            let bytes = std::fs::read(&f).expect("read");
            (f, bytes)
        })
        .collect()
}

fn restore(p: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for sig in signature_files(p) {
        std::fs::remove_file(sig).expect("rm signature");
    }
    for (f, bytes) in files {
        std::fs::write(f, bytes).expect("write");
    }
}

fn check_json(h: &TestHost) -> (Option<i32>, serde_json::Value) {
    let out = h.abupdate(&["--json", "check"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json: {e}: {}", text(&out)));
    (out.status.code(), v)
}

/// A host booted on 1.0 reading `url` (a manifest packed for track
/// `stable` there, returned with its URL) and following track `stable`.
fn url_host(name: &str) -> (TestHost, PathBuf, String) {
    let h = TestHost::new(name, "1.0", HostOptions::default());
    let stable = h.pack("stable", "2.0", &image("2.0", LEN), &["--track", "stable"]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let url = format!("file://{}", stable.display());
    let cfg = cfg.replacen("[update]\n", &format!("[update]\nurl = \"{url}\"\n"), 1);
    std::fs::write(&h.config, cfg).expect("config");
    follow_stable(&h);
    (h, stable, url)
}

/// `update` fails with `other_track` and `message` in its line; the boot
/// order, the slots and the transaction untouched.
fn refused_other_track(h: &TestHost, message: &str) {
    let before = h.untouched();
    let slot_b = h.slot_sha(1);
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "other_track", "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains(message), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    h.assert_untouched(&before, "another track's document");
    assert!(h.state()["transaction"].is_null(), "{}", h.state());
    assert_eq!(h.slot_sha(1), slot_b, "slot B written");
}

#[test]
fn another_tracks_channel_at_the_hosts_url_is_refused_and_the_halt_stands() {
    let h = channel_host("track-channel", "1.0", HostOptions::default());
    follow_stable(&h);
    let stable = channel_path(&h);
    let m = h.pack("r2.0", "2.0", &image("2.0", LEN), &["--track", "stable"]);
    channel(&h, "add", &[m.to_str().expect("path"), "--track", "stable"]);
    channel(&h, "halt", &[]);
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["reason"].as_str()),
        (Some(0), Some("halted")),
        "{v}"
    );
    let halted = saved(&stable);

    // The beta channel: the same key, the same releases, not halted, and
    // re-signed after stable's halt.
    let beta_dir = h.dir.join("beta");
    std::fs::create_dir_all(&beta_dir).expect("beta dir");
    let beta = beta_dir.join("channel.json");
    std::fs::create_dir_all(beta_dir.join("r2.0")).expect("dir");
    for f in std::iter::once(m.clone()).chain(signature_files(&m)) {
        let name = f.file_name().expect("name").to_owned();
        std::fs::copy(&f, beta_dir.join("r2.0").join(name)).expect("copy");
    }
    let beta_cmd = |action: &str, extra: &[&str]| {
        let out = crate::common::host::run(
            std::process::Command::new(crate::common::host::bin())
                .args(["channel", action])
                .arg(&beta)
                .args(extra)
                .arg("--secret")
                .arg(&h.secret_key),
        );
        assert!(
            out.status.success(),
            "beta channel {action}: {}",
            text(&out)
        );
    };
    let beta_manifest = beta_dir.join("r2.0/release.json");
    beta_cmd(
        "add",
        &[
            beta_manifest.to_str().expect("path"),
            "--pin",
            "--track",
            "beta",
        ],
    );
    until_later(&beta, &stable, || beta_cmd("resign", &[]));

    serve_at(&beta, &stable);
    refused_other_track(
        &h,
        &format!(
            "channel {}: is for track \"beta\", this host follows track \"stable\" (update.track)",
            stable.display()
        ),
    );
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["kind"].as_str()),
        (Some(1), Some("other_track")),
        "{v}"
    );

    // Its later `created` was not believed: stable's halted channel, put
    // back, is no replay to this host, and the halt still holds.
    restore(&stable, &halted);
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["reason"].as_str()),
        (Some(0), Some("halted")),
        "{v}"
    );
}

#[test]
fn another_tracks_manifest_at_the_hosts_url_is_refused_and_nothing_is_written() {
    let (h, stable, url) = url_host("track-url");
    let good = saved(&stable);

    // A beta-only release, signed by the same key after stable's.
    let beta = packed_after(&h, "beta", "3.0", &["--track", "beta"], &stable);
    serve_at(&beta, &stable);
    refused_other_track(
        &h,
        &format!(
            "release manifest {url}: is for track \"beta\", this host follows track \"stable\""
        ),
    );

    // A release packed without a track is no release of this track either.
    let untracked = packed_after(&h, "untracked", "3.0", &[], &stable);
    serve_at(&untracked, &stable);
    refused_other_track(&h, "is for no track, this host follows track \"stable\"");

    // Another product's manifest of another track is another track's; of
    // this track, another product's. Neither is a manifest of this URL.
    let other = packed_after(
        &h,
        "other",
        "3.0",
        &["--track", "beta", "--compatible", "other-board"],
        &stable,
    );
    serve_at(&other, &stable);
    refused_other_track(&h, "is for track \"beta\"");
    let other = packed_after(
        &h,
        "other-stable",
        "3.0",
        &["--track", "stable", "--compatible", "other-board"],
        &other,
    );
    serve_at(&other, &stable);
    let out = h.abupdate(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("\"kind\": \"incompatible\""),
        "{}",
        text(&out)
    );

    // None raised this URL's floor: stable's own manifest still applies,
    // and an install by hand of another URL is the operator's to make.
    restore(&stable, &good);
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["version"].as_str()),
        (Some(100), Some("2.0")),
        "{v}"
    );
    let out = h.abupdate(&["check", untracked.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
}

#[test]
fn another_tracks_or_products_manifest_at_the_last_look_keeps_the_trial_staged() {
    // Beta's manifest, and another product's of this track (one key signs
    // both): neither says anything of stable's 2.0.
    for (name, extra, kind) in [
        ("beta", &["--track", "beta"][..], "other_track"),
        (
            "other-board",
            &["--track", "stable", "--compatible", "other-board"],
            "incompatible",
        ),
    ] {
        let (h, stable, _) = url_host(&format!("track-last-look-{name}"));
        let good = saved(&stable);
        let swapped = packed_after(&h, name, "3.0", extra, &stable);
        // While 2.0 is written, the server starts answering with it.
        let (from, to) = (
            swapped.parent().expect("dir"),
            stable.parent().expect("dir"),
        );
        h.post_install_hook(&format!(
            "rm -f {to}/release.json*.minisig && cp {from}/release.json* {to}/",
            from = from.display(),
            to = to.display()
        ));
        let out = h.abupdate(&["--json", "update"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["kind"], kind, "{name}: {v}");
        assert_eq!(h.reboots(), 0, "{name}: no reboot without a last look");
        let state = h.state();
        assert_eq!(state["transaction"]["phase"], "staged", "{name}: {state}");
        assert_eq!(state["transaction"]["version"], "2.0", "{name}");
        // Stable's manifest back: the next run's fetch is its look, and it
        // reboots.
        restore(&stable, &good);
        let out = h.abupdate(&["--json", "update", "--now"]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["rebooting"], true, "{name}: {v}");
        assert_eq!(h.reboots(), 1, "{name}");
    }
}

/// A replay at the last look (the manifest the release engineer signed
/// before the one this host installed: older than its floor, `stale`) says
/// no more of the staged release than another track's does: the trial stays
/// staged, never disarmed, and the next run that reads the newest copy
/// reboots into it.
#[test]
fn a_replayed_manifest_at_the_last_look_keeps_the_trial_staged() {
    let (h, stable, _) = url_host("track-last-look-replay");
    let older = saved(&stable);
    let replay = h.dir.join("replay");
    std::fs::create_dir_all(&replay).expect("replay dir");
    for (f, bytes) in &older {
        let name = f.file_name().expect("name");
        std::fs::write(replay.join(name), bytes).expect("copy");
    }
    let first = created(&stable);
    h.resign(&stable, |v| {
        v["created"] = date(now() + 2).into();
        None
    });
    assert!(created(&stable) > first, "re-signed later");
    let newer = saved(&stable);
    // While 2.0 is written, the server starts answering with the older copy.
    h.post_install_hook(&format!(
        "rm -f {to}/release.json*.minisig && cp {from}/release.json* {to}/",
        from = replay.display(),
        to = stable.parent().expect("dir").display()
    ));
    let out = h.abupdate(&["--json", "update"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "stale", "{v}");
    assert_eq!(h.reboots(), 0, "no reboot without a last look");
    let state = h.state();
    assert_eq!(state["transaction"]["phase"], "staged", "{state}");
    restore(&stable, &newer);
    let out = h.abupdate(&["--json", "update", "--now"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["rebooting"], true, "{v}");
    assert_eq!(h.reboots(), 1);
}

#[test]
fn a_channel_names_manifests_of_its_track_unless_it_pins_their_bytes() {
    let h = channel_host("track-named", "1.0", HostOptions::default());
    follow_stable(&h);
    let m = h.pack("r2.0", "2.0", &image("2.0", LEN), &["--track", "stable"]);
    channel(&h, "add", &[m.to_str().expect("path"), "--track", "stable"]);
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["version"].as_str()),
        (Some(100), Some("2.0")),
        "{v}"
    );

    // Beta's 2.0 (the same version, its own rollout), re-signed later, put
    // where stable's channel names 2.0: the channel binds the version only.
    let stables = saved(&m);
    let beta = packed_after(&h, "beta-r2.0", "2.0", &["--track", "beta"], &m);
    serve_at(&beta, &m);
    refused_other_track(
        &h,
        "r2.0/release.json: is for track \"beta\", this host follows track \"stable\"",
    );
    let (_, v) = check_json(&h);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("r2.0/release.json: is for track \"beta\", this host follows track \"stable\" (update.track): another track's manifest is never installed here (a server or mirror serving another track's file, or a wrong URL)")),
        "{v}"
    );
    // By hand, at the URL the channel names (where a cancelled barrier's
    // line points the operator), another track's manifest is refused too.
    let by_hand = m.to_str().expect("path");
    let before = h.untouched();
    for args in [
        &["check", by_hand][..],
        &["install", by_hand, "--no-reboot"],
    ] {
        let out = h.abupdate(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("is for track \"beta\", this host follows track \"stable\""),
            "{args:?}: {}",
            text(&out)
        );
    }
    h.assert_untouched(&before, "another track's manifest by hand");
    // A manifest of no track, later, by hand there: the operator's to take,
    // but no manifest of this track: it raises no floor of that URL.
    let untracked_2 = packed_after(&h, "untracked-r2.0", "2.0", &[], &beta);
    serve_at(&untracked_2, &m);
    let out = h.abupdate(&["check", by_hand]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    restore(&m, &stables);
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["version"].as_str()),
        (Some(100), Some("2.0")),
        "stable's manifest put back is taken at once: {v}"
    );

    // A release of no track is listed only with its bytes bound; then the
    // channel (itself of the host's track) vouches for it, and it installs.
    let untracked = h.pack("r3.0", "3.0", &image("3.0", LEN), &[]);
    let out = channel_cmd(&h, "add", &[untracked.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is for no track, the channel's track is \"stable\": its hosts would refuse it (pack it with --track stable, or bind its bytes with --pin)"),
        "{err}"
    );
    channel(&h, "add", &[untracked.to_str().expect("path"), "--pin"]);
    let (code, v) = check_json(&h);
    assert_eq!(
        (code, v["version"].as_str()),
        (Some(100), Some("3.0")),
        "{v}"
    );
    let out = h.abupdate(&["update", "--no-reboot", "--now"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["version"], "3.0", "{}", text(&out));
}

#[test]
fn the_operators_tools_keep_a_track_as_it_was_set() {
    let h = channel_host("track-operator", "1.0", HostOptions::default());
    let m = h.pack("r2.0", "2.0", &image("2.0", LEN), &["--track", "stable"]);
    // A channel made before tracks takes one, once: its listed releases
    // are of that track.
    channel(&h, "add", &[m.to_str().expect("path")]);
    channel(&h, "resign", &["--track", "stable"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(channel_path(&h)).expect("channel")).expect("json");
    assert_eq!(doc["track"], "stable", "{doc}");
    refused_edit(
        &h,
        "resign",
        &["--track", "beta"],
        "is the channel of track \"stable\", not \"beta\"",
    );

    // Another track's release is not listed unpinned.
    let beta = h.pack("r3.0", "3.0", &image("3.0", LEN), &["--track", "beta"]);
    refused_edit(
        &h,
        "add",
        &[beta.to_str().expect("path")],
        "is for track \"beta\", the channel's track is \"stable\"",
    );

    // Nor unpinned once listed pinned.
    let untracked = h.pack("r4.0", "4.0", &image("4.0", LEN), &[]);
    channel(&h, "add", &[untracked.to_str().expect("path"), "--pin"]);
    refused_edit(
        &h,
        "unpin",
        &["4.0"],
        "r4.0/release.json: is for no track, the channel's track is \"stable\"",
    );

    // A channel without a track that lists a release of no track is not
    // given one: its hosts, once they follow it, would refuse that release.
    let h2 = channel_host("track-operator-untracked", "1.0", HostOptions::default());
    let old = h2.pack("r2.0", "2.0", &image("2.0", LEN), &[]);
    channel(&h2, "add", &[old.to_str().expect("path")]);
    refused_edit(
        &h2,
        "resign",
        &["--track", "stable"],
        "r2.0/release.json: is for no track, the channel's track is \"stable\"",
    );

    // `pack` never swaps the track of a release directory; it may give one
    // to a directory packed without.
    let (_, out) = h.pack_output("r2.0", "2.0", &image("2.0", LEN), &["--track", "beta"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("holds release 2.0 of track \"stable\", and this pack gives track \"beta\""),
        "{}",
        text(&out)
    );
    h2.pack("r2.0", "2.0", &image("2.0", LEN), &["--track", "stable"]);

    // Nor one whose listed release cannot be read here: its track is not
    // known (an edit made on a copy without the releases).
    let listed = h2.dir.join("r2.0/release.json");
    let away = h2.dir.join("r2.0-release.json");
    std::fs::rename(&listed, &away).expect("move away");
    refused_edit(
        &h2,
        "resign",
        &["--track", "stable"],
        "r2.0/release.json: listed, and cannot be read here to check it (",
    );
    std::fs::rename(&away, &listed).expect("move back");
    channel(&h2, "resign", &["--track", "stable"]);

    // A pinned release packed again (to give it a track) is no longer the
    // bytes pinned: the re-pack says what it did to the rollout, and the
    // channel is not given a track over it until it is pinned again.
    let h3 = channel_host("track-operator-pinned", "1.0", HostOptions::default());
    let pinned = h3.pack("r2.0", "2.0", &image("2.0", LEN), &["--percent", "5"]);
    channel(&h3, "add", &[pinned.to_str().expect("path"), "--pin"]);
    let (_, out) = h3.pack_output("r2.0", "2.0", &image("2.0", LEN), &["--track", "stable"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("abupdate: note: the release.json replaced (2.0) had a rollout of 5% of hosts; this one has no rollout (every host takes it at once)"),
        "{}",
        text(&out)
    );
    refused_edit(
        &h3,
        "resign",
        &["--track", "stable"],
        "r2.0/release.json: is pinned to SHA-256 ",
    );
    channel(&h3, "pin", &["2.0"]);
    channel(&h3, "resign", &["--track", "stable"]);
}

#[test]
fn a_malformed_track_is_refused_naming_it() {
    let h = TestHost::new("track-malformed", "1.0", HostOptions::default());
    let (_, out) = h.pack_output("r2.0", "2.0", &image("2.0", LEN), &["--track", "st able"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--track \"st able\": a track is 1 to 64 of A-Z a-z 0-9 . _ -"),
        "{err}"
    );
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen("[update]\n", "[update]\ntrack = \"\"\n", 1),
    )
    .expect("config");
    let out = h.abupdate(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("update.track: \"\": a track is"), "{err}");
}
