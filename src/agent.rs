//! The update agent: the flows that tie trust, transport, slots, the
//! bootloader and the state together (`check`, `install`, `health`, the
//! recovery verbs, `status`).
//!
//! Invariants kept here, in order of the install flow:
//! 1. nothing is written before the manifest is verified and applies;
//! 2. the target is never the booted slot, nor mounted, nor the root device;
//! 3. the target is marked bad in the bootloader before its first byte is
//!    written, and activated only after its read-back hash matched;
//! 4. the state records a transaction before the bootloader is changed for
//!    it, so every boot can tell a trial from a fallback from an
//!    interrupted write.

use crate::boot::{
    custom::CustomBackend, grub::GrubBackend, uboot::UbootBackend, BootState, Bootloader,
};
use crate::config::{BootloaderKind, Config};
use crate::error::{Error, Result};
use crate::fetch::{Document, Transport, TransportOptions, Validators};
use crate::install::{self, WriteMode};
use crate::manifest::{self, HostFacts, Manifest, Version};
use crate::progress::Progress;
use crate::slot::{Device, SlotName};
use crate::state::{ImageRef, LastCheck, Phase, SlotRecord, State, StateDir, Transaction};
use crate::system;
use crate::timefmt::now;
use crate::trust::{self, KeyRing};
use std::collections::BTreeMap;

/// An opened host: its config, state dir and bootloader.
pub struct Host {
    pub config: Config,
    pub state_dir: StateDir,
    pub boot: Box<dyn Bootloader>,
}

/// Log one line to stderr (journald adds timestamps).
pub fn log(msg: &str) {
    eprintln!("abupdate: {msg}");
}

impl Host {
    pub fn open(config: Config) -> Result<Host> {
        let b = &config.bootloader;
        let boot: Box<dyn Bootloader> = match b.kind {
            BootloaderKind::Grub => Box::new(GrubBackend::new(b.grubenv.clone(), b.tries)),
            BootloaderKind::Uboot => Box::new(UbootBackend::new(b.fw_env_config.clone(), b.tries)?),
            BootloaderKind::Custom => {
                let script = b
                    .script
                    .clone()
                    .ok_or_else(|| Error::Refused("bootloader.script missing".into()))?;
                Box::new(CustomBackend::new(script))
            }
        };
        let state_dir = StateDir::new(&config.update.state_dir);
        Ok(Host {
            config,
            state_dir,
            boot,
        })
    }

    /// Which slot is running: the kernel command line, then the
    /// bootloader's own word, then the device of `/`.
    pub fn booted_slot(&self) -> Result<SlotName> {
        let cmdline_path = &self.config.system.cmdline;
        if let Some(slot) =
            system::read_fact(cmdline_path).and_then(|c| system::booted_slot_from_cmdline(&c))
        {
            return Ok(slot);
        }
        if let Some(slot) = self.boot.booted()? {
            return Ok(slot);
        }
        if let Some(root) = crate::slot::root_device() {
            for slot in SlotName::ALL {
                for dev in self.config.slots[&slot].values() {
                    if Device::inspect(dev).ok().and_then(|d| d.rdev) == Some(root) {
                        return Ok(slot);
                    }
                }
            }
        }
        Err(Error::Refused(format!(
            "cannot tell which slot is booted: no abupdate.slot= or rauc.slot= in {} and / is on neither slot's devices",
            cmdline_path.display()
        )))
    }

    /// Version of the booted system: os-release, else what we installed there.
    pub fn booted_version(&self, state: &State, booted: SlotName) -> Option<String> {
        system::read_fact(&self.config.system.os_release)
            .and_then(|t| system::version_from_os_release(&t))
            .or_else(|| state.slot(booted).version)
    }

    fn boot_id(&self) -> Option<String> {
        system::read_fact(&self.config.system.boot_id).map(|s| s.trim().to_string())
    }

    fn transport(&self) -> Result<Transport> {
        let u = &self.config.update;
        Ok(Transport::new(&TransportOptions {
            connect_timeout: u.connect_timeout,
            read_timeout: u.read_timeout,
            proxy: u.proxy.clone(),
            ca_file: u.ca_file.clone(),
            user_agent: format!("abupdate/{}", env!("CARGO_PKG_VERSION")),
        })?)
    }
}

