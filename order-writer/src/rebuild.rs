//! `order-writer rebuild-stock`, and the reconciler's work: bring Redis in line with
//! every acknowledged order, known from PostgreSQL and the events still in flight on the
//! order topic (read up to the high watermarks — from the beginning for rebuild-stock,
//! from the writers' committed offsets for the reconciler — so nothing acknowledged is
//! missed even while the writer lags).
//! - A sale Redis lost entirely is restored from its definition and its orders,
//!   atomically, never oversold; the store gets an epoch so the gateways resume.
//! - A sale Redis kept gets back what a partial loss took (`Stock::reapply`: an
//!   append-only file's last second, a failover's unreplicated writes).
//! - Then the masters' processes, read before anything else, are trusted
//!   (`stock::trust`): the gateways' purchases resume.
//!
//! Orders the payment-window scan set aside while Redis did not know them are handed
//! back to it.

use crate::config::Config;
use crate::db;
use crate::WriterError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use seckill_common::order::{OrderEvent, OrderMessage, SaleDefinition};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use stock::reconcile::{merge, Fact, Reapplied};
use stock::{Restored, RestoredStatus, SaleSpec, Stock, StockError};

/// What happened to one sale.
#[derive(Debug)]
pub enum Outcome {
    Restored {
        restored: Restored,
        from_db: usize,
        from_topic: usize,
        /// Orders PostgreSQL gained while the sale was rewritten, put back after it.
        reapplied: Reapplied,
    },
    /// Redis still has it; what it had lost (if anything) was put back.
    Present { reapplied: Reapplied },
    /// No definition anywhere: cannot be rebuilt (its orders stay in PostgreSQL).
    NoDefinition,
    /// It could not be reconciled (the error); it was paused so that it cannot sell
    /// what Redis may have lost, for an operator to look at.
    Paused(String),
    /// Lost from Redis and could not be restored (the error): it sells nothing until an
    /// operator restores it.
    NotRestored(String),
}

/// The advisory lock every reconcile holds: two writers' reconcilers (or one and a
/// `rebuild-stock`) never restore the same sale at once.
const RECONCILE_LOCK: i64 = 0x5ec_c111_0001;

/// Which sales a run looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `rebuild-stock`: every sale known (or these), lost or kept.
    All(&'a [String]),
    /// The reconciler: sales whose orders can still change (ending at or after this
    /// ms); a long-ended sale missing from Redis stays as it is.
    EndingAfter(i64),
}

/// `rebuild-stock [SALE...]`: every sale (or these).
pub fn rebuild(
    cfg: &Config,
    only: &[String],
    topic_within: Duration,
) -> Result<Vec<(String, Outcome)>, WriterError> {
    // Fenced when a master is untrusted (purchases held: the runbook's case for running
    // it by hand), as the reconciler's own pass.
    run(cfg, Scope::All(only), topic_within, true)
}

