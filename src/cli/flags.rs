//! Every command and every flag of the command line, each defined once.
//!
//! Invariant: a flag is named in one place, its entry in [`FLAGS`]: its
//! spelling, its value's name, its help line, the commands that take it,
//! whether they need it, and where its value goes. The usage text, each
//! command's `--help`, the parser and the check that a command takes a
//! flag all read that entry (ripgrep's `flags/defs.rs` is the model), so
//! adding a flag is one entry here plus the field it fills in [`LowArgs`].
//!
//! Adding a flag: its entry in [`FLAGS`], the field it fills in
//! [`LowArgs`], and its use where `settings` builds the command. Two
//! commands may each have a flag of one name (`keygen --secret` takes one
//! key, `pack --secret` several): two entries, each with its commands.
//!
//! Parsing ([`parse_low`], with `lexopt`) has no side effects: it turns
//! the arguments into plain data, each value already checked and converted
//! by its flag's `set` (a number is a number, a path stays the bytes it was
//! given). `settings` checks the line against its command
//! ([`LowArgs::check`]) and makes the typed [`super::Command`] of it.

use crate::install::WriteMode;
use crate::timefmt::parse_rfc3339;
use std::ffi::{OsStr, OsString};
use std::ops::RangeInclusive;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

/// A command of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// `help [COMMAND]`: the usage text, or one command's options.
    Help,
    /// `status`: the slots, the booted one, versions, the bootloader's view.
    Status,
    /// `check [SOURCE]`: fetch and verify the manifest, say whether it applies.
    Check,
    /// `update`: check, then install and reboot when a release applies.
    Update,
    /// `install SOURCE`: download, verify, write and stage a release.
    Install,
    /// `health`: run the checks; commit or roll back a trial.
    Health,
    /// `mark-good [SLOT]`: mark a slot good.
    MarkGood,
    /// `mark-bad [SLOT]`: mark a slot bad.
    MarkBad,
    /// `rollback`: boot the other slot if it holds a good system.
    Rollback,
    /// `keygen`: make a minisign key pair.
    Keygen,
    /// `sign FILE`: write `FILE.minisig`.
    Sign,
    /// `verify FILE`: check `FILE.minisig`.
    Verify,
    /// `fleet`: the operator's rollout controller (pause or advance).
    Fleet,
    /// `pack`: build a signed release directory from images.
    Pack,
    /// `channel ACTION FILE [ARG]`: edit and re-sign a release channel.
    Channel,
}

/// A positional argument of a command.
#[derive(Debug)]
pub struct Positional {
    /// Its name in the usage text (`SOURCE`).
    pub name: &'static str,
    /// Whether the command refuses to run without it.
    pub required: bool,
    /// One line for the command's `--help`.
    pub help: &'static str,
}

/// A command: its name, positional arguments and one line of help.
#[derive(Debug)]
pub struct CommandDef {
    /// The command it defines.
    pub cmd: Cmd,
    /// Its name on the command line (`mark-good`).
    pub name: &'static str,
    /// Its positional arguments, in order.
    pub args: &'static [Positional],
    /// One line for the usage text.
    pub about: &'static str,
}

const fn arg(name: &'static str, required: bool, help: &'static str) -> Positional {
    Positional {
        name,
        required,
        help,
    }
}

/// The commands, in the order the usage text lists them.
pub static COMMANDS: &[CommandDef] = &[
    CommandDef {
        cmd: Cmd::Status,
        name: "status",
        args: &[],
        about: "slots, booted slot, versions, bootloader view, pending trial",
    },
    CommandDef {
        cmd: Cmd::Check,
        name: "check",
        args: &[arg(
            "SOURCE",
            false,
            "manifest URL or path (default: update.url)",
        )],
        about: "fetch + verify the manifest; exit 100 = update applies, 0 = none",
    },
    CommandDef {
        cmd: Cmd::Update,
        name: "update",
        args: &[],
        about: "check, then install and reboot when one applies (the timer's job)",
    },
    CommandDef {
        cmd: Cmd::Install,
        name: "install",
        args: &[arg("SOURCE", true, "manifest URL or path")],
        about: "download, verify, write and stage a release, then reboot",
    },
    CommandDef {
        cmd: Cmd::Health,
        name: "health",
        args: &[],
        about: "run the checks; commit or roll back a trial; re-bless otherwise",
    },
    CommandDef {
        cmd: Cmd::MarkGood,
        name: "mark-good",
        args: &[arg("SLOT", false, "A or B (default: the booted slot)")],
        about: "mark a slot good",
    },
    CommandDef {
        cmd: Cmd::MarkBad,
        name: "mark-bad",
        args: &[arg("SLOT", false, "A or B (default: the booted slot)")],
        about: "mark a slot bad",
    },
    CommandDef {
        cmd: Cmd::Rollback,
        name: "rollback",
        args: &[],
        about: "boot the other slot if it holds a good system",
    },
    CommandDef {
        cmd: Cmd::Keygen,
        name: "keygen",
        args: &[],
        about: "make an unencrypted minisign key pair",
    },
    CommandDef {
        cmd: Cmd::Sign,
        name: "sign",
        args: &[arg("FILE", true, "the file to sign")],
        about: "write FILE.minisig (minisign format, prehashed)",
    },
    CommandDef {
        cmd: Cmd::Verify,
        name: "verify",
        args: &[arg("FILE", true, "the signed file")],
        about: "check FILE.minisig",
    },
    CommandDef {
        cmd: Cmd::Fleet,
        name: "fleet",
        args: &[],
        about: "operator: pause or advance a rollout from the fleet's metrics \
                (--prometheus) or the webhook's reports (--reports); waves from the \
                manifest's rollout.waves; verified first with the hosts' keys, else the \
                secrets' own; re-signed by the keys that signed it",
    },
    CommandDef {
        cmd: Cmd::Pack,
        name: "pack",
        args: &[],
        about: "build a release directory from images, signed",
    },
    CommandDef {
        cmd: Cmd::Channel,
        name: "channel",
        args: &[
            arg(
                "ACTION",
                true,
                "add, withdraw, prune, pin, unpin, halt, resume or resign",
            ),
            arg("FILE", true, "the channel.json"),
            arg(
                "ARG",
                false,
                "add: the release.json; withdraw, prune, pin, unpin: the version",
            ),
        ],
        about: "operator: edit a release channel, verified first, then re-signed",
    },
    CommandDef {
        cmd: Cmd::Help,
        name: "help",
        args: &[arg("COMMAND", false, "a command whose options to show")],
        about: "this text, or a command's options",
    },
];

/// The definition of a command.
pub fn command_def(cmd: Cmd) -> &'static CommandDef {
    // Every `Cmd` has its entry (pinned by a test).
    COMMANDS
        .iter()
        .find(|d| d.cmd == cmd)
        .unwrap_or(&COMMANDS[COMMANDS.len() - 1])
}

