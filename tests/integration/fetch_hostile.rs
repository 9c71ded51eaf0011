//! abupdate::fetch against scripted hostile servers on loopback: endless and
//! lying bodies, trickles, broken resumes, redirect tricks, bad TLS. Each
//! server thread ends by itself (bounded writes, bounded time).

use crate::common::tls;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::host::scratch;
use crate::common::hostile_server::{
    answer_wrong_total, head, head_range, read_request, serve_tagged, write_all_capped, Req,
    Server, SERVER_CAP,
};
use crate::common::http::pattern;
use abupdate::fetch::{
    Document, FetchError, PayloadReader, Transport, TransportOptions, WholeAnswer,
};

fn transport(read_timeout: Duration) -> Transport {
    Transport::new(&TransportOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout,
        ..TransportOptions::default()
    })
    .expect("transport")
}

/// A transport that asks a transient failure again `retries` times, at
/// once (10 ms).
fn retrying(retries: u32) -> Transport {
    Transport::new(&TransportOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        retry: abupdate::fetch::RetryPolicy {
            retries,
            first_delay: Duration::from_millis(10),
            ..Default::default()
        },
        ..TransportOptions::default()
    })
    .expect("transport")
}

/// Read to the end in 64 KiB blocks; the bytes got and the error, if any.
fn drain(r: &mut PayloadReader) -> (Vec<u8>, Option<FetchError>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                let fe = FetchError::from_io(&e)
                    .unwrap_or_else(|| panic!("read error without FetchError: {e}"))
                    .clone();
                return (out, Some(fe));
            }
        }
    }
}

/// A body cut before its first byte is asked again; a server that ignores
/// `Range` answers that with the whole file, which is exactly what is
/// still wanted (nothing was handed out yet).
#[test]
fn a_body_cut_before_its_first_byte_is_taken_whole_from_a_server_without_range() {
    let data = Arc::new(pattern(100_000, 3));
    let served = Arc::new(Mutex::new(0usize));
    let (d, n) = (data.clone(), served.clone());
    let server = Server::start(move |_, s| {
        let first = {
            let mut n = n.lock().unwrap();
            *n += 1;
            *n == 1
        };
        head(s, "200 OK", &format!("Content-Length: {}\r\n", d.len()));
        if !first {
            write_all_capped(s, &d);
        }
    });
    let t = retrying(1);
    let mut r = t
        .open_payload(&server.url("/p"), 100_000, None)
        .expect("open");
    let (got, err) = drain(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert!(got == *data, "{} bytes", got.len());
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("range"), Some("bytes=0-"));
}

/// A server of `data` that ignores `Range` (as many caches, CDNs and
/// simple servers do): every answer is `200` with the whole file, its
/// `n`-th (from 0) cut after `cut(n)` bytes.
fn no_range_server(
    data: Arc<Vec<u8>>,
    cut: impl Fn(usize) -> usize + Send + Sync + 'static,
) -> Server {
    let served = Arc::new(Mutex::new(0usize));
    Server::start(move |_, s| {
        let n = {
            let mut n = served.lock().unwrap();
            *n += 1;
            *n - 1
        };
        head(s, "200 OK", &format!("Content-Length: {}\r\n", data.len()));
        write_all_capped(s, &data[..cut(n).min(data.len())]);
    })
}

