//! Publishing a release directory: how `pack` and `fleet` write the files
//! hosts read, and how `fleet` decides it may re-sign what is there.
//!
//! Invariant: at every instant — a kill or a power cut at any point of a
//! `pack` or `fleet` run included — a host reading the directory sees the
//! previous complete release or the new complete one: every payload the live
//! manifest names holds exactly the bytes it states, and a set of signatures
//! valid for the live manifest is where hosts look for it. And nothing is
//! re-signed that the hosts' trust gate ([`crate::trust`]) would not accept
//! as it stands, with keys other than the ones that signed it; nor
//! published (by `pack`, `fleet` or `channel`) with signatures that gate
//! would refuse ([`ReleaseDir::publish_manifest`]).
//!
//! The order of a publish, like a package repository's:
//!
//! 1. Payloads, each written to a hidden temporary file, fsynced, and
//!    renamed to its versioned name, never over a file with other bytes (a
//!    published manifest may point to it: refused), then the directory
//!    fsynced.
//! 2. The new manifest's signatures under names bound to its content,
//!    `release.json.<tag>.minisig` (`<tag>` = the first 16 hex digits of the
//!    manifest's SHA-256; `.<tag>.N.minisig` for the N-th key): no manifest
//!    in use names them yet.
//! 3. The manifest: temporary file, fsync, rename over `release.json`,
//!    directory fsync.
//! 4. The signatures under the standard names (`release.json.minisig`,
//!    `release.json.N.minisig`: what `minisign -V` reads, and what hosts try
//!    first), stale ones of keys no longer signing removed.
//! 5. Bound signatures of manifests older than the one just replaced pruned.
//!
//! A manifest and its signature cannot be renamed together, so between 3 and
//! 4 (and to a host that fetched the manifest just before or after a rename,
//! or behind a cache holding an older `.minisig`) the standard signature may
//! belong to another manifest. A host that finds the standard signatures do
//! not verify fetches the bound names of the very bytes it holds
//! ([`bound_tag`]) and verifies again ([`crate::trust::gate`]); the bound
//! names are immutable, so they are also safe for any cache.
//!
//! Every file replaced is dated at least one whole second past the one it
//! replaces ([`stamp_past`]): web servers' validators (nginx's `ETag`,
//! `Last-Modified`) change with each publish, so no host's conditional GET
//! is answered 304 for a manifest it has not seen.
//!
//! One `pack` or `fleet` at a time per directory (an flock on the directory
//! itself), so a read-verify-re-sign cannot interleave with another publish.

