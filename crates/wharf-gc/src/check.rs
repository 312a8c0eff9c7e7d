//! `wharf check --storage`: does the blob store agree with metadata?
//!
//! Must never: change anything, or report a disagreement that a write in
//! flight explains: every finding is looked at again after the first
//! sweep, and only what persists is reported.

use std::collections::BTreeSet;

use serde::Serialize;
use wharf_core::Digest;
use wharf_meta::gc::{Known, ReviewPolicy};
use wharf_meta::MetaStore;
use wharf_storage::BlobStore;

use crate::{GcConfig, GcError};

/// Most digests listed per finding (counts are always whole).
const LISTED: usize = 100;

/// What the check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Nothing missing, nothing unreferenced past its delay, nothing
    /// unreviewed.
    pub clean: bool,
    /// Digests in the blob store.
    pub stored: u64,
    /// Digests metadata holds (links, manifests, references).
    pub held: u64,
    /// Held by metadata but absent from storage: a pull would fail.
    pub missing_count: u64,
    pub missing: Vec<Digest>,
    /// Stored, held by nothing, and their review overdue (more than two
    /// pass intervals past due): the collector is behind or failing.
    pub overdue_count: u64,
    pub overdue: Vec<Digest>,
    /// Stored, held by nothing, and no review queued: bytes metadata does
    /// not know (crash leftovers) that no orphan scan has queued yet.
    pub unreviewed_count: u64,
    pub unreviewed: Vec<Digest>,
    /// Stored, held by nothing, review queued and not yet overdue.
    pub awaiting_review: u64,
}

/// What one look at both sides says.
struct Findings {
    missing: BTreeSet<Digest>,
    overdue: BTreeSet<Digest>,
    unreviewed: BTreeSet<Digest>,
    awaiting: u64,
    stored: u64,
    held: u64,
}

fn compare(stored: &BTreeSet<Digest>, known: &Known, now: u64, slack: u64) -> Findings {
    let missing = known.held.difference(stored).cloned().collect();
    let mut overdue = BTreeSet::new();
    let mut unreviewed = BTreeSet::new();
    let mut awaiting = 0;
    for d in stored {
        if known.held.contains(d) || known.pending.contains(d) {
            continue;
        }
        match known.queued.get(d) {
            Some(due) if due.saturating_add(slack) < now => {
                overdue.insert(d.clone());
            }
            Some(_) => awaiting += 1,
            None => {
                unreviewed.insert(d.clone());
            }
        }
    }
    Findings {
        missing,
        overdue,
        unreviewed,
        awaiting,
        stored: stored.len() as u64,
        held: known.held.len() as u64,
    }
}

async fn look(
    meta: &dyn MetaStore,
    blobs: &dyn BlobStore,
    policy: &ReviewPolicy,
    slack: u64,
) -> Result<Findings, GcError> {
    let stored: BTreeSet<Digest> = blobs.list().await?.into_iter().collect();
    let known = meta.gc_known(policy).await?;
    Ok(compare(&stored, &known, policy.now_unix, slack))
}

pub(crate) async fn run(
    meta: &dyn MetaStore,
    blobs: &dyn BlobStore,
    policy: &ReviewPolicy,
    config: &GcConfig,
) -> Result<CheckReport, GcError> {
    let slack = 2 * config.interval.as_secs().max(1);
    let first = look(meta, blobs, policy, slack).await?;
    let suspicious =
        !(first.missing.is_empty() && first.overdue.is_empty() && first.unreviewed.is_empty());
    // A push or a deletion in flight between the two listings can make a
    // digest look wrong once; what is still wrong a moment later is real.
    let last = if suspicious {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let second = look(meta, blobs, policy, slack).await?;
        Findings {
            missing: &first.missing & &second.missing,
            overdue: &first.overdue & &second.overdue,
            unreviewed: &first.unreviewed & &second.unreviewed,
            ..second
        }
    } else {
        first
    };
    let list = |s: &BTreeSet<Digest>| s.iter().take(LISTED).cloned().collect::<Vec<_>>();
    Ok(CheckReport {
        clean: last.missing.is_empty() && last.overdue.is_empty() && last.unreviewed.is_empty(),
        stored: last.stored,
        held: last.held,
        missing_count: last.missing.len() as u64,
        missing: list(&last.missing),
        overdue_count: last.overdue.len() as u64,
        overdue: list(&last.overdue),
        unreviewed_count: last.unreviewed.len() as u64,
        unreviewed: list(&last.unreviewed),
        awaiting_review: last.awaiting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn each_disagreement_is_named_once() {
        let stored: BTreeSet<Digest> = [
            d("held"),
            d("overdue"),
            d("young"),
            d("stray"),
            d("held-pending"),
        ]
        .into_iter()
        .collect();
        let mut known = Known::default();
        known.held.insert(d("held"));
        known.held.insert(d("gone"));
        known.pending.insert(d("held-pending"));
        known.queued.insert(d("overdue"), 100);
        known.queued.insert(d("young"), 995);
        let f = compare(&stored, &known, 1000, 10);
        assert_eq!(f.missing, [d("gone")].into_iter().collect());
        assert_eq!(f.overdue, [d("overdue")].into_iter().collect());
        assert_eq!(f.unreviewed, [d("stray")].into_iter().collect());
        assert_eq!(f.awaiting, 1);
        assert_eq!((f.stored, f.held), (5, 2));
    }
}
