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
//! non-zero exit, a death by signal, or an unexpected answer is a
//! `BootError::Script` naming the verb (with its arguments) and giving the
//! first line of the script's stderr.
//!
//! `activate` is `set-state SLOT good` then `set-primary SLOT`, RAUC's
//! order: a power cut between the two leaves the slot good but not primary,
//! which boots the old slot. Whether each verb is atomic is the script's
//! business.

use super::{BootError, BootState, Bootloader};
use crate::slot::SlotName;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Bootloader backend that delegates to a RAUC-style custom script.
#[derive(Clone, Debug)]
pub struct CustomBackend {
    script: PathBuf,
}

impl CustomBackend {
    /// `script`: the executable to run (not run until first used).
    pub fn new(script: PathBuf) -> CustomBackend {
        CustomBackend { script }
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
        let out = Command::new(&self.script)
            .args(words)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.error(words, format!("cannot run: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().map(str::trim).find(|l| !l.is_empty());
            let status = match out.status.code() {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            };
            return Err(self.error(
                words,
                match first {
                    Some(line) => format!("{status}: {line}"),
                    None => status,
                },
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| self.error(words, "output is not UTF-8".into()))
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
