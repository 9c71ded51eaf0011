//! `update`: the timer's job: wait out a backoff and the jitter, then
//! check, and install and reboot when a release applies (one judgement,
//! [`super::install`]'s `check_and_install`).
//!
//! On a channel host, a staged trial the channel no longer offers is
//! disarmed (outcome [`UpdateOutcome::Disarmed`]), and a release on
//! probation that the channel withdraws is rolled back late
//! ([`super::probation`]), or kept when the old slot is not usable
//! ([`UpdateOutcome::NoFallback`]); during a probation only the channel
//! is fetched.
//!
//! The order of a run's steps is one pure decision ([`plan`], unit-tested
//! per branch) over plain facts ([`RunFacts`]). A backoff delays new
//! attempts (downloads, installs, a trial's lock request), never the
//! safety steps: the probation's watch (a withdrawal rolls back) and the
//! disarm of a staged release the channel no longer offers run before the
//! backoff's return, since a staged release stays armed until then and
//! any reboot (a power cut) would boot it; and the reboot a planned late
//! rollback owes is asked for (the site's lock, then the reboot) at every
//! tick until it happens, since until then the host runs the release its
//! channel withdrew, and the backoff may be an unrelated failure's (up to
//! `backoff_max`). A refused lock is counted (kind `fleetlock`) and
//! schedules a backoff like any failure, which delays the attempts that
//! follow the rollback, not the next tick's lock request: the timer's
//! cadence paces those, one request per tick.
//!
//! Invariant: every run ends in exactly one report: a success resets the
//! backoff, a failure counts its kind and schedules the next try
//! ([`super::report`]); a channel that cannot be read during a probation
//! is counted so too, the probation's watch step still runs, and the run
//! ends as the failure it is (unless the watch rolled back). A late
//! rollback's owed reboot waits for the maintenance window
//! ([`Then::WaitForRebootWindow`]) as well as for the site's lock, but
//! not for a backoff. A safety
//! check that cannot read the channel while the host backs off disarms
//! nothing and is only logged: the backoff's failure is counted already,
//! and counting it again would push the next attempt further away.

use super::check::{
    on_probation, probation_withdrawal, staged_not_offered, CheckOptions, NoUpdate, Nothing,
};
use super::install::check_and_install;
use super::probation;
use super::recovery::{disarm, finish_rollback};
use super::report::record_success;
use super::transition::Transition;
use super::verdict::Verdict;
use super::{log, record_failure, Host, InstallOptions, Installed};
use crate::error::Result;
use crate::install::WriteMode;
use crate::rollout::Standing;
use crate::state::{Phase, State};
use crate::timefmt::now;

/// Options of the timer's `update`.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateOptions {
    /// Skip jitter and backoff (a manual run).
    pub now: bool,
    /// Stage without rebooting.
    pub no_reboot: bool,
    /// No progress output.
    pub quiet: bool,
}

/// What the timer's `update` did.
#[derive(Debug)]
pub enum UpdateOutcome {
    /// An earlier failure asks to wait until then.
    BackingOff {
        /// Unix time.
        until: i64,
    },
    /// Nothing to do, and why (as `check` says it).
    UpToDate {
        /// Why, for a person.
        reason: String,
        /// Why, as a stable label.
        kind: NoUpdate,
        /// Where the host stands in its rollout.
        standing: Option<Standing>,
    },
    /// A release was installed (and the reboot requested, in a window).
    Installed(Installed),
    /// A staged trial the release channel no longer offers (withdrawn,
    /// halted, past a barrier) was disarmed: the running slot boots next,
    /// no reboot, and the failed list untouched.
    Disarmed {
        /// The release that was staged.
        version: String,
        /// The line that says so (the release, its slot, why).
        reason: String,
    },
    /// The booted release failed its probation: rolled back to the old
    /// slot (and the reboot requested).
    RolledBackLate {
        /// The release rolled back.
        version: String,
        /// Why.
        reason: String,
    },
    /// The booted release failed its probation, but the old slot is not
    /// usable: kept, nothing rolled back (a failure, kind `no_fallback`).
    NoFallback {
        /// The release kept.
        version: String,
        /// Why, naming the old slot and what is wrong with it.
        reason: String,
    },
}

/// A safety check of the timer's run: never delayed by a backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Watch the probation: restarts and checks counted, the release
    /// channel asked whether it withdraws the release.
    WatchProbation,
    /// Ask the release channel whether it still offers the staged
    /// release, and disarm it otherwise. Without a backoff the attempt's
    /// judgement does this first itself, from its one fetch of the
    /// channel, so it is planned only while backing off.
    DisarmUnoffered,
}

