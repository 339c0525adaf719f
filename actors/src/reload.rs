//! A strategy reload as the admin API and SIGHUP ask for it. The daemon supplies the
//! [`Reloader`] (it knows where the strategies come from: the database or the settings
//! file); the HTTP route and the signal handler only call it, on a blocking thread.
//!
//! Contract: a reloader either installs a whole validated set (a new generation of
//! `alpha_panda_engine::strategy::Live`, picked up by the strategy stage between records)
//! or refuses it with every reason, each naming its key, and leaves the running set alone.

use std::sync::Arc;

use serde::Serialize;

/// A reload that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The new generation of the running set.
    pub generation: u64,
    /// Where the set came from, e.g. `database` or `settings file config/alpha.toml`.
    pub source: String,
    /// The ids of the new set, in order.
    pub strategies: Vec<String>,
}

/// A reload that was refused; the running set is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    pub source: String,
    /// Every reason, each naming its key, e.g. `strategies[0].params.lookback = 0: …`.
    pub reasons: Vec<String>,
}

/// Reads, validates and applies the strategies; may block (file or database reads).
pub type Reloader = Arc<dyn Fn() -> Result<Applied, Refused> + Send + Sync>;
