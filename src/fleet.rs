//! The operator's side of a rollout, hawkBit-style but from static files:
//! tally the hosts' reports for a release, then pause it (too many
//! failures) or advance it to the next wave (the current wave is healthy),
//! by rewriting and re-signing its manifest.
//!
//! Invariant: the decision is a pure function of the reports, the current
//! rollout block and the policy, so the fleet simulation runs exactly what
//! an operator runs; a paused rollout is never advanced by this tool. Only
//! what the release itself caused, on hosts of its own `compatible`, counts
//! against it ([`counts_against_release`]); a report that cannot be read is
//! skipped and counted, never a reason to stop deciding.
//!
//! Verifying the manifest before it is changed, re-signing it and
//! publishing it atomically are [`crate::publish`]'s.

use crate::error::Kind;
use crate::manifest::{Rollout, Version};
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
/// latest report that says something about the release).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub installed: u64,
    pub committed: u64,
    /// Hosts the release failed on (rolled back, never booted, or refused
    /// for a fault of the release).
    pub failed: u64,
    /// Failure reports that do not blame the release (a network stall, a
    /// busy host, …): shown, not counted against it.
    pub not_counted: u64,
}

impl Tally {
    pub fn finished(&self) -> u64 {
        self.committed + self.failed
    }
}

/// `error_kind`s of a `failed` report that blame the release itself: its
/// payload or manifest is wrong (hash, size, length, signature, parse).
/// Everything else — the network, an HTTP status, TLS, a busy host
/// (`locked`), the host's own disk, state or bootloader, kinds this list
/// does not know yet — says nothing about the release.
pub const RELEASE_FAULT_KINDS: &[Kind] = &[
    Kind::Payload,
    Kind::HashMismatch,
    Kind::Size,
    Kind::TooLong,
    Kind::TooShort,
    Kind::Signature,
    Kind::Manifest,
];

/// What one report says about the release it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Installed,
    Committed,
    /// The release failed on this host.
    Failed,
    /// A failure the release did not cause.
    NotCounted,
    /// An outcome this tool does not know.
    Unknown,
}

/// Classify one report: rolled back and never booted trials count against
/// the release; a `failed` run only with a kind in [`RELEASE_FAULT_KINDS`].
pub fn counts_against_release(outcome: &str, error_kind: Option<&str>) -> Verdict {
    use crate::report::Outcome;
    match Outcome::parse(outcome) {
        Some(Outcome::Installed) => Verdict::Installed,
        Some(Outcome::Committed) => Verdict::Committed,
        Some(Outcome::RolledBack | Outcome::TrialNeverBooted) => Verdict::Failed,
        Some(Outcome::Failed)
            if error_kind.is_some_and(|k| RELEASE_FAULT_KINDS.iter().any(|r| *r == k)) =>
        {
            Verdict::Failed
        }
        Some(Outcome::Failed) => Verdict::NotCounted,
        None => Verdict::Unknown,
    }
}

/// Whether `reported` names release `version` (as versions: `2.0` is
/// `2.0.0`).
fn same_release(reported: Option<&str>, version: &str) -> bool {
    let Some(reported) = reported else {
        return false;
    };
    match (Version::parse(reported), Version::parse(version)) {
        (Ok(a), Ok(b)) => a.cmp(&b) == std::cmp::Ordering::Equal,
        _ => reported == version,
    }
}

/// Tally the reports about release `version` of `compatible`.
pub fn tally(events: &[Event], compatible: &str, version: &str) -> Tally {
    let mut t = Tally::default();
    let mut latest: BTreeMap<&str, (&Event, Verdict)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.compatible == compatible && same_release(e.release.as_deref(), version))
    {
        let verdict = counts_against_release(&e.outcome, e.error_kind.as_deref());
        match verdict {
            Verdict::NotCounted => t.not_counted += 1,
            Verdict::Unknown => {}
            _ => match latest.get(e.host.as_str()) {
                Some((prev, _)) if prev.time > e.time => {}
                _ => {
                    latest.insert(&e.host, (e, verdict));
                }
            },
        }
    }
    for (_, verdict) in latest.values() {
        match verdict {
            Verdict::Installed => t.installed += 1,
            Verdict::Committed => t.committed += 1,
            Verdict::Failed => t.failed += 1,
            Verdict::NotCounted | Verdict::Unknown => {}
        }
    }
    t
}

