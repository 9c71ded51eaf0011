//! The release manifest (`release.json`): its schema and the pure decisions
//! made on it.
//!
//! Invariant: a [`Manifest`] only exists for bytes that parsed completely,
//! with exactly one reading (no object names a key twice, at any depth), and
//! whose every required field is present and well formed; whether it *applies*
//! to this host is decided by [`evaluate`], a plain function of the manifest
//! and the host's facts, so tests and the fleet simulation call exactly what
//! the host runs.

use crate::timefmt::parse_rfc3339;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Largest manifest accepted; a server sending more is refused mid-read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The only manifest format this binary reads.
pub const FORMAT: u32 = 1;

/// The largest byte count or offset a manifest may state: no Linux file or
/// block device is larger, and the I/O calls take signed 64-bit offsets.
pub const MAX_BYTES: u64 = i64::MAX as u64;

/// Errors of a manifest's shape; each names the field.
#[derive(Debug)]
pub enum ManifestError {
    /// Not JSON, or not the manifest's shape (serde's message).
    Parse(String),
    /// A field missing or malformed.
    Field {
        /// The field's path (`images.rootfs.size`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Parse(m) => write!(f, "release manifest: {m}"),
            ManifestError::Field { field, reason } => {
                write!(f, "release manifest: {field}: {reason}")
            }
        }
    }
}

impl std::error::Error for ManifestError {}

/// A release version: dotted numbers compared part by part (`2026.11.3`).
/// Equality is the same comparison: `1.2` == `1.2.0`, whatever the text.
#[derive(Clone, Debug)]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

impl Version {
    /// A dotted-number version (`2026.11.3`); the error says why not.
    pub fn parse(text: &str) -> Result<Version, String> {
        let parts: Result<Vec<u64>, _> = text
            .split('.')
            .map(|p| {
                if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(())
                } else {
                    p.parse::<u64>().map_err(|_| ())
                }
            })
            .collect();
        match parts {
            Ok(parts) if !parts.is_empty() => Ok(Version {
                text: text.to_string(),
                parts,
            }),
            _ => Err(format!(
                "{text:?} is not a dotted-number version (e.g. 2026.11.3)"
            )),
        }
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        // Missing trailing parts count as zero: 1.2 == 1.2.0.
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

// Equal exactly when `cmp` says so (what `Ord` requires): a derived
// equality compared the text, so a failed `3.0` did not cover `3.0.0`.
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// The image itself.
    None,
    /// A zstd stream (or frames).
    Zstd,
}

/// One payload as the manifest describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    /// Where the payload is: relative to the manifest, or absolute http(s).
    pub url: String,
    /// Bytes of the image once decoded: what lands in the slot.
    pub size: u64,
    /// SHA-256 of the decoded image (hex).
    pub sha256: String,
    /// How the payload is stored.
    #[serde(default = "no_compression")]
    pub compression: Compression,
    /// Bytes on the wire; equal to `size` when uncompressed.
    #[serde(default)]
    pub download_size: Option<u64>,
    /// SHA-256 of the payload on the wire (hex); the image's when uncompressed.
    #[serde(default)]
    pub download_sha256: Option<String>,
    /// zstd window log the payload needs to decode (`--long=N`).
    #[serde(default)]
    pub window_log: Option<u32>,
    /// The full payload as independent zstd frames, one per image segment
    /// (empty: one stream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// Delta payloads, keyed by the SHA-256 of the source image they apply to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deltas: BTreeMap<String, Delta>,
}

/// Bytes `[offset, offset + length)` of the image, stored as one zstd frame
/// at `[patch_offset, patch_offset + patch_length)` of a payload file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Where in the image it starts.
    pub offset: u64,
    /// Its length in the image.
    pub length: u64,
    /// SHA-256 of those image bytes.
    pub sha256: String,
    /// BLAKE3 of the segment's bytes (releases packed since segments became
    /// the default): what a host checks the read-back against when given,
    /// as it costs far less CPU than SHA-256. `sha256` stays for hosts that
    /// do not know this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Where its frame starts in the payload file.
    pub patch_offset: u64,
    /// The frame's length.
    pub patch_length: u64,
    /// BLAKE3 of the frame's bytes, as stored in the payload (full
    /// segmented payloads packed since frame digests). A host checks each
    /// frame against it before the decoder sees a byte of it, and needs no
    /// hash of the whole payload when every frame carries one; absent, the
    /// payload's `download_sha256` covers the frames (checked at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_blake3: Option<String>,
    /// Delta segments only: the part of the source image the frame
    /// references (absent: the whole source). Set when the source and a
    /// segment do not fit one zstd window, e.g. in deltas for 32-bit hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRegion>,
}

/// Bytes `[offset, offset + length)` of a delta's source image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRegion {
    /// Where it starts.
    pub offset: u64,
    /// Its length.
    pub length: u64,
}

impl Delta {
    /// The source bytes segment `seg` references.
    pub fn source_of(&self, seg: &Segment) -> SourceRegion {
        seg.source.unwrap_or(SourceRegion {
            offset: 0,
            length: self.source_size,
        })
    }
}

/// A payload that rebuilds the image from a source image (the booted
/// slot's exact bytes), each segment a zstd frame with the whole source (or
/// the segment's `source` region of it) as its reference prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Where the delta payload is (as [`Image::url`]).
    pub url: String,
    /// Bytes of the source image (a prefix of the booted slot).
    pub source_size: u64,
    /// zstd window log of the frames: 2^window_log covers each segment plus
    /// the source it references. A host applies only a delta whose window
    /// its zstd allows (30 on 32-bit hosts, 31 otherwise).
    pub window_log: u32,
    /// Bytes of the delta payload.
    pub download_size: u64,
    /// Its segments, in image order.
    pub segments: Vec<Segment>,
}

/// Check that each delta segment's source region lies inside the source and
/// fits, with the segment, in the delta's window: what lets a host bound
/// the source it maps by the window it accepts.
fn check_sources(delta: &Delta) -> Result<(), String> {
    let window = 1u64 << delta.window_log;
    for (i, seg) in delta.segments.iter().enumerate() {
        let src = delta.source_of(seg);
        if src.length == 0
            || src
                .offset
                .checked_add(src.length)
                .is_none_or(|end| end > delta.source_size)
        {
            return Err(format!(
                "segment {i} source region lies outside the {}-byte source",
                delta.source_size
            ));
        }
        if src.length.saturating_add(seg.length) > window {
            return Err(format!(
                "segment {i} and its {}-byte source exceed the 2^{} window",
                src.length, delta.window_log
            ));
        }
    }
    Ok(())
}

/// Check that a delta rebuilds exactly the segments of the full payload:
/// the same count, and each the same offset, length and digests. The
/// digests a host checks a segment against (in the slot, on resume, when
/// staged) are the full table's; a delta whose table said otherwise would
/// have its segments checked against other bytes than the full payload's.
/// The first difference is named.
fn check_same_targets(full: &[Segment], delta: &[Segment]) -> Result<(), String> {
    if full.len() != delta.len() {
        return Err(format!(
            "{} segments, the full payload has {}",
            delta.len(),
            full.len()
        ));
    }
    for (i, (f, d)) in full.iter().zip(delta).enumerate() {
        let differs = |what: &str, delta: String, full: String| {
            Err(format!(
                "segment {i} {what} is {delta}, the full payload's is {full}"
            ))
        };
        if d.offset != f.offset {
            return differs("offset", d.offset.to_string(), f.offset.to_string());
        }
        if d.length != f.length {
            return differs("length", d.length.to_string(), f.length.to_string());
        }
        if d.sha256 != f.sha256 {
            return differs("sha256", d.sha256.clone(), f.sha256.clone());
        }
        if d.blake3 != f.blake3 {
            let show = |b: &Option<String>| b.clone().unwrap_or_else(|| "absent".into());
            return differs("blake3", show(&d.blake3), show(&f.blake3));
        }
    }
    Ok(())
}

/// Check that `segments` tile `[0, size)` in order and stay inside a
/// payload of `payload_size` bytes.
fn check_segments(segments: &[Segment], size: u64, payload_size: u64) -> Result<(), String> {
    let mut next = 0u64;
    for (i, seg) in segments.iter().enumerate() {
        if seg.offset != next {
            return Err(format!(
                "segment {i} starts at {} (expected {next}: segments tile the image in order)",
                seg.offset
            ));
        }
        if seg.length == 0 {
            return Err(format!("segment {i} (at {}) is empty", seg.offset));
        }
        if !is_hex_sha256(&seg.sha256) {
            return Err(format!("segment {i} sha256 is not 64 lowercase hex digits"));
        }
        if seg.blake3.as_deref().is_some_and(|h| !is_hex_sha256(h)) {
            return Err(format!("segment {i} blake3 is not 64 lowercase hex digits"));
        }
        if seg
            .patch_blake3
            .as_deref()
            .is_some_and(|h| !is_hex_sha256(h))
        {
            return Err(format!(
                "segment {i} patch_blake3 is not 64 lowercase hex digits"
            ));
        }
        let end = seg.patch_offset.checked_add(seg.patch_length);
        if seg.patch_length == 0 || end.is_none_or(|e| e > payload_size) {
            return Err(format!(
                "segment {i} patch range lies outside the {payload_size}-byte payload"
            ));
        }
        next = seg
            .offset
            .checked_add(seg.length)
            .ok_or_else(|| format!("segment {i} overflows"))?;
    }
    if next != size {
        return Err(format!("segments cover {next} bytes, the image has {size}"));
    }
    Ok(())
}

