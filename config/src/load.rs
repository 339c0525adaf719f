//! Layering: defaults ← TOML file ← environment, then strict deserialization and checks.
//!
//! The layers are merged as TOML values (tables merge key by key, anything else is replaced),
//! remembering where each key came from, so an error can say "from environment variable X"
//! or "in file F" next to the key it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::settings::Settings;
use crate::validate;

/// Environment variables `ALPHA_PANDA__SECTION__KEY` set `section.key`.
pub const ENV_PREFIX: &str = "ALPHA_PANDA__";
/// `ACTIVE_BROKERS=paper,zerodha` sets `active_brokers`.
pub const ACTIVE_BROKERS_ENV: &str = "ACTIVE_BROKERS";

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// A configuration that cannot be used, and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {problem}", path.display())]
    Unreadable { path: PathBuf, problem: String },
    #[error("configuration file {} is not valid TOML: {problem}", path.display())]
    Syntax { path: PathBuf, problem: String },
    #[error("{}", invalid_message(key, value.as_deref(), problem, origin))]
    Invalid {
        /// Dotted key, e.g. `kafka.bootstrap_servrs`.
        key: String,
        /// The offending value as written, when there is one.
        value: Option<String>,
        /// What is wrong and what is expected.
        problem: String,
        origin: Origin,
    },
}

impl ConfigError {
    /// An invalid setting, with nothing secret in it: the value of a key that looks secret
    /// (or that is unknown, so may be a misspelt secret) is never shown, not even inside the
    /// deserializer's own words, and a URL shows no password.
    fn invalid(key: String, value: Option<String>, problem: String, origin: Origin) -> Self {
        let unknown = problem.starts_with("unknown field");
        let (value, problem) = match value {
            Some(v) if unknown || crate::mask::looks_secret(&key) => {
                let problem = scrub(&problem, &v, crate::mask::MASK);
                (Some(crate::mask::MASK.to_owned()), problem)
            }
            Some(v) => {
                let masked = crate::mask::urls_in(&v);
                let problem = scrub(&problem, &v, &masked);
                (Some(masked), problem)
            }
            None => (None, problem),
        };
        ConfigError::Invalid {
            key,
            value,
            problem,
            origin,
        }
    }
}

/// `problem` with every rendering of the raw `value` (as TOML, quoted, or bare) replaced.
fn scrub(problem: &str, value: &str, with: &str) -> String {
    let bare = value.trim_matches('"');
    let mut out = problem.replace(value, with);
    if !bare.is_empty() {
        out = out.replace(bare, with);
    }
    crate::mask::urls_in(&out)
}

fn invalid_message(key: &str, value: Option<&str>, problem: &str, origin: &Origin) -> String {
    let value = value.map(|v| format!(" = {v}")).unwrap_or_default();
    format!("invalid configuration `{key}`{value} (from {origin}): {problem}")
}

/// The merged layers before deserialization.
struct Layers {
    root: Table,
    origins: BTreeMap<String, Origin>,
}

impl Layers {
    fn defaults() -> Self {
        let root = match Value::try_from(Settings::default()) {
            Ok(Value::Table(t)) => t,
            // The defaults are plain data; failing to express them as TOML is a bug here.
            other => unreachable!("default settings are not a TOML table: {other:?}"),
        };
        Self {
            root,
            origins: BTreeMap::new(),
        }
    }