/// A manifest whose signatures met the threshold.
#[derive(Debug)]
pub struct Verified {
    pub location: String,
    pub manifest: Manifest,
    pub validators: Validators,
}

/// Fetch `location` and its signatures and verify them. `None` when the
/// server answered 304 to a conditional request.
pub fn fetch_verified(
    host: &Host,
    transport: &Transport,
    location: &str,
    validators: Option<&Validators>,
) -> Result<Option<Verified>> {
    let (body, validators) =
        match transport.get_document(location, manifest::MAX_MANIFEST_BYTES, validators)? {
            Document::Fetched { body, validators } => (body, validators),
            Document::NotModified => return Ok(None),
            Document::NotFound => return Err(Error::Refused(format!("{location}: not found"))),
        };
    let keys = KeyRing::load(&host.config.update.keys_dirs)?;
    let mut signatures = Vec::new();
    let mut names = vec![format!("{location}.minisig")];
    if host.config.update.threshold > 1 {
        names.extend((1..=16).map(|n| format!("{location}.{n}.minisig")));
    }
    for name in names {
        match transport.get_document(&name, 64 * 1024, None)? {
            Document::Fetched { body, .. } => {
                signatures.push((name, String::from_utf8_lossy(&body).into_owned()));
            }
            Document::NotFound if name.ends_with(".minisig") && signatures.len() > 1 => break,
            _ => {}
        }
    }
    if signatures.is_empty() {
        return Err(Error::Refused(format!(
            "{location}.minisig: missing (a release must be signed)"
        )));
    }
    trust::verify_threshold(&body, &signatures, &keys, host.config.update.threshold)?;
    let manifest = Manifest::parse(&body)?;
    Ok(Some(Verified {
        location: location.to_string(),
        manifest,
        validators,
    }))
}

/// The outcome of `check`.
#[derive(Debug)]
pub enum CheckOutcome {
    /// A verified release applies to this host.
    Available(Box<Verified>),
    /// Nothing to do, and why.
    UpToDate { reason: String, kind: &'static str },
}

/// Options of `install` / `update`.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub allow_downgrade: bool,
    pub no_reboot: bool,
    pub write_mode: WriteMode,
    pub quiet: bool,
}

/// Fetch and judge the release at `location` (or the configured URL).
pub fn check(host: &Host, location: Option<&str>, allow_downgrade: bool) -> Result<CheckOutcome> {
    let location = match location.or(host.config.update.url.as_deref()) {
        Some(l) => l.to_string(),
        None => {
            return Err(Error::Usage(
                "no release source: give one or set update.url".into(),
            ))
        }
    };
    let state_dir = &host.state_dir;
    let mut state = state_dir.load()?;
    let booted = host.booted_slot()?;
    let transport = host.transport()?;
    // Conditional GET only for the configured URL: an answer of 304 then
    // means "the same manifest that did not apply last time".
    let previous = state
        .last_check
        .as_ref()
        .filter(|c| c.url == location && !allow_downgrade)
        .map(|c| Validators {
            etag: c.etag.clone(),
            last_modified: c.last_modified.clone(),
        });
    let Some(verified) = fetch_verified(host, &transport, &location, previous.as_ref())? else {
        return Ok(CheckOutcome::UpToDate {
            reason: "release manifest unchanged since the last check".into(),
            kind: "not_modified",
        });
    };
    let booted_version = host.booted_version(&state, booted);
    let booted_version = booted_version
        .as_deref()
        .and_then(|v| Version::parse(v).ok());
    let failed = state.failed_versions();
    let facts = HostFacts {
        compatible: &host.config.update.compatible,
        booted_version: booted_version.as_ref(),
        failed_versions: &failed,
        now: now(),
        newest_created_seen: state.newest_created,
        allow_downgrade,
    };
    let verdict = manifest::evaluate(&verified.manifest, &facts);
    state.note_created(verified.manifest.created);
    state.last_check = match &verdict {
        Err(_) => Some(LastCheck {
            url: location.clone(),
            at: now(),
            etag: verified.validators.etag.clone(),
            last_modified: verified.validators.last_modified.clone(),
        }),
        Ok(()) => None,
    };
    // Saving needs the lock; a read-only check without it skips the save.
    if let Ok(_lock) = state_dir.lock() {
        state_dir.save(&state)?;
    }
    match verdict {
        Ok(()) => Ok(CheckOutcome::Available(Box::new(verified))),
        Err(na) => Ok(CheckOutcome::UpToDate {
            reason: na.to_string(),
            kind: na.kind(),
        }),
    }
}

