//! `chaos list | all | ci | N [N…] | NAME` — run drills against the drill stack
//! (`.run/chaos`, ports 17379/17432/17092, or `CHAOS_*_PORT`). Prints each drill's
//! timeline and checks, then a summary; exits 1 if any check failed. The drill stack
//! is stopped at the end (`CHAOS_KEEP=1` keeps it up).

use chaos::drill::Drill;
use chaos::drills::DRILLS;
use chaos::env::Env;
use std::time::Instant;

fn main() {
    seckill_common::cli::main_with("chaos", "warn", run);
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let picked: Vec<u32> = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["-h"] | ["--help"] | ["list"] => {
            println!("usage: chaos list | all | ci | N [N…] | NAME\n");
            for (n, name, what, _) in DRILLS {
                println!("  {n}  {name:<26} {what}");
            }
            println!("\n  ci = drills 1, 2, 3, 4 and 9");
            return Ok(());
        }
        ["all"] => DRILLS.iter().map(|d| d.0).collect(),
        ["ci"] => vec![1, 2, 3, 4, 9],
        some => some
            .iter()
            .map(|a| {
                a.parse::<u32>()
                    .ok()
                    .or_else(|| DRILLS.iter().find(|d| d.1 == *a).map(|d| d.0))
                    .ok_or(format!("no drill {a}"))
            })
            .collect::<Result<_, _>>()?,
    };
    let env = Env::open().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut summary = Vec::new();
    for n in picked {
        let Some((_, name, what, f)) = DRILLS.iter().find(|d| d.0 == n) else {
            return Err(format!("no drill {n}"));
        };
        let mut d = Drill::new(&format!("{n}-{name}"), what);
        if let Err(e) = env.up().and_then(|_| env.fresh_topic(name)) {
            d.check(format!("stack up before the drill: {e}"), false);
        } else if let Err(e) = f(&env, &mut d) {
            d.check(format!("drill ran to the end: {e}"), false);
        }
        // Leave the stack whole for the next drill whatever happened.
        if let Err(e) = env.up() {
            eprintln!("chaos: could not bring the drill stack back up: {e}");
        }
        let line = format!(
            "{} {:<30} {:>5.1}s  {}",
            if d.passed() { "PASS" } else { "FAIL" },
            d.name,
            d.elapsed().as_secs_f64(),
            if d.passed() {
                String::new()
            } else {
                format!("{} failed check(s)", d.failures())
            }
        );
        println!("--- {line}");
        summary.push((d.passed(), line));
    }
    // The drill stack is stopped unless asked to keep it for a look around.
    if std::env::var("CHAOS_KEEP").is_err() {
        env.down();
    }
    println!("\n=== chaos summary ({:.0} s)", t0.elapsed().as_secs_f64());
    for (_, line) in &summary {
        println!("{line}");
    }
    if summary.iter().all(|(p, _)| *p) {
        Ok(())
    } else {
        Err("some drills failed".into())
    }
}
