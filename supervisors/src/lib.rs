//! Assembling a runtime from settings and supervising it.

pub mod daemon;
