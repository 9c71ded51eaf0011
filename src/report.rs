//! Reports of what happened on this host: a Prometheus textfile for
//! node_exporter, and an optional webhook POST for the fleet's operator.
//!
//! Invariant: reporting never changes or blocks the outcome it reports. The
//! textfile is replaced atomically (node_exporter never reads half a file).
//! A webhook report is delivered on a thread of its own ([`send_webhook`]),
//! so the flow that reports goes on (and releases the state lock) at once;
//! all its attempts together end by one deadline, `[report]
//! webhook_timeout` after it was sent. [`flush`] waits for the reports in
//! flight at most until their deadlines: before the reboot command and
//! before the process exits. A report that fails is only logged.
//!
//! The metric names and labels are a stable contract (README "Host
//! metrics"): a fleet controller and alerting rules count them. Series are
//! added, never renamed. Every series carries `compatible` and the
//! operator's `[report] labels`; an outcome is one [`Outcome`] for the
//! webhook, the textfile and the controller alike; the textfile stays
//! bounded (the outcomes of the last [`MAX_RELEASES`] releases only).
//!
//! An outcome's time is never before the previous outcome of its release
//! on this host ([`outcome_time`]), in the state, the textfile and the
//! webhook alike: the fleet orders a host's steps by it, and the wall
//! clock of a trial boot may read 2000.

use crate::config::Report;
use crate::state::{Metrics, Unknown};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happened to a release on this host. One type for the webhook's
/// `outcome`, the textfile's `outcome` label, the state's record and the
/// fleet controller's count. On the wire and on disk it is its label
/// (text): an outcome this version does not know (a newer host's, or a
/// newer binary's record read after a rollback to this one) still reads,
/// and [`Outcome::parse`] says it is unknown.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written, verified and staged for its trial boot.
    Installed,
    /// The trial passed its health checks: the slot is committed.
    Committed,
    /// The trial failed its health checks and was rolled back.
    RolledBack,
    /// The trial slot never came up; the bootloader fell back.
    TrialNeverBooted,
    /// A run about the release failed (see the error kind).
    Failed,
    /// A committed release rolled back later, having failed its
    /// probation (`agent::probation`): counted against the release.
    RolledBackLate,
    /// A staged trial the release channel no longer offered (withdrawn,
    /// halted), or an operator cancelled (`mark-bad` of its slot), was
    /// disarmed before its boot: the running slot stays the next boot.
    /// Not counted for or against the release on this host.
    Disarmed,
}

impl Outcome {
    /// Every outcome this version knows, for tables and queries.
    pub const ALL: [Outcome; 7] = [
        Outcome::Installed,
        Outcome::Committed,
        Outcome::RolledBack,
        Outcome::TrialNeverBooted,
        Outcome::Failed,
        Outcome::RolledBackLate,
        Outcome::Disarmed,
    ];

    /// The label, as serde writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
            Outcome::TrialNeverBooted => "trial_never_booted",
            Outcome::Failed => "failed",
            Outcome::RolledBackLate => "rolled_back_late",
            Outcome::Disarmed => "disarmed",
        }
    }

    /// The outcome labelled `label`; `None` for one this version does not
    /// know (a newer host's).
    pub fn parse(label: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == label)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Releases whose outcomes a host keeps (and shows in the textfile): the
/// most recent ones by the time of their latest outcome.
pub const MAX_RELEASES: usize = 4;

