//! PostgreSQL: embedded migrations, the one-transaction batch write, and the
//! payment-window queries. Only this crate writes orders.

use crate::config::Config;
use crate::WriterError;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, Transaction};
use seckill_common::order::{OrderEvent, OrderMessage};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Versioned migrations, applied in order, each once.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/001_orders.sql")),
    (2, include_str!("../migrations/002_unsettled.sql")),
    (3, include_str!("../migrations/003_sale_definitions.sql")),
    (4, include_str!("../migrations/004_sale_buckets.sql")),
    (5, include_str!("../migrations/005_reconciled_at.sql")),
    (6, include_str!("../migrations/006_sale_price.sql")),
];

/// A connection with the writer's settings: over TLS when asked (`sslmode` or a CA),
/// the password setting in place of the URL's, statements bounded.
pub fn connect(cfg: &Config) -> Result<Client, WriterError> {
    let timeout = cfg.db_statement_timeout_ms;
    seckill_common::tls::connect_postgres(
        &cfg.database_url,
        &cfg.database_password,
        &cfg.database_tls(),
        |c| {
            c.connect_timeout(Duration::from_secs(3));
            c.options(&format!("-c statement_timeout={timeout}"));
            c.application_name("order-writer");
        },
    )
    .map_err(|e| match e {
        seckill_common::tls::PostgresConnectError::Postgres(e) => WriterError::Db(e),
        seckill_common::tls::PostgresConnectError::Tls(e) => WriterError::Config(e.to_string()),
        seckill_common::tls::PostgresConnectError::Url(e) => WriterError::DatabaseUrl(e),
    })
}

