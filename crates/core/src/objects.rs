//! Attachment storage: `s3://bucket/prefix` (any S3 server; credentials, endpoint and
//! `AWS_ALLOW_HTTP` from object_store's `AWS_*` variables) or `file:///dir`. Keys are built from
//! ids only: `<prefix>/<project_id>/<event_id>/<attachment_id>`; user-supplied names never appear.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::RetryConfig;
use object_store::{Attribute, Attributes, ObjectStore, PutMode, PutOptions, PutPayload};
use std::sync::Arc;
use std::time::Duration;

/// Errors of the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// `OBJECT_STORE_URL` is not usable.
    #[error("invalid OBJECT_STORE_URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    /// An id that cannot be part of a key.
    #[error("invalid object key component {0:?}")]
    InvalidKey(String),
    /// The store failed (unreachable, denied, …): a dependency error.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Whether a conditional put created the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    AlreadyExists,
}

/// The attachment store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Vec<String>,
    /// Local files cannot carry a content type; S3 objects get one.
    content_types: bool,
    description: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

fn invalid(url: &str, why: impl Into<String>) -> ObjectsError {
    ObjectsError::InvalidUrl {
        url: url.to_owned(),
        why: why.into(),
    }
}

impl Objects {
    /// Opens the store named by `url`. `file://` directories are created when missing; a relative
    /// `file://./dir` is taken relative to the working directory.
    pub fn from_url(url: &str) -> Result<Objects, ObjectsError> {
        Self::from_url_with(url, std::iter::empty::<(String, String)>())
    }

    /// [`Objects::from_url`] with S3 client options (`AWS_ENDPOINT`-style names, any case) applied
    /// over the environment's.
    pub fn from_url_with<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Objects, ObjectsError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let mut parts = rest.trim_end_matches('/').splitn(2, '/');
            let bucket = parts
                .next()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid(url, "no bucket"))?;
            let prefix = parts.next().unwrap_or("");
            // Fail fast on outages: the consumer runtime pauses and retries with its own backoff.
            let retry = RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            };
            let mut builder = AmazonS3Builder::from_env().with_retry(retry);
            for (k, v) in options {
                let key: AmazonS3ConfigKey = k
                    .as_ref()
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e: object_store::Error| invalid(url, e.to_string()))?;
                builder = builder.with_config(key, v);
            }
            let store = builder
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| invalid(url, e.to_string()))?;
            Ok(Objects {
                store: Arc::new(store),
                prefix: split_prefix(prefix),
                content_types: true,
                description: format!("s3://{bucket}/{prefix}"),
            })
        } else if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(invalid(url, "no directory"));
            }
            std::fs::create_dir_all(rest)
                .map_err(|e| invalid(url, format!("create {rest}: {e}")))?;
            let store =
                LocalFileSystem::new_with_prefix(rest).map_err(|e| invalid(url, e.to_string()))?;
            Ok(Objects {
                store: Arc::new(store),
                prefix: Vec::new(),
                content_types: false,
                description: url.to_owned(),
            })
        } else {
            Err(invalid(url, "expected s3://bucket/prefix or file:///dir"))
        }
    }

    /// The key of an attachment body. Event ids must be 32 hex characters; attachment ids are
    /// kept when they are plain identifiers (Relay's UUIDs) and hashed otherwise.
    pub fn attachment_key(
        &self,
        project_id: u64,
        event_id: &str,
        attachment_id: &str,
    ) -> Result<String, ObjectsError> {
        if event_id.len() != 32 || !event_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ObjectsError::InvalidKey(event_id.to_owned()));
        }
        let safe = !attachment_id.is_empty()
            && attachment_id.len() <= 128
            && attachment_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let attachment = if safe {
            attachment_id.to_owned()
        } else {
            crate::ids::md5_hex(attachment_id)
        };
        let mut parts = self.prefix.clone();
        parts.extend([
            project_id.to_string(),
            event_id.to_ascii_lowercase(),
            attachment,
        ]);
        Ok(parts.join("/"))
    }

    /// Stores `body` under `key`, replacing what is there (bodies are immutable per key, so this
    /// is idempotent).
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<(), ObjectsError> {
        self.put_parts(key, vec![body], content_type).await
    }

    /// Stores a body given as consecutive parts (e.g. attachment chunks) under `key` without
    /// joining them in memory first; idempotent like [`Objects::put`].
    pub async fn put_parts(
        &self,
        key: &str,
        parts: Vec<Bytes>,
        content_type: Option<&str>,
    ) -> Result<(), ObjectsError> {
        let opts = PutOptions {
            attributes: self.attributes(content_type),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&Path::from(key), parts.into_iter().collect(), opts)
            .await?;
        Ok(())
    }

    /// Stores `body` under `key` only if nothing is there yet.
    pub async fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<PutOutcome, ObjectsError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes: self.attributes(content_type),
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&Path::from(key), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    /// The body under `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectsError> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys (with sizes) under `prefix` (relative to the store root, i.e. including this store's prefix).
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<(String, u64)>, ObjectsError> {
        let p = prefix.map(Path::from);
        let metas: Vec<_> = self.store.list(p.as_ref()).try_collect().await?;
        let mut out: Vec<_> = metas
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes `key`; deleting an absent key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `keys` in batches (one request per 1,000 keys where the store supports it);
    /// absent keys count as deleted. Returns how many were deleted, or the first failure.
    pub async fn delete_many(&self, keys: &[String]) -> Result<usize, ObjectsError> {
        use futures::StreamExt;
        let locations = futures::stream::iter(
            keys.iter()
                .map(|k| Ok(Path::from(k.as_str())))
                .collect::<Vec<_>>(),
        )
        .boxed();
        let mut results = self.store.delete_stream(locations);
        let mut deleted = 0;
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }

    /// Whether the store answers (lists the prefix).
    pub async fn ping(&self) -> Result<(), ObjectsError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.join("/")));
        self.store.list_with_delimiter(prefix.as_ref()).await?;
        Ok(())
    }

    fn attributes(&self, content_type: Option<&str>) -> Attributes {
        let mut attrs = Attributes::new();
        if let (true, Some(ct)) = (self.content_types, content_type) {
            attrs.insert(Attribute::ContentType, ct.to_owned().into());
        }
        attrs
    }
}

fn split_prefix(prefix: &str) -> Vec<String> {
    prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_built_from_ids_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let objects = Objects::from_url(&format!("file://{}", dir.path().display()))
            .unwrap_or_else(|e| panic!("{e}"));
        let ev = "606f3c2bc036486eac417841ebfbf7f0";
        assert_eq!(
            objects
                .attachment_key(42, ev, "145a873a-d148-45f8-8370-b13bc3a3ffb4")
                .ok()
                .as_deref(),
            Some("42/606f3c2bc036486eac417841ebfbf7f0/145a873a-d148-45f8-8370-b13bc3a3ffb4")
        );
        let hashed = objects
            .attachment_key(42, ev, "../../etc/passwd")
            .unwrap_or_default();
        assert!(!hashed.contains(".."), "{hashed}");
        assert_eq!(hashed.split('/').nth(2).map(str::len), Some(32));
        assert!(objects.attachment_key(42, "../x", "a").is_err());
    }

    #[test]
    fn urls() {
        assert!(Objects::from_url("ftp://x").is_err());
        assert!(Objects::from_url("s3://").is_err());
        assert!(Objects::from_url("file://").is_err());
    }
}
