//! EFI backend: one `Boot####` entry per slot, `BootNext` for a trial,
//! `BootOrder` for the commit; variables written natively through efivarfs
//! (see `efivar`), no efibootmgr.
//!
//! Invariant: every transition is at most two variable writes, each atomic
//! in the firmware, ordered so that a power cut between any two leaves
//! `BootOrder`'s first slot entry a slot that was good before the change
//! (and `BootNext`, if set, one the change meant to try); a slot entry is
//! (re)created from config before a `BootNext` or `BootOrder` names it.
//!
//! Semantics are RAUC's efi backend (`src/bootloaders/efi.c`), so a board
//! prepared for RAUC works unchanged:
//!
//! | operation | RAUC | here |
//! | --- | --- | --- |
//! | state(slot) | good ⟺ its entry is in `BootOrder` | same |
//! | set_state(slot, good) | prepend its entry to `BootOrder` | same (no write when already first) |
//! | set_state(slot, bad) | remove it from `BootOrder` | same, and first delete `BootNext` if it names the slot: a slot marked bad is never booted, not even once |
//! | activate(slot) (RAUC: set-primary, `efi-use-bootnext`) | `BootNext` = its entry | same (no write when it already boots next: first in `BootOrder`, no `BootNext`) |
//! | primary | `BootNext`'s slot, else the first slot entry in `BootOrder` | same |
//! | booted | `BootCurrent`'s slot | same |
//! | a missing entry | `efibootmgr --create-only` from `efi-loader`/`efi-cmdline` | written natively: `HD()/File()` + UCS-2 options, byte for byte what `efibootmgr --unicode` writes |
//!
//! An entry is the `Boot####` given by number in config, else the one whose
//! description is the slot's (RAUC's bootname). Two entries with that
//! description are refused before anything is written (RAUC takes the
//! first): see [`the_one_entry`].
//!
//! Transitions (E_A, E_B: the slots' entry numbers; `…`: entries that are
//! not ours, kept in their order):
//!
//! | step | before | after |
//! | --- | --- | --- |
//! | install: target B bad | `BootOrder=E_A,E_B,…` (`BootNext=E_B`) | (`BootNext` deleted) then `BootOrder=E_A,…` |
//! | install: activate B (trial) | `BootOrder=E_A,…` | `BootNext=E_B`; firmware deletes it when it boots B: one try |
//! | trial never comes up | `BootNext` consumed | the next reset boots `BootOrder`'s first: E_A |
//! | health commits B | `BootOrder=E_A,…` | `BootOrder=E_B,E_A,…` |
//! | health rolls back B | `BootOrder=E_A,…` | unchanged (B is not in it); `BootNext=E_A` only if A would not boot next anyway |
//! | re-bless booted A | `BootOrder=…,E_A,…` | `BootOrder=E_A,…` (no write when first) |
//! | rollback to A | `BootOrder=E_B,E_A,…` | `BootNext=E_A` (one boot; A's health then puts E_A first) |
//!
//! `[bootloader] tries` does not apply: `BootNext` is one boot.

use super::efivar::{
    self, boot_name, device_path, efi_path, u16_bytes, ucs2, EfiVars, LoadOption, GLOBAL_GUID,
    LOAD_OPTION_ACTIVE, NV_BS_RT,
};
use super::{BootError, BootState, Bootloader};
use crate::slot::SlotName;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How one slot's `Boot####` entry is found and, when the firmware dropped
/// it, recreated (`[bootloader.efi.A]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiSlot {
    /// The entry's number, when fixed.
    pub entry: Option<u16>,
    /// The entry's description (how it is found without a number).
    pub description: String,
    /// The loader on the ESP, e.g. `\EFI\slot-a\grubx64.efi`.
    pub loader: Option<String>,
    /// The ESP partition: a device path or `PARTUUID=…`.
    pub partition: Option<String>,
    /// Load options, stored as UCS-2 (what `efibootmgr --unicode` stores).
    pub options: Option<String>,
}

impl EfiSlot {
    /// RAUC's default bootname for a slot.
    pub fn default_for(slot: SlotName) -> EfiSlot {
        EfiSlot {
            entry: None,
            description: format!("abupdate {slot}"),
            loader: None,
            partition: None,
            options: None,
        }
    }
}

/// The EFI backend over an efivarfs mount (or a directory standing in).
#[derive(Clone, Debug)]
pub struct EfiBackend {
    vars: EfiVars,
    slots: BTreeMap<SlotName, EfiSlot>,
}

