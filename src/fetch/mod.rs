//! Transport: manifests, signatures and payloads from a local path, a
//! `file://` URL, or `http(s)://`, over thin and hostile links.
//!
//! Invariants this module keeps:
//! - No byte count beyond what the caller declared (a document's `limit`, a
//!   payload's `size` from the signed manifest) is ever accepted from a
//!   source: a document is read to at most `limit + 1` bytes, a payload to at
//!   most `size + 1` (the extra byte only proves the source is too long and is
//!   never handed out). Memory stays bounded: payloads are streamed.
//! - A resumed download only ever appends bytes that follow the ones on disk:
//!   the partial file grows by exactly the bytes of a `206` whose
//!   `Content-Range` starts at its current length, or by the bytes after
//!   its length of a whole answer (`200` of the same object: the server or
//!   a proxy ignores `Range`; the head is read and dropped, `body.rs`).
//!   Any other answer either restarts from 0 (partial truncated first,
//!   before any byte is handed out) or is an error. Whether the bytes on disk are the *right* bytes is the
//!   caller's hash check, not ours. The partial file is opened without
//!   following a symlink and only as a regular file: payload bytes land in
//!   no other file (`payload.rs`, `open_partial`).
//! - A remote manifest can never make us read a local file: `file:` and
//!   local paths are refused as references from, and redirects out of, http(s).
//! - Every URL built from another (signatures, image references, the
//!   mirror, redirects) is built on its components (`location.rs`), and a URL
//!   is shown to a person only through [`redact`] (no user info, no
//!   presigned signature).
//! - Error kinds tell the transport's failures (`network`, `http_status`,
//!   `tls`: worth another try later) from a source that does not hold what
//!   the signed manifest declares (`too_long`, `too_short`, `not_found`).
//! - Nothing waits forever: connect, header and per-read timeouts are set
//!   (ureq's are all off by default), and a body that trickles in slower than
//!   [`MIN_PROGRESS_BYTES`] per `read_timeout` is dropped as stalled.
//! - Thin links: payload bodies are read no faster than the rate in force
//!   (`pace.rs`) and not outside the download windows: there a body ends
//!   ([`FetchError::OutsideWindow`]), never waits (a wait of hours would
//!   hold the caller's state lock); a body that fails goes on with `Range`
//!   from exactly the next byte (a payload also from a whole answer, its
//!   head dropped) or ends in an error (`body.rs`); only
//!   transient failures are asked again, bounded (`retry.rs`); headers and
//!   the client certificate go to the configured origins only, hop by hop
//!   (`auth.rs`).
//! - Trust roots are chosen in one place, [`trust_roots`], for every https
//!   client of ours (this transport, the webhook, `fleet --prometheus`, https
//!   health checks); when none load, an https request fails before its
//!   handshake with a line naming the files ([`Roots::missing_to`]).

mod auth;
mod body;
mod location;
mod pace;
mod payload;
mod retry;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body, Proxy};

pub use auth::{read_secret, CredentialFiles, Credentials};
pub use location::{
    check_mirror, check_service_url, check_signature_url, endpoint, file_url_of, origin_of,
    presigned_expiry, redact, redact_url, sibling, signature_location, via_mirror, Origin,
    SIGNATURE_NAME_PLACEHOLDER,
};
use location::{parse_location, split_url, url_join, Loc};
use pace::Bucket;
pub use pace::{parse_rate, Allowance, Pacing, RateWindow};
pub use payload::{validator_file, ClosingOnDrop, PayloadReader};
use retry::Attempts;
pub use retry::{Next, RetryPolicy};

/// Redirects followed per request before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// The longest redirect body read to its end (see
/// [`Transport::finish_redirect`]): a server's short "moved" page; nginx's
/// is under 200 bytes.
const REDIRECT_BODY_READ: u64 = 4096;

/// The largest PEM file read (a CA bundle, a client certificate chain);
/// the host's whole bundle is about 200 KB.
pub const MAX_PEM_BYTES: u64 = 16 * 1024 * 1024;

/// A body must bring at least this many bytes per `read_timeout` of time
/// spent waiting for it, else it is dropped as stalled. ureq's per-read timeout
/// alone is defeated by a server sending one byte just before it expires;
/// this is the "low speed limit" that catches such a trickle (1 KiB per 30 s
/// is about 34 B/s: far below any link worth waiting on).
pub const MIN_PROGRESS_BYTES: u64 = 1024;

/// A document (manifest, signature, channel) must arrive whole within this
/// many `read_timeout`s ([`Transport::get_document`]).
pub const DOCUMENT_DEADLINE_READS: u32 = 10;

/// How a [`Transport`] talks to servers.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Budget for name resolution plus TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Longest wait for any data while reading (no progress = error); also the
    /// window of the stall check ([`MIN_PROGRESS_BYTES`]). Headers must arrive
    /// within twice this.
    pub read_timeout: Duration,
    /// Proxy URL for all requests (`http://host:port`). `None`: from the
    /// environment, `http_proxy` for http and `https_proxy` for https URLs
    /// (upper-case and `all_proxy` as fallbacks), minus hosts in `no_proxy`.
    /// `Some("")`: no proxy at all, whatever the environment says.
    /// Loopback destinations never go through a proxy. Note: ureq tunnels
    /// every proxied request with CONNECT, plain http too, so the proxy must
    /// allow CONNECT to port 80 (Squid's stock config allows only 443).
    pub proxy: Option<String>,
    /// PEM file of trust roots (a fleet with a private CA). `None`: the
    /// host's own CA bundle (the first of `ca_bundles` with a certificate).
    pub ca_file: Option<PathBuf>,
    /// Where the host's CA bundle may be, in order (`[system] ca_bundles`;
    /// default [`SYSTEM_CA_BUNDLES`]).
    pub ca_bundles: Vec<PathBuf>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// How fast, and when, payload bodies are read (documents are not
    /// paced). Default: unlimited.
    pub pacing: Pacing,
    /// Retries within a call. Default: none (the first failure is the
    /// answer); the agent sets `[update] retries`.
    pub retry: RetryPolicy,
    /// Headers and a client certificate for the configured servers only.
    pub credentials: Option<Credentials>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            proxy: None,
            ca_file: None,
            ca_bundles: system_ca_bundles(),
            user_agent: format!("abupdate/{}", env!("CARGO_PKG_VERSION")),
            pacing: Pacing::default(),
            retry: RetryPolicy::none(),
            credentials: None,
        }
    }
}

/// HTTP cache validators of a fetched document, to ask "changed since?".
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Validators {
    /// The response's `ETag`.
    pub etag: Option<String>,
    /// The response's `Last-Modified`.
    pub last_modified: Option<String>,
}

impl Validators {
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// A small document (manifest, signature).
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    /// The whole body, and validators for a later conditional fetch (empty
    /// for local files: they are re-read every time).
    Fetched {
        /// The whole body.
        body: Vec<u8>,
        /// Validators for a later conditional fetch.
        validators: Validators,
        /// Where the body came from: the last URL of any redirects (the
        /// location asked for, for local files). Raw: [`redact`] it to show.
        url: String,
    },
    /// The server answered 304 to the validators sent.
    NotModified,
    /// HTTP 404/410, or no such local file.
    NotFound,
}

