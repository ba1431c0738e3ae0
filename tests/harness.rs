//! Starts the real peers the integration tests talk to, once per test binary.
