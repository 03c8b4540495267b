//! Object storage for Bosun: command output and session transcripts, kept in a local
//! directory (the default) or an S3-compatible bucket, behind one small interface.
//!
//! Keys are `/`-separated paths such as `commands/<id>/<node>/stdout`; [`validate_key`]
//! lists the rules, which are chosen so that a key valid here behaves the same on every
//! backend. Listing matches whole path segments: prefix `commands/1` lists
//! `commands/1/stdout` but not `commands/10/stdout`. One difference remains: a local
//! directory cannot hold both `a` and `a/b`, S3 can; Bosun's key layouts never need both.

mod config;
mod key;
mod writer;

pub use config::ObjectStoreConfig;
pub use key::validate_key;
pub use writer::ObjectWriter;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

/// Errors from object storage; every message names the operation and the key.
#[derive(thiserror::Error, Debug)]
pub enum ObjectsError {
    /// The key breaks one of [`validate_key`]'s rules; `key` is cut to 128 characters.
    #[error("invalid object key {key:?}: {rule}")]
    InvalidKey { key: String, rule: &'static str },
    /// No object has this key.
    #[error("object {key} not found")]
    NotFound { key: String },
    /// A range read whose end is not after its start.
    #[error("read object {key}: range {start}..{end} is empty or reversed")]
    InvalidRange { key: String, start: u64, end: u64 },
    /// The configuration cannot describe a usable store; no I/O was attempted.
    #[error("invalid object store configuration: {reason}")]
    Config { reason: String },
    /// The local root directory could not be created or resolved.
    #[error("create object store root {}: {source}", root.display())]
    CreateRoot {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backend failed an operation; `operation` is e.g. `put object`, `key` the key or
    /// prefix, `store` the store's description (never a credential). The source is boxed
    /// because `object_store::Error` is large and every result carries this enum.
    #[error("{operation} {key} in {store}: {source}")]
    Storage {
        operation: &'static str,
        key: String,
        store: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// A streaming upload failed earlier and was aborted; nothing more can be written to it.
    #[error("write object {key}: the upload failed earlier and was aborted")]
    UploadAborted { key: String },
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, relative to the store's root or prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// A handle on an object store; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Where the objects live, for error messages and logs: `local:/path` or `s3://bucket/prefix`.
    description: Arc<str>,
    /// What [`Objects::url`] puts before a key: `file:///root` or `s3://bucket[/prefix]`.
    url_base: Arc<str>,
    /// The S3 bucket; `None` for the local store.
    bucket: Option<Arc<str>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The backend's own Debug could include client configuration; the description cannot.
        formatter
            .debug_struct("Objects")
            .field("store", &self.description)
            .finish_non_exhaustive()
    }
}

impl Objects {
    /// Opens the store `config` describes. A local root directory is created if missing;
    /// S3 is only configured here, so a wrong bucket or credential shows on first use.
    pub fn open(config: &ObjectStoreConfig) -> Result<Self, ObjectsError> {
        let (store, description) = config::build(config)?;
        let (url_base, bucket) = match config {
            ObjectStoreConfig::Local { .. } => {
                let root = description.strip_prefix("local:").unwrap_or(&description);
                (format!("file://{}", root.trim_end_matches('/')), None)
            }
            ObjectStoreConfig::S3 { bucket, prefix, .. } => {
                let bucket = bucket.trim();
                let prefix = prefix.as_deref().unwrap_or("").trim_matches('/');
                let base = if prefix.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{prefix}")
                };
                (base, Some(Arc::from(bucket)))
            }
        };
        Ok(Objects {
            store,
            description: description.into(),
            url_base: url_base.into(),
            bucket,
        })
    }

    /// The address of the object under `key`, for users: `file:///root/<key>` for the local
    /// store, `s3://bucket/[prefix/]<key>` for S3. Does not check that the object exists.
    pub fn url(&self, key: &str) -> String {
        format!("{}/{}", self.url_base, key.trim_start_matches('/'))
    }

    /// The S3 bucket objects are kept in; `None` for the local store.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// Where this store keeps objects: `local:/path` or `s3://bucket/prefix`.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn storage_error(
        &self,
        operation: &'static str,
        key: &str,
        source: object_store::Error,
    ) -> ObjectsError {
        if let object_store::Error::NotFound { .. } = source {
            return ObjectsError::NotFound {
                key: key.to_owned(),
            };
        }
        ObjectsError::Storage {
            operation,
            key: key.to_owned(),
            store: self.description.to_string(),
            source: Box::new(source),
        }
    }

