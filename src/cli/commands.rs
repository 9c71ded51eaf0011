//! Running each command: one function per command, each opening what it
//! needs, calling the library and printing the result (text, or the
//! `--json` shape from [`super::json`]); the exit code is its return value.

use super::json;
use super::settings::{FleetOptions, Global};
use super::{usage, EXIT_UPDATE_AVAILABLE};
use crate::agent::{
    self, CheckOptions, CheckOutcome, Host, InstallOptions, Purpose, UpdateOutcome, Verdict,
};
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::pack::PackOptions;
use crate::slot::SlotName;
use crate::trust::{minisign, TrustError};
use std::path::{Path, PathBuf};

fn load_config(global: &Global) -> Result<Config> {
    let path = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    Ok(Config::load(&path)?)
}

/// The host, opened for `purpose`, after the config's warnings (once per
/// run: each command opens the host once).
fn open_host(global: &Global, purpose: Purpose) -> Result<Host> {
    let config = load_config(global)?;
    for w in &config.warnings {
        agent::log(&format!("warning: {w}"));
    }
    Host::open(config, purpose)
}

/// A key or signature file: minisign's files are small
/// ([`minisign::MAX_FILE_SIZE`]); `/dev/zero` or a 16 GB file is refused,
/// not read.
fn read_text(path: &Path) -> Result<String> {
    crate::files::read_text_capped(path, minisign::MAX_FILE_SIZE as u64)
        .map_err(|e| Error::io(path, e))
}

/// A key file put in place whole: written to a temporary file beside it
/// (created new, `mode`, synced), then moved to `path` and the directory
/// synced, so a crash leaves the old file or the new one, never a torn key.
/// Without `overwrite` the move is a hard link, which fails if `path` exists
/// (even one a concurrent run made since the caller looked): a key is never
/// replaced without `--force`.
fn place_key_file(path: &Path, data: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        // Named by the path asked for (the temporary name means nothing to
        // the operator); a missing directory is the usual cause.
        .map_err(|e| Error::io(path, e));
    let placed = written.and_then(|()| {
        if overwrite {
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        } else {
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    TrustError::KeyFileExists {
                        path: path.to_path_buf(),
                    }
                    .into()
                } else {
                    Error::io(path, e)
                }
            })
        }
    });
    // Gone after a rename; after a link (or a failure) the extra name goes.
    let _ = std::fs::remove_file(&tmp);
    placed?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// `keygen`: an unencrypted minisign key pair; existing files only with
/// `--force`. Each file is placed whole ([`place_key_file`]); if the public
/// key cannot be placed, a secret key this run created is taken back, so a
/// failed run leaves no half pair.
pub fn keygen(global: &Global, secret: &Path, public: &Path, force: bool) -> Result<i32> {
    if same_file(secret, public) {
        return Err(Error::Usage(format!(
            "keygen: --secret {} and --public {} are one file: the public key would replace the secret",
            secret.display(),
            public.display()
        )));
    }
    for p in [secret, public] {
        if p.exists() && !force {
            return Err(TrustError::KeyFileExists {
                path: p.to_path_buf(),
            }
            .into());
        }
    }
    let (sk, pk) = minisign::generate_keypair().map_err(TrustError::KeyGen)?;
    place_key_file(secret, sk.to_file_string().as_bytes(), 0o600, force)?;
    if let Err(e) = place_key_file(public, pk.to_file_string().as_bytes(), 0o644, force) {
        if !force {
            let _ = std::fs::remove_file(secret);
        }
        return Err(e);
    }
    let key_id = pk.key_id_hex();
    if global.json {
        json::print(&json::Keygen {
            key_id: &key_id,
            secret: crate::text::show_path(secret),
            public: crate::text::show_path(public),
        });
    } else if !global.quiet {
        crate::say!(
            "key id {key_id}: secret {}, public {}",
            secret.display(),
            public.display()
        );
    }
    Ok(0)
}

