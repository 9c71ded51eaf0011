//! The command line: the arguments are parsed, with no side effects, into
//! a typed [`Command`], which is then run.
//!
//! - [`flags`]: every command and flag, defined once; the usage text, each
//!   command's `--help` and the parser come from that table.
//! - [`settings`]: the parsed line as a typed [`Command`] with its defaults.
//! - [`commands`]: one function per command that runs it.
//! - [`json`]: every stable `--json` shape.
//!
//! Exit codes: 0 ok, 1 error, 2 usage or config error, 100 update
//! available (`check`).

pub mod commands;
pub mod flags;
pub mod json;
pub mod settings;

pub use settings::{Command, FleetOptions, Global};

use crate::error::{Error, Result};
use std::ffi::OsString;

/// `check`'s exit code when a release applies.
pub const EXIT_UPDATE_AVAILABLE: i32 = 100;

/// A usage error (exit 2), pointing at the help.
fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{} (see abupdate --help)", msg.into()))
}

/// Parse the arguments after the program's name. A path keeps its bytes
/// (a file name need not be UTF-8); words and numbers must be text.
pub fn parse<I>(args: I) -> Result<(Global, Command)>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    flags::parse_low(args)
        .and_then(settings::command)
        .map_err(usage)
}

/// Run a parsed command; returns the exit code.
pub fn run(global: &Global, command: Command) -> Result<i32> {
    match command {
        Command::Help(cmd) => {
            let text = cmd.map_or_else(flags::usage_text, flags::command_help);
            crate::tell!("{}", text.strip_suffix('\n').unwrap_or(&text));
            Ok(0)
        }
        Command::Version => {
            crate::tell!("abupdate {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Status => commands::status(global),
        Command::Check {
            source,
            allow_downgrade,
        } => commands::check(global, source.as_deref(), allow_downgrade),
        Command::Update { no_reboot, now } => commands::update(global, no_reboot, now),
        Command::Install { source, opts } => commands::install(global, &source, &opts),
        Command::Health { no_reboot } => commands::health(global, no_reboot),
        Command::Mark { slot, good, force } => commands::mark(global, slot, good, force),
        Command::Rollback { no_reboot, force } => commands::rollback(global, no_reboot, force),
        Command::Keygen {
            secret,
            public,
            force,
        } => commands::keygen(global, &secret, &public, force),
        Command::Sign {
            secret,
            file,
            trusted_comment,
        } => commands::sign(global, &secret, &file, trusted_comment),
        Command::Verify { public, file } => commands::verify(global, &public, &file),
        Command::Pack(opts) => commands::pack(global, &opts),
        Command::Fleet(opts) => commands::fleet(global, &opts),
        Command::Channel(opts) => commands::channel(global, &opts),
    }
}

/// Entry point of the binary: parse, run, map errors to exit codes.
pub fn main() -> i32 {
    // A write past `ulimit -f` is an error naming the file (EFBIG), not a
    // silent death by SIGXFSZ (found from outside, stop 48). Children get
    // the default back (`child::guard`).
    // SAFETY: signal(2) with SIG_IGN, before any thread starts.
    unsafe {
        nix::libc::signal(nix::libc::SIGXFSZ, nix::libc::SIG_IGN);
    }
    // `args_os`: an argument that is not UTF-8 (a file name) is no panic.
    let (global, command) = match parse(std::env::args_os().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            // `--json` applies to errors too, a usage error included (the
            // global flags were not read: the word on the line says it,
            // before any `--`, after which it is an operand).
            // An argument echoed in the message is shown up to a bound: a
            // 120 kB word made a 120 kB "one-line" error (found from
            // outside, stop 48).
            let line = crate::text::cut(&e.to_string(), USAGE_ERROR_MAX);
            if wants_json(std::env::args_os().skip(1)) {
                json::print(&json::Error {
                    error: &line,
                    kind: e.kind(),
                });
            }
            crate::shout!("abupdate: {line}");
            return e.exit_code();
        }
    };
    crate::set_quiet(global.quiet);
    let result = run(&global, command);
    // Reports still in flight, each bounded by its deadline; every lock
    // was released when `run` returned.
    crate::report::flush();
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let line = e.to_string();
            if global.json {
                json::print(&json::Error {
                    error: &line,
                    kind: e.kind(),
                });
            }
            crate::shout!("abupdate: {line}");
            e.exit_code()
        }
    };
    let lost = crate::output_error();
    let (code, say) = after_output(code, lost.map(std::io::Error::kind));
    if let (true, Some(e)) = (say, lost) {
        crate::shout!("abupdate: standard output: {e}: the command's output was lost");
    }
    code
}

