//! The instrument master, from a Kite Connect instruments CSV (`instrument_token,
//! exchange_token, tradingsymbol, name, last_price, expiry, strike, tick_size, lot_size,
//! instrument_type, segment, exchange`). `data/instruments/nse-sample.csv` is a small sample
//! of NSE names; the zerodha trader loads Kite's own dump (`GET /instruments`) with it.

use std::collections::HashMap;
use std::path::Path;

use alpha_panda_core::{Decimal, InstrumentToken};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub instrument_token: InstrumentToken,
    pub exchange_token: u32,
    pub tradingsymbol: String,
    pub name: String,
    /// `YYYY-MM-DD` for derivatives; empty for equities.
    pub expiry: Option<String>,
    pub strike: Decimal,
    pub tick_size: Decimal,
    pub lot_size: u32,
    pub instrument_type: String,
    pub segment: String,
    pub exchange: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    #[error("cannot read instruments file {path}: {source}")]
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

/// Instruments by token and by `EXCHANGE:TRADINGSYMBOL`.
#[derive(Debug, Clone, Default)]
pub struct InstrumentMaster {
    by_token: HashMap<InstrumentToken, Instrument>,
    by_symbol: HashMap<String, InstrumentToken>,
}

const COLUMNS: [&str; 12] = [
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
];

impl InstrumentMaster {
    pub fn load(path: &Path) -> Result<Self, InstrumentError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| InstrumentError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, InstrumentError> {
        let mut master = Self::default();
        for (i, line) in text.lines().enumerate() {
            let err = |problem: String| InstrumentError::Line {
                path: path.to_owned(),
                line: i + 1,
                problem,
            };
            if i == 0 {
                let header: Vec<&str> = line.split(',').map(str::trim).collect();
                if header != COLUMNS {
                    return Err(err(format!(
                        "expected the Kite header {}",
                        COLUMNS.join(",")
                    )));
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            // Kite's names have no commas; a quoted field would be a different file.
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != COLUMNS.len() {
                return Err(err(format!(
                    "expected {} fields, got {}",
                    COLUMNS.len(),
                    f.len()
                )));
            }
            let num = |i: usize| -> Result<Decimal, InstrumentError> {
                f[i].parse()
                    .map_err(|_| err(format!("{} {:?} is not a number", COLUMNS[i], f[i])))
            };
            let int = |i: usize| -> Result<u32, InstrumentError> {
                f[i].parse()
                    .map_err(|_| err(format!("{} {:?} is not a whole number", COLUMNS[i], f[i])))
            };
            let inst = Instrument {
                instrument_token: InstrumentToken(int(0)?),
                exchange_token: int(1)?,
                tradingsymbol: f[2].to_owned(),
                name: f[3].to_owned(),
                expiry: (!f[5].is_empty()).then(|| f[5].to_owned()),
                strike: num(6)?,
                tick_size: num(7)?,
                lot_size: int(8)?,
                instrument_type: f[9].to_owned(),
                segment: f[10].to_owned(),
                exchange: f[11].to_owned(),
            };
            master.by_symbol.insert(
                format!("{}:{}", inst.exchange, inst.tradingsymbol),
                inst.instrument_token,
            );
            master.by_token.insert(inst.instrument_token, inst);
        }
        Ok(master)
    }

    pub fn get(&self, token: InstrumentToken) -> Option<&Instrument> {
        self.by_token.get(&token)
    }

    /// By `EXCHANGE:TRADINGSYMBOL`, e.g. `NSE:RELIANCE`.
    pub fn by_symbol(&self, symbol: &str) -> Option<&Instrument> {
        self.by_symbol
            .get(symbol)
            .and_then(|t| self.by_token.get(t))
    }

    /// Every instrument, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Instrument> {
        self.by_token.values()
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_nse_sample_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/instruments/nse-sample.csv");
        let m = InstrumentMaster::load(&path).unwrap();
        assert_eq!(m.len(), 7);
        let r = m.by_symbol("NSE:RELIANCE").unwrap();
        assert_eq!(r.instrument_token, InstrumentToken(738561));
        assert_eq!(r.tick_size, "0.05".parse().unwrap());
        assert_eq!(m.get(InstrumentToken(256265)).unwrap().segment, "INDICES");
        // The default synthetic instruments are all in the sample.
        for i in alpha_panda_config::SyntheticFeed::default().instruments {
            assert_eq!(m.get(i.instrument_token).unwrap().tradingsymbol, i.symbol);
        }
    }

    /// The Kite dumps beside the kite crate's tests (`KITE_FIXTURES_DIR=DIR`: the same names
    /// in another folder, e.g. Zerodha's published mocks).
    fn kite_dump(name: &str) -> (String, String) {
        let dir = std::env::var_os("KITE_FIXTURES_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../kite/tests/fixtures")
            });
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (path.display().to_string(), text)
    }

    #[test]
    fn kite_instrument_dumps_load_with_every_line_and_its_tick_and_lot_size() {
        for name in ["instruments_all.csv", "instruments_nse.csv"] {
            let (path, text) = kite_dump(name);
            let m = InstrumentMaster::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            let lines = text
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .count();
            assert_eq!(m.len(), lines, "{path}: one instrument per line");
            assert!(m.iter().all(|i| i.lot_size <= 1_000_000), "{path}");
        }
        if std::env::var_os("KITE_FIXTURES_DIR").is_none() {
            let (path, text) = kite_dump("instruments_all.csv");
            let m = InstrumentMaster::parse(&path, &text).unwrap();
            let fut = m.by_symbol("NFO:NIFTY26JANFUT").unwrap();
            assert_eq!((fut.lot_size, fut.tick_size), (50, "0.05".parse().unwrap()));
            assert_eq!(fut.expiry.as_deref(), Some("2026-01-27"));
            let usd = m.by_symbol("CDS:USDINR26JANFUT").unwrap();
            assert_eq!(usd.tick_size, "0.0025".parse().unwrap());
            assert_eq!(
                m.get(InstrumentToken(13240834)).unwrap().strike,
                "24000".parse().unwrap()
            );
        }
    }

    #[test]
    fn bad_files_name_the_line() {
        let header = COLUMNS.join(",");
        let e = InstrumentMaster::parse(
            "x.csv",
            &format!("{header}\n1,2,A,A,0,,0,0.05,one,EQ,NSE,NSE\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.csv:2") && e.contains("lot_size"), "{e}");
        let e = InstrumentMaster::parse("x.csv", "token,symbol\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.csv:1"), "{e}");
    }
}