use crate::install::hex;
use crate::manifest::{Manifest, ManifestError, MAX_MANIFEST_BYTES};
use crate::trust::minisign::{self, PublicKey, SecretKey};
use crate::trust::{self, KeyRing, TrustError};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most signature files looked for per manifest (`.minisig`, `.1.minisig`
/// … `.16.minisig`), as hosts do.
pub const MAX_SIGNATURES: usize = 17;

/// Suffix of the temporary files; leftovers of a killed run are removed by
/// the next one.
const TMP_SUFFIX: &str = ".abupdate-tmp";

/// Why a publish was refused or failed; each names the file or key.
#[derive(Debug)]
pub enum PublishError {
    /// A file or directory that cannot be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Another `pack` or `fleet` holds the directory.
    Locked {
        /// The release directory.
        dir: PathBuf,
    },
    /// A payload name already holds other bytes.
    Clobber {
        /// The payload's file.
        path: PathBuf,
    },
    /// The manifest in the directory does not pass the hosts' trust gate.
    Untrusted {
        /// The manifest.
        path: PathBuf,
        /// Why its signatures do not pass.
        error: TrustError,
    },
    /// The manifest in the directory (or the one about to be written) is not
    /// one hosts would parse.
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        error: ManifestError,
    },
    /// A secret key that must not sign this manifest.
    Key {
        /// The secret key file.
        path: PathBuf,
        /// Why it must not sign.
        reason: String,
    },
    /// Anything else that is wrong with what was asked.
    Refused(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PublishError::Locked { dir } => write!(
                f,
                "{}: another abupdate pack, fleet or channel is publishing into this directory",
                dir.display()
            ),
            PublishError::Clobber { path } => write!(
                f,
                "{}: already exists with other bytes, and a published manifest may point to it; \
                 publish a new --version (or into another --out)",
                path.display()
            ),
            PublishError::Untrusted { path, error } => write!(
                f,
                "{}: not re-signing a manifest the hosts would refuse: {error}",
                path.display()
            ),
            PublishError::Manifest { path, error } => write!(f, "{}: {error}", path.display()),
            PublishError::Key { path, reason } => write!(f, "{}: {reason}", path.display()),
            PublishError::Refused(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PublishError {}

impl PublishError {
    /// What failed, as a stable label.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            PublishError::Untrusted { .. } | PublishError::Key { .. } => {
                crate::error::Kind::Signature
            }
            PublishError::Manifest { .. } => crate::error::Kind::Manifest,
            PublishError::Locked { .. } => crate::error::Kind::Locked,
            _ => crate::error::Kind::Publish,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The name tag binding signatures to one manifest's exact bytes.
pub fn bound_tag(body: &[u8]) -> String {
    let mut h = hex(&Sha256::digest(body));
    h.truncate(16);
    h
}

/// `NAME.minisig` for the first key, `NAME.N.minisig` for the (N+1)-th:
/// the names hosts fetch for a manifest at `base` (a URL, a path or a file
/// name); with `base = NAME.<tag>` the bound names.
pub fn signature_name(base: &str, index: usize) -> String {
    match index {
        0 => format!("{base}.minisig"),
        n => format!("{base}.{n}.minisig"),
    }
}

/// The base of the bound signature names of manifest `body` at `base`.
pub fn bound_base(base: &str, body: &[u8]) -> String {
    format!("{base}.{}", bound_tag(body))
}

/// The hosts' rule for a manifest's signatures: the ones under the
/// standard names, and only when they do not meet the threshold, those
/// bound to these very bytes too (`bound` fetches them; copies of a
/// standard one are dropped, they add nothing). The error is the standard
/// set's when no other bound signature exists.
pub fn verify_signatures(
    body: &[u8],
    standard: &[(String, String)],
    bound: impl FnOnce() -> Vec<(String, String)>,
    keys: &KeyRing,
    threshold: usize,
) -> Result<(), TrustError> {
    let Err(e) = trust::verify_threshold(body, standard, keys, threshold) else {
        return Ok(());
    };
    let mut extra = bound();
    extra.retain(|(_, text)| !standard.iter().any(|(_, s)| s == text));
    if extra.is_empty() {
        return Err(e);
    }
    trust::verify_threshold(body, &[standard, &extra[..]].concat(), keys, threshold).map(|_| ())
}

/// A date, in whole seconds, for what replaces something dated `previous`:
/// now, and never earlier than (nor equal to) `previous`. The `created` of
/// a re-signed manifest, so hosts can order the copies they see even when
/// this clock is behind; and the modification time of a file replaced in a
/// release directory ([`ReleaseDir::replace`]), so a web server's
/// validators change with it.
pub fn next_second(previous: Option<i64>, now: i64) -> i64 {
    match previous {
        Some(p) if p >= now => p.saturating_add(1),
        _ => now,
    }
}

/// Whole seconds since the epoch of `t`; `None` before it.
fn unix_seconds(t: SystemTime) -> Option<i64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Date `file`, about to replace `path`, at least one whole second past
/// `path`'s modification time. Web servers derive a file's validators from
/// its mtime in whole seconds (nginx's `ETag` is mtime and size, and
/// `Last-Modified` has no finer unit), so a manifest replaced within the
/// second by one of the same size (two `pack` runs of a pipeline, a
/// `channel` edit after a `pack`) would keep them: a host's conditional GET
/// would be answered 304 and it would not see the release until the next
/// change. A file replaced more than a second later keeps its own time.
fn stamp_past(file: &File, path: &Path) -> io::Result<()> {
    let previous = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.modified().ok().and_then(unix_seconds),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let own = unix_seconds(file.metadata()?.modified()?).unwrap_or(0);
    let stamp = next_second(previous, own);
    if stamp != own {
        let secs = u64::try_from(stamp).unwrap_or(0);
        file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))?;
    }
    Ok(())
}

/// A release directory, locked for one publisher.
pub struct ReleaseDir {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

/// A file being written under a temporary name; [`ReleaseDir::commit_payload`]
/// gives it its name.
pub struct Staged {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl Staged {
    /// Where it will be once committed.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A payload never committed (its writing failed: a full disk) leaves no
/// temporary file behind (found from outside: a hidden partial payload
/// kept the disk full, and a sync of the directory would upload it).
impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A plain file name inside the directory: no separator, not hidden.
fn check_name(name: &str) -> Result<(), PublishError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(PublishError::Refused(format!(
            "{name:?}: not a plain file name for a release directory"
        )));
    }
    Ok(())
}

fn tmp_name(name: &str) -> String {
    format!(".{name}{TMP_SUFFIX}")
}

/// [`crate::files::read_capped`]; `None` when `path` does not exist, a
/// file over `limit` refused.
fn read_capped(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, PublishError> {
    match crate::files::read_capped(path, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            Err(PublishError::Refused(format!("{}: {e}", path.display())))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Whether two files hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

impl ReleaseDir {
    /// Create (if needed) and lock `path`; remove temporary files a killed
    /// run left.
    pub fn open(path: &Path) -> Result<ReleaseDir, PublishError> {
        std::fs::create_dir_all(path).map_err(|e| {
            let reason = match (std::fs::metadata(path), std::fs::symlink_metadata(path)) {
                (Ok(m), _) if !m.is_dir() => {
                    "not a directory (a release directory, --out)".to_string()
                }
                // Found from outside: "File exists" named no cause.
                (Err(_), Ok(l)) if l.is_symlink() => {
                    "a symbolic link to nothing (a release directory, --out)".to_string()
                }
                _ => format!("cannot create the release directory (--out): {e}"),
            };
            io_err(path)(io::Error::new(e.kind(), reason))
        })?;
        let dir = Self::lock(path)?;
        for entry in std::fs::read_dir(path).map_err(io_err(path))? {
            let entry = entry.map_err(io_err(path))?;
            let name = entry.file_name();
            let leftover = name
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.ends_with(TMP_SUFFIX));
            if leftover {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(dir)
    }

    /// Lock the release directory `path` to read it, changing nothing in
    /// it (`fleet --dry-run`): it must exist, and what a killed run left
    /// stays.
    pub fn look(path: &Path) -> Result<ReleaseDir, PublishError> {
        if !std::fs::metadata(path).map_err(io_err(path))?.is_dir() {
            return Err(io_err(path)(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory (a release directory)",
            )));
        }
        Self::lock(path)
    }

    /// Take the directory's lock: one publisher at a time.
    fn lock(path: &Path) -> Result<ReleaseDir, PublishError> {
        let handle = File::open(path).map_err(io_err(path))?;
        let lock =
            match nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(PublishError::Locked {
                        dir: path.to_path_buf(),
                    })
                }
                Err((_, e)) => return Err(io_err(path)(e.into())),
            };
        Ok(ReleaseDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsync the directory: renames and removals in it are durable.
    pub fn sync(&self) -> Result<(), PublishError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.path))
    }

    /// Start writing payload `name` under a temporary name.
    pub fn stage(&self, name: &str) -> Result<Staged, PublishError> {
        check_name(name)?;
        let tmp = self.path.join(tmp_name(name));
        let file = crate::files::create_replacing(&tmp).map_err(io_err(&tmp))?;
        Ok(Staged {
            file,
            tmp,
            path: self.path.join(name),
        })
    }

    /// Make a staged payload durable under its name. A file already there
    /// with the same bytes is kept (re-packing the same release); one with
    /// other bytes is never replaced (a published manifest may point to it).
    /// The caller syncs the directory once all payloads are in.
    pub fn commit_payload(&self, mut staged: Staged) -> Result<(), PublishError> {
        let (tmp, path) = (staged.tmp.clone(), staged.path.clone());
        staged.file.flush().map_err(io_err(&tmp))?;
        staged.file.sync_all().map_err(io_err(&tmp))?;
        // From here on the temporary file is this function's to rename or
        // remove (a kill leaves it for the next open to remove).
        staged.tmp = PathBuf::new();
        drop(staged);
        crate::failpoint::hit("publish-payload-staged");
        // Under the directory lock nobody else creates `path` between this
        // check and the rename.
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {
                let same = same_contents(&tmp, &path).map_err(io_err(&path))?;
                let _ = std::fs::remove_file(&tmp);
                if !same {
                    return Err(PublishError::Clobber { path });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
        crate::failpoint::hit("publish-payload-written");
        Ok(())
    }

    /// Replace `name` atomically and durably with `data` (temporary file,
    /// fsync, rename, directory fsync); `tear` names the failpoint inside
    /// the write, `done` the one after it.
    fn replace(&self, name: &str, data: &[u8], tear: &str, done: &str) -> Result<(), PublishError> {
        check_name(name)?;
        let tmp = self.path.join(tmp_name(name));
        let path = self.path.join(name);
        let mut f = crate::files::create_replacing(&tmp).map_err(io_err(&tmp))?;
        if let Some(keep) = crate::failpoint::tear(tear, data.len()) {
            let _ = f.write_all(&data[..keep]);
            let _ = f.sync_all();
            crate::failpoint::torn(tear);
        }
        f.write_all(data).map_err(io_err(&tmp))?;
        stamp_past(&f, &path).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync()?;
        crate::failpoint::hit(done);
        Ok(())
    }

    /// The manifest `name` as it is now, `None` when there is none.
    pub fn read_manifest(&self, name: &str) -> Result<Option<Vec<u8>>, PublishError> {
        check_name(name)?;
        read_capped(&self.path.join(name), MAX_MANIFEST_BYTES)
    }

    /// The signature files of the manifest at `base` (a name in the
    /// directory: `base.minisig`, `base.N.minisig`), as (path, text).
    fn signatures(&self, base: &str) -> Result<Vec<(String, String)>, PublishError> {
        let mut out = Vec::new();
        for i in 0..MAX_SIGNATURES {
            let path = self.path.join(signature_name(base, i));
            if let Some(bytes) = read_capped(&path, minisign::MAX_FILE_SIZE as u64)? {
                out.push((
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
        Ok(out)
    }

    /// The manifest `name`, verified as hosts verify it: `threshold`
    /// distinct keys of `keys` signed its exact bytes, and it parses.
    pub fn read_verified(
        &self,
        name: &str,
        keys: &KeyRing,
        threshold: usize,
    ) -> Result<Current, PublishError> {
        let signed = self.read_signed(name, keys, threshold)?;
        let standard_ok =
            trust::verify_threshold(&signed.body, &signed.standard, keys, threshold).is_ok();
        let manifest = Manifest::parse(&signed.body).map_err(|error| PublishError::Manifest {
            path: signed.path.clone(),
            error,
        })?;
        Ok(Current {
            signed,
            manifest,
            standard_ok,
        })
    }

    /// The signed file `name` (a manifest or a channel), verified as hosts
    /// verify it: `threshold` distinct keys of `keys` signed its exact
    /// bytes. Its bytes, and its signature files under the standard names
    /// and the names bound to these bytes.
    pub fn read_signed(
        &self,
        name: &str,
        keys: &KeyRing,
        threshold: usize,
    ) -> Result<Signed, PublishError> {
        let path = self.path.join(name);
        let body = self.read_manifest(name)?.ok_or_else(|| PublishError::Io {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
        })?;
        let standard = self.signatures(name)?;
        let bound = self.signatures(&bound_base(name, &body))?;
        let untrusted = |error| PublishError::Untrusted {
            path: path.clone(),
            error,
        };
        if standard.is_empty() && bound.is_empty() {
            return Err(untrusted(TrustError::NoSignatures { missing: None }));
        }
        verify_signatures(&body, &standard, || bound.clone(), keys, threshold)
            .map_err(untrusted)?;
        Ok(Signed {
            path,
            body,
            standard,
            bound,
        })
    }

    /// Publish manifest `name` with one signature per key, in the order of
    /// the module docs. `previous`: the manifest being replaced, whose bound
    /// signatures are kept for hosts that fetched it a moment ago. Nothing
    /// is written unless the new signatures pass the hosts' gate: `hosts`
    /// (the keys they trust) at `threshold`, as [`trust::verify_threshold`]
    /// counts (distinct Ed25519 keys), so no publisher replaces a release
    /// hosts can read with one they refuse.
    pub fn publish_manifest(
        &self,
        name: &str,
        body: &[u8],
        keys: &[SecretKey],
        previous: Option<&[u8]>,
        hosts: &KeyRing,
        threshold: usize,
    ) -> Result<(), PublishError> {
        check_name(name)?;
        // What no host would read is not published (it would replace the
        // release hosts can read).
        if body.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(PublishError::Refused(format!(
                "{name}: {} bytes, more than the {MAX_MANIFEST_BYTES} bytes hosts read (fewer segments: a larger --segment-size)",
                body.len()
            )));
        }
        if keys.is_empty() || keys.len() > MAX_SIGNATURES {
            return Err(PublishError::Refused(format!(
                "{name}: between 1 and {MAX_SIGNATURES} signing keys, not {}",
                keys.len()
            )));
        }
        let comment = format!("timestamp:{}\tfile:{name}\thashed", crate::timefmt::now());
        let signatures: Vec<String> = keys
            .iter()
            .map(|k| minisign::sign(k, body, &comment))
            .collect();
        let named: Vec<(String, String)> = signatures
            .iter()
            .enumerate()
            .map(|(i, sig)| (signature_name(name, i), sig.clone()))
            .collect();
        if let Err(error) = trust::verify_threshold(body, &named, hosts, threshold) {
            return Err(PublishError::Refused(format!(
                "{name}: not publishing what the hosts would refuse: {error}"
            )));
        }
        let bound = bound_base(name, body);
        for (i, sig) in signatures.iter().enumerate() {
            self.replace(
                &signature_name(&bound, i),
                sig.as_bytes(),
                "publish-signature-write",
                "publish-bound-signature-written",
            )?;
        }
        self.replace(
            name,
            body,
            "publish-manifest-write",
            "publish-manifest-renamed",
        )?;
        for (i, sig) in signatures.iter().enumerate() {
            self.replace(
                &signature_name(name, i),
                sig.as_bytes(),
                "publish-signature-write",
                "publish-signature-written",
            )?;
        }
        self.remove_stale_signatures(name, keys.len(), &[Some(body), previous])?;
        crate::failpoint::hit("publish-cleaned");
        Ok(())
    }

    /// Finish a publish that was interrupted after the manifest was renamed
    /// (its standard signatures belong to the manifest before it): copy its
    /// bound signatures to the standard names. Returns whether it did.
    pub fn finish_publish(&self, name: &str, current: &Current) -> Result<bool, PublishError> {
        if current.standard_ok || current.signed.bound.is_empty() {
            return Ok(false);
        }
        let bound = bound_base(name, &current.signed.body);
        let mut count = 0;
        for i in 0..MAX_SIGNATURES {
            let from = self.path.join(signature_name(&bound, i));
            let Some(text) = read_capped(&from, minisign::MAX_FILE_SIZE as u64)? else {
                break;
            };
            self.replace(
                &signature_name(name, i),
                &text,
                "publish-signature-write",
                "publish-signature-written",
            )?;
            count += 1;
        }
        self.remove_stale_signatures(name, count, &[Some(&current.signed.body)])?;
        crate::failpoint::hit("publish-cleaned");
        Ok(true)
    }

    /// Remove standard signatures beyond the `count` just written, and bound
    /// signatures of manifests other than `keep`.
    fn remove_stale_signatures(
        &self,
        name: &str,
        count: usize,
        keep: &[Option<&[u8]>],
    ) -> Result<(), PublishError> {
        let keep: Vec<String> = keep.iter().flatten().map(|b| bound_tag(b)).collect();
        let mut stale: Vec<PathBuf> = (count..MAX_SIGNATURES)
            .map(|i| self.path.join(signature_name(name, i)))
            .collect();
        let prefix = format!("{name}.");
        for entry in std::fs::read_dir(&self.path).map_err(io_err(&self.path))? {
            let entry = entry.map_err(io_err(&self.path))?;
            let file_name = entry.file_name();
            let Some(rest) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|r| r.strip_suffix(".minisig"))
            else {
                continue;
            };
            let tag = rest.split('.').next().unwrap_or("");
            let is_bound = tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit());
            if is_bound && !keep.iter().any(|k| k == tag) {
                stale.push(entry.path());
            }
        }
        let mut removed = false;
        for p in stale {
            match std::fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        if removed {
            self.sync()?;
        }
        Ok(())
    }
}

/// A manifest in a release directory that passed the hosts' trust gate.
#[derive(Debug)]
pub struct Current {
    /// Its path, bytes and signatures.
    pub signed: Signed,
    /// It, parsed.
    pub manifest: Manifest,
    /// The standard signatures verify on their own; false after a publish
    /// was interrupted between the manifest and its signatures.
    standard_ok: bool,
}

/// A signed file (a manifest or a channel) in a release directory that
/// passed the hosts' trust gate, with the signature files found for it.
#[derive(Debug)]
pub struct Signed {
    /// The file's path.
    pub path: PathBuf,
    /// Its exact bytes.
    pub body: Vec<u8>,
    /// Signature files under the standard names, and under the names bound
    /// to `body`, as (path, text).
    standard: Vec<(String, String)>,
    bound: Vec<(String, String)>,
}

impl Signed {
    /// Whether `key` made one of the valid signatures over these bytes.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        let ring = KeyRing::from_keys(vec![key.clone()]);
        let all = [&self.standard[..], &self.bound[..]].concat();
        trust::verify_threshold(&self.body, &all, &ring, 1).is_ok()
    }

    /// The keys (secret key file, key) may re-sign this file: the same
    /// set that signed it. Each is in `keys` (the hosts' trusted keys) and
    /// made a valid signature over these bytes; every signature file there
    /// is by one of them (else it would stay behind, stale over new
    /// content); no key twice; and together they meet `threshold`.
    pub fn check_signers(
        &self,
        secrets: &[(PathBuf, SecretKey)],
        keys: &KeyRing,
        threshold: usize,
    ) -> Result<(), PublishError> {
        let mut seen: Vec<PublicKey> = Vec::new();
        for (path, sk) in secrets {
            let pk = sk.public_key();
            let key = |reason: String| PublishError::Key {
                path: path.clone(),
                reason,
            };
            if seen.iter().any(|k| k.ed25519_bytes() == pk.ed25519_bytes()) {
                return Err(key(format!("key {} given twice", pk.key_id_hex())));
            }
            // Asked of the trust gate itself, so "trusted" means exactly
            // what it means on a host.
            const PROBE: &[u8] = b"abupdate: is this key trusted?";
            let probe = vec![("probe".to_string(), minisign::sign(sk, PROBE, "probe"))];
            if trust::verify_threshold(PROBE, &probe, keys, 1).is_err() {
                return Err(key(format!(
                    "key {} is not among the hosts' trusted keys (--keys)",
                    pk.key_id_hex()
                )));
            }
            if !self.signed_by(&pk) {
                return Err(key(format!(
                    "key {} did not sign {}; re-sign only with the keys that signed it",
                    pk.key_id_hex(),
                    self.path.display()
                )));
            }
            seen.push(pk);
        }
        for (name, text) in &self.standard {
            let signer = minisign::Signature::parse(text).map(|s| s.key_id);
            if !signer.is_ok_and(|id| seen.iter().any(|k| k.key_id == id)) {
                return Err(PublishError::Refused(format!(
                    "{name}: not by one of the --secret keys; give that key too (or remove \
                     the file): re-signing without it would leave it stale over new content"
                )));
            }
        }
        let need = threshold.max(1);
        if seen.len() < need {
            return Err(PublishError::Refused(format!(
                "{}: threshold is {need}: give {need} --secret keys that signed it \
                 (re-signing with fewer would leave the others stale over new content)",
                self.path.display()
            )));
        }
        Ok(())
    }
}

impl Current {
    /// The manifest re-serialized from its own JSON (unknown fields are
    /// signed content and kept; numbers keep their digits, as serde_json's
    /// `arbitrary_precision` reads them, never rounded through f64),
    /// `created` advanced ([`next_second`]) and
    /// `edit` applied; checked to parse as hosts parse it and not to be
    /// expired already.
    pub fn rewrite(
        &self,
        now: i64,
        edit: impl FnOnce(&mut serde_json::Value) -> Result<(), String>,
    ) -> Result<Vec<u8>, PublishError> {
        let path = &self.signed.path;
        let refused = |m: String| PublishError::Refused(format!("{}: {m}", path.display()));
        let mut value: serde_json::Value =
            serde_json::from_slice(&self.signed.body).map_err(|e| refused(e.to_string()))?;
        let created = next_second(Some(self.manifest.created), now);
        if created >= self.manifest.expires {
            return Err(refused(format!(
                "expired at {}: re-signing would not make it installable; pack a new release",
                self.manifest.doc.expires
            )));
        }
        let Some(obj) = value.as_object_mut() else {
            return Err(refused("not a JSON object".into()));
        };
        obj.insert(
            "created".into(),
            crate::timefmt::format_rfc3339(created).into(),
        );
        edit(&mut value).map_err(refused)?;
        let mut body = serde_json::to_vec_pretty(&value).map_err(|e| refused(e.to_string()))?;
        body.push(b'\n');
        Manifest::parse(&body).map_err(|error| PublishError::Manifest {
            path: path.clone(),
            error,
        })?;
        Ok(body)
    }
}

/// The operators' `--keys` directories each exist: a mistyped one is
/// named, not read as "no trusted keys" (a host's `keys_dirs` may list a
/// directory it does not have; an operator's command line names its own).
pub fn check_key_dirs(dirs: &[PathBuf]) -> Result<(), PublishError> {
    for dir in dirs {
        std::fs::metadata(dir).map_err(|e| PublishError::Io {
            path: dir.clone(),
            source: io::Error::new(
                e.kind(),
                format!("cannot read the trusted keys directory (--keys): {e}"),
            ),
        })?;
    }
    Ok(())
}

/// Warn, naming the key, when a secret key file can be read by others
/// than its owner: keys are stored unencrypted (as `minisign -W` and
/// `keygen` write them, mode 0600), and whoever reads one can sign what
/// every host installs. A warning, not a refusal: a build machine may hold
/// keys where a mode says little (a secrets mount, a container).
pub fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            say!(
                "warning: secret key {} can be read by others than its owner (mode {mode:04o}): \
                 whoever reads it can sign releases the hosts install (chmod 600)",
                path.display()
            );
        }
    }
}

/// Read and parse secret key files.
///
/// One key given twice (two copies of one file) is refused: its second
/// signature counts for nothing on a host with a threshold.
pub fn load_secret_keys(paths: &[PathBuf]) -> Result<Vec<(PathBuf, SecretKey)>, PublishError> {
    let keys: Vec<(PathBuf, SecretKey)> = paths
        .iter()
        .map(|p| {
            warn_if_others_can_read(p);
            let bytes =
                crate::files::read_capped(p, minisign::MAX_FILE_SIZE as u64).map_err(|e| {
                    PublishError::Io {
                        path: p.clone(),
                        source: io::Error::new(
                            e.kind(),
                            format!("cannot read the secret key (--secret): {e}"),
                        ),
                    }
                })?;
            let text = String::from_utf8(bytes).map_err(|_| PublishError::Key {
                path: p.clone(),
                reason: "not a minisign secret key (not UTF-8 text)".into(),
            })?;
            SecretKey::parse(&text)
                .map(|k| (p.clone(), k))
                .map_err(|e| PublishError::Key {
                    path: p.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    for (i, (path, sk)) in keys.iter().enumerate() {
        let pk = sk.public_key();
        // The same Ed25519 key under another key id is the same key: the
        // hosts' gate counts it once.
        if let Some((first, _)) = keys[..i]
            .iter()
            .find(|(_, k)| k.public_key().ed25519_bytes() == pk.ed25519_bytes())
        {
            return Err(PublishError::Key {
                path: path.clone(),
                reason: format!(
                    "key {} given twice (also {}): a second signature by one key counts once",
                    pk.key_id_hex(),
                    first.display()
                ),
            });
        }
    }
    Ok(keys)
}

/// Replace a single file atomically and durably (temporary file in the same
/// directory, fsync, rename, directory fsync): for `sign`, whose signature
/// must never be seen half written.
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), PublishError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(tmp_name(&name));
    let mut f = crate::files::create_replacing(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn created_moves_forward_even_when_the_clock_is_behind() {
        assert_eq!(next_second(None, 100), 100);
        assert_eq!(next_second(Some(50), 100), 100);
        assert_eq!(next_second(Some(100), 100), 101, "same second");
        assert_eq!(next_second(Some(500), 100), 501, "clock behind");
        assert_eq!(next_second(Some(i64::MAX), 0), i64::MAX);
    }

    #[test]
    fn signature_names_follow_the_hosts_scheme() {
        assert_eq!(signature_name("release.json", 0), "release.json.minisig");
        assert_eq!(signature_name("release.json", 2), "release.json.2.minisig");
        let tag = bound_tag(b"{}");
        assert_eq!(tag.len(), 16);
        assert_eq!(
            signature_name(&bound_base("release.json", b"{}"), 1),
            format!("release.json.{tag}.1.minisig")
        );
        assert_ne!(bound_tag(b"{}"), bound_tag(b"{} "));
    }

    fn temp(tag: &str) -> TempDir {
        TempDir::new(&format!("publish-{tag}"))
    }

    fn manifest(created: &str, expires: &str) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "format": 1, "compatible": "c", "version": "2.0",
            "created": created, "expires": expires,
            "images": {"rootfs": {"url": "r.img", "size": 1, "sha256": "0".repeat(64)}},
            "x-vendor": {"build": 7},
            "rollout": {"percent": 1.0, "x-note": "kept"}
        }))
        .expect("json")
    }

    fn dup(k: &SecretKey) -> SecretKey {
        SecretKey::parse(&k.to_file_string()).expect("key")
    }

    fn keys(n: usize) -> Vec<(SecretKey, PublicKey)> {
        (0..n)
            .map(|_| minisign::generate_keypair().expect("keygen"))
            .collect()
    }

    #[test]
    fn one_secret_key_given_twice_is_refused() {
        let d = temp("dup-key");
        let (sk, _) = keys(1).remove(0);
        let (other, _) = keys(1).remove(0);
        let write = |name: &str, k: &SecretKey| {
            let p = d.join(name);
            std::fs::write(&p, k.to_file_string()).expect("write key");
            p
        };
        let (a, copy, b) = (
            write("a.key", &sk),
            write("copy.key", &sk),
            write("b.key", &other),
        );
        assert_eq!(
            load_secret_keys(&[a.clone(), b.clone()])
                .expect("two keys")
                .len(),
            2
        );
        let e = load_secret_keys(&[a.clone(), b, copy.clone()])
            .expect_err("one key twice")
            .to_string();
        assert!(
            e.contains("given twice") && e.contains(&a.display().to_string()),
            "{e}"
        );
        assert!(e.starts_with(&copy.display().to_string()), "{e}");
        // Found from outside (stop 47): the same key under another key id
        // (a file relabelled, its checksum zeroed as `minisign -W` leaves
        // it) passed as a second key.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let text = sk.to_file_string();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut raw = b64.decode(&lines[1]).expect("base64");
        raw[54..62].copy_from_slice(b"relabel!");
        raw[126..158].fill(0);
        lines[1] = b64.encode(&raw);
        let relabelled = d.join("relabelled.key");
        std::fs::write(&relabelled, lines.join("\n") + "\n").expect("write");
        let e = load_secret_keys(&[a.clone(), relabelled])
            .expect_err("one key under two ids")
            .to_string();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn the_standard_signatures_first_then_the_bound_ones() {
        let ks = keys(2);
        let ring = KeyRing::from_keys(vec![ks[0].1.clone()]);
        let body = b"new manifest";
        let sig = |k: &SecretKey, m: &[u8]| minisign::sign(k, m, "t");
        let stale = vec![("std".to_string(), sig(&ks[0].0, b"old manifest"))];
        let bound = vec![("bound".to_string(), sig(&ks[0].0, body))];
        let mut asked = false;
        // The standard one verifies: the bound ones are not even fetched.
        let good = vec![("std".to_string(), sig(&ks[0].0, body))];
        let r = verify_signatures(
            body,
            &good,
            || {
                asked = true;
                Vec::new()
            },
            &ring,
            1,
        );
        assert!(r.is_ok() && !asked);
        assert!(verify_signatures(body, &stale, || bound.clone(), &ring, 1).is_ok());
        assert!(verify_signatures(body, &[], || bound.clone(), &ring, 1).is_ok());
        // No bound signature, or only a copy of the standard one: the
        // standard set's own error.
        let e = verify_signatures(body, &stale, Vec::new, &ring, 1).expect_err("stale");
        assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");
        assert!(matches!(
            verify_signatures(body, &[], Vec::new, &ring, 1),
            Err(TrustError::NoSignatures { .. })
        ));
        // A bound signature by an untrusted key does not help.
        let other = vec![("bound".to_string(), sig(&ks[1].0, body))];
        assert!(verify_signatures(body, &stale, || other, &ring, 1).is_err());
    }

    #[test]
    fn a_file_replaced_within_its_second_is_dated_a_second_past_it() {
        let d = temp("mtime");
        let dir = ReleaseDir::open(&d).expect("open");
        let path = d.join("release.json");
        let secs = |p: &Path| {
            let t = std::fs::metadata(p)
                .expect("stat")
                .modified()
                .expect("mtime");
            unix_seconds(t).expect("after the epoch")
        };
        let write = |body: &[u8]| {
            dir.replace("release.json", body, "publish-manifest-write", "none")
                .expect("replace")
        };
        // Three replacements of one size within far less than a second: a
        // web server's mtime-and-size validators change every time.
        write(b"m1");
        let first = secs(&path);
        write(b"m2");
        write(b"m3");
        assert_eq!(secs(&path), first + 2, "each one a second past the last");
        // A file dated long ago is replaced at the time of its writing.
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("date it");
        write(b"m4");
        let now = unix_seconds(SystemTime::now()).expect("now");
        assert!((now - 1..=now).contains(&secs(&path)), "{}", secs(&path));
        assert_eq!(std::fs::read(&path).expect("read"), b"m4");
    }

    #[test]
    fn payloads_are_never_replaced_by_other_bytes() {
        let d = temp("clobber");
        let dir = ReleaseDir::open(&d).expect("open");
        let write = |bytes: &[u8]| {
            let mut st = dir.stage("p.img").expect("stage");
            st.write_all(bytes).expect("write");
            dir.commit_payload(st)
        };
        write(b"first").expect("first");
        write(b"first").expect("the same bytes again");
        let e = write(b"other").expect_err("other bytes");
        assert!(matches!(e, PublishError::Clobber { .. }), "{e}");
        assert_eq!(std::fs::read(d.join("p.img")).expect("read"), b"first");
        // A second publisher is kept out; leftovers of a killed one go.
        assert!(matches!(
            ReleaseDir::open(&d),
            Err(PublishError::Locked { .. })
        ));
        drop(dir);
        std::fs::write(d.join(".p.img.abupdate-tmp"), b"half").expect("write");
        let dir = ReleaseDir::open(&d).expect("reopen");
        assert!(!d.join(".p.img.abupdate-tmp").exists());
        // One whose writing failed (dropped uncommitted) leaves nothing.
        let mut st = dir.stage("q.img").expect("stage");
        st.write_all(b"half a payload").expect("write");
        assert!(d.join(".q.img.abupdate-tmp").exists());
        drop(st);
        assert!(!d.join(".q.img.abupdate-tmp").exists());
        assert!(!d.join("q.img").exists());
        // A dry run's look leaves a killed run's leftovers as they are.
        drop(dir);
        std::fs::write(d.join(".p.img.abupdate-tmp"), b"half").expect("write");
        let _look = ReleaseDir::look(&d).expect("look");
        assert!(d.join(".p.img.abupdate-tmp").exists());
        assert!(ReleaseDir::look(&d.join("gone")).is_err());
    }

    #[test]
    fn publish_keeps_the_previous_bound_signatures_and_prunes_older_ones() {
        let d = temp("prune");
        let dir = ReleaseDir::open(&d).expect("open");
        let ks = keys(2);
        let both: Vec<SecretKey> = ks.iter().map(|(s, _)| dup(s)).collect();
        let one = vec![dup(&ks[0].0)];
        let bodies: Vec<Vec<u8>> = (0..3).map(|i| format!("m{i}").into_bytes()).collect();
        let two = KeyRing::from_keys(ks.iter().map(|(_, p)| p.clone()).collect());
        dir.publish_manifest("release.json", &bodies[0], &both, None, &two, 2)
            .expect("m0");
        assert!(d.join("release.json.1.minisig").exists());
        dir.publish_manifest("release.json", &bodies[1], &one, Some(&bodies[0]), &two, 1)
            .expect("m1");
        assert!(
            !d.join("release.json.1.minisig").exists(),
            "stale second key"
        );
        dir.publish_manifest("release.json", &bodies[2], &one, Some(&bodies[1]), &two, 1)
            .expect("m2");
        let bound = |b: &[u8]| d.join(signature_name(&bound_base("release.json", b), 0));
        assert!(bound(&bodies[2]).exists() && bound(&bodies[1]).exists());
        assert!(!bound(&bodies[0]).exists(), "older than the previous");
        assert!(!d
            .join(signature_name(&bound_base("release.json", &bodies[0]), 1))
            .exists());
        let ring = KeyRing::from_keys(vec![ks[0].1.clone()]);
        let current = dir.read_verified("release.json", &ring, 1);
        // Not a manifest: verified, then refused by the parser.
        assert!(matches!(current, Err(PublishError::Manifest { .. })));
    }

    #[test]
    fn a_manifest_no_host_would_read_is_not_published() {
        let d = temp("too-big");
        let dir = ReleaseDir::open(&d).expect("open");
        let ks = keys(1);
        let live = b"m0".to_vec();
        let ring = KeyRing::from_keys(vec![ks[0].1.clone()]);
        dir.publish_manifest("release.json", &live, &[dup(&ks[0].0)], None, &ring, 1)
            .expect("m0");
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        let e = dir
            .publish_manifest(
                "release.json",
                &big,
                &[dup(&ks[0].0)],
                Some(&live),
                &ring,
                1,
            )
            .expect_err("too big")
            .to_string();
        assert!(e.contains("more than the 1048576 bytes hosts read"), "{e}");
        assert_eq!(std::fs::read(d.join("release.json")).expect("live"), live);
    }

    /// Found from outside (stop 47): `channel` published under the
    /// threshold it had just verified, or signed by a key outside
    /// `--keys`. The publish itself refuses what the hosts' gate would.
    #[test]
    fn nothing_is_published_that_the_hosts_gate_would_refuse() {
        let d = temp("gate");
        let dir = ReleaseDir::open(&d).expect("open");
        let ks = keys(3);
        let ring = KeyRing::from_keys(vec![ks[0].1.clone(), ks[1].1.clone()]);
        let live = b"m0".to_vec();
        let both = [dup(&ks[0].0), dup(&ks[1].0)];
        dir.publish_manifest("release.json", &live, &both, None, &ring, 2)
            .expect("two trusted keys at threshold 2");
        let listing = || {
            let mut names: Vec<_> = std::fs::read_dir(&d)
                .expect("ls")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            names
        };
        let before = listing();
        let refuse = |keys: &[SecretKey], why: &str| {
            let e = dir
                .publish_manifest("release.json", b"m1", keys, Some(&live), &ring, 2)
                .expect_err(why)
                .to_string();
            assert!(
                e.contains("not publishing what the hosts would refuse"),
                "{why}: {e}"
            );
        };
        refuse(&[dup(&ks[0].0)], "one key under threshold 2");
        refuse(
            &[dup(&ks[0].0), dup(&ks[2].0)],
            "a key the hosts do not trust",
        );
        refuse(&[dup(&ks[0].0), dup(&ks[0].0)], "one key twice");
        assert_eq!(listing(), before, "nothing written");
        assert_eq!(std::fs::read(d.join("release.json")).expect("live"), live);
    }

    /// `body` published and signed in a new directory, read back verified,
    /// and the bytes [`Current::rewrite`] would sign with it paused at
    /// 2026-01-01.
    fn paused_by_rewrite(name: &str, body: &[u8]) -> (Current, Vec<u8>) {
        let d = temp(name);
        let dir = ReleaseDir::open(&d).expect("open");
        let ks = keys(1);
        let ring = KeyRing::from_keys(vec![ks[0].1.clone()]);
        dir.publish_manifest("release.json", body, &[dup(&ks[0].0)], None, &ring, 1)
            .expect("publish");
        let current = dir
            .read_verified("release.json", &ring, 1)
            .expect("verified");
        let now = crate::timefmt::parse_rfc3339("2026-01-01T00:00:00Z").expect("t");
        let new = current
            .rewrite(now, |v| {
                v["rollout"]["paused"] = true.into();
                Ok(())
            })
            .expect("rewrite");
        (current, new)
    }

    #[test]
    fn a_rewrite_advances_created_and_keeps_every_other_field() {
        let body = manifest("2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z");
        // This clock (2026) is behind the manifest's created (2030).
        let (current, new) = paused_by_rewrite("rewrite", &body);
        let v: serde_json::Value = serde_json::from_slice(&new).expect("json");
        assert_eq!(v["created"], "2030-01-01T00:00:01Z");
        assert_eq!(v["x-vendor"]["build"], 7);
        assert_eq!(v["rollout"]["x-note"], "kept");
        assert_eq!(v["rollout"]["paused"], true);
        let late = crate::timefmt::parse_rfc3339("2031-06-01T00:00:00Z").expect("t");
        let e = current.rewrite(late, |_| Ok(())).expect_err("expired");
        assert!(
            e.to_string().contains("expired at 2031-01-01T00:00:00Z"),
            "{e}"
        );
    }

    #[test]
    fn a_rewrite_keeps_every_number_as_signed_digit_for_digit() {
        // Written as serde_json's pretty printer lays a document out (keys
        // in order), so that the rewrite may differ in the two edited
        // values only: a number beyond 64 bits (in a field the host does not
        // know) and floats (`1.0` is not `1`, 36 digits are not rounded to
        // f64) stay as signed.
        let body = r#"{
  "compatible": "c",
  "created": "2030-01-01T00:00:00Z",
  "expires": "2031-01-01T00:00:00Z",
  "format": 1,
  "images": {
    "rootfs": {
      "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
      "size": 1,
      "url": "r.img",
      "x-blocks": -123456789012345678901234567890
    }
  },
  "rollout": {
    "duration_minutes": 4320,
    "paused": false,
    "start": "2030-01-01T00:00:00Z",
    "start_percentage": 1.0
  },
  "version": "2.0",
  "x-build": 123456789012345678901234567890,
  "x-floats": [
    1,
    1.0,
    1e3,
    1E-7,
    0.1000000000000000055511151231257827,
    -0.0,
    18446744073709551616
  ]
}
"#;
        let (_, new) = paused_by_rewrite("digits", body.as_bytes());
        let want = body
            .replace(
                "2030-01-01T00:00:00Z\",\n  \"expires",
                "2030-01-01T00:00:01Z\",\n  \"expires",
            )
            .replace("\"paused\": false", "\"paused\": true")
            // The one respelling: an exponent's letter and sign (the same
            // number, every digit kept; serde_json writes what it scanned).
            .replace("1e3", "1e+3")
            .replace("1E-7", "1e-7");
        assert_ne!(want, body, "the test edits two values");
        assert_eq!(String::from_utf8(new).expect("utf-8"), want);
    }

    #[test]
    fn names_outside_the_directory_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("rootfs-2.0.img.zst").is_ok());
    }
}
