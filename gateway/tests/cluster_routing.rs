//! The gateway on a real Redis Cluster (three masters, three replicas, started through
//! stackctl): sales, tokens and purchases in every master's slots; `ASK` during a slot
//! migration and `MOVED` once it completes; `WAIT` behind purchases, and a purchase
//! whose replica does not acknowledge (paused) still answered 202 and counted in
//! `seckill_redis_unreplicated_total`; WAIT once per batch of purchases, and a WAIT
//! held up by a paused replica does not hold up the commands that need none.

mod harness;

use gateway::breaker::Breaker;
use gateway::metrics::Metrics;
use gateway::redis_pipe::{Options as PipeOptions, RedisPipe, WaitPolicy};
use harness::{Gateway, Options};
use stackctl::redis_cluster::RedisCluster;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::Stock;

// Below 22768: the cluster bus (port + 10000) must stay out of the ephemeral range.
const BASE_PORT: u16 = 21001;

use testkit::FreshCluster as Fresh;

fn fresh_cluster(base: u16) -> Fresh {
    Fresh::up(base)
}

fn meta_slot(sale: &str) -> u16 {
    stock::cluster::slot(stock::keys::SaleKeys::new(sale).meta.as_bytes())
}

/// `sale`, open since a second ago for an hour.
fn create(gw: &Gateway, sale: &str, units: i64) {
    let now = harness::now_ms();
    gw.create_sale(sale, units, now - 1000, now + 3_600_000);
}

/// Token then order for `user`; the order's answer.
fn buy(gw: &Gateway, sale: &str, user: u64) -> harness::Resp {
    let t = gw.token(sale, user);
    assert_eq!(t.status, 201, "token {sale}/{user}: {}", t.body);
    let token = t.field("token");
    gw.order(sale, user, &token)
}

fn q(c: &RedisCluster, node: usize, args: &[&str]) -> String {
    c.query(c.port(node), args)
        .unwrap_or_else(|e| panic!("node {node} {args:?}: {e}"))
}

fn node_id(c: &RedisCluster, node: usize) -> String {
    q(c, node, &["CLUSTER", "MYID"])
}

/// Step 1: a sale on each master, tokens and purchases through the gateway. The
/// sales, by master.
fn a_sale_on_each_master(gw: &Gateway, c: &RedisCluster) -> HashMap<usize, String> {
    let mut on_master = HashMap::new();
    for i in 0.. {
        let sale = harness::unique(&format!("m{i}"));
        on_master
            .entry(c.master_of(meta_slot(&sale)).unwrap())
            .or_insert(sale);
        if on_master.len() == 3 {
            break;
        }
    }
    for (master, sale) in &on_master {
        create(gw, sale, 10);
        for user in 1..=3 {
            let r = buy(gw, sale, user);
            assert_eq!(r.status, 202, "sale on node {master}: {}", r.body);
        }
        let stock_key = stock::keys::SaleKeys::new(sale).stock;
        assert_eq!(
            q(c, *master, &["GET", &stock_key]),
            "7",
            "units left on node {master}"
        );
    }
    assert_eq!(gw.metric("seckill_redis_unreplicated_total "), 0.0);
    on_master
}

