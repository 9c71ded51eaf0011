//! abupdate: keeps an edge host's A/B system slots up to date from signed,
//! immutable images.
//!
//! The crate is a library with a thin binary on top, so that tests and the
//! fleet simulation call the same decision functions the host runs. Each
//! module guards one concern; their docs state the invariant they keep.

pub mod agent;
pub mod boot;
pub mod child;
pub mod cli;
pub mod config;
pub mod delta;
pub mod error;
pub mod failpoint;
pub mod fetch;
pub mod fleet;
pub mod fleetlock;
pub mod health;
pub mod hooks;
pub mod install;
pub mod manifest;
pub mod pack;
pub mod progress;
pub mod publish;
pub mod report;
pub mod rollout;
pub mod schedule;
pub mod slot;
pub mod state;
pub mod system;
pub mod timefmt;
pub mod trust;
