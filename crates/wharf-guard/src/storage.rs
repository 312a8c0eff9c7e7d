//! [`GuardedBlobStore`]: any `BlobStore` behind a [`Guard`].

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use wharf_core::{Digest, UploadId};
use wharf_storage::{BlobStore, ByteStream, StorageError};

use crate::{Guard, GuardError};

/// A blob store whose every call goes through a guard. Reads of a blob's
/// bytes are guarded while the stream is opened; the bytes then flow at the
/// client's pace. Appends are guarded without a deadline, for the same
/// reason: the request body's minimum rate bounds them instead.
pub struct GuardedBlobStore {
    inner: Arc<dyn BlobStore>,
    guard: Guard,
}

impl GuardedBlobStore {
    pub fn new(inner: Arc<dyn BlobStore>, guard: Guard) -> Self {
        GuardedBlobStore { inner, guard }
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    async fn call<T>(
        &self,
        deadline: bool,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let failure =
            |e: &StorageError| matches!(e, StorageError::Unavailable(_) | StorageError::Io(_));
        self.guard
            .run(deadline, failure, f)
            .await
            .map_err(|e| match e {
                GuardError::Inner(e) => e,
                other => StorageError::Unavailable(format!("{}: {other}", self.guard.name())),
            })
    }
}

#[async_trait]
impl BlobStore for GuardedBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.call(true, self.inner.stat(digest)).await
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        self.call(true, self.inner.get(digest, range)).await
    }

    async fn read_small(&self, digest: &Digest, size: u64) -> Result<Bytes, StorageError> {
        self.call(true, self.inner.read_small(digest, size)).await
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StorageError> {
        self.call(true, self.inner.put(digest, bytes)).await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        self.call(true, self.inner.delete(digest)).await
    }

    async fn list(&self) -> Result<Vec<Digest>, StorageError> {
        self.call(false, self.inner.list()).await
    }

    async fn upload_start(&self, id: &UploadId) -> Result<(), StorageError> {
        self.call(true, self.inner.upload_start(id)).await
    }

    async fn upload_size(&self, id: &UploadId) -> Result<u64, StorageError> {
        self.call(true, self.inner.upload_size(id)).await
    }

    async fn redirect_url(
        &self,
        digest: &Digest,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        self.call(true, self.inner.redirect_url(digest, ttl)).await
    }

    async fn upload_append(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        self.call(false, self.inner.upload_append(id, offset, body))
            .await
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, StorageError> {
        // Commit hashes and fsyncs the whole upload: allow for its size by
        // leaving it to the storage's own pacing rather than a fixed deadline.
        self.call(false, self.inner.upload_commit(id, digest)).await
    }

    async fn upload_cancel(&self, id: &UploadId) -> Result<(), StorageError> {
        self.call(true, self.inner.upload_cancel(id)).await
    }

    async fn upload_list(&self) -> Result<Vec<UploadId>, StorageError> {
        self.call(false, self.inner.upload_list()).await
    }
}
