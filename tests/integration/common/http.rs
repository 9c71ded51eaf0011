//! Test helper: a real nginx on a free loopback port serving a directory
//! (static files, so ETag, Last-Modified and byte ranges come for free), with
//! an access log that records `$connection $status $body_bytes_sent
//! "$http_range" $request_uri` so a test can count the bytes the server
//! actually sent, and the connections they came on.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::host::scratch;

/// One access-log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// nginx's serial number of the connection the request came on.
    pub connection: u64,
    pub status: u16,
    pub body_bytes_sent: u64,
    /// The request's Range header, `None` when it had none.
    pub range: Option<String>,
    pub uri: String,
}

/// A running nginx; killed (and its prefix removed) on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub prefix: PathBuf,
    pub root: PathBuf,
    owned_root: bool,
}

fn find_nginx() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.push("/usr/sbin/nginx".into());
    candidates.push("/usr/local/sbin/nginx".into());
    candidates.into_iter().find(|p| p.is_file())
}

/// The nginx binary, or `None` after a loud SKIP line.
fn nginx_or_skip() -> Option<PathBuf> {
    let found = find_nginx();
    if found.is_none() {
        eprintln!(
            "SKIP: nginx not installed (apt-get install -y nginx); nginx-backed test not run"
        );
    }
    found
}

/// Deterministic pseudo-random bytes (xorshift), so a wrong offset shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Nginx {
    /// Start nginx serving `root`. `extra` is inserted into the `server`
    /// block (e.g. redirect locations). `None` (after a loud SKIP line) when
    /// nginx is not installed.
    pub fn start(root: &Path, extra: &str) -> Option<Nginx> {
        Nginx::start_with_http(root, extra, "")
    }

    /// As `start`, with `http_extra` added to the `http` block (e.g. a
    /// `proxy_cache_path`).
    pub fn start_with_http(root: &Path, extra: &str, http_extra: &str) -> Option<Nginx> {
        let Some(bin) = find_nginx() else {
            eprintln!(
                "SKIP: nginx not installed (apt-get install -y nginx); nginx-backed test not run"
            );
            return None;
        };
        let prefix = scratch("nginx");
        std::fs::create_dir_all(prefix.join("tmp")).expect("tmp dir");
        let port = free_port();
        let p = prefix.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format fetchtest '$connection $status $body_bytes_sent "$http_range" $request_uri';
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type application/octet-stream;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        access_log {p}/access.log fetchtest;
        {extra}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
                panic!("nginx did not come up on port {port} ({exited:?}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx {
            child,
            port,
            prefix,
            root: root.to_path_buf(),
            owned_root: false,
        })
    }

    /// Start nginx serving a fresh empty directory (`self.root`) that is
    /// removed with the server; put the files in after starting.
    pub fn start_temp(extra: &str) -> Option<Nginx> {
        nginx_or_skip()?;
        let root = scratch("www");
        let mut nginx = Nginx::start(&root, extra)?;
        nginx.owned_root = true;
        Some(nginx)
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    pub fn log(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }

    /// The log once it has at least `n` lines (nginx writes a line when a
    /// request completes, which for an aborted one is when it notices).
    pub fn wait_log(&self, n: usize) -> Vec<LogLine> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn parse_line(line: &str) -> Option<LogLine> {
    let mut it = line.splitn(4, ' ');
    let connection = it.next()?.parse().ok()?;
    let status = it.next()?.parse().ok()?;
    let body_bytes_sent = it.next()?.parse().ok()?;
    let rest = it.next()?;
    let rest = rest.strip_prefix('"')?;
    let (range, uri) = rest.split_once("\" ")?;
    Some(LogLine {
        connection,
        status,
        body_bytes_sent,
        range: (range != "-").then(|| range.to_string()),
        uri: uri.to_string(),
    })
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
        if self.owned_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
