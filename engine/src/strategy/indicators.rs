//! Price history and indicators. Pure.
//!
//! The indicators (`sma`, `stddev`, `bollinger`, `rsi`) are defined in 28-digit decimals:
//! their values are what a strategy's signals carry, and what decides them. Recomputing
//! them on every tick is most of a backtest's time, so the strategies first ask the
//! shortcuts below ([`sma_order`], [`RsiShortcut`], [`BandShortcut`]) whether a comparison
//! is already decided by exact integer sums of the prices in fixed point (and, for the
//! bands and the RSI, by a double-precision value far enough from the threshold). A
//! shortcut answers only when the decimal arithmetic cannot answer otherwise; when it
//! cannot tell, the caller computes the decimal indicator. So the decisions are those of
//! the decimal indicators, tick for tick (property tests in `kinds` compare the strategies
//! with their all-decimal versions).

use std::cmp::Ordering;
use std::collections::VecDeque;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, MathematicalOps};

/// Prices in fixed point are integers in units of 10^-8.
pub const FIXED_SCALE: u32 = 8;
const FIXED_ONE: f64 = 1e8;

/// `d` in units of 10^-8, if that is exact and fits an `i64` (at most 8 decimals, below
/// about 9.2 × 10^10).
pub fn fixed(d: Decimal) -> Option<i64> {
    let scale = d.scale();
    if scale > FIXED_SCALE {
        return None;
    }
    let m = d.mantissa().checked_mul(10i128.pow(FIXED_SCALE - scale))?;
    i64::try_from(m).ok()
}

/// The last `capacity` prices of one instrument, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    prices: VecDeque<Decimal>,
    /// The same prices in fixed point (`None` where [`fixed`] has none).
    fixed: VecDeque<Option<i64>>,
    /// How many of `fixed` are `None`.
    inexact: usize,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self {
            prices: VecDeque::with_capacity(capacity.max(1)),
            fixed: VecDeque::with_capacity(capacity.max(1)),
            inexact: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, price: Decimal) {
        if self.prices.len() == self.capacity {
            self.prices.pop_front();
            if let Some(None) = self.fixed.pop_front() {
                self.inexact -= 1;
            }
        }
        self.prices.push_back(price);
        let f = fixed(price);
        if f.is_none() {
            self.inexact += 1;
        }
        self.fixed.push_back(f);
    }

    /// There are at least `n` prices (and `n > 0`): what the indicators over `n` prices need.
    pub fn has(&self, n: usize) -> bool {
        n > 0 && self.prices.len() >= n
    }

    /// The last `n` prices in fixed point, oldest first, if there are that many and every
    /// price kept has a fixed-point value.
    pub fn last_fixed(&self, n: usize) -> Option<impl Iterator<Item = i64> + '_> {
        (self.inexact == 0 && self.has(n)).then(|| {
            self.fixed
                .iter()
                .skip(self.fixed.len() - n)
                .flatten()
                .copied()
        })
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// How many prices it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The prices kept, oldest first.
    pub fn prices(&self) -> impl Iterator<Item = Decimal> + '_ {
        self.prices.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price `n` ticks before the latest (0 = the latest).
    pub fn back(&self, n: usize) -> Option<Decimal> {
        self.prices.len().checked_sub(n + 1).map(|i| self.prices[i])
    }

    /// The last `n` prices, oldest first, if there are that many.
    pub fn last(&self, n: usize) -> Option<impl Iterator<Item = Decimal> + '_> {
        (n > 0 && self.prices.len() >= n)
            .then(|| self.prices.iter().skip(self.prices.len() - n).copied())
    }
}

/// Simple moving average of the last `n` prices.
pub fn sma(h: &History, n: usize) -> Option<Decimal> {
    let sum: Decimal = h.last(n)?.sum();
    Some(sum / Decimal::from(n))
}

/// Population standard deviation of the last `n` prices.
pub fn stddev(h: &History, n: usize) -> Option<Decimal> {
    let mean = sma(h, n)?;
    let var: Decimal =
        h.last(n)?.map(|p| (p - mean) * (p - mean)).sum::<Decimal>() / Decimal::from(n);
    var.sqrt()
}

/// Bollinger bands (lower, middle, upper) over `n` prices, `k` deviations wide.
pub fn bollinger(h: &History, n: usize, k: Decimal) -> Option<(Decimal, Decimal, Decimal)> {
    let mid = sma(h, n)?;
    let sd = stddev(h, n)?;
    Some((mid - k * sd, mid, mid + k * sd))
}

