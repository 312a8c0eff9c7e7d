//! Registry logic: what a push or a pull means, over any blob store and any
//! metadata store.
//!
//! Owns: blob access by repository ([`blobs`]), upload sessions ([`uploads`]),
//! manifests and tags ([`manifests`]), the referrers index ([`referrers`]),
//! retention policies applied ([`retention`]), a tenant's content moved
//! between cells ([`moving`]: export pages, blob copies under named holds,
//! imports keeping times, purges),
//! tenant quotas and immutable tags as they bear on a request (`quota`,
//! `immutable`) and the catalog. Handlers in the HTTP crate call
//! [`Registry`] and nothing below it.
//!
//! Must never: speak HTTP (no status codes, no headers: errors are
//! [`RegistryError`] values, classified in one place in `wharf-core`), or
//! touch storage other than through the `BlobStore` and `MetaStore` traits.
//! A manifest is recorded in metadata only after its bytes are durable in the
//! blob store, so metadata never points at bytes that are not there.

#![forbid(unsafe_code)]

use std::sync::Arc;

use wharf_core::{Digest, ImmutableTagSource, QuotaSource, RegistryError, RepoName, Tag};
use wharf_meta::{MetaError, MetaStore};
use wharf_storage::{BlobStore, StorageError};

pub mod blobs;
mod cache;
mod holds;
mod immutable;
mod last_known;
pub mod manifests;
pub mod moving;
mod pull_log;
mod quota;
pub mod referrers;
pub mod retention;
pub mod uploads;

pub use blobs::{BlobRead, ByteRange};
pub use manifests::{ManifestSummary, PutOutcome, StoredManifest};
pub use wharf_storage::ByteStream;

/// Tunables of the registry service.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Bytes of manifest content kept in memory for fast pulls.
    pub manifest_cache_bytes: usize,
    /// Upload sessions idle for longer than this are removed.
    pub upload_expiry: std::time::Duration,
    /// Upload sessions that may be open at once in one namespace (a
    /// tenant); starting another is refused with `429`. 0: no cap.
    pub max_uploads_per_tenant: u64,
    /// Upload sessions one authenticated user (or robot) may have open at
    /// once in one namespace; 0: no cap. Without authentication sessions
    /// have no owner and only the namespace cap applies.
    pub max_uploads_per_user: u64,
    /// Blob links and tags remembered (each) to serve pulls while metadata
    /// is unreachable; 0 turns that off.
    pub last_known_entries: usize,
    /// How long a tag looked up in metadata is used without asking again
    /// (zero: ask every time). Bounds how late a tag moved through another
    /// node shows on this one.
    pub tag_cache_ttl: std::time::Duration,
    /// The same for a blob link (a repository holding a blob) and for a
    /// manifest: how late a blob or manifest deleted through another node
    /// stops being served here.
    pub link_cache_ttl: std::time::Duration,
    /// Bytes of small blobs (configs, small layers: up to
    /// [`SMALL_BLOB_MAX`] each) kept in memory; 0 turns that off.
    pub small_blob_cache_bytes: usize,
}

/// Default of [`RegistryConfig::max_uploads_per_tenant`].
pub const DEFAULT_MAX_UPLOADS_PER_TENANT: u64 = 512;
/// Default of [`RegistryConfig::max_uploads_per_user`].
pub const DEFAULT_MAX_UPLOADS_PER_USER: u64 = 64;

/// The most pulls a node gathers before writing them (`pull_log`): a
/// second of pulls at 20,000 a second, a few MiB at most.
const PULL_LOG_ENTRIES: usize = 20_000;

/// The largest blob kept in the small-blob cache.
pub const SMALL_BLOB_MAX: u64 = 256 * 1024;

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            manifest_cache_bytes: 64 * 1024 * 1024,
            upload_expiry: std::time::Duration::from_secs(24 * 3600),
            max_uploads_per_tenant: DEFAULT_MAX_UPLOADS_PER_TENANT,
            max_uploads_per_user: DEFAULT_MAX_UPLOADS_PER_USER,
            last_known_entries: 100_000,
            tag_cache_ttl: std::time::Duration::from_secs(2),
            link_cache_ttl: std::time::Duration::from_secs(2),
            small_blob_cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The registry service: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// One in-memory cache's size, from [`Registry::cache_usage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheUsage {
    /// `manifests`, `small_blobs` (bounded in bytes), or one of the
    /// last-known maps (bounded in entries).
    pub name: &'static str,
    pub entries: usize,
    /// Bytes counted against the budget (byte-bounded caches only).
    pub bytes: Option<usize>,
    /// The budget in bytes, or the most entries.
    pub bound: usize,
}

struct Inner {
    /// Where blob and manifest bytes live.
    blobs: Arc<dyn BlobStore>,
    /// Which repository holds what; tags; referrers; upload sessions.
    meta: Arc<dyn MetaStore>,
    /// Manifest bytes by repository and digest (immutable, so always valid
    /// until the manifest is deleted).
    manifests: cache::ManifestCache,
    /// When this node last saw metadata hold a manifest (repository,
    /// digest): a cached manifest is served without asking again for the
    /// link TTL, so a delete made through another node shows here within it.
    manifests_seen: last_known::LastKnown<(RepoName, Digest), ()>,
    /// Small blobs by digest: a pull of a config or a small layer then
    /// needs no storage call (and no trip to the blocking pool).
    small_blobs: cache::BlobCache,
    /// Blob links (repository, digest) -> size, last learned from metadata.
    links: last_known::LastKnown<(RepoName, Digest), u64>,
    /// Tags (repository, tag) -> digest, last learned from metadata.
    tags: last_known::LastKnown<(RepoName, Tag), Digest>,
    /// Blob links whose garbage-collection review this node postponed
    /// lately (on a `HEAD` or `GET`): at most one touch a minute each.
    touched: last_known::LastKnown<(RepoName, Digest), ()>,
    /// Manifests whose pull this node recorded lately: at most one record
    /// an hour each (`retention`).
    pulled: last_known::LastKnown<(RepoName, Digest), ()>,
    /// Pulls gathered and not yet written (`retention`, `pull_log`).
    pull_log: pull_log::PullLog,
    /// Tenant quotas, looked up in memory; `None`: no limits.
    quotas: Option<Arc<dyn QuotaSource>>,
    /// Immutable-tag rules, looked up in memory; `None`: every tag moves.
    immutable: Option<Arc<dyn ImmutableTagSource>>,
    config: RegistryConfig,
}

