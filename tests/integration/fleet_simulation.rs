//! 10,000 simulated hosts running the crate's own decision functions
//! (`manifest::evaluate`, `rollout::decide`, the failed list in `State`) on a
//! simulated clock, with the fleet controller's decision (`fleet::decide`,
//! the function `abupdate fleet` runs over Prometheus's or the reports'
//! numbers) run every half hour. The controller's inputs are what its
//! queries count: each host's latest outcome (`fleet::tally`) and the hosts
//! whose position is below the wave's percentage. No disks, no network:
//! what is simulated is only the passage of time, the poll schedule and
//! each release's health.

use abupdate::fleet::{self, Action, Facts, Plan, Policy};
use abupdate::manifest::{self, HostFacts, Manifest, ManifestDoc, Rollout, Version};
use abupdate::report::Event;
use abupdate::rollout;
use abupdate::state::State;
use abupdate::timefmt::{format_rfc3339, parse_rfc3339};

const HOSTS: usize = 10_000;
const MINUTE: i64 = 60;

struct SimHost {
    id: String,
    position: f64,
    poll_minute: i64,
    version: Version,
    state: State,
    installs: u32,
}

fn fleet() -> Vec<SimHost> {
    (0..HOSTS)
        .map(|i| {
            let machine_id = format!(
                "{:032x}",
                (i as u128 + 1).wrapping_mul(0x2545f4914f6cdd1d9e3779b97f4a7c15)
            );
            let position = rollout::position(&machine_id);
            SimHost {
                id: rollout::host_id(&machine_id),
                position,
                // Hourly timer with a per-host offset (RandomizedDelaySec).
                poll_minute: (position * 7919.0) as i64 % 60,
                version: Version::parse("1.0").expect("v"),
                state: State::default(),
                installs: 0,
            }
        })
        .collect()
}

/// A manifest of `version` whose rollout starts at `start` in its first
/// wave of 2, 10, 50, 100 %; the waves too, for the controller's policy.
fn staged_manifest(version: &str, start: i64) -> (Manifest, Vec<f64>) {
    let waves = vec![2.0, 10.0, 50.0, 100.0];
    let m = manifest(
        version,
        start,
        Rollout {
            percent: Some(2.0),
            waves: Some(waves.clone()),
            wave_started: Some(format_rfc3339(start)),
            ..Default::default()
        },
    );
    (m, waves)
}

fn manifest(version: &str, start: i64, rollout: Rollout) -> Manifest {
    let doc = ManifestDoc {
        format: 1,
        compatible: "sim".into(),
        track: None,
        version: version.into(),
        created: format_rfc3339(start - 3600),
        expires: format_rfc3339(start + 30 * 86400),
        images: [(
            "rootfs".to_string(),
            manifest::Image {
                url: "rootfs.img".into(),
                size: 1,
                sha256: "0".repeat(64),
                compression: manifest::Compression::None,
                download_size: None,
                download_sha256: None,
                window_log: None,
                segments: Vec::new(),
                deltas: Default::default(),
            },
        )]
        .into_iter()
        .collect(),
        rollout: Some(rollout),
    };
    Manifest::parse(&serde_json::to_vec(&doc).expect("json")).expect("manifest parses")
}

