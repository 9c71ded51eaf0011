//! `health`: the boot-time verdict on a trial.

use super::recovery::{finish_rollback, rebless, rollback_trial};
use super::report::publish;
use super::{log, Host};
use crate::boot::BootState;
use crate::error::Result;
use crate::install::{self};
use crate::state::Phase;
use crate::timefmt::now;

/// What `health` concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No trial pending: the booted slot was re-blessed.
    Healthy,
    /// The trial slot passed its checks and is now committed.
    Committed { version: String },
    /// The trial slot failed its checks: marked bad, rolled back.
    RolledBack { version: String, reason: String },
    /// The bootloader fell back from a trial that never came up.
    TrialNeverBooted { version: String },
    /// A slot is staged and the host has not rebooted into it yet.
    AwaitingReboot { version: String },
}

/// The boot-time verdict (run by `abupdate-health.service` on every boot).
pub fn health(host: &Host, no_reboot: bool, quiet: bool) -> Result<Verdict> {
    let _lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let Some(t) = state.transaction.clone() else {
        if state.slot(booted).status == "bad"
            && matches!(
                state.slot(booted.other()).status.as_str(),
                "good" | "installed"
            )
        {
            return finish_rollback(host, &state, booted, no_reboot);
        }
        rebless(host, &mut state, booted)?;
        publish(host, &state, None, None);
        return Ok(Verdict::Healthy);
    };

    if booted == t.to {
        // A trial. If the state never reached `staged` (a crash between
        // activation and the state write), the slot's bytes decide.
        if t.phase == Phase::Writing {
            let intact = t.images.iter().all(|(class, image)| {
                host.config.device(booted, class).is_some_and(|p| {
                    install::hash_path(p, image.size).is_ok_and(|h| h == image.sha256)
                })
            });
            if !intact {
                return rollback_trial(
                    host,
                    &mut state,
                    &t,
                    "the trial slot's contents do not match the release",
                    no_reboot,
                );
            }
        }
        log(&format!(
            "slot {booted} is on trial with {}: running health checks",
            t.version
        ));
        let (ok, results) = crate::health::run_until_verdict(&host.config.health, &mut |r| {
            if !quiet {
                log(&format!(
                    "check {}: {}{}",
                    r.name,
                    if r.passed { "pass" } else { "FAIL" },
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.detail)
                    }
                ));
            }
        });
        crate::failpoint::hit("health-verdict");
        if ok {
            host.boot.set_state(booted, BootState::Good)?;
            crate::failpoint::hit("committed");
            let mut rec = state.slot(booted);
            rec.status = "good".into();
            state.slots.insert(booted, rec);
            state.transaction = None;
            state.metrics.commits += 1;
            state.metrics.last_success = Some(now());
            host.state_dir.save(&state)?;
            log(&format!("committed {} in slot {booted}", t.version));
            publish(host, &state, Some(("committed", t.version.as_str())), None);
            return Ok(Verdict::Committed { version: t.version });
        }
        let reason = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{}: {}", r.name, r.detail))
            .collect::<Vec<_>>()
            .join("; ");
        return rollback_trial(
            host,
            &mut state,
            &t,
            &format!("health checks failed: {reason}"),
            no_reboot,
        );
    }

    // Booted the old slot.
    match t.phase {
        Phase::Writing => {
            // An install was interrupted; the next `update` finishes it.
            log(&format!(
                "an install of {} into slot {} was interrupted; it will be redone",
                t.version, t.to
            ));
            rebless(host, &mut state, booted)?;
            Ok(Verdict::Healthy)
        }
        Phase::Staged if t.staged_boot_id.is_some() && t.staged_boot_id == host.boot_id() => {
            rebless(host, &mut state, booted)?;
            Ok(Verdict::AwaitingReboot { version: t.version })
        }
        Phase::Staged => {
            let reason = format!(
                "slot {} never came up with {}; the bootloader fell back to {booted}",
                t.to, t.version
            );
            log(&reason);
            host.boot.set_state(t.to, BootState::Bad)?;
            // The running slot first again (and re-blessed), in one write.
            host.boot.activate(booted)?;
            state.record_failed(&t.version, &t.manifest_sha256, &reason, now());
            let mut rec = state.slot(t.to);
            rec.status = "bad".into();
            state.slots.insert(t.to, rec);
            state.transaction = None;
            state.metrics.rollbacks += 1;
            *state
                .metrics
                .failures
                .entry("trial_never_booted".into())
                .or_default() += 1;
            host.state_dir.save(&state)?;
            rebless(host, &mut state, booted)?;
            publish(
                host,
                &state,
                Some(("trial_never_booted", t.version.as_str())),
                Some(("trial_never_booted", &reason)),
            );
            Ok(Verdict::TrialNeverBooted { version: t.version })
        }
    }
}
