//! The embedded backend's side of garbage collection: the digest indexes,
//! the review queue, tombstones and holds, in the caller's write
//! transaction (see [`crate::gc`] for what they protect).
//!
//! | table                 | key                                   | value                      |
//! |-----------------------|---------------------------------------|----------------------------|
//! | `blobs_by_digest`     | `digest\0repo`                        | `()`                       |
//! | `manifests_by_digest` | `digest\0repo`                        | `()`                       |
//! | `refs`                | `digest repo\0manifest`, digests binary (see [`refs`]) | `()`: `manifest` in `repo` references `digest` |
//! | `gc_queue`            | `kind\0digest\0repo` (repo empty for content) | touched (`u64`)    |
//! | `gc_due`              | `touched\0kind\0digest\0repo` (touched zero-padded) | `()`: the queue by age |
//! | `gc_tombstones`       | `digest`                              | `lease_until\0holder`      |
//! | `gc_holds`            | `digest\0holder`                      | until (`u64`)              |
//! | `gc_holds_by_until`   | `until\0digest\0holder` (until zero-padded) | `()`: holds by end, to prune |
//!
//! Every write of the store runs on its one writer thread, one transaction
//! at a time, so a review and any write that would hold its digest again
//! never interleave: the digest locks of the safety argument are implicit.
//!
//! Must never: be called outside a write transaction of the writer thread
//! for anything that changes a table.

use std::collections::{BTreeMap, BTreeSet};

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use wharf_core::{Digest, RepoName};

use super::{corrupt, decode_manifest, engine, key2, key3, refs, END, MANIFESTS, SEP};
use crate::gc::{due_unix, GcStatus, Known, ReviewKind, ReviewPolicy, Verdict};
use crate::MetaError;

pub(super) const BLOBS_BY_DIGEST: TableDefinition<&str, ()> =
    TableDefinition::new("blobs_by_digest");
pub(super) const MANIFESTS_BY_DIGEST: TableDefinition<&str, ()> =
    TableDefinition::new("manifests_by_digest");
pub(super) const GC_QUEUE: TableDefinition<&str, u64> = TableDefinition::new("gc_queue");
pub(super) const GC_DUE: TableDefinition<&str, ()> = TableDefinition::new("gc_due");
pub(super) const GC_TOMBSTONES: TableDefinition<&str, &str> = TableDefinition::new("gc_tombstones");
pub(super) const GC_HOLDS: TableDefinition<&str, u64> = TableDefinition::new("gc_holds");
const GC_HOLDS_BY_UNTIL: TableDefinition<&str, ()> = TableDefinition::new("gc_holds_by_until");
/// Which one-time builds of indexes have run (`gc_indexes` = 1).
pub(super) const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");

/// Marks the file's `key` in the `schema` table with form `newest` when
/// it has no mark, and answers the mark found; refuses a file marked with a
/// later form (written by a newer Wharf that changed how `what` is stored)
/// rather than misread it.
pub(super) fn mark_form(
    txn: &WriteTransaction,
    path: &std::path::Path,
    key: &str,
    newest: u64,
    what: &str,
) -> Result<Option<u64>, MetaError> {
    let mut schema = txn.open_table(SCHEMA).map_err(engine)?;
    let marked = schema.get(key).map_err(engine)?.map(|v| v.value());
    match marked {
        Some(v) if v > newest => Err(MetaError::Unavailable(format!(
            "{} holds {what} in form {v}, written by a newer Wharf; this build reads forms \
             up to {newest}: run the newer build, or restore the backup taken before the upgrade",
            path.display()
        ))),
        Some(_) => Ok(marked),
        None => {
            schema.insert(key, newest).map_err(engine)?;
            Ok(None)
        }
    }
}

