//! Work a stage did ahead on a batch ([`super::Stage::prepare`]), kept until `process` takes it.

use super::Msg;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// A few batches' prepared work, each found again only by a batch holding exactly the same
/// messages. At most `KEEP` are kept (one per member of the group in this process is what is
/// used; older ones, left by a batch that was never processed after a rebalance, are dropped).
pub struct Prepared<T> {
    slots: Mutex<VecDeque<Slot<T>>>,
}

/// One batch's work: `None` inside once it is known that nothing was prepared.
type Cell<T> = Arc<OnceCell<Mutex<Option<T>>>>;

struct Slot<T> {
    key: Vec<(Arc<str>, i32, i64)>,
    cell: Cell<T>,
}

const KEEP: usize = 4;

/// Adds a slot, dropping the oldest beyond `KEEP`.
fn keep<T>(slots: &mut VecDeque<Slot<T>>, key: Vec<(Arc<str>, i32, i64)>, cell: Cell<T>) {
    if slots.len() >= KEEP {
        slots.pop_front();
    }
    slots.push_back(Slot { key, cell });
}

fn key_of(batch: &[Arc<Msg>]) -> Vec<(Arc<str>, i32, i64)> {
    batch
        .iter()
        .map(|m| (m.topic.clone(), m.partition, m.offset))
        .collect()
}

