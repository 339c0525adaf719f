//! Market data sources. The synthetic feed: a seeded geometric random walk per instrument,
//! deterministic for its seed, prices on NSE's 0.05 tick grid.

use alpha_panda_config::SyntheticFeed as SyntheticSettings;
use alpha_panda_core::events::{MarketTick, TickMode};
use alpha_panda_core::{Decimal, InstrumentToken, Price, Timestamp};

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const TICK_SIZE: Decimal = Decimal::from_parts(5, 0, 0, false, 2); // 0.05

fn on_grid(p: f64) -> Decimal {
    let d = Decimal::try_from(p).unwrap_or(TICK_SIZE);
    ((d / TICK_SIZE).round() * TICK_SIZE).max(TICK_SIZE)
}

pub struct SyntheticFeed {
    rng: SplitMix64,
    volatility: f64,
    instruments: Vec<(InstrumentToken, String, Decimal)>,
}

impl SyntheticFeed {
    pub fn new(s: &SyntheticSettings) -> Self {
        Self {
            rng: SplitMix64::new(s.seed),
            volatility: s.volatility,
            instruments: s
                .instruments
                .iter()
                .map(|i| (i.instrument_token, i.symbol.clone(), i.start_price))
                .collect(),
        }
    }

    /// One tick per instrument at `ts`, each price one random-walk step from the last.
    pub fn next_ticks(&mut self, ts: Timestamp) -> Vec<MarketTick> {
        let mut out = Vec::with_capacity(self.instruments.len());
        for (token, symbol, price) in &mut self.instruments {
            let z = self.rng.normal();
            let last: f64 = f64::try_from(*price).unwrap_or(1.0);
            *price = on_grid(last * (self.volatility * z).exp());
            out.push(MarketTick {
                instrument_token: *token,
                last_price: Price::new(*price).unwrap_or_else(|_| unreachable!("positive price")),
                timestamp: ts,
                symbol: Some(symbol.clone()),
                volume_traded: None,
                last_traded_quantity: None,
                average_traded_price: None,
                total_buy_quantity: None,
                total_sell_quantity: None,
                change: None,
                ohlc: None,
                oi: None,
                oi_day_high: None,
                oi_day_low: None,
                last_trade_time: None,
                exchange_timestamp: Some(ts),
                depth: None,
                mode: Some(TickMode::Ltp),
                tradable: Some(true),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_walk_on_the_tick_grid() {
        let s = SyntheticSettings::default();
        let (mut a, mut b) = (SyntheticFeed::new(&s), SyntheticFeed::new(&s));
        let ts = Timestamp::from_unix_millis(0).unwrap();
        for _ in 0..1000 {
            let (ta, tb) = (a.next_ticks(ts), b.next_ticks(ts));
            assert_eq!(ta, tb);
            for t in &ta {
                let p = t.last_price.get();
                assert!(p > Decimal::ZERO);
                assert_eq!(
                    (p / TICK_SIZE).fract(),
                    Decimal::ZERO,
                    "{p} is on the 0.05 grid"
                );
            }
        }
        let mut c = SyntheticFeed::new(&SyntheticSettings { seed: 43, ..s });
        assert_ne!(
            c.next_ticks(ts),
            SyntheticFeed::new(&SyntheticSettings::default()).next_ticks(ts)
        );
    }

    #[test]
    fn normal_draws_look_normal() {
        let mut r = SplitMix64::new(1);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
