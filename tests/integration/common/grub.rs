//! The one model of GRUB's slot choice in the tests: what
//! `scripts/grub/grub.cfg` does with the grubenv it loads, rule for rule
//! (its `ab_select`, the new round, the no-OK-slot fallback, the budget
//! countdown, and GRUB 2.06's `-eq`, which reads a value with strtoul).
//! Every test that plays GRUB (`TestHost::boot`, `loaders::Host` on GRUB)
//! asks [`choose`]; none keeps its own rules.
//!
//! The invariant guarded: the model boots what real GRUB boots.
//! `the_model_replays_the_grub_selftest_scenarios` runs the VM self-test's
//! scenarios (`scripts/vm/selftest/*.sh`, which real GRUB passes in qemu:
//! `scripts/vm-test.sh --grub-selftest`) through the model, reading their
//! env edits and expectations from the scenario files themselves.

use std::collections::BTreeMap;

/// A grubenv as `grub-editenv list` shows it.
pub type Env = BTreeMap<String, String>;

/// Why grub.cfg picked the slot it boots (its `ab_how`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// The first slot of ORDER that is OK with its try available.
    Normal,
    /// None was: every OK slot got one more try, then the same selection.
    NewRound,
    /// No slot is OK at all: the first slot of ORDER, flags untouched.
    NoOkSlot,
}

impl How {
    /// The word grub.cfg prints (`booting slot A (new-round)`).
    pub fn name(self) -> &'static str {
        match self {
            How::Normal => "normal",
            How::NewRound => "new-round",
            How::NoOkSlot => "no-ok-slot",
        }
    }
}

/// What one boot through grub.cfg does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The slot booted: "A" or "B".
    pub slot: &'static str,
    /// Why.
    pub how: How,
    /// The variables `save_env` writes back before booting it.
    pub writes: Vec<(String, String)>,
}

/// The variables grub.cfg loads (its `load_env` whitelist).
const LOADED: [&str; 7] = [
    "ORDER", "A_OK", "A_TRY", "A_LEFT", "B_OK", "B_TRY", "B_LEFT",
];

/// GRUB 2.06's `[ "$v" -eq N ]`: strtoul of the leading digits; a
/// non-number or an empty value reads as 0.
fn num(v: Option<&String>) -> u64 {
    let v = v.map(String::as_str).unwrap_or("");
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// `ab_countdown`: the budget after one more try; anything but 2..9
/// allows exactly this one (-> 0).
fn countdown(left: &str) -> &'static str {
    match left {
        "9" => "8",
        "8" => "7",
        "7" => "6",
        "6" => "5",
        "5" => "4",
        "4" => "3",
        "3" => "2",
        "2" => "1",
        _ => "0",
    }
}

fn other(s: &'static str) -> &'static str {
    if s == "A" {
        "B"
    } else {
        "A"
    }
}

/// The budget of slot `s` when budget mode is on for it (X_LEFT non-empty).
fn left<'a>(v: &'a Env, s: &str) -> Option<&'a str> {
    v.get(&format!("{s}_LEFT"))
        .map(String::as_str)
        .filter(|l| !l.is_empty())
}

fn ok(v: &Env, s: &str) -> bool {
    num(v.get(&format!("{s}_OK"))) == 1
}

fn order(v: &Env) -> Vec<&'static str> {
    let order = v.get("ORDER").map(String::as_str).unwrap_or("");
    order
        .split_whitespace()
        .filter_map(|s| match s {
            "A" => Some("A"),
            "B" => Some("B"),
            _ => None,
        })
        .collect()
}

/// `ab_select`: the first slot of ORDER that is OK and has its try.
fn select(v: &Env) -> Option<&'static str> {
    order(v).into_iter().find(|s| {
        ok(v, s)
            && match left(v, s) {
                Some(l) => l != "0",
                None => num(v.get(&format!("{s}_TRY"))) == 0,
            }
    })
}

/// One boot through grub.cfg with `env` on disk (an unreadable env is an
/// empty one: grub.cfg then keeps its defaults).
pub fn choose(env: &Env) -> Choice {
    // The defaults, then what load_env takes from the file.
    let mut v: Env = [("ORDER", "A B"), ("A_OK", "0"), ("A_TRY", "0")]
        .into_iter()
        .chain([("B_OK", "0"), ("B_TRY", "0")])
        .map(|(k, x)| (k.to_string(), x.to_string()))
        .collect();
    for k in LOADED {
        if let Some(x) = env.get(k) {
            v.insert(k.to_string(), x.clone());
        }
    }
    let mut how = How::Normal;
    let mut slot = select(&v);
    if slot.is_none() {
        how = How::NewRound;
        for s in ["A", "B"] {
            if ok(&v, s) {
                v.insert(format!("{s}_TRY"), "0".into());
                if left(&v, s).is_some() {
                    v.insert(format!("{s}_LEFT"), "1".into());
                }
            }
        }
        slot = select(&v);
    }
    let Some(slot) = slot else {
        let slot = order(&v).first().copied().unwrap_or("A");
        return Choice {
            slot,
            how: How::NoOkSlot,
            writes: Vec::new(),
        };
    };
    let mut writes = vec![(format!("{slot}_TRY"), "1".to_string())];
    if let Some(l) = left(&v, slot) {
        writes.push((format!("{slot}_LEFT"), countdown(l).to_string()));
    }
    let o = other(slot);
    if how == How::NewRound && ok(&v, o) {
        writes.push((format!("{o}_TRY"), "0".to_string()));
        if let Some(l) = left(&v, o) {
            writes.push((format!("{o}_LEFT"), l.to_string()));
        }
    }
    Choice { slot, how, writes }
}

