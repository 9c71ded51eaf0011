//! The host a flow runs on: its config, state dir and bootloader, and the
//! facts it tells about itself.
//!
//! Invariant: each fact (the booted slot, the boot id, the machine id) is
//! read once per command and then the same for every flow and report of
//! that command; a fact that says two things (two slot markers naming
//! different slots) is an error naming the file, never read one way
//! ([`crate::system`]).
//!
//! A host is opened to act (check, install, update, the manual verbs) only
//! when nobody but root could change what it trusts: the config, its
//! drop-ins and the state directory ([`crate::safe_path`]); else the
//! command is refused naming the first. Opened to judge (`health`,
//! `status`), it goes on with a warning: a boot always gets its verdict
//! (a trial on such a host fails, [`Host::refuses_its_next_update`], and
//! rolls back rather than go without one), and looking changes nothing.
//! [`inputs_others_could_change`] decides.

use crate::boot::{
    custom::CustomBackend, efi::EfiBackend, grub::GrubBackend, systemd_boot::SystemdBootBackend,
    uboot::UbootBackend, Bootloader,
};
use crate::config::{BootloaderKind, Config, ConfigError};
use crate::error::{Error, Result};
use crate::fetch::{Transport, TransportOptions};
use crate::rollout;
use crate::slot::{Device, SlotName};
use crate::state::{State, StateDir, StateLock};
use crate::system::{self, SystemError};
use crate::trust::gate::{self, Verified};
use crate::{fleetlock, hooks};
use std::cell::OnceCell;

/// What a command opens the host for, which decides what becomes of the
/// inputs others could change ([`inputs_others_could_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `health` (the boot's verdict) and `status`: warned about.
    Judge,
    /// `check`, `install`, `update`, `mark-good`, `mark-bad`, `rollback`:
    /// refused.
    Act,
}

/// The host's inputs others than root could change (`found`, one line
/// each naming the file and why): for [`Purpose::Act`], the refusal (the
/// first); for [`Purpose::Judge`], the warnings to print. Nothing found,
/// nothing to say.
pub fn inputs_others_could_change(
    purpose: Purpose,
    found: &[String],
) -> std::result::Result<Vec<String>, String> {
    match (purpose, found.first()) {
        (_, None) => Ok(Vec::new()),
        (Purpose::Act, Some(first)) => Err(first.clone()),
        (Purpose::Judge, Some(_)) => Ok(found
            .iter()
            .map(|line| {
                format!(
                    "{line}; health and status go on (a trial fails over it), the other \
                     commands refuse it"
                )
            })
            .collect()),
    }
}

/// An opened host: its config, state dir and bootloader.
pub struct Host {
    /// The configuration the command runs on.
    pub config: Config,
    /// Where `state.json` and partial downloads live.
    pub state_dir: StateDir,
    /// The configured bootloader backend.
    pub boot: Box<dyn Bootloader>,
    /// What [`inputs_others_could_change`] was given at the open: the
    /// config, drop-ins and state directory others could change, one line
    /// each (empty when opened to act: it refuses them).
    open_to_others: Vec<String>,
    booted: OnceCell<SlotName>,
    boot_id: OnceCell<Option<String>>,
    machine_id: OnceCell<String>,
}

