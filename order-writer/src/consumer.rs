//! The consume → write → commit loop, in two stages.
//!
//! A fetch thread polls a batch (bounded by `batch_max` messages and `batch_wait_ms`),
//! parses it and hands it over a channel of capacity one, then fills the next batch while
//! the database writes the previous one. The writing thread writes each batch in one
//! transaction; only after the database commit (and after any dead letters are
//! acknowledged by the broker) are that batch's offsets committed. Batches are written
//! and committed in the order they were polled, so a committed offset never covers an
//! unwritten row. A crash anywhere before the offset commit replays the batch (and the
//! at most two polled behind it), and `ON CONFLICT (order_id) DO NOTHING` makes the
//! replay harmless: each order ends in PostgreSQL exactly once.

use crate::config::Config;
use crate::db;
use crate::metrics::Metrics;
use crate::WriterError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use seckill_common::order::OrderMessage;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COLLISION_RETRY: &str = "could not settle colliding orders with Redis; retrying the batch";

/// One consumed message, owned.
struct Record {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    /// The gateway's trace context (`traceparent` header), sampled or not.
    trace: Option<seckill_common::telemetry::SpanContext>,
}

/// A polled batch, parsed by the fetch thread: the orders to write (with their index in
/// `records`) and the messages that go to the dead-letter topic, with the reason.
struct Batch {
    records: Vec<Record>,
    /// When its first message was polled.
    polled: Instant,
    good: Vec<(usize, OrderMessage)>,
    dead: Vec<(usize, String)>,
}

impl Batch {
    fn parse(records: Vec<Record>, polled: Instant) -> Batch {
        let mut good = Vec::with_capacity(records.len());
        let mut dead = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match serde_json::from_slice::<OrderMessage>(&r.payload) {
                Ok(m) => match m.validate() {
                    Ok(()) => good.push((i, m)),
                    Err(reason) => dead.push((i, reason.into())),
                },
                Err(e) => dead.push((i, format!("not an order message: {e}"))),
            }
        }
        Batch {
            records,
            polled,
            good,
            dead,
        }
    }
}

/// The broker list, `kafka_extra` and `kafka_password`, shared by every client the
/// writer makes.
pub(crate) fn client_config(cfg: &Config) -> Result<ClientConfig, WriterError> {
    seckill_common::kafka::client_config(&cfg.kafka_brokers, &cfg.kafka_extra, &cfg.kafka_password)
        .map_err(|e| WriterError::Config(e.to_string()))
}

pub struct Writer {
    cfg: Config,
    consumer: BaseConsumer,
    /// Next offset to write, per partition this writer has consumed (for the lag gauge).
    positions: Arc<Mutex<BTreeMap<i32, i64>>>,
    dlq: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    metrics: Arc<Metrics>,
    /// Asked only when a batch collides on one live order per buyer (`settle_collisions`)
    /// or holds orders older than a reconcile (`put_back_late`); connected on first use.
    redis: Mutex<Option<stock::Stock<stock::Conn>>>,
}

impl Writer {
    pub fn new(cfg: Config, metrics: Arc<Metrics>) -> Result<Writer, WriterError> {
        let consumer: BaseConsumer = client_config(&cfg)?
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Also the rebalance timeout: how long the group waits for a member that died
            // without leaving. A writer retrying a dead database longer than this leaves
            // the group and rejoins when it polls again (replaying harmlessly).
            .set(
                "max.poll.interval.ms",
                cfg.max_poll_interval_ms.max(1000).to_string(),
            )
            .set(
                "session.timeout.ms",
                cfg.session_timeout_ms.max(1000).to_string(),
            )
            .create()?;
        consumer.subscribe(&[&cfg.orders_topic])?;
        let dlq = client_config(&cfg)?
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()?;
        let positions = Arc::new(Mutex::new(BTreeMap::new()));
        spawn_lag_gauge(&cfg, positions.clone(), metrics.clone())?;
        Ok(Writer {
            cfg,
            consumer,
            positions,
            dlq,
            metrics,
            redis: Mutex::new(None),
        })
    }