/// Bring the sales of `scope` in line with PostgreSQL and the topic, then trust the
/// masters' processes. A sale that fails is paused and the run goes on; if one cannot
/// even be paused, nothing is trusted (the gateways keep holding purchases) and the
/// error is returned. `fenced`: the masters are untrusted, so nothing buys, pays or
/// settles during the run (the gateways and the canceller hold), and a kept sale whose
/// ledger does not balance is restored whole; outside the fence it is paused instead
/// (units beyond the sale) or reported (units missing).
pub fn run(
    cfg: &Config,
    scope: Scope,
    topic_within: Duration,
    fenced: bool,
) -> Result<Vec<(String, Outcome)>, WriterError> {
    let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64);
    let mut stock = Stock::new(stock::connect(&cfg.redis_url, timeout)?);
    let mut db = db::connect(cfg)?;
    db::migrate_or_check(cfg, &mut db)?;
    // Held until `db` is dropped at the end of the run.
    db.execute("SELECT pg_advisory_lock($1)", &[&RECONCILE_LOCK])?;
    // The processes this run vouches for: read once the lock is held (another writer's
    // reconcile may have trusted the masters meanwhile) and before anything else, so a
    // process that starts later is not trusted on the strength of this run.
    let runs = stock::trust::RunWatch::new(&cfg.redis_url, timeout)?.runs(stock.conn_mut())?;
    // Fenced only while one of them is untrusted: the gateways hold purchases and
    // payments, the canceller settlements, until this run trusts them.
    let fenced = fenced && !stock::trust::untrusted(stock.conn_mut(), &runs)?.is_empty();

    let mut definitions = recorded_definitions(&mut db)?;
    // The reconciler needs only what PostgreSQL may not hold yet: from the writers'
    // committed offsets (committed only after the rows). rebuild-stock reads it all.
    let from_group = match scope {
        Scope::All(_) => None,
        Scope::EndingAfter(_) => Some(cfg.group_id.as_str()),
    };
    // Marked before anything is read from the topic: an order that reaches a writer
    // after this was not necessarily seen here, and the writer puts it back (`late`).
    let started = seckill_common::now_ms();
    let in_scope = |s: &String, d: &Option<SaleDefinition>| match scope {
        Scope::EndingAfter(ms) => d.as_ref().is_none_or(|d| d.end_ms >= ms),
        Scope::All(only) => only.is_empty() || only.contains(s),
    };
    let known: Vec<String> = definitions
        .iter()
        .filter(|(s, d)| in_scope(s, d))
        .map(|(s, _)| s.clone())
        .collect();
    crate::late::mark(&mut db, &known, started)?;
    let events = topic_events(cfg, from_group, topic_within)?;
    for m in &events {
        if m.event == OrderEvent::Opened {
            let slot = definitions.entry(m.sale.clone()).or_insert(None);
            if slot.is_none() {
                *slot = m.definition.clone();
            }
        } else {
            definitions.entry(m.sale.clone()).or_insert(None);
        }
    }
    // A sale whose definition was never recorded may still be selling: it is reconciled
    // too (put back what Redis lacks), never skipped while the masters are trusted
    // anyway; lost from Redis, it is reported (`NoDefinition`).
    definitions.retain(|s, d| in_scope(s, d));
    // Sales known only from the topic, marked too.
    let sales: Vec<String> = definitions.keys().cloned().collect();
    crate::late::mark(&mut db, &sales, started)?;

    let mut by_sale: HashMap<&str, Vec<&OrderMessage>> = HashMap::new();
    for m in &events {
        by_sale.entry(m.sale.as_str()).or_default().push(m);
    }
    let mut out = Vec::new();
    for (sale, def) in definitions {
        let events = by_sale.get(sale.as_str()).map_or(&[][..], Vec::as_slice);
        let outcome = match one_sale(&mut stock, &mut db, events, &sale, def, fenced) {
            Ok(o) => o,
            // PostgreSQL, the broker or Redis away for a moment says nothing about the
            // sale: the whole pass gives up (nothing is trusted; the reconciler tries again)
            // rather than leave a sound sale paused for an operator.
            Err(e) if transient(&e) => {
                tracing::warn!(%sale, error = %e, "reconcile pass interrupted; nothing trusted, tried again");
                return Err(e);
            }
            Err(e) => {
                tracing::error!(%sale, error = %e, "sale could not be reconciled; pausing it");
                match stock.set_paused(&sale, true) {
                    Ok(()) => Outcome::Paused(e.to_string()),
                    // Not in Redis: it cannot sell anything either.
                    Err(StockError::NoSale) => Outcome::NotRestored(e.to_string()),
                    Err(pe) => {
                        tracing::error!(%sale, error = %pe, "cannot pause the sale either: the store stays untrusted");
                        return Err(pe.into());
                    }
                }
            }
        };
        out.push((sale, outcome));
    }
    stock.mark_store()?;
    stock::trust::trust(stock.conn_mut(), &runs)?;
    Ok(out)
}

/// What an order row's status means for Redis (a live order holds its unit).
pub(crate) fn restored_status(status: &str) -> RestoredStatus {
    match status {
        "paid" => RestoredStatus::Paid,
        "cancelled" => RestoredStatus::Cancelled,
        _ => RestoredStatus::Reserved,
    }
}

/// Every sale PostgreSQL knows, with its definition where one was recorded.
fn recorded_definitions(
    db: &mut postgres::Client,
) -> Result<BTreeMap<String, Option<SaleDefinition>>, WriterError> {
    let mut definitions: BTreeMap<String, Option<SaleDefinition>> = BTreeMap::new();
    for row in db.query(
        "SELECT sale, initial_stock, per_user_limit, start_ms, end_ms, buckets, price_cents FROM sales",
        &[],
    )? {
        let sale: String = row.get(0);
        let def = match (
            row.get::<_, Option<i64>>(1),
            row.get::<_, Option<i64>>(2),
            row.get::<_, Option<i64>>(3),
            row.get::<_, Option<i64>>(4),
        ) {
            (Some(stock), Some(per_user_limit), Some(start_ms), Some(end_ms)) => {
                Some(SaleDefinition {
                    stock,
                    per_user_limit,
                    start_ms,
                    end_ms,
                    buckets: row
                        .get::<_, i32>(5)
                        .clamp(1, stock::keys::MAX_BUCKETS as i32)
                        as u32,
                    price_cents: row.get(6),
                })
            }
            _ => None,
        };
        definitions.insert(sale, def);
    }
    Ok(definitions)
}

