//! PostgreSQL through diesel: the schema, a connection pool whose calls run on tokio's blocking
//! pool (never on async worker threads), and migrations under an advisory lock.

pub mod migrate;
pub mod pool;
pub mod schema;

pub use migrate::{migrate, MIGRATIONS};
pub use pool::{Db, DbError};
