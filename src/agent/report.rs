//! Reporting glue: the textfile and the webhook after each outcome, and
//! the failure counters that drive the timer's backoff.
//!
//! Invariant: reporting never changes an outcome ([`crate::report`]): a
//! report that cannot be written is logged, never returned.

use super::{log, Host};
use crate::error::{Error, Kind};
use crate::report::Outcome;
use crate::slot::SlotName;
use crate::state::State;
use crate::timefmt::now;

/// Write the textfile, and POST the event to the webhook when there is one.
/// `event` = (outcome, release, its build); `error` = (kind, message). Failures to
/// report are logged, never returned: reporting must not change outcomes.
pub fn publish(
    host: &Host,
    state: &State,
    event: Option<(Outcome, &str, Option<&str>)>,
    error: Option<(Kind, &str)>,
) {
    let booted = host.booted_slot().ok();
    let booted_version = booted.and_then(|b| host.booted_version(state, b));
    let report = &host.config.report;
    if let Some(path) = &report.textfile {
        let view = crate::report::HostView {
            booted_slot: booted.map(SlotName::as_str),
            booted_version: booted_version.as_deref(),
            pending: state.transaction.is_some(),
            position: Some(host.position()),
            compatible: &host.config.update.compatible,
            labels: &report.labels,
            outcomes: &state.outcomes,
        };
        let text = crate::report::render_textfile(&state.metrics, &view);
        if let Err(e) = crate::report::write_textfile(path, &text) {
            log(&format!("cannot write {}: {e}", path.display()));
        }
    }
    let Some((outcome, release, build)) = event else {
        return;
    };
    if report.webhook.is_none() {
        return;
    }
    let event = crate::report::Event {
        host: host.host_id(),
        compatible: host.config.update.compatible.clone(),
        release: (!release.is_empty()).then(|| release.to_string()),
        build: build.map(str::to_string),
        booted_slot: booted.map(|b| b.to_string()),
        booted_version,
        outcome: outcome.as_str().to_string(),
        error_kind: error.map(|(k, _)| k.as_str().to_string()),
        message: error.map(|(_, m)| crate::fetch::redact(m).into_owned()),
        // The time the outcome was recorded at, which is after the
        // release's step before it (`report::outcome_time`), as the
        // textfile's: the clock's now only for an outcome not recorded
        // (a run that failed before it read a manifest).
        time: crate::report::recorded_time(&state.outcomes, release, build, outcome)
            .unwrap_or_else(now),
    };
    // On its own thread: the flow goes on and releases the lock at once;
    // the reboot command and the process's exit wait for it, bounded.
    crate::report::send_webhook(report, event);
}

/// Count a failed run, schedule the backoff, and report it. `release`:
/// the version and, when the run read its manifest, the build it was about;
/// without a build, the build of the slot holding that version, if any.
pub fn record_failure(host: &Host, error: &Error, release: Option<(&str, Option<&str>)>) {
    // A run without the lock saves nothing: taking it again here would
    // make a removed state dir anew and count the holder's failure
    // (found from outside, stop 58).
    if error.kind() == crate::error::Kind::Locked {
        return;
    }
    let Ok(lock) = host.state_dir.lock() else {
        return;
    };
    let Ok(mut state) = host.state_dir.load() else {
        return;
    };
    state.count_failure(error.kind());
    state.metrics.consecutive_failures = state.metrics.consecutive_failures.saturating_add(1);
    let delay = crate::schedule::backoff(
        state.metrics.consecutive_failures,
        host.config.update.backoff_base,
        host.config.update.backoff_max,
    );
    let delay = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    state.metrics.retry_after = Some(now().saturating_add(delay));
    let version = release.map_or("", |(v, _)| v);
    let build = match release {
        Some((_, Some(b))) => Some(b.to_string()),
        Some((v, None)) => state.build_of_version(v),
        None => None,
    };
    crate::report::record_outcome(
        &mut state.outcomes,
        version,
        build.as_deref(),
        Outcome::Failed,
        Some(error.kind().as_str()),
        now(),
    );
    let _ = lock.save(&state);
    let message = error.to_string();
    publish(
        host,
        &state,
        Some((Outcome::Failed, version, build.as_deref())),
        Some((error.kind(), &message)),
    );
}

/// A run that succeeded: the backoff is over; the textfile is refreshed.
pub(super) fn record_success(host: &Host) {
    let Ok(lock) = host.state_dir.lock() else {
        return;
    };
    let Ok(mut state) = host.state_dir.load() else {
        return;
    };
    if state.metrics.consecutive_failures != 0 || state.metrics.retry_after.is_some() {
        state.metrics.consecutive_failures = 0;
        state.metrics.retry_after = None;
        let _ = lock.save(&state);
    }
    publish(host, &state, None, None);
}
