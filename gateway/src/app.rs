//! The gateway's state and its handlers, one per route. Each request passes, in order:
//! drain check → ticket → operator pause → sold-out shedding (memory only) → limits →
//! admission → Redis (one Lua script) → Kafka hand-off.

use crate::breaker::Breaker;
use crate::config::Config;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};
use crate::limits::Limits;
use crate::metrics::{Limit, Metrics, Route};
use crate::order_sink::OrderSink;
use crate::redis_pipe::RedisPipe;
use crate::switches::{StatusReads, SwitchValues, Switches};
use seckill_common::order::{OrderEvent, OrderMessage};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stock::{SaleSpec, SaleState, Settlement, Stock, StockError};

pub struct App {
    pub cfg: Config,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub switches: Switches,
    pub pipe: RedisPipe,
    pub sink: OrderSink,
    breaker: Arc<Breaker>,
    /// Sales known sold out, until when (only sales Redis confirmed, so bounded by sales).
    sold_out: RwLock<HashMap<String, Instant>>,
    /// Short-lived sale snapshots for the public sale-state endpoint.
    sale_cache: Mutex<HashMap<String, (Instant, SaleState)>>,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    /// Set by the health loop: Redis answered a PING and a broker answered metadata.
    pub redis_ok: AtomicBool,
    pub kafka_ok: AtomicBool,
    audit: Mutex<Option<std::fs::File>>,
}

