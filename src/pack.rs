//! Release building: images in; compressed payloads, hashes, a manifest
//! and its minisign signature out.
//!
//! Invariant: the manifest states exactly the bytes that were written next
//! to it (sizes and SHA-256 of both the image and the payload), computed
//! from the same single pass that wrote them, and it is published last, in
//! the order [`crate::publish`] keeps (payloads, then signatures and the
//! manifest by rename), so a host never sees a manifest whose payloads are
//! not complete. Every option is checked ([`check_options`]) before the
//! first byte is written.
//!
//! Without the `pack` feature (a host build) the compressor is left out of
//! the binary.
#![cfg_attr(not(feature = "pack"), allow(dead_code, unused_imports))]

use crate::install::hex;
use crate::manifest::{
    Compression, Delta, Image, ManifestDoc, Rollout, Segment, SourceRegion, Version, FORMAT,
};
use crate::publish::{ReleaseDir, Staged};
use crate::timefmt::{format_rfc3339, now};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// What `pack` builds, from its command line.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// One signature per key: `release.json.minisig`, then
    /// `release.json.1.minisig`, … (m-of-n signing).
    pub secret_keys: Vec<PathBuf>,
    /// The hosts it is for.
    pub compatible: String,
    /// The release track it is published for (`--track`): signed into the
    /// manifest, required by hosts that follow a track.
    pub track: Option<String>,
    /// The release.
    pub version: String,
    /// Class → image file.
    pub images: Vec<(String, PathBuf)>,
    /// The release directory.
    pub out: PathBuf,
    /// `created` (default: now, after the manifest it replaces).
    pub created: Option<i64>,
    /// `expires` (default: `created` + `expires_days`).
    pub expires: Option<i64>,
    /// Days until it expires, when `expires` is not given.
    pub expires_days: u64,
    /// zstd level; `None` ships the images uncompressed.
    pub level: Option<i32>,
    /// zstd window log; above 23 enables long-distance matching (`--long`).
    pub window_log: Option<u32>,
    /// The staged rollout.
    pub rollout: Option<Rollout>,
    /// Cut images into independent zstd frames of this many bytes (default
    /// [`DEFAULT_SEGMENT`]): hosts decode them on every core at once, and
    /// deltas need them.
    pub segment_size: Option<u64>,
    /// One zstd frame for the whole image (with `window_log`), as releases
    /// were before segments: smaller for images with long-range repeats,
    /// but decoded on one core, with the whole window in memory.
    pub one_frame: bool,
    /// Old images (class, path) to write delta payloads against.
    pub delta_from: Vec<(String, PathBuf)>,
    /// zstd level of delta frames.
    pub delta_level: i32,
    /// Largest zstd window log a delta may need (30 for 32-bit hosts).
    pub delta_window_log: u32,
}

/// Default segment size. A host decodes a segment in one piece into a
/// buffer of its size, one per core: 4 MiB keeps two workers, their frames
/// and read-back buffers well inside the 32 MiB an install may use, and
/// costs 1.6% more bytes than 16 MiB segments on the bench image (measured
/// in bench/README.md).
pub const DEFAULT_SEGMENT: u64 = 4 << 20;
/// Largest window log a delta may use on 64-bit hosts (zstd's limit).
pub const MAX_DELTA_WINDOW_LOG: u32 = 31;
/// Source regions start on this boundary, so a host maps them from a page
/// boundary whatever its page size.
const REGION_ALIGN: u64 = 64 << 10;

/// The source region a delta segment at `[offset, offset + len)` references
/// in a window of `2^window_log` bytes: `None` (the whole source) when the
/// source and a `seg`-byte segment fit; otherwise the largest region that
/// fits, centred on the segment's own offset — an update rewrites a file
/// mostly near where its old version lay.
pub fn source_region(
    source_size: u64,
    offset: u64,
    len: u64,
    seg: u64,
    window_log: u32,
) -> Option<SourceRegion> {
    let window = 1u64 << window_log;
    if source_size + seg <= window {
        return None;
    }
    let length = window - seg;
    let centre = offset + len / 2;
    let start =
        centre.saturating_sub(length / 2).min(source_size - length) / REGION_ALIGN * REGION_ALIGN;
    Some(SourceRegion {
        offset: start,
        length,
    })
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Output<'a, W: Write> {
    Raw(&'a mut W),
    Zstd(zstd::stream::write::Encoder<'static, &'a mut W>),
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn publish_err(e: crate::publish::PublishError) -> String {
    e.to_string()
}

fn pack_image(
    class: &str,
    input: &Path,
    opts: &PackOptions,
    dir: &ReleaseDir,
) -> Result<Image, String> {
    let name = match opts.level {
        Some(_) => format!("{class}-{}.img.zst", opts.version),
        None => format!("{class}-{}.img", opts.version),
    };
    let mut reader = File::open(input).map_err(|e| err(input, e))?;
    let mut staged = dir.stage(&name).map_err(publish_err)?;
    let out_path = staged.path().to_path_buf();
    let mut image_hasher = Sha256::new();
    let mut size = 0u64;
    let (download_size, download_sha) = {
        let mut sink = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, &mut staged),
            hasher: Sha256::new(),
            count: 0,
        };
        let mut buf = vec![0u8; 4 << 20];
        {
            let mut out = match opts.level {
                Some(level) => {
                    let mut e = zstd::stream::write::Encoder::new(&mut sink, level)
                        .map_err(|e| err(&out_path, e))?;
                    let threads = std::thread::available_parallelism()
                        .map(|n| n.get() as u32)
                        .unwrap_or(1);
                    e.multithread(threads).map_err(|e| err(&out_path, e))?;
                    e.include_checksum(true).map_err(|e| err(&out_path, e))?;
                    if let Some(w) = opts.window_log {
                        e.window_log(w).map_err(|e| err(&out_path, e))?;
                        if w > 23 {
                            e.long_distance_matching(true)
                                .map_err(|e| err(&out_path, e))?;
                        }
                    }
                    Output::Zstd(e)
                }
                None => Output::Raw(&mut sink),
            };
            loop {
                let n = reader.read(&mut buf).map_err(|e| err(input, e))?;
                if n == 0 {
                    break;
                }
                image_hasher.update(&buf[..n]);
                size += n as u64;
                match &mut out {
                    Output::Zstd(e) => e.write_all(&buf[..n]),
                    Output::Raw(w) => w.write_all(&buf[..n]),
                }
                .map_err(|e| err(&out_path, e))?;
            }
            if let Output::Zstd(e) = out {
                e.finish().map_err(|e| err(&out_path, e))?;
            }
        }
        sink.flush().map_err(|e| err(&out_path, e))?;
        (sink.count, hex(&sink.hasher.finalize()))
    };
    // Checked before too; the file may have shrunk since.
    if size == 0 {
        return Err(format!("{}: an empty image", input.display()));
    }
    dir.commit_payload(staged).map_err(publish_err)?;
    let image_sha = hex(&image_hasher.finalize());
    Ok(match opts.level {
        Some(_) => Image {
            url: name,
            size,
            sha256: image_sha,
            compression: Compression::Zstd,
            download_size: Some(download_size),
            download_sha256: Some(download_sha),
            window_log: opts.window_log,
            segments: Vec::new(),
            deltas: BTreeMap::new(),
        },
        None => Image {
            url: name,
            size,
            sha256: image_sha,
            compression: Compression::None,
            download_size: None,
            download_sha256: None,
            window_log: None,
            segments: Vec::new(),
            deltas: BTreeMap::new(),
        },
    })
}

