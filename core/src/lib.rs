//! Alpha Panda's domain: the event envelope, typed payloads, ids, money and the failure
//! classes. Pure: no I/O, no actix, no clocks beyond [`Timestamp::now`] for root events.

pub mod domain;
pub mod envelope;
pub mod events;
pub mod failure;
pub mod ids;
pub mod time;

pub use domain::{
    AccountId, BrokerName, ExecutionMode, InstrumentToken, InvalidValue, OrderId, OrderType, Price,
    Product, Quantity, Side, StrategyId, TradingState, Validity,
};
pub use envelope::{
    DecodeError, ENVELOPE_VERSION, EventBroker, EventData, EventEnvelope, EventType, Lineage,
};
pub use failure::{Classify, FailureClass};
pub use rust_decimal::Decimal;
pub use time::Timestamp;
