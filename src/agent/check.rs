//! `check`: fetch the manifest through the trust gate and judge it, once.
//!
//! Invariant: `check` and `install` make one judgement of a verified
//! manifest ([`judge`], i.e. [`manifest::evaluate`] on this host's facts),
//! so `check` never offers what `install` refuses before touching a
//! device; and an install judges it once, under the state lock it then
//! writes with ([`super::install`]). Through a release channel, a staged
//! trial the channel no longer offers is judged first
//! ([`channel::staged`]): the judgement is then "disarm it"
//! (`Nothing::Unoffered`), acted on by the install under its lock; a
//! channel not fetched or not believed is an error and disarms nothing.

use super::Host;
use crate::channel::{self, Choice};
use crate::error::{Error, Result};
use crate::fetch::Validators;
use crate::manifest::{self, HostFacts, NotApplicable, TrackRule, Version};
use crate::rollout::{self, Standing};
use crate::slot::SlotName;
use crate::state::{LastCheck, Phase, State, StateDir, StateLock, Transaction};
use crate::timefmt::now;
use crate::trust::gate::{self, Verified};

/// Why there is nothing to do: the `reason` of `check --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoUpdate {
    /// The server answered 304: the manifest that did not apply last time.
    NotModified,
    /// The release is not newer than the booted one.
    NotNewer,
    /// The release already failed here.
    PreviouslyFailed,
    /// An operator cancelled the release here while it was staged: the
    /// timer does not take it again (an `install` by hand does).
    Cancelled,
    /// The release applies, but its rollout has not reached this host.
    WaitingForWave,
    /// The booted release is on probation: nothing is fetched or written
    /// until it ends (the other slot is its fallback).
    OnProbation,
    /// The release channel is halted: no install starts.
    Halted,
    /// The booted release is withdrawn from the release channel and it
    /// lists no good release newer.
    OnWithdrawn,
    /// The release applies, but the timer downloads only inside
    /// `[update] download_windows` (`update` only): the run started
    /// outside them, or its download stopped where its window closed (the
    /// write stays `writing`, the next run inside a window resumes it).
    WaitingForDownloadWindow,
    /// A release is staged (its trial waits for the reboot) and the
    /// release channel no longer offers it (withdrawn, halted, failed
    /// here, past a barrier): `update` disarms it (`check` only says so).
    StagedNotOffered,
}

/// The outcome of `check`.
#[derive(Debug)]
pub enum CheckOutcome {
    /// A verified release applies to this host (and its wave includes it).
    Available {
        /// The release.
        verified: Box<Verified>,
        /// Where the host stands in its rollout, when the rollout applies.
        standing: Option<Standing>,
    },
    /// Nothing to do, and why.
    UpToDate {
        /// Why, for a person.
        reason: String,
        /// Why, as a stable label.
        kind: NoUpdate,
        /// Where the host stands in its rollout, when the rollout applies.
        standing: Option<Standing>,
    },
}

/// What `check` takes into account besides the manifest.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Accept a release that is not newer than the booted one.
    pub allow_downgrade: bool,
    /// Apply the staged rollout (the timer's runs do; a manual install
    /// is the operator's own decision and does not).
    pub rollout: bool,
    /// An operator's `install`: a release they cancelled is theirs to
    /// take again (the timer's runs and `check` hold it).
    pub by_hand: bool,
}

/// A fetched manifest, judged for this host.
#[derive(Debug)]
pub(super) enum Judged {
    /// The release applies (and its wave includes this host).
    Applies {
        verified: Box<Verified>,
        standing: Option<Standing>,
    },
    /// Nothing to do.
    Nothing(Nothing),
    /// A refusal that will not fix itself ([`NotApplicable::is_fault`]):
    /// an error, once the state is saved.
    Fault(NotApplicable),
}

