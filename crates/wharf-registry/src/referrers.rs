//! The referrers API: manifests in a repository whose `subject` is a given
//! manifest, as image-index descriptors, optionally filtered by artifact type.

use wharf_core::manifest::Descriptor;
use wharf_core::{Digest, RegistryError, RepoName};

use crate::{meta_err, Registry};

impl Registry {
    /// Referrers of `subject` in `repo`, keeping only those whose artifact
    /// type is `artifact_type` when one is given. An unknown subject simply
    /// has no referrers: the spec forbids a 404 here.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let records = self
            .meta()
            .referrers(repo, subject)
            .await
            .map_err(meta_err)?;
        Ok(records
            .into_iter()
            .filter(|r| artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t)))
            .map(|r| Descriptor {
                media_type: r.media_type,
                digest: r.digest,
                size: r.size,
                artifact_type: r.artifact_type,
                annotations: r.annotations,
                urls: None,
                platform: None,
            })
            .collect())
    }
}
