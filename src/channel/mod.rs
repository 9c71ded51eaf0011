//! The release channel (`channel.json`): a signed, expiring index of
//! releases, and the host's choice from it.
//!
//! Invariant: a host configured with `[update] channel` installs only a
//! release the channel lists, not withdrawn, and never past a barrier: the
//! choice is [`choose`], a plain function of the channel, the booted
//! version (unknown: no choice, never a guess) and the releases that failed
//! here, with one unit test per branch; the manifest it points to is acted
//! on only when it is the one the channel binds ([`bind`]: its version,
//! and its exact bytes' SHA-256 when the entry is pinned; unpinned by
//! default because `abupdate fleet` re-signs manifests on each wave, whose
//! own signature, expiry and `created` floor still hold). The channel itself passes the same
//! trust gate as a manifest ([`crate::trust::gate::fetch_channel`]) and the
//! same rules of time ([`check_time`]): not dated ahead of the host's
//! clock, not behind one already verified from the same URL (the
//! `created` floor, kept in the state like a manifest's, with the SHA-256
//! of the channel verified at that date: an older `created`, or the same
//! one with other bytes, is a replay), not expired. A replayed old channel
//! could undo a withdrawal or a halt; a frozen one expires. Refusals name
//! the URL actually fetched (the mirror's, the last redirect's).
//!
//! On a host that follows a track (`[update] track`), the channel states
//! that track, checked before anything of it is believed ([`check_track`]),
//! and so does each manifest it names unpinned ([`manifest_track`]): a
//! signature says who signed a document, not which channel it belongs to.
//!
//! Withdrawn entries are ignored entirely, barrier or not: withdrawing a
//! barrier needs a replacement barrier (`abupdate channel add --barrier`).
//!
//! A release staged here (its trial waiting for the reboot) stays armed
//! only while the channel still offers it by the same rules ([`staged`]:
//! not halted, listed, not withdrawn, not failed here, no barrier before
//! it); otherwise the agent disarms it. Only a channel that passed the
//! trust gate and [`check_time`] is asked: one that cannot be fetched or
//! believed disarms nothing, so blocking or replaying the channel never
//! changes a host.

#[cfg(feature = "pack")]
pub mod edit;

use crate::manifest::{
    within_validity, Behind, Floor, Manifest, TrackRule, Version, MAX_CREATED_AHEAD,
    MAX_EXPIRES_DAYS,
};
use crate::timefmt::{format_rfc3339, parse_rfc3339};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;

/// Largest channel accepted.
pub const MAX_CHANNEL_BYTES: u64 = 256 * 1024;

/// One release as the channel lists it.
#[derive(Clone, Debug)]
pub struct Release {
    /// The release's version.
    pub version: Version,
    /// Its manifest, relative to the channel's URL.
    pub manifest: String,
    /// SHA-256 of the manifest's exact bytes, when the release is pinned
    /// (`channel add --pin`); without it the channel binds the version
    /// only, so `abupdate fleet` may re-sign the manifest on each wave.
    pub sha256: Option<String>,
    /// Hosts below it go through it, never past it.
    pub barrier: bool,
    /// Never installed; hosts on it move on.
    pub withdrawn: bool,
}

/// The document read as a map of JSON values: the same serde code as the
/// unknown fields of `state.json` ([`crate::state::Unknown`]), so the host
/// binary carries no second JSON reader for the channel.
#[derive(Deserialize)]
struct Raw {
    #[serde(flatten)]
    fields: crate::state::Unknown,
}

/// A parsed and checked channel.
#[derive(Clone, Debug)]
pub struct Channel {
    /// When it was signed, Unix time.
    pub created: i64,
    /// When it stops being acted on, Unix time.
    pub expires: i64,
    /// The fleet-wide halt: no host starts an install.
    pub halt: bool,
    /// The track it indexes (`stable`): what a host with `[update] track`
    /// requires of it ([`check_track`]). Absent in channels made without
    /// `--track`.
    pub track: Option<String>,
    /// The releases, in the order listed.
    pub releases: Vec<Release>,
    /// SHA-256 of its exact bytes (lowercase hex): what the host's floor
    /// keeps, so the same `created` with other bytes is known for a replay.
    pub sha256: String,
}

