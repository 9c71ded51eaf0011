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

use crate::config::Report;
use crate::state::Metrics;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happened to a release on a host: the webhook's `outcome`, and what
/// `abupdate fleet` tallies. One enum for the host that reports and the
/// controller that counts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written, verified and staged.
    Installed,
    /// Its trial passed and it was committed.
    Committed,
    /// Its trial failed and the host went back to the old slot.
    RolledBack,
    /// Its trial never came up: the bootloader fell back.
    TrialNeverBooted,
    /// A run that failed (its `error_kind` says what failed).
    Failed,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 5] = [
        Outcome::Installed,
        Outcome::Committed,
        Outcome::RolledBack,
        Outcome::TrialNeverBooted,
        Outcome::Failed,
    ];

    /// The label, as serde writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
            Outcome::TrialNeverBooted => "trial_never_booted",
            Outcome::Failed => "failed",
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

/// One outcome, as sent to the webhook.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Event {
    /// Keyed hash of the machine id: stable, not the id itself.
    pub host: String,
    /// The host's `update.compatible`.
    pub compatible: String,
    /// The release the event is about.
    pub release: Option<String>,
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
}

/// Render the metrics in node_exporter's textfile format.
pub fn render_textfile(m: &Metrics, view: &HostView) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    metric(
        "abupdate_booted_info",
        "gauge",
        "Booted slot and version (value is always 1).",
        vec![(
            format!(
                "{{slot=\"{}\",version=\"{}\"}}",
                escape_label(view.booted_slot.unwrap_or("")),
                escape_label(view.booted_version.unwrap_or(""))
            ),
            "1".into(),
        )],
    );
    let ts = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_else(|| "0".into());
    metric(
        "abupdate_last_check_timestamp_seconds",
        "gauge",
        "When the release manifest was last checked.",
        vec![(String::new(), ts(m.last_check))],
    );
    metric(
        "abupdate_last_success_timestamp_seconds",
        "gauge",
        "When an install or commit last succeeded.",
        vec![(String::new(), ts(m.last_success))],
    );
    metric(
        "abupdate_failures_total",
        "counter",
        "Failed runs by error kind.",
        m.failures
            .iter()
            .map(|(k, v)| (format!("{{kind=\"{}\"}}", escape_label(k)), v.to_string()))
            .collect(),
    );
    metric(
        "abupdate_downloaded_bytes_total",
        "counter",
        "Payload bytes received over the network.",
        vec![(String::new(), m.downloaded_bytes.to_string())],
    );
    metric(
        "abupdate_installs_total",
        "counter",
        "Releases written and staged.",
        vec![(String::new(), m.installs.to_string())],
    );
    metric(
        "abupdate_commits_total",
        "counter",
        "Trial slots committed.",
        vec![(String::new(), m.commits.to_string())],
    );
    metric(
        "abupdate_rollbacks_total",
        "counter",
        "Trials rolled back or never booted.",
        vec![(String::new(), m.rollbacks.to_string())],
    );
    metric(
        "abupdate_update_pending",
        "gauge",
        "1 when a staged release waits for its trial boot or verdict.",
        vec![(String::new(), if view.pending { "1" } else { "0" }.into())],
    );
    if let Some(p) = view.position {
        metric(
            "abupdate_rollout_position",
            "gauge",
            "This host's place in the fleet, 0 to 1.",
            vec![(String::new(), format!("{p:.6}"))],
        );
    }
    out
}

/// Replace `path` atomically with `text`.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    let mut f = std::fs::File::create(&tmp)?;
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
                eprintln!("abupdate: report not delivered: {e}");
            }
        });
    match spawned {
        Ok(thread) => IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Delivery { deadline, thread }),
        Err(e) => eprintln!("abupdate: report not delivered: cannot start a thread: {e}"),
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
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let mut last = format!(
        "{url}: no attempt within {}s",
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
            Ok(r) => last = format!("{url}: HTTP {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textfile_has_help_type_and_escaped_labels() {
        let mut m = Metrics {
            downloaded_bytes: 42,
            last_check: Some(1_700_000_000),
            ..Default::default()
        };
        m.failures.insert("hash_mismatch".into(), 2);
        let text = render_textfile(
            &m,
            &HostView {
                booted_slot: Some("A"),
                booted_version: Some("1.0\"x"),
                pending: true,
                position: Some(0.25),
            },
        );
        assert!(
            text.contains("abupdate_booted_info{slot=\"A\",version=\"1.0\\\"x\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE abupdate_failures_total counter\nabupdate_failures_total{kind=\"hash_mismatch\"} 2\n"));
        assert!(text.contains("abupdate_downloaded_bytes_total 42\n"));
        assert!(text.contains("abupdate_update_pending 1\n"));
        assert!(text.contains("abupdate_rollout_position 0.250000\n"));
        assert!(text.ends_with('\n'));
    }
}