/// Where on the line a flag is taken.
#[derive(Debug)]
pub enum Scope {
    /// By every command, before or after the command's name.
    Global,
    /// Only before the command's name (`-V`: after `pack`, `--version` is
    /// the release's).
    Top,
    /// By these commands, before or after the command's name.
    Commands(&'static [Cmd]),
}

/// A flag's value as given, with the flag's name for the messages.
#[derive(Debug)]
pub struct Value {
    flag: &'static str,
    raw: OsString,
}

/// One flag.
pub struct Flag {
    /// `--long`, without the dashes.
    pub long: &'static str,
    /// The one-letter spelling (`-c`), if any.
    pub short: Option<char>,
    /// The value's name in the usage text (`FILE`); `None` for a switch.
    pub value: Option<&'static str>,
    /// Where on the line it is taken, and by which commands.
    pub scope: Scope,
    /// A command that takes it cannot do without it.
    pub required: bool,
    /// May be given more than once, each adding a value (otherwise a
    /// second one is refused: it would silently replace the first).
    pub repeat: bool,
    /// One line for the usage text and the command's `--help`.
    pub help: &'static str,
    /// Check and convert the value into its field of [`LowArgs`].
    pub set: fn(&mut LowArgs, Value) -> Result<(), String>,
}

impl std::fmt::Debug for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--{}", self.long)
    }
}

type Setter = fn(&mut LowArgs, Value) -> Result<(), String>;

const fn switch(long: &'static str, scope: Scope, help: &'static str, set: Setter) -> Flag {
    Flag {
        long,
        short: None,
        value: None,
        scope,
        required: false,
        repeat: false,
        help,
        set,
    }
}

const fn valued(
    long: &'static str,
    value: &'static str,
    scope: Scope,
    help: &'static str,
    set: Setter,
) -> Flag {
    Flag {
        long,
        short: None,
        value: Some(value),
        scope,
        required: false,
        repeat: false,
        help,
        set,
    }
}

impl Flag {
    const fn short(mut self, c: char) -> Flag {
        self.short = Some(c);
        self
    }
    const fn required(mut self) -> Flag {
        self.required = true;
        self
    }
    const fn repeat(mut self) -> Flag {
        self.repeat = true;
        self
    }

    /// Whether the flag may stand here: before the command's name
    /// (`command` is `None`) or after it.
    fn admits(&self, command: Option<Cmd>) -> bool {
        match &self.scope {
            Scope::Global => true,
            Scope::Top => command.is_none(),
            Scope::Commands(cmds) => command.is_none_or(|c| cmds.contains(&c)),
        }
    }

    /// Whether `cmd` takes the flag.
    pub fn takes(&self, cmd: Cmd) -> bool {
        match &self.scope {
            Scope::Global => true,
            Scope::Top => false,
            Scope::Commands(cmds) => cmds.contains(&cmd),
        }
    }
}

const CHECK_INSTALL: Scope = Scope::Commands(&[Cmd::Check, Cmd::Install]);

/// `--expires-days`'s help line, its bound written at compile time from
/// [`crate::manifest::MAX_EXPIRES_DAYS`] (what `pack`, `channel` and every
/// host enforce), so the help cannot name another bound than the one
/// applied. (A help line is `&'static str` in a `static` table: it is built
/// as bytes by a `const` block, no formatting crate needed.)
const EXPIRES_DAYS_HELP: &str = {
    const HEAD: &[u8] = b"the manifest or channel expires N days after it is created (1 to ";
    const TAIL: &[u8] = b"; default 90, channel 7)";
    const MAX: u64 = crate::manifest::MAX_EXPIRES_DAYS;
    const DIGITS: usize = {
        let (mut n, mut d) = (MAX, 1);
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    };
    const LEN: usize = HEAD.len() + DIGITS + TAIL.len();
    const BYTES: [u8; LEN] = {
        let mut out = [0u8; LEN];
        let mut i = 0;
        while i < HEAD.len() {
            out[i] = HEAD[i];
            i += 1;
        }
        let mut n = MAX;
        let mut k = DIGITS;
        while k > 0 {
            out[HEAD.len() + k - 1] = b'0' + (n % 10) as u8;
            n /= 10;
            k -= 1;
        }
        let mut j = 0;
        while j < TAIL.len() {
            out[HEAD.len() + DIGITS + j] = TAIL[j];
            j += 1;
        }
        out
    };
    match std::str::from_utf8(&BYTES) {
        Ok(text) => text,
        Err(_) => panic!("the --expires-days help is ASCII"),
    }
};
/// `--{flag} text` as a duration in `limit`, else the one line naming
/// the flag and what it must be (`bound`, the limit in the operator's
/// words): every bounded duration flag refuses the same way.
fn duration_within(
    flag: &str,
    text: &str,
    limit: RangeInclusive<Duration>,
    bound: &str,
) -> Result<Duration, String> {
    match crate::timefmt::parse_duration(text) {
        Ok(d) if limit.contains(&d) => Ok(d),
        Ok(_) => Err(format!("--{flag} {text}: {bound}")),
        Err(e) => Err(format!("--{flag}: {e}")),
    }
}

const REBOOTING: Scope = Scope::Commands(&[Cmd::Update, Cmd::Install, Cmd::Health, Cmd::Rollback]);
const PUBLIC: Scope = Scope::Commands(&[Cmd::Keygen, Cmd::Verify]);
const PACK: Scope = Scope::Commands(&[Cmd::Pack]);
const FLEET: Scope = Scope::Commands(&[Cmd::Fleet]);
const FLEET_CHANNEL: Scope = Scope::Commands(&[Cmd::Fleet, Cmd::Channel]);

