//! Payload streaming with resume through a partial file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek as _, Write};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

use ureq::http::Response;
use ureq::{Body, BodyReader};

use crate::flush::{BackgroundSync, Push};

use super::body::{judge_resume, read_retrying, End, ResumeAnswer, Resuming};
use super::location::{parse_location, redact, Loc};
use super::retry::Attempts;
use super::{
    announced_length, content_length, retry_after, FetchError, Reply, StallGuard, Transport,
};

/// A sync of the partial file is asked for each time it grew by this much,
/// so that a power cut loses little of a download; the syncs run in the
/// background ([`crate::flush`]): the install waits for the disk only once
/// the payload is complete.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;

/// Where a payload download starts.
#[derive(Clone, Copy, Debug)]
pub enum Resume<'a> {
    /// From byte 0, keeping nothing.
    None,
    /// Through this partial file: its bytes are replayed, the rest is
    /// fetched with `Range` and appended to it.
    Partial(&'a Path),
    /// The caller holds the bytes before this offset (a segmented
    /// payload's frames whose segments the slot already holds): only the
    /// rest is fetched, with `Range`. A server that ignores the range
    /// sends the whole payload, whose first bytes are then dropped; one that
    /// answers with other bytes restarts the download from 0
    /// ([`PayloadReader::resumed_from`] tells).
    From(u64),
}

/// A payload of exactly the declared size, as a reader.
///
/// Errors inside `read()` are `io::Error`s wrapping a [`FetchError`]
/// (`io::Error::other`); get it back with [`FetchError::from_io`]. The reader
/// never returns more than `size` bytes in total, and it checks for one more
/// byte (without returning it) as soon as `size` bytes have arrived, so a
/// source that is too long fails on the read that completes the payload.
pub struct PayloadReader {
    location: String,
    size: u64,
    delivered: u64,
    resumed_from: u64,
    from_network: u64,
    restart_reason: Option<String>,
    src: Src,
}

enum Src {
    /// A local file, with its identity when opened ([`file_identity`]);
    /// `ends_with_payload` unless it is a block device, whose length is its
    /// capacity: a byte past the payload in a file or a pipe is too long.
    Local {
        file: File,
        identity: String,
        ends_with_payload: bool,
    },
    Http(Box<HttpSrc>),
}

struct HttpSrc {
    /// Bytes of the partial file still to hand out before the network.
    replay: Option<File>,
    replay_left: u64,
    partial: Option<Partial>,
    /// The rest from the network: paced, resumed after transient
    /// failures, ended where a download window closes. `None` only when
    /// the partial file already held every byte.
    net: Option<Resuming>,
    /// Location as shown in errors, when there is no `net`.
    shown: String,
    /// The validator of the object the bytes come from (the one a resume
    /// sends as `If-Range`), when the server named it.
    validator: Option<String>,
}

struct Partial {
    path: PathBuf,
    file: File,
    syncs: BackgroundSync,
}

impl Partial {
    fn io_err(&self, what: &str, e: io::Error) -> FetchError {
        FetchError::Io {
            location: self.path.display().to_string(),
            detail: format!("{what}: {e}"),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.file
            .write_all(bytes)
            .map_err(|e| self.io_err("appending to partial download", e))?;
        self.syncs.wrote(bytes.len() as u64);
        Ok(())
    }

    /// Every byte appended is on disk (the background syncs done, then one
    /// more).
    fn sync(&mut self) -> Result<(), FetchError> {
        self.syncs
            .stop()
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.io_err("syncing partial download", e))
    }

    fn truncate(&mut self) -> Result<(), FetchError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.io_err("truncating partial download", e))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // An interrupted download keeps what it has: best effort, as there is
        // nobody left to tell.
        let _ = self.file.sync_data();
    }
}

impl PayloadReader {
    /// Bytes that came over the wire in this run (not replayed from the
    /// partial file), including a surplus byte that proved a source too long.
    pub fn bytes_from_network(&self) -> u64 {
        self.from_network + self.net().map_or(0, Resuming::skipped)
    }