/// Why a channel is refused; each names the URL it was fetched from.
#[derive(PartialEq, Eq)]
pub enum ChannelError {
    /// Not the channel's shape, or a field malformed (kind `manifest`).
    Malformed {
        /// The channel's URL.
        url: String,
        /// The field (`releases[2].sha256`), or what the JSON reader said.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Valid for more than [`MAX_EXPIRES_DAYS`] after its `created` (kind
    /// `manifest`): `expires` is what bounds a frozen channel, and one
    /// that far away bounds nothing.
    ValidTooLong {
        /// The channel's URL.
        url: String,
        /// Its `created`.
        created: i64,
        /// Its `expires`.
        expires: i64,
    },
    /// Past its `expires` (kind `expired`).
    Expired {
        /// The channel's URL.
        url: String,
        /// Its `expires`.
        expires: i64,
        /// The host's clock.
        now: i64,
    },
    /// Dated more than a day ahead of the host's clock (kind `created_ahead`).
    CreatedAhead {
        /// The channel's URL.
        url: String,
        /// Its `created`.
        created: i64,
    },
    /// Behind one already verified from the same URL (older, or the same
    /// `created` with other bytes): a stale cache or a replay (kind
    /// `stale`).
    Stale {
        /// The channel's URL.
        url: String,
        /// Its `created`.
        created: i64,
        /// The newest seen from there.
        newest: i64,
        /// How it is behind.
        behind: Behind,
    },
    /// Another track's channel, or one without a track, where the host
    /// follows a track (kind `other_track`).
    OtherTrack {
        /// The channel's URL.
        url: String,
        /// The channel's `track`.
        found: Option<String>,
        /// The host's `update.track`.
        want: String,
    },
    /// The manifest is not the one the channel binds (kind `hash_mismatch`).
    ManifestMismatch {
        /// The manifest's URL.
        url: String,
        /// What the channel says (version, sha256).
        expected: String,
        /// What the manifest is.
        found: String,
    },
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ChannelError::*;
        let t = |s: &i64| format_rfc3339(*s);
        match self {
            Malformed { url, field, reason } => write!(f, "channel {url}: {field}: {reason}"),
            ValidTooLong {
                url,
                created,
                expires,
            } => write!(
                f,
                "channel {url}: expires {} is more than {MAX_EXPIRES_DAYS} days after created {}: a channel valid that long defeats expiry's protection against a frozen server",
                t(expires),
                t(created)
            ),
            Expired { url, expires, now } => write!(
                f,
                "channel {url}: expired at {} (now {})",
                t(expires),
                t(now)
            ),
            CreatedAhead { url, created } => write!(
                f,
                "channel {url}: created {} is more than a day ahead of this host's clock",
                t(created)
            ),
            Stale {
                url,
                created,
                newest,
                behind,
            } => write!(
                f,
                "channel {url}: created {} {} (created {}): {}",
                t(created),
                behind.describe(),
                t(newest),
                behind.cause()
            ),
            OtherTrack { url, found, want } => {
                let track = crate::manifest::describe_track(found.as_deref());
                write!(f, "channel {url}: is for {track}, this host follows track \"{want}\" (update.track): ")?;
                match found {
                    Some(_) => f.write_str("another track's channel is never acted on here (a server or mirror serving another track's file, or a wrong URL)"),
                    None => write!(f, "a channel of no track is not acted on by a host that follows one (`abupdate channel resign FILE --track {want}`)"),
                }
            }
            ManifestMismatch {
                url,
                expected,
                found,
            } => write!(
                f,
                "{url}: the channel binds {expected}, the manifest is {found}"
            ),
        }
    }
}

impl std::error::Error for ChannelError {}

// As its message: a derived `Debug` would add every name to the host binary.
impl fmt::Debug for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ChannelError {
    /// The stable label: the same as a manifest's refusal of the same kind.
    pub fn kind(&self) -> crate::error::Kind {
        use crate::error::Kind;
        match self {
            ChannelError::Malformed { .. } | ChannelError::ValidTooLong { .. } => Kind::Manifest,
            ChannelError::Expired { .. } => Kind::Expired,
            ChannelError::CreatedAhead { .. } => Kind::CreatedAhead,
            ChannelError::Stale { .. } => Kind::Stale,
            ChannelError::OtherTrack { .. } => Kind::OtherTrack,
            ChannelError::ManifestMismatch { .. } => Kind::HashMismatch,
        }
    }
}

impl Channel {
    /// Parse signed bytes from `url`: one reading (no key twice), format 1,
    /// `expires` after `created` and at most [`MAX_EXPIRES_DAYS`] after it,
    /// each release's version once, each `sha256` (optional: a pin) 64
    /// lowercase hex digits, each `manifest` non-empty.
    pub fn parse(url: &str, bytes: &[u8]) -> Result<Channel, ChannelError> {
        let ch = parse_fields(bytes).map_err(|(field, reason)| ChannelError::Malformed {
            url: url.to_string(),
            field,
            reason,
        })?;
        // Refused whatever the host's clock says: such a channel is never
        // acted on, so a frozen copy of it can never be either.
        if !within_validity(ch.created, ch.expires) {
            return Err(ChannelError::ValidTooLong {
                url: url.to_string(),
                created: ch.created,
                expires: ch.expires,
            });
        }
        Ok(ch)
    }
}

/// A malformed field: its path and what is wrong with it.
type FieldError = (String, &'static str);

fn parse_fields(bytes: &[u8]) -> Result<Channel, FieldError> {
    let json = |e: serde_json::Error| (e.to_string(), "not a channel document");
    if let Some(path) = crate::manifest::duplicate_key(bytes).map_err(json)? {
        return Err((path, "appears twice in its object"));
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(json)?;
    let top = |k: &str| raw.fields.get(k);
    let date = |k: &str| top(k).and_then(Value::as_str).map(parse_rfc3339);
    let flag = |v: Option<&Value>| v.map_or(Some(false), Value::as_bool);
    let list = top("releases").and_then(Value::as_array);
    let (Some(1), Some(Ok(created)), Some(Ok(expires)), Some(halt), Some(list)) = (
        top("format").and_then(Value::as_u64),
        date("created"),
        date("expires"),
        flag(top("halt")),
        list,
    ) else {
        return Err((
            "channel".into(),
            "needs format 1, created and expires (RFC 3339), releases (a list), halt true or false when given",
        ));
    };
    if expires <= created {
        return Err(("expires".into(), "not after created"));
    }
    let track = match top("track") {
        None => None,
        Some(t) => match t
            .as_str()
            .filter(|t| crate::manifest::check_track_name(t).is_ok())
        {
            Some(t) => Some(t.to_string()),
            None => return Err(("track".into(), "not 1 to 64 of A-Z a-z 0-9 . _ -")),
        },
    };
    let mut releases: Vec<Release> = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let at = |k: &str| format!("releases[{i}]{k}");
        let text = |k: &str| r.get(k).and_then(Value::as_str).filter(|t| !t.is_empty());
        let flag = |k: &str| flag(r.get(k));
        let (Some(version), Some(manifest), Some(barrier), Some(withdrawn)) = (
            text("version"),
            text("manifest"),
            flag("barrier"),
            flag("withdrawn"),
        ) else {
            return Err((
                at(""),
                "needs version and manifest (not empty), barrier and withdrawn true or false when given",
            ));
        };
        let sha256 = match r.get("sha256") {
            None => None,
            Some(h) => match h.as_str().filter(|h| crate::manifest::is_hex_sha256(h)) {
                Some(h) => Some(h.to_string()),
                None => return Err((at(".sha256"), "not 64 lowercase hex digits")),
            },
        };
        let Ok(version) = Version::parse(version) else {
            return Err((
                at(".version"),
                "not a dotted-number version (e.g. 2026.11.3)",
            ));
        };
        if releases.iter().any(|o| o.version == version) {
            return Err((at(".version"), "listed twice"));
        }
        releases.push(Release {
            version,
            manifest: manifest.into(),
            sha256,
            barrier,
            withdrawn,
        });
    }
    Ok(Channel {
        created,
        expires,
        halt,
        track,
        releases,
        sha256: crate::install::hex(&crate::manifest::sha2_digest(bytes)),
    })
}

/// What the host knows when it judges a channel's time: the same facts as
/// for a manifest ([`crate::manifest::HostFacts`]).
#[derive(Clone, Copy, Debug)]
pub struct TimeFacts<'a> {
    /// Now, by the host clock.
    pub now: i64,
    /// The newest `created` this host has verified anywhere (the clock's floor).
    pub newest_created_seen: Option<i64>,
    /// The floor kept for this channel's URL: the newest `created` verified
    /// from there and, when known, that channel's SHA-256.
    pub floor: Option<&'a Floor>,
}

