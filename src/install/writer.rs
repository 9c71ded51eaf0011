//! The one writer of slots: full images (one stream, or segments in
//! parallel) and deltas reach a slot only through [`SlotWriter`], the only
//! code that opens a slot for writing.
//!
//! Invariant: every byte that counts as written was read back from the
//! medium and matched a signed hash. Each write is followed by a read of the
//! same range from the device (never from the page cache), and what the
//! medium returned is what gets hashed: into the image's SHA-256 for a
//! one-stream payload (the caller's pipeline, `install::stream`), into the
//! segment's signed digest for a segment ([`SlotWriter::write_piece`],
//! [`SlotWriter::finish`]; a whole segment at once, read back into the
//! buffer it was written from, [`SlotWriter::write_whole`]). Pieces are
//! also compared with the bytes meant to be there ([`accept`]: other bytes
//! are the medium's fault, named with the device and offset); a whole
//! segment is compared ([`compare`]) only when its digest does not match,
//! to tell the medium's fault from the payload's.
//! Bytes from an earlier run count only after they were read back and
//! matched again ([`SlotWriter::holds`]; a whole slot staged earlier,
//! [`holds_whole`], before an install calls it already staged).
//!
//! How the bytes travel:
//! - **Aligned I/O.** The slot is opened twice: through the page cache
//!   (claiming a block device `O_EXCL` for the whole write, see
//!   [`crate::slot::open_exclusive`]) and with `O_DIRECT` where the device or
//!   file system allows it. Page-aligned buffers and offsets go direct: the
//!   page cache neither grows nor has to be flushed later, and the
//!   workload's cache is left alone. Where `O_DIRECT` is refused (tmpfs,
//!   some FUSE file systems) a write goes through the cache and is pushed to
//!   the device and dropped from the cache (`sync_file_range` +
//!   `POSIX_FADV_DONTNEED`) before it is read back.
//! - **Cache dropping.** A read that had to go through the cache drops what
//!   it read, so the next read of the range asks the device again.
//! - **Flushing.** Once, at the end ([`SlotWriter::sync`]), never mid-way:
//!   a device flush holds up every request queued behind it (a loop
//!   device's flush writes its backing file out and serves nothing else
//!   meanwhile). Flushing every 64 MiB stalled a parallel install 16 times,
//!   0.41 s in all on the bench's 1 GiB, for no gain: until the commit the
//!   target is marked bad, so a power cut mid-way loses nothing that counts
//!   (bench/README.md, "One flush, zero segments, resume from the slot").
//! - **Write-out.** A loop device over a regular file (what the bench and
//!   the tests use, and a slot kept as an image file) copies each direct
//!   write into its backing file's page cache, and the kernel writes those
//!   pages out only at the final flush (or when its dirty limits are
//!   reached): on the bench's 1 GiB that flush waited 0.2–0.3 s with both
//!   cores idle. So the writer asks the kernel to start writing the backing
//!   file out every 16 MiB ([`crate::flush::Push::StartWriteOut`], a
//!   thread of its own), and the flush at the end finds little left. It is
//!   a hint only: the final flush stays the one durability point. A
//!   partition or a disk needs none: a direct write reaches it as made.
//! - **Huge pages.** A segment's buffer (decoded into, written from) is
//!   backed by transparent huge pages where the kernel allows
//!   ([`AlignedBuf`]): 2 pins per 4 MiB `O_DIRECT` request instead of 1024.
//! - **Segment digests.** A segment is checked against its BLAKE3 when the
//!   manifest gives one (new releases: 0.24 CPU-s per GiB here, against
//!   0.66 for SHA-256 on SHA-NI), else its SHA-256.

use super::WriteMode;
use crate::flush::{BackgroundSync, Push};
use crate::manifest::Segment;
use sha2::{Digest as _, Sha256};
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of `O_DIRECT` buffers, offsets and lengths: a page, which
/// covers 512-byte and 4 KiB logical sectors.
pub(crate) const ALIGN: usize = 4096;
/// Granularity of the comparison in [`WriteMode::Changed`].
pub(crate) const CMP_BLOCK: usize = 64 << 10;
/// A segment is read back in pieces of this size (one scratch buffer per
/// thread, whatever the segment size).
pub(crate) const READBACK: usize = 1 << 20;

/// Size and alignment of a transparent huge page on x86-64 and on arm64
/// with 4 KiB pages (elsewhere the advice below is simply not taken).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// A zeroed, page-aligned buffer (what `O_DIRECT` needs). Its memory is
/// lazily backed, so untouched pages cost nothing.
///
/// A buffer of [`HUGE_PAGE`] or more (a segment's: 4 MiB by default) is an
/// anonymous mapping of its own, from a huge-page boundary, advised
/// `MADV_HUGEPAGE` before any of its pages is touched (Debian's default
/// THP mode, `madvise`, honours it). Each segment is decoded into such a
/// buffer, then written from it and read back into it with `O_DIRECT`,
/// which pins every page for the device: with 4 KiB pages that is 1024
/// pins per request and a TLB miss for most of the decoder's
/// back-references. Huge pages took a tenth off the CPU time of an install
/// on the bench (bench/README.md, "Results, 2026-12-04, later"). Where the kernel
/// refuses (THP off, no huge page free, no mapping), the buffer keeps small
/// pages and works the same. A heap allocation would not do: the C
/// library may hand out memory already touched, which the advice no longer
/// changes.
pub(crate) struct AlignedBuf {
    mem: Memory,
    len: usize,
}

enum Memory {
    /// A slightly larger `Vec` and the page-aligned window at `off` in it.
    Heap { vec: Vec<u8>, off: usize },
    /// A mapping of `size` bytes at `base`, owned by the buffer; the buffer
    /// starts at `start`, its first huge-page boundary.
    Mapped {
        base: NonNull<c_void>,
        size: usize,
        start: NonNull<u8>,
    },
}

// SAFETY: a mapped buffer owns its mapping as a `Vec` owns its allocation:
// nothing else holds the address, and its bytes are reached only through
// `&self` (shared reads) or `&mut self` (exclusive writes).
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; `&AlignedBuf` gives read-only access to plain bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        if len >= HUGE_PAGE {
            if let Some(mem) = Memory::huge(len) {
                return AlignedBuf { mem, len };
            }
        }
        let vec = vec![0u8; len + ALIGN];
        let off = vec.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf {
            mem: Memory::Heap { vec, off },
            len,
        }
    }
}

