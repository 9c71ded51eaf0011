//! A model-based random walk: long seeded sequences of what a careless
//! operator and an unlucky host interleave (publishing, `update`,
//! `install`, `health`, clean and unclean reboots, trials that never come
//! up, `rollback`, `mark-good`, `mark-bad` with and without `--force`,
//! kills at named failpoints, a full state file system, uptime jumps,
//! `state.json` damaged or deleted), on the test host with any bootloader
//! (`common::loaders`: GRUB with the real `grub-editenv`, U-Boot with
//! `fw_printenv`/`fw_setenv`, EFI with `efibootmgr`, systemd-boot with
//! `bootctl`; `WALK_LOADER=grub|uboot|efi|systemd-boot`, GRUB by default),
//! checked against the product's invariants after every step: no panic;
//! exit codes and `--json` shapes as documented; the env always reads
//! (U-Boot: never both copies torn); `status` agrees with the bootloader;
//! the bootloader's next boots always reach a complete image of a healthy
//! release; no failing release recorded good; a binding failure never
//! leaves the failed list and is never installed again.
//!
//! Off GRUB, the same plans: a hung boot is the loader's own count of an
//! attempt with nothing coming up (`loaders::Host::hang`: U-Boot's
//! counter, EFI's `BootNext` consumed, systemd-boot's entry renamed), the
//! next boots are played on the real files and put back, and the plan's
//! GRUB env failpoints stand for the loader's (`Walk::point`). Where a
//! forced verb left no slot to boot (EFI: the firmware's shell first), the
//! operator picks one in the firmware's boot menu. One waiver, EFI and
//! systemd-boot only: the documented lost-record gap for trials
//! (`Walk::lost_records`).
//!
//! It found, from outside our own catalogue of cases, a trial blessed
//! unchecked after a state reset, `mark-bad` leaving no bootable slot, a
//! retirement undone after a state reset, `status` naming a slot GRUB
//! would not boot, and a slot kept after its checks failed recorded good
//! (then an update from it overwriting the last good system). CI walks a fixed set of seeds; a longer walk:
//! `WALK_SEEDS=1..500 cargo test --features failpoints --test integration
//! random_walk -- --nocapture` (`WALK_SEEDS=5` or `3,9,12`, or `5022@120`
//! for a seed walked 120 steps; `WALK_STEPS=60`; `WALK_VERBOSE=1` prints each step's output;
//! `WALK_SHRINK=1` shrinks a failing seed by dropping steps, keeping the
//! same broken invariant; `WALK_PLAN="seed:i,j,k"` replays only steps
//! i, j, k of that seed's plan; `WALK_LOADER=uboot` walks U-Boot: its CI
//! seeds alone, or `WALK_SEEDS`, `WALK_PLAN` on it).

use crate::common::grub::{self, How};
use crate::common::host::{image, sha, slot_version, text, HostOptions};
use crate::common::loaders::{uboot_left, uboot_order, Host, Loader};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const POINTS: &[&str] = &[
    "state-tmp-write",
    "state-written",
    "grubenv-write",
    "env-written",
    "target-marked-bad",
    "chunk-written",
    "segment-written",
    "delta-segment-written",
    "fsync",
    "read-back",
    "activated",
    "reboot-requested",
    "health-verdict",
    "committed",
    "rolled-back",
    "rollback",
    "retire-marked-bad",
    "disarm-marked-bad",
    "disarmed",
];

#[derive(Clone, Debug)]
enum Step {
    Publish {
        healthy: bool,
        delta: bool,
        lower: bool,
    },
    Update {
        now: bool,
        no_reboot: bool,
    },
    Install {
        rel: usize,
        no_reboot: bool,
        downgrade: bool,
    },
    Health {
        no_reboot: bool,
    },
    Boot {
        clean: bool,
        health: bool,
    },
    BootHang {
        clean: bool,
    },
    Rollback {
        no_reboot: bool,
        force: bool,
    },
    MarkGood {
        slot: Option<&'static str>,
        force: bool,
    },
    MarkBad {
        slot: Option<&'static str>,
        force: bool,
    },
    Crash {
        verb: u8,
        point: &'static str,
        nth: u32,
    },
    StateFull {
        verb: u8,
        point: &'static str,
    },
    Uptime {
        secs: u64,
    },
    Status,
    /// state.json damaged (garbage) or removed (an operator's reset)
    DamageState {
        remove: bool,
    },
}

fn plan(seed: u64, steps: usize) -> Vec<Step> {
    let mut r = Rng::new(seed);
    let slot = |r: &mut Rng| r.pick(&[None, Some("A"), Some("B")]);
    (0..steps)
        .map(|_| match r.below(100) {
            0..=11 => Step::Publish {
                healthy: r.chance(70),
                delta: r.chance(20),
                lower: r.chance(8),
            },
            12..=23 => Step::Update {
                now: r.chance(60),
                no_reboot: r.chance(30),
            },
            24..=29 => Step::Install {
                rel: r.below(1000) as usize,
                no_reboot: r.chance(70),
                downgrade: r.chance(20),
            },
            30..=37 => Step::Health {
                no_reboot: r.chance(30),
            },
            38..=53 => Step::Boot {
                clean: r.chance(65),
                health: r.chance(80),
            },
            54..=58 => Step::BootHang {
                clean: r.chance(50),
            },
            59..=64 => Step::Rollback {
                no_reboot: r.chance(50),
                force: r.chance(4),
            },
            65..=69 => Step::MarkGood {
                slot: slot(&mut r),
                force: r.chance(4),
            },
            70..=76 => Step::MarkBad {
                slot: slot(&mut r),
                force: r.chance(4),
            },
            77..=86 => Step::Crash {
                verb: r.below(8) as u8,
                point: r.pick(POINTS),
                nth: 1 + r.below(3) as u32,
            },
            87..=91 => Step::StateFull {
                verb: r.below(8) as u8,
                point: r.pick(POINTS),
            },
            92..=93 => Step::DamageState {
                remove: r.chance(30),
            },
            94..=95 => Step::Uptime {
                secs: r.pick(&[5, 600, 3000, 4000, 90000]),
            },
            _ => Step::Status,
        })
        .collect()
}

