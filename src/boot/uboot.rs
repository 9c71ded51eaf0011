//! U-Boot backend: RAUC's U-Boot environment variables.
//!
//! Invariant: every change is ONE write of the U-Boot environment (see
//! `ubootenv`: with a redundant env, the copy U-Boot does not use), so
//! U-Boot sees either the whole old or the whole new state. RAUC needs two
//! `fw_setenv` calls to activate a slot; we change `BOOT_ORDER` and the
//! counter together.
//!
//! Variables, with RAUC's meaning so a board prepared for RAUC boots
//! unchanged with `scripts/uboot/boot.cmd` or RAUC's own script:
//!
//! - `BOOT_ORDER`: slots in boot order, `"A B"` when unset or empty (the
//!   script's `test -n` default).
//! - `BOOT_X_LEFT`: boot attempts left for X, hexadecimal as U-Boot's
//!   `setexpr` writes it (`"3"`, `"a"` for ten); `3` when unset or empty
//!   (the script's default). Read as RAUC reads it
//!   (`g_ascii_strtoull(s, NULL, 16)`: optional `0x`, stops at the first
//!   non-hex digit, nothing parsed = 0), so `"10"` means sixteen, as it does
//!   to `setexpr`. A leading `-` reads as 0, as the script's
//!   `test 0x${BOOT_X_LEFT} -gt 0` sees it.
//!
//! The script boots the first slot in `BOOT_ORDER` with attempts left and
//! takes one; when none has any, it resets both counters to 3 and restarts,
//! so it then boots the first slot in `BOOT_ORDER`. `primary` reports that.
//!
//! Attempts written, as RAUC's U-Boot backend: activating a slot (a trial)
//! gives it `tries` (RAUC's `boot-attempts-primary`); marking a slot good
//! (the commit, and the re-bless on every healthy boot) gives it
//! `good_tries`, 3 unless configured (RAUC's `boot-attempts`), so one
//! interrupted boot of a committed slot does not fall back to the older one.
//!
//! Only these three variables are parsed, from their bytes; every other
//! variable is written back byte for byte (see `ubootenv`).

use super::ubootenv::{self, UbootEnv, UbootEnvConfig};
use super::{join_words, show, words, BootError, BootState, Bootloader};
use crate::slot::SlotName;
use std::path::PathBuf;

/// RAUC's default attempts (`UBOOT_DEFAULT_ATTEMPTS`), also the script's
/// default and reset value.
pub const DEFAULT_TRIES: u32 = 3;
const DEFAULT_ORDER: &str = "A B";

/// Bootloader backend over the environment `fw_env.config` describes.
#[derive(Clone, Debug)]
pub struct UbootBackend {
    config: UbootEnvConfig,
    tries: u32,
    good_tries: u32,
}

impl UbootBackend {
    /// Reads and parses `fw_env_config` (errors name it). `tries` is the
    /// attempts a slot gets when activated (its trial); 0 means RAUC's
    /// default, 3. A slot marked good gets `DEFAULT_TRIES` unless
    /// `with_good_tries` says otherwise.
    pub fn new(fw_env_config: PathBuf, tries: u32) -> Result<UbootBackend, BootError> {
        let config = UbootEnvConfig::load(&fw_env_config)?;
        Ok(UbootBackend {
            config,
            tries: if tries == 0 { DEFAULT_TRIES } else { tries },
            good_tries: DEFAULT_TRIES,
        })
    }

    /// The attempts a slot gets when marked good (committed or
    /// re-blessed); 0 means RAUC's default, 3.
    pub fn with_good_tries(mut self, good_tries: u32) -> UbootBackend {
        self.good_tries = if good_tries == 0 {
            DEFAULT_TRIES
        } else {
            good_tries
        };
        self
    }

    /// The parsed `fw_env.config`.
    pub fn config(&self) -> &UbootEnvConfig {
        &self.config
    }

