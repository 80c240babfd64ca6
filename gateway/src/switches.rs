//! Degradation switches. Their home is a Redis hash (`sk:switches:<cluster>`, one JSON
//! value per switch) that every gateway instance of the cluster reads every
//! `switch_poll_ms`; a change
//! made through any instance's admin API is written there with an audit entry, and the
//! other instances follow within one poll. Each instance keeps the last values it read
//! while the store is unreachable, and accepts a local override (per instance, also
//! audited) that wins over the central value until cleared.
//!
//! The same poll watches the store's epoch: an instance that saw an epoch and then sees
//! none knows Redis lost its data, and stops selling until the store is rebuilt.
//! It also checks that every Redis master is a process the store trusts to hold every
//! acknowledged order (`stock::trust`): purchases go through only while the Redis pipe's
//! topology generation equals the one such a check started at (see `store_confirmed`).
//!
//! Per-sale pause lives in Redis with the sale itself (`/admin/sales/{sale}/pause`).

use crate::breaker::{Breaker, Mode};
use crate::limits::{Limits, Rates};
use seckill_common::now_ms;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// How order status reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReads {
    /// From Redis, the arbiter.
    Normal,
    /// Only from this instance's cache of recent answers and acceptances; a miss is 503.
    Cache,
    /// Not at all: 503 with Retry-After.
    Off,
}

/// Where accepted orders go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Kafka while it answers; the durable local spool when it does not (broker down or
    /// the sink breaker open). The spool is replayed into Kafka when the broker is back.
    Auto,
    /// Kafka only: a broker failure releases the reservation and answers 503.
    Kafka,
    /// The spool only (for example to drain a broker for maintenance).
    Spool,
}

/// The switches, as read and written by the admin API and stored centrally. Every field
/// is optional: on write only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_all: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_sink: Option<SinkMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_breaker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reads: Option<StatusReads>,
}

/// One poll of the store: its epoch (`sk:epoch`) and the cluster's switches hash.
pub struct StoreRead {
    pub epoch: Option<String>,
    pub switches: HashMap<String, String>,
}

/// The names of the switches, as fields of the switches hash.
pub const NAMES: [&str; 6] = [
    "pause_all",
    "admission_ratio",
    "rates",
    "order_sink",
    "redis_breaker",
    "status_reads",
];

/// A switch value out of its range (what `SwitchValues::validate` refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSwitch {
    #[error("admission_ratio must be within 0..=1")]
    AdmissionRatio,
    #[error("redis_breaker must be auto, open or closed")]
    BreakerMode,
    #[error("every rate and burst must be at least 1")]
    ZeroRate,
}

impl SwitchValues {
    /// `self` with every value `top` sets replacing ours.
    pub fn overlay(&self, top: &SwitchValues) -> SwitchValues {
        SwitchValues {
            pause_all: top.pause_all.or(self.pause_all),
            admission_ratio: top.admission_ratio.or(self.admission_ratio),
            rates: top.rates.or(self.rates),
            order_sink: top.order_sink.or(self.order_sink),
            redis_breaker: top
                .redis_breaker
                .clone()
                .or_else(|| self.redis_breaker.clone()),
            status_reads: top.status_reads.or(self.status_reads),
        }
    }

