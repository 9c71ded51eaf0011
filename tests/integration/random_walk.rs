//! A model-based random walk: long seeded sequences of what a careless
//! operator and an unlucky host interleave (publishing, `update`,
//! `install`, `health`, clean and unclean reboots, trials that never come
//! up, `rollback`, `mark-good`, `mark-bad` with and without `--force`,
//! kills at named failpoints, a full state file system, uptime jumps,
//! `state.json` damaged or deleted), on the GRUB test host with the real
//! `grub-editenv`, checked against the product's invariants after every
//! step: no panic; exit codes and `--json` shapes as documented; the env
//! always reads; `status` agrees with GRUB; GRUB's next boots always reach
//! a complete image of a healthy release; no failing release recorded
//! good; a binding failure never leaves the failed list and is never
//! installed again.
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
//! i, j, k of that seed's plan).

use crate::common::grub::{self, How};
use crate::common::host::{image, sha, slot_version, text, HostOptions, TestHost};
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
    h: TestHost,
    rels: Vec<Rel>,
    next_major: u32,
    next_minor: u32,
    booted: &'static str,
    url: Option<String>,
    /// operator's word (force, mark-good) made these versions trusted
    blessed: BTreeSet<String>,
    /// a forced verb succeeded: skip the boot-safety check until it holds again
    forced: bool,
    /// versions once seen on the failed list as a binding failure
    failed_binding: BTreeSet<String>,
    /// versions once seen held (cancelled/rejected), until a hand install
    held: BTreeSet<String>,
    log: Vec<String>,
    verbose: bool,
    probation: bool,
}

fn version_of(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Walk {
    fn new(seed: u64) -> Walk {
        let probation = seed % 3 == 0;
        let extra = if probation {
            "probation = \"1h\"\n".to_string()
        } else {
            String::new()
        };
        let h = TestHost::new(
            &format!("walk-{seed}"),
            "1.0",
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
            rels,
            next_major: 2,
            next_minor: 1,
            booted: "A",
            url: None,
            blessed: BTreeSet::new(),
            forced: false,
            failed_binding: BTreeSet::new(),
            held: BTreeSet::new(),
            log: Vec::new(),
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
                let s = self.h.boot();
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
                let c = grub::choose(&self.h.grub_vars());
                let w: Vec<(&str, &str)> = c
                    .writes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !w.is_empty() {
                    self.h.grub_set(&w);
                }
                self.note(format!(
                    "  slot {} hangs before userspace ({:?})",
                    c.slot, c.how
                ));
                let s = self.h.boot();
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
                    let vars = self.h.grub_vars();
                    if vars.get(&format!("{s}_OK")).map(String::as_str) != Some("1") {
                        return Err(broken(
                            "mark-good-not-good",
                            format!("{a:?} ok but {s}_OK={:?}", vars.get(&format!("{s}_OK"))),
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
                    let vars = self.h.grub_vars();
                    if vars.get(&format!("{s}_OK")).map(String::as_str) == Some("1") {
                        let v: serde_json::Value =
                            serde_json::from_slice(&out.stdout).unwrap_or_default();
                        if v["outcome"] != "unchanged" {
                            return Err(broken(
                                "mark-bad-not-bad",
                                format!("{a:?} ok ({v}) but {s}_OK=1"),
                            ));
                        }
                    }
                }
            }
            Step::Crash { verb, point, nth } => {
                let args = self.verb_args(verb);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let fp = format!("{point}:{nth}");
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
                let out = self.run(&a, &[("ABUPDATE_STATE_FULL_AFTER", point)]);
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
        // grubenv parses with the real tool.
        let out = std::process::Command::new("grub-editenv")
            .arg(&self.h.grubenv)
            .arg("list")
            .output()
            .expect("grub-editenv");
        if !out.status.success() {
            return Err(broken("grubenv", text(&out)));
        }
        let vars = self.h.grub_vars();
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
        let choice = grub::choose(&vars);
        if status["primary_slot"] != choice.slot {
            return Err(broken(
                "status-primary",
                format!(
                    "status primary_slot {} but GRUB boots {} ({:?}); env {vars:?}",
                    status["primary_slot"], choice.slot, choice.how
                ),
            ));
        }
        // Boot safety: from here, trials that never come up included, GRUB
        // reaches a slot holding a complete image of a good release.
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
        if !safe {
            if self.forced {
                self.note(format!(
                    "  (forced: boot path {path:?} not safe, tolerated)"
                ));
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

/// Steps of each walk unless `WALK_STEPS` says otherwise.
const CI_STEPS: usize = 60;

/// The seeds to walk, each with its own number of steps when it names one
/// (`5022@120`: a defect found only past the usual length).
fn seeds() -> Vec<(u64, Option<usize>)> {
    let s = std::env::var("WALK_SEEDS").unwrap_or_else(|_| CI_SEEDS.into());
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

/// Run `steps` of `seed`'s walk; on a broken invariant: (index, Broken, log).
fn run_walk(seed: u64, steps: &[(usize, Step)]) -> Option<(usize, Broken, Vec<String>)> {
    let mut w = Walk::new(seed);
    w.note(format!("seed {seed} probation={}", w.probation));
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
    None
}

fn shrink(seed: u64, steps: Vec<(usize, Step)>, tag: &str) -> Vec<(usize, Step)> {
    let mut cur = steps;
    let mut i = 0;
    while i < cur.len() {
        let mut cand = cur.clone();
        cand.remove(i);
        match run_walk(seed, &cand) {
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
    let seeds = match &only {
        Some((s, _)) => vec![(*s, None)],
        None => seeds(),
    };
    let mut clean_steps = 0;
    for (seed, steps) in seeds {
        let n = steps.unwrap_or(n);
        let full: Vec<(usize, Step)> = plan(seed, n).into_iter().enumerate().collect();
        let steps: Vec<(usize, Step)> = match &only {
            Some((_, idx)) => full.into_iter().filter(|(i, _)| idx.contains(i)).collect(),
            None => full,
        };
        match run_walk(seed, &steps) {
            None => {
                clean_steps += steps.len();
                eprintln!("seed {seed}: clean ({} steps)", steps.len());
            }
            Some((at, b, log)) => {
                eprintln!("seed {seed}: BROKEN at step {at}: [{}] {}", b.tag, b.detail);
                eprintln!("{}", log.join("\n"));
                if do_shrink {
                    let upto: Vec<(usize, Step)> =
                        steps.iter().filter(|(i, _)| *i <= at).cloned().collect();
                    let small = shrink(seed, upto, &b.tag);
                    let idx: Vec<String> = small.iter().map(|(i, _)| i.to_string()).collect();
                    eprintln!("seed {seed} shrunk to WALK_PLAN={seed}:{}", idx.join(","));
                    if let Some((at, b, log)) = run_walk(seed, &small) {
                        eprintln!(
                            "shrunk run: at {at} [{}] {}\n{}",
                            b.tag,
                            b.detail,
                            log.join("\n")
                        );
                    }
                }
                failures.push((seed, b.tag));
            }
        }
    }
    eprintln!("walk: {clean_steps} steps in clean seeds; failures: {failures:?}");
    assert!(failures.is_empty(), "{failures:?}");
}
