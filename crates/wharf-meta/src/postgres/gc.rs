//! The PostgreSQL backend's side of garbage collection (see [`crate::gc`]
//! for the argument these statements implement).
//!
//! Locks, in the one order every transaction takes them:
//!
//! 1. **Digest locks**: transaction-scoped advisory locks keyed by
//!    `hashtextextended(digest, 0)`. A content review takes its digest's
//!    lock exclusively, one digest per transaction; every write that would
//!    hold a digest again (a link, a mount, a manifest and what it
//!    references, a hold) takes it shared first and then, under it, checks
//!    for a tombstone. Shared locks never wait on each other, so a
//!    transaction holding several cannot deadlock with another that does;
//!    two digests hashing alike only wait for each other a moment longer.
//! 2. **Queue rows** (`gc_queue`): a review claims its row with
//!    `FOR UPDATE SKIP LOCKED`, so each due review is decided by one node
//!    while the others take the next. A link touches its queue row before
//!    writing the link row, the same order the link review takes them.
//! 3. **Holder rows** (`blobs`, `manifests`): a link review locks its link
//!    `FOR UPDATE` before reading `refs`; `put_manifest` locks the links and
//!    children it references `FOR SHARE` before writing its `refs`. Either
//!    the manifest commits first and the review, once it has the row, sees
//!    its reference, or the review removes the link first and the manifest
//!    finds it gone (`MetaError::Missing`).
//!
//! At `READ COMMITTED` every statement sees what was committed before it
//! started, so the checks that follow a lock see every writer the lock
//! waited for.
//!
//! Ending holds (`gc_unhold`, `gc_unhold_all`) takes no digest lock: a hold
//! only ever keeps content, so removing one can only let a later review
//! collect what nothing else holds, and `gc_unhold_all` queues that review
//! in its own statement.
//!
//! Must never: read for a decision before the lock that protects it is held
//! (a statement that both takes a lock and reads would read a snapshot
//! older than the lock), or decide more than one content review per
//! transaction.

use tokio_postgres::types::ToSql;
use wharf_core::{Digest, RepoName};

use super::{from_db, get, to_db, Conn, Failure};
use crate::gc::{GcStatus, Known, ReviewKind, ReviewPolicy, Verdict};
use crate::MetaError;

pub(super) const LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))";
const LOCK_SHARED_ALL: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended(d, 0)) FROM unnest($1::text[]) AS d";
const LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
const TOMBSTONED: &str = "SELECT EXISTS (SELECT 1 FROM wharf.gc_tombstones WHERE digest = $1)";
/// Queues review (`$1` kind, `$2` digest, `$3` repo) touched at `$4`.
pub(super) const TOUCH: &str =
    "INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix \
     WHERE wharf.gc_queue.touched_unix <> EXCLUDED.touched_unix";
/// The same, but a review queued earlier keeps its time.
pub(super) const TOUCH_KEEP_EARLIER: &str =
    "INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix \
     WHERE wharf.gc_queue.touched_unix > EXCLUDED.touched_unix";
const TOUCH_IF_QUEUED: &str = "UPDATE wharf.gc_queue SET touched_unix = $4 \
     WHERE kind = $1 AND digest = $2 AND repo = $3 AND touched_unix < $4";
/// Link reviews of the blobs of `$1` among `$2`, touched at `$3`.
pub(super) const TOUCH_LINKS: &str =
    "INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix) \
     SELECT 'l', b.digest, b.repo, $3 FROM wharf.blobs AS b \
     WHERE b.repo = $1 AND b.digest = ANY($2::text[]) \
     ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix \
     WHERE wharf.gc_queue.touched_unix <> EXCLUDED.touched_unix";
const HELD_BLOBS: &str =
    "SELECT digest FROM wharf.blobs WHERE repo = $1 AND digest = ANY($2::text[]) FOR SHARE";
const HELD_MANIFESTS: &str =
    "SELECT digest FROM wharf.manifests WHERE repo = $1 AND digest = ANY($2::text[]) FOR SHARE";
