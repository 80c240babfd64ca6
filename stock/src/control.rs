//! The control plane's Redis side: the store epoch, a gateway cluster's central
//! switches and its audit stream. The gateway calls these on a plain connection of its
//! own (outside the breaker); only this crate builds the commands.
//!
//! The switches hash and the audit stream of cluster `C` share the hash tag `{C}`, so
//! the write of a switch and its audit entry is one MULTI in one slot on Redis Cluster.

use crate::keys;
use crate::{map_redis_error, Conn, StockError};
use std::collections::HashMap;

/// One operator change, as written to the audit stream.
pub struct AuditEntry<'a> {
    pub ts_ms: i64,
    pub actor: &'a str,
    pub peer: &'a str,
    pub instance: &'a str,
    pub action: &'a str,
    /// JSON of what changed.
    pub detail: &'a str,
}

/// Entries kept in the audit stream (approximately: `MAXLEN ~`).
pub const AUDIT_MAX: u64 = 100_000;

/// One read of the store: its epoch (None: no sale ever created, or the data was
/// lost) and cluster `cluster`'s switches (field → JSON value). One pipeline on one
/// Redis; two calls on a cluster (`sk:epoch` and the switches are in two slots).
pub fn read(
    conn: &mut Conn,
    cluster: &str,
) -> Result<(Option<String>, HashMap<String, String>), StockError> {
    if conn.is_cluster() {
        let epoch = redis::cmd("GET")
            .arg(keys::EPOCH)
            .query(conn)
            .map_err(map_redis_error)?;
        let switches = redis::cmd("HGETALL")
            .arg(keys::switches(cluster))
            .query(conn)
            .map_err(map_redis_error)?;
        return Ok((epoch, switches));
    }
    redis::pipe()
        .cmd("GET")
        .arg(keys::EPOCH)
        .cmd("HGETALL")
        .arg(keys::switches(cluster))
        .query(conn)
        .map_err(map_redis_error)
}

/// The store epoch alone (`sk:epoch`; None: no sale ever created, or the data was lost).
pub fn epoch(conn: &mut Conn) -> Result<Option<String>, StockError> {
    redis::cmd("GET")
        .arg(keys::EPOCH)
        .query(conn)
        .map_err(map_redis_error)
}

fn xadd(p: &mut redis::Pipeline, cluster: &str, e: &AuditEntry) {
    p.cmd("XADD")
        .arg(keys::audit(cluster))
        .arg("MAXLEN")
        .arg("~")
        .arg(AUDIT_MAX)
        .arg("*")
        .arg("ts_ms")
        .arg(e.ts_ms)
        .arg("actor")
        .arg(e.actor)
        .arg("peer")
        .arg(e.peer)
        .arg("instance")
        .arg(e.instance)
        .arg("action")
        .arg(e.action)
        .arg("detail")
        .arg(e.detail)
        .ignore();
}

/// Set switch `fields` (name → JSON value) and append their audit entry, atomically.
pub fn write_switches(
    conn: &mut Conn,
    cluster: &str,
    fields: &[(&str, String)],
    audit: &AuditEntry,
) -> Result<(), StockError> {
    let mut p = redis::pipe();
    p.atomic();
    for (k, v) in fields {
        p.cmd("HSET")
            .arg(keys::switches(cluster))
            .arg(*k)
            .arg(v)
            .ignore();
    }
    xadd(&mut p, cluster, audit);
    p.query::<()>(conn).map_err(map_redis_error)
}

/// Append one audit entry.
pub fn audit(conn: &mut Conn, cluster: &str, e: &AuditEntry) -> Result<(), StockError> {
    let mut p = redis::pipe();
    xadd(&mut p, cluster, e);
    p.query::<()>(conn).map_err(map_redis_error)
}

/// One audit entry: its stream id and its fields (field, value).
pub type AuditRecord = (String, Vec<(String, String)>);

/// The newest `n` audit entries, newest first: (stream id, field → value).
pub fn recent_audit(
    conn: &mut Conn,
    cluster: &str,
    n: usize,
) -> Result<Vec<AuditRecord>, StockError> {
    redis::cmd("XREVRANGE")
        .arg(keys::audit(cluster))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(n)
        .query(conn)
        .map_err(map_redis_error)
}
