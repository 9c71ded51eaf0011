//! Segmented full payloads: independent zstd frames, one per image segment
//! (what `pack` writes by default), decoded on every core at once.
//!
//! ```text
//!                 ┌─► worker ─┐   check the frame's signed BLAKE3, decode it
//! reader ─ jobs ──┼─► worker ─┼─► in one piece into a segment buffer, write
//! frames          └─► worker ─┘   it at its offset, read it back into the
//!                                 same buffer, hash (BLAKE3 or SHA-256),
//!                                 check the signed digest
//! ```
//!
//! - The reader cuts the payload into frames by the signed segment table
//!   (frames back to back: [`plan`] takes only such payloads). When every
//!   frame has a signed BLAKE3 (`patch_blake3`, what `pack` writes), a
//!   worker checks its frame before decoding it: the decoder sees signed
//!   bytes only, and the frames together are the payload, so it is not
//!   hashed again. Otherwise (releases packed before frame digests) the
//!   reader hashes the payload as it arrives (the signed `download_sha256`,
//!   checked at the end).
//! - A worker per core and two more (fewer when the buffers are large, [`pipeline`])
//!   decodes a frame into its own segment buffer in one call (no window
//!   buffer, no copy out of it) and writes and verifies it through the
//!   [`SlotWriter`]: one write and one read-back of the whole segment
//!   ([`SlotWriter::write_whole`]), into the buffer it was written from,
//!   so what the medium returned is hashed without a second buffer or a
//!   byte-by-byte compare. The frame goes back to the reader once decoded
//!   (so the reader fills it while the segment is written and read back:
//!   over HTTP that overlap is what keeps the cores busy). Only when the
//!   read-back's digest does not match is the frame read once more from
//!   the payload's source ([`FrameAgain`]), checked against its signed
//!   BLAKE3 and decoded, once the pipeline stopped and its other buffers
//!   are freed ([`explain_first`]), to tell a medium that returned other bytes (named
//!   with the first offset that differs) from a payload that decodes to
//!   other bytes than were signed. Neither is blamed without proof: a
//!   frame that cannot be had again (a cut link, a download window that
//!   closed) ends the run as that failure of the source, which says
//!   nothing about the release, and the next run writes the segment
//!   again, as does a frame the source now serves otherwise than signed
//!   (it matched when first read: the source changed); only a frame that
//!   is not signed (nothing fetched could be checked) blames the payload
//!   ([`medium_or_payload`] says why). A segment
//!   whose signed digest is that of zeros (free space in the image) is not
//!   decoded: a thread of its own ([`zero_all`]) has the device zero each
//!   run of such segments in one request and reads them back as zeros
//!   ([`SlotWriter::zero_segments`]) from the start, beside the workers,
//!   which only check their frames. Segments finish in any order; each
//!   lands at its own offset and counts only once its read-back matched
//!   its signed digest. (`--write=changed` compares piece by piece,
//!   [`SlotWriter::write_piece`], with a 1 MiB buffer per worker.)
//! - Memory is bounded by the workers' segment buffers (on huge pages,
//!   [`AlignedBuf`]) and the frames held (one per core being decoded and
//!   one the reader fills meanwhile), together within a budget
//!   ([`pipeline`]), whatever the image size.
//! - The first byte of the slot changes only after the calling thread ran
//!   `before_write` (the workers wait for it at a gate), and the first fault
//!   stops the reader and every worker: a bad segment mid-way leaves the
//!   rest unwritten and the caller keeps the target marked bad.
//!
//! A payload this path does not take (one frame, a segment larger than
//! [`MAX_SEGMENT`], frames not back to back, or a single worker's buffers
//! beyond the budget) goes through the one-stream pipeline, which decodes
//! concatenated frames as well.

use super::writer::{accept, round_up, AlignedBuf, Fault, SlotWriter, ZeroDigests, READBACK};
use super::{fill, hex, BeforeWrite, FrameAgain, InstallError, WriteMode};
use crate::manifest::{Compression, Image, Segment};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Condvar, Mutex};

/// The largest segment decoded in one piece: a worker holds one such
/// buffer. Larger segments (`pack --segment-size` above it) take the
/// one-stream path.
pub(crate) const MAX_SEGMENT: u64 = 16 << 20;
/// The buffers of a segmented install together: the workers' decoded
/// segments and the frames held. The peak-RSS target (32 MiB) less 5 MiB
/// for the rest of an install: 3.3 MiB with one worker on the bench's
/// 1 GiB, up to 4.6 MiB measured with four workers, a 9 GiB image's
/// manifest (near the 1 MiB cap) and an HTTP client (review 11).
const BUFFER_BUDGET: u64 = 27 << 20;
/// Reads the medium once more at an offset and compares what it returns
/// with the decoded bytes given ([`read_piece_again`]).
type ReadAgain<'a> = &'a mut dyn FnMut(u64, &[u8]) -> Result<(), Fault>;

/// The pieces a read-back that missed its digest is fingerprinted in, and
/// the one read again from the medium ([`medium_or_payload`]).
const TELL_PIECE: usize = 64 << 10;
/// More threads than this decode nothing faster (and bound the search in
/// [`pipeline`] on any core count).
const MAX_WORKERS: usize = 64;

/// The largest segment of `image` when the parallel path can take its
/// payload: zstd segments whose frames lie back to back from the payload's
/// first byte to its last, each at most [`MAX_SEGMENT`] and no larger than
/// zstd's bound for its segment (so a frame buffer is bounded too), and
/// small enough that a single worker fits [`BUFFER_BUDGET`]
/// ([`one_worker_fits`]).
pub(crate) fn plan(image: &Image) -> Option<u64> {
    if image.segments.is_empty() || image.compression != Compression::Zstd {
        return None;
    }
    let mut next = 0u64;
    let mut largest = 0u64;
    for s in &image.segments {
        let bound = zstd::zstd_safe::compress_bound(usize::try_from(s.length).ok()?) as u64;
        if s.patch_offset != next || s.length > MAX_SEGMENT || s.patch_length > bound {
            return None;
        }
        next = next.checked_add(s.patch_length)?;
        largest = largest.max(s.length);
    }
    (next == image.download_size() && one_worker_fits(largest, largest_frame(image)))
        .then_some(largest)
}

