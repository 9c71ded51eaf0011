//! A host that cannot verify its https update server must not commit a
//! release (attack 6, F7): builds before 1cf963b carried Mozilla's roots,
//! today's trust only the host's CA bundle or `[update] ca_file`. On an
//! image without a bundle the release carrying this build would commit
//! (its trial fetches nothing) and every update after it fail: stranded.
//! `[system] ca_bundles` moves the bundle paths, as the other `[system]`
//! paths, so a test can stand for a host with none.

use crate::common::host::{image, text, HostOptions, TestHost};
use crate::common::hostile_server::{files_of, not_found, serve, Server};
use crate::common::tls;
use std::path::{Path, PathBuf};

fn var(h: &TestHost, k: &str) -> String {
    h.grub_vars().get(k).cloned().unwrap_or_default()
}

/// `h`'s config with `url` as its update source and `bundles` as the
/// places its CA bundle may be.
fn point_at(h: &TestHost, url: &str, bundles: &[&Path]) {
    let list: Vec<String> = bundles
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg
        .replace("[update]\n", &format!("[update]\nurl = \"{url}\"\n"))
        .replace(
            "[system]\n",
            &format!("[system]\nca_bundles = [{}]\n", list.join(", ")),
        );
    std::fs::write(&h.config, cfg).expect("config");
}

/// `h`'s config with `mirror` as its site cache (README "Sites").
fn behind(h: &TestHost, mirror: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replacen(
        "[update]\n",
        &format!("[update]\nmirror = \"{mirror}\"\n"),
        1,
    );
    std::fs::write(&h.config, cfg).expect("config");
}

/// `h`'s config with `ca_file` as its `[update] ca_file`.
fn trusting(h: &TestHost, ca_file: &Path) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replacen(
        "[update]\n",
        &format!("[update]\nca_file = \"{}\"\n", ca_file.display()),
        1,
    );
    std::fs::write(&h.config, cfg).expect("config");
}

/// `check` fails with kind `tls` and an error holding `cause`, before any
/// handshake; returns the line after the URL (what a trial says too).
fn check_fails_before_the_handshake(h: &TestHost, cause: &str) -> String {
    let out = h.abupdate(&["--json", "check"]);
    assert!(!out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
    assert_eq!(json["kind"], "tls", "{}", text(&out));
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.contains(cause), "{}", text(&out));
    assert!(!error.contains("UnknownIssuer"), "{}", text(&out));
    let line = error.split_once("TLS: ").map(|(_, l)| l).unwrap_or(error);
    assert!(
        line.ends_with("this host could not fetch its next update over https"),
        "{}",
        text(&out)
    );
    line.to_string()
}

/// `update` installs 2.0 into B and its trial commits it.
fn updates_and_commits(h: &mut TestHost) {
    let out = h.abupdate(&["update"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "B");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert!(!text(&out).contains("trust-roots"), "{}", text(&out));
    assert_eq!(h.state()["slots"]["B"]["status"], "good");
}

/// The release at `m`, installed by other means (an older build with
/// built-in roots), fails its trial saying `line`: the host returns to A.
fn trial_rolls_back(h: &mut TestHost, m: &Path, line: &str) {
    installed_for_its_trial(h, m);
    let _ = trial_fails(h, line);
}

/// The release at `m` is installed into B and B booted for its trial.
fn installed_for_its_trial(h: &mut TestHost, m: &Path) {
    let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("utf8 path")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.boot(), "B");
}

/// 2.0's trial in B fails saying `line`: the host returns to A. Returns
/// what `health` said.
fn trial_fails(h: &mut TestHost, line: &str) -> String {
    let out = h.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(line), "{}", text(&out));
    assert_eq!(var(h, "ORDER"), "A B");
    assert_eq!(h.state()["failed"][0]["version"], "2.0");
    assert_eq!(h.boot(), "A");
    text(&out)
}

