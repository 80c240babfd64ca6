//! Payments come from the payment provider, never from the buyer: the buyer's
//! `POST /v1/orders/{id}/pay` only starts one (the intent below), and the order is paid
//! when the provider's callback, signed as Stripe signs its webhooks, says so.
//!
//! - **Intent id**: `pi_` + the first 32 hex digits of
//!   HMAC-SHA256(secret, `intent|<order id>`): derived from the order, never stored, the
//!   same on every gateway; a callback must name its own order's intent.
//! - **Signature** header `Seckill-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<raw body>")>`: accepted only within the tolerance of now (either way), any one
//!   `v1` matching (a provider rotating its secret sends two), compared in constant time.
//!   A callback captured and sent again later is stale; within the tolerance it is a
//!   duplicate, answered as the first was.

use crate::ticket::{decode_hex, hex, sign};
use hmac::Mac;
use serde::{Deserialize, Serialize};

/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "seckill-signature";
/// The one event type that pays an order (others are acknowledged and ignored).
pub const SUCCEEDED: &str = "payment.succeeded";
/// Longest payment or event id accepted.
pub const MAX_ID: usize = 128;

/// The provider's callback body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// The provider's event id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Payment,
}

/// What was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's id of the payment (its idempotency key).
    pub payment_id: String,
    pub intent_id: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Seckill-Signature header, or not `t=<unix s>,v1=<hex>`")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
}

/// The intent id of `order_id`'s payment.
pub fn intent_id(secret: &[u8], order_id: &str) -> String {
    let mac = sign(secret, format!("intent|{order_id}").as_bytes()).finalize();
    format!("pi_{}", &hex(&mac.into_bytes())[..32])
}

/// The `Seckill-Signature` value for `body` sent at `t_unix_s` (the provider's side).
pub fn signature(secret: &[u8], t_unix_s: u64, body: &[u8]) -> String {
    let v1 = hex(&signed(secret, t_unix_s, body).finalize().into_bytes());
    format!("t={t_unix_s},v1={v1}")
}

fn signed(secret: &[u8], t_unix_s: u64, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = sign(secret, format!("{t_unix_s}.").as_bytes());
    mac.update(body);
    mac
}

/// Check `header` against `body` at `now_unix_s`, within `tolerance_s`.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_unix_s: u64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',').map(str::trim).take(8) {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => sigs.push(decode_hex(v).ok_or(SignatureError::Malformed)?),
            // Other schemes (a provider's future `v2`) are not ours to check.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // The signature first: a stale but genuine callback is told apart from a forgery.
    let genuine = sigs
        .iter()
        .any(|s| signed(secret, t, body).verify_slice(s).is_ok());
    if !genuine {
        return Err(SignatureError::Mismatch);
    }
    if now_unix_s.abs_diff(t) > tolerance_s {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"whsec";

    #[test]
    fn a_signed_body_verifies_within_the_tolerance_only() {
        let body = br#"{"id":"evt_1"}"#;
        let h = signature(K, 1000, body);
        assert_eq!(verify(K, Some(&h), body, 1000, 300), Ok(()));
        assert_eq!(verify(K, Some(&h), body, 1300, 300), Ok(()));
        assert_eq!(verify(K, Some(&h), body, 700, 300), Ok(()));
        assert_eq!(
            verify(K, Some(&h), body, 1301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(K, Some(&h), body, 699, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn forged_tampered_and_malformed_signatures_are_refused() {
        let body = br#"{"amount_cents":100}"#;
        let h = signature(K, 1000, body);
        assert_eq!(
            verify(b"other", Some(&h), body, 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(K, Some(&h), br#"{"amount_cents":1}"#, 1000, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: moving it forward does not refresh a stale one.
        let moved = h.replacen("t=1000", "t=5000", 1);
        assert_eq!(
            verify(K, Some(&moved), body, 5000, 300),
            Err(SignatureError::Mismatch)
        );
        let v1 = h.split_once(",v1=").unwrap().1;
        for bad in [
            "",
            "t=1000",
            &format!("v1={v1}"),
            &format!("t=x,v1={v1}"),
            &format!("t=1000,v1={}", &v1[..10]),
            "garbage",
        ] {
            assert_eq!(
                verify(K, Some(bad), body, 1000, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(K, None, body, 1000, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn any_one_of_several_signatures_may_match_while_a_secret_rotates() {
        let body = b"{}";
        let old = signature(b"old", 1000, body);
        let new = signature(K, 1000, body);
        let both = format!("{old},v1={}", new.split_once(",v1=").unwrap().1);
        assert_eq!(verify(K, Some(&both), body, 1000, 300), Ok(()));
    }

    #[test]
    fn an_intent_is_its_orders_and_the_secrets() {
        let a = intent_id(K, "s-1");
        assert!(a.starts_with("pi_") && a.len() == 35, "{a}");
        assert_eq!(a, intent_id(K, "s-1"));
        assert_ne!(a, intent_id(K, "s-2"));
        assert_ne!(a, intent_id(b"other", "s-1"));
    }
}