/// One host's timer tick: the same judgement `abupdate update` makes.
/// Returns the events it reports.
fn poll(host: &mut SimHost, m: &Manifest, now: i64, healthy: bool) -> Vec<Event> {
    let failed = host.state.failed_versions(true);
    let cancelled = host.state.cancelled_versions();
    let facts = HostFacts {
        compatible: "sim",
        track: Default::default(),
        booted_version: Some(&host.version),
        failed_versions: &failed,
        cancelled_versions: &cancelled,
        now,
        newest_created_seen: host.state.newest_created,
        floor: None,
        fetched: "sim",
        slot_classes: &["rootfs".to_string()],
        max_window_log: 27,
        allow_downgrade: false,
    };
    if manifest::evaluate(m, &facts).is_err() {
        return vec![];
    }
    let standing = rollout::decide(m.doc.rollout.as_ref(), host.position, now).expect("rollout");
    if !standing.included {
        return vec![];
    }
    host.installs += 1;
    let (id, booted) = (host.id.clone(), host.version.to_string());
    let event = |outcome: &str, at: i64| Event {
        host: id.clone(),
        compatible: "sim".into(),
        release: Some(m.version.to_string()),
        build: Some(m.doc.build()),
        booted_slot: None,
        booted_version: Some(booted.clone()),
        outcome: outcome.into(),
        error_kind: (outcome == "rolled_back").then(|| "health".into()),
        message: None,
        time: at,
    };
    // Install ~10 min, reboot, health verdict ~5 min later.
    let mut events = vec![event("installed", now + 10 * MINUTE)];
    if healthy {
        host.version = m.version.clone();
        events.push(event("committed", now + 15 * MINUTE));
    } else {
        host.state.record_failed(
            m.version.as_str(),
            &m.sha256,
            "health checks failed",
            now + 15 * MINUTE,
        );
        events.push(event("rolled_back", now + 15 * MINUTE));
    }
    events
}

/// One run of the controller at `now` over the reports that have arrived:
/// the decision `abupdate fleet` makes, applied to the manifest as its
/// re-sign would. Returns the action.
fn controller(
    m: &mut Manifest,
    hosts: &[SimHost],
    reports: &[Event],
    policy: &Policy,
    now: i64,
) -> Action {
    let arrived: Vec<Event> = reports.iter().filter(|e| e.time <= now).cloned().collect();
    let plan = Plan::from_manifest(m.doc.rollout.as_ref(), m.created, &policy.waves).expect("plan");
    // What `count(abupdate_rollout_position{…} < percent/100)` answers.
    let wave_hosts = plan
        .percent
        .map(|p| hosts.iter().filter(|h| h.position * 100.0 < p).count() as u64);
    // And the tally of the wave's own hosts, as the outcome query joins
    // each host's outcome with its position.
    let in_wave = plan.percent.map(|p| {
        let wave: std::collections::HashSet<&str> = hosts
            .iter()
            .filter(|h| h.position * 100.0 < p)
            .map(|h| h.id.as_str())
            .collect();
        let inside: Vec<Event> = arrived
            .iter()
            .filter(|e| wave.contains(e.host.as_str()))
            .cloned()
            .collect();
        fleet::tally(&inside, "sim", m.version.as_str(), &m.doc.build())
    });
    let facts = Facts {
        tally: fleet::tally(&arrived, "sim", m.version.as_str(), &m.doc.build()),
        in_wave,
        wave_hosts,
    };
    let action = fleet::decide(&plan, &facts, policy, now);
    let mut doc = serde_json::to_value(&m.doc).expect("json");
    if fleet::apply(&mut doc, &action, &plan.waves, now).expect("apply") {
        // Re-published (and re-signed) manifest: a new sha, same release.
        *m = Manifest::parse(&serde_json::to_vec(&doc).expect("json")).expect("manifest");
    }
    action
}