/// How the run goes on once its safety checks changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// An earlier failure asks to wait until then (Unix time): the run
    /// ends.
    BackOff {
        /// Unix time.
        until: i64,
    },
    /// A planned late rollback's reboot is owed: ask for the site's lock
    /// and reboot into the old slot, whatever the backoff (a safety step,
    /// not a new attempt: until it reboots, the host runs a release its
    /// channel withdrew). A refused lock is asked again at the next tick.
    /// Nothing is installed meanwhile.
    FinishRollback,
    /// A planned late rollback's reboot is owed, but the maintenance
    /// window is closed: the run ends, whatever the backoff, saying so (the
    /// old slot boots next already, so any reboot meanwhile boots it);
    /// no lock is asked for, nothing is installed meanwhile.
    WaitForRebootWindow,
    /// Wait the jitter, then check, install and reboot: a new attempt.
    Attempt,
}

/// The order of a run's steps: the safety checks, in order (the first
/// that ends the run ends it), then the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The safety checks, in order.
    pub checks: Vec<Check>,
    /// What follows when none of them ended the run.
    pub then: Then,
}

/// What the order of a run's steps is decided from: plain data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunFacts {
    /// A release is on probation.
    pub on_probation: bool,
    /// A trial is staged in the other slot, waiting for its reboot.
    pub staged: bool,
    /// The host follows a release channel (`[update] channel`).
    pub channel: bool,
    /// An earlier failure's backoff runs until then (Unix time; `None`
    /// for `--now` and when none is believed). It delays only new
    /// attempts, never an owed reboot.
    pub backing_off: Option<i64>,
    /// A planned late rollback's reboot waits for the site's lock (and
    /// the maintenance window).
    pub reboot_owed: bool,
    /// Maintenance windows are configured (`[[reboot.window]]`) and none
    /// is open now.
    pub reboot_window_closed: bool,
}

/// The steps of this run, in order. The safety checks come first,
/// whatever the backoff: the probation's watch, and, while backing off,
/// the disarm of a staged release the channel no longer offers (a staged
/// release is armed: any reboot boots it). Then the reboot a planned late
/// rollback owes, whatever the backoff: it is a safety step, not a new
/// attempt (the host runs a release its channel withdrew until it
/// reboots, and the backoff may be an unrelated failure's, up to
/// `backoff_max`); it waits only for a maintenance window and the site's
/// lock, and a refused lock is asked again at the next tick (the timer's
/// cadence paces it: one request per tick, as zincati does). Then the
/// backoff, which delays only new attempts, or the attempt.
pub fn plan(f: &RunFacts) -> Plan {
    let mut checks = Vec::new();
    if f.on_probation {
        checks.push(Check::WatchProbation);
    }
    if f.backing_off.is_some() && f.staged && f.channel {
        checks.push(Check::DisarmUnoffered);
    }
    let then = match (f.reboot_owed, f.backing_off) {
        (true, _) if f.reboot_window_closed => Then::WaitForRebootWindow,
        (true, _) => Then::FinishRollback,
        (false, Some(until)) => Then::BackOff { until },
        (false, None) => Then::Attempt,
    };
    Plan { checks, then }
}

/// The timer's job: check, then install and reboot (inside a maintenance
/// window, when windows are configured) when a release applies; the steps
/// in [`plan`]'s order.
pub fn update(host: &Host, opts: UpdateOptions) -> Result<UpdateOutcome> {
    release_pending_lock(host);
    for check in plan(&run_facts(host, opts)?).checks {
        let ended = match check {
            Check::WatchProbation => watch_probation(host, opts)?,
            Check::DisarmUnoffered => disarm_unoffered(host)?,
        };
        if let Some(outcome) = ended {
            return Ok(outcome);
        }
    }
    // The checks may have changed the facts (a probation ended, a failure
    // counted): what follows is decided on the state after them.
    match plan(&run_facts(host, opts)?).then {
        Then::BackOff { until } => Ok(UpdateOutcome::BackingOff { until }),
        Then::FinishRollback => finish_planned_rollback(host, opts),
        Then::WaitForRebootWindow => owed_reboot_waits(host),
        Then::Attempt => attempt(host, opts),
    }
}

/// The facts [`plan`] decides from, as the state and the host say now.
fn run_facts(host: &Host, opts: UpdateOptions) -> Result<RunFacts> {
    Ok(facts_of(host, &host.state_dir.load()?, opts))
}

