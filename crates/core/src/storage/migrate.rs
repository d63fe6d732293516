//! `migrate`: applies pending migrations while holding a session-level advisory lock, so two
//! concurrent runs serialise and the second finds nothing to do.

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The migrations of `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Advisory lock key held while migrating (arbitrary, fixed).
const LOCK_KEY: i64 = 0x736c_7569_6365; // "sluice"

/// Failure to migrate.
#[derive(Debug, thiserror::Error)]
#[error("migration failed: {0}")]
pub struct MigrateError(String);

/// Connects to `url` and applies every pending migration; returns the versions applied
/// (empty when the schema was already current).
pub fn migrate(url: &str) -> Result<Vec<String>, MigrateError> {
    let mut conn =
        PgConnection::establish(url).map_err(|e| MigrateError(format!("connect: {e}")))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({LOCK_KEY})"))
        .execute(&mut conn)
        .map_err(|e| MigrateError(format!("advisory lock: {e}")))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>())
        .map_err(|e| MigrateError(e.to_string()));
    // Released on disconnect too; unlocking explicitly keeps the session reusable.
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({LOCK_KEY})")).execute(&mut conn);
    applied
}
