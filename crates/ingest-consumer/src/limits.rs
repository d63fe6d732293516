//! Per-project attachment save limits (`attachments.project_per_sec_limit`,
//! `attachments.project_per_5_minute_limit`; 0 = off, the default). Fixed windows kept in process
//! memory: with several replicas each enforces the limit on its own share of the traffic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which window refused a save (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    PerSec,
    PerFiveMin,
}

impl Limited {
    pub fn label(self) -> &'static str {
        match self {
            Limited::PerSec => "per_sec",
            Limited::PerFiveMin => "per_five_min",
        }
    }
}

/// The limiter.
pub struct AttachmentLimiter {
    per_sec: u32,
    per_5_min: u32,
    windows: Mutex<HashMap<u64, Windows>>,
}

#[derive(Default)]
struct Windows {
    sec: (u64, u32),
    five_min: (u64, u32),
}

impl AttachmentLimiter {
    pub fn new(per_sec: u32, per_5_min: u32) -> Self {
        AttachmentLimiter {
            per_sec,
            per_5_min,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any limit is configured.
    pub fn enabled(&self) -> bool {
        self.per_sec > 0 || self.per_5_min > 0
    }

    /// Counts one save for `project_id`; `Some` when a window is full (the save must not happen).
    pub fn check(&self, project_id: u64) -> Option<Limited> {
        if !self.enabled() {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.check_at(project_id, now)
    }

    fn check_at(&self, project_id: u64, now: u64) -> Option<Limited> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry(project_id).or_default();
        if w.sec.0 != now {
            w.sec = (now, 0);
        }
        let five = now / 300;
        if w.five_min.0 != five {
            w.five_min = (five, 0);
        }
        if self.per_sec > 0 && w.sec.1 >= self.per_sec {
            return Some(Limited::PerSec);
        }
        if self.per_5_min > 0 && w.five_min.1 >= self.per_5_min {
            return Some(Limited::PerFiveMin);
        }
        w.sec.1 += 1;
        w.five_min.1 += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_windows_reset() {
        assert_eq!(AttachmentLimiter::new(0, 0).check(1), None);
        let l = AttachmentLimiter::new(2, 3);
        assert_eq!(l.check_at(1, 600), None);
        assert_eq!(l.check_at(1, 600), None);
        assert_eq!(l.check_at(1, 600), Some(Limited::PerSec));
        assert_eq!(l.check_at(2, 600), None, "per project");
        assert_eq!(l.check_at(1, 601), None);
        assert_eq!(l.check_at(1, 602), Some(Limited::PerFiveMin));
        assert_eq!(l.check_at(1, 900), None, "next five-minute window");
    }
}