struct Rel {
    version: String,
    healthy: bool,
    manifest: PathBuf,
    img_sha: String,
    len: usize,
    raw: PathBuf,
}

/// A failed invariant: a short tag (kept while shrinking) and the detail.
#[derive(Debug)]
struct Broken {
    tag: String,
    detail: String,
}

fn broken(tag: &str, detail: String) -> Broken {
    Broken {
        tag: tag.to_string(),
        detail,
    }
}

fn vkey(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

struct Walk {
    h: Host,
    loader: Loader,
    rels: Vec<Rel>,
    next_major: u32,
    next_minor: u32,
    booted: &'static str,
    url: Option<String>,
    /// operator's word (force, mark-good) made these versions trusted
    blessed: BTreeSet<String>,
    /// a forced verb succeeded: skip the boot-safety check until it holds again
    forced: bool,
    /// EFI and systemd-boot: the releases whose trial records a damaged or
    /// removed state.json lost (what the slots held then, not recorded
    /// committed good, and the transaction's): see [`Walk::lost_records`]
    lost_trials: BTreeSet<String>,
    /// versions once seen on the failed list as a binding failure
    failed_binding: BTreeSet<String>,
    /// versions once seen held (cancelled/rejected), until a hand install
    held: BTreeSet<String>,
    log: Vec<String>,
    /// the boot-safety check was waived for [`Walk::lost_trials`]
    gap_tolerated: bool,
    verbose: bool,
    probation: bool,
}

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn version_of(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Walk {
    fn new(seed: u64, loader: Loader) -> Walk {
        let probation = seed % 3 == 0;
        let extra = if probation {
            "probation = \"1h\"\n".to_string()
        } else {
            String::new()
        };
        // Slot A holds 1.0's 4096-byte image, as `TestHost::new` writes it.
        let h = Host::new(
            &format!("walk-{seed}"),
            loader,
            "1.0",
            4096,
            HostOptions {
                extra_config: extra,
                ..Default::default()
            },
        );
        // faster verdicts
        let cfg = std::fs::read_to_string(&h.config).expect("config");
        let cfg = cfg.replace(
            "timeout = \"3s\"\ncheck_timeout = \"2s\"\ninterval = \"1s\"",
            "timeout = \"2s\"\ncheck_timeout = \"1s\"\ninterval = \"1s\"",
        );
        std::fs::write(&h.config, cfg).expect("config");
        let unhealthy = h.dir.join("unhealthy");
        std::fs::write(&unhealthy, "").expect("unhealthy");
        h.add_health_check(
            "10-model",
            &format!(
                "v=$(sed -n 's/^IMAGE_VERSION=//p' {os})\n\
                 if grep -qxF \"$v\" {u}; then echo \"model: $v is unhealthy\" >&2; exit 1; fi\nexit 0",
                os = h.os_release.display(),
                u = unhealthy.display()
            ),
        );
        let img = image("1.0", 4096);
        let raw = h.dir.join("r1.raw");
        std::fs::write(&raw, &img).expect("raw");
        let rels = vec![Rel {
            version: "1.0".into(),
            healthy: true,
            manifest: PathBuf::new(),
            img_sha: sha(&img),
            len: img.len(),
            raw,
        }];
        Walk {
            h,
            loader,
            rels,
            next_major: 2,
            next_minor: 1,
            booted: "A",
            url: None,
            blessed: BTreeSet::new(),
            forced: false,
            lost_trials: BTreeSet::new(),
            failed_binding: BTreeSet::new(),
            held: BTreeSet::new(),
            log: Vec::new(),
            gap_tolerated: false,
            verbose: std::env::var("WALK_VERBOSE").is_ok(),
            probation,
        }
    }

    fn rel(&self, v: &str) -> Option<&Rel> {
        self.rels.iter().find(|r| r.version == v)
    }

    /// The version whose complete image slot `i` holds, if any.
    fn slot_holds(&self, i: usize) -> Option<String> {
        let v = slot_version(&self.h.slots[i])?;
        let r = self.rel(&v)?;
        let bytes = self.h.slot_bytes(i, r.len);
        (sha(&bytes) == r.img_sha).then_some(v)
    }

    fn good_version(&self, v: &str) -> bool {
        self.rel(v).is_some_and(|r| r.healthy) || self.blessed.contains(v)
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            eprintln!("    {s}");
        }
        self.log.push(s);
    }

    fn run(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.h.abupdate_env(args, env);
        let t = text(&out);
        let short: String = t.lines().take(6).collect::<Vec<_>>().join(" | ");
        self.note(format!(
            "  $ abupdate {} {} -> {:?}: {}",
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            args.join(" "),
            out.status.code(),
            short.chars().take(600).collect::<String>()
        ));
        out
    }

    /// Every run: no panic; exit in 0/1/100 (2 only for usage); with
    /// `--json`, one JSON document of a documented shape.
    fn judge_output(&self, args: &[&str], out: &Output, crash_ok: bool) -> Result<(), Broken> {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            return Err(broken("panic", format!("{args:?}: {}", text(out))));
        }
        let code = match out.status.code() {
            Some(c) => c,
            None if crash_ok => return Ok(()),
            None => {
                return Err(broken(
                    "signal",
                    format!("{args:?} died: {:?} {}", out.status, text(out)),
                ))
            }
        };
        if ![0, 1, 100].contains(&code) {
            return Err(broken(
                "exit-code",
                format!("{args:?} exit {code}: {}", text(out)),
            ));
        }
        if !args.contains(&"--json") {
            return Ok(());
        }
        let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                return Err(broken(
                    "json-parse",
                    format!("{args:?}: {e}: {}", text(out)),
                ));
            }
        };
        if v.get("error").is_some() {
            if code != 1 || v.get("kind").and_then(|k| k.as_str()).is_none() {
                return Err(broken(
                    "json-error-shape",
                    format!("{args:?} exit {code}: {v}"),
                ));
            }
            if err.trim().lines().count() == 0 {
                return Err(broken("json-error-no-stderr", format!("{args:?}: {v}")));
            }
            return Ok(());
        }
        let verb = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .copied()
            .unwrap_or("");
        let outcome = v.get("outcome").and_then(|o| o.as_str());
        let ok = match verb {
            "health" => {
                let o = outcome.unwrap_or("");
                let fail = ["rolled_back", "rolled_back_late", "no_fallback"].contains(&o);
                [
                    "healthy",
                    "committed",
                    "rolled_back",
                    "trial_never_booted",
                    "awaiting_reboot",
                    "on_probation",
                    "probation_passed",
                    "probation_off",
                    "rolled_back_late",
                    "no_fallback",
                ]
                .contains(&o)
                    && (code == 1) == fail
            }
            "mark-good" | "mark-bad" | "rollback" => {
                code == 0
                    && [
                        "marked",
                        "rolled_back",
                        "rolled_back_late",
                        "cancelled",
                        "switched",
                        "unchanged",
                    ]
                    .contains(&outcome.unwrap_or(""))
            }
            "update" | "install" => {
                if v.get("installed").is_some() {
                    code == 0
                } else {
                    let o = outcome.unwrap_or("");
                    // `update`: no_fallback exits 1; rolled_back_late exits 0 (the
                    // README's `--json` shapes say why).
                    let ok_code = match o {
                        "no_fallback" => code == 1,
                        _ => code == 0,
                    };
                    [
                        "up_to_date",
                        "backing_off",
                        "rolled_back_late",
                        "no_fallback",
                        "disarmed",
                    ]
                    .contains(&o)
                        && ok_code
                        && verb == "update"
                }
            }
            _ => true,
        };
        if !ok {
            return Err(broken("json-shape", format!("{args:?} exit {code}: {v}")));
        }
        Ok(())
    }

    fn verb_args(&self, verb: u8) -> Vec<String> {
        let newest = self.rels.last().map(|r| r.manifest.display().to_string());
        let other = if self.booted == "A" { "B" } else { "A" };
        match verb {
            0 if self.url.is_some() => vec!["update".into(), "--now".into()],
            0 => vec!["health".into()],
            1 => vec!["health".into()],
            2 => vec!["rollback".into()],
            3 => vec!["mark-bad".into()],
            4 => vec!["mark-bad".into(), other.into()],
            5 => match newest {
                Some(m) if self.rels.len() > 1 => vec!["install".into(), "--no-reboot".into(), m],
                _ => vec!["health".into()],
            },
            6 => vec!["mark-good".into(), other.into()],
            _ => vec!["rollback".into(), "--no-reboot".into()],
        }
    }

    /// An `install` by hand that went through lifts a hold (README: `mark-bad`, "CLI").
    fn hand_install_lifts_hold(&mut self, a: &[&str], out: &Output) {
        if ["install", "update"].contains(&a[0])
            && out.status.success()
            && text(out).contains("abupdate: installed ")
        {
            // a new transaction recorded: the records stand again
            self.lost_trials.clear();
        }
        if a.first() == Some(&"install") && out.status.success() {
            if let Some(v) = self.rels.last().map(|r| r.version.clone()) {
                self.held.remove(&v);
            }
        }
    }

    fn set_url(&mut self, manifest: &std::path::Path) {
        let cfg = std::fs::read_to_string(&self.h.config).expect("config");
        let line = format!("url = \"file://{}\"\n", manifest.display());
        let cfg = match &self.url {
            Some(old) => cfg.replace(old, &line),
            None => cfg.replacen("[update]\n", &format!("[update]\n{line}"), 1),
        };
        std::fs::write(&self.h.config, cfg).expect("config");
        self.url = Some(line);
    }

    /// `mark-good` or `mark-bad` (`verb`) of `slot` (the booted one when
    /// `None`), `--json`, its output judged: the arguments and the output.
    fn mark(
        &mut self,
        verb: &'static str,
        slot: Option<&'static str>,
        force: bool,
    ) -> Result<(Vec<&'static str>, Output), Broken> {
        let mut a = vec!["--json", verb];
        a.extend(slot);
        if force {
            a.push("--force");
        }
        let out = self.run(&a, &[]);
        self.judge_output(&a, &out, false)?;
        Ok((a, out))
    }

    /// A failpoint of the plan on this loader: GRUB's env points stand for
    /// the loader's own (U-Boot's `ubootenv-write` tear, EFI's
    /// `efivar-written`, systemd-boot's `entry-renamed`; `failpoint.rs`).
    fn point(&self, p: &'static str) -> &'static str {
        match (self.loader, p) {
            (Loader::Uboot, "grubenv-write") => "ubootenv-write",
            (Loader::Efi, "grubenv-write" | "env-written") => "efivar-written",
            (Loader::SystemdBoot, "grubenv-write" | "env-written") => "entry-renamed",
            _ => p,
        }
    }

    /// One boot as the bootloader plays it; Err when it finds no slot.
    fn boot_up(&mut self) -> Result<&'static str, Broken> {
        match self.h.hang() {
            Ok(s) => {
                self.h.boot_as(s);
                Ok(s)
            }
            Err(e) => {
                let s = self.menu_pick(e)?;
                self.h.pick_in_boot_menu(s);
                Ok(s)
            }
        }
    }

    /// The bootloader found no slot to boot (`hang`'s `why`: EFI's
    /// firmware boots an entry that is not a slot, its shell). Only a
    /// forced verb may leave that (the boot-safety check was waived for
    /// it); then the operator at the console picks, in the firmware's boot
    /// menu, a slot holding a good release (else A).
    fn menu_pick(&mut self, why: String) -> Result<&'static str, Broken> {
        if !self.forced {
            return Err(broken("no-slot-boots", why));
        }
        let s = ["A", "B"]
            .into_iter()
            .find(|s| {
                self.slot_holds(if *s == "A" { 0 } else { 1 })
                    .is_some_and(|v| self.good_version(&v))
            })
            .unwrap_or("A");
        self.note(format!(
            "  (forced) no slot boots: {why}; the operator picks {s} in the boot menu"
        ));
        Ok(s)
    }

    /// EFI and systemd-boot, state.json damaged or removed (`before`:
    /// what it recorded): the documented lost-record gap for trials
    /// (README, "State on the host"; `agent::verdict`): these loaders
    /// cannot tell a trial retired in the bootloader from an armed one
    /// (`Bootloader::marked_bad` says nothing), so a trial whose records
    /// were lost is judged by its checks alone, and one that fails with no
    /// record of the other slot committed is kept (`no_fallback`), not
    /// sent back. The releases the slots held then, not recorded committed
    /// good, and the pending transaction's, may so stay the next boot: the
    /// boot-safety check is waived for them (and only them) until an
    /// install records a new transaction. GRUB and U-Boot tell a retirement
    /// from their own counting: no waiver there.
    fn lost_records(&mut self, before: &serde_json::Value) {
        if !matches!(self.loader, Loader::Efi | Loader::SystemdBoot) {
            return;
        }
        for (i, s) in ["A", "B"].into_iter().enumerate() {
            let rec = &before["slots"][s];
            if let Some(v) = self.slot_holds(i) {
                if rec["status"] != "good" || rec["version"] != v.as_str() {
                    self.lost_trials.insert(v);
                }
            }
        }
        if let Some(v) = before["transaction"]["version"].as_str() {
            self.lost_trials.insert(v.to_string());
        }
        if !self.lost_trials.is_empty() {
            self.note(format!("  lost-record gap for {:?}", self.lost_trials));
        }
    }

    /// Whether the bootloader holds `s` good, as `mark-good` must leave
    /// it: GRUB `X_OK=1`; U-Boot in `BOOT_ORDER` with attempts left; EFI
    /// its entry in `BootOrder` (a `BootNext` is one boot, no blessing);
    /// systemd-boot its entry with tries left or no counter.
    fn held_good(&self, vars: &BTreeMap<String, String>, s: &str) -> bool {
        match self.loader {
            Loader::Grub => vars.get(&format!("{s}_OK")).map(String::as_str) == Some("1"),
            Loader::Uboot => uboot_order(vars).iter().any(|o| o == s) && uboot_left(vars, s) > 0,
            Loader::Efi => Host::efi_order(vars)
                .iter()
                .any(|n| Host::efi_slot(vars, n) == Some(s)),
            Loader::SystemdBoot => self.h.bootable(s),
        }
    }

    /// Whether the bootloader would still boot `s`, which a `mark-bad`
    /// must end: GRUB `X_OK=1`; the others as `loaders::Host::bootable`
    /// (EFI: in `BootOrder` or named by `BootNext`).
    fn would_boot(&self, vars: &BTreeMap<String, String>, s: &str) -> bool {
        match self.loader {
            Loader::Grub => vars.get(&format!("{s}_OK")).map(String::as_str) == Some("1"),
            _ => self.h.bootable(s),
        }
    }

    /// The files the bootloader's own boots write (U-Boot's env, EFI's
    /// variables, systemd-boot's entries), with their bytes.
    fn boot_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = match self.loader {
            Loader::Grub => return vec![(self.h.grubenv.clone(), read(&self.h.grubenv))],
            Loader::Uboot => return vec![(self.h.uboot_env.clone(), read(&self.h.uboot_env))],
            Loader::Efi => self.h.efivars.clone(),
            Loader::SystemdBoot => self.h.esp.join("loader/entries"),
        };
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .expect("boot files")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .map(|p| {
                let b = read(&p);
                (p, b)
            })
            .collect();
        files.sort();
        files
    }

    /// Put back what [`Walk::boot_files`] read: files written since
    /// removed, the others' bytes restored.
    fn restore_boot_files(&self, files: &[(PathBuf, Vec<u8>)]) {
        let now = self.boot_files();
        for (p, _) in &now {
            if !files.iter().any(|(q, _)| q == p) {
                std::fs::remove_file(p).expect("remove a boot file");
            }
        }
        for (p, b) in files {
            if !now.iter().any(|(q, c)| q == p && c == b) {
                std::fs::write(p, b).expect("restore a boot file");
            }
        }
    }

    /// Boot safety off GRUB: the next boots as the harness plays them
    /// (`loaders::Host::hang`: counters taken, `BootNext` consumed, entries
    /// renamed), each one hanging before userspace until one reaches a
    /// complete image of a good release; the bootloader's files are put
    /// back after. Eight boots: U-Boot's three attempts of a trial, the
    /// fallback, and a reset of the counters.
    fn boot_path(&mut self) -> (bool, Vec<String>) {
        let saved = self.boot_files();
        let mut path = Vec::new();
        let mut safe = false;
        for _ in 0..8 {
            let slot = match self.h.hang() {
                Ok(s) => s,
                Err(e) => {
                    path.push(format!("none: {e}"));
                    break;
                }
            };
            let holds = self.slot_holds(if slot == "A" { 0 } else { 1 });
            path.push(format!("{slot}:{holds:?}"));
            if holds.as_deref().is_some_and(|v| self.good_version(v)) {
                safe = true;
                break;
            }
        }
        self.restore_boot_files(&saved);
        assert!(self.boot_files() == saved, "boot files not put back");
        (safe, path)
    }

    /// Run one step; Err when an output breaks an invariant.
    fn step(&mut self, st: &Step) -> Result<(), Broken> {
        let before_state: serde_json::Value =
            std::fs::read_to_string(self.h.state_dir.join("state.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        match st.clone() {
            Step::Publish {
                healthy,
                delta,
                lower,
            } => {
                let version = if lower {
                    self.next_minor += 1;
                    format!("0.{}", self.next_minor)
                } else {
                    self.next_major += 1;
                    format!("{}.0", self.next_major - 1)
                };
                let len = 64 << 10;
                let img = image(&version, len);
                let name = format!("rel-{version}");
                let mut extra: Vec<String> = Vec::new();
                let booted_v = slot_version(&self.h.slots[if self.booted == "A" { 0 } else { 1 }]);
                if delta {
                    if let Some(r) = booted_v.as_deref().and_then(|v| self.rel(v)) {
                        extra.push("--segment-size".into());
                        extra.push("1".into());
                        extra.push("--delta-from".into());
                        extra.push(format!("rootfs={}", r.raw.display()));
                    }
                }
                let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
                let (m, out) = self.h.pack_output(&name, &version, &img, &extra_ref);
                self.note(format!(
                    "  pack {version} healthy={healthy} delta={} -> {:?}",
                    !extra.is_empty(),
                    out.status.code()
                ));
                if !out.status.success() {
                    return Err(broken("pack", text(&out)));
                }
                if !healthy {
                    let u = self.h.dir.join("unhealthy");
                    let mut s = std::fs::read_to_string(&u).unwrap_or_default();
                    s.push_str(&format!("{version}\n"));
                    std::fs::write(&u, s).expect("unhealthy");
                }
                self.rels.push(Rel {
                    version: version.clone(),
                    healthy,
                    manifest: m.clone(),
                    img_sha: sha(&img),
                    len,
                    raw: self.h.dir.join(format!("{name}.raw")),
                });
                self.set_url(&m);
            }
            Step::Update { now, no_reboot } => {
                if self.url.is_none() {
                    return Ok(());
                }
                let mut a = vec!["--json", "update"];
                if now {
                    a.push("--now");
                }
                if no_reboot {
                    a.push("--no-reboot");
                }
                let booted_v = before_state["slots"][self.booted]["version"]
                    .as_str()
                    .map(str::to_string);
                let out = self.run(&a, &[]);
                self.judge_output(&a, &out, false)?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                if let Some(inst) = version_of(&v["installed"]) {
                    self.lost_trials.clear();
                    if self.failed_binding.contains(&inst) || self.held.contains(&inst) {
                        return Err(broken(
                            "update-reinstalls-failed",
                            format!("update installed {inst}, on the failed list (binding {:?}, held {:?}); state before: {}", self.failed_binding, self.held, before_state["failed"]),
                        ));
                    }
                    let booted_os = std::fs::read_to_string(&self.h.os_release).unwrap_or_default();
                    let bv = booted_os
                        .lines()
                        .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
                        .unwrap_or("")
                        .to_string();
                    if !bv.is_empty() && vkey(&inst) <= vkey(&bv) {
                        return Err(broken(
                            "update-not-newer",
                            format!(
                                "update installed {inst} over booted {bv} (record {booted_v:?})"
                            ),
                        ));
                    }
                }
            }
            Step::Install {
                rel,
                no_reboot,
                downgrade,
            } => {
                if self.rels.len() < 2 {
                    return Ok(());
                }
                let r = &self.rels[1 + rel % (self.rels.len() - 1)];
                let (m, ver) = (r.manifest.display().to_string(), r.version.clone());
                let mut a = vec!["--json", "install"];
                if no_reboot {
                    a.push("--no-reboot");
                }
                if downgrade {
                    a.push("--allow-downgrade");
                }
                a.push(&m);
                let out = self.run(&a, &[]);
                self.judge_output(&a, &out, false)?;
                if out.status.success() {
                    if self.failed_binding.contains(&ver) {
                        return Err(broken(
                            "install-reinstalls-failed",
                            format!(
                                "install by hand took {ver}, a binding failure; failed before: {}",
                                before_state["failed"]
                            ),
                        ));
                    }
                    self.held.remove(&ver);
                    self.lost_trials.clear();
                }
            }
            Step::Health { no_reboot } => {
                let mut a = vec!["--json", "health"];
                if no_reboot {
                    a.push("--no-reboot");
                }
                let out = self.run(&a, &[]);
                self.judge_output(&a, &out, false)?;
            }
            Step::Boot { clean, health } => {
                if clean && self.h.state_dir.exists() {
                    self.h.shut_down_cleanly();
                }
                let s = self.boot_up()?;
                self.booted = s;
                self.note(format!(
                    "  booted {s} (clean={clean}) holds {:?}",
                    self.slot_holds(if s == "A" { 0 } else { 1 })
                ));
                if health {
                    let a = ["--json", "health"];
                    let out = self.run(&a, &[]);
                    self.judge_output(&a, &out, false)?;
                }
            }
            Step::BootHang { clean } => {
                if clean && self.h.state_dir.exists() {
                    self.h.shut_down_cleanly();
                }
                // The bootloader's pick and its count of the attempt (GRUB's
                // flags, U-Boot's counter, EFI's BootNext consumed,
                // systemd-boot's entry renamed), then nothing comes up.
                match self.h.hang() {
                    Ok(hung) => self.note(format!("  slot {hung} hangs before userspace")),
                    Err(e) => {
                        // Nothing to hang: the boot below is the operator's pick.
                        self.menu_pick(e)?;
                    }
                }
                let s = self.boot_up()?;
                self.booted = s;
                self.note(format!("  then booted {s}"));
                let a = ["--json", "health"];
                let out = self.run(&a, &[]);
                self.judge_output(&a, &out, false)?;
            }
            Step::Rollback { no_reboot, force } => {
                let mut a = vec!["--json", "rollback"];
                if no_reboot {
                    a.push("--no-reboot");
                }
                if force {
                    a.push("--force");
                }
                let out = self.run(&a, &[]);
                self.judge_output(&a, &out, false)?;
                if force && out.status.success() {
                    let other = if self.booted == "A" { 1 } else { 0 };
                    if let Some(v) = slot_version(&self.h.slots[other]) {
                        self.blessed.insert(v);
                    }
                    self.forced = true;
                }
            }
            Step::MarkGood { slot, force } => {
                let (a, out) = self.mark("mark-good", slot, force)?;
                if out.status.success() {
                    let s = slot.unwrap_or(self.booted);
                    if let Some(v) = slot_version(&self.h.slots[if s == "A" { 0 } else { 1 }]) {
                        self.blessed.insert(v);
                    }
                    if force {
                        self.forced = true;
                    }
                    let vars = self.h.env();
                    if !self.held_good(&vars, s) {
                        return Err(broken(
                            "mark-good-not-good",
                            format!("{a:?} ok but the bootloader does not hold {s} good: {vars:?}"),
                        ));
                    }
                }
            }
            Step::MarkBad { slot, force } => {
                let (a, out) = self.mark("mark-bad", slot, force)?;
                if out.status.success() {
                    if force {
                        self.forced = true;
                    }
                    let s = slot.unwrap_or(self.booted);
                    let vars = self.h.env();
                    if self.would_boot(&vars, s) {
                        let v: serde_json::Value =
                            serde_json::from_slice(&out.stdout).unwrap_or_default();
                        if v["outcome"] != "unchanged" {
                            return Err(broken(
                                "mark-bad-not-bad",
                                format!(
                                    "{a:?} ok ({v}) but the bootloader would boot {s}: {vars:?}"
                                ),
                            ));
                        }
                    }
                }
            }
            Step::Crash { verb, point, nth } => {
                let args = self.verb_args(verb);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let fp = format!("{}:{nth}", self.point(point));
                let out = self.run(&a, &[("ABUPDATE_FAILPOINT", &fp)]);
                self.judge_output(&a, &out, true)?;
                self.hand_install_lifts_hold(&a, &out);
                if a.contains(&"--force") && out.status.code().is_none() {
                    self.forced = true;
                }
                if a.contains(&"--force") && out.status.success() {
                    self.forced = true;
                }
            }
            Step::StateFull { verb, point } => {
                let args = self.verb_args(verb);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = self.run(&a, &[("ABUPDATE_STATE_FULL_AFTER", self.point(point))]);
                self.judge_output(&a, &out, false)?;
                self.hand_install_lifts_hold(&a, &out);
                if a.contains(&"--force") {
                    self.forced = true;
                }
            }
            Step::Uptime { secs } => {
                self.h.set_uptime(secs);
                self.note(format!("  uptime {secs}s"));
            }
            Step::Status => {}
            Step::DamageState { remove } => {
                let p = self.h.state_dir.join("state.json");
                if remove {
                    let _ = std::fs::remove_file(&p);
                } else {
                    let _ = std::fs::write(&p, b"{\"slots\": garbage");
                }
                self.note(format!(
                    "  state.json {}",
                    if remove { "removed" } else { "damaged" }
                ));
                self.lost_records(&before_state);
                // What was recorded may be lost: the model starts over from what stands.
                self.failed_binding.clear();
                self.held.clear();
                let a = ["--json", "status"];
                let out = self.run(&a, &[]);
                self.judge_output(&a, &out, false)?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                for f in v["failed"].as_array().cloned().unwrap_or_default() {
                    if let Some(ver) = f["version"].as_str() {
                        if f["hold"].is_null() {
                            self.failed_binding.insert(ver.into());
                        } else {
                            self.held.insert(ver.into());
                        }
                    }
                }
                return self.invariants(&v);
            }
        }
        self.invariants(&before_state)
    }

    fn invariants(&mut self, before: &serde_json::Value) -> Result<(), Broken> {
        // The env reads with the real tool (grub-editenv, fw_printenv,
        // efibootmgr, bootctl).
        let vars = match self.h.try_env() {
            Ok(vars) => vars,
            Err(e) if self.loader == Loader::Grub => return Err(broken("grubenv", e)),
            Err(e) => return Err(broken("env", e)),
        };
        // U-Boot: a cut write may leave one copy torn (the reader takes the
        // other), never both: fw_printenv would then read its built-in
        // default env, and U-Boot boot with it.
        if self.h.torn_uboot_copies().len() == 2 {
            return Err(broken("uboot-env-both-torn", format!("{vars:?}")));
        }
        // state.json parses (unless the walk damaged it and no save came since).
        let st_text = std::fs::read_to_string(self.h.state_dir.join("state.json"))
            .unwrap_or_else(|_| "{}".into());
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&st_text) {
            if !st_text.contains("garbage") {
                return Err(broken("state-parse", format!("{e}")));
            }
        }
        // status --json agrees with the bootloader.
        let a = ["--json", "status"];
        let out = self.h.abupdate(&a);
        self.judge_output(&a, &out, false)?;
        if !out.status.success() {
            return Err(broken("status-fails", text(&out)));
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| broken("status-json", format!("{e}")))?;
        let mut state = serde_json::json!({"slots": {}, "failed": status["failed"].clone()});
        for s in ["A", "B"] {
            state["slots"][s] = status["slots"][s]["record"].clone();
        }
        if status["booted_slot"] != self.booted {
            return Err(broken(
                "status-booted",
                format!(
                    "status booted_slot {} vs {}",
                    status["booted_slot"], self.booted
                ),
            ));
        }
        // GRUB: the slot grub.cfg boots, blind fallback included (what
        // the backend's `primary` names); the others: what the harness
        // plays (`loaders::Host::primary`: boot.cmd, the firmware's
        // BootNext/BootOrder, the entry bootctl marks default).
        let next = match self.loader {
            Loader::Grub => {
                let choice = grub::choose(&vars);
                Some((choice.slot, format!("{:?}", choice.how)))
            }
            _ => self.h.primary().map(|s| (s, String::new())),
        };
        let next_slot = next.as_ref().map(|(s, _)| *s);
        if status["primary_slot"] != serde_json::json!(next_slot) {
            return Err(broken(
                "status-primary",
                format!(
                    "status primary_slot {} but {} boots {next:?}; env {vars:?}",
                    status["primary_slot"],
                    self.loader.name()
                ),
            ));
        }
        // Boot safety: from here, trials that never come up included, the
        // bootloader reaches a slot holding a complete image of a good release.
        let (safe, path) = if self.loader == Loader::Grub {
            let mut env = vars.clone();
            let mut path = Vec::new();
            let mut safe = false;
            for _ in 0..4 {
                let c = grub::choose(&env);
                if c.how == How::NoOkSlot {
                    path.push(format!("{}(no-ok-slot)", c.slot));
                    break;
                }
                for (k, v) in &c.writes {
                    env.insert(k.clone(), v.clone());
                }
                let holds = self.slot_holds(if c.slot == "A" { 0 } else { 1 });
                path.push(format!("{}:{:?}", c.slot, holds));
                if holds.as_deref().is_some_and(|v| self.good_version(v)) {
                    safe = true;
                    break;
                }
            }
            (safe, path)
        } else {
            self.boot_path()
        };
        if !safe {
            let lost = self
                .lost_trials
                .iter()
                .find(|v| path.iter().any(|p| p.contains(&format!("Some({v:?})"))))
                .cloned();
            if self.forced {
                self.note(format!(
                    "  (forced: boot path {path:?} not safe, tolerated)"
                ));
            } else if let Some(v) = lost {
                self.note(format!(
                    "  (lost-record gap: boot path {path:?} not safe, {v}'s trial records lost; tolerated)"
                ));
                self.gap_tolerated = true;
            } else {
                return Err(broken(
                    "boot-safety",
                    format!("boot path {path:?} reaches no complete good image; env {vars:?}; slots A {:?} B {:?}; state slots {}", self.slot_holds(0), self.slot_holds(1), state["slots"]),
                ));
            }
        }
        // A slot recorded good holds a good release (or one the operator vouched for).
        for s in ["A", "B"] {
            let rec = &state["slots"][s];
            if rec["status"] == "good" {
                if let Some(v) = rec["version"].as_str() {
                    if self.rel(v).is_some_and(|r| !r.healthy)
                        && !self.blessed.contains(v)
                        && !self.forced
                    {
                        return Err(broken(
                            "unhealthy-recorded-good",
                            format!("slot {s} recorded good with {v}: {rec}"),
                        ));
                    }
                }
            }
        }
        // Failed list: a binding failure, once recorded, stays.
        let failed = state["failed"].as_array().cloned().unwrap_or_default();
        let now: BTreeMap<String, serde_json::Value> = failed
            .iter()
            .filter_map(|f| f["version"].as_str().map(|v| (v.to_string(), f.clone())))
            .collect();
        for v in self.failed_binding.clone() {
            if !now.contains_key(&v) {
                return Err(broken(
                    "failed-list-lost",
                    format!(
                        "{v} left the failed list; before {}; now {}",
                        before["failed"], state["failed"]
                    ),
                ));
            }
        }
        for (v, f) in &now {
            if f["provisional"] == true {
                continue;
            }
            match f["hold"].as_str() {
                None => {
                    self.failed_binding.insert(v.clone());
                    self.held.remove(v);
                }
                Some(_) => {
                    self.held.insert(v.clone());
                }
            }
        }
        Ok(())
    }
}

