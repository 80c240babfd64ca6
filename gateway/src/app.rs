//! The gateway's state and its request routing. A token request passes, in order: drain
//! check → sale id (unknown sales from memory) → a ticket present → operator pause →
//! store lost → sold-out or ended sales (memory only, before any crypto) → the ticket
//! verified → limits → admission → Redis (one Lua script). An order request: drain
//! check → sale id → the ticket verified → operator pause → store lost → limits → Redis
//! → order hand-off (no sold-out shortcut: it may be the buyer's own retry).
//!
//! The handlers live by concern: [`crate::buyer`] (token, order, sale state, order
//! status), [`crate::payments`] (a payment started by the buyer, paid by the provider's
//! signed callback), [`crate::admin`] (sales and switches), [`crate::audit`] (who changed
//! what); [`crate::caches`] holds what is remembered between requests.

use crate::breaker::Breaker;
use crate::caches::{Caches, Shed};
use crate::config::{BadConfig, Config};
use crate::error::{ApiError, ControlError};
use crate::limits::Limits;
use crate::metrics::{Metrics, Route};
use crate::order_sink::OrderSink;
use crate::redis_pipe::RedisPipe;
use crate::request::{Incoming, Reply};
use crate::switches::{SinkMode, StatusReads, SwitchValues, Switches};
use seckill_common::now_ms;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stock::{Stock, StockError};

pub struct App {
    pub cfg: Config,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub switches: Switches,
    pub pipe: RedisPipe,
    pub sink: OrderSink,
    pub breaker: Arc<Breaker>,
    /// Sold-out flags, unknown sale ids, sale snapshots, order statuses (each bounded).
    pub(crate) caches: Caches,
    in_flight: AtomicUsize,
    pub(crate) draining: AtomicBool,
    /// Set by the health loop: Redis answered a PING (the broker's health is the sink's).
    pub redis_ok: AtomicBool,
    /// The local audit log (JSON lines); the central stream is Redis's.
    pub(crate) audit_log: Mutex<Option<std::fs::File>>,
    /// Releases of unacknowledged orders that failed, retried in the background.
    pub releases: Arc<crate::releases::PendingReleases>,
    /// Who may use `/admin/*`, each with a token (`Config::operators`).
    operators: Vec<crate::config::Operator>,
    /// The ticket keys (the signing one and those still accepted).
    tickets: seckill_common::ticket::Keyring,
    /// Spans of sampled (and failed) buyer requests, to the trace collector.
    pub tracer: seckill_common::telemetry::Tracer,
}

