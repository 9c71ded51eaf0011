//! The second source of the fleet controller: the reports hosts POST to the
//! operator's webhook receiver, as JSON lines or JSON files.
//!
//! Invariant: a report that cannot be read is skipped and counted, never a
//! reason to stop deciding; each host counts once, by its latest report
//! that says something about the release, exactly as the Prometheus source
//! counts its latest outcome series.

use super::{counts_against_release, Tally, Verdict};
use crate::manifest::Version;
use crate::report::{Event, Outcome};
use std::collections::BTreeMap;
use std::path::Path;

/// The largest reports file read: a webhook log of hundreds of thousands
/// of events; `/dev/zero` or a runaway file is refused, not read.
pub const MAX_REPORTS_FILE_BYTES: u64 = 256 * 1024 * 1024;

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
        let verdict = counts_against_release(Outcome::parse(&e.outcome), e.error_kind.as_deref());
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

/// Reports read, and how many records could not be.
#[derive(Debug, Default)]
pub struct Reports {
    /// The reports that could be read, in the order read.
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
        let bytes = crate::files::read_capped(&f, MAX_REPORTS_FILE_BYTES)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let r = parse_reports(&String::from_utf8_lossy(&bytes));
        all.events.extend(r.events);
        all.malformed += r.malformed;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::test_tally as t;

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
}
