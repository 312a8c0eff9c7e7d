//! Moving a tenant's content between cells, as the registry sees it: the
//! pages an export reads, the blob bytes copied under a named
//! garbage-collection hold, the upserts an import makes (keeping the other
//! cell's times), and purges of one repository or a whole namespace.
//!
//! Owns: the operations the admin API's tenant-move routes call
//! ([`Registry::export_repos`] and its siblings, [`Registry::store_blob`],
//! [`Registry::import_manifest`], [`Registry::purge_repository`]…), and
//! what this node forgets of content they remove.
//!
//! Must never: store bytes without a hold standing from before they are
//! written (the argument of `wharf_meta::gc`: an import's blob may wait
//! minutes for the manifest that references it, so its hold is named by
//! the import and lasts until the import releases it or
//! [`IMPORT_HOLD_SECS`] pass); record a manifest whose bytes are not
//! durable in the blob store, or whose digest does not match them; or
//! apply tenant rules meant for clients (quotas, immutable tags, the
//! fence): an import makes this cell a copy of another, and the operator
//! asked for it.

use bytes::Bytes;
use wharf_core::manifest::Manifest;
use wharf_core::{now_unix, Digest, RegistryError, RepoName, Tag};
use wharf_meta::{ManifestEntry, ManifestRecord, PurgeCounts, RepoEntry, TagTimes, Upsert};
use wharf_storage::{ByteStream, StorageError};

use crate::{meta_err, storage_err, Registry};

/// How long a hold named by an import protects a blob it copied: longer
/// than any move's copy phase; an import releases its holds when it is
/// done, and a hold nobody releases ends by itself after this.
pub const IMPORT_HOLD_SECS: u64 = 24 * 3600;

/// The holder name in metadata of the hold `hold_id`, apart from the
/// holders the registry's own writes use.
fn import_holder(hold_id: &str) -> String {
    format!("import:{hold_id}")
}

/// Checks a hold id an operator names: short, and plain enough to be a
/// path segment and a log field.
pub fn check_hold_id(hold_id: &str) -> Result<(), RegistryError> {
    let ok = !hold_id.is_empty()
        && hold_id.len() <= 128
        && hold_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidParameters(
            "a hold id is 1 to 128 of [A-Za-z0-9._-]".into(),
        ))
    }
}

/// What [`Registry::store_blob`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub size: u64,
    /// False when the blob was already in the store (nothing rewritten).
    pub written: bool,
}

