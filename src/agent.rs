//! The update agent: the flows that tie trust, transport, slots, the
//! bootloader and the state together (`check`, `install`, `health`, the
//! recovery verbs, `status`).
//!
//! Invariants kept here, in order of the install flow:
//! 1. nothing is written before the manifest is verified and applies;
//! 2. the target is never the booted slot, nor mounted, nor the root device;
//! 3. the target is marked bad in the bootloader right before its first
//!    byte is written, and not earlier (a failure until then, such as a
//!    server answering 503, leaves its flag and record as they were), and
//!    activated only after its read-back hash matched;
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
use crate::manifest::{self, HostFacts, Manifest, NotApplicable, Version};
use crate::progress::Progress;
use crate::publish;
use crate::report::Outcome;
use crate::rollout::{self, Standing};
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

/// Log one line to stderr (journald adds timestamps); URLs in it lose their
/// user info.
pub fn log(msg: &str) {
    eprintln!("abupdate: {}", crate::fetch::redact(msg));
}

impl Host {
    pub fn open(config: Config) -> Result<Host> {
        let b = &config.bootloader;
        let boot: Box<dyn Bootloader> = match b.kind {
            BootloaderKind::Grub => Box::new(GrubBackend::new(b.grubenv.clone(), b.tries)),
            BootloaderKind::Uboot => Box::new(
                UbootBackend::new(b.fw_env_config.clone(), b.tries)?.with_good_tries(b.good_tries),
            ),
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
        if let Some(cmdline) = system::read_fact(cmdline_path) {
            let named = system::booted_slot_from_cmdline(&cmdline)
                .map_err(|e| Error::Refused(format!("{}: {e}", cmdline_path.display())))?;
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

    /// This host's place in the fleet: the configured wariness, else the
    /// keyed hash of the machine id.
    pub fn position(&self) -> f64 {
        if let Some(w) = self.config.rollout.wariness {
            // Wariness 1.0 must still be inside a 100% rollout.
            return w.min(1.0 - f64::EPSILON);
        }
        let id = system::read_fact(&self.config.system.machine_id).unwrap_or_default();
        rollout::position(&id)
    }

    /// A stable id of this host for reports, not the machine id itself.
    pub fn host_id(&self) -> String {
        rollout::host_id(&system::read_fact(&self.config.system.machine_id).unwrap_or_default())
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
    /// The manifest's own location (as configured or given): image
    /// references resolve against it, and the mirror rewrites what that
    /// gives.
    pub location: String,
    /// Where the verified bytes actually came from: the mirror's URL when
    /// one is configured, the last redirect's target when redirected. Raw:
    /// show it through [`crate::fetch::redact`].
    pub source: String,
    pub manifest: Manifest,
    pub validators: Validators,
}

/// Fetch `location` and its signatures (through the mirror, if one is
/// configured) and verify them. `None` when the server answered 304 to a
/// conditional request. Errors name the URL actually fetched.
pub fn fetch_verified(
    host: &Host,
    transport: &Transport,
    location: &str,
    validators: Option<&Validators>,
) -> Result<Option<Verified>> {
    let fetched = host.via_mirror(location);
    let (body, validators, source) =
        match transport.get_document(&fetched, manifest::MAX_MANIFEST_BYTES, validators)? {
            Document::Fetched {
                body,
                validators,
                url,
            } => (body, validators, url),
            Document::NotModified => return Ok(None),
            Document::NotFound => {
                return Err(Error::Fetch(crate::fetch::FetchError::NotFound {
                    location: crate::fetch::redact(&fetched).into_owned(),
                    status: None,
                }))
            }
        };
    let keys = KeyRing::load(&host.config.update.keys_dirs)?;
    let threshold = host.config.update.threshold;
    let (signatures, first_missing) = fetch_signatures(host, transport, location, None)?;
    // Mid-publish, or behind a cache, the standard signature may belong to
    // another manifest (or not be there yet): the publisher leaves the
    // signatures of these very bytes under names bound to them first
    // (crate::publish).
    let tag = publish::bound_tag(&body);
    let bound = || {
        fetch_signatures(host, transport, location, Some(&tag))
            .map(|(s, _)| s)
            .unwrap_or_default()
    };
    match publish::verify_signatures(&body, &signatures, bound, &keys, threshold) {
        Ok(()) => {}
        Err(trust::TrustError::NoSignatures) => {
            return Err(Error::Refused(format!(
                "{}: missing (a release must be signed)",
                first_missing.unwrap_or_default()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let manifest = Manifest::parse(&body)?;
    Ok(Some(Verified {
        location: location.to_string(),
        source,
        manifest,
        validators,
    }))
}

/// Signature files as (URL shown, text).
type Signatures = Vec<(String, String)>;

/// The signature files of the manifest at `location` (`.minisig`, and `.N.minisig`
/// for a threshold above 1; with `bound_tag`, the names bound to one manifest's
/// bytes), as (URL shown, text), and the first name that was missing.
fn fetch_signatures(
    host: &Host,
    transport: &Transport,
    location: &str,
    bound_tag: Option<&str>,
) -> Result<(Signatures, Option<String>)> {
    let count = match host.config.update.threshold {
        0 | 1 => 1,
        _ => publish::MAX_SIGNATURES,
    };
    let prefix = bound_tag.map(|t| format!(".{t}")).unwrap_or_default();
    let mut signatures = Vec::new();
    let mut first_missing = None;
    // Next to the manifest (its path plus a suffix, its query kept), or,
    // for the configured `url`, where `[update] signature_url` says (a
    // presigned URL signs one object: the manifest's query is not the
    // signature's). A source given on the command line is its own.
    let u = &host.config.update;
    let signature_url = u
        .signature_url
        .as_deref()
        .filter(|_| u.url.as_deref() == Some(location));
    for suffix in (0..count).map(|i| publish::signature_name(&prefix, i)) {
        let Some(url) = crate::fetch::signature_location(location, &suffix, signature_url)? else {
            continue;
        };
        let url = host.via_mirror(&url);
        let name = crate::fetch::redact(&url).into_owned();
        match transport.get_document(&url, 64 * 1024, None)? {
            Document::Fetched { body, .. } => {
                signatures.push((name, String::from_utf8_lossy(&body).into_owned()));
            }
            Document::NotFound if signatures.len() > 1 => break,
            _ => {
                first_missing.get_or_insert(name);
            }
        }
    }
    Ok((signatures, first_missing))
}

/// The outcome of `check`.
#[derive(Debug)]
pub enum CheckOutcome {
    /// A verified release applies to this host (and its wave includes it).
    Available {
        verified: Box<Verified>,
        standing: Option<Standing>,
    },
    /// Nothing to do, and why.
    UpToDate {
        reason: String,
        kind: &'static str,
        standing: Option<Standing>,
    },
}

/// What `check` takes into account besides the manifest.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    pub allow_downgrade: bool,
    /// Apply the staged rollout (the timer's runs do; a manual install
    /// is the operator's own decision and does not).
    pub rollout: bool,
}

/// Options of `install` / `update`.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub allow_downgrade: bool,
    pub no_reboot: bool,
    pub write_mode: WriteMode,
    pub quiet: bool,
    /// Reboot only inside a maintenance window (the timer's runs).
    pub respect_windows: bool,
}

/// Fetch and judge the release at `location` (or the configured URL).
pub fn check(host: &Host, location: Option<&str>, opts: CheckOptions) -> Result<CheckOutcome> {
    let allow_downgrade = opts.allow_downgrade;
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
    let booted_version_text = host.booted_version(&state, booted);
    let clock = now().max(state.newest_created.unwrap_or(i64::MIN));
    let previous = state
        .last_check
        .as_ref()
        .filter(|c| {
            c.url == location && !allow_downgrade && c.booted_version == booted_version_text
        })
        .filter(|c| c.expires.is_none_or(|e| e > clock))
        .map(|c| Validators {
            etag: c.etag.clone(),
            last_modified: c.last_modified.clone(),
        });
    state.metrics.last_check = Some(now());
    let fetched = fetch_verified(host, &transport, &location, previous.as_ref());
    let Some(verified) = fetched? else {
        save_if_unlocked(state_dir, &state)?;
        return Ok(CheckOutcome::UpToDate {
            reason: "release manifest unchanged since the last check".into(),
            kind: "not_modified",
            standing: None,
        });
    };
    let verdict = judge(host, &mut state, &verified, booted, allow_downgrade);
    let standing = match opts.rollout {
        true => Some(
            rollout::decide(
                verified.manifest.doc.rollout.as_ref(),
                host.position(),
                now(),
            )
            .map_err(|e| {
                Error::Manifest(manifest::ManifestError::Field {
                    field: "rollout".into(),
                    reason: e,
                })
            })?,
        ),
        false => None,
    };
    // A refusal that will not fix itself (`NotApplicable::is_fault`: an
    // expired, stale or far-future manifest, other hardware, a release this
    // host cannot install) is an error, so the timer's unit fails, the host
    // backs off and monitoring sees it; and its validators are not kept, so
    // a 304 cannot turn it into "nothing new".
    let fault = verdict.as_ref().err().is_some_and(NotApplicable::is_fault);
    state.last_check = match &verdict {
        Err(_) if fault => None,
        Err(_) => Some(LastCheck {
            url: location.clone(),
            at: now(),
            etag: verified.validators.etag.clone(),
            last_modified: verified.validators.last_modified.clone(),
            expires: Some(verified.manifest.expires),
            booted_version: booted_version_text.clone(),
            ..Default::default()
        }),
        Ok(()) => None,
    };
    save_if_unlocked(state_dir, &state)?;
    match verdict {
        Err(na) if fault => Err(Error::NotApplicable(na)),
        Err(na) => Ok(CheckOutcome::UpToDate {
            reason: na.to_string(),
            kind: na.kind(),
            standing,
        }),
        Ok(()) => match standing {
            Some(s) if !s.included => Ok(CheckOutcome::UpToDate {
                reason: format!(
                    "release {} waits for this host's wave: {}",
                    verified.manifest.version,
                    s.reason.clone().unwrap_or_default()
                ),
                kind: "waiting_for_wave",
                standing: Some(s),
            }),
            standing => Ok(CheckOutcome::Available {
                verified: Box::new(verified),
                standing,
            }),
        },
    }
}

/// The judgement `check` and `install` both make ([`manifest::evaluate`] on
/// this host's facts), so `check` offers nothing `install` refuses before
/// touching a device. A `created` this host may believe is recorded in
/// `state` (the clock's floor and the source's newest), whatever the
/// verdict: a verified manifest for another board still proves the time.
fn judge(
    host: &Host,
    state: &mut State,
    verified: &Verified,
    booted: SlotName,
    allow_downgrade: bool,
) -> std::result::Result<(), NotApplicable> {
    let m = &verified.manifest;
    let booted_version = host.booted_version(state, booted);
    let booted_version = booted_version
        .as_deref()
        .and_then(|v| Version::parse(v).ok());
    let failed = state.failed_versions();
    let classes: Vec<String> = host
        .config
        .slots
        .get(&booted.other())
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let source = manifest::source_key(&verified.location);
    let facts = HostFacts {
        compatible: &host.config.update.compatible,
        booted_version: booted_version.as_ref(),
        failed_versions: &failed,
        now: now(),
        newest_created_seen: state.newest_created,
        newest_from_source: state.newest_by_source.get(&source).copied(),
        slot_classes: &classes,
        max_window_log: host.config.update.max_window_log,
        allow_downgrade,
    };
    let verdict = manifest::evaluate(m, &facts);
    if manifest::created_plausible(m, &facts) {
        state.note_created(&source, m.created);
    }
    verdict
}

/// Save the state when no other instance holds the lock; a read-only
/// `check` next to a running install just skips its bookkeeping.
fn save_if_unlocked(state_dir: &StateDir, state: &State) -> Result<()> {
    if let Ok(_lock) = state_dir.lock() {
        state_dir.save(state)?;
    }
    Ok(())
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

/// Refuse targets that share storage with the booted slot, the root
/// filesystem, a mounted filesystem or each other, or that the kernel says
/// are in use, and images that do not fit; returns the target devices by
/// class. (The invariant and its checks live in `slot`.)
fn check_targets(host: &Host, m: &Manifest, booted: SlotName) -> Result<BTreeMap<String, Device>> {
    let target = booted.other();
    let mounted = system::read_fact(&host.config.system.mountinfo)
        .map(|t| system::mounted_devices(&t))
        .unwrap_or_default();
    let sys = crate::slot::Sysfs::system();
    let booted_devices: Vec<(String, std::path::PathBuf)> = host.config.slots[&booted]
        .iter()
        .map(|(class, p)| (format!("slot {booted} {class}, the booted slot"), p.clone()))
        .collect();
    let mut in_use =
        crate::slot::in_use(&booted_devices, &mounted, crate::slot::root_device(), &sys);
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
        let storage = dev.storage(&sys);
        crate::slot::check_target(path, &storage, &in_use)?;
        dev.probe_exclusive()?;
        if image.size > dev.size {
            return Err(Error::Refused(format!(
                "{class} image is {} bytes, larger than {} ({} bytes)",
                image.size,
                path.display(),
                dev.size
            )));
        }
        // Two classes of one release must not land on the same bytes.
        in_use.push(crate::slot::InUse {
            path: path.to_path_buf(),
            what: format!("slot {target} {class}, also written by this release"),
            storage,
        });
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
    judge(host, &mut state, verified, booted, opts.allow_downgrade)?;
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

    // The final env must fit before anything is marked or written.
    host.boot.check_activate(target)?;
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
                    ..Default::default()
                },
            )
        })
        .collect();
    // Invariant 3: bad, then the record of what is being written, right
    // before the target's first byte changes; not earlier, so that what
    // fails before it (a server answering 429 or 503, a payload cut before
    // its first chunk decoded) leaves the target as it was.
    let mut arming = Arming {
        host,
        target,
        transaction: Transaction {
            from: booted,
            to: target,
            version: m.version.to_string(),
            manifest_sha256: m.sha256.clone(),
            phase: Phase::Writing,
            started: now(),
            staged_boot_id: None,
            images: images.clone(),
            unknown: Default::default(),
        },
        armed: false,
    };

    let mut payload_bytes = 0;
    let mut network_bytes = 0;
    let mut full_bytes = 0;
    for (class, image) in &m.doc.images {
        let location = crate::fetch::resolve(&verified.location, &image.url)?;
        let partial = host.state_dir.partial_file(image.download_sha256());
        // A resumable download keeps the payload on the data partition; when
        // it does not fit there, stream without resume rather than fill the
        // partition (which would stop every later run too).
        let resume = host.config.update.resume_downloads;
        let resumable =
            resume && has_room_for(host.state_dir.path(), &partial, image.download_size());
        if !resumable {
            let _ = std::fs::remove_file(&partial);
        }
        if resume && !resumable {
            log(&format!(
                "{}: not enough free space for a resumable download of {} bytes; streaming without resume",
                host.state_dir.path().display(),
                image.download_size()
            ));
        }
        let target_dev = &devices[class].path;
        full_bytes += image.download_size();
        log(&format!(
            "writing {class} {} into slot {target} ({})",
            m.version,
            target_dev.display()
        ));
        let (by_delta, given_up) = match try_delta(
            host,
            &mut state,
            &mut arming,
            &transport,
            verified,
            booted,
            class,
            image,
            target_dev,
            opts,
        ) {
            Ok(d) => d,
            Err(e) => {
                arming.fail(&mut state)?;
                return Err(e);
            }
        };
        // A delta given up still cost its bytes.
        network_bytes += given_up;
        let payload_url = host.via_mirror(&location);
        let result = match by_delta {
            Some(fetched) => Ok((
                install::Written {
                    image_bytes: image.size,
                    payload_bytes: fetched,
                },
                fetched,
            )),
            None => transport
                .open_payload(
                    &payload_url,
                    image.download_size(),
                    resumable.then_some(partial.as_path()),
                )
                .map_err(Error::from)
                .and_then(|mut reader| {
                    let mut progress =
                        Progress::new(&format!("{class} {}", m.version), image.size, opts.quiet);
                    let resumed = reader.resumed_from();
                    if resumed > 0 {
                        log(&format!("resuming {payload_url} at byte {resumed}"));
                    }
                    let written = install::write_image(
                        class,
                        &mut reader,
                        image,
                        target_dev,
                        host.config.update.max_window_log,
                        opts.write_mode,
                        &mut progress,
                        &mut || arming.arm(&mut state),
                    )?;
                    Ok((written, reader.bytes_from_network()))
                }),
        };
        match result {
            Ok((written, network)) => {
                payload_bytes += written.payload_bytes;
                network_bytes += network;
                let _ = std::fs::remove_file(&partial);
            }
            Err(e) => {
                // Bytes that decode or hash wrong would fail the same way
                // on every later run: such a partial download is not
                // resumed. A transport failure (a fetch error now) keeps
                // what arrived for the next run.
                if matches!(
                    e,
                    Error::Install(
                        install::InstallError::Payload { .. }
                            | install::InstallError::Mismatch { .. }
                            | install::InstallError::ImageMismatch { .. }
                            | install::InstallError::Size { .. }
                    )
                ) {
                    let _ = std::fs::remove_file(&partial);
                }
                // What earlier classes and given-up deltas fetched.
                state.metrics.downloaded_bytes += network_bytes;
                arming.fail(&mut state)?;
                if !arming.armed && network_bytes > 0 {
                    host.state_dir.save(&state)?;
                }
                return Err(name_payload_source(e, &payload_url));
            }
        }
    }
    // Nothing needed writing (`--write=changed` over the same image): the
    // record still precedes the activation.
    arming.arm(&mut state)?;

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
            ..Default::default()
        },
    );
    state.metrics.installs += 1;
    state.metrics.downloaded_bytes += network_bytes;
    state.metrics.last_install_fetched = Some(network_bytes);
    state.metrics.last_install_full = Some(full_bytes);
    if network_bytes > 0 && full_bytes > 0 {
        log(&format!(
            "fetched {network_bytes} bytes; a full install fetches {full_bytes} ({:.1}%)",
            network_bytes as f64 * 100.0 / full_bytes as f64
        ));
    }
    state.metrics.last_success = Some(now());
    crate::report::record_outcome(
        &mut state.outcomes,
        m.version.as_str(),
        Outcome::Installed,
        None,
        now(),
    );
    host.state_dir.save(&state)?;
    publish(
        host,
        &state,
        Some((Outcome::Installed, m.version.as_str())),
        None,
    );
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
    let windows = &host.config.reboot.windows;
    let in_window = !opts.respect_windows || crate::schedule::may_reboot(windows, now());
    if !in_window && !opts.no_reboot {
        let next = crate::schedule::next_window(windows, now()).map(crate::timefmt::format_rfc3339);
        log(&format!(
            "the reboot waits for the maintenance window (next opens {})",
            next.unwrap_or_else(|| "never".into())
        ));
    }
    let rebooting = !opts.no_reboot && in_window;
    if rebooting {
        log("rebooting into the new slot");
        reboot(host)?;
    }
    Ok(Installed {
        slot: target,
        version: m.version.to_string(),
        payload_bytes,
        network_bytes,
        rebooting,
    })
}

/// Whether `dir`'s filesystem can take the rest of a `size`-byte download
/// into `partial`, with a margin for the state file.
fn has_room_for(dir: &std::path::Path, partial: &std::path::Path, size: u64) -> bool {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => {
            // The field types are narrower on 32-bit targets.
            #[allow(clippy::unnecessary_cast)]
            let free = st.blocks_available() as u64 * st.fragment_size() as u64;
            free >= size.saturating_sub(have) + (4 << 20)
        }
        Err(_) => true,
    }
}

/// Marks the install's target bad and records its transaction, once, right
/// before the target's first byte changes (invariant 3). Until then a
/// failed install leaves the target's bootloader state and record as they
/// were: a power cut at any instant finds the target either untouched or
/// marked bad.
struct Arming<'a> {
    host: &'a Host,
    target: SlotName,
    transaction: Transaction,
    armed: bool,
}

