//! A scripted HTTP/1.1 server on loopback for attacks on a whole host:
//! each request goes to a handler that may serve the real file, lie, stall,
//! redirect or never stop. Every connection ends by itself (writes stop
//! after [`SERVER_CAP`]); the accept loop stops on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest any scripted connection keeps writing.
pub const SERVER_CAP: Duration = Duration::from_secs(40);

#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, by `Content-Length` (at most 1 MiB).
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The start of a `Range: bytes=N-` request.
    pub fn range_start(&self) -> Option<usize> {
        self.header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|r| r.parse().ok())
    }

    /// The last byte of a closed `Range: bytes=N-M` request (M), as a
    /// frame fetched once more asks (`None` for `bytes=N-`).
    pub fn range_end(&self) -> Option<usize> {
        self.header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(_, end)| end.parse().ok())
    }
}

type Handler = dyn Fn(&Req, &mut TcpStream) + Send + Sync;

pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Req>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Req, &mut TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let handler = handler.clone();
                        let requests = requests2.clone();
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                            if let Some(req) = read_request(&mut stream) {
                                requests.lock().unwrap().push(req.clone());
                                handler(&req, &mut stream);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            stop,
            requests,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

pub fn read_request(stream: &mut TcpStream) -> Option<Req> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Req {
        path,
        headers,
        body: Vec::new(),
    };
    // A request's body (a FleetLock POST's JSON, a report) is read with
    // its head: a socket closed with bytes unread sends a reset, which can
    // reach the client before the answer it was sent (a flaky "connection
    // reset").
    let length = req
        .header("content-length")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let _ = Read::take(&mut *stream, length).read_to_end(&mut req.body);
    Some(req)
}

/// A server that answers every request `200` and keeps each body, as
/// text, in order (what a report webhook receives).
pub fn body_collector() -> (Server, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let posted = bodies.clone();
    let server = Server::start(move |req, s| {
        posted
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&req.body).into_owned());
        head(s, "200 OK", "Content-Length: 0\r\n");
    });
    (server, bodies)
}

/// A response head; `extra` lines end with "\r\n".
pub fn head(stream: &mut TcpStream, status: &str, extra: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n"
    );
}

/// Write `data` until done, an error (client gone) or the cap.
pub fn write_all_capped(stream: &mut TcpStream, data: &[u8]) {
    let started = Instant::now();
    for chunk in data.chunks(64 * 1024) {
        if started.elapsed() > SERVER_CAP || stream.write_all(chunk).is_err() {
            return;
        }
    }
}

/// Write bytes forever (until the client leaves or the cap).
pub fn write_endless(stream: &mut TcpStream) {
    let block = vec![b'x'; 64 * 1024];
    let started = Instant::now();
    while started.elapsed() < SERVER_CAP && stream.write_all(&block).is_ok() {}
}

/// One byte a second, up to `n` bytes.
pub fn trickle(stream: &mut TcpStream, data: &[u8], n: usize) {
    for b in data.iter().take(n) {
        if stream.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The head of a 206 answer with a file of `len` bytes from byte `from`.
pub fn head_range(stream: &mut TcpStream, from: usize, len: usize) {
    head(
        stream,
        "206 Partial Content",
        &format!(
            "Content-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\n",
            len - 1,
            len - from
        ),
    );
}

/// A 206 for a resume from `from` of the `data.len()` bytes whose
/// Content-Range claims a file 100 bytes longer (a server or proxy that
/// mixed up objects), then the bytes from `from` on.
pub fn answer_wrong_total(stream: &mut TcpStream, from: usize, data: &[u8]) {
    let size = data.len();
    head(
        stream,
        "206 Partial Content",
        &format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            size + 99,
            size + 100
        ),
    );
    write_all_capped(stream, &data[from..]);
}

/// The head of a correct answer with a file of `len` bytes from byte
/// `from` on: 200 from 0, else 206 with its Content-Range.
pub fn head_from(stream: &mut TcpStream, from: usize, len: usize) {
    match from {
        0 => head(stream, "200 OK", &format!("Content-Length: {len}\r\n")),
        _ => head_range(stream, from, len),
    }
}

/// The answer nginx gives for an object tagged `etag`: the range asked for
/// (206; `bytes=N-` or `bytes=N-M`) while `If-Range` is absent or names
/// `etag`, else the whole object (200). `cut`: only that many bytes of the
/// body are sent, then the connection closes (the head still announces all
/// of them).
pub fn serve_tagged(
    req: &Req,
    stream: &mut TcpStream,
    data: &[u8],
    etag: &str,
    cut: Option<usize>,
) {
    let same = req.header("if-range").is_none_or(|t| t == etag);
    let (from, last) = match (req.range_start(), req.range_end()) {
        (Some(from), Some(last)) if same && from <= last && last < data.len() => (from, last),
        (Some(from), None) if same && from < data.len() => (from, data.len() - 1),
        _ => (0, data.len().saturating_sub(1)),
    };
    let tag = format!("ETag: {etag}\r\n");
    let ranged = req.range_start().is_some() && same && (from, last + 1) != (0, data.len());
    match ranged {
        false => head(
            stream,
            "200 OK",
            &format!("{tag}Content-Length: {}\r\n", data.len()),
        ),
        true => head(
            stream,
            "206 Partial Content",
            &format!(
                "{tag}Content-Range: bytes {from}-{last}/{}\r\nContent-Length: {}\r\n",
                data.len(),
                last + 1 - from
            ),
        ),
    }
    let end = cut.map_or(last + 1, |n| (from + n).min(last + 1));
    write_all_capped(stream, &data[from..end]);
}

/// A correct answer with the file, honouring `Range: bytes=N-` and
/// `bytes=N-M`.
pub fn serve(req: &Req, stream: &mut TcpStream, data: &[u8]) {
    match (req.range_start(), req.range_end()) {
        (Some(from), Some(last)) if from <= last && last < data.len() => {
            head(
                stream,
                "206 Partial Content",
                &format!(
                    "Content-Range: bytes {from}-{last}/{}\r\nContent-Length: {}\r\n",
                    data.len(),
                    last + 1 - from
                ),
            );
            write_all_capped(stream, &data[from..=last]);
        }
        (Some(from), _) if from < data.len() => {
            head_range(stream, from, data.len());
            write_all_capped(stream, &data[from..]);
        }
        _ => {
            head(
                stream,
                "200 OK",
                &format!("Content-Length: {}\r\n", data.len()),
            );
            write_all_capped(stream, data);
        }
    }
}

pub fn not_found(stream: &mut TcpStream) {
    head(stream, "404 Not Found", "Content-Length: 0\r\n");
}

/// Every file of a release directory, by URL path (`/name`).
pub fn files_of(dir: &Path) -> BTreeMap<String, Arc<Vec<u8>>> {
    std::fs::read_dir(dir)
        .expect("release dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                format!("/{}", e.file_name().to_string_lossy()),
                Arc::new(std::fs::read(e.path()).expect("read")),
            )
        })
        .collect()
}
