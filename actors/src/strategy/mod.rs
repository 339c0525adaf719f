//! Strategies: pure and deterministic. No I/O, no wall clock: time comes from the tick.
//! Each strategy keeps its tick history per instrument; routing a tick to the strategies
//! that trade its instrument is one hash lookup.

pub mod indicators;
mod kinds;

use std::collections::{BTreeMap, HashMap};

use alpha_panda_config::{Settings, StrategyParams};
use alpha_panda_core::events::{MarketTick, TradingSignal};
use alpha_panda_core::{
    BrokerName, Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, OrderType, Price,
    Product, Quantity, Side, StrategyId, Validity,
};
use alpha_panda_topics::{BrokerTopic, TopicName, keys};

pub use kinds::{MeanReversion, Momentum, Rsi, SmaCrossover};

use crate::delivery::Output;

/// What a strategy wants to do on a tick. Holding is `None`, never a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub side: Side,
    pub quantity: Quantity,
    pub price: Price,
    pub confidence: Option<Decimal>,
    /// Indicator values behind the decision, for the signal's `metadata`.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// A trading strategy: a pure function of the ticks it has seen.
pub trait Strategy: Send {
    /// Handles a tick of an instrument the strategy trades.
    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision>;
}

/// Builds the strategy of a kind from its parameters.
pub fn build(params: &StrategyParams) -> Box<dyn Strategy> {
    match params {
        StrategyParams::Momentum(p) => Box::new(Momentum::new(p.clone())),
        StrategyParams::MeanReversion(p) => Box::new(MeanReversion::new(p.clone())),
        StrategyParams::Rsi(p) => Box::new(Rsi::new(p.clone())),
        StrategyParams::SmaCrossover(p) => Box::new(SmaCrossover::new(p.clone())),
    }
}

struct Entry {
    id: StrategyId,
    brokers: Vec<BrokerName>,
    strategy: Box<dyn Strategy>,
}

/// The enabled strategies of a configuration, routed by instrument.
pub struct StrategySet {
    entries: Vec<Entry>,
    by_instrument: HashMap<InstrumentToken, Vec<usize>>,
}

impl StrategySet {
    /// Enabled strategies; each signal goes to those of the strategy's brokers that are active.
    pub fn from_settings(s: &Settings) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut by_instrument: HashMap<InstrumentToken, Vec<usize>> = HashMap::new();
        for st in s.strategies.iter().filter(|st| st.enabled) {
            let params = st
                .typed_params()
                .map_err(|(k, p)| format!("strategy {}: params.{k}: {p}", st.id))?;
            let brokers: Vec<BrokerName> = st
                .brokers
                .iter()
                .filter(|b| s.active_brokers.contains(b))
                .cloned()
                .collect();
            if brokers.is_empty() {
                continue;
            }
            let index = entries.len();
            for token in &st.instruments {
                by_instrument.entry(*token).or_default().push(index);
            }
            entries.push(Entry {
                id: st.id.clone(),
                brokers,
                strategy: build(&params),
            });
        }
        Ok(Self {
            entries,
            by_instrument,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `trading_signal`s a tick causes: for each strategy trading its instrument that
    /// decides to trade, one signal per broker, as children of the tick (ordinal = position
    /// in this list, so reprocessing the tick re-emits the same ids).
    pub fn on_tick(&mut self, tick_env: &EventEnvelope) -> Vec<Output> {
        let EventData::MarketTick(tick) = &tick_env.data else {
            return Vec::new();
        };
        let Some(indices) = self.by_instrument.get(&tick.instrument_token) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &i in indices {
            let entry = &mut self.entries[i];
            let Some(d) = entry.strategy.on_tick(tick) else {
                continue;
            };
            let signal = TradingSignal {
                strategy_id: entry.id.clone(),
                instrument_token: tick.instrument_token,
                signal_type: d.side,
                quantity: d.quantity,
                price: d.price,
                timestamp: tick.timestamp,
                confidence: d.confidence,
                metadata: d.metadata,
                order_type: OrderType::Market,
                product: Product::Mis,
                validity: Validity::Day,
                trigger_price: None,
            };
            for broker in &entry.brokers {
                let ordinal = out.len() as u32;
                out.push(Output {
                    topic: TopicName::broker(broker, BrokerTopic::SignalsRaw),
                    envelope: tick_env.child(
                        EventBroker::Broker(broker.clone()),
                        format!("strategy:{}", entry.id),
                        ordinal,
                        keys::signal(&entry.id, tick.instrument_token),
                        tick.timestamp,
                        EventData::TradingSignal(signal.clone()),
                    ),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alpha_panda_core::Timestamp;

    fn tick_env(token: u32, price: i64, i: i64) -> EventEnvelope {
        let ts = Timestamp::from_unix_millis(1_705_290_000_000 + i * 1000).unwrap();
        let tick = MarketTick::new(
            InstrumentToken(token),
            Price::new(Decimal::from(price)).unwrap(),
            ts,
        );
        EventEnvelope::root(
            EventBroker::Shared,
            "feed",
            token.to_string(),
            ts,
            EventData::MarketTick(tick),
        )
    }

    #[test]
    fn ticks_reach_only_their_strategies_and_signals_go_to_each_active_broker() {
        let mut settings = Settings {
            active_brokers: vec![BrokerName::paper(), BrokerName::zerodha()],
            ..Settings::default()
        };
        for st in &mut settings.strategies {
            st.brokers = vec![BrokerName::paper(), BrokerName::zerodha()];
            st.params.insert("lookback".into(), toml::Value::Integer(1));
        }
        settings
            .strategies
            .retain(|s| s.id.as_str() == "momentum_1");
        let mut set = StrategySet::from_settings(&settings).unwrap();
        // momentum_1 trades 738561 and 408065, not 2953217.
        assert!(set.on_tick(&tick_env(2953217, 100, 0)).is_empty());
        assert!(set.on_tick(&tick_env(2953217, 200, 1)).is_empty());
        assert!(set.on_tick(&tick_env(738561, 100, 0)).is_empty());
        let rise = tick_env(738561, 110, 1);
        let out = set.on_tick(&rise);
        let topics: Vec<String> = out.iter().map(|o| o.topic.to_string()).collect();
        assert_eq!(topics, ["paper.signals.raw", "zerodha.signals.raw"]);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o.envelope.causation_id, Some(rise.id));
            assert_eq!(o.envelope.key, "momentum_1|738561");
            assert_eq!(
                o.envelope.id,
                alpha_panda_core::ids::child_id(rise.id, "strategy:momentum_1", i as u32)
            );
            let EventData::TradingSignal(s) = &o.envelope.data else {
                panic!()
            };
            assert_eq!(s.signal_type, Side::Buy);
            assert_eq!(s.timestamp, rise.ts, "time comes from the tick");
        }
    }
}
