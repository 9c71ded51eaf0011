//! The install pipeline: payload bytes in, a verified image in a slot out.
//!
//! Invariant: a slot is only reported written when every byte read back
//! from the medium hashes to the manifest's SHA-256 and the write has been
//! fsynced; until then the caller keeps the slot marked bad. No more bytes
//! than the manifest declares are decoded or written, and memory stays
//! bounded by a few fixed buffers whatever the image size.
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
//! - The writer writes each decoded chunk with `O_DIRECT` (page-aligned
//!   buffers and offsets): the page cache neither grows nor has to be flushed
//!   later, and the workload's cache is left alone. Chunks that are already
//!   waiting go out together in one `pwritev`, so several device requests
//!   are in flight; the verifier reads back the same way (`preadv`). A
//!   background flush every 64 MiB keeps the device's volatile cache short,
//!   so the final fsync has little left to do. Where `O_DIRECT` is
//!   refused (tmpfs, some FUSE file systems) it writes through the cache and
//!   pushes every chunk to the device and out of the cache
//!   (`sync_file_range` + `POSIX_FADV_DONTNEED`) before it is read back.
//! - The verifier reads every chunk back from the device right after its
//!   write completed, compares it with the bytes written (in wide words, far
//!   cheaper than a hash) and hashes what the medium returned: one SHA-256
//!   pass over the image. The two checks tell who is at fault: read-back
//!   bytes that differ from the written ones are the medium's (named with
//!   the device and offset); equal bytes whose hash differs from the
//!   manifest's are the release's (its payload does not decode to the image
//!   its manifest describes).
//! - `--write=changed` reads the chunk from the slot first and compares it
//!   in 64 KiB blocks; only blocks that differ are written (and read back
//!   again); the bytes that already matched are hashed as read. An image
//!   written over an older one wears only the blocks that changed.
//!
//! After the last chunk, one fsync flushes the device's write cache.

use crate::manifest::{Compression, Image};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Alignment of `O_DIRECT` buffers, offsets and lengths: a page, which
/// covers 512-byte and 4 KiB logical sectors.
const ALIGN: usize = 4096;
/// Granularity of the comparison in [`WriteMode::Changed`].
const CMP_BLOCK: usize = 64 << 10;
/// A background flush (fdatasync) is started every this many bytes written,
/// so the device's volatile cache (or, on a loop device, its backing file's
/// dirty pages) is emptied while decoding goes on rather than all at the
/// end.
const FLUSH_EVERY: u64 = 64 << 20;

#[derive(Debug)]
pub enum InstallError {
    Device {
        path: PathBuf,
        source: io::Error,
    },
    /// Reading the payload failed: the transport or the partial download
    /// (a [`crate::fetch::FetchError`] inside `error` says which), not the
    /// payload's bytes.
    Source {
        what: String,
        error: io::Error,
    },
    /// The caller's `before_write` (marking the target bad) failed; no byte
    /// of the slot was written.
    BeforeWrite(Box<crate::error::Error>),
    /// The payload's bytes are wrong: they do not decode.
    Payload {
        what: String,
        reason: String,
    },
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The image as decoded (and, byte for byte, as read back from the
    /// slot) does not hash as the manifest says: the release is at fault.
    ImageMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The slot returned other bytes than were written to it: the medium
    /// (or something else writing to it) is at fault.
    Medium {
        path: PathBuf,
        offset: u64,
    },
    Size {
        what: String,
        reason: String,
    },
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Device { path, source } => write!(f, "{}: {source}", path.display()),
            InstallError::Source { what, error } => {
                match crate::fetch::FetchError::from_io(error) {
                    Some(fetch) => fetch.fmt(f),
                    None => write!(f, "{what}: reading the payload: {error}"),
                }
            }
            InstallError::BeforeWrite(e) => e.fmt(f),
            InstallError::Payload { what, reason } => write!(f, "{what}: {reason}"),
            InstallError::Mismatch {
                what,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "{what}: SHA-256 is {actual}, the signed manifest says {expected}"
                )
            }
            InstallError::ImageMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "{what}: the decoded image's SHA-256 is {actual}, the signed manifest says {expected}; \
                 the slot read back exactly the bytes written, so the release is inconsistent (check its image hash and payload)"
            ),
            InstallError::Medium { path, offset } => write!(
                f,
                "{}: read back other bytes than were written at offset {offset}: the medium is failing (or something else writes to it)",
                path.display()
            ),
            InstallError::Size { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

impl std::error::Error for InstallError {}

impl InstallError {
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            InstallError::Device { .. } | InstallError::Medium { .. } => crate::error::Kind::Device,
            InstallError::Source { error, .. } => crate::fetch::FetchError::from_io(error)
                .map_or(crate::error::Kind::Io, |e| e.kind()),
            InstallError::BeforeWrite(e) => e.kind(),
            InstallError::Payload { .. } => crate::error::Kind::Payload,
            InstallError::Mismatch { .. } | InstallError::ImageMismatch { .. } => {
                crate::error::Kind::HashMismatch
            }
            InstallError::Size { .. } => crate::error::Kind::Size,
        }
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Result of one image written.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pub image_bytes: u64,
    pub payload_bytes: u64,
}