    /// Resumes (`Range`) the server answered with the whole payload
    /// (`200`, the same object): the download went on from it, the bytes
    /// before the range fetched again. A warning for the operator (the
    /// server or a proxy ignores `Range`), not a failure.
    pub fn ranges_ignored(&self) -> u64 {
        self.net().map_or(0, Resuming::ranges_ignored)
    }

    /// The validator (strong ETag, else Last-Modified) of the object the
    /// payload's bytes come from, as a resume sends it in `If-Range`: a
    /// frame fetched once more asks with it ([`Transport::open_range`]).
    /// For a local file, its identity when opened ([`file_identity`]);
    /// `None` when the server named none.
    pub fn validator(&self) -> Option<&str> {
        match &self.src {
            Src::Http(h) => h.validator.as_deref(),
            Src::Local { identity, .. } => Some(identity),
        }
    }

    /// Closes the payload's connection, for a caller that reads no more of
    /// it: a writer that stopped early then asks for a frame once more
    /// (`install::FrameAgain`) on a connection of its own, which a server
    /// that allows one connection per client would otherwise refuse while
    /// this one stays open. The counters stay.
    fn close_connection(&mut self) {
        if let Src::Http(h) = &mut self.src {
            if let Some(net) = h.net.as_mut() {
                net.close();
            }
        }
    }

    /// This reader for one writer: the connection is closed when the writer
    /// drops it (`close_connection`), and the reader is still here for its
    /// counters.
    pub fn closing_on_drop(&mut self) -> ClosingOnDrop<'_> {
        ClosingOnDrop(self)
    }

    fn net(&self) -> Option<&Resuming> {
        match &self.src {
            Src::Http(h) => h.net.as_ref(),
            Src::Local { .. } => None,
        }
    }

    /// Where this download started: bytes replayed from the partial file,
    /// or the offset asked for with [`Resume::From`] (0 when not resuming,
    /// or when the download had to restart).
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Why a resume was abandoned and the download restarted from 0, if it was
    /// (also printed to stderr when it happens).
    pub fn restart_reason(&self) -> Option<&str> {
        self.restart_reason.as_deref()
    }

    /// The declared size.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn too_short(&self) -> FetchError {
        FetchError::TooShort {
            location: self.shown().to_string(),
            got: self.delivered,
            expected: self.size,
            announced: false,
        }
    }

    fn too_long(&self) -> FetchError {
        FetchError::TooLong {
            location: self.shown().to_string(),
            limit: self.size,
            announced: None,
        }
    }

    fn shown(&self) -> &str {
        match &self.src {
            Src::Http(h) => h.net.as_ref().map_or(&h.shown, |n| &n.shown),
            Src::Local { .. } => &self.location,
        }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        if buf.is_empty() || self.delivered >= self.size {
            return Ok(0);
        }
        let want = usize::try_from(self.size - self.delivered)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..want];
        let n = match &mut self.src {
            Src::Local {
                file,
                ends_with_payload,
                ..
            } => {
                let n = read_retrying(file, buf).map_err(|e| FetchError::Io {
                    location: self.location.clone(),
                    detail: e.to_string(),
                })?;
                if n == 0 {
                    return Err(self.too_short());
                }
                self.delivered += n as u64;
                if self.delivered == self.size && *ends_with_payload {
                    let mut one = [0u8; 1];
                    if matches!(read_retrying(file, &mut one), Ok(1)) {
                        return Err(self.too_long());
                    }
                }
                n
            }
            Src::Http(_) => self.read_http(buf)?,
        };
        Ok(n)
    }

    // Long on purpose: the replay of a resumed download, the network read and
    // the bound on what the manifest declared are one read; each byte passes
    // every fence in this order.
    fn read_http(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let Src::Http(h) = &mut self.src else {
            return Ok(0);
        };
        if h.replay_left > 0 {
            let take = usize::try_from(h.replay_left)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match h.replay.as_mut() {
                Some(f) => read_retrying(f, &mut buf[..take]).map_err(|e| FetchError::Io {
                    location: partial_name(&h.partial),
                    detail: format!("reading partial download: {e}"),
                })?,
                None => 0,
            };
            if n == 0 {
                return Err(FetchError::Io {
                    location: partial_name(&h.partial),
                    detail: "partial download shrank while being replayed".into(),
                });
            }
            h.replay_left -= n as u64;
            if h.replay_left == 0 {
                h.replay = None;
            }
            self.delivered += n as u64;
            return Ok(n);
        }

        let Some(net) = h.net.as_mut() else {
            // Only when the partial held everything: nothing to fetch.
            return Ok(0);
        };
        let n = match net.read_bytes(buf) {
            Err(e @ FetchError::Changed { .. }) => {
                // Its bytes are of an object no longer served: no later
                // run may resume from them (the error says so).
                if let Some(p) = h.partial.as_mut() {
                    p.truncate()?;
                    keep_validator(&p.path, None);
                }
                return Err(e);
            }
            r => r?,
        };
        if n == 0 {
            return Err(self.too_short());
        }

        // On disk first, so the partial file never lacks a byte the caller
        // has seen; only bytes that follow the ones on disk are appended.
        if let Some(p) = h.partial.as_mut() {
            p.append(&buf[..n])?;
        }
        self.delivered += n as u64;
        self.from_network += n as u64;
        if self.delivered == self.size {
            if let Some(p) = h.partial.as_mut() {
                p.sync()?;
            }
            // One byte more proves the source too long. An error or EOF here
            // is fine: we have every declared byte and read no further.
            if h.net.as_mut().is_some_and(Resuming::has_surplus) {
                self.from_network += 1;
                return Err(self.too_long());
            }
        }
        Ok(n)
    }
}

