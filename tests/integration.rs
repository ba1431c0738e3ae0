//! The one integration test binary. It runs latchkey against real peers (see `harness`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unreachable_pub,
    reason = "test code: a failed assumption should fail the test loudly"
)]

mod harness;
#[path = "integration/store_audit.rs"]
mod store_audit;
