//! Price history and indicators, in decimals. Pure.

use std::collections::VecDeque;

use rust_decimal::{Decimal, MathematicalOps};

/// The last `capacity` prices of one instrument, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    prices: VecDeque<Decimal>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self {
            prices: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, price: Decimal) {
        if self.prices.len() == self.capacity {
            self.prices.pop_front();
        }
        self.prices.push_back(price);
    }

    pub fn len(&self) -> usize {
        self.prices.len()
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