impl<T> Default for Prepared<T> {
    fn default() -> Self {
        Prepared {
            slots: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T: Send> Prepared<T> {
    /// Does `work` for `batch` ahead of its processing.
    pub async fn ahead<F>(&self, batch: &[Arc<Msg>], work: F)
    where
        F: Future<Output = T>,
    {
        let cell: Cell<T> = Arc::new(OnceCell::new());
        let key = key_of(batch);
        if let Ok(mut slots) = self.slots.lock() {
            // Already processed (the batch started before its preparing did): nothing to do.
            if slots.iter().any(|s| s.key == key) {
                return;
            }
            keep(&mut slots, key, cell.clone());
        }
        cell.get_or_init(|| async { Mutex::new(Some(work.await)) })
            .await;
    }

    /// The work prepared for exactly `batch`, waited for if it is still under way; otherwise
    /// (nothing prepared, the preparing stopped before it finished, or `usable` refuses what
    /// was prepared: made during an outage, or too long ago) `work` done now. `usable` may take
    /// from work it refuses what stays valid.
    pub async fn take_or<F>(
        &self,
        batch: &[Arc<Msg>],
        usable: impl FnOnce(&mut T) -> bool,
        work: F,
    ) -> T
    where
        F: Future<Output = T>,
    {
        let key = key_of(batch);
        let cell = self.slots.lock().ok().and_then(|mut slots| {
            let at = slots.iter().position(|s| s.key == key)?;
            slots.remove(at).map(|s| s.cell)
        });
        match cell {
            Some(cell) => {
                // Waits for a preparing under way; marks an abandoned one as nothing prepared.
                let ready = cell.get_or_init(|| async { Mutex::new(None) }).await;
                let done = ready.lock().ok().and_then(|mut r| r.take());
                if let Some(mut done) = done {
                    if usable(&mut done) {
                        return done;
                    }
                }
            }
            None => {
                // Leaves a mark, so a preparing that starts only now is skipped.
                if let Ok(mut slots) = self.slots.lock() {
                    let done = OnceCell::new_with(Some(Mutex::new(None)));
                    keep(&mut slots, key, Arc::new(done));
                }
            }
        }
        work.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<T: Send> Prepared<T> {
        /// [`Prepared::take_or`] taking whatever was prepared.
        async fn take_or_any<F: Future<Output = T>>(&self, batch: &[Arc<Msg>], work: F) -> T {
            self.take_or(batch, |_| true, work).await
        }
    }

    fn batch(offsets: std::ops::Range<i64>) -> Vec<Arc<Msg>> {
        offsets
            .map(|offset| {
                Arc::new(Msg {
                    topic: Arc::from("t"),
                    partition: 0,
                    offset,
                    key: None,
                    payload: None,
                    headers: vec![],
                    timestamp_ms: None,
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn found_only_by_the_same_messages_and_only_once() {
        let p = Prepared::<u32>::default();
        p.ahead(&batch(0..3), async { 7 }).await;
        assert_eq!(p.take_or_any(&batch(0..2), async { 0 }).await, 0, "a part");
        assert_eq!(p.take_or_any(&batch(1..4), async { 0 }).await, 0, "others");
        assert_eq!(
            p.take_or_any(&batch(0..3), async { 0 }).await,
            7,
            "the batch"
        );
        assert_eq!(
            p.take_or_any(&batch(0..3), async { 0 }).await,
            0,
            "taken once"
        );
    }

    #[tokio::test]
    async fn keeps_a_few_batches_and_drops_the_oldest() {
        let p = Prepared::<i64>::default();
        for n in 0..(KEEP as i64 + 1) {
            p.ahead(&batch(n * 10..n * 10 + 2), async move { n }).await;
        }
        assert_eq!(
            p.take_or_any(&batch(0..2), async { -1 }).await,
            -1,
            "dropped"
        );
        let last = KEEP as i64 * 10;
        let got = p.take_or_any(&batch(last..last + 2), async { -1 }).await;
        assert_eq!(got, KEEP as i64);
    }

    #[tokio::test]
    async fn taken_while_under_way_it_is_awaited_not_redone() {
        let p = Arc::new(Prepared::<u32>::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ahead = {
            let p = p.clone();
            tokio::spawn(async move {
                p.ahead(&batch(0..2), async {
                    let _ = rx.await;
                    1
                })
                .await
            })
        };
        // Let the preparing start and wait on `rx`, then release it while it is awaited.
        tokio::task::yield_now().await;
        let release = async {
            tokio::task::yield_now().await;
            let _ = tx.send(());
        };
        let same = batch(0..2);
        let (got, ()) = tokio::join!(p.take_or_any(&same, async { 2 }), release);
        assert_eq!(got, 1, "the work under way was awaited");
        let _ = ahead.await;
    }

    #[tokio::test]
    async fn refused_work_is_done_again() {
        let p = Prepared::<u32>::default();
        p.ahead(&batch(0..2), async { 1 }).await;
        let got = p.take_or(&batch(0..2), |n| *n != 1, async { 2 }).await;
        assert_eq!(got, 2, "the prepared 1 was refused");
        p.ahead(&batch(2..4), async { 3 }).await;
        let got = p.take_or(&batch(2..4), |n| *n != 1, async { 2 }).await;
        assert_eq!(got, 3, "the prepared 3 was taken");
    }

    #[tokio::test]
    async fn refused_work_can_be_taken_from() {
        let p = Prepared::<Vec<u32>>::default();
        p.ahead(&batch(0..2), async { vec![1, 2] }).await;
        let mut kept = Vec::new();
        let got = p
            .take_or(
                &batch(0..2),
                |v| {
                    kept = std::mem::take(v);
                    false
                },
                async { vec![3] },
            )
            .await;
        assert_eq!((got, kept), (vec![3], vec![1, 2]));
    }

    #[tokio::test]
    async fn a_preparing_that_starts_after_its_batch_is_skipped() {
        let p = Prepared::<u32>::default();
        assert_eq!(p.take_or_any(&batch(0..2), async { 2 }).await, 2);
        let ran = std::sync::atomic::AtomicBool::new(false);
        p.ahead(&batch(0..2), async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            1
        })
        .await;
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "not prepared again"
        );
    }

    #[tokio::test]
    async fn an_abandoned_preparing_is_done_by_the_batch() {
        let p = Arc::new(Prepared::<u32>::default());
        let ahead = {
            let p = p.clone();
            tokio::spawn(async move { p.ahead(&batch(0..2), std::future::pending::<u32>()).await })
        };
        tokio::task::yield_now().await;
        ahead.abort();
        let _ = ahead.await;
        assert_eq!(p.take_or_any(&batch(0..2), async { 2 }).await, 2);
    }
}
