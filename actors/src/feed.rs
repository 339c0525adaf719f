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
    // Near `Decimal::MAX` the quotient overflows: such a price stays as it is.
    d.checked_div(TICK_SIZE)
        .and_then(|ticks| ticks.round().checked_mul(TICK_SIZE))
        .unwrap_or(d)
        .max(TICK_SIZE)
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
            // Truly unreachable: `on_grid` returns at least one tick size, and `Price::new`
            // refuses only negative prices.
            let last_price = Price::new(*price).unwrap_or_else(|_| unreachable!("positive price"));
            out.push(MarketTick {
                symbol: Some(symbol.clone()),
                exchange_timestamp: Some(ts),
                mode: Some(TickMode::Ltp),
                tradable: Some(true),
                ..MarketTick::new(*token, last_price, ts)
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

/// Why a tick file cannot be used: which line, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TickFileError {
    #[error("cannot read tick file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
}

/// One replayed tick as a file gives it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TickLine {
    instrument_token: InstrumentToken,
    timestamp: Timestamp,
    last_price: Price,
    #[serde(default)]
    volume: Option<u64>,
}

fn replayed(t: TickLine) -> MarketTick {
    MarketTick {
        volume_traded: t.volume,
        ..MarketTick::new(t.instrument_token, t.last_price, t.timestamp)
    }
}

/// Loads ticks from CSV (`instrument_token,timestamp,last_price[,volume]`, an optional header
/// line) or JSONL (one object per line with those keys), chosen by the `.jsonl`/`.json`
/// extension. Blank lines and lines starting with `#` are skipped. Errors name the line.
pub fn load_ticks(path: &std::path::Path) -> Result<Vec<MarketTick>, TickFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TickFileError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    let jsonl = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "json" | "ndjson")
    );
    let mut ticks = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty()
            || line.starts_with('#')
            || (!jsonl && i == 0 && line.starts_with("instrument_token"))
        {
            continue;
        }
        let err = |problem: String| TickFileError::Line {
            path: shown.clone(),
            line: i + 1,
            problem,
        };
        let parsed: TickLine = if jsonl {
            serde_json::from_str(line).map_err(|e| err(e.to_string()))?
        } else {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if !(3..=4).contains(&f.len()) {
                return Err(err(format!(
                    "expected instrument_token,timestamp,last_price[,volume], got {} fields",
                    f.len()
                )));
            }
            TickLine {
                instrument_token: f[0]
                    .parse()
                    .map_err(|e: alpha_panda_core::InvalidValue| err(e.to_string()))?,
                timestamp: f[1]
                    .parse()
                    .map_err(|e| err(format!("timestamp {:?}: {e} (expected RFC 3339)", f[1])))?,
                last_price: f[2]
                    .parse()
                    .map_err(|e: alpha_panda_core::InvalidValue| err(e.to_string()))?,
                volume: match f.get(3) {
                    Some(v) if !v.is_empty() => Some(
                        v.parse()
                            .map_err(|_| err(format!("volume {v:?} is not a whole number")))?,
                    ),
                    _ => None,
                },
            }
        };
        ticks.push(replayed(parsed));
    }
    Ok(ticks)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ap-ticks-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_and_jsonl_give_the_same_ticks_and_errors_name_the_line() {
        let csv = write(
            "a.csv",
            "instrument_token,timestamp,last_price,volume\n738561,2024-01-15T04:00:00Z,2450.05,10\n# note\n\n408065,2024-01-15T04:00:01Z,1500.20\n",
        );
        let jsonl = write(
            "a.jsonl",
            "{\"instrument_token\":738561,\"timestamp\":\"2024-01-15T04:00:00Z\",\"last_price\":\"2450.05\",\"volume\":10}\n{\"instrument_token\":408065,\"timestamp\":\"2024-01-15T04:00:01Z\",\"last_price\":1500.20}\n",
        );
        let (a, b) = (load_ticks(&csv).unwrap(), load_ticks(&jsonl).unwrap());
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        let bad = write(
            "b.csv",
            "738561,2024-01-15T04:00:00Z,2450.05\n738561,yesterday,2450.05\n",
        );
        let e = load_ticks(&bad).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("yesterday"), "{e}");
        let bad = write("c.csv", "738561,2024-01-15T04:00:00Z,-1\n");
        assert!(
            load_ticks(&bad)
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        for p in [csv, jsonl] {
            let _ = std::fs::remove_file(p);
        }
    }
}
