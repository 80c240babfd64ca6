//! The invariants after a run, from three sources: the client's record of 202s, Redis,
//! and the order topic. Each check prints its figures; any failure fails the run.

use crate::buyer::LoadError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use seckill_common::order::{OrderEvent, OrderMessage};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub struct Check {
    pub name: String,
    pub pass: bool,
}

pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Invariant 6: no token bought twice (the tokens of the acknowledged orders).
    pub fn check_tokens(&mut self, tokens: &[String]) {
        let distinct: HashSet<&str> = tokens.iter().map(String::as_str).collect();
        let reused = tokens.len() - distinct.len();
        self.checks.push(Check {
            name: format!(
                "every token used at most once: {} tokens behind the 202s, {reused} used twice",
                tokens.len()
            ),
            pass: reused == 0,
        });
    }

    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }
    pub fn print(&self) {
        for c in &self.checks {
            println!("  {} {}", if c.pass { "PASS" } else { "FAIL" }, c.name);
        }
    }
}

/// Reserved-order events of `sale` in `topic`, read from the beginning with a fresh group until
/// `expect` arrived (then a short grace to catch duplicates) or `within` passed.
pub fn orders_in_topic(
    brokers: &str,
    topic: &str,
    sale: &str,
    expect: usize,
    within: Duration,
) -> Result<Vec<OrderMessage>, LoadError> {
    let group = format!("verify-{sale}-{}", std::process::id());
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| LoadError::Kafka(e.to_string()))?;
    c.subscribe(&[topic])
        .map_err(|e| LoadError::Kafka(e.to_string()))?;
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
            Some(Err(e)) => return Err(LoadError::Kafka(e.to_string())),
            None => {}
        }
        if out.len() >= expect && grace_end.is_none() {
            grace_end = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    Ok(out)
}

