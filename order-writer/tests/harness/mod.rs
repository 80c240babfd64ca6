//! Harness for the writer's tests: writer processes (killable with SIGKILL), orders
//! produced the way the gateway produces them (reserved in Redis first), PostgreSQL
//! queries, and a private PostgreSQL for the test that stops it.
#![allow(dead_code)]

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use seckill_common::order::{OrderEvent, OrderMessage};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stock::{SaleSpec, Stock};

#[allow(unused_imports)]
pub use testkit::{now_ms, unique, wait_for};

pub use stackctl::process::free_port;

/// Topics, group and database of one test.
pub struct Lane {
    pub stack: seckill_common::stack::Stack,
    pub topic: String,
    pub dlq: String,
    pub group: String,
    pub database_url: String,
}

impl Lane {
    pub fn new(partitions: i32) -> Lane {
        let stack = stackctl::ensure_up();
        let topic = unique("orders_w");
        let dlq = unique("dlq_w");
        seckill_common::kafka::create_topic(&stack.kafka_brokers, &topic, partitions).unwrap();
        seckill_common::kafka::create_topic(&stack.kafka_brokers, &dlq, 1).unwrap();
        let database_url = stack.database_url.clone();
        migrate(&database_url);
        Lane {
            stack,
            topic,
            dlq,
            group: unique("writers"),
            database_url,
        }
    }

