//! Checking: one pure function of the sources, the client's record and the bounds, one
//! function per invariant family.

use super::{Check, Record, Report, Row, Sources, Unanswered};
use std::collections::{HashMap, HashSet};

/// Every invariant of one sale, from the sources, the client's record and the bounds for
/// the answers it never got. Pure: the same data always gives the same report.
pub fn check(record: &Record, unanswered: Unanswered, seen: &Sources) -> Report {
    let f = Facts::new(record, unanswered, seen);
    let mut checks = Vec::new();
    checks.extend(no_oversell(&f));
    checks.extend(per_user_limit(&f));
    checks.extend(every_202_in_topic(&f));
    checks.extend(conservation(&f));
    checks.extend(stock_held_by_orders(&f));
    checks.extend(every_202_in_postgres(&f));
    checks.extend(tokens_used_once(&f));
    Report { checks }
}

const NO_ANSWER: &str = "order requests without an answer";

/// ", at most N possible (…)" when a bound allows some; nothing when it is zero.
fn bound(n: u64, why: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", at most {n} possible ({why})")
    }
}

fn verdict(name: String, pass: bool) -> Check {
    Check { name, pass }
}

/// What the checks read, indexed once: the sources, the record and the bounds.
struct Facts<'a> {
    record: &'a Record<'a>,
    unanswered: Unanswered,
    seen: &'a Sources,
    /// The acknowledged order ids.
    acked: HashSet<&'a str>,
    /// One acknowledgement per order id (its user: the first that was told), and how
    /// many order ids were acknowledged to another user too.
    owner: HashMap<&'a str, u64>,
    misowned: usize,
    /// PostgreSQL, once per order id.
    rows: HashMap<&'a str, &'a Row>,
    live: Vec<&'a Row>,
    /// Units reserved or sold in Redis.
    taken: i64,
}