fn partial_name(p: &Option<Partial>) -> String {
    p.as_ref()
        .map(|p| p.path.display().to_string())
        .unwrap_or_default()
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf).map_err(FetchError::into_io)
    }
}

/// A [`PayloadReader`] lent to a writer, which closes its connection once
/// dropped ([`PayloadReader::closing_on_drop`]).
pub struct ClosingOnDrop<'r>(&'r mut PayloadReader);

impl Read for ClosingOnDrop<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Drop for ClosingOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_connection();
    }
}

impl std::fmt::Debug for PayloadReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadReader")
            .field("location", &self.location)
            .field("size", &self.size)
            .field("delivered", &self.delivered)
            .field("resumed_from", &self.resumed_from)
            .field("from_network", &self.from_network)
            .finish()
    }
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
/// A `Content-Range`: the first and last byte, and the total when given.
pub(crate) type ContentRange = (u64, u64, Option<u64>);

/// A `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) value as
/// (first, last, total), or what is wrong with it, the value quoted.
pub(crate) fn parse_content_range(v: &str) -> Result<ContentRange, String> {
    let shape = || format!("{v:?} is not \"bytes FIRST-LAST/TOTAL\"");
    let rest = v
        .trim()
        .strip_prefix("bytes")
        .ok_or_else(shape)?
        .trim_start();
    let (range, total) = rest.split_once('/').ok_or_else(shape)?;
    let (start, end) = range.trim().split_once('-').ok_or_else(shape)?;
    let start: u64 = start.trim().parse().map_err(|_| shape())?;
    let end: u64 = end.trim().parse().map_err(|_| shape())?;
    if end < start {
        return Err(format!(
            "{v:?} ends at byte {end}, before it starts at {start}"
        ));
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().map_err(|_| shape())?;
            if end >= t {
                return Err(format!("{v:?} ends at byte {end}, past the {t}-byte total"));
            }
            Some(t)
        }
    };
    Ok((start, end, total))
}

/// The `Content-Range` of `resp`: `None` when it has none, `Some(Err(why))`
/// when it has one that cannot be used.
pub(super) fn content_range(resp: &Response<Body>) -> Option<Result<ContentRange, String>> {
    let value = resp.headers().get("content-range")?;
    Some(match value.to_str() {
        Ok(v) => parse_content_range(v),
        Err(_) => Err("a value that is not visible ASCII".to_string()),
    })
}

