//! `emitted_outcomes`: the natural keys of outcomes the broker acknowledged, so a replay does
//! not emit (and bill) them twice.

use super::prepared::prepared;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use std::collections::HashSet;

/// Which of `keys` were emitted before.
pub fn emitted(conn: &mut PgConnection, keys: &[String]) -> QueryResult<HashSet<String>> {
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = Text)]
        key: String,
    }
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<Key> = prepared("SELECT key FROM emitted_outcomes WHERE key = ANY($1)")
        .bind::<Array<Text>, _>(keys)
        .load(conn)?;
    Ok(found.into_iter().map(|k| k.key).collect())
}

/// Records `keys` as emitted.
pub fn record(conn: &mut PgConnection, keys: &[String]) -> QueryResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    prepared("INSERT INTO emitted_outcomes (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
        .bind::<Array<Text>, _>(keys)
        .execute(conn)?;
    Ok(())
}
