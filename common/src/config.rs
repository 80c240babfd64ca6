//! Configuration: defaults, then a TOML file, then `SECKILL_<FIELD>` environment
//! variables. Every component keeps a flat `Config` struct whose `Default` is the
//! documented default; this module only does the layering.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("unknown setting `{0}` (check the spelling against the README)")]
    Unknown(String),
    #[error("environment variable {var}={value:?}: expected {expected}")]
    BadEnv {
        var: String,
        value: String,
        expected: &'static str,
    },
    /// The defaults do not make a table (a type whose `Default` does not serialize).
    #[error("invalid configuration: {0}")]
    Defaults(#[source] toml::ser::Error),
    /// The layered table does not make the configuration type.
    #[error("invalid configuration: {0}")]
    Invalid(#[source] toml::de::Error),
    /// `<key>_file` names a file that cannot be read.
    #[error("{key}_file = {path:?}: cannot read it: {source}")]
    SecretFile {
        key: String,
        path: String,
        source: std::io::Error,
    },
    /// A key given both as itself and as `<key>_file` in the same layer.
    #[error("{0} is given twice (as {0} and as {0}_file): keep one")]
    Twice(String),
}

/// The value `<key>_file` points at: the file's text without its trailing line end (a
/// secret written with `echo` into a file, or mounted from a secret store).
fn read_value_file(key: &str, path: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_string(),
        path: path.to_string(),
        source,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

/// The string key whose value `<key>_file` holds, if `name` is one (`ticket_secret_file`
/// for `ticket_secret`); keys that are file paths themselves have no `_file` form.
fn file_form<'a>(table: &toml::Table, name: &'a str) -> Option<&'a str> {
    let key = name.strip_suffix("_file")?;
    (!key.ends_with("_file") && table.get(key).is_some_and(toml::Value::is_str)).then_some(key)
}

/// A numeric setting outside its range: refused at start, never clamped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value} is out of range: expected {min}..={max}")]
pub struct OutOfRange {
    pub key: &'static str,
    pub value: i64,
    pub min: i64,
    pub max: i64,
}

/// One integer setting: its key, its value and the values allowed.
pub type Setting = (&'static str, i64, std::ops::RangeInclusive<i64>);

/// Every setting in its range, or the first that is not, named with its value and range.
pub fn check_ranges(settings: &[Setting]) -> Result<(), OutOfRange> {
    match settings.iter().find(|(_, v, r)| !r.contains(v)) {
        Some((key, value, r)) => Err(OutOfRange {
            key,
            value: *value,
            min: *r.start(),
            max: *r.end(),
        }),
        None => Ok(()),
    }
}

/// The integer settings of `T` (from its defaults), so a test can check that a range
/// list leaves none out.
pub fn integer_keys<T: Serialize + Default>() -> Result<Vec<String>, ConfigError> {
    Ok(toml::Table::try_from(T::default())
        .map_err(ConfigError::Defaults)?
        .into_iter()
        .filter(|(_, v)| v.is_integer())
        .map(|(k, _)| k)
        .collect())
}

/// `cfg` as TOML, for `<component> config`: the `secrets` shown as `<redacted>` (unless
/// empty), the value of every secret-named key in `k=v` settings (librdkafka's, a libpq
/// connection string, a URL's query) as `***`, and the password of every URL
/// (`user:password@host`) as `***`.
pub fn redacted<T: Serialize>(cfg: &T, secrets: &[&str]) -> Result<String, ConfigError> {
    let mut table = toml::Table::try_from(cfg).map_err(ConfigError::Defaults)?;
    for (k, v) in table.iter_mut() {
        let Some(text) = v.as_str() else { continue };
        if secrets.contains(&k.as_str()) && !text.is_empty() {
            *v = toml::Value::String("<redacted>".into());
            continue;
        }
        let mut shown = if text.contains('=') {
            text.split_inclusive([',', ' ', '&', '?'])
                .map(|part| match part.split_once('=') {
                    Some((key, value)) if secret_key(key) => {
                        let sep = value
                            .chars()
                            .last()
                            .filter(|c| [',', ' ', '&', '?'].contains(c))
                            .map(String::from)
                            .unwrap_or_default();
                        format!("{key}=***{sep}")
                    }
                    _ => part.to_string(),
                })
                .collect::<String>()
        } else {
            text.to_string()
        };
        shown = redact_url(&shown);
        *v = toml::Value::String(shown);
    }
    toml::to_string(&table).map_err(ConfigError::Defaults)
}

/// `url` with the password of its credentials (`user:password@`, up to the last `@`)
/// shown as `***`; anything else unchanged.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// A setting's key that names a secret (`sasl.password`, `ssl.key.password`, `password`).
fn secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    ["password", "secret", "token", "key.pem"]
        .iter()
        .any(|w| k.contains(w))
}

