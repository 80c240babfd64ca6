//! Serving one connection: the writer packs every queued command into one write, the
//! reader completes the reply slots in order as replies arrive.

use super::connection::Job;
use super::link::{Link, LinkReader, LinkWriter};
use super::reply::Reply;
use super::WaitPolicy;
use crate::metrics::Metrics;
use may::sync::mpsc;
use redis::Value;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stock::StockError;

/// Most commands in one write.
const BATCH: usize = 512;

/// What the reader expects next: a job's replies, or the WAIT closing a write.
enum Pending {
    Job {
        reply: Reply,
        count: usize,
        wait: bool,
    },
    Wait,
}

/// A purchase that reserved a unit (its script answered `OK`).
fn reserved(v: &[Value]) -> bool {
    matches!(v.last(), Some(Value::Array(items))
        if matches!(items.first(), Some(Value::BulkString(b)) if b == b"OK"))
}

/// Run one connection until it breaks (`Err`) or every sender is gone (`Ok`).
pub(super) fn serve(
    link: Link,
    rx: &mpsc::Receiver<Job>,
    timeout: Duration,
    wait: Option<WaitPolicy>,
    metrics: &Arc<Metrics>,
) -> std::io::Result<()> {
    let mut writer = link.writer()?;
    let socket = link.shutdown_handle()?;
    link.set_read_timeout(Some(timeout.max(Duration::from_millis(100))))?;
    let stream_in = link.reader();
    // The writer hands the reader each write's reply slots in one message, in order,
    // before the write (one channel message per write, not per command).
    let (pending_tx, pending_rx) = mpsc::channel::<Vec<Pending>>();
    let broken = Arc::new(AtomicBool::new(false));
    // Requests written and not yet answered.
    let outstanding = Arc::new(AtomicUsize::new(0));
    let reader_task = {
        let broken = broken.clone();
        let shutdown = socket.try_clone()?;
        let mut reader = Reader::new(pending_rx, outstanding.clone(), wait, metrics.clone());
        may::go!(move || {
            reader.run(stream_in);
            broken.store(true, Ordering::Release);
            let _ = shutdown.shutdown(std::net::Shutdown::Both);
            reader.fail_unanswered();
        })
    };
    let result = write_loop(&mut writer, rx, &pending_tx, &outstanding, &broken, wait);
    let _ = socket.shutdown(std::net::Shutdown::Both);
    drop(pending_tx);
    let _ = reader_task.join();
    result
}

/// The writer: take every queued job (up to [`BATCH`]) into one write, until the socket
/// or the reader breaks (`Err`) or every sender is gone (`Ok`).
fn write_loop(
    writer: &mut LinkWriter,
    rx: &mpsc::Receiver<Job>,
    pending_tx: &mpsc::Sender<Vec<Pending>>,
    outstanding: &AtomicUsize,
    broken: &AtomicBool,
    wait: Option<WaitPolicy>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        // Wait for work, waking now and then to notice a broken reader.
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(j) => j,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if broken.load(Ordering::Acquire) {
                    return Err(std::io::Error::other("reader stopped"));
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        if broken.load(Ordering::Acquire) {
            first
                .reply
                .complete(Err(StockError::Redis("connection lost".into())));
            return Err(std::io::Error::other("reader stopped"));
        }
        buf.clear();
        let batch = gather(first, rx, wait, &mut buf);
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        // A reader gone fails the batch's callers (their reply slots are dropped).
        if pending_tx.send(batch).is_err() {
            return Err(std::io::Error::other("reader stopped"));
        }
        // Before the write: no reply can come before it.
        outstanding.fetch_add(n, Ordering::AcqRel);
        writer.write_all(&buf)?;
    }
}

/// One write: `first` and whatever else is queued (at most [`BATCH`] reply slots),
/// packed into `buf`, with one `WAIT` behind the write's purchases; its reply slots in
/// order.
fn gather(
    first: Job,
    rx: &mpsc::Receiver<Job>,
    wait: Option<WaitPolicy>,
    buf: &mut Vec<u8>,
) -> Vec<Pending> {
    let now = Instant::now();
    let mut job = Some(first);
    let mut batch: Vec<Pending> = Vec::new();
    let mut waiting = false;
    while let Some(j) = job.take() {
        if j.deadline <= now || j.reply.abandoned() {
            // Its caller has given up: never run a command nobody will see answered.
            drop(j);
        } else {
            buf.extend_from_slice(&j.packed);
            waiting |= j.wait;
            batch.push(Pending::Job {
                reply: j.reply,
                count: j.count.max(1),
                wait: j.wait,
            });
        }
        if batch.len() < BATCH {
            job = rx.try_recv().ok();
        }
    }
    // One WAIT for every purchase of this write, right behind them.
    if let (true, Some(w)) = (waiting, wait) {
        buf.extend_from_slice(
            &redis::cmd("WAIT")
                .arg(w.replicas)
                .arg(w.timeout_ms)
                .get_packed_command(),
        );
        batch.push(Pending::Wait);
    }
    batch
}

