//! Goose scenarios against the gateway. Every request is timed (from when it is sent,
//! after any throttle permit, to its whole answer) into an HdrHistogram
//! per request type (corrected for coordinated omission when an expected interval is
//! given), every answer class is counted, and every 202 is recorded.
//!
//! - `rush`: each iteration is a new buyer: token, then order; with a simulated payment
//!   provider ([`set_provider`]), a share of the buyers whose order was accepted pay it
//!   after a delay: the buyer starts the payment, the provider sends its signed callback.
//! - `click-storm`: four Goose users share each buyer and click order repeatedly,
//!   with the same token and with fresh ones.
//! - `bots`: forged tickets, orders without tokens, replayed and foreign tokens; the
//!   gateway must refuse every one.
//! - `browse`: sale-state and order-status polling.
//! - `mix`: the four, weighted 5 : 2 : 1 : 2.

use crate::buyer::LoadError;
use goose::prelude::*;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// What every user shares: the sale, the ticket secret, and the run's records.
pub struct Shared {
    pub sale: String,
    pub secret: Vec<u8>,
    /// Expected interval between a user's requests, µs (0 = no correction).
    pub expected_interval_us: u64,
    next_buyer: AtomicU64,
    pub acked: Mutex<Vec<(String, u64)>>,
    /// The token behind each 202, in the same order as `acked`.
    pub acked_tokens: Mutex<Vec<String>>,
    pub answers: Mutex<BTreeMap<String, u64>>,
    pub latency: Mutex<HashMap<&'static str, Histogram<u64>>>,
    /// Successful tokens, for the replay bots.
    used_tokens: Mutex<Vec<(u64, String)>>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The simulated payment provider of a run: who pays, when, and where it calls back.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The gateway's base URL for the provider's callback (its internal listener).
    pub webhook_base: String,
    /// The secret the provider signs its callbacks with (`payment_webhook_secret`).
    pub secret: Vec<u8>,
    /// Buyers in a thousand who pay their accepted order (chosen by buyer id, so a run
    /// pays the same buyers every time).
    pub share_permille: u64,
    /// How long after the 202 a paying buyer pays.
    pub delay: std::time::Duration,
}

static PROVIDER: OnceLock<Provider> = OnceLock::new();

/// Pay a share of the accepted orders in `rush` through `provider`.
pub fn set_provider(provider: Provider) {
    let _ = PROVIDER.set(provider);
}

/// Whether `buyer` is one of the provider's paying share.
fn pays(p: &Provider, buyer: u64) -> bool {
    // A multiplicative hash spreads consecutive buyer ids over the thousand.
    (buyer.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 1000 < p.share_permille
}

pub fn init(
    sale: &str,
    secret: &str,
    first_buyer: u64,
    expected_interval_us: u64,
) -> &'static Shared {
    SHARED.get_or_init(|| Shared {
        sale: sale.to_string(),
        secret: secret.as_bytes().to_vec(),
        expected_interval_us,
        next_buyer: AtomicU64::new(first_buyer),
        acked: Mutex::new(Vec::new()),
        acked_tokens: Mutex::new(Vec::new()),
        answers: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(HashMap::new()),
        used_tokens: Mutex::new(Vec::new()),
    })
}

pub fn shared() -> &'static Shared {
    SHARED
        .get()
        .expect("scenarios::init runs before the attack")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ticket(s: &Shared, user: u64) -> String {
    crate::buyer::ticket_header(&s.secret, user)
}