impl Host {
    /// Open the bootloader backend and the state dir of `config`, for
    /// `purpose`: refused, or warned about on stderr, when others could
    /// change the config or the state dir ([`inputs_others_could_change`]).
    pub fn open(config: Config, purpose: Purpose) -> Result<Host> {
        let state_dir = StateDir::new(&config.update.state_dir);
        let open_to_others: Vec<String> = config
            .open_to_others
            .iter()
            .cloned()
            .chain(state_dir.open_to_others())
            .collect();
        for warning in inputs_others_could_change(purpose, &open_to_others)
            .map_err(|line| Error::Config(ConfigError(line)))?
        {
            super::log(&format!("warning: {warning}"));
        }
        let b = &config.bootloader;
        let boot: Box<dyn Bootloader> = match b.kind {
            BootloaderKind::Grub => Box::new(GrubBackend::new(b.grubenv.clone(), b.tries)),
            BootloaderKind::Uboot => Box::new(
                UbootBackend::new(b.fw_env_config.clone(), b.tries)?.with_good_tries(b.good_tries),
            ),
            BootloaderKind::Efi => Box::new(EfiBackend::new(b.efivarfs.clone(), b.efi.clone())),
            BootloaderKind::SystemdBoot => Box::new(
                SystemdBootBackend::new(
                    b.esp.clone().unwrap_or_default(),
                    b.entry_prefix.clone(),
                    b.tries,
                    b.entries.clone(),
                )
                .with_efivars(b.efivarfs.clone()),
            ),
            BootloaderKind::Custom => {
                // `Config::load` refuses a custom kind without a script;
                // a config built otherwise gets the same word.
                let script = b.script.clone().ok_or_else(|| {
                    ConfigError(
                        "bootloader.script: missing (required when kind = \"custom\")".into(),
                    )
                })?;
                Box::new(CustomBackend::new(script))
            }
        };
        Ok(Host {
            config,
            state_dir,
            boot,
            open_to_others,
            booted: OnceCell::new(),
            boot_id: OnceCell::new(),
            machine_id: OnceCell::new(),
        })
    }

    /// Which slot is running: the kernel command line, then the
    /// bootloader's own word, then the device of `/`. Read once.
    pub fn booted_slot(&self) -> Result<SlotName> {
        if let Some(slot) = self.booted.get() {
            return Ok(*slot);
        }
        let slot = self.find_booted_slot()?;
        Ok(*self.booted.get_or_init(|| slot))
    }

    fn find_booted_slot(&self) -> Result<SlotName> {
        let cmdline_path = &self.config.system.cmdline;
        if let Some(cmdline) = system::read_fact_bytes(cmdline_path) {
            let named = system::booted_slot_from_cmdline(&cmdline).map_err(|error| {
                SystemError::Cmdline {
                    path: cmdline_path.clone(),
                    error,
                }
            })?;
            if let Some(slot) = named {
                return Ok(slot);
            }
        }
        if let Some(slot) = self.boot.booted()? {
            return Ok(slot);
        }
        if let Some(root) = crate::slot::root_device() {
            // By storage, not device number: `/` may be a dm-verity or
            // loop device over the slot's partition.
            let sys = crate::slot::Sysfs::system();
            let mut slots = Vec::new();
            for slot in SlotName::ALL {
                for dev in self.config.slots[&slot].values() {
                    if let Ok(d) = Device::inspect(dev) {
                        slots.push((slot, d.storage(&sys)));
                    }
                }
            }
            if let Some(slot) = crate::slot::slot_holding(&sys.storage(root), &slots) {
                return Ok(slot);
            }
        }
        Err(SystemError::BootedSlotUnknown {
            cmdline: cmdline_path.clone(),
        }
        .into())
    }

    /// Version of the booted system: os-release's, else what the booted
    /// slot's record holds. os-release is outside bytes: its version is
    /// taken as [`crate::text::show`] writes it, lossless (`1.0\xff` and
    /// `1.0\xfe` stay two versions, never one `1.0\u{fffd}`), and a
    /// dotted-number version as it is. The record a re-bless or an install
    /// fills from it holds that same text, so the same os-release read
    /// twice, or once into the record, is the same version.
    pub fn booted_version(&self, state: &State, booted: SlotName) -> Option<String> {
        self.os_release_version()
            .or_else(|| state.slot(booted).version)
    }

    /// The booted slot runs a try nothing judged: the records do not hold
    /// it committed and the bootloader counts its boot as a try no one has
    /// blessed (a state deleted or damaged between a staging and its
    /// `health`). No slot to build on (an install's fallback) or to leave
    /// as the only one (`mark-bad`) until `health` judges it; `false` when
    /// the bootloader cannot tell.
    pub fn booted_unjudged(&self, state: &State, booted: SlotName) -> bool {
        state.slot(booted).status != crate::state::SlotStatus::Good
            && self.boot.tried(booted).ok().flatten() == Some(true)
    }

