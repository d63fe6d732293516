//! `api_tokens`: bearer tokens of the web API, kept as their SHA-256 (hex). A token belongs to
//! one organization; a revoked token authenticates nothing.

use super::prepared::prepared;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bpchar, Nullable, Text, Timestamptz};

/// The organization a token acts for.
#[derive(Debug, Clone, QueryableByName)]
pub struct Principal {
    #[diesel(sql_type = BigInt)]
    pub token_id: i64,
    #[diesel(sql_type = BigInt)]
    pub organization_id: i64,
    #[diesel(sql_type = Text)]
    pub organization_slug: String,
}

/// A row of `sluice token list`.
#[derive(Debug, Clone, QueryableByName)]
pub struct Listed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub token_prefix: String,
    #[diesel(sql_type = Timestamptz)]
    pub date_added: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_used: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Stores a token of the organization `org` by its hash; `None` when there is no such
/// organization.
pub fn create(
    conn: &mut PgConnection,
    org: &str,
    hash: &str,
    prefix: &str,
) -> QueryResult<Option<i64>> {
    prepared(
        "INSERT INTO api_tokens (organization_id, token_hash, token_prefix) \
         SELECT id, $2, $3 FROM organizations WHERE slug = $1 RETURNING id",
    )
    .bind::<Text, _>(org)
    .bind::<Bpchar, _>(hash)
    .bind::<Text, _>(prefix)
    .get_result::<Id>(conn)
    .optional()
    .map(|r| r.map(|r| r.id))
}

/// Revokes the live tokens whose prefix is `prefix`; returns how many.
pub fn revoke(conn: &mut PgConnection, prefix: &str) -> QueryResult<usize> {
    prepared(
        "UPDATE api_tokens SET revoked_at = now() \
         WHERE revoked_at IS NULL AND starts_with(token_prefix, $1)",
    )
    .bind::<Text, _>(prefix)
    .execute(conn)
}

/// The tokens of the organization `org`, live and revoked; `None` when there is no such
/// organization.
pub fn list(conn: &mut PgConnection, org: &str) -> QueryResult<Option<Vec<Listed>>> {
    let Some(org_id) = super::projects::organization_id(conn, org)? else {
        return Ok(None);
    };
    prepared(
        "SELECT id, token_prefix, date_added, last_used, revoked_at FROM api_tokens \
         WHERE organization_id = $1 ORDER BY id",
    )
    .bind::<BigInt, _>(org_id)
    .load(conn)
    .map(Some)
}

/// The organization of the live token whose hash is `hash`.
pub fn authenticate(conn: &mut PgConnection, hash: &str) -> QueryResult<Option<Principal>> {
    prepared(
        "SELECT t.id AS token_id, o.id AS organization_id, o.slug AS organization_slug \
         FROM api_tokens t JOIN organizations o ON o.id = t.organization_id \
         WHERE t.token_hash = $1::bpchar AND t.revoked_at IS NULL",
    )
    .bind::<Text, _>(hash)
    .get_result(conn)
    .optional()
}

/// Records that the token was used (at most once a minute, so reads stay reads).
pub fn touch(conn: &mut PgConnection, token_id: i64) -> QueryResult<()> {
    prepared(
        "UPDATE api_tokens SET last_used = now() \
         WHERE id = $1 AND (last_used IS NULL OR last_used < now() - interval '1 minute')",
    )
    .bind::<BigInt, _>(token_id)
    .execute(conn)?;
    Ok(())
}
