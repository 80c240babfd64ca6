//! The buyer's routes: a purchase token, the order, the sale's public state, an
//! order's status, and paying for it.

use crate::app::App;
use crate::error::{ApiError, Unknown};
use crate::metrics::Limit;
use crate::order_sink::{SinkError, Via};
use crate::redis_pipe::RedisPipe;
use crate::request::{Incoming, Reply};
use crate::switches::StatusReads;
use crate::trace::RequestTrace;
use seckill_common::now_ms;
use seckill_common::order::{OrderEvent, OrderMessage};
use seckill_common::telemetry::SpanKind;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};
use stock::{Stock, StockError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    token: String,
}

impl App {
    pub(crate) fn token(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        self.traced("POST /v1/sales/{sale}/tokens", sale, req, App::traced_token)
    }

    /// Run a buyer route's `handler` with its trace, and end the trace with its outcome.
    fn traced(
        &self,
        route: &'static str,
        sale: &str,
        req: &Incoming,
        handler: fn(&App, &str, &Incoming, &mut RequestTrace<'_>) -> Result<Reply, ApiError>,
    ) -> Result<Reply, ApiError> {
        let mut t = RequestTrace::start(&self.tracer);
        let r = handler(self, sale, req, &mut t);
        match &r {
            Ok(reply) => t.finish(route, sale, reply.status, None),
            Err(e) => t.finish(route, sale, e.status(), Some(e.code())),
        }
        r
    }

    fn traced_token(
        &self,
        sale: &str,
        req: &Incoming,
        t: &mut RequestTrace<'_>,
    ) -> Result<Reply, ApiError> {
        let from = Instant::now();
        let user = self.admit(sale, req)?;
        t.step("ticket_and_limits", SpanKind::Internal, from);
        t.attr("seckill.user", user as i64);
        if !self.switches.admit(rand::random_range(0..1_000_000)) {
            self.metrics.limited(Limit::Admission);
            return Err(ApiError::AdmissionShed);
        }
        let ttl = Duration::from_secs(self.cfg.token_ttl_secs.max(1) as u64);
        let cap = self.cfg.max_live_tokens.clamp(0, u32::MAX as i64) as u32;
        let from = Instant::now();
        let issued = self.stock().issue_token_capped(sale, user, ttl, cap);
        t.step("redis.issue_token", SpanKind::Client, from);
        self.note(sale, issued.as_ref().map(|_| ()));
        let t = issued?;
        Ok(Reply::json(
            201,
            &json!({"token": t.token, "expires_ms": t.expires_ms}),
        ))
    }

    pub(crate) fn order(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        self.traced("POST /v1/sales/{sale}/orders", sale, req, App::traced_order)
    }

    fn traced_order(
        &self,
        sale: &str,
        req: &Incoming,
        t: &mut RequestTrace<'_>,
    ) -> Result<Reply, ApiError> {
        // Validation first: a malformed request is 400 whatever the sale's state.
        let from = Instant::now();
        let user = self.identify(sale, req)?;
        t.step("ticket", SpanKind::Internal, from);
        t.attr("seckill.user", user as i64);
        let body: OrderBody = req.json()?;
        // No sold-out shortcut here: a buyer retrying their own purchase (same token) gets
        // their order back from the script, which answers replays before anything else;
        // any other order for a sold-out sale is 410 from Redis.
        let from = Instant::now();
        self.admit_user(sale, user, req, false)?;
        t.step("limits", SpanKind::Internal, from);
        let mode = self.switches.order_sink();
        // Sink `kafka` with no broker: refuse before reserving anything.
        self.sink
            .accepting(mode)
            .map_err(ApiError::SinkUnavailable)?;
        // None counts if the generation moved while it ran (it may have reached a Redis
        // process no check confirmed).
        let gen = self.fenced_generation()?;
        let mut stock = self.stock();
        let from = Instant::now();
        let bought = stock.purchase(sale, user, &body.token);
        t.step("redis.purchase", SpanKind::Client, from);
        self.note(sale, bought.as_ref().map(|_| ()));
        let p = bought?;
        t.attr("seckill.order_id", p.order_id.clone());
        if !p.replayed && self.pipe.generation() != gen {
            let (trace_id, span_id) = t.log_ids();
            tracing::warn!(order = %p.order_id, %trace_id, %span_id, "Redis topology changed during the purchase; releasing it");
            if self.release_unacknowledged(&mut stock, &p, &body.token) {
                return Err(ApiError::StoreUnconfirmed);
            }
            return Err(ApiError::OutcomeUnknown {
                order_id: p.order_id,
                reason: Unknown::TopologyChanged,
            });
        }
        if p.remaining <= 0 {
            self.caches.mark_sold_out(sale);
        }
        if p.replayed && self.caches.delivered(&p.order_id) {
            // This gateway already handed the order over: answer, do not produce again
            // (a replay flood must not flood the topic).
            self.metrics.order_replayed();
            return Ok(accepted(&p, false, None));
        }
        let msg = OrderMessage {
            event: OrderEvent::Reserved,
            order_id: p.order_id.clone(),
            sale: sale.to_string(),
            user,
            units: 1,
            per_user_limit: p.per_user_limit.clamp(1, u32::MAX as i64) as u32,
            // The purchase's own time, on every delivery: the one expiry clock that Redis's
            // reservation and PostgreSQL's row share.
            at_ms: if p.reserved_at_ms > 0 {
                p.reserved_at_ms
            } else {
                now_ms()
            },
            definition: None,
        };
        // A retry (`replayed`) that this gateway did not deliver sends its order again: the
        // first attempt's message may never have left (its Redis reply was lost, or
        // another gateway took it); the writer keeps one row per id.
        let from = Instant::now();
        let traceparent = t.traceparent();
        let sent = self.sink.send(&msg, mode, traceparent.as_deref());
        let step = match sent {
            Ok(Via::Kafka) => "kafka.produce",
            Ok(Via::Spool) => "spool.append",
            Err(_) => "order.handoff",
        };
        t.step(step, SpanKind::Producer, from);
        let via = match sent {
            Ok(via) => via,
            Err(e @ SinkError::Timeout) => {
                // Outcome unknown (the spool's disk hung): keep the reservation, whose
                // order may yet land; the writer's sweep returns the unit if it does not.
                let (trace_id, span_id) = t.log_ids();
                tracing::error!(order = %p.order_id, error = %e, %trace_id, %span_id, "order hand-off outcome unknown; reservation kept");
                return Err(ApiError::OutcomeUnknown {
                    order_id: p.order_id,
                    reason: Unknown::Sink(e),
                });
            }
            Err(e) if p.replayed => {
                // The order stands from an earlier attempt; only this resend failed.
                return Err(ApiError::OutcomeUnknown {
                    order_id: p.order_id,
                    reason: Unknown::Sink(e),
                });
            }
            Err(e) => {
                // Certainly not stored anywhere: give the unit back so it can sell again.
                let (trace_id, span_id) = t.log_ids();
                tracing::error!(order = %p.order_id, error = %e, %trace_id, %span_id, "order not stored; releasing its reservation");
                if self.release_unacknowledged(&mut stock, &p, &body.token) {
                    self.metrics.released_on_sink_failure();
                    return Err(ApiError::SinkUnavailable(e));
                }
                // Not released (it failed, or a retry of the token was answered with the
                // order meanwhile and may have acknowledged it): the order may stand.
                return Err(ApiError::OutcomeUnknown {
                    order_id: p.order_id,
                    reason: Unknown::NotReleased(e),
                });
            }
        };
        self.caches.mark_delivered(&p.order_id);
        if p.replayed {
            self.metrics.order_replayed();
        } else {
            self.metrics.order_accepted();
            self.caches
                .put_status(&p.order_id, user, stock::OrderState::Reserved);
        }
        let trace = t.sampled.then(|| format!("{:032x}", t.trace));
        Ok(accepted(&p, via == Via::Spool, trace))
    }

    pub(crate) fn sale(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        self.known_sale_id(sale)?;
        self.limited(self.limits.check_reader(None, req.peer))?;
        let st = match self.caches.sale_state(sale) {
            Some(s) => s,
            None => {
                let read = self.stock().state(sale);
                if let Err(StockError::NoSale) = read {
                    self.caches.mark_missing(sale);
                }
                let s = read?;
                self.caches.put_sale_state(sale, &s);
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
    pub(crate) fn owned_order(
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

    pub(crate) fn order_status(&self, order_id: &str, req: &Incoming) -> Result<Reply, ApiError> {
        // The ticket first: without one the answer is 401 whatever the switch says.
        let user = self.user(req)?;
        match self.switches.status_reads() {
            StatusReads::Off => Err(ApiError::StatusReadsOff),
            StatusReads::Cache => {
                self.limited(self.limits.check_reader(Some(user), req.peer))?;
                match self.caches.status(order_id) {
                    Some((owner, state)) if owner == user => Ok(Reply::json(
                        200,
                        &json!({"order_id": order_id, "status": state.as_str(), "cached": true}),
                    )),
                    _ => Err(ApiError::StatusCacheMiss),
                }
            }
            StatusReads::Normal => {
                let (state, user, _) = self.owned_order(order_id, req)?;
                self.caches.put_status(order_id, user, state);
                Ok(Reply::json(
                    200,
                    &json!({"order_id": order_id, "status": state.as_str()}),
                ))
            }
        }
    }

    /// The fence against a Redis that lost writes (restart, failover): the pipe's
    /// topology generation, if a check found every master confirmed at it
    /// (`Switches::store_confirmed`); else 503 `store_recovering`.
    pub(crate) fn fenced_generation(&self) -> Result<u64, ApiError> {
        let gen = self.pipe.generation();
        if self.switches.store_confirmed(gen) {
            Ok(gen)
        } else {
            Err(ApiError::StoreUnconfirmed)
        }
    }
}

/// The 202 of a purchase (or of its replay).
/// The 202; `trace_id` when this request was traced (the id to look up in the trace
/// collector).
fn accepted(p: &stock::Purchase, spooled: bool, trace_id: Option<String>) -> Reply {
    let mut body = json!({"order_id": p.order_id, "status": "reserved", "remaining": p.remaining, "spooled": spooled, "replayed": p.replayed});
    if let Some(t) = trace_id {
        body["trace_id"] = t.into();
    }
    Reply::json(202, &body)
}

impl App {
    /// Give back the unit of an order that will not be acknowledged (nothing of it has
    /// left for the broker), so it sells again; false if it was not released: a retry of
    /// its token was answered with the order meanwhile (on any gateway) and may have
    /// acknowledged it, so it stands; or the release failed (Redis unreachable), and it
    /// is retried in the background every second (`releases`).
    fn release_unacknowledged(
        &self,
        stock: &mut Stock<RedisPipe>,
        p: &stock::Purchase,
        token: &str,
    ) -> bool {
        let order_id = p.order_id.as_str();
        match stock.release_unacknowledged(order_id, token, p.reserved_at_ms) {
            Ok(_) => true,
            Err(StockError::Replayed) => {
                tracing::warn!(
                    order = order_id,
                    "not released: a retry of its token was answered with it meanwhile"
                );
                false
            }
            Err(e) if e.is_fault() => {
                tracing::error!(order = order_id, error = %e, "release of an unacknowledged order failed; retrying it in the background");
                self.releases.push(order_id, token, p.reserved_at_ms);
                false
            }
            // Nothing held any more (released already, or unknown to Redis).
            Err(StockError::AlreadyReleased | StockError::NoOrder) => true,
            Err(e) => {
                tracing::warn!(order = order_id, error = %e, "release of an unacknowledged order refused");
                false
            }
        }
    }
}
