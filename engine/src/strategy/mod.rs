//! Strategies: pure and deterministic. No I/O, no wall clock: time comes from the tick.
//! Each strategy keeps its tick history per instrument; routing a tick to the strategies
//! that trade its instrument is one hash lookup.

pub mod indicators;
mod kinds;
mod live;
#[cfg(test)]
mod oracle;

use std::collections::BTreeMap;

use crate::FastMap;

use alpha_panda_config::{Settings, StrategyParams};
use alpha_panda_core::events::{MarketTick, TradingSignal};
use alpha_panda_core::{
    BrokerName, Decimal, EventBroker, EventData, EventEnvelope, InstrumentToken, Lineage,
    OrderType, Price, Product, Quantity, Side, StrategyId, Timestamp, Validity,
};
use alpha_panda_topics::{BrokerTopic, TopicName, keys};

pub use kinds::{EmaCrossover, MeanReversion, Momentum, Rsi, SmaCrossover};
pub use live::{Live, Reconfigured};

use crate::Output;

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
    /// What it remembers of the ticks it has seen, for a checkpoint.
    fn save(&self) -> serde_json::Value;
    /// Takes back what [`save`](Self::save) gave, on a fresh instance of the same kind and
    /// parameters; afterwards it decides on each tick as the saved instance would have. An
    /// error says what does not read.
    fn restore(&mut self, saved: serde_json::Value) -> Result<(), String>;
}

/// Builds the strategy of a kind from its parameters.
pub fn build(params: &StrategyParams) -> Box<dyn Strategy> {
    match params {
        StrategyParams::Momentum(p) => Box::new(Momentum::new(p.clone())),
        StrategyParams::MeanReversion(p) => Box::new(MeanReversion::new(p.clone())),
        StrategyParams::Rsi(p) => Box::new(Rsi::new(p.clone())),
        StrategyParams::SmaCrossover(p) => Box::new(SmaCrossover::new(p.clone())),
        StrategyParams::EmaCrossover(p) => Box::new(EmaCrossover::new(p.clone())),
    }
}

/// Makes a strategy instance from its id and parameters: [`build`] in production; tests
/// wrap it to inject faults.
pub type Builder =
    std::sync::Arc<dyn Fn(&StrategyId, &StrategyParams) -> Box<dyn Strategy> + Send + Sync>;

/// The production builder: [`build`].
pub fn default_builder() -> Builder {
    std::sync::Arc::new(|_, p| build(p))
}

struct Entry {
    id: StrategyId,
    brokers: Vec<BrokerName>,
    params: StrategyParams,
    instruments: Vec<InstrumentToken>,
    strategy: Box<dyn Strategy>,
    /// `order_type` and `limit_offset_bps` of the strategy's settings.
    order_type: OrderType,
    limit_offset_bps: rust_decimal::Decimal,
}

/// Ticks kept per instrument to rebuild a strategy that panicked: more than any built-in
/// strategy looks back.
pub const REBUILD_TICKS: usize = 512;

/// Panics of one strategy on one tick after which the tick is given up for that strategy
/// (dead-lettered); the other strategies are not affected.
pub const MAX_STRATEGY_PANICS: u32 = 3;

/// A strategy that panicked on a tick, each time rebuilt from the recent ticks; after
/// [`MAX_STRATEGY_PANICS`] the tick is given up for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyFault {
    pub strategy: StrategyId,
    pub panics: u32,
    pub message: String,
    /// True when the tick was given up for this strategy.
    pub gave_up: bool,
}

/// What one tick caused.
#[derive(Debug, Default)]
pub struct TickOutcome {
    pub outputs: Vec<Output>,
    pub faults: Vec<StrategyFault>,
}

/// The enabled strategies of a configuration, routed by instrument.
///
/// Each strategy runs isolated: a panic in one is caught, that strategy alone is rebuilt
/// (a fresh instance fed the recent ticks of its instruments) and tries the tick again; the
/// others go on.
pub struct StrategySet {
    entries: Vec<Entry>,
    by_instrument: FastMap<InstrumentToken, Vec<usize>>,
    recent: FastMap<InstrumentToken, std::collections::VecDeque<Recent>>,
    builder: Builder,
}