/// The seeds CI walks (a second or two each at [`CI_STEPS`]): the first
/// 24, and every seed whose walk found one of the defects above (each
/// clean since its fix).
const CI_SEEDS: &str =
    "1..25,218,334,384,417,503,536,679,700,766,866,883,918,925,934,979,1141,1203,2257,5022@120,5209@120";

/// The seeds CI walks on the other loaders (with `CI_SEEDS` on GRUB, in
/// the same test, when neither `WALK_SEEDS` nor `WALK_LOADER` is set; a
/// `WALK_LOADER` alone walks its own), some 25 s in all. Walked clean:
/// U-Boot 1..600 and 5001..5100@120, EFI and systemd-boot 1..300 and
/// 5001..5050@120 (76 and 5022 through the waiver below). Kept
/// here: EFI 2 (a forced `mark-bad` leaves the firmware's shell first:
/// the operator's boot-menu pick) and 76 on EFI and systemd-boot (a failed
/// trial's records lost: the waiver of `Walk::lost_records`).
const CI_LOADER_SEEDS: &[(Loader, &str)] = &[
    (Loader::Uboot, "1..7"),
    (Loader::Efi, "2,76"),
    (Loader::SystemdBoot, "1,76"),
];

/// Steps of each walk unless `WALK_STEPS` says otherwise.
const CI_STEPS: usize = 60;

