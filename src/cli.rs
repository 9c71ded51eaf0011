//! The command line: arguments are parsed into a plain [`Command`] with no
//! side effects, then run. Exit codes: 0 ok, 1 error, 2 usage or config
//! error, 100 update available (`check`).

use crate::agent::{
    self, CheckOptions, CheckOutcome, Host, InstallOptions, UpdateOptions, UpdateOutcome, Verdict,
};
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::install::WriteMode;
use crate::manifest::Rollout;
use crate::pack::PackOptions;
use crate::slot::SlotName;
use crate::timefmt::parse_rfc3339;
use crate::trust::minisign;
use std::path::PathBuf;

pub const EXIT_UPDATE_AVAILABLE: i32 = 100;

const USAGE: &str = "\
usage: abupdate [--config FILE] [--json] [--quiet] COMMAND

  status                      slots, booted slot, versions, bootloader view, pending trial
  check [SOURCE]              fetch + verify the manifest; exit 100 = update applies, 0 = none
  update [--no-reboot]        check, then install and reboot when one applies
  install SOURCE [--no-reboot] [--allow-downgrade] [--write=all|changed]
                              manifest URL or path: download, verify, write, stage
  health [--no-reboot]        run the checks; commit or roll back a trial; re-bless otherwise
  mark-good [SLOT] | mark-bad [SLOT]
  rollback [--no-reboot] [--force]
  keygen --secret FILE --public FILE
  sign --secret FILE [--trusted-comment TEXT] FILE
  verify --public FILE FILE   checks FILE.minisig
  fleet --manifest FILE --secret FILE [--secret ...] [--keys DIR ...] [--threshold N]
        (--prometheus URL [--selector 'name=\"value\",...'] [--query-timeout 30s]
         | --reports PATH [--fleet-size N])
        [--max-failures N] [--max-failure-rate R] [--min-reports N] [--advance-when F]
        [--soak DURATION] [--waves 1,5,25,100] [--out DIR] [--dry-run]
                              operator: pause or advance a rollout from the fleet's metrics
                              (or the webhook's reports): verified first with the hosts'
                              keys, else the secrets' own; re-signed by the keys that signed
                              it; waves from the manifest's rollout.waves
  pack --secret FILE [--secret ...] --compatible C --version V --image CLASS=PATH [--image ...]
       --out DIR [--expires-days N | --expires TIME] [--created TIME]
       [--level N | --no-compress] [--window-log N] [--percent P]
       [--rollout-start TIME --start-percentage P --duration-minutes M] [--paused]
       [--waves 2,10,50,100]  the fleet controller's waves (starts at the first)
       [--segment-size MIB] [--delta-from CLASS=OLD_IMAGE ...] [--delta-level N]
       [--delta-window-log N]    30: deltas 32-bit hosts can apply (default 31)

exit codes: 0 ok, 1 error, 2 usage or config error, 100 update available (check)
";

/// Global flags.
#[derive(Clone, Debug, Default)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

/// A parsed command line.
#[derive(Clone, Debug)]
pub enum Command {
    Help,
    Version,
    Status,
    Check {
        source: Option<String>,
        allow_downgrade: bool,
    },
    Update {
        no_reboot: bool,
        now: bool,
    },
    Install {
        source: String,
        opts: InstallOptions,
    },
    Health {
        no_reboot: bool,
    },
    Mark {
        slot: Option<SlotName>,
        good: bool,
    },
    Rollback {
        no_reboot: bool,
        force: bool,
    },
    Keygen {
        secret: PathBuf,
        public: PathBuf,
        force: bool,
    },
    Sign {
        secret: PathBuf,
        file: PathBuf,
        trusted_comment: Option<String>,
    },
    Verify {
        public: PathBuf,
        file: PathBuf,
    },
    Pack(Box<PackOptions>),
    Fleet(Box<FleetOptions>),
}

/// Options of `fleet`, the operator's rollout control.
pub use crate::fleet::controller::Options as FleetOptions;

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{} (see abupdate --help)", msg.into()))
}