/// Whether the channel may be believed now, in the manifest's order: not
/// dated ahead, not behind the floor of its URL
/// ([`crate::manifest::against_floor`]), not expired. `url` is the one it
/// was fetched from, for the refusal to name.
pub fn check_time(url: &str, ch: &Channel, t: &TimeFacts) -> Result<(), ChannelError> {
    let clock = t.now.max(t.newest_created_seen.unwrap_or(i64::MIN));
    let url = url.to_string();
    if ch.created > clock.saturating_add(MAX_CREATED_AHEAD) {
        return Err(ChannelError::CreatedAhead {
            url,
            created: ch.created,
        });
    }
    if let Err(behind) = crate::manifest::against_floor(ch.created, &ch.sha256, None, t.floor) {
        return Err(ChannelError::Stale {
            url,
            created: ch.created,
            newest: t.floor.map_or(ch.created, |f| f.created),
            behind,
        });
    }
    if ch.expires <= clock {
        return Err(ChannelError::Expired {
            url,
            expires: ch.expires,
            now: clock,
        });
    }
    Ok(())
}

/// What `abupdate channel` does (the operator's edit, `channel::edit` with the
/// `pack` feature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `add`: list the release whose manifest is at this path (creates the
    /// channel when there is none).
    Add {
        /// The release's `release.json`, inside the channel's directory.
        manifest: PathBuf,
        /// `--barrier`: hosts go through it, never past it.
        barrier: bool,
        /// `--pin`: bind the manifest's exact bytes (its SHA-256), for a
        /// frozen release nobody re-signs.
        pin: bool,
    },
    /// `unpin VERSION`: bind that release by its version only again.
    Unpin(String),
    /// `pin VERSION`: bind that release's manifest bytes as they are now
    /// (also a re-bind after its manifest was re-packed).
    Pin(String),
    /// `withdraw VERSION`.
    Withdraw(String),
    /// `prune VERSION`: drop every release below that listed one, barriers
    /// and releases it does not order (a version that does not parse) kept.
    Prune(String),
    /// `halt`: no host starts an install.
    Halt,
    /// `resume`: lift the halt.
    Resume,
    /// `resign`: new dates, same content.
    Resign,
}

/// Options of `abupdate channel`.
#[derive(Clone, Debug)]
pub struct Options {
    /// What to do.
    pub action: Action,
    /// The `channel.json` to edit.
    pub file: PathBuf,
    /// `--secret`: the keys that sign.
    pub secrets: Vec<PathBuf>,
    /// `--keys`: the hosts' trusted keys (default: the secrets' public halves).
    pub keys_dirs: Vec<PathBuf>,
    /// `--threshold`.
    pub threshold: usize,
    /// `--expires-days`: the new channel expires this long after `created`.
    pub expires_days: u64,
    /// `--track`: the track the channel indexes; set once (a new channel,
    /// or one without), never changed.
    pub track: Option<String>,
}

/// The host's choice from a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Install `releases[index]`.
    Install {
        /// Its index in [`Channel::releases`].
        index: usize,
        /// Why this one.
        why: Why,
    },
    /// The channel is halted: no install starts (trials still get their
    /// verdict: `health` never reads the channel).
    Halted,
    /// Nothing newer to go to.
    UpToDate {
        /// The booted release is withdrawn and no good release is newer.
        on_withdrawn: bool,
    },
    /// The lowest barrier above the booted release already failed here:
    /// the host stays (it may not go past it) until the channel lists a
    /// replacement barrier.
    FailedBarrier {
        /// Its index in [`Channel::releases`].
        index: usize,
    },
    /// The booted version is unknown: no release can be judged newer, and
    /// guessing "below every release" could downgrade across a barrier.
    BootedUnknown,
}

/// Why a release was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The lowest barrier above the booted release: go through it first.
    Barrier,
    /// The newest good release, no barrier in between.
    Newest,
    /// The booted release is withdrawn: move on to the next good one.
    LeaveWithdrawn,
}

