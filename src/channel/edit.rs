//! `abupdate channel`: the operator's edits of a release channel (add a
//! release, withdraw one, prune old ones, halt, resume, re-sign), each
//! re-signed and published in the order of [`crate::publish`].
//!
//! Invariant: nothing is re-signed that the hosts' trust gate would not
//! accept as it stands: an existing `channel.json` is verified (the hosts'
//! keys with `--keys`, else the secrets' own, at `--threshold`) and parsed
//! as hosts parse it before any edit; a tampered channel is refused, never
//! laundered by a fresh signature. Every edit is [`apply`], a plain function
//! of the document, and its result is parsed as hosts parse it before it is
//! signed; `created` only moves forward ([`crate::publish::next_second`]),
//! so hosts that saw the old channel accept the new one; and no channel
//! longer than the hosts read ([`super::MAX_CHANNEL_BYTES`]) is published:
//! one would reach no host, a halt in it included.

use super::{Action, Channel, Options};
use crate::manifest::{Manifest, TrackRule, Version, MAX_MANIFEST_BYTES};
use crate::publish::{self, PublishError, ReleaseDir};
use crate::timefmt::{format_rfc3339, now};
use crate::trust::{self, KeyRing};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// One edit, as [`apply`] makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// List a release.
    Add {
        /// Its version.
        version: String,
        /// Its manifest, relative to the channel.
        manifest: String,
        /// Its manifest's SHA-256, when pinned (`--pin`).
        sha256: Option<String>,
        /// A barrier.
        barrier: bool,
    },
    /// Withdraw a listed release.
    Withdraw(String),
    /// Drop every release below this listed one but the barriers (and a
    /// version that does not parse): no host's choice among what is left
    /// changes, as a host takes the newest release above it unless a
    /// barrier comes first ([`super::choose`]).
    Prune(String),
    /// Drop a listed release's pin: bound by its version only.
    Unpin(String),
    /// Bind a listed release's manifest bytes (again, after a re-pack).
    Pin {
        /// The release's version.
        version: String,
        /// Its manifest's SHA-256 now.
        sha256: String,
    },
    /// Set or lift the halt.
    Halt(bool),
    /// Dates only.
    Resign,
}

/// Apply `change` to the channel document `doc` (unknown fields are signed
/// content and kept) and date it `created`..`expires`. Refused: adding a
/// version already listed, withdrawing, unpinning or pruning below one
/// that is not.
pub fn apply(doc: &mut Value, change: &Change, created: i64, expires: i64) -> Result<(), String> {
    let obj = doc.as_object_mut().ok_or("not a JSON object")?;
    obj.insert("created".into(), format_rfc3339(created).into());
    obj.insert("expires".into(), format_rfc3339(expires).into());
    if let Change::Halt(h) = change {
        obj.insert("halt".into(), (*h).into());
    }
    let releases = obj
        .entry("releases")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("releases: not a list")?;
    let listed = |v: &str| {
        let v = Version::parse(v).ok();
        move |r: &&mut Value| {
            let this = r.get("version").and_then(Value::as_str);
            v.is_some() && this.and_then(|t| Version::parse(t).ok()) == v
        }
    };
    match change {
        Change::Add {
            version,
            manifest,
            sha256,
            barrier,
        } => {
            if releases.iter_mut().any(|r| listed(version)(&r)) {
                return Err(format!("release {version} is listed already"));
            }
            let mut r = json!({
                "version": version, "manifest": manifest,
                "barrier": barrier, "withdrawn": false,
            });
            if let (Some(h), Some(o)) = (sha256, r.as_object_mut()) {
                o.insert("sha256".into(), h.clone().into());
            }
            releases.push(r);
        }
        Change::Withdraw(version) | Change::Unpin(version) | Change::Pin { version, .. } => {
            let r = releases
                .iter_mut()
                .find(listed(version))
                .and_then(Value::as_object_mut)
                .ok_or_else(|| format!("release {version} is not listed"))?;
            match change {
                Change::Withdraw(_) => r.insert("withdrawn".into(), true.into()),
                Change::Pin { sha256, .. } => r.insert("sha256".into(), sha256.clone().into()),
                _ => r.remove("sha256"),
            };
        }
        Change::Prune(version) => {
            let below = Version::parse(version)
                .ok()
                .filter(|_| releases.iter_mut().any(|r| listed(version)(&r)));
            let below = below.ok_or_else(|| format!("release {version} is not listed"))?;
            releases.retain(|r| {
                let barrier = r.get("barrier").and_then(Value::as_bool) == Some(true);
                let this = r
                    .get("version")
                    .and_then(Value::as_str)
                    .and_then(|t| Version::parse(t).ok());
                barrier || this.is_none_or(|v| v >= below)
            });
        }
        Change::Halt(_) | Change::Resign => {}
    }
    Ok(())
}

