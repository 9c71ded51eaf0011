//! Segmented full payloads: independent zstd frames, one per image segment
//! (what `pack` writes by default), decoded on every core at once.
//!
//! ```text
//!                 ┌─► worker ─┐   decode the frame in one piece into a
//! reader ─ jobs ──┼─► worker ─┼─► segment buffer, write it at its offset,
//! frames,         └─► worker ─┘   read it back, compare, hash (BLAKE3 or
//! payload SHA-256                 SHA-256), check the signed digest
//! ```
//!
//! - The reader cuts the payload into frames by the signed segment table
//!   (frames back to back: [`plan`] takes only such payloads) and hashes
//!   it as it arrives (the signed `download_sha256`, checked at the end).
//! - A worker per core and one more (fewer when the segments are large, [`workers`])
//!   decodes a frame into its own segment buffer in one call (no window
//!   buffer, no copy out of it) and writes and verifies it through the
//!   [`SlotWriter`]. Segments finish in any order; each lands at its own
//!   offset and counts only once its read-back matched its signed digest.
//! - Memory is bounded by the workers' segment buffers, one frame per
//!   worker and a 1 MiB read-back buffer per worker, whatever the image
//!   size.
//! - The first byte of the slot changes only after the calling thread ran
//!   `before_write` (the workers wait for it at a gate), and the first fault
//!   stops the reader and every worker: a bad segment mid-way leaves the
//!   rest unwritten and the caller keeps the target marked bad.
//!
//! A payload this path does not take (one frame, a segment larger than
//! [`MAX_SEGMENT`], frames not back to back) goes through the one-stream
//! pipeline, which decodes concatenated frames as well.

use super::writer::{AlignedBuf, Fault, SlotWriter, READBACK};
use super::{fill, hex, BeforeWrite, InstallError, WriteMode};
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
/// Decoded-segment memory across all workers.
const DECODE_BUDGET: u64 = 16 << 20;

/// The largest segment of `image` when the parallel path can take its
/// payload: zstd segments whose frames lie back to back from the payload's
/// first byte to its last, each at most [`MAX_SEGMENT`] and no larger than
/// zstd's bound for its segment (so a frame buffer is bounded too).
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
    (next == image.download_size()).then_some(largest)
}

