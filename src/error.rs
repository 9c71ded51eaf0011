//! The program's error: one variant per layer, each carrying that layer's
//! error, whose message already names the file, URL, device or key. The
//! variant decides the exit code; [`Kind`] gives a label few enough to be a
//! metric dimension. Every message is shown through
//! [`crate::fetch::redact`] (no URL's user info reaches a person) and
//! [`one_line`] (a newline or an escape sequence in a file name or a
//! server's answer is shown escaped: an error is one line, and outside
//! text never forges another or drives the terminal).
//!
//! Invariant: every failure has exactly one [`Kind`], and the kinds' names
//! ([`Kind::as_str`]) are a stable contract: the `kind` of a `--json`
//! error, the `error_kind` of a webhook report, the `kind` label of
//! `abupdate_failures_total`, and what `abupdate fleet` counts against a
//! release.

use std::fmt;

/// What failed, as a stable label (README "Error kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The command line.
    Usage,
    /// The configuration.
    Config,
    /// Another instance holds the state lock (or a release directory's).
    Locked,
    /// `state.json` or the state dir cannot be read or written.
    State,
    /// `state.json` was damaged and a good copy (or a fresh state) stood in.
    StateCorrupt,
    /// The manifest's signatures, or a key.
    Signature,
    /// The manifest's shape (malformed, a duplicate key, an empty image).
    Manifest,
    /// The manifest is for other hardware.
    Incompatible,
    /// The manifest or channel states another track than the host follows.
    OtherTrack,
    /// The release is not newer than the booted one.
    NotNewer,
    /// The manifest has expired.
    Expired,
    /// The release already failed on this host.
    PreviouslyFailed,
    /// The manifest is dated further ahead than the host may believe.
    CreatedAhead,
    /// The manifest (or channel) is behind one already verified from its
    /// source: older, or the same `created` with other bytes.
    Stale,
    /// An image class the slot has no partition for.
    UnknownClass,
    /// A payload window above `update.max_window_log`.
    WindowTooLarge,
    /// Connect, DNS, reset, timeout, a stalled or cut body.
    Network,
    /// An HTTP status we cannot use.
    HttpStatus,
    /// HTTP 404/410 or no such file.
    NotFound,
    /// More bytes than the signed manifest declares.
    TooLong,
    /// The server announced fewer bytes than declared.
    TooShort,
    /// The TLS handshake or certificate.
    Tls,
    /// A server that ignored a `Range` request.
    RangeIgnored,
    /// Against policy (a `file:` reference from a remote manifest, a
    /// redirect loop, a trial still pending, a rollback onto a bad slot…).
    Refused,
    /// A slot device that may not or cannot take the image.
    Slot,
    /// A slot device's I/O, or a medium returning other bytes.
    Device,
    /// A file of this host.
    Io,
    /// A payload that does not decode.
    Payload,
    /// A payload or image SHA-256 differs from the signed one.
    HashMismatch,
    /// An image of another size, or a window larger than allowed.
    Size,
    /// The bootloader env or backend.
    Bootloader,
    /// Writing a release directory (`pack`, `fleet`).
    Publish,
    /// A trial's health checks failed (a rollback's kind).
    Health,
    /// A trial that never came up (the bootloader fell back).
    TrialNeverBooted,
    /// A committed release failed its probation while the old slot was
    /// not usable (marked bad, being written, unbootable): kept running,
    /// with nothing to fall back to.
    NoFallback,
    /// The host's own facts (which slot is booted) or its reboot command.
    System,
    /// `pack`'s inputs or work.
    Pack,
    /// `fleet`'s source (the reports, or Prometheus: unreachable, an error, no series) or plan.
    Fleet,
    /// An install hook refused or failed (`[hooks]`).
    Hook,
    /// The site's reboot lock was not granted (`[reboot] fleetlock`).
    #[serde(rename = "fleetlock")]
    FleetLock,
}

impl Kind {
    /// The command itself was refused before anything was tried: its
    /// input, the host's policy, or another instance holding the lock. An
    /// operator's `install` refused so is no failed run of this host: it
    /// counts no failure and delays no timer run (found from outside, stop
    /// 58: a typo'd `install` of an older release put the timer into
    /// backoff).
    pub fn refuses_the_command(self) -> bool {
        matches!(
            self,
            Kind::Usage
                | Kind::Config
                | Kind::Locked
                | Kind::NotNewer
                | Kind::PreviouslyFailed
                | Kind::Refused
        )
    }

