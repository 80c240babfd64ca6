//! The transport the typed API runs on: [`Exec`] (one command, one reply), the blocking
//! [`Conn`] (one Redis or a Redis Cluster) for tools and tests, and connecting with
//! every read and write bounded by a timeout.

use crate::{cluster, map_redis_error, StockError};
use redis::Value;
use std::time::Duration;

/// One command, one reply. Error replies may come back either as `Err` or as
/// `Ok(Value::ServerError)`; both are handled.
pub trait Exec {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError>;

    /// `SCRIPT LOAD body` where a script on `key` runs (after NOSCRIPT). On one Redis
    /// that is the one server; a cluster transport loads it on the master of `key`'s
    /// slot, the node that answered NOSCRIPT.
    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        let _ = key;
        self.exec(redis::cmd("SCRIPT").arg("LOAD").arg(body))
    }
}

impl Exec for redis::Connection {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        redis::ConnectionLike::req_command(self, cmd).map_err(map_redis_error)
    }
}

impl Exec for redis::cluster::ClusterConnection {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        redis::ConnectionLike::req_command(self, cmd).map_err(map_redis_error)
    }

    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        match key {
            Some(key) => cluster::load_script_for_key(self, body, key),
            None => self.exec(redis::cmd("SCRIPT").arg("LOAD").arg(body)),
        }
    }
}

/// A blocking connection for tools and tests: one Redis, or a Redis Cluster.
pub enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl Exec for Conn {
    fn exec(&mut self, cmd: &redis::Cmd) -> Result<Value, StockError> {
        match self {
            Conn::Single(c) => c.exec(cmd),
            Conn::Cluster(c) => c.exec(cmd),
        }
    }

    fn load_script(&mut self, body: &str, key: Option<&str>) -> Result<Value, StockError> {
        match self {
            Conn::Single(c) => c.load_script(body, key),
            Conn::Cluster(c) => c.load_script(body, key),
        }
    }
}

/// Pipelines and transactions run on either: a cluster connection sends a pipeline to
/// the node of its first command's key (MULTI included), so a pipeline must stay in
/// one slot there.
impl redis::ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => c.req_command(cmd),
            Conn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::Single(c) => c.check_connection(),
            Conn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Single(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

/// A blocking connection with read/write timeouts, for tools and tests: to a Redis
/// Cluster when `url` is `redis+cluster://host:port,…`, else to one Redis.
pub fn connect(url: &str, timeout: Duration) -> Result<Conn, StockError> {
    if cluster::is_cluster_url(url) {
        return cluster::connect(url, timeout).map(|c| Conn::Cluster(Box::new(c)));
    }
    connect_single(url, timeout).map(Conn::Single)
}

/// A blocking connection to one Redis (`redis://…`, or `rediss://…` over TLS with the
/// process's [`crate::tls`] material).
pub fn connect_single(url: &str, timeout: Duration) -> Result<redis::Connection, StockError> {
    let client = if crate::tls::is_tls_url(url) {
        redis::Client::build_with_tls(url, crate::tls::tls()?.certificates())
    } else {
        redis::Client::open(url)
    }
    .map_err(map_redis_error)?;
    let conn = client
        .get_connection_with_timeout(timeout)
        .map_err(map_redis_error)?;
    with_timeouts(conn, timeout)
}

/// A blocking connection whose reads and writes can be bounded.
pub(crate) trait Bounded: Sized {
    fn bound(&self, timeout: Duration) -> redis::RedisResult<()>;
}

impl Bounded for redis::Connection {
    fn bound(&self, timeout: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Bounded for redis::cluster::ClusterConnection {
    fn bound(&self, timeout: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Every read and write on `conn` bounded by `timeout`.
pub(crate) fn with_timeouts<C: Bounded>(conn: C, timeout: Duration) -> Result<C, StockError> {
    conn.bound(timeout).map_err(map_redis_error)?;
    Ok(conn)
}
