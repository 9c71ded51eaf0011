//! Probation after a commit (`[health] probation`, `probation_failures`):
//! a release that passed its trial is still watched for a while. Every
//! `health` run (each boot) and every `update` run while it lasts counts
//! the release's failures: a restart without the clean-shutdown mark (a
//! panic, a watchdog reset, a power cut: no orderly shutdown wrote the
//! mark) and a run of the health checks that fails. When the count goes
//! above `probation_failures` (default 2, so the third failure) within the
//! window, the release is retired like a failed trial: marked bad, the old
//! slot activated, the release on the failed list, outcome
//! `rolled_back_late`, and the reboot into the old slot, if that slot is
//! still usable (below). A window that ends
//! with no more failures than that ends the probation (recorded: the
//! probation's `passed`).
//!
//! The window is the time the release ran, counted on the host's uptime
//! ([`counted`]), never on the wall clock: an edge host's clock is wrong
//! at a boot (an RTC reset to 2000 or ahead by years, before NTP) and
//! stepped later, and a window on it either never ended (a host that
//! reboots before each window's end, its clock below the newest `created`
//! at every boot, restarted it twice a boot: updates stopped for good) or
//! ended at once (one run on a clock ahead passed a crashing release).
//! Each run adds the uptime since the last counted run of the same boot,
//! or, on a new boot, the uptime of that boot so far: what a boot ran
//! after its last watched run (at most a timer period: `update` runs
//! hourly) and the time the host was off are not counted, so a window
//! ends no earlier than the configured time of running. `until` is
//! recorded as the wall clock's estimate of the end, for people; the
//! start and the floor are not read. A host whose uptime cannot be read
//! measures the window on the wall clock (`now >= until`). The configured
//! window is read on every run: `probation = "0"` ends a running
//! probation at the next run ([`Decision::Off`], recorded as the
//! probation's `off`, not `passed`), and a shorter one ends it once the
//! time counted reaches it.
//!
//! A restart counts as unclean only when the clean-shutdown mark was
//! written at least once: with no mark file in the state dir (the unit is
//! not installed, or writes another path) the host cannot tell a crash
//! from a reboot, and a good release must not be rolled back for that;
//! [`watch`] warns on stderr, naming the path.
//!
//! A late rollback only boots a usable old slot. Nothing writes it during
//! the probation, but an operator may have marked it bad, the state may
//! record it as being written, empty or unknown, or the bootloader may
//! hold it unbootable: before a rollback [`watch`] reads its [`Fallback`]
//! and [`decide`] keeps the failing release instead
//! ([`Decision::NoFallback`]: the probation ends as failed with no
//! fallback, kind `no_fallback`, nothing in the bootloader changes).
//!
//! Not covered: a release that panics before `abupdate health` runs (in
//! its kernel or initramfs) after its commit is never counted, since the
//! bootloader stopped counting its tries at the commit; a hardware
//! watchdog and the bootloader's own fallback (before the commit only)
//! are what cover it (README "Probation", known limits).
//!
//! The decision ([`decide`]) is a pure function of plain facts, tested
//! branch by branch; [`watch`] is the runner: it gathers the facts, one at
//! a time as the decision asks for them, and applies the result through
//! [`super::transition`] and [`super::recovery::retire_trial`], the one
//! way a release is retired.
//!
//! On a host with a release channel, `update` fetches the channel only
//! (never a manifest or a payload; through the trust gate and its rules of
//! time) on each step of the watch: a release the channel withdraws is
//! rolled back late like any failed probation ([`Facts::withdrawn`]), and
//! like one only onto a usable old slot (otherwise kept: `no_fallback`).
//! Unlike a failure's, its reboot is planned ([`Cause::waits_for_lock`]):
//! the old slot is made the next boot at once (recorded as an owed
//! reboot, `state::PlannedReboot`), and the reboot waits for the site's
//! FleetLock lock, which `update` asks for again each tick, and for the
//! maintenance window ([`Cause::reboots_now`]). A
//! halt rolls nothing back (it stops installs, not running releases), and
//! a channel that cannot be fetched or believed changes nothing: the
//! failure is counted and the watch goes on.
//!
//! Invariant: while a release is on probation the old slot is its fallback
//! and nothing writes to it: `update` fetches nothing but the channel,
//! `install` is refused ([`super::Refusal::OnProbation`]) and `check` says
//! so. A late rollback is durable in the order of any retirement
//! (`transition.rs` rule 4): a crash after the bootloader was changed but
//! before the state was saved boots the old slot, which [`decide`] reads
//! as [`Decision::FellBack`] and records; a crash after the save leaves the
//! booted slot recorded bad, which the verdict's `FinishRollback` ends.

