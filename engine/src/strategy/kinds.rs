//! The built-in strategies. Each keeps its state per instrument and signals only when its
//! view changes (a new BUY after a BUY would just pile on).
//!
//! `mean_reversion`, `rsi` and `sma_crossover` decide by comparing decimal indicators
//! (`indicators`); they take each comparison from the indicators' integer shortcuts where
//! those settle it, so they decide exactly as the all-decimal versions (kept as the
//! tests' oracle, `oracle` below) at a fraction of the cost.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::FastMap;

use alpha_panda_config::{
    EmaCrossoverParams, MeanReversionParams, MomentumParams, RsiParams, SmaCrossoverParams,
};
use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{Decimal, InstrumentToken, Quantity, Side};
use serde_json::Value;

use super::indicators::{BandShortcut, History, RsiShortcut, sma, sma_order, to_f64};
use super::{Decision, Strategy};

pub(super) fn decision(
    tick: &MarketTick,
    side: Side,
    quantity: u64,
    metadata: BTreeMap<String, Value>,
) -> Option<Decision> {
    Some(Decision {
        side,
        quantity: Quantity::new(quantity).ok()?,
        price: tick.last_price,
        confidence: None,
        metadata,
    })
}

pub(super) fn meta(pairs: &[(&str, Decimal)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                Value::String(v.round_dp(6).normalize().to_string()),
            )
        })
        .collect()
}

#[derive(Default)]
struct Track {
    history: Option<History>,
    last_side: Option<Side>,
    /// `rsi`: the last RSI against `oversold` and against `overbought`.
    last_rsi: Option<(Ordering, Ordering)>,
    /// `sma_crossover`: the sign of the last fast − slow.
    last_sign: Option<Ordering>,
}

/// The history in `slot`, made with `capacity` on first use.
fn history(slot: &mut Option<History>, capacity: usize) -> &mut History {
    slot.get_or_insert_with(|| History::new(capacity))
}

impl Track {
    /// `want` if it differs from what was last signalled.
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

/// A [`Track`] as a checkpoint keeps it: the history's capacity and prices (oldest first),
/// and what was last signalled or seen.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedTrack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<(usize, Vec<Decimal>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rsi: Option<(i8, i8)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sign: Option<i8>,
}

fn ordering_of(n: i8) -> Result<Ordering, String> {
    match n {
        -1 => Ok(Ordering::Less),
        0 => Ok(Ordering::Equal),
        1 => Ok(Ordering::Greater),
        _ => Err(format!("{n} is not an ordering (-1, 0 or 1)")),
    }
}

/// Per instrument, what the strategy remembers.
fn save_tracks(tracks: &FastMap<InstrumentToken, Track>) -> Value {
    let saved: BTreeMap<u32, SavedTrack> = tracks
        .iter()
        .map(|(token, t)| {
            (
                token.0,
                SavedTrack {
                    history: t
                        .history
                        .as_ref()
                        .map(|h| (h.capacity(), h.prices().collect())),
                    side: t.last_side,
                    rsi: t.last_rsi.map(|(a, b)| (a as i8, b as i8)),
                    sign: t.last_sign.map(|o| o as i8),
                },
            )
        })
        .collect();
    // Integer keys, decimals as strings and small integers always serialize.
    serde_json::to_value(saved).unwrap_or_else(|e| unreachable!("tracks serialize: {e}"))
}

fn restore_tracks(saved: Value) -> Result<FastMap<InstrumentToken, Track>, String> {
    let saved: BTreeMap<u32, SavedTrack> =
        serde_json::from_value(saved).map_err(|e| e.to_string())?;
    saved
        .into_iter()
        .map(|(token, s)| {
            let history = s.history.map(|(capacity, prices)| {
                let mut h = History::new(capacity);
                for p in prices {
                    h.push(p);
                }
                h
            });
            let rsi = match s.rsi {
                Some((a, b)) => Some((ordering_of(a)?, ordering_of(b)?)),
                None => None,
            };
            let track = Track {
                history,
                last_side: s.side,
                last_rsi: rsi,
                last_sign: s.sign.map(ordering_of).transpose()?,
            };
            Ok((InstrumentToken(token), track))
        })
        .collect::<Result<_, String>>()
        .map_err(|e| format!("instrument state: {e}"))
}

