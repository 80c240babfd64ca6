//! The balancer (stackctl::haproxy) with a real HAProxy in front of small fake gateways
//! (plain threads that read the PROXY v2 header, answer `/readyz` and say who they are
//! and whom the header named): health checks, the PROXY header, the sticky canary share,
//! the `X-Canary` header, the runtime switch, rollback, a dead canary pool, reload.
//! Skipped (with a message) when `haproxy` is not installed.

use stackctl::haproxy::{bucket, Balancer, Plan};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::wait_for;

struct Fake {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
}

/// A fake gateway named `name`: every connection must start with a PROXY v2 header;
/// `/readyz` is 200 while `ready`, else 503; anything else answers
/// `<name> <client address from the header>`.
fn fake(name: &'static str) -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let r = ready.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(100_000) {
            let Ok(s) = s else { continue };
            let r = r.clone();
            std::thread::spawn(move || serve(name, s, &r));
        }
    });
    Fake { addr, ready }
}

fn serve(name: &str, mut s: TcpStream, ready: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut head = [0u8; 16];
    if s.read_exact(&mut head).is_err() || &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
        return;
    }
    let mut rest = vec![0u8; u16::from_be_bytes([head[14], head[15]]) as usize];
    if s.read_exact(&mut rest).is_err() {
        return;
    }
    let client = if head[12] & 0x0f == 1 && head[13] == 0x11 {
        format!("{}.{}.{}.{}", rest[0], rest[1], rest[2], rest[3])
    } else {
        "local".to_string()
    };
    let mut buf = Vec::new();
    for _ in 0..1000 {
        // One request head at a time (no bodies in this test).
        let mut b = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let req = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let (status, body) = if req.starts_with("GET /readyz") {
            if ready.load(Ordering::SeqCst) {
                ("200 OK", "ready".to_string())
            } else {
                ("503 Service Unavailable", "not ready".to_string())
            }
        } else {
            ("200 OK", format!("{name} {client}"))
        };
        let rsp = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(rsp.as_bytes()).is_err() {
            return;
        }
    }
}

/// GET / through the balancer from `from` (a loopback address), with these headers:
/// (pool header, body).
fn get(port: u16, from: &str, headers: &str) -> (String, String) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(2),
    )
    .unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let pool = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-seckill-pool: ")
                .or(l.strip_prefix("X-Seckill-Pool: "))
        })
        .unwrap_or("")
        .to_string();
    (pool, body.to_string())
}

fn ticket(user: u64) -> String {
    format!(
        "Authorization: Ticket {user}.1999999999.{}\r\n",
        "ab".repeat(32)
    )
}

#[test]
fn balancer_health_checks_proxy_header_and_sticky_canary() {
    if stackctl::haproxy::haproxy_bin().is_err() {
        eprintln!("skipped: haproxy is not installed (./dev setup)");
        return;
    }
    let run = std::env::temp_dir().join(testkit::unique("stackctl-balancer"));
    let mut b = Balancer::new(&run, "t");
    b.stop_on_drop = true;
    let (a, bb, c) = (fake("a"), fake("b"), fake("c"));
    let port = stackctl::process::free_port();
    let plan = Plan {
        port,
        stable: vec![a.addr.to_string(), bb.addr.to_string()],
        canary: vec![c.addr.to_string()],
        canary_permille: 0,
        canary_header: false,
    };
    b.start(&plan, true)
        .expect("haproxy starts and every fake passes /readyz");

    // Share 0: everyone on stable, spread over both; the PROXY header names the client.
    let mut seen = std::collections::BTreeSet::new();
    for u in 1..=20 {
        let (pool, body) = get(port, "127.0.0.1", &ticket(u));
        assert_eq!(pool, "stable", "user {u}: {body}");
        seen.insert(body);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["a 127.0.0.1".to_string(), "b 127.0.0.1".to_string()],
        "round robin over the stable pool, client address from PROXY v2"
    );
    let (_, body) = get(port, "127.0.0.2", &ticket(1));
    assert!(
        body.ends_with(" 127.0.0.2"),
        "client 127.0.0.2 seen as {body}"
    );
    let (pool, _) = get(port, "127.0.0.1", "X-Canary: 1\r\n");
    assert_eq!(pool, "stable", "the header is off while no canary is set");

    // 30 %: exactly the users whose bucket is under 300, sticky.
    b.set_canary(300, true).unwrap();
    let users: Vec<u64> = (1..=60).collect();
    let mut on_canary = 0;
    for &u in &users {
        let want = if bucket(u) < 300 { "canary" } else { "stable" };
        for _ in 0..2 {
            let (pool, body) = get(port, "127.0.0.1", &ticket(u));
            assert_eq!(pool, want, "user {u} (bucket {}): {body}", bucket(u));
        }
        on_canary += (bucket(u) < 300) as usize;
    }
    assert!(
        on_canary > 5 && on_canary < 40,
        "{on_canary} of 60 users on the canary"
    );
    let (pool, body) = get(port, "127.0.0.1", "X-Canary: 1\r\n");
    assert_eq!((pool.as_str(), body.as_str()), ("canary", "c 127.0.0.1"));
    let (pool, _) = get(port, "127.0.0.1", "");
    assert_eq!(pool, "stable", "no ticket, no header: stable");

    // The canary fails its health check: its users go to stable.
    let canary_user = users.iter().copied().find(|u| bucket(*u) < 300).unwrap();
    c.ready.store(false, Ordering::SeqCst);
    wait_for(
        "a canary pool with no server up to send its users to stable",
        Duration::from_secs(5),
        || get(port, "127.0.0.1", &ticket(canary_user)).0 == "stable",
    );
    c.ready.store(true, Ordering::SeqCst);
    wait_for(
        "the canary user back on the canary",
        Duration::from_secs(5),
        || get(port, "127.0.0.1", &ticket(canary_user)).0 == "canary",
    );

    // A stable gateway fails: the other one takes everything.
    a.ready.store(false, Ordering::SeqCst);
    wait_for("gw0 down", Duration::from_secs(5), || {
        b.servers()
            .unwrap()
            .iter()
            .any(|s| s.name == "gw0" && !s.up)
    });
    for u in users.iter().filter(|u| bucket(**u) >= 300).take(6) {
        let (_, body) = get(port, "127.0.0.1", &ticket(*u));
        assert_eq!(body, "b 127.0.0.1");
    }
    a.ready.store(true, Ordering::SeqCst);

    // Rollback: share 0 and the header off; kept in the state for a restart.
    let plan_now = b.set_canary(0, false).unwrap();
    assert_eq!(
        (plan_now.canary_permille, plan_now.canary_header),
        (0, false)
    );
    assert_eq!(get(port, "127.0.0.1", &ticket(canary_user)).0, "stable");
    assert_eq!(get(port, "127.0.0.1", "X-Canary: 1\r\n").0, "stable");
    assert_eq!(b.plan().unwrap().canary_permille, 0);

    // Reload with one stable gateway: graceful, the new list in force.
    let mut p2 = b.plan().unwrap();
    p2.stable = vec![bb.addr.to_string()];
    b.reload(&p2).unwrap();
    wait_for("one stable server", Duration::from_secs(10), || {
        b.servers()
            .is_ok_and(|s| s.iter().filter(|s| s.pool == "stable").count() == 1)
    });
    wait_for("every answer from b", Duration::from_secs(5), || {
        (0..4).all(|_| get(port, "127.0.0.1", "").1 == "b 127.0.0.1")
    });
    b.stop();
    assert!(!b.is_up());
    let _ = std::fs::remove_dir_all(&run);
}
