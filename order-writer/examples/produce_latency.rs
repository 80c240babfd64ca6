//! Delivery-report latency of the gateway's kind of producer (idempotent, `acks=all`),
//! paced open loop: message i is due at i / rate s and its latency runs from then (so a
//! stall is not hidden by sending later) to its delivery report. Compares producer
//! settings on the local stack, on a topic of its own (`bench_produce_latency`).
//! `cargo run --release -p order-writer --example produce_latency [rate=1200] [secs=5] [k=v,…]`
//! The settings start as the gateway's before its own (`linger.ms=1` as the baseline);
//! `k=v,…` overrides them, e.g. `linger.ms=0,socket.nagle.disable=true`.

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Ctx;
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<(Instant, mpsc::Sender<u64>)>;
    fn delivery(&self, _: &DeliveryResult<'_>, o: Self::DeliveryOpaque) {
        let _ = o.1.send(o.0.elapsed().as_micros() as u64);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1200)
        .max(1);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let extra = args.get(3).cloned().unwrap_or_default();
    let brokers = stackctl::ensure_up().kafka_brokers;
    let topic = "bench_produce_latency";
    seckill_common::kafka::create_topic(&brokers, topic, 8)?;
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "5000")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "200000");
    for kv in extra.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or("settings are k=v,k=v")?;
        c.set(k, v);
    }
    let p: ThreadedProducer<Ctx> = c.create_with_context(Ctx)?;
    let (tx, rx) = mpsc::channel();
    let payload = vec![b'x'; 180]; // about an order message
    for i in 0..200u64 {
        // Warm-up: connections, metadata, producer id.
        let key = i.to_string();
        let rec = BaseRecord::with_opaque_to(topic, Box::new((Instant::now(), tx.clone())));
        p.send(rec.key(&key).payload(&payload))
            .map_err(|(e, _)| e)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    p.flush(Duration::from_secs(10))?;
    while rx.try_recv().is_ok() {}
    let start = Instant::now();
    for i in 0..rate * secs {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = format!("u{}", i * 7919 % 100_000);
        let rec = BaseRecord::with_opaque_to(topic, Box::new((due, tx.clone())));
        p.send(rec.key(&key).payload(&payload))
            .map_err(|(e, _)| e)?;
    }
    p.flush(Duration::from_secs(10))?;
    drop(tx);
    let mut v: Vec<u64> = rx.iter().collect();
    v.sort_unstable();
    let q = |x: f64| v[((v.len() as f64 * x) as usize).min(v.len() - 1)] as f64 / 1000.0;
    println!(
        "[{extra}] {rate}/s for {secs} s: {} reports, p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms",
        v.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    Ok(())
}
