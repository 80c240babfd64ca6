//! A gateway refuses to start when its TLS material is missing or unreadable, naming
//! the setting and the file, before it connects to anything (no stack needed).

use std::process::Command;

fn start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("SECKILL_DEV_INSECURE", "1")
        .env("SECKILL_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .expect("run the gateway");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_or_unreadable_tls_material_stops_the_start_with_its_setting_named() {
    let url = ("SECKILL_REDIS_URL", "rediss://seckill_gateway@127.0.0.1:1");
    let (code, err) = start(&[url, ("SECKILL_REDIS_CA_FILE", "/nonexistent/ca.pem")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("redis_ca_file = \"/nonexistent/ca.pem\": cannot read it"),
        "{err}"
    );

    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-start");
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    let (code, err) = start(&[url, ("SECKILL_REDIS_CA_FILE", &junk)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("redis_ca_file") && err.contains("no certificate in it"),
        "{err}"
    );

    // A client certificate without its key.
    let (code, err) = start(&[url, ("SECKILL_REDIS_CERT_FILE", &junk)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("redis_cert_file needs redis_key_file too"),
        "{err}"
    );

    // A password file that cannot be read.
    let (code, err) = start(&[url, ("SECKILL_REDIS_PASSWORD_FILE", "/nonexistent/pass")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("redis_password_file = \"/nonexistent/pass\": cannot read it"),
        "{err}"
    );

    // Kafka's CA (librdkafka reads it when the producer is made).
    let (code, err) = start(&[(
        "SECKILL_KAFKA_EXTRA",
        "security.protocol=SSL,ssl.ca.location=/nonexistent/kafka-ca.pem",
    )]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("ssl.ca.location"), "{err}");
}
