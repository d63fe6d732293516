//! Several members of one consumer group in one process (`--consumers`). Each member is a full
//! consumer (driver thread, worker, prefetch, commits) and the broker splits the partitions
//! between them, so one member's batch is processed while another's waits for its effects.
//! The members share the stage. A member that stops with an error stops the others (they drain
//! and commit), and the first error is returned.
//!
//! Gauges that one consumer sets for its group (assigned partitions, paused, stuck seconds) are
//! reported here per member and published as the group's sum or maximum.

use super::{driver, RuntimeConfig, RuntimeError, Stage};
use crate::health::Health;
use prometheus::IntGaugeVec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Runs `stage` on the configured topics with `config.members` members until `shutdown` is
/// cancelled (then each drains, commits and returns), or until a member fails.
pub async fn run<S: Stage>(
    stage: S,
    config: RuntimeConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let members = config.members.max(1);
    // A member that stops on an error cancels this token (never the process's own).
    let stop = shutdown.child_token();
    if members == 1 {
        return driver::run(stage, config, health, stop).await;
    }
    let stage = Arc::new(stage);
    let runs = (0..members).map(|member| {
        let (stage, config, health, stop) = (
            stage.clone(),
            config.for_member(member),
            health.clone(),
            stop.clone(),
        );
        async move {
            let result = driver::run(stage, config, health, stop).await;
            if let Err(e) = &result {
                tracing::error!(member, error = %e, "a consumer of the group stopped on an error; the others stop too");
            }
            result
        }
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .find(Result::is_err)
        .unwrap_or(Ok(()))
}

/// Reports that member `member` of `group` holds `partitions` partitions: the group's
/// assigned partitions (summed) and its members holding any.
pub(crate) fn report_assigned(group: &str, member: usize, partitions: usize) {
    let m = super::metrics::get();
    report(&m.assigned, Combine::Sum, group, member, partitions as i64);
    report(
        &m.members,
        Combine::Sum,
        group,
        member,
        i64::from(partitions > 0),
    );
}

/// How a group's gauge combines its members' values.
#[derive(Clone, Copy)]
pub(crate) enum Combine {
    Sum,
    Max,
}

/// Sets member `member`'s `value` of `gauge` for `group` and publishes the group's combined
/// value.
pub(crate) fn report(
    gauge: &'static IntGaugeVec,
    combine: Combine,
    group: &str,
    member: usize,
    value: i64,
) {
    type Key = (usize, String, usize);
    static VALUES: Mutex<Option<HashMap<Key, i64>>> = Mutex::new(None);
    let mut values = VALUES.lock().unwrap_or_else(|p| p.into_inner());
    let values = values.get_or_insert_with(HashMap::new);
    // The gauge's address tells the gauges apart (each is a process-wide static).
    let id = gauge as *const IntGaugeVec as usize;
    values.insert((id, group.to_owned(), member), value);
    let of_group = values
        .iter()
        .filter(|((g, name, _), _)| *g == id && name == group)
        .map(|(_, v)| *v);
    let combined = match combine {
        Combine::Sum => of_group.sum(),
        Combine::Max => of_group.max().unwrap_or(0),
    };
    gauge.with_label_values(&[group]).set(combined);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn a_group_gauge_combines_its_members() {
        let g: &'static IntGaugeVec = Box::leak(Box::new(
            IntGaugeVec::new(Opts::new("t_members", "-"), &["group"])
                .unwrap_or_else(|_| unreachable!("static metric definition is valid")),
        ));
        report(g, Combine::Sum, "a", 0, 3);
        report(g, Combine::Sum, "a", 1, 5);
        report(g, Combine::Sum, "b", 0, 7);
        assert_eq!(g.with_label_values(&["a"]).get(), 8);
        report(g, Combine::Sum, "a", 1, 0);
        assert_eq!(g.with_label_values(&["a"]).get(), 3);
        assert_eq!(g.with_label_values(&["b"]).get(), 7);
        let m: &'static IntGaugeVec = Box::leak(Box::new(
            IntGaugeVec::new(Opts::new("t_members_max", "-"), &["group"])
                .unwrap_or_else(|_| unreachable!("static metric definition is valid")),
        ));
        report(m, Combine::Max, "a", 0, 40);
        report(m, Combine::Max, "a", 1, 0);
        assert_eq!(
            m.with_label_values(&["a"]).get(),
            40,
            "a stuck member is not hidden"
        );
    }
}
