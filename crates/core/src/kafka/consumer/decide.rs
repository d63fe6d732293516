//! The driver's decisions (batch cut, hold versus pause, pause/resume, commit timing, liveness)
//! as plain functions of plain values: no Kafka client, no locks, no channels. Time is always
//! passed in as `now`, so every rule is testable without a broker and without sleeping.

use std::time::{Duration, Instant};

/// How long a full buffer may wait for the batch in flight without polling before the
/// partitions are paused instead (well below any sensible `max.poll.interval.ms`).
pub(super) const HOLD_WITHOUT_PAUSE: Duration = Duration::from_secs(5);
/// How often a failing offset commit is retried.
pub(super) const COMMIT_RETRY: Duration = Duration::from_secs(1);
/// How soon after the last commit an idle consumer (nothing in flight, pending or buffered)
/// commits what its last batch finished, instead of waiting out the commit interval: the lag
/// reads zero as soon as the work is done, and a restart or rebalance re-reads nothing.
pub(super) const IDLE_COMMIT_AFTER: Duration = Duration::from_millis(10);
/// How often the health-check file is touched while the process is live.
pub(super) const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// When a buffer is cut into a batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct CutRule {
    pub(super) max_size: usize,
    pub(super) max_time: Duration,
    /// How old the buffer's first message must be before an idle stage takes it.
    pub(super) linger: Duration,
}

/// Whether the buffer being filled (`buffered` messages, the first received at `started`) is
/// cut into the pending batch: only when no batch is pending already and the buffer is not
/// empty, once it is full, or its first message is `max_time` old, or no batch is in flight
/// and its first message is `linger` old. The last rule makes batching adaptive: messages
/// accumulate only while the stage is busy with the previous batch, so a burst is taken in large
/// batches and a trickle one message at a time, without waiting for the batch time.
pub(super) fn cut_batch(
    buffered: usize,
    pending: bool,
    in_flight: bool,
    started: Instant,
    now: Instant,
    rule: CutRule,
) -> bool {
    let age = now.saturating_duration_since(started);
    !pending
        && buffered > 0
        && (buffered >= rule.max_size || age >= rule.max_time || (!in_flight && age >= rule.linger))
}

/// How long the next poll may wait for a message: `idle` (50 ms at most, within the batch time)
/// when nothing is buffered or in flight; while a batch is in flight, 5 ms, so its completion is
/// seen soon (the messages waiting for it are taken, its offsets committed when it was the
/// last); while messages wait for the linger, no longer than the linger.
/// (A buffer that may be taken now is cut before the poll, so no wait needs to be zero.)
pub(super) fn poll_timeout(
    idle: Duration,
    linger: Duration,
    buffered: bool,
    in_flight: bool,
) -> Duration {
    match (buffered, in_flight) {
        (_, true) => idle.min(Duration::from_millis(5)),
        (false, false) => idle,
        (true, false) if linger.is_zero() => idle,
        (true, false) => idle.min(linger),
    }
}

/// The buffer's fill as a message count: its length, or `max_size` once it holds `max_bytes`.
pub(super) fn fill(len: usize, bytes: usize, max_size: usize, max_bytes: usize) -> usize {
    if bytes >= max_bytes {
        len.max(max_size)
    } else {
        len
    }
}

/// Backpressure: a batch is pending (waiting for the one in flight) and the buffer behind it
/// is full, so nothing more can be accepted.
pub(super) fn backpressure(pending: bool, buffered: usize, max_size: usize) -> bool {
    pending && buffered >= max_size
}

/// Why the partitions are being paused (the label of the pause counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PauseReason {
    /// A dependency every message needs is down.
    Dependency,
    /// The buffer stayed full behind the batch in flight for too long.
    Backpressure,
}

impl PauseReason {
    /// The metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            PauseReason::Dependency => "dependency",
            PauseReason::Backpressure => "backpressure",
        }
    }
}

/// What the driver does about fetching in this turn of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    /// The partitions should be paused (otherwise resumed).
    pub(super) pause: bool,
    /// Do not poll: wait for the batch in flight instead (partitions stay resumed).
    pub(super) hold: bool,
    /// A pause starts now (the partitions are not known to be paused): count it with this
    /// reason.
    pub(super) count_pause: Option<PauseReason>,
}