fn no_compression() -> Compression {
    Compression::None
}

impl Segment {
    /// `frame` is this segment's frame as signed: `Ok` when it hashes to
    /// `patch_blake3`, or when the manifest gives none (releases packed
    /// before frame digests: the payload's hash covers them); otherwise the
    /// frame's BLAKE3 (hex). The one check the full and the delta pipelines
    /// make before a frame reaches the decoder.
    pub fn check_frame(&self, frame: &[u8]) -> Result<(), String> {
        let Some(expected) = &self.patch_blake3 else {
            return Ok(());
        };
        let actual = blake3::hash(frame).to_hex();
        if actual.as_str() == expected {
            return Ok(());
        }
        Err(actual.to_string())
    }
}

impl Image {
    /// Bytes on the wire.
    pub fn download_size(&self) -> u64 {
        self.download_size.unwrap_or(self.size)
    }

    /// SHA-256 of the bytes on the wire.
    pub fn download_sha256(&self) -> &str {
        self.download_sha256.as_deref().unwrap_or(&self.sha256)
    }
}

/// The staged-rollout block; interpreted by the rollout logic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollout {
    /// When the rollout starts (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Percentage of hosts at `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_percentage: Option<f64>,
    /// Minutes from `start` to 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u64>,
    /// A fixed percentage instead of a ramp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// No host takes the release while paused.
    #[serde(default)]
    pub paused: bool,
    /// The fleet controller's plan: the `percent` of each wave in turn
    /// (hosts read only `percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<f64>>,
    /// When the current wave started (RFC 3339), for the controller's soak
    /// time; absent: the manifest's `created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started: Option<String>,
}

/// The manifest as written in `release.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestDoc {
    /// The manifest format: 1.
    pub format: u32,
    /// Which hosts it is for (`update.compatible`).
    pub compatible: String,
    /// The release track it was published for (`stable`, `beta`): what a
    /// host with `[update] track` requires of it ([`check_track`]), so
    /// another track's manifest signed by the same key is refused at its
    /// URL. Absent in manifests packed without `--track`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// The release, as dotted numbers.
    pub version: String,
    /// When it was signed (RFC 3339).
    pub created: String,
    /// When it stops being acted on (RFC 3339).
    pub expires: String,
    /// Class → payload.
    pub images: BTreeMap<String, Image>,
    /// The staged rollout, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A parsed and checked manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The document as signed.
    pub doc: ManifestDoc,
    /// `doc.version`, parsed.
    pub version: Version,
    /// `doc.created`, Unix time.
    pub created: i64,
    /// `doc.expires`, Unix time.
    pub expires: i64,
    /// SHA-256 of the exact signed bytes, hex: names this release in the state.
    pub sha256: String,
}

/// Hex digits of a build id ([`build_id`]).
pub const BUILD_ID_LEN: usize = 16;

/// The build of a release: the first [`BUILD_ID_LEN`] hex digits of the
/// SHA-256 of a canonical listing of its images (class, image SHA-256,
/// size; one line each, by class). What the release *is*, not how it was
/// signed: a manifest re-signed (a wave advanced, `created` moved) keeps
/// its build; another image under the same version is another build.
/// Hosts label their outcomes with it (`build`), and `fleet` counts only
/// the outcomes of the manifest's own build. The one place it is computed.
pub fn build_id<'a>(images: impl IntoIterator<Item = (&'a str, &'a str, u64)>) -> String {
    let mut lines: Vec<String> = images
        .into_iter()
        .map(|(class, sha256, size)| format!("{}:{class} {sha256} {size}\n", class.len()))
        .collect();
    lines.sort();
    let digest = sha2_digest(lines.concat().as_bytes());
    let mut hex = crate::install::hex(&digest);
    hex.truncate(BUILD_ID_LEN);
    hex
}

impl ManifestDoc {
    /// This release's build ([`build_id`] of its images).
    pub fn build(&self) -> String {
        build_id(
            self.images
                .iter()
                .map(|(class, i)| (class.as_str(), i.sha256.as_str(), i.size)),
        )
    }
}

pub(crate) fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The longest track name.
pub const MAX_TRACK_LEN: usize = 64;

/// A track name (`stable`, `edge-beta.2`): 1 to [`MAX_TRACK_LEN`] of
/// `A-Za-z0-9._-`, so it is shown as it is and compared byte for byte. The
/// one rule for a manifest's, a channel's and a host's `track`.
pub fn check_track_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    match !name.is_empty() && name.len() <= MAX_TRACK_LEN && name.bytes().all(allowed) {
        true => Ok(()),
        false => Err(format!(
            "\"{}\": a track is 1 to {MAX_TRACK_LEN} of A-Z a-z 0-9 . _ -",
            crate::text::show(name.as_bytes())
        )),
    }
}

/// What a host requires of a document's `track`. A signature says who
/// signed a document, not which channel or release directory it was
/// published for; the signed `track` does, so another track's document (a
/// beta channel, a beta release) served at this host's URL is refused
/// instead of undoing a halt or skipping a wave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrackRule<'a> {
    /// Any track, or none: a host that follows none, or a manifest its
    /// channel (itself of the host's track) pins by its bytes.
    #[default]
    Any,
    /// Not another track; a document of none is taken: a manifest an
    /// operator gives by hand (a USB stick's, a release packed before
    /// tracks).
    NotOther(&'a str),
    /// Exactly this track: the host's channel, the manifest at its `url`,
    /// the unpinned manifests its channel names.
    Exactly(&'a str),
}

/// A document's `track` (`found`) against what the host requires:
/// `Err((found, the host's track))` when refused.
pub fn check_track<'a>(
    found: Option<&'a str>,
    rule: TrackRule<'a>,
) -> Result<(), (Option<&'a str>, &'a str)> {
    match rule {
        TrackRule::Exactly(want) if found != Some(want) => Err((found, want)),
        TrackRule::NotOther(want) if found.is_some_and(|f| f != want) => Err((found, want)),
        _ => Ok(()),
    }
}

/// Whether a document of `found` track belongs to what a host following
/// `host` (if any) reads: only such a document may raise its records of
/// time. Another track's, or one of none on a host that follows a track,
/// is no document of its sources, however it was let in.
pub fn on_track(found: Option<&str>, host: Option<&str>) -> bool {
    host.is_none_or(|h| found == Some(h))
}

/// How a refusal names a document's track: `track "beta"`, or `no track`.
pub fn describe_track(found: Option<&str>) -> String {
    match found {
        Some(t) => format!("track \"{t}\""),
        None => "no track".into(),
    }
}

