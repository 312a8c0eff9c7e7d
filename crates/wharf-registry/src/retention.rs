//! Retention applied: a tenant's policy planned against what metadata
//! holds now, then carried out deletion by deletion; and the pull times
//! the rules about pulls read.
//!
//! Owns: [`Registry::plan_retention`], [`Registry::apply_plan`],
//! [`Registry::apply_retention`] (the two together) and their
//! [`RetentionReport`]; recording pulls ([`Registry::note_pull`]).
//! What a rule means and what a policy deletes is `wharf_retention`'s
//! business; which tenant has which policy is the caller's (the admin API
//! reads it from the tenant directory).
//!
//! Must never: delete what changed since the plan was made, delete an
//! immutable tag, or delete around the registry's own paths. Each deletion
//! is re-checked right before it is made, in the metadata transaction that
//! makes it:
//!
//! - a tag is removed only if it still points at the manifest the plan saw
//!   ([`MetaStore::delete_tag_at`]), and only if no immutable-tag rule
//!   protects it at that moment (rules may have changed since the plan);
//! - a manifest is deleted only if nothing in its repository needs it any
//!   more: no tag points at it, no index lists it, no referrer names it as
//!   subject ([`MetaStore::delete_untagged_manifest`]). The plan deletes
//!   each index before its children and each referrer before its subject,
//!   so what it condemns together goes in order.
//!
//! A deletion whose check fails is skipped and reported with the reason,
//! never retried within the pass: the next pass plans from the new state.
//! Deleted manifests are queued for garbage collection by metadata, as
//! with any delete, and the node's caches forget them as the `DELETE`
//! route's path does. Every deletion made is logged at `info` with the
//! plan's line, which names the rule that caused it.
//!
//! # Pulls
//!
//! A `GET` or `HEAD` of a manifest records a pull for it: this node asks
//! metadata at most once an hour per (repository, manifest), in the
//! background, and metadata writes at most once an hour per manifest
//! whatever the number of nodes ([`wharf_meta::retention`]). The pulls of
//! half a second are gathered and written together (`pull_log`), so a node
//! pulled across many manifests makes a few writes a second, not one per
//! manifest. A request never waits for it, and a failure to record is only
//! logged (the manifests' next pulls try again).
//!
//! # Time
//!
//! `now_unix` is a parameter: the caller passes the clock, or a later
//! moment to ask "what would this policy delete then?" (the admin API's
//! `as_of_unix`). Planning as of a later moment ages what is stored (push
//! and pull times stay as recorded); it is honest about the future only if
//! nothing is pushed or pulled meanwhile.
//!
//! [`MetaStore::delete_tag_at`]: wharf_meta::MetaStore::delete_tag_at
//! [`MetaStore::delete_untagged_manifest`]: wharf_meta::MetaStore::delete_untagged_manifest

use std::time::Duration;

use serde::Serialize;
use wharf_core::{now_unix, Digest, RegistryError, RepoName};
use wharf_meta::retention::PULL_RECORD_SECS;
use wharf_retention::{CompiledPolicy, Deletion, Plan, Snapshot, Target};

use crate::pull_log::{self, Gathered};
use crate::{meta_err, Registry};

/// What one retention pass over one tenant did (or, dry, would do).
#[derive(Clone, Debug, Serialize)]
pub struct RetentionReport {
    /// The tenant (namespace).
    pub tenant: String,
    /// The moment the plan measured ages from.
    pub as_of_unix: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The plan's deletions, in order: in a dry run, what a real run
    /// against the same state deletes.
    pub planned: Vec<Deletion>,
    /// The deletions made (none in a dry run).
    pub deleted: Vec<Deletion>,
    /// The deletions skipped, each with why.
    pub skipped: Vec<Skipped>,
}

/// A planned deletion not made.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The deletion.
    #[serde(flatten)]
    pub deletion: Deletion,
    /// Why it was not made.
    pub skipped_because: String,
}