impl Memory {
    /// A fresh mapping holding `len` bytes from a huge-page boundary, its
    /// whole huge pages advised `MADV_HUGEPAGE`; `None` if refused.
    fn huge(len: usize) -> Option<Memory> {
        use nix::sys::mman::{madvise, mmap_anonymous, MapFlags, MmapAdvise, ProtFlags};
        let size = len.checked_add(HUGE_PAGE)?;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // picks aliases no memory of ours.
        let base = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(size)?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .ok()?;
        let addr = base.as_ptr() as usize;
        let skip = addr.next_multiple_of(HUGE_PAGE) - addr;
        // SAFETY: `skip < HUGE_PAGE`, so `start` and the `len` bytes after
        // it lie inside the `len + HUGE_PAGE` bytes mapped at `base`.
        let start = unsafe { NonNull::new_unchecked(base.as_ptr().cast::<u8>().add(skip)) };
        // SAFETY: the advised range lies inside the mapping (above) and
        // starts on a huge-page boundary; the advice changes how its pages
        // are backed, never their contents. Advice only: its result does
        // not matter.
        let _ = unsafe {
            madvise(
                start.cast(),
                len / HUGE_PAGE * HUGE_PAGE,
                MmapAdvise::MADV_HUGEPAGE,
            )
        };
        Some(Memory::Mapped { base, size, start })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Memory::Mapped { base, size, .. } = self.mem {
            // SAFETY: the mapping is this buffer's alone, and no borrow of
            // its bytes outlives the buffer.
            let _ = unsafe { nix::sys::mman::munmap(base, size) };
        }
    }
}

impl AlignedBuf {
    /// How many bytes of the mapping that holds this buffer the kernel
    /// backs with huge pages (`AnonHugePages` in `/proc/self/smaps`).
    #[cfg(test)]
    pub(crate) fn huge_backed_bytes(&self) -> Option<u64> {
        let start = self.as_ptr() as u64;
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    inside = a <= start && start < b;
                    continue;
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    return kb
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .map(|k| k << 10);
                }
            }
        }
        None
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.mem {
            Memory::Heap { vec, off } => &vec[*off..*off + self.len],
            // SAFETY: `len` bytes from `start` lie inside the live mapping
            // (`Memory::huge`), zero-filled by the kernel, and are borrowed
            // no longer than `self`.
            Memory::Mapped { start, .. } => unsafe {
                std::slice::from_raw_parts(start.as_ptr(), self.len)
            },
        }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.mem {
            Memory::Heap { vec, off } => &mut vec[*off..*off + self.len],
            // SAFETY: as in `deref`, and `&mut self` makes the borrow
            // exclusive.
            Memory::Mapped { start, .. } => unsafe {
                std::slice::from_raw_parts_mut(start.as_ptr(), self.len)
            },
        }
    }
}

pub(crate) fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EINVAL)
}

/// A device open twice: through the page cache, and with `O_DIRECT` where
/// the device or file system allows it.
struct SlotIo {
    cached: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl SlotIo {
    /// For writing: the first open claims a block device exclusively; the
    /// claim belongs to that file, so the direct open must not ask again.
    fn open_for_write(path: &Path) -> io::Result<SlotIo> {
        let cached = crate::slot::open_exclusive(path, true, 0)?;
        let direct = if no_direct_for_tests() {
            None
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_DIRECT)
                .open(path)
                .ok()
        };
        Ok(SlotIo {
            direct_ok: AtomicBool::new(direct.is_some()),
            cached,
            direct,
        })
    }

    /// The same open file as `file`, once more, for reading: with
    /// `O_DIRECT` if possible.
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

    /// Have the device zero `[offset, offset + len)` itself, without the
    /// zeros crossing from memory: `BLKZEROOUT` on a block device (a loop
    /// device turns it into `fallocate` on its backing file; flash without
    /// a write-zeroes command gets zero pages from the kernel), `fallocate`
    /// with `FALLOC_FL_ZERO_RANGE` on a file. False where neither is
    /// supported (or the range is not sector-aligned): the caller writes.
    fn zero_range(&self, offset: u64, len: u64) -> bool {
        use std::os::unix::fs::FileTypeExt;
        /// `_IO(0x12, 127)` from linux/fs.h: takes `{start, length}`.
        const BLKZEROOUT: u64 = 0x127f;
        let fd = self.cached.as_raw_fd();
        let block = self
            .cached
            .metadata()
            .is_ok_and(|m| m.file_type().is_block_device());
        let r = if block {
            let range: [u64; 2] = [offset, len];
            // SAFETY: BLKZEROOUT reads two u64s from the pointer, which
            // points at `range`, alive for the call; fd is ours.
            unsafe { nix::libc::ioctl(fd, BLKZEROOUT as _, range.as_ptr()) }
        } else {
            let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
                return false;
            };
            // SAFETY: plain syscall on an fd we own.
            unsafe {
                nix::libc::fallocate(
                    fd,
                    nix::libc::FALLOC_FL_ZERO_RANGE | nix::libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    n,
                )
            }
        };
        r == 0
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
    pub(crate) static NO_DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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

/// Why bytes did not count as written.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The device refused a read or a write.
    Io(io::Error),
    /// The medium returned other bytes than were written, first at `offset`.
    Medium { offset: u64 },
    /// The step before the first write (marking the target bad) failed;
    /// nothing was written.
    Arm(Box<crate::error::Error>),
    /// Another thread stopped the install (its own fault says why).
    Stopped,
    /// The payload's source failed while a frame was read once more to
    /// tell a read-back fault's cause (`segments::medium_or_payload`): a
    /// transport failure or a download window that closed, the error
    /// inside says which. Neither the medium nor the release is proven at
    /// fault, so neither is blamed: the run ends as that failure of the
    /// source (`InstallError::Source`).
    Source(io::Error),
    /// The segment at `offset` read back hashes to `actual`, not to the
    /// signed `expected`. With `medium_checked`, what was read back was
    /// found equal to what was written: the payload does not decode to the
    /// signed image. Without, nobody could compare them
    /// ([`SlotWriter::write_whole`]).
    Digest {
        offset: u64,
        length: u64,
        algorithm: &'static str,
        expected: String,
        actual: String,
        medium_checked: bool,
    },
}