    /// Stores `bytes` under `key`, replacing any existing object atomically: readers see
    /// the old object or the new one, never a mix.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectsError> {
        let path = key::object_path(key)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|source| self.storage_error("put object", key, source))?;
        Ok(())
    }

    /// The whole object under `key`; [`ObjectsError::NotFound`] when there is none.
    pub async fn get(&self, key: &str) -> Result<Bytes, ObjectsError> {
        let path = key::object_path(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|source| self.storage_error("get object", key, source))?;
        result
            .bytes()
            .await
            .map_err(|source| self.storage_error("read object", key, source))
    }

    /// Bytes `range` of the object under `key`. A range running past the end is cut at the
    /// end; one starting at or past the end is an error from the backend.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectsError> {
        let path = key::object_path(key)?;
        if range.end <= range.start {
            return Err(ObjectsError::InvalidRange {
                key: key.to_owned(),
                start: range.start,
                end: range.end,
            });
        }
        self.store
            .get_range(&path, range)
            .await
            .map_err(|source| self.storage_error("read range of object", key, source))
    }

    /// Removes the object under `key`; removing an absent object succeeds, so retries are safe.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        let path = key::object_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.storage_error("delete object", key, source)),
        }
    }

    /// Every object whose key lies under `prefix` (whole segments; `""` lists everything),
    /// sorted by key. A trailing `/` on the prefix is allowed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectsError> {
        let prefix_path = key::prefix_path(prefix)?;
        let listed: Result<Vec<object_store::ObjectMeta>, _> =
            self.store.list(prefix_path.as_ref()).try_collect().await;
        let listed = match listed {
            Ok(listed) => listed,
            // A prefix nobody has written under yet is simply empty.
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(source) => return Err(self.storage_error("list objects under", prefix, source)),
        };
        let mut objects: Vec<ObjectMeta> = listed
            .into_iter()
            .map(|meta| ObjectMeta {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            })
            .collect();
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    /// Starts a streaming upload to `key`, for outputs too large to hold in memory: call
    /// [`ObjectWriter::write`] repeatedly, then [`ObjectWriter::finish`]. The object
    /// appears only when `finish` succeeds.
    pub async fn put_multipart(&self, key: &str) -> Result<ObjectWriter, ObjectsError> {
        let path = key::object_path(key)?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|source| self.storage_error("start upload of object", key, source))?;
        Ok(ObjectWriter::new(
            key.to_owned(),
            Arc::clone(&self.description),
            upload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_store_and_the_key() {
        let root = std::env::temp_dir().join(format!("bosun-objects-url-{}", std::process::id()));
        let local = Objects::open(&ObjectStoreConfig::Local { root: root.clone() })
            .expect("local store opens");
        let url = local.url("commands/c/n/s/stdout");
        assert!(url.starts_with("file:///"), "{url}");
        assert!(url.ends_with("/commands/c/n/s/stdout"), "{url}");
        assert!(!url.contains("//commands"), "{url}");
        assert_eq!(local.bucket(), None);
        let _ = std::fs::remove_dir_all(root);

        let s3 = Objects::open(&ObjectStoreConfig::S3 {
            bucket: "bosun-outputs".into(),
            region: "eu-west-1".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key_id: None,
            secret_access_key: None,
            allow_http: true,
            prefix: Some("/prod/".into()),
        })
        .expect("s3 store configures");
        assert_eq!(
            s3.url("commands/x/stdout"),
            "s3://bosun-outputs/prod/commands/x/stdout"
        );
        assert_eq!(s3.bucket(), Some("bosun-outputs"));
    }
}