/// Whether the fewest buffers the parallel path runs with fit
/// [`BUFFER_BUDGET`]: one worker's segment and compare piece (counted in
/// either write mode, so that whether a payload takes this path, and so
/// resumes from the slot, does not depend on the mode; it also covers the
/// piece [`medium_or_payload`] reads again) and one frame. Segments of
/// `pack --segment-size` 13 MiB and more of data that does not compress
/// do not (16 MiB with frames over 10 MiB): they take the one-stream path,
/// whose memory is its window's (a 12 MiB segment with two frames of it
/// peaked at 39 MiB before, review 11).
fn one_worker_fits(segment: u64, frame: u64) -> bool {
    fits_budget(1, segment.saturating_add(READBACK as u64), 1, frame)
}

/// Whether `workers` buffers of `per_worker` bytes and `frames` frames of
/// `frame` bytes fit [`BUFFER_BUDGET`]: the one sum [`plan`] and
/// [`pipeline`] check.
fn fits_budget(workers: usize, per_worker: u64, frames: usize, frame: u64) -> bool {
    (workers as u64)
        .saturating_mul(per_worker)
        .saturating_add((frames as u64).saturating_mul(frame))
        <= BUFFER_BUDGET
}

/// How many segments are decoded, written and read back at once
/// (`workers`), and how many frames are held (`frames`: being decoded, or
/// read ahead for a worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pipeline {
    pub workers: usize,
    pub frames: usize,
}

/// The pipeline for `cores`: two workers more than the cores and a frame
/// per core and one more, as many as [`BUFFER_BUDGET`] holds of a
/// worker's buffers (the largest `segment`, and in [`WriteMode::Changed`]
/// a [`READBACK`] piece the medium's bytes are compared in) and of frames
/// (the largest `frame` the signed table lists), at least one worker
/// (which [`plan`] made sure fits).
///
/// The two more keep the cores decoding while workers wait on the medium
/// (a segment's write and read-back take as long as its decoding on the
/// bench's loop device): with a worker per core a 2-core host sat idle a
/// quarter of an install, with one more still about a sixth, with two
/// more an install took 3% less time (bench/README.md). A frame is held
/// only while it is decoded, and no more than the cores decode at once:
/// frames for the cores and one more to read ahead kept that gain (601
/// against 592 ms with a frame per worker) for a quarter less memory. A
/// single worker keeps two frames (the next is read while it decodes)
/// where they fit, else one (the reader waits for the worker).
pub(crate) fn pipeline(cores: usize, segment: u64, frame: u64, mode: WriteMode) -> Pipeline {
    let per_worker = match mode {
        WriteMode::All => segment,
        WriteMode::Changed => segment.saturating_add(READBACK as u64),
    };
    let frames_for = |workers: usize| {
        workers
            .min(cores.saturating_add(1))
            .max(2)
            .min(workers.saturating_add(1))
    };
    let most = cores.saturating_add(2).clamp(1, MAX_WORKERS);
    // The most workers that fit with their frames; a single worker with a
    // single frame last (what `plan` admits at its edge).
    let (workers, frames) = (1..=most)
        .rev()
        .map(|w| (w, frames_for(w)))
        .chain([(1, 1)])
        .find(|&(w, f)| fits_budget(w, per_worker, f, frame))
        .unwrap_or((1, 1));
    Pipeline { workers, frames }
}

/// The largest frame of `image`'s segments (what a frame buffer grows to).
pub(crate) fn largest_frame(image: &Image) -> u64 {
    image
        .segments
        .iter()
        .map(|s| s.patch_length)
        .max()
        .unwrap_or(0)
}

/// Test hooks: called by a worker with a segment's index before it decodes
/// it, and after it counted as written.
#[derive(Default)]
pub(crate) struct Hooks<'h> {
    pub before_decode: Option<&'h (dyn Fn(usize) + Sync)>,
    pub after_segment: Option<&'h (dyn Fn(usize) + Sync)>,
}

/// Where the workers wait until `before_write` ran on the calling thread.
struct Gate {
    state: Mutex<GateState>,
    opened: Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GateState {
    Closed,
    Asked,
    Open,
    Failed,
}

impl Gate {
    /// Returns once the slot may be written: asks the calling thread the
    /// first time, waits while it decides.
    fn pass(&self, events: &Sender<Event>) -> Result<(), Fault> {
        let Ok(mut state) = self.state.lock() else {
            return Err(Fault::Stopped);
        };
        loop {
            match *state {
                GateState::Open => return Ok(()),
                GateState::Failed => return Err(Fault::Stopped),
                GateState::Closed => {
                    *state = GateState::Asked;
                    if events.send(Event::Arm).is_err() {
                        return Err(Fault::Stopped);
                    }
                }
                GateState::Asked => {}
            }
            state = match self.opened.wait(state) {
                Ok(s) => s,
                Err(_) => return Err(Fault::Stopped),
            };
        }
    }