/// Give the channel `doc` the track `track` (`--track`): set when it has
/// none, kept when it is the same, refused when it is another: its hosts
/// follow that one, and a channel of another track is never acted on.
/// Returns whether it was newly set.
pub fn set_track(doc: &mut Value, track: &str) -> Result<bool, String> {
    let obj = doc.as_object_mut().ok_or("not a JSON object")?;
    match obj.get("track").and_then(Value::as_str) {
        Some(held) if held == track => Ok(false),
        Some(held) => Err(format!(
            "is the channel of track {held:?}, not {track:?}: its hosts follow {held:?} and would \
             refuse it (a track is set once; publish another track as another channel)"
        )),
        None => {
            obj.insert("track".into(), track.into());
            Ok(true)
        }
    }
}

/// The track the channel `doc` indexes, if any.
fn track_of(doc: &Value) -> Option<&str> {
    doc.get("track").and_then(Value::as_str)
}

/// A manifest the channel names unpinned must state the channel's track:
/// hosts that follow it refuse any other ([`super::manifest_track`]).
fn off_track(channel: Option<&str>, manifest: &Manifest, pinned: bool) -> Option<String> {
    let want = channel.filter(|_| !pinned)?;
    crate::manifest::check_track(manifest.doc.track.as_deref(), TrackRule::Exactly(want))
        .err()
        .map(|(found, want)| {
            format!(
                "is for {}, the channel's track is {want:?}: its hosts would refuse it (pack it \
                 with --track {want}, or bind its bytes with --pin)",
                crate::manifest::describe_track(found)
            )
        })
}

/// Why hosts would refuse the manifest `m` now, whatever else they know:
/// expired, or dated more than a day ahead of this clock (`now`). Listed,
/// such a release is the newest every host takes and refuses on every
/// tick, never reaching the one below it (found from outside).
fn refused_now(m: &Manifest, now: i64) -> Option<String> {
    let at = format_rfc3339;
    if m.expires <= now {
        return Some(format!(
            "expired at {} (now {}): its hosts would refuse it as the newest release on every \
             tick, and wait on it (pack it again)",
            at(m.expires),
            at(now)
        ));
    }
    (m.created > now.saturating_add(crate::manifest::MAX_CREATED_AHEAD)).then(|| {
        format!(
            "created {} is more than a day ahead of this clock ({}): its hosts would refuse it \
             as the newest release on every tick, and wait on it",
            m.doc.created,
            at(now)
        )
    })
}

/// A release its hosts would stop taking while the channel still names it:
/// its manifest expires before the channel does (found from outside: a
/// release packed long ago, added or re-signed into a channel that
/// outlives it, is refused from then on as the newest release, and its
/// hosts wait on it).
fn expires_first(
    version: &str,
    path: &str,
    release_expires: i64,
    channel_expires: i64,
) -> Option<String> {
    (release_expires < channel_expires).then(|| {
        format!(
            "warning: release {} ({}) expires at {}, before this channel ({}): from then its hosts \
             refuse it as their newest release and wait on it; pack it again and `channel add` it, \
             or withdraw it, before then",
            crate::text::show(version.as_bytes()),
            crate::text::show(path.as_bytes()),
            format_rfc3339(release_expires),
            format_rfc3339(channel_expires)
        )
    })
}

