//! `projects` joined with `organizations` (operators provision both as plain rows).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Text};

/// A project with its organization.
#[derive(Debug, Clone, QueryableByName)]
pub struct Project {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub organization_id: i64,
    #[diesel(sql_type = Text)]
    pub organization_slug: String,
    #[diesel(sql_type = Jsonb)]
    pub organization_options: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    pub options: serde_json::Value,
}

/// The project `id`, or `None` when it is not provisioned.
pub fn load(conn: &mut PgConnection, id: u64) -> QueryResult<Option<Project>> {
    diesel::sql_query(
        "SELECT p.id, p.organization_id, o.slug AS organization_slug, o.options AS organization_options, p.options \
         FROM projects p JOIN organizations o ON o.id = p.organization_id WHERE p.id = $1",
    )
    .bind::<BigInt, _>(id as i64)
    .get_result(conn)
    .optional()
}
