//! The fleet controller's decision: a pure function over plain numbers.
//!
//! hawkBit's rollout conditions per wave, on cumulative waves (a wave's
//! percentage covers the hosts of the waves before it): an error condition
//! — a count of failed hosts, or a share of the hosts that finished — pauses
//! the whole rollout at once; a success condition — a share of the hosts the
//! wave covers that committed — and a minimum soak time since the wave
//! started advance it to the next wave. Invariants: a paused rollout is
//! never advanced; the error condition wins over the success condition; a
//! wave with no committed host is never advanced (no evidence, no advance);
//! only commits of hosts inside the wave advance it — failures count from
//! every host of the release's `compatible` (a failure anywhere is evidence
//! against the release), commits outside the wave (a lab host's manual
//! `install`) are named in the reason and never counted towards advancing.

use super::Tally;
use crate::manifest::Rollout;
use crate::timefmt::{format_duration, format_rfc3339, parse_rfc3339};
use std::time::Duration;

/// When to pause and when to advance (the controller's flags).
#[derive(Clone, Debug)]
pub struct Policy {
    /// Error condition: pause once this many hosts failed the release...
    pub max_failures: u64,
    /// ...or once this fraction of the hosts that finished failed...
    pub max_failure_rate: f64,
    /// ...counted only from this many finished hosts on.
    pub min_reports: u64,
    /// Waves for a manifest whose `rollout` names none (`--waves`).
    pub waves: Vec<f64>,
    /// Hosts in the fleet, for the reports source (Prometheus counts the
    /// hosts a wave covers).
    pub fleet_size: Option<u64>,
    /// Success condition: the fraction of the hosts the current wave
    /// covers that must have committed before the next wave starts.
    pub advance_when: f64,
    /// The least time a wave runs before the next one starts.
    pub soak: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_failures: 5,
            max_failure_rate: 0.05,
            min_reports: 20,
            waves: Vec::new(),
            fleet_size: None,
            advance_when: 0.9,
            soak: Duration::ZERO,
        }
    }
}

impl Policy {
    /// The policy's numbers make sense (rates are fractions, counts
    /// positive); the error names the flag.
    pub fn check(&self) -> Result<(), String> {
        let fraction = |flag: &str, v: f64, zero_ok: bool| {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) || (!zero_ok && v == 0.0) {
                Err(match zero_ok {
                    true => format!("{flag} {v}: a fraction from 0 to 1"),
                    false => format!("{flag} {v}: a fraction more than 0, at most 1"),
                })
            } else {
                Ok(())
            }
        };
        fraction("--max-failure-rate", self.max_failure_rate, true)?;
        fraction("--advance-when", self.advance_when, false)?;
        if self.max_failures == 0 {
            return Err("--max-failures 0: give at least 1".into());
        }
        if self.fleet_size == Some(0) {
            return Err("--fleet-size 0: give the number of hosts".into());
        }
        if self.soak > Duration::from_secs(30 * 86400) {
            return Err(format!(
                "--soak {}: at most 30d",
                format_duration(self.soak)
            ));
        }
        Ok(())
    }
}

/// Waves: percentages strictly increasing, each in (0, 100], the last 100.
/// An operator's typo (`100,1,5,25`) is refused, not guessed at.
pub fn check_waves(waves: &[f64]) -> Result<(), String> {
    let mut prev: Option<f64> = None;
    for &w in waves {
        if !w.is_finite() || w <= 0.0 || w > 100.0 {
            return Err(format!("{w} is not a percentage in (0, 100]"));
        }
        if prev.is_some_and(|p| w <= p) {
            return Err(format!("not strictly increasing at {w}"));
        }
        prev = Some(w);
    }
    if waves.last() != Some(&100.0) {
        return Err("the last wave must be 100".into());
    }
    Ok(())
}

/// `--waves 1,5,25,100` (see [`check_waves`]); the error names the flag.
pub fn parse_waves(text: &str) -> Result<Vec<f64>, String> {
    let mut waves = Vec::new();
    for part in text.split(',') {
        let w: f64 = part
            .trim()
            .parse()
            .map_err(|_| format!("--waves {text}: {part:?} is not a number"))?;
        waves.push(w);
    }
    check_waves(&waves).map_err(|e| format!("--waves {text}: {e}"))?;
    Ok(waves)
}

