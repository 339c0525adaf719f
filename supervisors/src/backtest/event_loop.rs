//! The backtest's event-time loop: the second driver of the engine's logic. Each tick goes,
//! in file order, through the paper traders (resting orders it reaches), the strategies, and
//! for each signal the broker's risk book and paper trader; fills and failures go back to
//! the risk book at once. No encoding, no transport, no dedup store, no actors.
//!
//! The results equal the daemon's on the same ticks: the engine's results depend on the
//! events and their event times, not on how a transport interleaves them (see
//! docs/architecture.md, "Determinism and ordering"), and every id is derived as the daemon
//! derives it, from the tick's id `child_id(nil, "backtest:tick", n)` for the file's n-th
//! tick. A tick's envelope is only made when a strategy signals on it.

use std::collections::HashMap;

use alpha_panda_config::Settings;
use alpha_panda_core::events::{MarketTick, OrderFilled};
use alpha_panda_core::{
    BrokerName, Decimal, ENVELOPE_VERSION, EventBroker, EventData, EventEnvelope, InstrumentToken,
    StrategyId, TradingState, ids,
};
use alpha_panda_engine::paper::trader::{Emission, PaperTrader};
use alpha_panda_engine::risk::{Limits, RiskBook};
use alpha_panda_engine::strategy::StrategySet;
use alpha_panda_topics::keys;
use uuid::Uuid;

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
            strategies,
            lanes,
            last_prices: Vec::new(),
            out: LoopOutput::default(),
        })
    }

    /// Handles the next tick of the file.
    pub fn on_tick(&mut self, tick: MarketTick) {
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
                let emissions = trader.on_market_tick(&tick, true);
                settle(lane, emissions, &mut self.out.fills);
            }
        }
        let decisions = self.strategies.decide(&tick);
        if decisions.is_empty() {
            return;
        }
        // The tick's envelope as `EventEnvelope::root` makes it, with the tick's derived id
        // in place of a fresh one (which would cost a random draw per signal).
        let id = tick_id(n);
        let envelope = EventEnvelope {
            id,
            correlation_id: id,
            causation_id: None,
            trace_id: id,
            parent_trace_id: None,
            broker: EventBroker::Shared,
            ts: tick.timestamp,
            key: keys::tick(tick.instrument_token),
            source: "feed".to_owned(),
            version: ENVELOPE_VERSION,
            data: EventData::MarketTick(tick.clone()),
        };
        let signals = self
            .strategies
            .signals(&envelope, &tick, decisions.decided, &|_, _| true);
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
            let limits = match lane.limits.get(&s.strategy_id) {
                Some(l) => l,
                None => continue,
            };
            let decided = lane.risk.on_signal(
                &signal.envelope,
                s,
                &lane.name,
                limits,
                TradingState::Active,
            );
            if !decided.passed() {
                self.out.rejections += 1;
                continue;
            }
            if let Some(trader) = &mut lane.trader {
                let emissions = trader.on_validated(&decided.envelope, true, false);
                settle(lane, emissions, &mut self.out.fills);
            }
        }
    }

    /// Everything the loop produced.
    pub fn finish(mut self) -> LoopOutput {
        self.out.last_prices = self.last_prices.into_iter().collect();
        self.out
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
