//! `project_keys`: the client keys (DSNs) SDKs authenticate with, created by `sluice key create`
//! and looked up by the SDK front door.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Bpchar, Integer, Nullable, Text, Timestamptz};

/// A key with what the front door needs to accept an envelope for it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ProjectKey {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = BigInt)]
    pub organization_id: i64,
    #[diesel(sql_type = Bpchar)]
    pub public_key: String,
    #[diesel(sql_type = Text)]
    pub label: String,
    #[diesel(sql_type = Bool)]
    pub is_active: bool,
    /// Events accepted per `rate_limit_window` seconds; `None` for no limit.
    #[diesel(sql_type = Nullable<Integer>)]
    pub rate_limit_count: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub rate_limit_window: Option<i32>,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
}

const COLUMNS: &str = "k.id, k.project_id, p.organization_id, k.public_key, k.label, k.is_active, \
                       k.rate_limit_count, k.rate_limit_window, k.date_added";

/// What `create` stores.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub public_key: &'a str,
    pub secret_key: &'a str,
    pub label: &'a str,
    /// (count, window in seconds).
    pub rate_limit: Option<(i32, i32)>,
}

/// Creates a key for the project `project` of the organization `org`; `None` when there is no
/// such project.
pub fn create(
    conn: &mut PgConnection,
    org: &str,
    project: &str,
    key: &NewKey<'_>,
) -> QueryResult<Option<ProjectKey>> {
    crate::prepared_format!(
        "WITH k AS (\
           INSERT INTO project_keys (project_id, public_key, secret_key, label, \
                                     rate_limit_count, rate_limit_window) \
           SELECT p.id, $3, $4, $5, $6, $7 FROM projects p \
             JOIN organizations o ON o.id = p.organization_id \
            WHERE o.slug = $1 AND p.slug = $2 \
           RETURNING *) \
         SELECT {COLUMNS} FROM k JOIN projects p ON p.id = k.project_id"
    )
    .bind::<Text, _>(org)
    .bind::<Text, _>(project)
    .bind::<Bpchar, _>(key.public_key)
    .bind::<Bpchar, _>(key.secret_key)
    .bind::<Text, _>(key.label)
    .bind::<Nullable<Integer>, _>(key.rate_limit.map(|r| r.0))
    .bind::<Nullable<Integer>, _>(key.rate_limit.map(|r| r.1))
    .get_result(conn)
    .optional()
}

/// The key with this public key, active or not.
pub fn by_public_key(conn: &mut PgConnection, public_key: &str) -> QueryResult<Option<ProjectKey>> {
    crate::prepared_format!(
        "SELECT {COLUMNS} FROM project_keys k JOIN projects p ON p.id = k.project_id \
         WHERE k.public_key = $1::bpchar"
    )
    .bind::<Text, _>(public_key)
    .get_result(conn)
    .optional()
}

/// The keys of the project `project` of the organization `org`; `None` when there is no such
/// project.
pub fn list(
    conn: &mut PgConnection,
    org: &str,
    project: &str,
) -> QueryResult<Option<Vec<ProjectKey>>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let found: Option<Id> = prepared(
        "SELECT p.id FROM projects p JOIN organizations o ON o.id = p.organization_id \
         WHERE o.slug = $1 AND p.slug = $2",
    )
    .bind::<Text, _>(org)
    .bind::<Text, _>(project)
    .get_result(conn)
    .optional()?;
    let Some(project) = found else {
        return Ok(None);
    };
    crate::prepared_format!(
        "SELECT {COLUMNS} FROM project_keys k JOIN projects p ON p.id = k.project_id \
         WHERE k.project_id = $1 ORDER BY k.id"
    )
    .bind::<BigInt, _>(project.id)
    .load(conn)
    .map(Some)
}

/// Turns the key `public_key` off (`active = false`) or on; returns how many keys changed (0 or 1).
pub fn set_active(conn: &mut PgConnection, public_key: &str, active: bool) -> QueryResult<usize> {
    prepared("UPDATE project_keys SET is_active = $2 WHERE public_key = $1::bpchar")
        .bind::<Text, _>(public_key)
        .bind::<Bool, _>(active)
        .execute(conn)
}
