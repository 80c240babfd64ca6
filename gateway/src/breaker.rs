//! Circuit breaker for Redis: after `threshold` consecutive faults it opens and every
//! call fails at once (a 503 in microseconds instead of a queue behind a sick Redis).
//! After `cool_off` one probe call is let through (half-open); its success closes the
//! breaker, its failure opens it again. The mode switch can force it open or closed.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    ForceOpen,
    ForceClosed,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "auto" => Mode::Auto,
            "open" => Mode::ForceOpen,
            "closed" => Mode::ForceClosed,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::ForceOpen => "open",
            Mode::ForceClosed => "closed",
        }
    }
}

pub struct Breaker {
    threshold: u32,
    cool_off: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// 0 = closed; otherwise the instant (µs since epoch, +1) it opened.
    opened_at: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicU8,
    mode: AtomicU8,
}

impl Breaker {
    pub fn new(threshold: u32, cool_off: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_off,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probing: AtomicU8::new(0),
            mode: AtomicU8::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            1 => Mode::ForceOpen,
            2 => Mode::ForceClosed,
            _ => Mode::Auto,
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::Relaxed);
    }

    /// May a call go to Redis now?
    pub fn allow(&self) -> bool {
        match self.mode() {
            Mode::ForceOpen => return false,
            Mode::ForceClosed => return true,
            Mode::Auto => {}
        }
        let opened = self.opened_at.load(Ordering::Acquire);
        if opened == 0 {
            return true;
        }
        if self.now_us().saturating_sub(opened) < self.cool_off.as_micros() as u64 {
            return false;
        }
        // Half-open: exactly one probe at a time.
        self.probing
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    pub fn record(&self, ok: bool) {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            self.opened_at.store(0, Ordering::Release);
            self.probing.store(0, Ordering::Release);
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold || self.probing.load(Ordering::Acquire) == 1 {
            self.opened_at.store(self.now_us(), Ordering::Release);
            self.probing.store(0, Ordering::Release);
        }
    }

    /// True while calls are being refused (forced, or open and cooling off).
    pub fn is_open(&self) -> bool {
        match self.mode() {
            Mode::ForceOpen => true,
            Mode::ForceClosed => false,
            Mode::Auto => self.opened_at.load(Ordering::Acquire) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_one_probe_closes_it() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert!(b.allow());
            b.record(false);
        }
        assert!(!b.is_open());
        b.record(false);
        assert!(b.is_open() && !b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one probe after the cool-off");
        assert!(!b.allow(), "only one probe at a time");
        b.record(true);
        assert!(!b.is_open() && b.allow());
    }

    #[test]
    fn a_failed_probe_reopens_and_modes_override() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.record(false);
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.allow());
        b.record(false);
        assert!(!b.allow());
        b.set_mode(Mode::ForceClosed);
        assert!(b.allow() && !b.is_open());
        b.set_mode(Mode::ForceOpen);
        b.record(true);
        assert!(!b.allow() && b.is_open());
    }
}
