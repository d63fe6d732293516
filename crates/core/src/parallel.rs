//! CPU work of one batch spread over a few threads: the items of a batch that do not depend on
//! each other (parsing, grouping) are cut into contiguous parts, the calling thread takes the
//! first and scoped threads the others, and the results come back in the items' order. Work
//! that large does not hold up the async tasks of the thread it is called on ([`off_executor`]).

/// The cores this process may use, read once: on Linux each reading looks at the scheduler
/// affinity and the cgroup's CPU quota files, which a batch's hot path need not repeat.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the CPU-bound `f` on the calling thread. When that thread is a worker of a
/// multi-threaded tokio runtime, the runtime first hands the worker's other tasks to another
/// thread, so producing, committing and serving metrics go on while `f` runs; elsewhere `f`
/// simply runs.
pub fn off_executor<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `f` applied to every item, in order, on up to `threads` threads (fewer when the machine has
/// fewer cores or when a part would hold fewer than `min_per_thread` items). A panic in `f` is
/// raised again on the calling thread, as if `f` had run there. At least `min_per_thread` items
/// are worth a thread, so they run [`off_executor`]; fewer run as a plain call.
pub fn map_ordered<T, R, F>(items: Vec<T>, threads: usize, min_per_thread: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let threads = threads
        .min(cores())
        .min(items.len() / min_per_thread.max(1))
        .max(1);
    if items.len() < min_per_thread.max(1) {
        return items.into_iter().map(f).collect();
    }
    off_executor(|| spread(items, threads, f))
}

/// [`map_ordered`]'s work: the items cut into `threads` parts, one per thread.
fn spread<T, R, F>(items: Vec<T>, threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut items = items.into_iter();
    let first: Vec<T> = items.by_ref().take(per).collect();
    let rest: Vec<Vec<T>> = (1..threads)
        .map(|_| items.by_ref().take(per).collect())
        .collect();
    let f = &f;
    std::thread::scope(|s| {
        let others: Vec<_> = rest
            .into_iter()
            .map(|part| s.spawn(move || part.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for h in others {
            match h.join() {
                Ok(done) => out.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::map_ordered;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn keeps_the_order_and_uses_several_threads_for_many_items() {
        let seen = Mutex::new(HashSet::new());
        let out = map_ordered((0..1000).collect(), 2, 64, |n: u32| {
            if let Ok(mut s) = seen.lock() {
                s.insert(std::thread::current().id());
            }
            n * 2
        });
        assert_eq!(out, (0..1000).map(|n| n * 2).collect::<Vec<_>>());
        let threads = seen.lock().map(|s| s.len()).unwrap_or(0);
        assert_eq!(threads, super::cores().min(2), "threads used");
    }

    #[test]
    fn few_items_stay_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let out = map_ordered(vec![1, 2, 3], 2, 64, |n: i32| {
            assert_eq!(std::thread::current().id(), caller);
            n + 1
        });
        assert_eq!(out, vec![2, 3, 4]);
        assert!(map_ordered(Vec::<i32>::new(), 2, 0, |n| n).is_empty());
    }

    #[test]
    fn other_tasks_of_the_runtime_go_on_while_a_large_batch_is_worked() {
        // One worker thread: the task mapping the items would hold it for as long as the items
        // take, and the task that lets the first item finish could never run.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build();
        let Ok(rt) = rt else {
            panic!("no runtime");
        };
        let (go, wait) = std::sync::mpsc::sync_channel::<()>(1);
        let wait = std::sync::Mutex::new(wait);
        let answered = rt.block_on(async move {
            let work = tokio::spawn(async move {
                map_ordered(vec![0u32], 1, 1, |n| {
                    let got = wait
                        .lock()
                        .map(|w| w.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
                    (n, got.unwrap_or(false))
                })
            });
            tokio::spawn(async move {
                let _ = go.send(());
            });
            work.await.map(|out| out[0].1).unwrap_or(false)
        });
        assert!(answered, "another task ran while the items were mapped");
        // Outside a runtime, and on a single-threaded one, the work simply runs.
        assert_eq!(map_ordered(vec![1], 1, 1, |n: i32| n + 1), vec![2]);
        let current = tokio::runtime::Builder::new_current_thread().build();
        let Ok(current) = current else {
            panic!("no runtime");
        };
        let out = current.block_on(async { map_ordered(vec![1], 1, 1, |n: i32| n + 1) });
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            map_ordered((0..500).collect(), 2, 1, |n: i32| {
                assert!(n != 499, "bad item");
                n
            })
        });
        assert!(caught.is_err());
    }
}