    /// The origin of `key` or of its nearest ancestor that has one.
    fn origin_of(&self, key: &str) -> Origin {
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return o.clone();
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return Origin::Default,
            }
        }
    }

    fn merge_file(&mut self, path: &Path, table: Table) {
        let origin = Origin::File(path.to_owned());
        merge(&mut self.root, table, "", &origin, &mut self.origins);
    }

    fn set(&mut self, path: &[String], value: Value, origin: Origin) {
        let key = path.join(".");
        let mut node = &mut self.root;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            if last {
                node.insert(seg.clone(), value);
                break;
            }
            let entry = node
                .entry(seg.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            // An environment variable may go inside an array of tables by index
            // (ALPHA_PANDA__STRATEGIES__0__ENABLED=false).
            if let (Value::Array(items), Ok(idx)) = (&mut *entry, path[i + 1].parse::<usize>())
                && idx < items.len()
            {
                let rest = &path[i + 2..];
                if rest.is_empty() {
                    items[idx] = value;
                } else if let Value::Table(t) = &mut items[idx] {
                    let mut sub = Layers {
                        root: std::mem::take(t),
                        origins: BTreeMap::new(),
                    };
                    sub.set(rest, value, origin.clone());
                    *t = sub.root;
                }
                self.origins.insert(key, origin);
                return;
            }
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            node = match entry {
                Value::Table(t) => t,
                // Truly unreachable: a non-table entry was replaced by a table just above.
                _ => unreachable!("just made a table"),
            };
        }
        self.origins.insert(key, origin);
    }
}

fn merge(
    into: &mut Table,
    from: Table,
    prefix: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    for (k, v) in from {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (into.get_mut(&k), v) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => {
                merge(existing, incoming, &key, origin, origins);
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
        origins.insert(key, origin.clone());
    }
}

/// Parses an environment value: a TOML literal if it is one (`5`, `true`, `["a"]`,
/// `"quoted"`), otherwise the raw text as a string (`127.0.0.1:9092`, `paper,zerodha`).
fn env_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

/// Loads the settings: defaults, then `file` if given, then the environment.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut layers = Layers::defaults();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        let table: Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        layers.merge_file(path, table);
    }
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) || k == ACTIVE_BROKERS_ENV)
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = if name == ACTIVE_BROKERS_ENV {
            vec!["active_brokers".to_owned()]
        } else {
            name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect()
        };
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                path.join("."),
                Some(raw),
                "empty key segment: use ALPHA_PANDA__SECTION__KEY".to_owned(),
                Origin::Env(name),
            ));
        }
        layers.set(&path, env_value(&raw), Origin::Env(name));
    }

    let root = Value::Table(layers.root.clone());
    let settings: Settings = serde_path_to_error::deserialize(root).map_err(|e| {
        let path = e.path().to_string();
        let problem = strip_location(&e.into_inner().to_string());
        let key = refine_key(&path, &problem);
        let value = lookup(&layers.root, &key).map(|v| v.to_string());
        ConfigError::invalid(key.clone(), value, problem, layers.origin_of(&key))
    })?;
    validate::check(&settings).map_err(|(key, value, problem)| {
        let origin = layers.origin_of(&key);
        ConfigError::invalid(key, value, problem, origin)
    })?;
    Ok(settings)
}

/// Checks what only trading needs (`validate::trading`): the daemon calls it before it
/// starts; administrative commands do not, so `topics ensure` with zerodha active needs no
/// Kite credentials.
pub fn check_trading(settings: &Settings) -> Result<(), ConfigError> {
    // The only such check today is for a key left at its default (absent).
    validate::trading(settings)
        .map_err(|(key, value, problem)| ConfigError::invalid(key, value, problem, Origin::Default))
}

/// Loads from the process environment.
pub fn load_from_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load(file, std::env::vars())
}

/// toml appends "in `path`" to its messages; the error already leads with the key.
fn strip_location(problem: &str) -> String {
    match problem.find("\nin `") {
        Some(i) => problem[..i].trim_end().to_owned(),
        None => problem.trim_end().to_owned(),
    }
}

/// serde reports an unknown or missing key at its parent's path and names it only in the
/// message; this puts the name into the key.
fn refine_key(path: &str, problem: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| problem.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match named {
        Some(name) if !base.ends_with(name) => {
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            }
        }
        _ => base.to_owned(),
    }
}

/// The value at a dotted key (`a.b[2].c`), if there is one.
fn lookup<'a>(root: &'a Table, key: &str) -> Option<&'a Value> {
    let mut node: Option<&Value> = None;
    for seg in key.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let table = match node {
            None => root,
            Some(Value::Table(t)) => t,
            Some(_) => return None,
        };
        let mut v = table.get(name)?;
        if let Some(i) = index {
            v = v.as_array()?.get(i)?;
        }
        node = Some(v);
    }
    node
}
