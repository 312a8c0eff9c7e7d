//! Registry metadata: which repositories hold which blobs and manifests,
//! tags, the referrers index and upload sessions.
//!
//! Owns: the [`MetaStore`] trait, the embedded backend ([`embedded::EmbeddedStore`],
//! on redb: a pure-Rust, ACID, single-file store, so the default install
//! needs no other service), the PostgreSQL backend
//! ([`postgres::PostgresStore`], which the nodes of a multi-node registry
//! share, each through its own bounded pool), and the shared behaviour
//! suite ([`suite`]) that every backend must pass.
//!
//! Must never: hold blob bytes (those live in a `BlobStore`), or leave a
//! half-applied change visible: every mutating call is one transaction.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wharf_core::{Digest, RepoName, Tag, UploadId};

pub mod embedded;
pub mod postgres;
pub mod suite;

/// What the registry remembers about a manifest stored in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    /// Length of the stored manifest bytes.
    pub size: u64,
    /// Reported in referrers lists (`artifactType`, else config media type).
    pub artifact_type: Option<String>,
    /// The manifest's own annotations, reported in referrers lists.
    pub annotations: Option<BTreeMap<String, String>>,
    /// The manifest this one refers to, if any.
    pub subject: Option<Digest>,
    /// Blobs and child manifests this manifest references.
    pub references: Vec<Digest>,
}

/// An open upload session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: UploadId,
    /// The repository the upload will land in.
    pub repo: RepoName,
    /// When the session started, in seconds since the Unix epoch.
    pub started_unix: u64,
}

/// What a metadata call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store cannot be reached or refused the call.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: corruption, a bug, an unexpected engine error.
    #[error("metadata store error: {0}")]
    Internal(String),
}

/// Registry metadata, shared by all nodes that serve the same registry.
///
/// Lists are in byte-wise lexical order; paginated lists return the entries
/// strictly after `last`, at most `n` of them.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Records that `repo` holds blob `digest` of `size` bytes. Idempotent.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64)
        -> Result<(), MetaError>;

    /// The size of blob `digest` if `repo` holds it.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Forgets that `repo` holds blob `digest`; false if it did not.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// Stores `record` in `repo` and, with `tag`, points the tag at it (moving
    /// it if it pointed elsewhere), and indexes it as a referrer of its
    /// subject: all in one transaction. Storing the same record again is a
    /// no-op apart from the tag.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError>;

    /// The manifest `digest` in `repo`.
    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError>;

    /// Removes manifest `digest` from `repo`, every tag of `repo` that points
    /// at it, and its entry in the referrers index; false if it was absent.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// The digest `tag` points at in `repo`.
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError>;

    /// Removes `tag` from `repo` (the manifest stays); false if absent.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError>;

    /// Tags of `repo`, lexically after `last`, at most `n`.
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, MetaError>;

    /// Manifests in `repo` whose subject is `subject`, ordered by digest.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ManifestRecord>, MetaError>;

    /// Whether anything (a blob link or a manifest) was ever stored in `repo`.
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, MetaError>;

    /// Repository names, lexically after `last`, at most `n`.
    async fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, MetaError>;

    /// Records an upload session.
    async fn put_upload(&self, upload: &UploadRecord) -> Result<(), MetaError>;

    /// The upload session `id`.
    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>, MetaError>;

    /// Forgets upload session `id` (no error if absent).
    async fn delete_upload(&self, id: &UploadId) -> Result<(), MetaError>;

    /// Every open upload session.
    async fn list_uploads(&self) -> Result<Vec<UploadRecord>, MetaError>;
}