/// Compress `count` segments on all cores; `one(i)` compresses segment `i`.
fn compress_parallel<T: Send>(
    count: usize,
    one: &(dyn Fn(usize) -> io::Result<T> + Sync),
) -> io::Result<Vec<T>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<io::Result<T>>>> = Mutex::new((0..count).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(count.max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                let r = one(i);
                if let Ok(mut o) = out.lock() {
                    o[i] = Some(r);
                }
            });
        }
    });
    let results = out
        .into_inner()
        .map_err(|_| io::Error::other("compression thread panicked"))?;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("segment not compressed"))))
        .collect()
}

/// One zstd frame for `data`, content size pledged; with `prefix`, the whole
/// prefix is the reference the frame's matches may point into.
fn frame(
    data: &[u8],
    level: i32,
    prefix: Option<&[u8]>,
    window_log: Option<u32>,
) -> io::Result<Vec<u8>> {
    let sink = Vec::with_capacity(data.len() / 4 + 64);
    let mut e = match prefix {
        Some(p) => zstd::stream::write::Encoder::with_ref_prefix(sink, level, p)?,
        None => zstd::stream::write::Encoder::new(sink, level)?,
    };
    e.include_contentsize(true)?;
    e.include_checksum(false)?;
    e.set_pledged_src_size(Some(data.len() as u64))?;
    if let Some(w) = window_log {
        e.window_log(w)?;
        // Long-distance matching finds what the reference prefix shares
        // with the segment; a segment alone is within any window it has.
        e.long_distance_matching(prefix.is_some())?;
    }
    e.write_all(data)?;
    e.finish()
}

/// The signed digests of a segment's bytes.
#[derive(Clone, Debug)]
struct SegmentHashes {
    sha256: String,
    blake3: String,
}

fn segment_hashes(data: &[u8]) -> SegmentHashes {
    SegmentHashes {
        sha256: hex(&Sha256::digest(data)),
        blake3: blake3::hash(data).to_hex().to_string(),
    }
}

/// Write `frames` back to back into payload `name`; returns the segment
/// table (`hashes`: the digests of each segment's image bytes).
fn write_frames(
    dir: &ReleaseDir,
    name: &str,
    data_len: u64,
    seg: u64,
    frames: &[Vec<u8>],
    hashes: &[SegmentHashes],
    source_of: &dyn Fn(usize) -> Option<SourceRegion>,
) -> Result<(Vec<Segment>, u64, String), String> {
    let mut staged: Staged = dir.stage(name).map_err(publish_err)?;
    let path = staged.path().to_path_buf();
    let mut out = BufWriter::new(&mut staged);
    let mut hasher = Sha256::new();
    let mut segments = Vec::with_capacity(frames.len());
    let mut patch_offset = 0u64;
    for (i, (f, h)) in frames.iter().zip(hashes).enumerate() {
        let offset = i as u64 * seg;
        segments.push(Segment {
            offset,
            length: seg.min(data_len - offset),
            sha256: h.sha256.clone(),
            blake3: Some(h.blake3.clone()),
            patch_offset,
            patch_length: f.len() as u64,
            patch_blake3: Some(blake3::hash(f).to_hex().to_string()),
            source: source_of(i),
        });
        out.write_all(f).map_err(|e| err(&path, e))?;
        hasher.update(f);
        patch_offset += f.len() as u64;
    }
    out.flush().map_err(|e| err(&path, e))?;
    drop(out);
    dir.commit_payload(staged).map_err(publish_err)?;
    Ok((segments, patch_offset, hex(&hasher.finalize())))
}

/// The full payload of an image as independent segments, read and
/// compressed a few segments at a time on all cores (memory bounded by a
/// batch, whatever the image size). Returns the image and the segments'
/// digests.
fn pack_full_segments(
    class: &str,
    input: &Path,
    opts: &PackOptions,
    dir: &ReleaseDir,
    seg: u64,
) -> Result<(Image, Vec<SegmentHashes>), String> {
    let name = format!("{class}-{}.img.zst", opts.version);
    let level = opts.level.unwrap_or(19);
    let mut reader = File::open(input).map_err(|e| err(input, e))?;
    let mut staged: Staged = dir.stage(&name).map_err(publish_err)?;
    let path = staged.path().to_path_buf();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch = threads * 2;
    let mut out = BufWriter::with_capacity(1 << 20, &mut staged);
    let (mut image_hasher, mut payload_hasher) = (Sha256::new(), Sha256::new());
    let (mut segments, mut hashes) = (Vec::new(), Vec::new());
    let (mut size, mut patch_offset) = (0u64, 0u64);
    loop {
        let mut pieces = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut piece = vec![0u8; seg as usize];
            let n = crate::install::fill(&mut reader, &mut piece).map_err(|e| err(input, e))?;
            if n == 0 {
                break;
            }
            piece.truncate(n);
            pieces.push(piece);
        }
        if pieces.is_empty() {
            break;
        }
        let done = compress_parallel(pieces.len(), &|i| {
            let frame = frame(&pieces[i], level, None, opts.window_log)?;
            let frame_blake3 = blake3::hash(&frame).to_hex().to_string();
            Ok((frame, segment_hashes(&pieces[i]), frame_blake3))
        })
        .map_err(|e| err(input, e))?;
        for (piece, (frame, h, frame_blake3)) in pieces.iter().zip(done) {
            image_hasher.update(piece);
            payload_hasher.update(&frame);
            out.write_all(&frame).map_err(|e| err(&path, e))?;
            segments.push(Segment {
                offset: size,
                length: piece.len() as u64,
                sha256: h.sha256.clone(),
                blake3: Some(h.blake3.clone()),
                patch_offset,
                patch_length: frame.len() as u64,
                patch_blake3: Some(frame_blake3),
                source: None,
            });
            hashes.push(h);
            size += piece.len() as u64;
            patch_offset += frame.len() as u64;
        }
    }
    if size == 0 {
        return Err(format!("{}: an empty image", input.display()));
    }
    out.flush().map_err(|e| err(&path, e))?;
    drop(out);
    dir.commit_payload(staged).map_err(publish_err)?;
    let image = Image {
        url: name,
        size,
        sha256: hex(&image_hasher.finalize()),
        compression: Compression::Zstd,
        download_size: Some(patch_offset),
        download_sha256: Some(hex(&payload_hasher.finalize())),
        window_log: None,
        segments,
        deltas: BTreeMap::new(),
    };
    Ok((image, hashes))
}

