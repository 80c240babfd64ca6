//! The order-writer's command line: clap's standard `--help`, `--version` and usage
//! errors (exit status 2), and `--config` from the flag or `SECKILL_CONFIG`, wherever
//! it stands. Needs no stack: `config` only reads and prints.

use testkit::cli::{self, assert_help, assert_standard};

const BIN: &str = env!("CARGO_BIN_EXE_order-writer");

#[test]
fn help_version_and_usage_errors_are_standard() {
    assert_standard(
        BIN,
        "order-writer",
        env!("CARGO_PKG_VERSION"),
        &["rebuild-stock", "config"],
        &["--config"],
    );
    assert_help(BIN, &["rebuild-stock", "--help"], &["SALE", "--config"]);
}

/// A file of the test's own whose `batch_max` is not the default.
fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", testkit::unique("writer_cli")));
    std::fs::write(&path, "batch_max = 7\n").unwrap();
    path
}

#[test]
fn config_comes_from_the_flag_anywhere_or_from_seckill_config() {
    let path = config_file();
    let file = path.to_str().unwrap();
    for (args, env) in [
        (&["--config", file, "config"][..], None),
        (&["config", "--config", file][..], None),
        (&["config"][..], Some(file)),
    ] {
        let env: Vec<(&str, &str)> = env.map(|f| ("SECKILL_CONFIG", f)).into_iter().collect();
        let out = cli::run_with(BIN, args, &env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            cli::stderr(&out)
        );
        assert!(stdout.contains("batch_max = 7"), "{args:?}: {stdout}");
    }
    let _ = std::fs::remove_file(&path);
    // The writer itself and rebuild-stock read it too (and stop at once on a missing one).
    for args in [&[][..], &["rebuild-stock", "s1", "s2"][..]] {
        let out = cli::run_with(BIN, args, &[("SECKILL_CONFIG", "/nonexistent/writer.toml")]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            cli::stderr(&out).contains("cannot read config file /nonexistent/writer.toml"),
            "{args:?}: {}",
            cli::stderr(&out)
        );
    }
}

/// The writer refuses to start (and `config` to print) when its TLS material is
/// missing, naming the setting and the file.
#[test]
fn missing_tls_material_stops_the_start_with_its_setting_named() {
    for (var, setting) in [
        ("SECKILL_DATABASE_CA_FILE", "database_ca_file"),
        ("SECKILL_REDIS_CA_FILE", "redis_ca_file"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_order-writer"))
            .arg("config")
            .env(var, "/nonexistent/ca.pem")
            .output()
            .expect("run the writer");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "{setting} = \"/nonexistent/ca.pem\": cannot read it"
            )),
            "{err}"
        );
    }
}
