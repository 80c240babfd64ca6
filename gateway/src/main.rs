//! `gateway [serve] [--config FILE]` — run the gateway.
//! `gateway mint --user ID [--ttl-secs S] [--config FILE]` — print a ticket signed with
//! the configured `ticket_secret`, for demos and load runs.
//! `gateway config [--config FILE]` — check the effective configuration (defaults, file,
//! environment) and print it, secrets redacted.
//! `gateway switch …` / `gateway sale pause|resume SALE` `[--url U] [--token T]` — the
//! switches and per-sale pause through a gateway's admin API (see `admin_cli`).

use gateway::config::Config;
use seckill_common::cli::{self, ArgError};
use std::path::PathBuf;

fn main() {
    seckill_common::cli::main_with("gateway", env!("CARGO_PKG_VERSION"), "info,may=warn", run);
}

fn run() -> Result<(), cli::MainError> {
    let mut args = std::env::args().skip(1).peekable();
    let cmd = match args.peek().map(String::as_str) {
        Some("serve") | Some("mint") | Some("switch") | Some("sale") | Some("config") => {
            args.next().unwrap_or_default()
        }
        _ => "serve".to_string(),
    };
    let (mut config, mut user, mut ttl) = (None::<PathBuf>, None::<u64>, 3600u64);
    let (mut url, mut token, mut rest) = (None::<String>, None::<String>, vec![cmd.clone()]);
    while let Some(a) = args.next() {
        let mut val = || cli::value(&a, args.next());
        match a.as_str() {
            "--config" => config = Some(PathBuf::from(val()?)),
            "--url" => url = Some(val()?),
            "--token" => token = Some(val()?),
            "--local" if cmd == "switch" => rest.push(a),
            word if (cmd == "switch" || cmd == "sale") && !word.starts_with("--") => rest.push(a),
            "--user" => user = Some(cli::number(&a, &val()?)?),
            "--ttl-secs" => ttl = cli::number(&a, &val()?)?,
            "-h" | "--help" => {
                println!("usage: gateway [serve] [--config FILE]\n       gateway mint --user ID [--ttl-secs S] [--config FILE]\n       gateway config [--config FILE]\n       gateway switch list | get NAME | set NAME VALUE [--local] | clear-local | audit [--url U] [--token T]\n       gateway sale pause|resume SALE [--url U] [--token T]");
                return Ok(());
            }
            _ => return Err(ArgError::UnknownArgument(a).into()),
        }
    }
    let cfg: Config = seckill_common::load_config(config.as_deref())?;
    match cmd.as_str() {
        "config" => {
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
        "switch" | "sale" => {
            let actor = format!(
                "{}@{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
                std::fs::read_to_string("/etc/hostname")
                    .unwrap_or_default()
                    .trim()
            );
            let t = gateway::admin_cli::Target {
                url: url.unwrap_or_else(|| format!("http://{}", cfg.listen)),
                token: token.unwrap_or(cfg.admin_token.clone()),
                actor,
            };
            Ok(gateway::admin_cli::run(&t, &rest)?)
        }
        "mint" => {
            let user = user.ok_or_else(|| ArgError::Usage("mint needs --user ID".into()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            println!(
                "{}",
                seckill_common::ticket::mint(cfg.ticket_secret.as_bytes(), user, now + ttl)
            );
            Ok(())
        }
        _ => Ok(gateway::server::run(cfg)?),
    }
}