/// The rollout as the signed manifest states it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `rollout.paused`: no host starts installing; the controller keeps it so.
    pub paused: bool,
    /// The fixed percentage hosts read (`rollout.percent`); none for a
    /// time ramp or no `rollout` (nothing to advance then).
    pub percent: Option<f64>,
    /// `rollout.waves`, else the policy's `--waves`.
    pub waves: Vec<f64>,
    /// When the current wave started: `rollout.wave_started`, else the
    /// manifest's `created` (the first wave starts when `pack` made it).
    pub wave_started: i64,
    /// Since when hosts may have reported the current wave (where the
    /// metrics' lookback starts): `rollout.wave_started`, which only the
    /// controller writes, at its clock, as it publishes the wave; for the
    /// first wave [`crate::manifest::MAX_CREATED_AHEAD`] before `created`,
    /// because hosts take a manifest dated up to that far ahead of their
    /// clocks. Found from outside (stop 48): a `created` an hour ahead
    /// shrank the first wave's lookback to its 10-minute floor, and a wave
    /// host that installed and went silent was forgotten, so the wave
    /// advanced over it.
    pub reports_since: i64,
}

impl Plan {
    /// Read the plan from a manifest's `rollout` and `created`. `--waves`
    /// (`fallback`) serves a manifest without `rollout.waves`; given
    /// together with a different one, the signed plan is not overridden.
    pub fn from_manifest(
        rollout: Option<&Rollout>,
        created: i64,
        fallback: &[f64],
    ) -> Result<Plan, String> {
        let Some(r) = rollout else {
            return Ok(Plan {
                paused: false,
                percent: None,
                waves: fallback.to_vec(),
                wave_started: created,
                reports_since: first_wave_reports_since(created),
            });
        };
        let waves = match &r.waves {
            Some(w) => {
                check_waves(w).map_err(|e| format!("rollout.waves: {e}"))?;
                if !fallback.is_empty() && fallback != &w[..] {
                    return Err(format!(
                        "--waves {fallback:?} differs from the manifest's rollout.waves {w:?}: \
                         the signed plan is the one followed; leave --waves out"
                    ));
                }
                w.clone()
            }
            None => fallback.to_vec(),
        };
        let (wave_started, reports_since) = match &r.wave_started {
            Some(t) => {
                let t = parse_rfc3339(t).map_err(|e| format!("rollout.wave_started: {e}"))?;
                (t, t)
            }
            None => (created, first_wave_reports_since(created)),
        };
        Ok(Plan {
            paused: r.paused,
            percent: r.percent,
            waves,
            wave_started,
            reports_since,
        })
    }
}

/// Since when hosts may have taken a release dated `created` (see
/// [`Plan::reports_since`]).
fn first_wave_reports_since(created: i64) -> i64 {
    created.saturating_sub(crate::manifest::MAX_CREATED_AHEAD)
}

/// What the fleet says about the release, as plain numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The release's outcomes across every host of its `compatible` (and
    /// selector): the error condition counts these.
    pub tally: Tally,
    /// The outcomes of the hosts inside the current wave (position below
    /// its percentage), a part of `tally`: the success condition counts
    /// only these. `None`: the source cannot tell which hosts are in the
    /// wave (the reports carry no position), so commits of any host count
    /// and the reason says so.
    pub in_wave: Option<Tally>,
    /// Hosts the current wave covers (their position is below its
    /// percentage), when known.
    pub wave_hosts: Option<u64>,
}

/// Hosts a `percent` wave covers in a fleet of `fleet` hosts (the reports
/// source's estimate; Prometheus counts them).
pub fn wave_hosts_of_fleet(fleet: u64, percent: f64) -> u64 {
    (fleet as f64 * percent / 100.0).floor() as u64
}

/// What the controller does to the manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Leave the manifest as it is.
    Keep {
        /// Why, in words.
        reason: String,
    },
    /// Set `rollout.paused`: too many hosts failed.
    Pause {
        /// Why, in words.
        reason: String,
    },
    /// Move `rollout.percent` to the next wave.
    Advance {
        /// The next wave's percentage.
        to: f64,
        /// Why, in words.
        reason: String,
    },
}

impl Action {
    /// The decision's word on the command line: `keep`, `pause` or
    /// `advance`.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Keep { .. } => "keep",
            Action::Pause { .. } => "pause",
            Action::Advance { .. } => "advance",
        }
    }

    /// Why, in words; an advance names the wave it moves to.
    pub fn explain(&self) -> String {
        match self {
            Action::Keep { reason } | Action::Pause { reason } => reason.clone(),
            Action::Advance { to, reason } => format!("to {to}%: {reason}"),
        }
    }

    /// Whether the manifest changes (and is re-signed).
    pub fn changes_manifest(&self) -> bool {
        !matches!(self, Action::Keep { .. })
    }
}

