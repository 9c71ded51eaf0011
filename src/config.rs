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
use crate::timefmt::parse_duration_saturating;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where the main file lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/abupdate/config.toml";

/// The largest config file (or drop-in) read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

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
    /// `[update]`.
    pub update: Update,
    /// `[system]`: where the host tells its facts.
    pub system: System,
    /// `[bootloader]`.
    pub bootloader: Bootloader,
    /// Per slot, class name → device or file.
    pub slots: BTreeMap<SlotName, BTreeMap<String, PathBuf>>,
    /// `[health]`.
    pub health: Health,
    /// `[rollout]`.
    pub rollout: RolloutSettings,
    /// `[reboot]`.
    pub reboot: Reboot,
    /// `[report]`.
    pub report: Report,
    /// What loads but should change, one line each naming the key and its
    /// file (an operator label abupdate took later,
    /// [`crate::report::LATER_LABELS`]): each command that opens the host
    /// prints them once.
    pub warnings: Vec<String>,
    /// The config files and drop-in directory that others than root (or
    /// the user abupdate runs as) could change, one line each naming it and
    /// why ([`crate::safe_path`]): read, and left to the command to refuse
    /// or warn about ([`crate::agent::Purpose`]).
    pub open_to_others: Vec<String>,
    /// Install hooks (`[hooks]`).
    pub hooks: Hooks,
}

/// `[rollout]`.
#[derive(Clone, Debug, Default)]
pub struct RolloutSettings {
    /// Overrides the host's fleet position: 0.0 = canary, 1.0 = last wave.
    pub wariness: Option<f64>,
}

/// `[reboot]`.
#[derive(Clone, Debug, Default)]
pub struct Reboot {
    /// Maintenance windows; empty = reboot any time.
    pub windows: Vec<crate::schedule::Window>,
    /// Site-wide reboot coordination (FleetLock), if configured.
    pub fleetlock: Option<FleetLock>,
}

/// `[reboot] fleetlock` and `group`: a reboot into a trial takes this
/// group's lock on this server first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetLock {
    /// The server's base URL (`/v1/pre-reboot` and `/v1/steady-state`
    /// below it).
    pub url: String,
    /// The reboot group: hosts of one group (a site) never reboot together.
    pub group: String,
}

/// `[hooks]`: executables run at points of an install, bounded like health
/// checks.
#[derive(Clone, Debug)]
pub struct Hooks {
    /// Before anything is written; failing refuses the install.
    pub pre_install: Option<PathBuf>,
    /// After the images are written and verified, before activation;
    /// failing leaves the target bad.
    pub post_install: Option<PathBuf>,
    /// Right before the reboot into a trial (after the site lock); failing
    /// holds the reboot.
    pub pre_reboot: Option<PathBuf>,
    /// Each hook is killed (with what it started) after this long.
    pub timeout: Duration,
}

/// `[report]`.
#[derive(Clone, Debug)]
pub struct Report {
    /// node_exporter textfile-collector file, written after every verdict.
    pub textfile: Option<PathBuf>,
    /// Where each outcome is POSTed.
    pub webhook: Option<String>,
    /// The whole delivery of one report, all attempts.
    pub webhook_timeout: Duration,
    /// Attempts per report.
    pub webhook_attempts: u32,
    /// Operator labels on every textfile series (`site`, `region`, …).
    pub labels: BTreeMap<String, String>,
    /// Trust roots for an https webhook: `[update] ca_file`.
    pub ca_file: Option<PathBuf>,
    /// Where the host's CA bundle may be: `[system] ca_bundles`.
    pub ca_bundles: Vec<PathBuf>,
}

/// `[update]`.
#[derive(Clone, Debug)]
pub struct Update {
    /// The release manifest's URL or path.
    pub url: Option<String>,
    /// Instead of `url`: a signed release channel's URL or path
    /// ([`crate::channel`]).
    pub channel: Option<String>,
    /// The release track this host follows (`stable`): the signed `track`
    /// its channel, the manifest at its `url` and the unpinned manifests
    /// its channel names must state ([`crate::manifest::check_track`]).
    /// `None`: any document, with a track or without (as before tracks).
    pub track: Option<String>,
    /// Must equal the manifest's.
    pub compatible: String,
    /// Where `state.json` and partial downloads live.
    pub state_dir: PathBuf,
    /// Directories of trusted `*.pub` keys.
    pub keys_dirs: Vec<PathBuf>,
    /// Signatures by distinct trusted keys needed.
    pub threshold: usize,
    /// HTTP(S) proxy (else the environment's).
    pub proxy: Option<String>,
    /// Trust roots for a private update server.
    pub ca_file: Option<PathBuf>,
    /// Longest a connection may take.
    pub connect_timeout: Duration,
    /// Longest a transfer may go without progress.
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
    /// Cap of the backoff.
    pub backoff_max: Duration,
    // ---- thin links (issue 19) ----
    /// `max_rate`, `rate_windows` and `download_windows`.
    pub pacing: crate::fetch::Pacing,
    /// `retries`, `retry_delay`, `retry_after_max`.
    pub retry: crate::fetch::RetryPolicy,
    /// `headers_file`, `client_cert`, `client_key`.
    pub credentials: crate::fetch::CredentialFiles,
}

/// `[system]`: each fact a file, so tests need no root paths.
#[derive(Clone, Debug)]
pub struct System {
    /// The kernel command line (`abupdate.slot=` / `rauc.slot=`).
    pub cmdline: PathBuf,
    /// os-release (`IMAGE_VERSION=`, else `VERSION_ID=`).
    pub os_release: PathBuf,
    /// The machine id (the fleet position's key).
    pub machine_id: PathBuf,
    /// The kernel's boot id.
    pub boot_id: PathBuf,
    /// The host's uptime (`/proc/uptime`: seconds since boot first), what
    /// a probation's window is counted in.
    pub uptime: PathBuf,
    /// The mount table (`/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
    /// The reboot command.
    pub reboot: Vec<String>,
    /// Where the host's CA bundle may be, tried in order when `[update]
    /// ca_file` is not set ([`crate::fetch::trust_roots`]).
    pub ca_bundles: Vec<PathBuf>,
}

/// Which bootloader the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootloaderKind {
    /// GRUB with RAUC's variables in grubenv.
    Grub,
    /// U-Boot with RAUC's variables in its env.
    Uboot,
    /// UEFI `Boot####` entries, `BootNext` trials.
    Efi,
    /// systemd-boot BLS entries with boot counting.
    SystemdBoot,
    /// A RAUC custom backend script.
    Custom,
}

/// `[bootloader]`.
#[derive(Clone, Debug)]
pub struct Bootloader {
    /// Which one.
    pub kind: BootloaderKind,
    /// GRUB's env file.
    pub grubenv: PathBuf,
    /// libubootenv's config (device, offset, size; two lines = redundant).
    pub fw_env_config: PathBuf,
    /// The custom backend script.
    pub script: Option<PathBuf>,
    /// Boots a new slot gets before the bootloader gives up on it.
    pub tries: u32,
    /// U-Boot: boots a committed (marked good) slot gets, RAUC's
    /// `boot-attempts` (default 3).
    pub good_tries: u32,
    /// efi: where the UEFI variables are (efivarfs, or a stand-in directory).
    pub efivarfs: PathBuf,
    /// efi, systemd-boot: the ESP's mount point. A slot class whose path is
    /// on it is a file, replaced whole (see [`Config::is_file_target`]).
    pub esp: Option<PathBuf>,
    /// efi: each slot's `Boot####` entry.
    pub efi: BTreeMap<SlotName, crate::boot::efi::EfiSlot>,
    /// systemd-boot: the entries' file name prefix (`PREFIX-GEN-a.conf`).
    pub entry_prefix: String,
    /// systemd-boot: how a missing entry is written.
    pub entries: BTreeMap<SlotName, crate::boot::systemd_boot::EntryConfig>,
}

