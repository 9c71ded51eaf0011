//! The fault-injection matrix: every flow that changes a host (the timer's
//! `update` with a full image (segments decoded in parallel, or one zstd
//! frame) or a delta, `health` committing a trial,
//! `health` rolling back a failing one, both again with a damaged
//! `state.json` that no longer describes the trial (the bootloader says it
//! is one; the rollback's good copy records the old slot committed),
//! `health` after a trial that never
//! came up, `health` rolling back a committed release late (its probation
//! failed), `health` while a staged slot awaits the reboot, the timer's
//! `update` disarming a staged trial its release channel withdrew, a manual
//! `rollback` rejecting the committed release, the plain `rollback` switch
//! (from a release adopted as found back to the newer one committed in the
//! other slot: no verdict), `rollback --force` onto a release that failed
//! its trial here, `mark-good`, `mark-bad`), on GRUB, on U-Boot (a redundant
//! env in a file), on EFI (NVRAM: a directory standing in for efivarfs,
//! read back by the real `efibootmgr`) and on systemd-boot (an ESP whose
//! entries the real `bootctl list` reads and picks the default of), is run
//! once with
//! `ABUPDATE_FAILPOINT_TRACE` to list every durable step it takes (state
//! written, env written, target marked bad, each segment or chunk written,
//! fsync, read-back, activate, reboot requested, verdict, commit, rollback,
//! and the torn-write points inside the env and state writers). Then, for
//! each of those points, on a fresh host, the flow is run again and aborted
//! there (as kill -9 or a power cut would stop it), and:
//!
//! - the bootloader env is readable by the real tool (`grub-editenv list`,
//!   `fw_printenv -c`, `efibootmgr -v`, `bootctl list`), and by
//!   `abupdate status`;
//! - `state.json` parses;
//! - the slot the bootloader boots next holds a complete, known image (its
//!   SHA-256 matches the release it records) that has not failed here
//!   (unless the operator forced it: `rollback --force`);
//! - re-running the same command finishes the job, and the host then boots
//!   the slot the flow meant it to, and its health check passes;
//! - where the env has two copies (U-Boot), both are whole at the end.
//!
//! The plain switch and the forced one are also cut and then simply booted
//! (a power cut is a reboot): wherever the host comes up, its health passes,
//! and the operator's `rollback`, again where the cut came before the
//! bootloader was switched, ends as an uncut run does. A forced switch cut
//! after the bootloader write but before the state write boots the failed
//! release still recorded bad: its health sends the host back to the good
//! slot (the `--force` is lost, never the host), and the operator's re-run
//! ends as an uncut run does.
//!
//! The points covered are printed (`--nocapture`; `scripts/fault-matrix.sh`
//! prints them with the total) and written to
//! `$CARGO_TARGET_TMPDIR/fault-matrix/*.txt` (`target/tmp/`).

use crate::common::loaders;