/// Counts a request as in flight while alive.
pub struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl App {
    pub fn new(
        cfg: Config,
        metrics: Arc<Metrics>,
        limits: Arc<Limits>,
        breaker: Arc<Breaker>,
        pipe: RedisPipe,
        sink: OrderSink,
    ) -> Result<App, BadConfig> {
        let order_sink: SinkMode = serde_json::from_value(json!(cfg.order_sink))
            .map_err(|_| BadConfig::OrderSink(cfg.order_sink.clone()))?;
        let base = SwitchValues {
            pause_all: Some(false),
            admission_ratio: Some(1.0),
            rates: Some(limits.rates()),
            order_sink: Some(order_sink),
            redis_breaker: Some("auto".into()),
            status_reads: Some(StatusReads::Normal),
        };
        let switches = Switches::new(base, &limits, &breaker);
        let audit = std::path::Path::new(&cfg.audit_log);
        if let Some(dir) = audit.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let audit = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(audit)
            .ok();
        let caches = Caches::new(&cfg);
        let operators = cfg.operators()?;
        let tickets = cfg.ticket_keys()?;
        let tracer =
            seckill_common::telemetry::Tracer::start("seckill-gateway", &cfg.trace_settings())
                .map_err(BadConfig::Tracing)?;
        Ok(App {
            tracer,
            operators,
            tickets,
            caches,
            cfg,
            metrics,
            limits,
            switches,
            pipe,
            sink,
            breaker,
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            redis_ok: AtomicBool::new(false),
            audit_log: Mutex::new(audit),
            releases: Arc::default(),
        })
    }

    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(&self.in_flight)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The route a path has the shape of (methods are checked by the handler: 405).
    pub fn route_of(path: &str) -> Route {
        let seg = Segments::of(path);
        match seg.as_slice() {
            ["v1", "sales", _, "tokens"] => Route::Token,
            ["v1", "sales", _, "orders"] => Route::Order,
            ["v1", "sales", _] => Route::Sale,
            ["v1", "orders", _] => Route::OrderStatus,
            ["v1", "orders", _, "pay"] => Route::Pay,
            ["payments", "webhook"] => Route::PaymentCallback,
            ["admin", "sales"] | ["admin", "sales", _, "pause"] => Route::AdminSales,
            ["admin", "switches"] | ["admin", "switches", "local"] | ["admin", "audit"] => {
                Route::AdminSwitches
            }
            ["metrics"] => Route::Metrics,
            ["healthz"] => Route::Health,
            ["readyz"] => Route::Ready,
            _ => Route::Other,
        }
    }

    pub fn handle(&self, route: Route, req: &Incoming) -> Result<Reply, ApiError> {
        let seg = Segments::of(req.path);
        let seg = seg.as_slice();
        // The id in /v1/sales/{id}/… and /v1/orders/{id}… (the route has it).
        let id = seg.get(2).copied().unwrap_or_default();
        let want = |m: &str| {
            if req.method == m {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed)
            }
        };
        match route {
            Route::Token => want("POST").and_then(|_| self.token(id, req)),
            Route::Order => want("POST").and_then(|_| self.order(id, req)),
            Route::Sale => want("GET").and_then(|_| self.sale(id, req)),
            Route::OrderStatus => want("GET").and_then(|_| self.order_status(id, req)),
            Route::Pay => want("POST").and_then(|_| self.start_payment(id, req)),
            Route::PaymentCallback => want("POST").and_then(|_| self.payment_callback(req)),
            Route::AdminSales => {
                want("POST")?;
                self.admin(req)?;
                match seg {
                    [_, _, sale, "pause"] => self.pause_sale(sale, req),
                    _ => self.create_sale(req),
                }
            }
            Route::AdminSwitches => {
                self.admin(req)?;
                match (seg, req.method) {
                    ([_, "audit"], "GET") => self.read_audit(req),
                    ([_, "switches"], "GET") | ([_, "switches", "local"], "GET") => {
                        Ok(Reply::json(200, &self.switches.view()))
                    }
                    ([_, "switches"], "POST") => self.set_switches(req),
                    ([_, "switches", "local"], "POST") => self.set_local(req, true),
                    ([_, "switches", "local"], "DELETE") => self.set_local(req, false),
                    _ => Err(ApiError::MethodNotAllowed),
                }
            }
            Route::Metrics => want("GET")
                .and_then(|_| self.limited(self.limits.check_scrape(req.peer)))
                .map(|_| self.render_metrics()),
            Route::Health => want("GET").map(|_| Reply::json(200, &json!({"status": "ok"}))),
            Route::Ready => want("GET").and_then(|_| self.ready()),
            Route::Other => Err(ApiError::NotFound),
        }
    }

    pub(crate) fn stock(&self) -> Stock<RedisPipe> {
        Stock::new(self.pipe.clone())
    }

    pub(crate) fn user(&self, req: &Incoming) -> Result<u64, ApiError> {
        let ticket = req
            .authorization
            .and_then(|a| a.strip_prefix("Ticket "))
            .ok_or(ApiError::NoTicket)?;
        self.tickets
            .verify(ticket.trim(), (now_ms() / 1000) as u64)
            .map_err(ApiError::Ticket)
    }

    pub(crate) fn admin(&self, req: &Incoming) -> Result<(), ApiError> {
        self.operator(req).map(|_| ()).ok_or(ApiError::Unauthorized)
    }

    /// The operator whose bearer token `req` carries (every token compared, each in
    /// constant time): who an admin change is by, from the credential alone.
    pub(crate) fn operator(&self, req: &Incoming) -> Option<&str> {
        let given = req
            .authorization?
            .strip_prefix("Bearer ")?
            .trim()
            .as_bytes();
        let mut found = None;
        for o in &self.operators {
            if constant_time_eq(given, &o.token) {
                found = Some(o.name.as_str());
            }
        }
        found
    }

    /// The token endpoint's checks, cheapest first: the request's shape, the switches,
    /// a sale known sold out (its state is public: answered from memory before any
    /// ticket crypto or limit), then the ticket and the limits.
    pub(crate) fn admit(&self, sale: &str, req: &Incoming) -> Result<u64, ApiError> {
        self.shape(sale, req)?;
        self.gates(sale, true)?;
        let user = self.user(req)?;
        self.limited(self.limits.check(user, req.peer))?;
        Ok(user)
    }

    /// The request's shape and who sends it: not draining, a well-formed sale id, a
    /// valid ticket.
    pub(crate) fn identify(&self, sale: &str, req: &Incoming) -> Result<u64, ApiError> {
        self.shape(sale, req)?;
        self.user(req)
    }

    /// What is checked without any crypto or shared state: not draining, a well-formed
    /// sale id, a ticket present (401 before anything else answers).
    fn shape(&self, sale: &str, req: &Incoming) -> Result<(), ApiError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(ApiError::Draining);
        }
        self.known_sale_id(sale)?;
        req.authorization
            .and_then(|a| a.strip_prefix("Ticket "))
            .map(|_| ())
            .ok_or(ApiError::NoTicket)
    }

    /// Whether `user` may go on now: switches, the sold-out shortcut (`shed_sold_out`),
    /// rate limits.
    pub(crate) fn admit_user(
        &self,
        sale: &str,
        user: u64,
        req: &Incoming,
        shed_sold_out: bool,
    ) -> Result<(), ApiError> {
        self.gates(sale, shed_sold_out)?;
        self.limited(self.limits.check(user, req.peer))
    }

    /// The switches that stop every buyer, and a sale known sold out or ended
    /// (`shed_sold_out`).
    fn gates(&self, sale: &str, shed_sold_out: bool) -> Result<(), ApiError> {
        if self.switches.paused_all() {
            return Err(ApiError::PausedAll);
        }
        if self.switches.store_lost() {
            return Err(ApiError::StoreLost);
        }
        if !shed_sold_out {
            return Ok(());
        }
        match self.caches.shed(sale) {
            None => Ok(()),
            Some(why) => {
                self.metrics.sold_out_shed();
                Err(match why {
                    Shed::SoldOut => ApiError::SoldOutShed,
                    Shed::Ended => ApiError::Stock(StockError::Ended),
                })
            }
        }
    }

    pub(crate) fn limited(
        &self,
        check: Result<(), crate::limits::Refused>,
    ) -> Result<(), ApiError> {
        check.map_err(|r| {
            self.metrics.limited(r.limit);
            ApiError::Limited(r.limit, r.retry_after.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    /// A well-formed id Redis has not said (lately) does not exist; else 404 from memory.
    pub(crate) fn known_sale_id(&self, sale: &str) -> Result<(), ApiError> {
        if stock::keys::check_sale_id(sale).is_err() || self.caches.missing(sale) {
            Err(ApiError::Stock(StockError::NoSale))
        } else {
            Ok(())
        }
    }

    /// Learn from Redis's answer about `sale`: sold out, missing, or there (only a sale
    /// Redis knows gets a per-sale metric series).
    pub(crate) fn note(&self, sale: &str, r: Result<(), &StockError>) {
        match r {
            Err(StockError::SoldOut) => {
                self.caches.mark_sold_out(sale);
                self.metrics.sale_request(sale);
            }
            Err(StockError::Ended) => {
                self.caches.mark_ended(sale);
                self.metrics.sale_request(sale);
            }
            Err(StockError::NoSale) => self.caches.mark_missing(sale),
            Err(e) if e.is_fault() => {}
            _ => self.metrics.sale_request(sale),
        }
    }

    /// Run `run` (calls of `stock::control`) on a plain connection to the control store:
    /// outside the breaker (so a forced-open breaker can be closed again), with short
    /// timeouts, and on a thread of its own so that a sick Redis never blocks a may worker.
    pub(crate) fn control<T: Send + 'static>(
        &self,
        run: impl FnOnce(&mut stock::Conn) -> Result<T, StockError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let url = self.cfg.redis_url.clone();
        let (tx, rx) = may::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let r =
                    stock::connect(&url, Duration::from_millis(500)).and_then(|mut c| run(&mut c));
                let _ = tx.send(r);
            })
            .map_err(|e| ApiError::SwitchStore(ControlError::Thread(e)))?;
        match rx.recv_timeout(Duration::from_secs(3)) {
            Ok(r) => r.map_err(|e| ApiError::SwitchStore(ControlError::Store(e))),
            Err(_) => Err(ApiError::SwitchStore(ControlError::NoAnswer)),
        }
    }

    /// Ready: Redis answers with its data, orders can be handed over (a broker, or the
    /// spool unless the sink is Kafka-only), not draining. The readiness object either
    /// way; `error.rs` says what "not ready" answers.
    fn ready(&self) -> Result<Reply, ApiError> {
        let redis = self.redis_ok.load(Ordering::Acquire) && !self.breaker.is_open();
        let kafka = self.sink.kafka_up();
        let draining = self.draining.load(Ordering::Acquire);
        let lost = self.switches.store_lost();
        // With the spool, orders are taken while the broker is away.
        let sink = kafka || self.switches.order_sink() != SinkMode::Kafka;
        // Ready once the store's processes were confirmed (`store_confirmed`); a later
        // recovery keeps the instance in rotation, answering 503 store_recovering.
        let confirmed = self.switches.confirmed_once();
        let ok = redis && sink && !draining && !lost && confirmed;
        let view = json!({"ready": ok, "redis": redis, "kafka": kafka, "spool_pending": self.sink.spool_pending(), "redis_data_lost": lost, "store_confirmed": confirmed, "draining": draining});
        if ok {
            Ok(Reply::json(200, &view))
        } else {
            Err(ApiError::NotReady(view))
        }
    }

    fn render_metrics(&self) -> Reply {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(16 * 1024);
        self.metrics.render(&mut out);
        self.switches.render(&mut out, &self.limits, &self.breaker);
        let sold_out = self.caches.sold_out_count();
        let (users, ips) = self.limits.tracked();
        let _ = writeln!(out, "# HELP seckill_sold_out_sales Sales currently answered sold-out from memory.\n# TYPE seckill_sold_out_sales gauge\nseckill_sold_out_sales {sold_out}");
        let _ = writeln!(out, "# HELP seckill_limiter_keys Keys held by the keyed rate limiters.\n# TYPE seckill_limiter_keys gauge\nseckill_limiter_keys{{limit=\"user\"}} {users}\nseckill_limiter_keys{{limit=\"ip\"}} {ips}");
        let _ = writeln!(out, "# HELP seckill_http_in_flight Requests being served.\n# TYPE seckill_http_in_flight gauge\nseckill_http_in_flight {}", self.in_flight());
        let _ = writeln!(out, "# HELP seckill_releases_pending Releases of unacknowledged orders that failed, retried every second.\n# TYPE seckill_releases_pending gauge\nseckill_releases_pending {}", self.releases.len());
        let _ = writeln!(out, "# HELP seckill_releases_left_to_sweep_total Failed releases not retried (queue full, or failing for 10 minutes): the writer's reservation sweep returns their units.\n# TYPE seckill_releases_left_to_sweep_total counter\nseckill_releases_left_to_sweep_total {}", self.releases.left_to_sweep.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP seckill_spool_pending Spooled orders not yet replayed into Kafka.\n# TYPE seckill_spool_pending gauge\nseckill_spool_pending {}", self.sink.spool_pending());
        let _ = writeln!(out, "# HELP seckill_kafka_up 1 while a broker answers metadata.\n# TYPE seckill_kafka_up gauge\nseckill_kafka_up {}", self.sink.kafka_up() as u8);
        self.tracer.write_metrics(&mut out);
        seckill_common::observability::write_build_info(&mut out, "gateway");
        seckill_common::observability::write_process_metrics(&mut out);
        let _ = writeln!(out, "# HELP seckill_ready 1 when Redis and a broker answer and the gateway is not draining.\n# TYPE seckill_ready gauge\nseckill_ready {}", self.ready().is_ok() as u8);
        Reply::text(200, out)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// A path's segments between slashes (leading and trailing ones trimmed), without an
/// allocation: no route has more than [`Segments::MAX`]; a longer path matches none.
struct Segments<'a> {
    seg: [&'a str; Segments::MAX],
    len: usize,
}

impl<'a> Segments<'a> {
    const MAX: usize = 4;

    fn of(path: &'a str) -> Segments<'a> {
        let mut s = Segments {
            seg: [""; Segments::MAX],
            len: 0,
        };
        for part in path.trim_matches('/').split('/') {
            if s.len == Segments::MAX {
                s.len = usize::MAX;
                break;
            }
            s.seg[s.len] = part;
            s.len += 1;
        }
        s
    }

    /// The segments; none for a path with too many to be a route.
    fn as_slice(&self) -> &[&'a str] {
        self.seg.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_by_shape() {
        assert_eq!(App::route_of("/v1/sales/s1/tokens"), Route::Token);
        assert_eq!(App::route_of("/v1/sales/s1/orders"), Route::Order);
        assert_eq!(App::route_of("/v1/sales/s1"), Route::Sale);
        assert_eq!(App::route_of("/v1/orders/s1-3"), Route::OrderStatus);
        assert_eq!(App::route_of("/v1/orders/s1-3/pay"), Route::Pay);
        assert_eq!(App::route_of("/payments/webhook"), Route::PaymentCallback);
        assert_eq!(App::route_of("/admin/sales/s1/pause"), Route::AdminSales);
        assert_eq!(App::route_of("/v1/sales/s1/tokens/x"), Route::Other);
        assert_eq!(App::route_of("/v1/sales/s1/tokens/x/y"), Route::Other);
        assert_eq!(App::route_of("//v1/sales/s1/tokens//"), Route::Token);
        assert_eq!(App::route_of("/"), Route::Other);
        assert_eq!(App::route_of(""), Route::Other);
    }

    #[test]
    fn admin_token_compare_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
