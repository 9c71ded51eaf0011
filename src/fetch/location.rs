//! Locations: what a string names (an http(s) URL, a `file:` URL, or a bare
//! local path), RFC 3986 reference resolution, the policy of which
//! references a manifest may make, every URL built from another one, and
//! how a URL is shown to a person.
//!
//! Invariants this module keeps:
//! - A URL derived from another is built on its components, never by
//!   pasting text onto the whole string: a signature's URL appends to the
//!   manifest URL's *path* and keeps its query (a CDN token reaches the
//!   signature too); a relative image reference resolves per RFC 3986
//!   section 5.2 (its own query kept, the manifest's not inherited); the
//!   mirror takes the origin URL's path and query onto the mirror's scheme,
//!   host and path prefix; a fragment is never sent.
//! - Credentials in a URL never reach a person: user info
//!   (`user:password@`) and a presigned URL's signature or token parameter
//!   (`X-Amz-Signature=…`). [`redact`] is the one renderer for URLs (and for
//!   text that may contain them) in errors, logs, JSON and reports.
//!
//! Written by hand rather than with the `url` crate: that crate (with its
//! IDNA tables) adds 184 KB to the static host binary, most of the headroom
//! under its 3 MiB budget, for the few operations the updater needs. Only
//! that subset is supported, and anything outside it is refused rather than
//! guessed at.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::FetchError;

/// What a location string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loc {
    /// An `http://` or `https://` URL, scheme lower-cased, fragment removed.
    Http(String),
    /// A local file, from a bare path or a `file:` URL.
    File(PathBuf),
}

/// The URI scheme of `s`, lower-cased, if it starts with one (RFC 3986:
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
pub(crate) fn scheme_of(s: &str) -> Option<String> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some(scheme.to_ascii_lowercase())
}

/// Classify a location: http(s) URL, `file:` URL, or (no scheme) a local path.
pub(crate) fn parse_location(location: &str) -> Result<Loc, FetchError> {
    if location.is_empty() {
        return Err(refused(location, "empty location"));
    }
    match scheme_of(location).as_deref() {
        None => Ok(Loc::File(PathBuf::from(location))),
        Some("http") | Some("https") => {
            let url = normalize_scheme(strip_fragment(location));
            let parts = split_url(&url);
            // Such a character ends a URL inside a message: past it,
            // [`redact`] would show the rest of a password as text.
            if parts
                .authority
                .is_some_and(|a| a.chars().any(ends_a_url_in_text))
            {
                return Err(refused(
                    &redact_url(location),
                    "white space, a control character or one of \"<>`{}|\\^ in the URL's host or user info (percent-encode it)",
                ));
            }
            if parts.authority.map(host_of).unwrap_or("").is_empty() {
                return Err(refused(location, "URL has no host"));
            }
            Ok(Loc::Http(url))
        }
        Some("file") => file_url_to_path(location).map(Loc::File),
        Some(other) => Err(refused(
            location,
            &format!("scheme {other}: is not supported (only http, https, file)"),
        )),
    }
}

/// A character RFC 3986 never allows raw in a URL and that [`redact`] takes
/// for the end of one inside a message.
fn ends_a_url_in_text(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '"' | '<' | '>' | '`' | '{' | '}' | '|' | '\\' | '^')
}

