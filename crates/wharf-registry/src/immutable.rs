//! Immutable tags: a manifest put that would move a protected tag is
//! refused, and so is a delete that would remove one (by tag, or by the
//! digest a protected tag points at).
//!
//! Owns: when such a request is refused, and the [`ImmutableRefusal`] it is
//! refused with (`403 DENIED` naming the rule, through the one table in
//! `wharf-core`). Which rule protects which tag is the
//! [`ImmutableTagSource`]'s business (the tenant directory, answering from
//! memory); changing the rules is the operator's, through the admin API.
//!
//! Must never: refuse what the rules allow (the first push of a tag, a
//! re-push of the manifest a protected tag already points at, anything no
//! rule covers); call metadata when no rule covers the repository; or
//! decide from the node's tag cache, which may be a TTL behind a move made
//! through another node: the tag is read from metadata.
//!
//! Not atomic: the check reads the tag, and the write that follows is a
//! separate metadata call. Two first pushes of one protected tag with
//! different manifests, at the same moment, can both pass the check; the
//! later write then moves the tag once. Likewise a protected tag pushed
//! while a delete of its manifest is between check and write goes with
//! the manifest. Closing that needs the check inside the metadata
//! transaction (a conditional tag write), which `MetaStore` does not offer
//! yet. Rules changed on one node reach the others with their directory
//! refresh (a second by default).
//!
//! Cost: a put or delete by tag in a covered repository reads the tag once.
//! A delete by digest in a covered repository lists the repository's tags
//! and reads each protected one, as metadata has no "tags of a manifest"
//! query; deletes by digest are rare, and repositories no rule covers pay
//! nothing.

use std::sync::Arc;

use wharf_core::{
    Digest, ImmutableAction, ImmutableRefusal, ImmutableTagRule, ImmutableTagSource, Reference,
    RegistryError, RepoName, Tag,
};

use crate::{meta_err, Registry};

/// Tags listed per metadata call while looking for protected tags that
/// point at a manifest deleted by digest.
const TAG_PAGE: usize = 1000;

impl Registry {
    /// Enforces the immutable-tag rules `source` gives per repository. Call
    /// before the registry is cloned or shared.
    pub fn with_immutable_tags(mut self, source: Arc<dyn ImmutableTagSource>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_immutable_tags is called before the registry is shared")
            .immutable = Some(source);
        self
    }

    /// The rule that makes `tag` of `repo` immutable, if any: for anything
    /// else that removes tags (retention) to ask before it does.
    pub fn immutable_rule(&self, repo: &RepoName, tag: &Tag) -> Option<ImmutableTagRule> {
        self.inner.immutable.as_ref()?.protecting(repo, tag)
    }

    /// `DENIED` when putting manifest `digest` under `reference` would move
    /// a protected tag.
    pub(crate) async fn check_tag_put(
        &self,
        repo: &RepoName,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let Reference::Tag(tag) = reference else {
            return Ok(());
        };
        let Some(rule) = self.immutable_rule(repo, tag) else {
            return Ok(());
        };
        match self.meta().resolve_tag(repo, tag).await.map_err(meta_err)? {
            Some(current) if current != *digest => {
                Err(refusal(repo, tag, current, ImmutableAction::Move, rule))
            }
            // First push, or the same manifest again.
            _ => Ok(()),
        }
    }

    /// `DENIED` when deleting `reference` would remove a protected tag: the
    /// tag itself, or the manifest it points at.
    pub(crate) async fn check_delete(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        match reference {
            Reference::Tag(tag) => {
                let Some(rule) = self.immutable_rule(repo, tag) else {
                    return Ok(());
                };
                match self.meta().resolve_tag(repo, tag).await.map_err(meta_err)? {
                    Some(current) => Err(refusal(
                        repo,
                        tag,
                        current,
                        ImmutableAction::DeleteTag,
                        rule,
                    )),
                    // Absent: the delete answers MANIFEST_UNKNOWN itself.
                    None => Ok(()),
                }
            }
            Reference::Digest(digest) => match self.protected_tag_of(repo, digest).await? {
                Some((tag, rule)) => Err(refusal(
                    repo,
                    &tag,
                    digest.clone(),
                    ImmutableAction::DeleteManifest,
                    rule,
                )),
                None => Ok(()),
            },
        }
    }

    /// A protected tag of `repo` that points at `digest`, with its rule.
    async fn protected_tag_of(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(Tag, ImmutableTagRule)>, RegistryError> {
        let Some(source) = &self.inner.immutable else {
            return Ok(None);
        };
        if !source.guards(repo) {
            return Ok(None);
        }
        let mut last: Option<String> = None;
        loop {
            let page = self
                .meta()
                .list_tags(repo, last.as_deref(), TAG_PAGE)
                .await
                .map_err(meta_err)?;
            for name in &page {
                // Stored tags were parsed on the way in.
                let Ok(tag) = name.parse::<Tag>() else {
                    continue;
                };
                let Some(rule) = source.protecting(repo, &tag) else {
                    continue;
                };
                let points = self
                    .meta()
                    .resolve_tag(repo, &tag)
                    .await
                    .map_err(meta_err)?;
                if points.as_ref() == Some(digest) {
                    return Ok(Some((tag, rule)));
                }
            }
            if page.len() < TAG_PAGE {
                return Ok(None);
            }
            last = page.last().cloned();
        }
    }
}

fn refusal(
    repo: &RepoName,
    tag: &Tag,
    digest: Digest,
    action: ImmutableAction,
    rule: ImmutableTagRule,
) -> RegistryError {
    RegistryError::TagImmutable(Box::new(ImmutableRefusal {
        repository: repo.clone(),
        tag: tag.clone(),
        digest,
        action,
        rule,
    }))
}