/// Every flag. Order: global ones, then by command as the usage lists them.
pub static FLAGS: &[Flag] = &[
    valued(
        "config",
        "FILE",
        Scope::Global,
        "the config file (default /etc/abupdate/config.toml; its config.d/ is next to it)",
        |a, v| {
            a.config = Some(v.path());
            Ok(())
        },
    )
    .short('c'),
    switch(
        "json",
        Scope::Global,
        "print the result, or the error, as stable JSON on stdout (README \"--json\")",
        |a, _| {
            a.json = true;
            Ok(())
        },
    ),
    switch(
        "quiet",
        Scope::Global,
        "no progress or log lines",
        |a, _| {
            a.quiet = true;
            Ok(())
        },
    )
    .short('q'),
    switch(
        "help",
        Scope::Global,
        "this text; after a command, that command's",
        |a, _| {
            a.help = true;
            Ok(())
        },
    )
    .short('h'),
    switch("version", Scope::Top, "print abupdate's version", |a, _| {
        a.version = true;
        Ok(())
    })
    .short('V'),
    // check, update, install, health, rollback
    switch(
        "no-reboot",
        REBOOTING,
        "do everything but the reboot",
        |a, _| {
            a.no_reboot = true;
            Ok(())
        },
    ),
    switch(
        "now",
        Scope::Commands(&[Cmd::Update]),
        "skip the jitter and any backoff after failures",
        |a, _| {
            a.now = true;
            Ok(())
        },
    ),
    switch(
        "allow-downgrade",
        CHECK_INSTALL,
        "take a release older than the booted one",
        |a, _| {
            a.allow_downgrade = true;
            Ok(())
        },
    ),
    valued(
        "write",
        "all|changed",
        Scope::Commands(&[Cmd::Install]),
        "changed: read the target first and write only the blocks that differ",
        |a, v| {
            a.write = Some(match v.text()?.as_str() {
                "all" => WriteMode::All,
                "changed" => WriteMode::Changed,
                other => return Err(format!("--write: {other:?} is not all or changed")),
            });
            Ok(())
        },
    ),
    switch(
        "force",
        Scope::Commands(&[Cmd::Rollback, Cmd::MarkGood, Cmd::MarkBad]),
        "even when no slot holding a proven good system would stay bootable",
        |a, _| {
            a.force = true;
            Ok(())
        },
    ),
    switch(
        "force",
        Scope::Commands(&[Cmd::Keygen]),
        "overwrite existing key files",
        |a, _| {
            a.force = true;
            Ok(())
        },
    ),
    // keys
    valued(
        "secret",
        "FILE",
        Scope::Commands(&[Cmd::Keygen, Cmd::Sign]),
        "the secret key",
        |a, v| {
            a.secret = vec![v.path()];
            Ok(())
        },
    )
    .required(),
    valued(
        "secret",
        "FILE",
        Scope::Commands(&[Cmd::Pack, Cmd::Fleet, Cmd::Channel]),
        "a secret key that signs (repeat for m-of-n signing)",
        |a, v| {
            a.secret.push(v.path());
            Ok(())
        },
    )
    .required()
    .repeat(),
    valued("public", "FILE", PUBLIC, "the public key", |a, v| {
        a.public = Some(v.path());
        Ok(())
    })
    .required(),
    valued(
        "trusted-comment",
        "TEXT",
        Scope::Commands(&[Cmd::Sign]),
        "the signed comment (default: timestamp and file name)",
        |a, v| {
            a.trusted_comment = Some(v.text()?);
            Ok(())
        },
    ),
    // fleet
    valued(
        "manifest",
        "FILE",
        FLEET,
        "the release.json to pause or advance",
        |a, v| {
            a.manifest = Some(v.path());
            Ok(())
        },
    )
    .required(),
    valued(
        "keys",
        "DIR",
        FLEET_CHANNEL,
        "the hosts' trusted keys (repeatable; default: the secrets' public halves)",
        |a, v| {
            a.keys.push(v.path());
            Ok(())
        },
    )
    .repeat(),
    valued(
        "threshold",
        "N",
        FLEET_CHANNEL,
        "signatures by distinct trusted keys needed (1 to 17, default 1)",
        |a, v| {
            a.threshold = Some(v.number_in(1..=crate::publish::MAX_SIGNATURES, "give 1 to 17")?);
            Ok(())
        },
    ),
    valued(
        "prometheus",
        "URL",
        FLEET,
        "a Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics) to decide from",
        |a, v| {
            let url = v.text()?;
            crate::fleet::prometheus::check_url(&url)
                .map_err(|e| format!("--prometheus {}: {e}", crate::fetch::redact_url(&url)))?;
            a.prometheus = Some(url);
            Ok(())
        },
    ),
    valued(
        "selector",
        "MATCHERS",
        FLEET,
        "only hosts whose series match these PromQL label matchers ('region=\"eu\",tier!=\"lab\"'; repeatable)",
        |a, v| {
            let text = v.text()?;
            a.selector
                .extend(crate::fleet::prometheus::parse_selector(&text)?);
            Ok(())
        },
    )
    .repeat(),
    valued(
        "query-timeout",
        "DURATION",
        FLEET,
        "bound on each query (default 30s, at most 10m)",
        |a, v| {
            let limit = Duration::from_nanos(1)..=Duration::from_secs(600);
            let d = duration_within("query-timeout", &v.text()?, limit, "more than 0, at most 10m")?;
            a.query_timeout = Some(d);
            Ok(())
        },
    ),
    valued(
        "host-label",
        "LABEL",
        FLEET,
        "the label whose value names a host, one vote each (default instance, set by node_exporter's scrape)",
        |a, v| {
            let label = v.text()?;
            if !crate::report::valid_label_name(&label)
                || crate::report::RESERVED_LABELS.contains(&label.as_str())
            {
                return Err(format!(
                    "--host-label {label:?}: not a label naming a host (a Prometheus label name other than {})",
                    crate::report::RESERVED_LABELS.join(", ")
                ));
            }
            a.host_label = Some(label);
            Ok(())
        },
    ),
    valued(
        "max-clock-skew",
        "DURATION",
        FLEET,
        "how far the query API's clock may be from this machine's before fleet refuses to decide (default 1m, at most 1h)",
        |a, v| {
            let limit = Duration::ZERO..=crate::fleet::clock::MAX_MAX_SKEW;
            let d = duration_within("max-clock-skew", &v.text()?, limit, "at most 1h")?;
            a.max_clock_skew = Some(d);
            Ok(())
        },
    ),
    valued(
        "prometheus-ca",
        "FILE",
        FLEET,
        "trust roots (PEM) of an https query API with a private CA (default: the host's CA bundle)",
        |a, v| {
            a.prometheus_ca = Some(v.path());
            Ok(())
        },
    ),
    valued(
        "reports",
        "PATH",
        FLEET,
        "instead of --prometheus: the webhook's reports, a JSON-lines file or a directory of them",
        |a, v| {
            a.reports = Some(v.path());
            Ok(())
        },
    ),
    valued(
        "max-failures",
        "N",
        FLEET,
        "pause once this many hosts failed (default 5)",
        |a, v| {
            a.policy.max_failures = v.number()?;
            Ok(())
        },
    ),
    valued(
        "max-failure-rate",
        "R",
        FLEET,
        "or this fraction of the finished hosts (default 0.05)",
        |a, v| {
            a.policy.max_failure_rate = v.number()?;
            Ok(())
        },
    ),
    valued(
        "min-reports",
        "N",
        FLEET,
        "count the rate from this many finished hosts on (default 20)",
        |a, v| {
            a.policy.min_reports = v.number()?;
            Ok(())
        },
    ),
    valued(
        "waves",
        "P,P,...",
        FLEET,
        "for a manifest without rollout.waves: percentages to advance through, rising, ending at 100 (1,5,25,100)",
        |a, v| {
            a.policy.waves = crate::fleet::parse_waves(&v.text()?)?;
            Ok(())
        },
    ),
    valued(
        "soak",
        "DURATION",
        FLEET,
        "how long a wave runs before it may advance (default 0)",
        |a, v| {
            a.policy.soak = crate::timefmt::parse_duration(&v.text()?)
                .map_err(|e| format!("--soak: {e}"))?;
            Ok(())
        },
    ),
    valued(
        "fleet-size",
        "N",
        FLEET,
        "hosts in the fleet, to know when a wave is done",
        |a, v| {
            a.policy.fleet_size = Some(v.number()?);
            Ok(())
        },
    ),
    valued(
        "advance-when",
        "F",
        FLEET,
        "fraction of a wave that must have committed before the next (default 0.9)",
        |a, v| {
            a.policy.advance_when = v.number()?;
            Ok(())
        },
    ),
    valued(
        "out",
        "DIR",
        FLEET,
        "publish the re-signed manifest and its signatures there (default: the manifest's directory)",
        |a, v| {
            a.out = Some(v.path());
            Ok(())
        },
    ),
    switch(
        "dry-run",
        FLEET,
        "decide and say, change nothing",
        |a, _| {
            a.dry_run = true;
            Ok(())
        },
    ),
    switch(
        "barrier",
        Scope::Commands(&[Cmd::Channel]),
        "channel add: hosts go through this release, never past it",
        |a, _| {
            a.barrier = true;
            Ok(())
        },
    ),
    switch(
        "pin",
        Scope::Commands(&[Cmd::Channel]),
        "channel add: bind the manifest's exact bytes (a frozen release nobody re-signs)",
        |a, _| {
            a.pin = true;
            Ok(())
        },
    ),
    valued(
        "track",
        "NAME",
        Scope::Commands(&[Cmd::Pack, Cmd::Channel]),
        "the release track (stable): signed into release.json or channel.json, required by hosts with [update] track",
        |a, v| {
            let t = v.text()?;
            crate::manifest::check_track_name(&t).map_err(|e| format!("--track {e}"))?;
            a.track = Some(t);
            Ok(())
        },
    ),
    // pack
    valued(
        "compatible",
        "C",
        PACK,
        "the hardware the release is for",
        |a, v| {
            a.compatible = Some(v.text()?);
            Ok(())
        },
    )
    .required(),
    valued(
        "version",
        "V",
        PACK,
        "the release's version (dotted numbers)",
        |a, v| {
            a.release_version = Some(v.text()?);
            Ok(())
        },
    )
    .required(),
    valued(
        "image",
        "CLASS=PATH",
        PACK,
        "an image and the slot partition class it goes to (repeatable)",
        |a, v| {
            a.image.push(v.class_path()?);
            Ok(())
        },
    )
    .required()
    .repeat(),
    valued(
        "out",
        "DIR",
        PACK,
        "the release directory (published atomically)",
        |a, v| {
            a.out = Some(v.path());
            Ok(())
        },
    )
    .required(),
    valued(
        "expires-days",
        "N",
        Scope::Commands(&[Cmd::Pack, Cmd::Channel]),
        EXPIRES_DAYS_HELP,
        |a, v| {
            a.expires_days = Some(v.number()?);
            Ok(())
        },
    ),
    valued(
        "expires",
        "TIME",
        PACK,
        "or at this RFC 3339 time",
        |a, v| {
            a.expires = Some(v.time()?);
            Ok(())
        },
    ),
    valued(
        "created",
        "TIME",
        PACK,
        "the manifest's date (default now; never before the one it replaces)",
        |a, v| {
            a.created = Some(v.time()?);
            Ok(())
        },
    ),
    valued(
        "level",
        "N",
        PACK,
        "zstd level, 1 to 22 (default 19)",
        |a, v| {
            a.level = Some(v.number()?);
            Ok(())
        },
    ),
    switch(
        "no-compress",
        PACK,
        "ship the images uncompressed",
        |a, _| {
            a.no_compress = true;
            Ok(())
        },
    ),
    valued(
        "window-log",
        "N",
        PACK,
        "zstd window log, 10 to 31 (above 23: long-distance matching)",
        |a, v| {
            a.window_log = Some(v.number()?);
            Ok(())
        },
    ),
    valued(
        "percent",
        "P",
        PACK,
        "rollout: a fixed percentage of the fleet",
        |a, v| {
            a.percent = Some(v.percentage()?);
            Ok(())
        },
    ),
    valued(
        "rollout-start",
        "TIME",
        PACK,
        "rollout: a linear ramp starts then",
        |a, v| {
            let text = v.text()?;
            parse_rfc3339(&text).map_err(|e| format!("--rollout-start: {e}"))?;
            a.rollout_start = Some(text);
            Ok(())
        },
    ),
    valued(
        "start-percentage",
        "P",
        PACK,
        "rollout: at this percentage",
        |a, v| {
            a.start_percentage = Some(v.percentage()?);
            Ok(())
        },
    ),
    valued(
        "duration-minutes",
        "M",
        PACK,
        "rollout: reaching 100% after this many minutes",
        |a, v| {
            a.duration_minutes = Some(v.number()?);
            Ok(())
        },
    ),
    switch(
        "paused",
        PACK,
        "rollout: paused (no host starts installing)",
        |a, _| {
            a.paused = true;
            Ok(())
        },
    ),
    valued(
        "waves",
        "P,P,...",
        PACK,
        "rollout: the fleet controller's waves, rising, ending at 100 (2,10,50,100); starts at the first",
        |a, v| {
            a.waves = Some(crate::fleet::parse_waves(&v.text()?)?);
            Ok(())
        },
    ),
    valued(
        "segment-size",
        "MIB",
        PACK,
        "cut images into independent zstd frames, decoded on every core (1 to 1024 MiB, default 4; over 16, one stream)",
        |a, v| {
            a.segment_size = Some(v.number_in(1..=1024u64, "give 1 to 1024 (MiB)")? << 20);
            Ok(())
        },
    ),
    switch(
        "one-frame",
        PACK,
        "one zstd frame per image, as releases before segments (with --window-log)",
        |a, _| {
            a.one_frame = true;
            Ok(())
        },
    ),
    valued(
        "delta-from",
        "CLASS=OLD_IMAGE",
        PACK,
        "also ship a delta from this older image (repeatable)",
        |a, v| {
            a.delta_from.push(v.class_path()?);
            Ok(())
        },
    )
    .repeat(),
    valued(
        "delta-level",
        "N",
        PACK,
        "zstd level of the delta frames (default 9)",
        |a, v| {
            a.delta_level = Some(v.number()?);
            Ok(())
        },
    ),
    valued(
        "delta-window-log",
        "N",
        PACK,
        "largest window a delta may need, 10 to 31 (30: deltas 32-bit hosts can apply)",
        |a, v| {
            a.delta_window_log =
                Some(v.number_in(10..=crate::pack::MAX_DELTA_WINDOW_LOG, "outside 10..=31")?);
            Ok(())
        },
    ),
];