/// Creates the tables, and for a database written before they existed
/// builds the digest indexes and references from what it holds.
pub(super) fn open_tables(txn: &WriteTransaction) -> Result<(), MetaError> {
    for t in [BLOBS_BY_DIGEST, MANIFESTS_BY_DIGEST, GC_DUE] {
        txn.open_table(t).map_err(engine)?;
    }
    txn.open_table(GC_QUEUE).map_err(engine)?;
    txn.open_table(GC_TOMBSTONES).map_err(engine)?;
    txn.open_table(GC_HOLDS).map_err(engine)?;
    txn.open_table(GC_HOLDS_BY_UNTIL).map_err(engine)?;
    let mut schema = txn.open_table(SCHEMA).map_err(engine)?;
    if schema.get("gc_indexes").map_err(engine)?.is_some() {
        return Ok(());
    }
    let blobs = txn.open_table(super::BLOBS).map_err(engine)?;
    let mut by_digest = txn.open_table(BLOBS_BY_DIGEST).map_err(engine)?;
    for entry in blobs.iter().map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let (repo, digest) = split2(k.value())?;
        by_digest
            .insert(key2(digest, repo).as_str(), ())
            .map_err(engine)?;
    }
    let manifests = txn.open_table(MANIFESTS).map_err(engine)?;
    let mut by_digest = txn.open_table(MANIFESTS_BY_DIGEST).map_err(engine)?;
    let mut refs = refs::table(txn)?;
    for entry in manifests.iter().map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let (repo, digest) = split2(k.value())?;
        by_digest
            .insert(key2(digest, repo).as_str(), ())
            .map_err(engine)?;
        for r in decode_manifest(v.value())?.references {
            refs.insert(refs::key(&r.to_string(), repo, digest)?.as_slice(), ())
                .map_err(engine)?;
        }
    }
    schema.insert("gc_indexes", 1).map_err(engine)?;
    Ok(())
}

fn split2(key: &str) -> Result<(&str, &str), MetaError> {
    key.split_once(SEP)
        .ok_or_else(|| corrupt("key", format_args!("{key:?} has no separator")))
}

fn parse_digest(s: &str) -> Result<Digest, MetaError> {
    s.parse().map_err(|e| corrupt("digest", e))
}

fn parse_repo(s: &str) -> Result<RepoName, MetaError> {
    s.parse().map_err(|e| corrupt("repository name", e))
}

/// Whether any key of `table` starts with `prefix`.
fn any_under<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &str,
) -> Result<Option<String>, MetaError> {
    let end = format!("{}{END}", &prefix[..prefix.len() - SEP.len_utf8()]);
    let first = table
        .range(prefix..end.as_str())
        .map_err(engine)?
        .next()
        .transpose()
        .map_err(engine)?;
    Ok(first.map(|(k, _)| k.value()[prefix.len()..].to_string()))
}

/// `Collecting` when a tombstone stands for `digest`.
pub(super) fn refuse_if_tombstoned(txn: &WriteTransaction, digest: &str) -> Result<(), MetaError> {
    let table = txn.open_table(GC_TOMBSTONES).map_err(engine)?;
    if table.get(digest).map_err(engine)?.is_some() {
        return Err(MetaError::Collecting(parse_digest(digest)?));
    }
    Ok(())
}

fn queue_key(kind: ReviewKind, digest: &str, repo: &str) -> String {
    key3(kind.code(), digest, repo)
}

fn due_key(touched: u64, kind: ReviewKind, digest: &str, repo: &str) -> String {
    format!("{touched:020}{SEP}{}", queue_key(kind, digest, repo))
}

/// Queues review (`kind`, `digest`, `repo`) touched at `touched`, moving
/// an existing one; with `only_if_queued`, an absent one stays absent; with
/// `keep_earlier`, an existing one touched earlier keeps its time.
pub(super) fn touch(
    txn: &WriteTransaction,
    kind: ReviewKind,
    digest: &str,
    repo: &str,
    touched: u64,
    only_if_queued: bool,
    keep_earlier: bool,
) -> Result<(), MetaError> {
    let mut queue = txn.open_table(GC_QUEUE).map_err(engine)?;
    let mut due = txn.open_table(GC_DUE).map_err(engine)?;
    let key = queue_key(kind, digest, repo);
    let previous = queue.get(key.as_str()).map_err(engine)?.map(|v| v.value());
    match previous {
        None if only_if_queued => return Ok(()),
        Some(p) if p == touched || (keep_earlier && p < touched) => return Ok(()),
        Some(p) => {
            due.remove(due_key(p, kind, digest, repo).as_str())
                .map_err(engine)?;
        }
        None => {}
    }
    queue.insert(key.as_str(), touched).map_err(engine)?;
    due.insert(due_key(touched, kind, digest, repo).as_str(), ())
        .map_err(engine)?;
    Ok(())
}