/// `file:///p`, `file://localhost/p` and `file:/p` name the local path `/p`
/// (percent-decoded). A file URL naming another host, or a relative path, is
/// refused: there is no way to read it that the author could have meant.
fn file_url_to_path(url: &str) -> Result<PathBuf, FetchError> {
    // Scheme is 4 ASCII letters plus ':'.
    let rest = &url[5..];
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = if let Some(after) = rest.strip_prefix("//") {
        let slash = after.find('/').unwrap_or(after.len());
        let host = &after[..slash];
        if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
            return Err(refused(url, "file URL names a remote host"));
        }
        &after[slash..]
    } else {
        rest
    };
    if !path.starts_with('/') {
        return Err(refused(url, "file URL must have an absolute path"));
    }
    let bytes = percent_decode(path).ok_or_else(|| refused(url, "bad %-escape in file URL"))?;
    if bytes.contains(&0) {
        return Err(refused(url, "NUL in file URL"));
    }
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// A `file://` URL naming `path` (absolute) byte for byte: every byte but
/// an unreserved one or `/` escaped, `%` included, so that
/// [`file_url_to_path`] gives back exactly these bytes. For a local path
/// that is not UTF-8 text: a location is text.
pub fn file_url_of(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Escape what may not appear raw in a URL (space, controls, non-ASCII, and
/// the few ASCII characters RFC 3986 excludes), so that a release engineer can
/// name a file `rootfs 2026.img` and still get a valid request line. Existing
/// `%` escapes and reserved characters are kept: they already mean something.
fn percent_encode_loose(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &byte in s.as_bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&byte);
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn strip_fragment(s: &str) -> &str {
    s.split('#').next().unwrap_or("")
}

fn normalize_scheme(url: &str) -> String {
    match url.find(':') {
        Some(i) => format!("{}{}", url[..i].to_ascii_lowercase(), &url[i..]),
        None => url.to_string(),
    }
}

/// The pieces of an absolute URL (`scheme://authority/path?query`).
pub(crate) struct UrlParts<'a> {
    pub scheme: &'a str,
    pub authority: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

pub(crate) fn split_url(url: &str) -> UrlParts<'_> {
    let url = strip_fragment(url);
    let (scheme, rest) = url.split_once(':').unwrap_or(("", url));
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    UrlParts {
        scheme,
        authority,
        path,
        query,
    }
}

/// The host of an authority (`user@host:port`, `[::1]:80`), without brackets.
pub(crate) fn host_of(authority: &str) -> &str {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    hostport.split(':').next().unwrap_or("")
}

/// RFC 3986 section 5.2.4.
pub(crate) fn remove_dot_segments(path: &str) -> String {
    let mut input: &str = path;
    let mut output = String::with_capacity(path.len());
    let pop = |out: &mut String| {
        let cut = out.rfind('/').unwrap_or(0);
        out.truncate(cut);
    };
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop(&mut output);
        } else if input == "/.." {
            input = "/";
            pop(&mut output);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// Resolve `reference` against the absolute URL `base` (RFC 3986 section 5.2),
/// with normal URL semantics: used for redirects and, after the policy checks
/// in [`resolve`], for image references. The fragment is dropped: it is never
/// sent to a server.
pub(crate) fn url_join(base: &str, reference: &str) -> String {
    let reference = percent_encode_loose(strip_fragment(reference));
    if let Some(scheme) = scheme_of(&reference) {
        let parts = split_url(&reference);
        let path = remove_dot_segments(parts.path);
        return assemble(&scheme, parts.authority, &path, parts.query);
    }
    let b = split_url(base);
    let r = split_url_relative(&reference);
    let (authority, path, query) = if let Some(auth) = r.authority {
        (Some(auth), remove_dot_segments(r.path), r.query)
    } else if r.path.is_empty() {
        (b.authority, b.path.to_string(), r.query.or(b.query))
    } else if r.path.starts_with('/') {
        (b.authority, remove_dot_segments(r.path), r.query)
    } else {
        let merged = if b.authority.is_some() && b.path.is_empty() {
            format!("/{}", r.path)
        } else {
            let dir = b.path.rfind('/').map_or("", |i| &b.path[..=i]);
            format!("{dir}{}", r.path)
        };
        (b.authority, remove_dot_segments(&merged), r.query)
    };
    assemble(&b.scheme.to_ascii_lowercase(), authority, &path, query)
}

fn split_url_relative(reference: &str) -> UrlParts<'_> {
    let (authority, rest) = match reference.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, reference),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    UrlParts {
        scheme: "",
        authority,
        path,
        query,
    }
}