/// Whether `a` and `b` name one file: one name in one directory however
/// spelled (`k`, `./k`, `d/../k`), or two links to one file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let place = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some((
            std::fs::canonicalize(dir).ok()?,
            p.file_name()?.to_os_string(),
        ))
    };
    if let (Some(x), Some(y)) = (place(a), place(b)) {
        if x == y {
            return true;
        }
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// `sign`: `FILE.minisig`, prehashed, replaced atomically.
pub fn sign(
    global: &Global,
    secret: &Path,
    file: &Path,
    trusted_comment: Option<String>,
) -> Result<i32> {
    crate::publish::warn_if_others_can_read(secret);
    let sk = minisign::SecretKey::parse(&read_text(secret)?).map_err(|error| {
        TrustError::SecretKeyInvalid {
            path: secret.to_path_buf(),
            error,
        }
    })?;
    // A signed comment is one line of bounded length: what the operator
    // typed is signed as typed, or refused, never altered.
    if let Some(c) = &trusted_comment {
        if c.contains(['\0', '\r', '\n']) || c.len() > minisign::TRUSTED_COMMENT_MAX {
            return Err(Error::Usage(format!(
                "--trusted-comment: one line of at most {} bytes, without NUL or a line break",
                minisign::TRUSTED_COMMENT_MAX
            )));
        }
    }
    // A regular file: a FIFO would block the open, a device be read forever.
    let f = crate::files::open_regular(file).map_err(|e| Error::io(file, e))?;
    let digest = minisign::prehash(f).map_err(|e| Error::io(file, e))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comment = trusted_comment
        .unwrap_or_else(|| format!("timestamp:{}\tfile:{name}\thashed", crate::timefmt::now()));
    let sig_path = minisig_path(file);
    // Never a half-written signature next to the file.
    crate::publish::replace_file(
        &sig_path,
        minisign::sign_prehashed(&sk, &digest, &comment).as_bytes(),
    )?;
    if global.json {
        json::print(&json::Sign {
            signature: crate::text::show_path(&sig_path),
            key_id: &sk.public_key().key_id_hex(),
            trusted_comment: crate::text::show(comment.as_bytes()),
        });
    }
    Ok(0)
}

/// `FILE.minisig`, the bytes of FILE's name kept.
fn minisig_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// `verify`: FILE against `FILE.minisig` and one public key.
pub fn verify(global: &Global, public: &Path, file: &Path) -> Result<i32> {
    let pk = minisign::PublicKey::parse(&read_text(public)?).map_err(|error| {
        TrustError::KeyFileInvalid {
            path: public.to_path_buf(),
            error,
        }
    })?;
    let sig_path = minisig_path(file);
    let sig = minisign::Signature::parse(&read_text(&sig_path)?).map_err(|error| {
        TrustError::MalformedSignature {
            name: sig_path.display().to_string(),
            error,
        }
    })?;
    let mut f = crate::files::open_regular(file).map_err(|e| Error::io(file, e))?;
    let result = if sig.prehashed {
        let digest = minisign::prehash(f).map_err(|e| Error::io(file, e))?;
        sig.verify_prehashed(&pk, &digest)
    } else {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).map_err(|e| Error::io(file, e))?;
        sig.verify(&pk, &data)
    };
    result.map_err(|error| TrustError::Verify {
        name: sig_path.display().to_string(),
        error,
    })?;
    if global.json {
        json::print(&json::Verify {
            verified: true,
            key_id: &pk.key_id_hex(),
            trusted_comment: crate::text::show(sig.trusted_comment.as_bytes()),
        });
    } else if !global.quiet {
        crate::tell!("Signature and comment signature verified");
        // Signed, yet outside bytes: nothing in it reaches the terminal raw.
        crate::tell!(
            "Trusted comment: {}",
            crate::text::show(sig.trusted_comment.as_bytes())
        );
    }
    Ok(0)
}

/// `status`.
pub fn status(global: &Global) -> Result<i32> {
    let host = open_host(global, Purpose::Judge)?;
    let status = agent::status(&host)?;
    if global.json {
        json::print(&json::Status::from(&status));
    } else {
        print_status(&status);
    }
    Ok(0)
}

