//! The payment window: unpaid orders older than `payment_window_secs` are cancelled and
//! their unit returned to the sale through the stock crate's `settle`. Redis decides
//! each order exactly once (pay and cancel racing: one wins); PostgreSQL follows.

use crate::config::Config;
use crate::db::{self, Ended};
use crate::metrics::Metrics;
use crate::WriterError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stock::{Settlement, Stock, StockError};

/// Longest run of back-to-back payment-window scans (each of `cancel_batch` rows).
const SCAN_BUDGET: Duration = Duration::from_secs(2);

/// Settle expired orders in Redis, all at once: how each ended.
fn settle(stock: &mut Stock<stock::Conn>, ids: &[String]) -> Result<Vec<Ended>, WriterError> {
    let outcomes = stock.settle_many(ids, Settlement::Released)?;
    ids.iter()
        .zip(outcomes)
        .map(|(id, o)| match o {
            Ok(_) | Err(StockError::AlreadyReleased) => Ok(Ended::Cancelled),
            Err(StockError::AlreadyPaid) => Ok(Ended::Paid),
            Err(StockError::NoOrder) => {
                // Redis does not know the order (its data was lost): set the row aside
                // for the reconciler instead of guessing.
                tracing::error!(
                    order = %id,
                    "expired order unknown to Redis; set aside for reconciliation"
                );
                Ok(Ended::Unsettled)
            }
            Err(e) => Err(WriterError::Stock(e)),
        })
        .collect()
}

