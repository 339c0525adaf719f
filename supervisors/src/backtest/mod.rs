//! `alpha-panda backtest --ticks FILE [--config F] [--out DIR] [--skip-bad-rows]
//! [--sweep PATH=V1,V2,…]…`: the engine's stage logic driven by one event-time loop
//! (`event_loop`), the tick file streamed in (`input`).
//!
//! Writes `fills.jsonl` (one `order_filled` payload per line with its broker, in event-time
//! order), `summary.json` (per broker and strategy: trades, PnL, fees, win rate, max
//! drawdown, per-trade Sharpe) and `report.html` (`report`). Deterministic: the same file and
//! settings give byte-identical `fills.jsonl` and `summary.json`. A sweep (`sweep`) runs the
//! cartesian product of the given values in parallel over one parsed copy of the file.

pub mod event_loop;
pub mod inprocess;
pub mod input;
pub mod report;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use alpha_panda_config::Settings;
use alpha_panda_core::events::OrderFilled;
use alpha_panda_core::{Decimal, InstrumentToken, StrategyId};
use alpha_panda_engine::portfolio::Book;
use anyhow::Context;
use serde::Serialize;

use event_loop::{EventLoop, LoopOutput};
use input::{BadRows, TickReader};

/// Summary of one strategy on one broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategySummary {
    pub broker: String,
    pub strategy_id: String,
    pub trades: usize,
    pub realized_pnl: Decimal,
    pub unrealized_pnl: Decimal,
    pub total_pnl: Decimal,
    pub fees: Decimal,
    /// Share of position-reducing fills that realized a profit (0 when none closed).
    pub win_rate: Decimal,
    /// Largest fall of total PnL from a previous peak, marked after each fill.
    pub max_drawdown: Decimal,
    /// Mean / standard deviation of the change in total PnL from fill to fill (not annualized).
    pub sharpe: Decimal,
}

/// The fills of a backtest, replayed through the portfolio maths.
pub fn summarize(
    broker: &str,
    strategy: &StrategyId,
    fills: &[&OrderFilled],
    last_prices: &HashMap<InstrumentToken, Decimal>,
    starting_cash: Decimal,
) -> StrategySummary {
    let mut book = Book::new(starting_cash);
    let (mut peak, mut drawdown) = (Decimal::ZERO, Decimal::ZERO);
    let (mut wins, mut closes) = (0u32, 0u32);
    let mut changes = Vec::new();
    let mut last_total = Decimal::ZERO;
    for f in fills {
        let realized_before: Decimal = book.positions.values().map(|p| p.realized).sum();
        book.apply_fill(
            f.instrument_token,
            f.side,
            f.quantity.get(),
            f.fill_price.get(),
            f.fees,
        );
        let realized_after: Decimal = book.positions.values().map(|p| p.realized).sum();
        if realized_after != realized_before {
            closes += 1;
            if realized_after - f.fees > realized_before {
                wins += 1;
            }
        }
        let total = book.total_pnl();
        changes.push(total - last_total);
        last_total = total;
        peak = peak.max(total);
        drawdown = drawdown.max(peak - total);
    }
    for (token, price) in last_prices {
        book.mark(*token, *price);
    }
    let n = Decimal::from(changes.len().max(1));
    let mean = changes.iter().copied().sum::<Decimal>() / n;
    let var = changes
        .iter()
        .map(|c| (*c - mean) * (*c - mean))
        .sum::<Decimal>()
        / n;
    let sd = rust_decimal::MathematicalOps::sqrt(&var).unwrap_or_default();
    StrategySummary {
        broker: broker.to_owned(),
        strategy_id: strategy.to_string(),
        trades: fills.len(),
        realized_pnl: book.realized_pnl().round_dp(2),
        unrealized_pnl: book.unrealized_pnl().round_dp(2),
        total_pnl: book.total_pnl().round_dp(2),
        fees: book.fees.round_dp(2),
        win_rate: if closes == 0 {
            Decimal::ZERO
        } else {
            (Decimal::from(wins) / Decimal::from(closes)).round_dp(4)
        },
        max_drawdown: drawdown.round_dp(2),
        sharpe: if sd.is_zero() {
            Decimal::ZERO
        } else {
            (mean / sd).round_dp(4)
        },
    }
}

pub struct BacktestReport {
    pub ticks: usize,
    pub elapsed: Duration,
    pub fills: Vec<(String, OrderFilled)>,
    pub summaries: Vec<StrategySummary>,
    /// Rows of the tick file skipped as bad (`--skip-bad-rows`).
    pub skipped_rows: u64,
}

/// Fills in the order `fills.jsonl` lists them, and the summaries of `settings`' strategies.
pub(crate) struct Outcome;

