//! abupdate::fetch against a real nginx on loopback: documents, conditional
//! GET, 404, payload streaming and resume, checked against nginx's own
//! access log of what it sent.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::common::host::scratch;
use crate::common::http::{pattern, Nginx};
use abupdate::fetch::{Document, FetchError, Transport, TransportOptions};

const REDIRECTS: &str = r#"
        location = /moved.json { return 301 /release.json; }
        location /via/ { rewrite ^/via/(.*)$ /$1 redirect; }
"#;

fn transport() -> Transport {
    Transport::new(&TransportOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..TransportOptions::default()
    })
    .expect("transport")
}

/// A served directory with `release.json` and a `payload.bin` of `size` bytes.
fn setup(size: usize) -> Option<(Nginx, Vec<u8>)> {
    let nginx = Nginx::start_temp(REDIRECTS)?;
    std::fs::write(nginx.root.join("release.json"), br#"{"format":1}"#).unwrap();
    let payload = pattern(size, 0x5eed);
    std::fs::write(nginx.root.join("payload.bin"), &payload).unwrap();
    Some((nginx, payload))
}

/// Read up to `n` bytes (or all) in 64 KiB blocks, as the installer does.
fn read_n(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while out.len() < n {
        let want = buf.len().min(n - out.len());
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        out.extend_from_slice(&buf[..got]);
    }
    Ok(out)
}

#[test]
fn document_conditional_get_and_not_found() {
    let Some((nginx, _)) = setup(1) else { return };
    let t = transport();

    let first = t
        .get_document(&nginx.url("release.json"), 4096, None)
        .expect("fetch");
    let Document::Fetched {
        body, validators, ..
    } = first
    else {
        panic!("expected Fetched, got {first:?}")
    };
    assert_eq!(body, br#"{"format":1}"#);
    assert!(validators.etag.is_some(), "nginx sends an ETag");
    assert!(
        validators.last_modified.is_some(),
        "nginx sends Last-Modified"
    );

    // Same validators back: the server answers 304 and we say NotModified.
    let second = t
        .get_document(&nginx.url("release.json"), 4096, Some(&validators))
        .expect("conditional fetch");
    assert_eq!(second, Document::NotModified);

    // A changed file (new size, so a new ETag) is fetched again.
    std::fs::write(nginx.root.join("release.json"), br#"{"format":1,"v":2}"#).unwrap();
    let third = t
        .get_document(&nginx.url("release.json"), 4096, Some(&validators))
        .expect("fetch after change");
    assert!(
        matches!(&third, Document::Fetched { body, .. } if body == br#"{"format":1,"v":2}"#),
        "{third:?}"
    );

    // Optional files (second signature) probe as NotFound.
    assert_eq!(
        t.get_document(&nginx.url("release.json.2.minisig"), 4096, None)
            .expect("404 is not an error"),
        Document::NotFound
    );

    // Over the limit: refused on Content-Length, before the body.
    let e = t
        .get_document(&nginx.url("release.json"), 5, None)
        .expect_err("limit");
    assert_eq!(e.kind(), "too_long", "{e}");
    assert!(e.to_string().contains("announced 18 bytes"), "{e}");

    // A redirect is followed, and the document names the URL that
    // answered (what `check` reports as its source).
    let moved = t
        .get_document(&nginx.url("moved.json"), 4096, None)
        .expect("redirected");
    assert!(
        matches!(&moved, Document::Fetched { url, .. } if *url == nginx.url("release.json")),
        "{moved:?}"
    );

    let log = nginx.wait_log(7);
    let statuses: Vec<u16> = log.iter().map(|l| l.status).collect();
    assert_eq!(statuses, [200, 304, 200, 404, 200, 301, 200]);
}

#[test]
fn payload_full_read_equals_file() {
    let size = 3 * 1024 * 1024 + 17;
    let Some((nginx, payload)) = setup(size) else {
        return;
    };
    let t = transport();
    let mut r = t
        .open_payload(&nginx.url("payload.bin"), size as u64, None)
        .expect("open");
    let got = read_n(&mut r, usize::MAX).expect("read");
    assert!(got == payload, "payload bytes differ");
    assert_eq!(r.bytes_from_network(), size as u64);
    assert_eq!(r.resumed_from(), 0);

    // Declared size smaller than the file: refused on Content-Length.
    let e = t
        .open_payload(&nginx.url("payload.bin"), size as u64 - 1, None)
        .expect_err("too long");
    assert_eq!(e.kind(), "too_long", "{e}");
    // Declared size larger: the server announces fewer bytes.
    let e = t
        .open_payload(&nginx.url("payload.bin"), size as u64 + 1, None)
        .expect_err("too short");
    assert_eq!(e.kind(), "too_short", "{e}");
    // Missing payload: "not found" (not published), naming the URL; not
    // an error worth retrying.
    let e = t
        .open_payload(&nginx.url("nope.bin"), 1, None)
        .expect_err("404");
    assert_eq!(e.kind(), "not_found");
    assert!(!e.is_transient());
    assert_eq!(
        e.to_string(),
        format!("{}: not found (HTTP 404)", nginx.url("nope.bin"))
    );
}

fn resume_case(nginx: &Nginx, payload: &[u8], path: &str, partial: &Path, stop_at: usize) {
    let t = transport();
    let size = payload.len() as u64;
    let url = nginx.url(path);
    let before = nginx.log().len();

    // First run: read part, then drop the reader (an interrupted download).
    let mut r = t.open_payload(&url, size, Some(partial)).expect("open 1");
    let head = read_n(&mut r, stop_at).expect("read 1");
    assert_eq!(head.len(), stop_at);
    assert!(head == payload[..stop_at], "first run bytes differ");
    drop(r);
    let n = std::fs::metadata(partial).unwrap().len();
    assert_eq!(n, stop_at as u64, "partial holds exactly what was read");

    // Second run: replays N bytes from disk, fetches only the rest.
    let mut r = t.open_payload(&url, size, Some(partial)).expect("open 2");
    assert_eq!(r.resumed_from(), n);
    let all = read_n(&mut r, usize::MAX).expect("read 2");
    assert!(all == payload, "assembled bytes differ from the file");
    assert_eq!(r.bytes_from_network(), size - n);
    assert_eq!(r.restart_reason(), None);
    drop(r);
    assert!(
        std::fs::read(partial).unwrap() == payload,
        "partial file is the whole payload"
    );

    let range = format!("bytes={n}-");
    let log = nginx.wait_log(before + 2);
    let resumed: Vec<_> = log[before..]
        .iter()
        .filter(|l| l.range.as_deref() == Some(range.as_str()) && l.status == 206)
        .collect();
    assert_eq!(resumed.len(), 1, "one 206 for {range}: {log:#?}");
    assert_eq!(
        resumed[0].body_bytes_sent,
        size - n,
        "server sent exactly the missing bytes"
    );
    eprintln!(
        "resume via /{path}: size {size}, partial {n}, second request {range} -> 206, server sent {} bytes",
        resumed[0].body_bytes_sent
    );
}

#[test]
fn payload_resumes_with_range_and_sends_only_the_rest() {
    let size = 8 * 1024 * 1024 + 123;
    let Some((nginx, payload)) = setup(size) else {
        return;
    };
    let dir = scratch("partial");

    resume_case(
        &nginx,
        &payload,
        "payload.bin",
        &dir.join("a.part"),
        3 * 1024 * 1024 + 5,
    );
    // Through a redirect: the Range header must survive the hop.
    resume_case(
        &nginx,
        &payload,
        "via/payload.bin",
        &dir.join("b.part"),
        1_000_001,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn payload_partial_longer_than_size_restarts_and_full_partial_needs_no_request() {
    let size = 1024 * 1024;
    let Some((nginx, payload)) = setup(size) else {
        return;
    };
    let dir = scratch("partial");
    let t = transport();
    let url = nginx.url("payload.bin");

    // Longer than declared: cannot be a prefix; truncated, fetched from 0.
    let partial = dir.join("long.part");
    std::fs::write(&partial, vec![0xAA; size + 10]).unwrap();
    let mut r = t
        .open_payload(&url, size as u64, Some(&partial))
        .expect("open");
    assert_eq!(r.resumed_from(), 0);
    assert!(r.restart_reason().is_some());
    let got = read_n(&mut r, usize::MAX).expect("read");
    assert!(got == payload);
    assert_eq!(r.bytes_from_network(), size as u64);
    drop(r);
    assert!(std::fs::read(&partial).unwrap() == payload);
    let log = nginx.wait_log(1);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].range, None, "no Range sent for a restart");
    assert_eq!((log[0].status, log[0].body_bytes_sent), (200, size as u64));

    // Now the partial holds everything: replayed, no request at all.
    let mut r = t
        .open_payload(&url, size as u64, Some(&partial))
        .expect("open full");
    let got = read_n(&mut r, usize::MAX).expect("read");
    assert!(got == payload);
    assert_eq!(r.bytes_from_network(), 0);
    assert_eq!(r.resumed_from(), size as u64);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(nginx.log().len(), 1, "no request for a complete partial");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_errors_carry_a_fetch_error() {
    // The server's file shrank under us: Content-Length fence at open, and a
    // FetchError a caller can get back out of the io::Error for a short body.
    let size = 200_000;
    let Some((nginx, payload)) = setup(size) else {
        return;
    };
    let t = transport();
    let dir = scratch("partial");
    let partial = dir.join("p.part");
    std::fs::write(&partial, &payload[..1000]).unwrap();
    std::fs::write(nginx.root.join("payload.bin"), &payload[..150_000]).unwrap();
    let e = t
        .open_payload(&nginx.url("payload.bin"), size as u64, Some(&partial))
        .expect_err("short");
    assert_eq!(e.kind(), "too_short", "{e}");
    let io = e.clone().into_io();
    assert_eq!(FetchError::from_io(&io), Some(&e));
    // A refused answer does not cost the bytes already on disk.
    assert!(std::fs::read(&partial).unwrap() == payload[..1000]);
    std::fs::remove_dir_all(&dir).unwrap();
}
