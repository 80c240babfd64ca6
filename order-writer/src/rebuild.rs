//! `order-writer rebuild-stock`: after Redis lost its data, restore every sale that
//! PostgreSQL knows and Redis does not, from the sale's definition, its orders in
//! PostgreSQL and the events still in flight on the order topic (read from the
//! beginning up to the high watermarks, so nothing acknowledged is missed even while
//! the writer lags). Sales are restored atomically, never oversold, and the store gets
//! a new epoch so the gateways resume. Orders the payment-window scan set aside while
//! Redis did not know them are handed back to it.

use crate::config::Config;
use crate::db;
use crate::WriterError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use seckill_common::order::{OrderEvent, OrderMessage, SaleDefinition};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use stock::reconcile::{merge, Fact};
use stock::{Restored, RestoredStatus, SaleSpec, Stock, StockError};

/// What happened to one sale.
#[derive(Debug)]
pub enum Outcome {
    Restored {
        restored: Restored,
        from_db: usize,
        from_topic: usize,
    },
    /// Redis still has it: left alone.
    Present,
    /// No definition anywhere: cannot be rebuilt (its orders stay in PostgreSQL).
    NoDefinition,
}

pub fn rebuild(
    cfg: &Config,
    only: &[String],
    topic_within: Duration,
) -> Result<Vec<(String, Outcome)>, WriterError> {
    let mut db = db::connect(&cfg.database_url, cfg.db_statement_timeout_ms)?;
    db::migrate(&mut db)?;
    let mut stock = Stock::new(stock::connect(
        &cfg.redis_url,
        Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64),
    )?);

    let mut definitions: BTreeMap<String, Option<SaleDefinition>> = BTreeMap::new();
    for row in db.query(
        "SELECT sale, initial_stock, per_user_limit, start_ms, end_ms FROM sales",
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
                })
            }
            _ => None,
        };
        definitions.insert(sale, def);
    }
    let events = topic_events(cfg, topic_within)?;
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
    if !only.is_empty() {
        definitions.retain(|s, _| only.contains(s));
    }

    let mut out = Vec::new();
    for (sale, def) in definitions {
        match stock.state(&sale) {
            Ok(_) => {
                // Still there; a bucketed sale's interrupted transfers are completed.
                stock.recover_transfers(&sale)?;
                out.push((sale, Outcome::Present));
                continue;
            }
            Err(StockError::NoSale) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(def) = def else {
            tracing::error!(%sale, "sale lost from Redis and no definition known: not rebuilt");
            out.push((sale, Outcome::NoDefinition));
            continue;
        };
        let mut facts = Vec::new();
        for row in db.query(
            "SELECT order_id, user_id, status FROM orders WHERE sale = $1",
            &[&sale],
        )? {
            let status = match row.get::<_, &str>(2) {
                "paid" => RestoredStatus::Paid,
                "cancelled" => RestoredStatus::Cancelled,
                _ => RestoredStatus::Reserved,
            };
            facts.push(Fact::Row {
                order_id: row.get(0),
                user: row.get::<_, i64>(1) as u64,
                status,
            });
        }
        let from_db = facts.len();
        for m in events.iter().filter(|m| m.sale == sale) {
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
        let orders = merge(facts);
        let spec = SaleSpec {
            stock: def.stock,
            per_user_limit: def.per_user_limit,
            start_ms: def.start_ms,
            end_ms: def.end_ms,
        };
        let restored = stock.restore_sale(&sale, &spec, false, &orders)?;
        db.execute("UPDATE orders SET unsettled_reason = NULL WHERE sale = $1 AND status = 'reserved' AND unsettled_reason IS NOT NULL", &[&sale])?;
        tracing::info!(%sale, remaining = restored.remaining, held = restored.held, sold = restored.sold, "sale restored");
        out.push((
            sale,
            Outcome::Restored {
                restored,
                from_db,
                from_topic,
            },
        ));
    }
    stock.mark_store()?;
    Ok(out)
}

/// Every event on the order topic, from the beginning to the high watermarks read at the
/// start (no consumer group: nothing is committed).
fn topic_events(cfg: &Config, within: Duration) -> Result<Vec<OrderMessage>, WriterError> {
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
        if high > low {
            want.insert(p, high);
            tpl.add_partition_offset(&cfg.orders_topic, p, Offset::Beginning)?;
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
