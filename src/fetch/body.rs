//! A response body that goes on over as many responses as it takes: bytes
//! `[offset, end)` of one resource, paced (rate) and resumed with `Range`
//! after a transient failure; it ends ([`FetchError::OutsideWindow`]) where
//! a download window closes.
//!
//! Invariant: the bytes handed out are exactly the resource's bytes from
//! the first offset on, in order, none twice: a new response is accepted
//! only when it is a `206` whose `Content-Range` starts at the next byte
//! wanted (and, for a bounded range, ends where asked; for an open-ended
//! one, at the declared size), or, for an open-ended body (a payload) and
//! a bounded range that takes it ([`WholeAnswer::HeadDropped`]: a frame
//! fetched once more), the whole resource (`200`: the server or a proxy
//! ignores `Range`) of the object the body began with, whose bytes before
//! the next one wanted are read and dropped, never handed out, and whose
//! bytes past a bounded range are never read ([`judge_resume`]). Anything else
//! ends the body with an error; nothing is ever taken back from the
//! caller, who checks every byte handed out against the signed digest.
//!
//! Bounded: a whole answer is at most the declared size (announced and
//! read), and once one came, progress no longer forgives a failure (each
//! further try may cost the whole size again): a body takes at most
//! `retries` more tries after it, so at most `retries + 1` times the size
//! crosses the link for it.

use std::io::{self, Read};

use ureq::BodyReader;

use super::pace::Bucket;
use super::payload::{check_lengths, content_range, response_validator, ContentRange};
use super::retry::{Attempts, Next};
use super::{Allowance, FetchError, Reply, StallGuard, Transport, WholeAnswer};

/// Where the body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// `Range: bytes=N-`: the resource ends at this size (a payload).
    OpenEnded { size: u64 },
    /// `Range: bytes=N-M`: exactly up to this byte, exclusive (a delta's
    /// segment, a frame fetched once more); `whole` says whether an answer
    /// with the whole resource serves it.
    Bounded { end: u64, whole: WholeAnswer },
}

impl End {
    fn end(self) -> u64 {
        match self {
            End::OpenEnded { size } => size,
            End::Bounded { end, .. } => end,
        }
    }
}

/// What an answer to a resume at byte `offset` means for the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ResumeAnswer {
    /// A `206` for exactly the bytes wanted: read on.
    Continues,
    /// The whole resource (`200`) to an open-ended resume, or to a bounded
    /// range that takes it, of the object the body began with (its
    /// validator, or none to tell): the server ignores `Range`. Its first
    /// `offset` bytes are read and dropped (the caller has them, or does
    /// not want them), the rest handed out up to the end.
    Whole,
    /// The resource, whole or a range, under another validator than the
    /// one sent as `If-Range`: the object was replaced since the body
    /// began.
    Changed,
    /// Anything else (a `206` for other bytes, or without a usable
    /// `Content-Range`; a `200` to a bounded range that refuses it): the
    /// body cannot go on.
    Refused,
}

/// Judge the answer (`status`, its `Content-Range` when usable, its
/// validator `answered`) to a resume at `offset` of a body ending at `end`
/// that sent `sent` as `If-Range`.
pub(crate) fn judge_resume(
    status: u16,
    range: Option<ContentRange>,
    offset: u64,
    end: End,
    sent: Option<&str>,
    answered: Option<&str>,
) -> ResumeAnswer {
    match (status, end, range) {
        // A bounded range (a frame fetched once more) is another part of
        // the object the caller holds bytes of, even from byte 0.
        (200, _, _)
            if (offset > 0 || matches!(end, End::Bounded { .. }))
                && sent.is_some_and(|s| answered != Some(s)) =>
        {
            ResumeAnswer::Changed
        }
        // A range under another validator than the `If-Range` sent: a
        // server (or a cache) that ignores `If-Range` hands out bytes of
        // another object; they would be spliced onto the ones held.
        (206, _, Some(_)) if sent.is_some() && answered.is_some() && answered != sent => {
            ResumeAnswer::Changed
        }
        (206, End::OpenEnded { .. }, Some((start, _, _))) if start == offset => {
            ResumeAnswer::Continues
        }
        (206, End::Bounded { end, .. }, Some((start, last, _)))
            if start == offset && last.checked_add(1) == Some(end) =>
        {
            ResumeAnswer::Continues
        }
        // A delta's segment is never taken from a whole answer: every
        // segment would cost the whole file; its caller falls back to the
        // full payload. A frame fetched once more is: it costs the file up
        // to the frame, once.
        (200, End::OpenEnded { .. }, _)
        | (
            200,
            End::Bounded {
                whole: WholeAnswer::HeadDropped,
                ..
            },
            _,
        ) => ResumeAnswer::Whole,
        _ => ResumeAnswer::Refused,
    }
}

