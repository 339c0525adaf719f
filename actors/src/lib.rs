//! Alpha Panda's actors and the adapters they use (Kafka, Redis, HTTP).

pub mod audit;
pub mod console;
pub mod control;
pub mod delivery;
pub mod dlq_tools;
pub mod feed;
pub mod http;
pub mod instruments;
pub mod journal;
pub mod kafka;
pub mod metrics;
pub mod readiness;
pub mod reload;
pub mod stages;
pub mod store;
pub mod zerodha;

// The pure trading logic lives in `alpha-panda-engine` (shared with the backtest loop); the
// actors reach it under its old paths.
pub use alpha_panda_engine::{paper, portfolio, risk, strategy};
