use super::location::{parse_location, remove_dot_segments, url_join, Loc};
use super::payload::{parse_content_range, validator_of};
use super::*;
use super::{http_date, redact, sibling, via_mirror};
use crate::testutil::TempDir;

// Long on purpose: a table, one row per reference form.
#[test]
fn resolve_table() {
    let ok: &[(&str, &str, &str)] = &[
        // relative onto the manifest's directory
        (
            "https://u.example/edge/stable/release.json",
            "rootfs.img.zst",
            "https://u.example/edge/stable/rootfs.img.zst",
        ),
        (
            "https://u.example/edge/stable/release.json",
            "./img/rootfs.img",
            "https://u.example/edge/stable/img/rootfs.img",
        ),
        // `..` escaping is plain URL semantics
        (
            "https://u.example/edge/stable/release.json",
            "../images/rootfs.img",
            "https://u.example/edge/images/rootfs.img",
        ),
        (
            "http://u.example/a/release.json",
            "../../../x.img",
            "http://u.example/x.img",
        ),
        // query kept, fragment dropped, manifest's query not inherited
        (
            "http://u.example/a/release.json?token=1",
            "x.img?sig=2#frag",
            "http://u.example/a/x.img?sig=2",
        ),
        // RFC 3986 5.2: a reference without a query does not inherit the
        // manifest's (a presigned or per-object token is not the image's)
        (
            "http://u.example/a/release.json?token=1",
            "x.img",
            "http://u.example/a/x.img",
        ),
        // the manifest URL's fragment plays no part
        (
            "http://u.example/a/release.json#frag",
            "x.img",
            "http://u.example/a/x.img",
        ),
        // same host: its user info goes with the path (RFC 3986 5.2.2)
        (
            "http://user:pw@u.example/a/release.json",
            "x.img",
            "http://user:pw@u.example/a/x.img",
        ),
        // characters a URL cannot carry raw are escaped
        (
            "http://u.example/a/release.json",
            "root fs.img",
            "http://u.example/a/root%20fs.img",
        ),
        // absolute http(s) from anywhere, scheme normalised
        (
            "https://u.example/a/release.json",
            "HTTP://cdn.example/x/../y.img",
            "http://cdn.example/y.img",
        ),
        (
            "/media/usb/release.json",
            "https://cdn.example/y.img",
            "https://cdn.example/y.img",
        ),
        // network-path reference is an absolute http URL on another host
        (
            "https://u.example/a/release.json",
            "//cdn.example/y.img",
            "https://cdn.example/y.img",
        ),
        // file: manifest: URL semantics, stays file:
        (
            "file:///media/usb/rel/release.json",
            "rootfs.img",
            "file:///media/usb/rel/rootfs.img",
        ),
        (
            "file:///media/usb/rel/release.json",
            "../img/rootfs.img",
            "file:///media/usb/img/rootfs.img",
        ),
        (
            "file:///media/usb/release.json",
            "file:///mnt/other/rootfs.img",
            "file:///mnt/other/rootfs.img",
        ),
        // local path manifest
        (
            "/media/usb/release.json",
            "rootfs.img",
            "/media/usb/rootfs.img",
        ),
        (
            "/media/usb/rel/release.json",
            "../rootfs.img",
            "/media/usb/rel/../rootfs.img",
        ),
        (
            "/media/usb/release.json",
            "/srv/images/rootfs.img",
            "/srv/images/rootfs.img",
        ),
        ("release.json", "rootfs.img", "rootfs.img"),
        (
            "/media/usb/release.json",
            "file:///srv/rootfs.img",
            "file:///srv/rootfs.img",
        ),
    ];
    for (base, reference, want) in ok {
        match resolve(base, reference) {
            Ok(got) => assert_eq!(&got, want, "resolve({base:?}, {reference:?})"),
            Err(e) => panic!("resolve({base:?}, {reference:?}) failed: {e}"),
        }
    }

    let refused: &[(&str, &str)] = &[
        // a remote manifest must never name a local file
        ("https://u.example/a/release.json", "file:///etc/shadow"),
        ("http://u.example/a/release.json", "FILE:///etc/shadow"),
        ("http://u.example/a/release.json", "/etc/shadow"),
        // other schemes, from anywhere
        ("https://u.example/a/release.json", "ftp://u.example/x.img"),
        ("/media/usb/release.json", "ftp://u.example/x.img"),
        ("https://u.example/a/release.json", "data:text/plain,hi"),
        ("https://u.example/a/release.json", ""),
        // a file URL for another host cannot be read
        ("/media/usb/release.json", "file://nas/x.img"),
        // the manifest location itself is checked
        ("gopher://u.example/release.json", "x.img"),
    ];
    for (base, reference) in refused {
        match resolve(base, reference) {
            Ok(got) => panic!("resolve({base:?}, {reference:?}) = {got:?}, expected refusal"),
            Err(e) => assert_eq!(e.kind(), "refused", "{e}"),
        }
    }
}

#[test]
fn dot_segments_per_rfc3986() {
    // Examples from RFC 3986 section 5.4 (normal and abnormal).
    let base = "http://a/b/c/d;p?q";
    let table = [
        ("g", "http://a/b/c/g"),
        ("./g", "http://a/b/c/g"),
        ("g/", "http://a/b/c/g/"),
        ("/g", "http://a/g"),
        ("//g", "http://g"),
        ("?y", "http://a/b/c/d;p?y"),
        ("g?y", "http://a/b/c/g?y"),
        (";x", "http://a/b/c/;x"),
        ("", "http://a/b/c/d;p?q"),
        (".", "http://a/b/c/"),
        ("./", "http://a/b/c/"),
        ("..", "http://a/b/"),
        ("../", "http://a/b/"),
        ("../g", "http://a/b/g"),
        ("../..", "http://a/"),
        ("../../g", "http://a/g"),
        ("../../../g", "http://a/g"),
        ("/./g", "http://a/g"),
        ("/../g", "http://a/g"),
        ("g.", "http://a/b/c/g."),
        ("..g", "http://a/b/c/..g"),
        ("./../g", "http://a/b/g"),
        ("g/./h", "http://a/b/c/g/h"),
        ("g/../h", "http://a/b/c/h"),
    ];
    for (reference, want) in table {
        assert_eq!(url_join(base, reference), want, "{reference:?}");
    }
    assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
    assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
}

