//! stock-demo's command line: clap's standard `--help`, `--version` and usage errors
//! (exit status 2). Needs no stack: nothing here gets past the parser.

use testkit::cli::{assert_standard, assert_usage_error};

const BIN: &str = env!("CARGO_BIN_EXE_stock-demo");

#[test]
fn stock_demo_is_standard() {
    let flags = ["--units", "--buyers", "--clients", "--cancel-percent"];
    assert_standard(BIN, "stock-demo", env!("CARGO_PKG_VERSION"), &[], &flags);
    assert_usage_error(BIN, &["--units", "many"], "--units");
    assert_usage_error(BIN, &["--cancel-percent"], "--cancel-percent");
    assert_usage_error(BIN, &["500"], "'500'");
}
