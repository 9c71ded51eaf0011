//! The install pipeline: payload bytes in, a verified image in a slot out.
//!
//! Invariant: a slot is only reported written when every byte read back
//! from the medium hashes to the manifest's SHA-256 and the write has been
//! fsynced; until then the caller keeps the slot marked bad. No more bytes
//! than the manifest declares are decoded or written, and memory stays
//! bounded by a few fixed buffers whatever the image size.
//!
//! Reading and decoding run on one thread, hashing and writing on another,
//! joined by a small bounded queue of large buffers, so the total time
//! approaches the slowest stage rather than the sum.

use crate::manifest::{Compression, Image};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Size of one pipeline buffer: large enough for efficient device writes.
const BUF: usize = 4 << 20;
/// Buffers in flight between the two threads.
const QUEUE: usize = 4;
/// Flush written data to the medium and drop it from the page cache every
/// this many bytes, so the cache neither balloons nor stalls the workload.
const FLUSH_EVERY: u64 = 64 << 20;

#[derive(Debug)]
pub enum InstallError {
    Device {
        path: PathBuf,
        source: io::Error,
    },
    Payload {
        what: String,
        reason: String,
    },
    Mismatch {
        what: String,
        expected: String,
        actual: String,
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
            InstallError::Size { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

impl std::error::Error for InstallError {}

impl InstallError {
    pub fn kind(&self) -> &'static str {
        match self {
            InstallError::Device { .. } => "device",
            InstallError::Payload { .. } => "payload",
            InstallError::Mismatch { .. } => "hash_mismatch",
            InstallError::Size { .. } => "size",
        }
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Counts and hashes the bytes that pass through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Fill `buf` as far as the reader goes; returns bytes read (short = EOF).
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// Decode `payload` (exactly `image.download_size()` bytes) into `device`,
/// hashing both the payload and the image, then read the image back from
/// the medium and hash it again.
pub fn write_image(
    class: &str,
    payload: impl Read + Send,
    image: &Image,
    device: &Path,
    max_window_log: u32,
    mode: WriteMode,
    progress: &mut Progress,
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
    let dev_err = |source| InstallError::Device {
        path: device.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(device)
        .map_err(dev_err)?;

    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(QUEUE);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE + 2);
    for _ in 0..QUEUE + 1 {
        let _ = empty_tx.send(vec![0u8; BUF]);
    }
    let size = image.size;
    let compression = image.compression;
    let window_log = max_window_log;

    let written = std::thread::scope(|scope| -> Result<Written, InstallError> {
        let producer = scope.spawn(move || -> Result<(u64, String), String> {
            let mut hashing = HashingReader {
                inner: payload,
                hasher: Sha256::new(),
                count: 0,
            };
            let mut produced: u64 = 0;
            {
                let mut source: Box<dyn Read + '_> = match compression {
                    Compression::None => Box::new((&mut hashing).take(size + 1)),
                    Compression::Zstd => {
                        let mut d = zstd::stream::read::Decoder::new(&mut hashing)
                            .map_err(|e| format!("zstd: {e}"))?;
                        d.window_log_max(window_log)
                            .map_err(|e| format!("zstd: {e}"))?;
                        Box::new(d)
                    }
                };
                loop {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Err("writer stopped".into());
                    };
                    let n = fill(&mut source, &mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    produced += n as u64;
                    if produced > size {
                        return Err(format!(
                            "decodes to more than the {size} bytes the manifest declares"
                        ));
                    }
                    if full_tx.send((buf, n)).is_err() {
                        return Err("writer stopped".into());
                    }
                }
            }
            // Whatever the decoder did not consume still belongs to the
            // payload hash; the transport bounds how much that can be.
            io::copy(&mut hashing, &mut io::sink()).map_err(|e| e.to_string())?;
            drop(full_tx);
            Ok((hashing.count, hex(&hashing.hasher.finalize())))
        });

        let mut hasher = Sha256::new();
        let mut offset: u64 = 0;
        let mut flushed: u64 = 0;
        let mut compare = if mode == WriteMode::Changed {
            vec![0u8; BUF]
        } else {
            Vec::new()
        };
        let mut write_result: Result<(), io::Error> = Ok(());
        for (buf, n) in full_rx.iter() {
            if offset + n as u64 > size {
                break; // the producer reports the overflow
            }
            let data = &buf[..n];
            hasher.update(data);
            let skip = mode == WriteMode::Changed
                && file.read_exact_at(&mut compare[..n], offset).is_ok()
                && compare[..n] == *data;
            if !skip {
                if let Err(e) = file.write_all_at(data, offset) {
                    write_result = Err(e);
                    break;
                }
            }
            offset += n as u64;
            progress.advance(n as u64);
            crate::failpoint::hit("chunk-written");
            if offset - flushed >= FLUSH_EVERY {
                flush_range(&file, flushed, offset - flushed);
                flushed = offset;
            }
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        drop(full_rx);
        let produced = producer.join().map_err(|_| InstallError::Payload {
            what: what.clone(),
            reason: "decoder thread panicked".into(),
        })?;
        write_result.map_err(dev_err)?;
        let (payload_bytes, payload_sha) = produced.map_err(|reason| InstallError::Payload {
            what: what.clone(),
            reason,
        })?;
        if payload_sha != image.download_sha256() {
            return Err(InstallError::Mismatch {
                what: what.clone(),
                expected: image.download_sha256().into(),
                actual: payload_sha,
            });
        }
        if offset != size {
            return Err(InstallError::Size {
                what: what.clone(),
                reason: format!("decodes to {offset} bytes, the manifest declares {size}"),
            });
        }
        let image_sha = hex(&hasher.finalize());
        if image_sha != image.sha256 {
            return Err(InstallError::Mismatch {
                what: format!("{class} image"),
                expected: image.sha256.clone(),
                actual: image_sha,
            });
        }
        Ok(Written {
            image_bytes: offset,
            payload_bytes,
        })
    })?;
    progress.finish();

    file.sync_all().map_err(dev_err)?;
    crate::failpoint::hit("fsync");
    let readback = hash_device(&file, image.size).map_err(dev_err)?;
    if readback != image.sha256 {
        return Err(InstallError::Mismatch {
            what: format!("{class} read back from {}", device.display()),
            expected: image.sha256.clone(),
            actual: readback,
        });
    }
    crate::failpoint::hit("read-back");
    Ok(written)
}

fn flush_range(file: &File, offset: u64, len: u64) {
    let fd = file.as_raw_fd();
    // SAFETY: plain syscalls on an fd we own; failure only costs cache.
    unsafe {
        nix::libc::sync_file_range(
            fd,
            offset as i64,
            len as i64,
            nix::libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | nix::libc::SYNC_FILE_RANGE_WRITE
                | nix::libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
        nix::libc::posix_fadvise(
            fd,
            offset as i64,
            len as i64,
            nix::libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// SHA-256 of the first `len` bytes of a device as stored on the medium:
/// its cached pages are dropped first so the read is not served from memory.
pub fn hash_device(file: &File, len: u64) -> io::Result<String> {
    // SAFETY: advisory syscall on an fd we own.
    unsafe {
        nix::libc::posix_fadvise(
            file.as_raw_fd(),
            0,
            len as i64,
            nix::libc::POSIX_FADV_DONTNEED,
        );
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut offset = 0u64;
    while offset < len {
        let n = ((len - offset) as usize).min(BUF);
        file.read_exact_at(&mut buf[..n], offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        if offset % FLUSH_EVERY == 0 {
            // SAFETY: as above.
            unsafe {
                nix::libc::posix_fadvise(
                    file.as_raw_fd(),
                    (offset - FLUSH_EVERY) as i64,
                    FLUSH_EVERY as i64,
                    nix::libc::POSIX_FADV_DONTNEED,
                );
            }
        }
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
        )
        .expect_err("tampered payload accepted");
        assert!(matches!(e, InstallError::Mismatch { .. }), "{e}");
        let _ = std::fs::remove_file(t);
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
        )
        .expect_err("oversize accepted");
        assert!(e.to_string().contains("more than"), "{e}");
        // Nothing past the declared size was written.
        let on_disk = std::fs::read(&t).expect("read");
        assert!(on_disk[1 << 20..].iter().all(|&b| b == 0));
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
        )
        .expect("write");
        assert_eq!(std::fs::read(&t).expect("read"), d);
        let _ = std::fs::remove_file(t);
    }
}