impl Fault {
    /// A [`Fault::Digest`] with `medium_checked` set to `checked`; any other
    /// fault as it is.
    pub(crate) fn medium_checked(mut self, checked: bool) -> Fault {
        if let Fault::Digest { medium_checked, .. } = &mut self {
            *medium_checked = checked;
        }
        self
    }
}

/// What the medium returned (`medium`) for the bytes written at `offset`
/// (`written`): equal, or where the first difference lies.
pub(crate) fn accept(medium: &mut [u8], written: &[u8], offset: u64) -> Result<(), Fault> {
    as_read_back(medium, offset);
    compare(medium, written, offset)
}

/// `medium` was just read back from the slot at `offset`: the
/// `read-back-differs` failpoint flips a bit of it here, as a failing
/// medium would.
fn as_read_back(medium: &mut [u8], offset: u64) {
    if crate::failpoint::corrupt("read-back-differs", offset) {
        let mid = medium.len() / 2;
        if let Some(b) = medium.get_mut(mid) {
            *b ^= 0x10;
        }
    }
}

/// `medium` (read back from `offset`) equals `written`, or the medium's
/// fault at the first byte that differs.
pub(crate) fn compare(medium: &[u8], written: &[u8], offset: u64) -> Result<(), Fault> {
    if same(medium, written) {
        return Ok(());
    }
    let at = medium.iter().zip(written).position(|(a, b)| a != b);
    Err(Fault::Medium {
        offset: offset + at.unwrap_or(0) as u64,
    })
}

/// `a == b`, 64 bytes per step. Every byte written is compared once with
/// what the medium returned, so this runs over the whole image: slice
/// equality calls the C library's `memcmp`, which musl implements a byte at
/// a time, and a word loop is not vectorised at the size-optimised level
/// the crate is built with (`opt-level = "z"`), where it cost a fifth of an
/// install's CPU (bench/README.md). SSE2 is part of x86-64 and of Rust's
/// i686 targets; other architectures take the word loop.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    const W: usize = 64;
    if a.len() != b.len() {
        return false;
    }
    let (ac, bc) = (a.chunks_exact(W), b.chunks_exact(W));
    ac.remainder() == bc.remainder() && ac.zip(bc).all(|(x, y)| same_block(x, y))
}

/// Two 64-byte blocks are equal (SSE2: four 16-byte lanes XORed and ORed,
/// one test).
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "x86", target_feature = "sse2")
))]
#[inline(always)]
fn same_block(x: &[u8], y: &[u8]) -> bool {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;
    assert!(x.len() >= 64 && y.len() >= 64);
    // SAFETY: SSE2 is available (the cfg above); both slices hold at least
    // 64 bytes (asserted), read with unaligned loads.
    unsafe {
        let (p, q) = (x.as_ptr().cast::<__m128i>(), y.as_ptr().cast::<__m128i>());
        let lane = |i: usize| _mm_xor_si128(_mm_loadu_si128(p.add(i)), _mm_loadu_si128(q.add(i)));
        let diff = _mm_or_si128(
            _mm_or_si128(lane(0), lane(1)),
            _mm_or_si128(lane(2), lane(3)),
        );
        _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) == 0xFFFF
    }
}

/// Two 64-byte blocks are equal (eight words).
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "x86", target_feature = "sse2")
)))]
fn same_block(x: &[u8], y: &[u8]) -> bool {
    x.chunks_exact(8)
        .zip(y.chunks_exact(8))
        .fold(0u64, |diff, (a, b)| {
            let word = |s: &[u8]| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]));
            diff | (word(a) ^ word(b))
        })
        == 0
}

/// The ranges of `new` that differ from `old`, in whole [`CMP_BLOCK`]s
/// (the last one may be short), adjacent ones merged.
pub(crate) fn changed_runs(old: &[u8], new: &[u8]) -> Vec<(usize, usize)> {
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

/// A signed digest to check a segment against: its BLAKE3 when the
/// manifest gives one (cheaper to compute), else its SHA-256.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signed<'a> {
    Blake3(&'a str),
    Sha256(&'a str),
}

impl<'a> Signed<'a> {
    pub(crate) fn of(seg: &'a Segment) -> Signed<'a> {
        match &seg.blake3 {
            Some(b) => Signed::Blake3(b),
            None => Signed::Sha256(&seg.sha256),
        }
    }

    fn expected(self) -> &'a str {
        match self {
            Signed::Blake3(h) | Signed::Sha256(h) => h,
        }
    }

    fn algorithm(self) -> &'static str {
        match self {
            Signed::Blake3(_) => "BLAKE3",
            Signed::Sha256(_) => "SHA-256",
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            Signed::Blake3(_) => Hasher::Blake3(Box::default()),
            Signed::Sha256(_) => Hasher::Sha256(Box::default()),
        }
    }
}

/// Which segments are free space in a file system image: their signed
/// digest is that of as many zero bytes. Such a segment is written with
/// [`SlotWriter::zero_segment`]. The digest of zeros is computed once per
/// length and algorithm (an image's segments have one or two lengths).
#[derive(Debug, Default)]
pub(crate) struct ZeroDigests {
    known: Vec<(u64, &'static str, String)>,
}

impl ZeroDigests {
    /// Whether `seg`'s signed digest is that of `seg.length` zero bytes.
    pub(crate) fn is_zero(&mut self, seg: &Segment) -> bool {
        let signed = Signed::of(seg);
        let algorithm = signed.algorithm();
        let found = self
            .known
            .iter()
            .position(|(len, alg, _)| *len == seg.length && *alg == algorithm);
        let at = found.unwrap_or_else(|| {
            let digest = zero_digest(signed, seg.length);
            self.known.push((seg.length, algorithm, digest));
            self.known.len() - 1
        });
        self.known[at].2 == signed.expected()
    }
}

/// The digest of `len` zero bytes, in `signed`'s algorithm.
fn zero_digest(signed: Signed, len: u64) -> String {
    let zeros = [0u8; 64 << 10];
    let mut hasher = signed.hasher();
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        hasher.update(&zeros[..n]);
        left -= n as u64;
    }
    hasher.finalize()
}

enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(Box<Sha256>),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    fn finalize(self) -> String {
        match self {
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
            Hasher::Sha256(h) => super::hex(&h.finalize()),
        }
    }
}

