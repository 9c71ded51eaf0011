//! A response body that goes on over as many responses as it takes: bytes
//! `[offset, end)` of one resource, paced (rate) and resumed with `Range`
//! after a transient failure; it ends ([`FetchError::OutsideWindow`]) where
//! a download window closes.
//!
//! Invariant: the bytes handed out are exactly the resource's bytes from
//! the first offset on, in order, none twice: a new response is accepted
//! only when it is a `206` whose `Content-Range` starts at the next byte
//! wanted (and, for a bounded range, ends where asked; for an open-ended
//! one, at the declared size). Anything else ends the body with an error;
//! nothing is ever taken back from the caller.

use std::io::{self, Read};

use ureq::BodyReader;

use super::pace::Bucket;
use super::payload::{check_lengths, content_range, response_validator};
use super::retry::{Attempts, Next};
use super::{Allowance, FetchError, Reply, StallGuard, Transport};

/// Where the body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// `Range: bytes=N-`: the resource ends at this size (a payload).
    OpenEnded { size: u64 },
    /// `Range: bytes=N-M`: exactly up to this byte, exclusive (a segment).
    Bounded { end: u64 },
}

impl End {
    fn end(self) -> u64 {
        match self {
            End::OpenEnded { size } => size,
            End::Bounded { end } => end,
        }
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
        }
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

    /// Ask for the rest from `offset`, once; the answer must continue the
    /// bytes exactly. A failed request is returned for the retry logic; an
    /// answer that does not continue the body is final (`Err(Ok(e))`).
    fn reopen(&mut self) -> Result<(), Result<FetchError, FetchError>> {
        let offset = self.offset;
        let range = match self.end {
            End::OpenEnded { .. } => format!("bytes={offset}-"),
            End::Bounded { end } => format!("bytes={offset}-{}", end - 1),
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
        // The whole object under another validator than the one sent: it
        // was replaced since the download began. Said as such (not as a
        // missing Content-Range), so that the caller starts over from 0.
        if let Some(sent) = self
            .validator
            .as_ref()
            .filter(|_| status == 200 && offset > 0)
        {
            if response_validator(&resp).as_ref() != Some(sent) {
                return Err(Ok(FetchError::Changed {
                    location: shown,
                    at: offset,
                    validator: sent.clone(),
                }));
            }
        }
        let got = content_range(&resp);
        let range = got.as_ref().and_then(|r| r.as_ref().ok()).copied();
        let continues = status == 206
            && match (self.end, range) {
                (End::OpenEnded { .. }, Some((start, _, _))) => start == offset,
                (End::Bounded { end }, Some((start, last, _))) => {
                    start == offset && last + 1 == end
                }
                (_, None) => false,
            };
        // Nothing handed out yet: the whole resource is exactly the bytes
        // still wanted, from a server that ignores `Range` (busybox httpd,
        // `python -m http.server`) as from one that honours it.
        let whole = status == 200 && offset == 0 && matches!(self.end, End::OpenEnded { .. });
        if !continues && !whole {
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
        if let End::OpenEnded { size } = self.end {
            check_lengths(&resp, &shown, offset, size, range).map_err(Ok)?;
        }
        let remaining = self.end.end() - offset;
        self.body = Some(super::payload::body_reader(
            &self.transport,
            resp,
            remaining,
            &shown,
        ));
        self.shown = shown;
        self.from_body = 0;
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

    fn too_short(&self) -> FetchError {
        FetchError::TooShort {
            location: self.shown.clone(),
            got: self.offset,
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
                            // What happens next is the news, not the cut.
                            Some(first) if matches!(fatal, FetchError::Changed { .. }) => {
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
            let want = usize::try_from(end - self.offset)
                .unwrap_or(usize::MAX)
                .min(buf.len())
                .min(Bucket::chunk(rate));
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let err = match read_retrying(body, &mut buf[..want]) {
                Ok(0) => self.too_short(),
                Ok(n) => {
                    self.offset += n as u64;
                    self.from_body += n as u64;
                    self.idle_grace = false;
                    self.last_failure = None;
                    self.attempts.progress(n as u64);
                    self.transport.throttle(rate, n);
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