/// Decide on the rollout of a release at `now`. Failures of hosts that
/// cannot be attributed to it ([`Tally::failed_unattributed`]) count as
/// any other and are named in every reason: a pause they cause says what
/// to check before resuming.
pub fn decide(plan: &Plan, facts: &Facts, policy: &Policy, now: i64) -> Action {
    let action = decide_counts(plan, facts, policy, now);
    let n = facts.tally.failed_unattributed;
    if n == 0 {
        return action;
    }
    let note = format!(
        "; of the failed, {n} host{} of an older abupdate (no `compatible` label) rolled back \
         in the lookback (which release is not known)",
        if n == 1 { "" } else { "s" }
    );
    match action {
        Action::Keep { reason } => Action::Keep {
            reason: reason + &note,
        },
        Action::Pause { reason } => Action::Pause {
            reason: reason + &note,
        },
        Action::Advance { to, reason } => Action::Advance {
            to,
            reason: reason + &note,
        },
    }
}

fn decide_counts(plan: &Plan, facts: &Facts, policy: &Policy, now: i64) -> Action {
    let t = &facts.tally;
    if plan.paused {
        return Action::Keep {
            reason: "the rollout is paused; resume it by hand".into(),
        };
    }
    if t.failed >= policy.max_failures {
        return Action::Pause {
            reason: format!("{} hosts failed (limit {})", t.failed, policy.max_failures),
        };
    }
    let rate = if t.finished() == 0 {
        0.0
    } else {
        t.failed as f64 / t.finished() as f64
    };
    if t.finished() >= policy.min_reports && rate > policy.max_failure_rate {
        return Action::Pause {
            reason: format!(
                "{:.1}% of {} finished hosts failed (limit {:.1}%)",
                rate * 100.0,
                t.finished(),
                policy.max_failure_rate * 100.0
            ),
        };
    }
    let Some(current) = plan.percent else {
        return Action::Keep {
            reason: format!(
                "{} committed, {} failed (no fixed percentage to advance)",
                t.committed, t.failed
            ),
        };
    };
    let Some(&next) = plan.waves.iter().find(|&&w| w > current) else {
        return Action::Keep {
            reason: if plan.waves.is_empty() {
                format!("wave {current}%: no waves to advance through")
            } else {
                format!("last wave ({current}%) running")
            },
        };
    };
    let Some(hosts) = facts.wave_hosts else {
        return Action::Keep {
            reason: format!(
                "{} committed, {} failed (the number of hosts in the wave is unknown)",
                t.committed, t.failed
            ),
        };
    };
    // The success condition counts the wave's own hosts: a commit outside
    // it (a lab host's manual `install`) is no evidence that the release
    // works on the hosts the wave sent it to.
    let (wave, outside) = match &facts.in_wave {
        Some(w) => (w, Some(t.committed.saturating_sub(w.committed))),
        None => (t, None),
    };
    let note = match outside {
        Some(0) => String::new(),
        Some(n) => format!("; {n} committed outside the wave, not counted"),
        None => "; the reports do not say which hosts are in the wave: commits of any host counted"
            .into(),
    };
    // The wave holds at least its hosts that report the release: a count
    // of its hosts below that (position series missing from the metrics,
    // a first wave too small for `--fleet-size`) must not make one commit
    // among thirty installs a wave's success. Reporters outside the wave
    // do not join it.
    let hosts = hosts.max(wave.installed + wave.committed + wave.failed);
    let committed = wave.committed;
    let need = (hosts as f64 * policy.advance_when).max(1.0);
    if (committed as f64) < need {
        return Action::Keep {
            reason: format!(
                "wave {current}%: {committed} of ~{hosts} hosts committed, {} needed{note}",
                need.ceil()
            ),
        };
    }
    let soaked = now.saturating_sub(plan.wave_started);
    let soak = i64::try_from(policy.soak.as_secs()).unwrap_or(i64::MAX);
    if soaked < 0 && soak > 0 {
        return Action::Keep {
            reason: format!(
                "wave {current}%: {committed} of ~{hosts} hosts committed; the wave started at {}, \
                 ahead of this machine's clock ({}): one of the two is wrong{note}",
                format_rfc3339(plan.wave_started),
                format_rfc3339(now)
            ),
        };
    }
    if soaked < soak {
        return Action::Keep {
            reason: format!(
                "wave {current}%: {committed} of ~{hosts} hosts committed; soaking since {} \
                 ({} of {}){note}",
                format_rfc3339(plan.wave_started),
                format_duration(Duration::from_secs(soaked.max(0) as u64)),
                format_duration(policy.soak)
            ),
        };
    }
    Action::Advance {
        to: next,
        reason: format!(
            "{committed} of ~{hosts} hosts in the {current}% wave committed, {} failed{note}",
            t.failed
        ),
    }
}