/// The slot GRUB boots next, without booting: `None` when no slot is OK
/// (grub.cfg then boots the first of ORDER blindly, never a safe state).
pub fn primary(env: &Env) -> Option<&'static str> {
    let c = choose(env);
    (c.how != How::NoOkSlot).then_some(c.slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn eq_reads_leading_digits_as_grub_2_06_does() {
        for (v, n) in [
            ("x", 0),
            ("", 0),
            ("yes", 0),
            ("1x", 1),
            ("01", 1),
            ("1", 1),
        ] {
            assert_eq!(num(Some(&v.to_string())), n, "{v:?}");
        }
        assert_eq!(num(None), 0);
    }

    #[test]
    fn a_bad_budget_allows_exactly_one_try() {
        assert_eq!(countdown("3"), "2");
        assert_eq!(countdown("2"), "1");
        for bad in ["1", "10", "x", "-1"] {
            assert_eq!(countdown(bad), "0", "{bad:?}");
        }
    }

    #[test]
    fn a_tried_slot_falls_through_to_the_next_ok_one() {
        let c = choose(&env(&[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ]));
        assert_eq!((c.slot, c.how), ("B", How::Normal));
        assert_eq!(c.writes, vec![("B_TRY".to_string(), "1".to_string())]);
    }

    #[test]
    fn an_unknown_slot_in_order_is_skipped_and_nothing_ok_is_not_primary() {
        let e = env(&[("ORDER", "R B A"), ("A_OK", "0"), ("B_OK", "0")]);
        assert_eq!(choose(&e).slot, "B");
        assert_eq!(primary(&e), None);
        assert_eq!(
            choose(&Env::new()).slot,
            "A",
            "unreadable env: default ORDER"
        );
    }

    /// Shell words of one scenario line: `set ORDER="B A" A_OK=1`.
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), None, false);
        for c in line.chars() {
            match (quoted, c) {
                (None, '"' | '\'') => (quoted, any) = (Some(c), true),
                (Some(q), c) if c == q => quoted = None,
                (None, ' ' | '\t') => {
                    if any {
                        out.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                (_, c) => (cur, any) = (cur + &c.to_string(), true),
            }
        }
        if any {
            out.push(cur);
        }
        out
    }

    fn pairs(ws: &[String]) -> Vec<(String, String)> {
        ws.iter()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Long on purpose: one small interpreter of the scenario files' verbs
    /// (the env edits, a boot, and the expectations about GRUB's choice).
    #[test]
    fn the_model_replays_the_grub_selftest_scenarios() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vm/selftest");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("scripts/vm/selftest")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sh"))
            .collect();
        files.sort();
        // The factory disk (scripts/vm/lib/disk.sh).
        let mut e = env(&[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        let (mut last, mut checked, mut prev) = (None::<Choice>, 0, String::new());
        for f in &files {
            let name = f
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let text = std::fs::read_to_string(f).expect("scenario");
            for line in text.lines().map(str::trim) {
                let ws = words(line);
                let at = format!("{name}: {line}");
                match ws.first().map(String::as_str) {
                    Some(a) if a.starts_with("AFTER=") => {
                        assert_eq!(
                            &a["AFTER=".len()..],
                            prev,
                            "{name}: scenarios run in file order"
                        )
                    }
                    Some("host_env_edit") if ws.get(1).is_some_and(|w| w == "set") => {
                        e.extend(pairs(&ws[2..]))
                    }
                    Some("host_env_edit") if ws.get(1).is_some_and(|w| w == "unset") => {
                        for k in &ws[2..] {
                            e.remove(k);
                        }
                    }
                    Some("host_env_edit") => panic!("{at}: unknown edit"),
                    Some("host_env_zero") => e.clear(),
                    Some("boot_vm") => {
                        let c = choose(&e);
                        e.extend(c.writes.iter().cloned());
                        last = Some(c);
                    }
                    Some("expect_boot") => {
                        let c = last.as_ref().unwrap_or_else(|| panic!("{at}: no boot"));
                        assert_eq!(Some(c.slot), ws.get(1).map(String::as_str), "{at}: {e:?}");
                        if let Some(how) = ws.get(3) {
                            assert_eq!(c.how.name(), how, "{at}: {e:?}");
                        }
                        checked += 1;
                    }
                    Some("expect_env") => {
                        for (k, v) in pairs(&ws[1..]) {
                            assert_eq!(e.get(&k), Some(&v), "{at}: {k}; {e:?}");
                            checked += 1;
                        }
                    }
                    Some("expect_log") if line.contains("booting slot") => {
                        let c = last.as_ref().unwrap_or_else(|| panic!("{at}: no boot"));
                        let want = format!("booting slot {} \\({}\\)", c.slot, c.how.name());
                        assert!(line.contains(&want), "{at}: the model says {want}");
                        checked += 1;
                    }
                    _ => {}
                }
            }
            prev = name;
        }
        assert!(files.len() >= 7, "scenarios: {files:?}");
        assert!(checked >= 30, "only {checked} expectations replayed");
    }
}