fn assemble(scheme: &str, authority: Option<&str>, path: &str, query: Option<&str>) -> String {
    let mut out = format!("{}:", scheme.to_ascii_lowercase());
    if let Some(a) = authority {
        out.push_str("//");
        out.push_str(a);
    }
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Query parameters that carry a presigned URL's signature or session
/// token (AWS SigV4 and SigV2 / CloudFront, GCS V4, Azure SAS), or a
/// server's own bearer token or API key (`?token=`, `?access_token=`,
/// `?api_key=`, as private update servers and artifact stores take them):
/// whoever holds them can fetch the object, so they are credentials like
/// user info. Compared without regard to case.
const SECRET_QUERY_PARAMS: [&str; 12] = [
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
    "signature",
    "sig",
    "token",
    "access_token",
    "auth",
    "api_key",
    "apikey",
    "key",
    "password",
];

/// `text` with the user info of every URL in it (`scheme://user:pw@host`)
/// replaced by `***`, and the value of every presigned URL's signature or
/// token parameter (`SECRET_QUERY_PARAMS`) too: the one way a URL, or a
/// message naming one, is shown to a person. Credentials stay on the wire
/// (ureq sends user info as Basic authentication; the query as it is) and
/// out of logs, errors, JSON and webhook reports. What a person needs to
/// tell URLs apart stays: the path, the other parameters (a presigned URL's
/// date, expiry and key id).
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    match redact_user_info(text) {
        std::borrow::Cow::Borrowed(t) => redact_query_secrets(t),
        std::borrow::Cow::Owned(t) => {
            std::borrow::Cow::Owned(redact_query_secrets(&t).into_owned())
        }
    }
}

/// The values of [`SECRET_QUERY_PARAMS`] (a parameter right after `?` or
/// `&`) replaced by `***`; the value ends where the parameter, the URL or
/// the quoted text ends.
fn redact_query_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('=') {
        return std::borrow::Cow::Borrowed(text);
    }
    // ASCII lower-casing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b'?' | b'&') {
            let rest = &lower[i + 1..];
            let secret = SECRET_QUERY_PARAMS
                .iter()
                .find(|name| rest.strip_prefix(*name).is_some_and(|r| r.starts_with('=')));
            if let Some(name) = secret {
                let start = i + 1 + name.len() + 1;
                let end = secret_value_end(text, start);
                if end > start {
                    out.push_str(&text[copied..start]);
                    out.push_str("***");
                    copied = end;
                }
                i = end;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Where a query value starting at `start` ends inside a message: at the
/// next parameter, the fragment, the end of a quoted or bracketed URL,
/// white space, or a `: ` that goes on with the message (`URL: HTTP 403`).
fn secret_value_end(text: &str, start: usize) -> usize {
    let rest = &text[start..];
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let message_colon = c == ':' && chars.peek().is_none_or(|&(_, next)| next.is_whitespace());
        if message_colon
            // `'` and `)` are legal in a query (RFC 3986 sub-delims): a
            // value goes on through them, as the server reads it.
            || matches!(c, '&' | '#' | '"' | '<' | '>' | '`')
            || c.is_whitespace()
        {
            return start + i;
        }
    }
    text.len()
}

/// One URL, known to be one (a proxy or mirror setting, not a message), as
/// shown to a person: [`redact`], and its user info hidden up to the last
/// `@` before its path even when it holds white space or quotes, which end a
/// URL inside a message (a mistyped password is still a password).
pub fn redact_url(url: &str) -> String {
    let hidden = url.find("://").and_then(|i| {
        let after = &url[i + 3..];
        let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        authority
            .rfind('@')
            .map(|at| format!("{}***{}", &url[..i + 3], &after[at..]))
    });
    match hidden {
        Some(h) => redact(&h).into_owned(),
        None => redact(url).into_owned(),
    }
}

