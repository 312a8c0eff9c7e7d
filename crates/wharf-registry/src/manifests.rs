//! Manifests and tags: validated on push, served from memory on pull.
//!
//! A `PUT` is accepted only when the manifest parses, its digest reference
//! (if pushed by digest) matches its bytes, and everything it references is
//! already in the repository. Its bytes are made durable in the blob store
//! before metadata records it.

use bytes::Bytes;
use wharf_core::manifest::{Manifest, ManifestKind};
use wharf_core::{Digest, Reference, RegistryError, RepoName};
use wharf_meta::ManifestRecord;
use wharf_storage::StorageError;

use crate::cache::Cached;
use crate::quota::Addition;
use crate::{meta_err, storage_err, unreachable, Registry};

/// A manifest as served: exactly the bytes that were pushed.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a successful manifest `PUT` tells the client.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    /// The manifest's digest (the reference's algorithm if pushed by digest,
    /// else sha256).
    pub digest: Digest,
    /// The subject it refers to, echoed as `OCI-Subject`.
    pub subject: Option<Digest>,
    /// Its media type, as stored.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What metadata records of a manifest, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestSummary {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

impl Registry {
    /// The digest a reference names in `repo` (resolving tags), and the
    /// manifest's record when a tag was read from metadata with it (one
    /// call for a pull by tag this node does not know).
    async fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, Option<ManifestRecord>), RegistryError> {
        match reference {
            Reference::Digest(d) => Ok((d.clone(), None)),
            Reference::Tag(t) => {
                let key = (repo.clone(), t.clone());
                // A tag this node learned moments ago is good enough: a
                // move made through another node shows here within the TTL
                // (this node's own moves update the entry at once).
                let ttl = self.inner.config.tag_cache_ttl;
                if let Some(d) = self.inner.tags.get_fresh(&key, ttl) {
                    return Ok((d, None));
                }
                match self.meta().get_tagged_manifest(repo, t).await {
                    Ok(Some(record)) => {
                        self.inner.tags.put(key, record.digest.clone());
                        Ok((record.digest.clone(), Some(record)))
                    }
                    Ok(None) => {
                        self.inner.tags.remove(&key);
                        Err(RegistryError::ManifestUnknown(format!("{repo}:{t}")))
                    }
                    // Metadata unreachable: the tag as this node last saw it.
                    Err(e) if unreachable(&e) => self
                        .inner
                        .tags
                        .get(&key)
                        .map(|d| (d, None))
                        .ok_or_else(|| meta_err(e)),
                    Err(e) => Err(meta_err(e)),
                }
            }
        }
    }

    /// The manifest `reference` names in `repo`; the pull is recorded for
    /// retention, off the request path.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest, RegistryError> {
        let found = self.find_manifest(repo, reference).await?;
        self.note_pull(repo, &found.digest);
        Ok(found)
    }

    async fn find_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest, RegistryError> {
        let (digest, record) = self.resolve(repo, reference).await?;
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}@{digest}"));
        let seen = (repo.clone(), digest.clone());
        let cached = self.inner.manifests.get(repo, &digest);
        let from_cache = |c: Cached| StoredManifest {
            digest: digest.clone(),
            media_type: c.media_type,
            bytes: c.bytes,
        };
        let ttl = self.inner.config.link_cache_ttl;
        if let Some(c) = cached
            .as_ref()
            .filter(|_| self.inner.manifests_seen.get_fresh(&seen, ttl).is_some())
        {
            return Ok(from_cache(c.clone()));
        }
        let found = match record {
            Some(record) => Ok(Some(record)),
            None => self.meta().get_manifest(repo, &digest).await,
        };
        let record = match found {
            Ok(Some(record)) => record,
            Ok(None) => {
                // Deleted (through another node, or never here).
                self.inner.manifests.remove(repo, &digest);
                self.inner.manifests_seen.remove(&seen);
                return Err(unknown());
            }
            // Metadata unreachable: the bytes this node holds are still the
            // manifest's (content addressed); serve them.
            Err(e) if unreachable(&e) => return cached.map(from_cache).ok_or_else(|| meta_err(e)),
            Err(e) => return Err(meta_err(e)),
        };
        self.inner.manifests_seen.put(seen, ());
        if let Some(c) = cached {
            return Ok(from_cache(c));
        }
        let bytes = match self.read_small(&digest, record.size).await {
            Err(RegistryError::BlobUnknown(_)) => {
                tracing::error!(%repo, %digest, "manifest recorded in metadata is missing from storage");
                return Err(unknown());
            }
            other => other?,
        };
        self.inner.manifests.insert(
            repo,
            &digest,
            Cached {
                media_type: record.media_type.clone(),
                bytes: bytes.clone(),
            },
        );
        Ok(StoredManifest {
            digest,
            media_type: record.media_type,
            bytes,
        })
    }

    /// Reads a small stored object (a manifest) whole.
    pub(crate) async fn read_small(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Bytes, RegistryError> {
        match self.blobs().read_small(digest, size).await {
            Ok(bytes) => Ok(bytes),
            Err(StorageError::NotFound) => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => Err(storage_err(e)),
        }
    }

    /// Stores a manifest pushed to `repo` under `reference`.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutOutcome, RegistryError> {
        let manifest = Manifest::parse(content_type, &bytes)?;
        let digest = match reference {
            Reference::Digest(d) if d.verifies(&bytes) => d.clone(),
            Reference::Digest(d) => {
                return Err(RegistryError::DigestInvalid(format!(
                    "manifest content does not hash to {d}"
                )))
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        self.check_tag_put(repo, reference, &digest).await?;
        self.check_references(repo, &manifest).await?;
        self.check_quota(Addition {
            repo,
            digest: Some(&digest),
            bytes: bytes.len() as u64,
            own_recorded: 0,
        })
        .await?;

        // Held from before the bytes are stored until the record holds
        // them, as a blob upload is (`wharf_meta::gc`).
        let holder = format!("manifest:{}", uuid::Uuid::new_v4().simple());
        self.hold_content(&digest, &holder).await?;
        if let Err(e) = self.blobs().put(&digest, bytes.clone()).await {
            self.end_hold(&digest, &holder);
            return Err(storage_err(e));
        }
        let record = self.manifest_record(&digest, &manifest, bytes.len() as u64);
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        if let Err(e) = self.meta().put_manifest(repo, &record, tag).await {
            // Refused: nothing will record these bytes on this attempt, so
            // its hold must not postpone their review for an hour (a retry
            // takes a hold of its own; unrecorded bytes are orphans).
            self.end_hold(&digest, &holder);
            if let wharf_meta::MetaError::Missing(_) = &e {
                // What this node cached of the repository's links is stale
                // (collected, or removed through another node): the
                // client's next `HEAD`s must ask metadata.
                for d in &record.references {
                    self.forget_link(repo, d);
                }
            }
            return Err(meta_err(e));
        }
        self.end_hold(&digest, &holder);
        if let Some(t) = tag {
            self.inner
                .tags
                .put((repo.clone(), t.clone()), digest.clone());
        }
        let size = bytes.len() as u64;
        self.inner.manifests.insert(
            repo,
            &digest,
            Cached {
                media_type: manifest.media_type.clone(),
                bytes,
            },
        );
        self.inner
            .manifests_seen
            .put((repo.clone(), digest.clone()), ());
        Ok(PutOutcome {
            digest,
            subject: record.subject,
            media_type: manifest.media_type,
            size,
        })
    }

    /// The manifest `tag` of `repo` points at, as metadata holds it now
    /// (not this node's tag cache, which may be a TTL behind a move made
    /// through another node); `None` if the tag does not exist. For
    /// telling a push that moves a tag from one that creates it.
    pub async fn tag_target(
        &self,
        repo: &RepoName,
        tag: &wharf_core::Tag,
    ) -> Result<Option<Digest>, RegistryError> {
        self.meta().resolve_tag(repo, tag).await.map_err(meta_err)
    }

    /// What metadata records of the manifest `reference` names in `repo`
    /// now (a tag resolved in metadata), without reading its bytes;
    /// `None` if there is none. For describing a manifest about to be
    /// deleted.
    pub async fn describe_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestSummary>, RegistryError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match self.tag_target(repo, t).await? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let record = self
            .meta()
            .get_manifest(repo, &digest)
            .await
            .map_err(meta_err)?;
        Ok(record.map(|r| ManifestSummary {
            digest,
            media_type: r.media_type,
            size: r.size,
        }))
    }

    /// What metadata records of manifest `manifest` (`digest`, `size`
    /// bytes).
    pub(crate) fn manifest_record(
        &self,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
    ) -> ManifestRecord {
        ManifestRecord {
            digest: digest.clone(),
            media_type: manifest.media_type.clone(),
            size,
            // Reported only in referrers lists, which list only manifests
            // with a subject: not kept for the others (most manifests),
            // whose records are then a third of the size.
            artifact_type: manifest
                .subject
                .as_ref()
                .and_then(|_| manifest.referrer_artifact_type()),
            annotations: manifest
                .subject
                .as_ref()
                .and_then(|_| manifest.annotations.clone()),
            subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
            // What the repository must hold for this manifest (foreign
            // layers live elsewhere), each once.
            references: {
                let mut refs: Vec<Digest> = manifest
                    .required_blobs()
                    .chain(&manifest.manifests)
                    .map(|d| d.digest.clone())
                    .collect();
                refs.sort();
                refs.dedup();
                refs
            },
        }
    }

    /// Refuses a manifest whose blobs (image) or child manifests (index) are
    /// not in `repo`.
    async fn check_references(&self, repo: &RepoName, m: &Manifest) -> Result<(), RegistryError> {
        for blob in m.required_blobs() {
            let held = self
                .meta()
                .blob_size(repo, &blob.digest)
                .await
                .map_err(meta_err)?;
            if held.is_none() {
                // This node may have told the client the blob was there
                // (a cached link): its next `HEAD` must ask metadata.
                self.forget_link(repo, &blob.digest);
                return Err(RegistryError::ManifestBlobUnknown(blob.digest.clone()));
            }
        }
        if m.kind == ManifestKind::Index {
            for child in &m.manifests {
                let held = self
                    .meta()
                    .get_manifest(repo, &child.digest)
                    .await
                    .map_err(meta_err)?;
                if held.is_none() {
                    return Err(RegistryError::ManifestChildUnknown(child.digest.clone()));
                }
            }
        }
        Ok(())
    }

    /// Deletes a tag (by tag reference) or a manifest with all its tags (by
    /// digest).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        self.check_delete(repo, reference).await?;
        let found = match reference {
            Reference::Tag(t) => {
                let found = self.meta().delete_tag(repo, t).await.map_err(meta_err)?;
                self.inner.tags.remove(&(repo.clone(), t.clone()));
                found
            }
            Reference::Digest(d) => {
                let found = self
                    .meta()
                    .delete_manifest(repo, d)
                    .await
                    .map_err(meta_err)?;
                self.inner.manifests.remove(repo, d);
                self.inner.manifests_seen.remove(&(repo.clone(), d.clone()));
                self.inner
                    .tags
                    .remove_where(|(r, _), digest| r == repo && digest == d);
                found
            }
        };
        if found {
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown(format!(
                "{repo} {reference}"
            )))
        }
    }

    /// Tags of `repo` after `last`, at most `n`; `NAME_UNKNOWN` for a
    /// repository that was never pushed to.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, RegistryError> {
        if !self.meta().repo_exists(repo).await.map_err(meta_err)? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        self.meta().list_tags(repo, last, n).await.map_err(meta_err)
    }
}
