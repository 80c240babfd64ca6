//! The reconciler: every `reconcile_poll_ms`, check that every Redis master is a
//! process the store trusts to hold every acknowledged order (`stock::trust`). A master
//! that is not — Redis restarted from its append-only file, or a replica took over —
//! may have lost the last writes while keeping the sale, so the gateways hold purchases
//! until this loop has waited `reconcile_grace_ms` (deliveries under way reach the
//! topic), put back what Redis lacks from PostgreSQL and the topic (`rebuild`), and
//! trusted the new processes. A store without an epoch is left to the gateways (no sale:
//! nothing lost) or to the operator (`rebuild-stock` after a total loss).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::rebuild::{self, Outcome};
use crate::WriterError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reconcile may take to read the order topic to its end.
const TOPIC_WITHIN: Duration = Duration::from_secs(60);

/// `held` is set while a master is not trusted, or the masters cannot be read (the
/// canceller settles nothing meanwhile).
pub fn run(cfg: Config, metrics: Arc<Metrics>, stop: Arc<AtomicBool>, held: Arc<AtomicBool>) {
    if cfg.reconcile_poll_ms <= 0 {
        tracing::info!("reconciler off (reconcile_poll_ms = 0)");
        return;
    }
    let every = Duration::from_millis(cfg.reconcile_poll_ms as u64);
    let mut check: Option<Check> = None;
    // After a reconcile, one more pass once deliveries slower than the grace (up to the
    // producers' delivery timeout) have surely reached the topic.
    let mut late_pass: Option<Instant> = None;
    // Consecutive checks that could not read the masters.
    let mut unreadable: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if check.is_none() {
            check = Check::new(&cfg)
                .map_err(|e| tracing::debug!(error = %e, "reconciler: Redis"))
                .ok();
        }
        let read = match check.as_mut().map(Check::untrusted) {
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reconciler: cannot read the masters");
                check = None;
                None
            }
            None => None,
        };
        // Fail closed: masters that cannot be read may be mid-failover, and one may have
        // lost the release or payment a settlement would build on. Settlements wait until
        // a read finds every master trusted.
        let holding = read.as_ref().is_none_or(|u| !u.is_empty());
        held.store(holding, Ordering::Release);
        metrics.set_held(holding);
        unreadable = if read.is_none() { unreadable + 1 } else { 0 };
        if unreadable > 0 && unreadable.is_multiple_of(30) {
            tracing::warn!(
                checks = unreadable,
                "cannot read the Redis masters: payment-window expiry and the reservation sweep are held"
            );
        }
        let readable = read.is_some();
        let untrusted = read.unwrap_or_default();
        if readable && untrusted.is_empty() && late_pass.is_some_and(|t| Instant::now() >= t) {
            late_pass = None;
            match pass(&cfg, &metrics, false) {
                Ok(p) if p.applied > 0 || p.conflicts > 0 => {
                    tracing::warn!(
                        orders_put_back = p.applied,
                        conflicts = p.conflicts,
                        "late reconcile pass: orders that reached the topic after the first pass"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "late reconcile pass failed"),
            }
        }
        if !untrusted.is_empty() {
            tracing::warn!(masters = ?untrusted, grace_ms = cfg.reconcile_grace_ms, "Redis masters the store does not trust yet (restarted or promoted): reconciling them with PostgreSQL and the topic");
            sleep_unless_stopped(
                Duration::from_millis(cfg.reconcile_grace_ms.max(0) as u64),
                &stop,
            );
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let from = Instant::now();
            let result = pass(&cfg, &metrics, true);
            let counts: Vec<(&'static str, i64)> = match &result {
                Ok(p) => vec![
                    ("seckill.sales", p.sales as i64),
                    ("seckill.orders_put_back", p.applied as i64),
                    ("seckill.conflicts", p.conflicts as i64),
                ],
                Err(_) => vec![],
            };
            let error = result.as_ref().err().map(ToString::to_string);
            crate::trace::pass(
                &metrics.tracer,
                "reconciler.reconcile",
                from,
                &counts,
                error,
            );
            match result {
                Ok(p) => {
                    held.store(false, Ordering::Release);
                    metrics.set_held(false);
                    late_pass = Some(
                        Instant::now()
                            + Duration::from_millis(cfg.reconcile_late_pass_ms.max(0) as u64),
                    );
                    tracing::warn!(
                        sales = p.sales,
                        orders_put_back = p.applied,
                        conflicts = p.conflicts,
                        took_ms = p.took.as_millis() as u64,
                        "reconciled; the masters are trusted and purchases resume"
                    );
                }
                Err(e) => tracing::error!(error = %e, "reconcile failed; retrying"),
            }
        }
        sleep_unless_stopped(every, &stop);
    }
}