/// One request: timed, classified, and marked a Goose success when `expected(status)`.
async fn call(
    user: &mut GooseUser,
    name: &'static str,
    method: GooseMethod,
    path: &str,
    auth: &str,
    body: Option<serde_json::Value>,
    expected: impl Fn(u16) -> bool,
) -> Result<(u16, serde_json::Value), Box<TransactionError>> {
    let s = shared();
    let mut rb = user
        .get_request_builder(&method, path)?
        .header("Authorization", auth);
    if let Some(b) = &body {
        rb = rb.json(b);
    }
    let req = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .set_request_builder(rb)
        .build();
    let mut goose = user.request(req).await?;
    // Timed from when the request was sent: Goose's own response time starts after the
    // throttle permit (`--throttle-requests`) and ends at the response head; the body
    // read is added. A wait for the permit is the load generator's queue, not latency.
    let read = Instant::now();
    let (status, json) = match goose.response {
        Ok(r) => {
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>()
                    .await
                    .unwrap_or(serde_json::Value::Null),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    };
    let us = goose.request.response_time_micros() + read.elapsed().as_micros() as u64;
    {
        let mut h = lock(&s.latency);
        let hist = h.entry(name).or_insert_with(|| {
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
        });
        let v = us.clamp(1, 60_000_000);
        let _ = if s.expected_interval_us > 0 {
            hist.record_correct(v, s.expected_interval_us)
        } else {
            hist.record(v)
        };
    }
    let code = json["error"].as_str().unwrap_or("");
    *lock(&s.answers)
        .entry(format!("{name} {status} {code}").trim_end().to_string())
        .or_default() += 1;
    if expected(status) {
        user.set_success(&mut goose.request)?;
    } else {
        return user
            .set_failure(
                &format!("{name}: unexpected {status} {code}"),
                &mut goose.request,
                None,
                None,
            )
            .map(|_| (status, json));
    }
    Ok((status, json))
}

/// Statuses a correct gateway may answer to a genuine buyer during a sale.
fn buyer_ok(status: u16) -> bool {
    matches!(status, 200 | 201 | 202 | 409 | 410 | 429 | 503)
}

async fn token(user: &mut GooseUser, buyer: u64) -> Result<Option<String>, Box<TransactionError>> {
    let s = shared();
    let path = format!("/v1/sales/{}/tokens", s.sale);
    let (status, json) = call(
        user,
        "token",
        GooseMethod::Post,
        &path,
        &ticket(s, buyer),
        None,
        buyer_ok,
    )
    .await?;
    Ok(if status == 201 {
        json["token"].as_str().map(str::to_string)
    } else {
        None
    })
}

async fn order(
    user: &mut GooseUser,
    buyer: u64,
    token: &str,
) -> Result<(u16, Option<String>), Box<TransactionError>> {
    let s = shared();
    let path = format!("/v1/sales/{}/orders", s.sale);
    let body = serde_json::json!({ "token": token });
    let (status, json) = call(
        user,
        "order",
        GooseMethod::Post,
        &path,
        &ticket(s, buyer),
        Some(body),
        buyer_ok,
    )
    .await?;
    let id = json["order_id"].as_str().map(str::to_string);
    if status == 202 {
        if let Some(id) = &id {
            // Both under the `acked` lock, so row i of each belongs together.
            let mut acked = lock(&s.acked);
            acked.push((id.to_string(), buyer));
            lock(&s.acked_tokens).push(token.to_string());
            drop(acked);
            let mut used = lock(&s.used_tokens);
            if used.len() < 10_000 {
                used.push((buyer, token.to_string()));
            }
        }
    }
    Ok((status, id))
}

/// The buyer pays `order_id` (after the provider's delay): starts the payment (the
/// intent: id, amount, currency), then the provider sends its signed callback, which
/// is what pays the order. A payment that finds the order no longer payable (cancelled,
/// paid) is answered for what it is; only a server error is a failure.
async fn pay(
    user: &mut GooseUser,
    p: &Provider,
    buyer: u64,
    order_id: &str,
) -> Result<(), Box<TransactionError>> {
    let s = shared();
    tokio::time::sleep(p.delay).await;
    let path = format!("/v1/orders/{order_id}/pay");
    let (status, json) = call(
        user,
        "pay",
        GooseMethod::Post,
        &path,
        &ticket(s, buyer),
        None,
        // 0: no answer at all (a failure, as a server error is).
        |st| st != 0 && st < 500,
    )
    .await?;
    if status != 200 || json["status"].as_str() != Some("awaiting_payment") {
        return Ok(());
    }
    let intent = &json["payment"];
    let callback = seckill_common::payment::Callback {
        id: format!("evt_{order_id}"),
        kind: seckill_common::payment::SUCCEEDED.to_string(),
        data: seckill_common::payment::Payment {
            // One payment per order: a retried callback is the same payment.
            payment_id: format!("pay_{order_id}"),
            intent_id: intent["intent_id"].as_str().unwrap_or_default().to_string(),
            order_id: order_id.to_string(),
            amount_cents: intent["amount_cents"].as_i64().unwrap_or_default(),
            currency: intent["currency"].as_str().unwrap_or_default().to_string(),
        },
    };
    let body = serde_json::to_value(&callback).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let raw = serde_json::to_vec(&body).unwrap_or_default();
    let sig = seckill_common::payment::signature(&p.secret, now, &raw);
    let url = format!("{}/payments/webhook", p.webhook_base.trim_end_matches('/'));
    let rb = user
        .get_request_builder(&GooseMethod::Post, &url)?
        .header("Seckill-Signature", sig)
        .header("Content-Type", "application/json")
        .body(raw);
    let req = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path(url.as_str())
        .name("payment callback")
        .set_request_builder(rb)
        .build();
    let mut goose = user.request(req).await?;
    let status = goose.response.as_ref().map_or(0, |r| r.status().as_u16());
    *lock(&s.answers)
        .entry(format!("payment callback {status}"))
        .or_default() += 1;
    // Paid, or a refund due (the order was cancelled meanwhile): both are answers.
    if status == 200 {
        user.set_success(&mut goose.request)?;
    } else {
        user.set_failure(
            &format!("payment callback: unexpected {status}"),
            &mut goose.request,
            None,
            None,
        )?;
    }
    Ok(())
}

/// rush: a new buyer each iteration.
pub async fn rush(user: &mut GooseUser) -> TransactionResult {
    let buyer = shared().next_buyer.fetch_add(1, Ordering::Relaxed);
    if let Some(t) = token(user, buyer).await? {
        if let (202, Some(id)) = order(user, buyer, &t).await? {
            if let Some(p) = PROVIDER.get().filter(|p| pays(p, buyer)) {
                pay(user, p, buyer, &id).await?;
            }
        }
    }
    Ok(())
}

/// click-storm: four users per buyer; each clicks three times with one token, then
/// once more with a fresh token.
pub async fn click_storm(user: &mut GooseUser) -> TransactionResult {
    let buyer = 1_000_000_000 + user.weighted_users_index as u64 / 4;
    if let Some(t) = token(user, buyer).await? {
        for _ in 0..3 {
            order(user, buyer, &t).await?;
        }
    }
    if let Some(t) = token(user, buyer).await? {
        order(user, buyer, &t).await?;
    }
    Ok(())
}

/// bots: every request must be refused.
pub async fn bots(user: &mut GooseUser) -> TransactionResult {
    let s = shared();
    let orders = format!("/v1/sales/{}/orders", s.sale);
    let tokens = format!("/v1/sales/{}/tokens", s.sale);
    // A ticket signed with the wrong key.
    let forged = format!(
        "Ticket {}",
        seckill_common::ticket::mint(b"a guess", 7, u64::MAX / 2)
    );
    call(
        user,
        "bot forged ticket",
        GooseMethod::Post,
        &tokens,
        &forged,
        None,
        |st| st == 401,
    )
    .await?;
    // An order with a token nobody issued.
    let bot = 2_000_000_000 + user.weighted_users_index as u64;
    let fake = serde_json::json!({ "token": "00000000000000000000000000000000" });
    call(
        user,
        "bot no token",
        GooseMethod::Post,
        &orders,
        &ticket(s, bot),
        Some(fake),
        |st| matches!(st, 409 | 410 | 429 | 503),
    )
    .await?;
    // Replays of a buyer's used token, by the buyer and by someone else.
    let used = lock(&s.used_tokens).last().cloned();
    if let Some((buyer, t)) = used {
        let body = serde_json::json!({ "token": t });
        call(
            user,
            "bot replay",
            GooseMethod::Post,
            &orders,
            &ticket(s, buyer),
            Some(body.clone()),
            |st| matches!(st, 409 | 410 | 429 | 503),
        )
        .await?;
        call(
            user,
            "bot foreign token",
            GooseMethod::Post,
            &orders,
            &ticket(s, bot),
            Some(body),
            |st| matches!(st, 409 | 410 | 429 | 503),
        )
        .await?;
    }
    Ok(())
}

/// browse: the sale's state, and the status of an order (own or not: 200 or 404).
pub async fn browse(user: &mut GooseUser) -> TransactionResult {
    let s = shared();
    call(
        user,
        "sale state",
        GooseMethod::Get,
        &format!("/v1/sales/{}", s.sale),
        "",
        None,
        |st| st == 200,
    )
    .await?;
    let own = lock(&s.acked).last().cloned();
    if let Some((id, buyer)) = own {
        call(
            user,
            "order status",
            GooseMethod::Get,
            &format!("/v1/orders/{id}"),
            &ticket(s, buyer),
            None,
            |st| matches!(st, 200 | 503),
        )
        .await?;
    }
    Ok(())
}

/// The scenarios of a run, by name.
pub fn scenarios(name: &str) -> Result<Vec<Scenario>, LoadError> {
    let one = |n: &str, t: Transaction| scenario!(n).register_transaction(t);
    let weighted = |sc: Scenario, w: usize| sc.set_weight(w).map_err(LoadError::Goose);
    Ok(match name {
        "rush" => vec![one("rush", transaction!(rush))],
        "click-storm" => vec![one("click-storm", transaction!(click_storm))],
        "bots" => vec![one("bots", transaction!(bots))],
        "browse" => vec![one("browse", transaction!(browse))],
        "mix" => vec![
            weighted(one("rush", transaction!(rush)), 5)?,
            weighted(one("click-storm", transaction!(click_storm)), 2)?,
            weighted(one("bots", transaction!(bots)), 1)?,
            weighted(one("browse", transaction!(browse)), 2)?,
        ],
        other => {
            return Err(LoadError::Setup(format!(
                "unknown scenario {other} (rush, click-storm, bots, browse, mix)"
            )))
        }
    })
}

/// p50 … max per request type, as a markdown table (µs).
pub fn latency_table() -> String {
    let h = lock(&shared().latency);
    let mut names: Vec<&&str> = h.keys().collect();
    names.sort();
    let mut out = String::from("| request | count | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |\n|---|---|---|---|---|---|---|\n");
    for n in names {
        let x = &h[*n];
        out.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} |\n",
            x.len(),
            x.value_at_quantile(0.5),
            x.value_at_quantile(0.9),
            x.value_at_quantile(0.99),
            x.value_at_quantile(0.999),
            x.max()
        ));
    }
    out
}

/// Every request type's whole percentile distribution (`latency.json`).
pub fn latency_distributions() -> crate::latency::Distributions {
    lock(&shared().latency)
        .iter()
        .map(|(n, h)| (n.to_string(), crate::latency::Distribution::of(h)))
        .collect()
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    #[test]
    fn the_paying_share_is_the_share_asked_for_and_the_same_buyers_every_run() {
        let p = |share_permille| Provider {
            webhook_base: String::new(),
            secret: vec![],
            share_permille,
            delay: std::time::Duration::ZERO,
        };
        let count = |share| (1..=10_000u64).filter(|b| pays(&p(share), *b)).count();
        assert_eq!(count(0), 0);
        assert_eq!(count(1000), 10_000);
        let quarter = count(250);
        assert!((2_300..=2_700).contains(&quarter), "{quarter}");
        // Consecutive buyers are spread, not the first quarter of them.
        assert!((1..=100u64).any(|b| pays(&p(250), b)));
        assert!((1..=100u64).any(|b| !pays(&p(250), b)));
        assert_eq!(pays(&p(250), 77), pays(&p(250), 77));
    }
}
