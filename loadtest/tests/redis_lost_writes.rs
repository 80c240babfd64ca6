//! Redis loses its last writes but keeps the sale: restarted from an append-only file
//! synced every second after the machine lost its page cache. Simulated faithfully: the
//! incremental AOF is cut back to its size at an earlier moment (what the disk held)
//! before Redis restarts from it. Ten acknowledged orders are gone from Redis, their
//! messages on the topic. The gateway must hold purchases (503 `store_recovering`) —
//! selling now would resell those units — until the order-writer's reconciler has put
//! them back; then the sale sells out exactly, every 202 in PostgreSQL once.

mod common;

use common::{now_ms, Services};
use loadtest::buyer::Client;
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "lost-writes-secret";
const ADMIN: &str = "lost-writes-admin";
const UNITS: u64 = 30;

/// A Redis with an append-only file synced every second, under `dir`.
fn redis(port: u16, dir: &Path) -> stackctl::redis::Redis {
    let r = stackctl::redis::Redis {
        dir: dir.to_path_buf(),
        port,
    };
    r.up_with(stackctl::redis::Persistence::AppendOnly)
        .expect("redis with an AOF");
    r
}

/// A fresh database `name` beside the stack's; its URL.
fn own_database(stack_db: &str, name: &str) -> String {
    let mut admin = postgres::Client::connect(stack_db, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    match stack_db.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("database url {stack_db}"),
    }
}

/// A port below the ephemeral range, free now.
fn port() -> u16 {
    (0..200)
        .map(|i| 16500 + ((std::process::id() as u16 % 100) * 2 + i) % 400)
        .find(|p| !stackctl::process::port_open(*p))
        .expect("a free port")
}

/// Buy for `user`: token, then order; the order's answer.
fn buy(c: &Client, sale: &str, user: u64) -> (u16, String, Option<String>, String) {
    let t = c.token(sale, user).unwrap();
    if t.status / 100 != 2 {
        return (t.status, t.code().to_string(), None, String::new());
    }
    let token = t.str("token").unwrap().to_string();
    let o = c.order(sale, user, &token).unwrap();
    (
        o.status,
        o.code().to_string(),
        o.str("order_id").map(str::to_string),
        token,
    )
}

/// Every 202 so far: (order id, user), and the token behind each.
#[derive(Default)]
struct Acked {
    orders: Vec<(String, u64)>,
    tokens: Vec<String>,
}

impl Acked {
    /// Keep `user`'s purchase `r` if it was a 202; its status.
    fn take(&mut self, user: u64, r: (u16, String, Option<String>, String)) -> u16 {
        if r.0 == 202 {
            self.orders.push((r.2.unwrap(), user));
            self.tokens.push(r.3);
        }
        r.0
    }
}

