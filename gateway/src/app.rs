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
use crate::order_sink::Via;
use crate::redis_pipe::RedisPipe;
use crate::switches::{SinkMode, StatusReads, SwitchValues, Switches};
use seckill_common::now_ms;
use seckill_common::order::{OrderEvent, OrderMessage, SaleDefinition};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use stock::{SaleSpec, SaleState, Settlement, Stock, StockError};

pub struct App {
    pub cfg: Config,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub switches: Switches,
    pub pipe: RedisPipe,
    pub sink: OrderSink,
    pub breaker: Arc<Breaker>,
    /// Sales known sold out, until when (only sales Redis confirmed, so bounded by sales).
    sold_out: RwLock<HashMap<String, Instant>>,
    /// Sale ids Redis said do not exist, until when: a flood of made-up ids costs one
    /// Redis call per id per `MISSING_FOR` (at most `MISSING_MAX` remembered).
    missing: Mutex<HashMap<String, Instant>>,
    /// Short-lived sale snapshots for the public sale-state endpoint.
    sale_cache: Mutex<HashMap<String, (Instant, SaleState)>>,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    /// Set by the health loop: Redis answered a PING (the broker's health is the sink's).
    pub redis_ok: AtomicBool,
    audit: Mutex<Option<std::fs::File>>,
    /// Recent order statuses (owner, state), served when status reads are `cache`.
    status_cache: Mutex<HashMap<String, (u64, stock::OrderState)>>,
}

/// Counts a request as in flight while alive.
pub struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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

