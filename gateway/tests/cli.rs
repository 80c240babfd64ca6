//! The gateway's command line: clap's standard `--help`, `--version` and usage errors
//! (exit status 2), the commands operators and scripts type, and the `SECKILL_*`
//! variables its flags also read. Needs no stack: nothing here reaches a server.

use testkit::cli::{self, assert_help, assert_standard, assert_usage_error};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[test]
fn help_version_and_usage_errors_are_standard() {
    assert_standard(
        BIN,
        "gateway",
        env!("CARGO_PKG_VERSION"),
        &["serve", "mint", "config", "switch", "sale"],
        &["--config"],
    );
    assert_help(
        BIN,
        &["switch", "--help"],
        &[
            "list",
            "get",
            "set",
            "clear-local",
            "audit",
            "--url",
            "--token",
        ],
    );
    assert_help(
        BIN,
        &["switch", "set", "--help"],
        &["--local", "--url", "--token"],
    );
    assert_help(
        BIN,
        &["sale", "--help"],
        &["pause", "resume", "--url", "--token"],
    );
    assert_help(BIN, &["mint", "--help"], &["--user", "--ttl-secs"]);
}

#[test]
fn a_command_line_that_does_not_parse_exits_2() {
    assert_usage_error(BIN, &["mint"], "--user");
    assert_usage_error(BIN, &["mint", "--user", "x"], "--user");
    assert_usage_error(BIN, &["sale", "pause"], "<SALE>");
    assert_usage_error(BIN, &["sale", "stop", "s1"], "'stop'");
    assert_usage_error(BIN, &["switch", "set", "pause_all"], "<VALUE>");
    assert_usage_error(BIN, &["switch", "list", "--local"], "'--local'");
}

/// Without a command the gateway serves; `--config` before no command is its file.
#[test]
fn no_command_is_serve_and_config_comes_from_the_flag_or_seckill_config() {
    let out = cli::run(BIN, &["--config", "/nonexistent/gateway.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        cli::stderr(&out).contains("cannot read config file /nonexistent/gateway.toml"),
        "{}",
        cli::stderr(&out)
    );
    for args in [&["config"][..], &["mint", "--user", "1"][..], &[][..]] {
        let out = cli::run_with(BIN, args, &[("SECKILL_CONFIG", "/nonexistent/env.toml")]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            cli::stderr(&out).contains("cannot read config file /nonexistent/env.toml"),
            "{args:?}: {}",
            cli::stderr(&out)
        );
    }
}

#[test]
fn mint_prints_a_ticket_for_the_user_that_the_configured_secret_verifies() {
    let secret = "cli-test-ticket-secret-0123456789abcdef";
    let out = cli::run_with(
        BIN,
        &["mint", "--ttl-secs", "60", "--user", "42"],
        &[("SECKILL_TICKET_SECRET", secret)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let ticket = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let now = seckill_common::now_ms() as u64 / 1000;
    let user = seckill_common::ticket::verify(secret.as_bytes(), &ticket, now);
    assert_eq!(user.ok(), Some(42), "{ticket}");
    let expires: u64 = ticket.split('.').nth(1).unwrap().parse().unwrap();
    assert!((now + 59..=now + 61).contains(&expires), "{ticket}");
}

/// The admin commands read `--url`, else `SECKILL_ADMIN_URL`, as typed in the runbooks
/// (flags after the words), else the configured `internal_listen`; port 1 refuses, so
/// the error names the URL asked.
#[test]
fn admin_commands_take_the_url_from_the_flag_or_seckill_admin_url() {
    let flag = "http://127.0.0.1:1";
    for args in [
        &[
            "switch",
            "set",
            "admission_ratio",
            "0.5",
            "--local",
            "--url",
            flag,
        ][..],
        &["switch", "--url", flag, "list"][..],
        &["switch", "--url", flag][..],
        &["sale", "pause", "s1", "--url", flag, "--token", "t"][..],
    ] {
        let out = cli::run(BIN, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            cli::stderr(&out).contains("http://127.0.0.1:1/admin/"),
            "{args:?}: {}",
            cli::stderr(&out)
        );
    }
    let out = cli::run_with(
        BIN,
        &["switch", "get", "rates"],
        &[("SECKILL_ADMIN_URL", "http://127.0.0.1:1/")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        cli::stderr(&out).contains("http://127.0.0.1:1/admin/switches"),
        "{}",
        cli::stderr(&out)
    );
    // Neither: the configured internal listener (where /admin/* is served), not `listen`.
    let out = cli::run_with(
        BIN,
        &["switch", "list"],
        &[
            ("SECKILL_LISTEN", "127.0.0.1:2"),
            ("SECKILL_INTERNAL_LISTEN", "127.0.0.1:1"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        cli::stderr(&out).contains("http://127.0.0.1:1/admin/switches"),
        "{}",
        cli::stderr(&out)
    );
}

/// `--help` names the variable the admin token may come from, never its value.
#[test]
fn help_never_shows_the_admin_token() {
    let out = cli::run_with(
        BIN,
        &["switch", "--help"],
        &[("SECKILL_ADMIN_TOKEN", "s3cret-token")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SECKILL_ADMIN_TOKEN"), "{stdout}");
    assert!(!stdout.contains("s3cret-token"), "{stdout}");
}