fn unqueue(
    txn: &WriteTransaction,
    kind: ReviewKind,
    digest: &str,
    repo: &str,
) -> Result<(), MetaError> {
    let mut queue = txn.open_table(GC_QUEUE).map_err(engine)?;
    let key = queue_key(kind, digest, repo);
    if let Some(p) = queue
        .remove(key.as_str())
        .map_err(engine)?
        .map(|v| v.value())
    {
        txn.open_table(GC_DUE)
            .map_err(engine)?
            .remove(due_key(p, kind, digest, repo).as_str())
            .map_err(engine)?;
    }
    Ok(())
}

/// Records that `repo` links `digest` (and queues its link review).
pub(super) fn linked(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    now: u64,
) -> Result<(), MetaError> {
    txn.open_table(BLOBS_BY_DIGEST)
        .map_err(engine)?
        .insert(key2(digest, repo).as_str(), ())
        .map_err(engine)?;
    touch(txn, ReviewKind::Link, digest, repo, now, false, false)
}

/// Records that `repo` no longer links `digest` (and queues its content).
pub(super) fn unlinked(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    touched: u64,
) -> Result<(), MetaError> {
    txn.open_table(BLOBS_BY_DIGEST)
        .map_err(engine)?
        .remove(key2(digest, repo).as_str())
        .map_err(engine)?;
    unqueue(txn, ReviewKind::Link, digest, repo)?;
    touch(txn, ReviewKind::Content, digest, "", touched, false, true)
}

/// Records manifest `manifest` of `repo` and what it references.
pub(super) fn manifest_stored(
    txn: &WriteTransaction,
    repo: &str,
    manifest: &str,
    references: &[String],
) -> Result<(), MetaError> {
    txn.open_table(MANIFESTS_BY_DIGEST)
        .map_err(engine)?
        .insert(key2(manifest, repo).as_str(), ())
        .map_err(engine)?;
    let mut refs = refs::table(txn)?;
    for r in references {
        refs.insert(refs::key(r, repo, manifest)?.as_slice(), ())
            .map_err(engine)?;
    }
    Ok(())
}

/// Forgets manifest `manifest` of `repo`, and queues the reviews its
/// deletion calls for: each reference's link, and its own content.
pub(super) fn manifest_removed(
    txn: &WriteTransaction,
    repo: &str,
    manifest: &str,
    references: &[String],
    now: u64,
) -> Result<(), MetaError> {
    txn.open_table(MANIFESTS_BY_DIGEST)
        .map_err(engine)?
        .remove(key2(manifest, repo).as_str())
        .map_err(engine)?;
    let mut refs = refs::table(txn)?;
    for r in references {
        refs.remove(refs::key(r, repo, manifest)?.as_slice())
            .map_err(engine)?;
    }
    drop(refs);
    let blobs = txn.open_table(super::BLOBS).map_err(engine)?;
    for r in references {
        if blobs.get(key2(repo, r).as_str()).map_err(engine)?.is_some() {
            touch(txn, ReviewKind::Link, r, repo, now, false, false)?;
        }
    }
    touch(txn, ReviewKind::Content, manifest, "", now, false, true)
}

/// `Missing` for the first of `references` that `repo` holds neither as a
/// blob link nor as a manifest.
pub(super) fn check_held(
    txn: &WriteTransaction,
    repo: &str,
    references: &[String],
) -> Result<(), MetaError> {
    let blobs = txn.open_table(super::BLOBS).map_err(engine)?;
    let manifests = txn.open_table(MANIFESTS).map_err(engine)?;
    for r in references {
        let key = key2(repo, r);
        if blobs.get(key.as_str()).map_err(engine)?.is_none()
            && manifests.get(key.as_str()).map_err(engine)?.is_none()
        {
            return Err(MetaError::Missing(parse_digest(r)?));
        }
    }
    Ok(())
}

