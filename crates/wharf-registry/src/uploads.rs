//! Upload sessions: start, append chunks, finish with a digest, cancel,
//! mount from another repository, and expiry of abandoned sessions.
//!
//! The session record (which repository it belongs to, who opened it, how
//! many bytes it holds) lives in metadata, so any node can continue a
//! session; the bytes and the running hash live in the blob store, which
//! verifies the digest while the bytes stream.
//!
//! Open sessions are capped per namespace and per owner (see
//! [`RegistryConfig`](crate::RegistryConfig)), and their bytes count
//! against the tenant's byte quota: a body that would pass it is cut off
//! while it streams, refused `DENIED`, and its session ended. The caps are
//! checked when a session starts, so sessions started at the same moment
//! may pass a cap by a few; the next start is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use wharf_core::{now_unix, Digest, RegistryError, RepoName, UploadId};
use wharf_meta::UploadRecord;
use wharf_storage::{ByteStream, StorageError};

use crate::quota::{Addition, Room};
use crate::{meta_err, storage_err, Registry};

/// Seconds a client refused for too many open sessions is asked to wait.
const SESSIONS_RETRY_AFTER: u32 = 10;

/// `body`, failing as soon as more than `room` bytes came through, and
/// then setting `tripped`, so the caller can tell a quota stop from a
/// client's broken body.
fn capped(body: ByteStream, room: u64, tripped: Arc<AtomicBool>) -> ByteStream {
    let mut seen: u64 = 0;
    body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > room {
            tripped.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(
                "the upload would pass the tenant's storage quota",
            ));
        }
        Ok(chunk)
    })
    .boxed()
}

pub(crate) fn new_upload_id() -> UploadId {
    UploadId::new(uuid::Uuid::new_v4().to_string()).expect("a hyphenated UUID is a valid upload id")
}

