//! Parameter sweeps: `--sweep PATH=V1,V2,…` (repeatable) runs the backtest once per
//! combination of the values (the cartesian product), in parallel on every core. The tick
//! file is parsed once, on a thread of its own while the first runs already start on its
//! first rows; every run drives its own event loop over the shared rows.
//!
//! `PATH` is a settings key with dots, array entries by index: `strategies.0.params.fast`.
//! Each value is read as a TOML value (`5`, `"0.01"`, `true`), or else as a string. A
//! combination whose settings do not validate stops the sweep with the key and the reason.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use alpha_panda_config::Settings;
use alpha_panda_core::Decimal;
use serde::Serialize;
use toml::Value;

use super::input::{BadRows, TickFileError, TickReader, TickRow};
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

/// Reads the whole tick file into memory.
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
    run_each(settings, axes, threads, || rows.iter().copied())
}

/// Runs every combination, each over the rows `rows()` gives, on `threads` threads.
fn run_each<I: Iterator<Item = TickRow>>(
    settings: &Settings,
    axes: &[Axis],
    threads: usize,
    rows: impl Fn() -> I + Sync,
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
                    let result = run_loop(s, rows()).map(|r| SweepRun {
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

/// Rows per chunk of a file read while the sweep runs.
const CHUNK_ROWS: usize = if cfg!(test) { 1000 } else { 65_536 };

/// A tick file's rows as the runs of a sweep share them: chunks appended by the thread
/// that reads the file while the first runs already go through them.
#[derive(Default)]
struct SharedRows {
    state: Mutex<Chunks>,
    grown: Condvar,
}

#[derive(Default)]
struct Chunks {
    chunks: Vec<Arc<Vec<TickRow>>>,
    rows: u64,
    /// The reader is done (at the end of the file, or stopped by a bad row).
    done: bool,
}

impl SharedRows {
    fn lock(&self) -> std::sync::MutexGuard<'_, Chunks> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, chunk: Vec<TickRow>) {
        let mut state = self.lock();
        state.rows += chunk.len() as u64;
        state.chunks.push(Arc::new(chunk));
        self.grown.notify_all();
    }

    fn close(&self) {
        self.lock().done = true;
        self.grown.notify_all();
    }

    /// Chunk `i`, once read; `None` past the last.
    fn chunk(&self, i: usize) -> Option<Arc<Vec<TickRow>>> {
        let mut state = self.lock();
        loop {
            if let Some(c) = state.chunks.get(i) {
                return Some(c.clone());
            }
            if state.done {
                return None;
            }
            state = self.grown.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Every row, in file order, waiting for the reader where it is behind.
    fn iter(&self) -> impl Iterator<Item = TickRow> + '_ {
        (0..)
            .map_while(|i| self.chunk(i))
            .flat_map(|c| (0..c.len()).map(move |j| c[j]))
    }
}

/// Closes the shared rows when the reading thread ends, however it ends (a panic
/// included), so no run waits for rows that will not come.
struct CloseOnDrop<'a>(&'a SharedRows);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What a sweep over a file did: its runs (as [`run`] sorts them), the rows read and the
/// bad rows skipped.
pub struct FileSweep {
    pub runs: Vec<SweepRun>,
    pub rows: u64,
    pub skipped: u64,
}

/// Runs every combination over the tick file at `path`, on `threads` threads, while one
/// more thread reads the file: the first runs start with its first rows rather than after
/// its last, and the file is parsed once for all runs. A bad row (with [`BadRows::Stop`])
/// fails the sweep with the row's file, line and column.
pub fn run_file(
    settings: &Settings,
    axes: &[Axis],
    path: &Path,
    bad_rows: BadRows,
    threads: usize,
) -> anyhow::Result<FileSweep> {
    let mut reader = TickReader::open(path, bad_rows)?;
    let shared = SharedRows::default();
    std::thread::scope(|scope| {
        let feeder = scope.spawn(|| -> Result<u64, TickFileError> {
            let _close = CloseOnDrop(&shared);
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            while let Some(row) = reader.next() {
                chunk.push(row?);
                if chunk.len() == CHUNK_ROWS {
                    shared.push(std::mem::replace(
                        &mut chunk,
                        Vec::with_capacity(CHUNK_ROWS),
                    ));
                }
            }
            shared.push(chunk);
            Ok(reader.skipped())
        });
        let runs = run_each(settings, axes, threads, || shared.iter());
        let skipped = feeder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(FileSweep {
            runs: runs?,
            rows: shared.lock().rows,
            skipped,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tick file of `n` rows of two instruments (a seeded walk), and a bad row at `bad`.
    fn tick_file(name: &str, n: usize, bad: Option<usize>) -> std::path::PathBuf {
        use std::fmt::Write as _;
        let mut text = String::from("instrument_token,timestamp,last_price\n");
        let (mut prices, mut seed) = ([250_000i64, 380_000], 11u64);
        for i in 0..n {
            if bad == Some(i) {
                text += "738561,2026-01-05T03:50:00Z,not-a-price\n";
                continue;
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = i % 2;
            prices[k] = (prices[k] + (seed >> 33) as i64 % 21 - 10).max(100);
            let ts =
                alpha_panda_core::Timestamp::from_unix_millis(1_767_585_000_000 + 250 * i as i64)
                    .unwrap();
            let _ = writeln!(
                text,
                "{},{ts},{}.{:02}",
                [738561, 2953217][k],
                prices[k] / 100,
                prices[k] % 100
            );
        }
        let path = std::env::temp_dir().join(format!("ap-sweep-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ema_settings() -> Settings {
        let mut s = Settings::default();
        s.strategies.truncate(1);
        s.strategies[0].kind = alpha_panda_config::StrategyKind::EmaCrossover;
        s.strategies[0].params = toml::Table::new();
        s.strategies[0].instruments = vec![
            alpha_panda_core::InstrumentToken(738561),
            alpha_panda_core::InstrumentToken(2953217),
        ];
        s
    }

    #[test]
    fn runs_over_a_file_read_while_they_run_equal_runs_over_the_rows_read_first() {
        // 5 500 rows: six chunks, the last one short.
        let path = tick_file("same", 5_500, None);
        let axes: Vec<Axis> = vec![
            "strategies.0.params.fast=3,5".parse().unwrap(),
            "strategies.0.params.slow=8,13".parse().unwrap(),
        ];
        let s = ema_settings();
        let (rows, _) = read_all(&path, BadRows::Stop).unwrap();
        let first = run(&s, &axes, &rows, 2).unwrap();
        let streamed = run_file(&s, &axes, &path, BadRows::Stop, 2).unwrap();
        assert_eq!(streamed.rows, 5_500);
        assert_eq!(streamed.skipped, 0);
        let key = |r: &SweepRun| (r.run, r.trades, r.total_pnl, r.params.clone());
        assert!(first.iter().any(|r| r.trades > 0), "the walk trades");
        assert_eq!(
            streamed.runs.iter().map(key).collect::<Vec<_>>(),
            first.iter().map(key).collect::<Vec<_>>()
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_bad_row_stops_a_sweep_with_its_line_or_is_skipped_and_counted() {
        let path = tick_file("bad", 4_200, Some(3_100));
        let axes: Vec<Axis> = vec!["strategies.0.params.fast=3,5".parse().unwrap()];
        let s = ema_settings();
        let e = run_file(&s, &axes, &path, BadRows::Stop, 2)
            .err()
            .expect("a bad row stops the sweep")
            .to_string();
        // Line 1 is the header: row 3 100 (0-based) is line 3 102.
        assert!(e.contains("line 3102, column 3 (last_price)"), "{e}");
        let skipped = run_file(&s, &axes, &path, BadRows::Skip, 2).unwrap();
        assert_eq!((skipped.rows, skipped.skipped), (4_199, 1));
        let _ = std::fs::remove_file(path);
    }

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
