//! The hostile-server set of `fetch_hostile.rs`, driven through a whole
//! `abupdate install` on a test host: endless body, body longer than
//! declared, shorter than declared, one byte a second, a wrong
//! `Content-Range` on resume, a redirect loop, a redirect to `file:`, 200
//! instead of 206 on resume, TLS with an unknown CA. Each ends with exit 1
//! and one error line naming the URL, in bounded time (read_timeout 2s; a
//! bound on a hang, not a performance claim) and bounded memory (peak RSS
//! of the process), with the booted slot's bytes, flags and the boot order
//! untouched and no reboot. A payload that went bad after bytes of it
//! reached the target leaves the target marked bad; one refused before
//! that (on its headers, a redirect, a stall before the first chunk, a 503)
//! leaves the target's flags and record as they were. Where the right
//! answer is to recover (a resume
//! answered with 200 or a range from elsewhere), the install succeeds with
//! exactly the signed bytes.

use crate::common::tls;

use crate::common::host::{image, text, HostOptions, TestHost, Untouched};
use crate::common::hostile_server::{
    answer_wrong_total, files_of, head, head_range, not_found, serve, serve_tagged, trickle,
    write_all_capped, Req, Server,
};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Big enough that a cut half-way leaves a real partial download.
const LEN: usize = 3 << 20;
/// A hang is cut by read_timeout = 2s; anything near this is a bug.
const TIME_BOUND: Duration = Duration::from_secs(30);
/// Peak RSS of one `abupdate install`: fixed pipeline buffers, whatever
/// the server does.
const RSS_BOUND_KIB: u64 = 160 * 1024;

/// A host booted from A whose other slot B holds a good older system (the
/// fallback a refused install must not cost). One try per request: each
/// attack's own answer is what is checked here (retries within the run are
/// `download_retries.rs`).
fn host(name: &str) -> TestHost {
    let h = TestHost::new(&format!("hostile-{name}"), "1.0", HostOptions::default());
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen(
            "read_timeout = \"5s\"",
            "read_timeout = \"2s\"\nretries = 0",
            1,
        ),
    )
    .expect("config");
    h.b_holds_older_system();
    h
}

/// An uncompressed release 2.0 (so byte offsets are payload offsets).
fn release(h: &TestHost) -> (PathBuf, BTreeMap<String, Arc<Vec<u8>>>) {
    let m = h.pack("r2", "2.0", &image("2.0", LEN), &["--no-compress"]);
    let files = files_of(m.parent().expect("dir"));
    (m, files)
}

const PAYLOAD: &str = "/rootfs-2.0.img";

/// Serve the release; the payload per `payload(req, stream, bytes)`.
fn server(
    files: BTreeMap<String, Arc<Vec<u8>>>,
    payload: impl Fn(&Req, &mut TcpStream, &[u8]) + Send + Sync + 'static,
) -> Server {
    server_at(files, PAYLOAD, payload)
}

/// [`server`] for the payload at `payload_path`.
fn server_at(
    files: BTreeMap<String, Arc<Vec<u8>>>,
    payload_path: &'static str,
    payload: impl Fn(&Req, &mut TcpStream, &[u8]) + Send + Sync + 'static,
) -> Server {
    Server::start(move |req, s| match files.get(req.path.as_str()) {
        Some(d) if req.path == payload_path => payload(req, s, d),
        Some(d) => serve(req, s, d),
        None => not_found(s),
    })
}

struct Run {
    out: Output,
    took: Duration,
    rss_kib: Option<u64>,
}

/// `abupdate install --no-reboot URL`, timed, with its peak RSS (GNU time).
fn install(h: &TestHost, url: &str) -> Run {
    let rss_file = h.dir.join("rss");
    let _ = std::fs::remove_file(&rss_file);
    let gnu_time = Path::new("/usr/bin/time").exists();
    let mut c = if gnu_time {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"])
            .arg(&rss_file)
            .arg(crate::common::host::bin());
        c
    } else {
        eprintln!("SKIP memory bound: /usr/bin/time missing (apt-get install time)");
        Command::new(crate::common::host::bin())
    };
    c.arg("--config")
        .arg(&h.config)
        .args(["install", "--no-reboot", url])
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = c.output().expect("run abupdate");
    let took = started.elapsed();
    let rss_kib = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()));
    Run { out, took, rss_kib }
}

fn bounded(r: &Run, what: &str) {
    assert!(r.took < TIME_BOUND, "{what}: took {:?}", r.took);
    if let Some(kib) = r.rss_kib {
        assert!(kib < RSS_BOUND_KIB, "{what}: peak RSS {kib} KiB");
    }
}

/// Exit 1, the last line the error naming `needles`, bounded, nothing
/// flipped. `written`: bytes reached the target, so it is marked bad (else
/// its flag and record are as they were).
fn refused(h: &TestHost, b: &Untouched, r: &Run, needles: &[&str], written: bool) -> String {
    let what = needles.join(" + ");
    assert_eq!(r.out.status.code(), Some(1), "{what}: {}", text(&r.out));
    let stderr = String::from_utf8_lossy(&r.out.stderr);
    let line = stderr.lines().last().unwrap_or("").to_string();
    assert!(line.starts_with("abupdate: "), "{what}: {stderr}");
    for n in needles {
        assert!(line.contains(n), "{line:?} does not name {n:?}");
    }
    bounded(r, &what);
    h.assert_untouched(b, &what);
    assert_eq!(h.reboots(), 0, "{what}: reboot requested");
    let env = h.grub_vars();
    if written {
        assert_eq!(env.get("B_OK").map(String::as_str), Some("0"), "{what}");
        assert_eq!(h.state()["slots"]["B"]["status"], "bad", "{what}");
        assert!(h.state()["transaction"].is_null(), "{what}");
    } else {
        assert_eq!(env.get("B_OK"), b.env.get("B_OK"), "{what}: target touched");
        if b.env.get("B_OK").map(String::as_str) == Some("1") {
            assert_eq!(h.state()["slots"]["B"]["status"], "good", "{what}");
        }
        assert!(h.state()["transaction"].is_null(), "{what}");
    }
    println!(
        "hostile | {what} | {:.1}s, {} KiB | {line}",
        r.took.as_secs_f64(),
        r.rss_kib.map(|k| k.to_string()).unwrap_or("?".into())
    );
    line
}