impl Manifest {
    /// Parse signed bytes. Unknown fields are ignored; a missing or malformed
    /// required field is an error naming it.
    // Long on purpose: one pass over the signed document, each field checked
    // where it is read, so every error names its field path.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let field = |field: &str, reason: String| ManifestError::Field {
            field: field.to_string(),
            reason,
        };
        // serde takes the last of two equal keys in a map and refuses them
        // in a struct: what the signer saw and what the host acts on could
        // differ. A signed document must have one reading.
        if let Some(path) = duplicate_key(bytes).map_err(|e| ManifestError::Parse(e.to_string()))? {
            return Err(field(
                &path,
                "appears twice in its object (a signed manifest must have one reading)".into(),
            ));
        }
        let doc: ManifestDoc =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        if doc.format != FORMAT {
            return Err(field(
                "format",
                format!(
                    "{} is not supported (this abupdate reads format {FORMAT})",
                    doc.format
                ),
            ));
        }
        if let Some(t) = &doc.track {
            check_track_name(t).map_err(|e| field("track", e))?;
        }
        let version = Version::parse(&doc.version).map_err(|e| field("version", e))?;
        let created = parse_rfc3339(&doc.created).map_err(|e| field("created", e))?;
        let expires = parse_rfc3339(&doc.expires).map_err(|e| field("expires", e))?;
        // A manifest valid for no instant is a signing mistake (a swapped or
        // mistyped date); its `created` must not reach any host's records.
        if expires <= created {
            return Err(field(
                "expires",
                format!("{} is not after created {}", doc.expires, doc.created),
            ));
        }
        // A manifest valid for longer is read as expiring at the cap, not
        // refused: `pack` of 213989b and before signed such manifests
        // (`--expires-days 4000`), and a host upgraded past them must keep
        // updating from them ("upgrades keep what was accepted"). The cap
        // keeps the freeze protection a refusal gave: a frozen copy of it
        // expires when any manifest valid that long would.
        let expires = capped_expires(created, expires);
        if doc.images.is_empty() {
            return Err(field("images", "lists no image".into()));
        }
        for (class, image) in &doc.images {
            let at = |f: &str| format!("images.{class}.{f}");
            // An empty image would "install" by writing nothing and then
            // activate a slot that still holds whatever it held.
            if image.size == 0 {
                return Err(field(
                    &at("size"),
                    "0: an image has at least one byte".into(),
                ));
            }
            for (name, n) in [
                ("size", Some(image.size)),
                ("download_size", image.download_size),
            ] {
                if n.is_some_and(|n| n > MAX_BYTES) {
                    return Err(field(
                        &at(name),
                        format!(
                            "{} is larger than any device (2^63-1 bytes)",
                            n.unwrap_or(0)
                        ),
                    ));
                }
            }
            if image.download_size == Some(0) {
                return Err(field(
                    &at("download_size"),
                    "0: a payload has at least one byte".into(),
                ));
            }
            // Uncompressed, the payload is the image: anything else fails
            // every install, so it is refused before one starts.
            if image.compression == Compression::None
                && (image.download_size.is_some_and(|d| d != image.size)
                    || image
                        .download_sha256
                        .as_ref()
                        .is_some_and(|h| *h != image.sha256))
            {
                return Err(field(
                    &at("download_size"),
                    "an uncompressed payload is the image: its download_size and download_sha256 must equal size and sha256".into(),
                ));
            }
            if !is_hex_sha256(&image.sha256) {
                return Err(field(&at("sha256"), "not 64 lowercase hex digits".into()));
            }
            if let Some(h) = &image.download_sha256 {
                if !is_hex_sha256(h) {
                    return Err(field(
                        &at("download_sha256"),
                        "not 64 lowercase hex digits".into(),
                    ));
                }
            }
            if image.compression != Compression::None
                && (image.download_size.is_none() || image.download_sha256.is_none())
            {
                return Err(field(
                    &at("download_size"),
                    "a compressed image must state download_size and download_sha256".into(),
                ));
            }
            if image.url.is_empty() {
                return Err(field(&at("url"), "empty".into()));
            }
            if let Some(w) = image.window_log {
                if !(10..=31).contains(&w) {
                    return Err(field(&at("window_log"), format!("{w} is outside 10..=31")));
                }
            }
            if !image.segments.is_empty() {
                if image.compression != Compression::Zstd {
                    return Err(field(
                        &at("segments"),
                        "segments need compression = \"zstd\"".into(),
                    ));
                }
                check_segments(&image.segments, image.size, image.download_size())
                    .map_err(|e| field(&at("segments"), e))?;
                if image.segments.iter().any(|s| s.source.is_some()) {
                    return Err(field(
                        &at("segments"),
                        "a full payload's segment has no source region".into(),
                    ));
                }
            }
            for (source, delta) in &image.deltas {
                let at = |f: &str| format!("images.{class}.deltas.{source}.{f}");
                if !is_hex_sha256(source) {
                    return Err(field(
                        &format!("images.{class}.deltas"),
                        format!("key {source:?} is not a SHA-256"),
                    ));
                }
                if !(10..=31).contains(&delta.window_log) {
                    return Err(field(
                        &at("window_log"),
                        format!("{} is outside 10..=31", delta.window_log),
                    ));
                }
                if delta.url.is_empty() || delta.source_size == 0 {
                    return Err(field(&at("url"), "empty url or source_size".into()));
                }
                if delta.source_size > MAX_BYTES || delta.download_size > MAX_BYTES {
                    return Err(field(
                        &at("download_size"),
                        "source_size or download_size is larger than any device (2^63-1 bytes)"
                            .into(),
                    ));
                }
                check_segments(&delta.segments, image.size, delta.download_size)
                    .map_err(|e| field(&at("segments"), e))?;
                check_sources(delta).map_err(|e| field(&at("segments"), e))?;
                if !image.segments.is_empty() {
                    check_same_targets(&image.segments, &delta.segments)
                        .map_err(|e| field(&at("segments"), e))?;
                }
            }
        }
        Ok(Manifest {
            version,
            created,
            expires,
            sha256: crate::install::hex(&sha2_digest(bytes)),
            doc,
        })
    }
}

/// The dotted path (`images.rootfs`, `images.rootfs.segments[2].sha256`) of
/// the first key that some object of the JSON document `bytes` names twice;
/// `Err` when `bytes` is not JSON. Keys are compared after unescaping, so
/// `"version"` and `"ver\u0073ion"` are the same key. Depth is bounded by
/// serde_json's recursion limit.
pub(crate) fn duplicate_key(bytes: &[u8]) -> Result<Option<String>, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    /// One JSON value at `path`; the first duplicate found goes to `found`.
    struct Walk<'a> {
        path: String,
        found: &'a RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            loop {
                let item = Walk {
                    path: format!("{}[{i}]", self.path),
                    found: self.found,
                };
                if seq.next_element_seed(item)?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = match self.path.is_empty() {
                    true => key.escape_debug().to_string(),
                    false => format!("{}.{}", self.path, key.escape_debug()),
                };
                if !keys.insert(key) {
                    self.found.borrow_mut().get_or_insert(path);
                    // Stop here: the document is refused anyway.
                    return Err(serde::de::Error::custom("duplicate key"));
                }
                map.next_value_seed(Walk {
                    path,
                    found: self.found,
                })?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walked = Walk {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (found.into_inner(), walked) {
        (Some(path), _) => Ok(Some(path)),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(None),
    }
}

pub(crate) fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// How far a manifest's `created` may be ahead of this host's clock. Signer
/// and host clocks differ a little; more than this is a wrong date (a typo,
/// a build machine's wrong clock) or a wrong host clock. Such a manifest is
/// not acted on and leaves no trace in the host's records of time, so one
/// wrong date cannot raise them: what one accepted date can do is bounded
/// by this much (see [`evaluate`]).
pub const MAX_CREATED_AHEAD: i64 = 24 * 3600;

/// Longest a signed document (a manifest, a channel) may be valid, in days
/// from its `created` to its `expires`. `expires` is all that bounds a
/// freeze attack (a server kept serving an old, still-signed document), so
/// hosts refuse a channel valid for longer ([`within_validity`]), read a
/// manifest valid for longer as expiring at this cap ([`capped_expires`]:
/// older `pack`s signed such), and `pack` and `channel` never sign one.
pub const MAX_EXPIRES_DAYS: u64 = 3650;

/// `expires`, or [`MAX_EXPIRES_DAYS`] after `created` when that comes
/// first: when a manifest valid for longer stops being acted on.
pub fn capped_expires(created: i64, expires: i64) -> i64 {
    expires.min(created.saturating_add((MAX_EXPIRES_DAYS as i64).saturating_mul(86_400)))
}

/// Whether a document dated `created` may be valid until `expires`: at
/// most [`MAX_EXPIRES_DAYS`] later (a year 9999 `expires` would make the
/// document valid forever).
pub fn within_validity(created: i64, expires: i64) -> bool {
    expires.saturating_sub(created) <= (MAX_EXPIRES_DAYS as i64).saturating_mul(86_400)
}

/// The host facts a manifest is judged against.
#[derive(Clone, Debug)]
pub struct HostFacts<'a> {
    /// This host's `update.compatible`.
    pub compatible: &'a str,
    /// What the manifest's `track` must be (from `update.track` and where
    /// the manifest came from).
    pub track: TrackRule<'a>,
    /// Version of the booted slot, when known.
    pub booted_version: Option<&'a Version>,
    /// Versions that failed their trial on this host (as recorded; compared
    /// as versions, so `3.0` covers `3.0.0`).
    pub failed_versions: &'a [String],
    /// Versions an operator cancelled here while staged, which this run
    /// does not take: the timer's (empty for an `install` by hand).
    pub cancelled_versions: &'a [String],
    /// Now, by the host clock.
    pub now: i64,
    /// The newest `created` this host has seen in a verified manifest: the
    /// clock is never believed to be earlier than that.
    pub newest_created_seen: Option<i64>,
    /// The floor kept for the manifest's source (see [`source_key`]),
    /// through whichever server: nothing older from there is acted on
    /// (TUF's timestamp rule), nor other bytes with the same `created`.
    pub floor: Option<&'a Floor>,
    /// The URL the manifest was actually fetched from (the mirror's, the
    /// last redirect's; redacted), for a refusal to name.
    pub fetched: &'a str,
    /// The image classes the slot to be written has partitions for.
    pub slot_classes: &'a [String],
    /// The largest zstd window this host decodes (`update.max_window_log`).
    pub max_window_log: u32,
    /// Accept a release that is not newer (a manual `--allow-downgrade`).
    pub allow_downgrade: bool,
}

impl HostFacts<'_> {
    /// The time as this host believes it: its clock, but never earlier than
    /// the newest `created` it has verified (a clock reset to the past must
    /// not revive an expired manifest).
    pub fn clock(&self) -> i64 {
        self.now.max(self.newest_created_seen.unwrap_or(i64::MIN))
    }
}

/// Whether this host may believe `m.created`: not more than
/// [`MAX_CREATED_AHEAD`] after its [`HostFacts::clock`]. Only a believed
/// `created` may raise the host's records of time; so the floor of the
/// clock is never more than a day ahead of the host's own clock at the time
/// it was raised, and a mistyped `2100` cannot freeze a host.
pub fn created_plausible(m: &Manifest, host: &HostFacts) -> bool {
    m.created <= host.clock().saturating_add(MAX_CREATED_AHEAD)
}

/// The source a manifest came from, as its records are kept: the location
/// without user info, query or fragment (credentials and CDN tokens change;
/// the channel does not). A mirror is transport: a manifest fetched through
/// it is keyed by the origin's location.
pub fn source_key(location: &str) -> String {
    let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
    let Some(scheme_len) = ["http://", "https://"]
        .iter()
        .find(|p| lower.starts_with(**p))
        .map(|p| p.len())
    else {
        return location.to_string();
    };
    let rest = &location[scheme_len..];
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!(
        "{}{}{path}",
        &lower[..scheme_len],
        host.to_ascii_lowercase()
    )
}

/// What a host keeps of one source (a manifest's or a channel's,
/// [`source_key`]): the newest `created` it verified from there and, when
/// known, the SHA-256 of the document it verified with that `created`
/// (unknown in a state written before it was kept, or when another
/// version of abupdate raised the date since).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floor {
    /// The newest `created` verified from the source.
    pub created: i64,
    /// The bytes verified with that `created`.
    pub bytes: FloorBytes,
    /// The release version of the manifest verified with that `created`
    /// (`None` for a channel, or when not recorded).
    pub version: Option<String>,
}