impl Registry {
    /// The repositories of `namespace` after `last`, at most `n`.
    pub async fn export_repos(
        &self,
        namespace: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepoEntry>, RegistryError> {
        self.meta()
            .namespace_repos(namespace, last, n)
            .await
            .map_err(meta_err)
    }

    /// The blob links of `repo` after `last`, at most `n`.
    pub async fn export_blob_links(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, RegistryError> {
        self.meta()
            .list_blob_links(repo, last, n)
            .await
            .map_err(meta_err)
    }

    /// The manifests of `repo` with their times, after `last`, at most `n`.
    pub async fn export_manifests(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<ManifestEntry>, RegistryError> {
        self.meta()
            .list_manifests(repo, last, n)
            .await
            .map_err(meta_err)
    }

    /// The tags of `repo` with their times, after `last`, at most `n`.
    pub async fn export_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<TagTimes>, RegistryError> {
        self.meta()
            .list_tag_entries(repo, last, n)
            .await
            .map_err(meta_err)
    }

    /// The stored bytes of manifest `record`.
    pub async fn manifest_bytes(&self, record: &ManifestRecord) -> Result<Bytes, RegistryError> {
        self.read_small(&record.digest, record.size).await
    }

    /// The size of `digest` in the blob store, whatever links it.
    pub async fn stored_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        self.blobs().stat(digest).await.map_err(storage_err)
    }

    /// The bytes of `digest` from the blob store, whatever links it.
    pub async fn stored_bytes(&self, digest: &Digest) -> Result<ByteStream, RegistryError> {
        match self.blobs().get(digest, None).await {
            Ok(s) => Ok(s),
            Err(StorageError::NotFound) => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => Err(storage_err(e)),
        }
    }

    /// Streams `body` into the blob store as `digest`, verified as it is
    /// written (a mismatch stores nothing: `DIGEST_INVALID`). Content
    /// already stored is left as it is. With `hold_id`, the digest is held
    /// under that name (until [`Registry::release_holds`], at most
    /// [`IMPORT_HOLD_SECS`]) from before its bytes are written, so garbage
    /// collection keeps it until the import links it; without one, under a
    /// hold of its own that expires like an upload's.
    pub async fn store_blob(
        &self,
        digest: &Digest,
        body: ByteStream,
        hold_id: Option<&str>,
    ) -> Result<StoredBlob, RegistryError> {
        let (holder, until) = match hold_id {
            Some(id) => {
                check_hold_id(id)?;
                (
                    import_holder(id),
                    now_unix().saturating_add(IMPORT_HOLD_SECS),
                )
            }
            None => (
                format!("admin-blob:{}", uuid::Uuid::new_v4().simple()),
                now_unix().saturating_add(wharf_meta::gc::HOLD_SECS),
            ),
        };
        self.hold_content_until(digest, &holder, until).await?;
        if let Some(size) = self.blobs().stat(digest).await.map_err(storage_err)? {
            return Ok(StoredBlob {
                size,
                written: false,
            });
        }
        let id = crate::uploads::new_upload_id();
        self.blobs().upload_start(&id).await.map_err(storage_err)?;
        let committed = match self.blobs().upload_append(&id, 0, body).await {
            Ok(_) => self.blobs().upload_commit(&id, digest).await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(size) => Ok(StoredBlob {
                size,
                written: true,
            }),
            Err(e) => {
                // A mismatch ends the session itself; anything else may
                // leave it open.
                let _ = self.blobs().upload_cancel(&id).await;
                Err(storage_err(e))
            }
        }
    }

    /// Ends every hold named `hold_id` and queues what it held for a
    /// garbage-collection review; how many holds it ended.
    pub async fn release_holds(&self, hold_id: &str) -> Result<u64, RegistryError> {
        check_hold_id(hold_id)?;
        self.meta()
            .gc_unhold_all(&import_holder(hold_id), now_unix())
            .await
            .map_err(meta_err)
    }

    /// Makes `repo` exist with creation time `created_unix`.
    pub async fn import_repo(
        &self,
        repo: &RepoName,
        created_unix: u64,
    ) -> Result<Upsert, RegistryError> {
        self.meta()
            .import_repo(repo, created_unix)
            .await
            .map_err(meta_err)
    }

    /// Links blob `digest` of `size` bytes into `repo`; refused with
    /// `BLOB_UNKNOWN` when the blob store does not hold it (copy it first),
    /// and when its size there differs.
    pub async fn import_blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<Upsert, RegistryError> {
        match self.blobs().stat(digest).await.map_err(storage_err)? {
            Some(stored) if stored == size => {}
            Some(stored) => {
                return Err(RegistryError::DigestInvalid(format!(
                    "{digest} is {stored} bytes in the blob store, not {size}"
                )))
            }
            None => return Err(RegistryError::BlobUnknown(digest.clone())),
        }
        let held = self
            .meta()
            .blob_size(repo, digest)
            .await
            .map_err(meta_err)?;
        if held == Some(size) {
            return Ok(Upsert::Unchanged);
        }
        self.meta()
            .link_blob(repo, digest, size)
            .await
            .map_err(meta_err)?;
        self.inner.links.put((repo.clone(), digest.clone()), size);
        Ok(if held.is_some() {
            Upsert::Updated
        } else {
            Upsert::Created
        })
    }

    /// Stores manifest `bytes` (claimed to be `digest`, of `media_type`) in
    /// `repo` with the given times: verified, parsed as a push would parse
    /// it, written to the blob store under a hold, then recorded. Refused
    /// with `MANIFEST_BLOB_UNKNOWN` naming a reference `repo` does not
    /// hold.
    pub async fn import_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        bytes: Bytes,
        pushed_unix: u64,
        last_pulled_unix: Option<u64>,
    ) -> Result<Upsert, RegistryError> {
        if !digest.verifies(&bytes) {
            return Err(RegistryError::DigestInvalid(format!(
                "manifest content does not hash to {digest}"
            )));
        }
        let manifest = Manifest::parse(Some(media_type), &bytes)?;
        let record = self.manifest_record(digest, &manifest, bytes.len() as u64);
        let holder = format!("import-manifest:{}", uuid::Uuid::new_v4().simple());
        self.hold_content(digest, &holder).await?;
        if let Err(e) = self.blobs().put(digest, bytes).await {
            self.end_hold(digest, &holder);
            return Err(storage_err(e));
        }
        let entry = ManifestEntry {
            record,
            pushed_unix,
            last_pulled_unix,
        };
        let outcome = self.meta().import_manifest(repo, &entry).await;
        self.end_hold(digest, &holder);
        let outcome = outcome.map_err(meta_err)?;
        self.inner
            .manifests_seen
            .remove(&(repo.clone(), digest.clone()));
        Ok(outcome)
    }

    /// Points `tag` of `repo` at `digest` with push time `pushed_unix`.
    pub async fn import_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        pushed_unix: u64,
    ) -> Result<Upsert, RegistryError> {
        let entry = TagTimes {
            tag: tag.clone(),
            digest: digest.clone(),
            pushed_unix,
        };
        let outcome = self
            .meta()
            .import_tag(repo, &entry)
            .await
            .map_err(|e| match e {
                wharf_meta::MetaError::Missing(d) => {
                    RegistryError::ManifestUnknown(format!("{repo}@{d}"))
                }
                e => meta_err(e),
            })?;
        self.inner
            .tags
            .put((repo.clone(), tag.clone()), digest.clone());
        Ok(outcome)
    }

