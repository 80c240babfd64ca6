//! `stackctl` — the local stack from the command line (`./dev` calls it):
//!
//! ```text
//! stackctl up | down | status | env            the stack of SECKILL_RUN_DIR (default .run)
//! stackctl stop|kill|pause|resume SERVICE       redis, postgres, kafka-N
//! stackctl start SERVICE                        start one stopped service again
//! stackctl with-services -- CMD [ARGS…]         a release gateway and order-writer on the
//!                                               stack while CMD runs (GATEWAY_URL, GW, WRITER)
//! ```
//! Ports, run directory, Kafka node count and topics come from `SECKILL_*` variables
//! (see README, "The local stack").

use stackctl::{Service, Stack};
use std::time::Duration;

fn main() {
    seckill_common::cli::main_with("stackctl", "info", run);
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stack = Stack::from_env().map_err(|e| e.to_string())?;
    let service = |i: usize| -> Result<Service, String> {
        args.get(i)
            .ok_or("which service? redis, postgres, kafka-N")?
            .parse()
            .map_err(|e: stackctl::StackError| e.to_string())
    };
    match args.first().map(String::as_str) {
        Some("up") => {
            let t0 = std::time::Instant::now();
            stack.up().map_err(|e| e.to_string())?;
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
                return Err("some services are down".into());
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
            Service::Kafka(n) => stack.kafka.restart_node(n).map_err(|e| e.to_string())?,
            _ => stack.up().map_err(|e| e.to_string())?,
        },
        Some(sig @ ("kill" | "pause" | "resume")) => {
            let sig = match sig {
                "kill" => libc::SIGKILL,
                "pause" => libc::SIGSTOP,
                _ => libc::SIGCONT,
            };
            stack.signal(service(1)?, sig).map_err(|e| e.to_string())?
        }
        Some("with-services") => {
            let cmd: Vec<&String> = args.iter().skip(1).skip_while(|a| *a == "--").collect();
            let code = with_services(&stack, &cmd).map_err(|e| e.to_string())?;
            std::process::exit(code);
        }
        _ => {
            println!("usage: stackctl up | down | status | env | stop|start|kill|pause|resume SERVICE | with-services -- CMD…");
            return Err("no command".into());
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

/// Bring the stack up, start a release gateway (per-IP limit lifted: every simulated
/// buyer comes from 127.0.0.1) and an order-writer, run `cmd`, stop them.
fn with_services(stack: &Stack, cmd: &[&String]) -> Result<i32, stackctl::StackError> {
    let (program, rest) = cmd
        .split_first()
        .ok_or_else(|| stackctl::StackError::Process("with-services: no command".into()))?;
    stack.up()?;
    let lifted = [
        ("SECKILL_IP_RPS", "1000000".to_string()),
        ("SECKILL_IP_BURST", "1000000".to_string()),
    ];
    let gw = stack.gateway(&stackctl::bin("gateway")?, "gateway-run", &lifted)?;
    let writer = stack.writer(&stackctl::bin("order-writer")?, "order-writer-run", &[])?;
    let ready = stackctl::process::wait_until(Duration::from_secs(20), || {
        ureq::get(&format!("{}/readyz", gw.url())).call().is_ok()
    });
    if !ready {
        return Err(stackctl::StackError::Start(
            "gateway",
            stack.run.join("logs/gateway-run.log").display().to_string(),
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