impl Outcome {
    pub(crate) fn report(
        settings: &Settings,
        fills: Vec<(String, OrderFilled)>,
        last_prices: &HashMap<InstrumentToken, Decimal>,
        ticks: usize,
        elapsed: Duration,
    ) -> BacktestReport {
        let fills = Self::sorted(fills);
        let summaries = Self::summaries(settings, &fills, last_prices);
        BacktestReport {
            ticks,
            elapsed,
            fills,
            summaries,
            skipped_rows: 0,
        }
    }

    /// The fills in the order `fills.jsonl` lists them.
    fn sorted(mut fills: Vec<(String, OrderFilled)>) -> Vec<(String, OrderFilled)> {
        fills.sort_by(|a, b| {
            (a.1.timestamp, &a.0, &a.1.order_id).cmp(&(b.1.timestamp, &b.0, &b.1.order_id))
        });
        fills
    }

    /// The summary of each (broker, strategy) with fills, in that order.
    fn summaries(
        settings: &Settings,
        fills: &[(String, OrderFilled)],
        last_prices: &HashMap<InstrumentToken, Decimal>,
    ) -> Vec<StrategySummary> {
        by_strategy(fills)
            .iter()
            .map(|((b, s), fs)| summarize(b, s, fs, last_prices, starting_cash(settings, b)))
            .collect()
    }
}

/// The fills of each (broker, strategy), in order.
pub fn by_strategy(
    fills: &[(String, OrderFilled)],
) -> BTreeMap<(&str, &StrategyId), Vec<&OrderFilled>> {
    let mut by: BTreeMap<(&str, &StrategyId), Vec<&OrderFilled>> = BTreeMap::new();
    for (b, f) in fills {
        by.entry((b.as_str(), &f.strategy_id)).or_default().push(f);
    }
    by
}

/// A broker's `fill_model.starting_cash` (0 for a broker that is not configured).
pub fn starting_cash(settings: &Settings, broker: &str) -> Decimal {
    alpha_panda_core::BrokerName::new(broker.to_owned())
        .ok()
        .and_then(|b| settings.brokers.get(&b))
        .map(|d| d.fill_model.starting_cash)
        .unwrap_or_default()
}

/// What `run` is asked to do besides the settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub bad_rows: BadRows,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bad_rows: BadRows::Stop,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// Drives the event-time loop over a stream of rows; returns its report.
pub fn run_loop(
    settings: &Settings,
    ticks: impl IntoIterator<Item = input::TickRow>,
) -> anyhow::Result<BacktestReport> {
    let started = Instant::now();
    let mut engine = EventLoop::new(settings).map_err(anyhow::Error::msg)?;
    for row in ticks {
        engine.on_row(&row);
    }
    Ok(finish(settings, engine.finish(), started))
}

fn finish(settings: &Settings, out: LoopOutput, started: Instant) -> BacktestReport {
    let LoopOutput {
        ticks,
        fills,
        last_prices,
        ..
    } = out;
    Outcome::report(
        settings,
        fills,
        &last_prices,
        ticks as usize,
        started.elapsed(),
    )
}

/// Streams `ticks_file` through the loop and writes `fills.jsonl`, `summary.json` and
/// `report.html` into `out`.
pub fn run(
    settings: Settings,
    ticks_file: &Path,
    out: &Path,
    options: &Options,
) -> anyhow::Result<BacktestReport> {
    let started = Instant::now();
    let reader = TickReader::open(ticks_file, options.bad_rows)?;
    let mut engine = EventLoop::new(&settings).map_err(anyhow::Error::msg)?;
    let mut progress = options.progress.then(Progress::new);
    let mut n: u64 = 0;
    let reader = reader.read_ahead(|rows, share| {
        for row in rows {
            engine.on_row(row);
        }
        let before = n;
        n += rows.len() as u64;
        if n / 65_536 != before / 65_536
            && let Some(p) = &mut progress
        {
            p.draw(share, n);
        }
    })?;
    if let Some(p) = &mut progress {
        p.done(n);
    }
    if let Some(first) = reader.first_skipped() {
        eprintln!(
            "alpha-panda: skipped {} bad rows; the first: {first}",
            reader.skipped()
        );
    }
    let LoopOutput {
        ticks,
        fills,
        last_prices,
        ..
    } = engine.finish();
    let mut report = BacktestReport {
        ticks: ticks as usize,
        elapsed: Duration::ZERO,
        fills: Outcome::sorted(fills),
        summaries: Vec::new(),
        skipped_rows: reader.skipped(),
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // `fills.jsonl` is written on a thread of its own while this one sums the fills up and
    // writes the summary and the page (the parsing thread is done by now).
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let fills = &report.fills;
        let writer = scope.spawn(|| write_fills(fills, out));
        report.summaries = Outcome::summaries(&settings, fills, &last_prices);
        report.elapsed = started.elapsed();
        let written = write_summary_and_page(&settings, &report, out);
        writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        written
    })?;
    Ok(report)
}

