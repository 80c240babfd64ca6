//! Traces: OpenTelemetry spans, built whole when an operation ends and exported over
//! OTLP/HTTP (protobuf) by one background thread.
//!
//! Why spans are built at the end rather than opened and closed: the gateway serves on
//! coroutines, which a thread-local "current span" cannot follow, and a request that is
//! not sampled must cost nothing but a few clock reads. So a request notes when each of
//! its steps started and ended, and only a sampled request — or one that failed with a
//! 5xx, always kept — becomes spans, with the ids it chose at its start (the id of the
//! span that produced an order travels in the message's W3C `traceparent` header).
//!
//! Export never blocks the caller: finished spans go into a bounded queue, and a span
//! that finds it full is dropped and counted (`Tracer::dropped`). The exporter thread
//! sends a batch at least once a second, each request with a timeout.

use opentelemetry::trace::{Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, TraceId};
pub use opentelemetry::{KeyValue as Attr, Value};

/// How a component traces, from its configuration (`tracing_*` settings).
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// OTLP/HTTP base URL (`http://host:4318`); empty: tracing off.
    pub endpoint: String,
    /// Share of operations traced, 0.0..=1.0 (failed requests are always traced).
    pub sample_ratio: f64,
    /// Most finished spans waiting for export; more are dropped and counted.
    pub queue: usize,
    /// Timeout of one export request.
    pub timeout: Duration,
}

