//! The writer's spans (see `seckill_common::telemetry`): for each order whose message
//! carries a sampled `traceparent`, its consumption under the gateway's hand-off span and
//! the database write beneath it, in the order's own trace; a batch span linked to those
//! orders; and a span for each canceller scan and reconcile that did something (rare,
//! so always kept).

use seckill_common::order::OrderMessage;
use seckill_common::telemetry::{new_trace_id, wall, Link, SpanContext, SpanDef, SpanKind, Tracer};
use std::time::{Instant, SystemTime};

/// When a batch's stages ended.
pub struct BatchTimes {
    pub polled: Instant,
    pub write_from: Instant,
    pub written: Instant,
    pub committed: Instant,
}

/// One consumed message, as far as its trace is concerned.
pub struct Traced<'a> {
    pub context: &'a SpanContext,
    pub order: Option<&'a OrderMessage>,
    pub partition: i32,
    pub offset: i64,
    /// Why it went to the dead-letter topic, if it did.
    pub dead: Option<&'a str>,
}

pub fn batch(tracer: &Tracer, topic: &str, size: usize, traced: &[Traced<'_>], t: &BatchTimes) {
    if traced.is_empty() || !tracer.enabled() {
        return;
    }
    let anchor = (Instant::now(), SystemTime::now());
    let (polled, from, written, committed) = (
        wall(t.polled, anchor),
        wall(t.write_from, anchor),
        wall(t.written, anchor),
        wall(t.committed, anchor),
    );
    let mut links = Vec::with_capacity(traced.len());
    for m in traced {
        let cx = m.context;
        let mut consume = SpanDef::new(
            "order.consume",
            SpanKind::Consumer,
            cx.trace_id(),
            polled,
            committed,
        )
        .child_of(cx.span_id(), true)
        .attr("messaging.system", "kafka")
        .attr("messaging.destination.name", topic.to_string())
        .attr(
            "messaging.destination.partition.id",
            m.partition.to_string(),
        )
        .attr("messaging.kafka.offset", m.offset)
        .attr("messaging.batch.message_count", size as i64);
        if let Some(o) = m.order {
            consume = consume
                .attr("seckill.order_id", o.order_id.clone())
                .attr("seckill.sale", o.sale.clone());
        }
        if let Some(reason) = m.dead {
            consume.error = Some(format!("dead-lettered: {reason}").into());
        }
        let parent = consume.id;
        tracer.record(consume);
        if m.dead.is_none() {
            tracer.record(
                SpanDef::new(
                    "postgres.write_batch",
                    SpanKind::Client,
                    cx.trace_id(),
                    from,
                    written,
                )
                .child_of(parent, false)
                .attr("db.system.name", "postgresql")
                .attr("db.operation.name", "COPY")
                .attr("db.collection.name", "orders"),
            );
        }
        links.push(Link::with_context(cx.clone()));
    }
    let mut span = SpanDef::new(
        "writer.batch",
        SpanKind::Internal,
        new_trace_id(),
        polled,
        committed,
    )
    .attr("messaging.batch.message_count", size as i64);
    span.links = links;
    tracer.record(span);
}

/// A root span for one background pass that did something (`what`: its name), with its
/// counts, or its error.
pub fn pass(
    tracer: &Tracer,
    what: &'static str,
    from: Instant,
    counts: &[(&'static str, i64)],
    error: Option<String>,
) {
    if !tracer.enabled() {
        return;
    }
    let anchor = (Instant::now(), SystemTime::now());
    let mut span = SpanDef::new(
        what,
        SpanKind::Internal,
        new_trace_id(),
        wall(from, anchor),
        anchor.1,
    );
    for (k, v) in counts {
        span = span.attr(k, *v);
    }
    span.error = error.map(Into::into);
    tracer.record(span);
}