/// See [`redact`]: user info only.
fn redact_user_info(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        // The authority ends where the path, query or fragment starts, or
        // where the URL ends inside a message (white space, a character no
        // URL holds). Not at `'`: user info may hold it (RFC 3986
        // sub-delims), and the password after it is sent.
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The location of a file next to `location` whose name is `location`'s
/// with `suffix` appended (`release.json` → `release.json.minisig`). For a
/// URL the suffix goes onto the path: the query stays (a CDN token on the
/// manifest URL is needed for its signature too), the fragment goes.
pub fn sibling(location: &str, suffix: &str) -> Result<String, FetchError> {
    match scheme_of(location) {
        None => Ok(format!("{location}{suffix}")),
        Some(_) => {
            // Checked first: the same refusals as fetching it.
            parse_location(location)?;
            let url = normalize_scheme(strip_fragment(location));
            let parts = split_url(&url);
            let path = if parts.path.is_empty() {
                format!("/{suffix}")
            } else {
                format!("{}{suffix}", parts.path)
            };
            Ok(assemble(parts.scheme, parts.authority, &path, parts.query))
        }
    }
}

/// The placeholder of a `[update] signature_url` template: the signature
/// file's name (`release.json.minisig`, `release.json.1.minisig`, …).
pub const SIGNATURE_NAME_PLACEHOLDER: &str = "{name}";

/// Where signature file `suffix` (`.minisig`, `.1.minisig`, `.<tag>.minisig`)
/// of the manifest at `manifest` is fetched from.
///
/// - No `signature_url`: next to the manifest ([`sibling`]: its path plus
///   the suffix, its query kept: a CDN token on the manifest URL reaches
///   its signatures).
/// - A template holding `{name}`: the placeholder becomes the signature
///   file's name (the manifest URL's last path segment plus `suffix`), as
///   one path segment. For a front that serves every object under one rule
///   (a presigning gateway, another prefix or bucket).
/// - Any other URL is the standard signature's own (`release.json.minisig`,
///   e.g. a presigned URL: its query signs that object alone, so the
///   manifest's query cannot be reused). The other names (numbered, bound to
///   a manifest's bytes) have no URL then: `Ok(None)`.
pub fn signature_location(
    manifest: &str,
    suffix: &str,
    signature_url: Option<&str>,
) -> Result<Option<String>, FetchError> {
    let Some(given) = signature_url else {
        return sibling(manifest, suffix).map(Some);
    };
    if !given.contains(SIGNATURE_NAME_PLACEHOLDER) {
        return Ok((suffix == ".minisig").then(|| given.to_string()));
    }
    let name = format!("{}{suffix}", manifest_file_name(manifest));
    let location = given.replace(SIGNATURE_NAME_PLACEHOLDER, &percent_encode_segment(&name));
    parse_location(&location)?;
    Ok(Some(location))
}

/// The last path segment of a manifest location (`release.json`), as the
/// publisher named the file; `release.json` when the URL has no path.
fn manifest_file_name(manifest: &str) -> String {
    let path = match scheme_of(manifest) {
        Some(_) => split_url(manifest).path.to_string(),
        None => manifest.to_string(),
    };
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => "release.json".to_string(),
    }
}

/// `s` escaped to stay one path segment (`/`, `?`, `#` and what may not
/// appear raw are escaped; an existing `%XX` escape is kept as it is).
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &byte in s.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Why `signature_url` cannot serve as `[update] signature_url` with
/// `threshold` signatures needed: it must be a location (a template with
/// its placeholder filled in), and one exact URL names one file, the
/// standard signature, so a threshold above 1 needs a template.
pub fn check_signature_url(signature_url: &str, threshold: usize) -> Result<(), String> {
    let filled = signature_url.replace(SIGNATURE_NAME_PLACEHOLDER, "release.json.minisig");
    parse_location(&filled).map_err(|e| e.to_string())?;
    if threshold > 1 && !signature_url.contains(SIGNATURE_NAME_PLACEHOLDER) {
        return Err(format!(
            "{}: one URL names one signature file, and threshold {threshold} needs \
             {threshold}; give a template with {SIGNATURE_NAME_PLACEHOLDER} for the file name",
            redact(signature_url)
        ));
    }
    Ok(())
}

