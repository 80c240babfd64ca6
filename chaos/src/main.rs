//! `chaos list | all | ci | N [N…] | NAME` — run drills against the drill stack
//! (`.run/chaos`, ports 17379/17432/17092, or `CHAOS_*_PORT`). Prints each drill's
//! timeline and checks, then a summary; exits 1 if any check failed. The drill stack
//! is stopped at the end (`CHAOS_KEEP=1` keeps it up).
//!
//! `chaos campaign --seed S --minutes M` — the seeded fault campaign
//! ([`chaos::campaign`]) on the same stack.

use chaos::drill::Drill;
use chaos::drills::DRILLS;
use chaos::env::Env;
use chaos::ChaosError;
use seckill_common::cli::{self, ArgError, MainError};
use std::time::Instant;

fn main() {
    seckill_common::cli::main_with("chaos", env!("CARGO_PKG_VERSION"), "warn", run);
}

/// The runs that did not pass (the rest is the drills' and arguments' own errors).
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("some drills failed")]
    Drills,
    #[error("campaign seed {0}: some checks failed")]
    Campaign(u64),
    #[error("campaign seed {seed} did not run to the end: {source}")]
    CampaignBroke { seed: u64, source: ChaosError },
}

fn run() -> Result<(), MainError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("campaign") {
        return campaign(&args[1..]);
    }
    let picked: Vec<u32> = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["-h"] | ["--help"] | ["list"] => {
            println!("usage: chaos list | all | ci | N [N…] | NAME");
            println!("       chaos campaign [--seed S] [--minutes M] [--cluster]\n");
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
                    .ok_or_else(|| ArgError::Usage(format!("no drill {a}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let env = Env::open()?;
    let t0 = Instant::now();
    let mut summary = Vec::new();
    for n in picked {
        let Some((_, name, what, f)) = DRILLS.iter().find(|d| d.0 == n) else {
            return Err(ArgError::Usage(format!("no drill {n}")).into());
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
        Err(Failed::Drills.into())
    }
}

/// `campaign [--seed S] [--minutes M] [--cluster]` (seed 1, 2 minutes by default).
fn campaign(args: &[String]) -> Result<(), MainError> {
    let (mut seed, mut minutes, mut cluster) = (1u64, 2.0f64, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--cluster" {
            cluster = true;
            continue;
        }
        let v = cli::value(a, it.next().cloned())?;
        match a.as_str() {
            "--seed" => {
                seed = v
                    .parse()
                    .map_err(|_| ArgError::Usage(format!("bad seed {v}")))?
            }
            "--minutes" => {
                minutes = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0 && *m <= 120.0)
                    .ok_or_else(|| ArgError::Usage(format!("bad minutes {v} (0 to 120)")))?
            }
            _ => return Err(ArgError::UnknownArgument(a.clone()).into()),
        }
    }
    let env = Env::open()?;
    let out = chaos::campaign::run(&env, seed, minutes, cluster);
    if let Err(e) = env.up() {
        eprintln!("chaos: could not bring the drill stack back up: {e}");
    }
    if std::env::var("CHAOS_KEEP").is_err() {
        env.down();
    }
    match out {
        Ok(o) if o.passed => Ok(()),
        Ok(_) => Err(Failed::Campaign(seed).into()),
        Err(source) => Err(Failed::CampaignBroke { seed, source }.into()),
    }
}