struct Args {
    items: std::vec::IntoIter<String>,
}

impl Args {
    fn value(&mut self, flag: &str) -> Result<String> {
        self.items
            .next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))
    }
}

/// Split `--flag=value` into two items so one loop handles both spellings.
fn normalise(argv: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for a in argv {
        match a.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                out.push(flag.to_string());
                out.push(value.to_string());
            }
            _ => out.push(a),
        }
    }
    out
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| usage(format!("{flag}: {v:?} is not a number")))
}

fn time(flag: &str, v: &str) -> Result<i64> {
    parse_rfc3339(v).map_err(|e| usage(format!("{flag}: {e}")))
}

/// Parse the arguments after the program name.
pub fn parse(argv: Vec<String>) -> Result<(Global, Command)> {
    let mut args = Args {
        items: normalise(argv).into_iter(),
    };
    let mut global = Global::default();
    let mut positional: Vec<String> = Vec::new();
    let mut command: Option<String> = None;
    // Flags of every command; which are allowed is checked per command.
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    const WITH_VALUE: &[&str] = &[
        "--secret",
        "--public",
        "--trusted-comment",
        "--compatible",
        "--version",
        "--image",
        "--out",
        "--expires-days",
        "--expires",
        "--created",
        "--level",
        "--window-log",
        "--percent",
        "--rollout-start",
        "--start-percentage",
        "--duration-minutes",
        "--write",
        "--segment-size",
        "--delta-from",
        "--delta-level",
        "--delta-window-log",
        "--manifest",
        "--reports",
        "--max-failures",
        "--max-failure-rate",
        "--min-reports",
        "--waves",
        "--fleet-size",
        "--advance-when",
        "--keys",
        "--threshold",
        "--prometheus",
        "--selector",
        "--query-timeout",
        "--soak",
    ];
    while let Some(a) = args.items.next() {
        match a.as_str() {
            "--config" | "-c" => global.config = Some(args.value(&a)?.into()),
            "--json" => global.json = true,
            "--quiet" | "-q" => global.quiet = true,
            "-h" | "--help" => return Ok((global, Command::Help)),
            "-V" if command.is_none() => return Ok((global, Command::Version)),
            "--version" if command.is_none() => return Ok((global, Command::Version)),
            f if f.starts_with('-') && f.len() > 1 => {
                let value = if WITH_VALUE.contains(&f) {
                    Some(args.value(f)?)
                } else {
                    None
                };
                flags.push((f.to_string(), value));
            }
            _ if command.is_none() => command = Some(a),
            _ => positional.push(a),
        }
    }
    let Some(command) = command else {
        return Ok((global, Command::Help));
    };
    let allowed = |names: &[&str]| -> Result<()> {
        for (f, _) in &flags {
            if !names.contains(&f.as_str()) {
                return Err(usage(format!("{command}: unknown option {f}")));
            }
        }
        Ok(())
    };
    let has = |name: &str| flags.iter().any(|(f, _)| f == name);
    let get = |name: &str| {
        flags
            .iter()
            .rev()
            .find(|(f, _)| f == name)
            .and_then(|(_, v)| v.clone())
    };
    let need = |name: &str| get(name).ok_or_else(|| usage(format!("{command} needs {name}")));
    let all = |name: &str| -> Vec<PathBuf> {
        flags
            .iter()
            .filter(|(f, _)| f == name)
            .filter_map(|(_, v)| v.as_ref().map(PathBuf::from))
            .collect()
    };
    let at_most = |n: usize| -> Result<()> {
        if positional.len() > n {
            Err(usage(format!(
                "{command}: unexpected argument {:?}",
                positional[n]
            )))
        } else {
            Ok(())
        }
    };
    let slot_arg = || -> Result<Option<SlotName>> {
        positional
            .first()
            .map(|s| s.parse::<SlotName>().map_err(usage))
            .transpose()
    };

    let cmd = match command.as_str() {
        "help" => Command::Help,
        "status" => {
            allowed(&[])?;
            at_most(0)?;
            Command::Status
        }
        "check" => {
            allowed(&["--allow-downgrade"])?;
            at_most(1)?;
            Command::Check {
                source: positional.first().cloned(),
                allow_downgrade: has("--allow-downgrade"),
            }
        }
        "update" => {
            allowed(&["--no-reboot", "--now"])?;
            at_most(0)?;
            Command::Update {
                no_reboot: has("--no-reboot"),
                now: has("--now"),
            }
        }
        "install" => {
            allowed(&["--no-reboot", "--allow-downgrade", "--write"])?;
            at_most(1)?;
            let source = positional
                .first()
                .cloned()
                .ok_or_else(|| usage("install needs a SOURCE (manifest URL or path)"))?;
            let write_mode = match get("--write").as_deref() {
                None | Some("all") => WriteMode::All,
                Some("changed") => WriteMode::Changed,
                Some(other) => {
                    return Err(usage(format!("--write: {other:?} is not all or changed")))
                }
            };
            Command::Install {
                source,
                opts: InstallOptions {
                    allow_downgrade: has("--allow-downgrade"),
                    no_reboot: has("--no-reboot"),
                    write_mode,
                    quiet: global.quiet,
                    respect_windows: false,
                },
            }
        }
        "health" => {
            allowed(&["--no-reboot"])?;
            at_most(0)?;
            Command::Health {
                no_reboot: has("--no-reboot"),
            }
        }
        "mark-good" | "mark-bad" => {
            allowed(&[])?;
            at_most(1)?;
            Command::Mark {
                slot: slot_arg()?,
                good: command == "mark-good",
            }
        }
        "rollback" => {
            allowed(&["--no-reboot", "--force"])?;
            at_most(0)?;
            Command::Rollback {
                no_reboot: has("--no-reboot"),
                force: has("--force"),
            }
        }
        "keygen" => {
            allowed(&["--secret", "--public", "--force"])?;
            at_most(0)?;
            Command::Keygen {
                secret: need("--secret")?.into(),
                public: need("--public")?.into(),
                force: has("--force"),
            }
        }
        "sign" => {
            allowed(&["--secret", "--trusted-comment"])?;
            at_most(1)?;
            let file = positional
                .first()
                .ok_or_else(|| usage("sign needs a FILE"))?;
            Command::Sign {
                secret: need("--secret")?.into(),
                file: file.into(),
                trusted_comment: get("--trusted-comment"),
            }
        }
        "verify" => {
            allowed(&["--public"])?;
            at_most(1)?;
            let file = positional
                .first()
                .ok_or_else(|| usage("verify needs a FILE"))?;
            Command::Verify {
                public: need("--public")?.into(),
                file: file.into(),
            }
        }
        "pack" => {
            allowed(&[
                "--secret",
                "--compatible",
                "--version",
                "--image",
                "--out",
                "--expires-days",
                "--expires",
                "--created",
                "--level",
                "--no-compress",
                "--window-log",
                "--percent",
                "--rollout-start",
                "--start-percentage",
                "--duration-minutes",
                "--paused",
                "--waves",
                "--segment-size",
                "--delta-from",
                "--delta-level",
                "--delta-window-log",
            ])?;
            at_most(0)?;
            let class_paths = |flag: &str| -> Result<Vec<(String, PathBuf)>> {
                let mut out = Vec::new();
                for (f, v) in flags.iter().filter(|(f, _)| f == flag) {
                    let v = v.clone().unwrap_or_default();
                    let (class, path) = v
                        .split_once('=')
                        .ok_or_else(|| usage(format!("{f} {v:?}: expected CLASS=PATH")))?;
                    out.push((class.to_string(), PathBuf::from(path)));
                }
                Ok(out)
            };
            let images = class_paths("--image")?;
            let delta_from = class_paths("--delta-from")?;
            need("--secret")?;
            let rollout_given = [
                "--percent",
                "--rollout-start",
                "--start-percentage",
                "--duration-minutes",
                "--paused",
                "--waves",
            ]
            .iter()
            .any(|f| has(f));
            // `--waves`: the fleet controller's plan, signed; the first
            // wave is the starting `percent` unless one is given.
            let waves = get("--waves")
                .map(|v| crate::fleet::parse_waves(&v).map_err(usage))
                .transpose()?;
            let rollout = if rollout_given {
                Some(Rollout {
                    start: get("--rollout-start")
                        .map(|t| time("--rollout-start", &t).map(|_| t))
                        .transpose()?,
                    start_percentage: get("--start-percentage")
                        .map(|v| number("--start-percentage", &v))
                        .transpose()?,
                    duration_minutes: get("--duration-minutes")
                        .map(|v| number("--duration-minutes", &v))
                        .transpose()?,
                    percent: match get("--percent") {
                        Some(v) => Some(number("--percent", &v)?),
                        None => waves.as_ref().and_then(|w| w.first().copied()),
                    },
                    paused: has("--paused"),
                    waves,
                    wave_started: None,
                })
            } else {
                None
            };
            Command::Pack(Box::new(PackOptions {
                secret_keys: all("--secret"),
                compatible: need("--compatible")?,
                version: need("--version")?,
                images,
                out: need("--out")?.into(),
                created: get("--created")
                    .map(|t| time("--created", &t))
                    .transpose()?,
                expires: get("--expires")
                    .map(|t| time("--expires", &t))
                    .transpose()?,
                expires_days: get("--expires-days")
                    .map(|v| number("--expires-days", &v))
                    .transpose()?
                    .unwrap_or(90),
                level: if has("--no-compress") {
                    None
                } else {
                    Some(
                        get("--level")
                            .map(|v| number("--level", &v))
                            .transpose()?
                            .unwrap_or(19),
                    )
                },
                window_log: get("--window-log")
                    .map(|v| number("--window-log", &v))
                    .transpose()?,
                rollout,
                segment_size: match get("--segment-size") {
                    None => None,
                    Some(v) => match number::<u64>("--segment-size", &v)? {
                        m @ 1..=1024 => Some(m << 20),
                        m => {
                            return Err(usage(format!("--segment-size {m}: give 1 to 1024 (MiB)")))
                        }
                    },
                },
                delta_from,
                delta_level: get("--delta-level")
                    .map(|v| number("--delta-level", &v))
                    .transpose()?
                    .unwrap_or(9),
                delta_window_log: match get("--delta-window-log") {
                    None => crate::pack::MAX_DELTA_WINDOW_LOG,
                    Some(v) => match number::<u32>("--delta-window-log", &v)? {
                        w @ 10..=31 => w,
                        w => return Err(usage(format!("--delta-window-log {w}: outside 10..=31"))),
                    },
                },
            }))
        }
        "fleet" => {
            allowed(&[
                "--manifest",
                "--secret",
                "--reports",
                "--prometheus",
                "--selector",
                "--query-timeout",
                "--max-failures",
                "--max-failure-rate",
                "--min-reports",
                "--waves",
                "--fleet-size",
                "--advance-when",
                "--soak",
                "--out",
                "--dry-run",
                "--keys",
                "--threshold",
            ])?;
            at_most(0)?;
            let mut policy = crate::fleet::Policy::default();
            if let Some(v) = get("--max-failures") {
                policy.max_failures = number("--max-failures", &v)?;
            }
            if let Some(v) = get("--max-failure-rate") {
                policy.max_failure_rate = number("--max-failure-rate", &v)?;
            }
            if let Some(v) = get("--min-reports") {
                policy.min_reports = number("--min-reports", &v)?;
            }
            if let Some(v) = get("--advance-when") {
                policy.advance_when = number("--advance-when", &v)?;
            }
            if let Some(v) = get("--soak") {
                policy.soak = crate::timefmt::parse_duration(&v)
                    .map_err(|e| usage(format!("--soak: {e}")))?;
            }
            policy.fleet_size = get("--fleet-size")
                .map(|v| number("--fleet-size", &v))
                .transpose()?;
            if let Some(v) = get("--waves") {
                policy.waves = crate::fleet::parse_waves(&v).map_err(usage)?;
            }
            policy.check().map_err(usage)?;
            need("--secret")?;
            let source = match (get("--prometheus"), get("--reports")) {
                (Some(url), None) => {
                    if has("--fleet-size") {
                        return Err(usage(
                            "--fleet-size is for --reports; Prometheus counts the hosts",
                        ));
                    }
                    crate::fleet::prometheus::check_url(&url)
                        .map_err(|e| usage(format!("--prometheus {url}: {e}")))?;
                    let selector: Vec<String> = flags
                        .iter()
                        .filter(|(f, _)| f == "--selector")
                        .filter_map(|(_, v)| v.clone())
                        .collect();
                    let mut matchers = Vec::new();
                    for s in selector {
                        matchers
                            .extend(crate::fleet::prometheus::parse_selector(&s).map_err(usage)?);
                    }
                    let timeout = match get("--query-timeout") {
                        None => std::time::Duration::from_secs(30),
                        Some(v) => match crate::timefmt::parse_duration(&v) {
                            Ok(d) if !d.is_zero() && d <= std::time::Duration::from_secs(600) => d,
                            Ok(_) => {
                                return Err(usage(format!(
                                    "--query-timeout {v}: more than 0, at most 10m"
                                )))
                            }
                            Err(e) => return Err(usage(format!("--query-timeout: {e}"))),
                        },
                    };
                    crate::fleet::controller::Source::Prometheus {
                        url,
                        selector: matchers,
                        timeout,
                    }
                }
                (None, Some(path)) => {
                    for f in ["--selector", "--query-timeout"] {
                        if has(f) {
                            return Err(usage(format!("{f} is for --prometheus")));
                        }
                    }
                    crate::fleet::controller::Source::Reports(path.into())
                }
                (Some(_), Some(_)) => {
                    return Err(usage(
                        "fleet takes --prometheus URL or --reports PATH, not both",
                    ))
                }
                (None, None) => {
                    return Err(usage("fleet needs --prometheus URL (or --reports PATH)"))
                }
            };
            Command::Fleet(Box::new(FleetOptions {
                manifest: need("--manifest")?.into(),
                secrets: all("--secret"),
                keys_dirs: all("--keys"),
                threshold: match get("--threshold") {
                    None => 1,
                    Some(v) => match number::<usize>("--threshold", &v)? {
                        n @ 1..=crate::publish::MAX_SIGNATURES => n,
                        n => return Err(usage(format!("--threshold {n}: give 1 to 17"))),
                    },
                },
                source,
                policy,
                dry_run: has("--dry-run"),
                out: get("--out").map(PathBuf::from),
            }))
        }
        other => return Err(usage(format!("unknown command {other:?}"))),
    };
    Ok((global, cmd))
}