    /// Every kind, for tests and documentation.
    pub const ALL: [Kind; 40] = [
        Kind::Usage,
        Kind::Config,
        Kind::Locked,
        Kind::State,
        Kind::StateCorrupt,
        Kind::Signature,
        Kind::Manifest,
        Kind::Incompatible,
        Kind::OtherTrack,
        Kind::NotNewer,
        Kind::Expired,
        Kind::PreviouslyFailed,
        Kind::CreatedAhead,
        Kind::Stale,
        Kind::UnknownClass,
        Kind::WindowTooLarge,
        Kind::Network,
        Kind::HttpStatus,
        Kind::NotFound,
        Kind::TooLong,
        Kind::TooShort,
        Kind::Tls,
        Kind::RangeIgnored,
        Kind::Refused,
        Kind::Slot,
        Kind::Device,
        Kind::Io,
        Kind::Payload,
        Kind::HashMismatch,
        Kind::Size,
        Kind::Bootloader,
        Kind::Publish,
        Kind::Health,
        Kind::TrialNeverBooted,
        Kind::NoFallback,
        Kind::System,
        Kind::Pack,
        Kind::Fleet,
        Kind::Hook,
        Kind::FleetLock,
    ];

    /// The label: the same string serde writes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Config => "config",
            Kind::Locked => "locked",
            Kind::State => "state",
            Kind::StateCorrupt => "state_corrupt",
            Kind::Signature => "signature",
            Kind::Manifest => "manifest",
            Kind::Incompatible => "incompatible",
            Kind::OtherTrack => "other_track",
            Kind::NotNewer => "not_newer",
            Kind::Expired => "expired",
            Kind::PreviouslyFailed => "previously_failed",
            Kind::CreatedAhead => "created_ahead",
            Kind::Stale => "stale",
            Kind::UnknownClass => "unknown_class",
            Kind::WindowTooLarge => "window_too_large",
            Kind::Network => "network",
            Kind::HttpStatus => "http_status",
            Kind::NotFound => "not_found",
            Kind::TooLong => "too_long",
            Kind::TooShort => "too_short",
            Kind::Tls => "tls",
            Kind::RangeIgnored => "range_ignored",
            Kind::Refused => "refused",
            Kind::Slot => "slot",
            Kind::Device => "device",
            Kind::Io => "io",
            Kind::Payload => "payload",
            Kind::HashMismatch => "hash_mismatch",
            Kind::Size => "size",
            Kind::Bootloader => "bootloader",
            Kind::Publish => "publish",
            Kind::Health => "health",
            Kind::TrialNeverBooted => "trial_never_booted",
            Kind::NoFallback => "no_fallback",
            Kind::System => "system",
            Kind::Pack => "pack",
            Kind::Fleet => "fleet",
            Kind::Hook => "hook",
            Kind::FleetLock => "fleetlock",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `assert_eq!(e.kind(), "network")`: a kind is its label.
impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Kind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// The program's error, one variant per layer.
#[derive(Debug)]
pub enum Error {
    /// The command line.
    Usage(String),
    /// The configuration files.
    Config(crate::config::ConfigError),
    /// `state.json`, the state dir and its lock.
    State(crate::state::StateError),
    /// Keys and signatures.
    Trust(crate::trust::TrustError),
    /// Getting bytes from a URL or file.
    Fetch(crate::fetch::FetchError),
    /// A manifest that does not parse or is malformed.
    Manifest(crate::manifest::ManifestError),
    /// A verified manifest this host does not act on.
    NotApplicable(crate::manifest::NotApplicable),
    /// A release channel that is malformed, out of its time, or binds
    /// another manifest.
    Channel(crate::channel::ChannelError),
    /// A slot device.
    Slot(crate::slot::SlotError),
    /// Writing an image into a slot.
    Install(crate::install::InstallError),
    /// The bootloader.
    Boot(crate::boot::BootError),
    /// A release directory (`pack`, `fleet`).
    Publish(crate::publish::PublishError),
    /// An install hook refused or failed (`[hooks]`).
    Hook(crate::hooks::HookError),
    /// The site's reboot lock (`[reboot] fleetlock`).
    FleetLock(crate::fleetlock::FleetLockError),
    /// The host's facts and its reboot command.
    System(crate::system::SystemError),
    /// An agent flow refused to act on this host's state.
    Refused(crate::agent::Refusal),
    /// `pack`: its message names the option or file.
    Pack(String),
    /// `fleet`: its message names the reports file, the Prometheus URL or the manifest.
    Fleet(String),
    /// Any other file.
    Io {
        /// The file, as shown.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            Error::Usage(m) | Error::Pack(m) | Error::Fleet(m) => m.clone(),
            Error::Config(e) => e.to_string(),
            Error::State(e) => e.to_string(),
            Error::Trust(e) => e.to_string(),
            Error::Fetch(e) => e.to_string(),
            Error::Manifest(e) => e.to_string(),
            Error::NotApplicable(e) => e.to_string(),
            Error::Channel(e) => e.to_string(),
            Error::Slot(e) => e.to_string(),
            Error::Install(e) => e.to_string(),
            Error::Boot(e) => e.to_string(),
            Error::Publish(e) => e.to_string(),
            Error::Hook(e) => e.to_string(),
            Error::FleetLock(e) => e.to_string(),
            Error::System(e) => e.to_string(),
            Error::Refused(e) => e.to_string(),
            Error::Io { path, source } => format!("{path}: {source}"),
        };
        f.write_str(&one_line(&crate::fetch::redact(&line)))
    }
}

