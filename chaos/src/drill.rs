//! A drill's timeline and checks: every event is printed with its time since the
//! start, every check as PASS or FAIL at once; the drill fails if any check failed.

use std::time::{Duration, Instant};

pub struct Drill {
    pub name: String,
    t0: Instant,
    checks: Vec<(String, bool)>,
}

impl Drill {
    pub fn new(name: &str, title: &str) -> Drill {
        println!("\n=== drill {name}: {title}");
        Drill {
            name: name.to_string(),
            t0: Instant::now(),
            checks: Vec::new(),
        }
    }

    pub fn log(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>6.1}s] {}",
            self.t0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    pub fn check(&mut self, what: impl Into<String>, pass: bool) -> bool {
        let what = what.into();
        println!(
            "[{:>6.1}s] {} {what}",
            self.t0.elapsed().as_secs_f64(),
            if pass { "PASS" } else { "FAIL" }
        );
        self.checks.push((what, pass));
        pass
    }

    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(_, p)| *p)
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|(_, p)| !p).count()
    }

    /// How many checks ran, and the names of those that failed.
    pub fn checks(&self) -> usize {
        self.checks.len()
    }
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, p)| !p)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }
}

/// Poll `f` until it holds or `within` passed; true if it held.
pub use stackctl::process::wait_until as wait_for;