/// `save` and `restore` of a strategy kind whose state is its `tracks`.
macro_rules! tracks_state {
    () => {
        fn save(&self) -> Value {
            save_tracks(&self.tracks)
        }

        fn restore(&mut self, saved: Value) -> Result<(), String> {
            self.tracks = restore_tracks(saved)?;
            Ok(())
        }
    };
}

pub struct Momentum {
    p: MomentumParams,
    tracks: FastMap<InstrumentToken, Track>,
}

impl Momentum {
    pub fn new(p: MomentumParams) -> Self {
        Self {
            p,
            tracks: FastMap::default(),
        }
    }
}

impl Strategy for Momentum {
    tracks_state!();

    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = history(&mut t.history, self.p.lookback + 1);
        h.push(tick.last_price.get());
        let then = h.back(self.p.lookback)?;
        if then.is_zero() {
            return None;
        }
        let change = (tick.last_price.get() - then) / then;
        let want = if change > self.p.threshold {
            Some(Side::Buy)
        } else if change < -self.p.threshold {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        decision(tick, side, self.p.quantity, meta(&[("momentum", change)]))
    }
}

pub struct MeanReversion {
    p: MeanReversionParams,
    k: f64,
    oversold: f64,
    overbought: f64,
    tracks: FastMap<InstrumentToken, Track>,
}

impl MeanReversion {
    pub fn new(p: MeanReversionParams) -> Self {
        Self {
            k: to_f64(p.bollinger_k),
            oversold: to_f64(p.oversold),
            overbought: to_f64(p.overbought),
            p,
            tracks: FastMap::default(),
        }
    }
}

impl Strategy for MeanReversion {
    tracks_state!();

    /// BUY below the lower band while the RSI is below `oversold`, SELL above the upper
    /// band while it is above `overbought`: the comparisons of the decimal indicators,
    /// taken from their shortcuts where those decide them (see `indicators`).
    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let cap = self.p.bollinger_period.max(self.p.rsi_period + 1);
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = history(&mut t.history, cap);
        let price = tick.last_price.get();
        h.push(price);
        let mut bands = BandShortcut::new(h, self.p.bollinger_period, self.p.bollinger_k, self.k)?;
        let mut r = RsiShortcut::new(h, self.p.rsi_period)?;
        let want = if r.cmp(h, self.p.oversold, self.oversold)? == Ordering::Less
            && bands.price_vs_lower(h, price)? == Ordering::Less
        {
            Some(Side::Buy)
        } else if r.cmp(h, self.p.overbought, self.overbought)? == Ordering::Greater
            && bands.price_vs_upper(h, price)? == Ordering::Greater
        {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        let h = history(&mut t.history, cap);
        let (lower, _, upper) = bands.bands(h)?;
        let r = r.value(h)?;
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
    oversold: f64,
    overbought: f64,
    tracks: FastMap<InstrumentToken, Track>,
}

impl Rsi {
    pub fn new(p: RsiParams) -> Self {
        Self {
            oversold: to_f64(p.oversold),
            overbought: to_f64(p.overbought),
            p,
            tracks: FastMap::default(),
        }
    }
}

impl Strategy for Rsi {
    tracks_state!();