pub(crate) struct Resuming {
    transport: Transport,
    url: String,
    /// The request as errors name it (redirects included, no user info).
    pub(crate) shown: String,
    /// The next byte of the resource to hand out.
    offset: u64,
    end: End,
    body: Option<StallGuard<BodyReader<'static>>>,
    /// Bytes handed out from the current response.
    from_body: u64,
    attempts: Attempts,
    /// The current response was opened a while before its first read (a
    /// resumed download replays its partial file first): the server may
    /// have dropped it meanwhile, so its first failure is asked again
    /// without counting as one.
    idle_grace: bool,
    /// The failure being retried: the error to report when the retry
    /// cannot continue the body (it says what went wrong; the refused
    /// resume is logged).
    last_failure: Option<FetchError>,
    /// The object's validator (strong ETag or Last-Modified), sent as
    /// `If-Range` on every resume: an object replaced meanwhile answers
    /// with a `200`, which ends the body, rather than splicing its bytes.
    validator: Option<String>,
    /// Bytes of the current (whole) response still to read and drop
    /// before the next byte wanted: the caller has them already.
    skip: u64,
    /// Bytes read and dropped so far (they crossed the link all the same).
    skipped: u64,
    /// Resumes answered with the whole resource (the server ignores
    /// `Range`): from the first on, progress forgives no failure.
    ranges_ignored: u64,
}

impl Resuming {
    /// A body whose first response is `body` (already checked by the
    /// caller), starting at `offset`.
    pub(crate) fn new(
        transport: &Transport,
        url: &str,
        shown: &str,
        offset: u64,
        end: End,
        body: Option<StallGuard<BodyReader<'static>>>,
        attempts: Attempts,
    ) -> Resuming {
        Resuming {
            transport: transport.clone(),
            url: url.to_string(),
            shown: shown.to_string(),
            offset,
            end,
            body,
            from_body: 0,
            attempts,
            idle_grace: false,
            last_failure: None,
            validator: None,
            skip: 0,
            skipped: 0,
            ranges_ignored: 0,
        }
    }

    /// The current response is the whole resource, answered to a request
    /// from `offset` (the server ignores `Range`): its first `offset` bytes
    /// are read and dropped before the next is handed out (and, for a
    /// bounded range, none past its end is read). Said in one line,
    /// counted, and from now on progress forgives no failure (see the
    /// module's bound). A payload's answer from byte 0 is no resume: not
    /// said, not counted; a bounded range from byte 0 was asked with
    /// `Range` all the same.
    pub(crate) fn drop_head(&mut self) {
        let (offset, shown) = (self.offset, &self.shown);
        let said = match self.end {
            End::OpenEnded { .. } if offset == 0 => return,
            End::OpenEnded { .. } => format!(
                "HTTP 200 with the whole file to a resume at byte {offset}): its first {offset} bytes cross the link again and are dropped; the download goes on from byte {offset}"
            ),
            End::Bounded { end, .. } => format!(
                "HTTP 200 with the whole file to bytes={offset}-{last}): its first {offset} bytes cross the link and are dropped, bytes {offset}-{last} are taken from it and the rest is not read",
                last = end - 1
            ),
        };
        self.skip = offset;
        self.ranges_ignored += 1;
        crate::say!("abupdate: {shown}: the server ignores Range ({said}");
    }

    /// Drops the current response, and with it its connection (a body not
    /// read to its end is not kept for another request). The counters
    /// stay; a later read would ask again from the next byte.
    pub(crate) fn close(&mut self) {
        self.body = None;
    }

    /// Bytes read from the network and dropped, not handed out: the head
    /// of whole answers to resumes, which the caller had already.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Resumes the server answered with the whole resource.
    pub(crate) fn ranges_ignored(&self) -> u64 {
        self.ranges_ignored
    }

