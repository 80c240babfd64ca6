//! Who the per-IP limiter sees: the socket's peer, unless the connection comes from a
//! trusted balancer (`trusted_proxies`), whose PROXY protocol header names the client.
//! Raw sockets bound to loopback addresses (127.0.0.2, .3 …) play the buyers; a real
//! HAProxy (stackctl's balancer) plays the balancer in the last test.

mod harness;

use harness::{connect_from, read_response, Gateway, Options, Resp};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// `prefix` (a PROXY header, or nothing) then `GET path` with `headers`, from `from`.
fn send(port: u16, from: Ipv4Addr, prefix: &[u8], path: &str, headers: &str) -> Resp {
    let mut s = connect_from(from, port);
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    s.write_all(&bytes).unwrap();
    read_response(&mut s)
}

fn v1(client: Ipv4Addr) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n").into_bytes()
}

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn v2(client: Ipv4Addr) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

/// v2 LOCAL: the balancer speaking for itself (its health checks).
fn v2_local() -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A gateway whose per-IP budget is 3 requests (then 429 for about 10 s), per-user
/// limits lifted, trusting `trusted`; and a sale on it.
/// When 127.0.0.1 itself is trusted, the harness cannot talk to the gateway without a
/// PROXY header: readiness is left to the caller; the sale is created on the internal
/// listener, which no balancer fronts (it trusts none: no header is asked for there).
fn gateway(trusted: &str) -> (Gateway, String) {
    let direct = !trusted.split(',').any(|t| t.trim() == "127.0.0.1");
    let stack = stackctl::ensure_up();
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_IP_RPS", "1".into()),
            ("SECKILL_IP_BURST", "3".into()),
            ("SECKILL_TRUSTED_PROXIES", trusted.into()),
        ],
        // Given brokers, the harness does not wait for readiness itself.
        brokers: (!direct).then_some(stack.kafka_brokers),
        ..Options::default()
    });
    let sale = if direct {
        gw.open_sale("bal", 10)
    } else {
        let sale = harness::unique("bal");
        let now = harness::now_ms();
        let body = format!(
            r#"{{"sale":"{sale}","stock":10,"start_ms":{},"end_ms":{}}}"#,
            now - 1000,
            now + 3_600_000
        );
        let req = format!(
            "POST /admin/sales HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
            Gateway::admin_auth(),
            body.len()
        )
        .into_bytes();
        let ready = stackctl::process::wait_until(Duration::from_secs(15), || {
            send(gw.port, Ipv4Addr::LOCALHOST, &v2_local(), "/readyz", "").status == 200
        });
        assert!(
            ready,
            "gateway not ready (asked through a PROXY v2 LOCAL header)"
        );
        let mut s = connect_from(Ipv4Addr::LOCALHOST, gw.internal_port);
        s.write_all(&req).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 201, "{}", r.body);
        sale
    };
    (gw, sale)
}

/// Statuses of `n` sale reads, each on its own connection.
fn reads(n: usize, mut one: impl FnMut() -> Resp) -> Vec<u16> {
    (0..n).map(|_| one().status).collect()
}

#[test]
fn balancer_untrusted_proxy_headers_and_forwarded_for_change_nothing() {
    let (gw, sale) = gateway("");
    let path = format!("/v1/sales/{sale}");
    // A PROXY header from a peer nobody trusts: 400 and closed, whatever it claims.
    for header in [v1(ip("127.0.0.9")), v2(ip("127.0.0.9"))] {
        let r = send(gw.port, ip("127.0.0.4"), &header, &path, "");
        assert_eq!(
            (r.status, r.code()),
            (400, "malformed_request".to_string()),
            "{}",
            r.body
        );
        assert_eq!(r.header("connection"), Some("close"));
    }
    // Forged forwarding headers, a different "client" each time: the limiter still
    // sees 127.0.0.5, whose budget of 3 runs out.
    let mut n = 0;
    let statuses = reads(5, || {
        n += 1;
        send(
            gw.port,
            ip("127.0.0.5"),
            b"",
            &path,
            &format!("X-Forwarded-For: 10.9.8.{n}\r\nX-Real-IP: 10.9.8.{n}\r\nForwarded: for=10.9.8.{n}\r\n"),
        )
    });
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(
        &statuses[3..],
        &[429, 429],
        "forged X-Forwarded-For must not buy a new budget: {statuses:?}"
    );
    // Another socket address is another budget.
    assert_eq!(send(gw.port, ip("127.0.0.6"), b"", &path, "").status, 200);
}

