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
//!
//! Acceptance and persistence agree on every path: an order is refused (and its unit
//! released) only when it certainly was not stored. A produce that was never enqueued,
//! or a spool line the writer never took, is certainly not stored. A delivery report
//! that is an error or does not come in time is *not* certain (the broker may have
//! written it): such an order is spooled and acknowledged, in every mode, and a replay
//! duplicate is absorbed by the writer.

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
    #[error("the broker is down and the order sink is `kafka`")]
    Unavailable,
    #[error("no delivery report in time")]
    Timeout,
    #[error("spool: {0}")]
    Spool(String),
    #[error("the spool holds {0} orders, its bound (`spool_max_orders`); the broker must drain it first")]
    SpoolFull(u64),
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
        spool_max_orders: u64,
        metrics: Arc<Metrics>,
    ) -> Result<OrderSink, SinkError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout_ms.to_string())
            // Every 202 waits for its delivery report: send at once (linger 1 ms measured
            // ~1.5 ms more per order at p50, 1.9 vs 0.3 ms), no Nagle delay on small produce
            // requests; under load, batches still form behind the requests in flight.
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
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
        let spool = Spool::open(spool_dir, spool_max_orders, metrics.clone())?;
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

    /// Whether an order may be taken at all in `mode`: with the sink on `kafka` and no
    /// broker, refuse before reserving anything in Redis.
    pub fn accepting(&self, mode: SinkMode) -> Result<(), SinkError> {
        if mode == SinkMode::Kafka && self.kafka.load(Ordering::Acquire) == 2 {
            return Err(SinkError::Unavailable);
        }
        Ok(())
    }

    /// Hand the order over as `mode` says; `Ok` means it is durable (broker log or disk),
    /// `Err` that it certainly is not (see the module docs).
    pub fn send(&self, order: &OrderMessage, mode: SinkMode) -> Result<Via, SinkError> {
        let payload = serde_json::to_vec(order).map_err(|e| SinkError::Encode(e.to_string()))?;
        let use_kafka = match mode {
            SinkMode::Kafka => true,
            SinkMode::Spool => false,
            SinkMode::Auto => self.kafka.load(Ordering::Acquire) != 2 && self.breaker.allow(),
        };
        // Set when Kafka may hold the order although it did not confirm it.
        let mut uncertain = false;
        if use_kafka {
            let started = Instant::now();
            let result = self.produce(&order.key(), &payload);
            self.metrics
                .kafka_produce(started.elapsed(), result.is_ok());
            self.breaker.record(result.is_ok());
            match result {
                Ok(()) => return Ok(Via::Kafka),
                // Never enqueued: certainly not in the log.
                Err(e @ SinkError::Refused(_)) if mode == SinkMode::Kafka => return Err(e),
                Err(e) => {
                    uncertain = matches!(e, SinkError::Timeout);
                    tracing::warn!(order = %order.order_id, error = %e, "Kafka did not confirm the order; spooling it (a replay duplicate is harmless)")
                }
            }
        }
        match self.spool.append(payload) {
            Ok(()) => Ok(Via::Spool),
            // Not in the spool, but perhaps in the broker's log: the outcome is unknown,
            // so the reservation must stay (the caller does not release on `Timeout`).
            Err(e) if uncertain => {
                tracing::error!(order = %order.order_id, error = %e, "spool failed after an unconfirmed delivery: outcome unknown");
                Err(SinkError::Timeout)
            }
            Err(e) => Err(e),
        }
    }

    /// `Refused` when librdkafka would not enqueue it (certainly not sent); `Timeout`
    /// when the delivery report failed or did not come (it may be in the log).
    fn produce(&self, key: &str, payload: &[u8]) -> Result<(), SinkError> {
        let (tx, rx) = mpsc::channel();
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
            .key(key)
            .payload(payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| SinkError::Refused(e.to_string()))?;
        match rx.recv_timeout(self.wait) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "delivery report: failed");
                Err(SinkError::Timeout)
            }
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

    /// Whether any spool file is on disk (what the replayer goes by; the pending count
    /// is for the metric and can only drift, never hide a file).
    pub fn spool_has_files(&self) -> bool {
        spool_files(&self.spool.dir).is_ok_and(|f| !f.is_empty())
    }

    /// Replay every sealed spool file into Kafka, oldest first (call from a plain
    /// thread), in steps of at most `REPLAY_STEP` messages: each step is sent, waited
    /// for, and its count checkpointed beside the file (`<file>.acked`), so a spool of
    /// any size drains within librdkafka's queue, and a failure resends only the step it
    /// interrupted. Stops at the first failure; returns lines replayed.
    pub fn replay(&self) -> Result<u64, SinkError> {
        let mut replayed = 0;
        for file in self.spool.seal()? {
            let lines = read_lines(&file)?;
            let checkpoint = acked_path(&file);
            let mut done = read_acked(&checkpoint).min(lines.len());
            while done < lines.len() {
                let step = &lines[done..(done + REPLAY_STEP).min(lines.len())];
                self.replay_step(step)?;
                done += step.len();
                // Losing this write only means resending a step: duplicates are harmless.
                let _ = std::fs::write(&checkpoint, done.to_string());
                let n = step.len() as u64;
                let _ =
                    self.spool
                        .pending
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                            Some(p.saturating_sub(n))
                        });
                self.metrics.spool_replayed(n);
                replayed += n;
            }
            // The checkpoint first: a crash between the two leaves a file replayed again
            // (harmless duplicates), never a stale checkpoint that skips lines.
            let _ = std::fs::remove_file(&checkpoint);
            let _ = std::fs::remove_file(sidecar(&file, "valid"));
            std::fs::remove_file(&file)
                .map_err(|e| SinkError::Spool(format!("remove {}: {e}", file.display())))?;
            tracing::info!(file = %file.display(), orders = lines.len(), "spool file replayed into Kafka");
        }
        Ok(replayed)
    }

    /// Send `lines` and wait until every one is acknowledged. A full local queue is
    /// waited out (the step is smaller than the queue), never a reason to give up.
    fn replay_step(&self, lines: &[(String, Vec<u8>)]) -> Result<(), SinkError> {
        let mut waits = Vec::with_capacity(lines.len());
        for (key, line) in lines {
            let deadline = Instant::now() + self.wait;
            loop {
                let (tx, rx) = mpsc::channel();
                let record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
                    .key(key)
                    .payload(line);
                match self.producer.send(record) {
                    Ok(()) => {
                        waits.push(rx);
                        break;
                    }
                    Err((e, _))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err((e, _)) => return Err(SinkError::Refused(e.to_string())),
                }
            }
        }
        for rx in waits {
            match rx.recv_timeout(self.wait) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(SinkError::Refused(e)),
                Err(_) => return Err(SinkError::Timeout),
            }
        }
        Ok(())
    }
}