    fn change(&self, f: impl FnOnce(&mut UbootEnv) -> Result<(), String>) -> Result<(), BootError> {
        let source = self.config.source().to_string();
        ubootenv::update(&self.config, |env| {
            f(env).map_err(|reason| BootError::Format {
                path: source,
                reason,
            })
        })
        .map(|_| ())
    }

    fn format_err(&self, reason: String) -> BootError {
        BootError::Format {
            path: self.config.source().to_string(),
            reason,
        }
    }

    /// Mark good or bad, in memory.
    fn apply_state(
        &self,
        env: &mut UbootEnv,
        slot: SlotName,
        state: BootState,
    ) -> Result<(), String> {
        match state {
            BootState::Good => {
                env.set(left_var(slot), format!("{:x}", self.good_tries))?;
                // RAUC only resets the counter; a slot that an earlier
                // mark-bad removed from BOOT_ORDER would stay unbootable, so
                // put it back, last.
                let mut words = order(env);
                if !words.iter().any(|w| w == slot.as_str().as_bytes()) {
                    words.push(slot.as_str().as_bytes().to_vec());
                    set_order(env, &words)?;
                }
                Ok(())
            }
            BootState::Bad => {
                let mut words = order(env);
                words.retain(|w| w != slot.as_str().as_bytes());
                set_order(env, &words)?;
                env.set(left_var(slot), "0")
            }
        }
    }

    /// Activate, in memory: the trial's attempts, first in `BOOT_ORDER`.
    fn apply_activate(&self, env: &mut UbootEnv, slot: SlotName) -> Result<(), String> {
        env.set(left_var(slot), format!("{:x}", self.tries))?;
        let mut words = vec![slot.as_str().as_bytes().to_vec()];
        for w in order(env) {
            if !words.contains(&w) {
                words.push(w);
            }
        }
        set_order(env, &words)
    }
}

fn left_var(slot: SlotName) -> String {
    format!("BOOT_{slot}_LEFT")
}

/// The words of `BOOT_ORDER`, with the script's default; each word's bytes
/// are kept (a word that is not `A` or `B` stays in place).
fn order(env: &UbootEnv) -> Vec<Vec<u8>> {
    let v = match env.get("BOOT_ORDER") {
        Some(v) if !v.is_empty() => v,
        _ => DEFAULT_ORDER.as_bytes(),
    };
    words(v).map(<[u8]>::to_vec).collect()
}

fn order_slots(env: &UbootEnv) -> Vec<SlotName> {
    order(env)
        .iter()
        .filter_map(|w| match w.as_slice() {
            b"A" => Some(SlotName::A),
            b"B" => Some(SlotName::B),
            _ => None,
        })
        .collect()
}

fn set_order(env: &mut UbootEnv, words: &[Vec<u8>]) -> Result<(), String> {
    if words.is_empty() {
        // An empty value is how fw_setenv deletes a variable; drop it
        // rather than store "BOOT_ORDER=". The script then uses "A B".
        env.remove("BOOT_ORDER");
        Ok(())
    } else {
        env.set("BOOT_ORDER", join_words(words))
    }
}

/// Attempts left for `slot`.
fn left(env: &UbootEnv, slot: SlotName) -> u64 {
    match env.get(left_var(slot)) {
        None | Some(b"") => DEFAULT_TRIES as u64,
        Some(v) => rauc_hex(v),
    }
}

/// Whether a slot with `left` attempts had a boot no one blessed: neither
/// what an activation (`tries`) nor a mark good (`good_tries`) wrote.
fn tried(left: u64, tries: u32, good_tries: u32) -> bool {
    left != u64::from(tries) && left != u64::from(good_tries)
}