/// The choice: halted → nothing starts; an unknown `booted` → nothing
/// (never a guess); otherwise among the releases newer than `booted` and
/// not withdrawn, the lowest barrier if there is one (stuck there when it
/// is in `failed`), else the newest not in `failed`; none → up to date.
/// Leaving a withdrawn release goes to the lowest good release above it
/// (its fix), unless a barrier comes first.
pub fn choose(ch: &Channel, booted: Option<&Version>, failed: &[Version]) -> Choice {
    if ch.halt {
        return Choice::Halted;
    }
    let Some(booted) = booted else {
        return Choice::BootedUnknown;
    };
    let mut on_withdrawn = false;
    // Indexes of the lowest barrier, the lowest and the newest candidate.
    let (mut barrier, mut lowest, mut newest) = (None::<usize>, None::<usize>, None::<usize>);
    let version = |i: Option<usize>| i.map(|i| &ch.releases[i].version);
    for (i, r) in ch.releases.iter().enumerate() {
        on_withdrawn |= r.withdrawn && *booted == r.version;
        if r.withdrawn || r.version <= *booted {
            continue;
        }
        if r.barrier && version(barrier).is_none_or(|v| r.version < *v) {
            barrier = Some(i);
        }
        if failed.contains(&r.version) {
            continue;
        }
        if version(lowest).is_none_or(|v| r.version < *v) {
            lowest = Some(i);
        }
        if version(newest).is_none_or(|v| r.version > *v) {
            newest = Some(i);
        }
    }
    let (chosen, why) = match (barrier, on_withdrawn) {
        (Some(index), _) if failed.contains(&ch.releases[index].version) => {
            return Choice::FailedBarrier { index }
        }
        (Some(i), _) => (Some(i), Why::Barrier),
        (None, true) => (lowest, Why::LeaveWithdrawn),
        (None, false) => (newest, Why::Newest),
    };
    match chosen {
        Some(index) => Choice::Install { index, why },
        None => Choice::UpToDate { on_withdrawn },
    }
}

/// Whether the channel withdraws `version` (a halt is no withdrawal).
pub fn withdraws(ch: &Channel, version: &Version) -> bool {
    ch.releases
        .iter()
        .any(|r| r.withdrawn && r.version == *version)
}

/// Why the channel no longer offers a release staged here (written,
/// verified, activated, its trial waiting for the reboot): the staged
/// trial is disarmed ([`staged`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unoffered {
    /// The channel is halted: no install starts, and a staged one is an
    /// install not yet started.
    Halted,
    /// The staged release is withdrawn.
    Withdrawn,
    /// The staged release failed here (on the failed list).
    Failed,
    /// A barrier between the booted and the staged release (`releases[index]`)
    /// must be gone through first.
    PastBarrier {
        /// Its index in [`Channel::releases`].
        index: usize,
    },
}

impl Unoffered {
    /// Why, for a person: "release 2.0 ... {this}" with the channel's URL.
    pub fn describe(&self, ch: &Channel, url: &str) -> String {
        match self {
            Unoffered::Halted => format!("the release channel {url} is halted"),
            Unoffered::Withdrawn => format!("is withdrawn from the release channel {url}"),
            Unoffered::Failed => "failed on this host before".into(),
            Unoffered::PastBarrier { index } => format!(
                "lies past barrier {} of the release channel {url}",
                ch.releases[*index].version
            ),
        }
    }
}

/// Whether the channel still offers `staged`, the release staged in the
/// other slot while `booted` runs: `None` keeps the staged trial as it is;
/// `Some(why)` disarms it. By the rules of [`choose`]: a halt disarms; an
/// unknown `booted` judges nothing (keeps: never a guess); a listed staged
/// release must not be withdrawn nor in `failed`, and no barrier (not
/// withdrawn) may lie between `booted` and it. It need not be the newest:
/// a newer release is installed over it by the normal flow. One the
/// channel does not list is kept: the channel never staged it (an
/// operator's `install URL`), and `channel` has no verb that unlists.
pub fn staged(
    ch: &Channel,
    booted: Option<&Version>,
    failed: &[Version],
    staged: &Version,
) -> Option<Unoffered> {
    if ch.halt {
        return Some(Unoffered::Halted);
    }
    let booted = booted?;
    let entry = ch.releases.iter().find(|r| r.version == *staged)?;
    if entry.withdrawn {
        return Some(Unoffered::Withdrawn);
    }
    if failed.contains(staged) {
        return Some(Unoffered::Failed);
    }
    let barrier = ch
        .releases
        .iter()
        .enumerate()
        .find(|(_, r)| r.barrier && !r.withdrawn && r.version > *booted && r.version < *staged);
    barrier.map(|(index, _)| Unoffered::PastBarrier { index })
}

/// The channel `ch` (fetched from `url`) indexes the track the host follows
/// (`want`; `None`: any). Checked before anything of it is believed, its
/// `created` included: another track's channel, re-signed later, must not
/// raise this URL's floor over the channel that belongs there.
pub fn check_track(url: &str, ch: &Channel, want: Option<&str>) -> Result<(), ChannelError> {
    let rule = want.map_or(TrackRule::Any, TrackRule::Exactly);
    crate::manifest::check_track(ch.track.as_deref(), rule).map_err(|(found, want)| {
        ChannelError::OtherTrack {
            url: url.to_string(),
            found: found.map(str::to_string),
            want: want.to_string(),
        }
    })
}

/// What a host that follows `want` requires of the `track` of a manifest
/// the channel names: any for a pinned release (the channel, itself of the
/// host's track, binds its exact bytes, whatever they say), else exactly
/// `want`.
pub fn manifest_track<'a>(release: &Release, want: Option<&'a str>) -> TrackRule<'a> {
    match want {
        Some(want) if release.sha256.is_none() => TrackRule::Exactly(want),
        _ => TrackRule::Any,
    }
}