    /// Resume only while the object is still the one `validator` names.
    pub(crate) fn if_range(&mut self, validator: Option<String>) {
        self.validator = validator;
    }

    /// See the field: the first failure of the current response is free.
    pub(crate) fn grant_idle_grace(&mut self) {
        self.idle_grace = true;
    }

    /// Bytes after `end` remain in the current response: one more byte is
    /// read (never handed out) to tell. An error or the end say no.
    ///
    /// Not asked of a chunked body: past its last data chunk the HTTP
    /// library reads trailer lines inside one read, without bound (a server
    /// could send them for ever, unpaced); every declared byte is here and
    /// checked, and the connection is dropped instead.
    pub(crate) fn has_surplus(&mut self) -> bool {
        let mut one = [0u8; 1];
        match self.body.as_mut() {
            Some(b) if !b.chunked => matches!(read_retrying(b, &mut one), Ok(1)),
            _ => false,
        }
    }

    /// The range's last byte is here: the response goes. When its length
    /// was announced, its end is read first, which hands a keep-alive
    /// connection back to the HTTP library's pool for the next range (a
    /// delta asks one per segment: without it every range cost a
    /// connection, and over HTTPS a handshake). A whole answer's rest is
    /// not read: one byte tells it is there, and its connection is
    /// dropped. A body without a length (chunked, or up to the close) is
    /// dropped at once: its end could make the read wait on the link
    /// (review 14).
    pub(crate) fn end_of_range(&mut self) {
        if self.body.as_ref().is_some_and(|b| b.sized) {
            let _ = self.has_surplus();
        }
        self.close();
    }

    /// Ask for the rest from `offset`, once; the answer must continue the
    /// bytes exactly. A failed request is returned for the retry logic; an
    /// answer that does not continue the body is final (`Err(Ok(e))`).
    fn reopen(&mut self) -> Result<(), Result<FetchError, FetchError>> {
        let offset = self.offset;
        let range = match self.end {
            End::OpenEnded { .. } => format!("bytes={offset}-"),
            End::Bounded { end, .. } => format!("bytes={offset}-{}", end - 1),
        };
        let mut headers = vec![("Range", range)];
        if let Some(v) = &self.validator {
            headers.push(("If-Range", v.clone()));
        }
        let Reply { shown, resp, .. } =
            self.transport.get_once(&self.url, &headers).map_err(Err)?;
        if let Some(err) = super::transient_status_of(&shown, &resp) {
            return Err(Err(err));
        }
        let status = resp.status().as_u16();
        let got = content_range(&resp);
        let range = got.as_ref().and_then(|r| r.as_ref().ok()).copied();
        let answered = response_validator(&resp);
        self.skip = 0;
        // Where the answer's body starts in the resource.
        let from = match judge_resume(
            status,
            range,
            offset,
            self.end,
            self.validator.as_deref(),
            answered.as_deref(),
        ) {
            ResumeAnswer::Continues => offset,
            // Said as such (not as a missing Content-Range), so that the
            // caller starts over from 0.
            ResumeAnswer::Changed => {
                return Err(Ok(FetchError::Changed {
                    location: shown,
                    at: offset,
                    validator: self.validator.clone().unwrap_or_default(),
                    range_end: match self.end {
                        End::OpenEnded { .. } => None,
                        End::Bounded { end, .. } => Some(end),
                    },
                }))
            }
            // From byte 0: the bytes before `offset`, if any, are read
            // and dropped ([`Resuming::drop_head`], once its length is
            // checked below).
            ResumeAnswer::Whole => 0,
            ResumeAnswer::Refused => {
                let detail = format!(
                    "resuming at byte {offset} failed (HTTP {status}, {}); {}",
                    match &got {
                        Some(Ok((a, b, _))) => format!("bytes {a}-{b}"),
                        Some(Err(why)) => format!("an unusable Content-Range: {why}"),
                        None => "no Content-Range".into(),
                    },
                    match self.end {
                        End::OpenEnded { .. } => "a partial download is kept for the next run",
                        End::Bounded { .. } => "the range is not served",
                    }
                );
                return Err(Ok(match self.end {
                    End::Bounded { .. } => FetchError::RangeIgnored {
                        location: shown,
                        detail,
                    },
                    End::OpenEnded { .. } => FetchError::Network {
                        location: shown,
                        detail,
                    },
                }));
            }
        };
        if let End::OpenEnded { size } = self.end {
            let range = range.filter(|_| status == 206);
            check_lengths(&resp, &shown, from, size, range).map_err(Ok)?;
        }
        let remaining = self.end.end() - from;
        self.body = Some(super::payload::body_reader(
            &self.transport,
            resp,
            remaining,
            &shown,
        ));
        self.shown = shown;
        self.from_body = 0;
        if from < offset {
            self.drop_head();
        }
        Ok(())
    }

