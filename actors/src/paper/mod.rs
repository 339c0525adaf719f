//! The paper broker: charges and (as it lands) the fill model. Pure.

pub mod charges;
