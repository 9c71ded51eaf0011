//! The trust gate: the one way a fetched manifest becomes something the
//! agent acts on.
//!
//! Invariant: [`fetch_verified`] is the only function that makes a
//! [`Verified`] (and [`fetch_channel`] the only one that makes a
//! [`VerifiedChannel`]), and each makes one only from bytes whose
//! signatures met the threshold of distinct trusted keys (both through
//! `fetch_signed`: one rule for every signed file a host reads) ([`super::verify_threshold`], through
//! [`crate::publish::verify_signatures`] for the signatures bound to these
//! very bytes). `Verified`'s fields are private, so no other module can
//! assemble one from bytes that did not pass; everything that acts on a
//! release (judging it for an install, writing its images, staging it)
//! takes a `&Verified`.
//!
//! ```compile_fail
//! // Outside this module a `Verified` cannot be built by hand.
//! use abupdate::trust::gate::Verified;
//! let m: abupdate::manifest::Manifest = todo!();
//! let v = Verified {
//!     location: String::new(),
//!     source: String::new(),
//!     manifest: m,
//!     validators: Default::default(),
//! };
//! ```

use super::{KeyRing, TrustError};
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::fetch::{Document, Transport, Validators};
use crate::manifest::{self, Manifest};
use crate::publish;
use std::path::PathBuf;

/// Where a manifest comes from and what it must carry to be believed.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The manifest's location (URL or path), as configured or given.
    pub location: &'a str,
    /// The site cache every URL is fetched through, when one is configured
    /// ([`crate::fetch::via_mirror`]); signatures make any mirror as good
    /// as the origin.
    pub mirror: Option<&'a str>,
    /// The signature's own URL or a `{name}` template (`[update]
    /// signature_url`: a presigned URL signs one object, so the manifest's
    /// query is not the signature's); `None`: next to the manifest.
    pub signature_url: Option<&'a str>,
    /// Where the trusted `*.pub` keys are.
    pub keys_dirs: &'a [PathBuf],
    /// Signatures by distinct trusted keys needed.
    pub threshold: usize,
}

impl Source<'_> {
    /// Where to fetch `url` from: through the mirror when there is one.
    pub fn via_mirror(&self, url: &str) -> String {
        match self.mirror {
            Some(mirror) => crate::fetch::via_mirror(url, mirror),
            None => url.to_string(),
        }
    }
}

/// A manifest whose signatures met the threshold. Only [`fetch_verified`]
/// makes one.
#[derive(Debug)]
pub struct Verified {
    location: String,
    source: String,
    manifest: Manifest,
    validators: Validators,
}

impl Verified {
    /// The manifest's own location (as configured or given): image
    /// references resolve against it, and the mirror rewrites what that
    /// gives.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Where the verified bytes actually came from: the mirror's URL when
    /// one is configured, the last redirect's target when redirected. Raw:
    /// show it through [`crate::fetch::redact`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The response's validators, for the next conditional request.
    pub fn validators(&self) -> &Validators {
        &self.validators
    }
}

/// Fetch the manifest at `src` and its signatures (through the mirror, if
/// one is configured) and verify them. `None` when the server answered 304
/// to a conditional request (`validators`). Errors name the URL actually
/// fetched; a release without any signature file is
/// [`TrustError::NoSignatures`] naming the first one looked for.
pub fn fetch_verified(
    transport: &Transport,
    src: &Source,
    validators: Option<&Validators>,
) -> Result<Option<Verified>> {
    let Some((body, validators, source)) =
        fetch_signed(transport, src, manifest::MAX_MANIFEST_BYTES, validators)?
    else {
        return Ok(None);
    };
    let manifest = Manifest::parse(&body)?;
    Ok(Some(Verified {
        location: src.location.to_string(),
        source,
        manifest,
        validators,
    }))
}

/// A release channel whose signatures met the threshold (the same keys and
/// threshold as a manifest's). Only [`fetch_channel`] makes one; whether it
/// may be believed *now* is [`crate::channel::check_time`].
pub struct VerifiedChannel {
    location: String,
    source: String,
    channel: Channel,
}

impl VerifiedChannel {
    /// The channel's own location: its manifests resolve against it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Where the verified bytes actually came from (the mirror's URL, the
    /// last redirect's target): what a refusal of them names. Raw: show it
    /// through [`crate::fetch::redact`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The verified channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// Fetch the channel at `src` and its signatures and verify them exactly
/// as a manifest's ([`fetch_verified`]), then parse it.
pub fn fetch_channel(transport: &Transport, src: &Source) -> Result<VerifiedChannel> {
    let max = crate::channel::MAX_CHANNEL_BYTES;
    // Refusals name the URL actually fetched (through the mirror), as the
    // fetch's own errors do.
    let Some((body, _, source)) = fetch_signed(transport, src, max, None)? else {
        return Err(crate::channel::ChannelError::Malformed {
            url: crate::fetch::redact(&src.via_mirror(src.location)).into_owned(),
            field: "HTTP 304".into(),
            reason: "an answer to an unconditional request",
        }
        .into());
    };
    let channel = Channel::parse(&crate::fetch::redact(&source), &body)?;
    Ok(VerifiedChannel {
        location: src.location.to_string(),
        source,
        channel,
    })
}

/// The bytes at `src` (at most `max`), returned only when their signatures
/// met the threshold, with their validators and the URL they came from.
/// `None` when the server answered 304 to a conditional request.
fn fetch_signed(
    transport: &Transport,
    src: &Source,
    max: u64,
    validators: Option<&Validators>,
) -> Result<Option<(Vec<u8>, Validators, String)>> {
    let fetched = src.via_mirror(src.location);
    let (body, validators, source) = match transport.get_document(&fetched, max, validators)? {
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
    let keys = KeyRing::load(src.keys_dirs)?;
    let (signatures, first_missing) = fetch_signatures(transport, src, None)?;
    // Mid-publish, or behind a cache, the standard signature may belong to
    // another file (or not be there yet): the publisher leaves the
    // signatures of these very bytes under names bound to them first
    // (crate::publish).
    let tag = publish::bound_tag(&body);
    let bound = || {
        fetch_signatures(transport, src, Some(&tag))
            .map(|(s, _)| s)
            .unwrap_or_default()
    };
    publish::verify_signatures(&body, &signatures, bound, &keys, src.threshold).map_err(
        |e| match e {
            TrustError::NoSignatures { .. } => TrustError::NoSignatures {
                missing: first_missing,
            },
            e => e,
        },
    )?;
    Ok(Some((body, validators, source)))
}

/// Signature files as (URL shown, text).
type Signatures = Vec<(String, String)>;

/// The signature files of the manifest at `src` (`.minisig`, and
/// `.N.minisig` for a threshold above 1; with `bound_tag`, the names bound
/// to one manifest's bytes), as (URL shown, text), and the first name that
/// was missing.
fn fetch_signatures(
    transport: &Transport,
    src: &Source,
    bound_tag: Option<&str>,
) -> Result<(Signatures, Option<String>)> {
    let count = match src.threshold {
        0 | 1 => 1,
        _ => publish::MAX_SIGNATURES,
    };
    let prefix = bound_tag.map(|t| format!(".{t}")).unwrap_or_default();
    let mut signatures = Vec::new();
    let mut first_missing = None;
    // Next to the manifest (its path plus a suffix, its query kept), or
    // where `signature_url` says.
    for suffix in (0..count).map(|i| publish::signature_name(&prefix, i)) {
        let Some(url) = crate::fetch::signature_location(src.location, &suffix, src.signature_url)?
        else {
            continue;
        };
        let url = src.via_mirror(&url);
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
