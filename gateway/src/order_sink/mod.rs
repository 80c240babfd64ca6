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
//!
//! The spool itself (its writer thread, files and `.acked` replay checkpoints) is in
//! `spool.rs`.

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use crate::switches::SinkMode;
use may::sync::mpsc;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use seckill_common::order::OrderMessage;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod spool;

use spool::{acked_path, read_acked, read_lines, sidecar, spool_files, Spool};

/// Where a produce's delivery report is sent (the message's opaque).
type Waiter = mpsc::Sender<Result<(), KafkaError>>;

/// The producer's context: delivery reports to their waiters, and librdkafka's
/// statistics (every `statistics.interval.ms`) into the metrics, where they say where
/// a produce's time goes (`seckill_kafka_producer_stage_seconds`).
pub struct Delivery {
    metrics: Arc<Metrics>,
}

impl ClientContext for Delivery {
    fn stats(&self, s: rdkafka::Statistics) {
        // The worst broker's figures for each stage (µs, librdkafka's last window).
        let mut stages = [[0i64; 2]; 3];
        for b in s.brokers.values() {
            for (i, w) in [&b.int_latency, &b.outbuf_latency, &b.rtt]
                .iter()
                .enumerate()
            {
                if let Some(w) = w.as_ref().filter(|w| w.cnt > 0) {
                    stages[i][0] = stages[i][0].max(w.p50);
                    stages[i][1] = stages[i][1].max(w.p99);
                }
            }
        }
        self.metrics.kafka_stages(stages);
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<Waiter>;
    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Box<Waiter>) {
        let _ = waiter.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot create the Kafka producer: kafka_extra entry {0} is not key=value")]
    BadExtra(String),
    #[error("order not encodable: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("broker refused the order: {0}")]
    Refused(#[source] KafkaError),
    #[error("the broker is down and the order sink is `kafka`")]
    Unavailable,
    #[error("no delivery report in time")]
    Timeout,
    /// The spool cannot take orders (no cause beyond what it says: its writer stopped or
    /// did not answer, another gateway holds its directory).
    #[error("spool: {0}")]
    Spool(String),
    /// A spool file or directory could not be `what` (open, create, read, remove).
    #[error("spool: {what} {}: {source}", .path.display())]
    SpoolFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The spool's disk failed (the writer's batch, a read, its thread's start): shared
    /// by every order of the batch, hence the `Arc`.
    #[error("spool: {0}")]
    SpoolIo(#[source] Arc<std::io::Error>),
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
    /// A sink producing to `topic` through a client of `brokers` (the brokers and the
    /// operator's settings: [`seckill_common::kafka::client_config`]).
    pub fn new(
        brokers: rdkafka::ClientConfig,
        topic: &str,
        timeout_ms: u64,
        spool_dir: &Path,
        spool_max_orders: u64,
        metrics: Arc<Metrics>,
    ) -> Result<OrderSink, SinkError> {
        // The brokers and the operator's settings, then the producer's own where the
        // operator set nothing.
        let mut cfg = brokers;
        let timeout = timeout_ms.to_string();
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", timeout.as_str()),
            // Every 202 waits for its delivery report: send at once (linger 1 ms measured
            // ~1.5 ms more per order at p50, 1.9 vs 0.3 ms), no Nagle delay on small
            // produce requests; under load, batches still form behind the requests in
            // flight.
            ("linger.ms", "0"),
            ("socket.nagle.disable", "true"),
            ("queue.buffering.max.messages", "200000"),
            // Where a produce's time goes, for the metrics (a small JSON a second).
            ("statistics.interval.ms", "1000"),
        ] {
            if cfg.get(k).is_none() {
                cfg.set(k, v);
            }
        }
        let producer = cfg
            .create_with_context(Delivery {
                metrics: metrics.clone(),
            })
            .map_err(SinkError::Create)?;
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
    ///
    /// `traceparent` (W3C) goes with it: a Kafka header, or — when sampled — a field of
    /// its spool line that the replay turns back into the header.
    pub fn send(
        &self,
        order: &OrderMessage,
        mode: SinkMode,
        traceparent: Option<&str>,
    ) -> Result<Via, SinkError> {
        let payload = serde_json::to_vec(order).map_err(SinkError::Encode)?;
        let use_kafka = match mode {
            SinkMode::Kafka => true,
            SinkMode::Spool => false,
            SinkMode::Auto => self.kafka.load(Ordering::Acquire) != 2 && self.breaker.allow(),
        };
        // Set when Kafka may hold the order although it did not confirm it.
        let mut uncertain = false;
        if use_kafka {
            let started = Instant::now();
            let result = self.produce(&order.key(), &payload, traceparent);
            self.metrics
                .kafka_produce(started.elapsed(), result.is_ok());
            self.breaker.record(result.is_ok());
            match result {
                Ok(()) => return Ok(Via::Kafka),
                // Never enqueued: certainly not in the log.
                Err(e @ SinkError::Refused(_)) if mode == SinkMode::Kafka => return Err(e),
                Err(e) => {
                    uncertain = matches!(e, SinkError::Timeout);
                    tracing::warn!(order = %order.order_id, error = %e, traceparent = traceparent.unwrap_or_default(), "Kafka did not confirm the order; spooling it (a replay duplicate is harmless)")
                }
            }
        }
        // Only a sampled trace goes into the spool line (one the writer would continue):
        // the other lines keep the plain format that a gateway of an older release reads.
        let line = match traceparent.filter(|t| t.ends_with("-01")) {
            None => payload,
            Some(t) => serde_json::to_vec(&SpoolLine {
                traceparent: Some(t.to_string()),
                order: order.clone(),
            })
            .map_err(SinkError::Encode)?,
        };
        match self.spool.append(line) {
            Ok(()) => Ok(Via::Spool),
            // Not in the spool, but perhaps in the broker's log: the outcome is unknown,
            // so the reservation must stay (the caller does not release on `Timeout`).
            Err(e) if uncertain => {
                tracing::error!(order = %order.order_id, error = %e, traceparent = traceparent.unwrap_or_default(), "spool failed after an unconfirmed delivery: outcome unknown");
                Err(SinkError::Timeout)
            }
            Err(e) => Err(e),
        }
    }

    /// `Refused` when librdkafka would not enqueue it (certainly not sent); `Timeout`
    /// when the delivery report failed or did not come (it may be in the log).
    fn produce(
        &self,
        key: &str,
        payload: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), SinkError> {
        let (tx, rx) = mpsc::channel();
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
            .key(key)
            .payload(payload);
        if let Some(t) = traceparent {
            record = record.headers(trace_header(t));
        }
        self.producer
            .send(record)
            .map_err(|(e, _)| SinkError::Refused(e))?;
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
            std::fs::remove_file(&file).map_err(|source| SinkError::SpoolFile {
                what: "remove",
                path: file.clone(),
                source,
            })?;
            tracing::info!(file = %file.display(), orders = lines.len(), "spool file replayed into Kafka");
        }
        Ok(replayed)
    }

    /// Send `lines` and wait until every one is acknowledged. A full local queue is
    /// waited out (the step is smaller than the queue), never a reason to give up.
    fn replay_step(&self, lines: &[SpoolEntry]) -> Result<(), SinkError> {
        let mut waits = Vec::with_capacity(lines.len());
        for line in lines {
            let deadline = Instant::now() + self.wait;
            loop {
                let (tx, rx) = mpsc::channel();
                let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
                    .key(&line.key)
                    .payload(&line.payload);
                if let Some(t) = &line.traceparent {
                    record = record.headers(trace_header(t));
                }
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
                    Err((e, _)) => return Err(SinkError::Refused(e)),
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

/// The W3C trace context header of an order message.
fn trace_header(traceparent: &str) -> rdkafka::message::OwnedHeaders {
    rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(rdkafka::message::Header {
        key: "traceparent",
        value: Some(traceparent),
    })
}

/// A spool line that carries a trace context: the order's own fields and
/// `traceparent` beside them (a line without it is the order's JSON as sent to Kafka).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SpoolLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub order: OrderMessage,
}

/// A spooled order as the replay sends it.
pub(super) struct SpoolEntry {
    pub key: String,
    /// The message value: the order's JSON, without the trace field.
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

/// Messages replayed per step: well under librdkafka's queue
/// (`queue.buffering.max.messages`, 200,000).
const REPLAY_STEP: usize = 10_000;
