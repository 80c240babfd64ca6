//! Redis over TLS (`rediss://`) and the password a component's settings give: the TLS
//! material every `rediss://` connection of this process uses, set once by a component
//! from its settings ([`use_tls`]), else (tools and tests) read from the stack's
//! `SECKILL_REDIS_CA_FILE` / `_CERT_FILE` / `_KEY_FILE` (environment or `stack.env`).

use crate::StockError;
use seckill_common::tls::TlsFiles;
use std::sync::{Arc, RwLock};

/// The PEM material of `rediss://` connections, read and checked once.
pub struct RedisTls {
    /// For the redis crate's own connections: the CA, the client certificate and key.
    ca: Option<Vec<u8>>,
    client: Option<seckill_common::tls::ClientPem>,
    /// For connections made by hand (the gateway's pipe).
    pub config: Arc<rustls::ClientConfig>,
}

static TLS: RwLock<Option<Arc<RedisTls>>> = RwLock::new(None);

impl RedisTls {
    fn read(files: &TlsFiles) -> Result<RedisTls, StockError> {
        let tls = |e: seckill_common::tls::TlsError| StockError::Tls(e.to_string());
        Ok(RedisTls {
            ca: files.ca_pem().map_err(tls)?,
            client: files.client_pem().map_err(tls)?,
            config: Arc::new(files.client_config().map_err(tls)?),
        })
    }

    /// The redis crate's form of the same material.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Use `files` for every `rediss://` connection of this process from now on; an error
/// (a file missing, unreadable or not PEM) names the setting to fix.
pub fn use_tls(files: &TlsFiles) -> Result<(), StockError> {
    let tls = Arc::new(RedisTls::read(files)?);
    // The redis crate builds its TLS settings with the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(mut slot) = TLS.write() {
        *slot = Some(tls);
    }
    Ok(())
}

/// The TLS material of `rediss://` connections: what [`use_tls`] set, else the stack's.
pub fn tls() -> Result<Arc<RedisTls>, StockError> {
    if let Some(t) = TLS.read().ok().and_then(|t| t.clone()) {
        return Ok(t);
    }
    let stack = seckill_common::stack::Stack::discover();
    use_tls(&TlsFiles {
        name: "redis".into(),
        ca: stack.redis_ca_file,
        cert: stack.redis_cert_file,
        key: stack.redis_key_file,
    })?;
    TLS.read()
        .ok()
        .and_then(|t| t.clone())
        .ok_or_else(|| StockError::Tls("settings unavailable".into()))
}

/// Whether `url` asks for TLS (`rediss://`).
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// `url` with `password` in place of its own (percent-encoded, so any character may be
/// in it); unchanged when `password` is empty. For `redis_password` /
/// `redis_password_file`, which keep the secret out of the URL.
pub fn url_with_password(url: &str, password: &str) -> String {
    if password.is_empty() {
        return url.to_string();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The last `@` ends the credentials, as every parser of these URLs reads them.
    let (user, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (auth.split(':').next().unwrap_or(""), host),
        None => ("", rest),
    };
    format!("{scheme}://{user}:{}@{host}", percent_encode(password))
}

/// `text` with every byte but the URL-unreserved ones as `%XX`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `%XX` sequences decoded (a malformed one kept as it is).
pub fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_setting_replaces_the_urls_encoded() {
        assert_eq!(url_with_password("redis://h:1/0", ""), "redis://h:1/0");
        assert_eq!(
            url_with_password("redis://h:1/0", "p w@/:"),
            "redis://:p%20w%40%2F%3A@h:1/0"
        );
        assert_eq!(
            url_with_password("rediss://gw:old@h:1", "new"),
            "rediss://gw:new@h:1"
        );
        assert_eq!(
            url_with_password("rediss://gw@h:1", "x"),
            "rediss://gw:x@h:1"
        );
        let info = redis::IntoConnectionInfo::into_connection_info(url_with_password(
            "redis://u@h:1",
            "a:b@c",
        ))
        .unwrap();
        assert_eq!(info.redis_settings().password(), Some("a:b@c"));
        // A cluster URL reads it back whole, and hands it on to each node.
        let c =
            crate::cluster::parse_url(&url_with_password("redis+cluster://u@h:1,h:2", "p@s%s:w"))
                .unwrap();
        assert_eq!(c.password.as_deref(), Some("p@s%s:w"));
        let node = redis::IntoConnectionInfo::into_connection_info(c.node_url("h:1")).unwrap();
        assert_eq!(node.redis_settings().password(), Some("p@s%s:w"));
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
