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

/// Settle one expired order in Redis.
fn settle(stock: &mut Stock<redis::Connection>, order_id: &str) -> Result<Ended, WriterError> {
    match stock.settle(order_id, Settlement::Released) {
        Ok(_) | Err(StockError::AlreadyReleased) => Ok(Ended::Cancelled),
        Err(StockError::AlreadyPaid) => Ok(Ended::Paid),
        Err(StockError::NoOrder) => {
            // Redis does not know the order (its data was lost): set the row aside for
            // the reconciler instead of guessing.
            tracing::error!(
                order = order_id,
                "expired order unknown to Redis; set aside for reconciliation"
            );
            Ok(Ended::Unsettled)
        }
        Err(e) => Err(WriterError::Stock(e)),
    }
}

/// One scan.
pub fn scan_once(
    cfg: &Config,
    db: &mut postgres::Client,
    stock: &mut Stock<redis::Connection>,
) -> Result<db::Expired, WriterError> {
    db::expire_unpaid(db, cfg.payment_window_secs, cfg.cancel_batch.max(1), |id| {
        settle(stock, id)
    })
}

/// Scan every `cancel_scan_ms` until `stop`; failures are logged and retried next scan.
pub fn run(cfg: Config, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) {
    let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64);
    let mut conns: Option<(postgres::Client, Stock<redis::Connection>)> = None;
    let mut oversell_checked: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if conns.is_none() {
            conns = match (
                db::connect(&cfg.database_url, cfg.db_statement_timeout_ms),
                stock::connect(&cfg.redis_url, timeout),
            ) {
                (Ok(d), Ok(r)) => Some((d, Stock::new(r))),
                (Err(e), _) => {
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
                match db::oversold_sales(db) {
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
            match scan_once(&cfg, db, stock) {
                Ok(done) => {
                    metrics.expired(&done);
                    if done != db::Expired::default() {
                        tracing::info!(
                            done.cancelled,
                            done.paid,
                            done.unsettled,
                            "payment window scan"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "payment window scan failed; retrying");
                    conns = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(cfg.cancel_scan_ms.max(10) as u64));
    }
}
