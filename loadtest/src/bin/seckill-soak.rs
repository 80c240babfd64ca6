//! The hostile soak against a running gateway (see `loadtest::soak`).
//!
//! ```text
//! seckill-soak [--gateway URL] [--admin-url URL] [--gateway-pid PID] [--hostile N]
//!              [--buyers N] [--units N]
//!              [--clients N] [--pipelines N] [--pipeline-requests N] [--byte-interval-ms N]
//!              [--hold-secs N] [--max-opened N] [--reopen-after-ms N] [--topic T]
//!              [--max-rss-growth-mb N] [--p99-factor K] [--p99-slack-ms N]
//!              [--timeout-ms N] [--timeout-grace-ms N]
//! ```
//! `--gateway` defaults to `$GATEWAY_URL` (set by `stackctl with-services`), else
//! `http://127.0.0.1:18080`; `--admin-url` (its internal listener: the sales are created
//! there, the metrics read there, and the unread pipelines of `GET /metrics` sent there,
//! the largest answer the gateway gives) to `$GATEWAY_ADMIN_URL`, else
//! `http://127.0.0.1:9100`; the pid defaults to the process listening on the gateway's
//! port.
//! Secrets: `SECKILL_TICKET_SECRET`, `SECKILL_ADMIN_TOKEN` (the development ones by
//! default, as `stackctl with-services` runs the gateway); `--topic` defaults to
//! `SECKILL_ORDERS_TOPIC`, else `orders`. Prints the summary; exits 1 when an invariant
//! fails or a bound is exceeded, 2 when the run could not be made (a command line that
//! does not parse too). `seckill-soak --help` describes every flag.

use clap::Parser;
use loadtest::soak::{self, Bounds, Mix, Options};
use std::time::Duration;

/// The hostile soak: thousands of hostile connections held against a running gateway
/// while a rush is measured (exit status 1 if an invariant fails or a bound is
/// exceeded, 2 if the run could not be made)
#[derive(Debug, Parser)]
#[command(name = "seckill-soak", version, args_override_self = true)]
struct Cli {
    /// The gateway's base URL
    #[arg(
        long,
        value_name = "URL",
        env = "GATEWAY_URL",
        default_value = "http://127.0.0.1:18080"
    )]
    gateway: String,
    /// The gateway's internal listener: the admin API, its metrics, and the unread pipelines' target
    #[arg(
        long,
        value_name = "URL",
        env = "GATEWAY_ADMIN_URL",
        default_value = loadtest::buyer::DEFAULT_INTERNAL_URL
    )]
    admin_url: String,
    /// The gateway's process, whose RSS is measured [default: the one listening on its port]
    #[arg(long, value_name = "PID")]
    gateway_pid: Option<i32>,
    /// Hostile connections held at once
    #[arg(long, value_name = "N", default_value_t = 3000)]
    hostile: usize,
    /// Of which unread pipelines [default: one in 50]
    #[arg(long, value_name = "N")]
    pipelines: Option<usize>,
    /// Buyers in the measured rush
    #[arg(long, value_name = "N", default_value_t = 3000)]
    buyers: u64,
    /// Units of the rush's sale [default: half the buyers]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    units: Option<i64>,
    /// Client threads of the rush
    #[arg(long, value_name = "N", default_value_t = 16)]
    clients: u64,
    /// Requests in each unread pipeline
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pipeline_requests: usize,
    /// Pause between two bytes of a slow hostile connection, in ms
    #[arg(long, value_name = "N", default_value_t = 300)]
    byte_interval_ms: u64,
    /// How long the hostile connections are held at least, in seconds
    #[arg(long, value_name = "N", default_value_t = 15)]
    hold_secs: u64,
    /// Hostile connections opened in all, at most [default: 10 per hostile connection]
    #[arg(long, value_name = "N")]
    max_opened: Option<u64>,
    /// A hostile connection the gateway closed is opened again after this, in ms
    #[arg(long, value_name = "N", default_value_t = 1000)]
    reopen_after_ms: u64,
    /// The order topic checked after the rush
    #[arg(
        long,
        value_name = "T",
        env = "SECKILL_ORDERS_TOPIC",
        default_value = "orders"
    )]
    topic: String,
    /// Bound: peak RSS under the soak over idle RSS, in MB
    #[arg(long, value_name = "N", default_value_t = Bounds::default().rss_growth_mb)]
    max_rss_growth_mb: u64,
    /// Bound: the rush's p99 under the soak over K times its p99 without (plus the slack)
    #[arg(long, value_name = "K", default_value_t = Bounds::default().p99_factor)]
    p99_factor: f64,
    /// Bound: slack added to the p99 bound, in ms
    #[arg(long, value_name = "N", default_value_t = Bounds::default().p99_slack_ms)]
    p99_slack_ms: u64,
    /// The gateway's longest head/body/write timeout, in ms: a timed hostile connection must be closed within it
    #[arg(long, value_name = "N", default_value_t = Bounds::default().timeout_ms)]
    timeout_ms: u64,
    /// Bound: grace past that timeout (the lingering close and scheduling), in ms
    #[arg(long, value_name = "N", default_value_t = Bounds::default().timeout_grace_ms)]
    timeout_grace_ms: u64,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The soak's options from the command line (secrets from the environment).