/// Refuse, on the headers alone, a response that announces a payload of
/// another size than declared: a body starting at `offset` must end at
/// exactly `size`.
pub(super) fn check_lengths(
    resp: &Response<Body>,
    shown: &str,
    offset: u64,
    size: u64,
    range: Option<(u64, u64, Option<u64>)>,
) -> Result<(), FetchError> {
    let verdict = |end: u64| -> Result<(), FetchError> {
        if end > size {
            Err(FetchError::TooLong {
                location: shown.to_string(),
                limit: size,
                announced: Some(end),
            })
        } else if end < size {
            Err(FetchError::TooShort {
                location: shown.to_string(),
                got: end,
                expected: size,
                announced: true,
            })
        } else {
            Ok(())
        }
    };
    if let Some((_, end, total)) = range {
        if let Some(total) = total {
            verdict(total)?;
        }
        verdict(end + 1)?;
    }
    if let Some(len) = content_length(resp) {
        verdict(offset.saturating_add(len))?;
    }
    Ok(())
}

pub(super) fn body_reader(
    transport: &Transport,
    resp: Response<Body>,
    remaining: u64,
    shown: &str,
) -> StallGuard<BodyReader<'static>> {
    let chunked = resp.headers().get_all("transfer-encoding").iter().any(|v| {
        v.as_bytes()
            .to_ascii_lowercase()
            .windows(7)
            .any(|w| w == b"chunked")
    });
    let sized = announced_length(&resp).is_some();
    // ureq's own limit as a second fence: one byte past what we may accept.
    let reader = resp
        .into_body()
        .into_with_config()
        .limit(remaining.saturating_add(1))
        .reader();
    let mut guard = StallGuard::new(reader, transport.read_timeout, shown);
    guard.chunked = chunked;
    guard.sized = sized;
    guard
}

/// The validator an `If-Range` names the object by: its ETag when strong
/// (a weak one, `W/"…"`, may not be used in `If-Range`), else its
/// `Last-Modified` date; `None` when the answer has neither, or only a
/// value that could not be sent back as a header (not visible ASCII, over
/// 256 bytes).
pub(crate) fn validator_of(etag: Option<&str>, last_modified: Option<&str>) -> Option<String> {
    let usable = |v: &str| {
        let v = v.trim();
        (!v.is_empty() && v.len() <= 256 && v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .then(|| v.to_string())
    };
    let strong = etag.filter(|e| !e.trim_start().starts_with("W/"));
    strong
        .and_then(usable)
        .or_else(|| last_modified.and_then(usable))
}

/// [`validator_of`] the headers of `resp`.
pub(super) fn response_validator(resp: &Response<Body>) -> Option<String> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    validator_of(header("etag"), header("last-modified"))
}

/// Where the validator of the object a partial download was taken from is
/// kept: next to it, `<sha256>.validator` for `<sha256>.part`.
pub fn validator_file(partial: &Path) -> PathBuf {
    partial.with_extension("validator")
}

/// The validator kept for `partial`, if any: read without following a
/// symlink, only from a regular file, at most 256 bytes; anything else is
/// no validator (the resume then asks without `If-Range`, and the caller's
/// hash check is what catches a changed object).
fn read_validator(partial: &Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(validator_file(partial))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    (&mut file).take(257).read_to_string(&mut text).ok()?;
    validator_of(Some(&text), None)
}