/// The facts [`plan`] decides from `state` (a snapshot the caller read:
/// `status` shows its whole view from one) and the host as it is now.
pub(super) fn facts_of(host: &Host, state: &State, opts: UpdateOptions) -> RunFacts {
    // Unknown here, the attempt reports it (counted, backed off).
    let booted = host.booted_slot().ok();
    let max = host.config.update.backoff_max;
    RunFacts {
        on_probation: state.on_probation().is_some(),
        staged: state
            .transaction
            .as_ref()
            .is_some_and(|t| t.phase == Phase::Staged && Some(t.to) != booted),
        channel: host.config.update.channel.is_some(),
        reboot_owed: booted.is_some_and(|b| state.reboot_owed(b).is_some()),
        reboot_window_closed: !crate::schedule::may_reboot(&host.config.reboot.windows, now()),
        backing_off: match opts.now {
            true => None,
            false => crate::schedule::backing_off_until(state.metrics.retry_after, now(), max),
        },
    }
}

/// While backing off: the staged trial the release channel no longer
/// offers is disarmed (a success: the backoff it waited out is over, and
/// the next run installs what the channel offers). A channel that cannot
/// be fetched or believed disarms nothing and is only logged.
fn disarm_unoffered(host: &Host) -> Result<Option<UpdateOutcome>> {
    let outcome = {
        let lock = host.state_dir.lock()?;
        let mut state = host.state_dir.load()?;
        let unoffered = staged_not_offered(host, &mut state);
        // The channel's `created` floor, whatever it says.
        lock.save(&state)?;
        match unoffered {
            Ok(Some((staged, why))) => {
                let reason = disarm(host, &lock, &mut state, &staged, &why)?;
                Some(UpdateOutcome::Disarmed {
                    version: staged.version,
                    reason,
                })
            }
            Ok(None) => None,
            Err(e) => {
                log(&format!(
                    "warning: the release channel could not be read to judge the staged \
                     release while backing off: {e}; it stays staged"
                ));
                None
            }
        }
    };
    if outcome.is_some() {
        record_success(host);
    }
    Ok(outcome)
}

/// A new attempt: the jitter (unless `--now`), then check, install and
/// reboot, reported (a success resets the backoff, a failure counts).
fn attempt(host: &Host, opts: UpdateOptions) -> Result<UpdateOutcome> {
    // No source configured is the config's fault, not a failed attempt:
    // said (exit 2) on every run, never counted, so no backoff hides it
    // behind a success (found from outside).
    let location = host.release_location(None)?;
    if !opts.now {
        let state = host.state_dir.load()?;
        if let Some(t) = state.metrics.retry_after.filter(|&t| t > now()) {
            log(&format!(
                "ignoring a backoff until {}: further ahead than backoff_max allows (set under a clock that ran ahead)",
                crate::timefmt::format_rfc3339(t)
            ));
        }
        let delay = crate::schedule::jitter(host.config.update.jitter);
        if !delay.is_zero() {
            log(&format!(
                "waiting {}s (jitter) before checking",
                delay.as_secs()
            ));
            std::thread::sleep(delay);
        }
    }
    let mut release = None;
    let check = CheckOptions {
        allow_downgrade: false,
        rollout: true,
        by_hand: false,
    };
    let install_opts = InstallOptions {
        allow_downgrade: false,
        no_reboot: opts.no_reboot,
        write_mode: WriteMode::All,
        quiet: opts.quiet,
        respect_windows: true,
    };
    let result =
        check_and_install(host, &location, check, &install_opts, &mut release).map(|found| {
            match found {
                Ok(done) => UpdateOutcome::Installed(done),
                Err(Nothing::Disarmed { version, line }) => UpdateOutcome::Disarmed {
                    version,
                    reason: line,
                },
                Err(nothing) => {
                    let (reason, kind, standing) = nothing.explain();
                    UpdateOutcome::UpToDate {
                        reason,
                        kind,
                        standing,
                    }
                }
            }
        });
    match &result {
        Ok(_) => record_success(host),
        Err(e) => record_failure(
            host,
            e,
            release
                .as_ref()
                .map(|(v, b)| (v.as_str(), Some(b.as_str()))),
        ),
    }
    result
}

