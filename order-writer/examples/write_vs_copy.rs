//! The writer's rows per second next to PostgreSQL `COPY` of the same rows, in one run
//! on the local stack. Each round measures, back to back:
//! 1. `COPY … FROM STDIN` of the rows into a fresh table of the same shape (same
//!    indexes, no foreign key) — the reference;
//! 2. the batch write alone (`db::write_batch`, `batch_max` rows per transaction);
//! 3. the full writer (topic → batches → PostgreSQL → offsets) on a topic filled
//!    beforehand, timed from start-up to the last row in PostgreSQL.
//!
//! Everything runs in a fresh database of its own (dropped at the end), so the writer's
//! `orders` table starts as empty as the reference's table and the project's is untouched.
//! The machine may be shared, so there are several rounds and the medians are reported.
//! `cargo run --release -p order-writer --example write_vs_copy [rows=50000] [batch_max] [rounds=3]`
//! The last line is machine-readable: `median rows/s: writer W write-alone S copy C`.

use order_writer::config::Config;
use order_writer::consumer::Writer;
use order_writer::metrics::Metrics;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use seckill_common::order::{OrderEvent, OrderMessage};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

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

fn count(db: &mut postgres::Client, sale: &str) -> Res<i64> {
    Ok(db
        .query_one("SELECT count(*) FROM orders WHERE sale = $1", &[&sale])?
        .get(0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Bench {
    stack: seckill_common::stack::Stack,
    db: postgres::Client,
    n: u64,
    batch: usize,
    tag: String,
}

impl Bench {
    fn copy(&mut self, round: usize) -> Res<f64> {
        let table = format!("bench_copy_{}_{round}", self.tag);
        self.db.batch_execute(&format!(
            "CREATE TABLE {table} (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        ))?;
        let mut text = Vec::with_capacity(self.n as usize * 80);
        for m in rows(&format!("bench_c_{}_{round}", self.tag), self.n) {
            writeln!(
                text,
                "{}\t{}\t{}\t1\t1\treserved\t{}",
                m.order_id, m.sale, m.user, "2026-11-24 00:00:00+00"
            )?;
        }
        let t = Instant::now();
        let mut w = self.db.copy_in(&format!("COPY {table} (order_id, sale, user_id, units, per_user_limit, status, accepted_at) FROM STDIN"))?;
        w.write_all(&text)?;
        w.finish()?;
        let rate = self.n as f64 / t.elapsed().as_secs_f64();
        self.db.batch_execute(&format!("DROP TABLE {table}"))?;
        Ok(rate)
    }

    fn write_alone(&mut self, round: usize) -> Res<f64> {
        let sale = format!("bench_s_{}_{round}", self.tag);
        let msgs = rows(&sale, self.n);
        let t = Instant::now();
        for chunk in msgs.chunks(self.batch) {
            let refs: Vec<&OrderMessage> = chunk.iter().collect();
            order_writer::db::write_batch(&mut self.db, &refs)?;
        }
        let rate = self.n as f64 / t.elapsed().as_secs_f64();
        self.forget(&sale)?;
        Ok(rate)
    }

    fn writer(&mut self, round: usize) -> Res<f64> {
        let topic = format!("bench_orders_{}_{round}", self.tag);
        seckill_common::kafka::create_topic(&self.stack.kafka_brokers, &topic, 4)?;
        let sale = format!("bench_w_{}_{round}", self.tag);
        let p: ThreadedProducer<_> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.stack.kafka_brokers)
            .set("linger.ms", "5")
            .create()?;
        for m in rows(&sale, self.n) {
            let payload = serde_json::to_vec(&m)?;
            while let Err((e, _)) = p.send(BaseRecord::to(&topic).key(&m.key()).payload(&payload))
            {
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
            database_url: self.stack.database_url.clone(),
            kafka_brokers: self.stack.kafka_brokers.clone(),
            orders_topic: topic,
            group_id: format!("bench_{}_{round}", self.tag),
            batch_max: self.batch as i64,
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::default());
        let writer = Writer::new(cfg, metrics.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || writer.run(&stop))
        };
        let mut last = Instant::now();
        while count(&mut self.db, &sale)? < self.n as i64 {
            if last.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "  ... {} rows after {:.1?}",
                    count(&mut self.db, &sale)?,
                    t.elapsed()
                );
                last = Instant::now();
            }
            if t.elapsed() > Duration::from_secs(600) {
                return Err("writer did not finish in 10 minutes".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t.elapsed().as_secs_f64();
        let rate = self.n as f64 / took;
        let text = metrics.render();
        let metric = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let batches = metric("seckill_writer_batches_total ").max(1.0);
        eprintln!(
            "  writer: {took:.2} s, of which {:.2} s in database writes; {batches} batches of {:.0} on average",
            metric("seckill_writer_write_seconds_total "),
            metric("seckill_writer_batch_messages_total ") / batches
        );
        stop.store(true, Ordering::Relaxed);
        match handle.join() {
            Ok(r) => r?,
            Err(_) => return Err("writer thread panicked".into()),
        }
        self.forget(&sale)?;
        Ok(rate)
    }

    /// These rows have no Redis reservation; leave nothing for the payment-window scan.
    fn forget(&mut self, sale: &str) -> Res<()> {
        self.db
            .execute("DELETE FROM orders WHERE sale = $1", &[&sale])?;
        self.db.execute("DELETE FROM sales WHERE sale = $1", &[&sale])?;
        Ok(())
    }
}

#[allow(clippy::type_complexity)]
fn measure(b: &mut Bench, rounds: usize) -> Res<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (mut copy, mut alone, mut writer) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "{} order rows per measure, {rounds} rounds, batch_max {}, local stack",
        b.n, b.batch
    );
    for round in 0..rounds {
        copy.push(b.copy(round)?);
        alone.push(b.write_alone(round)?);
        writer.push(b.writer(round)?);
        println!(
            "  round {round}: writer {:>7.0}  write alone {:>7.0}  COPY {:>7.0} rows/s",
            writer[round], alone[round], copy[round]
        );
    }
    Ok((copy, alone, writer))
}

fn main() -> Res<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SECKILL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let arg = |i: usize| std::env::args().nth(i).and_then(|a| a.parse::<u64>().ok());
    let n = arg(1).unwrap_or(50_000).max(1);
    let batch = arg(2).unwrap_or(Config::default().batch_max as u64).max(1) as usize;
    let rounds = arg(3).unwrap_or(3).max(1) as usize;
    let mut stack = stackctl::ensure_up();
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let mut admin = order_writer::db::connect(&stack.database_url, 60_000)?;
    let name = format!("bench_writer_{tag}");
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let (base, _) = stack
        .database_url
        .rsplit_once('/')
        .ok_or("database URL without a database name")?;
    stack.database_url = format!("{base}/{name}");
    let mut db = order_writer::db::connect(&stack.database_url, 60_000)?;
    order_writer::db::migrate(&mut db)?;
    let mut b = Bench {
        stack,
        db,
        n,
        batch,
        tag,
    };
    let measured = measure(&mut b, rounds);
    drop(b);
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))?;
    let (copy, alone, writer) = measured?;
    let (w, s, c) = (median(writer), median(alone), median(copy));
    println!("  order-writer (topic -> PostgreSQL, offsets committed): {w:>9.0} rows/s  ({:.2} of COPY)", w / c);
    println!("  batch write alone (db::write_batch, {batch}/batch):      {s:>9.0} rows/s  ({:.2} of COPY)", s / c);
    println!("  COPY FROM STDIN (same rows, same indexes):            {c:>9.0} rows/s");
    println!("median rows/s: writer {w:.0} write-alone {s:.0} copy {c:.0}");
    Ok(())
}