/// The latest time of one outcome (with its error kind) of one release on
/// this host: what `abupdate_release_outcome` shows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutcomeRecord {
    /// The release's version.
    pub release: String,
    /// The release's build ([`crate::manifest::build_id`]); `None` in a
    /// record an older version wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// An [`Outcome`]'s label (text, so a newer binary's record survives a
    /// rollback to this one).
    pub outcome: String,
    /// The error kind of a `failed` outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Unix time of the latest such outcome ([`outcome_time`]).
    pub time: i64,
    /// Fields a newer version wrote, kept as they are.
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The time an outcome of `release` that happens at `now` (the wall
/// clock) is recorded at: `now`, or one second after the release's latest
/// outcome in `log` when that is not earlier. Pure.
///
/// A host's outcomes of one release are a sequence (installed, then
/// committed or a failure; committed, then rolled back late), and the
/// fleet orders a host's outcomes by their times (the latest report, the
/// largest `abupdate_release_outcome` value). The clock cannot be trusted
/// to keep that order: a trial boots on the image's build date or an RTC
/// reset to 2000 until NTP syncs, and its commit, stamped before the
/// install, was counted as no verdict (found from outside, review G). The
/// host knows the order, so each step is stamped after the one before it:
/// strictly after, so every reader (an older controller, `topk`) orders
/// it right without a tie-break.
pub fn outcome_time(log: &[OutcomeRecord], release: &str, now: i64) -> i64 {
    log.iter()
        .filter(|r| r.release == release)
        .map(|r| r.time.saturating_add(1))
        .fold(now, i64::max)
}

/// The time of the latest `outcome` of build `build` of `release` in
/// `log`: the time a report of the outcome just recorded carries, so the
/// webhook and the textfile say the same ([`outcome_time`]).
pub fn recorded_time(
    log: &[OutcomeRecord],
    release: &str,
    build: Option<&str>,
    outcome: Outcome,
) -> Option<i64> {
    log.iter()
        .filter(|r| {
            r.release == release && r.build.as_deref() == build && r.outcome == outcome.as_str()
        })
        .map(|r| r.time)
        .max()
}

/// Note an outcome of `release` (of build `build`, when known) that
/// happened at `time` (the wall clock) in `log` (the state's list), at
/// [`outcome_time`]: the latest time per (release, build, outcome, kind),
/// for the [`MAX_RELEASES`] releases with the most recent outcomes. An
/// empty release (a run that failed before
/// any manifest was read) names no release and is not kept.
pub fn record_outcome(
    log: &mut Vec<OutcomeRecord>,
    release: &str,
    build: Option<&str>,
    outcome: Outcome,
    kind: Option<&str>,
    time: i64,
) {
    if release.is_empty() {
        return;
    }
    let time = outcome_time(log, release, time);
    let kind = kind.map(str::to_string);
    let build = build.map(str::to_string);
    match log.iter_mut().find(|r| {
        r.release == release && r.build == build && r.outcome == outcome.as_str() && r.kind == kind
    }) {
        Some(r) => r.time = time,
        None => log.push(OutcomeRecord {
            release: release.to_string(),
            build,
            outcome: outcome.as_str().to_string(),
            kind,
            time,
            unknown: Unknown::new(),
        }),
    }
    // Newest releases first; drop the records of the older ones.
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for r in log.iter() {
        let t = latest.entry(r.release.as_str()).or_insert(r.time);
        *t = (*t).max(r.time);
    }
    let mut releases: Vec<(i64, &str)> = latest.into_iter().map(|(r, t)| (t, r)).collect();
    releases.sort_by(|a, b| b.cmp(a));
    let keep: Vec<String> = releases
        .into_iter()
        .take(MAX_RELEASES)
        .map(|(_, r)| r.to_string())
        .collect();
    log.retain(|r| keep.contains(&r.release));
    log.sort_by(|a, b| {
        (a.release.as_str(), &a.build, a.outcome.as_str(), &a.kind).cmp(&(
            b.release.as_str(),
            &b.build,
            b.outcome.as_str(),
            &b.kind,
        ))
    });
}

/// Labels abupdate has set itself since operator labels exist: an
/// operator's label of the same name would be ambiguous, and no config
/// naming one ever loaded, so refusing it breaks no host.
pub const RESERVED_LABELS: &[&str] = &[
    "compatible",
    "release",
    "outcome",
    "kind",
    "slot",
    "version",
];

/// Labels abupdate took for itself after operators could set them
/// (`build`, on `abupdate_release_outcome`, since the release build id).
/// A config the previous version ran with must still load: refused, a
/// release carrying the new abupdate would fail its trial on every host
/// with such a label, a fleet-wide rollback. So the operator's value stays
/// on the other series, is left off the ones where abupdate sets the name
/// (ours wins), and loading the config warns ([`later_label_warning`]).
pub const LATER_LABELS: &[&str] = &["build"];

/// The warning for an operator label of a name in [`LATER_LABELS`] (`at`:
/// where the config sets it), or `None` for any other name.
pub fn later_label_warning(name: &str, at: &str) -> Option<String> {
    LATER_LABELS.contains(&name).then(|| {
        format!(
            "{at}: report.labels.{name}: abupdate sets the label {name:?} itself on abupdate_release_outcome; \
             your value is left off that metric (the other series keep it); rename the label"
        )
    })
}

/// Most operator labels: the textfile stays small.
pub const MAX_LABELS: usize = 16;
/// The longest operator label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 256;

/// Whether `name` is a label name Prometheus accepts
/// (`[a-zA-Z_][a-zA-Z0-9_]*`, without the reserved `__` prefix).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Check one operator label (`[report] labels`): a valid Prometheus label
/// name, not one of abupdate's own, and a value of 1 to
/// [`MAX_LABEL_VALUE`] bytes.
pub fn check_label(name: &str, value: &str) -> Result<(), String> {
    if !valid_label_name(name) {
        return Err(format!(
            "{name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "{name:?} is a label abupdate sets itself ({})",
            RESERVED_LABELS.join(", ")
        ));
    }
    if value.is_empty() {
        return Err("an empty value is no label to Prometheus; leave the label out".into());
    }
    if value.len() > MAX_LABEL_VALUE {
        return Err(format!("value longer than {MAX_LABEL_VALUE} bytes"));
    }
    Ok(())
}

/// One outcome, as sent to the webhook.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Event {
    /// Keyed hash of the machine id: stable, not the id itself.
    pub host: String,
    /// The host's `update.compatible`.
    pub compatible: String,
    /// The release the event is about.
    pub release: Option<String>,
    /// That release's build ([`crate::manifest::build_id`]); absent from
    /// the reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// The slot running when it reported.
    pub booted_slot: Option<String>,
    /// The release running when it reported.
    pub booted_version: Option<String>,
    /// An [`Outcome`]'s label. Text on the wire: a report from a newer
    /// host with an outcome this version does not know still reads (the
    /// controller counts it as unknown, [`Outcome::parse`]).
    pub outcome: String,
    /// The failure's [`crate::error::Kind`] label, for a failure.
    pub error_kind: Option<String>,
    /// The failure's message (URLs without user info).
    pub message: Option<String>,
    /// When (Unix time).
    pub time: i64,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The facts the textfile shows besides the counters.
pub struct HostView<'a> {
    /// The slot running.
    pub booted_slot: Option<&'a str>,
    /// The release running.
    pub booted_version: Option<&'a str>,
    /// Whether an update is in flight.
    pub pending: bool,
    /// The host's place in the fleet, 0 to 1.
    pub position: Option<f64>,
    /// `[update] compatible`: a label of every series.
    pub compatible: &'a str,
    /// `[report] labels`: on every series.
    pub labels: &'a BTreeMap<String, String>,
    /// The state's per-release outcomes.
    pub outcomes: &'a [OutcomeRecord],
}