    pub fn validate(&self) -> Result<(), InvalidSwitch> {
        if let Some(r) = self.admission_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(InvalidSwitch::AdmissionRatio);
            }
        }
        if let Some(m) = &self.redis_breaker {
            Mode::parse(m).ok_or(InvalidSwitch::BreakerMode)?;
        }
        if let Some(r) = &self.rates {
            if [
                r.global_rps,
                r.global_burst,
                r.user_rps,
                r.user_burst,
                r.ip_rps,
                r.ip_burst,
            ]
            .contains(&0)
            {
                return Err(InvalidSwitch::ZeroRate);
            }
        }
        Ok(())
    }

    /// The given values as control-hash fields (name, JSON).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let v = serde_json::to_value(self).unwrap_or_default();
        NAMES
            .iter()
            .filter_map(|n| v.get(*n).map(|x| (*n, x.to_string())))
            .collect()
    }

    /// Parse the control hash; fields that are not switches (the epoch) are skipped, a
    /// field that does not parse is reported and skipped.
    pub fn from_fields(map: &HashMap<String, String>) -> (SwitchValues, Vec<String>) {
        let mut obj = serde_json::Map::new();
        let mut bad = Vec::new();
        for n in NAMES {
            if let Some(raw) = map.get(n) {
                match serde_json::from_str::<serde_json::Value>(raw) {
                    Ok(v) => {
                        obj.insert(n.to_string(), v);
                    }
                    Err(_) => bad.push(n.to_string()),
                }
            }
        }
        let mut out = SwitchValues::default();
        for (k, v) in obj {
            let one = serde_json::json!({ k.clone(): v });
            match serde_json::from_value::<SwitchValues>(one) {
                Ok(s) if s.validate().is_ok() => out = out.overlay(&s),
                _ => bad.push(k),
            }
        }
        (out, bad)
    }
}

/// What the follower last learned about the store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreView {
    pub up: bool,
    /// When the store last answered (ms since the epoch), 0 = never.
    pub last_ok_ms: i64,
    pub epoch: Option<String>,
    /// Redis answered without the epoch this instance saw before: its data was lost.
    pub lost: bool,
    /// Masters (`addr run_id`) the store does not trust yet (they may have lost
    /// acknowledged orders); `None`: the last check could not tell.
    pub unconfirmed: Option<Vec<String>>,
}

pub struct Switches {
    pause_all: AtomicBool,
    /// Admission ratio in parts per million of token requests admitted.
    admission_ppm: AtomicU32,
    status_reads: AtomicU8,
    order_sink: AtomicU8,
    /// The configured values every missing switch falls back to.
    base: SwitchValues,
    central: Mutex<SwitchValues>,
    local: Mutex<SwitchValues>,
    applied: Mutex<SwitchValues>,
    store: Mutex<StoreView>,
    /// `store.lost`, readable on the request path without a lock.
    store_lost: AtomicBool,
    /// The Redis pipe's generation at the start of the last check that found every
    /// master trusted; `u64::MAX` while a master is not (or the check failed).
    trusted_gen: AtomicU64,
    /// A check has found every master trusted at least once since start.
    confirmed_once: AtomicBool,
    invalid: AtomicU64,
    changes: AtomicU64,
}

impl Switches {
    /// `base` must set every switch (the configuration's values).
    pub fn new(base: SwitchValues, limits: &Limits, breaker: &Breaker) -> Switches {
        let s = Switches {
            pause_all: AtomicBool::new(false),
            admission_ppm: AtomicU32::new(1_000_000),
            status_reads: AtomicU8::new(StatusReads::Normal as u8),
            order_sink: AtomicU8::new(SinkMode::Auto as u8),
            base,
            central: Mutex::new(SwitchValues::default()),
            local: Mutex::new(SwitchValues::default()),
            applied: Mutex::new(SwitchValues::default()),
            store: Mutex::new(StoreView::default()),
            store_lost: AtomicBool::new(false),
            trusted_gen: AtomicU64::new(u64::MAX),
            confirmed_once: AtomicBool::new(false),
            invalid: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        };
        s.settle(limits, breaker);
        s
    }

    pub fn paused_all(&self) -> bool {
        self.pause_all.load(Ordering::Relaxed)
    }

    /// Admit this request? `roll` is uniform in [0, 1e6).
    pub fn admit(&self, roll: u32) -> bool {
        roll < self.admission_ppm.load(Ordering::Relaxed)
    }

    pub fn status_reads(&self) -> StatusReads {
        match self.status_reads.load(Ordering::Relaxed) {
            x if x == StatusReads::Cache as u8 => StatusReads::Cache,
            x if x == StatusReads::Off as u8 => StatusReads::Off,
            _ => StatusReads::Normal,
        }
    }

