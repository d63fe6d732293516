//! A database per test on the shared PostgreSQL server (`TEST_DATABASE_URL`, default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`), dropped at the end unless
//! `KEEP_TEST_DB` is set.

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

/// The admin URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

fn with_db(admin: &str, name: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin}/{name}"),
    }
}

impl TestDb {
    /// Creates a database named `t_<random>`.
    pub fn new() -> anyhow::Result<TestDb> {
        let admin = admin_url();
        let name = crate::unique("t").replace('-', "_");
        let mut conn = PgConnection::establish(&admin).map_err(|e| {
            anyhow::anyhow!("cannot reach PostgreSQL at {admin} (run scripts/services up): {e}")
        })?;
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn)?;
        Ok(TestDb {
            url: with_db(&admin, &name),
            name,
            admin,
        })
    }

    /// A new connection to this database.
    pub fn connect(&self) -> anyhow::Result<PgConnection> {
        Ok(PgConnection::establish(&self.url)?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DB").is_some() {
            eprintln!("keeping test database {}", self.url);
            return;
        }
        if let Ok(mut conn) = PgConnection::establish(&self.admin) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}