/// Records a hold on `digest` for `holder` until `until`.
pub(super) fn hold(
    txn: &WriteTransaction,
    digest: &str,
    holder: &str,
    until: u64,
) -> Result<(), MetaError> {
    refuse_if_tombstoned(txn, digest)?;
    let mut holds = txn.open_table(GC_HOLDS).map_err(engine)?;
    let key = key2(digest, holder);
    let previous = holds.get(key.as_str()).map_err(engine)?.map(|v| v.value());
    if previous.is_none_or(|p| p < until) {
        holds.insert(key.as_str(), until).map_err(engine)?;
        let mut by_until = txn.open_table(GC_HOLDS_BY_UNTIL).map_err(engine)?;
        if let Some(p) = previous {
            by_until
                .remove(hold_key(p, digest, holder).as_str())
                .map_err(engine)?;
        }
        by_until
            .insert(hold_key(until, digest, holder).as_str(), ())
            .map_err(engine)?;
    }
    Ok(())
}

fn hold_key(until: u64, digest: &str, holder: &str) -> String {
    format!("{until:020}{SEP}{digest}{SEP}{holder}")
}

/// Removes every hold that ended at or before `now`.
fn prune_holds(txn: &WriteTransaction, now: u64) -> Result<(), MetaError> {
    let mut by_until = txn.open_table(GC_HOLDS_BY_UNTIL).map_err(engine)?;
    let end = format!("{:020}{END}", now);
    let mut ended = Vec::new();
    for entry in by_until.range(..end.as_str()).map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        ended.push(k.value().to_string());
    }
    let mut holds = txn.open_table(GC_HOLDS).map_err(engine)?;
    for k in ended {
        by_until.remove(k.as_str()).map_err(engine)?;
        if let Some((_, rest)) = k.split_once(SEP) {
            let (digest, holder) = split2(rest)?;
            let key = key2(digest, holder);
            let current = holds.get(key.as_str()).map_err(engine)?.map(|v| v.value());
            if current.is_some_and(|c| c <= now) {
                holds.remove(key.as_str()).map_err(engine)?;
            }
        }
    }
    Ok(())
}

/// Ends `holder`'s hold on `digest`.
pub(super) fn unhold(txn: &WriteTransaction, digest: &str, holder: &str) -> Result<(), MetaError> {
    let mut holds = txn.open_table(GC_HOLDS).map_err(engine)?;
    let removed = holds
        .remove(key2(digest, holder).as_str())
        .map_err(engine)?
        .map(|v| v.value());
    if let Some(until) = removed {
        txn.open_table(GC_HOLDS_BY_UNTIL)
            .map_err(engine)?
            .remove(hold_key(until, digest, holder).as_str())
            .map_err(engine)?;
    }
    Ok(())
}

/// Ends every hold of `holder` (a scan: holds are few and short-lived)
/// and queues a content review of each digest it held, touched at `now`
/// (an earlier queued review keeps its time); how many it ended.
pub(super) fn unhold_all(txn: &WriteTransaction, holder: &str, now: u64) -> Result<u64, MetaError> {
    let mut ended = Vec::new();
    for entry in txn
        .open_table(GC_HOLDS)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, _) = entry.map_err(engine)?;
        let (digest, h) = split2(k.value())?;
        if h == holder {
            ended.push(digest.to_string());
        }
    }
    for digest in &ended {
        unhold(txn, digest, holder)?;
        touch(txn, ReviewKind::Content, digest, "", now, false, true)?;
    }
    Ok(ended.len() as u64)
}

/// Decides reviews due under `policy`, in this transaction, until `limit`
/// verdicts or nothing is due.
pub(super) fn review(
    txn: &WriteTransaction,
    policy: &ReviewPolicy,
) -> Result<Vec<Verdict>, MetaError> {
    let now = policy.now_unix;
    let mut verdicts = Vec::new();
    prune_holds(txn, now)?;
    reclaim_expired_tombstones(txn, policy, &mut verdicts)?;
    while verdicts.len() < policy.limit {
        let due = due_reviews(txn, policy, policy.limit - verdicts.len())?;
        if due.is_empty() {
            break;
        }
        for (kind, digest, repo, touched) in due {
            unqueue(txn, kind, &digest, &repo)?;
            let verdict = match kind {
                ReviewKind::Link => review_link(txn, &digest, &repo, touched)?,
                ReviewKind::Content | ReviewKind::Orphan => {
                    review_content(txn, kind, &digest, policy, now)?
                }
            };
            verdicts.push(verdict);
        }
    }
    Ok(verdicts)
}

