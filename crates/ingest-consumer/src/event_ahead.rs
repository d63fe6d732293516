//! Error events inserted ahead of their batch: while a batch produces its occurrences and emits
//! its outcomes, the database already stores the events of the batch after it.
//!
//! The insert is the first effect [`crate::event::process_ready`] makes, and it is keyed by the
//! event (first write wins), so a batch whose prepared work goes unused or that is replayed
//! inserts nothing twice. Two rules keep it the same effect the batch would make itself:
//!
//! - **It never overtakes an earlier message.** It starts only once every partition of its
//!   batch has been inserted up to the batch's first message ([`InsertedUpTo`]): when the same
//!   event comes twice, the first copy by offset is the one stored, as without it.
//! - **A batch never waits for an insert that has not started.** When the batch is processed
//!   before its insert ahead could start (its partitions' earlier messages were not through
//!   their insert yet: the first batch of a partition, a gap in its offsets, a batch that
//!   failed), the insert ahead is cancelled and the batch inserts its events itself.
//!
//! An insert ahead that has started runs to its end even if its batch's prepared work is
//! dropped (the database call cannot be stopped halfway); the batch then waits for it before
//! inserting, so the two never run at once.

use crate::context::Deps;
use crate::event::{insert, rows_in_parts, Ready};
use sluice_core::kafka::consumer::Msg;
use sluice_core::storage::{DbError, EventKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::task::AbortOnDropHandle;

/// A partition: topic and number.
type Tp = (Arc<str>, i32);

/// Per partition, the offset after the last message of a batch whose error events are all
/// stored: every event of that partition before it has been inserted.
#[derive(Default)]
pub struct InsertedUpTo {
    next: Mutex<HashMap<Tp, i64>>,
    changed: tokio::sync::Notify,
}

impl InsertedUpTo {
    /// Records that the error events of `batch` are stored (or that it has none).
    pub fn passed(&self, batch: &[Arc<Msg>]) {
        if let Ok(mut next) = self.next.lock() {
            for m in batch {
                let at = next.entry((m.topic.clone(), m.partition)).or_insert(0);
                *at = (*at).max(m.offset.saturating_add(1));
            }
        }
        self.changed.notify_waiters();
    }

    /// Whether every partition of `firsts` has been inserted up to its first offset there.
    fn reached(&self, firsts: &HashMap<Tp, i64>) -> bool {
        match self.next.lock() {
            Ok(next) => firsts
                .iter()
                .all(|(tp, first)| next.get(tp).is_some_and(|at| at >= first)),
            Err(_) => false,
        }
    }

    /// Waits until [`InsertedUpTo::reached`].
    async fn wait(&self, firsts: &HashMap<Tp, i64>) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.reached(firsts) {
                return;
            }
            changed.await;
        }
    }
}

/// The first offset of each partition in `batch`.
fn firsts(batch: &[Arc<Msg>]) -> HashMap<Tp, i64> {
    let mut firsts: HashMap<Tp, i64> = HashMap::new();
    for m in batch {
        let at = firsts
            .entry((m.topic.clone(), m.partition))
            .or_insert(m.offset);
        *at = (*at).min(m.offset);
    }
    firsts
}

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const CANCELLED: u8 = 2;

/// What an insert returns: the group of the events that already have one.
type Inserted = Result<HashMap<EventKey, i64>, DbError>;

/// The insert of a batch's error events, started ahead ([`insert_ahead`]).
#[derive(Default)]
pub struct Ahead {
    task: Option<AbortOnDropHandle<Option<Inserted>>>,
    state: Arc<AtomicU8>,
    /// Made for events chosen with projects since read again: awaited, not used.
    stale: bool,
}

impl Ahead {
    /// The insert ahead of a batch whose events are chosen again: the batch waits for it (if
    /// it started) before inserting its events itself.
    pub fn stale(mut self) -> Ahead {
        self.stale = true;
        self
    }

    /// Whether an insert was started ahead (it may still be waiting for its turn).
    pub fn started_ahead(&self) -> bool {
        self.task.is_some()
    }