impl Registry {
    /// Records a pull of manifest `digest` of `repo` for retention: at most
    /// once an hour per manifest from this node, gathered with the other
    /// pulls of the moment and written in the background (`pull_log`).
    pub(crate) fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        let key = (repo.clone(), digest.clone());
        let every = Duration::from_secs(PULL_RECORD_SECS);
        if self.inner.pulled.get_fresh(&key, every).is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match self.inner.pull_log.gather(repo, digest, now_unix()) {
            // Not marked: the next pull of it tries again.
            Gathered::Full => return,
            Gathered::Queued => {}
            Gathered::StartWriting => {
                let this = self.clone();
                runtime.spawn(async move { this.write_pulls().await });
            }
        }
        self.inner.pulled.put(key, ());
    }

    /// The writing task of `pull_log`: waits for pulls to gather, writes
    /// them in batches, and ends when a wait gathered none.
    async fn write_pulls(&self) {
        loop {
            tokio::time::sleep(pull_log::FLUSH_AFTER).await;
            let Some(pulls) = self.inner.pull_log.take() else {
                return;
            };
            for batch in pulls.chunks(pull_log::BATCH) {
                if let Err(e) = self.meta().record_pulls(batch).await {
                    tracing::debug!(error = %e, pulls = batch.len(), "recording pulls");
                    // Not recorded: their next pulls try again.
                    for p in batch {
                        self.inner
                            .pulled
                            .remove(&(p.repo.clone(), p.digest.clone()));
                    }
                }
            }
        }
    }

    /// What `policy` deletes from namespace `tenant` as it stands, ages
    /// measured at `now_unix`; immutable tags as the rules stand now.
    pub async fn plan_retention(
        &self,
        tenant: &str,
        policy: &CompiledPolicy,
        now_unix: u64,
    ) -> Result<Plan, RegistryError> {
        let repositories = self
            .meta()
            .retention_snapshot(tenant)
            .await
            .map_err(meta_err)?;
        let snapshot = Snapshot {
            now_unix,
            repositories,
        };
        Ok(policy.plan(&snapshot, |repo, tag| {
            self.immutable_rule(repo, tag).is_some()
        }))
    }

    /// Plans `policy` for namespace `tenant` as of `now_unix` and, unless
    /// `dry_run`, makes each deletion, re-checked right before (see the
    /// module docs). Fails only if the plan cannot be made; a deletion that
    /// fails is reported as skipped and the pass goes on.
    pub async fn apply_retention(
        &self,
        tenant: &str,
        policy: &CompiledPolicy,
        now_unix: u64,
        dry_run: bool,
    ) -> Result<RetentionReport, RegistryError> {
        let plan = self.plan_retention(tenant, policy, now_unix).await?;
        if dry_run {
            return Ok(RetentionReport {
                tenant: tenant.to_string(),
                as_of_unix: now_unix,
                dry_run,
                planned: plan.deletions,
                deleted: Vec::new(),
                skipped: Vec::new(),
            });
        }
        Ok(self.apply_plan(tenant, plan, now_unix).await)
    }

    /// Makes the deletions of `plan` (made for `tenant` as of `as_of_unix`)
    /// in order, each re-checked against the state it finds right then;
    /// what was deleted and what skipped, and why. The plan may be stale:
    /// that is what the re-checks are for.
    pub async fn apply_plan(&self, tenant: &str, plan: Plan, as_of_unix: u64) -> RetentionReport {
        let mut report = RetentionReport {
            tenant: tenant.to_string(),
            as_of_unix,
            dry_run: false,
            planned: plan.deletions.clone(),
            deleted: Vec::new(),
            skipped: Vec::new(),
        };
        for deletion in plan.deletions {
            match self.apply_deletion(&deletion).await {
                Ok(()) => {
                    tracing::info!(%tenant, "retention: {deletion}");
                    report.deleted.push(deletion);
                }
                Err(why) => {
                    tracing::info!(%tenant, skipped_because = %why, "retention skipped: {deletion}");
                    report.skipped.push(Skipped {
                        deletion,
                        skipped_because: why,
                    });
                }
            }
        }
        report
    }

    /// Makes one planned deletion if the live state still allows it; else
    /// why not.
    async fn apply_deletion(&self, deletion: &Deletion) -> Result<(), String> {
        match &deletion.target {
            Target::Tag {
                repository,
                tag,
                digest,
            } => {
                if let Some(rule) = self.immutable_rule(repository, tag) {
                    return Err(format!("the tag is immutable now ({rule})"));
                }
                let removed = self
                    .meta()
                    .delete_tag_at(repository, tag, digest)
                    .await
                    .map_err(|e| format!("metadata: {e}"))?;
                self.inner.tags.remove(&(repository.clone(), tag.clone()));
                if removed {
                    Ok(())
                } else {
                    Err(format!(
                        "the tag no longer points at {digest} (moved or deleted since the plan)"
                    ))
                }
            }
            Target::Manifest { repository, digest } => {
                let removed = self
                    .meta()
                    .delete_untagged_manifest(repository, digest)
                    .await
                    .map_err(|e| format!("metadata: {e}"))?;
                if !removed {
                    return Err(
                        "the manifest is gone, or tagged, listed by an index or the subject \
                         of a referrer since the plan"
                            .into(),
                    );
                }
                self.inner.manifests.remove(repository, digest);
                self.inner
                    .manifests_seen
                    .remove(&(repository.clone(), digest.clone()));
                self.inner
                    .pulled
                    .remove(&(repository.clone(), digest.clone()));
                Ok(())
            }
        }
    }
}