/// What `install` did.
#[derive(Debug)]
pub struct Installed {
    pub slot: SlotName,
    pub version: String,
    pub payload_bytes: u64,
    pub network_bytes: u64,
    pub rebooting: bool,
}

/// Refuse targets that are the booted system or in use, and images that do
/// not fit; returns the target devices by class.
fn check_targets(host: &Host, m: &Manifest, booted: SlotName) -> Result<BTreeMap<String, Device>> {
    let target = booted.other();
    let mounted = system::read_fact(&host.config.system.mountinfo)
        .map(|t| system::mounted_devices(&t))
        .unwrap_or_default();
    let root = crate::slot::root_device();
    let booted_devices: Vec<Device> = host.config.slots[&booted]
        .values()
        .filter_map(|p| Device::inspect(p).ok())
        .collect();
    let mut devices = BTreeMap::new();
    for (class, image) in &m.doc.images {
        let Some(path) = host.config.device(target, class) else {
            return Err(Error::Refused(format!(
                "release image class {class:?} has no partition in slot {target} (configured: {})",
                host.config.slots[&target]
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let dev = Device::inspect(path)?;
        if booted_devices.iter().any(|b| b.same_as(&dev)) {
            return Err(Error::Refused(format!(
                "{}: is a device of the booted slot {booted}",
                path.display()
            )));
        }
        dev.check_writable(&mounted, root)?;
        if image.size > dev.size {
            return Err(Error::Refused(format!(
                "{class} image is {} bytes, larger than {} ({} bytes)",
                image.size,
                path.display(),
                dev.size
            )));
        }
        devices.insert(class.clone(), dev);
    }
    Ok(devices)
}

/// Download, verify, write and stage a verified release into the inactive
/// slot; then reboot unless told not to.
pub fn install(host: &Host, verified: &Verified, opts: &InstallOptions) -> Result<Installed> {
    let _lock = host.state_dir.lock()?;
    let m = &verified.manifest;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let target = booted.other();

    // Re-judge under the lock: the state may have changed since `check`.
    let booted_version = host.booted_version(&state, booted);
    let booted_version = booted_version
        .as_deref()
        .and_then(|v| Version::parse(v).ok());
    let failed = state.failed_versions();
    manifest::evaluate(
        m,
        &HostFacts {
            compatible: &host.config.update.compatible,
            booted_version: booted_version.as_ref(),
            failed_versions: &failed,
            now: now(),
            newest_created_seen: state.newest_created,
            allow_downgrade: opts.allow_downgrade,
        },
    )?;
    if let Some(t) = &state.transaction {
        if t.to == booted {
            return Err(Error::Refused(format!(
                "slot {booted} is on trial with {}; run `abupdate health` (or mark-good) before installing",
                t.version
            )));
        }
        if t.phase == Phase::Staged && t.manifest_sha256 == m.sha256 && t.to == target {
            log(&format!(
                "release {} is already staged in slot {target}",
                m.version
            ));
            return finish_staged(host, &state, target, m, 0, 0, opts);
        }
    }
    if host.boot.state(booted)? != BootState::Good {
        return Err(Error::Refused(format!(
            "the booted slot {booted} is not marked good in the bootloader; run `abupdate mark-good` first"
        )));
    }
    let devices = check_targets(host, m, booted)?;
    let transport = host.transport()?;

    // Invariant 3: bad first, then the record of what is being written.
    host.boot.set_state(target, BootState::Bad)?;
    crate::failpoint::hit("target-marked-bad");
    let images: BTreeMap<String, ImageRef> = m
        .doc
        .images
        .iter()
        .map(|(c, i)| {
            (
                c.clone(),
                ImageRef {
                    sha256: i.sha256.clone(),
                    size: i.size,
                },
            )
        })
        .collect();
    state.note_created(m.created);
    state.transaction = Some(Transaction {
        from: booted,
        to: target,
        version: m.version.to_string(),
        manifest_sha256: m.sha256.clone(),
        phase: Phase::Writing,
        started: now(),
        staged_boot_id: None,
        images: images.clone(),
    });
    state.slots.insert(
        target,
        SlotRecord {
            status: "installing".into(),
            ..Default::default()
        },
    );
    host.state_dir.save(&state)?;

    let mut payload_bytes = 0;
    let mut network_bytes = 0;
    for (class, image) in &m.doc.images {
        let location = crate::fetch::resolve(&verified.location, &image.url)?;
        let partial = host.state_dir.partial_file(image.download_sha256());
        let result = transport
            .open_payload(&location, image.download_size(), Some(&partial))
            .map_err(Error::from)
            .and_then(|reader| {
                log(&format!(
                    "writing {class} {} into slot {target} ({})",
                    m.version,
                    devices[class].path.display()
                ));
                let mut progress =
                    Progress::new(&format!("{class} {}", m.version), image.size, opts.quiet);
                let resumed = reader.resumed_from();
                if resumed > 0 {
                    log(&format!("resuming {location} at byte {resumed}"));
                }
                let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let reader = CountingReader {
                    inner: reader,
                    network: counter.clone(),
                };
                let written = install::write_image(
                    class,
                    reader,
                    image,
                    &devices[class].path,
                    host.config.update.max_window_log,
                    opts.write_mode,
                    &mut progress,
                )?;
                Ok((written, counter.load(std::sync::atomic::Ordering::Relaxed)))
            });
        match result {
            Ok((written, network)) => {
                payload_bytes += written.payload_bytes;
                network_bytes += network;
                let _ = std::fs::remove_file(&partial);
            }
            Err(e) => {
                if matches!(&e, Error::Install(install::InstallError::Mismatch { .. })) {
                    // A partial download that hashes wrong must not be resumed.
                    let _ = std::fs::remove_file(&partial);
                }
                state.transaction = None;
                state.slots.insert(
                    target,
                    SlotRecord {
                        status: "bad".into(),
                        ..Default::default()
                    },
                );
                host.state_dir.save(&state)?;
                return Err(e);
            }
        }
    }

    // Invariant 3: only a verified slot is activated; the state follows.
    host.boot.activate(target)?;
    crate::failpoint::hit("activated");
    if let Some(t) = state.transaction.as_mut() {
        t.phase = Phase::Staged;
        t.staged_boot_id = host.boot_id();
    }
    state.slots.insert(
        target,
        SlotRecord {
            status: "installed".into(),
            version: Some(m.version.to_string()),
            manifest_sha256: Some(m.sha256.clone()),
            images,
            installed_at: Some(now()),
        },
    );
    host.state_dir.save(&state)?;
    finish_staged(host, &state, target, m, payload_bytes, network_bytes, opts)
}

fn finish_staged(
    host: &Host,
    _state: &State,
    target: SlotName,
    m: &Manifest,
    payload_bytes: u64,
    network_bytes: u64,
    opts: &InstallOptions,
) -> Result<Installed> {
    log(&format!(
        "release {} staged in slot {target}; the next boot tries it",
        m.version
    ));
    let rebooting = !opts.no_reboot;
    if rebooting {
        log("rebooting into the new slot");
        system::reboot(&host.config.system.reboot).map_err(Error::Refused)?;
    }
    Ok(Installed {
        slot: target,
        version: m.version.to_string(),
        payload_bytes,
        network_bytes,
        rebooting,
    })
}

/// Passes reads through and counts them (bytes that reached the pipeline).
struct CountingReader<R> {
    inner: R,
    network: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.network
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// What `health` concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No trial pending: the booted slot was re-blessed.
    Healthy,
    /// The trial slot passed its checks and is now committed.
    Committed { version: String },
    /// The trial slot failed its checks: marked bad, rolled back.
    RolledBack { version: String, reason: String },
    /// The bootloader fell back from a trial that never came up.
    TrialNeverBooted { version: String },
    /// A slot is staged and the host has not rebooted into it yet.
    AwaitingReboot { version: String },
}

/// The boot-time verdict (run by `abupdate-health.service` on every boot).
pub fn health(host: &Host, no_reboot: bool, quiet: bool) -> Result<Verdict> {
    let _lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let Some(t) = state.transaction.clone() else {
        rebless(host, &mut state, booted)?;
        return Ok(Verdict::Healthy);
    };

    if booted == t.to {
        // A trial. If the state never reached `staged` (a crash between
        // activation and the state write), the slot's bytes decide.
        if t.phase == Phase::Writing {
            let intact = t.images.iter().all(|(class, image)| {
                host.config.device(booted, class).is_some_and(|p| {
                    install::hash_path(p, image.size).is_ok_and(|h| h == image.sha256)
                })
            });
            if !intact {
                return rollback_trial(
                    host,
                    &mut state,
                    &t,
                    "the trial slot's contents do not match the release",
                    no_reboot,
                );
            }
        }
        log(&format!(
            "slot {booted} is on trial with {}: running health checks",
            t.version
        ));
        let (ok, results) = crate::health::run_until_verdict(&host.config.health, &mut |r| {
            if !quiet {
                log(&format!(
                    "check {}: {}{}",
                    r.name,
                    if r.passed { "pass" } else { "FAIL" },
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.detail)
                    }
                ));
            }
        });
        crate::failpoint::hit("health-verdict");
        if ok {
            host.boot.set_state(booted, BootState::Good)?;
            crate::failpoint::hit("committed");
            let mut rec = state.slot(booted);
            rec.status = "good".into();
            state.slots.insert(booted, rec);
            state.transaction = None;
            host.state_dir.save(&state)?;
            log(&format!("committed {} in slot {booted}", t.version));
            return Ok(Verdict::Committed { version: t.version });
        }
        let reason = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{}: {}", r.name, r.detail))
            .collect::<Vec<_>>()
            .join("; ");
        return rollback_trial(
            host,
            &mut state,
            &t,
            &format!("health checks failed: {reason}"),
            no_reboot,
        );
    }

    // Booted the old slot.
    match t.phase {
        Phase::Writing => {
            // An install was interrupted; the next `update` finishes it.
            log(&format!(
                "an install of {} into slot {} was interrupted; it will be redone",
                t.version, t.to
            ));
            rebless(host, &mut state, booted)?;
            Ok(Verdict::Healthy)
        }
        Phase::Staged if t.staged_boot_id.is_some() && t.staged_boot_id == host.boot_id() => {
            rebless(host, &mut state, booted)?;
            Ok(Verdict::AwaitingReboot { version: t.version })
        }
        Phase::Staged => {
            let reason = format!(
                "slot {} never came up with {}; the bootloader fell back to {booted}",
                t.to, t.version
            );
            log(&reason);
            host.boot.set_state(t.to, BootState::Bad)?;
            state.record_failed(&t.version, &t.manifest_sha256, &reason, now());
            let mut rec = state.slot(t.to);
            rec.status = "bad".into();
            state.slots.insert(t.to, rec);
            state.transaction = None;
            host.state_dir.save(&state)?;
            rebless(host, &mut state, booted)?;
            Ok(Verdict::TrialNeverBooted { version: t.version })
        }
    }
}

fn rollback_trial(
    host: &Host,
    state: &mut State,
    t: &Transaction,
    reason: &str,
    no_reboot: bool,
) -> Result<Verdict> {
    log(&format!(
        "rolling back {} in slot {}: {reason}",
        t.version, t.to
    ));
    host.boot.set_state(t.to, BootState::Bad)?;
    host.boot.activate(t.from)?;
    crate::failpoint::hit("rolled-back");
    state.record_failed(&t.version, &t.manifest_sha256, reason, now());
    let mut rec = state.slot(t.to);
    rec.status = "bad".into();
    state.slots.insert(t.to, rec);
    state.transaction = None;
    host.state_dir.save(&state.clone())?;
    if !no_reboot {
        log(&format!("rebooting into slot {}", t.from));
        system::reboot(&host.config.system.reboot).map_err(Error::Refused)?;
    }
    Ok(Verdict::RolledBack {
        version: t.version.clone(),
        reason: reason.to_string(),
    })
}

/// Mark the running, healthy slot good again. The bootloader script sets
/// TRY on every slot it visits; re-blessing on each healthy boot keeps a
/// later failure of the other slot from leaving both flagged.
fn rebless(host: &Host, state: &mut State, booted: SlotName) -> Result<()> {
    host.boot.set_state(booted, BootState::Good)?;
    let mut rec = state.slot(booted);
    if rec.status != "good" && (rec.status == "installed" || rec.status == "empty") {
        rec.status = "good".into();
        if rec.version.is_none() {
            rec.version = host.booted_version(state, booted);
        }
        state.slots.insert(booted, rec);
        host.state_dir.save(state)?;
    }
    Ok(())
}

/// `mark-good` / `mark-bad` by hand.
pub fn mark(host: &Host, slot: Option<SlotName>, good: bool) -> Result<SlotName> {
    let _lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let slot = match slot {
        Some(s) => s,
        None => host.booted_slot()?,
    };
    host.boot.set_state(
        slot,
        if good {
            BootState::Good
        } else {
            BootState::Bad
        },
    )?;
    let mut rec = state.slot(slot);
    rec.status = if good { "good" } else { "bad" }.into();
    state.slots.insert(slot, rec);
    if good
        && state
            .transaction
            .as_ref()
            .is_some_and(|t| t.to == slot && t.phase == Phase::Staged)
    {
        state.transaction = None;
    }
    host.state_dir.save(&state)?;
    Ok(slot)
}

/// Boot the other slot (if it holds a good system).
pub fn rollback(host: &Host, force: bool, no_reboot: bool) -> Result<SlotName> {
    let _lock = host.state_dir.lock()?;
    let mut state = host.state_dir.load()?;
    let booted = host.booted_slot()?;
    let other = booted.other();
    let rec = state.slot(other);
    let usable = matches!(rec.status.as_str(), "good" | "installed");
    if !usable && !force {
        return Err(Error::Refused(format!(
            "slot {other} is {} in the state; refusing to roll back to it (use --force)",
            rec.status
        )));
    }
    host.boot.activate(other)?;
    crate::failpoint::hit("rollback");
    state.transaction = None;
    host.state_dir.save(&state)?;
    log(&format!("slot {other} is now primary"));
    if !no_reboot {
        system::reboot(&host.config.system.reboot).map_err(Error::Refused)?;
    }
    Ok(other)
}

/// Everything `status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub booted_slot: Option<SlotName>,
    pub booted_version: Option<String>,
    pub primary_slot: Option<SlotName>,
    pub slots: BTreeMap<SlotName, SlotStatus>,
    pub transaction: Option<Transaction>,
    pub failed: Vec<crate::state::FailedRelease>,
    pub bootloader: BTreeMap<String, String>,
}

#[derive(Debug, serde::Serialize)]
pub struct SlotStatus {
    pub devices: BTreeMap<String, String>,
    pub record: SlotRecord,
    pub bootloader_state: Option<String>,
}

pub fn status(host: &Host) -> Result<Status> {
    let state = host.state_dir.load()?;
    let booted = host.booted_slot().ok();
    let mut slots = BTreeMap::new();
    for slot in SlotName::ALL {
        slots.insert(
            slot,
            SlotStatus {
                devices: host.config.slots[&slot]
                    .iter()
                    .map(|(c, p)| (c.clone(), p.display().to_string()))
                    .collect(),
                record: state.slot(slot),
                bootloader_state: host.boot.state(slot).ok().map(|s| s.to_string()),
            },
        );
    }
    Ok(Status {
        booted_slot: booted,
        booted_version: booted.and_then(|b| host.booted_version(&state, b)),
        primary_slot: host.boot.primary()?,
        slots,
        transaction: state.transaction.clone(),
        failed: state.failed.clone(),
        bootloader: host.boot.describe()?.into_iter().collect(),
    })
}
