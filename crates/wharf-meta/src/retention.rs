//! What metadata keeps for retention: when tags and manifests were pushed,
//! when manifests were last pulled, and the per-namespace read the planner
//! (`wharf_retention`) plans from.
//!
//! Owns: the meaning of those times in both backends, and the bound on
//! what recording pulls costs.
//!
//! Must never: write on every pull (a busy tag is pulled thousands of
//! times a minute), or let a retention deletion remove what changed since
//! it was planned (the conditional deletes of [`MetaStore`] re-check inside
//! their transaction).
//!
//! # The times
//!
//! - A **tag's push time** is when it was created or last moved to another
//!   manifest, written in [`MetaStore::put_manifest`]'s transaction.
//!   Pushing a tag again at the manifest it already points at leaves it:
//!   nothing changed, and `keep_last` ranks what the tags point at.
//! - A **manifest's push time** is when the repository first stored it (a
//!   record stored again keeps it). Deleted and pushed again, it starts
//!   over.
//! - A **manifest's pull time** is when it was last fetched (by tag or by
//!   digest), recorded by [`MetaStore::record_pull`] at most once per
//!   [`PULL_RECORD_SECS`]: the planner measures days, so being up to an
//!   hour late costs nothing, and the write rate is bounded by the number
//!   of manifests pulled, not by the number of pulls. The registry adds a
//!   per-node throttle in front, so most pulls do not even read.
//!
//! # Databases written before these times existed
//!
//! Their tags and manifests get the time of the upgrade as push time *and*
//! as pull time (the embedded backend fills them in when it opens the
//! file; PostgreSQL's migration 7 sets them as the columns' value for
//! existing rows). Their history is unknown; counting it from the upgrade
//! means the first retention pass afterwards deletes nothing for an age or
//! an absence of pulls it could not see. Tags pushed before the upgrade
//! tie in `keep_last`'s ranking and are ordered by name.
//!
//! [`MetaStore`]: crate::MetaStore
//! [`MetaStore::put_manifest`]: crate::MetaStore::put_manifest
//! [`MetaStore::record_pull`]: crate::MetaStore::record_pull

use std::collections::{BTreeMap, BTreeSet};

use wharf_core::Digest;

use crate::{ManifestRecord, ManifestTimes, MetaError, RepositorySnapshot, TagTimes};

/// What a backend read of one repository for the planner: its tags, and
/// its manifests with their push time and last pull (`None`: never).
pub(crate) type RepoRead = (Vec<TagTimes>, Vec<(ManifestRecord, u64, Option<u64>)>);

/// The planner's snapshots of the repositories `repos` (by name) holds,
/// in name order. A tag always points at a manifest, so a repository
/// without manifests has nothing to plan and is left out.
pub(crate) fn snapshots(
    repos: BTreeMap<String, RepoRead>,
) -> Result<Vec<RepositorySnapshot>, MetaError> {
    let mut out = Vec::new();
    for (name, (tags, manifests)) in repos {
        if manifests.is_empty() {
            continue;
        }
        let digests: BTreeSet<&Digest> = manifests.iter().map(|(m, _, _)| &m.digest).collect();
        let manifests = manifests
            .iter()
            .map(|(m, pushed, pulled)| ManifestTimes {
                digest: m.digest.clone(),
                pushed_unix: *pushed,
                last_pulled_unix: *pulled,
                subject: m.subject.clone(),
                children: children(m, &digests),
            })
            .collect();
        out.push(RepositorySnapshot {
            name: name.parse().map_err(|e| {
                MetaError::Internal(format!("stored repository name is corrupt: {e}"))
            })?,
            tags,
            manifests,
        });
    }
    Ok(out)
}

/// The shortest interval between two recorded pulls of one manifest, in
/// seconds.
pub const PULL_RECORD_SECS: u64 = 3600;

/// Whether a pull at `now` is recorded over the one recorded at `last`
/// (`None`: never pulled).
pub(crate) fn pull_due(last: Option<u64>, now: u64) -> bool {
    last.is_none_or(|t| t.saturating_add(PULL_RECORD_SECS) <= now)
}

/// The children of `record` in its repository: the references that are
/// manifests of it (`manifests`), but itself.
pub(crate) fn children(record: &ManifestRecord, manifests: &BTreeSet<&Digest>) -> Vec<Digest> {
    record
        .references
        .iter()
        .filter(|d| **d != record.digest && manifests.contains(d))
        .cloned()
        .collect()
}
