//! Redis Cluster as a transport: the slot of a key, the cluster URL, and a blocking
//! cluster connection (the `redis` crate's sync cluster client) for tools and tests.
//!
//! A cluster is named by `redis+cluster://host:port,host:port,…` (any of its nodes;
//! `user:password@` before the first node applies to all). Every multi-key call of this
//! crate stays within one slot: the keys of sale `S` share `{S}`, the switches and the
//! audit stream of gateway cluster `C` share `{C}`.

use crate::{map_redis_error, StockError};
use std::time::Duration;

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The URL scheme naming a cluster.
pub const SCHEME: &str = "redis+cluster://";

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), Redis Cluster's key hash.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of `key`: CRC16 of its hash tag (the bytes between the first `{` and the
/// next `}`, when not empty), else of the whole key, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS
}

/// A parsed cluster URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub nodes: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl ClusterUrl {
    /// `redis://` URLs of the seed nodes, with the credentials.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(h, p)| self.node_url(&format!("{h}:{p}")))
            .collect()
    }

    /// The `redis://` URL of the node at `addr` (`host:port`), with the credentials.
    pub fn node_url(&self, addr: &str) -> String {
        let enc = crate::tls::percent_encode;
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (None, Some(p)) => format!(":{}@", enc(p)),
            _ => String::new(),
        };
        format!("redis://{auth}{addr}")
    }
}

/// Whether `url` names a cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with(SCHEME)
}

/// Parse `redis+cluster://[user:password@]host:port,host:port,…`.
pub fn parse_url(url: &str) -> Result<ClusterUrl, StockError> {
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or_else(|| StockError::Invalid(format!("not a {SCHEME} URL: {url}")))?;
    let rest = rest.trim_end_matches('/');
    let (auth, list) = match rest.rsplit_once('@') {
        Some((a, l)) => (Some(a), l),
        None => (None, rest),
    };
    // Credentials as a URL carries them: percent-encoded (`redis_password` is put in so).
    let dec = crate::tls::percent_decode;
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| dec(u)), Some(dec(p))),
            None => (None, Some(dec(a))),
        },
    };
    let nodes = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|hp| {
            let (h, p) = hp
                .rsplit_once(':')
                .ok_or_else(|| StockError::Invalid(format!("node {hp:?}: host:port")))?;
            let port = p
                .parse()
                .map_err(|_| StockError::Invalid(format!("node {hp:?}: port")))?;
            Ok((h.trim_matches(['[', ']']).to_string(), port))
        })
        .collect::<Result<Vec<_>, StockError>>()?;
    if nodes.is_empty() {
        return Err(StockError::Invalid(format!("{url}: no node")));
    }
    Ok(ClusterUrl {
        nodes,
        username,
        password,
    })
}

/// A blocking cluster connection: follows MOVED and ASK and refreshes its slot map
/// (the `redis` crate's sync cluster client), each request bounded by `timeout`.
pub fn connect(
    url: &str,
    timeout: Duration,
) -> Result<redis::cluster::ClusterConnection, StockError> {
    let u = parse_url(url)?;
    let mut b = redis::cluster::ClusterClient::builder(u.node_urls())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(user) = &u.username {
        b = b.username(user);
    }
    if let Some(pw) = &u.password {
        b = b.password(pw);
    }
    let conn = b
        .build()
        .map_err(map_redis_error)?
        .get_connection()
        .map_err(map_redis_error)?;
    crate::with_timeouts(conn, timeout)
}

/// `SCRIPT LOAD` on the master serving `key`'s slot (where the EVALSHA that answered
/// NOSCRIPT ran), not on every node: a dead node must not fail the load.
pub fn load_script_for_key(
    conn: &mut redis::cluster::ClusterConnection,
    body: &str,
    key: &str,
) -> Result<redis::Value, StockError> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot(key.as_bytes()),
        SlotAddr::Master,
    )));
    conn.route_command(redis::cmd("SCRIPT").arg("LOAD").arg(body), route)
        .map_err(map_redis_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_reference_vectors() {
        // The Redis Cluster specification's check value, and XMODEM's.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
        assert_eq!(crc16(b"A"), 0x58E5);
    }

    #[test]
    fn slots_match_cluster_keyslot_and_follow_hash_tags() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"hello"), 866);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{user1000}.followers"), slot(b"user1000"));
        // An empty tag hashes the whole key; only the first `{…}` counts.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"sk:{s1}:meta"), slot(b"sk:{s1}:tok:ab"));
    }

    #[test]
    fn cluster_urls_parse() {
        let u = parse_url("redis+cluster://127.0.0.1:7001,127.0.0.1:7002/").unwrap();
        assert_eq!(
            u.nodes,
            vec![("127.0.0.1".into(), 7001), ("127.0.0.1".into(), 7002)]
        );
        assert_eq!(u.node_urls()[1], "redis://127.0.0.1:7002");
        let a = parse_url("redis+cluster://bob:pw@h:1").unwrap();
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("bob"), Some("pw"))
        );
        assert_eq!(a.node_urls(), vec!["redis://bob:pw@h:1"]);
        assert!(parse_url("redis://h:1").is_err());
        assert!(parse_url("redis+cluster://").is_err());
        assert!(parse_url("redis+cluster://h").is_err());
        assert!(is_cluster_url("redis+cluster://h:1"));
    }
}
