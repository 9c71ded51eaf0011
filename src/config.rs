//! Configuration: `config.toml` plus `config.d/*.toml` drop-ins, merged in
//! name order, then validated into [`Config`].
//!
//! Three plain steps, as in zincati: read each fragment (a typo is refused
//! with the file, line and key), merge the fragments as TOML tables (a
//! drop-in's key replaces the main file's, tables merge key by key), and
//! turn the merged table into settings with every default filled in. Nothing
//! else in the program reads a host path that is not named here, so tests
//! and unusual hosts move every path with one file.

use crate::slot::SlotName;
use crate::timefmt::parse_duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the main file lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/abupdate/config.toml";

/// A configuration that cannot be used; the message names file, line and key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The settings the program runs on.
#[derive(Clone, Debug)]
pub struct Config {
    /// Files merged, in order, for messages.
    pub files: Vec<PathBuf>,
    pub update: Update,
    pub system: System,
    pub bootloader: Bootloader,
    /// Per slot, class name → device or file.
    pub slots: BTreeMap<SlotName, BTreeMap<String, PathBuf>>,
    pub health: Health,
    pub rollout: RolloutSettings,
    pub reboot: Reboot,
    pub report: Report,
}

#[derive(Clone, Debug, Default)]
pub struct RolloutSettings {
    /// Overrides the host's fleet position: 0.0 = canary, 1.0 = last wave.
    pub wariness: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Reboot {
    /// Maintenance windows; empty = reboot any time.
    pub windows: Vec<crate::schedule::Window>,
}

#[derive(Clone, Debug)]
pub struct Report {
    /// node_exporter textfile-collector file, written after every verdict.
    pub textfile: Option<PathBuf>,
    pub webhook: Option<String>,
    pub webhook_timeout: Duration,
    pub webhook_attempts: u32,
    /// Operator labels on every textfile series (`site`, `region`, …).
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Update {
    pub url: Option<String>,
    pub compatible: String,
    pub state_dir: PathBuf,
    pub keys_dirs: Vec<PathBuf>,
    pub threshold: usize,
    pub proxy: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Largest zstd window (log2 bytes) a payload may ask for: caps memory.
    pub max_window_log: u32,
    /// A site cache (reverse caching proxy) that serves the origin's paths.
    pub mirror: Option<String>,
    /// Where the manifest's signatures are fetched from, when not next to
    /// it: the standard signature's own URL (presigned), or a template with
    /// `{name}` ([`crate::fetch::signature_location`]).
    pub signature_url: Option<String>,
    /// Keep a downloading payload on the data partition so a cut download
    /// resumes where it stopped. Off: stream straight into the slot (no
    /// second copy written to flash; a cut download starts over).
    pub resume_downloads: bool,
    /// Random delay before each timer poll.
    pub jitter: Duration,
    /// First delay after a failed `update`, doubled per failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Clone, Debug)]
pub struct System {
    pub cmdline: PathBuf,
    pub os_release: PathBuf,
    pub machine_id: PathBuf,
    pub boot_id: PathBuf,
    pub mountinfo: PathBuf,
    pub reboot: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootloaderKind {
    Grub,
    Uboot,
    Custom,
}

#[derive(Clone, Debug)]
pub struct Bootloader {
    pub kind: BootloaderKind,
    pub grubenv: PathBuf,
    pub fw_env_config: PathBuf,
    pub script: Option<PathBuf>,
    /// Boots a new slot gets before the bootloader gives up on it.
    pub tries: u32,
    /// U-Boot: boots a committed (marked good) slot gets, RAUC's
    /// `boot-attempts` (default 3).
    pub good_tries: u32,
}

#[derive(Clone, Debug)]
pub struct Health {
    pub dir: PathBuf,
    pub timeout: Duration,
    pub check_timeout: Duration,
    pub interval: Duration,
    pub units: Vec<String>,
    pub http: Vec<String>,
}

// ---- step 1: fragments, exactly as written -------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Fragment {
    #[serde(default)]
    update: UpdateFragment,
    #[serde(default)]
    system: SystemFragment,
    #[serde(default)]
    bootloader: BootloaderFragment,
    #[serde(default)]
    slots: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    health: HealthFragment,
    #[serde(default)]
    rollout: RolloutFragment,
    #[serde(default)]
    reboot: RebootFragment,
    #[serde(default)]
    report: ReportFragment,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RolloutFragment {
    wariness: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RebootFragment {
    #[serde(default)]
    window: Vec<WindowFragment>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WindowFragment {
    days: Option<Vec<String>>,
    start: Option<String>,
    length: Option<String>,
    zone: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReportFragment {
    textfile: Option<String>,
    webhook: Option<String>,
    webhook_timeout: Option<String>,
    webhook_attempts: Option<u32>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateFragment {
    url: Option<String>,
    compatible: Option<String>,
    state_dir: Option<String>,
    keys_dirs: Option<Vec<String>>,
    threshold: Option<u32>,
    proxy: Option<String>,
    ca_file: Option<String>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    max_window_log: Option<u32>,
    mirror: Option<String>,
    signature_url: Option<String>,
    resume_downloads: Option<bool>,
    jitter: Option<String>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SystemFragment {
    cmdline: Option<String>,
    os_release: Option<String>,
    machine_id: Option<String>,
    boot_id: Option<String>,
    mountinfo: Option<String>,
    reboot: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BootloaderFragment {
    kind: Option<String>,
    grubenv: Option<String>,
    fw_env_config: Option<String>,
    script: Option<String>,
    tries: Option<u32>,
    good_tries: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HealthFragment {
    dir: Option<String>,
    timeout: Option<String>,
    check_timeout: Option<String>,
    interval: Option<String>,
    units: Option<Vec<String>>,
    http: Option<Vec<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.bytes().filter(|&b| b == b'\n').count() + 1)
        .unwrap_or(1)
}

/// Read and check one fragment; returns its table for merging.
fn read_fragment(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    let describe = |e: toml::de::Error| {
        let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(1);
        let msg = e.message().replace('\n', " ");
        ConfigError(format!("{}:{line}: {msg}", path.display()))
    };
    // Deserialising into the typed fragment is what finds unknown keys and
    // wrong types with a position; the table is what merges.
    toml::from_str::<Fragment>(&text).map_err(describe)?;
    toml::from_str::<toml::Table>(&text).map_err(describe)
}

// ---- step 2: merge --------------------------------------------------------

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// The drop-in directory that belongs to a main config file.
pub fn dropin_dir(main: &Path) -> PathBuf {
    main.parent()
        .unwrap_or_else(|| Path::new("."))
        .join("config.d")
}

// ---- step 3: settings -----------------------------------------------------

/// The range of each duration key: whether zero means something there,
/// and the longest value that makes sense (a deadline past it is a typo).
fn duration_bounds(key: &str) -> (bool, Duration) {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86400;
    let (zero_ok, max) = match key {
        "update.connect_timeout" | "update.read_timeout" => (false, HOUR),
        "update.jitter" => (true, DAY),
        "update.backoff_base" => (true, 7 * DAY),
        "update.backoff_max" => (true, 30 * DAY),
        "health.timeout" | "health.check_timeout" => (false, DAY),
        "health.interval" => (true, HOUR),
        // The whole delivery of one report, all attempts: it may delay a
        // reboot by this much.
        "report.webhook_timeout" => (false, MINUTE),
        _ => (false, DAY),
    };
    (zero_ok, Duration::from_secs(max))
}

/// `d` within the range of `key`; else why not.
fn check_duration(key: &str, d: Duration) -> Result<Duration, String> {
    use crate::timefmt::format_duration;
    let (zero_ok, max) = duration_bounds(key);
    if d.is_zero() && !zero_ok {
        return Err("must be more than zero".into());
    }
    if d > max {
        return Err(format!(
            "{} is longer than the {} this key allows",
            format_duration(d),
            format_duration(max)
        ));
    }
    Ok(d)
}

impl Config {
    /// Load `main` (which must exist) and its `config.d/*.toml` drop-ins.
    pub fn load(main: &Path) -> Result<Config, ConfigError> {
        let mut files = vec![main.to_path_buf()];
        let dir = dropin_dir(main);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut dropins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        let mut merged = toml::Table::new();
        for file in &files {
            merge(&mut merged, read_fragment(file)?);
        }
        let fragment: Fragment =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigError(format!("{}: {}", main.display(), e.message()))
                })?;
        Config::from_fragment(fragment, files)
    }

    /// Parse one TOML text as if it were the only file (tests, examples).
    pub fn from_str(text: &str, name: &Path) -> Result<Config, ConfigError> {
        let fragment: Fragment = toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            ConfigError(format!(
                "{}:{line}: {}",
                name.display(),
                e.message().replace('\n', " ")
            ))
        })?;
        Config::from_fragment(fragment, vec![name.to_path_buf()])
    }

    fn from_fragment(f: Fragment, files: Vec<PathBuf>) -> Result<Config, ConfigError> {
        let where_ = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let err = |key: &str, what: String| ConfigError(format!("{where_}: {key}: {what}"));
        // Every duration key has a range (see `duration_bounds`): a value
        // out of it is refused here, naming the key, so no later
        // `Instant + duration` can overflow.
        let duration = |key: &str, v: Option<String>, default: u64| {
            let d = match v {
                None => Duration::from_secs(default),
                Some(s) => parse_duration(&s).map_err(|e| err(key, e))?,
            };
            check_duration(key, d).map_err(|e| err(key, e))
        };

        let compatible = f.update.compatible.ok_or_else(|| {
            err(
                "update.compatible",
                "missing (the manifest's compatible string this host accepts)".into(),
            )
        })?;
        let threshold = f.update.threshold.unwrap_or(1).max(1) as usize;
        let max_window_log = f.update.max_window_log.unwrap_or(27);
        if !(10..=31).contains(&max_window_log) {
            return Err(err(
                "update.max_window_log",
                format!("{max_window_log} is outside 10..=31"),
            ));
        }
        if let Some(m) = &f.update.mirror {
            crate::fetch::check_mirror(m).map_err(|e| err("update.mirror", e))?;
        }
        if let Some(s) = &f.update.signature_url {
            crate::fetch::check_signature_url(s, threshold)
                .map_err(|e| err("update.signature_url", e))?;
        }
        let update = Update {
            url: f.update.url,
            compatible,
            state_dir: f
                .update
                .state_dir
                .unwrap_or_else(|| "/var/lib/abupdate".into())
                .into(),
            keys_dirs: f
                .update
                .keys_dirs
                .unwrap_or_else(|| {
                    vec!["/usr/lib/abupdate/keys".into(), "/etc/abupdate/keys".into()]
                })
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            threshold,
            proxy: f.update.proxy,
            ca_file: f.update.ca_file.map(PathBuf::from),
            connect_timeout: duration("update.connect_timeout", f.update.connect_timeout, 30)?,
            read_timeout: duration("update.read_timeout", f.update.read_timeout, 60)?,
            max_window_log,
            mirror: f.update.mirror,
            signature_url: f.update.signature_url,
            resume_downloads: f.update.resume_downloads.unwrap_or(true),
            jitter: duration("update.jitter", f.update.jitter, 0)?,
            backoff_base: duration("update.backoff_base", f.update.backoff_base, 300)?,
            backoff_max: duration("update.backoff_max", f.update.backoff_max, 6 * 3600)?,
        };

        let reboot = f
            .system
            .reboot
            .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]);
        if reboot.is_empty() {
            return Err(err(
                "system.reboot",
                "must name a command (an argv list)".into(),
            ));
        }
        let system = System {
            cmdline: f
                .system
                .cmdline
                .unwrap_or_else(|| "/proc/cmdline".into())
                .into(),
            os_release: f
                .system
                .os_release
                .unwrap_or_else(|| "/etc/os-release".into())
                .into(),
            machine_id: f
                .system
                .machine_id
                .unwrap_or_else(|| "/etc/machine-id".into())
                .into(),
            boot_id: f
                .system
                .boot_id
                .unwrap_or_else(|| "/proc/sys/kernel/random/boot_id".into())
                .into(),
            mountinfo: f
                .system
                .mountinfo
                .unwrap_or_else(|| "/proc/self/mountinfo".into())
                .into(),
            reboot,
        };

        let kind = match f.bootloader.kind.as_deref().unwrap_or("grub") {
            "grub" => BootloaderKind::Grub,
            "uboot" => BootloaderKind::Uboot,
            "custom" => BootloaderKind::Custom,
            other => {
                return Err(err(
                    "bootloader.kind",
                    format!("{other:?} is not one of grub, uboot, custom"),
                ))
            }
        };
        if kind == BootloaderKind::Custom && f.bootloader.script.is_none() {
            return Err(err(
                "bootloader.script",
                "missing (required when kind = \"custom\")".into(),
            ));
        }
        let tries = f.bootloader.tries.unwrap_or(1);
        if !(1..=9).contains(&tries) {
            return Err(err("bootloader.tries", format!("{tries} is outside 1..=9")));
        }
        let good_tries = f
            .bootloader
            .good_tries
            .unwrap_or(crate::boot::uboot::DEFAULT_TRIES);
        if !(1..=9).contains(&good_tries) {
            return Err(err(
                "bootloader.good_tries",
                format!("{good_tries} is outside 1..=9"),
            ));
        }
        let bootloader = Bootloader {
            kind,
            grubenv: f
                .bootloader
                .grubenv
                .unwrap_or_else(|| "/boot/grub/grubenv".into())
                .into(),
            fw_env_config: f
                .bootloader
                .fw_env_config
                .unwrap_or_else(|| "/etc/fw_env.config".into())
                .into(),
            script: f.bootloader.script.map(PathBuf::from),
            tries,
            good_tries,
        };

        let mut slots: BTreeMap<SlotName, BTreeMap<String, PathBuf>> = BTreeMap::new();
        for (name, classes) in f.slots {
            let slot: SlotName = match name.as_str() {
                "A" => SlotName::A,
                "B" => SlotName::B,
                _ => {
                    return Err(err(
                        &format!("slots.{name}"),
                        "slot names are A and B".into(),
                    ))
                }
            };
            if classes.is_empty() {
                return Err(err(
                    &format!("slots.{name}"),
                    "names no partition (e.g. rootfs = \"/dev/…\")".into(),
                ));
            }
            slots.insert(
                slot,
                classes
                    .into_iter()
                    .map(|(c, p)| (c, PathBuf::from(p)))
                    .collect(),
            );
        }
        for slot in SlotName::ALL {
            if !slots.contains_key(&slot) {
                return Err(err(
                    &format!("slots.{slot}"),
                    "missing (both slots A and B must be configured)".into(),
                ));
            }
        }
        if slots[&SlotName::A].keys().ne(slots[&SlotName::B].keys()) {
            return Err(err("slots", "A and B must have the same classes".into()));
        }

        let health = Health {
            dir: f
                .health
                .dir
                .unwrap_or_else(|| "/etc/abupdate/health.d".into())
                .into(),
            timeout: duration("health.timeout", f.health.timeout, 300)?,
            check_timeout: duration("health.check_timeout", f.health.check_timeout, 60)?,
            interval: duration("health.interval", f.health.interval, 5)?,
            units: f.health.units.unwrap_or_default(),
            http: f.health.http.unwrap_or_default(),
        };
        for (i, unit) in health.units.iter().enumerate() {
            crate::health::check_unit_name(unit)
                .map_err(|e| err(&format!("health.units[{i}]"), e))?;
        }

        let wariness = f.rollout.wariness;
        if let Some(w) = wariness {
            if !(0.0..=1.0).contains(&w) {
                return Err(err("rollout.wariness", format!("{w} is outside 0.0..=1.0")));
            }
        }
        let mut windows = Vec::new();
        for (i, w) in f.reboot.window.into_iter().enumerate() {
            let key = format!("reboot.window[{i}]");
            let start = w
                .start
                .ok_or_else(|| err(&format!("{key}.start"), "missing (e.g. \"02:00\")".into()))?;
            let length = w
                .length
                .ok_or_else(|| err(&format!("{key}.length"), "missing (e.g. \"2h\")".into()))?;
            let days = w.days.unwrap_or_else(|| vec!["*".into()]);
            let window = crate::schedule::Window::parse(&days, &start, &length, w.zone.as_deref())
                .map_err(|e| err(&key, e))?;
            windows.push(window);
        }
        let report = Report {
            textfile: f.report.textfile.map(PathBuf::from),
            webhook: f.report.webhook,
            webhook_timeout: duration("report.webhook_timeout", f.report.webhook_timeout, 5)?,
            webhook_attempts: f.report.webhook_attempts.unwrap_or(3).clamp(1, 10),
            labels: f.report.labels.unwrap_or_default(),
        };
        if report.labels.len() > crate::report::MAX_LABELS {
            return Err(err(
                "report.labels",
                format!("more than {} labels", crate::report::MAX_LABELS),
            ));
        }
        for (name, value) in &report.labels {
            crate::report::check_label(name, value)
                .map_err(|e| err(&format!("report.labels.{name}"), e))?;
        }
        Ok(Config {
            files,
            update,
            system,
            bootloader,
            slots,
            health,
            rollout: RolloutSettings { wariness },
            reboot: Reboot { windows },
            report,
        })
    }

    /// The device of `class` in `slot`.
    pub fn device(&self, slot: SlotName, class: &str) -> Option<&Path> {
        self.slots.get(&slot)?.get(class).map(PathBuf::as_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[update]
compatible = "acme-edge"
[slots.A]
rootfs = "/dev/a"
[slots.B]
rootfs = "/dev/b"
"#;

    #[test]
    fn defaults_fill_a_minimal_file() {
        let c = Config::from_str(MINIMAL, Path::new("c.toml")).expect("minimal config");
        assert_eq!(c.update.state_dir, PathBuf::from("/var/lib/abupdate"));
        assert_eq!(c.update.threshold, 1);
        assert_eq!(c.system.reboot, ["systemctl", "reboot"]);
        assert_eq!(c.bootloader.kind, BootloaderKind::Grub);
        assert_eq!(c.health.timeout, Duration::from_secs(300));
        assert_eq!(c.device(SlotName::B, "rootfs"), Some(Path::new("/dev/b")));
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let text = format!("{MINIMAL}\n[health]\ntimout = \"5s\"\n");
        let e = Config::from_str(&text, Path::new("/etc/x.toml")).expect_err("typo accepted");
        assert!(e.0.starts_with("/etc/x.toml:10:"), "{e}");
        assert!(e.0.contains("timout"), "{e}");
    }

    #[test]
    fn missing_and_bad_values_name_the_key() {
        let e = Config::from_str(
            "[slots.A]\nrootfs=\"a\"\n[slots.B]\nrootfs=\"b\"\n",
            Path::new("c.toml"),
        )
        .expect_err("no compatible accepted");
        assert!(e.0.contains("update.compatible"), "{e}");
        let e = Config::from_str(
            &MINIMAL.replace("[slots.B]\nrootfs = \"/dev/b\"", ""),
            Path::new("c.toml"),
        )
        .expect_err("one slot accepted");
        assert!(e.0.contains("slots.B"), "{e}");
        let e = Config::from_str(
            &format!("{MINIMAL}[health]\ntimeout = \"soon\"\n"),
            Path::new("c.toml"),
        )
        .expect_err("bad duration accepted");
        assert!(e.0.contains("health.timeout"), "{e}");
        let e = Config::from_str(
            &format!("{MINIMAL}[bootloader]\nkind = \"lilo\"\n"),
            Path::new("c.toml"),
        )
        .expect_err("bad kind accepted");
        assert!(
            e.0.contains("bootloader.kind") && e.0.contains("lilo"),
            "{e}"
        );
    }

    #[test]
    fn good_tries_defaults_to_raucs_three_apart_from_the_trial_tries() {
        let c = Config::from_str(MINIMAL, Path::new("c.toml")).expect("minimal config");
        assert_eq!((c.bootloader.tries, c.bootloader.good_tries), (1, 3));
        let c = Config::from_str(
            &format!("{MINIMAL}[bootloader]\ngood_tries = 5\n"),
            Path::new("c.toml"),
        )
        .expect("good_tries");
        assert_eq!(c.bootloader.good_tries, 5);
        for bad in ["0", "10"] {
            let e = Config::from_str(
                &format!("{MINIMAL}[bootloader]\ngood_tries = {bad}\n"),
                Path::new("c.toml"),
            )
            .expect_err("out of range accepted");
            assert!(e.0.contains("bootloader.good_tries"), "{e}");
        }
    }

    #[test]
    fn report_labels_are_checked_by_prometheus_rules_naming_the_key() {
        let c = Config::from_str(
            &format!("{MINIMAL}[report]\nlabels = {{ site = \"store-0042\", region = \"eu\" }}\n"),
            Path::new("c.toml"),
        )
        .expect("labels");
        assert_eq!(c.report.labels["site"], "store-0042");
        assert_eq!(c.report.labels["region"], "eu");
        for (bad, key) in [
            ("\"9x\" = \"v\"", "report.labels.9x"),
            ("\"a-b\" = \"v\"", "report.labels.a-b"),
            ("__name__ = \"v\"", "report.labels.__name__"),
            ("release = \"v\"", "report.labels.release"),
            ("site = \"\"", "report.labels.site"),
        ] {
            let e = Config::from_str(
                &format!("{MINIMAL}[report]\nlabels = {{ {bad} }}\n"),
                Path::new("c.toml"),
            )
            .expect_err(bad);
            assert!(e.0.starts_with(&format!("c.toml: {key}: ")), "{e}");
        }
        let many: Vec<String> = (0..=crate::report::MAX_LABELS)
            .map(|i| format!("l{i} = \"v\""))
            .collect();
        let e = Config::from_str(
            &format!("{MINIMAL}[report]\nlabels = {{ {} }}\n", many.join(", ")),
            Path::new("c.toml"),
        )
        .expect_err("too many labels");
        assert!(e.0.contains("report.labels"), "{e}");
    }

    #[test]
    fn dropins_merge_over_main_in_name_order() {
        let dir = std::env::temp_dir().join(format!("abupdate-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config.d")).expect("mkdir");
        std::fs::write(
            dir.join("config.toml"),
            format!("{MINIMAL}[health]\nunits = [\"sshd.service\"]\ntimeout = \"10s\"\n"),
        )
        .expect("write");
        std::fs::write(
            dir.join("config.d/20-b.toml"),
            "[health]\ntimeout = \"30s\"\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("config.d/10-a.toml"),
            "[health]\ntimeout = \"20s\"\n[update]\nthreshold = 2\n",
        )
        .expect("write");
        std::fs::write(dir.join("config.d/ignored.txt"), "not toml").expect("write");
        let c = Config::load(&dir.join("config.toml")).expect("load");
        assert_eq!(c.health.timeout, Duration::from_secs(30));
        assert_eq!(c.health.units, ["sshd.service"]);
        assert_eq!(c.update.threshold, 2);
        assert_eq!(c.update.compatible, "acme-edge");
        assert_eq!(c.files.len(), 3);

        std::fs::write(
            dir.join("config.d/30-bad.toml"),
            "[update]\nthreshold = \"two\"\n",
        )
        .expect("write");
        let e = Config::load(&dir.join("config.toml")).expect_err("bad drop-in accepted");
        assert!(e.0.contains("30-bad.toml:2:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Each duration key with the table it lives in.
    const DURATION_KEYS: [(&str, &str); 9] = [
        ("update", "connect_timeout"),
        ("update", "read_timeout"),
        ("update", "jitter"),
        ("update", "backoff_base"),
        ("update", "backoff_max"),
        ("health", "timeout"),
        ("health", "check_timeout"),
        ("health", "interval"),
        ("report", "webhook_timeout"),
    ];

    fn with(table: &str, key: &str, value: &str) -> Result<Config, ConfigError> {
        let text = if table == "update" {
            MINIMAL.replace("[update]\n", &format!("[update]\n{key} = \"{value}\"\n"))
        } else {
            format!("{MINIMAL}[{table}]\n{key} = \"{value}\"\n")
        };
        Config::from_str(&text, Path::new("c.toml"))
    }

    #[test]
    fn absurd_durations_are_refused_naming_the_key() {
        for (table, key) in DURATION_KEYS {
            let e = with(table, key, "18446744073709551615s").expect_err(key);
            assert!(
                e.0.starts_with(&format!("c.toml: {table}.{key}: ")) && e.0.contains("longer than"),
                "{e}"
            );
            let e = with(table, key, "18446744073709551615d").expect_err(key);
            assert!(e.0.contains(&format!("{table}.{key}")), "{e}");
        }
    }

    #[test]
    fn every_duration_at_its_maximum_is_a_usable_deadline() {
        for (table, key) in DURATION_KEYS {
            let (_, max) = duration_bounds(&format!("{table}.{key}"));
            let c = with(table, key, &format!("{}s", max.as_secs())).expect(key);
            for d in [
                c.update.connect_timeout,
                c.update.read_timeout,
                c.update.backoff_max,
                c.health.timeout,
                c.health.check_timeout,
                c.report.webhook_timeout,
            ] {
                assert!(std::time::Instant::now().checked_add(d * 4).is_some());
                assert!(std::time::SystemTime::now().checked_add(d * 4).is_some());
            }
            assert!(
                with(table, key, &format!("{}s", max.as_secs() + 1)).is_err(),
                "{key} above its maximum accepted"
            );
        }
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for key in ["connect_timeout", "read_timeout"] {
            let e = with("update", key, "0s").expect_err(key);
            assert!(
                e.0.contains(&format!("update.{key}: must be more than zero")),
                "{e}"
            );
        }
        for key in ["timeout", "check_timeout"] {
            let e = with("health", key, "0s").expect_err(key);
            assert!(
                e.0.contains(&format!("health.{key}: must be more than zero")),
                "{e}"
            );
        }
        let e = with("report", "webhook_timeout", "0ms").expect_err("webhook_timeout");
        assert!(e.0.contains("report.webhook_timeout"), "{e}");
        // Zero means "none" for these.
        for key in ["jitter", "backoff_base", "backoff_max"] {
            assert!(with("update", key, "0s").is_ok(), "{key}");
        }
        assert!(with("health", "interval", "0s").is_ok());
    }

    #[test]
    fn a_signature_url_must_name_every_signature_the_threshold_needs() {
        let c = with(
            "update",
            "signature_url",
            "https://s3/b/release.json.minisig?X-Amz-Signature=1",
        )
        .expect("exact URL, threshold 1");
        assert!(c.update.signature_url.is_some());
        let two = MINIMAL.replace("[update]\n", "[update]\nthreshold = 2\n");
        let e = Config::from_str(
            &two.replace(
                "[update]\n",
                "[update]\nsignature_url = \"https://s3/b/r.json.minisig\"\n",
            ),
            Path::new("c.toml"),
        )
        .expect_err("one URL for two signatures accepted");
        assert!(e.0.starts_with("c.toml: update.signature_url: "), "{e}");
        Config::from_str(
            &two.replace(
                "[update]\n",
                "[update]\nsignature_url = \"https://s3/b/{name}\"\n",
            ),
            Path::new("c.toml"),
        )
        .expect("a template serves any threshold");
        let e = with("update", "signature_url", "ftp://s3/{name}").expect_err("ftp accepted");
        assert!(e.0.contains("update.signature_url"), "{e}");
    }

    #[test]
    fn units_that_are_not_unit_names_are_refused_naming_the_entry() {
        for bad in ["--version", "-h", "sshd"] {
            let text = format!("{MINIMAL}[health]\nunits = [\"sshd.service\", \"{bad}\"]\n");
            let e = Config::from_str(&text, Path::new("c.toml")).expect_err(bad);
            assert!(e.0.starts_with("c.toml: health.units[1]: "), "{e}");
            assert!(e.0.contains(bad), "{e}");
        }
    }
}