/// What is in NVRAM, read once per operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nvram {
    /// `BootOrder`: the entries the firmware tries, in order.
    pub order: Vec<u16>,
    /// `BootNext`: the entry the firmware boots once, next.
    pub next: Option<u16>,
    /// The slots' entry numbers, where found.
    pub entries: BTreeMap<SlotName, u16>,
}

/// A change the plan asks for, in the order to apply it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Delete `BootNext`.
    DeleteBootNext,
    /// Set `BootNext` to this entry.
    BootNext(u16),
    /// Replace `BootOrder`.
    BootOrder(Vec<u16>),
}

impl Nvram {
    fn slot_of(&self, num: u16) -> Option<SlotName> {
        self.entries
            .iter()
            .find(|(_, &n)| n == num)
            .map(|(&s, _)| s)
    }

    /// The slot the firmware boots next (RAUC's `get_primary`).
    pub fn primary(&self) -> Option<SlotName> {
        self.next
            .and_then(|n| self.slot_of(n))
            .or_else(|| self.order.iter().find_map(|&n| self.slot_of(n)))
    }

    /// Whether `slot` was tried and not blessed, `current` being the slot
    /// booted (`BootCurrent`): booted through `BootNext` (a trial; a
    /// re-bless or commit puts it first in `BootOrder`), so `BootOrder`
    /// does not start with it. A slot not booted: cannot tell (a failed
    /// trial's entry is out of `BootOrder`, which [`Nvram::state`] says).
    pub fn tried(&self, slot: SlotName, current: Option<SlotName>) -> Option<bool> {
        if current != Some(slot) {
            return None;
        }
        let first = self.order.iter().find_map(|&n| self.slot_of(n));
        Some(first != Some(slot))
    }

    /// Whether `slot` has an entry and it is out of `BootOrder`: what an
    /// armed trial's is (the install took it out when it marked the slot
    /// bad, then named it in `BootNext`). A slot booted from an entry
    /// still in `BootOrder` but not first was chosen in the firmware's boot
    /// menu, or the firmware passed over a first entry that did not load:
    /// a committed slot's boot, though [`Nvram::tried`] says yes.
    pub fn outside_order(&self, slot: SlotName) -> bool {
        self.entries
            .get(&slot)
            .is_some_and(|n| !self.order.contains(n))
    }

    /// Whether a committed `slot` was retired (RAUC's mark-bad): its entry
    /// kept, out of `BootOrder` and not `BootNext`. A missing entry is not
    /// (the firmware dropped it, as after an NVRAM reset).
    pub fn retired(&self, slot: SlotName) -> bool {
        self.outside_order(slot) && self.next != self.entries.get(&slot).copied()
    }

    /// A slot is good while its entry is in `BootOrder`.
    pub fn state(&self, slot: SlotName) -> BootState {
        match self.entries.get(&slot) {
            Some(n) if self.order.contains(n) => BootState::Good,
            _ => BootState::Bad,
        }
    }

    /// Writes that mark `slot` (entry `num`) good or bad.
    pub fn plan_state(&self, num: u16, state: BootState) -> Vec<Write> {
        let mut w = Vec::new();
        let rest: Vec<u16> = self.order.iter().copied().filter(|&n| n != num).collect();
        match state {
            BootState::Good => {
                if self.order.first() != Some(&num) {
                    let mut order = vec![num];
                    order.extend(rest);
                    w.push(Write::BootOrder(order));
                }
            }
            BootState::Bad => {
                // BootNext first: a cut between the two writes must not
                // leave the bad slot as the next boot.
                if self.next == Some(num) {
                    w.push(Write::DeleteBootNext);
                }
                if rest.len() != self.order.len() {
                    w.push(Write::BootOrder(rest));
                }
            }
        }
        w
    }

    /// Writes that make entry `num` the next boot, once.
    pub fn plan_activate(&self, num: u16) -> Vec<Write> {
        let boots_next_anyway = self.next.is_none() && self.order.first() == Some(&num);
        if self.next == Some(num) || boots_next_anyway {
            Vec::new()
        } else {
            vec![Write::BootNext(num)]
        }
    }
}

