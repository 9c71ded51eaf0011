//! systemd-boot backend: one Boot Loader Specification type #1 entry per
//! slot on the ESP (`loader/entries/PREFIX-GEN-SLOT[+LEFT[-DONE]].conf`),
//! with boot counting in the file name as systemd-boot and
//! `systemd-bless-boot` parse it.
//!
//! Invariant: every transition is ONE rename of one entry file in
//! `loader/entries` (no-replace, then the renamed file and the directory
//! synced: on vfat the file's sync is what fills in the new name), so a power cut
//! leaves the old or the new name, and systemd-boot's choice is always the
//! old or the new one.
//!
//! How systemd-boot chooses (`src/boot/boot.c`, `boot_entry_compare` and
//! `config_select_default_entry`): entries are sorted with the ones that
//! have no tries left (`+0`, "bad") last, then by id, newest version
//! first; the default is the first entry matching `LoaderEntryOneShot`,
//! else `LoaderEntryDefault`, else `loader.conf`'s `default` (a glob), else
//! the first entry. A default glob that matches no entry on the ESP (ours
//! or another's: a stale one naming a removed entry) is skipped, and the
//! next source decides ([`choose_default`]). A glob that matches only one
//! slot's entry picks it even when it is bad (`config_find_entry` does
//! not skip bad entries), so a
//! pinned default would defeat the fallback. abupdate therefore pins
//! nothing: the trial becomes the default by sorting first. Its entry gets
//! a higher generation (GEN, compared as a number, as `strverscmp` does)
//! and `+TRIES` in the same rename; when systemd-boot has counted it down to
//! `+0`, it sorts last and the other slot boots. `loader.conf` may carry
//! `default PREFIX-*` (matching both slots) or nothing; `LoaderEntryDefault`
//! (`bootctl set-default`, read from efivarfs) must not pin a slot either,
//! and `LoaderEntryOneShot` must not name another entry than the trial's
//! (one naming no entry on the ESP is skipped, as systemd-boot skips it):
//! an install is refused on either ([`Bootloader::check_activate`]). The entries carry no
//! `sort-key` or `version`, so the id order decides (systemd-boot puts
//! entries with a sort key first; other entries on the ESP should not have
//! one, or they are preferred).
//!
//! Transitions (A good, B the target):
//!
//! | step | before | after |
//! | --- | --- | --- |
//! | install: B bad | `P-3-a.conf`, `P-2-b.conf` | `P-2-b+0.conf` (sorted last: A boots) |
//! | install: activate B | `P-3-a.conf`, `P-2-b+0.conf` | `P-4-b+TRIES.conf` (B first: the default) |
//! | systemd-boot boots B | `P-4-b+1.conf` | `P-4-b+0-1.conf` (renamed before booting) |
//! | health commits B | `P-4-b+0-1.conf` | `P-4-b.conf` |
//! | health rolls back B | `P-4-b+0-1.conf` | unchanged (already `+0`); A first |
//! | trial never comes up | `P-4-b+0-1.conf` | A boots; B stays bad |
//! | rollback to A (both good) | `P-3-a.conf`, `P-4-b.conf` | `P-5-a+TRIES.conf`; A's health drops the counter |
//!
//! `state`: good ⟺ the entry exists and has tries left (or no counter).
//! `set_state(good)` drops the counter (what `systemd-bless-boot good`
//! does); `set_state(bad)` sets `+0`, keeping `-DONE` (as `bless-boot bad`).
//! `activate` is a no-op when the slot already boots next with no counter.
//!
//! Cooperation with `systemd-bless-boot.service`: it runs after
//! `boot-complete.target`, and `abupdate-health.service` runs before it,
//! so the two never run at the same time. On a healthy trial we drop the
//! counter first; bless-boot then finds its source gone and the good name
//! present, which it takes as done. On a failed trial we mark the entry bad
//! and boot-complete.target is never reached, so bless-boot does not run.
//! On hosts without our health unit, bless-boot's renames are the same as
//! ours.
//!
//! Type #2 entries (UKIs in `EFI/Linux/`) are not used as slot entries:
//! systemd-boot gives them a sort key and orders them by the version in
//! their embedded os-release, which abupdate cannot reorder for a rollback
//! to the older release; a UKI is booted through a type #1 entry's `efi`.
//!
//! A slot's entry that is missing, or empty (a power cut between a vfat
//! rename and its sync can leave one), is written from config
//! (`[bootloader.systemd-boot.A]`: `title`, `linux` or `efi`, `initrd`,
//! `options`; `abupdate.slot=A` is appended to the options).

use super::efivar::EfiVars;
use super::{BootError, BootState, Bootloader};
use crate::slot::SlotName;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest `loader.conf` read (a real one is a few lines).
const MAX_LOADER_CONF: u64 = 64 << 10;

/// How one slot's entry is written when it is missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryConfig {
    /// The menu title.
    pub title: Option<String>,
    /// Kernel on the ESP (`/abupdate/a/vmlinuz`), or
    pub linux: Option<String>,
    /// an EFI binary such as a unified kernel image (`/EFI/abupdate/a.efi`).
    pub efi: Option<String>,
    /// Initrds on the ESP, in order.
    pub initrd: Vec<String>,
    /// The kernel command line.
    pub options: Option<String>,
}

/// One slot's entry file, parsed from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Higher sorts first in systemd-boot's menu.
    pub generation: u64,
    /// The slot the entry boots.
    pub slot: SlotName,
    /// `(left, done)` when the name carries a boot counter.
    pub counter: Option<(u64, u64)>,
    /// The file name in `loader/entries/`.
    pub file: String,
}

impl Entry {
    /// No tries left: systemd-boot sorts it last.
    pub fn bad(&self) -> bool {
        matches!(self.counter, Some((0, _)))
    }

    /// Booted (or given up) and not blessed since: the name still counts
    /// tries and some are done, or none are left (a blessed entry has no
    /// counter; a fresh trial's counts none done).
    pub fn tried(&self) -> bool {
        self.counter
            .is_some_and(|(left, done)| done > 0 || left == 0)
    }
}

fn stem(prefix: &str, generation: u64, slot: SlotName) -> String {
    format!(
        "{prefix}-{generation}-{}",
        slot.as_str().to_ascii_lowercase()
    )
}

/// `PREFIX-GEN-SLOT[+LEFT[-DONE]].conf`.
pub fn entry_name(
    prefix: &str,
    generation: u64,
    slot: SlotName,
    counter: Option<(u64, u64)>,
) -> String {
    let c = match counter {
        None => String::new(),
        Some((left, 0)) => format!("+{left}"),
        Some((left, done)) => format!("+{left}-{done}"),
    };
    format!("{}{c}.conf", stem(prefix, generation, slot))
}

/// Digits at the start of `s`: value and rest (systemd's `parse_number16`).
fn number(s: &str) -> Option<(u64, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    let v = s[..end].parse::<u64>().ok()?;
    Some((v, &s[end..]))
}

/// The boot counter of a file name as systemd-boot parses it
/// (`boot_entry_parse_tries`): after the LAST `+`, `LEFT` digits, an
/// optional `-DONE`, then exactly `suffix`. Returns the name without the
/// counter and the counter; a name whose counter does not parse has none
/// (and keeps its `+` in the id).
pub fn split_counter<'a>(file: &'a str, suffix: &str) -> (&'a str, Option<(u64, u64)>) {
    let Some(base) = file.strip_suffix(suffix) else {
        return (file, None);
    };
    let Some(plus) = file.rfind('+') else {
        return (base, None);
    };
    let parsed = number(&file[plus + 1..]).and_then(|(left, rest)| {
        let (done, rest) = match rest.strip_prefix('-') {
            Some(r) => number(r)?,
            None => (0, rest),
        };
        (rest == suffix && left <= i32::MAX as u64 && done <= i32::MAX as u64)
            .then_some((left, done))
    });
    match parsed {
        Some(c) => (&file[..plus], Some(c)),
        None => (base, None),
    }
}

