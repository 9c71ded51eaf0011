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
pub(crate) fn same_release(reported: Option<&str>, version: &str) -> bool {
    let Some(reported) = reported else {
        return false;
    };
    match (Version::parse(reported), Version::parse(version)) {
        (Ok(a), Ok(b)) => a.cmp(&b) == std::cmp::Ordering::Equal,
        _ => reported == version,
    }
}

/// Whether a report of build `reported` counts for build `build`: the
/// same build, or a report naming none (an older abupdate's: counted as
/// before, so a fleet upgraded host by host goes on deciding).
pub(crate) fn same_build(reported: Option<&str>, build: &str) -> bool {
    reported.is_none_or(|r| r == build)
}

/// Tally the reports about build `build` of release `version` of
/// `compatible` ([`same_build`]): each host
/// by its latest report that counts, except that a failure of the release
/// sticks (a host's clock may read 1970 before NTP, or 2099: a report's
/// time orders a host's reports but never hides its failure). A host
/// stamps each step of a release after the step before it, whatever its
/// clock reads ([`crate::report::outcome_time`]); at one time (an older
/// host's), the later step of a trial wins (committed over installed).
pub fn tally(events: &[Event], compatible: &str, version: &str, build: &str) -> Tally {
    let mut t = Tally::default();
    let step = |v: Verdict| match v {
        Verdict::Committed => 1,
        _ => 0,
    };
    let mut latest: BTreeMap<&str, (Verdict, i64)> = BTreeMap::new();
    for e in events.iter().filter(|e| {
        e.compatible == compatible
            && same_release(e.release.as_deref(), version)
            && same_build(e.build.as_deref(), build)
    }) {
        let verdict = counts_against_release(Outcome::parse(&e.outcome), e.error_kind.as_deref());
        match verdict {
            Verdict::NotCounted => t.not_counted += 1,
            // `parse_reports` counted it malformed.
            Verdict::Unknown => {}
            _ => match latest.get(e.host.as_str()) {
                Some((Verdict::Failed, _)) => {}
                Some(&(prev, time))
                    if verdict != Verdict::Failed
                        && (time > e.time || (time == e.time && step(prev) >= step(verdict))) => {}
                _ => {
                    latest.insert(&e.host, (verdict, e.time));
                }
            },
        }
    }
    for (verdict, _) in latest.values() {
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
    /// The reports that could be read and were kept, in the order read.
    pub events: Vec<Event>,
    /// Records skipped: not JSON, truncated, missing a field, or with an
    /// outcome this version does not know.
    pub malformed: u64,
}

impl Reports {
    fn take(&mut self, v: serde_json::Value, keep: &dyn Fn(&Event) -> bool) {
        let items = match v {
            serde_json::Value::Array(items) => items,
            v => vec![v],
        };
        for item in items {
            match serde_json::from_value::<Event>(item) {
                Ok(e) if Outcome::parse(&e.outcome).is_none() => self.malformed += 1,
                Ok(e) if keep(&e) => self.events.push(e),
                Ok(_) => {}
                Err(_) => self.malformed += 1,
            }
        }
    }
}

/// The reports in one file's text that `keep` keeps: JSON lines, or JSON
/// documents one after another (pretty-printed, one report per file, or an
/// array of reports). A stretch that does not parse (a line torn by a
/// receiver cut off mid-write, a stray byte) costs only itself: what parsed
/// before it is kept, and reading goes on at the next line where a document
/// may start ([`resume_after`]). One document is held at a time: months of
/// a webhook's log cost their bytes, not a tree of them.
pub fn parse_reports(text: &str, keep: &dyn Fn(&Event) -> bool) -> Reports {
    let mut out = Reports::default();
    let mut from = 0;
    // Inside a stretch that did not parse: it counts once, and the pieces
    // of it that parse alone (a `"key"` string, a number) are not reports.
    let mut torn = false;
    while from < text.len() {
        let rest = &text[from..];
        let mut docs = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
        let next = loop {
            match docs.next() {
                None => break None,
                Some(Ok(v)) if torn && !(v.is_object() || v.is_array()) => {}
                Some(Ok(v)) => {
                    torn = false;
                    out.take(v, keep);
                }
                Some(Err(e)) => {
                    // A byte order mark (a tool that writes one, or such
                    // files concatenated) is no tear: found from outside, a
                    // file's first report, a failure, was lost to one.
                    let at = docs.byte_offset();
                    let mark = rest[at..].len() - rest[at..].trim_start().len();
                    if rest[at + mark..].starts_with('\u{feff}') {
                        break Some(at + mark + '\u{feff}'.len_utf8());
                    }
                    if !torn {
                        out.malformed += 1;
                        torn = true;
                    }
                    break Some(resume_after(rest, docs.byte_offset(), e.line()));
                }
            }
        };
        match next {
            Some(at) => from += at,
            None => break,
        }
    }
    out
}

/// Where reading goes on in `text` after a document that began at or after
/// byte `parsed` (the end of the last one that parsed) failed on line
/// `error_line` (1-based): at that line when it is a later one than the
/// document's first (a new document may start there: the line before was
/// torn), else at the line after the document's first. Always past the
/// failed document's start, so every file is read through in about one
/// pass.
fn resume_after(text: &str, parsed: usize, error_line: usize) -> usize {
    let bytes = text.as_bytes();
    let start = parsed
        + bytes[parsed.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let start_line = 1 + bytes[..start.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    let line_start = |line: usize| match line {
        0 | 1 => 0,
        _ => bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line.saturating_sub(2))
            .map_or(bytes.len(), |(i, _)| i + 1),
    };
    match error_line > start_line {
        true => line_start(error_line),
        false => line_start(start_line + 1),
    }
}

/// How a file in a reports directory is read, by its name.
#[derive(Debug, PartialEq, Eq)]
enum ReportsFile {
    /// `*.json`, `*.jsonl` (any case), and their rotations (`*.jsonl.1`).
    Read,
    /// A compressed one (`*.jsonl.2.gz`): not read, so not decided without.
    Compressed,
    /// Anything else.
    Other,
}

fn reports_file(name: &[u8]) -> ReportsFile {
    let name = name.to_ascii_lowercase();
    let parts: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
    let is_json = |p: &[u8]| p == b"json" || p == b"jsonl";
    let is_rotation = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    let reports = |parts: &[&[u8]]| match parts {
        [.., j] if parts.len() >= 2 && is_json(j) => true,
        [.., j, n] if parts.len() >= 3 && is_json(j) && is_rotation(n) => true,
        _ => false,
    };
    if reports(&parts) {
        return ReportsFile::Read;
    }
    match parts.split_last() {
        Some((z, rest))
            if matches!(&z[..], b"gz" | b"xz" | b"zst" | b"bz2" | b"lz4") && reports(rest) =>
        {
            ReportsFile::Compressed
        }
        _ => ReportsFile::Other,
    }
}

/// Reports collected by the operator's webhook receiver, those `keep`
/// keeps: a JSON-lines file, or a directory of `*.json` / `*.jsonl` files
/// and their rotations (`reports.jsonl.1`; see [`parse_reports`];
/// entries named otherwise are not read). A path that cannot be read (an
/// entry named as reports included, whatever it is), or a compressed
/// rotation (reports left out), is an error.
pub fn read_reports(path: &Path, keep: &dyn Fn(&Event) -> bool) -> Result<Reports, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut files = Vec::new();
    if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let p = entry.path();
            match reports_file(entry.file_name().as_bytes()) {
                // Named as reports, read as reports: one that cannot be
                // read (a dangling link, a FIFO, a directory) is an error
                // below, never skipped (found from outside, stop 48: a
                // dangling `failures.jsonl` hid six rollbacks and the
                // wave advanced).
                ReportsFile::Read => files.push(p),
                ReportsFile::Compressed => {
                    return Err(format!(
                        "{}: compressed reports are not read (decompress it, or move it out of {}): not deciding without them",
                        p.display(),
                        path.display()
                    ))
                }
                _ => {}
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut all = Reports::default();
    for f in files {
        let bytes = crate::files::read_capped(&f, MAX_REPORTS_FILE_BYTES)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let r = parse_reports(&String::from_utf8_lossy(&bytes), keep);
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
            build: None,
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
        assert_eq!(tally(&events, "c", "2.0", "b1"), t(1, 1, 1));
        assert_eq!(tally(&events, "c", "3.0", "b1"), Tally::default());
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
        assert_eq!(tally(&others, "c", "2.0", "b1"), t(0, 1, 0));
        assert_eq!(tally(&others, "other-arm64", "2.0", "b1"), t(0, 1, 5));
    }

    #[test]
    fn tally_counts_only_the_manifests_build_and_reports_naming_none() {
        let of = |host: &str, outcome: &str, build: Option<&str>| Event {
            build: build.map(str::to_string),
            ..ev(host, outcome, 1)
        };
        let events = vec![
            of("a", "committed", Some("b1")),
            of("b", "committed", Some("b0")),
            of("c", "rolled_back", Some("b0")),
            // An older host's report: no build, counted as before.
            of("d", "committed", None),
        ];
        assert_eq!(tally(&events, "c", "2.0", "b1"), t(0, 2, 0));
        assert_eq!(tally(&events, "c", "2.0", "b0"), t(0, 2, 1));
        assert_eq!(tally(&events, "c", "2.0", "b2"), t(0, 1, 0));
    }

    #[test]
    fn tally_matches_the_release_as_a_version() {
        let mut e = ev("a", "rolled_back", 1);
        e.release = Some("2.0.0".into());
        assert_eq!(tally(&[e], "c", "2.0", "b1"), t(0, 0, 1));
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
            tally(&events, "c", "2.0", "b1"),
            Tally {
                installed: 0,
                committed: 1,
                failed: 3,
                not_counted: 5,
                failed_unattributed: 0,
            }
        );
    }

    #[test]
    fn malformed_reports_are_skipped_and_counted() {
        let good = r#"{"host":"a","compatible":"c","release":"2.0","booted_slot":null,"booted_version":null,"outcome":"rolled_back","error_kind":null,"message":null,"time":1}"#;
        let no_compatible = r#"{"host":"b","release":"2.0","outcome":"rolled_back","time":1}"#;
        let text = format!("{good}\n{{\"host\":\"tr\n{no_compatible}\n\n{good}\n");
        let r = parse_reports(&text, &|_| true);
        assert_eq!((r.events.len(), r.malformed), (2, 2));
        // Pretty-printed, one report per file, or several in an array.
        let v: serde_json::Value = serde_json::from_str(good).expect("json");
        let pretty = serde_json::to_string_pretty(&v).expect("pretty");
        let r = parse_reports(&pretty, &|_| true);
        assert_eq!((r.events.len(), r.malformed), (1, 0));
        let r = parse_reports(&format!("[{good},{good}]\n{pretty}"), &|_| true);
        assert_eq!((r.events.len(), r.malformed), (3, 0));
        assert_eq!(parse_reports("", &|_| true).events.len(), 0);
        // An outcome this version does not know is skipped and counted;
        // what `keep` drops is neither kept nor counted.
        let unknown = good.replace("rolled_back", "rolledback");
        let r = parse_reports(&format!("{good}\n{unknown}\n"), &|_| true);
        assert_eq!((r.events.len(), r.malformed), (1, 1));
        let r = parse_reports(&format!("{good}\n{good}\n"), &|e| e.host != "a");
        assert_eq!((r.events.len(), r.malformed), (0, 0));
        // A byte order mark at a file's start, or where files written with
        // one were put end to end, is no tear: every report counts.
        let bom = '\u{feff}';
        for text in [
            format!("{bom}{good}\n{good}\n"),
            format!("{bom}{good}\n{bom}{good}\n"),
            format!("{bom}{pretty}\n{bom}  {pretty}"),
        ] {
            let r = parse_reports(&text, &|_| true);
            assert_eq!((r.events.len(), r.malformed), (2, 0), "{text:?}");
        }
        // Anywhere else it is a stray byte.
        let r = parse_reports(
            &format!("{good}\n{{\"host\": {bom}\"x\"}}\n{good}\n"),
            &|_| true,
        );
        assert_eq!((r.events.len(), r.malformed), (2, 1));
    }

    /// A report as a webhook receiver may write it, pretty-printed.
    fn pretty_report(host: &str, outcome: &str) -> String {
        let v = serde_json::json!({
            "host": host, "compatible": "c", "release": "2.0",
            "outcome": outcome, "time": 1,
        });
        serde_json::to_string_pretty(&v).expect("pretty")
    }

    fn hosts(r: &Reports) -> Vec<&str> {
        r.events.iter().map(|e| e.host.as_str()).collect()
    }

    #[test]
    fn a_torn_record_costs_only_itself_and_never_the_reports_before_it() {
        // Pretty-printed reports, the last one cut off mid-write (a
        // receiver killed while writing): the six before it all count.
        let six: Vec<String> = (0..6)
            .map(|i| pretty_report(&format!("bad{i}"), "rolled_back"))
            .collect();
        let text = format!("{}\n{{\"host\":\"torn\",\"compat", six.join("\n"));
        let r = parse_reports(&text, &|_| true);
        assert_eq!(r.events.len(), 6, "{:?}", hosts(&r));
        assert_eq!(r.malformed, 1);
        // Torn in the middle, pretty: the reports on both sides count.
        let torn = pretty_report("torn", "rolled_back");
        let torn = &torn[..torn.find("\"outcome\"").expect("field")];
        let text = format!(
            "{}\n{torn}\n{}\n{}\n",
            pretty_report("a", "committed"),
            pretty_report("b", "rolled_back"),
            pretty_report("c", "committed")
        );
        let r = parse_reports(&text, &|_| true);
        assert_eq!(hosts(&r), ["a", "b", "c"]);
        assert_eq!(r.malformed, 1);
        // JSON lines: a line torn after a comma, inside a string, or after
        // a whole value; the next line is a report each time.
        let line = |h: &str| {
            format!(
                r#"{{"host":"{h}","compatible":"c","release":"2.0","outcome":"committed","time":1}}"#
            )
        };
        for cut in [
            r#"{"host":"x","#,
            r#"{"host":"x"#,
            r#"{"host":"x","time":1"#,
            "}",
            "\u{1}",
        ] {
            let text = format!("{}\n{cut}\n{}\n{}\n", line("a"), line("b"), line("c"));
            let r = parse_reports(&text, &|_| true);
            assert_eq!(
                (hosts(&r), r.malformed),
                (vec!["a", "b", "c"], 1),
                "cut {cut:?}"
            );
        }
        // An array torn at the end of a file is one document torn: its
        // reports go with it (reading goes on where it failed, which keeps
        // any file to about one pass, whatever its shape).
        let text = format!("[\n{},\n{},\n{{\"host\"", line("a"), line("b"));
        let r = parse_reports(&text, &|_| true);
        assert_eq!(
            (hosts(&r), r.malformed),
            (vec![], 1),
            "an array is one document"
        );
        let text = format!("{}\n{}\n{{\"ho", line("a"), line("b"));
        let r = parse_reports(&text, &|_| true);
        assert_eq!((hosts(&r), r.malformed), (vec!["a", "b"], 1));
    }

    #[test]
    fn reading_resumes_past_the_failed_document_and_at_a_later_failing_line() {
        // Failed on its own first line: the next line.
        assert_eq!(resume_after("{\"a\nnext\n", 0, 1), 4);
        // Whitespace before the document is skipped to find its line.
        assert_eq!(resume_after("{}\n\n  {\"a\nnext", 2, 3), 10);
        // Failed on a later line than its first: that line.
        assert_eq!(resume_after("{\"a\":1,\n{\"b\":2}\n", 0, 2), 8);
        // Nothing after it: the end.
        assert_eq!(resume_after("{\"a", 0, 1), 3);
    }

    #[test]
    fn a_failure_sticks_whatever_the_hosts_clock_said() {
        let events = vec![
            // Rolled back before NTP set the clock.
            ev("a", "installed", 1_800_000_000),
            ev("a", "rolled_back", 30),
            // A commit dated 2099 does not hide the rollback before it.
            ev("b", "rolled_back", 1_800_000_000),
            ev("b", "committed", 4_070_908_800),
            // At one time, committed over installed, in either order.
            ev("c", "committed", 5),
            ev("c", "installed", 5),
            ev("d", "installed", 5),
            ev("d", "committed", 5),
        ];
        assert_eq!(tally(&events, "c", "2.0", "b1"), t(0, 2, 2));
    }

    #[test]
    fn a_directory_reads_reports_and_their_rotations_and_refuses_compressed_ones() {
        use ReportsFile::*;
        for (name, want) in [
            ("reports.jsonl", Read),
            ("reports.JSONL", Read),
            ("a.json", Read),
            ("reports.jsonl.1", Read),
            ("reports.json.12", Read),
            ("reports.jsonl.2.gz", Compressed),
            ("reports.jsonl.gz", Compressed),
            ("reports.json.zst", Compressed),
            ("jsonl", Other),
            (".jsonl.x", Other),
            ("notes.txt", Other),
            ("reports.jsonl.1.bak", Other),
            ("x.tar.gz", Other),
        ] {
            assert_eq!(reports_file(name.as_bytes()), want, "{name}");
        }
        let dir = crate::testutil::TempDir::new("fleet-reports-dir");
        let line = |host: &str, outcome: &str| {
            format!(
                r#"{{"host":"{host}","compatible":"c","release":"2.0","outcome":"{outcome}","time":1}}"#
            )
        };
        std::fs::write(dir.path().join("reports.jsonl"), line("a", "committed")).expect("write");
        std::fs::write(dir.path().join("reports.jsonl.1"), line("b", "rolled_back"))
            .expect("write");
        std::fs::create_dir(dir.path().join("old")).expect("mkdir");
        let r = read_reports(dir.path(), &|_| true).expect("read");
        assert_eq!(tally(&r.events, "c", "2.0", "b1"), t(0, 1, 1));
        std::fs::write(dir.path().join("reports.jsonl.2.gz"), b"\x1f\x8b").expect("write");
        let e = read_reports(dir.path(), &|_| true).expect_err("compressed");
        assert!(
            e.contains("reports.jsonl.2.gz") && e.contains("compressed"),
            "{e}"
        );
    }

    /// Found from outside (stop 48): an entry named as reports that is not
    /// a readable file (a dangling link, a FIFO, a directory) was skipped,
    /// and the reports in it were decided without. It is an error naming it.
    #[test]
    fn an_entry_named_as_reports_that_cannot_be_read_is_an_error() {
        let dir = crate::testutil::TempDir::new("fleet-reports-unreadable");
        std::fs::write(
            dir.path().join("reports.jsonl"),
            r#"{"host":"a","compatible":"c","release":"2.0","outcome":"committed","time":1}"#,
        )
        .expect("write");
        assert!(read_reports(dir.path(), &|_| true).is_ok());
        let failures = dir.path().join("failures.jsonl");
        let fifo = dir.path().join("fifo.jsonl");
        let sub = dir.path().join("old.json");
        std::os::unix::fs::symlink(dir.path().join("gone"), &failures).expect("symlink");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        std::fs::create_dir(&sub).expect("mkdir");
        for (entry, then_remove) in [(&failures, true), (&fifo, true), (&sub, false)] {
            let e = read_reports(dir.path(), &|_| true).expect_err("left out");
            assert!(e.contains(&*entry.display().to_string()), "{e}");
            if then_remove {
                std::fs::remove_file(entry).expect("rm");
            }
        }
    }
}