/// Why a judged release is not installed: the ordinary answer of most
/// checks.
#[derive(Debug)]
pub(super) enum Nothing {
    /// Unchanged (304), or its wave has not come.
    UpToDate {
        reason: String,
        kind: NoUpdate,
        standing: Option<Standing>,
    },
    /// Verified but not wanted here (not newer, failed before): what an
    /// `install` of it is refused with.
    NotWanted {
        why: NotApplicable,
        standing: Option<Standing>,
    },
    /// The staged trial `staged` is a release the channel no longer
    /// offers (`why`, one line naming the release, its slot and the
    /// channel's URL): what `update` disarms.
    Unoffered { staged: Transaction, why: String },
    /// That staged trial was disarmed (by `update` or `install`): the
    /// release and the line that says so.
    Disarmed { version: String, line: String },
}

impl Nothing {
    /// As `check` and `update` say it: (reason, kind, standing).
    pub(super) fn explain(self) -> (String, NoUpdate, Option<Standing>) {
        match self {
            Nothing::UpToDate {
                reason,
                kind,
                standing,
            } => (reason, kind, standing),
            Nothing::NotWanted { why, standing } => {
                let kind = match why {
                    NotApplicable::PreviouslyFailed { .. } => NoUpdate::PreviouslyFailed,
                    NotApplicable::Cancelled { .. } => NoUpdate::Cancelled,
                    _ => NoUpdate::NotNewer,
                };
                (why.to_string(), kind, standing)
            }
            Nothing::Unoffered { why, .. } => (
                format!("{why}: the next update disarms it"),
                NoUpdate::StagedNotOffered,
                None,
            ),
            Nothing::Disarmed { line, .. } => (line, NoUpdate::StagedNotOffered, None),
        }
    }
}

impl Judged {
    /// What `check` says: a fault is an error, the rest an outcome.
    fn into_outcome(self) -> Result<CheckOutcome> {
        match self {
            Judged::Applies { verified, standing } => {
                Ok(CheckOutcome::Available { verified, standing })
            }
            Judged::Nothing(n) => {
                let (reason, kind, standing) = n.explain();
                Ok(CheckOutcome::UpToDate {
                    reason,
                    kind,
                    standing,
                })
            }
            Judged::Fault(na) => Err(Error::NotApplicable(na)),
        }
    }
}

/// Why nothing is checked while the booted release is on probation (the
/// other slot is its fallback); `None` when none is.
pub(super) fn on_probation(state: &State) -> Option<String> {
    state.on_probation().map(|p| {
        format!(
            "{} in slot {} is on probation until {} ({} failures so far); slot {} is its fallback",
            p.version,
            p.slot,
            crate::timefmt::format_rfc3339(p.until),
            p.failures,
            p.slot.other()
        )
    })
}

/// Fetch and judge the release at `location` (or the configured URL). It
/// writes only its bookkeeping (validators, dates seen, counters), and
/// only when no other instance holds the lock.
pub fn check(host: &Host, location: Option<&str>, opts: CheckOptions) -> Result<CheckOutcome> {
    let location = host.release_location(location)?;
    let mut state = host.state_dir.load()?;
    if let Some(why) = on_probation(&state) {
        return Ok(CheckOutcome::UpToDate {
            reason: why,
            kind: NoUpdate::OnProbation,
            standing: None,
        });
    }
    let judged = fetch_and_judge(host, &mut state, &location, opts);
    save_if_unlocked(&host.state_dir, &state)?;
    judged?.into_outcome()
}

