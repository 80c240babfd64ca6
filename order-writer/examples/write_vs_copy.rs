//! The writer's rows per second next to PostgreSQL `COPY` of the same rows, in one run
//! on the local stack:
//! 1. the full writer (topic → batches → `INSERT … UNNEST` → offsets), on a pre-filled topic;
//! 2. the batch statement alone, 1000 rows per batch;
//! 3. `COPY … FROM STDIN` of the same rows into a table of the same shape.
//! `cargo run --release -p order-writer --example write_vs_copy [rows]`

use order_writer::config::Config;
use order_writer::consumer::Writer;
use order_writer::metrics::Metrics;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use seckill_common::order::{OrderEvent, OrderMessage};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rows(sale: &str, n: u64) -> Vec<OrderMessage> {
    (1..=n)
        .map(|i| OrderMessage {
            event: OrderEvent::Reserved,
            order_id: format!("{sale}-{i}"),
            sale: sale.into(),
            user: i,
            units: 1,
            per_user_limit: 1,
            at_ms: 1_795_000_000_000 + i as i64,
            definition: None,
        })
        .collect()
}

fn count(db: &mut postgres::Client, table: &str, sale: &str) -> i64 {
    db.query_one(
        &format!("SELECT count(*) FROM {table} WHERE sale = $1"),
        &[&sale],
    )
    .map(|r| r.get(0))
    .unwrap_or(-1)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SECKILL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000);
    let stack = stackctl::ensure_up();
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let mut db = order_writer::db::connect(&stack.database_url, 60_000)?;
    order_writer::db::migrate(&mut db)?;

    // 1. The whole writer, on a topic filled beforehand.
    let topic = format!("bench_orders_{tag}");
    seckill_common::kafka::create_topic(&stack.kafka_brokers, &topic, 4)?;
    let sale1 = format!("bench_w_{tag}");
    let p: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .set("linger.ms", "5")
        .create()?;
    for m in rows(&sale1, n) {
        let payload = serde_json::to_vec(&m)?;
        while let Err((e, _)) = p.send(BaseRecord::to(&topic).key(&m.key()).payload(&payload)) {
            if !matches!(
                e.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
            ) {
                return Err(e.into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    p.flush(Duration::from_secs(120))?;
    let cfg = Config {
        database_url: stack.database_url.clone(),
        kafka_brokers: stack.kafka_brokers.clone(),
        orders_topic: topic,
        group_id: format!("bench_{tag}"),
        ..Config::default()
    };
    let writer = Writer::new(cfg, Arc::new(Metrics::default()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || writer.run(&stop))
    };
    let mut last = Instant::now();
    while count(&mut db, "orders", &sale1) < n as i64 {
        if last.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  ... {} rows after {:.1?}",
                count(&mut db, "orders", &sale1),
                t0.elapsed()
            );
            last = Instant::now();
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err("writer did not finish in 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let writer_rate = n as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = handle.join();

    // 2. The batch statement alone.
    let sale2 = format!("bench_s_{tag}");
    let msgs = rows(&sale2, n);
    let t1 = Instant::now();
    for chunk in msgs.chunks(1000) {
        let refs: Vec<&OrderMessage> = chunk.iter().collect();
        order_writer::db::write_batch(&mut db, &refs)?;
    }
    let stmt_rate = n as f64 / t1.elapsed().as_secs_f64();

    // 3. COPY of the same rows into a table of the same shape (same indexes).
    db.batch_execute("CREATE TABLE IF NOT EXISTS bench_orders_copy (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)")?;
    let sale3 = format!("bench_c_{tag}");
    let mut text = Vec::with_capacity(n as usize * 80);
    for m in rows(&sale3, n) {
        writeln!(
            text,
            "{}\t{}\t{}\t1\t1\treserved\t{}",
            m.order_id, m.sale, m.user, "2026-11-24 00:00:00+00"
        )?;
    }
    let t2 = Instant::now();
    let mut w = db.copy_in("COPY bench_orders_copy (order_id, sale, user_id, units, per_user_limit, status, accepted_at) FROM STDIN")?;
    w.write_all(&text)?;
    w.finish()?;
    let copy_rate = n as f64 / t2.elapsed().as_secs_f64();
    db.batch_execute("DROP TABLE bench_orders_copy")?;
    // These rows have no Redis reservation; leave nothing for the payment-window scan.
    db.execute(
        "DELETE FROM orders WHERE sale = ANY($1)",
        &[&vec![sale1.clone(), sale2.clone()]],
    )?;

    println!("{n} order rows, one run, local stack");
    println!("  order-writer (topic -> PostgreSQL, offsets committed): {writer_rate:>9.0} rows/s  ({:.2} of COPY)", writer_rate / copy_rate);
    println!("  batch statement alone (INSERT ... UNNEST, 1000/batch):  {stmt_rate:>9.0} rows/s  ({:.2} of COPY)", stmt_rate / copy_rate);
    println!("  COPY FROM STDIN (same rows, same indexes):            {copy_rate:>9.0} rows/s");
    Ok(())
}