/// Why a fetch failed. `Display` is one line naming the location.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// Could not connect, connection reset, bad HTTP, invalid proxy...
    Network {
        /// The URL or path, as shown (without user info).
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// A timeout or a stalled body (kind "network").
    Timeout {
        /// The URL or path, as shown (without user info).
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// An HTTP status we cannot use. `retry_after`: the server's
    /// `Retry-After` (429, 503), for a caller that retries.
    HttpStatus {
        /// The URL, as shown (without user info).
        location: String,
        /// The HTTP status.
        status: u16,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// HTTP 404 or 410 (`status`), or no such local file (`None`): the
    /// release is not (or no longer) published there.
    NotFound {
        /// The URL or path, as shown (without user info).
        location: String,
        /// The HTTP status (404, 410); `None` for a local file.
        status: Option<u16>,
    },
    /// The source has more bytes than allowed. `announced`: the server said
    /// so in its headers (Content-Length / Content-Range), nothing was read.
    TooLong {
        /// The URL or path, as shown (without user info).
        location: String,
        /// The bytes allowed.
        limit: u64,
        /// What the headers announced, when they did.
        announced: Option<u64>,
    },
    /// The source ended early. `announced`: the headers (or a local file's
    /// length) said it would: the source holds another file than the signed
    /// manifest declares (kind "too_short"). Unannounced, the connection was
    /// cut (kind "network").
    TooShort {
        /// The URL or path, as shown (without user info).
        location: String,
        /// Bytes received.
        got: u64,
        /// Bytes declared.
        expected: u64,
        /// Whether the headers (or the file's length) said so.
        announced: bool,
    },
    /// TLS handshake or certificate failure.
    Tls {
        /// The URL or path, as shown (without user info).
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// An answer that is not HTTP (a bad status line, conflicting or
    /// unreadable lengths, headers over 64 KiB): the server's fault, not
    /// the link's, so never asked again.
    Protocol {
        /// The URL or path, as shown (without user info).
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// Local file or partial-file I/O.
    Io {
        /// The URL or path, as shown (without user info).
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// Against policy: a scheme other than http/https/file, a `file:`
    /// reference or redirect from a remote source, a redirect loop.
    Refused {
        /// The URL or path, as shown (without user info).
        location: String,
        /// Why.
        reason: String,
    },
    /// A resume's `If-Range` was answered with the whole object under
    /// another validator (kind "network"): the object was replaced on the
    /// server after the download began, so its bytes so far (`at` of them)
    /// belong to an object no longer served. Never spliced; the partial
    /// download is discarded and the download starts over from byte 0.
    /// For a bounded range (`range_end`: a frame fetched once more, asked
    /// with the payload's validator) nothing of the new object is taken
    /// and the run ends: the bytes the caller holds are of the old one.
    Changed {
        /// The URL, as shown (without user info).
        location: String,
        /// The byte the resume (or the range) asked from.
        at: u64,
        /// The validator the download began with (sent as `If-Range`).
        validator: String,
        /// Where the range asked ends (exclusive); `None` for a resume of
        /// the payload to its end.
        range_end: Option<u64>,
    },
    /// The download window closed (timer runs, `[update]
    /// download_windows`): payload bytes stop at the close, the connection
    /// is dropped and the body ends here rather than wait, with the state
    /// lock held, for the next window. Not a failure of the link or the
    /// source: the caller keeps what arrived (a partial download, the
    /// segments in the slot) and ends its run until `until`; never asked
    /// again within the run (not transient).
    OutsideWindow {
        /// The URL, as shown (without user info).
        location: String,
        /// The next byte of the resource that was wanted.
        at: u64,
        /// When the next download window opens (Unix seconds).
        until: i64,
    },
    /// The server answered a bounded range request with a different range,
    /// or a delta's segment with the whole resource: the caller falls back
    /// to a full download. (A resumed payload and a frame fetched once
    /// more go on from a whole answer instead: `body.rs`,
    /// [`WholeAnswer::HeadDropped`].)
    RangeIgnored {
        /// The URL or path, as shown (without user info).
        location: String,
        /// What went wrong.
        detail: String,
    },
}

impl FetchError {
    /// A short stable label for metrics and reports (the README lists them
    /// with who is to blame for each).
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            FetchError::Network { .. }
            | FetchError::Timeout { .. }
            | FetchError::Protocol { .. }
            | FetchError::Changed { .. }
            // Only ever seen as a failure when a caller that does not end
            // its run on it (none should) lets it through: the link was
            // not to be used then.
            | FetchError::OutsideWindow { .. }
            | FetchError::TooShort {
                announced: false, ..
            } => crate::error::Kind::Network,
            FetchError::HttpStatus { .. } => crate::error::Kind::HttpStatus,
            FetchError::NotFound { .. } => crate::error::Kind::NotFound,
            FetchError::TooLong { .. } => crate::error::Kind::TooLong,
            FetchError::TooShort { .. } => crate::error::Kind::TooShort,
            FetchError::Tls { .. } => crate::error::Kind::Tls,
            FetchError::Io { .. } => crate::error::Kind::Io,
            FetchError::Refused { .. } => crate::error::Kind::Refused,
            FetchError::RangeIgnored { .. } => crate::error::Kind::RangeIgnored,
        }
    }

    /// Whether the same request may well succeed later: the link or the
    /// server failed (a cut or refused connection, a stall, 408, 425, 429,
    /// 5xx gateway and availability errors), not the file. A retry loop
    /// waits [`FetchError::retry_after`] when the server said so.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Network { .. } | FetchError::Timeout { .. } => true,
            // From byte 0 the new object downloads like any other.
            FetchError::Changed { .. } => true,
            FetchError::TooShort { announced, .. } => !announced,
            FetchError::HttpStatus { status, .. } => {
                matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
            }
            _ => false,
        }
    }

    /// How long the server asked us to wait before asking again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The URL or path the error is about (user info already removed).
    pub fn location(&self) -> &str {
        match self {
            FetchError::Network { location, .. }
            | FetchError::Timeout { location, .. }
            | FetchError::Protocol { location, .. }
            | FetchError::HttpStatus { location, .. }
            | FetchError::NotFound { location, .. }
            | FetchError::TooLong { location, .. }
            | FetchError::TooShort { location, .. }
            | FetchError::Tls { location, .. }
            | FetchError::Io { location, .. }
            | FetchError::Refused { location, .. }
            | FetchError::Changed { location, .. }
            | FetchError::OutsideWindow { location, .. }
            | FetchError::RangeIgnored { location, .. } => location,
        }
    }

    /// Wrap for `Read::read`; undo with [`FetchError::from_io`].
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// The `FetchError` inside an `io::Error` from a [`PayloadReader`], if any.
    pub fn from_io(e: &io::Error) -> Option<&FetchError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<FetchError>())
    }
}

impl fmt::Display for FetchError {
    /// One line; any user info in it (locations, or text from the HTTP
    /// library) goes through [`redact`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.line()))
    }
}

impl FetchError {
    fn line(&self) -> String {
        let who = if self.location().starts_with("http") {
            "server"
        } else {
            "source"
        };
        match self {
            FetchError::Network { location, detail } | FetchError::Timeout { location, detail } => {
                format!("{location}: {detail}")
            }
            FetchError::Protocol { location, detail } => {
                format!("{location}: HTTP protocol error: {detail}")
            }
            FetchError::HttpStatus {
                location,
                status,
                retry_after,
            } => match (retry_after, presigned_note(location, *status)) {
                (Some(d), _) => format!(
                    "{location}: HTTP {status} (the server asks to retry after {})",
                    fmt_secs(*d)
                ),
                (None, Some(note)) => format!("{location}: HTTP {status} ({note})"),
                (None, None) => format!("{location}: HTTP {status}"),
            },
            FetchError::NotFound {
                location,
                status: Some(status),
            } => format!("{location}: not found (HTTP {status})"),
            FetchError::NotFound { location, .. } => format!("{location}: not found"),
            FetchError::TooLong {
                location,
                limit,
                announced: Some(n),
            } => format!(
                "{location}: {who} announced {n} bytes, more than the {limit} bytes allowed"
            ),
            FetchError::TooLong {
                location, limit, ..
            } => format!("{location}: {who} sent more than the {limit} bytes allowed"),
            FetchError::TooShort {
                location,
                got,
                expected,
                announced: true,
            } => format!("{location}: {who} announced only {got} of {expected} bytes"),
            FetchError::TooShort {
                location,
                got,
                expected,
                ..
            } => format!("{location}: ended after {got} of {expected} bytes"),
            FetchError::Tls { location, detail } => format!("{location}: TLS: {detail}"),
            FetchError::Io { location, detail } => format!("{location}: {detail}"),
            FetchError::Refused { location, reason } => format!("{location}: {reason}"),
            FetchError::RangeIgnored { location, detail } => {
                format!("{location}: the server ignores Range: {detail}")
            }
            FetchError::Changed {
                location,
                at,
                validator,
                range_end: None,
            } => format!(
                "{location}: the object changed on the server during the download (its \
                 validator {validator} no longer matches: HTTP 200 to a resume at byte {at}); \
                 the partial download is discarded and the download starts over from byte 0"
            ),
            FetchError::Changed {
                location,
                at,
                validator,
                range_end: Some(end),
            } => format!(
                "{location}: the object changed on the server during the download (its \
                 validator {validator} no longer matches: HTTP 200 to bytes={at}-{last}); \
                 nothing is taken from the new object, and the next run asks for it again",
                last = end.saturating_sub(1)
            ),
            FetchError::OutsideWindow {
                location,
                at,
                until,
            } => format!(
                "{location}: outside the download windows at byte {at}; the rest waits for \
                 the next window (opens {})",
                crate::timefmt::format_rfc3339(*until)
            ),
        }
    }
}

