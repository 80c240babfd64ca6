//! The gateway on a real Redis Cluster (three masters, three replicas, started through
//! stackctl): sales, tokens and purchases in every master's slots; `ASK` during a slot
//! migration and `MOVED` once it completes; `WAIT` behind purchases, and a purchase
//! whose replica does not acknowledge (paused) still answered 202 and counted in
//! `seckill_redis_unreplicated_total`.

mod harness;

use harness::{Gateway, Options};
use stackctl::redis_cluster::RedisCluster;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
}
