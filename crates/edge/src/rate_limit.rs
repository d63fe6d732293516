//! Per-key rate limits: a key with `rate_limit_count` per `rate_limit_window` seconds accepts at
//! most that many events in each window. Windows are fixed and aligned to the epoch, as Sentry's
//! quotas are, so `Retry-After` is the time to the next window.
//!
//! Counters live in process memory: each front-door replica enforces the limit on what it
//! receives, so with N replicas behind a balancer a key can get up to N times its limit.

use std::collections::HashMap;
use std::sync::Mutex;

/// The answer for a key over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until the next window.
    pub retry_after: u64,
}

#[derive(Default)]
pub struct RateLimits {
    /// key id → (window index, events counted in it).
    windows: Mutex<HashMap<i64, (u64, u64)>>,
}

impl RateLimits {
    /// Counts `n` events for key `key_id` at epoch second `now` against `count` per `window`
    /// seconds; refuses them (counting nothing) when they do not fit.
    pub fn check(
        &self,
        key_id: i64,
        count: u64,
        window: u64,
        now: u64,
        n: u64,
    ) -> Result<(), Limited> {
        let window = window.max(1);
        let index = now / window;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (i, _)| *i >= index);
        }
        let slot = windows.entry(key_id).or_insert((index, 0));
        if slot.0 != index {
            *slot = (index, 0);
        }
        if slot.1 + n > count {
            return Err(Limited {
                retry_after: ((index + 1) * window - now).max(1),
            });
        }
        slot.1 += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows() {
        let r = RateLimits::default();
        assert!(r.check(1, 2, 60, 120, 1).is_ok());
        assert!(r.check(1, 2, 60, 130, 1).is_ok());
        assert_eq!(r.check(1, 2, 60, 150, 1), Err(Limited { retry_after: 30 }));
        assert!(
            r.check(2, 2, 60, 150, 1).is_ok(),
            "other keys have their own"
        );
        assert!(r.check(1, 2, 60, 180, 2).is_ok(), "a new window");
        assert_eq!(r.check(1, 0, 10, 185, 1), Err(Limited { retry_after: 5 }));
    }
}
