//! Rate limits with `governor`: one global, one per user, one per client IP. The rates
//! are a switch: setting them swaps in fresh limiters. Keyed stores are swept every
//! second (`retain_recent` + `shrink_to_fit`) so memory follows the active keys, not
//! every key ever seen.

use crate::metrics::Limit;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub global_rps: u32,
    pub global_burst: u32,
    pub user_rps: u32,
    pub user_burst: u32,
    pub ip_rps: u32,
    pub ip_burst: u32,
}

struct Limiters {
    rates: Rates,
    global: DefaultDirectRateLimiter,
    user: DefaultKeyedRateLimiter<u64>,
    ip: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(rps: u32, burst: u32) -> Quota {
    let rps = NonZeroU32::new(rps.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rps).allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limiters {
    fn new(rates: Rates) -> Limiters {
        Limiters {
            rates,
            global: RateLimiter::direct(quota(rates.global_rps, rates.global_burst)),
            user: RateLimiter::keyed(quota(rates.user_rps, rates.user_burst)),
            ip: RateLimiter::keyed(quota(rates.ip_rps, rates.ip_burst)),
        }
    }
}

pub struct Limits {
    current: RwLock<Arc<Limiters>>,
    /// `/metrics` per client IP: a page costs a full render, so a client pipelining
    /// scrapes must not turn the gateway's CPU into its amplifier. Not a switch.
    scrape: RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

/// Scrapes per second (and burst) per IP until `set_scrape`: far above any scraper's
/// needs (one page every few seconds).
const SCRAPE_RPS: u32 = 20;
const SCRAPE_BURST: u32 = 100;

/// A refusal: which limit, and when to try again.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub limit: Limit,
    pub retry_after: Duration,
}

impl Limits {
    pub fn new(rates: Rates) -> Arc<Limits> {
        Arc::new(Limits {
            current: RwLock::new(Arc::new(Limiters::new(rates))),
            scrape: RwLock::new(Arc::new(RateLimiter::keyed(quota(
                SCRAPE_RPS,
                SCRAPE_BURST,
            )))),
        })
    }

    pub fn set_scrape(&self, rps: u32, burst: u32) {
        *self.scrape.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(RateLimiter::keyed(quota(rps, burst)));
    }

    /// One `/metrics` page for `ip`.
    pub fn check_scrape(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let Some(ip) = ip else { return Ok(()) };
        let s = self
            .scrape
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.check_key(&ip).map_err(|nu| Refused {
            limit: Limit::Ip,
            retry_after: nu.wait_time_from(DefaultClock::default().now()),
        })
    }

    fn get(&self) -> Arc<Limiters> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn rates(&self) -> Rates {
        self.get().rates
    }

    pub fn set_rates(&self, rates: Rates) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Limiters::new(rates));
    }

    /// Reads and pays (sale state, order status, pay): the per-IP and, with a ticket,
    /// the per-user limit; not the global one, which guards the purchase path.
    pub fn check_reader(&self, user: Option<u64>, ip: Option<IpAddr>) -> Result<(), Refused> {
        let l = self.get();
        let clock = DefaultClock::default();
        let refused = |limit, nu: governor::NotUntil<_>| Refused {
            limit,
            retry_after: nu.wait_time_from(clock.now()),
        };
        if let Some(ip) = ip {
            l.ip.check_key(&ip).map_err(|nu| refused(Limit::Ip, nu))?;
        }
        if let Some(user) = user {
            l.user
                .check_key(&user)
                .map_err(|nu| refused(Limit::User, nu))?;
        }
        Ok(())
    }

    /// Check IP, then user, then the global budget (non-blocking; safe inside may).
    pub fn check(&self, user: u64, ip: Option<IpAddr>) -> Result<(), Refused> {
        self.check_reader(Some(user), ip)?;
        self.get().global.check().map_err(|nu| Refused {
            limit: Limit::Global,
            retry_after: nu.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Forget keys whose state is back to fresh; returns (users, ips) still tracked.
    pub fn sweep(&self) -> (usize, usize) {
        let l = self.get();
        l.user.retain_recent();
        l.user.shrink_to_fit();
        l.ip.retain_recent();
        l.ip.shrink_to_fit();
        let s = self
            .scrape
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.retain_recent();
        s.shrink_to_fit();
        (l.user.len(), l.ip.len())
    }

    /// Keys currently tracked (users, ips).
    pub fn tracked(&self) -> (usize, usize) {
        let l = self.get();
        (l.user.len(), l.ip.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(user_burst: u32) -> Rates {
        Rates {
            global_rps: 1000,
            global_burst: 1000,
            user_rps: 1,
            user_burst,
            ip_rps: 1000,
            ip_burst: 1000,
        }
    }

    #[test]
    fn a_user_over_the_burst_is_refused_and_others_are_not() {
        let l = Limits::new(rates(2));
        assert!(l.check(1, None).is_ok());
        assert!(l.check(1, None).is_ok());
        let r = l.check(1, None).unwrap_err();
        assert!(matches!(r.limit, Limit::User));
        assert!(r.retry_after > Duration::ZERO && r.retry_after <= Duration::from_secs(1));
        assert!(l.check(2, None).is_ok());
    }

    #[test]
    fn rates_can_be_changed_live_and_idle_keys_are_swept() {
        let l = Limits::new(rates(1));
        for u in 0..1000 {
            let _ = l.check(u, Some(IpAddr::from([127, 0, 0, 1])));
        }
        assert_eq!(l.tracked().0, 1000);
        l.set_rates(Rates {
            user_rps: 100,
            ..rates(5)
        });
        assert_eq!(l.rates().user_burst, 5);
        assert_eq!(l.tracked().0, 0);
        for _ in 0..5 {
            assert!(l.check(7, None).is_ok());
        }
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(l.sweep().0, 0, "a key whose bucket refilled is forgotten");
    }
}
