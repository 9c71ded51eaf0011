//! `install`: write a verified release into the inactive slot and stage
//! it; the write of the timer's `update` too.
//!
//! Plan, check, act, as rauc's install: the release is judged once, under
//! the state lock the install then writes with ([`check_and_install`]);
//! the preflight refuses what the host's state forbids (a trial pending, a
//! booted slot the bootloader does not hold good) and what the devices
//! forbid (`check_targets`, with [`crate::slot`]'s checks); then each
//! image is written by delta or full payload ([`crate::install`],
//! [`crate::delta`]), and the target is staged through
//! [`super::transition`], which keeps the order of the bootloader writes.
//!
//! Invariant: nothing is written into a slot but what a [`Verified`]
//! manifest lists, into the slot that is not booted, not mounted and
//! shares no storage with either; the target is marked bad only by the
//! writer's `before_write`, right before its first byte. A release is
//! "already staged" only while the bootloader boots its slot next and,
//! when the reboot into it may come now, the slot reads back as signed
//! (`staged_damage`); else it is installed again.
//!
//! The reboot into a slot this run wrote follows a last look: the run's
//! judgement made again ([`before_reboot`] decides on it, pure): a release
//! pulled during the write (withdrawn, halted, paused, another manifest,
//! expired) is disarmed; a look that cannot be made keeps it staged and
//! fails the run, so no trial is booted without a successful read of the
//! server in the same run. An interrupted write of a release the timer's
//! judgement no longer installs is ended ([`ends_write`], pure).
//!
//! A write cut before its release was staged (a closed download window, a
//! power cut, a lost link) is redone from what the slot holds: each image
//! that pending write recorded is read back before anything of it is
//! fetched, and one found whole as signed is neither fetched nor written
//! again (`may_hold`, `in_slot`). What counts as held was read back from
//! the medium in this run and matched a signed hash, as every byte the
//! slot writer counts as written. A fresh install reads nothing back first.
//!
//! A timer download whose window closes is not a failure and not a wait:
//! the run ends there as one that started outside the windows
//! (`waiting_for_download_window`), its state lock released with it; the
//! write stays recorded `writing` and its bytes are kept as a cut
//! download's are (`Writer::fail`), for the next run inside a window.

use super::check::{fetch_and_judge, save_if_held, CheckOptions, Judged, NoUpdate, Nothing};
use super::recovery::{disarm, reboot};
use super::report::publish;
use super::transition::{Armed, Transition};
use super::{log, Host, Refusal};
use crate::boot::BootState;
use crate::error::{Error, Result};
use crate::fetch::Transport;
use crate::install::{self, WriteMode};
use crate::manifest::{self, NotApplicable};
use crate::progress::Progress;
use crate::report::Outcome;
use crate::slot::{Device, SlotError, SlotName};
use crate::state::{ImageRef, Phase, SlotStatus, State, StateLock, Transaction};
use crate::system;
use crate::timefmt::now;
use crate::trust::gate::Verified;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

/// Options of `install` / `update`.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Accept a release that is not newer than the booted one.
    pub allow_downgrade: bool,
    /// Stage without rebooting.
    pub no_reboot: bool,
    /// Write every block, or only those that differ.
    pub write_mode: WriteMode,
    /// No progress output.
    pub quiet: bool,
    /// Reboot only inside a maintenance window (the timer's runs).
    pub respect_windows: bool,
}

/// What `install` did.
#[derive(Debug)]
pub struct Installed {
    /// The slot written and staged.
    pub slot: SlotName,
    /// The release.
    pub version: String,
    /// Payload bytes decoded into the slot.
    pub payload_bytes: u64,
    /// Bytes fetched over the network.
    pub network_bytes: u64,
    /// Whether the reboot into it was requested.
    pub rebooting: bool,
}

/// `install SOURCE`: fetch, verify and judge the release (no rollout: a
/// manual install is the operator's decision), then write and stage it.
/// A release that does not apply is an error naming why.
pub fn install(host: &Host, source: &str, opts: &InstallOptions) -> Result<Installed> {
    let check = CheckOptions {
        allow_downgrade: opts.allow_downgrade,
        rollout: false,
        by_hand: true,
    };
    match check_and_install(host, source, check, opts, &mut None)? {
        Ok(done) => Ok(done),
        Err(Nothing::NotWanted { why, .. }) => Err(why.into()),
        Err(Nothing::Disarmed { line, .. }) => Err(Refusal::Disarmed { line }.into()),
        Err(Nothing::UpToDate { kind, reason, .. }) => {
            Err(nothing_to_install(kind, reason, source).into())
        }
        // `Unoffered` never leaves `check_and_install` (it disarms).
        Err(nothing @ Nothing::Unoffered { .. }) => {
            let (reason, kind, _) = nothing.explain();
            Err(nothing_to_install(kind, reason, source).into())
        }
    }
}

/// Why `install` from `source` writes nothing, as its refusal: a 304 is
/// "unchanged", a wave that has not come is "waiting", any other
/// nothing-to-do (the channel halted, nothing newer in it, the booted
/// release withdrawn, a download window) says its own reason.
fn nothing_to_install(kind: NoUpdate, reason: String, source: &str) -> Refusal {
    match kind {
        NoUpdate::NotModified => Refusal::Unchanged {
            location: crate::fetch::redact(source).into_owned(),
        },
        NoUpdate::WaitingForWave => Refusal::WaitingForWave { reason },
        _ => Refusal::NothingToInstall { reason },
    }
}

/// Fetch and judge the release at `location`, and install it when it
/// applies: `Err(why not)` when it does not. The judgement is made once,
/// under the state lock when this instance can take it (the lock the
/// install then writes with); when another instance holds it, a release
/// that does not apply is still judged (and reported as such), one that
/// applies fails as locked. `release` is set to the release's version once
/// it applies (for the failure report).
pub(super) fn check_and_install(
    host: &Host,
    location: &str,
    check: CheckOptions,
    opts: &InstallOptions,
    release: &mut Option<(String, String)>,
) -> Result<std::result::Result<Installed, Nothing>> {
    let lock = host.state_dir.lock();
    let mut state = host.state_dir.load()?;
    let judged = fetch_and_judge(host, &mut state, location, check);
    save_if_held(&lock, &state)?;
    let (verified, standing) = match judged? {
        Judged::Applies { verified, standing } => (verified, standing),
        // The staged trial the channel no longer offers: disarmed under
        // the lock (another instance holding it: locked, as an install).
        Judged::Nothing(Nothing::Unoffered { staged, why }) => {
            let line = disarm(host, &lock?, &mut state, &staged, &why)?;
            let version = staged.version;
            return Ok(Err(Nothing::Disarmed { version, line }));
        }
        Judged::Nothing(nothing) => {
            if let Ok(lock) = &lock {
                end_unoffered_write(host, lock, &mut state, &nothing, check)?;
            }
            return Ok(Err(nothing));
        }
        Judged::Fault(na) => return Err(na.into()),
    };
    let m = verified.manifest();
    *release = Some((m.version.to_string(), m.doc.build()));
    let lock = lock?;
    let waiting = |until: i64| Nothing::UpToDate {
        reason: format!(
            "release {} waits for the download window (next opens {})",
            verified.manifest().version,
            crate::timefmt::format_rfc3339(until)
        ),
        kind: NoUpdate::WaitingForDownloadWindow,
        standing: standing.clone(),
    };
    if opts.respect_windows {
        if let Some(until) = waits_for_download_window(host, &state, &verified) {
            return Ok(Err(waiting(until)));
        }
    }
    let look = Look { location, check };
    match install_verified(host, &lock, state, &verified, opts, &look) {
        // The window closed during the download: the run ends as one that
        // started outside it (not a failure, no backoff), and its end
        // releases the state lock rather than hold it until the next
        // window. What arrived is kept (`write_payload`, `Writer::fail`).
        Err(Error::Fetch(crate::fetch::FetchError::OutsideWindow { until, .. }))
            if opts.respect_windows =>
        {
            // Without `resume_downloads` nothing was kept: it starts over.
            let next = match host.config.update.resume_downloads {
                true => "resumes",
                false => "starts again",
            };
            log(&format!(
                "the download window closed; release {} {next} in the next one (opens {})",
                verified.manifest().version,
                crate::timefmt::format_rfc3339(until)
            ));
            Ok(Err(waiting(until)))
        }
        other => other,
    }
}