/// What a refusal (400, 403) of a presigned URL most likely means: S3
/// answers 403 once the URL's own expiry has passed, and a person cannot
/// read that from the query. Says when it expired, or until when it is
/// valid (then the refusal is something else: a wrong key, a clock skew).
fn presigned_note(location: &str, status: u16) -> Option<String> {
    if !matches!(status, 400 | 403) {
        return None;
    }
    let expiry = location::presigned_expiry(location)?;
    let at = crate::timefmt::format_rfc3339(expiry);
    Some(if expiry <= crate::timefmt::now() {
        format!("a presigned URL that expired at {at}: publish a fresh one")
    } else {
        format!("a presigned URL valid until {at}")
    })
}

impl std::error::Error for FetchError {}

/// Resolve an image `url` against the manifest's location: relative paths
/// join onto the manifest's directory (for URLs and for local paths /
/// `file://`); absolute http(s) is allowed; `file:` or an absolute path from
/// an http(s) manifest is refused (a remote manifest must not make us read
/// `/etc/shadow`); `..` follows normal URL semantics; any scheme other than
/// http, https, file is refused.
pub fn resolve(manifest_location: &str, reference: &str) -> Result<String, FetchError> {
    location::resolve(manifest_location, reference)
}

/// One agent per way out: direct, or through the http or https proxy.
#[derive(Clone)]
struct Agents {
    direct: Agent,
    /// Agent for http:// URLs that go through a proxy, if any.
    http_proxy: Option<Agent>,
    /// Agent for https:// URLs that go through a proxy, if any.
    https_proxy: Option<Agent>,
}

/// Fetches documents and payloads. Cheap to clone (agents share their pools,
/// clones share the rate budget).
#[derive(Clone)]
pub struct Transport {
    plain: Agents,
    /// Agents whose TLS offers the client certificate: used only for the
    /// origins the credentials are for.
    authed: Option<Agents>,
    /// Hosts that bypass an environment proxy (`no_proxy`).
    no_proxy: Vec<String>,
    connect_timeout: Duration,
    read_timeout: Duration,
    credentials: Option<Arc<Credentials>>,
    pacing: Arc<Pacing>,
    /// One budget for every body read through this transport (and its
    /// clones): consecutive delta segments share the rate.
    bucket: Arc<Mutex<Bucket>>,
    retry: RetryPolicy,
    /// The trust roots the agents verify with: when missing, an https
    /// request fails before any handshake ([`Roots::refuses_to`]).
    roots: Arc<Roots>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("http_proxy", &self.plain.http_proxy.is_some())
            .field("https_proxy", &self.plain.https_proxy.is_some())
            .field("no_proxy", &self.no_proxy)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("credentials", &self.credentials)
            .field("pacing", &self.pacing)
            .field("retry", &self.retry)
            .finish()
    }
}

fn env_first(names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n.to_string(), v.trim().to_string()))
    })
}

fn make_proxy(source: &str, url: &str) -> Result<Proxy, FetchError> {
    Proxy::new(url).map_err(|e| FetchError::Network {
        location: source.to_string(),
        detail: format!("invalid proxy URL \"{}\": {e}", redact_url(url)),
    })
}

/// Where Debian/Ubuntu, Fedora/RHEL, Alpine/OpenWrt and Yocto keep the
/// system's CA bundle, in the order tried when `ca_file` is not set.
pub const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The certificates of a PEM file of trust roots (other PEM items skipped);
/// else why it gives none, as the end of a sentence naming the file. Only
/// from a file nobody but root could change
/// ([`crate::safe_path::trusted_file`]): whoever adds a root there can
/// stand in for the update server and read the credentials sent to it.
fn read_roots(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let resolved =
        crate::safe_path::trusted_file(path).map_err(|why| match std::fs::metadata(path) {
            Err(e) => format!("cannot be read ({e})"),
            Ok(_) => why,
        })?;
    let pem = crate::files::read_capped(&resolved, MAX_PEM_BYTES)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("holds bad PEM ({e})")),
        }
    }
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// Which proxy for which scheme, and the hosts that bypass them.
struct Proxies {
    /// For http URLs.
    http: Option<Proxy>,
    /// For https URLs.
    https: Option<Proxy>,
    /// `no_proxy`'s hosts and domains, lower case, without a leading `*.`.
    no_proxy: Vec<String>,
}

