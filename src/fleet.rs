//! The operator's side of a rollout, hawkBit-style but from static files:
//! tally the hosts' reports for a release, then pause it (too many
//! failures) or advance it to the next wave (the current wave is healthy),
//! by rewriting and re-signing its manifest.
//!
//! Invariant: the decision is a pure function of the reports, the current
//! rollout block and the policy, so the fleet simulation runs exactly what
//! an operator runs; a paused rollout is never advanced by this tool.

use crate::manifest::{ManifestDoc, Rollout};
use crate::report::Event;
use std::collections::BTreeMap;
use std::path::Path;

/// When to pause and when to advance.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Pause once this many hosts failed the release.
    pub max_failures: u64,
    /// Or once this fraction of the hosts that finished failed...
    pub max_failure_rate: f64,
    /// ...counted only from this many finished hosts on.
    pub min_reports: u64,
    /// Fixed-percentage waves to advance through (e.g. 1, 5, 25, 100).
    pub waves: Vec<f64>,
    /// Hosts in the fleet, to know when a wave is done.
    pub fleet_size: Option<u64>,
    /// Fraction of a wave's expected hosts that must have committed before
    /// the next wave starts.
    pub advance_when: f64,
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
        }
    }
}

/// Outcomes of one release across the fleet (each host counted once, by its
/// latest report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub installed: u64,
    pub committed: u64,
    pub failed: u64,
}

impl Tally {
    pub fn finished(&self) -> u64 {
        self.committed + self.failed
    }
}

/// Tally the reports about release `version`.
pub fn tally(events: &[Event], version: &str) -> Tally {
    let mut latest: BTreeMap<&str, &Event> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.release.as_deref() == Some(version))
    {
        match latest.get(e.host.as_str()) {
            Some(prev) if prev.time > e.time => {}
            _ => {
                latest.insert(&e.host, e);
            }
        }
    }
    let mut t = Tally::default();
    for e in latest.values() {
        match e.outcome.as_str() {
            "installed" => t.installed += 1,
            "committed" => t.committed += 1,
            "rolled_back" | "trial_never_booted" | "failed" => t.failed += 1,
            _ => {}
        }
    }
    t
}

/// What the tool does to the manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Keep { reason: String },
    Pause { reason: String },
    Advance { to: f64, reason: String },
}

/// Decide on the rollout of a release from its tally.
pub fn decide(rollout: Option<&Rollout>, t: &Tally, policy: &Policy) -> Action {
    if rollout.is_some_and(|r| r.paused) {
        return Action::Keep {
            reason: "the rollout is paused; resume it by hand".into(),
        };
    }
    let rate = if t.finished() == 0 {
        0.0
    } else {
        t.failed as f64 / t.finished() as f64
    };
    if t.failed >= policy.max_failures {
        return Action::Pause {
            reason: format!("{} hosts failed (limit {})", t.failed, policy.max_failures),
        };
    }
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
    let current = rollout.and_then(|r| r.percent);
    let (Some(current), Some(fleet)) = (current, policy.fleet_size) else {
        return Action::Keep {
            reason: format!("{} committed, {} failed", t.committed, t.failed),
        };
    };
    let Some(&next) = policy.waves.iter().find(|&&w| w > current) else {
        return Action::Keep {
            reason: format!("last wave ({current}%) running"),
        };
    };
    let expected = (fleet as f64 * current / 100.0).floor();
    if t.committed as f64 >= (expected * policy.advance_when).max(1.0) {
        Action::Advance {
            to: next,
            reason: format!(
                "{} of ~{expected} hosts in the {current}% wave committed, {} failed",
                t.committed, t.failed
            ),
        }
    } else {
        Action::Keep {
            reason: format!(
                "wave {current}%: {} of ~{expected} hosts committed",
                t.committed
            ),
        }
    }
}

/// Apply an action to a manifest; returns whether it changed.
pub fn apply(doc: &mut ManifestDoc, action: &Action) -> bool {
    match action {
        Action::Keep { .. } => false,
        Action::Pause { .. } => {
            doc.rollout.get_or_insert_with(Rollout::default).paused = true;
            true
        }
        Action::Advance { to, .. } => {
            let r = doc.rollout.get_or_insert_with(Rollout::default);
            r.percent = Some(*to);
            true
        }
    }
}

/// Reports collected by the operator's webhook receiver: a JSON-lines file,
/// or a directory of `*.json` / `*.jsonl` files.
pub fn read_reports(path: &Path) -> Result<Vec<Event>, String> {
    let mut files = Vec::new();
    if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl")),
        );
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut events = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let event: Event = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", f.display(), i + 1))?;
            events.push(event);
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(host: &str, outcome: &str, time: i64) -> Event {
        Event {
            host: host.into(),
            compatible: "c".into(),
            release: Some("2.0".into()),
            booted_slot: None,
            booted_version: None,
            outcome: outcome.into(),
            error_kind: None,
            message: None,
            time,
        }
    }

    #[test]
    fn tally_counts_each_host_by_its_latest_report() {
        let events = vec![
            ev("a", "installed", 1),
            ev("a", "committed", 2),
            ev("b", "installed", 1),
            ev("b", "rolled_back", 3),
            ev("c", "installed", 5),
        ];
        assert_eq!(
            tally(&events, "2.0"),
            Tally {
                installed: 1,
                committed: 1,
                failed: 1
            }
        );
        assert_eq!(tally(&events, "3.0"), Tally::default());
    }

    #[test]
    fn pauses_on_failures_and_advances_healthy_waves() {
        let policy = Policy {
            waves: vec![1.0, 5.0, 100.0],
            fleet_size: Some(1000),
            ..Default::default()
        };
        let wave = Rollout {
            percent: Some(1.0),
            ..Default::default()
        };
        let bad = Tally {
            installed: 0,
            committed: 3,
            failed: 5,
        };
        assert!(matches!(
            decide(Some(&wave), &bad, &policy),
            Action::Pause { .. }
        ));
        let rate = Tally {
            installed: 0,
            committed: 18,
            failed: 4,
        };
        assert!(matches!(
            decide(Some(&wave), &rate, &policy),
            Action::Pause { .. }
        ));
        let good = Tally {
            installed: 1,
            committed: 9,
            failed: 0,
        };
        assert_eq!(
            decide(Some(&wave), &good, &policy),
            Action::Advance {
                to: 5.0,
                reason: "9 of ~10 hosts in the 1% wave committed, 0 failed".into()
            }
        );
        let early = Tally {
            installed: 5,
            committed: 3,
            failed: 0,
        };
        assert!(matches!(
            decide(Some(&wave), &early, &policy),
            Action::Keep { .. }
        ));
        let paused = Rollout {
            paused: true,
            ..wave.clone()
        };
        assert!(matches!(
            decide(Some(&paused), &good, &policy),
            Action::Keep { .. }
        ));
        let last = Rollout {
            percent: Some(100.0),
            ..Default::default()
        };
        assert!(matches!(
            decide(Some(&last), &good, &policy),
            Action::Keep { .. }
        ));
    }
}