/// When a presigned URL stops being honoured (Unix seconds): AWS SigV4 and
/// GCS V4 (`X-Amz-Date`/`X-Goog-Date` plus `X-Amz-Expires`/`X-Goog-Expires`)
/// or SigV2 (`Expires`, next to a `Signature`). `None` for a URL that is not
/// presigned this way. An S3 store answers such a URL with 403 once it
/// expired: errors say when it did.
pub fn presigned_expiry(url: &str) -> Option<i64> {
    let query = split_url(url).query?;
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    };
    for (date, expires) in [
        ("X-Amz-Date", "X-Amz-Expires"),
        ("X-Goog-Date", "X-Goog-Expires"),
    ] {
        if let (Some(d), Some(e)) = (param(date), param(expires)) {
            return Some(amz_date(d)?.saturating_add(e.parse::<i64>().ok()?));
        }
    }
    match (param("Expires"), param("Signature")) {
        (Some(e), Some(_)) => e.parse().ok(),
        _ => None,
    }
}

/// SigV4's `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn amz_date(d: &str) -> Option<i64> {
    let b = d.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits =
        |r: std::ops::Range<usize>| d.get(r).filter(|s| s.bytes().all(|c| c.is_ascii_digit()));
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    crate::timefmt::parse_rfc3339(&rfc).ok()
}

/// Why `mirror` cannot serve as `[update] mirror`, if it cannot: it must be
/// an http(s) URL with a host and no query (the origin URL's query is the
/// one sent); a path is a prefix for the origin's paths.
pub fn check_mirror(mirror: &str) -> Result<(), String> {
    match parse_location(mirror) {
        Ok(Loc::Http(url)) if split_url(&url).query.is_some() => Err(format!(
            "{}: a mirror URL cannot have a query",
            redact_url(mirror)
        )),
        Ok(Loc::Http(_)) => Ok(()),
        Ok(Loc::File(_)) => Err(format!("{}: not an http(s) URL", redact_url(mirror))),
        Err(e) => Err(e.to_string()),
    }
}

/// `url` fetched through `mirror` (see [`check_mirror`]): the mirror's
/// scheme, user info and host, its path as a prefix, then the origin URL's
/// path and query. The origin's user info is not sent to the mirror (a
/// shared cache must not collect a host's credentials for another server).
/// Locations that are not http(s) URLs are returned as they are.
pub fn via_mirror(url: &str, mirror: &str) -> String {
    let (Ok(Loc::Http(origin)), Ok(Loc::Http(mirror))) =
        (parse_location(url), parse_location(mirror))
    else {
        return url.to_string();
    };
    let o = split_url(&origin);
    let m = split_url(&mirror);
    let path = format!(
        "{}{}",
        m.path.trim_end_matches('/'),
        if o.path.is_empty() { "/" } else { o.path }
    );
    assemble(m.scheme, m.authority, &path, o.query)
}

/// Where a request goes, as far as credentials are concerned: scheme,
/// host (lower case, no trailing dot) and port (the scheme's default when
/// none is written). Two URLs with the same origin reach the same server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The scheme, lowercase.
    pub scheme: String,
    /// The host, lowercase.
    pub host: String,
    /// The port, the scheme's default when none is given.
    pub port: u16,
}

