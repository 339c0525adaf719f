//! What the recorder writes for one event: pure, from the envelope and the broker's charges
//! model. An order event is one `orders` row (its state); a fill is an `orders` row (state
//! `filled`) and a `fills` row with its charges broken down; a PnL snapshot and a rejected
//! signal are one row each. Every row's key is the event id, or derived from it.

use alpha_panda_config::Charges;
use alpha_panda_core::{Decimal, EventData, EventEnvelope};
use alpha_panda_engine::paper::charges::charges;
use chrono::{DateTime, Utc};
use diesel::Insertable;
use uuid::Uuid;

use crate::schema;

#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = schema::orders)]
pub struct OrderRow {
    pub event_id: Uuid,
    pub order_id: String,
    pub state: String,
    pub strategy_id: String,
    pub instrument_token: i64,
    pub side: String,
    pub quantity: i64,
    pub price: Decimal,
    pub broker_order_id: Option<String>,
    pub error_message: Option<String>,
    pub event_ts: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = schema::fills)]
pub struct FillRow {
    pub event_id: Uuid,
    pub order_id: String,
    pub trade_id: Option<String>,
    pub account: String,
    pub strategy_id: String,
    pub instrument_token: i64,
    pub side: String,
    pub quantity: i64,
    pub price: Decimal,
    pub fees: Decimal,
    pub brokerage: Decimal,
    pub stt: Decimal,
    pub exchange_txn: Decimal,
    pub gst: Decimal,
    pub sebi: Decimal,
    pub stamp: Decimal,
    pub event_ts: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = schema::pnl_snapshots)]
pub struct SnapshotRow {
    pub event_id: Uuid,
    pub strategy_id: String,
    pub realized_pnl: Decimal,
    pub unrealized_pnl: Decimal,
    pub total_pnl: Decimal,
    pub fees: Decimal,
    pub cash: Decimal,
    pub positions: serde_json::Value,
    pub event_ts: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = schema::signal_rejections)]
pub struct RejectionRow {
    pub event_id: Uuid,
    pub strategy_id: String,
    pub instrument_token: i64,
    pub side: String,
    pub quantity: i64,
    pub price: Decimal,
    pub reason: String,
    pub event_ts: DateTime<Utc>,
}

