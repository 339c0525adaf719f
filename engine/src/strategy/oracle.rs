//! The tests' oracle: `mean_reversion`, `rsi` and `sma_crossover` as they were before their
//! integer shortcuts, computing every decimal indicator on every tick (`kinds`' property
//! tests require the same decisions, tick for tick). Test-only.

use std::collections::HashMap;

use alpha_panda_config::{MeanReversionParams, RsiParams, SmaCrossoverParams};
use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{Decimal, InstrumentToken, Side};

use super::indicators::{History, bollinger, rsi, sma};
use super::kinds::{decision, meta};
use super::{Decision, Strategy};

/// The oracle is never checkpointed: it only runs beside the strategies it checks.
macro_rules! oracle_keeps_no_state {
    () => {
        fn save(&self) -> serde_json::Value {
            serde_json::Value::Null
        }

        fn restore(&mut self, _saved: serde_json::Value) -> Result<(), String> {
            Err("the test oracle is never checkpointed".to_owned())
        }
    };
}

#[derive(Default)]
struct Track {
    history: Option<History>,
    last_side: Option<Side>,
    last_value: Option<Decimal>,
}

impl Track {
    fn history(&mut self, capacity: usize) -> &mut History {
        self.history.get_or_insert_with(|| History::new(capacity))
    }

    fn change(&mut self, want: Option<Side>) -> Option<Side> {
        match want {
            Some(side) if self.last_side != Some(side) => {
                self.last_side = Some(side);
                Some(side)
            }
            _ => None,
        }
    }
}

pub struct MeanReversion {
    p: MeanReversionParams,
    tracks: HashMap<InstrumentToken, Track>,
}

impl MeanReversion {
    pub fn new(p: MeanReversionParams) -> Self {
        Self {
            p,
            tracks: HashMap::new(),
        }
    }
}

impl Strategy for MeanReversion {
    oracle_keeps_no_state!();

    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let cap = self.p.bollinger_period.max(self.p.rsi_period + 1);
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = t.history(cap);
        h.push(tick.last_price.get());
        let (lower, _, upper) = bollinger(h, self.p.bollinger_period, self.p.bollinger_k)?;
        let r = rsi(h, self.p.rsi_period)?;
        let price = tick.last_price.get();
        let want = if price < lower && r < self.p.oversold {
            Some(Side::Buy)
        } else if price > upper && r > self.p.overbought {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        decision(
            tick,
            side,
            self.p.quantity,
            meta(&[("rsi", r), ("lower_band", lower), ("upper_band", upper)]),
        )
    }
}

pub struct Rsi {
    p: RsiParams,
    tracks: HashMap<InstrumentToken, Track>,
}

impl Rsi {
    pub fn new(p: RsiParams) -> Self {
        Self {
            p,
            tracks: HashMap::new(),
        }
    }
}

impl Strategy for Rsi {
    oracle_keeps_no_state!();

    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = t.history(self.p.period + 1);
        h.push(tick.last_price.get());
        let now = rsi(h, self.p.period)?;
        let before = t.last_value.replace(now)?;
        let want = if before >= self.p.oversold && now < self.p.oversold {
            Some(Side::Buy)
        } else if before <= self.p.overbought && now > self.p.overbought {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        decision(tick, side, self.p.quantity, meta(&[("rsi", now)]))
    }
}

pub struct SmaCrossover {
    p: SmaCrossoverParams,
    tracks: HashMap<InstrumentToken, Track>,
}

impl SmaCrossover {
    pub fn new(p: SmaCrossoverParams) -> Self {
        Self {
            p,
            tracks: HashMap::new(),
        }
    }
}

impl Strategy for SmaCrossover {
    oracle_keeps_no_state!();

    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = t.history(self.p.slow);
        h.push(tick.last_price.get());
        let (fast, slow) = (sma(h, self.p.fast)?, sma(h, self.p.slow)?);
        let diff = fast - slow;
        let before = t.last_value.replace(diff)?;
        let want = if before <= Decimal::ZERO && diff > Decimal::ZERO {
            Some(Side::Buy)
        } else if before >= Decimal::ZERO && diff < Decimal::ZERO {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        decision(
            tick,
            side,
            self.p.quantity,
            meta(&[("fast_sma", fast), ("slow_sma", slow)]),
        )
    }
}