    fn decide(&self, open: bool) {
        if let Ok(mut state) = self.state.lock() {
            *state = if open {
                GateState::Open
            } else {
                GateState::Failed
            };
        }
        self.opened.notify_all();
    }
}

/// What workers tell the calling thread.
enum Event {
    /// Run `before_write` and open the gate.
    Arm,
    /// A segment of `bytes` bytes counts as written.
    Done(u64),
}

/// A frame of the payload for segment `index`, in `buf[..len]`.
struct Job {
    index: usize,
    buf: Vec<u8>,
    len: usize,
}

/// Why the reader stopped.
enum ReadStop {
    Source(io::Error),
    Payload(String),
    /// A worker stopped the install.
    Stopped,
}

/// Reader: the payload's frames in order. Returns the payload's length and,
/// unless every frame has its own signed digest (checked by the workers),
/// its SHA-256.
fn read_frames(
    mut payload: impl Read,
    segments: &[Segment],
    held: usize,
    jobs: SyncSender<Job>,
    pool: Receiver<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<(u64, Option<String>), ReadStop> {
    // The frames of the `held` segments are not in `payload` (it starts
    // after them); only signed frames resume so (`super::resumes_from_slot`),
    // there is no payload hash to begin in the middle.
    let mut hasher = (!frames_signed(segments)).then(Sha256::new);
    if held > 0 && hasher.is_some() {
        return Err(ReadStop::Payload(
            "resumes after held segments, but its frames are not signed one by one".into(),
        ));
    }
    let mut count: u64 = segments.iter().take(held).map(|s| s.patch_length).sum();
    for (index, seg) in segments.iter().enumerate().skip(held) {
        if stop.load(Ordering::Relaxed) {
            return Err(ReadStop::Stopped);
        }
        let mut buf = pool.recv().map_err(|_| ReadStop::Stopped)?;
        // `plan` bounded patch_length by the segment's zstd bound. A buffer
        // only grows (zeroing it again for every frame cost more than its
        // bytes).
        let len = seg.patch_length as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let n = fill(&mut payload, &mut buf[..len]).map_err(ReadStop::Source)?;
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        count += n as u64;
        if n < len {
            return Err(ReadStop::Payload(format!(
                "ends after {count} bytes, in segment {index}"
            )));
        }
        jobs.send(Job { index, buf, len })
            .map_err(|_| ReadStop::Stopped)?;
    }
    // A reader that is not bounded by the declared size (the fetch layer's
    // is) must not hold more.
    let mut one = [0u8; 1];
    if fill(&mut payload, &mut one).map_err(ReadStop::Source)? > 0 {
        return Err(ReadStop::Payload(format!(
            "holds more than the {count} bytes its segments declare"
        )));
    }
    Ok((count, hasher.map(|h| hex(&h.finalize()))))
}

/// Every frame carries a signed BLAKE3: the workers check each before
/// decoding it, and the payload needs no hash of its own.
pub(super) fn frames_signed(segments: &[Segment]) -> bool {
    segments.iter().all(|s| s.patch_blake3.is_some())
}

/// The frame of segment `index` (`frame`) hashes to its signed BLAKE3, when
/// the manifest gives one.
fn check_frame(index: usize, seg: &Segment, frame: &[u8]) -> Result<(), FrameFault> {
    seg.check_frame(frame).map_err(|actual| FrameFault {
        index,
        patch: seg.patch_offset..seg.patch_offset.saturating_add(seg.patch_length),
        expected: seg.patch_blake3.clone().unwrap_or_default(),
        actual,
    })
}

/// A frame that does not hash to its signed BLAKE3.
#[derive(Debug)]
struct FrameFault {
    index: usize,
    patch: std::ops::Range<u64>,
    expected: String,
    actual: String,
}

/// What a worker found wrong with segment `index`.
struct SegFault {
    index: usize,
    fault: Fault,
    /// A payload problem before anything of it was written.
    before: Option<Before>,
    /// The segment as read back, when it did not hash to its signed
    /// digest and nothing compared it with what was written (`fault` is a
    /// [`Fault::Digest`] without `medium_checked`): the worker's own
    /// buffer, kept for [`explain_first`], which tells why once every
    /// other buffer of the pipeline is freed.
    read_back: Option<AlignedBuf>,
}

/// A segment's payload problem found before any of it was written.
enum Before {
    /// Its frame does not hash to its signed BLAKE3.
    Frame(Box<FrameFault>),
    /// It does not decode, or decodes to another length.
    Decode(String),
}

struct Shared<'a> {
    image: &'a Image,
    writer: &'a SlotWriter,
    mode: WriteMode,
    /// Per segment: signed as all zeros ([`ZeroDigests`]).
    zero: Vec<bool>,
    /// What zero segments are compared with on read-back.
    zeros: AlignedBuf,
    jobs: Mutex<Receiver<Job>>,
    frames_back: SyncSender<Vec<u8>>,
    gate: Gate,
    stop: AtomicBool,
    hooks: &'a Hooks<'a>,
}

/// Worker: segments in, verified segments on the medium out. After a fault
/// it keeps taking jobs (and handing their frames back) until the reader
/// stops, so nobody waits on it.
fn work(sh: &Shared, largest: usize, events: Sender<Event>) -> Option<SegFault> {
    let mut fault = None;
    // The segment, decoded, written from here and read back into it.
    let mut out = AlignedBuf::new(round_up(largest));
    // Only `WriteMode::Changed` compares piece by piece.
    let mut scratch = None;
    let mut dctx = zstd::zstd_safe::DCtx::create();
    loop {
        let job = match sh.jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => break,
        };
        let Ok(Job {
            index,
            buf,
            len: frame,
        }) = job
        else {
            break;
        };
        if sh.stop.load(Ordering::Relaxed) {
            let _ = sh.frames_back.send(buf);
            continue;
        }
        if let Some(hook) = sh.hooks.before_decode {
            hook(index);
        }
        let seg = &sh.image.segments[index];
        let len = seg.length as usize;
        // A segment signed as all zeros is not decoded: `zero_all` writes
        // it; here only its frame is checked.
        let decoded = check_frame(index, seg, &buf[..frame])
            .map(|()| (!sh.zero[index]).then(|| dctx.decompress(&mut out[..len], &buf[..frame])));
        // Decoded (or found bad): the reader fills the frame again while
        // this segment is written and read back.
        let _ = sh.frames_back.send(buf);
        let result = match decoded {
            Err(frame_fault) => Err((Fault::Stopped, Some(Before::Frame(Box::new(frame_fault))))),
            Ok(None) => continue,
            Ok(Some(Ok(n))) if n == len && sh.mode == WriteMode::All => sh
                .writer
                .write_whole(seg, &mut out, &mut || sh.gate.pass(&events))
                .map_err(|f| (f, None)),
            Ok(Some(Ok(n))) if n == len => {
                let scratch = scratch.get_or_insert_with(|| AlignedBuf::new(READBACK));
                write_segment(sh, seg, &out[..len], scratch, &events)
            }
            Ok(Some(Ok(n))) => Err((
                Fault::Stopped,
                Some(Before::Decode(format!(
                    "segment {index} decodes to {n} bytes, the manifest declares {len}"
                ))),
            )),
            Ok(Some(Err(code))) => Err((
                Fault::Stopped,
                Some(Before::Decode(format!(
                    "segment {index} (bytes {}..{}) does not decode: zstd: {}",
                    seg.offset,
                    seg.offset + seg.length,
                    zstd::zstd_safe::get_error_name(code)
                ))),
            )),
        };
        match result {
            Ok(()) => counted(sh, index, seg, &events),
            Err((f, before)) => {
                sh.stop.store(true, Ordering::Relaxed);
                if fault.is_none() && !matches!((&f, &before), (Fault::Stopped, None)) {
                    // No job is decoded after a fault (`stop`): the
                    // buffer is not needed here again.
                    let read_back = matches!(
                        f,
                        Fault::Digest {
                            medium_checked: false,
                            ..
                        }
                    )
                    .then(|| std::mem::replace(&mut out, AlignedBuf::new(0)));
                    fault = Some(SegFault {
                        index,
                        fault: f,
                        before,
                        read_back,
                    });
                }
            }
        }
    }
    fault
}