    pub fn order_sink(&self) -> SinkMode {
        match self.order_sink.load(Ordering::Relaxed) {
            x if x == SinkMode::Kafka as u8 => SinkMode::Kafka,
            x if x == SinkMode::Spool as u8 => SinkMode::Spool,
            _ => SinkMode::Auto,
        }
    }

    /// Redis lost its data and has not been rebuilt: nothing may be sold.
    pub fn store_lost(&self) -> bool {
        self.store_lost.load(Ordering::Acquire)
    }

    /// One check of the masters' processes, started when the Redis pipe was at
    /// generation `gen`: `Some(empty)` every one is trusted, `Some(list)` these are not,
    /// `None` the check failed.
    pub fn confirm(&self, gen: u64, unconfirmed: Option<Vec<String>>) {
        let ok = unconfirmed.as_ref().is_some_and(|u| u.is_empty());
        let mut store = Self::lock(&self.store);
        if store.unconfirmed != unconfirmed {
            match &unconfirmed {
                Some(u) if u.is_empty() => tracing::info!(
                    "every Redis master holds every acknowledged order; purchases go through"
                ),
                Some(u) => {
                    tracing::warn!(masters = ?u, "Redis masters not known to hold every acknowledged order (restarted or promoted): purchases held until the order-writer reconciles them (runbooks/redis-store-unconfirmed.md)")
                }
                None => tracing::warn!("cannot check the Redis masters' processes: purchases held"),
            }
            store.unconfirmed = unconfirmed;
        }
        self.trusted_gen
            .store(if ok { gen } else { u64::MAX }, Ordering::Release);
        if ok {
            self.confirmed_once.store(true, Ordering::Release);
        }
    }

    /// May a purchase run on the Redis pipe at generation `gen`? Only if no connection
    /// was made or lost and no slot moved since a check found every master trusted. A
    /// caller checks before the purchase and that the generation is unchanged after it.
    pub fn store_confirmed(&self, gen: u64) -> bool {
        gen != u64::MAX && self.trusted_gen.load(Ordering::Acquire) == gen
    }

    /// The last check of the store found masters it does not trust (restarted empty,
    /// restarted from a file, promoted) that no reconcile has vouched for yet.
    pub fn masters_untrusted(&self) -> bool {
        matches!(&Self::lock(&self.store).unconfirmed, Some(u) if !u.is_empty())
    }

    /// A check has found every master trusted since this instance started.
    pub fn confirmed_once(&self) -> bool {
        self.confirmed_once.load(Ordering::Acquire)
    }

