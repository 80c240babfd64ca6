//! Orders that reach the writer after a reconcile that could not see them. A reconcile
//! (after Redis lost writes) puts back what Redis lacks from PostgreSQL and the topic as
//! they are when it starts; an order acknowledged before the loss but still in a
//! gateway's spool then (the broker was away too) arrives later, and its unit — lost with
//! Redis's tail — would sell again. Each reconcile marks the sales it looks at
//! (`sales.reconciled_at_ms`, written before it reads anything); the writer, after
//! writing a batch and before committing its offsets, puts back into Redis
//! (`Stock::reapply`, idempotent) every order of the batch accepted before its sale's
//! mark (within `CLOCK_MARGIN_MS`), as PostgreSQL now has it.
//!
//! Race-free: an order whose row the writer commits before the mark is committed is in
//! PostgreSQL when the reconcile reads the sale's orders (after marking), so the
//! reconcile sees it; a batch written after the mark reads it and is checked here.

use crate::WriterError;
use seckill_common::order::OrderMessage;
use std::collections::{BTreeMap, BTreeSet};
use stock::reconcile::Reapplied;
use stock::{RestoredOrder, Stock, StockError};

/// Gateways' and writers' clocks may differ by this much: an order accepted up to this
/// long after a mark (by its gateway's clock) is checked too (idempotent, so only a cost).
pub const CLOCK_MARGIN_MS: i64 = 10_000;

/// Mark `sales` reconciled at `at_ms` (never moving a mark back).
pub fn mark(db: &mut postgres::Client, sales: &[String], at_ms: i64) -> Result<(), WriterError> {
    db.execute(
        "INSERT INTO sales (sale, reconciled_at_ms) SELECT s, $2 FROM UNNEST($1::text[]) AS s
         ON CONFLICT (sale) DO UPDATE SET reconciled_at_ms =
           GREATEST(sales.reconciled_at_ms, EXCLUDED.reconciled_at_ms)",
        &[&sales, &at_ms],
    )?;
    Ok(())
}

/// The orders of `batch` accepted before their sale's reconcile mark, grouped by sale,
/// with their status in PostgreSQL now. Empty (one query) when no sale of the batch has
/// been reconciled since its orders were accepted.
pub fn late_orders(
    db: &mut postgres::Client,
    batch: &[&OrderMessage],
) -> Result<BTreeMap<String, Vec<RestoredOrder>>, WriterError> {
    let sales: Vec<String> = batch
        .iter()
        .map(|m| m.sale.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut marks: BTreeMap<String, i64> = BTreeMap::new();
    for row in db.query(
        "SELECT sale, reconciled_at_ms FROM sales WHERE sale = ANY($1) AND reconciled_at_ms IS NOT NULL",
        &[&sales],
    )? {
        marks.insert(row.get(0), row.get(1));
    }
    let ids: Vec<String> = batch
        .iter()
        .filter(|m| {
            marks
                .get(&m.sale)
                .is_some_and(|mark| m.at_ms <= mark + CLOCK_MARGIN_MS)
        })
        .map(|m| m.order_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out: BTreeMap<String, Vec<RestoredOrder>> = BTreeMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    for row in db.query(
        "SELECT order_id, sale, user_id, status FROM orders WHERE order_id = ANY($1)",
        &[&ids],
    )? {
        let status = crate::rebuild::restored_status(row.get(3));
        out.entry(row.get(1)).or_default().push(RestoredOrder {
            order_id: row.get(0),
            user: row.get::<_, i64>(2) as u64,
            status,
        });
    }
    Ok(out)
}

/// Put `late` back into Redis; rows the payment-window scan set aside meanwhile (it
/// found them unknown to Redis) go back to it. A sale Redis does not have is left to the
/// reconciler (a lost sale is restored whole, with its orders); an order id Redis could
/// not have handed out for its sale is skipped, not the rest of the sale's.
pub fn put_back(
    db: &mut postgres::Client,
    stock: &mut Stock<stock::Conn>,
    late: &BTreeMap<String, Vec<RestoredOrder>>,
) -> Result<Reapplied, WriterError> {
    let mut total = Reapplied::default();
    for (sale, orders) in late {
        let (good, bad): (Vec<RestoredOrder>, Vec<RestoredOrder>) =
            orders.iter().cloned().partition(|o| {
                stock::keys::seq_in_sale(sale, &o.order_id).is_ok_and(|seq| seq < 1 << 53)
            });
        if !bad.is_empty() {
            tracing::warn!(%sale, orders = bad.len(), first = %bad[0].order_id, "late orders not put back: ids Redis could not have handed out for this sale");
        }
        if good.is_empty() {
            continue;
        }
        match stock.reapply(sale, &good) {
            Ok(r) => {
                let ids: Vec<&str> = good.iter().map(|o| o.order_id.as_str()).collect();
                db.execute(
                    "UPDATE orders SET unsettled_reason = NULL WHERE order_id = ANY($1) AND status = 'reserved' AND unsettled_reason IS NOT NULL",
                    &[&ids],
                )?;
                if r.applied > 0 || r.conflicts > 0 {
                    tracing::warn!(%sale, applied = r.applied, conflicts = r.conflicts, "orders that reached the writer after the reconcile put back into Redis");
                }
                if r.conflicts > 0 {
                    tracing::error!(%sale, conflicts = r.conflicts, "late orders whose unit was sold again: the sale is oversold");
                }
                total.applied += r.applied;
                total.conflicts += r.conflicts;
            }
            Err(StockError::NoSale) => {
                tracing::warn!(%sale, orders = good.len(), "late orders of a sale Redis does not hold: left to the reconciler, which restores a lost sale with its orders");
            }
            // A malformed sale id was never sold by Redis: nothing to put back.
            Err(StockError::Invalid(e)) => {
                tracing::warn!(%sale, error = %e, "late orders not put back: not a sale or order Redis could hold")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}
