//! Reply slots and their deadlines: a caller's one-shot answer ([`Shot`]), the
//! connection's end of it ([`Reply`]), and the watcher thread that answers `Timeout`
//! to a call still unanswered at its deadline ([`Deadlines`]).

use redis::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use stock::StockError;

/// Replies of one job: `count` values, in order.
type Replies = Result<Vec<Value>, StockError>;

/// A caller's answer: set once, by the connection (the replies, or the connection's
/// loss) or by the deadline watcher (a timeout), whichever comes first; later ones are
/// dropped. The caller parks on it without a timer of its own (see [`Deadlines`]).
pub(super) struct Shot {
    done: AtomicBool,
    value: Mutex<Option<Replies>>,
    blocker: may::sync::Blocker,
}

impl Shot {
    /// Made by the caller that will wait on it (a coroutine or a plain thread).
    pub(super) fn new() -> Shot {
        Shot {
            done: AtomicBool::new(false),
            value: Mutex::new(None),
            blocker: may::sync::Blocker::new(false),
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(super) fn complete(&self, r: Replies) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.blocker.unpark();
    }

    /// The answer, once set (an unpark before the park is not lost: `Blocker` keeps it).
    pub(super) fn wait(&self) -> Replies {
        loop {
            if let Some(r) = self.value.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return r;
            }
            let _ = self.blocker.park(None);
        }
    }
}

/// The connection's end of a caller's answer. Dropping it (answered or not) releases
/// its place in the connection's in-flight bound, so no path can leak capacity; one
/// dropped unanswered answers "connection lost" (a caller whose deadline passed has
/// its timeout already).
pub(super) struct Reply {
    pub(super) shot: Arc<Shot>,
    pub(super) depth: Arc<AtomicUsize>,
}

impl Reply {
    pub(super) fn complete(self, r: Replies) {
        self.shot.complete(r);
    }

    /// The caller already has its answer (its deadline passed).
    pub(super) fn abandoned(&self) -> bool {
        self.shot.is_done()
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.shot.is_done() {
            self.shot
                .complete(Err(StockError::Redis("connection lost".into())));
        }
        self.depth.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every call's deadline, in call order, watched by one plain thread per pipe that
/// answers a call whose deadline passed with `Timeout`. A may timer per call
/// (`recv_timeout`) cost two wake-ups of may's timer thread per call (adding a timer
/// of a new length, and deleting it when the reply came first): about a third of the
/// client's CPU on the purchase path (`loadtest/bench/PROFILE.md`).
/// Answered calls leave the queue from its front, and the whole queue is swept of
/// them once it holds more than [`DEADLINES_SWEEP`] entries, so it holds at most the
/// calls in flight plus one tick's calls.
pub(super) struct Deadlines {
    queue: Mutex<VecDeque<(Instant, Weak<Shot>)>>,
}

const DEADLINES_SWEEP: usize = 4096;

impl Deadlines {
    /// The watcher lives while the pipe does; it wakes at the earliest deadline, and at
    /// least every `tick` (a call is answered at most one tick late when its timeout
    /// is shorter than a tick, never early).
    pub(super) fn start(timeout: Duration) -> Arc<Deadlines> {
        let d = Deadlines::new();
        let tick = (timeout / 2).clamp(Duration::from_millis(1), Duration::from_millis(20));
        let weak = Arc::downgrade(&d);
        let spawned = std::thread::Builder::new()
            .name("redis-deadlines".into())
            .spawn(move || loop {
                let Some(d) = weak.upgrade() else { return };
                let now = Instant::now();
                let (expired, next) = d.expire(now);
                drop(d);
                for shot in expired {
                    shot.complete(Err(StockError::Timeout));
                }
                let until = next.map_or(now + tick, |n| n.min(now + tick));
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            });
        if let Err(e) = spawned {
            // Without the watcher a call whose reply never comes waits until the
            // connection gives up on the silence (its read timeout) and fails it.
            tracing::error!(error = %e, "cannot start the redis deadline watcher");
        }
        d
    }

    /// The queue alone, without its watcher (`start` adds it; tests drive `expire`).
    fn new() -> Arc<Deadlines> {
        Arc::new(Deadlines {
            queue: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Weak<Shot>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn watch(&self, deadline: Instant, shot: &Arc<Shot>) {
        self.lock().push_back((deadline, Arc::downgrade(shot)));
    }

    /// Take the unanswered calls whose deadline passed; drop answered ones from the
    /// front; the earliest deadline left.
    fn expire(&self, now: Instant) -> (Vec<Arc<Shot>>, Option<Instant>) {
        let mut q = self.lock();
        let mut expired = Vec::new();
        while let Some((at, weak)) = q.front() {
            match weak.upgrade() {
                Some(s) if !s.is_done() => {
                    if *at > now {
                        break;
                    }
                    expired.push(s);
                }
                _ => {}
            }
            q.pop_front();
        }
        if q.len() > DEADLINES_SWEEP {
            q.retain(|(_, w)| w.upgrade().is_some_and(|s| !s.is_done()));
        }
        (expired, q.front().map(|(at, _)| *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_queue_keeps_only_unanswered_calls() {
        // No watcher thread: it would sweep at moments of its own and race the asserts.
        let d = Deadlines::new();
        let now = Instant::now();
        let shots: Vec<Arc<Shot>> = (0..DEADLINES_SWEEP + 10)
            .map(|_| Arc::new(Shot::new()))
            .collect();
        for s in &shots {
            d.watch(now + Duration::from_secs(60), s);
        }
        // The first call stays unanswered; every other is answered.
        for s in &shots[1..] {
            s.complete(Ok(Vec::new()));
        }
        let (expired, next) = d.expire(now);
        assert!(expired.is_empty() && next.is_some());
        assert_eq!(d.lock().len(), 1, "answered calls swept");
        let (expired, _) = d.expire(now + Duration::from_secs(61));
        assert_eq!(expired.len(), 1);
        expired[0].complete(Err(StockError::Timeout));
        assert!(matches!(shots[0].wait(), Err(StockError::Timeout)));
        assert!(d.lock().is_empty());
    }
}