/// Claims, for this collector, tombstones whose lease has passed.
fn reclaim_expired_tombstones(
    txn: &WriteTransaction,
    policy: &ReviewPolicy,
    verdicts: &mut Vec<Verdict>,
) -> Result<(), MetaError> {
    let mut table = txn.open_table(GC_TOMBSTONES).map_err(engine)?;
    let mut expired = Vec::new();
    for entry in table.iter().map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let (lease, _) = split2(v.value())?;
        let lease: u64 = lease.parse().map_err(|e| corrupt("tombstone lease", e))?;
        if lease < policy.now_unix {
            expired.push(k.value().to_string());
        }
        if expired.len() >= policy.limit {
            break;
        }
    }
    let lease_until = policy.now_unix.saturating_add(policy.lease_secs);
    for digest in expired {
        let value = format!("{lease_until}{SEP}{}", policy.holder);
        table
            .insert(digest.as_str(), value.as_str())
            .map_err(engine)?;
        verdicts.push(Verdict::Doomed {
            digest: parse_digest(&digest)?,
            lease_until_unix: lease_until,
            reclaimed: true,
        });
    }
    Ok(())
}

/// Up to `n` reviews due now, oldest first: (kind, digest, repo, touched).
fn due_reviews(
    txn: &WriteTransaction,
    policy: &ReviewPolicy,
    n: usize,
) -> Result<Vec<(ReviewKind, String, String, u64)>, MetaError> {
    let due = txn.open_table(GC_DUE).map_err(engine)?;
    let mut out = Vec::new();
    for entry in due.iter().map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let (kind, digest, repo, touched) = parse_due_key(k.value())?;
        if touched > policy.now_unix {
            break;
        }
        if due_unix(kind, touched, policy) <= policy.now_unix {
            out.push((kind, digest.to_string(), repo.to_string(), touched));
            if out.len() >= n {
                break;
            }
        }
    }
    Ok(out)
}

fn parse_due_key(key: &str) -> Result<(ReviewKind, &str, &str, u64), MetaError> {
    let bad = || corrupt("review queue key", format_args!("{key:?}"));
    let mut parts = key.splitn(4, SEP);
    let touched = parts.next().ok_or_else(bad)?;
    let kind = parts
        .next()
        .and_then(ReviewKind::from_code)
        .ok_or_else(bad)?;
    let digest = parts.next().ok_or_else(bad)?;
    let repo = parts.next().ok_or_else(bad)?;
    Ok((kind, digest, repo, touched.parse().map_err(|_| bad())?))
}

fn review_link(
    txn: &WriteTransaction,
    digest: &str,
    repo: &str,
    touched: u64,
) -> Result<Verdict, MetaError> {
    let kept = |why: String| -> Result<Verdict, MetaError> {
        Ok(Verdict::Kept {
            kind: ReviewKind::Link,
            digest: parse_digest(digest)?,
            repo: Some(parse_repo(repo)?),
            why,
        })
    };
    let mut blobs = txn.open_table(super::BLOBS).map_err(engine)?;
    let link = key2(repo, digest);
    let Some(size) = blobs.get(link.as_str()).map_err(engine)?.map(|v| v.value()) else {
        return kept("not linked any more".into());
    };
    let refs = refs::table(txn)?;
    if let Some(r) = refs::first_under(&refs, &refs::prefix(digest, Some(repo))?)? {
        return kept(format!("referenced by manifest {}", r.manifest));
    }
    blobs.remove(link.as_str()).map_err(engine)?;
    drop((blobs, refs));
    super::usage::unheld(txn, repo, digest, size)?;
    unlinked(txn, repo, digest, touched)?;
    Ok(Verdict::Unlinked {
        repo: parse_repo(repo)?,
        digest: parse_digest(digest)?,
        size,
    })
}