impl Value {
    /// A path: the bytes as given.
    fn path(self) -> PathBuf {
        PathBuf::from(self.raw)
    }

    /// Text: values that are words or numbers must be UTF-8.
    fn text(self) -> Result<String, String> {
        let flag = self.flag;
        self.raw
            .into_string()
            .map_err(|raw| format!("--{flag} {}: not UTF-8 text", shown(&raw)))
    }

    fn number<T: std::str::FromStr>(self) -> Result<T, String> {
        let flag = self.flag;
        let text = self.text()?;
        text.parse()
            .map_err(|_| format!("--{flag}: {text:?} is not a number"))
    }

    /// A number in `range`; `hint` says which.
    fn number_in<T>(self, range: std::ops::RangeInclusive<T>, hint: &str) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let flag = self.flag;
        let n: T = self.number()?;
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(format!("--{flag} {n}: {hint}"))
        }
    }

    /// A percentage of the fleet, 0 to 100. `-0` is 0: the manifest says
    /// `0.0`, not a sign a reader might take for a typo.
    fn percentage(self) -> Result<f64, String> {
        let p: f64 = self.number_in(0.0..=100.0, "a percentage from 0 to 100")?;
        Ok(if p == 0.0 { 0.0 } else { p })
    }

    /// An RFC 3339 time, as Unix seconds.
    fn time(self) -> Result<i64, String> {
        let flag = self.flag;
        parse_rfc3339(&self.text()?).map_err(|e| format!("--{flag}: {e}"))
    }

    /// `CLASS=PATH`: the class is text (it becomes part of file names),
    /// the path the bytes after the first `=`.
    fn class_path(self) -> Result<(String, PathBuf), String> {
        let bytes = self.raw.as_bytes();
        let shown = shown(&self.raw);
        let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
            return Err(format!("--{} \"{shown}\": expected CLASS=PATH", self.flag));
        };
        let class = std::str::from_utf8(&bytes[..eq])
            .map_err(|_| format!("--{} \"{shown}\": the class is not UTF-8 text", self.flag))?;
        let path = OsString::from_vec(bytes[eq + 1..].to_vec());
        Ok((class.to_string(), PathBuf::from(path)))
    }
}