/// Hold versus pause under backpressure: remembers since when the buffer has been held full.
#[derive(Debug, Default)]
pub(super) struct Hold {
    since: Option<Instant>,
}

impl Hold {
    /// A full buffer first just waits for the batch in flight without polling: pausing would
    /// make librdkafka drop its prefetched messages and fetch them again. Only a batch that
    /// keeps the buffer full for `HOLD_WITHOUT_PAUSE` pauses the partitions, so polling
    /// (rebalances, liveness) goes on. A dependency outage pauses at once, and partitions
    /// already paused are never held (they stay paused). `paused` is `None` when unknown
    /// (after an assignment).
    pub(super) fn decide(
        &mut self,
        backpressure: bool,
        dependency_down: bool,
        paused: Option<bool>,
        now: Instant,
    ) -> Flow {
        self.since = if backpressure {
            self.since.or(Some(now))
        } else {
            None
        };
        let held_long = self
            .since
            .is_some_and(|t| now.saturating_duration_since(t) >= HOLD_WITHOUT_PAUSE);
        let hold = backpressure && !dependency_down && !held_long && paused != Some(true);
        let pause = (backpressure && !hold) || dependency_down;
        let count_pause = (pause && paused != Some(true)).then_some(if dependency_down {
            PauseReason::Dependency
        } else {
            PauseReason::Backpressure
        });
        Flow {
            pause,
            hold,
            count_pause,
        }
    }
}

/// Whether pause or resume must be applied to the assignment: whenever the wanted state is not
/// the one known to be in effect (always when unknown, after an assignment).
pub(super) fn must_apply_pause(paused: Option<bool>, want_pause: bool) -> bool {
    paused != Some(want_pause)
}

/// Whether a timed commit is due: `interval` after the last one (`last_commit`), but only once
/// a second (`COMMIT_RETRY`) while commits fail (`failed_at`: when a commit last failed, read
/// only when that matters).
pub(super) fn commit_due(
    last_commit: Instant,
    failed_at: impl FnOnce() -> Option<Instant>,
    interval: Duration,
    now: Instant,
) -> bool {
    let elapsed = now.saturating_duration_since(last_commit);
    elapsed >= interval
        && (elapsed >= COMMIT_RETRY
            || failed_at().is_none_or(|t| now.saturating_duration_since(t) >= COMMIT_RETRY))
}

/// Progress-aware liveness: the driver is making progress when idle (no batch was in flight),
/// when the batch in flight changed (it completed), or while waiting out a known dependency
/// outage. `before`/`after`: the id of the batch in flight before and after applying the
/// completions.
pub(super) fn progressing(before: Option<u64>, after: Option<u64>, dependency_down: bool) -> bool {
    before.is_none() || after != before || dependency_down
}

/// How long the batch in flight has been held while the dependencies answer; the clock starts
/// with each new batch and stops while no batch is in flight or a dependency check fails (an
/// outage is waited out, never reported as stuck).
pub(super) fn held_for(
    since: &mut Option<(u64, Instant)>,
    in_flight: Option<u64>,
    dependencies_answer: bool,
    now: Instant,
) -> Duration {
    match in_flight {
        Some(id) if dependencies_answer => {
            let start = match since {
                Some((held, at)) if *held == id => *at,
                _ => {
                    *since = Some((id, now));
                    now
                }
            };
            now.saturating_duration_since(start)
        }
        _ => {
            *since = None;
            Duration::ZERO
        }
    }
}