/// Segment `index` was read back and matched its signed digest: it counts
/// as written.
fn counted(sh: &Shared, index: usize, seg: &Segment, events: &Sender<Event>) {
    crate::failpoint::hit("segment-written");
    if let Some(hook) = sh.hooks.after_segment {
        hook(index);
    }
    let _ = events.send(Event::Done(seg.length));
}

/// The read-back piece of [`zero_all`]: a quarter of a worker's, since the
/// zeroer's buffer comes on top of theirs (the peak RSS target) and a
/// read of zeros from the medium is cheap however it is cut.
const ZERO_READBACK: usize = READBACK / 4;

/// The runs of segments signed as all zeros (`zero`, per segment) from
/// `from` on: each a range of back-to-back segment indices, in order.
fn zero_runs(zero: &[bool], from: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, _) in zero.iter().enumerate().skip(from).filter(|(_, &z)| z) {
        match runs.last_mut() {
            Some(run) if run.end == index => run.end += 1,
            _ => runs.push(index..index + 1),
        }
    }
    runs
}

/// Zeroer: every run of segments signed as all zeros, from `held` on, in
/// order, zeroed by the device in one request and read back as zeros
/// ([`SlotWriter::zero_segments`]) beside the workers, which only check
/// such a segment's frame. Such a segment needs nothing of the payload but
/// its place, so it does not wait for the frames before it: free space
/// lies at the image's end, and zeroing it there, one segment at a time
/// behind the written ones, kept both cores idle for the install's last
/// tenth on a loop device (bench/README.md). After a worker's fault it
/// stops before its next segment (a run of free space can be gigabytes,
/// and the fault is told only once every thread has ended).
fn zero_all(sh: &Shared, held: usize, events: Sender<Event>) -> Option<SegFault> {
    let mut scratch = None;
    for run in zero_runs(&sh.zero, held) {
        if sh.stop.load(Ordering::Relaxed) {
            return None;
        }
        let scratch = scratch.get_or_insert_with(|| AlignedBuf::new(ZERO_READBACK));
        let segments = &sh.image.segments[run.clone()];
        let zeroed = sh.writer.zero_segments(
            segments,
            &sh.zeros,
            scratch,
            sh.mode,
            &mut || sh.gate.pass(&events),
            &mut |i| counted(sh, run.start + i, &segments[i], &events),
            &|| sh.stop.load(Ordering::Relaxed),
        );
        if let Err((i, fault)) = zeroed {
            sh.stop.store(true, Ordering::Relaxed);
            return (!matches!(fault, Fault::Stopped)).then_some(SegFault {
                index: run.start + i,
                fault,
                before: None,
                read_back: None,
            });
        }
    }
    None
}

/// The first fault by place in the image (`faults` sorted by index), with
/// why its read-back did not match told ([`medium_or_payload`], the
/// medium's pieces read again with `read_again`) when it carries one. The
/// others are dropped first, with their buffers: the frame read again
/// comes on top of the one read-back kept, not of the whole pipeline's
/// buffers (a read-back miss peaked at 39 MiB when a worker told it beside
/// the others, review 11).
fn explain_first(
    faults: Vec<SegFault>,
    image: &Image,
    again: FrameAgain,
    read_again: ReadAgain,
) -> Option<SegFault> {
    let mut first = faults.into_iter().next()?;
    if let (Some(mut read_back), Some(seg)) =
        (first.read_back.take(), image.segments.get(first.index))
    {
        let len = usize::try_from(seg.length).unwrap_or(usize::MAX);
        if let Some(read_back) = read_back.get_mut(..len) {
            first.fault =
                medium_or_payload(first.index, seg, read_back, first.fault, again, read_again);
        }
    }
    Some(first)
}

/// The medium read once more at `at` (a piece of a segment whose
/// read-back missed its digest, [`medium_or_payload`]) and compared with
/// `decoded`: equal, or the medium's fault at the first byte that differs.
fn read_piece_again(
    writer: &SlotWriter,
    piece: &mut AlignedBuf,
    at: u64,
    decoded: &[u8],
) -> Result<(), Fault> {
    let n = decoded.len().min(piece.len());
    writer.read_at(piece, n, at).map_err(Fault::Io)?;
    accept(&mut piece[..n], &decoded[..n], at)
}

