//! Which offsets may be committed: per partition, `offset + 1` of the last message of the
//! contiguous prefix whose effects are durable. A message that is still unfinished (dependency
//! down at shutdown) stops the prefix, so nothing is committed past it.

use std::collections::{BTreeMap, HashMap};

/// A partition of a topic.
pub type Tp = (String, i32);

/// Commit positions of the assigned partitions.
#[derive(Debug, Default)]
pub struct Offsets {
    /// Next offset to commit (offset + 1 of the last durable message).
    next: HashMap<Tp, i64>,
    /// Positions already committed.
    committed: HashMap<Tp, i64>,
}

impl Offsets {
    /// Records a finished batch: `done` holds the offsets whose effects are durable, `unfinished`
    /// those that are not. Returns nothing; read [`Offsets::pending`] for what to commit.
    pub fn record(&mut self, done: &[(Tp, i64)], unfinished: &[(Tp, i64)]) {
        let mut per: BTreeMap<&Tp, (Option<i64>, Option<i64>)> = BTreeMap::new();
        for (tp, off) in done {
            let e = per.entry(tp).or_default();
            e.0 = Some(e.0.map_or(*off, |m: i64| m.max(*off)));
        }
        for (tp, off) in unfinished {
            let e = per.entry(tp).or_default();
            e.1 = Some(e.1.map_or(*off, |m: i64| m.min(*off)));
        }
        for (tp, (max_done, min_unfinished)) in per {
            let candidate = match (max_done, min_unfinished) {
                (_, Some(u)) => u, // commit up to (not including) the first unfinished
                (Some(d), None) => d + 1,
                (None, None) => continue,
            };
            let slot = self.next.entry(tp.clone()).or_insert(candidate);
            if candidate > *slot {
                *slot = candidate;
            }
        }
    }

    /// Positions that changed since the last [`Offsets::mark_committed`].
    pub fn pending(&self) -> Vec<(Tp, i64)> {
        let mut v: Vec<_> = self
            .next
            .iter()
            .filter(|(tp, off)| self.committed.get(*tp) != Some(off))
            .map(|(tp, off)| (tp.clone(), *off))
            .collect();
        v.sort();
        v
    }

    /// Positions for the given partitions (committed or not).
    pub fn positions_of(&self, tps: &[Tp]) -> Vec<(Tp, i64)> {
        tps.iter()
            .filter_map(|tp| self.next.get(tp).map(|o| (tp.clone(), *o)))
            .collect()
    }

    /// These positions are now committed.
    pub fn mark_committed(&mut self, positions: &[(Tp, i64)]) {
        for (tp, off) in positions {
            self.committed.insert(tp.clone(), *off);
        }
    }

    /// A commit of these positions failed: they count as pending again.
    pub fn unmark(&mut self, positions: &[(Tp, i64)]) {
        for (tp, off) in positions {
            if self.committed.get(tp) == Some(off) {
                self.committed.remove(tp);
            }
        }
    }

    /// An asynchronous commit failed (which one is not tracked): everything is pending again.
    pub fn unmark_all(&mut self) {
        self.committed.clear();
    }

    /// Forgets partitions no longer assigned.
    pub fn forget(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.next.remove(tp);
            self.committed.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_owned(), p)
    }

    #[test]
    fn commits_offset_plus_one_per_partition() {
        let mut o = Offsets::default();
        o.record(&[(tp(0), 5), (tp(0), 6), (tp(1), 2)], &[]);
        assert_eq!(o.pending(), vec![(tp(0), 7), (tp(1), 3)]);
        o.mark_committed(&o.pending());
        assert!(o.pending().is_empty());
        o.record(&[(tp(0), 7)], &[]);
        assert_eq!(o.pending(), vec![(tp(0), 8)]);
    }

    #[test]
    fn never_commits_past_unfinished_work() {
        let mut o = Offsets::default();
        o.record(&[(tp(0), 10), (tp(0), 12)], &[(tp(0), 11)]);
        assert_eq!(
            o.pending(),
            vec![(tp(0), 11)],
            "stops before the unfinished message"
        );
        o.record(&[(tp(0), 3)], &[]);
        assert_eq!(o.pending(), vec![(tp(0), 11)], "never moves backwards");
        o.forget(&[tp(0)]);
        assert!(o.pending().is_empty());
    }
}
