//! The command lines of seckill-load, seckill-soak and seckill-demo: clap's standard
//! `--help`, `--version` and usage errors (exit status 2). Needs no stack: nothing here
//! gets past the parser.

use testkit::cli::{assert_help, assert_standard, assert_usage_error};

const LOAD: &str = env!("CARGO_BIN_EXE_seckill-load");
const SOAK: &str = env!("CARGO_BIN_EXE_seckill-soak");
const DEMO: &str = env!("CARGO_BIN_EXE_seckill-demo");
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