/// Pack an image as independent segments, plus one delta payload per old
/// image given for its class.
fn pack_segmented(
    class: &str,
    input: &Path,
    opts: &PackOptions,
    dir: &ReleaseDir,
) -> Result<Image, String> {
    let seg = opts.segment_size.unwrap_or(DEFAULT_SEGMENT);
    let (mut image, hashes) = pack_full_segments(class, input, opts, dir, seg)?;
    let sources: Vec<&PathBuf> = opts
        .delta_from
        .iter()
        .filter(|(c, _)| c == class)
        .map(|(_, p)| p)
        .collect();
    if sources.is_empty() {
        return Ok(image);
    }
    // A delta frame references the whole old image: both in memory.
    let data = std::fs::read(input).map_err(|e| err(input, e))?;
    let size = data.len() as u64;
    if size != image.size || hex(&Sha256::digest(&data)) != image.sha256 {
        return Err(format!("{}: changed while it was packed", input.display()));
    }
    let count = size.div_ceil(seg) as usize;
    let slice = |i: usize| {
        let start = i as u64 * seg;
        &data[start as usize..(start + seg).min(size) as usize]
    };
    for old_path in sources {
        let old = std::fs::read(old_path).map_err(|e| err(old_path, e))?;
        if old.is_empty() {
            return Err(format!("{}: an empty delta source", old_path.display()));
        }
        let source_sha = hex(&Sha256::digest(&old));
        let source_size = old.len() as u64;
        let region = |i: usize| {
            let offset = i as u64 * seg;
            source_region(
                source_size,
                offset,
                seg.min(size - offset),
                seg,
                opts.delta_window_log,
            )
        };
        // The window must reach from the end of a segment back to the start
        // of the source it references.
        let span = if region(0).is_some() {
            1u64 << opts.delta_window_log
        } else {
            source_size + seg
        };
        let window_log = (64 - (span - 1).leading_zeros()).clamp(10, opts.delta_window_log);
        let frames = compress_parallel(count, &|i| {
            let prefix = match region(i) {
                Some(r) => &old[r.offset as usize..(r.offset + r.length) as usize],
                None => &old[..],
            };
            frame(slice(i), opts.delta_level, Some(prefix), Some(window_log))
        })
        .map_err(|e| err(old_path, e))?;
        let delta_name = format!("{class}-{}.from-{}.zst", opts.version, &source_sha[..12]);
        let (segments, download_size, _) =
            write_frames(dir, &delta_name, size, seg, &frames, &hashes, &region)?;
        image.deltas.insert(
            source_sha,
            Delta {
                url: delta_name,
                source_size,
                window_log,
                download_size,
                segments,
            },
        );
    }
    Ok(image)
}

/// Whether images are packed as segments: the default for compressed
/// payloads, unless `--one-frame`.
pub fn segmented(opts: &PackOptions) -> bool {
    opts.level.is_some() && !opts.one_frame
}

/// Longest validity `--expires-days` (or `--expires`) may give: the hosts'
/// own limit, so `pack` never signs a manifest every host refuses.
pub use crate::manifest::MAX_EXPIRES_DAYS;
/// Largest segment: half of the largest delta window.
pub const MAX_SEGMENT: u64 = 1 << 30;

/// Whether `class` may name an image: it becomes part of file names in the
/// release directory and a key of `[slots.X]` on hosts, so a strict set:
/// an ASCII letter or digit, then letters, digits, `_` or `-`, at most 64.
pub fn valid_class(class: &str) -> bool {
    let b = class.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

fn check_percent(flag: &str, p: Option<f64>) -> Result<(), String> {
    match p {
        Some(p) if !p.is_finite() || !(0.0..=100.0).contains(&p) => {
            Err(format!("{flag} {p}: a percentage from 0 to 100"))
        }
        _ => Ok(()),
    }
}

/// Every check on the options that needs no file: run before anything is
/// read or written, so a typo never leaves half a release behind.
// Long on purpose: one check per option, in the order of `--help`, each
// naming its flag; a table would hide the ranges.
pub fn check_options(opts: &PackOptions) -> Result<(), String> {
    if opts.secret_keys.is_empty() || opts.secret_keys.len() > crate::publish::MAX_SIGNATURES {
        return Err(format!(
            "pack: give 1 to {} --secret keys",
            crate::publish::MAX_SIGNATURES
        ));
    }
    if opts.compatible.is_empty() || opts.compatible.chars().any(char::is_control) {
        return Err(format!(
            "--compatible {:?}: must be non-empty text",
            opts.compatible
        ));
    }
    crate::manifest::Version::parse(&opts.version).map_err(|e| format!("--version: {e}"))?;
    if opts.images.is_empty() {
        return Err("pack: give at least one --image CLASS=PATH".into());
    }
    for (flag, list) in [
        ("--image", &opts.images),
        ("--delta-from", &opts.delta_from),
    ] {
        for (class, _) in list {
            if !valid_class(class) {
                return Err(format!(
                    "{flag} {class:?}=…: a class is 1 to 64 ASCII letters, digits, '_' or '-', \
                     starting with a letter or digit"
                ));
            }
        }
    }
    for (i, (class, _)) in opts.images.iter().enumerate() {
        if opts.images[..i].iter().any(|(c, _)| c == class) {
            return Err(format!("--image {class}=…: class given twice"));
        }
    }
    for (class, _) in &opts.delta_from {
        if !opts.images.iter().any(|(c, _)| c == class) {
            return Err(format!(
                "--delta-from {class}=…: no --image {class}=… to make a delta for"
            ));
        }
    }
    if let Some(l) = opts.level {
        if !(1..=22).contains(&l) {
            return Err(format!("--level {l}: outside zstd's 1..=22"));
        }
    }
    if !(1..=22).contains(&opts.delta_level) {
        return Err(format!(
            "--delta-level {}: outside 1..=22",
            opts.delta_level
        ));
    }
    if let Some(w) = opts.window_log {
        if !(10..=31).contains(&w) {
            return Err(format!("--window-log {w}: outside 10..=31"));
        }
    }
    if !(10..=MAX_DELTA_WINDOW_LOG).contains(&opts.delta_window_log) {
        return Err(format!(
            "--delta-window-log {}: outside 10..={MAX_DELTA_WINDOW_LOG}",
            opts.delta_window_log
        ));
    }
    let explicit_segments = opts.segment_size.is_some() || !opts.delta_from.is_empty();
    if explicit_segments && opts.level.is_none() {
        return Err("segments and deltas need compression (drop --no-compress)".into());
    }
    if explicit_segments && opts.one_frame {
        return Err("--one-frame makes one zstd frame: no --segment-size or --delta-from".into());
    }
    if opts.one_frame && opts.level.is_none() {
        return Err("--one-frame is a zstd frame: drop --no-compress".into());
    }
    if let Some(s) = opts.segment_size {
        if !(1 << 20..=MAX_SEGMENT).contains(&s) || s % (1 << 20) != 0 {
            return Err(format!(
                "--segment-size: {s} bytes; give 1 to {} MiB",
                MAX_SEGMENT >> 20
            ));
        }
    }
    let seg = opts.segment_size.unwrap_or(DEFAULT_SEGMENT);
    if let Some(w) = opts.window_log.filter(|_| segmented(opts)) {
        if 1u64 << w > seg.next_power_of_two() {
            return Err(format!(
                "--window-log {w}: a {} MiB segment needs no window above 2^{}; \
                 give --one-frame for one long-window frame",
                seg >> 20,
                seg.next_power_of_two().trailing_zeros()
            ));
        }
    }
    if !opts.delta_from.is_empty() && seg > 1u64 << (opts.delta_window_log - 1) {
        return Err(format!(
            "--segment-size {} MiB: a delta segment may fill at most half of its 2^{} window",
            seg >> 20,
            opts.delta_window_log
        ));
    }
    if opts.expires.is_none() && !(1..=MAX_EXPIRES_DAYS).contains(&opts.expires_days) {
        return Err(format!(
            "--expires-days {}: give 1 to {MAX_EXPIRES_DAYS}",
            opts.expires_days
        ));
    }
    if let (Some(c), Some(e)) = (opts.created, opts.expires) {
        if e <= c {
            return Err(format!(
                "--expires {} is not after --created {}",
                format_rfc3339(e),
                format_rfc3339(c)
            ));
        }
    }
    if let Some(r) = &opts.rollout {
        check_percent("--percent", r.percent)?;
        check_percent("--start-percentage", r.start_percentage)?;
        check_ramp(r)?;
    }
    // The dates as given, against this clock, before `--out` is made: an
    // `--expires` in the past or beyond the hosts' limit is a bad option
    // (exit 2, nothing written), as one before `--created` is. The
    // release.json `--out` may already hold is judged after it is read.
    release_dates(opts, None, crate::timefmt::now()).map(|_| ())
}

/// A time ramp is whole or absent: hosts read a ramp without a start as
/// its start percentage for ever, and one without a duration as 100% from
/// its start ([`crate::rollout::percentage`]): a forgotten flag must not
/// release to the whole fleet at once. Nor does it mix with a fixed
/// percentage or waves, which hosts would follow instead.
fn check_ramp(r: &Rollout) -> Result<(), String> {
    let ramp = r.start.is_some() || r.duration_minutes.is_some() || r.start_percentage.is_some();
    if !ramp {
        return Ok(());
    }
    if r.start.is_none() || r.duration_minutes.is_none() {
        return Err(
            "a time ramp needs both --rollout-start and --duration-minutes (and --start-percentage, default 0): without a start it never grows, without a duration it covers the whole fleet at its start"
                .into(),
        );
    }
    if r.percent.is_some() || r.waves.is_some() {
        return Err(
            "--percent or --waves and a time ramp (--rollout-start, --duration-minutes) are two rollouts: give one"
                .into(),
        );
    }
    Ok(())
}

/// Every check on the input files, before anything is written: each image
/// (and delta source) a readable, non-empty regular file.
pub fn check_inputs(opts: &PackOptions) -> Result<(), String> {
    for (flag, list) in [
        ("--image", &opts.images),
        ("--delta-from", &opts.delta_from),
    ] {
        for (class, path) in list {
            let meta = std::fs::metadata(path).map_err(|e| err(path, e))?;
            if !meta.is_file() {
                return Err(format!(
                    "{flag} {class}={}: not a regular file",
                    path.display()
                ));
            }
            if meta.len() == 0 {
                return Err(format!("{flag} {class}={}: an empty image", path.display()));
            }
        }
    }
    Ok(())
}

/// `created` and `expires` of a new manifest. `previous`: the `created` of
/// the manifest it replaces in the directory; the new one must be later,
/// or hosts that saw the old one refuse it as a replay.
pub fn release_dates(
    opts: &PackOptions,
    previous: Option<i64>,
    now: i64,
) -> Result<(i64, i64), String> {
    let created = match opts.created {
        Some(c) => {
            if let Some(p) = previous.filter(|&p| c <= p) {
                return Err(format!(
                    "--created {} is not after the created {} of the release.json it replaces \
                     (hosts that saw that one would refuse this one)",
                    format_rfc3339(c),
                    format_rfc3339(p)
                ));
            }
            c
        }
        None => crate::publish::next_second(previous, now),
    };
    let expires = match opts.expires {
        Some(e) => e,
        None => created.saturating_add(opts.expires_days.min(MAX_EXPIRES_DAYS) as i64 * 86400),
    };
    if expires <= created {
        return Err(format!(
            "--expires {} is not after the manifest's created {}",
            format_rfc3339(expires),
            format_rfc3339(created)
        ));
    }
    if !crate::manifest::within_validity(created, expires) {
        return Err(format!(
            "--expires {} is more than {MAX_EXPIRES_DAYS} days after the manifest's created {}: hosts would refuse the release",
            format_rfc3339(expires),
            format_rfc3339(created)
        ));
    }
    // Hosts refuse a manifest dated more than a day ahead of their clock
    // (`manifest::MAX_CREATED_AHEAD`): a mistyped year, or a stray
    // release.json in --out dated in the future, would make every later
    // release of this directory one no host installs.
    let latest = now.saturating_add(crate::manifest::MAX_CREATED_AHEAD);
    if created > latest {
        return Err(match (opts.created, previous) {
            (Some(c), _) => format!(
                "--created {} is more than a day ahead of this clock ({}): hosts would refuse the release",
                format_rfc3339(c),
                format_rfc3339(now)
            ),
            (None, p) => format!(
                "the release.json it replaces is dated {}, more than a day ahead of this clock ({}): a release dated after it would be refused by every host; move that file away or check this clock",
                p.map(format_rfc3339).unwrap_or_default(),
                format_rfc3339(now)
            ),
        });
    }
    Ok((created, expires))
}

/// `created` of the manifest already in the directory, if it has a readable
/// one. Unverified: it only ever makes the new `created` later.
fn previous_created(body: Option<&[u8]>) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body?).ok()?;
    crate::timefmt::parse_rfc3339(v.get("created")?.as_str()?).ok()
}

