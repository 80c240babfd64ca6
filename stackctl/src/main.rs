//! `stackctl` — the local stack from the command line (`./dev` calls it):
//!
//! ```text
//! stackctl up | down | status | env            the stack of SECKILL_RUN_DIR (default .run)
//! stackctl stop|kill|pause|resume SERVICE       redis, postgres, kafka-N, redis-N (cluster node;
//!                                               SECKILL_REDIS_CLUSTER=1 adds the cluster)
//! stackctl start SERVICE                        start one stopped service again
//! stackctl with-services -- CMD [ARGS…]         a release gateway and order-writer on the
//!                                               stack while CMD runs (GATEWAY_URL, GW, WRITER)
//! stackctl with-services --cluster -- CMD …     the same on the Redis Cluster profile: three
//!                                               gateways behind HAProxy (GATEWAY_URL is the
//!                                               balancer), stack.env left as it is
//! stackctl balancer start --port P --stable H:P,… [--canary H:P,…] [--name N]
//! stackctl balancer reload [--stable …] [--canary …] | stop | status [--name N]
//! stackctl canary set SHARE | promote | rollback | status [--name N]
//!                                               HAProxy in front of gateways (haproxy.rs)
//! ```
//! Ports, run directory, Kafka node count and topics come from `SECKILL_*` variables
//! (see README, "The local stack").

use seckill_common::cli::{ArgError, MainError};
use stackctl::{Service, Stack};
use std::time::Duration;

fn main() {
    seckill_common::cli::main_with("stackctl", env!("CARGO_PKG_VERSION"), "info", run);
}

/// `stackctl status` found a service down.
#[derive(Debug, thiserror::Error)]
#[error("some services are down")]
struct ServicesDown;

/// A usage error, said as it stands.
fn usage(text: &str) -> MainError {
    ArgError::Usage(text.into()).into()
}