    /// os-release's version of the booted system, as [`Host::booted_version`]
    /// takes it; `None` when it cannot be read.
    pub fn os_release_version(&self) -> Option<String> {
        system::read_fact_bytes(&self.config.system.os_release)
            .and_then(|t| system::version_bytes_from_os_release(&t))
            .map(|v| crate::text::show(&v))
    }

    fn machine_id(&self) -> &str {
        self.machine_id
            .get_or_init(|| system::read_fact(&self.config.system.machine_id).unwrap_or_default())
    }

    /// This host's place in the fleet: the configured wariness, else the
    /// keyed hash of the machine id.
    pub fn position(&self) -> f64 {
        if let Some(w) = self.config.rollout.wariness {
            // Wariness 1.0 must still be inside a 100% rollout.
            return w.min(1.0 - f64::EPSILON);
        }
        rollout::position(self.machine_id())
    }

    /// A stable id of this host for reports, not the machine id itself.
    pub fn host_id(&self) -> String {
        rollout::host_id(self.machine_id())
    }

    /// Where to fetch `url` from: through the site cache, when one is
    /// configured (signatures make any mirror as good as the origin); see
    /// [`crate::fetch::via_mirror`].
    pub fn via_mirror(&self, url: &str) -> String {
        match self.config.update.mirror.as_deref() {
            Some(mirror) => crate::fetch::via_mirror(url, mirror),
            None => url.to_string(),
        }
    }

    /// The kernel's id of this boot: a different one means the host
    /// rebooted. Read once.
    pub(super) fn boot_id(&self) -> Option<String> {
        self.boot_id
            .get_or_init(|| {
                system::read_fact(&self.config.system.boot_id).map(|s| s.trim().to_string())
            })
            .clone()
    }

    /// The host's uptime in whole seconds (the first field of
    /// `[system] uptime`, `/proc/uptime`); `None` when it cannot be read
    /// or does not start with a number.
    pub(super) fn uptime(&self) -> Option<i64> {
        let text = system::read_fact(&self.config.system.uptime)?;
        let secs = text.trim_start().split(['.', ' ', '\n']).next()?;
        secs.parse::<i64>().ok().filter(|s| *s >= 0)
    }

    /// The manifest at `location` as the trust gate fetches it: through
    /// the mirror, checked against the configured keys and threshold.
    pub(super) fn release_source<'a>(&'a self, location: &'a str) -> gate::Source<'a> {
        let u = &self.config.update;
        gate::Source {
            location,
            mirror: u.mirror.as_deref(),
            // `[update] signature_url` is the configured `url`'s (a source
            // given on the command line keeps its signatures next to it).
            signature_url: u
                .signature_url
                .as_deref()
                .filter(|_| u.url.as_deref().or(u.channel.as_deref()) == Some(location)),
            keys_dirs: &u.keys_dirs,
            threshold: u.threshold,
        }
    }

    /// The release to act on: the one given, else the configured URL or
    /// channel ([`Host::is_channel`] tells which).
    pub(super) fn release_location(&self, given: Option<&str>) -> Result<String> {
        let u = &self.config.update;
        match given.or(u.url.as_deref()).or(u.channel.as_deref()) {
            Some(l) => Ok(l.to_string()),
            None => Err(Error::Usage(
                "no release source: give one or set update.url or update.channel".into(),
            )),
        }
    }

    /// Whether `location` is the configured release manifest (`update.url`)
    /// as its records are kept ([`crate::manifest::source_key`]): another
    /// spelling of it (a host name's case, a query) is the same source.
    pub(super) fn is_configured_url(&self, location: &str) -> bool {
        use crate::manifest::source_key;
        self.config.update.url.as_deref().map(source_key) == Some(source_key(location))
    }

    /// Whether `location` is the configured release channel.
    pub(super) fn is_channel(&self, location: &str) -> bool {
        self.config.update.channel.as_deref() == Some(location)
    }