/// How many segments are in flight at once: one more than there are cores,
/// as many as [`DECODE_BUDGET`] holds of the largest segment (at least
/// one). The one more keeps the cores decoding while a worker waits on
/// the medium (its write and read-back): with a worker per core, a 2-core
/// host sat idle a quarter of an install (bench/README.md).
pub(crate) fn workers(cores: usize, largest: u64) -> usize {
    let by_memory = (DECODE_BUDGET / largest.max(1)).max(1);
    cores
        .saturating_add(1)
        .clamp(1, usize::try_from(by_memory).unwrap_or(usize::MAX))
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

/// Reader: the payload's frames in order, hashed as they arrive. Returns
/// the payload's length and SHA-256.
fn read_frames(
    mut payload: impl Read,
    segments: &[Segment],
    jobs: SyncSender<Job>,
    pool: Receiver<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<(u64, String), ReadStop> {
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for (index, seg) in segments.iter().enumerate() {
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
        hasher.update(&buf[..n]);
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
    Ok((count, hex(&hasher.finalize())))
}

/// What a worker found wrong with segment `index`.
struct SegFault {
    index: usize,
    fault: Fault,
    /// A payload problem before anything of it was written (it does not
    /// decode, or decodes to another length).
    decode: Option<String>,
}

struct Shared<'a> {
    image: &'a Image,
    writer: &'a SlotWriter,
    mode: WriteMode,
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
    let mut out = AlignedBuf::new(largest);
    let mut scratch = AlignedBuf::new(READBACK);
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
        let decoded = dctx.decompress(&mut out[..len], &buf[..frame]);
        let _ = sh.frames_back.send(buf);
        let result = match decoded {
            Ok(n) if n == len => write_segment(sh, seg, &out[..len], &mut scratch, &events),
            Ok(n) => Err((
                Fault::Stopped,
                Some(format!(
                    "segment {index} decodes to {n} bytes, the manifest declares {len}"
                )),
            )),
            Err(code) => Err((
                Fault::Stopped,
                Some(format!(
                    "segment {index} (bytes {}..{}) does not decode: zstd: {}",
                    seg.offset,
                    seg.offset + seg.length,
                    zstd::zstd_safe::get_error_name(code)
                )),
            )),
        };
        match result {
            Ok(()) => {
                crate::failpoint::hit("segment-written");
                if let Some(hook) = sh.hooks.after_segment {
                    hook(index);
                }
                let _ = events.send(Event::Done(seg.length));
            }
            Err((f, decode)) => {
                sh.stop.store(true, Ordering::Relaxed);
                if fault.is_none() && !matches!((&f, &decode), (Fault::Stopped, None)) {
                    fault = Some(SegFault {
                        index,
                        fault: f,
                        decode,
                    });
                }
            }
        }
    }
    fault
}

fn write_segment(
    sh: &Shared,
    seg: &Segment,
    data: &[u8],
    scratch: &mut AlignedBuf,
    events: &Sender<Event>,
) -> Result<(), (Fault, Option<String>)> {
    let mut w = sh.writer.begin(seg);
    sh.writer
        .write_piece(&mut w, data, scratch, sh.mode, &mut || sh.gate.pass(events))
        .map_err(|f| (f, None))?;
    sh.writer.finish(w).map_err(|f| (f, None))
}

/// Write the segmented payload into the slot with `cores` workers (see the
/// module docs). Returns the payload's length; every segment of the image
/// was read back and matched its signed digest.
#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    what: &str,
    payload: impl Read + Send,
    image: &Image,
    writer: &SlotWriter,
    largest: u64,
    workers: usize,
    mode: WriteMode,
    progress: &mut Progress,
    before_write: BeforeWrite,
    hooks: &Hooks,
) -> Result<u64, InstallError> {
    // A frame per worker: a worker hands its frame back once decoded, so
    // the reader fills it while the worker writes and reads back.
    let (jobs_tx, jobs_rx) = sync_channel::<Job>(workers);
    let (frames_back, frames) = sync_channel::<Vec<u8>>(workers);
    for _ in 0..workers {
        let _ = frames_back.send(Vec::new());
    }
    let sh = Shared {
        image,
        writer,
        mode,
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
        let reader =
            scope.spawn(move || read_frames(payload, &image.segments, jobs_tx, frames, &sh.stop));
        let (events_tx, events) = channel::<Event>();
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let events = events_tx.clone();
                scope.spawn(move || work(sh, largest, events))
            })
            .collect();
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
                        decode: None,
                    })
                })
            })
            .collect();
        faults.sort_by_key(|f| f.index);
        (read, faults)
    });

    outcome(what, image, writer.path(), arm_error, faults, read)
}

/// What a segmented write came to, from what its threads reported, in the
/// order that tells: `before_write`'s failure (nothing was written), else
/// the first bad segment by place in the image, else why the payload reader
/// stopped, else the payload's hash (`faults` sorted by segment index).
/// Returns the payload's length.
fn outcome(
    what: &str,
    image: &Image,
    device: &Path,
    arm_error: Option<crate::error::Error>,
    faults: Vec<SegFault>,
    read: Result<(u64, String), ReadStop>,
) -> Result<u64, InstallError> {
    if let Some(e) = arm_error {
        return Err(InstallError::BeforeWrite(Box::new(e)));
    }
    if let Some(f) = faults.into_iter().next() {
        return Err(match f.decode {
            Some(reason) => InstallError::Payload {
                what: what.to_string(),
                reason,
            },
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
    super::check_payload_sha256(what, image, payload_sha)?;
    Ok(payload_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            decode: decode.map(Into::into),
        }
    }

    fn outcome_of(
        arm_error: Option<crate::error::Error>,
        faults: Vec<SegFault>,
        read: Result<(u64, String), ReadStop>,
    ) -> Result<u64, InstallError> {
        outcome(
            "rootfs payload",
            &image("h"),
            Path::new("/dev/a"),
            arm_error,
            faults,
            read,
        )
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
        let e = outcome_of(None, vec![bad_segment(2, None)], Ok((4, "h".into())));
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
        let e = outcome_of(None, vec![], Ok((4, "other".into())));
        assert!(
            matches!(&e, Err(InstallError::Mismatch { expected, actual, .. }) if expected == "h" && actual == "other"),
            "{e:?}"
        );
        assert_eq!(outcome_of(None, vec![], Ok((4, "h".into()))).ok(), Some(4));
    }
}