    /// A failure: retry (after the wait, with a new response next time) or
    /// give up with it.
    fn failed(&mut self, err: FetchError) -> Result<(), FetchError> {
        self.body = None;
        self.last_failure = Some(err.clone());
        if self.idle_grace && self.from_body == 0 {
            self.idle_grace = false;
            crate::say!(
                "abupdate: {}: connection lost after replaying {} bytes; asking again",
                self.shown,
                self.offset
            );
            return Ok(());
        }
        self.idle_grace = false;
        match self.attempts.after(&self.transport.retry, &err) {
            Next::Retry(wait) => {
                std::thread::sleep(wait);
                Ok(())
            }
            Next::GiveUp(_) => Err(err),
        }
    }

    /// The current answer ended (or was cut) early: after the bytes that
    /// arrived, which for a whole answer still inside its dropped head are
    /// fewer than `offset` (`skip` of them never came).
    fn too_short(&self) -> FetchError {
        FetchError::TooShort {
            location: self.shown.clone(),
            got: self.offset.saturating_sub(self.skip),
            expected: self.end.end(),
            announced: false,
        }
    }

    /// Up to `buf.len()` of the next bytes; `Ok(0)` only at the end.
    pub(crate) fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let end = self.end.end();
        if buf.is_empty() || self.offset >= end {
            return Ok(0);
        }
        loop {
            let rate = match self.transport.allowance() {
                Allowance::Go { rate } => rate,
                Allowance::Wait { until } => {
                    // Not a byte outside the window: the connection goes
                    // and the body ends at `offset`; the caller keeps what
                    // it has and the next run asks for the rest with
                    // Range (a wait here would hold the state lock).
                    self.body = None;
                    return Err(FetchError::OutsideWindow {
                        location: self.shown.clone(),
                        at: self.offset,
                        until,
                    });
                }
            };
            if self.body.is_none() {
                match self.reopen() {
                    Ok(()) => {}
                    Err(Ok(fatal)) => {
                        return Err(match self.last_failure.take() {
                            // What happens next is the news, not the cut:
                            // the caller starts over, or gives the range up.
                            Some(first)
                                if matches!(
                                    fatal,
                                    FetchError::Changed { .. } | FetchError::RangeIgnored { .. }
                                ) =>
                            {
                                crate::say!("abupdate: {first}");
                                fatal
                            }
                            Some(first) => {
                                crate::say!("abupdate: {fatal}");
                                first
                            }
                            None => fatal,
                        });
                    }
                    Err(Err(err)) => {
                        self.failed(err)?;
                        continue;
                    }
                }
            }
            // The head of a whole answer is read into `buf` and dropped
            // (paced like any byte: it crosses the link).
            let left = match self.skip {
                0 => end - self.offset,
                skip => skip,
            };
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(buf.len())
                .min(Bucket::chunk(rate));
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let err = match read_retrying(body, &mut buf[..want]) {
                Ok(0) => self.too_short(),
                Ok(n) if self.skip > 0 => {
                    self.skip -= n as u64;
                    self.skipped += n as u64;
                    self.transport.throttle(rate, n);
                    continue;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    self.from_body += n as u64;
                    self.idle_grace = false;
                    self.last_failure = None;
                    // Once a whole answer came, any try may cost the whole
                    // size again: progress no longer forgives a failure.
                    if self.ranges_ignored == 0 {
                        self.attempts.progress(n as u64);
                    }
                    self.transport.throttle(rate, n);
                    if self.offset == end && matches!(self.end, End::Bounded { .. }) {
                        self.end_of_range();
                    }
                    return Ok(n);
                }
                Err(e) => self
                    .transport
                    .body_error(e, &self.shown, &self.url)
                    .unwrap_or_else(|| self.too_short()),
            };
            self.failed(err)?;
        }
    }
}

impl Read for Resuming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_bytes(buf).map_err(FetchError::into_io)
    }
}

pub(crate) fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
