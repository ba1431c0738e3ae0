//! How long to wait before retrying a throttled AWS call, inside an overall time budget. Pure: the
//! caller passes the elapsed time and the random jitter, so the policy is tested without a clock
//! (throttling cannot be provoked in the test double).
//!
//! The SDK's own retries are turned off in [`super::sdk`]; this policy is the only one, so the
//! budget below bounds the whole call.

use std::time::Duration;

/// Exponential backoff with "equal jitter": the n-th wait is `d/2 + jitter * d/2` where
/// `d = min(cap, base * 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait before jitter.
    pub base: Duration,
    /// The longest wait before jitter.
    pub cap: Duration,
    /// The most one call may take, all attempts and waits included.
    pub budget: Duration,
    /// The most one attempt may take (the SDK's attempt timeout).
    pub attempt_timeout: Duration,
    /// The most attempts, the first included.
    pub max_attempts: u32,
}

impl Backoff {
    /// The policy for STS: at most 4 attempts of at most 3 s each, all within 10 s.
    pub const STS: Backoff = Backoff {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(2),
        budget: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(3),
        max_attempts: 4,
    };

    /// The policy for EC2 Instance Connect: STS's. A push answers as quickly as an `AssumeRole`,
    /// and its 10 s budget leaves the request's own timeout (30 s by default) room for the
    /// audit records on both sides of it.
    pub const INSTANCE_CONNECT: Backoff = Backoff::STS;

    /// The policy for IAM (revocation policies, `GetRole`): STS's. No request waits on it for
    /// long: a revocation's few calls per role, or the background sweeper's.
    pub const IAM: Backoff = Backoff::STS;

    /// The wait before the next attempt, after `attempts` attempts were throttled and `elapsed`
    /// time has passed since the first began; `jitter` is uniformly random over `u32`.
    ///
    /// `None` means give up: the attempts are used up, or waiting and then running one more attempt
    /// to its timeout could overrun the budget.
    pub fn delay(&self, attempts: u32, elapsed: Duration, jitter: u32) -> Option<Duration> {
        if attempts == 0 || attempts >= self.max_attempts {
            return None;
        }
        let doubling = 2u32.saturating_pow(attempts.saturating_sub(1));
        let full = self.base.saturating_mul(doubling).min(self.cap);
        let half = full / 2;
        let extra_nanos = half.as_nanos() * u128::from(jitter) / u128::from(u32::MAX);
        let extra = Duration::from_nanos(u64::try_from(extra_nanos).unwrap_or(u64::MAX));
        let delay = half.saturating_add(extra);
        let worst_end = elapsed
            .checked_add(delay)?
            .checked_add(self.attempt_timeout)?;
        (worst_end <= self.budget).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::STS;

    #[test]
    fn waits_grow_exponentially_with_jitter_in_the_upper_half() {
        let ms = Duration::from_millis;
        assert_eq!(B.delay(1, ms(0), 0), Some(ms(100)));
        assert_eq!(B.delay(1, ms(0), u32::MAX), Some(ms(200)));
        assert_eq!(B.delay(2, ms(0), 0), Some(ms(200)));
        assert_eq!(B.delay(3, ms(0), u32::MAX), Some(ms(800)));
        let mid = B.delay(2, ms(0), u32::MAX / 2).unwrap();
        assert!(mid > ms(200) && mid < ms(400), "{mid:?}");
    }

    #[test]
    fn waits_are_capped() {
        let policy = Backoff {
            max_attempts: 40,
            budget: Duration::from_secs(3600),
            ..B
        };
        for attempts in 1..40 {
            let delay = policy.delay(attempts, Duration::ZERO, u32::MAX).unwrap();
            assert!(delay <= policy.cap, "{attempts}: {delay:?}");
        }
    }

    #[test]
    fn gives_up_after_max_attempts() {
        assert!(B.delay(3, Duration::ZERO, 0).is_some());
        assert_eq!(B.delay(4, Duration::ZERO, 0), None);
        assert_eq!(B.delay(u32::MAX, Duration::ZERO, 0), None);
        assert_eq!(B.delay(0, Duration::ZERO, 0), None);
    }

    #[test]
    fn gives_up_when_one_more_attempt_could_overrun_the_budget() {
        // 6.9 s elapsed + 0.1 s wait + 3 s attempt = 10 s: still fits.
        assert!(B.delay(1, Duration::from_millis(6_900), 0).is_some());
        assert_eq!(B.delay(1, Duration::from_millis(6_901), 0), None);
        assert_eq!(B.delay(1, Duration::MAX, 0), None);
    }

    #[test]
    fn a_call_that_is_always_throttled_ends_within_the_budget() {
        for jitter in [0, u32::MAX / 3, u32::MAX] {
            // Worst case: every attempt runs to its timeout before being throttled.
            let mut elapsed = B.attempt_timeout;
            let mut attempts = 1;
            while let Some(wait) = B.delay(attempts, elapsed, jitter) {
                elapsed += wait + B.attempt_timeout;
                attempts += 1;
            }
            assert!(elapsed <= B.budget, "{elapsed:?}");
            assert!(attempts >= 2, "at least one retry fits: {attempts}");
        }
        // Fast throttling answers get every attempt.
        let mut elapsed = Duration::from_millis(50);
        let mut attempts = 1;
        while let Some(wait) = B.delay(attempts, elapsed, u32::MAX) {
            elapsed += wait + Duration::from_millis(50);
            attempts += 1;
        }
        assert_eq!(attempts, B.max_attempts);
    }
}
