//! Typed payloads, one per event `type`. Field names are the original Python Alpha Panda's
//! where it had the field; `docs/events.md` documents every one.
//!
//! Every struct refuses unknown fields: a producer that adds a field must bump the envelope
//! `version`. Fields this runtime added over the original carry `#[serde(default)]` where a
//! record from the original (without them) must still decode.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{
    AccountId, BrokerName, ExecutionMode, InstrumentToken, OrderId, OrderType, Price, Product,
    Quantity, Side, StrategyId, Validity,
};
use crate::failure::FailureClass;
use crate::time::Timestamp;

/// Open, high, low, close of the day so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ohlc {
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
}

/// One level of the order book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthLevel {
    pub price: Price,
    pub quantity: u64,
    pub orders: u32,
}

/// Five best bids and offers (Kite `full` mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Depth {
    pub buy: Vec<DepthLevel>,
    pub sell: Vec<DepthLevel>,
}

/// Kite ticker subscription mode the tick was received in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TickMode {
    Ltp,
    Quote,
    Full,
}

/// `market_tick` on `market.ticks`: a market data update for one instrument. Only the token,
/// the price and the time are required; the rest depends on the feed and its mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketTick {
    pub instrument_token: InstrumentToken,
    pub last_price: Price,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_traded: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_traded_quantity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_traded_price: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_buy_quantity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_sell_quantity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ohlc: Option<Ohlc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oi: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oi_day_high: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oi_day_low: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trade_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<Depth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TickMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tradable: Option<bool>,
}

impl MarketTick {
    /// A tick with only the required fields (an LTP-mode tick); set the others as needed.
    pub fn new(instrument_token: InstrumentToken, last_price: Price, timestamp: Timestamp) -> Self {
        Self {
            instrument_token,
            last_price,
            timestamp,
            symbol: None,
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
            exchange_timestamp: None,
            depth: None,
            mode: None,
            tradable: None,
        }
    }
}

fn default_order_type() -> OrderType {
    OrderType::Market
}

fn default_product() -> Product {
    Product::Mis
}

fn default_validity() -> Validity {
    Validity::Day
}

/// `trading_signal` on `{broker}.signals.raw`: a strategy wants to trade. HOLD is not a
/// signal: a strategy that holds emits nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradingSignal {
    pub strategy_id: StrategyId,
    pub instrument_token: InstrumentToken,
    pub signal_type: Side,
    pub quantity: Quantity,
    /// Reference price: the price of the tick that caused the signal, or the limit price.
    pub price: Price,
    pub timestamp: Timestamp,
    /// How sure the strategy is, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Decimal>,
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    #[serde(default = "default_order_type")]
    pub order_type: OrderType,
    #[serde(default = "default_product")]
    pub product: Product,
    #[serde(default = "default_validity")]
    pub validity: Validity,
    /// Trigger for SL and SL-M orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_price: Option<Price>,
}

/// `validated_signal` on `{broker}.signals.validated`: risk accepted the signal, possibly
/// with a smaller quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatedSignal {
    pub original_signal: TradingSignal,
    pub validated_quantity: Quantity,
    pub validated_price: Price,
    /// Every rule evaluated, by name, and whether it passed.
    pub risk_checks: BTreeMap<String, bool>,
    pub timestamp: Timestamp,
}

/// `rejected_signal` on `{broker}.signals.rejected`: risk refused the signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedSignal {
    pub original_signal: TradingSignal,
    pub rejection_reason: String,
    pub risk_checks: BTreeMap<String, bool>,
    pub timestamp: Timestamp,
}

/// `order_placed` on `{broker}.orders.submitted`: the trader sent an order to its broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub instrument_token: InstrumentToken,
    pub side: Side,
    pub quantity: Quantity,
    /// Limit price for LIMIT/SL, the reference price for MARKET/SL-M.
    pub price: Price,
    pub order_type: OrderType,
    pub product: Product,
    pub validity: Validity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_price: Option<Price>,
    pub strategy_id: StrategyId,
    pub account: AccountId,
    pub execution_mode: ExecutionMode,
    pub broker: BrokerName,
    pub timestamp: Timestamp,
}

/// `order_ack` on `{broker}.orders.ack`: the broker accepted the order and gave it its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderAck {
    pub order_id: OrderId,
    /// The broker's own order id (Kite `order_id`; the paper simulator makes one).
    pub broker_order_id: String,
    pub instrument_token: InstrumentToken,
    pub side: Side,
    pub quantity: Quantity,
    pub strategy_id: StrategyId,
    pub account: AccountId,
    pub execution_mode: ExecutionMode,
    pub broker: BrokerName,
    pub timestamp: Timestamp,
}

/// `order_filled` on `{broker}.orders.filled`: some or all of an order traded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFilled {
    pub order_id: OrderId,
    pub instrument_token: InstrumentToken,
    pub side: Side,
    /// Quantity of this fill.
    pub quantity: Quantity,
    pub fill_price: Price,
    /// All charges for this fill (brokerage, taxes, exchange fees), in the account currency.
    pub fees: Decimal,
    pub strategy_id: StrategyId,
    pub account: AccountId,
    pub execution_mode: ExecutionMode,
    pub broker: BrokerName,
    pub timestamp: Timestamp,
    /// The exchange/broker trade id, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<String>,
}

/// `order_failed` on `{broker}.orders.failed`: the order was refused, cancelled or expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFailed {
    pub order_id: OrderId,
    pub instrument_token: InstrumentToken,
    pub side: Side,
    pub quantity: Quantity,
    pub price: Price,
    pub strategy_id: StrategyId,
    pub account: AccountId,
    pub execution_mode: ExecutionMode,
    pub broker: BrokerName,
    pub timestamp: Timestamp,
    pub error_message: String,
}

/// One (strategy, instrument) position inside a PnL snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionSnapshot {
    pub instrument_token: InstrumentToken,
    /// Net quantity: positive long, negative short.
    pub quantity: i64,
    pub average_price: Decimal,
    pub last_price: Decimal,
    pub realized_pnl: Decimal,
    pub unrealized_pnl: Decimal,
}

/// `pnl_snapshot` on `{broker}.pnl.snapshots`: a strategy's positions and PnL at a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PnlSnapshot {
    pub broker: BrokerName,
    pub account: AccountId,
    pub strategy_id: StrategyId,
    pub positions: Vec<PositionSnapshot>,
    /// Realized PnL net of fees.
    pub realized_pnl: Decimal,
    pub unrealized_pnl: Decimal,
    pub total_pnl: Decimal,
    pub fees: Decimal,
    pub cash: Decimal,
    pub timestamp: Timestamp,
}

/// How the original record's value is kept in a DLQ record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// `value` is the original bytes, which were valid UTF-8.
    Utf8,
    /// `value` is the original bytes in standard base64 (they were not UTF-8).
    Base64,
}

/// A Kafka header of the original record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordHeader {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `system_error` on `{topic}.dlq`: a record a stage could not handle, kept whole so that it
/// can be inspected and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemError {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_value: Option<String>,
    pub value_encoding: ValueEncoding,
    #[serde(default)]
    pub original_headers: Vec<RecordHeader>,
    pub error_class: FailureClass,
    pub error_message: String,
    pub retry_count: u32,
    pub consumer_group: String,
    pub stage: String,
    pub failed_at: Timestamp,
}