/// The manifest already in the directory is of another `compatible` than
/// the one packed: replacing it would take that product's release away
/// from its hosts (they refuse this one), so it is refused, as `fleet --out`
/// refuses. Unverified, as [`previous_created`]: it only ever refuses.
fn other_product(
    path: &Path,
    body: Option<&[u8]>,
    compatible: &str,
    track: Option<&str>,
) -> Result<(), String> {
    let Some(doc) = body.and_then(|b| serde_json::from_slice::<ManifestDoc>(b).ok()) else {
        return Ok(());
    };
    if doc.compatible == compatible {
        return other_track(path, &doc, track);
    }
    Err(format!(
        "{}: holds release {} of {}, not of {compatible}: pack would replace it (use another \
         --out, or remove it first)",
        path.display(),
        crate::text::show(doc.version.as_bytes()),
        crate::text::show(doc.compatible.as_bytes())
    ))
}

/// The manifest already in the directory states a track the one packed
/// would not: its hosts (they follow that track) would refuse the new one
/// as another track's, so it is refused. A manifest without a track may
/// get one (a channel's releases moving to tracks).
fn other_track(path: &Path, doc: &ManifestDoc, track: Option<&str>) -> Result<(), String> {
    match doc.track.as_deref() {
        Some(held) if Some(held) != track => Err(format!(
            "{}: holds release {} of track {held:?}, and this pack gives {}: its hosts follow \
             that track and would refuse it (give --track {held}, or use another --out)",
            path.display(),
            crate::text::show(doc.version.as_bytes()),
            crate::manifest::describe_track(track)
        )),
        _ => Ok(()),
    }
}

/// The version (as written there) and build of the manifest already in
/// the directory, when it is `version` as hosts compare versions (`2.0` is
/// `2.0.0`: a host on one refuses the other as not newer). Unverified, as
/// [`previous_created`]: it only ever refuses.
fn previous_build(body: Option<&[u8]>, version: &str) -> Option<(String, String)> {
    let doc: ManifestDoc = serde_json::from_slice(body?).ok()?;
    let held = Version::parse(&doc.version).ok()?;
    (held == Version::parse(version).ok()?).then(|| (doc.version.clone(), doc.build()))
}

/// A version is one build: hosts that installed build `old` of `version`
/// refuse any other build of it as "not newer", so replacing the manifest
/// (`path`) with build `new` would leave the fleet split between the two
/// under one version. The same build again (a re-pack) is fine. No
/// override: a rebuild is published as a new version.
fn same_build(path: &Path, version: &str, old: &str, new: &str) -> Result<(), String> {
    if old == new {
        return Ok(());
    }
    Err(format!(
        "{}: already holds version {version} as build {old}; these images are build {new}, \
         which hosts that installed build {old} refuse as not newer: pack them as a new --version",
        path.display()
    ))
}

