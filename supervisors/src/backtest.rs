//! `alpha-panda backtest --ticks FILE [--config F] [--out DIR]`: the same stages on the
//! in-process transport, fed a tick file as fast as the machine allows.
//!
//! Writes `fills.jsonl` (one `order_filled` payload per line, in event-time order) and
//! `summary.json`, and prints a summary per (broker, strategy): trades, PnL, fees, win rate,
//! max drawdown and a per-trade Sharpe ratio.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alpha_panda_actors::delivery::EventProducer;
use alpha_panda_actors::delivery::inprocess::{InProcessBus, StoredRecord};
use alpha_panda_actors::feed::load_ticks;
use alpha_panda_actors::portfolio::Book;
use alpha_panda_actors::stages::Counters;
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_config::{Feed, Settings};
use alpha_panda_core::events::OrderFilled;
use alpha_panda_core::{
    Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, StrategyId, ids,
};
use alpha_panda_topics::{BrokerTopic, TopicName, keys, topics_for};
use anyhow::Context;
use serde::Serialize;
use uuid::Uuid;

use crate::pipeline::{Assembly, Transport};

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
    fills: &[OrderFilled],
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
}

pub fn run(
    mut settings: Settings,
    ticks_file: &Path,
    out: &Path,
) -> anyhow::Result<BacktestReport> {
    // The same stages, in-process, with no outside services and no live feed.
    settings.kafka.bootstrap_servers = None;
    settings.redis.url = None;
    settings.database.url = None;
    settings.feed = Feed::None;
    let settings = Arc::new(settings);
    let ticks = load_ticks(ticks_file)?;
    let report = actix_rt::System::new().block_on(run_async(settings.clone(), ticks))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut f = std::fs::File::create(out.join("fills.jsonl"))?;
    for (broker, fill) in &report.fills {
        let mut v = serde_json::to_value(fill)?;
        v["broker"] = serde_json::Value::String(broker.clone());
        writeln!(f, "{}", serde_json::to_string(&v)?)?;
    }
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&report.summaries)? + "\n",
    )?;
    Ok(report)
}

async fn run_async(
    settings: Arc<Settings>,
    ticks: Vec<alpha_panda_core::events::MarketTick>,
) -> anyhow::Result<BacktestReport> {
    let bus = InProcessBus::new();
    bus.create_topics(&topics_for(&settings.active_brokers));
    let a = Assembly::new(
        settings.clone(),
        Transport::InProcess(bus.clone()),
        EventProducer::InProcess(bus.clone()),
        Store::Memory(MemoryStore::default()),
    );
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let members = a.start_stages(&counters)?;
    let mut last_prices = HashMap::new();
    let ticks_topic = TopicName::market_ticks().to_string();
    for (i, tick) in ticks.iter().enumerate() {
        last_prices.insert(tick.instrument_token, tick.last_price.get());
        // Replayed ticks get ids derived from their position in the file, so a backtest of
        // the same file produces the same event ids every time.
        let id = ids::child_id(Uuid::nil(), "backtest:tick", i as u32);
        let mut env = EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            keys::tick(tick.instrument_token),
            tick.timestamp,
            EventData::MarketTick(tick.clone()),
        );
        (env.id, env.correlation_id, env.trace_id) = (id, id, id);
        bus.append(
            &ticks_topic,
            StoredRecord {
                key: Some(env.key.clone().into_bytes()),
                value: Some(env.encode()),
                headers: Vec::new(),
            },
        )?;
    }
    // Done when every stage has committed everything on its topic, twice in a row (a stage
    // that just finished may have produced more for the next one).
    let consumed = a.consumed();
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let idle = consumed.iter().all(|(group, topic)| {
            bus.end_offsets(topic)
                .iter()
                .enumerate()
                .all(|(p, end)| *end == 0 || bus.committed(group, topic, p as i32) == Some(*end))
        });
        quiet = if idle { quiet + 1 } else { 0 };
    }
    let elapsed = started.elapsed();
    for m in members {
        m.shutdown().await;
    }
    let mut fills = Vec::new();
    for broker in &settings.active_brokers {
        for (_, _, rec) in bus.records(&TopicName::broker(broker, BrokerTopic::OrdersFilled)) {
            let env = EventEnvelope::decode(rec.value.as_deref().unwrap_or_default())?;
            if let EventData::OrderFilled(f) = env.data {
                fills.push((broker.to_string(), f));
            }
        }
    }
    fills.sort_by(|a, b| {
        (a.1.timestamp, &a.0, &a.1.order_id).cmp(&(b.1.timestamp, &b.0, &b.1.order_id))
    });
    let mut by_strategy: BTreeMap<(String, StrategyId), Vec<OrderFilled>> = BTreeMap::new();
    for (b, f) in &fills {
        by_strategy
            .entry((b.clone(), f.strategy_id.clone()))
            .or_default()
            .push(f.clone());
    }
    let summaries = by_strategy
        .iter()
        .map(|((b, s), fs)| {
            let cash = alpha_panda_core::BrokerName::new(b.clone())
                .ok()
                .and_then(|b| settings.brokers.get(&b))
                .map(|d| d.fill_model.starting_cash)
                .unwrap_or_default();
            summarize(b, s, fs, &last_prices, cash)
        })
        .collect();
    Ok(BacktestReport {
        ticks: ticks.len(),
        elapsed,
        fills,
        summaries,
    })
}