use super::recovery::retire_trial;
use super::report::publish;
use super::transition::Transition;
use super::verdict::{reboot_into, Failure, Verdict};
use super::{log, Host};
use crate::boot::BootState;
use crate::error::{Kind, Result};
use crate::report::Outcome;
use crate::slot::SlotName;
use crate::state::{PlannedReboot, Probation, SlotStatus, State};

/// The file the clean-shutdown unit (`abupdate-shutdown-mark.service`)
/// writes at an orderly shutdown, in the state dir: the id of the boot
/// that ended cleanly.
pub const SHUTDOWN_MARK: &str = "shutdown-mark";

/// The most read of the clean-shutdown mark: a boot id is 37 bytes; a
/// larger file is no mark and is not read whole.
const MAX_MARK_BYTES: u64 = 4096;

/// What a probation step is decided from: plain data, read by [`watch`].
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The probation as recorded.
    pub probation: &'a Probation,
    /// The slot running now.
    pub booted: SlotName,
    /// Now (Unix time): the window's end only when the host's uptime
    /// cannot be read (`ran` is `None`).
    pub now: i64,
    /// The seconds of the window the release has run, this run's included
    /// ([`counted`]); `None`: the host's uptime cannot be read.
    pub ran: Option<i64>,
    /// The configured window (`probation`, seconds, read on this run):
    /// zero ends the probation, and no window runs longer than it.
    pub window: i64,
    /// Failures tolerated (`probation_failures`): one more rolls back.
    pub limit: u32,
    /// This boot's id (`None`: the host cannot tell its boots apart, and
    /// restarts are not counted).
    pub boot_id: Option<&'a str>,
    /// The clean-shutdown mark: the id of the last boot that shut down in
    /// order. `None`: no mark was ever written (the unit is not installed
    /// or writes elsewhere), and restarts are not counted as unclean.
    pub mark: Option<&'a str>,
    /// The health checks' result, once run ([`Decision::RunChecks`] asks
    /// for it): `Err` says which failed.
    pub checks: Option<std::result::Result<(), String>>,
    /// The release channel withdraws the release on probation (why, naming
    /// the channel's URL). `None`: not withdrawn, or not known (no channel,
    /// `health`'s run, a channel that could not be fetched or believed):
    /// nothing changes for it.
    pub withdrawn: Option<&'a str>,
    /// The old slot, once read ([`Decision::ReadFallback`] asks for it
    /// before a rollback).
    pub fallback: Option<Fallback>,
}

/// The old slot (the probation's fallback) as a late rollback would find
/// it: plain data, read by [`watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// Its record's status.
    pub status: SlotStatus,
    /// A write into it is recorded as in flight (a transaction names it).
    pub writing: bool,
    /// Its flag in the bootloader; `None` when the backend cannot tell.
    pub boot: Option<BootState>,
}

impl Fallback {
    /// Why a rollback must not boot it, in words (`None`: it is usable).
    pub fn unusable(&self) -> Option<String> {
        if self.writing {
            return Some("has a write into it recorded in flight".into());
        }
        let status = match &self.status {
            SlotStatus::Good | SlotStatus::Installed => None,
            SlotStatus::Bad => Some("is marked bad".to_string()),
            SlotStatus::Installing => Some("is recorded as being written".to_string()),
            SlotStatus::Empty => Some("is recorded empty".to_string()),
            SlotStatus::Failing => Some(
                "failed its health checks and was kept only because nothing else was known to boot"
                    .to_string(),
            ),
            SlotStatus::Other(s) => Some(format!("is recorded {s:?}, a status not known here")),
        };
        status.or_else(|| {
            (self.boot == Some(BootState::Bad))
                .then(|| "is marked unbootable in the bootloader".to_string())
        })
    }
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
    /// The configured window is zero now (`probation = "0"`): the
    /// probation ends as switched off, whatever it counted.
    Off,
    /// A fact is missing: a rollback is due; read the old slot's
    /// [`Fallback`].
    ReadFallback,
    /// More failures than tolerated, or a withdrawal: roll back (what
    /// failed, in words; the cause decides whether its reboot waits for
    /// the site's lock).
    RollBack(String, Cause),
    /// A rollback is due, but the old slot is not usable: keep the release
    /// and end the probation as failed with no fallback (the line to
    /// show, naming the slot and why; the cause, whose count is recorded).
    NoFallback(String, Cause),
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

/// Why a release on probation is rolled back. The cause decides whether
/// the reboot into the old slot waits for the site's reboot lock
/// ([`Cause::waits_for_lock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The release failed on this host: `failures` counted, this run's
    /// included (the count the probation ends with).
    Failing {
        /// Failures within the probation, the one that ended it included.
        failures: u32,
    },
    /// The release channel withdrew it: a planned rollback of a host that
    /// may be serving well.
    Withdrawn,
}