/// `check`: exit 100 when a release applies.
pub fn check(global: &Global, source: Option<&str>, allow_downgrade: bool) -> Result<i32> {
    let host = open_host(global, Purpose::Act)?;
    let opts = CheckOptions {
        allow_downgrade,
        rollout: true,
        by_hand: false,
    };
    let outcome = agent::check(&host, source, opts)?;
    match &outcome {
        CheckOutcome::Available {
            verified: v,
            standing,
        } => {
            let source = crate::fetch::redact(v.source()).into_owned();
            if global.json {
                json::print(&json::Check::available(
                    v.manifest().version.as_str(),
                    &v.manifest().sha256,
                    source,
                    standing.as_ref(),
                ));
            } else {
                crate::tell!("update available: {} ({source})", v.manifest().version);
            }
            Ok(EXIT_UPDATE_AVAILABLE)
        }
        CheckOutcome::UpToDate {
            reason,
            kind,
            standing,
        } => {
            if global.json {
                json::print(&json::Check::up_to_date(*kind, reason, standing.as_ref()));
            } else {
                crate::tell!("no update: {reason}");
            }
            Ok(0)
        }
    }
}

/// `update`, the timer's job.
pub fn update(global: &Global, no_reboot: bool, now: bool) -> Result<i32> {
    let host = open_host(global, Purpose::Act)?;
    let opts = agent::UpdateOptions {
        now,
        no_reboot,
        quiet: global.quiet,
    };
    match agent::update(&host, opts)? {
        UpdateOutcome::BackingOff { until } => {
            let until = crate::timefmt::format_rfc3339(until);
            if global.json {
                json::print(&json::Update::BackingOff { until });
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
                json::print(&json::Update::UpToDate {
                    reason: kind,
                    message: &reason,
                    rollout: standing.as_ref(),
                });
            } else if !global.quiet {
                agent::log(&format!("no update: {reason}"));
            }
        }
        UpdateOutcome::Installed(done) => report_install(global, &done),
        UpdateOutcome::Disarmed { version, reason } => {
            if global.json {
                json::print(&json::Update::Disarmed {
                    release: &version,
                    message: &reason,
                });
            }
        }
        UpdateOutcome::RolledBackLate { version, reason } => {
            let message = format!("rolled back {version} late: {reason}");
            if global.json {
                json::print(&json::Update::RolledBackLate {
                    release: &version,
                    message: &message,
                });
            } else if !global.quiet {
                agent::log(&message);
            }
        }
        UpdateOutcome::NoFallback { version, reason } => {
            if global.json {
                json::print(&json::Update::NoFallback {
                    release: &version,
                    message: &reason,
                });
            } else if !global.quiet {
                agent::log(&reason);
            }
            return Ok(1);
        }
    }
    Ok(0)
}

/// `install SOURCE`: check (without the rollout), then install.
pub fn install(global: &Global, source: &str, opts: &InstallOptions) -> Result<i32> {
    let host = open_host(global, Purpose::Act)?;
    match agent::install(&host, source, opts) {
        Ok(done) => {
            report_install(global, &done);
            Ok(0)
        }
        Err(e) => {
            if !e.kind().refuses_the_command() {
                agent::record_failure(&host, &e, None);
            }
            Err(e)
        }
    }
}

fn report_install(global: &Global, done: &agent::Installed) {
    if global.json {
        json::print(&json::Install {
            installed: &done.version,
            slot: done.slot,
            payload_bytes: done.payload_bytes,
            network_bytes: done.network_bytes,
            rebooting: done.rebooting,
        });
    } else if !global.quiet {
        agent::log(&format!(
            "installed {} into slot {} ({} payload bytes)",
            done.version, done.slot, done.payload_bytes
        ));
    }
}

