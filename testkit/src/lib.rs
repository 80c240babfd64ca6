//! What the workspace's tests share, so that no test file writes it again:
//!
//! - clocks and unique ids: [`now_ms`], [`unique`];
//! - waiting on a condition, never on a timing: [`wait_for`];
//! - the local stack's Redis through the stock API, and an open sale on it:
//!   [`stack_stock`], [`open_sale`], [`open_spec`];
//! - a Redis Cluster of the test's own, made afresh and removed after: [`FreshCluster`];
//! - the standard command line every binary has (`--help`, `--version`, exit status 2
//!   on a usage error): [`cli`].
//!
//! A dev-dependency only: nothing here is part of a shipped binary.

pub mod cli;

use std::time::{Duration, Instant};
use stock::{SaleSpec, Stock};

pub use seckill_common::now_ms;

/// An id unique per process and call, starting with `tag`: tests never share state
/// (the process id, then eight random hex digits).
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        &stock::keys::new_token()[..8]
    )
}

/// Poll `f` every 50 ms until it holds; panics naming `what` once `within` passed.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stock API on the local stack's Redis (started if it is not up).
pub fn stack_stock() -> Stock<stock::Conn> {
    let stack = stackctl::ensure_up();
    Stock::new(
        stock::connect(&stack.redis_url, Duration::from_secs(2))
            .expect("connect to the stack's Redis"),
    )
}

/// A sale open since a second ago for ten minutes: `units` units, `per_user_limit` each.
pub fn open_spec(units: i64, per_user_limit: i64) -> SaleSpec {
    let now = now_ms();
    SaleSpec {
        stock: units,
        per_user_limit,
        start_ms: now - 1000,
        end_ms: now + 600_000,
    }
}

/// A new sale id (`unique(tag)`), open since an hour ago for another hour, one unit
/// per buyer, `units` units in `buckets` stock buckets.
pub fn open_sale(s: &mut Stock<stock::Conn>, tag: &str, units: i64, buckets: u32) -> String {
    let id = unique(tag);
    let now = now_ms();
    let spec = SaleSpec {
        stock: units,
        per_user_limit: 1,
        start_ms: now - 3_600_000,
        end_ms: now + 3_600_000,
    };
    s.create_sale_with_buckets(&id, &spec, buckets)
        .expect("create the sale");
    id
}

/// A Redis Cluster (three masters, three replicas) on `base_port`.. made afresh for one
/// test (whatever a crashed run left there is removed first), stopped and removed when
/// dropped. Keep `base_port` + 10,000 (its cluster bus) below the ephemeral range.
pub struct FreshCluster(pub stackctl::redis_cluster::RedisCluster);

impl FreshCluster {
    /// Made, not started: call `up()` on `.0` (or use [`FreshCluster::up`]).
    pub fn new(base_port: u16) -> FreshCluster {
        let c = stackctl::redis_cluster::RedisCluster::new(
            std::env::temp_dir().join(format!("seckill-cluster-{base_port}")),
            base_port,
        );
        c.down();
        let _ = std::fs::remove_dir_all(&c.dir);
        FreshCluster(c)
    }

    /// Made and started (healthy).
    pub fn up(base_port: u16) -> FreshCluster {
        let fresh = FreshCluster::new(base_port);
        fresh.0.up().expect("redis cluster up");
        fresh
    }
}

impl Drop for FreshCluster {
    fn drop(&mut self) {
        self.0.down();
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}
