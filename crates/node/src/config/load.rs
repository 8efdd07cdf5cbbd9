//! Merging the configuration layers while remembering where every value came from, so that an
//! error names the key, the value and its source, and `config check` can show the origins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Config, sorcha, validate};

/// Environment variables under this prefix set configuration keys:
/// `SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS=3` sets `discovery.min_healthy_peers`.
pub const ENV_PREFIX: &str = "SORCHA_PEER__";

/// Where one configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    /// A Sorcha `appsettings.json`, with the key's name there.
    SorchaFile {
        path: PathBuf,
        key: String,
    },
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::SorchaFile { path, key } => write!(f, "file {} ({key})", path.display()),
            Origin::Env(var) => write!(f, "environment {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The layers above the defaults. `env` is passed in (not read here) so tests stay hermetic.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `(flag, dotted key, value)`, in the order given.
    pub flags: Vec<(&'static str, String, Value)>,
}

/// A validated configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub origins: BTreeMap<String, Origin>,
    /// Keys that were read but have no effect on this node (e.g. Sorcha's `PersistencePath`).
    pub notes: Vec<String>,
}

impl LoadedConfig {
    /// Every key with its effective value and origin, in key order.
    pub fn effective(&self) -> Vec<(String, String, Origin)> {
        let table = Table::try_from(&self.config).expect(
            "invariant: Config serializes to a TOML table (all its fields are tables or scalars)",
        );
        let mut rows = Vec::new();
        flatten(&table, "", &mut |key, value| {
            let origin = self.origins.get(key).cloned().unwrap_or(Origin::Default);
            rows.push((key.to_owned(), value.to_string(), origin));
        });
        rows
    }
}

/// A value that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    /// As written, or `(missing)` where the problem is an absence.
    pub value: String,
    pub origin: Origin,
    pub problem: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} (from {}): {}",
            self.key, self.value, self.origin, self.problem
        )
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// One or more values are wrong.
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<Invalid>),
}

fn list(items: &[Invalid]) -> String {
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Merges defaults, file, environment and flags, then deserializes and validates the result.
pub fn load(sources: &Sources) -> Result<LoadedConfig, ConfigError> {
    let defaults =
        Table::try_from(Config::default()).expect("invariant: Config serializes to a TOML table");
    let mut layers = Layers {
        merged: defaults.clone(),
        origins: BTreeMap::new(),
        invalid: Vec::new(),
    };
    let mut notes = Vec::new();
    if let Some(path) = &sources.file {
        notes = layers.file(path)?;
    }
    layers.env(&defaults, &sources.env);
    for (flag, key, value) in &sources.flags {
        layers.set(key, value.clone(), Origin::Flag(flag));
    }
    let Layers {
        merged,
        origins,
        invalid,
    } = layers;
    if !invalid.is_empty() {
        return Err(ConfigError::Invalid(invalid));
    }
    let config: Config = serde_path_to_error::deserialize(Value::Table(merged.clone()))
        .map_err(|e| ConfigError::Invalid(vec![deserialize_error(&e, &merged, &origins)]))?;
    let invalid: Vec<Invalid> = validate::validate(&config)
        .into_iter()
        .map(|(key, problem)| Invalid {
            value: lookup(&merged, &key).map_or_else(|| "(missing)".into(), |v| v.to_string()),
            origin: origin_of(&origins, &key),
            key,
            problem,
        })
        .collect();
    if !invalid.is_empty() {
        return Err(ConfigError::Invalid(invalid));
    }
    Ok(LoadedConfig {
        config,
        origins,
        notes,
    })
}

/// The configuration as the layers build it up: values, where each came from, and what was
/// refused on the way (every refusal is reported, not just the first).
struct Layers {
    merged: Table,
    origins: BTreeMap<String, Origin>,
    invalid: Vec<Invalid>,
}

impl Layers {
    /// Sets `key` (dotted) to `value`, creating tables on the way.
    fn set(&mut self, key: &str, value: Value, origin: Origin) {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            self.invalid.push(Invalid {
                key: key.to_owned(),
                value: value.to_string(),
                origin,
                problem: "empty key segment".into(),
            });
            return;
        }
        let (last, parents) = parts
            .split_last()
            .expect("invariant: split yields one part at least");
        let mut table = &mut self.merged;
        for (depth, part) in parents.iter().enumerate() {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            let Value::Table(inner) = entry else {
                self.invalid.push(Invalid {
                    key: key.to_owned(),
                    value: value.to_string(),
                    origin,
                    problem: format!("`{}` is a value, not a section", parts[..=depth].join(".")),
                });
                return;
            };
            table = inner;
        }
        table.insert(last.to_string(), value);
        self.origins.insert(key.to_owned(), origin);
    }

    /// The file's values (TOML, or a Sorcha `appsettings.json`); its notes on keys without
    /// effect.
    fn file(&mut self, path: &Path) -> Result<Vec<String>, ConfigError> {
        let sorcha::Mapped {
            table,
            key_names,
            notes,
        } = read_file(path)?;
        let mut leaves = Vec::new();
        flatten(&table, "", &mut |key, value| {
            leaves.push((key.to_owned(), value.clone()))
        });
        for (key, value) in leaves {
            let origin = match key_names.get(&key) {
                Some(sorcha_key) => Origin::SorchaFile {
                    path: path.to_owned(),
                    key: sorcha_key.clone(),
                },
                None => Origin::File(path.to_owned()),
            };
            self.set(&key, value, origin);
        }
        Ok(notes)
    }

    /// `SORCHA_PEER__SECTION__KEY` variables, typed after the defaults.
    fn env(&mut self, defaults: &Table, env: &[(String, String)]) {
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            let value = env_value(defaults, &key, raw);
            self.set(&key, value, Origin::Env(var.clone()));
        }
    }
}

