//! The writer's `/readyz`: ready while its fetch loop polls and PostgreSQL answers, and
//! it says whether the group gave it partitions (`consuming`).

mod harness;

use harness::Lane;
use std::time::{Duration, Instant};

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_consuming_writer_is_ready_and_one_without_its_database_is_not() {
    let lane = Lane::new(2);
    let writer = lane.writer(&[("SECKILL_RECONCILE_POLL_MS", "0")]);
    let body = wait_for(
        "the writer ready and consuming",
        Duration::from_secs(30),
        || {
            let (status, body) = writer.get("/readyz");
            (status == 200 && body.contains("\"consuming\":true")).then_some(body)
        },
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["ready"], true);
    assert_eq!(v["database"], true);
    assert_eq!(v["assigned_partitions"], 2);

    // The same lane, its database on a port nobody listens on.
    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/seckill",
        stackctl::process::free_port()
    );
    let blind = lane.writer(&[
        ("SECKILL_DATABASE_URL", dead.as_str()),
        ("SECKILL_GROUP_ID", "readiness-blind"),
        ("SECKILL_RECONCILE_POLL_MS", "0"),
    ]);
    // Give it the time a ready writer needs, then it must still say not ready, and why.
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = blind.get("/readyz");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (v["ready"].clone(), v["database"].clone()),
        (false.into(), false.into()),
        "{body}"
    );
    let health = blind.get("/healthz");
    assert_eq!(health.0, 200, "alive all the same: {health:?}");
}
