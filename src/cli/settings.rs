//! The typed settings of each command, made from the parsed line.
//!
//! Invariant: a [`Command`] is complete and consistent before anything is
//! run: every flag it holds is one its command takes, required ones are
//! there, and defaults are applied here, in one place per command.

use super::flags::{self, Cmd, LowArgs};
use crate::agent::InstallOptions;
use crate::install::WriteMode;
use crate::manifest::Rollout;
use crate::pack::PackOptions;
use crate::slot::SlotName;
use std::ffi::OsString;
use std::path::PathBuf;

/// The flags every command takes.
#[derive(Clone, Debug, Default)]
pub struct Global {
    /// `--config FILE` (default `/etc/abupdate/config.toml`).
    pub config: Option<PathBuf>,
    /// `--json`: results and errors as stable JSON on stdout.
    pub json: bool,
    /// `--quiet`: no progress or log lines.
    pub quiet: bool,
}

/// A parsed command line.
#[derive(Clone, Debug)]
pub enum Command {
    /// The usage text, or one command's help.
    Help(Option<Cmd>),
    /// `-V`/`--version`: abupdate's own version.
    Version,
    /// `status`.
    Status,
    /// `check [SOURCE]`.
    Check {
        /// The manifest URL or path (default: the config's `update.url`).
        source: Option<String>,
        /// `--allow-downgrade`: a release older than the booted one applies too.
        allow_downgrade: bool,
    },
    /// `update`: what the timer runs.
    Update {
        /// `--no-reboot`: stage, but do not reboot.
        no_reboot: bool,
        /// `--now`: skip the jitter and any backoff after failures.
        now: bool,
    },
    /// `install SOURCE`.
    Install {
        /// The manifest URL or path.
        source: String,
        /// How to write and whether to reboot.
        opts: InstallOptions,
    },
    /// `health`: the boot-time verdict.
    Health {
        /// `--no-reboot`: after a failed trial, mark and flip but do not reboot.
        no_reboot: bool,
    },
    /// `mark-good [SLOT]` (`good`) or `mark-bad [SLOT]`.
    Mark {
        /// The slot to mark (default: the booted one).
        slot: Option<SlotName>,
        /// `true` for `mark-good`.
        good: bool,
        /// `--force`: even when no slot holding a proven good system would
        /// stay bootable.
        force: bool,
    },
    /// `rollback`.
    Rollback {
        /// `--no-reboot`: flip, but do not reboot.
        no_reboot: bool,
        /// `--force`: even to a slot that does not hold a proven good system.
        force: bool,
    },
    /// `keygen`.
    Keygen {
        /// `--secret FILE`: where the secret key is written.
        secret: PathBuf,
        /// `--public FILE`: where the public key is written.
        public: PathBuf,
        /// `--force`: overwrite existing key files.
        force: bool,
    },
    /// `sign FILE`.
    Sign {
        /// `--secret FILE`: the secret key that signs.
        secret: PathBuf,
        /// The file to sign (`FILE.minisig` is written next to it).
        file: PathBuf,
        /// `--trusted-comment`: the signed comment (default: time and file name).
        trusted_comment: Option<String>,
    },
    /// `verify FILE`.
    Verify {
        /// `--public FILE`: the key the signature must be made with.
        public: PathBuf,
        /// The signed file (its signature: `FILE.minisig`).
        file: PathBuf,
    },
    /// `pack`: a signed release directory from images.
    Pack(Box<PackOptions>),
    /// `fleet`: the operator's rollout controller.
    Fleet(Box<FleetOptions>),
    /// `channel`: the operator's edit of a release channel.
    Channel(Box<crate::channel::Options>),
}

/// Options of `fleet`, the operator's rollout control.
pub use crate::fleet::controller::Options as FleetOptions;

/// A positional argument that is a word or a URL.
fn text(cmd: Cmd, v: &OsString) -> Result<String, String> {
    v.clone().into_string().map_err(|v| {
        format!(
            "{}: \"{}\" is not UTF-8 text",
            flags::command_def(cmd).name,
            flags::shown(&v)
        )
    })
}