/// How the slot is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Write every block.
    All,
    /// Read the target first and skip blocks that already hold the bytes.
    Changed,
}

/// A zeroed, page-aligned buffer (what `O_DIRECT` needs), without unsafe
/// code: a slightly larger `Vec` and the aligned window inside it. The
/// allocation is lazily backed, so untouched pages cost no memory.
struct AlignedBuf {
    mem: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let mem = vec![0u8; len + ALIGN];
        let off = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { mem, off, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mem[self.off..self.off + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.off..self.off + self.len]
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EINVAL)
}

/// The target device, open twice: through the page cache, and with
/// `O_DIRECT` where the device or file system allows it.
struct SlotIo {
    cached: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl SlotIo {
    fn open(path: &Path, write: bool) -> io::Result<SlotIo> {
        let open = |flags| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(nix::libc::O_CLOEXEC | flags)
                .open(path)
        };
        // The first open of a target for writing claims a block device
        // exclusively (see `slot::open_exclusive`); the claim belongs to
        // this file, so the second, direct, open must not ask for it again.
        let cached = match write {
            true => crate::slot::open_exclusive(path, true, 0)?,
            false => open(0)?,
        };
        let direct = if no_direct_for_tests() {
            None
        } else {
            open(nix::libc::O_DIRECT).ok()
        };
        Ok(SlotIo {
            direct_ok: AtomicBool::new(direct.is_some()),
            cached,
            direct,
        })
    }

