//! Client keys by public key, cached in process memory for a few seconds so a busy front door
//! does not ask the database on every request. A key that is created, disabled or whose limit
//! changes is seen within the cache's time to live. Unknown keys are cached too (briefly), so a
//! client sending a bad DSN in a loop costs no database round trip per request.

use sluice_core::storage::project_keys::{self, ProjectKey};
use sluice_core::storage::{Db, DbError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; beyond, expired entries are dropped, then everything.
const MAX_ENTRIES: usize = 100_000;

pub struct KeyCache {
    db: Db,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Option<ProjectKey>, Instant)>>,
}

impl KeyCache {
    pub fn new(db: Db, ttl: Duration) -> KeyCache {
        KeyCache {
            db,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, public_key: &str) -> Option<Option<ProjectKey>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(public_key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(k, _)| k.clone())
    }

    /// The key, or `None` when no key has this public key.
    pub async fn get(&self, public_key: &str) -> Result<Option<ProjectKey>, DbError> {
        if let Some(hit) = self.cached(public_key) {
            return Ok(hit);
        }
        let k = public_key.to_owned();
        let found = self
            .db
            .run(move |c| Ok::<_, DbError>(project_keys::by_public_key(c, &k)?))
            .await?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(public_key.to_owned(), (found.clone(), Instant::now()));
        Ok(found)
    }
}