/// One segment on its way into the slot: where it goes, what it must hash
/// to, and the bytes read back so far.
pub(crate) struct SegmentWrite<'a> {
    offset: u64,
    length: u64,
    done: u64,
    signed: Signed<'a>,
    hasher: Hasher,
}

/// The slot being written (see the module docs). Shared by the threads of
/// one install (`&SlotWriter` is `Sync`).
pub(crate) struct SlotWriter {
    io: SlotIo,
    path: PathBuf,
    /// For a loop device over a cached file: its pages are written out as
    /// the install goes (module docs, "Write-out").
    write_out: Option<BackgroundSync>,
}

/// How many bytes written to a loop-device slot between two requests to
/// start writing its backing file out: small enough that the write-out
/// keeps pace with the install, large enough that a request finds work.
const WRITE_OUT_EVERY: u64 = 16 << 20;

/// A background write-out of the file behind `slot`, when `slot` is a loop
/// device that writes a regular file through the page cache. Anything
/// else (a partition, a disk, a loop device doing direct I/O, a file)
/// already sends what it is given to its storage.
fn write_out_for(slot: &File) -> Option<BackgroundSync> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = slot.metadata().ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let dev = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let backing = crate::slot::Sysfs::system().cached_loop_file(dev)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(backing)
        .ok()?;
    BackgroundSync::start(
        &file,
        "slot-write-out",
        WRITE_OUT_EVERY,
        Push::StartWriteOut,
    )
    .ok()
}

impl SlotWriter {
    /// Open the slot device at `path` for writing (claimed exclusively).
    pub(crate) fn open(path: &Path) -> io::Result<SlotWriter> {
        let io = SlotIo::open_for_write(path)?;
        let write_out = write_out_for(&io.cached);
        Ok(SlotWriter {
            io,
            path: path.to_path_buf(),
            write_out,
        })
    }

    /// `n` more bytes were written (counted towards the next write-out).
    fn wrote(&self, n: usize) {
        if let Some(w) = &self.write_out {
            w.wrote(n as u64);
        }
    }

    /// Whether this slot's backing file is written out as the install goes.
    #[cfg(test)]
    pub(crate) fn writes_out(&self) -> bool {
        self.write_out.is_some()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Write `data` (page-aligned in memory when it can go direct) at
    /// `offset`. On return the bytes have reached the device and are not
    /// kept in the page cache, so a read-back sees the device's bytes.
    pub(crate) fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.io.write_at(data, offset)?;
        self.wrote(data.len());
        Ok(())
    }

    /// Write whole chunks back to back from `offset`, in one system call
    /// where possible (several device requests in flight).
    pub(crate) fn write_chunks_at(&self, chunks: &[&[u8]], offset: u64) -> io::Result<()> {
        self.io.write_chunks_at(chunks, offset)?;
        self.wrote(chunks.iter().map(|c| c.len()).sum());
        Ok(())
    }

    /// Read exactly `len` bytes at `offset` into `buf` (page-aligned when
    /// `offset` is, and at least `len` rounded up to a page long), from the
    /// device rather than from the page cache.
    pub(crate) fn read_at(&self, buf: &mut [u8], len: usize, offset: u64) -> io::Result<()> {
        self.io.read_at(buf, len, offset)
    }

    /// Read whole chunks back to back from `offset` (see
    /// [`SlotWriter::write_chunks_at`]); each buffer is filled to its `len`.
    pub(crate) fn read_chunks_at(
        &self,
        bufs: &mut [(&mut [u8], usize)],
        offset: u64,
    ) -> io::Result<()> {
        self.io.read_chunks_at(bufs, offset)
    }