/// Fetch the manifest at `location` through the trust gate and judge it,
/// keeping in `state` what the judgement teaches (the dates it may
/// believe, the validators of a manifest that does not apply). The caller
/// saves the state, on an error too (a channel's believed `created` is its
/// floor even when the manifest it points to is then refused), and then
/// acts on the judgement.
// Long on purpose: one pass from the source (the channel's choice, or the
// URL) to one judgement, each step feeding the next: fetch, bind to the
// channel, judge, rollout, bookkeeping.
pub(super) fn fetch_and_judge(
    host: &Host,
    state: &mut State,
    location: &str,
    opts: CheckOptions,
) -> Result<Judged> {
    let booted = host.booted_slot()?;
    let transport = host.transport()?;
    let booted_version_text = host.booted_version(state, booted);
    let placed = booted_release(
        booted_version_text.as_deref(),
        state.slot(booted).version.as_deref(),
    );
    // Through a channel: the manifest it chooses, bound to its entry.
    let (location, pin) = match host.is_channel(location) {
        false => {
            // The timer's judgement (`check`, `update`) of a manifest's
            // version needs the booted one, as the channel's does; an
            // operator's `install` of a manifest is theirs to make.
            if let (Err(found), false) = (&placed, opts.by_hand) {
                return Err(unplaced(host, found, false));
            }
            (location.to_string(), None)
        }
        true => match through_channel(host, state, &transport, location, &placed, opts.by_hand)? {
            Ok((manifest, release)) => (manifest, Some(release)),
            Err(nothing) => return Ok(Judged::Nothing(nothing)),
        },
    };
    let location = location.as_str();
    // Conditional GET only for the configured URL: an answer of 304 then
    // means "the same manifest that did not apply last time". Not through
    // a channel: its binding is checked on the bytes themselves.
    let clock = now().max(state.newest_created.unwrap_or(i64::MIN));
    let previous = state
        .last_check
        .as_ref()
        .filter(|c| {
            c.url == crate::fetch::redact_url(location)
                && pin.is_none()
                && !opts.allow_downgrade
                && c.booted_version == booted_version_text
        })
        .filter(|c| c.expires.is_none_or(|e| e > clock))
        .map(|c| Validators {
            etag: c.etag.clone(),
            last_modified: c.last_modified.clone(),
        });
    state.metrics.last_check = Some(now());
    let source = host.release_source(location);
    let Some(verified) = gate::fetch_verified(&transport, &source, previous.as_ref())? else {
        return Ok(Judged::Nothing(Nothing::UpToDate {
            reason: "release manifest unchanged since the last check".into(),
            kind: NoUpdate::NotModified,
            standing: None,
        }));
    };
    if let Some(release) = &pin {
        channel::bind(
            &crate::fetch::redact(verified.source()),
            release,
            verified.manifest(),
        )?;
    }
    // What the manifest's track must be: the host's, for its configured
    // `url` and for what its channel names unless the channel pins the
    // manifest's bytes; not another one, for a URL given by hand (a
    // manifest of no track, a USB stick's, is the operator's to take).
    let track = host.config.update.track.as_deref();
    let track = match (&pin, track) {
        (_, None) => TrackRule::Any,
        (Some(release), track) => channel::manifest_track(release, track),
        (None, Some(t)) if host.is_configured_url(location) => TrackRule::Exactly(t),
        (None, Some(t)) => TrackRule::NotOther(t),
    };
    let verdict = judge(
        host,
        state,
        &verified,
        booted,
        placed.as_ref().ok(),
        track,
        opts,
    );
    let standing = match opts.rollout {
        true => Some(
            rollout::decide(
                verified.manifest().doc.rollout.as_ref(),
                host.position(),
                now(),
            )
            .map_err(|e| {
                Error::Manifest(manifest::ManifestError::Field {
                    field: "rollout".into(),
                    reason: e,
                })
            })?,
        ),
        false => None,
    };
    // A refusal that will not fix itself (`NotApplicable::is_fault`: an
    // expired, stale or far-future manifest, other hardware, a release this
    // host cannot install) is an error, so the timer's unit fails, the host
    // backs off and monitoring sees it; and its validators are not kept, so
    // a 304 cannot turn it into "nothing new".
    state.last_check = match &verdict {
        // The URL as shown, its credentials left out of `state.json`
        // (others may read it; found from outside).
        Err(na) if !na.is_fault() => Some(LastCheck {
            url: crate::fetch::redact_url(location),
            at: now(),
            etag: verified.validators().etag.clone(),
            last_modified: verified.validators().last_modified.clone(),
            expires: Some(verified.manifest().expires),
            booted_version: booted_version_text,
            ..Default::default()
        }),
        _ => None,
    };
    Ok(match verdict {
        Err(na) if na.is_fault() => Judged::Fault(na),
        Err(why) => Judged::Nothing(Nothing::NotWanted { why, standing }),
        Ok(()) => match standing {
            Some(s) if !s.included => Judged::Nothing(Nothing::UpToDate {
                reason: format!(
                    "release {} waits for this host's wave: {}",
                    verified.manifest().version,
                    s.reason.clone().unwrap_or_default()
                ),
                kind: NoUpdate::WaitingForWave,
                standing: Some(s),
            }),
            standing => Judged::Applies {
                verified: Box::new(verified),
                standing,
            },
        },
    })
}

