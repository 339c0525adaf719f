//! Margins (`GET /user/margins[/{segment}]`).
//!
//! Contract: the net, the available cash and the utilised debits of a segment; other fields
//! are accepted and ignored.

use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Available {
    #[serde(default)]
    pub cash: Decimal,
    #[serde(default)]
    pub opening_balance: Decimal,
    #[serde(default)]
    pub live_balance: Decimal,
    #[serde(default)]
    pub collateral: Decimal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Utilised {
    #[serde(default)]
    pub debits: Decimal,
    #[serde(default)]
    pub exposure: Decimal,
    #[serde(default)]
    pub span: Decimal,
}

/// The margins of one segment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SegmentMargins {
    pub enabled: bool,
    pub net: Decimal,
    pub available: Available,
    pub utilised: Utilised,
}

/// `data` of `GET /user/margins`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Margins {
    #[serde(default)]
    pub equity: Option<SegmentMargins>,
    #[serde(default)]
    pub commodity: Option<SegmentMargins>,
}