impl Registry {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaStore>,
        config: RegistryConfig,
    ) -> Self {
        Registry {
            inner: Arc::new(Inner {
                manifests: cache::ManifestCache::new(config.manifest_cache_bytes),
                small_blobs: cache::BlobCache::with_budget(config.small_blob_cache_bytes),
                links: last_known::LastKnown::new(config.last_known_entries),
                manifests_seen: last_known::LastKnown::new(config.last_known_entries),
                tags: last_known::LastKnown::new(config.last_known_entries),
                touched: last_known::LastKnown::new(config.last_known_entries.max(1024)),
                pulled: last_known::LastKnown::new(config.last_known_entries.max(1024)),
                pull_log: pull_log::PullLog::new(PULL_LOG_ENTRIES),
                blobs,
                meta,
                quotas: None,
                immutable: None,
                config,
            }),
        }
    }

    /// Enforces the quotas `source` gives per namespace. Call before the
    /// registry is cloned or shared.
    pub fn with_quotas(mut self, source: Arc<dyn QuotaSource>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_quotas is called before the registry is shared")
            .quotas = Some(source);
        self
    }

    fn blobs(&self) -> &dyn BlobStore {
        &*self.inner.blobs
    }

    fn meta(&self) -> &dyn MetaStore {
        &*self.inner.meta
    }

    /// What this node's in-memory caches hold now, each against its bound:
    /// exported as metrics, so that a node's memory can be told apart from
    /// its caches filling up (`wharf_cache_*`).
    pub fn cache_usage(&self) -> Vec<CacheUsage> {
        let i = &*self.inner;
        let bytes = |name, c: (usize, usize), budget| CacheUsage {
            name,
            entries: c.1,
            bytes: Some(c.0),
            bound: budget,
        };
        let mut out = vec![
            bytes("manifests", i.manifests.usage(), i.manifests.budget()),
            bytes("small_blobs", i.small_blobs.usage(), i.small_blobs.budget()),
        ];
        let entries = |name, (held, _queued): (usize, usize), capacity| CacheUsage {
            name,
            entries: held,
            bytes: None,
            bound: capacity,
        };
        out.push(entries("links", i.links.usage(), i.links.capacity()));
        out.push(entries("tags", i.tags.usage(), i.tags.capacity()));
        out.push(entries(
            "manifests_seen",
            i.manifests_seen.usage(),
            i.manifests_seen.capacity(),
        ));
        out.push(entries("touched", i.touched.usage(), i.touched.capacity()));
        out.push(entries("pulled", i.pulled.usage(), i.pulled.capacity()));
        out.push(entries(
            "pull_log",
            (i.pull_log.usage().0, 0),
            i.pull_log.capacity(),
        ));
        out
    }

    /// Repository names after `last`, at most `n`.
    pub async fn catalog(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, RegistryError> {
        self.meta().list_repos(last, n).await.map_err(meta_err)
    }
}

/// Storage failures as clients see them. `NotFound` is mapped by callers,
/// who know what was not found; reaching here it is a surprise.
pub(crate) fn storage_err(e: StorageError) -> RegistryError {
    match e {
        StorageError::Unavailable(reason) => {
            // The detail (addresses, bucket, key layout) is for the log, not
            // for clients.
            tracing::debug!(%reason, "blob storage unavailable");
            RegistryError::Unavailable {
                reason: "blob storage is unavailable; retry later".into(),
                retry_after: 1,
            }
        }
        StorageError::DigestMismatch { expected, actual } => {
            RegistryError::DigestInvalid(format!("content hashes to {actual}, not {expected}"))
        }
        StorageError::OffsetMismatch { size } => RegistryError::UploadOutOfOrder { size, start: 0 },
        StorageError::Body(msg) => {
            RegistryError::BlobUploadInvalid(format!("request body failed: {msg}"))
        }
        StorageError::NotFound => RegistryError::Internal("storage object missing".into()),
        StorageError::Io(e) => RegistryError::Internal(format!("storage i/o: {e}")),
    }
}

/// True for a metadata failure that means "cannot be reached now" (the
/// case where what this node last knew may answer instead).
pub(crate) fn unreachable(e: &MetaError) -> bool {
    matches!(e, MetaError::Unavailable(_))
}

/// Metadata failures as clients see them.
pub fn meta_err(e: MetaError) -> RegistryError {
    match e {
        MetaError::Unavailable(reason) => {
            tracing::debug!(%reason, "metadata unavailable");
            RegistryError::Unavailable {
                reason: "metadata store is unavailable; retry later".into(),
                retry_after: 1,
            }
        }
        MetaError::Internal(msg) => RegistryError::Internal(format!("metadata: {msg}")),
        // Garbage collection is deleting these bytes this very moment; once
        // they are gone the content can be stored again.
        MetaError::Collecting(digest) => RegistryError::Unavailable {
            reason: format!("{digest} is being garbage collected; retry in a moment"),
            retry_after: 1,
        },
        MetaError::Missing(digest) => RegistryError::ManifestBlobUnknown(digest),
    }
}