/// A tick as the rebuild buffer keeps it: one that carries only the last price, its time
/// and the volume (every tick of a backtest, an LTP-mode tick) as those three, in a sixth
/// of a whole tick's bytes; any other tick whole. A rebuilt strategy is fed the same ticks
/// either way.
#[derive(Debug, Clone)]
enum Recent {
    Ltp {
        last_price: Price,
        timestamp: Timestamp,
        volume_traded: Option<u64>,
    },
    Whole(Box<MarketTick>),
}

impl Recent {
    fn of(tick: &MarketTick) -> Self {
        // Every field, so that a new one is a compile error here rather than lost.
        let MarketTick {
            instrument_token: _,
            last_price,
            timestamp,
            volume_traded,
            symbol,
            last_traded_quantity,
            average_traded_price,
            total_buy_quantity,
            total_sell_quantity,
            change,
            ohlc,
            oi,
            oi_day_high,
            oi_day_low,
            last_trade_time,
            exchange_timestamp,
            depth,
            mode,
            tradable,
        } = tick;
        let only_ltp = symbol.is_none()
            && last_traded_quantity.is_none()
            && average_traded_price.is_none()
            && total_buy_quantity.is_none()
            && total_sell_quantity.is_none()
            && change.is_none()
            && ohlc.is_none()
            && oi.is_none()
            && oi_day_high.is_none()
            && oi_day_low.is_none()
            && last_trade_time.is_none()
            && exchange_timestamp.is_none()
            && depth.is_none()
            && mode.is_none()
            && tradable.is_none();
        if only_ltp {
            Recent::Ltp {
                last_price: *last_price,
                timestamp: *timestamp,
                volume_traded: *volume_traded,
            }
        } else {
            Recent::Whole(Box::new(tick.clone()))
        }
    }

    /// The tick as it came, on instrument `token`.
    fn tick(&self, token: InstrumentToken) -> std::borrow::Cow<'_, MarketTick> {
        match self {
            Recent::Ltp {
                last_price,
                timestamp,
                volume_traded,
            } => std::borrow::Cow::Owned(MarketTick {
                volume_traded: *volume_traded,
                ..MarketTick::new(token, *last_price, *timestamp)
            }),
            Recent::Whole(tick) => std::borrow::Cow::Borrowed(tick),
        }
    }
}

impl StrategySet {
    /// Enabled strategies; each signal goes to those of the strategy's brokers that are active.
    pub fn from_settings(s: &Settings) -> Result<Self, String> {
        Self::from_settings_with(s, default_builder())
    }