impl std::error::Error for Error {}

/// `text` on one line, its control characters escaped (`\n`, `\r`, `\t`,
/// else `\u{1b}`) and so its bidirectional overrides (`\u{202e}`: it would
/// show what follows reversed) and line separators (`\u{2028}`): every
/// character [`crate::text::acts_on_screen`] names, for every message a
/// person or a log reads.
/// The last guard of every message; outside text is quoted where it comes
/// in ([`crate::text::show`]).
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let acts = crate::text::acts_on_screen;
    if !text.chars().any(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Error {
    /// 2 for usage and configuration errors, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            _ => 1,
        }
    }

    /// What failed, as a stable label.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) => Kind::Usage,
            Error::Config(_) => Kind::Config,
            Error::State(e) if e.is_without_the_lock() => Kind::Locked,
            Error::State(_) => Kind::State,
            Error::Trust(_) => Kind::Signature,
            Error::Fetch(e) => e.kind(),
            Error::Manifest(_) => Kind::Manifest,
            Error::NotApplicable(e) => e.kind(),
            Error::Channel(e) => e.kind(),
            Error::Slot(_) => Kind::Slot,
            Error::Install(e) => e.kind(),
            Error::Boot(_) => Kind::Bootloader,
            Error::Publish(e) => e.kind(),
            Error::Hook(_) => Kind::Hook,
            Error::FleetLock(_) => Kind::FleetLock,
            Error::System(_) => Kind::System,
            Error::Refused(_) => Kind::Refused,
            Error::Pack(_) => Kind::Pack,
            Error::Fleet(_) => Kind::Fleet,
            Error::Io { .. } => Kind::Io,
        }
    }

    /// An error about the file at `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

macro_rules! from_layer {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Error { Error::$variant(e) }
        })*
    };
}

from_layer!(
    Config(crate::config::ConfigError),
    State(crate::state::StateError),
    Trust(crate::trust::TrustError),
    Fetch(crate::fetch::FetchError),
    Manifest(crate::manifest::ManifestError),
    NotApplicable(crate::manifest::NotApplicable),
    Channel(crate::channel::ChannelError),
    Slot(crate::slot::SlotError),
    Boot(crate::boot::BootError),
    Publish(crate::publish::PublishError),
    Hook(crate::hooks::HookError),
    FleetLock(crate::fleetlock::FleetLockError),
    System(crate::system::SystemError),
    Refused(crate::agent::Refusal),
);

impl From<crate::install::InstallError> for Error {
    /// A transport failure while streaming a payload is a fetch error (its
    /// kind says `network`, `http_status`…, not `payload`), and a failed
    /// `before_write` is that step's own error.
    fn from(e: crate::install::InstallError) -> Error {
        use crate::install::InstallError as E;
        match e {
            E::Source { what, error } => match crate::fetch::FetchError::from_io(&error).cloned() {
                Some(fetch) => Error::Fetch(fetch),
                None => Error::Install(E::Source { what, error }),
            },
            E::BeforeWrite(e) => *e,
            e => Error::Install(e),
        }
    }
}

/// The program's result.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_serializes_as_its_label_and_labels_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for k in Kind::ALL {
            assert_eq!(
                serde_json::to_value(k).expect("json"),
                serde_json::Value::String(k.as_str().into())
            );
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert_eq!(k, k.as_str());
        }
    }

    #[test]
    fn an_error_is_one_line_whatever_bytes_outside_text_brings() {
        // A file name with a newline; a server's answer forging a line and
        // hiding the rest of the terminal's.
        let e = Error::Io {
            path: "rel/x\nabupdate: installed 9.9".into(),
            source: std::io::Error::other("bad\r\x1b[8m"),
        };
        assert_eq!(
            e.to_string(),
            "rel/x\\nabupdate: installed 9.9: bad\\r\\u{1b}[8m"
        );
        assert_eq!(one_line("plain: text"), "plain: text");
    }

    /// A bidi override in a message (a server's text not quoted where it
    /// came in) would show the rest of the line reversed: escaped too.
    #[test]
    fn a_bidi_override_in_a_message_is_escaped() {
        let e = Error::Io {
            path: "evil\u{202e}txt.exe".into(),
            source: std::io::Error::other("\u{2066}x\u{2069}"),
        };
        assert_eq!(e.to_string(), "evil\\u{202e}txt.exe: \\u{2066}x\\u{2069}");
        // And a Unicode line separator: one message stays one line.
        assert_eq!(one_line("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
    }
}