#[test]
fn locations_classified() {
    assert_eq!(
        parse_location("/media/usb/release.json"),
        Ok(Loc::File("/media/usb/release.json".into()))
    );
    assert_eq!(
        parse_location("file:///media/usb/my%20release.json"),
        Ok(Loc::File("/media/usb/my release.json".into()))
    );
    assert_eq!(
        parse_location("file://localhost/x"),
        Ok(Loc::File("/x".into()))
    );
    assert_eq!(parse_location("file:/x"), Ok(Loc::File("/x".into())));
    assert_eq!(
        parse_location("HTTPS://h:8443/r.json#x"),
        Ok(Loc::Http("https://h:8443/r.json".into()))
    );
    for bad in [
        "ftp://h/x",
        "file://remote/x",
        "file:relative",
        "http:///nohost",
        "",
    ] {
        let e = parse_location(bad).expect_err(bad);
        assert_eq!(e.kind(), "refused", "{bad}: {e}");
    }
}

#[test]
fn content_range_parsing() {
    assert_eq!(
        parse_content_range("bytes 100-199/200"),
        Ok((100, 199, Some(200)))
    );
    assert_eq!(parse_content_range("bytes 0-0/*"), Ok((0, 0, None)));
    // What is wrong is said, not "no Content-Range".
    assert_eq!(
        parse_content_range("bytes 5-4/10"),
        Err("\"bytes 5-4/10\" ends at byte 4, before it starts at 5".into())
    );
    assert_eq!(
        parse_content_range("bytes 5-10/10"),
        Err("\"bytes 5-10/10\" ends at byte 10, past the 10-byte total".into())
    );
    for bad in ["bytes */10", "items 1-2/3", "bytes 1-2", "bytes a-2/3"] {
        assert_eq!(
            parse_content_range(bad),
            Err(format!("{bad:?} is not \"bytes FIRST-LAST/TOTAL\"")),
            "{bad}"
        );
    }
}

#[test]
fn errors_are_one_line_and_name_the_location() {
    let cases = [
        (
            FetchError::TooLong {
                location: "http://h/r.json".into(),
                limit: 1048576,
                announced: None,
            },
            "http://h/r.json: server sent more than the 1048576 bytes allowed",
            "too_long",
        ),
        (
            FetchError::HttpStatus {
                location: "http://h/r.json".into(),
                status: 503,
                retry_after: None,
            },
            "http://h/r.json: HTTP 503",
            "http_status",
        ),
        (
            FetchError::TooShort {
                location: "http://h/p".into(),
                got: 123,
                expected: 456,
                announced: false,
            },
            "http://h/p: ended after 123 of 456 bytes",
            // A cut connection, not a source holding another file.
            "network",
        ),
        (
            FetchError::TooShort {
                location: "http://h/p".into(),
                got: 123,
                expected: 456,
                announced: true,
            },
            "http://h/p: server announced only 123 of 456 bytes",
            "too_short",
        ),
        (
            FetchError::NotFound {
                location: "http://h/p".into(),
                status: Some(410),
            },
            "http://h/p: not found (HTTP 410)",
            "not_found",
        ),
        (
            FetchError::HttpStatus {
                location: "http://h/p".into(),
                status: 429,
                retry_after: Some(Duration::from_secs(120)),
            },
            "http://h/p: HTTP 429 (the server asks to retry after 120s)",
            "http_status",
        ),
        (
            FetchError::Refused {
                location: "http://h/p".into(),
                reason: "redirect to file: refused".into(),
            },
            "http://h/p: redirect to file: refused",
            "refused",
        ),
    ];
    for (err, text, kind) in cases {
        assert_eq!(err.to_string(), text);
        assert_eq!(err.kind(), kind);
        let io = err.clone().into_io();
        assert_eq!(FetchError::from_io(&io), Some(&err));
    }
}

/// A missing local payload is `not_found`, as the error-kind table and
/// a 404 say (it was `io`, which read as a fault of the host's disk).
#[test]
fn a_missing_local_payload_is_not_found_like_a_404() {
    let t = Transport::new(&TransportOptions::default()).unwrap();
    let dir = TempDir::new("fetch-missing");
    let missing = dir.join("missing.zst");
    for loc in [
        missing.display().to_string(),
        format!("file://{}", missing.display()),
    ] {
        let e = t.open_payload(&loc, 1, None).unwrap_err();
        assert_eq!(e.kind(), "not_found", "{loc}: {e}");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
}

/// A frame read once more from a local payload (`open_range` with the
/// payload's validator) comes only from the file its bytes were read
/// from: another file renamed there, or the same rewritten, is refused
/// with nothing read, as an HTTP object under another validator is.
#[test]
fn a_range_of_a_local_file_is_taken_only_from_the_file_first_read() {
    let dir = TempDir::new("fetch-local-identity");
    let path = dir.join("p.bin");
    std::fs::write(&path, vec![7u8; 1000]).unwrap();
    let t = Transport::new(&TransportOptions::default()).unwrap();
    let loc = path.to_str().unwrap();
    let opened = t.open_payload(loc, 1000, None).unwrap();
    let was = opened
        .validator()
        .expect("a local file's identity")
        .to_string();
    let range = |if_range: Option<&str>| {
        let mut out = Vec::new();
        t.open_range(loc, 10, 5, WholeAnswer::Refused, if_range)
            .and_then(|mut r| {
                r.read_to_end(&mut out).map_err(|e| FetchError::Io {
                    location: loc.into(),
                    detail: e.to_string(),
                })
            })
            .map(|_| out)
    };
    assert_eq!(range(Some(&was)).unwrap(), vec![7u8; 5]);
    // Another file of the same length renamed over it.
    let other = dir.join("p.new");
    std::fs::write(&other, vec![8u8; 1000]).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let e = range(Some(&was)).unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert!(e.to_string().contains("the file changed"), "{e}");
    // Without a validator the range is read as it is now.
    assert_eq!(range(None).unwrap(), vec![8u8; 5]);
    // The same file rewritten in place, its modification time then set
    // back (`touch -r`, `cp -p`): the change time still moved.
    let now = t.open_payload(loc, 1000, None).unwrap();
    let was = now.validator().unwrap().to_string();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &[9u8; 1000]).unwrap();
    f.set_modified(modified).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
    let e = range(Some(&was)).unwrap_err();
    assert!(e.to_string().contains("the file changed"), "{e}");
}