/// [`expires_first`] for every release listed in `doc` (in `dir`), not
/// withdrawn, whose manifest can be read.
fn expiring_releases(doc: &Value, dir: &Path, channel_expires: i64) -> Vec<String> {
    let listed = doc["releases"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    listed
        .iter()
        .filter(|r| r.get("withdrawn").and_then(Value::as_bool) != Some(true))
        .filter_map(|r| {
            let path = r.get("manifest")?.as_str()?;
            let body = crate::files::read_capped(&dir.join(path), MAX_MANIFEST_BYTES).ok()?;
            let m = Manifest::parse(&body).ok()?;
            expires_first(&m.doc.version, path, m.expires, channel_expires)
        })
        .collect()
}

/// Every release listed in `doc` (in `dir`), not withdrawn, is one the
/// hosts of `track` take: unpinned, its manifest states `track` (hosts
/// that follow it refuse any other); pinned, its manifest is still the
/// bytes pinned (a release re-packed to give it a track is not: every
/// host would refuse it, `hash_mismatch`). A manifest that cannot be read
/// (not here, not verified with `keys`) is refused too: its track is not
/// known.
fn listed_on_track(
    doc: &Value,
    dir: &Path,
    track: &str,
    keys: &KeyRing,
    threshold: usize,
) -> Result<(), PublishError> {
    let listed = doc["releases"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for r in listed {
        let withdrawn = r.get("withdrawn").and_then(Value::as_bool) == Some(true);
        let pin = r.get("sha256").and_then(Value::as_str);
        let Some(relative) = r
            .get("manifest")
            .and_then(Value::as_str)
            .filter(|_| !withdrawn)
        else {
            continue;
        };
        let path = dir.join(relative);
        let m = read_release(&path, keys, threshold).map_err(|e| {
            refused(
                &path,
                format!(
                    "listed, and cannot be read here to check it ({}): the channel's hosts \
                     would refuse it unless it states track {track:?} or is pinned as it is; edit \
                     the channel where its releases are",
                    crate::error::one_line(&e.to_string())
                ),
            )
        })?;
        if let Some(pin) = pin.filter(|p| *p != m.sha256) {
            return Err(refused(
                &path,
                format!(
                    "is pinned to SHA-256 {pin} and now has {}: every host would refuse it \
                     (`abupdate channel pin FILE {}` binds it again)",
                    m.sha256, m.version
                ),
            ));
        }
        if let Some(why) = off_track(Some(track), &m, pin.is_some()) {
            return Err(refused(&path, why));
        }
    }
    Ok(())
}

/// The release `version` listed in `doc`: its manifest's path (in `dir`),
/// read and verified with `keys` as hosts will, and stating that version.
fn read_listed(
    doc: &Value,
    dir: &Path,
    version: &str,
    keys: &KeyRing,
    threshold: usize,
) -> Result<(PathBuf, Manifest), PublishError> {
    let wanted = Version::parse(version).ok();
    let listed = doc["releases"].as_array().and_then(|rs| {
        rs.iter().find(|r| {
            let this = r.get("version").and_then(Value::as_str);
            wanted.is_some() && this.and_then(|t| Version::parse(t).ok()) == wanted
        })
    });
    let Some(relative) = listed
        .and_then(|r| r.get("manifest"))
        .and_then(Value::as_str)
    else {
        return Err(refused(dir, format!("release {version} is not listed")));
    };
    let path = dir.join(relative);
    let m = read_release(&path, keys, threshold)?;
    if Some(&m.version) != wanted.as_ref() {
        return Err(refused(
            &path,
            format!("states version {}, not {version}", m.version),
        ));
    }
    Ok((path, m))
}

fn refused(path: &Path, m: impl std::fmt::Display) -> PublishError {
    PublishError::Refused(format!("{}: {m}", path.display()))
}

/// A channel the hosts would refuse, named once (by `path`, not again by
/// the name [`Channel::parse`] was given).
fn malformed(path: &Path, e: super::ChannelError) -> PublishError {
    match e {
        super::ChannelError::Malformed { field, reason, .. } => {
            refused(path, format!("{field}: {reason}"))
        }
        other => refused(path, other),
    }
}

/// The manifest at `manifest`, read, verified with `keys` as hosts will.
fn read_release(
    manifest: &Path,
    keys: &KeyRing,
    threshold: usize,
) -> Result<Manifest, PublishError> {
    // Capped as it is read (never read whole, then measured).
    let body = crate::files::read_capped(manifest, MAX_MANIFEST_BYTES).map_err(|source| {
        match source.kind() {
            std::io::ErrorKind::FileTooLarge => refused(manifest, "larger than a manifest may be"),
            _ => PublishError::Io {
                path: manifest.to_path_buf(),
                source,
            },
        }
    })?;
    let shown = manifest.display().to_string();
    let sigs: Vec<(String, String)> = (0..publish::MAX_SIGNATURES)
        .filter_map(|i| {
            let p = publish::signature_name(&shown, i);
            crate::files::read_text_capped(Path::new(&p), trust::minisign::MAX_FILE_SIZE as u64)
                .ok()
                .map(|t| (p, t))
        })
        .collect();
    trust::verify_threshold(&body, &sigs, keys, threshold).map_err(|error| {
        PublishError::Untrusted {
            path: manifest.to_path_buf(),
            error,
        }
    })?;
    Manifest::parse(&body).map_err(|error| PublishError::Manifest {
        path: manifest.to_path_buf(),
        error,
    })
}

/// The `compatible` of the first release listed in the channel `doc`
/// (in `dir`) whose manifest can be read, with its path: the product the
/// channel's hosts are.
fn listed_compatible(doc: &Value, dir: &Path) -> Option<(String, String)> {
    doc["releases"].as_array()?.iter().find_map(|r| {
        let relative = r.get("manifest")?.as_str()?;
        let body = crate::files::read_capped(&dir.join(relative), MAX_MANIFEST_BYTES).ok()?;
        let m = Manifest::parse(&body).ok()?;
        Some((relative.to_string(), m.doc.compatible))
    })
}

/// The change `action` makes: for `add`, the manifest is read, verified
/// with `keys` (bound by its hash with `--pin`), its path made relative to
/// `dir`; for `pin`, the listed manifest (in `doc`) is read and verified
/// the same way and its current hash bound.
fn change_of(
    action: &Action,
    doc: &Value,
    dir: &Path,
    keys: &KeyRing,
    threshold: usize,
) -> Result<Change, PublishError> {
    Ok(match action {
        Action::Add {
            manifest,
            barrier,
            pin,
        } => {
            let m = read_release(manifest, keys, threshold)?;
            if let Some(why) = refused_now(&m, now()) {
                return Err(refused(manifest, why));
            }
            // Found from outside: another product's release added here
            // was the newest every host of the channel took, and refused
            // as incompatible on every tick, never reaching the next one.
            if let Some((listed, theirs)) = listed_compatible(doc, dir) {
                if theirs != m.doc.compatible {
                    return Err(refused(
                        manifest,
                        format!(
                            "is for compatible \"{}\", the channel's releases for \"{}\" ({listed}): \
                             its hosts would refuse it as the newest release, and wait on it",
                            crate::text::show(m.doc.compatible.as_bytes()),
                            crate::text::show(theirs.as_bytes()),
                        ),
                    ));
                }
            }
            if let Some(why) = off_track(track_of(doc), &m, *pin) {
                return Err(refused(manifest, why));
            }
            let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| refused(p, e));
            let relative = abs(manifest)?
                .strip_prefix(abs(dir)?)
                .map(|r| r.as_os_str().to_owned())
                .map_err(|_| {
                    refused(
                        manifest,
                        "not inside the channel's directory (hosts fetch it relative to the channel)",
                    )
                })?;
            // The path is a URL reference to hosts: only characters that a
            // URL reads as the same path (`#`, `?`, `%`, a space would send
            // hosts elsewhere; bytes that are not UTF-8 are no text).
            let relative = match relative.to_str() {
                Some(r) if r.chars().all(|c| c.is_ascii_alphanumeric() || "._~/-+=,@".contains(c)) => {
                    r.to_string()
                }
                _ => {
                    return Err(refused(
                        manifest,
                        format!(
                            "its path in the channel, {}, holds a character a URL reads otherwise: name its directories with letters, digits and ._~-+=,@ only",
                            crate::error::one_line(&relative.to_string_lossy())
                        ),
                    ))
                }
            };
            Change::Add {
                version: m.version.to_string(),
                manifest: relative,
                sha256: pin.then_some(m.sha256),
                barrier: *barrier,
            }
        }
        Action::Withdraw(v) => Change::Withdraw(v.clone()),
        Action::Prune(v) => Change::Prune(v.clone()),
        Action::Unpin(v) => {
            // Unpinned, a release's manifest must state the channel's
            // track, as `add` without `--pin` requires.
            if let Some(track) = track_of(doc) {
                let (path, m) = read_listed(doc, dir, v, keys, threshold)?;
                if let Some(why) = off_track(Some(track), &m, false) {
                    return Err(refused(&path, why));
                }
            }
            Change::Unpin(v.clone())
        }
        Action::Pin(v) => {
            let (path, m) = read_listed(doc, dir, v, keys, threshold)?;
            if let Some(why) = refused_now(&m, now()) {
                return Err(refused(&path, why));
            }
            Change::Pin {
                version: v.clone(),
                sha256: m.sha256,
            }
        }
        Action::Halt => Change::Halt(true),
        Action::Resume => Change::Halt(false),
        Action::Resign => Change::Resign,
    })
}

/// Run `abupdate channel`: verify what is there, apply the edit, check the
/// result as hosts will, sign and publish. Returns the channel written, as
/// hosts read it, and the warnings for its operator
/// ([`expiring_releases`]).
pub fn run(opts: &Options) -> Result<(Channel, Vec<String>), PublishError> {
    let file = &opts.file;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| refused(file, "not a file name"))?;
    let dir_path = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = ReleaseDir::open(&dir_path)?;
    let secrets = publish::load_secret_keys(&opts.secrets)?;
    let keys = match opts.keys_dirs.is_empty() {
        true => KeyRing::from_keys(secrets.iter().map(|(_, k)| k.public_key()).collect()),
        false => {
            publish::check_key_dirs(&opts.keys_dirs)?;
            KeyRing::load(&opts.keys_dirs).map_err(|error| PublishError::Untrusted {
                path: opts.keys_dirs[0].clone(),
                error,
            })?
        }
    };
    let threshold = opts.threshold.max(1);
    let previous = match dir.read_manifest(name)? {
        None => None,
        Some(_) => {
            let signed = dir.read_signed(name, &keys, threshold)?;
            // Re-signed only by the keys that signed it, as `fleet` does: a
            // halt signed by fewer (or others) than the hosts count would be
            // a halt no host believes.
            signed.check_signers(&secrets, &keys, threshold)?;
            let body = signed.body;
            // An over-long channel (signed by other tools) is one this edit
            // repairs, since it re-dates `expires`: only its `created` is
            // needed, for the new one to be later.
            let created = match Channel::parse(name, &body) {
                Ok(ch) => ch.created,
                Err(super::ChannelError::ValidTooLong { created, .. }) => created,
                Err(e) => return Err(malformed(file, e)),
            };
            Some((body, created))
        }
    };
    let mut doc = match &previous {
        Some((body, _)) => serde_json::from_slice(body).map_err(|e| refused(file, e))?,
        None if matches!(opts.action, Action::Add { .. }) => json!({"format": 1, "halt": false}),
        None => return Err(refused(file, "no channel yet: `add` a release first")),
    };
    if let Some(track) = &opts.track {
        // A channel given a track now must not name a release its hosts
        // would refuse once they follow it.
        if set_track(&mut doc, track).map_err(|e| refused(file, e))? {
            listed_on_track(&doc, &dir_path, track, &keys, threshold)?;
        }
    }
    let change = change_of(&opts.action, &doc, &dir_path, &keys, threshold)?;
    let created = publish::next_second(previous.as_ref().map(|p| p.1), now());
    let expires = created.saturating_add((opts.expires_days.max(1) as i64).saturating_mul(86400));
    apply(&mut doc, &change, created, expires).map_err(|e| refused(file, e))?;
    let mut body = serde_json::to_vec_pretty(&doc).map_err(|e| refused(file, e))?;
    body.push(b'\n');
    let max = super::MAX_CHANNEL_BYTES;
    if body.len() as u64 > max {
        return Err(refused(
            file,
            format!(
                "would be {} bytes, more than the {max} hosts read: no host would take it \
                 (a halt in it included); `channel prune FILE VERSION` drops the releases \
                 below VERSION (barriers stay)",
                body.len()
            ),
        ));
    }
    let written = Channel::parse(name, &body).map_err(|e| malformed(file, e))?;
    let signing: Vec<_> = secrets.into_iter().map(|(_, k)| k).collect();
    dir.publish_manifest(
        name,
        &body,
        &signing,
        previous.as_ref().map(|p| p.0.as_slice()),
        &keys,
        threshold,
    )?;
    let notes = expiring_releases(&doc, &dir_path, written.expires);
    Ok((written, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn add(v: &str, barrier: bool) -> Change {
        Change::Add {
            version: v.into(),
            manifest: format!("{v}/release.json"),
            sha256: Some(H.into()),
            barrier,
        }
    }

    fn parsed(doc: &Value) -> Channel {
        let body = serde_json::to_vec(doc).expect("json");
        Channel::parse("c", &body).expect("hosts parse it")
    }

    #[test]
    fn a_release_expired_or_dated_ahead_is_one_hosts_refuse_now() {
        let m = Manifest::parse(
            &serde_json::to_vec(&json!({"format": 1, "compatible": "acme", "version": "2.0",
                "created": "2026-11-20T10:00:00Z", "expires": "2027-01-20T10:00:00Z",
                "images": {"rootfs": {"url": "r.img", "size": 1, "sha256": H}}}))
            .expect("json"),
        )
        .expect("manifest");
        let (created, expires) = (m.created, m.expires);
        assert_eq!(refused_now(&m, created), None);
        assert_eq!(refused_now(&m, expires - 1), None);
        let why = refused_now(&m, expires).expect("expired");
        assert!(
            why.starts_with("expired at 2027-01-20T10:00:00Z (now 2027-01-20T10:00:00Z)"),
            "{why}"
        );
        let day = crate::manifest::MAX_CREATED_AHEAD;
        assert_eq!(
            refused_now(&m, created - day),
            None,
            "a day ahead is believed"
        );
        let why = refused_now(&m, created - day - 1).expect("ahead");
        assert!(
            why.starts_with("created 2026-11-20T10:00:00Z is more than a day ahead"),
            "{why}"
        );
    }

    #[test]
    fn a_release_expiring_before_its_channel_is_said_and_one_outliving_it_is_not() {
        let (t, day) = (1_800_000_000, 86400);
        assert_eq!(
            expires_first("2.0", "r/release.json", t + day, t + day),
            None
        );
        assert_eq!(
            expires_first("2.0", "r/release.json", t + 2 * day, t + day),
            None
        );
        let why = expires_first("2.0", "r\n/release.json", t, t + day).expect("expires first");
        assert!(
            why.starts_with(
                "warning: release 2.0 (r\\x0a/release.json) expires at 2027-01-15T08:00:00Z, \
                 before this channel (2027-01-16T08:00:00Z)"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_channels_track_is_set_once_and_never_changed() {
        let mut doc = json!({"format": 1, "releases": []});
        assert_eq!(set_track(&mut doc, "stable"), Ok(true));
        assert_eq!(doc["track"], "stable");
        assert_eq!(set_track(&mut doc, "stable"), Ok(false));
        let e = set_track(&mut doc, "beta").expect_err("another track");
        assert!(
            e.starts_with("is the channel of track \"stable\", not \"beta\""),
            "{e}"
        );
        assert_eq!(doc["track"], "stable");
        apply(&mut doc, &add("2.0", false), 1000, 2000).expect("add");
        assert_eq!(parsed(&doc).track.as_deref(), Some("stable"));
    }

    #[test]
    fn a_release_of_another_track_is_off_the_channels_track_unless_pinned() {
        let m = |track: Option<&str>| {
            let mut v = json!({"format": 1, "compatible": "acme", "version": "2.0",
                "created": "2026-11-20T10:00:00Z", "expires": "2027-01-20T10:00:00Z",
                "images": {"rootfs": {"url": "r.img", "size": 1, "sha256": H}}});
            if let Some(t) = track {
                v["track"] = t.into();
            }
            Manifest::parse(&serde_json::to_vec(&v).expect("json")).expect("manifest")
        };
        assert_eq!(off_track(Some("stable"), &m(Some("stable")), false), None);
        assert_eq!(off_track(None, &m(Some("beta")), false), None, "no track");
        assert_eq!(
            off_track(Some("stable"), &m(Some("beta")), true),
            None,
            "pinned"
        );
        assert_eq!(off_track(Some("stable"), &m(None), true), None, "pinned");
        let why = off_track(Some("stable"), &m(Some("beta")), false).expect("off");
        assert!(
            why.starts_with("is for track \"beta\", the channel's track is \"stable\""),
            "{why}"
        );
        let why = off_track(Some("stable"), &m(None), false).expect("off");
        assert!(why.starts_with("is for no track"), "{why}");
    }

    #[test]
    fn add_lists_a_release_hosts_can_parse_and_dates_the_channel() {
        let mut doc = json!({"format": 1, "extra": "kept"});
        apply(&mut doc, &add("2.0", true), 1000, 2000).expect("add");
        let c = parsed(&doc);
        assert_eq!((c.created, c.expires), (1000, 2000));
        assert!(c.releases[0].barrier && !c.releases[0].withdrawn);
        assert_eq!(doc["extra"], "kept");
    }

    #[test]
    fn adding_a_version_twice_is_refused_whatever_its_spelling() {
        let mut doc = json!({"format": 1});
        apply(&mut doc, &add("2.0", false), 1000, 2000).expect("add");
        let e = apply(&mut doc, &add("2.0.0", false), 1001, 2000).expect_err("twice");
        assert!(e.contains("listed already"), "{e}");
    }

    #[test]
    fn withdraw_marks_the_listed_release_and_refuses_an_unknown_one() {
        let mut doc = json!({"format": 1});
        apply(&mut doc, &add("2.1", false), 1000, 2000).expect("add");
        apply(&mut doc, &Change::Withdraw("2.1".into()), 1001, 2000).expect("withdraw");
        assert!(parsed(&doc).releases[0].withdrawn);
        let e = apply(&mut doc, &Change::Withdraw("9".into()), 1002, 2000).expect_err("unknown");
        assert!(e.contains("not listed"), "{e}");
    }

    /// What `prune` keeps, and that it changes no host's choice: every
    /// booted version, below, between and above what is dropped, chooses
    /// the same release (nothing failed here) from the channel before and
    /// after.
    #[test]
    fn prune_drops_the_releases_below_but_the_barriers_and_no_choice_changes() {
        let mut doc = json!({"format": 1});
        for (v, barrier) in [
            ("1.1", false),
            ("1.2", true),
            ("1.3", false),
            ("1.4", false),
            ("2.0", false),
            ("2.1", false),
        ] {
            apply(&mut doc, &add(v, barrier), 1000, 2000).expect("add");
        }
        apply(&mut doc, &Change::Withdraw("1.3".into()), 1000, 2000).expect("withdraw");
        let before = parsed(&doc);
        apply(&mut doc, &Change::Prune("2.0.0".into()), 1001, 2000).expect("prune");
        let after = parsed(&doc);
        let left: Vec<String> = after
            .releases
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(left, ["1.2", "2.0", "2.1"]);
        let chosen =
            |ch: &Channel, booted: &Version| match super::super::choose(ch, Some(booted), &[]) {
                super::super::Choice::Install { index, .. } => {
                    Some(ch.releases[index].version.to_string())
                }
                _ => None,
            };
        for booted in ["1.0", "1.1", "1.2", "1.25", "1.4", "1.9", "2.0", "2.1", "3"] {
            let booted = Version::parse(booted).expect("version");
            assert_eq!(
                chosen(&before, &booted),
                chosen(&after, &booted),
                "booted {booted}"
            );
        }
        let e = apply(&mut doc, &Change::Prune("1.9".into()), 1002, 2000).expect_err("unlisted");
        assert!(e.contains("not listed"), "{e}");
    }

    #[test]
    fn pin_binds_unpin_drops_the_hash_and_an_unpinned_add_lists_none() {
        let mut doc = json!({"format": 1});
        apply(&mut doc, &add("2.0", false), 1000, 2000).expect("add");
        assert_eq!(parsed(&doc).releases[0].sha256.as_deref(), Some(H));
        apply(&mut doc, &Change::Unpin("2.0".into()), 1001, 2000).expect("unpin");
        assert_eq!(parsed(&doc).releases[0].sha256, None);
        let c = "c".repeat(64);
        let pin = Change::Pin {
            version: "2.0.0".into(),
            sha256: c.clone(),
        };
        apply(&mut doc, &pin, 1001, 2000).expect("pin");
        assert_eq!(parsed(&doc).releases[0].sha256, Some(c));
        apply(&mut doc, &Change::Unpin("2.0".into()), 1001, 2000).expect("unpin");
        let e = apply(&mut doc, &Change::Unpin("9".into()), 1002, 2000).expect_err("unknown");
        assert!(e.contains("not listed"), "{e}");
        let unpinned = Change::Add {
            version: "3.0".into(),
            manifest: "3.0/release.json".into(),
            sha256: None,
            barrier: false,
        };
        apply(&mut doc, &unpinned, 1003, 2000).expect("add unpinned");
        assert_eq!(doc["releases"][1].get("sha256"), None);
    }

    #[test]
    fn a_malformed_channel_is_named_once() {
        let e = malformed(
            Path::new("www/channel.json"),
            Channel::parse("channel.json", b"{}").expect_err("malformed"),
        );
        let text = e.to_string();
        assert_eq!(text.matches("channel.json").count(), 1, "{text}");
        assert!(text.contains("www/channel.json: channel: needs"), "{text}");
    }

    #[test]
    fn halt_and_resume_set_the_flag_and_resign_changes_only_dates() {
        let mut doc = json!({"format": 1});
        apply(&mut doc, &add("1.0", false), 1000, 2000).expect("add");
        apply(&mut doc, &Change::Halt(true), 1001, 2000).expect("halt");
        assert!(parsed(&doc).halt);
        apply(&mut doc, &Change::Halt(false), 1002, 2000).expect("resume");
        assert!(!parsed(&doc).halt);
        let before = doc["releases"].clone();
        apply(&mut doc, &Change::Resign, 1003, 3000).expect("resign");
        assert_eq!(doc["releases"], before);
        assert_eq!(parsed(&doc).expires, 3000);
    }
}