/// `--waves`: percentages strictly increasing, each in (0, 100], the last
/// 100. An operator's typo (`100,1,5,25`) is refused, not guessed at.
pub fn parse_waves(text: &str) -> Result<Vec<f64>, String> {
    let mut waves: Vec<f64> = Vec::new();
    for part in text.split(',') {
        let w: f64 = part
            .trim()
            .parse()
            .map_err(|_| format!("--waves {text}: {part:?} is not a number"))?;
        if !w.is_finite() || w <= 0.0 || w > 100.0 {
            return Err(format!(
                "--waves {text}: {w} is not a percentage in (0, 100]"
            ));
        }
        if waves.last().is_some_and(|&prev| w <= prev) {
            return Err(format!("--waves {text}: not strictly increasing at {w}"));
        }
        waves.push(w);
    }
    if waves.last() != Some(&100.0) {
        return Err(format!("--waves {text}: the last wave must be 100"));
    }
    Ok(waves)
}

impl Policy {
    /// The policy's numbers make sense (rates are fractions, counts
    /// positive); the error names the flag.
    pub fn check(&self) -> Result<(), String> {
        let fraction = |flag: &str, v: f64, zero_ok: bool| {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) || (!zero_ok && v == 0.0) {
                Err(format!("{flag} {v}: a fraction from 0 to 1"))
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
        Ok(())
    }
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

/// Apply an action to a manifest's JSON (its other fields, unknown ones
/// included, stay as they are); returns whether it changed.
pub fn apply(doc: &mut serde_json::Value, action: &Action) -> Result<bool, String> {
    let (key, value) = match action {
        Action::Keep { .. } => return Ok(false),
        Action::Pause { .. } => ("paused", serde_json::Value::Bool(true)),
        Action::Advance { to, .. } => ("percent", serde_json::json!(to)),
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
    rollout.insert(key.into(), value);
    Ok(true)
}

/// Reports read, and how many records could not be.
#[derive(Debug, Default)]
pub struct Reports {
    pub events: Vec<Event>,
    /// Lines (or records) skipped: not JSON, truncated, or missing a field.
    pub malformed: u64,
}

/// The reports in one file's text: JSON lines, or JSON documents one after
/// another (pretty-printed, one report per file, or an array of reports).
/// When the text does not parse as a whole, each line is tried on its own,
/// so one torn line costs only itself.
pub fn parse_reports(text: &str) -> Reports {
    let mut out = Reports::default();
    let take = |v: serde_json::Value, out: &mut Reports| {
        let items = match v {
            serde_json::Value::Array(items) => items,
            v => vec![v],
        };
        for item in items {
            match serde_json::from_value::<Event>(item) {
                Ok(e) => out.events.push(e),
                Err(_) => out.malformed += 1,
            }
        }
    };
    let whole: Result<Vec<serde_json::Value>, _> = serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect();
    match whole {
        Ok(values) => values.into_iter().for_each(|v| take(v, &mut out)),
        Err(_) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(v) => take(v, &mut out),
                    Err(_) => out.malformed += 1,
                }
            }
        }
    }
    out
}