fn installed(h: &TestHost, r: &Run, what: &str) {
    assert!(r.out.status.success(), "{what}: {}", text(&r.out));
    bounded(r, what);
    assert!(
        h.slot_bytes(1, LEN) == image("2.0", LEN),
        "{what}: slot B does not hold the signed image"
    );
    assert_eq!(h.grub_vars().get("ORDER").map(String::as_str), Some("B A"));
    println!(
        "hostile | {what} | {:.1}s, {} KiB | installed the signed bytes",
        r.took.as_secs_f64(),
        r.rss_kib.map(|k| k.to_string()).unwrap_or("?".into())
    );
}

#[test]
fn body_longer_than_declared() {
    let h = host("longer");
    let (_, files) = release(&h);
    let srv = server(files, |_, s, data| {
        let lie = data.len() + (1 << 20);
        head(s, "200 OK", &format!("Content-Length: {lie}\r\n"));
        write_all_capped(s, data);
        write_all_capped(s, &vec![0u8; 1 << 20]);
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    // Refused on the headers: not one byte reached the target.
    refused(&h, &b, &r, &[PAYLOAD, "announced"], false);
}

#[test]
fn body_shorter_than_declared() {
    let h = host("shorter");
    let (_, files) = release(&h);
    let srv = server(files, |_, s, data| {
        head(s, "200 OK", &format!("Content-Length: {}\r\n", data.len()));
        write_all_capped(s, &data[..data.len() / 2]);
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    refused(&h, &b, &r, &[PAYLOAD, "ended after"], true);
}

#[test]
fn one_byte_per_second() {
    let h = host("trickle");
    let (_, files) = release(&h);
    let srv = server(files, |_, s, data| {
        head(s, "200 OK", &format!("Content-Length: {}\r\n", data.len()));
        trickle(s, data, 60);
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    // Stalled before the first chunk: the target was never touched.
    refused(&h, &b, &r, &[PAYLOAD, "stalled"], false);
}

/// Modes of a payload server that first cuts the download half-way (so a
/// partial is kept), then answers the resume as told.
fn resume_server(files: BTreeMap<String, Arc<Vec<u8>>>, mode: Arc<Mutex<&'static str>>) -> Server {
    resume_server_at(files, PAYLOAD, mode)
}

/// [`resume_server`] for the payload at `payload_path`.
fn resume_server_at(
    files: BTreeMap<String, Arc<Vec<u8>>>,
    payload_path: &'static str,
    mode: Arc<Mutex<&'static str>>,
) -> Server {
    server_at(files, payload_path, move |req, s, data| {
        resume_answer(*mode.lock().unwrap(), req, s, data)
    })
}

/// The answer of [`resume_server`] in mode `m`.
fn resume_answer(m: &str, req: &Req, s: &mut TcpStream, data: &[u8]) {
    let size = data.len();
    match (m, req.range_start()) {
        ("cut", _) => {
            head(s, "200 OK", &format!("Content-Length: {size}\r\n"));
            write_all_capped(s, &data[..size / 2]);
        }
        ("ignore-range", _) => {
            head(s, "200 OK", &format!("Content-Length: {size}\r\n"));
            write_all_capped(s, data);
        }
        (_, None) => serve(req, s, data),
        ("wrong-start", Some(_)) => {
            let from = 7;
            head_range(s, from, size);
            write_all_capped(s, &data[from..]);
        }
        ("wrong-total", Some(from)) => answer_wrong_total(s, from, data),
        _ => serve(req, s, data),
    }
}

/// A first install is cut half-way: a partial download is kept.
fn cut_once(h: &TestHost, srv: &Server, mode: &Arc<Mutex<&'static str>>) -> u64 {
    *mode.lock().unwrap() = "cut";
    let b = h.untouched();
    let r = install(h, &srv.url("/release.json"));
    refused(h, &b, &r, &[PAYLOAD, "ended after"], true);
    let partial: u64 = std::fs::read_dir(h.state_dir.join("partial"))
        .expect("partial dir")
        .filter_map(|e| e.ok())
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    assert!(partial > 0, "no partial download kept");
    partial
}

#[test]
fn wrong_content_range_on_resume() {
    // A range from elsewhere than asked: never appended; the download
    // starts over from byte 0 and yields exactly the signed bytes.
    let h = host("range-start");
    let (_, files) = release(&h);
    let mode = Arc::new(Mutex::new("cut"));
    let srv = resume_server(files, mode.clone());
    let kept = cut_once(&h, &srv, &mode);
    *mode.lock().unwrap() = "wrong-start";
    let r = install(&h, &srv.url("/release.json"));
    installed(&h, &r, "206 with a Content-Range from elsewhere");
    let ranges: Vec<Option<String>> = srv
        .requests()
        .iter()
        .filter(|q| q.path == PAYLOAD)
        .map(|q| q.header("range").map(str::to_string))
        .collect();
    assert_eq!(
        ranges,
        [None, Some(format!("bytes={kept}-")), None],
        "asked for the rest, then for the whole"
    );

    // A range claiming a bigger file than signed: refused, the good
    // partial kept for the next try.
    let h = host("range-total");
    let (_, files) = release(&h);
    let mode = Arc::new(Mutex::new("cut"));
    let srv = resume_server(files, mode.clone());
    let kept = cut_once(&h, &srv, &mode);
    *mode.lock().unwrap() = "wrong-total";
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    refused(&h, &b, &r, &[PAYLOAD], true);
    *mode.lock().unwrap() = "ok";
    let r = install(&h, &srv.url("/release.json"));
    installed(&h, &r, "resume after a wrong Content-Range total");
    let last = srv.requests().last().cloned().expect("a request");
    assert_eq!(
        last.header("range"),
        Some(format!("bytes={kept}-").as_str()),
        "the partial was not kept"
    );
}

/// The next run's resume of a cut download answered with the whole file
/// (the server ignores `Range`): the partial is kept and replayed, the
/// answer's head dropped, the install checked against the signed hash;
/// one line says so, and `range_ignored` counts it (not a failure).
#[test]
fn status_200_instead_of_206_on_resume() {
    let h = host("resume-200");
    let (_, files) = release(&h);
    let size = files.get(PAYLOAD).expect("payload").len() as u64;
    let mode = Arc::new(Mutex::new("cut"));
    let srv = resume_server(files, mode.clone());
    let kept = cut_once(&h, &srv, &mode);
    *mode.lock().unwrap() = "ignore-range";
    let r = install(&h, &srv.url("/release.json"));
    installed(&h, &r, "200 instead of 206 on resume");
    assert!(
        text(&r.out).contains(&format!(
            "the server ignores Range (HTTP 200 with the whole file to a resume at byte {kept}): its first {kept} bytes cross the link again"
        )),
        "{}",
        text(&r.out)
    );
    let metrics = &h.state()["metrics"];
    assert_eq!(metrics["range_ignored"], 1, "{metrics}");
    assert_eq!(metrics["downloaded_bytes"], kept + size, "{metrics}");
    assert!(
        metrics["failures"].get("range_ignored").is_none(),
        "{metrics}"
    );
}

/// The payload is replaced on the server during its download: the first
/// answer (ETag `"v1"`, other bytes in its second half) is cut half-way;
/// the resume's `If-Range: "v1"` is answered with the whole new object
/// (`"v2"`, `new`). The run starts over from byte 0 at once, and what it
/// installs is what the signed hash says, whichever object the server has.
fn replaced_mid_download(
    h: &TestHost,
    new: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
) -> (Run, Server) {
    // Retried within the run, at once: the resume is what is tested.
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen("retries = 0", "retries = 2\nretry_delay = \"0s\"", 1),
    )
    .expect("config");
    let (_, files) = release(h);
    let answered = Arc::new(Mutex::new(0usize));
    let srv = server(files, move |req, s, signed| {
        let n = std::mem::replace(&mut *answered.lock().unwrap(), 1);
        let half = signed.len() / 2;
        if n == 0 {
            let mut old = signed.to_vec();
            old[half..].iter_mut().for_each(|b| *b ^= 0x5a);
            serve_tagged(req, s, &old, "\"v1\"", Some(half));
        } else {
            serve_tagged(req, s, &new(signed), "\"v2\"", None);
        }
    });
    let r = install(h, &srv.url("/release.json"));
    (r, srv)
}

/// The payload requests `srv` was asked, as their `Range` and `If-Range`.
fn payload_asks(srv: &Server) -> Vec<(Option<String>, Option<String>)> {
    srv.requests()
        .iter()
        .filter(|q| q.path == PAYLOAD)
        .map(|q| {
            (
                q.header("range").map(str::to_string),
                q.header("if-range").map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn an_object_replaced_mid_download_is_fetched_from_zero_and_checked_against_the_signed_hash() {
    // The new object is the signed one (the old was stale): installed in
    // this run, and every byte that crossed the link is counted.
    let h = host("replaced-signed");
    let (r, srv) = replaced_mid_download(&h, |signed| signed.to_vec());
    installed(&h, &r, "object replaced mid-download by the signed one");
    assert!(
        text(&r.out).contains("the object changed on the server"),
        "{}",
        text(&r.out)
    );
    let asked = payload_asks(&srv);
    let half = LEN / 2;
    assert_eq!(
        asked,
        [
            (None, None),
            (Some(format!("bytes={half}-")), Some("\"v1\"".to_string())),
            (None, None)
        ],
        "the rest asked for, then the whole"
    );
    assert_eq!(
        h.state()["metrics"]["downloaded_bytes"],
        (half + LEN) as u64,
        "the discarded half counts"
    );

    // The new object is not the signed one: refused by the signed hash,
    // not installed; the target is marked bad and nothing is kept.
    let h = host("replaced-unsigned");
    let b = h.untouched();
    let (r, srv) = replaced_mid_download(&h, |signed| {
        let mut other = signed.to_vec();
        other[10] ^= 1;
        other
    });
    refused(&h, &b, &r, &[PAYLOAD, "the signed manifest says"], true);
    let whole = srv
        .requests()
        .iter()
        .filter(|q| q.path == PAYLOAD && q.header("range").is_none())
        .count();
    assert_eq!(whole, 2, "the new object was not fetched from byte 0");
    assert!(
        std::fs::read_dir(h.state_dir.join("partial"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "bytes that failed the signed hash were kept"
    );
}

/// A partial download of an object since replaced on the server (kept
/// with its validator `"v1"`): the first answer of the next run, to
/// `Range` + `If-Range: "v1"`, is the whole new object (`200`, `"v2"`). It
/// is used from byte 0 in that run, the partial dropped, and its bytes are
/// checked against the signed hash: installed when they are the signed
/// ones, refused (target bad) when not.
#[test]
fn a_partial_of_a_replaced_object_gives_way_to_the_whole_new_one_checked_against_the_signed_hash() {
    for (name, signed_new) in [
        ("partial-replaced-signed", true),
        ("partial-replaced-unsigned", false),
    ] {
        let h = host(name);
        let (m, files) = release(&h);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("json");
        let rootfs = &manifest["images"]["rootfs"];
        let sha = rootfs["download_sha256"]
            .as_str()
            .or(rootfs["sha256"].as_str())
            .expect("sha256");
        let signed = files.get(PAYLOAD).expect("payload").clone();
        let half = signed.len() / 2;
        let mut old = signed.to_vec();
        old[..half].iter_mut().for_each(|b| *b ^= 0x5a);
        let partial = h.state_dir.join(format!("partial/{sha}.part"));
        std::fs::create_dir_all(partial.parent().expect("dir")).expect("partial dir");
        std::fs::write(&partial, &old[..half]).expect("partial");
        std::fs::write(partial.with_extension("validator"), "\"v2-old\"").expect("validator");
        let srv = server(files, move |req, s, signed| {
            let mut new = signed.to_vec();
            if !signed_new {
                new[signed.len() - 10] ^= 1;
            }
            serve_tagged(req, s, &new, "\"v2\"", None);
        });
        let b = h.untouched();
        let r = install(&h, &srv.url("/release.json"));
        if signed_new {
            installed(&h, &r, name);
            assert!(!partial.exists(), "{name}: partial kept after the install");
        } else {
            refused(&h, &b, &r, &[PAYLOAD, "the signed manifest says"], true);
            assert!(!partial.exists(), "{name}: bytes that failed the hash kept");
        }
        let asked = payload_asks(&srv);
        // One answer, used whole from byte 0.
        assert_eq!(
            asked,
            [(
                Some(format!("bytes={half}-")),
                Some("\"v2-old\"".to_string())
            )],
            "{name}"
        );
        assert!(
            text(&r.out).contains("the object changed since byte 0 of the partial download"),
            "{name}: {}",
            text(&r.out)
        );
        assert_eq!(
            h.state()["metrics"]["downloaded_bytes"],
            signed.len() as u64,
            "{name}"
        );
    }
}

/// A segmented payload resumes from the segments the slot holds (nothing
/// of it is kept on the data partition); a server that then answers the
/// range with the whole payload goes on from it (its head dropped, the
/// segments kept), one that answers with a range from elsewhere gets the
/// download restarted from byte 0 and the whole image rewritten: exactly
/// the signed bytes either way.
#[test]
fn a_segmented_resume_answered_with_200_goes_on_or_with_another_range_restarts_from_zero() {
    const SEGMENTED: &str = "/rootfs-2.0.img.zst";
    for (name, answer, second) in [
        ("seg-resume-ok", "ok", vec![]),
        ("seg-resume-200", "ignore-range", vec![]),
        ("seg-resume-start", "wrong-start", vec![None]),
    ] {
        let h = host(name);
        let m = h.pack("r2", "2.0", &image("2.0", LEN), &["--segment-size", "1"]);
        let files = files_of(m.parent().expect("dir"));
        let mode = Arc::new(Mutex::new("cut"));
        let srv = resume_server_at(files, SEGMENTED, mode.clone());
        let b = h.untouched();
        let r = install(&h, &srv.url("/release.json"));
        refused(&h, &b, &r, &[SEGMENTED], true);
        assert!(
            std::fs::read_dir(h.state_dir.join("partial"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true),
            "{name}: a partial download was kept"
        );
        *mode.lock().unwrap() = answer;
        let r = install(&h, &srv.url("/release.json"));
        installed(&h, &r, name);
        if answer == "ignore-range" {
            // The segments in the slot stay: only the answer's head is
            // dropped.
            let said = text(&r.out);
            assert!(
                said.contains("the server ignores Range") && said.contains("holds the first"),
                "{name}: {said}"
            );
        }
        let ranges: Vec<Option<String>> = srv
            .requests()
            .iter()
            .filter(|q| q.path == SEGMENTED)
            .map(|q| q.header("range").map(str::to_string))
            .collect();
        assert_eq!(ranges.len(), 2 + second.len(), "{name}: {ranges:?}");
        assert_eq!(ranges[0], None, "{name}");
        let resumed_at = ranges[1]
            .clone()
            .unwrap_or_else(|| panic!("{name}: no resume: {ranges:?}"));
        assert_ne!(resumed_at, "bytes=0-", "{name}: held nothing");
        assert_eq!(ranges[2..], second[..], "{name}: {ranges:?}");
    }
}

/// The segmented payload of [`install_with_a_read_back_miss`]'s release.
#[cfg(feature = "failpoints")]
const SEGMENTED: &str = "/rootfs-2.0.img.zst";

/// `install --json --no-reboot` of a six-segment release (1 MiB segments)
/// from a server whose payload answers are `payload`'s, on host `name`,
/// with one segment (1 to 5) read back otherwise than written (a failing
/// medium, injected): its frame is fetched once more. Returns the host,
/// its state before, the manifest, the server and the run.
#[cfg(feature = "failpoints")]
fn install_with_a_read_back_miss(
    name: &str,
    payload: impl Fn(&Req, &mut TcpStream, &[u8]) + Send + Sync + 'static,
) -> (TestHost, Untouched, PathBuf, Server, Run) {
    let h = host(name);
    // Six segments of 1 MiB; segment 4's read-back differs, whatever
    // order the workers read back in: its frame has bytes before it to
    // drop.
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", 2 * LEN),
        &["--segment-size", "1"],
    );
    let files = files_of(m.parent().expect("dir"));
    let srv = server_at(files, SEGMENTED, payload);
    let b = h.untouched();
    let out = install_reading_back_wrong(&h, &srv, "read-back-differs@4194304");
    let r = Run {
        out,
        took: Duration::ZERO,
        rss_kib: None,
    };
    (h, b, m, srv, r)
}

/// `install --json --no-reboot` of `srv`'s release on `h`, with the
/// medium returning other bytes for the read-back `failpoint` names.
#[cfg(feature = "failpoints")]
fn install_reading_back_wrong(h: &TestHost, srv: &Server, failpoint: &str) -> Output {
    h.abupdate_env(
        &[
            "--json",
            "install",
            "--no-reboot",
            &srv.url("/release.json"),
        ],
        &[("ABUPDATE_FAILPOINT", failpoint)],
    )
}

/// The requests for a frame fetched once more (a closed range), checked to
/// be one, for the frame of segment 4 of `m` (the one read back wrong):
/// its first and last byte and its `If-Range`.
#[cfg(feature = "failpoints")]
fn the_frame_asked(name: &str, m: &Path, srv: &Server) -> (usize, usize, Option<String>) {
    let again: Vec<(usize, usize, Option<String>)> = srv
        .requests()
        .iter()
        .filter_map(|r| {
            Some((
                r.range_start()?,
                r.range_end()?,
                r.header("if-range").map(str::to_string),
            ))
        })
        .collect();
    assert_eq!(
        again.len(),
        1,
        "{name}: one request for the frame: {again:?}"
    );
    let (at, last, _) = again[0];
    let (offset, len, _) = crate::common::host::segment_frame(m, 4);
    assert_eq!(
        (at, last),
        (offset as usize, (offset + len - 1) as usize),
        "{name}: not the frame of segment 4"
    );
    again[0].clone()
}

/// The `kind` of a `--json` run's error.
#[cfg(feature = "failpoints")]
fn json_kind(name: &str, r: &Run) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&r.out.stdout)
        .unwrap_or_else(|e| panic!("{name}: stdout is not JSON ({e}): {}", text(&r.out)));
    v["kind"].clone()
}

/// A segment read back wrong (a failing medium, injected) has its frame
/// fetched once more with one `Range` request; a server that ignores
/// `Range` answers it with the whole payload. The frame is taken from that
/// answer as a resume takes one (its head read and dropped, nothing past
/// the frame read, one line, counted in `range_ignored`), checked against
/// its signed BLAKE3, and the install ends telling the medium's fault
/// (`device`), exactly as against a server that honours `Range`. Before,
/// it ended as `range_ignored`, telling nothing about the medium.
#[cfg(feature = "failpoints")]
#[test]
fn a_frame_fetched_again_from_a_server_that_ignores_range_still_tells_the_medium_fault() {
    for (name, answer, ignored) in [("honours", "ok", 0), ("ignores", "ignore-range", 1)] {
        let (h, b, m, srv, r) =
            install_with_a_read_back_miss(&format!("again-range-{name}"), move |req, s, data| {
                resume_answer(answer, req, s, data)
            });
        let (at, last, _) = the_frame_asked(name, &m, &srv);
        assert_eq!(json_kind(name, &r), "device", "{name}");
        refused(&h, &b, &r, &["the medium is failing"], true);
        let said = text(&r.out);
        let dropped = format!(
            "the server ignores Range (HTTP 200 with the whole file to bytes={at}-{last}): its first {at} bytes cross the link and are dropped"
        );
        assert_eq!(said.contains(&dropped), ignored == 1, "{name}: {said}");
        let metrics = &h.state()["metrics"];
        // (Absent while 0.)
        assert_eq!(
            metrics["range_ignored"].as_u64().unwrap_or(0),
            ignored,
            "{name}: {metrics}"
        );
        counted_once_as(&h, "device", "range_ignored", name);
    }
}

/// A frame fetched once more names the object the payload's bytes came
/// from: `If-Range` with its ETag, as a resume does. A server that
/// honours it answers the frame (`206`), and the medium's fault is told.
/// Before, the frame was asked without `If-Range`.
#[cfg(feature = "failpoints")]
#[test]
fn a_frame_fetched_again_asks_if_range_with_the_payloads_validator() {
    let (h, b, m, srv, r) = install_with_a_read_back_miss("again-tagged", |req, s, data| {
        serve_tagged(req, s, data, "\"v1\"", None)
    });
    let (_, _, if_range) = the_frame_asked("tagged", &m, &srv);
    assert_eq!(if_range.as_deref(), Some("\"v1\""));
    assert_eq!(json_kind("tagged", &r), "device");
    refused(&h, &b, &r, &["the medium is failing"], true);
}

/// A frame fetched once more that the server now serves with other bytes
/// under the same ETag (a proxy or mirror that changed what it serves, a
/// file written through a mapping): the frame matched its signed BLAKE3
/// when first read, so the source changed; the run ends as that (`io`),
/// the release neither blamed nor on the failed list, and the medium not
/// named. Before, it ended as `hash_mismatch`, blaming the release
/// (review 14).
#[cfg(feature = "failpoints")]
#[test]
fn a_frame_served_again_otherwise_than_first_read_ends_the_run_unblamed() {
    let (h, b, m, srv, r) = install_with_a_read_back_miss("again-changed", |req, s, data| {
        if req.range_end().is_none() {
            return serve_tagged(req, s, data, "\"v1\"", None);
        }
        let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
        serve_tagged(req, s, &other, "\"v1\"", None);
    });
    let (_, _, if_range) = the_frame_asked("changed", &m, &srv);
    assert_eq!(if_range.as_deref(), Some("\"v1\""));
    assert_eq!(json_kind("changed", &r), "io", "{}", text(&r.out));
    refused(
        &h,
        &b,
        &r,
        &[
            "the frame of segment 4",
            "which it matched when first read",
            "nothing is blamed",
        ],
        true,
    );
    counted_once_as(
        &h,
        "io",
        "hash_mismatch",
        "a frame served otherwise than first read",
    );
}

/// A frame fetched once more from a server whose object was replaced
/// since the payload's download began: it answers whole under another
/// ETag (ignoring `Range` as well). Nothing is taken from that answer,
/// and the run ends as the object's change (`network`), the release
/// neither blamed nor on the failed list, the payload not fetched again
/// within the run. Before, the frame was taken from the other object,
/// failed its signed BLAKE3, and the run blamed the release
/// (`hash_mismatch`).
#[cfg(feature = "failpoints")]
#[test]
fn a_frame_fetched_again_from_an_object_replaced_since_ends_the_run_unblamed() {
    let (h, b, m, srv, r) = install_with_a_read_back_miss("again-replaced", |req, s, data| {
        if req.range_end().is_none() {
            return serve_tagged(req, s, data, "\"v1\"", None);
        }
        let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
        head(
            s,
            "200 OK",
            &format!("ETag: \"v2\"\r\nContent-Length: {}\r\n", other.len()),
        );
        write_all_capped(s, &other);
    });
    let (at, last, if_range) = the_frame_asked("replaced", &m, &srv);
    assert_eq!(json_kind("replaced", &r), "network", "{}", text(&r.out));
    refused(
        &h,
        &b,
        &r,
        &[
            SEGMENTED,
            "the object changed on the server",
            &format!("HTTP 200 to bytes={at}-{last}"),
        ],
        true,
    );
    assert_eq!(if_range.as_deref(), Some("\"v1\""));
    let payload_asks = srv
        .requests()
        .iter()
        .filter(|q| q.path == SEGMENTED)
        .count();
    assert_eq!(
        payload_asks, 2,
        "the payload was fetched again within the run"
    );
    counted_once_as(
        &h,
        "network",
        "hash_mismatch",
        "a frame the server cannot serve again",
    );
    assert_eq!(
        h.state()["metrics"]["range_ignored"].as_u64().unwrap_or(0),
        0,
        "an answer nothing was taken from counted as taken"
    );
}

/// A frame fetched once more whose whole answer (`200`, the server ignores
/// `Range`) is cut inside the head being read and dropped: the line says
/// how many bytes arrived, not the frame's offset (which it said before,
/// as though the whole head had come).
#[cfg(feature = "failpoints")]
#[test]
fn a_frame_fetched_again_whose_whole_answer_is_cut_in_its_head_says_the_bytes_that_arrived() {
    let (h, b, m, srv, r) = install_with_a_read_back_miss("again-cut-head", |req, s, data| {
        let Some(from) = req.range_start().filter(|_| req.range_end().is_some()) else {
            return serve_tagged(req, s, data, "\"v1\"", None);
        };
        head(
            s,
            "200 OK",
            &format!("ETag: \"v1\"\r\nContent-Length: {}\r\n", data.len()),
        );
        write_all_capped(s, &data[..from / 2]);
    });
    let (at, last, _) = the_frame_asked("cut-head", &m, &srv);
    assert_eq!(json_kind("cut-head", &r), "network", "{}", text(&r.out));
    refused(
        &h,
        &b,
        &r,
        &[
            SEGMENTED,
            &format!("ended after {} of {} bytes", at / 2, last + 1),
        ],
        true,
    );
    assert_eq!(h.state()["failed"], serde_json::json!([]));
}

#[test]
fn redirect_loop() {
    let h = host("redirect-loop");
    let (_, files) = release(&h);
    let files2 = files.clone();
    let srv = Server::start(move |req, s| {
        let to = match req.path.as_str() {
            "/rootfs-2.0.img" | "/b" => "/a",
            "/a" => "/b",
            "/m/release.json" => "/m2/release.json",
            "/m2/release.json" => "/m/release.json",
            p => {
                return match files2.get(p) {
                    Some(d) => serve(req, s, d),
                    None => not_found(s),
                }
            }
        };
        head(
            s,
            "302 Found",
            &format!("Location: {to}\r\nContent-Length: 0\r\n"),
        );
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    refused(&h, &b, &r, &[PAYLOAD, "redirect loop"], false);
    let h = host("redirect-loop-manifest");
    let b = h.untouched();
    let r = install(&h, &srv.url("/m/release.json"));
    refused(&h, &b, &r, &["/m/release.json", "redirect loop"], false);
}

#[test]
fn redirect_to_file() {
    let h = host("redirect-file");
    let (m, files) = release(&h);
    // The redirect points at the real payload on this very host: still no.
    let local = format!("file://{}", m.with_file_name("rootfs-2.0.img").display());
    let srv = server(files, move |_, s, _| {
        head(
            s,
            "302 Found",
            &format!("Location: {local}\r\nContent-Length: 0\r\n"),
        );
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    refused(&h, &b, &r, &[PAYLOAD, "redirect to file: refused"], false);
}

#[test]
fn tls_with_an_unknown_ca() {
    let h = host("tls");
    let (m, _) = release(&h);
    let dir = m.parent().expect("dir").to_path_buf();
    if tls::make_pki(&dir).is_none() {
        eprintln!("SKIP: openssl CLI not usable; TLS install test not run");
        return;
    }
    let server = tls::TlsServer::start(&dir);
    let url = server.url("/release.json");
    let b = h.untouched();
    let r = install(&h, &url);
    refused(&h, &b, &r, &[&url, "UnknownIssuer"], false);
    // Trusting that CA (update.ca_file) makes the same server fine.
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replacen(
            "[update]\n",
            &format!("[update]\nca_file = \"{}\"\n", dir.join("ca.pem").display()),
            1,
        ),
    )
    .expect("config");
    let r = install(&h, &url);
    installed(&h, &r, "TLS with update.ca_file naming the CA");
}

/// `abupdate --json ARGS` on `h`: exit code and stdout parsed.
fn json(h: &TestHost, args: &[&str]) -> (Option<i32>, serde_json::Value, Output) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = h.abupdate(&all);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", text(&out)));
    (out.status.code(), v, out)
}

/// The failures this host counted, by kind (what the textfile and the
/// webhook report).
fn failures(h: &TestHost) -> serde_json::Value {
    h.state()["metrics"]["failures"].clone()
}

/// The run's failure was counted once as `kind`, never as `not`, and no
/// release was put on the failed list (`case` names the run).
#[cfg(feature = "failpoints")]
fn counted_once_as(h: &TestHost, kind: &str, not: &str, case: &str) {
    let counted = failures(h);
    assert_eq!(counted[kind], 1, "{case}: {counted}");
    assert!(counted.get(not).is_none(), "{case}: {counted}");
    assert_eq!(h.state()["failed"], serde_json::json!([]), "{case}");
}

#[test]
fn payload_503_or_429_with_retry_after_leaves_the_target_as_it_was() {
    // A busy server is not a bad release: the target, which still holds a
    // good older system, keeps its flag and record, and the failure counts
    // as the server's (`http_status`), not the payload's.
    for (status, retry) in [
        ("503 Service Unavailable", "120"),
        ("429 Too Many Requests", "7"),
    ] {
        let h = host(&format!("busy-{}", &status[..3]));
        let (_, files) = release(&h);
        let srv = server(files, move |_, s, _| {
            head(
                s,
                status,
                &format!("Retry-After: {retry}\r\nContent-Length: 0\r\n"),
            );
        });
        let b = h.untouched();
        let r = install(&h, &srv.url("/release.json"));
        let line = refused(&h, &b, &r, &[PAYLOAD, &status[..3]], false);
        assert!(
            line.contains(&format!("retry after {retry}s")),
            "{line:?} does not pass on Retry-After"
        );
        assert_eq!(failures(&h)["http_status"], 1, "{}", failures(&h));
        assert!(failures(&h).get("payload").is_none(), "{}", failures(&h));
    }
}

#[test]
fn payload_cut_before_its_first_chunk_leaves_the_target_as_it_was() {
    let h = host("cut-early");
    let (_, files) = release(&h);
    let srv = server(files, |_, s, data| {
        head(s, "200 OK", &format!("Content-Length: {}\r\n", data.len()));
        write_all_capped(s, &data[..1000]);
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    refused(&h, &b, &r, &[PAYLOAD, "ended after 1000 of"], false);
    assert_eq!(failures(&h)["network"], 1, "{}", failures(&h));
}

#[test]
fn stalled_download_is_a_network_failure_not_a_payload_one() {
    // A megabyte reaches the target, then the link stalls: the target is
    // marked bad (its bytes changed), the partial download is kept for the
    // next run, and the failure is counted and reported as the network's,
    // so a fleet controller does not blame the release for it.
    let h = host("stall-mid");
    let (_, files) = release(&h);
    let srv = server(files, |_, s, data| {
        head(s, "200 OK", &format!("Content-Length: {}\r\n", data.len()));
        write_all_capped(s, &data[..1 << 20]);
        std::thread::sleep(Duration::from_secs(8));
    });
    let b = h.untouched();
    let (code, v, out) = json(&h, &["install", "--no-reboot", &srv.url("/release.json")]);
    let r = Run {
        out,
        took: Duration::ZERO,
        rss_kib: None,
    };
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["kind"], "network", "{v}");
    refused(&h, &b, &r, &[PAYLOAD, "no data received"], true);
    assert_eq!(failures(&h)["network"], 1, "{}", failures(&h));
    assert!(failures(&h).get("payload").is_none(), "{}", failures(&h));
    let kept: u64 = std::fs::read_dir(h.state_dir.join("partial"))
        .expect("partial dir")
        .filter_map(|e| e.ok())
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    assert!(kept >= 1 << 20, "partial download not kept: {kept} bytes");
}

/// Serves the release only to requests whose query is `?token=abc` for the
/// manifest and its signature (a CDN token), and the payload without one.
fn token_server(files: BTreeMap<String, Arc<Vec<u8>>>) -> Server {
    Server::start(move |req, s| {
        let (path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path.as_str(), None),
        };
        let needs_token = path.starts_with("/release.json");
        if needs_token && query != Some("token=abc") {
            return head(s, "403 Forbidden", "Content-Length: 0\r\n");
        }
        match files.get(path) {
            Some(d) => serve(req, s, d),
            None => not_found(s),
        }
    })
}

#[test]
fn signature_url_keeps_the_manifest_query() {
    let h = host("query");
    let (_, files) = release(&h);
    let srv = token_server(files);
    let r = install(&h, &srv.url("/release.json?token=abc"));
    installed(&h, &r, "manifest URL with a CDN token in its query");
    let paths: Vec<String> = srv.requests().iter().map(|q| q.path.clone()).collect();
    assert!(
        paths.contains(&"/release.json.minisig?token=abc".to_string()),
        "the signature was not asked for with the token: {paths:?}"
    );
    // RFC 3986: a relative reference without a query does not inherit the
    // manifest's.
    assert!(paths.contains(&PAYLOAD.to_string()), "{paths:?}");
}

#[test]
fn fragment_on_the_manifest_url_never_reaches_a_request() {
    let h = host("fragment");
    let (_, files) = release(&h);
    let srv = server(files, serve);
    let r = install(&h, &srv.url("/release.json#frag"));
    installed(&h, &r, "manifest URL with a fragment");
    let paths: Vec<String> = srv.requests().iter().map(|q| q.path.clone()).collect();
    assert!(paths.iter().all(|p| !p.contains('#')), "{paths:?}");
    assert!(
        paths.contains(&"/release.json.minisig".to_string()),
        "the signature was not fetched as release.json.minisig: {paths:?}"
    );
}

#[test]
fn mirror_failure_names_the_mirror_and_source_is_where_the_manifest_came_from() {
    let h = host("mirror-source");
    let (_, files) = release(&h);
    let serving = Arc::new(Mutex::new(false));
    let on = serving.clone();
    let mirror = Server::start(move |req, s| {
        let path = req.path.strip_prefix("/cache/rel").unwrap_or("");
        match files.get(path) {
            Some(d) if *on.lock().unwrap() => serve(req, s, d),
            _ => not_found(s),
        }
    });
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let origin = "http://updates.invalid/rel/release.json";
    std::fs::write(
        &h.config,
        cfg.replacen(
            "[update]\n",
            &format!(
                "[update]\nurl = \"{origin}\"\nmirror = \"http://site:pw@127.0.0.1:{}/cache/\"\n",
                mirror.port
            ),
            1,
        ),
    )
    .expect("config");
    let at_mirror = format!(
        "http://***@127.0.0.1:{}/cache/rel/release.json",
        mirror.port
    );

    // The mirror has no copy: the error names the mirror's URL (without its
    // password), not the origin that was never asked.
    let (code, v, out) = json(&h, &["check"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["kind"], "not_found", "{v}");
    let line = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(
        line.contains(&at_mirror),
        "{line:?} does not name {at_mirror}"
    );
    assert!(
        !line.contains("updates.invalid"),
        "{line:?} names the origin"
    );
    assert!(
        !text(&out).contains(":pw@"),
        "password shown: {}",
        text(&out)
    );

    // It has one: `source` says the manifest came from the mirror.
    *serving.lock().unwrap() = true;
    let (code, v, _) = json(&h, &["check"]);
    assert_eq!(code, Some(100), "{v}");
    assert_eq!(v["source"], at_mirror.as_str(), "{v}");
}

#[test]
fn credentials_in_urls_are_used_but_never_shown() {
    // Basic credentials in the manifest URL (and in a redirect) go to the
    // server, and never into an error line, a log line, `--json` output,
    // `status` or the webhook report.
    let h = host("credentials");
    let (_, files) = release(&h);
    let authorized = Arc::new(Mutex::new(Vec::new()));
    let seen = authorized.clone();
    let srv = Server::start(move |req, s| {
        seen.lock()
            .unwrap()
            .push(req.header("authorization").map(str::to_string));
        let port = req
            .header("host")
            .and_then(|h| h.rsplit(':').next())
            .unwrap_or("0")
            .to_string();
        match req.path.as_str() {
            PAYLOAD => head(
                s,
                "302 Found",
                &format!("Location: http://user:s3cret@127.0.0.1:{port}/busy.img\r\nContent-Length: 0\r\n"),
            ),
            "/busy.img" => head(s, "503 Service Unavailable", "Content-Length: 0\r\n"),
            p => match files.get(p) {
                Some(d) => serve(req, s, d),
                None => not_found(s),
            },
        }
    });
    let (hook, bodies) = crate::common::hostile_server::body_collector();
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        format!("{cfg}\n[report]\nwebhook = \"{}\"\n", hook.url("/report")),
    )
    .expect("config");
    let url = format!("http://user:s3cret@127.0.0.1:{}/release.json", srv.port);
    let shown = format!("http://***@127.0.0.1:{}/release.json", srv.port);

    let (code, v, out) = json(&h, &["check", &url]);
    assert_eq!(code, Some(100), "{v}");
    assert_eq!(v["source"], shown.as_str(), "{v}");
    let mut everything = text(&out);

    let (code, v, out) = json(&h, &["install", "--no-reboot", &url]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["kind"], "http_status", "{v}");
    let message = v["error"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains(&format!("http://***@127.0.0.1:{}/busy.img", srv.port)),
        "{message:?}"
    );
    everything.push_str(&text(&out));
    everything.push_str(&text(&h.abupdate(&["--json", "status"])));
    everything.push_str(&text(&h.abupdate(&["status"])));
    let reports = bodies.lock().unwrap().join("\n");
    assert!(
        reports.contains("http://***@127.0.0.1"),
        "no report: {reports}"
    );
    everything.push_str(&reports);
    assert!(
        !everything.contains("s3cret"),
        "credentials shown: {everything}"
    );

    // The credentials did reach the server, as Basic authentication.
    let auth = authorized.lock().unwrap().clone();
    assert!(
        auth.iter()
            .all(|a| a.as_deref() == Some("Basic dXNlcjpzM2NyZXQ=")),
        "{auth:?}"
    );
}

#[test]
fn busy_server_for_delta_and_full_payload_leaves_the_target_as_it_was() {
    // The booted slot holds the delta's source; the server answers 503 to
    // the delta's first range and then to the full payload: nothing was
    // written, so the target keeps its flag and record.
    let h = host("busy-delta");
    let old = h.dir.join("v1.img");
    std::fs::write(&old, h.slot_bytes(0, 4096)).expect("v1");
    let delta_from = format!("rootfs={}", old.display());
    let m = h.pack(
        "r2",
        "2.0",
        &image("2.0", LEN),
        &["--segment-size", "1", "--delta-from", &delta_from],
    );
    let files = files_of(m.parent().expect("dir"));
    let srv = Server::start(move |req, s| match files.get(req.path.as_str()) {
        Some(d) if req.path.starts_with("/release.json") => serve(req, s, d),
        _ => head(s, "503 Service Unavailable", "Content-Length: 0\r\n"),
    });
    let b = h.untouched();
    let r = install(&h, &srv.url("/release.json"));
    refused(&h, &b, &r, &["HTTP 503"], false);
    let asked: Vec<Req> = srv.requests();
    assert!(
        asked.iter().any(|q| q.header("range").is_some()),
        "the delta was not tried: {asked:?}"
    );
}

#[test]
fn health_check_credentials_are_never_shown() {
    // A health check URL with credentials fails the trial: the rollback's
    // reason names the check without them, in the log, `--json`, `status`,
    // the state file and the webhook report.
    let mut h = host("health-credentials");
    let (_, files) = release(&h);
    let srv = Server::start(move |req, s| match files.get(req.path.as_str()) {
        Some(d) => serve(req, s, d),
        None => head(s, "500 Internal Server Error", "Content-Length: 0\r\n"),
    });
    let (hook, bodies) = crate::common::hostile_server::body_collector();
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let check = format!("http://user:s3cret@127.0.0.1:{}/healthz", srv.port);
    std::fs::write(
        &h.config,
        format!(
            "{}\n[report]\nwebhook = \"{}\"\n",
            cfg.replacen(
                "[health]\n",
                &format!("[health]\nhttp = [\"{check}\"]\n"),
                1
            ),
            hook.url("/report")
        ),
    )
    .expect("config");
    let r = install(&h, &srv.url("/release.json"));
    installed(&h, &r, "release for the health check");
    assert_eq!(h.boot(), "B");
    let (code, v, out) = json(&h, &["health", "--no-reboot"]);
    assert_eq!(v["outcome"], "rolled_back", "{v} (exit {code:?})");
    let shown = format!("GET http://***@127.0.0.1:{}/healthz", srv.port);
    assert!(v["message"].as_str().unwrap_or("").contains(&shown), "{v}");
    let mut everything = text(&out);
    everything.push_str(&text(&h.abupdate(&["--json", "status"])));
    everything.push_str(&text(&h.abupdate(&["status"])));
    everything.push_str(&h.state().to_string());
    let reports = bodies.lock().unwrap().join("\n");
    assert!(reports.contains("rolled_back"), "no report: {reports}");
    everything.push_str(&reports);
    assert!(
        !everything.contains("s3cret"),
        "credentials shown: {everything}"
    );
}

/// A segment read back wrong (a failing medium, injected) whose frame,
/// fetched once more to tell the medium from the release, cannot be had:
/// the server answers that range request 503, or cuts it half-way. A
/// failure to fetch proves nothing about the release: the install fails
/// as the server's (`http_status`) or the link's (`network`), counted so,
/// with nothing counted as `hash_mismatch` and the release not on the
/// failed list; the target, written in part, stays marked bad. Before,
/// the release was blamed (`hash_mismatch`: a fleet controller would
/// count it against the release and might pause a healthy rollout).
#[cfg(feature = "failpoints")]
#[test]
fn a_frame_that_cannot_be_fetched_again_is_the_servers_failure_not_the_releases() {
    const SEGMENTED: &str = "/rootfs-2.0.img.zst";
    for (name, kind, says) in [
        ("503", "http_status", "HTTP 503"),
        ("cut", "network", "ended after"),
    ] {
        let h = host(&format!("again-{name}"));
        let m = h.pack("r2", "2.0", &image("2.0", LEN), &["--segment-size", "1"]);
        let files = files_of(m.parent().expect("dir"));
        let srv = server_at(files, SEGMENTED, move |req, s, data| {
            // Only the frame fetched once more asks for a closed range.
            let Some(last) = req.range_end() else {
                return serve(req, s, data);
            };
            let from = req.range_start().expect("range start");
            match name {
                "503" => head(s, "503 Service Unavailable", "Content-Length: 0\r\n"),
                _ => {
                    head(
                        s,
                        "206 Partial Content",
                        &format!(
                            "Content-Range: bytes {from}-{last}/{}\r\nContent-Length: {}\r\n",
                            data.len(),
                            last + 1 - from
                        ),
                    );
                    write_all_capped(s, &data[from..from + (last + 1 - from) / 2]);
                }
            }
        });
        let b = h.untouched();
        let out = install_reading_back_wrong(&h, &srv, "read-back-differs:1");
        let asked_again = srv
            .requests()
            .iter()
            .filter(|r| r.range_end().is_some())
            .count();
        assert_eq!(asked_again, 1, "{name}: the frame was not fetched again");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: stdout is not JSON ({e}): {}", text(&out)));
        assert_eq!(v["kind"], kind, "{name}: {v}");
        let r = Run {
            out,
            took: Duration::ZERO,
            rss_kib: None,
        };
        refused(&h, &b, &r, &[SEGMENTED, says], true);
        assert_eq!(failures(&h)[kind], 1, "{name}: {}", failures(&h));
        assert!(
            failures(&h).get("hash_mismatch").is_none(),
            "{name}: {}",
            failures(&h)
        );
        assert_eq!(h.state()["failed"], serde_json::json!([]), "{name}");
    }
}