    /// The store epoch this instance last saw (None: never saw one).
    pub fn seen_epoch(&self) -> Option<String> {
        Self::lock(&self.store).epoch.clone()
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn effective(&self) -> SwitchValues {
        self.base
            .overlay(&Self::lock(&self.central))
            .overlay(&Self::lock(&self.local))
    }

    /// Everything an operator wants to see.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "effective": self.effective(),
            "central": *Self::lock(&self.central),
            "local": *Self::lock(&self.local),
            "store": *Self::lock(&self.store),
        })
    }

    /// Recompute the effective values and apply them if they changed.
    fn settle(&self, limits: &Limits, breaker: &Breaker) {
        let eff = self.effective();
        let mut applied = Self::lock(&self.applied);
        if *applied == eff {
            return;
        }
        if let Err(e) = eff.validate() {
            self.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "switch values refused; keeping the previous ones");
            return;
        }
        if let Some(p) = eff.pause_all {
            self.pause_all.store(p, Ordering::Relaxed);
        }
        if let Some(r) = eff.admission_ratio {
            self.admission_ppm
                .store((r * 1e6).round() as u32, Ordering::Relaxed);
        }
        if let Some(r) = eff.rates {
            if applied.rates != Some(r) {
                limits.set_rates(r);
            }
        }
        if let Some(m) = eff.redis_breaker.as_deref().and_then(Mode::parse) {
            breaker.set_mode(m);
        }
        if let Some(s) = eff.status_reads {
            self.status_reads.store(s as u8, Ordering::Relaxed);
        }
        if let Some(s) = eff.order_sink {
            self.order_sink.store(s as u8, Ordering::Relaxed);
        }
        if *applied != SwitchValues::default() {
            tracing::info!(switches = %serde_json::json!(eff), "switches changed");
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
        *applied = eff;
    }

    /// A central change this instance just wrote: take it at once (the others follow on
    /// their next poll).
    pub fn set_central(&self, v: &SwitchValues, limits: &Limits, breaker: &Breaker) {
        {
            let mut c = Self::lock(&self.central);
            *c = c.overlay(v);
        }
        self.settle(limits, breaker);
    }

    /// Set (or with `None`, clear) this instance's local override.
    pub fn set_local(&self, v: Option<&SwitchValues>, limits: &Limits, breaker: &Breaker) {
        {
            let mut l = Self::lock(&self.local);
            *l = match v {
                Some(v) => l.overlay(v),
                None => SwitchValues::default(),
            };
        }
        self.settle(limits, breaker);
    }

    /// One poll's answer, or `None` when the store did not answer.
    pub fn follow(&self, read: Option<StoreRead>, limits: &Limits, breaker: &Breaker) {
        let Some(StoreRead { epoch, switches }) = read else {
            Self::lock(&self.store).up = false;
            return;
        };
        let mut store = Self::lock(&self.store);
        store.up = true;
        store.last_ok_ms = now_ms();
        match (&store.epoch, &epoch) {
            (Some(_), None) => {
                if !store.lost {
                    tracing::error!("Redis answered without the store epoch: its data was lost. Selling stops until the store is rebuilt (runbooks/redis-data-lost.md)");
                }
                store.lost = true;
                self.store_lost.store(true, Ordering::Release);
                // Keep the last known switches: the empty hash says nothing about them.
                return;
            }
            (old, Some(e)) => {
                if store.lost || old.as_ref().is_some_and(|o| o != e) {
                    tracing::warn!(epoch = %e, "store epoch (re)appeared: the store was rebuilt; selling resumes");
                }
                store.lost = false;
                self.store_lost.store(false, Ordering::Release);
                store.epoch = Some(e.clone());
            }
            (None, None) => {}
        }
        drop(store);
        let (central, bad) = SwitchValues::from_fields(&switches);
        if !bad.is_empty() {
            self.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(fields = ?bad, "control hash holds values that are not valid switches; ignored");
        }
        *Self::lock(&self.central) = central;
        self.settle(limits, breaker);
    }

    pub fn render(&self, out: &mut String, limits: &Limits, breaker: &Breaker) {
        use std::fmt::Write;
        let r = limits.rates();
        let _ = writeln!(out, "# HELP seckill_switch_pause_all 1 while every sale is paused by the operator.\n# TYPE seckill_switch_pause_all gauge\nseckill_switch_pause_all {}", self.paused_all() as u8);
        let _ = writeln!(out, "# HELP seckill_switch_admission_ratio Fraction of token requests admitted.\n# TYPE seckill_switch_admission_ratio gauge\nseckill_switch_admission_ratio {}", self.admission_ppm.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "# HELP seckill_switch_rate Configured rate limits (requests/s and bursts).\n# TYPE seckill_switch_rate gauge");
        for (k, v) in [
            ("global_rps", r.global_rps),
            ("global_burst", r.global_burst),
            ("user_rps", r.user_rps),
            ("user_burst", r.user_burst),
            ("ip_rps", r.ip_rps),
            ("ip_burst", r.ip_burst),
        ] {
            let _ = writeln!(out, "seckill_switch_rate{{limit=\"{k}\"}} {v}");
        }
        let breaker_mode = breaker.mode();
        state_set(
            out,
            "seckill_switch_redis_breaker_mode",
            "The Redis breaker's mode (auto, or forced open or closed): 1 on the current one.",
            &[
                ("auto", breaker_mode == crate::breaker::Mode::Auto),
                ("open", breaker_mode == crate::breaker::Mode::ForceOpen),
                ("closed", breaker_mode == crate::breaker::Mode::ForceClosed),
            ],
        );
        let _ = writeln!(out, "# HELP seckill_redis_breaker_open 1 while the Redis breaker refuses calls.\n# TYPE seckill_redis_breaker_open gauge\nseckill_redis_breaker_open {}", breaker.is_open() as u8);
        let reads = self.status_reads();
        state_set(
            out,
            "seckill_switch_status_reads",
            "How order status reads are served (normal, cache, off): 1 on the current one.",
            &[
                ("normal", reads == StatusReads::Normal),
                ("cache", reads == StatusReads::Cache),
                ("off", reads == StatusReads::Off),
            ],
        );
        let sink = self.order_sink();
        state_set(out, "seckill_switch_order_sink", "Where accepted orders go (auto: Kafka, the spool on failure; kafka; spool): 1 on the current one.", &[("auto", sink == SinkMode::Auto), ("kafka", sink == SinkMode::Kafka), ("spool", sink == SinkMode::Spool)]);
        let local_set = !self.lock_local_empty();
        let _ = writeln!(out, "# HELP seckill_switch_local_override 1 while this instance has a local override.\n# TYPE seckill_switch_local_override gauge\nseckill_switch_local_override {}", local_set as u8);
        let store = Self::lock(&self.store).clone();
        let _ = writeln!(out, "# HELP seckill_switch_store_up 1 while the central switch store answers.\n# TYPE seckill_switch_store_up gauge\nseckill_switch_store_up {}", store.up as u8);
        let age = if store.last_ok_ms == 0 {
            -1.0
        } else {
            (now_ms() - store.last_ok_ms) as f64 / 1000.0
        };
        let _ = writeln!(out, "# HELP seckill_switch_store_age_seconds Seconds since the switch store last answered (-1 never).\n# TYPE seckill_switch_store_age_seconds gauge\nseckill_switch_store_age_seconds {age}");
        let _ = writeln!(out, "# HELP seckill_redis_data_lost 1 while Redis has lost its data and selling is stopped until the store is rebuilt.\n# TYPE seckill_redis_data_lost gauge\nseckill_redis_data_lost {}", self.store_lost() as u8);
        let unconfirmed = !matches!(&store.unconfirmed, Some(u) if u.is_empty());
        let _ = writeln!(out, "# HELP seckill_redis_store_unconfirmed 1 while a Redis master is not known to hold every acknowledged order (restarted or promoted, not yet reconciled): purchases are held.\n# TYPE seckill_redis_store_unconfirmed gauge\nseckill_redis_store_unconfirmed {}", unconfirmed as u8);
        let _ = writeln!(out, "# HELP seckill_switch_changes_total Switch changes applied by this instance.\n# TYPE seckill_switch_changes_total counter\nseckill_switch_changes_total {}", self.changes.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP seckill_switch_invalid_total Switch values refused (bad values in the store).\n# TYPE seckill_switch_invalid_total counter\nseckill_switch_invalid_total {}", self.invalid.load(Ordering::Relaxed));
    }

    fn lock_local_empty(&self) -> bool {
        *Self::lock(&self.local) == SwitchValues::default()
    }
}