/// Migrate when the writer is to (`migrate`), else check that the schema has every
/// migration this writer needs (its role may not apply them).
pub fn migrate_or_check(cfg: &Config, db: &mut Client) -> Result<(), WriterError> {
    if cfg.migrate {
        return migrate(db);
    }
    let applied: i64 = db
        .query_one(
            "SELECT count(*) FROM schema_migrations WHERE version = ANY($1)",
            &[&MIGRATIONS.iter().map(|(v, _)| *v).collect::<Vec<i32>>()],
        )
        .map_err(|e| WriterError::Config(format!("migrate = false, but the schema cannot be read ({e}): run `order-writer migrate` as the schema's owner")))?
        .get(0);
    if applied as usize != MIGRATIONS.len() {
        return Err(WriterError::Config(format!(
            "migrate = false, and the schema has {applied} of the {} migrations this writer needs: run `order-writer migrate` as the schema's owner",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

/// Apply pending migrations under an advisory lock, so several writers starting at
/// once apply each migration exactly once.
pub fn migrate(db: &mut Client) -> Result<(), WriterError> {
    let mut tx = db.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(727274)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")?;
    for (version, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )?
            .is_some();
        if !done {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )?;
            tracing::info!(version, "migration applied");
        }
    }
    tx.commit()?;
    Ok(())
}

/// How the reserved orders of a batch go in.
#[derive(Clone, Copy)]
enum Insert {
    /// Binary `COPY` straight into `orders`: the fast path, for rows not written yet.
    Copy,
    /// `INSERT … SELECT FROM UNNEST … ON CONFLICT (order_id) DO NOTHING`: for a batch
    /// `COPY` refused (a replay, or a row the schema refuses).
    Upsert,
}

/// Write a batch in one transaction: sale definitions first (an upsert: the first
/// definition wins), then reserved orders, then paid events with one `UPDATE`. The
/// orders go in by binary `COPY`; if the database refuses that (a row already written,
/// as on a replay after a crash, or a row violating the schema), the whole transaction is
/// rolled back and redone with `INSERT … ON CONFLICT (order_id) DO NOTHING`, which makes
/// a replay a no-op and reports a bad row as before. Returns order rows inserted.
pub fn write_batch(db: &mut Client, batch: &[&OrderMessage]) -> Result<u64, postgres::Error> {
    match write_batch_with(db, batch, Insert::Copy) {
        Err(e) if is_data_error(&e) => {
            tracing::debug!(error = %e, "COPY refused; writing the batch with ON CONFLICT");
            write_batch_with(db, batch, Insert::Upsert)
        }
        done => done,
    }
}

fn write_batch_with(
    db: &mut Client,
    batch: &[&OrderMessage],
    how: Insert,
) -> Result<u64, postgres::Error> {
    let reserved: Vec<&OrderMessage> = batch
        .iter()
        .copied()
        .filter(|m| m.event == OrderEvent::Reserved)
        .collect();
    let paid: Vec<&str> = batch
        .iter()
        .filter(|m| m.event == OrderEvent::Paid)
        .map(|m| m.order_id.as_str())
        .collect();
    let mut tx = db.transaction()?;
    for m in batch.iter().filter(|m| m.event == OrderEvent::Opened) {
        let Some(d) = &m.definition else { continue };
        tx.execute(
            "INSERT INTO sales (sale, initial_stock, per_user_limit, start_ms, end_ms, buckets, price_cents) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sale) DO UPDATE SET initial_stock = EXCLUDED.initial_stock, per_user_limit = EXCLUDED.per_user_limit,
               start_ms = EXCLUDED.start_ms, end_ms = EXCLUDED.end_ms, buckets = EXCLUDED.buckets, price_cents = EXCLUDED.price_cents
             WHERE sales.initial_stock IS NULL",
            &[&m.sale, &d.stock, &d.per_user_limit, &d.start_ms, &d.end_ms, &(d.buckets as i32), &d.price_cents],
        )?;
    }
    let mut inserted = 0;
    if !reserved.is_empty() {
        insert_sales(&mut tx, &reserved)?;
        inserted = match how {
            Insert::Copy => copy_orders(&mut tx, &reserved)?,
            Insert::Upsert => insert_orders(&mut tx, &reserved, "reserved")?,
        };
    }
    if !paid.is_empty() {
        tx.execute("UPDATE orders SET status = 'paid', paid_at = now() WHERE order_id = ANY($1) AND status = 'reserved'", &[&paid])?;
    }
    tx.commit()?;
    Ok(inserted)
}

/// The gateway's clock of an event as a timestamp.
fn at(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn copy_orders(tx: &mut Transaction, orders: &[&OrderMessage]) -> Result<u64, postgres::Error> {
    let sink = tx.copy_in(
        "COPY orders (order_id, sale, user_id, units, per_user_limit, status, accepted_at) FROM STDIN (FORMAT binary)",
    )?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT4,
        Type::INT4,
        Type::TEXT,
        Type::TIMESTAMPTZ,
    ];
    let mut w = BinaryCopyInWriter::new(sink, &types);
    for m in orders {
        w.write(&[
            &m.order_id,
            &m.sale,
            &(m.user as i64),
            &(m.units as i32),
            &(m.per_user_limit as i32),
            &"reserved",
            &at(m.at_ms),
        ])?;
    }
    w.finish()
}

/// The sales rows the orders refer to (sorted: concurrent writers take them in one order).
fn insert_sales(tx: &mut Transaction, orders: &[&OrderMessage]) -> Result<u64, postgres::Error> {
    let sales: Vec<&str> = orders
        .iter()
        .map(|m| m.sale.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    tx.execute(
        "INSERT INTO sales (sale) SELECT s FROM UNNEST($1::text[]) AS s ON CONFLICT DO NOTHING",
        &[&sales],
    )
}

/// `INSERT … SELECT FROM UNNEST … ON CONFLICT (order_id) DO NOTHING`, every row with
/// `status` (`reserved`, or `cancelled` with `cancelled_at` now).
fn insert_orders(
    tx: &mut Transaction,
    orders: &[&OrderMessage],
    status: &str,
) -> Result<u64, postgres::Error> {
    let ids: Vec<&str> = orders.iter().map(|m| m.order_id.as_str()).collect();
    let sales: Vec<&str> = orders.iter().map(|m| m.sale.as_str()).collect();
    let users: Vec<i64> = orders.iter().map(|m| m.user as i64).collect();
    let units: Vec<i32> = orders.iter().map(|m| m.units as i32).collect();
    let limits: Vec<i32> = orders.iter().map(|m| m.per_user_limit as i32).collect();
    let at: Vec<SystemTime> = orders.iter().map(|m| at(m.at_ms)).collect();
    tx.execute(
        "INSERT INTO orders (order_id, sale, user_id, units, per_user_limit, status, accepted_at, cancelled_at)
         SELECT o, s, u, n, l, $7::text, a, CASE WHEN $7::text = 'cancelled' THEN now() END
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int4[], $5::int4[], $6::timestamptz[]) AS t(o, s, u, n, l, a)
         ON CONFLICT (order_id) DO NOTHING",
        &[&ids, &sales, &users, &units, &limits, &at, &status],
    )
}

/// The orders a batch's reserved rows would collide with on `orders_one_per_buyer`
/// (a limit-1 sale's one live order per buyer): live rows of the same buyer and sale
/// under another id, and the batch's own orders that share a buyer and sale with such a
/// row or with another order of the batch. With Redis as the arbiter, at most one of a
/// buyer's orders is live there; the others were released (by the reservation sweep, or
/// a release whose row had not landed yet) and only PostgreSQL has not heard.
pub fn buyer_conflicts(
    db: &mut Client,
    batch: &[&OrderMessage],
) -> Result<(Vec<String>, Vec<String>), postgres::Error> {
    let one: Vec<&OrderMessage> = batch
        .iter()
        .copied()
        .filter(|m| m.event == OrderEvent::Reserved && m.per_user_limit == 1)
        .collect();
    let mut seen: std::collections::HashMap<(&str, u64), BTreeSet<&str>> = Default::default();
    for m in &one {
        seen.entry((m.sale.as_str(), m.user))
            .or_default()
            .insert(m.order_id.as_str());
    }
    let ids: Vec<&str> = one.iter().map(|m| m.order_id.as_str()).collect();
    let sales: Vec<&str> = one.iter().map(|m| m.sale.as_str()).collect();
    let users: Vec<i64> = one.iter().map(|m| m.user as i64).collect();
    let rows = db.query(
        "SELECT DISTINCT o.order_id, t.s, t.u FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS t(o, s, u)
         JOIN orders o ON o.sale = t.s AND o.user_id = t.u AND o.order_id <> t.o
          AND o.status <> 'cancelled' AND o.per_user_limit = 1",
        &[&ids, &sales, &users],
    )?;
    let mut live = BTreeSet::new();
    let mut involved = BTreeSet::new();
    for r in &rows {
        let (id, sale, user): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        if let Some(theirs) = seen.get(&(sale.as_str(), user as u64)) {
            involved.extend(theirs.iter().map(|s| s.to_string()));
        }
        live.insert(id);
    }
    for theirs in seen.values().filter(|t| t.len() > 1) {
        involved.extend(theirs.iter().map(|s| s.to_string()));
    }
    // An order of the batch that already has its live row is not new.
    involved.retain(|id| !live.contains(id));
    Ok((live.into_iter().collect(), involved.into_iter().collect()))
}

/// Write what Redis decided about colliding orders: `rows` (live rows Redis released)
/// cancelled, `orders` (the batch's orders Redis released) inserted already cancelled,
/// in one transaction. The batch is then written as usual: the cancelled orders are
/// replays of themselves, and the buyer's one live order goes in.
pub fn cancel_released(
    db: &mut Client,
    rows: &[String],
    orders: &[&OrderMessage],
) -> Result<(), postgres::Error> {
    let mut tx = db.transaction()?;
    tx.execute(
        "UPDATE orders SET status = 'cancelled', cancelled_at = now() WHERE order_id = ANY($1) AND status = 'reserved'",
        &[&rows],
    )?;
    if !orders.is_empty() {
        insert_sales(&mut tx, orders)?;
        insert_orders(&mut tx, orders, "cancelled")?;
    }
    tx.commit()
}

/// A failure caused by the rows themselves (constraint or data errors), as opposed to
/// the database being down or slow.
pub fn is_data_error(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("23") || c.starts_with("22")
    })
}

/// How an unpaid order ended after the payment-window scan looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Cancelled,
    Paid,
    /// Redis could not settle it (it does not know the order): set aside for
    /// reconciliation, so it never blocks the scan.
    Unsettled,
}

