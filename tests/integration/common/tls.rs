//! A real TLS server for tests: a private CA and a leaf for 127.0.0.1 made
//! by the `openssl` CLI, served by `openssl s_server -WWW` (files of a
//! directory over HTTPS). The host under test does not know the CA unless
//! told (`update.ca_file`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Write a CA (`ca.pem`) and a leaf for 127.0.0.1 signed by it (`leaf.pem`,
/// `leaf.key`) into `dir`; `None` when the openssl CLI is not usable.
pub fn make_pki(dir: &Path) -> Option<PathBuf> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"];
    let leaf = ["-keyout", "leaf.key", "-out", "leaf.csr"];
    let ok = openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &ca,
            &["-subj", "/CN=abupdate test CA"],
        ]
        .concat(),
    ) && openssl(
        dir,
        &[&["req"][..], &ec, &leaf, &["-subj", "/CN=127.0.0.1"]].concat(),
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    ok.then(|| dir.join("ca.pem"))
}

/// `openssl s_server -WWW` serving `dir` (which holds `leaf.pem` and
/// `leaf.key`) on a free loopback port; killed on drop.
pub struct TlsServer {
    child: Child,
    pub port: u16,
}

impl TlsServer {
    pub fn start(dir: &Path) -> TlsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW"])
            .args(["-cert", "leaf.pem", "-key", "leaf.key"])
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        let server = TlsServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
