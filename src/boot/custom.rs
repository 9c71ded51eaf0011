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
//! Output is bytes, taken with surrounding ASCII white space stripped, as
//! RAUC does; only an answer that is exactly one of the allowed words counts
//! (a script's stray bytes after `get-current`'s first line are ignored, as
//! RAUC ignores them, never a reason to fail). A non-zero exit, a death by
//! signal, a verb that runs longer than [`SCRIPT_TIMEOUT`], or an unexpected
//! answer is a `BootError::Script` naming the verb (with its arguments) and
//! giving the last line of the script's stderr, escaped and bounded
//! ([`crate::child::quote_line`]). Each verb runs through
//! [`crate::child`]: bounded in time and output, and whatever it leaves
//! running is killed when it exits.
//!
//! `activate` is `set-state SLOT good` then `set-primary SLOT`, RAUC's
//! order: a power cut between the two leaves the slot good but not primary,
//! which boots the old slot. Whether each verb is atomic is the script's
//! business.

use super::{show, BootError, BootState, Bootloader};
use crate::child::Ending;
use crate::slot::SlotName;
use std::path::PathBuf;
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
    fn run(&self, words: &[&str]) -> Result<Vec<u8>, BootError> {
        // Run as root and trusted with the boot order: only when nobody
        // else could have replaced it (the rule hooks and checks follow).
        let mut cmd = crate::safe_path::command(&self.script).map_err(|why| {
            self.error(
                words,
                format!(
                    "cannot run {}: {why}",
                    show(self.script.as_os_str().as_encoded_bytes())
                ),
            )
        })?;
        cmd.args(words);
        let done =
            crate::child::run(cmd, self.timeout).map_err(|e| self.error(words, e.to_string()))?;
        if !done.ending.success() {
            let status = match done.ending {
                Ending::Signalled(_) => "killed by a signal".to_string(),
                other => other.to_string(),
            };
            // The last line, as hooks and health checks quote a child:
            // what a failing script says last is what failed.
            let line = done.stderr.last_line();
            return Err(self.error(
                words,
                if line.is_empty() {
                    status
                } else {
                    format!("{status}: {line}")
                },
            ));
        }
        // Every answer the interface allows is a word: output that did not
        // fit what we keep is no answer.
        done.stdout.complete().ok_or_else(|| {
            self.error(
                words,
                format!("printed {} bytes, not an answer", done.stdout.total()),
            )
        })
    }

    fn slot_answer(&self, words: &[&str], answer: &[u8]) -> Result<SlotName, BootError> {
        match answer {
            b"A" => Ok(SlotName::A),
            b"B" => Ok(SlotName::B),
            other => Err(self.error(
                words,
                format!("printed \"{}\", expected a slot name (A or B)", show(other)),
            )),
        }
    }
}

/// A script's answer: its output with surrounding ASCII white space
/// stripped (`g_strstrip`), or only its first line (`get-current`).
fn answer(out: &[u8], first_line: bool) -> &[u8] {
    let out = if first_line {
        out.split(|&b| b == b'\n').next().unwrap_or(b"")
    } else {
        out
    };
    out.trim_ascii()
}

impl Bootloader for CustomBackend {
    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        let words = ["get-primary"];
        let out = self.run(&words)?;
        self.slot_answer(&words, answer(&out, false)).map(Some)
    }

    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        let words = ["get-state", slot.as_str()];
        let out = self.run(&words)?;
        match answer(&out, false) {
            b"good" => Ok(BootState::Good),
            b"bad" => Ok(BootState::Bad),
            other => Err(self.error(
                &words,
                format!("printed \"{}\", expected \"good\" or \"bad\"", show(other)),
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
        self.slot_answer(&words, answer(&out, true)).map(Some)
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
