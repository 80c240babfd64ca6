//! The gateway over HTTP, as a separate process on the real local stack: rate limits,
//! switches (central and local), the Redis breaker, hostile bodies and Redis auth.

mod harness;

use harness::{Gateway, Options, PrivateRedis};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn rate_limits_answer_429_with_retry_after_and_are_live_switches() {
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_USER_RPS", "1".into()),
            ("SECKILL_USER_BURST", "3".into()),
        ],
        ..Default::default()
    });
    let sale = gw.open_sale("limits", 100);
    let codes: Vec<u16> = (0..5).map(|_| gw.token(&sale, 9).status).collect();
    assert_eq!(codes, vec![201, 201, 201, 429, 429]);
    let r = gw.token(&sale, 9);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (429, "rate_limited", Some("1"))
    );
    assert_eq!(
        gw.token(&sale, 10).status,
        201,
        "another user is not limited"
    );
    assert!(gw.metric("seckill_limited_total{limit=\"user\"}") >= 3.0);

    // Raise the per-user rate live; the change is audited.
    let body = r#"{"rates":{"global_rps":100000,"global_burst":100000,"user_rps":1000,"user_burst":1000,"ip_rps":100000,"ip_burst":100000}}"#;
    let set = gw
        .internal()
        .post("/admin/switches", Some(&Gateway::admin_auth()), Some(body));
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(gw.token(&sale, 9).status, 201);
    assert_eq!(
        gw.metric("seckill_switch_rate{limit=\"user_burst\"}"),
        1000.0
    );
    let audit = std::fs::read_to_string(&gw.audit).unwrap();
    assert!(
        audit.contains("\"set_switches\"") && audit.contains("\"user_burst\":1000"),
        "{audit}"
    );

    // Admission ratio 0: every token request is shed with 503 + Retry-After.
    let set = gw.internal().post(
        "/admin/switches",
        Some(&Gateway::admin_auth()),
        Some(r#"{"admission_ratio":0.0}"#),
    );
    assert_eq!(set.status, 200);
    let r = gw.token(&sale, 11);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (503, "admission_shed", Some("1"))
    );
    let bad = gw.internal().post(
        "/admin/switches",
        Some(&Gateway::admin_auth()),
        Some(r#"{"admission_ratio":2}"#),
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn the_breaker_opens_while_redis_is_stopped_and_closes_after() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        env: vec![
            ("SECKILL_REDIS_TIMEOUT_MS", "100".into()),
            ("SECKILL_BREAKER_THRESHOLD", "3".into()),
            ("SECKILL_BREAKER_COOL_OFF_MS", "300".into()),
        ],
        ..Default::default()
    });
    let sale = gw.open_sale("breaker", 1000);
    assert_eq!(gw.token(&sale, 1).status, 201);
    redis.signal("-STOP");
    // The first few calls time out (100 ms); then the breaker answers at once.
    for u in 0..5 {
        let r = gw.token(&sale, 100 + u);
        assert_eq!((r.status, r.code().as_str()), (503, "redis_unavailable"));
    }
    assert_eq!(gw.metric("seckill_redis_breaker_open"), 1.0);
    let t0 = Instant::now();
    let fast: Vec<u16> = (0..20).map(|u| gw.token(&sale, 200 + u).status).collect();
    let each = t0.elapsed() / 20;
    assert!(fast.iter().all(|s| *s == 503), "{fast:?}");
    assert!(
        each < Duration::from_millis(50),
        "fails fast while open: {each:?} per request"
    );
    assert_eq!(gw.get("/readyz", None).status, 503);
    redis.signal("-CONT");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if gw.token(&sale, 999).status == 201 {
            break;
        }
        assert!(
            Instant::now() < end,
            "breaker never closed after Redis resumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.metric("seckill_redis_breaker_open"), 0.0);
    gw.wait_ready(Duration::from_secs(5));
}