/// Keep `validator` as that of the object `partial` is now taken from
/// (`None`: remove the old one). Written before the partial's first byte,
/// never through a symlink; a failure only costs the next resume its
/// `If-Range` (the hash check still holds).
fn keep_validator(partial: &Path, validator: Option<&str>) {
    let path = validator_file(partial);
    let _ = std::fs::remove_file(&path);
    if let Some(v) = validator {
        let written = crate::files::create_replacing(&path)
            .and_then(|mut f| f.write_all(v.as_bytes()).and_then(|()| f.sync_all()));
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Open (creating it) the partial download at `path` for replay and
/// appending: never through a symlink (`O_NOFOLLOW`), without blocking on
/// a FIFO, and only as a regular file of one name, so payload bytes land
/// in no other file. Anything else found there (a symlink, a FIFO, a
/// device node, an empty directory, a file with another name too: found
/// from outside, a hard link to the booted slot's image was truncated and
/// written) is not a download of ours: its name is removed (never the
/// bytes behind it) and the download starts over, said through `note`;
/// what cannot be removed (a directory with files in it) is an error.
fn open_partial(path: &Path, note: &mut impl FnMut(String)) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let ours = |m: &std::fs::Metadata| m.is_file() && m.nlink() == 1;
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(path)
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !ours(&meta) {
            match meta.is_dir() {
                true => std::fs::remove_dir(path),
                false => std::fs::remove_file(path),
            }
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("not a regular file of its own, and not removed: {e}"),
                )
            })?;
            note(format!(
                "{}: not a regular file of its own; removed, starting the download over",
                path.display()
            ));
        }
    }
    // Between the look and the open another entry may have appeared: the
    // open itself refuses a symlink, and the opened file is checked.
    let file = open()?;
    if !ours(&file.metadata()?) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file of its own",
        ));
    }
    Ok(file)
}

