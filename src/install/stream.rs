//! One-stream payloads (every release before segments, and uncompressed
//! images): one reader, one decoder, one writer, one verifier.
//!
//! Four stages overlap, each on its own thread, joined by small bounded
//! queues of large buffers, so the total time approaches the slowest stage
//! (on most hosts zstd decoding) rather than the sum:
//!
//! ```text
//! reader ──► decoder ──► writer ──► verifier
//! payload    zstd        O_DIRECT   O_DIRECT read-back
//! SHA-256    (bounded    pwrite     of what was written,
//!            window)     (or skip)  SHA-256 of the medium
//! ```
//!
//! - The reader hashes the payload as it arrives (the signed
//!   `download_sha256`), so the decoder does nothing but decode.
//! - The writer writes each decoded chunk through the [`SlotWriter`]; chunks
//!   that are already waiting go out together in one `pwritev`, so several
//!   device requests are in flight; the verifier reads back the same way
//!   (`preadv`).
//! - The verifier reads every chunk back from the device right after its
//!   write completed, compares it with the bytes written ([`accept`]) and
//!   hashes what the medium returned: one SHA-256 pass over the image,
//!   compared with the signed image SHA-256 at the end.
//! - `--write=changed` reads the chunk from the slot first and compares it
//!   in 64 KiB blocks; only blocks that differ are written (and read back
//!   again); the bytes that already matched are hashed as read.

use super::writer::{accept, changed_runs, AlignedBuf, Fault, SlotWriter};
use super::{fill, hex, BeforeWrite, InstallError, WriteMode};
use crate::manifest::{Compression, Image};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// A decoded chunk: the unit of device writes and read-backs. Large enough
/// for full-speed device I/O, small enough to stay in the CPU's caches
/// between the decoder and the writer.
const CHUNK: usize = 512 << 10;
/// Decoded chunks the writer takes at once (decoder → writer). A chunk is
/// held until its read-back has been compared with it, so the pool holds
/// `CHUNKS + MEDIUM` of them; with the read-back buffers and the payload
/// buffers this is all the memory the pipeline holds besides the zstd
/// window (5.5 MiB).
const CHUNKS: usize = 4;
/// Read-back buffers (writer → verifier).
const MEDIUM: usize = 3;
/// Payload buffers (reader → decoder).
const IN_CHUNK: usize = 128 << 10;
const IN_CHUNKS: usize = 4;

/// What the writer hands the verifier: the chunk at `offset`, `len` bytes,
/// in `buf`, of which the `reread` ranges must still be read from the device
/// (the rest, in `--write=changed`, was read before and found equal), and
/// the bytes that were meant to be there (`written`, back to the decoder's
/// pool once compared).
struct Verify {
    offset: u64,
    len: usize,
    buf: AlignedBuf,
    written: AlignedBuf,
    reread: Vec<(usize, usize)>,
}

fn overflow(size: u64) -> String {
    format!("decodes to more than the {size} bytes the manifest declares")
}

/// Why the producer (payload reader and decoder) stopped.
enum Stop {
    /// The payload could not be read (transport, partial file).
    Source(io::Error),
    /// The payload's bytes are bad (do not decode, too many), or a stage
    /// stopped.
    Payload(String),
}

/// Reader stage for a zstd payload: payload buffers to the decoder, hashed
/// on the way. Returns the payload's length and SHA-256; `Err(None)` when
/// the decoder stopped (its own error says why).
fn read_payload(
    mut payload: impl Read,
    tx: SyncSender<(Vec<u8>, usize)>,
    pool: Receiver<Vec<u8>>,
) -> Result<(u64, String), Option<io::Error>> {
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    loop {
        let mut buf = pool.recv().map_err(|_| None)?;
        let n = fill(&mut payload, &mut buf).map_err(Some)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        count += n as u64;
        tx.send((buf, n)).map_err(|_| None)?;
    }
    drop(tx);
    Ok((count, hex(&hasher.finalize())))
}