#[test]
fn bad_bodies_are_refused_and_a_slow_client_stalls_no_one() {
    let gw = Arc::new(Gateway::start());
    let sale = gw.open_sale("input", 100);
    // Oversized: refused with 413 and the connection closed, without reading the body.
    let big = format!("POST /v1/sales/{sale}/orders HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: 10000000\r\n\r\n{{\"token\":", gw.ticket(1));
    let r = gw.raw(big.as_bytes());
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Connection")),
        (413, "body_too_large", Some("close"))
    );
    // Malformed Content-Length (RFC 9112: digits only): 400 and the connection closed,
    // so what follows the head is never read as another request.
    for len in ["12abc", "+5", "1 2", "-1"] {
        let smuggled = "GET /healthz HTTP/1.1\r\n\r\n";
        let bad = format!("POST /v1/sales/{sale}/orders HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: {len}\r\n\r\n{smuggled}", gw.ticket(1));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bad.as_bytes()).unwrap();
        let r = harness::read_response(&mut s);
        assert_eq!(
            (r.status, r.code().as_str(), r.header("Connection")),
            (400, "malformed_request", Some("close")),
            "Content-Length: {len}"
        );
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "a second answer after Content-Length {len:?}: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    // Garbage instead of HTTP: the connection is dropped, the server lives on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").unwrap();
    drop(s);
    assert_eq!(gw.get("/healthz", None).status, 200);

    // A client dribbling its headers one byte at a time, while others are served.
    let port = gw.port;
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: yes" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for u in 0..50 {
        assert_eq!(gw.token(&sale, 1000 + u).status, 201);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "others were served while the slow client dribbled: {:?}",
        t0.elapsed()
    );
    slow.join().unwrap();
    // An endless header is cut off at the header limit.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nX-Long: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40_000));
    let _ = s.write_all(&head);
    let r = harness::read_response(&mut s);
    assert_eq!(r.status, 431);
}