/// One of our entries, when `file` is one.
pub fn parse_entry(prefix: &str, file: &str) -> Option<Entry> {
    classify_entry(prefix, file).ok().flatten()
}

/// `file` as one of our entries: `Ok(None)` when it is not named like one,
/// `Err` (why) when it is, but its generation is past what a u64 holds:
/// systemd-boot compares the digits as a version and boots it, so it must
/// not be taken for "no entry" (status would name the other slot, health
/// would write a second entry).
pub fn classify_entry(prefix: &str, file: &str) -> Result<Option<Entry>, String> {
    let (base, counter) = split_counter(file, ".conf");
    let Some(rest) = base.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return Ok(None);
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let slot = match &rest[digits..] {
        "-a" => SlotName::A,
        "-b" => SlotName::B,
        _ => return Ok(None),
    };
    if digits == 0 {
        return Ok(None);
    }
    let Some((generation, _)) = number(rest) else {
        return Err(format!(
            "the generation {} of slot {slot}'s entry is larger than {} (the largest abupdate counts); rename the entry with a smaller one",
            &rest[..digits],
            u64::MAX
        ));
    };
    Ok(Some(Entry {
        generation,
        slot,
        counter,
        file: file.to_string(),
    }))
}

/// systemd-boot's order for our entries: bad last, then the id descending
/// (the generation as a number, then the slot letter), then more tries
/// left, then fewer done.
pub fn boot_order(a: &Entry, b: &Entry) -> Ordering {
    a.bad()
        .cmp(&b.bad())
        .then(b.generation.cmp(&a.generation))
        .then(b.slot.cmp(&a.slot))
        .then_with(|| match (a.counter, b.counter) {
            (Some((al, ad)), Some((bl, bd))) => bl.cmp(&al).then(ad.cmp(&bd)),
            _ => Ordering::Equal,
        })
}

/// systemd's `efi_fnmatch`: `*`, `?`, `[…]` (ranges, `!` negation), `\`
/// escapes; both sides already lowercase.
pub fn fnmatch(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| fnmatch(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && fnmatch(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let (negate, mut p) = match rest.split_first() {
                Some((b'!', r)) => (true, r),
                _ => (false, rest),
            };
            let mut hit = false;
            let mut first = true;
            loop {
                match p {
                    [] => return false,
                    [b']', r @ ..] if !first => {
                        p = r;
                        break;
                    }
                    [lo, b'-', hi, r @ ..] if *hi != b']' => {
                        hit |= (*lo..=*hi).contains(&c);
                        p = r;
                    }
                    [x, r @ ..] => {
                        hit |= *x == c;
                        p = r;
                    }
                }
                first = false;
            }
            hit != negate && fnmatch(p, tail)
        }
        Some((b'\\', [x, rest @ ..])) => s.first() == Some(x) && fnmatch(rest, &s[1..]),
        Some((x, rest)) => s.first() == Some(x) && fnmatch(rest, &s[1..]),
    }
}

/// The entry systemd-boot boots next among ours: the first in its order
/// matching the `loader.conf` default glob (when one is set, by
/// [`default_matches`], the rule every ESP file is matched by), else the
/// first. `None` when a default is set and matches neither slot (then
/// another entry boots).
pub fn select(entries: &[Entry], default: Option<&str>) -> Option<SlotName> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| boot_order(a, b));
    match default {
        None => sorted.first().map(|e| e.slot),
        Some(glob) => sorted
            .iter()
            .find(|e| default_matches(glob, &e.file))
            .map(|e| e.slot),
    }
}

/// The `default` of a `loader.conf` text.
pub fn loader_conf_default(text: &str) -> Option<String> {
    loader_conf_default_line(text).map(|(_, glob)| glob)
}

/// The `default` of a `loader.conf` text and its line number (1-based):
/// the last such line, as systemd-boot reads the file (each `default`
/// replaces the one before).
pub fn loader_conf_default_line(text: &str) -> Option<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (k, v) = l.trim().split_once([' ', '\t'])?;
            (k == "default").then(|| (i + 1, v.trim().to_string()))
        })
        .last()
}

/// What is wrong with `loader.conf`'s `default` glob for an activation
/// of `slot` (its trial gets `tries`), if anything: systemd-boot picks the
/// first entry matching the glob in its order, so a glob matching one
/// slot's entry only pins it. Then either the trial never boots (pinned to
/// the other slot: a good release would be recorded as never booted) or
/// the trial boots even once counted bad (pinned to it: no fallback).
/// `entries`: our entries now. Pure.
pub fn default_problem(
    entries: &BTreeMap<SlotName, Entry>,
    prefix: &str,
    tries: u64,
    slot: SlotName,
    glob: &str,
) -> Option<String> {
    let other = entries.get(&slot.other());
    let with = |counter| trial_entries(entries, prefix, slot, counter);
    if select(&with((tries, 0)), Some(glob)) != Some(slot) {
        return Some(format!("systemd-boot would never boot slot {slot}'s trial"));
    }
    if other.is_some() && select(&with((0, 1)), Some(glob)) != Some(slot.other()) {
        return Some(format!(
            "systemd-boot would boot slot {slot} even once it failed (no fallback to slot {})",
            slot.other()
        ));
    }
    None
}

/// Where a default glob systemd-boot reads comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultSource {
    /// The `LoaderEntryDefault` EFI variable (`bootctl set-default`), in
    /// this file (efivarfs).
    LoaderEntryDefault(PathBuf),
    /// `loader.conf`'s last `default` line (1-based).
    LoaderConf {
        /// Its line number.
        line: usize,
    },
}

/// A default glob and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultGlob {
    /// Where it was read.
    pub source: DefaultSource,
    /// The glob, as written.
    pub glob: String,
}

/// Which default glob systemd-boot goes by ([`choose_default`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultChoice {
    /// The first glob matching an entry on the ESP; `None`: the first
    /// entry in systemd-boot's order boots.
    pub decides: Option<DefaultGlob>,
    /// The globs before it that match no entry on the ESP: systemd-boot
    /// ignores them.
    pub skipped: Vec<DefaultGlob>,
}

/// The automatic entries systemd-boot may add beside the files on the ESP
/// (`auto-windows` when `EFI/Microsoft/Boot/bootmgfw.efi` is there, …): a
/// default naming one may match, so it is never taken for stale.
pub const AUTO_ENTRY_IDS: &[&str] = &[
    "auto-osx",
    "auto-windows",
    "auto-efi-shell",
    "auto-efi-default",
    "auto-poweroff",
    "auto-reboot",
    "auto-reboot-to-firmware-setup",
];

/// Whether default `glob` matches the entry of ESP file `file` (a
/// `loader/entries/*.conf` or `EFI/Linux/*.efi` name, or an automatic
/// entry's id): against its id without the boot counter (as `bootctl`
/// and newer systemd-boot name it) or with it (older systemd-boot),
/// case-folded as systemd-boot does.
pub fn default_matches(glob: &str, file: &str) -> bool {
    let glob = glob.to_ascii_lowercase();
    let file = file.to_ascii_lowercase();
    let id = [".conf", ".efi"]
        .iter()
        .find(|s| file.ends_with(*s))
        .map(|s| {
            let (base, _) = split_counter(&file, s);
            format!("{base}{s}")
        });
    fnmatch(glob.as_bytes(), file.as_bytes())
        || id.is_some_and(|id| fnmatch(glob.as_bytes(), id.as_bytes()))
}