use crate::common::host::{image, sha, slot_version, text, HostOptions};
use crate::common::loaders::{Host, Loader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

/// Nine 1 MiB segments written by parallel workers (one `segment-written`
/// point each), or 18 one-stream pipeline chunks of 512 KiB (one
/// `chunk-written` point each), and five 2 MiB delta segments.
const IMAGE_LEN: usize = 9 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Update,
    OneFrameUpdate,
    DeltaUpdate,
    HealthCommit,
    HealthRollback,
    UndescribedCommit,
    UndescribedRollback,
    TrialNeverBooted,
    Rollback,
    RollbackSwitch,
    ForcedRollback,
    MarkGood,
    MarkBad,
    HealthAwaitingReboot,
    LateRollback,
    Disarm,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Update => "update",
            Flow::OneFrameUpdate => "one-frame-update",
            Flow::DeltaUpdate => "delta-update",
            Flow::HealthCommit => "health-commit",
            Flow::HealthRollback => "health-rollback",
            Flow::UndescribedCommit => "health-undescribed-commit",
            Flow::UndescribedRollback => "health-undescribed-rollback",
            Flow::TrialNeverBooted => "health-trial-never-booted",
            Flow::Rollback => "rollback",
            Flow::RollbackSwitch => "rollback-switch",
            Flow::ForcedRollback => "rollback-force",
            Flow::MarkGood => "mark-good",
            Flow::MarkBad => "mark-bad",
            Flow::HealthAwaitingReboot => "health-awaiting-reboot",
            Flow::LateRollback => "health-late-rollback",
            Flow::Disarm => "update-disarm",
        }
    }

    fn command(self) -> &'static [&'static str] {
        match self {
            Flow::Update | Flow::OneFrameUpdate | Flow::DeltaUpdate | Flow::Disarm => &["update"],
            Flow::HealthCommit
            | Flow::HealthRollback
            | Flow::UndescribedCommit
            | Flow::UndescribedRollback
            | Flow::TrialNeverBooted
            | Flow::HealthAwaitingReboot
            | Flow::LateRollback => &["health"],
            Flow::Rollback | Flow::RollbackSwitch => &["rollback"],
            Flow::ForcedRollback => &["rollback", "--force"],
            Flow::MarkGood => &["mark-good"],
            Flow::MarkBad => &["mark-bad", "A"],
        }
    }

    /// The durable steps this flow must pass on every bootloader (the crash
    /// list once kept in `crash_at_every_step.rs`, folded in here): a trace
    /// missing one means the flow lost a step, or the failpoint moved, and
    /// the matrix would silently stop crashing there.
    fn required_steps(self) -> &'static [&'static str] {
        match self {
            Flow::Update => &[
                "state-written",
                "target-marked-bad",
                "segment-written",
                "fsync",
                "read-back",
                "activated",
                "reboot-requested",
            ],
            Flow::OneFrameUpdate => &[
                "state-written",
                "target-marked-bad",
                "chunk-written",
                "fsync",
                "read-back",
                "activated",
                "reboot-requested",
            ],
            // Each delta segment is verified and journaled as it is written.
            Flow::DeltaUpdate => &[
                "state-written",
                "target-marked-bad",
                "delta-segment-written",
                "activated",
                "reboot-requested",
            ],
            Flow::HealthCommit => &["health-verdict", "committed", "state-written"],
            Flow::HealthRollback => &["health-verdict", "rolled-back", "state-written"],
            // Judged as any trial: the checks, then the re-bless (a
            // commit's bootloader half) or the one retirement there is.
            Flow::UndescribedCommit => &["health-verdict", "state-written"],
            Flow::UndescribedRollback => &[
                "health-verdict",
                "retire-marked-bad",
                "rolled-back",
                "state-written",
            ],
            // The late rollback retires the committed slot as a trial is.
            Flow::LateRollback => &["retire-marked-bad", "rolled-back", "state-written"],
            // A hand rollback of the committed release rejects it: the
            // same retirement (the plain switch, `rollback`, is left for
            // a slot that holds the same or a newer release).
            Flow::Rollback => &["retire-marked-bad", "rolled-back", "state-written"],
            // The plain switch: the activation, then the record, then the
            // reboot (no verdict, so nothing is retired).
            Flow::RollbackSwitch => &["rollback", "state-written", "reboot-requested"],
            // The operator's word over the records: the same switch, the
            // slot recorded bad vouched for.
            Flow::ForcedRollback => &["rollback", "state-written", "reboot-requested"],
            // Retirement's pair, without the failed list.
            Flow::Disarm => &["disarm-marked-bad", "disarmed", "state-written"],
            Flow::TrialNeverBooted
            | Flow::MarkGood
            | Flow::MarkBad
            | Flow::HealthAwaitingReboot => &[],
        }
    }

    /// Exit code of a complete run.
    fn exit_code(self) -> i32 {
        match self {
            Flow::HealthRollback | Flow::UndescribedRollback | Flow::LateRollback => 1,
            _ => 0,
        }
    }
}