impl TraceSettings {
    /// From a component's `tracing_endpoint`, `tracing_sample_ratio`, `tracing_queue`
    /// and `tracing_timeout_ms` (whose ranges the component checks).
    pub fn from_config(
        endpoint: &str,
        sample_ratio: f64,
        queue: i64,
        timeout_ms: i64,
    ) -> TraceSettings {
        TraceSettings {
            endpoint: endpoint.to_string(),
            sample_ratio,
            queue: queue.clamp(1, 1_000_000) as usize,
            timeout: Duration::from_millis(timeout_ms.clamp(1, 60_000) as u64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing_endpoint {0:?}: expected http://host:port (a local OpenTelemetry collector or Jaeger; use the collector for TLS)")]
    Endpoint(String),
    #[error("tracing_sample_ratio {0}: expected a number from 0 to 1")]
    Ratio(String),
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(String),
    #[error("could not start the span exporter thread: {0}")]
    Thread(String),
}

/// Counts shared with the exporter thread.
#[derive(Debug, Default)]
struct Counts {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed_exports: AtomicU64,
    /// The second (since the epoch) of `errors_traced`, and how many unsampled failures
    /// were traced in it.
    error_second: AtomicU64,
    errors_traced: AtomicU64,
}

/// Most unsampled failures traced a second per process: a storm of 5xx (an open Redis
/// breaker, a paused sale, shedding) must not become a storm of spans on the request
/// path; the first ones of each second show what is failing.
pub const ERROR_TRACES_PER_SECOND: u64 = 10;

/// A component's tracer: the sampling decision and the export queue. Cheap to share.
/// The default is [`Tracer::off`].
#[derive(Debug, Clone)]
pub struct Tracer {
    tx: Option<SyncSender<SpanData>>,
    /// A trace id whose low 63 bits are below this is sampled (as OpenTelemetry's
    /// `TraceIdRatioBased`, so every component agrees on a trace id).
    bound: u64,
    scope: InstrumentationScope,
    counts: Arc<Counts>,
}

impl Tracer {
    /// Tracing off: nothing sampled, nothing exported.
    pub fn off() -> Tracer {
        Tracer {
            tx: None,
            bound: 0,
            scope: InstrumentationScope::builder("seckill").build(),
            counts: Arc::default(),
        }
    }

    /// Start exporting to `settings.endpoint` as `service` (off when the endpoint is empty).
    pub fn start(
        service: &'static str,
        settings: &TraceSettings,
    ) -> Result<Tracer, TelemetryError> {
        if !(0.0..=1.0).contains(&settings.sample_ratio) {
            return Err(TelemetryError::Ratio(settings.sample_ratio.to_string()));
        }
        if settings.endpoint.is_empty() {
            return Ok(Tracer::off());
        }
        let base = settings.endpoint.trim_end_matches('/');
        let client = PlainHttp::new(base, settings.timeout)?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(settings.timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        std::thread::Builder::new()
            .name("span-export".into())
            .spawn(move || export_loop(exporter, rx, shared))
            .map_err(|e| TelemetryError::Thread(e.to_string()))?;
        Ok(Tracer {
            tx: Some(tx),
            bound: ratio_bound(settings.sample_ratio),
            scope: InstrumentationScope::builder(service).build(),
            counts,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Is a trace with this id sampled? (The same answer in every component.)
    pub fn sampled(&self, trace: TraceId) -> bool {
        self.tx.is_some() && sampled_id(trace, self.bound)
    }

    /// May one more unsampled failure be traced this second
    /// ([`ERROR_TRACES_PER_SECOND`])? Approximate under races, never more than a few over.
    pub fn allow_error_trace(&self) -> bool {
        if self.tx.is_none() {
            return false;
        }
        let second = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let c = &self.counts;
        if c.error_second.swap(second, Ordering::Relaxed) != second {
            c.errors_traced.store(0, Ordering::Relaxed);
        }
        c.errors_traced.fetch_add(1, Ordering::Relaxed) < ERROR_TRACES_PER_SECOND
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.counts.exported.load(Ordering::Relaxed)
    }

    /// Export requests that failed (their spans are lost, not retried).
    pub fn failed_exports(&self) -> u64 {
        self.counts.failed_exports.load(Ordering::Relaxed)
    }

    /// Queue a finished span for export, or drop it (counted) if the queue is full.
    pub fn record(&self, span: SpanDef) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(span.into_data(self.scope.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Metrics in the Prometheus text format, for a component's `/metrics`.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP seckill_trace_spans_exported_total Spans the trace collector accepted.\n\
             # TYPE seckill_trace_spans_exported_total counter\n\
             seckill_trace_spans_exported_total {}\n\
             # HELP seckill_trace_spans_dropped_total Finished spans dropped because the export queue was full.\n\
             # TYPE seckill_trace_spans_dropped_total counter\n\
             seckill_trace_spans_dropped_total {}\n\
             # HELP seckill_trace_export_failures_total Span export requests that failed (their spans are lost).\n\
             # TYPE seckill_trace_export_failures_total counter\n\
             seckill_trace_export_failures_total {}\n",
            self.exported(),
            self.dropped(),
            self.failed_exports()
        );
    }
}

impl Default for Tracer {
    fn default() -> Tracer {
        Tracer::off()
    }
}

fn ratio_bound(ratio: f64) -> u64 {
    // Over the low 63 bits, as TraceIdRatioBased does.
    (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
}

fn sampled_id(trace: TraceId, bound: u64) -> bool {
    let low = u64::from_be_bytes(trace.to_bytes()[8..].try_into().unwrap_or([0; 8]));
    (low >> 1) < bound
}

/// A fresh random trace id (never the invalid all-zero one).
pub fn new_trace_id() -> TraceId {
    TraceId::from(rand::random::<u128>().max(1))
}

/// A fresh random span id (never the invalid zero).
pub fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// The W3C `traceparent` value: version 00, trace id, parent span id, flags.
pub fn traceparent(trace: TraceId, span: SpanId, sampled: bool) -> String {
    format!("00-{trace:032x}-{span:016x}-{:02x}", u8::from(sampled))
}

/// A `traceparent` value read back as a remote span context; `None` unless it is a
/// well-formed version-00 value with valid (non-zero) ids.
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || version != "00"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(trace) || !hex(span) || !hex(flags) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags & 1),
        true,
        TraceState::NONE,
    ))
}

/// Wall-clock time of `at`, given a pair of clock readings taken together.
pub fn wall(at: Instant, anchor: (Instant, SystemTime)) -> SystemTime {
    if at >= anchor.0 {
        anchor.1 + (at - anchor.0)
    } else {
        anchor.1 - (anchor.0 - at)
    }
}

/// One finished span, described by its caller.
#[derive(Debug, Clone)]
pub struct SpanDef {
    pub name: &'static str,
    pub kind: SpanKind,
    pub trace: TraceId,
    pub id: SpanId,
    /// The parent's span id and whether it came from another process.
    pub parent: Option<(SpanId, bool)>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attrs: Vec<KeyValue>,
    pub links: Vec<Link>,
    /// `Some(description)` for a failed operation.
    pub error: Option<Cow<'static, str>>,
}

impl SpanDef {
    pub fn new(
        name: &'static str,
        kind: SpanKind,
        trace: TraceId,
        start: SystemTime,
        end: SystemTime,
    ) -> SpanDef {
        SpanDef {
            name,
            kind,
            trace,
            id: new_span_id(),
            parent: None,
            start,
            end,
            attrs: Vec::new(),
            links: Vec::new(),
            error: None,
        }
    }

    pub fn with_id(mut self, id: SpanId) -> SpanDef {
        self.id = id;
        self
    }

    pub fn child_of(mut self, parent: SpanId, remote: bool) -> SpanDef {
        self.parent = Some((parent, remote));
        self
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<Value>) -> SpanDef {
        self.attrs.push(KeyValue::new(key, value));
        self
    }

    fn into_data(self, scope: InstrumentationScope) -> SpanData {
        let (parent_span_id, parent_span_is_remote) =
            self.parent.unwrap_or((SpanId::INVALID, false));
        let mut links = SpanLinks::default();
        links.links = self.links;
        SpanData {
            span_context: SpanContext::new(
                self.trace,
                self.id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id,
            parent_span_is_remote,
            span_kind: self.kind,
            name: Cow::Borrowed(self.name),
            start_time: self.start,
            end_time: self.end.max(self.start),
            attributes: self.attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status: match self.error {
                Some(description) => Status::Error { description },
                None => Status::Unset,
            },
            instrumentation_scope: scope,
        }
    }
}

/// Most spans in one export request.
const BATCH: usize = 512;

fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    rx: Receiver<SpanData>,
    counts: Arc<Counts>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // Said once when exports start failing and once when they work again (the
    // failures are counted in between).
    let mut failing = false;
    loop {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut closed = false;
        while batch.len() < BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            match futures_executor::block_on(exporter.export(spans)) {
                Ok(()) => {
                    counts.exported.fetch_add(n, Ordering::Relaxed);
                    if std::mem::take(&mut failing) {
                        tracing::info!("span export works again");
                    }
                }
                Err(e) => {
                    counts.failed_exports.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, spans = n, "span export failed; spans are lost until the collector answers (seckill_trace_export_failures_total)");
                    }
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// A minimal HTTP/1.1 client for the exporter: `http://` only, one connection a
/// request, every step under the timeout, the answer read up to 64 KiB.
#[derive(Debug)]
struct PlainHttp {
    authority: String,
    timeout: Duration,
}

impl PlainHttp {
    fn new(base: &str, timeout: Duration) -> Result<PlainHttp, TelemetryError> {
        let bad = || TelemetryError::Endpoint(base.to_string());
        let rest = base.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || !authority.contains(':') {
            return Err(bad());
        }
        Ok(PlainHttp {
            authority: authority.to_string(),
            timeout,
        })
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        use std::io::{Read, Write};
        use std::net::ToSocketAddrs;
        let deadline = Instant::now() + self.timeout;
        let addr = self
            .authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, self.timeout)?;
        s.set_write_timeout(Some(self.timeout))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "collector answer timed out",
                ));
            }
            s.set_read_timeout(Some(left))?;
            match s.read(&mut buf)? {
                0 => break,
                n => answer.extend_from_slice(&buf[..n]),
            }
            if answer.len() > 64 * 1024 {
                break;
            }
        }
        let status = answer
            .strip_prefix(b"HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
        let body = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| answer[i + 4..].to_vec())
            .unwrap_or_default();
        Ok((status, body))
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for PlainHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/x-protobuf")
            .to_string();
        let (status, body) = self.post(&path, &content_type, request.body())?;
        Ok(http::Response::builder()
            .status(status)
            .body(bytes::Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_malformed_values() {
        let (t, s) = (new_trace_id(), new_span_id());
        let v = traceparent(t, s, true);
        let cx = parse_traceparent(v.as_bytes()).unwrap();
        assert_eq!((cx.trace_id(), cx.span_id()), (t, s));
        assert!(cx.is_sampled() && cx.is_remote());
        assert!(!parse_traceparent(traceparent(t, s, false).as_bytes())
            .unwrap()
            .is_sampled());
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_sampling_ratio_holds_and_every_component_agrees() {
        let bound = ratio_bound(0.01);
        // A fixed sequence of ids (deterministic), spread like random ones.
        let ids = (0..200_000u128)
            .map(|i| TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | 1));
        let n = ids.filter(|t| sampled_id(*t, bound)).count();
        assert!((1_600..=2_400).contains(&n), "{n} of 200000 sampled at 1 %");
        assert!(!sampled_id(TraceId::from(u128::MAX), ratio_bound(0.0)));
        assert!(sampled_id(TraceId::from(u128::MAX), ratio_bound(1.0)));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // No exporter thread drains this queue of one.
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let t = Tracer {
            tx: Some(tx),
            bound: ratio_bound(1.0),
            scope: InstrumentationScope::builder("test").build(),
            counts: Arc::default(),
        };
        let now = SystemTime::now();
        for _ in 0..3 {
            t.record(SpanDef::new(
                "x",
                SpanKind::Internal,
                new_trace_id(),
                now,
                now,
            ));
        }
        assert_eq!(t.dropped(), 2);
    }

    #[test]
    fn endpoints_are_plain_http_with_a_port() {
        for bad in ["https://c:4318", "c:4318", "http://", "http://collector"] {
            assert!(
                PlainHttp::new(bad, Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
        assert!(PlainHttp::new("http://127.0.0.1:4318", Duration::from_secs(1)).is_ok());
    }
}
