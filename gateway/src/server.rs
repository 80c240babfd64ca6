//! Start-up, the health loop, and graceful shutdown.

use crate::app::App;
use crate::breaker::Breaker;
use crate::config::Config;
use crate::http::Factory;
use crate::limits::{Limits, Rates};
use crate::metrics::{Listener, Metrics};
use crate::order_sink::OrderSink;
use crate::redis_pipe::RedisPipe;
use crate::switches::StoreRead;
use may_minihttp::HttpServiceFactory;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("redis: {0}")]
    Redis(#[from] stock::StockError),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::order_sink::SinkError),
    /// A listener that could not be bound: the setting (`listen`, `internal_listen`),
    /// its address, and why.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        key: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch for SIGTERM/SIGINT: {0}")]
    Signals(#[source] std::io::Error),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::BadConfig),
}

fn rates(c: &Config) -> Rates {
    let u = |v: i64| v.clamp(1, u32::MAX as i64) as u32;
    Rates {
        global_rps: u(c.global_rps),
        global_burst: u(c.global_burst),
        user_rps: u(c.user_rps),
        user_burst: u(c.user_burst),
        ip_rps: u(c.ip_rps),
        ip_burst: u(c.ip_burst),
    }
}

/// Serve until SIGTERM/SIGINT, then drain and flush.
pub fn run(mut cfg: Config) -> Result<(), StartError> {
    // Before anything starts: a gateway with a guessable secret, a payment setting out
    // of range, or TLS material it cannot read, must not serve.
    cfg.validate()?;
    cfg.redis_url = cfg.redis_url();
    if stock::tls::is_tls_url(&cfg.redis_url) {
        stock::tls::use_tls(&cfg.redis_tls())?;
    }
    for weak in cfg.check_secrets()? {
        tracing::warn!(
            "INSECURE: {weak}; starting only because dev_insecure (SECKILL_DEV_INSECURE) is set. \
             Never run like this in production"
        );
    }
    let workers = if cfg.workers > 0 {
        cfg.workers as usize
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    };
    may::config()
        .set_workers(workers)
        .set_stack_size(cfg.stack_kib.max(64) as usize * 1024);

    let metrics = Arc::new(Metrics::default());
    let breaker = Arc::new(Breaker::new(
        cfg.breaker_threshold.max(1) as u32,
        Duration::from_millis(cfg.breaker_cool_off_ms.max(1) as u64),
    ));
    let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1) as u64);
    let wait_replicas = match cfg.redis_wait_replicas {
        n if n < 0 => stock::cluster::is_cluster_url(&cfg.redis_url) as u32,
        n => n.min(16) as u32,
    };
    let pipe = RedisPipe::start_with(
        &cfg.redis_url,
        &crate::redis_pipe::Options {
            connections: cfg.redis_connections.max(1) as usize,
            timeout,
            max_in_flight: cfg.redis_max_in_flight.max(1) as usize,
            wait: (wait_replicas > 0).then(|| crate::redis_pipe::WaitPolicy {
                replicas: wait_replicas,
                // Within the call's timeout, with room for the purchase itself: a
                // purchase may queue behind one WAIT and then wait for its own.
                timeout_ms: (cfg.redis_wait_timeout_ms.max(1) as u64)
                    .min((timeout.as_millis() as u64 / 3).max(1)),
            }),
        },
        breaker.clone(),
        metrics.clone(),
    )?;
    let brokers = seckill_common::kafka::client_config(
        &cfg.kafka_brokers,
        &cfg.kafka_extra,
        &cfg.kafka_password,
    )
    .map_err(|e| crate::order_sink::SinkError::BadExtra(e.0))?;
    let sink = OrderSink::new(
        brokers,
        &cfg.orders_topic,
        cfg.kafka_timeout_ms.max(100) as u64,
        &cfg.spool_path(),
        cfg.spool_max_orders.max(1) as u64,
        metrics.clone(),
    )?;
    let limits = Limits::new(rates(&cfg));
    limits.set_scrape(
        cfg.metrics_ip_rps.clamp(1, u32::MAX as i64) as u32,
        cfg.metrics_ip_burst.clamp(1, u32::MAX as i64) as u32,
    );
    let (listen, internal_listen) = (cfg.listen.clone(), cfg.internal_listen.clone());
    let app = Arc::new(App::new(cfg, metrics, limits, breaker, pipe, sink)?);
    spawn("switches", follow_switches(app.clone()));
    spawn("spool-replay", replay_spool(app.clone()));
    spawn(
        "releases",
        crate::releases::run(app.releases.clone(), app.pipe.clone(), app.metrics.clone()),
    );

    // The internal listener first: a gateway that cannot serve its operators stops
    // before any buyer reaches it. Both listen before the health loop starts, so neither
    // is missing once `/readyz` says ready.
    let internal = serve(
        &app,
        Listener::Internal,
        "internal_listen",
        &internal_listen,
    )?;
    let public = serve(&app, Listener::Public, "listen", &listen)?;
    tracing::info!(%listen, %internal_listen, workers, "gateway listening");
    spawn("health", health_loop(app.clone()));

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(StartError::Signals)?;
    let sig = signals.forever().next();
    tracing::info!(?sig, "shutting down: draining in-flight requests");
    app.start_draining();
    let deadline = Instant::now() + Duration::from_secs(app.cfg.drain_secs.max(0) as u64);
    // Buying requests that arrive now are refused with 503 and `/readyz` says draining
    // (on both listeners); wait for the requests being served on either.
    while app.in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let flushed = app.sink.flush(Duration::from_secs(5));
    tracing::info!(in_flight = app.in_flight(), flushed, "gateway stopped");
    for server in [public, internal] {
        unsafe { server.coroutine().cancel() };
    }
    Ok(())
}