/// A seed, with its own number of steps when it names one.
type Seed = (u64, Option<usize>);

/// `WALK_LOADER`: grub (the default), uboot, efi or systemd-boot.
fn walk_loader() -> Option<Loader> {
    let name = std::env::var("WALK_LOADER").ok()?;
    let all = [
        Loader::Grub,
        Loader::Uboot,
        Loader::Efi,
        Loader::SystemdBoot,
    ];
    Some(
        all.into_iter()
            .find(|l| l.name() == name)
            .unwrap_or_else(|| panic!("WALK_LOADER={name}: grub, uboot, efi or systemd-boot")),
    )
}

/// The walks to take: per loader, the seeds, each with its own number of
/// steps when it names one (`5022@120`: a defect found only past the
/// usual length).
fn walks() -> Vec<(Loader, Vec<Seed>)> {
    let loader = walk_loader();
    if let Ok(s) = std::env::var("WALK_SEEDS") {
        return vec![(loader.unwrap_or(Loader::Grub), seeds(&s))];
    }
    let ci = std::iter::once((Loader::Grub, CI_SEEDS)).chain(CI_LOADER_SEEDS.iter().copied());
    ci.filter(|(l, _)| loader.is_none_or(|w| w == *l))
        .map(|(l, s)| (l, seeds(s)))
        .collect()
}