impl Cause {
    /// Whether the reboot into the old slot waits for the site's lock
    /// (`[reboot] fleetlock`). A planned rollback is a reboot like an
    /// update's: a withdrawal reaches every host of a site at the same
    /// tick, and without the lock they would all go down together. A
    /// failing host is not: it is down or crashing already, and waiting
    /// for a lock would only keep it broken (a failed trial's rollback
    /// does not wait either).
    pub fn waits_for_lock(self) -> bool {
        matches!(self, Cause::Withdrawn)
    }

    /// Whether the reboot into the old slot comes in this run, given
    /// whether the maintenance window (`[[reboot.window]]`; none
    /// configured: always) is open. A planned rollback's reboot waits for
    /// the window as an update's does: the boot order is switched
    /// already, so any reboot meanwhile boots the old slot. A failing
    /// host's does not wait (as for the lock).
    pub fn reboots_now(self, window_open: bool) -> bool {
        window_open || !self.waits_for_lock()
    }
}

/// The seconds of `p`'s window counted once this run is: those counted
/// before, plus this boot's uptime since the last counted run when that
/// run was on this boot (the same boot id, or an id unknown either time,
/// and an uptime from 0 to this one recorded), else this boot's whole
/// uptime so far (a new boot: its start was not watched). A boot id that
/// cannot be read is no new boot: each run would count the whole uptime
/// again. Pure; `None` when the uptime cannot be read.
pub fn counted(p: &Probation, boot_id: Option<&str>, uptime: Option<i64>) -> Option<i64> {
    let up = uptime?.max(0);
    let before = p.ran.unwrap_or(0).max(0);
    let same_id = match (boot_id, p.boot_id.as_deref()) {
        (Some(now), Some(then)) => now == then,
        _ => true,
    };
    let since = match p.uptime {
        Some(last) if same_id && (0..=up).contains(&last) => up - last,
        _ => up,
    };
    Some(before.saturating_add(since))
}