// Long on purpose: opening a payload is one sequence (a local file, or
// the resume of a partial download, the request, then every check of the
// answer before its first body byte), and each step may restart it.
pub(super) fn open(
    transport: &Transport,
    location: &str,
    size: u64,
    resume: Resume,
) -> Result<PayloadReader, FetchError> {
    let (partial, start) = match resume {
        Resume::None => (None, 0),
        Resume::Partial(path) => (Some(path), 0),
        Resume::From(start) => (None, start.min(size)),
    };
    let url = match parse_location(location)? {
        Loc::File(path) => return open_local(location, &path, size, start),
        Loc::Http(url) => url,
    };
    let mut restart_reason: Option<String> = None;
    let mut note = |why: String| {
        crate::say!("abupdate: {}: {why}", redact(location));
        restart_reason = Some(why);
    };

    let mut part = match partial {
        None => None,
        Some(path) => {
            let io_err = |e: io::Error| FetchError::Io {
                location: path.display().to_string(),
                detail: format!("opening partial download: {e}"),
            };
            let file = open_partial(path, &mut note).map_err(io_err)?;
            let syncs = BackgroundSync::start(&file, "partial-sync", SYNC_EVERY, Push::Durable)
                .map_err(io_err)?;
            Some(Partial {
                path: path.to_path_buf(),
                file,
                syncs,
            })
        }
    };
    let mut have = match &part {
        Some(p) => p
            .file
            .metadata()
            .map_err(|e| p.io_err("reading partial download", e))?
            .len(),
        None => start,
    };
    if have > size {
        note(format!(
            "partial download has {have} bytes, more than the {size} declared; restarting from 0"
        ));
        if let Some(p) = part.as_mut() {
            p.truncate()?;
        }
        have = 0;
    }

    // The answer is checked before a single byte is handed out, so a restart
    // never has to take back bytes the caller already consumed. The partial
    // file is only truncated once a full (from 0) answer has been accepted:
    // a failed attempt leaves it for the next run.
    let on_disk = have;
    let mut response = None;
    let mut shown = redact(&url).into_owned();
    let mut attempts = Attempts::default();
    // The object the partial's bytes came from, as its first answer named
    // it: the resume asks `If-Range` with it, so a server whose object
    // changed since (same URL, same length, other bytes) answers with the
    // whole new object instead of splicing its tail onto the old head.
    let kept_validator = partial.filter(|_| have > 0).and_then(read_validator);
    // The validator of the object the bytes handed out come from.
    let mut validator = None;
    // The answer is the whole payload although bytes are held: its head
    // is dropped.
    let mut whole = false;
    // A zero-size payload is still requested: its existence is checked.
    if have < size || size == 0 {
        // At most two rounds: a restart drops `have` to 0, which cannot
        // restart again.
        loop {
            let mut headers: Vec<(&str, String)> = Vec::new();
            if have > 0 {
                headers.push(("Range", format!("bytes={have}-")));
                if let Some(v) = &kept_validator {
                    headers.push(("If-Range", v.clone()));
                }
            }
            // Not a byte outside the download windows (timer runs): the
            // run ends, a partial download kept.
            transport.inside_window(&shown, have)?;
            let Reply { shown: s, resp, .. } = transport.get_with(&url, &headers, &mut attempts)?;
            shown = s;
            let status = resp.status().as_u16();
            let restart = match status {
                206 if have > 0 => match content_range(&resp) {
                    Some(Ok(r))
                        if judge_resume(
                            206,
                            Some(r),
                            have,
                            End::OpenEnded { size },
                            kept_validator.as_deref(),
                            response_validator(&resp).as_deref(),
                        ) == ResumeAnswer::Changed =>
                    {
                        format!(
                            "the object changed since the partial download (If-Range {} answered by a range under {}); restarting from 0 instead of {have}",
                            kept_validator.as_deref().unwrap_or_default(),
                            response_validator(&resp).unwrap_or_default()
                        )
                    }
                    Some(Ok(r)) if r.0 == have => {
                        check_lengths(&resp, &shown, have, size, Some(r))?;
                        // Within this run a resume names this object.
                        validator = kept_validator.clone().or_else(|| response_validator(&resp));
                        response = Some(resp);
                        break;
                    }
                    Some(Ok(r)) => format!(
                        "asked for bytes from {have}, server sent a range from {}; restarting from 0",
                        r.0
                    ),
                    Some(Err(why)) => format!(
                        "range answer with an unusable Content-Range: {why}; restarting from 0"
                    ),
                    None => "range answer without a Content-Range; restarting from 0".to_string(),
                },
                200 => {
                    check_lengths(&resp, &shown, 0, size, None)?;
                    let answered = response_validator(&resp);
                    let judged = judge_resume(
                        200,
                        None,
                        have,
                        End::OpenEnded { size },
                        kept_validator.as_deref(),
                        answered.as_deref(),
                    );
                    match (judged, &kept_validator) {
                        (ResumeAnswer::Changed, Some(v)) => {
                            note(format!(
                                "the object changed since byte 0 of the partial download (or the server ignores If-Range {v}): HTTP 200; restarting from 0 instead of {have}"
                            ));
                            have = 0;
                        }
                        // The same object whole (the server ignores
                        // `Range`): the bytes held stay, the answer's
                        // first `have` are dropped (`body.rs`).
                        _ => whole = have > 0,
                    }
                    // Within this run a resume names this object.
                    validator = answered;
                    response = Some(resp);
                    break;
                }
                416 if have > 0 => format!(
                    "server cannot serve bytes from {have} (HTTP 416); restarting from 0"
                ),
                404 | 410 => {
                    return Err(FetchError::NotFound {
                        location: shown,
                        status: Some(status),
                    })
                }
                status => {
                    return Err(FetchError::HttpStatus {
                        location: shown,
                        status,
                        retry_after: retry_after(&resp),
                    })
                }
            };
            drop(resp);
            note(restart);
            have = 0;
        }
    }
    if have == 0 && on_disk > 0 {
        if let Some(p) = part.as_mut() {
            p.truncate()?;
        }
    }
    // From byte 0 the partial is taken from the object just answered:
    // its validator is kept before the partial's first byte.
    if have == 0 && response.is_some() {
        if let Some(p) = &part {
            keep_validator(&p.path, validator.as_deref());
        }
    }

    // The replay reads the very file appended to (not the path again, which
    // may name another file by now), from its first byte; every append
    // comes after the replay ends.
    let replay = match (&part, have) {
        (Some(p), n) if n > 0 => Some(
            p.file
                .try_clone()
                .and_then(|mut f| f.seek(io::SeekFrom::Start(0)).map(|_| f))
                .map_err(|e| p.io_err("reopening partial download", e))?,
        ),
        _ => None,
    };
    // The partial holds every byte: its object is the one kept.
    let object = match &response {
        Some(_) => validator.clone(),
        None => kept_validator,
    };
    let net = response.map(|resp| {
        let from = if whole { 0 } else { have };
        let body = body_reader(transport, resp, size - from, &shown);
        let mut net = Resuming::new(
            transport,
            &url,
            &shown,
            have,
            End::OpenEnded { size },
            Some(body),
            attempts,
        );
        if have > 0 {
            net.grant_idle_grace();
        }
        if whole {
            net.drop_head();
        }
        // A resume within this run names the same object.
        net.if_range(validator);
        net
    });
    // Bytes before `have` come from the partial file (replayed), or the
    // caller has them already (`Resume::From`).
    let replay_left = if replay.is_some() { have } else { 0 };
    Ok(PayloadReader {
        location: location.to_string(),
        size,
        delivered: have - replay_left,
        resumed_from: have,
        from_network: 0,
        restart_reason,
        src: Src::Http(Box::new(HttpSrc {
            replay,
            replay_left,
            partial: part,
            net,
            shown,
            validator: object,
        })),
    })
}