/// What one scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub cancelled: u64,
    pub paid: u64,
    pub unsettled: u64,
}

/// Take up to `limit` reserved orders older than `window_secs`, locked so other writers
/// skip them; `settle` decides them all at once (through Redis, the arbiter, in as few
/// round trips as there are sales), and their rows are updated in the same transaction,
/// three statements whatever the page's size. A crash before commit leaves the rows
/// reserved; the next scan settles them again and Redis answers "already released/paid",
/// so stock returns once. While a row is locked here a purchase by the same buyer that
/// Redis allowed (its release just happened) waits on the lock to be inserted, so the
/// database never holds the released order live beside the new one.
pub fn expire_unpaid(
    db: &mut Client,
    window_secs: i64,
    limit: i64,
    settle: impl FnOnce(&[String]) -> Result<Vec<Ended>, WriterError>,
) -> Result<Expired, WriterError> {
    let mut tx = db.transaction()?;
    let ids: Vec<String> = tx
        .query(
            "SELECT order_id FROM orders
             WHERE status = 'reserved' AND unsettled_reason IS NULL AND accepted_at < now() - make_interval(secs => $1)
             ORDER BY accepted_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&(window_secs as f64), &limit],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(Expired::default());
    }
    let ended = settle(&ids)?;
    assert_eq!(ended.len(), ids.len(), "one settlement per expired order");
    let pick = |want: Ended| -> Vec<&str> {
        ids.iter()
            .zip(&ended)
            .filter(|(_, e)| **e == want)
            .map(|(id, _)| id.as_str())
            .collect()
    };
    let (cancelled, paid, unsettled) = (
        pick(Ended::Cancelled),
        pick(Ended::Paid),
        pick(Ended::Unsettled),
    );
    let done = Expired {
        cancelled: tx.execute(
            "UPDATE orders SET status = 'cancelled', cancelled_at = now() WHERE order_id = ANY($1) AND status = 'reserved'",
            &[&cancelled],
        )?,
        paid: tx.execute(
            "UPDATE orders SET status = 'paid', paid_at = now() WHERE order_id = ANY($1) AND status = 'reserved'",
            &[&paid],
        )?,
        unsettled: tx.execute(
            "UPDATE orders SET unsettled_reason = 'unknown to redis' WHERE order_id = ANY($1) AND status = 'reserved'",
            &[&unsettled],
        )?,
    };
    tx.commit()?;
    Ok(done)
}