/// Fetch the channel at `url` through the trust gate and judge its time
/// ([`channel::check_time`]), recording a `created` this host may believe
/// (as for a manifest): the channel when it may be acted on.
fn believed_channel(
    host: &Host,
    state: &mut State,
    transport: &crate::fetch::Transport,
    url: &str,
) -> Result<gate::VerifiedChannel> {
    let verified = gate::fetch_channel(transport, &host.release_source(url))?;
    let ch = verified.channel();
    let source = manifest::source_key(url);
    let floor = state.floor(&source);
    let facts = channel::TimeFacts {
        now: now(),
        newest_created_seen: state.newest_created,
        floor: floor.as_ref(),
    };
    // Named by where the bytes came from (the mirror's URL), not the
    // configured one: that is the server to look at.
    let fetched = crate::fetch::redact(verified.source());
    // Before anything of it is believed: another track's channel, signed
    // later, must not raise this URL's floor over the one that belongs here.
    channel::check_track(&fetched, ch, host.config.update.track.as_deref())?;
    let time = channel::check_time(&fetched, ch, &facts);
    if !matches!(time, Err(channel::ChannelError::CreatedAhead { .. })) {
        state.note_created(&source, ch.created, &ch.sha256, None, Some(&source));
    }
    time?;
    Ok(verified)
}

/// During a probation: the configured release channel only (never a
/// manifest or a payload), through the trust gate and its rules of time.
/// `Some(why)` when it withdraws `version`, the release on probation (a
/// halt is no withdrawal: it stops installs, not running releases);
/// `None` on a host without a channel. The caller saves `state` (the
/// channel's `created` floor).
pub(super) fn probation_withdrawal(
    host: &Host,
    state: &mut State,
    version: &str,
) -> Result<Option<String>> {
    let Some(url) = host.config.update.channel.clone() else {
        return Ok(None);
    };
    let transport = host.transport()?;
    state.metrics.last_check = Some(now());
    let verified = believed_channel(host, state, &transport, &url)?;
    let withdrawn =
        Version::parse(version).is_ok_and(|v| channel::withdraws(verified.channel(), &v));
    Ok(withdrawn.then(|| {
        format!(
            "release {version} is withdrawn from the release channel {}",
            crate::fetch::redact(&url)
        )
    }))
}