    /// The same open file as `file`, once more: with `O_DIRECT` if possible.
    fn reopen(file: &File) -> io::Result<SlotIo> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_DIRECT)
            .open(path)
            .ok();
        Ok(SlotIo {
            direct_ok: AtomicBool::new(direct.is_some()),
            cached: file.try_clone()?,
            direct,
        })
    }

    fn direct(&self) -> Option<&File> {
        self.direct
            .as_ref()
            .filter(|_| self.direct_ok.load(Ordering::Relaxed))
    }

    fn give_up_direct(&self) {
        self.direct_ok.store(false, Ordering::Relaxed);
    }

    /// Write `data` (which starts page-aligned when `offset` is) at
    /// `offset`. On return the bytes have reached the device and are not
    /// kept in the page cache, so a read-back sees the device's bytes.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = data.len() / ALIGN * ALIGN;
        if let Some(direct) = self.direct() {
            if aligned > 0 && offset % ALIGN as u64 == 0 && data.as_ptr() as usize % ALIGN == 0 {
                match direct.write_all_at(&data[..aligned], offset) {
                    Ok(()) if aligned == data.len() => return Ok(()),
                    Ok(()) => return self.write_cached(&data[aligned..], offset + aligned as u64),
                    Err(e) if is_einval(&e) => self.give_up_direct(),
                    Err(e) => return Err(e),
                }
            }
        }
        self.write_cached(data, offset)
    }

    /// Write whole chunks back to back from `offset` in one system call
    /// where possible: one `pwritev` of several chunks keeps several device
    /// requests in flight, which a loop of single writes does not.
    fn write_chunks_at(&self, chunks: &[&[u8]], offset: u64) -> io::Result<()> {
        if chunks.len() > 1 {
            if let Some(direct) = self.direct() {
                let total: usize = chunks.iter().map(|c| c.len()).sum();
                let iov: Vec<io::IoSlice<'_>> =
                    chunks.iter().map(|c| io::IoSlice::new(c)).collect();
                match nix::sys::uio::pwritev(direct, &iov, offset as i64) {
                    Ok(n) if n == total => return Ok(()),
                    // Short or refused: the chunks one by one (which also
                    // gives up O_DIRECT where it is not supported).
                    Ok(_) | Err(_) => {}
                }
            }
        }
        let mut at = offset;
        for c in chunks {
            self.write_at(c, at)?;
            at += c.len() as u64;
        }
        Ok(())
    }

    /// Read whole chunks back to back from `offset` (see
    /// [`SlotIo::write_chunks_at`]); each buffer is filled to its `len`.
    fn read_chunks_at(&self, bufs: &mut [(&mut [u8], usize)], offset: u64) -> io::Result<()> {
        if bufs.len() > 1 {
            if let Some(direct) = self.direct() {
                let total: usize = bufs.iter().map(|(_, n)| n).sum();
                let mut iov: Vec<io::IoSliceMut<'_>> = bufs
                    .iter_mut()
                    .map(|(b, n)| io::IoSliceMut::new(&mut b[..*n]))
                    .collect();
                if let Ok(n) = nix::sys::uio::preadv(direct, &mut iov, offset as i64) {
                    if n == total {
                        return Ok(());
                    }
                }
            }
        }
        let mut at = offset;
        for (b, n) in bufs.iter_mut() {
            self.read_at(b, *n, at)?;
            at += *n as u64;
        }
        Ok(())
    }

    fn write_cached(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.cached.write_all_at(data, offset)?;
        let fd = self.cached.as_raw_fd();
        // Push the range to the device and drop it from the cache. Only a
        // tail or a host without O_DIRECT comes here.
        // SAFETY: plain syscalls on an fd we own.
        let r = unsafe {
            nix::libc::sync_file_range(
                fd,
                offset as i64,
                data.len() as i64,
                nix::libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | nix::libc::SYNC_FILE_RANGE_WRITE
                    | nix::libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        if r != 0 {
            // Not supported here (e.g. some block drivers): a full flush.
            self.cached.sync_data()?;
        }
        drop_cache(&self.cached, offset, data.len() as u64);
        Ok(())
    }

    /// Read exactly `len` bytes at `offset` into `buf` (page-aligned when
    /// `offset` is, and at least `len` rounded up to a page long), from the
    /// device rather than from the page cache.
    fn read_at(&self, buf: &mut [u8], len: usize, offset: u64) -> io::Result<()> {
        if let Some(direct) = self.direct() {
            let want = round_up(len);
            if offset % ALIGN as u64 == 0 && buf.as_ptr() as usize % ALIGN == 0 && want <= buf.len()
            {
                let mut got = 0;
                while got < len {
                    match direct.read_at(&mut buf[got..want], offset + got as u64) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if is_einval(&e) && got == 0 => {
                            self.give_up_direct();
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if got >= len {
                    return Ok(());
                }
            }
        }
        self.cached.read_exact_at(&mut buf[..len], offset)?;
        // What we just read is not worth keeping cached.
        drop_cache(&self.cached, offset, len as u64);
        Ok(())
    }
}

#[cfg(test)]
thread_local! {
    /// Tests of the path for hosts where `O_DIRECT` is refused.
    static NO_DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn no_direct_for_tests() -> bool {
    NO_DIRECT.with(|c| c.get())
}

#[cfg(not(test))]
fn no_direct_for_tests() -> bool {
    false
}

fn drop_cache(file: &File, offset: u64, len: u64) {
    // SAFETY: advisory syscall on an fd we own; failure only costs cache.
    unsafe {
        nix::libc::posix_fadvise(
            file.as_raw_fd(),
            offset as i64,
            len as i64,
            nix::libc::POSIX_FADV_DONTNEED,
        );
    }
}

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

/// Why the verifier stopped.
enum Readback {
    Io(io::Error),
    /// The medium returned other bytes than were written, first at `offset`.
    Differs {
        offset: u64,
    },
}

/// Fill `buf` as far as the reader goes; returns bytes read (short = EOF).
pub(crate) fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
    io: &SlotIo,
    rx: Receiver<Verify>,
    back: SyncSender<AlignedBuf>,
    written_back: SyncSender<AlignedBuf>,
) -> Result<(u64, String), Readback> {
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
            io.read_chunks_at(&mut bufs, offset).map_err(Readback::Io)?;
        } else {
            for v in batch.iter_mut() {
                for &(a, b) in &v.reread {
                    io.read_at(&mut v.buf[a..], b - a, v.offset + a as u64)
                        .map_err(Readback::Io)?;
                }
            }
        }
        for mut v in batch.drain(..) {
            if crate::failpoint::corrupt("read-back-differs") {
                v.buf[v.len / 2] ^= 0x10;
            }
            let (medium, written) = (&v.buf[..v.len], &v.written[..v.len]);
            if !same(medium, written) {
                let at = medium.iter().zip(written).position(|(a, b)| a != b);
                return Err(Readback::Differs {
                    offset: v.offset + at.unwrap_or(0) as u64,
                });
            }
            hasher.update(medium);
            total += v.len as u64;
            let _ = back.send(v.buf);
            let _ = written_back.send(v.written);
        }
    }
    Ok((total, hex(&hasher.finalize())))
}

/// `a == b` for equal-length slices, in wide words: slice equality calls
/// the C library's `memcmp`, which musl implements a byte at a time.
fn same(a: &[u8], b: &[u8]) -> bool {
    const W: usize = 64;
    let (ac, bc) = (a.chunks_exact(W), b.chunks_exact(W));
    let tails_equal = ac.remainder() == bc.remainder();
    tails_equal
        && ac.zip(bc).all(|(x, y)| {
            let mut diff = 0u64;
            for i in 0..W / 8 {
                let word =
                    |s: &[u8]| u64::from_ne_bytes(s[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                diff |= word(x) ^ word(y);
            }
            diff == 0
        })
}

/// The ranges of `new` that differ from `old`, in whole [`CMP_BLOCK`]s
/// (the last one may be short), adjacent ones merged.
fn changed_runs(old: &[u8], new: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for a in (0..new.len()).step_by(CMP_BLOCK) {
        let b = (a + CMP_BLOCK).min(new.len());
        if !same(&old[a..b], &new[a..b]) {
            match runs.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => runs.push((a, b)),
            }
        }
    }
    runs
}

/// Why the writer stopped early.
enum WriterStop {
    Device(io::Error),
    /// The verifier stopped (its own error says why).
    Verifier,
    /// `before_write` failed: nothing was written.
    BeforeWrite(crate::error::Error),
}

/// What the caller does once, right before the first byte of the slot
/// changes (and not at all when nothing needs writing): the install flow
/// marks the target bad there, so that a failure before it (a server
/// answering 503, a payload cut before its first chunk decoded, a device
/// that cannot be opened) leaves the target as it was.
pub type BeforeWrite<'a> = &'a mut dyn FnMut() -> Result<(), crate::error::Error>;

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
    io: &SlotIo,
    rx: &Receiver<(AlignedBuf, usize)>,
    medium_pool: &Receiver<AlignedBuf>,
    to_verify: &SyncSender<Verify>,
    flush: &SyncSender<()>,
    mode: WriteMode,
    size: u64,
    progress: &mut Progress,
    before_write: BeforeWrite,
) -> (u64, Result<(), WriterStop>) {
    let mut offset = 0u64;
    let mut flush_asked = 0u64;
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
            // Never waits: a flush still running takes the next request later.
            if offset - flush_asked >= FLUSH_EVERY && flush.try_send(()).is_ok() {
                flush_asked = offset;
            }
            progress.advance(n as u64);
            crate::failpoint::hit("chunk-written");
        }
    }
    (offset, Ok(()))
}

