//! What the end-to-end tests share: a gateway and an order-writer on the local stack,
//! with their own topic, consumer group, name, spool and log.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

/// A workspace binary, built beside this test by `cargo test --workspace` / nextest.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: build the workspace first (cargo build -p {name})",
        path.display()
    );
    path
}

#[allow(unused_imports)]
pub use testkit::{now_ms, unique};

/// A gateway and an order-writer started for one test.
pub struct Services {
    pub stack: seckill_common::stack::Stack,
    pub topic: String,
    /// The gateway's public listener (the buyers').
    pub base: String,
    /// Its internal listener: the admin API and the payment callback.
    pub internal: String,
    pub tag: String,
    pub gateway: stackctl::process::Proc,
    pub writer: stackctl::process::Proc,
}

impl Services {
    /// `name` prefixes the processes' names; `env` is added to both processes' (after
    /// the stack's, so it may point them elsewhere), `gateway_env` to the gateway's.
    pub fn start(
        name: &str,
        secret: &str,
        admin: &str,
        env: &[(&str, String)],
        gateway_env: &[(&str, String)],
    ) -> Services {
        let stack = stackctl::ensure_up();
        let ctl = stackctl::Stack::from_env().unwrap();
        let tag = unique("run");
        let topic = format!("orders_{name}_{tag}");
        seckill_common::kafka::create_topic(&stack.kafka_brokers, &topic, 4).unwrap();
        let common = [
            &[
                ("SECKILL_ORDERS_TOPIC", topic.clone()),
                ("SECKILL_LOG", "warn".to_string()),
            ][..],
            env,
        ]
        .concat();
        let gateway = ctl
            .gateway(
                &binary("gateway"),
                &format!("{name}-gw-{tag}"),
                &[
                    &common[..],
                    &[
                        ("SECKILL_TICKET_SECRET", secret.to_string()),
                        ("SECKILL_ADMIN_TOKEN", admin.to_string()),
                        ("SECKILL_IP_RPS", "1000000".to_string()),
                        ("SECKILL_IP_BURST", "1000000".to_string()),
                        ("SECKILL_MAX_CONNECTIONS_PER_IP", "0".to_string()),
                    ],
                    gateway_env,
                ]
                .concat(),
            )
            .unwrap();
        let writer = ctl
            .writer(
                &binary("order-writer"),
                &format!("{name}-writer-{tag}"),
                &[
                    &common[..],
                    &[("SECKILL_GROUP_ID", format!("writers_{tag}"))],
                ]
                .concat(),
            )
            .unwrap();
        let base = gateway.url();
        testkit::wait_for("the gateway to start", Duration::from_secs(20), || {
            loadtest::buyer::Client::new(&base, secret)
                .sale("x")
                .map(|a| a.status)
                .unwrap_or(0)
                != 0
        });
        Services {
            stack,
            topic,
            base,
            internal: gateway.internal_url(),
            tag,
            gateway,
            writer,
        }
    }
}
