//! `stackctl` — the local stack from the command line (`./dev` calls it):
//!
//! ```text
//! stackctl up [--tracing] | down | status | env  the stack of SECKILL_RUN_DIR (default .run);
//!                                               --tracing: Jaeger too (SECKILL_TRACING=1)
//! stackctl stop|kill|pause|resume SERVICE       redis, postgres, kafka-N, redis-N (cluster node;
//!                                               SECKILL_REDIS_CLUSTER=1 adds the cluster)
//! stackctl start SERVICE                        start one stopped service again
//! stackctl with-services -- CMD [ARGS…]         a release gateway and order-writer on the
//!                                               stack while CMD runs (GATEWAY_URL, GW: its
//!                                               buyers' listener; GATEWAY_ADMIN_URL, GW_ADMIN:
//!                                               its internal one; WRITER)
//! stackctl with-services --cluster -- CMD …     the same on the Redis Cluster profile: three
//!                                               gateways behind HAProxy (GATEWAY_URL is the
//!                                               balancer, GATEWAY_ADMIN_URL the first
//!                                               gateway's internal listener), stack.env left
//!                                               as it is
//! stackctl balancer start --port P --stable H:P,… [--canary H:P,…] [--name N]
//! stackctl balancer reload [--stable …] [--canary …] | stop | status [--name N]
//! stackctl canary set SHARE [--header on|off] | promote | rollback | status [--name N]
//!                                               HAProxy in front of gateways (haproxy.rs)
//! ```
//! Ports, run directory, Kafka node count and topics come from `SECKILL_*` variables
//! (see README, "The local stack"); `stackctl --help` describes every command.

use clap::{Parser, Subcommand};
use seckill_common::cli::MainError;
use stackctl::{Service, Stack};
use std::time::Duration;

/// The local stack (Redis, PostgreSQL, Apache Kafka; gateways, order-writers and HAProxy
/// in front of them) as processes under SECKILL_RUN_DIR [default: .run]
#[derive(Debug, Parser)]
#[command(
    name = "stackctl",
    version,
    args_override_self = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Redis, PostgreSQL and Kafka (what is not up yet) and write stack.env
    Up {
        /// Also run Jaeger (built once from the Go module proxy) and point the gateways'
        /// and writers' spans at it (the same as SECKILL_TRACING=1)
        #[arg(long)]
        tracing: bool,
    },
    /// Stop what `up` started, and nothing else
    Down,
    /// Say which services are up (exit status 1 if one is down)
    Status,
    /// Print the stack's URLs as SECKILL_* assignments
    Env,
    /// Stop one service (`start` or `up` starts it again)
    Stop {
        /// redis, postgres, kafka-N or redis-N (a Redis Cluster node)
        service: Service,
    },
    /// Start one stopped service again
    Start {
        /// redis, postgres, kafka-N or redis-N (a Redis Cluster node)
        service: Service,
    },
    /// Kill one service (SIGKILL)
    Kill {
        /// redis, postgres, kafka-N or redis-N (a Redis Cluster node)
        service: Service,
    },
    /// Pause one service (SIGSTOP)
    Pause {
        /// redis, postgres, kafka-N or redis-N (a Redis Cluster node)
        service: Service,
    },
    /// Resume a paused service (SIGCONT)
    Resume {
        /// redis, postgres, kafka-N or redis-N (a Redis Cluster node)
        service: Service,
    },
    /// Run CMD with a release gateway and order-writer on the stack (GATEWAY_URL/GW: the buyers' listener, GATEWAY_ADMIN_URL/GW_ADMIN: the internal one, WRITER); exit with its status
    WithServices {
        /// Three gateways behind HAProxy on the Redis Cluster profile instead
        #[arg(long)]
        cluster: bool,
        /// The command and its arguments (after `--`)
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// HAProxy in front of gateways: start, reload, stop, status (the default)
    Balancer {
        /// The balancer's name (its folder under <run>/haproxy)
        #[arg(long, global = true, default_value = "lb")]
        name: String,
        #[command(subcommand)]
        action: Option<BalancerCmd>,
    },
    /// The balancer's canary pool: set SHARE, promote, rollback, status (the default)
    Canary {
        /// The balancer's name (its folder under <run>/haproxy)
        #[arg(long, global = true, default_value = "lb")]
        name: String,
        #[command(subcommand)]
        action: Option<CanaryCmd>,
    },
}