/// The build ([`crate::manifest::build_id`]) the images `images` (class,
/// file) make, read once each, before anything is written.
fn images_build(images: &[(String, PathBuf)]) -> Result<String, String> {
    let mut listing = Vec::with_capacity(images.len());
    for (class, path) in images {
        let mut file = File::open(path).map_err(|e| err(path, e))?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut hasher).map_err(|e| err(path, e))?;
        listing.push((class.as_str(), hex(&hasher.finalize()), size));
    }
    Ok(crate::manifest::build_id(
        listing
            .iter()
            .map(|(c, sha, size)| (*c, sha.as_str(), *size)),
    ))
}

/// What [`pack`] wrote: the signed manifest, and notes for the release
/// manager on how hosts will take it.
#[cfg(feature = "pack")]
pub struct Packed {
    /// `release.json` in the output directory.
    pub manifest: PathBuf,
    /// What it says, as signed.
    pub doc: ManifestDoc,
    /// SHA-256 of its signed bytes (hex).
    pub manifest_sha256: String,
    /// One line each, for the release manager (not errors).
    pub notes: Vec<String>,
}

/// A note when hosts will decode `image`'s segments as one stream, not on
/// every core ([`crate::install::decodes_in_parallel`]), with why: a
/// segment over [`crate::install::MAX_PARALLEL_SEGMENT`], or its largest
/// segment and frame past the decoders' memory budget (`--segment-size`
/// 13 and more of data that does not compress).
#[cfg(feature = "pack")]
fn one_stream_note(class: &str, image: &Image) -> Option<String> {
    if image.segments.is_empty() || crate::install::decodes_in_parallel(image) {
        return None;
    }
    let segment = image.segments.iter().map(|s| s.length).max()?;
    let frame = image.segments.iter().map(|s| s.patch_length).max()?;
    let max = crate::install::MAX_PARALLEL_SEGMENT;
    let why = if segment > max {
        format!(
            "segments of up to {segment} bytes are larger than the {max} bytes a host \
             decodes on every core"
        )
    } else {
        format!(
            "segments of up to {segment} bytes with frames of up to {frame} bytes pass a host's \
             decoding budget (a segment, 1 MiB and a frame within 27 MiB)"
        )
    };
    Some(format!(
        "note: {class}: {why}: hosts decode this payload as one stream, on one core, and \
         resume a cut download of it from their data partition, not from the slot; a smaller \
         --segment-size (the default is 4) keeps it parallel"
    ))
}

/// A note when the manifest replaced, of the same version, had another
/// rollout than the one packed: a re-pack takes only the command line's
/// (the documented way to resume a paused release), so one that drops a
/// staged rollout or a pause sends the release to every host at once;
/// said, not refused (found from outside: silently). Unverified, as
/// [`previous_created`]: it only ever speaks.
fn rollout_note(previous: Option<&[u8]>, version: &str, new: Option<&Rollout>) -> Option<String> {
    let doc: ManifestDoc = serde_json::from_slice(previous?).ok()?;
    let same = Version::parse(&doc.version).ok()? == Version::parse(version).ok()?;
    (same && doc.rollout.as_ref() != new).then(|| {
        format!(
            "note: the release.json replaced ({}) had {}; this one has {}",
            doc.version,
            describe_rollout(doc.rollout.as_ref()),
            describe_rollout(new)
        )
    })
}

/// A rollout in a few words, for [`rollout_note`].
fn describe_rollout(r: Option<&Rollout>) -> String {
    let Some(r) = r else {
        return "no rollout (every host takes it at once)".into();
    };
    let mut parts = Vec::new();
    if r.paused {
        parts.push("paused".to_string());
    }
    if let Some(p) = r.percent {
        parts.push(format!("{p}% of hosts"));
    }
    if let Some(w) = &r.waves {
        let w: Vec<String> = w.iter().map(f64::to_string).collect();
        parts.push(format!("waves {}", w.join(",")));
    }
    if let (Some(start), Some(minutes)) = (&r.start, r.duration_minutes) {
        parts.push(format!("a ramp from {start} over {minutes} minutes"));
    }
    match parts.is_empty() {
        true => "a rollout".into(),
        false => format!("a rollout of {}", parts.join(", ")),
    }
}

/// Build the release directory; returns the manifest's path and notes.
#[cfg(feature = "pack")]
pub fn pack(opts: &PackOptions) -> Result<Packed, String> {
    check_options(opts)?;
    check_inputs(opts)?;
    let keys: Vec<_> = crate::publish::load_secret_keys(&opts.secret_keys)
        .map_err(publish_err)?
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let dir = ReleaseDir::open(&opts.out).map_err(publish_err)?;
    let previous = dir.read_manifest("release.json").map_err(publish_err)?;
    let manifest = opts.out.join("release.json");
    other_product(
        &manifest,
        previous.as_deref(),
        &opts.compatible,
        opts.track.as_deref(),
    )?;
    let same_version = previous_build(previous.as_deref(), &opts.version);
    if let Some((held, old)) = &same_version {
        same_build(&manifest, held, old, &images_build(&opts.images)?)?;
    }
    let (created, expires) = release_dates(opts, previous_created(previous.as_deref()), now())?;
    let before = names_in(&opts.out);
    let written = write_release(
        opts,
        &dir,
        (previous.as_deref(), same_version.as_ref()),
        &keys,
        (created, expires),
    );
    if written.is_err() {
        for name in orphans(opts, &before, &names_in(&opts.out), &named_in(&manifest)) {
            let _ = std::fs::remove_file(opts.out.join(name));
        }
        let _ = dir.sync();
    }
    let (doc, manifest_sha256) = written?;
    let mut notes: Vec<String> = doc
        .images
        .iter()
        .filter_map(|(class, image)| one_stream_note(class, image))
        .collect();
    notes.extend(rollout_note(
        previous.as_deref(),
        &opts.version,
        opts.rollout.as_ref(),
    ));
    // Dates given in the past make a release for tests of expiry, which
    // hosts refuse; said, not refused (found from outside: signed silently).
    let clock = now();
    if expires <= clock {
        notes.push(format!(
            "note: --expires {} is not after this clock ({}): hosts refuse this release as expired",
            format_rfc3339(expires),
            format_rfc3339(clock)
        ));
    }
    Ok(Packed {
        manifest,
        doc,
        manifest_sha256,
        notes,
    })
}