fn must(h: &Host, args: &[&str]) {
    let out = h.abupdate(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
}

/// A host in the state just before `flow`'s command; `url`: where the
/// delta release is served.
fn prepare(flow: Flow, loader: Loader, tag: &str, url: Option<&str>) -> Host {
    let mut h = Host::new(
        &format!("fm-{}-{tag}", flow.name()),
        loader,
        "1.0",
        IMAGE_LEN,
        HostOptions {
            slot_size: 16 << 20,
            extra_config: match flow {
                Flow::LateRollback => "probation = \"24h\"\n".into(),
                _ => String::new(),
            },
            ..Default::default()
        },
    );
    if flow == Flow::DeltaUpdate {
        let url = url.expect("the delta release is served over HTTP");
        h.use_release_at(loaders::delta_release(IMAGE_LEN), url);
        return h;
    }
    if flow == Flow::Disarm {
        // 2.0 staged from the host's channel (the reboot not taken yet),
        // then withdrawn there.
        let rel = loaders::release(IMAGE_LEN);
        let channel = h.use_channel(rel);
        must(&h, &["update"]);
        assert_eq!(h.state()["transaction"]["phase"], "staged");
        h.channel_edit(rel, &channel, "withdraw");
        return h;
    }
    match flow {
        Flow::Update => {
            h.use_release(loaders::segmented_release(IMAGE_LEN));
            return h;
        }
        Flow::OneFrameUpdate => {
            h.use_release(loaders::one_frame_release(IMAGE_LEN));
            return h;
        }
        _ => h.use_release(loaders::release(IMAGE_LEN)),
    }
    must(&h, &["update"]);
    if flow == Flow::HealthAwaitingReboot {
        // Staged, the host not rebooted yet (outside a window, or the
        // health service restarted): the same boot.
        return h;
    }
    // The reboot into the trial is orderly: it writes the clean-shutdown
    // mark (with none ever written, probation counts no restart).
    h.shut_down_cleanly();
    assert_eq!(
        h.boot(),
        "B",
        "{}: the staged slot did not boot",
        flow.name()
    );
    match flow {
        Flow::HealthCommit | Flow::MarkGood => {}
        Flow::HealthRollback => h.add_health_check("10-fail", "exit 1"),
        Flow::UndescribedCommit | Flow::UndescribedRollback => {
            // The good copy a rollback needs records slot A committed and
            // no trial (one from before the install); the commit's has
            // none, and a fresh state stands in.
            let mut older = h.state();
            older["transaction"] = serde_json::Value::Null;
            // The state no longer loads (a slot name that does not exist;
            // still JSON).
            h.edit_state(|s| s["transaction"]["from"] = "C".into());
            let prev = h.state_dir.join("state.json.prev");
            if flow == Flow::UndescribedRollback {
                h.add_health_check("10-fail", "exit 1");
                std::fs::write(&prev, older.to_string()).expect("older copy");
            } else {
                std::fs::remove_file(&prev).expect("no good copy");
            }
        }
        Flow::TrialNeverBooted => {
            // The trial never comes up: the bootloader falls back.
            assert_eq!(h.boot(), "A", "no fallback");
        }
        Flow::Rollback | Flow::MarkBad => must(&h, &["health"]),
        Flow::ForcedRollback => {
            // 2.0 failed its trial and B is recorded bad; from A the
            // operator forces B back (they know the check was wrong, so
            // it passes from now on).
            h.add_health_check("10-fail", "exit 1");
            let out = h.abupdate(&["health"]);
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            assert_eq!(h.boot(), "A", "the failed trial did not fall back");
            must(&h, &["health"]);
            h.add_health_check("10-fail", "exit 0");
        }
        Flow::RollbackSwitch => {
            // 2.0 committed in B; then the operator picks A in the boot
            // menu (1.0, adopted as found: no release this host judges)
            // and its health service runs. `rollback` from there goes
            // forward to 2.0: the plain switch, no verdict on anything.
            must(&h, &["health"]);
            h.boot_as("A");
            must(&h, &["health"]);
        }
        Flow::LateRollback => {
            // Committed, on probation; two unclean restarts (the mark
            // still the one of the reboot into the trial) are tolerated, the third boot is the
            // one whose health rolls it back.
            must(&h, &["health"]);
            for _ in 0..2 {
                assert_eq!(h.boot(), "B", "the committed slot did not boot");
                must(&h, &["health"]);
            }
            assert_eq!(h.state()["probation"]["failures"], 2);
            assert_eq!(h.boot(), "B");
        }
        Flow::Update
        | Flow::OneFrameUpdate
        | Flow::DeltaUpdate
        | Flow::HealthAwaitingReboot
        | Flow::Disarm => {
            unreachable!()
        }
    }
    h
}

/// The durable steps `flow` passes, in order, as `name:N` failpoints.
fn trace(flow: Flow, loader: Loader, url: Option<&str>) -> Vec<String> {
    let h = prepare(flow, loader, "trace", url);
    let log = h.dir.join("trace.log");
    let out = h.abupdate_env(
        flow.command(),
        &[("ABUPDATE_FAILPOINT_TRACE", log.to_str().expect("utf8"))],
    );
    assert_eq!(
        out.status.code(),
        Some(flow.exit_code()),
        "{} dry run: {}",
        flow.name(),
        text(&out)
    );
    let names = std::fs::read_to_string(&log).unwrap_or_default();
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    names
        .lines()
        .map(|n| {
            let c = seen.entry(n.to_string()).or_default();
            *c += 1;
            format!("{n}:{c}")
        })
        .collect()
}

/// The invariants that must hold at every instant.
fn assert_safe(flow: Flow, h: &Host, at: &str) {
    let env = h
        .try_env()
        .unwrap_or_else(|e| panic!("{at}: the real tool cannot read the env: {e}"));
    let out = h.abupdate(&["--json", "status"]);
    assert!(out.status.success(), "{at}: status: {}", text(&out));
    let state_text = std::fs::read_to_string(h.state_dir.join("state.json"));
    let state: serde_json::Value = match state_text {
        Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| panic!("{at}: state.json: {e}")),
        Err(_) => serde_json::json!({}),
    };
    let Some(primary) = h.primary() else {
        panic!("{at}: no slot would boot: {env:?}");
    };
    let idx = if primary == "B" { 1 } else { 0 };
    let version = slot_version(&h.slots[idx])
        .unwrap_or_else(|| panic!("{at}: primary {primary} holds no image: {env:?}"));
    let bytes = h.slot_bytes(idx, IMAGE_LEN);
    assert_eq!(
        sha(&bytes),
        sha(&image(&version, IMAGE_LEN)),
        "{at}: primary {primary} holds an incomplete {version}: {env:?}"
    );
    // What the state records for that slot, when it records an image.
    let recorded = state["slots"][primary]["images"]["rootfs"]["sha256"]
        .as_str()
        .or_else(|| {
            (state["transaction"]["to"] == primary)
                .then(|| state["transaction"]["images"]["rootfs"]["sha256"].as_str())
                .flatten()
        });
    if let Some(want) = recorded {
        let size = state["slots"][primary]["images"]["rootfs"]["size"]
            .as_u64()
            .unwrap_or(IMAGE_LEN as u64) as usize;
        assert_eq!(
            sha(&bytes[..size.min(IMAGE_LEN)]),
            want,
            "{at}: primary {primary} does not match its recorded release"
        );
    }
    let failed: Vec<&str> = state["failed"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["version"].as_str()).collect())
        .unwrap_or_default();
    // `rollback --force` is the one way onto a release that failed here:
    // the operator vouches for it (it stays on the failed list, so no
    // timer installs it again).
    assert!(
        flow == Flow::ForcedRollback || !failed.contains(&version.as_str()),
        "{at}: primary {primary} holds {version}, which failed here: {env:?}"
    );
}

