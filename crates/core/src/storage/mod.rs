//! The storage layer: every SQL statement of the pipeline lives in this module, one file per
//! table or concern. Stages and the issue platform call these functions; none of them writes SQL
//! text itself. Functions take slices where a step can be batched, so a single message is a
//! batch of one.
//!
//! Conventions:
//! - diesel binds strings as `text`; comparisons with `char(32)` key columns cast the parameter
//!   (`$n::bpchar`) so PostgreSQL uses the index instead of casting every row.
//! - Synchronous calls run on the blocking pool through [`Db::run`]; the functions here take a
//!   `&mut PgConnection` so callers can compose several of them in one transaction.
//! - Lock order: see [`linking`], the one owner of the rule that fills `group_id` on events,
//!   attachments and user reports.

pub mod attachments;
pub mod chunks;
pub mod events;
pub mod group_releases;
pub mod groups;
pub mod limits;
pub mod linking;
pub mod migrate;
pub mod occurrences;
pub mod outcomes;
pub mod pool;
pub mod prepared;
pub mod project_keys;
pub mod projects;
pub mod queue;
pub mod read;
pub mod retention;
pub mod status_changes;
pub mod tokens;
pub mod user_reports;
pub mod webhooks;

pub use migrate::{migrate, MIGRATIONS};
pub use pool::{Db, DbError};

/// An event's natural key: (project id, event id as 32 lowercase hex).
pub type EventKey = (i64, String);

/// Splits keys into the two column arrays an `unnest` join takes.
pub(crate) fn split_keys(keys: &[EventKey]) -> (Vec<i64>, Vec<String>) {
    keys.iter().map(|(p, e)| (*p, e.clone())).unzip()
}
