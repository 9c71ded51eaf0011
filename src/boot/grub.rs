//! GRUB backend: RAUC's grubenv variables, written in place.
//!
//! Invariant: every change is ONE in-place write of the grubenv block (see
//! `grubenv`), so GRUB reads either the whole old or the whole new state, and
//! the variables keep RAUC's meaning, so a board prepared for RAUC's GRUB
//! script boots unchanged:
//!
//! - `ORDER`: the slots in boot order, e.g. `"A B"` (default `"A B"`).
//! - `X_OK`: `1` when slot X may be booted (default `0`).
//! - `X_TRY`: set to `1` by GRUB when it boots X; a slot with `X_TRY=1` is
//!   used up until userspace marks it good again (default `0`).
//! - `X_LEFT` (only with a try budget, `tries > 1`): attempts left; the GRUB
//!   script boots X while `X_LEFT` is not `0` and counts it down
//!   3→2→1→0 (string compares, no arithmetic), instead of using `X_TRY`.
//!
//! Our model of what GRUB does with them (what `primary` reports): it boots
//! the first slot in `ORDER` with `X_OK -eq 1` and, classic mode, `X_TRY -eq
//! 0`, or, budget mode, `X_LEFT` not `"0"` (an unset `X_LEFT` is not `"0"`);
//! when no slot is so, a new round (tries reset) boots the first OK slot of
//! `ORDER`, and with none OK the first of `ORDER`.
//! `-eq` is GRUB's `test`: numbers as `grub_strtoul(s, 0, 0)`, where a
//! non-number reads as 0, so `A_OK=yes` is not OK.
//!
//! Variables we do not own are kept, in order, byte for byte; ours are read
//! from their bytes as GRUB's script reads them (a value that is not UTF-8
//! is just a word that is not `A`/`B`, or a number that reads as 0).

use super::grubenv::{self, GrubEnv};
use super::{join_words, show, words, BootError, BootState, Bootloader};
use crate::slot::SlotName;
use std::path::PathBuf;

/// `ORDER` when the variable is unset, as in RAUC's `grub.conf`.
const DEFAULT_ORDER: &str = "A B";

/// Bootloader backend over a grubenv file.
#[derive(Clone, Debug)]
pub struct GrubBackend {
    grubenv: PathBuf,
    tries: u32,
}

impl GrubBackend {
    /// `grubenv`: the environment block GRUB loads. `tries`: with more than
    /// one, each slot gets a budget of that many boots (`X_LEFT`); with 0
    /// or 1 a slot is tried once (`X_TRY`), as RAUC does.
    pub fn new(grubenv: PathBuf, tries: u32) -> GrubBackend {
        GrubBackend { grubenv, tries }
    }

    fn budget(&self) -> bool {
        self.tries > 1
    }

    fn load(&self) -> Result<GrubEnv, BootError> {
        grubenv::read(&self.grubenv)
    }

    fn format_err(&self, reason: String) -> BootError {
        BootError::Format {
            path: self.grubenv.display().to_string(),
            reason,
        }
    }

    /// Read, change, write once.
    fn change(&self, f: impl FnOnce(&mut GrubEnv) -> Result<(), String>) -> Result<(), BootError> {
        let mut env = self.load()?;
        f(&mut env).map_err(|reason| self.format_err(reason))?;
        grubenv::write(&self.grubenv, &env)
    }

    fn used_up(&self, env: &GrubEnv, slot: SlotName) -> bool {
        if self.budget() {
            env.get(var(slot, "LEFT")) == Some(&b"0"[..])
        } else {
            grub_number(env.get(var(slot, "TRY")).unwrap_or(b"0")) != 0
        }
    }

    /// Mark good or bad, in memory.
    fn apply_state(
        &self,
        env: &mut GrubEnv,
        slot: SlotName,
        state: BootState,
    ) -> Result<(), String> {
        let (ok, left) = match state {
            BootState::Good => ("1", self.tries.to_string()),
            BootState::Bad => ("0", "0".to_string()),
        };
        env.set(var(slot, "OK"), ok)?;
        env.set(var(slot, "TRY"), "0")?;
        // A good slot GRUB never looks at is no fallback: one missing from
        // `ORDER` (edited by hand) goes last.
        if state == BootState::Good && !order_slots(env).contains(&slot) {
            let mut words = order(env);
            words.push(slot.as_str().as_bytes());
            let value = join_words(&words);
            env.set("ORDER", value)?;
        }
        if self.budget() {
            env.set(var(slot, "LEFT"), left)?;
        } else {
            // The shipped script counts a budget whenever `X_LEFT` is set:
            // one left from an earlier `tries` would decide instead of
            // `X_TRY` (a `0` there skips a slot we just made good).
            env.remove(var(slot, "LEFT"));
        }
        Ok(())
    }