/// An enumerated switch as a Prometheus state set: one series per value, labelled
/// `mode`, 1 on the current one and 0 on the others.
fn state_set(out: &mut String, name: &str, help: &str, states: &[(&str, bool)]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (mode, on) in states {
        let _ = writeln!(out, "{name}{{mode=\"{mode}\"}} {}", u8::from(*on));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fixture() -> (std::sync::Arc<Limits>, Breaker, Switches) {
        let rates = Rates {
            global_rps: 1,
            global_burst: 1,
            user_rps: 1,
            user_burst: 1,
            ip_rps: 1,
            ip_burst: 1,
        };
        let l = Limits::new(rates);
        let b = Breaker::new(1, Duration::from_millis(1));
        let base = SwitchValues {
            pause_all: Some(false),
            admission_ratio: Some(1.0),
            rates: Some(rates),
            order_sink: Some(SinkMode::Auto),
            redis_breaker: Some("auto".into()),
            status_reads: Some(StatusReads::Normal),
        };
        let s = Switches::new(base, &l, &b);
        (l, b, s)
    }

    /// A poll's answer: the `epoch` pair is the store epoch, the others switch fields.
    fn hash(pairs: &[(&str, &str)]) -> Option<StoreRead> {
        let mut switches: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let epoch = switches.remove("epoch");
        Some(StoreRead { epoch, switches })
    }

    #[test]
    fn a_bad_value_is_refused_before_anything_changes() {
        let bad = SwitchValues {
            pause_all: Some(true),
            admission_ratio: Some(1.5),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = SwitchValues {
            redis_breaker: Some("ajar".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn central_values_are_followed_and_local_overrides_win_until_cleared() {
        let (l, b, s) = fixture();
        s.follow(
            hash(&[
                ("epoch", "e1"),
                ("pause_all", "true"),
                ("admission_ratio", "0.25"),
                ("redis_breaker", "\"open\""),
            ]),
            &l,
            &b,
        );
        assert!(s.paused_all() && b.is_open());
        assert!(s.admit(249_999) && !s.admit(250_000));
        s.set_local(
            Some(&SwitchValues {
                pause_all: Some(false),
                ..Default::default()
            }),
            &l,
            &b,
        );
        assert!(!s.paused_all());
        // The central value changes; the override still wins.
        s.follow(
            hash(&[
                ("epoch", "e1"),
                ("pause_all", "true"),
                ("status_reads", "\"off\""),
            ]),
            &l,
            &b,
        );
        assert!(!s.paused_all());
        assert_eq!(s.status_reads(), StatusReads::Off);
        // A switch removed centrally falls back to the configured value.
        assert!(!b.is_open());
        s.set_local(None, &l, &b);
        assert!(s.paused_all());
    }

    #[test]
    fn last_known_values_are_kept_while_the_store_is_down_or_lost() {
        let (l, b, s) = fixture();
        s.follow(
            hash(&[("epoch", "e1"), ("order_sink", "\"spool\"")]),
            &l,
            &b,
        );
        assert_eq!(s.order_sink(), SinkMode::Spool);
        s.follow(None, &l, &b);
        assert_eq!(s.order_sink(), SinkMode::Spool);
        assert!(!s.store_lost());
        // Redis back, empty: data lost. Keep the switches, stop selling.
        s.follow(hash(&[]), &l, &b);
        assert!(s.store_lost());
        assert_eq!(s.order_sink(), SinkMode::Spool);
        // Rebuilt (new epoch): resume, follow the store again.
        s.follow(hash(&[("epoch", "e2")]), &l, &b);
        assert!(!s.store_lost());
        assert_eq!(s.order_sink(), SinkMode::Auto);
    }

    #[test]
    fn garbage_in_the_store_is_skipped_field_by_field() {
        let (l, b, s) = fixture();
        s.follow(
            hash(&[
                ("admission_ratio", "7"),
                ("pause_all", "true"),
                ("status_reads", "{"),
            ]),
            &l,
            &b,
        );
        assert!(s.paused_all());
        assert!(s.admit(999_999));
        assert_eq!(s.invalid.load(Ordering::Relaxed), 1);
        let odd = [("rates", "[]"), ("epoch", "x")];
        let (parsed, bad) = SwitchValues::from_fields(
            &odd.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(parsed, SwitchValues::default());
        assert_eq!(bad, vec!["rates".to_string()]);
    }

    #[test]
    fn fields_round_trip() {
        let v = SwitchValues {
            admission_ratio: Some(0.5),
            order_sink: Some(SinkMode::Kafka),
            ..Default::default()
        };
        let map: HashMap<String, String> = v
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(map.len(), 2);
        assert_eq!(SwitchValues::from_fields(&map).0, v);
    }
}
