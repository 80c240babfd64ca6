//! chaos's command line: clap's standard `--help`, `--version` and usage errors (exit
//! status 2), drills named by number or name, and `list` as the default. Nothing here
//! starts the drill stack: every command line is refused or only lists.

use testkit::cli::{self, assert_help, assert_standard, assert_usage_error};

const BIN: &str = env!("CARGO_BIN_EXE_chaos");

#[test]
fn help_version_and_usage_errors_are_standard() {
    assert_standard(
        BIN,
        "chaos",
        env!("CARGO_PKG_VERSION"),
        &["list", "all", "ci", "campaign"],
        &["DRILL"],
    );
    assert_help(
        BIN,
        &["campaign", "--help"],
        &["--seed", "--minutes", "--cluster"],
    );
}

#[test]
fn no_argument_and_list_name_every_drill() {
    for args in [&[][..], &["list"][..]] {
        let out = cli::run(BIN, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for (n, name, _, _) in chaos::drills::DRILLS {
            assert!(
                stdout.contains(&format!("  {n}  {name} ")),
                "{args:?}: {stdout}"
            );
        }
    }
}

#[test]
fn a_command_line_that_does_not_parse_exits_2() {
    assert_usage_error(BIN, &["99"], "no drill 99");
    assert_usage_error(BIN, &["3", "no-such-drill"], "no drill no-such-drill");
    assert_usage_error(BIN, &["campaign", "--minutes", "0"], "bad minutes 0");
    assert_usage_error(BIN, &["campaign", "--minutes", "121"], "bad minutes 121");
    assert_usage_error(BIN, &["campaign", "--seed", "x"], "--seed");
    assert_usage_error(BIN, &["campaign", "7"], "'7'");
}
