//! The Kafka hand-off. An accepted order is produced with an idempotent producer
//! (acks=all) and the request waits for its delivery report before answering 202:
//! a 202 therefore means the order is in the broker's log, replicated as the topic
//! requires. The report always arrives within `message.timeout.ms`, so the wait is
//! bounded; if the broker refuses or times out, the caller releases the reservation
//! and answers 503.
//!
//! The delivery callback runs on librdkafka's thread and wakes the waiting coroutine
//! through a may channel carried as the message's opaque.

use crate::metrics::Metrics;
use may::sync::mpsc;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use seckill_common::order::OrderMessage;
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
}

pub struct OrderSink {
    producer: ThreadedProducer<Delivery>,
    topic: String,
    wait: Duration,
    metrics: Arc<Metrics>,
}

impl OrderSink {
    pub fn new(
        brokers: &str,
        topic: &str,
        timeout_ms: u64,
        extra: &str,
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
        Ok(OrderSink {
            producer,
            topic: topic.to_string(),
            // The report comes within message.timeout.ms; the margin covers the callback.
            wait: Duration::from_millis(timeout_ms + 2000),
            metrics,
        })
    }

    /// Produce and wait for the broker's acknowledgement.
    pub fn send(&self, order: &OrderMessage) -> Result<(), SinkError> {
        let started = Instant::now();
        let result = self.send_inner(order);
        self.metrics
            .kafka_produce(started.elapsed(), result.is_ok());
        result
    }

    fn send_inner(&self, order: &OrderMessage) -> Result<(), SinkError> {
        let payload = serde_json::to_vec(order).map_err(|e| SinkError::Encode(e.to_string()))?;
        let key = order.key();
        let (tx, rx) = mpsc::channel();
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
            .key(&key)
            .payload(&payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| SinkError::Refused(e.to_string()))?;
        match rx.recv_timeout(self.wait) {
            Ok(r) => r.map_err(SinkError::Refused),
            Err(_) => Err(SinkError::Timeout),
        }
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
}
