//! CPU work of one batch spread over a few threads: the items of a batch that do not depend on
//! each other (parsing, grouping) are cut into contiguous parts, the calling thread takes the
//! first and scoped threads the others, and the results come back in the items' order.

/// The cores this process may use, read once: on Linux each reading looks at the scheduler
/// affinity and the cgroup's CPU quota files, which a batch's hot path need not repeat.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` applied to every item, in order, on up to `threads` threads (fewer when the machine has
/// fewer cores or when a part would hold fewer than `min_per_thread` items). A panic in `f` is
/// raised again on the calling thread, as if `f` had run there.
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
