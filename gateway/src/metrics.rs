//! Prometheus text metrics with fixed label sets, so recording is a few atomic adds
//! and memory is bounded (no label comes from a client).

use crate::error::ApiError;
use may_minihttp::{Hangup, Refusal};
use seckill_common::observability::write_metric;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Routes as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Token,
    Order,
    OrderStatus,
    Pay,
    PaymentCallback,
    Sale,
    AdminSales,
    AdminSwitches,
    Metrics,
    Health,
    Ready,
    Other,
}

pub const ROUTES: [Route; 12] = [
    Route::Token,
    Route::Order,
    Route::OrderStatus,
    Route::Pay,
    Route::PaymentCallback,
    Route::Sale,
    Route::AdminSales,
    Route::AdminSwitches,
    Route::Metrics,
    Route::Health,
    Route::Ready,
    Route::Other,
];

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::Order => "order",
            Route::OrderStatus => "order_status",
            Route::Pay => "pay",
            Route::PaymentCallback => "payment_callback",
            Route::Sale => "sale",
            Route::AdminSales => "admin_sales",
            Route::AdminSwitches => "admin_switches",
            Route::Metrics => "metrics",
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Other => "other",
        }
    }
}

/// The gateway's two listeners: `listen` (the buyers) and `internal_listen` (the
/// operators and the payment provider). Each is its own may_minihttp server with the same
/// edge limits, counted apart (`max_connections`, `max_connections_per_ip` hold per
/// listener), so a flood of buyers cannot take the operators' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Internal,
}

pub const LISTENERS: [Listener; 2] = [Listener::Public, Listener::Internal];

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Internal => "internal",
        }
    }

    /// Whether this listener serves `route`: the buying routes only on the public one;
    /// `/admin/*`, `/metrics` and the provider's callback only on the internal one; the
    /// probes on both (a balancer or an orchestrator may check either). Elsewhere a route
    /// is an unknown path (404), so the public address says nothing of the others.
    pub fn serves(self, route: Route) -> bool {
        match route {
            Route::Health | Route::Ready => true,
            Route::Token | Route::Order | Route::OrderStatus | Route::Pay | Route::Sale => {
                self == Listener::Public
            }
            Route::PaymentCallback | Route::AdminSales | Route::AdminSwitches | Route::Metrics => {
                self == Listener::Internal
            }
            Route::Other => false,
        }
    }
}

const STATUSES: [u16; 20] = [
    200, 201, 202, 400, 401, 404, 405, 408, 409, 410, 413, 415, 422, 425, 429, 431, 500, 501, 503,
    0,
];

/// Latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braced} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braced} {cum}");
    }
}

/// Why a request was refused before any work.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Global,
    User,
    Ip,
    Admission,
}

const LIMITS: [&str; 4] = ["global", "user", "ip", "admission"];

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
    redis_latency: Histogram,
    redis_errors: AtomicU64,
    redis_connections: AtomicU64,
    /// Connections lost and slot-map changes: any of them may put a purchase on a Redis
    /// process that lost writes (restart, failover). The purchase fence compares it.
    redis_topology_changes: AtomicU64,
    /// Reservations whose WAIT saw fewer replicas than asked (Redis Cluster, `redis_wait_replicas`).
    redis_unreplicated: AtomicU64,
    kafka_latency: Histogram,
    /// librdkafka's statistics, the worst broker: [queue, outbuf, rtt] × [p50, p99], µs.
    kafka_stages: [[AtomicU64; 2]; 3],
    kafka_errors: AtomicU64,
    limited: [AtomicU64; 4],
    sold_out_shed: AtomicU64,
    /// Payment callbacks by outcome (`CallbackOutcome::ALL` order).
    payment_callbacks: [AtomicU64; 6],
    orders_accepted: AtomicU64,
    orders_replayed: AtomicU64,
    stock_released_on_sink_failure: AtomicU64,
    spooled: AtomicU64,
    spool_full: AtomicU64,
    released_on_retry: AtomicU64,
    spool_replayed: AtomicU64,
    /// Refusals of the HTTP edge, by `Refusal` (in `Refusal::ALL` order).
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Connections dropped for not taking their output, by `Hangup` (`Hangup::ALL` order).
    dropped: [AtomicU64; Hangup::ALL.len()],
    /// Open connections per listener (`LISTENERS` order).
    connections: [AtomicI64; LISTENERS.len()],
    /// Admitted token and order requests per sale (the first `MAX_SALES` sales seen; the
    /// rest count under `_other`): where a hot sale key shows.
    per_sale: std::sync::RwLock<std::collections::HashMap<String, AtomicU64>>,
}

const MAX_SALES: usize = 64;