pub(super) const INSERT_REFS: &str = "INSERT INTO wharf.refs (digest, repo, manifest) \
     SELECT d, $2, $3 FROM unnest($1::text[]) AS d ON CONFLICT DO NOTHING";
pub(super) const DELETE_REFS: &str = "DELETE FROM wharf.refs WHERE repo = $1 AND manifest = $2";
pub(super) const UPSERT_HOLD: &str =
    "INSERT INTO wharf.gc_holds (digest, holder, until_unix) VALUES ($1, $2, $3) \
     ON CONFLICT (digest, holder) DO UPDATE SET until_unix = EXCLUDED.until_unix \
     WHERE wharf.gc_holds.until_unix < EXCLUDED.until_unix";
pub(super) const UNHOLD: &str = "DELETE FROM wharf.gc_holds WHERE digest = $1 AND holder = $2";
const PRUNE_HOLDS: &str = "DELETE FROM wharf.gc_holds WHERE until_unix <= $1";
/// Takes the oldest due review nobody else is deciding off the queue (in
/// one statement: the row the subquery locks is the row deleted): `$1` is
/// the latest touch an orphan review may have to be due, `$2` the same for
/// the others.
const CLAIM_DUE: &str = "DELETE FROM wharf.gc_queue WHERE (kind, digest, repo) = \
     (SELECT kind, digest, repo FROM wharf.gc_queue \
      WHERE touched_unix <= greatest($1::bigint, $2::bigint) \
        AND ((kind = 'o' AND touched_unix <= $1::bigint) OR (kind <> 'o' AND touched_unix <= $2::bigint)) \
      ORDER BY touched_unix LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING kind, digest, repo, touched_unix";
const LOCK_LINK: &str = "SELECT size FROM wharf.blobs WHERE repo = $1 AND digest = $2 FOR UPDATE";
const A_REF_IN_REPO: &str =
    "SELECT manifest FROM wharf.refs WHERE digest = $1 AND repo = $2 LIMIT 1";
const DELETE_LINK: &str = "DELETE FROM wharf.blobs WHERE repo = $1 AND digest = $2";
/// Who keeps digest `$1` (holds ending after `$2`), after its exclusive
/// lock was taken by a statement of its own: a statement reads what was
/// committed when it started, so one that waited for the lock itself
/// could miss a holder committed meanwhile.
const HOLDERS: &str = "SELECT \
     (SELECT holder FROM wharf.gc_tombstones WHERE digest = $1), \
     (SELECT repo FROM wharf.blobs WHERE digest = $1 LIMIT 1), \
     (SELECT repo FROM wharf.manifests WHERE digest = $1 LIMIT 1), \
     (SELECT repo || '@' || manifest FROM wharf.refs WHERE digest = $1 LIMIT 1), \
     (SELECT max(until_unix) FROM wharf.gc_holds WHERE digest = $1 AND until_unix > $2)";
const INSERT_TOMBSTONE: &str =
    "INSERT INTO wharf.gc_tombstones (digest, holder, lease_until) VALUES ($1, $2, $3)";
const CLAIM_EXPIRED_TOMBSTONE: &str =
    "UPDATE wharf.gc_tombstones SET holder = $2, lease_until = $3 \
     WHERE digest = (SELECT digest FROM wharf.gc_tombstones WHERE lease_until < $1 \
                     ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING digest";
const RELEASE: &str = "DELETE FROM wharf.gc_tombstones WHERE digest = $1 AND holder = $2";
const ENQUEUE_ORPHANS: &str = "INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix) \
     SELECT 'o', d, '', $2 FROM unnest($1::text[]) AS d \
     WHERE NOT EXISTS (SELECT 1 FROM wharf.blobs WHERE digest = d) \
       AND NOT EXISTS (SELECT 1 FROM wharf.manifests WHERE digest = d) \
       AND NOT EXISTS (SELECT 1 FROM wharf.refs WHERE digest = d) \
       AND NOT EXISTS (SELECT 1 FROM wharf.gc_holds WHERE digest = d) \
       AND NOT EXISTS (SELECT 1 FROM wharf.gc_tombstones WHERE digest = d) \
       AND NOT EXISTS (SELECT 1 FROM wharf.gc_queue WHERE kind IN ('c', 'o') AND digest = d) \
     ON CONFLICT DO NOTHING";
