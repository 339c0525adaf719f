//! Alpha Panda settings: defaults ← TOML file (`--config FILE`) ← environment
//! (`ALPHA_PANDA__SECTION__KEY`, `ACTIVE_BROKERS=paper,zerodha`). Unknown keys are errors,
//! wherever they come from; every error names the key, the value and what is expected.

mod de;
pub mod load;
pub mod mask;
pub mod params;
pub mod settings;
mod validate;

pub use load::{ConfigError, Origin, check_trading, load, load_from_env};
pub use params::*;
pub use settings::*;
/// The checks `load` runs after deserializing, for settings changed in code (backtest sweeps).
pub use validate::{Failure, check as validate_settings};
