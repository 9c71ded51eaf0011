//! Delta install: rebuild the new image in the inactive slot from the
//! booted slot's exact bytes and small per-segment patches.
//!
//! Invariants: the booted slot is only ever mapped read-only; a delta is
//! used only when the booted slot's bytes hash to the delta's source; the
//! target is written only through the one slot writer
//! (`install/writer.rs`), so a segment counts as done only after its
//! bytes, read back from the medium, hashed to the segment's signed digest
//! and were synced, and only then does the journal record it (so a finished
//! segment is never fetched again after a crash); a segment the journal
//! names is read back and checked again before it counts in this run; a
//! frame with a signed digest (`patch_blake3`) reaches the decoder only
//! after it matched it; anything unexpected — a source that does not
//! match, a server that ignores `Range`, a frame or a segment that fails
//! its hash — ends in
//! [`Outcome::Fallback`], and the caller installs the full payload: never a
//! half-applied delta. A download window that closes (timer runs) is no
//! reason to give the delta up: [`apply`] ends with that error, the
//! journal keeps the segments done, and the next run inside a window goes
//! on from there.

use crate::fetch::{FetchError, Transport, WholeAnswer};
use crate::install::writer::{AlignedBuf, Fault, SlotWriter, READBACK};
use crate::install::{fill, hex, WriteMode};
use crate::manifest::{Delta, Image, SourceRegion};
use crate::progress::Progress;
use crate::state::SourceHash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const BUF: usize = 4 << 20;

/// The largest zstd window this host's zstd decodes: 2^30 on 32-bit hosts
/// (zstd's `ZSTD_WINDOWLOG_MAX_32`, and about what a 32-bit address space
/// can map beside the process), 2^31 otherwise.
pub const HOST_MAX_WINDOW_LOG: u32 = if usize::BITS == 32 { 30 } else { 31 };

/// How a delta attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The image is in the target slot; bytes fetched this run.
    Applied {
        /// Bytes of the delta payload fetched this run.
        fetched: u64,
        /// Segments fetched, decoded and written this run.
        segments_fetched: usize,
        /// Segments an earlier, interrupted run had written (the journal
        /// names them), read back and found intact: not fetched again.
        segments_reused: usize,
    },
    /// Use the full payload instead, for this reason; `fetched` bytes of
    /// the delta crossed the network before it was given up (they count
    /// toward what this install downloaded).
    Fallback {
        /// Why the delta was given up, for the log.
        reason: String,
        /// Bytes of the delta fetched before that.
        fetched: u64,
        /// The server answered a segment's range with the whole file (it,
        /// or a proxy, ignores `Range`): counted as a warning
        /// (`range_ignored`), the full payload being what it can serve.
        range_ignored: bool,
    },
}

/// `e` back for the fallback, unless it is a read that ended where the
/// download window closed: that one ends [`apply`] (`Err`), since giving
/// up the delta for it would fetch the whole image next time.
fn unless_window_closed(e: io::Error) -> io::Result<io::Error> {
    match FetchError::from_io(&e) {
        Some(FetchError::OutsideWindow { .. }) => Err(e),
        _ => Ok(e),
    }
}

/// The whole frame of delta segment `seg` from `reader`: at most zstd's
/// bound for the segment's length (a larger one is refused before it is
/// read, so the buffer is bounded by the signed segment size).
fn signed_frame(mut reader: impl Read, seg: &crate::manifest::Segment) -> io::Result<Vec<u8>> {
    let bound = usize::try_from(seg.length)
        .map(zstd::zstd_safe::compress_bound)
        .unwrap_or(usize::MAX);
    let len = usize::try_from(seg.patch_length)
        .ok()
        .filter(|&n| n <= bound)
        .ok_or_else(|| {
            io::Error::other(format!(
                "a {}-byte frame for a {}-byte segment is larger than zstd ever makes one",
                seg.patch_length, seg.length
            ))
        })?;
    let mut frame = vec![0u8; len];
    let n = fill(&mut reader, &mut frame)?;
    if n < len {
        return Err(io::Error::other(format!(
            "the frame ends after {n} of its {len} bytes"
        )));
    }
    Ok(frame)
}

