//! Authenticated downloads through the real binary against a real nginx:
//! the origin (TLS on 127.0.0.1) requires a client certificate (mTLS) and a
//! bearer token; it redirects the payload to another host and port
//! (127.0.0.2, TLS, asks for a client certificate without requiring one).
//! The token (from a root-only `headers_file`) and the client certificate
//! go to the origin only: the other host's log shows neither. The token
//! never appears in any output or in `state.json`; a headers file that
//! group or others can read is refused with one line naming it.

use crate::common::host::{image, text, HostOptions, TestHost};
use crate::common::http::Nginx;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TOKEN: &str = "s3cret-t0ken-4f9a";
const LEN: usize = 512 << 10;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and 127.0.0.2, and a client
/// certificate, all from the openssl CLI, in `dir`.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,IP:127.0.0.2\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=abupdate test CA"],
        ]
        .concat(),
    );
    for (name, cn) in [("server", "127.0.0.1"), ("client", "edge-host-17")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={cn}");
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One access-log line of the two TLS servers.
#[derive(Debug)]
struct Hit {
    port: u16,
    authorization: String,
    client_cert: String,
    status: u16,
    uri: String,
}

fn hits(log: &Path) -> Vec<Hit> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Some(Hit {
                port: f.first()?.parse().ok()?,
                authorization: f.get(1)?.to_string(),
                client_cert: f.get(2)?.to_string(),
                status: f.get(3)?.parse().ok()?,
                uri: f.get(4)?.to_string(),
            })
        })
        .collect()
}

struct Setup {
    _nginx: Nginx,
    pki: PathBuf,
    log: PathBuf,
    origin: String,
    other_port: u16,
}

/// nginx with the origin (mTLS + token required, payload redirected) and
/// the other host, serving `release_dir`.
fn servers(release_dir: &Path, pki: &Path) -> Option<Setup> {
    let origin_port = free_port("127.0.0.1");
    let other_port = free_port("127.0.0.2");
    let log = pki.join("tls-access.log");
    let (p, r) = (pki.display(), release_dir.display());
    let http_extra = format!(
        r#"
    log_format authlog '$server_port|$http_authorization|$ssl_client_s_dn|$status|$request_uri';
    server {{
        listen 127.0.0.1:{origin_port} ssl;
        ssl_certificate {p}/server.pem;
        ssl_certificate_key {p}/server.key;
        ssl_client_certificate {p}/ca.pem;
        ssl_verify_client on;
        root {r};
        access_log {log} authlog;
        location / {{
            if ($http_authorization != "Bearer {TOKEN}") {{ return 401; }}
        }}
        location ~ \.img(\.zst)?$ {{
            if ($http_authorization != "Bearer {TOKEN}") {{ return 401; }}
            return 302 https://127.0.0.2:{other_port}$request_uri;
        }}
    }}
    server {{
        listen 127.0.0.2:{other_port} ssl;
        ssl_certificate {p}/server.pem;
        ssl_certificate_key {p}/server.key;
        ssl_client_certificate {p}/ca.pem;
        ssl_verify_client optional_no_ca;
        root {r};
        access_log {log} authlog;
    }}
"#,
        log = log.display(),
    );
    let nginx = Nginx::start_with_http(release_dir, "", &http_extra)?;
    Some(Setup {
        _nginx: nginx,
        pki: pki.to_path_buf(),
        log,
        origin: format!("https://127.0.0.1:{origin_port}/release.json"),
        other_port,
    })
}

/// Point the host at the origin with `keys` lines added to `[update]`.
fn configure(h: &TestHost, base: &str, s: &Setup, keys: &str) {
    std::fs::write(
        &h.config,
        base.replacen(
            "[update]\n",
            &format!(
                "[update]\nurl = \"{}\"\nca_file = \"{}/ca.pem\"\nretries = 0\n{keys}\n",
                s.origin,
                s.pki.display()
            ),
            1,
        ),
    )
    .expect("config");
}

#[test]
fn token_and_client_certificate_reach_the_origin_only_never_a_redirect_to_another_host() {
    if !crate::common::host::has_tool("openssl") {
        eprintln!("SKIP: openssl CLI missing");
        return;
    }
    let h = TestHost::new("auth", "1.0", HostOptions::default());
    let pki = h.dir.join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    make_pki(&pki);
    chmod(&pki.join("client.key"), 0o600);
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &[]);
    let Some(s) = servers(m.parent().expect("dir"), &pki) else {
        return;
    };
    let base = std::fs::read_to_string(&h.config).expect("config");
    let headers = h.dir.join("headers");
    std::fs::write(
        &headers,
        format!("# the update server's token\nAuthorization: Bearer {TOKEN}\n"),
    )
    .expect("headers");
    chmod(&headers, 0o600);
    let cert_keys = format!(
        "client_cert = \"{p}/client.pem\"\nclient_key = \"{p}/client.key\"",
        p = pki.display()
    );
    let mut outputs = Vec::new();

    // The origin really requires both: without the certificate nginx
    // refuses (400), without the token 401.
    configure(
        &h,
        &base,
        &s,
        &format!("headers_file = \"{}\"", headers.display()),
    );
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP 400"), "{}", text(&out));
    outputs.push(text(&out));
    configure(&h, &base, &s, &cert_keys);
    let out = h.abupdate(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP 401"), "{}", text(&out));
    outputs.push(text(&out));

    // A headers file group or others can read: one line naming it, exit 2.
    chmod(&headers, 0o640);
    configure(
        &h,
        &base,
        &s,
        &format!("headers_file = \"{}\"\n{cert_keys}", headers.display()),
    );
    let before = h.untouched();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: holds credentials but is open to group or others (mode 0640)",
            headers.display()
        )),
        "{stderr}"
    );
    h.assert_untouched(&before, "open headers file");
    outputs.push(text(&out));

    // Root-only: the whole update goes through.
    chmod(&headers, 0o600);
    let before_hits = hits(&s.log).len();
    let out = h.abupdate(&["update", "--now", "--no-reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.slot_bytes(1, LEN), image("2.0", LEN));
    outputs.push(text(&out));

    let run: Vec<Hit> = hits(&s.log).into_iter().skip(before_hits).collect();
    let (to_origin, to_other): (Vec<&Hit>, Vec<&Hit>) =
        run.iter().partition(|h| h.port != s.other_port);
    assert!(
        to_origin
            .iter()
            .any(|h| h.uri == "/release.json" && h.status == 200),
        "{run:?}"
    );
    for hit in &to_origin {
        assert_eq!(hit.authorization, format!("Bearer {TOKEN}"), "{hit:?}");
        assert!(hit.client_cert.contains("CN=edge-host-17"), "{hit:?}");
    }
    assert!(
        to_origin
            .iter()
            .any(|h| h.status == 302 && h.uri.ends_with(".img.zst")),
        "the payload was not redirected: {run:?}"
    );
    assert!(
        to_other
            .iter()
            .any(|h| h.status == 200 && h.uri.ends_with(".img.zst")),
        "the other host did not serve the payload: {run:?}"
    );
    for hit in &to_other {
        assert_eq!(
            hit.authorization, "-",
            "token sent to another host: {hit:?}"
        );
        assert_eq!(
            hit.client_cert, "-",
            "client certificate offered to another host: {hit:?}"
        );
    }

    // Never shown.
    for o in &outputs {
        assert!(!o.contains(TOKEN), "the token in output: {o}");
    }
    let state = std::fs::read_to_string(h.state_dir.join("state.json")).expect("state");
    assert!(!state.contains(TOKEN));
}
