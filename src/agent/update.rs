//! `update`: the timer's job (backoff, jitter, check, install).

use super::report::record_success;
use super::{
    check, install, log, record_failure, CheckOptions, CheckOutcome, Host, InstallOptions,
    Installed,
};
use crate::error::Result;
use crate::install::WriteMode;
use crate::rollout::Standing;
use crate::timefmt::now;

/// Options of the timer's `update`.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateOptions {
    /// Skip jitter and backoff (a manual run).
    pub now: bool,
    pub no_reboot: bool,
    pub quiet: bool,
}

/// What the timer's `update` did.
#[derive(Debug)]
pub enum UpdateOutcome {
    /// An earlier failure asks to wait until then.
    BackingOff {
        until: i64,
    },
    UpToDate {
        reason: String,
        kind: &'static str,
        standing: Option<Standing>,
    },
    Installed(Installed),
}

/// The timer's job: check, then install and reboot (inside a maintenance
/// window, when windows are configured) when a release applies.
pub fn update(host: &Host, opts: UpdateOptions) -> Result<UpdateOutcome> {
    if !opts.now {
        let state = host.state_dir.load()?;
        let max = host.config.update.backoff_max;
        let until = crate::schedule::backing_off_until(state.metrics.retry_after, now(), max);
        if let Some(until) = until {
            return Ok(UpdateOutcome::BackingOff { until });
        }
        if let Some(t) = state.metrics.retry_after.filter(|&t| t > now()) {
            log(&format!(
                "ignoring a backoff until {}: further ahead than backoff_max allows (set under a clock that ran ahead)",
                crate::timefmt::format_rfc3339(t)
            ));
        }
        let delay = crate::schedule::jitter(host.config.update.jitter);
        if !delay.is_zero() {
            log(&format!(
                "waiting {}s (jitter) before checking",
                delay.as_secs()
            ));
            std::thread::sleep(delay);
        }
    }
    let mut release = None;
    let result = check(
        host,
        None,
        CheckOptions {
            allow_downgrade: false,
            rollout: true,
        },
    )
    .and_then(|outcome| match outcome {
        CheckOutcome::UpToDate {
            reason,
            kind,
            standing,
        } => Ok(UpdateOutcome::UpToDate {
            reason,
            kind,
            standing,
        }),
        CheckOutcome::Available { verified, .. } => {
            release = Some(verified.manifest.version.to_string());
            let install_opts = InstallOptions {
                allow_downgrade: false,
                no_reboot: opts.no_reboot,
                write_mode: WriteMode::All,
                quiet: opts.quiet,
                respect_windows: true,
            };
            install(host, &verified, &install_opts).map(UpdateOutcome::Installed)
        }
    });
    match &result {
        Ok(_) => record_success(host),
        Err(e) => record_failure(host, e, release.as_deref()),
    }
    result
}