/// The command line as plain data: what was given, each value checked
/// and converted, nothing done yet.
#[derive(Debug, Default)]
pub struct LowArgs {
    /// The command named, if any (`None`: only global flags, or nothing).
    pub command: Option<Cmd>,
    /// Arguments after the command's name that are not flags.
    pub positional: Vec<OsString>,
    /// The flags given (indexes into [`FLAGS`]), in order.
    pub given: Vec<usize>,
    /// `--config FILE`: the config file instead of `/etc/abupdate/config.toml`.
    pub config: Option<PathBuf>,
    /// `--json`: results (and errors) as stable JSON on stdout.
    pub json: bool,
    /// `--quiet`: no progress or log lines.
    pub quiet: bool,
    /// `--help`: the usage text, or the command's.
    pub help: bool,
    /// `-V`/`--version` before any command: abupdate's own version.
    pub version: bool,
    /// `--no-reboot`: do everything but the reboot.
    pub no_reboot: bool,
    /// `update --now`: skip the jitter and any backoff after failures.
    pub now: bool,
    /// `--allow-downgrade`: take a release older than the booted one.
    pub allow_downgrade: bool,
    /// `install --write`: write every block, or only the ones that differ.
    pub write: Option<WriteMode>,
    /// `rollback`/`mark-good`/`mark-bad --force` (even when no slot
    /// holding a proven good system stays bootable), `keygen --force`
    /// (overwrite existing key files).
    pub force: bool,
    /// `--secret FILE`: the secret key (`keygen`, `sign`: one; `pack`, `fleet`:
    /// each one that signs, in the order given).
    pub secret: Vec<PathBuf>,
    /// `--public FILE`: the public key (`keygen` writes it, `verify` reads it).
    pub public: Option<PathBuf>,
    /// `sign --trusted-comment`: the signed comment (default: time and file name).
    pub trusted_comment: Option<String>,
    /// `fleet --manifest`: the `release.json` to pause or advance.
    pub manifest: Option<PathBuf>,
    /// `fleet --keys DIR`: the hosts' trusted key directories.
    pub keys: Vec<PathBuf>,
    /// `fleet --threshold`: signatures by distinct trusted keys needed (1 to 17).
    pub threshold: Option<usize>,
    /// `fleet --reports PATH`: decide from the webhook's reports (a JSON-lines
    /// file or a directory of them).
    pub reports: Option<PathBuf>,
    /// `fleet --prometheus URL`: decide from a Prometheus-compatible query API.
    pub prometheus: Option<String>,
    /// `fleet --selector`: label matchers every query's series must match.
    pub selector: Vec<crate::fleet::prometheus::Matcher>,
    /// `fleet --query-timeout`: the bound on each Prometheus query.
    pub query_timeout: Option<std::time::Duration>,
    /// `fleet --host-label`: the label naming a host.
    pub host_label: Option<String>,
    /// `fleet --prometheus-ca`: trust roots of an https query API.
    pub prometheus_ca: Option<PathBuf>,
    /// `fleet --max-clock-skew`: how far the query API's clock may be.
    pub max_clock_skew: Option<std::time::Duration>,
    /// `pack --waves`: the fleet controller's plan, signed.
    pub waves: Option<Vec<f64>>,
    /// `fleet`'s thresholds and waves, filled in flag by flag.
    pub policy: crate::fleet::Policy,
    /// `fleet --dry-run`: decide and say, write nothing.
    pub dry_run: bool,
    /// `channel add --barrier`.
    pub barrier: bool,
    /// `channel add --pin`.
    pub pin: bool,
    /// `pack --track`, `channel --track`: the release track signed into
    /// the document.
    pub track: Option<String>,
    /// `pack --compatible`: the hardware the release is for.
    pub compatible: Option<String>,
    /// `pack --version`.
    pub release_version: Option<String>,
    /// `pack --image CLASS=PATH`: each image and its slot partition class.
    pub image: Vec<(String, PathBuf)>,
    /// `--out DIR`: `pack`'s release directory, or where `fleet` publishes the
    /// re-signed manifest.
    pub out: Option<PathBuf>,
    /// `pack --expires-days`: the manifest expires this many days after it is created.
    pub expires_days: Option<u64>,
    /// `pack --expires`: the manifest expires at this time (Unix seconds, from RFC 3339).
    pub expires: Option<i64>,
    /// `pack --created`: the manifest's date (Unix seconds, from RFC 3339; default now).
    pub created: Option<i64>,
    /// `pack --level`: the zstd level of the images (1 to 22).
    pub level: Option<i32>,
    /// `pack --no-compress`: ship the images uncompressed.
    pub no_compress: bool,
    /// `pack --window-log`: the zstd window log of the images (10 to 31).
    pub window_log: Option<u32>,
    /// `pack --percent`: a fixed rollout percentage of the fleet.
    pub percent: Option<f64>,
    /// `pack --rollout-start`: when a linear ramp starts (RFC 3339, as given).
    pub rollout_start: Option<String>,
    /// `pack --start-percentage`: the ramp's percentage at its start.
    pub start_percentage: Option<f64>,
    /// `pack --duration-minutes`: minutes the ramp takes to reach 100%.
    pub duration_minutes: Option<u64>,
    /// `pack --paused`: the rollout is paused (no host starts installing).
    pub paused: bool,
    /// `pack --segment-size` in bytes (given in MiB): images cut into
    /// independent zstd frames of this size.
    pub segment_size: Option<u64>,
    /// `pack --one-frame`: one zstd frame per image, as releases before segments.
    pub one_frame: bool,
    /// `pack --delta-from CLASS=OLD_IMAGE`: each older image a delta is made from.
    pub delta_from: Vec<(String, PathBuf)>,
    /// `pack --delta-level`: the zstd level of the delta frames.
    pub delta_level: Option<i32>,
    /// `pack --delta-window-log`: the largest window a delta may need (10 to 31).
    pub delta_window_log: Option<u32>,
}

/// A flag as typed on the line, for finding it and for messages.
#[derive(Debug)]
enum Name {
    Long(String),
    Short(char),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Long(l) => write!(f, "--{l}"),
            Name::Short(c) => write!(f, "-{c}"),
        }
    }
}