/// Apply an action to a manifest's JSON (its other fields, unknown ones
/// included, stay as they are); returns whether it changed. An advance
/// records when the new wave started (`rollout.wave_started` = `now`), for
/// the next run's soak, and the plan it follows (`rollout.waves` = `waves`,
/// the plan's): a later run given other `--waves` is then refused, as for
/// a manifest packed with waves, instead of skipping waves (found from
/// outside, stop 48: `--waves 2,100` after an advance by `2,10,50,100`
/// went from 10% to 100%).
pub fn apply(
    doc: &mut serde_json::Value,
    action: &Action,
    waves: &[f64],
    now: i64,
) -> Result<bool, String> {
    let changes: Vec<(&str, serde_json::Value)> = match action {
        Action::Keep { .. } => return Ok(false),
        Action::Pause { .. } => vec![("paused", serde_json::Value::Bool(true))],
        Action::Advance { to, .. } => vec![
            ("percent", serde_json::json!(to)),
            ("wave_started", format_rfc3339(now).into()),
            ("waves", serde_json::json!(waves)),
        ],
    };
    let Some(obj) = doc.as_object_mut() else {
        return Err("the manifest is not a JSON object".into());
    };
    let rollout = obj
        .entry("rollout")
        .or_insert_with(|| serde_json::json!({}));
    if rollout.is_null() {
        *rollout = serde_json::json!({});
    }
    let Some(rollout) = rollout.as_object_mut() else {
        return Err("rollout is not a JSON object".into());
    };
    for (key, value) in changes {
        rollout.insert(key.into(), value);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::test_tally as t;

    /// Facts of a source that knows positions, every reporter in the wave.
    fn facts(tally: Tally, wave_hosts: u64) -> Facts {
        Facts {
            in_wave: Some(tally.clone()),
            tally,
            wave_hosts: Some(wave_hosts),
        }
    }

    /// Facts with `in_wave` of them inside the wave.
    fn split(tally: Tally, in_wave: Tally, wave_hosts: u64) -> Facts {
        Facts {
            tally,
            in_wave: Some(in_wave),
            wave_hosts: Some(wave_hosts),
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn plan(percent: f64) -> Plan {
        Plan {
            paused: false,
            percent: Some(percent),
            waves: vec![1.0, 5.0, 100.0],
            wave_started: NOW - 3600,
            reports_since: NOW - 3600,
        }
    }

    fn policy() -> Policy {
        Policy {
            soak: Duration::from_secs(1800),
            ..Default::default()
        }
    }

    #[test]
    fn a_paused_rollout_is_kept_whatever_the_fleet_says() {
        let p = Plan {
            paused: true,
            ..plan(1.0)
        };
        for f in [facts(t(0, 10, 0), 10), facts(t(0, 0, 50), 10)] {
            assert!(matches!(
                decide(&p, &f, &policy(), NOW),
                Action::Keep { .. }
            ));
        }
    }

    #[test]
    fn the_failure_count_pauses_even_a_wave_ready_to_advance() {
        let a = decide(&plan(1.0), &facts(t(0, 100, 5), 100), &policy(), NOW);
        assert_eq!(
            a,
            Action::Pause {
                reason: "5 hosts failed (limit 5)".into()
            }
        );
        // One below the count and below the share: advances.
        let a = decide(&plan(1.0), &facts(t(0, 100, 4), 100), &policy(), NOW);
        assert!(matches!(a, Action::Advance { to: 5.0, .. }), "{a:?}");
    }

    /// Finding F3 of the version-crossing review: hosts that fell back to
    /// an abupdate older than the `compatible` label count failed, and
    /// every reason names them.
    #[test]
    fn failures_of_older_hosts_count_and_are_named() {
        let older = |failed, of_them| Tally {
            failed_unattributed: of_them,
            ..t(0, 1, failed)
        };
        let p = Policy {
            max_failures: 1,
            ..policy()
        };
        // The canaries of F3: one committed, two fell back to the old
        // version. Without them this wave of one host advanced.
        let a = decide(&plan(1.0), &facts(older(2, 2), 1), &p, NOW);
        assert_eq!(
            a,
            Action::Pause {
                reason: "2 hosts failed (limit 1); of the failed, 2 hosts of an older abupdate \
                         (no `compatible` label) rolled back in the lookback (which release \
                         is not known)"
                    .into()
            }
        );
        // Under the limits: decided as before, and still named. (The older
        // hosts' positions say nothing of the release: not in the wave's
        // tally.)
        let under = Facts {
            in_wave: Some(t(0, 1, 0)),
            ..facts(older(1, 1), 1)
        };
        let a = decide(&plan(1.0), &under, &policy(), NOW);
        match a {
            Action::Advance { to: 5.0, reason } => assert!(
                reason.ends_with(
                    "; of the failed, 1 host of an older abupdate (no `compatible` \
                                  label) rolled back in the lookback (which release is not known)"
                ),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // No wave size (no position of a newer host): paused on the count,
        // else kept, never advanced.
        let unknown = Facts {
            wave_hosts: None,
            in_wave: None,
            tally: older(1, 1),
        };
        assert!(matches!(
            decide(&plan(1.0), &unknown, &p, NOW),
            Action::Pause { .. }
        ));
        assert!(matches!(
            decide(&plan(1.0), &unknown, &policy(), NOW),
            Action::Keep { .. }
        ));
    }

    #[test]
    fn the_failure_share_pauses_only_from_enough_finished_hosts() {
        let p = Policy {
            max_failures: 1000,
            ..policy()
        };
        // 4 of 19 finished: under --min-reports 20, the share is not judged.
        let a = decide(&plan(1.0), &facts(t(0, 15, 4), 1000), &p, NOW);
        assert!(matches!(a, Action::Keep { .. }), "{a:?}");
        // 4 of 20 finished = 20% > 5%.
        let a = decide(&plan(1.0), &facts(t(0, 16, 4), 1000), &p, NOW);
        assert_eq!(
            a,
            Action::Pause {
                reason: "20.0% of 20 finished hosts failed (limit 5.0%)".into()
            }
        );
        // Exactly at the share: not over it.
        let p = Policy {
            max_failure_rate: 0.2,
            ..p
        };
        let a = decide(&plan(1.0), &facts(t(0, 16, 4), 1000), &p, NOW);
        assert!(matches!(a, Action::Keep { .. }), "{a:?}");
    }

    #[test]
    fn a_ramp_or_no_fixed_percentage_is_only_ever_paused() {
        let ramp = Plan {
            percent: None,
            ..plan(1.0)
        };
        let a = decide(&ramp, &facts(t(0, 1000, 0), 10), &policy(), NOW);
        assert!(matches!(a, Action::Keep { .. }), "{a:?}");
    }

    #[test]
    fn the_last_wave_and_no_waves_are_kept() {
        let a = decide(&plan(100.0), &facts(t(0, 1000, 0), 1000), &policy(), NOW);
        assert_eq!(
            a,
            Action::Keep {
                reason: "last wave (100%) running".into()
            }
        );
        let none = Plan {
            waves: vec![],
            ..plan(1.0)
        };
        assert!(matches!(
            decide(&none, &facts(t(0, 10, 0), 10), &policy(), NOW),
            Action::Keep { .. }
        ));
    }

    #[test]
    fn an_unknown_wave_size_is_never_advanced() {
        let f = Facts {
            tally: t(0, 10, 0),
            in_wave: Some(t(0, 10, 0)),
            wave_hosts: None,
        };
        assert!(matches!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Keep { .. }
        ));
    }

    #[test]
    fn a_wave_counts_at_least_the_hosts_that_report_the_release() {
        // 30 installed, 1 committed, and no host counted in the wave.
        assert_eq!(
            decide(&plan(2.0), &facts(t(30, 1, 0), 0), &policy(), NOW),
            Action::Keep {
                reason: "wave 2%: 1 of ~31 hosts committed, 28 needed".into()
            }
        );
        // The same with a count below the reports.
        assert_eq!(
            decide(&plan(2.0), &facts(t(30, 1, 0), 4), &policy(), NOW),
            Action::Keep {
                reason: "wave 2%: 1 of ~31 hosts committed, 28 needed".into()
            }
        );
    }

    #[test]
    fn the_success_share_of_the_wave_advances() {
        // 9 of 10 at --advance-when 0.9: advance.
        assert_eq!(
            decide(&plan(1.0), &facts(t(1, 9, 0), 10), &policy(), NOW),
            Action::Advance {
                to: 5.0,
                reason: "9 of ~10 hosts in the 1% wave committed, 0 failed".into()
            }
        );
        // 8 of 10: hold.
        assert_eq!(
            decide(&plan(1.0), &facts(t(2, 8, 0), 10), &policy(), NOW),
            Action::Keep {
                reason: "wave 1%: 8 of ~10 hosts committed, 9 needed".into()
            }
        );
        // From 5% the next wave is 100%.
        assert!(matches!(
            decide(&plan(5.0), &facts(t(0, 50, 0), 50), &policy(), NOW),
            Action::Advance { to: 100.0, .. }
        ));
    }

    #[test]
    fn a_wave_without_a_committed_host_is_never_advanced() {
        // A wave that covers no host has no evidence to advance on.
        let a = decide(&plan(1.0), &facts(t(0, 0, 0), 0), &policy(), NOW);
        assert!(matches!(a, Action::Keep { .. }), "{a:?}");
        let a = decide(&plan(1.0), &facts(t(0, 1, 0), 0), &policy(), NOW);
        assert!(matches!(a, Action::Advance { .. }), "{a:?}");
    }

    #[test]
    fn the_soak_holds_a_healthy_wave_until_it_has_run_long_enough() {
        let young = Plan {
            wave_started: NOW - 600,
            ..plan(1.0)
        };
        assert_eq!(
            decide(&young, &facts(t(0, 10, 0), 10), &policy(), NOW),
            Action::Keep {
                reason: format!(
                    "wave 1%: 10 of ~10 hosts committed; soaking since {} (10m of 30m)",
                    format_rfc3339(NOW - 600)
                )
            }
        );
        let due = Plan {
            wave_started: NOW - 1800,
            ..plan(1.0)
        };
        assert!(matches!(
            decide(&due, &facts(t(0, 10, 0), 10), &policy(), NOW),
            Action::Advance { .. }
        ));
        // A wave dated ahead of this clock has not soaked at all, and the
        // reason says which date is wrong.
        let ahead = Plan {
            wave_started: NOW + 600,
            ..plan(1.0)
        };
        match decide(&ahead, &facts(t(0, 10, 0), 10), &policy(), NOW) {
            Action::Keep { reason } => assert!(
                reason.contains(&format!(
                    "ahead of this machine's clock ({})",
                    format_rfc3339(NOW)
                )),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // The soak never holds a pause.
        assert!(matches!(
            decide(&young, &facts(t(0, 10, 5), 10), &policy(), NOW),
            Action::Pause { .. }
        ));
    }

    #[test]
    fn commits_outside_the_wave_never_advance_it_and_are_named() {
        // The 2% wave is one host, staged (installed); ten lab hosts
        // outside it committed by hand.
        let f = split(t(1, 10, 0), t(1, 0, 0), 1);
        assert_eq!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Keep {
                reason: "wave 1%: 0 of ~1 hosts committed, 1 needed; \
                         10 committed outside the wave, not counted"
                    .into()
            }
        );
        // The wave's only host went silent (no outcome in the wave), one
        // lab host committed.
        let f = split(t(0, 1, 0), t(0, 0, 0), 1);
        assert!(matches!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Keep { .. }
        ));
        // An empty wave with one outside commit: no evidence.
        let f = split(t(0, 1, 0), t(0, 0, 0), 0);
        assert!(matches!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Keep { .. }
        ));
        // The wave committed: it advances, and the reason names the
        // outside commits as outside.
        let f = split(t(0, 12, 0), t(0, 2, 0), 2);
        assert_eq!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Advance {
                to: 5.0,
                reason: "2 of ~2 hosts in the 1% wave committed, 0 failed; \
                         10 committed outside the wave, not counted"
                    .into()
            }
        );
        // So does a soaking wave's reason.
        let young = Plan {
            wave_started: NOW - 600,
            ..plan(1.0)
        };
        match decide(&young, &f, &policy(), NOW) {
            Action::Keep { reason } => assert!(
                reason.starts_with("wave 1%: 2 of ~2 hosts committed; soaking")
                    && reason.ends_with("; 10 committed outside the wave, not counted"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reporters_outside_the_wave_do_not_join_it() {
        // The wave counts 2 hosts; 30 hosts outside it installed and one
        // committed: the wave stays 2 hosts, its 2 commits advance it.
        let f = split(t(30, 3, 0), t(0, 2, 0), 2);
        assert_eq!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Advance {
                to: 5.0,
                reason: "2 of ~2 hosts in the 1% wave committed, 0 failed; \
                         1 committed outside the wave, not counted"
                    .into()
            }
        );
        // In-wave reporters beyond the count of its hosts still grow it.
        let f = split(t(5, 2, 0), t(5, 2, 0), 2);
        assert_eq!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Keep {
                reason: "wave 1%: 2 of ~7 hosts committed, 7 needed".into()
            }
        );
    }

    #[test]
    fn failures_outside_the_wave_still_pause_it() {
        let f = split(t(0, 10, 5), t(0, 10, 0), 10);
        assert_eq!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Pause {
                reason: "5 hosts failed (limit 5)".into()
            }
        );
    }

    #[test]
    fn a_source_without_positions_counts_every_commit_and_says_so() {
        let f = Facts {
            tally: t(0, 9, 0),
            in_wave: None,
            wave_hosts: Some(10),
        };
        assert_eq!(
            decide(&plan(1.0), &f, &policy(), NOW),
            Action::Advance {
                to: 5.0,
                reason: "9 of ~10 hosts in the 1% wave committed, 0 failed; the reports do not \
                         say which hosts are in the wave: commits of any host counted"
                    .into()
            }
        );
        let f = Facts {
            tally: t(30, 1, 0),
            in_wave: None,
            wave_hosts: Some(0),
        };
        assert_eq!(
            decide(&plan(2.0), &f, &policy(), NOW),
            Action::Keep {
                reason: "wave 2%: 1 of ~31 hosts committed, 28 needed; the reports do not \
                         say which hosts are in the wave: commits of any host counted"
                    .into()
            }
        );
    }

    #[test]
    fn the_plan_comes_from_the_signed_rollout_block() {
        let r = Rollout {
            percent: Some(2.0),
            waves: Some(vec![2.0, 10.0, 50.0, 100.0]),
            wave_started: Some("2027-01-15T08:00:00Z".into()),
            ..Default::default()
        };
        let p = Plan::from_manifest(Some(&r), 5, &[]).expect("plan");
        assert_eq!(p.waves, [2.0, 10.0, 50.0, 100.0]);
        assert_eq!(
            p.wave_started,
            parse_rfc3339("2027-01-15T08:00:00Z").expect("t")
        );
        // The same --waves is fine, another is refused.
        assert!(Plan::from_manifest(Some(&r), 5, &[2.0, 10.0, 50.0, 100.0]).is_ok());
        let e = Plan::from_manifest(Some(&r), 5, &[1.0, 100.0]).expect_err("override");
        assert!(e.contains("rollout.waves"), "{e}");
        // Without waves and wave_started: --waves and `created`.
        let bare = Rollout {
            percent: Some(1.0),
            ..Default::default()
        };
        let p = Plan::from_manifest(Some(&bare), 5, &[1.0, 100.0]).expect("plan");
        assert_eq!((p.waves, p.wave_started), (vec![1.0, 100.0], 5));
        // The first wave's reports are looked for from a day before
        // `created` (hosts take a manifest dated that far ahead); a later
        // wave's from its start, which the controller wrote.
        let first_since = 5 - crate::manifest::MAX_CREATED_AHEAD;
        assert_eq!(p.reports_since, first_since);
        let none = Plan::from_manifest(None, 5, &[1.0, 100.0]).expect("plan");
        assert_eq!((none.wave_started, none.reports_since), (5, first_since));
        let stated = Plan::from_manifest(Some(&r), 5, &[]).expect("plan");
        assert_eq!(stated.reports_since, stated.wave_started);
        // A bad signed plan names its field.
        for (bad, field) in [
            (
                Rollout {
                    waves: Some(vec![10.0, 2.0, 100.0]),
                    ..bare.clone()
                },
                "rollout.waves",
            ),
            (
                Rollout {
                    wave_started: Some("yesterday".into()),
                    ..bare.clone()
                },
                "rollout.wave_started",
            ),
        ] {
            let e = Plan::from_manifest(Some(&bad), 5, &[]).expect_err(field);
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn waves_must_increase_to_100() {
        assert_eq!(parse_waves("1,5,25,100"), Ok(vec![1.0, 5.0, 25.0, 100.0]));
        assert_eq!(parse_waves(" 0.5, 100"), Ok(vec![0.5, 100.0]));
        for bad in [
            "100,1,5,25",
            "1,5,5,100",
            "1,5,25",
            "0,100",
            "1,150",
            "nan,100",
            "1,inf",
            "1,,100",
            "-5,100",
        ] {
            let e = parse_waves(bad).expect_err(bad);
            assert!(e.starts_with("--waves"), "{e}");
        }
    }

    #[test]
    fn policy_numbers_are_checked() {
        assert!(Policy::default().check().is_ok());
        for bad in [
            Policy {
                max_failure_rate: f64::NAN,
                ..Default::default()
            },
            Policy {
                max_failure_rate: 1.5,
                ..Default::default()
            },
            Policy {
                advance_when: 0.0,
                ..Default::default()
            },
            Policy {
                max_failures: 0,
                ..Default::default()
            },
            Policy {
                fleet_size: Some(0),
                ..Default::default()
            },
            Policy {
                soak: Duration::from_secs(31 * 86400),
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_action_has_its_word_and_only_keep_leaves_the_manifest_alone() {
        let keep = Action::Keep {
            reason: "wait".into(),
        };
        let pause = Action::Pause {
            reason: "3 hosts failed".into(),
        };
        let advance = Action::Advance {
            to: 5.0,
            reason: "1 of ~1 hosts committed".into(),
        };
        assert_eq!(
            [keep.verb(), pause.verb(), advance.verb()],
            ["keep", "pause", "advance"]
        );
        assert_eq!(keep.explain(), "wait");
        assert_eq!(pause.explain(), "3 hosts failed");
        assert_eq!(advance.explain(), "to 5%: 1 of ~1 hosts committed");
        assert!(!keep.changes_manifest());
        assert!(pause.changes_manifest() && advance.changes_manifest());
    }

    #[test]
    fn apply_changes_only_the_rollout_and_keeps_unknown_fields() {
        let mut doc = serde_json::json!({
            "version": "2.0",
            "x-vendor": {"build": 7},
            "rollout": {"percent": 1.0, "waves": [1.0, 5.0, 100.0], "x-note": "canaries"}
        });
        let advance = Action::Advance {
            to: 5.0,
            reason: String::new(),
        };
        assert_eq!(apply(&mut doc, &advance, &[1.0, 5.0, 100.0], NOW), Ok(true));
        assert_eq!(doc["rollout"]["percent"], 5.0);
        assert_eq!(doc["rollout"]["wave_started"], format_rfc3339(NOW));
        assert_eq!(
            doc["rollout"]["waves"],
            serde_json::json!([1.0, 5.0, 100.0])
        );
        assert_eq!(doc["rollout"]["x-note"], "canaries");
        assert_eq!(doc["x-vendor"]["build"], 7);
        let pause = Action::Pause {
            reason: String::new(),
        };
        let mut bare = serde_json::json!({"version": "2.0"});
        assert_eq!(apply(&mut bare, &pause, &[1.0, 5.0, 100.0], NOW), Ok(true));
        assert_eq!(bare["rollout"]["paused"], true);
        assert!(bare["rollout"].get("waves").is_none(), "{bare}");
        // An advance of a manifest packed without waves writes the plan it
        // followed: a later run with other --waves is refused by it.
        let mut unplanned = serde_json::json!({"rollout": {"percent": 2.0}});
        let plan = [2.0, 10.0, 50.0, 100.0];
        assert_eq!(apply(&mut unplanned, &advance, &plan, NOW), Ok(true));
        assert_eq!(unplanned["rollout"]["waves"], serde_json::json!(plan));
        let written: Rollout =
            serde_json::from_value(unplanned["rollout"].clone()).expect("rollout");
        let e = Plan::from_manifest(Some(&written), 0, &[2.0, 100.0]).expect_err("other waves");
        assert!(e.contains("rollout.waves"), "{e}");
        let keep = Action::Keep {
            reason: String::new(),
        };
        let before = doc.clone();
        assert_eq!(apply(&mut doc, &keep, &[1.0, 5.0, 100.0], NOW), Ok(false));
        assert_eq!(doc, before);
        assert!(apply(&mut serde_json::json!({"rollout": 3}), &pause, &[], NOW).is_err());
    }
}
