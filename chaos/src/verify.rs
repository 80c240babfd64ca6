//! The invariants after a drill, from the client's record, Redis and PostgreSQL.
//!
//! Faults create two kinds of honest uncertainty, which are bounded rather than ignored:
//! an order request whose answer never reached the client (a gateway killed mid-request)
//! may still have been accepted and persisted, and a purchase whose Redis reply was lost
//! (a timeout) holds a unit with no order behind it until the writer's reservation sweep
//! releases it after the payment window (longer than any drill).

use crate::drill::{wait_for, Drill};
use crate::env::Env;
use crate::load::Load;
use crate::ChaosError;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub fn invariants(env: &Env, d: &mut Drill, sale: &str, load: &Load) -> Result<(), ChaosError> {
    let (acked, tokens) = load.acked();
    let unknown = load.unknown_outcomes();
    let all = load.window(0, u64::MAX);
    // Order requests that failed on a Redis fault or without an answer: each may have
    // left a unit reserved with no order (see the module docs).
    let faults =
        all.count("503 redis_unavailable") + all.count("io") + all.count("503 redis_data_lost");
    let mut redis = stock::Stock::new(stock::connect(&env.redis_url(), Duration::from_secs(2))?);
    let state = redis.state(sale)?;
    let buyers = redis.buyers(sale)?;

    let mut db = postgres::Client::connect(&env.database_url(), postgres::NoTls)
        .map_err(|e| ChaosError::Db(e.to_string()))?;
    // Wait for the writer to drain: at least every 202, and no change for 3 s.
    let t0 = Instant::now();
    let mut rows: Vec<(String, i64, String)> = Vec::new();
    let mut stable_since = Instant::now();
    let acked_ids: HashSet<&str> = acked.iter().map(|(o, _)| o.as_str()).collect();
    wait_for(Duration::from_secs(90), || {
        let now: Vec<(String, i64, String)> = match db.query(
            "SELECT order_id, user_id, status FROM orders WHERE sale = $1",
            &[&sale],
        ) {
            Ok(r) => r.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect(),
            Err(_) => return false,
        };
        if now.len() != rows.len() {
            stable_since = Instant::now();
        }
        rows = now;
        let have: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        acked_ids.iter().all(|id| have.contains(id))
            && stable_since.elapsed() > Duration::from_secs(3)
    });
    d.log(format!("PostgreSQL settled after {:.1} s: {} rows; {} acknowledged; {unknown} order requests without an answer", t0.elapsed().as_secs_f64(), rows.len(), acked.len()));

    let taken = state.held + state.sold;
    d.check(
        format!(
            "no oversell in Redis: {taken} held or sold of {}",
            state.initial
        ),
        taken <= state.initial && state.remaining >= 0,
    );
    let live: Vec<&(String, i64, String)> = rows.iter().filter(|r| r.2 != "cancelled").collect();
    d.check(
        format!(
            "no oversell in PostgreSQL: {} live orders of {}",
            live.len(),
            state.initial
        ),
        live.len() as i64 <= state.initial,
    );
    let over_redis = buyers
        .iter()
        .filter(|(_, n)| *n > state.per_user_limit)
        .count();
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    for r in &live {
        *per_user.entry(r.1).or_default() += 1;
    }
    let over_db = per_user
        .values()
        .filter(|n| **n > state.per_user_limit)
        .count();
    d.check(
        format!(
            "per-user limit {}: {over_redis} buyers over it in Redis, {over_db} in PostgreSQL",
            state.per_user_limit
        ),
        over_redis == 0 && over_db == 0,
    );
    let in_db: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let missing = acked_ids.iter().filter(|id| !in_db.contains(*id)).count();
    d.check(
        format!(
            "every 202 is in PostgreSQL (once: the order id is its key): {missing} of {} missing",
            acked_ids.len()
        ),
        missing == 0,
    );
    let unacked = in_db.iter().filter(|id| !acked_ids.contains(*id)).count() as u64;
    d.check(format!("no order in PostgreSQL the gateway did not accept: {unacked} not seen acknowledged, at most {unknown} possible (requests without an answer)"), unacked <= unknown);
    d.check(
        format!(
            "conservation: remaining {} + held {} + sold {} = initial {}",
            state.remaining, state.held, state.sold, state.initial
        ),
        state.conserved(),
    );
    let orphans = taken - live.len() as i64;
    d.check(format!("units held without an order: {orphans}, at most {faults} possible (purchases whose reply was lost; the writer's sweep releases them after the payment window)"), orphans >= 0 && orphans as u64 <= faults);
    let distinct: HashSet<&String> = tokens.iter().collect();
    d.check(
        format!(
            "every token used at most once: {} tokens behind {} acknowledgements",
            distinct.len(),
            tokens.len()
        ),
        distinct.len() == tokens.len(),
    );
    Ok(())
}