    pub(super) fn transport(&self) -> Result<Transport> {
        let u = &self.config.update;
        // Credentials go to the configured origin and mirror only.
        let servers: Vec<&str> = (u.url.iter().chain(&u.channel).chain(&u.mirror))
            .map(String::as_str)
            .collect();
        let credentials = crate::fetch::Credentials::load(&u.credentials, &servers)
            .map_err(|e| Error::Config(ConfigError(e)))?;
        Ok(Transport::new(&TransportOptions {
            pacing: u.pacing.clone(),
            retry: u.retry,
            credentials,
            ..self.plain_transport_options()
        })?)
    }

    /// When a server the host must reach over https to go on updating is
    /// https and no trust roots load: the line saying so, and what cannot
    /// be reached ([`crate::fetch::Roots::missing_to`], [`needs_roots_to`]).
    /// A trial on such a host fails: committed, it could never fetch the
    /// release that fixes it, or never take the site's reboot lock to boot
    /// one (every planned reboot would wait for ever). The update servers
    /// are `url`, `channel`, `signature_url`, each as [`Host::via_mirror`]
    /// rewrites it: behind a `mirror` the origin is never asked (no request
    /// falls back to it), so only the mirror's scheme counts: an http site
    /// cache fetches the next release without roots. The FleetLock server
    /// is asked at `[reboot] fleetlock` itself (the mirror is for releases,
    /// not for the lock). A `ca_file` that gives no certificate is no roots
    /// too (the bundles are not tried): the line names it and why.
    fn https_without_roots(&self) -> Option<String> {
        let u = &self.config.update;
        let update_urls: Vec<String> = [&u.url, &u.channel, &u.signature_url]
            .into_iter()
            .flatten()
            .map(|s| self.via_mirror(s))
            .collect();
        let fleetlock = self
            .config
            .reboot
            .fleetlock
            .as_ref()
            .map(|f| f.url.as_str());
        let what = needs_roots_to(&update_urls, fleetlock)?;
        crate::fetch::trust_roots(u.ca_file.as_deref(), &self.config.system.ca_bundles)
            .missing_to(&what)
    }

    /// Why this host, committed as it stands, could not take its next
    /// update: the check that says so (`trusted-files`, then `trust-roots`)
    /// and its line. A trial fails over it; `status` shows it.
    pub fn next_update_blocked(&self) -> Option<(&'static str, String)> {
        self.refuses_its_next_update()
            .map(|line| ("trusted-files", line))
            .or_else(|| self.https_without_roots().map(|line| ("trust-roots", line)))
    }

    /// When this host would refuse its next update for what it trusts: the
    /// config, its drop-ins, the state directory or a key directory others
    /// could change ([`crate::safe_path`]), a key file that does not load,
    /// or fewer distinct trusted keys than `threshold`. The line saying so,
    /// naming the first. A trial on such a host fails, as one without trust
    /// roots does ([`Self::https_without_roots`]): committed, it would
    /// refuse every release after it, the one that fixes it included, and a
    /// release that strands its hosts so is stopped at its first wave.
    fn refuses_its_next_update(&self) -> Option<String> {
        let u = &self.config.update;
        let why = self.open_to_others.first().cloned().or_else(|| {
            match crate::trust::KeyRing::load(&u.keys_dirs) {
                Err(e) => Some(e),
                Ok(ring) => ring.cannot_meet(u.threshold),
            }
            .map(|e| e.to_string())
        })?;
        Some(format!("{why}: this host would refuse its next update"))
    }

    /// Timeouts, proxy and trust roots, nothing else: for services that
    /// are not the update servers (the FleetLock server).
    fn plain_transport_options(&self) -> TransportOptions {
        let u = &self.config.update;
        TransportOptions {
            connect_timeout: u.connect_timeout,
            read_timeout: u.read_timeout,
            proxy: u.proxy.clone(),
            ca_file: u.ca_file.clone(),
            ca_bundles: self.config.system.ca_bundles.clone(),
            user_agent: format!("abupdate/{}", env!("CARGO_PKG_VERSION")),
            ..TransportOptions::default()
        }
    }