/// Every order PostgreSQL holds for `sale`, as facts.
fn rows_of(db: &mut postgres::Client, sale: &str) -> Result<Vec<Fact>, WriterError> {
    Ok(db
        .query(
            "SELECT order_id, user_id, status FROM orders WHERE sale = $1",
            &[&sale],
        )?
        .iter()
        .map(|row| Fact::Row {
            order_id: row.get(0),
            user: row.get::<_, i64>(1) as u64,
            status: restored_status(row.get(2)),
        })
        .collect())
}

/// A fault of a dependency, not of the sale: PostgreSQL, the broker, or a Redis call
/// that failed or timed out.
fn transient(e: &WriterError) -> bool {
    matches!(
        e,
        WriterError::Db(_)
            | WriterError::Kafka(_)
            | WriterError::Io(_)
            | WriterError::Stock(StockError::Redis(_) | StockError::Timeout)
    )
}

/// Restore `sale` if Redis lost it, else put back what Redis lacks; restore it whole if
/// its ledger still does not balance and nothing buys, pays or settles in it (`fenced`).
fn one_sale(
    stock: &mut Stock<stock::Conn>,
    db: &mut postgres::Client,
    events: &[&OrderMessage],
    sale: &str,
    def: Option<SaleDefinition>,
    fenced: bool,
) -> Result<Outcome, WriterError> {
    // A bucket lost with a master restarted empty, the sale's meta kept: restored whole.
    let lost_buckets = stock.lost_buckets(sale)?;
    let present = match stock.state(sale) {
        Ok(_) => true,
        Err(StockError::NoSale) => false,
        Err(e) => return Err(e.into()),
    };
    if !present && def.is_none() {
        tracing::error!(%sale, "sale lost from Redis and no definition known: not rebuilt");
        return Ok(Outcome::NoDefinition);
    }
    if !lost_buckets.is_empty() && def.is_none() {
        return Err(WriterError::Unreconciled(format!(
            "buckets {lost_buckets:?} lost and no definition known to restore them from"
        )));
    }
    let mut facts = rows_of(db, sale)?;
    let from_db = facts.len();
    for m in events {
        match m.event {
            OrderEvent::Reserved => facts.push(Fact::Reserved {
                order_id: m.order_id.clone(),
                user: m.user,
            }),
            OrderEvent::Paid => facts.push(Fact::Paid {
                order_id: m.order_id.clone(),
                user: m.user,
            }),
            OrderEvent::Opened => {}
        }
    }
    let from_topic = facts.len() - from_db;
    let mut orders = merge(facts.clone());
    let unset = "UPDATE orders SET unsettled_reason = NULL WHERE sale = $1 AND status = 'reserved' AND unsettled_reason IS NOT NULL";
    if present && lost_buckets.is_empty() {
        // A bucketed sale's moves first (in flight, or half lost with a master), then what
        // Redis lost; then the ledger, which must balance before the masters are trusted.
        let moved = stock.reconcile_transfers(sale)?;
        if moved.rewithdrawn > 0 || moved.shortfall > 0 {
            tracing::warn!(%sale, rewithdrawn = moved.rewithdrawn, shortfall = moved.shortfall, deposited = moved.deposited, "moves between buckets half lost with a master, redone");
        }
        // Every token issued so far is void: one spent in the lost tail came back new,
        // and its order may reach this reconcile only later (a spool, a slow delivery).
        stock.void_tokens(sale)?;
        let reapplied = stock.reapply(sale, &orders)?;
        // Rows set aside as unknown to Redis go back to the scan, which settles them
        // with Redis as it is now (set aside again if Redis still lacks them).
        db.execute(unset, &[&sale])?;
        if reapplied.applied > 0 || reapplied.conflicts > 0 {
            tracing::warn!(%sale, applied = reapplied.applied, conflicts = reapplied.conflicts, "orders Redis had lost put back");
        }
        if reapplied.conflicts > 0 {
            tracing::error!(%sale, conflicts = reapplied.conflicts, "lost orders whose unit was sold again: the sale is oversold");
        }
        let ledger = stock.ledger(sale)?;
        if ledger.excess == 0 {
            if let Some(p) = def.as_ref().and_then(|d| d.price_cents) {
                // A restore cut short after its meta, before its price, left none.
                if stock.price(sale)?.is_none() {
                    stock.set_price(sale, p)?;
                }
            }
            return Ok(Outcome::Present { reapplied });
        }
        // Buckets from different moments (a master restarted from an old snapshot kept
        // buckets a later restore rewrote on the others), or a loss nothing above explains:
        // rebuilt whole from the orders, inside the fence only (nothing buys, pays or
        // settles meanwhile).
        if def.is_some() && fenced {
            tracing::error!(%sale, excess = ledger.excess, accounted = ledger.accounted, initial = ledger.initial, applied = reapplied.applied, conflicts = reapplied.conflicts, "stock not conserved once lost orders and moves were put back: the sale is restored whole");
        } else if ledger.excess > 0 {
            return Err(WriterError::Unreconciled(format!(
                "stock not conserved: {} units more than the sale's {} (accounted {}, in flight {})",
                ledger.excess, ledger.initial, ledger.accounted, ledger.in_flight
            )));
        } else {
            tracing::error!(%sale, missing = -ledger.excess, "stock not conserved: units missing (they will not sell until a reconcile under the fence restores the sale whole)");
            return Ok(Outcome::Present { reapplied });
        }
    }
    let Some(def) = def else {
        return Ok(Outcome::NoDefinition);
    };
    let spec = SaleSpec {
        stock: def.stock,
        per_user_limit: def.per_user_limit,
        start_ms: def.start_ms,
        end_ms: def.end_ms,
    };
    // What only Redis knows survives a whole restore too: a payment whose `paid` event
    // was not delivered. Read before anything is rewritten, from the buckets the sale was
    // defined with (a restore cut short left them without the sale's own meta).
    facts.extend(stock.redis_payments(sale, def.buckets)?);
    orders = merge(facts);
    let restored = if !present && lost_buckets.is_empty() {
        // A restore of a kept sale cut short after it removed the meta keeps the pause
        // its buckets recorded.
        let paused = stock.any_bucket_paused(sale, def.buckets)?;
        stock.restore_sale_with_buckets(sale, &spec, def.buckets, paused, &orders)?
    } else {
        if !lost_buckets.is_empty() {
            tracing::warn!(%sale, buckets = ?lost_buckets, "buckets lost with a master: the sale is restored whole");
        }
        stock.restore_whole(sale, &spec, def.buckets, &orders)?
    };
    // Its price too (written before the masters are trusted: no payment starts without it).
    if let Some(p) = def.price_cents {
        stock.set_price(sale, p)?;
    }
    // Orders a writer wrote while the sale was being rewritten (a late one's put-back
    // found no sale then): put back now, still inside the fence.
    let carried = stock.reapply(sale, &merge(rows_of(db, sale)?))?;
    db.execute(unset, &[&sale])?;
    tracing::info!(%sale, remaining = restored.remaining, held = restored.held, sold = restored.sold, "sale restored");
    Ok(Outcome::Restored {
        restored,
        from_db,
        from_topic,
        reapplied: carried,
    })
}

