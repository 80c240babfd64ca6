//! The command lines of seckill-load, seckill-soak, seckill-demo and seckill-plot: clap's standard
//! `--help`, `--version` and usage errors (exit status 2). Needs no stack: nothing here
//! gets past the parser.

use testkit::cli::{assert_help, assert_standard, assert_usage_error};

const LOAD: &str = env!("CARGO_BIN_EXE_seckill-load");
const SOAK: &str = env!("CARGO_BIN_EXE_seckill-soak");
const DEMO: &str = env!("CARGO_BIN_EXE_seckill-demo");
const PLOT: &str = env!("CARGO_BIN_EXE_seckill-plot");
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn seckill_load_is_standard() {
    let scenarios = ["rush", "click-storm", "bots", "browse", "mix"];
    assert_standard(
        LOAD,
        "seckill-load",
        VERSION,
        &[&scenarios[..], &["verify"]].concat(),
        &[],
    );
    for s in scenarios {
        assert_help(
            LOAD,
            &[s, "--help"],
            &[
                "--host",
                "--admin-url",
                "GATEWAY_ADMIN_URL",
                "--units",
                "--out",
                "--expected-interval-us",
                "--topic",
                "SECKILL_ORDERS_TOPIC",
            ],
        );
    }
    assert_help(
        LOAD,
        &["verify", "--help"],
        &["--sale", "--acked", "--topic"],
    );
    assert_usage_error(LOAD, &["stampede"], "'stampede'");
    assert_usage_error(LOAD, &["verify", "--sale", "s"], "--acked");
    assert_usage_error(LOAD, &["rush", "--units", "-1"], "'-1'");
    // Goose's flags go after `--`.
    assert_usage_error(LOAD, &["rush", "--users", "8"], "'--users'");
}

#[test]
fn seckill_soak_is_standard() {
    let flags = [
        "--gateway",
        "--admin-url",
        "--gateway-pid",
        "--hostile",
        "--buyers",
        "--units",
        "--clients",
        "--pipelines",
        "--pipeline-requests",
        "--byte-interval-ms",
        "--hold-secs",
        "--max-opened",
        "--reopen-after-ms",
        "--topic",
        "--max-rss-growth-mb",
        "--p99-factor",
        "--p99-slack-ms",
        "--timeout-ms",
        "--timeout-grace-ms",
        "GATEWAY_URL",
        "GATEWAY_ADMIN_URL",
    ];
    assert_standard(SOAK, "seckill-soak", VERSION, &[], &flags);
    assert_usage_error(SOAK, &["--hostile", "many"], "--hostile");
}

#[test]
fn seckill_demo_is_standard() {
    let flags = [
        "--gateway",
        "--admin-url",
        "GATEWAY_ADMIN_URL",
        "--units",
        "--buyers",
        "--clients",
        "--buckets",
    ];
    assert_standard(DEMO, "seckill-demo", VERSION, &[], &flags);
    assert_usage_error(DEMO, &["--units"], "--units");
    assert_usage_error(DEMO, &["--buyers", "x"], "--buyers");
}

#[test]
fn seckill_plot_is_standard() {
    assert_standard(
        PLOT,
        "seckill-plot",
        VERSION,
        &[],
        &["DIR", "--history", "--strict"],
    );
    assert_usage_error(PLOT, &[], "<DIR>");
    assert_usage_error(PLOT, &["dir", "--history"], "--history");
    let out = testkit::cli::run(PLOT, &["/nonexistent/bench-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(testkit::cli::stderr(&out).contains("not a bench run's folder"));
}

/// A run with only the writer's output: that chart drawn, the others named with the
/// file they lack; --strict (the smoke run) makes the missing charts a failure.
#[test]
fn seckill_plot_draws_what_it_has_and_strict_fails_on_the_rest() {
    let dir = std::env::temp_dir().join(format!("seckill-plot-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("writer.txt"),
        "median rows/s: writer 100 write-alone 200 copy 300 copy-no-fk 400\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    for (args, code) in [(vec![d], 0), (vec![d, "--strict"], 1)] {
        let out = testkit::cli::run(PLOT, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stdout}");
        assert!(stdout.contains("](plots/writer_vs_copy.svg)"), "{stdout}");
        assert!(
            stdout.contains("not drawn: ") && stdout.contains("scaleout.json"),
            "{stdout}"
        );
        assert!(stdout.contains("Not compared: "), "{stdout}");
    }
    assert!(
        std::fs::read_to_string(dir.join("plots/writer_vs_copy.svg"))
            .unwrap()
            .contains("400")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
