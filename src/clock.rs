//! The one place that reads the wall clock.
//!
//! Everything that depends on time takes a [`Clock`] (or a `now` argument), so tests can drive
//! time with [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The current time as whole seconds since the Unix epoch.
    fn unix(&self) -> i64 {
        self.now().timestamp()
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one sanctioned read of the wall clock"
    )]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        Self {
            millis: AtomicI64::new(unix_seconds.saturating_mul(1000)),
        }
    }

    /// Moves the clock forward (or back, with a negative value) by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.millis
            .fetch_add(seconds.saturating_mul(1000), Ordering::SeqCst);
    }

    /// Sets the clock to `unix_seconds`.
    pub fn set(&self, unix_seconds: i64) {
        self.millis
            .store(unix_seconds.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let millis = self.millis.load(Ordering::SeqCst);
        Utc.timestamp_millis_opt(millis)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_700_000_000);
        assert_eq!(clock.unix(), 1_700_000_000);
        clock.advance(90);
        assert_eq!(clock.unix(), 1_700_000_090);
        clock.set(5);
        assert_eq!(clock.unix(), 5);
    }
}
