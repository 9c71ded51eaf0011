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
//! Invariant: every run ends in exactly one report: a success resets the
//! backoff, a failure counts its kind and schedules the next try
//! ([`super::report`]); a channel that cannot be read during a probation
//! is counted so too, and the probation's watch step still runs.

use super::check::{on_probation, probation_withdrawal, CheckOptions, NoUpdate, Nothing};
use super::install::check_and_install;
use super::probation;
use super::report::record_success;
use super::transition::Transition;
use super::verdict::Verdict;
use super::{log, record_failure, Host, InstallOptions, Installed};
use crate::error::Result;
use crate::install::WriteMode;
use crate::rollout::Standing;
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

/// The timer's job: check, then install and reboot (inside a maintenance
/// window, when windows are configured) when a release applies.
pub fn update(host: &Host, opts: UpdateOptions) -> Result<UpdateOutcome> {
    release_pending_lock(host);
    if let Some(outcome) = watch_probation(host, opts)? {
        return Ok(outcome);
    }
    if !opts.now {
        let state = host.state_dir.load()?;
        let max = host.config.update.backoff_max;
        let until = crate::schedule::backing_off_until(state.metrics.retry_after, now(), max);
        if let Some(until) = until {
            return Ok(UpdateOutcome::BackingOff { until });
        }
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
    let result = host.release_location(None).and_then(|location| {
        Ok(
            match check_and_install(host, &location, check, &install_opts, &mut release)? {
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
            },
        )
    });
    match &result {
        Ok(_) => record_success(host),
        Err(e) => record_failure(host, e, release.as_deref()),
    }
    result
}

/// A release on probation: one step of its watch (checks re-run, restarts
/// counted, the release channel asked whether it withdraws the release),
/// and nothing else fetched while it lasts. `None` when no release is on
/// probation (any more): the update goes on. A channel that cannot be
/// fetched or believed is counted as a failure (its kind), after the
/// watch's step, which it does not stop.
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
        )?;
        let outcome = match verdict {
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
        };
        (outcome, unread)
    };
    // The state lock is given back: the failure is counted with its own.
    if let Some(e) = unread {
        record_failure(host, &e, None);
    }
    Ok(outcome)
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
    if state.fleetlock.is_some() && state.transaction.is_none() {
        host.release_reboot_lock(&lock, &mut state);
    }
}
