//! The key schema. All keys of sale `S` carry the hash tag `{S}`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sk:{S}:meta` | hash | initial, limit, start_ms, end_ms, paused, created_ms, void_before (µs; set by a reconcile after a loss, a restore, a late order's put-back: tokens issued until then are void) |
//! | `sk:{S}:stock` | int | units still for sale |
//! | `sk:{S}:sold` | int | units paid for |
//! | `sk:{S}:buyers` | hash | user → units held or bought |
//! | `sk:{S}:res` | hash | order id → user, for reservations neither paid nor released |
//! | `sk:{S}:res_at` | hash | order id → when it was reserved (ms), for the same reservations |
//! | `sk:{S}:settled` | hash | order id → `paid|user` or `released|user` |
//! | `sk:{S}:seq` | int | order id sequence |
//! | `sk:{S}:tok:T` | string | `user|expires_ms|new|issued_us`, then `…|used|order` or `…|replayed|order` (a retry was answered with the order), with a TTL |
//! | `sk:{S}:pay` | hash | order id → the payment provider's payment id that paid it |
//! | `sk:{S}:refund` | hash | payment id → order id: payments recorded as refunds due (each once) |
//! | `sk:{S#b}:…` | | bucket `b` of a sale created with `buckets` > 1: the same names (meta, stock, sold, buyers, res, res_at, settled, seq, tok, utok, pay, refund: an order's in the bucket its sequence names) under the bucket's own tag; `sk:{S}:meta` holds the definition and `buckets` |
//! | `sk:{S#b}:xout` | hash | transfer id → `dest|count`: units withdrawn from bucket b, in flight (deposit not yet seen) |
//! | `sk:{S#b}:xdone` | hash | transfer id → `dest|count`: moves out of bucket b whose deposit was seen (kept while the sale lives) |
//! | `sk:{S#b}:xin` | hash | transfer id → `source|count`: transfers deposited into bucket b (a replayed deposit is a no-op) |
//! | `sk:epoch` | string | set with the first sale; gone only if Redis lost its data |
//! | `{sk:epoch}:trust` | hash | run id → `ms addr`: Redis processes known to hold every acknowledged order (the epoch's slot: lost only with it) |
//! | `sk:switches:{C}` | hash | degradation switches of gateway cluster `C` (JSON values) |
//! | `sk:audit:{C}` | stream | every operator change through cluster `C` (same slot as its switches) |

use crate::StockError;
use rand::RngCore;

/// The store epoch.
pub const EPOCH: &str = "sk:epoch";

/// Run ids of the Redis processes known to hold every acknowledged order
/// (hash: run id → `<ms> <addr>`; see `trust`). In the epoch's slot (hash tag
/// `{sk:epoch}`): a master that restarts empty and loses the trust map loses the epoch
/// with it, which every gateway sees as the store's data lost — never as a fresh start.
pub const TRUST: &str = "{sk:epoch}:trust";

/// The central degradation switches of one gateway cluster.
pub fn switches(cluster: &str) -> String {
    format!("sk:switches:{{{cluster}}}")
}

/// The audit stream of operator changes (capped) of one gateway cluster.
pub fn audit(cluster: &str) -> String {
    format!("sk:audit:{{{cluster}}}")
}

/// Longest sale id accepted; ids are `[A-Za-z0-9_]`, so they never contain the
/// order id separator `-` nor hash-tag braces.
pub const MAX_SALE_ID: usize = 64;

pub struct SaleKeys {
    prefix: String,
    pub meta: String,
    pub stock: String,
    pub sold: String,
    pub buyers: String,
    pub reservations: String,
    pub reserved_at: String,
    pub settled: String,
    pub seq: String,
}

/// Most stock buckets a sale may have.
pub const MAX_BUCKETS: u32 = 64;

impl SaleKeys {
    pub fn new(sale: &str) -> SaleKeys {
        SaleKeys::with_prefix(format!("sk:{{{sale}}}:"))
    }

    /// The keys of bucket `b` of a bucketed sale (`buckets` > 1): the same names under
    /// the hash tag `{S#b}`, so on Redis Cluster the buckets spread over the slots
    /// (`#` is never part of a sale id, so no other sale shares the tag). The sale's
    /// own `sk:{S}:meta` keeps the definition and the bucket count.
    pub fn bucket(sale: &str, b: u32) -> SaleKeys {
        SaleKeys::with_prefix(format!("sk:{{{sale}#{b}}}:"))
    }

    fn with_prefix(prefix: String) -> SaleKeys {
        let k = |s: &str| format!("{prefix}{s}");
        SaleKeys {
            meta: k("meta"),
            stock: k("stock"),
            sold: k("sold"),
            buyers: k("buyers"),
            reservations: k("res"),
            reserved_at: k("res_at"),
            settled: k("settled"),
            seq: k("seq"),
            prefix,
        }
    }

    /// Every key of the sale but its tokens: meta, stock, sold, buyers, reservations,
    /// settled, seq, reserved_at (the order the create and restore scripts take them in).
    pub fn all(&self) -> [&str; 8] {
        [
            &self.meta,
            &self.stock,
            &self.sold,
            &self.buyers,
            &self.reservations,
            &self.settled,
            &self.seq,
            &self.reserved_at,
        ]
    }

    /// The keys `settle.lua` takes, in its order: stock sold buyers res settled res_at.
    pub fn settle_keys(&self) -> [&str; 6] {
        [
            &self.stock,
            &self.sold,
            &self.buyers,
            &self.reservations,
            &self.settled,
            &self.reserved_at,
        ]
    }