/// The proxies of the `proxy` option, else of the environment.
fn proxies(proxy: Option<&str>) -> Result<Proxies, FetchError> {
    let (http, https, no_proxy) = match proxy {
        // An explicit empty proxy means "direct", ignoring the environment.
        Some(p) if p.trim().is_empty() => (None, None, Vec::new()),
        Some(p) => {
            let proxy = make_proxy("proxy option", p)?;
            (Some(proxy.clone()), Some(proxy), Vec::new())
        }
        None => {
            // Lower-case http_proxy only for http (CGI "httpoxy": a
            // request header can set HTTP_PROXY).
            let http = env_first(&["http_proxy", "all_proxy", "ALL_PROXY"]);
            let https = env_first(&["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]);
            let no_proxy = env_first(&["no_proxy", "NO_PROXY"])
                .map(|(_, v)| {
                    v.split(',')
                        .map(|s| s.trim().trim_start_matches("*.").to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let http = http
                .map(|(n, v)| make_proxy(&format!("${n}"), &v))
                .transpose()?;
            let https = https
                .map(|(n, v)| make_proxy(&format!("${n}"), &v))
                .transpose()?;
            (http, https, no_proxy)
        }
    };
    Ok(Proxies {
        http,
        https,
        no_proxy,
    })
}

/// The trust roots an https client of ours verifies servers with: found, or
/// why none load.
pub enum Roots {
    /// `ca_file`'s certificates, else the first bundle's that has any.
    Found(Vec<ureq::tls::Certificate<'static>>),
    /// No certificate to verify a server with.
    Missing(MissingRoots),
}

/// Why no trust roots load, naming each file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissingRoots {
    /// The CA file the operator named gives no certificate: the bundles
    /// are not looked at (a fallback would verify servers the operator
    /// meant to leave out).
    CaFile {
        /// The file, as shown.
        path: String,
        /// Why: "cannot be read (…)", "holds bad PEM (…)", "holds no
        /// certificate".
        why: String,
    },
    /// No CA file set and no bundle holding a certificate: each bundle
    /// path, with why it was passed over when it exists.
    NoBundle(Vec<String>),
}

impl MissingRoots {
    /// Why no roots load, naming the file(s); `ca_setting` is what names
    /// the CA file (`[update] ca_file`, `--prometheus-ca`).
    pub fn cause(&self, ca_setting: &str) -> String {
        match self {
            MissingRoots::CaFile { path, why } => format!("{ca_setting} {path} {why}"),
            MissingRoots::NoBundle(looked) if looked.is_empty() => {
                format!(
                    "no CA bundle at any path ([system] ca_bundles is empty) and no {ca_setting}"
                )
            }
            MissingRoots::NoBundle(looked) => {
                format!("no CA bundle at {} and no {ca_setting}", looked.join(", "))
            }
        }
    }
}

/// What a host cannot do without trust roots when its update servers are
/// https: the end of the line [`Roots::missing_to`] says it with.
pub const FETCH_UPDATES_OVER_HTTPS: &str = "fetch its next update over https";

impl Roots {
    /// The one line a host's https request (and a trial's verdict) fails
    /// with when no roots load: not rustls' "UnknownIssuer", which names no
    /// file. `what` is what the host could not do
    /// ([`FETCH_UPDATES_OVER_HTTPS`], `verify its https health check`), so
    /// the line says what cannot be reached.
    pub fn missing_to(&self, what: &str) -> Option<String> {
        match self {
            Roots::Found(_) => None,
            Roots::Missing(why) => Some(format!(
                "{}: this host could not {what}",
                why.cause("[update] ca_file")
            )),
        }
    }

    /// [`Roots::missing_to`] when `url` is https: the request fails with it
    /// before any handshake. Plain http (signed releases) needs no roots.
    pub fn refuses_to(&self, url: &str, what: &str) -> Option<String> {
        if is_https(url) {
            self.missing_to(what)
        } else {
            None
        }
    }

    /// Why no roots load, when none do: for a client that names its CA
    /// file otherwise than `[update] ca_file` (`fleet --prometheus-ca`).
    pub fn why_missing(&self) -> Option<&MissingRoots> {
        match self {
            Roots::Found(_) => None,
            Roots::Missing(why) => Some(why),
        }
    }

    /// The TLS settings of an agent verifying servers with these roots
    /// (none when missing: every handshake fails). ureq's default (its
    /// built-in WebPKI roots) is not compiled in and panics when used: no
    /// agent is built without this.
    pub fn tls_config(&self) -> TlsConfig {
        let certs: &[ureq::tls::Certificate<'static>] = match self {
            Roots::Found(c) => c,
            Roots::Missing(_) => &[],
        };
        TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(certs))
            .build()
    }
}

/// Which trust roots are used, the one place that says so: `ca_file`'s (the
/// operator named it: one that gives no certificate is said by name, the
/// bundles are not tried), else the first of `bundles` (the host's,
/// [`SYSTEM_CA_BUNDLES`] unless `[system] ca_bundles` moves them) holding a
/// certificate. Never an error: plain http (signed releases) works without
/// roots, and an https request fails before its handshake with
/// [`Roots::missing_to`]. Mozilla's roots are not built in: they cost ~55 KB
/// of a 3 MiB binary and would go stale on a host that is never rebuilt,
/// while the OS image updates its bundle with every release.
pub fn trust_roots(ca_file: Option<&Path>, bundles: &[PathBuf]) -> Roots {
    if let Some(path) = ca_file {
        return match read_roots(path) {
            Ok(certs) => Roots::Found(certs),
            Err(why) => Roots::Missing(MissingRoots::CaFile {
                path: path.display().to_string(),
                why,
            }),
        };
    }
    let mut looked = Vec::new();
    for path in bundles {
        if !path.exists() {
            looked.push(path.display().to_string());
            continue;
        }
        // An empty or broken bundle is passed over, not fatal.
        match read_roots(path) {
            Ok(certs) => return Roots::Found(certs),
            Err(why) => looked.push(format!("{} ({why})", path.display())),
        }
    }
    Roots::Missing(MissingRoots::NoBundle(looked))
}

/// [`SYSTEM_CA_BUNDLES`] as paths: the default of `[system] ca_bundles`.
pub fn system_ca_bundles() -> Vec<PathBuf> {
    SYSTEM_CA_BUNDLES.iter().map(PathBuf::from).collect()
}

/// Whether `url`'s scheme is https (any case): a request to it needs trust
/// roots.
pub fn is_https(url: &str) -> bool {
    split_url(url).scheme.eq_ignore_ascii_case("https")
}

impl Transport {
    /// A client with `opts`' timeouts, proxy and trust roots.
    pub fn new(opts: &TransportOptions) -> Result<Transport, FetchError> {
        let roots = trust_roots(opts.ca_file.as_deref(), &opts.ca_bundles);
        let tls = roots.tls_config();
        let build = |proxy: Option<Proxy>, tls: &TlsConfig| {
            let config = Agent::config_builder()
                // Statuses are ours to interpret (206, 304, 404, 416...).
                .http_status_as_error(false)
                // Redirects are followed by hand so that every hop is checked
                // (scheme, loops, credentials) and the Range header survives
                // them.
                .max_redirects(0)
                .user_agent(opts.user_agent.as_str())
                // Byte offsets must be offsets into the file as stored; any
                // content coding would break Range and the hash.
                .accept_encoding("identity")
                .tls_config(tls.clone())
                .proxy(proxy)
                .timeout_resolve(Some(opts.connect_timeout))
                .timeout_connect(Some(opts.connect_timeout))
                .timeout_send_request(Some(opts.read_timeout))
                // Headers are small: twice the stall limit catches a server
                // trickling them byte by byte.
                .timeout_recv_response(Some(opts.read_timeout.saturating_mul(2)))
                .timeout_per_read(Some(opts.read_timeout))
                .timeout_per_write(Some(opts.read_timeout))
                .build();
            Agent::new_with_config(config)
        };
        let Proxies {
            http: http_proxy,
            https: https_proxy,
            no_proxy,
        } = proxies(opts.proxy.as_deref())?;
        let agents = |tls: &TlsConfig| Agents {
            direct: build(None, tls),
            http_proxy: http_proxy.clone().map(|p| build(Some(p), tls)),
            https_proxy: https_proxy.clone().map(|p| build(Some(p), tls)),
        };
        let credentials = opts.credentials.clone().map(Arc::new);
        // The client certificate lives in a TLS config of its own, used only
        // for the credentials' origins: any other server's handshake never
        // sees it.
        let authed = credentials
            .as_ref()
            .and_then(|c| c.client_cert().cloned())
            .map(|cert| {
                agents(
                    &TlsConfig::builder()
                        .root_certs(tls.root_certs().clone())
                        .client_cert(Some(cert))
                        .build(),
                )
            });
        Ok(Transport {
            plain: agents(&tls),
            authed,
            no_proxy,
            connect_timeout: opts.connect_timeout,
            read_timeout: opts.read_timeout,
            credentials,
            pacing: Arc::new(opts.pacing.clone()),
            bucket: Arc::new(Mutex::new(Bucket::default())),
            retry: opts.retry,
            roots: Arc::new(roots),
        })
    }

    /// This transport without its download windows (a manual install);
    /// the rate, and the budget, are kept.
    pub fn without_download_windows(&self) -> Transport {
        Transport {
            pacing: Arc::new(self.pacing.without_download_windows()),
            ..self.clone()
        }
    }

    /// Whether a request to `url` carries the configured credentials.
    pub fn sends_credentials_to(&self, url: &str) -> bool {
        self.credentials.as_ref().is_some_and(|c| c.applies_to(url))
    }

    /// The agent for `url`: with the client certificate for the
    /// credentials' origins, through a proxy unless bypassed.
    fn agent_for(&self, url: &str) -> &Agent {
        match &self.authed {
            Some(authed) if self.sends_credentials_to(url) => self.pick(authed, url),
            _ => self.pick(&self.plain, url),
        }
    }

    fn pick<'a>(&self, agents: &'a Agents, url: &str) -> &'a Agent {
        let parts = split_url(url);
        let host = parts
            .authority
            .map(location::host_of)
            .unwrap_or("")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let bypass = loopback || no_proxy_matches(&self.no_proxy, &host);
        let proxied = if parts.scheme.eq_ignore_ascii_case("https") {
            &agents.https_proxy
        } else {
            &agents.http_proxy
        };
        match proxied {
            Some(agent) if !bypass => agent,
            _ => &agents.direct,
        }
    }

    /// GET `url` with `headers`, retrying what [`RetryPolicy`] says is
    /// worth another try (a transient status or a failed connection),
    /// counting failures in `attempts` (a body that goes on over several
    /// requests shares one count).
    fn get_with(
        &self,
        url: &str,
        headers: &[(&str, String)],
        attempts: &mut Attempts,
    ) -> Result<Reply, FetchError> {
        loop {
            let err = match self.get_once(url, headers) {
                Ok(reply) => match transient_status(&reply) {
                    None => return Ok(reply),
                    Some(err) => err,
                },
                Err(err) => err,
            };
            match attempts.after(&self.retry, &err) {
                Next::Retry(wait) => std::thread::sleep(wait),
                Next::GiveUp(_) => return Err(err),
            }
        }
    }

    /// What payload bodies may do now (see [`Pacing::at`]).
    fn allowance(&self) -> Allowance {
        let p = &self.pacing;
        if p.download_windows.is_empty() && p.rate_windows.is_empty() {
            return Allowance::Go { rate: p.max_rate };
        }
        p.at(crate::timefmt::now())
    }

    /// `Ok` inside a download window (or without windows); outside, the
    /// body of `shown` stops before byte `at`: [`FetchError::OutsideWindow`].
    /// Never a sleep: a timer run waiting hours for the next window would
    /// hold the state lock all that time (every operator verb refused as
    /// locked, the probation's watch not run); it ends instead, and the
    /// next run inside a window resumes.
    fn inside_window(&self, shown: &str, at: u64) -> Result<(), FetchError> {
        match self.allowance() {
            Allowance::Go { .. } => Ok(()),
            Allowance::Wait { until } => Err(FetchError::OutsideWindow {
                location: redact(shown).into_owned(),
                at,
                until,
            }),
        }
    }

    /// `n` bytes of a body arrived under `rate`: sleep as long as the
    /// shared budget says.
    fn throttle(&self, rate: Option<u64>, n: usize) {
        if rate.is_none() {
            return;
        }
        let wait = match self.bucket.lock() {
            Ok(mut b) => b.take(Instant::now(), rate, n as u64),
            Err(poisoned) => poisoned.into_inner().take(Instant::now(), rate, n as u64),
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// One GET of `url` with `headers`, following up to [`MAX_REDIRECTS`]
    /// http(s) redirects by hand (each target resolved against the URL that
    /// redirected, per RFC 3986, and checked like any location). The
    /// credentials go with a hop only when it is to one of their origins.
    /// Returns the (non-3xx) response, the URL that gave it, and how to
    /// name it.
    fn get_once(&self, url: &str, headers: &[(&str, String)]) -> Result<Reply, FetchError> {
        self.get_once_within(url, headers, None)
    }

    /// The whole time a document may take, from the request to its last
    /// byte ([`DOCUMENT_DEADLINE_READS`] × `read_timeout`): TUF's slow
    /// retrieval. The stall floor alone lets a server trickle 1 MiB over
    /// hours while the state lock is held; a chunked body's trailer lines
    /// (which the HTTP library reads inside one read, past our byte caps)
    /// end here too.
    fn document_deadline(&self) -> Duration {
        self.read_timeout.saturating_mul(DOCUMENT_DEADLINE_READS)
    }

    /// [`Transport::get_once`], each hop's whole exchange (the body's last
    /// byte included) within `deadline` when given.
    fn get_once_within(
        &self,
        url: &str,
        headers: &[(&str, String)],
        deadline: Option<Duration>,
    ) -> Result<Reply, FetchError> {
        let mut chain = vec![url.to_string()];
        loop {
            let current = chain.last().cloned().unwrap_or_default();
            let shown = describe_chain(&chain);
            if let Some(line) = self.roots.refuses_to(&current, FETCH_UPDATES_OVER_HTTPS) {
                return Err(FetchError::Tls {
                    location: shown,
                    detail: line,
                });
            }
            let mut req = self.agent_for(&current).get(&current);
            if let Some(deadline) = deadline {
                req = req.config().timeout_global(Some(deadline)).build();
            }
            for (name, value) in headers {
                req = req.header(*name, value.as_str());
            }
            if let Some(c) = self.credentials.as_ref().filter(|c| c.applies_to(&current)) {
                for (name, value) in c.headers() {
                    req = req.header(name, value);
                }
            }
            let resp = req.call().map_err(|e| self.classify(e, &shown, &current))?;
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(Reply {
                    shown,
                    url: current,
                    resp,
                });
            }
            let target = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| FetchError::Network {
                    location: shown.clone(),
                    detail: format!("HTTP {status} redirect without a usable Location"),
                })?;
            let next = url_join(&current, &target);
            match location::scheme_of(&next).as_deref() {
                Some("http") | Some("https") => {}
                Some(other) => {
                    return Err(FetchError::Refused {
                        location: shown,
                        reason: format!("redirect to {other}: refused"),
                    })
                }
                None => {
                    return Err(FetchError::Refused {
                        location: shown,
                        reason: format!("redirect to {target:?} refused"),
                    })
                }
            }
            if let Err(e) = parse_location(&next) {
                return Err(FetchError::Refused {
                    location: shown,
                    reason: format!("bad redirect target: {e}"),
                });
            }
            if chain.contains(&next) {
                chain.push(next);
                return Err(FetchError::Refused {
                    location: redact(url).into_owned(),
                    reason: redact(&format!("redirect loop: {}", chain.join(" -> "))).into_owned(),
                });
            }
            if chain.len() > MAX_REDIRECTS {
                return Err(FetchError::Refused {
                    location: redact(url).into_owned(),
                    reason: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            // Followed: only now is the connection worth keeping.
            self.finish_redirect(resp);
            chain.push(next);
        }
    }

    /// A redirect is done with: its body is read to its end when its length
    /// is announced and at most [`REDIRECT_BODY_READ`], within the time its
    /// headers were allowed (twice the stall limit), which hands a
    /// keep-alive connection back to the pool for the next hop or the next
    /// request redirected the same way (a delta asks a range per segment, and
    /// a release server that redirects to a mirror redirects each: without
    /// this every range cost a connection to the redirecting server, over
    /// HTTPS a handshake). Any other body is dropped with its connection: its
    /// end could make the read wait on the link (review 14).
    fn finish_redirect(&self, resp: Response<Body>) {
        if announced_length(&resp).is_none_or(|n| n > REDIRECT_BODY_READ) {
            return;
        }
        let started = Instant::now();
        let mut reader = resp.into_body().into_reader();
        let mut buf = [0u8; 512];
        // Each read waits at most the stall limit (the agent's per-read
        // timeout) and none starts after one stall limit: twice the stall
        // limit in all. The body's end (read 0) hands the connection back.
        while started.elapsed() < self.read_timeout {
            if matches!(body::read_retrying(&mut reader, &mut buf), Ok(0) | Err(_)) {
                return;
            }
        }
    }

    /// POST `body` (JSON) to `url` with `headers`, once: no redirect is
    /// followed (a lock or report service answers where it was asked), no
    /// credentials are sent (they are for the update servers); without
    /// trust roots an https one fails before its handshake, as a GET does.
    /// Returns the status and at most `limit` bytes of the answer.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let url = match parse_location(url)? {
            Loc::Http(url) => url,
            Loc::File(_) => {
                return Err(FetchError::Refused {
                    location: redact(url).into_owned(),
                    reason: "not an http(s) URL".into(),
                })
            }
        };
        let shown = redact(&url).into_owned();
        if let Some(line) = self.roots.refuses_to(&url, FETCH_UPDATES_OVER_HTTPS) {
            return Err(FetchError::Tls {
                location: shown,
                detail: line,
            });
        }
        // The whole exchange within the documents' deadline: found from
        // outside, a FleetLock answer's chunked trailer sent for ever held
        // `health` and `update`, and the state lock, without end.
        let mut req = self
            .pick(&self.plain, &url)
            .post(&url)
            .config()
            .timeout_global(Some(self.document_deadline()))
            .build()
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send(body).map_err(|e| self.classify(e, &shown, &url))?;
        let status = resp.status().as_u16();
        let mut answer = Vec::new();
        let reader = payload::body_reader(self, resp, limit, &shown);
        // The answer only explains the status: a cut or long one is cut.
        let _ = reader.take(limit).read_to_end(&mut answer);
        Ok((status, answer))
    }

    /// Turn a ureq error into ours. `shown` names the location for the
    /// message, `url` is the URL actually requested (for the scheme).
    fn classify(&self, err: ureq::Error, shown: &str, url: &str) -> FetchError {
        let location = shown.to_string();
        let https = url.starts_with("https:");
        match err {
            ureq::Error::Timeout(t) => {
                let detail = match t {
                    ureq::Timeout::Resolve | ureq::Timeout::Connect => format!(
                        "connection timed out after {}",
                        fmt_secs(self.connect_timeout)
                    ),
                    ureq::Timeout::PerRead => {
                        format!("no data received for {}", fmt_secs(self.read_timeout))
                    }
                    ureq::Timeout::RecvResponse => format!(
                        "no complete response headers within {}",
                        fmt_secs(self.read_timeout.saturating_mul(2))
                    ),
                    // Only documents have one (`document_deadline`).
                    ureq::Timeout::Global => format!(
                        "not complete within {} ({DOCUMENT_DEADLINE_READS} x read_timeout)",
                        fmt_secs(self.document_deadline())
                    ),
                    other => format!("timed out ({other:?})"),
                };
                FetchError::Timeout { location, detail }
            }
            ureq::Error::Io(e) => {
                // rustls reports handshake and certificate failures as
                // InvalidData io errors carrying the rustls error.
                if https && e.kind() == io::ErrorKind::InvalidData && e.get_ref().is_some() {
                    let detail = e.get_ref().map(|i| i.to_string()).unwrap_or_default();
                    return FetchError::Tls { location, detail };
                }
                let detail = match e.kind() {
                    io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                    io::ErrorKind::UnexpectedEof => "connection closed by the server".to_string(),
                    io::ErrorKind::ConnectionReset => "connection reset".to_string(),
                    _ => e.to_string(),
                };
                FetchError::Network { location, detail }
            }
            ureq::Error::Rustls(e) => FetchError::Tls {
                location,
                detail: e.to_string(),
            },
            ureq::Error::Tls(e) => FetchError::Tls {
                location,
                detail: e.to_string(),
            },
            ureq::Error::Pem(e) => FetchError::Tls {
                location,
                detail: format!("{e:?}"),
            },
            ureq::Error::HostNotFound => FetchError::Network {
                location,
                detail: "host not found".into(),
            },
            ureq::Error::Protocol(e) => FetchError::Protocol {
                location,
                detail: e.to_string(),
            },
            ureq::Error::LargeResponseHeader(got, max) => FetchError::Protocol {
                location,
                detail: format!("response headers over {max} bytes ({got})"),
            },
            ureq::Error::BadUri(e) => FetchError::Refused {
                location,
                reason: format!("bad URL: {e}"),
            },
            ureq::Error::Http(e) => FetchError::Refused {
                location,
                reason: format!("bad URL: {e}"),
            },
            other => FetchError::Network {
                location,
                detail: other.to_string(),
            },
        }
    }

    /// Map an io error out of a response body reader: a wrapped
    /// [`FetchError`] (the stall guard) is passed through, the rest is
    /// classified as a ureq error. `None` for an early end of the body, which
    /// the caller turns into `TooShort` with its own counts.
    fn body_error(&self, e: io::Error, shown: &str, url: &str) -> Option<FetchError> {
        if let Some(f) = FetchError::from_io(&e) {
            return Some(f.clone());
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return None;
        }
        let ue = ureq::Error::from(e);
        if let ureq::Error::Io(inner) = &ue {
            if inner.kind() == io::ErrorKind::UnexpectedEof {
                return None;
            }
        }
        Some(self.classify(ue, shown, url))
    }

    /// A small document (manifest, .minisig) whole; more than `limit` bytes
    /// is an error (never reads past `limit + 1`). `validators` from the
    /// previous response send If-None-Match / If-Modified-Since; a 304 gives
    /// [`Document::NotModified`]. Local files are always read
    /// ([`Document::Fetched`] with empty validators).
    ///
    /// Transient failures (a 429 or 503, a reset, a cut body) are asked
    /// again within the call as `[update] retries` says.
    pub fn get_document(
        &self,
        location: &str,
        limit: u64,
        validators: Option<&Validators>,
    ) -> Result<Document, FetchError> {
        // One deadline for the document, its retries and their waits
        // included: a server that trickles each attempt to its limit would
        // else hold the state lock for (retries + 1) deadlines.
        let until = Instant::now() + self.document_deadline();
        let mut attempts = Attempts::default();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.get_document_once(location, limit, validators, left) {
                Err(err) => {
                    let left = until.saturating_duration_since(Instant::now());
                    match attempts.after_within(&self.retry, &err, left) {
                        Next::Retry(wait) => std::thread::sleep(wait),
                        Next::GiveUp(_) => return Err(err),
                    }
                }
                done => return done,
            }
        }
    }

    /// One attempt at the document, ended within `deadline`.
    fn get_document_once(
        &self,
        location: &str,
        limit: u64,
        validators: Option<&Validators>,
        deadline: Duration,
    ) -> Result<Document, FetchError> {
        let url = match parse_location(location)? {
            Loc::File(path) => return read_local_document(location, &path, limit),
            Loc::Http(url) => url,
        };
        let mut headers = Vec::new();
        let conditional = validators.is_some_and(|v| !v.is_empty());
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                headers.push(("If-None-Match", etag.clone()));
            }
            if let Some(lm) = &v.last_modified {
                headers.push(("If-Modified-Since", lm.clone()));
            }
        }
        let Reply {
            shown,
            url: answered,
            resp,
        } = self.get_once_within(&url, &headers, Some(deadline.max(Duration::from_millis(1))))?;
        match resp.status().as_u16() {
            200 => {}
            304 if conditional => return Ok(Document::NotModified),
            404 | 410 => return Ok(Document::NotFound),
            status => {
                return Err(FetchError::HttpStatus {
                    location: shown,
                    status,
                    retry_after: retry_after(&resp),
                })
            }
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            etag: header("etag"),
            last_modified: header("last-modified"),
        };
        let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = content_length {
            if n > limit {
                // Refused on the header alone: not one body byte read.
                return Err(FetchError::TooLong {
                    location: shown,
                    limit,
                    announced: Some(n),
                });
            }
        }
        let reader = payload::body_reader(self, resp, limit, &shown);
        let capacity = content_length
            .unwrap_or(64 * 1024)
            .min(limit.saturating_add(1));
        let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        if let Err(e) = reader.take(limit.saturating_add(1)).read_to_end(&mut body) {
            return Err(match self.body_error(e, &shown, &url) {
                Some(err) => err,
                None => FetchError::TooShort {
                    location: shown,
                    got: body.len() as u64,
                    expected: content_length.unwrap_or(body.len() as u64 + 1),
                    announced: false,
                },
            });
        }
        if body.len() as u64 > limit {
            return Err(FetchError::TooLong {
                location: shown,
                limit,
                announced: None,
            });
        }
        Ok(Document::Fetched {
            body,
            validators,
            url: answered,
        })
    }

    /// A payload of exactly `size` bytes as a reader. See [`PayloadReader`]
    /// for resuming through `partial`. Local paths and `file://` are read
    /// directly (partial ignored) with the same size checks.
    pub fn open_payload(
        &self,
        location: &str,
        size: u64,
        partial: Option<&std::path::Path>,
    ) -> Result<PayloadReader, FetchError> {
        let resume = partial.map_or(payload::Resume::None, payload::Resume::Partial);
        payload::open(self, location, size, resume)
    }

    /// The payload's bytes from `start` to its end (`size` in all), for a
    /// caller that holds the bytes before `start`: one `Range` request
    /// over HTTP, nothing kept on disk. A server that ignores the range
    /// sends the whole payload, its bytes before `start` dropped; one that
    /// answers with another range restarts from 0: check
    /// [`PayloadReader::resumed_from`].
    pub fn open_payload_from(
        &self,
        location: &str,
        size: u64,
        start: u64,
    ) -> Result<PayloadReader, FetchError> {
        payload::open(self, location, size, payload::Resume::From(start))
    }

    /// Exactly the bytes `[offset, offset + length)` of `location`, as a
    /// reader that fails if the source gives fewer. Over HTTP this is one
    /// `Range` request that must be answered by a 206 for exactly that
    /// range, or, when `whole` takes it, by a 200 with the whole resource
    /// (its head read and dropped, nothing past the range read:
    /// [`RangeReader::ranges_ignored`] counts it). Anything else is
    /// [`FetchError::RangeIgnored`] (nothing is read from a refused 200
    /// body), so the caller can fall back to a full download.
    ///
    /// `if_range`: the validator of the object the caller's other bytes
    /// came from (a payload's, for a frame fetched once more). Sent as
    /// `If-Range` on this request and on every resume of it, so that a
    /// `206` is that object's; a `200` under another validator is
    /// [`FetchError::Changed`] (nothing read from it), judged as a resume
    /// is (`body.rs`, `judge_resume`). For a local file it is the file's
    /// identity ([`PayloadReader::validator`]): another file there now, or
    /// the same rewritten, is [`FetchError::Io`] saying so, nothing read.
    pub fn open_range(
        &self,
        location: &str,
        offset: u64,
        length: u64,
        whole: WholeAnswer,
        if_range: Option<&str>,
    ) -> Result<RangeReader, FetchError> {
        let url = match parse_location(location)? {
            Loc::File(path) => {
                return local_range(location, &path, offset, length, if_range)
                    .map(|r| RangeReader(RangeSrc::Local(r)));
            }
            Loc::Http(url) => url,
        };
        if length == 0 {
            return Ok(RangeReader(RangeSrc::Empty));
        }
        let last = offset + length - 1;
        let mut headers = vec![
            ("Range", format!("bytes={offset}-{last}")),
            ("Accept-Encoding", "identity".to_string()),
        ];
        if let Some(v) = if_range {
            headers.push(("If-Range", v.to_string()));
        }
        self.inside_window(&url, offset)?;
        let mut attempts = Attempts::default();
        let Reply { shown, resp, .. } = self.get_with(&url, &headers, &mut attempts)?;
        let end = body::End::Bounded {
            end: offset + length,
            whole,
        };
        let status = resp.status().as_u16();
        if matches!(status, 200 | 206) {
            let answered = payload::response_validator(&resp);
            let range = payload::content_range(&resp).and_then(Result::ok);
            let judged =
                body::judge_resume(status, range, offset, end, if_range, answered.as_deref());
            if judged == body::ResumeAnswer::Changed {
                return Err(FetchError::Changed {
                    location: shown,
                    at: offset,
                    validator: if_range.unwrap_or_default().to_string(),
                    range_end: Some(offset + length),
                });
            }
        }
        match (status, whole) {
            (206, _) => {}
            (200, WholeAnswer::HeadDropped) => {
                // From byte 0: read up to the range's end, no further.
                let body = payload::body_reader(self, resp, offset + length, &shown);
                let mut net =
                    body::Resuming::new(self, &url, &shown, offset, end, Some(body), attempts);
                net.if_range(if_range.map(str::to_string));
                net.drop_head();
                return Ok(RangeReader(RangeSrc::Http(Box::new(net))));
            }
            (200, WholeAnswer::Refused) => {
                return Err(FetchError::RangeIgnored {
                    location: shown,
                    detail: format!("HTTP 200 with the whole file to bytes={offset}-{last}"),
                })
            }
            (404 | 410, _) => {
                return Err(FetchError::NotFound {
                    location: shown,
                    status: Some(resp.status().as_u16()),
                })
            }
            (status, _) => {
                return Err(FetchError::HttpStatus {
                    location: shown,
                    status,
                    retry_after: retry_after(&resp),
                })
            }
        }
        let range = payload::content_range(&resp);
        if !matches!(range, Some(Ok((start, end, _))) if start == offset && end == last) {
            return Err(FetchError::RangeIgnored {
                location: shown,
                detail: match range {
                    Some(Ok((a, b, total))) => format!(
                        "asked for bytes {offset}-{last}, got bytes {a}-{b}/{}",
                        total.map_or("*".to_string(), |t| t.to_string())
                    ),
                    Some(Err(why)) => format!(
                        "asked for bytes {offset}-{last}, got an unusable Content-Range: {why}"
                    ),
                    None => format!("asked for bytes {offset}-{last}, got no Content-Range"),
                },
            });
        }
        let body = payload::body_reader(self, resp, length, &shown);
        // Paced, and resumed from where it stopped after a transient
        // failure (ended where a download window closes), of the same
        // object; never more than `length` bytes.
        let mut net = body::Resuming::new(self, &url, &shown, offset, end, Some(body), attempts);
        net.if_range(if_range.map(str::to_string));
        Ok(RangeReader(RangeSrc::Http(Box::new(net))))
    }
}