/// Messages replayed per step: well under librdkafka's queue
/// (`queue.buffering.max.messages`, 200,000).
const REPLAY_STEP: usize = 10_000;

/// Lines per spool file before the writer starts a new one, so an outage never grows
/// one file without bound and each file replays in a few steps.
const SPOOL_FILE_LINES: u64 = 50_000;

fn acked_path(file: &Path) -> PathBuf {
    sidecar(file, "acked")
}

/// `<file>.<ext>`: a spool file's checkpoint (`acked`) or last good length (`valid`).
fn sidecar(file: &Path, ext: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Lines of a spool file already acknowledged by an interrupted replay (0 if none).
fn read_acked(checkpoint: &Path) -> usize {
    std::fs::read_to_string(checkpoint)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The orders of a spool file, each with its partition key.
fn read_lines(path: &Path) -> Result<Vec<(String, Vec<u8>)>, SinkError> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| SinkError::Spool(format!("open {}: {e}", path.display())))?;
    // A file whose failed append could not be cut back is read only up to its last
    // good length (`<file>.valid`): the lines after it belong to refused orders.
    let valid = std::fs::read_to_string(sidecar(path, "valid"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f.take(valid)).split(b'\n') {
        let line = line.map_err(|e| SinkError::Spool(e.to_string()))?;
        // A torn last line (a crash mid-append, never acknowledged) is not an order.
        if let Ok(m) = serde_json::from_slice::<OrderMessage>(&line) {
            out.push((m.key(), line));
        }
    }
    Ok(out)
}

/// A queued spool line: `PENDING` until the writer takes it (`TAKEN`) or its waiter
/// gives up first (`ABANDONED`, and the writer skips it). Whoever moves it first wins,
/// so a waiter that gives up knows the line will never be written.
const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

enum SpoolCmd {
    Append(Vec<u8>, Arc<AtomicU8>, Waiter),
    /// Close the active file; answer with every closed file, oldest first.
    Seal(std::sync::mpsc::Sender<Result<Vec<PathBuf>, String>>),
}

/// The durable local spool: one writer thread, group commit.
struct Spool {
    dir: PathBuf,
    tx: std::sync::mpsc::Sender<SpoolCmd>,
    pending: Arc<AtomicU64>,
    /// Orders the spool may hold before it refuses more (`SpoolFull`: certainly not
    /// stored, so the caller returns the unit and says so).
    max_pending: u64,
    metrics: Arc<Metrics>,
    /// An exclusive lock on the directory, held while this gateway runs: two gateways on
    /// one spool would replay each other's files.
    _lock: std::fs::File,
}

/// Lock `dir` for this process (`flock` on `dir/.lock`), or say who must be stopped.
fn lock_dir(dir: &Path) -> Result<std::fs::File, SinkError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| SinkError::Spool(format!("open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own; released when the file closes (or we die).
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SinkError::Spool(format!(
            "spool directory {} is in use by another gateway (set spool_dir to a directory of this instance's own)",
            dir.display()
        )));
    }
    Ok(f)
}