/// `{a="x",b="y"}` from pairs, values escaped as the text format says;
/// empty pairs give an empty string.
fn label_set(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A host's rollout position as its textfile writes it: every digit (the
/// shortest text that reads back as exactly this number). The controller
/// applies the hosts' own rule (`position x 100 < percentage`) to this
/// value; rounded to six places it put a host inside a wave on the other
/// side of the wave's edge, and that host's `installed` held nothing
/// (found from outside, stop 48).
pub fn position_sample(position: f64) -> String {
    format!("{position}")
}

/// Render the metrics in node_exporter's textfile format. Every series
/// carries `compatible` and the operator's labels after its own.
// Long on purpose: one metric after another, in the order they are written
// (the README's table lists them in that order); no logic to split.
pub fn render_textfile(m: &Metrics, view: &HostView) -> String {
    let mut common: Vec<(&str, &str)> = vec![("compatible", view.compatible)];
    common.extend(view.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let with_except = |own: &[(&str, &str)], dropped: &[&str]| {
        let mut all = own.to_vec();
        all.extend(common.iter().filter(|(k, _)| !dropped.contains(k)).copied());
        label_set(&all)
    };
    let with = |own: &[(&str, &str)]| with_except(own, &[]);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let slot = view.booted_slot.unwrap_or("");
    let version = view.booted_version.unwrap_or("");
    metric(
        "abupdate_booted_info",
        "gauge",
        "Booted slot and version (value is always 1).",
        vec![(with(&[("slot", slot), ("version", version)]), "1".into())],
    );
    metric(
        "abupdate_booted_release_info",
        "gauge",
        "The release the host runs, and its slot (value is always 1).",
        vec![(with(&[("release", version), ("slot", slot)]), "1".into())],
    );
    let ts = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_else(|| "0".into());
    metric(
        "abupdate_last_check_timestamp_seconds",
        "gauge",
        "When the release manifest was last checked.",
        vec![(with(&[]), ts(m.last_check))],
    );
    metric(
        "abupdate_last_success_timestamp_seconds",
        "gauge",
        "When an install or commit last succeeded.",
        vec![(with(&[]), ts(m.last_success))],
    );
    metric(
        "abupdate_failures_total",
        "counter",
        "Failed runs by error kind.",
        m.failures
            .iter()
            .map(|(k, v)| (with(&[("kind", k)]), v.to_string()))
            .collect(),
    );
    metric(
        "abupdate_downloaded_bytes_total",
        "counter",
        "Payload bytes received over the network.",
        vec![(with(&[]), m.downloaded_bytes.to_string())],
    );
    metric(
        "abupdate_range_ignored_total",
        "counter",
        "Range requests a server answered with the whole file; the download went on (a warning: bytes crossed the link again).",
        vec![(with(&[]), m.range_ignored.to_string())],
    );
    metric(
        "abupdate_installs_total",
        "counter",
        "Releases written and staged.",
        vec![(with(&[]), m.installs.to_string())],
    );
    metric(
        "abupdate_commits_total",
        "counter",
        "Trial slots committed.",
        vec![(with(&[]), m.commits.to_string())],
    );
    metric(
        "abupdate_rollbacks_total",
        "counter",
        "Trials rolled back or never booted.",
        vec![(with(&[]), m.rollbacks.to_string())],
    );
    metric(
        "abupdate_update_pending",
        "gauge",
        "1 when a staged release waits for its trial boot or verdict.",
        vec![(with(&[]), if view.pending { "1" } else { "0" }.into())],
    );
    if let Some(p) = view.position {
        metric(
            "abupdate_rollout_position",
            "gauge",
            "This host's place in the fleet, 0 to 1: it takes a release when position x 100 is below the rollout's percentage.",
            vec![(with(&[]), position_sample(p))],
        );
    }
    metric(
        "abupdate_release_outcome",
        "gauge",
        "Unix time of the latest outcome of a release on this host (build: the release's build id; kind: the error kind of a failed run).",
        view.outcomes
            .iter()
            .map(|r| {
                let mut own = vec![("release", r.release.as_str())];
                if let Some(b) = &r.build {
                    own.push(("build", b.as_str()));
                }
                own.push(("outcome", r.outcome.as_str()));
                if let Some(k) = &r.kind {
                    own.push(("kind", k.as_str()));
                }
                // The operator's `build` goes even from an outcome without
                // one: fleet takes a series with no build for an older
                // host's, and another value for another build's.
                (with_except(&own, LATER_LABELS), r.time.to_string())
            })
            .collect(),
    );
    out
}

/// Replace `path` atomically with `text`.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("prom.tmp");
    let mut f = crate::files::create_replacing(&tmp)?;
    // Readable by node_exporter (its own user) whatever umask abupdate
    // runs under: the file holds nothing secret, and one written 0600 by a
    // run under `UMask=0077` went unread until the next boot's rewrite.
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// One report being delivered.
struct Delivery {
    deadline: Instant,
    thread: JoinHandle<()>,
}

/// Reports in flight, for [`flush`].
static IN_FLIGHT: Mutex<Vec<Delivery>> = Mutex::new(Vec::new());

/// How long past its deadline a delivery is waited for: the HTTP client
/// itself ends an attempt at the deadline; this covers the thread's exit.
const FLUSH_GRACE: Duration = Duration::from_millis(200);

/// Deliver `event` to the webhook (when one is configured) on a thread of
/// its own; returns at once. Failures are logged by that thread.
pub fn send_webhook(cfg: &Report, event: Event) {
    if cfg.webhook.is_none() {
        return;
    }
    let deadline = crate::child::deadline_after(Instant::now(), cfg.webhook_timeout);
    let cfg = cfg.clone();
    let spawned = std::thread::Builder::new()
        .name("webhook".into())
        .spawn(move || {
            if let Err(e) = post_webhook(&cfg, &event, deadline) {
                crate::say!("abupdate: report not delivered: {e}");
            }
        });
    match spawned {
        Ok(thread) => IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Delivery { deadline, thread }),
        Err(e) => crate::say!("abupdate: report not delivered: cannot start a thread: {e}"),
    }
}

/// Wait for the reports in flight, each at most until its deadline.
pub fn flush() {
    let pending = std::mem::take(&mut *IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()));
    for d in pending {
        let until = crate::child::deadline_after(d.deadline, FLUSH_GRACE);
        while !d.thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if d.thread.is_finished() {
            let _ = d.thread.join();
        }
        // Else the thread is left to the process's exit (or the reboot).
    }
}