/// The slot's entry among the `Boot####` whose description is the slot's
/// (`matches`, in number order): none, or exactly one. Two or more are
/// refused, not guessed: abupdate cannot tell which one the firmware boots
/// the slot with (an entry recreated after an NVRAM reset, another tool's),
/// and taking one would leave the other in `BootOrder`, so a slot marked bad
/// could still be booted; the `entry` key settles it.
fn the_one_entry(
    slot: SlotName,
    description: &str,
    matches: &[u16],
) -> Result<Option<u16>, String> {
    match matches {
        [] => Ok(None),
        [n] => Ok(Some(*n)),
        [first, .., last] => {
            let names: Vec<String> = matches.iter().map(|&n| boot_name(n)).collect();
            let listed = match names.split_last() {
                Some((l, rest)) if rest.len() > 1 => format!("{} and {l} all", rest.join(", ")),
                _ => format!("{} and {} both", boot_name(*first), boot_name(*last)),
            };
            Err(format!(
                "{listed} have slot {slot}'s description {description:?}: which one boots slot {slot} is ambiguous, \
                 nothing written; set entry = 0x{first:04X} (or the number of the one that boots it) in [bootloader.efi.{slot}]"
            ))
        }
    }
}

impl EfiBackend {
    /// `efivarfs`: the mount (`/sys/firmware/efi/efivars`) or a stand-in
    /// directory; `slots`: both slots' entries.
    pub fn new(efivarfs: PathBuf, slots: BTreeMap<SlotName, EfiSlot>) -> EfiBackend {
        EfiBackend {
            vars: EfiVars::new(efivarfs),
            slots,
        }
    }

    fn slot_config(&self, slot: SlotName) -> EfiSlot {
        self.slots
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| EfiSlot::default_for(slot))
    }

    /// The slot's entry number, when it exists.
    fn find_entry(&self, slot: SlotName, all: &[u16]) -> Result<Option<u16>, BootError> {
        let cfg = self.slot_config(slot);
        if let Some(n) = cfg.entry {
            return Ok(self.vars.load_option(n)?.map(|_| n));
        }
        let want = ucs2(&cfg.description);
        let matches: Vec<u16> = all
            .iter()
            .copied()
            // An entry we cannot parse is not ours; the firmware's business.
            .filter(
                |&n| matches!(self.vars.load_option(n), Ok(Some(opt)) if opt.description == want),
            )
            .collect();
        the_one_entry(slot, &cfg.description, &matches).map_err(|reason| BootError::Format {
            path: self.vars.dir().display().to_string(),
            reason,
        })
    }

    fn read(&self) -> Result<Nvram, BootError> {
        let all = self.vars.boot_entries()?;
        let mut entries = BTreeMap::new();
        for slot in SlotName::ALL {
            if let Some(n) = self.find_entry(slot, &all)? {
                entries.insert(slot, n);
            }
        }
        Ok(Nvram {
            order: self.vars.get_u16_list("BootOrder")?,
            next: self.vars.get_u16("BootNext")?,
            entries,
        })
    }

    /// The load option config describes for `slot`.
    fn build_entry(&self, slot: SlotName) -> Result<LoadOption, BootError> {
        let cfg = self.slot_config(slot);
        let key = format!("bootloader.efi.{slot}");
        let (Some(loader), Some(partition)) = (cfg.loader.as_deref(), cfg.partition.as_deref())
        else {
            return Err(BootError::Format {
                path: self.vars.dir().display().to_string(),
                reason: format!(
                    "no Boot#### entry for slot {slot} ({}) and {key} has no loader and partition to recreate it",
                    cfg.entry.map(boot_name).unwrap_or_else(|| format!("description {:?}", cfg.description))
                ),
            });
        };
        let hd = efivar::find_partition(partition)?;
        let optional_data = cfg
            .options
            .as_deref()
            .map(|o| ucs2(o).iter().flat_map(|u| u.to_le_bytes()).collect())
            .unwrap_or_default();
        Ok(LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: ucs2(&cfg.description),
            file_path_list: device_path(&hd, &efi_path(loader)),
            optional_data,
        })
    }

    /// The slot's entry, recreated from config when the firmware dropped
    /// it: at its configured number, else the lowest free one.
    fn ensure_entry(&self, slot: SlotName, nv: &mut Nvram) -> Result<u16, BootError> {
        if let Some(&n) = nv.entries.get(&slot) {
            return Ok(n);
        }
        let option = self.build_entry(slot)?;
        let all = self.vars.boot_entries()?;
        let num = match self.slot_config(slot).entry {
            Some(n) => n,
            None => (0..=u16::MAX)
                .find(|n| !all.contains(n))
                .ok_or_else(|| BootError::Format {
                    path: self.vars.dir().display().to_string(),
                    reason: "no free Boot#### number".into(),
                })?,
        };
        crate::agent::log(&format!(
            "slot {slot}: the firmware has no boot entry for it; recreating {} from config",
            boot_name(num)
        ));
        self.vars
            .set(&boot_name(num), GLOBAL_GUID, NV_BS_RT, &option.to_bytes())?;
        nv.entries.insert(slot, num);
        Ok(num)
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), BootError> {
        for w in writes {
            match w {
                Write::DeleteBootNext => self.vars.delete("BootNext", GLOBAL_GUID)?,
                Write::BootNext(n) => {
                    self.vars
                        .set("BootNext", GLOBAL_GUID, NV_BS_RT, &n.to_le_bytes())?
                }
                Write::BootOrder(order) => {
                    self.vars
                        .set("BootOrder", GLOBAL_GUID, NV_BS_RT, &u16_bytes(&order))?
                }
            }
        }
        Ok(())
    }
}