fn review_content(
    txn: &WriteTransaction,
    kind: ReviewKind,
    digest: &str,
    policy: &ReviewPolicy,
    now: u64,
) -> Result<Verdict, MetaError> {
    let kept = |why: String| -> Result<Verdict, MetaError> {
        Ok(Verdict::Kept {
            kind,
            digest: parse_digest(digest)?,
            repo: None,
            why,
        })
    };
    let mut tombstones = txn.open_table(GC_TOMBSTONES).map_err(engine)?;
    if let Some(v) = tombstones.get(digest).map_err(engine)? {
        return kept(format!("being deleted (tombstone {:?})", v.value()));
    }
    let prefix = key2(digest, "");
    let blobs = txn.open_table(BLOBS_BY_DIGEST).map_err(engine)?;
    if let Some(repo) = any_under(&blobs, &prefix)? {
        return kept(format!("linked in {repo}"));
    }
    let manifests = txn.open_table(MANIFESTS_BY_DIGEST).map_err(engine)?;
    if let Some(repo) = any_under(&manifests, &prefix)? {
        return kept(format!("a manifest in {repo}"));
    }
    let refs = refs::table(txn)?;
    if let Some(r) = refs::first_under(&refs, &refs::prefix(digest, None)?)? {
        return kept(format!("referenced by {}@{}", r.repo, r.manifest));
    }
    drop((blobs, manifests, refs));
    if let Some(until) = live_hold(txn, digest, now)? {
        // Touched a second from now: holds end moments after their record
        // commits, so the review comes back after the delay, not at the
        // hold's end; the second keeps a pass with a zero delay from
        // deciding it over and over while a long hold (a tenant import's)
        // stands.
        touch(txn, kind, digest, "", now.saturating_add(1), false, false)?;
        return kept(format!("held until {until}"));
    }
    let lease_until = now.saturating_add(policy.lease_secs);
    let value = format!("{lease_until}{SEP}{}", policy.holder);
    tombstones.insert(digest, value.as_str()).map_err(engine)?;
    Ok(Verdict::Doomed {
        digest: parse_digest(digest)?,
        lease_until_unix: lease_until,
        reclaimed: false,
    })
}

/// The latest end of a live hold on `digest` (ended ones are pruned at the
/// start of every review).
fn live_hold(txn: &WriteTransaction, digest: &str, now: u64) -> Result<Option<u64>, MetaError> {
    let holds = txn.open_table(GC_HOLDS).map_err(engine)?;
    let prefix = key2(digest, "");
    let end = format!("{digest}{END}");
    let mut live = None;
    for entry in holds.range(prefix.as_str()..end.as_str()).map_err(engine)? {
        let (_, v) = entry.map_err(engine)?;
        if v.value() > now {
            live = live.max(Some(v.value()));
        }
    }
    Ok(live)
}

/// Removes `holder`'s tombstone of `digest`.
pub(super) fn release(
    txn: &WriteTransaction,
    digest: &str,
    holder: &str,
) -> Result<bool, MetaError> {
    let mut table = txn.open_table(GC_TOMBSTONES).map_err(engine)?;
    let mine = match table.get(digest).map_err(engine)? {
        Some(v) => split2(v.value())?.1 == holder,
        None => false,
    };
    if mine {
        table.remove(digest).map_err(engine)?;
    }
    Ok(mine)
}

/// Whether metadata knows `digest` in any way.
fn known(txn: &WriteTransaction, digest: &str) -> Result<bool, MetaError> {
    let prefix = key2(digest, "");
    let blobs = txn.open_table(BLOBS_BY_DIGEST).map_err(engine)?;
    let manifests = txn.open_table(MANIFESTS_BY_DIGEST).map_err(engine)?;
    let refs = refs::table(txn)?;
    let holds = txn.open_table(GC_HOLDS).map_err(engine)?;
    let tombstones = txn.open_table(GC_TOMBSTONES).map_err(engine)?;
    let queue = txn.open_table(GC_QUEUE).map_err(engine)?;
    Ok(any_under(&blobs, &prefix)?.is_some()
        || any_under(&manifests, &prefix)?.is_some()
        || refs::first_under(&refs, &refs::prefix(digest, None)?)?.is_some()
        || any_under(&holds, &prefix)?.is_some()
        || tombstones.get(digest).map_err(engine)?.is_some()
        || queue
            .get(queue_key(ReviewKind::Content, digest, "").as_str())
            .map_err(engine)?
            .is_some()
        || queue
            .get(queue_key(ReviewKind::Orphan, digest, "").as_str())
            .map_err(engine)?
            .is_some())
}

