//! The `[objects]` section of bosun.toml and turning it into an `object_store` backend.
//!
//! Building a backend does no I/O beyond creating the local root directory, so a bad
//! configuration is reported at start-up with a reason, and S3 reachability at first use.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::{ObjectsError, key};

/// Where objects are kept. In TOML:
///
/// ```toml
/// [objects]
/// kind = "local"
/// root = "/var/lib/bosun/objects"
/// ```
///
/// ```toml
/// [objects]
/// kind = "s3"
/// bucket = "bosun-outputs"
/// region = "eu-west-1"
/// endpoint = "http://minio.internal:9000"   # optional, for S3-compatible servers
/// access_key_id = "..."                    # optional: both keys, or neither to use the
/// secret_access_key = "..."                # instance's role (EC2 metadata)
/// allow_http = true                        # optional, default false
/// prefix = "prod"                          # optional: keys live under prod/
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ObjectStoreConfig {
    /// A directory on this machine; created if missing.
    Local { root: PathBuf },
    /// An S3 bucket, on AWS or an S3-compatible server (MinIO, Ceph, Garage...).
    S3 {
        bucket: String,
        region: String,
        /// The server's base URL; AWS's regional endpoint when absent. Path-style
        /// requests (`<endpoint>/<bucket>/<key>`) are used, as S3-compatible servers expect.
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key: Option<SecretString>,
        /// Permits an `http://` endpoint; credentials and data then cross the network in clear.
        #[serde(default)]
        allow_http: bool,
        /// A key prefix under which this installation's objects live, without slashes at
        /// either end (they are trimmed).
        #[serde(default)]
        prefix: Option<String>,
    },
}

fn config_error(reason: impl Into<String>) -> ObjectsError {
    ObjectsError::Config {
        reason: reason.into(),
    }
}

/// The backend for `config`, and a description of it for messages.
pub(crate) fn build(
    config: &ObjectStoreConfig,
) -> Result<(Arc<dyn ObjectStore>, String), ObjectsError> {
    match config {
        ObjectStoreConfig::Local { root } => build_local(root),
        ObjectStoreConfig::S3 {
            bucket,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            allow_http,
            prefix,
        } => build_s3(S3Settings {
            bucket,
            region,
            endpoint: endpoint.as_deref(),
            access_key_id: access_key_id.as_deref(),
            secret_access_key: secret_access_key.as_ref(),
            allow_http: *allow_http,
            prefix: prefix.as_deref(),
        }),
    }
}

fn build_local(root: &std::path::Path) -> Result<(Arc<dyn ObjectStore>, String), ObjectsError> {
    if root.as_os_str().is_empty() {
        return Err(config_error("local root must not be empty"));
    }
    let create_root_error = |source| ObjectsError::CreateRoot {
        root: root.to_owned(),
        source,
    };
    std::fs::create_dir_all(root).map_err(create_root_error)?;
    // object_store resolves the root once; canonicalising here too gives the description
    // the same absolute path the files will be under.
    let canonical_root = std::fs::canonicalize(root).map_err(create_root_error)?;
    let store = LocalFileSystem::new_with_prefix(&canonical_root).map_err(|error| {
        config_error(format!(
            "use {} as the local root: {error}",
            canonical_root.display()
        ))
    })?;
    Ok((
        Arc::new(store),
        format!("local:{}", canonical_root.display()),
    ))
}

struct S3Settings<'a> {
    bucket: &'a str,
    region: &'a str,
    endpoint: Option<&'a str>,
    access_key_id: Option<&'a str>,
    secret_access_key: Option<&'a SecretString>,
    allow_http: bool,
    prefix: Option<&'a str>,
}

fn build_s3(settings: S3Settings<'_>) -> Result<(Arc<dyn ObjectStore>, String), ObjectsError> {
    let bucket = settings.bucket.trim();
    if bucket.is_empty() {
        return Err(config_error("s3 bucket must not be empty"));
    }
    let region = settings.region.trim();
    if region.is_empty() {
        return Err(config_error("s3 region must not be empty"));
    }

    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_allow_http(settings.allow_http);

    let mut description_endpoint = String::new();
    if let Some(endpoint) = settings.endpoint {
        let parsed = url::Url::parse(endpoint)
            .map_err(|error| config_error(format!("s3 endpoint {endpoint:?}: {error}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if settings.allow_http => {}
            "http" => {
                return Err(config_error(format!(
                    "s3 endpoint {endpoint} uses http but allow_http is false"
                )));
            }
            other => {
                return Err(config_error(format!(
                    "s3 endpoint {endpoint} has scheme {other}, expected https or http"
                )));
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(config_error(
                "s3 endpoint must not carry credentials; use access_key_id and secret_access_key",
            ));
        }
        builder = builder.with_endpoint(endpoint);
        description_endpoint = format!(" at {endpoint}");
    }

    match (settings.access_key_id, settings.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => {
            if access_key_id.is_empty() || secret_access_key.expose_secret().is_empty() {
                return Err(config_error(
                    "s3 access_key_id and secret_access_key must not be empty",
                ));
            }
            builder = builder
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key.expose_secret());
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(config_error(
                "s3 access_key_id is set but secret_access_key is missing; set both or neither",
            ));
        }
        (None, Some(_)) => {
            return Err(config_error(
                "s3 secret_access_key is set but access_key_id is missing; set both or neither",
            ));
        }
    }

    let store = builder
        .build()
        .map_err(|error| config_error(format!("s3 bucket {bucket}: {error}")))?;

    let prefix = settings
        .prefix
        .map(|prefix| prefix.trim_matches('/'))
        .filter(|prefix| !prefix.is_empty());
    match prefix {
        None => Ok((
            Arc::new(store),
            format!("s3://{bucket}{description_endpoint}"),
        )),
        Some(prefix) => {
            let prefix_path = key::object_path(prefix).map_err(|error| match error {
                ObjectsError::InvalidKey { rule, .. } => {
                    config_error(format!("s3 prefix {prefix:?}: {rule}"))
                }
                other => other,
            })?;
            Ok((
                Arc::new(PrefixStore::new(store, prefix_path)),
                format!("s3://{bucket}/{prefix}{description_endpoint}"),
            ))
        }
    }
}