/// Decoder stage: payload buffers in, full chunks of image out. Never hands
/// on a byte past `size`.
fn decode(
    rx: Receiver<(Vec<u8>, usize)>,
    back: SyncSender<Vec<u8>>,
    pool: &Receiver<AlignedBuf>,
    tx: &SyncSender<(AlignedBuf, usize)>,
    size: u64,
    window_log_max: u32,
) -> Result<(), String> {
    use zstd::zstd_safe::{get_error_name, DCtx, DParameter, InBuffer, OutBuffer};
    let zerr = |code: usize| format!("zstd: {}", get_error_name(code));
    let stopped = || "writer stopped".to_string();
    let mut dctx = DCtx::try_create().ok_or("zstd: cannot allocate a decoder")?;
    dctx.set_parameter(DParameter::WindowLogMax(window_log_max))
        .map_err(zerr)?;
    let mut out = pool.recv().map_err(|_| stopped())?;
    let mut pos = 0usize;
    let mut produced = 0u64;
    // Between frames (an empty payload is an empty image).
    let mut frame_done = true;
    for (inbuf, n) in rx.iter() {
        let mut input = InBuffer::around(&inbuf[..n]);
        loop {
            let (in_before, out_before) = (input.pos(), pos);
            let mut output = OutBuffer::around_pos(&mut out[..], pos);
            let hint = dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(zerr)?;
            pos = output.pos();
            // A call that moved nothing (asked to flush at a frame's end)
            // says nothing about where the frame is.
            if input.pos() != in_before || pos != out_before {
                frame_done = hint == 0;
            }
            let full = pos == CHUNK;
            if full {
                produced += CHUNK as u64;
                if produced > size {
                    return Err(overflow(size));
                }
                tx.send((out, CHUNK)).map_err(|_| stopped())?;
                out = pool.recv().map_err(|_| stopped())?;
                pos = 0;
            }
            if input.pos() == n && !full {
                break;
            }
        }
        let _ = back.send(inbuf);
    }
    if !frame_done {
        return Err("zstd: the payload ends in the middle of a frame".into());
    }
    if pos > 0 {
        produced += pos as u64;
        if produced > size {
            return Err(overflow(size));
        }
        tx.send((out, pos)).map_err(|_| stopped())?;
    }
    Ok(())
}

/// Reader stage for an uncompressed payload: straight into image chunks.
fn read_raw(
    payload: impl Read,
    pool: &Receiver<AlignedBuf>,
    tx: &SyncSender<(AlignedBuf, usize)>,
    size: u64,
) -> Result<(u64, String), Stop> {
    let mut hasher = Sha256::new();
    let mut source = payload.take(size + 1);
    let mut count = 0u64;
    let stopped = || Stop::Payload("writer stopped".into());
    loop {
        let mut buf = pool.recv().map_err(|_| stopped())?;
        let n = fill(&mut source, &mut buf).map_err(Stop::Source)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        count += n as u64;
        if count > size {
            return Err(Stop::Payload(overflow(size)));
        }
        if tx.send((buf, n)).is_err() {
            return Err(stopped());
        }
    }
    Ok((count, hex(&hasher.finalize())))
}