/// Order ids of `sale` in PostgreSQL, waiting (bounded) until at least `expect` are
/// there — the writer drains the topic asynchronously.
pub fn orders_in_db(
    database_url: &str,
    sale: &str,
    expect: usize,
    within: Duration,
) -> Result<Vec<String>, LoadError> {
    let mut db = postgres::Client::connect(database_url, postgres::NoTls)
        .map_err(|e| LoadError::Db(e.to_string()))?;
    let end = Instant::now() + within;
    loop {
        let ids: Vec<String> = db
            .query("SELECT order_id FROM orders WHERE sale = $1", &[&sale])
            .map_err(|e| LoadError::Db(e.to_string()))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if ids.len() >= expect || Instant::now() >= end {
            return Ok(ids);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The outcome of [`verify_sale`]: the checks, and how many orders each source held.
pub struct Verified {
    pub report: Report,
    pub in_topic: usize,
    pub in_db: usize,
}

/// Gather the three sources for `sale` — Redis, the order topic, PostgreSQL (waiting,
/// bounded, for the writer to drain) — and check every invariant against the client's
/// record: the acknowledged (order id, user) pairs and the tokens behind them.
pub fn verify_sale(
    stack: &seckill_common::stack::Stack,
    topic: &str,
    sale: &str,
    acked: &[(String, u64)],
    tokens: &[String],
) -> Result<Verified, LoadError> {
    let mut redis = stock::Stock::new(stock::connect(&stack.redis_url, Duration::from_secs(2))?);
    let state = redis.state(sale)?;
    let buyers = redis.buyers(sale)?;
    let in_topic = orders_in_topic(
        &stack.kafka_brokers,
        topic,
        sale,
        acked.len(),
        Duration::from_secs(60),
    )?;
    let in_db = orders_in_db(
        &stack.database_url,
        sale,
        acked.len(),
        Duration::from_secs(120),
    )?;
    let mut report = check(acked, &state, &buyers, &in_topic, Some(&in_db));
    report.check_tokens(tokens);
    Ok(Verified {
        report,
        in_topic: in_topic.len(),
        in_db: in_db.len(),
    })
}

/// Check the invariants for `sale` given the acknowledged (order id, user) pairs, what
/// Redis says, what the order topic holds and (when given) what PostgreSQL holds.
pub fn check(
    acked: &[(String, u64)],
    state: &stock::SaleState,
    buyers: &[(u64, i64)],
    in_topic: &[OrderMessage],
    in_db: Option<&[String]>,
) -> Report {
    let mut checks = Vec::new();
    let mut add = |name: String, pass: bool| checks.push(Check { name, pass });
    let taken = state.held + state.sold;
    add(
        format!("no oversell: {taken} reserved or sold of {}", state.initial),
        taken <= state.initial && state.remaining >= 0,
    );
    let over: Vec<_> = buyers
        .iter()
        .filter(|(_, n)| *n > state.per_user_limit)
        .collect();
    add(
        format!(
            "per-user limit {}: {} buyers over it",
            state.per_user_limit,
            over.len()
        ),
        over.is_empty(),
    );
    let mut per_user: HashMap<u64, i64> = HashMap::new();
    for (_, u) in acked {
        *per_user.entry(*u).or_default() += 1;
    }
    let acked_over = per_user
        .values()
        .filter(|n| **n > state.per_user_limit)
        .count();
    add(
        format!("per-user limit in the client's record: {acked_over} users over it"),
        acked_over == 0,
    );
    let acked_ids: HashSet<&str> = acked.iter().map(|(o, _)| o.as_str()).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for o in in_topic {
        *seen.entry(o.order_id.as_str()).or_default() += 1;
    }
    let missing = acked_ids
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .count();
    let dup = seen.values().filter(|n| **n > 1).count();
    add(
        format!(
            "every 202 is in the order topic exactly once: {} of {} found, {dup} duplicated",
            acked_ids.len() - missing,
            acked_ids.len()
        ),
        missing == 0 && dup == 0,
    );
    let unacked = seen.keys().filter(|id| !acked_ids.contains(*id)).count();
    add(
        format!("nothing in the topic that was not acknowledged: {unacked} unacknowledged"),
        unacked == 0,
    );
    add(
        format!(
            "conservation: remaining {} + held {} + sold {} = initial {}",
            state.remaining, state.held, state.sold, state.initial
        ),
        state.conserved(),
    );
    add(
        format!(
            "every acknowledged order holds stock: {} acknowledged, {} held or sold",
            acked_ids.len(),
            taken
        ),
        acked_ids.len() as i64 == taken,
    );
    if let Some(rows) = in_db {
        let rows_set: HashSet<&str> = rows.iter().map(String::as_str).collect();
        let missing = acked_ids
            .iter()
            .filter(|id| !rows_set.contains(*id))
            .count();
        add(
            format!(
                "every 202 is in PostgreSQL exactly once: {} of {} found, {} duplicate rows",
                acked_ids.len() - missing,
                acked_ids.len(),
                rows.len() - rows_set.len()
            ),
            missing == 0 && rows.len() == rows_set.len(),
        );
        let foreign = rows_set
            .iter()
            .filter(|id| !acked_ids.contains(*id))
            .count();
        add(
            format!("no order in PostgreSQL that was not acknowledged: {foreign}"),
            foreign == 0,
        );
    }
    Report { checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(remaining: i64, held: i64) -> stock::SaleState {
        stock::SaleState {
            initial: 2,
            per_user_limit: 1,
            start_ms: 0,
            end_ms: 1,
            paused: false,
            remaining,
            sold: 0,
            held,
            now_ms: 0,
        }
    }

    fn msg(id: &str, user: u64) -> OrderMessage {
        OrderMessage {
            event: OrderEvent::Reserved,
            order_id: id.into(),
            sale: "s".into(),
            user,
            units: 1,
            per_user_limit: 1,
            at_ms: 0,
            definition: None,
        }
    }

    #[test]
    fn a_token_behind_two_orders_fails() {
        let mut r = Report { checks: vec![] };
        r.check_tokens(&["a".to_string(), "b".to_string()]);
        assert!(r.ok());
        r.check_tokens(&["a".to_string(), "a".to_string()]);
        assert!(!r.ok());
    }

    #[test]
    fn a_clean_run_passes() {
        let acked = vec![("s-1".to_string(), 1), ("s-2".to_string(), 2)];
        let db = vec!["s-1".to_string(), "s-2".to_string()];
        let r = check(
            &acked,
            &state(0, 2),
            &[(1, 1), (2, 1)],
            &[msg("s-1", 1), msg("s-2", 2)],
            Some(&db),
        );
        assert!(r.ok());
    }

    #[test]
    fn lost_duplicated_or_foreign_orders_and_oversell_fail() {
        let acked = vec![("s-1".to_string(), 1), ("s-2".to_string(), 2)];
        let fails = |r: Report| r.checks.iter().filter(|c| !c.pass).count();
        let both = [msg("s-1", 1), msg("s-2", 2)];
        let ok_buyers = [(1, 1), (2, 1)];
        assert!(
            fails(check(
                &acked,
                &state(0, 2),
                &ok_buyers,
                &[msg("s-1", 1)],
                None
            )) > 0,
            "lost"
        );
        assert!(
            fails(check(
                &acked,
                &state(0, 2),
                &ok_buyers,
                &[msg("s-1", 1), msg("s-2", 2), msg("s-2", 2)],
                None
            )) > 0,
            "dup"
        );
        assert!(
            fails(check(
                &acked,
                &state(0, 2),
                &ok_buyers,
                &[msg("s-1", 1), msg("s-2", 2), msg("s-3", 3)],
                None
            )) > 0,
            "foreign"
        );
        assert!(
            fails(check(&acked, &state(-1, 3), &ok_buyers, &both, None)) > 0,
            "oversell"
        );
        assert!(
            fails(check(&acked, &state(0, 2), &[(1, 2)], &both, None)) > 0,
            "limit"
        );
        let db = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            fails(check(
                &acked,
                &state(0, 2),
                &ok_buyers,
                &both,
                Some(&db(&["s-1"]))
            )),
            1,
            "lost in the database"
        );
        assert_eq!(
            fails(check(
                &acked,
                &state(0, 2),
                &ok_buyers,
                &both,
                Some(&db(&["s-1", "s-2", "s-9"]))
            )),
            1,
            "unacknowledged row"
        );
    }
}