#[test]
fn a_good_release_ramps_to_every_host_on_schedule() {
    let start = parse_rfc3339("2026-12-01T00:00:00Z").expect("t");
    let duration_minutes = 3 * 24 * 60;
    let m = manifest(
        "2.0",
        start,
        Rollout {
            start: Some(format_rfc3339(start)),
            start_percentage: Some(1.0),
            duration_minutes: Some(duration_minutes),
            ..Default::default()
        },
    );
    let mut hosts = fleet();
    println!("good release, linear ramp 1% → 100% over 72 h");
    println!("{:>6} {:>10} {:>10}", "hour", "rollout %", "updated %");
    let end = start + duration_minutes as i64 * MINUTE + 2 * 3600;
    let mut now = start;
    while now <= end {
        for h in hosts
            .iter_mut()
            .filter(|h| (now / MINUTE) % 60 == h.poll_minute)
        {
            poll(h, &m, now, true);
        }
        if (now - start) % (6 * 3600) == 0 {
            let pct = rollout::percentage(m.doc.rollout.as_ref().expect("r"), now).expect("pct");
            let updated = hosts.iter().filter(|h| h.version.as_str() == "2.0").count() as f64
                / HOSTS as f64
                * 100.0;
            println!(
                "{:>6} {:>10.2} {:>10.2}",
                (now - start) / 3600,
                pct,
                updated
            );
            // Never ahead of the schedule; at most one poll interval behind.
            assert!(
                updated <= pct + 0.5,
                "hour {}: {updated}% updated, rollout at {pct}%",
                (now - start) / 3600
            );
            let hour_ago =
                rollout::percentage(m.doc.rollout.as_ref().expect("r"), now - 3600).expect("pct");
            assert!(
                updated >= hour_ago - 1.0,
                "hour {}: {updated}% updated, an hour ago the rollout was at {hour_ago}%",
                (now - start) / 3600
            );
        }
        now += MINUTE;
    }
    assert!(
        hosts.iter().all(|h| h.version.as_str() == "2.0"),
        "not every host updated by the end of the ramp"
    );
    assert!(
        hosts.iter().all(|h| h.installs == 1),
        "a host installed twice"
    );
}

#[test]
fn a_bad_release_is_paused_after_the_first_wave_and_never_reinstalled() {
    let start = parse_rfc3339("2026-12-01T00:00:00Z").expect("t");
    let mut m = manifest(
        "3.0",
        start,
        Rollout {
            percent: Some(1.0),
            ..Default::default()
        },
    );
    let policy = Policy {
        max_failures: 5,
        waves: vec![1.0, 5.0, 25.0, 100.0],
        ..Default::default()
    };
    let mut hosts = fleet();
    let mut reports: Vec<Event> = Vec::new();
    let mut paused_at = None;
    println!("bad release (health fails everywhere), waves 1/5/25/100%, operator every 30 min");
    println!(
        "{:>6} {:>9} {:>10} {:>11} {:>7}",
        "hour", "wave %", "installed", "rolled back", "paused"
    );
    let end = start + 4 * 86400;
    let mut now = start;
    while now <= end {
        for h in hosts
            .iter_mut()
            .filter(|h| (now / MINUTE) % 60 == h.poll_minute)
        {
            reports.extend(poll(h, &m, now, false));
        }
        if (now - start) % (30 * MINUTE) == 0 {
            // The controller sees the outcomes that have arrived by now.
            if let Action::Pause { .. } = controller(&mut m, &hosts, &reports, &policy, now) {
                paused_at.get_or_insert(now);
            }
        }
        if (now - start) % (6 * 3600) == 0 || (now - start) < 3 * 3600 && (now - start) % 3600 == 0
        {
            let installed = hosts.iter().filter(|h| h.installs > 0).count();
            let rolled = hosts
                .iter()
                .filter(|h| h.state.failed_versions(false).contains(&"3.0".to_string()))
                .count();
            let r = m.doc.rollout.as_ref().expect("rollout");
            println!(
                "{:>6} {:>9} {:>10} {:>11} {:>7}",
                (now - start) / 3600,
                r.percent.unwrap_or(0.0),
                installed,
                rolled,
                r.paused
            );
        }
        now += MINUTE;
    }
    let installed: Vec<&SimHost> = hosts.iter().filter(|h| h.installs > 0).collect();
    let installed_count = installed.len();
    assert!(paused_at.is_some(), "the operator never paused the release");
    assert!(
        installed.len() <= HOSTS / 100,
        "{} hosts (> 1%) installed the bad release",
        installed.len()
    );
    assert!(
        installed
            .iter()
            .all(|h| h.version.as_str() == "1.0" && h.state.failed_versions(false) == ["3.0"]),
        "a host kept the bad release"
    );
    assert!(
        installed.iter().all(|h| h.installs == 1),
        "a host re-installed the bad release"
    );
    assert_eq!(
        m.doc.rollout.as_ref().and_then(|r| r.percent),
        Some(1.0),
        "the rollout advanced past the first wave"
    );

    // Even un-paused, the hosts that failed it never take it again.
    let mut doc = m.doc.clone();
    doc.rollout = Some(Rollout {
        percent: Some(1.0),
        ..Default::default()
    });
    let m = Manifest::parse(&serde_json::to_vec(&doc).expect("json")).expect("manifest");
    for h in hosts.iter_mut().filter(|h| h.installs > 0) {
        assert!(
            poll(h, &m, end + 3600, false).is_empty(),
            "a failed host re-installed after un-pausing"
        );
    }
    println!(
        "paused at +{} min; {} hosts ({:.2}%) ever installed it, all rolled back",
        (paused_at.unwrap_or(0) - start) / 60,
        installed_count,
        installed_count as f64 / HOSTS as f64 * 100.0
    );
}

