//! KiteTicker.
pub mod packet;