/// What a host knows of the bytes it verified at its floor's `created`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloorBytes {
    /// Not recorded (a state from before they were, or a date raised by an
    /// abupdate that kept none): the same date is taken as the same
    /// document, and its bytes are recorded.
    Unknown,
    /// The SHA-256 of the one document verified at that date.
    Known(String),
    /// Two documents with other bytes were verified at that date: which is
    /// the newer cannot be told, so neither is acted on until a newer
    /// `created` comes (failing closed: a halt or a pause signed with the
    /// same date as what it replaces is never undone by a replay).
    Conflicting,
}

/// How a signed document falls behind its source's [`Floor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behind {
    /// Its `created` is older: a stale cache or mirror, or a replay.
    Older,
    /// Its `created` is the floor's, its bytes another document's: a
    /// replay of a sibling signed with the same date (a hand edit re-signed
    /// without advancing `created`), which could undo a halt or a pause.
    SameCreatedOtherBytes,
}

impl Behind {
    /// What it means, for a refusal's message.
    pub fn describe(self) -> &'static str {
        match self {
            Behind::Older => "is older than one this host already verified from there",
            Behind::SameCreatedOtherBytes => {
                "is that of another document with other bytes this host already verified from there"
            }
        }
    }

    /// The likely cause, for a refusal's message.
    pub fn cause(self) -> &'static str {
        match self {
            Behind::Older => "a stale mirror or cache, or a replay",
            Behind::SameCreatedOtherBytes => {
                "a replay, or a re-sign that did not advance created; nothing from there is acted on until one with a newer created"
            }
        }
    }
}

/// Whether a verified document dated `created` with bytes hashing to
/// `sha256` (a manifest of release `version`; `None` for a channel) may be
/// acted on against its source's `floor`: no floor, a newer `created`, or
/// the same `created` with the same (or unrecorded) bytes; never at a date
/// where two documents of one release were seen. Two manifests of
/// different releases with one `created` (packed within one second, then
/// published in turn at one URL) are no replay of each other: at one date
/// the higher release is the newer. Pure.
pub fn against_floor(
    created: i64,
    sha256: &str,
    version: Option<&str>,
    floor: Option<&Floor>,
) -> Result<(), Behind> {
    let Some(floor) = floor else {
        return Ok(());
    };
    match created.cmp(&floor.created) {
        std::cmp::Ordering::Less => Err(Behind::Older),
        std::cmp::Ordering::Greater => Ok(()),
        std::cmp::Ordering::Equal => match &floor.bytes {
            FloorBytes::Unknown => Ok(()),
            FloorBytes::Known(known) if known == sha256 => Ok(()),
            FloorBytes::Known(_) => match release_order(version, floor.version.as_deref()) {
                Some(std::cmp::Ordering::Greater) => Ok(()),
                Some(std::cmp::Ordering::Less) => Err(Behind::Older),
                _ => Err(Behind::SameCreatedOtherBytes),
            },
            FloorBytes::Conflicting => Err(Behind::SameCreatedOtherBytes),
        },
    }
}

/// How release `a` compares with release `b`, when both are known and
/// dotted-number versions. Pure.
pub fn release_order(a: Option<&str>, b: Option<&str>) -> Option<std::cmp::Ordering> {
    let (a, b) = (Version::parse(a?).ok()?, Version::parse(b?).ok()?);
    Some(a.cmp(&b))
}

/// Why a verified manifest does not apply; each is a refusal with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotApplicable {
    /// The manifest is for other hardware.
    Incompatible {
        /// The manifest's `compatible`.
        manifest: String,
        /// This host's.
        host: String,
        /// The URL it was fetched from: a wrong URL is what to look at.
        url: String,
    },
    /// The manifest states another track than the host requires, or none.
    OtherTrack {
        /// The manifest's `track`.
        manifest: Option<String>,
        /// The one required.
        host: String,
        /// The URL it was fetched from.
        url: String,
    },
    /// Not newer than the booted release.
    NotNewer {
        /// The release offered.
        offered: String,
        /// The booted one.
        booted: String,
    },
    /// Past its `expires`.
    Expired {
        /// Its `expires`.
        expires: String,
        /// The host's clock.
        now: String,
    },
    /// A release that already failed here.
    PreviouslyFailed {
        /// The release.
        version: String,
    },
    /// A release an operator cancelled here while it was staged (the
    /// timer's runs only: an `install` by hand takes it).
    Cancelled {
        /// The release.
        version: String,
    },
    /// `created` is implausibly far ahead of the host's clock.
    CreatedAhead {
        /// The manifest's `created`.
        created: String,
        /// The host's clock.
        clock: String,
    },
    /// Behind a manifest already verified from the same source (older, or
    /// the same `created` with other bytes): a stale mirror or cache, or a
    /// replay (it could undo a pause or a withdrawal).
    Stale {
        /// The URL it was fetched from.
        url: String,
        /// The manifest's `created`.
        created: String,
        /// The newest seen from its source.
        newest: String,
        /// How it is behind.
        behind: Behind,
    },
    /// An image class the slot has no partition for.
    UnknownClass {
        /// The class.
        class: String,
        /// The classes the slot has.
        configured: Vec<String>,
    },
    /// A payload whose zstd window exceeds what this host decodes.
    WindowTooLarge {
        /// The class.
        class: String,
        /// The window its payload needs (log2).
        window_log: u32,
        /// `update.max_window_log`.
        max: u32,
    },
}

impl fmt::Display for NotApplicable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotApplicable::Incompatible {
                manifest,
                host,
                url,
            } => write!(
                f,
                "release manifest {url}: is for compatible {manifest:?}, this host is {host:?}"
            ),
            NotApplicable::OtherTrack {
                manifest,
                host,
                url,
            } => {
                let found = describe_track(manifest.as_deref());
                write!(f, "release manifest {url}: is for {found}, this host follows track \"{host}\" (update.track): ")?;
                match manifest {
                    Some(_) => f.write_str("another track's manifest is never installed here (a server or mirror serving another track's file, or a wrong URL)"),
                    None => write!(f, "a manifest this host reads from its configured source states its track (pack it with --track {host}; one of no track is taken by hand from another URL, or pinned by the channel)"),
                }
            }
            NotApplicable::NotNewer { offered, booted } => {
                write!(f, "release {offered} is not newer than the booted {booted} (use --allow-downgrade on a manual install)")
            }
            NotApplicable::Expired { expires, now } => {
                write!(f, "release manifest expired at {expires} (now {now})")
            }
            NotApplicable::PreviouslyFailed { version } => {
                write!(f, "release {version} already failed its trial on this host")
            }
            NotApplicable::Cancelled { version } => write!(
                f,
                "release {version} was cancelled by the operator on this host; `abupdate install` of it by hand installs it again"
            ),
            NotApplicable::CreatedAhead { created, clock } => write!(
                f,
                "release manifest created {created} is more than a day ahead of this host's clock ({clock}): the release's date or the host's clock is wrong"
            ),
            NotApplicable::Stale {
                url,
                created,
                newest,
                behind,
            } => write!(
                f,
                "release manifest {url}: created {created} {} (created {newest}): {}",
                behind.describe(),
                behind.cause()
            ),
            NotApplicable::UnknownClass { class, configured } => write!(
                f,
                "release image class {class:?} has no partition in the slot to write (configured: {})",
                configured.join(", ")
            ),
            NotApplicable::WindowTooLarge {
                class,
                window_log,
                max,
            } => write!(
                f,
                "release image {class:?} needs a zstd window of 2^{window_log} bytes, this host allows 2^{max} (update.max_window_log)"
            ),
        }
    }
}

impl NotApplicable {
    /// A short label for metrics and `--json`.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            NotApplicable::Incompatible { .. } => crate::error::Kind::Incompatible,
            NotApplicable::OtherTrack { .. } => crate::error::Kind::OtherTrack,
            NotApplicable::NotNewer { .. } => crate::error::Kind::NotNewer,
            NotApplicable::Expired { .. } => crate::error::Kind::Expired,
            NotApplicable::PreviouslyFailed { .. } => crate::error::Kind::PreviouslyFailed,
            // Never an error (only the timer's runs hold a cancelled
            // release, and for them it is "nothing to do"): the nearest kind.
            NotApplicable::Cancelled { .. } => crate::error::Kind::PreviouslyFailed,
            NotApplicable::CreatedAhead { .. } => crate::error::Kind::CreatedAhead,
            NotApplicable::Stale { .. } => crate::error::Kind::Stale,
            NotApplicable::UnknownClass { .. } => crate::error::Kind::UnknownClass,
            NotApplicable::WindowTooLarge { .. } => crate::error::Kind::WindowTooLarge,
        }
    }

    /// Whether this refusal is a fault that will not fix itself (a frozen or
    /// stale server, a wrong URL, a release this host can never install)
    /// rather than the ordinary "nothing to do": a fault fails the run, so
    /// the timer backs off and monitoring sees it.
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            NotApplicable::NotNewer { .. }
                | NotApplicable::PreviouslyFailed { .. }
                | NotApplicable::Cancelled { .. }
        )
    }
}

