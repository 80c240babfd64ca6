//! Gathering: what Redis, the order topic and PostgreSQL hold for a sale — the only I/O
//! of the verification.

use super::{Row, Sources};
use crate::buyer::LoadError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use seckill_common::order::{OrderEvent, OrderMessage};
use seckill_common::stack::Stack;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long [`gather`] waits for the writer to drain into PostgreSQL: until every
/// acknowledged order is there and the row count did not change for `settle`, or
/// `within` passed.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub within: Duration,
    pub settle: Duration,
}

/// Gather the sources for `sale`: PostgreSQL first (waiting, bounded, for the writer to
/// drain every order in `acked`), then the order topic when `topic` is given, then Redis.
pub fn gather(
    stack: &Stack,
    topic: Option<&str>,
    sale: &str,
    acked: &[(String, u64)],
    wait: Wait,
) -> Result<Sources, LoadError> {
    let db = orders_in_db(stack, sale, acked, wait)?;
    let topic = match topic {
        Some(t) => Some(orders_in_topic(
            stack,
            t,
            sale,
            acked.len(),
            Duration::from_secs(60),
        )?),
        None => None,
    };
    let mut redis = stock::Stock::new(stock::connect(&stack.redis_url, Duration::from_secs(2))?);
    Ok(Sources {
        state: redis.state(sale)?,
        ledger: redis.ledger(sale)?,
        buyers: redis.buyers(sale)?,
        topic,
        db,
    })
}

/// Reserved-order events of `sale` in `topic`, read from the beginning with a fresh group until
/// `expect` arrived (then a short grace to catch duplicates) or `within` passed.
pub fn orders_in_topic(
    stack: &Stack,
    topic: &str,
    sale: &str,
    expect: usize,
    within: Duration,
) -> Result<Vec<OrderMessage>, LoadError> {
    let group = format!("verify-{sale}-{}", std::process::id());
    let c: BaseConsumer = stack
        .kafka_client()?
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    let mut out = Vec::new();
    let end = Instant::now() + within;
    let mut grace_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= end || grace_end.is_some_and(|g| now >= g) {
            break;
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Ok(o) =
                    serde_json::from_slice::<OrderMessage>(m.payload().unwrap_or_default())
                {
                    if o.sale == sale && o.event == OrderEvent::Reserved {
                        out.push(o);
                    }
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
        if out.len() >= expect && grace_end.is_none() {
            grace_end = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    Ok(out)
}

/// Every message of `topic` (a dead-letter topic, say), read from the beginning up to the
/// high watermarks taken when the read starts, or what came within `within`. A topic that
/// does not exist yet has no messages.
pub fn read_topic(stack: &Stack, topic: &str, within: Duration) -> Result<Vec<Vec<u8>>, LoadError> {
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = stack
        .kafka_client()?
        .set("group.id", format!("read-{topic}-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let meta = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut want = TopicPartitionList::new();
    let mut left = 0i64;
    let mut high = HashMap::new();
    for t in meta.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            if hi > lo {
                want.add_partition_offset(topic, p.id(), Offset::Offset(lo))?;
                left += hi - lo;
                high.insert(p.id(), hi);
            }
        }
    }
    let mut out = Vec::new();
    if left == 0 {
        return Ok(out);
    }
    c.assign(&want)?;
    let end = Instant::now() + within;
    while left > 0 && Instant::now() < end {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if high.get(&m.partition()).is_some_and(|h| m.offset() < *h) => {
                left -= 1;
                out.push(m.payload().unwrap_or_default().to_vec());
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) | None => {}
        }
    }
    if left > 0 {
        return Err(LoadError::TopicUnread {
            topic: topic.to_string(),
            left,
            within,
        });
    }
    Ok(out)
}

/// The orders of `sale` in PostgreSQL once every order in `acked` is there and the row
/// count held still for `wait.settle` (the writer drains the topic asynchronously), or
/// what is there when `wait.within` passed. Connection and query errors are retried until
/// then (a drill may just have restarted PostgreSQL).
pub fn orders_in_db(
    stack: &Stack,
    sale: &str,
    acked: &[(String, u64)],
    wait: Wait,
) -> Result<Vec<Row>, LoadError> {
    let end = Instant::now() + wait.within;
    let mut db: Option<postgres::Client> = None;
    let mut rows: Option<Vec<Row>> = None;
    let mut stable_since = Instant::now();
    loop {
        let read = match db.as_mut() {
            Some(c) => query_orders(c, sale),
            None => seckill_common::tls::connect_postgres(
                &stack.database_url,
                "",
                &stack.database_tls(),
                |_| {},
            )
            .map_err(LoadError::from)
            .and_then(|mut c| {
                let r = query_orders(&mut c, sale);
                db = Some(c);
                r
            }),
        };
        match read {
            Ok(now) => {
                if rows.as_ref().is_none_or(|r| r.len() != now.len()) {
                    stable_since = Instant::now();
                }
                let have: HashSet<&str> = now.iter().map(|r| r.order_id.as_str()).collect();
                let all_in = acked.iter().all(|(id, _)| have.contains(id.as_str()));
                let done = all_in && stable_since.elapsed() >= wait.settle;
                rows = Some(now);
                if done || Instant::now() >= end {
                    return Ok(rows.unwrap_or_default());
                }
            }
            Err(e) => {
                db = None;
                if Instant::now() >= end {
                    return match rows {
                        Some(r) => Ok(r),
                        None => Err(e),
                    };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn query_orders(db: &mut postgres::Client, sale: &str) -> Result<Vec<Row>, LoadError> {
    Ok(db
        .query(
            "SELECT order_id, user_id, units, status FROM orders WHERE sale = $1",
            &[&sale],
        )?
        .iter()
        .map(|r| Row {
            order_id: r.get(0),
            user: r.get::<_, i64>(1) as u64,
            units: i64::from(r.get::<_, i32>(2)),
            status: r.get(3),
        })
        .collect())
}