/// POST `event` to the webhook: attempts with short pauses, all of them
/// ending by `deadline`. Err says why the last one failed.
pub fn post_webhook(cfg: &Report, event: &Event, deadline: Instant) -> Result<(), String> {
    let Some(url) = &cfg.webhook else {
        return Ok(());
    };
    // Its credentials stay on the wire (found from outside: every failed
    // delivery wrote them to the journal).
    let shown = crate::fetch::redact_url(url);
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    // The roots every client of the host uses: the update servers' own.
    let roots = crate::fetch::trust_roots(cfg.ca_file.as_deref(), &cfg.ca_bundles);
    if let Some(line) = roots.refuses_to(url, "deliver its report to the https webhook") {
        return Err(format!("{shown}: TLS: {line}"));
    }
    let tls = roots.tls_config();
    let mut last = format!(
        "{shown}: no attempt within {}s",
        cfg.webhook_timeout.as_secs()
    );
    for attempt in 0..cfg.webhook_attempts {
        if attempt > 0 {
            let pause = Duration::from_millis(500 << attempt.min(4));
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= pause {
                break;
            }
            std::thread::sleep(pause);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.clone())
            .user_agent(concat!("abupdate/", env!("CARGO_PKG_VERSION")))
            .timeout_global(Some(left))
            .http_status_as_error(false)
            .build()
            .into();
        match agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(&body[..])
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{shown}: HTTP {}", r.status()),
            Err(e) => last = format!("{shown}: {}", crate::fetch::redact(&e.to_string())),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A position reads back from the textfile as exactly the host's, so
    /// the controller puts each host on the side of a wave's edge the host
    /// puts itself: the edge host found from outside (machine id
    /// e9940123…, position 0.0199995…, inside the 2% wave) among them.
    #[test]
    fn a_position_reads_back_exactly_and_on_its_side_of_every_edge() {
        let edge = crate::rollout::position("e9940123ba7095b256f03af3f5734fa1");
        assert!(edge * 100.0 < 2.0 && edge > 0.01999);
        let mut positions = vec![edge, 0.0, 0.0999996, 0.4999999999, 1.0 - f64::EPSILON];
        positions.extend((0..2000).map(|i| crate::rollout::position(&format!("{i:032x}"))));
        for p in positions {
            let back: f64 = position_sample(p).parse().expect("a number");
            assert_eq!(back.to_bits(), p.to_bits(), "{p}");
            for pct in [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0] {
                assert_eq!(back * 100.0 < pct, p * 100.0 < pct, "{p} at {pct}%");
            }
        }
    }

    fn view<'a>(
        labels: &'a BTreeMap<String, String>,
        outcomes: &'a [OutcomeRecord],
    ) -> HostView<'a> {
        HostView {
            booted_slot: Some("A"),
            booted_version: Some("1.0\"x"),
            pending: true,
            position: Some(0.25),
            compatible: "acme",
            labels,
            outcomes,
        }
    }

    /// node_exporter reads the textfile as its own user: it is 0644
    /// whatever the umask (the timer's unit once ran with `UMask=0077`, and
    /// each `update` left a file node_exporter could not read).
    #[test]
    fn the_textfile_is_readable_by_others_under_any_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = crate::testutil::TempDir::new("textfile-mode");
        let path = dir.path().join("abupdate.prom");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let written = write_textfile(&path, "abupdate_up 1\n");
        nix::sys::stat::umask(old);
        written.expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{mode:o}");
    }

    #[test]
    fn textfile_has_help_type_and_escaped_labels() {
        let mut m = Metrics {
            downloaded_bytes: 42,
            range_ignored: 3,
            last_check: Some(1_700_000_000),
            ..Default::default()
        };
        m.failures.insert("hash_mismatch".into(), 2);
        let none = BTreeMap::new();
        let text = render_textfile(&m, &view(&none, &[]));
        assert!(
            text.contains(
                "abupdate_booted_info{slot=\"A\",version=\"1.0\\\"x\",compatible=\"acme\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE abupdate_failures_total counter\nabupdate_failures_total{kind=\"hash_mismatch\",compatible=\"acme\"} 2\n"), "{text}");
        assert!(text.contains("abupdate_downloaded_bytes_total{compatible=\"acme\"} 42\n"));
        assert!(text.contains("# TYPE abupdate_range_ignored_total counter\nabupdate_range_ignored_total{compatible=\"acme\"} 3\n"), "{text}");
        assert!(text.contains("abupdate_update_pending{compatible=\"acme\"} 1\n"));
        assert!(text.contains("abupdate_rollout_position{compatible=\"acme\"} 0.25\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn every_series_carries_compatible_and_the_operators_labels() {
        let labels: BTreeMap<String, String> = [
            ("region".to_string(), "eu".to_string()),
            ("site".to_string(), "store \"42\"\\\nx".to_string()),
        ]
        .into_iter()
        .collect();
        let mut outcomes = Vec::new();
        // A record of an older version names no build: no label.
        record_outcome(&mut outcomes, "2.0", None, Outcome::Installed, None, 10);
        record_outcome(
            &mut outcomes,
            "2.0",
            Some("0123456789abcdef"),
            Outcome::Failed,
            Some("network"),
            15,
        );
        let mut m = Metrics::default();
        m.failures.insert("network".into(), 1);
        let text = render_textfile(&m, &view(&labels, &outcomes));
        let tail = r#"compatible="acme",region="eu",site="store \"42\"\\\nx"}"#;
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), 14, "{text}");
        for line in &samples {
            assert!(line.contains(tail), "{line}");
        }
        assert!(text.contains(&format!(
            "abupdate_release_outcome{{release=\"2.0\",build=\"0123456789abcdef\",outcome=\"failed\",kind=\"network\",{tail} 15\n"
        )));
        assert!(text.contains(&format!(
            "abupdate_release_outcome{{release=\"2.0\",outcome=\"installed\",{tail} 10\n"
        )));
        assert!(text.contains(&format!(
            "abupdate_booted_release_info{{release=\"1.0\\\"x\",slot=\"A\",{tail} 1\n"
        )));
    }

    #[test]
    fn an_operators_build_label_stays_off_the_outcomes_where_ours_wins() {
        // A config of the version before the release build id may label
        // its host `build`: it still loads ([`LATER_LABELS`]).
        assert!(check_label("build", "x").is_ok());
        let labels: BTreeMap<String, String> = [("build", "x"), ("site", "s")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut outcomes = Vec::new();
        record_outcome(
            &mut outcomes,
            "2.0",
            Some("0123abcd"),
            Outcome::Committed,
            None,
            7,
        );
        record_outcome(&mut outcomes, "1.0", None, Outcome::Installed, None, 3);
        let text = render_textfile(&Metrics::default(), &view(&labels, &outcomes));
        assert!(text.contains(
            "abupdate_release_outcome{release=\"2.0\",build=\"0123abcd\",outcome=\"committed\",compatible=\"acme\",site=\"s\"} 7\n"
        ), "{text}");
        // Not even where abupdate names no build: fleet reads a missing
        // build as an older host's, another one as another build's.
        assert!(text.contains(
            "abupdate_release_outcome{release=\"1.0\",outcome=\"installed\",compatible=\"acme\",site=\"s\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "abupdate_booted_info{slot=\"A\",version=\"1.0\\\"x\",compatible=\"acme\",build=\"x\",site=\"s\"} 1\n"
        ), "the other series keep it: {text}");
    }

    #[test]
    fn release_outcomes_keep_the_latest_time_of_the_last_few_releases() {
        let mut log = Vec::new();
        record_outcome(&mut log, "1.0", None, Outcome::Committed, None, 100);
        record_outcome(&mut log, "1.0", None, Outcome::Committed, None, 50);
        assert_eq!(log.len(), 1);
        assert_eq!(
            log[0].time, 101,
            "the later outcome is not after the earlier"
        );
        record_outcome(&mut log, "", None, Outcome::Failed, Some("network"), 101);
        assert_eq!(log.len(), 1, "a failure naming no release was kept");
        for (i, r) in ["2.0", "3.0", "4.0", "5.0"].iter().enumerate() {
            let t = 200 + i as i64 * 10;
            record_outcome(&mut log, r, None, Outcome::Installed, None, t);
            record_outcome(&mut log, r, None, Outcome::Failed, Some("network"), t + 1);
            record_outcome(
                &mut log,
                r,
                None,
                Outcome::Failed,
                Some("hash_mismatch"),
                t + 2,
            );
        }
        let releases: std::collections::BTreeSet<&str> =
            log.iter().map(|r| r.release.as_str()).collect();
        assert_eq!(
            releases.into_iter().collect::<Vec<_>>(),
            ["2.0", "3.0", "4.0", "5.0"],
            "not the {MAX_RELEASES} newest releases: {log:?}"
        );
        assert_eq!(log.len(), 12);
    }

    /// Review G: a trial committed before NTP synced its clock (2000)
    /// was stamped before its install and counted as installed, never
    /// committed. Each step of a release is stamped after the one before
    /// it, whatever the clock reads; a clock that is right is taken as is.
    #[test]
    fn an_outcome_is_stamped_after_the_releases_previous_one_whatever_the_clock() {
        let installed_at = 1_800_000_000;
        let build = Some("0123abcd");
        let mut log = Vec::new();
        // Records `outcome` of 2.0 under a clock at `now`; its time.
        let mut step = |outcome, now| {
            record_outcome(&mut log, "2.0", build, outcome, None, now);
            recorded_time(&log, "2.0", build, outcome).expect("recorded")
        };
        assert_eq!(step(Outcome::Installed, installed_at), installed_at);
        let behind = step(Outcome::Committed, 946_684_800);
        assert_eq!(behind, installed_at + 1, "a clock behind stamped it first");
        // The same second (a clock that did not move): still after.
        assert_eq!(
            step(Outcome::RolledBackLate, installed_at),
            installed_at + 2
        );
        // Another release's outcomes do not move this one's.
        record_outcome(
            &mut log,
            "1.0",
            None,
            Outcome::Failed,
            Some("network"),
            2_400_000_000,
        );
        assert_eq!(outcome_time(&log, "2.0", 0), installed_at + 3);
        // A clock after every step is taken as is.
        assert_eq!(
            outcome_time(&log, "2.0", installed_at + 60),
            installed_at + 60
        );
        assert_eq!(outcome_time(&log, "3.0", 7), 7, "a release with no outcome");
        // Another build's steps of the release come before a rebuild's.
        record_outcome(&mut log, "2.0", Some("ffff"), Outcome::Installed, None, 5);
        assert_eq!(
            recorded_time(&log, "2.0", Some("ffff"), Outcome::Installed),
            Some(installed_at + 3)
        );
        assert_eq!(recorded_time(&log, "2.0", None, Outcome::Installed), None);
    }

    #[test]
    fn outcomes_have_one_name_each_and_unknown_ones_are_kept() {
        for o in Outcome::ALL {
            let json = serde_json::to_string(&o).expect("json");
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).expect("back"), o);
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("quarantined"), None);
        // A newer binary's record (read after a rollback to this one) and a
        // newer host's report still read, with their label kept.
        let record: OutcomeRecord =
            serde_json::from_str(r#"{"release":"2.0","outcome":"quarantined","time":5}"#)
                .expect("a record with an unknown outcome reads");
        assert_eq!(record.outcome, "quarantined");
        assert!(serde_json::to_string(&record)
            .expect("json")
            .contains(r#""outcome":"quarantined""#));
    }

    #[test]
    fn operator_labels_follow_prometheus_rules() {
        assert!(check_label("site", "store-0042").is_ok());
        assert!(check_label("_x9", "v").is_ok());
        for (name, value) in [
            ("9site", "v"),
            ("si-te", "v"),
            ("", "v"),
            ("__meta", "v"),
            ("région", "v"),
            ("release", "v"),
            ("compatible", "v"),
            ("site", ""),
        ] {
            assert!(check_label(name, value).is_err(), "{name:?}={value:?}");
        }
        assert!(check_label("site", &"x".repeat(MAX_LABEL_VALUE + 1)).is_err());
    }
}