/// Load `T` from its defaults, overridden by the file at `path` (if given), overridden
/// by environment variables named `SECKILL_` + the field name in upper case. Every
/// string setting may instead come from a file: `<key>_file = "path"` in the TOML file,
/// or `SECKILL_<KEY>_FILE=path` (secrets kept out of the environment and the config);
/// a key given both ways in one layer is refused.
pub fn load_config<T>(path: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_config_from(path, &env)
}

/// [`load_config`] with an explicit environment, for tests.
pub fn load_config_from<T>(path: Option<&Path>, env: &[(String, String)]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut table = toml::Table::try_from(T::default()).map_err(ConfigError::Defaults)?;
    if let Some(path) = path {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
            path: shown,
            source,
        })?;
        for (k, v) in &file {
            if let Some(key) = file_form(&table, k) {
                if file.contains_key(key) {
                    return Err(ConfigError::Twice(key.to_string()));
                }
                let path = v.as_str().ok_or_else(|| ConfigError::Unknown(k.clone()))?;
                let value = read_value_file(key, path)?;
                table.insert(key.to_string(), toml::Value::String(value));
                continue;
            }
            if !table.contains_key(k) {
                return Err(ConfigError::Unknown(k.clone()));
            }
            table.insert(k.clone(), v.clone());
        }
    }
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let var = format!("SECKILL_{}", key.to_uppercase());
        let from_file = env
            .iter()
            .find(|(k, _)| *k == format!("{var}_FILE"))
            .filter(|_| file_form(&table, &format!("{key}_file")).is_some());
        let Some((_, raw)) = env.iter().find(|(k, _)| *k == var) else {
            if let Some((_, path)) = from_file {
                let value = read_value_file(&key, path)?;
                table.insert(key, toml::Value::String(value));
            }
            continue;
        };
        if from_file.is_some() {
            return Err(ConfigError::Twice(key));
        }
        let current = &table[&key];
        let bad = |expected| ConfigError::BadEnv {
            var: var.clone(),
            value: raw.clone(),
            expected,
        };
        let value = match current {
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
            }
            toml::Value::Float(_) => {
                toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?)
            }
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(bad("true or false")),
            }),
            _ => toml::Value::String(raw.clone()),
        };
        table.insert(key, value);
    }
    table.try_into().map_err(ConfigError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Demo {
        listen: String,
        workers: i64,
        ratio: f64,
        strict: bool,
    }
    impl Default for Demo {
        fn default() -> Self {
            Demo {
                listen: "127.0.0.1:8080".into(),
                workers: 2,
                ratio: 1.0,
                strict: false,
            }
        }
    }

    #[test]
    fn secrets_and_url_passwords_are_redacted() {
        #[derive(Serialize)]
        struct C {
            token: String,
            empty: String,
            url: String,
            plain: String,
            extra: String,
            conninfo: String,
            query: String,
        }
        let text = redacted(
            &C {
                token: "s3cret".into(),
                empty: String::new(),
                url: "postgres://writer:pw@db:5432/seckill".into(),
                plain: "redis://127.0.0.1:6379".into(),
                extra: "security.protocol=SASL_SSL,sasl.username=w,sasl.password=hunter2".into(),
                conninfo: "host=db user=w password=hunter3 sslmode=require".into(),
                query: "postgres://w:pw2@db/s?sslmode=require&password=hunter4".into(),
            },
            &["token", "empty"],
        )
        .unwrap();
        assert!(!text.contains("s3cret") && !text.contains(":pw@"), "{text}");
        assert!(text.contains("token = \"<redacted>\""), "{text}");
        assert!(text.contains("empty = \"\""), "{text}");
        assert!(
            text.contains("postgres://writer:***@db:5432/seckill"),
            "{text}"
        );
        assert!(text.contains("redis://127.0.0.1:6379"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
        assert!(text.contains("sasl.username=w,sasl.password=***"), "{text}");
        assert!(
            text.contains("user=w password=*** sslmode=require"),
            "{text}"
        );
    }

    #[test]
    fn a_setting_out_of_range_is_named_with_its_range() {
        assert_eq!(check_ranges(&[("a", 1, 0..=2), ("b", 5, 5..=5)]), Ok(()));
        let e = check_ranges(&[("a", 1, 0..=2), ("b", 6, 1..=5), ("c", -1, 0..=1)]).unwrap_err();
        assert_eq!(e.to_string(), "b = 6 is out of range: expected 1..=5");
        assert_eq!(integer_keys::<Demo>().unwrap(), vec!["workers".to_string()]);
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("seckill-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "workers = 8\nlisten = \"0.0.0.0:1\"\n").unwrap();
        let c: Demo = load_config_from(
            Some(&file),
            &env(&[("SECKILL_WORKERS", "16"), ("SECKILL_STRICT", "on")]),
        )
        .unwrap();
        assert_eq!(
            c,
            Demo {
                listen: "0.0.0.0:1".into(),
                workers: 16,
                ratio: 1.0,
                strict: true
            }
        );
    }

    #[test]
    fn a_string_setting_comes_from_its_file_in_either_layer() {
        let dir = std::env::temp_dir().join(format!("seckill-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (secret, file) = (dir.join("listen.txt"), dir.join("c.toml"));
        std::fs::write(&secret, "10.0.0.1:80\n").unwrap();
        std::fs::write(
            &file,
            format!("listen_file = {:?}\n", secret.display().to_string()),
        )
        .unwrap();
        let c: Demo = load_config_from(Some(&file), &[]).unwrap();
        assert_eq!(c.listen, "10.0.0.1:80");
        let path = secret.display().to_string();
        let c: Demo = load_config_from(None, &env(&[("SECKILL_LISTEN_FILE", &path)])).unwrap();
        assert_eq!(c.listen, "10.0.0.1:80");
        // Both ways in one layer: which one was meant is unknown.
        let both = env(&[("SECKILL_LISTEN_FILE", &path), ("SECKILL_LISTEN", "x")]);
        assert!(
            matches!(load_config_from::<Demo>(None, &both), Err(ConfigError::Twice(k)) if k == "listen")
        );
        // A file that cannot be read names its key and path.
        let e = load_config_from::<Demo>(None, &env(&[("SECKILL_LISTEN_FILE", "/nonexistent/x")]))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("listen_file = \"/nonexistent/x\": cannot read it"),
            "{e}"
        );
        // Numbers have no file form.
        std::fs::write(&file, "workers_file = \"/x\"\n").unwrap();
        assert!(
            matches!(load_config_from::<Demo>(Some(&file), &[]), Err(ConfigError::Unknown(k)) if k == "workers_file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("seckill-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "wrokers = 8\n").unwrap();
        assert!(
            matches!(load_config_from::<Demo>(Some(&file), &[]), Err(ConfigError::Unknown(k)) if k == "wrokers")
        );
        assert!(matches!(
            load_config_from::<Demo>(None, &env(&[("SECKILL_RATIO", "x")])),
            Err(ConfigError::BadEnv { .. })
        ));
    }
}