impl Metrics {
    pub fn request(&self, route: Route, status: u16, took: Duration) {
        let r = route as usize;
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len() - 1);
        self.requests[r][s].fetch_add(1, Ordering::Relaxed);
        self.latency[r].observe(took);
    }

    pub fn redis_call(&self, took: Duration, ok: bool) {
        self.redis_latency.observe(took);
        if !ok {
            self.redis_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reservation answered although its WAIT timed out short of the replicas asked for.
    pub fn redis_unreplicated(&self) {
        self.redis_unreplicated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn redis_unreplicated_total(&self) -> u64 {
        self.redis_unreplicated.load(Ordering::Relaxed)
    }

    pub fn redis_connected(&self, up: bool) {
        if up {
            self.redis_connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.redis_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A pipelined connection was lost or the cluster's slot map changed.
    pub fn redis_topology_changed(&self) {
        self.redis_topology_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times the Redis topology changed: the purchase fence's generation.
    pub fn redis_topology_generation(&self) -> u64 {
        self.redis_topology_changes.load(Ordering::Acquire)
    }

    pub fn kafka_produce(&self, took: Duration, ok: bool) {
        self.kafka_latency.observe(took);
        if !ok {
            self.kafka_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// librdkafka's last statistics window: [queue, outbuf, rtt] × [p50, p99], µs.
    pub fn kafka_stages(&self, stages: [[i64; 2]; 3]) {
        for (stage, q) in self.kafka_stages.iter().zip(stages) {
            for (slot, v) in stage.iter().zip(q) {
                slot.store(v.max(0) as u64, Ordering::Relaxed);
            }
        }
    }

    pub fn limited(&self, why: Limit) {
        self.limited[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn sold_out_shed(&self) {
        self.sold_out_shed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn payment_callback(&self, o: crate::payments::CallbackOutcome) {
        if let Some(i) = crate::payments::CallbackOutcome::ALL
            .iter()
            .position(|x| *x == o)
        {
            self.payment_callbacks[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn order_accepted(&self) {
        self.orders_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn order_replayed(&self) {
        self.orders_replayed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn released_on_sink_failure(&self) {
        self.stock_released_on_sink_failure
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn sale_request(&self, sale: &str) {
        {
            let m = self.per_sale.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = m.get(sale).or_else(|| {
                if m.len() >= MAX_SALES {
                    m.get("_other")
                } else {
                    None
                }
            }) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut m = self.per_sale.write().unwrap_or_else(|p| p.into_inner());
        let key = if m.len() >= MAX_SALES - 1 && !m.contains_key(sale) {
            "_other"
        } else {
            sale
        };
        m.entry(key.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn spooled(&self) {
        self.spooled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn released_on_retry(&self, n: u64) {
        self.released_on_retry.fetch_add(n, Ordering::Relaxed);
    }

    pub fn spool_full(&self) {
        self.spool_full.fetch_add(1, Ordering::Relaxed);
    }

    pub fn spool_replayed(&self, n: u64) {
        self.spool_replayed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn refused(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self, why: Hangup) {
        if let Some(i) = Hangup::ALL.iter().position(|h| *h == why) {
            self.dropped[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection to `listener` opened (`true`) or closed.
    pub fn connection(&self, listener: Listener, open: bool) {
        self.connections[listener as usize].fetch_add(if open { 1 } else { -1 }, Ordering::Relaxed);
    }

    pub fn sold_out_shed_total(&self) -> u64 {
        self.sold_out_shed.load(Ordering::Relaxed)
    }

    /// Counters and histograms; the caller appends gauges it owns.
    pub fn render(&self, out: &mut String) {
        self.render_requests(out);
        self.render_redis(out);
        self.render_orders(out);
        self.render_edge(out);
        self.render_payments(out);
    }

    /// Requests by route and status, and their latency by route.
    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP seckill_http_requests_total HTTP requests by route and status.\n# TYPE seckill_http_requests_total counter\n");
        for (r, route) in ROUTES.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                let n = self.requests[r][s].load(Ordering::Relaxed);
                if n > 0 {
                    let status = if *status == 0 {
                        "other".to_string()
                    } else {
                        status.to_string()
                    };
                    let _ = writeln!(
                        out,
                        "seckill_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                        route.label()
                    );
                }
            }
        }
        out.push_str("# HELP seckill_http_request_duration_seconds Request latency by route.\n# TYPE seckill_http_request_duration_seconds histogram\n");
        for (r, route) in ROUTES.iter().enumerate() {
            self.latency[r].render(
                out,
                "seckill_http_request_duration_seconds",
                &format!("route=\"{}\"", route.label()),
            );
        }
    }

    /// The Redis calls: latency, failures, unreplicated answers, topology changes,
    /// connections.
    fn render_redis(&self, out: &mut String) {
        out.push_str("# HELP seckill_redis_call_duration_seconds Redis call latency.\n# TYPE seckill_redis_call_duration_seconds histogram\n");
        self.redis_latency
            .render(out, "seckill_redis_call_duration_seconds", "");
        counter(
            out,
            "seckill_redis_errors_total",
            "Redis calls that failed, timed out or were refused by the breaker.",
            self.redis_errors.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_redis_unreplicated_total",
            "Reservations answered although no replica acknowledged them within redis_wait_timeout_ms (a failover now could resell the unit).",
            self.redis_unreplicated.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_redis_topology_changes_total",
            "Pipelined Redis connections lost and cluster slot-map changes; each holds purchases until the store's Redis processes are known to hold every acknowledged order.",
            self.redis_topology_changes.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "seckill_redis_connections",
            "Open pipelined Redis connections.",
            self.redis_connections.load(Ordering::Relaxed),
        );
    }

    /// The orders' hand-off (Kafka, the spool), the limits and the sheds, per sale.
    fn render_orders(&self, out: &mut String) {
        out.push_str("# HELP seckill_kafka_produce_duration_seconds Time from produce to delivery report.\n# TYPE seckill_kafka_produce_duration_seconds histogram\n");
        self.kafka_latency
            .render(out, "seckill_kafka_produce_duration_seconds", "");
        out.push_str("# HELP seckill_kafka_producer_stage_seconds Where a produce's time goes, from librdkafka's statistics (last statistics.interval.ms window; the largest p50 and the largest p99 over the brokers; 0 while no statistics come, e.g. statistics.interval.ms=0): queue = from produce to its request being sent (int_latency), outbuf = the request waiting to be written (outbuf_latency), rtt = the broker's round trip, its own time included.\n# TYPE seckill_kafka_producer_stage_seconds gauge\n");
        for (stage, q) in ["queue", "outbuf", "rtt"].iter().zip(&self.kafka_stages) {
            for (quantile, v) in ["0.5", "0.99"].iter().zip(q) {
                let _ = writeln!(
                    out,
                    "seckill_kafka_producer_stage_seconds{{stage=\"{stage}\",quantile=\"{quantile}\"}} {}",
                    v.load(Ordering::Relaxed) as f64 / 1e6
                );
            }
        }
        counter(
            out,
            "seckill_kafka_errors_total",
            "Orders the broker did not acknowledge.",
            self.kafka_errors.load(Ordering::Relaxed),
        );
        out.push_str("# HELP seckill_limited_total Requests refused by a limit, by limit.\n# TYPE seckill_limited_total counter\n");
        for (i, l) in LIMITS.iter().enumerate() {
            let _ = writeln!(
                out,
                "seckill_limited_total{{limit=\"{l}\"}} {}",
                self.limited[i].load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "seckill_sold_out_shed_total",
            "Token requests answered from memory, without Redis or ticket crypto: the sale is known sold out (410 sold_out) or ended (410 sale_ended).",
            self.sold_out_shed.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_orders_accepted_total",
            "Orders acknowledged with 202.",
            self.orders_accepted.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_orders_replayed_total",
            "Purchase retries answered 202 with the order their token had already made.",
            self.orders_replayed.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_stock_released_on_sink_failure_total",
            "Reservations returned to stock because the broker refused the order.",
            self.stock_released_on_sink_failure.load(Ordering::Relaxed),
        );
        out.push_str("# HELP seckill_sale_requests_total Admitted token and order requests by sale (a hot sale shows here).\n# TYPE seckill_sale_requests_total counter\n");
        for (sale, n) in self
            .per_sale
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "seckill_sale_requests_total{{sale=\"{}\"}} {}",
                escape_label(sale),
                n.load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "seckill_spooled_total",
            "Orders written to the durable local spool instead of Kafka.",
            self.spooled.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_released_on_retry_total",
            "Units of unacknowledged orders given back by a retried release (their first release failed).",
            self.released_on_retry.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_spool_full_total",
            "Orders refused because the spool held `spool_max_orders` (unit returned).",
            self.spool_full.load(Ordering::Relaxed),
        );
        counter(
            out,
            "seckill_spool_replayed_total",
            "Spooled orders replayed into Kafka.",
            self.spool_replayed.load(Ordering::Relaxed),
        );
    }

    /// The payment provider's callbacks by outcome.
    fn render_payments(&self, out: &mut String) {
        out.push_str("# HELP seckill_payment_callbacks_total The payment provider's callbacks by outcome: paid, duplicate (already paid), refund_due (the order was cancelled first, or paid by another payment, or the payment does not fit it: the money is owed back), ignored (another event type), refused (signed, but a bad body or not fitting its order), unauthenticated (no valid signature).\n# TYPE seckill_payment_callbacks_total counter\n");
        for (i, o) in crate::payments::CallbackOutcome::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "seckill_payment_callbacks_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.payment_callbacks[i].load(Ordering::Relaxed)
            );
        }
    }

    /// The HTTP edge: refusals and dropped connections by reason, open connections (in
    /// all, and per listener).
    fn render_edge(&self, out: &mut String) {
        out.push_str("# HELP seckill_http_refused_total Requests and connections refused at the HTTP edge (framing, bounds, timeouts), by reason.\n# TYPE seckill_http_refused_total counter\n");
        for (i, r) in Refusal::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "seckill_http_refused_total{{reason=\"{}\"}} {}",
                ApiError::Refused(*r).code(),
                self.refused[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP seckill_http_dropped_total Connections dropped without an answer because the client did not take its output (write_timeout: no progress; min_send_rate: too slowly), by reason.\n# TYPE seckill_http_dropped_total counter\n");
        for (i, h) in Hangup::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "seckill_http_dropped_total{{reason=\"{}\"}} {}",
                h.label(),
                self.dropped[i].load(Ordering::Relaxed)
            );
        }
        let open = self
            .connections
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed));
        gauge(
            out,
            "seckill_http_connections",
            "Open client connections on both listeners (those being refused included).",
            open.iter().sum::<i64>(),
        );
        out.push_str("# HELP seckill_http_listener_connections Open client connections by listener (public: listen, internal: internal_listen); max_connections and max_connections_per_ip hold per listener.\n# TYPE seckill_http_listener_connections gauge\n");
        for (l, n) in LISTENERS.iter().zip(open) {
            let _ = writeln!(
                out,
                "seckill_http_listener_connections{{listener=\"{}\"}} {n}",
                l.label()
            );
        }
    }
}

/// One counter with no labels.
fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    write_metric(out, name, "counter", help, v);
}

/// One gauge with no labels.
fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    write_metric(out, name, "gauge", help, v);
}

/// A Prometheus label value: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            escape_label(
                r#"a"b\c
d"#
            ),
            r#"a\"b\\c\nd"#
        );
        assert_eq!(escape_label("sale_1"), "sale_1");
    }

    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"0.0001\"} 1\n"));
        assert!(s.contains("x_bucket{le=\"0.005\"} 2\n"));
        assert!(s.contains("x_bucket{le=\"2.5\"} 2\n"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(s.contains("x_count 3\n"));
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.request(Route::Order, 202, Duration::from_millis(1));
        m.request(Route::Order, 202, Duration::from_millis(1));
        m.request(Route::Token, 999, Duration::from_millis(1));
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("seckill_http_requests_total{route=\"order\",status=\"202\"} 2\n"));
        assert!(s.contains("seckill_http_requests_total{route=\"token\",status=\"other\"} 1\n"));
    }

    #[test]
    fn edge_refusals_and_connections_are_exported() {
        let m = Metrics::default();
        m.refused(Refusal::TransferEncoding);
        m.refused(Refusal::TransferEncoding);
        m.refused(Refusal::TooManyConnectionsPerIp);
        m.dropped(Hangup::MinSendRate);
        m.connection(Listener::Public, true);
        m.connection(Listener::Public, true);
        m.connection(Listener::Public, false);
        m.connection(Listener::Internal, true);
        let mut s = String::new();
        m.render(&mut s);
        assert!(
            s.contains("seckill_http_refused_total{reason=\"transfer_encoding_unsupported\"} 2\n")
        );
        assert!(s.contains("seckill_http_refused_total{reason=\"head_timeout\"} 0\n"));
        assert!(
            s.contains("seckill_http_refused_total{reason=\"too_many_connections_per_ip\"} 1\n")
        );
        assert!(s.contains("seckill_http_dropped_total{reason=\"min_send_rate\"} 1\n"));
        assert!(s.contains("seckill_http_dropped_total{reason=\"write_timeout\"} 0\n"));
        assert!(s.contains("seckill_http_connections 2\n"));
        assert!(s.contains("seckill_http_listener_connections{listener=\"public\"} 1\n"));
        assert!(s.contains("seckill_http_listener_connections{listener=\"internal\"} 1\n"));
    }

    #[test]
    fn each_route_is_served_where_it_belongs() {
        use Listener::{Internal, Public};
        let public = [
            Route::Token,
            Route::Order,
            Route::OrderStatus,
            Route::Pay,
            Route::Sale,
        ];
        let internal = [
            Route::PaymentCallback,
            Route::AdminSales,
            Route::AdminSwitches,
            Route::Metrics,
        ];
        for r in ROUTES {
            let want = (
                public.contains(&r) || matches!(r, Route::Health | Route::Ready),
                internal.contains(&r) || matches!(r, Route::Health | Route::Ready),
            );
            assert_eq!((Public.serves(r), Internal.serves(r)), want, "{r:?}");
        }
    }
}