    /// Activate, in memory: good, with a fresh try, first in `ORDER`; the
    /// other words of `ORDER` keep their order (and bytes).
    fn apply_activate(&self, env: &mut GrubEnv, slot: SlotName) -> Result<(), String> {
        self.apply_state(env, slot, BootState::Good)?;
        let other = slot.other();
        let mut new: Vec<&[u8]> = vec![slot.as_str().as_bytes()];
        let old = order(env);
        for w in &old {
            if !new.contains(w) {
                new.push(w);
            }
        }
        if !new.contains(&other.as_str().as_bytes()) {
            new.push(other.as_str().as_bytes());
        }
        let value = join_words(&new);
        env.set("ORDER", value)
    }
}

fn var(slot: SlotName, what: &str) -> String {
    format!("{slot}_{what}")
}

/// The words of `ORDER` (default when unset), split as GRUB's `for` does.
fn order(env: &GrubEnv) -> Vec<&[u8]> {
    words(env.get("ORDER").unwrap_or(DEFAULT_ORDER.as_bytes())).collect()
}

fn order_slots(env: &GrubEnv) -> Vec<SlotName> {
    order(env)
        .into_iter()
        .filter_map(|w| match w {
            b"A" => Some(SlotName::A),
            b"B" => Some(SlotName::B),
            _ => None,
        })
        .collect()
}

fn is_ok(env: &GrubEnv, slot: SlotName) -> bool {
    grub_number(env.get(var(slot, "OK")).unwrap_or(b"0")) == 1
}

/// A number as GRUB's `test -eq` reads it: `grub_strtosl(s, 0, 0)`. A
/// leading `-` negates; `0x` is hex, a leading `0` octal, else decimal;
/// parsing stops at the first non-digit; no digits at all read as 0.
pub(crate) fn grub_number(s: &[u8]) -> i64 {
    let (neg, s) = match s.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(s.len());
    let s = &s[start..];
    let (radix, digits) = if let Some(h) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
        (16, h)
    } else if s.len() > 1 && s[0] == b'0' && s[1].is_ascii_digit() {
        (8, &s[1..])
    } else {
        (10, s)
    };
    let mut v: i64 = 0;
    for &c in digits {
        match (c as char).to_digit(radix) {
            Some(d) => v = v.saturating_mul(radix as i64).saturating_add(d as i64),
            None => break,
        }
    }
    if neg {
        -v
    } else {
        v
    }
}

