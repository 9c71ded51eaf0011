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

use super::ubootenv::{self, UbootEnv, UbootEnvConfig};
use super::{BootError, BootState, Bootloader};
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
}

impl UbootBackend {
    /// Reads and parses `fw_env_config` (errors name it). `tries` is the
    /// attempts a slot gets when marked good or activated; 0 means RAUC's
    /// default, 3.
    pub fn new(fw_env_config: PathBuf, tries: u32) -> Result<UbootBackend, BootError> {
        let config = UbootEnvConfig::load(&fw_env_config)?;
        Ok(UbootBackend {
            config,
            tries: if tries == 0 { DEFAULT_TRIES } else { tries },
        })
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

    fn reset_counter(&self, env: &mut UbootEnv, slot: SlotName) -> Result<(), String> {
        env.set(&left_var(slot), &format!("{:x}", self.tries))
    }
}

fn left_var(slot: SlotName) -> String {
    format!("BOOT_{slot}_LEFT")
}

/// The words of `BOOT_ORDER`, with the script's default.
fn order(env: &UbootEnv) -> Vec<String> {
    let v = match env.get("BOOT_ORDER") {
        Some(v) if !v.is_empty() => v,
        _ => DEFAULT_ORDER,
    };
    v.split_whitespace().map(str::to_string).collect()
}

fn order_slots(env: &UbootEnv) -> Vec<SlotName> {
    order(env)
        .iter()
        .filter_map(|w| match w.as_str() {
            "A" => Some(SlotName::A),
            "B" => Some(SlotName::B),
            _ => None,
        })
        .collect()
}

fn set_order(env: &mut UbootEnv, words: &[String]) -> Result<(), String> {
    if words.is_empty() {
        // An empty value is how fw_setenv deletes a variable; drop it
        // rather than store "BOOT_ORDER=". The script then uses "A B".
        env.remove("BOOT_ORDER");
        Ok(())
    } else {
        env.set("BOOT_ORDER", &words.join(" "))
    }
}

/// Attempts left for `slot`.
fn left(env: &UbootEnv, slot: SlotName) -> u64 {
    match env.get(&left_var(slot)) {
        None | Some("") => DEFAULT_TRIES as u64,
        Some(v) => rauc_hex(v),
    }
}

/// `g_ascii_strtoull(s, NULL, 16)` as RAUC reads the counters, except that
/// a sign reads as 0 (see the module docs).
pub(crate) fn rauc_hex(s: &str) -> u64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let s = s.strip_prefix('+').unwrap_or(s);
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let mut v: u64 = 0;
    for c in s.chars() {
        match c.to_digit(16) {
            Some(d) => v = v.saturating_mul(16).saturating_add(d as u64),
            None => break,
        }
    }
    v
}

impl Bootloader for UbootBackend {
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
        self.change(|env| match state {
            BootState::Good => {
                self.reset_counter(env, slot)?;
                // RAUC only resets the counter; a slot that an earlier
                // mark-bad removed from BOOT_ORDER would stay unbootable, so
                // put it back, last.
                let mut words = order(env);
                if !words.iter().any(|w| w == slot.as_str()) {
                    words.push(slot.to_string());
                    set_order(env, &words)?;
                }
                Ok(())
            }
            BootState::Bad => {
                let mut words = order(env);
                words.retain(|w| w != slot.as_str());
                set_order(env, &words)?;
                env.set(&left_var(slot), "0")
            }
        })
    }

    fn activate(&self, slot: SlotName) -> Result<(), BootError> {
        self.change(|env| {
            self.reset_counter(env, slot)?;
            let mut words = vec![slot.to_string()];
            for w in order(env) {
                if !words.contains(&w) {
                    words.push(w);
                }
            }
            set_order(env, &words)
        })
    }

    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        let env = ubootenv::read(&self.config)?;
        let names = ["BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT"];
        Ok(names
            .iter()
            .filter_map(|n| env.get(n).map(|v| (n.to_string(), v.to_string())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::rauc_hex;

    #[test]
    fn counters_read_as_rauc_does() {
        assert_eq!(rauc_hex("3"), 3);
        assert_eq!(rauc_hex("0"), 0);
        assert_eq!(rauc_hex("a"), 10);
        assert_eq!(rauc_hex("10"), 16);
        assert_eq!(rauc_hex("0x3"), 3);
        assert_eq!(rauc_hex(" 2"), 2);
        assert_eq!(rauc_hex("2z"), 2);
        assert_eq!(rauc_hex("zz"), 0);
        assert_eq!(rauc_hex("-1"), 0);
    }
}
