//! Trust: which bytes may be believed.
//!
//! Invariant: nothing from a release is acted upon before its manifest has
//! valid signatures from `threshold` distinct trusted keys.

pub mod minisign;
