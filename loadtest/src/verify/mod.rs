//! The invariants after a sale, a load run or a chaos drill, in two halves:
//!
//! - gathering ([`gather`]): what Redis, the order topic and PostgreSQL hold for a sale,
//!   as plain data ([`Sources`]) — the only I/O here;
//! - checking ([`check`]): one pure function of those sources, the client's record of
//!   answers ([`Record`]) and the bounds for answers the client never got
//!   ([`Unanswered`]). Each invariant is one [`Check`], printed as PASS or FAIL with its
//!   figures; any failure fails the run.
//!
//! Faults create two kinds of honest uncertainty, bounded rather than ignored: an order
//! request whose answer never reached the client may still have been accepted (an order
//! nobody acknowledged, holding a unit), and a purchase whose Redis reply was lost holds a
//! unit with no order behind it until the writer's reservation sweep releases it after the
//! payment window. Load runs and the demo get every answer, so their bounds are zero; the
//! chaos drills count the requests that failed that way.
//!
//! The gathering lives in `sources.rs`, the checks (one function per invariant family)
//! in `checks.rs`; this file holds the data both share, and [`verify_sale`], the two in
//! one call.

use crate::buyer::LoadError;
use seckill_common::order::OrderMessage;
use seckill_common::stack::Stack;
use std::time::Duration;

mod checks;
mod sources;

pub use checks::check;
pub use sources::{gather, orders_in_db, orders_in_topic, read_topic, Wait};

pub struct Check {
    pub name: String,
    pub pass: bool,
}

pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }
    pub fn print(&self) {
        for c in &self.checks {
            println!("  {} {}", if c.pass { "PASS" } else { "FAIL" }, c.name);
        }
    }
}

/// The client's record: every acknowledged (202) order as (order id, user), and the
/// tokens behind them.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    pub acked: &'a [(String, u64)],
    pub tokens: &'a [String],
}

/// Bounds for the answers the client never got. Zero for runs that got every answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unanswered {
    /// Order requests without an answer: each may have created an order nobody
    /// acknowledged (in the topic and PostgreSQL, holding a unit).
    pub orders: u64,
    /// Purchases that failed after Redis may have run them (reply lost, Redis fault):
    /// each may hold a unit with no order anywhere.
    pub lost_replies: u64,
}

impl Unanswered {
    /// Every answer was received.
    pub const NONE: Unanswered = Unanswered {
        orders: 0,
        lost_replies: 0,
    };
}

/// An order row in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub order_id: String,
    pub user: u64,
    pub units: i64,
    /// `reserved`, `paid` or `cancelled`.
    pub status: String,
}

impl Row {
    fn live(&self) -> bool {
        self.status != "cancelled"
    }
}

/// What the three sources hold for one sale.
pub struct Sources {
    /// Redis: the sale's counters.
    pub state: stock::SaleState,
    /// Redis: the sale's stock ledger, bucket by bucket, moves matched half to half.
    pub ledger: stock::ledger::Ledger,
    /// Redis: user → units held or bought.
    pub buyers: Vec<(u64, i64)>,
    /// The order topic's `reserved` events of the sale; `None` when not read.
    pub topic: Option<Vec<OrderMessage>>,
    /// PostgreSQL: the sale's orders.
    pub db: Vec<Row>,
}

/// The outcome of [`verify_sale`]: the checks, and how many orders each source held.
pub struct Verified {
    pub report: Report,
    pub in_topic: usize,
    pub in_db: usize,
}

/// Gather the three sources for `sale` — Redis, the order topic, PostgreSQL (waiting,
/// bounded, for the writer to drain) — and check every invariant against the client's
/// record, for a run that got an answer to every request.
pub fn verify_sale(
    stack: &Stack,
    topic: &str,
    sale: &str,
    acked: &[(String, u64)],
    tokens: &[String],
) -> Result<Verified, LoadError> {
    let wait = Wait {
        within: Duration::from_secs(120),
        settle: Duration::from_secs(1),
    };
    let seen = gather(stack, Some(topic), sale, acked, wait)?;
    let report = check(&Record { acked, tokens }, Unanswered::NONE, &seen);
    Ok(Verified {
        report,
        in_topic: seen.topic.as_ref().map_or(0, Vec::len),
        in_db: seen.db.len(),
    })
}