    /// BUY when the RSI falls below `oversold` (from at or above it), SELL when it rises
    /// above `overbought`: the decimal RSI's comparisons, from the shortcut where it decides
    /// them.
    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = history(&mut t.history, self.p.period + 1);
        h.push(tick.last_price.get());
        let mut r = RsiShortcut::new(h, self.p.period)?;
        let now = (
            r.cmp(h, self.p.oversold, self.oversold)?,
            r.cmp(h, self.p.overbought, self.overbought)?,
        );
        let before = t.last_rsi.replace(now)?;
        let want = if before.0 != Ordering::Less && now.0 == Ordering::Less {
            Some(Side::Buy)
        } else if before.1 != Ordering::Greater && now.1 == Ordering::Greater {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        let now = r.value(history(&mut t.history, self.p.period + 1))?;
        decision(tick, side, self.p.quantity, meta(&[("rsi", now)]))
    }
}

pub struct SmaCrossover {
    p: SmaCrossoverParams,
    tracks: FastMap<InstrumentToken, Track>,
}

impl SmaCrossover {
    pub fn new(p: SmaCrossoverParams) -> Self {
        Self {
            p,
            tracks: FastMap::default(),
        }
    }
}

impl Strategy for SmaCrossover {
    tracks_state!();

    /// BUY when the fast SMA crosses above the slow one, SELL when it crosses below: the
    /// sign of the decimal difference, from exact integer sums where they decide it.
    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let t = self.tracks.entry(tick.instrument_token).or_default();
        let h = history(&mut t.history, self.p.slow);
        h.push(tick.last_price.get());
        if !h.has(self.p.fast) || !h.has(self.p.slow) {
            return None;
        }
        let sign = match sma_order(h, self.p.fast, self.p.slow) {
            Some(o) => o,
            None => (sma(h, self.p.fast)? - sma(h, self.p.slow)?).cmp(&Decimal::ZERO),
        };
        let before = t.last_sign.replace(sign)?;
        let want = if before != Ordering::Greater && sign == Ordering::Greater {
            Some(Side::Buy)
        } else if before != Ordering::Less && sign == Ordering::Less {
            Some(Side::Sell)
        } else {
            None
        };
        let side = t.change(want)?;
        let h = history(&mut t.history, self.p.slow);
        let (fast, slow) = (sma(h, self.p.fast)?, sma(h, self.p.slow)?);
        decision(
            tick,
            side,
            self.p.quantity,
            meta(&[("fast_sma", fast), ("slow_sma", slow)]),
        )
    }
}

/// EMAs are kept in decimal fixed point: integers in units of 10^-12 (`i128`), so an update
/// is integer arithmetic rather than 28-digit decimal arithmetic. `alpha = 2 / (n + 1)` to
/// 12 decimal places, each step rounded toward zero to 12 places; prices with more than 12
/// decimals are cut to 12.
const EMA_SCALE: u32 = 12;
const EMA_ONE: i128 = 1_000_000_000_000;

fn to_fixed(d: Decimal) -> i128 {
    let (m, s) = (d.mantissa(), d.scale());
    if s <= EMA_SCALE {
        m.saturating_mul(10i128.pow(EMA_SCALE - s))
    } else {
        m / 10i128.pow(s - EMA_SCALE)
    }
}

fn from_fixed(v: i128) -> Decimal {
    Decimal::try_from_i128_with_scale(v, EMA_SCALE).unwrap_or_default()
}

/// One step of an EMA in fixed point.
fn ema_step(ema: i128, price: i128, alpha: i128) -> i128 {
    ema.saturating_add(div_by_ema_one(
        alpha.saturating_mul(price.saturating_sub(ema)),
    ))
}

/// `x / EMA_ONE`, rounded toward zero as `/` rounds, without `i128` division (a library
/// call of a few dozen instructions per limb): 10^12 = 2^12 · 5^12, so a shift, then a
/// long division by 5^12 in 32-bit limbs, each step a `u64` division by a constant (which
/// the compiler makes a multiplication).
fn div_by_ema_one(x: i128) -> i128 {
    const FIVE_POW_12: u64 = 244_140_625;
    let m = x.unsigned_abs() >> 12;
    let (mut q, mut r) = (0u128, 0u64);
    for shift in [96u32, 64, 32, 0] {
        let limb = ((m >> shift) as u64) & 0xffff_ffff;
        let cur = (r << 32) | limb;
        q = (q << 32) | u128::from(cur / FIVE_POW_12);
        r = cur % FIVE_POW_12;
    }
    // |x| / 10^12 < 2^88: it fits, and so does its negation.
    let q = q as i128;
    if x < 0 { -q } else { q }
}

