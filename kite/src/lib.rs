//! Zerodha Kite Connect v3.
//!
//! Contract: this crate speaks Kite's protocols and nothing else — no actors, no Kafka, no
//! store. `client` is the REST client (typed requests and replies for the calls the runtime
//! uses, the `{status, data}` envelope, errors classified as in `error`'s table, rate
//! limits and order caps from `limits`); `ticker` parses KiteTicker frames and runs the
//! WebSocket. The pure parts (envelope, checksum, limits, packet parser) are tested without
//! a network; the client against local servers.

pub mod checksum;
pub mod client;
pub mod envelope;
pub mod error;
pub mod intent;
pub mod limits;
pub mod sim;
pub mod ticker;
pub mod trader;
pub mod types;

pub use client::{KiteClient, KiteConfig};
pub use error::{ErrorType, KiteError};
pub use types::session::mask;
