//! Failover on a real Redis Cluster (three masters, three replicas, 2 s node timeout,
//! started through stackctl): `kill -9` the master of a sale's slot while buyers keep
//! buying through the gateway; its replica is promoted, the gateway's slot map follows,
//! purchases are held (503 `store_recovering`) until the new master is vouched for, and
//! resume. Prints the measured recovery time (kill → first 202).

mod harness;

use harness::{Gateway, Options};
use stackctl::redis_cluster::RedisCluster;
use std::time::{Duration, Instant};

// Below 22768: the cluster bus (port + 10000) must stay out of the ephemeral range.
const BASE_PORT: u16 = 21101;

use testkit::FreshCluster as Fresh;

/// Tokens for `users`, issued before the kill (replicated: WAIT is only behind
/// purchases, so the caller gives the replica a moment).
fn tokens(gw: &Gateway, sale: &str, users: &[u64]) -> Vec<String> {
    users
        .iter()
        .map(|u| {
            let t = gw.token(sale, *u);
            assert_eq!(t.status, 201, "{}", t.body);
            t.field("token")
        })
        .collect()
}

/// The promoted replica is held until something vouches that it holds every
/// acknowledged order: the order-writer's reconciler, which this test does not run.
/// Every purchase so far was WAIT-replicated, so the state is whole: vouch for the new
/// master as it would, once the promoted node says it is a master (a stale view may
/// list it as one before, and a non-master is never trusted) and `sale` holds `held`
/// units. Whether it was vouched for.
/// Mid-failover the cluster's view may still list the killed master: a connection or a
/// read that fails is "not yet", asked again.
fn vouch_for_the_promoted(c: &RedisCluster, sale: &str, held: i64) -> bool {
    let Ok(mut conn) = stock::connect(&c.url(), Duration::from_secs(2)) else {
        return false;
    };
    let Ok(runs) = stock::trust::RunWatch::new(&c.url(), Duration::from_secs(2))
        .and_then(|mut w| w.runs(&mut conn))
    else {
        return false;
    };
    let Ok(untrusted) = stock::trust::untrusted(&mut conn, &runs) else {
        return false;
    };
    let Ok(state_conn) = stock::connect(&c.url(), Duration::from_secs(2)) else {
        return false;
    };
    let held_now = stock::Stock::new(state_conn).state(sale).map(|s| s.held);
    if !untrusted.is_empty() && untrusted.iter().all(|r| r.master) && held_now.ok() == Some(held) {
        stock::trust::trust(&mut conn, &untrusted).unwrap();
        return true;
    }
    false
}

/// What the buyers saw through the failover.
struct Seen {
    /// Kill → first 202.
    first_ok: Duration,
    /// Answers 503 meanwhile.
    failures: u32,
    /// Purchases were held (503 store_recovering) on the promoted replica.
    held: bool,
}

/// Buy on from the sixth buyer to the 25th: each buyer retries its own token until
/// answered 202 (a new token when a purchase that ran while the topology moved spent
/// it).
fn buy_through_the_failover(
    gw: &Gateway,
    c: &RedisCluster,
    sale: &str,
    users: &[u64],
    tokens: &mut [String],
    killed: Instant,
) -> Seen {
    let mut next = 5;
    let mut first_ok: Option<Duration> = None;
    let mut failures = 0;
    let (mut held, mut trusted) = (false, false);
    while next < 25 {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "purchases did not resume within 30 s ({failures} refusals)"
        );
        let r = gw.order(sale, users[next], &tokens[next]);
        match r.status {
            202 => {
                first_ok.get_or_insert(killed.elapsed());
                next += 1;
            }
            503 => {
                failures += 1;
                if r.code() == "store_recovering" && !trusted {
                    held = true;
                    trusted = vouch_for_the_promoted(c, sale, next as i64);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // A purchase that ran while the topology moved is released and refused;
            // its token is spent: the buyer takes a new one.
            409 if r.code() == "token_used" => {
                let t = gw.token(sale, users[next]);
                assert_eq!(t.status, 201, "{}", t.body);
                tokens[next] = t.field("token");
            }
            other => panic!("unexpected answer {other}: {}", r.body),
        }
    }
    Seen {
        first_ok: first_ok.unwrap(),
        failures,
        held,
    }
}

#[test]
fn purchases_resume_after_a_master_is_killed_and_its_replica_promoted() {
    let fresh = Fresh::up(BASE_PORT);
    let c = &fresh.0;
    let gw = Gateway::start_with(Options {
        redis_url: Some(c.url()),
        ..Options::default()
    });
    let sale = gw.open_sale("failover", 1000);
    let users: Vec<u64> = (1..=200).collect();
    let mut tokens = tokens(&gw, &sale, &users);
    for u in 0..5 {
        assert_eq!(gw.order(&sale, users[u], &tokens[u]).status, 202);
    }
    std::thread::sleep(Duration::from_millis(300));

    let slot = stock::cluster::slot(stock::keys::SaleKeys::new(&sale).meta.as_bytes());
    let victim = c.master_of(slot).unwrap();
    eprintln!(
        "killing master node {victim} (port {}) of slot {slot}",
        c.port(victim)
    );
    c.signal(victim, stackctl::process::SIGKILL).unwrap();
    let killed = Instant::now();
    let seen = buy_through_the_failover(&gw, c, &sale, &users, &mut tokens, killed);
    let (recovery, failures) = (seen.first_ok, seen.failures);
    let new_master = c.master_of(slot).unwrap();
    eprintln!(
        "FAILOVER: first 202 {:.2} s after kill -9 (node timeout {} ms); {failures} answers 503 meanwhile; slot {slot} now on node {new_master}",
        recovery.as_secs_f64(),
        c.node_timeout_ms
    );
    assert_ne!(new_master, victim, "the replica took over");
    assert!(
        seen.held,
        "purchases were held (503 store_recovering) on the promoted replica"
    );
    assert!(
        recovery < Duration::from_secs(15),
        "recovery took {recovery:?}"
    );

    // The state is whole on the new master: 25 purchases, none lost in the failover
    // (each was acknowledged by the replica before its 202: WAIT 1).
    let mut st = stock::Stock::new(stock::connect(&c.url(), Duration::from_secs(2)).unwrap());
    let s = st.state(&sale).unwrap();
    assert_eq!(s.held, 25, "{s:?}");
    assert!(s.conserved());

    // The killed node comes back as a replica.
    c.start_node(victim).unwrap();
    testkit::wait_for("the cluster healthy again", Duration::from_secs(20), || {
        c.ready()
    });
}