impl Bootloader for GrubBackend {
    fn env_stores(&self) -> Vec<super::EnvStore> {
        vec![super::EnvStore {
            path: self.grubenv.clone(),
            range: None,
        }]
    }

    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        let env = self.load()?;
        let slots = order_slots(&env);
        let bootable = slots
            .iter()
            .copied()
            .find(|&s| is_ok(&env, s) && !self.used_up(&env, s));
        // Every OK slot used up: GRUB's new round resets their tries and
        // boots the first OK one, never a slot marked bad ahead of it in
        // ORDER (a cancelled trial's: `mark-bad` leaves ORDER as it was).
        let new_round = || slots.iter().copied().find(|&s| is_ok(&env, s));
        Ok(bootable
            .or_else(new_round)
            .or_else(|| slots.first().copied()))
    }

    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        let env = self.load()?;
        Ok(if is_ok(&env, slot) {
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

    /// Classic: `X_TRY` set (GRUB sets it on every boot of X; a re-bless
    /// clears it). Budget: `X_LEFT` no longer the budget a good slot gets.
    fn tried(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        let env = self.load()?;
        Ok(Some(if self.budget() {
            env.get(var(slot, "LEFT"))
                .is_some_and(|left| left != self.tries.to_string().as_bytes())
        } else {
            grub_number(env.get(var(slot, "TRY")).unwrap_or(b"0")) != 0
        }))
    }

    /// `X_OK` not 1: only a mark bad clears it (GRUB's script sets `X_TRY`
    /// and counts `X_LEFT` down, both modes alike, and leaves `X_OK` alone).
    fn marked_bad(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        Ok(Some(!is_ok(&self.load()?, slot)))
    }

    /// The install's two writes (target bad, then activated), each from the
    /// block before it, keep to one sector ([`grubenv::changed_sector`]).
    fn check_activate(&self, slot: SlotName) -> Result<(), BootError> {
        let (on_disk, mut env) = grubenv::read_block(&self.grubenv)?;
        let step = |env: &GrubEnv, before: &[u8; grubenv::BLOCK_SIZE]| {
            let block = env.to_block()?;
            grubenv::changed_sector(before, &block).map(|_| block)
        };
        self.apply_state(&mut env, slot, BootState::Bad)
            .and_then(|()| step(&env, &on_disk))
            .and_then(|marked| {
                self.apply_activate(&mut env, slot)?;
                step(&env, &marked).map(|_| ())
            })
            .map_err(|reason| {
                self.format_err(format!("activating slot {slot} would fail: {reason}"))
            })
    }

    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        let env = self.load()?;
        let names = [
            "ORDER", "A_OK", "A_TRY", "A_LEFT", "B_OK", "B_TRY", "B_LEFT",
        ];
        Ok(names
            .iter()
            .filter_map(|n| env.get(n).map(|v| (n.to_string(), show(v))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_left_from_an_earlier_tries_is_dropped_once_tries_is_one() {
        let dir = crate::testutil::TempDir::new("grub-left");
        let path = dir.path().join("grubenv");
        let mut env = GrubEnv::new();
        for (k, v) in [
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("A_LEFT", "2"),
            ("B_OK", "0"),
            ("B_TRY", "1"),
            ("B_LEFT", "0"),
        ] {
            env.set(k, v).unwrap();
        }
        grubenv::write(&path, &env).unwrap();
        let grub = GrubBackend::new(path.clone(), 1);
        grub.activate(SlotName::B).unwrap();
        let env = grubenv::read(&path).unwrap();
        assert_eq!(env.get("B_LEFT"), None, "a stale B_LEFT=0 would skip B");
        assert_eq!(env.get("ORDER"), Some(&b"B A"[..]));
        assert_eq!(grub.primary().unwrap(), Some(SlotName::B));
        grub.set_state(SlotName::A, BootState::Good).unwrap();
        assert_eq!(grubenv::read(&path).unwrap().get("A_LEFT"), None);
    }

    #[test]
    fn a_good_slot_missing_from_order_goes_last() {
        let dir = crate::testutil::TempDir::new("grub-order");
        let path = dir.path().join("grubenv");
        let mut env = GrubEnv::new();
        for (k, v) in [("ORDER", "B"), ("A_OK", "1"), ("A_TRY", "1"), ("B_OK", "0")] {
            env.set(k, v).unwrap();
        }
        grubenv::write(&path, &env).unwrap();
        let grub = GrubBackend::new(path.clone(), 1);
        grub.set_state(SlotName::A, BootState::Good).unwrap();
        assert_eq!(
            grubenv::read(&path).unwrap().get("ORDER"),
            Some(&b"B A"[..])
        );
        assert_eq!(grub.primary().unwrap(), Some(SlotName::A));
        // Marking it bad adds nothing.
        grub.set_state(SlotName::B, BootState::Bad).unwrap();
        assert_eq!(
            grubenv::read(&path).unwrap().get("ORDER"),
            Some(&b"B A"[..])
        );
    }

    #[test]
    fn a_slot_is_tried_while_grub_spent_a_try_no_one_gave_back() {
        let dir = crate::testutil::TempDir::new("grub-tried");
        let path = dir.path().join("grubenv");
        let mut env = GrubEnv::new();
        for (k, v) in [
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ] {
            env.set(k, v).unwrap();
        }
        grubenv::write(&path, &env).unwrap();
        let grub = GrubBackend::new(path.clone(), 1);
        assert_eq!(grub.tried(SlotName::B).unwrap(), Some(true));
        assert_eq!(grub.tried(SlotName::A).unwrap(), Some(false));
        grub.set_state(SlotName::B, BootState::Good).unwrap();
        assert_eq!(grub.tried(SlotName::B).unwrap(), Some(false), "re-blessed");
        // With a budget: tried once X_LEFT is no longer the full budget.
        let budget = GrubBackend::new(path.clone(), 3);
        budget.activate(SlotName::A).unwrap();
        assert_eq!(budget.tried(SlotName::A).unwrap(), Some(false));
        let mut env = grubenv::read(&path).unwrap();
        env.set("A_LEFT", "2").unwrap();
        grubenv::write(&path, &env).unwrap();
        assert_eq!(budget.tried(SlotName::A).unwrap(), Some(true));
    }

    #[test]
    fn numbers_read_as_grub_test_does() {
        assert_eq!(grub_number(b"1"), 1);
        assert_eq!(grub_number(b"0"), 0);
        assert_eq!(grub_number(b""), 0);
        assert_eq!(grub_number(b"yes"), 0);
        assert_eq!(grub_number(b"0x1"), 1);
        assert_eq!(grub_number(b"010"), 8);
        assert_eq!(grub_number(b"1abc"), 1);
        assert_eq!(grub_number(b"-1"), -1);
        assert_eq!(grub_number(b" 1"), 1);
        assert_eq!(grub_number(b"1\xff"), 1);
        assert_eq!(grub_number(b"\xff1"), 0);
        assert_eq!(grub_number(b"99999999999999999999999"), i64::MAX);
    }
}