/// Fetch the channel at `url` through the trust gate, judge its time
/// (recording a `created` this host may believe, as for a manifest) and
/// choose ([`channel::choose`]): `Ok((manifest URL, its entry))`, or why
/// nothing starts.
fn through_channel(
    host: &Host,
    state: &mut State,
    transport: &crate::fetch::Transport,
    url: &str,
    placed: &std::result::Result<Version, Option<String>>,
    by_hand: bool,
) -> Result<std::result::Result<(String, channel::Release), Nothing>> {
    let verified = believed_channel(host, state, transport, url)?;
    let ch = verified.channel();
    let shown = crate::fetch::redact(url);
    let parsed = placed.as_ref().ok().cloned();
    let failed: Vec<Version> = state
        .failed_versions(by_hand)
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect();
    // A staged trial the channel no longer offers is disarmed before any
    // choice is acted on (the next run installs what the channel offers).
    if let Some((staged, why)) = unoffered(host, state, ch, &shown, parsed.as_ref(), &failed)? {
        return Ok(Err(Nothing::Unoffered { staged, why }));
    }
    let nothing = |reason: &str, kind| {
        Ok(Err(Nothing::UpToDate {
            reason: reason.to_string(),
            kind,
            standing: None,
        }))
    };
    match channel::choose(ch, parsed.as_ref(), &failed) {
        Choice::Halted => nothing(
            "the release channel is halted: no install starts",
            NoUpdate::Halted,
        ),
        Choice::UpToDate {
            on_withdrawn: false,
        } => nothing(
            "the release channel lists nothing newer than the booted release",
            NoUpdate::NotNewer,
        ),
        Choice::UpToDate { on_withdrawn: true } => nothing(
            "the booted release is withdrawn and the release channel lists nothing newer",
            NoUpdate::OnWithdrawn,
        ),
        Choice::FailedBarrier { index } => {
            let barrier = &ch.releases[index];
            // The timer's failed list holds cancels too; which one this is
            // decides the reason and the way on.
            let cancelled = state
                .cancelled_versions()
                .iter()
                .any(|v| Version::parse(v).is_ok_and(|v| v == barrier.version));
            let manifest = crate::fetch::resolve(url, &barrier.manifest)
                .map(|m| crate::fetch::redact(&m).into_owned())
                .unwrap_or_else(|_| barrier.manifest.clone());
            let (reason, kind) = stuck_at_barrier(&barrier.version, cancelled, &manifest);
            nothing(&reason, kind)
        }
        Choice::BootedUnknown => Err(unplaced(host, placed.as_ref().err().unwrap_or(&None), true)),
        Choice::Install { index, .. } => {
            let release = ch.releases[index].clone();
            let manifest = crate::fetch::resolve(url, &release.manifest)?;
            Ok(Ok((manifest, release)))
        }
    }
}

/// The booted release as this host compares releases with it (the
/// channel's choice, a manifest's "not newer"), from the booted version
/// `os_release` states (else the state's) and the booted slot's `record`:
/// the first of the two that is a dotted-number version (os-release's,
/// else what abupdate installed there). Neither is: `Err` with the value
/// found (`None`: none), and the host cannot be placed; a version that
/// does not parse is never taken as older than every release, which would
/// let the timer downgrade the host. The one decision of `check`,
/// `update` and `install` on both kinds of source. Pure.
pub(super) fn booted_release(
    os_release: Option<&str>,
    record: Option<&str>,
) -> std::result::Result<Version, Option<String>> {
    let parsed = |v: Option<&str>| v.and_then(|v| Version::parse(v).ok());
    parsed(os_release)
        .or_else(|| parsed(record))
        .ok_or_else(|| os_release.or(record).map(str::to_string))
}

/// The refusal of a host whose booted version ([`booted_release`]) is
/// `found` (`None`: none), through the release channel or not.
fn unplaced(host: &Host, found: &Option<String>, through_channel: bool) -> Error {
    // Outside bytes, as `Host::booted_version` reads them: shown byte for
    // byte by the one quoting rule.
    Error::Refused(super::Refusal::BootedVersionUnknown {
        os_release: host.config.system.os_release.clone(),
        found: found.as_deref().map(crate::text::show_shown),
        through_channel,
    })
}

/// Why the timer stays below the barrier `version` of the release channel
/// (at `manifest`), which it will not take: an operator `cancelled` it
/// here (`mark-bad` of its staged slot: it holds the timer only, so the
/// way on is an install of it by hand), else it failed here (the way on is
/// a replacement barrier in the channel). Pure.
fn stuck_at_barrier(version: &Version, cancelled: bool, manifest: &str) -> (String, NoUpdate) {
    match cancelled {
        true => (
            format!(
                "stuck at barrier {version}: the operator cancelled it on this host and the release channel allows no release past it; `abupdate install {manifest}` by hand installs it"
            ),
            NoUpdate::Cancelled,
        ),
        false => (
            format!(
                "stuck at barrier {version}: it failed on this host and the release channel allows no release past it"
            ),
            NoUpdate::PreviouslyFailed,
        ),
    }
}

