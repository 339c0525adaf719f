//! The backtest's event-time loop: the second driver of the engine's logic. Each tick goes,
//! in file order, through the paper traders (resting orders it reaches), the strategies, and
//! for each signal the broker's risk book and paper trader; fills and failures go back to
//! the risk book at once. No encoding, no transport, no dedup store, no actors.
//!
//! The results equal the daemon's on the same ticks: the engine's results depend on the
//! events and their event times, not on how a transport interleaves them (see
//! docs/architecture.md, "Determinism and ordering"), and every id is derived as the daemon
//! derives it, from the tick's id `child_id(nil, "backtest:tick", n)` for the file's n-th
//! tick. A tick's envelope is never made: its children need only its ids
//! ([`Lineage`]). Each value moves from stage to stage (the signal into the risk book's
//! verdict, the verdict into the trader) rather than being copied.

use std::collections::HashMap;

use alpha_panda_config::Settings;
use alpha_panda_core::events::{MarketTick, OrderFilled};
use alpha_panda_core::{
    BrokerName, Decimal, EventData, InstrumentToken, Lineage, StrategyId, TradingState, ids,
};
use alpha_panda_engine::paper::trader::{Emission, PaperTrader};
use alpha_panda_engine::risk::{Limits, RiskBook};
use alpha_panda_engine::strategy::StrategySet;
use uuid::Uuid;

use super::input::TickRow;

/// The id of the file's `n`-th tick (0-based), as the backtest has always given it.
pub fn tick_id(n: u64) -> Uuid {
    ids::child_id(Uuid::nil(), "backtest:tick", n as u32)
}

/// One active broker: its risk book, its limits per strategy and, for a paper broker, its
/// trader.
struct Lane {
    name: BrokerName,
    risk: RiskBook,
    limits: HashMap<StrategyId, Limits>,
    trader: Option<PaperTrader>,
}

/// What a loop produced.
#[derive(Debug, Default)]
pub struct LoopOutput {
    pub ticks: u64,
    /// (broker, fill), in the order they happened.
    pub fills: Vec<(String, OrderFilled)>,
    /// The last price of each instrument, in file order.
    pub last_prices: HashMap<InstrumentToken, Decimal>,
    pub signals: u64,
    pub rejections: u64,
}

pub struct EventLoop {
    stages: Stages,
    /// The tick the rows are written into, one after the other (a tick is ~300 bytes, a
    /// row's fields 40).
    scratch: Option<MarketTick>,
}

struct Stages {
    strategies: StrategySet,
    lanes: Vec<Lane>,
    /// The last price of each instrument (a handful: a list beats a hash map).
    last_prices: Vec<(InstrumentToken, Decimal)>,
    out: LoopOutput,
}

impl EventLoop {
    /// The stages of `settings`: the enabled strategies, and per active broker risk and (if
    /// paper) the paper trader.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let strategies = StrategySet::from_settings(settings)?;
        let mut lanes = Vec::new();
        for b in &settings.active_brokers {
            let risk = settings.risk_for(b);
            let limits = settings
                .strategies
                .iter()
                .map(|s| (s.id.clone(), Limits::for_strategy(&risk, &s.id)))
                .collect();
            let paper = settings
                .brokers
                .get(b)
                .is_some_and(|d| d.kind == alpha_panda_config::BrokerKind::Paper);
            lanes.push(Lane {
                name: b.clone(),
                risk: RiskBook::default(),
                limits,
                trader: if paper {
                    Some(PaperTrader::for_broker(settings, b)?.fills_and_failures_only())
                } else {
                    None
                },
            });
        }
        Ok(Self {
            stages: Stages {
                strategies,
                lanes,
                last_prices: Vec::new(),
                out: LoopOutput::default(),
            },
            scratch: None,
        })
    }

    /// Handles the next tick of the file.
    pub fn on_tick(&mut self, tick: &MarketTick) {
        self.stages.on_tick(tick);
    }

    /// Handles the next row of the file: [`on_tick`](Self::on_tick) of its tick.
    pub fn on_row(&mut self, row: &TickRow) {
        let tick = match &mut self.scratch {
            Some(tick) => {
                row.write_into(tick);
                tick
            }
            None => self.scratch.insert(row.to_tick()),
        };
        self.stages.on_tick(tick);
    }

    /// Everything the loop produced.
    pub fn finish(self) -> LoopOutput {
        let mut out = self.stages.out;
        out.last_prices = self.stages.last_prices.into_iter().collect();
        out
    }
}

impl Stages {
    fn on_tick(&mut self, tick: &MarketTick) {
        let n = self.out.ticks;
        self.out.ticks += 1;
        match self
            .last_prices
            .iter_mut()
            .find(|(token, _)| *token == tick.instrument_token)
        {
            Some((_, price)) => *price = tick.last_price.get(),
            None => self
                .last_prices
                .push((tick.instrument_token, tick.last_price.get())),
        }
        for lane in &mut self.lanes {
            if let Some(trader) = &mut lane.trader {
                let emissions = trader.on_market_tick(tick, true);
                settle(lane, emissions, &mut self.out.fills);
            }
        }
        let decisions = self.strategies.decide(tick);
        if decisions.is_empty() {
            return;
        }
        // The ids of the tick's envelope as `EventEnvelope::root` makes them, with the
        // tick's derived id in place of a fresh one (which would cost a random draw per
        // signal).
        let id = tick_id(n);
        let parent = Lineage {
            id,
            correlation_id: id,
            trace_id: id,
        };
        let signals = self
            .strategies
            .signals_of(parent, tick, decisions.decided, &|_, _| true);
        for signal in signals {
            let EventData::TradingSignal(s) = &signal.envelope.data else {
                continue;
            };
            let Some(lane) = self
                .lanes
                .iter_mut()
                .find(|l| signal.topic.broker_name() == Some(&l.name))
            else {
                continue;
            };
            self.out.signals += 1;
            let Some(limits) = lane.limits.get(&s.strategy_id) else {
                continue;
            };
            let Some(decided) = lane.risk.on_signal_owned(
                signal.envelope,
                &lane.name,
                limits,
                TradingState::Active,
            ) else {
                continue;
            };
            if !decided.passed() {
                self.out.rejections += 1;
                continue;
            }
            if let Some(trader) = &mut lane.trader {
                let emissions = trader.on_validated_owned(decided.envelope, true, false);
                settle(lane, emissions, &mut self.out.fills);
            }
        }
    }
}

/// Fills and failures of a broker's orders: back to its risk book (which order they settle
/// is their causation id, the validated signal's), and fills into the output.
fn settle(lane: &mut Lane, emissions: Vec<Emission>, fills: &mut Vec<(String, OrderFilled)>) {
    for e in emissions {
        let Some(order) = e.envelope.causation_id else {
            continue;
        };
        match e.envelope.data {
            EventData::OrderFilled(f) => {
                lane.risk.on_filled(order, e.envelope.id, &f);
                fills.push((lane.name.to_string(), f));
            }
            EventData::OrderFailed(_) => lane.risk.on_failed(order),
            _ => {}
        }
    }
}