#[test]
fn a_good_release_advances_through_its_waves_after_each_soak() {
    let start = parse_rfc3339("2026-12-01T00:00:00Z").expect("t");
    let (mut m, waves) = staged_manifest("2.0", start);
    let policy = Policy {
        soak: std::time::Duration::from_secs(2 * 3600),
        ..Default::default()
    };
    let mut hosts = fleet();
    let mut reports: Vec<Event> = Vec::new();
    let mut advanced: Vec<(i64, f64)> = Vec::new();
    println!("good release, waves 2/10/50/100%, 90% committed and a 2 h soak per wave, controller every 30 min");
    println!("{:>6} {:>7} {:>10}", "hour", "wave %", "updated %");
    let end = start + 2 * 86400;
    let mut now = start;
    while now <= end {
        for h in hosts
            .iter_mut()
            .filter(|h| (now / MINUTE) % 60 == h.poll_minute)
        {
            reports.extend(poll(h, &m, now, true));
        }
        if (now - start) % (30 * MINUTE) == 0 {
            let before = m.doc.rollout.as_ref().and_then(|r| r.percent);
            let action = controller(&mut m, &hosts, &reports, &policy, now);
            assert!(
                !matches!(action, Action::Pause { .. }),
                "a good release paused: {action:?}"
            );
            if let Action::Advance { to, .. } = action {
                // Never advanced inside the soak of the wave it leaves.
                let since = advanced.last().map(|(t, _)| *t).unwrap_or(start);
                assert!(
                    now - since >= 2 * 3600,
                    "advanced from {before:?} after {} min",
                    (now - since) / 60
                );
                advanced.push((now, to));
            }
        }
        if (now - start) % (3 * 3600) == 0 {
            let updated = hosts.iter().filter(|h| h.version.as_str() == "2.0").count() as f64
                / HOSTS as f64
                * 100.0;
            let pct = m
                .doc
                .rollout
                .as_ref()
                .and_then(|r| r.percent)
                .unwrap_or(0.0);
            println!("{:>6} {:>7} {:>10.2}", (now - start) / 3600, pct, updated);
            assert!(
                updated <= pct,
                "{updated}% updated ahead of the {pct}% wave"
            );
        }
        now += MINUTE;
    }
    assert_eq!(
        advanced.iter().map(|(_, to)| *to).collect::<Vec<_>>(),
        waves[1..],
        "did not advance through every wave"
    );
    assert!(
        hosts
            .iter()
            .all(|h| h.version.as_str() == "2.0" && h.installs == 1),
        "not every host took the release exactly once"
    );
    println!(
        "advanced at {}; every host on 2.0 within the 2 days",
        advanced
            .iter()
            .map(|(t, to)| format!("+{}h to {to}%", (t - start) / 3600))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// How long a committed release of the late-failure scenario runs before
/// its hosts start to crash (a leak), and how often they crash then.
const FAILS_AFTER: i64 = 6 * 3600;

/// One timer run of a host on probation (`abupdate update` during its
/// probation: the crate's own `agent::probation::decide`): a host whose
/// release has run `FAILS_AFTER` crashed since its last run (a new boot id,
/// the clean-shutdown mark still the one of the reboot into the trial). Returns the late rollback's event, if any.
fn probation_tick(host: &mut SimHost, boots: &mut u32, limit: u32, now: i64) -> Option<Event> {
    use abupdate::agent::probation::{decide, Decision, Facts, Fallback};
    let p = host.state.on_probation().cloned()?;
    if now - p.started >= FAILS_AFTER {
        *boots += 1;
    }
    let boot_id = format!("{}-{boots}", host.id);
    let mut facts = Facts {
        probation: &p,
        booted: p.slot,
        now,
        // The simulated hosts run on: the window counted on the clock.
        ran: Some(now - p.started),
        window: p.until - p.started,
        limit,
        boot_id: Some(&boot_id),
        // Written at the orderly reboot into the trial, never since.
        mark: Some("the-boot-before-the-trial"),
        checks: None,
        fallback: None,
        // The simulated channel never withdraws the release.
        withdrawn: None,
    };
    let decision = loop {
        match decide(&facts) {
            // The checks pass between crashes.
            Decision::RunChecks => facts.checks = Some(Ok(())),
            // The old slot holds 1.0, good in the bootloader too.
            Decision::ReadFallback => {
                facts.fallback = Some(Fallback {
                    status: abupdate::state::SlotStatus::Good,
                    writing: false,
                    boot: Some(abupdate::boot::BootState::Good),
                })
            }
            d => break d,
        }
    };
    match decision {
        Decision::Record { failures, .. } => {
            if let Some(on) = host.state.probation.as_mut() {
                on.failures = failures;
                on.boot_id = Some(boot_id);
            }
            None
        }
        Decision::RollBack(why, _) => {
            let t = &host.state.probation_release()?;
            host.state.retire_trial(
                t,
                true,
                &why,
                abupdate::error::Kind::Health,
                abupdate::state::Hold::Failed,
                now,
            );
            host.version = Version::parse("1.0").expect("v");
            Some(Event {
                host: host.id.clone(),
                compatible: "sim".into(),
                release: Some(t.version.clone()),
                build: abupdate::state::build_of(&t.images),
                booted_slot: None,
                booted_version: Some(t.version.clone()),
                outcome: "rolled_back_late".into(),
                error_kind: Some("health".into()),
                message: Some(why),
                time: now + 5 * MINUTE,
            })
        }
        Decision::End => {
            host.state.end_probation(now);
            None
        }
        // The window stays configured and the old slot stays usable.
        Decision::Continue
        | Decision::RunChecks
        | Decision::ReadFallback
        | Decision::NoFallback(..)
        | Decision::FellBack
        | Decision::Off => None,
    }
}

/// The late-failure scenario: release 4.0 passes its trial everywhere and
/// makes its hosts crash from six hours after their commit; waves
/// 2/10/50/100% with a 4 h soak, the controller every 30 min, for three
/// days. With `probation` (seconds; 0: none): (hosts that installed 4.0,
/// hosts on 4.0 at the end, when the rollout paused).
fn late_failure(probation: u64) -> (usize, usize, Option<i64>) {
    let start = parse_rfc3339("2026-12-01T00:00:00Z").expect("t");
    let (mut m, waves) = staged_manifest("4.0", start);
    let policy = Policy {
        soak: std::time::Duration::from_secs(4 * 3600),
        waves,
        ..Default::default()
    };
    let mut hosts = fleet();
    let mut boots = vec![0u32; HOSTS];
    let mut reports: Vec<Event> = Vec::new();
    let mut paused_at = None;
    println!(
        "release 4.0 fails 6 h after its commit; probation {}",
        if probation == 0 {
            "off".to_string()
        } else {
            format!("{} h, more than 2 failures roll back", probation / 3600)
        }
    );
    println!(
        "{:>6} {:>7} {:>10} {:>8} {:>12}",
        "hour", "wave %", "installed", "on 4.0", "rolled back"
    );
    let end = start + 3 * 86400;
    let mut now = start;
    while now <= end {
        for (i, h) in hosts.iter_mut().enumerate() {
            if (now / MINUTE) % 60 != h.poll_minute {
                continue;
            }
            if h.state.on_probation().is_some() {
                // During probation `update` fetches nothing.
                reports.extend(probation_tick(h, &mut boots[i], 2, now));
                continue;
            }
            let events = poll(h, &m, now, true);
            if events.iter().any(|e| e.outcome == "committed") {
                let t = abupdate::state::Transaction {
                    from: abupdate::slot::SlotName::A,
                    to: abupdate::slot::SlotName::B,
                    version: m.version.to_string(),
                    manifest_sha256: m.sha256.clone(),
                    phase: abupdate::state::Phase::Staged,
                    started: now,
                    staged_boot_id: None,
                    images: Default::default(),
                    unknown: Default::default(),
                };
                let boot = Some(format!("{}-0", h.id));
                h.state.commit(&t, now + 15 * MINUTE, probation, boot);
            }
            reports.extend(events);
        }
        if (now - start) % (30 * MINUTE) == 0 {
            if let Action::Pause { .. } = controller(&mut m, &hosts, &reports, &policy, now) {
                paused_at.get_or_insert(now);
            }
        }
        if (now - start) % (3 * 3600) == 0 && now - start <= 24 * 3600 || now == end {
            let r = m.doc.rollout.as_ref().expect("rollout");
            println!(
                "{:>6} {:>7} {:>10} {:>8} {:>12}",
                (now - start) / 3600,
                format!(
                    "{}{}",
                    r.percent.unwrap_or(0.0),
                    if r.paused { "p" } else { "" }
                ),
                hosts.iter().filter(|h| h.installs > 0).count(),
                hosts.iter().filter(|h| h.version.as_str() == "4.0").count(),
                hosts
                    .iter()
                    .filter(|h| h.state.failed_versions(false).contains(&"4.0".to_string()))
                    .count()
            );
        }
        now += MINUTE;
    }
    assert!(
        hosts.iter().all(|h| h.installs <= 1),
        "a host installed 4.0 twice"
    );
    let installed = hosts.iter().filter(|h| h.installs > 0).count();
    let on_bad = hosts.iter().filter(|h| h.version.as_str() == "4.0").count();
    (installed, on_bad, paused_at.map(|t| t - start))
}

#[test]
fn probation_rolls_back_a_release_that_fails_six_hours_after_its_commit() {
    let (installed, on_bad, paused) = late_failure(0);
    println!(
        "without probation: {installed} hosts installed 4.0, {on_bad} still run it; paused: {paused:?}"
    );
    assert_eq!(
        on_bad, HOSTS,
        "without probation every host keeps the bad release"
    );
    assert_eq!(paused, None, "nothing reports the late failure");

    let (installed, on_bad, paused) = late_failure(24 * 3600);
    let paused = paused.expect("the controller never paused the rollout");
    println!(
        "with a 24 h probation: rollout paused at +{:.1} h, {installed} hosts ({:.1}%) installed 4.0, {on_bad} still run it",
        paused as f64 / 3600.0,
        installed as f64 / HOSTS as f64 * 100.0
    );
    assert_eq!(on_bad, 0, "a host kept the release past its probation");
    assert!(
        installed < HOSTS,
        "the rollout reached every host before the first late rollback"
    );
    assert!(
        paused <= FAILS_AFTER + 4 * 3600,
        "paused {} h after the start",
        paused / 3600
    );
}
