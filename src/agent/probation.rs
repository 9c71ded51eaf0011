//! Probation after a commit (`[health] probation`, `probation_failures`):
//! a release that passed its trial is still watched for a while. Every
//! `health` run (each boot) and every `update` run while it lasts counts
//! the release's failures: a restart without the clean-shutdown mark (a
//! panic, a watchdog reset, a power cut: no orderly shutdown wrote the
//! mark) and a run of the health checks that fails. When the count goes
//! above `probation_failures` (default 2, so the third failure) within the
//! window, the release is retired like a failed trial: marked bad, the old
//! slot activated, the release on the failed list, outcome
//! `rolled_back_late`, and the reboot into the old slot. A window that ends
//! with no more failures than that ends the probation (recorded: the
//! probation's `passed`).
//!
//! The decision ([`decide`]) is a pure function of plain facts, tested
//! branch by branch; [`watch`] is the runner: it gathers the facts, one at
//! a time as the decision asks for them, and applies the result through
//! [`super::transition`] and [`super::recovery::retire_trial`], the one
//! way a release is retired.
//!
//! Invariant: while a release is on probation the old slot is its fallback
//! and nothing writes to it: `update` checks nothing and fetches nothing,
//! `install` is refused ([`super::Refusal::OnProbation`]) and `check` says
//! so. A late rollback is durable in the order of any retirement
//! (`transition.rs` rule 4): a crash after the bootloader was changed but
//! before the state was saved boots the old slot, which [`decide`] reads
//! as [`Decision::FellBack`] and records; a crash after the save leaves the
//! booted slot recorded bad, which the verdict's `FinishRollback` ends.

use super::recovery::retire_trial;
use super::transition::Transition;
use super::verdict::{Failure, Verdict};
use super::{log, Host};
use crate::error::Result;
use crate::slot::SlotName;
use crate::state::{Probation, State};

/// The file the clean-shutdown unit (`abupdate-shutdown-mark.service`)
/// writes at an orderly shutdown, in the state dir: the id of the boot
/// that ended cleanly.
pub const SHUTDOWN_MARK: &str = "shutdown-mark";

/// What a probation step is decided from: plain data, read by [`watch`].
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The probation as recorded.
    pub probation: &'a Probation,
    /// The slot running now.
    pub booted: SlotName,
    /// Now (Unix time).
    pub now: i64,
    /// Failures tolerated (`probation_failures`): one more rolls back.
    pub limit: u32,
    /// This boot's id (`None`: the host cannot tell its boots apart, and
    /// restarts are not counted).
    pub boot_id: Option<&'a str>,
    /// The clean-shutdown mark: the id of the last boot that shut down in
    /// order, if a mark was ever written.
    pub mark: Option<&'a str>,
    /// The health checks' result, once run ([`Decision::RunChecks`] asks
    /// for it): `Err` says which failed.
    pub checks: Option<std::result::Result<(), String>>,
}

/// What to do in this run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A fact is missing: run the health checks on the slot on probation.
    RunChecks,
    /// The old slot is running: the bootloader fell back (or a late
    /// rollback was cut before its state write). Record the rollback; no
    /// reboot.
    FellBack,
    /// The window is over with no more failures than tolerated: the
    /// probation ends.
    End,
    /// More failures than tolerated: roll back (what failed, in words).
    RollBack(String),
    /// Still on probation; record what changed (a restart, failures).
    Record {
        /// The failures counted so far, this run's included.
        failures: u32,
        /// This run's failures, in words (empty: none).
        what: Vec<String>,
    },
    /// Still on probation and nothing new: the record stays as it is.
    Continue,
}