/// A SOURCE: a URL, or a local path, which is bytes: one that is not UTF-8
/// text is named by a `file://` URL of its exact bytes (a location is text).
/// A local path is the file it names (`std::fs::canonicalize`: the current
/// directory joined, `.`, `..` and links resolved; made absolute only when
/// there is none), so the records kept of a source (its newest
/// `created`, what a replay is judged against) are of the file it names,
/// not of its spelling: `releases/release.json` typed in two directories
/// was one source, and the second was refused as a replay of the first
/// (found from outside, stop 58).
fn source(cmd: Cmd, v: &OsString) -> Result<String, String> {
    let bytes = v.as_encoded_bytes();
    let scheme = bytes.iter().position(|&b| b == b':').is_some_and(|i| {
        i > 0
            && bytes[0].is_ascii_alphabetic()
            && bytes[..i]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(b))
    });
    if scheme {
        // A URL is text: one that is not is refused.
        return text(cmd, v);
    }
    // The file itself where it can be named (`..` and links resolved),
    // else the path made absolute: a missing file fails as itself later.
    let absolute = std::fs::canonicalize(v)
        .or_else(|_| std::path::absolute(v))
        .map_err(|e| {
            format!(
                "{}: {}: a relative path, and the current directory: {e}",
                flags::command_def(cmd).name,
                crate::text::show(v.as_encoded_bytes())
            )
        })?;
    Ok(match absolute.to_str() {
        Some(text) => text.to_string(),
        None => crate::fetch::file_url_of(&absolute),
    })
}

/// The typed command of a parsed line (`Err`: the usage error's message).
pub fn command(mut low: LowArgs) -> Result<(Global, Command), String> {
    let global = Global {
        config: low.config.take(),
        json: low.json,
        quiet: low.quiet,
    };
    if low.version {
        return Ok((global, Command::Version));
    }
    if low.help {
        return Ok((
            global,
            Command::Help(low.command.filter(|&c| c != Cmd::Help)),
        ));
    }
    // No command is a usage error (exit 2), as a mistyped one is: a
    // script that lost its argument must not read success (found from
    // outside, stop 48). `abupdate help` prints the usage.
    let Some(cmd) = low.command else {
        return Err("no command given (`abupdate help` lists them)".into());
    };
    low.check(cmd)?;
    let first = low.positional.first();
    let required = |v: Option<PathBuf>| v.unwrap_or_default();
    let command = match cmd {
        Cmd::Help => Command::Help(
            first
                .map(|name| {
                    flags::COMMANDS
                        .iter()
                        .find(|d| std::ffi::OsStr::new(d.name) == name)
                        .map(|d| d.cmd)
                        .ok_or_else(|| format!("help: unknown command \"{}\"", flags::shown(name)))
                })
                .transpose()?,
        ),
        Cmd::Status => Command::Status,
        Cmd::Check => Command::Check {
            source: first.map(|s| source(cmd, s)).transpose()?,
            allow_downgrade: low.allow_downgrade,
        },
        Cmd::Update => Command::Update {
            no_reboot: low.no_reboot,
            now: low.now,
        },
        Cmd::Install => Command::Install {
            // `check` made sure it is there.
            source: first
                .map(|s| source(cmd, s))
                .transpose()?
                .unwrap_or_default(),
            opts: InstallOptions {
                allow_downgrade: low.allow_downgrade,
                no_reboot: low.no_reboot,
                write_mode: low.write.unwrap_or(WriteMode::All),
                quiet: global.quiet,
                respect_windows: false,
            },
        },
        Cmd::Health => Command::Health {
            no_reboot: low.no_reboot,
        },
        Cmd::MarkGood | Cmd::MarkBad => Command::Mark {
            slot: first
                .map(|s| text(cmd, s)?.parse::<SlotName>())
                .transpose()?,
            good: cmd == Cmd::MarkGood,
            force: low.force,
        },
        Cmd::Rollback => Command::Rollback {
            no_reboot: low.no_reboot,
            force: low.force,
        },
        Cmd::Keygen => Command::Keygen {
            secret: low.secret.pop().unwrap_or_default(),
            public: required(low.public),
            force: low.force,
        },
        Cmd::Sign => Command::Sign {
            secret: low.secret.pop().unwrap_or_default(),
            file: first.map(PathBuf::from).unwrap_or_default(),
            trusted_comment: low.trusted_comment,
        },
        Cmd::Verify => Command::Verify {
            public: required(low.public),
            file: first.map(PathBuf::from).unwrap_or_default(),
        },
        Cmd::Pack => Command::Pack(Box::new(pack(low)?)),
        Cmd::Fleet => Command::Fleet(Box::new(fleet(low)?)),
        Cmd::Channel => Command::Channel(Box::new(channel(low)?)),
    };
    Ok((global, command))
}

