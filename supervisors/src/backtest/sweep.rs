//! Parameter sweeps: `--sweep PATH=V1,V2,…` (repeatable) runs the backtest once per
//! combination of the values (the cartesian product), in parallel on every core. The tick
//! file is parsed once; every run drives its own event loop over the shared rows.
//!
//! `PATH` is a settings key with dots, array entries by index: `strategies.0.params.fast`.
//! Each value is read as a TOML value (`5`, `"0.01"`, `true`), or else as a string. A
//! combination whose settings do not validate stops the sweep with the key and the reason.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use alpha_panda_config::Settings;
use alpha_panda_core::Decimal;
use serde::Serialize;
use toml::Value;

use super::input::{BadRows, TickReader, TickRow};
use super::{StrategySummary, run_loop};

/// One `--sweep` argument: a key and the values it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub path: String,
    pub values: Vec<Value>,
}

/// Why a sweep cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SweepError {
    #[error("--sweep {0:?}: expected PATH=V1,V2,… (e.g. strategies.0.params.fast=5,10,20)")]
    Syntax(String),
    #[error("--sweep {path}={value}: {problem}")]
    Setting {
        path: String,
        value: String,
        problem: String,
    },
}

fn value_of(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

impl std::str::FromStr for Axis {
    type Err = SweepError;

    fn from_str(s: &str) -> Result<Self, SweepError> {
        let (path, values) = s
            .split_once('=')
            .ok_or_else(|| SweepError::Syntax(s.to_owned()))?;
        let values: Vec<Value> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(value_of)
            .collect();
        if path.trim().is_empty() || values.is_empty() {
            return Err(SweepError::Syntax(s.to_owned()));
        }
        Ok(Self {
            path: path.trim().to_owned(),
            values,
        })
    }
}

/// `settings` with `path` set to `value`, validated as a loaded file would be.
pub fn apply(settings: &Settings, path: &str, value: &Value) -> Result<Settings, SweepError> {
    let fail = |problem: String| SweepError::Setting {
        path: path.to_owned(),
        value: value.to_string(),
        problem,
    };
    let mut root = Value::try_from(settings).map_err(|e| fail(e.to_string()))?;
    let mut at = &mut root;
    for segment in path.split('.') {
        at = match at {
            Value::Table(t) => t
                .entry(segment.to_owned())
                .or_insert(Value::Table(toml::Table::new())),
            Value::Array(a) => {
                let i: usize = segment
                    .parse()
                    .map_err(|_| fail(format!("{segment:?} is not an index of a list")))?;
                let len = a.len();
                a.get_mut(i)
                    .ok_or_else(|| fail(format!("index {i} is past the list's {len} entries")))?
            }
            _ => return Err(fail(format!("{segment:?} is inside a value, not a table"))),
        };
    }
    *at = value.clone();
    let changed: Settings = root
        .try_into()
        .map_err(|e: toml::de::Error| fail(e.message().to_owned()))?;
    alpha_panda_config::validate_settings(&changed)
        .map_err(|(key, _, problem)| fail(format!("{key}: {problem}")))?;
    Ok(changed)
}

/// One combination: the value of each axis, in the order the axes were given.
pub type Combination = Vec<(String, Value)>;

/// Every combination of the axes' values (the first axis varies slowest).
pub fn combinations(axes: &[Axis]) -> Vec<Combination> {
    let mut out: Vec<Combination> = vec![Vec::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((axis.path.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    out
}

/// One run of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRun {
    /// Position of the combination (see [`combinations`]).
    pub run: usize,
    pub params: std::collections::BTreeMap<String, String>,
    pub total_pnl: Decimal,
    pub trades: usize,
    pub summaries: Vec<StrategySummary>,
}

/// Reads the whole tick file into memory (once, for every run of a sweep).
pub fn read_all(path: &Path, bad_rows: BadRows) -> anyhow::Result<(Vec<TickRow>, u64)> {
    let mut reader = TickReader::open(path, bad_rows)?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next() {
        rows.push(row?);
    }
    Ok((rows, reader.skipped()))
}

/// Runs every combination over `rows` on `threads` threads; the runs sorted best first by
/// total PnL (then by position).
pub fn run(
    settings: &Settings,
    axes: &[Axis],
    rows: &[TickRow],
    threads: usize,
) -> anyhow::Result<Vec<SweepRun>> {
    let combos = combinations(axes);
    let mut variants = Vec::with_capacity(combos.len());
    for combo in &combos {
        let mut s = settings.clone();
        for (path, value) in combo {
            s = apply(&s, path, value)?;
        }
        variants.push(s);
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<anyhow::Result<SweepRun>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, variants.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(s) = variants.get(i) else { break };
                    let result = run_loop(s, rows.iter().copied()).map(|r| SweepRun {
                        run: i,
                        params: combos[i]
                            .iter()
                            .map(|(p, v)| (p.clone(), v.to_string()))
                            .collect(),
                        total_pnl: r.summaries.iter().map(|s| s.total_pnl).sum(),
                        trades: r.fills.len(),
                        summaries: r.summaries,
                    });
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(result);
                }
            });
        }
    });
    let mut runs = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    runs.sort_by(|a, b| b.total_pnl.cmp(&a.total_pnl).then(a.run.cmp(&b.run)));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_and_multiply_out() {
        let a: Axis = "strategies.0.params.fast=5,10,20".parse().unwrap();
        let b: Axis = "strategies.0.params.slow=30,50".parse().unwrap();
        assert_eq!(
            a.values,
            vec![Value::Integer(5), Value::Integer(10), Value::Integer(20)]
        );
        let c = combinations(&[a, b]);
        assert_eq!(c.len(), 6);
        assert_eq!(c[1][1].1, Value::Integer(50));
        assert!(matches!("fast".parse::<Axis>(), Err(SweepError::Syntax(_))));
    }

    #[test]
    fn a_sweep_value_changes_the_setting_or_is_refused_with_the_reason() {
        let s = Settings::default();
        let changed = apply(&s, "strategies.0.params.lookback", &Value::Integer(7)).unwrap();
        assert_eq!(
            changed.strategies[0].params.get("lookback"),
            Some(&Value::Integer(7))
        );
        let e = apply(&s, "strategies.9.params.fast", &Value::Integer(7)).unwrap_err();
        assert!(e.to_string().contains("index 9"), "{e}");
        let e = apply(&s, "strategies.0.params.lookback", &Value::Integer(0)).unwrap_err();
        assert!(e.to_string().contains("lookback"), "{e}");
    }
}
