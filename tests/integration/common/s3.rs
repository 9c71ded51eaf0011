//! A real S3 implementation for tests: the `moto` server (from PyPI, in a
//! virtualenv `scripts/s3-venv.sh` makes under `target/`), on a free
//! loopback port, over HTTP or HTTPS with a test CA; buckets made and
//! releases published with Debian's `awscli` (`/usr/bin/aws`, explicitly:
//! an `aws` earlier on PATH may be another one), as an operator would.
//! The server's request log (werkzeug's, one line per request with its
//! status) is how a test counts what a host asked for.
//!
//! Used as `crate::common::s3::S3`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Debian's awscli; never the first `aws` on PATH.
pub const AWS: &str = "/usr/bin/aws";

/// One request as the server logged it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: String,
    /// Path and query as sent (percent-escapes decoded by the server's log).
    pub target: String,
    pub status: u16,
}

/// The moto server's virtualenv (made once per test process; the script
/// serialises concurrent processes with a lock).
fn moto_server() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .to_path_buf();
        let venv = target.join("s3-venv");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-venv.sh");
        let out = Command::new(&script)
            .arg(&venv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} {} (needs python3-venv and PyPI): {}{}",
            script.display(),
            venv.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        venv.join("bin/moto_server")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A running moto server; killed on drop.
pub struct S3 {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT` or `https://…`.
    pub endpoint: String,
    log: PathBuf,
    /// The CA file awscli must trust (HTTPS only).
    ca: Option<PathBuf>,
}

impl S3 {
    /// Over HTTP; its log in `dir`.
    pub fn start(dir: &Path) -> S3 {
        S3::spawn(dir, None)
    }

    /// Over HTTPS with `cert`/`key` (a leaf for 127.0.0.1) signed by `ca`.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> S3 {
        S3::spawn(dir, Some((cert, key, ca)))
    }

    fn spawn(dir: &Path, tls: Option<(&Path, &Path, &Path)>) -> S3 {
        let server = moto_server();
        let port = free_port();
        let log = dir.join(format!("moto-{port}.log"));
        let file = std::fs::File::create(&log).expect("moto log");
        let mut cmd = Command::new(server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        if let Some((cert, key, _)) = tls {
            cmd.arg("-c").arg(cert).arg("-k").arg(key);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", server.display()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let s3 = S3 {
            child,
            port,
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            log,
            ca: tls.map(|(_, _, ca)| ca.to_path_buf()),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto server did not start: {}",
                std::fs::read_to_string(&s3.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s3
    }

    /// Run `aws ARGS… --endpoint-url ENDPOINT` (bounded in time) with test
    /// credentials and no user config; its stdout, or a panic naming the
    /// command and its output.
    pub fn aws(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("timeout");
        cmd.args(["120", AWS])
            .args(args)
            .args(["--endpoint-url", &self.endpoint])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca {
            cmd.arg("--ca-bundle").arg(ca);
        }
        let out = cmd.output().expect("run aws");
        assert!(
            out.status.success(),
            "aws {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A bucket; `public` lets anyone GET its objects (a bucket policy, as
    /// a public release bucket has), else only signed requests get them.
    pub fn make_bucket(&self, bucket: &str, public: bool) {
        self.aws(&["s3", "mb", &format!("s3://{bucket}")]);
        if public {
            let policy = format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
            );
            self.aws(&[
                "s3api",
                "put-bucket-policy",
                "--bucket",
                bucket,
                "--policy",
                &policy,
            ]);
        }
    }

    /// Publish a release directory as the README says: everything but the
    /// manifest first (`aws s3 sync`), the manifest last.
    pub fn publish(&self, release_dir: &Path, dest: &str) {
        let dir = format!("{}/", release_dir.display());
        let dest = format!("{}/", dest.trim_end_matches('/'));
        self.aws(&[
            "s3",
            "sync",
            "--no-progress",
            "--exclude",
            "release.json",
            &dir,
            &dest,
        ]);
        self.aws(&[
            "s3",
            "cp",
            "--no-progress",
            &format!("{dir}release.json"),
            &format!("{dest}release.json"),
        ]);
    }

    /// `aws s3 presign S3URI`: a URL good for `secs` seconds.
    pub fn presign(&self, s3_uri: &str, secs: u32) -> String {
        self.aws(&["s3", "presign", s3_uri, "--expires-in", &secs.to_string()])
            .trim()
            .to_string()
    }

    /// Every request the server logged so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse_log_line).collect()
    }

    /// The GET requests logged after the first `skip` requests.
    pub fn gets_since(&self, skip: usize) -> Vec<Request> {
        self.requests()
            .into_iter()
            .skip(skip)
            .filter(|r| r.method == "GET")
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1 - - [date] "GET /b/k?q HTTP/1.1" 304 -`, possibly wrapped
/// in terminal colour escapes.
fn parse_log_line(line: &str) -> Option<Request> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let (_, rest) = plain.split_once('"')?;
    let (request, rest) = rest.rsplit_once('"')?;
    let status = rest.split_whitespace().next()?.parse().ok()?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    Some(Request {
        method,
        target,
        status,
    })
}

/// Run `argv` in a private mount namespace whose `/etc/hosts` maps each of
/// `names` to 127.0.0.1: a virtual-host URL (`http://BUCKET.s3.test:PORT/…`)
/// then resolves through the system resolver as it would with DNS, and the
/// machine's own `/etc/hosts` is never changed (glibc here does not resolve
/// `*.localhost`).
pub fn with_hosts(dir: &Path, names: &[&str], argv: &[&std::ffi::OsStr]) -> Command {
    let hosts = dir.join("hosts");
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for n in names {
        text.push_str(&format!("127.0.0.1 {n}\n"));
    }
    std::fs::write(&hosts, text).expect("hosts file");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
        .arg(&hosts)
        .args(argv);
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_with_and_without_colour() {
        let r = super::parse_log_line(
            "127.0.0.1 - - [02/Dec/2026 12:35:55] \"\u{1b}[35m\u{1b}[1mGET /e/p.bin?a=b HTTP/1.1\u{1b}[0m\" 206 -",
        );
        assert_eq!(
            r,
            Some(super::Request {
                method: "GET".into(),
                target: "/e/p.bin?a=b".into(),
                status: 206
            })
        );
        assert_eq!(
            super::parse_log_line(" * Running on http://127.0.0.1"),
            None
        );
    }
}
