//! stackctl's command line: clap's standard `--help`, `--version` and usage errors (exit
//! status 2). Nothing here starts a service: every command line is refused or only
//! asks for help.

use testkit::cli::{self, assert_help, assert_standard, assert_usage_error};

const BIN: &str = env!("CARGO_BIN_EXE_stackctl");

#[test]
fn help_version_and_usage_errors_are_standard() {
    assert_standard(
        BIN,
        "stackctl",
        env!("CARGO_PKG_VERSION"),
        &[
            "up",
            "down",
            "status",
            "env",
            "stop",
            "start",
            "kill",
            "pause",
            "resume",
            "with-services",
            "balancer",
            "canary",
        ],
        &[],
    );
    assert_help(
        BIN,
        &["balancer", "--help"],
        &["start", "reload", "stop", "status", "--name"],
    );
    assert_help(
        BIN,
        &["balancer", "start", "--help"],
        &["--port", "--stable", "--canary", "--name"],
    );
    assert_help(
        BIN,
        &["canary", "--help"],
        &["set", "promote", "rollback", "status", "--name"],
    );
    assert_help(BIN, &["canary", "set", "--help"], &["--header", "--name"]);
    assert_help(BIN, &["with-services", "--help"], &["--cluster"]);
}

#[test]
fn a_command_line_that_does_not_parse_exits_2() {
    // No command: the help, on standard error, as a usage error.
    let out = cli::run(BIN, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        cli::stderr(&out).contains("with-services"),
        "{}",
        cli::stderr(&out)
    );
    assert_usage_error(BIN, &["stop"], "<SERVICE>");
    assert_usage_error(BIN, &["kill", "mysql"], "no service mysql");
    assert_usage_error(BIN, &["with-services"], "<CMD>");
    assert_usage_error(BIN, &["balancer", "start", "--port", "18090"], "--stable");
    assert_usage_error(
        BIN,
        &[
            "balancer",
            "start",
            "--port",
            "x",
            "--stable",
            "127.0.0.1:1",
        ],
        "--port",
    );
    assert_usage_error(
        BIN,
        &["balancer", "start", "--port", "1", "--stable", ","],
        "at least one",
    );
    assert_usage_error(BIN, &["canary", "set"], "<SHARE>");
    assert_usage_error(BIN, &["canary", "set", "2"], "outside 0..1");
    assert_usage_error(
        BIN,
        &["canary", "set", "0.1", "--header", "maybe"],
        "--header",
    );
}