/// Start moving `slot` from `src` to `dst`: IMPORTING on the target, MIGRATING on the
/// source, every key moved with MIGRATE (Redis refuses a multi-key script on an
/// importing node unless all its keys are there: TRYAGAIN). The number of keys moved.
fn migrate_slot(c: &RedisCluster, slot: u16, src: usize, dst: usize) -> usize {
    let (src_id, dst_id) = (node_id(c, src), node_id(c, dst));
    let s = slot.to_string();
    assert_eq!(
        q(c, dst, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]),
        "OK"
    );
    assert_eq!(
        q(c, src, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]),
        "OK"
    );
    let keys = q(c, src, &["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.len() >= 8, "the sale's keys: {keys:?}");
    let port = c.port(dst).to_string();
    let mut migrate = vec![
        "MIGRATE",
        "127.0.0.1",
        port.as_str(),
        "",
        "0",
        "5000",
        "KEYS",
    ];
    migrate.extend(keys.iter().copied());
    assert_eq!(q(c, src, &migrate), "OK");
    keys.len()
}

/// Step 2, ASK: the slot of a sale migrates from its master to another; the source
/// answers ASK and the gateway sends ASKING and the script to the target. Step 3,
/// MOVED: the migration completes (every master learns the new owner); the gateway's
/// map still says the source, which answers MOVED; the purchase follows it.
fn ask_then_moved(gw: &Gateway, c: &RedisCluster, masters: &[usize]) {
    let sale = harness::unique("ask");
    create(gw, &sale, 5);
    // Every key the purchase script touches exists: one order held (reservations),
    // one paid (settled).
    let held = buy(gw, &sale, 1);
    assert_eq!(held.status, 202, "{}", held.body);
    let paid = buy(gw, &sale, 4);
    assert_eq!(paid.status, 202, "{}", paid.body);
    let mut st = stock::Stock::new(stock::connect(&c.url(), Duration::from_secs(2)).unwrap());
    st.settle(
        paid.json()["order_id"].as_str().unwrap(),
        stock::Settlement::Paid,
    )
    .unwrap();
    let t = gw.token(&sale, 2);
    let token2 = t.field("token");
    let slot = meta_slot(&sale);
    let src = c.master_of(slot).unwrap();
    let dst = *masters.iter().find(|m| **m != src).unwrap();
    let keys = migrate_slot(c, slot, src, dst);
    let s = slot.to_string();
    let r = gw.order(&sale, 2, &token2);
    assert_eq!(
        r.status, 202,
        "purchase during the migration (ASK): {}",
        r.body
    );
    let stock_key = stock::keys::SaleKeys::new(&sale).stock;
    assert_eq!(
        q(c, src, &["CLUSTER", "COUNTKEYSINSLOT", &s]),
        "0",
        "nothing on the source"
    );
    let on_dst: usize = q(c, dst, &["CLUSTER", "COUNTKEYSINSLOT", &s])
        .parse()
        .unwrap();
    assert!(
        on_dst + 1 >= keys,
        "the sale's keys are on the target: {on_dst}"
    );

    let dst_id = node_id(c, dst);
    for m in masters {
        assert_eq!(q(c, *m, &["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]), "OK");
    }
    let t0 = Instant::now();
    let r = buy(gw, &sale, 3);
    assert_eq!(r.status, 202, "purchase after the slot moved: {}", r.body);
    eprintln!("purchase after MOVED answered in {:?}", t0.elapsed());
    assert_eq!(
        q(c, dst, &["GET", &stock_key]),
        "1",
        "bought on the new owner"
    );
    let state = gw.get(&format!("/v1/sales/{sale}"), None);
    assert_eq!(state.status, 200, "{}", state.body);
}

/// Step 4, WAIT: a purchase whose master's replica is paused is still answered (the
/// order is in Kafka), after the WAIT timeout, and counted as unreplicated.
fn wait_outlasted_by_a_paused_replica(
    gw: &Gateway,
    c: &RedisCluster,
    on_master: &HashMap<usize, String>,
) {
    let (master, sale) = on_master
        .iter()
        .next()
        .map(|(m, s)| (*m, s.clone()))
        .unwrap();
    let master_id = node_id(c, master);
    let replica = c
        .topology()
        .unwrap()
        .into_iter()
        .find(|n| n.master_id.as_deref() == Some(master_id.as_str()))
        .map(|n| (n.port - c.base_port) as usize)
        .expect("the master has a replica");
    let t = gw.token(&sale, 50);
    let token = t.field("token");
    c.signal(replica, stackctl::process::SIGSTOP).unwrap();
    let t0 = Instant::now();
    let r = gw.order(&sale, 50, &token);
    let took = t0.elapsed();
    c.signal(replica, stackctl::process::SIGCONT).unwrap();
    assert_eq!(r.status, 202, "unreplicated purchase: {}", r.body);
    assert!(
        took >= Duration::from_millis(45),
        "answered after the WAIT timeout: {took:?}"
    );
    assert_eq!(gw.metric("seckill_redis_unreplicated_total "), 1.0);
    // Replica back: purchases are acknowledged again, nothing more counted.
    std::thread::sleep(Duration::from_millis(300));
    let r = buy(gw, &sale, 51);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(gw.metric("seckill_redis_unreplicated_total "), 1.0);
}

/// The gateway's pipe on `c` (4 connections per master), waiting for one replica for at
/// most `wait_ms` after purchases.
fn pipe(c: &RedisCluster, wait_ms: u64) -> RedisPipe {
    RedisPipe::start_with(
        &c.url(),
        &PipeOptions {
            connections: 4,
            timeout: Duration::from_secs(20),
            max_in_flight: 4096,
            wait: Some(WaitPolicy {
                replicas: 1,
                timeout_ms: wait_ms,
            }),
        },
        Arc::new(Breaker::new(1000, Duration::from_millis(100))),
        Arc::new(Metrics::default()),
    )
    .expect("pipe")
}

/// A fresh sale id (from `prefix`) whose keys live on `master`.
fn sale_on(c: &RedisCluster, master: usize, prefix: &str) -> String {
    loop {
        let s = harness::unique(prefix);
        if c.master_of(meta_slot(&s)).unwrap() == master {
            return s;
        }
    }
}

/// The replica of `master` (its node index).
fn replica_of(c: &RedisCluster, master: usize) -> usize {
    let master_id = node_id(c, master);
    c.topology()
        .unwrap()
        .into_iter()
        .find(|n| n.master_id.as_deref() == Some(master_id.as_str()))
        .map(|n| (n.port - c.base_port) as usize)
        .expect("the master has a replica")
}

/// The WAIT calls `node` has served (INFO commandstats).
fn wait_calls(c: &RedisCluster, node: usize) -> u64 {
    q(c, node, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Step 5, WAIT per batch: a steady flow of 256 purchases on one master shares a few
/// WAITs (one per write, at most one outstanding per connection), not one each.
fn purchases_share_their_waits(gw: &Gateway, c: &RedisCluster, master: usize) {
    let sale = sale_on(c, master, "batch");
    create(gw, &sale, 1000);
    let p = pipe(c, 2000);
    let n = 256u64;
    let tokens: Vec<String> = (1..=n)
        .map(|u| {
            Stock::new(p.clone())
                .issue_token(&sale, u, Duration::from_secs(600))
                .expect("token")
                .token
        })
        .collect();
    let before = wait_calls(c, master);
    // 32 buyers' sessions, each buying for 8 users one after the other: a steady flow,
    // each purchase sent as soon as the one before it is answered.
    let tokens = Arc::new(tokens);
    let sessions: Vec<_> = (0..32u64)
        .map(|k| {
            let (p, sale, tokens) = (p.clone(), sale.clone(), tokens.clone());
            may::go!(move || {
                let mut s = Stock::new(p);
                (0..8u64)
                    .map(|i| k + 32 * i)
                    .filter(|&u| s.purchase(&sale, u + 1, &tokens[u as usize]).is_ok())
                    .count()
            })
        })
        .collect();
    let bought: usize = sessions.into_iter().filter_map(|b| b.join().ok()).sum();
    assert_eq!(bought, n as usize);
    let waits = wait_calls(c, master) - before;
    assert!(
        waits >= 1 && waits <= n / 8,
        "{waits} WAITs for {n} purchases written together"
    );
}

/// Step 6: while a purchase waits on a WAIT its paused replica holds up, a token for
/// the same master (no WAIT needed) is answered, before the purchase.
fn a_stalled_wait_does_not_stall_tokens(gw: &Gateway, c: &RedisCluster, master: usize) {
    let sale = sale_on(c, master, "stall");
    create(gw, &sale, 10);
    let p = pipe(c, 5000);
    let token = Stock::new(p.clone())
        .issue_token(&sale, 1, Duration::from_secs(600))
        .expect("token")
        .token;
    let replica = replica_of(c, master);
    c.signal(replica, stackctl::process::SIGSTOP).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let purchase = {
        let (p, sale, done) = (p.clone(), sale.clone(), done.clone());
        std::thread::spawn(move || {
            let r = Stock::new(p).purchase(&sale, 1, &token);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // The purchase's WAIT is blocked on the master (CLIENT LIST shows it).
    let blocked = (0..200).any(|_| {
        let clients = q(c, master, &["CLIENT", "LIST"]);
        if clients.lines().any(|l| l.contains("cmd=wait")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
        false
    });
    // Four tokens: round robin would put one of them behind the WAIT.
    let others: Vec<_> = (2..=5)
        .map(|u| Stock::new(p.clone()).issue_token(&sale, u, Duration::from_secs(600)))
        .collect();
    let purchase_pending = !done.load(Ordering::SeqCst);
    c.signal(replica, stackctl::process::SIGCONT).unwrap();
    assert!(
        blocked,
        "the purchase's WAIT never blocked on node {master}"
    );
    assert!(
        others.iter().all(Result::is_ok),
        "tokens during a stalled WAIT: {others:?}"
    );
    assert!(
        purchase_pending,
        "a token was answered only after the purchase's WAIT"
    );
    let bought = purchase.join().expect("purchase thread");
    assert!(bought.is_ok(), "{bought:?}");
}

#[test]
fn gateway_routes_follows_ask_and_moved_and_waits_for_a_replica_on_a_cluster() {
    let fresh = fresh_cluster(BASE_PORT);
    let c = &fresh.0;
    let gw = Gateway::start_with(Options {
        redis_url: Some(c.url()),
        env: vec![("SECKILL_REDIS_WAIT_TIMEOUT_MS", "50".into())],
        ..Options::default()
    });
    let masters = c.masters_now().unwrap();
    assert_eq!(masters.len(), 3);
    let on_master = a_sale_on_each_master(&gw, c);
    ask_then_moved(&gw, c, &masters);
    wait_outlasted_by_a_paused_replica(&gw, c, &on_master);
    let master = masters[0];
    purchases_share_their_waits(&gw, c, master);
    a_stalled_wait_does_not_stall_tokens(&gw, c, master);
}
