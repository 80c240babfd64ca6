//! `chaos list | all | ci | N [N…] | NAME` — run drills against the drill stack
//! (`.run/chaos`, ports 17379/17432/17092, or `CHAOS_*_PORT`). Prints each drill's
//! timeline and checks, then a summary; exits 1 if any check failed. The drill stack
//! is stopped at the end (`CHAOS_KEEP=1` keeps it up). No argument means `list`.
//!
//! `chaos campaign --seed S --minutes M [--cluster]` — the seeded fault campaign
//! ([`chaos::campaign`]) on the same stack. `chaos --help` describes it all.

use chaos::drill::Drill;
use chaos::drills::DRILLS;
use chaos::env::Env;
use chaos::ChaosError;
use clap::{Parser, Subcommand};
use seckill_common::cli::MainError;
use std::time::Instant;

/// Chaos drills on a stack of their own (.run/chaos): load, a fault, the degradation
/// expected, recovery, and every invariant; exit status 1 if a check failed
#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    version,
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Drills to run, by number or name (`chaos list` names them)
    #[arg(value_name = "DRILL", value_parser = drill)]
    drills: Vec<u32>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Name the drills and say what each proves (the default)
    List,
    /// Run every drill, one after the other
    All,
    /// Run the CI subset: drills 1, 2, 3, 4 and 9
    Ci,
    /// The seeded fault campaign: random faults one at a time under paced buyers, checked after each heal
    Campaign {
        /// The fault schedule's seed (the same seed, the same faults)
        #[arg(long, value_name = "S", default_value_t = 1)]
        seed: u64,
        /// How long the faults go on, in minutes (over 0, at most 120)
        #[arg(long, value_name = "M", default_value_t = 2.0, value_parser = minutes)]
        minutes: f64,
        /// On the Redis Cluster profile (three masters, three replicas)
        #[arg(long)]
        cluster: bool,
    },
}

/// A drill by number or name, as its number.
fn drill(a: &str) -> Result<u32, String> {
    DRILLS
        .iter()
        .find(|d| a.parse() == Ok(d.0) || d.1 == a)
        .map(|d| d.0)
        .ok_or_else(|| format!("no drill {a} (`chaos list` names them)"))
}

/// A campaign's length: a number of minutes over 0, at most 120 (a run is bounded).
fn minutes(v: &str) -> Result<f64, String> {
    v.parse()
        .ok()
        .filter(|m: &f64| *m > 0.0 && *m <= 120.0)
        .ok_or_else(|| format!("bad minutes {v} (0 to 120)"))
}

fn main() {
    let cli = Cli::parse();
    seckill_common::cli::main_with("chaos", "warn", || run(cli));
}

/// The runs that did not pass (the rest is the drills' own errors).
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("some drills failed")]
    Drills,
    #[error("campaign seed {0}: some checks failed")]
    Campaign(u64),
    #[error("campaign seed {seed} did not run to the end: {source}")]
    CampaignBroke { seed: u64, source: ChaosError },
}

fn run(cli: Cli) -> Result<(), MainError> {
    let picked: Vec<u32> = match cli.command {
        Some(Command::Campaign {
            seed,
            minutes,
            cluster,
        }) => return campaign(seed, minutes, cluster),
        Some(Command::All) => DRILLS.iter().map(|d| d.0).collect(),
        Some(Command::Ci) => vec![1, 2, 3, 4, 9],
        None if !cli.drills.is_empty() => cli.drills,
        Some(Command::List) | None => {
            list();
            return Ok(());
        }
    };
    let env = Env::open()?;
    let t0 = Instant::now();
    let mut summary = Vec::new();
    for (n, name, what, f) in picked
        .iter()
        .filter_map(|n| DRILLS.iter().find(|d| d.0 == *n))
    {
        let mut d = Drill::new(&format!("{n}-{name}"), what);
        if let Err(e) = env.up().and_then(|_| env.fresh_topic(name)) {
            d.check(format!("stack up before the drill: {e}"), false);
        } else if let Err(e) = f(&env, &mut d) {
            d.check(format!("drill ran to the end: {e}"), false);
        }
        // Leave the stack whole for the next drill whatever happened.
        if let Err(e) = env.up() {
            seckill_common::note!("chaos: could not bring the drill stack back up: {e}");
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

/// `chaos list`: the drills, by number and name, and what each proves.
fn list() {
    println!("usage: chaos list | all | ci | N [N…] | NAME");
    println!("       chaos campaign [--seed S] [--minutes M] [--cluster]\n");
    for (n, name, what, _) in DRILLS {
        println!("  {n}  {name:<26} {what}");
    }
    println!("\n  ci = drills 1, 2, 3, 4 and 9");
}

/// `campaign [--seed S] [--minutes M] [--cluster]`.
fn campaign(seed: u64, minutes: f64, cluster: bool) -> Result<(), MainError> {
    let env = Env::open()?;
    let out = chaos::campaign::run(&env, seed, minutes, cluster);
    if let Err(e) = env.up() {
        seckill_common::note!("chaos: could not bring the drill stack back up: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from([&["chaos"], args].concat()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// The command lines `./dev test` and the README give.
    #[test]
    fn drills_and_campaigns_parse_as_documented() {
        assert_eq!(parse(&["3", "redis-paused", "13"]).drills, [3, 1, 13]);
        assert!(matches!(parse(&["ci"]).command, Some(Command::Ci)));
        assert!(matches!(parse(&["all"]).command, Some(Command::All)));
        let Some(Command::Campaign {
            seed,
            minutes,
            cluster,
        }) = parse(&["campaign", "--seed", "1", "--minutes", "2", "--cluster"]).command
        else {
            panic!("campaign")
        };
        assert_eq!((seed, minutes, cluster), (1, 2.0, true));
        let Some(Command::Campaign {
            seed,
            minutes,
            cluster,
        }) = parse(&["campaign"]).command
        else {
            panic!("campaign")
        };
        assert_eq!((seed, minutes, cluster), (1, 2.0, false));
    }
}