impl Arming<'_> {
    fn arm(&mut self, state: &mut State) -> Result<()> {
        if self.armed {
            return Ok(());
        }
        self.host.boot.set_state(self.target, BootState::Bad)?;
        crate::failpoint::hit("target-marked-bad");
        self.armed = true;
        state.transaction = Some(self.transaction.clone());
        state.slots.insert(
            self.target,
            SlotRecord {
                status: "installing".into(),
                ..Default::default()
            },
        );
        self.host.state_dir.save(state)?;
        Ok(())
    }

    /// The write failed: when it had begun, nothing is pending any more and
    /// the target is known bad; when it had not, nothing changed.
    fn fail(&self, state: &mut State) -> Result<()> {
        if !self.armed {
            return Ok(());
        }
        state.transaction = None;
        state.slots.insert(
            self.target,
            SlotRecord {
                status: "bad".into(),
                ..Default::default()
            },
        );
        self.host.state_dir.save(state)?;
        Ok(())
    }
}

/// Rebuild `class` in the target from the booted slot and the release's
/// delta, when the booted slot holds a listed source: `Some(bytes fetched)`.
/// `None`: install the full payload instead (the reason is logged). The
/// second value is what a delta that was given up fetched.
#[allow(clippy::too_many_arguments)]
fn try_delta(
    host: &Host,
    state: &mut State,
    arming: &mut Arming,
    transport: &Transport,
    verified: &Verified,
    booted: SlotName,
    class: &str,
    image: &manifest::Image,
    target_dev: &std::path::Path,
    opts: &InstallOptions,
) -> Result<(Option<u64>, u64)> {
    if image.deltas.is_empty() {
        return Ok((None, 0));
    }
    let Some(booted_dev) = host.config.device(booted, class) else {
        return Ok((None, 0));
    };
    let device_size = Device::inspect(booted_dev)?.size;
    let recorded = state
        .slot(booted)
        .images
        .get(class)
        .map(|r| r.sha256.clone());
    let boot_id = host.boot_id().unwrap_or_default();
    let chosen = crate::delta::choose(
        image,
        booted_dev,
        device_size,
        recorded.as_deref(),
        &mut state.source_hashes,
        &boot_id,
        crate::delta::HOST_MAX_WINDOW_LOG,
    );
    let (source_sha256, delta) = match chosen {
        Ok(c) => c,
        Err(reason) => {
            log(&format!("{class}: installing the full image: {reason}"));
            return Ok((None, 0));
        }
    };
    let location = host.via_mirror(&crate::fetch::resolve(&verified.location, &delta.url)?);
    let journal = host.state_dir.path().join(format!("delta-{class}.journal"));
    let plan = crate::delta::Plan {
        transport,
        location,
        delta,
        source_sha256,
        image,
        source_device: booted_dev,
        target_device: target_dev,
        journal: journal.clone(),
    };
    let mut progress = Progress::new(
        &format!("{class} {} (delta)", verified.manifest.version),
        image.size,
        opts.quiet,
    );
    let outcome =
        crate::delta::apply(&plan, &mut progress, &mut || arming.arm(state)).map_err(|e| {
            match e.downcast::<Error>() {
                // The step before the first write failed: its own error.
                Ok(e) => e,
                Err(e) => Error::io(target_dev, e),
            }
        })?;
    progress.finish();
    match outcome {
        crate::delta::Outcome::Applied {
            fetched,
            segments_fetched,
            segments_reused,
        } => {
            // As for every install: the whole slot, read back from the medium.
            let sha =
                install::hash_path(target_dev, image.size).map_err(|e| Error::io(target_dev, e))?;
            let _ = std::fs::remove_file(&journal);
            if sha != image.sha256 {
                log(&format!(
                    "{class}: the rebuilt slot hashes to {sha}, not {}; installing the full image",
                    image.sha256
                ));
                return Ok((None, fetched));
            }
            log(&format!(
                "{class}: rebuilt from the booted slot by delta: {segments_fetched} segments fetched ({fetched} bytes), {segments_reused} already done"
            ));
            Ok((Some(fetched), 0))
        }
        crate::delta::Outcome::Fallback { reason, fetched } => {
            let _ = std::fs::remove_file(&journal);
            log(&format!(
                "{class}: delta not used ({reason}); installing the full image"
            ));
            Ok((None, fetched))
        }
    }
}