fn load_config(global: &Global) -> Result<Config> {
    let path = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    Ok(Config::load(&path)?)
}

fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Run a parsed command; returns the exit code.
pub fn run(global: &Global, command: Command) -> Result<i32> {
    match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(0)
        }
        Command::Version => {
            println!("abupdate {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Keygen {
            secret,
            public,
            force,
        } => {
            for p in [&secret, &public] {
                if p.exists() && !force {
                    return Err(Error::Refused(format!(
                        "{}: exists (use --force to overwrite)",
                        p.display()
                    )));
                }
            }
            let (sk, pk) =
                minisign::generate_keypair().map_err(|e| Error::Refused(format!("keygen: {e}")))?;
            write_private(&secret, sk.to_file_string().as_bytes())?;
            std::fs::write(&public, pk.to_file_string()).map_err(|e| Error::io(&public, e))?;
            if !global.quiet {
                eprintln!(
                    "key id {}: secret {}, public {}",
                    pk.key_id_hex(),
                    secret.display(),
                    public.display()
                );
            }
            Ok(0)
        }
        Command::Sign {
            secret,
            file,
            trusted_comment,
        } => {
            let sk = minisign::SecretKey::parse(&read_text(&secret)?)
                .map_err(|e| Error::Refused(format!("{}: {e}", secret.display())))?;
            let f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
            let digest = minisign::prehash(f).map_err(|e| Error::io(&file, e))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let comment = trusted_comment.unwrap_or_else(|| {
                format!("timestamp:{}\tfile:{name}\thashed", crate::timefmt::now())
            });
            let sig_path = PathBuf::from(format!("{}.minisig", file.display()));
            // Never a half-written signature next to the file.
            crate::publish::replace_file(
                &sig_path,
                minisign::sign_prehashed(&sk, &digest, &comment).as_bytes(),
            )?;
            Ok(0)
        }
        Command::Verify { public, file } => {
            let pk = minisign::PublicKey::parse(&read_text(&public)?)
                .map_err(|e| Error::Refused(format!("{}: {e}", public.display())))?;
            let sig_path = PathBuf::from(format!("{}.minisig", file.display()));
            let sig = minisign::Signature::parse(&read_text(&sig_path)?)
                .map_err(|e| Error::Refused(format!("{}: {e}", sig_path.display())))?;
            let result = if sig.prehashed {
                let f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
                let digest = minisign::prehash(f).map_err(|e| Error::io(&file, e))?;
                sig.verify_prehashed(&pk, &digest)
            } else {
                let data = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
                sig.verify(&pk, &data)
            };
            result.map_err(|e| Error::Refused(format!("{}: {e}", sig_path.display())))?;
            if !global.quiet {
                println!("Signature and comment signature verified");
                println!("Trusted comment: {}", sig.trusted_comment);
            }
            Ok(0)
        }
        Command::Pack(opts) => run_pack(global, &opts),
        Command::Fleet(opts) => crate::fleet::controller::run(&opts, global.json, global.quiet),
        Command::Status => {
            let host = Host::open(load_config(global)?)?;
            let status = agent::status(&host)?;
            if global.json {
                print_json(&serde_json::to_value(&status).unwrap_or_default());
            } else {
                print_status(&status);
            }
            Ok(0)
        }
        Command::Check {
            source,
            allow_downgrade,
        } => {
            let host = Host::open(load_config(global)?)?;
            let opts = CheckOptions {
                allow_downgrade,
                rollout: true,
            };
            let outcome = agent::check(&host, source.as_deref(), opts)?;
            report_check(global, &outcome);
            Ok(match outcome {
                CheckOutcome::Available { .. } => EXIT_UPDATE_AVAILABLE,
                CheckOutcome::UpToDate { .. } => 0,
            })
        }
        Command::Update { no_reboot, now } => {
            let host = Host::open(load_config(global)?)?;
            let opts = UpdateOptions {
                now,
                no_reboot,
                quiet: global.quiet,
            };
            match agent::update(&host, opts)? {
                UpdateOutcome::BackingOff { until } => {
                    let until = crate::timefmt::format_rfc3339(until);
                    if global.json {
                        print_json(
                            &serde_json::json!({ "outcome": "backing_off", "until": until }),
                        );
                    } else if !global.quiet {
                        agent::log(&format!(
                            "backing off after failures until {until} (--now to run anyway)"
                        ));
                    }
                }
                UpdateOutcome::UpToDate {
                    reason,
                    kind,
                    standing,
                } => {
                    if global.json {
                        print_json(&serde_json::json!({
                            "outcome": "up_to_date", "reason": kind, "message": reason, "rollout": standing,
                        }));
                    } else if !global.quiet {
                        agent::log(&format!("no update: {reason}"));
                    }
                }
                UpdateOutcome::Installed(done) => report_install(global, &done),
            }
            Ok(0)
        }
        Command::Install { source, opts } => {
            let host = Host::open(load_config(global)?)?;
            let check_opts = CheckOptions {
                allow_downgrade: opts.allow_downgrade,
                rollout: false,
            };
            let result =
                agent::check(&host, Some(&source), check_opts).and_then(|outcome| match outcome {
                    CheckOutcome::UpToDate { reason, .. } => Err(Error::Refused(reason)),
                    CheckOutcome::Available { verified, .. } => {
                        agent::install(&host, &verified, &opts)
                    }
                });
            match result {
                Ok(done) => {
                    report_install(global, &done);
                    Ok(0)
                }
                Err(e) => {
                    if !matches!(e, Error::State(crate::state::StateError::Locked { .. })) {
                        agent::record_failure(&host, &e, None);
                    }
                    Err(e)
                }
            }
        }
        Command::Health { no_reboot } => {
            let host = Host::open(load_config(global)?)?;
            let verdict = agent::health(&host, no_reboot, global.quiet)?;
            let (text, code, outcome) = match &verdict {
                Verdict::Healthy => ("healthy; no trial pending".to_string(), 0, "healthy"),
                Verdict::Committed { version } => (format!("committed {version}"), 0, "committed"),
                Verdict::RolledBack { version, reason } => {
                    (format!("rolled back {version}: {reason}"), 1, "rolled_back")
                }
                Verdict::TrialNeverBooted { version } => (
                    format!("{version} never came up; recorded as failed"),
                    0,
                    "trial_never_booted",
                ),
                Verdict::AwaitingReboot { version } => (
                    format!("healthy; {version} is staged and waits for a reboot"),
                    0,
                    "awaiting_reboot",
                ),
            };
            if global.json {
                print_json(&serde_json::json!({ "outcome": outcome, "message": text }));
            } else if !global.quiet {
                agent::log(&text);
            }
            Ok(code)
        }
        Command::Mark { slot, good } => {
            let host = Host::open(load_config(global)?)?;
            let slot = agent::mark(&host, slot, good)?;
            if !global.quiet {
                agent::log(&format!(
                    "marked slot {slot} {}",
                    if good { "good" } else { "bad" }
                ));
            }
            Ok(0)
        }
        Command::Rollback { no_reboot, force } => {
            let host = Host::open(load_config(global)?)?;
            agent::rollback(&host, force, no_reboot)?;
            Ok(0)
        }
    }
}

