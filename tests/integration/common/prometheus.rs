//! Test helpers for the fleet's monitoring: the real node_exporter
//! (Debian's `prometheus-node-exporter`) over a textfile directory, and the
//! real Prometheus (Debian's 2.42) on loopback with series backfilled by
//! `promtool tsdb create-blocks-from openmetrics`. Each runs on a free
//! loopback port and is killed (and waited for) on drop.

use super::host::{bin, run, TestHost};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The host's textfile at `prom` has a line starting with `head` (a
/// family's name and its first labels) holding each of `parts`.
pub fn textfile_has(prom: &Path, head: &str, parts: &[&str]) -> bool {
    std::fs::read_to_string(prom)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(head) && parts.iter().all(|p| l.contains(p)))
}

/// A daemon this test started; killed by its own pid on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// `abupdate <global> fleet` on manifest `m`, signed with `h`'s key and
/// checked against its keys, deciding on the store at `url` with a
/// 30-minute soak; `extra` goes after, so a test can override any of these.
pub fn fleet(h: &TestHost, global: &[&str], m: &Path, url: &str, extra: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(global)
        .args(["fleet", "--manifest"])
        .arg(m)
        .arg("--secret")
        .arg(&h.secret_key)
        .arg("--keys")
        .arg(h.dir.join("keys"))
        .args(["--prometheus", url])
        .args(crate::common::host::defaults_unless_given(
            &[("--soak", "30m")],
            extra,
        ))
        .args(extra);
    run(&mut c)
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `tool`, or a panic saying how to install it.
pub fn need(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{tool} not installed: scripts/deps.sh installs Debian's {package}")
    })
}

/// GET `url`: (status, body), or an error text.
pub fn get(url: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn start(mut cmd: Command, port: u16, log: PathBuf, ready: &str) -> Daemon {
    let out = std::fs::File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let d = Daemon { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(get(&d.url(ready)), Ok((200, _))) {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{cmd:?} not ready in 30 s: {}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
}

/// node_exporter with only its textfile collector, over `dir`.
pub fn node_exporter(dir: &Path) -> Daemon {
    let bin = need("prometheus-node-exporter", "prometheus-node-exporter");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!("--collector.textfile.directory={}", dir.display()));
    start(
        cmd,
        port,
        dir.with_extension("node-exporter.log"),
        "/metrics",
    )
}

/// Prometheus over a data dir backfilled from `openmetrics` (text ending
/// in `# EOF`), with no scrape target: it answers from the blocks.
pub fn prometheus_with(dir: &Path, openmetrics: &str) -> Daemon {
    let now = abupdate::timefmt::now();
    prometheus_remembering(dir, openmetrics, now - HISTORY_SECS)
}

/// How far back [`prometheus_with`]'s store remembers its scrapes: longer
/// than the controller's longest lookback (a week).
const HISTORY_SECS: i64 = 8 * 24 * 3600;

/// [`prometheus_with`], the store remembering its scrapes (`up`, one
/// target's, every 4 minutes, as a scraping Prometheus records it) since
/// `since` only: a store restarted on an empty database then, or whose
/// retention reaches no further back.
pub fn prometheus_remembering(dir: &Path, openmetrics: &str, since: i64) -> Daemon {
    let bin = need("prometheus", "prometheus");
    let promtool = need("promtool", "prometheus");
    std::fs::create_dir_all(dir).expect("dir");
    let om = dir.join("series.om");
    let now = abupdate::timefmt::now();
    let up: Vec<String> = (since..=now)
        .step_by(240)
        .map(|t| format!("up{{instance=\"prometheus:9090\",job=\"prometheus\"}} 1 {t}"))
        .collect();
    let body = openmetrics
        .strip_suffix("# EOF\n")
        .expect("an OpenMetrics text ends with # EOF");
    let openmetrics = format!(
        "{body}# HELP up Whether the target was reached.\n# TYPE up gauge\n{}\n# EOF\n",
        up.join("\n")
    );
    std::fs::write(&om, openmetrics).expect("openmetrics");
    let data = dir.join("data");
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&data)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global: {}\n").expect("config");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    start(cmd, port, dir.join("prometheus.log"), "/-/ready")
}

/// One sample of the text exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Scraped {
    pub name: String,
    /// Labels with a value (an empty value is no label to Prometheus).
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of an exposition (`# …` lines skipped).
pub fn parse_exposition(text: &str) -> Vec<Scraped> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels end")),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut chars = labels.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some(c) => v.push(c),
                        None => {}
                    },
                    c => v.push(c),
                }
            }
            if chars.peek() == Some(&',') {
                chars.next();
            }
            if !v.is_empty() {
                map.insert(key.trim().to_string(), v);
            }
        }
        out.push(Scraped {
            name: name.to_string(),
            labels: map,
            value: value.parse().expect("sample value"),
        });
    }
    out
}
