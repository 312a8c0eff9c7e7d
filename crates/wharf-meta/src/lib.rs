//! Registry metadata: which repositories hold which blobs and manifests,
//! tags, the referrers index, upload sessions, what each namespace holds,
//! push and pull times for retention ([`retention`]), and the tenant
//! directory (opaque entries under one version number).
//!
//! Owns: the [`MetaStore`] trait, the embedded backend ([`embedded::EmbeddedStore`],
//! on redb: a pure-Rust, ACID, single-file store, so the default install
//! needs no other service), the PostgreSQL backend
//! ([`postgres::PostgresStore`], which the nodes of a multi-node registry
//! share, each through its own bounded pool), and the shared behaviour
//! suite ([`suite`]) that every backend must pass.
//!
//! Must never: hold blob bytes (those live in a `BlobStore`), interpret
//! directory values (`wharf-tenants` owns their format), or leave a
//! half-applied change visible: every mutating call is one transaction, and
//! a directory change bumps the version in the same transaction.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wharf_core::{Digest, RepoName, Tag, UploadId};
pub use wharf_retention::{
    ManifestRecord as ManifestTimes, RepositorySnapshot, TagRecord as TagTimes,
};

pub mod embedded;
pub mod gc;
pub mod postgres;
pub mod retention;
pub mod suite;

/// What the registry remembers about a manifest stored in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    /// Length of the stored manifest bytes.
    pub size: u64,
    /// Reported in referrers lists (`artifactType`, else config media
    /// type). The registry keeps it only for a manifest with a subject.
    pub artifact_type: Option<String>,
    /// The manifest's own annotations, reported in referrers lists. The
    /// registry keeps them only for a manifest with a subject.
    pub annotations: Option<BTreeMap<String, String>>,
    /// The manifest this one refers to, if any.
    pub subject: Option<Digest>,
    /// Blobs (config and layers, but foreign layers) and child manifests
    /// this manifest references: each must be held by the repository when
    /// the record is stored ([`MetaStore::put_manifest`] refuses it
    /// otherwise), and each stays out of garbage collection while the
    /// record exists.
    pub references: Vec<Digest>,
}

/// A manifest pulled: what [`MetaStore::record_pulls`] records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    /// The repository it was pulled from.
    pub repo: RepoName,
    /// The manifest.
    pub digest: Digest,
    /// When (the node's clock).
    pub at_unix: u64,
}

/// An open upload session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: UploadId,
    /// The repository the upload will land in.
    pub repo: RepoName,
    /// When the session started, in seconds since the Unix epoch.
    pub started_unix: u64,
    /// Bytes the session has received so far, as last recorded with
    /// [`MetaStore::set_upload_bytes`] (0 in records written before this
    /// field existed).
    #[serde(default)]
    pub bytes: u64,
    /// The authenticated subject (user or robot name) that opened the
    /// session; `None` when authentication is off.
    #[serde(default)]
    pub owner: Option<String>,
}

/// The upload sessions open in one namespace, as
/// [`MetaStore::upload_usage`] reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadUsage {
    /// Sessions open in the namespace's repositories.
    pub sessions: u64,
    /// The bytes those sessions have received, summed.
    pub bytes: u64,
    /// How many of those sessions the owner asked about opened (0 when none
    /// was asked about).
    pub owned: u64,
}

/// What [`MetaStore::purge_namespace`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Blob links (the bytes stay in the blob store).
    pub blobs: u64,
    /// Manifests, with their referrers-index entries.
    pub manifests: u64,
    pub tags: u64,
    pub repositories: u64,
    /// Upload session records (their bytes in the blob store are removed by
    /// the registry's upload sweep, which finds them orphaned).
    pub uploads: u64,
}

/// A repository of a namespace, as [`MetaStore::namespace_repos`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoEntry {
    pub name: RepoName,
    /// When the repository was first stored (its first blob link or
    /// manifest), seconds since the Unix epoch; for a repository stored
    /// before creation times were kept, when the upgrade ran.
    pub created_unix: u64,
}

/// A manifest with its times, as [`MetaStore::list_manifests`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub record: ManifestRecord,
    /// When the repository first stored it (see [`retention`]).
    pub pushed_unix: u64,
    /// When it was last pulled, recorded coarsely; `None`: never.
    pub last_pulled_unix: Option<u64>,
}

/// What an import call did to the entry it was given: the counts a tenant
/// move reports (a delta pass is as large as what it created and updated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// The entry was absent and is now stored.
    Created,
    /// The entry was there, with other values (times included); it now
    /// holds the given ones.
    Updated,
    /// The entry was there exactly as given; nothing was written.
    Unchanged,
}