/// `1..25,218,5022@120`: the seeds, each with its own steps when it names them.
fn seeds(s: &str) -> Vec<Seed> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (part, steps) = match part.split_once('@') {
            Some((seed, n)) => (seed, Some(n.parse().expect("steps"))),
            None => (part, None),
        };
        if let Some((a, b)) = part.split_once("..") {
            let (a, b): (u64, u64) = (a.parse().expect("seed"), b.parse().expect("seed"));
            out.extend((a..b).map(|seed| (seed, steps)));
        } else {
            out.push((part.parse().expect("seed"), steps));
        }
    }
    out
}

/// Run `steps` of `seed`'s walk on `loader`; on a broken invariant:
/// (index, Broken, log).
fn run_walk(
    seed: u64,
    loader: Loader,
    steps: &[(usize, Step)],
) -> Option<(usize, Broken, Vec<String>)> {
    let mut w = Walk::new(seed, loader);
    w.note(format!(
        "seed {seed} loader={} probation={}",
        loader.name(),
        w.probation
    ));
    for (i, st) in steps {
        w.note(format!("step {i}: {st:?}"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.step(st)));
        let r = match r {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(broken("harness-panic", msg))
            }
        };
        if let Err(b) = r {
            return Some((*i, b, std::mem::take(&mut w.log)));
        }
    }
    if w.gap_tolerated {
        eprintln!(
            "{} seed {seed}: boot safety waived for lost trial records (the documented gap)",
            loader.name()
        );
    }
    None
}