/// Whether the judgement `nothing` of the timer's run (not `by_hand`)
/// ends the interrupted write `t` on a host booted from `booted`: a write
/// into the other slot cut by a crash, of a release the timer will not
/// install now (withdrawn, halted, paused, nothing newer, failed here), is
/// not redone, so it must not stay pending ("will be redone" on every
/// boot). A release that applies replaces it by its own install; a
/// download window only delays it; a staged trial is the disarm's. Pure.
pub(super) fn ends_write(
    t: &Transaction,
    booted: SlotName,
    nothing: &Nothing,
    by_hand: bool,
) -> bool {
    let interrupted = t.phase == Phase::Writing && t.to != booted;
    let not_offered = match nothing {
        Nothing::UpToDate { kind, .. } => !matches!(
            kind,
            NoUpdate::WaitingForDownloadWindow | NoUpdate::OnProbation
        ),
        Nothing::NotWanted { .. } => true,
        Nothing::Unoffered { .. } | Nothing::Disarmed { .. } => false,
    };
    !by_hand && interrupted && not_offered
}

/// End the interrupted write recorded in `state` when the timer's
/// judgement `nothing` says it will not be redone ([`ends_write`]): the
/// slot stays bad, the transaction is cleared, and a line says why.
fn end_unoffered_write(
    host: &Host,
    lock: &StateLock,
    state: &mut State,
    nothing: &Nothing,
    check: CheckOptions,
) -> Result<()> {
    let Some(t) = state.transaction.clone() else {
        return Ok(());
    };
    if !ends_write(&t, host.booted_slot()?, nothing, check.by_hand) {
        return Ok(());
    }
    let flip = Transition::new(host, lock);
    flip.end_write(state, &t)?;
    // The activation of the running slot gave it a fresh try budget.
    flip.rebless(state, t.from)?;
    let reason = match nothing {
        Nothing::NotWanted { why, .. } => why.to_string(),
        Nothing::UpToDate { reason, .. } => reason.clone(),
        Nothing::Unoffered { why, .. } => why.clone(),
        Nothing::Disarmed { line, .. } => line.clone(),
    };
    log(&format!(
        "the interrupted install of {} into slot {} is ended, not redone: {reason}; slot {} stays bad",
        t.version, t.to, t.to
    ));
    Ok(())
}

/// Where and how a release was judged: what the last look before the
/// reboot into it judges again ([`last_look`]).
struct Look<'a> {
    location: &'a str,
    check: CheckOptions,
}

/// What the last look before the reboot into a staged trial found, as
/// plain data: the same judgement as the run's first ([`fetch_and_judge`]:
/// the channel or the manifest, the trust gate, the floors of time, the
/// rollout), made again.
#[derive(Debug)]
pub(super) enum Found {
    /// The release applies: the manifest it judged (its SHA-256).
    Applies { manifest_sha256: String },
    /// Nothing to install (withdrawn, halted, paused, not newer, …) or a
    /// refusal that will not fix itself (expired, stale, …): the line
    /// that says so, naming the staged release and its slot.
    NotOffered(String),
    /// The look could not be made (network, a channel or signature not
    /// believed): the error.
    Unread(Error),
}

/// What to do before the reboot into a staged trial.
#[derive(Debug)]
pub(super) enum BeforeReboot {
    /// Still offered, the same manifest: reboot.
    Reboot,
    /// No longer offered (`why`): disarm it, no reboot.
    Disarm(String),
    /// Not known: no reboot now, the trial stays staged and the run fails
    /// with the error (counted, backed off); the next run's own fetch
    /// looks again and reboots inside a window once it reads the server.
    StayStaged(Error),
}

/// The reboot into the staged trial (`staged`: "release V was staged in
/// slot S") of the manifest `staged_sha256`, decided on the last look's
/// `found`. Only "the same manifest still applies" reboots; only a
/// positive "not offered" (or another manifest offered) disarms; a look
/// not made leaves it staged. Pure.
pub(super) fn before_reboot(found: Found, staged: &str, staged_sha256: &str) -> BeforeReboot {
    match found {
        Found::Applies { manifest_sha256 } if manifest_sha256 == staged_sha256 => {
            BeforeReboot::Reboot
        }
        Found::Applies { manifest_sha256 } => BeforeReboot::Disarm(format!(
            "{staged}, but the manifest now offered is another one (SHA-256 {manifest_sha256})"
        )),
        Found::NotOffered(why) => BeforeReboot::Disarm(why),
        Found::Unread(e) => BeforeReboot::StayStaged(e),
    }
}

/// The last look: the run's judgement of `look` made again, under the
/// state lock the install holds (the state saved: the channel's floor).
/// `staged` names the staged release and its slot.
fn last_look(
    host: &Host,
    lock: &StateLock,
    state: &mut State,
    look: &Look,
    staged: &str,
) -> Result<Found> {
    let judged = fetch_and_judge(host, state, look.location, look.check);
    lock.save(state)?;
    let found = |reason: String| {
        Found::NotOffered(format!(
            "{staged}, but the last look before the reboot found: {reason}"
        ))
    };
    Ok(match judged {
        Ok(Judged::Applies { verified, .. }) => Found::Applies {
            manifest_sha256: verified.manifest().sha256.clone(),
        },
        // The channel's own line names the release and its slot.
        Ok(Judged::Nothing(Nothing::Unoffered { why, .. })) => Found::NotOffered(why),
        Ok(Judged::Nothing(nothing)) => found(nothing.explain().0),
        // Another track's manifest, or another product's, says nothing of
        // this one, and neither does one the floors of time do not believe
        // (older than the newest seen from there: a replay; dated ahead of
        // this clock): the look was not made, as with a channel not
        // believed (a server swapping documents must not disarm a trial
        // any more than arm one).
        Ok(Judged::Fault(
            na @ (NotApplicable::OtherTrack { .. }
            | NotApplicable::Incompatible { .. }
            | NotApplicable::Stale { .. }
            | NotApplicable::CreatedAhead { .. }),
        )) => Found::Unread(Error::NotApplicable(na)),
        Ok(Judged::Fault(na)) => found(na.to_string()),
        Err(e) => Found::Unread(e),
    })
}

/// When the timer's download of `verified` must wait for a download window
/// (`[update] download_windows`): the time the next one opens. A release
/// already staged downloads nothing and never waits for one.
fn waits_for_download_window(host: &Host, state: &State, verified: &Verified) -> Option<i64> {
    let pacing = &host.config.update.pacing;
    if pacing.download_windows.is_empty() {
        return None;
    }
    let crate::fetch::Allowance::Wait { until } = pacing.at(now()) else {
        return None;
    };
    let staged = state.transaction.as_ref().is_some_and(|t| {
        t.phase == Phase::Staged && t.manifest_sha256 == verified.manifest().sha256
    });
    (!staged).then_some(until)
}

