//! Custom backend: an executable that speaks RAUC's custom bootloader
//! interface.
//!
//! Invariant: the script alone owns the bootloader state; we only call its
//! verbs and trust nothing it prints that is not exactly one of the answers
//! RAUC's interface allows. Verbs (as RAUC's `src/bootloaders/custom.c`
//! calls them; slot names are the bootnames `A` and `B`):
//!
//! - `SCRIPT get-primary`          prints the primary slot
//! - `SCRIPT set-primary SLOT`
//! - `SCRIPT get-state SLOT`       prints `good` or `bad`
//! - `SCRIPT set-state SLOT good|bad`
//! - `SCRIPT get-current`          prints the booted slot (first line)
//!
//! Output is taken with surrounding whitespace stripped, as RAUC does. A
//! non-zero exit, a death by signal, a verb that runs longer than
//! [`SCRIPT_TIMEOUT`], or an unexpected answer is a `BootError::Script`
//! naming the verb (with its arguments) and giving the first line of the
//! script's stderr. Each verb runs through [`crate::child`]: bounded in time
//! and output, and whatever it leaves running is killed when it exits.
//!
//! `activate` is `set-state SLOT good` then `set-primary SLOT`, RAUC's
//! order: a power cut between the two leaves the slot good but not primary,
//! which boots the old slot. Whether each verb is atomic is the script's
//! business.

use super::{BootError, BootState, Bootloader};
use crate::child::Ending;
use crate::slot::SlotName;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Longest a verb may run. A bootloader env write on slow flash takes
/// seconds; a verb still running after this is hung, and is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bootloader backend that delegates to a RAUC-style custom script.
#[derive(Clone, Debug)]
pub struct CustomBackend {
    script: PathBuf,
    timeout: Duration,
}

impl CustomBackend {
    /// `script`: the executable to run (not run until first used).
    pub fn new(script: PathBuf) -> CustomBackend {
        CustomBackend::with_timeout(script, SCRIPT_TIMEOUT)
    }

    /// The same, with another limit per verb (tests).
    pub fn with_timeout(script: PathBuf, timeout: Duration) -> CustomBackend {
        CustomBackend { script, timeout }
    }

    fn error(&self, words: &[&str], reason: String) -> BootError {
        BootError::Script {
            script: self.script.display().to_string(),
            verb: words.join(" "),
            reason,
        }
    }

    /// Run one verb; its stdout on success.
    fn run(&self, words: &[&str]) -> Result<String, BootError> {
        let mut cmd = Command::new(&self.script);
        cmd.args(words);
        let done =
            crate::child::run(cmd, self.timeout).map_err(|e| self.error(words, e.to_string()))?;
        if !done.ending.success() {
            let status = match done.ending {
                Ending::Signalled(_) => "killed by a signal".to_string(),
                other => other.to_string(),
            };
            let first = done.stderr.first_line();
            return Err(self.error(
                words,
                if first.is_empty() {
                    status
                } else {
                    format!("{status}: {first}")
                },
            ));
        }
        // Every answer the interface allows is a word: output that did not
        // fit what we keep is no answer.
        let out = done.stdout.complete().ok_or_else(|| {
            self.error(
                words,
                format!("printed {} bytes, not an answer", done.stdout.total()),
            )
        })?;
        String::from_utf8(out).map_err(|_| self.error(words, "output is not UTF-8".into()))
    }

    fn slot_answer(&self, words: &[&str], answer: &str) -> Result<SlotName, BootError> {
        match answer {
            "A" => Ok(SlotName::A),
            "B" => Ok(SlotName::B),
            other => Err(self.error(
                words,
                format!("printed {other:?}, expected a slot name (A or B)"),
            )),
        }
    }
}

impl Bootloader for CustomBackend {
    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        let words = ["get-primary"];
        let out = self.run(&words)?;
        self.slot_answer(&words, out.trim()).map(Some)
    }

    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        let words = ["get-state", slot.as_str()];
        let out = self.run(&words)?;
        match out.trim() {
            "good" => Ok(BootState::Good),
            "bad" => Ok(BootState::Bad),
            other => Err(self.error(
                &words,
                format!("printed {other:?}, expected \"good\" or \"bad\""),
            )),
        }
    }

    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError> {
        let s = state.to_string();
        self.run(&["set-state", slot.as_str(), &s]).map(|_| ())
    }

    fn activate(&self, slot: SlotName) -> Result<(), BootError> {
        self.set_state(slot, BootState::Good)?;
        self.run(&["set-primary", slot.as_str()]).map(|_| ())
    }

    fn booted(&self) -> Result<Option<SlotName>, BootError> {
        let words = ["get-current"];
        let out = self.run(&words)?;
        // RAUC reads the first line only.
        let first = out.lines().next().unwrap_or("").trim();
        self.slot_answer(&words, first).map(Some)
    }

    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        let mut v = Vec::new();
        if let Some(p) = self.primary()? {
            v.push(("primary".to_string(), p.to_string()));
        }
        for slot in SlotName::ALL {
            v.push((format!("{slot}.state"), self.state(slot)?.to_string()));
        }
        Ok(v)
    }
}
