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
    #[error("setup: {0}")]
    Setup(String),
    #[error("load: {0}")]
    Load(#[from] loadtest::buyer::LoadError),
    #[error("redis: {0}")]
    Stock(#[from] stock::StockError),
    #[error("database: {0}")]
    Db(String),
}