/// Decode `payload` (exactly `image.download_size()` bytes) into `device`,
/// hashing the payload as it arrives and the image as read back from the
/// medium after each write. `before_write` runs once before the first byte
/// of `device` changes (see [`BeforeWrite`]).
#[allow(clippy::too_many_arguments)]
pub fn write_image(
    class: &str,
    payload: impl Read + Send,
    image: &Image,
    device: &Path,
    max_window_log: u32,
    mode: WriteMode,
    progress: &mut Progress,
    before_write: BeforeWrite,
) -> Result<Written, InstallError> {
    let what = format!("{class} payload");
    if let Some(w) = image.window_log {
        if w > max_window_log {
            return Err(InstallError::Size {
                what,
                reason: format!("needs a zstd window of 2^{w} bytes, this host allows 2^{max_window_log} (update.max_window_log)"),
            });
        }
    }
    // The decoder allows the window the signed manifest declares (so a
    // payload cannot make us allocate more than its release said), and never
    // more than this host's limit. zstd's smallest window is 2^10.
    let window_log_max = image
        .window_log
        .unwrap_or(max_window_log)
        .clamp(10, max_window_log.max(10));
    let dev_err = |source| InstallError::Device {
        path: device.to_path_buf(),
        source,
    };
    let io = SlotIo::open(device, true).map_err(dev_err)?;
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

    let (flush_tx, flush_rx) = sync_channel::<()>(1);

    let (offset, writer, produced, verified, flushed) = std::thread::scope(|scope| {
        let verifier = scope.spawn({
            let io = &io;
            let written_back = chunk_back.clone();
            move || verify(io, verify_rx, medium_back, written_back)
        });
        let flusher = scope.spawn({
            let io = &io;
            move || -> io::Result<()> {
                for () in flush_rx.iter() {
                    io.cached.sync_data()?;
                }
                Ok(())
            }
        });
        let producer = scope.spawn(move || -> Result<(u64, String), Stop> {
            match compression {
                Compression::None => read_raw(payload, &chunk_pool, &chunk_tx, size),
                Compression::Zstd => {
                    let (in_tx, in_rx) = sync_channel::<(Vec<u8>, usize)>(IN_CHUNKS);
                    let (in_back, in_pool) = sync_channel::<Vec<u8>>(IN_CHUNKS);
                    for _ in 0..IN_CHUNKS {
                        let _ = in_back.send(vec![0u8; IN_CHUNK]);
                    }
                    std::thread::scope(|inner| {
                        let reader = inner.spawn(move || read_payload(payload, in_tx, in_pool));
                        let decoded =
                            decode(in_rx, in_back, &chunk_pool, &chunk_tx, size, window_log_max);
                        drop(chunk_tx);
                        let read = reader.join().unwrap_or_else(|_| {
                            Err(Some(io::Error::other("payload reader panicked")))
                        });
                        match (read, decoded) {
                            // A transport error explains a decoder that ran dry.
                            (Err(Some(e)), _) => Err(Stop::Source(e)),
                            (_, Err(e)) => Err(Stop::Payload(e)),
                            (Err(None), Ok(())) => {
                                Err(Stop::Payload("payload reader stopped".into()))
                            }
                            (Ok(read), Ok(())) => Ok(read),
                        }
                    })
                }
            }
        });
        let (offset, writer) = write_chunks(
            &io,
            &chunk_rx,
            &medium_pool,
            &verify_tx,
            &flush_tx,
            mode,
            size,
            progress,
            before_write,
        );
        drop(verify_tx);
        drop(flush_tx);
        drop(chunk_rx);
        drop(chunk_back);
        drop(medium_pool);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Stop::Payload("decoder thread panicked".into())));
        let verified = verifier
            .join()
            .unwrap_or_else(|_| Err(Readback::Io(io::Error::other("read-back thread panicked"))));
        let flushed = flusher
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("flush thread panicked")));
        (offset, writer, produced, verified, flushed)
    });

    match writer {
        Err(WriterStop::Device(e)) => return Err(dev_err(e)),
        Err(WriterStop::BeforeWrite(e)) => return Err(InstallError::BeforeWrite(Box::new(e))),
        Err(WriterStop::Verifier) | Ok(()) => {}
    }
    flushed.map_err(dev_err)?;
    let verified = verified.map_err(|e| match e {
        Readback::Io(e) => dev_err(e),
        Readback::Differs { offset } => InstallError::Medium {
            path: device.to_path_buf(),
            offset,
        },
    })?;
    let (payload_bytes, payload_sha) = produced.map_err(|stop| match stop {
        Stop::Source(error) => InstallError::Source {
            what: what.clone(),
            error,
        },
        Stop::Payload(reason) => InstallError::Payload {
            what: what.clone(),
            reason,
        },
    })?;
    if payload_sha != image.download_sha256() {
        return Err(InstallError::Mismatch {
            what,
            expected: image.download_sha256().into(),
            actual: payload_sha,
        });
    }
    if offset != size {
        return Err(InstallError::Size {
            what,
            reason: format!("decodes to {offset} bytes, the manifest declares {size}"),
        });
    }
    progress.finish();

    io.cached.sync_all().map_err(dev_err)?;
    crate::failpoint::hit("fsync");
    // Every byte read back equalled the byte written (the verifier
    // compared them), so a wrong hash here is the decoded image's: the
    // payload matched its own signed hash but does not decode to the image
    // the manifest describes.
    let (read_back, readback_sha) = verified;
    if read_back != size || readback_sha != image.sha256 {
        return Err(InstallError::ImageMismatch {
            what: format!("{class} image"),
            expected: image.sha256.clone(),
            actual: readback_sha,
        });
    }
    crate::failpoint::hit("read-back");
    Ok(Written {
        image_bytes: offset,
        payload_bytes,
    })
}

