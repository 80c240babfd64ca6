//! The local stack's broker speaks Kafka to the real client: an idempotent producer
//! (acks=all) delivers, and a consumer group reads everything once and commits offsets
//! that a later member of the group resumes from.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<(u64, Vec<String>)>>);
impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let mut d = self.0.lock().unwrap();
        match r {
            Ok(_) => d.0 += 1,
            Err((e, _)) => d.1.push(e.to_string()),
        }
    }
}

fn produce(brokers: &str, topic: &str, range: std::ops::Range<u32>) {
    let ctx = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create_with_context(ctx.clone())
        .expect("producer");
    for i in range.clone() {
        let key = format!("user-{}", i % 7);
        let payload = format!("order-{i}");
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&payload))
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let d = ctx.0.lock().unwrap();
    assert!(d.1.is_empty(), "delivery errors: {:?}", d.1);
    assert_eq!(d.0, range.len() as u64, "every message acknowledged");
}

/// Read until `want` messages arrived (or 30 s passed), commit synchronously, return payloads.
fn consume(brokers: &str, topic: &str, group: &str, want: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    // Anything beyond `want` within a short grace is a duplicate the caller will see.
    let grace = Instant::now() + Duration::from_secs(2);
    while Instant::now() < grace {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    if !got.is_empty() {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit offsets");
    }
    got
}

#[test]
fn idempotent_producer_and_committing_group_round_trip() {
    let stack = stackctl::ensure_up();
    let brokers = stack.kafka_brokers.as_str();
    let topic = testkit::unique("roundtrip");
    seckill_common::kafka::create_topic(brokers, &topic, 3).expect("create topic");

    produce(brokers, &topic, 0..300);
    let group = format!("{topic}-group");
    let first = consume(brokers, &topic, &group, 300);
    let expect: HashSet<String> = (0..300).map(|i| format!("order-{i}")).collect();
    assert_eq!(first.len(), 300, "each message exactly once");
    assert_eq!(first.iter().cloned().collect::<HashSet<_>>(), expect);

    // A new member of the same group resumes after the committed offsets.
    produce(brokers, &topic, 300..350);
    let second = consume(brokers, &topic, &group, 50);
    let expect: HashSet<String> = (300..350).map(|i| format!("order-{i}")).collect();
    assert_eq!(second.len(), 50, "only the new messages: {second:?}");
    assert_eq!(second.into_iter().collect::<HashSet<_>>(), expect);
}
