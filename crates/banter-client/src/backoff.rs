//! Reconnection delays: exponential backoff with full jitter.
//!
//! The n-th consecutive failure waits a uniformly random time between zero
//! and `min(max, initial × 2ⁿ)`. Full jitter spreads the reconnections of
//! many clients dropped at once (a server restart) over the whole window,
//! instead of having them all retry in lock-step.

use rand::Rng;
use std::time::Duration;

/// The state of one reconnection schedule.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// The ceiling of the first delay.
    initial: Duration,
    /// The largest ceiling any delay may have.
    max: Duration,
    /// Consecutive failures so far.
    attempt: u32,
}

impl Backoff {
    /// A schedule starting at `initial` and capped at `max` (at least `initial`).
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), attempt: 0 }
    }

    /// The ceiling of the next delay: `min(max, initial × 2^attempt)`.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt, drawn uniformly below the ceiling;
    /// each call raises the ceiling for the next one.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// Consecutive failures so far.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = rand::rng();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(backoff.ceiling().as_millis());
            backoff.next_delay(&mut rng);
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
    }

    #[test]
    fn delays_stay_within_bounds_and_use_the_whole_window() {
        let mut rng = rand::rng();
        let mut low = false;
        let mut high = false;
        for _ in 0..2000 {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            for attempt in 0..40u32 {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay(&mut rng);
                assert!(delay <= ceiling, "attempt {attempt}: {delay:?} > {ceiling:?}");
                assert!(delay <= Duration::from_secs(10));
                if attempt > 10 {
                    low |= delay < Duration::from_secs(1);
                    high |= delay > Duration::from_secs(9);
                }
            }
        }
        assert!(low && high, "full jitter draws across the window");
    }

    #[test]
    fn survives_huge_attempt_counts_and_resets() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.ceiling(), Duration::from_secs(1), "the maximum is at least the initial delay");
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = rand::rng();
        for _ in 0..100 {
            backoff.next_delay(&mut rng);
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(10));
        assert_eq!(backoff.attempt(), 100);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }
}