/// Writes `fills.jsonl`, `summary.json` and `report.html` of a report into `out`.
pub fn write_outputs(
    settings: &Settings,
    report: &BacktestReport,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_fills(&report.fills, out)?;
    write_summary_and_page(settings, report, out)
}

/// Writes `fills.jsonl` into `out`.
fn write_fills(fills: &[(String, OrderFilled)], out: &Path) -> anyhow::Result<()> {
    let path = out.join("fills.jsonl");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut f = std::io::BufWriter::with_capacity(1 << 16, file);
    for (broker, fill) in fills {
        serde_json::to_writer(&mut f, &FillLine::new(broker, fill))
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(b"\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    f.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `summary.json` and `report.html` into `out`.
fn write_summary_and_page(
    settings: &Settings,
    report: &BacktestReport,
    out: &Path,
) -> anyhow::Result<()> {
    let path = out.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report.summaries)? + "\n",
    )
    .with_context(|| format!("writing {}", path.display()))?;
    let path = out.join("report.html");
    std::fs::write(&path, report::html(settings, report))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One line of `fills.jsonl`: the fill's fields in the order of their names (as a JSON
/// object of them is written), its `broker` the broker the backtest ran it on. Written
/// straight from the fill rather than through a `serde_json::Value` (a tree of strings per
/// fill); a test holds the two to the same bytes.
#[derive(Serialize)]
struct FillLine<'a> {
    account: &'a alpha_panda_core::AccountId,
    broker: &'a str,
    execution_mode: &'a alpha_panda_core::ExecutionMode,
    fees: &'a Decimal,
    fill_price: &'a alpha_panda_core::Price,
    instrument_token: &'a InstrumentToken,
    order_id: &'a alpha_panda_core::OrderId,
    quantity: &'a alpha_panda_core::Quantity,
    side: &'a alpha_panda_core::Side,
    strategy_id: &'a StrategyId,
    timestamp: &'a alpha_panda_core::Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    trade_id: &'a Option<String>,
}

impl<'a> FillLine<'a> {
    fn new(broker: &'a str, f: &'a OrderFilled) -> Self {
        // Every field, so that a new one is a compile error here rather than a line short.
        let OrderFilled {
            order_id,
            instrument_token,
            side,
            quantity,
            fill_price,
            fees,
            strategy_id,
            account,
            execution_mode,
            broker: _,
            timestamp,
            trade_id,
        } = f;
        Self {
            account,
            broker,
            execution_mode,
            fees,
            fill_price,
            instrument_token,
            order_id,
            quantity,
            side,
            strategy_id,
            timestamp,
            trade_id,
        }
    }
}

/// A one-line progress bar on stderr.
struct Progress {
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    fn draw(&mut self, share: f64, ticks: u64) {
        let width = 30;
        let filled = ((share.clamp(0.0, 1.0)) * width as f64) as usize;
        let rate = ticks as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r[{}{}] {:>3.0}% {ticks} ticks, {rate:.0} ticks/s",
            "#".repeat(filled),
            " ".repeat(width - filled),
            share * 100.0
        );
    }

    fn done(&mut self, ticks: u64) {
        self.draw(1.0, ticks);
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alpha_panda_core::{
        AccountId, BrokerName, ExecutionMode, OrderId, Price, Quantity, Side, Timestamp,
    };

    /// A `fills.jsonl` line as it was first written: the fill as a JSON object (its keys in
    /// name order), `broker` set to the backtest's broker.
    fn through_a_value(broker: &str, fill: &OrderFilled) -> String {
        let mut v = serde_json::to_value(fill).unwrap();
        v["broker"] = serde_json::Value::String(broker.to_owned());
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn a_fill_line_is_written_byte_for_byte_as_through_a_json_value() {
        let fill = |trade_id: Option<&str>, fees: &str, price: &str| OrderFilled {
            order_id: OrderId::new("paper-000000000000745cb6bd6b2d7915f911".to_owned()).unwrap(),
            instrument_token: InstrumentToken(738561),
            side: Side::Sell,
            quantity: Quantity::new(10).unwrap(),
            fill_price: price.parse::<Price>().unwrap(),
            fees: fees.parse().unwrap(),
            strategy_id: StrategyId::new("ema_10_30").unwrap(),
            account: AccountId::new("paper_main".to_owned()).unwrap(),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: Timestamp::from_unix_millis(1_767_585_022_500).unwrap(),
            trade_id: trade_id.map(str::to_owned),
        };
        for (broker, f) in [
            ("paper", fill(Some("paper-1-1"), "0.00", "2499.93")),
            ("paper_b", fill(None, "12.3456", "0.05")),
            ("paper", fill(Some("a \"quoted\" \\ id"), "-0", "100")),
        ] {
            assert_eq!(
                serde_json::to_string(&FillLine::new(broker, &f)).unwrap(),
                through_a_value(broker, &f)
            );
        }
    }
}
