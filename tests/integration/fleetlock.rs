//! Site-wide reboot coordination with FleetLock through the real binary.
//!
//! None of the FleetLock servers (airlock on etcd, fleetlock on
//! Kubernetes) installs on this machine, so the server here is a small one
//! written from the protocol text (coreos/zincati
//! `docs/development/fleetlock/protocol.md`): `POST /v1/pre-reboot` and
//! `/v1/steady-state` with `fleet-lock-protocol: true` and a
//! `{"client_params": {"id", "group"}}` body; a recursive, owned semaphore
//! of one slot per group; 200 on success, else an error status with a
//! `{"kind", "value"}` body.
//!
//! Three hosts: two of site `store-1`, one of site `store-2`. The two of one
//! site never reboot together: the second one's update stages the release
//! and waits (exit 1, kind `fleetlock`, backoff) until the first one's
//! verdict gives the lock back; the host of the other site reboots at once.
//! A lock taken for a trial is held across the rollback's reboot and given
//! back by the healthy boot after it; a release the server missed is given
//! back by the next run. A release withdrawn while its staged trial waits
//! for the lock (the timer backing off) is disarmed at the next tick. A
//! release withdrawn during its probation owes a reboot into the old slot:
//! each tick asks for the lock until it is granted, whatever the backoff.

use crate::common::channel::{channel, channel_host, channel_path};
use crate::common::host::{image, text, HostOptions, TestHost};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The protocol's server: group → the id holding its one slot.
#[derive(Default)]
struct Semaphores {
    holders: BTreeMap<String, String>,
    /// (op, id, group, status) of every request, in order.
    log: Vec<(String, String, String, u16)>,
    /// `steady-state` requests still to be answered 503 (a server restart).
    failing_unlocks: usize,
}