/// Decide whether a verified manifest applies to this host: every refusal
/// `install` makes that does not depend on a device's state, so `check`
/// never offers what `install` would refuse. In order: the hardware and the
/// track, the
/// time (a believable `created`, not older than the source's newest, not
/// expired), whether this host can install it at all, then whether it is
/// wanted (not failed here, newer than the booted release).
pub fn evaluate(m: &Manifest, host: &HostFacts) -> Result<(), NotApplicable> {
    use crate::timefmt::format_rfc3339;
    if let Err((found, want)) = check_track(m.doc.track.as_deref(), host.track) {
        return Err(NotApplicable::OtherTrack {
            manifest: found.map(str::to_string),
            host: want.to_string(),
            url: host.fetched.to_string(),
        });
    }
    if m.doc.compatible != host.compatible {
        return Err(NotApplicable::Incompatible {
            manifest: m.doc.compatible.clone(),
            host: host.compatible.to_string(),
            url: host.fetched.to_string(),
        });
    }
    let clock = host.clock();
    if !created_plausible(m, host) {
        return Err(NotApplicable::CreatedAhead {
            created: m.doc.created.clone(),
            clock: format_rfc3339(clock),
        });
    }
    if let Err(behind) = against_floor(
        m.created,
        &m.sha256,
        Some(m.doc.version.as_str()),
        host.floor,
    ) {
        return Err(NotApplicable::Stale {
            url: host.fetched.to_string(),
            created: m.doc.created.clone(),
            newest: host
                .floor
                .map(|f| format_rfc3339(f.created))
                .unwrap_or_default(),
            behind,
        });
    }
    if m.expires <= clock {
        // The date that applied: a manifest valid for longer than the cap
        // expired at the cap, not at the date it states.
        let stated = crate::timefmt::parse_rfc3339(&m.doc.expires).ok();
        let expires = match stated == Some(m.expires) {
            true => m.doc.expires.clone(),
            false => format!(
                "{} (3650 days after its created {}, the longest a manifest is valid; it states {})",
                format_rfc3339(m.expires),
                m.doc.created,
                m.doc.expires
            ),
        };
        return Err(NotApplicable::Expired {
            expires,
            now: format_rfc3339(clock),
        });
    }
    for (class, image) in &m.doc.images {
        if !host.slot_classes.contains(class) {
            return Err(NotApplicable::UnknownClass {
                class: class.clone(),
                configured: host.slot_classes.to_vec(),
            });
        }
        if let Some(w) = image.window_log.filter(|w| *w > host.max_window_log) {
            return Err(NotApplicable::WindowTooLarge {
                class: class.clone(),
                window_log: w,
                max: host.max_window_log,
            });
        }
    }
    let failed = host
        .failed_versions
        .iter()
        .any(|v| Version::parse(v).is_ok_and(|v| v == m.version) || v == m.version.as_str());
    if failed {
        return Err(NotApplicable::PreviouslyFailed {
            version: m.version.to_string(),
        });
    }
    let cancelled = host
        .cancelled_versions
        .iter()
        .any(|v| Version::parse(v).is_ok_and(|v| v == m.version) || v == m.version.as_str());
    if cancelled {
        return Err(NotApplicable::Cancelled {
            version: m.version.to_string(),
        });
    }
    if let Some(booted) = host.booted_version {
        if m.version <= *booted && !host.allow_downgrade {
            return Err(NotApplicable::NotNewer {
                offered: m.version.to_string(),
                booted: booted.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_its_images_not_its_signature_or_rollout() {
        let parsed = |text: &str| {
            let doc: ManifestDoc = serde_json::from_str(text).expect("manifest");
            doc.build()
        };
        let base = doc("2.0");
        let id = parsed(&base);
        assert_eq!(id.len(), BUILD_ID_LEN);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(parsed(&base), id, "not a function of the images");
        // Re-signed at a wave advance: created, expires and rollout moved.
        let resigned = base
            .replace("2026-11-20T10:00:00Z", "2026-11-21T10:00:00Z")
            .replace("2027-01-20T10:00:00Z", "2027-02-20T10:00:00Z")
            .replace(
                r#""extra":"ignored","#,
                r#""rollout":{"percent":50,"paused":true},"#,
            );
        assert_ne!(resigned, base);
        assert_eq!(
            parsed(&resigned),
            id,
            "a re-signed manifest is another build"
        );
        // The version is not the build: the images are.
        assert_eq!(parsed(&doc("2.0.1")), id);
        // Any byte of an image (its hash), its size, its class: another build.
        let other_hash = base.replace(&"ab".repeat(32), &format!("ac{}", "ab".repeat(31)));
        let other_size = base.replace(r#""size":4096"#, r#""size":4097"#);
        let other_class = base.replace(r#""rootfs":{"#, r#""rootfs2":{"#);
        let ids = [&other_hash, &other_size, &other_class].map(|t| parsed(t));
        for other in &ids {
            assert_ne!(*other, id);
        }
        // The same images listed in another order: one build.
        assert_eq!(
            build_id([("a", "x", 1), ("b", "y", 2)]),
            build_id([("b", "y", 2), ("a", "x", 1)])
        );
    }

    fn doc(version: &str) -> String {
        format!(
            r#"{{"format":1,"compatible":"acme","version":"{version}","created":"2026-11-20T10:00:00Z",
            "expires":"2027-01-20T10:00:00Z","extra":"ignored",
            "images":{{"rootfs":{{"url":"rootfs.img","size":4096,"sha256":"{h}"}}}}}}"#,
            h = "ab".repeat(32)
        )
    }

    fn host<'a>(booted: Option<&'a Version>, failed: &'a [String], now: i64) -> HostFacts<'a> {
        HostFacts {
            compatible: "acme",
            track: TrackRule::Any,
            booted_version: booted,
            failed_versions: failed,
            cancelled_versions: &[],
            now,
            newest_created_seen: None,
            floor: None,
            fetched: "https://u.example/r.json",
            slot_classes: Box::leak(Box::new(["rootfs".to_string()])),
            max_window_log: 27,
            allow_downgrade: false,
        }
    }

    fn segment(offset: u64, length: u64, digest: &str) -> Segment {
        Segment {
            offset,
            length,
            sha256: digest.repeat(32),
            blake3: Some(digest.repeat(32)),
            patch_offset: offset,
            patch_length: 10,
            patch_blake3: None,
            source: None,
        }
    }

    #[test]
    fn a_delta_must_rebuild_the_full_payloads_segments_and_the_first_difference_is_named() {
        let full = vec![segment(0, 100, "aa"), segment(100, 50, "bb")];
        // Same targets, other frames: the delta's own patch ranges differ.
        let mut same = full.clone();
        same[1].patch_offset = 3;
        assert_eq!(check_same_targets(&full, &same), Ok(()));
        let e = check_same_targets(&full, &full[..1]).expect_err("count");
        assert_eq!(e, "1 segments, the full payload has 2");
        let mut other = full.clone();
        other[1].sha256 = "cc".repeat(32);
        let e = check_same_targets(&full, &other).expect_err("sha256");
        assert!(e.starts_with("segment 1 sha256 is cccc"), "{e}");
        assert!(
            e.ends_with(&format!("the full payload's is {}", "bb".repeat(32))),
            "{e}"
        );
        let mut other = full.clone();
        other[0].blake3 = None;
        let e = check_same_targets(&full, &other).expect_err("blake3");
        assert!(e.starts_with("segment 0 blake3 is absent"), "{e}");
        let other = vec![segment(0, 60, "aa"), segment(60, 90, "bb")];
        let e = check_same_targets(&full, &other).expect_err("length");
        assert_eq!(e, "segment 0 length is 60, the full payload's is 100");
    }

    #[test]
    fn an_empty_segment_is_called_empty_and_a_misplaced_one_misplaced() {
        let segs = vec![
            segment(0, 100, "aa"),
            segment(100, 0, "bb"),
            segment(100, 50, "cc"),
        ];
        let e = check_segments(&segs, 150, 1000).expect_err("empty");
        assert_eq!(e, "segment 1 (at 100) is empty");
        let segs = vec![segment(0, 100, "aa"), segment(90, 60, "bb")];
        let e = check_segments(&segs, 150, 1000).expect_err("misplaced");
        assert_eq!(
            e,
            "segment 1 starts at 90 (expected 100: segments tile the image in order)"
        );
    }

    #[test]
    fn versions_compare_numerically() {
        let v = |s| Version::parse(s).expect(s);
        assert!(v("2026.11.10") > v("2026.11.9"));
        assert!(v("2") > v("1.99"));
        assert_eq!(v("1.2").cmp(&v("1.2.0")), Ordering::Equal);
        for bad in ["", "1..2", "v1", "1.2-rc1", "1.", "99999999999999999999"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_and_ignores_unknown_fields() {
        let m = Manifest::parse(doc("1.2").as_bytes()).expect("parse");
        assert_eq!(m.version.as_str(), "1.2");
        assert_eq!(m.doc.images["rootfs"].download_size(), 4096);
        assert_eq!(m.sha256.len(), 64);
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let text = doc("1.2").replace(r#""version":"1.2","#, "");
        let e = Manifest::parse(text.as_bytes()).expect_err("missing version");
        assert!(e.to_string().contains("version"), "{e}");
        let e = Manifest::parse(doc("1.x").as_bytes()).expect_err("bad version");
        assert!(e.to_string().contains("version"), "{e}");
        let text = doc("1").replace(&"ab".repeat(32), "xyz");
        let e = Manifest::parse(text.as_bytes()).expect_err("bad hash");
        assert!(e.to_string().contains("images.rootfs.sha256"), "{e}");
        let text = doc("1").replace(
            r#""url":"rootfs.img","#,
            r#""url":"rootfs.img","compression":"zstd","#,
        );
        let e = Manifest::parse(text.as_bytes()).expect_err("zstd without download size");
        assert!(e.to_string().contains("download_size"), "{e}");
    }

    #[test]
    fn a_key_named_twice_in_any_object_is_refused_naming_it() {
        let h = "ab".repeat(32);
        let base = doc("1.2");
        assert!(Manifest::parse(base.as_bytes()).is_ok());
        let second_rootfs = format!(
            r#""images":{{"rootfs":{{"url":"rootfs.img","size":4096,"sha256":"{h}"}},"rootfs":{{"url":"evil.img","size":4096,"sha256":"{h}"}}}}"#
        );
        let cases = [
            (
                base.replacen(
                    &format!(
                        r#""images":{{"rootfs":{{"url":"rootfs.img","size":4096,"sha256":"{h}"}}}}"#
                    ),
                    &second_rootfs,
                    1,
                ),
                "release manifest: images.rootfs: appears twice",
            ),
            (
                base.replacen(
                    r#""version":"1.2","#,
                    r#""version":"1.2","version":"9","#,
                    1,
                ),
                "release manifest: version: appears twice",
            ),
            (
                // The same key, escaped: one key to JSON.
                base.replacen(
                    r#""version":"1.2","#,
                    r#""version":"1.2","ver\u0073ion":"9","#,
                    1,
                ),
                "release manifest: version: appears twice",
            ),
            (
                base.replacen(r#""size":4096,"#, r#""size":4096,"size":8192,"#, 1),
                "release manifest: images.rootfs.size: appears twice",
            ),
            (
                // Unknown fields are ignored, but not read twice either.
                base.replacen(r#""extra":"ignored","#, r#""extra":"a","extra":"b","#, 1),
                "release manifest: extra: appears twice",
            ),
            (
                base.replacen(
                    r#""extra":"ignored","#,
                    r#""rollout":{"paused":true,"paused":false},"#,
                    1,
                ),
                "release manifest: rollout.paused: appears twice",
            ),
            (
                base.replacen(
                    r#""extra":"ignored","#,
                    r#""extra":[{"a":1},{"a":1,"a":2}],"#,
                    1,
                ),
                "release manifest: extra[1].a: appears twice",
            ),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(text.as_bytes()).expect_err(want);
            assert!(e.to_string().starts_with(want), "{e} / {want}");
        }
        // The same key in different objects is no duplicate.
        let nested = base.replacen(
            r#""extra":"ignored","#,
            r#""extra":{"version":"x","images":{"version":1}},"#,
            1,
        );
        assert!(Manifest::parse(nested.as_bytes()).is_ok());
        // Not JSON at all is still a parse error.
        let e = Manifest::parse(b"{\"format\":1,").expect_err("truncated");
        assert!(matches!(e, ManifestError::Parse(_)), "{e}");
    }

    #[test]
    fn a_manifest_valid_longer_than_3650_days_expires_3650_days_after_created() {
        // 3650 days after 2026-11-20T10:00:00Z (three leap days between).
        let at = |expires: &str| doc("1.2").replace("2027-01-20T10:00:00Z", expires);
        let m = Manifest::parse(at("2036-11-17T10:00:00Z").as_bytes()).expect("3650 days");
        assert_eq!(m.expires - m.created, 3650 * 86_400);
        // Longer (older `pack`s signed `--expires-days 4000`; year 9999
        // would be valid for ever): loads, expiring at the cap, so a
        // frozen copy stops being acted on when a 3650-day one would.
        for longer in [
            "2036-11-17T10:00:01Z",
            "2037-12-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let m = Manifest::parse(at(longer).as_bytes()).expect(longer);
            assert_eq!(m.expires - m.created, 3650 * 86_400, "{longer}");
        }
        assert_eq!(capped_expires(10, 20), 20);
        assert_eq!(capped_expires(i64::MAX - 5, i64::MAX), i64::MAX);
    }

    #[test]
    fn created_must_be_before_expires() {
        let text = doc("1.2").replace("2027-01-20T10:00:00Z", "2026-11-20T10:00:00Z");
        let e = Manifest::parse(text.as_bytes()).expect_err("expires = created");
        assert_eq!(
            e.to_string(),
            "release manifest: expires: 2026-11-20T10:00:00Z is not after created 2026-11-20T10:00:00Z"
        );
        let text = doc("1.2").replace("2026-11-20T10:00:00Z", "2100-01-01T00:00:00Z");
        let e = Manifest::parse(text.as_bytes()).expect_err("created after expires");
        assert!(
            e.to_string()
                .contains("expires: 2027-01-20T10:00:00Z is not after created 2100"),
            "{e}"
        );
    }

    #[test]
    fn image_sizes_no_install_can_meet_are_refused() {
        let cases = [
            (r#""size":4096,"#, r#""size":0,"#, "images.rootfs.size: 0"),
            (
                r#""size":4096,"#,
                r#""size":18446744073709551615,"#,
                "images.rootfs.size: 18446744073709551615 is larger than any device",
            ),
            (
                r#""size":4096,"#,
                r#""size":4096,"download_size":4095,"#,
                "images.rootfs.download_size: an uncompressed payload is the image",
            ),
            (
                r#""size":4096,"#,
                r#""size":4096,"download_sha256":"00000000000000000000000000000000000000000000000000000000000000ff","#,
                "images.rootfs.download_size: an uncompressed payload is the image",
            ),
            (
                r#""url":"rootfs.img","#,
                r#""url":"rootfs.img","compression":"zstd","download_size":0,"download_sha256":"00000000000000000000000000000000000000000000000000000000000000ff","#,
                "images.rootfs.download_size: 0",
            ),
        ];
        for (from, to, want) in cases {
            let text = doc("1.2").replacen(from, to, 1);
            let e = Manifest::parse(text.as_bytes()).expect_err(want);
            assert!(e.to_string().contains(want), "{e} / {want}");
        }
        let wide = delta_doc(r#","source":{"offset":1048576,"length":7340032}"#).replace(
            r#""source_size":8388608"#,
            r#""source_size":9223372036854775808"#,
        );
        let e = Manifest::parse(wide.as_bytes()).expect_err("huge source");
        assert!(e.to_string().contains("larger than any device"), "{e}");
    }

    #[test]
    fn versions_equal_as_numbers_are_equal() {
        let v = |s| Version::parse(s).expect(s);
        assert_eq!(v("3.0"), v("3.0.0"));
        assert_eq!(v("3"), v("3.0.0.0"));
        assert_eq!(v("03.1"), v("3.1"));
        assert_ne!(v("3.0"), v("3.0.1"));
        // The text is kept for display.
        assert_eq!(v("3.0.0").to_string(), "3.0.0");
    }

    #[test]
    fn a_failed_release_covers_every_spelling_of_its_version() {
        let m = Manifest::parse(doc("3.0.0").as_bytes()).expect("parse");
        let now = parse_rfc3339("2026-11-24T00:00:00Z").expect("time");
        let booted = Version::parse("2.0").expect("v");
        for recorded in ["3.0", "3", "3.0.0", "3.00.0"] {
            let failed = vec![recorded.to_string()];
            assert_eq!(
                evaluate(&m, &host(Some(&booted), &failed, now)).map_err(|e| e.kind().as_str()),
                Err("previously_failed"),
                "{recorded}"
            );
        }
        for other in ["3.0.1", "30", "not a version"] {
            let failed = vec![other.to_string()];
            assert_eq!(
                evaluate(&m, &host(Some(&booted), &failed, now)),
                Ok(()),
                "{other}"
            );
        }
    }

    /// Found from outside (stop 47): a manifest created in 1970 and
    /// stating an `expires` still ahead was refused as "expired at
    /// <that date> (now <before it>)": the date the cap set was not named.
    #[test]
    fn an_expiry_set_by_the_cap_is_named_with_the_date_the_manifest_states() {
        let text = doc("3.0")
            .replace("2026-11-20T10:00:00Z", "1970-01-01T00:00:00Z")
            .replace("2027-01-20T10:00:00Z", "2027-03-06T12:00:00Z");
        let m = Manifest::parse(text.as_bytes()).expect("parse");
        let now = parse_rfc3339("2026-12-06T00:00:00Z").expect("time");
        let booted = Version::parse("2.0").expect("v");
        let e = evaluate(&m, &host(Some(&booted), &[], now)).expect_err("expired");
        assert_eq!(
            e.to_string(),
            "release manifest expired at 1979-12-30T00:00:00Z (3650 days after its created \
             1970-01-01T00:00:00Z, the longest a manifest is valid; it states \
             2027-03-06T12:00:00Z) (now 2026-12-06T00:00:00Z)"
        );
        // An expiry as stated is named as stated.
        let late = parse_rfc3339("2027-02-01T00:00:00Z").expect("time");
        let m = Manifest::parse(doc("3.0").as_bytes()).expect("parse");
        let e = evaluate(&m, &host(Some(&booted), &[], late)).expect_err("expired");
        assert_eq!(
            e.to_string(),
            "release manifest expired at 2027-01-20T10:00:00Z (now 2027-02-01T00:00:00Z)"
        );
    }

    #[test]
    fn a_cancelled_release_is_not_taken_by_the_timer_and_a_failure_outranks_it() {
        let m = Manifest::parse(doc("3.0.0").as_bytes()).expect("parse");
        let now = parse_rfc3339("2026-11-24T00:00:00Z").expect("time");
        let booted = Version::parse("2.0").expect("v");
        let cancelled = vec!["3.0".to_string()];
        let mut h = host(Some(&booted), &[], now);
        h.cancelled_versions = &cancelled;
        assert_eq!(
            evaluate(&m, &h),
            Err(NotApplicable::Cancelled {
                version: "3.0.0".into()
            })
        );
        let failed = vec!["3".to_string()];
        h.failed_versions = &failed;
        assert_eq!(
            evaluate(&m, &h).map_err(|e| e.kind().as_str()),
            Err("previously_failed")
        );
        // A newer release is not held by the cancel of an older one.
        let newer = Manifest::parse(doc("3.0.1").as_bytes()).expect("parse");
        let mut h = host(Some(&booted), &[], now);
        h.cancelled_versions = &cancelled;
        assert_eq!(evaluate(&newer, &h), Ok(()));
    }

    #[test]
    fn a_created_far_ahead_of_the_clock_is_not_believed() {
        let m = Manifest::parse(doc("2").as_bytes()).expect("parse");
        let created = m.created;
        // The host's clock 23 hours behind the signer's: tolerated.
        let h = host(None, &[], created - 23 * 3600);
        assert!(created_plausible(&m, &h));
        assert_eq!(evaluate(&m, &h), Ok(()));
        // Two days behind (or the release dated two days ahead): refused,
        // and not believed, so it cannot raise the host's records.
        let h = host(None, &[], created - 2 * 86_400);
        assert!(!created_plausible(&m, &h));
        let e = evaluate(&m, &h).expect_err("ahead");
        assert_eq!(e.kind(), "created_ahead");
        assert_eq!(
            e.to_string(),
            "release manifest created 2026-11-20T10:00:00Z is more than a day ahead of this host's clock (2026-11-18T10:00:00Z): the release's date or the host's clock is wrong"
        );
        // A host whose clock was reset (RTC lost) judges by the newest
        // `created` it already believed, not by the reset clock.
        let mut h = host(None, &[], 0);
        h.newest_created_seen = Some(created - 3600);
        assert!(created_plausible(&m, &h));
        assert_eq!(evaluate(&m, &h), Ok(()));
        // No overflow at the ends of time.
        let mut h = host(None, &[], i64::MAX);
        assert!(created_plausible(&m, &h));
        h.now = i64::MIN;
        assert!(!created_plausible(&m, &h));
    }

    #[test]
    fn a_manifest_with_its_sources_created_and_other_bytes_is_a_replay() {
        let m = Manifest::parse(doc("2").as_bytes()).expect("parse");
        let mut h = host(None, &[], m.created + 3600);
        let sibling = Floor {
            created: m.created,
            bytes: FloorBytes::Known("cd".repeat(32)),
            version: Some(m.doc.version.clone()),
        };
        h.floor = Some(&sibling);
        let e = evaluate(&m, &h).expect_err("same created, other bytes");
        assert_eq!(e.kind(), "stale");
        assert_eq!(e.to_string(), "release manifest https://u.example/r.json: created 2026-11-20T10:00:00Z is that of another document with other bytes this host already verified from there (created 2026-11-20T10:00:00Z): a replay, or a re-sign that did not advance created; nothing from there is acted on until one with a newer created");
        // A floor kept before digests were (or by an older abupdate): the
        // bytes are unknown, the same date is taken as the same manifest.
        let unknown = Floor {
            created: m.created,
            bytes: FloorBytes::Unknown,
            version: None,
        };
        h.floor = Some(&unknown);
        assert_eq!(evaluate(&m, &h), Ok(()));
    }

    #[test]
    fn the_floor_takes_newer_dates_and_the_same_bytes_and_refuses_the_rest() {
        let f = |created, bytes| Floor {
            created,
            bytes,
            version: None,
        };
        let known = |h: &str| FloorBytes::Known(h.into());
        assert_eq!(against_floor(10, "a", None, None), Ok(()));
        assert_eq!(
            against_floor(11, "b", None, Some(&f(10, known("a")))),
            Ok(())
        );
        assert_eq!(
            against_floor(11, "b", None, Some(&f(10, FloorBytes::Conflicting))),
            Ok(())
        );
        assert_eq!(
            against_floor(10, "a", None, Some(&f(10, known("a")))),
            Ok(())
        );
        assert_eq!(
            against_floor(10, "b", None, Some(&f(10, FloorBytes::Unknown))),
            Ok(())
        );
        assert_eq!(
            against_floor(10, "b", None, Some(&f(10, known("a")))),
            Err(Behind::SameCreatedOtherBytes)
        );
        // Once two documents were seen at one date, neither is taken.
        assert_eq!(
            against_floor(10, "a", None, Some(&f(10, FloorBytes::Conflicting))),
            Err(Behind::SameCreatedOtherBytes)
        );
        assert_eq!(
            against_floor(9, "a", None, Some(&f(10, known("a")))),
            Err(Behind::Older)
        );
    }

    #[test]
    fn manifests_of_two_releases_with_one_created_are_ordered_by_release_not_a_replay() {
        let at = |bytes: &str, version: Option<&str>| Floor {
            created: 10,
            bytes: FloorBytes::Known(bytes.into()),
            version: version.map(str::to_string),
        };
        // 3.0 packed in the second 2.0 was: the higher release is newer.
        assert_eq!(
            against_floor(10, "b", Some("3.0"), Some(&at("a", Some("2.0")))),
            Ok(())
        );
        assert_eq!(
            against_floor(10, "a", Some("2.0"), Some(&at("b", Some("3.0")))),
            Err(Behind::Older)
        );
        // One release, other bytes at one date: a replay of a pause.
        assert_eq!(
            against_floor(10, "b", Some("2.0"), Some(&at("a", Some("2.0")))),
            Err(Behind::SameCreatedOtherBytes)
        );
        // The recorded release unknown (a channel, an older state): strict.
        assert_eq!(
            against_floor(10, "b", Some("3.0"), Some(&at("a", None))),
            Err(Behind::SameCreatedOtherBytes)
        );
    }

    #[test]
    fn a_manifest_older_than_the_sources_newest_is_stale() {
        let m = Manifest::parse(doc("2").as_bytes()).expect("parse");
        let now = m.created + 3600;
        let mut h = host(None, &[], now);
        let same = Floor {
            created: m.created,
            bytes: FloorBytes::Known(m.sha256.clone()),
            version: Some(m.doc.version.clone()),
        };
        h.floor = Some(&same);
        assert_eq!(evaluate(&m, &h), Ok(()), "the same manifest again");
        let newer = Floor {
            created: m.created + 1,
            bytes: FloorBytes::Unknown,
            version: None,
        };
        h.floor = Some(&newer);
        let e = evaluate(&m, &h).expect_err("older");
        assert_eq!(e.kind(), "stale");
        assert_eq!(e.to_string(), "release manifest https://u.example/r.json: created 2026-11-20T10:00:00Z is older than one this host already verified from there (created 2026-11-20T10:00:01Z): a stale mirror or cache, or a replay");
        // Staleness is judged on `created` only: a newer version does not
        // make an old manifest fresh (it may be the unpaused copy).
        let m3 = Manifest::parse(doc("3").as_bytes()).expect("parse");
        assert_eq!(
            evaluate(&m3, &h).map_err(|e| e.kind().as_str()),
            Err("stale")
        );
    }

    #[test]
    fn a_release_this_host_cannot_install_is_refused_by_the_judgement() {
        let now = parse_rfc3339("2026-11-24T00:00:00Z").expect("time");
        let other_class = doc("2").replacen(r#""rootfs":{"#, r#""firmware":{"#, 1);
        let m = Manifest::parse(other_class.as_bytes()).expect("parse");
        let e = evaluate(&m, &host(None, &[], now)).expect_err("class");
        assert_eq!(
            e.to_string(),
            "release image class \"firmware\" has no partition in the slot to write (configured: rootfs)"
        );
        let wide = |w: u32| {
            let text = doc("2").replacen(
                r#""size":4096,"#,
                &format!(r#""size":4096,"window_log":{w},"#),
                1,
            );
            Manifest::parse(text.as_bytes()).expect("parse")
        };
        assert_eq!(evaluate(&wide(27), &host(None, &[], now)), Ok(()));
        let e = evaluate(&wide(28), &host(None, &[], now)).expect_err("window");
        assert_eq!(e.kind(), "window_too_large");
        assert!(
            e.to_string()
                .contains("2^28 bytes, this host allows 2^27 (update.max_window_log)"),
            "{e}"
        );
    }

    #[test]
    fn a_track_name_is_1_to_64_of_letters_digits_and_dot_underscore_dash() {
        for ok in ["stable", "edge-beta.2", "A_b", &"t".repeat(64)] {
            assert_eq!(check_track_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "st able",
            "beta/1",
            "béta",
            "x\u{202e}",
            &"t".repeat(65),
        ] {
            let e = check_track_name(bad).expect_err(bad);
            assert!(
                e.ends_with(": a track is 1 to 64 of A-Z a-z 0-9 . _ -"),
                "{e}"
            );
        }
        let text = doc("2.0").replace(r#""version""#, r#""track":"be ta","version""#);
        let e = Manifest::parse(text.as_bytes()).expect_err("malformed track");
        assert!(
            e.to_string()
                .starts_with("release manifest: track: \"be ta\": "),
            "{e}"
        );
    }

    #[test]
    fn a_manifest_for_other_hardware_is_refused_naming_where_it_was_fetched() {
        let m = Manifest::parse(doc("2.0").as_bytes()).expect("parse");
        let facts = HostFacts {
            compatible: "other-board",
            ..host(None, &[], 1_796_000_000)
        };
        let e = evaluate(&m, &facts).expect_err("other hardware");
        assert_eq!(e.kind(), "incompatible");
        assert_eq!(
            e.to_string(),
            "release manifest https://u.example/r.json: is for compatible \"acme\", this host is \"other-board\""
        );
    }

    #[test]
    fn a_manifest_of_another_track_or_none_is_refused_where_one_is_required() {
        let tracked = |t: &str| {
            let text = doc("2.0").replace(r#""version""#, &format!(r#""track":"{t}","version""#));
            Manifest::parse(text.as_bytes()).expect("parse")
        };
        let untracked = Manifest::parse(doc("2.0").as_bytes()).expect("parse");
        let failed: [String; 0] = [];
        let facts = |track| HostFacts {
            track,
            ..host(None, &failed, 1_796_000_000)
        };
        let refusal = |found: Option<&str>| NotApplicable::OtherTrack {
            manifest: found.map(str::to_string),
            host: "stable".into(),
            url: "https://u.example/r.json".into(),
        };
        let exactly = facts(TrackRule::Exactly("stable"));
        let not_other = facts(TrackRule::NotOther("stable"));
        // Exactly: only the same track applies.
        assert_eq!(evaluate(&tracked("stable"), &exactly), Ok(()));
        for (m, found) in [
            (tracked("beta"), Some("beta")),
            (tracked("Stable"), Some("Stable")),
            (untracked.clone(), None),
        ] {
            let e = evaluate(&m, &exactly).expect_err("another track");
            assert_eq!(e, refusal(found));
            assert_eq!(e.kind(), "other_track");
            assert!(e.is_fault());
        }
        // Not another: the same track or none.
        assert_eq!(evaluate(&tracked("stable"), &not_other), Ok(()));
        assert_eq!(evaluate(&untracked, &not_other), Ok(()));
        let e = evaluate(&tracked("beta"), &not_other).expect_err("another track");
        assert_eq!(e, refusal(Some("beta")));
        // Any: any track, or none, as before tracks.
        assert_eq!(evaluate(&tracked("beta"), &facts(TrackRule::Any)), Ok(()));
        assert_eq!(evaluate(&untracked, &facts(TrackRule::Any)), Ok(()));
        // The track is judged before the hardware: another track's manifest
        // for other hardware is another track's first.
        let other_board = HostFacts {
            compatible: "other-board",
            ..facts(TrackRule::Exactly("stable"))
        };
        let e = evaluate(&tracked("beta"), &other_board).expect_err("both");
        assert_eq!(e, refusal(Some("beta")));
        assert_eq!(
            evaluate(&untracked, &exactly).expect_err("none").to_string(),
            "release manifest https://u.example/r.json: is for no track, this host follows track \"stable\" (update.track): a manifest this host reads from its configured source states its track (pack it with --track stable; one of no track is taken by hand from another URL, or pinned by the channel)"
        );
        assert_eq!(
            e.to_string(),
            "release manifest https://u.example/r.json: is for track \"beta\", this host follows track \"stable\" (update.track): another track's manifest is never installed here (a server or mirror serving another track's file, or a wrong URL)"
        );
    }

    #[test]
    fn only_a_document_of_the_hosts_track_is_on_it() {
        assert!(on_track(Some("stable"), Some("stable")));
        assert!(!on_track(Some("beta"), Some("stable")));
        assert!(!on_track(None, Some("stable")));
        assert!(on_track(None, None));
        assert!(on_track(Some("beta"), None));
    }

    #[test]
    fn faults_are_the_refusals_that_do_not_fix_themselves() {
        let s = String::new;
        let table = [
            (
                NotApplicable::OtherTrack {
                    manifest: None,
                    host: s(),
                    url: s(),
                },
                true,
            ),
            (
                NotApplicable::Incompatible {
                    manifest: s(),
                    host: s(),
                    url: s(),
                },
                true,
            ),
            (
                NotApplicable::Expired {
                    expires: s(),
                    now: s(),
                },
                true,
            ),
            (
                NotApplicable::CreatedAhead {
                    created: s(),
                    clock: s(),
                },
                true,
            ),
            (
                NotApplicable::Stale {
                    url: s(),
                    created: s(),
                    newest: s(),
                    behind: Behind::Older,
                },
                true,
            ),
            (
                NotApplicable::UnknownClass {
                    class: s(),
                    configured: vec![],
                },
                true,
            ),
            (
                NotApplicable::WindowTooLarge {
                    class: s(),
                    window_log: 31,
                    max: 27,
                },
                true,
            ),
            (
                NotApplicable::NotNewer {
                    offered: s(),
                    booted: s(),
                },
                false,
            ),
            (NotApplicable::PreviouslyFailed { version: s() }, false),
            (NotApplicable::Cancelled { version: s() }, false),
        ];
        for (na, fault) in table {
            assert_eq!(na.is_fault(), fault, "{}", na.kind());
        }
    }

    #[test]
    fn a_source_is_its_location_without_credentials_query_or_fragment() {
        for (location, key) in [
            (
                "https://u:p@Updates.Example.NET/edge/release.json?token=abc#x",
                "https://updates.example.net/edge/release.json",
            ),
            (
                "HTTP://host:8080/r/release.json",
                "http://host:8080/r/release.json",
            ),
            ("http://host", "http://host"),
            ("/media/usb/release.json", "/media/usb/release.json"),
            (
                "file:///media/usb/release.json",
                "file:///media/usb/release.json",
            ),
            ("é", "é"),
        ] {
            assert_eq!(source_key(location), key, "{location}");
        }
    }

    /// A 1 MiB image with one delta from an 8 MiB source in a 2^23 window,
    /// its one segment referencing `source` (JSON, or nothing).
    fn delta_doc(source: &str) -> String {
        let h = "ab".repeat(32);
        format!(
            r#"{{"format":1,"compatible":"acme","version":"2","created":"2026-11-20T10:00:00Z",
            "expires":"2027-01-20T10:00:00Z","images":{{"rootfs":{{"url":"r.zst","size":1048576,
            "sha256":"{h}","compression":"zstd","download_size":100,"download_sha256":"{h}",
            "deltas":{{"{h}":{{"url":"d.zst","source_size":8388608,"window_log":23,"download_size":10,
            "segments":[{{"offset":0,"length":1048576,"sha256":"{h}","patch_offset":0,
            "patch_length":10{source}}}]}}}}}}}}}}"#
        )
    }

    #[test]
    fn a_delta_segment_references_source_inside_the_source_and_its_window() {
        // The whole 8 MiB source plus the 1 MiB segment is 9 MiB > 2^23.
        let e = Manifest::parse(delta_doc("").as_bytes()).expect_err("too wide");
        assert!(e.to_string().contains("exceed the 2^23 window"), "{e}");
        let ok = delta_doc(r#","source":{"offset":1048576,"length":7340032}"#);
        let m = Manifest::parse(ok.as_bytes()).expect("a region that fits");
        let delta = m.doc.images["rootfs"]
            .deltas
            .values()
            .next()
            .expect("delta");
        assert_eq!(
            delta.source_of(&delta.segments[0]),
            SourceRegion {
                offset: 1 << 20,
                length: 7 << 20
            }
        );
        let outside = delta_doc(r#","source":{"offset":2097152,"length":7340032}"#);
        let e = Manifest::parse(outside.as_bytes()).expect_err("past the source");
        assert!(
            e.to_string().contains("outside the 8388608-byte source"),
            "{e}"
        );
        let wrap = delta_doc(r#","source":{"offset":18446744073709551615,"length":2}"#);
        assert!(Manifest::parse(wrap.as_bytes()).is_err());
        let empty = delta_doc(r#","source":{"offset":0,"length":0}"#);
        assert!(Manifest::parse(empty.as_bytes()).is_err());
    }

    #[test]
    fn evaluate_refuses_with_reasons() {
        let m = Manifest::parse(doc("2026.11.3").as_bytes()).expect("parse");
        let now = parse_rfc3339("2026-11-24T00:00:00Z").expect("time");
        let older = Version::parse("2026.11.2").expect("v");
        let same = Version::parse("2026.11.3").expect("v");
        assert_eq!(evaluate(&m, &host(Some(&older), &[], now)), Ok(()));
        assert_eq!(evaluate(&m, &host(None, &[], now)), Ok(()));
        assert_eq!(
            evaluate(&m, &host(Some(&same), &[], now)).map_err(|e| e.kind().as_str()),
            Err("not_newer")
        );
        let mut h = host(Some(&same), &[], now);
        h.allow_downgrade = true;
        assert_eq!(evaluate(&m, &h), Ok(()));
        let failed = vec!["2026.11.3".to_string()];
        assert_eq!(
            evaluate(&m, &host(Some(&older), &failed, now)).map_err(|e| e.kind().as_str()),
            Err("previously_failed")
        );
        let late = parse_rfc3339("2027-02-01T00:00:00Z").expect("time");
        assert_eq!(
            evaluate(&m, &host(Some(&older), &[], late)).map_err(|e| e.kind().as_str()),
            Err("expired")
        );
        // A clock wound back to 2020 does not revive a manifest once a newer
        // `created` has been seen.
        let mut h = host(
            Some(&older),
            &[],
            parse_rfc3339("2020-01-01T00:00:00Z").expect("t"),
        );
        h.newest_created_seen = Some(late);
        assert_eq!(
            evaluate(&m, &h).map_err(|e| e.kind().as_str()),
            Err("expired")
        );
        let mut h = host(Some(&older), &[], now);
        h.compatible = "other";
        assert_eq!(
            evaluate(&m, &h).map_err(|e| e.kind().as_str()),
            Err("incompatible")
        );
    }
}