impl Registry {
    /// Opens a new upload session in `repo` for `owner` (the authenticated
    /// subject; `None` without authentication). Refused `TOOMANYREQUESTS`
    /// while the namespace, or the owner in it, has as many sessions open
    /// as the configuration allows.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        owner: Option<&str>,
    ) -> Result<UploadId, RegistryError> {
        self.check_session_caps(repo, owner).await?;
        let record = UploadRecord {
            id: new_upload_id(),
            repo: repo.clone(),
            started_unix: now_unix(),
            bytes: 0,
            owner: owner.map(str::to_string),
        };
        // Metadata first: storage never holds a session nobody can name.
        self.meta().put_upload(&record).await.map_err(meta_err)?;
        if let Err(e) = self.blobs().upload_start(&record.id).await {
            let _ = self.meta().delete_upload(&record.id).await;
            return Err(storage_err(e));
        }
        Ok(record.id)
    }

    /// `TOOMANYREQUESTS` when `repo`'s namespace, or `owner` in it, has
    /// as many upload sessions open as allowed.
    async fn check_session_caps(
        &self,
        repo: &RepoName,
        owner: Option<&str>,
    ) -> Result<(), RegistryError> {
        let config = &self.inner.config;
        let (per_tenant, per_user) = (config.max_uploads_per_tenant, config.max_uploads_per_user);
        let owner = owner.filter(|_| per_user > 0);
        if per_tenant == 0 && owner.is_none() {
            return Ok(());
        }
        let ns = repo.namespace();
        let open = self
            .meta()
            .upload_usage(ns, owner)
            .await
            .map_err(meta_err)?;
        let refuse = |reason: String| {
            Err(RegistryError::TooManyRequests {
                reason,
                retry_after: SESSIONS_RETRY_AFTER,
            })
        };
        if per_tenant > 0 && open.sessions >= per_tenant {
            return refuse(format!(
                "tenant {ns} has {} upload sessions open and may have at most {per_tenant}; \
                 finish or cancel some before starting another",
                open.sessions
            ));
        }
        if let Some(owner) = owner {
            if open.owned >= per_user {
                return refuse(format!(
                    "{owner} has {} upload sessions open in {ns} and may have at most {per_user}; \
                     finish or cancel some before starting another",
                    open.owned
                ));
            }
        }
        Ok(())
    }

    /// Session `id`, if it exists and belongs to `repo`: an id from one
    /// repository is unknown in every other.
    async fn session(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord, RegistryError> {
        match self.meta().get_upload(id).await.map_err(meta_err)? {
            Some(r) if r.repo == *repo => Ok(r),
            _ => Err(RegistryError::BlobUploadUnknown),
        }
    }

    /// Appends `body` at `offset` to session `id`, cut off (and the session
    /// ended, `DENIED`) once the session would hold more than `room`
    /// allows. The new size.
    async fn append_within(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
        room: Option<Room>,
    ) -> Result<u64, StorageError> {
        let Some(room) = room else {
            return self.blobs().upload_append(id, offset, body).await;
        };
        let tripped = Arc::new(AtomicBool::new(false));
        let body = capped(
            body,
            room.bytes.saturating_sub(offset),
            Arc::clone(&tripped),
        );
        let appended = self.blobs().upload_append(id, offset, body).await;
        if appended.is_err() && tripped.load(Ordering::SeqCst) {
            return Err(StorageError::Body(QUOTA_STOP.into()));
        }
        appended
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
        let record = self.session(repo, id).await?;
        let offset = match start {
            Some(s) => s,
            None => self.blobs().upload_size(id).await.map_err(upload_err)?,
        };
        let room = self.upload_room(repo, None, record.bytes).await?;
        match self.append_within(id, offset, body, room.clone()).await {
            Ok(size) => {
                // Stop an upload that holds more than the quota allows now
                // (other sessions may have grown meanwhile), rather than
                // let it grow until it completes.
                let add = Addition {
                    repo,
                    digest: None,
                    bytes: size,
                    own_recorded: record.bytes,
                };
                if let Err(e) = self.check_quota(add).await {
                    self.end_refused_upload(id).await;
                    return Err(e);
                }
                self.meta()
                    .set_upload_bytes(id, size)
                    .await
                    .map_err(meta_err)?;
                Ok(size)
            }
            Err(StorageError::Body(why)) if why == QUOTA_STOP => {
                self.end_refused_upload(id).await;
                Err(quota_stop(room))
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
        let record = self.session(repo, id).await?;
        if let Some(body) = body {
            let offset = self.blobs().upload_size(id).await.map_err(upload_err)?;
            let room = self.upload_room(repo, Some(digest), record.bytes).await?;
            match self.append_within(id, offset, body, room.clone()).await {
                Ok(_) => {}
                Err(StorageError::Body(why)) if why == QUOTA_STOP => {
                    self.end_refused_upload(id).await;
                    return Err(quota_stop(room));
                }
                Err(e) => return Err(upload_err(e)),
            }
        }
        let size = self.blobs().upload_size(id).await.map_err(upload_err)?;
        let add = Addition {
            repo,
            digest: Some(digest),
            bytes: size,
            own_recorded: record.bytes,
        };
        if let Err(e) = self.check_quota(add).await {
            self.end_refused_upload(id).await;
            return Err(e);
        }
        // From here until the link commits, the bytes are the blob's and
        // nothing in metadata holds them: hold the digest first, so that
        // garbage collection cannot delete them in between (`wharf_meta::gc`).
        self.hold_content(digest, id.as_str()).await?;
        let size = match self.blobs().upload_commit(id, digest).await {
            Ok(size) => size,
            Err(e) => {
                self.end_hold(digest, id.as_str());
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
        // Linked or refused (a tombstone, the database), the hold has done
        // its work: refused bytes are unrecorded, an orphan's to collect.
        self.end_hold(digest, id.as_str());
        forgot.map_err(meta_err)?;
        linked.map_err(meta_err)?;
        self.inner.links.put((repo.clone(), digest.clone()), size);
        Ok(size)
    }

    /// A monolithic upload (`POST ?digest=` with the whole blob as body) by
    /// `owner`: a session of its own, so the session caps apply.
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        owner: Option<&str>,
    ) -> Result<u64, RegistryError> {
        let id = self.start_upload(repo, owner).await?;
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
            own_recorded: 0,
        })
        .await?;
        // Linked only if `from` still holds it when the link commits: a
        // link `from` had when checked above may have been collected since.
        let Some(size) = self
            .meta()
            .mount_blob(from, repo, digest)
            .await
            .map_err(meta_err)?
        else {
            return Ok(None);
        };
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

/// What [`Registry::append_within`] reports for a body it cut off.
const QUOTA_STOP: &str = "stopped at the tenant's storage quota";

/// The refusal of a body cut off at `room`.
fn quota_stop(room: Option<Room>) -> RegistryError {
    match room {
        Some(room) => room.refusal(),
        None => RegistryError::Denied("quota exceeded".into()),
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