/// A release on probation: one step of its watch (checks re-run, restarts
/// counted, the release channel asked whether it withdraws the release),
/// and nothing else fetched while it lasts. `None` when no release is on
/// probation (any more): the update goes on. A channel that cannot be
/// fetched or believed is counted as a failure (its kind), after the
/// watch's step, which it does not stop.
///
/// A watch that finds the release healthy (or passes its probation)
/// reports no success, so it leaves an earlier backoff running: the watch
/// is a safety check, not an attempt, and a healthy running release says
/// nothing of what failed before (e.g. a channel that could not be
/// read); the backoff paces retries of that, and only a run that gets
/// through ends it.
fn watch_probation(host: &Host, opts: UpdateOptions) -> Result<Option<UpdateOutcome>> {
    let Some(version) = host
        .state_dir
        .load()?
        .on_probation()
        .map(|p| p.version.clone())
    else {
        return Ok(None);
    };
    let (outcome, unread) = {
        let lock = host.state_dir.lock()?;
        let mut state = host.state_dir.load()?;
        let booted = host.booted_slot()?;
        let (withdrawn, unread) = match probation_withdrawal(host, &mut state, &version) {
            Ok(w) => (w, None),
            Err(e) => {
                log(&format!(
                    "warning: the release channel could not be read during the probation of \
                     {version}: {e}; the probation goes on as it was"
                ));
                (None, Some(e))
            }
        };
        // The channel's `created` floor, whatever the watch then decides.
        lock.save(&state)?;
        let flip = Transition::new(host, &lock);
        let verdict = probation::watch(
            host,
            &flip,
            &mut state,
            booted,
            withdrawn.as_deref(),
            (opts.no_reboot, opts.quiet),
        );
        let outcome = verdict.map(|verdict| match verdict {
            Some(Verdict::RolledBackLate { version, reason }) => {
                Some(UpdateOutcome::RolledBackLate { version, reason })
            }
            Some(Verdict::NoFallback { version, reason }) => {
                Some(UpdateOutcome::NoFallback { version, reason })
            }
            _ => on_probation(&state).map(|reason| UpdateOutcome::UpToDate {
                reason,
                kind: NoUpdate::OnProbation,
                standing: None,
            }),
        });
        (outcome, unread)
    };
    // The state lock is given back: each failure is counted with its own
    // (a planned rollback's reboot refused the site's lock: `fleetlock`,
    // and the timer backs off as for an update's).
    if let Some(e) = &unread {
        record_failure(host, e, None);
    }
    if let Err(e) = &outcome {
        record_failure(host, e, Some((&version, None)));
    }
    ended_by_watch(outcome, unread)
}

/// How a run whose probation was watched ends: a rollback (or a kept
/// release) the watch decided is the run's outcome, whatever else
/// happened; otherwise a channel that could not be read makes it the
/// failed run it is (exit 1, `{"error","kind"}`), counted once above,
/// never "up to date"; otherwise what the watch said. Pure.
fn ended_by_watch(
    watched: Result<Option<UpdateOutcome>>,
    unread: Option<crate::error::Error>,
) -> Result<Option<UpdateOutcome>> {
    match (watched, unread) {
        (Ok(Some(UpdateOutcome::UpToDate { .. })) | Ok(None), Some(e)) => Err(e),
        (watched, _) => watched,
    }
}

/// The reboot a planned late rollback owes ([`crate::state::State::reboot_owed`]):
/// the old slot made the next boot again, then the reboot, with the
/// site's lock only. Reported as any run: no lock is a failure of kind
/// `fleetlock` (counted, a backoff scheduled for the attempts after the
/// rollback; [`plan`] asks again at the next tick, whatever the backoff);
/// a reboot is a success, which ends any backoff (the host comes back on
/// another release, and the next attempt judges the channel anew).
fn finish_planned_rollback(host: &Host, opts: UpdateOptions) -> Result<UpdateOutcome> {
    let mut version = None;
    let result = (|| {
        let lock = host.state_dir.lock()?;
        let mut state = host.state_dir.load()?;
        let booted = host.booted_slot()?;
        let Some(owed) = state.reboot_owed(booted).cloned() else {
            // Another instance finished it meanwhile.
            return Ok(UpdateOutcome::UpToDate {
                reason: "no reboot is owed any more".into(),
                kind: NoUpdate::NotNewer,
                standing: None,
            });
        };
        version = Some(owed.version.clone());
        let flip = Transition::new(host, &lock);
        finish_rollback(host, &flip, &mut state, booted, opts.no_reboot, true)?;
        Ok(UpdateOutcome::RolledBackLate {
            reason: format!(
                "{} was rolled back late; slot {} boots next{}",
                owed.version,
                owed.slot,
                match (opts.no_reboot, host.config.reboot.fleetlock.is_some()) {
                    (true, _) => " (--no-reboot: at the next reboot)",
                    (false, true) => ": rebooting, the site's lock taken",
                    (false, false) => ": rebooting",
                }
            ),
            version: owed.version,
        })
    })();
    match &result {
        Ok(_) => record_success(host),
        Err(e) => record_failure(host, e, version.as_deref().map(|v| (v, None))),
    }
    result
}

