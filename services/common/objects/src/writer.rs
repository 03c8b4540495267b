//! Streaming uploads for objects too large to hold in memory (long command output).
//!
//! Data is cut into parts uploaded in the background while the caller keeps writing; a
//! bounded number of parts in flight keeps memory per writer at roughly
//! `PART_SIZE * (MAX_PARTS_IN_FLIGHT + 1)`, about 15 MiB.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{MultipartUpload, WriteMultipart};

use crate::ObjectsError;

/// S3's minimum size for every part but the last.
const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts uploading at once before `write` waits; this is the back-pressure on producers.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// A streaming upload started by [`Objects::put_multipart`](crate::Objects::put_multipart).
///
/// Finish it with [`finish`](Self::finish) or throw it away with [`abort`](Self::abort).
/// Dropping it unfinished aborts the upload in the background (best effort), and the object
/// is not created.
pub struct ObjectWriter {
    key: String,
    store: Arc<str>,
    /// `None` once an upload failed and was aborted, or after finish/abort.
    upload: Option<WriteMultipart>,
    written: u64,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("store", &self.store)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl ObjectWriter {
    pub(crate) fn new(key: String, store: Arc<str>, upload: Box<dyn MultipartUpload>) -> Self {
        ObjectWriter {
            key,
            store,
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            written: 0,
        }
    }

    /// The key the object will have.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn storage_error(&self, operation: &'static str, source: object_store::Error) -> ObjectsError {
        ObjectsError::Storage {
            operation,
            key: self.key.clone(),
            store: self.store.to_string(),
            source: Box::new(source),
        }
    }

    /// Appends `bytes`. Waits while too many parts are still uploading. When an earlier
    /// part failed, the upload is aborted and the error returned; later calls return
    /// [`ObjectsError::UploadAborted`].
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), ObjectsError> {
        let Some(upload) = self.upload.as_mut() else {
            return Err(ObjectsError::UploadAborted {
                key: self.key.clone(),
            });
        };
        if let Err(source) = upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
            // A failed part poisons the whole upload; abort so no parts linger on the backend.
            if let Some(upload) = self.upload.take()
                && let Err(error) = upload.abort().await
            {
                tracing::warn!(key = %self.key, store = %self.store, %error, "aborting a failed upload failed");
            }
            return Err(self.storage_error("write object", source));
        }
        self.written += bytes.len() as u64;
        upload.put(bytes);
        Ok(())
    }

    /// Uploads what is buffered and completes the object; only now does it become visible.
    pub async fn finish(mut self) -> Result<(), ObjectsError> {
        let Some(upload) = self.upload.take() else {
            return Err(ObjectsError::UploadAborted {
                key: self.key.clone(),
            });
        };
        // WriteMultipart aborts the upload itself when finishing fails.
        upload
            .finish()
            .await
            .map_err(|source| self.storage_error("finish upload of object", source))?;
        Ok(())
    }

    /// Abandons the upload and removes the parts already sent; the object is not created.
    pub async fn abort(mut self) -> Result<(), ObjectsError> {
        match self.upload.take() {
            Some(upload) => upload
                .abort()
                .await
                .map_err(|source| self.storage_error("abort upload of object", source)),
            None => Ok(()),
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        // Without a runtime we cannot abort; the backend then keeps the partial upload (on S3
        // until a lifecycle rule removes it, locally as a `<key>#<n>` staging file).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (key, store) = (self.key.clone(), Arc::clone(&self.store));
                runtime.spawn(async move {
                    if let Err(error) = upload.abort().await {
                        tracing::warn!(%key, %store, %error, "aborting an abandoned upload failed");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(key = %self.key, store = %self.store, "upload dropped outside a runtime; partial data is left behind");
            }
        }
    }
}
