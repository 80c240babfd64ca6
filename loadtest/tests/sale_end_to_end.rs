//! A sale through the real gateway and order-writer processes on the local stack:
//! every 202 order id ends in PostgreSQL exactly once, nothing else does, and the
//! other invariants hold.

use loadtest::buyer::Client;
use loadtest::verify;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A workspace binary, built beside this test by `cargo test --workspace` / nextest.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: build the workspace first (cargo build -p {name})",
        path.display()
    );
    path
}

/// A gateway and an order-writer on the local stack, with their own topic and group.
struct Services {
    stack: seckill_common::stack::Stack,
    topic: String,
    base: String,
    tag: String,
    _procs: Vec<stackctl::process::Proc>,
}

const SECRET: &str = "e2e-secret";
const ADMIN: &str = "e2e-admin";

impl Services {
    fn start() -> Services {
        let stack = stackctl::ensure_up();
        let ctl = stackctl::Stack::from_env().unwrap();
        // Unique per run and per test (tests of one binary start in the same millisecond):
        // each gateway gets its own name, spool and log.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tag = format!(
            "{}_{}_{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let topic = format!("orders_e2e_{tag}");
        seckill_common::kafka::create_topic(&stack.kafka_brokers, &topic, 4).unwrap();
        let common = [
            ("SECKILL_ORDERS_TOPIC", topic.clone()),
            ("SECKILL_LOG", "warn".to_string()),
        ];
        let gw = ctl
            .gateway(
                &binary("gateway"),
                &format!("e2e-gw-{tag}"),
                &[
                    &common[..],
                    &[
                        ("SECKILL_TICKET_SECRET", SECRET.to_string()),
                        ("SECKILL_ADMIN_TOKEN", ADMIN.to_string()),
                        ("SECKILL_IP_RPS", "1000000".to_string()),
                        ("SECKILL_IP_BURST", "1000000".to_string()),
                    ],
                ]
                .concat(),
            )
            .unwrap();
        let wr = ctl
            .writer(
                &binary("order-writer"),
                &format!("e2e-writer-{tag}"),
                &[&common[..], &[("SECKILL_GROUP_ID", format!("writers_{tag}"))]].concat(),
            )
            .unwrap();
        let base = gw.url();
        let client = Client::new(&base, SECRET);
        let end = Instant::now() + Duration::from_secs(20);
        while client.sale("x").map(|a| a.status).unwrap_or(0) == 0 {
            assert!(Instant::now() < end, "gateway did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Services {
            stack,
            topic,
            base,
            tag,
            _procs: vec![gw, wr],
        }
    }
}

#[test]
fn a_sale_through_the_gateway_ends_in_postgres_exactly_once() {
    let svc = Services::start();
    let (stack, topic, base, tag) = (&svc.stack, &svc.topic, &svc.base, &svc.tag);
    let client = Client::new(base, SECRET);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let sale = format!("e2e_{tag}");
    client
        .create_sale(ADMIN, &sale, 200, now - 1000, now + 600_000)
        .unwrap();
    let record = loadtest::rush::rush(base, SECRET, &sale, 800, 16, |_| {}).unwrap();
    // Every unit sold once; a double-click retried with its token is answered 202 with
    // the same order again, so there are more 202 answers than orders.
    let orders: std::collections::HashSet<&str> =
        record.acked.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(orders.len(), 200, "{:?}", record.answers);

    let report = verify::verify_sale(stack, topic, &sale, &record.acked, &record.tokens)
        .unwrap()
        .report;
    report.print();
    assert!(report.ok());
}

/// The CI-size smoke of a Goose run: `seckill-load rush` then its own verification.
#[test]
fn a_goose_rush_passes_its_verification() {
    let svc = Services::start();
    let out = std::env::temp_dir().join(format!("seckill-load-{}", svc.tag));
    let run = Command::new(binary("seckill-load"))
        .args(["rush", "--host", &svc.base, "--units", "150", "--out"])
        .arg(&out)
        .args([
            "--",
            "--users",
            "8",
            "--increase-rate",
            "8",
            "--run-time",
            "5s",
            "--quiet",
        ])
        .env("SECKILL_TICKET_SECRET", SECRET)
        .env("SECKILL_ADMIN_TOKEN", ADMIN)
        .env("SECKILL_ORDERS_TOPIC", &svc.topic)
        .env("SECKILL_REDIS_URL", &svc.stack.redis_url)
        .env("SECKILL_KAFKA_BROKERS", &svc.stack.kafka_brokers)
        .env("SECKILL_DATABASE_URL", &svc.stack.database_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "seckill-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("PASS every 202 is in PostgreSQL exactly once: 150 of 150"),
        "{summary}"
    );
    assert!(
        summary.contains("PASS every token used at most once: 150 tokens"),
        "{summary}"
    );
    assert!(!summary.contains("FAIL"), "{summary}");
    for f in ["report.html", "report.json", "acked.csv", "latency.md"] {
        assert!(out.join(f).exists(), "{f} written");
    }
}