fn open_local(
    location: &str,
    path: &Path,
    size: u64,
    start: u64,
) -> Result<PayloadReader, FetchError> {
    let io_err = |e: io::Error| FetchError::Io {
        location: location.to_string(),
        detail: e.to_string(),
    };
    // No such file is "not published there", as a 404 is (`not_found`,
    // which the fleet controller does not count against the release).
    // A payload may be streamed through a pipe or read off a device; its
    // open does not wait for a FIFO's writer (`files::open_stream`).
    let (file, meta) = crate::files::open_stream(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FetchError::NotFound {
            location: location.to_string(),
            status: None,
        },
        _ => io_err(e),
    })?;
    // For a regular file its length is the announcement; pipes and devices
    // are checked while reading.
    if meta.is_file() && meta.len() != size {
        return Err(if meta.len() > size {
            FetchError::TooLong {
                location: location.to_string(),
                limit: size,
                announced: Some(meta.len()),
            }
        } else {
            FetchError::TooShort {
                location: location.to_string(),
                got: meta.len(),
                expected: size,
                announced: true,
            }
        });
    }
    let mut file = file;
    if start > 0 && meta.file_type().is_fifo() {
        // A pipe cannot seek: the bytes before `start` (what the slot
        // already holds) are read and dropped, as a server's whole answer
        // to a Range is.
        let dropped = io::copy(&mut (&mut file).take(start), &mut io::sink()).map_err(io_err)?;
        if dropped < start {
            return Err(FetchError::TooShort {
                location: location.to_string(),
                got: dropped,
                expected: size,
                announced: false,
            });
        }
    } else if start > 0 {
        io::Seek::seek(&mut file, io::SeekFrom::Start(start)).map_err(io_err)?;
    }
    Ok(PayloadReader {
        location: location.to_string(),
        size,
        delivered: start,
        resumed_from: start,
        from_network: 0,
        restart_reason: None,
        src: Src::Local {
            file,
            identity: file_identity(&meta),
            ends_with_payload: !meta.file_type().is_block_device(),
        },
    })
}

/// What names a local file's content without reading it: device, inode,
/// the device it is (a block device's node), length, and the times of its
/// last write and last change. A frame read once more from the file
/// (`Transport::open_range`) is taken only while it is the same, as an
/// HTTP range is only with the same validator: a payload replaced or
/// rewritten since its bytes were read is another object. The change time
/// is the kernel's own: setting the modification time back after a
/// rewrite (`touch -r`, `cp -p`, `rsync -t --inplace`) moves it again.
pub(crate) fn file_identity(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "file {}:{} (device {}) {} bytes, modified {}.{:09}, changed {}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.rdev(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<PayloadReader>();
    is_send::<ClosingOnDrop<'static>>();
}
