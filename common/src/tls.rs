//! TLS to the stack's dependencies, with rustls (its `ring` provider, chosen explicitly:
//! a binary that links two providers has no process default). One [`TlsFiles`] per
//! dependency: the CA to trust (else the system's roots) and, for mutual TLS, a client
//! certificate and its key, all PEM files. Kafka's TLS is librdkafka's own (its
//! `ssl.*` settings); see [`crate::kafka::client_config`].

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// Why TLS material could not be used. Named after the setting that points at it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} = {path:?}: cannot read it: {source}")]
    Read {
        setting: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} = {path:?}: {detail}")]
    Pem {
        setting: String,
        path: PathBuf,
        detail: String,
    },
    #[error("{0} needs {1} too (a client certificate and its key go together)")]
    Half(String, String),
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted CA: {0} is empty and the system has no root certificates")]
    NoRoots(String),
    #[error("{0}")]
    Contradiction(String),
}

/// A client certificate chain and its key, PEM.
pub type ClientPem = (Vec<u8>, Vec<u8>);

/// The PEM files of one dependency's TLS, named by their settings (`redis_ca_file` …)
/// so that an error says which one to fix. Empty paths: not given.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Prefix of the settings' names (`redis` → `redis_ca_file`).
    pub name: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl TlsFiles {
    fn setting(&self, what: &str) -> String {
        format!("{}_{what}_file", self.name)
    }

    /// Whether any file is given (TLS is wanted).
    pub fn any(&self) -> bool {
        !(self.ca.is_empty() && self.cert.is_empty() && self.key.is_empty())
    }

    /// The CA certificates (PEM) as bytes, `None` when the system's roots are meant.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, TlsError> {
        if self.ca.is_empty() {
            return Ok(None);
        }
        let bytes = read(&self.setting("ca"), &self.ca)?;
        let certs = certificates(&self.setting("ca"), &self.ca, &bytes)?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                setting: self.setting("ca"),
                path: self.ca.clone().into(),
                detail: "no certificate in it".into(),
            });
        }
        Ok(Some(bytes))
    }

    /// The client certificate chain and key (PEM bytes), when mutual TLS is configured.
    pub fn client_pem(&self) -> Result<Option<ClientPem>, TlsError> {
        match (self.cert.is_empty(), self.key.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => Err(TlsError::Half(self.setting("cert"), self.setting("key"))),
            (true, false) => Err(TlsError::Half(self.setting("key"), self.setting("cert"))),
            (false, false) => {
                let cert = read(&self.setting("cert"), &self.cert)?;
                certificates(&self.setting("cert"), &self.cert, &cert)?;
                let key = read(&self.setting("key"), &self.key)?;
                private_key(&self.setting("key"), &self.key, &key)?;
                Ok(Some((cert, key)))
            }
        }
    }

    /// Every file given can be read and parsed: what a component checks at start, so
    /// that missing or unreadable material stops it with the setting named.
    pub fn check(&self) -> Result<(), TlsError> {
        self.ca_pem()?;
        self.client_pem()?;
        Ok(())
    }

    /// A rustls client configuration: the CA (or the system's roots), the client
    /// certificate if given.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match self.ca_pem()? {
            Some(pem) => {
                for cert in certificates(&self.setting("ca"), &self.ca, &pem)? {
                    roots.add(cert)?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsError::NoRoots(self.setting("ca")));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        Ok(match self.client_pem()? {
            Some((cert, key)) => builder.with_client_auth_cert(
                certificates(&self.setting("cert"), &self.cert, &cert)?,
                private_key(&self.setting("key"), &self.key, &key)?,
            )?,
            None => builder.with_no_client_auth(),
        })
    }
}

fn read(setting: &str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting: setting.into(),
        path: path.into(),
        source,
    })
}

fn certificates(
    setting: &str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            setting: setting.into(),
            path: path.into(),
            detail: format!("not PEM certificates: {e}"),
        })
}

fn private_key(setting: &str, path: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        setting: setting.into(),
        path: path.into(),
        detail: format!("not a PEM private key: {e}"),
    })
}

/// A PostgreSQL connection string made ready for rustls: `sslmode=verify-full` and
/// `verify-ca` are what rustls always does (the chain and the host name are checked),
/// so they become `require`, which the client library understands.
#[cfg(feature = "postgres")]
fn libpq_sslmode(url: &str) -> String {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
}

/// Connect to PostgreSQL at `url`: over TLS with `tls` when the URL asks for it
/// (`sslmode=require`/`verify-full`) or a TLS file is given (then `sslmode=disable` is
/// refused as a contradiction), plain otherwise (`prefer`, the default, does not try
/// TLS here); `password` (when not empty) replaces the URL's; `configure` adjusts the
/// rest (timeouts).
#[cfg(feature = "postgres")]
pub fn connect_postgres(
    url: &str,
    password: &str,
    tls: &TlsFiles,
    configure: impl FnOnce(&mut postgres::Config),
) -> Result<postgres::Client, PostgresConnectError> {
    let mut cfg: postgres::Config = libpq_sslmode(url)
        .parse()
        .map_err(PostgresConnectError::Url)?;
    if !password.is_empty() {
        cfg.password(password);
    }
    configure(&mut cfg);
    let wants_tls = tls.any() || cfg.get_ssl_mode() == postgres::config::SslMode::Require;
    if wants_tls {
        if cfg.get_ssl_mode() == postgres::config::SslMode::Disable {
            return Err(PostgresConnectError::Tls(TlsError::Contradiction(format!(
                "{}_*_file is set but the URL says sslmode=disable",
                tls.name
            ))));
        }
        cfg.ssl_mode(postgres::config::SslMode::Require);
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config()?);
        Ok(cfg.connect(connector)?)
    } else {
        Ok(cfg.connect(postgres::NoTls)?)
    }
}

/// An error with its causes (`db error: FATAL: password authentication failed …`):
/// the client library's own text names only the kind.
#[cfg(feature = "postgres")]
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

#[cfg(feature = "postgres")]
#[derive(Debug, thiserror::Error)]
pub enum PostgresConnectError {
    /// The URL does not parse.
    #[error("{}", with_sources(.0))]
    Url(#[source] postgres::Error),
    #[error("{}", with_sources(.0))]
    Postgres(#[from] postgres::Error),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_material_is_named_by_its_setting() {
        let files = TlsFiles {
            name: "redis".into(),
            ca: "/nonexistent/ca.pem".into(),
            ..TlsFiles::default()
        };
        let e = files.check().unwrap_err().to_string();
        assert!(
            e.starts_with("redis_ca_file = \"/nonexistent/ca.pem\": cannot read it"),
            "{e}"
        );
        let half = TlsFiles {
            name: "database".into(),
            cert: "/x".into(),
            ..TlsFiles::default()
        };
        assert_eq!(
            half.check().unwrap_err().to_string(),
            "database_cert_file needs database_key_file too (a client certificate and its key go together)"
        );
        let dir = std::env::temp_dir().join(format!("seckill-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let files = TlsFiles {
            name: "redis".into(),
            ca: junk.display().to_string(),
            ..TlsFiles::default()
        };
        let e = files.check().unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
