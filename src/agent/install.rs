//! `install`: write a verified release into the inactive slot and stage it.

use super::check::judge;
use super::recovery::reboot;
use super::report::publish;
use super::{log, Host, Verified};
use crate::boot::BootState;
use crate::error::{Error, Result};
use crate::fetch::Transport;
use crate::install::{self, WriteMode};
use crate::manifest::{self, Manifest};
use crate::progress::Progress;
use crate::slot::{Device, SlotName};
use crate::state::{ImageRef, Phase, SlotRecord, State, Transaction};
use crate::system;
use crate::timefmt::now;
use std::collections::BTreeMap;

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
    host.state_dir.save(&state)?;
    publish(host, &state, Some(("installed", m.version.as_str())), None);
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