/// The preflight, the write and the staging of a judged release, under
/// `lock`.
// Long on purpose: the install's steps in the order `transition.rs` rules
// them (refusals, env fits, pre-install hook, write, post-install hook,
// stage, report); split, the order would be spread over several functions.
fn install_verified(
    host: &Host,
    lock: &StateLock,
    mut state: State,
    verified: &Verified,
    opts: &InstallOptions,
    look: &Look,
) -> Result<std::result::Result<Installed, Nothing>> {
    let m = verified.manifest();
    let booted = host.booted_slot()?;
    let target = booted.other();
    if let Some(p) = state.on_probation() {
        return Err(Refusal::OnProbation {
            slot: p.slot,
            version: p.version.clone(),
            until: p.until,
        }
        .into());
    }
    if let Some(t) = &state.transaction {
        if t.to == booted {
            return Err(Refusal::TrialPending {
                slot: booted,
                version: t.version.clone(),
            }
            .into());
        }
        if t.phase == Phase::Staged && t.manifest_sha256 == m.sha256 && t.to == target {
            // The record says staged; only the bootloader says whether the
            // next boot tries it (a `mark-bad`, a reset env undo it): a
            // stale record is installed over, never reported as staged.
            if host.boot.primary()? == Some(target) && host.boot.state(target)? == BootState::Good {
                // Nor does the record say what the slot holds now: it is
                // read back against the signed digests before it counts,
                // or the trial of other bytes would blame the release.
                // Read back when the reboot into it may come now (a manual
                // install, or the timer inside its maintenance window): a
                // tick that only waits for the window would read the whole
                // slot every time.
                let reboots_now = !opts.respect_windows
                    || crate::schedule::may_reboot(&host.config.reboot.windows, now());
                let damage = match reboots_now {
                    true => staged_damage(host, verified, target)?,
                    false => None,
                };
                match damage {
                    None => {
                        log(&format!(
                            "release {} is already staged in slot {target} ({})",
                            m.version,
                            match reboots_now {
                                true => "read back and matched",
                                false => "read back before the reboot into it",
                            }
                        ));
                        // The judgement was made right before the
                        // read-back: it is the last look.
                        let staged = Staged {
                            target,
                            verified,
                            payload_bytes: 0,
                            network_bytes: 0,
                        };
                        return finish_staged(host, lock, &mut state, staged, opts, None);
                    }
                    Some(device) => log(&format!(
                        "release {} was staged in slot {target}, but {} no longer reads back as signed: installing it again",
                        m.version,
                        device.display()
                    )),
                }
            } else {
                log(&format!(
                    "release {} was staged in slot {target}, but the bootloader no longer boots it next: installing it again",
                    m.version
                ));
            }
        }
    }
    if host.boot.state(booted)? != BootState::Good {
        // Recorded bad: a rollback from it waits for its reboot (advice
        // to mark it good undid that rollback unseen, and the write then
        // overwrote the slot rolled back to; found from outside).
        return Err(match state.slot(booted).status {
            SlotStatus::Bad => Refusal::BootedRolledBack { slot: booted },
            _ => Refusal::BootedNotGood { slot: booted },
        }
        .into());
    }
    // Recorded below as the fallback of what this installs: never a try
    // nothing judged (a state deleted or damaged between a staging and its
    // `health`; found from outside by a random walk).
    if host.booted_unjudged(&state, booted) {
        return Err(Refusal::BootedUnjudged { slot: booted }.into());
    }
    // Nor a slot whose checks failed, kept only because nothing else was
    // known to boot: the slot this would write may hold the last good
    // system (found from outside: a random walk's update overwrote it).
    if state.slot(booted).status == SlotStatus::Failing {
        return Err(Refusal::BootedFailing { slot: booted }.into());
    }
    // The booted slot is good in the bootloader and runs: recorded so
    // before the other slot is written (saved with the transaction, when
    // the target is armed), so the slot this install leaves behind is a
    // fallback for the release's probation and the manual verbs.
    let running = host.booted_version(&state, booted);
    state.adopt_booted(booted, running);
    let devices = check_targets(host, verified, booted)?;
    let transport = host.transport()?;
    // Download windows are for the timer; a manual install is the
    // operator's decision (the rate still holds).
    let transport = match opts.respect_windows {
        true => transport,
        false => transport.without_download_windows(),
    };
    let flip = Transition::new(host, lock);
    // Rule 1 of `transition.rs`: the final env must fit before anything is
    // marked or written.
    flip.check_install(target)?;
    // The site's own go/no-go, before anything is marked or written.
    host.run_hook(
        crate::hooks::Point::PreInstall,
        &host.hook_facts(verified, booted),
    )?;
    let mut w = Writer {
        host,
        flip,
        transport: &transport,
        verified,
        booted,
        opts,
        state,
        transaction: transaction(verified, booted),
        armed: None,
    };
    let fetched = write_images(&mut w, &devices)?;
    // Written: no partial download is worth keeping any more.
    log_pruned(&host.state_dir.prune_partials(&[]));
    // Nothing needed writing (`--write=changed` over the same image): the
    // record still precedes the activation.
    let (flip, mut state, armed) = w.into_armed()?;
    // Written and verified, not yet activated: a failing hook leaves the
    // target bad.
    if let Err(e) = host.run_hook(
        crate::hooks::Point::PostInstall,
        &host.hook_facts(verified, booted),
    ) {
        state.metrics.downloaded_bytes += fetched.network;
        flip.abandon(&mut state, armed)?;
        return Err(e);
    }
    // Rule 3: every image was read back and hashed right (write_images);
    // only now is the target activated, and the state follows.
    flip.stage(&mut state, armed, |state| {
        state.metrics.downloaded_bytes += fetched.network;
        state.metrics.last_install_fetched = Some(fetched.network);
        state.metrics.last_install_full = Some(fetched.full);
    })?;
    if fetched.network > 0 && fetched.full > 0 {
        log(&format!(
            "fetched {} bytes; a full install fetches {} ({:.1}%)",
            fetched.network,
            fetched.full,
            fetched.network as f64 * 100.0 / fetched.full as f64
        ));
    }
    publish(
        host,
        &state,
        Some((
            Outcome::Installed,
            m.version.as_str(),
            Some(m.doc.build().as_str()),
        )),
        None,
    );
    let staged = Staged {
        target,
        verified,
        payload_bytes: fetched.payload,
        network_bytes: fetched.network,
    };
    finish_staged(host, lock, &mut state, staged, opts, Some(look))
}

/// The first of `target`'s devices that does not hold its image of
/// `verified` as signed (read from the medium: segment digests, else the
/// image's SHA-256), or `None` when every one does. A class with no
/// configured device is `judge`'s refusal, not damage.
fn staged_damage(
    host: &Host,
    verified: &Verified,
    target: SlotName,
) -> Result<Option<std::path::PathBuf>> {
    for (class, image) in &verified.manifest().doc.images {
        let Some(device) = host.config.device(target, class) else {
            continue;
        };
        if !install::slot_holds(device, image)? {
            return Ok(Some(device.to_path_buf()));
        }
    }
    Ok(None)
}

