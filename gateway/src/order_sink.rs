//! The hand-off of accepted orders. Two ways, chosen by the `order_sink` switch:
//!
//! - **Kafka**: an idempotent producer (acks=all); the request waits for the delivery
//!   report before answering 202, so a 202 means the order is in the broker's log. The
//!   report always arrives within `message.timeout.ms`, so the wait is bounded. The
//!   delivery callback runs on librdkafka's thread and wakes the waiting coroutine
//!   through a may channel carried as the message's opaque.
//! - **Spool**: a durable local file (JSON lines). One writer thread appends everything
//!   queued, `fdatasync`s, then wakes the waiting coroutines (group commit), so a 202
//!   means the order is on this machine's disk. The replayer thread sends sealed spool
//!   files to Kafka when the broker answers and deletes each file only after every line
//!   of it was acknowledged. Replays may duplicate a message (a crash mid-file, a
//!   timed-out delivery that did land); the writer's `ON CONFLICT DO NOTHING` on the
//!   order id makes that harmless.
//!
//! In `auto` (the default) Kafka is used while it is healthy; when a produce fails, or
//! the health loop sees no broker, or the sink breaker is open, the order goes to the
//! spool instead of failing.

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use crate::switches::SinkMode;
use may::sync::mpsc;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use seckill_common::order::OrderMessage;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Waiter = mpsc::Sender<Result<(), String>>;

pub struct Delivery;

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<Waiter>;
    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Box<Waiter>) {
        let _ = waiter.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(String),
    #[error("order not encodable: {0}")]
    Encode(String),
    #[error("broker refused the order: {0}")]
    Refused(String),
    #[error("no delivery report in time")]
    Timeout,
    #[error("spool: {0}")]
    Spool(String),
}

/// Where an order went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Kafka,
    Spool,
}

pub struct OrderSink {
    producer: ThreadedProducer<Delivery>,
    topic: String,
    wait: Duration,
    metrics: Arc<Metrics>,
    spool: Spool,
    /// Opens after consecutive Kafka failures; while open, `auto` goes to the spool at once.
    breaker: Breaker,
    /// Set by the health loop: 0 not yet known, 1 a broker answered metadata lately, 2 none did.
    kafka: AtomicU8,
}

impl OrderSink {
    pub fn new(
        brokers: &str,
        topic: &str,
        timeout_ms: u64,
        extra: &str,
        spool_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<OrderSink, SinkError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout_ms.to_string())
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "200000");
        for kv in extra.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                SinkError::Create(format!("kafka_extra entry {kv:?} is not key=value"))
            })?;
            cfg.set(k.trim(), v.trim());
        }
        let producer = cfg
            .create_with_context(Delivery)
            .map_err(|e| SinkError::Create(e.to_string()))?;
        let spool = Spool::open(spool_dir, metrics.clone())?;
        Ok(OrderSink {
            producer,
            topic: topic.to_string(),
            // The report comes within message.timeout.ms; the margin covers the callback.
            wait: Duration::from_millis(timeout_ms + 2000),
            metrics,
            spool,
            breaker: Breaker::new(3, Duration::from_secs(2)),
            kafka: AtomicU8::new(0),
        })
    }

    /// Hand the order over as `mode` says; `Ok` means it is durable (broker log or disk).
    pub fn send(&self, order: &OrderMessage, mode: SinkMode) -> Result<Via, SinkError> {
        let payload = serde_json::to_vec(order).map_err(|e| SinkError::Encode(e.to_string()))?;
        let use_kafka = match mode {
            SinkMode::Kafka => true,
            SinkMode::Spool => false,
            SinkMode::Auto => self.kafka.load(Ordering::Acquire) != 2 && self.breaker.allow(),
        };
        if use_kafka {
            let started = Instant::now();
            let result = self.produce(&order.key(), &payload);
            self.metrics
                .kafka_produce(started.elapsed(), result.is_ok());
            self.breaker.record(result.is_ok());
            match result {
                Ok(()) => return Ok(Via::Kafka),
                Err(e) if mode == SinkMode::Kafka => return Err(e),
                Err(e) => {
                    tracing::warn!(order = %order.order_id, error = %e, "Kafka did not take the order; spooling it")
                }
            }
        }
        self.spool.append(payload)?;
        Ok(Via::Spool)
    }

    fn produce(&self, key: &str, payload: &[u8]) -> Result<(), SinkError> {
        let (tx, rx) = mpsc::channel();
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
            .key(key)
            .payload(payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| SinkError::Refused(e.to_string()))?;
        match rx.recv_timeout(self.wait) {
            Ok(r) => r.map_err(SinkError::Refused),
            Err(_) => Err(SinkError::Timeout),
        }
    }

    pub fn set_kafka_up(&self, up: bool) {
        self.kafka.store(if up { 1 } else { 2 }, Ordering::Release);
    }

    /// A broker answered the health loop's last metadata request.
    pub fn kafka_up(&self) -> bool {
        self.kafka.load(Ordering::Acquire) == 1
    }

    /// Is any broker reachable? (Blocking metadata call: call from a plain thread.)
    pub fn broker_reachable(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .is_ok_and(|m| !m.brokers().is_empty())
    }

    pub fn flush(&self, timeout: Duration) -> bool {
        self.producer.flush(timeout).is_ok()
    }

    pub fn spool_pending(&self) -> u64 {
        self.spool.pending.load(Ordering::Relaxed)
    }

    /// Replay every sealed spool file into Kafka, oldest first (call from a plain
    /// thread). Stops at the first file not fully acknowledged; returns lines replayed.
    pub fn replay(&self) -> Result<u64, SinkError> {
        let mut replayed = 0;
        for file in self.spool.seal()? {
            let lines = read_lines(&file)?;
            let mut waits = Vec::with_capacity(lines.len());
            for (key, line) in &lines {
                let (tx, rx) = mpsc::channel();
                let record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
                    .key(key)
                    .payload(line);
                if let Err((e, _)) = self.producer.send(record) {
                    return Err(SinkError::Refused(e.to_string()));
                }
                waits.push(rx);
            }
            for rx in waits {
                match rx.recv_timeout(self.wait) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(SinkError::Refused(e)),
                    Err(_) => return Err(SinkError::Timeout),
                }
            }
            std::fs::remove_file(&file)
                .map_err(|e| SinkError::Spool(format!("remove {}: {e}", file.display())))?;
            let n = lines.len() as u64;
            let _ = self
                .spool
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                    Some(p.saturating_sub(n))
                });
            self.metrics.spool_replayed(lines.len() as u64);
            replayed += lines.len() as u64;
            tracing::info!(file = %file.display(), orders = lines.len(), "spool file replayed into Kafka");
        }
        Ok(replayed)
    }
}