/// A block device (a payload copied to a raw partition) is read again as a
/// file is: its length is the device's (`st_size` is 0), and its identity
/// holds while it is the same device. Needs root and `losetup` (a loop
/// device over a file); says SKIP otherwise. A payload on a device larger
/// than it is read to its own end.
#[test]
fn a_range_of_a_block_device_is_read_with_the_device_length() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: not root; the block-device range test needs losetup");
        return;
    }
    let dir = TempDir::new("fetch-local-blockdev");
    let backing = dir.join("payload.raw");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&backing, &bytes).unwrap();
    let Ok(out) = std::process::Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&backing)
        .output()
    else {
        eprintln!("SKIP: no losetup; the block-device range test not run");
        return;
    };
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let read = || -> Result<Vec<u8>, FetchError> {
        let t = Transport::new(&TransportOptions::default()).unwrap();
        let opened = t.open_payload(&dev, 8192, None)?;
        let was = opened.validator().map(str::to_string);
        let mut out = Vec::new();
        let mut r = t.open_range(&dev, 8000, 192, WholeAnswer::Refused, was.as_deref())?;
        r.read_to_end(&mut out).map_err(|e| FetchError::Io {
            location: dev.clone(),
            detail: e.to_string(),
        })?;
        let past = t.open_range(&dev, 8000, 193, WholeAnswer::Refused, was.as_deref());
        assert!(
            matches!(past, Err(ref e) if e.kind() == "too_short"),
            "{:?}",
            past.err()
        );
        // A payload shorter than its device: the device's length is its
        // capacity, and what follows the payload there is not read.
        let mut head = Vec::new();
        t.open_payload(&dev, 4096, None)?
            .read_to_end(&mut head)
            .map_err(|e| FetchError::Io {
                location: dev.clone(),
                detail: e.to_string(),
            })?;
        assert_eq!(head, bytes[..4096]);
        Ok(out)
    };
    let got = read();
    let _ = std::process::Command::new("losetup")
        .arg("-d")
        .arg(&dev)
        .status();
    assert_eq!(got.unwrap(), bytes[8000..]);
}

/// A pipe's bytes cannot be read again: a range of one is refused at once,
/// not left waiting for a writer (the diagnosis of a failing medium would
/// hang with the state lock held).
#[test]
fn a_range_of_a_pipe_is_refused_without_waiting_for_a_writer() {
    let dir = TempDir::new("fetch-local-fifo");
    let fifo = dir.join("p.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let loc = fifo.display().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = Transport::new(&TransportOptions::default()).unwrap();
        let _ = tx.send(
            t.open_range(&loc, 0, 1, WholeAnswer::Refused, None)
                .map(|_| ()),
        );
    });
    let e = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("open_range of a pipe still waits for a writer after 10 s")
        .expect_err("a pipe was read from again");
    assert_eq!(e.kind(), "io", "{e}");
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

/// A payload streamed through a pipe, resumed after what the slot holds:
/// a pipe cannot seek, so the bytes before the start are read and dropped
/// (as a server's whole answer to a Range is); a pipe that ends before the
/// start is cut, as one that ends before its end is, naming how many bytes
/// came.
#[test]
fn a_payload_through_a_pipe_resumes_by_dropping_the_bytes_the_slot_holds() {
    let dir = TempDir::new("fetch-local-fifo-resume");
    let fifo = dir.join("rootfs.img.zst");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for (sent, start) in [(payload.len(), 60_000u64), (40_000, 60_000)] {
        // A reader of ours holds the pipe (and what is written into it)
        // until the payload's open, whenever the writer is done.
        let (hold, _) = crate::files::open_stream(&fifo).unwrap();
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let bytes = payload[..sent].to_vec();
        // Its error (no reader left: the payload's open failed) is the
        // assertion's below, not a hang of the test.
        let feed = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut writer, &bytes);
        });
        let loc = fifo.display().to_string();
        let size = payload.len() as u64;
        let got = crate::testutil::within_5s(move || {
            let t = Transport::new(&TransportOptions::default()).unwrap();
            let mut r = t
                .open_payload_from(&loc, size, start)
                .map_err(|e| (e.kind().to_string(), e.to_string()))?;
            let mut out = Vec::new();
            r.read_to_end(&mut out)
                .map_err(|e| ("io".to_string(), e.to_string()))?;
            Ok::<_, (String, String)>(out)
        });
        drop(hold);
        feed.join().unwrap();
        match (sent, got) {
            (100_000, Ok(rest)) => assert_eq!(rest, payload[start as usize..], "from {start} on"),
            (40_000, Err((kind, e))) => {
                // Cut, as a stream that ends early is: not the release's fault.
                assert_eq!(kind, "network", "{e}");
                assert!(e.contains("ended after 40000 of 100000"), "{e}");
            }
            (sent, other) => panic!("{sent} bytes sent: {other:?}"),
        }
    }
}

#[test]
fn local_payload_size_checks() {
    let dir = TempDir::new("fetch-unit");
    let path = dir.join("p.bin");
    std::fs::write(&path, vec![7u8; 1000]).unwrap();
    let t = Transport::new(&TransportOptions::default()).unwrap();
    let loc = path.to_str().unwrap();

    let mut out = Vec::new();
    let mut r = t.open_payload(loc, 1000, None).unwrap();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, vec![7u8; 1000]);
    assert_eq!(r.bytes_from_network(), 0);

    let url = format!("file://{loc}");
    let mut r = t.open_payload(&url, 1000, None).unwrap();
    out.clear();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out.len(), 1000);

    assert_eq!(
        t.open_payload(loc, 999, None).unwrap_err().kind(),
        "too_long"
    );
    assert_eq!(
        t.open_payload(loc, 1001, None).unwrap_err().kind(),
        "too_short"
    );

    // Documents: whole, capped, and NotFound for a missing file.
    match t.get_document(loc, 1000, None).unwrap() {
        Document::Fetched {
            body, validators, ..
        } => {
            assert_eq!(body.len(), 1000);
            assert_eq!(validators, Validators::default());
        }
        other => panic!("{other:?}"),
    }
    let e = t.get_document(loc, 999, None).unwrap_err();
    assert_eq!(e.kind(), "too_long", "{e}");
    assert_eq!(
        t.get_document(&format!("{loc}.missing"), 10, None).unwrap(),
        Document::NotFound
    );
}

