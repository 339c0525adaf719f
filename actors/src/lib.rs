//! Alpha Panda's actors and the adapters they use (Kafka, Redis, HTTP).

pub mod console;
pub mod control;
pub mod delivery;
pub mod dlq_tools;
pub mod feed;
pub mod http;
pub mod instruments;
pub mod kafka;
pub mod metrics;
pub mod paper;
pub mod portfolio;
pub mod readiness;
pub mod risk;
pub mod stages;
pub mod store;
pub mod strategy;