/// Whether a range request ([`Transport::open_range`]) takes an answer
/// with the whole resource (`200`: the server or a proxy ignores `Range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WholeAnswer {
    /// No: [`FetchError::RangeIgnored`], nothing read (a delta's segment:
    /// taking it would cost the whole file once per segment; the full
    /// payload is what such a server can serve).
    Refused,
    /// Yes: its bytes before the range are read and dropped in bounded
    /// reads, the range handed out, nothing after it read (a frame fetched
    /// once more: the file up to the frame crosses the link once).
    HeadDropped,
}

/// `[offset, offset + length)` of the local file `path`, for
/// [`Transport::open_range`]. Only a regular file or a block device can be
/// read again: a pipe's bytes were consumed (opening it again would wait
/// for a writer that may never come), so it is refused at once. It is
/// opened without blocking for the same reason (something else may have
/// been put at `path`), and with `if_range` (the payload's
/// [`PayloadReader::validator`]) it must still be the file first read.
fn local_range(
    location: &str,
    path: &Path,
    offset: u64,
    length: u64,
    if_range: Option<&str>,
) -> Result<ExactReader<io::Take<File>>, FetchError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let io_err = |e: io::Error| FetchError::Io {
        location: location.to_string(),
        detail: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let device = meta.file_type().is_block_device();
    if !meta.is_file() && !device {
        return Err(io_err(io::Error::other(
            "not a regular file or a block device: a frame cannot be read from it again (its bytes were consumed)",
        )));
    }
    if let Some(was) = if_range {
        let now = payload::file_identity(&meta);
        if now != was {
            return Err(io_err(io::Error::other(format!(
                "the file changed since its bytes were read ({was}; now {now}): nothing is taken from it, and the next run reads it again"
            ))));
        }
    }
    // A block device's length is where its end is (`st_size` is 0).
    let len = match device {
        true => io::Seek::seek(&mut file, io::SeekFrom::End(0)).map_err(io_err)?,
        false => meta.len(),
    };
    if offset.saturating_add(length) > len {
        return Err(FetchError::TooShort {
            location: location.to_string(),
            got: len.saturating_sub(offset),
            expected: length,
            announced: true,
        });
    }
    io::Seek::seek(&mut file, io::SeekFrom::Start(offset)).map_err(io_err)?;
    Ok(ExactReader::new(file.take(length), length, location))
}