/// A host with release 2.0 packed into a directory served over TLS by a
/// private CA; returns the host, the manifest, the CA's PEM and the server
/// (`None` without a usable openssl CLI).
fn host_and_server(name: &str) -> Option<(TestHost, PathBuf, PathBuf, tls::TlsServer)> {
    let h = TestHost::new(name, "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let served = m.parent().expect("release dir").to_path_buf();
    let Some(ca) = tls::make_pki(&served) else {
        eprintln!("SKIP: openssl CLI not usable; trust roots test not run");
        return None;
    };
    let server = tls::TlsServer::start(&served);
    Some((h, m, ca, server))
}

#[test]
fn a_trial_on_a_host_without_a_ca_bundle_rolls_back_naming_the_paths_looked_at() {
    let Some((mut h, m, _ca, server)) = host_and_server("roots-none") else {
        return;
    };
    let empty = h.dir.join("no-ssl");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let bundle = empty.join("ca-certificates.crt");
    point_at(&h, &server.url("/release.json"), &[&bundle]);

    // Outside a trial: the missing bundle by name, not rustls' UnknownIssuer.
    let line = format!(
        "no CA bundle at {} and no [update] ca_file: this host could not fetch its next update over https",
        bundle.display()
    );
    check_fails_before_the_handshake(&h, &line);

    trial_rolls_back(&mut h, &m, &line);
    assert!(h.abupdate(&["health"]).status.success());
}

#[test]
fn a_trial_on_a_host_whose_bundle_verifies_the_server_commits() {
    let Some((mut h, _m, ca, server)) = host_and_server("roots-bundle") else {
        return;
    };
    // The first path missing, an empty file second: the CA's bundle third
    // is the one used.
    let empty = h.dir.join("empty.crt");
    std::fs::write(&empty, "").expect("empty bundle");
    point_at(
        &h,
        &server.url("/release.json"),
        &[&h.dir.join("missing.crt"), &empty, &ca],
    );
    updates_and_commits(&mut h);
}

/// Attack 7, N7: behind an http site cache the origin is never asked, so an
/// https `url` needs no roots: the host fetched this release without TLS and
/// fetches the next one the same way. The gate judging the origin's scheme
/// rolled back a good release on every such host.
#[test]
fn a_trial_behind_an_http_mirror_commits_without_a_ca_bundle_though_the_url_is_https() {
    let mut h = TestHost::new("roots-http-mirror", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let files = files_of(m.parent().expect("release dir"));
    let mirror = Server::start(move |req, s| {
        match req
            .path
            .strip_prefix("/cache/rel")
            .and_then(|p| files.get(p))
        {
            Some(d) => serve(req, s, d),
            None => not_found(s),
        }
    });
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    point_at(&h, "https://updates.invalid/rel/release.json", &[&missing]);
    behind(&h, &format!("http://127.0.0.1:{}/cache/", mirror.port));
    updates_and_commits(&mut h);
}

/// The control: an https mirror serves every request, so a host without
/// roots behind it could not fetch its next update: the trial fails, even
/// with an http origin.
#[test]
fn a_trial_behind_an_https_mirror_without_a_ca_bundle_rolls_back() {
    let mut h = TestHost::new("roots-https-mirror", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    point_at(&h, "http://updates.invalid/rel/release.json", &[&missing]);
    behind(&h, "https://cache.invalid/");
    trial_rolls_back(&mut h, &m, "trust-roots: no CA bundle at");
}

/// Review (trust roots, item 1): a `[update] ca_file` that gives no
/// certificate was hidden from the trial's check (`.ok()?`), so the trial
/// committed a host that could then never fetch. Missing or holding no
/// certificate, it fails the trial with the line `check` says (kind `tls`),
/// naming the file and why; the bundle that would verify the server is
/// not tried instead (the operator named the file).
#[test]
fn a_trial_on_a_host_whose_ca_file_gives_no_certificate_rolls_back_naming_it() {
    for (name, contents, why) in [
        ("roots-ca-missing", None, "cannot be read ("),
        (
            "roots-ca-empty",
            Some("no certificate here\n"),
            "holds no certificate",
        ),
    ] {
        let Some((mut h, m, ca, server)) = host_and_server(name) else {
            return;
        };
        let ca_file = h.dir.join("private-ca.pem");
        if let Some(contents) = contents {
            std::fs::write(&ca_file, contents).expect("ca_file");
        }
        point_at(&h, &server.url("/release.json"), &[&ca]);
        installed_for_its_trial(&mut h, &m);
        // The release's config names a CA file its image lacks.
        trusting(&h, &ca_file);
        let cause = format!("[update] ca_file {} {why}", ca_file.display());
        let trial_line = format!("trust-roots: {cause}");
        let said = trial_fails(&mut h, &trial_line);
        // Outside the trial, `check` says the same line.
        let line = check_fails_before_the_handshake(&h, &cause);
        assert!(said.contains(&format!("trust-roots: {line}")), "{said}");
    }
}

/// `h` reports each outcome to `webhook` and takes its reboot lock from the
/// FleetLock server at `lock`.
fn reports_and_locks(h: &TestHost, webhook: &str, lock: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!(
            "{cfg}\n[report]\nwebhook = \"{webhook}\"\nwebhook_timeout = \"3s\"\n\
             webhook_attempts = 1\n\n[reboot]\nfleetlock = \"{lock}\"\ngroup = \"store-1\"\n"
        ),
    )
    .expect("config");
}

/// `update --now` of the release at `m` (a local path: the update servers
/// need no roots) on a host reporting to, and locking at, `server`, whose
/// bundle may be at `bundle` only: what it said.
fn update_reporting_and_locking_at(
    h: &TestHost,
    m: &Path,
    server: &tls::TlsServer,
    bundle: &Path,
) -> String {
    point_at(h, m.to_str().expect("utf8 path"), &[bundle]);
    reports_and_locks(h, &server.url("/report"), &server.url("/lock/"));
    let out = h.abupdate(&["update", "--now"]);
    // `s_server -WWW` takes no POST: the lock is not granted, no reboot.
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 0, "{}", text(&out));
    text(&out)
}

/// Review (trust roots, item 2): the webhook read the default bundle
/// paths, not `[system] ca_bundles`: a host whose bundle is elsewhere
/// could not verify its report server. The FleetLock client (the update
/// servers' transport) and the webhook both verify with the configured
/// bundle: their handshakes pass.
#[test]
fn the_webhook_and_the_fleetlock_server_are_verified_with_the_configured_ca_bundles() {
    let Some((h, m, ca, server)) = host_and_server("roots-clients") else {
        return;
    };
    let said = update_reporting_and_locking_at(&h, &m, &server, &ca);
    assert!(said.contains("cannot ask for the reboot lock"), "{said}");
    assert!(!said.contains("UnknownIssuer"), "{said}");
    assert!(!said.contains("TLS"), "{said}");
}

/// Without roots, an https webhook and an https FleetLock server fail
/// before any handshake with the line the update servers' requests say
/// (naming the bundle paths looked at), not rustls' `UnknownIssuer`.
#[test]
fn the_webhook_and_the_fleetlock_server_without_roots_fail_naming_the_paths_looked_at() {
    let Some((h, m, _ca, server)) = host_and_server("roots-clients-none") else {
        return;
    };
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    let said = update_reporting_and_locking_at(&h, &m, &server, &missing);
    let line = |what: &str| {
        format!(
            "TLS: no CA bundle at {} and no [update] ca_file: this host could not {what}",
            missing.display()
        )
    };
    assert!(said.contains("cannot ask for the reboot lock"), "{said}");
    assert!(
        said.contains(&format!(
            "{}: {}",
            server.url("/lock/v1/pre-reboot"),
            line("fetch its next update over https")
        )),
        "{said}"
    );
    // The webhook's line says what it could not do.
    assert!(
        said.contains(&format!(
            "report not delivered: {}: {}",
            server.url("/report"),
            line("deliver its report to the https webhook")
        )),
        "{said}"
    );
    assert!(!said.contains("UnknownIssuer"), "{said}");
}

/// `fleet --prometheus` (the operator's machine: `--prometheus-ca`, else
/// the default bundle paths) takes its roots from the same function: with
/// none, an https API is refused before any handshake naming the paths
/// and its own flag (not rustls' `UnknownIssuer` at the first query); a
/// bundle it finds verifies the API.
#[test]
fn fleet_prometheus_without_roots_is_refused_before_the_handshake_naming_the_paths() {
    use abupdate::fetch::trust_roots;
    use abupdate::fleet::prometheus::Client;
    let Some((h, _m, ca, server)) = host_and_server("roots-prometheus") else {
        return;
    };
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    let timeout = std::time::Duration::from_secs(5);
    let e = Client::new(
        &server.url(""),
        timeout,
        &trust_roots(None, std::slice::from_ref(&missing)),
    )
    .err()
    .expect("no roots");
    assert_eq!(
        e.to_string(),
        format!(
            "--prometheus {}: no CA bundle at {} and no --prometheus-ca: an https API cannot be verified",
            server.url(""),
            missing.display()
        )
    );
    // Plain http needs none.
    assert!(Client::new(
        "http://127.0.0.1:9/",
        timeout,
        &trust_roots(None, &[missing])
    )
    .is_ok());
    let verified =
        Client::new(&server.url(""), timeout, &trust_roots(None, &[ca])).expect("client");
    // `s_server -WWW` is no Prometheus: any answer but a TLS failure shows
    // the roots were used.
    if let Err(e) = verified.query("up", 0) {
        let e = e.to_string();
        assert!(!e.contains("UnknownIssuer") && !e.contains("TLS"), "{e}");
    }
}

/// The trial's gate judges `url`, `channel` and `signature_url`, not the
/// payload URLs inside a manifest. Outside a trial, a manifest fetched over
/// plain http that names an https payload on a host without roots fails
/// the download with the same `tls` line, before any handshake (not
/// rustls' `UnknownIssuer`): the booted slot and the boot order stay.
#[test]
fn an_https_payload_of_a_manifest_fetched_over_http_fails_without_roots_naming_the_paths() {
    let Some((mut h, m, _ca, server)) = host_and_server("roots-payload") else {
        return;
    };
    let payload = server.url("/");
    h.resign(&m, |v| {
        let name = v["images"]["rootfs"]["url"].as_str().map(str::to_owned);
        v["images"]["rootfs"]["url"] = format!("{payload}{}", name.expect("payload url")).into();
        None
    });
    let files = files_of(m.parent().expect("release dir"));
    let origin = Server::start(move |req, s| {
        match req.path.strip_prefix("/rel").and_then(|p| files.get(p)) {
            Some(d) => serve(req, s, d),
            None => not_found(s),
        }
    });
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    let url = format!("http://127.0.0.1:{}/rel/release.json", origin.port);
    point_at(&h, &url, &[&missing]);
    let line = format!(
        "no CA bundle at {} and no [update] ca_file: this host could not fetch its next update over https",
        missing.display()
    );
    // The manifest itself needs no roots.
    let out = h.abupdate(&["check"]);
    assert!(
        text(&out).contains("update available: 2.0"),
        "{}",
        text(&out)
    );
    let error = update_fails_before_the_handshake(&mut h);
    assert!(error.starts_with(&payload), "{error}");
    assert!(error.ends_with(&format!(": TLS: {line}")), "{error}");
}

/// `update` fails with kind `tls`, the booted slot and the boot order as
/// they were: its error.
fn update_fails_before_the_handshake(h: &mut TestHost) -> String {
    let out = h.abupdate(&["--json", "update"]);
    assert!(!out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("update json");
    assert_eq!(json["kind"], "tls", "{}", text(&out));
    let error = json["error"].as_str().unwrap_or_default();
    assert!(!error.contains("UnknownIssuer"), "{}", text(&out));
    assert_eq!(h.boot(), "A");
    assert_eq!(var(h, "ORDER"), "A B");
    error.to_string()
}

/// `h`'s config with `url` as its one `[health] http` check.
fn checking(h: &TestHost, url: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replacen("[health]\n", &format!("[health]\nhttp = [\"{url}\"]\n"), 1);
    std::fs::write(&h.config, cfg).expect("config");
}

/// Review (trust roots, follow-up): an https `[health] http` check read
/// the default bundle paths, not `[system] ca_bundles`, so a host whose
/// bundle is elsewhere failed every trial at its own check server
/// (`UnknownIssuer`) and rolled back every release. It verifies with the
/// configured bundle: the trial commits.
#[test]
fn an_https_health_check_is_verified_with_the_configured_ca_bundles() {
    let Some((mut h, m, ca, server)) = host_and_server("roots-health") else {
        return;
    };
    point_at(&h, m.to_str().expect("utf8 path"), &[&ca]);
    checking(&h, &server.url("/release.json"));
    installed_for_its_trial(&mut h, &m);
    let out = h.abupdate(&["health"]);
    assert!(text(&out).contains("committed 2.0"), "{}", text(&out));
    assert_eq!(h.state()["slots"]["B"]["status"], "good");
}

/// Without roots, an https health check fails before any handshake with a
/// line naming the paths looked at and what could not be verified (not
/// rustls' `UnknownIssuer`): the trial rolls back saying so.
#[test]
fn an_https_health_check_without_roots_fails_naming_the_paths_looked_at() {
    let Some((mut h, m, _ca, server)) = host_and_server("roots-health-none") else {
        return;
    };
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    point_at(&h, m.to_str().expect("utf8 path"), &[&missing]);
    checking(&h, &server.url("/release.json"));
    installed_for_its_trial(&mut h, &m);
    let said = trial_fails(
        &mut h,
        &format!(
            "TLS: no CA bundle at {} and no [update] ca_file: this host could not verify its \
             https health check",
            missing.display()
        ),
    );
    assert!(!said.contains("UnknownIssuer"), "{said}");
}

/// Review (trust roots, follow-up): the trial's gate judged the update
/// servers only, so a host with an https `[reboot] fleetlock` server and
/// no roots committed and then could never take the site's reboot lock
/// (every planned reboot waited for ever). The FleetLock URL is judged too,
/// as written: the mirror is for releases, the lock is asked at the server
/// itself (so an http site cache does not excuse it). The trial rolls back
/// saying what could not be reached.
#[test]
fn a_trial_with_an_https_fleetlock_server_and_no_roots_rolls_back_naming_it() {
    let mut h = TestHost::new("roots-fleetlock", "1.0", HostOptions::default());
    let m = h.pack("r2", "2.0", &image("2.0", 1 << 20), &[]);
    let missing = h.dir.join("no-ssl").join("ca-certificates.crt");
    // The update servers need no roots: a local manifest, an http mirror.
    point_at(&h, m.to_str().expect("utf8 path"), &[&missing]);
    behind(&h, "http://127.0.0.1:9/cache/");
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!("{cfg}\n[reboot]\nfleetlock = \"https://lock.invalid/\"\ngroup = \"store-1\"\n"),
    )
    .expect("config");
    installed_for_its_trial(&mut h, &m);
    let said = trial_fails(
        &mut h,
        &format!(
            "trust-roots: no CA bundle at {} and no [update] ca_file: this host could not take \
             the site's reboot lock from the https FleetLock server https://lock.invalid/",
            missing.display()
        ),
    );
    assert!(!said.contains("fetch its next update"), "{said}");
}