/// The exit code of a run that ended with `code`, its output to stdout
/// failed with `lost` (if it did), and whether to say so. A reader that
/// has gone (`status | head -1`: a broken pipe) chose to stop reading:
/// nothing to say. Any other failure (a full disk, an I/O error) lost
/// output someone wanted: said on stderr, and a success (0) becomes a
/// failure (1): an empty `status > file` must not look like a status. An
/// exit code of its own (100: an update applies; an error's) still says
/// what it said.
fn after_output(code: i32, lost: Option<std::io::ErrorKind>) -> (i32, bool) {
    match lost {
        None | Some(std::io::ErrorKind::BrokenPipe) => (code, false),
        Some(_) if code == 0 => (1, true),
        Some(_) => (code, true),
    }
}

/// The longest usage error shown, in bytes.
const USAGE_ERROR_MAX: usize = 1024;

/// Whether a line that did not parse asked for `--json`: the word before
/// any `--` (after it, `--json` is an operand, a file name).
fn wants_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::after_output;
    use std::io::ErrorKind;

    #[test]
    fn lost_output_fails_a_success_and_keeps_an_exit_code_of_its_own() {
        assert_eq!(after_output(0, None), (0, false));
        assert_eq!(after_output(100, None), (100, false));
        assert_eq!(after_output(0, Some(ErrorKind::BrokenPipe)), (0, false));
        assert_eq!(after_output(0, Some(ErrorKind::StorageFull)), (1, true));
        assert_eq!(after_output(0, Some(ErrorKind::Other)), (1, true));
        assert_eq!(after_output(100, Some(ErrorKind::StorageFull)), (100, true));
        assert_eq!(after_output(2, Some(ErrorKind::StorageFull)), (2, true));
    }

    use super::*;

    #[test]
    fn json_for_a_usage_error_is_the_word_before_any_double_dash() {
        let line = |words: &[&str]| {
            words
                .iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert!(wants_json(line(&["--json", "bogus"]).into_iter()));
        assert!(wants_json(
            line(&["status", "--json", "--bogus"]).into_iter()
        ));
        assert!(!wants_json(
            line(&["-c", "x", "status", "--", "--json"]).into_iter()
        ));
        assert!(!wants_json(line(&["status"]).into_iter()));
    }

    /// The one table of usage errors: each line is refused by the parser
    /// (`flags`) or by its command's settings (`settings`), and every
    /// refusal reaches the user the same way.
    #[test]
    fn usage_errors_exit_2_and_point_at_the_help() {
        for bad in [
            "frobnicate",
            "install",
            "status --bogus",
            "check --no-reboot",
            "mark-good C",
            "keygen --secret",
            "keygen --secret s",
            "install x --write=some",
            "sign --secret k",
            "--json=yes status",
            "fleet --manifest m --secret k --reports r --max-failures 0",
            "fleet --manifest m --secret k --reports r --waves 100,1",
        ] {
            let bad: Vec<&str> = bad.split(' ').collect();
            let e = parse(bad.iter().copied()).expect_err(&format!("{bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
            assert_eq!(e.kind(), "usage", "{bad:?}: {e}");
            assert!(e.to_string().ends_with("(see abupdate --help)"), "{e}");
        }
    }
}