    /// Run the `[hooks]` hook at `point`, if one is configured.
    pub(super) fn run_hook(&self, point: hooks::Point, facts: &hooks::Facts) -> Result<()> {
        let cfg = &self.config.hooks;
        let path = match point {
            hooks::Point::PreInstall => &cfg.pre_install,
            hooks::Point::PostInstall => &cfg.post_install,
            hooks::Point::PreReboot => &cfg.pre_reboot,
        };
        let Some(path) = path else {
            return Ok(());
        };
        super::log(&format!(
            "running the {} hook {}",
            point.name(),
            path.display()
        ));
        let env = hooks::environment(point, facts);
        hooks::run(point, path, cfg.timeout, &env)?;
        Ok(())
    }

    /// What the hooks are told about installing `verified` into the slot
    /// that is not `booted`.
    pub(super) fn hook_facts<'a>(
        &'a self,
        verified: &'a Verified,
        booted: SlotName,
    ) -> hooks::Facts<'a> {
        let m = verified.manifest();
        let target = booted.other();
        hooks::Facts {
            compatible: &self.config.update.compatible,
            manifest_compatible: &m.doc.compatible,
            version: &m.doc.version,
            manifest_sha256: &m.sha256,
            source: verified.location(),
            booted,
            target,
            images: m
                .doc
                .images
                .iter()
                .filter_map(|(class, image)| {
                    Some(hooks::Image {
                        class,
                        device: self.config.device(target, class)?,
                        name: &image.url,
                        sha256: &image.sha256,
                        size: image.size,
                    })
                })
                .collect(),
        }
    }

    /// Take this site's reboot lock (`[reboot] fleetlock`), when one is
    /// configured: no lock, no reboot. The state says the lock may be held
    /// before it is asked for (a lost answer is released later); a refusal
    /// proves it is not. `waiting` says, for the log, what stays as it is
    /// while the reboot waits.
    pub(super) fn take_reboot_lock(
        &self,
        lock: &StateLock,
        state: &mut State,
        waiting: &str,
    ) -> Result<()> {
        let Some(cfg) = &self.config.reboot.fleetlock else {
            return Ok(());
        };
        if state.fleetlock.as_deref() != Some(cfg.group.as_str()) {
            state.fleetlock = Some(cfg.group.clone());
            lock.save(state)?;
        }
        let transport = Transport::new(&self.plain_transport_options())?;
        let client = fleetlock::Client {
            transport: &transport,
            config: cfg,
            id: self.host_id(),
        };
        match client.call(fleetlock::Op::Lock) {
            Ok(()) => {
                super::log(&format!("took the reboot lock of group {}", cfg.group));
                Ok(())
            }
            Err(e) => {
                if matches!(e, fleetlock::FleetLockError::Refused { .. }) {
                    state.fleetlock = None;
                    lock.save(state)?;
                }
                super::log(&format!(
                    "the reboot waits for the site's lock (group {}); {waiting}",
                    cfg.group
                ));
                Err(Error::FleetLock(e))
            }
        }
    }

    /// Give back the site's reboot lock if this host may hold it (the
    /// verdict is in and a good slot runs). A failure is logged and the
    /// state keeps saying so: the next run tries again.
    pub(super) fn release_reboot_lock(&self, lock: &StateLock, state: &mut State) {
        if let Err(e) = self.give_back_reboot_lock(lock, state) {
            super::log(&format!("{e}; the next run releases it"));
        }
    }

    /// Give back the site's reboot lock if the state says it may be held;
    /// why not, when the server did not take it back (the state still
    /// says it is held).
    pub(super) fn give_back_reboot_lock(
        &self,
        lock: &StateLock,
        state: &mut State,
    ) -> std::result::Result<(), String> {
        let Some(group) = state.fleetlock.clone() else {
            return Ok(());
        };
        let Some(cfg) = &self.config.reboot.fleetlock else {
            // No lock server any more: nothing to give back to.
            state.fleetlock = None;
            let _ = lock.save(state);
            return Ok(());
        };
        let cfg = crate::config::FleetLock {
            url: cfg.url.clone(),
            group,
        };
        let released = Transport::new(&self.plain_transport_options())
            .map_err(|e| e.to_string())
            .and_then(|transport| {
                fleetlock::Client {
                    transport: &transport,
                    config: &cfg,
                    id: self.host_id(),
                }
                .call(fleetlock::Op::Unlock)
                .map_err(|e| e.to_string())
            });
        released?;
        super::log(&format!("released the reboot lock of group {}", cfg.group));
        state.fleetlock = None;
        if let Err(e) = lock.save(state) {
            super::log(&format!("{e}"));
        }
        Ok(())
    }
}

