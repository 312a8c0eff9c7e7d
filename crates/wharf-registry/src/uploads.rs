//! Upload sessions: start, append chunks, finish with a digest, cancel,
//! mount from another repository, and expiry of abandoned sessions.
//!
//! The session record (which repository it belongs to) lives in metadata, so
//! any node can continue a session; the bytes and the running hash live in
//! the blob store, which verifies the digest while the bytes stream.

use std::time::Duration;

use wharf_core::{now_unix, Digest, RegistryError, RepoName, UploadId};
use wharf_meta::UploadRecord;
use wharf_storage::{ByteStream, StorageError};

use crate::quota::Addition;
use crate::{meta_err, storage_err, Registry};

fn new_upload_id() -> UploadId {
    UploadId::new(uuid::Uuid::new_v4().to_string()).expect("a hyphenated UUID is a valid upload id")
}

impl Registry {
    /// Opens a new upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadId, RegistryError> {
        let record = UploadRecord {
            id: new_upload_id(),
            repo: repo.clone(),
            started_unix: now_unix(),
            bytes: 0,
            owner: None,
        };
        // Metadata first: storage never holds a session nobody can name.
        self.meta().put_upload(&record).await.map_err(meta_err)?;
        if let Err(e) = self.blobs().upload_start(&record.id).await {
            let _ = self.meta().delete_upload(&record.id).await;
            return Err(storage_err(e));
        }
        Ok(record.id)
    }

    /// Checks that session `id` exists and belongs to `repo`: an id from one
    /// repository is unknown in every other.
    async fn session(&self, repo: &RepoName, id: &UploadId) -> Result<(), RegistryError> {
        match self.meta().get_upload(id).await.map_err(meta_err)? {
            Some(r) if r.repo == *repo => Ok(()),
            _ => Err(RegistryError::BlobUploadUnknown),
        }
    }

    /// Bytes received so far by session `id`.
    pub async fn upload_size(&self, repo: &RepoName, id: &UploadId) -> Result<u64, RegistryError> {
        self.session(repo, id).await?;
        self.blobs().upload_size(id).await.map_err(upload_err)
    }

    /// Appends a chunk. With `start` (from `Content-Range`), the chunk must
    /// begin exactly where the upload ends, else `416`. Returns the new size.
    pub async fn patch_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<u64, RegistryError> {
        self.session(repo, id).await?;
        let offset = match start {
            Some(s) => s,
            None => self.blobs().upload_size(id).await.map_err(upload_err)?,
        };
        match self.blobs().upload_append(id, offset, body).await {
            Ok(size) => {
                // Stop an upload that already holds more than the quota
                // allows, rather than let it grow until it completes.
                let add = Addition {
                    repo,
                    digest: None,
                    bytes: size,
                };
                if let Err(e) = self.check_quota(add).await {
                    self.end_refused_upload(id).await;
                    return Err(e);
                }
                Ok(size)
            }
            Err(StorageError::OffsetMismatch { size }) => Err(RegistryError::UploadOutOfOrder {
                size,
                start: offset,
            }),
            Err(e) => Err(upload_err(e)),
        }
    }

    /// Completes session `id`: appends the final chunk if there is one,
    /// verifies the whole content against `digest`, and makes the blob part
    /// of `repo`. On a digest mismatch nothing is stored and the session ends.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64, RegistryError> {
        self.session(repo, id).await?;
        if let Some(body) = body {
            let offset = self.blobs().upload_size(id).await.map_err(upload_err)?;
            self.blobs()
                .upload_append(id, offset, body)
                .await
                .map_err(upload_err)?;
        }
        let size = self.blobs().upload_size(id).await.map_err(upload_err)?;
        let add = Addition {
            repo,
            digest: Some(digest),
            bytes: size,
        };
        if let Err(e) = self.check_quota(add).await {
            self.end_refused_upload(id).await;
            return Err(e);
        }
        let size = match self.blobs().upload_commit(id, digest).await {
            Ok(size) => size,
            Err(e) => {
                if matches!(e, StorageError::DigestMismatch { .. }) {
                    // The session is over in storage all the same.
                    self.meta().delete_upload(id).await.map_err(meta_err)?;
                }
                return Err(upload_err(e));
            }
        };
        // The session is over and the blob is in place: forget the one and
        // link the other at once, so that a store with group commit (the
        // embedded one) makes both durable with one fsync.
        let (forgot, linked) = tokio::join!(
            self.meta().delete_upload(id),
            self.meta().link_blob(repo, digest, size)
        );
        forgot.map_err(meta_err)?;
        linked.map_err(meta_err)?;
        self.inner.links.put((repo.clone(), digest.clone()), size);
        Ok(size)
    }

    /// A monolithic upload (`POST ?digest=` with the whole blob as body).
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64, RegistryError> {
        let id = self.start_upload(repo).await?;
        let result = self.finish_upload(repo, &id, digest, Some(body)).await;
        if result.is_err() {
            let _ = self.cancel_upload(repo, &id).await;
        }
        result
    }

    /// Ends a session a quota refused: its bytes are discarded (best
    /// effort: the start-up sweep removes what a failure here leaves).
    async fn end_refused_upload(&self, id: &UploadId) {
        if let Err(e) = self.blobs().upload_cancel(id).await {
            tracing::debug!(error = %e, "discarding a refused upload");
        }
        if let Err(e) = self.meta().delete_upload(id).await {
            tracing::debug!(error = %e, "forgetting a refused upload");
        }
    }

    /// Ends session `id` and discards its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<(), RegistryError> {
        self.session(repo, id).await?;
        match self.blobs().upload_cancel(id).await {
            Ok(()) | Err(StorageError::NotFound) => {}
            Err(e) => return Err(storage_err(e)),
        }
        self.meta().delete_upload(id).await.map_err(meta_err)
    }

    /// Cross-repository mount: if `from` holds blob `digest`, `repo` now
    /// holds it too, without copying. Returns its size, or `None` when it
    /// cannot be mounted (the caller then starts a normal upload).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Option<u64>, RegistryError> {
        let Some(size) = self
            .meta()
            .blob_size(from, digest)
            .await
            .map_err(meta_err)?
        else {
            return Ok(None);
        };
        if self
            .blobs()
            .stat(digest)
            .await
            .map_err(storage_err)?
            .is_none()
        {
            return Ok(None);
        }
        self.check_quota(Addition {
            repo,
            digest: Some(digest),
            bytes: size,
        })
        .await?;
        self.meta()
            .link_blob(repo, digest, size)
            .await
            .map_err(meta_err)?;
        self.inner.links.put((repo.clone(), digest.clone()), size);
        Ok(Some(size))
    }

    /// Removes sessions started more than the configured expiry ago, and, at
    /// start-up (`orphans`), storage sessions that no metadata names.
    /// Returns how many were removed.
    pub async fn expire_uploads(&self, orphans: bool) -> Result<usize, RegistryError> {
        let max_age = self.inner.config.upload_expiry;
        let cutoff = now_unix().saturating_sub(max_age.as_secs());
        // Storage is listed before metadata. A session is recorded in
        // metadata before storage opens it, and leaves storage before its
        // record is deleted, so a session missing from a later metadata
        // listing is a true orphan (or already gone), never one that another
        // node has just started.
        let in_storage = if orphans {
            self.blobs().upload_list().await.map_err(storage_err)?
        } else {
            Vec::new()
        };
        let records = self.meta().list_uploads().await.map_err(meta_err)?;
        let mut removed = 0;
        for r in &records {
            if r.started_unix < cutoff {
                match self.blobs().upload_cancel(&r.id).await {
                    Ok(()) | Err(StorageError::NotFound) => {}
                    Err(e) => return Err(storage_err(e)),
                }
                self.meta().delete_upload(&r.id).await.map_err(meta_err)?;
                removed += 1;
            }
        }
        if orphans {
            let known: std::collections::HashSet<_> = records.iter().map(|r| &r.id).collect();
            for id in in_storage {
                if !known.contains(&id) {
                    let _ = self.blobs().upload_cancel(&id).await;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// How often `expire_uploads` should run.
    pub fn upload_sweep_interval(&self) -> Duration {
        (self.inner.config.upload_expiry / 4).max(Duration::from_secs(60))
    }
}

/// Storage errors during an upload: a missing session is the client's
/// `BLOB_UPLOAD_UNKNOWN`, not an internal error.
fn upload_err(e: StorageError) -> RegistryError {
    match e {
        StorageError::NotFound => RegistryError::BlobUploadUnknown,
        other => storage_err(other),
    }
}