impl Name {
    fn names(&self, flag: &Flag) -> bool {
        match self {
            Name::Long(l) => flag.long == l,
            Name::Short(c) => flag.short == Some(*c),
        }
    }
}

/// The entry for a flag typed at this point of the line (before the
/// command's name: `command` is `None`).
fn find(name: &Name, command: Option<Cmd>) -> Option<(usize, &'static Flag)> {
    FLAGS
        .iter()
        .enumerate()
        .find(|(_, f)| name.names(f) && f.admits(command))
}

fn command_named(name: &OsStr) -> Result<Cmd, String> {
    COMMANDS
        .iter()
        .find(|d| OsStr::new(d.name) == name)
        .map(|d| d.cmd)
        .ok_or_else(|| format!("unknown command \"{}\"", shown(name)))
}

/// An argument as a message names it: its bytes as [`crate::text::show`]
/// writes them (a byte that is not UTF-8 as `\xNN`, never U+FFFD: two
/// different arguments never read the same; found from outside, stop 58).
pub(crate) fn shown(arg: &OsStr) -> String {
    crate::text::show(arg.as_encoded_bytes())
}

fn lexopt_error(e: lexopt::Error) -> String {
    match e {
        lexopt::Error::MissingValue {
            option: Some(option),
        } => format!("{option} needs a value"),
        lexopt::Error::UnexpectedValue { option, .. } => format!("{option} takes no value"),
        e => e.to_string(),
    }
}

/// Why `flag`, which does not repeat, is refused a second time.
fn twice(flag: &Flag) -> String {
    match flag.value {
        Some(_) => format!(
            "--{} given twice: it takes one value, and the second would replace the first",
            flag.long
        ),
        None => format!("--{} given twice", flag.long),
    }
}

impl LowArgs {
    /// Record the flag `FLAGS[i]` and put its value in its field.
    fn apply(&mut self, i: usize, raw: OsString) -> Result<(), String> {
        let flag = &FLAGS[i];
        // Found from outside: `fleet --reports A --reports B` read B
        // alone, and A's failures were never counted.
        if !flag.repeat && self.given.contains(&i) {
            return Err(twice(flag));
        }
        (flag.set)(
            self,
            Value {
                flag: flag.long,
                raw,
            },
        )?;
        self.given.push(i);
        Ok(())
    }

    /// The command's name has come: the flags of commands given before it
    /// are now looked up as that command's (two commands may each have a
    /// flag of one name: `keygen --secret` and `pack --secret`).
    fn command_is(&mut self, cmd: Cmd, pending: Vec<(Name, OsString)>) -> Result<(), String> {
        self.command = Some(cmd);
        for (name, raw) in pending {
            let (i, _) = find(&name, Some(cmd))
                .ok_or_else(|| format!("{}: unknown option {name}", command_def(cmd).name))?;
            self.apply(i, raw)?;
        }
        Ok(())
    }
}

/// Parse the arguments after the program's name. `-h`/`--help` and `-V`
/// stop the parse: what follows is not looked at (but a command's name,
/// for its help).
pub fn parse_low<I>(args: I) -> Result<LowArgs, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut low = LowArgs::default();
    // Flags of commands given before the command's name.
    let mut pending = Vec::new();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(lexopt_error)? {
        let name = match arg {
            lexopt::Arg::Value(v) if low.command.is_none() => {
                low.command_is(command_named(&v)?, std::mem::take(&mut pending))?;
                continue;
            }
            lexopt::Arg::Value(v) => {
                low.positional.push(v);
                continue;
            }
            lexopt::Arg::Long(l) => Name::Long(l.to_string()),
            lexopt::Arg::Short(c) => Name::Short(c),
        };
        let (i, flag) = find(&name, low.command).ok_or_else(|| match low.command {
            Some(c) => format!("{}: unknown option {name}", command_def(c).name),
            None => format!("unknown option {name}"),
        })?;
        let raw = match flag.value {
            Some(_) => p.value().map_err(lexopt_error)?,
            None => OsString::new(),
        };
        if low.command.is_none() && matches!(flag.scope, Scope::Commands(_)) {
            pending.push((name, raw));
            continue;
        }
        low.apply(i, raw)?;
        if low.version {
            return Ok(low);
        }
        if low.help {
            // `abupdate --help pack`: the help of the command named next.
            while low.command.is_none() {
                match p.next() {
                    Ok(Some(lexopt::Arg::Value(v))) => low.command = command_named(&v).ok(),
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => break,
                }
            }
            return Ok(low);
        }
    }
    Ok(low)
}

impl LowArgs {
    /// The line fits the command: every flag given is one it takes, the
    /// flags it needs are there, and its positional arguments are.
    pub fn check(&self, cmd: Cmd) -> Result<(), String> {
        let def = command_def(cmd);
        for &i in &self.given {
            let flag = &FLAGS[i];
            if !flag.takes(cmd) {
                return Err(format!("{}: unknown option --{}", def.name, flag.long));
            }
        }
        for flag in FLAGS.iter().filter(|f| f.required && f.takes(cmd)) {
            if !self.given.iter().any(|&i| std::ptr::eq(&FLAGS[i], flag)) {
                return Err(format!("{} needs --{}", def.name, flag.long));
            }
        }
        if let Some(extra) = self.positional.get(def.args.len()) {
            return Err(format!(
                "{}: unexpected argument \"{}\"",
                def.name,
                crate::text::show(extra.as_encoded_bytes())
            ));
        }
        if let Some(missing) = def.args.get(self.positional.len()).filter(|a| a.required) {
            return Err(format!(
                "{} needs a {} ({})",
                def.name, missing.name, missing.help
            ));
        }
        Ok(())
    }
}

/// How a flag is written in a synopsis: `[--level N]`, `--secret FILE ...`.
fn synopsis_of(flag: &Flag) -> String {
    let mut s = format!("--{}", flag.long);
    if let Some(v) = flag.value {
        s.push(' ');
        s.push_str(v);
    }
    if flag.repeat {
        s.push_str(" ...");
    }
    if flag.required {
        s
    } else {
        format!("[{s}]")
    }
}

/// A command's synopsis: its name, positional arguments and flags.
fn synopsis(def: &CommandDef) -> Vec<String> {
    let mut words = vec![def.name.to_string()];
    for a in def.args {
        words.push(if a.required {
            a.name.to_string()
        } else {
            format!("[{}]", a.name)
        });
    }
    words.extend(
        FLAGS
            .iter()
            .filter(|f| matches!(f.scope, Scope::Commands(_)) && f.takes(def.cmd))
            .map(synopsis_of),
    );
    words
}