/// The staged trial, if any, that the verified channel `ch` (shown as
/// `shown`) no longer offers ([`channel::staged`]), with the line that
/// says why (the release, its slot, the channel).
fn unoffered(
    host: &Host,
    state: &State,
    ch: &channel::Channel,
    shown: &str,
    booted: Option<&Version>,
    failed: &[Version],
) -> Result<Option<(Transaction, String)>> {
    let Some(staged) = staged_trial(state, host.booted_slot()?) else {
        return Ok(None);
    };
    let version = Version::parse(&staged.version).ok();
    let unoffered = version.and_then(|v| channel::staged(ch, booted, failed, &v));
    Ok(unoffered.map(|u| {
        let why = format!(
            "release {} was staged in slot {} and {}",
            staged.version,
            staged.to,
            u.describe(ch, shown)
        );
        (staged, why)
    }))
}

/// The staged trial the configured release channel no longer offers, if
/// any, with the line that says why: the channel alone is fetched (never
/// a manifest or a payload), through the trust gate and its rules of
/// time. The safety check `update` runs even while it backs off; `None`
/// on a host without a channel or with nothing staged. The caller saves
/// `state` (the channel's `created` floor).
pub(super) fn staged_not_offered(
    host: &Host,
    state: &mut State,
) -> Result<Option<(Transaction, String)>> {
    let Some(url) = host.config.update.channel.clone() else {
        return Ok(None);
    };
    if staged_trial(state, host.booted_slot()?).is_none() {
        return Ok(None);
    }
    let transport = host.transport()?;
    state.metrics.last_check = Some(now());
    let verified = believed_channel(host, state, &transport, &url)?;
    let booted = host.booted_slot()?;
    let parsed = booted_release(
        host.booted_version(state, booted).as_deref(),
        state.slot(booted).version.as_deref(),
    )
    .ok();
    let failed: Vec<Version> = state
        .failed_versions(false)
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect();
    let shown = crate::fetch::redact(&url);
    unoffered(
        host,
        state,
        verified.channel(),
        &shown,
        parsed.as_ref(),
        &failed,
    )
}

/// The trial staged in the slot that is not `booted` (written, verified,
/// activated, waiting for the reboot), if any.
fn staged_trial(state: &State, booted: SlotName) -> Option<Transaction> {
    state
        .transaction
        .clone()
        .filter(|t| t.phase == Phase::Staged && t.to != booted)
}

/// The judgement `check` and `install` both make ([`manifest::evaluate`] on
/// this host's facts), so `check` offers nothing `install` refuses before
/// touching a device. A `created` this host may believe is recorded in
/// `state` (the clock's floor and the source's newest), whatever the
/// verdict, when the manifest is one of this host's: of its hardware and
/// its track.
fn judge(
    host: &Host,
    state: &mut State,
    verified: &Verified,
    booted: SlotName,
    booted_version: Option<&Version>,
    track: TrackRule,
    opts: CheckOptions,
) -> std::result::Result<(), NotApplicable> {
    let (allow_downgrade, by_hand) = (opts.allow_downgrade, opts.by_hand);
    let m = verified.manifest();
    // The failures hold every run; an operator's cancel, and an
    // operator's rejection of a committed release, only the timer's.
    let failed = state.failures(by_hand);
    let cancelled = match by_hand {
        true => Vec::new(),
        false => state.cancelled_versions(),
    };
    let classes: Vec<String> = host
        .config
        .slots
        .get(&booted.other())
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let source = manifest::source_key(verified.location());
    let floor = state.floor(&source);
    let fetched = crate::fetch::redact(verified.source());
    let facts = HostFacts {
        compatible: &host.config.update.compatible,
        track,
        booted_version,
        failed_versions: &failed,
        cancelled_versions: &cancelled,
        now: now(),
        newest_created_seen: state.newest_created,
        floor: floor.as_ref(),
        fetched: &fetched,
        slot_classes: &classes,
        max_window_log: host.config.update.max_window_log,
        allow_downgrade,
    };
    let verdict = manifest::evaluate(m, &facts);
    // A manifest for other hardware or of another track (or of none, on a
    // host that follows one) is no manifest of this host's sources, however
    // it was let in: its later `created` must not make the manifest that
    // belongs there stale.
    let ours = m.doc.compatible == host.config.update.compatible
        && manifest::on_track(m.doc.track.as_deref(), host.config.update.track.as_deref());
    if manifest::created_plausible(m, &facts) && ours {
        let channel = host
            .config
            .update
            .channel
            .as_deref()
            .map(manifest::source_key);
        state.note_created(
            &source,
            m.created,
            &m.sha256,
            Some(m.doc.version.as_str()),
            channel.as_deref(),
        );
    }
    verdict
}