/// `g_ascii_strtoull(s, NULL, 16)` as RAUC reads the counters, except that
/// a sign reads as 0 (see the module docs).
pub(crate) fn rauc_hex(s: &[u8]) -> u64 {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .unwrap_or(s.len());
    let s = &s[start..];
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let s = s
        .strip_prefix(b"0x")
        .or_else(|| s.strip_prefix(b"0X"))
        .unwrap_or(s);
    let mut v: u64 = 0;
    for &c in s {
        match (c as char).to_digit(16) {
            Some(d) => v = v.saturating_mul(16).saturating_add(d as u64),
            None => break,
        }
    }
    v
}

impl Bootloader for UbootBackend {
    fn env_stores(&self) -> Vec<super::EnvStore> {
        self.config.stores()
    }

    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        let env = ubootenv::read(&self.config)?;
        let slots = order_slots(&env);
        let with_tries = slots.iter().copied().find(|&s| left(&env, s) > 0);
        Ok(with_tries.or_else(|| slots.first().copied()))
    }

    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        let env = ubootenv::read(&self.config)?;
        let good = order_slots(&env).contains(&slot) && left(&env, slot) > 0;
        Ok(if good {
            BootState::Good
        } else {
            BootState::Bad
        })
    }

    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError> {
        self.change(|env| self.apply_state(env, slot, state))
    }

    fn activate(&self, slot: SlotName) -> Result<(), BootError> {
        self.change(|env| self.apply_activate(env, slot))
    }

    /// The script takes one attempt on every boot: a slot whose attempts
    /// are neither what an activation (`tries`) nor a mark good
    /// (`good_tries`) wrote had a boot no one blessed.
    fn tried(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        let env = ubootenv::read(&self.config)?;
        Ok(Some(tried(left(&env, slot), self.tries, self.good_tries)))
    }

    /// Out of `BOOT_ORDER`: only a mark bad takes a slot out (the script
    /// takes attempts, and `BOOT_X_LEFT=0` is also a trial's last attempt
    /// taken, so the counter says nothing here).
    fn marked_bad(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        let env = ubootenv::read(&self.config)?;
        Ok(Some(!order_slots(&env).contains(&slot)))
    }

    fn check_activate(&self, slot: SlotName) -> Result<(), BootError> {
        ubootenv::plan(&self.config, |env| {
            self.apply_state(env, slot, BootState::Bad)
                .and_then(|()| self.apply_activate(env, slot))
                .map_err(|reason| self.format_err(reason))
        })
        .map(|_| ())
        .map_err(|e| match e {
            BootError::Format { path, reason } => BootError::Format {
                path,
                reason: format!("activating slot {slot} would fail: {reason}"),
            },
            other => other,
        })
    }

    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        let env = ubootenv::read(&self.config)?;
        let names = ["BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT"];
        Ok(names
            .iter()
            .filter_map(|n| env.get(n).map(|v| (n.to_string(), show(v))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{rauc_hex, tried};

    #[test]
    fn a_slot_is_tried_once_the_script_took_an_attempt_no_one_gave_back() {
        // Activated (5) or marked good (3), not booted since: not tried.
        assert!(!tried(5, 5, 3));
        assert!(!tried(3, 5, 3));
        // Booted: the script took one.
        assert!(tried(4, 5, 3));
        assert!(tried(2, 5, 3));
        assert!(tried(0, 3, 3));
    }

    #[test]
    fn counters_read_as_rauc_does() {
        assert_eq!(rauc_hex(b"3"), 3);
        assert_eq!(rauc_hex(b"0"), 0);
        assert_eq!(rauc_hex(b"a"), 10);
        assert_eq!(rauc_hex(b"10"), 16);
        assert_eq!(rauc_hex(b"0x3"), 3);
        assert_eq!(rauc_hex(b" 2"), 2);
        assert_eq!(rauc_hex(b"2z"), 2);
        assert_eq!(rauc_hex(b"zz"), 0);
        assert_eq!(rauc_hex(b"-1"), 0);
        assert_eq!(rauc_hex(b"2\xff"), 2);
        assert_eq!(rauc_hex(b"\xff"), 0);
    }
}
