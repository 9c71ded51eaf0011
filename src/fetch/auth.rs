//! Credentials for a private update server: headers from a root-only file
//! (`[update] headers_file`, e.g. a bearer token) and a TLS client
//! certificate (`client_cert`, `client_key`: mTLS).
//!
//! Invariants this module keeps:
//! - Credentials go only to the configured origin and mirror: a request
//!   carries the headers, and its TLS handshake offers the client
//!   certificate, only when its scheme, host and port are those of
//!   `[update] url` or `[update] mirror` ([`Credentials::applies_to`]).
//!   Redirects are followed by hand and checked hop by hop, so a redirect
//!   to another host or port (a CDN, a presigning front) gets neither.
//! - A secret is never shown: not in errors (a bad line is named by its
//!   number, never its value), not in logs, not in `Debug`.
//! - A file holding a secret is refused unless only its owner, the user
//!   abupdate runs as (root), can read or write it; it is checked on the
//!   opened file, so a swap between check and read changes nothing.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ureq::http::{HeaderName, HeaderValue};
use ureq::tls::{ClientCert, PemItem};

use super::location::{origin_of, Origin};

/// A headers file or key larger than this is not one.
const MAX_SECRET_FILE: u64 = 64 << 10;

/// Headers the transport sets itself: a file may not override them.
const RESERVED: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "range",
    "if-none-match",
    "if-modified-since",
    "accept-encoding",
    "user-agent",
    "proxy-authorization",
];

/// Where the credentials come from (`[update]` keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFiles {
    /// `[update] headers_file`: root-only `Name: value` lines.
    pub headers_file: Option<PathBuf>,
    /// `[update] client_cert`: the certificate chain (PEM).
    pub client_cert: Option<PathBuf>,
    /// `[update] client_key`: its private key (PEM, root-only).
    pub client_key: Option<PathBuf>,
}

impl CredentialFiles {
    /// Whether no credential file is configured.
    pub fn is_empty(&self) -> bool {
        self.headers_file.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }
}

/// Loaded credentials and where they may go.
#[derive(Clone)]
pub struct Credentials {
    headers: Vec<(HeaderName, HeaderValue)>,
    client_cert: Option<ClientCert>,
    origins: Vec<Origin>,
}

impl fmt::Debug for Credentials {
    /// Names only: values and keys stay out of every log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("client_cert", &self.client_cert.is_some())
            .field("origins", &self.origins)
            .finish()
    }
}

impl Credentials {
    /// Whether a request to `url` carries the credentials.
    pub fn applies_to(&self, url: &str) -> bool {
        origin_of(url).is_some_and(|o| self.origins.contains(&o))
    }

    /// The headers, for a request that [`Credentials::applies_to`].
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The client certificate, for a request that [`Credentials::applies_to`].
    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.client_cert.as_ref()
    }

    /// Load `files` for the servers at `allowed` (the configured origin and
    /// mirror URLs). `Ok(None)` when no credential is configured. The error
    /// is one line naming the file (and line), never a secret.
    pub fn load(files: &CredentialFiles, allowed: &[&str]) -> Result<Option<Credentials>, String> {
        if files.is_empty() {
            return Ok(None);
        }
        let headers = match &files.headers_file {
            Some(path) => parse_headers(path, &read_secret(path)?)?,
            None => Vec::new(),
        };
        let client_cert = match (&files.client_cert, &files.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(load_client_cert(cert, key)?),
            (Some(_), None) => {
                return Err("update.client_cert is set without update.client_key".into())
            }
            (None, Some(_)) => {
                return Err("update.client_key is set without update.client_cert".into())
            }
        };
        let origins: Vec<Origin> = allowed.iter().filter_map(|u| origin_of(u)).collect();
        if origins.is_empty() {
            return Err(
                "update.headers_file / update.client_cert: no http(s) update.url or update.mirror to send them to"
                    .into(),
            );
        }
        Ok(Some(Credentials {
            headers,
            client_cert,
            origins,
        }))
    }
}

/// The bytes of a root-only file: a regular file that only its owner, the
/// user we run as, may read or write.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{name}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name}: not a regular file"));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{name}: holds credentials but is open to group or others (mode {mode:04o}); make it root-only (chmod 600)"
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{name}: holds credentials but is owned by uid {}, not by uid {me} that abupdate runs as",
            meta.uid()
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "{name}: larger than {MAX_SECRET_FILE} bytes; not a credentials file"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(bytes)
}