/// Name the payload's URL in an error about its bytes (a zstd error, a hash
/// or size mismatch) that does not name it yet.
fn name_payload_source(e: Error, url: &str) -> Error {
    use install::InstallError as E;
    let named = |what: String| format!("{what} from {url}");
    match e {
        Error::Install(E::Payload { what, reason }) if !reason.contains(url) => {
            Error::Install(E::Payload {
                what: named(what),
                reason,
            })
        }
        Error::Install(E::Size { what, reason }) if !reason.contains(url) => {
            Error::Install(E::Size {
                what: named(what),
                reason,
            })
        }
        Error::Install(E::Mismatch {
            what,
            expected,
            actual,
        }) if !what.contains(url) => Error::Install(E::Mismatch {
            what: named(what),
            expected,
            actual,
        }),
        Error::Install(E::ImageMismatch {
            what,
            expected,
            actual,
        }) if !what.contains(url) => Error::Install(E::ImageMismatch {
            what: named(what),
            expected,
            actual,
        }),
        e => e,
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
        if state.slot(booted).status == "bad"
            && matches!(
                state.slot(booted.other()).status.as_str(),
                "good" | "installed"
            )
        {
            return finish_rollback(host, &state, booted, no_reboot);
        }
        rebless(host, &mut state, booted)?;
        publish(host, &state, None, None);
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
            state.metrics.commits += 1;
            state.metrics.last_success = Some(now());
            crate::report::record_outcome(
                &mut state.outcomes,
                &t.version,
                Outcome::Committed,
                None,
                now(),
            );
            host.state_dir.save(&state)?;
            log(&format!("committed {} in slot {booted}", t.version));
            publish(
                host,
                &state,
                Some((Outcome::Committed, t.version.as_str())),
                None,
            );
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
            // The running slot first again (and re-blessed), in one write.
            host.boot.activate(booted)?;
            state.record_failed(&t.version, &t.manifest_sha256, &reason, now());
            let mut rec = state.slot(t.to);
            rec.status = "bad".into();
            state.slots.insert(t.to, rec);
            state.transaction = None;
            state.metrics.rollbacks += 1;
            *state
                .metrics
                .failures
                .entry("trial_never_booted".into())
                .or_default() += 1;
            crate::report::record_outcome(
                &mut state.outcomes,
                &t.version,
                Outcome::TrialNeverBooted,
                None,
                now(),
            );
            host.state_dir.save(&state)?;
            rebless(host, &mut state, booted)?;
            publish(
                host,
                &state,
                Some((Outcome::TrialNeverBooted, t.version.as_str())),
                Some(("trial_never_booted", &reason)),
            );
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
    state.metrics.rollbacks += 1;
    *state.metrics.failures.entry("health".into()).or_default() += 1;
    crate::report::record_outcome(
        &mut state.outcomes,
        &t.version,
        Outcome::RolledBack,
        None,
        now(),
    );
    host.state_dir.save(&state.clone())?;
    publish(
        host,
        state,
        Some((Outcome::RolledBack, t.version.as_str())),
        Some(("health", reason)),
    );
    if !no_reboot {
        log(&format!("rebooting into slot {}", t.from));
        reboot(host)?;
    }
    Ok(Verdict::RolledBack {
        version: t.version.clone(),
        reason: reason.to_string(),
    })
}

/// The booted slot is recorded bad (its trial failed, or `mark-bad`) while
/// the other slot is good: the rollback was recorded but the reboot never
/// happened (a crash after the state write, a failed reboot command,
/// `--no-reboot`). Re-blessing would make the failed slot bootable again;
/// make sure the good slot boots next and reboot into it instead.
fn finish_rollback(
    host: &Host,
    state: &State,
    booted: SlotName,
    no_reboot: bool,
) -> Result<Verdict> {
    let other = booted.other();
    if host.boot.state(booted)? == BootState::Good {
        host.boot.set_state(booted, BootState::Bad)?;
    }
    if host.boot.primary()? != Some(other) || host.boot.state(other)? != BootState::Good {
        host.boot.activate(other)?;
    }
    let rec = state.slot(booted);
    let reason = format!("slot {booted} is marked bad; slot {other} boots next");
    log(&reason);
    if !no_reboot {
        log(&format!("rebooting into slot {other}"));
        reboot(host)?;
    }
    Ok(Verdict::RolledBack {
        version: rec.version.unwrap_or_else(|| "the booted release".into()),
        reason,
    })
}

/// Run the reboot command. Reports still in flight get until their
/// deadline first (`[report] webhook_timeout`): the reboot would cut them
/// off. The state lock stays held until the host goes down: no other
/// instance acts on a host that is about to reboot.
fn reboot(host: &Host) -> Result<()> {
    crate::report::flush();
    system::reboot(&host.config.system.reboot).map_err(Error::Refused)
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
    } else if state.recovered.is_some() {
        // Repair a damaged state.json (and keep its count) once.
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
    // Onto a slot that is staged and never tried: the boot is its trial,
    // so the transaction stays (health then judges it); anything else in
    // flight is abandoned.
    let staged_there = state
        .transaction
        .as_ref()
        .is_some_and(|t| t.to == other && t.phase == Phase::Staged);
    if !staged_there {
        state.transaction = None;
    }
    if !usable {
        // The operator vouches for it: no longer "bad", so the health
        // check on its boot blesses it instead of rolling back again.
        let mut rec = rec;
        rec.status = "installed".into();
        state.slots.insert(other, rec);
    }
    host.state_dir.save(&state)?;
    log(&format!("slot {other} is now primary"));
    if !no_reboot {
        reboot(host)?;
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
    /// A staged release waits for this maintenance window to reboot.
    pub reboot_window: Option<String>,
    /// Where this host stands in the fleet, 0 to 1.
    pub rollout_position: f64,
    /// The timer's `update` waits until then after failures (what `update`
    /// itself would decide now; `update --now` runs anyway).
    pub backoff_until: Option<String>,
    /// Counters and the bytes the last install fetched (`last_install_fetched`)
    /// against a full install (`last_install_full`).
    pub metrics: crate::state::Metrics,
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
    let windows = &host.config.reboot.windows;
    let staged = state
        .transaction
        .as_ref()
        .is_some_and(|t| t.phase == Phase::Staged);
    let reboot_window = (staged && !crate::schedule::may_reboot(windows, now()))
        .then(|| crate::schedule::next_window(windows, now()).map(crate::timefmt::format_rfc3339))
        .flatten();
    Ok(Status {
        booted_slot: booted,
        booted_version: booted.and_then(|b| host.booted_version(&state, b)),
        primary_slot: host.boot.primary()?,
        slots,
        transaction: state.transaction.clone(),
        failed: state.failed.clone(),
        bootloader: host.boot.describe()?.into_iter().collect(),
        reboot_window,
        rollout_position: host.position(),
        backoff_until: crate::schedule::backing_off_until(
            state.metrics.retry_after,
            now(),
            host.config.update.backoff_max,
        )
        .map(crate::timefmt::format_rfc3339),
        metrics: state.metrics.clone(),
    })
}

/// Write the textfile, and POST the event to the webhook when there is one.
/// `event` = (outcome, release); `error` = (kind, message). Failures to
/// report are logged, never returned: reporting must not change outcomes.
pub fn publish(
    host: &Host,
    state: &State,
    event: Option<(Outcome, &str)>,
    error: Option<(&str, &str)>,
) {
    let booted = host.booted_slot().ok();
    let booted_version = booted.and_then(|b| host.booted_version(state, b));
    let report = &host.config.report;
    if let Some(path) = &report.textfile {
        let view = crate::report::HostView {
            booted_slot: booted.map(SlotName::as_str),
            booted_version: booted_version.as_deref(),
            pending: state.transaction.is_some(),
            position: Some(host.position()),
            compatible: &host.config.update.compatible,
            labels: &report.labels,
            outcomes: &state.outcomes,
        };
        let text = crate::report::render_textfile(&state.metrics, &view);
        if let Err(e) = crate::report::write_textfile(path, &text) {
            log(&format!("cannot write {}: {e}", path.display()));
        }
    }
    let Some((outcome, release)) = event else {
        return;
    };
    if report.webhook.is_none() {
        return;
    }
    let event = crate::report::Event {
        host: host.host_id(),
        compatible: host.config.update.compatible.clone(),
        release: (!release.is_empty()).then(|| release.to_string()),
        booted_slot: booted.map(|b| b.to_string()),
        booted_version,
        outcome: outcome.as_str().to_string(),
        error_kind: error.map(|(k, _)| k.to_string()),
        message: error.map(|(_, m)| crate::fetch::redact(m).into_owned()),
        time: now(),
    };
    // On its own thread: the flow goes on and releases the lock at once;
    // the reboot command and the process's exit wait for it, bounded.
    crate::report::send_webhook(report, event);
}

/// Count a failed run, schedule the backoff, and report it.
pub fn record_failure(host: &Host, error: &Error, release: Option<&str>) {
    let Ok(_lock) = host.state_dir.lock() else {
        return;
    };
    let Ok(mut state) = host.state_dir.load() else {
        return;
    };
    *state
        .metrics
        .failures
        .entry(error.kind().to_string())
        .or_default() += 1;
    state.metrics.consecutive_failures = state.metrics.consecutive_failures.saturating_add(1);
    let delay = crate::schedule::backoff(
        state.metrics.consecutive_failures,
        host.config.update.backoff_base,
        host.config.update.backoff_max,
    );
    let delay = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    state.metrics.retry_after = Some(now().saturating_add(delay));
    crate::report::record_outcome(
        &mut state.outcomes,
        release.unwrap_or(""),
        Outcome::Failed,
        Some(error.kind()),
        now(),
    );
    let _ = host.state_dir.save(&state);
    let message = error.to_string();
    publish(
        host,
        &state,
        Some((Outcome::Failed, release.unwrap_or(""))),
        Some((error.kind(), &message)),
    );
}

fn record_success(host: &Host) {
    let Ok(_lock) = host.state_dir.lock() else {
        return;
    };
    let Ok(mut state) = host.state_dir.load() else {
        return;
    };
    if state.metrics.consecutive_failures != 0 || state.metrics.retry_after.is_some() {
        state.metrics.consecutive_failures = 0;
        state.metrics.retry_after = None;
        let _ = host.state_dir.save(&state);
    }
    publish(host, &state, None, None);
}

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