/// `health`: exit 1 when the trial was rolled back, or the release failed
/// its probation (rolled back late, or kept with no fallback).
pub fn health(global: &Global, no_reboot: bool) -> Result<i32> {
    use json::HealthOutcome as O;
    let host = open_host(global, Purpose::Judge)?;
    let verdict = agent::health(&host, no_reboot, global.quiet)?;
    let (text, code, outcome) = match &verdict {
        Verdict::Healthy => ("healthy; no trial pending".to_string(), 0, O::Healthy),
        Verdict::Committed { version } => (format!("committed {version}"), 0, O::Committed),
        Verdict::RolledBack { version, reason } => {
            (format!("rolled back {version}: {reason}"), 1, O::RolledBack)
        }
        Verdict::TrialNeverBooted { version } => (
            format!("{version} never came up; recorded as failed"),
            0,
            O::TrialNeverBooted,
        ),
        Verdict::AwaitingReboot { version } => (
            format!("healthy; {version} is staged and waits for a reboot"),
            0,
            O::AwaitingReboot,
        ),
        Verdict::OnProbation {
            version,
            until,
            failures,
        } => (
            format!(
                "healthy; {version} is on probation until {} ({failures} failures so far)",
                crate::timefmt::format_rfc3339(*until)
            ),
            0,
            O::OnProbation,
        ),
        Verdict::ProbationPassed { version } => (
            format!("healthy; {version} passed its probation"),
            0,
            O::ProbationPassed,
        ),
        Verdict::ProbationOff { version } => (
            format!("healthy; probation is off: the probation of {version} ended"),
            0,
            O::ProbationOff,
        ),
        Verdict::RolledBackLate { version, reason } => (
            format!("rolled back {version} late: {reason}"),
            1,
            O::RolledBackLate,
        ),
        Verdict::NoFallback { reason, .. } => (reason.clone(), 1, O::NoFallback),
    };
    if global.json {
        json::print(&json::Health {
            outcome,
            message: &text,
        });
    } else if !global.quiet {
        agent::log(&text);
    }
    Ok(code)
}

/// `mark-good` / `mark-bad`.
pub fn mark(global: &Global, slot: Option<SlotName>, good: bool, force: bool) -> Result<i32> {
    let host = open_host(global, Purpose::Act)?;
    let done = agent::mark(&host, slot, good, force)?;
    // `mark-bad` never reboots: the next `health` finishes a rollback.
    print_manual(global, &done, false);
    Ok(0)
}

/// `rollback`.
pub fn rollback(global: &Global, no_reboot: bool, force: bool) -> Result<i32> {
    let host = open_host(global, Purpose::Act)?;
    let done = agent::rollback(&host, force, no_reboot)?;
    print_manual(global, &done, !no_reboot);
    Ok(0)
}

/// The result of a manual verb: its line, or with `--json` its shape
/// ([`json::Manual`]). `rebooting`: the verb asked for the reboot.
fn print_manual(global: &Global, done: &agent::ManualDone, rebooting: bool) {
    use agent::ManualDone as D;
    let text = manual_line(done);
    if global.json {
        let message = text.as_str();
        json::print(&match done {
            D::Marked { slot, good } => json::Manual::Marked {
                slot: *slot,
                good: *good,
                message,
            },
            D::Rejected {
                version,
                late: false,
                next,
                ..
            } => json::Manual::RolledBack {
                release: version,
                slot: *next,
                rebooting,
                message,
            },
            D::Rejected {
                version,
                late: true,
                next,
                ..
            } => json::Manual::RolledBackLate {
                release: version,
                slot: *next,
                rebooting,
                message,
            },
            D::Cancelled { version, slot, .. } => json::Manual::Cancelled {
                release: version,
                slot: *slot,
                message,
            },
            D::Switched { slot } => json::Manual::Switched {
                slot: *slot,
                rebooting,
                message,
            },
            D::Unchanged => json::Manual::Unchanged { message },
        });
    } else if !global.quiet {
        agent::log(&text);
    }
}

/// The line a manual verb's result prints.
fn manual_line(done: &agent::ManualDone) -> String {
    use agent::ManualDone as D;
    match done {
        D::Marked { slot, good } => {
            format!("marked slot {slot} {}", if *good { "good" } else { "bad" })
        }
        D::Rejected {
            version,
            next,
            timer_only: true,
            ..
        } => format!(
            "rolled back from {version} by hand; {version} held from the timer (`abupdate install` of it by hand takes it again); slot {next} boots next"
        ),
        D::Rejected {
            version,
            late,
            next,
            ..
        } => format!(
            "rolled back {version}{}: rejected by hand; slot {next} boots next",
            if *late { " late" } else { "" }
        ),
        D::Cancelled {
            version,
            slot,
            staged,
        } => format!(
            "cancelled {version} {} slot {slot}; slot {} stays the next boot",
            if *staged {
                "staged in"
            } else {
                "being written to"
            },
            slot.other()
        ),
        D::Switched { slot } => format!("slot {slot} boots next"),
        D::Unchanged => "nothing to change".to_string(),
    }
}

