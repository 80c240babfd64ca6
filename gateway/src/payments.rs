//! Payments, from the payment provider only (`seckill_common::payment`).
//!
//! - `POST /v1/orders/{id}/pay` (the buyer's ticket) **starts** a payment: it answers the
//!   intent a client pays with the provider (intent id, amount, currency) and changes
//!   nothing. No route lets a buyer mark an order paid.
//! - `POST /payments/webhook` (the provider, signed) pays it: the signature and its
//!   timestamp first, then the intent must be its order's and the amount and currency the
//!   sale's, then Redis decides (`settle`, atomic against the expiry's release): paid, or
//!   already paid by this payment (the provider's retry: answered the same), or paid by
//!   another payment, or already released, or signed but not fitting its order — then the
//!   money is owed back: recorded once per payment id as **refund due** (audit log and
//!   stream, a counter, the log), never turned into a sale.

use crate::app::App;
use crate::error::ApiError;
use crate::redis_pipe::RedisPipe;
use crate::request::{Incoming, Reply};
use seckill_common::now_ms;
use seckill_common::order::{OrderEvent, OrderMessage};
use seckill_common::payment::{self, Callback, SignatureError};
use serde_json::json;
use stock::{OrderState, Settlement, Stock, StockError};

/// What a verified callback came to (a label of `seckill_payment_callbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    Paid,
    Duplicate,
    RefundDue,
    Ignored,
    /// Signed, and refused (the body, or it does not fit its order).
    Refused,
    /// No valid signature (forged, stale, missing): anyone can send one.
    Unauthenticated,
}

impl CallbackOutcome {
    pub const ALL: [CallbackOutcome; 6] = [
        CallbackOutcome::Paid,
        CallbackOutcome::Duplicate,
        CallbackOutcome::RefundDue,
        CallbackOutcome::Ignored,
        CallbackOutcome::Refused,
        CallbackOutcome::Unauthenticated,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CallbackOutcome::Paid => "paid",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::RefundDue => "refund_due",
            CallbackOutcome::Ignored => "ignored",
            CallbackOutcome::Refused => "refused",
            CallbackOutcome::Unauthenticated => "unauthenticated",
        }
    }
}

impl App {
    /// The price of one unit of `sale`, in cents: its own, or the default for a sale
    /// created without one.
    fn price_of(&self, sale: &str) -> Result<i64, ApiError> {
        Ok(self
            .stock()
            .price(sale)?
            .unwrap_or(self.cfg.default_price_cents))
    }

    /// `POST /v1/orders/{id}/pay`: the intent the buyer pays with the provider.
    pub(crate) fn start_payment(&self, order_id: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let (state, _, _) = self.owned_order(order_id, req)?;
        // While a reconcile may be rewriting the sale (its price too): 503, retried.
        self.fenced_generation()?;
        match state {
            OrderState::Paid => Ok(Reply::json(
                200,
                &json!({"order_id": order_id, "status": "paid"}),
            )),
            OrderState::Released => Err(StockError::AlreadyReleased.into()),
            OrderState::Reserved => {
                let (sale, _) = stock::keys::split_order_id(order_id).ok_or(StockError::NoOrder)?;
                let amount = self.price_of(sale)?;
                let intent =
                    payment::intent_id(self.cfg.payment_webhook_secret.as_bytes(), order_id);
                Ok(Reply::json(
                    200,
                    &json!({
                        "order_id": order_id,
                        "status": "awaiting_payment",
                        "payment": {
                            "intent_id": intent,
                            "amount_cents": amount,
                            "currency": self.cfg.payment_currency,
                        },
                    }),
                ))
            }
        }
    }

    /// `POST /payments/webhook`: the provider says a payment succeeded.
    pub(crate) fn payment_callback(&self, req: &Incoming) -> Result<Reply, ApiError> {
        let r = self.settle_callback(req);
        let outcome = match &r {
            Ok((o, _)) => *o,
            // A fault of ours (Redis, the fence): the provider retries; not a refusal.
            Err(e) if e.status() >= 500 => return r.map(|(_, reply)| reply),
            // Anyone can send an unsigned request: counted apart from signed refusals.
            Err(ApiError::Signature(_)) => CallbackOutcome::Unauthenticated,
            // Signed: the provider took the money, and it is owed back.
            Err(ApiError::PaymentMismatch(..)) => CallbackOutcome::RefundDue,
            Err(_) => CallbackOutcome::Refused,
        };
        self.metrics.payment_callback(outcome);
        r.map(|(_, reply)| reply)
    }