/// A switches body as `openapi.json` declares it: known switches only, none null (leave
/// a switch out to keep it), `rates` with exactly its six fields, values in range.
fn switch_body(req: &Incoming) -> Result<SwitchValues, ApiError> {
    let raw: serde_json::Value = req.json()?;
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if let Some((k, _)) = raw.as_object().into_iter().flatten().find(|(_, v)| v.is_null()) {
        return bad(format!("switch {k:?} is null: leave it out to keep its value"));
    }
    const RATES: [&str; 6] = [
        "global_rps",
        "global_burst",
        "user_rps",
        "user_burst",
        "ip_rps",
        "ip_burst",
    ];
    if let Some(r) = raw.get("rates").and_then(|r| r.as_object()) {
        if let Some(k) = r.keys().find(|k| !RATES.contains(&k.as_str())) {
            return bad(format!("rates has no field {k:?}: expected {RATES:?}"));
        }
    }
    let v: SwitchValues = serde_json::from_value(raw)
        .map_err(|e| ApiError::BadRequest(format!("body is not the expected JSON: {e}")))?;
    v.validate().map_err(ApiError::BadRequest)?;
    Ok(v)
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
    ) -> Result<App, String> {
        let order_sink: SinkMode = serde_json::from_value(json!(cfg.order_sink)).map_err(|_| {
            format!(
                "order_sink {:?}: expected auto, kafka or spool",
                cfg.order_sink
            )
        })?;
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
        Ok(App {
            cfg,
            metrics,
            limits,
            switches,
            pipe,
            sink,
            breaker,
            sold_out: RwLock::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            sale_cache: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            redis_ok: AtomicBool::new(false),
            audit: Mutex::new(audit),
            status_cache: Mutex::new(HashMap::new()),
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
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        match seg.as_slice() {
            ["v1", "sales", _, "tokens"] => Route::Token,
            ["v1", "sales", _, "orders"] => Route::Order,
            ["v1", "sales", _] => Route::Sale,
            ["v1", "orders", _] => Route::OrderStatus,
            ["v1", "orders", _, "pay"] => Route::Pay,
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
            Route::Sale => want("GET").and_then(|_| self.sale(seg[2], req)),
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
                match (seg.as_slice(), req.method) {
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
        self.known_sale_id(sale)?;
        let user = self.user(req)?;
        if self.switches.paused_all() {
            return Err(ApiError::PausedAll);
        }
        if self.switches.store_lost() {
            return Err(ApiError::StoreLost);
        }
        if self.known_sold_out(sale) {
            self.metrics.sold_out_shed();
            return Err(ApiError::SoldOutShed);
        }
        self.limited(self.limits.check(user, req.peer))?;
        Ok(user)
    }

    fn limited(&self, check: Result<(), crate::limits::Refused>) -> Result<(), ApiError> {
        check.map_err(|r| {
            self.metrics.limited(r.limit);
            ApiError::Limited(r.limit, r.retry_after.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    /// A well-formed id Redis has not said (lately) does not exist; else 404 from memory.
    fn known_sale_id(&self, sale: &str) -> Result<(), ApiError> {
        let missing = stock::keys::check_sale_id(sale).is_err() || {
            let m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            m.get(sale).is_some_and(|until| Instant::now() < *until)
        };
        if missing {
            Err(ApiError::Stock(StockError::NoSale))
        } else {
            Ok(())
        }
    }

    fn mark_missing(&self, sale: &str) {
        let mut m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MISSING_MAX {
            m.clear();
        }
        m.insert(sale.to_string(), Instant::now() + MISSING_FOR);
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

    /// Learn from Redis's answer about `sale`: sold out, missing, or there (only a sale
    /// Redis knows gets a per-sale metric series).
    fn note(&self, sale: &str, r: Result<(), &StockError>) {
        match r {
            Err(StockError::SoldOut) => {
                self.mark_sold_out(sale);
                self.metrics.sale_request(sale);
            }
            Err(StockError::NoSale) => self.mark_missing(sale),
            Err(e) if e.is_fault() => {}
            _ => self.metrics.sale_request(sale),
        }
    }

    fn token(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let user = self.admit(sale, req)?;
        if !self.switches.admit(rand::random_range(0..1_000_000)) {
            self.metrics.limited(Limit::Admission);
            return Err(ApiError::AdmissionShed);
        }
        let ttl = Duration::from_secs(self.cfg.token_ttl_secs.max(1) as u64);
        let cap = self.cfg.max_live_tokens.clamp(0, u32::MAX as i64) as u32;
        let issued = self.stock().issue_token_capped(sale, user, ttl, cap);
        self.note(sale, issued.as_ref().map(|_| ()));
        let t = issued?;
        Ok(Reply::json(
            201,
            &json!({"token": t.token, "expires_ms": t.expires_ms}),
        ))
    }

    fn order(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let user = self.admit(sale, req)?;
        let body: OrderBody = req.json()?;
        let mode = self.switches.order_sink();
        // Sink `kafka` with no broker: refuse before reserving anything.
        self.sink
            .accepting(mode)
            .map_err(|e| ApiError::SinkUnavailable(e.to_string()))?;
        let mut stock = self.stock();
        let bought = stock.purchase(sale, user, &body.token);
        self.note(sale, bought.as_ref().map(|_| ()));
        let p = bought?;
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
            definition: None,
        };
        // A retry (`replayed`) sends its order again: the first attempt's message may
        // never have left (its Redis reply was lost); the writer keeps one row per id.
        let via = match self.sink.send(&msg, mode) {
            Ok(via) => via,
            Err(e @ crate::order_sink::SinkError::Timeout) => {
                // Outcome unknown (the spool's disk hung): keep the reservation, whose
                // order may yet land; the writer's sweep returns the unit if it does not.
                tracing::error!(order = %p.order_id, error = %e, "order hand-off outcome unknown; reservation kept");
                return Err(ApiError::SinkUnavailable(e.to_string()));
            }
            Err(e) if p.replayed => {
                // The order stands from an earlier attempt; only this resend failed.
                return Err(ApiError::SinkUnavailable(e.to_string()));
            }
            Err(e) => {
                // Certainly not stored anywhere: give the unit back so it can sell again.
                tracing::error!(order = %p.order_id, error = %e, "order not stored; releasing its reservation");
                match stock.settle(&p.order_id, Settlement::Released) {
                    Ok(_) => self.metrics.released_on_sink_failure(),
                    Err(re) => {
                        tracing::error!(order = %p.order_id, error = %re, "release after broker failure failed; the reservation sweep returns this unit")
                    }
                }
                return Err(ApiError::SinkUnavailable(e.to_string()));
            }
        };
        if p.replayed {
            self.metrics.order_replayed();
        } else {
            self.metrics.order_accepted();
            self.cache_status(&p.order_id, user, stock::OrderState::Reserved);
        }
        let spooled = via == Via::Spool;
        Ok(Reply::json(
            202,
            &json!({"order_id": p.order_id, "status": "reserved", "remaining": p.remaining, "spooled": spooled, "replayed": p.replayed}),
        ))
    }

    fn sale(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        self.known_sale_id(sale)?;
        self.limited(self.limits.check_reader(None, req.peer))?;
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
                let read = self.stock().state(sale);
                if let Err(StockError::NoSale) = read {
                    self.mark_missing(sale);
                }
                let s = read?;
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
        self.limited(self.limits.check_reader(Some(user), req.peer))?;
        let mut stock = self.stock();
        let (state, buyer) = stock.order(order_id)?;
        if buyer != user {
            return Err(StockError::NoOrder.into());
        }
        Ok((state, user, stock))
    }

    fn order_status(&self, order_id: &str, req: &Incoming) -> Result<Reply, ApiError> {
        // The ticket first: without one the answer is 401 whatever the switch says.
        let user = self.user(req)?;
        match self.switches.status_reads() {
            StatusReads::Off => Err(ApiError::StatusReadsOff),
            StatusReads::Cache => {
                self.limited(self.limits.check_reader(Some(user), req.peer))?;
                let hit = self
                    .status_cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(order_id)
                    .copied();
                match hit {
                    Some((owner, state)) if owner == user => Ok(Reply::json(
                        200,
                        &json!({"order_id": order_id, "status": state.as_str(), "cached": true}),
                    )),
                    _ => Err(ApiError::StatusCacheMiss),
                }
            }
            StatusReads::Normal => {
                let (state, user, _) = self.owned_order(order_id, req)?;
                self.cache_status(order_id, user, state);
                Ok(Reply::json(
                    200,
                    &json!({"order_id": order_id, "status": state.as_str()}),
                ))
            }
        }
    }

    /// Remember an order's last known status for the `cache` mode (bounded: when full,
    /// the cache starts over).
    fn cache_status(&self, order_id: &str, user: u64, state: stock::OrderState) {
        let mut c = self.status_cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= self.cfg.status_cache_max.max(1) as usize && !c.contains_key(order_id) {
            c.clear();
        }
        c.insert(order_id.to_string(), (user, state));
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
                self.cache_status(order_id, buyer, stock::OrderState::Paid);
                let paid = OrderMessage {
                    event: OrderEvent::Paid,
                    order_id: order_id.to_string(),
                    sale,
                    user: buyer,
                    units: 1,
                    per_user_limit: 0,
                    at_ms: now_ms(),
                    definition: None,
                };
                if let Err(e) = self.sink.send(&paid, self.switches.order_sink()) {
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
        // Creating a sale on a store that lost its data would set a new epoch, and every
        // gateway would resume selling before `rebuild-stock`: refuse, also when the loss
        // happened since the last poll (the epoch read now is not the one seen).
        let mut stock = self.stock();
        if self.switches.store_lost() {
            return Err(ApiError::StoreLost);
        }
        if let Some(seen) = self.switches.seen_epoch() {
            if stock.store_epoch()?.as_deref() != Some(seen.as_str()) {
                return Err(ApiError::StoreLost);
            }
        }
        stock.create_sale(&c.sale, &spec)?;
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.sale);
        self.audit(req, "create_sale", json!({"sale": c.sale, "stock": c.stock, "per_user_limit": c.per_user_limit, "start_ms": c.start_ms, "end_ms": c.end_ms}));
        // The definition goes to PostgreSQL through the order topic: what rebuilding the
        // sale needs if Redis ever loses it.
        let def = SaleDefinition {
            stock: c.stock,
            per_user_limit: c.per_user_limit,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
        };
        let recorded = match self.sink.send(
            &OrderMessage::opened(&c.sale, def, now_ms()),
            self.switches.order_sink(),
        ) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(sale = %c.sale, error = %e, "sale definition not recorded; a Redis rebuild could not restore this sale");
                false
            }
        };
        Ok(Reply::json(
            201,
            &json!({"sale": c.sale, "created": true, "definition_recorded": recorded}),
        ))
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

    /// Run `run` (calls of `stock::control`) on a plain connection to the control store:
    /// outside the breaker (so a forced-open breaker can be closed again), with short
    /// timeouts, and on a thread of its own so that a sick Redis never blocks a may worker.
    fn control<T: Send + 'static>(
        &self,
        run: impl FnOnce(&mut stock::Conn) -> Result<T, StockError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let url = self.cfg.redis_url.clone();
        let (tx, rx) = may::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let r = stock::connect(&url, Duration::from_millis(500))
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| run(&mut c).map_err(|e| e.to_string()));
                let _ = tx.send(r);
            })
            .map_err(|e| ApiError::SwitchStore(e.to_string()))?;
        match rx.recv_timeout(Duration::from_secs(3)) {
            Ok(r) => r.map_err(ApiError::SwitchStore),
            Err(_) => Err(ApiError::SwitchStore("no answer within 3 s".into())),
        }
    }

    /// Write switches centrally, with their audit entry, in one transaction; this
    /// instance takes them at once, the others on their next poll.
    fn set_switches(&self, req: &Incoming) -> Result<Reply, ApiError> {
        let v = switch_body(req)?;
        let fields = v.fields();
        if fields.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "name at least one switch: {:?}",
                crate::switches::NAMES
            )));
        }
        let (cluster, entry) = self.audit_entry(req, "set_switches", &json!(v));
        let fields: Vec<(&'static str, String)> = fields.into_iter().collect();
        self.control(move |c| {
            stock::control::write_switches(c, &cluster, &fields, &entry.as_entry())
        })?;
        self.audit_file(req, "set_switches", json!(v));
        self.switches.set_central(&v, &self.limits, &self.breaker);
        Ok(Reply::json(200, &self.switches.view()))
    }

    /// This instance only, whatever the store says (and while it is unreachable).
    fn set_local(&self, req: &Incoming, set: bool) -> Result<Reply, ApiError> {
        if set {
            let v = switch_body(req)?;
            self.switches
                .set_local(Some(&v), &self.limits, &self.breaker);
            self.audit(req, "set_local_override", json!(v));
        } else {
            self.switches.set_local(None, &self.limits, &self.breaker);
            self.audit(req, "clear_local_override", json!({}));
        }
        Ok(Reply::json(200, &self.switches.view()))
    }

    /// The latest audit entries from the central stream, newest first (`?n=` is not
    /// parsed by may_minihttp's path; 50 entries).
    fn read_audit(&self, _req: &Incoming) -> Result<Reply, ApiError> {
        let cluster = self.cfg.cluster.clone();
        let entries = self.control(move |c| stock::control::recent_audit(c, &cluster, 50))?;
        let out: Vec<serde_json::Value> = entries
            .into_iter()
            .map(|(id, fields)| {
                let mut obj = serde_json::Map::new();
                obj.insert("id".into(), json!(id));
                for (k, v) in fields {
                    obj.insert(k, json!(v));
                }
                serde_json::Value::Object(obj)
            })
            .collect();
        Ok(Reply::json(200, &json!({"entries": out})))
    }

    /// This cluster's name and the audit entry of `action` by the caller of `req`.
    fn audit_entry(
        &self,
        req: &Incoming,
        action: &str,
        detail: &serde_json::Value,
    ) -> (String, OwnedAudit) {
        (
            self.cfg.cluster.clone(),
            OwnedAudit {
                ts_ms: now_ms(),
                actor: req.actor.unwrap_or("unknown").to_string(),
                peer: req.peer.map(|p| p.to_string()).unwrap_or_default(),
                instance: self.cfg.listen.clone(),
                action: action.to_string(),
                detail: detail.to_string(),
            },
        )
    }

    /// Audit an admin action: the local file always, the central stream when reachable.
    fn audit(&self, req: &Incoming, action: &str, detail: serde_json::Value) {
        let (cluster, entry) = self.audit_entry(req, action, &detail);
        if let Err(e) = self.control(move |c| stock::control::audit(c, &cluster, &entry.as_entry())) {
            tracing::warn!(error = %e, action, "audit entry not written to the central stream (kept in the local audit log)");
        }
        self.audit_file(req, action, detail);
    }

    fn audit_file(&self, req: &Incoming, action: &str, detail: serde_json::Value) {
        let line = json!({"ts_ms": now_ms(), "actor": req.actor, "peer": req.peer.map(|p| p.to_string()), "action": action, "detail": detail});
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
        let kafka = self.sink.kafka_up();
        let draining = self.draining.load(Ordering::Acquire);
        let lost = self.switches.store_lost();
        // With the spool, orders are taken while the broker is away.
        let sink = kafka || self.switches.order_sink() != SinkMode::Kafka;
        let ok = redis && sink && !draining && !lost;
        let mut r = Reply::json(
            if ok { 200 } else { 503 },
            &json!({"ready": ok, "redis": redis, "kafka": kafka, "spool_pending": self.sink.spool_pending(), "redis_data_lost": lost, "draining": draining}),
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
        let _ = writeln!(out, "# HELP seckill_spool_pending Spooled orders not yet replayed into Kafka.\n# TYPE seckill_spool_pending gauge\nseckill_spool_pending {}", self.sink.spool_pending());
        let _ = writeln!(out, "# HELP seckill_kafka_up 1 while a broker answers metadata.\n# TYPE seckill_kafka_up gauge\nseckill_kafka_up {}", self.sink.kafka_up() as u8);
        let _ = writeln!(out, "# HELP seckill_ready 1 when Redis and a broker answer and the gateway is not draining.\n# TYPE seckill_ready gauge\nseckill_ready {}", (self.ready().status == 200) as u8);
        Reply::text(200, out)
    }
}

/// An audit entry that can move to the control thread.
struct OwnedAudit {
    ts_ms: i64,
    actor: String,
    peer: String,
    instance: String,
    action: String,
    detail: String,
}

impl OwnedAudit {
    fn as_entry(&self) -> stock::control::AuditEntry<'_> {
        stock::control::AuditEntry {
            ts_ms: self.ts_ms,
            actor: &self.actor,
            peer: &self.peer,
            instance: &self.instance,
            action: &self.action,
            detail: &self.detail,
        }
    }
}

/// How long "no such sale" is answered from memory, and for how many ids at most.
const MISSING_FOR: Duration = Duration::from_secs(1);
const MISSING_MAX: usize = 10_000;

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