/// `pack`: every option checked before anything is written.
#[cfg(feature = "pack")]
pub fn pack(global: &Global, opts: &PackOptions) -> Result<i32> {
    crate::pack::check_options(opts).map_err(usage)?;
    let packed = crate::pack::pack(opts).map_err(Error::Pack)?;
    if global.json {
        let doc = &packed.doc;
        json::print(&json::Pack {
            manifest: crate::text::show_path(&packed.manifest),
            manifest_sha256: &packed.manifest_sha256,
            version: &doc.version,
            created: &doc.created,
            expires: &doc.expires,
            images: doc
                .images
                .iter()
                .map(|(class, image)| {
                    let packed = json::PackedImage {
                        size: image.size,
                        download_size: image.download_size,
                        segments: image.segments.len(),
                        deltas: image.deltas.len(),
                    };
                    (class.as_str(), packed)
                })
                .collect(),
            notes: &packed.notes,
        });
    } else if !global.quiet {
        crate::say!("wrote {} and its signature", packed.manifest.display());
    }
    for note in &packed.notes {
        crate::say!("abupdate: {note}");
    }
    Ok(0)
}

/// A host build carries no compressor (it only decodes).
#[cfg(not(feature = "pack"))]
pub fn pack(_global: &Global, _opts: &PackOptions) -> Result<i32> {
    Err(Error::Usage(
        "this abupdate is a host build without `pack`; use a build with the `pack` feature".into(),
    ))
}

/// `channel`: verify the channel, edit it, re-sign and publish it
/// ([`crate::channel::edit`]).
#[cfg(feature = "pack")]
pub fn channel(global: &Global, opts: &crate::channel::Options) -> Result<i32> {
    let (written, notes) = crate::channel::edit::run(opts)?;
    if global.json {
        json::print(&json::Channel {
            channel: crate::text::show_path(&opts.file),
            sha256: &written.sha256,
            created: crate::timefmt::format_rfc3339(written.created),
            expires: crate::timefmt::format_rfc3339(written.expires),
            halt: written.halt,
            releases: written.releases.len(),
        });
    } else if !global.quiet {
        crate::say!("wrote {} and its signature", opts.file.display());
    }
    for note in &notes {
        crate::say!("abupdate: {note}");
    }
    Ok(0)
}

/// A host build carries no channel editing.
#[cfg(not(feature = "pack"))]
pub fn channel(_global: &Global, _opts: &crate::channel::Options) -> Result<i32> {
    Err(Error::Usage(
        "this abupdate is a host build without `channel`; use a build with the `pack` feature"
            .into(),
    ))
}

