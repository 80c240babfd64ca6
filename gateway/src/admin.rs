//! The operator's routes (admin bearer token): create a sale, pause one, read and set
//! the switches centrally or on this instance only, read the audit stream.

use crate::app::App;
use crate::error::ApiError;
use crate::redis_pipe::RedisPipe;
use crate::request::{Incoming, Reply};
use crate::switches::SwitchValues;
use seckill_common::now_ms;
use seckill_common::order::{OrderMessage, SaleDefinition};
use serde::Deserialize;
use serde_json::json;
use stock::{SaleSpec, Stock};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSale {
    sale: String,
    stock: i64,
    #[serde(default = "one")]
    per_user_limit: i64,
    start_ms: i64,
    end_ms: i64,
    /// Stock buckets (1..=64, default 1: the plain layout).
    #[serde(default = "one")]
    buckets: i64,
    /// What a payment for one unit must carry, in cents (default: the gateway's
    /// `default_price_cents`).
    #[serde(default, deserialize_with = "present")]
    price_cents: Option<i64>,
}

/// An optional field that, when present, must be a number (null is refused, as for the
/// other fields).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize(d).map(Some)
}

fn one() -> i64 {
    1
}

/// A switches body as `openapi.json` declares it: known switches only, none null (leave
/// a switch out to keep it), `rates` with exactly its six fields, values in range.
fn switch_body(req: &Incoming) -> Result<SwitchValues, ApiError> {
    let raw: serde_json::Value = req.json()?;
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if let Some((k, _)) = raw
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, v)| v.is_null())
    {
        return bad(format!(
            "switch {k:?} is null: leave it out to keep its value"
        ));
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
    let v: SwitchValues = serde_json::from_value(raw).map_err(ApiError::BadJson)?;
    v.validate()?;
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseSale {
    paused: bool,
}

impl App {
    /// A master that restarted empty (or lost writes) is not trusted until the reconcile
    /// restored every sale PostgreSQL knows: a sale it lost must come back with its
    /// orders, never be created again with its whole stock. So a sale is created only on
    /// a store a check found trusted at the pipe's current connections — waited for up to
    /// a second (a gateway just started, a connection just made), refused at once while
    /// the last check found masters untrusted: 503 `store_recovering`.
    fn store_settled(&self, stock: &mut Stock<RedisPipe>) -> Result<(), ApiError> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            if !self.switches.masters_untrusted() && self.fenced_generation().is_ok() {
                return Ok(());
            }
            if self.switches.masters_untrusted() || std::time::Instant::now() >= until {
                break;
            }
            may::coroutine::sleep(std::time::Duration::from_millis(20));
        }
        // A store that never had a sale (no epoch, none seen here) has nothing to lose:
        // its first sale is what starts it.
        if self.switches.seen_epoch().is_none() && stock.store_epoch()?.is_none() {
            return Ok(());
        }
        Err(ApiError::StoreUnconfirmed)
    }

    pub(crate) fn create_sale(&self, req: &Incoming) -> Result<Reply, ApiError> {
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
        self.store_settled(&mut stock)?;
        if self.switches.store_lost() {
            return Err(ApiError::StoreLost);
        }
        if let Some(seen) = self.switches.seen_epoch() {
            if stock.store_epoch()?.as_deref() != Some(seen.as_str()) {
                return Err(ApiError::StoreLost);
            }
        }
        let max = stock::keys::MAX_BUCKETS as i64;
        if !(1..=max).contains(&c.buckets) {
            return Err(ApiError::BadRequest(format!("buckets must be 1..={max}")));
        }
        let price = c.price_cents.unwrap_or(self.cfg.default_price_cents);
        stock.create_priced_sale(&c.sale, &spec, c.buckets as u32, Some(price))?;
        self.caches.found(&c.sale);
        self.audit(req, "create_sale", json!({"sale": c.sale, "stock": c.stock, "per_user_limit": c.per_user_limit, "start_ms": c.start_ms, "end_ms": c.end_ms, "buckets": c.buckets, "price_cents": price}));
        // The definition goes to PostgreSQL through the order topic: what rebuilding the
        // sale needs if Redis ever loses it.
        let def = SaleDefinition {
            stock: c.stock,
            per_user_limit: c.per_user_limit,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            buckets: c.buckets as u32,
            price_cents: Some(price),
        };
        let recorded = match self.sink.send(
            &OrderMessage::opened(&c.sale, def, now_ms()),
            self.switches.order_sink(),
            None,
        ) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(sale = %c.sale, error = %e, "sale definition not recorded; a Redis rebuild could not restore this sale");
                false
            }
        };
        Ok(Reply::json(
            201,
            &json!({"sale": c.sale, "created": true, "price_cents": price, "definition_recorded": recorded}),
        ))
    }

    pub(crate) fn pause_sale(&self, sale: &str, req: &Incoming) -> Result<Reply, ApiError> {
        let p: PauseSale = req.json()?;
        self.stock().set_paused(sale, p.paused)?;
        self.caches.drop_sale_state(sale);
        self.audit(req, "pause_sale", json!({"sale": sale, "paused": p.paused}));
        Ok(Reply::json(200, &json!({"sale": sale, "paused": p.paused})))
    }

    /// Write switches centrally, with their audit entry, in one transaction; this
    /// instance takes them at once, the others on their next poll.
    pub(crate) fn set_switches(&self, req: &Incoming) -> Result<Reply, ApiError> {
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
    pub(crate) fn set_local(&self, req: &Incoming, set: bool) -> Result<Reply, ApiError> {
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
    pub(crate) fn read_audit(&self, _req: &Incoming) -> Result<Reply, ApiError> {
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
}