/// `$1`: delay of link and content reviews, `$2`: orphan age, `$3`: now.
const STATUS: &str = "SELECT count(*), \
     count(*) FILTER (WHERE due <= $3::bigint), \
     min(due) FILTER (WHERE due <= $3::bigint), \
     (SELECT count(*) FROM wharf.gc_tombstones), \
     (SELECT count(*) FROM wharf.gc_holds WHERE until_unix > $3::bigint) \
     FROM (SELECT touched_unix + CASE WHEN kind = 'o' THEN $2::bigint ELSE $1::bigint END AS due \
           FROM wharf.gc_queue) AS q";
const KNOWN_HELD: &str = "SELECT digest FROM wharf.blobs UNION SELECT digest FROM wharf.manifests \
     UNION SELECT digest FROM wharf.refs UNION SELECT digest FROM wharf.gc_holds \
     UNION SELECT digest FROM wharf.gc_tombstones";
const KNOWN_QUEUED: &str =
    "SELECT digest, min(touched_unix + CASE WHEN kind = 'o' THEN $2::bigint ELSE $1::bigint END) \
     FROM wharf.gc_queue WHERE kind IN ('c', 'o') GROUP BY digest";

fn digest_of(s: &str) -> Result<Digest, MetaError> {
    s.parse().map_err(|e| super::corrupt("digest", e))
}

/// Takes the shared lock of `digest` and refuses with `Collecting` if a
/// tombstone stands for it.
pub(super) async fn share_digest(c: &mut Conn, digest: &str) -> Result<(), Failure> {
    c.query(LOCK_SHARED, &[&digest]).await?;
    refuse_if_tombstoned(c, digest).await
}

/// Takes the shared locks of every digest of `digests`.
pub(super) async fn share_digests(c: &mut Conn, digests: &[String]) -> Result<(), Failure> {
    c.query(LOCK_SHARED_ALL, &[&digests]).await?;
    Ok(())
}

pub(super) async fn refuse_if_tombstoned(c: &mut Conn, digest: &str) -> Result<(), Failure> {
    let rows = c.query(TOMBSTONED, &[&digest]).await?;
    let tombstoned: bool = get(&rows[0], 0)?;
    if tombstoned {
        return Err(MetaError::Collecting(digest_of(digest)?).into());
    }
    Ok(())
}

/// `Missing` for the first of `references` that `repo` holds neither as a
/// link nor as a manifest; the rows found stay locked `FOR SHARE`.
pub(super) async fn check_held(
    c: &mut Conn,
    repo: &str,
    references: &[String],
) -> Result<(), Failure> {
    if references.is_empty() {
        return Ok(());
    }
    let mut held = std::collections::HashSet::new();
    for sql in [HELD_BLOBS, HELD_MANIFESTS] {
        for row in c.query(sql, &[&repo, &references]).await? {
            held.insert(get::<String>(&row, 0)?);
        }
    }
    match references.iter().find(|r| !held.contains(*r)) {
        Some(missing) => Err(MetaError::Missing(digest_of(missing)?).into()),
        None => Ok(()),
    }
}

/// Touches the link review of (`repo`, `digest`) if it is queued.
pub(super) async fn touch_if_queued(
    c: &mut Conn,
    repo: &str,
    digest: &str,
    now: i64,
) -> Result<(), Failure> {
    c.execute(
        TOUCH_IF_QUEUED,
        &[&ReviewKind::Link.code(), &digest, &repo, &now],
    )
    .await?;
    Ok(())
}