/// `[health]`.
#[derive(Clone, Debug)]
pub struct Health {
    /// Executables that must exit 0.
    pub dir: PathBuf,
    /// `dir` was set in the config: it must then exist (a typo there must
    /// not mean "no checks"); the default may be missing.
    pub dir_required: bool,
    /// The whole verdict's deadline.
    pub timeout: Duration,
    /// One check's deadline.
    pub check_timeout: Duration,
    /// Between rounds.
    pub interval: Duration,
    /// systemd units that must be active.
    pub units: Vec<String>,
    /// URLs that must answer 2xx.
    pub http: Vec<String>,
    /// Trust roots for an https check: `[update] ca_file`.
    pub ca_file: Option<PathBuf>,
    /// Where the host's CA bundle may be: `[system] ca_bundles`.
    pub ca_bundles: Vec<PathBuf>,
    /// How long a committed release stays on probation (`probation`,
    /// zero: none); see `agent::probation`.
    pub probation: Duration,
    /// Failures tolerated within the probation (`probation_failures`,
    /// default 2): one more rolls the release back.
    pub probation_failures: u32,
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
    #[serde(default)]
    hooks: HooksFragment,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HooksFragment {
    pre_install: Option<String>,
    post_install: Option<String>,
    pre_reboot: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RateWindowFragment {
    days: Option<Vec<String>>,
    start: Option<String>,
    length: Option<String>,
    zone: Option<String>,
    max_rate: Option<String>,
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
    fleetlock: Option<String>,
    group: Option<String>,
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
    channel: Option<String>,
    track: Option<String>,
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
    // ---- thin links (issue 19) ----
    max_rate: Option<String>,
    #[serde(default)]
    rate_windows: Vec<RateWindowFragment>,
    #[serde(default)]
    download_windows: Vec<WindowFragment>,
    retries: Option<u32>,
    retry_delay: Option<String>,
    retry_after_max: Option<String>,
    headers_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SystemFragment {
    cmdline: Option<String>,
    os_release: Option<String>,
    machine_id: Option<String>,
    boot_id: Option<String>,
    uptime: Option<String>,
    mountinfo: Option<String>,
    reboot: Option<Vec<String>>,
    ca_bundles: Option<Vec<String>>,
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
    efivarfs: Option<String>,
    esp: Option<String>,
    entry_prefix: Option<String>,
    efi: Option<BTreeMap<String, EfiSlotFragment>>,
    #[serde(rename = "systemd-boot")]
    systemd_boot: Option<BTreeMap<String, EntryFragment>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EfiSlotFragment {
    entry: Option<u32>,
    description: Option<String>,
    loader: Option<String>,
    partition: Option<String>,
    options: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EntryFragment {
    title: Option<String>,
    linux: Option<String>,
    efi: Option<String>,
    initrd: Option<Vec<String>>,
    options: Option<String>,
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
    probation: Option<String>,
    probation_failures: Option<u32>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.bytes().filter(|&b| b == b'\n').count() + 1)
        .unwrap_or(1)
}

/// The path of the key at byte `at` of the document `table` was parsed
/// from, as messages name keys: `update.max_rate`,
/// `update.rate_windows[1].rate`; `None` when no key is there.
///
/// A key's name or a plain value under `at` wins over a table or array that
/// spans it (the first pass): a header table's span may reach over its
/// neighbours, and the tables iterate in key order, not document order.
fn key_path_at(table: &DeTable<'_>, at: usize) -> Option<String> {
    [false, true].into_iter().find_map(|containers| {
        let mut path = String::new();
        path_in_table(table, at, containers, &mut path).then_some(path)
    })
}

fn covers(span: std::ops::Range<usize>, at: usize) -> bool {
    span.start <= at && at < span.end
}

fn path_in_table(table: &DeTable<'_>, at: usize, containers: bool, path: &mut String) -> bool {
    for (key, value) in table {
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        let name = key.get_ref();
        if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            path.push_str(name);
        } else {
            // Quoted as TOML would need it, so `"a.b"` is not read as two keys.
            path.push_str(&format!("{name:?}"));
        }
        if covers(key.span(), at) || path_in_value(value, at, containers, path) {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn path_in_value(
    value: &Spanned<DeValue<'_>>,
    at: usize,
    containers: bool,
    path: &mut String,
) -> bool {
    let inside = match value.get_ref() {
        DeValue::Table(t) => path_in_table(t, at, containers, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = path_in_value(item, at, containers, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => return covers(value.span(), at),
    };
    inside || (containers && covers(value.span(), at))
}

/// Parse and check one fragment (`name` is the file named in messages);
/// returns it typed, and as the table that merges.
///
/// Every document, each file and the merged whole, goes through the one
/// deserializer over a spanned [`DeTable`], so that serde's generic code
/// for the fragment types exists once in the binary (a second instance, over
/// `toml::Value`, cost ~70 KB of the static binary).
fn read_fragment<'t>(
    text: &'t str,
    name: &Path,
) -> Result<(Fragment, Spanned<DeTable<'t>>), ConfigError> {
    let describe = |e: toml::de::Error, table: Option<&DeTable<'_>>| {
        let parsing = table.is_none();
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        let mut msg = e.message().replace('\n', " ");
        // serde's messages name the value or the unknown key, not where it
        // sits ("invalid type: integer `5`"): put the key's path in front,
        // found from the parsed table's spans (the error keeps its own path
        // private, and scraping its Display would break with its layout).
        if let Some(path) = e
            .span()
            .zip(table)
            .and_then(|(s, t)| key_path_at(t, s.start))
        {
            msg = format!("{path}: {msg}");
        }
        // The parser's messages do not quote what they point at ("duplicate
        // key"): add the text under the span when it is a short one-liner.
        // (serde's, for the typed fragment, name the key or value already.)
        match e.span().and_then(|s| text.get(s)) {
            Some(at) if parsing && !at.is_empty() && at.len() <= 64 && !at.contains('\n') => {
                msg = format!("{msg} `{}`", at.escape_debug());
            }
            _ => {}
        }
        ConfigError(format!("{}:{line}: {msg}", name.display()))
    };
    let table = DeTable::parse(text).map_err(|e| describe(e, None))?;
    // Deserialising into the typed fragment is what finds unknown keys and
    // wrong types with a position; the table is what merges.
    let fragment = fragment_of(table.clone()).map_err(|e| describe(e, Some(table.get_ref())))?;
    Ok((fragment, table))
}

fn fragment_of(table: Spanned<DeTable<'_>>) -> Result<Fragment, toml::de::Error> {
    Fragment::deserialize(toml::de::Deserializer::from(table))
}

// ---- step 2: merge --------------------------------------------------------

/// Where each value of the merged configuration came from, by key path
/// (`update.url`, `reboot.window`; values, not tables): the index of its
/// file and its line there. The checks of the merged whole (a value out of
/// range, or wrong only with another key) run on a table whose spans point
/// into several files, so this is what lets their messages name the file
/// and line of the value that won the merge, as a parse error does.
#[derive(Default)]
struct Origins(BTreeMap<String, (usize, usize)>);

/// `path` is `key` itself or a key inside it (`key.x`, `key[0]`).
fn within(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

impl Origins {
    /// The file and line of `key`, as `from_fragment`'s checks name keys
    /// (`health.units[1]`, `reboot.window[0]`, `slots.A`): the value at
    /// that path or the one holding it (an array is one value); else the
    /// values inside it (a table), when they all come from one file, at
    /// the first of their lines. `None`: not from one file (or not set).
    fn of(&self, key: &str) -> Option<(usize, usize)> {
        let mut at = key;
        loop {
            if let Some(&o) = self.0.get(at) {
                return Some(o);
            }
            match at.rfind(['.', '[']) {
                Some(i) => at = &at[..i],
                None => break,
            }
        }
        let mut inside = self
            .0
            .iter()
            .filter(|(p, _)| within(p, key))
            .map(|(_, o)| *o);
        let first = inside.next()?;
        inside.try_fold(first, |(file, line), (f, l)| {
            (f == file).then_some((file, line.min(l)))
        })
    }
}

/// Merge `over` (file number `file`, text `text`) into `base` under the
/// key path `prefix`, recording in `origins` where each value came from.
/// A table is merged key by key even where `base` has none, so every value
/// is recorded; a value replaced forgets the origins of what it replaced.
fn merge<'t>(
    base: &mut DeTable<'t>,
    over: DeTable<'t>,
    (file, text): (usize, &str),
    prefix: &str,
    origins: &mut Origins,
) {
    for (key, value) in over {
        let path = match prefix {
            "" => key.get_ref().to_string(),
            _ => format!("{prefix}.{}", key.get_ref()),
        };
        let (span, value) = (value.span(), value.into_inner());
        match (
            base.get_mut(key.get_ref().as_ref()).map(Spanned::get_mut),
            value,
        ) {
            (Some(DeValue::Table(b)), DeValue::Table(o)) => {
                merge(b, o, (file, text), &path, origins)
            }
            (_, DeValue::Table(o)) => {
                origins.0.retain(|p, _| !within(p, &path));
                let mut t = DeTable::new();
                merge(&mut t, o, (file, text), &path, origins);
                base.insert(key, Spanned::new(span, DeValue::Table(t)));
            }
            (_, v) => {
                origins.0.retain(|p, _| !within(p, &path));
                record_inside(&v, &path, (file, text), origins);
                origins.0.insert(path, (file, line_of(text, span.start)));
                base.insert(key, Spanned::new(span, v));
            }
        }
    }
}

/// Record where each value inside the array or table `value` (at `path`)
/// is: every element (`path[1]`) and every key of a table in it, so that a
/// check naming `update.download_windows[1]` points at that entry's own
/// `[[…]]` header (and `…[1].max_rate` at that key), not at the array's
/// first header.
fn record_inside(value: &DeValue, path: &str, (file, text): (usize, &str), origins: &mut Origins) {
    let mut record = |at: String, item: &Spanned<DeValue>| {
        origins
            .0
            .insert(at.clone(), (file, line_of(text, item.span().start)));
        record_inside(item.get_ref(), &at, (file, text), origins);
    };
    match value {
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                record(format!("{path}[{i}]"), item);
            }
        }
        DeValue::Table(table) => {
            for (key, item) in table {
                record(format!("{path}.{}", key.get_ref()), item);
            }
        }
        _ => {}
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
        // Under the health unit's 30-minute backstop (TimeoutStartSec):
        // a verdict that systemd cuts is no verdict, and the trial falls
        // back as if it never booted (found from outside, stop 48).
        "health.timeout" | "health.check_timeout" => (false, 25 * MINUTE),
        "health.interval" => (true, HOUR),
        "health.probation" => (true, 30 * DAY),
        // The whole delivery of one report, all attempts: it may delay a
        // reboot by this much.
        "report.webhook_timeout" => (false, MINUTE),
        "update.retry_delay" => (true, HOUR),
        // Zero: never wait for a server's Retry-After within a run.
        "update.retry_after_max" => (true, HOUR),
        "hooks.timeout" => (false, DAY),
        _ => (false, DAY),
    };
    (zero_ok, Duration::from_secs(max))
}

// ---- upgrades keep configs ------------------------------------------------
//
// The rule (README "Configuration", "Upgrades keep configs"): an upgrade never
// turns a config an earlier version accepted into a refused one. abupdate ships
// inside the images it installs: the build that judges a trial is the new one,
// reading the config the old one accepted, and a refusal there (exit 2) leaves
// the trial without a verdict, so the release falls back on every such host and
// is blamed for it. So each check narrowed since a release (the duration ranges,
// `threshold = 0`, a unit without a type, a mirror that is not an http(s) URL,
// a window's spelling) reads what an earlier version accepted as the nearest
// value this one takes, with one warning naming the file, line and key (from
// `from_fragment`'s `warn`); what was refused before stays refused.

/// `d` (written `text`) within the range of `key`: `Ok(d)`; else the value
/// used instead and why, for a warning. Above the maximum: the maximum (the
/// bound exists so that no `Instant + duration` overflows, which clamping
/// keeps). Zero where zero means nothing (a timeout of 0 would fail every
/// fetch or check, which nobody means): the key's `default`.
fn clamp_duration(
    key: &str,
    text: &str,
    d: Duration,
    default: Duration,
) -> Result<Duration, (Duration, String)> {
    use crate::timefmt::format_duration;
    let (zero_ok, max) = duration_bounds(key);
    if d.is_zero() && !zero_ok {
        return Err((
            default,
            format!(
                "{text:?} must be more than zero; using the default {}",
                format_duration(default)
            ),
        ));
    }
    if d > max {
        let max_text = format_duration(max);
        return Err((
            max,
            format!("{text:?} is longer than the {max_text} this key allows; using {max_text}"),
        ));
    }
    Ok(d)
}

/// A weekly window from its keys (`days` default `*`); the error names the
/// key that is wrong. One written as only earlier versions take it
/// (`thurs`, `2:5`, `+1:00`) is read as they read it, with a warning.
fn window_of(
    key: &str,
    days: Option<Vec<String>>,
    start: &Option<String>,
    length: &Option<String>,
    zone: &Option<String>,
    warn: &dyn Fn(&str, String),
) -> Result<crate::schedule::Window, (String, String)> {
    let start = start.as_deref().ok_or_else(|| {
        (
            format!("{key}.start"),
            "missing (e.g. \"02:00\")".to_string(),
        )
    })?;
    let length = length
        .as_deref()
        .ok_or_else(|| (format!("{key}.length"), "missing (e.g. \"2h\")".to_string()))?;
    let days = days.unwrap_or_else(|| vec!["*".into()]);
    let zone = zone.as_deref();
    crate::schedule::Window::parse(&days, start, length, zone).or_else(|e| {
        let w = crate::schedule::Window::parse_as_before(&days, start, length, zone)
            .ok_or_else(|| (key.to_string(), e.clone()))?;
        warn(
            key,
            format!("{e}; read as earlier versions did: {}", w.describe()),
        );
        Ok(w)
    })
}

impl Config {
    /// Load `main` (which must exist) and its `config.d/*.toml` drop-ins.
    /// Each file, and the drop-in directory, is judged by
    /// [`crate::safe_path`]: one that others than root could change is
    /// read still, and named in [`Config::open_to_others`], for the command
    /// to refuse or warn about ([`crate::agent::Purpose`]): the config
    /// says which keys are trusted, which devices are written and what runs
    /// as root.
    pub fn load(main: &Path) -> Result<Config, ConfigError> {
        let mut open_to_others = Vec::new();
        // The path to read: the one judged when it passes; else, when it
        // exists, the configured one, named as open to others (a missing
        // one fails its read as before).
        let mut judged = |p: &Path, verdict: Result<PathBuf, String>| match verdict {
            Ok(resolved) => resolved,
            Err(why) => {
                if std::fs::metadata(p).is_ok() {
                    open_to_others.push(format!("{}: {why}", crate::text::show_path(p)));
                }
                p.to_path_buf()
            }
        };
        let mut files = vec![main.to_path_buf()];
        let dir = dropin_dir(main);
        // A `config.d` that is not a directory was never read.
        if std::fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
            let resolved = judged(&dir, crate::safe_path::trusted_dir(&dir));
            let names = crate::files::listed(&resolved, b".toml").map_err(|e| {
                ConfigError(format!(
                    "{}: cannot be listed: {e}",
                    crate::text::show_path(&dir)
                ))
            })?;
            files.extend(names.into_iter().map(|n| dir.join(n)));
        }
        let texts = files
            .iter()
            .map(|f| {
                let resolved = judged(f, crate::safe_path::trusted_file(f));
                crate::files::read_text_capped(&resolved, MAX_CONFIG_BYTES)
                    .map_err(|e| ConfigError(format!("{}: {e}", crate::text::show_path(f))))
            })
            .collect::<Result<Vec<String>, ConfigError>>()?;
        let mut merged = DeTable::new();
        let mut origins = Origins::default();
        for (i, (file, text)) in files.iter().zip(&texts).enumerate() {
            let table = read_fragment(text, file)?.1.into_inner();
            merge(&mut merged, table, (i, text), "", &mut origins);
        }
        // Each file is checked above: what is left to fail here is the whole
        // (no span: the keys come from several files).
        let fragment = fragment_of(Spanned::new(0..0, merged))
            .map_err(|e| ConfigError(format!("{}: {}", main.display(), e.message())))?;
        let mut config = Config::from_fragment(fragment, files, &origins)?;
        config.open_to_others = open_to_others;
        Ok(config)
    }

    /// Parse one TOML text as if it were the only file (tests, examples).
    pub fn from_str(text: &str, name: &Path) -> Result<Config, ConfigError> {
        let (fragment, table) = read_fragment(text, name)?;
        let mut origins = Origins::default();
        merge(
            &mut DeTable::new(),
            table.into_inner(),
            (0, text),
            "",
            &mut origins,
        );
        Config::from_fragment(fragment, vec![name.to_path_buf()], &origins)
    }

    // Long on purpose: every key is checked here, in one pass, against its
    // range, each error naming its key with the same `err`; the sections are
    // plain data, and splitting the pass would scatter that context.
    fn from_fragment(
        f: Fragment,
        files: Vec<PathBuf>,
        origins: &Origins,
    ) -> Result<Config, ConfigError> {
        let all = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // The file and line of the value that won the merge when one file
        // holds it; else (a key not set, or set across files) every file.
        let at = |key: &str| {
            origins
                .of(key)
                .and_then(|(i, line)| Some(format!("{}:{line}", files.get(i)?.display())))
                .unwrap_or_else(|| all.clone())
        };
        let err = |key: &str, what: String| ConfigError(format!("{}: {key}: {what}", at(key)));
        // What loads but should change (see "upgrades keep configs"), in the
        // same form as `err`'s messages.
        let warnings = std::cell::RefCell::new(Vec::new());
        let warn = |key: &str, what: String| {
            warnings
                .borrow_mut()
                .push(format!("{}: {key}: {what}", at(key)));
        };
        // Every duration key has a range (see `duration_bounds`): a value
        // out of it is clamped into it here with a warning naming the key,
        // so no later `Instant + duration` can overflow. A number too large
        // for its unit is only longer than the range (older builds
        // saturated it).
        let duration = |key: &str, v: Option<String>, default: u64| {
            let default = Duration::from_secs(default);
            let Some(text) = v else {
                return Ok(default);
            };
            let d = parse_duration_saturating(&text).map_err(|e| err(key, e))?;
            Ok(
                clamp_duration(key, &text, d, default).unwrap_or_else(|(used, why)| {
                    warn(key, why);
                    used
                }),
            )
        };

        let compatible = f.update.compatible.ok_or_else(|| {
            err(
                "update.compatible",
                "missing (the manifest's compatible string this host accepts)".into(),
            )
        })?;
        // 0 is never "no signature needed": it is 1, as builds up to
        // 213989b read it (`max(1)`), now with a warning.
        let threshold = match f.update.threshold.unwrap_or(1) {
            0 => {
                warn(
                    "update.threshold",
                    "0 means at least 1 signature by a trusted key; using 1".into(),
                );
                1
            }
            n => n as usize,
        };
        let max_window_log = f.update.max_window_log.unwrap_or(27);
        if !(10..=31).contains(&max_window_log) {
            return Err(err(
                "update.max_window_log",
                format!("{max_window_log} is outside 10..=31"),
            ));
        }
        if f.update.url.is_some() && f.update.channel.is_some() {
            return Err(err(
                "update.channel",
                "set either update.url (one release) or update.channel (a release channel), not both".into(),
            ));
        }
        // A mirror only saves bandwidth (signatures make every source
        // alike): one earlier versions took but this one cannot use is left
        // out, and the origin serves.
        let mirror = f
            .update
            .mirror
            .filter(|m| match crate::fetch::check_mirror(m) {
                Ok(()) => true,
                Err(e) => {
                    warn("update.mirror", format!("{e}; fetching from the origin"));
                    false
                }
            });
        if let Some(t) = &f.update.track {
            crate::manifest::check_track_name(t).map_err(|e| err("update.track", e))?;
        }
        if let Some(s) = &f.update.signature_url {
            crate::fetch::check_signature_url(s, threshold)
                .map_err(|e| err("update.signature_url", e))?;
        }
        // ---- thin links (issue 19) ----
        let rate = |key: &str, v: &Option<String>| match v {
            None => Ok(None),
            Some(text) => crate::fetch::parse_rate(text).map_err(|e| err(key, e)),
        };
        let max_rate = rate("update.max_rate", &f.update.max_rate)?;
        let mut rate_windows = Vec::new();
        for (i, w) in f.update.rate_windows.iter().enumerate() {
            let key = format!("update.rate_windows[{i}]");
            let window = window_of(&key, w.days.clone(), &w.start, &w.length, &w.zone, &warn)
                .map_err(|(k, e)| err(&k, e))?;
            let Some(text) = &w.max_rate else {
                return Err(err(
                    &format!("{key}.max_rate"),
                    "missing (e.g. \"500kB/s\", or \"unlimited\")".into(),
                ));
            };
            let rate = rate(&format!("{key}.max_rate"), &Some(text.clone()))?;
            rate_windows.push(crate::fetch::RateWindow { window, rate });
        }
        let mut download_windows = Vec::new();
        for (i, w) in f.update.download_windows.iter().enumerate() {
            let key = format!("update.download_windows[{i}]");
            download_windows.push(
                window_of(&key, w.days.clone(), &w.start, &w.length, &w.zone, &warn)
                    .map_err(|(k, e)| err(&k, e))?,
            );
        }
        let retries = f.update.retries.unwrap_or(5);
        if retries > 100 {
            return Err(err(
                "update.retries",
                format!("{retries} is outside 0..=100"),
            ));
        }
        let retry = crate::fetch::RetryPolicy {
            retries,
            first_delay: duration("update.retry_delay", f.update.retry_delay, 1)?,
            retry_after_max: duration("update.retry_after_max", f.update.retry_after_max, 300)?,
        };
        let credentials = crate::fetch::CredentialFiles {
            headers_file: f.update.headers_file.map(PathBuf::from),
            client_cert: f.update.client_cert.map(PathBuf::from),
            client_key: f.update.client_key.map(PathBuf::from),
        };
        match (&credentials.client_cert, &credentials.client_key) {
            (Some(_), None) => {
                return Err(err(
                    "update.client_key",
                    "missing (required with update.client_cert)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "update.client_cert",
                    "missing (required with update.client_key)".into(),
                ))
            }
            _ => {}
        }
        let mut update = Update {
            url: f.update.url,
            channel: f.update.channel,
            track: f.update.track,
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
            ca_file: f.update.ca_file.clone().map(PathBuf::from),
            connect_timeout: duration("update.connect_timeout", f.update.connect_timeout, 30)?,
            read_timeout: duration("update.read_timeout", f.update.read_timeout, 60)?,
            max_window_log,
            mirror,
            signature_url: f.update.signature_url,
            resume_downloads: f.update.resume_downloads.unwrap_or(true),
            jitter: duration("update.jitter", f.update.jitter, 0)?,
            backoff_base: duration("update.backoff_base", f.update.backoff_base, 300)?,
            backoff_max: duration("update.backoff_max", f.update.backoff_max, 6 * 3600)?,
            pacing: crate::fetch::Pacing {
                max_rate,
                rate_windows,
                download_windows,
            },
            retry,
            credentials,
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
        let mut system = System {
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
            uptime: f
                .system
                .uptime
                .unwrap_or_else(|| "/proc/uptime".into())
                .into(),
            mountinfo: f
                .system
                .mountinfo
                .unwrap_or_else(|| "/proc/self/mountinfo".into())
                .into(),
            ca_bundles: match f.system.ca_bundles {
                Some(paths) => paths.into_iter().map(PathBuf::from).collect(),
                None => crate::fetch::system_ca_bundles(),
            },
            reboot,
        };

        let kind = match f.bootloader.kind.as_deref().unwrap_or("grub") {
            "grub" => BootloaderKind::Grub,
            "uboot" => BootloaderKind::Uboot,
            "efi" => BootloaderKind::Efi,
            "systemd-boot" => BootloaderKind::SystemdBoot,
            "custom" => BootloaderKind::Custom,
            other => {
                return Err(err(
                    "bootloader.kind",
                    format!("{other:?} is not one of grub, uboot, efi, systemd-boot, custom"),
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
        let mut bootloader = Bootloader {
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
            efivarfs: f
                .bootloader
                .efivarfs
                .unwrap_or_else(|| "/sys/firmware/efi/efivars".into())
                .into(),
            esp: f.bootloader.esp.map(PathBuf::from),
            efi: efi_slots(f.bootloader.efi.unwrap_or_default(), &err)?,
            entry_prefix: f
                .bootloader
                .entry_prefix
                .unwrap_or_else(|| "abupdate".into()),
            entries: entry_configs(f.bootloader.systemd_boot.unwrap_or_default(), &err)?,
        };
        if kind == BootloaderKind::SystemdBoot && bootloader.esp.is_none() {
            return Err(err(
                "bootloader.esp",
                "missing (the ESP's mount point; required when kind = \"systemd-boot\")".into(),
            ));
        }
        let p = &bootloader.entry_prefix;
        if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(err(
                "bootloader.entry_prefix",
                format!("{p:?}: use letters, digits, '-', '_' and '.'"),
            ));
        }

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

        let mut health = Health {
            dir_required: f.health.dir.is_some(),
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
            ca_file: f.update.ca_file.clone().map(PathBuf::from),
            ca_bundles: system.ca_bundles.clone(),
            probation: duration("health.probation", f.health.probation, 0)?,
            probation_failures: f.health.probation_failures.unwrap_or(2),
        };
        // A unit named like an option (`-h`, `--version`) is left out with a
        // warning, not refused: 213989b and earlier passed it to `systemctl
        // is-active --quiet` as an option, which answered 0, so it was a
        // check that always passed, and refusing it now would fail the
        // trial of the release carrying this build on every such host
        // (upgrades keep configs). Any other name that is not a unit stays
        // refused: `systemctl` failed it there too.
        let mut units = Vec::with_capacity(health.units.len());
        for (i, unit) in std::mem::take(&mut health.units).into_iter().enumerate() {
            let key = format!("health.units[{i}]");
            if unit.starts_with('-') {
                warn(
                    &key,
                    format!(
                        "{unit:?} is an option, not a unit name: left out (earlier versions passed it to systemctl as an option, a check that always passed)"
                    ),
                );
                continue;
            }
            units.push(crate::health::unit_name(&unit).map_err(|e| err(&key, e))?);
        }
        health.units = units;

        let wariness = f.rollout.wariness;
        if let Some(w) = wariness {
            if !(0.0..=1.0).contains(&w) {
                return Err(err("rollout.wariness", format!("{w} is outside 0.0..=1.0")));
            }
        }
        let mut windows = Vec::new();
        for (i, w) in f.reboot.window.into_iter().enumerate() {
            let key = format!("reboot.window[{i}]");
            windows.push(
                window_of(&key, w.days, &w.start, &w.length, &w.zone, &warn)
                    .map_err(|(k, e)| err(&k, e))?,
            );
        }
        let fleetlock = match f.reboot.fleetlock {
            None => {
                if f.reboot.group.is_some() {
                    return Err(err(
                        "reboot.group",
                        "set without reboot.fleetlock (the lock server it is a group of)".into(),
                    ));
                }
                None
            }
            Some(url) => {
                crate::fetch::check_service_url(&url).map_err(|e| err("reboot.fleetlock", e))?;
                let group = f.reboot.group.unwrap_or_else(|| "default".into());
                crate::fleetlock::check_group(&group).map_err(|e| err("reboot.group", e))?;
                Some(FleetLock { url, group })
            }
        };
        let hook = |key: &str, v: Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            match v {
                None => Ok(None),
                Some(p) if Path::new(&p).is_absolute() => Ok(Some(PathBuf::from(p))),
                Some(p) => Err(err(key, format!("{p:?} is not an absolute path"))),
            }
        };
        let hooks = Hooks {
            pre_install: hook("hooks.pre_install", f.hooks.pre_install)?,
            post_install: hook("hooks.post_install", f.hooks.post_install)?,
            pre_reboot: hook("hooks.pre_reboot", f.hooks.pre_reboot)?,
            timeout: duration("hooks.timeout", f.hooks.timeout, 300)?,
        };
        let mut report = Report {
            textfile: f.report.textfile.map(PathBuf::from),
            webhook: f.report.webhook,
            webhook_timeout: duration("report.webhook_timeout", f.report.webhook_timeout, 5)?,
            webhook_attempts: f.report.webhook_attempts.unwrap_or(3).clamp(1, 10),
            labels: f.report.labels.unwrap_or_default(),
            ca_file: f.update.ca_file.clone().map(PathBuf::from),
            ca_bundles: system.ca_bundles.clone(),
        };
        if report.labels.len() > crate::report::MAX_LABELS {
            return Err(err(
                "report.labels",
                format!("more than {} labels", crate::report::MAX_LABELS),
            ));
        }
        for (name, value) in &report.labels {
            let key = format!("report.labels.{name}");
            crate::report::check_label(name, value).map_err(|e| err(&key, e))?;
            warnings
                .borrow_mut()
                .extend(crate::report::later_label_warning(name, &at(&key)));
        }
        // A relative path would mean whatever directory the command runs
        // in; the timer's service runs in `/`. Every run reads it from
        // there, the timer's and one by hand alike, with a warning (refusing
        // it would stop hosts whose service always read it so).
        let mut anchored: Vec<String> = Vec::new();
        // An empty path is one too: the directory the command runs in
        // (found from outside: `state_dir = ""` kept one state for the
        // timer, in /, and another for each directory a run by hand started
        // in).
        let mut anchor = |key: &str, p: &mut PathBuf| {
            if p.is_absolute() {
                return;
            }
            let absolute = Path::new("/").join(&*p);
            if !anchored.iter().any(|k| k == key) {
                anchored.push(key.to_string());
                let what = match p.as_os_str().is_empty() {
                    true => "\"\" (empty) is a relative path".to_string(),
                    false => format!("{} is a relative path", crate::text::show_path(p)),
                };
                warn(
                    key,
                    format!(
                        "{what}: read as {} (from /, where the service runs); write it absolute",
                        crate::text::show_path(&absolute)
                    ),
                );
            }
            *p = absolute;
        };
        anchor("update.state_dir", &mut update.state_dir);
        for p in &mut update.keys_dirs {
            anchor("update.keys_dirs", p);
        }
        let c = &mut update.credentials;
        for (key, p) in [
            ("update.headers_file", &mut c.headers_file),
            ("update.client_cert", &mut c.client_cert),
            ("update.client_key", &mut c.client_key),
            ("update.ca_file", &mut update.ca_file),
            ("update.ca_file", &mut health.ca_file),
            ("update.ca_file", &mut report.ca_file),
            ("bootloader.script", &mut bootloader.script),
            ("bootloader.esp", &mut bootloader.esp),
            ("report.textfile", &mut report.textfile),
        ] {
            if let Some(p) = p {
                anchor(key, p);
            }
        }
        for (key, p) in [
            ("system.cmdline", &mut system.cmdline),
            ("system.os_release", &mut system.os_release),
            ("system.machine_id", &mut system.machine_id),
            ("system.boot_id", &mut system.boot_id),
            ("system.uptime", &mut system.uptime),
            ("system.mountinfo", &mut system.mountinfo),
            ("bootloader.grubenv", &mut bootloader.grubenv),
            ("bootloader.fw_env_config", &mut bootloader.fw_env_config),
            ("bootloader.efivarfs", &mut bootloader.efivarfs),
            ("health.dir", &mut health.dir),
        ] {
            anchor(key, p);
        }
        for bundles in [
            &mut system.ca_bundles,
            &mut health.ca_bundles,
            &mut report.ca_bundles,
        ] {
            for p in bundles {
                anchor("system.ca_bundles", p);
            }
        }
        for (slot, classes) in &mut slots {
            for (class, p) in classes {
                anchor(&format!("slots.{slot}.{class}"), p);
            }
        }
        let warnings = warnings.into_inner();
        Ok(Config {
            files,
            update,
            system,
            bootloader,
            slots,
            health,
            rollout: RolloutSettings { wariness },
            reboot: Reboot { windows, fleetlock },
            report,
            warnings,
            open_to_others: Vec::new(),
            hooks,
        })
    }

    /// Whether `path` is a file on the ESP, installed by replacing the whole
    /// file (temp file, fsync, rename, fsync the directory) rather than
    /// written in place like a partition.
    pub fn is_file_target(&self, path: &Path) -> bool {
        self.bootloader
            .esp
            .as_deref()
            .is_some_and(|esp| path.starts_with(esp) && path != esp)
    }

    /// The device of `class` in `slot`.
    pub fn device(&self, slot: SlotName, class: &str) -> Option<&Path> {
        self.slots.get(&slot)?.get(class).map(PathBuf::as_path)
    }
}

/// The slot name of a `[bootloader.efi.X]` / `[bootloader.systemd-boot.X]` table.
fn slot_key(
    table: &str,
    name: &str,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<SlotName, ConfigError> {
    match name {
        "A" => Ok(SlotName::A),
        "B" => Ok(SlotName::B),
        _ => Err(err(
            &format!("bootloader.{table}.{name}"),
            "slot names are A and B".into(),
        )),
    }
}

/// `[bootloader.efi.A]`, `[bootloader.efi.B]`, defaults filled in.
fn efi_slots(
    tables: BTreeMap<String, EfiSlotFragment>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<BTreeMap<SlotName, crate::boot::efi::EfiSlot>, ConfigError> {
    use crate::boot::efi::EfiSlot;
    let mut out: BTreeMap<SlotName, EfiSlot> = SlotName::ALL
        .into_iter()
        .map(|s| (s, EfiSlot::default_for(s)))
        .collect();
    for (name, t) in tables {
        let slot = slot_key("efi", &name, err)?;
        let key = |k: &str| format!("bootloader.efi.{name}.{k}");
        let entry = match t.entry {
            Some(n) if n > 0xffff => {
                return Err(err(
                    &key("entry"),
                    format!("{n:#x} is not a Boot#### number"),
                ))
            }
            n => n.map(|n| n as u16),
        };
        let description = t.description.unwrap_or_else(|| format!("abupdate {slot}"));
        if description.is_empty() || description.contains('\0') {
            return Err(err(&key("description"), "must be a non-empty text".into()));
        }
        match (&t.loader, &t.partition) {
            (Some(_), None) => {
                return Err(err(
                    &key("partition"),
                    "missing (the ESP partition, needed with loader to recreate the entry)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    &key("loader"),
                    "missing (the loader's path on the ESP, needed with partition)".into(),
                ))
            }
            _ => {}
        }
        if let Some(p) = &t.partition {
            let ok = match p.strip_prefix("PARTUUID=") {
                Some(u) => crate::boot::efivar::guid_bytes(u).is_some(),
                None => p.starts_with('/'),
            };
            if !ok {
                return Err(err(
                    &key("partition"),
                    format!("{p:?} is neither a device path nor PARTUUID=<guid>"),
                ));
            }
        }
        out.insert(
            slot,
            EfiSlot {
                entry,
                description,
                loader: t.loader,
                partition: t.partition,
                options: t.options,
            },
        );
    }
    let (a, b) = (&out[&SlotName::A], &out[&SlotName::B]);
    if a.entry.is_some() && a.entry == b.entry {
        return Err(err(
            "bootloader.efi.B.entry",
            "A and B name the same Boot#### entry".into(),
        ));
    }
    if a.description == b.description {
        return Err(err(
            "bootloader.efi.B.description",
            "A and B have the same description".into(),
        ));
    }
    Ok(out)
}

/// `[bootloader.systemd-boot.A]`, `[bootloader.systemd-boot.B]`.
fn entry_configs(
    tables: BTreeMap<String, EntryFragment>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<BTreeMap<SlotName, crate::boot::systemd_boot::EntryConfig>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, t) in tables {
        let slot = slot_key("systemd-boot", &name, err)?;
        if t.linux.is_some() && t.efi.is_some() {
            return Err(err(
                &format!("bootloader.systemd-boot.{name}.efi"),
                "give linux or efi, not both".into(),
            ));
        }
        let lines = [&t.title, &t.linux, &t.efi, &t.options];
        if lines
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| v.contains('\n')))
            || t.initrd.iter().flatten().any(|v| v.contains('\n'))
        {
            return Err(err(
                &format!("bootloader.systemd-boot.{name}"),
                "values are single lines".into(),
            ));
        }
        out.insert(
            slot,
            crate::boot::systemd_boot::EntryConfig {
                title: t.title,
                linux: t.linux,
                efi: t.efi,
                initrd: t.initrd.unwrap_or_default(),
                options: t.options,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const MINIMAL: &str = r#"
[update]
compatible = "acme-edge"
[slots.A]
rootfs = "/dev/a"
[slots.B]
rootfs = "/dev/b"
"#;

    /// Found from outside (stop 47): relative paths meant the directory a
    /// command ran in: the timer's service (run from `/`) and a run by hand
    /// from elsewhere read other grubenvs, slots and states. Every run now
    /// reads them from `/`, with one warning per key.
    #[test]
    fn a_relative_path_is_read_from_the_root_with_a_warning() {
        let text = r#"
[update]
compatible = "acme-edge"
state_dir = "var/lib/abupdate"
keys_dirs = ["keys", "/etc/abupdate/keys"]
ca_file = "certs/ca.pem"
[bootloader]
grubenv = "boot/grub/grubenv"
[health]
dir = "health.d"
[slots.A]
rootfs = "dev/a"
[slots.B]
rootfs = "/dev/b"
"#;
        let c = Config::from_str(text, Path::new("c.toml")).expect("loads");
        assert_eq!(c.update.state_dir, PathBuf::from("/var/lib/abupdate"));
        assert_eq!(
            c.update.keys_dirs,
            [PathBuf::from("/keys"), PathBuf::from("/etc/abupdate/keys")]
        );
        assert_eq!(c.update.ca_file, Some(PathBuf::from("/certs/ca.pem")));
        assert_eq!(c.health.ca_file, Some(PathBuf::from("/certs/ca.pem")));
        assert_eq!(c.bootloader.grubenv, PathBuf::from("/boot/grub/grubenv"));
        assert_eq!(c.health.dir, PathBuf::from("/health.d"));
        assert_eq!(c.slots[&SlotName::A]["rootfs"], PathBuf::from("/dev/a"));
        assert_eq!(c.warnings.len(), 6, "{:#?}", c.warnings);
        assert!(
            c.warnings.contains(
                &"c.toml:4: update.state_dir: var/lib/abupdate is a relative path: read as \
                  /var/lib/abupdate (from /, where the service runs); write it absolute"
                    .to_string()
            ),
            "{:#?}",
            c.warnings
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("slots.A.rootfs: dev/a is a relative path")),
            "{:#?}",
            c.warnings
        );
        // An empty path is the directory a command runs in: read from / too.
        let empty = "[update]\ncompatible = \"acme-edge\"\nstate_dir = \"\"\n\
                     [slots.A]\nrootfs = \"/dev/a\"\n[slots.B]\nrootfs = \"/dev/b\"\n";
        let c = Config::from_str(empty, Path::new("c.toml")).expect("loads");
        assert_eq!(c.update.state_dir, PathBuf::from("/"));
        assert_eq!(
            c.warnings,
            [
                "c.toml:3: update.state_dir: \"\" (empty) is a relative path: read as / \
              (from /, where the service runs); write it absolute"
            ]
        );
    }

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
    fn type_errors_name_file_line_and_the_key_path() {
        // MINIMAL's lines 1-7; what follows starts at line 8.
        for (extra, line, key) in [
            (
                "[health]\ntimeout = 5\n",
                9,
                "health.timeout: invalid type: integer",
            ),
            // A dotted key inside a table, and a dotted table header.
            (
                "[system]\nreboot.x = 1\n",
                9,
                "system.reboot: invalid type: map",
            ),
            (
                "[report.labels]\nsite = 7\n",
                9,
                "report.labels.site: invalid type",
            ),
            // Arrays of tables: the element's index, as the checks name it.
            (
                "[[update.rate_windows]]\nstart = \"08:00\"\n\
                 [[update.rate_windows]]\nstart = 8\n",
                11,
                "update.rate_windows[1].start: invalid type: integer",
            ),
            // An unknown key names its table too.
            (
                "[[update.download_windows]]\nstrat = \"1\"\n",
                9,
                "update.download_windows[0].strat: unknown field `strat`",
            ),
            // A quoted key with a dot stays one key.
            (
                "[report.labels]\n\"a.b\" = 1\n",
                9,
                "report.labels.\"a.b\": invalid type",
            ),
        ] {
            let text = format!("{MINIMAL}{extra}");
            let e = Config::from_str(&text, Path::new("c.toml")).expect_err(extra);
            assert!(
                e.0.starts_with(&format!("c.toml:{line}: {key}")),
                "{extra}: {e}"
            );
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
        // The example of the bug report, whole.
        let text = MINIMAL.replacen("[update]\n", "[update]\nmax_rate = 5\n", 1);
        let e = Config::from_str(&text, Path::new("c.toml")).expect_err("max_rate = 5");
        assert_eq!(
            e.0,
            "c.toml:3: update.max_rate: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn key_path_at_prefers_the_key_under_the_offset_over_its_table() {
        let text = "[b]\nx = 1\n[a]\ny = [1, {z = 2}]\n";
        let table = DeTable::parse(text).expect("toml");
        let at = |needle: &str| text.find(needle).expect(needle);
        assert_eq!(
            key_path_at(table.get_ref(), at("x")).as_deref(),
            Some("b.x")
        );
        assert_eq!(
            key_path_at(table.get_ref(), at("1,")).as_deref(),
            Some("a.y[0]")
        );
        assert_eq!(
            key_path_at(table.get_ref(), at("2}")).as_deref(),
            Some("a.y[1].z")
        );
        assert_eq!(
            key_path_at(table.get_ref(), at("{z")).as_deref(),
            Some("a.y[1]")
        );
        assert_eq!(key_path_at(table.get_ref(), text.len() + 5), None);
    }

    #[test]
    fn syntax_errors_name_file_line_and_the_duplicate_key() {
        // MINIMAL's lines 1-7; what follows starts at line 8.
        for (extra, line, names) in [
            ("[update]\nurl = \"x\"\n", 8, "duplicate key `update`"),
            (
                "[health]\ndir = \"/a\"\ndir = \"/b\"\n",
                10,
                "duplicate key `dir`",
            ),
            ("[rollout\n", 8, "expected `]`"),
            ("[health]\ndir = \"\\q\"\n", 9, "escape"),
        ] {
            let text = format!("{MINIMAL}{extra}");
            let e = Config::from_str(&text, Path::new("c.toml")).expect_err(extra);
            assert!(e.0.starts_with(&format!("c.toml:{line}: ")), "{extra}: {e}");
            assert!(e.0.contains(names), "{extra}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
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
            assert!(e.0.starts_with(&format!("c.toml:9: {key}: ")), "{e}");
        }
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // `build` became abupdate's own after configs could set it: it
        // loads, with one warning naming the key, its file and line.
        let c = Config::from_str(
            &format!("{MINIMAL}[report]\nlabels = {{ build = \"x\", site = \"s\" }}\n"),
            Path::new("c.toml"),
        )
        .expect("a label the previous version accepted");
        assert_eq!(c.report.labels["build"], "x");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("c.toml:9: report.labels.build: "),
            "{:?}",
            c.warnings
        );
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
    fn efi_and_systemd_boot_keys_are_validated_by_name() {
        let efi = format!(
            "{MINIMAL}[bootloader]\nkind = \"efi\"\nefivarfs = \"/tmp/vars\"\n\
             [bootloader.efi.A]\nentry = 0x0001\n\
             [bootloader.efi.B]\ndescription = \"Edge B\"\nloader = \"\\\\EFI\\\\b\\\\grubx64.efi\"\n\
             partition = \"PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4\"\noptions = \"quiet\"\n"
        );
        let c = Config::from_str(&efi, Path::new("c.toml")).expect("efi config");
        assert_eq!(c.bootloader.kind, BootloaderKind::Efi);
        assert_eq!(c.bootloader.efivarfs, PathBuf::from("/tmp/vars"));
        let a = &c.bootloader.efi[&SlotName::A];
        assert_eq!((a.entry, a.description.as_str()), (Some(1), "abupdate A"));
        let b = &c.bootloader.efi[&SlotName::B];
        assert_eq!(b.description, "Edge B");
        assert_eq!(b.loader.as_deref(), Some("\\EFI\\b\\grubx64.efi"));
        let defaults = Config::from_str(
            &format!("{MINIMAL}[bootloader]\nkind = \"efi\"\n"),
            Path::new("c.toml"),
        )
        .expect("defaults");
        assert_eq!(
            defaults.bootloader.efivarfs,
            PathBuf::from("/sys/firmware/efi/efivars")
        );
        assert_eq!(
            defaults.bootloader.efi[&SlotName::B].description,
            "abupdate B"
        );

        let bad = |extra: &str, key: &str| {
            let e = Config::from_str(&format!("{MINIMAL}{extra}"), Path::new("c.toml"))
                .expect_err(extra);
            assert!(e.0.contains(key), "{extra}: {e}");
        };
        let k = "[bootloader]\nkind = \"efi\"\n";
        bad(
            &format!("{k}[bootloader.efi.A]\nentry = 65536\n"),
            "bootloader.efi.A.entry",
        );
        bad(
            &format!("{k}[bootloader.efi.A]\nloader = \"x.efi\"\n"),
            "bootloader.efi.A.partition",
        );
        bad(
            &format!("{k}[bootloader.efi.B]\npartition = \"/dev/x\"\n"),
            "bootloader.efi.B.loader",
        );
        bad(
            &format!("{k}[bootloader.efi.B]\nloader = \"x\"\npartition = \"PARTUUID=nope\"\n"),
            "bootloader.efi.B.partition",
        );
        bad(
            &format!("{k}[bootloader.efi.A]\nentry = 1\n[bootloader.efi.B]\nentry = 1\n"),
            "bootloader.efi.B.entry",
        );
        bad(
            &format!("{k}[bootloader.efi.B]\ndescription = \"abupdate A\"\n"),
            "bootloader.efi.B.description",
        );
        bad(&format!("{k}[bootloader.efi.C]\n"), "bootloader.efi.C");
        bad(&format!("{k}[bootloader.efi.A]\nlabel = \"x\"\n"), "label");

        let s = "[bootloader]\nkind = \"systemd-boot\"\n";
        bad(s, "bootloader.esp");
        let sd = Config::from_str(
            &format!("{MINIMAL}{s}esp = \"/boot/efi\"\n[bootloader.systemd-boot.A]\nlinux = \"/a/vmlinuz\"\ninitrd = [\"/a/initrd\"]\n"),
            Path::new("c.toml"),
        )
        .expect("systemd-boot config");
        assert_eq!(sd.bootloader.kind, BootloaderKind::SystemdBoot);
        assert_eq!(sd.bootloader.entry_prefix, "abupdate");
        assert_eq!(sd.bootloader.entries[&SlotName::A].initrd, ["/a/initrd"]);
        assert!(sd.is_file_target(Path::new("/boot/efi/a/vmlinuz")));
        assert!(!sd.is_file_target(Path::new("/boot/efi")));
        assert!(!sd.is_file_target(Path::new("/boot/efi2/x")));
        assert!(!sd.is_file_target(Path::new("/dev/b")));
        let e = format!("{s}esp = \"/e\"\n");
        bad(
            &format!("{e}entry_prefix = \"a+b\"\n"),
            "bootloader.entry_prefix",
        );
        bad(
            &format!("{e}[bootloader.systemd-boot.B]\nlinux = \"/l\"\nefi = \"/u.efi\"\n"),
            "bootloader.systemd-boot.B.efi",
        );
        bad(
            &format!("{e}[bootloader.systemd-boot.B]\noptions = \"a\\nb\"\n"),
            "bootloader.systemd-boot.B",
        );
    }

    #[test]
    fn dropins_merge_over_main_in_name_order() {
        let dir = TempDir::new("config");
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

        // A threshold of 0 is read as 1, as builds up to 213989b did, with
        // a warning: never as "no signature needed".
        std::fs::write(
            dir.join("config.d/30-bad.toml"),
            "[update]\nthreshold = 0\n",
        )
        .expect("write");
        let c = Config::load(&dir.join("config.toml")).expect("threshold 0 refused");
        assert_eq!(c.update.threshold, 1);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("30-bad.toml:2: update.threshold: 0 means at least 1"),
            "{:?}",
            c.warnings
        );
    }

    /// A main file (MINIMAL plus `main`) and drop-ins (name, text) in a
    /// fresh directory, loaded; with the paths messages name.
    fn load_with(main: &str, dropins: &[(&str, &str)]) -> (TempDir, Result<Config, ConfigError>) {
        let dir = TempDir::new("config-merged");
        std::fs::create_dir_all(dir.join("config.d")).expect("mkdir");
        std::fs::write(dir.join("config.toml"), format!("{MINIMAL}{main}")).expect("write");
        for (name, text) in dropins {
            std::fs::write(dir.join("config.d").join(name), text).expect("write");
        }
        let c = Config::load(&dir.join("config.toml"));
        (dir, c)
    }

    #[test]
    fn a_value_refused_or_clamped_after_the_merge_names_its_drop_in_and_line() {
        let (dir, c) = load_with(
            "[health]\ntimeout = \"10s\"\n",
            &[
                ("10-a.toml", "[health]\ntimeout = \"20s\"\n"),
                ("20-b.toml", "[update]\n\nmax_window_log = 5\n"),
            ],
        );
        let e = c.expect_err("max_window_log 5 accepted");
        let file = dir.join("config.d/20-b.toml");
        assert_eq!(
            e.0,
            format!(
                "{}:3: update.max_window_log: 5 is outside 10..=31",
                file.display()
            )
        );
        // A duration out of range, from the main file, is named there even
        // with drop-ins merged over other keys of its table.
        let (dir, c) = load_with(
            "[health]\ntimeout = \"10s\"\nprobation = \"400d\"\n",
            &[("10-a.toml", "[health]\ntimeout = \"20s\"\n")],
        );
        let c = c.expect("400d refused");
        let main = dir.join("config.toml");
        assert_eq!(
            c.warnings,
            [format!(
                "{}:10: health.probation: \"400d\" is longer than the 30d this key allows; using 30d",
                main.display()
            )]
        );
    }

    #[test]
    fn a_bad_value_in_an_array_of_tables_names_its_entry_s_line_not_the_first_header() {
        // The second window's zone, in the main file and in a drop-in: the
        // line of that entry's own header (before: the first
        // `[[update.download_windows]]`); the message names the field.
        let windows = "[[update.download_windows]]\ndays = [\"*\"]\nstart = \"01:00\"\nlength = \"1h\"\n\n[[update.download_windows]]\ndays = [\"*\"]\nstart = \"02:00\"\nlength = \"1h\"\nzone = \"+25:00\"\n";
        let (dir, c) = load_with("", &[("10-a.toml", windows)]);
        let e = c.expect_err("+25:00 accepted");
        let file = dir.join("config.d/10-a.toml");
        assert!(
            e.0.starts_with(&format!(
                "{}:6: update.download_windows[1]: zone \"+25:00\"",
                file.display()
            )),
            "{e}"
        );
        let (dir, c) = load_with(windows, &[]);
        let e = c.expect_err("+25:00 accepted");
        let lines = MINIMAL.lines().count();
        assert!(
            e.0.starts_with(&format!(
                "{}:{}: update.download_windows[1]: zone \"+25:00\"",
                dir.join("config.toml").display(),
                lines + 6
            )),
            "{e} (MINIMAL has {lines} lines)"
        );
    }

    #[test]
    fn a_combination_refused_after_the_merge_names_the_file_of_the_key_it_names() {
        // `url` in the main file, `channel` added by a drop-in: refused at
        // `update.channel`, whose value the drop-in gave.
        let text = MINIMAL.replace("[update]\n", "[update]\nurl = \"https://u/release.json\"\n");
        let dir = TempDir::new("config-combination");
        std::fs::create_dir_all(dir.join("config.d")).expect("mkdir");
        std::fs::write(dir.join("config.toml"), text).expect("write");
        std::fs::write(
            dir.join("config.d/50-channel.toml"),
            "# the fleet's channel\n[update]\nchannel = \"https://u/channel.json\"\n",
        )
        .expect("write");
        let e = Config::load(&dir.join("config.toml")).expect_err("both accepted");
        let dropin = dir.join("config.d/50-channel.toml");
        assert!(
            e.0.starts_with(&format!("{}:3: update.channel: ", dropin.display())),
            "{e}"
        );
        assert!(e.0.contains("not both"), "{e}");

        // A drop-in's list replaces the main file's: the entry refused is
        // named in the drop-in, not where the replaced list was.
        let (dir, c) = load_with(
            "[health]\nunits = [\"a b\"]\n",
            &[(
                "10-units.toml",
                "[health]\nunits = [\"sshd.service\", \"getty@\"]\n",
            )],
        );
        let e = c.expect_err("getty@ accepted");
        let dropin = dir.join("config.d/10-units.toml");
        assert!(
            e.0.starts_with(&format!("{}:2: health.units[1]: ", dropin.display())),
            "{e}"
        );

        // A table whose keys came from two files: both are named.
        let (dir, c) = load_with("", &[("10-b.toml", "[slots.B]\ndata = \"/dev/d\"\n")]);
        let e = c.expect_err("unequal classes accepted");
        let both = format!(
            "{}, {}: slots: ",
            dir.join("config.toml").display(),
            dir.join("config.d/10-b.toml").display()
        );
        assert!(e.0.starts_with(&both), "{e}");
    }

    /// Each duration key with the table it lives in.
    const DURATION_KEYS: [(&str, &str); 13] = [
        ("health", "probation"),
        ("update", "retry_delay"),
        ("update", "retry_after_max"),
        ("hooks", "timeout"),
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

    /// The line [`with`] writes its key on: under `[update]` in MINIMAL,
    /// else under a table appended to it.
    fn line_in_with(table: &str) -> usize {
        if table == "update" {
            3
        } else {
            9
        }
    }

    fn with(table: &str, key: &str, value: &str) -> Result<Config, ConfigError> {
        let text = if table == "update" {
            MINIMAL.replace("[update]\n", &format!("[update]\n{key} = \"{value}\"\n"))
        } else {
            format!("{MINIMAL}[{table}]\n{key} = \"{value}\"\n")
        };
        Config::from_str(&text, Path::new("c.toml"))
    }

    #[test]
    fn absurd_durations_are_clamped_to_the_maximum_naming_the_key() {
        for (table, key) in DURATION_KEYS {
            let (_, max) = duration_bounds(&format!("{table}.{key}"));
            // The second saturated in builds before e3950a4, which loaded it.
            for absurd in ["18446744073709551615s", "18446744073709551615d"] {
                let c = with(table, key, absurd).expect(key);
                assert_eq!(duration_of(&c, table, key), max, "{table}.{key} = {absurd}");
                assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
                assert!(
                    c.warnings[0]
                        .starts_with(&format!("c.toml:{}: {table}.{key}: ", line_in_with(table)))
                        && c.warnings[0].contains(&format!("\"{absurd}\" is longer than")),
                    "{:?}",
                    c.warnings
                );
            }
        }
        let e = with("health", "timeout", "2 fortnights").expect_err("a word accepted");
        assert!(e.0.contains("health.timeout: not a duration"), "{e}");
    }

    /// The value [`with`] set for `table`.`key`.
    fn duration_of(c: &Config, table: &str, key: &str) -> Duration {
        match (table, key) {
            ("health", "probation") => c.health.probation,
            ("update", "retry_delay") => c.update.retry.first_delay,
            ("update", "retry_after_max") => c.update.retry.retry_after_max,
            ("hooks", "timeout") => c.hooks.timeout,
            ("health", "timeout") => c.health.timeout,
            ("update", "connect_timeout") => c.update.connect_timeout,
            ("update", "read_timeout") => c.update.read_timeout,
            ("update", "jitter") => c.update.jitter,
            ("update", "backoff_base") => c.update.backoff_base,
            ("update", "backoff_max") => c.update.backoff_max,
            ("health", "check_timeout") => c.health.check_timeout,
            ("health", "interval") => c.health.interval,
            ("report", "webhook_timeout") => c.report.webhook_timeout,
            other => panic!("{other:?} is no duration key"),
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
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
            let c = with(table, key, &format!("{}s", max.as_secs() + 1)).expect(key);
            assert_eq!(
                duration_of(&c, table, key),
                max,
                "{table}.{key} above its maximum"
            );
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        }
    }

    #[test]
    fn a_window_only_earlier_versions_take_loads_as_they_read_it_with_a_warning() {
        let text = format!(
            "{MINIMAL}[[reboot.window]]\ndays = [\"Thurs\"]\nstart = \"2:00\"\nlength = \"2h\"\nzone = \"+1:00\"\n"
        );
        let c = Config::from_str(&text, Path::new("c.toml")).expect("an old window");
        assert_eq!(
            c.reboot.windows[0].describe(),
            "thu 02:00:00 for 2h at +01:00"
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("c.toml:8: reboot.window[0]: day \"Thurs\"")
                && c.warnings[0]
                    .ends_with("; read as earlier versions did: thu 02:00:00 for 2h at +01:00"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_mirror_this_version_cannot_use_is_left_out_with_a_warning() {
        let c = with("update", "mirror", "http://cache:8080/prefix").expect("http mirror");
        assert_eq!(c.update.mirror.as_deref(), Some("http://cache:8080/prefix"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Earlier versions took any text here.
        for old in ["/mnt/cache", "http://cache/?site=1"] {
            let c = with("update", "mirror", old).expect(old);
            assert_eq!(c.update.mirror, None, "{old}");
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            assert!(
                c.warnings[0].starts_with("c.toml:3: update.mirror: ")
                    && c.warnings[0].ends_with("; fetching from the origin"),
                "{:?}",
                c.warnings
            );
        }
    }

    #[test]
    fn a_unit_without_a_type_loads_as_its_service_without_a_warning() {
        let units = |list: &str| {
            Config::from_str(
                &format!("{MINIMAL}[health]\nunits = [{list}]\n"),
                Path::new("c.toml"),
            )
        };
        let c = units(r#""sshd", "getty@tty1", "x.socket""#).expect("units without a type");
        assert_eq!(
            c.health.units,
            ["sshd.service", "getty@tty1.service", "x.socket"]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let e = units(r#""sshd", "a b""#).expect_err("a b accepted");
        assert!(e.0.starts_with("c.toml:9: health.units[1]: "), "{e}");
    }

    #[test]
    fn probation_is_off_by_default_and_tolerates_two_failures() {
        let c = Config::from_str(MINIMAL, Path::new("c.toml")).expect("minimal");
        assert_eq!(c.health.probation, Duration::ZERO);
        assert_eq!(c.health.probation_failures, 2);
        let text = format!("{MINIMAL}[health]\nprobation = \"24h\"\nprobation_failures = 0\n");
        let c = Config::from_str(&text, Path::new("c.toml")).expect("probation");
        assert_eq!(c.health.probation, Duration::from_secs(86400));
        assert_eq!(c.health.probation_failures, 0);
    }

    #[test]
    fn zero_where_it_means_nothing_is_the_default_with_a_warning() {
        for (table, key, default) in [
            ("update", "connect_timeout", 30),
            ("update", "read_timeout", 60),
            ("health", "timeout", 300),
            ("health", "check_timeout", 60),
            ("report", "webhook_timeout", 5),
            ("hooks", "timeout", 300),
        ] {
            let c = with(table, key, "0ms").expect(key);
            assert_eq!(
                duration_of(&c, table, key),
                Duration::from_secs(default),
                "{key}"
            );
            assert_eq!(
                c.warnings,
                [format!(
                    "c.toml:{}: {table}.{key}: \"0ms\" must be more than zero; using the default {}",
                    line_in_with(table),
                    crate::timefmt::format_duration(Duration::from_secs(default))
                )]
            );
        }
        // Zero means "none" for these.
        for key in ["jitter", "backoff_base", "backoff_max"] {
            let c = with("update", key, "0s").expect(key);
            assert_eq!(duration_of(&c, "update", key), Duration::ZERO, "{key}");
            assert!(c.warnings.is_empty(), "{key}: {:?}", c.warnings);
        }
        let c = with("health", "interval", "0s").expect("interval");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn thin_link_keys_are_read_with_their_defaults() {
        let c = Config::from_str(MINIMAL, Path::new("c.toml")).expect("minimal");
        assert!(c.update.pacing.is_unlimited());
        assert_eq!(c.update.retry, crate::fetch::RetryPolicy::default());
        assert!(c.update.credentials.is_empty());
        assert!(c.reboot.fleetlock.is_none());
        assert!(c.hooks.pre_install.is_none());
        assert_eq!(c.hooks.timeout, Duration::from_secs(300));
        let text = r#"
[update]
compatible = "acme-edge"
max_rate = "2MB/s"
retries = 2
retry_delay = "250ms"
retry_after_max = "1m"
headers_file = "/etc/abupdate/headers"
client_cert = "/etc/abupdate/client.pem"
client_key = "/etc/abupdate/client.key"
[[update.rate_windows]]
days = ["mon", "sat"]
start = "08:00"
length = "12h"
max_rate = "500kB/s"
[[update.rate_windows]]
start = "20:00"
length = "12h"
max_rate = "unlimited"
[[update.download_windows]]
start = "20:00"
length = "11h"
zone = "+01:00"
[slots.A]
rootfs = "/dev/a"
[slots.B]
rootfs = "/dev/b"
[reboot]
fleetlock = "https://fleetlock.site.example/"
group = "store-17"
[hooks]
pre_install = "/etc/abupdate/hooks/pre-install"
pre_reboot = "/etc/abupdate/hooks/pre-reboot"
timeout = "30s"
"#;
        let c = Config::from_str(text, Path::new("c.toml")).expect("thin-link keys");
        let p = &c.update.pacing;
        assert_eq!(p.max_rate, Some(2_000_000));
        assert_eq!(p.rate_windows.len(), 2);
        assert_eq!(p.rate_windows[0].rate, Some(500_000));
        assert_eq!(p.rate_windows[1].rate, None);
        assert_eq!(p.download_windows.len(), 1);
        assert_eq!(c.update.retry.retries, 2);
        assert_eq!(c.update.retry.first_delay, Duration::from_millis(250));
        assert_eq!(c.update.retry.retry_after_max, Duration::from_secs(60));
        assert_eq!(
            c.update.credentials.client_key.as_deref(),
            Some(Path::new("/etc/abupdate/client.key"))
        );
        let lock = c.reboot.fleetlock.expect("fleetlock");
        assert_eq!(lock.group, "store-17");
        assert_eq!(c.hooks.timeout, Duration::from_secs(30));
        assert!(c.hooks.post_install.is_none());
    }

    #[test]
    fn bad_thin_link_keys_are_refused_naming_the_key() {
        let update = |line: &str| MINIMAL.replace("[update]\n", &format!("[update]\n{line}\n"));
        for (text, key) in [
            (update("max_rate = \"fast\""), "update.max_rate"),
            (update("max_rate = \"10B/s\""), "update.max_rate"),
            (update("retries = 101"), "update.retries"),
            (
                update("client_cert = \"/etc/c.pem\""),
                "update.client_key: missing",
            ),
            (
                update("client_key = \"/etc/c.key\""),
                "update.client_cert: missing",
            ),
            (
                format!("{MINIMAL}[[update.rate_windows]]\nstart = \"08:00\"\nlength = \"1h\"\n"),
                "update.rate_windows[0].max_rate: missing",
            ),
            (
                format!("{MINIMAL}[[update.download_windows]]\nstart = \"8am\"\nlength = \"1h\"\n"),
                "update.download_windows[0]: start",
            ),
            (
                format!("{MINIMAL}[[update.download_windows]]\nstart = \"08:00\"\n"),
                "update.download_windows[0].length: missing",
            ),
            (
                format!("{MINIMAL}[reboot]\nfleetlock = \"ftp://lock\"\n"),
                "reboot.fleetlock",
            ),
            (
                format!("{MINIMAL}[reboot]\nfleetlock = \"http://lock/?a=b\"\n"),
                "reboot.fleetlock",
            ),
            (
                format!("{MINIMAL}[reboot]\nfleetlock = \"http://lock\"\ngroup = \"store 17\"\n"),
                "reboot.group",
            ),
            (
                format!("{MINIMAL}[reboot]\ngroup = \"store-17\"\n"),
                "reboot.group: set without reboot.fleetlock",
            ),
            (
                format!("{MINIMAL}[hooks]\npost_install = \"hooks/post\"\n"),
                "hooks.post_install",
            ),
        ] {
            let e = Config::from_str(&text, Path::new("c.toml")).expect_err(key);
            assert!(
                // At the key's line; a missing key names the file only.
                e.0.starts_with("c.toml:") && e.0.contains(key),
                "{key}: {e}"
            );
        }
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
        assert!(e.0.starts_with("c.toml:3: update.signature_url: "), "{e}");
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
    fn a_track_is_read_and_a_malformed_one_is_a_config_error_naming_it() {
        let c = with("update", "track", "stable").expect("track");
        assert_eq!(c.update.track.as_deref(), Some("stable"));
        assert_eq!(
            Config::from_str(MINIMAL, Path::new("c.toml"))
                .expect("minimal")
                .update
                .track,
            None
        );
        let e = with("update", "track", "stable/2").expect_err("a slash accepted");
        assert!(
            e.0.contains("update.track: \"stable/2\": a track is 1 to 64"),
            "{e}"
        );
    }

    #[test]
    fn a_channel_and_a_url_together_are_a_config_error() {
        let c = with("update", "channel", "https://u/channel.json").expect("channel alone");
        assert_eq!(c.update.channel.as_deref(), Some("https://u/channel.json"));
        let text = MINIMAL.replace(
            "[update]\n",
            "[update]\nurl = \"https://u/release.json\"\nchannel = \"https://u/channel.json\"\n",
        );
        let e = Config::from_str(&text, Path::new("c.toml")).expect_err("both accepted");
        assert!(e.0.starts_with("c.toml:4: update.channel: "), "{e}");
        assert!(e.0.contains("not both"), "{e}");
    }

    #[test]
    fn units_that_are_not_unit_names_are_refused_naming_the_entry() {
        for bad in ["getty@", "a b", "a/b"] {
            let text = format!("{MINIMAL}[health]\nunits = [\"sshd.service\", \"{bad}\"]\n");
            let e = Config::from_str(&text, Path::new("c.toml")).expect_err(bad);
            assert!(e.0.starts_with("c.toml:9: health.units[1]: "), "{e}");
            assert!(e.0.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_unit_named_like_an_option_is_left_out_with_a_warning_as_it_always_passed() {
        // 213989b ran `systemctl is-active --quiet -h`, which answers 0:
        // the config loads without the entry, never passing it on.
        for option in ["--version", "-h", "-H"] {
            let text = format!("{MINIMAL}[health]\nunits = [\"sshd\", \"{option}\"]\n");
            let c = Config::from_str(&text, Path::new("c.toml")).expect(option);
            assert_eq!(c.health.units, ["sshd.service"], "{option}");
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            assert!(
                c.warnings[0].starts_with("c.toml:9: health.units[1]: ")
                    && c.warnings[0].contains("left out"),
                "{:?}",
                c.warnings
            );
        }
    }
}
