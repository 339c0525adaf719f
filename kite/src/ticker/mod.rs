//! KiteTicker: the binary packet parser (`packet`), the text messages (`text`), the
//! conversion to `MarketTick` (`tick`) and the WebSocket connection (`connection`).

pub mod connection;
pub mod packet;
pub mod text;
pub mod tick;