/// The job being answered: its reply slot, how many replies it expects, whether it
/// waits for its write's `WAIT`, and the replies so far.
struct Answering {
    reply: Reply,
    count: usize,
    wait: bool,
    values: Vec<Value>,
}

/// The reader: parses replies and completes the reply slots the writer handed over,
/// in order.
struct Reader {
    parser: redis::Parser,
    pending_rx: mpsc::Receiver<Vec<Pending>>,
    outstanding: Arc<AtomicUsize>,
    wait: Option<WaitPolicy>,
    metrics: Arc<Metrics>,
    /// Read timeouts in a row with requests outstanding: two mean a request went
    /// unanswered for at least a whole timeout (one may be a request that was
    /// written just before the timer fired).
    silent: u32,
    current: Option<Answering>,
    /// Purchases answered by Redis that wait for their write's WAIT.
    held: Vec<(Reply, Vec<Value>)>,
    /// Reply slots of the writes so far, not yet answered.
    queued: VecDeque<Pending>,
}

impl Reader {
    fn new(
        pending_rx: mpsc::Receiver<Vec<Pending>>,
        outstanding: Arc<AtomicUsize>,
        wait: Option<WaitPolicy>,
        metrics: Arc<Metrics>,
    ) -> Reader {
        Reader {
            parser: redis::Parser::new(),
            pending_rx,
            outstanding,
            wait,
            metrics,
            silent: 0,
            current: None,
            held: Vec::new(),
            queued: VecDeque::new(),
        }
    }

    /// Read and answer until the socket fails, a reply is overdue, or the writer is
    /// gone.
    fn run(&mut self, mut stream: LinkReader) {
        while let Some(value) = self.next_value(&mut stream) {
            if !self.answer(value) {
                break;
            }
        }
    }

    /// The next reply; `None` when the socket failed or a reply is overdue.
    fn next_value(&mut self, stream: &mut LinkReader) -> Option<Value> {
        loop {
            match self.parser.parse_value(&mut *stream) {
                Ok(v) => {
                    self.silent = 0;
                    return Some(v);
                }
                Err(e) if e.is_timeout() => {
                    self.silent = if self.outstanding.load(Ordering::Acquire) == 0 {
                        0
                    } else {
                        self.silent + 1
                    };
                    if self.silent < 2 {
                        continue;
                    }
                    tracing::warn!("redis reply overdue; closing the connection so later replies cannot go to the wrong caller");
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "redis read failed or a reply is overdue; closing the connection");
                    return None;
                }
            }
        }
    }

    /// Give `value` to the reply slot it answers; `false` when there is none (the
    /// writer is gone).
    fn answer(&mut self, value: Value) -> bool {
        if self.current.is_none() {
            if self.queued.is_empty() {
                match self.pending_rx.recv() {
                    Ok(batch) => self.queued.extend(batch),
                    Err(_) => return false,
                }
            }
            match self.queued.pop_front() {
                Some(Pending::Job { reply, count, wait }) => {
                    self.current = Some(Answering {
                        reply,
                        count,
                        wait,
                        values: Vec::with_capacity(count),
                    })
                }
                Some(Pending::Wait) => {
                    self.waited(value);
                    return true;
                }
                None => return false,
            }
        }
        let Some(job) = self.current.as_mut() else {
            return false;
        };
        job.values.push(value);
        if job.values.len() >= job.count {
            let job = self.current.take().expect("current job");
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            if job.wait {
                self.held.push((job.reply, job.values));
            } else {
                job.reply.complete(Ok(job.values));
            }
        }
        true
    }

    /// The write's `WAIT` answered (`value`: replicas reached): answer the purchases
    /// held for it, counting a reservation short of its replicas.
    fn waited(&mut self, value: Value) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        let acked = match value {
            Value::Int(n) => n,
            _ => 0,
        };
        let want = self.wait.map_or(0, |w| w.replicas as i64);
        for (reply, values) in self.held.drain(..) {
            if acked < want && reserved(&values) {
                self.metrics.redis_unreplicated();
            }
            reply.complete(Ok(values));
        }
    }

    /// Fail whatever was written but not answered.
    fn fail_unanswered(&mut self) {
        let lost = || Err(StockError::Redis("connection lost".into()));
        if let Some(job) = self.current.take() {
            job.reply.complete(lost());
        }
        for (reply, _) in self.held.drain(..) {
            reply.complete(lost());
        }
        while let Ok(batch) = self.pending_rx.try_recv() {
            self.queued.extend(batch);
        }
        for p in self.queued.drain(..) {
            if let Pending::Job { reply, .. } = p {
                reply.complete(lost());
            }
        }
    }
}