#[test]
fn stall_guard_trips_on_trickle_not_on_silence_or_speed() {
    struct Trickle(u32);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Ok(0);
            }
            self.0 -= 1;
            std::thread::sleep(Duration::from_millis(30));
            buf[0] = 1;
            Ok(1)
        }
    }
    let mut g = StallGuard::new(Trickle(100), Duration::from_millis(100), "t");
    let mut buf = [0u8; 16];
    let err = loop {
        match g.read(&mut buf) {
            Ok(0) => panic!("trickle not caught"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let fe = FetchError::from_io(&err).expect("FetchError inside");
    assert_eq!(fe.kind(), "network");
    assert!(fe.to_string().contains("stalled"), "{fe}");

    // A fast source is never flagged.
    let data = vec![0u8; 1 << 20];
    let mut g = StallGuard::new(&data[..], Duration::from_millis(50), "t");
    let mut sink = Vec::new();
    g.read_to_end(&mut sink).unwrap();
    assert_eq!(sink.len(), data.len());
}

#[test]
fn no_proxy_matching() {
    let list: Vec<String> = ["example.net", ".corp.test", "10.1.2.3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(no_proxy_matches(&list, "example.net"));
    assert!(no_proxy_matches(&list, "cdn.example.net"));
    assert!(no_proxy_matches(&list, "a.corp.test"));
    assert!(no_proxy_matches(&list, "corp.test"));
    assert!(no_proxy_matches(&list, "10.1.2.3"));
    assert!(!no_proxy_matches(&list, "badexample.net"));
    assert!(!no_proxy_matches(&list, "example.net.evil.test"));
    assert!(!no_proxy_matches(&list, "10.1.2.33"));
    assert!(no_proxy_matches(&["*".to_string()], "anything"));
    assert!(!no_proxy_matches(&[], "anything"));
}

#[test]
fn unusable_urls_are_refused_not_sent() {
    let t = Transport::new(&TransportOptions {
        proxy: Some(String::new()),
        ..TransportOptions::default()
    })
    .unwrap();
    let e = t
        .get_document("http://127.0.0.1:1/has space.json", 10, None)
        .unwrap_err();
    assert_eq!(e.kind(), "refused", "{e}");
}

#[test]
fn signature_urls_append_to_the_path_keep_the_query_drop_the_fragment() {
    let table = [
        (
            "http://h/rel/release.json?token=abc",
            ".minisig",
            "http://h/rel/release.json.minisig?token=abc",
        ),
        (
            "http://h/rel/release.json#frag",
            ".minisig",
            "http://h/rel/release.json.minisig",
        ),
        (
            "HTTPS://u:p@h:8443/r.json?a=1&b=2#x",
            ".2.minisig",
            "https://u:p@h:8443/r.json.2.minisig?a=1&b=2",
        ),
        ("http://h?x=1", ".minisig", "http://h/.minisig?x=1"),
        (
            "file:///media/usb/release.json",
            ".minisig",
            "file:///media/usb/release.json.minisig",
        ),
        (
            "/media/usb/release#1.json",
            ".minisig",
            "/media/usb/release#1.json.minisig",
        ),
    ];
    for (location, suffix, want) in table {
        assert_eq!(sibling(location, suffix).as_deref(), Ok(want), "{location}");
    }
    let e = sibling("ftp://h/r.json", ".minisig").unwrap_err();
    assert_eq!(e.kind(), "refused", "{e}");
}

#[test]
fn mirror_takes_the_origin_path_and_query_not_its_user_info() {
    let table = [
        (
            "http://origin/rel/release.json?token=abc#f",
            "http://cache:8080",
            "http://cache:8080/rel/release.json?token=abc",
        ),
        (
            "https://origin/rel/release.json",
            "http://cache/prefix/",
            "http://cache/prefix/rel/release.json",
        ),
        (
            "http://user:pw@origin/r.json",
            "http://cache",
            "http://cache/r.json",
        ),
        (
            "http://origin/r.json",
            "http://m:s@cache",
            "http://m:s@cache/r.json",
        ),
        ("http://origin?x=1", "http://cache", "http://cache/?x=1"),
        // Not a URL: not mirrored.
        (
            "/media/usb/release.json",
            "http://cache",
            "/media/usb/release.json",
        ),
    ];
    for (url, mirror, want) in table {
        assert_eq!(via_mirror(url, mirror), want, "{url} via {mirror}");
    }
    assert_eq!(check_mirror("http://cache:8080/prefix"), Ok(()));
    for bad in [
        "cache:8080",
        "/srv/mirror",
        "ftp://cache",
        "http://cache/?q=1",
        "http:///x",
    ] {
        assert!(check_mirror(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn a_proxy_url_with_white_space_in_its_password_is_shown_without_it() {
    for (url, shown) in [
        ("http://u:pa ss@proxy:3128", "http://***@proxy:3128"),
        ("http://u:p\"w@proxy/x?sig=1", "http://***@proxy/x?sig=***"),
        ("http://proxy:3128", "http://proxy:3128"),
        ("proxy with space", "proxy with space"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
    let err = proxies(Some("http://u:pa ss@proxy:3128"))
        .err()
        .expect("refused");
    let line = err.to_string();
    assert!(!line.contains("ss@") && !line.contains("pa"), "{line}");
    assert!(line.contains("http://***@proxy:3128"), "{line}");
}

#[test]
fn a_url_whose_user_info_holds_white_space_is_refused_without_showing_it() {
    for url in [
        "https://user:sec ret@host/r.json",
        "https://us er:secret@host/r.json",
        "http://user:sec\tret@host/r.json",
        "http://user:sec\"ret@host/r.json",
        "http://user:sec<ret@host/r.json",
    ] {
        let line = parse_location(url).map(|_| ()).expect_err(url).to_string();
        assert!(!line.contains("ret@") && !line.contains("secret"), "{line}");
        assert!(line.contains("***@host/r.json"), "{line}");
        assert!(line.contains("percent-encode"), "{line}");
    }
    // The path may hold a space (a file named `rootfs 2026.img`), and user
    // info percent-encoded is fine.
    assert!(parse_location("https://host/rel/rootfs 2026.img").is_ok());
    assert!(parse_location("https://user:sec%20ret@host/r.json").is_ok());
}

#[test]
fn redact_hides_user_info_and_nothing_else() {
    let table = [
        ("http://user:pass@h/x", "http://***@h/x"),
        ("https://token@h:8443/x?q=a@b", "https://***@h:8443/x?q=a@b"),
        ("http://user:p@ss@h/x", "http://***@h/x"),
        (
            "abupdate: http://a:b@h/r.json (redirected to http://c:d@i/r.json): HTTP 500",
            "abupdate: http://***@h/r.json (redirected to http://***@i/r.json): HTTP 500",
        ),
        (
            r#"{"source":"http://u:p@h"}"#,
            r#"{"source":"http://***@h"}"#,
        ),
        ("http://h/pkg@1.0/x", "http://h/pkg@1.0/x"),
        ("http://[::1]:80/x", "http://[::1]:80/x"),
        ("/local/a@b", "/local/a@b"),
        ("user@host: no scheme", "user@host: no scheme"),
        // A presigned URL's signature or token is a credential too; its
        // date, expiry and key id are not.
        (
            "http://s3/b/r.json?X-Amz-Date=20261202T123557Z&X-Amz-Expires=60&X-Amz-Signature=f08c&x=1",
            "http://s3/b/r.json?X-Amz-Date=20261202T123557Z&X-Amz-Expires=60&X-Amz-Signature=***&x=1",
        ),
        (
            "abupdate: https://u:p@s3/k?x-amz-security-token=T0k%2Fen&X-AMZ-SIGNATURE=ab: HTTP 403",
            "abupdate: https://***@s3/k?x-amz-security-token=***&X-AMZ-SIGNATURE=***: HTTP 403",
        ),
        (
            r#"{"source":"http://s3/k?AWSAccessKeyId=A&Expires=1700000000&Signature=x%2By"}"#,
            r#"{"source":"http://s3/k?AWSAccessKeyId=A&Expires=1700000000&Signature=***"}"#,
        ),
        (
            "https://acct.blob.core.windows.net/c/r.json?sv=2022&sig=abc#f and more",
            "https://acct.blob.core.windows.net/c/r.json?sv=2022&sig=***#f and more",
        ),
        ("http://h/r.json?signatures=2&designature=1", "http://h/r.json?signatures=2&designature=1"),
        ("http://h/r.json?X-Goog-Signature=", "http://h/r.json?X-Goog-Signature="),
        // A private server's bearer token or API key in the query.
        (
            "abupdate: https://h/r.json?token=s3cr3t&arch=x86_64: HTTP 401",
            "abupdate: https://h/r.json?token=***&arch=x86_64: HTTP 401",
        ),
        (
            "https://h/r.json?Access_Token=a&api_key=b&apikey=c&key=d&auth=e&password=f",
            "https://h/r.json?Access_Token=***&api_key=***&apikey=***&key=***&auth=***&password=***",
        ),
        // Names that only start or end like one stay.
        ("http://h/r.json?tokens=2&keyid=7&monkey=1", "http://h/r.json?tokens=2&keyid=7&monkey=1"),
        // `'` and `)` are legal in user info and in a query: what follows
        // them is still the secret the server is sent.
        ("http://user:s3'cret@h/r.json", "http://***@h/r.json"),
        (
            "abupdate: http://user:s3'cret@h/nope.json: not found",
            "abupdate: http://***@h/nope.json: not found",
        ),
        ("http://h/r?token=abc'SECRET&x=1", "http://h/r?token=***&x=1"),
        ("http://h/r?token=abc)SECRET", "http://h/r?token=***"),
    ];
    for (text, want) in table {
        assert_eq!(redact(text), want, "{text}");
    }
    // Errors of every layer render through it.
    let e = FetchError::Network {
        location: "http://u:secret@h/x".into(),
        detail: "from http://v:secret@i/y".into(),
    };
    assert!(!e.to_string().contains("secret"), "{e}");
    let e = crate::error::Error::Usage("http://u:secret@h/x: not found".into());
    assert_eq!(e.to_string(), "http://***@h/x: not found");
}

#[test]
fn retry_after_dates_and_transient_kinds() {
    assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
    assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(http_date("soon"), None);
    let status = |status| FetchError::HttpStatus {
        location: "http://h/p".into(),
        status,
        retry_after: None,
    };
    for s in [429, 503, 502, 504, 500, 408] {
        assert!(status(s).is_transient(), "{s}");
    }
    for s in [400, 401, 403, 501] {
        assert!(!status(s).is_transient(), "{s}");
    }
    let short = |announced| FetchError::TooShort {
        location: "p".into(),
        got: 1,
        expected: 2,
        announced,
    };
    assert!(short(false).is_transient());
    assert!(!short(true).is_transient());
}

#[test]
fn origins_are_scheme_host_and_port() {
    let o = |u: &str| origin_of(u).map(|o| (o.scheme, o.host, o.port));
    let s = |a: &str, b: &str, p: u16| Some((a.to_string(), b.to_string(), p));
    assert_eq!(
        o("https://Updates.Example.NET./a?b"),
        s("https", "updates.example.net", 443)
    );
    assert_eq!(
        o("http://user:pw@cache:8080/edge"),
        s("http", "cache", 8080)
    );
    assert_eq!(o("HTTP://[::1]:81/x"), s("http", "::1", 81));
    assert_eq!(o("https://[::1]/x"), s("https", "::1", 443));
    assert_eq!(o("http://host:port/x"), None);
    assert_eq!(o("/var/lib/release.json"), None);
    assert_eq!(o("file:///media/usb/release.json"), None);
}

#[test]
fn endpoints_go_below_the_base_path() {
    for (base, want) in [
        ("https://lock.example", "https://lock.example/v1/pre-reboot"),
        (
            "https://lock.example/",
            "https://lock.example/v1/pre-reboot",
        ),
        (
            "https://lock.example/base",
            "https://lock.example/base/v1/pre-reboot",
        ),
        (
            "https://lock.example/base//#frag",
            "https://lock.example/base/v1/pre-reboot",
        ),
    ] {
        assert_eq!(endpoint(base, "v1/pre-reboot").expect(base), want, "{base}");
    }
    assert!(endpoint("/etc/lock", "v1/pre-reboot").is_err());
    assert!(check_service_url("http://lock/?x=1").is_err());
    assert!(check_service_url("file:///lock").is_err());
    assert!(check_service_url("https://lock.example/base").is_ok());
}

#[test]
fn a_signature_url_gives_the_signature_its_own_url_not_the_manifests_query() {
    use super::signature_location;
    let presigned_manifest = "http://s3:9000/edge/stable/release.json?X-Amz-Signature=aaa";
    let presigned_sig = "http://s3:9000/edge/stable/release.json.minisig?X-Amz-Signature=bbb";
    let table: [(&str, &str, Option<&str>, Option<&str>); 7] = [
        // Unset: next to the manifest, its query kept (a CDN token).
        (
            presigned_manifest,
            ".minisig",
            None,
            Some("http://s3:9000/edge/stable/release.json.minisig?X-Amz-Signature=aaa"),
        ),
        // An exact URL is the standard signature's own...
        (
            presigned_manifest,
            ".minisig",
            Some(presigned_sig),
            Some(presigned_sig),
        ),
        // ...and names no other file (numbered, bound).
        (presigned_manifest, ".1.minisig", Some(presigned_sig), None),
        (
            presigned_manifest,
            ".0123456789abcdef.minisig",
            Some(presigned_sig),
            None,
        ),
        // A template gets the file name as one path segment.
        (
            presigned_manifest,
            ".2.minisig",
            Some("https://presign.example/edge/{name}?token=t"),
            Some("https://presign.example/edge/release.json.2.minisig?token=t"),
        ),
        (
            "http://h/odd/rel ease.json",
            ".minisig",
            Some("http://p/get?key=edge%2F{name}"),
            Some("http://p/get?key=edge%2Frel%20ease.json.minisig"),
        ),
        (
            "/media/usb/release.json",
            ".minisig",
            Some("file:///media/sigs/{name}"),
            Some("file:///media/sigs/release.json.minisig"),
        ),
    ];
    for (manifest, suffix, given, want) in table {
        assert_eq!(
            signature_location(manifest, suffix, given).expect(manifest),
            want.map(str::to_string),
            "{manifest} {suffix} {given:?}"
        );
    }
    let e = signature_location(presigned_manifest, ".minisig", Some("ftp://x/{name}")).unwrap_err();
    assert_eq!(e.kind(), "refused", "{e}");
}

#[test]
fn a_signature_url_for_one_file_is_refused_when_the_threshold_needs_more() {
    use super::check_signature_url;
    assert_eq!(
        check_signature_url("https://s3/b/release.json.minisig?X-Amz-Signature=1", 1),
        Ok(())
    );
    assert_eq!(check_signature_url("https://s3/b/{name}", 3), Ok(()));
    let e = check_signature_url("https://u:pw@s3/b/release.json.minisig", 2).unwrap_err();
    assert!(e.contains("threshold 2") && e.contains("{name}"), "{e}");
    assert!(!e.contains("pw"), "credentials shown: {e}");
    assert!(check_signature_url("gopher://x/{name}", 1).is_err());
    assert!(check_signature_url("http:///{name}", 1).is_err());
}

#[test]
fn presigned_urls_tell_when_they_expire() {
    use super::presigned_expiry;
    use crate::timefmt::parse_rfc3339;
    let v4 = "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256\
              &X-Amz-Credential=AK%2F20261202%2Fus-east-1%2Fs3%2Faws4_request\
              &X-Amz-Date=20261202T123557Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
              &X-Amz-Signature=f0";
    let at = parse_rfc3339("2026-12-02T13:35:57Z").expect("date");
    assert_eq!(presigned_expiry(v4), Some(at));
    let goog = "https://storage.googleapis.com/b/k?X-Goog-Date=20261202T123557Z&X-Goog-Expires=60&X-Goog-Signature=1";
    assert_eq!(presigned_expiry(goog), Some(at - 3600 + 60));
    assert_eq!(
        presigned_expiry("http://s3/b/k?AWSAccessKeyId=A&Expires=1700000000&Signature=x"),
        Some(1_700_000_000)
    );
    for not_presigned in [
        "http://h/release.json",
        "http://h/release.json?token=abc",
        "http://h/k?Expires=1700000000",
        "http://h/k?X-Amz-Date=2026-12-02&X-Amz-Expires=60",
        "http://h/k?X-Amz-Date=20261202T123557Z&X-Amz-Expires=soon",
    ] {
        assert_eq!(presigned_expiry(not_presigned), None, "{not_presigned}");
    }

    // A 403 of an expired presigned URL says so; of a valid one, until when.
    let refused = |url: &str, status| {
        FetchError::HttpStatus {
            location: url.into(),
            status,
            retry_after: None,
        }
        .to_string()
    };
    let old =
        "http://s3/b/release.json?X-Amz-Date=20010101T000000Z&X-Amz-Expires=60&X-Amz-Signature=1";
    let shown = old.replace("Signature=1", "Signature=***");
    assert_eq!(
        refused(old, 403),
        format!(
            "{shown}: HTTP 403 (a presigned URL that expired at 2001-01-01T00:01:00Z: publish a fresh one)"
        )
    );
    let valid = "http://s3/b/k?X-Amz-Date=20990101T000000Z&X-Amz-Expires=60&X-Amz-Signature=1";
    assert!(
        refused(valid, 403).ends_with("(a presigned URL valid until 2099-01-01T00:01:00Z)"),
        "{}",
        refused(valid, 403)
    );
    assert_eq!(refused(old, 503), format!("{shown}: HTTP 503"));
    assert_eq!(refused("http://h/k", 403), "http://h/k: HTTP 403");
}

#[test]
fn if_range_names_a_strong_etag_else_last_modified_else_nothing() {
    let date = "Tue, 01 Dec 2026 10:00:00 GMT";
    assert_eq!(
        validator_of(Some("\"v1\""), Some(date)).as_deref(),
        Some("\"v1\"")
    );
    // A weak ETag may not be used in If-Range.
    assert_eq!(
        validator_of(Some("W/\"v1\""), Some(date)).as_deref(),
        Some(date)
    );
    assert_eq!(validator_of(None, Some(date)).as_deref(), Some(date));
    assert_eq!(validator_of(Some("W/\"v1\""), None), None);
    assert_eq!(validator_of(None, None), None);
    // What could not be sent back as a header is no validator.
    assert_eq!(validator_of(Some("\"v\u{e9}\""), None), None);
    assert_eq!(validator_of(Some("\"a\r\nX: y\""), None), None);
    assert_eq!(validator_of(Some(&"x".repeat(257)), None), None);
    assert_eq!(validator_of(Some("  "), None), None);
}

/// Outside the download windows a payload is not asked for at all: the
/// call ends at once with `OutsideWindow` (the next window named, the
/// byte it would have started from), so the timer's run ends rather than
/// wait for hours holding the state lock; a partial download stays as it
/// was for the next run. Without the windows (a manual install) it is.
#[test]
fn outside_the_download_windows_a_payload_ends_at_once_and_asks_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/p.img", listener.local_addr().unwrap());
    // A one-minute window twelve hours away: never open now.
    let later = crate::timefmt::now() + 12 * 3600;
    let start = format!("{:02}:{:02}", later % 86400 / 3600, later % 3600 / 60);
    let window =
        crate::schedule::Window::parse(&["*".to_string()], &start, "1m", None).expect("window");
    let t = Transport::new(&TransportOptions {
        pacing: Pacing {
            download_windows: vec![window],
            ..Default::default()
        },
        // The manual request below is never answered.
        read_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    let dir = TempDir::new("fetch-outside-window");
    let partial = dir.join("p.part");
    std::fs::write(&partial, b"12345").unwrap();
    let outside = |e: FetchError, at: u64| match e {
        FetchError::OutsideWindow { at: got, until, .. } => {
            assert_eq!(got, at);
            assert!(until > crate::timefmt::now(), "{until}");
        }
        e => panic!("{e}"),
    };
    outside(t.open_payload(&url, 10, Some(&partial)).unwrap_err(), 5);
    outside(t.open_payload_from(&url, 10, 3).unwrap_err(), 3);
    match t.open_range(&url, 4, 2, WholeAnswer::Refused, None) {
        Err(e) => outside(e, 4),
        Ok(_) => panic!("a range opened outside the window"),
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "a request was sent outside the window"
    );
    assert_eq!(std::fs::read(&partial).unwrap(), b"12345");
    let e = FetchError::OutsideWindow {
        location: "http://h/p".into(),
        at: 7,
        until: 0,
    };
    assert!(!e.is_transient(), "asked again within the run");
    assert_eq!(
        e.to_string(),
        "http://h/p: outside the download windows at byte 7; the rest waits for the next window (opens 1970-01-01T00:00:00Z)"
    );
    // A manual install ignores the windows: the request goes out.
    let manual = t.without_download_windows();
    let e = manual.open_payload(&url, 10, None).unwrap_err();
    assert!(!matches!(e, FetchError::OutsideWindow { .. }), "{e}");
    assert!(
        listener.accept().is_ok(),
        "the manual install's request never came"
    );
}

/// Without `ca_file` and without a bundle holding a certificate, an https
/// request fails before any handshake with a line naming every path looked
/// at (and why an existing one was passed over); plain http still works.
#[test]
fn no_usable_ca_bundle_names_each_path_and_fails_https_only() {
    let dir = TempDir::new("fetch-roots");
    let missing = dir.join("ca-certificates.crt");
    let empty = dir.join("cert.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let roots = trust_roots(None, &[missing.clone(), empty.clone()]);
    let line = roots
        .missing_to(FETCH_UPDATES_OVER_HTTPS)
        .expect("no roots");
    assert_eq!(
        line,
        format!(
            "no CA bundle at {}, {} (holds no certificate) and no [update] ca_file: \
             this host could not fetch its next update over https",
            missing.display(),
            empty.display()
        )
    );
    let t = Transport::new(&TransportOptions {
        ca_bundles: vec![missing],
        ..TransportOptions::default()
    })
    .expect("a host without a bundle still gets a transport (plain http)");
    let e = t
        .get_document("https://updates.example.invalid/r.json", 100, None)
        .unwrap_err();
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(e.to_string().contains("no CA bundle at"), "{e}");
}

/// A `ca_file` the operator named that gives no certificate (missing,
/// unreadable, no certificate in it, one others could change) is no roots,
/// said by name and why; the
/// bundles are not tried instead, and plain http still works.
#[test]
fn a_ca_file_that_gives_no_certificate_is_missing_roots_naming_it_and_why() {
    let dir = TempDir::new("fetch-ca-file");
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, "not a certificate either\n").unwrap();
    let absent = dir.join("absent.pem");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let unreadable = dir.join("dir.pem");
    std::fs::create_dir(&unreadable).unwrap();
    // Others could add a root of their own to it: refused before it is read.
    let open = dir.join("open.pem");
    std::fs::write(&open, "not a certificate\n").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    for (path, why) in [
        (&absent, "cannot be read ("),
        (&empty, "holds no certificate"),
        (&unreadable, "not a regular file"),
        (
            &open,
            "writable by group or others (mode 0666): others could change it",
        ),
    ] {
        let roots = trust_roots(Some(path), std::slice::from_ref(&bundle));
        let line = roots
            .missing_to(FETCH_UPDATES_OVER_HTTPS)
            .expect("no roots");
        assert!(
            line.starts_with(&format!("[update] ca_file {} {why}", path.display())),
            "{line}"
        );
        assert!(
            line.ends_with(": this host could not fetch its next update over https"),
            "{line}"
        );
        assert_eq!(
            roots.refuses_to(
                "http://updates.example.invalid/r.json",
                FETCH_UPDATES_OVER_HTTPS
            ),
            None
        );
        assert_eq!(
            roots.refuses_to(
                "HTTPS://updates.example.invalid/r.json",
                FETCH_UPDATES_OVER_HTTPS
            ),
            Some(line)
        );
    }
    let t = Transport::new(&TransportOptions {
        ca_file: Some(absent.clone()),
        ..TransportOptions::default()
    })
    .expect("a host whose ca_file is missing still gets a transport (plain http)");
    let e = t
        .get_document("https://updates.example.invalid/r.json", 100, None)
        .unwrap_err();
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(
        e.to_string().contains(&format!(
            "[update] ca_file {} cannot be read",
            absent.display()
        )),
        "{e}"
    );
}

/// Every branch of the judgement of an answer to a resume: a `206` goes on
/// only for exactly the bytes wanted; a `200` of the same object (or of
/// one without a validator) goes on from its whole body for a payload
/// and a frame fetched once more (the head dropped) and never for a delta's
/// segment; a `200` under another validator is a changed object; anything
/// else is refused.
#[test]
fn a_resume_goes_on_from_the_exact_range_or_a_payloads_or_frames_whole_answer_only() {
    use super::body::{judge_resume, End, ResumeAnswer as A};
    let payload = End::OpenEnded { size: 100 };
    let segment = End::Bounded {
        end: 60,
        whole: WholeAnswer::Refused,
    };
    let frame = End::Bounded {
        end: 60,
        whole: WholeAnswer::HeadDropped,
    };
    let v1 = Some("\"v1\"");
    // (case, status, Content-Range, offset, end, If-Range sent, validator
    // answered, judgement)
    type Row<'a> = (
        &'a str,
        u16,
        Option<super::payload::ContentRange>,
        u64,
        End,
        Option<&'a str>,
        Option<&'a str>,
        A,
    );
    let table: &[Row] = &[
        (
            "payload: the range asked",
            206,
            Some((40, 99, Some(100))),
            40,
            payload,
            None,
            None,
            A::Continues,
        ),
        (
            "payload: the range asked, of another object",
            206,
            Some((40, 99, Some(100))),
            40,
            payload,
            v1,
            Some("\"v2\""),
            A::Changed,
        ),
        (
            "payload: a range from elsewhere",
            206,
            Some((7, 99, Some(100))),
            40,
            payload,
            None,
            None,
            A::Refused,
        ),
        (
            "payload: 206 without Content-Range",
            206,
            None,
            40,
            payload,
            None,
            None,
            A::Refused,
        ),
        (
            "payload: 200, no validator sent",
            200,
            None,
            40,
            payload,
            None,
            None,
            A::Whole,
        ),
        (
            "payload: 200 of the same object",
            200,
            None,
            40,
            payload,
            v1,
            v1,
            A::Whole,
        ),
        (
            "payload: 200 of another object",
            200,
            None,
            40,
            payload,
            v1,
            Some("\"v2\""),
            A::Changed,
        ),
        (
            "payload: 200 without a validator",
            200,
            None,
            40,
            payload,
            v1,
            None,
            A::Changed,
        ),
        (
            "payload: 200 from byte 0",
            200,
            None,
            0,
            payload,
            None,
            None,
            A::Whole,
        ),
        (
            "payload: 416",
            416,
            None,
            40,
            payload,
            None,
            None,
            A::Refused,
        ),
        (
            "segment: the range asked",
            206,
            Some((40, 59, None)),
            40,
            segment,
            None,
            None,
            A::Continues,
        ),
        (
            "segment: a longer range",
            206,
            Some((40, 99, None)),
            40,
            segment,
            None,
            None,
            A::Refused,
        ),
        (
            "segment: 200 of the same object",
            200,
            None,
            40,
            segment,
            v1,
            v1,
            A::Refused,
        ),
        (
            "segment: 200 from byte 0",
            200,
            None,
            0,
            segment,
            None,
            None,
            A::Refused,
        ),
        (
            "frame: the range asked",
            206,
            Some((40, 59, None)),
            40,
            frame,
            None,
            None,
            A::Continues,
        ),
        (
            "frame: a longer range",
            206,
            Some((40, 99, None)),
            40,
            frame,
            None,
            None,
            A::Refused,
        ),
        (
            "frame: 200, no validator sent",
            200,
            None,
            40,
            frame,
            None,
            None,
            A::Whole,
        ),
        (
            "frame: 200 of the same object",
            200,
            None,
            40,
            frame,
            v1,
            v1,
            A::Whole,
        ),
        (
            "frame: 200 of another object",
            200,
            None,
            40,
            frame,
            v1,
            Some("\"v2\""),
            A::Changed,
        ),
        // The first frame: the caller holds the rest of the object.
        (
            "frame at byte 0: 200 of another object",
            200,
            None,
            0,
            frame,
            v1,
            Some("\"v2\""),
            A::Changed,
        ),
        (
            "frame at byte 0: 200 of the same object",
            200,
            None,
            0,
            frame,
            v1,
            v1,
            A::Whole,
        ),
        // Found from outside (stop 47): a range of another object (a
        // server or cache that ignores If-Range) was spliced on.
        (
            "frame: 206 of another object",
            206,
            Some((40, 59, None)),
            40,
            frame,
            v1,
            Some("\"v2\""),
            A::Changed,
        ),
        (
            "frame: 206 of the same object",
            206,
            Some((40, 59, None)),
            40,
            frame,
            v1,
            v1,
            A::Continues,
        ),
        (
            "frame: 206 without a validator (cannot tell)",
            206,
            Some((40, 59, None)),
            40,
            frame,
            v1,
            None,
            A::Continues,
        ),
    ];
    for (name, status, range, offset, end, sent, answered, want) in table {
        assert_eq!(
            judge_resume(*status, *range, *offset, *end, *sent, *answered),
            *want,
            "{name}"
        );
    }
}

/// A redirect's body is read to its end only when it is announced short,
/// and never waited for past twice the stall limit: a server trickling a
/// short body slower than it could be read costs that much (the hop then
/// goes on, on a new connection), and a long body is not read at all. The
/// target is fetched either way.
#[test]
fn a_redirect_body_trickled_or_long_is_not_waited_for() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(n) if n > 0 && !header.trim().is_empty() => {}
                        _ => break,
                    }
                }
                let length = match path.as_str() {
                    "/short" => 100,
                    "/long" => 1_000_000,
                    _ => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                        return;
                    }
                };
                let head = format!(
                    "HTTP/1.1 302 Found\r\nLocation: /doc\r\nContent-Length: {length}\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                // A byte every 100 ms, within the stall limit each time,
                // for up to 20 s or until the client goes.
                for _ in 0..200 {
                    std::thread::sleep(Duration::from_millis(100));
                    if stream.write_all(b"x").is_err() {
                        return;
                    }
                }
            });
        }
    });
    let t = Transport::new(&TransportOptions {
        read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    for path in ["/short", "/long"] {
        let started = std::time::Instant::now();
        // A payload: no deadline on the whole exchange (a document has
        // one), only the stall limit on each read.
        let mut body = Vec::new();
        t.open_payload(&format!("{base}{path}"), 2, None)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, b"ok", "{path}");
        // Reading the short body to its end would take 10 s, the long one's
        // 100,000 s; twice the stall limit is 0.6 s.
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
}