    pub fn token(&self, token: &str) -> String {
        format!("{}tok:{token}", self.prefix)
    }

    /// A buyer's live tokens (sorted set: token key → expiry ms), for the per-user cap;
    /// expires with the newest token.
    pub fn user_tokens(&self, user: u64) -> String {
        format!("{}utok:{user}", self.prefix)
    }

    /// The provider's payment that paid each order (hash: order id → payment id): a
    /// different payment for a paid order is a refund due, the same one a duplicate.
    pub fn payments(&self) -> String {
        format!("{}pay", self.prefix)
    }

    /// Payments recorded as refunds due (hash: payment id → order id), each once.
    pub fn refunds(&self) -> String {
        format!("{}refund", self.prefix)
    }

    /// A bucket's journal of units withdrawn for another bucket and not yet known to be
    /// deposited (hash: transfer id → `dest|count`).
    pub fn transfers_out(&self) -> String {
        format!("{}xout", self.prefix)
    }

    /// Transfers out of a bucket whose deposit was seen (hash: transfer id →
    /// `dest|count`): the source's half of the ledger, so a reconcile can tell a
    /// deposit that survived a withdrawal lost with its master. Never trimmed while
    /// the sale lives (at most one entry per unit moved).
    pub fn transfers_done(&self) -> String {
        format!("{}xdone", self.prefix)
    }

    /// Transfers a bucket has deposited (hash: transfer id → `from|count`); a replayed
    /// deposit finds its id here and changes nothing. Never trimmed while the sale
    /// lives (at most one entry per unit moved).
    pub fn transfers_in(&self) -> String {
        format!("{}xin", self.prefix)
    }
}

/// A buyer's home bucket among `buckets`: a fixed mix of the user id (splitmix64's
/// finaliser), the same in every process and release.
pub fn home_bucket(user: u64, buckets: u32) -> u32 {
    if buckets <= 1 {
        return 0;
    }
    let mut z = user.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % buckets as u64) as u32
}

/// The bucket an order of a bucketed sale was bought in: each bucket's sequence steps
/// by the bucket count from a base that is a multiple of it, so `seq mod buckets` is
/// the bucket (order ids keep the form `<sale>-<seq>`, unique per sale).
pub fn order_bucket(seq: u64, buckets: u32) -> u32 {
    (seq % buckets.max(1) as u64) as u32
}

pub fn check_sale_id(sale: &str) -> Result<(), StockError> {
    if sale.is_empty()
        || sale.len() > MAX_SALE_ID
        || !sale.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StockError::Invalid(format!(
            "sale id must be 1..={MAX_SALE_ID} of [A-Za-z0-9_]"
        )));
    }
    Ok(())
}

/// Order ids are `<sale>-<sequence>`: unique across gateway instances because the
/// sequence lives in Redis beside the sale's stock.
pub fn split_order_id(order_id: &str) -> Option<(&str, u64)> {
    let (sale, seq) = order_id.rsplit_once('-')?;
    check_sale_id(sale).ok()?;
    Some((sale, seq.parse().ok()?))
}

/// The sequence of `order_id`, which must be an order of `sale`.
pub fn seq_in_sale(sale: &str, order_id: &str) -> Result<u64, StockError> {
    match split_order_id(order_id) {
        Some((s, seq)) if s == sale => Ok(seq),
        Some(_) => Err(StockError::Invalid(format!(
            "order {order_id} is not of sale {sale}"
        ))),
        None => Err(StockError::Invalid(format!("order id {order_id:?}"))),
    }
}

/// 128 random bits, hex.
pub fn new_token() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn token_well_formed(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_sale_shares_one_hash_tag() {
        let k = SaleKeys::new("s1");
        let token = k.token("ab");
        for key in k.all().into_iter().chain([token.as_str()]) {
            assert!(key.starts_with("sk:{s1}:"), "{key}");
        }
    }

    #[test]
    fn sale_ids_and_order_ids_are_validated() {
        assert!(check_sale_id("flash_2026").is_ok());
        for bad in ["", "a-b", "a{b}", "a b", &"x".repeat(65)] {
            assert!(check_sale_id(bad).is_err(), "{bad}");
        }
        assert_eq!(split_order_id("flash_1-42"), Some(("flash_1", 42)));
        assert_eq!(split_order_id("flash-1-42"), None);
        assert_eq!(split_order_id("42"), None);
        assert_eq!(split_order_id("s-x"), None);
    }

    #[test]
    fn bucket_keys_carry_their_own_tag_and_homes_are_stable() {
        let k = SaleKeys::bucket("s1", 3);
        for key in k.all().into_iter().chain([
            k.transfers_out().as_str(),
            k.transfers_in().as_str(),
            k.transfers_done().as_str(),
        ]) {
            assert!(key.starts_with("sk:{s1#3}:"), "{key}");
        }
        assert_eq!(home_bucket(42, 1), 0);
        let mut seen = [0u32; 4];
        for u in 0..4000 {
            let b = home_bucket(u, 4);
            assert_eq!(b, home_bucket(u, 4));
            seen[b as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(order_bucket(1_000_000_006, 4), 2);
    }

    #[test]
    fn tokens_are_random_and_well_formed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(token_well_formed(&a));
        assert!(!token_well_formed("zz"));
    }
}