/// Save the state when no other instance holds the lock; a read-only
/// `check` next to a running install just skips its bookkeeping.
fn save_if_unlocked(state_dir: &StateDir, state: &State) -> Result<()> {
    if let Ok(lock) = state_dir.lock() {
        lock.save(state)?;
    }
    Ok(())
}

/// Save the state with `lock` when this instance holds it (see
/// [`save_if_unlocked`]).
pub(super) fn save_if_held(
    lock: &std::result::Result<StateLock, crate::state::StateError>,
    state: &State,
) -> Result<()> {
    if let Ok(lock) = lock {
        lock.save(state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A barrier the operator cancelled here is reported as a cancel (its
    /// reason, the manifest to install by hand), never as a failure.
    #[test]
    fn a_cancelled_barrier_is_reported_as_cancelled_with_the_way_on() {
        let v = Version::parse("2.0").expect("version");
        let (reason, kind) = stuck_at_barrier(&v, true, "https://u.example/2.0/release.json");
        assert_eq!(kind, NoUpdate::Cancelled);
        assert_eq!(
            reason,
            "stuck at barrier 2.0: the operator cancelled it on this host and the release channel allows no release past it; `abupdate install https://u.example/2.0/release.json` by hand installs it"
        );
    }

    /// A barrier that failed its trial here stays a failure.
    #[test]
    fn the_booted_release_is_os_releases_version_when_it_parses() {
        let v = |t: &str| Version::parse(t).expect("version");
        assert_eq!(booted_release(Some("3.0"), Some("2.0")), Ok(v("3.0")));
        assert_eq!(booted_release(Some("3.0"), None), Ok(v("3.0")));
    }

    #[test]
    fn an_os_release_version_that_does_not_parse_falls_back_to_the_record() {
        let v = |t: &str| Version::parse(t).expect("version");
        assert_eq!(booted_release(Some("3.0-rc1"), Some("3.0")), Ok(v("3.0")));
        assert_eq!(booted_release(None, Some("1.0")), Ok(v("1.0")));
    }

    #[test]
    fn a_booted_version_neither_source_places_is_refused_naming_what_was_found() {
        for (os_release, record, found) in [
            (Some("3.0-rc1"), Some("3.0-rc1"), Some("3.0-rc1")),
            (Some("v3.0"), None, Some("v3.0")),
            (Some("3.0\u{fffd}"), Some("rolling"), Some("3.0\u{fffd}")),
            (None, Some("rolling"), Some("rolling")),
            (None, None, None),
        ] {
            assert_eq!(
                booted_release(os_release, record),
                Err(found.map(str::to_string)),
                "{os_release:?} {record:?}"
            );
        }
    }

    #[test]
    fn a_failed_barrier_is_reported_as_previously_failed() {
        let v = Version::parse("2.0").expect("version");
        let (reason, kind) = stuck_at_barrier(&v, false, "m");
        assert_eq!(kind, NoUpdate::PreviouslyFailed);
        assert!(reason.contains("it failed on this host"), "{reason}");
        assert!(!reason.contains("install"), "{reason}");
    }
}