    /// Make what was written so far durable (before a journal says so).
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.io.cached.sync_data()
    }

    /// The end of the write: one fsync for everything written (after the
    /// background write-out, if any, has stopped: it promises nothing).
    pub(crate) fn sync(mut self) -> io::Result<()> {
        if let Some(mut w) = self.write_out.take() {
            // A refused write-out ends quietly; any other error of the
            // file's write-back is the fsync's to report.
            let _ = w.stop();
        }
        self.io.cached.sync_all()
    }

    /// Start writing `seg`.
    pub(crate) fn begin<'a>(&self, seg: &'a Segment) -> SegmentWrite<'a> {
        let signed = Signed::of(seg);
        SegmentWrite {
            offset: seg.offset,
            length: seg.length,
            done: 0,
            signed,
            hasher: signed.hasher(),
        }
    }

    /// The next `data.len()` bytes of segment `seg` (which the caller keeps
    /// within its length): written, read back piece by piece into `scratch`
    /// ([`READBACK`] bytes, page-aligned), compared and hashed as read. In
    /// [`WriteMode::Changed`] the medium is read first and only the blocks
    /// that differ are written. `arm` runs before any byte is written (it
    /// may be called more than once: the caller makes it idempotent).
    pub(crate) fn write_piece(
        &self,
        seg: &mut SegmentWrite,
        data: &[u8],
        scratch: &mut AlignedBuf,
        mode: WriteMode,
        arm: &mut dyn FnMut() -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let start = seg.offset + seg.done;
        if mode == WriteMode::All && !data.is_empty() {
            arm()?;
            self.write_at(data, start).map_err(Fault::Io)?;
        }
        for a in (0..data.len()).step_by(READBACK) {
            let b = (a + READBACK).min(data.len());
            let (piece, at) = (&data[a..b], start + a as u64);
            let n = piece.len();
            if mode == WriteMode::Changed {
                let runs = match self.read_at(scratch, n, at) {
                    Ok(()) => changed_runs(&scratch[..n], piece),
                    // Unreadable (e.g. past the end of a short file): write it.
                    Err(_) => vec![(0, n)],
                };
                if !runs.is_empty() {
                    arm()?;
                }
                for &(x, y) in &runs {
                    self.write_at(&piece[x..y], at + x as u64)
                        .map_err(Fault::Io)?;
                    self.read_at(&mut scratch[x..], y - x, at + x as u64)
                        .map_err(Fault::Io)?;
                }
            } else {
                self.read_at(scratch, n, at).map_err(Fault::Io)?;
            }
            accept(&mut scratch[..n], piece, at)?;
            seg.hasher.update(&scratch[..n]);
        }
        seg.done += data.len() as u64;
        Ok(())
    }

    /// Write all of segment `seg` from `buf` (page-aligned, its first
    /// `seg.length` bytes the segment, at least that rounded up to a page
    /// long), read the range back into `buf` itself in one request, and
    /// hash what the medium returned. `arm` runs before the write.
    ///
    /// What the medium returned is not compared with what was written: its
    /// digest matching the signed one is the proof that the medium holds
    /// the signed bytes. On a [`Fault::Digest`], `buf` holds what the
    /// medium returned, and only the caller, who can decode the segment
    /// again, can tell a medium that returned other bytes ([`compare`]) from
    /// a payload that decodes to other bytes than were signed.
    pub(crate) fn write_whole(
        &self,
        seg: &Segment,
        buf: &mut [u8],
        arm: &mut dyn FnMut() -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let len = usize::try_from(seg.length).unwrap_or(usize::MAX);
        let Some(data) = buf.get_mut(..len) else {
            return Err(Fault::Io(io::Error::other(format!(
                "segment at {} is longer than its buffer",
                seg.offset
            ))));
        };
        arm()?;
        self.write_at(data, seg.offset).map_err(Fault::Io)?;
        self.read_at(buf, len, seg.offset).map_err(Fault::Io)?;
        let medium = &mut buf[..len];
        as_read_back(medium, seg.offset);
        let mut w = self.begin(seg);
        w.hasher.update(medium);
        w.done = seg.length;
        self.finish(w).map_err(|fault| fault.medium_checked(false))
    }

    /// The segment is complete: its bytes, as read back, hash to its
    /// signed digest. (Every piece was compared with what was written as it
    /// was read back: a mismatch here is the payload's.)
    pub(crate) fn finish(&self, seg: SegmentWrite) -> Result<(), Fault> {
        let actual = seg.hasher.finalize();
        if seg.done == seg.length && actual == seg.signed.expected() {
            return Ok(());
        }
        Err(Fault::Digest {
            offset: seg.offset,
            length: seg.done,
            algorithm: seg.signed.algorithm(),
            expected: seg.signed.expected().to_string(),
            actual,
            medium_checked: true,
        })
    }

    /// Write `run`, segments back to back whose signed digests are each
    /// that of as many zero bytes ([`zero_digest`]), without decoding or
    /// sending them: the device zeroes the range itself where it can
    /// (`SlotIo::zero_range`), else the zeros are written from `zeros` (a
    /// zero buffer of at most [`READBACK`]). Then each segment is read back
    /// in pieces and compared with `zeros`: what the medium returned
    /// equals, byte for byte, bytes whose digest is the signed one, so it
    /// matched its signed digest without being hashed again; `counted`
    /// gets its place in `run` then. The whole run is one request: on a
    /// loop device over ext4 each zeroing waits for the file system's
    /// journal, 32 requests of 4 MiB took 41 ms against 5-16 ms for one of
    /// 128 MiB (bench/README.md). In [`WriteMode::Changed`] a segment that
    /// reads back all zeros already is not written, and the others are
    /// zeroed one by one. `arm` runs before any byte is written. A fault
    /// names the place in `run` of the segment it stopped at; once
    /// `stopped` says so (another thread's fault), that is the next
    /// segment, with [`Fault::Stopped`]: nothing more is read or counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn zero_segments(
        &self,
        run: &[Segment],
        zeros: &[u8],
        scratch: &mut AlignedBuf,
        mode: WriteMode,
        arm: &mut dyn FnMut() -> Result<(), Fault>,
        counted: &mut dyn FnMut(usize),
        stopped: &dyn Fn() -> bool,
    ) -> Result<(), (usize, Fault)> {
        let read_back = |seg: &Segment, scratch: &mut AlignedBuf| -> Result<(), Fault> {
            if stopped() {
                return Err(Fault::Stopped);
            }
            let end = seg.offset.saturating_add(seg.length);
            let mut at = seg.offset;
            while at < end {
                let n = ((end - at) as usize)
                    .min(READBACK)
                    .min(zeros.len())
                    .min(scratch.len());
                self.read_at(scratch, n, at).map_err(Fault::Io)?;
                accept(&mut scratch[..n], &zeros[..n], at)?;
                at += n as u64;
            }
            Ok(())
        };
        // The pieces of `run` (places in it) to zero: all of it at once, or
        // in `Changed` mode each segment that does not read as zeros yet.
        let mut pieces = Vec::new();
        if mode == WriteMode::Changed {
            for (i, seg) in run.iter().enumerate() {
                match read_back(seg, scratch) {
                    Ok(()) => counted(i),
                    Err(Fault::Stopped) => return Err((i, Fault::Stopped)),
                    Err(_) => pieces.push(i..i + 1),
                }
            }
        } else if !run.is_empty() {
            pieces.push(0..run.len());
        }
        for piece in pieces {
            arm().map_err(|f| (piece.start, f))?;
            let first = &run[piece.start];
            let last = &run[piece.end - 1];
            let end = last.offset.saturating_add(last.length);
            if !self.io.zero_range(first.offset, end - first.offset) {
                let mut at = first.offset;
                while at < end {
                    if stopped() {
                        return Err((piece.start, Fault::Stopped));
                    }
                    let n = ((end - at) as usize).min(zeros.len());
                    self.write_at(&zeros[..n], at)
                        .map_err(|e| (piece.start, Fault::Io(e)))?;
                    at += n as u64;
                }
            }
            for i in piece {
                read_back(&run[i], scratch).map_err(|f| (i, f))?;
                counted(i);
            }
        }
        Ok(())
    }

    /// Whether the slot already holds `seg`: its bytes, read from the
    /// medium, hash to its signed digest (for segments an earlier run
    /// wrote).
    pub(crate) fn holds(&self, seg: &Segment, scratch: &mut AlignedBuf) -> io::Result<bool> {
        io_holds(&self.io, seg, scratch)
    }
}