/// Decide the manifest's rollout from the fleet's word (Prometheus or the
/// reports) and pause or advance it ([`crate::fleet::controller`]), then
/// say what was decided: the text line (with every query and its answer on
/// `--dry-run`) or the `--json` shape. Every decision exits 0.
#[cfg(feature = "pack")]
pub fn fleet(global: &Global, opts: &FleetOptions) -> Result<i32> {
    use crate::fleet::Action;
    let r = crate::fleet::controller::run(opts, global.quiet)?;
    let t = &r.tally;
    if global.json {
        json::print(&json::Fleet {
            release: &r.release,
            action: match r.action {
                Action::Keep { .. } => json::FleetAction::Keep,
                Action::Pause { .. } => json::FleetAction::Pause,
                Action::Advance { .. } => json::FleetAction::Advance,
            },
            reason: &r.action.explain(),
            changed: r.changed,
            dry_run: r.dry_run,
            source: r.source,
            percent: r.percent,
            wave_hosts: r.wave_hosts,
            fleet_hosts: r.fleet_hosts,
            installed: t.installed,
            committed: t.committed,
            failed: t.failed,
            failed_unattributed: t.failed_unattributed,
            not_counted: t.not_counted,
            in_wave: r.in_wave.as_ref().map(|w| json::FleetWave {
                installed: w.installed,
                committed: w.committed,
                failed: w.failed,
                committed_outside: t.committed.saturating_sub(w.committed),
            }),
            malformed_reports: r.malformed_reports,
            queries: r
                .queries
                .iter()
                .map(|a| json::FleetQuery {
                    query: &a.query,
                    answer: a
                        .answer
                        .iter()
                        .map(|s| json::FleetSample {
                            labels: &s.labels,
                            value: s.value,
                        })
                        .collect(),
                })
                .collect(),
        });
        return Ok(0);
    }
    if r.dry_run {
        if let Some(skew) = r.clock_skew_ms {
            crate::tell!(
                "at: {}, the store's now (its clock {:.1}s from this machine's)",
                crate::timefmt::format_rfc3339(r.at),
                skew as f64 / 1000.0
            );
        }
        for a in &r.queries {
            crate::tell!("query: {}", a.query);
            if a.answer.is_empty() {
                crate::tell!("  (no series)");
            }
            for s in &a.answer {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", crate::fleet::prometheus::quote(v)))
                    .collect();
                crate::tell!("  {{{}}} {}", labels.join(","), s.value);
            }
        }
    }
    let mut line = format!(
        "release {}: {}{} ({}); {} installed, {} committed, {} failed{}; \
         {} failures not caused by the release",
        r.release,
        r.action.verb(),
        if r.dry_run && r.action.changes_manifest() {
            " [dry run: not written]"
        } else {
            ""
        },
        r.action.explain(),
        t.installed,
        t.committed,
        t.failed,
        match t.failed_unattributed {
            0 => String::new(),
            n => format!(" ({n} of them hosts of an older abupdate)"),
        },
        t.not_counted,
    );
    if let Some(w) = &r.in_wave {
        line.push_str(&format!(
            "; in the wave: {} installed, {} committed, {} failed",
            w.installed, w.committed, w.failed
        ));
    }
    if let Some(m) = r.malformed_reports {
        line.push_str(&format!(", {m} malformed reports skipped"));
    }
    crate::tell!("{line}");
    Ok(0)
}

/// A host build carries no fleet controller (the operator's tool, like
/// `pack`): its Prometheus client and re-signing stay out of the binary.
#[cfg(not(feature = "pack"))]
pub fn fleet(_global: &Global, _opts: &FleetOptions) -> Result<i32> {
    Err(usage(
        "this abupdate is a host build without `fleet`; use a build with the `pack` feature",
    ))
}

