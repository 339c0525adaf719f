//! Quotes (`GET /quote`, `/quote/ohlc`, `/quote/ltp`), keyed by `EXCHANGE:TRADINGSYMBOL`.
//!
//! Contract: each call returns a map from the instrument key to its typed quote; the caps
//! on instruments per call (500 for `/quote`, 1000 for the others) are checked by the client.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;

/// Most instruments in one `/quote` call.
pub const MAX_QUOTE_INSTRUMENTS: usize = 500;
/// Most instruments in one `/quote/ohlc` or `/quote/ltp` call.
pub const MAX_LTP_INSTRUMENTS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuoteOhlc {
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuoteDepthLevel {
    pub price: Decimal,
    pub quantity: u64,
    pub orders: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuoteDepth {
    pub buy: Vec<QuoteDepthLevel>,
    pub sell: Vec<QuoteDepthLevel>,
}

/// A full quote.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Quote {
    pub instrument_token: u32,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub last_trade_time: Option<String>,
    pub last_price: Decimal,
    #[serde(default)]
    pub last_quantity: u64,
    #[serde(default)]
    pub buy_quantity: u64,
    #[serde(default)]
    pub sell_quantity: u64,
    #[serde(default)]
    pub volume: u64,
    #[serde(default)]
    pub average_price: Decimal,
    #[serde(default)]
    pub oi: Decimal,
    #[serde(default)]
    pub net_change: Decimal,
    #[serde(default)]
    pub lower_circuit_limit: Decimal,
    #[serde(default)]
    pub upper_circuit_limit: Decimal,
    pub ohlc: QuoteOhlc,
    #[serde(default)]
    pub depth: Option<QuoteDepth>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OhlcQuote {
    pub instrument_token: u32,
    pub last_price: Decimal,
    pub ohlc: QuoteOhlc,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LtpQuote {
    pub instrument_token: u32,
    pub last_price: Decimal,
}

pub type Quotes = BTreeMap<String, Quote>;
pub type OhlcQuotes = BTreeMap<String, OhlcQuote>;
pub type LtpQuotes = BTreeMap<String, LtpQuote>;