/// The flow's job is done; the host boots where it should and is healthy.
fn assert_finished(flow: Flow, h: &mut Host, at: &str) {
    let state = h.state();
    let (slot, version) = match flow {
        Flow::Update | Flow::OneFrameUpdate | Flow::DeltaUpdate => {
            assert_eq!(state["transaction"]["phase"], "staged", "{at}");
            assert!(h.reboots() >= 1, "{at}: no reboot requested");
            ("B", "2.0")
        }
        Flow::HealthAwaitingReboot => {
            assert_eq!(state["transaction"]["phase"], "staged", "{at}");
            assert_eq!(state["slots"]["A"]["status"], "good", "{at}");
            assert!(h.bootable("A"), "{at}: the running slot lost its blessing");
            ("B", "2.0")
        }
        Flow::HealthCommit | Flow::MarkGood | Flow::UndescribedCommit => {
            assert!(state["transaction"].is_null(), "{at}: {state}");
            assert_eq!(state["slots"]["B"]["status"], "good", "{at}");
            assert!(h.bootable("B"), "{at}: B not bootable: {:?}", h.env());
            if flow == Flow::UndescribedCommit {
                // Committed as any trial is, the lost record
                // notwithstanding: its outcome is recorded for the report.
                // Except when cut between the bootloader's blessing and the
                // first save: then nothing is left that says the boot was a
                // trial (no record, the bootloader's try cleared), and the
                // re-run re-blesses it, as before.
                let committed = state["outcomes"].as_array().is_some_and(|o| {
                    o.iter()
                        .any(|r| r["release"] == "2.0" && r["outcome"] == "committed")
                });
                let blessed_unsaved = at.contains(" crash at ")
                    && !at.contains(" crash at health-verdict:")
                    && !at.contains(" crash at state-written:");
                assert!(
                    committed || blessed_unsaved,
                    "{at}: no committed outcome: {state}"
                );
            }
            ("B", "2.0")
        }
        Flow::HealthRollback
        | Flow::UndescribedRollback
        | Flow::TrialNeverBooted
        | Flow::LateRollback
        | Flow::Rollback => {
            assert!(state["transaction"].is_null(), "{at}: {state}");
            assert!(state["probation"].is_null(), "{at}: {state}");
            assert_eq!(state["failed"][0]["version"], "2.0", "{at}: {state}");
            assert_eq!(state["slots"]["B"]["status"], "bad", "{at}");
            assert!(!h.bootable("B"), "{at}: failed B bootable: {:?}", h.env());
            ("A", "1.0")
        }
        Flow::RollbackSwitch => {
            // No verdict: nothing retired or held, and A stays the
            // fallback it was.
            assert!(state["transaction"].is_null(), "{at}: {state}");
            assert!(
                state["failed"].as_array().is_none_or(|f| f.is_empty()),
                "{at}: {state}"
            );
            assert!(
                !state["outcomes"].to_string().contains("rolled_back"),
                "{at}: {state}"
            );
            for slot in ["A", "B"] {
                assert_eq!(state["slots"][slot]["status"], "good", "{at}: {state}");
                assert!(h.bootable(slot), "{at}: {slot} not bootable: {:?}", h.env());
            }
            ("B", "2.0")
        }
        Flow::ForcedRollback => {
            // The operator's word: B is vouched for, and A stays the
            // fallback it was.
            assert!(state["transaction"].is_null(), "{at}: {state}");
            assert_ne!(state["slots"]["B"]["status"], "bad", "{at}: {state}");
            assert_eq!(state["slots"]["A"]["status"], "good", "{at}: {state}");
            assert!(h.bootable("A"), "{at}: A not bootable: {:?}", h.env());
            ("B", "2.0")
        }
        Flow::Disarm => {
            assert!(state["transaction"].is_null(), "{at}: {state}");
            assert!(
                state["failed"].as_array().is_none_or(|f| f.is_empty()),
                "{at}: {state}"
            );
            assert_eq!(state["slots"]["B"]["status"], "bad", "{at}");
            assert!(!h.bootable("B"), "{at}: disarmed B bootable: {:?}", h.env());
            assert!(state["outcomes"].to_string().contains("disarmed"), "{at}");
            ("A", "1.0")
        }
        Flow::MarkBad => {
            assert_eq!(state["slots"]["A"]["status"], "bad", "{at}");
            assert!(!h.bootable("A"), "{at}: A bootable: {:?}", h.env());
            ("B", "2.0")
        }
    };
    assert_safe(flow, h, &format!("{at}, finished"));
    assert_eq!(h.primary(), Some(slot), "{at}: {:?}", h.env());
    assert_eq!(h.boot(), slot, "{at}: booted the wrong slot");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{at}: health after: {}", text(&out));
    let want = match flow {
        Flow::Update | Flow::OneFrameUpdate | Flow::DeltaUpdate | Flow::HealthAwaitingReboot => {
            format!("committed {version}")
        }
        _ => "healthy".to_string(),
    };
    assert!(text(&out).contains(&want), "{at}: {}", text(&out));
    assert_safe(flow, h, &format!("{at}, after the next boot"));
    // Where the env has two copies, a copy torn by the crash was written
    // again since: both whole, so the next torn write still has one left.
    assert_eq!(
        h.torn_uboot_copies(),
        Vec::<usize>::new(),
        "{at}: a torn env copy was never rewritten"
    );
}