/// Start `listener` on `addr` (the setting `key`): the same service and edge limits on
/// either, only the routes differ (`Listener::serves`).
fn serve(
    app: &Arc<App>,
    listener: Listener,
    key: &'static str,
    addr: &str,
) -> Result<may::coroutine::JoinHandle<()>, StartError> {
    let factory = Factory {
        app: app.clone(),
        listener,
    };
    factory.start(addr).map_err(|source| StartError::Listen {
        key,
        addr: addr.to_string(),
        source,
    })
}

/// Every half second: PING Redis (also the breaker's probe when idle), ask a broker
/// for metadata, and sweep the keyed limiters.
fn health_loop(app: Arc<App>) -> impl FnOnce() {
    move || {
        let mut tick = 0u64;
        loop {
            let ping = stock::Stock::new(app.pipe.clone()).ping();
            app.redis_ok.store(ping.is_ok(), Ordering::Release);
            if tick.is_multiple_of(2) {
                app.sink
                    .set_kafka_up(app.sink.broker_reachable(Duration::from_millis(900)));
                let (users, ips) = app.limits.sweep();
                tracing::trace!(users, ips, "limiter sweep");
            }
            tick += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Start a background thread; if it cannot start, say so (a gateway without its health
/// loop stays unready, without its follower keeps its configured switches).
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::error!(error = %e, thread = name, "cannot start a background thread");
    }
}

/// Every `switch_poll_ms` (and at once when the Redis pipe's topology generation moves):
/// read the store epoch and the switches on a plain connection of its own (not through
/// the breaker, which the switches may force open), and follow it; and check that every
/// Redis master is a trusted process (`stock::trust`), which lets purchases through.
fn follow_switches(app: Arc<App>) -> impl FnOnce() {
    move || {
        let every = Duration::from_millis(app.cfg.switch_poll_ms.clamp(20, 1000) as u64);
        let timeout = every.max(Duration::from_millis(200));
        let mut conn: Option<stock::Conn> = None;
        let mut watch = match stock::trust::RunWatch::new(&app.cfg.redis_url, timeout) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the Redis masters: purchases stay held");
                None
            }
        };
        loop {
            if conn.is_none() {
                conn = stock::connect(&app.cfg.redis_url, timeout)
                    .map_err(|e| tracing::debug!(error = %e, "switch store: connect"))
                    .ok();
            }
            // Before reading the masters: a connection made or lost from here on
            // changes the generation, so this check vouches only for what it saw.
            let gen = app.pipe.generation();
            let read = conn.as_mut().and_then(|c| {
                stock::control::read(c, &app.cfg.cluster)
                    .map_err(|e| tracing::debug!(error = %e, "switch store: read"))
                    .ok()
                    .map(|(epoch, switches)| StoreRead { epoch, switches })
            });
            let unconfirmed = match (conn.as_mut(), watch.as_mut(), &read) {
                (Some(c), Some(w), Some(_)) => unconfirmed_masters(c, w),
                _ => None,
            };
            // Any failure starts over on a fresh connection: a kept cluster connection
            // could hang after a failover (its slot map and node connections stale).
            if read.is_none() || unconfirmed.is_none() {
                conn = None;
            }
            let confirmed = unconfirmed.as_ref().is_some_and(|u| u.is_empty());
            app.switches.follow(read, &app.limits, &app.breaker);
            app.switches.confirm(gen, unconfirmed);
            // A connection made or lost holds purchases until the next check: check
            // again at once (a reconnect to the same trusted process costs ~20 ms) —
            // unless this check found a master untrusted or unreadable: then the poll
            // period (a dead node's reconnect attempts move the generation all the time).
            let next = Instant::now() + every;
            std::thread::sleep(Duration::from_millis(20));
            while Instant::now() < next && (!confirmed || app.pipe.generation() == gen) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The masters whose process the store does not trust (`stock::trust`), as `addr
/// run_id/replid`; `None` if they cannot be read. A store without an epoch holds no sale,
/// so nothing can have been lost: its masters are trusted at once — except a promoted
/// replica (on a cluster the epoch lives on one master, and another's may be what lost
/// writes). The epoch is read after the masters, so it is no older than they are.
fn unconfirmed_masters(
    conn: &mut stock::Conn,
    watch: &mut stock::trust::RunWatch,
) -> Option<Vec<String>> {
    let runs = watch
        .runs(conn)
        .map_err(|e| tracing::debug!(error = %e, "reading the masters' run ids"))
        .ok()?;
    let mut untrusted = stock::trust::untrusted(conn, &runs).ok()?;
    if !untrusted.is_empty() && untrusted.iter().all(|r| r.master && !r.promoted) {
        let epoch = stock::control::epoch(conn).ok()?;
        if epoch.is_none() {
            // Every current master, so that a rewrite of the bounded hash keeps them.
            stock::trust::trust(conn, &runs).ok()?;
            untrusted.clear();
        }
    }
    Some(untrusted.into_iter().map(|r| r.to_string()).collect())
}

/// Every second, when a broker answers and the switch allows Kafka: replay the spool.
fn replay_spool(app: Arc<App>) -> impl FnOnce() {
    move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let mode = app.switches.order_sink();
        if !app.sink.spool_has_files()
            || mode == crate::switches::SinkMode::Spool
            || !app.sink.kafka_up()
        {
            continue;
        }
        match app.sink.replay() {
            Ok(n) if n > 0 => tracing::info!(orders = n, "spool replayed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "spool replay stopped; retrying"),
        }
    }
}
