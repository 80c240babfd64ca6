//! Degradation switches held by this gateway instance. Per-sale pause lives in Redis
//! with the sale (so every instance sees it at once); the rest are set through the
//! admin endpoint, audited, and exported as metrics.

use crate::breaker::{Breaker, Mode};
use crate::limits::{Limits, Rates};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// How order status reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReads {
    Normal,
    Off,
}

pub struct Switches {
    pause_all: AtomicBool,
    /// Admission ratio in parts per million of token requests admitted.
    admission_ppm: AtomicU32,
    status_off: AtomicBool,
}

/// The full set, as read and written by the admin API. Every field is optional on
/// write: only what is given changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_all: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_breaker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reads: Option<StatusReads>,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            pause_all: AtomicBool::new(false),
            admission_ppm: AtomicU32::new(1_000_000),
            status_off: AtomicBool::new(false),
        }
    }
}

impl Switches {
    pub fn paused_all(&self) -> bool {
        self.pause_all.load(Ordering::Relaxed)
    }

    /// Admit this request? `roll` is uniform in [0, 1e6).
    pub fn admit(&self, roll: u32) -> bool {
        roll < self.admission_ppm.load(Ordering::Relaxed)
    }

    pub fn status_reads(&self) -> StatusReads {
        if self.status_off.load(Ordering::Relaxed) {
            StatusReads::Off
        } else {
            StatusReads::Normal
        }
    }

    pub fn read(&self, limits: &Limits, breaker: &Breaker) -> SwitchValues {
        SwitchValues {
            pause_all: Some(self.paused_all()),
            admission_ratio: Some(self.admission_ppm.load(Ordering::Relaxed) as f64 / 1e6),
            rates: Some(limits.rates()),
            redis_breaker: Some(breaker.mode().as_str().to_string()),
            status_reads: Some(self.status_reads()),
        }
    }

    /// Validate everything first, then apply: a bad value changes nothing.
    pub fn apply(
        &self,
        v: &SwitchValues,
        limits: &Limits,
        breaker: &Breaker,
    ) -> Result<(), String> {
        if let Some(r) = v.admission_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err("admission_ratio must be within 0..=1".into());
            }
        }
        let mode = match &v.redis_breaker {
            Some(m) => Some(Mode::parse(m).ok_or("redis_breaker must be auto, open or closed")?),
            None => None,
        };
        if let Some(r) = &v.rates {
            if [
                r.global_rps,
                r.global_burst,
                r.user_rps,
                r.user_burst,
                r.ip_rps,
                r.ip_burst,
            ]
            .contains(&0)
            {
                return Err("every rate and burst must be at least 1".into());
            }
        }
        if let Some(p) = v.pause_all {
            self.pause_all.store(p, Ordering::Relaxed);
        }
        if let Some(r) = v.admission_ratio {
            self.admission_ppm
                .store((r * 1e6).round() as u32, Ordering::Relaxed);
        }
        if let Some(r) = v.rates {
            limits.set_rates(r);
        }
        if let Some(m) = mode {
            breaker.set_mode(m);
        }
        if let Some(s) = v.status_reads {
            self.status_off
                .store(s == StatusReads::Off, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn render(&self, out: &mut String, limits: &Limits, breaker: &Breaker) {
        use std::fmt::Write;
        let r = limits.rates();
        let _ = writeln!(out, "# HELP seckill_switch_pause_all 1 while every sale is paused by the operator.\n# TYPE seckill_switch_pause_all gauge\nseckill_switch_pause_all {}", self.paused_all() as u8);
        let _ = writeln!(out, "# HELP seckill_switch_admission_ratio Fraction of token requests admitted.\n# TYPE seckill_switch_admission_ratio gauge\nseckill_switch_admission_ratio {}", self.admission_ppm.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "# HELP seckill_switch_rate Configured rate limits (requests/s and bursts).\n# TYPE seckill_switch_rate gauge");
        for (k, v) in [
            ("global_rps", r.global_rps),
            ("global_burst", r.global_burst),
            ("user_rps", r.user_rps),
            ("user_burst", r.user_burst),
            ("ip_rps", r.ip_rps),
            ("ip_burst", r.ip_burst),
        ] {
            let _ = writeln!(out, "seckill_switch_rate{{limit=\"{k}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP seckill_switch_redis_breaker_mode Breaker mode: 0 auto, 1 forced open, 2 forced closed.\n# TYPE seckill_switch_redis_breaker_mode gauge\nseckill_switch_redis_breaker_mode {}", breaker.mode() as u8);
        let _ = writeln!(out, "# HELP seckill_redis_breaker_open 1 while the Redis breaker refuses calls.\n# TYPE seckill_redis_breaker_open gauge\nseckill_redis_breaker_open {}", breaker.is_open() as u8);
        let _ = writeln!(out, "# HELP seckill_switch_status_reads_off 1 while order status reads are switched off.\n# TYPE seckill_switch_status_reads_off gauge\nseckill_switch_status_reads_off {}", (self.status_reads() == StatusReads::Off) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bad_value_changes_nothing() {
        let s = Switches::default();
        let l = Limits::new(Rates {
            global_rps: 1,
            global_burst: 1,
            user_rps: 1,
            user_burst: 1,
            ip_rps: 1,
            ip_burst: 1,
        });
        let b = Breaker::new(1, Duration::from_millis(1));
        let bad = SwitchValues {
            pause_all: Some(true),
            admission_ratio: Some(1.5),
            ..Default::default()
        };
        assert!(s.apply(&bad, &l, &b).is_err());
        assert!(!s.paused_all());
        let good = SwitchValues {
            pause_all: Some(true),
            admission_ratio: Some(0.25),
            redis_breaker: Some("open".into()),
            ..Default::default()
        };
        s.apply(&good, &l, &b).unwrap();
        assert!(s.paused_all() && b.is_open());
        assert!(s.admit(249_999) && !s.admit(250_000));
    }
}
