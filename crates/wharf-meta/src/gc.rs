//! Garbage collection as metadata sees it: the review queue, tombstones and
//! holds, and the argument that no acknowledged content is ever deleted.
//!
//! Owns: the types the collector and the stores exchange ([`Review`],
//! [`Verdict`], [`ReviewPolicy`], [`GcStatus`]) and, in these docs, the
//! safety argument every backend implements. The collector itself (which
//! deletes bytes) lives in `wharf-gc`; the backends implement the queue in
//! their own transactions (`embedded.rs`, `postgres.rs`).
//!
//! Must never: delete bytes (metadata holds none), or let a review decide on
//! a view that a concurrent writer can invalidate before the decision is
//! committed.
//!
//! # What is collected
//!
//! * A **link** (repository, digest) that no manifest of that repository
//!   references: a layer pushed and never used, or one whose last manifest
//!   was deleted. Reviewed once it has gone untouched for the review delay.
//! * **Content** (a digest's bytes in the blob store, blob or manifest) that
//!   nothing holds: no link in any repository, no manifest record in any
//!   repository, no manifest referencing it, no live hold.
//! * **Orphans**: bytes in storage that metadata does not know at all (the
//!   leftovers of a crash between storing bytes and recording them), queued
//!   by the collector's storage scan and reviewed as content once they have
//!   waited the orphan age.
//!
//! # What queues or postpones a review
//!
//! Every event below writes the queue **in the transaction of the event
//! itself**, so a queue entry can never be lost between an event and its
//! review. An entry is *due* once `touched_unix + delay <= now`.
//!
//! | event                                   | queue write                                  |
//! |-----------------------------------------|----------------------------------------------|
//! | blob linked (upload finished, re-upload, mount) | link review (repo, digest) touched now |
//! | blob `HEAD`/`GET` through a repository  | link review touched now, if queued ([`MetaStore::gc_touch`](crate::MetaStore::gc_touch), at most once a minute per node) |
//! | blob unlinked by a client (`DELETE`)    | content review (digest) touched now          |
//! | manifest deleted                        | link review of each reference; content review of the manifest |
//! | link review removes a link              | content review (digest), due at once         |
//! | namespace or repository purged          | content review of every digest it held       |
//! | a holder's holds all ended (`gc_unhold_all`) | content review of each digest it held   |
//! | storage scan finds unknown bytes        | orphan review (digest) touched now           |
//!
//! A `HEAD` postpones a review (gap (a) of the issue), but it is not what
//! makes a racing push safe: with a zero delay a review can run between a
//! client's `HEAD` and its manifest `PUT`. What makes it safe is below.
//!
//! # The protection, step by step
//!
//! 1. **Deciding.** A content review takes the digest's exclusive lock
//!    (PostgreSQL: a transaction-scoped advisory lock keyed by the digest;
//!    embedded: the single writer serialises every write transaction), then
//!    checks every holder: links, manifest records, references from
//!    manifests, live holds. Anything found: the entry is dropped (a later
//!    event queues it again). Nothing found: it writes a **tombstone**
//!    (digest, collector id, lease end) and commits.
//! 2. **While the tombstone stands**, every write that would make the digest
//!    held again takes the same digest's shared lock and, under it, refuses:
//!    linking it ([`MetaStore::link_blob`](crate::MetaStore::link_blob),
//!    [`MetaStore::mount_blob`](crate::MetaStore::mount_blob)), storing a
//!    manifest with that digest, and a hold
//!    ([`MetaStore::gc_hold`](crate::MetaStore::gc_hold)) all fail with
//!    [`MetaError::Collecting`](crate::MetaError::Collecting), which clients
//!    see as `503` with `Retry-After`.
//! 3. **Deleting.** Only after the tombstone is committed does the collector
//!    delete the bytes, and only while its lease has time left; then it
//!    removes its tombstone ([`MetaStore::gc_release`](crate::MetaStore::gc_release)).
//!    A collector that dies leaves its tombstone; once the lease has passed,
//!    the next review claims it again and finishes the deletion (the holders
//!    cannot have changed: the tombstone refused them all).
//! 4. **Bytes written before their record.** A blob upload and a manifest
//!    put store their bytes first and record them after. Between the two the
//!    bytes are held by nothing, so before storing them the registry takes a
//!    **hold** on the digest (refused under a tombstone, step 2). A content
//!    review that finds a live hold keeps the digest. The writer ends its
//!    hold once the record has committed
//!    ([`MetaStore::gc_unhold`](crate::MetaStore::gc_unhold)); one it never
//!    ends expires by itself ([`HOLD_SECS`]). A review kept by a hold is
//!    queued again a second later (so a pass with a zero delay does not
//!    decide it over and over). **Named holds**: a tenant import copies
//!    blobs long before the manifests that reference them arrive, so it
//!    holds each under a holder named by the import (longer: a day) and
//!    ends them all at once ([`MetaStore::gc_unhold_all`](crate::MetaStore::gc_unhold_all)),
//!    which queues a content review of each digest in the same transaction:
//!    what the import linked is kept, what it never used is collected
//!    without waiting for a storage scan.
//! 5. **Manifests commit only against what is there.** `put_manifest` checks,
//!    in its own transaction and under the shared locks of its digest and of
//!    every reference, that each reference is held by the repository (a
//!    blob link, or a manifest record for an index's children); PostgreSQL
//!    also locks those rows `FOR SHARE`, so a link review cannot remove them
//!    until the manifest has committed (after which the review sees the
//!    reference and keeps the link). A reference that is missing refuses the
//!    manifest with [`MetaError::Missing`](crate::MetaError::Missing), which
//!    clients see as `MANIFEST_BLOB_UNKNOWN` and retry by pushing the blob.
//!
//! So a push that races the collector sees, at worst, a `503` to retry or a
//! retriable `MANIFEST_BLOB_UNKNOWN`. A manifest never commits pointing at
//! bytes that are going away (step 5 with steps 1–2), and an upload's `201`
//! always follows a committed link whose bytes were held from before they
//! were written until the link held them (step 4).
//!
//! # Limits
//!
//! * Leases are not fencing tokens: a collector stalled (say, `SIGSTOP`) for
//!   longer than its lease between its lease check and the storage delete
//!   could delete bytes that another collector's later pass had given back.
//!   The lease ([`ReviewPolicy::lease_secs`]) is minutes and the check sits
//!   right before the delete; object stores with conditional deletes would
//!   close it.
//! * A hold lasts [`HOLD_SECS`]: an upload whose final commit in storage
//!   takes longer than that loses its protection.

