//! The paper broker: charges, the fill model and the trader's state. Pure.

pub mod charges;
pub mod fills;
pub mod trader;