/// The fast and slow EMAs of one instrument and the ticks it has had. Saved in a
/// checkpoint with the EMAs as decimal strings of their fixed-point integers.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Emas {
    #[serde(with = "i128_text")]
    fast: i128,
    #[serde(with = "i128_text")]
    slow: i128,
    ticks: usize,
    last_side: Option<Side>,
}

/// An `i128` as a JSON string: JSON numbers are not read back beyond 64 bits.
mod i128_text {
    pub fn serialize<S: serde::Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub struct EmaCrossover {
    p: EmaCrossoverParams,
    alpha_fast: i128,
    alpha_slow: i128,
    tracks: FastMap<InstrumentToken, Emas>,
}

impl EmaCrossover {
    pub fn new(p: EmaCrossoverParams) -> Self {
        let alpha = |n: usize| 2 * EMA_ONE / (n as i128 + 1);
        Self {
            alpha_fast: alpha(p.fast),
            alpha_slow: alpha(p.slow),
            p,
            tracks: FastMap::default(),
        }
    }
}

impl Strategy for EmaCrossover {
    fn save(&self) -> Value {
        let saved: BTreeMap<u32, Emas> = self.tracks.iter().map(|(t, e)| (t.0, *e)).collect();
        // Integer keys and strings always serialize.
        serde_json::to_value(saved).unwrap_or_else(|e| unreachable!("EMAs serialize: {e}"))
    }

    fn restore(&mut self, saved: Value) -> Result<(), String> {
        let saved: BTreeMap<u32, Emas> =
            serde_json::from_value(saved).map_err(|e| format!("instrument state: {e}"))?;
        self.tracks = saved
            .into_iter()
            .map(|(t, e)| (InstrumentToken(t), e))
            .collect();
        Ok(())
    }

