//! Slot names and slot devices.
//!
//! Invariant: the booted slot's devices are never opened for writing, and
//! neither is any device that is mounted.

use std::fmt;
use std::str::FromStr;

/// One of the two system copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotName {
    A,
    B,
}

impl SlotName {
    /// The slot that is not `self`.
    pub fn other(self) -> SlotName {
        match self {
            SlotName::A => SlotName::B,
            SlotName::B => SlotName::A,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "A",
            SlotName::B => "B",
        }
    }

    pub const ALL: [SlotName; 2] = [SlotName::A, SlotName::B];
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SlotName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" | "a" => Ok(SlotName::A),
            "B" | "b" => Ok(SlotName::B),
            _ => Err(format!("unknown slot {s:?} (expected A or B)")),
        }
    }
}