impl<'a> Facts<'a> {
    fn new(record: &'a Record<'a>, unanswered: Unanswered, seen: &'a Sources) -> Facts<'a> {
        let acked: HashSet<&str> = record.acked.iter().map(|(o, _)| o.as_str()).collect();
        // A purchase retried with its token is answered 202 with the same order again: one
        // acknowledgement per order id (its user: the first that was told).
        let mut owner: HashMap<&str, u64> = HashMap::new();
        let mut misowned = 0;
        for (o, u) in record.acked {
            if *owner.entry(o.as_str()).or_insert(*u) != *u {
                misowned += 1;
            }
        }
        // PostgreSQL, once per order id (the primary key: a duplicate would be a bug of its own).
        let mut rows: HashMap<&str, &Row> = HashMap::new();
        for r in &seen.db {
            rows.entry(r.order_id.as_str()).or_insert(r);
        }
        let live: Vec<&Row> = rows.values().copied().filter(|r| r.live()).collect();
        Facts {
            record,
            unanswered,
            seen,
            acked,
            owner,
            misowned,
            rows,
            live,
            taken: seen.state.held + seen.state.sold,
        }
    }
}

/// 1. No oversell, in Redis and in PostgreSQL.
fn no_oversell(f: &Facts) -> Vec<Check> {
    let state = &f.seen.state;
    let taken = f.taken;
    let live_units: i64 = f.live.iter().map(|r| r.units).sum();
    vec![
        verdict(
            format!("no oversell: {taken} reserved or sold of {}", state.initial),
            taken <= state.initial && state.remaining >= 0,
        ),
        verdict(
            format!(
                "no oversell in PostgreSQL: {live_units} units in live orders of {}",
                state.initial
            ),
            live_units <= state.initial,
        ),
    ]
}

/// 2. Per-user limit, in Redis, PostgreSQL and the client's record.
fn per_user_limit(f: &Facts) -> Vec<Check> {
    let limit = f.seen.state.per_user_limit;
    let misowned = f.misowned;
    let mut checks = Vec::new();
    let over = f.seen.buyers.iter().filter(|(_, n)| *n > limit).count();
    checks.push(verdict(
        format!("per-user limit {limit}: {over} buyers over it"),
        over == 0,
    ));
    let over = users_over(f.live.iter().map(|r| (r.user, r.units)), limit);
    checks.push(verdict(
        format!("per-user limit in PostgreSQL: {over} users over it"),
        over == 0,
    ));
    let over = users_over(f.owner.values().map(|u| (*u, 1)), limit);
    checks.push(verdict(
        format!(
            "per-user limit in the client's record: {over} users over it{}",
            if misowned == 0 {
                String::new()
            } else {
                format!(", {misowned} order ids acknowledged to two users")
            }
        ),
        over == 0 && misowned == 0,
    ));
    checks
}

/// 3 and 4 in the topic: every 202 at least once (a retried purchase and a spool
/// replay send an order again; the writer keeps one row per id), nothing else
/// beyond the bound. None when the topic was not read.
fn every_202_in_topic(f: &Facts) -> Vec<Check> {
    let Some(topic) = &f.seen.topic else {
        return Vec::new();
    };
    let acked = &f.acked;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for o in topic {
        *seen.entry(o.order_id.as_str()).or_default() += 1;
    }
    let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let resent = seen.values().filter(|n| **n > 1).count();
    let unacked = seen.keys().filter(|id| !acked.contains(*id)).count() as u64;
    vec![
        verdict(
            format!(
                "every 202 is in the order topic: {} of {} found ({resent} sent more than once)",
                acked.len() - missing,
                acked.len()
            ),
            missing == 0,
        ),
        verdict(
            format!(
                "nothing in the topic that was not acknowledged: {unacked} unacknowledged{}",
                bound(f.unanswered.orders, NO_ANSWER)
            ),
            unacked <= f.unanswered.orders,
        ),
    ]
}

/// 5. Conservation (the sum only: a negative remaining is an oversell, above).
fn conservation(f: &Facts) -> Vec<Check> {
    let (state, ledger) = (&f.seen.state, &f.seen.ledger);
    vec![
        verdict(
            format!(
                "conservation: remaining {} + held {} + sold {} = initial {}",
                state.remaining, state.held, state.sold, state.initial
            ),
            state.remaining + state.held + state.sold == state.initial,
        ),
        // Each bucket against its own history, every move matched on both sides.
        verdict(
            format!(
                "conservation: stock ledger balanced in every bucket (excess {}, in flight {})",
                ledger.excess, ledger.in_flight
            ),
            ledger.excess == 0,
        ),
    ]
}

/// Every order that should hold stock does, and no more units are held than orders
/// explain beyond the bound.
fn stock_held_by_orders(f: &Facts) -> Vec<Check> {
    let (acked, rows, taken) = (&f.acked, &f.rows, f.taken);
    // Every order that should hold stock: the acknowledged ones not cancelled in PostgreSQL
    // (their units there; one, as every order the gateway takes, when not there), and the
    // live orders in PostgreSQL nobody acknowledged.
    let acked_units: i64 = acked
        .iter()
        .map(|id| {
            rows.get(id)
                .map_or(1, |r| if r.live() { r.units } else { 0 })
        })
        .sum();
    let cancelled = acked
        .iter()
        .filter(|id| rows.get(*id).is_some_and(|r| !r.live()))
        .count();
    let unacked_live: Vec<&&Row> = f
        .live
        .iter()
        .filter(|r| !acked.contains(r.order_id.as_str()))
        .collect();
    let holding = acked_units + unacked_live.iter().map(|r| r.units).sum::<i64>();
    let held = verdict(
        format!(
            "every acknowledged order holds stock: {} acknowledged{}{}, {taken} held or sold",
            acked.len(),
            if cancelled > 0 {
                format!(" ({cancelled} cancelled)")
            } else {
                String::new()
            },
            if unacked_live.is_empty() {
                String::new()
            } else {
                format!(" and {} unacknowledged in PostgreSQL", unacked_live.len())
            }
        ),
        holding <= taken,
    );
    // Fewer units than orders fails the check above; more, beyond the bound, fails this one.
    let orphans = taken - holding;
    let lost = f.unanswered.lost_replies;
    let orphaned = verdict(
        format!(
            "units held without an order: {orphans}{}",
            bound(
                lost,
                "purchases whose reply was lost; the writer's sweep releases them after the payment window"
            )
        ),
        orphans <= lost as i64,
    );
    vec![held, orphaned]
}

/// 3 and 4 in PostgreSQL: every 202 exactly once, nothing else beyond the bound.
fn every_202_in_postgres(f: &Facts) -> Vec<Check> {
    let (acked, rows) = (&f.acked, &f.rows);
    let missing = acked.iter().filter(|id| !rows.contains_key(*id)).count();
    let dup_rows = f.seen.db.len() - rows.len();
    let foreign = rows.keys().filter(|id| !acked.contains(*id)).count() as u64;
    vec![
        verdict(
            format!(
                "every 202 is in PostgreSQL exactly once: {} of {} found, {dup_rows} duplicate rows",
                acked.len() - missing,
                acked.len()
            ),
            missing == 0 && dup_rows == 0,
        ),
        verdict(
            format!(
                "no order in PostgreSQL that was not acknowledged: {foreign}{}",
                bound(f.unanswered.orders, NO_ANSWER)
            ),
            foreign <= f.unanswered.orders,
        ),
    ]
}

/// Invariant 6, tokens: none behind two different acknowledged orders (a retry with a token is
/// answered with the order it made: one use). `tokens[i]` is behind `acked[i]`.
fn tokens_used_once(f: &Facts) -> Vec<Check> {
    let mut order_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (t, (o, _)) in f.record.tokens.iter().zip(f.record.acked) {
        order_of.entry(t.as_str()).or_default().insert(o.as_str());
    }
    let reused = order_of.values().filter(|o| o.len() > 1).count();
    vec![verdict(
        format!(
            "every token used at most once: {} tokens behind the 202s, {reused} used twice",
            order_of.len()
        ),
        reused == 0,
    )]
}

/// How many users hold more than `limit` units, from (user, units) pairs.
fn users_over(units: impl Iterator<Item = (u64, i64)>, limit: i64) -> usize {
    let mut per_user: HashMap<u64, i64> = HashMap::new();
    for (u, n) in units {
        *per_user.entry(u).or_default() += n;
    }
    per_user.values().filter(|n| **n > limit).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_common::order::{OrderEvent, OrderMessage};

    /// Initial 3, limit 1, two orders (s-1 of user 1, s-2 of user 2) acknowledged,
    /// in the topic, in PostgreSQL, holding two units in Redis.
    struct Case {
        acked: Vec<(String, u64)>,
        tokens: Vec<String>,
        unanswered: Unanswered,
        seen: Sources,
    }

    fn row(id: &str, user: u64, status: &str) -> Row {
        Row {
            order_id: id.into(),
            user,
            units: 1,
            status: status.into(),
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

    fn clean() -> Case {
        Case {
            acked: vec![("s-1".into(), 1), ("s-2".into(), 2)],
            tokens: vec!["t1".into(), "t2".into()],
            unanswered: Unanswered::NONE,
            seen: Sources {
                state: stock::SaleState {
                    initial: 3,
                    per_user_limit: 1,
                    start_ms: 0,
                    end_ms: 1,
                    paused: false,
                    remaining: 1,
                    sold: 0,
                    held: 2,
                    now_ms: 0,
                },
                ledger: stock::ledger::Ledger {
                    initial: 3,
                    accounted: 3,
                    in_flight: 0,
                    excess: 0,
                },
                buyers: vec![(1, 1), (2, 1)],
                topic: Some(vec![msg("s-1", 1), msg("s-2", 2)]),
                db: vec![row("s-1", 1, "reserved"), row("s-2", 2, "reserved")],
            },
        }
    }

    impl Case {
        fn report(&self) -> Report {
            let record = Record {
                acked: &self.acked,
                tokens: &self.tokens,
            };
            check(&record, self.unanswered, &self.seen)
        }
        /// The failing checks, by name up to the colon.
        fn failing(&self) -> Vec<String> {
            self.report()
                .checks
                .iter()
                .filter(|c| !c.pass)
                .map(|c| c.name.split(':').next().unwrap_or_default().to_string())
                .collect()
        }
        fn held(mut self, remaining: i64, held: i64) -> Case {
            self.seen.state.remaining = remaining;
            self.seen.state.held = held;
            self
        }
        fn bounds(mut self, orders: u64, lost_replies: u64) -> Case {
            self.unanswered = Unanswered {
                orders,
                lost_replies,
            };
            self
        }
    }

    fn fails_only(case: Case, name: &str) {
        assert_eq!(
            case.failing(),
            vec![name.to_string()],
            "expected only {name:?}"
        );
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let r = clean().report();
        assert!(r.ok());
        let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "no oversell: 2 reserved or sold of 3",
                "no oversell in PostgreSQL: 2 units in live orders of 3",
                "per-user limit 1: 0 buyers over it",
                "per-user limit in PostgreSQL: 0 users over it",
                "per-user limit in the client's record: 0 users over it",
                "every 202 is in the order topic: 2 of 2 found (0 sent more than once)",
                "nothing in the topic that was not acknowledged: 0 unacknowledged",
                "conservation: remaining 1 + held 2 + sold 0 = initial 3",
                "conservation: stock ledger balanced in every bucket (excess 0, in flight 0)",
                "every acknowledged order holds stock: 2 acknowledged, 2 held or sold",
                "units held without an order: 0",
                "every 202 is in PostgreSQL exactly once: 2 of 2 found, 0 duplicate rows",
                "no order in PostgreSQL that was not acknowledged: 0",
                "every token used at most once: 2 tokens behind the 202s, 0 used twice",
            ]
        );
    }

    #[test]
    fn without_the_topic_its_checks_are_left_out() {
        let mut c = clean();
        c.seen.topic = None;
        let r = c.report();
        assert!(r.ok());
        assert_eq!(r.checks.len(), 12);
        assert!(!r.checks.iter().any(|c| c.name.contains("topic")));
    }

    #[test]
    fn oversell_in_redis_fails_only_that_check() {
        // Four units taken of three; the two without an order are within the bound.
        fails_only(clean().held(-1, 4).bounds(0, 2), "no oversell");
    }

    #[test]
    fn oversell_in_postgresql_fails_it_and_the_stock_behind_the_orders() {
        // More live units in PostgreSQL than the sale has, while Redis holds at most the
        // sale's units, means some live order holds no unit: both checks must fail.
        let mut c = clean();
        c.seen.state.per_user_limit = 5;
        c.seen.db[0].units = 3;
        assert_eq!(
            c.failing(),
            [
                "no oversell in PostgreSQL",
                "every acknowledged order holds stock"
            ]
        );
    }

    #[test]
    fn per_user_limit_fails_in_each_source_alone() {
        let mut c = clean();
        c.seen.buyers = vec![(1, 2), (2, 1)];
        fails_only(c, "per-user limit 1");

        let mut c = clean();
        c.seen.db = vec![row("s-1", 1, "reserved"), row("s-2", 1, "reserved")];
        fails_only(c, "per-user limit in PostgreSQL");

        let mut c = clean();
        c.acked = vec![("s-1".into(), 1), ("s-2".into(), 1)];
        fails_only(c, "per-user limit in the client's record");
    }

    #[test]
    fn a_202_lost_in_the_topic_fails_only_that_check_and_a_resend_passes() {
        let mut c = clean();
        c.seen.topic = Some(vec![msg("s-1", 1)]);
        fails_only(c, "every 202 is in the order topic");

        // Sent twice (a retry, a spool replay): the writer keeps one row; not a failure.
        let mut c = clean();
        c.seen.topic = Some(vec![msg("s-1", 1), msg("s-2", 2), msg("s-2", 2)]);
        assert!(c.failing().is_empty(), "{:?}", c.failing());
    }

    #[test]
    fn unacknowledged_orders_in_the_topic_are_bounded_by_requests_without_an_answer() {
        let with = |n: usize| {
            let mut c = clean();
            let topic = c.seen.topic.as_mut().unwrap();
            for i in 0..n {
                topic.push(msg(&format!("s-{}", 10 + i), 10 + i as u64));
            }
            c
        };
        fails_only(with(1), "nothing in the topic that was not acknowledged");
        assert!(with(1).bounds(1, 0).report().ok());
        fails_only(
            with(2).bounds(1, 0),
            "nothing in the topic that was not acknowledged",
        );
        let r = with(1).bounds(1, 0).report();
        assert!(r.checks.iter().any(|c| c.name
            == "nothing in the topic that was not acknowledged: 1 unacknowledged, at most 1 possible (order requests without an answer)"));
    }

    #[test]
    fn broken_conservation_fails_only_that_check() {
        fails_only(clean().held(0, 2), "conservation");
        // Units twice in two buckets whose sum still looks right: the ledger sees them.
        let mut twice = clean();
        twice.seen.ledger.excess = 2;
        fails_only(twice, "conservation");
    }

    #[test]
    fn an_acknowledged_order_without_stock_fails_only_that_check() {
        fails_only(clean().held(2, 1), "every acknowledged order holds stock");
        // Lost replies do not excuse it: they explain units without orders, not the reverse.
        fails_only(
            clean().held(2, 1).bounds(5, 5),
            "every acknowledged order holds stock",
        );
    }

    #[test]
    fn an_acknowledged_order_cancelled_in_postgresql_gives_its_unit_back() {
        let mut c = clean().held(2, 1);
        c.seen.db[1].status = "cancelled".into();
        assert!(c.report().ok());
    }

    #[test]
    fn units_held_without_an_order_are_bounded_by_lost_replies() {
        fails_only(clean().held(0, 3), "units held without an order");
        assert!(clean().held(0, 3).bounds(0, 1).report().ok());
        let mut c = clean().held(0, 4).bounds(0, 1);
        c.seen.state.initial = 4;
        fails_only(c, "units held without an order");
        // Requests without an answer are for orders, not for bare reservations.
        fails_only(
            clean().held(0, 3).bounds(1, 0),
            "units held without an order",
        );
    }

    #[test]
    fn a_202_lost_or_duplicated_in_postgresql_fails_only_that_check() {
        let mut c = clean();
        c.seen.db.pop();
        fails_only(c, "every 202 is in PostgreSQL exactly once");

        let mut c = clean();
        c.seen.db.push(row("s-2", 2, "reserved"));
        fails_only(c, "every 202 is in PostgreSQL exactly once");
    }

    #[test]
    fn unacknowledged_orders_in_postgresql_are_bounded_by_requests_without_an_answer() {
        // Each unacknowledged order holds its unit, so only the bound decides.
        let with = |n: usize| {
            let mut c = clean().held(0, 2 + n as i64);
            c.seen.state.initial = 2 + n as i64;
            for i in 0..n {
                c.seen
                    .db
                    .push(row(&format!("s-{}", 10 + i), 10 + i as u64, "reserved"));
            }
            c
        };
        fails_only(with(1), "no order in PostgreSQL that was not acknowledged");
        assert!(with(1).bounds(1, 0).report().ok());
        fails_only(
            with(2).bounds(1, 0),
            "no order in PostgreSQL that was not acknowledged",
        );
        // Lost replies are for bare reservations, not for orders.
        fails_only(
            with(1).bounds(0, 1),
            "no order in PostgreSQL that was not acknowledged",
        );
    }

    #[test]
    fn a_token_behind_two_orders_fails_only_that_check() {
        let mut c = clean();
        c.tokens = vec!["t1".into(), "t1".into()];
        fails_only(c, "every token used at most once");
    }

    #[test]
    fn a_retry_answered_with_its_own_order_is_one_purchase() {
        let mut c = clean();
        let (first, token) = (c.acked[0].clone(), c.tokens[0].clone());
        c.acked.push(first);
        c.tokens.push(token);
        assert!(c.failing().is_empty(), "{:?}", c.failing());
    }

    #[test]
    fn one_order_acknowledged_to_two_users_fails_the_client_record_check() {
        let mut c = clean();
        let mut other = c.acked[0].clone();
        other.1 += 100;
        c.acked.push(other);
        c.tokens.push("t9".into());
        fails_only(c, "per-user limit in the client's record");
    }
}