/// Segments already written by one delta. A segment index means something
/// only within one segment table: a re-pack of the same source and image
/// with another segment size numbers other byte ranges, so the journal is
/// keyed by the delta's own identity ([`identity`]) as well.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    /// SHA-256 of the source (the booted slot's bytes) the segments were
    /// decoded against.
    pub source_sha256: String,
    /// SHA-256 of the image the segments belong to.
    pub image_sha256: String,
    /// [`identity`] of the delta whose segments `done` counts (absent in
    /// journals of older versions: those are not reused).
    #[serde(default)]
    pub delta_sha256: String,
    /// Indexes of the segments written, read back, matched and synced.
    pub done: Vec<usize>,
}

/// SHA-256 of the delta's signed description (URL, source size, window,
/// and the whole segment table with each segment's offset, length, hash
/// and place in the payload), as this version reads it.
pub fn identity(delta: &Delta) -> String {
    // Serializing a parsed struct cannot fail; an empty key would only
    // make a journal unusable, never wrongly reused.
    let bytes = serde_json::to_vec(delta).unwrap_or_default();
    hex(&Sha256::digest(&bytes))
}

/// The largest journal read: a million segments' indices. A bigger file is
/// damage, and is not read into memory (the delta then starts over).
const MAX_JOURNAL_BYTES: u64 = 16 << 20;

fn load_journal(path: &Path, source: &str, image: &str, delta: &str) -> Journal {
    let mut bytes = Vec::new();
    // Never `File::open`: a FIFO put in its place would hold the install.
    crate::files::open_regular(path)
        .and_then(|f| f.take(MAX_JOURNAL_BYTES + 1).read_to_end(&mut bytes))
        .ok()
        .filter(|&n| n as u64 <= MAX_JOURNAL_BYTES)
        .and_then(|_| serde_json::from_slice::<Journal>(&bytes).ok())
        .filter(|j| j.source_sha256 == source && j.image_sha256 == image && j.delta_sha256 == delta)
        .unwrap_or_else(|| Journal {
            source_sha256: source.into(),
            image_sha256: image.into(),
            delta_sha256: delta.into(),
            done: Vec::new(),
        })
}

fn save_journal(path: &Path, journal: &Journal) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(journal).map_err(io::Error::other)?;
    let f = crate::files::create_replacing(&tmp)?;
    f.write_all_at(&body, 0)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// SHA-256 of the first `size` bytes of `device`, cached for this boot.
pub fn source_hash(
    cache: &mut Vec<SourceHash>,
    boot_id: &str,
    device: &Path,
    size: u64,
) -> io::Result<String> {
    let name = device.display().to_string();
    if let Some(h) = cache
        .iter()
        .find(|h| h.boot_id == boot_id && h.device == name && h.size == size)
    {
        return Ok(h.sha256.clone());
    }
    let sha = crate::install::hash_path(device, size)?;
    cache.retain(|h| h.boot_id == boot_id);
    cache.push(SourceHash {
        boot_id: boot_id.into(),
        device: name,
        size,
        sha256: sha.clone(),
        unknown: Default::default(),
    });
    Ok(sha)
}