#[cfg(feature = "pack")]
fn run_pack(global: &Global, opts: &PackOptions) -> Result<i32> {
    crate::pack::check_options(opts).map_err(usage)?;
    let manifest = crate::pack::pack(opts).map_err(Error::Refused)?;
    if !global.quiet {
        eprintln!("wrote {} and its signature", manifest.display());
    }
    Ok(0)
}

/// A host build carries no compressor (it only decodes).
#[cfg(not(feature = "pack"))]
fn run_pack(_global: &Global, _opts: &PackOptions) -> Result<i32> {
    Err(Error::Usage(
        "this abupdate is a host build without `pack`; use a build with the `pack` feature".into(),
    ))
}

fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(data).map_err(|e| Error::io(path, e))
}

fn report_check(global: &Global, outcome: &CheckOutcome) {
    match outcome {
        CheckOutcome::Available {
            verified: v,
            standing,
        } => {
            if global.json {
                print_json(&serde_json::json!({
                    "update_available": true,
                    "version": v.manifest.version.as_str(),
                    "manifest_sha256": v.manifest.sha256,
                    // Where the verified manifest came from (the mirror,
                    // a redirect's target), without user info.
                    "source": crate::fetch::redact(&v.source),
                    "rollout": standing,
                }));
            } else {
                println!(
                    "update available: {} ({})",
                    v.manifest.version,
                    crate::fetch::redact(&v.source)
                );
            }
        }
        CheckOutcome::UpToDate {
            reason,
            kind,
            standing,
        } => {
            if global.json {
                print_json(&serde_json::json!({
                    "update_available": false, "reason": kind, "message": reason, "rollout": standing,
                }));
            } else {
                println!("no update: {reason}");
            }
        }
    }
}

