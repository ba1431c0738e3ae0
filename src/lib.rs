//! latchkey

pub mod audit;
pub mod store;
