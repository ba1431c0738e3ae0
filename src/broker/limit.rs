//! [`RateLimiter`]: a token bucket per principal for grant requests, allowed or denied.
//!
//! Pure: the time is passed in (Unix milliseconds from the broker's clock) and nothing here
//! performs I/O. Memory is bounded: at most [`MAX_PRINCIPALS`] buckets are kept; when a new
//! principal arrives at the cap, buckets that have refilled completely are dropped (they hold no
//! state a fresh bucket would not), and if none has, the one closest to full is, so a principal
//! that is being limited keeps its empty bucket.
//!
//! SECURITY: the limit counts denials too, so probing the policy costs as much as asking for
//! credentials, and it is keyed by the verified principal (`issuer#subject`), never by anything
//! the client chooses.

use std::collections::HashMap;
use std::sync::Mutex;

/// A token bucket per principal: bursts up to `per_minute`, refilled at `per_minute` a minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    cap: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; one token was taken.
    Admit,
    /// Refused: no token left.
    Refuse {
        /// Whole seconds until a token is available again (at least 1).
        retry_after_secs: u64,
        /// Whether this refusal should be audited: the first of its principal in a window of
        /// `REPORT_WINDOW_MS`.
        report: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in units of which one token is [`UNITS_PER_TOKEN`]: each millisecond earns
    /// `per_minute` units, so refills are exact in integer arithmetic.
    units: u64,
    /// When `units` was last brought up to date.
    at_ms: i64,
    /// When a refusal of this principal was last reported.
    reported_ms: Option<i64>,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per principal per minute (at least 1).
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_PRINCIPALS)
    }

    /// As [`RateLimiter::new`], keeping at most `cap` principals' buckets.
    pub fn with_capacity(per_minute: u32, cap: usize) -> Self {
        Self {
            per_minute: per_minute.max(1),
            cap: cap.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `principal` at `now_ms` (Unix milliseconds), or says when to retry.
    pub fn admit(&self, principal: &str, now_ms: i64) -> Admission {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(principal) && buckets.len() >= self.cap {
            self.evict(&mut buckets, now_ms);
        }
        let full = self.full();
        let bucket = buckets.entry(principal.to_owned()).or_insert(Bucket {
            units: full,
            at_ms: now_ms,
            reported_ms: None,
        });
        self.refill(bucket, now_ms);
        if bucket.units >= UNITS_PER_TOKEN {
            bucket.units -= UNITS_PER_TOKEN;
            return Admission::Admit;
        }
        let report = bucket
            .reported_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= REPORT_WINDOW_MS);
        if report {
            bucket.reported_ms = Some(now_ms);
        }
        Admission::Refuse {
            retry_after_secs: self.wait_secs(bucket.units),
            report,
        }
    }

    /// Requests per principal per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// How many principals have a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn full(&self) -> u64 {
        u64::from(self.per_minute) * UNITS_PER_TOKEN
    }

    /// Adds what was earned since the bucket's last update: `per_minute` tokens per minute is
    /// `per_minute` units per millisecond.
    fn refill(&self, bucket: &mut Bucket, now_ms: i64) {
        // A clock that steps back earns nothing and does not move the bucket back.
        let elapsed = u64::try_from(now_ms.saturating_sub(bucket.at_ms)).unwrap_or(0);
        let earned = elapsed.saturating_mul(u64::from(self.per_minute));
        bucket.units = bucket.units.saturating_add(earned).min(self.full());
        bucket.at_ms = bucket.at_ms.max(now_ms);
    }

    /// Whole seconds until `units` reaches one token.
    fn wait_secs(&self, units: u64) -> u64 {
        let missing = UNITS_PER_TOKEN.saturating_sub(units);
        let ms = missing.div_ceil(u64::from(self.per_minute));
        ms.div_ceil(1000).max(1)
    }

    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now_ms: i64) {
        let full = self.full();
        buckets.retain(|_, b| {
            let mut b = *b;
            self.refill(&mut b, now_ms);
            b.units < full
        });
        if buckets.len() >= self.cap {
            // Drop the bucket closest to full: it forgets the least about its principal.
            let fullest = buckets
                .iter()
                .max_by_key(|(_, b)| {
                    let mut b = **b;
                    self.refill(&mut b, now_ms);
                    (b.units, std::cmp::Reverse(b.at_ms))
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = fullest {
                buckets.remove(&k);
            }
        }
    }
}

/// Buckets kept at most; about 100 bytes each.
pub(super) const MAX_PRINCIPALS: usize = 100_000;
/// A principal's refusals are audited at most once per this many milliseconds.
pub(super) const REPORT_WINDOW_MS: i64 = 60_000;
/// One token, in bucket units: the milliseconds in a minute.
const UNITS_PER_TOKEN: u64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_900_000_000_000;

    #[test]
    fn a_burst_of_the_limit_is_admitted_and_the_next_refused() {
        let limiter = RateLimiter::new(60);
        for _ in 0..60 {
            assert_eq!(limiter.admit("a", T0), Admission::Admit);
        }
        assert_eq!(
            limiter.admit("a", T0),
            Admission::Refuse {
                retry_after_secs: 1,
                report: true
            }
        );
        // Another principal has its own bucket.
        assert_eq!(limiter.admit("b", T0), Admission::Admit);
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let limiter = RateLimiter::new(6); // one every 10 s
        for _ in 0..6 {
            assert_eq!(limiter.admit("a", T0), Admission::Admit);
        }
        assert!(matches!(
            limiter.admit("a", T0 + 9_999),
            Admission::Refuse {
                retry_after_secs: 1,
                ..
            }
        ));
        assert_eq!(limiter.admit("a", T0 + 10_000), Admission::Admit);
        assert!(matches!(
            limiter.admit("a", T0 + 10_000),
            Admission::Refuse {
                retry_after_secs: 10,
                ..
            }
        ));
    }

    #[test]
    fn refusals_are_reported_once_per_window() {
        let limiter = RateLimiter::new(1);
        assert_eq!(limiter.admit("a", T0), Admission::Admit);
        let reports = |from: i64, to: i64, step: i64| {
            (from..to)
                .step_by(usize::try_from(step).unwrap())
                .filter(|t| {
                    matches!(
                        limiter.admit("a", *t),
                        Admission::Refuse { report: true, .. }
                    )
                })
                .count()
        };
        // Refused many times within the first minute: reported once.
        assert_eq!(reports(T0, T0 + 59_000, 100), 1);
        // The next refusal a full window after that report is reported again.
        assert!(matches!(
            limiter.admit("a", T0 + 60_000),
            Admission::Admit | Admission::Refuse { report: true, .. }
        ));
    }

    #[test]
    fn a_clock_stepping_back_earns_nothing() {
        let limiter = RateLimiter::new(1);
        assert_eq!(limiter.admit("a", T0), Admission::Admit);
        assert!(matches!(
            limiter.admit("a", T0 - 3_600_000),
            Admission::Refuse { .. }
        ));
        assert!(matches!(
            limiter.admit("a", T0 + 59_000),
            Admission::Refuse { .. }
        ));
        assert_eq!(limiter.admit("a", T0 + 60_000), Admission::Admit);
    }

    #[test]
    fn memory_stays_bounded_and_busy_principals_keep_their_state() {
        let limiter = RateLimiter::with_capacity(2, 3);
        // `busy` empties its bucket; it must not be the one evicted to make room.
        assert_eq!(limiter.admit("busy", T0), Admission::Admit);
        assert_eq!(limiter.admit("busy", T0), Admission::Admit);
        for i in 0..100 {
            let _ = limiter.admit(&format!("p{i}"), T0 + 1);
            assert!(limiter.tracked() <= 3);
        }
        assert!(matches!(
            limiter.admit("busy", T0 + 2),
            Admission::Refuse { .. }
        ));
    }
}