/// `Name: value` lines (blank lines and `#` comments skipped). Values are
/// bytes, as HTTP allows (visible ASCII, space, tab, obs-text), never
/// decoded and never echoed in an error.
pub fn parse_headers(path: &Path, bytes: &[u8]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let name = path.display();
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!("{name}:{n}: expected \"Name: value\""));
        };
        let header = HeaderName::from_bytes(line[..colon].trim_ascii()).map_err(|_| {
            format!("{name}:{n}: not a header name (letters, digits and !#$%&'*+-.^_`|~)")
        })?;
        if RESERVED.contains(&header.as_str()) {
            return Err(format!(
                "{name}:{n}: {} is set by abupdate itself and cannot come from this file",
                header.as_str()
            ));
        }
        let value = line[colon + 1..].trim_ascii();
        let value = HeaderValue::from_bytes(value).map_err(|_| {
            format!(
                "{name}:{n}: the value of {} holds a control character",
                header.as_str()
            )
        })?;
        out.push((header, value));
    }
    if out.is_empty() {
        return Err(format!("{name}: no header in it"));
    }
    Ok(out)
}

/// The certificate chain (`cert`, PEM) and its private key (`key`, PEM,
/// root-only).
fn load_client_cert(cert: &Path, key: &Path) -> Result<ClientCert, String> {
    let pem = crate::files::read_capped(cert, super::MAX_PEM_BYTES)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let mut chain = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => chain.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: bad PEM: {e}", cert.display())),
        }
    }
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let secret = read_secret(key)?;
    let mut private = None;
    for item in ureq::tls::parse_pem(&secret) {
        match item {
            Ok(PemItem::PrivateKey(k)) if private.is_none() => private = Some(k),
            Ok(_) => {}
            // Not echoed: the text is a key.
            Err(_) => return Err(format!("{}: bad PEM", key.display())),
        }
    }
    let private = private.ok_or_else(|| format!("{}: no private key in it", key.display()))?;
    Ok(ClientCert::new_with_certs(&chain, private))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn dir(tag: &str) -> TempDir {
        TempDir::new(&format!("auth-{tag}"))
    }

    fn write_mode(path: &Path, text: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn header_lines_are_read_as_bytes_and_bad_ones_named_by_number_only() {
        let p = Path::new("/etc/abupdate/headers");
        let h = parse_headers(
            p,
            b"# token\n\nAuthorization: Bearer s3cr\xe9t\r\nX-Site:  store-17 \n",
        )
        .expect("headers");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0.as_str(), "authorization");
        assert_eq!(h[0].1.as_bytes(), b"Bearer s3cr\xe9t");
        assert_eq!(h[1].1.as_bytes(), b"store-17");
        for (text, needle) in [
            (&b"Authorization Bearer s3cret\n"[..], "headers:1: expected"),
            (b"\nBad Name: s3cret\n", "headers:2: not a header name"),
            (b"Range: bytes=0-\n", "range is set by abupdate"),
            (
                b"X-Token: s3cret\x01\n",
                "headers:1: the value of x-token holds a control",
            ),
            (b"# nothing\n", "no header in it"),
        ] {
            let e = parse_headers(p, text).expect_err(needle);
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("s3cret"), "a secret in {e}");
        }
    }

    #[test]
    fn a_secret_file_open_to_group_or_others_is_refused_in_one_line() {
        let d = dir("mode");
        let f = d.join("headers");
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            write_mode(&f, b"Authorization: Bearer s3cret\n", mode);
            let e = read_secret(&f).expect_err("open file accepted");
            assert!(
                e.starts_with(&format!("{}: ", f.display()))
                    && e.contains(&format!("{mode:04o}"))
                    && !e.contains('\n'),
                "{e}"
            );
        }
        write_mode(&f, b"Authorization: Bearer s3cret\n", 0o600);
        assert!(read_secret(&f).is_ok());
        let link = d.join("link");
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert!(read_secret(&link).is_err(), "a symlink was followed");
    }

    #[test]
    fn credentials_go_only_to_the_configured_origins() {
        let d = dir("origins");
        let f = d.join("headers");
        write_mode(&f, b"Authorization: Bearer s3cret\n", 0o600);
        let files = CredentialFiles {
            headers_file: Some(f),
            ..Default::default()
        };
        let c = Credentials::load(
            &files,
            &[
                "https://updates.example.net/edge/release.json",
                "http://site-cache:8080/edge",
            ],
        )
        .expect("load")
        .expect("some");
        assert!(c.applies_to("https://updates.example.net/edge/rootfs.img"));
        assert!(c.applies_to("https://UPDATES.example.net.:443/other"));
        assert!(c.applies_to("http://site-cache:8080/x"));
        assert!(
            !c.applies_to("https://updates.example.net:8443/x"),
            "other port"
        );
        assert!(
            !c.applies_to("http://updates.example.net/x"),
            "other scheme"
        );
        assert!(!c.applies_to("https://cdn.example.net/x"), "other host");
        assert!(!c.applies_to("https://updates.example.net.evil.org/x"));
        assert!(!c.applies_to("/var/lib/x"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credentials::load(&CredentialFiles::default(), &[])
            .expect("nothing configured")
            .is_none());
        let e = Credentials::load(&files, &["/media/usb/release.json"]).expect_err("no origin");
        assert!(e.contains("no http(s) update.url"), "{e}");
    }
}