/// Every event on the order topic up to the high watermarks read at the start: from the
/// beginning, or from consumer group `from_group`'s committed offsets (read, never
/// joined nor committed).
fn topic_events(
    cfg: &Config,
    from_group: Option<&str>,
    within: Duration,
) -> Result<Vec<OrderMessage>, WriterError> {
    let committed: HashMap<i32, i64> = match from_group {
        None => HashMap::new(),
        Some(group) => committed_offsets(cfg, group)?,
    };
    let consumer: BaseConsumer = crate::consumer::client_config(cfg)?
        .set("group.id", format!("rebuild-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(&cfg.orders_topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut want: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) =
            consumer.fetch_watermarks(&cfg.orders_topic, p, Duration::from_secs(10))?;
        let from = committed.get(&p).copied().filter(|o| *o > low);
        if high > from.unwrap_or(low) {
            want.insert(p, high);
            let start = from.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&cfg.orders_topic, p, start)?;
        }
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while !want.is_empty() {
        if Instant::now() > deadline {
            return Err(WriterError::Config(format!(
                "the order topic was not read to its end within {within:?} ({} partitions left)",
                want.len()
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Ok(o) =
                    serde_json::from_slice::<OrderMessage>(m.payload().unwrap_or_default())
                {
                    out.push(o);
                }
                if want
                    .get(&m.partition())
                    .is_some_and(|high| m.offset() + 1 >= *high)
                {
                    want.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading the order topic"),
            None => {}
        }
    }
    Ok(out)
}

/// Consumer group `group`'s committed offsets on the order topic, by partition.
fn committed_offsets(cfg: &Config, group: &str) -> Result<HashMap<i32, i64>, WriterError> {
    let consumer: BaseConsumer = crate::consumer::client_config(cfg)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(&cfg.orders_topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(&cfg.orders_topic, p.id());
        }
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_fault_interrupts_the_pass_and_a_fault_of_the_sale_pauses_it() {
        assert!(transient(&WriterError::Stock(StockError::Timeout)));
        assert!(transient(&WriterError::Stock(StockError::Redis(
            "connection refused".into()
        ))));
        assert!(transient(&WriterError::Io(std::io::Error::other("x"))));
        assert!(!transient(&WriterError::Unreconciled(
            "not conserved".into()
        )));
        assert!(!transient(&WriterError::Stock(StockError::Invalid(
            "bad".into()
        ))));
    }
}
