//! The DLQ circuit breaker: trips on systemic failure only, when
//! - more than `max_consecutive` messages in a row were rejected, **and**
//! - more than `max_ratio` of the messages of the last `window` were rejected, **and**
//! - no single project accounts for more than `max_tenant_share` of those rejections.
//!
//! The first two alone are normal (a burst of bad input; a slow trickle of bad input). The third
//! keeps one tenant from stopping the stage: a project sending malformed traffic, however long,
//! only gets its messages dead-lettered and counted (`sluice_consumer_breaker_held_total` with
//! its project id, and a warning). Rejections whose project cannot be read (undecodable bytes)
//! belong to no project, so a flood of those, or bad input from many projects, trips it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Breaker thresholds.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub max_consecutive: u64,
    pub max_ratio: f64,
    pub window: Duration,
    /// Largest share of the window's rejections one project may have for the breaker to trip.
    pub max_tenant_share: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            max_consecutive: 1000,
            max_ratio: 0.9,
            window: Duration::from_secs(60),
            max_tenant_share: 0.5,
        }
    }
}

/// What one rejection did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Below the thresholds.
    No,
    /// Systemic failure: the stage stops.
    Tripped,
    /// The thresholds are met, but by this one project's traffic: the stage goes on.
    HeldBy(u64),
}

/// One second of results.
#[derive(Debug)]
struct Bucket {
    start: Instant,
    accepted: u64,
    rejected: u64,
    /// Rejections by project (messages whose project could be read).
    by_tenant: HashMap<u64, u64>,
}

/// Tracks recent results.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    consecutive: u64,
    buckets: VecDeque<Bucket>,
}

/// Distinct projects remembered per one-second bucket (bounds memory under any traffic).
const MAX_TENANTS_PER_BUCKET: usize = 1024;

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            consecutive: 0,
            buckets: VecDeque::new(),
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        while self
            .buckets
            .front()
            .is_some_and(|b| now.duration_since(b.start) > self.config.window)
        {
            self.buckets.pop_front();
        }
        let fresh = self
            .buckets
            .back()
            .is_none_or(|b| now.duration_since(b.start) >= Duration::from_secs(1));
        if fresh {
            self.buckets.push_back(Bucket {
                start: now,
                accepted: 0,
                rejected: 0,
                by_tenant: HashMap::new(),
            });
        }
        // Just pushed or already present.
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// A message was processed (not rejected).
    pub fn accepted(&mut self, now: Instant) {
        self.consecutive = 0;
        self.bucket(now).accepted += 1;
    }

    /// A message of `tenant` (its project, when readable) was rejected.
    pub fn rejected(&mut self, now: Instant, tenant: Option<u64>) -> Trip {
        self.consecutive += 1;
        let b = self.bucket(now);
        b.rejected += 1;
        if let Some(t) = tenant {
            if b.by_tenant.len() < MAX_TENANTS_PER_BUCKET || b.by_tenant.contains_key(&t) {
                *b.by_tenant.entry(t).or_default() += 1;
            }
        }
        self.state()
    }

    /// The breaker's state after the latest result.
    pub fn state(&self) -> Trip {
        let (ok, bad) = self
            .buckets
            .iter()
            .fold((0u64, 0u64), |(a, r), b| (a + b.accepted, r + b.rejected));
        let total = ok + bad;
        let over = self.consecutive > self.config.max_consecutive
            && total > 0
            && (bad as f64 / total as f64) > self.config.max_ratio;
        if !over {
            return Trip::No;
        }
        let mut by_tenant: HashMap<u64, u64> = HashMap::new();
        for b in &self.buckets {
            for (t, n) in &b.by_tenant {
                *by_tenant.entry(*t).or_default() += n;
            }
        }
        match by_tenant.into_iter().max_by_key(|(_, n)| *n) {
            Some((t, n)) if n as f64 > self.config.max_tenant_share * bad as f64 => Trip::HeldBy(t),
            _ => Trip::Tripped,
        }
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
            max_tenant_share: 0.5,
        }
    }

    #[test]
    fn trips_only_when_both_conditions_hold() {
        let now = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..10 {
            assert_eq!(b.rejected(now, None), Trip::No);
        }
        assert_eq!(
            b.rejected(now, None),
            Trip::Tripped,
            "11 consecutive, 100% rejected"
        );

        // Many good messages in the window keep the ratio below 90%.
        let mut b = Breaker::new(cfg());
        for _ in 0..100 {
            b.accepted(now);
        }
        for _ in 0..50 {
            assert_eq!(b.rejected(now, None), Trip::No);
        }

        // A good message resets the consecutive count.
        let mut b = Breaker::new(cfg());
        for i in 0..100 {
            if i % 10 == 9 {
                b.accepted(now);
            } else {
                assert_eq!(b.rejected(now, None), Trip::No);
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
        let mut trip = Trip::No;
        for _ in 0..11 {
            trip = b.rejected(later, None);
        }
        assert_eq!(
            trip,
            Trip::Tripped,
            "the good messages are older than the window"
        );
    }

    #[test]
    fn one_projects_bad_traffic_never_trips_it() {
        let now = Instant::now();
        let mut b = Breaker::new(cfg());
        for i in 0..10_000u64 {
            let t = b.rejected(now + Duration::from_millis(i), Some(42));
            assert!(t != Trip::Tripped, "tripped at {i}");
        }
        assert_eq!(b.state(), Trip::HeldBy(42));
        // A little undecodable input mixed in does not change that.
        for _ in 0..100 {
            b.rejected(now, None);
        }
        assert_eq!(b.state(), Trip::HeldBy(42));
    }

    #[test]
    fn bad_input_from_many_projects_trips_it() {
        let now = Instant::now();
        let mut b = Breaker::new(cfg());
        let mut trip = Trip::No;
        for i in 0..11u64 {
            trip = b.rejected(now, Some(i % 4));
        }
        assert_eq!(trip, Trip::Tripped);
    }
}
