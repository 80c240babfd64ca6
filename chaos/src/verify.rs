//! The invariants after a drill: [`loadtest::verify::check`] over what Redis and
//! PostgreSQL hold, with the bounds from the drill's own record of answers.
//!
//! What is drill-specific is only the gathering of the answers: which requests never got
//! one (a gateway killed mid-request: the order may still have been accepted and
//! persisted) and which failed after Redis may have reserved a unit (a lost reply, a
//! Redis fault: the unit stays held with no order until the writer's reservation sweep
//! releases it after the payment window, longer than any drill). The drills do not read
//! the order topic: a spool replay may legitimately send a message twice (the writer
//! absorbs it by order id), so PostgreSQL is their record of the orders.

use crate::drill::Drill;
use crate::env::Env;
use crate::load::{Load, Window};
use crate::ChaosError;
use loadtest::verify::{self, Record, Unanswered, Wait};
use std::time::{Duration, Instant};

pub fn invariants(env: &Env, d: &mut Drill, sale: &str, load: &Load) -> Result<(), ChaosError> {
    let (acked, tokens) = load.acked();
    let answers = Answers {
        acked: &acked,
        tokens: &tokens,
        all: &load.window(0, u64::MAX),
        unknown: load.unknown_outcomes(),
    };
    invariants_of(env, d, sale, "", &answers, Duration::from_secs(90))
}

/// What the load saw of one sale: its 202s (and the tokens behind them), every answer,
/// and the order requests whose outcome was never learned.
pub struct Answers<'a> {
    pub acked: &'a [(String, u64)],
    pub tokens: &'a [String],
    pub all: &'a Window,
    pub unknown: u64,
}

/// The invariants of `sale` from the answers the load got about it, each check's name
/// prefixed with `label`; waits up to `within` for the writer to drain.
pub fn invariants_of(
    env: &Env,
    d: &mut Drill,
    sale: &str,
    label: &str,
    answers: &Answers,
    within: Duration,
) -> Result<(), ChaosError> {
    let (acked, tokens, all) = (answers.acked, answers.tokens, answers.all);
    // A balancer's 502/504 relays a gateway that died or stalled mid-request: its order's
    // outcome is unknown like a broken connection's.
    // Order requests only: a token request creates no order and holds no unit.
    let relayed = all.count_orders("502") + all.count_orders("504");
    let unanswered = Unanswered {
        orders: answers.unknown + relayed,
        lost_replies: all.count_orders("503 redis_unavailable")
            + all.count_orders("io")
            + all.count_orders("503 redis_data_lost")
            + relayed,
    };
    // Wait for the writer to drain: at least every 202, and no change for 3 s.
    let t0 = Instant::now();
    let wait = Wait {
        within,
        settle: Duration::from_secs(3),
    };
    let seen = verify::gather(&env.stack(), None, sale, acked, wait)?;
    d.log(format!(
        "{label}PostgreSQL settled after {:.1} s: {} rows; {} acknowledged; {} order requests without a known outcome ({relayed} of them 502/504 from a balancer)",
        t0.elapsed().as_secs_f64(),
        seen.db.len(),
        acked.len(),
        unanswered.orders
    ));
    let record = Record { acked, tokens };
    for c in verify::check(&record, unanswered, &seen).checks {
        d.check(format!("{label}{}", c.name), c.pass);
    }
    Ok(())
}