/// Put `first` and whatever `rx` already holds, up to `max` items, into
/// the empty `batch`, without waiting: what one device call can take.
fn take_waiting<T>(first: T, rx: &Receiver<T>, batch: &mut Vec<T>, max: usize) {
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

/// Verifier stage: reads back what the writer wrote, compares it with what
/// was written and hashes what the medium holds. Returns the number of bytes
/// and their SHA-256; stops at the first byte the medium got wrong.
fn verify(
    io: &SlotWriter,
    rx: Receiver<Verify>,
    back: SyncSender<AlignedBuf>,
    written_back: SyncSender<AlignedBuf>,
) -> Result<(u64, String), Fault> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut batch: Vec<Verify> = Vec::with_capacity(MEDIUM);
    while let Ok(first) = rx.recv() {
        // Whole chunks waiting back to back are read in one call.
        take_waiting(first, &rx, &mut batch, MEDIUM);
        let whole = |v: &Verify| v.reread.len() == 1 && v.reread[0] == (0, v.len) && v.len == CHUNK;
        let contiguous = batch
            .windows(2)
            .all(|w| w[0].offset + w[0].len as u64 == w[1].offset);
        if batch.len() > 1 && contiguous && batch.iter().all(whole) {
            let offset = batch[0].offset;
            let mut bufs: Vec<(&mut [u8], usize)> =
                batch.iter_mut().map(|v| (&mut v.buf[..], v.len)).collect();
            io.read_chunks_at(&mut bufs, offset).map_err(Fault::Io)?;
        } else {
            for v in batch.iter_mut() {
                for &(a, b) in &v.reread {
                    io.read_at(&mut v.buf[a..], b - a, v.offset + a as u64)
                        .map_err(Fault::Io)?;
                }
            }
        }
        for mut v in batch.drain(..) {
            accept(&mut v.buf[..v.len], &v.written[..v.len], v.offset)?;
            hasher.update(&v.buf[..v.len]);
            total += v.len as u64;
            let _ = back.send(v.buf);
            let _ = written_back.send(v.written);
        }
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Why the writer stopped early.
enum WriterStop {
    Device(io::Error),
    /// The verifier stopped (its own error says why).
    Verifier,
    /// `before_write` failed: nothing was written.
    BeforeWrite(crate::error::Error),
}

/// Calls `before_write` the first time; `armed` remembers that it did.
fn arm(armed: &mut bool, before_write: BeforeWrite) -> Result<(), WriterStop> {
    if !*armed {
        before_write().map_err(WriterStop::BeforeWrite)?;
        *armed = true;
    }
    Ok(())
}

/// Writer stage (on the calling thread): chunks in, device writes out, each
/// chunk then handed to the verifier. In `Changed` mode, blocks that already
/// hold the right bytes are not written.
#[allow(clippy::too_many_arguments)]
fn write_chunks(
    io: &SlotWriter,
    rx: &Receiver<(AlignedBuf, usize)>,
    medium_pool: &Receiver<AlignedBuf>,
    to_verify: &SyncSender<Verify>,
    mode: WriteMode,
    size: u64,
    progress: &mut Progress,
    before_write: BeforeWrite,
) -> (u64, Result<(), WriterStop>) {
    let mut offset = 0u64;
    let mut armed = false;
    let mut batch: Vec<(AlignedBuf, usize)> = Vec::with_capacity(CHUNKS);
    while let Ok(first) = rx.recv() {
        // Chunks already waiting are written with this one, in one call.
        take_waiting(first, rx, &mut batch, CHUNKS);
        let batch_bytes: u64 = batch.iter().map(|(_, n)| *n as u64).sum();
        if offset + batch_bytes > size {
            break; // the producer reports the overflow
        }
        if mode == WriteMode::All {
            if let Err(stop) = arm(&mut armed, &mut *before_write) {
                return (offset, Err(stop));
            }
            let slices: Vec<&[u8]> = batch.iter().map(|(c, n)| &c[..*n]).collect();
            if let Err(e) = io.write_chunks_at(&slices, offset) {
                return (offset, Err(WriterStop::Device(e)));
            }
        }
        for (chunk, n) in batch.drain(..) {
            let Ok(mut medium) = medium_pool.recv() else {
                return (offset, Err(WriterStop::Verifier));
            };
            let data = &chunk[..n];
            let reread = match mode {
                WriteMode::All => vec![(0, n)],
                WriteMode::Changed => {
                    let runs = match io.read_at(&mut medium, n, offset) {
                        Ok(()) => changed_runs(&medium[..n], data),
                        // Unreadable (e.g. past the end of a short file): write it.
                        Err(_) => vec![(0, n)],
                    };
                    if !runs.is_empty() {
                        if let Err(stop) = arm(&mut armed, &mut *before_write) {
                            return (offset, Err(stop));
                        }
                    }
                    for &(a, b) in &runs {
                        if let Err(e) = io.write_at(&data[a..b], offset + a as u64) {
                            return (offset, Err(WriterStop::Device(e)));
                        }
                    }
                    runs
                }
            };
            if to_verify
                .send(Verify {
                    offset,
                    len: n,
                    buf: medium,
                    written: chunk,
                    reread,
                })
                .is_err()
            {
                return (offset, Err(WriterStop::Verifier));
            }
            offset += n as u64;
            progress.advance(n as u64);
            crate::failpoint::hit("chunk-written");
        }
    }
    (offset, Ok(()))
}

/// The zstd producer: a reader thread fills input buffers from `payload`
/// (hashing it) while this one decodes them into `tx`, which is dropped as
/// soon as decoding ends. Returns the payload's length and SHA-256.
fn read_zstd(
    payload: impl Read + Send,
    pool: &Receiver<AlignedBuf>,
    tx: SyncSender<(AlignedBuf, usize)>,
    size: u64,
    window_log_max: u32,
) -> Result<(u64, String), Stop> {
    let (in_tx, in_rx) = sync_channel::<(Vec<u8>, usize)>(IN_CHUNKS);
    let (in_back, in_pool) = sync_channel::<Vec<u8>>(IN_CHUNKS);
    for _ in 0..IN_CHUNKS {
        let _ = in_back.send(vec![0u8; IN_CHUNK]);
    }
    std::thread::scope(|inner| {
        let reader = inner.spawn(move || read_payload(payload, in_tx, in_pool));
        let decoded = decode(in_rx, in_back, pool, &tx, size, window_log_max);
        drop(tx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(Some(io::Error::other("payload reader panicked"))));
        match (read, decoded) {
            // A transport error explains a decoder that ran dry.
            (Err(Some(e)), _) => Err(Stop::Source(e)),
            (_, Err(e)) => Err(Stop::Payload(e)),
            (Err(None), Ok(())) => Err(Stop::Payload("payload reader stopped".into())),
            (Ok(read), Ok(())) => Ok(read),
        }
    })
}

/// Decode `payload` (exactly `image.download_size()` bytes) into the slot,
/// hashing the payload as it arrives and the image as read back from the
/// medium after each write. `before_write` runs once before the first byte
/// of the slot changes (see [`BeforeWrite`]). Returns the image bytes
/// written, the payload's length, and what the image read back as (length,
/// SHA-256).
#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    what: &str,
    payload: impl Read + Send,
    image: &Image,
    io: &SlotWriter,
    window_log_max: u32,
    mode: WriteMode,
    progress: &mut Progress,
    before_write: BeforeWrite,
) -> Result<(u64, u64, (u64, String)), InstallError> {
    let device = io.path();
    let dev_err = |source| InstallError::Device {
        path: device.to_path_buf(),
        source,
    };
    let size = image.size;
    let compression = image.compression;

    let (chunk_tx, chunk_rx) = sync_channel::<(AlignedBuf, usize)>(CHUNKS);
    let (chunk_back, chunk_pool) = sync_channel::<AlignedBuf>(CHUNKS + MEDIUM);
    for _ in 0..CHUNKS + MEDIUM {
        let _ = chunk_back.send(AlignedBuf::new(CHUNK));
    }
    let (verify_tx, verify_rx) = sync_channel::<Verify>(MEDIUM);
    let (medium_back, medium_pool) = sync_channel::<AlignedBuf>(MEDIUM);
    for _ in 0..MEDIUM {
        let _ = medium_back.send(AlignedBuf::new(CHUNK));
    }

    let (offset, writer, produced, verified) = std::thread::scope(|scope| {
        let verifier = scope.spawn({
            let written_back = chunk_back.clone();
            move || verify(io, verify_rx, medium_back, written_back)
        });
        let producer = scope.spawn(move || -> Result<(u64, String), Stop> {
            match compression {
                Compression::None => read_raw(payload, &chunk_pool, &chunk_tx, size),
                Compression::Zstd => {
                    read_zstd(payload, &chunk_pool, chunk_tx, size, window_log_max)
                }
            }
        });
        let (offset, writer) = write_chunks(
            io,
            &chunk_rx,
            &medium_pool,
            &verify_tx,
            mode,
            size,
            progress,
            before_write,
        );
        drop(verify_tx);
        drop(chunk_rx);
        drop(chunk_back);
        drop(medium_pool);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Stop::Payload("decoder thread panicked".into())));
        let verified = verifier
            .join()
            .unwrap_or_else(|_| Err(Fault::Io(io::Error::other("read-back thread panicked"))));
        (offset, writer, produced, verified)
    });

    match writer {
        Err(WriterStop::Device(e)) => return Err(dev_err(e)),
        Err(WriterStop::BeforeWrite(e)) => return Err(InstallError::BeforeWrite(Box::new(e))),
        Err(WriterStop::Verifier) | Ok(()) => {}
    }
    let verified = verified.map_err(|f| super::fault_error(f, device, what))?;
    let (payload_bytes, payload_sha) = produced.map_err(|stop| match stop {
        Stop::Source(error) => InstallError::Source {
            what: what.to_string(),
            error,
        },
        Stop::Payload(reason) => InstallError::Payload {
            what: what.to_string(),
            reason,
        },
    })?;
    super::check_payload_sha256(what, image, payload_sha)?;
    if offset != size {
        return Err(InstallError::Size {
            what: what.to_string(),
            reason: format!("decodes to {offset} bytes, the manifest declares {size}"),
        });
    }
    Ok((offset, payload_bytes, verified))
}