fn print_status(s: &agent::Status) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    crate::tell!(
        "booted slot:   {}",
        or_dash(s.booted_slot.map(|b| b.to_string()))
    );
    crate::tell!("booted version: {}", or_dash(s.booted_version.clone()));
    crate::tell!(
        "primary slot:  {}",
        or_dash(s.primary_slot.map(|b| b.to_string()))
    );
    for (slot, st) in &s.slots {
        crate::tell!(
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
        Some(t) => crate::tell!(
            "pending: {} from slot {} to slot {} ({:?})",
            t.version,
            t.from,
            t.to,
            t.phase
        ),
        None => crate::tell!("pending: none"),
    }
    for f in &s.failed {
        crate::tell!("{}", failed_line(f));
    }
    if let Some(p) = &s.probation {
        crate::tell!("{}", probation_line(p));
    }
    if let Some(owed) = &s.reboot_owed {
        crate::tell!("{}", owed_line(owed));
    }
    if let Some(w) = &s.reboot_window {
        crate::tell!("reboot: waits for the maintenance window opening {w}");
    }
    if let Some(group) = &s.reboot_lock {
        crate::tell!("reboot lock: may hold group {group}'s lock (given back after the verdict)");
    }
    if let Some(why) = &s.next_update_blocked {
        crate::tell!("next update: blocked ({why})");
    }
    crate::tell!("rollout position: {:.4}", s.rollout_position);
    if let Some(until) = &s.backoff_until {
        crate::tell!(
            "{}",
            backoff_line(until, s.metrics.consecutive_failures, s.backoff_delays)
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
        crate::tell!("last install: fetched {fetched} bytes, a full install {full} ({pct:.1}%)");
    }
    let vars: Vec<String> = s
        .bootloader
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    crate::tell!("bootloader: {}", vars.join(" "));
}

/// A late rollback's owed reboot as `status` prints it: when the timer
/// asks for it (never after a backoff).
fn owed_line(owed: &agent::OwedReboot) -> String {
    let ask = match &owed.lock_group {
        Some(group) => format!("the site's lock (group {group}), then the reboot"),
        None => "the reboot".into(),
    };
    let when = match owed.asked {
        agent::OwedAsk::EveryTick => "every timer tick asks for",
        agent::OwedAsk::MaintenanceWindow => {
            "once the maintenance window opens, every timer tick asks for"
        }
    };
    format!(
        "reboot: owed into slot {} (release {} rolled back late); {when} {ask}, whatever the backoff",
        owed.slot, owed.version
    )
}

/// The backoff as `status` prints it, with what it delays: with a reboot
/// owed, only the attempts after it (each refused lock grows it).
fn backoff_line(until: &str, failed_runs: u32, delays: Option<agent::BackoffDelays>) -> String {
    let what = match delays {
        Some(agent::BackoffDelays::AttemptsAfterTheOwedReboot) => {
            "; it delays the installs after the owed reboot, not the reboot"
        }
        Some(agent::BackoffDelays::NextAttempt) | None => "",
    };
    format!(
        "update: backing off after {failed_runs} failed runs until {until}{what} (`update --now` runs anyway)"
    )
}

/// One entry of the failed list as `status` prints it, its time in RFC 3339
/// (the state's Unix time is for `--json`; a person reads dates), or said
/// to be out of range ([`crate::timefmt::show_rfc3339`]). The
/// release and reason come first, as scripts grepping the text expect.
fn failed_line(f: &crate::state::FailedRelease) -> String {
    let at = crate::timefmt::show_rfc3339(f.at);
    match f.hold {
        crate::state::Hold::Cancelled => format!(
            "cancelled release {}: {} (at {at}); the timer does not install it again (`abupdate install` of it by hand does)",
            f.version, f.reason
        ),
        crate::state::Hold::Rejected => format!(
            "failed release {}: {} (at {at}); the timer does not install it again (`abupdate install` of it by hand does)",
            f.version, f.reason
        ),
        _ => format!("failed release {}: {} (at {at})", f.version, f.reason),
    }
}

/// The probation as `status` prints it: running (its window) or how the
/// last one ended, each time in RFC 3339.
fn probation_line(p: &crate::state::Probation) -> String {
    let t = crate::timefmt::show_rfc3339;
    let head = format!("probation: {} on slot {}", p.version, p.slot);
    let last = p
        .last_failure
        .as_deref()
        .map(|why| format!("; last failure: {why}"))
        .unwrap_or_default();
    match (p.passed, p.off, p.no_fallback) {
        (Some(at), _, _) => format!("{head} passed at {}", t(at)),
        (_, Some(at), _) => format!("{head} ended at {} (probation switched off)", t(at)),
        (_, _, Some(at)) => format!(
            "{head} failed at {} with no usable slot to fall back to: kept{last}",
            t(at)
        ),
        _ => format!(
            "{head} since {} until {}; failures counted: {}{last}",
            t(p.started),
            t(p.until),
            p.failures
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{FailedRelease, Hold, Probation};

    fn probation() -> Probation {
        Probation {
            slot: SlotName::B,
            version: "2.0".into(),
            started: 1_800_000_000,
            until: 1_800_086_400,
            floor: None,
            boot_id: None,
            ran: None,
            uptime: None,
            failures: 1,
            last_failure: Some("an unclean restart".into()),
            passed: None,
            off: None,
            no_fallback: None,
        }
    }

    #[test]
    fn status_shows_the_probation_window_in_rfc3339_not_unix_time() {
        assert_eq!(
            probation_line(&probation()),
            "probation: 2.0 on slot B since 2027-01-15T08:00:00Z until 2027-01-16T08:00:00Z; failures counted: 1; last failure: an unclean restart"
        );
        let passed = Probation {
            passed: Some(1_800_086_400),
            ..probation()
        };
        assert_eq!(
            probation_line(&passed),
            "probation: 2.0 on slot B passed at 2027-01-16T08:00:00Z"
        );
        let off = Probation {
            off: Some(1_800_000_060),
            ..probation()
        };
        assert!(probation_line(&off).contains("ended at 2027-01-15T08:01:00Z"));
        let kept = Probation {
            no_fallback: Some(1_800_000_120),
            ..probation()
        };
        assert!(probation_line(&kept).contains("failed at 2027-01-15T08:02:00Z"));
    }

    #[test]
    fn status_says_the_owed_reboot_is_asked_for_at_every_tick_and_the_backoff_does_not_delay_it() {
        let owed = agent::OwedReboot {
            slot: SlotName::A,
            version: "2.0".into(),
            asked: agent::OwedAsk::EveryTick,
            lock_group: Some("store-7".into()),
        };
        assert_eq!(
            owed_line(&owed),
            "reboot: owed into slot A (release 2.0 rolled back late); every timer tick asks for the site's lock (group store-7), then the reboot, whatever the backoff"
        );
        let window = agent::OwedReboot {
            asked: agent::OwedAsk::MaintenanceWindow,
            lock_group: None,
            ..owed
        };
        assert!(owed_line(&window).contains(
            "once the maintenance window opens, every timer tick asks for the reboot, whatever"
        ));
        let until = "2027-01-15T08:00:00Z";
        assert_eq!(
            backoff_line(until, 3, Some(agent::BackoffDelays::AttemptsAfterTheOwedReboot)),
            "update: backing off after 3 failed runs until 2027-01-15T08:00:00Z; it delays the installs after the owed reboot, not the reboot (`update --now` runs anyway)"
        );
        assert_eq!(
            backoff_line(until, 1, Some(agent::BackoffDelays::NextAttempt)),
            "update: backing off after 1 failed runs until 2027-01-15T08:00:00Z (`update --now` runs anyway)"
        );
    }

    /// A state time RFC 3339 cannot write is said to be out of range, with
    /// its Unix seconds, not clamped to a year 0000 or 9999 that looks real.
    #[test]
    fn status_shows_a_state_time_out_of_rfc3339s_range_as_such_with_its_unix_seconds() {
        let f = FailedRelease {
            version: "2.0".into(),
            manifest_sha256: "ab".into(),
            reason: "never came up".into(),
            at: i64::MAX,
            hold: Hold::default(),
            provisional: false,
            unknown: Default::default(),
        };
        assert_eq!(
            failed_line(&f),
            "failed release 2.0: never came up (at out of range (Unix time 9223372036854775807))"
        );
        let p = Probation {
            until: 253_402_300_800,
            ..probation()
        };
        assert!(
            probation_line(&p).contains(
                "since 2027-01-15T08:00:00Z until out of range (Unix time 253402300800);"
            ),
            "{}",
            probation_line(&p)
        );
    }

    #[test]
    fn status_shows_when_a_release_failed_in_rfc3339_not_unix_time() {
        let f = FailedRelease {
            version: "2.0".into(),
            manifest_sha256: "ab".into(),
            reason: "never came up".into(),
            at: 1_800_000_000,
            hold: Hold::default(),
            provisional: false,
            unknown: Default::default(),
        };
        assert_eq!(
            failed_line(&f),
            "failed release 2.0: never came up (at 2027-01-15T08:00:00Z)"
        );
        let rejected = FailedRelease {
            hold: Hold::Rejected,
            provisional: false,
            reason: "rejected by hand after its commit (`abupdate rollback`)".into(),
            ..f.clone()
        };
        assert_eq!(
            failed_line(&rejected),
            "failed release 2.0: rejected by hand after its commit (`abupdate rollback`) (at 2027-01-15T08:00:00Z); the timer does not install it again (`abupdate install` of it by hand does)"
        );
        let cancelled = FailedRelease {
            hold: Hold::Cancelled,
            provisional: false,
            reason: "cancelled by the operator".into(),
            ..f
        };
        assert!(failed_line(&cancelled).starts_with(
            "cancelled release 2.0: cancelled by the operator (at 2027-01-15T08:00:00Z); "
        ));
    }
}
