//! Tenant limits as the registry sees them: what one namespace may hold.
//!
//! Owns: the [`Quota`] value and the [`QuotaSource`] lookup the registry
//! consults when an upload completes, a blob is mounted or a manifest is
//! put. Where quotas come from (the tenant directory) is not its business.
//!
//! Must never: do I/O. A lookup is answered from memory, on the request
//! path, so it must be cheap and must not block.

/// What one namespace (a tenant) may hold; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes of distinct blobs and manifests across its repositories.
    pub max_bytes: Option<u64>,
    /// Repositories holding anything.
    pub max_repositories: Option<u64>,
}

impl Quota {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_repositories.is_some()
    }
}

/// Where the registry looks quotas up, by namespace (the first path
/// component of a repository name).
pub trait QuotaSource: Send + Sync + 'static {
    /// The quota of `namespace`; `None` when it has none.
    fn quota(&self, namespace: &str) -> Option<Quota>;
}