/// Of `ids`, those whose row is `reserved` or `paid`: the reservation sweep leaves a
/// reserved one to the payment-window scan (which settles Redis and the row together, or
/// sets it aside for the reconcile), and never releases one PostgreSQL has as paid. A
/// reservation with no row, or with a cancelled one, is the sweep's to release.
pub fn with_rows(db: &mut Client, ids: &[String]) -> Result<Vec<String>, postgres::Error> {
    Ok(db
        .query(
            "SELECT order_id FROM orders WHERE order_id = ANY($1) AND status IN ('reserved', 'paid')",
            &[&ids],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Sales PostgreSQL has no definition for (their `opened` event never came) and the
/// units of their live orders: the oversell check asks Redis for their initial stock.
pub fn live_units_without_definition(
    db: &mut Client,
) -> Result<Vec<(String, i64)>, postgres::Error> {
    let rows = db.query(
        "SELECT s.sale, sum(o.units)::int8 FROM sales s JOIN orders o ON o.sale = s.sale
         WHERE s.initial_stock IS NULL AND o.status <> 'cancelled' GROUP BY s.sale",
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sales whose live (not cancelled) orders exceed their initial stock: an oversell.
pub fn oversold_sales(db: &mut Client) -> Result<Vec<String>, postgres::Error> {
    let rows = db.query(
        "SELECT s.sale FROM sales s JOIN orders o ON o.sale = s.sale
         WHERE s.initial_stock IS NOT NULL AND o.status <> 'cancelled'
         GROUP BY s.sale, s.initial_stock HAVING sum(o.units) > s.initial_stock",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