/// A crash is a power cut: besides the operator's re-run, the host may
/// simply come up again. `flow` cut at `point`, then booted wherever the
/// bootloader says: its health passes, and the operator's command, run
/// again only where the cut came before the bootloader was switched (the
/// host came up in the old slot), ends where an uncut run does.
fn crash_then_boot(flow: Flow, loader: Loader, point: &str, url: Option<&str>) {
    let at = format!("{}/{} power cut at {point}", loader.name(), flow.name());
    let mut h = prepare(
        flow,
        loader,
        &format!("{}-boot", point.replace(':', "-")),
        url,
    );
    let out = h.abupdate_env(flow.command(), &[("ABUPDATE_FAILPOINT", point)]);
    assert_eq!(out.status.signal(), Some(6), "{at}: {}", text(&out));
    let mut booted = h.boot();
    let recorded_bad = h.state()["slots"][booted]["status"] == "bad";
    let out = h.abupdate(&["health"]);
    if flow == Flow::ForcedRollback && recorded_bad {
        // Cut after the bootloader switch, before the record: the slot
        // booted is still recorded bad, so its health sends the host
        // back to the good one. The `--force` is lost, never the host.
        assert_eq!(out.status.code(), Some(1), "{at}: {}", text(&out));
        booted = h.boot();
        assert_eq!(booted, "A", "{at}: not sent back: {:?}", h.env());
        let out = h.abupdate(&["health"]);
        assert!(out.status.success(), "{at}: {}", text(&out));
    } else {
        assert!(text(&out).contains("healthy"), "{at}: {}", text(&out));
    }
    assert_safe(flow, &h, &format!("{at}, booted {booted}"));
    if booted != "B" {
        must(&h, flow.command());
    }
    assert_finished(flow, &mut h, &at);
}