    fn settle_callback(&self, req: &Incoming) -> Result<(CallbackOutcome, Reply), ApiError> {
        let secret = self.cfg.payment_webhook_secret.as_bytes();
        payment::verify(
            secret,
            req.signature,
            &req.body,
            (now_ms() / 1000).max(0) as u64,
            self.cfg.payment_tolerance_secs.max(1) as u64,
        )
        .map_err(ApiError::Signature)?;
        // The event type first: other events are acknowledged whatever their shape.
        let raw: serde_json::Value = req.json()?;
        let kind = raw["type"].as_str().unwrap_or_default();
        let event = raw["id"].as_str().unwrap_or_default();
        let sized = |v: &str| (1..=payment::MAX_ID).contains(&v.len());
        if !sized(kind) || !sized(event) || !raw["data"].is_object() {
            return Err(ApiError::BadRequest(format!(
                "id and type are strings of 1..={} bytes, data an object",
                payment::MAX_ID
            )));
        }
        if kind != payment::SUCCEEDED {
            let body = json!({"event": event, "status": "ignored", "type": kind});
            return Ok((CallbackOutcome::Ignored, Reply::json(200, &body)));
        }
        let cb: Callback = serde_json::from_value(raw).map_err(ApiError::BadJson)?;
        check_callback(&cb).map_err(ApiError::BadRequest)?;
        let p = &cb.data;
        let (sale, _) = stock::keys::split_order_id(&p.order_id).ok_or(StockError::NoOrder)?;
        // Redis lost or recovering: 503 before anything is read from it (the provider
        // retries), never a 404 or a mismatch read from a store being rebuilt.
        if self.switches.store_lost() {
            return Err(ApiError::StoreLost);
        }
        let gen = self.fenced_generation()?;
        // A master that restarted while this callback read Redis may have answered from
        // what it lost: 503 (the provider retries), never a 404, a mismatch or a refund.
        let moved = |e: ApiError| {
            if self.switches.store_confirmed(gen) {
                e
            } else {
                tracing::warn!(error = %e, "payment callback met a store that changed: retried");
                ApiError::StoreUnconfirmed
            }
        };
        let due = self.price_of(sale).map_err(moved)?;
        let mismatch = if p.intent_id != payment::intent_id(secret, &p.order_id) {
            Some(("intent_id", "not this order's intent".to_string()))
        } else if p.currency != self.cfg.payment_currency {
            let want = &self.cfg.payment_currency;
            Some(("currency", format!("{} paid, {want} due", p.currency)))
        } else if p.amount_cents != due {
            Some((
                "amount_cents",
                format!("{} paid, {due} due", p.amount_cents),
            ))
        } else {
            None
        };
        let mut stock = self.stock();
        if let Some((field, why)) = mismatch {
            if !self.switches.store_confirmed(gen) {
                return Err(ApiError::StoreUnconfirmed);
            }
            // Signed: the provider took this money. It pays nothing here and is owed back.
            self.refund_due(req, &mut stock, &cb, &format!("{field}: {why}"));
            return Err(ApiError::PaymentMismatch(field, why));
        }
        let (outcome, status) = match stock.settle(&p.order_id, Settlement::Paid) {
            Ok(buyer) => {
                // The event first: PostgreSQL must learn of the payment whatever follows.
                self.paid_event(&p.order_id, sale, buyer);
                self.caches.put_status(&p.order_id, buyer, OrderState::Paid);
                self.note_payment(&mut stock, &p.order_id, &p.payment_id);
                (CallbackOutcome::Paid, "paid")
            }
            // The provider's retry of the payment recorded: answered the same (and its
            // event sent again: the writer keeps one). Another payment for an order
            // already paid (two tabs, two charges) is owed back.
            Err(StockError::AlreadyPaid) => {
                if self.note_payment(&mut stock, &p.order_id, &p.payment_id) {
                    if let Ok((_, buyer)) = stock.order(&p.order_id) {
                        self.paid_event(&p.order_id, sale, buyer);
                    }
                    (CallbackOutcome::Duplicate, "paid")
                } else {
                    self.refund_due(
                        req,
                        &mut stock,
                        &cb,
                        "the order was paid by another payment",
                    );
                    (CallbackOutcome::RefundDue, "refund_due")
                }
            }
            Err(StockError::AlreadyReleased) => {
                if !self.switches.store_confirmed(gen) {
                    return Err(ApiError::StoreUnconfirmed);
                }
                self.refund_due(req, &mut stock, &cb, "the order was cancelled first");
                (CallbackOutcome::RefundDue, "refund_due")
            }
            Err(e) => return Err(moved(e.into())),
        };
        let body = json!({"order_id": p.order_id, "payment_id": p.payment_id, "status": status});
        Ok((outcome, Reply::json(200, &body)))
    }