/// Queues an orphan review of each unknown digest.
pub(super) fn enqueue_orphans(
    txn: &WriteTransaction,
    digests: &[String],
    now: u64,
) -> Result<u64, MetaError> {
    let mut queued = 0;
    for d in digests {
        if !known(txn, d)? {
            touch(txn, ReviewKind::Orphan, d, "", now, false, false)?;
            queued += 1;
        }
    }
    Ok(queued)
}

/// The queue's state under `policy`.
pub(super) fn status(txn: &ReadTransaction, policy: &ReviewPolicy) -> Result<GcStatus, MetaError> {
    let queue = txn.open_table(GC_QUEUE).map_err(engine)?;
    let due = txn.open_table(GC_DUE).map_err(engine)?;
    let mut status = GcStatus {
        queued: queue.len().map_err(engine)?,
        tombstones: txn
            .open_table(GC_TOMBSTONES)
            .map_err(engine)?
            .len()
            .map_err(engine)?,
        ..GcStatus::default()
    };
    for entry in due.iter().map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let (kind, _, _, touched) = parse_due_key(k.value())?;
        if touched > policy.now_unix {
            break;
        }
        let at = due_unix(kind, touched, policy);
        if at <= policy.now_unix {
            status.due += 1;
            status.oldest_due_unix = Some(status.oldest_due_unix.map_or(at, |o: u64| o.min(at)));
        }
    }
    for entry in txn
        .open_table(GC_HOLDS)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (_, v) = entry.map_err(engine)?;
        if v.value() > policy.now_unix {
            status.holds += 1;
        }
    }
    Ok(status)
}

/// What metadata knows of the blob store's content.
pub(super) fn known_all(txn: &ReadTransaction, policy: &ReviewPolicy) -> Result<Known, MetaError> {
    let mut held = BTreeSet::new();
    let mut first_parts = |name: TableDefinition<&'static str, ()>| -> Result<(), MetaError> {
        for entry in txn
            .open_table(name)
            .map_err(engine)?
            .iter()
            .map_err(engine)?
        {
            let (k, _) = entry.map_err(engine)?;
            let digest = k.value().split(SEP).next().unwrap_or_default();
            held.insert(parse_digest(digest)?);
        }
        Ok(())
    };
    first_parts(BLOBS_BY_DIGEST)?;
    first_parts(MANIFESTS_BY_DIGEST)?;
    held.extend(refs::digests(txn)?);
    let mut pending = BTreeSet::new();
    for entry in txn
        .open_table(GC_HOLDS)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, v) = entry.map_err(engine)?;
        if v.value() > policy.now_unix {
            pending.insert(parse_digest(split2(k.value())?.0)?);
        }
    }
    for entry in txn
        .open_table(GC_TOMBSTONES)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, _) = entry.map_err(engine)?;
        pending.insert(parse_digest(k.value())?);
    }
    let mut queued = BTreeMap::new();
    for entry in txn
        .open_table(GC_QUEUE)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, v) = entry.map_err(engine)?;
        let mut parts = k.value().splitn(3, SEP);
        let kind = parts.next().and_then(ReviewKind::from_code);
        let digest = parts.next().unwrap_or_default();
        if let Some(kind @ (ReviewKind::Content | ReviewKind::Orphan)) = kind {
            let at = due_unix(kind, v.value(), policy);
            let slot = queued.entry(parse_digest(digest)?).or_insert(at);
            *slot = (*slot).min(at);
        }
    }
    Ok(Known {
        held,
        pending,
        queued,
    })
}
