//! Assembling a runtime from settings and supervising it.

pub mod backtest;
pub mod daemon;
pub mod data_dir;
pub mod data_dir_lock;
pub mod kite;
pub mod pipeline;
pub mod reload;