fn matrix(flow: Flow, loader: Loader) {
    // The delta release is fetched by range from a real nginx.
    let nginx = match flow {
        Flow::DeltaUpdate => {
            let rel = loaders::delta_release(IMAGE_LEN);
            match crate::common::http::Nginx::start(rel.manifest.parent().expect("dir"), "") {
                Some(n) => Some(n),
                None => return,
            }
        }
        _ => None,
    };
    let url = nginx.as_ref().map(|n| n.url("release.json"));
    let url = url.as_deref();
    let points = trace(flow, loader, url);
    if flow == Flow::DeltaUpdate {
        assert!(
            points
                .iter()
                .any(|p| p.starts_with("delta-segment-written")),
            "the delta was not used: {points:?}"
        );
    }
    let written = |name: &str| points.iter().filter(|p| p.starts_with(name)).count();
    for step in flow.required_steps() {
        assert!(
            written(&format!("{step}:")) > 0,
            "{}/{}: never passes `{step}`: {points:?}",
            loader.name(),
            flow.name()
        );
    }
    match flow {
        // Killed while parallel workers write: every segment is a point.
        Flow::Update => assert_eq!(written("segment-written"), 9, "{points:?}"),
        Flow::OneFrameUpdate => assert_eq!(written("chunk-written"), 18, "{points:?}"),
        _ => {}
    }
    if points.is_empty() {
        // EFI and systemd-boot do not rewrite NVRAM or the ESP to re-bless
        // a slot that is already good and first (flash wear): this flow
        // then takes no durable step, and it must still end right.
        assert!(
            flow == Flow::HealthAwaitingReboot
                && matches!(loader, Loader::Efi | Loader::SystemdBoot),
            "{}/{}: no failpoint passed",
            loader.name(),
            flow.name()
        );
        let mut h = prepare(flow, loader, "no-step", url);
        let out = h.abupdate(flow.command());
        assert_eq!(out.status.code(), Some(flow.exit_code()), "{}", text(&out));
        assert_finished(flow, &mut h, &format!("{}/{}", loader.name(), flow.name()));
    }
    for point in &points {
        let at = format!("{}/{} crash at {point}", loader.name(), flow.name());
        let mut h = prepare(flow, loader, &point.replace(':', "-"), url);
        let out = h.abupdate_env(flow.command(), &[("ABUPDATE_FAILPOINT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{at}: did not abort there: {}",
            text(&out)
        );
        assert_safe(flow, &h, &at);
        let out = h.abupdate(flow.command());
        assert_eq!(
            out.status.code(),
            Some(flow.exit_code()),
            "{at}: the re-run did not finish the job: {}",
            text(&out)
        );
        assert_finished(flow, &mut h, &at);
        if matches!(flow, Flow::RollbackSwitch | Flow::ForcedRollback) {
            crash_then_boot(flow, loader, point, url);
        }
    }
    report(flow, loader, &points);
}

fn report(flow: Flow, loader: Loader, points: &[String]) {
    let line = format!(
        "fault matrix {}/{}: {} points: {}",
        loader.name(),
        flow.name(),
        points.len(),
        points.join(", ")
    );
    println!("{line}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{}-{}.txt", loader.name(), flow.name())),
        format!("{line}\n"),
    );
}

macro_rules! matrix_tests {
    ($($name:ident: $flow:expr, $loader:expr;)*) => {$(
        #[test]
        fn $name() {
            matrix($flow, $loader);
        }
    )*};
}