/// The transaction of writing `verified` into the slot that is not
/// `booted`.
fn transaction(verified: &Verified, booted: SlotName) -> Transaction {
    let m = verified.manifest();
    Transaction {
        from: booted,
        to: booted.other(),
        version: m.version.to_string(),
        manifest_sha256: m.sha256.clone(),
        phase: Phase::Writing,
        started: now(),
        staged_boot_id: None,
        images: m
            .doc
            .images
            .iter()
            .map(|(c, i)| {
                (
                    c.clone(),
                    ImageRef {
                        sha256: i.sha256.clone(),
                        size: i.size,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        unknown: Default::default(),
    }
}

/// An install's write in progress: what it writes with, the state it
/// keeps, and whether its target is armed yet (`transition.rs` rule 2:
/// armed once, by the writer's `before_write`, right before the target's
/// first byte changes). Until then a failed install leaves the target's
/// bootloader flag and record as they were: a power cut at any instant
/// finds the target either untouched or marked bad.
struct Writer<'a> {
    host: &'a Host,
    flip: Transition<'a>,
    transport: &'a Transport,
    verified: &'a Verified,
    booted: SlotName,
    opts: &'a InstallOptions,
    state: State,
    transaction: Transaction,
    armed: Option<Armed>,
}

impl<'a> Writer<'a> {
    /// Mark the target bad and record the transaction, once.
    fn arm(&mut self) -> Result<()> {
        if self.armed.is_none() {
            let t = self.transaction.clone();
            self.armed = Some(self.flip.arm(&mut self.state, t)?);
        }
        Ok(())
    }

    /// The write is done: the armed install (armed now if no byte needed
    /// writing), its transition and its state.
    fn into_armed(mut self) -> Result<(Transition<'a>, State, Armed)> {
        let armed = match self.armed.take() {
            Some(armed) => armed,
            None => self.flip.arm(&mut self.state, self.transaction)?,
        };
        Ok((self.flip, self.state, armed))
    }

    /// The write failed with `e`: when it had begun, nothing is pending any
    /// more and the target is known bad; when it had not, nothing changed.
    /// A download window that closed is no failure: a write that had begun
    /// stays recorded as `writing` (the target bad in the bootloader, as a
    /// power cut leaves it: the boot verdict and `status` say it will be
    /// redone), the state saved with it, and the next run inside a window
    /// redoes it from what the slot and the data partition kept.
    fn fail(&mut self, e: &Error) -> Result<()> {
        if window_closed(e) {
            return match self.armed {
                Some(_) => self.flip.save(&self.state),
                None => Ok(()),
            };
        }
        match self.armed.take() {
            Some(armed) => self.flip.abandon(&mut self.state, armed),
            None => Ok(()),
        }
    }
}

/// Bytes an install moved.
#[derive(Debug, Default)]
struct Fetched {
    /// Payload bytes decoded into the slot.
    payload: u64,
    /// Bytes that crossed the network (given-up deltas included).
    network: u64,
    /// What a full install fetches.
    full: u64,
}

/// Write every image of the release into its target device, each by delta
/// when the booted slot holds a listed source, else by its full payload;
/// each read back and hashed right before this returns. An image that a
/// write cut earlier (a closed download window, a power cut, a lost link)
/// already left whole in its slot is read back, not fetched ([`may_hold`],
/// [`in_slot`]).
fn write_images(w: &mut Writer, devices: &BTreeMap<String, Device>) -> Result<Fetched> {
    let mut fetched = Fetched::default();
    let images = &w.verified.manifest().doc.images;
    // Partial downloads of releases replaced before they finished would
    // never be resumed: only this release's payloads keep theirs.
    let keep: Vec<&str> = images.values().map(|i| i.download_sha256()).collect();
    log_pruned(&w.host.state_dir.prune_partials(&keep));
    // The write recorded as pending when this run began (arming the target
    // replaces it with this run's own).
    let pending = w.state.transaction.clone();
    let target = w.booted.other();
    for (class, image) in images {
        let target_dev = &devices[class].path;
        fetched.full += image.download_size();
        let from_slot = resumes_from_slot(w.host, target_dev, image);
        let found = match may_hold(pending.as_ref(), target, class, image) {
            true => in_slot(target_dev, image, from_slot),
            false => Ok(InSlot::NotHeld),
        };
        let held = match found {
            Ok(InSlot::Whole) => {
                // Nothing to fetch or write: every byte was read back from
                // the medium just now and matched its signed hash, the
                // one writer's invariant (`install::writer`).
                log(&format!(
                    "slot {target} {class} ({}) already holds {class} {} (read back and matched): not fetched again",
                    target_dev.display(),
                    w.verified.manifest().version
                ));
                continue;
            }
            // A delta may write (and fail) segments before it falls back
            // to the full payload: what was read before it is stale then.
            Ok(InSlot::Prefix(held)) => Some(held).filter(|_| image.deltas.is_empty()),
            Ok(InSlot::NotHeld) => None,
            Err(e) => {
                w.fail(&e)?;
                return Err(e);
            }
        };
        log(&format!(
            "writing {class} {} into slot {} ({})",
            w.verified.manifest().version,
            w.booted.other(),
            target_dev.display()
        ));
        // A file (on the ESP) is replaced whole; a delta writes in place.
        let delta = match w.host.config.is_file_target(target_dev) {
            true => Ok((None, 0)),
            false => try_delta(w, class, image, target_dev),
        };
        let (by_delta, given_up) = match delta {
            Ok(d) => d,
            Err(e) => {
                w.fail(&e)?;
                return Err(e);
            }
        };
        // A delta given up still cost its bytes.
        fetched.network += given_up;
        match by_delta {
            Some(bytes) => {
                fetched.payload += bytes;
                fetched.network += bytes;
            }
            None => {
                let (payload, network) =
                    write_payload(w, class, image, target_dev, held, &fetched)?;
                fetched.payload += payload;
                fetched.network += network;
            }
        }
    }
    Ok(fetched)
}

/// Whether the write of `image` (`class`) into `target` may find it
/// already there, so that its slot is read back before anything is
/// fetched for it: a write into `target` is recorded as pending
/// (`writing`: cut by a closed download window, a power cut, a lost link)
/// and it recorded this very image. Pure.
///
/// Only then: a fresh install's slot holds an older release, and reading
/// it back first would cost a read of every image on every install for
/// nothing (a one-frame image's SHA-256 has no early end: the whole image
/// is read before it can differ). A pending write's slot is likely to hold
/// what it finished (a one-frame image's partial download is removed once
/// it is written, so nothing else remembers it), and a read of the slot is
/// cheap next to fetching the image again over a thin link. The pending
/// write may be of another manifest of the same images (a release signed
/// again): the image's signed hash decides, and the read-back checks it.
fn may_hold(
    pending: Option<&Transaction>,
    target: SlotName,
    class: &str,
    image: &manifest::Image,
) -> bool {
    pending.is_some_and(|t| {
        t.phase == Phase::Writing
            && t.to == target
            && t.images
                .get(class)
                .is_some_and(|r| r.sha256 == image.sha256 && r.size == image.size)
    })
}

/// What a slot was found to hold of an image before anything of it was
/// fetched.
#[derive(Debug)]
enum InSlot {
    /// Nothing of it counts as held: not read (a fresh write, see
    /// [`may_hold`]), or read back and not all as signed (a payload that
    /// does not resume from the slot is then fetched whole).
    NotHeld,
    /// The whole image, read back from the medium and matched against its
    /// signed hashes.
    Whole,
    /// The segments at its start that read back as signed, not all of
    /// them (a payload that resumes from the slot: [`resumes_from_slot`]).
    Prefix(install::Held),
}

/// Read `image` back from `target_dev`: a payload that resumes from the
/// slot (`from_slot`) by the segments at its start ([`install::held_prefix`],
/// which the write then resumes after, so they are read once), any other
/// whole against its signed hashes ([`install::slot_holds`]: segment
/// digests, else the image's SHA-256).
fn in_slot(target_dev: &Path, image: &manifest::Image, from_slot: bool) -> Result<InSlot> {
    if from_slot {
        let held = install::held_prefix(target_dev, image)?;
        return Ok(match held.is_whole(image) {
            true => InSlot::Whole,
            false => InSlot::Prefix(held),
        });
    }
    Ok(match install::slot_holds(target_dev, image)? {
        true => InSlot::Whole,
        false => InSlot::NotHeld,
    })
}

/// Whether a cut download of `image` into `target_dev` resumes from the
/// slot: a segmented payload with signed frames written in place (not a
/// file target) with `resume_downloads`.
fn resumes_from_slot(host: &Host, target_dev: &Path, image: &manifest::Image) -> bool {
    host.config.update.resume_downloads
        && !host.config.is_file_target(target_dev)
        && install::resumes_from_slot(image)
}

/// Say which partial downloads were removed, if any.
fn log_pruned(removed: &[String]) {
    if !removed.is_empty() {
        log(&format!(
            "removed {} partial download(s) of other payloads: {}",
            removed.len(),
            removed.join(", ")
        ));
    }
}

/// Stream `class`'s full payload into `target_dev`, resuming a cut
/// download: a segmented payload with signed frames after the segments the
/// slot already holds ([`install::held_prefix`], read here unless `held`
/// brings them, read by [`in_slot`] just before), any other from a partial
/// download when there is room for one. Returns (payload bytes, network
/// bytes).
/// On failure the target is abandoned and what earlier classes fetched
/// (`so_far`) is counted.
// Long on purpose: one download into one slot from start to end (whether
// it resumes, the write, through a temporary file for a file target), and
// on failure what is kept and counted, which needs every step's state.
fn write_payload(
    w: &mut Writer,
    class: &str,
    image: &manifest::Image,
    target_dev: &Path,
    held: Option<install::Held>,
    so_far: &Fetched,
) -> Result<(u64, u64)> {
    let host = w.host;
    let location = crate::fetch::resolve(w.verified.location(), &image.url)?;
    let partial = host.state_dir.partial_file(image.download_sha256());
    let resume = host.config.update.resume_downloads;
    let file_target = host.config.is_file_target(target_dev);
    // A segmented payload with signed frames resumes from the slot: the
    // segments an earlier, cut run wrote are read back and kept, and only
    // the frames after them are fetched. Nothing of it goes to the data
    // partition.
    let from_slot = resumes_from_slot(host, target_dev, image);
    let mut held = match (from_slot, held) {
        (true, Some(held)) => held,
        (true, None) => install::held_prefix(target_dev, image)?,
        (false, _) => install::Held::default(),
    };
    // Any other resumable download keeps the payload on the data
    // partition; when it does not fit there, stream without resume rather
    // than fill the partition (which would stop every later run too).
    let resumable = resume
        && !from_slot
        && has_room_for(host.state_dir.path(), &partial, image.download_size());
    if !resumable {
        host.state_dir.remove_partial(image.download_sha256());
    }
    if resume && !from_slot && !resumable {
        log(&format!(
            "{}: not enough free space for a resumable download of {} bytes; streaming without resume",
            host.state_dir.path().display(),
            image.download_size()
        ));
    }
    let payload_url = host.via_mirror(&location);
    let (transport, verified, opts) = (w.transport, w.verified, w.opts);
    let version = &verified.manifest().version;
    // Whether this is the one download from byte 0 after a resumed one
    // failed its hash (`again_from_zero`).
    let mut again = false;
    // What every attempt fetched, a discarded one's included: the link
    // carried those bytes too (`downloaded_bytes`).
    let mut network = 0u64;
    // Resumes the server answered with the whole payload (it ignores
    // `Range`): a warning counted in `range_ignored`, not a failure.
    let mut ranges_ignored = 0u64;
    // Frames fetched once more (`frame_again`) cross the link as well,
    // with the head of a whole answer to their range; such answers count
    // in `range_ignored` too. (Atomic: the writer may call it from its
    // pipeline's threads.)
    let refetched = std::sync::atomic::AtomicU64::new(0);
    let frame_ranges_ignored = std::sync::atomic::AtomicU64::new(0);
    let e = loop {
        // Where the payload's bytes began this time: > 0 when a partial
        // download (or the slot) supplied the first ones.
        let mut resumed_at = 0u64;
        let opened = match from_slot {
            true => transport.open_payload_from(
                &payload_url,
                image.download_size(),
                held.payload_offset(),
            ),
            false => transport.open_payload(
                &payload_url,
                image.download_size(),
                resumable.then_some(partial.as_path()),
            ),
        };
        // A frame once more, after a segment was read back wrong: one range
        // request (or read) of its bytes, to tell the medium's fault from the
        // payload's (`install::FrameAgain`). A server that ignores `Range`
        // answers with the whole payload: its head is read and dropped, the
        // frame taken, the rest never read, as a resume takes such an
        // answer. Its failure is the transport's as it came (a window that
        // closed, a cut, a 503): the install ends as that failure, blaming
        // neither the release nor the medium. It asks with the validator
        // of the object the payload's bytes came from (`If-Range`, as a
        // resume does): an object replaced since answers whole under
        // another validator, which ends the run as the object's change
        // (`FetchError::Changed`), never checked against the frame's
        // digest as if it were the payload's. A local file's validator is
        // its identity: another file there, or the same rewritten, ends
        // the run the same way (`fetch::payload::file_identity`).
        let object = opened
            .as_ref()
            .ok()
            .and_then(|reader| reader.validator())
            .map(str::to_string);
        let frame_again = |offset: u64, length: u64| -> std::io::Result<Vec<u8>> {
            // Room for the frame up front: the reads that drop a whole
            // answer's head go through it (at most its length at a time),
            // not through read_to_end's 32-byte probe.
            let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
            let mut reader = transport
                .open_range(
                    &payload_url,
                    offset,
                    length,
                    crate::fetch::WholeAnswer::HeadDropped,
                    object.as_deref(),
                )
                .map_err(crate::fetch::FetchError::into_io)?;
            let read = (&mut reader).take(length).read_to_end(&mut bytes);
            refetched.fetch_add(
                bytes.len() as u64 + reader.bytes_dropped(),
                std::sync::atomic::Ordering::Relaxed,
            );
            frame_ranges_ignored.fetch_add(
                reader.ranges_ignored(),
                std::sync::atomic::Ordering::Relaxed,
            );
            // The connection goes here: nothing past the frame is read.
            drop(reader);
            read?;
            match bytes.len() as u64 == length {
                true => Ok(bytes),
                // The range reader ends short only with an error; should
                // one not, it is a cut like any other.
                false => Err(crate::fetch::FetchError::TooShort {
                    location: crate::fetch::redact(&payload_url).into_owned(),
                    got: bytes.len() as u64,
                    expected: length,
                    announced: false,
                }
                .into_io()),
            }
        };
        let result = opened
        .map_err(Error::from)
        .and_then(|mut reader| {
            let attempt = (|| {
            let mut progress = Progress::new(&format!("{class} {version}"), image.size, opts.quiet);
            let resumed = reader.resumed_from();
            resumed_at = resumed;
            if from_slot && resumed != held.payload_offset() {
                // The download restarted from byte 0 (the server answered
                // with another range, or could not serve it).
                held = install::Held::default();
            }
            if held.segments() > 0 {
                log(&format!(
                    "resuming {payload_url} at byte {resumed}: slot {} holds the first {} segments ({} bytes of the image, read back and matched)",
                    target_dev.display(),
                    held.segments(),
                    held.image_bytes()
                ));
            } else if resumed > 0 {
                log(&format!("resuming {payload_url} at byte {resumed}"));
            }
            // A file on the ESP goes to a temporary file first, then is
            // renamed over the old one (`install::file_temp`).
            let path = match file_target {
                true => install::file_temp(target_dev)?,
                false => target_dev.to_path_buf(),
            };
            // The connection closes when the writer is done reading, before
            // it may fetch a frame once more (`frame_again`): a server that
            // allows one connection per client answers that too.
            let written = install::write_image(
                class,
                reader.closing_on_drop(),
                &held,
                image,
                &path,
                host.config.update.max_window_log,
                // A new temporary file has nothing to compare with.
                match file_target {
                    true => WriteMode::All,
                    false => opts.write_mode,
                },
                &mut progress,
                &mut || w.arm(),
                &frame_again,
            );
            let written = match (written, file_target) {
                (Ok(w), true) => install::replace_file(&path, target_dev).map(|()| w),
                (Err(e), true) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
                (w, false) => w,
            }?;
            Ok(written.payload_bytes)
            })();
            network += reader.bytes_from_network();
            ranges_ignored += reader.ranges_ignored();
            attempt
        });
        match result {
            Ok(payload) => {
                host.state_dir.remove_partial(image.download_sha256());
                w.state.metrics.range_ignored += ranges_ignored
                    + frame_ranges_ignored.load(std::sync::atomic::Ordering::Relaxed);
                return Ok((
                    payload,
                    network + refetched.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
            Err(e) => {
                let from_partial = match from_slot {
                    true => 0,
                    false => resumed_at,
                };
                if !again && again_from_zero(&e, from_partial) {
                    let why = match from_partial {
                        0 => e.to_string(),
                        _ => format!(
                            "{e}; the download had resumed at byte {from_partial} from {}",
                            partial.display()
                        ),
                    };
                    log(&format!(
                        "{why}: discarding it and fetching the payload once from the start"
                    ));
                    host.state_dir.remove_partial(image.download_sha256());
                    again = true;
                    continue;
                }
                break e;
            }
        }
    };
    let network = network + refetched.load(std::sync::atomic::Ordering::Relaxed);
    // Bytes that decode or hash wrong would fail the same way on every
    // later run: such a partial download is not resumed. A transport
    // failure (a fetch error now) keeps what arrived for the next run.
    if is_payload_fault(&e) {
        host.state_dir.remove_partial(image.download_sha256());
    }
    // What earlier classes and given-up deltas fetched, and this payload's
    // attempts (a cut one's bytes are kept for the next run, which fetches
    // only the rest).
    w.state.metrics.downloaded_bytes += so_far.network + network;
    w.state.metrics.range_ignored +=
        ranges_ignored + frame_ranges_ignored.load(std::sync::atomic::Ordering::Relaxed);
    let armed = w.armed.is_some();
    w.fail(&e)?;
    if !armed && so_far.network + network > 0 {
        w.flip.save(&w.state)?;
    }
    Err(name_payload_source(e, &payload_url))
}

/// Whether the payload's bytes themselves failed (they decode or hash
/// wrong, or decode to another size), as opposed to the transport, the
/// device or the host.
fn is_payload_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::Install(
            install::InstallError::Payload { .. }
                | install::InstallError::Mismatch { .. }
                | install::InstallError::ImageMismatch { .. }
                | install::InstallError::SegmentMismatch { .. }
                | install::InstallError::FrameMismatch { .. }
                | install::InstallError::Size { .. }
        )
    )
}

/// Whether `e` is a download stopped where its window closed (timer runs):
/// not a failure of the release, the link or the host. Its bytes are kept
/// as a cut download's are, and the run ends waiting for the next window.
fn window_closed(e: &Error) -> bool {
    matches!(
        e,
        Error::Fetch(crate::fetch::FetchError::OutsideWindow { .. })
    )
}

/// Whether a download that failed with `e`, having replayed its first
/// `from_partial` bytes from a partial download, is fetched again from
/// byte 0 before the failure counts: a payload fault of a resumed
/// download, or an object replaced on the server while it downloaded (not
/// one found replaced by a frame fetched once more: that run ends). Its
/// partial bytes may be the fault (damaged on the data partition, or the
/// head of an object the server has replaced since), not the release; a
/// download from 0 that fails so is the release's. The new object's bytes
/// are checked against the signed hashes as any others.
fn again_from_zero(e: &Error, from_partial: u64) -> bool {
    (from_partial > 0 && is_payload_fault(e))
        || matches!(
            e,
            Error::Fetch(crate::fetch::FetchError::Changed {
                range_end: None,
                ..
            })
        )
}

/// A release staged by this run: where, and what it cost.
struct Staged<'a> {
    target: SlotName,
    verified: &'a Verified,
    payload_bytes: u64,
    network_bytes: u64,
}

/// Log that the release waits in `target`, and reboot into it unless told
/// not to or outside the maintenance window, after a last look (`look`,
/// when the run's judgement is older than its write: [`before_reboot`]),
/// holding the site's reboot lock (`[reboot] fleetlock`) and past the
/// `pre_reboot` hook. A release the last look finds no longer offered is
/// disarmed (`Err(Nothing::Disarmed)`).
fn finish_staged(
    host: &Host,
    lock: &StateLock,
    state: &mut State,
    staged: Staged,
    opts: &InstallOptions,
    look: Option<&Look>,
) -> Result<std::result::Result<Installed, Nothing>> {
    let Staged {
        target,
        verified,
        payload_bytes,
        network_bytes,
    } = staged;
    let m = verified.manifest();
    log(&format!(
        "release {} staged in slot {target}; the next boot tries it",
        m.version
    ));
    let windows = &host.config.reboot.windows;
    let in_window = !opts.respect_windows || crate::schedule::may_reboot(windows, now());
    if !in_window && !opts.no_reboot {
        let next = crate::schedule::next_window(windows, now()).map(crate::timefmt::format_rfc3339);
        log(&format!(
            "the reboot waits for the maintenance window (next opens {})",
            next.unwrap_or_else(|| "never".into())
        ));
    }
    let rebooting = !opts.no_reboot && in_window;
    if let Some(look) = look.filter(|_| rebooting) {
        // The write took its time (a slow link at `max_rate`): the
        // release may have been pulled meanwhile.
        let named = format!("release {} was staged in slot {target}", m.version);
        let found = last_look(host, lock, state, look, &named)?;
        match before_reboot(found, &named, &m.sha256) {
            BeforeReboot::Reboot => {}
            BeforeReboot::Disarm(why) => {
                let Some(t) = state.transaction.clone() else {
                    return Err(Error::Refused(Refusal::NothingToInstall { reason: why }));
                };
                let line = disarm(host, lock, state, &t, &why)?;
                let version = t.version;
                return Ok(Err(Nothing::Disarmed { version, line }));
            }
            BeforeReboot::StayStaged(e) => {
                log(&format!(
                    "the last look before the reboot into {} could not be made: {e}; it stays staged and the next run looks again",
                    m.version
                ));
                return Err(e);
            }
        }
    }
    if rebooting {
        // No lock, no reboot: the staged slot waits for the next run.
        host.take_reboot_lock(lock, state, "the staged slot stays staged")?;
        let hook = host.run_hook(
            crate::hooks::Point::PreReboot,
            &host.hook_facts(verified, target.other()),
        );
        if let Err(e) = hook {
            // The reboot is held: the site's slot is not needed now.
            host.release_reboot_lock(lock, state);
            return Err(e);
        }
        log("rebooting into the new slot");
        reboot(host)?;
    }
    Ok(Ok(Installed {
        slot: target,
        version: m.version.to_string(),
        payload_bytes,
        network_bytes,
        rebooting,
    }))
}

/// What the host keeps and reads itself, which no target may be written
/// over: the config and its drop-ins, the state, the trusted keys and the
/// bootloader's variables (found from outside: a file slot configured as
/// the grubenv destroyed the boot environment; as the config, a key or
/// `state.json`, an install staged over it). A block device target is
/// compared with the bootloader's environment by the bytes it holds on
/// its device, not the whole device.
fn own_stores(host: &Host, sys: &crate::slot::Sysfs) -> Vec<crate::slot::InUse> {
    let mut named: Vec<(String, std::path::PathBuf)> = host
        .config
        .files
        .iter()
        .map(|f| ("abupdate's config".to_string(), f.clone()))
        .collect();
    let sd = &host.state_dir;
    for f in [sd.state_file(), sd.prev_file(), sd.lock_file()] {
        named.push(("abupdate's state".into(), f));
    }
    for dir in &host.config.update.keys_dirs {
        for name in crate::files::listed(dir, b".pub").unwrap_or_default() {
            named.push(("a trusted key".into(), dir.join(name)));
        }
    }
    let mut out = crate::slot::in_use(&named, &[], None, sys);
    for store in host.boot.env_stores() {
        let Ok(dev) = Device::inspect(&store.path) else {
            continue;
        };
        let storage = dev.storage(sys);
        out.push(crate::slot::InUse {
            what: "the bootloader's environment".into(),
            storage: match store.range {
                Some((offset, len)) => storage.within(offset, len),
                None => storage,
            },
            path: store.path,
        });
    }
    out
}

/// Refuse targets that share storage with the booted slot, the root
/// filesystem, a mounted filesystem or each other, or that the kernel says
/// are in use, and images that do not fit; returns the target devices by
/// class. (The invariant and its checks live in `slot`.)
fn check_targets(
    host: &Host,
    verified: &Verified,
    booted: SlotName,
) -> Result<BTreeMap<String, Device>> {
    let m = verified.manifest();
    let target = booted.other();
    let mounted = system::mounted_devices_of(&host.config.system.mountinfo)?;
    let sys = crate::slot::Sysfs::system();
    let booted_devices: Vec<(String, std::path::PathBuf)> = host.config.slots[&booted]
        .iter()
        .map(|(class, p)| (format!("slot {booted} {class}, the booted slot"), p.clone()))
        .collect();
    // The booted slot's devices, inspected once: what a target must not
    // share, and where a file target must not live.
    let booted_storage = crate::slot::in_use(&booted_devices, &[], None, &sys);
    let mut in_use = booted_storage.clone();
    in_use.extend(crate::slot::in_use(
        &[],
        &mounted,
        crate::slot::root_device(),
        &sys,
    ));
    in_use.extend(own_stores(host, &sys));
    let mut devices = BTreeMap::new();
    for (class, image) in &m.doc.images {
        let Some(path) = host.config.device(target, class) else {
            // `judge` refused it already (the same facts); kept as the
            // guard of this function's own promise.
            return Err(NotApplicable::UnknownClass {
                class: class.clone(),
                configured: host.config.slots[&target].keys().cloned().collect(),
            }
            .into());
        };
        if host.config.is_file_target(path) {
            devices.insert(
                class.clone(),
                check_file_target(host, booted, class, path, image)?,
            );
            continue;
        }
        let dev = Device::inspect(path)?;
        let storage = dev.storage(&sys);
        crate::slot::check_target(path, &storage, &in_use)?;
        crate::slot::check_file_homes(path, &storage, &sys, &booted_storage)?;
        dev.probe_exclusive()?;
        if image.size > dev.size {
            return Err(SlotError::TooSmall {
                path: path.to_path_buf(),
                class: class.clone(),
                image: image.size,
                device: dev.size,
            }
            .into());
        }
        // Two classes of one release must not land on the same bytes.
        in_use.push(crate::slot::InUse {
            path: path.to_path_buf(),
            what: format!("slot {target} {class}, also written by this release"),
            storage,
        });
        devices.insert(class.clone(), dev);
    }
    Ok(devices)
}

/// A class installed as a file on the ESP (a kernel, a UKI): never the
/// booted slot's file, and room for the new file next to the old one.
fn check_file_target(
    host: &Host,
    booted: SlotName,
    class: &str,
    path: &std::path::Path,
    image: &crate::manifest::Image,
) -> Result<Device> {
    if host.config.device(booted, class) == Some(path) {
        return Err(SlotError::Refused {
            path: path.to_path_buf(),
            reason: format!("is the booted slot {booted}'s file"),
        }
        .into());
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if let Ok(st) = nix::sys::statvfs::statvfs(dir) {
        // The field types are narrower on 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < image.size {
            return Err(SlotError::TooSmall {
                path: dir.to_path_buf(),
                class: class.to_string(),
                image: image.size,
                device: free,
            }
            .into());
        }
    }
    Ok(Device {
        path: path.to_path_buf(),
        rdev: None,
        file_id: None,
        size: image.size,
    })
}

/// Whether `dir`'s filesystem can take the rest of a `size`-byte download
/// into `partial`, with a margin for the state file.
fn has_room_for(dir: &std::path::Path, partial: &std::path::Path, size: u64) -> bool {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => {
            // The field types are narrower on 32-bit targets.
            #[allow(clippy::unnecessary_cast)]
            let free = st.blocks_available() as u64 * st.fragment_size() as u64;
            free >= size.saturating_sub(have) + (4 << 20)
        }
        Err(_) => true,
    }
}

/// Rebuild `class` in the target from the booted slot and the release's
/// delta, when the booted slot holds a listed source: `Some(bytes fetched)`.
/// `None`: install the full payload instead (the reason is logged). The
/// second value is what a delta that was given up fetched.
fn try_delta(
    w: &mut Writer,
    class: &str,
    image: &manifest::Image,
    target_dev: &Path,
) -> Result<(Option<u64>, u64)> {
    let (host, booted, verified) = (w.host, w.booted, w.verified);
    if image.deltas.is_empty() {
        return Ok((None, 0));
    }
    let Some(booted_dev) = host.config.device(booted, class) else {
        return Ok((None, 0));
    };
    let device_size = Device::inspect(booted_dev)?.size;
    let recorded = w
        .state
        .slot(booted)
        .images
        .get(class)
        .map(|r| r.sha256.clone());
    let boot_id = host.boot_id().unwrap_or_default();
    let chosen = crate::delta::choose(
        image,
        booted_dev,
        device_size,
        recorded.as_deref(),
        &mut w.state.source_hashes,
        &boot_id,
        crate::delta::HOST_MAX_WINDOW_LOG,
    );
    let (source_sha256, delta) = match chosen {
        Ok(c) => c,
        Err(reason) => {
            log(&format!("{class}: installing the full image: {reason}"));
            return Ok((None, 0));
        }
    };
    let location = host.via_mirror(&crate::fetch::resolve(verified.location(), &delta.url)?);
    let journal = host.state_dir.path().join(format!("delta-{class}.journal"));
    let plan = crate::delta::Plan {
        transport: w.transport,
        location,
        delta,
        source_sha256,
        image,
        source_device: booted_dev,
        target_device: target_dev,
        journal: journal.clone(),
    };
    let mut progress = Progress::new(
        &format!("{class} {} (delta)", verified.manifest().version),
        image.size,
        w.opts.quiet,
    );
    let outcome = crate::delta::apply(&plan, &mut progress, &mut || w.arm()).map_err(|e| {
        match e.downcast::<Error>() {
            // The step before the first write failed: its own error.
            Ok(e) => e,
            // The download window closed: the delta stops, its journal
            // kept for the next run (not a fallback to the full image).
            Err(e) => match crate::fetch::FetchError::from_io(&e) {
                Some(f @ crate::fetch::FetchError::OutsideWindow { .. }) => Error::Fetch(f.clone()),
                _ => Error::io(target_dev, e),
            },
        }
    })?;
    progress.finish();
    match outcome {
        crate::delta::Outcome::Applied {
            fetched,
            segments_fetched,
            segments_reused,
        } => {
            // Every segment was read back from the medium and matched its
            // signed digest in this run (the one slot writer's invariant).
            let _ = std::fs::remove_file(&journal);
            log(&format!(
                "{class}: rebuilt from the booted slot by delta: {segments_fetched} segments fetched ({fetched} bytes), {segments_reused} already done"
            ));
            Ok((Some(fetched), 0))
        }
        crate::delta::Outcome::Fallback {
            reason,
            fetched,
            range_ignored,
        } => {
            let _ = std::fs::remove_file(&journal);
            if range_ignored {
                w.state.metrics.range_ignored += 1;
            }
            log(&format!(
                "{class}: delta not used ({reason}); installing the full image"
            ));
            Ok((None, fetched))
        }
    }
}

/// Name the payload's URL in an error about its bytes (a zstd error, a hash
/// or size mismatch) that does not name it yet.
fn name_payload_source(e: Error, url: &str) -> Error {
    use install::InstallError as E;
    let named = |what: String| format!("{what} from {url}");
    match e {
        Error::Install(E::Payload { what, reason }) if !reason.contains(url) => {
            Error::Install(E::Payload {
                what: named(what),
                reason,
            })
        }
        Error::Install(E::Size { what, reason }) if !reason.contains(url) => {
            Error::Install(E::Size {
                what: named(what),
                reason,
            })
        }
        Error::Install(E::Mismatch {
            what,
            expected,
            actual,
        }) if !what.contains(url) => Error::Install(E::Mismatch {
            what: named(what),
            expected,
            actual,
        }),
        Error::Install(E::ImageMismatch {
            what,
            expected,
            actual,
        }) if !what.contains(url) => Error::Install(E::ImageMismatch {
            what: named(what),
            expected,
            actual,
        }),
        Error::Install(E::SegmentMismatch {
            what,
            offset,
            length,
            algorithm,
            expected,
            actual,
            medium_checked,
        }) if !what.contains(url) => Error::Install(E::SegmentMismatch {
            what: named(what),
            offset,
            length,
            algorithm,
            expected,
            actual,
            medium_checked,
        }),
        Error::Install(E::FrameMismatch {
            what,
            index,
            patch,
            expected,
            actual,
        }) if !what.contains(url) => Error::Install(E::FrameMismatch {
            what: named(what),
            index,
            patch,
            expected,
            actual,
        }),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGED: &str = "release 2.0 was staged in slot B";

    fn write_of_2_0(phase: Phase) -> Transaction {
        Transaction {
            from: SlotName::A,
            to: SlotName::B,
            version: "2.0".into(),
            manifest_sha256: "aa".into(),
            phase,
            started: 1,
            staged_boot_id: None,
            images: BTreeMap::new(),
            unknown: Default::default(),
        }
    }

    fn nothing(kind: NoUpdate) -> Nothing {
        Nothing::UpToDate {
            reason: "r".into(),
            kind,
            standing: None,
        }
    }

    #[test]
    fn an_interrupted_write_of_a_release_not_offered_any_more_is_ended() {
        let t = write_of_2_0(Phase::Writing);
        for kind in [
            NoUpdate::NotNewer,
            NoUpdate::Halted,
            NoUpdate::WaitingForWave,
            NoUpdate::OnWithdrawn,
            NoUpdate::NotModified,
        ] {
            assert!(
                ends_write(&t, SlotName::A, &nothing(kind), false),
                "{kind:?}"
            );
        }
        let failed = Nothing::NotWanted {
            why: NotApplicable::PreviouslyFailed {
                version: "2.0".into(),
            },
            standing: None,
        };
        assert!(ends_write(&t, SlotName::A, &failed, false));
    }

    #[test]
    fn an_interrupted_write_stays_when_it_may_still_be_redone_or_is_not_the_timer_s() {
        let t = write_of_2_0(Phase::Writing);
        let window = nothing(NoUpdate::WaitingForDownloadWindow);
        assert!(!ends_write(&t, SlotName::A, &window, false), "only delayed");
        let halted = nothing(NoUpdate::Halted);
        assert!(!ends_write(&t, SlotName::A, &halted, true), "by hand");
        assert!(
            !ends_write(&t, SlotName::B, &halted, false),
            "booted into the slot written: the trial's boot settles it"
        );
        let staged = write_of_2_0(Phase::Staged);
        assert!(
            !ends_write(&staged, SlotName::A, &halted, false),
            "a disarm's"
        );
    }

    #[test]
    fn the_same_manifest_still_offered_reboots() {
        let found = Found::Applies {
            manifest_sha256: "aa".into(),
        };
        assert!(matches!(
            before_reboot(found, STAGED, "aa"),
            BeforeReboot::Reboot
        ));
    }

    #[test]
    fn a_release_no_longer_offered_is_disarmed_with_the_line_that_says_why() {
        let why = "release 2.0 was staged in slot B and is withdrawn from the release channel u";
        match before_reboot(Found::NotOffered(why.into()), STAGED, "aa") {
            BeforeReboot::Disarm(line) => assert_eq!(line, why),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_manifest_for_the_release_disarms_the_staged_one() {
        let found = Found::Applies {
            manifest_sha256: "bb".into(),
        };
        match before_reboot(found, STAGED, "aa") {
            BeforeReboot::Disarm(line) => {
                assert!(line.starts_with(STAGED), "{line}");
                assert!(line.contains("bb"), "{line}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_last_look_that_cannot_be_made_keeps_the_release_staged_without_a_reboot() {
        let down = Error::io("/x", std::io::Error::other("connection refused"));
        match before_reboot(Found::Unread(down), STAGED, "aa") {
            BeforeReboot::StayStaged(e) => assert!(e.to_string().contains("refused")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_resumed_download_whose_bytes_fail_is_fetched_again_from_zero() {
        let hash = || {
            Error::Install(install::InstallError::Mismatch {
                what: "rootfs payload".into(),
                expected: "a".into(),
                actual: "b".into(),
            })
        };
        let decode = || {
            Error::Install(install::InstallError::Payload {
                what: "rootfs payload".into(),
                reason: "zstd: corrupted block".into(),
            })
        };
        let device = || {
            Error::Install(install::InstallError::Device {
                path: "/dev/sdb2".into(),
                source: std::io::Error::other("EIO"),
            })
        };
        // Resumed: the partial's bytes may be the fault, not the release.
        assert!(again_from_zero(&hash(), 1_500_000));
        assert!(again_from_zero(&decode(), 1));
        // From byte 0 the payload itself failed: the release's fault.
        assert!(!again_from_zero(&hash(), 0));
        assert!(!again_from_zero(&decode(), 0));
        // Not the payload's bytes: nothing to fetch again.
        assert!(!again_from_zero(&device(), 1_500_000));
        // The object was replaced on the server mid-download: its new bytes
        // from 0, whether the download began this run or from a partial.
        let changed = || {
            Error::Fetch(crate::fetch::FetchError::Changed {
                location: "https://u.example/p".into(),
                at: 7,
                validator: "\"v1\"".into(),
                range_end: None,
            })
        };
        assert!(again_from_zero(&changed(), 0));
        assert!(again_from_zero(&changed(), 1_500_000));
        // Replaced while a frame was fetched once more (a segment read
        // back otherwise than written): the run ends on it; within it,
        // a download from 0 would take every frame after the held ones
        // from an object not known to be signed.
        let frame_changed = Error::Fetch(crate::fetch::FetchError::Changed {
            location: "https://u.example/p".into(),
            at: 7,
            validator: "\"v1\"".into(),
            range_end: Some(9),
        });
        assert!(!again_from_zero(&frame_changed, 0));
        assert!(!again_from_zero(&frame_changed, 1_500_000));
        // Any other transport failure keeps the partial for the next run.
        let cut = Error::Fetch(crate::fetch::FetchError::TooShort {
            location: "https://u.example/p".into(),
            got: 7,
            expected: 9,
            announced: false,
        });
        assert!(!again_from_zero(&cut, 7));
        assert!(!window_closed(&cut));
        // A download stopped where its window closed: its bytes are kept
        // (not a payload fault) and not fetched again within the run.
        let closed = Error::Fetch(crate::fetch::FetchError::OutsideWindow {
            location: "https://u.example/p".into(),
            at: 7,
            until: 1_800_000_000,
        });
        assert!(window_closed(&closed));
        assert!(!is_payload_fault(&closed));
        assert!(!again_from_zero(&closed, 7));
    }

    fn pending(phase: Phase, to: SlotName, image: &manifest::Image) -> Transaction {
        let mut t = write_of_2_0(phase);
        t.to = to;
        t.images.insert(
            "boot".into(),
            ImageRef {
                sha256: image.sha256.clone(),
                size: image.size,
                ..Default::default()
            },
        );
        t
    }

    #[test]
    fn a_slot_is_read_back_first_only_for_an_image_its_pending_write_recorded() {
        let (image, _) = crate::testutil::one_frame_image(b"boot 2.0", None);
        let writing = pending(Phase::Writing, SlotName::B, &image);
        assert!(may_hold(Some(&writing), SlotName::B, "boot", &image));
        // A signed-again manifest of the same image: its hash decides.
        let mut resigned = writing.clone();
        resigned.manifest_sha256 = "bb".into();
        assert!(may_hold(Some(&resigned), SlotName::B, "boot", &image));
    }

    #[test]
    fn a_fresh_install_reads_no_slot_back_first() {
        let (image, _) = crate::testutil::one_frame_image(b"boot 2.0", None);
        assert!(!may_hold(None, SlotName::B, "boot", &image));
    }

    #[test]
    fn a_staged_release_is_not_a_pending_write() {
        // Installed again (the bootloader no longer boots it): as fresh.
        let (image, _) = crate::testutil::one_frame_image(b"boot 2.0", None);
        let staged = pending(Phase::Staged, SlotName::B, &image);
        assert!(!may_hold(Some(&staged), SlotName::B, "boot", &image));
    }

    #[test]
    fn a_pending_write_into_the_other_slot_does_not_count() {
        let (image, _) = crate::testutil::one_frame_image(b"boot 2.0", None);
        let other = pending(Phase::Writing, SlotName::A, &image);
        assert!(!may_hold(Some(&other), SlotName::B, "boot", &image));
    }

    #[test]
    fn a_class_the_pending_write_did_not_record_is_not_read_back() {
        let (image, _) = crate::testutil::one_frame_image(b"boot 2.0", None);
        let writing = pending(Phase::Writing, SlotName::B, &image);
        assert!(!may_hold(Some(&writing), SlotName::B, "rootfs", &image));
    }

    #[test]
    fn another_image_of_the_class_is_not_read_back() {
        let (image, _) = crate::testutil::one_frame_image(b"boot 2.0", None);
        let writing = pending(Phase::Writing, SlotName::B, &image);
        let (newer, _) = crate::testutil::one_frame_image(b"boot 2.1", None);
        assert!(!may_hold(Some(&writing), SlotName::B, "boot", &newer));
        let mut longer = image.clone();
        longer.size += 1;
        assert!(!may_hold(Some(&writing), SlotName::B, "boot", &longer));
    }

    /// What a pending write's slot is found to hold: a one-frame image
    /// whole or not at all (its SHA-256 over every byte); a payload that
    /// resumes from the slot by its segments, whole, or the prefix the
    /// write resumes after.
    #[test]
    fn a_slot_is_found_whole_only_when_every_byte_reads_back_as_signed() {
        let data = crate::testutil::image_bytes(3 << 20);
        let (_dir, slot) = crate::testutil::sized_target("in-slot", 4 << 20);
        let (one_frame, _) = crate::testutil::one_frame_image(&data, Some(3));
        let (segmented, _) = crate::testutil::segmented_image(&data, 1 << 20);
        let found = |image: &manifest::Image, from_slot| {
            in_slot(&slot, image, from_slot).expect("read back")
        };
        assert!(matches!(found(&one_frame, false), InSlot::NotHeld));
        assert!(matches!(found(&segmented, true), InSlot::Prefix(h) if h.segments() == 0));
        let mut bytes = data.clone();
        bytes.resize(4 << 20, 0);
        std::fs::write(&slot, &bytes).expect("slot");
        assert!(matches!(found(&one_frame, false), InSlot::Whole));
        assert!(matches!(found(&segmented, true), InSlot::Whole));
        assert!(matches!(found(&segmented, false), InSlot::Whole));
        // One byte changed in the last segment.
        bytes[(2 << 20) + 5] ^= 1;
        std::fs::write(&slot, &bytes).expect("slot");
        assert!(matches!(found(&one_frame, false), InSlot::NotHeld));
        assert!(matches!(found(&segmented, true), InSlot::Prefix(h) if h.segments() == 2));
        assert!(matches!(found(&segmented, false), InSlot::NotHeld));
    }

    #[test]
    fn only_a_304_is_worded_as_an_unchanged_manifest() {
        let url = "https://user:secret@updates.example.com/release.json";
        let r = nothing_to_install(NoUpdate::NotModified, "304".into(), url);
        assert_eq!(
            r.to_string(),
            "https://***@updates.example.com/release.json: release manifest unchanged since the last check"
        );
    }

    #[test]
    fn a_wave_that_has_not_come_says_so() {
        let r = nothing_to_install(NoUpdate::WaitingForWave, "2.0 waits".into(), "x");
        assert_eq!(
            r,
            Refusal::WaitingForWave {
                reason: "2.0 waits".into()
            }
        );
    }

    #[test]
    fn every_other_nothing_to_do_says_its_own_reason() {
        for kind in [
            NoUpdate::NotNewer,
            NoUpdate::PreviouslyFailed,
            NoUpdate::OnProbation,
            NoUpdate::Halted,
            NoUpdate::OnWithdrawn,
            NoUpdate::WaitingForDownloadWindow,
            NoUpdate::StagedNotOffered,
        ] {
            let r = nothing_to_install(kind, "the release channel is halted".into(), "x");
            assert_eq!(
                r.to_string(),
                "nothing to install: the release channel is halted",
                "{kind:?}"
            );
        }
    }
}