#[test]
fn switches_set_through_one_gateway_are_followed_by_another_and_a_local_override_wins() {
    let cluster = harness::unique("cluster");
    let env = || vec![("SECKILL_CLUSTER", cluster.clone())];
    let a = Gateway::start_with(Options {
        env: env(),
        ..Default::default()
    });
    let b = Gateway::start_with(Options {
        env: env(),
        ..Default::default()
    });
    let sale = a.open_sale("follow", 10);
    let admin = Gateway::admin_auth();
    let set = a.internal().post(
        "/admin/switches",
        Some(&admin),
        Some(r#"{"pause_all":true}"#),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let t0 = Instant::now();
    while b.token(&sale, 1).code() != "sale_paused" {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "b did not follow within one second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.metric("seckill_switch_pause_all"), 1.0);
    // A local override on b wins over the central value; a does not see it.
    let local = b.internal().post(
        "/admin/switches/local",
        Some(&admin),
        Some(r#"{"pause_all":false}"#),
    );
    assert_eq!(local.status, 200, "{}", local.body);
    // (User 1 may hold its ten live tokens from the polling above.)
    assert_eq!(b.token(&sale, 4).status, 201);
    assert_eq!(a.token(&sale, 2).code(), "sale_paused");
    assert_eq!(b.metric("seckill_switch_local_override"), 1.0);
    let cleared = b
        .internal()
        .request("DELETE", "/admin/switches/local", Some(&admin), None);
    assert_eq!(cleared.status, 200);
    assert_eq!(b.token(&sale, 3).code(), "sale_paused");
    // Resume centrally; the audit stream has every change, with its actor.
    assert_eq!(
        a.internal()
            .post(
                "/admin/switches",
                Some(&admin),
                Some(r#"{"pause_all":false}"#)
            )
            .status,
        200
    );
    let audit = a.internal().get("/admin/audit", Some(&admin));
    let actions: Vec<String> = audit.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        actions.starts_with(&[
            "set_switches".to_string(),
            "clear_local_override".into(),
            "set_local_override".into(),
            "set_switches".into()
        ]),
        "{actions:?}"
    );
    // A value that is not a switch value is refused and changes nothing.
    assert_eq!(
        a.internal()
            .post(
                "/admin/switches",
                Some(&admin),
                Some(r#"{"order_sink":"carrier_pigeon"}"#)
            )
            .status,
        400
    );
    assert_eq!(
        a.internal().get("/admin/switches", Some(&admin)).json()["effective"]["order_sink"],
        "auto"
    );
}

#[test]
fn with_the_switch_store_down_the_last_values_stay_and_a_local_override_works() {
    let redis = PrivateRedis::start();
    let gw = Gateway::start_with(Options {
        redis_url: Some(redis.url()),
        ..Default::default()
    });
    let admin = Gateway::admin_auth();
    let set = gw.internal().post(
        "/admin/switches",
        Some(&admin),
        Some(r#"{"admission_ratio":0.5}"#),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(gw.metric("seckill_switch_store_up"), 1.0);
    redis.signal("-STOP");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.metric("seckill_switch_store_up"), 0.0);
    assert_eq!(
        gw.metric("seckill_switch_admission_ratio"),
        0.5,
        "the last known value stays"
    );
    // A central change cannot be stored: refused, with the way out in the message.
    let central = gw.internal().post(
        "/admin/switches",
        Some(&admin),
        Some(r#"{"admission_ratio":1.0}"#),
    );
    assert_eq!(
        (central.status, central.code().as_str()),
        (503, "switch_store_unreachable")
    );
    // A local override is taken at once.
    let local = gw.internal().post(
        "/admin/switches/local",
        Some(&admin),
        Some(r#"{"admission_ratio":0.9}"#),
    );
    assert_eq!(local.status, 200, "{}", local.body);
    assert_eq!(gw.metric("seckill_switch_admission_ratio"), 0.9);
    redis.signal("-CONT");
    let end = Instant::now() + Duration::from_secs(5);
    while gw.metric("seckill_switch_store_up") != 1.0 {
        assert!(Instant::now() < end, "the store never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        gw.metric("seckill_switch_admission_ratio"),
        0.9,
        "the override still wins"
    );
    gw.internal()
        .request("DELETE", "/admin/switches/local", Some(&admin), None);
    assert_eq!(
        gw.metric("seckill_switch_admission_ratio"),
        0.5,
        "back to the central value"
    );
}

#[test]
fn the_password_in_the_redis_url_is_used_and_a_wrong_one_keeps_the_gateway_unready() {
    let redis = PrivateRedis::start();
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret-pw")
        .query::<()>(&mut c)
        .unwrap();
    let good = Gateway::start_with(Options {
        redis_url: Some(format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port)),
        ..Default::default()
    });
    let sale = good.open_sale("auth", 5);
    let t = good.token(&sale, 1);
    assert_eq!(t.status, 201, "{}", t.body);
    let o = good.order(&sale, 1, t.json()["token"].as_str().unwrap());
    assert_eq!(o.status, 202, "{}", o.body);

    let stack = stackctl::ensure_up();
    let bad = Gateway::start_with(Options {
        redis_url: Some(format!("redis://:wrong@127.0.0.1:{}", redis.port)),
        // Given explicitly: do not wait for readiness, which must never come.
        brokers: Some(stack.kafka_brokers),
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bad.get("/readyz", None).status, 503);
    let r = bad.token(&sale, 2);
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "redis_unavailable"),
        "{}",
        r.body
    );
}

#[test]
fn sale_state_order_status_and_pay_are_rate_limited() {
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_IP_RPS", "1".into()),
            ("SECKILL_IP_BURST", "5".into()),
        ],
        ..Default::default()
    });
    let sale = gw.open_sale("reads", 5);
    let states: Vec<u16> = (0..20)
        .map(|_| gw.get(&format!("/v1/sales/{sale}"), None).status)
        .collect();
    assert!(states.contains(&429), "{states:?}");
    let limited = gw.get(&format!("/v1/sales/{sale}"), None);
    if limited.status == 429 {
        assert!(limited.header("Retry-After").is_some());
    }
    let statuses: Vec<u16> = (0..20)
        .map(|_| {
            gw.get(&format!("/v1/orders/{sale}-1"), Some(&gw.ticket(3)))
                .status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let pays: Vec<u16> = (0..20)
        .map(|_| {
            gw.post(
                &format!("/v1/orders/{sale}-1/pay"),
                Some(&gw.ticket(4)),
                None,
            )
            .status
        })
        .collect();
    assert!(pays.contains(&429), "{pays:?}");
}

#[test]
fn a_buyer_cannot_hoard_purchase_tokens() {
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_MAX_LIVE_TOKENS", "3".into())],
        ..Default::default()
    });
    let sale = gw.open_sale("hoard", 5);
    for _ in 0..3 {
        assert_eq!(gw.token(&sale, 9).status, 201);
    }
    let r = gw.token(&sale, 9);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (429, "too_many_tokens", Some("10")),
        "{}",
        r.body
    );
    assert_eq!(gw.token(&sale, 10).status, 201, "others are not affected");
}

#[test]
fn a_client_pipelining_metrics_pages_is_rate_limited() {
    let gw = Gateway::start_with(Options {
        env: vec![
            ("SECKILL_METRICS_IP_RPS", "5".into()),
            ("SECKILL_METRICS_IP_BURST", "10".into()),
        ],
        ..Default::default()
    });
    let codes: Vec<u16> = (0..40)
        .map(|_| gw.internal().get("/metrics", None).status)
        .collect();
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!((10..=15).contains(&ok), "{ok} full pages: {codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    let r = gw.internal().get("/metrics", None);
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    assert!(r.header("Retry-After").is_some());
}