    /// Record `payment_id` as the one that paid `order_id`: true when it is (the first
    /// recorded, or the same again), false when another payment paid it. A record that
    /// cannot be written (Redis away a moment) counts as this payment's: it paid.
    fn note_payment(&self, stock: &mut Stock<RedisPipe>, order_id: &str, payment_id: &str) -> bool {
        stock.record_payment(order_id, payment_id).unwrap_or_else(|e| {
            tracing::warn!(order = order_id, payment = payment_id, error = %e, "payment id not recorded");
            true
        })
    }

    /// A payment the provider took that pays nothing here: recorded once per payment id
    /// (audit log and stream, the log) for an operator to refund; a retried callback is
    /// not recorded twice.
    fn refund_due(&self, req: &Incoming, stock: &mut Stock<RedisPipe>, cb: &Callback, why: &str) {
        let p = &cb.data;
        let first = stock.record_refund(&p.order_id, &p.payment_id);
        if matches!(first, Ok(false)) {
            return;
        }
        if let Err(e) = &first {
            tracing::warn!(order = %p.order_id, error = %e, "refund due not deduplicated (Redis); audited anyway");
        }
        tracing::warn!(order = %p.order_id, payment = %p.payment_id, amount_cents = p.amount_cents, why, "payment that pays nothing here: refund due");
        self.audit(
            req,
            "refund_due",
            json!({"order_id": p.order_id, "payment_id": p.payment_id, "event": cb.id, "amount_cents": p.amount_cents, "currency": p.currency, "why": why}),
        );
    }

    /// The `paid` event that brings PostgreSQL along. If it is lost, the writer's
    /// payment-window scan finds the order paid in Redis instead.
    fn paid_event(&self, order_id: &str, sale: &str, buyer: u64) {
        let paid = OrderMessage {
            event: OrderEvent::Paid,
            order_id: order_id.to_string(),
            sale: sale.to_string(),
            user: buyer,
            units: 1,
            per_user_limit: 0,
            at_ms: now_ms(),
            definition: None,
        };
        if let Err(e) = self.sink.send(&paid, self.switches.order_sink(), None) {
            tracing::warn!(order = order_id, error = %e, "paid event not delivered; the payment-window scan will reconcile");
        }
    }
}

/// A callback's fields in their ranges (what `openapi.json` declares): ids 1..=128
/// bytes, an order id `<sale>-<sequence>`, an amount of 1 cent to
/// `stock::MAX_PRICE_CENTS`, a three-letter currency code.
fn check_callback(cb: &Callback) -> Result<(), String> {
    let p = &cb.data;
    for (name, v) in [("payment_id", &p.payment_id), ("intent_id", &p.intent_id)] {
        if v.is_empty() || v.len() > payment::MAX_ID {
            return Err(format!("{name} must be 1..={} bytes", payment::MAX_ID));
        }
    }
    if !order_id_shaped(&p.order_id) {
        return Err("order_id must be <sale>-<sequence>".into());
    }
    if stock::check_price(p.amount_cents).is_err() {
        return Err(format!(
            "amount_cents must be 1..={}",
            stock::MAX_PRICE_CENTS
        ));
    }
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("currency must be three capital letters (ISO 4217)".into());
    }
    Ok(())
}

/// `<sale>-<sequence>` as `openapi.json`'s pattern says: a sale id (`[A-Za-z0-9_]`,
/// 1..=64) and 1..=20 digits (an id of that shape that names no order is a 404).
fn order_id_shaped(id: &str) -> bool {
    id.rsplit_once('-').is_some_and(|(sale, seq)| {
        stock::keys::check_sale_id(sale).is_ok()
            && (1..=20).contains(&seq.len())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The code of a refused signature.
pub(crate) fn signature_code(e: SignatureError) -> &'static str {
    match e {
        SignatureError::Malformed => "signature_missing",
        SignatureError::Mismatch => "signature_invalid",
        SignatureError::Stale => "signature_expired",
    }
}