/// The default systemd-boot goes by (`config_select_default_entry`): the
/// first of `candidates` (in its order: `LoaderEntryDefault`, then
/// `loader.conf`'s `default`) that matches one of `esp_files` (every entry
/// systemd-boot finds, ours or not); one matching none is skipped, as
/// `config_find_entry` finding nothing makes systemd-boot try the next.
/// Pure.
pub fn choose_default(esp_files: &[String], candidates: Vec<DefaultGlob>) -> DefaultChoice {
    let mut choice = DefaultChoice::default();
    for c in candidates {
        if esp_files.iter().any(|f| default_matches(&c.glob, f)) {
            choice.decides = Some(c);
            break;
        }
        choice.skipped.push(c);
    }
    choice
}

/// The entry files that can be on the ESP while `slot`'s activation runs
/// its course: `esp_files` now, and our entries once the trial is written
/// and once it has failed. A default matching one of the latter is not
/// stale: it would pin a slot when the trial's entry appears. Pure.
pub fn activation_files(
    esp_files: &[String],
    entries: &BTreeMap<SlotName, Entry>,
    prefix: &str,
    tries: u64,
    slot: SlotName,
) -> Vec<String> {
    let trials = [(tries, 0), (0, 1)]
        .into_iter()
        .flat_map(|c| trial_entries(entries, prefix, slot, c))
        .map(|e| e.file);
    esp_files.iter().cloned().chain(trials).collect()
}

