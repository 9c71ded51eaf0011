//! `abupdate fleet`: the thin runner of the controller. Verify the manifest
//! as hosts do and the keys that will re-sign it; ask the source
//! (Prometheus, or the reports); decide ([`super::decide()`]); re-sign and
//! publish atomically ([`crate::publish`]) into the output directory.
//!
//! Invariant: nothing is written unless the manifest passed the hosts'
//! trust gate, the re-signing keys are the ones that signed it, and the
//! source answered in full; a dry run writes nothing. A run decides at one
//! instant ([`Observed::at`]): with Prometheus, the store's now, once its
//! clock agrees with this machine's ([`super::clock`]); every query, the
//! soak, `wave_started` and `created` use it.

use super::decide::{wave_hosts_of_fleet, Action, Facts, Plan, Policy};
use super::prometheus::{self, Client, Matcher, Sample};
use crate::error::{Error, Result};
use crate::publish::{self, ReleaseDir};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the fleet's word about a release comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A Prometheus-compatible query API (`--prometheus URL`), over hosts
    /// of the release's `compatible` matching `selector`.
    Prometheus {
        /// The API's root URL.
        url: String,
        /// `--selector`: label matchers every query adds.
        selector: Vec<Matcher>,
        /// `--query-timeout`: the bound on each query.
        timeout: Duration,
        /// `--host-label`: the label whose value names a host (one vote
        /// per value).
        host_label: String,
        /// `--prometheus-ca`: the trust roots of an https API (else the
        /// host's CA bundle).
        ca_file: Option<PathBuf>,
        /// `--max-clock-skew`: how far the store's clock may be from this
        /// machine's.
        max_skew: Duration,
    },
    /// The webhook's reports (`--reports PATH`).
    Reports(PathBuf),
}

/// Options of `fleet`, the operator's rollout control.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--manifest`: the `release.json` to pause or advance.
    pub manifest: PathBuf,
    /// The keys that re-sign it: the ones that signed it, `threshold` of them.
    pub secrets: Vec<PathBuf>,
    /// The hosts' trusted key directories and threshold: the manifest is
    /// verified against them before anything is changed (no directory: the
    /// public halves of `secrets` are the trusted keys).
    pub keys_dirs: Vec<PathBuf>,
    /// `--threshold`: signatures by distinct trusted keys the manifest needs.
    pub threshold: usize,
    /// `--prometheus` or `--reports`: what the decision is made from.
    pub source: Source,
    /// When to pause and when to advance.
    pub policy: Policy,
    /// `--dry-run`: decide and say, write nothing.
    pub dry_run: bool,
    /// Where the re-signed manifest is published (default: its own
    /// directory).
    pub out: Option<PathBuf>,
}

/// One query asked and its answer, for `--dry-run` and `--json`.
#[derive(Clone, Debug)]
pub struct Asked {
    /// The PromQL expression.
    pub query: String,
    /// Its instant vector.
    pub answer: Vec<Sample>,
}

/// What one run decided, and from what: the command line prints it.
#[derive(Clone, Debug)]
pub struct Report {
    /// The manifest's version.
    pub release: String,
    /// What was decided, and why.
    pub action: Action,
    /// Whether the manifest was re-signed and published.
    pub changed: bool,
    /// Decided, nothing written.
    pub dry_run: bool,
    /// `prometheus` or `reports`.
    pub source: &'static str,
    /// The current wave's percentage.
    pub percent: Option<f64>,
    /// Hosts the current wave covers.
    pub wave_hosts: Option<u64>,
    /// Hosts reporting (Prometheus) or `--fleet-size`.
    pub fleet_hosts: Option<u64>,
    /// The release's outcomes, every host's.
    pub tally: super::Tally,
    /// The outcomes of the wave's own hosts (`--prometheus` with a wave).
    pub in_wave: Option<super::Tally>,
    /// Report lines skipped (`--reports` only).
    pub malformed_reports: Option<u64>,
    /// Every query and its answer (`--prometheus` only).
    pub queries: Vec<Asked>,
    /// The instant decided at (Unix seconds): the store's now with
    /// `--prometheus`, else this machine's.
    pub at: i64,
    /// How far the store's clock was from this machine's, in milliseconds
    /// (`--prometheus` only; 0 within the round trip).
    pub clock_skew_ms: Option<i64>,
}