/// The step of a probation in this run, from `f` alone.
///
/// A restart is a boot id other than the recorded one; it is unclean when
/// the mark does not name the recorded boot (with no recorded boot id: when
/// there is no mark at all). Restarts count before the checks run, so a
/// slot that keeps crashing is rolled back without waiting for them.
pub fn decide(f: &Facts) -> Decision {
    let p = f.probation;
    if f.booted != p.slot {
        return Decision::FellBack;
    }
    if f.now >= p.until {
        return Decision::End;
    }
    let restarted = f.boot_id.is_some() && f.boot_id != p.boot_id.as_deref();
    let unclean = restarted
        && match (&p.boot_id, f.mark) {
            (_, None) => true,
            (Some(last), Some(mark)) => mark != last,
            (None, Some(_)) => false,
        };
    let mut what = Vec::new();
    if unclean {
        what.push("an unclean restart (no clean-shutdown mark)".to_string());
    }
    let failures = |what: &Vec<String>| p.failures.saturating_add(what.len() as u32);
    let roll_back = |what: &Vec<String>| {
        let n = failures(what);
        let mut why = format!("{n} failures within its probation (more than {})", f.limit);
        if let Some(last) = what.last().or(p.last_failure.as_ref()) {
            why.push_str(&format!("; last: {last}"));
        }
        Decision::RollBack(why)
    };
    if failures(&what) > f.limit {
        return roll_back(&what);
    }
    match &f.checks {
        None => return Decision::RunChecks,
        Some(Err(failed)) => what.push(format!("health checks failed: {failed}")),
        Some(Ok(())) => {}
    }
    if failures(&what) > f.limit {
        return roll_back(&what);
    }
    if restarted || !what.is_empty() {
        return Decision::Record {
            failures: failures(&what),
            what,
        };
    }
    Decision::Continue
}