/// How many entries of one kind an import created, updated, left alone
/// and (a `sync` import) deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertCounts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl UpsertCounts {
    /// Counts one entry's outcome.
    pub fn count(&mut self, outcome: Upsert) {
        match outcome {
            Upsert::Created => self.created += 1,
            Upsert::Updated => self.updated += 1,
            Upsert::Unchanged => self.unchanged += 1,
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &UpsertCounts) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
    }
}

/// One entry of the tenant directory (tenants, users, robot accounts). The
/// store keeps `value` as opaque text (JSON written by `wharf-tenants`);
/// `kind` and `key` identify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryRecord {
    /// `tenant`, `user` or `robot` (the store does not interpret it).
    pub kind: String,
    /// Unique within `kind`.
    pub key: String,
    pub value: String,
}

/// The whole directory as of one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectorySnapshot {
    /// Bumped by every change; 0 for a directory never written.
    pub version: u64,
    /// Ordered by kind, then key.
    pub records: Vec<DirectoryRecord>,
}

/// A refresh token as the store keeps it: the hash of its secret (never
/// the secret), whom it was issued to and until when. All nodes share the
/// store, so every node honours and revokes a refresh token alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// SHA-256 hex of the secret; unique.
    pub hash: String,
    /// The subject name the token was issued to.
    pub subject: String,
    /// The identity id behind that name when it was issued.
    pub identity: String,
    /// The identity's credential generation when it was issued.
    pub generation: String,
    /// The tenant of the identity; empty for the operator's own accounts.
    pub tenant: String,
    /// The service (registry) it is good for.
    pub service: String,
    pub created_unix: u64,
    pub expires_unix: u64,
}

/// Which refresh tokens a revocation removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshScope {
    /// Those of one identity (by id).
    Identity(String),
    /// Those of every identity of one tenant.
    Tenant(String),
    /// Every refresh token.
    All,
}

/// What a namespace (a tenant: the first path component of its
/// repositories) holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceUsage {
    /// Sizes of the distinct blobs linked in the namespace's repositories
    /// (a blob in two of its repositories counts once), plus the sizes of
    /// its manifests (each distinct manifest digest once).
    pub bytes: u64,
    /// Repositories of the namespace that hold anything (a blob link or a
    /// manifest).
    pub repositories: u64,
    /// Whether some repository of the namespace already holds the blob or
    /// manifest asked about (`false` when none was asked about).
    pub holds_digest: bool,
}

/// What a metadata call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    /// The store cannot be reached or refused the call.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: corruption, a bug, an unexpected engine error.
    #[error("metadata store error: {0}")]
    Internal(String),
    /// The digest's bytes are being deleted by garbage collection right now
    /// (a tombstone stands): nothing may hold it until they are gone. Worth
    /// retrying in a moment, when the content can be stored again.
    #[error("{0} is being garbage collected; retry shortly")]
    Collecting(Digest),
    /// A manifest references content the repository does not hold (any
    /// more): a blob not linked, or a child manifest not stored.
    #[error("the repository does not hold {0}")]
    Missing(Digest),
}