    /// As [`from_settings`](Self::from_settings), making instances with `builder`.
    pub fn from_settings_with(s: &Settings, builder: Builder) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut by_instrument: FastMap<InstrumentToken, Vec<usize>> = FastMap::default();
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
                strategy: builder(&st.id, &params),
                params,
                instruments: st.instruments.clone(),
                order_type: st.order_type,
                limit_offset_bps: st.limit_offset_bps,
            });
        }
        Ok(Self {
            entries,
            by_instrument,
            recent: FastMap::default(),
            builder,
        })
    }

    /// Replaces a strategy by a fresh instance fed the recent ticks of its instruments.
    fn rebuild(&mut self, i: usize) {
        let entry = &mut self.entries[i];
        let mut fresh = (self.builder)(&entry.id, &entry.params);
        for token in &entry.instruments {
            for recent in self.recent.get(token).into_iter().flatten() {
                let tick = recent.tick(*token);
                let replayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    fresh.on_tick(&tick);
                }));
                if replayed.is_err() {
                    tracing::warn!(strategy = %entry.id, "strategy panicked while being rebuilt");
                }
            }
        }
        entry.strategy = fresh;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every strategy's state, for a checkpoint: per strategy id, its parameters (so that
    /// a state is only given back to the same parameters) and what it remembers per
    /// instrument. Strategies that have seen no tick are left out. The rebuild buffer is
    /// not saved: a strategy that panics soon after a restore is rebuilt from the ticks
    /// seen since.
    pub fn save(&self) -> serde_json::Value {
        let saved: serde_json::Map<String, serde_json::Value> = self
            .entries
            .iter()
            .filter_map(|e| {
                let state = e.strategy.save();
                let empty = state.as_object().is_some_and(|o| o.is_empty());
                (!empty).then(|| {
                    (
                        e.id.as_str().to_owned(),
                        serde_json::json!({ "params": format!("{:?}", e.params), "state": state }),
                    )
                })
            })
            .collect();
        serde_json::Value::Object(saved)
    }

    /// Gives each strategy the state [`save`](Self::save) kept for it, if its parameters
    /// are the same; a strategy whose parameters changed (or that is new) starts afresh,
    /// and a saved strategy no longer configured is dropped. An error names the strategy
    /// whose state does not read.
    pub fn restore(&mut self, saved: serde_json::Value) -> Result<(), String> {
        let serde_json::Value::Object(mut saved) = saved else {
            return Err("the strategies' saved state is not an object".to_owned());
        };
        for entry in &mut self.entries {
            let Some(mut s) = saved.remove(entry.id.as_str()) else {
                continue;
            };
            let params = s.get("params").and_then(|p| p.as_str()).unwrap_or_default();
            if params != format!("{:?}", entry.params) {
                tracing::warn!(strategy = %entry.id, "parameters changed since the checkpoint: the strategy starts afresh");
                continue;
            }
            let state = s
                .get_mut("state")
                .map(serde_json::Value::take)
                .unwrap_or_default();
            entry
                .strategy
                .restore(state)
                .map_err(|e| format!("strategy {}: {e}", entry.id))?;
        }
        for id in saved.keys() {
            tracing::info!(strategy = %id, "a checkpointed strategy is no longer configured: its state is dropped");
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `trading_signal`s a tick causes: for each strategy trading its instrument that
    /// decides to trade, one signal per broker where `emits(strategy, broker)` (enabled and
    /// not paused), as children of the tick. Ids are derived from the tick, the strategy and
    /// the broker's position in the strategy's list, so reprocessing the tick re-emits the
    /// same ids. [`decide`](Self::decide) then [`signals`](Self::signals).
    pub fn on_tick(
        &mut self,
        tick_env: &EventEnvelope,
        emits: &dyn Fn(&StrategyId, &BrokerName) -> bool,
    ) -> TickOutcome {
        let EventData::MarketTick(tick) = &tick_env.data else {
            return TickOutcome::default();
        };
        let decisions = self.decide(tick);
        TickOutcome {
            outputs: self.signals(tick_env, tick, decisions.decided, emits),
            faults: decisions.faults,
        }
    }

    /// What the strategies trading the tick's instrument decide on it, each isolated (a
    /// strategy that panics is rebuilt and tries again, up to [`MAX_STRATEGY_PANICS`]).
    /// Needs no envelope: a driver that only has the tick makes the tick's envelope when
    /// there is something to emit.
    pub fn decide(&mut self, tick: &MarketTick) -> Decisions {
        let mut out = Decisions::default();
        let count = self
            .by_instrument
            .get(&tick.instrument_token)
            .map_or(0, Vec::len);
        if count == 0 {
            return out;
        }
        for k in 0..count {
            let Some(&i) = self
                .by_instrument
                .get(&tick.instrument_token)
                .and_then(|v| v.get(k))
            else {
                break;
            };
            let mut panics = 0;
            let decision = loop {
                let strategy = &mut self.entries[i].strategy;
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    strategy.on_tick(tick)
                })) {
                    Ok(d) => break d,
                    Err(payload) => {
                        panics += 1;
                        let message = crate::panic_message(payload.as_ref());
                        let gave_up = panics >= MAX_STRATEGY_PANICS;
                        tracing::error!(strategy = %self.entries[i].id, instrument = %tick.instrument_token, panics, error = %message, "strategy panicked; rebuilding it");
                        self.rebuild(i);
                        out.faults.push(StrategyFault {
                            strategy: self.entries[i].id.clone(),
                            panics,
                            message,
                            gave_up,
                        });
                        if gave_up {
                            break None;
                        }
                    }
                }
            };
            if let Some(decision) = decision {
                out.decided.push(Decided { entry: i, decision });
            }
        }
        let recent = self.recent.entry(tick.instrument_token).or_default();
        if recent.len() == REBUILD_TICKS {
            recent.pop_front();
        }
        recent.push_back(Recent::of(tick));
        out
    }

    /// The signals of what [`decide`](Self::decide) returned for `tick`, as children of its
    /// envelope `tick_env`.
    pub fn signals(
        &self,
        tick_env: &EventEnvelope,
        tick: &MarketTick,
        decided: Vec<Decided>,
        emits: &dyn Fn(&StrategyId, &BrokerName) -> bool,
    ) -> Vec<Output> {
        self.signals_of(tick_env.lineage(), tick, decided, emits)
    }

    /// As [`signals`](Self::signals), for a driver that has only the tick and its
    /// envelope's ids (`tick_env`): a signal needs no more of the tick's envelope.
    pub fn signals_of(
        &self,
        tick_env: Lineage,
        tick: &MarketTick,
        decided: Vec<Decided>,
        emits: &dyn Fn(&StrategyId, &BrokerName) -> bool,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        for Decided {
            entry: i,
            decision: d,
        } in decided
        {
            let Some(entry) = self.entries.get(i) else {
                continue;
            };
            // A LIMIT order is priced the configured offset better than the tick.
            let price = match entry.order_type {
                OrderType::Limit => {
                    let f = entry.limit_offset_bps / rust_decimal::Decimal::from(10_000);
                    let limit = match d.side {
                        Side::Buy => d.price.get() * (rust_decimal::Decimal::ONE - f),
                        Side::Sell => d.price.get() * (rust_decimal::Decimal::ONE + f),
                    };
                    Price::new(limit.round_dp(2)).unwrap_or(d.price)
                }
                _ => d.price,
            };
            let signal = TradingSignal {
                strategy_id: entry.id.clone(),
                instrument_token: tick.instrument_token,
                signal_type: d.side,
                quantity: d.quantity,
                price,
                timestamp: tick.timestamp,
                confidence: d.confidence,
                metadata: d.metadata,
                order_type: entry.order_type,
                product: Product::Mis,
                validity: Validity::Day,
                trigger_price: None,
            };
            let last = entry.brokers.len().saturating_sub(1);
            let mut signal = Some(signal);
            for (ordinal, broker) in entry.brokers.iter().enumerate() {
                if !emits(&entry.id, broker) {
                    continue;
                }
                // The last broker takes the signal itself, the others a copy.
                let payload = if ordinal == last {
                    signal.take()
                } else {
                    signal.clone()
                };
                let Some(payload) = payload else { break };
                out.push(Output {
                    topic: TopicName::broker(broker, BrokerTopic::SignalsRaw),
                    envelope: tick_env.child(
                        EventBroker::Broker(broker.clone()),
                        format!("strategy:{}", entry.id),
                        ordinal as u32,
                        keys::signal(&entry.id, tick.instrument_token),
                        tick.timestamp,
                        EventData::TradingSignal(payload),
                    ),
                });
            }
        }
        out
    }
}