#[test]
fn balancer_trusted_proxy_header_names_the_client() {
    // The "balancer" is 127.0.0.10 (and .11); the harness's own 127.0.0.1 is untrusted.
    let (gw, sale) = gateway("127.0.0.10/31");
    let path = format!("/v1/sales/{sale}");
    let lb = ip("127.0.0.11");
    // From the balancer a header is required, and must be valid.
    let r = send(gw.port, lb, b"", &path, "");
    assert_eq!(
        r.status, 400,
        "no PROXY header from a trusted peer: {}",
        r.body
    );
    let r = send(gw.port, lb, b"PROXY TCP4 nonsense\r\n", &path, "");
    assert_eq!(r.status, 400, "{}", r.body);
    // Its health checks (v2 LOCAL) are served.
    assert_eq!(send(gw.port, lb, &v2_local(), "/healthz", "").status, 200);
    // The internal listener is fronted by no balancer: nobody needs a header there (an
    // operator or a scraper on the balancer's host included), and a header from anyone
    // is refused.
    let r = send(gw.internal_port, lb, b"", "/metrics", "");
    assert_eq!(r.status, 200, "internal, no PROXY header: {}", r.body);
    let r = send(gw.internal_port, lb, &v2_local(), "/metrics", "");
    assert_eq!(r.status, 400, "internal, a PROXY header: {}", r.body);
    let r = send(
        gw.internal_port,
        ip("127.0.0.7"),
        &v1(ip("127.0.0.8")),
        "/metrics",
        "",
    );
    assert_eq!(r.status, 400, "internal, untrusted header: {}", r.body);
    // Two buyers behind the balancer: separate budgets, whatever X-Forwarded-For says.
    let a = reads(4, || {
        send(
            gw.port,
            lb,
            &v1(ip("127.0.0.2")),
            &path,
            "X-Forwarded-For: 127.0.0.3\r\n",
        )
    });
    assert_eq!(a, vec![200, 200, 200, 429], "buyer 127.0.0.2 via PROXY v1");
    let b = reads(4, || send(gw.port, lb, &v2(ip("127.0.0.3")), &path, ""));
    assert_eq!(
        b,
        vec![200, 200, 200, 429],
        "buyer 127.0.0.3 via PROXY v2 has its own budget"
    );
    // The balancer's own address was never charged.
    assert_eq!(send(gw.port, lb, &v2(lb), &path, "").status, 200);
    // A peer outside the trusted list cannot use a header.
    let r = send(gw.port, ip("127.0.0.7"), &v1(ip("127.0.0.8")), &path, "");
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn balancer_haproxy_keeps_each_buyers_budget() {
    if stackctl::haproxy::haproxy_bin().is_err() {
        eprintln!("skipped: haproxy is not installed (./dev setup)");
        return;
    }
    let (gw, sale) = gateway("127.0.0.1");
    let path = format!("/v1/sales/{sale}");
    let run = std::env::temp_dir().join(format!("seckill-balancer-{}", harness::unique("t")));
    let mut lb = stackctl::haproxy::Balancer::new(&run, "t");
    lb.stop_on_drop = true;
    let port = stackctl::process::free_port();
    let plan = stackctl::haproxy::Plan {
        port,
        stable: vec![SocketAddr::from(([127, 0, 0, 1], gw.port)).to_string()],
        canary: vec![],
        canary_permille: 0,
        canary_header: false,
    };
    // Its /readyz checks pass only if the gateway accepts its PROXY headers.
    lb.start(&plan, true)
        .expect("HAProxy up with the gateway healthy behind it");
    let via = |from: &str| send(port, ip(from), b"", &path, "Connection: close\r\n");
    let a = reads(4, || via("127.0.0.2"));
    assert_eq!(
        a,
        vec![200, 200, 200, 429],
        "buyer 127.0.0.2 through HAProxy"
    );
    let b = reads(3, || via("127.0.0.3"));
    assert_eq!(
        b,
        vec![200, 200, 200],
        "buyer 127.0.0.3 is not charged for 127.0.0.2"
    );
    let r = via("127.0.0.3");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("x-seckill-pool"), Some("stable"));
    lb.stop();
    let _ = std::fs::remove_dir_all(&run);
}