/// The step of a probation in this run, from `f` alone.
///
/// The window is checked first: switched off in the configuration, it
/// ends ([`Decision::Off`]); a release the channel withdraws is rolled
/// back, whatever the window or the count; once the time counted reaches
/// the configured window, it ends ([`Decision::End`]). A restart is a
/// boot id other than the recorded one; it is unclean when a mark exists
/// and does not name the recorded boot. With no mark ever written, or no
/// boot id recorded, no restart is unclean. Restarts count before the
/// checks run, so a slot that keeps crashing is rolled back without
/// waiting for them. A rollback, a withdrawal's included, is decided only
/// onto a usable old slot ([`Fallback::unusable`]); otherwise the release
/// is kept ([`Decision::NoFallback`]).
pub fn decide(f: &Facts) -> Decision {
    let p = f.probation;
    if f.booted != p.slot {
        return Decision::FellBack;
    }
    if f.window <= 0 {
        return Decision::Off;
    }
    if let Some(why) = f.withdrawn {
        return onto_old_slot(f, why.to_string(), Cause::Withdrawn);
    }
    let over = match f.ran {
        Some(ran) => ran >= f.window,
        None => f.now >= p.until,
    };
    if over {
        return Decision::End;
    }
    let restarted = f.boot_id.is_some() && f.boot_id != p.boot_id.as_deref();
    let unclean = restarted
        && match (&p.boot_id, f.mark) {
            (Some(last), Some(mark)) => mark != last,
            // No mark ever written: the host cannot tell; a recorded mark
            // with no recorded boot id: some boot ended in order.
            (_, None) | (None, Some(_)) => false,
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
        onto_old_slot(f, why, Cause::Failing { failures: n })
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

/// A rollback for `why` is due: onto the old slot once it is read and
/// usable ([`Decision::RollBack`]); otherwise the release is kept
/// ([`Decision::NoFallback`], the line naming the slot and what is wrong
/// with it).
fn onto_old_slot(f: &Facts, why: String, cause: Cause) -> Decision {
    let p = f.probation;
    match f.fallback.as_ref().map(Fallback::unusable) {
        None => Decision::ReadFallback,
        Some(None) => Decision::RollBack(why, cause),
        Some(Some(because)) => Decision::NoFallback(
            format!(
                "probation failed ({why}) but slot {} {because}: keeping {}; no fallback",
                p.slot.other(),
                p.version
            ),
            cause,
        ),
    }
}

/// Watch the probation, if one is recorded: gather the facts [`decide`]
/// asks for, then apply its decision. `None` when no release is on
/// probation. The caller holds the state lock `flip` writes with.
// Long on purpose: one pass from the facts (the mark, the boot id, the
// configured window, the checks) to the one decision and its single effect;
// the decision itself is the pure `decide` above.
pub(super) fn watch(
    host: &Host,
    flip: &Transition,
    state: &mut State,
    booted: SlotName,
    withdrawn: Option<&str>,
    (no_reboot, quiet): (bool, bool),
) -> Result<Option<Verdict>> {
    let (Some(p), Some(release)) = (state.on_probation().cloned(), state.probation_release())
    else {
        return Ok(None);
    };
    let boot_id = host.boot_id();
    let mark = read_mark(&host.state_dir.path().join(SHUTDOWN_MARK))?;
    let now = crate::timefmt::now();
    let limit = host.config.health.probation_failures;
    let window = i64::try_from(host.config.health.probation.as_secs()).unwrap_or(i64::MAX);
    let uptime = host.uptime();
    let ran = counted(&p, boot_id.as_deref(), uptime);
    let mut checks = None;
    let mut fallback = None;
    let decision = loop {
        let facts = Facts {
            probation: &p,
            booted,
            now,
            ran,
            window,
            limit,
            boot_id: boot_id.as_deref(),
            mark: mark.as_deref(),
            checks: checks.clone(),
            fallback: fallback.clone(),
            withdrawn,
        };
        match decide(&facts) {
            Decision::RunChecks => {
                log(&format!(
                    "{} in slot {} is on probation: running health checks",
                    p.version, p.slot
                ));
                checks = Some(super::verdict::run_checks(host, quiet));
            }
            Decision::ReadFallback => fallback = Some(read_fallback(host, state, p.slot.other())),
            decision => break decision,
        }
    };
    let version = p.version.clone();
    Ok(Some(match decision {
        Decision::RollBack(what, cause) if cause.waits_for_lock() => {
            // Planned: the order switched first (recorded with the
            // retirement, so every later run knows the reboot is owed),
            // then the reboot, only with the site's lock.
            state.planned_reboot = Some(PlannedReboot {
                slot: release.from,
                version: version.clone(),
            });
            let why = Failure::Late {
                what,
                fell_back: false,
            };
            let verdict = retire_trial(host, flip, state, &release, &why, true)?;
            let windows = &host.config.reboot.windows;
            let window_open = crate::schedule::may_reboot(windows, now);
            if !no_reboot && !cause.reboots_now(window_open) {
                log(&format!(
                    "the reboot into slot {} waits for the maintenance window (next opens {})",
                    release.from,
                    crate::schedule::next_window(windows, now)
                        .map_or_else(|| "never".into(), crate::timefmt::format_rfc3339)
                ));
            } else if !no_reboot {
                let waiting = format!("slot {} boots next, at any reboot", release.from);
                host.take_reboot_lock(flip.lock(), state, &waiting)?;
                reboot_into(host, flip.lock(), state, release.from, false)?;
            }
            verdict
        }
        Decision::FellBack | Decision::RollBack(..) => {
            let fell_back = decision == Decision::FellBack;
            let what = match decision {
                Decision::RollBack(what, _) => what,
                _ => format!(
                    "slot {} fell back to {} during its probation",
                    release.to, release.from
                ),
            };
            // A failing host reboots at once, without the site's lock
            // (`Cause::waits_for_lock`).
            let why = Failure::Late { what, fell_back };
            retire_trial(host, flip, state, &release, &why, no_reboot || fell_back)?
        }
        Decision::NoFallback(reason, cause) => {
            log(&reason);
            // The count the probation ends with includes the failure that
            // ended it (a withdrawal is no failure of the host: not counted).
            let failures = match cause {
                Cause::Failing { failures } => failures,
                Cause::Withdrawn => p.failures,
            };
            state.fail_probation_without_fallback(now, &reason, failures);
            state.count_failure(Kind::NoFallback);
            let kind = Some(Kind::NoFallback.as_str());
            let build = crate::state::build_of(&state.slot(p.slot).images);
            crate::report::record_outcome(
                &mut state.outcomes,
                &version,
                build.as_deref(),
                Outcome::Failed,
                kind,
                now,
            );
            flip.save(state)?;
            let error = Some((Kind::NoFallback, reason.as_str()));
            let event = (Outcome::Failed, version.as_str(), build.as_deref());
            publish(host, state, Some(event), error);
            Verdict::NoFallback { version, reason }
        }
        Decision::End => {
            state.end_probation(now);
            flip.save(state)?;
            log(&format!("{version} passed its probation"));
            Verdict::ProbationPassed { version }
        }
        Decision::Off => {
            state.switch_off_probation(now);
            flip.save(state)?;
            log(&format!(
                "{version}: probation is off in the configuration: its probation ended \
                 ({} failures counted)",
                p.failures
            ));
            Verdict::ProbationOff { version }
        }
        // Every run that watched the probation records the time it
        // counted, on the boot it counted it on.
        Decision::Record { .. } | Decision::Continue => {
            let (failures, what) = match decision {
                Decision::Record { failures, what } => (failures, what),
                _ => (p.failures, Vec::new()),
            };
            let last = what.join("; ");
            if !last.is_empty() {
                log(&format!(
                    "{version} on probation: {last} ({failures} of at most {limit} failures)"
                ));
            }
            let mut until = p.until;
            if let Some(on) = state.probation.as_mut() {
                on.failures = failures;
                on.boot_id = boot_id.clone().or(on.boot_id.take());
                if let Some(ran) = ran {
                    (on.ran, on.uptime) = (Some(ran), uptime);
                    // For people: when the window ends if the host runs on.
                    on.until = now.saturating_add(window.saturating_sub(ran));
                    until = on.until;
                }
                if !last.is_empty() {
                    on.last_failure = Some(last);
                }
            }
            flip.save(state)?;
            Verdict::OnProbation {
                version,
                until,
                failures,
            }
        }
        // `RunChecks` and `ReadFallback` never leave the loop.
        Decision::RunChecks | Decision::ReadFallback => Verdict::OnProbation {
            version,
            until: p.until,
            failures: p.failures,
        },
    }))
}

/// The old slot `slot` as a rollback would find it: its record, a write
/// into it recorded in flight, and its bootloader flag (`None`, with a
/// warning, when the backend cannot read it).
fn read_fallback(host: &Host, state: &State, slot: SlotName) -> Fallback {
    let boot = match host.boot.state(slot) {
        Ok(flag) => Some(flag),
        Err(e) => {
            log(&format!(
                "warning: cannot read the bootloader's flag of slot {slot} ({e}): \
                 judging it by its record"
            ));
            None
        }
    };
    Fallback {
        status: state.slot(slot).status,
        writing: state.transaction.as_ref().is_some_and(|t| t.to == slot),
        boot,
    }
}

/// The clean-shutdown mark at `path`, trimmed; `None` when it was never
/// written (with a warning on stderr naming the path: restarts are not
/// counted). Any other read error is an error naming the path: read by
/// the rules of outside files ([`crate::files::read_text_capped`]), so a
/// FIFO there is refused at once (it never holds `health`, and the state
/// lock with it) and a file over [`MAX_MARK_BYTES`] is refused unread.
fn read_mark(path: &std::path::Path) -> Result<Option<String>> {
    match crate::files::read_text_capped(path, MAX_MARK_BYTES) {
        Ok(m) => Ok(Some(m.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log(&format!(
                "warning: {} was never written (abupdate-shutdown-mark.service not \
                 installed, or it writes another path than this state_dir): restarts \
                 during the probation are not counted as unclean",
                path.display()
            ));
            Ok(None)
        }
        Err(source) => Err(crate::error::Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
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
            floor: Some(10),
            boot_id: boot_id.map(str::to_string),
            ran: None,
            uptime: None,
            failures,
            last_failure: None,
            passed: None,
            off: None,
            no_fallback: None,
        }
    }

    /// Slot A as a rollback finds it after a commit: good everywhere.
    fn usable() -> Fallback {
        Fallback {
            status: SlotStatus::Good,
            writing: false,
            boot: Some(BootState::Good),
        }
    }

    /// Slot B booted at 150 on "boot-1", a window of 100 configured and
    /// 50 of it counted, the limit 2, the mark naming an earlier boot
    /// ("boot-older"), slot A read as usable.
    fn facts(p: &Probation) -> Facts<'_> {
        Facts {
            probation: p,
            booted: SlotName::B,
            now: 150,
            ran: Some(50),
            window: 100,
            limit: 2,
            boot_id: Some("boot-1"),
            mark: Some("boot-older"),
            checks: None,
            fallback: Some(usable()),
            withdrawn: None,
        }
    }

    #[test]
    fn a_mark_that_is_a_fifo_or_huge_is_an_error_naming_it_without_hanging() {
        let d = crate::testutil::TempDir::new("mark");
        let path = d.path().join(SHUTDOWN_MARK);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let fifo = path.clone();
        let read = crate::testutil::within_5s(move || read_mark(&fifo).map_err(|e| e.to_string()));
        let e = read.expect_err("a FIFO is no mark");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(300 << 20).unwrap();
        let e = read_mark(&path).expect_err("over the cap").to_string();
        assert!(e.contains("larger than 4096 bytes"), "{e}");
        std::fs::write(&path, "boot-1\n").unwrap();
        assert_eq!(read_mark(&path).unwrap().as_deref(), Some("boot-1"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_mark(&path).unwrap(), None, "never written");
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
            Decision::RollBack(why, cause) => {
                assert_eq!(cause, Cause::Failing { failures: 3 });
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
        assert!(matches!(decide(&f), Decision::RollBack(w, _) if w.contains("x: y")));
    }

    #[test]
    fn a_limit_of_zero_rolls_back_on_the_first_failure() {
        let p = probation(0, Some("boot-0"));
        let mut f = facts(&p);
        f.limit = 0;
        assert!(matches!(decide(&f), Decision::RollBack(..)));
    }

    #[test]
    fn the_end_of_the_window_ends_the_probation_whatever_happened_since() {
        let p = probation(2, Some("boot-0"));
        let mut f = facts(&p);
        f.ran = Some(100);
        assert_eq!(decide(&f), Decision::End);
    }

    /// Found from outside: the window was on the wall clock. A host whose
    /// every boot started on an RTC reset to 2000 (below the newest
    /// `created` it believed) and rebooted before the window's end had it
    /// restarted twice a boot: 2.0 stayed on probation for good and 3.0
    /// was never installed. One run on an RTC reading 2040 ended it as
    /// passed, and the crashes that followed were never counted. The
    /// window is the time counted on the host's uptime: no wall clock,
    /// however wrong or stepped, starts, stretches or ends it.
    #[test]
    fn no_wall_clock_starts_stretches_or_ends_the_window_only_the_time_counted() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.checks = Some(Ok(()));
        for now in [i64::MIN, -1, 0, 40, 99, 150, 200, 2_208_988_800, i64::MAX] {
            f.now = now;
            f.ran = Some(99);
            assert_eq!(
                decide(&f),
                Decision::Continue,
                "at {now}, 99 of 100 counted"
            );
            f.ran = Some(100);
            assert_eq!(decide(&f), Decision::End, "at {now}, 100 counted");
        }
        // A window configured shorter than what was counted: it ends.
        f.window = 40;
        f.ran = Some(50);
        assert_eq!(decide(&f), Decision::End);
        // Longer: it runs on.
        f.window = 1_000;
        assert_eq!(decide(&f), Decision::Continue);
    }

    #[test]
    fn a_host_whose_uptime_cannot_be_read_reads_the_window_on_the_wall_clock() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.ran = None;
        f.checks = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Continue, "150 is before until 200");
        f.now = 200;
        assert_eq!(decide(&f), Decision::End);
    }

    #[test]
    fn each_run_counts_its_boots_uptime_since_the_last_counted_run_or_since_a_new_boot() {
        let mut p = probation(0, Some("boot-1"));
        // A commit's record: nothing counted yet, this boot's uptime all.
        assert_eq!(counted(&p, Some("boot-1"), Some(30)), Some(30));
        assert_eq!(counted(&p, Some("boot-1"), None), None, "no uptime");
        (p.ran, p.uptime) = (Some(30), Some(30));
        // The same boot: what ran since.
        assert_eq!(counted(&p, Some("boot-1"), Some(3_630)), Some(3_630));
        // A new boot: its uptime so far, not the time it was off, nor
        // what the last boot ran after its last run.
        assert_eq!(counted(&p, Some("boot-2"), Some(20)), Some(50));
        assert_eq!(counted(&p, Some("boot-2"), Some(5_000)), Some(5_030));
        // No boot ids: an uptime below the recorded one is a new boot.
        (p.boot_id, p.uptime) = (None, Some(600));
        assert_eq!(counted(&p, None, Some(700)), Some(130));
        assert_eq!(counted(&p, None, Some(10)), Some(40));
        // The same id with a smaller uptime (a boot id file that lies):
        // the smaller uptime, never a negative count.
        p.boot_id = Some("boot-1".into());
        assert_eq!(counted(&p, Some("boot-1"), Some(10)), Some(40));
        // Found from outside: a boot id that could not be read any more
        // counted the whole uptime again at every run (a 24 h window passed
        // in 7 h). An unknown id is no new boot; the uptime tells.
        (p.boot_id, p.ran, p.uptime) = (Some("boot-1".into()), Some(3_600), Some(3_600));
        assert_eq!(counted(&p, None, Some(7_200)), Some(7_200));
        assert_eq!(
            counted(&p, None, Some(60)),
            Some(3_660),
            "smaller: a new boot"
        );
        // A recorded uptime a hand edit made negative: never a wrapped count.
        p.uptime = Some(i64::MIN);
        assert_eq!(counted(&p, Some("boot-1"), Some(10)), Some(3_610));
        p.uptime = Some(30);
        // A count a hand-edited record made negative or huge stays sane.
        p.ran = Some(-5);
        assert_eq!(counted(&p, Some("boot-9"), Some(10)), Some(10));
        p.ran = Some(i64::MAX);
        assert_eq!(counted(&p, Some("boot-9"), Some(10)), Some(i64::MAX));
    }

    #[test]
    fn with_no_mark_ever_written_a_restart_is_not_counted() {
        let p = probation(2, Some("boot-0"));
        let mut f = facts(&p);
        f.mark = None;
        f.checks = Some(Ok(()));
        assert_eq!(
            decide(&f),
            Decision::Record {
                failures: 2,
                what: vec![]
            },
            "the host cannot tell a crash from a reboot: the boot id moves on"
        );
    }

    #[test]
    fn a_window_configured_to_zero_switches_the_probation_off() {
        let p = probation(2, Some("boot-0"));
        let mut f = facts(&p);
        f.window = 0;
        assert_eq!(decide(&f), Decision::Off, "before counting the restart");
        f.booted = SlotName::A;
        assert_eq!(decide(&f), Decision::FellBack, "a fallback still counts");
    }

    #[test]
    fn a_withdrawn_release_on_probation_rolls_back_naming_the_withdrawal() {
        let why = "release 2.0 is withdrawn from the release channel https://x/channel.json";
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.withdrawn = Some(why);
        assert_eq!(
            decide(&f),
            Decision::RollBack(why.into(), Cause::Withdrawn),
            "no failure counted"
        );
        f.checks = Some(Ok(()));
        assert_eq!(
            decide(&f),
            Decision::RollBack(why.into(), Cause::Withdrawn),
            "healthy too"
        );
        f.ran = Some(500);
        assert_eq!(
            decide(&f),
            Decision::RollBack(why.into(), Cause::Withdrawn),
            "even at the window's end"
        );
    }

    #[test]
    fn a_withdrawal_s_reboot_waits_for_the_window_a_failure_s_does_not() {
        assert!(Cause::Withdrawn.reboots_now(true));
        assert!(!Cause::Withdrawn.reboots_now(false), "planned: waits");
        let failing = Cause::Failing { failures: 3 };
        assert!(failing.reboots_now(false), "a failing host reboots at once");
        assert!(failing.reboots_now(true));
    }

    #[test]
    fn a_withdrawal_does_not_outrank_a_fallback_or_probation_off() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.withdrawn = Some("withdrawn");
        f.booted = SlotName::A;
        assert_eq!(decide(&f), Decision::FellBack, "the old slot already runs");
        f.booted = SlotName::B;
        f.window = 0;
        assert_eq!(
            decide(&f),
            Decision::Off,
            "no probation: moves on as after one"
        );
    }

    #[test]
    fn a_withdrawal_reads_the_old_slot_before_rolling_back() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.withdrawn = Some("withdrawn");
        f.fallback = None;
        assert_eq!(decide(&f), Decision::ReadFallback);
    }

    #[test]
    fn a_withdrawal_with_an_unusable_old_slot_keeps_the_release() {
        let why = "release 2.0 is withdrawn from the release channel https://x/channel.json";
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.withdrawn = Some(why);
        f.fallback = Some(Fallback {
            status: SlotStatus::Bad,
            ..usable()
        });
        assert_eq!(
            decide(&f),
            Decision::NoFallback(
                format!(
                    "probation failed ({why}) but slot A is marked bad: keeping 2.0; no fallback"
                ),
                Cause::Withdrawn
            )
        );
        f.fallback = Some(Fallback {
            boot: Some(BootState::Bad),
            ..usable()
        });
        assert!(
            matches!(decide(&f), Decision::NoFallback(w, _) if w.contains("unbootable")),
            "the bootloader's flag counts too"
        );
    }

    #[test]
    fn an_unknown_withdrawal_changes_nothing() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.withdrawn = None;
        f.checks = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Continue);
    }

    #[test]
    fn the_old_slot_running_means_the_bootloader_fell_back() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.booted = SlotName::A;
        assert_eq!(decide(&f), Decision::FellBack);
        f.ran = Some(500);
        assert_eq!(decide(&f), Decision::FellBack, "even after the window");
    }

    #[test]
    fn a_rollback_due_reads_the_old_slot_first() {
        let p = probation(2, Some("boot-0"));
        let mut f = facts(&p);
        f.fallback = None;
        assert_eq!(decide(&f), Decision::ReadFallback);
        f.fallback = Some(usable());
        assert!(matches!(decide(&f), Decision::RollBack(..)));
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.fallback = None;
        f.checks = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Continue, "no rollback: not read");
    }

    /// The decision for a third unclean restart with slot A as `fallback`.
    fn third_failure_with(fallback: Fallback) -> Decision {
        let p = probation(2, Some("boot-0"));
        let mut f = facts(&p);
        f.fallback = Some(fallback);
        decide(&f)
    }

    #[test]
    fn an_old_slot_marked_bad_keeps_the_release_with_the_reason() {
        let bad = Fallback {
            status: SlotStatus::Bad,
            ..usable()
        };
        match third_failure_with(bad) {
            Decision::NoFallback(why, cause) => {
                assert_eq!(
                    cause,
                    Cause::Failing { failures: 3 },
                    "the count ends with the failure that ended it"
                );
                assert!(
                    why.starts_with("probation failed (3 failures within its probation"),
                    "{why}"
                );
                assert!(
                    why.ends_with("but slot A is marked bad: keeping 2.0; no fallback"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_old_slot_not_recorded_whole_keeps_the_release() {
        for (status, because) in [
            (SlotStatus::Installing, "is recorded as being written"),
            (SlotStatus::Empty, "is recorded empty"),
            (SlotStatus::Other("x".into()), "a status not known here"),
        ] {
            let fallback = Fallback {
                status: status.clone(),
                ..usable()
            };
            assert!(
                matches!(third_failure_with(fallback), Decision::NoFallback(w, _) if w.contains(because)),
                "{status}"
            );
        }
        let installed = Fallback {
            status: SlotStatus::Installed,
            ..usable()
        };
        assert!(matches!(
            third_failure_with(installed),
            Decision::RollBack(..)
        ));
    }

    #[test]
    fn a_write_recorded_into_the_old_slot_keeps_the_release() {
        let writing = Fallback {
            writing: true,
            ..usable()
        };
        assert!(matches!(
            third_failure_with(writing),
            Decision::NoFallback(w, _) if w.contains("slot A has a write into it recorded in flight")
        ));
    }

    #[test]
    fn an_old_slot_the_bootloader_holds_unbootable_keeps_the_release() {
        let unbootable = Fallback {
            boot: Some(BootState::Bad),
            ..usable()
        };
        assert!(matches!(
            third_failure_with(unbootable),
            Decision::NoFallback(w, _) if w.contains("slot A is marked unbootable in the bootloader")
        ));
        let unknown = Fallback {
            boot: None,
            ..usable()
        };
        assert!(
            matches!(third_failure_with(unknown), Decision::RollBack(..)),
            "a backend that cannot tell: the record decides"
        );
    }

    #[test]
    fn a_fallback_by_the_bootloader_needs_no_usable_old_slot() {
        let p = probation(0, Some("boot-1"));
        let mut f = facts(&p);
        f.booted = SlotName::A;
        f.fallback = Some(Fallback {
            status: SlotStatus::Bad,
            ..usable()
        });
        assert_eq!(decide(&f), Decision::FellBack, "the old slot already runs");
    }
}