/// The machine dies: the disk kept `aof` as it was at `kept` bytes. Redis is killed,
/// the file cut back, Redis restarted from it; the new server and when it restarted.
fn lose_the_last_writes(
    server: &stackctl::redis::Redis,
    aof: &Path,
    kept: u64,
) -> (stackctl::redis::Redis, Instant) {
    let pid = server.pid().expect("redis running");
    stackctl::process::signal(pid, stackctl::process::SIGKILL).unwrap();
    testkit::wait_for("the killed Redis gone", Duration::from_secs(5), || {
        !stackctl::process::alive(pid)
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(aof)
        .unwrap()
        .set_len(kept)
        .unwrap();
    let restarted = Instant::now();
    (redis(server.port, &server.dir), restarted)
}

/// No sale is created on a store not yet reconciled: one a master lost must come back
/// with its orders, never again with its whole stock. (The gateway may first meet the
/// lost connection: 503 redis_unavailable, then the fence.)
fn no_new_sale_before_the_reconcile(c: &Client, sale: &str, now: i64) {
    let mut create = 0;
    loop {
        create += 1;
        match c.create_sale(ADMIN, &format!("{sale}_new"), 5, now - 1000, now + 600_000) {
            Err(loadtest::buyer::LoadError::Unexpected { status: 503, body })
                if body.contains("redis_unavailable") && create < 50 =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(loadtest::buyer::LoadError::Unexpected { status: 503, body })
                if body.contains("store_recovering") =>
            {
                break
            }
            other => panic!("a sale created before the reconcile: {other:?}"),
        }
    }
}

/// Buyers keep coming: held (503 store_recovering) until the reconcile, then served
/// until the sale is sold out. How many were held, and when the first 202 came.
fn buy_until_sold_out(
    c: &Client,
    sale: &str,
    acked: &mut Acked,
    restarted: Instant,
) -> (u32, Option<Duration>) {
    let (mut recovering, mut first_202) = (0, None);
    let mut user = 21;
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked.orders.len() < UNITS as usize {
        assert!(
            Instant::now() < deadline,
            "not sold out in time: {} acked",
            acked.orders.len()
        );
        // A fresh buyer each time (a held buyer would soon meet its own rate limit).
        let r = buy(c, sale, user);
        user += 1;
        match (r.0, r.1.as_str()) {
            (202, _) => {
                first_202.get_or_insert(restarted.elapsed());
                acked.take(user - 1, r);
            }
            (503, "store_recovering") => {
                recovering += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (503, _) | (429, _) => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("user {}: unexpected {other:?}", user - 1),
        }
    }
    (recovering, first_202)
}

#[test]
fn lost_writes_hold_purchases_until_the_orders_are_back() {
    let port = port();
    let dir = stackctl::Stack::from_env()
        .unwrap()
        .run
        .join(format!("test-aof-{port}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = redis(port, &dir);
    let url = server.url();
    // Its own database too: the reconcile looks at every live sale PostgreSQL knows,
    // and other tests' sales live in the stack's other Redis.
    let db = own_database(
        &stackctl::ensure_up().database_url,
        &format!("lostw_{port}_{}", std::process::id()),
    );
    let env = [
        ("SECKILL_REDIS_URL", url.clone()),
        ("SECKILL_DATABASE_URL", db.clone()),
        ("SECKILL_RECONCILE_GRACE_MS", "500".to_string()),
    ];
    let svc = Services::start("lostw", SECRET, ADMIN, &env, &[]);
    let c = Client::new(&svc.base, SECRET).with_internal(&svc.internal);
    let sale = format!("lostw_{}", svc.tag);
    let now = now_ms();
    c.create_sale(ADMIN, &sale, UNITS as i64, now - 1000, now + 600_000)
        .unwrap();

    let mut acked = Acked::default();
    // The wait for readiness lets the gateway confirm the store; then ten orders.
    for user in 1..=10 {
        let r = buy(&c, &sale, user);
        assert_eq!(acked.take(user, r.clone()), 202, "{r:?}");
    }
    let aof = stackctl::redis::newest_incr_aof(&server.aof_dir()).expect("an incremental AOF file");
    let kept = std::fs::metadata(&aof).unwrap().len();
    for user in 11..=20 {
        let r = buy(&c, &sale, user);
        assert_eq!(acked.take(user, r.clone()), 202, "{r:?}");
    }
    assert!(
        std::fs::metadata(&aof).unwrap().len() > kept,
        "the last ten were written"
    );

    let (server, restarted) = lose_the_last_writes(&server, &aof, kept);
    let st = stock::Stock::new(stock::connect(&url, Duration::from_secs(2)).unwrap())
        .state(&sale)
        .unwrap();
    assert_eq!(
        (st.held, st.remaining),
        (10, 20),
        "Redis restarted with only the first ten orders"
    );
    no_new_sale_before_the_reconcile(&c, &sale, now);
    let (recovering, first_202) = buy_until_sold_out(&c, &sale, &mut acked, restarted);
    // One more: the sale is sold out (a resold unit would have left one over).
    let last = buy(&c, &sale, 10_000);
    assert_eq!(last.0, 410, "{last:?}");
    assert!(
        recovering > 0,
        "purchases were never held after the restart"
    );
    eprintln!(
        "held {recovering} purchases; first 202 {:?} after the restart",
        first_202
    );

    let mut stack = svc.stack.clone();
    stack.redis_url = url.clone();
    stack.database_url = db.clone();
    let report =
        loadtest::verify::verify_sale(&stack, &svc.topic, &sale, &acked.orders, &acked.tokens)
            .unwrap()
            .report;
    report.print();
    assert!(report.ok());
    server.down();
    let _ = std::fs::remove_dir_all(&dir);
}
