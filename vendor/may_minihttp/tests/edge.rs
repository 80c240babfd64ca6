//! The server against hostile clients (PATCHES.md 6-8): a test service on a free port,
//! raw TCP clients.

use may_minihttp::{HttpService, HttpServiceFactory, Limits, Request, Response};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

const BIG: usize = 64 * 1024;

#[derive(Clone)]
struct Svc {
    served: Arc<AtomicUsize>,
}

impl HttpService for Svc {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        self.served.fetch_add(1, Ordering::SeqCst);
        match req.path() {
            "/big" => rsp.body_vec(vec![b'x'; BIG]),
            "/echo" => {
                let mut body = Vec::new();
                // A body timeout surfaces here as `TimedOut`; the server answers 408.
                req.body().read_to_end(&mut body)?;
                rsp.body_vec(body);
            }
            _ => rsp.body("hello"),
        }
        Ok(())
    }
}

struct Factory(Limits, Arc<AtomicUsize>);

impl HttpServiceFactory for Factory {
    type Service = Svc;
    fn new_service(&self, _id: usize) -> Svc {
        Svc {
            served: self.1.clone(),
        }
    }
    fn limits(&self) -> Limits {
        self.0.clone()
    }
}

/// A server with these limits; its port and its count of requests served.
fn server(limits: Limits) -> (u16, Arc<AtomicUsize>) {
    static MAY: Once = Once::new();
    MAY.call_once(|| {
        may::config().set_stack_size(128 * 1024);
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let served = Arc::new(AtomicUsize::new(0));
    Factory(limits, served.clone())
        .start(("127.0.0.1", port))
        .unwrap();
    (port, served)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Everything the server sends until it closes (None: it reset the connection or
/// never closed within the read timeout).
fn until_close(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Send `bytes` on a new connection; everything answered until the server closed.
fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = connect(port);
    let _ = s.write_all(bytes);
    until_close(&mut s).expect("the server closes after answering")
}

fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer[i + 9..i + 12].parse().ok())
        .collect()
}

/// A refusal: this status, a JSON body with this code and a message, `Connection: close`
/// (the caller got it from `exchange`, so the server closed afterwards).
fn assert_refused(answer: &str, status: u16, code: &str) {
    assert_eq!(
        statuses(answer).last(),
        Some(&status),
        "status of {answer:?}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer:?}");
    let body = &answer[answer.rfind("\r\n\r\n").unwrap() + 4..];
    assert!(
        body.starts_with(&format!(r#"{{"error":"{code}","message":""#)),
        "{answer:?}"
    );
}

fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra_headers}\r\n").into_bytes()
}

fn quick() -> Limits {
    Limits {
        head_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    }
}

#[test]
fn pending_output_is_capped_while_the_client_does_not_read() {
    let (port, served) = server(Limits {
        max_pending_output: 64 * 1024,
        ..Limits::default()
    });
    let one = {
        let mut s = connect(port);
        s.write_all(b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        until_close(&mut s).unwrap().len() - "\r\nConnection: close".len()
    };
    served.store(0, Ordering::SeqCst);
    // 1000 pipelined requests (25 KB, all fit in the socket buffers), none read: 64 MB
    // of answers if the server served them all.
    let mut s = connect(port);
    let n = 1000;
    s.write_all(&b"GET /big HTTP/1.1\r\n\r\n".repeat(n)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let held = served.load(Ordering::SeqCst);
    assert!(
        held < 400,
        "{held} of {n} requests served for a client that reads nothing"
    );
    // Reading resumes the service: every answer arrives.
    let mut all = vec![0u8; one * n];
    s.read_exact(&mut all).unwrap();
    assert_eq!(served.load(Ordering::SeqCst), n);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_quietly() {
    let (port, _) = server(quick());
    let mut s = connect(port);
    s.write_all(&get("/", "")).unwrap();
    let mut first = [0u8; 512];
    let n = s.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let t0 = Instant::now();
    assert_eq!(until_close(&mut s).as_deref(), Some(""), "closed without a word");
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
    // A connection that never sends a byte is closed quietly too, on the head clock.
    let mut s = connect(port);
    let t0 = Instant::now();
    assert_eq!(until_close(&mut s).as_deref(), Some(""));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_head_or_body_that_does_not_complete_in_time_gets_408() {
    let (port, _) = server(quick());
    let answer = exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\n");
    assert_refused(&answer, 408, "head_timeout");

    // Dribbling does not extend the head clock.
    let mut s = connect(port);
    let t0 = Instant::now();
    for b in b"GET / HTTP/1.1\r\nX-Slow: abcdefghijklmnopqrstuvwxyz" {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_refused(&until_close(&mut s).unwrap(), 408, "head_timeout");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    let answer = exchange(
        port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab",
    );
    assert_refused(&answer, 408, "body_timeout");
    // A complete body is fine.
    let answer = exchange(
        port,
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
    );
    assert_eq!(statuses(&answer), [200]);
    assert!(answer.ends_with("\r\n\r\nab"));
}

#[test]
fn connections_over_the_cap_get_503_not_silence() {
    let (port, _) = server(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    let open: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(port);
            s.write_all(&get("/", "")).unwrap();
            let mut buf = [0u8; 512];
            assert!(s.read(&mut buf).unwrap() > 0);
            s
        })
        .collect();
    let answer = exchange(port, &get("/", ""));
    assert_refused(&answer, 503, "too_many_connections");
    assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer:?}");
    drop(open);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        statuses(&exchange(port, &get("/", "Connection: close\r\n"))),
        [200]
    );
}

#[test]
fn framing_follows_rfc_9112() {
    let (port, _) = server(Limits::default());
    // Content-Length: differing duplicates refused, identical ones taken as one.
    let answer = exchange(
        port,
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_refused(&answer, 400, "conflicting_content_length");
    let answer = exchange(
        port,
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\nConnection: close\r\n\r\nab",
    );
    assert_eq!(statuses(&answer), [200]);
    // Transfer-Encoding, any: not implemented, never misread as the next request.
    for te in ["chunked", "gzip, chunked", "identity"] {
        let req = format!(
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        );
        assert_refused(&exchange(port, req.as_bytes()), 501, "transfer_encoding_unsupported");
    }
}

#[test]
fn header_count_and_head_size_are_bounded_with_431() {
    let (port, _) = server(Limits {
        max_headers: 64,
        max_head_bytes: 4096,
        ..Limits::default()
    });
    let headers = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    // 64 fields (Host, 62, Connection) are served; 65 are refused.
    let answer = exchange(
        port,
        &get("/", &(headers(62) + "Connection: close\r\n")),
    );
    assert_eq!(statuses(&answer), [200], "{answer}");
    assert_refused(&exchange(port, &get("/", &headers(64))), 431, "too_many_headers");
    // A head over the cap, complete or endless.
    let long = format!("X-Long: {}\r\n", "a".repeat(5000));
    assert_refused(&exchange(port, &get("/", &long)), 431, "head_too_large");
    let mut endless = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 40_000));
    assert_refused(&exchange(port, &endless), 431, "head_too_large");
}

#[test]
fn a_bad_request_target_or_garbage_gets_400_after_earlier_answers() {
    let (port, _) = server(Limits::default());
    for target in [&b"/caf\xc3\xa9"[..], b"/a\x01b", b"/a b", b"/\x7f", b"/\xff"] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_refused(&exchange(port, &req), 400, "bad_request_target");
    }
    assert_refused(
        &exchange(port, b"\x00\x01\x02 nonsense\r\n\r\n"),
        400,
        "malformed_request",
    );
    // Pipelined: the good request before the bad one is answered first.
    let mut two = get("/", "");
    two.extend_from_slice(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n");
    let answer = exchange(port, &two);
    assert_eq!(statuses(&answer), [200, 400]);
    assert_refused(&answer, 400, "malformed_request");
}
