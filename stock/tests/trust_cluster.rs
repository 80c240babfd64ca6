//! A Redis Cluster master restarted empty inside the node timeout (a supervisor brings
//! it back before its replica takes over) keeps its node id and its slots and has lost
//! every key it held: the store must not trust it as "born clean". On a real cluster
//! started through stackctl.

use std::time::Duration;
use stock::trust::{self, RunWatch};
use testkit::{wait_for, FreshCluster};

// Below 22768: the cluster bus (port + 10000) must stay out of the ephemeral range.
const BASE_PORT: u16 = 21301;
const T: Duration = Duration::from_secs(2);

/// The masters' runs, read afresh (a restart drops kept connections).
fn runs(url: &str) -> Vec<trust::Run> {
    let mut conn = stock::connect(url, T).expect("connect to the cluster");
    RunWatch::new(url, T)
        .and_then(|mut w| w.runs(&mut conn))
        .expect("read the masters")
}

fn untrusted(url: &str, runs: &[trust::Run]) -> Vec<trust::Run> {
    let mut conn = stock::connect(url, T).expect("connect to the cluster");
    trust::untrusted(&mut conn, runs).expect("untrusted")
}

#[test]
fn a_master_restarted_empty_inside_the_node_timeout_is_not_trusted_as_born_clean() {
    let mut fresh = FreshCluster::new(BASE_PORT);
    // No failover during the restart: the node comes back as the same master.
    fresh.0.node_timeout_ms = 30_000;
    fresh.0.up().expect("redis cluster up");
    let c = &fresh.0;
    let url = c.url();

    let before = runs(&url);
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|r| r.born_clean && r.node_id.is_some()));
    assert!(
        untrusted(&url, &before).is_empty(),
        "a new cluster's masters are trusted as they are (and recorded)"
    );

    // A master that does not hold `{sk:epoch}:trust` restarts with nothing (no persistence).
    let holder = c
        .master_of(stock::cluster::slot(stock::keys::TRUST.as_bytes()))
        .expect("the master of {sk:epoch}:trust");
    let victim = c
        .masters_now()
        .expect("masters")
        .into_iter()
        .find(|m| *m != holder)
        .expect("another master");
    let victim_addr = format!("127.0.0.1:{}", c.port(victim));
    c.stop_node(victim);
    c.start_node(victim).expect("restart the master");
    wait_for(
        "the restarted master serving again",
        Duration::from_secs(30),
        || c.ready(),
    );

    let after = runs(&url);
    let restarted = after
        .iter()
        .find(|r| r.addr == victim_addr)
        .expect("the restarted master is still a master");
    assert!(
        restarted.born_clean,
        "it started empty and was never a replica"
    );
    let un = untrusted(&url, &after);
    assert_eq!(
        un.iter().map(|r| r.addr.as_str()).collect::<Vec<_>>(),
        vec![victim_addr.as_str()],
        "the empty restart is a loss, not a fresh start"
    );

    // What the reconciler does once it put back what the master lost: trust the runs.
    let mut conn = stock::connect(&url, T).expect("connect");
    trust::trust(&mut conn, &after).expect("trust");
    assert!(untrusted(&url, &after).is_empty());
}
