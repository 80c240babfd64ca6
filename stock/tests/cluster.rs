//! The stock API and the control plane on a real Redis Cluster (three masters, three
//! replicas) started through stackctl: `stock::connect` with a `redis+cluster://` URL,
//! sales in every master's slots, NOSCRIPT after a master lost its scripts, the switch
//! write (one MULTI in the `{cluster}` slot) and its read (two calls), and the slot
//! function against `CLUSTER KEYSLOT`.

use stackctl::redis_cluster::RedisCluster;
use std::time::{Duration, Instant};
use stock::{SaleSpec, Stock};

// Below 22768: the cluster bus (port + 10000) must stay out of the ephemeral range.
const BASE_PORT: u16 = 21201;

use testkit::now_ms;

use testkit::FreshCluster as Fresh;

fn fresh_cluster() -> Fresh {
    let fresh = Fresh::new(BASE_PORT);
    let c = &fresh.0;
    let t0 = Instant::now();
    c.up().expect("redis cluster up");
    eprintln!(
        "cluster created and healthy in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Idempotent: a second up finds it healthy and returns at once.
    let t1 = Instant::now();
    c.up().expect("second up");
    assert!(
        t1.elapsed() < Duration::from_secs(2),
        "second up took {:?}",
        t1.elapsed()
    );
    fresh
}

/// Sale ids whose keys land on each of the three masters (node index of the master).
fn sales_on_every_master(c: &RedisCluster, tag: &str) -> Vec<(String, usize)> {
    let masters = c.masters_now().unwrap();
    assert_eq!(masters.len(), 3, "three masters serve slots");
    let mut found: Vec<(String, usize)> = Vec::new();
    for i in 0.. {
        let sale = format!("{tag}_{}_{i}", std::process::id());
        let m = c
            .master_of(stock::cluster::slot(
                stock::keys::SaleKeys::new(&sale).meta.as_bytes(),
            ))
            .unwrap();
        if !found.iter().any(|(_, x)| *x == m) {
            found.push((sale, m));
        }
        if found.len() == 3 {
            break;
        }
    }
    found
}

#[test]
fn stock_and_control_work_on_a_redis_cluster() {
    let fresh = fresh_cluster();
    let c = &fresh.0;
    assert_eq!(c.info_field(0, "cluster_state").as_deref(), Some("ok"));
    assert_eq!(c.info_field(5, "cluster_known_nodes").as_deref(), Some("6"));

    // CRC16 with hash tags against the live cluster's CLUSTER KEYSLOT.
    for key in [
        "foo",
        "bar",
        "hello",
        "123456789",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "sk:{flash_1}:meta",
        "sk:switches:{main}",
        "sk:epoch",
    ] {
        let live: u16 = c
            .query(c.port(0), &["CLUSTER", "KEYSLOT", key])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(stock::cluster::slot(key.as_bytes()), live, "{key}");
    }

    let mut s =
        Stock::new(stock::connect(&c.url(), Duration::from_secs(2)).expect("cluster connect"));
    assert!(s.conn_mut().is_cluster());
    s.ping().unwrap();
    let spec = SaleSpec {
        stock: 3,
        per_user_limit: 1,
        start_ms: now_ms() - 1000,
        end_ms: now_ms() + 3_600_000,
    };
    for (sale, master) in sales_on_every_master(c, "cl") {
        s.create_sale(&sale, &spec).unwrap();
        let t = s.issue_token(&sale, 7, Duration::from_secs(60)).unwrap();
        let p = s.purchase(&sale, 7, &t.token).unwrap();
        assert_eq!(p.remaining, 2, "sale on master node {master}");
        let st = s.state(&sale).unwrap();
        assert!(st.conserved() && st.held == 1);
        s.settle(&p.order_id, stock::Settlement::Paid).unwrap();
        assert_eq!(s.buyers(&sale).unwrap(), vec![(7, 1)]);
        // The keys really are on that master.
        let keys = c
            .query(
                c.port(master),
                &["EXISTS", &stock::keys::SaleKeys::new(&sale).stock],
            )
            .unwrap();
        assert_eq!(keys, "1");
    }
    assert!(s.store_epoch().unwrap().is_some());

    // A master that lost its scripts answers NOSCRIPT: the script is loaded there and
    // the call goes through.
    let (sale, master) = sales_on_every_master(c, "noscript").remove(1);
    c.query(c.port(master), &["SCRIPT", "FLUSH"]).unwrap();
    s.create_sale(&sale, &spec).unwrap();
    let t = s.issue_token(&sale, 8, Duration::from_secs(60)).unwrap();
    s.purchase(&sale, 8, &t.token).unwrap();

    // Control plane: switch write (MULTI in the {cluster} slot), read (two slots), audit.
    let mut conn = stock::connect(&c.url(), Duration::from_secs(2)).unwrap();
    let entry = stock::control::AuditEntry {
        ts_ms: now_ms(),
        actor: "test",
        peer: "127.0.0.1",
        instance: "t",
        action: "set_switches",
        detail: "{}",
    };
    stock::control::write_switches(
        &mut conn,
        "clustertest",
        &[("pause_all", "true".into())],
        &entry,
    )
    .unwrap();
    let (epoch, switches) = stock::control::read(&mut conn, "clustertest").unwrap();
    assert!(epoch.is_some());
    assert_eq!(switches.get("pause_all").map(String::as_str), Some("true"));
    stock::control::audit(&mut conn, "clustertest", &entry).unwrap();
    assert_eq!(
        stock::control::recent_audit(&mut conn, "clustertest", 10)
            .unwrap()
            .len(),
        2
    );
}