    /// Removes `tag` from `repo` (a sync import); whether it was there.
    pub async fn remove_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, RegistryError> {
        let found = self.meta().delete_tag(repo, tag).await.map_err(meta_err)?;
        self.inner.tags.remove(&(repo.clone(), tag.clone()));
        Ok(found)
    }

    /// Removes manifest `digest` from `repo` with its tags (a sync
    /// import); its references go to garbage collection's review queue as
    /// for a client's delete.
    pub async fn remove_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let found = self
            .meta()
            .delete_manifest(repo, digest)
            .await
            .map_err(meta_err)?;
        self.inner.manifests.remove(repo, digest);
        self.inner
            .manifests_seen
            .remove(&(repo.clone(), digest.clone()));
        self.inner
            .tags
            .remove_where(|(r, _), d| r == repo && d == digest);
        Ok(found)
    }

    /// Unlinks blob `digest` from `repo` (a sync import).
    pub async fn remove_blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let found = self
            .meta()
            .unlink_blob(repo, digest)
            .await
            .map_err(meta_err)?;
        self.forget_link(repo, digest);
        Ok(found)
    }

    /// Deletes repository `repo` (its links, manifests, tags, upload
    /// records) in one transaction; usage follows at once and the bytes go
    /// to garbage collection's review queue.
    pub async fn purge_repository(&self, repo: &RepoName) -> Result<PurgeCounts, RegistryError> {
        let counts = self.meta().purge_repository(repo).await.map_err(meta_err)?;
        self.forget_repos(|r| r == repo);
        Ok(counts)
    }

    /// Deletes every repository of `namespace`, as
    /// [`Registry::purge_repository`] does one.
    pub async fn purge_namespace(&self, namespace: &str) -> Result<PurgeCounts, RegistryError> {
        let counts = self
            .meta()
            .purge_namespace(namespace)
            .await
            .map_err(meta_err)?;
        self.forget_repos(|r| r.namespace() == namespace);
        Ok(counts)
    }

    /// Drops what this node cached of the repositories `gone` picks, so
    /// its next answers ask metadata.
    fn forget_repos(&self, gone: impl Fn(&RepoName) -> bool) {
        self.inner.tags.remove_where(|(r, _), _| gone(r));
        self.inner.links.remove_where(|(r, _), _| gone(r));
        self.inner.manifests_seen.remove_where(|(r, _), _| gone(r));
    }
}
