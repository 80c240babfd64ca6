//! `gateway [serve] [--config FILE]` — run the gateway (no command means `serve`).
//! `gateway mint --user ID [--ttl-secs S] [--config FILE]` — print a ticket signed with
//! the configured `ticket_secret`, for demos and load runs.
//! `gateway config [--config FILE]` — check the effective configuration (defaults, file,
//! environment) and print it, secrets redacted.
//! `gateway switch …` / `gateway sale pause|resume SALE` `[--url U] [--token T]` — the
//! switches and per-sale pause through a gateway's admin API (see `admin_cli`).
//!
//! `--config` may also come from `SECKILL_CONFIG`, `--url` from `SECKILL_ADMIN_URL` and
//! `--token` from `SECKILL_ADMIN_TOKEN`; `gateway --help` describes every command.

use clap::{Args, Parser, Subcommand};
use gateway::admin_cli::{self, Admin};
use gateway::config::Config;
use seckill_common::cli;
use std::path::PathBuf;

/// The flash-sale HTTP gateway, and the operator's tool for its switches.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, args_override_self = true)]
struct Cli {
    /// TOML configuration file, read over the defaults; SECKILL_* variables override it [default: none]
    #[arg(long, global = true, value_name = "FILE", env = "SECKILL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM/SIGINT (the default command)
    Serve,
    /// Print a ticket signed with the configured ticket_secret (and ticket_key_id), for demos and load runs
    Mint {
        /// The user the ticket is for
        #[arg(long, value_name = "ID")]
        user: u64,
        /// How long the ticket stays valid, in seconds
        #[arg(long, value_name = "S", default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Check the effective configuration (defaults, file, environment) and print it, secrets redacted
    Config,
    /// List (the default), read and set the degradation switches through a gateway's admin API
    Switch {
        #[command(flatten)]
        target: AdminArgs,
        #[command(subcommand)]
        action: Option<admin_cli::Switch>,
    },
    /// Pause or resume one sale through a gateway's admin API
    Sale {
        #[command(flatten)]
        target: AdminArgs,
        #[command(subcommand)]
        action: admin_cli::Sale,
    },
}

/// Which gateway an admin command talks to, and with what token.
#[derive(Debug, Args)]
struct AdminArgs {
    /// The gateway's internal listener, where /admin/* is served [default: http://<internal_listen> of the configuration]
    #[arg(long, global = true, value_name = "URL", env = "SECKILL_ADMIN_URL")]
    url: Option<String>,
    /// The admin bearer token [default: the configured admin_token]
    // The token is a secret: `--help` names the variable, never its value.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "SECKILL_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    cli::main_with("gateway", "info,may=warn", || run(cli));
}

fn run(cli: Cli) -> Result<(), cli::MainError> {
    let cfg: Config = seckill_common::load_config(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Ok(gateway::server::run(cfg)?),
        Command::Config => {
            // What `serve` would refuse, refused here too.
            cfg.validate()?;
            cfg.check_secrets()?;
            cfg.operators()?;
            print!(
                "{}",
                seckill_common::config::redacted(&cfg, gateway::config::SECRETS)?
            );
            Ok(())
        }
        Command::Mint { user, ttl_secs } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            // Signed with the signing key (and its id), as the login layer would.
            println!("{}", cfg.ticket_keys()?.mint(user, now + ttl_secs));
            Ok(())
        }
        Command::Switch { target, action } => admin(
            &cfg,
            target,
            Admin::Switch(action.unwrap_or(admin_cli::Switch::List)),
        ),
        Command::Sale { target, action } => admin(&cfg, target, Admin::Sale(action)),
    }
}

/// An admin command against the gateway `target` names (this configuration's own by
/// default), signed by the operator who runs it (`user@host`, for the audit log).
fn admin(cfg: &Config, target: AdminArgs, cmd: Admin) -> Result<(), cli::MainError> {
    let actor = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
    );
    let t = admin_cli::Target {
        url: target
            .url
            .unwrap_or_else(|| format!("http://{}", cfg.internal_listen)),
        token: target.token.unwrap_or_else(|| cfg.admin_token.clone()),
        actor,
    };
    Ok(admin_cli::run(&t, &cmd)?)
}
