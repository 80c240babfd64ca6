//! A sale through the real gateway and order-writer processes on the local stack:
//! every 202 order id ends in PostgreSQL exactly once, nothing else does, and the
//! other invariants hold.

use loadtest::buyer::Client;
use loadtest::verify;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A workspace binary, built beside this test by `cargo test --workspace` / nextest.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} missing: build the workspace first (cargo build -p {name})", path.display());
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sale_through_the_gateway_ends_in_postgres_exactly_once() {
    let stack = seckill_common::stack::ensure_up();
    let tag = format!("{}_{}", std::process::id(), SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis());
    let topic = format!("orders_e2e_{tag}");
    seckill_common::kafka::create_topic(&stack.kafka_brokers, &topic, 4).unwrap();
    let (port, secret, admin) = (free_port(), "e2e-secret", "e2e-admin");
    let env = |c: &mut Command| {
        c.env("SECKILL_REDIS_URL", &stack.redis_url)
            .env("SECKILL_KAFKA_BROKERS", &stack.kafka_brokers)
            .env("SECKILL_DATABASE_URL", &stack.database_url)
            .env("SECKILL_ORDERS_TOPIC", &topic)
            .env("SECKILL_LOG", "warn")
            .stdout(Stdio::null());
    };
    let mut gw = Command::new(binary("gateway"));
    env(&mut gw);
    gw.env("SECKILL_LISTEN", format!("127.0.0.1:{port}"))
        .env("SECKILL_TICKET_SECRET", secret)
        .env("SECKILL_ADMIN_TOKEN", admin)
        .env("SECKILL_IP_RPS", "1000000")
        .env("SECKILL_IP_BURST", "1000000")
        .env("SECKILL_AUDIT_LOG", std::env::temp_dir().join(format!("e2e-audit-{tag}.jsonl")));
    let _gw = Proc(gw.spawn().unwrap());
    let mut wr = Command::new(binary("order-writer"));
    env(&mut wr);
    wr.env("SECKILL_GROUP_ID", format!("writers_{tag}")).env("SECKILL_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()));
    let _wr = Proc(wr.spawn().unwrap());

    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new(&base, secret);
    let end = Instant::now() + Duration::from_secs(20);
    while client.sale("x").map(|a| a.status).unwrap_or(0) == 0 {
        assert!(Instant::now() < end, "gateway did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let sale = format!("e2e_{tag}");
    client.create_sale(admin, &sale, 200, now - 1000, now + 600_000).unwrap();
    let record = loadtest::rush::rush(&base, secret, &sale, 800, 16, |_| {}).unwrap();
    assert_eq!(record.acked.len(), 200, "{:?}", record.answers);

    let mut redis = stock::Stock::new(stock::connect(&stack.redis_url, Duration::from_secs(2)).unwrap());
    let state = redis.state(&sale).unwrap();
    let buyers = redis.buyers(&sale).unwrap();
    let in_topic = verify::orders_in_topic(&stack.kafka_brokers, &topic, &sale, record.acked.len(), Duration::from_secs(30)).unwrap();
    let in_db = verify::orders_in_db(&stack.database_url, &sale, record.acked.len(), Duration::from_secs(60)).unwrap();
    let report = verify::check(&record.acked, &state, &buyers, &in_topic, Some(&in_db));
    report.print();
    assert!(report.ok());
}