/// Whether the health-check file is touched now (while live): every `TOUCH_EVERY`, and at once
/// if it never was.
pub(super) fn touch_due(last_touch: Option<Instant>, now: Instant) -> bool {
    last_touch.is_none_or(|t| now.saturating_duration_since(t) >= TOUCH_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    fn flow(pause: bool, hold: bool, count_pause: Option<PauseReason>) -> Flow {
        Flow {
            pause,
            hold,
            count_pause,
        }
    }

    // Batch cut.

    /// The rule of a busy stage (linger irrelevant while a batch is in flight).
    fn busy(max_size: usize, max_time: Duration) -> CutRule {
        CutRule {
            max_size,
            max_time,
            linger: Duration::ZERO,
        }
    }

    #[test]
    fn polls_wait_long_only_when_nothing_waits() {
        let idle = ms(50);
        assert_eq!(poll_timeout(idle, Duration::ZERO, false, false), idle);
        assert_eq!(poll_timeout(idle, Duration::ZERO, false, true), ms(5));
        assert_eq!(poll_timeout(idle, Duration::ZERO, true, true), ms(5));
        assert_eq!(poll_timeout(idle, ms(20), true, false), ms(20));
        assert_eq!(poll_timeout(idle, ms(200), true, false), idle);
    }

    #[test]
    fn an_idle_stage_takes_the_buffer_after_the_linger() {
        let t0 = Instant::now();
        let rule = CutRule {
            max_size: 1000,
            max_time: secs(1),
            linger: Duration::ZERO,
        };
        // Nothing in flight: one message goes at once.
        assert!(cut_batch(1, false, false, t0, t0, rule));
        // A batch in flight: the buffer keeps filling until size or time.
        assert!(!cut_batch(1, false, true, t0, t0 + ms(999), rule));
        assert!(cut_batch(1, false, true, t0, t0 + secs(1), rule));
        // Never while a batch is pending, nor with an empty buffer.
        assert!(!cut_batch(1, true, false, t0, t0, rule));
        assert!(!cut_batch(0, false, false, t0, t0 + secs(5), rule));
        let lingering = CutRule {
            linger: ms(20),
            ..rule
        };
        assert!(!cut_batch(1, false, false, t0, t0 + ms(19), lingering));
        assert!(cut_batch(1, false, false, t0, t0 + ms(20), lingering));
    }

    #[test]
    fn cuts_a_full_buffer_before_the_batch_time() {
        let t0 = Instant::now();
        assert!(cut_batch(10, false, true, t0, t0, busy(10, secs(1))));
        assert!(cut_batch(
            11,
            false,
            true,
            t0,
            t0 + ms(1),
            busy(10, secs(1))
        ));
        assert!(!cut_batch(
            9,
            false,
            true,
            t0,
            t0 + ms(999),
            busy(10, secs(1))
        ));
    }

    #[test]
    fn cuts_on_batch_time() {
        let t0 = Instant::now();
        let cut_at = |now| cut_batch(1, false, true, t0, now, busy(10, ms(500)));
        assert!(!cut_at(t0 + ms(499)));
        assert!(cut_at(t0 + ms(500)));
        assert!(cut_at(t0 + secs(7)));
    }

    #[test]
    fn no_cut_while_a_batch_is_pending() {
        let t0 = Instant::now();
        assert!(!cut_batch(10, true, true, t0, t0, busy(10, secs(1))));
        assert!(!cut_batch(
            50,
            true,
            true,
            t0,
            t0 + secs(10),
            busy(10, secs(1))
        ));
    }

    #[test]
    fn a_buffer_full_of_bytes_counts_as_full() {
        assert_eq!(fill(3, 100, 1000, 1 << 20), 3);
        assert_eq!(fill(3, 1 << 20, 1000, 1 << 20), 1000);
        let t0 = Instant::now();
        assert!(cut_batch(
            fill(3, 1 << 20, 1000, 1 << 20),
            false,
            true,
            t0,
            t0,
            busy(1000, secs(1))
        ));
        assert!(backpressure(true, fill(3, 1 << 20, 1000, 1 << 20), 1000));
    }

    #[test]
    fn never_cuts_an_empty_buffer() {
        let t0 = Instant::now();
        assert!(!cut_batch(
            0,
            false,
            true,
            t0,
            t0 + secs(10),
            busy(10, secs(1))
        ));
        // A zero size limit still needs a message.
        assert!(!cut_batch(0, false, true, t0, t0, busy(0, secs(1))));
    }

    #[test]
    fn backpressure_needs_a_pending_batch_and_a_full_buffer() {
        assert!(backpressure(true, 10, 10));
        assert!(backpressure(true, 12, 10));
        assert!(!backpressure(true, 9, 10));
        assert!(!backpressure(false, 10, 10));
    }

    // Hold versus pause.

    #[test]
    fn holds_while_the_batch_in_flight_runs_and_the_buffer_is_full() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        let f = h.decide(true, false, Some(false), t0);
        assert_eq!(f, flow(false, true, None));
        let f = h.decide(true, false, Some(false), t0 + ms(4999));
        assert!(f.hold && !f.pause);
    }

    #[test]
    fn pauses_after_five_seconds_held() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        assert!(h.decide(true, false, Some(false), t0).hold);
        let f = h.decide(true, false, Some(false), t0 + secs(5));
        assert_eq!(f, flow(true, false, Some(PauseReason::Backpressure)));
        // Once paused, it stays paused and the pause is not counted again.
        let f = h.decide(true, false, Some(true), t0 + secs(6));
        assert_eq!(f, flow(true, false, None));
    }

    #[test]
    fn the_hold_clock_restarts_when_backpressure_ends() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        assert!(h.decide(true, false, Some(false), t0).hold);
        let f = h.decide(false, false, Some(false), t0 + secs(4));
        assert!(!f.hold && !f.pause && f.count_pause.is_none());
        // Held again from t0 + 6 s: not long yet at t0 + 10 s.
        assert!(h.decide(true, false, Some(false), t0 + secs(6)).hold);
        assert!(h.decide(true, false, Some(false), t0 + secs(10)).hold);
        assert!(h.decide(true, false, Some(false), t0 + secs(11)).pause);
    }

    #[test]
    fn pauses_at_once_when_a_dependency_is_down() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        let f = h.decide(false, true, Some(false), t0);
        assert_eq!(f, flow(true, false, Some(PauseReason::Dependency)));
        // Also with a full buffer: no hold, and the reason is the dependency.
        let f = h.decide(true, true, Some(false), t0);
        assert!(f.pause && !f.hold);
        assert_eq!(f.count_pause, Some(PauseReason::Dependency));
        // Already paused: nothing new to count.
        assert_eq!(h.decide(true, true, Some(true), t0).count_pause, None);
    }

    #[test]
    fn never_holds_when_already_paused() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        let f = h.decide(true, false, Some(true), t0);
        assert_eq!(f, flow(true, false, None));
    }

    #[test]
    fn unknown_pause_state_holds_and_counts_a_pause_when_pausing() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        assert!(h.decide(true, false, None, t0).hold);
        let f = h.decide(false, true, None, t0);
        assert_eq!(f.count_pause, Some(PauseReason::Dependency));
        // Neither backpressure nor outage: resume, nothing counted.
        let f = h.decide(false, false, None, t0);
        assert!(!f.pause && !f.hold && f.count_pause.is_none());
    }

    #[test]
    fn pause_reason_labels() {
        assert_eq!(PauseReason::Dependency.label(), "dependency");
        assert_eq!(PauseReason::Backpressure.label(), "backpressure");
    }

    // Pause / resume application.

    #[test]
    fn applies_pause_or_resume_only_on_change_or_when_unknown() {
        assert!(!must_apply_pause(Some(false), false));
        assert!(!must_apply_pause(Some(true), true));
        assert!(must_apply_pause(Some(false), true));
        assert!(must_apply_pause(Some(true), false));
        assert!(must_apply_pause(None, false));
        assert!(must_apply_pause(None, true));
    }

    // Commit timing.

    #[test]
    fn an_idle_consumer_commits_soon_after_its_last_batch() {
        let t0 = Instant::now();
        assert!(!commit_due(t0, || None, IDLE_COMMIT_AFTER, t0 + ms(9)));
        assert!(commit_due(t0, || None, IDLE_COMMIT_AFTER, t0 + ms(10)));
        // Still at most once a second while commits fail.
        assert!(!commit_due(
            t0,
            || Some(t0),
            IDLE_COMMIT_AFTER,
            t0 + ms(500)
        ));
    }

    #[test]
    fn commit_due_at_the_interval() {
        let t0 = Instant::now();
        assert!(!commit_due(t0, || None, ms(100), t0 + ms(99)));
        assert!(commit_due(t0, || None, ms(100), t0 + ms(100)));
        assert!(commit_due(t0, || None, ms(100), t0 + secs(3)));
    }

    #[test]
    fn commit_throttled_to_once_a_second_after_a_failure() {
        let t0 = Instant::now();
        // Failed just now: the 100 ms interval is not enough, one second is.
        assert!(!commit_due(t0, || Some(t0), ms(100), t0 + ms(200)));
        assert!(!commit_due(t0, || Some(t0), ms(100), t0 + ms(999)));
        assert!(commit_due(t0, || Some(t0), ms(100), t0 + secs(1)));
        // A failure after the last commit attempt: still one second since that failure...
        let failed = t0 + ms(500);
        assert!(!commit_due(t0, || Some(failed), ms(100), t0 + ms(900)));
        // ...unless the last commit itself is a second old.
        assert!(commit_due(t0, || Some(failed), ms(100), t0 + secs(1)));
    }

    #[test]
    fn commit_not_throttled_when_the_last_failure_is_old() {
        let t0 = Instant::now();
        let failed = t0;
        let last = t0 + secs(2);
        assert!(commit_due(last, || Some(failed), ms(100), last + ms(100)));
        assert!(!commit_due(last, || Some(failed), ms(100), last + ms(50)));
    }

    #[test]
    fn a_long_interval_is_not_shortened_by_the_retry_period() {
        let t0 = Instant::now();
        assert!(!commit_due(t0, || None, secs(5), t0 + secs(2)));
        assert!(!commit_due(t0, || Some(t0), secs(5), t0 + secs(2)));
        assert!(commit_due(t0, || Some(t0), secs(5), t0 + secs(5)));
    }

    // Liveness.

    #[test]
    fn progress_when_idle() {
        assert!(progressing(None, None, false));
        // A batch dispatched since is not a stall either.
        assert!(progressing(None, Some(3), false));
    }

    #[test]
    fn progress_when_the_batch_in_flight_changed() {
        assert!(progressing(Some(3), None, false));
        assert!(progressing(Some(3), Some(4), false));
    }

    #[test]
    fn progress_while_a_dependency_is_down() {
        assert!(progressing(Some(3), Some(3), true));
    }

    #[test]
    fn no_progress_while_the_same_batch_is_in_flight() {
        assert!(!progressing(Some(3), Some(3), false));
    }

    #[test]
    fn held_time_counts_one_batch_while_dependencies_answer() {
        let t0 = Instant::now();
        let mut since = None;
        assert_eq!(held_for(&mut since, Some(1), true, t0), Duration::ZERO);
        assert_eq!(held_for(&mut since, Some(1), true, t0 + secs(30)), secs(30));
        // A new batch restarts the clock.
        assert_eq!(
            held_for(&mut since, Some(2), true, t0 + secs(31)),
            Duration::ZERO
        );
        assert_eq!(held_for(&mut since, Some(2), true, t0 + secs(40)), secs(9));
        // A failing dependency check stops it: an outage is not being stuck.
        assert_eq!(
            held_for(&mut since, Some(2), false, t0 + secs(50)),
            Duration::ZERO
        );
        assert_eq!(
            held_for(&mut since, Some(2), true, t0 + secs(60)),
            Duration::ZERO
        );
        assert_eq!(held_for(&mut since, Some(2), true, t0 + secs(70)), secs(10));
        // Idle is never stuck.
        assert_eq!(
            held_for(&mut since, None, true, t0 + secs(80)),
            Duration::ZERO
        );
    }

    #[test]
    fn touches_the_health_file_once_a_second() {
        let t0 = Instant::now();
        assert!(touch_due(None, t0));
        assert!(!touch_due(Some(t0), t0 + ms(999)));
        assert!(touch_due(Some(t0), t0 + secs(1)));
        assert!(touch_due(Some(t0), t0 + secs(30)));
    }
}