    /// Run until `stop` is set; the batch being written is finished first (a batch
    /// polled but not yet written is dropped uncommitted and replays).
    pub fn run(&self, stop: &AtomicBool) -> Result<(), WriterError> {
        let mut db = self.connect_with_retry(stop)?;
        db::migrate_or_check(&self.cfg, &mut db)?;
        // Capacity one: one batch waiting while one is written and the next is filled.
        let (tx, rx) = sync_channel::<Batch>(1);
        std::thread::scope(|s| {
            let fetch = std::thread::Builder::new()
                .name("fetch".into())
                .spawn_scoped(s, || self.fetch(tx, stop))?;
            // Returning drops `rx`, which ends the fetch thread at its next hand-over.
            let written = self.write_loop(&mut db, rx, stop);
            let fetched = fetch
                .join()
                .unwrap_or_else(|_| Err(WriterError::Config("the fetch thread panicked".into())));
            written.and(fetched)
        })
    }

    /// The fetch stage: poll, parse, hand over; until `stop` or the writer is gone.
    fn fetch(&self, tx: SyncSender<Batch>, stop: &AtomicBool) -> Result<(), WriterError> {
        let mut counted = Instant::now() - Duration::from_secs(10);
        while !stop.load(Ordering::Relaxed) {
            if counted.elapsed() >= Duration::from_secs(1) {
                counted = Instant::now();
                if let Ok(a) = self.consumer.assignment() {
                    self.metrics.set_assigned(a.count() as i64);
                }
            }
            let (records, polled) = self.poll_batch();
            self.metrics.polled();
            if records.is_empty() {
                continue;
            }
            if tx.send(Batch::parse(records, polled)).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The write stage: each batch in one transaction, then its offsets.
    fn write_loop(
        &self,
        db: &mut postgres::Client,
        rx: Receiver<Batch>,
        stop: &AtomicBool,
    ) -> Result<(), WriterError> {
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(batch) => {
                    let write_from = Instant::now();
                    let dead = self.write(db, &batch, stop)?;
                    let written = Instant::now();
                    self.put_back_late(db, &batch, stop)?;
                    self.commit(&batch.records);
                    let times = crate::trace::BatchTimes {
                        polled: batch.polled,
                        write_from,
                        written,
                        committed: Instant::now(),
                    };
                    self.trace_batch(&batch, &dead, &times);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    }

    fn connect_with_retry(&self, stop: &AtomicBool) -> Result<postgres::Client, WriterError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match db::connect(&self.cfg) {
                Ok(c) => {
                    self.metrics.db_ok();
                    return Ok(c);
                }
                Err(e) if !stop.load(Ordering::Relaxed) => {
                    tracing::warn!(error = %e, "database unreachable; retrying");
                    self.metrics.db_error();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(
                        self.cfg.db_retry_max_ms.max(100) as u64,
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A batch, and when its first message came.
    fn poll_batch(&self) -> (Vec<Record>, Instant) {
        let max = self.cfg.batch_max.max(1) as usize;
        let deadline = Instant::now() + Duration::from_millis(self.cfg.batch_wait_ms.max(1) as u64);
        let mut batch = Vec::new();
        let mut first = Instant::now();
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.consumer.poll(left) {
                Some(Ok(m)) => {
                    if batch.is_empty() {
                        first = Instant::now();
                    }
                    batch.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        key: m.key().map(<[u8]>::to_vec),
                        trace: traceparent(&m),
                    })
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
        }
        (batch, first)
    }

    /// Spans for the batch's traced orders (none when tracing is off or none is sampled).
    fn trace_batch(
        &self,
        batch: &Batch,
        dead: &[(usize, String)],
        times: &crate::trace::BatchTimes,
    ) {
        let tracer = &self.metrics.tracer;
        if !tracer.enabled() {
            return;
        }
        // `good` and `dead` are in record order: looked up by index, not scanned.
        let order = |i: usize| {
            batch
                .good
                .binary_search_by_key(&i, |(j, _)| *j)
                .ok()
                .map(|k| &batch.good[k].1)
        };
        let traced: Vec<crate::trace::Traced<'_>> = batch
            .records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                Some(crate::trace::Traced {
                    context: r.trace.as_ref().filter(|c| c.is_sampled())?,
                    order: order(i),
                    partition: r.partition,
                    offset: r.offset,
                    dead: dead
                        .binary_search_by_key(&i, |(j, _)| *j)
                        .ok()
                        .map(|k| dead[k].1.as_str()),
                })
            })
            .collect();
        crate::trace::batch(
            tracer,
            &self.cfg.orders_topic,
            batch.records.len(),
            &traced,
            times,
        );
    }

    /// Write one batch; never returns until it is written (or `stop` while retrying a
    /// dead database, in which case nothing is committed and the batch replays). Answers
    /// the messages dead-lettered, with why.
    fn write(
        &self,
        db: &mut postgres::Client,
        batch: &Batch,
        stop: &AtomicBool,
    ) -> Result<Vec<(usize, String)>, WriterError> {
        let (good, mut dead) = (&batch.good, batch.dead.clone());
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut settled_collisions = false;
        'retry: loop {
            let refs: Vec<&OrderMessage> = good.iter().map(|(_, m)| m).collect();
            let failure = match db::write_batch(db, &refs) {
                Ok(inserted) => {
                    self.metrics
                        .batch(batch.records.len(), inserted, started.elapsed());
                    break;
                }
                Err(e) if is_buyer_collision(&e) && !settled_collisions => {
                    // Not poison: an order Redis released whose row PostgreSQL still
                    // holds live (or has not got yet). Ask Redis, write what it says,
                    // write the batch again. A Redis or database fault retries the
                    // batch: an acknowledged order is never dead-lettered for this.
                    match self.settle_collisions(db, &refs) {
                        Ok(()) => {
                            settled_collisions = true;
                            continue 'retry;
                        }
                        Err(WriterError::Db(e)) => e,
                        Err(e) => {
                            self.redis_backoff(COLLISION_RETRY, e, stop, &mut backoff)?;
                            continue 'retry;
                        }
                    }
                }
                Err(e) if db::is_data_error(&e) => {
                    // Find the rows at fault by halving: halves the schema accepts are
                    // written, a refused half is split again, down to single rows. A few
                    // bad rows in a big batch cost O(bad × log batch) transactions, not one
                    // per row. Rows written before a failure are no-ops when retried.
                    tracing::warn!(error = %e, "batch refused by a constraint; isolating the bad rows");
                    let all: Vec<&(usize, OrderMessage)> = good.iter().collect();
                    let (left, right) = all.split_at(all.len() / 2);
                    let (mut refused, mut inserted) = (Vec::new(), 0);
                    for half in [left, right] {
                        if let Err(e) = isolate(db, half, &mut inserted, &mut refused) {
                            self.backoff(e, db, stop, &mut backoff)?;
                            continue 'retry;
                        }
                    }
                    // A collision isolated beside a poison row (the database reported the
                    // poison first): settled with Redis like a whole batch's, then written.
                    let (collided, poison): (Vec<Refusal>, Vec<Refusal>) =
                        refused.into_iter().partition(|r| r.2);
                    if !collided.is_empty() {
                        let rows: Vec<&OrderMessage> = collided
                            .iter()
                            .filter_map(|(i, ..)| good.iter().find(|(j, _)| j == i).map(|(_, m)| m))
                            .collect();
                        match self
                            .settle_collisions(db, &rows)
                            .and_then(|()| db::write_batch(db, &rows).map_err(WriterError::Db))
                        {
                            Ok(n) => inserted += n,
                            // Still two live orders after asking Redis: refused for real.
                            Err(WriterError::Db(e)) if db::is_data_error(&e) => {
                                dead.extend(collided.into_iter().map(|(i, r, _)| (i, r)))
                            }
                            Err(WriterError::Db(e)) => {
                                self.backoff(e, db, stop, &mut backoff)?;
                                continue 'retry;
                            }
                            Err(e) => {
                                self.redis_backoff(COLLISION_RETRY, e, stop, &mut backoff)?;
                                continue 'retry;
                            }
                        }
                    }
                    self.metrics
                        .batch(batch.records.len(), inserted, started.elapsed());
                    dead.extend(poison.into_iter().map(|(i, r, _)| (i, r)));
                    break;
                }
                Err(e) => e,
            };
            self.backoff(failure, db, stop, &mut backoff)?;
        }
        dead.sort_by_key(|(i, _)| *i);
        for (i, reason) in &dead {
            self.dead_letter(&batch.records[*i], reason)?;
        }
        Ok(dead)
    }

    /// Orders of the batch accepted before a reconcile of their sale began (a spool
    /// replayed late): put back into Redis (`late`) before the offsets are committed.
    /// Redis or the database failing retries (bounded, growing), like a write.
    fn put_back_late(
        &self,
        db: &mut postgres::Client,
        batch: &Batch,
        stop: &AtomicBool,
    ) -> Result<(), WriterError> {
        let msgs: Vec<&OrderMessage> = batch.good.iter().map(|(_, m)| m).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let done = crate::late::late_orders(db, &msgs).and_then(|late| {
                if late.is_empty() {
                    return Ok(());
                }
                let mut guard = self.redis_conn()?;
                let Some(redis) = guard.as_mut() else {
                    return Ok(());
                };
                let r = crate::late::put_back(db, redis, &late)?;
                self.metrics.late_put_back(r.applied, r.conflicts);
                Ok(())
            });
            match done {
                Ok(()) => return Ok(()),
                Err(WriterError::Db(e)) => self.backoff(e, db, stop, &mut backoff)?,
                Err(e) => self.redis_backoff(
                    "could not put late orders back into Redis; the whole batch waits (offsets not committed)",
                    e,
                    stop,
                    &mut backoff,
                )?,
            }
        }
    }

    /// The Redis connection (made on first use; dropped after a failure).
    fn redis_conn(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Option<stock::Stock<stock::Conn>>>, WriterError> {
        let mut guard = self.redis.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let timeout = Duration::from_millis(self.cfg.redis_timeout_ms.max(1) as u64);
            *guard = Some(stock::Stock::new(stock::connect(
                &self.cfg.redis_url,
                timeout,
            )?));
        }
        Ok(guard)
    }

    /// A batch collided on one live order per buyer: settle in PostgreSQL what Redis
    /// already decided. Each colliding order Redis released is cancelled (a live row) or
    /// written cancelled (an order of the batch); then the batch goes in as usual.
    fn settle_collisions(
        &self,
        db: &mut postgres::Client,
        batch: &[&OrderMessage],
    ) -> Result<(), WriterError> {
        let (rows, orders) = db::buyer_conflicts(db, batch)?;
        let mut guard = self.redis_conn()?;
        let Some(redis) = guard.as_mut() else {
            return Ok(());
        };
        let released = |redis: &mut stock::Stock<stock::Conn>,
                        id: &str|
         -> Result<bool, WriterError> {
            match redis.order(id) {
                Ok((stock::OrderState::Released, _)) => Ok(true),
                Ok(_) | Err(stock::StockError::NoOrder | stock::StockError::NoSale) => Ok(false),
                Err(e) => Err(e.into()),
            }
        };
        let mut cancel_rows = Vec::new();
        for id in rows {
            if released(redis, &id)? {
                cancel_rows.push(id);
            }
        }
        let mut cancel_orders = Vec::new();
        for id in &orders {
            if released(redis, id)? {
                if let Some(m) = batch.iter().find(|m| &m.order_id == id) {
                    cancel_orders.push(*m);
                }
            }
        }
        tracing::warn!(
            rows = cancel_rows.len(),
            orders = cancel_orders.len(),
            "orders released in Redis collided with a buyer's live order; written cancelled"
        );
        self.metrics
            .collisions_settled((cancel_rows.len() + cancel_orders.len()) as u64);
        db::cancel_released(db, &cancel_rows, &cancel_orders)?;
        Ok(())
    }

    /// A step of the batch that needs Redis failed (settling colliding orders, putting
    /// late orders back): say `what`, drop the Redis connection, wait (bounded, growing);
    /// the step is then retried. Gives up only when asked to stop (nothing committed: the
    /// batch replays).
    fn redis_backoff(
        &self,
        what: &str,
        e: WriterError,
        stop: &AtomicBool,
        backoff: &mut Duration,
    ) -> Result<(), WriterError> {
        tracing::warn!(error = %e, "{what}");
        *self.redis.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.metrics.store_error();
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_millis(
            self.cfg.db_retry_max_ms.max(100) as u64
        ));
        if stop.load(Ordering::Relaxed) {
            return Err(e);
        }
        Ok(())
    }