#[derive(Debug, Subcommand)]
enum BalancerCmd {
    /// Start HAProxy on 127.0.0.1:PORT in front of the stable (and canary) gateways
    Start {
        /// The port HAProxy listens on
        #[arg(long, value_name = "P")]
        port: u16,
        /// The stable pool: HOST:PORT,… (at least one)
        #[arg(long, value_name = "H:P,…", value_parser = some_hosts)]
        stable: Hosts,
        /// The canary pool: HOST:PORT,… [default: none]
        #[arg(long, value_name = "H:P,…", value_parser = hosts)]
        canary: Option<Hosts>,
    },
    /// Change the pools, gracefully (a pool not given stays as it is)
    Reload {
        /// The stable pool: HOST:PORT,…
        #[arg(long, value_name = "H:P,…", value_parser = hosts)]
        stable: Option<Hosts>,
        /// The canary pool: HOST:PORT,… (empty: none)
        #[arg(long, value_name = "H:P,…", value_parser = hosts)]
        canary: Option<Hosts>,
    },
    /// Stop HAProxy
    Stop,
    /// The canary share and each gateway's health
    Status,
}

#[derive(Debug, Subcommand)]
enum CanaryCmd {
    /// Send a share of users to the canary pool, at once
    Set {
        /// The share: 0..1 or N%
        #[arg(value_parser = stackctl::haproxy::parse_share)]
        share: u32,
        /// Whether requests with `X-Canary: 1` go to the canary too
        #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
        header: String,
    },
    /// Send every user to the canary pool
    Promote,
    /// Send every user back to the stable pool
    Rollback,
    /// The canary share and each gateway's health
    Status,
}

/// A list of gateways, `HOST:PORT,…` (spaces and empty items ignored).
#[derive(Debug, Clone)]
struct Hosts(Vec<String>);

fn hosts(text: &str) -> Result<Hosts, std::convert::Infallible> {
    Ok(Hosts(
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    ))
}

/// [`hosts`], at least one: a balancer needs a gateway to send users to.
fn some_hosts(text: &str) -> Result<Hosts, &'static str> {
    match hosts(text) {
        Ok(h) if !h.0.is_empty() => Ok(h),
        _ => Err("at least one HOST:PORT (the gateways)"),
    }
}

fn main() {
    let cli = Cli::parse();
    seckill_common::cli::main_with("stackctl", "info", || run(cli.command));
}

/// `stackctl status` found a service down.
#[derive(Debug, thiserror::Error)]
#[error("some services are down")]
struct ServicesDown;

fn run(command: Command) -> Result<(), MainError> {
    let mut stack = Stack::from_env()?;
    match command {
        Command::Up { tracing } => {
            stack.tracing |= tracing;
            let t0 = std::time::Instant::now();
            stack.up()?;
            seckill_common::note!(
                "[stackctl] stack up in {:.1} s ({}):",
                t0.elapsed().as_secs_f64(),
                stack.run.join("stack.env").display()
            );
            print_status(&stack);
        }
        Command::Down => stack.down(),
        Command::Status => {
            if !print_status(&stack) {
                return Err(ServicesDown.into());
            }
        }
        // The same lines as stack.env (the TLS profile's settings too).
        Command::Env => print!("{}", stack.addresses().env_file()),
        Command::Stop { service } => stack.stop(service),
        Command::Start { service } => match service {
            Service::Kafka(n) => stack.kafka.restart_node(n)?,
            _ => stack.up()?,
        },
        Command::Kill { service } => stack.signal(service, libc::SIGKILL)?,
        Command::Pause { service } => stack.signal(service, libc::SIGSTOP)?,
        Command::Resume { service } => stack.signal(service, libc::SIGCONT)?,
        Command::Balancer { name, action } => {
            balancer_cmd(&stack, &name, action.unwrap_or(BalancerCmd::Status))?
        }
        Command::Canary { name, action } => {
            canary_cmd(&stack, &name, action.unwrap_or(CanaryCmd::Status))?
        }
        Command::WithServices { cluster, cmd } => {
            let code = if cluster {
                with_cluster_services(&stack, &cmd)
            } else {
                with_services(&stack, &cmd)
            }?;
            std::process::exit(code);
        }
    }
    Ok(())
}

fn print_status(stack: &Stack) -> bool {
    let mut all = true;
    for (name, up, addr) in stack.status() {
        println!("{name:<9} {:<5} {addr}", if up { "up" } else { "down" });
        all &= up;
    }
    all
}

