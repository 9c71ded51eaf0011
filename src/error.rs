//! The program's error: one variant per layer, each carrying that layer's
//! error, whose message already names the file, URL, device or key. The
//! variant decides the exit code; `kind` gives a label few enough to be a
//! metric dimension. Every message is shown through
//! [`crate::fetch::redact`]: no URL's user info reaches a person.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    Usage(String),
    Config(crate::config::ConfigError),
    State(crate::state::StateError),
    Trust(crate::trust::TrustError),
    Fetch(crate::fetch::FetchError),
    Manifest(crate::manifest::ManifestError),
    NotApplicable(crate::manifest::NotApplicable),
    Slot(crate::slot::SlotError),
    Install(crate::install::InstallError),
    Boot(crate::boot::BootError),
    Publish(crate::publish::PublishError),
    Hook(crate::hooks::HookError),
    FleetLock(crate::fleetlock::FleetLockError),
    Health(String),
    Refused(String),
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            Error::Usage(m) | Error::Health(m) | Error::Refused(m) => m.clone(),
            Error::Config(e) => e.to_string(),
            Error::State(e) => e.to_string(),
            Error::Trust(e) => e.to_string(),
            Error::Fetch(e) => e.to_string(),
            Error::Manifest(e) => e.to_string(),
            Error::NotApplicable(e) => e.to_string(),
            Error::Slot(e) => e.to_string(),
            Error::Install(e) => e.to_string(),
            Error::Boot(e) => e.to_string(),
            Error::Publish(e) => e.to_string(),
            Error::Hook(e) => e.to_string(),
            Error::FleetLock(e) => e.to_string(),
            Error::Io { path, source } => format!("{path}: {source}"),
        };
        f.write_str(&crate::fetch::redact(&line))
    }
}

impl std::error::Error for Error {}

impl Error {
    /// 2 for usage and configuration errors, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            _ => 1,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Config(_) => "config",
            Error::State(crate::state::StateError::Locked { .. }) => "locked",
            Error::State(_) => "state",
            Error::Trust(_) => "signature",
            Error::Fetch(e) => e.kind(),
            Error::Manifest(_) => "manifest",
            Error::NotApplicable(e) => e.kind(),
            Error::Slot(_) => "slot",
            Error::Install(e) => e.kind(),
            Error::Boot(_) => "bootloader",
            Error::Publish(e) => e.kind(),
            Error::Hook(_) => "hook",
            Error::FleetLock(_) => "fleetlock",
            Error::Health(_) => "health",
            Error::Refused(_) => "refused",
            Error::Io { .. } => "io",
        }
    }

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
    Slot(crate::slot::SlotError),
    Boot(crate::boot::BootError),
    Publish(crate::publish::PublishError),
    Hook(crate::hooks::HookError),
    FleetLock(crate::fleetlock::FleetLockError),
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

pub type Result<T> = std::result::Result<T, Error>;
