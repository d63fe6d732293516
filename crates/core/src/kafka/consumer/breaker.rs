//! The DLQ circuit breaker: trips when more than `max_consecutive` messages in a row
//! were rejected **and** more than `max_ratio` of the messages of the last `window` were rejected.
//! Either condition alone is normal (a burst of bad input; a slow trickle of bad input).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Breaker thresholds.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub max_consecutive: u64,
    pub max_ratio: f64,
    pub window: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            max_consecutive: 1000,
            max_ratio: 0.9,
            window: Duration::from_secs(60),
        }
    }
}

/// Tracks recent results.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    consecutive: u64,
    /// (second bucket start, accepted, rejected)
    buckets: VecDeque<(Instant, u64, u64)>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            consecutive: 0,
            buckets: VecDeque::new(),
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut (Instant, u64, u64) {
        while self
            .buckets
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > self.config.window)
        {
            self.buckets.pop_front();
        }
        let fresh = self
            .buckets
            .back()
            .is_none_or(|(t, _, _)| now.duration_since(*t) >= Duration::from_secs(1));
        if fresh {
            self.buckets.push_back((now, 0, 0));
        }
        // Just pushed or already present.
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// A message was processed (not rejected).
    pub fn accepted(&mut self, now: Instant) {
        self.consecutive = 0;
        self.bucket(now).1 += 1;
    }

    /// A message was rejected; returns true when the breaker trips.
    pub fn rejected(&mut self, now: Instant) -> bool {
        self.consecutive += 1;
        self.bucket(now).2 += 1;
        self.is_tripped()
    }

    /// Whether both conditions hold.
    pub fn is_tripped(&self) -> bool {
        let (ok, bad) = self
            .buckets
            .iter()
            .fold((0u64, 0u64), |(a, r), (_, x, y)| (a + x, r + y));
        let total = ok + bad;
        self.consecutive > self.config.max_consecutive
            && total > 0
            && (bad as f64 / total as f64) > self.config.max_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            max_consecutive: 10,
            max_ratio: 0.9,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn trips_only_when_both_conditions_hold() {
        let now = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..10 {
            assert!(!b.rejected(now));
        }
        assert!(b.rejected(now), "11 consecutive, 100% rejected");

        // Many good messages in the window keep the ratio below 90%.
        let mut b = Breaker::new(cfg());
        for _ in 0..100 {
            b.accepted(now);
        }
        for _ in 0..50 {
            assert!(!b.rejected(now));
        }

        // A good message resets the consecutive count.
        let mut b = Breaker::new(cfg());
        for i in 0..100 {
            if i % 10 == 9 {
                b.accepted(now);
            } else {
                assert!(!b.rejected(now));
            }
        }
    }

    #[test]
    fn old_results_leave_the_window() {
        let start = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..1000 {
            b.accepted(start);
        }
        let later = start + Duration::from_secs(61);
        let mut tripped = false;
        for _ in 0..11 {
            tripped = b.rejected(later);
        }
        assert!(tripped, "the good messages are older than the window");
    }
}