matrix_tests! {
    grub_update: Flow::Update, Loader::Grub;
    grub_one_frame_update: Flow::OneFrameUpdate, Loader::Grub;
    grub_delta_update: Flow::DeltaUpdate, Loader::Grub;
    grub_health_commit: Flow::HealthCommit, Loader::Grub;
    grub_health_rollback: Flow::HealthRollback, Loader::Grub;
    grub_health_undescribed_commit: Flow::UndescribedCommit, Loader::Grub;
    grub_health_undescribed_rollback: Flow::UndescribedRollback, Loader::Grub;
    grub_trial_never_booted: Flow::TrialNeverBooted, Loader::Grub;
    grub_rollback: Flow::Rollback, Loader::Grub;
    grub_rollback_switch: Flow::RollbackSwitch, Loader::Grub;
    grub_rollback_force: Flow::ForcedRollback, Loader::Grub;
    grub_mark_good: Flow::MarkGood, Loader::Grub;
    grub_mark_bad: Flow::MarkBad, Loader::Grub;
    grub_health_awaiting_reboot: Flow::HealthAwaitingReboot, Loader::Grub;
    grub_health_late_rollback: Flow::LateRollback, Loader::Grub;
    grub_update_disarm: Flow::Disarm, Loader::Grub;
    uboot_update: Flow::Update, Loader::Uboot;
    uboot_one_frame_update: Flow::OneFrameUpdate, Loader::Uboot;
    uboot_delta_update: Flow::DeltaUpdate, Loader::Uboot;
    uboot_health_commit: Flow::HealthCommit, Loader::Uboot;
    uboot_health_rollback: Flow::HealthRollback, Loader::Uboot;
    uboot_health_undescribed_commit: Flow::UndescribedCommit, Loader::Uboot;
    uboot_health_undescribed_rollback: Flow::UndescribedRollback, Loader::Uboot;
    uboot_trial_never_booted: Flow::TrialNeverBooted, Loader::Uboot;
    uboot_rollback: Flow::Rollback, Loader::Uboot;
    uboot_rollback_switch: Flow::RollbackSwitch, Loader::Uboot;
    uboot_rollback_force: Flow::ForcedRollback, Loader::Uboot;
    uboot_mark_good: Flow::MarkGood, Loader::Uboot;
    uboot_mark_bad: Flow::MarkBad, Loader::Uboot;
    uboot_health_awaiting_reboot: Flow::HealthAwaitingReboot, Loader::Uboot;
    uboot_health_late_rollback: Flow::LateRollback, Loader::Uboot;
    uboot_update_disarm: Flow::Disarm, Loader::Uboot;
    efi_update: Flow::Update, Loader::Efi;
    efi_delta_update: Flow::DeltaUpdate, Loader::Efi;
    efi_health_commit: Flow::HealthCommit, Loader::Efi;
    efi_health_rollback: Flow::HealthRollback, Loader::Efi;
    efi_health_undescribed_commit: Flow::UndescribedCommit, Loader::Efi;
    efi_health_undescribed_rollback: Flow::UndescribedRollback, Loader::Efi;
    efi_trial_never_booted: Flow::TrialNeverBooted, Loader::Efi;
    efi_rollback: Flow::Rollback, Loader::Efi;
    efi_rollback_switch: Flow::RollbackSwitch, Loader::Efi;
    efi_rollback_force: Flow::ForcedRollback, Loader::Efi;
    efi_mark_good: Flow::MarkGood, Loader::Efi;
    efi_mark_bad: Flow::MarkBad, Loader::Efi;
    efi_health_awaiting_reboot: Flow::HealthAwaitingReboot, Loader::Efi;
    efi_health_late_rollback: Flow::LateRollback, Loader::Efi;
    efi_update_disarm: Flow::Disarm, Loader::Efi;
    systemd_boot_update: Flow::Update, Loader::SystemdBoot;
    systemd_boot_delta_update: Flow::DeltaUpdate, Loader::SystemdBoot;
    systemd_boot_health_commit: Flow::HealthCommit, Loader::SystemdBoot;
    systemd_boot_health_rollback: Flow::HealthRollback, Loader::SystemdBoot;
    systemd_boot_health_undescribed_commit: Flow::UndescribedCommit, Loader::SystemdBoot;
    systemd_boot_health_undescribed_rollback: Flow::UndescribedRollback, Loader::SystemdBoot;
    systemd_boot_trial_never_booted: Flow::TrialNeverBooted, Loader::SystemdBoot;
    systemd_boot_rollback: Flow::Rollback, Loader::SystemdBoot;
    systemd_boot_rollback_switch: Flow::RollbackSwitch, Loader::SystemdBoot;
    systemd_boot_rollback_force: Flow::ForcedRollback, Loader::SystemdBoot;
    systemd_boot_mark_good: Flow::MarkGood, Loader::SystemdBoot;
    systemd_boot_mark_bad: Flow::MarkBad, Loader::SystemdBoot;
    systemd_boot_health_awaiting_reboot: Flow::HealthAwaitingReboot, Loader::SystemdBoot;
    systemd_boot_health_late_rollback: Flow::LateRollback, Loader::SystemdBoot;
    systemd_boot_update_disarm: Flow::Disarm, Loader::SystemdBoot;
}