/// The reboot a planned late rollback owes waits for the maintenance
/// window: reported as the rollback it finishes (the old slot boots
/// next), nothing else done; the first tick inside a window reboots.
fn owed_reboot_waits(host: &Host) -> Result<UpdateOutcome> {
    let state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let Some(owed) = state.reboot_owed(booted) else {
        return Ok(UpdateOutcome::UpToDate {
            reason: "no reboot is owed any more".into(),
            kind: NoUpdate::NotNewer,
            standing: None,
        });
    };
    let windows = &host.config.reboot.windows;
    let next = crate::schedule::next_window(windows, now())
        .map_or_else(|| "never".into(), crate::timefmt::format_rfc3339);
    let reason = format!(
        "{} was rolled back late; slot {} boots next: the reboot waits for the maintenance window (next opens {next})",
        owed.version, owed.slot
    );
    log(&reason);
    Ok(UpdateOutcome::RolledBackLate {
        version: owed.version.clone(),
        reason,
    })
}

/// A reboot lock an earlier run could not give back (the server was
/// unreachable): give it back now, unless a trial is still pending.
fn release_pending_lock(host: &Host) {
    let Ok(lock) = host.state_dir.lock() else {
        return;
    };
    let Ok(mut state) = host.state_dir.load() else {
        return;
    };
    // A planned rollback's reboot holds its lock until the old slot runs.
    let owed = state.planned_reboot.is_some()
        && host
            .booted_slot()
            .map_or(true, |b| state.reboot_owed(b).is_some());
    if state.fleetlock.is_some() && state.transaction.is_none() && !owed {
        host.release_reboot_lock(&lock, &mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTIL: i64 = 1_000;

    fn backing_off(f: RunFacts) -> RunFacts {
        RunFacts {
            backing_off: Some(UNTIL),
            ..f
        }
    }

    #[test]
    fn with_nothing_pending_and_no_backoff_the_run_attempts() {
        let plan = plan(&RunFacts::default());
        assert_eq!(plan.checks, []);
        assert_eq!(plan.then, Then::Attempt);
    }

    #[test]
    fn a_backoff_with_nothing_pending_only_waits() {
        let plan = plan(&backing_off(RunFacts::default()));
        assert_eq!(plan.checks, []);
        assert_eq!(plan.then, Then::BackOff { until: UNTIL });
    }

    #[test]
    fn a_staged_release_on_a_channel_host_is_judged_before_the_backoff_returns() {
        let staged = RunFacts {
            staged: true,
            channel: true,
            ..RunFacts::default()
        };
        let plan = plan(&backing_off(staged));
        assert_eq!(plan.checks, [Check::DisarmUnoffered]);
        assert_eq!(plan.then, Then::BackOff { until: UNTIL });
    }

    #[test]
    fn without_a_backoff_the_attempt_judges_the_staged_release_itself() {
        let staged = RunFacts {
            staged: true,
            channel: true,
            ..RunFacts::default()
        };
        let plan = plan(&staged);
        assert_eq!(plan.checks, [], "one fetch of the channel, in the attempt");
        assert_eq!(plan.then, Then::Attempt);
    }

    #[test]
    fn a_staged_release_without_a_channel_has_nothing_to_ask_while_backing_off() {
        let staged = RunFacts {
            staged: true,
            ..RunFacts::default()
        };
        assert_eq!(plan(&backing_off(staged)).checks, []);
        let channel = RunFacts {
            channel: true,
            ..RunFacts::default()
        };
        assert_eq!(plan(&backing_off(channel)).checks, [], "nothing staged");
    }

    #[test]
    fn a_probation_is_watched_whether_backing_off_or_not() {
        let on = RunFacts {
            on_probation: true,
            channel: true,
            ..RunFacts::default()
        };
        let plan_now = plan(&on);
        assert_eq!(plan_now.checks, [Check::WatchProbation]);
        assert_eq!(plan_now.then, Then::Attempt);
        let plan_later = plan(&backing_off(on));
        assert_eq!(plan_later.checks, [Check::WatchProbation]);
        assert_eq!(plan_later.then, Then::BackOff { until: UNTIL });
    }

    #[test]
    fn the_probation_is_watched_before_a_staged_release_is_judged() {
        let both = RunFacts {
            on_probation: true,
            staged: true,
            channel: true,
            ..RunFacts::default()
        };
        assert_eq!(
            plan(&backing_off(both)).checks,
            [Check::WatchProbation, Check::DisarmUnoffered]
        );
    }

    #[test]
    fn a_planned_rollback_s_owed_reboot_is_asked_for_instead_of_an_attempt() {
        let owed = RunFacts {
            reboot_owed: true,
            channel: true,
            ..RunFacts::default()
        };
        let plan = plan(&owed);
        assert_eq!(plan.checks, []);
        assert_eq!(
            plan.then,
            Then::FinishRollback,
            "nothing installed meanwhile"
        );
    }

    #[test]
    fn a_planned_rollback_s_owed_reboot_waits_for_the_maintenance_window() {
        let owed = RunFacts {
            reboot_owed: true,
            reboot_window_closed: true,
            ..RunFacts::default()
        };
        let plan = plan(&owed);
        assert_eq!(plan.checks, []);
        assert_eq!(plan.then, Then::WaitForRebootWindow, "no lock, no reboot");
    }

    #[test]
    fn a_closed_window_alone_does_not_stop_an_attempt() {
        let closed = RunFacts {
            reboot_window_closed: true,
            ..RunFacts::default()
        };
        assert_eq!(plan(&closed).then, Then::Attempt, "downloads may go on");
    }

    #[test]
    fn a_channel_that_could_not_be_read_during_a_probation_fails_the_run() {
        let unread = || Some(crate::error::Error::io("/x", std::io::Error::other("down")));
        let on_probation = Ok(Some(UpdateOutcome::UpToDate {
            reason: "on probation".into(),
            kind: NoUpdate::OnProbation,
            standing: None,
        }));
        assert!(ended_by_watch(on_probation, unread()).is_err());
        assert!(
            ended_by_watch(Ok(None), unread()).is_err(),
            "a probation that ended this run: no attempt on an unread channel"
        );
        let rolled_back = Ok(Some(UpdateOutcome::RolledBackLate {
            version: "2.0".into(),
            reason: "3 unclean restarts".into(),
        }));
        assert!(matches!(
            ended_by_watch(rolled_back, unread()),
            Ok(Some(UpdateOutcome::RolledBackLate { .. }))
        ));
        assert!(matches!(ended_by_watch(Ok(None), None), Ok(None)));
    }

    #[test]
    fn an_owed_reboot_is_asked_for_whatever_the_backoff() {
        let owed = RunFacts {
            reboot_owed: true,
            channel: true,
            ..RunFacts::default()
        };
        // Any backoff: an unrelated failure's (up to `backoff_max`), or
        // the one a refused lock scheduled: the next tick asks again.
        for until in [UNTIL, UNTIL + 6 * 3600] {
            let plan = plan(&RunFacts {
                backing_off: Some(until),
                ..owed
            });
            assert_eq!(plan.checks, [], "backing off until {until}");
            assert_eq!(
                plan.then,
                Then::FinishRollback,
                "a withdrawn release runs until the owed reboot: not delayed"
            );
        }
    }

    #[test]
    fn an_owed_reboot_waits_for_the_maintenance_window_not_for_the_backoff() {
        let owed = RunFacts {
            reboot_owed: true,
            reboot_window_closed: true,
            ..RunFacts::default()
        };
        assert_eq!(
            plan(&backing_off(owed)).then,
            Then::WaitForRebootWindow,
            "no lock, no reboot outside the window; said so, backoff or not"
        );
    }

    #[test]
    fn while_backing_off_the_safety_checks_come_before_an_owed_reboot() {
        let all = RunFacts {
            on_probation: true,
            staged: true,
            channel: true,
            reboot_owed: true,
            ..RunFacts::default()
        };
        let plan = plan(&backing_off(all));
        assert_eq!(plan.checks, [Check::WatchProbation, Check::DisarmUnoffered]);
        assert_eq!(plan.then, Then::FinishRollback);
    }

    #[test]
    fn a_backoff_still_delays_an_attempt_once_no_reboot_is_owed() {
        let closed = RunFacts {
            reboot_window_closed: true,
            channel: true,
            ..RunFacts::default()
        };
        assert_eq!(
            plan(&backing_off(closed)).then,
            Then::BackOff { until: UNTIL }
        );
    }
}