/// Segment `index` was read back as `read_back`, which does not hash to
/// its signed digest (`digest`, the fault). Its frame, read once more from
/// the payload's source, checked against its signed BLAKE3 and decoded,
/// tells why: bytes that differ from the decoded ones are the medium's
/// fault, at the first that differs ([`Fault::Medium`]); the same bytes
/// mean the payload decodes to other bytes than were signed (`digest`).
///
/// The frame is decoded into `read_back` itself, once each
/// [`TELL_PIECE`] of what the medium returned is fingerprinted (BLAKE3):
/// the first piece whose decoded bytes hash otherwise is read once more
/// from the medium (`read_again`, which compares it with the decoded
/// bytes), to name the first byte that differs. A medium that returns the
/// right bytes the second time is still at fault, at that piece's first
/// byte. So telling a segment needs its frame and a piece on top of the
/// worker's own buffer, which [`plan`]'s budget counts.
///
/// When there is no proof either way, who is blamed depends on why:
/// - The frame cannot be had again (`again` fails: a cut connection, a
///   503 after the transport's retries, a download window that closed):
///   [`Fault::Source`], the run ends as that failure of the source (a
///   window stop as any other, `waiting_for_download_window`; a transport
///   failure with its own kind, not counted against the release). A
///   failure to fetch says nothing about the release, and blaming it
///   would let a flaky link or a closing window pause a healthy rollout.
///   The next run writes the segment again (the segments before it are
///   held in the slot) and, if the read-back fails again, asks again.
/// - The frame is not signed (releases packed before frame digests): it
///   is not fetched, since nothing fetched could be checked, and the
///   payload is blamed (`digest`). The same would happen on every run, so
///   waiting proves nothing either; of the two wrong answers the safe
///   one for a fleet is to blame the release (a device's fault blamed on
///   a release pauses a rollout an operator can resume; the other way
///   round lets a bad release go on).
/// - The frame was had again but does not match its signed BLAKE3: it
///   did when first read (a worker checks every frame before decoding
///   it), so the source changed during the install (a local file written
///   through a mapping, which moves none of its times; a server or proxy
///   that serves other bytes under the same validator): [`Fault::Source`]
///   too, blaming neither (`source_changed`). Should the source serve
///   those bytes from now on, the next run's download meets them as any
///   download does (`FrameMismatch`, the payload's fault) (review 14).
/// - The frame matches but (impossible for the same signed bytes) does
///   not decode to the segment's length: `digest`, unchecked.
fn medium_or_payload(
    index: usize,
    seg: &Segment,
    read_back: &mut [u8],
    digest: Fault,
    again: FrameAgain,
    read_again: ReadAgain,
) -> Fault {
    if seg.patch_blake3.is_none() {
        return digest;
    }
    let frame = match again(seg.patch_offset, seg.patch_length) {
        Ok(frame) => match check_frame(index, seg, &frame) {
            Ok(()) => frame,
            Err(changed) => return Fault::Source(source_changed(&changed)),
        },
        Err(source) => return Fault::Source(source),
    };
    // What the medium returned, piece by piece, before the decoder
    // overwrites it: no second segment buffer (review 12).
    let returned: Vec<blake3::Hash> = read_back.chunks(TELL_PIECE).map(blake3::hash).collect();
    let mut dctx = zstd::zstd_safe::DCtx::create();
    match dctx.decompress(read_back, &frame) {
        Ok(n) if n == read_back.len() => {}
        // It decoded to the right length before: the same signed frame
        // cannot do otherwise now.
        _ => return digest,
    }
    let differs = read_back
        .chunks(TELL_PIECE)
        .zip(&returned)
        .position(|(decoded, returned)| blake3::hash(decoded) != *returned);
    let Some(piece) = differs else {
        return digest.medium_checked(true);
    };
    let start = piece * TELL_PIECE;
    let decoded = &read_back[start..read_back.len().min(start + TELL_PIECE)];
    let at = seg.offset + start as u64;
    match read_again(at, decoded) {
        // The medium returns other bytes again: the first that differs.
        Err(fault) => fault,
        // The right ones this time: the first read differed in this piece.
        Ok(()) => Fault::Medium { offset: at },
    }
}

/// The error for a frame that matched its signed BLAKE3 when first read
/// and no longer does when read again ([`medium_or_payload`]).
fn source_changed(frame: &FrameFault) -> io::Error {
    io::Error::other(format!(
        "the frame of segment {} (payload bytes {}..{}) read again has BLAKE3 {}, the signed manifest says {}, which it matched when first read: the payload's source changed during the install; nothing is blamed, and the next run writes the segment again",
        frame.index, frame.patch.start, frame.patch.end, frame.actual, frame.expected
    ))
}

fn write_segment(
    sh: &Shared,
    seg: &Segment,
    data: &[u8],
    scratch: &mut AlignedBuf,
    events: &Sender<Event>,
) -> Result<(), (Fault, Option<Before>)> {
    let mut w = sh.writer.begin(seg);
    sh.writer
        .write_piece(&mut w, data, scratch, sh.mode, &mut || sh.gate.pass(events))
        .map_err(|f| (f, None))?;
    sh.writer.finish(w).map_err(|f| (f, None))
}

/// Write the segmented payload into the slot with `pipeline`'s workers and frames (see the
/// module docs), from segment `held` on (the ones before it the slot holds,
/// and `payload` starts after their frames). Returns the payload's length;
/// every segment of the image was read back and matched its signed digest.
#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    what: &str,
    payload: impl Read + Send,
    held: usize,
    image: &Image,
    writer: &SlotWriter,
    largest: u64,
    pipeline: Pipeline,
    mode: WriteMode,
    progress: &mut Progress,
    before_write: BeforeWrite,
    again: FrameAgain,
    hooks: &Hooks,
) -> Result<u64, InstallError> {
    let Pipeline {
        workers,
        frames: frame_buffers,
    } = pipeline;
    let (jobs_tx, jobs_rx) = sync_channel::<Job>(workers);
    let (frames_back, frames) = sync_channel::<Vec<u8>>(frame_buffers);
    for _ in 0..frame_buffers {
        let _ = frames_back.send(Vec::new());
    }
    let mut zero_digests = ZeroDigests::default();
    let zero = image
        .segments
        .iter()
        .map(|seg| zero_digests.is_zero(seg))
        .collect();
    let sh = Shared {
        image,
        writer,
        mode,
        zero,
        zeros: AlignedBuf::new(READBACK),
        jobs: Mutex::new(jobs_rx),
        frames_back,
        gate: Gate {
            state: Mutex::new(GateState::Closed),
            opened: Condvar::new(),
        },
        stop: AtomicBool::new(false),
        hooks,
    };
    let largest = usize::try_from(largest).unwrap_or(usize::MAX);
    let mut arm_error = None;
    let (read, faults) = std::thread::scope(|scope| {
        let sh = &sh;
        let reader = scope
            .spawn(move || read_frames(payload, &image.segments, held, jobs_tx, frames, &sh.stop));
        let (events_tx, events) = channel::<Event>();
        let mut handles: Vec<_> = (0..workers)
            .map(|_| {
                let events = events_tx.clone();
                scope.spawn(move || work(sh, largest, events))
            })
            .collect();
        if sh.zero.iter().skip(held).any(|&zero| zero) {
            let events = events_tx.clone();
            handles.push(scope.spawn(move || zero_all(sh, held, events)));
        }
        drop(events_tx);
        // The calling thread: `before_write` and the progress, until every
        // worker is done.
        for event in events.iter() {
            match event {
                Event::Arm => {
                    let armed = before_write();
                    sh.gate.decide(armed.is_ok());
                    if let Err(e) = armed {
                        sh.stop.store(true, Ordering::Relaxed);
                        arm_error = Some(e);
                    }
                }
                Event::Done(bytes) => progress.advance(bytes),
            }
        }
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(ReadStop::Payload("payload reader panicked".into())));
        let mut faults: Vec<SegFault> = handles
            .into_iter()
            .filter_map(|h| {
                h.join().unwrap_or_else(|_| {
                    Some(SegFault {
                        index: usize::MAX,
                        fault: Fault::Io(io::Error::other("segment worker panicked")),
                        before: None,
                        read_back: None,
                    })
                })
            })
            .collect();
        faults.sort_by_key(|f| f.index);
        (read, faults)
    });
    // Every thread has ended: the workers' buffers are freed, and the
    // frames with the reader's end of their channel (the other end here).
    drop(sh);
    let first = match arm_error {
        None => {
            let mut piece = AlignedBuf::new(TELL_PIECE);
            explain_first(faults, image, again, &mut |at, decoded| {
                read_piece_again(writer, &mut piece, at, decoded)
            })
        }
        Some(_) => None,
    };
    outcome(what, image, writer.path(), arm_error, first, read)
}