fn pack(low: LowArgs) -> Result<PackOptions, String> {
    // Found from outside: the date won, and a release meant to expire in
    // 5 days (the freeze an attacker may hold hosts in) ran 25.
    if let (Some(_), Some(days)) = (low.expires, low.expires_days) {
        return Err(format!(
            "--expires and --expires-days {days} both say when the release expires: give one"
        ));
    }
    let rollout_given = low.percent.is_some()
        || low.rollout_start.is_some()
        || low.start_percentage.is_some()
        || low.duration_minutes.is_some()
        || low.paused
        || low.waves.is_some();
    Ok(PackOptions {
        secret_keys: low.secret,
        compatible: low.compatible.unwrap_or_default(),
        track: low.track,
        version: low.release_version.unwrap_or_default(),
        images: low.image,
        out: low.out.unwrap_or_default(),
        created: low.created,
        expires: low.expires,
        expires_days: low.expires_days.unwrap_or(90),
        level: match low.no_compress {
            true => None,
            false => Some(low.level.unwrap_or(19)),
        },
        window_log: low.window_log,
        rollout: rollout_given.then_some(Rollout {
            start: low.rollout_start,
            start_percentage: low.start_percentage,
            duration_minutes: low.duration_minutes,
            // The waves' first is the starting percentage unless one is given.
            percent: low
                .percent
                .or_else(|| low.waves.as_ref().and_then(|w| w.first().copied())),
            paused: low.paused,
            waves: low.waves,
            wave_started: None,
        }),
        segment_size: low.segment_size,
        one_frame: low.one_frame,
        delta_from: low.delta_from,
        delta_level: low.delta_level.unwrap_or(9),
        delta_window_log: low
            .delta_window_log
            .unwrap_or(crate::pack::MAX_DELTA_WINDOW_LOG),
    })
}

/// A host build edits no channel: its parsing stays out of the binary.
#[cfg(not(feature = "pack"))]
fn channel(_: LowArgs) -> Result<crate::channel::Options, String> {
    Err(
        "this abupdate is a host build without `channel`; use a build with the `pack` feature"
            .into(),
    )
}

#[cfg(feature = "pack")]
fn channel(low: LowArgs) -> Result<crate::channel::Options, String> {
    use crate::channel::Action;
    let word = |i: usize| {
        low.positional
            .get(i)
            .map(|a| a.to_string_lossy().into_owned())
    };
    let arg = word(2);
    let action = match (word(0).as_deref(), arg) {
        (Some("add"), Some(_)) => Action::Add {
            manifest: PathBuf::from(&low.positional[2]),
            barrier: low.barrier,
            pin: low.pin,
        },
        (Some("withdraw"), Some(v)) => Action::Withdraw(v),
        (Some("prune"), Some(v)) => Action::Prune(v),
        (Some("unpin"), Some(v)) => Action::Unpin(v),
        (Some("pin"), Some(v)) => Action::Pin(v),
        (Some(a @ ("pin" | "unpin")), None) => {
            return Err(format!("channel {a} needs the version (ARG)"))
        }
        (Some("add"), None) => return Err("channel add needs the release.json (ARG)".into()),
        (Some(a @ ("withdraw" | "prune")), None) => {
            return Err(format!("channel {a} needs the version (ARG)"))
        }
        (Some("halt"), None) => Action::Halt,
        (Some("resume"), None) => Action::Resume,
        (Some("resign"), None) => Action::Resign,
        (Some(a @ ("halt" | "resume" | "resign")), Some(x)) => {
            return Err(format!("channel {a}: unexpected argument {x:?}"))
        }
        (a, _) => {
            return Err(format!(
            "channel: unknown action {:?} (add, withdraw, prune, pin, unpin, halt, resume, resign)",
            a.unwrap_or_default()
        ))
        }
    };
    if (low.barrier || low.pin) && !matches!(action, Action::Add { .. }) {
        return Err("--barrier and --pin are for channel add".into());
    }
    let expires_days = low.expires_days.unwrap_or(7);
    // The hosts' limit: a longer channel would be refused everywhere.
    let max = crate::manifest::MAX_EXPIRES_DAYS;
    if !(1..=max).contains(&expires_days) {
        return Err(format!("--expires-days {expires_days}: give 1 to {max}"));
    }
    Ok(crate::channel::Options {
        action,
        file: low.positional.get(1).map(PathBuf::from).unwrap_or_default(),
        secrets: low.secret,
        keys_dirs: low.keys,
        threshold: low.threshold.unwrap_or(1),
        expires_days,
        track: low.track,
    })
}