/// Claims one tombstone whose lease ran out (its collector died before
/// deleting), to finish its deletion; `None` when there is none.
pub(super) async fn claim_expired(
    c: &mut Conn,
    policy: &ReviewPolicy,
) -> Result<Option<Verdict>, Failure> {
    let now = to_db(policy.now_unix, "clock")?;
    let lease_until = to_db(policy.now_unix.saturating_add(policy.lease_secs), "lease")?;
    let claimed = c
        .query(
            CLAIM_EXPIRED_TOMBSTONE,
            &[&now, &policy.holder, &lease_until],
        )
        .await?;
    match claimed.first() {
        Some(row) => Ok(Some(Verdict::Doomed {
            digest: digest_of(get(row, 0)?)?,
            lease_until_unix: from_db(lease_until, "lease")?,
            reclaimed: true,
        })),
        None => Ok(None),
    }
}

/// Decides one due review (or, with `claim_expired_first`, claims one
/// expired tombstone) inside the caller's open transaction; `None` when
/// nothing is due.
pub(super) async fn decide_one(
    c: &mut Conn,
    policy: &ReviewPolicy,
    claim_expired_first: bool,
) -> Result<Option<Verdict>, Failure> {
    if claim_expired_first {
        if let Some(v) = claim_expired(c, policy).await? {
            return Ok(Some(v));
        }
    }
    let now = to_db(policy.now_unix, "clock")?;
    let lease_until = to_db(policy.now_unix.saturating_add(policy.lease_secs), "lease")?;
    let orphan_cutoff = to_db(
        policy.now_unix.saturating_sub(policy.orphan_age_secs),
        "clock",
    )?;
    let cutoff = to_db(
        policy.now_unix.saturating_sub(policy.review_delay_secs),
        "clock",
    )?;
    let rows = c.query(CLAIM_DUE, &[&orphan_cutoff, &cutoff]).await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let code: String = get(row, 0)?;
    let digest: String = get(row, 1)?;
    let repo: String = get(row, 2)?;
    let touched: i64 = get(row, 3)?;
    let kind = ReviewKind::from_code(&code)
        .ok_or_else(|| super::corrupt("review kind", format_args!("{code:?}")))?;
    let verdict = match kind {
        ReviewKind::Link => review_link(c, &digest, &repo, touched).await?,
        ReviewKind::Content | ReviewKind::Orphan => {
            review_content(c, kind, &digest, policy, now, lease_until).await?
        }
    };
    Ok(Some(verdict))
}

async fn review_link(
    c: &mut Conn,
    digest: &str,
    repo: &str,
    touched: i64,
) -> Result<Verdict, Failure> {
    let repo_name: RepoName = repo
        .parse()
        .map_err(|e| super::corrupt("repository name", e))?;
    let kept = |why: String| -> Result<Verdict, Failure> {
        Ok(Verdict::Kept {
            kind: ReviewKind::Link,
            digest: digest_of(digest)?,
            repo: Some(repo_name.clone()),
            why,
        })
    };
    let rows = c.query(LOCK_LINK, &[&repo, &digest]).await?;
    let Some(row) = rows.first() else {
        return kept("not linked any more".into());
    };
    let size = from_db(get(row, 0)?, "blob size")?;
    let rows = c.query(A_REF_IN_REPO, &[&digest, &repo]).await?;
    if let Some(row) = rows.first() {
        let manifest: String = get(row, 0)?;
        return kept(format!("referenced by manifest {manifest}"));
    }
    c.execute(DELETE_LINK, &[&repo, &digest]).await?;
    c.execute(
        TOUCH_KEEP_EARLIER,
        &[&ReviewKind::Content.code(), &digest, &"", &touched],
    )
    .await?;
    Ok(Verdict::Unlinked {
        repo: repo_name,
        digest: digest_of(digest)?,
        size,
    })
}