/// RSI over the last `n` price changes (Cutler's: simple averages of gains and losses),
/// 0–100. 100 when there were no losses, 50 when the price did not move.
pub fn rsi(h: &History, n: usize) -> Option<Decimal> {
    let prices: Vec<Decimal> = h.last(n + 1)?.collect();
    let (mut gains, mut losses) = (Decimal::ZERO, Decimal::ZERO);
    for w in prices.windows(2) {
        let d = w[1] - w[0];
        if d > Decimal::ZERO {
            gains += d;
        } else {
            losses -= d;
        }
    }
    let hundred = Decimal::ONE_HUNDRED;
    Some(match (gains.is_zero(), losses.is_zero()) {
        (true, true) => Decimal::new(50, 0),
        (_, true) => hundred,
        _ => hundred - hundred / (Decimal::ONE + gains / losses),
    })
}

/// The sign of `sma(h, a) - sma(h, b)` when exact integer sums decide it: the two averages
/// differ (then by at least 10^-8 / (a·b), far more than a decimal division's rounding, as
/// long as `a·b` stays below 10^6). `None` when they are equal (how the two divisions
/// round then decides) or the window has no fixed-point values: compute the decimals.
pub fn sma_order(h: &History, a: usize, b: usize) -> Option<Ordering> {
    if a.checked_mul(b)? > 1_000_000 {
        return None;
    }
    let sum_a: i128 = h.last_fixed(a)?.map(i128::from).sum();
    let sum_b: i128 = h.last_fixed(b)?.map(i128::from).sum();
    // sum_a / a against sum_b / b, without dividing.
    match (sum_a * b as i128).cmp(&(sum_b * a as i128)) {
        Ordering::Equal => None,
        o => Some(o),
    }
}

/// `x` as the nearest double. The same value as `x as f64`, but one instruction rather
/// than a library call when `x` fits an `i64` (as sums and deviations of prices do).
fn float(x: i128) -> f64 {
    i64::try_from(x).map_or(x as f64, |x| x as f64)
}

/// `x` against `threshold` when `x` is known to within `tolerance`; `None` when closer.
fn call(x: f64, threshold: f64, tolerance: f64) -> Option<Ordering> {
    if x < threshold - tolerance {
        Some(Ordering::Less)
    } else if x > threshold + tolerance {
        Some(Ordering::Greater)
    } else {
        None
    }
}

/// A decimal threshold as a double (`NaN`, which decides nothing, if it has none).
pub fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

/// The RSI of the last `n` changes as exact integer gains and losses tell it: exactly, in
/// the cases [`rsi`] gives a round value (no move, no loss, no gain), otherwise as a double
/// within 10^-12 of the exact ratio `100 · gains / (gains + losses)`, which the decimal
/// formula gives to 25 digits.
#[derive(Debug, Clone, Copy)]
enum RsiValue {
    Exact(Decimal),
    Near(f64),
}

/// Compares the RSI of a window with thresholds, from integers when they decide it and
/// otherwise from [`rsi`] (computed once).
#[derive(Debug, Clone, Copy)]
pub struct RsiShortcut {
    n: usize,
    value: Option<RsiValue>,
    exact: Option<Decimal>,
}

impl RsiShortcut {
    /// The RSI of the last `n` changes of `h`; `None` if there are not `n + 1` prices.
    pub fn new(h: &History, n: usize) -> Option<Self> {
        if !h.has(n + 1) {
            return None;
        }
        let value = h.last_fixed(n + 1).map(|mut prices| {
            let (mut gains, mut losses) = (0i128, 0i128);
            let mut before = prices.next().unwrap_or_default();
            for p in prices {
                let d = i128::from(p) - i128::from(before);
                if d > 0 {
                    gains += d;
                } else {
                    losses -= d;
                }
                before = p;
            }
            match (gains == 0, losses == 0) {
                (true, true) => RsiValue::Exact(Decimal::new(50, 0)),
                (_, true) => RsiValue::Exact(Decimal::ONE_HUNDRED),
                (true, _) => RsiValue::Exact(Decimal::ZERO),
                _ => RsiValue::Near(100.0 * float(gains) / float(gains + losses)),
            }
        });
        Some(Self {
            n,
            value,
            exact: None,
        })
    }