/// Counts a request as in flight while alive.
pub struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSale {
    sale: String,
    stock: i64,
    #[serde(default = "one")]
    per_user_limit: i64,
    start_ms: i64,
    end_ms: i64,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseSale {
    paused: bool,
}

impl App {
    pub fn new(
        cfg: Config,
        metrics: Arc<Metrics>,
        limits: Arc<Limits>,
        breaker: Arc<Breaker>,
        pipe: RedisPipe,
        sink: OrderSink,
    ) -> App {
        let audit = std::path::Path::new(&cfg.audit_log);
        if let Some(dir) = audit.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let audit = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(audit)
            .ok();
        App {
            cfg,
            metrics,
            limits,
            switches: Switches::default(),
            pipe,
            sink,
            breaker,
            sold_out: RwLock::new(HashMap::new()),
            sale_cache: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            redis_ok: AtomicBool::new(false),
            kafka_ok: AtomicBool::new(false),
            audit: Mutex::new(audit),
        }
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
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        match seg.as_slice() {
            ["v1", "sales", _, "tokens"] => Route::Token,
            ["v1", "sales", _, "orders"] => Route::Order,
            ["v1", "sales", _] => Route::Sale,
            ["v1", "orders", _] => Route::OrderStatus,
            ["v1", "orders", _, "pay"] => Route::Pay,
            ["admin", "sales"] | ["admin", "sales", _, "pause"] => Route::AdminSales,
            ["admin", "switches"] => Route::AdminSwitches,
            ["metrics"] => Route::Metrics,
            ["healthz"] => Route::Health,
            ["readyz"] => Route::Ready,
            _ => Route::Other,
        }
    }

    pub fn handle(&self, route: Route, req: &Incoming) -> Result<Reply, ApiError> {
        let seg: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        let want = |m: &str| {
            if req.method == m {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed)
            }
        };
        match route {
            Route::Token => want("POST").and_then(|_| self.token(seg[2], req)),
            Route::Order => want("POST").and_then(|_| self.order(seg[2], req)),
            Route::Sale => want("GET").and_then(|_| self.sale(seg[2])),
            Route::OrderStatus => want("GET").and_then(|_| self.order_status(seg[2], req)),
            Route::Pay => want("POST").and_then(|_| self.pay(seg[2], req)),
            Route::AdminSales => {
                want("POST")?;
                self.admin(req)?;
                match seg.as_slice() {
                    [_, _, sale, "pause"] => self.pause_sale(sale, req),
                    _ => self.create_sale(req),
                }
            }
            Route::AdminSwitches => {
                self.admin(req)?;
                match req.method {
                    "GET" => Ok(Reply::json(
                        200,
                        &json!(self.switches.read(&self.limits, &self.breaker)),
                    )),
                    "POST" => self.set_switches(req),
                    _ => Err(ApiError::MethodNotAllowed),
                }
            }
            Route::Metrics => want("GET").map(|_| self.render_metrics()),
            Route::Health => want("GET").map(|_| Reply::json(200, &json!({"status": "ok"}))),
            Route::Ready => want("GET").map(|_| self.ready()),
            Route::Other => Err(ApiError::NotFound),
        }
    }

    fn stock(&self) -> Stock<RedisPipe> {
        Stock::new(self.pipe.clone())
    }

    fn user(&self, req: &Incoming) -> Result<u64, ApiError> {
        let ticket = req
            .authorization
            .and_then(|a| a.strip_prefix("Ticket "))
            .ok_or(ApiError::NoTicket)?;
        seckill_common::ticket::verify(
            self.cfg.ticket_secret.as_bytes(),
            ticket.trim(),
            (now_ms() / 1000) as u64,
        )
        .map_err(ApiError::Ticket)
    }

    fn admin(&self, req: &Incoming) -> Result<(), ApiError> {
        let given = req
            .authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if constant_time_eq(given.trim().as_bytes(), self.cfg.admin_token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// The checks shared by the token and order endpoints, cheapest first.
    fn admit(&self, sale: &str, req: &Incoming) -> Result<u64, ApiError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(ApiError::Draining);
        }
        let user = self.user(req)?;
        if self.switches.paused_all() {
            return Err(ApiError::PausedAll);
        }
        if self.known_sold_out(sale) {
            self.metrics.sold_out_shed();
            return Err(ApiError::SoldOutShed);
        }
        if let Err(r) = self.limits.check(user, req.peer) {
            self.metrics.limited(r.limit);
            return Err(ApiError::Limited(
                r.limit,
                r.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            ));
        }
        Ok(user)
    }

    fn known_sold_out(&self, sale: &str) -> bool {
        let map = self.sold_out.read().unwrap_or_else(|p| p.into_inner());
        map.get(sale).is_some_and(|until| Instant::now() < *until)
    }

    fn mark_sold_out(&self, sale: &str) {
        let until =
            Instant::now() + Duration::from_millis(self.cfg.sold_out_recheck_ms.max(0) as u64);
        self.sold_out
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sale.to_string(), until);
    }

    fn note(&self, sale: &str, e: &StockError) {
        if matches!(e, StockError::SoldOut) {
            self.mark_sold_out(sale);
        }
    }

    fn token(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let user = self.admit(sale, req)?;
        if !self.switches.admit(rand::random_range(0..1_000_000)) {
            self.metrics.limited(Limit::Admission);
            return Err(ApiError::AdmissionShed);
        }
        let ttl = Duration::from_secs(self.cfg.token_ttl_secs.max(1) as u64);
        match self.stock().issue_token(sale, user, ttl) {
            Ok(t) => Ok(Reply::json(
                201,
                &json!({"token": t.token, "expires_ms": t.expires_ms}),
            )),
            Err(e) => {
                self.note(sale, &e);
                Err(e.into())
            }
        }
    }

    fn order(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let user = self.admit(sale, req)?;
        let body: OrderBody = req.json()?;
        let mut stock = self.stock();
        let p = match stock.purchase(sale, user, &body.token) {
            Ok(p) => p,
            Err(e) => {
                self.note(sale, &e);
                return Err(e.into());
            }
        };
        if p.remaining <= 0 {
            self.mark_sold_out(sale);
        }
        let msg = OrderMessage {
            event: OrderEvent::Reserved,
            order_id: p.order_id.clone(),
            sale: sale.to_string(),
            user,
            units: 1,
            per_user_limit: p.per_user_limit.clamp(1, u32::MAX as i64) as u32,
            at_ms: now_ms(),
        };
        if let Err(e) = self.sink.send(&msg) {
            // Not acknowledged: give the unit back so it can sell again.
            tracing::error!(order = %p.order_id, error = %e, "order not delivered to the broker; releasing its reservation");
            match stock.settle(&p.order_id, Settlement::Released) {
                Ok(_) => self.metrics.released_on_sink_failure(),
                Err(re) => {
                    tracing::error!(order = %p.order_id, error = %re, "release after broker failure failed; reconciliation must return this unit")
                }
            }
            return Err(ApiError::SinkUnavailable(e.to_string()));
        }
        self.metrics.order_accepted();
        Ok(Reply::json(
            202,
            &json!({"order_id": p.order_id, "status": "reserved", "remaining": p.remaining}),
        ))
    }

    fn sale(&self, sale: &str) -> Result<Reply, ApiError> {
        stock::keys::check_sale_id(sale).map_err(|_| ApiError::Stock(StockError::NoSale))?;
        let fresh = Duration::from_millis(self.cfg.sale_cache_ms.max(0) as u64);
        let cached = {
            let c = self.sale_cache.lock().unwrap_or_else(|p| p.into_inner());
            c.get(sale)
                .filter(|(at, _)| at.elapsed() < fresh)
                .map(|(_, s)| s.clone())
        };
        let st = match cached {
            Some(s) => s,
            None => {
                let s = self.stock().state(sale)?;
                self.sale_cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(sale.to_string(), (Instant::now(), s.clone()));
                s
            }
        };
        Ok(Reply::json(
            200,
            &json!({
                "sale": sale, "phase": st.phase().as_str(), "remaining": st.remaining, "initial": st.initial,
                "per_user_limit": st.per_user_limit, "start_ms": st.start_ms, "end_ms": st.end_ms,
            }),
        ))
    }

    /// The caller's own order and the caller; someone else's order is answered 404 like
    /// a missing one.
    fn owned_order(
        &self,
        order_id: &str,
        req: &Incoming,
    ) -> Result<(stock::OrderState, u64, Stock<RedisPipe>), ApiError> {
        let user = self.user(req)?;
        let mut stock = self.stock();
        let (state, buyer) = stock.order(order_id)?;
        if buyer != user {
            return Err(StockError::NoOrder.into());
        }
        Ok((state, user, stock))
    }

    fn order_status(&self, order_id: &str, req: &Incoming) -> Result<Reply, ApiError> {
        if self.switches.status_reads() == StatusReads::Off {
            return Err(ApiError::StatusReadsOff);
        }
        let (state, _, _) = self.owned_order(order_id, req)?;
        Ok(Reply::json(
            200,
            &json!({"order_id": order_id, "status": state.as_str()}),
        ))
    }

    fn pay(&self, order_id: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let (_, buyer, mut stock) = self.owned_order(order_id, req)?;
        match stock.settle(order_id, Settlement::Paid) {
            Ok(_) => {
                // Redis decided; the event brings PostgreSQL along. If it is lost, the
                // writer's payment-window scan finds the order paid in Redis instead.
                let sale = stock::keys::split_order_id(order_id)
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_default();
                let paid = OrderMessage {
                    event: OrderEvent::Paid,
                    order_id: order_id.to_string(),
                    sale,
                    user: buyer,
                    units: 1,
                    per_user_limit: 0,
                    at_ms: now_ms(),
                };
                if let Err(e) = self.sink.send(&paid) {
                    tracing::warn!(order = order_id, error = %e, "paid event not delivered; the payment-window scan will reconcile");
                }
                Ok(Reply::json(
                    200,
                    &json!({"order_id": order_id, "status": "paid"}),
                ))
            }
            Err(StockError::AlreadyPaid) => Ok(Reply::json(
                200,
                &json!({"order_id": order_id, "status": "paid"}),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn create_sale(&self, req: &Incoming) -> Result<Reply, ApiError> {
        let c: CreateSale = req.json()?;
        let spec = SaleSpec {
            stock: c.stock,
            per_user_limit: c.per_user_limit,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
        };
        self.stock().create_sale(&c.sale, &spec)?;
        self.audit(req, "create_sale", json!({"sale": c.sale, "stock": c.stock, "per_user_limit": c.per_user_limit, "start_ms": c.start_ms, "end_ms": c.end_ms}));
        Ok(Reply::json(201, &json!({"sale": c.sale, "created": true})))
    }

    fn pause_sale(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let p: PauseSale = req.json()?;
        self.stock().set_paused(sale, p.paused)?;
        self.sale_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sale);
        self.audit(req, "pause_sale", json!({"sale": sale, "paused": p.paused}));
        Ok(Reply::json(200, &json!({"sale": sale, "paused": p.paused})))
    }

    fn set_switches(&self, req: &Incoming) -> Result<Reply, ApiError> {
        let v: SwitchValues = req.json()?;
        self.switches
            .apply(&v, &self.limits, &self.breaker)
            .map_err(ApiError::BadRequest)?;
        self.audit(req, "set_switches", json!(v));
        Ok(Reply::json(
            200,
            &json!(self.switches.read(&self.limits, &self.breaker)),
        ))
    }

    fn audit(&self, req: &Incoming, action: &str, detail: serde_json::Value) {
        let line = json!({"ts_ms": now_ms(), "peer": req.peer.map(|p| p.to_string()), "action": action, "detail": detail});
        tracing::info!(target: "audit", %line);
        if let Some(f) = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                tracing::error!(error = %e, "audit log write failed");
            }
        }
    }

    fn ready(&self) -> Reply {
        let redis = self.redis_ok.load(Ordering::Acquire) && !self.breaker.is_open();
        let kafka = self.kafka_ok.load(Ordering::Acquire);
        let draining = self.draining.load(Ordering::Acquire);
        let ok = redis && kafka && !draining;
        let mut r = Reply::json(
            if ok { 200 } else { 503 },
            &json!({"ready": ok, "redis": redis, "kafka": kafka, "draining": draining}),
        );
        if !ok {
            r.retry_after = Some(1);
        }
        r
    }

    fn render_metrics(&self) -> Reply {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(16 * 1024);
        self.metrics.render(&mut out);
        self.switches.render(&mut out, &self.limits, &self.breaker);
        let now = Instant::now();
        let sold_out = self
            .sold_out
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|u| now < **u)
            .count();
        let (users, ips) = self.limits.tracked();
        let _ = writeln!(out, "# HELP seckill_sold_out_sales Sales currently answered sold-out from memory.\n# TYPE seckill_sold_out_sales gauge\nseckill_sold_out_sales {sold_out}");
        let _ = writeln!(out, "# HELP seckill_limiter_keys Keys held by the keyed rate limiters.\n# TYPE seckill_limiter_keys gauge\nseckill_limiter_keys{{limit=\"user\"}} {users}\nseckill_limiter_keys{{limit=\"ip\"}} {ips}");
        let _ = writeln!(out, "# HELP seckill_http_in_flight Requests being served.\n# TYPE seckill_http_in_flight gauge\nseckill_http_in_flight {}", self.in_flight());
        let _ = writeln!(out, "# HELP seckill_ready 1 when Redis and a broker answer and the gateway is not draining.\n# TYPE seckill_ready gauge\nseckill_ready {}", (self.ready().status == 200) as u8);
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
        assert_eq!(App::route_of("/admin/sales/s1/pause"), Route::AdminSales);
        assert_eq!(App::route_of("/v1/sales/s1/tokens/x"), Route::Other);
    }

    #[test]
    fn admin_token_compare_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