/// Watch the probation, if one is recorded: gather the facts [`decide`]
/// asks for, then apply its decision. `None` when no release is on
/// probation. The caller holds the state lock `flip` writes with.
pub(super) fn watch(
    host: &Host,
    flip: &Transition,
    state: &mut State,
    booted: SlotName,
    no_reboot: bool,
    quiet: bool,
) -> Result<Option<Verdict>> {
    let (Some(p), Some(release)) = (state.on_probation().cloned(), state.probation_release())
    else {
        return Ok(None);
    };
    let boot_id = host.boot_id();
    let mark = std::fs::read_to_string(host.state_dir.path().join(SHUTDOWN_MARK))
        .ok()
        .map(|m| m.trim().to_string());
    let mut facts = Facts {
        probation: &p,
        booted,
        now: crate::timefmt::now(),
        limit: host.config.health.probation_failures,
        boot_id: boot_id.as_deref(),
        mark: mark.as_deref(),
        checks: None,
    };
    let decision = loop {
        match decide(&facts) {
            Decision::RunChecks => {
                log(&format!(
                    "{} in slot {} is on probation: running health checks",
                    p.version, p.slot
                ));
                facts.checks = Some(super::verdict::run_checks(host, quiet));
            }
            decision => break decision,
        }
    };
    let version = p.version.clone();
    Ok(Some(match decision {
        Decision::FellBack | Decision::RollBack(_) => {
            let fell_back = decision == Decision::FellBack;
            let what = match decision {
                Decision::RollBack(what) => what,
                _ => format!(
                    "slot {} fell back to {} during its probation",
                    release.to, release.from
                ),
            };
            let why = Failure::Late { what, fell_back };
            retire_trial(host, flip, state, &release, &why, no_reboot || fell_back)?
        }
        Decision::End => {
            state.end_probation(facts.now);
            flip.save(state)?;
            log(&format!("{version} passed its probation"));
            Verdict::ProbationPassed { version }
        }
        Decision::Record { failures, what } => {
            let last = what.join("; ");
            if !last.is_empty() {
                log(&format!(
                    "{version} on probation: {last} ({failures} of at most {} failures)",
                    facts.limit
                ));
            }
            if let Some(on) = state.probation.as_mut() {
                on.failures = failures;
                on.boot_id = boot_id.clone().or(on.boot_id.take());
                if !last.is_empty() {
                    on.last_failure = Some(last);
                }
            }
            flip.save(state)?;
            Verdict::OnProbation {
                version,
                until: p.until,
                failures,
            }
        }
        // `RunChecks` never leaves the loop above.
        Decision::Continue | Decision::RunChecks => Verdict::OnProbation {
            version,
            until: p.until,
            failures: p.failures,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probation(failures: u32, boot_id: Option<&str>) -> Probation {
        Probation {
            slot: SlotName::B,
            version: "2.0".into(),
            started: 100,
            until: 200,
            boot_id: boot_id.map(str::to_string),
            failures,
            last_failure: None,
            passed: None,
        }
    }

    /// Slot B booted at 150 on "boot-1", the limit 2, the mark absent.
    fn facts(p: &Probation) -> Facts<'_> {
        Facts {
            probation: p,
            booted: SlotName::B,
            now: 150,
            limit: 2,
            boot_id: Some("boot-1"),
            mark: None,
            checks: None,
        }
    }

    #[test]
    fn the_same_boot_runs_the_checks_and_continues_when_they_pass() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        assert_eq!(decide(&f), Decision::RunChecks);
        f.checks = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Continue);
    }

    #[test]
    fn a_failing_check_run_is_recorded_as_one_failure() {
        let p = probation(1, Some("boot-1"));
        let mut f = facts(&p);
        f.checks = Some(Err("10-db: down".into()));
        assert_eq!(
            decide(&f),
            Decision::Record {
                failures: 2,
                what: vec!["health checks failed: 10-db: down".into()],
            }
        );
    }

    #[test]
    fn a_restart_without_the_mark_of_the_last_boot_is_unclean() {
        let p = probation(0, Some("boot-0"));
        let mut f = facts(&p);
        f.checks = Some(Ok(()));
        let unclean = Decision::Record {
            failures: 1,
            what: vec!["an unclean restart (no clean-shutdown mark)".into()],
        };
        assert_eq!(decide(&f), unclean, "no mark at all");
        f.mark = Some("boot-older");
        assert_eq!(decide(&f), unclean, "a stale mark of an earlier boot");
        f.mark = Some("boot-0");
        assert_eq!(
            decide(&f),
            Decision::Record {
                failures: 0,
                what: vec![]
            },
            "a clean restart only moves the boot id on"
        );
    }

    #[test]
    fn without_a_recorded_boot_id_any_mark_makes_a_restart_clean() {
        let p = probation(0, None);
        let mut f = facts(&p);
        f.checks = Some(Ok(()));
        f.mark = Some("whatever");
        assert_eq!(
            decide(&f),
            Decision::Record {
                failures: 0,
                what: vec![]
            }
        );
        f.boot_id = None;
        assert_eq!(decide(&f), Decision::Continue, "no boot id: no restart");
    }

    #[test]
    fn the_third_unclean_restart_rolls_back_before_the_checks_run() {
        let p = probation(2, Some("boot-0"));
        let f = facts(&p);
        match decide(&f) {
            Decision::RollBack(why) => {
                assert!(
                    why.starts_with("3 failures within its probation (more than 2)"),
                    "{why}"
                );
                assert!(why.contains("unclean restart"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failing_check_run_above_the_limit_rolls_back() {
        let p = probation(2, Some("boot-1"));
        let mut f = facts(&p);
        assert_eq!(decide(&f), Decision::RunChecks);
        f.checks = Some(Err("x: y".into()));
        assert!(matches!(decide(&f), Decision::RollBack(w) if w.contains("x: y")));
    }

    #[test]
    fn a_limit_of_zero_rolls_back_on_the_first_failure() {
        let p = probation(0, Some("boot-0"));
        let mut f = facts(&p);
        f.limit = 0;
        assert!(matches!(decide(&f), Decision::RollBack(_)));
    }

    #[test]
    fn the_end_of_the_window_ends_the_probation_whatever_happened_since() {
        let p = probation(2, Some("boot-0"));
        let mut f = facts(&p);
        f.now = 200;
        assert_eq!(decide(&f), Decision::End);
    }

    #[test]
    fn the_old_slot_running_means_the_bootloader_fell_back() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.booted = SlotName::A;
        assert_eq!(decide(&f), Decision::FellBack);
        f.now = 500;
        assert_eq!(decide(&f), Decision::FellBack, "even after the window");
    }
}