/// Words joined into lines of at most `width` columns after `first`,
/// continuation lines indented by `indent`.
fn wrap(words: &[String], first: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    for w in words {
        let sep = if line.is_empty() || line.ends_with(' ') {
            ""
        } else {
            " "
        };
        if !line.trim().is_empty() && line.len() + sep.len() + w.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = " ".repeat(indent);
        } else {
            line.push_str(sep);
        }
        line.push_str(w);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// Lines of the usage text are at most this wide.
const WIDTH: usize = 80;
/// Where the help of an option starts.
const HELP_COLUMN: usize = 28;

const TOP: &str = "usage: abupdate [--config FILE] [--json] [--quiet] COMMAND";
const EXIT_CODES: &str =
    "exit codes: 0 ok, 1 error, 2 usage or config error, 100 update available (check)\n";

fn options_text(flags: impl Iterator<Item = &'static Flag>) -> String {
    let mut out = String::new();
    for f in flags {
        let mut name = match f.short {
            Some(c) => format!("  -{c}, --{}", f.long),
            None => format!("      --{}", f.long),
        };
        if let Some(v) = f.value {
            name.push(' ');
            name.push_str(v);
        }
        let words: Vec<String> = f.help.split(' ').map(str::to_string).collect();
        // The help in a column of its own (after a separating space).
        if name.len() >= HELP_COLUMN {
            out.push_str(&name);
            out.push('\n');
            name.clear();
        }
        out.push_str(&wrap(
            &words,
            &format!("{name:<HELP_COLUMN$}"),
            HELP_COLUMN,
            WIDTH,
        ));
    }
    out
}

/// The usage text: every command with its flags.
pub fn usage_text() -> String {
    let mut out = format!("{TOP}\n\n");
    for def in COMMANDS {
        out.push_str(&wrap(&synopsis(def), "  ", 6, WIDTH));
        let about: Vec<String> = def.about.split(' ').map(str::to_string).collect();
        out.push_str(&wrap(&about, "      ", 6, WIDTH));
    }
    out.push_str("\noptions of every command:\n");
    out.push_str(&options_text(
        FLAGS
            .iter()
            .filter(|f| !matches!(f.scope, Scope::Commands(_))),
    ));
    out.push_str("\n`abupdate COMMAND --help` explains a command's options.\n");
    out.push_str(EXIT_CODES);
    out
}

/// One command's help: its synopsis, arguments and options.
pub fn command_help(cmd: Cmd) -> String {
    let def = command_def(cmd);
    let prefix = "usage: abupdate [--config FILE] [--json] [--quiet]";
    let mut out = wrap(&synopsis(def), prefix, 7, WIDTH);
    out.push('\n');
    let about: Vec<String> = def.about.split(' ').map(str::to_string).collect();
    out.push_str(&wrap(&about, "", 0, WIDTH));
    if !def.args.is_empty() {
        out.push_str("\narguments:\n");
        for a in def.args {
            out.push_str(&format!(
                "  {:<width$}{}\n",
                a.name,
                a.help,
                width = HELP_COLUMN - 2
            ));
        }
    }
    let own: Vec<&Flag> = FLAGS
        .iter()
        .filter(|f| matches!(f.scope, Scope::Commands(_)) && f.takes(cmd))
        .collect();
    if !own.is_empty() {
        out.push_str("\noptions:\n");
        out.push_str(&options_text(own.into_iter()));
    }
    out.push_str("\noptions of every command:\n");
    out.push_str(&options_text(
        FLAGS.iter().filter(|f| matches!(f.scope, Scope::Global)),
    ));
    out.push_str(EXIT_CODES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The help of `--expires-days` names the bound `pack`, `channel` and
    /// the hosts apply, whatever it is set to.
    #[test]
    fn expires_days_help_names_the_bound_the_hosts_enforce() {
        let flag = FLAGS
            .iter()
            .find(|f| f.long == "expires-days")
            .expect("--expires-days");
        let max = crate::manifest::MAX_EXPIRES_DAYS;
        assert_eq!(
            flag.help,
            format!(
                "the manifest or channel expires N days after it is created (1 to {max}; default 90, channel 7)"
            )
        );
    }

    fn low(args: &[&str]) -> Result<LowArgs, String> {
        parse_low(args.iter().copied())
    }

    /// A value each metavar accepts.
    fn sample(metavar: &str) -> &'static str {
        match metavar {
            "FILE" | "DIR" | "PATH" => "/x",
            "N" | "MIB" | "M" => "10",
            "R" | "F" => "0.5",
            "P" => "5",
            "P,P,..." => "1,5,100",
            "TIME" => "2030-01-01T00:00:00Z",
            "CLASS=PATH" | "CLASS=OLD_IMAGE" => "rootfs=/x",
            "all|changed" => "changed",
            "TEXT" | "C" => "text",
            "V" => "1.2",
            "URL" => "http://127.0.0.1:9090",
            "DURATION" => "30s",
            "MATCHERS" => "region=\"eu\"",
            "LABEL" => "site",
            "NAME" => "stable",
            other => panic!("no sample value for {other}: add one"),
        }
    }

    #[test]
    fn every_command_has_its_entry_and_its_help_lists_its_flags() {
        for cmd in [
            Cmd::Help,
            Cmd::Status,
            Cmd::Check,
            Cmd::Update,
            Cmd::Install,
            Cmd::Health,
            Cmd::MarkGood,
            Cmd::MarkBad,
            Cmd::Rollback,
            Cmd::Keygen,
            Cmd::Sign,
            Cmd::Verify,
            Cmd::Fleet,
            Cmd::Pack,
        ] {
            let def = command_def(cmd);
            assert_eq!(def.cmd, cmd);
            let help = command_help(cmd);
            for f in FLAGS.iter().filter(|f| f.takes(cmd)) {
                assert!(
                    help.contains(&format!("--{}", f.long)),
                    "{cmd:?} --{}",
                    f.long
                );
            }
            assert!(usage_text().contains(&format!("  {}", def.name)));
        }
    }

    #[test]
    fn no_two_flags_answer_to_one_name_in_one_place() {
        let commands = || COMMANDS.iter().map(|d| Some(d.cmd));
        for (i, a) in FLAGS.iter().enumerate() {
            for b in FLAGS[i + 1..]
                .iter()
                .filter(|b| a.long == b.long || (a.short.is_some() && a.short == b.short))
            {
                // After a command's name, one entry per name.
                for place in commands() {
                    assert!(
                        !(a.admits(place) && b.admits(place)),
                        "{a:?} and {b:?} in {place:?}"
                    );
                }
                // Before it, a `Top` flag comes first; two commands' flags
                // of one name are resolved when the command comes, and the
                // first one decides whether a value follows.
                match (&a.scope, &b.scope) {
                    (Scope::Top, Scope::Commands(_)) => {}
                    (Scope::Commands(_), Scope::Commands(_)) => {
                        assert_eq!(a.value.is_some(), b.value.is_some(), "{a:?}")
                    }
                    _ => panic!("{a:?} and {b:?} before the command"),
                }
            }
        }
    }

    #[test]
    fn every_flag_parses_for_every_command_that_takes_it_in_both_spellings() {
        for (i, f) in FLAGS.iter().enumerate() {
            for def in COMMANDS.iter().filter(|d| f.takes(d.cmd)) {
                let mut spellings = vec![vec![def.name.to_string(), format!("--{}", f.long)]];
                if let Some(v) = f.value {
                    spellings[0].push(sample(v).to_string());
                    spellings.push(vec![
                        def.name.to_string(),
                        format!("--{}={}", f.long, sample(v)),
                    ]);
                }
                for args in spellings {
                    let l = parse_low(args.iter()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                    assert_eq!(l.command, Some(def.cmd), "{args:?}");
                    assert_eq!(l.given, vec![i], "{args:?}");
                }
            }
        }
    }

    /// Every flag given twice, in both spellings and on both sides of the
    /// command's name: added to when repeatable, else refused naming it
    /// (found from outside: `fleet --reports A --reports B` read B alone).
    #[test]
    fn a_flag_given_twice_is_refused_unless_it_repeats() {
        for (i, f) in FLAGS.iter().enumerate() {
            for def in COMMANDS.iter().filter(|d| f.takes(d.cmd)) {
                let once = |long: bool| -> Vec<String> {
                    let name = match (long, f.short) {
                        (false, Some(c)) => format!("-{c}"),
                        _ => format!("--{}", f.long),
                    };
                    let mut v = vec![name];
                    v.extend(f.value.map(|v| sample(v).to_string()));
                    v
                };
                let mut args = vec![def.name.to_string()];
                args.extend(once(true));
                args.extend(once(false));
                let parsed = parse_low(args.iter());
                match (f.repeat, f.long) {
                    // They stop the parse: what follows is not looked at.
                    (_, "help" | "version") if f.value.is_none() => {
                        assert!(parsed.is_ok(), "{args:?}")
                    }
                    (true, _) => assert_eq!(parsed.expect("repeats").given, [i, i], "{args:?}"),
                    (false, _) => assert_eq!(parsed.err(), Some(twice(f)), "{args:?}"),
                }
            }
        }
        let e = low(&["--json", "fleet", "--reports", "a", "--json"]).expect_err("twice");
        assert_eq!(e, "--json given twice");
        let e = low(&["fleet", "--reports", "a", "--reports=b"]).expect_err("twice");
        assert_eq!(
            e,
            "--reports given twice: it takes one value, and the second would replace the first"
        );
    }

    /// A rollout percentage is refused at the flag, naming it, when it is
    /// no percentage; `-0` is written as 0, never as a signed zero.
    #[test]
    fn a_percentage_flag_takes_0_to_100_and_minus_zero_is_zero() {
        let l = low(&["pack", "--percent", "-0", "--start-percentage", "12.5"]).expect("parse");
        assert_eq!(l.percent.map(f64::to_bits), Some(0.0f64.to_bits()));
        assert_eq!(l.start_percentage, Some(12.5));
        for bad in ["-1", "100.5", "NaN", "inf", "-inf", "five"] {
            let e = low(&["pack", "--percent", bad]).expect_err(bad);
            assert!(e.starts_with("--percent"), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_flag_of_another_command_is_refused_by_name() {
        let l = low(&["check", "--no-reboot"]);
        assert_eq!(
            l.err().as_deref(),
            Some("check: unknown option --no-reboot")
        );
        // Before the command's name it is found, and refused once the
        // command is known.
        assert_eq!(
            low(&["--no-reboot", "check"]).err().as_deref(),
            Some("check: unknown option --no-reboot")
        );
        // One name, two commands' flags: each command gets its own.
        let l = low(&["--force", "--secret", "s", "keygen"]).expect("parse");
        assert_eq!(l.check(Cmd::Keygen), Err("keygen needs --public".into()));
        assert!(l.force && l.secret == [PathBuf::from("s")]);
        let l = low(&["--secret", "a", "--secret", "b", "pack"]).expect("parse");
        assert_eq!(l.secret, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(
            low(&["--bogus"]).err().as_deref(),
            Some("unknown option --bogus")
        );
    }

    #[test]
    fn required_flags_and_positionals_are_named() {
        let l = low(&["keygen", "--public", "p"]).expect("parse");
        assert_eq!(l.check(Cmd::Keygen), Err("keygen needs --secret".into()));
        let l = low(&["install"]).expect("parse");
        assert_eq!(
            l.check(Cmd::Install),
            Err("install needs a SOURCE (manifest URL or path)".into())
        );
        let l = low(&["status", "extra"]).expect("parse");
        assert_eq!(
            l.check(Cmd::Status),
            Err("status: unexpected argument \"extra\"".into())
        );
        // Shown byte for byte, nothing a terminal acts on.
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"a\xff\x1b[31m");
        let l = parse_low([OsStr::new("status"), odd]).expect("parse");
        assert_eq!(
            l.check(Cmd::Status),
            Err("status: unexpected argument \"a\\xff\\x1b[31m\"".into())
        );
        assert_eq!(
            low(&["keygen", "--secret"]).err().as_deref(),
            Some("--secret needs a value")
        );
        assert_eq!(
            low(&["update", "--now=yes"]).err().as_deref(),
            Some("--now takes no value")
        );
    }

    #[test]
    fn version_is_abupdates_before_the_command_and_the_releases_after() {
        assert!(low(&["--version"]).expect("parse").version);
        assert!(low(&["-V", "pack"]).expect("parse").version);
        let l = low(&["pack", "--version", "1.2"]).expect("parse");
        assert!(!l.version);
        assert_eq!(l.release_version.as_deref(), Some("1.2"));
        assert!(low(&["pack", "-V"]).is_err());
    }

    #[test]
    fn help_names_the_command_before_or_after_it() {
        let l = low(&["install", "--help", "--bogus"]).expect("parse");
        assert!(l.help && l.command == Some(Cmd::Install));
        let l = low(&["-h", "--json", "pack"]).expect("parse");
        assert!(l.help && l.command == Some(Cmd::Pack));
    }

    #[test]
    fn values_that_are_paths_stay_bytes_and_text_must_be_utf8() {
        let odd = OsString::from_vec(b"/tmp/\xff.key".to_vec());
        let l = parse_low([OsString::from("sign"), "--secret".into(), odd.clone()]).expect("parse");
        assert_eq!(l.secret, vec![PathBuf::from(odd.clone())]);
        let l = parse_low([OsString::from("pack"), "--image".into(), {
            let mut v = OsString::from("rootfs=");
            v.push(&odd);
            v
        }])
        .expect("parse");
        assert_eq!(l.image, vec![("rootfs".into(), PathBuf::from(odd.clone()))]);
        let e =
            parse_low([OsString::from("pack"), "--compatible".into(), odd]).expect_err("not text");
        assert_eq!(e, "--compatible /tmp/\\xff.key: not UTF-8 text");
    }

    #[test]
    fn range_checked_values_say_the_range() {
        assert_eq!(
            low(&["pack", "--segment-size=0"]).err().as_deref(),
            Some("--segment-size 0: give 1 to 1024 (MiB)")
        );
        assert_eq!(
            low(&["fleet", "--threshold", "18"]).err().as_deref(),
            Some("--threshold 18: give 1 to 17")
        );
        assert_eq!(
            low(&["pack", "--level", "x"]).err().as_deref(),
            Some("--level: \"x\" is not a number")
        );
        assert_eq!(
            low(&["install", "s", "--write=some"]).err().as_deref(),
            Some("--write: \"some\" is not all or changed")
        );
    }
}