/// Bring the stack up, start a release gateway (per-IP limits lifted, rate and connections: every simulated
/// buyer comes from 127.0.0.1) and an order-writer, run `cmd`, stop them.
fn with_services(stack: &Stack, cmd: &[String]) -> Result<i32, stackctl::StackError> {
    let (program, rest) = cmd
        .split_first()
        .ok_or_else(|| stackctl::StackError::Process("with-services: no command".into()))?;
    stack.up()?;
    let lifted = [
        ("SECKILL_IP_RPS", "1000000".to_string()),
        ("SECKILL_IP_BURST", "1000000".to_string()),
        ("SECKILL_MAX_CONNECTIONS_PER_IP", "0".to_string()),
    ];
    // Named by this process: two runs side by side never share a spool or a log.
    let gw_name = format!("gateway-run-{}", std::process::id());
    let gw = stack.gateway(&stackctl::bin("gateway")?, &gw_name, &lifted)?;
    let writer_name = format!("order-writer-run-{}", std::process::id());
    let writer = stack.writer(&stackctl::bin("order-writer")?, &writer_name, &[])?;
    let ready = stackctl::process::wait_until(Duration::from_secs(20), || {
        ureq::get(&format!("{}/readyz", gw.url())).call().is_ok()
    });
    if !ready {
        return Err(stackctl::StackError::Start(
            "gateway",
            stack
                .run
                .join(format!("logs/{gw_name}.log"))
                .display()
                .to_string(),
        ));
    }
    seckill_common::note!(
        "[stackctl] gateway {} (internal: admin, metrics, payment callbacks {}) and order-writer metrics {} up (logs: {})",
        gw.url(),
        gw.internal_url(),
        writer.url(),
        stack.run.join("logs").display()
    );
    let status = std::process::Command::new(program)
        .args(rest)
        .env("GATEWAY_URL", gw.url())
        .env("GW", gw.url())
        .env("GATEWAY_ADMIN_URL", gw.internal_url())
        .env("GW_ADMIN", gw.internal_url())
        .env("WRITER", writer.url())
        .env("SECKILL_STACK_ENV", stack.run.join("stack.env"))
        .status()?;
    drop(gw);
    drop(writer);
    Ok(status.code().unwrap_or(1))
}

