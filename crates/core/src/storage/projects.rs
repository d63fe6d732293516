//! `projects` joined with `organizations`, and their creation by `sluice org create` and
//! `sluice project create`.

use super::prepared::prepared;
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
    prepared(
        "SELECT p.id, p.organization_id, o.slug AS organization_slug, o.options AS organization_options, p.options \
         FROM projects p JOIN organizations o ON o.id = p.organization_id WHERE p.id = $1",
    )
    .bind::<BigInt, _>(id as i64)
    .get_result(conn)
    .optional()
}

/// A row of `sluice project list` / `sluice org list`.
#[derive(Debug, Clone, QueryableByName)]
pub struct Listed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub slug: String,
    #[diesel(sql_type = Jsonb)]
    pub options: serde_json::Value,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Creates the organization `slug` (or returns the existing one's id); returns its id.
pub fn create_organization(
    conn: &mut PgConnection,
    slug: &str,
    options: &serde_json::Value,
) -> QueryResult<i64> {
    prepared(
        "INSERT INTO organizations (slug, name, options) VALUES ($1, $1, $2) \
         ON CONFLICT (slug) DO UPDATE SET options = organizations.options || EXCLUDED.options \
         RETURNING id",
    )
    .bind::<Text, _>(slug)
    .bind::<Jsonb, _>(options)
    .get_result::<Id>(conn)
    .map(|r| r.id)
}

/// Every organization, by id.
pub fn organizations(conn: &mut PgConnection) -> QueryResult<Vec<Listed>> {
    prepared("SELECT id, slug, options FROM organizations ORDER BY id").load(conn)
}

/// Creates the project `slug` of the organization `org` (or merges `options` into the existing
/// one's); returns its id, or `None` when there is no such organization.
pub fn create_project(
    conn: &mut PgConnection,
    org: &str,
    slug: &str,
    options: &serde_json::Value,
) -> QueryResult<Option<i64>> {
    prepared(
        "INSERT INTO projects (organization_id, slug, name, options) \
         SELECT id, $2, $2, $3 FROM organizations WHERE slug = $1 \
         ON CONFLICT (organization_id, slug) DO UPDATE SET options = projects.options || EXCLUDED.options \
         RETURNING id",
    )
    .bind::<Text, _>(org)
    .bind::<Text, _>(slug)
    .bind::<Jsonb, _>(options)
    .get_result::<Id>(conn)
    .optional()
    .map(|r| r.map(|r| r.id))
}

/// The id of the organization `slug`.
pub fn organization_id(conn: &mut PgConnection, slug: &str) -> QueryResult<Option<i64>> {
    prepared("SELECT id FROM organizations WHERE slug = $1")
        .bind::<Text, _>(slug)
        .get_result::<Id>(conn)
        .optional()
        .map(|r| r.map(|r| r.id))
}

/// The projects of the organization `org`, by id; `None` when there is no such organization.
pub fn projects_of(conn: &mut PgConnection, org: &str) -> QueryResult<Option<Vec<Listed>>> {
    if organization_id(conn, org)?.is_none() {
        return Ok(None);
    }
    prepared(
        "SELECT p.id, p.slug, p.options FROM projects p JOIN organizations o ON o.id = p.organization_id \
         WHERE o.slug = $1 ORDER BY p.id",
    )
    .bind::<Text, _>(org)
    .load(conn)
    .map(Some)
}
