//! `gateway switch …`: list, read and set the degradation switches through a gateway's
//! admin API (authenticated with the admin bearer token, audited with the actor).
//!
//! ```text
//! gateway switch [list]                    every switch: effective, central, local, store
//! gateway switch get NAME                  one switch's effective value
//! gateway switch set NAME VALUE [--local]  set it centrally (all instances) or here only
//! gateway switch clear-local               drop this instance's local override
//! gateway switch audit                     the latest audit entries
//! gateway sale pause|resume SALE           per-sale pause (lives with the sale in Redis)
//! ```
//! VALUE is JSON (`true`, `0.5`, `"spool"`, `{"global_rps":…}`); a bare word is taken
//! as a string. `--url` (`SECKILL_ADMIN_URL`; default `http://<internal_listen>`, the
//! listener that serves `/admin/*`) and `--token`
//! (`SECKILL_ADMIN_TOKEN`; default the configured `admin_token`) pick the gateway. The
//! commands are clap subcommands so that `gateway --help` describes them with the rest.

use crate::switches::NAMES;
use serde_json::{json, Value};
use std::time::Duration;

/// Why an admin command did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("{0}")]
    Read(#[source] ureq::Error),
    /// The gateway answered with a refusal (its JSON body, or its text).
    #[error("{method} {path}: HTTP {status}: {body}")]
    Refused {
        method: String,
        path: String,
        status: u16,
        body: Value,
    },
    #[error("no switch {0}; switches: {NAMES:?}")]
    NoSwitch(String),
}

/// `gateway switch …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Switch {
    /// Every switch: effective value, central value, local override, store (the default)
    List,
    /// One switch's effective value
    Get {
        /// The switch (`gateway switch list` names them)
        name: String,
    },
    /// Set a switch centrally (every gateway of the cluster follows), or here only
    // A VALUE may be a negative number.
    #[command(allow_negative_numbers = true)]
    Set {
        /// The switch (`gateway switch list` names them)
        name: String,
        /// JSON (true, 0.5, "spool", {"global_rps":…}); a bare word is a string
        value: String,
        /// Override on this gateway only (wins until `clear-local`), for when Redis is unreachable
        #[arg(long)]
        local: bool,
    },
    /// Drop this gateway's local overrides
    ClearLocal,
    /// The latest audit entries of the cluster
    Audit,
}

/// `gateway sale …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Sale {
    /// Pause one sale on every gateway (stored with the sale in Redis)
    Pause {
        /// The sale's id
        sale: String,
    },
    /// Resume a paused sale
    Resume {
        /// The sale's id
        sale: String,
    },
}

/// What an admin command asks a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    Switch(Switch),
    Sale(Sale),
}

pub struct Target {
    pub url: String,
    pub token: String,
    pub actor: String,
}

/// The admin token and the actor, on any request.
fn signed<B>(r: ureq::RequestBuilder<B>, auth: &str, actor: &str) -> ureq::RequestBuilder<B> {
    r.header("Authorization", auth).header("X-Actor", actor)
}

fn call(t: &Target, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let url = format!("{}{path}", t.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", t.token);
    let a = &t.actor;
    let r = match (method, body) {
        ("GET", _) => signed(agent.get(&url), &auth, a).call(),
        ("DELETE", _) => signed(agent.delete(&url), &auth, a).call(),
        (_, Some(b)) => signed(agent.post(&url), &auth, a).send_json(b),
        (_, None) => signed(agent.post(&url), &auth, a).send_empty(),
    };
    let mut r = r.map_err(|source| CliError::Request { url, source })?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().map_err(CliError::Read)?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status >= 300 {
        return Err(CliError::Refused {
            method: method.into(),
            path: path.into(),
            status,
            body: v,
        });
    }
    Ok(v)
}

/// A VALUE argument: JSON if it parses, else a string.
pub fn parse_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// Send `cmd` to the gateway of `t` and print its answer as pretty JSON.
pub fn run(t: &Target, cmd: &Admin) -> Result<(), CliError> {
    let out = match cmd {
        Admin::Switch(Switch::List) => call(t, "GET", "/admin/switches", None)?,
        Admin::Switch(Switch::Get { name }) => {
            let v = call(t, "GET", "/admin/switches", None)?;
            v.get("effective")
                .and_then(|e| e.get(name))
                .cloned()
                .ok_or_else(|| CliError::NoSwitch(name.clone()))?
        }
        Admin::Switch(Switch::Set { name, value, local }) => {
            if !NAMES.contains(&name.as_str()) {
                return Err(CliError::NoSwitch(name.clone()));
            }
            let path = if *local {
                "/admin/switches/local"
            } else {
                "/admin/switches"
            };
            call(t, "POST", path, Some(&json!({ name: parse_value(value) })))?
        }
        Admin::Switch(Switch::ClearLocal) => call(t, "DELETE", "/admin/switches/local", None)?,
        Admin::Switch(Switch::Audit) => call(t, "GET", "/admin/audit", None)?,
        Admin::Sale(verb) => {
            let (sale, paused) = match verb {
                Sale::Pause { sale } => (sale, true),
                Sale::Resume { sale } => (sale, false),
            };
            let path = format!("/admin/sales/{sale}/pause");
            call(t, "POST", &path, Some(&json!({ "paused": paused })))?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_or_else_strings() {
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("0.5"), json!(0.5));
        assert_eq!(parse_value("spool"), json!("spool"));
        assert_eq!(parse_value(r#"{"a":1}"#), json!({"a": 1}));
    }

    #[test]
    fn refusals_read_as_before() {
        let e = CliError::NoSwitch("nope".into()).to_string();
        assert!(
            e.starts_with("no switch nope; switches: [\"pause_all\", "),
            "{e}"
        );
    }
}