/// Reads a TOML file, or a Sorcha `appsettings.json` (by its `.json` extension), as a table in
/// our key space, with the Sorcha key name of each value and notes on keys without effect.
fn read_file(path: &Path) -> Result<sorcha::Mapped, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    if path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
    {
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        sorcha::to_table(&json).map_err(parse_error)
    } else {
        let table: Table = toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        Ok(sorcha::Mapped {
            table,
            key_names: BTreeMap::new(),
            notes: Vec::new(),
        })
    }
}

/// Reads an environment value with the type the key has in the defaults: strings stay
/// strings (a node id of "123" is not a number), lists may be comma-separated (or a TOML
/// array), anything else is
/// read as a TOML literal (`5`, `true`, `["a", "b"]`) and left a string when it is not one.
fn env_value(defaults: &Table, key: &str, raw: &str) -> Value {
    match lookup(defaults, key) {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Array(_)) if !raw.trim_start().starts_with('[') => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        ),
        _ => toml::from_str::<Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    }
}

fn deserialize_error(
    e: &serde_path_to_error::Error<toml::de::Error>,
    merged: &Table,
    origins: &BTreeMap<String, Origin>,
) -> Invalid {
    let path = e.path().to_string();
    let message = e.inner().message().to_owned();
    // For an unknown key the path may name the key or only its parent; the key is in the
    // message either way.
    let field = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next());
    let key = match field {
        Some(field) if path == "." => field.to_owned(),
        Some(field) if path != field && !path.ends_with(&format!(".{field}")) => {
            format!("{path}.{field}")
        }
        _ => path,
    };
    Invalid {
        value: lookup(merged, &key).map_or_else(|| "(missing)".into(), |v| v.to_string()),
        origin: origin_of(origins, &key),
        key,
        problem: message,
    }
}

/// The value at a dotted key; a last segment such as `bootstrap_nodes[2]` indexes a list.
fn lookup<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let (key, index) = split_index(key);
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    match index {
        Some(i) => value.as_array()?.get(i),
        None => Some(value),
    }
}

/// `a.b[2]` -> (`a.b`, Some(2)).
fn split_index(key: &str) -> (&str, Option<usize>) {
    match key.strip_suffix(']').and_then(|k| k.rsplit_once('[')) {
        Some((base, index)) => (base, index.parse().ok()),
        None => (key, None),
    }
}

fn origin_of(origins: &BTreeMap<String, Origin>, key: &str) -> Origin {
    origins
        .get(split_index(key).0)
        .cloned()
        .unwrap_or(Origin::Default)
}

/// Calls `f` with every leaf (non-table value) and its dotted key.
fn flatten(table: &Table, prefix: &str, f: &mut dyn FnMut(&str, &Value)) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => flatten(inner, &key, f),
            leaf => f(&key, leaf),
        }
    }
}