fn run() -> Result<(), MainError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stack = Stack::from_env()?;
    let service = |i: usize| -> Result<Service, MainError> {
        args.get(i)
            .ok_or_else(|| usage("which service? redis, postgres, kafka-N, redis-N"))?
            .parse::<Service>()
            .map_err(MainError::from)
    };
    match args.first().map(String::as_str) {
        Some("up") => {
            let t0 = std::time::Instant::now();
            stack.up()?;
            eprintln!(
                "[stackctl] stack up in {:.1} s ({}):",
                t0.elapsed().as_secs_f64(),
                stack.run.join("stack.env").display()
            );
            print_status(&stack);
        }
        Some("down") => stack.down(),
        Some("status") => {
            if !print_status(&stack) {
                return Err(ServicesDown.into());
            }
        }
        Some("env") => {
            let a = stack.addresses();
            println!("SECKILL_REDIS_URL={}", a.redis_url);
            println!("SECKILL_KAFKA_BROKERS={}", a.kafka_brokers);
            println!("SECKILL_DATABASE_URL={}", a.database_url);
        }
        Some("stop") => stack.stop(service(1)?),
        Some("start") => match service(1)? {
            Service::Kafka(n) => stack.kafka.restart_node(n)?,
            _ => stack.up()?,
        },
        Some(sig @ ("kill" | "pause" | "resume")) => {
            let sig = match sig {
                "kill" => libc::SIGKILL,
                "pause" => libc::SIGSTOP,
                _ => libc::SIGCONT,
            };
            stack.signal(service(1)?, sig)?
        }
        Some("balancer") => balancer_cmd(&stack, &args[1..])?,
        Some("canary") => canary_cmd(&stack, &args[1..])?,
        Some("with-services") => {
            let cluster = args.get(1).is_some_and(|a| a == "--cluster");
            let cmd: Vec<&String> = args
                .iter()
                .skip(1 + cluster as usize)
                .skip_while(|a| *a == "--")
                .collect();
            let code = if cluster {
                with_cluster_services(&stack, &cmd)
            } else {
                with_services(&stack, &cmd)
            }?;
            std::process::exit(code);
        }
        _ => {
            println!("usage: stackctl up | down | status | env | stop|start|kill|pause|resume SERVICE | with-services [--cluster] -- CMD… | balancer start|reload|stop|status … | canary set SHARE|promote|rollback|status");
            return Err(usage("no command"));
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
fn with_services(stack: &Stack, cmd: &[&String]) -> Result<i32, stackctl::StackError> {
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
    eprintln!(
        "[stackctl] gateway {} and order-writer metrics {} up (logs: {})",
        gw.url(),
        writer.url(),
        stack.run.join("logs").display()
    );
    let status = std::process::Command::new(program)
        .args(rest)
        .env("GATEWAY_URL", gw.url())
        .env("GW", gw.url())
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
/// GATEWAY_URL/GW = the balancer, GATEWAYS = the gateways, WRITER, SECKILL_REDIS_URL = the
/// cluster and SECKILL_REDIS_CLUSTER_MASTERS = `host:port=first-last …` (who serves which
/// slots), then stops what it started (the cluster too, unless it was up before or is
/// the stack's own profile).
fn with_cluster_services(stack: &Stack, cmd: &[&String]) -> Result<i32, stackctl::StackError> {
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
    eprintln!(
        "[stackctl] Redis Cluster {url}
[stackctl] masters (port=slots): {}
[stackctl] HAProxy {lb_url} in front of gateways {}; order-writer metrics {} (logs: {})",
        masters.join(" "),
        gws.iter().map(|g| g.url()).collect::<Vec<_>>().join(", "),
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

/// `--flag value` among `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn list(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn balancer_of(stack: &Stack, args: &[String]) -> stackctl::haproxy::Balancer {
    stackctl::haproxy::Balancer::new(&stack.run, flag(args, "--name").unwrap_or("lb"))
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
fn balancer_cmd(stack: &Stack, args: &[String]) -> Result<(), MainError> {
    let b = balancer_of(stack, args);
    match args.first().map(String::as_str) {
        Some("start") => {
            let port = flag(args, "--port")
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| usage("balancer start: --port P"))?;
            let stable = list(flag(args, "--stable"));
            if stable.is_empty() {
                return Err(usage("balancer start: --stable HOST:PORT,… (the gateways)"));
            }
            let plan = stackctl::haproxy::Plan {
                port,
                stable,
                canary: list(flag(args, "--canary")),
                canary_permille: 0,
                canary_header: false,
            };
            b.start(&plan, true)?;
            print_balancer(&b)?;
        }
        Some("reload") => {
            let mut plan = b.plan()?;
            if let Some(s) = flag(args, "--stable") {
                plan.stable = list(Some(s));
            }
            if let Some(c) = flag(args, "--canary") {
                plan.canary = list(Some(c));
            }
            b.reload(&plan)?;
            println!("reloaded (graceful)");
        }
        Some("stop") => b.stop(),
        Some("status") | None => print_balancer(&b)?,
        Some(other) => {
            return Err(usage(&format!(
                "balancer {other}? start, reload, stop, status"
            )))
        }
    }
    Ok(())
}

/// `stackctl canary set SHARE | promote | rollback | status`: the balancer's canary
/// switch, applied at once over HAProxy's admin socket and kept in its map file.
fn canary_cmd(stack: &Stack, args: &[String]) -> Result<(), MainError> {
    let b = balancer_of(stack, args);
    let (permille, header) = match args.first().map(String::as_str) {
        Some("set") => {
            let share = args
                .get(1)
                .ok_or_else(|| usage("canary set SHARE (0..1 or N%)"))?;
            let header = flag(args, "--header").is_none_or(|h| h != "off");
            (stackctl::haproxy::parse_share(share)?, header)
        }
        Some("promote") => (1000, true),
        Some("rollback") => (0, false),
        Some("status") | None => return print_balancer(&b),
        Some(other) => {
            return Err(usage(&format!(
                "canary {other}? set SHARE, promote, rollback, status"
            )))
        }
    };
    let plan = b.set_canary(permille, header)?;
    eprintln!(
        "[stackctl] canary share now {} per mille, X-Canary header {}",
        plan.canary_permille,
        if plan.canary_header { "on" } else { "off" }
    );
    print_balancer(&b)
}
