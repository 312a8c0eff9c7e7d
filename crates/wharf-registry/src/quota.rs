//! Tenant quotas, enforced where content becomes part of a namespace: when
//! an upload completes (and, to stop an upload early, after each chunk),
//! when a blob is mounted from another repository, and when a manifest is
//! put.
//!
//! Owns: deciding whether adding content would take a namespace past its
//! [`Quota`] (bytes of distinct blobs and manifests; repositories holding
//! anything), from the usage the metadata store reports.
//!
//! Must never: count content the namespace already holds a second time (a
//! layer pushed again, or mounted into a second repository of the same
//! tenant, adds nothing), or leave a refused upload's bytes behind: the
//! caller ends the session when a check refuses. Checks are per request, so
//! uploads completing at the same moment may together pass a limit by at
//! most what they add; the next one is refused.

use wharf_core::{Digest, RegistryError, RepoName};

use crate::{meta_err, Registry};

/// What an upload, mount or manifest put adds to a namespace.
pub(crate) struct Addition<'a> {
    pub repo: &'a RepoName,
    /// What is added; `None` for an upload still in progress, whose digest
    /// is not known yet.
    pub digest: Option<&'a Digest>,
    pub bytes: u64,
}

impl Registry {
    /// `DENIED` when `add` would take its namespace past the quota.
    pub(crate) async fn check_quota(&self, add: Addition<'_>) -> Result<(), RegistryError> {
        let Some(source) = &self.inner.quotas else {
            return Ok(());
        };
        let ns = add.repo.namespace();
        let Some(quota) = source.quota(ns).filter(|q| q.is_limited()) else {
            return Ok(());
        };
        let usage = self
            .meta()
            .namespace_usage(ns, add.digest)
            .await
            .map_err(meta_err)?;
        if let Some(max) = quota.max_repositories {
            if usage.repositories >= max
                && !self.meta().repo_exists(add.repo).await.map_err(meta_err)?
            {
                return Err(RegistryError::Denied(format!(
                    "quota exceeded: tenant {ns} may hold at most {max} repositories and holds {}",
                    usage.repositories
                )));
            }
        }
        if let Some(max) = quota.max_bytes {
            let after = usage.bytes.saturating_add(add.bytes);
            // An upload in progress may turn out to be content the tenant
            // holds, which costs nothing; it cannot be if it is larger
            // than all the tenant holds, and only then is it stopped early.
            let may_be_held = add.digest.is_none() && add.bytes <= usage.bytes;
            if !usage.holds_digest && !may_be_held && after > max {
                return Err(RegistryError::Denied(format!(
                    "quota exceeded: tenant {ns} holds {} bytes; adding {} would pass its storage quota of {max} bytes",
                    usage.bytes, add.bytes
                )));
            }
        }
        Ok(())
    }
}
