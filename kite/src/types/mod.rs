//! Typed requests and replies of the REST calls, one file per area.

pub mod margins;
pub mod market;
pub mod order;
pub mod portfolio;
pub mod session;