fn fleet(low: LowArgs) -> Result<FleetOptions, String> {
    use crate::fleet::controller::Source;
    low.policy.check()?;
    let given = |f: &str| {
        low.given
            .iter()
            .any(|&i| flags::FLAGS[i].long == f && flags::FLAGS[i].takes(Cmd::Fleet))
    };
    let source = match (low.prometheus, low.reports) {
        (Some(url), None) => {
            if given("fleet-size") {
                return Err("--fleet-size is for --reports; Prometheus counts the hosts".into());
            }
            Source::Prometheus {
                url,
                selector: low.selector,
                timeout: low
                    .query_timeout
                    .unwrap_or(std::time::Duration::from_secs(30)),
                host_label: low
                    .host_label
                    .unwrap_or_else(|| crate::fleet::prometheus::DEFAULT_HOST_LABEL.into()),
                ca_file: low.prometheus_ca,
                max_skew: low
                    .max_clock_skew
                    .unwrap_or(crate::fleet::clock::DEFAULT_MAX_SKEW),
            }
        }
        (None, Some(path)) => {
            for f in [
                "selector",
                "query-timeout",
                "host-label",
                "prometheus-ca",
                "max-clock-skew",
            ] {
                if given(f) {
                    return Err(format!("--{f} is for --prometheus"));
                }
            }
            Source::Reports(path)
        }
        (Some(_), Some(_)) => {
            return Err("fleet takes --prometheus URL or --reports PATH, not both".into())
        }
        (None, None) => return Err("fleet needs --prometheus URL (or --reports PATH)".into()),
    };
    Ok(FleetOptions {
        manifest: low.manifest.unwrap_or_default(),
        secrets: low.secret,
        keys_dirs: low.keys,
        threshold: low.threshold.unwrap_or(1),
        source,
        policy: low.policy,
        dry_run: low.dry_run,
        out: low.out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<(Global, Command), String> {
        command(flags::parse_low(args.iter().copied())?)
    }

    #[test]
    fn parses_globals_and_commands() {
        let (g, c) = p(&["--config", "/x.toml", "--json", "check"]).expect("parse");
        assert_eq!(g.config, Some(PathBuf::from("/x.toml")));
        assert!(g.json);
        assert!(matches!(
            c,
            Command::Check {
                source: None,
                allow_downgrade: false
            }
        ));
        let (g, c) = p(&[
            "install",
            "http://h/r.json",
            "--no-reboot",
            "--write=changed",
            "-q",
            "-c/y.toml",
        ])
        .expect("parse");
        assert_eq!(g.config, Some(PathBuf::from("/y.toml")));
        match c {
            Command::Install { source, opts } => {
                assert_eq!(source, "http://h/r.json");
                assert!(opts.no_reboot && opts.quiet);
                assert_eq!(opts.write_mode, WriteMode::Changed);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p(&["mark-bad", "B"]).expect("parse").1,
            Command::Mark {
                slot: Some(SlotName::B),
                good: false,
                force: false
            }
        ));
        // Flags before the command's name count too.
        assert!(matches!(
            p(&["--no-reboot", "update", "--now"]).expect("parse").1,
            Command::Update {
                no_reboot: true,
                now: true
            }
        ));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(
            p(&[]).err().as_deref(),
            Some("no command given (`abupdate help` lists them)")
        );
        assert!(p(&["--json"]).is_err());
        assert!(matches!(
            p(&["help"]).expect("parse").1,
            Command::Help(None)
        ));
        assert!(matches!(
            p(&["help", "pack"]).expect("parse").1,
            Command::Help(Some(Cmd::Pack))
        ));
        assert!(matches!(
            p(&["fleet", "--help"]).expect("parse").1,
            Command::Help(Some(Cmd::Fleet))
        ));
        assert!(matches!(p(&["-V"]).expect("parse").1, Command::Version));
        assert!(p(&["help", "frobnicate"]).is_err());
    }

    /// A `pack` line with every flag it needs, and `extra`.
    fn pack_line<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let needed = [
            "pack",
            "--secret",
            "k",
            "--compatible",
            "c",
            "--version",
            "1.2",
            "--image",
            "rootfs=/a",
            "--out",
            "o",
        ];
        [&needed[..], extra].concat()
    }

    #[test]
    fn pack_refuses_two_expiries() {
        let e = p(&pack_line(&[
            "--expires-days",
            "5",
            "--expires",
            "2027-01-01T00:00:00Z",
        ]))
        .map(|_| ())
        .expect_err("two expiries");
        assert_eq!(
            e,
            "--expires and --expires-days 5 both say when the release expires: give one"
        );
    }

    #[test]
    fn pack_collects_images_and_rollout_with_defaults() {
        let (_, c) = p(&pack_line(&["--image=boot=/b=c", "--percent", "5"])).expect("parse");
        let Command::Pack(o) = c else {
            panic!("not pack")
        };
        assert_eq!(
            o.images,
            vec![
                ("rootfs".to_string(), PathBuf::from("/a")),
                ("boot".to_string(), PathBuf::from("/b=c"))
            ]
        );
        assert_eq!(o.version, "1.2");
        assert_eq!(o.rollout.and_then(|r| r.percent), Some(5.0));
        assert_eq!(o.level, Some(19));
        assert_eq!(o.expires_days, 90);
        assert_eq!(o.delta_level, 9);
        assert_eq!(o.delta_window_log, crate::pack::MAX_DELTA_WINDOW_LOG);
        let (_, c) = p(&[
            "pack",
            "--secret",
            "k",
            "--secret",
            "k2",
            "--compatible",
            "c",
            "--version",
            "1",
            "--out",
            "o",
            "--image",
            "rootfs=/a",
            "--no-compress",
            "--segment-size",
            "2",
        ])
        .expect("parse");
        let Command::Pack(o) = c else {
            panic!("not pack")
        };
        assert_eq!(o.secret_keys.len(), 2);
        assert_eq!(o.level, None);
        assert_eq!(o.segment_size, Some(2 << 20));
        assert!(o.rollout.is_none());
    }

    #[test]
    fn fleet_policy_from_flags() {
        let (_, c) = p(&[
            "fleet",
            "--manifest",
            "m",
            "--secret",
            "k",
            "--reports",
            "r",
            "--waves",
            "1,5,25,100",
            "--fleet-size",
            "100",
            "--max-failure-rate",
            "0.1",
            "--keys",
            "d1",
            "--keys",
            "d2",
            "--threshold",
            "2",
            "--dry-run",
        ])
        .expect("parse");
        let Command::Fleet(o) = c else {
            panic!("not fleet")
        };
        assert_eq!(o.policy.waves, vec![1.0, 5.0, 25.0, 100.0]);
        assert_eq!(o.policy.fleet_size, Some(100));
        assert_eq!(o.policy.max_failure_rate, 0.1);
        assert_eq!(o.policy.max_failures, 5);
        assert_eq!(o.keys_dirs.len(), 2);
        assert_eq!(o.threshold, 2);
        assert!(o.dry_run);
    }

    /// Each bounded duration flag of `fleet` at and past its edges: the
    /// edge taken, past it one line naming the flag and its bound.
    #[test]
    fn fleet_duration_flags_take_their_edges_and_name_their_bounds_past_them() {
        use crate::fleet::controller::Source;
        use std::time::Duration;
        let parsed = |flag: &str, value: &str| {
            let args = ["fleet", "--manifest", "m", "--secret", "k"];
            let given = ["--prometheus", "http://p", flag, value];
            match p(&[&args[..], &given[..]].concat()).map(|(_, c)| c) {
                Ok(Command::Fleet(o)) => match o.source {
                    Source::Prometheus {
                        timeout, max_skew, ..
                    } => Ok((timeout, max_skew)),
                    other => panic!("{other:?}"),
                },
                Ok(_) => panic!("not fleet"),
                Err(e) => Err(e),
            }
        };
        let skew = crate::fleet::clock::DEFAULT_MAX_SKEW;
        let s = Duration::from_secs;
        let bound = "more than 0, at most 10m";
        for (flag, value, want) in [
            ("--query-timeout", "10m", Ok((s(600), skew))),
            (
                "--query-timeout",
                "1ms",
                Ok((Duration::from_millis(1), skew)),
            ),
            (
                "--query-timeout",
                "0s",
                Err(format!("--query-timeout 0s: {bound}")),
            ),
            (
                "--query-timeout",
                "601s",
                Err(format!("--query-timeout 601s: {bound}")),
            ),
            (
                "--query-timeout",
                "soon",
                Err("--query-timeout: not a duration".into()),
            ),
            ("--max-clock-skew", "0s", Ok((s(30), s(0)))),
            ("--max-clock-skew", "1h", Ok((s(30), s(3600)))),
            (
                "--max-clock-skew",
                "3601s",
                Err("--max-clock-skew 3601s: at most 1h".into()),
            ),
        ] {
            match (parsed(flag, value), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{flag} {value}"),
                (Err(e), Err(says)) => assert!(e.starts_with(&says), "{flag} {value}: {e}"),
                (got, want) => panic!("{flag} {value}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn fleet_names_hosts_by_instance_unless_told_and_refuses_a_label_it_sets_itself() {
        let fleet = |extra: &[&str]| {
            let mut args = vec!["fleet", "--manifest", "m", "--secret", "k"];
            args.extend_from_slice(extra);
            p(&args).map(|(_, c)| c)
        };
        let source = |extra: &[&str]| match fleet(extra).expect("parse") {
            Command::Fleet(o) => o.source,
            _ => panic!("not fleet"),
        };
        match source(&["--prometheus", "http://p:9090"]) {
            crate::fleet::controller::Source::Prometheus {
                host_label,
                ca_file,
                max_skew,
                ..
            } => assert_eq!(
                (host_label.as_str(), ca_file, max_skew),
                ("instance", None, crate::fleet::clock::DEFAULT_MAX_SKEW)
            ),
            other => panic!("{other:?}"),
        }
        match source(&["--prometheus", "http://p", "--max-clock-skew", "5m"]) {
            crate::fleet::controller::Source::Prometheus { max_skew, .. } => {
                assert_eq!(max_skew, std::time::Duration::from_secs(300))
            }
            other => panic!("{other:?}"),
        }
        match source(&[
            "--prometheus",
            "https://p",
            "--host-label",
            "site",
            "--prometheus-ca",
            "/ca.pem",
        ]) {
            crate::fleet::controller::Source::Prometheus {
                host_label,
                ca_file,
                ..
            } => assert_eq!(
                (host_label.as_str(), ca_file),
                ("site", Some(PathBuf::from("/ca.pem")))
            ),
            other => panic!("{other:?}"),
        }
        for (bad, says) in [
            (
                vec!["--prometheus", "http://p", "--host-label", "release"],
                "--host-label",
            ),
            (
                vec!["--prometheus", "http://p", "--host-label", "a-b"],
                "--host-label",
            ),
            (
                vec!["--reports", "r", "--host-label", "site"],
                "is for --prometheus",
            ),
            (
                vec!["--reports", "r", "--prometheus-ca", "c"],
                "is for --prometheus",
            ),
            (
                vec!["--reports", "r", "--max-clock-skew", "2m"],
                "is for --prometheus",
            ),
            (
                vec!["--prometheus", "http://p", "--max-clock-skew", "2h"],
                "--max-clock-skew 2h: at most 1h",
            ),
            (
                vec!["--prometheus", "http://p", "--max-clock-skew", "soon"],
                "--max-clock-skew: not a duration",
            ),
        ] {
            let e = fleet(&bad).map(|_| ()).expect_err("refused");
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