fn shrink(seed: u64, loader: Loader, steps: Vec<(usize, Step)>, tag: &str) -> Vec<(usize, Step)> {
    let mut cur = steps;
    let mut i = 0;
    while i < cur.len() {
        let mut cand = cur.clone();
        cand.remove(i);
        match run_walk(seed, loader, &cand) {
            Some((at, b, _)) if b.tag == tag => {
                let cut = cand
                    .iter()
                    .position(|(j, _)| *j == at)
                    .map_or(cand.len(), |p| p + 1);
                cand.truncate(cut);
                cur = cand;
            }
            _ => i += 1,
        }
    }
    cur
}

#[test]
fn random_walks_of_verbs_cuts_and_resets_keep_every_invariant() {
    let n: usize = std::env::var("WALK_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_STEPS);
    let do_shrink = std::env::var("WALK_SHRINK").is_ok();
    let mut failures = Vec::new();
    let only: Option<(u64, Vec<usize>)> = std::env::var("WALK_PLAN").ok().map(|p| {
        let (s, idx) = p.split_once(':').expect("seed:i,j");
        (
            s.parse().expect("seed"),
            idx.split(',').map(|i| i.parse().expect("i")).collect(),
        )
    });
    let walks = match &only {
        Some((s, _)) => vec![(walk_loader().unwrap_or(Loader::Grub), vec![(*s, None)])],
        None => walks(),
    };
    let mut clean_steps = 0;
    let started = std::time::Instant::now();
    for (loader, seeds) in walks {
        let l = loader.name();
        for (seed, steps) in seeds {
            let n = steps.unwrap_or(n);
            let full: Vec<(usize, Step)> = plan(seed, n).into_iter().enumerate().collect();
            let steps: Vec<(usize, Step)> = match &only {
                Some((_, idx)) => full.into_iter().filter(|(i, _)| idx.contains(i)).collect(),
                None => full,
            };
            match run_walk(seed, loader, &steps) {
                None => {
                    clean_steps += steps.len();
                    eprintln!("{l} seed {seed}: clean ({} steps)", steps.len());
                }
                Some((at, b, log)) => {
                    eprintln!(
                        "{l} seed {seed}: BROKEN at step {at}: [{}] {}",
                        b.tag, b.detail
                    );
                    eprintln!("{}", log.join("\n"));
                    if do_shrink {
                        let upto: Vec<(usize, Step)> =
                            steps.iter().filter(|(i, _)| *i <= at).cloned().collect();
                        let small = shrink(seed, loader, upto, &b.tag);
                        let idx: Vec<String> = small.iter().map(|(i, _)| i.to_string()).collect();
                        eprintln!(
                            "{l} seed {seed} shrunk to WALK_LOADER={l} WALK_PLAN={seed}:{}",
                            idx.join(",")
                        );
                        if let Some((at, b, log)) = run_walk(seed, loader, &small) {
                            eprintln!(
                                "shrunk run: at {at} [{}] {}\n{}",
                                b.tag,
                                b.detail,
                                log.join("\n")
                            );
                        }
                    }
                    failures.push((l, seed, b.tag));
                }
            }
        }
    }
    eprintln!(
        "walk: {clean_steps} steps in clean seeds in {:.1}s; failures: {failures:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:?}");
}
