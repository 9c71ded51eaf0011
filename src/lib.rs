//! abupdate: keeps an edge host's A/B system slots up to date from signed,
//! immutable images.
//!
//! The crate is a library with a thin binary on top, so that tests and the
//! fleet simulation call the same decision functions the host runs. The
//! folder tree is the architecture: the flows in [`agent`], the mechanisms
//! each in its module, each guarding one invariant stated in its `//!` docs
//! (the README's table names the same files):
//!
//! | file | guards |
//! | --- | --- |
//! | `trust/gate.rs` | the one way a manifest becomes a [`trust::gate::Verified`]: `threshold` distinct trusted keys signed its bytes (`trust/mod.rs` counts them, `trust/minisign.rs` checks each) |
//! | `channel/` | a host on a release channel installs only a listed, not withdrawn release, never past a barrier ([`channel::choose`]), and only the manifest whose bytes the channel binds ([`channel::bind`]) |
//! | `manifest.rs` | a signed manifest has one reading; `evaluate` is the one judgement of it |
//! | `fetch/` | no byte beyond what the signed manifest declares is read; URLs on their components |
//! | `install/writer.rs` | the one writer of slots (full images and deltas): every byte that counts as written was read back from the medium and matched a signed hash |
//! | `slot.rs` | no byte of the booted slot's, the root filesystem's or a mounted filesystem's storage is written |
//! | `boot/` | every bootloader change is one atomic env write the real bootloader reads |
//! | `agent/transition.rs` | the order of the bootloader writes against the state: bad right before the first byte, activate after verify, record before flip, retire as one pair |
//! | `agent/recovery.rs` | a manual verb never leaves no bootable slot holding a proven good system (without `--force`) |
//! | `agent/verdict.rs` | every boot tells a trial from a fallback from an interrupted write; a trial is committed only when healthy and not already retired in the bootloader |
//! | `agent/probation.rs` | a committed release on probation that fails more than `probation_failures` times within its window is rolled back the one retire way; meanwhile nothing writes the old slot |
//! | `state.rs` | `state.json` is always a complete old or new version; only the lock holder (`StateLock`) writes it |
//! | `health.rs` | a trial is committed only when every check passes in one round, within the deadline |
//! | `publish.rs` | a host reading a release directory sees the old complete release or the new one |
//! | `safe_path.rs` | a program run as root from a configured path (a hook, a health check) and a file root trusts (the config, a trusted key, the state) are ones nobody but root could replace: the file and every directory on its way, links followed; the file judged is the file run or read |
//! | `child.rs` | every child process is bounded in time and output and killed with everything it started; a line of it quoted in a message is escaped and at most 300 bytes (`quote_line`) |
//! | `text.rs` | outside bytes shown to a person are one line, lossless, with nothing a terminal acts on (`show`) |
//! | `files.rs` | a file opened from outside (bootloader envs included) is opened without blocking and is a regular file (the U-Boot env may be a device); a small one is read only up to its cap |
//! | `config.rs` | an upgrade never refuses a config an earlier version accepted: a value narrowed since loads as the nearest one this version takes, with one warning ("upgrades keep configs") |
//! | `cli/flags.rs`, `cli/json.rs` | every flag defined once (usage, `--help` and parsing come from it); every `--json` shape one type |
//! | `error.rs` | every failure has one [`error::Kind`], a stable label |
//!
//! A function over about 100 lines says why with a `// Long on purpose:`
//! comment; `scripts/long-functions.sh` lists them.

#![deny(missing_docs)]

/// `--quiet`: log lines ([`say!`]) are not written; the run's error line
/// ([`shout!`]) still is.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set `--quiet` for the whole process (the command line's, once parsed).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// A log line on stderr, left out under `--quiet` ("no progress or log
/// lines"): `eprintln!` that never panics, as [`shout!`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        if !$crate::quiet() {
            $crate::shout!($($arg)*);
        }
    }};
}

/// The run's own error line on stderr, `--quiet` or not: `eprintln!` that
/// never panics: a closed or full stderr (a broken pipe, `/dev/full`, a
/// restarted journal) loses the line, never the run (a panic aborts the
/// process, mid-install included).
#[macro_export]
macro_rules! shout {
    ($($arg:tt)*) => {
        $crate::shout_line(format_args!($($arg)*))
    };
}

/// [`shout!`]'s one place: the line and its newline on stderr, an error
/// lost. A function, not an expansion at each of the many call sites.
#[inline(never)]
pub fn shout_line(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `println!` that never panics (see [`say!`]): a write that fails is
/// kept ([`output_failed`]) for the end of the run to report
/// ([`cli::main`]), so `status > /dev/full` is no success with nothing
/// written, and `status | head -1` no panic.
#[macro_export]
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::tell_line(format_args!($($arg)*))
    };
}

/// [`tell!`]'s one place: the line and its newline on stdout, a failed
/// write kept ([`output_failed`]).
#[inline(never)]
pub fn tell_line(line: std::fmt::Arguments) {
    use std::io::Write as _;
    if let Err(e) = writeln!(std::io::stdout(), "{line}") {
        output_failed(e);
    }
}

/// The first failed write to stdout of this run, if any.
static OUTPUT_ERROR: std::sync::OnceLock<std::io::Error> = std::sync::OnceLock::new();

/// Keep `e`, a failed write to stdout, when it is the run's first.
pub fn output_failed(e: std::io::Error) {
    let _ = OUTPUT_ERROR.set(e);
}

/// The run's first failed write to stdout (after a last flush), if any.
pub fn output_error() -> Option<&'static std::io::Error> {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().flush() {
        output_failed(e);
    }
    OUTPUT_ERROR.get()
}

pub mod agent;
pub mod boot;
pub mod channel;
pub mod child;
pub mod cli;
pub mod config;
pub mod delta;
pub mod error;
pub mod failpoint;
pub mod fetch;
pub mod files;
pub mod fleet;
pub mod fleetlock;
mod flush;
pub mod health;
pub mod hooks;
pub mod install;
pub mod manifest;
pub mod pack;
pub mod progress;
pub mod publish;
pub mod report;
pub mod rollout;
pub mod safe_path;
pub mod schedule;
pub mod slot;
pub mod state;
pub mod system;
#[cfg(test)]
pub(crate) mod testutil;
pub mod text;
pub mod timefmt;
pub mod trust;
