//! The TLS profile of the stack refuses what a managed deployment refuses: for Redis,
//! PostgreSQL and Kafka each, a plaintext client, a wrong password and a client without
//! the CA are turned away, the right credentials over TLS get in, and the components'
//! users may do only their part (Redis ACLs, the writer's PostgreSQL role). The
//! profile runs on a private stack (its own run directory and ports), stopped at the
//! end.

use rdkafka::consumer::{BaseConsumer, Consumer};
use seckill_common::tls::{connect_postgres, TlsFiles};
use stackctl::secure::{ADMIN, GATEWAY, WRITER};
use std::time::Duration;

/// The private stack, stopped when dropped (a failing check included).
struct Private(stackctl::Stack);

impl Drop for Private {
    fn drop(&mut self) {
        self.0.down();
    }
}

fn private_stack() -> Private {
    let run = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-profile");
    let stack = stackctl::Stack::new(stackctl::Spec {
        run,
        redis_port: 16395,
        pg_port: 15445,
        kafka_port: 19195,
        kafka_nodes: 1,
        topics: vec![("orders".into(), 1)],
        tls: true,
        tracing: false,
    })
    .expect("stack");
    let private = Private(stack);
    private.0.up().expect("the TLS profile comes up");
    private
}

fn password(stack: &stackctl::Stack, user: &str) -> String {
    stack
        .secure
        .as_ref()
        .expect("tls")
        .password(user)
        .expect("password")
}

/// Whether `error` says the server's certificate is not trusted (rustls's words), or that
/// the system has no roots to trust it with: a refusal for the CA, not for anything else.
fn untrusted(error: &str) -> bool {
    let e = error.to_lowercase();
    e.contains("unknownissuer") || e.contains("unknown issuer") || e.contains("no trusted ca")
}

/// One command's reply; an error reply is an `Err` too.
fn run(c: &mut stock::Conn, cmd: &redis::Cmd) -> Result<String, String> {
    match stock::Exec::exec(c, cmd) {
        Ok(redis::Value::ServerError(e)) => Err(format!("{e:?}")),
        Ok(v) => Ok(format!("{v:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn redis_ping(url: &str) -> Result<String, String> {
    let mut c = stock::connect(url, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    run(&mut c, &redis::cmd("PING"))
}

fn redis_checks(stack: &stackctl::Stack) {
    let a = stack.addresses();
    let port = stack.redis.port;
    // The CA, as a component configures it (tools read it from the stack).
    stock::tls::use_tls(&TlsFiles {
        name: "redis".into(),
        ca: a.redis_ca_file.clone(),
        ..TlsFiles::default()
    })
    .expect("redis TLS material");
    assert!(
        redis_ping(&a.redis_url).is_ok_and(|p| p.contains("PONG")),
        "the administrator gets in over TLS"
    );
    let plain = redis_ping(&format!(
        "redis://{ADMIN}:{}@127.0.0.1:{port}",
        password(stack, ADMIN)
    ));
    assert!(plain.is_err(), "a plaintext client is refused: {plain:?}");
    let wrong = redis_ping(&format!(
        "rediss://{GATEWAY}:not-the-password@127.0.0.1:{port}"
    ));
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("WRONGPASS") || e.contains("authentication failed")),
        "a wrong password is refused: {wrong:?}"
    );
    let nobody = redis_ping(&format!("rediss://127.0.0.1:{port}"));
    assert!(nobody.is_err(), "the default user is off: {nobody:?}");
    // Without the CA (the system's roots only), the server's certificate is not trusted.
    let no_ca = redis::Client::open(a.redis_url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(3)))
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(
        no_ca.as_ref().is_err_and(|e| untrusted(e)),
        "a client without the CA is refused for the certificate: {no_ca:?}"
    );
    // The gateway's user: the project's keys, no dangerous command.
    let gw = format!(
        "rediss://{GATEWAY}:{}@127.0.0.1:{port}",
        password(stack, GATEWAY)
    );
    let mut c = stock::connect(&gw, Duration::from_secs(3)).expect("the gateway's user gets in");
    assert!(run(&mut c, redis::cmd("GET").arg("sk:tls-profile")).is_ok());
    let other = run(&mut c, redis::cmd("GET").arg("other:key"));
    assert!(
        other
            .as_ref()
            .is_err_and(|e| e.to_uppercase().contains("NOPERM")),
        "a key outside sk:* is refused: {other:?}"
    );
    let flush = run(&mut c, &redis::cmd("FLUSHALL"));
    assert!(
        flush
            .as_ref()
            .is_err_and(|e| e.to_uppercase().contains("NOPERM")),
        "FLUSHALL is refused: {flush:?}"
    );
}

fn pg_checks(stack: &stackctl::Stack) {
    let a = stack.addresses();
    let port = stack.postgres.port;
    let tls = a.database_tls();
    let select = |url: &str, tls: &TlsFiles| {
        connect_postgres(url, "", tls, |c| {
            c.connect_timeout(Duration::from_secs(3));
        })
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            c.simple_query("SELECT 1")
                .map(|_| c)
                .map_err(|e| e.to_string())
        })
    };
    assert!(
        select(&a.database_url, &tls).is_ok(),
        "the administrator gets in over TLS"
    );
    let url = |user: &str, pw: &str, mode: &str| {
        format!("postgres://{user}:{pw}@127.0.0.1:{port}/seckill?sslmode={mode}")
    };
    let plain = select(
        &url(ADMIN, &password(stack, ADMIN), "disable"),
        &TlsFiles::default(),
    )
    .map(|_| ());
    assert!(
        plain
            .as_ref()
            .is_err_and(|e| e.contains("no encryption") || e.contains("pg_hba")),
        "a plaintext client is refused: {plain:?}"
    );
    let wrong = select(&url(WRITER, "not-the-password", "verify-full"), &tls).map(|_| ());
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "a wrong password is refused: {wrong:?}"
    );
    let no_ca = select(
        &url(ADMIN, &password(stack, ADMIN), "require"),
        &TlsFiles {
            name: "database".into(),
            ..TlsFiles::default()
        },
    );
    let no_ca = no_ca.map(|_| ());
    assert!(
        no_ca.as_ref().is_err_and(|e| untrusted(e)),
        "a client without the CA is refused for the certificate: {no_ca:?}"
    );
    // The writer's role: rows, never the schema.
    let mut writer = select(&url(WRITER, &password(stack, WRITER), "verify-full"), &tls)
        .expect("the writer's role gets in");
    let ddl = writer
        .simple_query("CREATE TABLE tls_profile_probe (x int)")
        .map_err(|e| seckill_common::tls::with_sources(&e));
    assert!(
        ddl.as_ref().is_err_and(|e| e.contains("permission denied")),
        "the writer's role may not change the schema: {ddl:?}"
    );
}

