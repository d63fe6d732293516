//! A bounded r2d2 pool of diesel connections; every call runs on `spawn_blocking`.

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::RunQueryDsl;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A connection from the pool.
pub type Conn = PooledConnection<ConnectionManager<PgConnection>>;

/// Errors of the storage layer; `crate::failure` decides how the runtime reacts to each.
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

/// The shared database handle.
#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionManager<PgConnection>>,
    /// Until when (epoch ms) every checkout is validated first: set when a dead connection is
    /// found, because its idle siblings are then most likely dead too.
    validate_until: Arc<AtomicU64>,
}

/// How long checkouts are validated after a dead connection was found.
const VALIDATE_FOR: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The session settings of every connection the pipeline opens.
///
/// Its statements are prepared once per connection (see [`super::prepared`]). PostgreSQL would
/// switch a prepared statement to one generic plan after five calls and keep it; a plan made
/// while a table was still empty (a new installation) would then scan that table whole on
/// every call once it has grown. Planning each call against the tables as they are keeps index
/// plans; parsing is still saved.
pub fn configure(conn: &mut PgConnection) -> diesel::QueryResult<()> {
    diesel::sql_query("SET plan_cache_mode = force_custom_plan")
        .execute(conn)
        .map(|_| ())
}

#[derive(Debug)]
struct Configure;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for Configure {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        configure(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Whether a failure is a prepared statement outdated by a schema change made while the
/// process runs (a migration applied by a newer binary changed a column it returns). The
/// connection cannot use that statement again, so it is dropped rather than returned to the pool;
/// the call fails once, as an outage (see `crate::failure`), and its retry gets a fresh
/// connection.
fn stale_statement(error: &str) -> bool {
    error.contains("cached plan must not change result type")
}

/// Whether `conn` still answers; a dead one is marked broken, so the pool drops it instead of
/// handing it out again (libpq never reconnects by itself).
fn alive(conn: &mut PgConnection) -> bool {
    let ok = diesel::sql_query("SELECT 1").execute(conn).is_ok();
    if !ok {
        AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
    }
    ok
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
            // No probe query per checkout (it would double every round trip). A call that
            // fails on a dead connection (the server restarted) drops it, and for a minute
            // afterwards every checkout is validated, so the other dead ones go at once.
            .test_on_check_out(false)
            .connection_customizer(Box::new(Configure))
            .build_unchecked(manager);
        Db {
            pool,
            validate_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    pub async fn run<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + std::fmt::Display + Send + 'static,
    {
        let pool = self.pool.clone();
        let validate_until = self.validate_until.clone();
        tokio::task::spawn_blocking(move || {
            let checkout = || {
                pool.get()
                    .map_err(|e| E::from(DbError::Unavailable(e.to_string())))
            };
            let mut conn = checkout()?;
            if validate_until.load(Ordering::Relaxed) > now_ms() {
                // Bounded: the pool holds at most `max_size` dead connections.
                for _ in 0..=pool.max_size() {
                    if alive(&mut conn) {
                        break;
                    }
                    drop(conn);
                    conn = checkout()?;
                }
            }
            let out = f(&mut conn);
            if let Err(e) = &out {
                if !alive(&mut conn) {
                    validate_until.store(
                        now_ms() + VALIDATE_FOR.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                } else if stale_statement(&e.to_string()) {
                    // The connection keeps its prepared statements: it goes, and they with it
                    // (after the probe above, which would mark it usable again).
                    AnsiTransactionManager::transaction_manager_status_mut(&mut *conn)
                        .set_in_error();
                }
            }
            out
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
