//! Tenant quotas, enforced where content becomes part of a namespace: when
//! an upload completes (and, to stop an upload early, while each chunk
//! streams and after it landed), when a blob is mounted from another
//! repository, and when a manifest is put.
//!
//! Owns: deciding whether adding content would take a namespace past its
//! [`Quota`] (bytes of distinct blobs and manifests; repositories holding
//! anything), from the usage the metadata store reports, and how many
//! bytes an upload may still receive ([`Room`]). Bytes held by the
//! namespace's open upload sessions count as held: ten sessions cannot
//! park ten times the quota.
//!
//! Must never: count content the namespace already holds a second time (a
//! layer pushed again, or mounted into a second repository of the same
//! tenant, adds nothing), or leave a refused upload's bytes behind: the
//! caller ends the session when a check refuses. Checks are per request, so
//! uploads completing (or chunks landing) at the same moment may together
//! pass a limit by at most what they add; the next one is refused.
//!
//! An upload in progress (digest unknown) may turn out to be content the
//! tenant holds, which costs nothing; so it is let through a full quota as
//! long as it and the other open sessions together are no larger than
//! what the tenant holds (they could all be re-pushes). The open sessions
//! of a namespace so hold at most `max(quota, held)` bytes.

use wharf_core::{Digest, RegistryError, RepoName};

use crate::{meta_err, Registry};

/// What an upload, mount or manifest put adds to a namespace.
pub(crate) struct Addition<'a> {
    pub repo: &'a RepoName,
    /// What is added; `None` for an upload still in progress, whose digest
    /// is not known yet.
    pub digest: Option<&'a Digest>,
    pub bytes: u64,
    /// The bytes the addition's own upload session has recorded in
    /// metadata (counted among the namespace's open sessions, so taken
    /// out of them); 0 for a mount or a manifest.
    pub own_recorded: u64,
}

/// How many bytes an upload session may hold in all before it would pass
/// its tenant's byte quota, and why.
#[derive(Clone, Debug)]
pub(crate) struct Room {
    /// The most bytes the session may hold.
    pub bytes: u64,
    namespace: String,
    max: u64,
    held: u64,
    others: u64,
}

impl Room {
    /// The refusal of an upload that would hold more than [`Room::bytes`].
    pub fn refusal(&self) -> RegistryError {
        RegistryError::Denied(format!(
            "quota exceeded: tenant {} holds {} bytes and {} more in other open upload sessions; \
             this upload may hold at most {} bytes within its storage quota of {} bytes",
            self.namespace, self.held, self.others, self.bytes, self.max
        ))
    }
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
            if usage.holds_digest {
                return Ok(());
            }
            let others = self.open_session_bytes(ns, add.own_recorded).await?;
            let after = usage.bytes.saturating_add(others).saturating_add(add.bytes);
            // See the module docs: an upload in progress may be a re-push.
            let may_be_held =
                add.digest.is_none() && others.saturating_add(add.bytes) <= usage.bytes;
            if !may_be_held && after > max {
                return Err(RegistryError::Denied(format!(
                    "quota exceeded: tenant {ns} holds {} bytes and {others} more in open upload sessions; \
                     adding {} would pass its storage quota of {max} bytes",
                    usage.bytes, add.bytes
                )));
            }
        }
        Ok(())
    }

    /// How many bytes the upload session in `repo` (which has recorded
    /// `own_recorded` bytes) may hold in all, finishing as `digest` if
    /// known; `None` when its namespace has no byte quota.
    pub(crate) async fn upload_room(
        &self,
        repo: &RepoName,
        digest: Option<&Digest>,
        own_recorded: u64,
    ) -> Result<Option<Room>, RegistryError> {
        let Some(source) = &self.inner.quotas else {
            return Ok(None);
        };
        let ns = repo.namespace();
        let Some(max) = source.quota(ns).and_then(|q| q.max_bytes) else {
            return Ok(None);
        };
        let usage = self
            .meta()
            .namespace_usage(ns, digest)
            .await
            .map_err(meta_err)?;
        let others = self.open_session_bytes(ns, own_recorded).await?;
        let free = max.saturating_sub(usage.bytes.saturating_add(others));
        // A re-push of held content (possible while the digest is unknown,
        // known when it is held) is at most all the tenant holds.
        let repush = if usage.holds_digest {
            usage.bytes
        } else {
            usage.bytes.saturating_sub(others)
        };
        Ok(Some(Room {
            bytes: free.max(repush),
            namespace: ns.to_string(),
            max,
            held: usage.bytes,
            others,
        }))
    }

    /// Bytes held by the open upload sessions of namespace `ns`, but for
    /// the `own_recorded` of the session asking.
    async fn open_session_bytes(&self, ns: &str, own_recorded: u64) -> Result<u64, RegistryError> {
        let open = self.meta().upload_usage(ns, None).await.map_err(meta_err)?;
        Ok(open.bytes.saturating_sub(own_recorded))
    }
}
