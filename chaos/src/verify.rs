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
use crate::load::Load;
use crate::ChaosError;
use loadtest::verify::{self, Record, Unanswered, Wait};
use std::time::{Duration, Instant};

pub fn invariants(env: &Env, d: &mut Drill, sale: &str, load: &Load) -> Result<(), ChaosError> {
    let (acked, tokens) = load.acked();
    let all = load.window(0, u64::MAX);
    // A balancer's 502/504 relays a gateway that died or stalled mid-request: its order's
    // outcome is unknown like a broken connection's.
    // Order requests only: a token request creates no order and holds no unit.
    let relayed = all.count_orders("502") + all.count_orders("504");
    let unanswered = Unanswered {
        orders: load.unknown_outcomes() + relayed,
        lost_replies: all.count_orders("503 redis_unavailable")
            + all.count_orders("io")
            + all.count_orders("503 redis_data_lost")
            + relayed,
    };
    // Wait for the writer to drain: at least every 202, and no change for 3 s.
    let t0 = Instant::now();
    let wait = Wait {
        within: Duration::from_secs(90),
        settle: Duration::from_secs(3),
    };
    let seen = verify::gather(&env.stack(), None, sale, &acked, wait)?;
    d.log(format!(
        "PostgreSQL settled after {:.1} s: {} rows; {} acknowledged; {} order requests without a known outcome ({relayed} of them 502/504 from a balancer)",
        t0.elapsed().as_secs_f64(),
        seen.db.len(),
        acked.len(),
        unanswered.orders
    ));
    let record = Record {
        acked: &acked,
        tokens: &tokens,
    };
    for c in verify::check(&record, unanswered, &seen).checks {
        d.check(c.name, c.pass);
    }
    Ok(())
}
