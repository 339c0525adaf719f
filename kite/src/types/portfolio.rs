//! Positions and holdings (`GET /portfolio/positions`, `GET /portfolio/holdings`).
//!
//! Contract: the fields the runtime reads (quantities, prices, PnL) as integers and
//! decimals; Kite's other fields are accepted and ignored.

use rust_decimal::Decimal;
use serde::Deserialize;

/// One position, net or of the day.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Position {
    pub tradingsymbol: String,
    pub exchange: String,
    pub instrument_token: u32,
    pub product: String,
    /// Signed: negative is short.
    pub quantity: i64,
    #[serde(default)]
    pub overnight_quantity: i64,
    #[serde(default)]
    pub multiplier: Decimal,
    pub average_price: Decimal,
    #[serde(default)]
    pub last_price: Decimal,
    #[serde(default)]
    pub pnl: Decimal,
    #[serde(default)]
    pub realised: Decimal,
    #[serde(default)]
    pub unrealised: Decimal,
    #[serde(default)]
    pub buy_quantity: i64,
    #[serde(default)]
    pub sell_quantity: i64,
}

/// `data` of `GET /portfolio/positions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Positions {
    pub net: Vec<Position>,
    pub day: Vec<Position>,
}

/// One holding.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Holding {
    pub tradingsymbol: String,
    pub exchange: String,
    pub instrument_token: u32,
    #[serde(default)]
    pub isin: Option<String>,
    pub product: String,
    pub quantity: i64,
    #[serde(default)]
    pub t1_quantity: i64,
    pub average_price: Decimal,
    #[serde(default)]
    pub last_price: Decimal,
    #[serde(default)]
    pub close_price: Decimal,
    #[serde(default)]
    pub pnl: Decimal,
}
