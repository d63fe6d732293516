//! Project and organization lookup (operators provision them as plain rows).

pub use crate::storage::projects::{load, Project};
use diesel::prelude::*;

/// Projects already looked up within one transaction.
#[derive(Default)]
pub struct Cache(std::collections::HashMap<u64, Option<Project>>);

impl Cache {
    /// The project `id` (looked up once per cache).
    pub fn get(&mut self, conn: &mut PgConnection, id: u64) -> QueryResult<Option<Project>> {
        if let Some(p) = self.0.get(&id) {
            return Ok(p.clone());
        }
        let p = load(conn, id)?;
        self.0.insert(id, p.clone());
        Ok(p)
    }
}

type Entries = std::collections::HashMap<u64, (std::time::Instant, Option<Project>)>;

/// Projects shared by every task of a process, each entry kept for a short time so operators'
/// changes (new projects, options) apply within seconds without a lookup per message.
#[derive(Clone)]
pub struct Shared {
    db: crate::storage::Db,
    entries: std::sync::Arc<std::sync::Mutex<Entries>>,
}

impl Shared {
    /// Found projects are kept this long.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(30);
    /// Unknown projects are re-checked this often (a project provisioned a moment ago is seen soon).
    pub const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(db: crate::storage::Db) -> Shared {
        Shared {
            db,
            entries: Default::default(),
        }
    }

    /// The project `id`, or `None` when it is not provisioned.
    pub async fn get(&self, id: u64) -> Result<Option<Project>, crate::storage::DbError> {
        let now = std::time::Instant::now();
        if let Ok(map) = self.entries.lock() {
            if let Some((at, p)) = map.get(&id) {
                let ttl = if p.is_some() {
                    Self::TTL
                } else {
                    Self::NEGATIVE_TTL
                };
                if now.duration_since(*at) < ttl {
                    return Ok(p.clone());
                }
            }
        }
        let p = self
            .db
            .run(move |c| load(c, id).map_err(crate::storage::DbError::Query))
            .await?;
        if let Ok(mut map) = self.entries.lock() {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert(id, (now, p.clone()));
        }
        Ok(p)
    }
}
