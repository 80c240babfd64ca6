//! The hostile soak at CI size: a few hundred hostile connections (slowloris heads,
//! slow bodies, unread pipelines, half-closed and idle sockets, garbage, too many
//! headers) held against a real gateway while a small rush runs; the gateway's RSS and
//! the rush's p99 stay within bounds relative to the same run's baseline, every hostile
//! connection is answered or closed within the gateway's timeouts, and every invariant
//! holds on both sales.
//!
//! What catches what (`Summary::violations`):
//! - a gateway that kept reading and serving pipelined requests while its output waits
//!   (no output cap): each unread pipeline (on the internal listener, where `/metrics` is)
//!   makes it buffer 5,000 `/metrics` answers, far over the RSS bound → "RSS peak under soak … > idle … + … MB". The ignored test below
//!   proves it by lifting `max_pending_output_bytes` to 1 GiB.
//! - no head/body/write timeout: "… connections held past the timeout";
//! - a refusal not answered (dropped connection): "… closed without the 4xx refusal";
//! - a connection leak: "gateway connections did not drain";
//! - an edge that starves the buyers: "rush p99 with hostile load … > K × … + … ms".

use loadtest::soak::{self, Options, Summary};
use std::time::Duration;

mod common;

const SECRET: &str = "soak-secret";
const ADMIN: &str = "soak-admin";
/// The gateway's head, body and write timeouts in these tests (short, so the test
/// sees them enforced within its hold).
const TIMEOUT_MS: u64 = 3000;

/// Start a gateway (with `gateway_env` added) and an order-writer on the local stack,
/// with their own topic and group, and run the soak against them.
fn soak_against_gateway(
    name: &str,
    gateway_env: &[(&str, String)],
    adjust: impl FnOnce(&mut Options),
) -> Summary {
    let timeouts = TIMEOUT_MS.to_string();
    let tag = common::unique("soak");
    let svc = common::Services::start(
        name,
        SECRET,
        ADMIN,
        &[],
        &[
            &[
                ("SECKILL_CLUSTER", format!("soak_{tag}")),
                ("SECKILL_HEAD_TIMEOUT_MS", timeouts.clone()),
                ("SECKILL_BODY_TIMEOUT_MS", timeouts.clone()),
                ("SECKILL_WRITE_TIMEOUT_MS", timeouts),
            ][..],
            gateway_env,
        ]
        .concat(),
    );
    let (stack, topic, base) = (&svc.stack, &svc.topic, &svc.base);

    let mut o = Options::new(base, &svc.internal, SECRET, ADMIN, topic, 300);
    o.gateway_pid = Some(svc.gateway.pid());
    o.mix = soak::Mix::with_pipelines(300, 10);
    o.pipeline_requests = 5000;
    o.max_opened = 5000;
    o.buyers = 2000;
    o.units = 500;
    o.clients = 8;
    o.hold = Duration::from_secs(9);
    o.bounds.timeout_ms = TIMEOUT_MS;
    // Generous for two shared cores (a refused connection lingers up to 2 s before the
    // close, and the soak's own poll loop may lag under load); still seconds, not the
    // minutes an unbounded connection would live.
    o.bounds.timeout_grace_ms = 10_000;
    // 300 connections (a coroutine, its buffers) and 10 pipelines each holding up to
    // the 1 MiB output cap: some tens of MB; a gateway without the cap buffers
    // hundreds of MB (10 × 5,000 `/metrics` answers).
    o.bounds.rss_growth_mb = 96;
    o.bounds.p99_factor = 4.0;
    o.bounds.p99_slack_ms = 50;
    o.verbose = true;
    adjust(&mut o);
    let summary = soak::run(&o, stack).unwrap();
    summary.print();
    summary
}

#[test]
fn hostile_connections_leave_the_rush_and_the_gateway_within_bounds() {
    let s = soak_against_gateway("soak", &[], |_| {});
    let v = s.violations();
    assert!(v.is_empty(), "soak violations: {v:#?}");
    assert!(s.invariants_ok());
    // The soak really held hostile connections and the gateway refused them itself.
    assert!(
        s.hostile.peak_open >= 250,
        "peak open {}",
        s.hostile.peak_open
    );
    // The kinds the gateway ends only by a timeout stay open throughout; the others
    // come and go within a tick, so the sampled gauge need not show them.
    let held: usize = soak::KINDS
        .iter()
        .filter(|k| k.timed())
        .map(|k| soak::Mix::with_pipelines(300, 10).get(*k))
        .sum();
    assert!(
        s.soak_peak_connections as usize >= held * 9 / 10,
        "gateway saw {} connections, {held} hostile ones held",
        s.soak_peak_connections
    );
    assert!(s.hostile.refused_with_status() > 0);
    assert!(s.hostile.closed_by_server() > 0);
}

/// The same soak against a gateway whose output cap is lifted to 1 GiB (as if it kept
/// reading pipelined requests while its answers wait): the RSS bound must catch it.
/// Ignored in CI (a deliberately misconfigured gateway); run with `--ignored`.
#[test]
#[ignore]
fn the_soak_catches_a_gateway_without_an_output_cap() {
    let s = soak_against_gateway(
        "soak-nocap",
        &[("SECKILL_MAX_PENDING_OUTPUT_BYTES", (1u64 << 30).to_string())],
        |_| {},
    );
    let v = s.violations();
    assert!(
        v.iter().any(|x| x.starts_with("RSS peak under soak")),
        "the RSS bound did not catch the uncapped output: {v:#?}"
    );
}