/// Found by the matrix (health-rollback, crash at `state-written:1`): the
/// rollback was recorded, the reboot never happened, and a re-run of
/// `health` on the failed slot re-blessed it (no transaction left = "the
/// booted slot is healthy"), making the failed release bootable again and
/// never rebooting. Now the re-run finishes the rollback. The same happens
/// without a crash after `health --no-reboot`.
#[test]
fn regression_health_rerun_after_a_rollback_does_not_rebless_the_failed_slot() {
    for loader in [Loader::Grub, Loader::Uboot] {
        let mut h = prepare(Flow::HealthRollback, loader, "regression", None);
        let reboots = h.reboots();
        let out = h.abupdate(&["health", "--no-reboot"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(h.reboots(), reboots);
        for _ in 0..2 {
            let out = h.abupdate(&["health"]);
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            assert!(
                text(&out).contains("slot B is marked bad"),
                "{}",
                text(&out)
            );
            assert!(
                !h.bootable("B"),
                "{loader:?}: failed B re-blessed: {:?}",
                h.env()
            );
            assert_eq!(h.primary(), Some("A"));
        }
        assert_eq!(h.reboots(), reboots + 2, "each re-run asks for the reboot");
        assert_eq!(h.state()["slots"]["B"]["status"], "bad");
        assert_eq!(h.boot(), "A");
        let out = h.abupdate(&["health"]);
        assert!(text(&out).contains("healthy"), "{}", text(&out));
    }
}

/// `rollback --force` onto a slot recorded bad is the operator's word: the
/// health check on its boot blesses it rather than bouncing back.
#[test]
fn regression_forced_rollback_is_not_undone_by_health() {
    for loader in [Loader::Grub, Loader::Uboot] {
        let mut h = prepare(Flow::HealthRollback, loader, "forced", None);
        let out = h.abupdate(&["health"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(h.boot(), "A");
        assert!(h.abupdate(&["health"]).status.success());
        let out = h.abupdate(&["rollback"]);
        assert_eq!(out.status.code(), Some(1), "unforced: {}", text(&out));
        let out = h.abupdate(&["rollback", "--force"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(h.boot(), "B");
        h.add_health_check("10-fail", "exit 0");
        let out = h.abupdate(&["health"]);
        assert!(text(&out).contains("healthy"), "{loader:?}: {}", text(&out));
        assert!(h.bootable("B"));
        assert_eq!(h.state()["slots"]["B"]["status"], "good");
    }
}

/// `rollback --force` while a release is staged (booted A, B written and
/// verified but never tried; unforced it is refused) boots B: that boot
/// must still be B's trial. It used to drop the transaction, so the health
/// service took B for an old good slot and re-blessed it without running
/// a single check.
#[test]
fn regression_manual_rollback_onto_a_staged_slot_keeps_it_on_trial() {
    for loader in [Loader::Grub, Loader::Uboot] {
        let mut h = prepare(Flow::HealthAwaitingReboot, loader, "rollback-staged", None);
        assert_eq!(h.state()["transaction"]["phase"], "staged");
        let out = h.abupdate(&["rollback"]);
        assert_eq!(out.status.code(), Some(1), "{loader:?}: {}", text(&out));
        let out = h.abupdate(&["rollback", "--force"]);
        assert!(out.status.success(), "{loader:?}: {}", text(&out));
        assert_eq!(h.boot(), "B");
        h.add_health_check("10-fail", "exit 1");
        let out = h.abupdate(&["health"]);
        assert_eq!(out.status.code(), Some(1), "{loader:?}: {}", text(&out));
        assert!(text(&out).contains("rolled back 2.0"), "{}", text(&out));
        assert!(!h.bootable("B"), "{loader:?}: B committed unchecked");
        assert_eq!(h.primary(), Some("A"));
    }
}