/// What a segmented write came to, from what its threads reported, in the
/// order that tells: `before_write`'s failure (nothing was written), else
/// the first bad segment by place in the image (`first`, [`explain_first`]),
/// else why the payload reader stopped, else the payload's hash.
/// Returns the payload's length.
fn outcome(
    what: &str,
    image: &Image,
    device: &Path,
    arm_error: Option<crate::error::Error>,
    first: Option<SegFault>,
    read: Result<(u64, Option<String>), ReadStop>,
) -> Result<u64, InstallError> {
    if let Some(e) = arm_error {
        return Err(InstallError::BeforeWrite(Box::new(e)));
    }
    if let Some(f) = first {
        return Err(match f.before {
            Some(Before::Decode(reason)) => InstallError::Payload {
                what: what.to_string(),
                reason,
            },
            Some(Before::Frame(frame)) => {
                let FrameFault {
                    index,
                    patch,
                    expected,
                    actual,
                } = *frame;
                InstallError::FrameMismatch {
                    what: what.to_string(),
                    index,
                    patch,
                    expected,
                    actual,
                }
            }
            None => super::fault_error(f.fault, device, what),
        });
    }
    let (payload_bytes, payload_sha) = read.map_err(|stop| match stop {
        ReadStop::Source(error) => InstallError::Source {
            what: what.to_string(),
            error,
        },
        ReadStop::Payload(reason) => InstallError::Payload {
            what: what.to_string(),
            reason,
        },
        ReadStop::Stopped => InstallError::Payload {
            what: what.to_string(),
            reason: "stopped".into(),
        },
    })?;
    if let Some(actual) = payload_sha {
        super::check_payload_sha256(what, image, actual)?;
    }
    Ok(payload_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::writer::compare;

    fn image(download_sha256: &str) -> Image {
        Image {
            url: "x".into(),
            size: 4,
            sha256: "i".into(),
            compression: Compression::Zstd,
            download_size: Some(4),
            download_sha256: Some(download_sha256.into()),
            window_log: None,
            segments: Vec::new(),
            deltas: Default::default(),
        }
    }

    fn bad_segment(index: usize, decode: Option<&str>) -> SegFault {
        SegFault {
            index,
            fault: Fault::Medium { offset: 7 },
            before: decode.map(|d| Before::Decode(d.into())),
            read_back: None,
        }
    }

    /// `outcome` of faults sorted by index, as `write` gives it.
    fn outcome_of(
        arm_error: Option<crate::error::Error>,
        faults: Vec<SegFault>,
        read: Result<(u64, Option<String>), ReadStop>,
    ) -> Result<u64, InstallError> {
        let image = image("h");
        let never = |_: u64, _: u64| -> io::Result<Vec<u8>> { unreachable!("no read-back kept") };
        let first = explain_first(faults, &image, &never, &mut |_, _| {
            unreachable!("no read-back kept")
        });
        outcome(
            "rootfs payload",
            &image,
            Path::new("/dev/a"),
            arm_error,
            first,
            read,
        )
    }

    #[test]
    fn zero_runs_are_the_back_to_back_zero_segments_from_the_first_not_held() {
        let zero = [true, true, false, true, true, true, false, false, true];
        assert_eq!(zero_runs(&zero, 0), [0..2, 3..6, 8..9]);
        // A run the held segments cut starts at the first not held.
        assert_eq!(zero_runs(&zero, 1), [1..2, 3..6, 8..9]);
        assert_eq!(zero_runs(&zero, 4), [4..6, 8..9]);
        assert_eq!(zero_runs(&zero, 9), []);
        assert_eq!(zero_runs(&[false, false], 0), []);
        assert_eq!(zero_runs(&[true; 3], 0), vec![0..3]);
    }

    #[test]
    fn outcome_tells_the_before_write_failure_first() {
        let e = outcome_of(
            Some(crate::error::Error::Usage("marking bad failed".into())),
            vec![bad_segment(0, Some("does not decode"))],
            Err(ReadStop::Stopped),
        );
        assert!(matches!(e, Err(InstallError::BeforeWrite(_))), "{e:?}");
    }

    #[test]
    fn outcome_tells_the_first_bad_segment_before_the_reader() {
        let e = outcome_of(
            None,
            vec![
                bad_segment(1, Some("does not decode")),
                bad_segment(2, None),
            ],
            Err(ReadStop::Stopped),
        );
        assert!(
            matches!(&e, Err(InstallError::Payload { reason, .. }) if reason == "does not decode"),
            "{e:?}"
        );
        let e = outcome_of(None, vec![bad_segment(2, None)], Ok((4, Some("h".into()))));
        assert!(
            matches!(&e, Err(InstallError::Medium { path, offset: 7 }) if path == Path::new("/dev/a")),
            "{e:?}"
        );
    }

    #[test]
    fn outcome_tells_why_the_reader_stopped() {
        let e = outcome_of(None, vec![], Err(ReadStop::Source(io::Error::other("cut"))));
        assert!(matches!(e, Err(InstallError::Source { .. })), "{e:?}");
        let e = outcome_of(None, vec![], Err(ReadStop::Payload("short".into())));
        assert!(
            matches!(&e, Err(InstallError::Payload { reason, .. }) if reason == "short"),
            "{e:?}"
        );
        let e = outcome_of(None, vec![], Err(ReadStop::Stopped));
        assert!(
            matches!(&e, Err(InstallError::Payload { reason, .. }) if reason == "stopped"),
            "{e:?}"
        );
    }

    #[test]
    fn outcome_checks_the_payload_hash_last() {
        let e = outcome_of(None, vec![], Ok((4, Some("other".into()))));
        assert!(
            matches!(&e, Err(InstallError::Mismatch { expected, actual, .. }) if expected == "h" && actual == "other"),
            "{e:?}"
        );
        assert_eq!(
            outcome_of(None, vec![], Ok((4, Some("h".into())))).ok(),
            Some(4)
        );
    }

    #[test]
    fn outcome_needs_no_payload_hash_when_every_frame_was_checked() {
        assert_eq!(outcome_of(None, vec![], Ok((4, None))).ok(), Some(4));
    }

    #[test]
    fn outcome_names_a_frame_that_does_not_match_its_digest() {
        let frame = SegFault {
            index: 3,
            fault: Fault::Stopped,
            before: Some(Before::Frame(Box::new(FrameFault {
                index: 3,
                patch: 100..160,
                expected: "e".into(),
                actual: "a".into(),
            }))),
            read_back: None,
        };
        let e = outcome_of(None, vec![frame], Err(ReadStop::Stopped)).expect_err("a bad frame");
        assert!(
            matches!(&e, InstallError::FrameMismatch { index: 3, patch, .. } if *patch == (100..160)),
            "{e:?}"
        );
        assert_eq!(e.kind(), crate::error::Kind::HashMismatch);
        let shown = e.to_string();
        assert!(
            shown.contains("segment 3 (payload bytes 100..160)"),
            "{shown}"
        );
        assert!(shown.contains("not decoded"), "{shown}");
    }

    fn signed_frame(frame: &[u8], digest: Option<String>) -> Segment {
        Segment {
            offset: 0,
            length: 4,
            sha256: "0".repeat(64),
            blake3: None,
            patch_offset: 10,
            patch_length: frame.len() as u64,
            patch_blake3: digest,
            source: None,
        }
    }

    #[test]
    fn a_frame_is_checked_against_its_signed_digest_before_decoding() {
        let frame = b"a zstd frame";
        let good = blake3::hash(frame).to_hex().to_string();
        assert!(check_frame(0, &signed_frame(frame, Some(good.clone())), frame).is_ok());
        let fault = check_frame(2, &signed_frame(frame, Some(good.clone())), b"a zstd framf")
            .expect_err("one byte changed");
        assert_eq!((fault.index, fault.patch), (2, 10..22));
        assert_eq!(fault.expected, good);
        // No digest (a release packed before frame digests): the payload
        // hash covers it.
        assert!(check_frame(0, &signed_frame(frame, None), b"anything").is_ok());
    }

    /// A read-back that missed its digest, told apart with the frame read
    /// once more: `again` serves `served` (the segment's frame lies at
    /// byte 10), or fails with its error; the medium returns `read_back`
    /// again when read once more. Returns the fault and how many times the
    /// frame was asked for.
    fn told(
        read_back: &[u8],
        frame: &[u8],
        digest: Option<String>,
        served: Result<&[u8], crate::fetch::FetchError>,
    ) -> (Fault, usize) {
        told_again(read_back, read_back, frame, digest, served)
    }

    /// [`told`] of a medium that returns `second` when read once more.
    fn told_again(
        read_back: &[u8],
        second: &[u8],
        frame: &[u8],
        digest: Option<String>,
        served: Result<&[u8], crate::fetch::FetchError>,
    ) -> (Fault, usize) {
        let mut seg = signed_frame(frame, digest);
        seg.offset = 4096;
        seg.length = read_back.len() as u64;
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let again = |offset: u64, length: u64| -> io::Result<Vec<u8>> {
            asked.fetch_add(1, Ordering::Relaxed);
            assert_eq!((offset, length), (10, frame.len() as u64));
            served
                .clone()
                .map(<[u8]>::to_vec)
                .map_err(crate::fetch::FetchError::into_io)
        };
        let digest = Fault::Digest {
            offset: seg.offset,
            length: seg.length,
            algorithm: "BLAKE3",
            expected: "e".into(),
            actual: "a".into(),
            medium_checked: false,
        };
        let mut kept = read_back.to_vec();
        let fault = medium_or_payload(3, &seg, &mut kept, digest, &again, &mut |at, decoded| {
            let from = usize::try_from(at - seg.offset).expect("in the segment");
            compare(&second[from..from + decoded.len()], decoded, at)
        });
        (fault, asked.load(Ordering::Relaxed))
    }

    /// A segment, its frame and the frame's signed BLAKE3, and the segment
    /// with one byte changed (what a failing medium returns).
    fn frame_and_read_backs() -> (Vec<u8>, Vec<u8>, Option<String>, Vec<u8>) {
        let segment = b"the bytes of one segment, decoded".repeat(8);
        let frame = zstd::encode_all(&segment[..], 3).expect("frame");
        let signed = Some(blake3::hash(&frame).to_hex().to_string());
        let mut differs = segment.clone();
        differs[100] ^= 1;
        (segment, frame, signed, differs)
    }

    /// `f` blames the payload: a [`Fault::Digest`], `checked` when the slot
    /// was found to hold exactly the decoded bytes.
    fn blames_payload(f: &Fault, checked: bool) -> bool {
        matches!(
            f,
            Fault::Digest {
                algorithm: "BLAKE3",
                medium_checked,
                ..
            } if *medium_checked == checked
        )
    }

    #[test]
    fn a_read_back_fault_blames_the_medium_only_on_proof_from_the_signed_frame() {
        let (segment, frame, signed, differs) = frame_and_read_backs();
        // The medium returned other bytes than the frame decodes to: its
        // fault, at the first byte that differs.
        match told(&differs, &frame, signed.clone(), Ok(&frame)).0 {
            Fault::Medium { offset } => assert_eq!(offset, 4096 + 100),
            other => panic!("{other:?}"),
        }
        // It returned what the frame decodes to: the payload decodes to
        // other bytes than were signed.
        let (fault, _) = told(&segment, &frame, signed.clone(), Ok(&frame));
        assert!(blames_payload(&fault, true), "{fault:?}");
        // The source serves the frame otherwise than signed, though it
        // matched when first read: the source changed, nobody is blamed.
        let other = zstd::encode_all(&differs[..], 3).expect("frame");
        match told(&differs, &frame, signed.clone(), Ok(&other)).0 {
            Fault::Source(e) => assert!(
                e.to_string().contains("which it matched when first read")
                    && e.to_string().contains("nothing is blamed"),
                "{e}"
            ),
            other => panic!("a source that changed blamed someone: {other:?}"),
        }
        // A signed frame that decodes to another length (cannot happen for
        // the frame that decoded before) proves nothing either.
        let short = zstd::encode_all(&segment[..10], 3).expect("frame");
        let short_signed = Some(blake3::hash(&short).to_hex().to_string());
        let (fault, _) = told(&differs, &short, short_signed, Ok(&short));
        assert!(blames_payload(&fault, false), "{fault:?}");
    }

    #[test]
    fn only_the_first_bad_segment_kept_read_back_is_told_once_the_pipeline_stopped() {
        let (_, frame, signed, differs) = frame_and_read_backs();
        let mut image = image("h");
        image.segments = (0..3u64)
            .map(|i| Segment {
                offset: i * 4096,
                length: differs.len() as u64,
                ..signed_frame(&frame, signed.clone())
            })
            .collect();
        let kept = |index: usize| {
            let mut read_back = AlignedBuf::new(differs.len());
            read_back[..differs.len()].copy_from_slice(&differs);
            SegFault {
                index,
                fault: Fault::Digest {
                    offset: index as u64 * 4096,
                    length: differs.len() as u64,
                    algorithm: "BLAKE3",
                    expected: "e".into(),
                    actual: "a".into(),
                    medium_checked: false,
                },
                before: None,
                read_back: Some(read_back),
            }
        };
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let again = |offset: u64, length: u64| -> io::Result<Vec<u8>> {
            asked.fetch_add(1, Ordering::Relaxed);
            assert_eq!((offset, length), (10, frame.len() as u64));
            Ok(frame.clone())
        };
        // Two workers kept their read-backs (segments 1 and 2, sorted):
        // only segment 1's is told, with its frame fetched once.
        let mut medium_again = |at: u64, decoded: &[u8]| {
            let from = usize::try_from(at % 4096).expect("in the segment");
            compare(&differs[from..from + decoded.len()], decoded, at)
        };
        let first = explain_first(vec![kept(1), kept(2)], &image, &again, &mut medium_again)
            .expect("a fault");
        assert_eq!(first.index, 1);
        assert!(first.read_back.is_none());
        match first.fault {
            Fault::Medium { offset } => assert_eq!(offset, 4096 + 100),
            other => panic!("{other:?}"),
        }
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        // A fault without a read-back kept (compared piece by piece, or
        // not a digest) is passed on as it is, nothing fetched.
        let first = explain_first(
            vec![bad_segment(0, None), kept(1)],
            &image,
            &again,
            &mut medium_again,
        )
        .expect("a fault");
        assert!(
            matches!(first.fault, Fault::Medium { offset: 7 }),
            "{:?}",
            first.fault
        );
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        assert!(explain_first(vec![], &image, &again, &mut medium_again).is_none());
    }

    /// A segment of several pieces: the piece that differs is found from
    /// the fingerprints of what the medium returned, and only it is read
    /// again; a medium that returns the right bytes the second time is
    /// named at that piece's first byte.
    #[test]
    fn a_read_back_fault_is_located_in_its_piece_without_a_second_segment_buffer() {
        let segment: Vec<u8> = (0..3 * TELL_PIECE + 1000)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        let frame = zstd::encode_all(&segment[..], 3).expect("frame");
        let signed = Some(blake3::hash(&frame).to_hex().to_string());
        let mut differs = segment.clone();
        let bad = 2 * TELL_PIECE + 777;
        differs[bad] ^= 0x10;
        // The medium returns the same bytes again: the byte itself.
        match told(&differs, &frame, signed.clone(), Ok(&frame)).0 {
            Fault::Medium { offset } => assert_eq!(offset, 4096 + bad as u64),
            other => panic!("{other:?}"),
        }
        // The right bytes the second time: the piece it lay in.
        match told_again(&differs, &segment, &frame, signed.clone(), Ok(&frame)).0 {
            Fault::Medium { offset } => assert_eq!(offset, 4096 + 2 * TELL_PIECE as u64),
            other => panic!("{other:?}"),
        }
        // A change in the short last piece.
        let mut last = segment.clone();
        *last.last_mut().expect("bytes") ^= 1;
        match told(&last, &frame, signed.clone(), Ok(&frame)).0 {
            Fault::Medium { offset } => assert_eq!(offset, 4096 + segment.len() as u64 - 1),
            other => panic!("{other:?}"),
        }
        // What the medium returned decodes from the frame piece by piece:
        // the payload's fault.
        let (fault, _) = told(&segment, &frame, signed, Ok(&frame));
        assert!(blames_payload(&fault, true), "{fault:?}");
    }

    /// A frame that is not signed could not be checked once fetched: it is
    /// not asked for, and the payload is blamed (the same on every run, so
    /// the safe side for a fleet).
    #[test]
    fn an_unsigned_frame_is_not_fetched_again_and_the_payload_is_blamed() {
        let (_, frame, _, differs) = frame_and_read_backs();
        let (fault, asked) = told(&differs, &frame, None, Ok(&frame));
        assert!(blames_payload(&fault, false), "{fault:?}");
        assert_eq!(asked, 0, "an unsigned frame was fetched again");
    }

    /// The frame cannot be had again: the download window closed, the
    /// connection was cut, the server answered 503 (after the transport's
    /// own retries). Nothing is proven about the release or the medium:
    /// the fault is the source's, with its error as it came (so a window
    /// close ends the run as a window stop, and a transport failure counts
    /// with its own kind, not against the release).
    #[test]
    fn a_frame_that_cannot_be_had_again_blames_neither_the_release_nor_the_medium() {
        use crate::fetch::FetchError;
        let (_, frame, signed, differs) = frame_and_read_backs();
        let location = "https://updates.example.net/rootfs.img.zst".to_string();
        for failure in [
            FetchError::OutsideWindow {
                location: location.clone(),
                at: 10,
                until: 1_800_000_000,
            },
            FetchError::Network {
                location: location.clone(),
                detail: "connection reset by peer".into(),
            },
            FetchError::HttpStatus {
                location: location.clone(),
                status: 503,
                retry_after: None,
            },
        ] {
            let (fault, asked) = told(&differs, &frame, signed.clone(), Err(failure.clone()));
            assert_eq!(asked, 1);
            match fault {
                Fault::Source(e) => assert_eq!(FetchError::from_io(&e), Some(&failure)),
                other => panic!("{failure}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_payload_is_hashed_unless_every_frame_is_signed() {
        let digest = Some("0".repeat(64));
        let all = vec![signed_frame(b"x", digest.clone()); 3];
        assert!(frames_signed(&all));
        let mut one_missing = all.clone();
        one_missing[1].patch_blake3 = None;
        assert!(!frames_signed(&one_missing));
    }
}
