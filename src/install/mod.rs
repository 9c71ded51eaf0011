//! The install pipeline: payload bytes in, a verified image in a slot out.
//!
//! Invariant: a slot is only reported written when every byte of it was
//! read back from the medium and matched a signed hash (`writer.rs`, the one
//! writer of slots, guards this for full images and deltas alike) and the
//! write has been fsynced; until then the caller keeps the slot marked bad.
//! No more bytes than the manifest declares are decoded or written, and
//! memory stays bounded by a few fixed buffers whatever the image size.
//!
//! Two pipelines feed the writer:
//! - `segments.rs`: a payload of independent zstd frames (what `pack` writes
//!   by default) is decoded on every core at once, each segment written at
//!   its offset and checked against its own signed digest (BLAKE3 in new
//!   releases, else SHA-256).
//! - `stream.rs`: one zstd stream (releases packed with `--one-frame`, and
//!   every release before segments), or an uncompressed image: read, decode,
//!   write and verify on four threads, the read-back hashed into the image's
//!   SHA-256.
//!
//! Both hash the payload as it arrives and compare it with the signed
//! `download_sha256` at the end, except a segmented payload whose every
//! frame carries a signed BLAKE3 (`pack` since frame digests): each frame is
//! checked before it is decoded, and together they are the payload. Both
//! call `before_write` (the caller marks the target bad there) once, right
//! before the first byte of the slot changes, and not at all when nothing
//! needs writing.
//!
//! A cut download of such a payload resumes from the slot: [`Held`] counts
//! the segments at its start that read back as signed ([`held_prefix`]),
//! and only the frames after them are asked for. An image a resumed write
//! finds whole in its slot (every segment held, [`Held::is_whole`], or any
//! image read back whole against its signed hashes, [`slot_holds`]) is not
//! asked for at all; when to look is the caller's decision
//! (`agent/install.rs`, `may_hold`), since a read-back costs a read of
//! the image.

mod segments;
mod stream;
pub(crate) mod writer;

pub use writer::{hash_device, hash_path};

use crate::manifest::Image;
use crate::progress::Progress;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use writer::{Fault, SlotWriter};

