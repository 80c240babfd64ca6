//! Memory of the keyed limiters with 1,000,000 distinct users, and after the sweep.
//! `cargo run --release -p gateway --example limiter_memory`

use gateway::limits::{Limits, Rates};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rates = Rates {
        global_rps: 1_000_000_000,
        global_burst: 1_000_000_000,
        user_rps: 5,
        user_burst: 10,
        ip_rps: 2000,
        ip_burst: 4000,
    };
    let limits = Limits::new(rates);
    let before = rss_kib();
    let t0 = Instant::now();
    for user in 0..1_000_000u64 {
        let _ = limits.check(
            user,
            Some(std::net::IpAddr::from([
                127,
                0,
                (user >> 8) as u8,
                user as u8,
            ])),
        );
    }
    let filled = rss_kib();
    let (users, ips) = limits.tracked();
    println!(
        "1,000,000 users checked in {:.2?}: {users} user keys, {ips} ip keys, RSS +{} MiB",
        t0.elapsed(),
        (filled - before) / 1024
    );
    // A key with one request refills in 1/user_rps = 200 ms; then the sweep forgets it.
    std::thread::sleep(Duration::from_millis(400));
    let t1 = Instant::now();
    let (users, ips) = limits.sweep();
    println!(
        "after the sweep ({:.2?}): {users} user keys, {ips} ip keys, RSS +{} MiB",
        t1.elapsed(),
        rss_kib().saturating_sub(before) / 1024
    );
}