    /// The database is down or slow: wait (bounded, growing), reconnect if needed. Gives
    /// up only when asked to stop; nothing is committed, so the batch replays.
    fn backoff(
        &self,
        e: postgres::Error,
        db: &mut postgres::Client,
        stop: &AtomicBool,
        backoff: &mut Duration,
    ) -> Result<(), WriterError> {
        if stop.load(Ordering::Relaxed) {
            return Err(WriterError::Db(e));
        }
        tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "database write failed; retrying (offsets not committed)");
        self.metrics.db_error();
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_millis(
            self.cfg.db_retry_max_ms.max(100) as u64
        ));
        if db.is_closed() {
            *db = self.connect_with_retry(stop)?;
        }
        Ok(())
    }

    /// Send a poison message to the dead-letter topic with the reason, the source and the
    /// original bytes, and wait until the broker has it.
    fn dead_letter(&self, r: &Record, reason: &str) -> Result<(), WriterError> {
        let trace_id = r
            .trace
            .as_ref()
            .map(|c| format!("{:032x}", c.trace_id()))
            .unwrap_or_default();
        tracing::warn!(
            partition = r.partition,
            offset = r.offset,
            reason,
            trace_id,
            "dead letter"
        );
        let source = format!("{}/{}/{}", self.cfg.orders_topic, r.partition, r.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "source",
                value: Some(&source),
            });
        let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(&self.cfg.dlq_topic)
            .payload(&r.payload)
            .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        self.dlq.send(rec).map_err(|(e, _)| WriterError::Kafka(e))?;
        self.dlq
            .flush(Duration::from_secs(15))
            .map_err(WriterError::Kafka)?;
        self.metrics.dead_letter();
        Ok(())
    }

    /// Commit the offset after the last message of each partition in the batch.
    fn commit(&self, batch: &[Record]) {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for r in batch {
            let e = next.entry(r.partition).or_insert(r.offset + 1);
            *e = (*e).max(r.offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            if let Err(e) = tpl.add_partition_offset(&self.cfg.orders_topic, p, Offset::Offset(o)) {
                tracing::warn!(error = %e, "offset list");
            }
        }
        {
            let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
            for el in tpl.elements() {
                if let Some(o) = el.offset().to_raw() {
                    positions.insert(el.partition(), o);
                }
            }
        }
        // Asynchronous: it is sent after the database commit, which is all that matters;
        // a commit lost to a crash or a rebalance only replays the batch, harmlessly.
        // A failed commit (for instance after a rebalance took the partition) only means
        // the batch will be read again, and rewriting it changes nothing.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; the batch will be replayed harmlessly");
        }
    }
}

