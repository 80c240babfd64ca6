//! Chaos drills for the seckill stack. See `drills` for the list, and the project
//! README's "Chaos drills" for how to run them.
//!
//! - [`env`]: the drill stack (its own Redis, a three-node Apache Kafka cluster,
//!   PostgreSQL) and the processes.
//! - [`proxy`]: the fault-injecting TCP proxy (latency, black hole).
//! - [`load`]: background buyers, every answer timed.
//! - [`drill`]: timeline and PASS/FAIL checks.
//! - [`verify`]: the invariants after each drill.
//! - [`campaign`]: the seeded fault campaign (`chaos campaign --seed S --minutes M`).
//! - [`drills`]: the drills (`chaos list`): the shared rig, then a file per fault family.

pub mod campaign;
pub mod drill;
pub mod drills;
pub mod env;
pub mod load;
pub mod proxy;
pub mod verify;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The drill cannot go on (nothing caused it but what it says).
    #[error("setup: {0}")]
    Setup(String),
    /// `what` could not be done: a command not run, a node not read.
    #[error("setup: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The fault proxy did not start.
    #[error("setup: {0}")]
    Proxy(#[source] std::io::Error),
    #[error("setup: {what}: {source}")]
    Topic {
        what: String,
        #[source]
        source: seckill_common::kafka::TopicError,
    },
    /// `what` failed on every try until its deadline; the last failure.
    #[error("setup: {what}: {source}")]
    GaveUp {
        what: String,
        #[source]
        source: Box<ChaosError>,
    },
    #[error("setup: {0}")]
    Stack(#[from] stackctl::StackError),
    #[error("load: {0}")]
    Load(#[from] loadtest::buyer::LoadError),
    #[error("redis: {0}")]
    Stock(#[from] stock::StockError),
}

impl ChaosError {
    /// `ChaosError::Io` for `what`.
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ChaosError {
        let what = what.to_string();
        move |source| ChaosError::Io { what, source }
    }
}
