//! Releases that did not happen: the unit of an order that was never acknowledged (its
//! hand-off certainly failed, or the Redis topology moved during its purchase) whose
//! release failed too — typically a master killed under the purchase. Without a retry
//! the unit stays held by nobody until the order-writer's reservation sweep (payment
//! window + grace, ~16 min at the defaults), stock a sold-out sale cannot sell. A
//! background thread retries each release every second while Redis is unreachable, for
//! at most `GIVE_UP`; the release is `Stock::release_unacknowledged`, which Redis refuses
//! for an order a retry of its token was answered with meanwhile (it may stand), and an
//! order Redis does not know (lost with a failover) needs no release. Bounded: at most
//! `MAX_PENDING` waiting; past that the sweep is left to return the unit (counted).

use crate::metrics::Metrics;
use crate::redis_pipe::RedisPipe;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stock::{Stock, StockError};

/// Releases waiting at once.
pub const MAX_PENDING: usize = 100_000;
/// How long a release is retried before it is left to the writer's reservation sweep.
pub const GIVE_UP: Duration = Duration::from_secs(600);
/// The retry cadence.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct PendingReleases {
    /// (order id, its token, since when).
    q: Mutex<VecDeque<(String, String, Instant)>>,
    /// Not queued (full) or given up: left to the reservation sweep.
    pub left_to_sweep: AtomicU64,
    /// Released by a retry.
    pub released: AtomicU64,
}

/// What one retry of a release ended in.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    /// Done: released, or nothing to release (already settled, unknown, replayed).
    Done,
    /// Redis did not answer: try again later.
    Again,
}

/// How a release attempt's outcome is handled.
pub fn judge(outcome: Result<u64, StockError>) -> Retried {
    match outcome {
        Ok(_) => Retried::Done,
        Err(e) if e.is_fault() => Retried::Again,
        // Already released or paid, unknown to Redis, or a retry may have acknowledged it.
        Err(_) => Retried::Done,
    }
}

impl PendingReleases {
    /// Queue the release of `order_id` (bought with `token`) for a retry; false
    /// (counted) when full.
    pub fn push(&self, order_id: &str, token: &str) -> bool {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_PENDING {
            self.left_to_sweep.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.push_back((order_id.to_string(), token.to_string(), Instant::now()));
        true
    }

    pub fn len(&self) -> usize {
        self.q.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One round: try every waiting release with `release`; keep those to try again
    /// (unless older than `GIVE_UP`, which are left to the sweep). Returns those done.
    pub fn round(&self, mut release: impl FnMut(&str, &str) -> Result<u64, StockError>) -> usize {
        let now = Instant::now();
        let batch: Vec<(String, String, Instant)> = {
            let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            q.drain(..).collect()
        };
        let mut again = Vec::new();
        let mut done = 0;
        let mut redis_down = false;
        for (id, token, since) in batch {
            // Once Redis failed to answer this round, keep the rest for the next one.
            let verdict = if redis_down {
                Retried::Again
            } else {
                let outcome = release(&id, &token);
                if outcome.is_ok() {
                    self.released.fetch_add(1, Ordering::Relaxed);
                }
                judge(outcome)
            };
            match verdict {
                Retried::Done => done += 1,
                Retried::Again if now.duration_since(since) >= GIVE_UP => {
                    tracing::warn!(order = %id, "release still failing after 10 minutes; the reservation sweep returns this unit");
                    self.left_to_sweep.fetch_add(1, Ordering::Relaxed);
                }
                Retried::Again => {
                    redis_down = true;
                    again.push((id, token, since));
                }
            }
        }
        if !again.is_empty() {
            let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            for item in again.into_iter().rev() {
                q.push_front(item);
            }
        }
        done
    }
}

/// The retry thread: every second, the waiting releases through the pipe.
pub fn run(pending: Arc<PendingReleases>, pipe: RedisPipe, metrics: Arc<Metrics>) -> impl FnOnce() {
    move || loop {
        std::thread::sleep(EVERY);
        if pending.is_empty() {
            continue;
        }
        let mut stock = Stock::new(pipe.clone());
        let done = pending.round(|id, token| stock.release_unacknowledged(id, token));
        if done > 0 {
            tracing::info!(
                done,
                left = pending.len(),
                "retried releases of unacknowledged orders"
            );
            metrics.released_on_retry(done as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_retried_until_redis_answers_and_refusals_end_them() {
        let p = PendingReleases::default();
        for id in ["s-1", "s-2", "s-3"] {
            assert!(p.push(id, "t"));
        }
        // Redis down: nothing done, everything kept, in order.
        assert_eq!(p.round(|_, _| Err(StockError::Timeout)), 0);
        assert_eq!(p.len(), 3);
        // Redis back: a release, one already settled, one a retry may have acknowledged.
        let mut seen = Vec::new();
        let done = p.round(|id, _| {
            seen.push(id.to_string());
            match id {
                "s-1" => Ok(7),
                "s-2" => Err(StockError::AlreadyReleased),
                _ => Err(StockError::Replayed),
            }
        });
        assert_eq!((done, p.len()), (3, 0));
        assert_eq!(seen, ["s-1", "s-2", "s-3"]);
        assert_eq!(p.released.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_what_does_not_fit_is_counted() {
        let p = PendingReleases::default();
        for i in 0..MAX_PENDING {
            assert!(p.push(&format!("s-{i}"), "t"));
        }
        assert!(!p.push("s-x", "t"));
        assert_eq!(p.left_to_sweep.load(Ordering::Relaxed), 1);
    }
}
