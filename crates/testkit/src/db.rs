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

/// The issue, event, attachment and user-report tables of the database at `url` as sorted text rows, by natural keys only (no
/// generated ids, no wall-clock columns), so two databases that saw the same stream compare equal.
pub fn issue_snapshot(url: &str) -> anyhow::Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        s: String,
    }
    let queries = [
        "SELECT h.hash, g.type, g.status, g.substatus, g.priority, g.level, g.title, g.culprit, g.message, g.times_seen, \
         g.first_seen, g.last_seen, g.active_at, g.resolved_at IS NULL AS unresolved, g.last_occurrence_id, g.data \
         FROM groups g JOIN group_hashes h ON h.group_id = g.id",
        "SELECT o.id, o.event_id, o.type, p.data, o.dropped, h.hash FROM occurrences o \
         JOIN occurrence_payloads p ON p.id = o.id AND p.expires_at = o.expires_at \
         LEFT JOIN group_hashes h ON h.group_id = o.group_id",
        "SELECT e.project_id, e.event_id, p.data, h.hash FROM events e \
         JOIN event_payloads p ON p.project_id = e.project_id AND p.event_id = e.event_id AND p.expires_at = e.expires_at \
         LEFT JOIN group_hashes h ON h.group_id = e.group_id",
        "SELECT h.hash, a.type, a.data, row_number() OVER (PARTITION BY a.group_id ORDER BY a.id) FROM activities a \
         JOIN group_hashes h ON h.group_id = a.group_id",
        "SELECT h.hash, gh.status, row_number() OVER (PARTITION BY gh.group_id ORDER BY gh.id) FROM group_history gh \
         JOIN group_hashes h ON h.group_id = gh.group_id",
        "SELECT s.id, h.hash FROM applied_status_changes s JOIN group_hashes h ON h.group_id = s.group_id",
        "SELECT (SELECT count(*) FROM groups) AS groups, (SELECT count(*) FROM group_hashes) AS hashes",
        "SELECT a.project_id, a.event_id, a.attachment_id, a.type, a.name, a.content_type, a.size, a.sha1, \
         a.blob_path, h.hash FROM event_attachments a LEFT JOIN group_hashes h ON h.group_id = a.group_id",
        "SELECT r.project_id, r.event_id, r.name, r.email, r.comments, r.feedback_event_id, \
         r.legacy_report, r.environment, h.hash \
         FROM user_reports r LEFT JOIN group_hashes h ON h.group_id = r.group_id",
        "SELECT h.hash, g.first_release FROM groups g JOIN group_hashes h ON h.group_id = g.id",
        "SELECT h.hash, r.release, r.environment, r.first_seen, r.last_seen, r.times_seen \
         FROM group_releases r JOIN group_hashes h ON h.group_id = r.group_id",
        "SELECT h.hash, e.environment, e.first_release, e.first_seen, e.last_seen, e.times_seen \
         FROM group_environments e JOIN group_hashes h ON h.group_id = e.group_id",
    ];
    let mut c = PgConnection::establish(url)?;
    let mut out = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let mut rows: Vec<String> =
            diesel::sql_query(format!("SELECT row_to_json(q)::text AS s FROM ({q}) q"))
                .load::<R>(&mut c)?
                .into_iter()
                .map(|r| format!("{i}:{}", r.s))
                .collect();
        rows.sort();
        out.extend(rows);
    }
    Ok(out)
}

/// Asserts two snapshots are equal, listing the rows missing from and extra in `actual`.
pub fn assert_same_rows(actual: &[String], expected: &[String], what: &str) {
    let missing: Vec<&String> = expected.iter().filter(|r| !actual.contains(r)).collect();
    let extra: Vec<&String> = actual.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:#?}\nextra {extra:#?}"
    );
}

/// The single `n` (a bigint) that `sql` selects, e.g. `SELECT count(*) AS n FROM events`.
pub fn count(url: &str, sql: &str) -> anyhow::Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url)?;
    Ok(diesel::sql_query(sql).get_result::<N>(&mut c)?.n)
}

/// The `line` column (text) of every row `sql` selects, in its order.
pub fn lines(url: &str, sql: &str) -> anyhow::Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct L {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let mut c = PgConnection::establish(url)?;
    Ok(diesel::sql_query(sql)
        .load::<L>(&mut c)?
        .into_iter()
        .map(|l| l.line)
        .collect())
}