/// `with-services --cluster`: the stack up, the Redis Cluster profile up beside it (the
/// stack's own when `SECKILL_REDIS_CLUSTER=1`, else `<run>/redis-cluster` on
/// `SECKILL_REDIS_CLUSTER_PORT`; `stack.env` is not changed, so other users of the stack
/// keep its single Redis), three release gateways and an order-writer on the cluster, and
/// HAProxy in front of the gateways (PROXY protocol from 127.0.0.1; on the first free port
/// from `SECKILL_BALANCER_PORT`, default 18180); runs `cmd` with
/// GATEWAY_URL/GW = the balancer, GATEWAYS = the gateways, GATEWAY_ADMIN_URL/GW_ADMIN =
/// the first gateway's internal listener (the balancer fronts the buyers' listeners only;
/// switches are central, so one gateway's admin API speaks for all), GATEWAYS_ADMIN =
/// every gateway's internal listener, WRITER, SECKILL_REDIS_URL = the cluster and
/// SECKILL_REDIS_CLUSTER_MASTERS = `host:port=first-last …` (who serves which slots),
/// then stops what it started (the cluster too, unless it was up before or is the
/// stack's own profile).
fn with_cluster_services(stack: &Stack, cmd: &[String]) -> Result<i32, stackctl::StackError> {
    use stackctl::redis_cluster::RedisCluster;
    let (program, rest) = cmd
        .split_first()
        .ok_or_else(|| stackctl::StackError::Process("with-services: no command".into()))?;
    stack.up()?;
    let own;
    let mut started_here = false;
    let cluster = match &stack.redis_cluster {
        Some(c) => c,
        None => {
            let base = std::env::var("SECKILL_REDIS_CLUSTER_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(stackctl::redis_cluster::DEFAULT_BASE_PORT);
            own = RedisCluster::new(stack.run.join("redis-cluster"), base);
            started_here = !own.is_up();
            own.up()?;
            &own
        }
    };
    let url = cluster.url();
    let env = [
        ("SECKILL_IP_RPS", "1000000".to_string()),
        ("SECKILL_IP_BURST", "1000000".to_string()),
        ("SECKILL_MAX_CONNECTIONS_PER_IP", "0".to_string()),
        ("SECKILL_REDIS_URL", url.clone()),
        ("SECKILL_TRUSTED_PROXIES", "127.0.0.1".to_string()),
    ];
    let pid = std::process::id();
    let gws = (0..3)
        .map(|i| {
            stack.gateway(
                &stackctl::bin("gateway")?,
                &format!("gateway-run-{pid}-{i}"),
                &env,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let writer = stack.writer(
        &stackctl::bin("order-writer")?,
        &format!("order-writer-run-{pid}"),
        &[("SECKILL_REDIS_URL", url.clone())],
    )?;
    let mut lb = stackctl::haproxy::Balancer::new(&stack.run, &format!("run-{pid}"));
    lb.stop_on_drop = true;
    // Below the ephemeral range (32768+), where a connection's local end may take it.
    let first: u16 = std::env::var("SECKILL_BALANCER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18180);
    let port = (first..first.saturating_add(100))
        .find(|p| !stackctl::process::port_open(*p))
        .ok_or(stackctl::StackError::PortTaken(first, "the balancer"))?;
    let plan = stackctl::haproxy::Plan {
        port,
        stable: gws
            .iter()
            .map(|g| format!("127.0.0.1:{}", g.port))
            .collect(),
        canary: vec![],
        canary_permille: 0,
        canary_header: false,
    };
    // Waits until every gateway passes its /readyz check through the PROXY protocol.
    lb.start(&plan, true)?;
    let internal: Vec<String> = gws.iter().map(|g| g.internal_url()).collect();
    let lb_url = lb.url()?;
    let mut masters = Vec::new();
    for n in cluster
        .topology()?
        .iter()
        .filter(|n| n.master && !n.slots.is_empty())
    {
        let ranges: Vec<String> = n.slots.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        masters.push(format!("127.0.0.1:{}={}", n.port, ranges.join("+")));
    }
    seckill_common::note!(
        "[stackctl] Redis Cluster {url}
[stackctl] masters (port=slots): {}
[stackctl] HAProxy {lb_url} in front of gateways {} (internal: {}); order-writer metrics {} (logs: {})",
        masters.join(" "),
        gws.iter().map(|g| g.url()).collect::<Vec<_>>().join(", "),
        internal.join(", "),
        writer.url(),
        stack.run.join("logs").display()
    );
    let status = std::process::Command::new(program)
        .args(rest)
        .env("GATEWAY_URL", &lb_url)
        .env("GW", &lb_url)
        .env(
            "GATEWAYS",
            gws.iter().map(|g| g.url()).collect::<Vec<_>>().join(","),
        )
        .env("GATEWAY_ADMIN_URL", &internal[0])
        .env("GW_ADMIN", &internal[0])
        .env("GATEWAYS_ADMIN", internal.join(","))
        .env("WRITER", writer.url())
        .env("SECKILL_REDIS_URL", &url)
        .env("SECKILL_REDIS_CLUSTER_MASTERS", masters.join(" "))
        .env("SECKILL_STACK_ENV", stack.run.join("stack.env"))
        .status()?;
    drop(lb);
    drop(gws);
    drop(writer);
    if started_here {
        cluster.down();
    }
    Ok(status.code().unwrap_or(1))
}

fn print_balancer(b: &stackctl::haproxy::Balancer) -> Result<(), MainError> {
    let plan = b.plan()?;
    println!(
        "balancer {} {} (127.0.0.1:{}): canary share {}% ({} per mille), X-Canary header {}",
        b.dir.display(),
        if b.is_up() { "up" } else { "down" },
        plan.port,
        plan.canary_permille as f64 / 10.0,
        plan.canary_permille,
        if plan.canary_header { "on" } else { "off" }
    );
    if b.is_up() {
        for s in b.servers()? {
            println!(
                "  {:<7} {:<9} {:<22} {}",
                s.pool, s.name, s.address, s.status
            );
        }
    }
    Ok(())
}

/// `stackctl balancer start|reload|stop|status`.
fn balancer_cmd(stack: &Stack, name: &str, action: BalancerCmd) -> Result<(), MainError> {
    let b = stackctl::haproxy::Balancer::new(&stack.run, name);
    match action {
        BalancerCmd::Start {
            port,
            stable,
            canary,
        } => {
            let plan = stackctl::haproxy::Plan {
                port,
                stable: stable.0,
                canary: canary.map(|c| c.0).unwrap_or_default(),
                canary_permille: 0,
                canary_header: false,
            };
            b.start(&plan, true)?;
            print_balancer(&b)?;
        }
        BalancerCmd::Reload { stable, canary } => {
            let mut plan = b.plan()?;
            if let Some(s) = stable {
                plan.stable = s.0;
            }
            if let Some(c) = canary {
                plan.canary = c.0;
            }
            b.reload(&plan)?;
            println!("reloaded (graceful)");
        }
        BalancerCmd::Stop => b.stop(),
        BalancerCmd::Status => print_balancer(&b)?,
    }
    Ok(())
}

/// `stackctl canary set SHARE | promote | rollback | status`: the balancer's canary
/// switch, applied at once over HAProxy's admin socket and kept in its map file.
fn canary_cmd(stack: &Stack, name: &str, action: CanaryCmd) -> Result<(), MainError> {
    let b = stackctl::haproxy::Balancer::new(&stack.run, name);
    let (permille, header) = match action {
        CanaryCmd::Set { share, header } => (share, header == "on"),
        CanaryCmd::Promote => (1000, true),
        CanaryCmd::Rollback => (0, false),
        CanaryCmd::Status => return print_balancer(&b),
    };
    let plan = b.set_canary(permille, header)?;
    seckill_common::note!(
        "[stackctl] canary share now {} per mille, X-Canary header {}",
        plan.canary_permille,
        if plan.canary_header { "on" } else { "off" }
    );
    print_balancer(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from([&["stackctl"], args].concat())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    /// CMD is everything after `--` (or from the first word on), its own flags included.
    #[test]
    fn with_services_runs_the_command_as_given() {
        let sh = [
            "sh",
            "-c",
            "exec \"$0\" --gateway \"$GATEWAY_URL\" \"$@\"",
            "demo",
            "--units",
            "5",
        ];
        for (args, cluster) in [
            ([&["with-services", "--"][..], &sh].concat(), false),
            (
                [&["with-services", "--cluster", "--"][..], &sh].concat(),
                true,
            ),
            ([&["with-services"][..], &sh].concat(), false),
        ] {
            let Command::WithServices { cluster: c, cmd } = parse(&args) else {
                panic!("{args:?}")
            };
            assert_eq!(
                (c, cmd),
                (cluster, sh.map(String::from).to_vec()),
                "{args:?}"
            );
        }
        assert!(Cli::try_parse_from(["stackctl", "with-services", "--"]).is_err());
    }

    /// The balancer and canary commands of the runbooks, `--name` before or after.
    #[test]
    fn balancer_and_canary_commands_parse_as_the_runbooks_type_them() {
        let start = "balancer start --name lb --port 18090 --stable 127.0.0.1:18080,127.0.0.1:18082 --canary 127.0.0.1:18084";
        let args: Vec<&str> = start.split(' ').collect();
        let Command::Balancer {
            name,
            action:
                Some(BalancerCmd::Start {
                    port,
                    stable,
                    canary,
                }),
        } = parse(&args)
        else {
            panic!("{start}")
        };
        assert_eq!((name.as_str(), port), ("lb", 18090));
        assert_eq!(stable.0, ["127.0.0.1:18080", "127.0.0.1:18082"]);
        assert_eq!(
            canary.map(|c| c.0),
            Some(vec!["127.0.0.1:18084".to_string()])
        );
        let Command::Balancer { name, action: None } = parse(&["balancer", "--name", "x"]) else {
            panic!("balancer --name x")
        };
        assert_eq!(name, "x");
        let Command::Canary {
            name,
            action: Some(CanaryCmd::Set { share, header }),
        } = parse(&["canary", "set", "50%", "--name", "d12", "--header", "off"])
        else {
            panic!("canary set")
        };
        assert_eq!((name.as_str(), share, header.as_str()), ("d12", 500, "off"));
        let Command::Canary {
            name,
            action: Some(CanaryCmd::Rollback),
        } = parse(&["canary", "rollback", "--name", "d12"])
        else {
            panic!("canary rollback")
        };
        assert_eq!(name, "d12");
    }

    #[test]
    fn services_are_named_as_before() {
        let Command::Kill { service } = parse(&["kill", "kafka-2"]) else {
            panic!("kill")
        };
        assert_eq!(service, Service::Kafka(2));
        assert!(Cli::try_parse_from(["stackctl", "stop", "mysql"]).is_err());
    }
}
