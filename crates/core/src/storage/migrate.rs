//! `migrate`: applies pending migrations while holding a session-level advisory lock, so two
//! concurrent runs serialise and the second finds nothing to do.

use diesel::migration::{Migration, MigrationSource};
use diesel::pg::{Pg, PgConnection};
use diesel::{Connection, OptionalExtension, QueryableByName, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The migrations of `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Advisory lock key held while migrating (arbitrary, fixed).
const LOCK_KEY: i64 = 0x736c_7569_6365; // "sluice"

/// Failure to migrate.
#[derive(Debug, thiserror::Error)]
#[error("migration failed: {0}")]
pub struct MigrateError(String);

/// Connects to `url` and runs `f` while holding the advisory lock.
fn locked<R>(
    url: &str,
    f: impl FnOnce(&mut PgConnection) -> Result<R, MigrateError>,
) -> Result<R, MigrateError> {
    let mut conn =
        PgConnection::establish(url).map_err(|e| MigrateError(format!("connect: {e}")))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({LOCK_KEY})"))
        .execute(&mut conn)
        .map_err(|e| MigrateError(format!("advisory lock: {e}")))?;
    let out = f(&mut conn);
    // Released on disconnect too; unlocking explicitly keeps the session reusable.
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({LOCK_KEY})")).execute(&mut conn);
    out
}

/// Connects to `url` and applies every pending migration; returns the versions applied
/// (empty when the schema was already current).
pub fn migrate(url: &str) -> Result<Vec<String>, MigrateError> {
    locked(url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>())
            .map_err(|e| MigrateError(e.to_string()))
    })
}

/// The embedded migrations.
fn embedded() -> Result<Vec<Box<dyn Migration<Pg>>>, MigrateError> {
    MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(|e| MigrateError(e.to_string()))
}

/// The newest migration version this binary embeds (`YYYYMMDDNNNNNN`).
pub fn required_version() -> Result<String, MigrateError> {
    let all = embedded()?;
    Ok(all
        .iter()
        .map(|m| m.name().version().to_string())
        .max()
        .unwrap_or_default())
}

/// How the database schema compares with what this binary needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// At the version this binary needs.
    Current,
    /// Older (or never migrated): the binary cannot run on it.
    Behind { have: Option<String>, need: String },
    /// Newer: a later version migrated it. Migrations add before they remove, so this binary
    /// runs; the operator finishes the roll-out.
    Ahead { have: String, need: String },
}

/// Reads the applied migration versions and compares the newest with [`required_version`].
pub fn schema_status(conn: &mut PgConnection) -> Result<SchemaStatus, MigrateError> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        v: Option<String>,
    }
    let need = required_version()?;
    let exists: Option<V> =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations')::text AS v")
            .get_result(conn)
            .optional()
            .map_err(|e| MigrateError(e.to_string()))?;
    let have = if exists.and_then(|v| v.v).is_some() {
        diesel::sql_query("SELECT max(version)::text AS v FROM __diesel_schema_migrations")
            .get_result::<V>(conn)
            .map_err(|e| MigrateError(e.to_string()))?
            .v
    } else {
        None
    };
    Ok(match have {
        Some(h) if h == need => SchemaStatus::Current,
        Some(h) if h > need => SchemaStatus::Ahead { have: h, need },
        have => SchemaStatus::Behind { have, need },
    })
}

/// Applies the pending migrations up to and including `version` only, under the same lock (an
/// upgrade test starts from the previous version's schema this way).
pub fn migrate_until(url: &str, version: &str) -> Result<Vec<String>, MigrateError> {
    let all = embedded()?;
    locked(url, |conn| {
        let done: Vec<String> = conn
            .applied_migrations()
            .map_err(|e| MigrateError(e.to_string()))?
            .iter()
            .map(|v| v.to_string())
            .collect();
        let mut pending: Vec<_> = all
            .iter()
            .filter(|m| {
                let v = m.name().version().to_string();
                v.as_str() <= version && !done.contains(&v)
            })
            .collect();
        pending.sort_by_key(|m| m.name().version().to_string());
        let mut applied = Vec::new();
        for m in pending {
            conn.run_migration(m.as_ref())
                .map_err(|e| MigrateError(e.to_string()))?;
            applied.push(m.name().version().to_string());
        }
        Ok(applied)
    })
}