/// The orders of a spool file, each with its partition key.
fn read_lines(path: &Path) -> Result<Vec<(String, Vec<u8>)>, SinkError> {
    let f = std::fs::File::open(path)
        .map_err(|e| SinkError::Spool(format!("open {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line.map_err(|e| SinkError::Spool(e.to_string()))?;
        // A torn last line (a crash mid-append, never acknowledged) is not an order.
        if let Ok(m) = serde_json::from_slice::<OrderMessage>(&line) {
            out.push((m.key(), line));
        }
    }
    Ok(out)
}

enum SpoolCmd {
    Append(Vec<u8>, Waiter),
    /// Close the active file; answer with every closed file, oldest first.
    Seal(std::sync::mpsc::Sender<Result<Vec<PathBuf>, String>>),
}

/// The durable local spool: one writer thread, group commit.
struct Spool {
    tx: std::sync::mpsc::Sender<SpoolCmd>,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Spool {
    fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Spool, SinkError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SinkError::Spool(format!("create {}: {e}", dir.display())))?;
        let pending = Arc::new(AtomicU64::new(0));
        // Files left by an earlier run are replayed like any other.
        for f in spool_files(dir)? {
            pending.fetch_add(read_lines(&f)?.len() as u64, Ordering::Relaxed);
        }
        let (tx, rx) = std::sync::mpsc::channel::<SpoolCmd>();
        let dir = dir.to_path_buf();
        let p = pending.clone();
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || spool_writer(dir, rx, p))
            .map_err(|e| SinkError::Spool(e.to_string()))?;
        Ok(Spool {
            tx,
            pending,
            metrics,
        })
    }

    fn append(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(SpoolCmd::Append(line, tx))
            .map_err(|_| SinkError::Spool("spool writer stopped".into()))?;
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {
                self.metrics.spooled();
                Ok(())
            }
            Ok(Err(e)) => Err(SinkError::Spool(e)),
            Err(_) => Err(SinkError::Spool("no fsync within 5 s".into())),
        }
    }

    fn seal(&self) -> Result<Vec<PathBuf>, SinkError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx
            .send(SpoolCmd::Seal(tx))
            .map_err(|_| SinkError::Spool("spool writer stopped".into()))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| SinkError::Spool("spool writer did not answer".into()))?
            .map_err(SinkError::Spool)
    }
}

fn spool_files(dir: &Path) -> Result<Vec<PathBuf>, SinkError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SinkError::Spool(format!("read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    // Names are `spool-<ms>-<n>.jsonl`, zero-padded: name order is age order.
    files.sort();
    Ok(files)
}

fn spool_writer(dir: PathBuf, rx: std::sync::mpsc::Receiver<SpoolCmd>, pending: Arc<AtomicU64>) {
    let mut active: Option<std::fs::File> = None;
    let mut n = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut seals = Vec::new();
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                SpoolCmd::Append(line, w) => batch.push((line, w)),
                SpoolCmd::Seal(s) => seals.push(s),
            }
            if batch.len() < 4096 {
                cmd = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let result = (|| -> std::io::Result<()> {
                if active.is_none() {
                    let ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0);
                    n += 1;
                    let path = dir.join(format!("spool-{ms:015}-{n:06}.jsonl"));
                    active = Some(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)?,
                    );
                }
                let f = active
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("no spool file"))?;
                let mut buf = Vec::with_capacity(batch.iter().map(|(l, _)| l.len() + 1).sum());
                for (l, _) in &batch {
                    buf.extend_from_slice(l);
                    buf.push(b'\n');
                }
                f.write_all(&buf)?;
                f.sync_data()
            })();
            if result.is_ok() {
                pending.fetch_add(batch.len() as u64, Ordering::Relaxed);
            } else {
                // Start a fresh file next time; this one may hold a torn line.
                active = None;
            }
            for (_, w) in batch {
                let _ = w.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            }
        }
        for s in seals {
            active = None;
            let _ = s.send(spool_files(&dir).map_err(|e| e.to_string()));
        }
    }
}