/// A body cut half-way, resumed against a server that ignores `Range`:
/// the whole answer is taken, its first bytes (those handed out already)
/// read and dropped, and the payload completes in the same call, each
/// byte handed out once and in order, the partial grown by the rest only.
/// What crossed the link is the cut answer plus one whole payload.
#[test]
fn a_body_cut_mid_way_goes_on_from_the_whole_answer_of_a_server_without_range() {
    let data = Arc::new(pattern(500_000, 5));
    let server = no_range_server(data.clone(), |n| match n {
        0 => 200_000,
        _ => usize::MAX,
    });
    let dir = scratch("hostile-no-range-cut");
    let partial = dir.join("p.part");
    let mut r = retrying(1)
        .open_payload(&server.url("/p"), data.len() as u64, Some(&partial))
        .expect("open");
    let (got, err) = drain(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert!(got == *data, "{} bytes, not the payload", got.len());
    assert_eq!(r.bytes_from_network(), 200_000 + data.len() as u64);
    assert_eq!(r.ranges_ignored(), 1);
    drop(r);
    assert!(std::fs::read(&partial).unwrap() == *data);
    let ranges: Vec<_> = server
        .requests()
        .iter()
        .map(|q| q.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranges, [None, Some("bytes=200000-".to_string())]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No loop: once a server ignored `Range`, every further try may cost the
/// whole payload again, so progress no longer forgives a failure. A server
/// that ignores `Range` and cuts each answer a little further on (each
/// try moves the download on by more than the 64 KiB that forgives a cut)
/// is asked at most `retries` more times: what crossed the link stays
/// below (1 + retries) x the payload, and the partial keeps every byte
/// handed out for the next run.
#[test]
fn a_server_without_range_that_keeps_cutting_is_asked_retries_times_not_more() {
    let retries = 3;
    let data = Arc::new(pattern(1_000_000, 6));
    let server = no_range_server(data.clone(), |n| 200_000 + n * 100_000);
    let dir = scratch("hostile-no-range-loop");
    let partial = dir.join("p.part");
    let mut r = retrying(retries)
        .open_payload(&server.url("/p"), data.len() as u64, Some(&partial))
        .expect("open");
    let (got, err) = drain(&mut r);
    let err = err.expect("given up");
    assert_eq!(err.kind(), "network", "{err}");
    let asked = server.requests().len();
    assert_eq!(asked, 1 + retries as usize, "payload requests");
    let fetched = r.bytes_from_network();
    assert!(
        fetched <= (1 + u64::from(retries)) * data.len() as u64,
        "{fetched} bytes fetched"
    );
    // Every answer but the first moved the download on by 100 000 bytes.
    let kept = 200_000 + retries as usize * 100_000;
    assert!(got == data[..kept], "{} bytes handed out", got.len());
    drop(r);
    assert!(std::fs::read(&partial).unwrap() == data[..kept]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `206` whose `Content-Range` is not the rest asked for, after a cut
/// within the call, is still refused (a broken or hostile server): no
/// byte of it is handed out, and the partial keeps exactly what came
/// before for the next run.
#[test]
fn a_206_with_a_wrong_content_range_after_a_cut_is_still_refused() {
    let data = Arc::new(pattern(500_000, 7));
    let served = Arc::new(Mutex::new(0usize));
    let d = data.clone();
    let server = Server::start(move |_, s| {
        let first = std::mem::replace(&mut *served.lock().unwrap(), 1) == 0;
        let size = d.len();
        if first {
            head(s, "200 OK", &format!("Content-Length: {size}\r\n"));
            write_all_capped(s, &d[..200_000]);
            return;
        }
        let from = 7;
        head_range(s, from, size);
        write_all_capped(s, &d[from..]);
    });
    let dir = scratch("hostile-no-range-206");
    let partial = dir.join("p.part");
    let mut r = retrying(2)
        .open_payload(&server.url("/p"), data.len() as u64, Some(&partial))
        .expect("open");
    let (got, err) = drain(&mut r);
    let err = err.expect("refused");
    assert_eq!(err.kind(), "network", "{err}");
    assert!(got == data[..200_000], "{} bytes handed out", got.len());
    assert_eq!(r.ranges_ignored(), 0);
    drop(r);
    assert!(std::fs::read(&partial).unwrap() == data[..200_000]);
    assert_eq!(server.requests().len(), 2, "asked once more, then refused");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// TUF's slow retrieval: a document trickled just above the stall floor
/// (1 KiB per read_timeout), or a chunked body whose trailer never ends,
/// is cut at 10 x read_timeout from the request.
#[test]
fn a_document_must_arrive_whole_within_its_deadline() {
    let read_timeout = Duration::from_millis(300);
    let deadline = read_timeout * abupdate::fetch::DOCUMENT_DEADLINE_READS;
    let trickled = Server::start(|_, s| {
        head(s, "200 OK", "Content-Length: 1000000\r\n");
        let started = Instant::now();
        while started.elapsed() < SERVER_CAP && s.write_all(&[b'x'; 1200]).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let trailers = Server::start(|_, s| {
        head(s, "200 OK", "Transfer-Encoding: chunked\r\n");
        let _ = s.write_all(b"2\r\n{}\r\n0\r\n");
        let started = Instant::now();
        while started.elapsed() < SERVER_CAP && s.write_all(b"X-T: aaaaaaaaaaaaaaaa\r\n").is_ok() {}
    });
    let t = transport(read_timeout);
    for url in [trickled.url("/r.json"), trailers.url("/r.json")] {
        let started = Instant::now();
        let e = t
            .get_document(&url, 1024 * 1024, None)
            .expect_err("never whole in time");
        let took = started.elapsed();
        assert!(
            e.to_string().contains("not complete within 3s"),
            "{url}: {e}"
        );
        assert!(took >= deadline && took < deadline * 3, "{url}: {took:?}");
    }
    // Found from outside (stop 47): each retry had a deadline of its own,
    // so a run with retries held the state lock (retries + 1) deadlines
    // long. The deadline spans the attempts and their waits.
    let t = Transport::new(&TransportOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout,
        retry: abupdate::fetch::RetryPolicy {
            retries: 3,
            first_delay: Duration::from_millis(10),
            ..Default::default()
        },
        ..TransportOptions::default()
    })
    .expect("transport");
    let started = Instant::now();
    let e = t
        .get_document(&trickled.url("/r.json"), 1024 * 1024, None)
        .expect_err("never whole in time");
    let took = started.elapsed();
    assert!(e.to_string().contains("not complete within 3s"), "{e}");
    assert!(took >= deadline && took < deadline * 2, "{took:?}");
}

/// Found from outside: a FleetLock answer (a POST) whose chunked trailer
/// never ends held `health` and `update`, and the state lock, for ever. A
/// POST's whole exchange ends within the documents' deadline too.
#[test]
fn a_post_answer_must_arrive_whole_within_the_document_deadline() {
    let read_timeout = Duration::from_millis(300);
    let deadline = read_timeout * abupdate::fetch::DOCUMENT_DEADLINE_READS;
    let trailers = Server::start(|_, s| {
        head(s, "409 Conflict", "Transfer-Encoding: chunked\r\n");
        let _ = s.write_all(b"2\r\n{}\r\n0\r\n");
        let started = Instant::now();
        while started.elapsed() < SERVER_CAP && s.write_all(b"X-T: aaaaaaaaaaaaaaaa\r\n").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let t = transport(read_timeout);
    let started = Instant::now();
    // The status, and the answer as far as it came: it only explains it.
    let (status, answer) = t
        .post_json(&trailers.url("/v1/pre-reboot"), &[], b"{}", 16 * 1024)
        .expect("the status");
    let took = started.elapsed();
    assert_eq!((status, answer.as_slice()), (409, &b"{}"[..]));
    assert!(took >= deadline && took < deadline * 3, "{took:?}");
}

/// An answer that is not HTTP is the server's fault, not the link's: one
/// request, no retries, kind `network` (it blames no release).
#[test]
fn an_answer_that_is_not_http_is_not_asked_again() {
    let server = Server::start(|_, s| {
        head(s, "200 OK", "Content-Length: 10\r\nContent-Length: 20\r\n");
        let _ = s.write_all(b"0123456789");
    });
    let t = retrying(3);
    let e = t
        .get_document(&server.url("/r.json"), 1024, None)
        .expect_err("conflicting lengths");
    assert!(e.to_string().contains("HTTP protocol error"), "{e}");
    assert_eq!(e.kind(), "network", "{e}");
    assert_eq!(server.requests().len(), 1, "asked again");
}

/// A chunked payload whose trailer never ends: every declared byte is
/// taken and checked, and nothing past its last chunk is read (the HTTP
/// library would read the trailer inside one read, unbounded and unpaced).
#[test]
fn a_chunked_payload_ends_at_its_declared_size_whatever_its_trailer() {
    let data = Arc::new(pattern(50_000, 5));
    let d = data.clone();
    let server = Server::start(move |_, s| {
        head(s, "200 OK", "Transfer-Encoding: chunked\r\n");
        let _ = write!(s, "{:x}\r\n", d.len());
        let _ = s.write_all(&d);
        let _ = s.write_all(b"\r\n0\r\n");
        let started = Instant::now();
        while started.elapsed() < SERVER_CAP && s.write_all(b"X-T: aaaaaaaaaaaaaaaa\r\n").is_ok() {}
    });
    let t = transport(Duration::from_secs(5));
    let started = Instant::now();
    let mut r = t
        .open_payload(&server.url("/p"), 50_000, None)
        .expect("open");
    let (got, err) = drain(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert!(got == *data);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn endless_body_is_too_long_after_size_plus_one() {
    let server = Server::start(|_, s| {
        head(s, "200 OK", "");
        let block = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < SERVER_CAP && s.write_all(&block).is_ok() {}
    });
    let t = transport(Duration::from_secs(5));
    let size = 1024 * 1024 + 3;
    let started = Instant::now();
    let mut r = t.open_payload(&server.url("/p"), size, None).expect("open");
    let (got, err) = drain(&mut r);
    let err = err.expect("endless body must fail");
    assert_eq!(err.kind(), "too_long", "{err}");
    assert!(got.len() as u64 <= size, "never more than size handed out");
    assert_eq!(r.bytes_from_network(), size + 1, "stopped at size + 1");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Same for a document with no Content-Length.
    let started = Instant::now();
    let e = t
        .get_document(&server.url("/r.json"), 64 * 1024, None)
        .expect_err("endless document");
    assert_eq!(e.kind(), "too_long");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: server sent more than the 65536 bytes allowed",
            server.url("/r.json")
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn endless_chunked_document_is_too_long() {
    let server = Server::start(|_, s| {
        head(s, "200 OK", "Transfer-Encoding: chunked\r\n");
        let chunk = format!("1000\r\n{}\r\n", "y".repeat(0x1000));
        let started = Instant::now();
        while started.elapsed() < SERVER_CAP && s.write_all(chunk.as_bytes()).is_ok() {}
    });
    let t = transport(Duration::from_secs(5));
    let e = t
        .get_document(&server.url("/r.json"), 100_000, None)
        .expect_err("endless");
    assert_eq!(e.kind(), "too_long", "{e}");
}

#[test]
fn content_length_beyond_declared_is_refused_before_the_body() {
    // Headers now, body only after 3 s: an error before then proves that
    // the refusal came from the header, not from reading.
    let server = Server::start(|_, s| {
        head(s, "200 OK", "Content-Length: 10485760\r\n");
        std::thread::sleep(Duration::from_secs(3));
        write_all_capped(s, &vec![0u8; 10485760]);
    });
    let t = transport(Duration::from_secs(10));
    let started = Instant::now();
    let e = t
        .open_payload(&server.url("/p"), 1000, None)
        .expect_err("too long");
    assert_eq!(e.kind(), "too_long", "{e}");
    assert!(e.to_string().contains("announced 10485760 bytes"), "{e}");
    let e = t
        .get_document(&server.url("/r.json"), 1 << 20, None)
        .expect_err("too long");
    assert_eq!(e.kind(), "too_long", "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn short_body_is_a_cut_connection() {
    let size = 300_000u64;
    let data = pattern(size as usize, 1);
    let half = data[..150_000].to_vec();
    let half2 = half.clone();
    // Content-Length says size, connection closes half-way.
    let server = Server::start(move |req, s| {
        if req.path == "/cl" {
            head(s, "200 OK", &format!("Content-Length: {size}\r\n"));
        } else {
            head(s, "200 OK", "");
        }
        write_all_capped(s, &half2);
    });
    let t = transport(Duration::from_secs(5));
    for path in ["/cl", "/close"] {
        let url = server.url(path);
        let mut r = t.open_payload(&url, size, None).expect("open");
        let (got, err) = drain(&mut r);
        let err = err.expect("must fail");
        // The server did not announce another size: the connection was
        // cut (worth another try), not a source holding another file.
        assert_eq!(err.kind(), "network", "{path}: {err}");
        assert!(err.is_transient(), "{path}: {err}");
        assert_eq!(
            err.to_string(),
            format!("{url}: ended after 150000 of 300000 bytes")
        );
        assert!(
            got == half,
            "{path}: bytes before the end are the real ones"
        );
    }
}

#[test]
fn trickle_and_silence_hit_the_read_timeout() {
    let server = Server::start(|req, s| {
        head(s, "200 OK", "Content-Length: 1000\r\n");
        if req.path == "/trickle" {
            // One byte per second, for at most 30 s.
            for _ in 0..30 {
                if s.write_all(b"z").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        } else {
            std::thread::sleep(Duration::from_secs(10));
        }
    });
    let t = transport(Duration::from_secs(2));
    for (path, words) in [
        ("/trickle", "stalled"),
        ("/silent", "no data received for 2s"),
    ] {
        let started = Instant::now();
        let mut r = t.open_payload(&server.url(path), 1000, None).expect("open");
        let (_, err) = drain(&mut r);
        let took = started.elapsed();
        let err = err.expect("must time out");
        assert_eq!(err.kind(), "network", "{path}: {err}");
        assert!(err.to_string().contains(words), "{path}: {err}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
            "{path}: took {took:?}"
        );
    }
    // Headers never come: bounded as well.
    let mute = Server::start(|_, _| std::thread::sleep(Duration::from_secs(10)));
    let started = Instant::now();
    let e = t
        .get_document(&mute.url("/r.json"), 1000, None)
        .expect_err("no answer");
    assert_eq!(e.kind(), "network", "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A server of `data` that answers a Range request per `mode`.
fn range_server(data: Arc<Vec<u8>>, mode: &'static str) -> Server {
    let calls = Arc::new(Mutex::new(0u32));
    Server::start(move |req, s| {
        let size = data.len();
        let n = {
            let mut c = calls.lock().unwrap();
            *c += 1;
            *c
        };
        let start = req
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok());
        match (start, mode) {
            (Some(_), "ignore") | (None, _) => {
                head(s, "200 OK", &format!("Content-Length: {size}\r\n"));
                write_all_capped(s, &data);
            }
            (Some(_), "wrong-start") => {
                let from = 7;
                head_range(s, from, size);
                write_all_capped(s, &data[from..]);
            }
            (Some(from), "past-total") => {
                // A range shifted past the end: ends beyond its own total.
                head(
                    s,
                    "206 Partial Content",
                    &format!(
                        "Content-Range: bytes {}-{}/{size}\r\nContent-Length: {}\r\n",
                        from + 4096,
                        size + 4095,
                        size - from
                    ),
                );
                write_all_capped(s, &data[from..]);
            }
            (Some(_), "416") => head(
                s,
                "416 Range Not Satisfiable",
                &format!("Content-Range: bytes */{size}\r\nContent-Length: 0\r\n"),
            ),
            (Some(from), "wrong-total") => answer_wrong_total(s, from, &data),
            (Some(from), "drop-first") if n == 1 => {
                // Headers, then the connection dies (as an idle connection
                // the server timed out would).
                head_range(s, from, size);
            }
            (Some(from), _) => {
                // Correct 206, close-delimited (no Content-Length).
                head(
                    s,
                    "206 Partial Content",
                    &format!("Content-Range: bytes {from}-{}/{size}\r\n", size - 1),
                );
                write_all_capped(s, &data[from..]);
            }
        }
    })
}

struct ResumeOutcome {
    bytes: Vec<u8>,
    err: Option<FetchError>,
    resumed_from: u64,
    from_network: u64,
    restart_reason: Option<String>,
    partial_after: Vec<u8>,
    requests: Vec<Req>,
}

fn resume_with(mode: &'static str, have: usize) -> (Vec<u8>, ResumeOutcome) {
    let data = Arc::new(pattern(500_000, 42));
    let server = range_server(data.clone(), mode);
    let dir = scratch("hostile-partial");
    let partial = dir.join("p.part");
    std::fs::write(&partial, &data[..have]).unwrap();
    let t = transport(Duration::from_secs(5));
    let (bytes, err, resumed_from, from_network, restart_reason) =
        match t.open_payload(&server.url("/p"), data.len() as u64, Some(&partial)) {
            Ok(mut r) => {
                let (bytes, err) = drain(&mut r);
                (
                    bytes,
                    err,
                    r.resumed_from(),
                    r.bytes_from_network(),
                    r.restart_reason().map(str::to_string),
                )
            }
            Err(e) => (Vec::new(), Some(e), 0, 0, None),
        };
    let partial_after = std::fs::read(&partial).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let outcome = ResumeOutcome {
        bytes,
        err,
        resumed_from,
        from_network,
        restart_reason,
        partial_after,
        requests: server.requests(),
    };
    (data.to_vec(), outcome)
}

#[test]
fn resume_with_correct_close_delimited_206() {
    let (data, o) = resume_with("ok", 123_456);
    assert!(o.err.is_none(), "{:?}", o.err);
    assert!(o.bytes == data);
    assert_eq!(o.resumed_from, 123_456);
    assert_eq!(o.from_network, data.len() as u64 - 123_456);
    assert!(o.partial_after == data);
    assert_eq!(o.requests.len(), 1);
    let req = &o.requests[0];
    assert_eq!(req.header("range"), Some("bytes=123456-"));
    assert_eq!(req.header("accept-encoding"), Some("identity"));
    assert!(req
        .header("user-agent")
        .unwrap_or("")
        .starts_with("abupdate/"));
}

/// A resume answered with the whole file (the server ignores `Range`):
/// the partial is kept and replayed, the answer's first bytes (those the
/// partial holds) read and dropped, never appended or handed out twice.
#[test]
fn resume_answered_with_200_keeps_the_partial_and_drops_the_answers_head() {
    let (data, o) = resume_with("ignore", 200_000);
    assert!(o.err.is_none(), "{:?}", o.err);
    assert!(
        o.bytes == data,
        "correct bytes, not old prefix + whole file"
    );
    assert_eq!(o.resumed_from, 200_000);
    assert_eq!(
        o.from_network,
        data.len() as u64,
        "the head crossed the link"
    );
    assert_eq!(o.restart_reason, None);
    assert!(o.partial_after == data);
    assert_eq!(o.requests.len(), 1, "the 200 itself is used");
}

#[test]
fn resume_with_wrong_content_range_start_restarts_from_zero() {
    let (data, o) = resume_with("wrong-start", 200_000);
    assert!(o.err.is_none(), "{:?}", o.err);
    assert!(o.bytes == data, "never mis-assembled");
    assert_eq!(o.resumed_from, 0);
    assert!(o.restart_reason.unwrap().contains("range from 7"));
    assert!(o.partial_after == data);
    let ranges: Vec<_> = o.requests.iter().map(|r| r.header("range")).collect();
    assert_eq!(ranges, [Some("bytes=200000-"), None]);
}

#[test]
fn a_content_range_past_its_total_is_named_as_such_not_as_missing() {
    let (data, o) = resume_with("past-total", 200_000);
    assert!(o.err.is_none(), "{:?}", o.err);
    assert!(o.bytes == data, "never mis-assembled");
    assert_eq!(o.resumed_from, 0);
    let why = o.restart_reason.expect("a restart");
    assert!(
        why.contains("unusable Content-Range: \"bytes 204096-504095/500000\" ends at byte 504095, past the 500000-byte total"),
        "{why}"
    );
    assert!(!why.contains("without"), "{why}");
}

#[test]
fn resume_answered_416_restarts_from_zero() {
    let (data, o) = resume_with("416", 200_000);
    assert!(o.err.is_none(), "{:?}", o.err);
    assert!(o.bytes == data);
    assert_eq!(o.resumed_from, 0);
    assert!(o.partial_after == data);
    assert_eq!(o.requests.len(), 2);
}

#[test]
fn resume_with_wrong_total_is_an_error_and_keeps_the_partial() {
    let (data, o) = resume_with("wrong-total", 200_000);
    let err = o.err.expect("must fail");
    assert_eq!(err.kind(), "too_long", "{err}");
    assert!(o.bytes.is_empty());
    assert!(o.partial_after == data[..200_000], "partial untouched");
}

#[test]
fn resume_survives_a_connection_dropped_during_replay() {
    let (data, o) = resume_with("drop-first", 300_000);
    assert!(o.err.is_none(), "{:?}", o.err);
    assert!(o.bytes == data);
    assert_eq!(o.resumed_from, 300_000);
    assert!(o.partial_after == data);
    let ranges: Vec<_> = o.requests.iter().map(|r| r.header("range")).collect();
    assert_eq!(ranges, [Some("bytes=300000-"), Some("bytes=300000-")]);
}

#[test]
fn a_partial_download_that_is_a_symlink_or_a_hard_link_is_removed_and_its_target_never_written() {
    let data = Arc::new(pattern(500_000, 42));
    let server = range_server(data.clone(), "ok");
    let dir = scratch("hostile-partial-symlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"victim\n").unwrap();
    let partial = dir.join("p.part");
    let t = transport(Duration::from_secs(5));
    // What stood at the partial's name is not used: the whole payload from
    // byte 0, said so, into a file of its own; the bytes it named untouched.
    let starts_over = |what: &str| {
        let mut r = t
            .open_payload(&server.url("/p"), data.len() as u64, Some(&partial))
            .expect("open");
        let (bytes, err) = drain(&mut r);
        assert!(err.is_none() && bytes == *data, "{what}: {err:?}");
        assert_eq!(r.resumed_from(), 0, "{what}");
        assert!(
            r.restart_reason()
                .unwrap_or("")
                .contains("not a regular file of its own"),
            "{what}: {:?}",
            r.restart_reason()
        );
        drop(r);
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim\n", "{what}");
        let meta = std::fs::symlink_metadata(&partial).unwrap();
        assert!(
            meta.is_file(),
            "{what}: the partial is a file of its own now"
        );
        assert!(std::fs::read(&partial).unwrap() == *data, "{what}");
        std::fs::remove_file(&partial).unwrap();
    };
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    starts_over("a symlink");
    // Found from outside: a hard link to the booted slot's image was
    // truncated and written.
    std::fs::hard_link(&victim, &partial).unwrap();
    starts_over("a hard link");
    std::fs::create_dir(&partial).unwrap();
    starts_over("an empty directory");
    // A directory with files in it cannot be removed: an error naming the path.
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("f"), "f").unwrap();
    let e = t
        .open_payload(&server.url("/p"), data.len() as u64, Some(&partial))
        .expect_err("a directory is no partial download");
    assert!(e.to_string().contains(&*partial.to_string_lossy()), "{e}");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A download of `url` (`size` bytes) into `partial`, cut after `n` bytes.
fn cut_after(t: &Transport, url: &str, size: u64, partial: &std::path::Path, n: usize) {
    let mut r = t.open_payload(url, size, Some(partial)).expect("open");
    let mut head_bytes = vec![0u8; n];
    r.read_exact(&mut head_bytes).expect("read the head");
}

/// `r` started over from byte 0, saying `why`, and handed out `new` whole,
/// never spliced onto the head of the object the partial download held.
fn started_over(mut r: PayloadReader, new: &[u8], why: &str) {
    let (bytes, err) = drain(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert!(
        bytes == new,
        "the new object whole, not spliced onto the old head"
    );
    assert_eq!(r.resumed_from(), 0);
    assert!(
        r.restart_reason().unwrap_or("").contains(why),
        "{:?}",
        r.restart_reason()
    );
}

/// A server of one object at `/p` that honours `If-Range` by its ETag, as
/// nginx does: the version in `current` is served (`"v1"`, `"v2"`: other
/// bytes, same length).
fn etag_server(versions: [Arc<Vec<u8>>; 2], current: Arc<Mutex<usize>>) -> Server {
    Server::start(move |req, s| {
        let v = *current.lock().unwrap();
        serve_tagged(req, s, &versions[v], &format!("\"v{}\"", v + 1), None);
    })
}

/// The object at `/p` is replaced during its download: the first answer
/// sends half of `versions[0]` (ETag `"v1"`) and is cut; every later one
/// serves `versions[1]` (`"v2"`), honouring `If-Range` as nginx does.
fn replaced_mid_download(versions: [Arc<Vec<u8>>; 2]) -> Server {
    let answered = Arc::new(Mutex::new(0usize));
    Server::start(move |req, s| {
        let n = std::mem::replace(&mut *answered.lock().unwrap(), 1);
        match n {
            0 => serve_tagged(req, s, &versions[0], "\"v1\"", Some(versions[0].len() / 2)),
            _ => serve_tagged(req, s, &versions[1], "\"v2\"", None),
        }
    })
}

/// The resume after the cut asks `If-Range: "v1"` and gets the whole new
/// object (200): the download ends saying the object changed and starts
/// over, naming the URL without its user info, and the partial download
/// (with its validator) is discarded, so no run splices the two objects.
#[test]
fn an_object_replaced_during_a_download_ends_it_saying_so_and_drops_the_partial() {
    let old = Arc::new(pattern(500_000, 42));
    let new = Arc::new(pattern(500_000, 43));
    let server = replaced_mid_download([old.clone(), new]);
    let dir = scratch("hostile-replaced-mid-download");
    let partial = dir.join("p.part");
    let url = server
        .url("/p")
        .replacen("http://", "http://user:secret@", 1);
    let mut r = retrying(2)
        .open_payload(&url, old.len() as u64, Some(&partial))
        .expect("open");
    let (bytes, err) = drain(&mut r);
    assert!(
        bytes == old[..250_000],
        "the first object's head, then nothing"
    );
    let e = err.expect("the object changed: an error");
    assert!(
        matches!(&e, FetchError::Changed { at: 250_000, validator, .. } if validator == "\"v1\""),
        "{e:?}"
    );
    assert_eq!(e.kind().to_string(), "network");
    let line = e.to_string();
    // Named as every error names a URL: its user info masked.
    let shown = server.url("/p").replacen("http://", "http://***@", 1);
    assert!(line.starts_with(&format!("{shown}: ")), "{line}");
    assert!(!line.contains("secret") && !line.contains("user"), "{line}");
    for says in [
        "the object changed on the server",
        "validator \"v1\" no longer matches",
        "starts over from byte 0",
    ] {
        assert!(line.contains(says), "{line:?} does not say {says:?}");
    }
    drop(r);
    assert_eq!(
        std::fs::metadata(&partial).unwrap().len(),
        0,
        "partial kept"
    );
    assert!(!abupdate::fetch::validator_file(&partial).exists());
    let asked = server.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[1].header("range"), Some("bytes=250000-"));
    assert_eq!(asked[1].header("if-range"), Some("\"v1\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_resume_asks_if_range_and_an_object_replaced_since_comes_back_whole() {
    let old = Arc::new(pattern(500_000, 42));
    let new = Arc::new(pattern(500_000, 43));
    let current = Arc::new(Mutex::new(0));
    let server = etag_server([old.clone(), new.clone()], current.clone());
    let dir = scratch("hostile-if-range");
    let partial = dir.join("p.part");
    let t = transport(Duration::from_secs(5));
    let size = old.len() as u64;
    // A download cut after 200,000 bytes of the first object.
    cut_after(&t, &server.url("/p"), size, &partial, 200_000);
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 200_000);
    // The same object resumes with a 206.
    let mut r = t
        .open_payload(&server.url("/p"), size, Some(&partial))
        .expect("open 2");
    let (bytes, err) = drain(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert!(bytes == *old);
    assert_eq!(r.resumed_from(), 200_000);
    drop(r);
    let asked = server.requests();
    assert_eq!(asked[1].header("range"), Some("bytes=200000-"));
    assert_eq!(asked[1].header("if-range"), Some("\"v1\""));
    // Cut again; then the object is replaced: same length, other bytes.
    std::fs::write(&partial, &old[..300_000]).unwrap();
    *current.lock().unwrap() = 1;
    let r = t
        .open_payload(&server.url("/p"), size, Some(&partial))
        .expect("open 3");
    started_over(r, &new, "the object changed");
    assert!(std::fs::read(&partial).unwrap() == *new);
    assert_eq!(server.requests()[2].header("if-range"), Some("\"v1\""));
    // The next resume names the new object.
    std::fs::write(&partial, &new[..100_000]).unwrap();
    let mut r = t
        .open_payload(&server.url("/p"), size, Some(&partial))
        .expect("open 4");
    let (bytes, err) = drain(&mut r);
    assert!(err.is_none() && bytes == *new, "{err:?}");
    assert_eq!(r.resumed_from(), 100_000);
    assert_eq!(server.requests()[3].header("if-range"), Some("\"v2\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found from outside (stop 47): a server (or a cache) that ignores
/// `If-Range` answered a resume with a range of another object (ETag
/// `"v2"` to `If-Range: "v1"`), and its bytes were spliced onto the
/// partial download's: only the final digest caught it. A range under
/// another validator starts the download over from byte 0.
#[test]
fn a_range_of_another_object_is_not_spliced_onto_a_partial_download() {
    let old = Arc::new(pattern(500_000, 42));
    let new = Arc::new(pattern(500_000, 43));
    let server = etag_server([old.clone(), new.clone()], Arc::new(Mutex::new(0)));
    let dir = scratch("hostile-range-of-another");
    let partial = dir.join("p.part");
    let t = transport(Duration::from_secs(5));
    let size = old.len() as u64;
    cut_after(&t, &server.url("/p"), size, &partial, 200_000);
    let n = new.clone();
    let ignoring = Server::start(move |req, s| {
        let from = req.range_start().unwrap_or(0);
        let tag = "ETag: \"v2\"\r\n";
        match from {
            0 => head(
                s,
                "200 OK",
                &format!("{tag}Content-Length: {}\r\n", n.len()),
            ),
            _ => head(
                s,
                "206 Partial Content",
                &format!(
                    "{tag}Content-Range: bytes {from}-{}/{}\r\nContent-Length: {}\r\n",
                    n.len() - 1,
                    n.len(),
                    n.len() - from
                ),
            ),
        }
        let _ = s.write_all(&n[from..]);
    });
    let r = t
        .open_payload(&ignoring.url("/p"), size, Some(&partial))
        .expect("open 2");
    started_over(r, &new, "the object changed since the partial download");
    let asked = ignoring.requests();
    assert_eq!(asked[0].header("if-range"), Some("\"v1\""));
    assert!(std::fs::read(&partial).unwrap() == *new);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn redirect_loops_and_escapes_are_refused() {
    let server = Server::start(|req, s| {
        let to = match req.path.as_str() {
            "/a" => "/b".to_string(),
            "/b" => "/a".to_string(),
            "/passwd" => "file:///etc/passwd".to_string(),
            "/ftp" => "ftp://127.0.0.1/x".to_string(),
            p if p.starts_with("/hop/") => {
                let n: u32 = p[5..].parse().unwrap_or(0);
                format!("/hop/{}", n + 1)
            }
            p if p.starts_with("/ok3/") => {
                let n: u32 = p[5..].parse().unwrap_or(0);
                if n < 3 {
                    format!("/ok3/{}", n + 1)
                } else {
                    head(s, "200 OK", "Content-Length: 2\r\n");
                    let _ = s.write_all(b"{}");
                    return;
                }
            }
            _ => String::new(),
        };
        head(
            s,
            "302 Found",
            &format!("Location: {to}\r\nContent-Length: 0\r\n"),
        );
    });
    let t = transport(Duration::from_secs(5));

    let e = t
        .get_document(&server.url("/a"), 100, None)
        .expect_err("loop");
    assert_eq!(e.kind(), "refused");
    assert!(e.to_string().contains("redirect loop"), "{e}");

    let e = t
        .open_payload(&server.url("/passwd"), 100, None)
        .expect_err("file");
    assert_eq!(e.kind(), "refused");
    assert!(e.to_string().ends_with("redirect to file: refused"), "{e}");
    let e = t
        .get_document(&server.url("/passwd"), 100, None)
        .expect_err("file");
    assert!(e.to_string().ends_with("redirect to file: refused"), "{e}");

    let e = t
        .get_document(&server.url("/ftp"), 100, None)
        .expect_err("ftp");
    assert!(e.to_string().ends_with("redirect to ftp: refused"), "{e}");

    let before = server.requests().len();
    let e = t
        .get_document(&server.url("/hop/0"), 100, None)
        .expect_err("too many");
    assert!(e.to_string().contains("more than 5 redirects"), "{e}");
    assert_eq!(server.requests().len() - before, 6, "first + 5 followed");

    let doc = t
        .get_document(&server.url("/ok3/0"), 100, None)
        .expect("3 hops");
    assert!(matches!(doc, Document::Fetched { ref body, .. } if body == b"{}"));
}

#[test]
fn status_errors_and_refused_connections() {
    let server = Server::start(|_, s| head(s, "500 Oops", "Content-Length: 0\r\n"));
    let t = transport(Duration::from_secs(5));
    let url = server.url("/r.json");
    let e = t.get_document(&url, 100, None).expect_err("500");
    assert_eq!(e.to_string(), format!("{url}: HTTP 500"));
    assert_eq!(e.kind(), "http_status");

    // Nobody listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = t
        .get_document(&format!("http://127.0.0.1:{port}/r.json"), 100, None)
        .expect_err("refused");
    assert_eq!(e.kind(), "network", "{e}");
    assert!(e.to_string().contains("connection refused"), "{e}");

    let e = t
        .get_document("gopher://127.0.0.1/x", 100, None)
        .expect_err("scheme");
    assert_eq!(e.kind(), "refused");
}

#[test]
fn https_to_a_server_speaking_garbage_is_a_tls_error() {
    // Not the scripted Server: it waits for a request head, and a TLS
    // ClientHello has none. Answer the raw connection at once with plain HTTP.
    let raw = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = raw.local_addr().unwrap().port();
    let garbage = std::thread::spawn(move || {
        if let Ok((mut s, _)) = raw.accept() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let t = transport(Duration::from_secs(3));
    let url = format!("https://127.0.0.1:{port}/r.json");
    let e = t.get_document(&url, 100, None).expect_err("garbage TLS");
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(e.to_string().starts_with(&format!("{url}: TLS: ")), "{e}");
    let _ = garbage.join();
}

#[test]
fn tls_unknown_ca_fails_and_ca_file_fixes_it() {
    let dir = scratch("pki");
    let Some(ca) = tls::make_pki(&dir) else {
        eprintln!("SKIP: openssl CLI not usable; s_server TLS test not run");
        return;
    };
    let doc = br#"{"format":1}"#;
    std::fs::write(dir.join("release.json"), doc).unwrap();
    let payload = pattern(100_000, 9);
    std::fs::write(dir.join("p.bin"), &payload).unwrap();
    let server = tls::TlsServer::start(&dir);
    let port = server.port;
    let url = format!("https://127.0.0.1:{port}/release.json");

    let t = transport(Duration::from_secs(5));
    let e = t.get_document(&url, 1000, None).expect_err("unknown CA");
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    let trusting = Transport::new(&TransportOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ca_file: Some(ca.clone()),
        ..TransportOptions::default()
    })
    .expect("transport with CA");
    let got = trusting.get_document(&url, 1000, None).expect("trusted");
    assert!(
        matches!(got, Document::Fetched { ref body, .. } if body == doc),
        "{got:?}"
    );
    let mut r = trusting
        .open_payload(&format!("https://127.0.0.1:{port}/p.bin"), 100_000, None)
        .expect("payload over TLS");
    let (bytes, err) = drain(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert!(bytes == payload);

    // A CA file with no certificate in it: every https request fails
    // before its handshake, naming the file.
    std::fs::write(dir.join("empty.pem"), "nothing here\n").unwrap();
    let e = Transport::new(&TransportOptions {
        ca_file: Some(dir.join("empty.pem")),
        ..TransportOptions::default()
    })
    .expect("transport")
    .get_document(&url, 1000, None)
    .expect_err("empty CA file");
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(
        e.to_string().contains("empty.pem holds no certificate"),
        "{e}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The webhook, an https health check and the Prometheus API are clients
/// too: each trusts the host's roots (`[update] ca_file`), and an unknown
/// issuer is an error of that client, never a panic (ureq's built-in roots
/// are not compiled in: an agent left on its default aborted the process).
#[test]
fn every_https_client_trusts_the_ca_file_and_an_unknown_issuer_is_an_error() {
    let dir = scratch("pki-clients");
    let Some(ca) = tls::make_pki(&dir) else {
        eprintln!("SKIP: openssl CLI not usable; s_server TLS test not run");
        return;
    };
    std::fs::write(dir.join("ok"), "fine\n").unwrap();
    let server = tls::TlsServer::start(&dir);

    let check = abupdate::health::Check::Http(server.url("/ok"));
    let system_roots = abupdate::fetch::trust_roots(None, &abupdate::fetch::system_ca_bundles());
    let untrusted = abupdate::health::run_check(&check, Duration::from_secs(5), &system_roots);
    assert!(
        !untrusted.passed && untrusted.detail.contains("UnknownIssuer"),
        "{untrusted:?}"
    );
    let ca_roots = abupdate::fetch::trust_roots(Some(&ca), &[]);
    let trusted = abupdate::health::run_check(&check, Duration::from_secs(5), &ca_roots);
    assert!(trusted.passed, "{trusted:?}");

    let event = abupdate::report::Event {
        host: "h".into(),
        compatible: "c".into(),
        release: Some("2.0".into()),
        build: None,
        booted_slot: Some("B".into()),
        booted_version: Some("2.0".into()),
        outcome: "committed".into(),
        error_kind: None,
        message: None,
        time: 0,
    };
    let mut webhook = abupdate::config::Report {
        textfile: None,
        webhook: Some(server.url("/report")),
        webhook_timeout: Duration::from_secs(5),
        webhook_attempts: 1,
        labels: Default::default(),
        ca_file: None,
        ca_bundles: abupdate::fetch::system_ca_bundles(),
    };
    let deadline = || Instant::now() + Duration::from_secs(5);
    let e = abupdate::report::post_webhook(&webhook, &event, deadline()).expect_err("unknown CA");
    assert!(e.contains("UnknownIssuer"), "{e}");
    // Trusted, the handshake passes (`s_server -WWW` has no POST: any
    // answer but a TLS failure shows the roots were used).
    webhook.ca_file = Some(ca.clone());
    if let Err(e) = abupdate::report::post_webhook(&webhook, &event, deadline()) {
        assert!(!e.contains("UnknownIssuer") && !e.contains("TLS"), "{e}");
    }

    use abupdate::fleet::prometheus::{roots, Client};
    let prometheus =
        Client::new(&server.url(""), Duration::from_secs(5), &roots(None)).expect("client");
    let e = prometheus
        .query("up", 0)
        .expect_err("unknown CA")
        .to_string();
    assert!(e.contains("UnknownIssuer"), "{e}");
    // `fleet --prometheus-ca`: trusted, the handshake passes.
    let prometheus =
        Client::new(&server.url(""), Duration::from_secs(5), &roots(Some(&ca))).expect("client");
    if let Err(e) = prometheus.query("up", 0) {
        let e = e.to_string();
        assert!(!e.contains("UnknownIssuer") && !e.contains("TLS"), "{e}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_option_is_used_except_for_loopback() {
    // The "proxy" is a loopback server that answers itself: nothing leaves
    // the machine. ureq 3 tunnels plain http through an HTTP proxy with
    // CONNECT too (no absolute-form requests), so that is what it sees.
    let tunneled = Arc::new(Mutex::new(Vec::new()));
    let tunneled2 = tunneled.clone();
    let proxy = Server::start(move |req, s| {
        if req.path != "updates.example.invalid:80" {
            head(s, "403 Forbidden", "Content-Length: 0\r\n");
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        if let Some(inner) = read_request(s) {
            tunneled2.lock().unwrap().push(inner.path);
            head(s, "200 OK", "Content-Length: 7\r\n");
            let _ = s.write_all(b"proxied");
        }
    });
    let origin = Server::start(|_, s| {
        head(s, "200 OK", "Content-Length: 6\r\n");
        let _ = s.write_all(b"direct");
    });
    let t = Transport::new(&TransportOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        proxy: Some(format!("http://127.0.0.1:{}", proxy.port)),
        ..TransportOptions::default()
    })
    .expect("transport");

    let doc = t
        .get_document("http://updates.example.invalid/edge/r.json", 100, None)
        .expect("via proxy");
    assert!(matches!(doc, Document::Fetched { ref body, .. } if body == b"proxied"));
    // https goes through the proxy as CONNECT; this proxy refuses it.
    let e = t
        .get_document("https://updates.example.invalid/edge/r.json", 100, None)
        .expect_err("CONNECT refused");
    assert_eq!(e.kind(), "network", "{e}");
    let seen: Vec<String> = proxy.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        seen,
        ["updates.example.invalid:80", "updates.example.invalid:443"]
    );
    assert_eq!(*tunneled.lock().unwrap(), ["/edge/r.json"]);

    let doc = t
        .get_document(&origin.url("/r.json"), 100, None)
        .expect("loopback direct");
    assert!(matches!(doc, Document::Fetched { ref body, .. } if body == b"direct"));
    assert_eq!(proxy.requests().len(), 2, "loopback bypasses the proxy");
}

/// A bounded range answered with the whole file (the server ignores
/// `Range`): taken from it when the caller takes such an answer (a frame
/// fetched once more: the bytes before the range read and dropped and
/// counted, exactly the range handed out, the reader ended at its last
/// byte, the rest never read); refused with nothing read when it does not
/// (a delta's segment, which would cost the whole file each).
#[test]
fn a_range_answered_with_the_whole_file_is_taken_from_it_only_when_the_caller_takes_it() {
    let data = Arc::new(pattern(4 << 20, 7));
    let whole = data.clone();
    let srv = Server::start(move |_, s| {
        head(s, "200 OK", &format!("Content-Length: {}\r\n", whole.len()));
        write_all_capped(s, &whole);
    });
    let t = transport(Duration::from_secs(5));
    let (offset, length) = (3u64 << 20, 1000u64);
    let mut r = t
        .open_range(
            &srv.url("/p"),
            offset,
            length,
            WholeAnswer::HeadDropped,
            None,
        )
        .expect("a whole answer taken");
    let mut got = Vec::new();
    r.read_to_end(&mut got).expect("the range");
    assert!(
        got == data[offset as usize..(offset + length) as usize],
        "other bytes than the range"
    );
    assert_eq!((r.ranges_ignored(), r.bytes_dropped()), (1, offset));
    match t.open_range(&srv.url("/p"), offset, length, WholeAnswer::Refused, None) {
        Err(FetchError::RangeIgnored { detail, .. }) => assert_eq!(
            detail,
            format!(
                "HTTP 200 with the whole file to bytes={offset}-{}",
                offset + length - 1
            )
        ),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a whole answer taken for a range that refuses it"),
    }
}
