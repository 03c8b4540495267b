//! Layered configuration: defaults, then a TOML file, then `BOSUN_*` environment variables,
//! then command-line flags — validated once by the caller after loading.
//!
//! Nested keys use `__` in variable names: `BOSUN_AUTH__TOKEN_TTL` sets `auth.token_ttl`.
//! The environment is passed in as a map so tests never touch process variables.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The prefix of every Bosun environment variable.
pub const ENV_PREFIX: &str = "BOSUN_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from its defaults, an optional TOML file, the `BOSUN_*` entries of `env`, and
/// `flags` (only the keys a flag actually set should be present there).
pub fn load<T>(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: &BTreeMap<String, Value>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "does not exist".into(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let defaults = Value::serialize(T::default())
        .map_err(|error| ConfigError::Invalid(format!("defaults do not serialize: {error}")))?;
    figment = figment.merge(Serialized::defaults(env_dict(env, &defaults)));
    figment = figment.merge(Serialized::defaults(flags.clone()));
    figment
        .extract()
        .map_err(|error| ConfigError::Invalid(error.to_string().to_lowercase()))
}

/// Turns `BOSUN_A__B=v` entries into `{a: {b: v}}`.
///
/// A value is typed after the default at the same key: where the default is a bool, number
/// or list, the text is parsed as one (`true`, `5`, `[a, b]`); everywhere else it stays the
/// string it is, so a password like `123` is not turned into a number.
fn env_dict(env: &BTreeMap<String, String>, defaults: &Value) -> Dict {
    let mut root = Dict::new();
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let typed = matches!(
            lookup(defaults, &path),
            Some(Value::Bool(..) | Value::Num(..) | Value::Array(..))
        );
        let value = if typed {
            raw.parse().unwrap_or_else(|_| Value::from(raw.clone()))
        } else {
            Value::from(raw.clone())
        };
        insert_path(&mut root, &path, value);
    }
    root
}

fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    match path {
        [] => Some(value),
        [first, rest @ ..] => match value {
            Value::Dict(_, dict) => lookup(dict.get(first)?, rest),
            _ => None,
        },
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

/// The process environment as a map, for binaries (tests build their own map).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Inner {
        ttl: u64,
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        listen: String,
        verbose: bool,
        inner: Inner,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                listen: "127.0.0.1:7070".into(),
                verbose: false,
                inner: Inner::default(),
            }
        }
    }

    #[test]
    fn layers_apply_in_order() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bosun.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:1\"\n[inner]\nttl = 5\nname = \"file\"\n",
        )?;
        let env = BTreeMap::from([
            ("BOSUN_INNER__NAME".to_string(), "env".to_string()),
            ("BOSUN_VERBOSE".to_string(), "true".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ]);
        let flags = BTreeMap::from([("listen".to_string(), Value::from("127.0.0.1:9"))]);
        let loaded: Sample = load(Some(&file), &env, &flags)?;
        assert_eq!(loaded.listen, "127.0.0.1:9");
        assert!(loaded.verbose);
        assert_eq!(loaded.inner.ttl, 5);
        assert_eq!(loaded.inner.name, "env");
        Ok(())
    }

    #[test]
    fn numeric_looking_strings_stay_strings() -> Result<(), Box<dyn std::error::Error>> {
        let env = BTreeMap::from([("BOSUN_INNER__NAME".to_string(), "123".to_string())]);
        let loaded: Sample = load(None, &env, &BTreeMap::new())?;
        assert_eq!(loaded.inner.name, "123");
        Ok(())
    }

    #[test]
    fn bad_values_name_the_key() {
        let env = BTreeMap::from([("BOSUN_INNER__TTL".to_string(), "soon".to_string())]);
        let error = load::<Sample>(None, &env, &BTreeMap::new()).err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("ttl"), "{message}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = load::<Sample>(
            Some(Path::new("/nonexistent/bosun.toml")),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(matches!(error, Err(ConfigError::File { .. })));
    }
}