use serde::{Deserialize, Serialize};
use wharf_core::{Digest, RepoName};

/// How long a hold protects a digest whose bytes are being written: longer
/// than any commit of an upload takes.
pub const HOLD_SECS: u64 = 3600;

/// What a queued review is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewKind {
    /// A blob link (repository, digest).
    Link,
    /// A digest's bytes.
    Content,
    /// A digest's bytes that metadata did not know when storage was scanned;
    /// reviewed like content, after the orphan age.
    Orphan,
}

impl ReviewKind {
    /// The one-letter code both backends store.
    pub fn code(self) -> &'static str {
        match self {
            ReviewKind::Link => "l",
            ReviewKind::Content => "c",
            ReviewKind::Orphan => "o",
        }
    }

    /// The kind stored as `code`.
    pub fn from_code(code: &str) -> Option<ReviewKind> {
        match code {
            "l" => Some(ReviewKind::Link),
            "c" => Some(ReviewKind::Content),
            "o" => Some(ReviewKind::Orphan),
            _ => None,
        }
    }
}

/// One queued review.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub kind: ReviewKind,
    pub digest: Digest,
    /// The repository of a link review; `None` for content and orphans.
    pub repo: Option<RepoName>,
    /// When the last event touched it, seconds since the Unix epoch.
    pub touched_unix: u64,
}

/// How one pass of reviews runs.
#[derive(Clone, Debug)]
pub struct ReviewPolicy {
    /// The clock of the pass, seconds since the Unix epoch.
    pub now_unix: u64,
    /// Link and content reviews are due this long after their last touch.
    pub review_delay_secs: u64,
    /// Orphan reviews are due this long after the scan found them.
    pub orphan_age_secs: u64,
    /// How long a tombstone this pass writes is its collector's alone.
    pub lease_secs: u64,
    /// The collector's id, written into its tombstones.
    pub holder: String,
    /// Most reviews decided in this call.
    pub limit: usize,
    /// Decide every review but commit nothing: what a real pass would do.
    pub dry_run: bool,
}

/// What a review decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The link was removed; its content is queued for review, due at once.
    Unlinked {
        repo: RepoName,
        digest: Digest,
        size: u64,
    },
    /// Something still holds it; the entry is dropped (or postponed, for a
    /// hold). `why` says what.
    Kept {
        kind: ReviewKind,
        digest: Digest,
        repo: Option<RepoName>,
        why: String,
    },
    /// Nothing holds the content: a tombstone is committed for `holder`
    /// until `lease_until_unix`. The collector deletes the bytes, then
    /// releases the tombstone. `reclaimed` is true when this is a dead
    /// collector's tombstone claimed again.
    Doomed {
        digest: Digest,
        lease_until_unix: u64,
        reclaimed: bool,
    },
}

/// The queue as the operator sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    /// Reviews queued, due or not.
    pub queued: u64,
    /// Of those, due now.
    pub due: u64,
    /// When the oldest due review came due (seconds since the epoch);
    /// `None` when none is due.
    pub oldest_due_unix: Option<u64>,
    /// Tombstones standing (deletions in progress, or of dead collectors).
    pub tombstones: u64,
    /// Holds not yet expired.
    pub holds: u64,
}

/// When `review` is due under `policy`.
pub fn due_unix(kind: ReviewKind, touched_unix: u64, policy: &ReviewPolicy) -> u64 {
    let delay = match kind {
        ReviewKind::Orphan => policy.orphan_age_secs,
        ReviewKind::Link | ReviewKind::Content => policy.review_delay_secs,
    };
    touched_unix.saturating_add(delay)
}

/// What metadata knows of the blob store's content ([`MetaStore::gc_known`](crate::MetaStore::gc_known)).
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// Digests a link, a manifest record or a manifest's reference holds:
    /// their bytes must be in storage.
    pub held: std::collections::BTreeSet<Digest>,
    /// Digests under a hold (bytes being written) or a tombstone (bytes
    /// being deleted): present or not, nothing is wrong.
    pub pending: std::collections::BTreeSet<Digest>,
    /// Digests queued for a content or orphan review, with when it is due.
    pub queued: std::collections::BTreeMap<Digest, u64>,
}
