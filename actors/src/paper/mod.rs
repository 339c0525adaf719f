//! The paper broker: charges and the fill model. Pure.

pub mod charges;
pub mod fills;