impl Bootloader for EfiBackend {
    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        Ok(self.read()?.primary())
    }

    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        Ok(self.read()?.state(slot))
    }

    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError> {
        let mut nv = self.read()?;
        let num = match state {
            BootState::Good => self.ensure_entry(slot, &mut nv)?,
            BootState::Bad => match nv.entries.get(&slot) {
                Some(&n) => n,
                None => return Ok(()),
            },
        };
        self.apply(nv.plan_state(num, state))
    }

    fn activate(&self, slot: SlotName) -> Result<(), BootError> {
        let mut nv = self.read()?;
        let num = self.ensure_entry(slot, &mut nv)?;
        self.apply(nv.plan_activate(num))
    }

    /// The target's entry is there, or can be made from config: found
    /// from outside, an install whose target's entry the firmware had
    /// dropped (no loader and partition configured) wrote the whole image
    /// before it was refused, on every run.
    fn check_activate(&self, slot: SlotName) -> Result<(), BootError> {
        match self.read()?.entries.contains_key(&slot) {
            true => Ok(()),
            false => self.build_entry(slot).map(drop),
        }
    }

    /// See [`Nvram::tried`].
    fn tried(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        let current = self.booted()?;
        Ok(self.read()?.tried(slot, current))
    }

    fn tells_a_trial_boot(&self, booted: SlotName) -> bool {
        self.read().is_ok_and(|nv| nv.outside_order(booted))
    }

    /// See [`Nvram::retired`].
    fn committed_marked_bad(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        Ok(Some(self.read()?.retired(slot)))
    }

    fn booted(&self) -> Result<Option<SlotName>, BootError> {
        let nv = self.read()?;
        Ok(self
            .vars
            .get_u16("BootCurrent")?
            .and_then(|n| nv.slot_of(n)))
    }

    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        let nv = self.read()?;
        let list = |v: &[u16]| {
            v.iter()
                .map(|n| format!("{n:04X}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = vec![("BootOrder".to_string(), list(&nv.order))];
        if let Some(n) = nv.next {
            out.push(("BootNext".into(), format!("{n:04X}")));
        }
        if let Some(n) = self.vars.get_u16("BootCurrent")? {
            out.push(("BootCurrent".into(), format!("{n:04X}")));
        }
        for (slot, &n) in &nv.entries {
            if let Some(opt) = self.vars.load_option(n)? {
                out.push((
                    boot_name(n),
                    // The NVRAM's text (another tool may have written the
                    // entry) is quoted on its way to a terminal.
                    format!(
                        "{} (slot {slot}){}",
                        opt.description_shown(),
                        opt.file_path_shown()
                            .map(|p| format!(" {p}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BootState::{Bad, Good};
    use SlotName::{A, B};

    fn nv(order: &[u16], next: Option<u16>) -> Nvram {
        Nvram {
            order: order.to_vec(),
            next,
            entries: [(A, 1), (B, 2)].into_iter().collect(),
        }
    }

    /// Only an entry out of `BootOrder` is an armed trial's: one still in
    /// it, not first, was picked in the boot menu (or the firmware passed
    /// over the first), a committed slot's boot.
    #[test]
    fn only_a_slot_whose_entry_is_out_of_bootorder_is_told_a_trial() {
        assert!(nv(&[1], Some(2)).outside_order(B));
        assert!(nv(&[1], None).outside_order(B));
        assert!(!nv(&[1, 2], None).outside_order(B));
        assert!(!nv(&[2, 1], None).outside_order(B));
        assert!(!nv(&[1, 2], None).outside_order(A));
        // A slot without an entry is no trial of ours.
        let mut none = nv(&[1], None);
        none.entries.remove(&B);
        assert!(!none.outside_order(B));
    }

    /// A committed slot is retired only by a mark-bad: its entry kept, out
    /// of `BootOrder`, not `BootNext`; a dropped entry is the firmware's.
    #[test]
    fn a_committed_slot_is_retired_only_when_its_kept_entry_is_out_of_bootorder_and_not_next() {
        assert!(nv(&[1], None).retired(B));
        assert!(!nv(&[1], Some(2)).retired(B), "armed through BootNext");
        assert!(nv(&[1], Some(1)).retired(B));
        assert!(!nv(&[1, 2], None).retired(B));
        assert!(!nv(&[2, 1], None).retired(A));
        let mut none = nv(&[1], None);
        none.entries.remove(&B);
        assert!(!none.retired(B), "an entry the firmware dropped");
    }

    #[test]
    fn a_slot_booted_through_bootnext_is_tried_one_first_in_bootorder_not() {
        // The trial: BootNext took it there; BootOrder still starts with A.
        assert_eq!(nv(&[1], None).tried(B, Some(B)), Some(true));
        assert_eq!(nv(&[1, 2], None).tried(B, Some(B)), Some(true));
        // Committed or re-blessed: first in BootOrder.
        assert_eq!(nv(&[2, 1], None).tried(B, Some(B)), Some(false));
        assert_eq!(nv(&[7, 2, 1], None).tried(B, Some(B)), Some(false));
        // A slot not running: cannot tell.
        assert_eq!(nv(&[1, 2], Some(2)).tried(B, Some(A)), None);
        assert_eq!(nv(&[1, 2], None).tried(A, None), None);
    }

    #[test]
    fn primary_is_bootnext_then_first_slot_in_bootorder() {
        assert_eq!(nv(&[1, 2], None).primary(), Some(A));
        assert_eq!(nv(&[1, 2], Some(2)).primary(), Some(B));
        // Entries that are not slots are skipped, as RAUC does.
        assert_eq!(nv(&[7, 2, 1], None).primary(), Some(B));
        assert_eq!(nv(&[7, 1], Some(9)).primary(), Some(A));
        assert_eq!(nv(&[7], None).primary(), None);
    }

    #[test]
    fn good_means_in_bootorder() {
        assert_eq!(nv(&[1], Some(2)).state(A), Good);
        assert_eq!(nv(&[1], Some(2)).state(B), Bad);
        let mut missing = nv(&[1, 2], None);
        missing.entries.remove(&B);
        assert_eq!(missing.state(B), Bad);
    }

    #[test]
    fn mark_good_prepends_once() {
        assert_eq!(
            nv(&[1, 7], None).plan_state(2, Good),
            vec![Write::BootOrder(vec![2, 1, 7])]
        );
        assert_eq!(
            nv(&[7, 2, 1], None).plan_state(2, Good),
            vec![Write::BootOrder(vec![2, 7, 1])]
        );
        assert!(nv(&[2, 1], None).plan_state(2, Good).is_empty());
    }

    #[test]
    fn mark_bad_deletes_bootnext_before_the_order() {
        assert_eq!(
            nv(&[2, 1], Some(2)).plan_state(2, Bad),
            vec![Write::DeleteBootNext, Write::BootOrder(vec![1])]
        );
        assert_eq!(
            nv(&[1], Some(1)).plan_state(2, Bad),
            Vec::<Write>::new(),
            "BootNext of another slot stays"
        );
        assert!(nv(&[1, 7], None).plan_state(2, Bad).is_empty());
    }

    #[test]
    fn an_entry_found_by_description_must_be_the_only_one() {
        assert_eq!(the_one_entry(A, "abupdate A", &[]), Ok(None));
        assert_eq!(the_one_entry(A, "abupdate A", &[3]), Ok(Some(3)));
        let two = the_one_entry(A, "abupdate A", &[1, 3]).expect_err("two refused");
        assert_eq!(
            two,
            "Boot0001 and Boot0003 both have slot A's description \"abupdate A\": which one boots slot A \
             is ambiguous, nothing written; set entry = 0x0001 (or the number of the one that boots it) \
             in [bootloader.efi.A]"
        );
        let three = the_one_entry(B, "abupdate B", &[2, 5, 0x10]).expect_err("three refused");
        assert!(
            three.starts_with("Boot0002, Boot0005 and Boot0010 all have slot B's description")
                && three.contains("entry = 0x0002")
                && three.contains("[bootloader.efi.B]"),
            "{three}"
        );
    }

    #[test]
    fn activate_sets_bootnext_unless_the_slot_boots_next_anyway() {
        assert_eq!(nv(&[1], None).plan_activate(2), vec![Write::BootNext(2)]);
        assert_eq!(nv(&[1], Some(7)).plan_activate(1), vec![Write::BootNext(1)]);
        assert!(nv(&[1], None).plan_activate(1).is_empty());
        assert!(nv(&[1], Some(2)).plan_activate(2).is_empty());
    }
}
