//! Assembling a runtime from settings and supervising it.

pub mod backtest;
pub mod daemon;
pub mod data_dir;
pub mod kite;
pub mod pipeline;
