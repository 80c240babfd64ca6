//! The gateway over HTTP, as a separate process on the real local stack: the order
//! sink — Kafka refused or unconfirmed, the durable spool and its replay — and
//! start-up and shutdown.

mod harness;

use harness::{consume, Gateway, Options};
use std::time::Duration;

#[test]
fn with_the_sink_on_kafka_and_no_broker_an_order_is_refused_before_anything_is_reserved() {
    // No broker listens here; the sink is Kafka only (no spool), so orders are refused,
    // and refused before the purchase script runs: no unit is ever held for them.
    let nowhere = format!("127.0.0.1:{}", harness::free_port());
    let env = vec![
        ("SECKILL_KAFKA_TIMEOUT_MS", "1000".into()),
        ("SECKILL_ORDER_SINK", "kafka".into()),
    ];
    let gw = Gateway::start_with(Options {
        brokers: Some(nowhere),
        env,
        ..Default::default()
    });
    assert_eq!(
        gw.get("/readyz", None).status,
        503,
        "not ready without a broker"
    );
    let sale = gw.open_sale("nobroker", 1);
    let t = gw.token(&sale, 5).field("token");
    // The health loop has seen the broker missing (it asks every second).
    std::thread::sleep(Duration::from_millis(2500));
    let r = gw.order(&sale, 5, &t);
    assert_eq!(
        (r.status, r.code().as_str(), r.header("Retry-After")),
        (503, "order_sink_unavailable", Some("1")),
        "{}",
        r.body
    );
    let mut s = stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap());
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (1, 0, 0), "nothing held");
    assert_eq!(s.buyers(&sale).unwrap(), vec![], "the buyer may try again");
    assert_eq!(
        gw.metric("seckill_stock_released_on_sink_failure_total"),
        0.0,
        "nothing had to be released"
    );
    // The token was not spent: the same order goes through once a broker is back.
    assert_eq!(s.purchase(&sale, 5, &t).map(|p| p.remaining), Ok(0));
}

#[test]
fn an_order_whose_delivery_is_unconfirmed_is_spooled_and_acknowledged_even_on_the_kafka_sink() {
    // The broker is up, but the topic does not exist: every delivery report fails. Such
    // a failure does not prove the order is not in the log (a timed-out request may have
    // been written), so refusing it could leave an order the buyer was told failed.
    let env = vec![
        ("SECKILL_KAFKA_TIMEOUT_MS", "1500".into()),
        ("SECKILL_ORDER_SINK", "kafka".into()),
        ("SECKILL_ORDERS_TOPIC", harness::unique("no_such_topic")),
    ];
    let gw = Gateway::start_with(Options {
        env,
        ..Default::default()
    });
    let sale = gw.open_sale("unconfirmed", 2);
    let r = gw.buy(&sale, 5);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["spooled"], true);
    let st = stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap())
        .state(&sale)
        .unwrap();
    assert_eq!(
        (st.remaining, st.held),
        (1, 1),
        "the unit stays with its order"
    );
    assert_eq!(
        gw.metric("seckill_stock_released_on_sink_failure_total"),
        0.0
    );
}

#[test]
fn a_second_gateway_on_an_address_or_a_spool_in_use_refuses_to_start() {
    let gw = Gateway::start();
    let spawn = |listen: String, spool: std::path::PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env("SECKILL_LISTEN", listen)
            .env(
                "SECKILL_INTERNAL_LISTEN",
                format!("127.0.0.1:{}", harness::free_port()),
            )
            .env("SECKILL_SPOOL_DIR", spool)
            .env("SECKILL_REDIS_URL", &gw.redis_url)
            .env("SECKILL_KAFKA_BROKERS", &gw.brokers)
            .env("SECKILL_DEV_INSECURE", "1")
            .env(
                "SECKILL_AUDIT_LOG",
                std::env::temp_dir().join(harness::unique("audit")),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = |mut c: std::process::Child| {
        let end = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status, err);
            }
            if std::time::Instant::now() > end {
                let _ = c.kill();
                panic!("the second gateway kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let own_spool = std::env::temp_dir().join(harness::unique("spool"));
    let (status, err) = wait(spawn(format!("127.0.0.1:{}", gw.port), own_spool));
    assert!(!status.success());
    assert!(err.contains(&format!("127.0.0.1:{}", gw.port)), "{err}");
    let first_spool = gw.audit.parent().unwrap().join("spool");
    let (status, err) = wait(spawn(
        format!("127.0.0.1:{}", harness::free_port()),
        first_spool,
    ));
    assert!(!status.success());
    assert!(err.contains("in use by another gateway"), "{err}");
    // The first one never noticed.
    assert_eq!(gw.get("/readyz", None).status, 200);
}

#[test]
fn a_spool_larger_than_the_producer_queue_replays_completely() {
    // 250,000 spooled orders: more than librdkafka's 200,000-message queue.
    const N: usize = 250_000;
    let dir = std::env::temp_dir().join(harness::unique("bigspool"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::with_capacity(N * 130);
    for i in 0..N {
        text.push_str(&format!(
            r#"{{"event":"reserved","order_id":"big-{i}","sale":"big","user":{i},"units":1,"per_user_limit":1,"at_ms":1}}"#
        ));
        text.push('\n');
    }
    std::fs::write(dir.join("spool-000000000000001-000001.jsonl"), text).unwrap();
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_SPOOL_DIR", dir.display().to_string())],
        ..Default::default()
    });
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while gw.metric("seckill_spool_pending") > 0.0 {
        assert!(
            std::time::Instant::now() < end,
            "spool not drained: {} pending",
            gw.metric("seckill_spool_pending")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(gw.metric("seckill_spool_replayed_total"), N as f64);
    let ids: std::collections::HashSet<String> =
        consume(&gw.brokers, &gw.topic, N, Duration::from_secs(60))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    assert_eq!(ids.len(), N, "every spooled order reached the topic");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("jsonl"))
        .collect();
    assert!(left.is_empty(), "replayed files are deleted: {left:?}");
}

#[test]
fn without_a_broker_orders_go_to_the_durable_spool() {
    let nowhere = format!("127.0.0.1:{}", harness::free_port());
    let gw = Gateway::start_with(Options {
        brokers: Some(nowhere),
        env: vec![("SECKILL_KAFKA_TIMEOUT_MS", "1000".into())],
        ..Default::default()
    });
    gw.wait_ready(Duration::from_secs(10));
    let sale = gw.open_sale("spool", 5);
    let r = gw.buy(&sale, 5);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["spooled"], true);
    let id = r.field("order_id");
    let spool = gw.audit.parent().unwrap().join("spool");
    let on_disk: String = std::fs::read_dir(&spool)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert!(
        on_disk.contains(&format!("\"order_id\":\"{id}\"")),
        "{on_disk}"
    );
    assert_eq!(
        gw.metric("seckill_spooled_total"),
        2.0,
        "the sale definition and the order"
    );
    assert_eq!(gw.metric("seckill_spool_pending"), 2.0);
    let st = stock::Stock::new(stock::connect(&gw.redis_url, Duration::from_secs(2)).unwrap())
        .state(&sale)
        .unwrap();
    assert_eq!(
        (st.remaining, st.held),
        (4, 1),
        "the unit stays held for the spooled order"
    );
}

#[test]
fn shutdown_drains_and_exits_cleanly() {
    let mut gw = Gateway::start();
    let sale = gw.open_sale("drain", 10);
    assert_eq!(gw.token(&sale, 1).status, 201);
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("gateway exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // Both listeners are gone with it.
    for port in [gw.port, gw.internal_port] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