    pub fn writer(&self, extra: &[(&str, &str)]) -> WriterProc {
        let ctl = stackctl::Stack::from_env().expect("the local stack");
        let mut env = vec![
            ("SECKILL_DATABASE_URL", self.database_url.clone()),
            ("SECKILL_KAFKA_BROKERS", self.stack.kafka_brokers.clone()),
            ("SECKILL_REDIS_URL", self.stack.redis_url.clone()),
            ("SECKILL_ORDERS_TOPIC", self.topic.clone()),
            ("SECKILL_DLQ_TOPIC", self.dlq.clone()),
            ("SECKILL_GROUP_ID", self.group.clone()),
            ("SECKILL_BATCH_MAX", "200".to_string()),
            (
                "SECKILL_LOG",
                std::env::var("SECKILL_TEST_WRITER_LOG").unwrap_or("warn".into()),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let name = unique("writer");
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_order-writer"));
        WriterProc {
            proc: ctl.writer(bin, &name, &env).expect("start order-writer"),
        }
    }

    pub fn producer(&self) -> ThreadedProducer<rdkafka::producer::DefaultProducerContext> {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.stack.kafka_brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .unwrap()
    }

    pub fn produce(
        &self,
        p: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
        msgs: &[OrderMessage],
    ) {
        for m in msgs {
            let payload = serde_json::to_vec(m).unwrap();
            let key = m.key();
            loop {
                match p.send(BaseRecord::to(&self.topic).key(&key).payload(&payload)) {
                    Ok(()) => break,
                    Err((e, _)) => {
                        assert!(
                            matches!(
                                e.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "{e}"
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    pub fn produce_raw(&self, bytes: &[u8]) {
        let p = self.producer();
        p.send(BaseRecord::<(), [u8]>::to(&self.topic).payload(bytes))
            .map_err(|(e, _)| e)
            .unwrap();
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// Up to `want` messages of the lane's dead-letter topic (payload, `reason` header),
    /// read from its start for at most `within`.
    pub fn dead_letters(&self, want: usize, within: Duration) -> Vec<(Vec<u8>, String)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.stack.kafka_brokers)
            .set("group.id", unique("dlq_reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        c.subscribe(&[&self.dlq]).unwrap();
        let mut dead = Vec::new();
        let end = Instant::now() + within;
        while dead.len() < want && Instant::now() < end {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                let reason = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "reason")
                            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).to_string()))
                    })
                    .unwrap_or_default();
                dead.push((m.payload().unwrap_or_default().to_vec(), reason));
            }
        }
        dead
    }

    pub fn db(&self) -> postgres::Client {
        postgres::Client::connect(&self.database_url, postgres::NoTls).unwrap()
    }

    pub fn stock(&self) -> Stock<stock::Conn> {
        Stock::new(stock::connect(&self.stack.redis_url, Duration::from_secs(2)).unwrap())
    }
}

/// A lane on a PostgreSQL of the test's own (a payment-window scan cancels every
/// expired row it sees; it must not touch the rows of tests running beside it).
pub fn private_lane(partitions: i32) -> (PrivatePg, Lane) {
    let pg = PrivatePg::start();
    let mut lane = Lane::new(partitions);
    lane.database_url = pg.url("seckill");
    (pg, lane)
}

/// The schema, before a test queries it (writers migrate too; the lock makes it safe).
pub fn migrate(url: &str) {
    let mut db = order_writer::db::connect(&order_writer::config::Config {
        database_url: url.into(),
        db_statement_timeout_ms: 10_000,
        ..Default::default()
    })
    .expect("connect to PostgreSQL");
    order_writer::db::migrate(&mut db).expect("migrate");
}

/// Reserve `n` units of a new sale for `n` distinct users, as the gateway would, and
/// return the order messages it would produce.
pub fn reserve(stock: &mut Stock<stock::Conn>, units: i64, n: u64) -> (String, Vec<OrderMessage>) {
    let sale = unique("w");
    stock
        .create_sale(
            &sale,
            &SaleSpec {
                stock: units,
                per_user_limit: 1,
                start_ms: now_ms() - 1000,
                end_ms: now_ms() + 3_600_000,
            },
        )
        .unwrap();
    let msgs = (1..=n)
        .map(|user| {
            let t = stock
                .issue_token(&sale, user, Duration::from_secs(600))
                .unwrap();
            let p = stock.purchase(&sale, user, &t.token).unwrap();
            order(&p.order_id, &sale, user, OrderEvent::Reserved)
        })
        .collect();
    (sale, msgs)
}

pub fn order(id: &str, sale: &str, user: u64, event: OrderEvent) -> OrderMessage {
    OrderMessage {
        event,
        order_id: id.into(),
        sale: sale.into(),
        user,
        units: 1,
        per_user_limit: 1,
        at_ms: now_ms(),
        definition: None,
    }
}

/// Order ids of `sale` in PostgreSQL (a primary key, so each at most once).
pub fn ids_in_db(db: &mut postgres::Client, sale: &str) -> HashSet<String> {
    db.query("SELECT order_id FROM orders WHERE sale = $1", &[&sale])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub fn status_of(db: &mut postgres::Client, id: &str) -> Option<String> {
    db.query_opt("SELECT status FROM orders WHERE order_id = $1", &[&id])
        .unwrap()
        .map(|r| r.get(0))
}

/// Wait until `sale` has `n` rows in PostgreSQL.
pub fn wait_rows(
    db: &mut postgres::Client,
    sale: &str,
    n: usize,
    within: Duration,
) -> HashSet<String> {
    let end = Instant::now() + within;
    loop {
        let ids = ids_in_db(db, sale);
        if ids.len() >= n || Instant::now() > end {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn expect_exactly(ids: &HashSet<String>, msgs: &[OrderMessage]) {
    let want: HashSet<String> = msgs.iter().map(|m| m.order_id.clone()).collect();
    let missing = want.difference(ids).count();
    let extra = ids.difference(&want).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "{missing} acknowledged orders missing, {extra} unknown orders present"
    );
}

pub struct WriterProc {
    proc: stackctl::process::Proc,
}

impl WriterProc {
    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
    /// `GET path` on its metrics listener: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.proc.port)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        // In two pieces, as a client may send it: the writer reads the whole head.
        let _ = s.write_all(format!("GET {path} HTTP/1.1\r\n").as_bytes());
        let _ = s.write_all(b"Host: x\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for WriterProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A PostgreSQL server this test owns, so it can stop and start it.
pub struct PrivatePg {
    pub port: u16,
    server: stackctl::postgres::Postgres,
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let server = stackctl::postgres::Postgres {
            dir: std::env::temp_dir().join(unique("pg")),
            port: free_port(),
        };
        server.up().expect("start a private PostgreSQL");
        migrate(&server.url("seckill"));
        PrivatePg {
            port: server.port,
            server,
        }
    }

    pub fn up(&self) {
        self.server.up().expect("pg_ctl start");
    }

    pub fn down(&self) {
        self.server.down();
        assert!(!self.server.is_up(), "pg_ctl stop");
    }

    pub fn url(&self, db: &str) -> String {
        self.server.url(db)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.server.crash();
        let _ = std::fs::remove_dir_all(&self.server.dir);
    }
}

/// `order-writer rebuild-stock SALE` on the lane.
pub fn rebuild_stock(lane: &Lane, sale: &str) -> std::process::Output {
    rebuild_stock_on(lane, sale, &lane.stack.redis_url)
}

/// `order-writer rebuild-stock SALE` on the lane, with the Redis at `redis_url`.
pub fn rebuild_stock_on(lane: &Lane, sale: &str, redis_url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_order-writer"))
        .args(["rebuild-stock", sale])
        .env("SECKILL_ORDERS_TOPIC", &lane.topic)
        .env("SECKILL_DATABASE_URL", &lane.database_url)
        .env("SECKILL_KAFKA_BROKERS", &lane.stack.kafka_brokers)
        .env("SECKILL_REDIS_URL", redis_url)
        .env("SECKILL_METRICS_LISTEN", "")
        .env("SECKILL_LOG", "warn")
        .output()
        .unwrap()
}

pub fn assert_rebuilt(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "rebuild-stock: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