/// One strategy's decision on a tick (see [`StrategySet::decide`]).
#[derive(Debug, Clone)]
pub struct Decided {
    entry: usize,
    decision: Decision,
}

/// What the strategies decided on one tick, and the faults on the way.
#[derive(Debug, Default)]
pub struct Decisions {
    pub decided: Vec<Decided>,
    pub faults: Vec<StrategyFault>,
}

impl Decisions {
    /// No strategy wants to trade.
    pub fn is_empty(&self) -> bool {
        self.decided.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Panics on ticks at one price (at most `left` times, shared by every instance);
    /// otherwise the wrapped strategy.
    struct PanicsAt(
        Box<dyn Strategy>,
        i64,
        std::sync::Arc<std::sync::atomic::AtomicU32>,
    );
    impl Strategy for PanicsAt {
        fn save(&self) -> serde_json::Value {
            self.0.save()
        }

        fn restore(&mut self, saved: serde_json::Value) -> Result<(), String> {
            self.0.restore(saved)
        }

        fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
            use std::sync::atomic::Ordering;
            if tick.last_price.get() == Decimal::from(self.1)
                && self
                    .2
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                panic!("bad tick");
            }
            self.0.on_tick(tick)
        }
    }

    /// Runs a wavy series with one bad tick (price 77, index 200) through a set whose
    /// strategy `victim` panics on it up to `panics` times, and through a set without faults.
    fn run_with_panics(
        panics: u32,
        victim: usize,
    ) -> (StrategyId, Vec<(TickOutcome, TickOutcome)>) {
        let mut settings = Settings::default();
        for st in &mut settings.strategies {
            st.instruments = vec![InstrumentToken(1)];
        }
        let victim = settings.strategies[victim].id.clone();
        let v = victim.clone();
        let left = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(panics));
        let builder: Builder = std::sync::Arc::new(move |id, p| {
            if *id == v {
                Box::new(PanicsAt(build(p), 77, left.clone()))
            } else {
                build(p)
            }
        });
        let mut set = StrategySet::from_settings_with(&settings, builder).unwrap();
        let mut clean = StrategySet::from_settings(&settings).unwrap();
        let all = |_: &StrategyId, _: &BrokerName| true;
        let runs = (0..400)
            .map(|i| {
                let p = if i == 200 {
                    77
                } else {
                    100 + ((i * 7) % 23) - 11 + (i / 40) % 3 * 5
                };
                let env = tick_env(1, p, i);
                (set.on_tick(&env, &all), clean.on_tick(&env, &all))
            })
            .collect();
        (victim, runs)
    }

    fn ids(o: &[Output]) -> Vec<uuid::Uuid> {
        o.iter().map(|o| o.envelope.id).collect()
    }

    /// Every kind on two instruments, with short windows so that they trade.
    fn every_kind() -> Settings {
        let mut settings = Settings::default();
        let template = settings.strategies[0].clone();
        settings.strategies.clear();
        for (id, kind) in [
            ("m", alpha_panda_config::StrategyKind::Momentum),
            ("mr", alpha_panda_config::StrategyKind::MeanReversion),
            ("r", alpha_panda_config::StrategyKind::Rsi),
            ("sma", alpha_panda_config::StrategyKind::SmaCrossover),
            ("ema", alpha_panda_config::StrategyKind::EmaCrossover),
        ] {
            let mut st = template.clone();
            st.id = StrategyId::new(id).unwrap();
            st.kind = kind;
            st.instruments = vec![InstrumentToken(1), InstrumentToken(2)];
            settings.strategies.push(st);
        }
        settings
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A set saved after `split` ticks (through JSON text, as a checkpoint is) and
        /// restored into fresh instances signals on the rest exactly as the set that went on.
        #[test]
        fn a_restored_set_signals_as_the_set_that_went_on(
            moves in proptest::collection::vec((0u32..2, -300i64..300), 1..400),
            split in 0usize..400,
        ) {
            let settings = every_kind();
            let all = |_: &StrategyId, _: &BrokerName| true;
            let mut went_on = StrategySet::from_settings(&settings).unwrap();
            let mut first = StrategySet::from_settings(&settings).unwrap();
            let split = split.min(moves.len());
            let mut prices = [100_000i64, 50_000];
            let envs: Vec<EventEnvelope> = moves
                .iter()
                .enumerate()
                .map(|(i, (which, step))| {
                    let p = &mut prices[*which as usize];
                    *p = (*p + step).max(1);
                    // Prices with two decimals: the tick size of NSE equities.
                    let ts = Timestamp::from_unix_millis(1_705_290_000_000 + i as i64 * 1000).unwrap();
                    let tick = MarketTick::new(
                        InstrumentToken(*which + 1),
                        Price::new(Decimal::new(*p, 2)).unwrap(),
                        ts,
                    );
                    EventEnvelope::root(EventBroker::Shared, "feed", "k", ts, EventData::MarketTick(tick))
                })
                .collect();
            for env in &envs[..split] {
                went_on.on_tick(env, &all);
                first.on_tick(env, &all);
            }
            let text = first.save().to_string();
            let mut restored = StrategySet::from_settings(&settings).unwrap();
            restored.restore(serde_json::from_str(&text).unwrap()).unwrap();
            for env in &envs[split..] {
                let want = ids(&went_on.on_tick(env, &all).outputs);
                let got = ids(&restored.on_tick(env, &all).outputs);
                proptest::prop_assert_eq!(got, want);
            }
            // And ends in the same state.
            proptest::prop_assert_eq!(restored.save(), went_on.save());
        }
    }

    #[test]
    fn a_strategy_whose_parameters_changed_starts_afresh_and_an_unreadable_state_is_named() {
        let settings = every_kind();
        let all = |_: &StrategyId, _: &BrokerName| true;
        let mut set = StrategySet::from_settings(&settings).unwrap();
        for i in 0..50 {
            set.on_tick(&tick_env(1, 100 + (i % 7), i), &all);
        }
        let saved = set.save();
        assert_eq!(
            saved.as_object().unwrap().len(),
            5,
            "every kind saved: {saved}"
        );
        let mut changed = settings.clone();
        changed.strategies[0]
            .params
            .insert("lookback".into(), toml::Value::Integer(3));
        let mut fresh = StrategySet::from_settings(&changed).unwrap();
        fresh.restore(saved.clone()).unwrap();
        let after = fresh.save();
        assert!(
            after.get("m").is_none(),
            "momentum with a new lookback starts afresh"
        );
        assert_eq!(after.get("ema"), saved.get("ema"));

        let mut broken = saved.clone();
        broken["r"]["state"] = serde_json::json!({"1": {"rsi": [5, 0]}});
        let err = StrategySet::from_settings(&settings)
            .unwrap()
            .restore(broken)
            .unwrap_err();
        assert!(
            err.contains("strategy r") && err.contains("5 is not an ordering"),
            "{err}"
        );
    }

    #[test]
    fn the_rebuild_buffer_gives_back_each_tick_as_it_came() {
        let at = Timestamp::from_unix_millis(1_705_290_000_000).unwrap();
        let ltp = MarketTick::new(
            InstrumentToken(738561),
            Price::new(Decimal::new(245005, 2)).unwrap(),
            at,
        );
        let with_volume = MarketTick {
            volume_traded: Some(7),
            ..ltp.clone()
        };
        let full = MarketTick {
            symbol: Some("RELIANCE".to_owned()),
            oi: Some(3),
            exchange_timestamp: Some(at),
            ..with_volume.clone()
        };
        for (tick, compact) in [(ltp, true), (with_volume, true), (full, false)] {
            let kept = Recent::of(&tick);
            assert_eq!(matches!(kept, Recent::Ltp { .. }), compact, "{tick:?}");
            assert_eq!(*kept.tick(tick.instrument_token), tick);
        }
    }

    #[test]
    fn a_strategy_that_panicked_is_rebuilt_from_recent_ticks_and_decides_as_before() {
        let (victim, runs) = run_with_panics(2, 0);
        let mut victim_signals = 0;
        for (i, (got, want)) in runs.iter().enumerate() {
            assert_eq!(ids(&got.outputs), ids(&want.outputs), "tick {i}");
            victim_signals += got
                .outputs
                .iter()
                .filter(|o| o.envelope.source.ends_with(victim.as_str()))
                .count();
            if i == 200 {
                assert_eq!(got.faults.len(), 2);
                assert!(
                    got.faults
                        .iter()
                        .all(|f| f.strategy == victim && !f.gave_up)
                );
                assert!(got.faults[0].message.contains("bad tick"));
            } else {
                assert!(got.faults.is_empty());
            }
        }
        assert!(victim_signals > 0, "the series makes the victim trade");
    }

    #[test]
    fn a_strategy_that_panics_three_times_gives_up_the_tick_and_the_others_go_on() {
        let last = Settings::default().strategies.len() - 1;
        let (victim, runs) = run_with_panics(u32::MAX, last);
        let others = |o: &[Output]| -> Vec<uuid::Uuid> {
            o.iter()
                .filter(|o| !o.envelope.source.ends_with(victim.as_str()))
                .map(|o| o.envelope.id)
                .collect()
        };
        let mut others_signals = 0;
        for (got, want) in &runs {
            assert_eq!(others(&got.outputs), others(&want.outputs));
            others_signals += others(&got.outputs).len();
        }
        let (bad, _) = &runs[200];
        assert_eq!(bad.faults.len(), MAX_STRATEGY_PANICS as usize);
        assert!(bad.faults.iter().all(|f| f.strategy == victim));
        assert!(bad.faults[2].gave_up && !bad.faults[1].gave_up);
        assert!(others_signals > 0);
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
        let all = |_: &StrategyId, _: &BrokerName| true;
        assert!(
            set.on_tick(&tick_env(2953217, 100, 0), &all)
                .outputs
                .is_empty()
        );
        assert!(
            set.on_tick(&tick_env(2953217, 200, 1), &all)
                .outputs
                .is_empty()
        );
        assert!(
            set.on_tick(&tick_env(738561, 100, 0), &all)
                .outputs
                .is_empty()
        );
        let rise = tick_env(738561, 110, 1);
        let out = set.on_tick(&rise, &all).outputs;
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