/// Reports collected by the operator's webhook receiver: a JSON-lines file,
/// or a directory of `*.json` / `*.jsonl` files (see [`parse_reports`]).
/// Only a path that cannot be read is an error.
pub fn read_reports(path: &Path) -> Result<Reports, String> {
    let mut files = Vec::new();
    if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
                .filter(|p| p.is_file()),
        );
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut all = Reports::default();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let r = parse_reports(&String::from_utf8_lossy(&bytes));
        all.events.extend(r.events);
        all.malformed += r.malformed;
    }
    Ok(all)
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

    fn t(installed: u64, committed: u64, failed: u64) -> Tally {
        Tally {
            installed,
            committed,
            failed,
            not_counted: 0,
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
        assert_eq!(tally(&events, "c", "2.0"), t(1, 1, 1));
        assert_eq!(tally(&events, "c", "3.0"), Tally::default());
    }

    #[test]
    fn tally_counts_only_hosts_of_the_releases_compatible() {
        let mut other = ev("x", "committed", 1);
        other.compatible = "other-arm64".into();
        let mut others: Vec<Event> = (0..5)
            .map(|i| {
                let mut e = ev(&format!("y{i}"), "rolled_back", 1);
                e.compatible = "other-arm64".into();
                e
            })
            .collect();
        others.push(other);
        others.push(ev("a", "committed", 1));
        assert_eq!(tally(&others, "c", "2.0"), t(0, 1, 0));
        assert_eq!(tally(&others, "other-arm64", "2.0"), t(0, 1, 5));
    }

    #[test]
    fn tally_matches_the_release_as_a_version() {
        let mut e = ev("a", "rolled_back", 1);
        e.release = Some("2.0.0".into());
        assert_eq!(tally(&[e], "c", "2.0"), t(0, 0, 1));
    }

    #[test]
    fn transient_failures_do_not_count_against_the_release() {
        let failed = |host: &str, kind: Option<&str>, time| {
            let mut e = ev(host, "failed", time);
            e.error_kind = kind.map(String::from);
            e
        };
        let events = vec![
            failed("a", Some("network"), 1),
            failed("b", Some("http_status"), 1),
            failed("c", Some("locked"), 1),
            failed("d", None, 1),
            // A stall, then the retry committed: committed.
            ev("e", "committed", 2),
            failed("e", Some("network"), 3),
            failed("f", Some("hash_mismatch"), 1),
            failed("g", Some("signature"), 1),
            ev("h", "trial_never_booted", 1),
        ];
        assert_eq!(
            tally(&events, "c", "2.0"),
            Tally {
                installed: 0,
                committed: 1,
                failed: 3,
                not_counted: 5,
            }
        );
    }

    #[test]
    fn each_outcome_is_classified() {
        use Verdict::*;
        for (outcome, kind, want) in [
            ("installed", None, Installed),
            ("committed", None, Committed),
            ("rolled_back", Some("health"), Failed),
            ("trial_never_booted", None, Failed),
            ("failed", Some("payload"), Failed),
            ("failed", Some("too_long"), Failed),
            ("failed", Some("manifest"), Failed),
            ("failed", Some("network"), NotCounted),
            ("failed", Some("tls"), NotCounted),
            ("failed", Some("device"), NotCounted),
            ("failed", Some("a-kind-from-the-future"), NotCounted),
            ("failed", None, NotCounted),
            ("checked", None, Unknown),
        ] {
            assert_eq!(
                counts_against_release(outcome, kind),
                want,
                "{outcome} {kind:?}"
            );
        }
    }

    #[test]
    fn malformed_reports_are_skipped_and_counted() {
        let good = r#"{"host":"a","compatible":"c","release":"2.0","booted_slot":null,"booted_version":null,"outcome":"rolled_back","error_kind":null,"message":null,"time":1}"#;
        let no_compatible = r#"{"host":"b","release":"2.0","outcome":"rolled_back","time":1}"#;
        let text = format!("{good}\n{{\"host\":\"tr\n{no_compatible}\n\n{good}\n");
        let r = parse_reports(&text);
        assert_eq!((r.events.len(), r.malformed), (2, 2));
        // Pretty-printed, one report per file, or several in an array.
        let v: serde_json::Value = serde_json::from_str(good).expect("json");
        let pretty = serde_json::to_string_pretty(&v).expect("pretty");
        let r = parse_reports(&pretty);
        assert_eq!((r.events.len(), r.malformed), (1, 0));
        let r = parse_reports(&format!("[{good},{good}]\n{pretty}"));
        assert_eq!((r.events.len(), r.malformed), (3, 0));
        assert_eq!(parse_reports("").events.len(), 0);
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
            assert!(parse_waves(bad).is_err(), "{bad}");
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
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn apply_changes_only_the_rollout_and_keeps_unknown_fields() {
        let mut doc = serde_json::json!({
            "version": "2.0",
            "x-vendor": {"build": 7},
            "rollout": {"percent": 1.0, "x-note": "canaries"}
        });
        let advance = Action::Advance {
            to: 5.0,
            reason: String::new(),
        };
        assert_eq!(apply(&mut doc, &advance), Ok(true));
        assert_eq!(doc["rollout"]["percent"], 5.0);
        assert_eq!(doc["rollout"]["x-note"], "canaries");
        assert_eq!(doc["x-vendor"]["build"], 7);
        let pause = Action::Pause {
            reason: String::new(),
        };
        let mut bare = serde_json::json!({"version": "2.0"});
        assert_eq!(apply(&mut bare, &pause), Ok(true));
        assert_eq!(bare["rollout"]["paused"], true);
        let keep = Action::Keep {
            reason: String::new(),
        };
        let before = doc.clone();
        assert_eq!(apply(&mut doc, &keep), Ok(false));
        assert_eq!(doc, before);
        assert!(apply(&mut serde_json::json!({"rollout": 3}), &pause).is_err());
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
        assert!(matches!(
            decide(Some(&wave), &t(0, 3, 5), &policy),
            Action::Pause { .. }
        ));
        assert!(matches!(
            decide(Some(&wave), &t(0, 18, 4), &policy),
            Action::Pause { .. }
        ));
        let good = t(1, 9, 0);
        assert_eq!(
            decide(Some(&wave), &good, &policy),
            Action::Advance {
                to: 5.0,
                reason: "9 of ~10 hosts in the 1% wave committed, 0 failed".into()
            }
        );
        assert!(matches!(
            decide(Some(&wave), &t(5, 3, 0), &policy),
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