    /// The RSI against `threshold` (`threshold_f` is [`to_f64`] of it).
    pub fn cmp(&mut self, h: &History, threshold: Decimal, threshold_f: f64) -> Option<Ordering> {
        let called = match self.value {
            Some(RsiValue::Exact(v)) => Some(v.cmp(&threshold)),
            Some(RsiValue::Near(v)) => call(v, threshold_f, 1e-9 * (1.0 + threshold_f.abs())),
            None => None,
        };
        match called {
            Some(o) => Some(o),
            None => Some(self.value(h)?.cmp(&threshold)),
        }
    }

    /// The RSI in decimals: [`rsi`].
    pub fn value(&mut self, h: &History) -> Option<Decimal> {
        if self.exact.is_none() {
            self.exact = rsi(h, self.n);
        }
        self.exact
    }
}

/// Compares the latest price with the Bollinger bands of a window, from doubles when they
/// are far enough from the band and otherwise from [`bollinger`] (computed once).
#[derive(Debug, Clone, Copy)]
pub struct BandShortcut {
    n: usize,
    k: Decimal,
    /// Lower and upper band in doubles, the price, and how far off they may be.
    near: Option<(f64, f64, f64, f64)>,
    exact: Option<(Decimal, Decimal, Decimal)>,
}

impl BandShortcut {
    /// The bands over the last `n` prices of `h`, `k` deviations wide (`k_f` is [`to_f64`]
    /// of `k`); `None` if there are not `n` prices.
    pub fn new(h: &History, n: usize, k: Decimal, k_f: f64) -> Option<Self> {
        if !h.has(n) {
            return None;
        }
        let near = (|| {
            let sum: i128 = h.last_fixed(n)?.map(i128::from).sum();
            let nn = n as i128;
            // n·p − sum is exact; the variance is Σ (n·p − sum)² / n³, in 10^-16 units.
            let squares: f64 = h
                .last_fixed(n)?
                .map(|p| {
                    let d = float(nn * i128::from(p) - sum);
                    d * d
                })
                .sum();
            let price = h.last_fixed(1)?.next()? as f64 / FIXED_ONE;
            let nf = n as f64;
            let mid = float(sum) / nf / FIXED_ONE;
            let sd = (squares / (nf * nf * nf)).sqrt() / FIXED_ONE;
            let width = k_f * sd;
            let tolerance = 1e-9 * (mid.abs() + width.abs() + price.abs()) + 1e-12;
            width
                .is_finite()
                .then_some((mid - width, mid + width, price, tolerance))
        })();
        Some(Self {
            n,
            k,
            near,
            exact: None,
        })
    }

    /// `price` (the latest of the window) against the lower band.
    pub fn price_vs_lower(&mut self, h: &History, price: Decimal) -> Option<Ordering> {
        if let Some((lower, _, p, tolerance)) = self.near
            && let Some(o) = call(p, lower, tolerance)
        {
            return Some(o);
        }
        Some(price.cmp(&self.bands(h)?.0))
    }

    /// `price` (the latest of the window) against the upper band.
    pub fn price_vs_upper(&mut self, h: &History, price: Decimal) -> Option<Ordering> {
        if let Some((_, upper, p, tolerance)) = self.near
            && let Some(o) = call(p, upper, tolerance)
        {
            return Some(o);
        }
        Some(price.cmp(&self.bands(h)?.2))
    }