fn report_install(global: &Global, done: &agent::Installed) {
    if global.json {
        print_json(&serde_json::json!({
            "installed": done.version,
            "slot": done.slot,
            "payload_bytes": done.payload_bytes,
            "network_bytes": done.network_bytes,
            "rebooting": done.rebooting,
        }));
    } else if !global.quiet {
        agent::log(&format!(
            "installed {} into slot {} ({} payload bytes)",
            done.version, done.slot, done.payload_bytes
        ));
    }
}

fn print_status(s: &agent::Status) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "booted slot:   {}",
        or_dash(s.booted_slot.map(|b| b.to_string()))
    );
    println!("booted version: {}", or_dash(s.booted_version.clone()));
    println!(
        "primary slot:  {}",
        or_dash(s.primary_slot.map(|b| b.to_string()))
    );
    for (slot, st) in &s.slots {
        println!(
            "slot {slot}: {} version {} bootloader {} ({})",
            st.record.status,
            or_dash(st.record.version.clone()),
            or_dash(st.bootloader_state.clone()),
            st.devices
                .iter()
                .map(|(c, p)| format!("{c}={p}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    match &s.transaction {
        Some(t) => println!(
            "pending: {} from slot {} to slot {} ({:?})",
            t.version, t.from, t.to, t.phase
        ),
        None => println!("pending: none"),
    }
    for f in &s.failed {
        println!("failed release {}: {}", f.version, f.reason);
    }
    if let Some(w) = &s.reboot_window {
        println!("reboot: waits for the maintenance window opening {w}");
    }
    println!("rollout position: {:.4}", s.rollout_position);
    if let Some(until) = &s.backoff_until {
        println!(
            "update: backing off after {} failed runs until {until} (`update --now` runs anyway)",
            s.metrics.consecutive_failures
        );
    }
    if let (Some(fetched), Some(full)) =
        (s.metrics.last_install_fetched, s.metrics.last_install_full)
    {
        let pct = if full > 0 {
            fetched as f64 * 100.0 / full as f64
        } else {
            100.0
        };
        println!("last install: fetched {fetched} bytes, a full install {full} ({pct:.1}%)");
    }
    let vars: Vec<String> = s
        .bootloader
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("bootloader: {}", vars.join(" "));
}

/// Entry point of the binary: parse, run, map errors to exit codes.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (global, command) = match parse(argv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("abupdate: {e}");
            return e.exit_code();
        }
    };
    let result = run(&global, command);
    // Reports still in flight, each bounded by its deadline; every lock
    // was released when `run` returned.
    crate::report::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            if global.json {
                print_json(&serde_json::json!({ "error": e.to_string(), "kind": e.kind() }));
            }
            eprintln!("abupdate: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<(Global, Command)> {
        parse(args.iter().map(|s| s.to_string()).collect())
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
        let (_, c) = p(&[
            "install",
            "http://h/r.json",
            "--no-reboot",
            "--write=changed",
        ])
        .expect("parse");
        match c {
            Command::Install { source, opts } => {
                assert_eq!(source, "http://h/r.json");
                assert!(opts.no_reboot);
                assert_eq!(opts.write_mode, WriteMode::Changed);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p(&["mark-bad", "B"]).expect("parse").1,
            Command::Mark {
                slot: Some(SlotName::B),
                good: false
            }
        ));
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            vec!["frobnicate"],
            vec!["install"],
            vec!["status", "--bogus"],
            vec!["check", "--no-reboot"],
            vec!["mark-good", "C"],
            vec!["keygen", "--secret"],
            vec!["install", "x", "--write=some"],
        ] {
            let e = p(&bad).expect_err(&format!("{bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn pack_collects_images_and_rollout() {
        let (_, c) = p(&[
            "pack",
            "--secret",
            "k",
            "--compatible",
            "c",
            "--version",
            "1.2",
            "--image",
            "rootfs=/a",
            "--image",
            "boot=/b",
            "--out",
            "o",
            "--percent",
            "5",
        ])
        .expect("parse");
        let Command::Pack(o) = c else {
            panic!("not pack")
        };
        assert_eq!(o.images.len(), 2);
        assert_eq!(o.rollout.and_then(|r| r.percent), Some(5.0));
        assert_eq!(o.level, Some(19));
    }
}