async fn review_content(
    c: &mut Conn,
    kind: ReviewKind,
    digest: &str,
    policy: &ReviewPolicy,
    now: i64,
    lease_until: i64,
) -> Result<Verdict, Failure> {
    let kept = |why: String| -> Result<Verdict, Failure> {
        Ok(Verdict::Kept {
            kind,
            digest: digest_of(digest)?,
            repo: None,
            why,
        })
    };
    c.query(LOCK_EXCLUSIVE, &[&digest]).await?;
    let rows = c.query(HOLDERS, &[&digest, &now]).await?;
    let row = &rows[0];
    let tombstone: Option<String> = get(row, 0)?;
    if let Some(holder) = tombstone {
        return kept(format!("being deleted by {holder}"));
    }
    let blob: Option<String> = get(row, 1)?;
    let manifest: Option<String> = get(row, 2)?;
    let reference: Option<String> = get(row, 3)?;
    let hold: Option<i64> = get(row, 4)?;
    if let Some(repo) = blob {
        return kept(format!("linked in {repo}"));
    }
    if let Some(repo) = manifest {
        return kept(format!("a manifest in {repo}"));
    }
    if let Some(by) = reference {
        return kept(format!("referenced by {by}"));
    }
    if let Some(until) = hold {
        // Queued again, touched a second from now: a hold normally ends
        // within moments of the record it protects committing, so the
        // review comes back after the delay, not at the hold's far-off
        // end; the second keeps a pass with a zero delay from deciding it
        // over and over while a long hold (a tenant import's) stands.
        let later = now.saturating_add(1);
        c.execute(TOUCH, &[&kind.code(), &digest, &"", &later])
            .await?;
        return kept(format!("held until {until}"));
    }
    c.execute(INSERT_TOMBSTONE, &[&digest, &policy.holder, &lease_until])
        .await?;
    Ok(Verdict::Doomed {
        digest: digest_of(digest)?,
        lease_until_unix: from_db(lease_until, "lease")?,
        reclaimed: false,
    })
}

/// Prunes holds that have ended.
pub(super) async fn prune_holds(c: &mut Conn, now: i64) -> Result<(), Failure> {
    c.execute(PRUNE_HOLDS, &[&now]).await?;
    Ok(())
}

pub(super) async fn release(c: &mut Conn, digest: &str, holder: &str) -> Result<bool, Failure> {
    Ok(c.execute(RELEASE, &[&digest, &holder]).await? > 0)
}

pub(super) async fn enqueue_orphans(
    c: &mut Conn,
    digests: &[String],
    now: i64,
) -> Result<u64, Failure> {
    let mut queued = 0;
    for chunk in digests.chunks(1000) {
        let chunk = chunk.to_vec();
        queued += c.execute(ENQUEUE_ORPHANS, &[&chunk, &now]).await?;
    }
    Ok(queued)
}

pub(super) async fn status(c: &mut Conn, policy: &ReviewPolicy) -> Result<GcStatus, Failure> {
    let delay = to_db(policy.review_delay_secs, "delay")?;
    let orphan_age = to_db(policy.orphan_age_secs, "orphan age")?;
    let now = to_db(policy.now_unix, "clock")?;
    let params: [&(dyn ToSql + Sync); 3] = [&delay, &orphan_age, &now];
    let rows = c.query(STATUS, &params).await?;
    let row = &rows[0];
    let oldest: Option<i64> = get(row, 2)?;
    Ok(GcStatus {
        queued: from_db(get(row, 0)?, "queue length")?,
        due: from_db(get(row, 1)?, "due count")?,
        oldest_due_unix: oldest.map(|o| from_db(o, "due time")).transpose()?,
        tombstones: from_db(get(row, 3)?, "tombstone count")?,
        holds: from_db(get(row, 4)?, "hold count")?,
    })
}

pub(super) async fn known(c: &mut Conn, policy: &ReviewPolicy) -> Result<Known, Failure> {
    let mut known = Known::default();
    for row in c.query(KNOWN_HELD, &[]).await? {
        known.held.insert(digest_of(get(&row, 0)?)?);
    }
    let delay = to_db(policy.review_delay_secs, "delay")?;
    let orphan_age = to_db(policy.orphan_age_secs, "orphan age")?;
    for row in c.query(KNOWN_QUEUED, &[&delay, &orphan_age]).await? {
        let due: i64 = get(&row, 1)?;
        known
            .queued
            .insert(digest_of(get(&row, 0)?)?, from_db(due, "due time")?);
    }
    Ok(known)
}
