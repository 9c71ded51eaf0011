//! The release manifest (`release.json`): its schema and the pure decisions
//! made on it.
//!
//! Invariant: a [`Manifest`] only exists for bytes that parsed completely and
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

#[derive(Debug)]
pub enum ManifestError {
    Parse(String),
    Field { field: String, reason: String },
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

impl Version {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

/// One payload as the manifest describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    pub url: String,
    /// Bytes of the image once decoded: what lands in the slot.
    pub size: u64,
    pub sha256: String,
    #[serde(default = "no_compression")]
    pub compression: Compression,
    /// Bytes on the wire; equal to `size` when uncompressed.
    #[serde(default)]
    pub download_size: Option<u64>,
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
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
    pub patch_offset: u64,
    pub patch_length: u64,
    /// Delta segments only: the part of the source image the frame
    /// references (absent: the whole source). Set when the source and a
    /// segment do not fit one zstd window, e.g. in deltas for 32-bit hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRegion>,
}

/// Bytes `[offset, offset + length)` of a delta's source image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRegion {
    pub offset: u64,
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
    pub url: String,
    /// Bytes of the source image (a prefix of the booted slot).
    pub source_size: u64,
    /// zstd window log of the frames: 2^window_log covers each segment plus
    /// the source it references. A host applies only a delta whose window
    /// its zstd allows (30 on 32-bit hosts, 31 otherwise).
    pub window_log: u32,
    pub download_size: u64,
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

/// Check that `segments` tile `[0, size)` in order and stay inside a
/// payload of `payload_size` bytes.
fn check_segments(segments: &[Segment], size: u64, payload_size: u64) -> Result<(), String> {
    let mut next = 0u64;
    for (i, seg) in segments.iter().enumerate() {
        if seg.offset != next || seg.length == 0 {
            return Err(format!(
                "segment {i} starts at {} (expected {next}) or is empty",
                seg.offset
            ));
        }
        if !is_hex_sha256(&seg.sha256) {
            return Err(format!("segment {i} sha256 is not 64 lowercase hex digits"));
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

impl Image {
    pub fn download_size(&self) -> u64 {
        self.download_size.unwrap_or(self.size)
    }

    pub fn download_sha256(&self) -> &str {
        self.download_sha256.as_deref().unwrap_or(&self.sha256)
    }
}

/// The staged-rollout block; interpreted by the rollout logic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default)]
    pub paused: bool,
}

/// The manifest as written in `release.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestDoc {
    pub format: u32,
    pub compatible: String,
    pub version: String,
    pub created: String,
    pub expires: String,
    pub images: BTreeMap<String, Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A parsed and checked manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub doc: ManifestDoc,
    pub version: Version,
    pub created: i64,
    pub expires: i64,
    /// SHA-256 of the exact signed bytes, hex: names this release in the state.
    pub sha256: String,
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Manifest {
    /// Parse signed bytes. Unknown fields are ignored; a missing or malformed
    /// required field is an error naming it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let doc: ManifestDoc =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        let field = |field: &str, reason: String| ManifestError::Field {
            field: field.to_string(),
            reason,
        };
        if doc.format != FORMAT {
            return Err(field(
                "format",
                format!(
                    "{} is not supported (this abupdate reads format {FORMAT})",
                    doc.format
                ),
            ));
        }
        let version = Version::parse(&doc.version).map_err(|e| field("version", e))?;
        let created = parse_rfc3339(&doc.created).map_err(|e| field("created", e))?;
        let expires = parse_rfc3339(&doc.expires).map_err(|e| field("expires", e))?;
        if doc.images.is_empty() {
            return Err(field("images", "lists no image".into()));
        }
        for (class, image) in &doc.images {
            let at = |f: &str| format!("images.{class}.{f}");
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
                check_segments(&delta.segments, image.size, delta.download_size)
                    .map_err(|e| field(&at("segments"), e))?;
                check_sources(delta).map_err(|e| field(&at("segments"), e))?;
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

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The host facts a manifest is judged against.
#[derive(Clone, Debug)]
pub struct HostFacts<'a> {
    pub compatible: &'a str,
    /// Version of the booted slot, when known.
    pub booted_version: Option<&'a Version>,
    /// Versions that failed their trial on this host.
    pub failed_versions: &'a [String],
    /// Now, by the host clock.
    pub now: i64,
    /// The newest `created` this host has seen in a verified manifest: the
    /// clock is never believed to be earlier than that.
    pub newest_created_seen: Option<i64>,
    pub allow_downgrade: bool,
}

/// Why a verified manifest does not apply; each is a refusal with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotApplicable {
    Incompatible { manifest: String, host: String },
    NotNewer { offered: String, booted: String },
    Expired { expires: String, now: String },
    PreviouslyFailed { version: String },
}

impl fmt::Display for NotApplicable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotApplicable::Incompatible { manifest, host } => {
                write!(
                    f,
                    "release is for compatible {manifest:?}, this host is {host:?}"
                )
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
        }
    }
}

impl NotApplicable {
    /// A short label for metrics and `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotApplicable::Incompatible { .. } => "incompatible",
            NotApplicable::NotNewer { .. } => "not_newer",
            NotApplicable::Expired { .. } => "expired",
            NotApplicable::PreviouslyFailed { .. } => "previously_failed",
        }
    }
}

/// Decide whether a verified manifest applies to this host.
pub fn evaluate(m: &Manifest, host: &HostFacts) -> Result<(), NotApplicable> {
    use crate::timefmt::format_rfc3339;
    if m.doc.compatible != host.compatible {
        return Err(NotApplicable::Incompatible {
            manifest: m.doc.compatible.clone(),
            host: host.compatible.to_string(),
        });
    }
    // A clock reset to the past must not revive an expired manifest.
    let now = host.now.max(host.newest_created_seen.unwrap_or(i64::MIN));
    if m.expires <= now {
        return Err(NotApplicable::Expired {
            expires: m.doc.expires.clone(),
            now: format_rfc3339(now),
        });
    }
    if host.failed_versions.iter().any(|v| v == m.version.as_str()) {
        return Err(NotApplicable::PreviouslyFailed {
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
            booted_version: booted,
            failed_versions: failed,
            now,
            newest_created_seen: None,
            allow_downgrade: false,
        }
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
            evaluate(&m, &host(Some(&same), &[], now)).map_err(|e| e.kind()),
            Err("not_newer")
        );
        let mut h = host(Some(&same), &[], now);
        h.allow_downgrade = true;
        assert_eq!(evaluate(&m, &h), Ok(()));
        let failed = vec!["2026.11.3".to_string()];
        assert_eq!(
            evaluate(&m, &host(Some(&older), &failed, now)).map_err(|e| e.kind()),
            Err("previously_failed")
        );
        let late = parse_rfc3339("2027-02-01T00:00:00Z").expect("time");
        assert_eq!(
            evaluate(&m, &host(Some(&older), &[], late)).map_err(|e| e.kind()),
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
        assert_eq!(evaluate(&m, &h).map_err(|e| e.kind()), Err("expired"));
        let mut h = host(Some(&older), &[], now);
        h.compatible = "other";
        assert_eq!(evaluate(&m, &h).map_err(|e| e.kind()), Err("incompatible"));
    }
}
