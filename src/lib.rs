//! latchkey

pub mod audit;