/// The bytes of one range ([`Transport::open_range`]).
pub struct RangeReader(RangeSrc);

enum RangeSrc {
    /// An empty range: nothing asked.
    Empty,
    /// From a local path or `file://`.
    Local(ExactReader<io::Take<File>>),
    /// Over HTTP: paced, resumed after a transient failure.
    Http(Box<body::Resuming>),
}

impl RangeReader {
    /// Answers with the whole resource taken for the range (the server
    /// ignores `Range`), as `range_ignored` counts them.
    pub fn ranges_ignored(&self) -> u64 {
        match &self.0 {
            RangeSrc::Http(net) => net.ranges_ignored(),
            RangeSrc::Empty | RangeSrc::Local(_) => 0,
        }
    }

    /// Bytes that came over the link and were dropped (the head of whole
    /// answers): fetched all the same.
    pub fn bytes_dropped(&self) -> u64 {
        match &self.0 {
            RangeSrc::Http(net) => net.skipped(),
            RangeSrc::Empty | RangeSrc::Local(_) => 0,
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            RangeSrc::Empty => Ok(0),
            RangeSrc::Local(file) => file.read(buf),
            RangeSrc::Http(net) => net.read(buf),
        }
    }
}

/// A status worth another try (429, 5xx gateway and availability…) as the
/// error it is, so the retry logic sees it; `None` for any other status.
fn transient_status(reply: &Reply) -> Option<FetchError> {
    transient_status_of(&reply.shown, &reply.resp)
}