    /// What the insert ahead stored, once it is done; `None` when the batch must insert its
    /// events itself (nothing was started ahead, it had not started and is now cancelled, it
    /// was stale, or its task was lost).
    pub async fn outcome(self) -> Option<Inserted> {
        let task = self.task?;
        let cancelled = self
            .state
            .compare_exchange(WAITING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if cancelled {
            return None;
        }
        let inserted = task.await.ok().flatten();
        if self.stale {
            None
        } else {
            inserted
        }
    }
}

/// Starts inserting the error events `items` of `batch`, a batch handed over while the batch
/// before it is in flight: the insert waits for its turn ([`InsertedUpTo`]), then runs unless
/// the batch has already been taken up ([`Ahead::outcome`]).
pub fn insert_ahead(deps: &Arc<Deps>, batch: &[Arc<Msg>], items: &[Ready]) -> Ahead {
    if items.is_empty() {
        return Ahead::default();
    }
    let state = Arc::new(AtomicU8::new(WAITING));
    let (deps, firsts, parts, turn) = (
        deps.clone(),
        firsts(batch),
        rows_in_parts(items),
        state.clone(),
    );
    let task = tokio::spawn(async move {
        deps.inserted.wait(&firsts).await;
        turn.compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(insert(&deps, parts).await)
    });
    Ahead {
        task: Some(AbortOnDropHandle::new(task)),
        state,
        stale: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(partition: i32, offset: i64) -> Arc<Msg> {
        Arc::new(Msg {
            topic: Arc::from("ingest-events"),
            partition,
            offset,
            key: None,
            payload: None,
            headers: Vec::new(),
            timestamp_ms: None,
        })
    }

    #[test]
    fn a_batch_waits_for_every_earlier_message_of_its_partitions() {
        let inserted = InsertedUpTo::default();
        let next = firsts(&[msg(0, 10), msg(1, 5), msg(0, 11)]);
        assert_eq!(next.get(&(Arc::from("ingest-events"), 0)), Some(&10));
        // Nothing inserted yet on these partitions: not its turn.
        assert!(!inserted.reached(&next));
        // Partition 0 through offset 9, partition 1 not yet.
        inserted.passed(&[msg(0, 8), msg(0, 9)]);
        assert!(!inserted.reached(&next));
        // Partition 1 only up to 3: offset 4 is still with another batch.
        inserted.passed(&[msg(1, 3)]);
        assert!(!inserted.reached(&next));
        inserted.passed(&[msg(1, 4)]);
        assert!(inserted.reached(&next));
        // An older batch passing later never moves a partition back.
        inserted.passed(&[msg(0, 2)]);
        assert!(inserted.reached(&next));
    }

    #[tokio::test]
    async fn the_insert_ahead_starts_when_its_turn_comes() {
        let inserted = Arc::new(InsertedUpTo::default());
        let next = firsts(&[msg(0, 100)]);
        let waiting = {
            let (inserted, next) = (inserted.clone(), next.clone());
            tokio::spawn(async move { inserted.wait(&next).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        inserted.passed(&[msg(0, 99)]);
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(matches!(woke, Ok(Ok(()))), "the waiting insert woke up");
    }

    #[tokio::test]
    async fn a_batch_taken_up_before_its_turn_cancels_the_insert_ahead() {
        let state = Arc::new(AtomicU8::new(WAITING));
        let turn = state.clone();
        let gate = Arc::new(tokio::sync::Notify::new());
        let task = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.notified().await;
                turn.compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
                    .ok()?;
                Some(Ok(HashMap::new()))
            })
        };
        let ahead = Ahead {
            task: Some(AbortOnDropHandle::new(task)),
            state: state.clone(),
            stale: false,
        };
        // Taken up while still waiting: cancelled, the batch inserts itself.
        assert!(ahead.outcome().await.is_none());
        assert_eq!(state.load(Ordering::Acquire), CANCELLED);
        gate.notify_one();
    }

    /// An insert ahead that has started, returning one grouped event.
    async fn started() -> Ahead {
        let state = Arc::new(AtomicU8::new(WAITING));
        let turn = state.clone();
        let task = tokio::spawn(async move {
            turn.compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .ok()?;
            Some(Ok(HashMap::from([((7, "e".to_owned()), 3)])))
        });
        while state.load(Ordering::Acquire) == WAITING {
            tokio::task::yield_now().await;
        }
        Ahead {
            task: Some(AbortOnDropHandle::new(task)),
            state,
            stale: false,
        }
    }

    #[tokio::test]
    async fn a_started_insert_ahead_is_awaited_and_used_unless_stale() {
        let used = started().await.outcome().await;
        assert!(matches!(used, Some(Ok(ref g)) if g.get(&(7, "e".to_owned())) == Some(&3)));
        let stale = started().await.stale();
        assert!(stale.started_ahead());
        assert!(stale.outcome().await.is_none());
        assert!(Ahead::default().outcome().await.is_none());
    }
}