/// What the source said.
struct Observed {
    /// The instant the facts hold at, and the run decides at.
    at: i64,
    /// [`Report::clock_skew_ms`].
    clock_skew_ms: Option<i64>,
    facts: Facts,
    asked: Vec<Asked>,
    malformed_reports: Option<u64>,
    fleet_hosts: Option<u64>,
}

/// How Prometheus is asked: the API, which hosts, how a host is named.
struct Asking<'a> {
    url: &'a str,
    selector: &'a [Matcher],
    timeout: Duration,
    host_label: &'a str,
    ca_file: Option<&'a Path>,
    max_skew: Duration,
}

/// Ask Prometheus about build `build` of release `version` of `compatible` at the store's
/// now (refused when its clock is more than `max_skew` from this
/// machine's), in the wave of `percent` whose hosts may have reported
/// since `plan.reports_since` ([`Plan::reports_since`]), when the store
/// still remembers the wave's start ([`prometheus::HISTORY_QUERY`]): the
/// queries at once (each bounded by the timeout), so the decision takes
/// two round trips' time.
fn observe_prometheus(
    ask: &Asking,
    compatible: &str,
    version: &str,
    build: &str,
    percent: Option<f64>,
    plan: &Plan,
) -> Result<Observed> {
    let client = Client::new(ask.url, ask.timeout, &prometheus::roots(ask.ca_file))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let reading = client
        .store_time()
        .map_err(|e| Error::Fleet(format!("{e} (not deciding blind)")))?;
    let now = reading
        .check(ask.max_skew)
        .map_err(|skew| Error::Fleet(format!("{}: {skew}", client.endpoint())))?;
    let q = prometheus::queries(
        compatible,
        version,
        build,
        ask.selector,
        percent,
        ask.host_label,
        prometheus::lookback(plan.reports_since, now),
    );
    let since = prometheus::history_instant(plan.wave_started, now);
    let history = prometheus::HISTORY_QUERY.to_string();
    let order = [
        (&q.outcomes, now),
        (&q.not_counted, now),
        (&q.hosts, now),
        (&q.unidentified, now),
        (&q.unattributed_failed, now),
        (&history, since),
    ];
    let answers: Vec<_> = std::thread::scope(|scope| {
        let client = &client;
        let running: Vec<_> = order
            .iter()
            .map(|&(query, at)| scope.spawn(move || client.query(query, at)))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(prometheus::PromError::Answer {
                        url: client.endpoint(),
                        reason: "the query thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut asked = Vec::new();
    for (&(query, at), answer) in order.iter().zip(answers) {
        let answer = answer.map_err(|e| Error::Fleet(format!("{e} (not deciding blind)")))?;
        let query = match at == now {
            true => query.to_string(),
            false => format!("{query} at {}", crate::timefmt::format_rfc3339(at)),
        };
        asked.push(Asked { query, answer });
    }
    let bad = |query: &str, e: String| {
        Error::Fleet(format!(
            "{}: the answer to {query} is not usable: {e} (not deciding blind)",
            client.endpoint()
        ))
    };
    let matching = match ask.selector.is_empty() {
        true => String::new(),
        false => format!(
            " matching {}",
            ask.selector
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let remembered = prometheus::count_of(&asked[5].answer).map_err(|e| bad(&history, e))?;
    if remembered == 0 {
        return Err(Error::Fleet(format!(
            "{}: the store holds no sample at {}, when the wave started ({} = 0 there): its \
             history is shorter than the wave (restarted on an empty database? a retention \
             shorter than the wave?), so hosts that went silent in the wave would be forgotten: \
             not deciding blind. Look for the wave's silent hosts (up == 0); to go on, date the \
             wave's start (rollout.wave_started) at an instant the store holds and sign the \
             manifest again",
            client.endpoint(),
            crate::timefmt::format_rfc3339(since),
            prometheus::HISTORY_QUERY,
        )));
    }
    let unnamed = prometheus::count_of(&asked[3].answer).map_err(|e| bad(&q.unidentified, e))?;
    if unnamed > 0 {
        return Err(Error::Fleet(format!(
            "{}: {unnamed} abupdate series of {compatible}{matching} have no {} label, so their \
             hosts cannot be told apart (name the label that does with --host-label): not deciding blind",
            client.endpoint(),
            ask.host_label
        )));
    }
    let not_counted = prometheus::count_of(&asked[1].answer).map_err(|e| bad(&q.not_counted, e))?;
    let (mut tally, in_wave) =
        prometheus::tally_of(&asked[0].answer, not_counted, percent.is_some())
            .map_err(|e| bad(&q.outcomes, e))?;
    // Failed, though no series names this release: see Tally.
    let unattributed =
        prometheus::count_of(&asked[4].answer).map_err(|e| bad(&q.unattributed_failed, e))?;
    tally.failed += unattributed;
    tally.failed_unattributed = unattributed;
    if asked[0].answer.is_empty() && tally.not_counted == 0 && unattributed == 0 {
        return Err(Error::Fleet(format!(
            "{}: no host of {compatible} reports release {version} build {build} \
             (no abupdate_release_outcome series{matching}): not deciding blind",
            client.endpoint(),
        )));
    }
    let (fleet_hosts, mut wave_hosts) =
        prometheus::hosts_of(&asked[2].answer, percent.is_some()).map_err(|e| bad(&q.hosts, e))?;
    // Without positions the wave's size is unknown: counting only the hosts
    // that report would make one commit a whole wave's success. Failures of
    // older hosts are evidence enough to pause on: `decide` may pause
    // without the size, and keeps otherwise.
    if percent.is_some() && fleet_hosts == 0 && unattributed > 0 {
        wave_hosts = None;
    } else if percent.is_some() && fleet_hosts == 0 {
        return Err(Error::Fleet(format!(
            "{}: no abupdate_rollout_position series of {compatible}{matching}, so the size of \
             the wave is unknown: not deciding blind",
            client.endpoint(),
        )));
    }
    Ok(Observed {
        at: now,
        clock_skew_ms: Some(reading.skew_ms()),
        facts: Facts {
            tally,
            in_wave,
            wave_hosts,
        },
        asked,
        malformed_reports: None,
        fleet_hosts: Some(fleet_hosts),
    })
}

/// Tally the reports about build `build` of release `version` of
/// `compatible`, at `now`.
fn observe_reports(
    path: &Path,
    policy: &Policy,
    compatible: &str,
    (version, build): (&str, &str),
    percent: Option<f64>,
    now: i64,
) -> Result<Observed> {
    // Only this build's reports are kept while reading.
    let reports = super::read_reports(path, &|e| {
        e.compatible == compatible
            && super::reports::same_release(e.release.as_deref(), version)
            && super::reports::same_build(e.build.as_deref(), build)
    })
    .map_err(Error::Fleet)?;
    let tally = super::tally(&reports.events, compatible, version, build);
    // A report carries no position: which reporter is in the wave is not
    // known, so `decide` counts every commit and says so.
    let in_wave = None;
    let wave_hosts = match (policy.fleet_size, percent) {
        (Some(fleet), Some(p)) => Some(wave_hosts_of_fleet(fleet, p)),
        _ => None,
    };
    Ok(Observed {
        at: now,
        clock_skew_ms: None,
        facts: Facts {
            tally,
            in_wave,
            wave_hosts,
        },
        asked: Vec::new(),
        malformed_reports: Some(reports.malformed),
        fleet_hosts: policy.fleet_size,
    })
}

/// Ask the source `opts` names about build `build` of release `version` of
/// `compatible`,
/// whose current wave is `percent`: the reports at this machine's `now`,
/// Prometheus at its own.
fn observe(
    opts: &Options,
    compatible: &str,
    (version, build): (&str, &str),
    plan: &Plan,
    now: i64,
) -> Result<Observed> {
    let percent = plan.percent;
    match &opts.source {
        Source::Prometheus {
            url,
            selector,
            timeout,
            host_label,
            ca_file,
            max_skew,
        } => {
            let ask = Asking {
                url,
                selector,
                timeout: *timeout,
                host_label,
                ca_file: ca_file.as_deref(),
                max_skew: *max_skew,
            };
            observe_prometheus(&ask, compatible, version, build, percent, plan)
        }
        Source::Reports(path) => observe_reports(
            path,
            &opts.policy,
            compatible,
            (version, build),
            percent,
            now,
        ),
    }
}

/// Whether two manifests' bodies are one build of a release: equal but for
/// what the controller rewrites (`created`, `rollout`).
fn same_build(a: &[u8], b: &[u8]) -> bool {
    let strip = |body: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object_mut()?;
        obj.remove("created");
        obj.remove("rollout");
        Some(v)
    };
    matches!((strip(a), strip(b)), (Some(a), Some(b)) if a == b)
}

/// Whether two paths name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Run the controller once: what it decided, and from what.
pub fn run(opts: &Options, quiet: bool) -> Result<Report> {
    let usage = |m: String| Error::Usage(format!("{m} (see abupdate --help)"));
    let name = opts
        .manifest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            usage(format!(
                "--manifest {}: not a file",
                opts.manifest.display()
            ))
        })?;
    let dir = match opts.manifest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if opts.manifest.is_dir() {
        return Err(usage(format!(
            "--manifest {}: a directory; give its release.json",
            opts.manifest.display()
        )));
    }
    if let Err(e) = std::fs::metadata(&opts.manifest) {
        return Err(Error::io(
            &opts.manifest,
            std::io::Error::new(
                e.kind(),
                format!("cannot read the manifest (--manifest): {e}"),
            ),
        ));
    }
    let secrets = publish::load_secret_keys(&opts.secrets)?;
    // Without --keys, the keys that re-sign must be the ones whose valid
    // signatures the manifest carries: what was not signed by them is
    // never signed by them.
    let keys = match opts.keys_dirs.is_empty() {
        true => {
            crate::trust::KeyRing::from_keys(secrets.iter().map(|(_, k)| k.public_key()).collect())
        }
        false => {
            publish::check_key_dirs(&opts.keys_dirs)?;
            crate::trust::KeyRing::load(&opts.keys_dirs)?
        }
    };
    // A dry run changes nothing on disk: no --out made, no leftover of a
    // killed run removed (found from outside).
    let open_dir = |p: &Path| match opts.dry_run {
        true => ReleaseDir::look(p),
        false => ReleaseDir::open(p),
    };
    let source_dir = open_dir(&dir)?;
    let source = source_dir.read_verified(name, &keys, opts.threshold)?;
    // The rollout's state (paused, the wave, when it started) lives in the
    // published manifest: with --out that is the copy there, once one
    // exists. Deciding from --manifest alone would forget every earlier
    // decision (un-pause a paused rollout, restart a wave's soak).
    let out = opts.out.as_ref().filter(|o| !same_dir(o, &dir));
    let published_copy = match out {
        Some(out) if out.join(name).exists() => {
            let published = open_dir(out)?.read_verified(name, &keys, opts.threshold)?;
            let (p, s) = (&published.manifest.doc, &source.manifest.doc);
            if p.compatible != s.compatible || p.version != s.version {
                return Err(Error::Fleet(format!(
                    "--out {}: holds release {} of {}, not {} of {} (--manifest): fleet would replace it",
                    out.display(),
                    p.version,
                    p.compatible,
                    s.version,
                    s.compatible
                )));
            }
            if !same_build(&published.signed.body, &source.signed.body) {
                return Err(Error::Fleet(format!(
                    "--out {}: holds another build of release {} than --manifest {} (they differ \
                     beyond created and rollout): publish the new build as a new version, or \
                     remove the published copy to start its rollout again",
                    out.display(),
                    s.version,
                    opts.manifest.display()
                )));
            }
            Some(published)
        }
        _ => None,
    };
    // A pause made by hand in --manifest is published, whichever copy is
    // newer and whatever the fleet says: a pause is never dropped. It is
    // the published copy paused, as the fleet pauses it: its wave kept and
    // dated past it (found from outside: published from the source's
    // rollout at this machine's clock, it rolled the wave back and was
    // older than the copy a store ahead had dated, which the wave's hosts
    // then refused as a replay).
    let paused = |m: &crate::manifest::Manifest| m.doc.rollout.as_ref().is_some_and(|r| r.paused);
    let hand_pause = paused(&source.manifest)
        && published_copy
            .as_ref()
            .is_some_and(|p| !paused(&p.manifest));
    let published =
        published_copy.filter(|p| hand_pause || p.manifest.created >= source.manifest.created);
    // Written where it is published; `finish_publish` only where `current`
    // was read.
    let release_dir = match (out, opts.dry_run) {
        (_, true) => None,
        (Some(out), false) => Some(ReleaseDir::open(out)?),
        (None, false) => Some(source_dir),
    };
    let read_here = published.is_some() || out.is_none();
    let current = published.unwrap_or(source);
    current
        .signed
        .check_signers(&secrets, &keys, opts.threshold)?;
    let doc = &current.manifest.doc;
    let plan = Plan::from_manifest(
        doc.rollout.as_ref(),
        current.manifest.created,
        &opts.policy.waves,
    )
    .map_err(|e| Error::Fleet(format!("{}: {e}", opts.manifest.display())))?;
    let (observed, action) = match hand_pause {
        true => (
            Observed {
                at: crate::timefmt::now(),
                clock_skew_ms: None,
                facts: Facts::default(),
                asked: Vec::new(),
                malformed_reports: None,
                fleet_hosts: None,
            },
            Action::Pause {
                reason: format!(
                    "paused by hand in {}; publishing the pause (the fleet was not asked)",
                    opts.manifest.display()
                ),
            },
        ),
        false => {
            let observed = observe(
                opts,
                &doc.compatible,
                (&doc.version, &doc.build()),
                &plan,
                crate::timefmt::now(),
            )?;
            let action = super::decide(&plan, &observed.facts, &opts.policy, observed.at);
            (observed, action)
        }
    };
    // The soak was measured, and `wave_started` and `created` are written,
    // at the instant the source was asked.
    let now = observed.at;
    let changed = action.changes_manifest();
    let finished = match &release_dir {
        Some(d) if !changed && read_here => d.finish_publish(name, &current)?,
        _ => false,
    };
    if finished && !quiet {
        crate::say!(
            "{}: finished an interrupted publish (its signatures are in place again)",
            opts.manifest.display()
        );
    }
    if changed {
        let body = current.rewrite(now, |v| {
            super::apply(v, &action, &plan.waves, now).map(|_| ())
        })?;
        if let Some(release_dir) = &release_dir {
            let signing: Vec<_> = secrets.into_iter().map(|(_, k)| k).collect();
            release_dir.publish_manifest(
                name,
                &body,
                &signing,
                Some(&current.signed.body),
                &keys,
                opts.threshold,
            )?;
        }
    }
    Ok(Report {
        release: doc.version.to_string(),
        action,
        changed: changed && !opts.dry_run,
        dry_run: opts.dry_run,
        source: match &opts.source {
            Source::Prometheus { .. } => "prometheus",
            Source::Reports(_) => "reports",
        },
        percent: plan.percent,
        wave_hosts: observed.facts.wave_hosts,
        fleet_hosts: observed.fleet_hosts,
        tally: observed.facts.tally,
        in_wave: observed.facts.in_wave,
        malformed_reports: observed.malformed_reports,
        queries: observed.asked,
        at: now,
        clock_skew_ms: observed.clock_skew_ms,
    })
}
