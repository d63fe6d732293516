//! A bounded r2d2 pool of diesel connections; every call runs on `spawn_blocking`.

use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::RunQueryDsl;
use std::time::Duration;

/// A connection from the pool.
pub type Conn = PooledConnection<ConnectionManager<PgConnection>>;

/// Errors of the storage layer, split by how the runtime must react.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached (pool timeout, refused connection): dependency-wide.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The blocking task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

impl DbError {
    /// Failures that affect every message (pause and retry) rather than the one being processed.
    pub fn is_dependency_wide(&self) -> bool {
        match self {
            DbError::Unavailable(_) | DbError::Task(_) => true,
            DbError::Query(diesel::result::Error::DatabaseError(kind, info)) => {
                let m = info.message().to_ascii_lowercase();
                matches!(kind, diesel::result::DatabaseErrorKind::ClosedConnection)
                    || m.contains("terminating connection")
                    || m.contains("server closed the connection")
                    || m.contains("connection to server")
                    || m.contains("could not connect")
                    || m.contains("the database system is")
            }
            DbError::Query(diesel::result::Error::BrokenTransactionManager) => true,
            DbError::Query(_) => false,
        }
    }

    /// Serialization failures and deadlocks: retry the message.
    pub fn is_transient_conflict(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::SerializationFailure,
                _
            ))
        ) || matches!(self, DbError::Query(diesel::result::Error::DatabaseError(_, info)) if info.message().contains("deadlock"))
    }
}

/// The shared database handle.
#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionManager<PgConnection>>,
}

impl Db {
    /// A pool of at most `max_size` connections. Does not connect yet: an unreachable database
    /// shows up as [`DbError::Unavailable`] on use, so start-up never fails on an outage.
    pub fn new(url: &str, max_size: u32) -> Db {
        let manager = ConnectionManager::<PgConnection>::new(url);
        let pool = Pool::builder()
            .max_size(max_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5))
            // No probe query per checkout (it would double every round trip): a broken
            // connection fails its query as `ClosedConnection` (an outage: retried) and r2d2
            // discards it.
            .test_on_check_out(false)
            .build_unchecked(manager);
        Db { pool }
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    pub async fn run<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| E::from(DbError::Unavailable(e.to_string())))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }

    /// `SELECT 1`: whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.run(|c| {
            diesel::sql_query("SELECT 1").execute(c)?;
            Ok::<_, DbError>(())
        })
        .await
    }
}