/// The delta whose source the booted slot holds, or why there is none.
pub fn choose<'m>(
    image: &'m Image,
    booted_device: &Path,
    device_size: u64,
    recorded_sha: Option<&str>,
    cache: &mut Vec<SourceHash>,
    boot_id: &str,
    max_window_log: u32,
) -> Result<(&'m str, &'m Delta), String> {
    if image.deltas.is_empty() {
        return Err("the release has no delta".into());
    }
    // Decided before any hashing: a delta this host cannot decode is no
    // reason to read the booted slot.
    let usable: Vec<(&String, &Delta)> = image
        .deltas
        .iter()
        .filter(|(_, d)| d.window_log <= max_window_log)
        .collect();
    if usable.is_empty() {
        let least = image
            .deltas
            .values()
            .map(|d| d.window_log)
            .min()
            .unwrap_or(0);
        return Err(format!(
            "the release's deltas need a 2^{least}-byte zstd window; this host decodes at most 2^{max_window_log} (a 32-bit host needs deltas packed with --delta-window-log 30)"
        ));
    }
    let mut sizes: Vec<u64> = usable
        .iter()
        .map(|(_, d)| d.source_size)
        .filter(|&s| s <= device_size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut seen = Vec::new();
    for size in sizes {
        let sha = source_hash(cache, boot_id, booted_device, size).map_err(|e| {
            format!(
                "cannot hash the booted slot {}: {e}",
                booted_device.display()
            )
        })?;
        if let Some((key, delta)) = usable
            .iter()
            .find(|(k, d)| d.source_size == size && **k == sha)
        {
            return Ok((key.as_str(), *delta));
        }
        seen.push(sha);
    }
    Err(match recorded_sha {
        Some(rec) if !seen.is_empty() && !image.deltas.contains_key(rec) => {
            format!("no delta in the release starts from the booted image (sha256 {rec})")
        }
        Some(rec) if !seen.iter().any(|s| s == rec) => format!(
            "the booted slot {} no longer holds the bytes recorded for it (sha256 {rec}, now {}): it was modified",
            booted_device.display(),
            seen.first().map(String::as_str).unwrap_or("?")
        ),
        _ => format!(
            "no delta in the release starts from the booted slot's bytes (sha256 {})",
            seen.first().map(String::as_str).unwrap_or("unknown")
        ),
    })
}

/// A read-only mapping of bytes `[offset, offset + len)` of the booted slot.
struct SourceMap {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    /// Bytes mapped: from `offset` rounded down to a page boundary.
    mapped: usize,
    /// Where the region starts inside the mapping.
    skip: usize,
    region: SourceRegion,
    _file: File,
}

impl SourceMap {
    fn open(device: &Path, region: SourceRegion) -> io::Result<SourceMap> {
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) } {
            p if p > 0 => p as u64,
            _ => 4096,
        };
        let start = region.offset / page * page;
        let too_big = || io::Error::other("source region larger than this host's address space");
        let skip = usize::try_from(region.offset - start).map_err(|_| too_big())?;
        let mapped = usize::try_from(region.length)
            .ok()
            .and_then(|l| l.checked_add(skip))
            .ok_or_else(too_big)?;
        let offset = nix::libc::off_t::try_from(start).map_err(|_| too_big())?;
        // Read-only open and PROT_READ: the booted slot cannot be written
        // through this mapping even by a bug.
        let file = File::open(device)?;
        let size =
            std::num::NonZeroUsize::new(mapped).ok_or_else(|| io::Error::other("empty source"))?;
        // SAFETY: a fresh shared read-only mapping of a file we hold open;
        // it is unmapped in Drop and only read through `bytes()`.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                size,
                nix::sys::mman::ProtFlags::PROT_READ,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &file,
                offset,
            )
        }
        .map_err(io::Error::from)?;
        Ok(SourceMap {
            ptr,
            mapped,
            skip,
            region,
            _file: file,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `mapped` readable bytes for the life of
        // self, and `skip <= mapped`.
        unsafe {
            std::slice::from_raw_parts(
                (self.ptr.as_ptr() as *const u8).add(self.skip),
                self.mapped - self.skip,
            )
        }
    }
}

impl Drop for SourceMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.mapped) };
    }
}

/// Where the delta comes from and goes to.
pub struct Plan<'a> {
    /// How the payload is fetched (HTTP client, mirrors, pacing).
    pub transport: &'a Transport,
    /// The delta payload's URL or path (already resolved and mirrored).
    pub location: String,
    /// The signed delta: source size, window, segment table.
    pub delta: &'a Delta,
    /// The SHA-256 of the booted slot's first `source_size` bytes, as
    /// [`choose`] found it to match the delta's source (it keys the journal).
    pub source_sha256: &'a str,
    /// The signed image the delta rebuilds.
    pub image: &'a Image,
    /// The booted slot's device, mapped read-only.
    pub source_device: &'a Path,
    /// The inactive slot's device, written through the slot writer.
    pub target_device: &'a Path,
    /// Where the [`Journal`] of this delta is kept.
    pub journal: PathBuf,
}

/// A writer fault as this module's caller takes it: a device error, or
/// (the medium returned other bytes, or `before_write` failed) the
/// program's own error inside the io::Error.
fn fault_io(fault: Fault, target: &Path) -> io::Error {
    match fault {
        Fault::Io(e) => e,
        Fault::Arm(e) => io::Error::other(*e),
        Fault::Medium { offset } => io::Error::other(crate::error::Error::Install(
            crate::install::InstallError::Medium {
                path: target.to_path_buf(),
                offset,
            },
        )),
        other => io::Error::other(format!("{}: {other:?}", target.display())),
    }
}

