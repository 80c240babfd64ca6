//! A buyer request's trace: the request notes when each step ran; when it ends, a
//! sampled request (or any that failed with a 5xx) becomes spans — the request, and a
//! child per step (ticket, limits, the Redis script, the Kafka produce or the spool
//! append) — with the ids chosen at its start. See `seckill_common::telemetry` for why
//! spans are built at the end.
//!
//! The id of the hand-off span is the parent in the order message's `traceparent`, so
//! the writer's spans hang under it in the same trace.

use seckill_common::telemetry::{
    new_span_id, new_trace_id, traceparent, wall, Attr, SpanDef, SpanId, SpanKind, TraceId, Tracer,
};
use std::time::{Instant, SystemTime};

/// Most steps a request records.
const STEPS: usize = 4;

struct Step {
    name: &'static str,
    kind: SpanKind,
    from: Instant,
    to: Instant,
}

pub(crate) struct RequestTrace<'a> {
    tracer: &'a Tracer,
    /// `TraceId::INVALID` when tracing is off: then every method does nothing.
    pub trace: TraceId,
    /// The request's span id (chosen at the start, so that log lines can name it).
    root: SpanId,
    /// The hand-off step's span id (the message's parent).
    handoff: SpanId,
    pub sampled: bool,
    t0: Instant,
    steps: [Option<Step>; STEPS],
    attrs: Vec<Attr>,
}

impl<'a> RequestTrace<'a> {
    pub(crate) fn start(tracer: &'a Tracer) -> RequestTrace<'a> {
        let (trace, root, sampled) = if tracer.enabled() {
            let t = new_trace_id();
            (t, new_span_id(), tracer.sampled(t))
        } else {
            (TraceId::INVALID, SpanId::INVALID, false)
        };
        RequestTrace {
            tracer,
            trace,
            root,
            handoff: SpanId::INVALID,
            sampled,
            t0: Instant::now(),
            steps: Default::default(),
            attrs: Vec::new(),
        }
    }

    fn on(&self) -> bool {
        self.trace != TraceId::INVALID
    }

    /// A step that began at `from` ended now.
    pub(crate) fn step(&mut self, name: &'static str, kind: SpanKind, from: Instant) {
        if !self.on() {
            return;
        }
        if let Some(slot) = self.steps.iter_mut().find(|s| s.is_none()) {
            *slot = Some(Step {
                name,
                kind,
                from,
                to: Instant::now(),
            });
        }
    }

    /// An attribute of the request's span (kept only when sampled: a failure traced
    /// after the fact carries its status and error instead).
    pub(crate) fn attr(
        &mut self,
        key: &'static str,
        value: impl Into<seckill_common::telemetry::Value>,
    ) {
        if self.sampled {
            self.attrs.push(Attr::new(key, value));
        }
    }

    /// The ids a log line of this request carries (`trace_id`, `span_id`; empty when
    /// tracing is off), to find its trace from the log and the log from the trace.
    pub(crate) fn log_ids(&self) -> (LogId, LogId) {
        if self.on() {
            (
                LogId(format!("{:032x}", self.trace)),
                LogId(format!("{:016x}", self.root)),
            )
        } else {
            (LogId(String::new()), LogId(String::new()))
        }
    }

    /// The W3C `traceparent` for the order message (None when tracing is off): this
    /// trace, the hand-off span as the parent, the sampling decision as its flag.
    pub(crate) fn traceparent(&mut self) -> Option<String> {
        if !self.on() {
            return None;
        }
        if self.handoff == SpanId::INVALID {
            self.handoff = new_span_id();
        }
        Some(traceparent(self.trace, self.handoff, self.sampled))
    }

    /// The request for `sale` ended with `status` (`error`: its stable code).
    pub(crate) fn finish(
        mut self,
        route: &'static str,
        sale: &str,
        status: u16,
        error: Option<&'static str>,
    ) {
        if !self.on() || !(self.sampled || (status >= 500 && self.tracer.allow_error_trace())) {
            return;
        }
        let anchor = (Instant::now(), SystemTime::now());
        let root = self.root;
        let mut span = SpanDef::new(
            route,
            SpanKind::Server,
            self.trace,
            wall(self.t0, anchor),
            anchor.1,
        )
        .with_id(root)
        .attr("http.request.method", "POST")
        .attr("http.route", route.trim_start_matches("POST "))
        .attr("http.response.status_code", i64::from(status))
        .attr("seckill.sale", sale.to_string());
        if let Some(code) = error {
            span = span.attr("seckill.error", code);
        }
        span.attrs.append(&mut self.attrs);
        if status >= 500 {
            span.error = Some(error.unwrap_or("server error").into());
            if !self.sampled {
                span = span.attr("seckill.sampled_for", "error");
            }
        }
        self.tracer.record(span);
        for step in self.steps.iter().flatten() {
            let id = match step.kind {
                SpanKind::Producer if self.handoff != SpanId::INVALID => self.handoff,
                _ => new_span_id(),
            };
            let mut span = SpanDef::new(
                step.name,
                step.kind.clone(),
                self.trace,
                wall(step.from, anchor),
                wall(step.to, anchor),
            )
            .with_id(id)
            .child_of(root, false);
            if let Some((key, value)) = system_of(step.name) {
                span = span.attr(key, value);
            }
            self.tracer.record(span);
        }
    }
}

/// The OpenTelemetry attribute naming the system a step talks to.
fn system_of(step: &str) -> Option<(&'static str, &'static str)> {
    if step.starts_with("redis.") {
        Some(("db.system.name", "redis"))
    } else if step.starts_with("kafka.") {
        Some(("messaging.system", "kafka"))
    } else {
        None
    }
}

/// A trace or span id as a log field (hex; empty when tracing is off).
pub(crate) struct LogId(String);

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