fn options(c: Cli) -> Options {
    let mut o = Options::new(
        &c.gateway,
        &c.admin_url,
        &env_or("SECKILL_TICKET_SECRET", "dev-ticket-secret-change-me"),
        &env_or("SECKILL_ADMIN_TOKEN", "dev-admin-token-change-me"),
        &c.topic,
        c.hostile,
    );
    o.verbose = true;
    o.gateway_pid = c.gateway_pid;
    o.mix = match c.pipelines {
        Some(p) => Mix::with_pipelines(c.hostile, p),
        None => Mix::split(c.hostile),
    };
    o.max_opened = c.max_opened.unwrap_or(o.mix.total() as u64 * 10);
    o.buyers = c.buyers;
    o.units = c.units.unwrap_or(c.buyers as i64 / 2);
    o.clients = c.clients;
    o.pipeline_requests = c.pipeline_requests;
    o.byte_interval = Duration::from_millis(c.byte_interval_ms);
    o.hold = Duration::from_secs(c.hold_secs);
    o.reopen_after = Duration::from_millis(c.reopen_after_ms);
    o.bounds = Bounds {
        rss_growth_mb: c.max_rss_growth_mb,
        p99_factor: c.p99_factor,
        p99_slack_ms: c.p99_slack_ms,
        timeout_ms: c.timeout_ms,
        timeout_grace_ms: c.timeout_grace_ms,
    };
    o
}

fn main() {
    let opts = options(Cli::parse());
    seckill_common::cli::init_logs("seckill-soak", "warn");
    seckill_common::note!(
        "[soak] gateway {}; {} buyers ({} units) on {} clients; hostile mix {:?} ({} in all), held {} s",
        opts.gateway,
        opts.buyers,
        opts.units,
        opts.clients,
        soak::KINDS
            .iter()
            .map(|k| format!("{} {}", k.name(), opts.mix.get(*k)))
            .collect::<Vec<_>>(),
        opts.mix.total(),
        opts.hold.as_secs()
    );
    let stack = seckill_common::stack::Stack::discover();
    match soak::run(&opts, &stack) {
        Ok(summary) => {
            summary.print();
            if !summary.violations().is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            seckill_common::cli::fail("seckill-soak", &e, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_of(args: &[&str]) -> Options {
        options(Cli::try_parse_from([&["seckill-soak"], args].concat()).unwrap())
    }

    /// Without flags, the soak the library would run by itself (and the bounds' own
    /// defaults); the flags the README gives change what they name.
    #[test]
    fn flags_set_the_options_and_their_absence_keeps_the_defaults() {
        let o = options_of(&[
            "--gateway",
            "http://127.0.0.1:1/",
            "--admin-url",
            "http://127.0.0.1:2/",
        ]);
        let d = Options::new(
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "",
            "",
            "orders",
            3000,
        );
        assert_eq!((&o.gateway, &o.internal), (&d.gateway, &d.internal));
        assert_eq!(
            (o.buyers, o.units, o.clients),
            (d.buyers, d.units, d.clients)
        );
        assert_eq!(o.mix.total(), d.mix.total());
        assert_eq!(o.max_opened, d.max_opened);
        assert_eq!(
            (o.byte_interval, o.hold, o.reopen_after),
            (d.byte_interval, d.hold, d.reopen_after)
        );
        assert_eq!(o.pipeline_requests, d.pipeline_requests);
        assert_eq!(
            format!("{:?}", o.bounds),
            format!("{:?}", Bounds::default())
        );
        let o = options_of(&[
            "--hostile",
            "100",
            "--buyers",
            "4000",
            "--hold-secs",
            "20",
            "--pipelines",
            "7",
        ]);
        assert_eq!((o.mix.total(), o.max_opened), (100, 1000));
        assert_eq!((o.buyers, o.units), (4000, 2000));
        assert_eq!(o.hold, Duration::from_secs(20));
        assert_eq!(o.mix.get(soak::Kind::Pipeline), 7);
    }
}