/// The names in directory `dir` (none when it cannot be read).
fn names_in(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|list| {
            list.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The payload names the manifest at `path` names (none when there is no
/// manifest there, or it does not parse).
fn named_in(path: &Path) -> Vec<String> {
    let Ok(body) = crate::files::read_capped(path, crate::manifest::MAX_MANIFEST_BYTES) else {
        return Vec::new();
    };
    let Ok(m) = crate::manifest::Manifest::parse(&body) else {
        return Vec::new();
    };
    m.doc
        .images
        .values()
        .flat_map(|i| {
            std::iter::once(i.url.clone()).chain(i.deltas.values().map(|d| d.url.clone()))
        })
        .collect()
}

/// The payloads a failed `pack` leaves behind, to remove: names this run
/// writes (its classes' full and delta payloads at its version) that were
/// not in the directory `before` it, are there `now`, and that the
/// manifest there does not name (`named`: one published despite the
/// failure keeps its payloads). Found from outside: one left behind
/// blocked packing the version again ("already exists with other bytes"),
/// and a sync of the directory would have published it.
fn orphans(
    opts: &PackOptions,
    before: &std::collections::BTreeSet<String>,
    now: &std::collections::BTreeSet<String>,
    named: &[String],
) -> Vec<String> {
    let ours = |name: &str| {
        opts.images.iter().any(|(class, _)| {
            let stem = format!("{class}-{}.", opts.version);
            name.strip_prefix(&stem).is_some_and(|rest| {
                rest == "img"
                    || rest == "img.zst"
                    || (rest.starts_with("from-") && rest.ends_with(".zst"))
            })
        })
    };
    now.iter()
        .filter(|n| !before.contains(*n) && ours(n) && !named.contains(n))
        .cloned()
        .collect()
}

/// Write the payloads of every image and publish the manifest naming them
/// (signed with `keys`, dated `created`..`expires`) over `previous` (and
/// its build, when of the same version): the signed document and its
/// SHA-256.
fn write_release(
    opts: &PackOptions,
    dir: &ReleaseDir,
    (previous, same_version): (Option<&[u8]>, Option<&(String, String)>),
    keys: &[crate::trust::minisign::SecretKey],
    (created, expires): (i64, i64),
) -> Result<(ManifestDoc, String), String> {
    let manifest = opts.out.join("release.json");
    let mut images = BTreeMap::new();
    for (class, path) in &opts.images {
        let image = if segmented(opts) {
            pack_segmented(class, path, opts, dir)?
        } else {
            pack_image(class, path, opts, dir)?
        };
        images.insert(class.clone(), image);
    }
    dir.sync().map_err(publish_err)?;
    crate::failpoint::hit("publish-payloads-synced");
    let doc = ManifestDoc {
        format: FORMAT,
        compatible: opts.compatible.clone(),
        track: opts.track.clone(),
        version: opts.version.clone(),
        created: format_rfc3339(created),
        expires: format_rfc3339(expires),
        images,
        rollout: opts.rollout.clone(),
    };
    // Checked again on what was packed: an image rewritten since it was
    // hashed above must not slip another build under the version.
    if let Some((held, old)) = same_version {
        same_build(&manifest, held, old, &doc.build())?;
    }
    let mut body = serde_json::to_vec_pretty(&doc).map_err(|e| format!("release.json: {e}"))?;
    body.push(b'\n');
    let manifest_sha256 = hex(&Sha256::digest(&body));
    // Signed by every key given, each its own: the gate at their number.
    let own = crate::trust::KeyRing::from_keys(keys.iter().map(|k| k.public_key()).collect());
    dir.publish_manifest("release.json", &body, keys, previous, &own, keys.len())
        .map_err(publish_err)?;
    Ok((doc, manifest_sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_failed_pack_removes_only_the_new_payloads_of_its_version_no_manifest_names() {
        let opts = PackOptions {
            version: "3.0".into(),
            ..opts()
        };
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let before = set(&["rootfs-2.0.img.zst", "release.json"]);
        let now = set(&[
            "rootfs-2.0.img.zst",
            "release.json",
            "rootfs-3.0.img.zst",
            "rootfs-3.0.from-0123456789ab.zst",
            "rootfs-3.0.img",
            "rootfs-3.0.img.zst.tmp",
            "other-3.0.img.zst",
            "rootfs-3.01.img.zst",
            "notes.txt",
        ]);
        assert_eq!(
            orphans(&opts, &before, &now, &[]),
            [
                "rootfs-3.0.from-0123456789ab.zst",
                "rootfs-3.0.img",
                "rootfs-3.0.img.zst"
            ]
        );
        // One the manifest there names stays: it was published.
        assert_eq!(
            orphans(&opts, &before, &now, &["rootfs-3.0.img.zst".into()]),
            ["rootfs-3.0.from-0123456789ab.zst", "rootfs-3.0.img"]
        );
        // One there before stays.
        assert!(orphans(&opts, &now, &now, &[]).is_empty());
    }

    #[test]
    fn a_re_pack_that_changes_the_rollout_of_its_version_says_so() {
        let prev = |rollout: serde_json::Value| {
            serde_json::to_vec(&serde_json::json!({"format": 1, "compatible": "acme",
                "version": "2.0", "created": "c", "expires": "e", "images": {},
                "rollout": rollout}))
            .expect("json")
        };
        let paused = prev(serde_json::json!({"percent": 5.0, "paused": true}));
        assert_eq!(
            rollout_note(Some(&paused), "2.0.0", None).as_deref(),
            Some("note: the release.json replaced (2.0) had a rollout of paused, 5% of hosts; this one has no rollout (every host takes it at once)")
        );
        let same = Rollout {
            percent: Some(5.0),
            paused: true,
            ..Default::default()
        };
        assert_eq!(rollout_note(Some(&paused), "2.0", Some(&same)), None);
        assert_eq!(
            rollout_note(Some(&paused), "3.0", None),
            None,
            "another version"
        );
        assert_eq!(rollout_note(None, "2.0", None), None);
        let waves = prev(serde_json::json!({"percent": 10.0, "waves": [10.0, 50.0, 100.0]}));
        assert!(rollout_note(Some(&waves), "2.0", Some(&same))
            .is_some_and(|n| n.contains("had a rollout of 10% of hosts, waves 10,50,100; this one has a rollout of paused, 5% of hosts")));
    }

    #[test]
    fn a_release_directorys_track_is_kept_or_given_never_swapped() {
        let doc = |track: Option<&str>| {
            let mut v = serde_json::json!({"format": 1, "compatible": "acme", "version": "2.0",
                "created": "c", "expires": "e", "images": {}});
            if let Some(t) = track {
                v["track"] = t.into();
            }
            serde_json::from_value::<ManifestDoc>(v).expect("doc")
        };
        let p = Path::new("out/release.json");
        assert_eq!(other_track(p, &doc(Some("stable")), Some("stable")), Ok(()));
        assert_eq!(
            other_track(p, &doc(None), Some("stable")),
            Ok(()),
            "given one"
        );
        assert_eq!(other_track(p, &doc(None), None), Ok(()));
        for new in [Some("beta"), None] {
            let e = other_track(p, &doc(Some("stable")), new).expect_err("swapped");
            assert!(
                e.starts_with(
                    "out/release.json: holds release 2.0 of track \"stable\", and this pack gives "
                ),
                "{e}"
            );
        }
    }

    fn opts() -> PackOptions {
        PackOptions {
            secret_keys: vec!["release.key".into()],
            compatible: "acme-edge".into(),
            track: None,
            version: "2.0".into(),
            images: vec![("rootfs".into(), "rootfs.img".into())],
            out: "out".into(),
            created: None,
            expires: None,
            expires_days: 90,
            level: Some(19),
            window_log: None,
            rollout: None,
            segment_size: None,
            one_frame: false,
            delta_from: Vec::new(),
            delta_level: 9,
            delta_window_log: MAX_DELTA_WINDOW_LOG,
        }
    }

    #[test]
    fn class_names_are_a_strict_charset() {
        for good in ["rootfs", "boot", "rootfs_2", "a-b", "A1", &"x".repeat(64)] {
            assert!(valid_class(good), "{good:?}");
        }
        for bad in [
            "",
            "../../escaped",
            "a/b",
            ".hidden",
            "-x",
            "_x",
            "root fs",
            "rootfs\n",
            "r\u{e9}",
            &"x".repeat(65),
        ] {
            assert!(!valid_class(bad), "{bad:?}");
        }
    }

    // Long on purpose: one refusal per option, in `check_options`' order.
    #[test]
    fn check_options_refuses_each_bad_option() {
        assert_eq!(check_options(&opts()), Ok(()));
        let rollout = |percent: f64| {
            Some(Rollout {
                percent: Some(percent),
                ..Default::default()
            })
        };
        let cases: Vec<(&str, PackOptions, &str)> = vec![
            (
                "escaping class",
                PackOptions {
                    images: vec![("../../escaped".into(), "i".into())],
                    ..opts()
                },
                "--image \"../../escaped\"",
            ),
            (
                "empty class",
                PackOptions {
                    images: vec![("".into(), "i".into())],
                    ..opts()
                },
                "a class is",
            ),
            (
                "duplicate class",
                PackOptions {
                    images: vec![("rootfs".into(), "a".into()), ("rootfs".into(), "b".into())],
                    ..opts()
                },
                "class given twice",
            ),
            (
                "no image",
                PackOptions {
                    images: vec![],
                    ..opts()
                },
                "at least one --image",
            ),
            (
                "no key",
                PackOptions {
                    secret_keys: vec![],
                    ..opts()
                },
                "--secret",
            ),
            (
                "bad version",
                PackOptions {
                    version: "2.0-rc1".into(),
                    ..opts()
                },
                "--version",
            ),
            (
                "empty compatible",
                PackOptions {
                    compatible: String::new(),
                    ..opts()
                },
                "--compatible",
            ),
            (
                "percent nan",
                PackOptions {
                    rollout: rollout(f64::NAN),
                    ..opts()
                },
                "--percent NaN",
            ),
            (
                "percent inf",
                PackOptions {
                    rollout: rollout(f64::INFINITY),
                    ..opts()
                },
                "--percent inf",
            ),
            (
                "percent 150",
                PackOptions {
                    rollout: rollout(150.0),
                    ..opts()
                },
                "--percent 150",
            ),
            (
                "percent -5",
                PackOptions {
                    rollout: rollout(-5.0),
                    ..opts()
                },
                "--percent -5",
            ),
            (
                "start percentage nan",
                PackOptions {
                    rollout: Some(Rollout {
                        start_percentage: Some(f64::NAN),
                        ..Default::default()
                    }),
                    ..opts()
                },
                "--start-percentage",
            ),
            (
                "a ramp without a start",
                PackOptions {
                    rollout: Some(Rollout {
                        duration_minutes: Some(4320),
                        ..Default::default()
                    }),
                    ..opts()
                },
                "needs both --rollout-start and --duration-minutes",
            ),
            (
                "a ramp without a duration",
                PackOptions {
                    rollout: Some(Rollout {
                        start: Some("2026-12-04T00:00:00Z".into()),
                        start_percentage: Some(1.0),
                        ..Default::default()
                    }),
                    ..opts()
                },
                "needs both --rollout-start and --duration-minutes",
            ),
            (
                "a start percentage alone",
                PackOptions {
                    rollout: Some(Rollout {
                        start_percentage: Some(1.0),
                        ..Default::default()
                    }),
                    ..opts()
                },
                "needs both --rollout-start and --duration-minutes",
            ),
            (
                "a ramp and a percentage",
                PackOptions {
                    rollout: Some(Rollout {
                        start: Some("2026-12-04T00:00:00Z".into()),
                        duration_minutes: Some(60),
                        percent: Some(5.0),
                        ..Default::default()
                    }),
                    ..opts()
                },
                "are two rollouts",
            ),
            (
                "expires before created",
                PackOptions {
                    created: Some(2_000_000_000),
                    expires: Some(1_999_999_999),
                    ..opts()
                },
                "is not after --created",
            ),
            (
                "expires-days overflow",
                PackOptions {
                    expires_days: 999_999_999_999_999,
                    ..opts()
                },
                "--expires-days 999999999999999",
            ),
            (
                "expires-days 0",
                PackOptions {
                    expires_days: 0,
                    ..opts()
                },
                "--expires-days 0",
            ),
            (
                "segment 0",
                PackOptions {
                    segment_size: Some(0),
                    ..opts()
                },
                "--segment-size",
            ),
            (
                "segment not whole MiB",
                PackOptions {
                    segment_size: Some(MIB + 1),
                    ..opts()
                },
                "--segment-size",
            ),
            (
                "segment above 1 GiB",
                PackOptions {
                    segment_size: Some(2048 * MIB),
                    ..opts()
                },
                "--segment-size",
            ),
            (
                "segment too big for the delta window",
                PackOptions {
                    segment_size: Some(1024 * MIB),
                    delta_from: vec![("rootfs".into(), "old".into())],
                    delta_window_log: 30,
                    ..opts()
                },
                "at most half",
            ),
            (
                "delta without image",
                PackOptions {
                    delta_from: vec![("boot".into(), "old".into())],
                    ..opts()
                },
                "no --image boot",
            ),
            (
                "segments uncompressed",
                PackOptions {
                    level: None,
                    segment_size: Some(MIB),
                    ..opts()
                },
                "need compression",
            ),
            (
                "level 0",
                PackOptions {
                    level: Some(0),
                    ..opts()
                },
                "--level 0",
            ),
            (
                "level 23",
                PackOptions {
                    level: Some(23),
                    ..opts()
                },
                "--level 23",
            ),
            (
                "window log 32",
                PackOptions {
                    window_log: Some(32),
                    ..opts()
                },
                "--window-log 32",
            ),
            (
                "a window larger than the segments",
                PackOptions {
                    window_log: Some(27),
                    ..opts()
                },
                "give --one-frame for one long-window frame",
            ),
            (
                "one frame cut into segments",
                PackOptions {
                    one_frame: true,
                    segment_size: Some(MIB),
                    ..opts()
                },
                "--one-frame makes one zstd frame",
            ),
            (
                "one frame with a delta",
                PackOptions {
                    one_frame: true,
                    delta_from: vec![("rootfs".into(), "old".into())],
                    ..opts()
                },
                "--one-frame makes one zstd frame",
            ),
            (
                "one frame uncompressed",
                PackOptions {
                    one_frame: true,
                    level: None,
                    ..opts()
                },
                "drop --no-compress",
            ),
            (
                "delta level 0",
                PackOptions {
                    delta_level: 0,
                    ..opts()
                },
                "--delta-level 0",
            ),
        ];
        for (what, o, want) in cases {
            let e = check_options(&o).expect_err(what);
            assert!(e.contains(want), "{what}: {e}");
            assert!(!e.contains('\n'), "{what}: not one line: {e}");
        }
        // --segment-size 1 (MiB) is fine; --expires alone needs no days.
        let ok = PackOptions {
            segment_size: Some(MIB),
            expires: Some(2_000_000_000),
            expires_days: 0,
            ..opts()
        };
        assert_eq!(check_options(&ok), Ok(()));
        // A long window is for one frame; a window within the segments is fine.
        for ok in [
            PackOptions {
                one_frame: true,
                window_log: Some(27),
                ..opts()
            },
            PackOptions {
                window_log: Some(22),
                ..opts()
            },
            // The README's ramp, whole.
            PackOptions {
                rollout: Some(Rollout {
                    start: Some("2026-12-02T00:00:00Z".into()),
                    start_percentage: Some(1.0),
                    duration_minutes: Some(4320),
                    ..Default::default()
                }),
                ..opts()
            },
        ] {
            assert_eq!(check_options(&ok), Ok(()));
        }
        assert!(segmented(&opts()), "segments are the default");
        assert!(!segmented(&PackOptions {
            one_frame: true,
            ..opts()
        }));
        assert!(!segmented(&PackOptions {
            level: None,
            ..opts()
        }));
    }

    #[test]
    fn check_inputs_refuses_directories_empty_and_missing_images() {
        let dir = TempDir::new("pack-inputs");
        let empty = dir.join("empty.img");
        std::fs::write(&empty, b"").expect("write");
        let full = dir.join("full.img");
        std::fs::write(&full, b"data").expect("write");
        let with = |path: &Path| PackOptions {
            images: vec![("rootfs".into(), path.to_path_buf())],
            ..opts()
        };
        assert_eq!(check_inputs(&with(&full)), Ok(()));
        let e = check_inputs(&with(&dir)).expect_err("a directory");
        assert!(e.contains("not a regular file"), "{e}");
        let e = check_inputs(&with(&empty)).expect_err("empty");
        assert!(e.contains("an empty image"), "{e}");
        let e = check_inputs(&with(&dir.join("missing"))).expect_err("missing");
        assert!(e.contains("missing"), "{e}");
        let delta_dir = PackOptions {
            delta_from: vec![("rootfs".into(), dir.to_path_buf())],
            ..with(&full)
        };
        assert!(check_inputs(&delta_dir).is_err());
    }

    #[test]
    fn a_new_manifest_is_created_after_the_one_it_replaces() {
        let now = 1_800_000_000;
        assert_eq!(
            release_dates(&opts(), None, now),
            Ok((now, now + 90 * 86400))
        );
        // The clock is behind the published manifest: one second after it.
        assert_eq!(
            release_dates(&opts(), Some(now + 50), now).map(|d| d.0),
            Ok(now + 51)
        );
        let explicit = |c: i64| PackOptions {
            created: Some(c),
            ..opts()
        };
        assert_eq!(
            release_dates(&explicit(now), Some(now - 1), now + 99).map(|d| d.0),
            Ok(now)
        );
        let e = release_dates(&explicit(now), Some(now), now).expect_err("not after");
        assert!(e.contains("is not after the created"), "{e}");
        let expires_early = PackOptions {
            expires: Some(now + 10),
            ..opts()
        };
        let e = release_dates(&expires_early, Some(now + 20), now).expect_err("expired");
        assert!(e.contains("--expires"), "{e}");
        // Dated more than a day ahead, by --created or by the file it
        // replaces: no host would install it.
        let e = release_dates(&explicit(now + 86_401), None, now).expect_err("ahead");
        assert!(e.contains("more than a day ahead"), "{e}");
        let e = release_dates(&opts(), Some(now + 86_400 * 365), now).expect_err("stray");
        assert!(e.contains("the release.json it replaces is dated"), "{e}");
        assert!(release_dates(&explicit(now + 3600), None, now).is_ok());
    }

    /// The build of the images as `pack` reads them first is the build
    /// of the manifest it would write from them (the one `build_id`).
    #[test]
    fn the_images_build_is_the_manifest_build_of_their_bytes() {
        let dir = TempDir::new("pack-build");
        let (root, boot) = (dir.join("root.img"), dir.join("boot.img"));
        std::fs::write(&root, b"root bytes").expect("write");
        std::fs::write(&boot, b"boot").expect("write");
        let sha = |d: &[u8]| hex(&Sha256::digest(d));
        let images = vec![("rootfs".to_string(), root), ("boot".to_string(), boot)];
        assert_eq!(
            images_build(&images),
            Ok(crate::manifest::build_id([
                ("boot", sha(b"boot").as_str(), 4),
                ("rootfs", sha(b"root bytes").as_str(), 10),
            ]))
        );
        let e = images_build(&[("rootfs".into(), dir.join("gone.img"))]).expect_err("missing");
        assert!(e.contains("gone.img"), "{e}");
    }

    /// Only a readable manifest of the same version holds a build that a
    /// re-pack must keep; another build of it is refused naming the file,
    /// the version and both builds; the same build is a re-pack.
    #[test]
    fn a_version_already_in_the_directory_takes_only_its_own_build_again() {
        let doc = |version: &str| {
            let d = serde_json::json!({
                "format": 1, "compatible": "acme-edge", "version": version,
                "created": "2026-01-01T00:00:00Z", "expires": "2026-04-01T00:00:00Z",
                "images": {"rootfs": {"url": "rootfs-2.0.img", "size": 10, "sha256": "ab"}},
            });
            serde_json::to_vec(&d).expect("json")
        };
        let build = crate::manifest::build_id([("rootfs", "ab", 10)]);
        let held = |v: &str| Some((v.to_string(), build.clone()));
        assert_eq!(previous_build(Some(&doc("2.0")), "2.0"), held("2.0"));
        // Equal as versions, whatever the text (attack 7, N5).
        for same in ["2.0.0", "2", "02.0", "2.00", "2.0.0.0"] {
            assert_eq!(
                previous_build(Some(&doc("2.0")), same),
                held("2.0"),
                "{same}"
            );
        }
        assert_eq!(previous_build(Some(&doc("1.9")), "2.0"), None);
        assert_eq!(previous_build(Some(&doc("2.0.1")), "2.0"), None);
        assert_eq!(previous_build(Some(&doc("not-a-version")), "2.0"), None);
        assert_eq!(previous_build(Some(b"{not json"), "2.0"), None);
        assert_eq!(previous_build(None, "2.0"), None);
        let m = Path::new("out/release.json");
        assert_eq!(same_build(m, "2.0", &build, &build), Ok(()));
        let e = same_build(m, "2.0", &build, "0123456789abcdef").expect_err("another build");
        assert_eq!(
            e,
            format!(
                "out/release.json: already holds version 2.0 as build {build}; these images are \
                 build 0123456789abcdef, which hosts that installed build {build} refuse as not \
                 newer: pack them as a new --version"
            )
        );
    }

    #[test]
    fn an_expires_more_than_3650_days_after_created_is_refused_as_hosts_refuse_it() {
        let now = 1_800_000_000;
        let dated = |expires: i64| PackOptions {
            created: Some(now),
            expires: Some(expires),
            ..opts()
        };
        let days = MAX_EXPIRES_DAYS as i64 * 86_400;
        assert_eq!(
            release_dates(&dated(now + days), None, now),
            Ok((now, now + days))
        );
        let e = release_dates(&dated(now + days + 1), None, now).expect_err("a second more");
        assert!(e.contains("more than 3650 days after"), "{e}");
        // Without --created: the computed `created` is the one measured from.
        let late = PackOptions {
            expires: Some(now + days + 1),
            ..opts()
        };
        assert!(release_dates(&late, None, now).is_err());
    }

    #[test]
    fn a_source_that_fits_the_window_is_referenced_whole() {
        assert_eq!(source_region(1008 * MIB, 0, 16 * MIB, 16 * MIB, 30), None);
        assert_eq!(source_region(2032 * MIB, 0, 16 * MIB, 16 * MIB, 31), None);
    }

    #[test]
    fn a_larger_source_is_split_into_regions_around_each_segment() {
        let (size, seg, log) = (3072 * MIB, 16 * MIB, 30);
        let window = 1u64 << log;
        for i in 0..(size / seg) {
            let offset = i * seg;
            let r = source_region(size, offset, seg, seg, log).expect("a region");
            assert_eq!(r.length + seg, window, "segment {i}");
            assert!(r.offset + r.length <= size, "segment {i}: {r:?}");
            assert_eq!(r.offset % REGION_ALIGN, 0);
            // The segment's own old bytes are inside its region.
            assert!(
                r.offset <= offset && offset + seg <= r.offset + r.length,
                "{i}: {r:?}"
            );
        }
        // Centred where there is room; pinned to the ends where there is not.
        let mid = source_region(size, 1536 * MIB, seg, seg, log).expect("mid");
        assert_eq!(mid.offset, (1536 + 8 - 504) * MIB);
        assert_eq!(
            source_region(size, 0, seg, seg, log).expect("first").offset,
            0
        );
        let last = source_region(size, size - seg, seg, seg, log).expect("last");
        assert_eq!(last.offset + last.length, size);
    }
}
