//! latchkey
