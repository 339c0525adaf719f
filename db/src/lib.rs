//! Alpha Panda's persistence, on diesel 2: where a broker's rows live and who may write
//! them, the embedded migrations, the recorder that copies a broker's order, fill, snapshot
//! and rejection topics into its tables, and the trade book read back from them.
//!
//! Contract:
//! - A broker's tables live in a schema of their own on PostgreSQL (`{prefix}{broker}`),
//!   written by a role of their own (`{prefix}{broker}_writer`), which can neither read nor
//!   write another broker's schema; on SQLite, in a file of their own. Shared tables
//!   (`instruments`, `strategies`) live in `{prefix}shared`.
//! - Migrations are embedded in the binary and idempotent: applying them twice changes
//!   nothing.
//! - A row written from an event has the event id as its primary key, so a replayed or
//!   duplicated record changes nothing; the recorder's consumed offsets are written in the
//!   same transaction as its rows.
//! - Database work runs on threads of its own (one recorder thread per broker, the CLI's
//!   main thread), never on an actor's thread.

pub mod audit;
pub mod embedded;
pub mod error;
pub mod export;
pub mod migrate;
pub mod recorder;
pub mod rows;
pub mod schema;
pub mod strategies;
pub mod target;
pub mod tradebook;

pub use error::DbError;
pub use target::{Layout, Target};