/// Why an image could not be written; each names the image or device.
#[derive(Debug)]
pub enum InstallError {
    /// Opening, writing, syncing or reading back the slot's device failed.
    Device {
        /// The slot's device (or the file target).
        path: PathBuf,
        /// The device's error.
        source: io::Error,
    },
    /// Reading the payload failed: the transport or the partial download
    /// (a [`crate::fetch::FetchError`] inside `error` says which), not the
    /// payload's bytes.
    Source {
        /// What was being written (`rootfs payload`).
        what: String,
        /// The read's error.
        error: io::Error,
    },
    /// The caller's `before_write` (marking the target bad) failed; no byte
    /// of the slot was written.
    BeforeWrite(Box<crate::error::Error>),
    /// The payload's bytes are wrong: they do not decode.
    Payload {
        /// What was being written (`rootfs payload`).
        what: String,
        /// Why they do not decode.
        reason: String,
    },
    /// The payload as downloaded does not hash as the manifest says.
    Mismatch {
        /// What was being written (`rootfs payload`).
        what: String,
        /// The signed SHA-256 (hex).
        expected: String,
        /// The SHA-256 of the bytes received (hex).
        actual: String,
    },
    /// The image as decoded (and, byte for byte, as read back from the
    /// slot) does not hash as the manifest says: the release is at fault.
    ImageMismatch {
        /// What was being written (`rootfs payload`).
        what: String,
        /// The signed SHA-256 (hex).
        expected: String,
        /// The SHA-256 of the decoded image (hex).
        actual: String,
    },
    /// A segment of the image, read back from the slot exactly as written,
    /// does not hash to its signed digest: its frame in the payload (or the
    /// release) is at fault.
    SegmentMismatch {
        /// What was being written (`rootfs payload`).
        what: String,
        /// The segment's first byte in the image.
        offset: u64,
        /// The segment's length in bytes.
        length: u64,
        /// `SHA-256` or `BLAKE3`: the digest the manifest signs.
        algorithm: &'static str,
        /// The signed digest (hex).
        expected: String,
        /// The digest of the bytes read back (hex).
        actual: String,
        /// What was read back was found equal to what was written (else
        /// the medium could not be checked: the segment's frame is not
        /// signed; a frame that could not be had again, or not as it was
        /// first read, is the source's failure, [`InstallError::Source`],
        /// and blames nobody).
        medium_checked: bool,
    },
    /// A frame of a segmented payload does not hash to its signed BLAKE3:
    /// it was not decoded (the decoder sees signed bytes only).
    FrameMismatch {
        /// What was being written (`rootfs payload`).
        what: String,
        /// The segment's index in the manifest's table.
        index: usize,
        /// The frame's bytes in the payload.
        patch: std::ops::Range<u64>,
        /// The signed BLAKE3 (hex).
        expected: String,
        /// The BLAKE3 of the bytes received (hex).
        actual: String,
    },
    /// The slot returned other bytes than were written to it: the medium
    /// (or something else writing to it) is at fault.
    Medium {
        /// The slot's device.
        path: PathBuf,
        /// Where the bytes read back differ, in bytes from the device's start.
        offset: u64,
    },
    /// The image does not decode to the size the manifest declares, or needs
    /// a larger zstd window than this host allows.
    Size {
        /// What was being written (`rootfs payload`).
        what: String,
        /// What does not fit.
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
            InstallError::SegmentMismatch {
                what,
                offset,
                length,
                algorithm,
                expected,
                actual,
                medium_checked,
            } => {
                // Unchecked, the digest is only the read-back's: what the
                // payload decodes to was not compared with it.
                let (bytes, why) = match medium_checked {
                    true => ("decodes to bytes", "the slot read back exactly the bytes written, so the payload (or the release) is damaged"),
                    false => ("read back from the slot as bytes", "its frame is not signed, so the slot could not be checked and the payload (or the release) is taken to be damaged"),
                };
                write!(
                    f,
                    "{what}: the segment at bytes {offset}..{} {bytes} whose {algorithm} is {actual}, the signed manifest says {expected}; {why}",
                    offset + length,
                )
            }
            InstallError::FrameMismatch {
                what,
                index,
                patch,
                expected,
                actual,
            } => write!(
                f,
                "{what}: the frame of segment {index} (payload bytes {}..{}) has BLAKE3 {actual}, the signed manifest says {expected}; it was not decoded",
                patch.start, patch.end
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
    /// The error's stable kind (`device`, `payload`, `hash_mismatch`, …).
    pub fn kind(&self) -> crate::error::Kind {
        use crate::error::Kind;
        match self {
            InstallError::Device { .. } | InstallError::Medium { .. } => Kind::Device,
            InstallError::Source { error, .. } => {
                crate::fetch::FetchError::from_io(error).map_or(Kind::Io, |e| e.kind())
            }
            InstallError::BeforeWrite(e) => e.kind(),
            InstallError::Payload { .. } => Kind::Payload,
            InstallError::Mismatch { .. }
            | InstallError::ImageMismatch { .. }
            | InstallError::SegmentMismatch { .. }
            | InstallError::FrameMismatch { .. } => Kind::HashMismatch,
            InstallError::Size { .. } => Kind::Size,
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
    /// Bytes of the image now in the slot.
    pub image_bytes: u64,
    /// Bytes of the payload read (compressed, as downloaded).
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

/// The segments at the start of an image that the target already holds:
/// each read back from the medium and matched against its signed digest
/// (an earlier run of the same release wrote them, and was cut). A cut
/// download of a segmented payload resumes after them, from the slot
/// itself, with nothing of the payload kept on the data partition. Only
/// [`held_prefix`] makes a non-empty one, so what it counts was verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    segments: usize,
    image_bytes: u64,
    payload_offset: u64,
}

impl Held {
    /// How many segments, from the first.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Bytes of the image they cover.
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    /// Where the payload continues: the first byte of the first frame not
    /// held.
    pub fn payload_offset(&self) -> u64 {
        self.payload_offset
    }

    /// Whether they are every segment of `image` (the image they were
    /// counted for): the slot holds the whole image as signed, and nothing
    /// of its payload is needed. An image without a segment table is never
    /// whole by this count ([`slot_holds`] reads it whole instead).
    pub fn is_whole(&self, image: &Image) -> bool {
        !image.segments.is_empty() && self.segments == image.segments.len()
    }
}

/// The largest segment hosts decode on every core: a payload with a larger
/// one is decoded as one stream ([`decodes_in_parallel`]).
pub const MAX_PARALLEL_SEGMENT: u64 = segments::MAX_SEGMENT;

/// Whether hosts decode `image`'s payload segment by segment on every core:
/// a segmented payload whose segments and frames fit the decoders' memory
/// budget ([`segments::plan`]); the others are decoded as one stream.
pub fn decodes_in_parallel(image: &Image) -> bool {
    segments::plan(image).is_some()
}

/// Whether a cut download of `image` resumes from the slot ([`Held`])
/// rather than from a partial download: a segmented payload whose every
/// frame carries a signed digest, so the frames fetched after a resume are
/// checked one by one (a payload hashed whole could not be checked from
/// its middle).
pub fn resumes_from_slot(image: &Image) -> bool {
    decodes_in_parallel(image) && segments::frames_signed(&image.segments)
}

/// The segments at the start of `image` that `device` already holds (see
/// [`Held`]); none when the payload does not resume from the slot. Reads
/// until the first segment that does not match: one segment for a slot
/// that holds another release.
pub fn held_prefix(device: &Path, image: &Image) -> Result<Held, InstallError> {
    let mut held = Held::default();
    if !resumes_from_slot(image) {
        return Ok(held);
    }
    let dev_err = |source| InstallError::Device {
        path: device.to_path_buf(),
        source,
    };
    let writer = SlotWriter::open(device).map_err(dev_err)?;
    let mut scratch = writer::AlignedBuf::new(writer::READBACK);
    for seg in &image.segments {
        if !writer.holds(seg, &mut scratch).map_err(dev_err)? {
            break;
        }
        held.segments += 1;
        held.image_bytes += seg.length;
        held.payload_offset += seg.patch_length;
    }
    Ok(held)
}

/// How [`slot_holds`] checks `image`: by its signed segment digests when
/// it has a segment table (BLAKE3 where given: cheap, and the first
/// segment that differs ends the read), else by the image's SHA-256.
pub(crate) fn whole_check(image: &Image) -> writer::Whole<'_> {
    match image.segments.is_empty() {
        false => writer::Whole::Segments(&image.segments),
        true => writer::Whole::Sha256 {
            size: image.size,
            sha256: &image.sha256,
        },
    }
}

/// Whether `device` holds the whole of `image` as signed, read back from
/// the medium (`whole_check`): a slot recorded as staged counts as
/// staged only then, since its bytes may have changed since it was written
/// (a stray `dd`, a failing medium) and a trial of other bytes would
/// blame the release.
pub fn slot_holds(device: &Path, image: &Image) -> Result<bool, InstallError> {
    holds(device, whole_check(image))
}

/// Whether `device` holds the whole of the image a slot's record names
/// (`image`: its signed SHA-256 over its size; a record keeps no segment
/// table), read back from the medium as [`slot_holds`] reads: before a
/// manual verb makes that slot the one to boot (`agent/recovery.rs`),
/// since its bytes may have changed since they were committed.
pub fn slot_holds_recorded(
    device: &Path,
    image: &crate::state::ImageRef,
) -> Result<bool, InstallError> {
    holds(
        device,
        writer::Whole::Sha256 {
            size: image.size,
            sha256: &image.sha256,
        },
    )
}

/// The one read-back of a whole image ([`writer::holds_whole`]), its error
/// naming the device.
fn holds(device: &Path, whole: writer::Whole) -> Result<bool, InstallError> {
    writer::holds_whole(device, whole).map_err(|source| InstallError::Device {
        path: device.to_path_buf(),
        source,
    })
}

/// What the caller does once, right before the first byte of the slot
/// changes (and not at all when nothing needs writing): the install flow
/// marks the target bad there, so that a failure before it (a server
/// answering 503, a payload cut before its first chunk decoded, a device
/// that cannot be opened) leaves the target as it was.
pub type BeforeWrite<'a> = &'a mut dyn FnMut() -> Result<(), crate::error::Error>;

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

/// The error a writer fault is, for the slot at `device` and the payload
/// called `what`.
fn fault_error(fault: Fault, device: &Path, what: &str) -> InstallError {
    match fault {
        Fault::Io(source) => InstallError::Device {
            path: device.to_path_buf(),
            source,
        },
        Fault::Medium { offset } => InstallError::Medium {
            path: device.to_path_buf(),
            offset,
        },
        Fault::Arm(e) => InstallError::BeforeWrite(e),
        Fault::Source(error) => InstallError::Source {
            what: what.to_string(),
            error,
        },
        Fault::Stopped => InstallError::Payload {
            what: what.to_string(),
            reason: "stopped".into(),
        },
        Fault::Digest {
            offset,
            length,
            algorithm,
            expected,
            actual,
            medium_checked,
        } => InstallError::SegmentMismatch {
            what: what.to_string(),
            offset,
            length,
            algorithm,
            expected,
            actual,
            medium_checked,
        },
    }
}

/// The payload as received (`actual`, its SHA-256 in hex) must hash as the
/// manifest signs it.
fn check_payload_sha256(what: &str, image: &Image, actual: String) -> Result<(), InstallError> {
    if actual != image.download_sha256() {
        return Err(InstallError::Mismatch {
            what: what.to_string(),
            expected: image.download_sha256().into(),
            actual,
        });
    }
    Ok(())
}

/// The payload's bytes `[offset, offset + length)` once more, from where
/// the payload came from, exactly `length` of them; else why they could
/// not be had (a [`crate::fetch::FetchError`] inside the `io::Error` for a
/// transport failure or a download window that closed). A segmented
/// install asks only after a signed segment was read back wrong, for its
/// frame, to tell the medium's fault from the payload's (the frame itself
/// went back to the reader once decoded).
pub type FrameAgain<'a> = &'a (dyn Fn(u64, u64) -> io::Result<Vec<u8>> + Sync);

/// Decode `payload` (exactly `image.download_size()` bytes, less the
/// frames of the segments `held`) into `device`, hashing the payload as it
/// arrives and the image as read back from the medium after each write.
/// `before_write` runs once before the first byte of `device` changes (see
/// [`BeforeWrite`]); `again` reads a frame once more ([`FrameAgain`]).
#[allow(clippy::too_many_arguments)]
pub fn write_image(
    class: &str,
    payload: impl Read + Send,
    held: &Held,
    image: &Image,
    device: &Path,
    max_window_log: u32,
    mode: WriteMode,
    progress: &mut Progress,
    before_write: BeforeWrite,
    again: FrameAgain,
) -> Result<Written, InstallError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    write_image_with(
        class,
        payload,
        held,
        image,
        device,
        max_window_log,
        mode,
        progress,
        before_write,
        again,
        cores,
        &segments::Hooks::default(),
    )
}

/// [`write_image`] with `cores` workers for a segmented payload, and test
/// hooks.
#[allow(clippy::too_many_arguments)]
fn write_image_with(
    class: &str,
    payload: impl Read + Send,
    held: &Held,
    image: &Image,
    device: &Path,
    max_window_log: u32,
    mode: WriteMode,
    progress: &mut Progress,
    before_write: BeforeWrite,
    again: FrameAgain,
    cores: usize,
    hooks: &segments::Hooks,
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
    let writer = SlotWriter::open(device).map_err(dev_err)?;
    let (image_bytes, payload_bytes) = match segments::plan(image) {
        Some(largest) => {
            let pipeline = segments::pipeline(cores, largest, segments::largest_frame(image), mode);
            progress.advance(held.image_bytes);
            let payload_bytes = segments::write(
                &what,
                payload,
                held.segments,
                image,
                &writer,
                largest,
                pipeline,
                mode,
                progress,
                before_write,
                again,
                hooks,
            )?;
            (image.size, payload_bytes)
        }
        None => {
            let (image_bytes, payload_bytes, (read_back, readback_sha)) = stream::write(
                &what,
                payload,
                image,
                &writer,
                window_log_max,
                mode,
                progress,
                before_write,
            )?;
            // Every byte read back equalled the byte written (the verifier
            // compared them), so a wrong hash here is the decoded image's:
            // the payload matched its own signed hash but does not decode to
            // the image the manifest describes.
            if read_back != image.size || readback_sha != image.sha256 {
                return Err(InstallError::ImageMismatch {
                    what: format!("{class} image"),
                    expected: image.sha256.clone(),
                    actual: readback_sha,
                });
            }
            (image_bytes, payload_bytes)
        }
    };
    progress.finish();
    writer.sync().map_err(dev_err)?;
    crate::failpoint::hit("fsync");
    crate::failpoint::hit("read-back");
    Ok(Written {
        image_bytes,
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
    crate::files::create_replacing(&tmp).map_err(|source| InstallError::Device {
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
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| dev_err(dir, e))?;
    crate::failpoint::hit("file-replaced");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Segment;
    use crate::testutil::{
        image_bytes as data, one_frame_image as image_for, segmented_image as segmented_for,
        sized_target as target,
    };
    use sha2::{Digest, Sha256};

    /// The digest in a segment's mismatch is its read-back's: only once the
    /// slot was found to return the decoded bytes is it what the payload
    /// decodes to (review 13).
    #[test]
    fn a_segment_mismatch_says_decodes_to_only_when_the_slot_was_checked() {
        let mismatch = |medium_checked| {
            InstallError::SegmentMismatch {
                what: "rootfs payload".into(),
                offset: 4096,
                length: 4096,
                algorithm: "BLAKE3",
                expected: "e".repeat(64),
                actual: "a".repeat(64),
                medium_checked,
            }
            .to_string()
        };
        let checked = mismatch(true);
        assert!(
            checked.contains("bytes 4096..8192 decodes to bytes whose BLAKE3 is aaaa")
                && checked.contains("the slot read back exactly the bytes written"),
            "{checked}"
        );
        let unchecked = mismatch(false);
        assert!(
            unchecked
                .contains("bytes 4096..8192 read back from the slot as bytes whose BLAKE3 is aaaa")
                && unchecked.contains("could not be checked")
                && !unchecked.contains("decodes to"),
            "{unchecked}"
        );
    }

    #[test]
    fn writes_and_verifies_raw_and_zstd() {
        for level in [None, Some(3)] {
            let d = data(9 << 20 | 123);
            let (img, payload) = image_for(&d, level);
            let (_dir, t) = target(&format!("ok{level:?}"), 16 << 20);
            let w = write_image(
                "rootfs",
                &payload[..],
                &Held::default(),
                &img,
                &t,
                27,
                WriteMode::All,
                &mut Progress::new("t", img.size, true),
                &mut || Ok(()),
                &no_frame_again,
            )
            .expect("write");
            assert_eq!(w.image_bytes, d.len() as u64);
            let on_disk = std::fs::read(&t).expect("read");
            assert_eq!(&on_disk[..d.len()], &d[..]);
        }
    }

    #[test]
    fn tampered_payload_byte_is_caught() {
        let d = data(5 << 20);
        let (img, mut payload) = image_for(&d, None);
        payload[3 << 20] ^= 1;
        let (_dir, t) = target("tamper", 8 << 20);
        let e = install(&payload, &img, &t, WriteMode::All).expect_err("tampered payload accepted");
        assert!(matches!(e, InstallError::Mismatch { .. }), "{e}");
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
            let (_dir, t) = target(&format!("wrong-image-hash-{mode:?}"), 4 << 20);
            let e = install(&payload, &img, &t, mode).expect_err("wrong image hash accepted");
            assert!(matches!(e, InstallError::ImageMismatch { .. }), "{e}");
            assert_eq!(e.kind(), crate::error::Kind::HashMismatch);
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
        }
    }

    #[test]
    fn payload_decoding_past_declared_size_is_refused() {
        let d = data(3 << 20);
        let (mut img, payload) = image_for(&d, Some(1));
        img.size = 1 << 20;
        let (_dir, t) = target("big", 4 << 20);
        let e = install(&payload, &img, &t, WriteMode::All).expect_err("oversize accepted");
        assert!(e.to_string().contains("more than"), "{e}");
        // Nothing past the declared size was written.
        let on_disk = std::fs::read(&t).expect("read");
        assert!(on_disk[1 << 20..].iter().all(|&b| b == 0));
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
            &Held::default(),
            img,
            t,
            27,
            mode,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
            &no_frame_again,
        )
    }

    #[test]
    fn without_o_direct_it_writes_through_the_cache_and_verifies() {
        writer::NO_DIRECT.with(|c| c.set(true));
        let d = data(5 << 20 | 4097);
        for (name, mode, (img, payload)) in [
            ("stream", WriteMode::All, image_for(&d, Some(3))),
            ("raw-changed", WriteMode::Changed, image_for(&d, None)),
            ("segments", WriteMode::All, segmented_for(&d, 1 << 20)),
            (
                "segments-changed",
                WriteMode::Changed,
                segmented_for(&d, 1 << 20),
            ),
        ] {
            let (_dir, t) = target(&format!("nodirect-{name}"), 8 << 20);
            install(&payload, &img, &t, mode).expect("write");
            assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
            assert_eq!(hash_path(&t, d.len() as u64).expect("hash"), img.sha256);
        }
        writer::NO_DIRECT.with(|c| c.set(false));
    }

    #[test]
    fn concatenated_zstd_frames_decode_as_one_image() {
        let d = data(3 << 20 | 77);
        let (mut img, _) = image_for(&d, Some(3));
        let mut payload = zstd::encode_all(&d[..1 << 20], 3).expect("frame 1");
        payload.extend(zstd::encode_all(&d[1 << 20..], 3).expect("frame 2"));
        img.download_size = Some(payload.len() as u64);
        img.download_sha256 = Some(hex(&Sha256::digest(&payload)));
        let (_dir, t) = target("frames", 4 << 20);
        install(&payload, &img, &t, WriteMode::All).expect("write");
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
    }

    #[test]
    fn truncated_zstd_payload_is_refused() {
        let d = data(2 << 20);
        let (mut img, payload) = image_for(&d, Some(3));
        let cut = &payload[..payload.len() - 100];
        img.download_size = Some(cut.len() as u64);
        img.download_sha256 = Some(hex(&Sha256::digest(cut)));
        let (_dir, t) = target("cut", 4 << 20);
        let e = install(cut, &img, &t, WriteMode::All).expect_err("truncated accepted");
        assert!(matches!(e, InstallError::Payload { .. }), "{e}");
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
        let (_dir, t) = target("window", 4 << 20);
        img.window_log = Some(22);
        install(&payload, &img, &t, WriteMode::All).expect("declared window");
        img.window_log = Some(20);
        let e = install(&payload, &img, &t, WriteMode::All).expect_err("window accepted");
        assert!(e.to_string().contains("zstd"), "{e}");
    }

    #[test]
    fn changed_mode_skips_identical_blocks_and_still_verifies() {
        let d = data(12 << 20);
        let (img, payload) = image_for(&d, Some(1));
        let (_dir, t) = target("changed", 12 << 20);
        let mut old = d.clone();
        old[5 << 20] ^= 0xff;
        std::fs::write(&t, &old).expect("seed");
        write_image(
            "rootfs",
            &payload[..],
            &Held::default(),
            &img,
            &t,
            27,
            WriteMode::Changed,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
            &no_frame_again,
        )
        .expect("write");
        assert_eq!(std::fs::read(&t).expect("read"), d);
    }
    /// No frame can be had again (the source is gone): a read-back fault
    /// of a signed segment is the source's failure.
    fn no_frame_again(_: u64, _: u64) -> io::Result<Vec<u8>> {
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the payload's source is gone",
        ))
    }

    /// The frames of an in-memory `payload`, again.
    fn frames_of(payload: &[u8]) -> impl Fn(u64, u64) -> io::Result<Vec<u8>> + Sync + '_ {
        move |offset, length| {
            let range = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(length).ok())
                .and_then(|(start, n)| Some(start..start.checked_add(n)?));
            range
                .and_then(|r| payload.get(r))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        }
    }

    fn install_segmented(
        payload: &[u8],
        img: &Image,
        t: &Path,
        mode: WriteMode,
        workers: usize,
        hooks: &segments::Hooks,
    ) -> Result<Written, InstallError> {
        write_image_with(
            "rootfs",
            payload,
            &Held::default(),
            img,
            t,
            27,
            mode,
            &mut Progress::new("t", img.size, true),
            &mut || Ok(()),
            &no_frame_again,
            workers,
            hooks,
        )
    }

    /// Segment hooks for ordering tests: a worker about to decode one of
    /// `held` waits until every segment of `until` counts as written (at
    /// most 20 s, so code that cannot get there fails its assertion
    /// instead of hanging); `order` is the order segments counted in.
    struct HoldUntil {
        held: Vec<usize>,
        until: Vec<usize>,
        done: std::sync::Mutex<Vec<usize>>,
        counted: std::sync::Condvar,
    }

    impl HoldUntil {
        fn new(held: &[usize], until: &[usize]) -> Self {
            HoldUntil {
                held: held.to_vec(),
                until: until.to_vec(),
                done: Default::default(),
                counted: Default::default(),
            }
        }

        fn before(&self, index: usize) {
            if self.held.contains(&index) {
                let done = self.done.lock().expect("lock");
                let _ = self
                    .counted
                    .wait_timeout_while(done, std::time::Duration::from_secs(20), |d| {
                        !self.until.iter().all(|u| d.contains(u))
                    })
                    .expect("wait");
            }
        }

        fn after(&self, index: usize) {
            self.done.lock().expect("lock").push(index);
            self.counted.notify_all();
        }

        fn order(&self) -> Vec<usize> {
            self.done.lock().expect("lock").clone()
        }
    }

    /// A cut run left the first segments in the slot: they are found by
    /// reading them back, the rest of the payload (after their frames) is
    /// all the install gets, and the slot ends up whole.
    #[test]
    fn a_segmented_install_resumes_after_the_segments_the_slot_holds() {
        let d = data(9 << 20 | 4321);
        let (img, payload) = segmented_for(&d, 1 << 20);
        assert!(resumes_from_slot(&img));
        let (_dir, t) = target("held", 12 << 20);
        assert_eq!(
            held_prefix(&t, &img).expect("scan").segments(),
            0,
            "an empty slot holds nothing"
        );
        // What a run cut after four segments (and one out of order) left.
        let mut slot = std::fs::read(&t).expect("read");
        slot[..4 << 20].copy_from_slice(&d[..4 << 20]);
        slot[6 << 20..7 << 20].copy_from_slice(&d[6 << 20..7 << 20]);
        std::fs::write(&t, &slot).expect("write");
        let held = held_prefix(&t, &img).expect("scan");
        assert_eq!(held.segments(), 4);
        assert_eq!(held.image_bytes(), 4 << 20);
        assert_eq!(held.payload_offset(), img.segments[4].patch_offset);
        let rest = &payload[held.payload_offset() as usize..];
        let mut progress = Progress::new("t", img.size, true);
        let w = write_image(
            "rootfs",
            rest,
            &held,
            &img,
            &t,
            27,
            WriteMode::All,
            &mut progress,
            &mut || Ok(()),
            &no_frame_again,
        )
        .expect("resumed write");
        assert_eq!(w.image_bytes, d.len() as u64);
        assert_eq!(w.payload_bytes, payload.len() as u64);
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
        let whole = held_prefix(&t, &img).expect("scan");
        assert_eq!(
            whole.segments(),
            img.segments.len(),
            "the whole image is held once written"
        );
        assert!(whole.is_whole(&img));
        assert!(!held.is_whole(&img), "four segments of ten");
    }

    /// A held segment counts only as read back: one wrong byte in the slot
    /// ends the held prefix at its segment, and a payload whose frames are
    /// not signed one by one (hashed whole) never resumes from the slot.
    #[test]
    fn a_damaged_segment_ends_what_the_slot_holds_and_unsigned_frames_never_resume() {
        let d = data(5 << 20);
        let (img, _) = segmented_for(&d, 1 << 20);
        let (_dir, t) = target("held-damaged", 6 << 20);
        let mut slot = d.clone();
        slot[(2 << 20) + 17] ^= 0x40;
        std::fs::write(&t, &slot).expect("write");
        let held = held_prefix(&t, &img).expect("scan");
        assert_eq!(held.segments(), 2);
        assert!(!held.is_whole(&img));

        let mut unsigned = img.clone();
        for s in &mut unsigned.segments {
            s.patch_blake3 = None;
        }
        assert!(!resumes_from_slot(&unsigned));
        assert_eq!(held_prefix(&t, &unsigned).expect("scan"), Held::default());
        let (one_frame, _) = image_for(&d, Some(3));
        assert!(!resumes_from_slot(&one_frame));
        // No segment table: never whole by a count of segments (an empty
        // count of none is not the whole image).
        assert!(!held_prefix(&t, &one_frame)
            .expect("scan")
            .is_whole(&one_frame));
    }

    /// A segment signed as all zeros is zeroed, not decoded: its frame
    /// here is signed but decodes to other bytes, and the slot still gets
    /// the zeros the segment's digest says (the old bytes under it gone).
    #[test]
    fn a_segment_signed_as_zeros_is_zeroed_not_decoded() {
        let mut d = data(4 << 20);
        d[1 << 20..2 << 20].fill(0x33);
        let (mut img, payload) = segmented_for(&d, 1 << 20);
        let zeros = vec![0u8; 1 << 20];
        img.segments[1].blake3 = Some(blake3::hash(&zeros).to_hex().to_string());
        img.segments[1].sha256 = hex(&Sha256::digest(&zeros));
        let (_dir, t) = target("zero-not-decoded", 4 << 20);
        std::fs::write(&t, vec![0xa5u8; 4 << 20]).expect("old bytes");
        install_segmented(&payload, &img, &t, WriteMode::All, 2, &Default::default())
            .expect("write");
        let mut want = d.clone();
        want[1 << 20..2 << 20].fill(0);
        assert!(std::fs::read(&t).expect("read") == want);
    }

    #[test]
    fn a_segmented_payload_installs_with_any_number_of_workers() {
        let d = data(9 << 20 | 4321);
        let (img, payload) = segmented_for(&d, 1 << 20);
        assert_eq!(segments::plan(&img), Some(1 << 20));
        for (workers, mode) in [
            (1, WriteMode::All),
            (2, WriteMode::All),
            (5, WriteMode::All),
            (2, WriteMode::Changed),
        ] {
            let (_dir, t) = target(&format!("seg-{workers}-{mode:?}"), 12 << 20);
            let w = install_segmented(&payload, &img, &t, mode, workers, &Default::default())
                .expect("write");
            assert_eq!(w.image_bytes, d.len() as u64);
            assert_eq!(w.payload_bytes, payload.len() as u64);
            assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
        }
        // Without BLAKE3 in the table (segments of an older pack): SHA-256.
        let (mut old, payload) = segmented_for(&d, 1 << 20);
        for s in &mut old.segments {
            s.blake3 = None;
        }
        let (_dir, t) = target("seg-sha256", 12 << 20);
        install_segmented(&payload, &old, &t, WriteMode::All, 2, &Default::default())
            .expect("write");
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
    }

    /// Segment 0 is held back until segment 1 has been written and
    /// verified: the later segment lands at its own offset first, and the
    /// image is whole.
    #[test]
    fn segments_finishing_out_of_order_land_at_their_offsets() {
        let d = data(6 << 20 | 999);
        let (img, payload) = segmented_for(&d, 1 << 20);
        let hold = HoldUntil::new(&[0], &[1]);
        let (before, after) = (|i| hold.before(i), |i| hold.after(i));
        let hooks = segments::Hooks {
            before_decode: Some(&before),
            after_segment: Some(&after),
        };
        let (_dir, t) = target("seg-order", 8 << 20);
        install_segmented(&payload, &img, &t, WriteMode::All, 3, &hooks).expect("write");
        let order = hold.order();
        let pos = |i| order.iter().position(|&x| x == i).expect("finished");
        assert!(
            pos(1) < pos(0),
            "segment 0 did not finish after 1: {order:?}"
        );
        assert_eq!(order.len(), img.segments.len());
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
    }

    /// Free space does not wait for the frames before it: with both
    /// workers held at the segments with data (0 and 3) until the segments
    /// signed as zeros (1, 2 and 4) count as written, the zeroer beside the
    /// workers zeroes and reads those back first, and the image is whole.
    /// (Workers that zeroed them in turn would wait out the timeout with
    /// segment 4 unwritten.)
    #[test]
    fn zero_segments_are_written_without_waiting_for_the_frames_before_them() {
        let mut d = data(5 << 20);
        d[1 << 20..3 << 20].fill(0);
        d[4 << 20..].fill(0);
        let (img, payload) = segmented_for(&d, 1 << 20);
        let hold = HoldUntil::new(&[0, 3], &[1, 2, 4]);
        let (before, after) = (|i| hold.before(i), |i| hold.after(i));
        let hooks = segments::Hooks {
            before_decode: Some(&before),
            after_segment: Some(&after),
        };
        let (_dir, t) = target("seg-zero-first", 6 << 20);
        std::fs::write(&t, vec![0xa5u8; 6 << 20]).expect("old bytes");
        install_segmented(&payload, &img, &t, WriteMode::All, 1, &hooks).expect("write");
        let order = hold.order();
        let pos = |i| order.iter().position(|&x| x == i).expect("finished");
        assert!(
            [1, 2, 4]
                .iter()
                .all(|&z| pos(z) < pos(0) && pos(z) < pos(3)),
            "the zero segments waited for the segments with data: {order:?}"
        );
        assert_eq!(order.len(), img.segments.len(), "{order:?}");
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], &d[..]);
    }

    /// A segment in the middle whose bytes do not hash to its signed digest
    /// (the payload's own hash is right: the release is inconsistent) stops
    /// the install with an error naming the segment; so does a frame that
    /// does not decode.
    #[test]
    fn a_bad_segment_mid_way_stops_the_install_naming_it() {
        let d = data(8 << 20);
        let (mut img, payload) = segmented_for(&d, 1 << 20);
        img.segments[4].blake3 = Some("0f".repeat(32));
        let (_dir, t) = target("seg-bad-digest", 8 << 20);
        let mut armed = 0;
        let e = write_image_with(
            "rootfs",
            &payload[..],
            &Held::default(),
            &img,
            &t,
            27,
            WriteMode::All,
            &mut Progress::new("t", img.size, true),
            &mut || {
                armed += 1;
                Ok(())
            },
            &frames_of(&payload),
            2,
            &Default::default(),
        )
        .expect_err("a segment that hashes wrong was accepted");
        assert_eq!(armed, 1);
        assert_eq!(e.kind(), crate::error::Kind::HashMismatch);
        let msg = e.to_string();
        assert!(
            msg.contains("segment at bytes 4194304..5242880")
                && msg.contains("BLAKE3")
                && msg.contains(&"0f".repeat(32))
                && msg.contains("the slot read back exactly the bytes written"),
            "{msg}"
        );
        // Without its frame once more, nothing is proven: the install
        // stops as the source's failure, and the release is not blamed.
        std::fs::write(&t, vec![0u8; 8 << 20]).expect("blank target");
        let e = install_segmented(&payload, &img, &t, WriteMode::All, 2, &Default::default())
            .expect_err("a segment that hashes wrong was accepted");
        assert!(matches!(e, InstallError::Source { .. }), "{e}");
        assert_ne!(e.kind(), crate::error::Kind::HashMismatch);
        // A damaged frame is refused before it is decoded: the decoder
        // sees signed bytes only, and nothing of the segment is written.
        let (img, mut payload) = segmented_for(&d, 1 << 20);
        let s = img.segments[5].clone();
        let at = (s.patch_offset + s.patch_length / 2) as usize;
        payload[at] ^= 0x55;
        std::fs::write(&t, vec![0u8; 8 << 20]).expect("blank target");
        let e = install_segmented(&payload, &img, &t, WriteMode::All, 1, &Default::default())
            .expect_err("a damaged frame was accepted");
        assert!(
            matches!(&e, InstallError::FrameMismatch { index: 5, patch, .. }
                if *patch == (s.patch_offset..s.patch_offset + s.patch_length)),
            "{e}"
        );
        assert_eq!(e.kind(), crate::error::Kind::HashMismatch);
        let slot = std::fs::read(&t).expect("target");
        let range = s.offset as usize..(s.offset + s.length) as usize;
        assert!(
            slot[range].iter().all(|&b| b == 0),
            "a byte of the damaged frame's segment was written"
        );
        // A release packed before frame digests (payload hash recomputed,
        // as a bad release would sign it): the frame does not decode, or
        // decodes to other bytes.
        let mut old = img.clone();
        for seg in &mut old.segments {
            seg.patch_blake3 = None;
        }
        old.download_sha256 = Some(hex(&Sha256::digest(&payload)));
        let e = install_segmented(&payload, &old, &t, WriteMode::All, 2, &Default::default())
            .expect_err("a damaged frame was accepted");
        assert!(
            matches!(
                e,
                InstallError::Payload { .. } | InstallError::SegmentMismatch { .. }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("segment"), "{e}");
    }

    #[test]
    fn a_segmented_payload_with_a_wrong_payload_hash_or_length_is_refused() {
        let d = data(3 << 20 | 5);
        let (mut img, payload) = segmented_for(&d, 1 << 20);
        let (_dir, t) = target("seg-payload", 4 << 20);
        img.download_sha256 = Some("0f".repeat(32));
        // Every frame signed: the frames are the payload, its own hash is
        // not needed (it still names the partial download).
        install_segmented(&payload, &img, &t, WriteMode::All, 2, &Default::default())
            .expect("every frame matched its signed digest");
        // A release packed before frame digests: the payload's hash decides.
        for seg in &mut img.segments {
            seg.patch_blake3 = None;
        }
        let e = install_segmented(&payload, &img, &t, WriteMode::All, 2, &Default::default())
            .expect_err("payload hash");
        assert!(matches!(e, InstallError::Mismatch { .. }), "{e}");
        let (img, payload) = segmented_for(&d, 1 << 20);
        let mut long = payload.clone();
        long.push(0);
        let e = install_segmented(&long, &img, &t, WriteMode::All, 2, &Default::default())
            .expect_err("too long");
        assert!(e.to_string().contains("holds more than"), "{e}");
        let cut = &payload[..payload.len() - 10];
        let e = install_segmented(cut, &img, &t, WriteMode::All, 2, &Default::default())
            .expect_err("too short");
        assert!(e.to_string().contains("ends after"), "{e}");
    }

    #[test]
    fn the_parallel_path_takes_only_back_to_back_bounded_frames() {
        let d = data(3 << 20);
        let (img, _) = segmented_for(&d, 1 << 20);
        assert_eq!(segments::plan(&img), Some(1 << 20));
        let (one, _) = image_for(&d, Some(3));
        assert_eq!(segments::plan(&one), None, "one frame");
        let mut gap = img.clone();
        gap.segments[1].patch_offset += 1;
        assert_eq!(segments::plan(&gap), None, "a gap between frames");
        let mut short = img.clone();
        short.download_size = Some(img.download_size() + 1);
        assert_eq!(segments::plan(&short), None, "bytes after the last frame");
        let mut huge = img.clone();
        huge.segments[0].patch_length = 2 << 20;
        assert_eq!(segments::plan(&huge), None, "a frame beyond zstd's bound");
        let mut big = img.clone();
        big.segments = vec![Segment {
            length: segments::MAX_SEGMENT + 1,
            ..img.segments[0].clone()
        }];
        assert_eq!(segments::plan(&big), None, "a segment too large");
    }

    #[test]
    fn the_parallel_path_takes_only_payloads_a_single_worker_holds_within_the_budget() {
        const MIB: u64 = 1 << 20;
        // Two segments of `segment` MiB, frames of `frame` bytes.
        let table = |segment: u64, frame: u64| {
            let (mut img, _) = segmented_for(&data(1 << 20), 1 << 20);
            let seg = img.segments[0].clone();
            img.segments = (0..2u64)
                .map(|i| Segment {
                    offset: i * segment * MIB,
                    length: segment * MIB,
                    patch_offset: i * frame,
                    patch_length: frame,
                    ..seg.clone()
                })
                .collect();
            img.size = 2 * segment * MIB;
            img.download_size = Some(2 * frame);
            img
        };
        // 16 MiB segments: a worker's segment and compare piece (17 MiB)
        // and a frame of at most 10 MiB fit 27 MiB; a byte more does not.
        assert_eq!(segments::plan(&table(16, 10 * MIB)), Some(16 * MIB));
        assert_eq!(segments::plan(&table(16, 10 * MIB + 1)), None);
        // `pack --segment-size` 12 of data that does not compress still
        // fits (one worker, one frame), 13 does not: it goes through the
        // one-stream path.
        assert_eq!(segments::plan(&table(12, 12 * MIB + 300)), Some(12 * MIB));
        assert_eq!(segments::plan(&table(13, 13 * MIB + 300)), None);
    }

    #[test]
    fn the_pipeline_is_two_workers_more_than_the_cores_within_the_memory_budget() {
        use segments::Pipeline;
        use WriteMode::{All, Changed};
        const MIB: u64 = 1 << 20;
        let p = |cores, segment, frame, mode| {
            let Pipeline { workers, frames } = segments::pipeline(cores, segment, frame, mode);
            (workers, frames)
        };
        // The bench's payload (frames up to 3.1 MiB) and review 11's
        // (many frames of 3.19 MiB): four workers, a frame per core and
        // one more.
        assert_eq!(p(2, 4 * MIB, 3_276_660, All), (4, 3));
        assert_eq!(p(2, 4 * MIB, 3_342_336, All), (4, 3));
        assert_eq!(p(1, 4 * MIB, 3 * MIB, All), (3, 2));
        // Frames as large as their segments (incompressible data): three
        // workers and three frames fit, four workers do not.
        assert_eq!(p(2, 4 * MIB, 4 * MIB + 128, All), (3, 3));
        // `--write=changed` compares in a piece of its own per worker.
        assert_eq!(p(2, 4 * MIB, 3_276_660, Changed), (3, 3));
        assert_eq!(p(2, 4 * MIB, MIB, Changed), (4, 3));
        // Many cores: as many as the budget holds.
        assert_eq!(p(16, 4 * MIB, MIB, All), (5, 5));
        assert_eq!(p(16, 4 * MIB, 3_276_660, All), (3, 3));
        // A single worker keeps two frames where they fit, else one
        // (`plan` turns away what does not fit even so).
        assert_eq!(p(16, 12 * MIB, 7 * MIB, All), (1, 2));
        assert_eq!(p(16, 12 * MIB, 12 * MIB, All), (1, 1));
        assert_eq!(p(16, 16 * MIB, 16 * MIB, All), (1, 1));
        assert_eq!(p(0, MIB, MIB, All), (2, 2));
        assert_eq!(p(3, 1, 1, All), (5, 4));
        assert_eq!(p(usize::MAX, 0, 0, All), (64, 64));
        assert_eq!(p(usize::MAX, u64::MAX, u64::MAX, All), (1, 1));
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
        for (name, (img, payload)) in [
            ("stream", image_for(&d, Some(3))),
            ("segments", segmented_for(&d, 1 << 20)),
        ] {
            before_write_once(name, &d, &img, &payload);
        }
    }

    fn before_write_once(name: &str, d: &[u8], img: &Image, payload: &[u8]) {
        let (_dir, t) = target(&format!("arm-{name}"), 4 << 20);
        let untouched = |t: &Path| std::fs::read(t).expect("read").iter().all(|&b| b == 0);
        let run = |payload: &mut (dyn Read + Send), mode, calls: &mut u32, fail: bool| {
            write_image(
                "rootfs",
                payload,
                &Held::default(),
                img,
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
                &no_frame_again,
            )
        };

        // A link that breaks before the first chunk: never called, and the
        // error is the source's, not the payload's.
        let mut calls = 0;
        let mut cut = (&payload[..100]).chain(Broken);
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
        assert_eq!(calls, 1, "{name}");
        assert_eq!(&std::fs::read(&t).expect("read")[..d.len()], d);

        // Nothing to change (`--write=changed` over the same image): never.
        calls = 0;
        run(&mut &payload[..], WriteMode::Changed, &mut calls, false).expect("rewrite");
        assert_eq!(calls, 0);
    }
}