impl Spool {
    fn open(dir: &Path, max_pending: u64, metrics: Arc<Metrics>) -> Result<Spool, SinkError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SinkError::Spool(format!("create {}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let pending = Arc::new(AtomicU64::new(0));
        // Files left by an earlier run are replayed like any other.
        for f in spool_files(dir)? {
            let left = read_lines(&f)?
                .len()
                .saturating_sub(read_acked(&acked_path(&f)));
            pending.fetch_add(left as u64, Ordering::Relaxed);
        }
        let (tx, rx) = std::sync::mpsc::channel::<SpoolCmd>();
        let (d, p) = (dir.to_path_buf(), pending.clone());
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || spool_writer(d, rx, p))
            .map_err(|e| SinkError::Spool(e.to_string()))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            tx,
            pending,
            max_pending: max_pending.max(1),
            metrics,
            _lock: lock,
        })
    }

    /// Append one line and wait for its fsync. `Err` only when the line certainly is not
    /// (and will not be) in the spool.
    fn append(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let pending = self.pending.load(Ordering::Relaxed);
        if pending >= self.max_pending {
            self.metrics.spool_full();
            return Err(SinkError::SpoolFull(pending));
        }
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(AtomicU8::new(PENDING));
        self.tx
            .send(SpoolCmd::Append(line, state.clone(), tx))
            .map_err(|_| SinkError::Spool("spool writer stopped".into()))?;
        let result = match rx.recv_timeout(SPOOL_WAIT) {
            Ok(r) => r,
            Err(_) => {
                if state
                    .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(SinkError::Spool(format!(
                        "the spool writer did not take the order within {SPOOL_WAIT:?}"
                    )));
                }
                // Taken: it is being written; its fsync decides. Only a disk that hangs
                // for a minute more leaves the outcome unknown (the reservation then
                // stays for the writer's sweep; no refusal is sent for an order that may
                // yet land).
                rx.recv_timeout(Duration::from_secs(60))
                    .map_err(|_| SinkError::Timeout)?
            }
        };
        match result {
            Ok(()) => {
                self.metrics.spooled();
                Ok(())
            }
            Err(e) if e == SPOOL_UNKNOWN => Err(SinkError::Timeout),
            Err(e) => Err(SinkError::Spool(e)),
        }
    }

    fn seal(&self) -> Result<Vec<PathBuf>, SinkError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx
            .send(SpoolCmd::Seal(tx))
            .map_err(|_| SinkError::Spool("spool writer did not answer".into()))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| SinkError::Spool("spool writer did not answer".into()))?
            .map_err(SinkError::Spool)
    }
}

/// What the spool writer answers when a batch's lines may or may not be in the file.
const SPOOL_UNKNOWN: &str = "spool write failed and its lines could not be undone";

/// How long an order waits for the spool writer to take it.
const SPOOL_WAIT: Duration = Duration::from_secs(5);

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
    let mut active: Option<(std::fs::File, PathBuf, u64)> = None;
    let mut n = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut seals = Vec::new();
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                // A line whose waiter already gave up is not written.
                SpoolCmd::Append(line, state, w) => {
                    if state
                        .compare_exchange(PENDING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        batch.push((line, w))
                    }
                }
                SpoolCmd::Seal(s) => seals.push(s),
            }
            if batch.len() < 4096 {
                cmd = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let result = append_batch(&dir, &mut active, &mut n, &batch);
            if result.is_ok() {
                pending.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            let answer = result.as_ref().map(|_| ()).map_err(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    SPOOL_UNKNOWN.to_string()
                } else {
                    e.to_string()
                }
            });
            for (_, w) in batch {
                let _ = w.send(answer.clone());
            }
        }
        for s in seals {
            active = None;
            let _ = s.send(spool_files(&dir).map_err(|e| e.to_string()));
        }
    }
}

