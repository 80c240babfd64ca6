//! A sale through the real gateway and order-writer processes on the local stack:
//! every 202 order id ends in PostgreSQL exactly once, nothing else does, and the
//! other invariants hold.

use loadtest::buyer::Client;
use loadtest::verify;
use std::process::Command;

mod common;
use common::{binary, Services};

const SECRET: &str = "e2e-secret";
const ADMIN: &str = "e2e-admin";

fn start() -> Services {
    Services::start("e2e", SECRET, ADMIN, &[], &[])
}

#[test]
fn a_sale_through_the_gateway_ends_in_postgres_exactly_once() {
    let svc = start();
    let (stack, topic, base, tag) = (&svc.stack, &svc.topic, &svc.base, &svc.tag);
    let client = Client::new(base, SECRET).with_internal(&svc.internal);
    let now = common::now_ms();
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
    let svc = start();
    let out = std::env::temp_dir().join(format!("seckill-load-{}", svc.tag));
    let run = Command::new(binary("seckill-load"))
        .args(["rush", "--host", &svc.base, "--units", "150", "--out"])
        .arg(&out)
        .args(["--admin-url", &svc.internal])
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