/// A file target (a kernel or UKI on the ESP) is installed whole: the
/// image goes through [`write_image`] into the temporary file this returns
/// (next to `dest`, created empty), then [`replace_file`] renames it over
/// `dest` and syncs the directory. A power cut leaves the old file or the
/// new one, never neither and never a part of one. (Two calls around the
/// one `write_image`, so the pipeline is compiled once.)
pub fn file_temp(dest: &Path) -> Result<PathBuf, InstallError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.abupdate-tmp"));
    File::create(&tmp).map_err(|source| InstallError::Device {
        path: tmp.clone(),
        source,
    })?;
    Ok(tmp)
}

/// Rename the written and verified `tmp` over `dest`, sync the directory.
pub fn replace_file(tmp: &Path, dest: &Path) -> Result<(), InstallError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let dev_err = |path: &Path, source| InstallError::Device {
        path: path.to_path_buf(),
        source,
    };
    std::fs::rename(tmp, dest).map_err(|e| dev_err(dest, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| dev_err(dir, e))?;
    crate::failpoint::hit("file-replaced");
    Ok(())
}

/// SHA-256 of the first `len` bytes of a device as stored on the medium:
/// read with `O_DIRECT` where possible, else with its cached pages dropped
/// first, so the read is not served from memory (and leaves none behind).
pub fn hash_device(file: &File, len: u64) -> io::Result<String> {
    drop_cache(file, 0, len);
    let io = SlotIo::reopen(file)?;
    let mut hasher = Sha256::new();
    let mut buf = AlignedBuf::new(CHUNK);
    let mut offset = 0u64;
    while offset < len {
        let n = ((len - offset) as usize).min(CHUNK);
        io.read_at(&mut buf, n, offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of the first `len` bytes of the device at `path`.
pub fn hash_path(path: &Path, len: u64) -> io::Result<String> {
    hash_device(&File::open(path)?, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_for(data: &[u8], zstd_level: Option<i32>) -> (Image, Vec<u8>) {
        let sha = hex(&Sha256::digest(data));
        match zstd_level {
            None => (
                Image {
                    url: "x".into(),
                    size: data.len() as u64,
                    sha256: sha,
                    compression: Compression::None,
                    download_size: None,
                    download_sha256: None,
                    window_log: None,
                    segments: Vec::new(),
                    deltas: Default::default(),
                },
                data.to_vec(),
            ),
            Some(level) => {
                let payload = zstd::encode_all(data, level).expect("compress");
                (
                    Image {
                        url: "x".into(),
                        size: data.len() as u64,
                        sha256: sha,
                        compression: Compression::Zstd,
                        download_size: Some(payload.len() as u64),
                        download_sha256: Some(hex(&Sha256::digest(&payload))),
                        window_log: None,
                        segments: Vec::new(),
                        deltas: Default::default(),
                    },
                    payload,
                )
            }
        }
    }

    fn target(name: &str, len: u64) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("abupdate-install-{name}-{}", std::process::id()));
        let f = File::create(&p).expect("create");
        f.set_len(len).expect("len");
        p
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn writes_and_verifies_raw_and_zstd() {
        for level in [None, Some(3)] {
            let d = data(9 << 20 | 123);
            let (img, payload) = image_for(&d, level);
            let t = target(&format!("ok{level:?}"), 16 << 20);
            let w = write_image(
                "rootfs",
                &payload[..],
                &img,
                &t,
                27,
                WriteMode::All,
                &mut Progress::new("t", img.size, true),
                &mut || Ok(()),
            )
            .expect("write");
            assert_eq!(w.image_bytes, d.len() as u64);
            let on_disk = std::fs::read(&t).expect("read");
            assert_eq!(&on_disk[..d.len()], &d[..]);
            let _ = std::fs::remove_file(t);
        }
    }

    #[test]
    fn tampered_payload_byte_is_caught() {
        let d = data(5 << 20);
        let (img, mut payload) = image_for(&d, None);
        payload[3 << 20] ^= 1;
        let t = target("tamper", 8 << 20);
        let e = write_image(
            "rootfs",
            &payload[..],
            &img,
            &t,
            27,
            WriteMode::All,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
        )
        .expect_err("tampered payload accepted");
        assert!(matches!(e, InstallError::Mismatch { .. }), "{e}");
        let _ = std::fs::remove_file(t);
    }

    /// The signed payload is intact (its own hash matches) but does not
    /// decode to the image the manifest describes: the release is at fault,
    /// and the message says so rather than blaming the slot.
    #[test]
    fn a_wrong_image_hash_blames_the_release_not_the_medium() {
        for mode in [WriteMode::All, WriteMode::Changed] {
            let d = data(3 << 20 | 77);
            let (mut img, payload) = image_for(&d, Some(3));
            img.sha256 = "0f".repeat(32);
            let t = target(&format!("wrong-image-hash-{mode:?}"), 4 << 20);
            let e = install(&payload, &img, &t, mode).expect_err("wrong image hash accepted");
            assert!(matches!(e, InstallError::ImageMismatch { .. }), "{e}");
            assert_eq!(e.kind(), "hash_mismatch");
            let msg = e.to_string();
            assert!(
                msg.starts_with("rootfs image: the decoded image's SHA-256 is "),
                "{msg}"
            );
            assert!(
                msg.contains(&format!("the signed manifest says {}", "0f".repeat(32))),
                "{msg}"
            );
            assert!(msg.contains("the release is inconsistent"), "{msg}");
            assert!(!msg.contains("read back from"), "{msg}");
            let _ = std::fs::remove_file(t);
        }
    }

    #[test]
    fn payload_decoding_past_declared_size_is_refused() {
        let d = data(3 << 20);
        let (mut img, payload) = image_for(&d, Some(1));
        img.size = 1 << 20;
        let t = target("big", 4 << 20);
        let e = write_image(
            "rootfs",
            &payload[..],
            &img,
            &t,
            27,
            WriteMode::All,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
        )
        .expect_err("oversize accepted");
        assert!(e.to_string().contains("more than"), "{e}");
        // Nothing past the declared size was written.
        let on_disk = std::fs::read(&t).expect("read");
        assert!(on_disk[1 << 20..].iter().all(|&b| b == 0));
        let _ = std::fs::remove_file(t);
    }

    fn install(
        payload: &[u8],
        img: &Image,
        t: &Path,
        mode: WriteMode,
    ) -> Result<Written, InstallError> {
        write_image(
            "rootfs",
            payload,
            img,
            t,
            27,
            mode,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
        )
    }

    #[test]
    fn without_o_direct_it_writes_through_the_cache_and_verifies() {
        NO_DIRECT.with(|c| c.set(true));
        for (mode, level) in [(WriteMode::All, Some(3)), (WriteMode::Changed, None)] {
            let d = data(5 << 20 | 4097);
            let (img, payload) = image_for(&d, level);
            let t = target(&format!("nodirect{level:?}"), 8 << 20);
            install(&payload, &img, &t, mode).expect("write");
            assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
            assert_eq!(hash_path(&t, d.len() as u64).expect("hash"), img.sha256);
            let _ = std::fs::remove_file(t);
        }
        NO_DIRECT.with(|c| c.set(false));
    }

    #[test]
    fn concatenated_zstd_frames_decode_as_one_image() {
        let d = data(3 << 20 | 77);
        let (mut img, _) = image_for(&d, Some(3));
        let mut payload = zstd::encode_all(&d[..1 << 20], 3).expect("frame 1");
        payload.extend(zstd::encode_all(&d[1 << 20..], 3).expect("frame 2"));
        img.download_size = Some(payload.len() as u64);
        img.download_sha256 = Some(hex(&Sha256::digest(&payload)));
        let t = target("frames", 4 << 20);
        install(&payload, &img, &t, WriteMode::All).expect("write");
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
        let _ = std::fs::remove_file(t);
    }

    #[test]
    fn truncated_zstd_payload_is_refused() {
        let d = data(2 << 20);
        let (mut img, payload) = image_for(&d, Some(3));
        let cut = &payload[..payload.len() - 100];
        img.download_size = Some(cut.len() as u64);
        img.download_sha256 = Some(hex(&Sha256::digest(cut)));
        let t = target("cut", 4 << 20);
        let e = install(cut, &img, &t, WriteMode::All).expect_err("truncated accepted");
        assert!(matches!(e, InstallError::Payload { .. }), "{e}");
        let _ = std::fs::remove_file(t);
    }

    #[test]
    fn a_window_larger_than_the_manifest_declares_is_refused() {
        let d = data(4 << 20);
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
        enc.window_log(22).expect("window");
        std::io::Write::write_all(&mut enc, &d).expect("compress");
        let payload = enc.finish().expect("finish");
        let (mut img, _) = image_for(&d, Some(3));
        img.download_size = Some(payload.len() as u64);
        img.download_sha256 = Some(hex(&Sha256::digest(&payload)));
        let t = target("window", 4 << 20);
        img.window_log = Some(22);
        install(&payload, &img, &t, WriteMode::All).expect("declared window");
        img.window_log = Some(20);
        let e = install(&payload, &img, &t, WriteMode::All).expect_err("window accepted");
        assert!(e.to_string().contains("zstd"), "{e}");
        let _ = std::fs::remove_file(t);
    }

    #[test]
    fn same_compares_every_byte() {
        let a = data(1000);
        for len in [0, 1, 63, 64, 65, 1000] {
            assert!(same(&a[..len], &a[..len]));
            for i in 0..len {
                let mut b = a[..len].to_vec();
                b[i] ^= 0x80;
                assert!(!same(&a[..len], &b), "len {len} byte {i}");
            }
        }
    }

    #[test]
    fn changed_runs_are_whole_blocks_merged() {
        let old = vec![0u8; 5 * CMP_BLOCK + 100];
        let mut new = old.clone();
        assert!(changed_runs(&old, &new).is_empty());
        new[CMP_BLOCK + 1] = 1;
        new[2 * CMP_BLOCK] = 1;
        new[5 * CMP_BLOCK + 99] = 1;
        assert_eq!(
            changed_runs(&old, &new),
            vec![
                (CMP_BLOCK, 3 * CMP_BLOCK),
                (5 * CMP_BLOCK, 5 * CMP_BLOCK + 100)
            ]
        );
    }

    #[test]
    fn hash_path_reads_the_device() {
        let d = data(3 << 20 | 5);
        let t = target("hash", 4 << 20);
        std::fs::write(&t, &d).expect("write");
        assert_eq!(
            hash_path(&t, d.len() as u64).expect("hash"),
            hex(&Sha256::digest(&d))
        );
        let _ = std::fs::remove_file(t);
    }

    #[test]
    fn changed_mode_skips_identical_blocks_and_still_verifies() {
        let d = data(12 << 20);
        let (img, payload) = image_for(&d, Some(1));
        let t = target("changed", 12 << 20);
        let mut old = d.clone();
        old[5 << 20] ^= 0xff;
        std::fs::write(&t, &old).expect("seed");
        write_image(
            "rootfs",
            &payload[..],
            &img,
            &t,
            27,
            WriteMode::Changed,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
        )
        .expect("write");
        assert_eq!(std::fs::read(&t).expect("read"), d);
        let _ = std::fs::remove_file(t);
    }
    /// Fails every read: a link that breaks.
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("link broke"))
        }
    }

    #[test]
    fn before_write_runs_once_right_before_the_first_byte_changes() {
        let d = data(3 << 20 | 77);
        let (img, payload) = image_for(&d, Some(3));
        let t = target("arm", 4 << 20);
        let untouched = |t: &Path| std::fs::read(t).expect("read").iter().all(|&b| b == 0);
        let run = |payload: &mut (dyn Read + Send), mode, calls: &mut u32, fail: bool| {
            write_image(
                "rootfs",
                payload,
                &img,
                &t,
                27,
                mode,
                &mut Progress::new("t", img.size, true),
                &mut || {
                    *calls += 1;
                    assert!(untouched(&t), "a byte changed before before_write");
                    match fail {
                        true => Err(crate::error::Error::Usage("no".into())),
                        false => Ok(()),
                    }
                },
            )
        };

        // A link that breaks before the first chunk: never called, and the
        // error is the source's, not the payload's.
        let mut calls = 0;
        let mut cut = (&payload[..1000]).chain(Broken);
        let e = run(&mut cut, WriteMode::All, &mut calls, false).expect_err("cut");
        assert!(matches!(e, InstallError::Source { .. }), "{e}");
        assert_eq!((calls, untouched(&t)), (0, true));

        // Its own failure stops the write before the first byte.
        let e = run(&mut &payload[..], WriteMode::All, &mut calls, true).expect_err("refused");
        assert!(matches!(e, InstallError::BeforeWrite(_)), "{e}");
        assert_eq!((calls, untouched(&t)), (1, true));

        // Once per image, before the first byte.
        calls = 0;
        run(&mut &payload[..], WriteMode::All, &mut calls, false).expect("write");
        assert_eq!(calls, 1);
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);

        // Nothing to change (`--write=changed` over the same image): never.
        calls = 0;
        run(&mut &payload[..], WriteMode::Changed, &mut calls, false).expect("rewrite");
        assert_eq!(calls, 0);
        let _ = std::fs::remove_file(&t);
    }
}