/// The manifest at `url` is the one `release` binds: it states
/// `release.version` and, when the release is pinned, its exact bytes hash
/// to `release.sha256`. Unpinned, the manifest's own signature, expiry and
/// `created` floor guard it (re-signed by `abupdate fleet` on each wave).
pub fn bind(url: &str, release: &Release, m: &Manifest) -> Result<(), ChannelError> {
    let pinned = release.sha256.as_ref();
    if m.version == release.version && pinned.is_none_or(|h| *h == m.sha256) {
        return Ok(());
    }
    let hash = |h: &str| format!(" sha256 {h}");
    Err(ChannelError::ManifestMismatch {
        url: url.to_string(),
        expected: format!(
            "{}{}",
            release.version,
            pinned.map(|h| hash(h)).unwrap_or_default()
        ),
        found: format!("{}{}", m.version, hash(&m.sha256)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FloorBytes;

    const H: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// A channel of (version, barrier, withdrawn).
    fn ch(halt: bool, rs: &[(&str, bool, bool)]) -> Channel {
        Channel {
            created: 1000,
            expires: 2000,
            halt,
            track: None,
            releases: rs
                .iter()
                .map(|(v, barrier, withdrawn)| Release {
                    version: Version::parse(v).expect("version"),
                    manifest: format!("{v}/release.json"),
                    sha256: Some(H.into()),
                    barrier: *barrier,
                    withdrawn: *withdrawn,
                })
                .collect(),
            sha256: H.into(),
        }
    }

    fn pick(c: &Channel, booted: Option<&str>) -> Choice {
        pick_failed(c, booted, &[])
    }

    fn pick_failed(c: &Channel, booted: Option<&str>, failed: &[&str]) -> Choice {
        let v = |v: &str| Version::parse(v).expect("version");
        let failed: Vec<Version> = failed.iter().map(|f| v(f)).collect();
        choose(c, booted.map(v).as_ref(), &failed)
    }

    fn install(c: &Channel, booted: Option<&str>) -> (String, Why) {
        install_failed(c, booted, &[])
    }

    fn install_failed(c: &Channel, booted: Option<&str>, failed: &[&str]) -> (String, Why) {
        match pick_failed(c, booted, failed) {
            Choice::Install { index, why } => (c.releases[index].version.to_string(), why),
            other => panic!("expected an install, got {other:?}"),
        }
    }

    #[test]
    fn below_a_barrier_the_host_goes_to_the_lowest_barrier_above_it() {
        let c = ch(
            false,
            &[
                ("1.0", false, false),
                ("3.0", true, false),
                ("2.0", true, false),
                ("4.0", false, false),
            ],
        );
        assert_eq!(install(&c, Some("1.0")), ("2.0".into(), Why::Barrier));
        assert_eq!(install(&c, Some("2.0")), ("3.0".into(), Why::Barrier));
        assert_eq!(install(&c, Some("3.0")), ("4.0".into(), Why::Newest));
    }

    #[test]
    fn an_unknown_booted_version_chooses_nothing_never_the_lowest_barrier() {
        let c = ch(false, &[("2.0", true, false), ("3.0", false, false)]);
        assert_eq!(pick(&c, None), Choice::BootedUnknown);
        assert_eq!(pick(&ch(true, &[]), None), Choice::Halted);
    }

    #[test]
    fn a_failed_release_is_skipped_like_a_withdrawn_one() {
        let c = ch(
            false,
            &[
                ("2.1", false, true),
                ("2.2", false, false),
                ("3.0", false, false),
            ],
        );
        // Back on the withdrawn 2.1 after 2.2 was rolled back: not 2.2 again.
        assert_eq!(
            install_failed(&c, Some("2.1"), &["2.2"]),
            ("3.0".into(), Why::LeaveWithdrawn)
        );
    }

    #[test]
    fn a_failed_newest_leaves_the_host_up_to_date() {
        let c = ch(false, &[("2.1", false, true), ("2.2", false, false)]);
        assert_eq!(
            pick_failed(&c, Some("2.1"), &["2.2"]),
            Choice::UpToDate { on_withdrawn: true }
        );
        let c = ch(false, &[("1.0", false, false), ("2.0", false, false)]);
        assert_eq!(
            pick_failed(&c, Some("1.0"), &["2.0"]),
            Choice::UpToDate {
                on_withdrawn: false
            }
        );
    }

    #[test]
    fn a_failed_barrier_holds_the_host_below_it_never_past_it() {
        let c = ch(
            false,
            &[
                ("1.0", false, false),
                ("2.0", true, false),
                ("3.0", false, false),
            ],
        );
        assert_eq!(
            pick_failed(&c, Some("1.0"), &["2.0"]),
            Choice::FailedBarrier { index: 1 }
        );
    }

    #[test]
    fn without_a_barrier_in_between_the_newest_is_chosen() {
        let c = ch(
            false,
            &[
                ("1.0", true, false),
                ("2.0", false, false),
                ("3.0", false, false),
            ],
        );
        assert_eq!(install(&c, Some("1.0")), ("3.0".into(), Why::Newest));
    }

    #[test]
    fn a_withdrawn_release_is_never_chosen_even_as_newest_or_barrier() {
        let c = ch(
            false,
            &[
                ("1.0", false, false),
                ("2.0", true, true),
                ("2.1", false, false),
                ("3.0", false, true),
            ],
        );
        assert_eq!(install(&c, Some("1.0")), ("2.1".into(), Why::Newest));
        assert_eq!(
            pick(&c, Some("2.1")),
            Choice::UpToDate {
                on_withdrawn: false
            }
        );
    }

    #[test]
    fn a_host_on_a_withdrawn_release_moves_to_the_next_good_one() {
        let c = ch(
            false,
            &[
                ("2.0", false, false),
                ("2.1", false, true),
                ("2.2", false, false),
                ("3.0", false, false),
            ],
        );
        assert_eq!(
            install(&c, Some("2.1")),
            ("2.2".into(), Why::LeaveWithdrawn)
        );
    }

    #[test]
    fn a_host_on_a_withdrawn_release_still_stops_at_a_barrier() {
        let c = ch(
            false,
            &[
                ("2.1", false, true),
                ("2.5", false, false),
                ("2.2", true, false),
            ],
        );
        assert_eq!(install(&c, Some("2.1")), ("2.2".into(), Why::Barrier));
    }

    #[test]
    fn on_a_withdrawn_release_with_nothing_newer_the_host_stays_and_says_so() {
        let c = ch(false, &[("2.0", false, false), ("2.1", false, true)]);
        assert_eq!(
            pick(&c, Some("2.1")),
            Choice::UpToDate { on_withdrawn: true }
        );
    }

    #[test]
    fn a_halted_channel_starts_no_install() {
        let c = ch(true, &[("1.0", false, false), ("2.0", true, false)]);
        assert_eq!(pick(&c, Some("1.0")), Choice::Halted);
    }

    #[test]
    fn nothing_newer_is_up_to_date() {
        let c = ch(false, &[("1.0", false, false), ("2.0", false, false)]);
        assert_eq!(
            pick(&c, Some("2.0")),
            Choice::UpToDate {
                on_withdrawn: false
            }
        );
        assert_eq!(
            pick(&c, Some("2.0.0")),
            Choice::UpToDate {
                on_withdrawn: false
            }
        );
        assert_eq!(
            pick(&ch(false, &[]), Some("1.0")),
            Choice::UpToDate {
                on_withdrawn: false
            }
        );
    }

    #[test]
    fn only_a_withdrawn_entry_withdraws_a_version_never_a_halt() {
        let v = |v: &str| Version::parse(v).expect("version");
        let c = ch(true, &[("2.0", false, false), ("2.1", false, true)]);
        assert!(withdraws(&c, &v("2.1")));
        assert!(withdraws(&c, &v("2.1.0")), "compared as versions");
        assert!(!withdraws(&c, &v("2.0")), "halted, not withdrawn");
        assert!(!withdraws(&c, &v("3.0")), "not listed");
    }

    fn staged_of(c: &Channel, booted: Option<&str>, failed: &[&str], s: &str) -> Option<Unoffered> {
        let v = |v: &str| Version::parse(v).expect("version");
        let failed: Vec<Version> = failed.iter().map(|f| v(f)).collect();
        staged(c, booted.map(v).as_ref(), &failed, &v(s))
    }

    #[test]
    fn a_staged_release_still_listed_and_good_stays_armed() {
        let c = ch(false, &[("1.0", false, false), ("2.0", false, false)]);
        assert_eq!(staged_of(&c, Some("1.0"), &[], "2.0"), None);
        let newer = ch(false, &[("2.0", false, false), ("3.0", false, false)]);
        assert_eq!(
            staged_of(&newer, Some("1.0"), &[], "2.0"),
            None,
            "a newer release goes over it by the normal flow"
        );
        let at_barrier = ch(false, &[("2.0", true, false), ("3.0", false, false)]);
        assert_eq!(staged_of(&at_barrier, Some("1.0"), &[], "2.0"), None);
    }

    #[test]
    fn a_halt_disarms_a_staged_release() {
        let c = ch(true, &[("2.0", false, false)]);
        assert_eq!(
            staged_of(&c, Some("1.0"), &[], "2.0"),
            Some(Unoffered::Halted)
        );
        assert_eq!(
            staged_of(&c, None, &[], "2.0"),
            Some(Unoffered::Halted),
            "a halt needs no booted version"
        );
    }

    #[test]
    fn an_unknown_booted_version_keeps_the_staged_release_armed() {
        let c = ch(false, &[("2.0", false, true)]);
        assert_eq!(staged_of(&c, None, &[], "2.0"), None);
    }

    #[test]
    fn a_withdrawn_staged_release_is_disarmed() {
        let c = ch(false, &[("2.0", false, true), ("2.1", false, false)]);
        assert_eq!(
            staged_of(&c, Some("1.0"), &[], "2.0"),
            Some(Unoffered::Withdrawn)
        );
    }

    #[test]
    fn a_staged_release_the_channel_does_not_list_stays_armed() {
        // An operator's `install URL`: not the channel's to disarm.
        let c = ch(false, &[("3.0", false, false)]);
        assert_eq!(staged_of(&c, Some("1.0"), &[], "2.0"), None);
        let halted = ch(true, &[("3.0", false, false)]);
        assert_eq!(
            staged_of(&halted, Some("1.0"), &[], "2.0"),
            Some(Unoffered::Halted),
            "a halt stops every install"
        );
    }

    #[test]
    fn a_staged_release_on_the_failed_list_is_disarmed() {
        let c = ch(false, &[("2.0", false, false)]);
        assert_eq!(
            staged_of(&c, Some("1.0"), &["2.0"], "2.0"),
            Some(Unoffered::Failed)
        );
    }

    #[test]
    fn a_staged_release_past_a_barrier_is_disarmed_and_the_barrier_named() {
        let c = ch(
            false,
            &[
                ("1.5", true, true),
                ("1.8", true, false),
                ("2.0", false, false),
            ],
        );
        let why = staged_of(&c, Some("1.0"), &[], "2.0");
        assert_eq!(why, Some(Unoffered::PastBarrier { index: 1 }));
        let text = why
            .expect("disarmed")
            .describe(&c, "https://x/channel.json");
        assert!(
            text.contains("barrier 1.8 of the release channel https://x/channel.json"),
            "{text}"
        );
        assert_eq!(
            staged_of(&c, Some("1.8"), &[], "2.0"),
            None,
            "a barrier at or below the booted release is passed"
        );
    }

    fn manifest(version: &str) -> Manifest {
        let text = format!(
            r#"{{"format":1,"compatible":"acme","version":"{version}","created":"2026-11-20T10:00:00Z",
            "expires":"2027-01-20T10:00:00Z",
            "images":{{"rootfs":{{"url":"rootfs.img","size":4096,"sha256":"{H}"}}}}}}"#
        );
        Manifest::parse(text.as_bytes()).expect("manifest")
    }

    #[test]
    fn a_manifest_is_bound_only_by_its_hash_and_its_version() {
        let m = manifest("2.0");
        let mut r = ch(false, &[("2.0", false, false)]).releases.remove(0);
        r.sha256 = Some(m.sha256.clone());
        assert_eq!(bind("u", &r, &m), Ok(()));
        let other = manifest("2.0.1");
        let e = bind("u", &r, &other).expect_err("another manifest");
        assert_eq!(e.kind(), crate::error::Kind::HashMismatch);
        r.version = Version::parse("2.1").expect("version");
        let e = bind("u", &r, &m).expect_err("same bytes, other version");
        assert!(e.to_string().contains("binds 2.1"), "{e}");
    }

    #[test]
    fn an_unpinned_release_is_bound_by_its_version_only() {
        let mut r = ch(false, &[("2.0", false, false)]).releases.remove(0);
        r.sha256 = None;
        // Any bytes of 2.0 (the same release re-signed by `fleet`).
        assert_eq!(bind("u", &r, &manifest("2.0")), Ok(()));
        let e = bind("u", &r, &manifest("2.0.1")).expect_err("another version");
        assert_eq!(e.kind(), crate::error::Kind::HashMismatch);
        assert!(
            e.to_string()
                .contains("binds 2.0, the manifest is 2.0.1 sha256"),
            "{e}"
        );
    }

    #[test]
    fn a_channel_of_another_track_or_none_is_refused_where_one_is_required() {
        let c = |track: Option<&str>| Channel {
            track: track.map(str::to_string),
            ..ch(false, &[])
        };
        assert_eq!(check_track("u", &c(Some("stable")), Some("stable")), Ok(()));
        assert_eq!(check_track("u", &c(Some("beta")), None), Ok(()));
        assert_eq!(check_track("u", &c(None), None), Ok(()));
        let e = check_track("https://m/ch.json", &c(Some("beta")), Some("stable"))
            .expect_err("beta at stable's URL");
        assert_eq!(e.kind(), crate::error::Kind::OtherTrack);
        assert_eq!(
            e.to_string(),
            "channel https://m/ch.json: is for track \"beta\", this host follows track \"stable\" (update.track): another track's channel is never acted on here (a server or mirror serving another track's file, or a wrong URL)"
        );
        let e = check_track("u", &c(None), Some("stable")).expect_err("no track");
        assert!(
            e.to_string().ends_with("is for no track, this host follows track \"stable\" (update.track): a channel of no track is not acted on by a host that follows one (`abupdate channel resign FILE --track stable`)"),
            "{e}"
        );
    }

    #[test]
    fn a_pinned_release_needs_no_track_of_its_manifest_an_unpinned_one_the_hosts() {
        let mut r = ch(false, &[("2.0", false, false)]).releases.remove(0);
        assert_eq!(manifest_track(&r, Some("stable")), TrackRule::Any, "pinned");
        assert_eq!(manifest_track(&r, None), TrackRule::Any);
        r.sha256 = None;
        assert_eq!(
            manifest_track(&r, Some("stable")),
            TrackRule::Exactly("stable")
        );
        assert_eq!(manifest_track(&r, None), TrackRule::Any);
    }

    #[test]
    fn a_channels_track_is_parsed_and_a_malformed_one_named() {
        let c = Channel::parse(
            "u",
            doc(r#""track":"edge.beta-2","releases":[]"#).as_bytes(),
        )
        .expect("parses");
        assert_eq!(c.track.as_deref(), Some("edge.beta-2"));
        assert_eq!(
            Channel::parse("u", doc(r#""releases":[]"#).as_bytes()).map(|c| c.track),
            Ok(None)
        );
        for bad in [r#""track":"""#, r#""track":"a b""#, r#""track":7"#] {
            let e = Channel::parse("u", doc(&format!(r#"{bad},"releases":[]"#)).as_bytes())
                .expect_err(bad);
            assert!(
                e.to_string().starts_with("channel u: track: not 1 to 64"),
                "{e}"
            );
        }
    }

    fn doc(body: &str) -> String {
        format!(
            r#"{{"format":1,"created":"2026-11-20T10:00:00Z","expires":"2027-01-20T10:00:00Z",{body}}}"#
        )
    }

    #[test]
    fn a_channel_parses_with_defaults_for_its_flags() {
        let text = doc(&format!(
            r#""releases":[{{"version":"2.0","manifest":"2.0/release.json","sha256":"{H}","barrier":true}}]"#
        ));
        let c = Channel::parse("u", text.as_bytes()).expect("parses");
        assert!(!c.halt);
        assert!(c.releases[0].barrier && !c.releases[0].withdrawn);
        assert_eq!(c.releases[0].sha256.as_deref(), Some(H));
        let unpinned = doc(r#""releases":[{"version":"2.0","manifest":"m"}]"#);
        let c = Channel::parse("u", unpinned.as_bytes()).expect("unpinned parses");
        assert_eq!(c.releases[0].sha256, None);
        assert!(c.expires > c.created);
    }

    #[test]
    fn a_malformed_channel_is_refused_naming_the_field() {
        let rel = |v: &str, h: &str, m: &str| {
            format!(r#"{{"version":"{v}","manifest":"{m}","sha256":"{h}"}}"#)
        };
        for (body, want) in [
            (
                format!(r#""releases":[{}]"#, rel("x", H, "m")),
                "dotted-number",
            ),
            (
                format!(r#""releases":[{}]"#, rel("1", "AB", "m")),
                "releases[0].sha256",
            ),
            (
                format!(r#""releases":[{}]"#, rel("1", H, "")),
                "releases[0]: needs",
            ),
            (
                format!(
                    r#""releases":[{},{}]"#,
                    rel("1", H, "a"),
                    rel("1.0", H, "b")
                ),
                "releases[1].version: listed twice",
            ),
            (
                r#""halt":true,"halt":false,"releases":[]"#.into(),
                "halt: appears twice",
            ),
            (r#""halt":true"#.into(), "channel: needs"),
            (r#""halt":1,"releases":[]"#.into(), "halt true or false"),
        ] {
            let e = Channel::parse("https://x/c.json", doc(&body).as_bytes()).expect_err(&body);
            assert_eq!(e.kind(), crate::error::Kind::Manifest);
            assert!(e.to_string().contains(want), "{e} lacks {want}");
            assert!(
                e.to_string().starts_with("channel https://x/c.json: "),
                "{e}"
            );
        }
        let swapped = r#"{"format":1,"created":"2027-01-20T10:00:00Z","expires":"2026-11-20T10:00:00Z","releases":[]}"#;
        let e = Channel::parse("u", swapped.as_bytes()).expect_err("swapped dates");
        assert!(e.to_string().contains("expires"), "{e}");
        let v2 = doc(r#""releases":[]"#).replace("\"format\":1", "\"format\":2");
        assert!(Channel::parse("u", v2.as_bytes()).is_err());
    }

    #[test]
    fn a_channel_valid_3650_days_is_accepted_and_one_second_more_is_refused() {
        // 3650 days after 2026-11-20T10:00:00Z (three leap days between).
        let at = |expires: &str| doc(r#""releases":[]"#).replace("2027-01-20T10:00:00Z", expires);
        let c = Channel::parse("u", at("2036-11-17T10:00:00Z").as_bytes()).expect("3650 days");
        assert_eq!(c.expires - c.created, 3650 * 86_400);
        let e = Channel::parse("https://x/c.json", at("2036-11-17T10:00:01Z").as_bytes())
            .expect_err("3650 days and a second");
        assert_eq!(e.kind(), crate::error::Kind::Manifest);
        assert_eq!(
            e.to_string(),
            "channel https://x/c.json: expires 2036-11-17T10:00:01Z is more than 3650 days after created 2026-11-20T10:00:00Z: a channel valid that long defeats expiry's protection against a frozen server"
        );
        let e = Channel::parse("u", at("9999-12-31T23:59:59Z").as_bytes()).expect_err("year 9999");
        assert!(
            e.to_string().contains("expires 9999-12-31T23:59:59Z"),
            "{e}"
        );
    }

    fn facts(now: i64, floor: Option<i64>, source: Option<i64>) -> TimeFacts<'static> {
        TimeFacts {
            now,
            newest_created_seen: floor,
            floor: source.map(|created| {
                &*Box::leak(Box::new(Floor {
                    created,
                    bytes: FloorBytes::Unknown,
                    version: None,
                }))
            }),
        }
    }

    #[test]
    fn a_channel_in_its_time_is_believed() {
        let c = ch(false, &[]);
        assert_eq!(check_time("u", &c, &facts(1500, None, Some(1000))), Ok(()));
    }

    #[test]
    fn an_expired_channel_is_refused_even_under_a_clock_set_back() {
        let c = ch(false, &[]);
        let e = check_time("u", &c, &facts(2000, None, None)).expect_err("expired");
        assert_eq!(e.kind(), crate::error::Kind::Expired);
        let e = check_time("u", &c, &facts(10, Some(2500), None)).expect_err("floor");
        assert_eq!(e.kind(), crate::error::Kind::Expired);
    }

    #[test]
    fn a_channel_older_than_the_newest_from_its_url_is_a_replay() {
        let c = ch(false, &[]);
        let e = check_time("u", &c, &facts(1500, None, Some(1001))).expect_err("stale");
        assert_eq!(e.kind(), crate::error::Kind::Stale);
    }

    #[test]
    fn a_channel_with_its_urls_created_and_other_bytes_is_a_replay() {
        let c = ch(false, &[]);
        let seen = |sha256: &str| Floor {
            created: c.created,
            bytes: FloorBytes::Known(sha256.into()),
            version: None,
        };
        let t = |floor| TimeFacts {
            now: 1500,
            newest_created_seen: None,
            floor,
        };
        let other = seen(&"b".repeat(64));
        let e = check_time("https://m/cache/channel.json", &c, &t(Some(&other)))
            .expect_err("same created, other bytes");
        assert_eq!(e.kind(), crate::error::Kind::Stale);
        assert_eq!(e.to_string(), "channel https://m/cache/channel.json: created 1970-01-01T00:16:40Z is that of another document with other bytes this host already verified from there (created 1970-01-01T00:16:40Z): a replay, or a re-sign that did not advance created; nothing from there is acted on until one with a newer created");
        // The same bytes again, or a floor that kept no bytes (an older
        // state file): the same channel.
        let same = seen(H);
        assert_eq!(check_time("u", &c, &t(Some(&same))), Ok(()));
        assert_eq!(
            check_time("u", &c, &facts(1500, None, Some(c.created))),
            Ok(())
        );
    }

    #[test]
    fn a_channel_dated_more_than_a_day_ahead_is_not_believed() {
        let c = ch(false, &[]);
        let e = check_time("u", &c, &facts(1000 - MAX_CREATED_AHEAD - 1, None, None))
            .expect_err("ahead");
        assert_eq!(e.kind(), crate::error::Kind::CreatedAhead);
    }
}