/// Sales whose orders can still change: open ones, and those within the payment window
/// (and the sweep's grace) after their end — a payment or cancellation may be lost.
fn scope(cfg: &Config) -> rebuild::Scope<'static> {
    let horizon = seckill_common::now_ms()
        - (cfg.payment_window_secs.max(0) + cfg.reservation_grace_secs.max(0)) * 1000;
    rebuild::Scope::EndingAfter(horizon)
}

/// What one reconcile pass did.
struct Pass {
    sales: usize,
    applied: u64,
    conflicts: u64,
    took: Duration,
}

/// One reconcile of the sales in scope, then trust (`rebuild::run`); `always` for the
/// pass over untrusted masters (fenced: nothing buys, pays or settles meanwhile), which
/// is always recorded in the metrics; the late pass only when it put something back or
/// met a conflict.
fn pass(cfg: &Config, metrics: &Metrics, always: bool) -> Result<Pass, WriterError> {
    let started = Instant::now();
    let done = rebuild::run(cfg, scope(cfg), TOPIC_WITHIN, always)?;
    let (applied, conflicts) = tally(&done);
    let p = Pass {
        sales: done.len(),
        applied,
        conflicts,
        took: started.elapsed(),
    };
    if always || applied > 0 || conflicts > 0 {
        metrics.reconciled(applied, conflicts, p.took);
    }
    Ok(p)
}

/// Orders put back and conflicts over a run's outcomes; sales that failed are logged.
fn tally(done: &[(String, Outcome)]) -> (u64, u64) {
    let (mut applied, mut conflicts) = (0, 0);
    for (sale, o) in done {
        match o {
            Outcome::Present { reapplied } | Outcome::Restored { reapplied, .. } => {
                applied += reapplied.applied;
                conflicts += reapplied.conflicts;
            }
            Outcome::Paused(e) | Outcome::NotRestored(e) => {
                tracing::error!(%sale, error = %e, "could not be reconciled: paused, it sells nothing until an operator looks (runbooks/redis-store-unconfirmed.md)")
            }
            _ => {}
        }
    }
    (applied, conflicts)
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
}

/// A connection and the masters' watch, kept between polls.
struct Check {
    conn: stock::Conn,
    watch: stock::trust::RunWatch,
}

impl Check {
    fn new(cfg: &Config) -> Result<Check, WriterError> {
        let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64);
        Ok(Check {
            conn: stock::connect(&cfg.redis_url, timeout)?,
            watch: stock::trust::RunWatch::new(&cfg.redis_url, timeout)?,
        })
    }

    /// Masters to reconcile: untrusted ones of a store that has an epoch.
    fn untrusted(&mut self) -> Result<Vec<String>, WriterError> {
        let runs = self.watch.runs(&mut self.conn)?;
        let untrusted = stock::trust::untrusted(&mut self.conn, &runs)?;
        let epoch = stock::control::epoch(&mut self.conn)?;
        if untrusted.is_empty() || epoch.is_none() {
            return Ok(Vec::new());
        }
        Ok(untrusted.into_iter().map(|r| r.to_string()).collect())
    }
}