    /// The bands in decimals: [`bollinger`].
    pub fn bands(&mut self, h: &History) -> Option<(Decimal, Decimal, Decimal)> {
        if self.exact.is_none() {
            self.exact = bollinger(h, self.n, self.k);
        }
        self.exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hist(prices: &[i64]) -> History {
        let mut h = History::new(prices.len());
        for p in prices {
            h.push(Decimal::from(*p));
        }
        h
    }

    #[test]
    fn moving_average_and_bands_by_hand() {
        let h = hist(&[2, 4, 4, 4, 5, 5, 7, 9]);
        assert_eq!(sma(&h, 8), Some(Decimal::from(5)));
        assert_eq!(stddev(&h, 8), Some(Decimal::from(2)));
        assert_eq!(
            bollinger(&h, 8, Decimal::from(2)),
            Some((Decimal::from(1), Decimal::from(5), Decimal::from(9)))
        );
        assert_eq!(sma(&h, 9), None, "not enough history");
    }

    #[test]
    fn rsi_by_hand() {
        // Changes: +2, -1, +1, -2 → gains 3, losses 3 → RS 1 → RSI 50.
        assert_eq!(
            rsi(&hist(&[10, 12, 11, 12, 10]), 4),
            Some(Decimal::from(50))
        );
        assert_eq!(rsi(&hist(&[1, 2, 3]), 2), Some(Decimal::ONE_HUNDRED));
        assert_eq!(rsi(&hist(&[3, 2, 1]), 2), Some(Decimal::ZERO));
        assert_eq!(rsi(&hist(&[5, 5, 5]), 2), Some(Decimal::from(50)));
    }

    fn edge_price() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            6 => (97i64..104).prop_map(|m| Decimal::new(m, 0)),
            3 => (99_000i64..101_000).prop_map(|m| Decimal::new(m, 3)),
            1 => (1i64..1_000_000_000_000, 9u32..=12).prop_map(|(m, s)| Decimal::new(m, s)),
            1 => (90_000_000_000i64..100_000_000_000).prop_map(|m| Decimal::new(m, 0)),
            1 => Just(Decimal::ZERO),
        ]
    }

    #[test]
    fn a_double_of_an_integer_is_the_nearest_either_way() {
        for x in [
            0i128,
            -7,
            1 << 53,
            (1 << 53) + 1,
            i64::MAX as i128,
            i64::MAX as i128 + 1,
            -(1 << 100),
        ] {
            assert_eq!(float(x), x as f64, "{x}");
        }
    }

    #[test]
    fn fixed_point_is_exact_or_absent() {
        assert_eq!(fixed(Decimal::new(250_005, 2)), Some(250_005_000_000));
        assert_eq!(fixed(Decimal::new(1, 8)), Some(1));
        assert_eq!(fixed(Decimal::new(1, 9)), None, "9 decimals");
        assert_eq!(fixed(Decimal::from(100_000_000_000i64)), None, "too large");
        let mut h = History::new(2);
        h.push(Decimal::new(1, 9));
        h.push(Decimal::ONE);
        assert!(h.last_fixed(1).is_none(), "an inexact price in the window");
        h.push(Decimal::TWO);
        assert_eq!(
            h.last_fixed(2).map(|p| p.collect::<Vec<_>>()),
            Some(vec![100_000_000, 200_000_000]),
            "the inexact price left the window"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Every comparison the shortcuts answer is the decimal indicators' own, on every
        /// window of a price series full of ties and near-ties.
        #[test]
        fn shortcuts_answer_as_the_decimal_indicators(
            prices in proptest::collection::vec(edge_price(), 1..120),
            a in 1usize..12,
            b in 1usize..25,
            k in (0i64..40).prop_map(|m| Decimal::new(m, 1)),
            threshold in prop_oneof![Just(Decimal::from(30)), Just(Decimal::from(50)), (0i64..10_000).prop_map(|m| Decimal::new(m, 2))],
        ) {
            let mut h = History::new(a.max(b) + 1);
            for p in prices {
                h.push(p);
                if let Some(o) = sma_order(&h, a, b) {
                    let (fa, fb) = (sma(&h, a).unwrap(), sma(&h, b).unwrap());
                    prop_assert_eq!(o, (fa - fb).cmp(&Decimal::ZERO));
                }
                if let Some(mut r) = RsiShortcut::new(&h, a) {
                    let exact = rsi(&h, a).unwrap();
                    prop_assert_eq!(r.cmp(&h, threshold, to_f64(threshold)), Some(exact.cmp(&threshold)));
                } else {
                    prop_assert!(rsi(&h, a).is_none());
                }
                if let Some(mut bands) = BandShortcut::new(&h, b, k, to_f64(k)) {
                    let (lower, _, upper) = bollinger(&h, b, k).unwrap();
                    prop_assert_eq!(bands.price_vs_lower(&h, p), Some(p.cmp(&lower)));
                    prop_assert_eq!(bands.price_vs_upper(&h, p), Some(p.cmp(&upper)));
                } else {
                    prop_assert!(bollinger(&h, b, k).is_none());
                }
            }
        }
    }

    proptest! {
        #[test]
        fn indicators_stay_in_range(prices in proptest::collection::vec(1i64..100_000, 2..60)) {
            let h = hist(&prices);
            let n = prices.len() - 1;
            let r = rsi(&h, n).unwrap();
            prop_assert!(r >= Decimal::ZERO && r <= Decimal::ONE_HUNDRED);
            let (lo, mid, hi) = bollinger(&h, n, Decimal::from(2)).unwrap();
            prop_assert!(lo <= mid && mid <= hi);
            let min = prices[prices.len() - n..].iter().min().copied().map(Decimal::from).unwrap();
            let max = prices[prices.len() - n..].iter().max().copied().map(Decimal::from).unwrap();
            prop_assert!(mid >= min && mid <= max);
        }
    }
}