fn kafka_metadata(settings: &[(&str, String)]) -> Result<usize, String> {
    let mut cfg = rdkafka::ClientConfig::new();
    for (k, v) in settings {
        cfg.set(*k, v);
    }
    let c: BaseConsumer = cfg
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
        .create()
        .map_err(|e| e.to_string())?;
    c.fetch_metadata(None, Duration::from_secs(5))
        .map(|m| m.brokers().len())
        .map_err(|e| e.to_string())
}

fn kafka_checks(stack: &stackctl::Stack) {
    let s = stack.secure.as_ref().expect("tls");
    let brokers = stack.kafka.bootstrap();
    let full = |user: &str, pw: &str| {
        vec![
            ("bootstrap.servers", brokers.clone()),
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanisms", "SCRAM-SHA-512".to_string()),
            ("sasl.username", user.to_string()),
            ("sasl.password", pw.to_string()),
            ("ssl.ca.location", s.ca().display().to_string()),
            (
                "ssl.certificate.location",
                s.client_cert().display().to_string(),
            ),
            ("ssl.key.location", s.client_key().display().to_string()),
        ]
    };
    let without = |settings: Vec<(&'static str, String)>, drop: &[&str]| {
        settings
            .into_iter()
            .filter(|(k, _)| !drop.contains(k))
            .collect::<Vec<_>>()
    };
    let gw = password(stack, GATEWAY);
    assert_eq!(
        kafka_metadata(&full(GATEWAY, &gw)),
        Ok(1),
        "the gateway's user gets in"
    );
    let plain = kafka_metadata(&[("bootstrap.servers", brokers.clone())]);
    assert!(plain.is_err(), "a plaintext client is refused: {plain:?}");
    let wrong = kafka_metadata(&full(GATEWAY, "not-the-password"));
    assert!(wrong.is_err(), "a wrong password is refused: {wrong:?}");
    let no_cert = kafka_metadata(&without(
        full(GATEWAY, &gw),
        &["ssl.certificate.location", "ssl.key.location"],
    ));
    assert!(
        no_cert.is_err(),
        "a client without a certificate is refused: {no_cert:?}"
    );
    let no_ca = kafka_metadata(&without(full(GATEWAY, &gw), &["ssl.ca.location"]));
    assert!(
        no_ca.is_err(),
        "a client without the CA is refused: {no_ca:?}"
    );
}

#[test]
fn each_dependency_refuses_plaintext_wrong_passwords_and_clients_without_the_ca() {
    let stack = private_stack();
    redis_checks(&stack.0);
    pg_checks(&stack.0);
    kafka_checks(&stack.0);
}