fn transient_status_of(shown: &str, resp: &Response<Body>) -> Option<FetchError> {
    let err = FetchError::HttpStatus {
        location: shown.to_string(),
        status: resp.status().as_u16(),
        retry_after: retry_after(resp),
    };
    err.is_transient().then_some(err)
}

/// Whether `host` (lower case) matches a `no_proxy` list: `*`, an exact
/// name or address, or a domain suffix (`example.net` and `.example.net`
/// both cover `a.example.net`).
fn no_proxy_matches(entries: &[String], host: &str) -> bool {
    entries.iter().any(|entry| {
        let entry = entry.trim_start_matches('.');
        entry == "*"
            || host == entry
            || host
                .strip_suffix(entry)
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

/// The response's `Content-Length`, when it has a usable one.
fn content_length(resp: &Response<Body>) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The body's length as announced: its `Content-Length` when no
/// `Transfer-Encoding` overrides it (RFC 9112, 6.3). Only such a body's end
/// can be read without waiting on the link, which hands a keep-alive
/// connection back to the pool (a range's end, a redirect's body).
fn announced_length(resp: &Response<Body>) -> Option<u64> {
    if resp.headers().contains_key("transfer-encoding") {
        return None;
    }
    content_length(resp)
}

/// How errors name a request: its URL, and where redirects led, for a
/// person (see [`redact`]).
fn describe_chain(chain: &[String]) -> String {
    let text = match chain {
        [only] => only.clone(),
        [first, .., last] => format!("{first} (redirected to {last})"),
        [] => String::new(),
    };
    redact(&text).into_owned()
}

/// A usable (non-redirect) answer.
struct Reply {
    /// The request as errors name it (redirects included, no user info).
    shown: String,
    /// The URL that answered (the last redirect's target).
    url: String,
    resp: Response<Body>,
}

/// The `Retry-After` of a response, as a wait from now: delta-seconds or an
/// HTTP date (IMF-fixdate, the form RFC 9110 says senders use; the obsolete
/// forms are ignored). A date in the past means "now".
fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let value = resp.headers().get("retry-after")?.to_str().ok()?.trim();
    // Delay-seconds too large for a number is a very long wait, not none
    // (found from outside: the run went on retrying at once).
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(Duration::from_secs(
        u64::try_from(at.saturating_sub(crate::timefmt::now())).unwrap_or(0),
    ))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` as Unix seconds.
fn http_date(value: &str) -> Option<i64> {
    let (_, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    crate::timefmt::parse_rfc3339(&format!("{year}-{month:02}-{day}T{time}Z")).ok()
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn read_local_document(
    location: &str,
    path: &std::path::Path,
    limit: u64,
) -> Result<Document, FetchError> {
    let io_err = |e: io::Error| FetchError::Io {
        location: location.to_string(),
        detail: e.to_string(),
    };
    // A release's documents are regular files (`files`): a FIFO there does
    // not hold the open, and it or a device is refused naming the path.
    let file = match crate::files::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Document::NotFound),
        Err(e) => return Err(io_err(e)),
    };
    let mut body = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(io_err)?;
    if body.len() as u64 > limit {
        return Err(FetchError::TooLong {
            location: location.to_string(),
            limit,
            announced: None,
        });
    }
    Ok(Document::Fetched {
        body,
        validators: Validators::default(),
        url: location.to_string(),
    })
}

/// Turns an early end of a length-bounded source into a clear error.
struct ExactReader<R> {
    inner: R,
    expected: u64,
    got: u64,
    location: String,
}

impl<R> ExactReader<R> {
    fn new(inner: R, expected: u64, location: &str) -> Self {
        ExactReader {
            inner,
            expected,
            got: 0,
            location: location.to_string(),
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.got += n as u64;
        if n == 0 && !buf.is_empty() && self.got < self.expected {
            return Err(FetchError::TooShort {
                location: self.location.clone(),
                got: self.got,
                expected: self.expected,
                announced: false,
            }
            .into_io());
        }
        Ok(n)
    }
}

/// Wraps a response body: fails the read when the time spent blocked in
/// reads adds up to `window` while fewer than [`MIN_PROGRESS_BYTES`] arrived.
/// Time the caller spends between reads (writing a slot, hashing) does not
/// count: only a slow source can trip it.
pub(crate) struct StallGuard<R> {
    inner: R,
    window: Duration,
    waited: Duration,
    got: u64,
    location: String,
    /// The body comes in chunks: a read past its last byte may read an
    /// endless trailer inside the HTTP library, past every bound of ours
    /// (see [`body::Resuming::has_surplus`]).
    pub(crate) chunked: bool,
    /// The body's length was announced ([`announced_length`]):
    /// past it the HTTP library answers the end without waiting on the
    /// link (see [`body::Resuming::end_of_range`]).
    pub(crate) sized: bool,
}

impl<R: Read> StallGuard<R> {
    pub(crate) fn new(inner: R, window: Duration, location: &str) -> Self {
        StallGuard {
            inner,
            window,
            waited: Duration::ZERO,
            got: 0,
            location: location.to_string(),
            chunked: false,
            sized: false,
        }
    }

    /// Forget the progress so far (a new response, or after local replay).
    pub(crate) fn reset(&mut self) {
        self.waited = Duration::ZERO;
        self.got = 0;
    }
}

impl<R: Read> Read for StallGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        let n = self.inner.read(buf)?;
        self.waited += started.elapsed();
        self.got += n as u64;
        if self.waited >= self.window {
            if self.got < MIN_PROGRESS_BYTES && n != 0 {
                return Err(FetchError::Timeout {
                    location: self.location.clone(),
                    detail: format!(
                        "stalled: {} bytes in {} (fewer than {MIN_PROGRESS_BYTES})",
                        self.got,
                        fmt_secs(self.waited)
                    ),
                }
                .into_io());
            }
            self.reset();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
