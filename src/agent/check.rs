//! `check`: fetch the manifest through the trust gate and judge it.

use super::Host;
use crate::error::{Error, Result};
use crate::fetch::{Document, Transport, Validators};
use crate::manifest::{self, HostFacts, Manifest, NotApplicable, Version};
use crate::publish;
use crate::rollout::{self, Standing};
use crate::slot::SlotName;
use crate::state::{LastCheck, State, StateDir};
use crate::timefmt::now;
use crate::trust::{self, KeyRing};

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
    // Next to the manifest: its path plus a suffix, its query kept.
    let prefix = bound_tag.map(|t| format!(".{t}")).unwrap_or_default();
    let mut signatures = Vec::new();
    let mut first_missing = None;
    for suffix in (0..count).map(|i| publish::signature_name(&prefix, i)) {
        let url = host.via_mirror(&crate::fetch::sibling(location, &suffix)?);
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
pub(super) fn judge(
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
pub(super) fn save_if_unlocked(state_dir: &StateDir, state: &State) -> Result<()> {
    if let Ok(_lock) = state_dir.lock() {
        state_dir.save(state)?;
    }
    Ok(())
}
