//! What the gateway remembers between requests, each map bounded: sales known sold out
//! or ended (until a recheck), sale ids Redis said do not exist, sale-state snapshots for the
//! public endpoint, and order statuses for the `cache` status-reads mode.

use crate::config::Config;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use stock::{OrderState, SaleState};

/// How long "no such sale" is answered from memory, and for how many ids at most.
const MISSING_FOR: Duration = Duration::from_secs(1);
const MISSING_MAX: usize = 10_000;

/// Why a sale's token requests are answered from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    SoldOut,
    Ended,
}

pub struct Caches {
    /// Sales known sold out or ended, until when (only sales Redis confirmed, so bounded
    /// by sales).
    sold_out: RwLock<HashMap<String, (Instant, Shed)>>,
    /// Sale ids Redis said do not exist, until when: a flood of made-up ids costs one
    /// Redis call per id per `MISSING_FOR` (at most `MISSING_MAX` remembered).
    missing: RwLock<HashMap<String, Instant>>,
    /// Until when (ms since `born`) `missing` may hold a live entry: every buyer request
    /// asks, and the answer is nearly always no, so it is read without touching the lock.
    missing_until_ms: AtomicU64,
    born: Instant,
    /// Short-lived sale snapshots for the public sale-state endpoint (sales Redis knows).
    sale_state: Mutex<HashMap<String, (Instant, SaleState)>>,
    /// Recent order statuses (owner, state); when full, it starts over.
    status: Mutex<HashMap<String, (u64, OrderState)>>,
    /// Orders this gateway handed to the broker or its spool (two generations of at most
    /// `delivered_max` ids each): a replay of one is answered without sending it again.
    delivered: Mutex<[HashSet<String>; 2]>,
    delivered_max: usize,
    sold_out_for: Duration,
    sale_state_for: Duration,
    status_max: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Caches {
    pub fn new(cfg: &Config) -> Caches {
        Caches {
            sold_out: RwLock::new(HashMap::new()),
            missing: RwLock::new(HashMap::new()),
            missing_until_ms: AtomicU64::new(0),
            born: Instant::now(),
            sale_state: Mutex::new(HashMap::new()),
            status: Mutex::new(HashMap::new()),
            sold_out_for: Duration::from_millis(cfg.sold_out_recheck_ms.max(0) as u64),
            sale_state_for: Duration::from_millis(cfg.sale_cache_ms.max(0) as u64),
            status_max: cfg.status_cache_max.max(1) as usize,
            delivered: Mutex::new([HashSet::new(), HashSet::new()]),
            delivered_max: cfg.delivered_orders_max.max(1) as usize,
        }
    }

    /// Whether (and why) `sale` is answered from memory now.
    pub fn shed(&self, sale: &str) -> Option<Shed> {
        let map = self.sold_out.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(sale)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, why)| *why)
    }

    pub fn sold_out(&self, sale: &str) -> bool {
        self.shed(sale) == Some(Shed::SoldOut)
    }

    pub fn mark_sold_out(&self, sale: &str) {
        self.mark(sale, Shed::SoldOut);
    }

    pub fn mark_ended(&self, sale: &str) {
        self.mark(sale, Shed::Ended);
    }

    fn mark(&self, sale: &str, why: Shed) {
        self.sold_out
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sale.to_string(), (Instant::now() + self.sold_out_for, why));
    }

    /// Sales answered sold-out from memory right now.
    pub fn sold_out_count(&self) -> usize {
        let now = Instant::now();
        let map = self.sold_out.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|(u, why)| now < *u && *why == Shed::SoldOut)
            .count()
    }

    /// Read on every buyer request: no lock unless some id was said missing within the
    /// last `MISSING_FOR`.
    pub fn missing(&self, sale: &str) -> bool {
        let until = self.missing_until_ms.load(Ordering::Acquire);
        if until == 0 || self.born.elapsed().as_millis() as u64 >= until {
            return false;
        }
        let m = self.missing.read().unwrap_or_else(|p| p.into_inner());
        m.get(sale).is_some_and(|until| Instant::now() < *until)
    }

    pub fn mark_missing(&self, sale: &str) {
        let mut m = self.missing.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MISSING_MAX {
            m.clear();
        }
        let until = Instant::now() + MISSING_FOR;
        m.insert(sale.to_string(), until);
        // Rounded up, so the fast path never skips a live entry.
        let ms = until.duration_since(self.born).as_millis() as u64 + 1;
        self.missing_until_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// The sale exists now (this gateway created it).
    pub fn found(&self, sale: &str) {
        self.missing
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sale);
    }

    pub fn sale_state(&self, sale: &str) -> Option<SaleState> {
        lock(&self.sale_state)
            .get(sale)
            .filter(|(at, _)| at.elapsed() < self.sale_state_for)
            .map(|(_, s)| s.clone())
    }

    pub fn put_sale_state(&self, sale: &str, state: &SaleState) {
        lock(&self.sale_state).insert(sale.to_string(), (Instant::now(), state.clone()));
    }

    pub fn drop_sale_state(&self, sale: &str) {
        lock(&self.sale_state).remove(sale);
    }

    pub fn status(&self, order_id: &str) -> Option<(u64, OrderState)> {
        lock(&self.status).get(order_id).copied()
    }

    pub fn put_status(&self, order_id: &str, user: u64, state: OrderState) {
        let mut c = lock(&self.status);
        if c.len() >= self.status_max && !c.contains_key(order_id) {
            c.clear();
        }
        c.insert(order_id.to_string(), (user, state));
    }

    /// This gateway handed `order_id` to the broker (acknowledged) or fsync'd it to its
    /// spool: a replay need not send it again.
    pub fn delivered(&self, order_id: &str) -> bool {
        let d = lock(&self.delivered);
        d[0].contains(order_id) || d[1].contains(order_id)
    }

    pub fn mark_delivered(&self, order_id: &str) {
        let mut d = lock(&self.delivered);
        let mut old = HashSet::new();
        if d[0].len() >= self.delivered_max {
            // The older generation goes: bounded at twice the cap, and the most recent
            // `delivered_max` ids are always remembered.
            d.swap(0, 1);
            old = std::mem::take(&mut d[0]);
        }
        d[0].insert(order_id.to_string());
        drop(d);
        // Freed outside the lock: a generation holds up to `delivered_max` strings.
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_orders_are_remembered_up_to_twice_the_cap() {
        let cfg = Config {
            delivered_orders_max: 2,
            ..Config::default()
        };
        let c = Caches::new(&cfg);
        for id in ["s-1", "s-2", "s-3"] {
            c.mark_delivered(id);
        }
        assert!(c.delivered("s-1") && c.delivered("s-2") && c.delivered("s-3"));
        c.mark_delivered("s-4");
        c.mark_delivered("s-5");
        assert!(
            !c.delivered("s-1") && !c.delivered("s-2"),
            "oldest forgotten"
        );
        assert!(c.delivered("s-3") && c.delivered("s-4") && c.delivered("s-5"));
        assert!(!c.delivered("s-9"));
    }

    #[test]
    fn every_map_is_bounded_and_forgets_in_time() {
        let cfg = Config {
            status_cache_max: 2,
            sold_out_recheck_ms: 0,
            ..Config::default()
        };
        let c = Caches::new(&cfg);
        c.put_status("a-1", 1, OrderState::Reserved);
        c.put_status("a-2", 1, OrderState::Reserved);
        c.put_status("a-3", 1, OrderState::Paid);
        assert_eq!(c.status("a-1"), None, "full: started over");
        assert_eq!(c.status("a-3"), Some((1, OrderState::Paid)));
        c.mark_sold_out("s");
        assert!(!c.sold_out("s"), "a zero recheck forgets at once");
        for i in 0..MISSING_MAX + 1 {
            c.mark_missing(&format!("x{i}"));
        }
        assert!(c.missing.read().expect("lock").len() <= MISSING_MAX);
        c.found(&format!("x{MISSING_MAX}"));
        assert!(!c.missing(&format!("x{MISSING_MAX}")));
    }
}