/// The rows of a batch, by table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub orders: Vec<OrderRow>,
    pub fills: Vec<FillRow>,
    pub snapshots: Vec<SnapshotRow>,
    pub rejections: Vec<RejectionRow>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.orders.len() + self.fills.len() + self.snapshots.len() + self.rejections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the rows of one event; an event of a type the recorder does not keep (a tick,
    /// a raw or validated signal) adds nothing.
    pub fn add(&mut self, env: &EventEnvelope, model: &Charges) {
        let id = env.id;
        let qty = |q: alpha_panda_core::Quantity| i64::try_from(q.get()).unwrap_or(i64::MAX);
        let token = |t: alpha_panda_core::InstrumentToken| i64::from(t.0);
        let order = |order_id: String, state: &str| OrderRow {
            event_id: id,
            order_id,
            state: state.to_owned(),
            strategy_id: String::new(),
            instrument_token: 0,
            side: String::new(),
            quantity: 0,
            price: Decimal::ZERO,
            broker_order_id: None,
            error_message: None,
            event_ts: env.ts.0,
        };
        match &env.data {
            EventData::OrderPlaced(o) => self.orders.push(OrderRow {
                strategy_id: o.strategy_id.to_string(),
                instrument_token: token(o.instrument_token),
                side: o.side.to_string(),
                quantity: qty(o.quantity),
                price: o.price.get(),
                event_ts: o.timestamp.0,
                ..order(o.order_id.to_string(), "submitted")
            }),
            EventData::OrderAck(o) => self.orders.push(OrderRow {
                strategy_id: o.strategy_id.to_string(),
                instrument_token: token(o.instrument_token),
                side: o.side.to_string(),
                quantity: qty(o.quantity),
                broker_order_id: Some(o.broker_order_id.clone()),
                event_ts: o.timestamp.0,
                ..order(o.order_id.to_string(), "ack")
            }),
            EventData::OrderFailed(o) => self.orders.push(OrderRow {
                strategy_id: o.strategy_id.to_string(),
                instrument_token: token(o.instrument_token),
                side: o.side.to_string(),
                quantity: qty(o.quantity),
                price: o.price.get(),
                error_message: Some(o.error_message.clone()),
                event_ts: o.timestamp.0,
                ..order(o.order_id.to_string(), "failed")
            }),
            EventData::OrderFilled(f) => {
                self.orders.push(OrderRow {
                    strategy_id: f.strategy_id.to_string(),
                    instrument_token: token(f.instrument_token),
                    side: f.side.to_string(),
                    quantity: qty(f.quantity),
                    price: f.fill_price.get(),
                    event_ts: f.timestamp.0,
                    ..order(f.order_id.to_string(), "filled")
                });
                // The trader computed this fill's charges, so they compute here too; a figure
                // beyond Decimal's range (which the trader fails instead of filling) would
                // record zero charges, never stop the recorder.
                let c = charges(f.side, f.quantity.get(), f.fill_price.get(), model)
                    .unwrap_or_default();
                self.fills.push(FillRow {
                    event_id: id,
                    order_id: f.order_id.to_string(),
                    trade_id: f.trade_id.clone(),
                    account: f.account.to_string(),
                    strategy_id: f.strategy_id.to_string(),
                    instrument_token: token(f.instrument_token),
                    side: f.side.to_string(),
                    quantity: qty(f.quantity),
                    price: f.fill_price.get(),
                    fees: f.fees,
                    brokerage: c.brokerage,
                    stt: c.stt,
                    exchange_txn: c.exchange_txn,
                    gst: c.gst,
                    sebi: c.sebi,
                    stamp: c.stamp,
                    event_ts: f.timestamp.0,
                });
            }
            EventData::PnlSnapshot(s) => self.snapshots.push(SnapshotRow {
                event_id: id,
                strategy_id: s.strategy_id.to_string(),
                realized_pnl: s.realized_pnl,
                unrealized_pnl: s.unrealized_pnl,
                total_pnl: s.total_pnl,
                fees: s.fees,
                cash: s.cash,
                positions: serde_json::to_value(&s.positions).unwrap_or(serde_json::Value::Null),
                event_ts: s.timestamp.0,
            }),
            EventData::RejectedSignal(r) => {
                let s = &r.original_signal;
                self.rejections.push(RejectionRow {
                    event_id: id,
                    strategy_id: s.strategy_id.to_string(),
                    instrument_token: token(s.instrument_token),
                    side: s.signal_type.to_string(),
                    quantity: qty(s.quantity),
                    price: s.price.get(),
                    reason: r.rejection_reason.clone(),
                    event_ts: r.timestamp.0,
                })
            }
            EventData::MarketTick(_)
            | EventData::TradingSignal(_)
            | EventData::ValidatedSignal(_)
            | EventData::SystemError(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alpha_panda_core::events::{OrderFilled, TradingSignal};
    use alpha_panda_core::{
        AccountId, BrokerName, EventBroker, ExecutionMode, InstrumentToken, OrderId, Price,
        Quantity, Side, StrategyId, Timestamp,
    };

    fn env(data: EventData) -> EventEnvelope {
        let ts = Timestamp::from_unix_millis(1_705_291_200_000).unwrap_or_else(Timestamp::now);
        EventEnvelope::root(
            EventBroker::Broker(BrokerName::paper()),
            "test",
            "k".to_owned(),
            ts,
            data,
        )
    }

    fn fill(side: Side) -> OrderFilled {
        OrderFilled {
            order_id: OrderId::new("o1").unwrap_or_else(|e| panic!("{e}")),
            instrument_token: InstrumentToken(738561),
            side,
            quantity: Quantity::new(10).unwrap_or_else(|e| panic!("{e}")),
            fill_price: Price::new(Decimal::new(245005, 2)).unwrap_or_else(|e| panic!("{e}")),
            fees: Decimal::new(1030, 2),
            strategy_id: StrategyId::new("mom").unwrap_or_else(|e| panic!("{e}")),
            account: AccountId::new("paper_main").unwrap_or_else(|e| panic!("{e}")),
            execution_mode: ExecutionMode::Paper,
            broker: BrokerName::paper(),
            timestamp: Timestamp::from_unix_millis(1_705_291_200_000)
                .unwrap_or_else(Timestamp::now),
            trade_id: Some("t1".into()),
        }
    }

    #[test]
    fn a_fill_is_a_filled_order_state_and_a_fill_row_keyed_by_the_event_id_with_the_model_breakdown()
     {
        let e = env(EventData::OrderFilled(fill(Side::Buy)));
        let mut rows = Rows::default();
        rows.add(&e, &Charges::default());
        assert_eq!(rows.orders.len(), 1);
        assert_eq!(rows.orders[0].state, "filled");
        assert_eq!(rows.orders[0].event_id, e.id);
        let f = &rows.fills[0];
        assert_eq!(f.event_id, e.id);
        // engine/src/paper/charges.rs works this buy out by hand: brokerage 7.35015, no STT.
        assert_eq!(f.brokerage, Decimal::new(73501500, 7));
        assert_eq!(f.stt, Decimal::ZERO);
        assert_eq!(f.stamp, Decimal::new(73501500, 8));
        assert_eq!(
            f.fees,
            Decimal::new(1030, 2),
            "the event's own fees are kept as they came"
        );
        assert_eq!(f.trade_id.as_deref(), Some("t1"));
    }

    #[test]
    fn events_the_recorder_does_not_keep_add_no_rows() {
        let signal = TradingSignal {
            strategy_id: StrategyId::new("mom").unwrap_or_else(|e| panic!("{e}")),
            instrument_token: InstrumentToken(1),
            signal_type: Side::Buy,
            quantity: Quantity::new(1).unwrap_or_else(|e| panic!("{e}")),
            price: Price::new(Decimal::ONE).unwrap_or_else(|e| panic!("{e}")),
            timestamp: Timestamp::now(),
            confidence: None,
            metadata: Default::default(),
            order_type: alpha_panda_core::OrderType::Market,
            product: alpha_panda_core::Product::Mis,
            validity: alpha_panda_core::Validity::Day,
            trigger_price: None,
        };
        let mut rows = Rows::default();
        rows.add(&env(EventData::TradingSignal(signal)), &Charges::default());
        assert!(rows.is_empty());
    }
}