/// What the host could not do without trust roots, given the URLs it
/// fetches updates from (as requested: after the mirror) and its FleetLock
/// server: fetch its next update when one of those is https, else take its
/// reboot lock when the FleetLock server is; `None` when all are plain http
/// (signed releases, a lock server on the site's network need no roots).
/// The update servers' line comes first: without them nothing is fetched
/// to reboot into.
pub(super) fn needs_roots_to(update_urls: &[String], fleetlock: Option<&str>) -> Option<String> {
    if update_urls.iter().any(|u| crate::fetch::is_https(u)) {
        return Some(crate::fetch::FETCH_UPDATES_OVER_HTTPS.into());
    }
    let lock = fleetlock.filter(|u| crate::fetch::is_https(u))?;
    Some(format!(
        "take the site's reboot lock from the https FleetLock server {} (every planned reboot would wait for it)",
        crate::fetch::redact(lock)
    ))
}

#[cfg(test)]
mod tests {
    use super::{inputs_others_could_change, needs_roots_to, Purpose};

    /// Acting on inputs others could change is refused naming the first;
    /// judging warns about each, so that a trial still gets its verdict.
    #[test]
    fn inputs_others_could_change_refuse_acting_and_warn_judging() {
        let found = vec!["/etc/c.toml: open".to_string(), "/var/s: open".to_string()];
        for purpose in [Purpose::Act, Purpose::Judge] {
            assert_eq!(inputs_others_could_change(purpose, &[]), Ok(Vec::new()));
        }
        assert_eq!(
            inputs_others_could_change(Purpose::Act, &found),
            Err("/etc/c.toml: open".to_string())
        );
        let warned = inputs_others_could_change(Purpose::Judge, &found).expect("warned");
        assert_eq!(warned.len(), 2);
        assert!(warned[0].starts_with("/etc/c.toml: open; health and status go on"));
        assert!(warned[1].starts_with("/var/s: open; "));
    }

    #[test]
    fn an_https_update_server_or_else_an_https_fleetlock_server_needs_roots() {
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let fetch = Some("fetch its next update over https".to_string());
        assert_eq!(needs_roots_to(&urls(&["http://u/r.json"]), None), None);
        assert_eq!(
            needs_roots_to(&urls(&["http://u/r.json"]), Some("http://lock:8080/")),
            None
        );
        assert_eq!(
            needs_roots_to(&urls(&["http://u/r.json", "HTTPS://c/ch"]), None),
            fetch
        );
        // Both: the update servers' line (nothing to reboot into without it).
        assert_eq!(
            needs_roots_to(&urls(&["https://u/r.json"]), Some("https://lock/")),
            fetch
        );
        let lock = needs_roots_to(
            &urls(&["http://u/r.json"]),
            Some("https://me:pw@lock.example/"),
        )
        .expect("the lock server needs roots");
        assert!(
            lock.starts_with(
                "take the site's reboot lock from the https FleetLock server https://"
            ) && lock.contains("lock.example/")
                && !lock.contains("pw"),
            "{lock}"
        );
        assert!(needs_roots_to(&[], Some("https://lock/")).is_some());
    }
}