struct LockServer {
    port: u16,
    state: Arc<Mutex<Semaphores>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl LockServer {
    fn start(port: u16) -> LockServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state: Arc<Mutex<Semaphores>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        handle(stream, &state2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        LockServer {
            port,
            state,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/base/", self.port)
    }

    fn holder(&self, group: &str) -> Option<String> {
        self.state.lock().unwrap().holders.get(group).cloned()
    }

    fn log(&self) -> Vec<(String, String, String, u16)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Another host (`id`) of `group` takes its lock.
    fn hold(&self, group: &str, id: &str) {
        let mut st = self.state.lock().unwrap();
        st.holders.insert(group.into(), id.into());
    }

    /// The lock requests (`pre-reboot`) of `group` so far.
    fn lock_requests(&self, group: &str) -> usize {
        self.log()
            .iter()
            .filter(|(op, _, g, _)| op == "lock" && g == group)
            .count()
    }
}

impl Drop for LockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn respond(mut s: TcpStream, status: u16, body: &str) {
    let reason = if status == 200 { "OK" } else { "Error" };
    let _ = write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// One request, answered as the protocol text says.
fn handle(stream: TcpStream, state: &Mutex<Semaphores>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let (mut length, mut protocol) = (0usize, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "fleet-lock-protocol" => protocol = v.trim() == "true",
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 16)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "POST" || !protocol {
        return respond(
            stream,
            400,
            r#"{"kind":"bad_request","value":"not a FleetLock request"}"#,
        );
    }
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = parsed["client_params"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let group = parsed["client_params"]["group"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if id.is_empty() || group.is_empty() {
        return respond(
            stream,
            400,
            r#"{"kind":"bad_request","value":"missing client_params"}"#,
        );
    }
    let mut st = state.lock().unwrap();
    let (op, status, answer) = match path {
        "/base/v1/pre-reboot" => match st.holders.get(&group) {
            Some(holder) if holder != &id => (
                "lock",
                409,
                r#"{"kind":"failed_lock_semaphore_full","value":"semaphore currently full"}"#,
            ),
            _ => {
                st.holders.insert(group.clone(), id.clone());
                ("lock", 200, "")
            }
        },
        "/base/v1/steady-state" if st.failing_unlocks > 0 => {
            st.failing_unlocks -= 1;
            (
                "unlock",
                503,
                r#"{"kind":"unavailable","value":"restarting"}"#,
            )
        }
        "/base/v1/steady-state" => {
            if st.holders.get(&group) == Some(&id) {
                st.holders.remove(&group);
            }
            ("unlock", 200, "")
        }
        _ => (
            "other",
            404,
            r#"{"kind":"not_found","value":"no such endpoint"}"#,
        ),
    };
    st.log.push((op.into(), id, group, status));
    drop(st);
    respond(stream, status, answer);
}

/// A host of `group`, with its own machine id (its FleetLock id derives
/// from it), whose timer finds release 2.0.
fn host(name: &str, machine: u8, server: &LockServer, group: &str) -> TestHost {
    host_at(name, machine, &server.url(), group)
}

/// [`host`] with the lock server at `lock_url`.
fn host_at(name: &str, machine: u8, lock_url: &str, group: &str) -> TestHost {
    let h = TestHost::new(&format!("fleetlock-{name}"), "1.0", HostOptions::default());
    std::fs::write(
        h.dir.join("machine-id"),
        format!("{}\n", format!("{machine:02x}").repeat(16)),
    )
    .expect("machine-id");
    let m = h.pack("r2", "2.0", &image("2.0", 64 << 10), &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replacen(
        "[update]\n",
        &format!("[update]\nurl = \"{}\"\n", m.display()),
        1,
    );
    std::fs::write(&h.config, cfg).expect("config");
    join_site(&h, lock_url, group);
    h
}

/// Make `h` a host of site `group`, whose reboots take the lock at
/// `lock_url`.
fn join_site(h: &TestHost, lock_url: &str, group: &str) {
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!("{cfg}\n[reboot]\nfleetlock = \"{lock_url}\"\ngroup = \"{group}\"\n"),
    )
    .expect("config");
}

/// A host of site `group` on 1.0 with its own machine id, following a
/// release channel that lists 2.0 (`[health]` lines `extra`).
fn channel_site_host(
    name: &str,
    machine: u8,
    server: &LockServer,
    group: &str,
    extra: &str,
) -> TestHost {
    let h = channel_host(
        &format!("fleetlock-{name}"),
        "1.0",
        HostOptions {
            extra_config: extra.into(),
            ..Default::default()
        },
    );
    std::fs::write(
        h.dir.join("machine-id"),
        format!("{}\n", format!("{machine:02x}").repeat(16)),
    )
    .expect("machine-id");
    let r2 = h.pack("r2", "2.0", &image("2.0", 64 << 10), &[]);
    channel(&h, "add", &[r2.to_str().expect("utf8")]);
    join_site(&h, &server.url(), group);
    h
}

/// The FleetLock id the server sees for a host: what it sent last.
fn id_of(server: &LockServer, group: &str, before: usize) -> String {
    server.log()[before..]
        .iter()
        .find(|(_, _, g, _)| g == group)
        .map(|(_, id, _, _)| id.clone())
        .expect("a request of the group")
}

fn update(h: &TestHost, now: bool) -> std::process::Output {
    let mut args = vec!["--json", "update"];
    if now {
        args.push("--now");
    }
    h.abupdate(&args)
}

#[test]
fn two_hosts_of_one_site_never_reboot_together_hosts_of_two_sites_do() {
    let server = LockServer::start(0);
    let mut h1 = host("s1-a", 1, &server, "store-1");
    let mut h2 = host("s1-b", 2, &server, "store-1");
    let mut h3 = host("s2-a", 3, &server, "store-2");

    // h1 takes store-1's lock and reboots into its trial.
    let n = server.log().len();
    let out = update(&h1, true);
    assert!(out.status.success(), "h1: {}", text(&out));
    assert_eq!(h1.reboots(), 1);
    let id1 = id_of(&server, "store-1", n);
    assert_eq!(server.holder("store-1").as_deref(), Some(id1.as_str()));
    let status: serde_json::Value =
        serde_json::from_slice(&h1.abupdate(&["--json", "status"]).stdout).expect("status");
    assert_eq!(status["reboot_lock"], "store-1", "{status}");

    // h2, same site: staged, no reboot, the timer backs off.
    let n = server.log().len();
    let out = update(&h2, true);
    assert_eq!(out.status.code(), Some(1), "h2: {}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "fleetlock", "{json}");
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(
        line.contains("/base/v1/pre-reboot: reboot lock not granted (HTTP 409 failed_lock_semaphore_full: semaphore currently full)"),
        "{line}"
    );
    assert_eq!(h2.reboots(), 0, "h2 rebooted while h1 held the site's lock");
    assert_eq!(h2.state()["transaction"]["phase"], "staged");
    assert!(
        h2.state()["fleetlock"].is_null(),
        "a refused lock is not held"
    );
    assert!(h2.state()["metrics"]["retry_after"].is_i64(), "no backoff");
    let id2 = id_of(&server, "store-1", n);
    assert_ne!(id1, id2);
    assert_eq!(server.holder("store-1").as_deref(), Some(id1.as_str()));

    // h3, another site: reboots at once.
    let out = update(&h3, true);
    assert!(out.status.success(), "h3: {}", text(&out));
    assert_eq!(h3.reboots(), 1);
    assert!(server.holder("store-2").is_some());

    // The timer's next tick for h2 backs off; a manual run is refused again.
    let out = update(&h2, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backing_off"));
    let out = update(&h2, true);
    assert_eq!(out.status.code(), Some(1), "h2: {}", text(&out));
    assert_eq!(h2.reboots(), 0);

    // h1's trial passes: committed, and the lock goes back to the site.
    assert_eq!(h1.boot(), "B");
    let out = h1.abupdate(&["health"]);
    assert!(out.status.success(), "h1 health: {}", text(&out));
    assert!(text(&out).contains("committed"), "{}", text(&out));
    assert_eq!(server.holder("store-1"), None);
    assert!(h1.state()["fleetlock"].is_null());

    // Now h2 reboots; its trial fails and rolls back: the lock is held
    // through the rollback's reboot, and given back by the healthy boot.
    h2.add_health_check("fails", "echo broken >&2; exit 1");
    let out = update(&h2, true);
    assert!(out.status.success(), "h2: {}", text(&out));
    assert_eq!(h2.reboots(), 1);
    assert_eq!(server.holder("store-1").as_deref(), Some(id2.as_str()));
    assert_eq!(h2.boot(), "B");
    let out = h2.abupdate(&["health"]);
    assert_eq!(out.status.code(), Some(1), "h2 health: {}", text(&out));
    assert_eq!(h2.reboots(), 2, "no rollback reboot");
    assert_eq!(
        server.holder("store-1").as_deref(),
        Some(id2.as_str()),
        "released before the rollback's reboot"
    );
    std::fs::remove_file(h2.health_dir.join("fails")).expect("rm check");
    assert_eq!(h2.boot(), "A");
    let out = h2.abupdate(&["health"]);
    assert!(
        out.status.success(),
        "h2 health after rollback: {}",
        text(&out)
    );
    assert_eq!(server.holder("store-1"), None);

    // The order on the server: never a grant of store-1 while another id
    // held it.
    let mut holder: Option<String> = None;
    for (op, id, group, status) in server.log() {
        if group != "store-1" {
            continue;
        }
        match (op.as_str(), status) {
            ("lock", 200) => {
                assert!(holder.is_none() || holder.as_deref() == Some(id.as_str()));
                holder = Some(id);
            }
            ("unlock", 200) if holder.as_deref() == Some(id.as_str()) => holder = None,
            _ => {}
        }
    }

    // h3's trial commits while the server is down: the lock stays recorded
    // and the next run gives it back.
    let port = server.port;
    drop(server);
    assert_eq!(h3.boot(), "B");
    let out = h3.abupdate(&["health"]);
    assert!(out.status.success(), "h3 health: {}", text(&out));
    assert_eq!(h3.state()["fleetlock"], "store-2");
    let server = LockServer::start(port);
    let out = update(&h3, true);
    assert!(out.status.success(), "h3 update: {}", text(&out));
    assert!(h3.state()["fleetlock"].is_null(), "{}", text(&out));
    assert!(
        server
            .log()
            .iter()
            .any(|(op, _, g, s)| op == "unlock" && g == "store-2" && *s == 200),
        "{:?}",
        server.log()
    );
}

#[test]
fn no_reboot_without_the_lock_when_the_server_cannot_be_reached() {
    // A port with nothing behind it.
    let server = LockServer::start(0);
    let h = host("down", 4, &server, "store-9");
    drop(server);
    let out = update(&h, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot ask for the reboot lock"),
        "{stderr}"
    );
    assert_eq!(h.reboots(), 0, "rebooted without the lock");
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    // The lock may have been granted without us hearing: it counts as held
    // until a release gets through.
    assert_eq!(h.state()["fleetlock"], "store-9");
}

/// A lock server's refusal carrying ESC, BEL, a bidi override (U+202E)
/// and a newline in its `kind` reaches stderr and the `--json` error only
/// quoted (`\xNN`): nothing a terminal acts on, nothing reordered.
#[test]
fn a_refusals_text_reaches_stderr_and_json_escaped() {
    use crate::common::hostile_server::{head, write_all_capped, Server};
    let server = Server::start(|_, stream| {
        let body = br#"{"kind":"x\u001b]0;pwned\u0007\u202e\n2nd line","value":"v\u001b[2J"}"#;
        head(
            stream,
            "409 Conflict",
            &format!("Content-Length: {}\r\n", body.len()),
        );
        write_all_capped(stream, body);
    });
    let h = host_at("hostile-refusal", 9, &server.url("/"), "site1");
    let out = update(&h, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for (what, bytes) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
        for raw in ["\u{1b}", "\u{7}", "\u{202e}"] {
            assert!(
                !String::from_utf8_lossy(bytes).contains(raw),
                "{what} holds {raw:?} raw: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "fleetlock", "{json}");
    let shown = r"(HTTP 409 x\x1b]0;pwned\x07\xe2\x80\xae\x0a2nd line: v\x1b[2J)";
    assert!(
        json["error"].as_str().is_some_and(|m| m.ends_with(shown)),
        "{json}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(shown),
        "{}",
        text(&out)
    );
}

#[test]
fn a_withdrawn_staged_release_is_disarmed_while_the_timer_backs_off() {
    let server = LockServer::start(0);
    server.hold("store-5", "another-host");
    let h = channel_site_host("disarm-backoff", 5, &server, "store-5", "");
    // Staged, but another host of the site reboots: the timer backs off.
    let out = update(&h, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    assert!(h.state()["metrics"]["retry_after"].is_i64(), "no backoff");
    // Still offered: the next tick waits, the trial stays armed, and the
    // backoff delays the lock request.
    let (env, requests) = (h.grub_vars(), server.lock_requests("store-5"));
    let out = update(&h, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("backing_off"), "{}", text(&out));
    assert_eq!(h.state()["transaction"]["phase"], "staged");
    assert_eq!(h.grub_vars(), env, "the staged trial stays armed");
    assert_eq!(
        server.lock_requests("store-5"),
        requests,
        "asked in a backoff"
    );
    // The operator withdraws 2.0: the next tick, still backing off,
    // disarms it before it waits (a reboot for any reason would boot it).
    channel(&h, "withdraw", &["2.0"]);
    let out = update(&h, false);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "disarmed", "{v}");
    let s = h.state();
    assert!(s["transaction"].is_null(), "{s}");
    assert_eq!(s["slots"]["B"]["status"], "bad", "{s}");
    let env = h.grub_vars();
    assert_eq!(env.get("ORDER").map(String::as_str), Some("A B"), "{env:?}");
    assert_eq!(env.get("B_OK").map(String::as_str), Some("0"), "{env:?}");
    assert_eq!(h.reboots(), 0);
    assert_eq!(
        server.lock_requests("store-5"),
        requests,
        "a disarm asks for no lock"
    );
    // A disarm is a success: the backoff it waited out is over.
    assert!(s["metrics"]["retry_after"].is_null(), "{s}");
}

/// A host of site `group` with 2.0 committed from the channel and on
/// probation (its reboot into the trial took the lock, its commit gave it
/// back).
fn on_probation_in_site(name: &str, machine: u8, server: &LockServer, group: &str) -> TestHost {
    on_probation_staged_as(name, machine, server, group, |_| {})
}

/// [`on_probation_in_site`], with the staged state edited by `staged_as`
/// before the trial's commit (as an older build would have written it).
fn on_probation_staged_as(
    name: &str,
    machine: u8,
    server: &LockServer,
    group: &str,
    staged_as: impl FnOnce(&mut serde_json::Value),
) -> TestHost {
    let mut h = channel_site_host(name, machine, server, group, "probation = \"24h\"\n");
    let out = update(&h, true);
    assert!(out.status.success(), "update to 2.0: {}", text(&out));
    h.edit_state(staged_as);
    h.commit_trial_on_probation("2.0");
    assert_eq!(server.holder(group), None, "the commit gives the lock back");
    h
}

#[test]
fn a_withdrawal_switches_the_boot_order_at_once_and_reboots_only_with_the_site_lock() {
    let server = LockServer::start(0);
    let mut h1 = on_probation_in_site("withdraw-1", 7, &server, "store-7");
    let h2 = on_probation_in_site("withdraw-2", 8, &server, "store-7");
    channel(&h1, "withdraw", &["2.0"]);
    channel(&h2, "withdraw", &["2.0"]);
    server.hold("store-7", "another-host");

    // Both hosts of the site see the withdrawal at the same tick: each
    // rolls back (the old slot boots next, at any reboot) and waits.
    for h in [&h1, &h2] {
        let (reboots, requests) = (h.reboots(), server.lock_requests("store-7"));
        let out = update(h, false);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["kind"], "fleetlock", "{v}");
        assert!(
            text(&out).contains("rolling back 2.0 in slot B late"),
            "{}",
            text(&out)
        );
        assert_eq!(h.reboots(), reboots, "rebooted without the site's lock");
        assert_eq!(server.lock_requests("store-7"), requests + 1);
        let env = h.grub_vars();
        assert_eq!(env.get("ORDER").map(String::as_str), Some("A B"), "{env:?}");
        assert_eq!(env.get("B_OK").map(String::as_str), Some("0"), "{env:?}");
        let s = h.state();
        assert_eq!(s["planned_reboot"]["slot"], "A", "{s}");
        assert_eq!(s["slots"]["B"]["status"], "bad", "{s}");
        assert_eq!(s["failed"][0]["version"], "2.0", "{s}");
        assert!(s["metrics"]["retry_after"].is_i64(), "no backoff: {s}");
    }

    // `health` run again on the withdrawn slot (a unit restart, by hand)
    // finishes the rollback under the same rule: no lock, no reboot.
    let out = h2.abupdate(&["--json", "health"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("fleetlock"), "{}", text(&out));
    assert_eq!(h2.reboots(), 1, "health rebooted without the site's lock");

    // The timer's next tick, inside the refusal's backoff, asks again (the
    // owed reboot is no new attempt; one request a tick): refused again,
    // no reboot.
    let requests = server.lock_requests("store-7");
    let out = update(&h1, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("backing_off"), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "fleetlock", "{v}");
    assert_eq!(server.lock_requests("store-7"), requests + 1);
    assert_eq!(h1.reboots(), 1, "rebooted without the site's lock");

    // The lock comes free: h1 takes it and reboots; h2 still waits.
    server.state.lock().unwrap().holders.clear();
    let out = update(&h1, true);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back_late", "{v}");
    assert_eq!(h1.reboots(), 2, "the trial's reboot, then the rollback's");
    let id1 = server.holder("store-7").expect("h1 holds the lock");
    let out = update(&h2, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(h2.reboots(), 1, "two hosts of one site rebooted together");

    // h1 comes back on the old slot, healthy: the lock goes back, and h2
    // reboots in its turn.
    assert_eq!(h1.boot(), "A");
    let out = h1.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(h1.state()["planned_reboot"].is_null(), "{}", h1.state());
    assert_ne!(server.holder("store-7"), Some(id1));
    let out = update(&h2, true);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h2.reboots(), 2);
}

#[test]
fn a_late_rollback_of_a_failing_host_reboots_without_asking_for_the_lock() {
    let server = LockServer::start(0);
    let mut h = on_probation_in_site("failing", 9, &server, "store-9");
    server.hold("store-9", "another-host");
    let requests = server.lock_requests("store-9");
    // Three unclean restarts (no clean-shutdown mark): a crashing host.
    for _ in 0..3 {
        assert_eq!(h.boot(), "B");
        let _ = h.abupdate(&["health"]);
    }
    assert_eq!(h.reboots(), 2, "the trial's reboot, then the rollback's");
    assert_eq!(
        server.lock_requests("store-9"),
        requests,
        "asked for a lock"
    );
    assert!(h.state()["planned_reboot"].is_null(), "{}", h.state());
    assert_eq!(h.boot(), "A");
}

/// Issue: an owed late-rollback reboot waited out the backoff of an
/// earlier, unrelated failure (up to `backoff_max`, 6 h), and the host ran
/// the release its channel withdrew meanwhile. It is a safety step: the
/// first tick inside the window asks for the lock and reboots, backoff or
/// not.
#[test]
fn an_owed_late_rollback_reboots_in_the_window_without_waiting_out_an_earlier_backoff() {
    let server = LockServer::start(0);
    let mut h = on_probation_in_site("owed-backoff", 10, &server, "store-10");
    h.set_reboot_window(false);

    // An earlier failure: a tick cannot read the channel (counted; the
    // timer backs off).
    let p = channel_path(&h);
    std::fs::rename(&p, p.with_extension("away")).expect("hide");
    let out = update(&h, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    std::fs::rename(p.with_extension("away"), &p).expect("unhide");
    let backoff = h.state()["metrics"]["retry_after"].as_i64();
    assert!(backoff.is_some(), "no backoff: {}", h.state());

    // 2.0 is withdrawn outside the window: the watch (a safety check,
    // backoff or not) switches the boot order; the reboot is owed.
    channel(&h, "withdraw", &["2.0"]);
    let requests = server.lock_requests("store-10");
    let out = update(&h, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("waits for the maintenance window"),
        "{}",
        text(&out)
    );
    assert_eq!(h.reboots(), 1, "only the trial's reboot");
    assert_eq!(
        server.lock_requests("store-10"),
        requests,
        "outside the window"
    );
    let s = h.state();
    assert_eq!(s["planned_reboot"]["slot"], "A", "{s}");
    assert_eq!(s["metrics"]["retry_after"].as_i64(), backoff, "{s}");

    // The window opens while the earlier backoff still runs: this tick
    // asks for the site's lock and reboots into the old slot.
    h.set_reboot_window(true);
    let out = update(&h, false);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back_late", "{v}");
    assert_eq!(server.lock_requests("store-10"), requests + 1);
    assert!(
        server.holder("store-10").is_some(),
        "rebooted without the lock"
    );
    assert_eq!(h.reboots(), 2, "the trial's reboot, then the rollback's");
    assert_eq!(h.boot(), "A");
    let out = h.abupdate(&["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(h.state()["planned_reboot"].is_null(), "{}", h.state());
    assert_eq!(
        server.holder("store-10"),
        None,
        "the healthy boot gives it back"
    );
}

/// Refused requests for a late rollback's owed reboot each count a
/// failure and double the backoff; `status` (text and `--json`) says the
/// reboot is asked for at every tick whatever that backoff, and that the
/// backoff delays only the installs after it. Before, it showed only
/// "backing off … until …", as if the growing backoff delayed the reboot.
#[test]
fn status_after_refused_locks_says_the_owed_reboot_is_asked_for_at_every_tick_not_after_the_backoff(
) {
    let server = LockServer::start(0);
    let h = on_probation_in_site("owed-status", 11, &server, "store-11");
    channel(&h, "withdraw", &["2.0"]);
    server.hold("store-11", "another-host");
    let mut backoffs = Vec::new();
    for _ in 0..2 {
        let out = update(&h, false);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        backoffs.push(h.state()["metrics"]["retry_after"].as_i64());
    }
    assert!(
        backoffs[0].is_some() && backoffs[1] > backoffs[0],
        "{backoffs:?}"
    );

    let out = h.abupdate(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["backoff_until"].is_string(), "{v}");
    assert_eq!(v["backoff_delays"], "attempts_after_the_owed_reboot", "{v}");
    assert_eq!(
        v["reboot_owed"],
        serde_json::json!({
            "slot": "A",
            "version": "2.0",
            "asked": "every_tick",
            "lock_group": "store-11",
        }),
        "{v}"
    );
    let out = h.abupdate(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("reboot: owed into slot A (release 2.0 rolled back late); every timer tick asks for the site's lock (group store-11), then the reboot, whatever the backoff"),
        "{shown}"
    );
    assert!(
        shown.contains("it delays the installs after the owed reboot, not the reboot"),
        "{shown}"
    );

    // What status says is what the timer does: its next tick, inside the
    // backoff, asks for the lock again.
    let requests = server.lock_requests("store-11");
    let out = update(&h, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(server.lock_requests("store-11"), requests + 1);
}

/// Attack 6, F6: the old slot's release was committed by a build before
/// the slot record's `agent` (213989b knows no FleetLock): after the
/// reboot into it nothing would give the site's lock back, and every
/// other host of the site would be refused its reboots for good. The
/// planned late rollback still waits for the site's turn, then gives the
/// lock back right before rebooting. (A slot this build committed or
/// re-blessed keeps it across the reboot: the withdrawal test above.)
#[test]
fn a_late_rollback_into_a_slot_an_older_build_committed_gives_the_lock_back_before_rebooting() {
    let server = LockServer::start(0);
    let h = on_probation_in_site("old-fallback", 11, &server, "store-11");
    assert_eq!(h.state()["slots"]["A"]["agent"], 1, "{}", h.state());
    // A's record as the older build wrote it.
    h.edit_state(|s| {
        s["slots"]["A"]
            .as_object_mut()
            .expect("A's record")
            .remove("agent");
    });
    channel(&h, "withdraw", &["2.0"]);
    let requests = server.lock_requests("store-11");
    let out = update(&h, true);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back_late", "{v}");
    assert_eq!(h.reboots(), 2, "the trial's reboot, then the rollback's");
    assert_eq!(
        server.lock_requests("store-11"),
        requests + 1,
        "the rollback's reboot waits for the site's turn"
    );
    assert_eq!(server.holder("store-11"), None, "held across the reboot");
    assert!(
        text(&out).contains("slot A's release was committed by an abupdate that does not give back the site's reboot lock"),
        "{}",
        text(&out)
    );
    assert!(h.state()["fleetlock"].is_null(), "{}", h.state());
}

/// The staged state as 1cf963b wrote it: its `installed` outcome of 2.0 is
/// kept, A's record has no `agent` (1cf963b writes none, yet gives the
/// lock back itself).
fn staged_by_1cf963b(s: &mut serde_json::Value) {
    s["slots"]["A"]
        .as_object_mut()
        .expect("A's record")
        .remove("agent");
    let installed = s["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .any(|o| o["release"] == "2.0" && o["outcome"] == "installed");
    assert!(installed, "{s}");
}

/// The staged state as 213989b wrote it: no `outcomes`, no `agent`.
fn staged_by_213989b(s: &mut serde_json::Value) {
    staged_by_1cf963b(s);
    s.as_object_mut().expect("state").remove("outcomes");
}

/// Attack 7, N9: 1cf963b knows FleetLock and gives the lock back on the
/// healthy boot of its slot, but its records lack `agent`. The commit
/// recognises its install by the state as read and marks slot A: a
/// withdrawal's late rollback keeps the lock across the reboot, so the
/// site's other hosts wait their turn.
#[test]
fn a_late_rollback_into_a_slot_1cf963b_installed_from_keeps_the_lock_across_the_reboot() {
    let server = LockServer::start(0);
    let h = on_probation_staged_as("from-35", 12, &server, "store-12", staged_by_1cf963b);
    assert_eq!(h.state()["slots"]["A"]["agent"], 1, "{}", h.state());
    channel(&h, "withdraw", &["2.0"]);
    let out = update(&h, true);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back_late", "{v}");
    assert_eq!(h.reboots(), 2, "the trial's reboot, then the rollback's");
    assert!(
        server.holder("store-12").is_some(),
        "given back before the reboot"
    );
    assert!(
        !text(&out).contains("does not give back the site's reboot lock"),
        "{}",
        text(&out)
    );
    assert_eq!(h.state()["fleetlock"], "store-12", "{}", h.state());
}

/// 213989b's staged state has no `outcomes`: A stays unmarked and the
/// lock goes back before the reboot into it.
#[test]
fn a_late_rollback_into_a_slot_213989b_installed_from_gives_the_lock_back_before_rebooting() {
    let server = LockServer::start(0);
    let h = on_probation_staged_as("from-old", 13, &server, "store-13", staged_by_213989b);
    assert!(h.state()["slots"]["A"]["agent"].is_null(), "{}", h.state());
    channel(&h, "withdraw", &["2.0"]);
    let out = update(&h, true);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.reboots(), 2, "the trial's reboot, then the rollback's");
    assert_eq!(server.holder("store-13"), None, "held across the reboot");
}

/// Attack 7, N10: the give-back before the reboot into a slot that never
/// gives the lock back fails (a 503): no reboot, which would hold the
/// site's lock for good; the run fails `fleetlock`, the reboot stays owed,
/// and the next tick gives the lock back, then reboots.
#[test]
fn a_failed_give_back_before_the_reboot_into_an_older_build_leaves_the_reboot_owed() {
    let server = LockServer::start(0);
    let h = on_probation_staged_as("give-back", 14, &server, "store-14", staged_by_213989b);
    channel(&h, "withdraw", &["2.0"]);
    server.state.lock().unwrap().failing_unlocks = 1;
    let out = update(&h, true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "fleetlock", "{v}");
    assert!(
        text(&out).contains("could not be given back before the reboot into slot A"),
        "{}",
        text(&out)
    );
    assert_eq!(h.reboots(), 1, "rebooted holding the site's lock");
    assert!(server.holder("store-14").is_some());
    let s = h.state();
    assert_eq!(s["planned_reboot"]["slot"], "A", "{s}");
    assert_eq!(s["fleetlock"], "store-14", "{s}");
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("A B"));

    let out = update(&h, false);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "rolled_back_late", "{v}");
    assert_eq!(h.reboots(), 2, "the owed reboot");
    assert_eq!(server.holder("store-14"), None, "held across the reboot");
    assert!(h.state()["fleetlock"].is_null(), "{}", h.state());
}
