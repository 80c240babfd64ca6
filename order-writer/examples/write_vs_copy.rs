//! The writer's rows per second next to PostgreSQL `COPY` of the same rows, in one run
//! on the local stack. Each round measures, back to back:
//! 1. `COPY … FROM STDIN` of the rows into the real `orders` table (the migrated schema:
//!    primary key, checks, the foreign key to `sales` with the referenced sale row
//!    present, both partial indexes) — the like-for-like reference;
//! 2. `COPY` of the same rows into a table of the same shape without the foreign key
//!    (`LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES`) — a
//!    second reference, the cost of the schema's foreign key being the difference;
//! 3. the batch write alone (`db::write_batch`, `batch_max` rows per transaction);
//! 4. the full writer (topic → batches → PostgreSQL → offsets) on a topic filled
//!    beforehand, timed from start-up to the last row in PostgreSQL.
//!
//! Everything runs in a fresh database of its own (dropped at the end), and `orders` and
//! `sales` are emptied (`TRUNCATE`) before every measure, so each starts on the same empty
//! tables and the project's database is untouched. `synchronous_commit` is the server's
//! (on). The machine may be shared, so there are several rounds and the medians are
//! reported.
//! `cargo run --release -p order-writer --example write_vs_copy [rows=50000] [batch_max] [rounds=3]`
//! The last line is machine-readable:
//! `median rows/s: writer W write-alone S copy C copy-no-fk D`.

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
    /// The rows as `COPY` text.
    fn copy_text(&self, sale: &str) -> Res<Vec<u8>> {
        let mut text = Vec::with_capacity(self.n as usize * 80);
        for m in rows(sale, self.n) {
            writeln!(
                text,
                "{}\t{}\t{}\t1\t1\treserved\t2026-11-24 00:00:00+00",
                m.order_id, m.sale, m.user
            )?;
        }
        Ok(text)
    }

    fn copy_into(&mut self, table: &str, text: &[u8]) -> Res<f64> {
        let t = Instant::now();
        let mut w = self.db.copy_in(&format!(
            "COPY {table} (order_id, sale, user_id, units, per_user_limit, status, accepted_at) FROM STDIN"
        ))?;
        w.write_all(text)?;
        w.finish()?;
        Ok(self.n as f64 / t.elapsed().as_secs_f64())
    }

    /// The like-for-like reference: `COPY` into the real `orders` table, its sale row in
    /// `sales` (as the writer's own transaction puts it there before its rows).
    fn copy_orders(&mut self, round: usize) -> Res<f64> {
        self.empty()?;
        let sale = format!("bench_c_{}_{round}", self.tag);
        let text = self.copy_text(&sale)?;
        self.db
            .execute("INSERT INTO sales (sale) VALUES ($1)", &[&sale])?;
        let rate = self.copy_into("orders", &text)?;
        if count(&mut self.db, &sale)? != self.n as i64 {
            return Err("COPY into orders did not write every row".into());
        }
        Ok(rate)
    }

    /// The second reference: `COPY` into a table of the same shape without the foreign key.
    fn copy_no_fk(&mut self, round: usize) -> Res<f64> {
        self.empty()?;
        let table = format!("bench_copy_{}_{round}", self.tag);
        self.db.batch_execute(&format!(
            "CREATE TABLE {table} (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        ))?;
        let text = self.copy_text(&format!("bench_n_{}_{round}", self.tag))?;
        let rate = self.copy_into(&table, &text)?;
        self.db.batch_execute(&format!("DROP TABLE {table}"))?;
        Ok(rate)
    }

    fn write_alone(&mut self, round: usize) -> Res<f64> {
        self.empty()?;
        let sale = format!("bench_s_{}_{round}", self.tag);
        let msgs = rows(&sale, self.n);
        let t = Instant::now();
        for chunk in msgs.chunks(self.batch) {
            let refs: Vec<&OrderMessage> = chunk.iter().collect();
            order_writer::db::write_batch(&mut self.db, &refs)?;
        }
        Ok(self.n as f64 / t.elapsed().as_secs_f64())
    }

    fn writer(&mut self, round: usize) -> Res<f64> {
        self.empty()?;
        let topic = format!("bench_orders_{}_{round}", self.tag);
        let topic_name = topic.clone();
        seckill_common::kafka::create_topic_on(&self.stack.kafka_client()?, &topic, 4)?;
        let sale = format!("bench_w_{}_{round}", self.tag);
        let p: ThreadedProducer<_> = self.stack.kafka_client()?.set("linger.ms", "5").create()?;
        for m in rows(&sale, self.n) {
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
            kafka_brokers: self.stack.kafka_brokers.clone(),
            kafka_extra: self.stack.kafka_extra.clone(),
            redis_url: self.stack.redis_url.clone(),
            redis_ca_file: self.stack.redis_ca_file.clone(),
            orders_topic: topic,
            group_id: format!("bench_{}_{round}", self.tag),
            batch_max: self.batch as i64,
            ..db_config(&self.stack)
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
        // The round's scratch topic goes (left behind, they pile up on the broker); a
        // failed delete is said, and does not spoil the measurement.
        drop(p);
        if let Err(e) = self
            .stack
            .kafka_client()
            .map_err(|e| e.to_string())
            .and_then(|c| {
                seckill_common::kafka::delete_topic_on(&c, &topic_name).map_err(|e| e.to_string())
            })
        {
            eprintln!("  (scratch topic {topic_name} not deleted: {e})");
        }
        Ok(rate)
    }

    /// Empty `orders` and `sales` (this database is the bench's own), so every measure
    /// starts on empty tables and no dead rows from the last one.
    fn empty(&mut self) -> Res<()> {
        self.db.batch_execute("TRUNCATE orders, sales")?;
        Ok(())
    }
}

/// Per-measure rates, one per round.
#[derive(Default)]
struct Rates {
    copy: Vec<f64>,
    copy_no_fk: Vec<f64>,
    alone: Vec<f64>,
    writer: Vec<f64>,
}

fn measure(b: &mut Bench, rounds: usize) -> Res<Rates> {
    let mut r = Rates::default();
    println!(
        "{} order rows per measure, {rounds} rounds, batch_max {}, local stack",
        b.n, b.batch
    );
    for round in 0..rounds {
        r.copy.push(b.copy_orders(round)?);
        r.copy_no_fk.push(b.copy_no_fk(round)?);
        r.alone.push(b.write_alone(round)?);
        r.writer.push(b.writer(round)?);
        println!(
            "  round {round}: writer {:>7.0}  write alone {:>7.0}  COPY into orders {:>7.0}  COPY without FK {:>7.0} rows/s",
            r.writer[round], r.alone[round], r.copy[round], r.copy_no_fk[round]
        );
    }
    b.empty()?;
    Ok(r)
}

/// The writer's settings for the stack's database (its TLS too: the TLS profile).
fn db_config(stack: &seckill_common::stack::Stack) -> Config {
    Config {
        database_url: stack.database_url.clone(),
        database_ca_file: stack.database_ca_file.clone(),
        db_statement_timeout_ms: 60_000,
        ..Config::default()
    }
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
    let mut admin = order_writer::db::connect(&db_config(&stack))?;
    let name = format!("bench_writer_{tag}");
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    // The same URL (credentials, TLS mode) on the new database.
    let (path, query) = stack
        .database_url
        .split_once('?')
        .map_or((stack.database_url.as_str(), ""), |(p, q)| (p, q));
    let (base, _) = path
        .rsplit_once('/')
        .ok_or("database URL without a database name")?;
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    stack.database_url = format!("{base}/{name}{query}");
    let mut db = order_writer::db::connect(&db_config(&stack))?;
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
    let r = measured?;
    let (w, s, c, d) = (
        median(r.writer),
        median(r.alone),
        median(r.copy),
        median(r.copy_no_fk),
    );
    println!("  order-writer (topic -> PostgreSQL, offsets committed): {w:>9.0} rows/s  ({:.2} of COPY into orders, {:.2} of COPY without FK)", w / c, w / d);
    println!("  batch write alone (db::write_batch, {batch}/batch):      {s:>9.0} rows/s  ({:.2} of COPY into orders)", s / c);
    println!("  COPY into orders (real schema, FK to sales):          {c:>9.0} rows/s");
    println!("  COPY without the foreign key (same indexes, checks):  {d:>9.0} rows/s");
    println!("median rows/s: writer {w:.0} write-alone {s:.0} copy {c:.0} copy-no-fk {d:.0}");
    Ok(())
}