/// Release in Redis every reservation older than the payment window plus the grace that
/// has no row in PostgreSQL, in the sales PostgreSQL knows that may still hold some (not
/// ended long ago): a reservation whose purchase reply was lost, or whose order was
/// refused and whose release failed. An order with a row is left to the payment-window
/// scan, which settles Redis and the row in one transaction, so a unit is never sold
/// again while its old row still reads `reserved`. (A row that lands after this looked —
/// an order delayed past window + grace, in a gateway's spool — is cancelled by the scan
/// as "already released"; a buyer's new order meanwhile is reconciled by the writer.)
/// Settling is exactly once, so racing the scan or the buyer's payment is safe.
pub fn sweep_reservations(
    cfg: &Config,
    db: &mut postgres::Client,
    stock: &mut Stock<stock::Conn>,
) -> Result<u64, WriterError> {
    let age = Duration::from_secs(
        (cfg.payment_window_secs.max(0) + cfg.reservation_grace_secs.max(0)) as u64,
    );
    let horizon = seckill_common::now_ms() - 2 * age.as_millis() as i64;
    let sales: Vec<String> = db
        .query(
            "SELECT sale FROM sales WHERE end_ms IS NULL OR end_ms > $1",
            &[&horizon],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut released = 0;
    for sale in sales {
        // A bucketed sale: complete any transfer between buckets cut short by a crash
        // (its units journaled in the source, not yet deposited). Exactly once.
        let recovered = stock.recover_transfers(&sale)?;
        if recovered > 0 {
            tracing::warn!(%sale, recovered, "interrupted stock transfers between buckets completed");
        }
        let mut cursor = 0;
        loop {
            let (next, mut ids) = stock.expired_reservations(&sale, age, cursor, 500)?;
            if !ids.is_empty() {
                let rows = db::with_rows(db, &ids)?;
                ids.retain(|id| !rows.contains(id));
            }
            for o in stock.settle_many(&ids, Settlement::Released)? {
                match o {
                    Ok(_) => released += 1,
                    Err(
                        StockError::AlreadyReleased | StockError::AlreadyPaid | StockError::NoOrder,
                    ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(released)
}

/// One scan.
pub fn scan_once(
    cfg: &Config,
    db: &mut postgres::Client,
    stock: &mut Stock<stock::Conn>,
) -> Result<db::Expired, WriterError> {
    db::expire_unpaid(
        db,
        cfg.payment_window_secs,
        cfg.cancel_batch.max(1),
        |ids| settle(stock, ids),
    )
}

/// Sales with more live orders in PostgreSQL than units: by the definition PostgreSQL
/// holds, or, for a sale whose definition never reached it, by Redis's (a sale neither
/// knows the size of is logged, not skipped silently).
pub fn oversold(
    db: &mut postgres::Client,
    stock: &mut Stock<stock::Conn>,
) -> Result<Vec<String>, WriterError> {
    let mut sales = db::oversold_sales(db)?;
    for (sale, live) in db::live_units_without_definition(db)? {
        match stock.state(&sale) {
            Ok(st) if live > st.initial => sales.push(sale),
            Ok(_) => {}
            Err(e) if !e.is_fault() => {
                tracing::warn!(%sale, live, error = %e, "oversell check: no definition in PostgreSQL or Redis")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sales)
}

/// Scan every `cancel_scan_ms` until `stop`; failures are logged and retried next scan.
/// `held`: set by the reconciler while a Redis master is not trusted; no release or
/// payment is settled meanwhile (Redis may have lost the order, or an earlier release).
pub fn run(cfg: Config, metrics: Arc<Metrics>, stop: Arc<AtomicBool>, held: Arc<AtomicBool>) {
    let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64);
    let mut conns: Option<(postgres::Client, Stock<stock::Conn>)> = None;
    let mut oversell_checked: Option<std::time::Instant> = None;
    let mut swept: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if conns.is_none() {
            conns = match (db::connect(&cfg), stock::connect(&cfg.redis_url, timeout)) {
                (Ok(d), Ok(r)) => Some((d, Stock::new(r))),
                (Err(e), _) => {
                    metrics.db_down();
                    tracing::warn!(error = %e, "canceller: database unreachable");
                    None
                }
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "canceller: redis unreachable");
                    None
                }
            };
        }
        if let Some((db, stock)) = conns.as_mut() {
            if oversell_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                oversell_checked = Some(std::time::Instant::now());
                match oversold(db, stock) {
                    Ok(sales) => {
                        if !sales.is_empty() {
                            tracing::error!(
                                ?sales,
                                "OVERSELL: sales with more live orders than stock"
                            );
                        }
                        metrics.set_oversold(sales.len() as i64);
                    }
                    Err(e) => tracing::warn!(error = %e, "oversell check failed"),
                }
            }
            if held.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(cfg.cancel_scan_ms.max(10) as u64));
                continue;
            }
            if swept.is_none_or(|t| {
                t.elapsed() >= Duration::from_millis(cfg.reservation_sweep_ms.max(100) as u64)
            }) {
                swept = Some(std::time::Instant::now());
                match sweep_reservations(&cfg, db, stock) {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(released = n, "expired reservations released in Redis");
                        }
                        metrics.swept(n);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reservation sweep failed; retrying next time")
                    }
                }
            }
            // A full page means a backlog (a big sale's window ending): keep going, page
            // after page, for up to `SCAN_BUDGET` before looking at the switches again.
            let began = std::time::Instant::now();
            loop {
                let from = std::time::Instant::now();
                match scan_once(&cfg, db, stock) {
                    Ok(done) => {
                        metrics.db_ok();
                        metrics.expired(&done);
                        let n = done.cancelled + done.paid + done.unsettled;
                        if n > 0 {
                            crate::trace::pass(
                                &metrics.tracer,
                                "canceller.scan",
                                from,
                                &[
                                    ("seckill.cancelled", done.cancelled as i64),
                                    ("seckill.paid", done.paid as i64),
                                    ("seckill.unsettled", done.unsettled as i64),
                                ],
                                None,
                            );
                            tracing::info!(
                                done.cancelled,
                                done.paid,
                                done.unsettled,
                                "payment window scan"
                            );
                        }
                        if n < cfg.cancel_batch.max(1) as u64
                            || began.elapsed() >= SCAN_BUDGET
                            || stop.load(Ordering::Relaxed)
                            || held.load(Ordering::Acquire)
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        crate::trace::pass(
                            &metrics.tracer,
                            "canceller.scan",
                            from,
                            &[],
                            Some(e.to_string()),
                        );
                        tracing::warn!(error = %e, "payment window scan failed; retrying");
                        conns = None;
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(cfg.cancel_scan_ms.max(10) as u64));
    }
}
