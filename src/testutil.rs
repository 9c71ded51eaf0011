//! Temporary directories for the library's unit tests, and the images
//! they write (one frame, or segmented with signed digests), shared so
//! that no test module hand-rolls its own.
//!
//! Guarantees: each [`TempDir::new`] call gets its own fresh, empty
//! directory, unique per process and per call (the process id and an atomic
//! counter are in its name), so tests running in parallel never share one;
//! when the guard drops — at the end of the test, also when the test panics
//! — the directory is removed with everything in it. Bind the guard to a
//! variable that lives as long as the test uses the path: a temporary guard
//! removes its directory at the end of the statement.

use crate::manifest::{Compression, Image, Segment};
use sha2::{Digest, Sha256};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls so far in this process, part of every directory's name.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh directory, removed with its contents when this guard drops.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh directory under the system's temporary directory, named
    /// `abupdate-<tag>-<pid>-<n>`.
    pub(crate) fn new(tag: &str) -> TempDir {
        TempDir::in_dir(&std::env::temp_dir(), tag)
    }

    /// A fresh directory under `base` (say `/dev/shm`, to test on tmpfs),
    /// named `abupdate-<tag>-<pid>-<n>`.
    pub(crate) fn in_dir(base: &Path, tag: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("abupdate-{tag}-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same pid goes first.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A file `name` in this directory, `len` bytes long (a hole), for
    /// tests that write an image into a slot-sized target.
    pub(crate) fn sized_file(&self, name: &str, len: u64) -> PathBuf {
        let p = self.path.join(name);
        let f = std::fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        f.set_len(len)
            .unwrap_or_else(|e| panic!("size {}: {e}", p.display()));
        p
    }
}

/// A `len`-byte target file (a hole) in a fresh directory tagged `tag`,
/// for tests that write an image into a slot-sized file; the directory and
/// the file go when the returned guard drops.
pub(crate) fn sized_target(tag: &str, len: u64) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let p = dir.sized_file("target", len);
    (dir, p)
}

/// `len` bytes of a pattern that neither repeats within a block nor
/// compresses to nothing: image contents for the install tests.
pub(crate) fn image_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// `data` as a one-image release's image: one zstd frame at `zstd_level`
/// (`pack --one-frame`), or uncompressed (`None`); with its payload.
pub(crate) fn one_frame_image(data: &[u8], zstd_level: Option<i32>) -> (Image, Vec<u8>) {
    let sha = crate::install::hex(&Sha256::digest(data));
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
                    download_sha256: Some(crate::install::hex(&Sha256::digest(&payload))),
                    window_log: None,
                    segments: Vec::new(),
                    deltas: Default::default(),
                },
                payload,
            )
        }
    }
}

/// `data` as an image cut into `seg`-byte segments, each its own zstd frame
/// with signed digests (BLAKE3 of the segment and of its frame: what `pack`
/// writes by default); with its payload.
pub(crate) fn segmented_image(data: &[u8], seg: usize) -> (Image, Vec<u8>) {
    let mut payload = Vec::new();
    let mut segments = Vec::new();
    for (i, piece) in data.chunks(seg).enumerate() {
        let frame = zstd::encode_all(piece, 3).expect("frame");
        segments.push(Segment {
            offset: (i * seg) as u64,
            length: piece.len() as u64,
            sha256: crate::install::hex(&Sha256::digest(piece)),
            blake3: Some(blake3::hash(piece).to_hex().to_string()),
            patch_offset: payload.len() as u64,
            patch_length: frame.len() as u64,
            patch_blake3: Some(blake3::hash(&frame).to_hex().to_string()),
            source: None,
        });
        payload.extend_from_slice(&frame);
    }
    let (mut img, _) = one_frame_image(data, Some(3));
    img.download_size = Some(payload.len() as u64);
    img.download_sha256 = Some(crate::install::hex(&Sha256::digest(&payload)));
    img.segments = segments;
    (img, payload)
}

/// `f`'s result, run on another thread, or a panic when it takes longer
/// than 5 s: a read that blocks (a FIFO) fails the test instead of
/// hanging it.
pub(crate) fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("still blocked after 5 s")
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_gets_its_own_empty_directory_removed_on_drop() {
        let a = TempDir::new("testutil");
        let b = TempDir::new("testutil");
        assert_ne!(a.path(), b.path());
        assert!(a.is_dir() && b.is_dir());
        assert_eq!(std::fs::read_dir(&*a).expect("read").count(), 0);
        std::fs::create_dir_all(a.join("x/y")).expect("mkdir");
        let f = a.sized_file("x/y/f", 4096);
        assert_eq!(std::fs::metadata(&f).expect("stat").len(), 4096);
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists(), "{} left behind", kept.display());
    }

    #[test]
    fn the_directory_is_removed_when_the_test_panics() {
        let kept = std::sync::Mutex::new(None);
        let caught = std::panic::catch_unwind(|| {
            let d = TempDir::new("testutil-panic");
            std::fs::write(d.join("f"), b"x").expect("write");
            *kept.lock().expect("lock") = Some(d.path().to_path_buf());
            panic!("the test fails");
        });
        assert!(caught.is_err());
        let kept = kept.lock().expect("lock").take().expect("path");
        assert!(!kept.exists(), "{} left behind", kept.display());
    }
}