/// Apply the delta segment by segment, skipping those the journal has (once
/// they read back right). `Err` is for failures that are not the delta's
/// fault (the target device cannot be written or returns other bytes, or
/// `before_write` failed: then the io::Error carries the program's
/// [`crate::error::Error`]): the caller stops there. `before_write` runs
/// once, before the first byte of the target changes.
// Long on purpose: the segment loop (journal, fetch, decode, verify, write,
// flush, journal) is one durable sequence per segment; its fallbacks must
// see every step.
pub fn apply(
    plan: &Plan,
    progress: &mut Progress,
    before_write: crate::install::BeforeWrite,
) -> io::Result<Outcome> {
    let delta = plan.delta;
    let mut journal = load_journal(
        &plan.journal,
        plan.source_sha256,
        &plan.image.sha256,
        &identity(delta),
    );
    let mut source: Option<SourceMap> = None;
    let target = SlotWriter::open(plan.target_device)?;
    let mut buf = AlignedBuf::new(BUF);
    let mut scratch = AlignedBuf::new(READBACK);
    let mut armed = false;
    let mut arm = || -> Result<(), Fault> {
        if !armed {
            before_write().map_err(|e| Fault::Arm(Box::new(e)))?;
            armed = true;
        }
        Ok(())
    };
    let fault = |f: Fault| fault_io(f, plan.target_device);
    let (mut fetched, mut segments_fetched, mut reused) = (0u64, 0usize, 0usize);
    macro_rules! fallback {
        ($($arg:tt)*) => {
            return Ok(Outcome::Fallback {
                reason: format!($($arg)*),
                fetched,
                range_ignored: false,
            })
        };
    }
    // A failed read of segment `i`'s frame: given up for the full
    // payload, counted when the server ignored the range.
    macro_rules! fallback_read {
        ($i:expr, $e:expr) => {{
            let e = unless_window_closed($e)?;
            return Ok(Outcome::Fallback {
                range_ignored: matches!(
                    FetchError::from_io(&e),
                    Some(FetchError::RangeIgnored { .. })
                ),
                reason: format!("segment {}: {e}", $i),
                fetched,
            });
        }};
    }
    for (i, seg) in delta.segments.iter().enumerate() {
        if journal.done.contains(&i) {
            // Written by an earlier run: it counts once the medium still
            // holds it.
            if target.holds(seg, &mut scratch)? {
                reused += 1;
                progress.advance(seg.length);
                continue;
            }
            journal.done.retain(|&d| d != i);
        }
        let reader = match plan.transport.open_range(
            &plan.location,
            seg.patch_offset,
            seg.patch_length,
            WholeAnswer::Refused,
            // Each segment stands alone, checked against its own digest.
            None,
        ) {
            Ok(r) => r,
            // Taking the segment from the whole answer would fetch
            // the whole delta payload once per segment: the full
            // payload is what such a server can serve.
            Err(e @ FetchError::RangeIgnored { .. }) => {
                return Ok(Outcome::Fallback {
                    reason: format!("segment {i}: {e}"),
                    fetched,
                    range_ignored: true,
                })
            }
            Err(e @ FetchError::OutsideWindow { .. }) => return Err(e.into_io()),
            Err(e) => fallback!("segment {i}: {e}"),
        };
        // Requested from the network: counted whether or not it is used.
        fetched += seg.patch_length;
        // A signed frame (releases packed since frame digests) is read whole
        // and checked before the decoder sees a byte of it.
        let mut reader: Box<dyn Read + Send> = match &seg.patch_blake3 {
            None => Box::new(reader),
            Some(expected) => match signed_frame(reader, seg) {
                Ok(frame) => match seg.check_frame(&frame) {
                    Ok(()) => Box::new(io::Cursor::new(frame)),
                    Err(actual) => fallback!(
                        "segment {i}: its frame (delta bytes {}..{}) has BLAKE3 {actual}, the signed manifest says {expected}; not decoded",
                        seg.patch_offset,
                        seg.patch_offset + seg.patch_length
                    ),
                },
                Err(e) => fallback_read!(i, e),
            },
        };
        // The frame must pledge its size: that bounds the decoder's memory
        // to one segment whatever window the (not yet verified) frame asks for.
        let mut header = vec![0u8; (seg.patch_length as usize).min(18)];
        let n = fill(&mut reader, &mut header)?;
        header.truncate(n);
        match zstd::zstd_safe::get_frame_content_size(&header) {
            Ok(Some(len)) if len == seg.length => {}
            other => {
                fallback!(
                    "segment {i}: frame declares {other:?} bytes, the manifest {}",
                    seg.length
                )
            }
        }
        let chained =
            io::BufReader::with_capacity(128 << 10, io::Cursor::new(header).chain(reader));
        // One mapping while segments share a region (the whole source, or
        // neighbouring regions that coincide); remapped when it moves.
        let region = delta.source_of(seg);
        if source.as_ref().is_none_or(|m| m.region != region) {
            // Unmapped before the next is mapped: on a 32-bit host two
            // regions of a 2^30 window may not fit the address space.
            drop(source.take());
            source = match SourceMap::open(plan.source_device, region) {
                Ok(m) => Some(m),
                Err(e) => {
                    fallback!(
                        "cannot map bytes {}..{} of the booted slot {}: {e}",
                        region.offset,
                        region.offset + region.length,
                        plan.source_device.display()
                    )
                }
            };
        }
        let prefix = source.as_ref().map(SourceMap::bytes).unwrap_or_default();
        let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(chained, prefix)?;
        if let Err(e) = decoder.window_log_max(delta.window_log) {
            fallback!(
                "segment {i}: zstd refuses a 2^{} window here: {e}",
                delta.window_log
            );
        }
        let mut written = target.begin(seg);
        let mut produced = 0u64;
        loop {
            let n = match fill(&mut decoder, &mut buf) {
                Ok(n) => n,
                Err(e) => fallback_read!(i, e),
            };
            if n == 0 {
                break;
            }
            if produced + n as u64 > seg.length {
                fallback!("segment {i} decodes to more than {} bytes", seg.length);
            }
            target
                .write_piece(
                    &mut written,
                    &buf[..n],
                    &mut scratch,
                    WriteMode::All,
                    &mut arm,
                )
                .map_err(fault)?;
            produced += n as u64;
            progress.advance(n as u64);
        }
        match target.finish(written) {
            Ok(()) => {}
            Err(Fault::Digest {
                algorithm, actual, ..
            }) => fallback!(
                "segment {i} failed its hash ({produced} bytes, {algorithm} {actual}, expected {})",
                match algorithm {
                    "BLAKE3" => seg.blake3.as_deref().unwrap_or_default(),
                    _ => seg.sha256.as_str(),
                }
            ),
            Err(f) => return Err(fault(f)),
        }
        // Durable before the journal says so.
        target.sync_data()?;
        segments_fetched += 1;
        journal.done.push(i);
        save_journal(&plan.journal, &journal)?;
        crate::failpoint::hit("delta-segment-written");
    }
    target.sync()?;
    Ok(Outcome::Applied {
        fetched,
        segments_fetched,
        segments_reused: reused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Compression, Segment};
    use crate::testutil::TempDir;
    use std::collections::BTreeMap;

    /// A read ended by the download window's close ends the delta (its
    /// journal kept); any other read error is the fallback's reason.
    #[test]
    fn only_a_closed_download_window_ends_a_delta_instead_of_its_fallback() {
        let closed = FetchError::OutsideWindow {
            location: "http://h/d".into(),
            at: 3,
            until: 0,
        };
        let e = unless_window_closed(closed.clone().into_io()).expect_err("ends the delta");
        assert_eq!(FetchError::from_io(&e), Some(&closed));
        let cut = FetchError::TooShort {
            location: "http://h/d".into(),
            got: 1,
            expected: 2,
            announced: false,
        };
        assert!(unless_window_closed(cut.into_io()).is_ok());
        assert!(unless_window_closed(io::Error::other("zstd: corrupted")).is_ok());
    }

    fn image_with_delta(window_log: u32, source_size: u64) -> Image {
        let h = "ab".repeat(32);
        let segment = Segment {
            offset: 0,
            length: 1 << 20,
            sha256: h.clone(),
            blake3: None,
            patch_offset: 0,
            patch_length: 10,
            patch_blake3: None,
            source: None,
        };
        let delta = Delta {
            url: "d.zst".into(),
            source_size,
            window_log,
            download_size: 10,
            segments: vec![segment],
        };
        Image {
            url: "r.zst".into(),
            size: 1 << 20,
            sha256: h.clone(),
            compression: Compression::Zstd,
            download_size: Some(100),
            download_sha256: Some(h.clone()),
            window_log: None,
            segments: Vec::new(),
            deltas: BTreeMap::from([(h, delta)]),
        }
    }

    #[test]
    fn a_journal_is_reused_only_by_the_delta_that_wrote_it() {
        let dir = TempDir::new("journal");
        let path = dir.join("delta-rootfs.journal");
        let image = image_with_delta(27, 1 << 20);
        let delta = image.deltas.values().next().expect("delta").clone();
        let id = identity(&delta);
        let journal = Journal {
            source_sha256: "s".into(),
            image_sha256: "i".into(),
            delta_sha256: id.clone(),
            done: vec![0, 1],
        };
        save_journal(&path, &journal).expect("save");
        assert_eq!(load_journal(&path, "s", "i", &id).done, vec![0, 1]);
        // The same source and image cut into other segments: not reused.
        let mut repacked = delta.clone();
        repacked.segments[0].length = 2 << 20;
        let other = identity(&repacked);
        assert_ne!(other, id);
        assert!(load_journal(&path, "s", "i", &other).done.is_empty());
        assert!(load_journal(&path, "s", "other image", &id).done.is_empty());
        // A journal over the cap is not read.
        let mut big = serde_json::to_vec(&journal).expect("json");
        big.resize(MAX_JOURNAL_BYTES as usize + 1, b' ');
        std::fs::write(&path, big).expect("big journal");
        assert!(load_journal(&path, "s", "i", &id).done.is_empty());
        // A journal of an older version, without the delta's identity.
        std::fs::write(
            &path,
            br#"{"source_sha256":"s","image_sha256":"i","done":[0]}"#,
        )
        .expect("old journal");
        assert!(load_journal(&path, "s", "i", &id).done.is_empty());
    }

    #[test]
    fn a_signed_frame_is_read_whole_within_zstds_bound_for_its_segment() {
        let seg = |patch_length: u64| Segment {
            offset: 0,
            length: 1000,
            sha256: "ab".repeat(32),
            blake3: None,
            patch_offset: 0,
            patch_length,
            patch_blake3: Some("cd".repeat(32)),
            source: None,
        };
        let bytes = vec![7u8; 2000];
        assert_eq!(
            signed_frame(&bytes[..], &seg(600)).expect("whole frame"),
            vec![7u8; 600]
        );
        let short = signed_frame(&bytes[..100], &seg(600)).expect_err("short");
        assert!(
            short.to_string().contains("after 100 of its 600 bytes"),
            "{short}"
        );
        // More than zstd makes of 1000 bytes: refused before a buffer of
        // that size is allocated (a signed size, but a nonsensical one).
        let bound = zstd::zstd_safe::compress_bound(1000) as u64;
        assert!(signed_frame(&bytes[..], &seg(bound)).is_ok());
        let huge = signed_frame(&bytes[..], &seg(u64::MAX)).expect_err("huge");
        assert!(
            huge.to_string().contains("larger than zstd ever makes"),
            "{huge}"
        );
        assert!(signed_frame(&bytes[..], &seg(bound + 1)).is_err());
    }

    #[test]
    fn a_delta_wider_than_the_host_window_is_refused_before_hashing() {
        let image = image_with_delta(31, 1 << 30);
        let mut cache = Vec::new();
        // The device does not exist: hashing it would fail differently.
        let missing = Path::new("/nonexistent/booted-slot");
        let e = choose(&image, missing, 2 << 30, None, &mut cache, "boot", 30)
            .expect_err("a 32-bit host cannot decode 2^31");
        assert!(e.contains("need a 2^31-byte zstd window"), "{e}");
        assert!(e.contains("at most 2^30"), "{e}");
        assert!(cache.is_empty());
        // The same delta on a 64-bit host gets as far as hashing the slot.
        let e = choose(&image, missing, 2 << 30, None, &mut cache, "boot", 31)
            .expect_err("no such device");
        assert!(e.contains("cannot hash the booted slot"), "{e}");
    }
}
