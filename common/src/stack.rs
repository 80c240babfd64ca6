//! Addresses of the project-local stack started by `stackctl up` (`./dev up`).
//!
//! `stackctl up` writes them to `<run dir>/stack.env`; these are also the documented
//! defaults, so a component started with no configuration talks to the local stack.
//! Environment variables of the same names win over the file.

use std::collections::HashMap;
use std::path::PathBuf;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:16379";
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:19092";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:15432/seckill";

/// The three service addresses of a stack, and how to reach them when they are secured
/// (the TLS profile, `SECKILL_STACK_TLS=1`; empty otherwise): the PEM files of Redis's
/// TLS, librdkafka's security settings, PostgreSQL's CA. The credentials of the
/// addresses are the stack's administrator's (for tools and tests; the components get
/// their own).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stack {
    pub redis_url: String,
    pub kafka_brokers: String,
    pub database_url: String,
    pub redis_ca_file: String,
    pub redis_cert_file: String,
    pub redis_key_file: String,
    pub kafka_extra: String,
    pub database_ca_file: String,
    /// Where components send spans (OTLP/HTTP), when the stack runs a collector
    /// (`stackctl up --tracing`); empty otherwise.
    pub tracing_endpoint: String,
    /// That collector's query API (Jaeger's `/api/traces/{id}`); empty otherwise.
    pub jaeger_url: String,
}

impl Stack {
    /// Defaults, overridden by `stack.env` (from `SECKILL_STACK_ENV` or the
    /// workspace's `.run/stack.env`), overridden by the environment.
    pub fn discover() -> Stack {
        let mut vars = HashMap::new();
        if let Some(path) = stack_env_path() {
            if let Ok(text) = std::fs::read_to_string(path) {
                vars = parse_env_file(&text);
            }
        }
        let pick = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .or_else(|| vars.get(name).cloned())
                .unwrap_or_else(|| default.to_string())
        };
        Stack {
            redis_url: pick("SECKILL_REDIS_URL", DEFAULT_REDIS_URL),
            kafka_brokers: pick("SECKILL_KAFKA_BROKERS", DEFAULT_KAFKA_BROKERS),
            database_url: pick("SECKILL_DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_ca_file: pick("SECKILL_REDIS_CA_FILE", ""),
            redis_cert_file: pick("SECKILL_REDIS_CERT_FILE", ""),
            redis_key_file: pick("SECKILL_REDIS_KEY_FILE", ""),
            kafka_extra: pick("SECKILL_KAFKA_EXTRA", ""),
            database_ca_file: pick("SECKILL_DATABASE_CA_FILE", ""),
            tracing_endpoint: pick("SECKILL_TRACING_ENDPOINT", ""),
            jaeger_url: pick("SECKILL_JAEGER_URL", ""),
        }
    }

    /// The `stack.env` lines of this stack (the secured settings only when set).
    pub fn env_file(&self) -> String {
        let mut text = format!(
            "SECKILL_REDIS_URL={}\nSECKILL_KAFKA_BROKERS={}\nSECKILL_DATABASE_URL={}\n",
            self.redis_url, self.kafka_brokers, self.database_url
        );
        for (k, v) in [
            ("SECKILL_REDIS_CA_FILE", &self.redis_ca_file),
            ("SECKILL_REDIS_CERT_FILE", &self.redis_cert_file),
            ("SECKILL_REDIS_KEY_FILE", &self.redis_key_file),
            ("SECKILL_KAFKA_EXTRA", &self.kafka_extra),
            ("SECKILL_DATABASE_CA_FILE", &self.database_ca_file),
            ("SECKILL_TRACING_ENDPOINT", &self.tracing_endpoint),
            ("SECKILL_JAEGER_URL", &self.jaeger_url),
        ] {
            if !v.is_empty() {
                text.push_str(&format!("{k}={v}\n"));
            }
        }
        text
    }

    /// A Kafka client of this stack (its brokers, with its security settings).
    pub fn kafka_client(&self) -> Result<rdkafka::ClientConfig, crate::kafka::BadExtra> {
        crate::kafka::client_config(&self.kafka_brokers, &self.kafka_extra, "")
    }

    /// The TLS files of this stack's PostgreSQL.
    pub fn database_tls(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            name: "database".into(),
            ca: self.database_ca_file.clone(),
            ..Default::default()
        }
    }
}

/// Whether the stack's Redis and first Kafka broker accept connections (a quick probe;
/// `stackctl` checks readiness properly).
pub fn answers(stack: &Stack) -> bool {
    answers_url(&stack.redis_url) && answers_kafka(&stack.kafka_brokers)
}

fn answers_url(url: &str) -> bool {
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("");
    // `redis+cluster://a:1,b:2`: the first node answers for the probe.
    let hostport = hostport.split(',').next().unwrap_or(hostport);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    tcp_answers(hostport)
}

fn answers_kafka(brokers: &str) -> bool {
    brokers.split(',').next().is_some_and(tcp_answers)
}

fn tcp_answers(hostport: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(mut addrs) = hostport.to_socket_addrs() else {
        return false;
    };
    addrs.next().is_some_and(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(500)).is_ok()
    })
}

/// The directory holding the `dev` script, found by walking up from the working
/// directory (tests run in their crate's directory).
pub fn workspace_root() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if dir.join("dev").is_file() && dir.join("Cargo.toml").is_file() {
            return Some(dir);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn stack_env_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SECKILL_STACK_ENV") {
        return Some(PathBuf::from(p));
    }
    let run = std::env::var("SECKILL_RUN_DIR")
        .map(PathBuf::from)
        .ok()
        .or_else(|| workspace_root().map(|d| d.join(".run")))?;
    Some(run.join("stack.env"))
}

/// `KEY=value` lines; blank lines and `#` comments ignored.
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_become_pairs_and_comments_are_skipped() {
        let m = parse_env_file("# c\nA=1\n\n B = x=y \nnoequals\n");
        assert_eq!(m.get("A").map(String::as_str), Some("1"));
        assert_eq!(m.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(m.len(), 2);
    }
}
