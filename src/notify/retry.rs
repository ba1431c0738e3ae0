//! When to try a failed delivery again. Pure: the caller passes the random jitter, so the
//! policy is tested without a clock or randomness.
//!
//! Exponential backoff with "equal jitter" (the shape `aws::retry` uses for AWS calls): after
//! the n-th failed attempt the wait is `d/2 + jitter * d/2` where
//! `d = min(backoff_max, backoff_initial * 2^(n-1))`. Jitter spreads the retries of replicas and
//! of many rows that failed together, so a receiver coming back is not hit by all at once.

use std::time::Duration;

use super::Delivery;

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Keep the row, marked given up: `max_attempts` attempts were made.
    GiveUp,
    /// Try again after this wait.
    RetryAfter(Duration),
}

/// The decision after `attempts` attempts (this one included) all failed; `jitter` is uniformly
/// random over `u32`.
pub fn after_failure(delivery: &Delivery, attempts: u32, jitter: u32) -> AfterFailure {
    if attempts >= delivery.max_attempts {
        return AfterFailure::GiveUp;
    }
    let doubling = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
    let full = delivery
        .backoff_initial
        .saturating_mul(doubling)
        .min(delivery.backoff_max);
    let half = full / 2;
    let extra_nanos = half.as_nanos() * u128::from(jitter) / u128::from(u32::MAX);
    let extra = Duration::from_nanos(u64::try_from(extra_nanos).unwrap_or(u64::MAX));
    AfterFailure::RetryAfter(half.saturating_add(extra))
}

/// The longest a delivery can stay pending before it is given up, at the worst jitter: the sum
/// of every wait (attempts themselves not counted). For the documentation and `config check`.
pub fn longest_retry_span(delivery: &Delivery) -> Duration {
    (1..delivery.max_attempts)
        .map(|n| match after_failure(delivery, n, u32::MAX) {
            AfterFailure::RetryAfter(d) => d,
            AfterFailure::GiveUp => Duration::ZERO,
        })
        .fold(Duration::ZERO, Duration::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Delivery {
        Delivery {
            max_attempts: 20,
            backoff_initial: Duration::from_secs(2),
            backoff_max: Duration::from_secs(900),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_secs(2),
        }
    }

    fn wait(attempts: u32, jitter: u32) -> Duration {
        match after_failure(&policy(), attempts, jitter) {
            AfterFailure::RetryAfter(d) => d,
            AfterFailure::GiveUp => panic!("gave up after {attempts}"),
        }
    }

    #[test]
    fn waits_double_with_jitter_in_the_upper_half() {
        let s = Duration::from_secs;
        assert_eq!(wait(1, 0), s(1));
        assert_eq!(wait(1, u32::MAX), s(2));
        assert_eq!(wait(2, 0), s(2));
        assert_eq!(wait(2, u32::MAX), s(4));
        assert_eq!(wait(5, u32::MAX), s(32));
        let mid = wait(3, u32::MAX / 2);
        assert!(mid > s(4) && mid < s(8), "{mid:?}");
    }

    #[test]
    fn waits_are_capped_and_never_overflow() {
        for attempts in 1..20 {
            assert!(wait(attempts, u32::MAX) <= Duration::from_secs(900));
        }
        assert_eq!(wait(19, 0), Duration::from_secs(450));
        let huge = Delivery {
            max_attempts: u32::MAX,
            backoff_initial: Duration::MAX,
            backoff_max: Duration::MAX,
            ..policy()
        };
        assert!(matches!(
            after_failure(&huge, u32::MAX - 1, u32::MAX),
            AfterFailure::RetryAfter(_)
        ));
    }

    #[test]
    fn gives_up_after_max_attempts() {
        assert!(matches!(
            after_failure(&policy(), 19, 0),
            AfterFailure::RetryAfter(_)
        ));
        assert_eq!(after_failure(&policy(), 20, 0), AfterFailure::GiveUp);
        assert_eq!(after_failure(&policy(), 21, 0), AfterFailure::GiveUp);
        let once = Delivery {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(after_failure(&once, 1, 0), AfterFailure::GiveUp);
    }

    #[test]
    fn the_default_policy_retries_for_hours() {
        // 2+4+...+512 (1022 s) and ten waits of 900 s: about 2.8 hours at the worst jitter.
        assert_eq!(
            longest_retry_span(&policy()),
            Duration::from_secs(1022 + 10 * 900)
        );
    }
}