/// Whether `io` holds `seg`: its bytes, read from the medium, hash to its
/// signed digest.
fn io_holds(io: &SlotIo, seg: &Segment, scratch: &mut AlignedBuf) -> io::Result<bool> {
    let signed = Signed::of(seg);
    let mut hasher = signed.hasher();
    let mut at = seg.offset;
    let end = seg.offset.saturating_add(seg.length);
    while at < end {
        let n = ((end - at) as usize).min(READBACK);
        io.read_at(scratch, n, at)?;
        hasher.update(&scratch[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize() == signed.expected())
}

/// How a slot is checked to hold a whole image.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Whole<'a> {
    /// Each segment of the signed table (they tile the image: the manifest
    /// checked it) against its own digest, BLAKE3 when given; the first
    /// that differs ends the read.
    Segments(&'a [Segment]),
    /// The image's signed SHA-256 over its `size` bytes.
    Sha256 { size: u64, sha256: &'a str },
}

/// Whether the device or file at `path` holds an image, read from the
/// medium (not the page cache) without opening it for writing: what an
/// install staged earlier is taken as staged only after this. A device
/// shorter than the image does not hold it.
pub fn holds_whole(path: &Path, whole: Whole) -> io::Result<bool> {
    let file = match File::open(path) {
        // A file target (on the ESP) removed since: nothing is held.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        f => f?,
    };
    let io = SlotIo::reopen(&file)?;
    let size = match whole {
        Whole::Segments(segs) => segs.last().map_or(0, |s| s.offset.saturating_add(s.length)),
        Whole::Sha256 { size, .. } => size,
    };
    drop_cache(&file, 0, size);
    let all_segments = |segs: &[Segment]| -> io::Result<bool> {
        let mut scratch = AlignedBuf::new(READBACK);
        for seg in segs {
            if !io_holds(&io, seg, &mut scratch)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let result = match whole {
        Whole::Segments(segs) => all_segments(segs),
        Whole::Sha256 { size, sha256 } => hash_device(&file, size).map(|h| h == sha256),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        r => r,
    }
}

/// SHA-256 of the first `len` bytes of a device as stored on the medium:
/// read with `O_DIRECT` where possible, else with its cached pages dropped
/// first, so the read is not served from memory (and leaves none behind).
pub fn hash_device(file: &File, len: u64) -> io::Result<String> {
    const CHUNK: usize = 512 << 10;
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
    Ok(super::hex(&hasher.finalize()))
}

/// SHA-256 of the first `len` bytes of the device at `path`.
pub fn hash_path(path: &Path, len: u64) -> io::Result<String> {
    hash_device(&File::open(path)?, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{image_bytes as data, sized_target as target, TempDir};

    /// A loop device over `file`, detached when dropped.
    struct LoopDevice(PathBuf);

    impl LoopDevice {
        /// `None` where loop devices cannot be set up (not root).
        fn attach(file: &Path) -> Option<LoopDevice> {
            let out = std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(file)
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Some(LoopDevice(PathBuf::from(dev)))
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&self.0)
                .output();
        }
    }

    /// Pages of `file` the kernel holds dirty (`cachestat`, Linux 6.5),
    /// `None` where the call is missing.
    fn dirty_pages(file: &Path) -> Option<u64> {
        /// `cachestat`'s number on every architecture.
        const SYS_CACHESTAT: nix::libc::c_long = 451;
        let f = File::open(file).expect("open backing file");
        // `struct cachestat_range`: offset and length (0: to the end).
        let range = [0u64, 0u64];
        // `struct cachestat`: cache, dirty, writeback, evicted, recently
        // evicted pages.
        let mut stat = [0u64; 5];
        // SAFETY: the kernel reads `range` and writes `stat`, both alive and
        // of the sizes of `struct cachestat_range` and `struct cachestat`.
        let r = unsafe {
            nix::libc::syscall(
                SYS_CACHESTAT,
                f.as_raw_fd(),
                range.as_ptr(),
                stat.as_mut_ptr(),
                0,
            )
        };
        (r == 0).then_some(stat[1])
    }

    #[test]
    fn a_loop_device_over_a_cached_file_has_that_file_written_out_as_the_install_goes() {
        const LEN: usize = 64 << 20;
        let (_dir, file) = target("write-out", LEN as u64);
        let Some(dev) = LoopDevice::attach(&file) else {
            crate::say!("skipped: no loop device here (needs root)");
            return;
        };
        if dirty_pages(&file).is_none() {
            crate::say!("skipped: no cachestat on this kernel");
            return;
        }
        let mut bytes = AlignedBuf::new(LEN);
        bytes.copy_from_slice(&data(LEN));
        let write = |w: &SlotWriter| {
            for at in (0..LEN).step_by(WRITE_OUT_EVERY as usize) {
                let piece = &bytes[at..at + WRITE_OUT_EVERY as usize];
                w.write_at(piece, at as u64).expect("write");
            }
        };
        let pages = (LEN / 4096) as u64;
        // Without the write-out, the loop device leaves every page dirty
        // until the flush.
        let mut w = SlotWriter::open(&dev.0).expect("open the loop device");
        assert!(w.writes_out(), "no write-out for a loop device over a file");
        w.write_out = None;
        write(&w);
        let dirty = dirty_pages(&file).expect("cachestat");
        assert!(dirty > pages * 3 / 4, "only {dirty} of {pages} pages dirty");
        w.sync().expect("sync");
        // With it, once its thread has stopped every page written was
        // queued for writing: at most what was written during its last
        // pass is still dirty.
        let mut w = SlotWriter::open(&dev.0).expect("open the loop device");
        write(&w);
        if let Some(mut out) = w.write_out.take() {
            out.stop().expect("stop the write-out");
        }
        let dirty = dirty_pages(&file).expect("cachestat");
        assert!(dirty <= pages / 4, "{dirty} of {pages} pages still dirty");
        w.sync().expect("sync");
        // A plain file needs none: direct writes reach its storage.
        let (_d, plain) = target("write-out-file", 4096);
        assert!(!SlotWriter::open(&plain).expect("open").writes_out());
    }

    #[test]
    fn a_segment_is_zero_when_its_signed_digest_is_that_of_zeros_in_either_algorithm() {
        let mut known = ZeroDigests::default();
        for blake3 in [true, false] {
            assert!(known.is_zero(&segment(0, &[0u8; 8192], blake3)));
            assert!(known.is_zero(&segment(8192, &[0u8; 8192], blake3)));
            let mut shorter = segment(0, &[0u8; 4096], blake3);
            shorter.length = 8192;
            assert!(!known.is_zero(&shorter));
            let mut one = [0u8; 8192];
            one[8191] = 1;
            assert!(!known.is_zero(&segment(0, &one, blake3)));
        }
        // One hash of zeros per length and algorithm.
        assert_eq!(known.known.len(), 2, "{known:?}");
    }

    /// The device zeroes the range (old bytes under it gone), the read-back
    /// is all zeros; in `Changed` mode a range that already reads as zeros
    /// is not written (nothing armed). On ext4 the file system zeroes the
    /// range (`FALLOC_FL_ZERO_RANGE`); tmpfs cannot, and the zeros are
    /// written.
    #[test]
    fn a_zero_segment_replaces_old_bytes_and_is_not_written_again_when_changed() {
        let shm = Path::new("/dev/shm");
        let (_dir, on_disk) = target("zero-seg", 3 << 20);
        let in_shm = shm
            .is_dir()
            .then(|| TempDir::in_dir(shm, "writer-zero-seg"));
        let mut targets = vec![on_disk];
        targets.extend(in_shm.as_ref().map(|d| d.join("target")));
        for t in targets {
            zero_segment_case(&t);
        }
    }

    fn zero_segment_case(t: &Path) {
        std::fs::write(t, vec![0xa5u8; 3 << 20]).expect("old bytes");
        let seg = segment(1 << 20, &vec![0u8; 1 << 20], true);
        let w = SlotWriter::open(t).expect("open");
        let zeros = AlignedBuf::new(READBACK);
        let mut scratch = AlignedBuf::new(READBACK);
        let mut armed = 0;
        for mode in [WriteMode::All, WriteMode::Changed] {
            let mut counted = Vec::new();
            w.zero_segments(
                std::slice::from_ref(&seg),
                &zeros,
                &mut scratch,
                mode,
                &mut || {
                    armed += 1;
                    Ok(())
                },
                &mut |i| counted.push(i),
                &|| false,
            )
            .map_err(|(i, f)| format!("{i}: {f:?}"))
            .expect("zeroed");
            assert_eq!(counted, [0], "{}: {mode:?}", t.display());
        }
        assert_eq!(armed, 1, "{}: the changed pass wrote again", t.display());
        drop(w);
        let on_disk = std::fs::read(t).expect("read");
        assert!(on_disk[..1 << 20].iter().all(|&b| b == 0xa5));
        assert!(
            on_disk[1 << 20..2 << 20].iter().all(|&b| b == 0),
            "{}",
            t.display()
        );
        assert!(on_disk[2 << 20..].iter().all(|&b| b == 0xa5));
    }

    /// Another thread's fault stops the zeroer between segments: what it
    /// had not read back yet is neither read nor counted (a run of free
    /// space can be gigabytes: review 12 saw 2 GiB read back after the
    /// first fault).
    #[test]
    fn a_stopped_zeroer_reads_back_and_counts_no_further_segment() {
        let (_dir, t) = target("zero-stop", 4 << 20);
        let run: Vec<Segment> = (0..4u64)
            .map(|i| segment(i << 20, &vec![0u8; 1 << 20], true))
            .collect();
        let w = SlotWriter::open(&t).expect("open");
        let zeros = AlignedBuf::new(READBACK);
        let mut scratch = AlignedBuf::new(READBACK);
        for mode in [WriteMode::All, WriteMode::Changed] {
            let counted = std::cell::RefCell::new(Vec::new());
            let stopped = || counted.borrow().len() >= 2;
            let result = w.zero_segments(
                &run,
                &zeros,
                &mut scratch,
                mode,
                &mut || Ok(()),
                &mut |i| counted.borrow_mut().push(i),
                &stopped,
            );
            assert!(
                matches!(result, Err((2, Fault::Stopped))),
                "{mode:?}: {:?}",
                result.map_err(|(i, f)| format!("{i}: {f:?}"))
            );
            assert_eq!(*counted.borrow(), [0, 1], "{mode:?}");
        }
    }

    fn segment(offset: u64, bytes: &[u8], blake3: bool) -> Segment {
        Segment {
            offset,
            length: bytes.len() as u64,
            sha256: super::super::hex(&Sha256::digest(bytes)),
            blake3: blake3.then(|| blake3::hash(bytes).to_hex().to_string()),
            patch_offset: 0,
            patch_length: 1,
            patch_blake3: None,
            source: None,
        }
    }

    #[test]
    fn holds_whole_is_true_only_for_every_signed_byte_on_the_medium() {
        let dir = TempDir::new("holds-whole");
        let img = data(3 << 20);
        let path = dir.path().join("slot");
        std::fs::write(&path, &img).expect("slot");
        let segs: Vec<Segment> = (0..3u64)
            .map(|i| {
                let at = (i << 20) as usize;
                segment(i << 20, &img[at..at + (1 << 20)], i != 1)
            })
            .collect();
        let by_sha = Whole::Sha256 {
            size: img.len() as u64,
            sha256: &super::super::hex(&Sha256::digest(&img)),
        };
        assert!(holds_whole(&path, Whole::Segments(&segs)).expect("read"));
        assert!(holds_whole(&path, by_sha).expect("read"));
        // One byte flipped in each segment (BLAKE3, SHA-256, BLAKE3).
        for at in [5, (1 << 20) + 7, (3 << 20) - 1] {
            let mut bad = img.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).expect("slot");
            assert!(
                !holds_whole(&path, Whole::Segments(&segs)).expect("read"),
                "{at}"
            );
            assert!(!holds_whole(&path, by_sha).expect("read"), "{at}");
        }
        // Shorter than the image, or gone: not held, not an error.
        std::fs::write(&path, &img[..2 << 20]).expect("slot");
        assert!(!holds_whole(&path, Whole::Segments(&segs)).expect("short"));
        assert!(!holds_whole(&path, by_sha).expect("short"));
        std::fs::remove_file(&path).expect("rm");
        assert!(!holds_whole(&path, by_sha).expect("missing"));
    }

    #[test]
    fn a_segment_sized_buffer_is_aligned_to_and_backed_by_huge_pages() {
        let small = AlignedBuf::new(READBACK);
        assert_eq!(small.as_ptr() as usize % ALIGN, 0);
        let mut seg = AlignedBuf::new(4 << 20);
        assert_eq!(seg.len(), 4 << 20);
        assert_eq!(seg.as_ptr() as usize % HUGE_PAGE, 0);
        // What the kernel does with the advice: only where THP is on.
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !(mode.contains("[madvise]") || mode.contains("[always]")) {
            crate::say!(
                "skipped: transparent huge pages are off here ({})",
                mode.trim()
            );
            return;
        }
        seg.fill(1);
        let huge = seg
            .huge_backed_bytes()
            .expect("the buffer's mapping in smaps");
        assert!(
            huge >= HUGE_PAGE as u64,
            "a 4 MiB segment buffer has {huge} bytes in huge pages"
        );
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
        assert!(!same(&a[..10], &a[..11]));
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
        let (_dir, t) = target("hash", 4 << 20);
        std::fs::write(&t, &d).expect("write");
        assert_eq!(
            hash_path(&t, d.len() as u64).expect("hash"),
            super::super::hex(&Sha256::digest(&d))
        );
    }

    /// A segment counts as written only when what the medium returns hashes
    /// to its signed digest, BLAKE3 or SHA-256, in either write mode, and
    /// whatever the pieces it arrives in.
    #[test]
    fn a_segment_counts_only_when_its_read_back_matches_its_signed_digest() {
        let d = data((3 << 20) | (4096 * 3 + 17));
        for (mode, blake3) in [
            (WriteMode::All, true),
            (WriteMode::All, false),
            (WriteMode::Changed, true),
        ] {
            let (_dir, t) = target(&format!("segment-{mode:?}-{blake3}"), 8 << 20);
            let w = SlotWriter::open(&t).expect("open");
            let mut buf = AlignedBuf::new(d.len());
            buf.copy_from_slice(&d);
            let mut scratch = AlignedBuf::new(READBACK);
            let seg = segment(1 << 20, &d, blake3);
            let mut s = w.begin(&seg);
            let armed = std::cell::Cell::new(0);
            let mut arm = || -> Result<(), Fault> {
                armed.set(armed.get() + 1);
                Ok(())
            };
            // Two pieces: the first ends on a page, the second does not.
            w.write_piece(&mut s, &buf[..2 << 20], &mut scratch, mode, &mut arm)
                .expect("piece 1");
            w.write_piece(&mut s, &buf[2 << 20..], &mut scratch, mode, &mut arm)
                .expect("piece 2");
            w.finish(s).expect("digest");
            assert!(armed.get() > 0);
            assert!(w.holds(&seg, &mut scratch).expect("holds"));
            // The same bytes signed as something else: refused, naming the
            // algorithm and the segment's place.
            let mut wrong = seg.clone();
            wrong.sha256 = "0f".repeat(32);
            wrong.blake3 = wrong.blake3.map(|_| "0f".repeat(32));
            let mut s = w.begin(&wrong);
            w.write_piece(&mut s, &buf, &mut scratch, mode, &mut arm)
                .expect("write");
            match w.finish(s) {
                Err(Fault::Digest {
                    offset, algorithm, ..
                }) => {
                    assert_eq!(offset, 1 << 20);
                    assert_eq!(algorithm, if blake3 { "BLAKE3" } else { "SHA-256" });
                }
                other => panic!("{other:?}"),
            }
            assert!(!w.holds(&wrong, &mut scratch).expect("holds"));
            w.sync().expect("sync");
            let on_disk = std::fs::read(&t).expect("read");
            assert_eq!(&on_disk[1 << 20..(1 << 20) + d.len()], &d[..]);
        }
    }

    /// A whole segment written from its buffer and read back into it counts
    /// only when what the medium returned hashes to its signed digest; on a
    /// mismatch the buffer holds what the medium returned, and `arm` ran
    /// before the write.
    #[test]
    fn a_whole_segment_counts_only_when_what_is_read_back_in_place_matches_its_digest() {
        // Not a whole number of pages: the tail goes through the cache.
        let d = data((4 << 20) - 4096 + 17);
        for blake3 in [true, false] {
            let (_dir, t) = target(&format!("whole-{blake3}"), 8 << 20);
            let w = SlotWriter::open(&t).expect("open");
            let mut buf = AlignedBuf::new(round_up(d.len()));
            let seg = segment(1 << 20, &d, blake3);
            let armed = std::cell::Cell::new(0);
            let mut arm = || -> Result<(), Fault> {
                armed.set(armed.get() + 1);
                Ok(())
            };
            buf[..d.len()].copy_from_slice(&d);
            w.write_whole(&seg, &mut buf, &mut arm).expect("whole");
            assert_eq!(armed.get(), 1);
            assert_eq!(&buf[..d.len()], &d[..]);
            let mut scratch = AlignedBuf::new(READBACK);
            assert!(w.holds(&seg, &mut scratch).expect("holds"));

            let mut wrong = seg.clone();
            wrong.sha256 = "0f".repeat(32);
            wrong.blake3 = wrong.blake3.map(|_| "0f".repeat(32));
            // The medium returns the bytes meant, which are not the signed ones.
            buf[..d.len()].copy_from_slice(&d);
            buf[d.len()..].fill(0xee);
            match w.write_whole(&wrong, &mut buf, &mut arm) {
                Err(Fault::Digest {
                    offset,
                    length,
                    algorithm,
                    medium_checked,
                    ..
                }) => {
                    assert_eq!((offset, length), (1 << 20, d.len() as u64));
                    assert_eq!(algorithm, if blake3 { "BLAKE3" } else { "SHA-256" });
                    // Nothing was compared: only the caller can.
                    assert!(!medium_checked);
                }
                other => panic!("{other:?}"),
            }
            assert!(compare(&buf[..d.len()], &d, 1 << 20).is_ok());

            // A refused arm: nothing written.
            let mut other = seg.clone();
            other.offset = 5 << 20;
            let mut refuse = || -> Result<(), Fault> { Err(Fault::Stopped) };
            assert!(matches!(
                w.write_whole(&other, &mut buf, &mut refuse),
                Err(Fault::Stopped)
            ));
            // A buffer shorter than the segment: refused, nothing written.
            let mut short = AlignedBuf::new(4096);
            assert!(matches!(
                w.write_whole(&other, &mut short, &mut arm),
                Err(Fault::Io(_))
            ));
            w.sync().expect("sync");
            let on_disk = std::fs::read(&t).expect("read");
            assert_eq!(&on_disk[1 << 20..(1 << 20) + d.len()], &d[..]);
            assert!(on_disk[5 << 20..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn a_medium_that_returns_other_bytes_is_named_with_the_offset() {
        let written = data(8192);
        let mut medium = written.clone();
        medium[5000] ^= 1;
        match accept(&mut medium, &written, 1 << 20) {
            Err(Fault::Medium { offset }) => assert_eq!(offset, (1 << 20) + 5000),
            other => panic!("{other:?}"),
        }
        let mut medium = written.clone();
        assert!(accept(&mut medium, &written, 0).is_ok());
    }
}
