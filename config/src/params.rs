//! Typed parameters of each built-in strategy kind, with their defaults. A strategy's
//! `params` table is checked against these at load time, so a misspelt or ill-typed
//! parameter stops start-up with its key (`strategies[0].params.lookbak`).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::settings::{StrategyKind, StrategySettings};

fn qty() -> u64 {
    10
}

/// `momentum`: buy when the price rose more than `threshold` (a fraction) over the last
/// `lookback` ticks, sell when it fell more than that. Emits only when the direction changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MomentumParams {
    pub lookback: usize,
    pub threshold: Decimal,
    pub quantity: u64,
}

impl Default for MomentumParams {
    fn default() -> Self {
        Self {
            lookback: 20,
            threshold: Decimal::new(2, 3), // 0.2 %
            quantity: qty(),
        }
    }
}

/// `mean_reversion`: buy below the lower Bollinger band while RSI is oversold, sell above
/// the upper band while RSI is overbought.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeanReversionParams {
    pub bollinger_period: usize,
    /// Band width in standard deviations.
    pub bollinger_k: Decimal,
    pub rsi_period: usize,
    pub oversold: Decimal,
    pub overbought: Decimal,
    pub quantity: u64,
}

impl Default for MeanReversionParams {
    fn default() -> Self {
        Self {
            bollinger_period: 20,
            bollinger_k: Decimal::new(2, 0),
            rsi_period: 14,
            oversold: Decimal::new(30, 0),
            overbought: Decimal::new(70, 0),
            quantity: qty(),
        }
    }
}

/// `rsi`: buy when RSI crosses below `oversold`, sell when it crosses above `overbought`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RsiParams {
    pub period: usize,
    pub oversold: Decimal,
    pub overbought: Decimal,
    pub quantity: u64,
}

impl Default for RsiParams {
    fn default() -> Self {
        Self {
            period: 14,
            oversold: Decimal::new(30, 0),
            overbought: Decimal::new(70, 0),
            quantity: qty(),
        }
    }
}

/// `sma_crossover`: buy when the fast SMA crosses above the slow one, sell when it crosses
/// below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmaCrossoverParams {
    pub fast: usize,
    pub slow: usize,
    pub quantity: u64,
}

impl Default for SmaCrossoverParams {
    fn default() -> Self {
        Self {
            fast: 10,
            slow: 30,
            quantity: qty(),
        }
    }
}

/// `ema_crossover`: exponential moving averages, `alpha = 2 / (n + 1)`, each seeded with the
/// instrument's first price; wants BUY while fast > slow and SELL while fast < slow, from the
/// instrument's `slow`-th tick on, and signals when that view changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaCrossoverParams {
    pub fast: usize,
    pub slow: usize,
    pub quantity: u64,
}

impl Default for EmaCrossoverParams {
    fn default() -> Self {
        Self {
            fast: 10,
            slow: 30,
            quantity: qty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StrategyParams {
    Momentum(MomentumParams),
    MeanReversion(MeanReversionParams),
    Rsi(RsiParams),
    SmaCrossover(SmaCrossoverParams),
    EmaCrossover(EmaCrossoverParams),
}

impl StrategySettings {
    /// The parameters of this strategy's kind, or (key within `params`, problem).
    pub fn typed_params(&self) -> Result<StrategyParams, (String, String)> {
        fn parse<T: serde::de::DeserializeOwned>(t: &toml::Table) -> Result<T, (String, String)> {
            serde_path_to_error::deserialize(toml::Value::Table(t.clone())).map_err(|e| {
                let path = e.path().to_string();
                let problem = e.into_inner().to_string();
                let problem = problem
                    .split("\nin `")
                    .next()
                    .unwrap_or(&problem)
                    .to_owned();
                let unknown = problem
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next());
                let key = match (path.as_str(), unknown) {
                    (".", Some(name)) => name.to_owned(),
                    (".", None) => String::new(),
                    (p, _) => p.to_owned(),
                };
                (key, problem)
            })
        }
        let p = &self.params;
        let params = match self.kind {
            StrategyKind::Momentum => StrategyParams::Momentum(parse(p)?),
            StrategyKind::MeanReversion => StrategyParams::MeanReversion(parse(p)?),
            StrategyKind::Rsi => StrategyParams::Rsi(parse(p)?),
            StrategyKind::SmaCrossover => StrategyParams::SmaCrossover(parse(p)?),
            StrategyKind::EmaCrossover => StrategyParams::EmaCrossover(parse(p)?),
        };
        check(&params).map_err(|(k, m)| (k.to_owned(), m.to_owned()))?;
        Ok(params)
    }
}

fn check(p: &StrategyParams) -> Result<(), (&'static str, &'static str)> {
    let positive = |d: Decimal| d > Decimal::ZERO;
    let pct = |d: Decimal| d > Decimal::ZERO && d < Decimal::ONE_HUNDRED;
    match p {
        StrategyParams::Momentum(m) => {
            if m.lookback < 1 {
                return Err(("lookback", "must be at least 1 tick"));
            }
            if !positive(m.threshold) {
                return Err(("threshold", "must be a fraction above 0, e.g. 0.002"));
            }
            if m.quantity == 0 {
                return Err(("quantity", "must be at least 1"));
            }
        }
        StrategyParams::MeanReversion(m) => {
            if m.bollinger_period < 2 {
                return Err(("bollinger_period", "must be at least 2 ticks"));
            }
            if !positive(m.bollinger_k) {
                return Err(("bollinger_k", "must be above 0"));
            }
            if m.rsi_period < 2 {
                return Err(("rsi_period", "must be at least 2 ticks"));
            }
            if !(pct(m.oversold) && pct(m.overbought) && m.oversold < m.overbought) {
                return Err(("oversold", "oversold < overbought, both between 0 and 100"));
            }
            if m.quantity == 0 {
                return Err(("quantity", "must be at least 1"));
            }
        }
        StrategyParams::Rsi(r) => {
            if r.period < 2 {
                return Err(("period", "must be at least 2 ticks"));
            }
            if !(pct(r.oversold) && pct(r.overbought) && r.oversold < r.overbought) {
                return Err(("oversold", "oversold < overbought, both between 0 and 100"));
            }
            if r.quantity == 0 {
                return Err(("quantity", "must be at least 1"));
            }
        }
        StrategyParams::SmaCrossover(s) => {
            if s.fast < 1 || s.slow <= s.fast {
                return Err(("fast", "need 1 <= fast < slow"));
            }
            if s.quantity == 0 {
                return Err(("quantity", "must be at least 1"));
            }
        }
        StrategyParams::EmaCrossover(s) => {
            if s.fast < 1 || s.slow <= s.fast {
                return Err(("fast", "need 1 <= fast < slow"));
            }
            if s.quantity == 0 {
                return Err(("quantity", "must be at least 1"));
            }
        }
    }
    Ok(())
}