/// `renameat2(…, RENAME_NOREPLACE)` as a raw system call: neither nix nor
/// the C library declare it for musl targets.
fn rename_noreplace(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const RENAME_NOREPLACE: nix::libc::c_uint = 1;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (s, d) = (cstr(src)?, cstr(dst)?);
    // SAFETY: two NUL-terminated paths that outlive the call; no memory is
    // written by the kernel.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_renameat2,
            nix::libc::AT_FDCWD,
            s.as_ptr(),
            nix::libc::AT_FDCWD,
            d.as_ptr(),
            RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The backend over an ESP directory.
#[derive(Clone, Debug)]
pub struct SystemdBootBackend {
    esp: PathBuf,
    prefix: String,
    tries: u32,
    slots: BTreeMap<SlotName, EntryConfig>,
    /// Where systemd-boot's `LoaderEntryDefault`/`LoaderEntryOneShot` are
    /// read (efivarfs); `None`: not read (no EFI variables).
    efivars: Option<EfiVars>,
}

/// systemd-boot's vendor GUID (`LoaderEntryDefault`, `LoaderEntryOneShot`).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// A systemd-boot variable naming an entry: UTF-16LE up to its NUL, as
/// text (a unit that is not UTF-16 shown as U+FFFD: it names no entry of
/// ours either way). `None` when empty (as `bootctl set-default ''`
/// leaves nothing set).
pub fn loader_entry_var(data: &[u8]) -> Option<String> {
    let units = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    (!text.is_empty()).then_some(text)
}

/// What is wrong with `LoaderEntryOneShot` = `glob` for an activation of
/// `slot`, if anything: systemd-boot boots the entry it names on the next
/// boot (then deletes it), so one naming another entry makes the reboot
/// into the trial boot that entry instead: the trial never boots and a
/// good release is recorded as never booted. One naming the trial is
/// harmless: it is used once, and the trial's fallback works after it.
/// Pure.
pub fn oneshot_problem(
    entries: &BTreeMap<SlotName, Entry>,
    prefix: &str,
    tries: u64,
    slot: SlotName,
    glob: &str,
) -> Option<String> {
    let trial = trial_entries(entries, prefix, slot, (tries, 0));
    (select(&trial, Some(glob)) != Some(slot))
        .then(|| format!("systemd-boot would not boot slot {slot}'s trial on the next boot"))
}

/// Our entries once `slot` is activated with `counter` (as
/// [`SystemdBootBackend::activate`] names it): its entry one generation
/// past the other slot's.
fn trial_entries(
    entries: &BTreeMap<SlotName, Entry>,
    prefix: &str,
    slot: SlotName,
    counter: (u64, u64),
) -> Vec<Entry> {
    let other = entries.get(&slot.other());
    let own = entries.get(&slot).map_or(0, |e| e.generation);
    let generation = match other {
        Some(o) if own <= o.generation => o.generation.saturating_add(1),
        _ => own,
    };
    let trial = Entry {
        generation,
        slot,
        counter: Some(counter),
        file: entry_name(prefix, generation, slot, Some(counter)),
    };
    std::iter::once(trial).chain(other.cloned()).collect()
}

fn io_err(path: &Path, source: std::io::Error) -> BootError {
    BootError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl SystemdBootBackend {
    /// `esp`: the ESP's mount point; `prefix`: the entries' name prefix;
    /// `tries`: the boots a trial gets (`+TRIES`).
    pub fn new(
        esp: PathBuf,
        prefix: String,
        tries: u32,
        slots: BTreeMap<SlotName, EntryConfig>,
    ) -> SystemdBootBackend {
        SystemdBootBackend {
            esp,
            prefix,
            tries: tries.max(1),
            slots,
            efivars: None,
        }
    }

    /// Read systemd-boot's EFI variables from `dir` (efivarfs): a
    /// `LoaderEntryDefault` (`bootctl set-default`) overrides
    /// `loader.conf`'s `default`, and is held to the same rule.
    pub fn with_efivars(mut self, dir: PathBuf) -> SystemdBootBackend {
        self.efivars = Some(EfiVars::new(dir));
        self
    }

    /// The entry glob in systemd-boot variable `name`, and its file; `None`
    /// when unset, empty, or no variables are read.
    fn loader_var(&self, name: &str) -> Result<Option<(String, PathBuf)>, BootError> {
        let Some(vars) = &self.efivars else {
            return Ok(None);
        };
        let value = vars.get(name, LOADER_GUID)?;
        Ok(value
            .and_then(|(_, data)| loader_entry_var(&data))
            .map(|glob| (glob, vars.path(name, LOADER_GUID))))
    }

    fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    /// Our entries, each slot's first in systemd-boot's order (a second
    /// file for one slot is left alone: a cut rename on vfat can leave one).
    fn read(&self) -> Result<BTreeMap<SlotName, Entry>, BootError> {
        let dir = self.entries_dir();
        let list = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        // An empty file is no entry: systemd-boot skips an entry without
        // `linux` or `efi`, and an empty file is what a power cut leaves
        // when it falls between a vfat rename and the write-back of the
        // renamed file (see `rename`). Counted as missing, the slot's entry
        // is written again from config before it is relied on.
        //
        // systemd-boot reads regular files only: a directory, a FIFO or a
        // device named like a slot's entry is refused, naming it, rather
        // than taken for the entry (a rename would "activate" what never
        // boots) or opened (a FIFO would hang the boot-time service).
        let mut all: Vec<Entry> = Vec::new();
        for e in list.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let entry = match classify_entry(&self.prefix, name) {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(reason) => {
                    return Err(BootError::Format {
                        path: dir.join(name).display().to_string(),
                        reason,
                    })
                }
            };
            let path = dir.join(&entry.file);
            let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
            if !meta.is_file() {
                return Err(BootError::Format {
                    path: path.display().to_string(),
                    reason: "named like a boot entry but not a regular file (systemd-boot \
                             ignores it); remove it"
                        .into(),
                });
            }
            if meta.len() > 0 {
                all.push(entry);
            }
        }
        all.sort_by(boot_order);
        let mut out = BTreeMap::new();
        for e in all {
            out.entry(e.slot).or_insert(e);
        }
        Ok(out)
    }

    /// The default systemd-boot goes by: `LoaderEntryDefault` when set
    /// (it overrides `loader.conf`), else `loader.conf`'s `default`, each
    /// only when it matches an entry on the ESP ([`choose_default`]).
    fn default_glob(&self) -> Result<Option<String>, BootError> {
        let choice = choose_default(&self.esp_files()?, self.default_candidates()?);
        Ok(choice.decides.map(|d| d.glob))
    }

    /// The default globs set, in the order systemd-boot tries them.
    fn default_candidates(&self) -> Result<Vec<DefaultGlob>, BootError> {
        let mut out = Vec::new();
        if let Some((glob, path)) = self.loader_var("LoaderEntryDefault")? {
            out.push(DefaultGlob {
                source: DefaultSource::LoaderEntryDefault(path),
                glob,
            });
        }
        if let Some((line, glob)) = self.default_line()? {
            out.push(DefaultGlob {
                source: DefaultSource::LoaderConf { line },
                glob,
            });
        }
        Ok(out)
    }

    /// The names of every entry systemd-boot finds on the ESP, ours or
    /// not: type #1 `loader/entries/*.conf` and type #2 `EFI/Linux/*.efi`
    /// (regular, non-empty, not hidden: what it loads), and the automatic
    /// entries it may add ([`AUTO_ENTRY_IDS`]).
    fn esp_files(&self) -> Result<Vec<String>, BootError> {
        let mut out: Vec<String> = AUTO_ENTRY_IDS.iter().map(|s| s.to_string()).collect();
        for (dir, suffix) in [("loader/entries", ".conf"), ("EFI/Linux", ".efi")] {
            let dir = self.esp.join(dir);
            let list = match std::fs::read_dir(&dir) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, e)),
            };
            for e in list.filter_map(|e| e.ok()) {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let loaded = !name.starts_with('.')
                    && name.to_ascii_lowercase().ends_with(suffix)
                    && std::fs::metadata(e.path()).is_ok_and(|m| m.is_file() && m.len() > 0);
                if loaded {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    fn loader_conf(&self) -> PathBuf {
        self.esp.join("loader/loader.conf")
    }

    /// `loader.conf`'s `default` and its line number, if set.
    fn default_line(&self) -> Result<Option<(usize, String)>, BootError> {
        let path = self.loader_conf();
        match crate::files::read_capped(&path, MAX_LOADER_CONF) {
            Ok(b) => Ok(loader_conf_default_line(&String::from_utf8_lossy(&b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Make a renamed file's new name durable: on vfat a rename writes the
    /// new directory entry with size 0 and no first cluster and fills them
    /// in only when the file's inode is written back (`vfat_rename` →
    /// `mark_inode_dirty`); syncing the directory alone does not write the
    /// inode, so a power cut after it could still leave an empty entry.
    /// Syncing the file writes its inode into the new entry, then the
    /// directory sync makes the old name's removal durable.
    fn sync_renamed(&self, renamed: &Path) -> Result<(), BootError> {
        crate::files::open_regular(renamed)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(renamed, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), BootError> {
        let dir = self.entries_dir();
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&dir, e))
    }

    /// Rename `from` to `to` in the entries directory, never replacing a
    /// file (as `systemd-bless-boot` does), then sync the directory.
    fn rename(&self, from: &str, to: &str) -> Result<(), BootError> {
        if from == to {
            return Ok(());
        }
        let dir = self.entries_dir();
        let (src, dst) = (dir.join(from), dir.join(to));
        match rename_noreplace(&src, &dst) {
            Ok(()) => {}
            // File systems (or kernels) without the flag: check, then rename.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EINVAL | nix::libc::ENOSYS)
                ) =>
            {
                if dst.exists() {
                    return Err(io_err(&dst, std::io::ErrorKind::AlreadyExists.into()));
                }
                std::fs::rename(&src, &dst).map_err(|e| io_err(&src, e))?;
            }
            Err(e) => return Err(io_err(&src, e)),
        }
        self.sync_renamed(&dst)?;
        crate::failpoint::hit("entry-renamed");
        Ok(())
    }

    /// Remove the slot's empty entry files other than `keep` (what cut
    /// vfat renames leave), now that a complete entry stands beside them.
    fn remove_empty_entries(&self, slot: SlotName, keep: &str) -> Result<(), BootError> {
        let dir = self.entries_dir();
        let list = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        let mut removed = false;
        for e in list.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = parse_entry(&self.prefix, name).is_some_and(|p| p.slot == slot);
            if ours && name != keep && e.metadata().is_ok_and(|m| m.len() == 0) {
                let path = dir.join(name);
                std::fs::remove_file(&path).map_err(|err| io_err(&path, err))?;
                removed = true;
            }
        }
        match removed {
            true => self.sync_dir(),
            false => Ok(()),
        }
    }

    /// The line naming what a missing entry of `slot` boots (`linux` or
    /// `efi`, from config), or why none can be written: asked before an
    /// install writes a byte ([`Bootloader::check_activate`]) and by
    /// [`Self::create`].
    fn entry_target(&self, slot: SlotName) -> Result<String, BootError> {
        let cfg = self.slots.get(&slot).cloned().unwrap_or_default();
        match (&cfg.linux, &cfg.efi) {
            (Some(l), _) => Ok(format!("linux {l}\n")),
            (None, Some(e)) => Ok(format!("efi {e}\n")),
            (None, None) => Err(BootError::Format {
                path: self.entries_dir().display().to_string(),
                reason: format!(
                    "no entry {}-*-{}.conf for slot {slot}, and bootloader.systemd-boot.{slot} has no linux or efi to write one",
                    self.prefix,
                    slot.as_str().to_ascii_lowercase()
                ),
            }),
        }
    }

    /// Write a missing entry from config, under its final name (new, so a
    /// cut leaves no entry or a complete one: the temp name is not `.conf`).
    fn create(&self, slot: SlotName, name: &str) -> Result<Entry, BootError> {
        let cfg = self.slots.get(&slot).cloned().unwrap_or_default();
        let dir = self.entries_dir();
        let mut text = format!(
            "title {}\n",
            cfg.title
                .clone()
                .unwrap_or_else(|| format!("abupdate slot {slot}"))
        );
        text.push_str(&self.entry_target(slot)?);
        for i in &cfg.initrd {
            text.push_str(&format!("initrd {i}\n"));
        }
        let options = cfg.options.clone().unwrap_or_default();
        let slot_arg = format!("abupdate.slot={slot}");
        let options = if options.split_whitespace().any(|w| w == slot_arg) {
            options
        } else {
            format!("{options} {slot_arg}").trim().to_string()
        };
        text.push_str(&format!("options {options}\n"));
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = crate::files::create_replacing(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        drop(f);
        crate::agent::log(&format!(
            "slot {slot}: no boot entry on the ESP; writing {name} from config"
        ));
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&tmp, e))?;
        self.sync_renamed(&path)?;
        self.remove_empty_entries(slot, name)?;
        crate::failpoint::hit("entry-renamed");
        parse_entry(&self.prefix, name).ok_or_else(|| BootError::Format {
            path: name.to_string(),
            reason: "not an entry name".into(),
        })
    }
}

impl Bootloader for SystemdBootBackend {
    fn primary(&self) -> Result<Option<SlotName>, BootError> {
        let entries: Vec<Entry> = self.read()?.into_values().collect();
        Ok(select(&entries, self.default_glob()?.as_deref()))
    }

    /// See [`Entry::tried`]; no entry: not tried.
    fn tried(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        Ok(Some(self.read()?.get(&slot).is_some_and(Entry::tried)))
    }

    fn tells_a_trial_boot(&self, _booted: SlotName) -> bool {
        true
    }

    /// A committed entry counts no tries: `+0` is a retirement's.
    fn committed_marked_bad(&self, slot: SlotName) -> Result<Option<bool>, BootError> {
        Ok(Some(self.read()?.get(&slot).is_some_and(Entry::bad)))
    }

    fn state(&self, slot: SlotName) -> Result<BootState, BootError> {
        Ok(match self.read()?.get(&slot) {
            Some(e) if !e.bad() => BootState::Good,
            _ => BootState::Bad,
        })
    }

    fn set_state(&self, slot: SlotName, state: BootState) -> Result<(), BootError> {
        let entries = self.read()?;
        match (entries.get(&slot), state) {
            (None, BootState::Bad) => Ok(()),
            (None, BootState::Good) => {
                self.create(slot, &entry_name(&self.prefix, 0, slot, None))?;
                Ok(())
            }
            (Some(e), BootState::Good) => {
                self.rename(&e.file, &entry_name(&self.prefix, e.generation, slot, None))
            }
            (Some(e), BootState::Bad) => {
                let done = e.counter.map(|(_, d)| d).unwrap_or(0);
                self.rename(
                    &e.file,
                    &entry_name(&self.prefix, e.generation, slot, Some((0, done))),
                )
            }
        }
    }

    fn activate(&self, slot: SlotName) -> Result<(), BootError> {
        let mut entries = self.read()?;
        let other = entries.get(&slot.other()).cloned();
        // One generation past the other slot's: a generation that cannot
        // grow (u64::MAX, from a hand-named entry) is refused, never
        // wrapped to 0 (which would sort the target last).
        let fresh = |own: u64| {
            match &other {
            Some(o) if own <= o.generation => {
                o.generation.checked_add(1).ok_or_else(|| BootError::Format {
                    path: self.entries_dir().join(&o.file).display().to_string(),
                    reason: format!(
                        "generation {} is the largest there is: no entry can sort before it; rename it",
                        o.generation
                    ),
                })
            }
            _ => Ok(own),
        }
        };
        let current = match entries.get(&slot) {
            Some(e) => e.clone(),
            None => {
                let e = self.create(
                    slot,
                    &entry_name(&self.prefix, fresh(0)?, slot, Some((0, 0))),
                )?;
                entries.insert(slot, e.clone());
                e
            }
        };
        let list: Vec<Entry> = entries.values().cloned().collect();
        let default = self.default_glob()?;
        if current.counter.is_none() && select(&list, default.as_deref()) == Some(slot) {
            return Ok(());
        }
        let tries = self.tries as u64;
        self.rename(
            &current.file,
            &entry_name(
                &self.prefix,
                fresh(current.generation)?,
                slot,
                Some((tries, 0)),
            ),
        )
    }

    /// The install's check before it marks anything: besides the entries
    /// being readable, `loader.conf`'s `default` must not pin one slot
    /// ([`default_problem`]), or the trial would never boot (and the
    /// release be recorded as never booted) or never fall back.
    /// The same for `LoaderEntryDefault` (which overrides loader.conf); a
    /// default matching no entry on the ESP, now or once the trial is
    /// written, is skipped with a warning, as systemd-boot skips it.
    /// `LoaderEntryOneShot` must not send the reboot elsewhere
    /// ([`oneshot_problem`]).
    fn check_activate(&self, slot: SlotName) -> Result<(), BootError> {
        let entries = self.read()?;
        // The activation writes a missing entry from config: one it cannot
        // write is found now, not after the image is written (found from
        // outside, stop 47).
        if !entries.contains_key(&slot) {
            self.entry_target(slot)?;
        }
        let tries = self.tries as u64;
        let refuse = |path: PathBuf, reason: String| {
            Err(BootError::Format {
                path: path.display().to_string(),
                reason,
            })
        };
        let esp = self.esp_files()?;
        let files = activation_files(&esp, &entries, &self.prefix, tries, slot);
        if let Some((glob, path)) = self.loader_var("LoaderEntryOneShot")? {
            // Looked up as the default is (`config_find_entry`): one that
            // matches no entry is skipped by systemd-boot, said once here.
            if !files.iter().any(|f| default_matches(&glob, f)) {
                crate::agent::log(&format!(
                    "warning: {}: `LoaderEntryOneShot` is `{glob}` and matches no boot entry on the ESP: systemd-boot ignores it (clear it: `bootctl set-oneshot ''`)",
                    path.display()
                ));
            } else if let Some(why) = oneshot_problem(&entries, &self.prefix, tries, slot, &glob) {
                return refuse(
                    path,
                    format!(
                        "`LoaderEntryOneShot` is `{glob}`: {why}; clear it (`bootctl set-oneshot ''`)"
                    ),
                );
            }
        }
        // A default matching no entry, now or once the trial is written, is
        // skipped by systemd-boot (a stale one naming a removed entry):
        // said once, and the next source decides.
        let choice = choose_default(&files, self.default_candidates()?);
        for s in &choice.skipped {
            crate::agent::log(&match &s.source {
                DefaultSource::LoaderEntryDefault(path) => format!(
                    "warning: {}: `LoaderEntryDefault` is `{}` and matches no boot entry on the ESP: systemd-boot ignores it (clear it: `bootctl set-default ''`)",
                    path.display(),
                    s.glob
                ),
                DefaultSource::LoaderConf { line } => format!(
                    "warning: {}: line {line}: `default {}` matches no boot entry on the ESP: systemd-boot ignores it",
                    self.loader_conf().display(),
                    s.glob
                ),
            });
        }
        let Some(DefaultGlob { source, glob }) = choice.decides else {
            // No default: systemd-boot boots the first of all its entries,
            // and another OS's may sort first (by its id, its `sort-key`, a
            // type #2 UKI's always): the trial would never boot (found
            // from outside). Its own automatic entries come after them all.
            let theirs = esp.iter().find(|f| {
                !AUTO_ENTRY_IDS.contains(&f.as_str()) && parse_entry(&self.prefix, f).is_none()
            });
            return match theirs {
                None => Ok(()),
                Some(f) => refuse(
                    self.loader_conf(),
                    format!(
                        "no `default`, so systemd-boot boots the first of its entries, which may be {} and not slot {slot}'s trial; add `default {}-*`",
                        crate::text::show(f.as_bytes()),
                        self.prefix
                    ),
                ),
            };
        };
        let Some(why) = default_problem(&entries, &self.prefix, tries, slot, &glob) else {
            return Ok(());
        };
        match source {
            DefaultSource::LoaderEntryDefault(path) => refuse(
                path,
                format!(
                    "`LoaderEntryDefault` is `{glob}` and pins one slot's entry: {why}; set `{}-*` (`bootctl set-default '{}-*'`) or clear it (`bootctl set-default ''`)",
                    self.prefix, self.prefix
                ),
            ),
            DefaultSource::LoaderConf { line } => refuse(
                self.loader_conf(),
                format!(
                    "line {line}: `default {glob}` pins one slot's entry: {why}; use `default {}-*` or none",
                    self.prefix
                ),
            ),
        }
    }

    /// The ESP's names, the loader's variables and `loader.conf`'s line are
    /// outside text on its way to a terminal: each quoted by the shared
    /// rule ([`crate::text::show`]).
    fn describe(&self) -> Result<Vec<(String, String)>, BootError> {
        let show = |t: &str| crate::text::show(t.as_bytes());
        let mut out: Vec<(String, String)> = self
            .read()?
            .into_iter()
            .map(|(s, e)| (format!("entry.{s}"), show(&e.file)))
            .collect();
        if let Some((d, _)) = self.loader_var("LoaderEntryDefault")? {
            out.push(("LoaderEntryDefault".into(), show(&d)));
        }
        if let Some((d, _)) = self.loader_var("LoaderEntryOneShot")? {
            out.push(("LoaderEntryOneShot".into(), show(&d)));
        }
        if let Some((_, d)) = self.default_line()? {
            out.push(("loader.conf default".into(), show(&d)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotName::{A, B};

    #[test]
    fn an_entry_is_tried_once_systemd_boot_counted_a_boot_no_one_blessed() {
        let entry = |counter| Entry {
            generation: 1,
            slot: B,
            counter,
            file: String::new(),
        };
        assert!(!entry(None).tried(), "blessed");
        assert!(!entry(Some((3, 0))).tried(), "activated, not booted yet");
        assert!(entry(Some((2, 1))).tried(), "booted on its trial");
        assert!(entry(Some((0, 3))).tried(), "given up");
    }

    #[test]
    fn counters_parse_as_systemd_boot_does() {
        assert_eq!(split_counter("x+3.conf", ".conf"), ("x", Some((3, 0))));
        assert_eq!(split_counter("x+2-1.conf", ".conf"), ("x", Some((2, 1))));
        assert_eq!(split_counter("x+0-3.conf", ".conf"), ("x", Some((0, 3))));
        assert_eq!(split_counter("x.conf", ".conf"), ("x", None));
        // The last '+' counts; a counter in the middle is no counter.
        assert_eq!(split_counter("a+1+2.conf", ".conf"), ("a+1", Some((2, 0))));
        assert_eq!(split_counter("a+1x.conf", ".conf"), ("a+1x", None));
        assert_eq!(split_counter("a+.conf", ".conf"), ("a+", None));
        assert_eq!(split_counter("a+1-.conf", ".conf"), ("a+1-", None));
        assert_eq!(split_counter("a+-1.conf", ".conf"), ("a+-1", None));
        assert_eq!(
            split_counter("a+99999999999.conf", ".conf"),
            ("a+99999999999", None)
        );
    }

    #[test]
    fn entry_names_round_trip() {
        for c in [None, Some((3, 0)), Some((2, 1)), Some((0, 3))] {
            let n = entry_name("abupdate", 12, B, c);
            let e = parse_entry("abupdate", &n).expect("parse");
            assert_eq!((e.generation, e.slot, e.counter), (12, B, c), "{n}");
        }
        assert_eq!(entry_name("p", 2, A, Some((3, 0))), "p-2-a+3.conf");
        assert!(parse_entry("abupdate", "abupdate-x-a.conf").is_none());
        assert!(parse_entry("abupdate", "abupdate-1-c.conf").is_none());
        assert!(parse_entry("abupdate", "other-1-a.conf").is_none());
        assert!(parse_entry("abupdate", "abupdate-1-a.conf.tmp").is_none());
    }

    fn e(generation: u64, slot: SlotName, counter: Option<(u64, u64)>) -> Entry {
        Entry {
            generation,
            slot,
            counter,
            file: entry_name("abupdate", generation, slot, counter),
        }
    }

    #[test]
    fn selection_follows_the_sort_and_the_glob() {
        // Newer generation first.
        assert_eq!(
            select(&[e(1, A, None), e(2, B, Some((1, 0)))], None),
            Some(B)
        );
        // Numeric, not lexical: 10 > 9.
        assert_eq!(select(&[e(10, A, None), e(9, B, None)], None), Some(A));
        // Bad last, even when newer.
        assert_eq!(
            select(&[e(1, A, None), e(2, B, Some((0, 1)))], None),
            Some(A)
        );
        // A glob over both keeps the fallback.
        let g = Some("abupdate-*");
        assert_eq!(select(&[e(1, A, None), e(2, B, Some((0, 1)))], g), Some(A));
        // A glob pinning B boots B even when bad: why we never pin.
        let pin = Some("abupdate-*-b*");
        assert_eq!(
            select(&[e(1, A, None), e(2, B, Some((0, 1)))], pin),
            Some(B)
        );
        assert_eq!(select(&[e(1, A, None)], Some("debian-*")), None);
        // All bad: the first of them.
        assert_eq!(
            select(&[e(1, A, Some((0, 3))), e(2, B, Some((0, 1)))], None),
            Some(B)
        );
    }

    /// The glob that picks which of our entries boots ([`select`]) and the
    /// one that tells a stale default ([`default_matches`]) are one rule:
    /// an entry is picked exactly when its file matches, also when the glob
    /// matches only the id without the counter, or only case-folded (an
    /// upper-case prefix), or only as written (a zero-padded generation).
    #[test]
    fn select_picks_an_entry_exactly_when_default_matches_its_file() {
        let entries = [
            ("AB", "AB-2-b+3.conf"),
            ("abupdate", "abupdate-007-a+0-1.conf"),
            ("abupdate", "abupdate-4-b.conf"),
        ];
        let globs = [
            "ab-2-b.conf",
            "AB-2-B+3.CONF",
            "ab-*-b.conf",
            "abupdate-007-a.conf",
            "abupdate-7-a.conf",
            "ABUPDATE-4-B.conf",
            "abupdate-4-b+*",
            "*",
            "debian-*",
        ];
        for (prefix, file) in entries {
            let entry = parse_entry(prefix, file).expect(file);
            for glob in globs {
                assert_eq!(
                    select(std::slice::from_ref(&entry), Some(glob)).is_some(),
                    default_matches(glob, file),
                    "{glob} on {file}"
                );
            }
        }
        // The counter stripped and case folded, the name as on the ESP.
        assert!(default_matches("ab-2-b.conf", "AB-2-b+3.conf"));
        assert!(default_matches(
            "abupdate-007-a.conf",
            "abupdate-007-a+0-1.conf"
        ));
        assert!(!default_matches(
            "abupdate-7-a.conf",
            "abupdate-007-a+0-1.conf"
        ));
    }

    #[test]
    fn fnmatch_matches_like_systemd() {
        assert!(fnmatch(b"abupdate-*", b"abupdate-2-b.conf"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(!fnmatch(b"a?c", b"ac"));
        assert!(fnmatch(b"x[ab]y", b"xby"));
        assert!(!fnmatch(b"x[!ab]y", b"xby"));
        assert!(fnmatch(b"x[a-c]y", b"xcy"));
        assert!(fnmatch(b"x\\*", b"x*"));
        assert!(!fnmatch(b"x\\*", b"xy"));
        assert!(!fnmatch(b"x[ab", b"xa"));
    }

    #[test]
    fn a_generation_that_cannot_grow_refuses_the_activation_naming_the_entry() {
        let esp = crate::testutil::TempDir::new("sd-boot-gen");
        let entries = esp.path().join("loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        let top = entry_name("abupdate", u64::MAX, A, None);
        std::fs::write(entries.join(&top), "title A\n").unwrap();
        let bad = entry_name("abupdate", 1, B, Some((0, 1)));
        std::fs::write(entries.join(&bad), "title B\n").unwrap();
        let backend = SystemdBootBackend::new(
            esp.path().to_path_buf(),
            "abupdate".into(),
            3,
            BTreeMap::new(),
        );
        let err = backend.activate(B).unwrap_err().to_string();
        assert!(err.contains(&top) && err.contains("largest"), "{err}");
        // Nothing was renamed: B is still the bad entry, A still first.
        assert!(entries.join(&bad).exists() && entries.join(&top).exists());
        assert_eq!(std::fs::read_dir(&entries).unwrap().count(), 2);
    }

    #[test]
    fn a_generation_past_u64_is_refused_naming_the_entry_not_taken_for_none() {
        let huge = "abupdate-99999999999999999999999-a.conf";
        let why = classify_entry("abupdate", huge).expect_err("past u64");
        assert!(
            why.contains("99999999999999999999999") && why.contains("slot A"),
            "{why}"
        );
        assert_eq!(classify_entry("abupdate", "abupdate--a.conf"), Ok(None));
        assert_eq!(
            classify_entry("abupdate", "abupdate-99999999999999999999999-c.conf"),
            Ok(None)
        );
        let esp = crate::testutil::TempDir::new("sd-boot-huge");
        let entries = esp.path().join("loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join(huge), "title A\nlinux /a\n").unwrap();
        let backend = SystemdBootBackend::new(
            esp.path().to_path_buf(),
            "abupdate".into(),
            3,
            BTreeMap::new(),
        );
        let err = backend.primary().unwrap_err().to_string();
        assert!(
            err.starts_with(&entries.join(huge).display().to_string()),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_directory_named_like_an_entry_is_refused_never_renamed() {
        let esp = crate::testutil::TempDir::new("sd-boot-dir");
        let entries = esp.path().join("loader/entries");
        std::fs::create_dir_all(entries.join("abupdate-0-b+0.conf")).unwrap();
        std::fs::write(entries.join("abupdate-1-a.conf"), "title A\nlinux /a\n").unwrap();
        let backend = SystemdBootBackend::new(
            esp.path().to_path_buf(),
            "abupdate".into(),
            3,
            BTreeMap::new(),
        );
        let err = backend.activate(B).unwrap_err().to_string();
        assert!(
            err.contains("abupdate-0-b+0.conf") && err.contains("not a regular file"),
            "{err}"
        );
        assert!(entries.join("abupdate-0-b+0.conf").is_dir(), "renamed");
        assert_eq!(std::fs::read_dir(&entries).unwrap().count(), 2);
    }

    #[test]
    fn a_default_pinning_one_slot_is_a_problem_for_an_activation() {
        let p = "abupdate";
        let now = BTreeMap::from([(A, e(1, A, None)), (B, e(0, B, Some((0, 0))))]);
        for glob in ["abupdate-*", "abupdate-*.conf", "*"] {
            assert_eq!(default_problem(&now, p, 3, B, glob), None, "{glob}");
        }
        let why = default_problem(&now, p, 3, B, "abupdate-1-a.conf").expect("pinned to A");
        assert_eq!(why, "systemd-boot would never boot slot B's trial");
        let why = default_problem(&now, p, 3, B, "abupdate-*-b*").expect("pinned to B");
        assert!(why.contains("even once it failed"), "{why}");
        // No other entry: nothing to fall back to, nothing pinned away.
        let alone = BTreeMap::from([(B, e(0, B, Some((0, 0))))]);
        assert_eq!(default_problem(&alone, p, 3, B, "abupdate-*"), None);
    }

    #[test]
    fn an_install_is_refused_naming_loader_conf_and_the_line_of_a_pinned_default() {
        let esp = crate::testutil::TempDir::new("sd-boot-pinned");
        let entries = esp.path().join("loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join("abupdate-1-a.conf"), "title A\nlinux /a\n").unwrap();
        std::fs::write(entries.join("abupdate-0-b+0.conf"), "title B\nlinux /b\n").unwrap();
        let conf = esp.path().join("loader/loader.conf");
        std::fs::write(&conf, "timeout 0\ndefault abupdate-1-a.conf\n").unwrap();
        let backend = SystemdBootBackend::new(
            esp.path().to_path_buf(),
            "abupdate".into(),
            3,
            BTreeMap::new(),
        );
        let err = backend.check_activate(B).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: line 2: `default abupdate-1-a.conf` pins one slot's entry: systemd-boot would never boot slot B's trial; use `default abupdate-*` or none",
                conf.display()
            )
        );
        std::fs::write(&conf, "timeout 0\ndefault abupdate-*\n").unwrap();
        backend.check_activate(B).expect("both slots match");
    }

    /// An ESP with A good (`abupdate-1-a.conf`) and B bad, `loader.conf`
    /// defaulting to both, and an efivars directory: the backend over it.
    fn esp_with_efivars(name: &str) -> (crate::testutil::TempDir, SystemdBootBackend, EfiVars) {
        let esp = crate::testutil::TempDir::new(name);
        let entries = esp.path().join("loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join("abupdate-1-a.conf"), "title A\nlinux /a\n").unwrap();
        std::fs::write(entries.join("abupdate-0-b+0.conf"), "title B\nlinux /b\n").unwrap();
        let conf = esp.path().join("loader/loader.conf");
        std::fs::write(conf, "timeout 0\ndefault abupdate-*\n").unwrap();
        let dir = esp.path().join("efivars");
        std::fs::create_dir_all(&dir).unwrap();
        let backend = SystemdBootBackend::new(
            esp.path().to_path_buf(),
            "abupdate".into(),
            3,
            BTreeMap::new(),
        )
        .with_efivars(dir.clone());
        (esp, backend, EfiVars::new(dir))
    }

    /// `text` as systemd-boot's variables hold it: UTF-16LE, NUL-ended.
    fn utf16z(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn an_install_is_refused_naming_a_loader_entry_default_that_pins_one_slot() {
        let (_esp, backend, vars) = esp_with_efivars("sd-boot-efivar-default");
        let path = vars.path("LoaderEntryDefault", LOADER_GUID);
        vars.set(
            "LoaderEntryDefault",
            LOADER_GUID,
            7,
            &utf16z("abupdate-1-a.conf"),
        )
        .unwrap();
        assert_eq!(
            backend.primary().unwrap(),
            Some(A),
            "it overrides loader.conf"
        );
        let err = backend.check_activate(B).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: `LoaderEntryDefault` is `abupdate-1-a.conf` and pins one slot's entry: systemd-boot would never boot slot B's trial; set `abupdate-*` (`bootctl set-default 'abupdate-*'`) or clear it (`bootctl set-default ''`)",
                path.display()
            )
        );
        // Pinned to the target: no fallback once it fails.
        vars.set(
            "LoaderEntryDefault",
            LOADER_GUID,
            7,
            &utf16z("abupdate-*-b*"),
        )
        .unwrap();
        let err = backend.check_activate(B).unwrap_err().to_string();
        assert!(err.contains("even once it failed"), "{err}");
        // Both slots, or cleared (empty): as loader.conf's `default abupdate-*`.
        for value in [utf16z("abupdate-*"), utf16z("")] {
            vars.set("LoaderEntryDefault", LOADER_GUID, 7, &value)
                .unwrap();
            backend.check_activate(B).expect("both slots match");
        }
    }

    fn var(glob: &str) -> DefaultGlob {
        DefaultGlob {
            source: DefaultSource::LoaderEntryDefault(PathBuf::from("/v")),
            glob: glob.into(),
        }
    }

    fn conf(glob: &str) -> DefaultGlob {
        DefaultGlob {
            source: DefaultSource::LoaderConf { line: 2 },
            glob: glob.into(),
        }
    }

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn no_default_set_leaves_the_first_entry_to_boot() {
        let esp = files(&["abupdate-1-a.conf"]);
        assert_eq!(choose_default(&esp, vec![]), DefaultChoice::default());
    }

    #[test]
    fn a_loader_entry_default_matching_an_entry_decides_and_loader_conf_is_not_read() {
        let esp = files(&["abupdate-1-a.conf", "abupdate-0-b+0.conf"]);
        let choice = choose_default(&esp, vec![var("abupdate-1-a.conf"), conf("gone.conf")]);
        assert_eq!(choice.decides, Some(var("abupdate-1-a.conf")));
        assert_eq!(choice.skipped, vec![]);
    }

    #[test]
    fn a_stale_loader_entry_default_is_skipped_and_loader_conf_decides() {
        let esp = files(&["abupdate-1-a.conf", "abupdate-0-b+0.conf"]);
        let choice = choose_default(&esp, vec![var("old-kernel.conf"), conf("abupdate-*")]);
        assert_eq!(choice.decides, Some(conf("abupdate-*")));
        assert_eq!(choice.skipped, vec![var("old-kernel.conf")]);
    }

    #[test]
    fn stale_defaults_in_both_sources_leave_the_first_entry_to_boot() {
        let esp = files(&["abupdate-1-a.conf"]);
        let choice = choose_default(&esp, vec![var("old*"), conf("gone.conf")]);
        assert_eq!(choice.decides, None);
        assert_eq!(choice.skipped, vec![var("old*"), conf("gone.conf")]);
    }

    #[test]
    fn a_default_matching_only_another_os_entry_still_decides() {
        for other in ["debian-6.1.conf", "fedora.efi", "auto-windows"] {
            let esp = files(&["abupdate-1-a.conf", other]);
            let glob = other.split('.').next().unwrap().to_string() + "*";
            let choice = choose_default(&esp, vec![var(&glob)]);
            assert_eq!(choice.decides, Some(var(&glob)), "{other}");
            assert_eq!(choice.skipped, vec![], "{other}");
        }
    }

    #[test]
    fn a_default_matches_an_entry_with_or_without_its_counter_in_any_case() {
        assert!(default_matches("abupdate-0-b.conf", "abupdate-0-b+0.conf"));
        assert!(default_matches(
            "abupdate-0-b+0.conf",
            "abupdate-0-b+0.conf"
        ));
        assert!(default_matches("Linux-6.efi", "linux-6+2-1.EFI"));
        assert!(default_matches("ABUPDATE-*", "abupdate-1-a.conf"));
        assert!(!default_matches("abupdate-1-a.conf", "abupdate-1-b.conf"));
    }

    #[test]
    fn a_default_matching_only_the_trial_to_come_is_not_stale() {
        // No entry of B yet: `abupdate-*-b*` matches nothing now but pins
        // B once its trial is written.
        let now: BTreeMap<SlotName, Entry> = [(A, e(1, A, None))].into();
        let esp = files(&["abupdate-1-a.conf"]);
        let all = activation_files(&esp, &now, "abupdate", 3, B);
        assert!(all.contains(&"abupdate-2-b+3.conf".to_string()), "{all:?}");
        assert!(
            all.contains(&"abupdate-2-b+0-1.conf".to_string()),
            "{all:?}"
        );
        let choice = choose_default(&all, vec![var("abupdate-*-b*")]);
        assert_eq!(choice.decides, Some(var("abupdate-*-b*")));
    }

    #[test]
    fn a_stale_loader_entry_default_does_not_refuse_the_install_and_the_trial_boots() {
        let (esp, backend, vars) = esp_with_efivars("sd-boot-efivar-stale");
        vars.set("LoaderEntryDefault", LOADER_GUID, 7, &utf16z("old-os.conf"))
            .unwrap();
        assert_eq!(backend.primary().unwrap(), Some(A));
        backend
            .check_activate(B)
            .expect("a stale default is skipped");
        backend.activate(B).unwrap();
        assert_eq!(backend.primary().unwrap(), Some(B));
        // The same glob naming another OS's entry on the ESP pins it.
        std::fs::write(
            esp.path().join("loader/entries/old-os.conf"),
            "title O\nlinux /o\n",
        )
        .unwrap();
        assert_eq!(backend.primary().unwrap(), None, "the other OS boots");
        let err = backend.check_activate(A).unwrap_err().to_string();
        assert!(
            err.contains("`LoaderEntryDefault` is `old-os.conf` and pins"),
            "{err}"
        );
    }

    #[test]
    fn a_stale_loader_entry_default_leaves_a_pinning_loader_conf_to_refuse_the_install() {
        let (esp, backend, vars) = esp_with_efivars("sd-boot-efivar-stale-conf");
        vars.set("LoaderEntryDefault", LOADER_GUID, 7, &utf16z("gone*"))
            .unwrap();
        let conf = esp.path().join("loader/loader.conf");
        std::fs::write(&conf, "default abupdate-1-a.conf\n").unwrap();
        let err = backend.check_activate(B).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: line 1: `default abupdate-1-a.conf` pins",
                conf.display()
            )),
            "{err}"
        );
        // A stale loader.conf default too: the first entry, the trial, boots.
        std::fs::write(&conf, "default abupdate-1-a.conf.old\n").unwrap();
        backend.check_activate(B).expect("both stale");
    }

    #[test]
    fn a_one_shot_entry_of_another_entry_refuses_the_install_one_of_the_trial_or_of_no_entry_not() {
        let (_esp, backend, vars) = esp_with_efivars("sd-boot-efivar-oneshot");
        vars.set(
            "LoaderEntryOneShot",
            LOADER_GUID,
            7,
            &utf16z("abupdate-1-a.conf"),
        )
        .unwrap();
        let err = backend.check_activate(B).unwrap_err().to_string();
        assert!(
            err.contains("`LoaderEntryOneShot` is `abupdate-1-a.conf`: systemd-boot would not boot slot B's trial on the next boot")
                && err.contains("bootctl set-oneshot ''"),
            "{err}"
        );
        // One naming the trial is used once: its fallback still works.
        vars.set(
            "LoaderEntryOneShot",
            LOADER_GUID,
            7,
            &utf16z("abupdate-*-b*"),
        )
        .unwrap();
        backend.check_activate(B).expect("the trial's own one-shot");
        // One naming no entry on the ESP (a stale `bootctl set-oneshot`)
        // is skipped by systemd-boot: it used to refuse every install.
        vars.set(
            "LoaderEntryOneShot",
            LOADER_GUID,
            7,
            &utf16z("removed-kernel.conf"),
        )
        .unwrap();
        backend.check_activate(B).expect("a stale one-shot");
        // One naming another OS's entry on the ESP still sends the reboot
        // there: refused.
        let other = _esp.path().join("loader/entries/removed-kernel.conf");
        std::fs::write(&other, "title other\nlinux /k/linux\n").unwrap();
        let err = backend.check_activate(B).unwrap_err().to_string();
        assert!(
            err.contains("`LoaderEntryOneShot` is `removed-kernel.conf`"),
            "{err}"
        );
    }

    #[test]
    fn a_loader_entry_variable_is_read_up_to_its_nul() {
        assert_eq!(
            loader_entry_var(&utf16z("abupdate-1-a.conf")).as_deref(),
            Some("abupdate-1-a.conf")
        );
        assert_eq!(loader_entry_var(&[0, 0]), None);
        assert_eq!(loader_entry_var(&[]), None);
        // A lone surrogate is no entry name of ours: replaced, not trusted.
        assert_eq!(
            loader_entry_var(&[0x00, 0xd8, 0, 0]).as_deref(),
            Some("\u{fffd}")
        );
    }

    /// `status` shows `loader.conf`'s default as the file says it, but
    /// quoted: an ESC or a bidi override in it reaches no terminal raw.
    #[test]
    fn the_described_loader_conf_default_is_quoted() {
        let esp = crate::testutil::TempDir::new("sd-boot-describe");
        std::fs::create_dir_all(esp.path().join("loader/entries")).unwrap();
        std::fs::write(
            esp.path().join("loader/loader.conf"),
            "default abupdate-\u{1b}[2J\u{202e}*\n",
        )
        .unwrap();
        let backend = SystemdBootBackend::new(
            esp.path().to_path_buf(),
            "abupdate".into(),
            3,
            BTreeMap::new(),
        );
        let described = backend.describe().unwrap();
        assert_eq!(
            described,
            [(
                "loader.conf default".to_string(),
                "abupdate-\\x1b[2J\\xe2\\x80\\xae*".to_string()
            )]
        );
    }

    #[test]
    fn loader_conf_default_is_read() {
        assert_eq!(
            loader_conf_default("# c\ntimeout 3\ndefault  abupdate-*\n").as_deref(),
            Some("abupdate-*")
        );
        assert_eq!(loader_conf_default("timeout 3\n"), None);
        // The last one counts, as systemd-boot reads the file.
        assert_eq!(
            loader_conf_default_line("default a\ntimeout 3\ndefault\tb \n"),
            Some((3, "b".into()))
        );
    }
}