    fn on_tick(&mut self, tick: &MarketTick) -> Option<Decision> {
        let price = to_fixed(tick.last_price.get());
        let t = self.tracks.entry(tick.instrument_token).or_insert(Emas {
            fast: price,
            slow: price,
            ticks: 0,
            last_side: None,
        });
        if t.ticks > 0 {
            t.fast = ema_step(t.fast, price, self.alpha_fast);
            t.slow = ema_step(t.slow, price, self.alpha_slow);
        }
        t.ticks = t.ticks.saturating_add(1);
        if t.ticks < self.p.slow {
            return None;
        }
        let want = match t.fast.cmp(&t.slow) {
            std::cmp::Ordering::Greater => Side::Buy,
            std::cmp::Ordering::Less => Side::Sell,
            std::cmp::Ordering::Equal => return None,
        };
        if t.last_side == Some(want) {
            return None;
        }
        t.last_side = Some(want);
        let (fast, slow) = (from_fixed(t.fast), from_fixed(t.slow));
        decision(
            tick,
            want,
            self.p.quantity,
            meta(&[("fast_ema", fast), ("slow_ema", slow)]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alpha_panda_core::{Price, Timestamp};
    use proptest::prelude::{prop_assert_eq, prop_assert_ne, proptest};

    use super::Strategy;

    fn tick(token: u32, price: i64, i: i64) -> MarketTick {
        MarketTick::new(
            InstrumentToken(token),
            Price::new(Decimal::from(price)).unwrap(),
            Timestamp::from_unix_millis(1_705_290_000_000 + i * 1000).unwrap(),
        )
    }

    fn run(s: &mut dyn Strategy, token: u32, prices: &[i64]) -> Vec<(usize, Side)> {
        prices
            .iter()
            .enumerate()
            .filter_map(|(i, p)| s.on_tick(&tick(token, *p, i as i64)).map(|d| (i, d.side)))
            .collect()
    }

    #[test]
    fn momentum_buys_a_rise_sells_a_fall_and_does_not_repeat() {
        let mut m = Momentum::new(MomentumParams {
            lookback: 2,
            threshold: Decimal::new(1, 2), // 1 %
            quantity: 5,
        });
        // 100 → 102 over two ticks is +2 %: BUY at tick 2; still rising: no repeat; then a
        // fall of more than 1 % over two ticks: SELL.
        let got = run(&mut m, 1, &[100, 101, 102, 104, 105, 103, 101]);
        assert_eq!(got, vec![(2, Side::Buy), (6, Side::Sell)]);
    }

    #[test]
    fn sma_crossover_signals_on_crossings_only() {
        let mut s = SmaCrossover::new(SmaCrossoverParams {
            fast: 2,
            slow: 3,
            quantity: 1,
        });
        let got = run(&mut s, 1, &[10, 10, 10, 12, 14, 14, 10, 8]);
        assert_eq!(got, vec![(3, Side::Buy), (6, Side::Sell)]);
    }

    #[test]
    fn ema_crossover_waits_for_slow_ticks_then_follows_the_emas_by_hand() {
        let mut e = EmaCrossover::new(EmaCrossoverParams {
            fast: 1,
            slow: 3,
            quantity: 1,
        });
        // alpha fast = 1 (the price itself), alpha slow = 0.5, seeded at 10.
        // 10: slow 10; 12: slow 11; 14: slow 12.5 (3rd tick: 14 > 12.5 → BUY);
        // 13: slow 12.75, still BUY → nothing; 11: slow 11.875 < ... fast 11 → SELL;
        // 12: slow 11.9375, fast 12 → BUY.
        let got = run(&mut e, 1, &[10, 12, 14, 13, 11, 12]);
        assert_eq!(got, vec![(2, Side::Buy), (4, Side::Sell), (5, Side::Buy)]);
        // Nothing before `slow` ticks, even if the EMAs already differ.
        let mut e = EmaCrossover::new(EmaCrossoverParams {
            fast: 1,
            slow: 3,
            quantity: 1,
        });
        assert_eq!(run(&mut e, 2, &[10, 20]), vec![]);
    }

    #[test]
    fn ema_fixed_point_follows_decimal_arithmetic_to_12_places() {
        assert_eq!(to_fixed(Decimal::new(250_005, 2)), 2_500_050_000_000_000);
        assert_eq!(from_fixed(2_500_050_000_000_000), Decimal::new(250_005, 2));
        // alpha 2/11 = 0.181818181818; 100 → 111: 100 + 0.181818181818 × 11 = 102.0
        let alpha = 2 * EMA_ONE / 11;
        let next = ema_step(
            to_fixed(Decimal::from(100)),
            to_fixed(Decimal::from(111)),
            alpha,
        );
        assert_eq!(
            from_fixed(next),
            "101.999999999998".parse::<Decimal>().unwrap()
        );
    }

    #[test]
    fn ema_crossover_seeds_each_instrument_with_its_own_first_price() {
        let p = EmaCrossoverParams {
            fast: 2,
            slow: 4,
            quantity: 1,
        };
        let mut interleaved = EmaCrossover::new(p.clone());
        let mut alone = EmaCrossover::new(p);
        let a = [100, 101, 103, 100, 97, 95, 99, 104];
        let mut got = Vec::new();
        for (i, price) in a.iter().enumerate() {
            if let Some(d) = interleaved.on_tick(&tick(1, *price, i as i64)) {
                got.push((i, d.side));
            }
            interleaved.on_tick(&tick(2, 5_000 - *price, i as i64));
        }
        assert_eq!(got, run(&mut alone, 1, &a));
    }

    #[test]
    fn rsi_buys_on_entering_oversold_and_sells_on_entering_overbought() {
        let mut r = Rsi::new(RsiParams {
            period: 2,
            oversold: Decimal::from(30),
            overbought: Decimal::from(70),
            quantity: 1,
        });
        // RSI(2): 10,11,12 → 100; 11 → 50 (up 1, down 1); 10 → 0 (crosses below 30): BUY;
        // 11, 12 → 50 then 100 (crosses above 70): SELL.
        let got = run(&mut r, 1, &[10, 11, 12, 11, 10, 11, 12]);
        assert_eq!(got, vec![(4, Side::Buy), (6, Side::Sell)]);
    }

    #[test]
    fn mean_reversion_buys_a_drop_below_the_band() {
        let mut m = MeanReversion::new(MeanReversionParams {
            bollinger_period: 5,
            bollinger_k: Decimal::ONE,
            rsi_period: 3,
            oversold: Decimal::from(30),
            overbought: Decimal::from(70),
            quantity: 1,
        });
        let got = run(&mut m, 1, &[100, 101, 100, 101, 100, 97, 94]);
        assert_eq!(got.first(), Some(&(5, Side::Buy)));
        let got = run(&mut m, 2, &[100, 99, 100, 99, 100, 103, 106]);
        assert_eq!(got.first(), Some(&(5, Side::Sell)));
    }

    #[test]
    fn history_is_kept_per_instrument() {
        let p = MomentumParams {
            lookback: 2,
            threshold: Decimal::new(1, 2),
            quantity: 1,
        };
        let mut interleaved = Momentum::new(p.clone());
        let mut a_alone = Momentum::new(p);
        let a = [100, 101, 103, 100, 97];
        let b = [50, 40, 60, 45, 70];
        let mut got_a = Vec::new();
        for i in 0..a.len() {
            if let Some(d) = interleaved.on_tick(&tick(1, a[i], i as i64)) {
                got_a.push((i, d.side));
            }
            interleaved.on_tick(&tick(2, b[i], i as i64));
        }
        assert_eq!(
            got_a,
            run(&mut a_alone, 1, &a),
            "another instrument's ticks do not leak in"
        );
    }

    /// Prices that make the shortcuts' hard cases frequent: a narrow band of whole numbers
    /// (flat stretches, RSI exactly at 30 or 50, equal averages), cents, and now and then a
    /// price with more than 8 decimals or too large for fixed point (the decimal path).
    fn edge_prices() -> impl proptest::strategy::Strategy<Value = Vec<(u32, Decimal)>> {
        use proptest::prelude::*;
        let price = prop_oneof![
            6 => (97i64..104).prop_map(|m| Decimal::new(m, 0)),
            3 => (99_000i64..101_000).prop_map(|m| Decimal::new(m, 3)),
            1 => (1i64..1_000_000_000_000, 9u32..=12).prop_map(|(m, s)| Decimal::new(m, s)),
            1 => (90_000_000_000i64..100_000_000_000).prop_map(|m| Decimal::new(m, 0)),
            1 => Just(Decimal::ZERO),
        ];
        proptest::collection::vec((1u32..=2, price), 1..400)
    }

    fn decisions(s: &mut dyn Strategy, ticks: &[(u32, Decimal)]) -> Vec<Option<Decision>> {
        ticks
            .iter()
            .enumerate()
            .map(|(i, (token, price))| {
                s.on_tick(&MarketTick::new(
                    InstrumentToken(*token),
                    Price::new(*price).unwrap(),
                    Timestamp::from_unix_millis(1_705_290_000_000 + i as i64 * 250).unwrap(),
                ))
            })
            .collect()
    }

    fn threshold() -> impl proptest::strategy::Strategy<Value = Decimal> {
        proptest::prop_oneof![
            proptest::prelude::Just(Decimal::from(30)),
            proptest::prelude::Just(Decimal::from(50)),
            proptest::prelude::Just(Decimal::from(70)),
            (0i64..10_000).prop_map(|m| Decimal::new(m, 2)),
        ]
    }

    use proptest::strategy::Strategy as _;

    proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]

        /// `mean_reversion` decides exactly as its all-decimal version, tick for tick
        /// (side, price, and the indicator values in its metadata).
        #[test]
        fn mean_reversion_decides_as_the_all_decimal_version(
            ticks in edge_prices(),
            bollinger_period in 1usize..25,
            k in (0i64..40).prop_map(|m| Decimal::new(m, 1)),
            rsi_period in 1usize..16,
            oversold in threshold(),
            overbought in threshold(),
        ) {
            let p = MeanReversionParams { bollinger_period, bollinger_k: k, rsi_period, oversold, overbought, quantity: 1 };
            prop_assert_eq!(
                decisions(&mut MeanReversion::new(p.clone()), &ticks),
                decisions(&mut crate::strategy::oracle::MeanReversion::new(p), &ticks)
            );
        }

        /// `rsi` decides exactly as its all-decimal version, tick for tick.
        #[test]
        fn rsi_decides_as_the_all_decimal_version(
            ticks in edge_prices(),
            period in 1usize..16,
            oversold in threshold(),
            overbought in threshold(),
        ) {
            let p = RsiParams { period, oversold, overbought, quantity: 1 };
            prop_assert_eq!(
                decisions(&mut Rsi::new(p.clone()), &ticks),
                decisions(&mut crate::strategy::oracle::Rsi::new(p), &ticks)
            );
        }

        /// `sma_crossover` decides exactly as its all-decimal version, tick for tick.
        #[test]
        fn sma_crossover_decides_as_the_all_decimal_version(
            ticks in edge_prices(),
            fast in 1usize..12,
            slow in 1usize..32,
        ) {
            let p = SmaCrossoverParams { fast, slow, quantity: 1 };
            prop_assert_eq!(
                decisions(&mut SmaCrossover::new(p.clone()), &ticks),
                decisions(&mut crate::strategy::oracle::SmaCrossover::new(p), &ticks)
            );
        }
    }

    proptest! {
        /// The EMA's division by 10^12 rounds exactly as `i128` division does, over the
        /// whole range (the extremes included) and the range of EMA steps.
        #[test]
        fn the_fixed_point_division_equals_i128_division(
            x in proptest::prop_oneof![
                proptest::prelude::any::<i128>(),
                -(1i128 << 100)..(1i128 << 100),
                -(10i128.pow(15))..10i128.pow(15),
                proptest::prelude::Just(i128::MIN),
                proptest::prelude::Just(i128::MAX),
                proptest::prelude::Just(-EMA_ONE),
                proptest::prelude::Just(EMA_ONE - 1),
            ]
        ) {
            prop_assert_eq!(div_by_ema_one(x), x / EMA_ONE);
        }

        /// Deterministic: the same ticks give the same decisions; and never two of the same
        /// side in a row per instrument.
        #[test]
        fn strategies_are_deterministic_and_alternate(prices in proptest::collection::vec(90i64..110, 1..200)) {
            let make = || -> Vec<Box<dyn Strategy>> { vec![
                Box::new(Momentum::new(MomentumParams::default())),
                Box::new(MeanReversion::new(MeanReversionParams::default())),
                Box::new(Rsi::new(RsiParams::default())),
                Box::new(SmaCrossover::new(SmaCrossoverParams::default())),
                Box::new(EmaCrossover::new(EmaCrossoverParams::default())),
            ]};
            for (mut a, mut b) in make().into_iter().zip(make()) {
                let ra = run(a.as_mut(), 7, &prices);
                prop_assert_eq!(&ra, &run(b.as_mut(), 7, &prices));
                for w in ra.windows(2) {
                    prop_assert_ne!(w[0].1, w[1].1);
                }
            }
        }
    }
}