/// Write and fsync `batch` to the active file (a new one when none is open or it is
/// full). On failure the file is cut back to its length before the batch, so no line
/// of a refused order can be replayed later; if that fails, its good length is written
/// beside it (`<file>.valid`, read by `read_lines`); if even that fails, the batch's
/// outcome is unknown (an error of kind `TimedOut`).
fn append_batch(
    dir: &Path,
    active: &mut Option<(std::fs::File, PathBuf, u64)>,
    n: &mut u64,
    batch: &[(Vec<u8>, Waiter)],
) -> std::io::Result<()> {
    if active
        .as_ref()
        .is_some_and(|(_, _, lines)| *lines >= SPOOL_FILE_LINES)
    {
        *active = None;
    }
    if active.is_none() {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        *n += 1;
        let path = dir.join(format!("spool-{ms:015}-{n:06}.jsonl"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        *active = Some((f, path, 0));
    }
    let (f, path, lines) = active
        .as_mut()
        .ok_or_else(|| std::io::Error::other("no spool file"))?;
    let before = f.metadata()?.len();
    let mut buf = Vec::with_capacity(batch.iter().map(|(l, _)| l.len() + 1).sum());
    for (l, _) in batch {
        buf.extend_from_slice(l);
        buf.push(b'\n');
    }
    let written = f.write_all(&buf).and_then(|_| f.sync_data());
    match written {
        Ok(()) => {
            *lines += batch.len() as u64;
            Ok(())
        }
        Err(e) => {
            let undone = f.set_len(before).and_then(|_| f.sync_data());
            if undone.is_err() {
                // Keep every acknowledged line: mark where they end instead. If even
                // that fails, the outcome of this batch is unknown (not "refused").
                let marked = std::fs::write(sidecar(path, "valid"), before.to_string())
                    .and_then(|_| std::fs::File::open(sidecar(path, "valid"))?.sync_all());
                if let Err(m) = marked {
                    tracing::error!(error = %e, mark = %m, file = %path.display(), "spool write failed and could be neither undone nor marked");
                    *active = None;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "spool state unknown",
                    ));
                }
            }
            *active = None;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn line(id: u32) -> Vec<u8> {
        format!(r#"{{"event":"reserved","order_id":"s-{id}","sale":"s","user":{id},"units":1,"per_user_limit":1,"at_ms":1}}"#).into_bytes()
    }

    #[test]
    fn a_full_spool_refuses_an_order_at_once() {
        let dir = scratch("full");
        let (tx, _rx) = std::sync::mpsc::channel();
        let spool = Spool {
            dir: dir.clone(),
            tx,
            pending: Arc::new(AtomicU64::new(3)),
            max_pending: 3,
            metrics: Arc::new(Metrics::default()),
            _lock: lock_dir(&dir).unwrap(),
        };
        let r = spool.append(line(1));
        assert!(matches!(r, Err(SinkError::SpoolFull(3))), "{r:?}");
    }

    #[test]
    fn a_line_whose_waiter_gave_up_is_never_written() {
        let dir = scratch("abandon");
        let (tx, rx) = std::sync::mpsc::channel();
        let spool = Spool {
            dir: dir.clone(),
            tx,
            pending: Arc::new(AtomicU64::new(0)),
            max_pending: 1_000,
            metrics: Arc::new(Metrics::default()),
            _lock: lock_dir(&dir).unwrap(),
        };
        // No writer runs yet: the waiter gives up, and says the line is not stored.
        let r = spool.append(line(1));
        assert!(matches!(r, Err(SinkError::Spool(_))), "{r:?}");
        // The writer starts late and must skip the abandoned line.
        let p = spool.pending.clone();
        let d = dir.clone();
        std::thread::spawn(move || spool_writer(d, rx, p));
        spool.append(line(2)).unwrap();
        let files = spool.seal().unwrap();
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(!text.contains("\"s-1\""), "{text}");
        assert!(text.contains("\"s-2\""), "{text}");
        assert_eq!(spool.pending.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_spool_directory_is_held_by_one_gateway() {
        let dir = scratch("lock");
        let first = lock_dir(&dir).unwrap();
        assert!(lock_dir(&dir).is_err(), "a second holder is refused");
        drop(first);
        assert!(lock_dir(&dir).is_ok(), "free again once the first is gone");
    }

    #[test]
    fn spool_files_are_bounded_and_a_replay_checkpoint_is_read_back() {
        let dir = scratch("rotate");
        let mut active = None;
        let mut n = 0;
        let (w, _r) = mpsc::channel();
        let batch: Vec<(Vec<u8>, Waiter)> = (0..1000).map(|i| (line(i), w.clone())).collect();
        for _ in 0..(SPOOL_FILE_LINES / 1000 + 1) {
            append_batch(&dir, &mut active, &mut n, &batch).unwrap();
        }
        let files = spool_files(&dir).unwrap();
        assert_eq!(
            files.len(),
            2,
            "a full file is closed and a new one started"
        );
        assert_eq!(
            read_lines(&files[0]).unwrap().len() as u64,
            SPOOL_FILE_LINES
        );
        std::fs::write(acked_path(&files[0]), "12345").unwrap();
        assert_eq!(read_acked(&acked_path(&files[0])), 12345);
        assert_eq!(read_acked(&acked_path(&files[1])), 0);
    }
}