/// The batch broke `orders_one_per_buyer` (one live order per buyer of a limit-1 sale).
/// The message's W3C trace context, if it carries a well-formed one.
fn traceparent<M: Message>(m: &M) -> Option<seckill_common::telemetry::SpanContext> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == "traceparent")
        .and_then(|h| seckill_common::telemetry::parse_traceparent(h.value?))
}

fn is_buyer_collision(e: &postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.constraint() == Some("orders_one_per_buyer"))
}

/// A single row the schema refused: its index in the batch, the reason, and whether it
/// was a collision on one live order per buyer (settled with Redis, not dead-lettered).
type Refusal = (usize, String, bool);

/// Write `rows` in their order, each half the schema refuses split again; the single rows
/// it refuses are returned in `refused` with the reason, every other row is written. An
/// error other than a refusal (database down) is returned: the caller retries the batch.
fn isolate(
    db: &mut postgres::Client,
    rows: &[&(usize, OrderMessage)],
    inserted: &mut u64,
    refused: &mut Vec<Refusal>,
) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let refs: Vec<&OrderMessage> = rows.iter().map(|(_, m)| m).collect();
    match db::write_batch(db, &refs) {
        Ok(n) => *inserted += n,
        Err(e) if db::is_data_error(&e) && rows.len() == 1 => refused.push((
            rows[0].0,
            format!(
                "violates the schema: {}",
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or(e.to_string())
            ),
            is_buyer_collision(&e),
        )),
        Err(e) if db::is_data_error(&e) => {
            let (left, right) = rows.split_at(rows.len() / 2);
            isolate(db, left, inserted, refused)?;
            isolate(db, right, inserted, refused)?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Every second, the lag behind the high watermarks of the partitions this writer has
/// written, from a separate client, so that a slow watermark query never delays the
/// group member's own poll.
fn spawn_lag_gauge(
    cfg: &Config,
    positions: Arc<Mutex<BTreeMap<i32, i64>>>,
    metrics: Arc<Metrics>,
) -> Result<(), WriterError> {
    let client: BaseConsumer = client_config(cfg)?.create()?;
    let topic = cfg.orders_topic.clone();
    std::thread::Builder::new()
        .name("lag".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let snapshot: Vec<(i32, i64)> = positions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(p, o)| (*p, *o))
                .collect();
            let mut lag = 0;
            for (partition, next) in snapshot {
                if let Ok((_, high)) =
                    client.fetch_watermarks(&topic, partition, Duration::from_millis(500))
                {
                    lag += (high - next).max(0);
                }
            }
            metrics.set_lag(lag);
        })?;
    Ok(())
}