/// Registry metadata, shared by all nodes that serve the same registry.
///
/// Lists are in byte-wise lexical order; paginated lists return the entries
/// strictly after `last`, at most `n` of them.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Records that `repo` holds blob `digest` of `size` bytes, and queues
    /// (or postpones) its link review. Idempotent. Refused with
    /// [`MetaError::Collecting`] while the digest is tombstoned.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64)
        -> Result<(), MetaError>;

    /// Cross-repository mount, in one transaction: if `from` holds blob
    /// `digest`, `to` now holds it too (as [`MetaStore::link_blob`] would
    /// record it); its size, or `None` when `from` does not hold it.
    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError>;

    /// The size of blob `digest` if `repo` holds it.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Forgets that `repo` holds blob `digest`, queueing its content for
    /// review; false if it did not.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// Stores `record` in `repo` and, with `tag`, points the tag at it (moving
    /// it if it pointed elsewhere), and indexes it as a referrer of its
    /// subject and as a holder of its references: all in one transaction.
    /// Storing the same record again is a no-op apart from the tag.
    ///
    /// Refused, with nothing written, with [`MetaError::Missing`] when
    /// `repo` does not hold one of `record.references` (as a blob link or a
    /// manifest), and with [`MetaError::Collecting`] while the manifest's
    /// own digest is tombstoned (see [`gc`]).
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
    /// at it, and its entry in the referrers index, and queues the review of
    /// its references' links and of its own content; false if it was absent.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// The digest `tag` points at in `repo`.
    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError>;

    /// The record of the manifest `tag` points at in `repo`, read together
    /// with the tag (one snapshot, one call): a pull by tag that misses the
    /// node's caches asks once. A tag always points at a stored manifest.
    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError>;

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

    /// Records that upload session `id` has received `bytes` bytes so far
    /// (the sum [`MetaStore::upload_usage`] reports); no error if the
    /// session is gone.
    async fn set_upload_bytes(&self, id: &UploadId, bytes: u64) -> Result<(), MetaError>;

    /// The upload sessions open in namespace `namespace` (repositories
    /// `namespace` and `namespace/…`, never `namespace-other/…`): how many,
    /// their recorded bytes, and how many of them `owner` opened.
    /// `namespace` is checked as in [`MetaStore::namespace_usage`].
    async fn upload_usage(
        &self,
        namespace: &str,
        owner: Option<&str>,
    ) -> Result<UploadUsage, MetaError>;

    /// What namespace `namespace` holds (repositories named `namespace` or
    /// `namespace/…`, never `namespace-other/…`), and whether it already
    /// holds `digest`. `namespace` is one repository-name component (what
    /// [`RepoName::namespace`] returns); anything else is a caller's bug,
    /// refused as [`MetaError::Internal`].
    async fn namespace_usage(
        &self,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<NamespaceUsage, MetaError>;

    /// Removes everything namespace `namespace` holds in metadata (every
    /// blob link, manifest, tag, referrers entry, repository entry and
    /// upload record of repositories `namespace` and `namespace/…`, never
    /// `namespace-other/…`), in one transaction; purging an empty namespace
    /// is a no-op, so it is safe to repeat. Blob bytes stay in the blob
    /// store: reclaiming them is garbage collection's business (another
    /// namespace may link the same blob). `namespace` is checked as in
    /// [`MetaStore::namespace_usage`].
    async fn purge_namespace(&self, namespace: &str) -> Result<PurgeCounts, MetaError>;

    /// [`MetaStore::purge_namespace`] for the one repository `repo` (never
    /// `repo/…` nor any other): its blob links, manifests, tags, referrers
    /// entries, upload records and repository entry, in one transaction,
    /// every removed digest queued for a content review as a purge queues
    /// it. Purging an absent repository is a no-op.
    async fn purge_repository(&self, repo: &RepoName) -> Result<PurgeCounts, MetaError>;

    // ---- moving a tenant between cells (export and import) ----

    /// The repositories of namespace `namespace` (named `namespace` or
    /// `namespace/…`) lexically after `last`, at most `n`, with their
    /// creation times. `namespace` is checked as in
    /// [`MetaStore::namespace_usage`].
    async fn namespace_repos(
        &self,
        namespace: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepoEntry>, MetaError>;

    /// The blob links of `repo` (digest and size), by digest, after
    /// `last`, at most `n`.
    async fn list_blob_links(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, MetaError>;

    /// The manifests of `repo` with their times, by digest, after `last`,
    /// at most `n`.
    async fn list_manifests(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<ManifestEntry>, MetaError>;

    /// The tags of `repo` with their targets and push times, by name,
    /// after `last`, at most `n`.
    async fn list_tag_entries(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<TagTimes>, MetaError>;

    /// Makes repository `repo` exist with creation time `created_unix`
    /// (another cell's): created if absent, its time set if different.
    /// Holds nothing by itself: usage counts a repository once it holds a
    /// blob link or a manifest.
    async fn import_repo(&self, repo: &RepoName, created_unix: u64) -> Result<Upsert, MetaError>;

    /// [`MetaStore::put_manifest`] without a tag, keeping times given by
    /// another cell: the record is stored (or left, if identical) and its
    /// push and pull times set to `pushed_unix` and `last_pulled_unix`.
    /// The same checks refuse it, with nothing written: a reference
    /// `repo` does not hold ([`MetaError::Missing`]), a tombstoned digest
    /// ([`MetaError::Collecting`]). Usage, the referrers index and the
    /// references garbage collection protects follow as for a push.
    async fn import_manifest(
        &self,
        repo: &RepoName,
        entry: &ManifestEntry,
    ) -> Result<Upsert, MetaError>;

    /// Points `tag.tag` of `repo` at `tag.digest` with push time
    /// `tag.pushed_unix` (another cell's); refused with
    /// [`MetaError::Missing`] when `repo` does not hold that manifest.
    async fn import_tag(&self, repo: &RepoName, tag: &TagTimes) -> Result<Upsert, MetaError>;

    /// Writes directory entry (`kind`, `key`) and bumps the directory
    /// version, in one transaction; true when written. With `create_only`,
    /// an existing entry is left alone (no bump) and `false` returned.
    /// `kind`, `key` and `value` may hold any text but NUL (which
    /// PostgreSQL's `text` cannot store), refused as [`MetaError::Internal`].
    async fn directory_put(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        create_only: bool,
    ) -> Result<bool, MetaError>;

    /// Removes directory entry (`kind`, `key`) and bumps the version; false
    /// (and no bump) if it was absent.
    async fn directory_delete(&self, kind: &str, key: &str) -> Result<bool, MetaError>;

    /// The directory's current version (cheap: nodes poll it).
    async fn directory_version(&self) -> Result<u64, MetaError>;

    /// Every directory entry and the version they are consistent with.
    async fn directory_snapshot(&self) -> Result<DirectorySnapshot, MetaError>;

    /// Keeps refresh token `record`, and in the same transaction deletes
    /// its identity's tokens expired at `now_unix` and, past
    /// `max_per_identity` live ones, the oldest (by creation, then hash),
    /// so one account can never hold more than that many.
    async fn refresh_put(
        &self,
        record: &RefreshRecord,
        max_per_identity: usize,
        now_unix: u64,
    ) -> Result<(), MetaError>;

    /// Removes refresh token `hash` and returns it (`None` if absent): a
    /// refresh token is used once and replaced, and of two concurrent
    /// uses only one gets it. Expiry is the caller's to check.
    async fn refresh_take(&self, hash: &str) -> Result<Option<RefreshRecord>, MetaError>;

    /// Deletes the refresh tokens `which` names; how many it deleted.
    async fn refresh_revoke(&self, which: &RefreshScope) -> Result<u64, MetaError>;

    /// Every refresh token of tenant `tenant` (expired ones included), by
    /// hash: what a tenant move copies to the other cell, so that a
    /// client's refresh token keeps working there.
    async fn refresh_list(&self, tenant: &str) -> Result<Vec<RefreshRecord>, MetaError>;

    /// Deletes refresh tokens expired at `now_unix`; how many.
    async fn refresh_prune(&self, now_unix: u64) -> Result<u64, MetaError>;

    // ---- garbage collection (see [`gc`] for the safety argument) ----

    /// Postpones the link review of (`repo`, `digest`) to `now_unix`, if one
    /// is queued (a client checked for or fetched the blob). Nothing else.
    async fn gc_touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_unix: u64,
    ) -> Result<(), MetaError>;

    /// Protects `digest` from collection until `until_unix`, before its
    /// bytes are written and recorded; `holder` names the writer. Refused
    /// with [`MetaError::Collecting`] while the digest is tombstoned.
    async fn gc_hold(
        &self,
        digest: &Digest,
        holder: &str,
        until_unix: u64,
    ) -> Result<(), MetaError>;

    /// Ends `holder`'s hold on `digest` (its record now holds the content);
    /// no error if there is none.
    async fn gc_unhold(&self, digest: &Digest, holder: &str) -> Result<(), MetaError>;

    /// Ends every hold of `holder`, whatever the digest, and in the same
    /// transaction queues a content review of each digest it held (touched
    /// at `now_unix`, an earlier queued review keeping its time), so bytes
    /// that no record took over are collected without waiting for a
    /// storage scan. How many holds it ended. Holders that name a batch of
    /// writes (a tenant import) use this; a scan of the holds.
    async fn gc_unhold_all(&self, holder: &str, now_unix: u64) -> Result<u64, MetaError>;

    /// Decides the reviews due under `policy` (and claims tombstones whose
    /// lease has passed), at most `policy.limit`, oldest first; each decision
    /// commits on its own (none with `dry_run`). Safe to call from many
    /// nodes at once: a review is decided by one of them.
    async fn gc_review(&self, policy: &gc::ReviewPolicy) -> Result<Vec<gc::Verdict>, MetaError>;

    /// Removes `holder`'s tombstone of `digest` once the bytes are gone;
    /// false if it stands no more or is another collector's.
    async fn gc_release(&self, digest: &Digest, holder: &str) -> Result<bool, MetaError>;

    /// Queues an orphan review, touched at `now_unix`, for each of `digests`
    /// that metadata does not know at all (nothing holds it, nothing is
    /// queued or tombstoned for it); how many it queued.
    async fn gc_enqueue_orphans(&self, digests: &[Digest], now_unix: u64)
        -> Result<u64, MetaError>;

    /// The namespaces holding the most bytes (as
    /// [`MetaStore::namespace_usage`] counts them), largest first, at most
    /// `n`: what the usage metrics export.
    async fn largest_namespaces(&self, n: usize) -> Result<Vec<(String, u64)>, MetaError>;

    /// The queue under `policy`'s clock and delays.
    async fn gc_status(&self, policy: &gc::ReviewPolicy) -> Result<gc::GcStatus, MetaError>;

    /// Every digest metadata holds (linked, stored as a manifest, referenced
    /// by a manifest, held or tombstoned), and every digest queued for
    /// review with when that review is due under `policy`: what a storage
    /// check compares the blob store against.
    async fn gc_known(&self, policy: &gc::ReviewPolicy) -> Result<gc::Known, MetaError>;

    // ---- retention (the planner is `wharf_retention`; see [`retention`]) ----

    /// Records each pull of `pulls` as [`MetaStore::record_pull`] does, in
    /// as few writes as the backend can (one transaction or statement for
    /// the lot): a node gathers the pulls of a moment and records them
    /// together, so a registry pulled across many manifests does not queue
    /// a write per manifest. How many were written.
    async fn record_pulls(&self, pulls: &[Pull]) -> Result<u64, MetaError>;

    /// Records that manifest `digest` of `repo` was pulled at `now_unix`,
    /// unless the pull recorded for it is less than
    /// [`retention::PULL_RECORD_SECS`] older than that (or newer): at most
    /// one write per manifest per interval, whatever the pull rate. True
    /// when it wrote; false, with nothing written, for a manifest the
    /// repository does not hold.
    async fn record_pull(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_unix: u64,
    ) -> Result<bool, MetaError> {
        let pull = Pull {
            repo: repo.clone(),
            digest: digest.clone(),
            at_unix: now_unix,
        };
        Ok(self.record_pulls(std::slice::from_ref(&pull)).await? > 0)
    }

    /// Every repository of namespace `namespace` that holds a manifest,
    /// with its tags and manifests as the retention planner reads them:
    /// push and pull times, subjects, and the children of indexes (the
    /// references that are manifests of the same repository). Repositories
    /// by name, tags by name, manifests by digest; one consistent read.
    /// `namespace` is checked as in [`MetaStore::namespace_usage`].
    async fn retention_snapshot(
        &self,
        namespace: &str,
    ) -> Result<Vec<RepositorySnapshot>, MetaError>;

    /// Removes `tag` from `repo` only if it points at `digest`, in one
    /// transaction; false, with nothing done, if it is absent or points
    /// elsewhere (a retention plan's tag deletion, re-checked where it
    /// cannot race a push).
    async fn delete_tag_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError>;

    /// [`MetaStore::delete_manifest`], only if nothing of `repo` still
    /// needs the manifest: no tag points at it, no index lists it, no
    /// referrer names it as subject; checked in the same transaction (under
    /// the digest's lock of [`gc`] on PostgreSQL). False, with nothing
    /// done, if it is absent or needed. A tag or an index pushed
    /// concurrently either lands first (and the manifest stays) or after
    /// (and the push stores it again, or is refused with
    /// [`MetaError::Missing`]): never a deleted tag, never an index
    /// missing a child. A referrer pushed at the same moment may still
    /// find its subject gone, as with any delete (OCI allows that).
    async fn delete_untagged_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, MetaError>;
}

/// Refuses a `namespace` that is not one repository-name component, so no
/// backend ever matches a prefix it was not asked about.
fn check_namespace(namespace: &str) -> Result<(), MetaError> {
    if namespace.contains('/') || namespace.parse::<RepoName>().is_err() {
        return Err(MetaError::Internal(format!(
            "{namespace:?} is not a namespace (one repository-name component)"
        )));
    }
    Ok(())
}

/// Refuses directory text neither backend can store alike: the embedded
/// backend uses NUL as its key separator, PostgreSQL cannot store it at all.
fn check_directory_text(parts: &[&str]) -> Result<(), MetaError> {
    if parts.iter().any(|p| p.contains('\0')) {
        return Err(MetaError::Internal(
            "directory kind, key and value must not contain NUL".into(),
        ));
    }
    Ok(())
}
