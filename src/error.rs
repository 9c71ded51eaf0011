//! The program's error: one variant per layer, each carrying that layer's
//! error, whose message already names the file, URL, device or key. The
//! variant decides the exit code; `kind` gives a label few enough to be a
//! metric dimension.

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
    Health(String),
    Refused(String),
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Health(m) | Error::Refused(m) => f.write_str(m),
            Error::Config(e) => e.fmt(f),
            Error::State(e) => e.fmt(f),
            Error::Trust(e) => e.fmt(f),
            Error::Fetch(e) => e.fmt(f),
            Error::Manifest(e) => e.fmt(f),
            Error::NotApplicable(e) => e.fmt(f),
            Error::Slot(e) => e.fmt(f),
            Error::Install(e) => e.fmt(f),
            Error::Boot(e) => e.fmt(f),
            Error::Publish(e) => e.fmt(f),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
        }
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
    Install(crate::install::InstallError),
    Boot(crate::boot::BootError),
    Publish(crate::publish::PublishError),
);

pub type Result<T> = std::result::Result<T, Error>;