/// The origin of an http(s) URL; `None` for anything else (a local file,
/// a URL without a host or with a port that is not a number).
pub fn origin_of(url: &str) -> Option<Origin> {
    let Ok(Loc::Http(url)) = parse_location(url) else {
        return None;
    };
    let parts = split_url(&url);
    let authority = parts.authority?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port_text = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(_, rest)| rest)?.strip_prefix(':'),
        None => hostport.split_once(':').map(|(_, p)| p),
    };
    let scheme = parts.scheme.to_ascii_lowercase();
    let port = match port_text {
        None | Some("") => {
            if scheme == "https" {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse().ok()?,
    };
    Some(Origin {
        host: host_of(authority)
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        scheme,
        port,
    })
}

/// `base` with `/suffix` appended to its path (`https://lock/base` +
/// `v1/pre-reboot` → `https://lock/base/v1/pre-reboot`), whatever slashes
/// `base` ends with; its query is dropped, its fragment never sent.
pub fn endpoint(base: &str, suffix: &str) -> Result<String, FetchError> {
    match parse_location(base)? {
        Loc::Http(url) => {
            let parts = split_url(&url);
            let path = format!(
                "{}/{}",
                parts.path.trim_end_matches('/'),
                suffix.trim_start_matches('/')
            );
            Ok(assemble(parts.scheme, parts.authority, &path, None))
        }
        Loc::File(_) => Err(refused(base, "not an http(s) URL")),
    }
}

/// Why `url` cannot be a service base URL (`[reboot] fleetlock`), if it
/// cannot: an http(s) URL with a host and no query.
pub fn check_service_url(url: &str) -> Result<(), String> {
    match parse_location(url) {
        Ok(Loc::Http(u)) if split_url(&u).query.is_some() => {
            Err(format!("{}: a base URL cannot have a query", redact(url)))
        }
        Ok(Loc::Http(_)) => Ok(()),
        Ok(Loc::File(_)) => Err(format!("{}: not an http(s) URL", redact(url))),
        Err(e) => Err(e.to_string()),
    }
}

fn refused(location: &str, reason: &str) -> FetchError {
    FetchError::Refused {
        location: redact(location).into_owned(),
        reason: redact(reason).into_owned(),
    }
}

/// See [`super::resolve`].
pub(crate) fn resolve(manifest_location: &str, reference: &str) -> Result<String, FetchError> {
    if reference.is_empty() {
        return Err(refused(manifest_location, "empty image reference"));
    }
    let base = parse_location(manifest_location)?;
    let base_is_remote = matches!(base, Loc::Http(_));
    match scheme_of(reference).as_deref() {
        Some("http") | Some("https") => {
            // Absolute http(s) is allowed from any manifest; normalise it the
            // same way a fetch would, so a bad one fails here, not later.
            return match parse_location(reference)? {
                Loc::Http(url) => Ok(url_join(&url, &url)),
                Loc::File(_) => Err(refused(reference, "not an http(s) URL")),
            };
        }
        Some("file") => {
            if base_is_remote {
                // A remote manifest must never make us read a local file
                // (think `file:///etc/shadow` fed to the installer).
                return Err(refused(
                    reference,
                    &format!("file: reference from remote manifest {manifest_location} refused"),
                ));
            }
            parse_location(reference)?;
            return Ok(reference.to_string());
        }
        Some(other) => {
            return Err(refused(
                reference,
                &format!("scheme {other}: is not supported (only http, https, file)"),
            ))
        }
        None => {}
    }
    match base {
        Loc::Http(url) => {
            if reference.starts_with('/') && !reference.starts_with("//") {
                // URL semantics would make this a path on the same host, but
                // it reads like a local absolute path; refusing it keeps the
                // rule simple: remote manifests name images relatively or by
                // full http(s) URL.
                return Err(refused(
                    reference,
                    &format!(
                        "absolute path from remote manifest {manifest_location} refused; \
                         use a relative reference or a full http(s) URL"
                    ),
                ));
            }
            let joined = url_join(&url, reference);
            match parse_location(&joined)? {
                Loc::Http(u) => Ok(u),
                Loc::File(_) => Err(refused(reference, "does not resolve to an http(s) URL")),
            }
        }
        Loc::File(_) if scheme_of(manifest_location).is_some() => {
            // A file: URL manifest: URL semantics, result stays a file: URL.
            let joined = url_join(&normalize_scheme(manifest_location), reference);
            parse_location(&joined)?;
            Ok(joined)
        }
        Loc::File(path) => {
            if reference.starts_with('/') {
                return Ok(reference.to_string());
            }
            let dir = path.parent().unwrap_or(Path::new(""));
            Ok(dir.join(reference).to_string_lossy().into_owned())
        }
    }
}
