//! The online garbage collector: runs inside every node, asks metadata to
//! decide the reviews that are due, and deletes from the blob store the
//! bytes metadata has tombstoned.
//!
//! Owns: [`Collector`] (a pass, the background loop, the orphan scan, the
//! storage check), its configuration ([`GcConfig`]) and its metrics
//! ([`GcMetrics`], rendered at scrape time from counters and from the queue
//! state the last pass read, so a scrape never touches a dependency).
//!
//! Must never: delete bytes without a tombstone it holds in metadata, or
//! after its lease has (nearly) run out (the argument is in
//! [`wharf_meta::gc`]); decide anything itself (every decision is a
//! metadata transaction); or speak HTTP (the admin API in `wharf-api`
//! calls it).
//!
//! On PostgreSQL every node runs a collector against the one shared queue;
//! each review is claimed by one of them (`FOR UPDATE SKIP LOCKED`), so
//! nothing is reviewed or deleted twice. On the embedded store there is one
//! node, and a pass decides its reviews in batches on the writer thread.

#![forbid(unsafe_code)]

mod check;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use wharf_core::{now_unix, Digest, RepoName};
use wharf_meta::gc::{GcStatus, ReviewKind, ReviewPolicy, Verdict};
use wharf_meta::{MetaError, MetaStore};
use wharf_storage::{BlobStore, StorageError};

pub use check::CheckReport;
pub use metrics::GcMetrics;

/// How the collector runs.
#[derive(Clone, Debug, PartialEq)]
pub struct GcConfig {
    /// Whether the background loop runs on this node (a pass can still be
    /// asked for through the admin API).
    pub enabled: bool,
    /// How long a link or content stays untouched before it is reviewed.
    pub review_delay: Duration,
    /// Pause between background passes.
    pub interval: Duration,
    /// How long bytes metadata does not know wait before they are reviewed.
    pub orphan_age: Duration,
    /// Pause between scans of the blob store for such bytes.
    pub orphan_scan_interval: Duration,
    /// How long a tombstone is this collector's alone.
    pub lease: Duration,
    /// Reviews decided per metadata call.
    pub batch: usize,
    /// Most reviews a pass decides per second: after each batch the pass
    /// sleeps until it is back within the rate, and a batch is then at
    /// most a [`PACED_SLICES`]th of a second's reviews. `None`: no pause.
    pub max_reviews_per_sec: Option<u32>,
}

/// A paced pass works in this many batches a second at most: at 200
/// reviews a second, 10 reviews then a pause of 50 ms, rather than 64 and
/// a pause of 320 ms. Each review on PostgreSQL is its own transaction, so
/// the smaller batch costs no more; a long batch holds a core of the
/// metadata store for its whole length, and pulls waiting on that store
/// showed it in their p99.
pub const PACED_SLICES: u32 = 20;

/// Default review delay: a day, as GitLab's registry.
pub const DEFAULT_REVIEW_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Default pause between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default tombstone lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(600);
/// A deletion is not started with less than this left of its lease.
const LEASE_MARGIN_SECS: u64 = 30;
/// The pause before the first retry of releasing a tombstone once its bytes
/// are gone (doubled before each next one, up to [`RELEASE_PAUSE_MAX`]).
/// Metadata busy with pushes refuses a call now and then ("all connections
/// busy"), and a tombstone left standing refuses pushes of its digest
/// (`503`) until its lease passes.
const RELEASE_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a release.
const RELEASE_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Deletions of one batch under way at once.
pub const DELETE_CONCURRENCY: usize = 8;
/// Most reviews a dry run decides when no limit is given.
pub const DRY_RUN_LIMIT: usize = 1000;

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            review_delay: DEFAULT_REVIEW_DELAY,
            interval: DEFAULT_INTERVAL,
            orphan_age: Duration::from_secs(24 * 3600),
            orphan_scan_interval: Duration::from_secs(24 * 3600),
            lease: DEFAULT_LEASE,
            batch: 64,
            max_reviews_per_sec: None,
        }
    }
}

/// What went wrong with a pass as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error("blob storage: {0}")]
    Storage(#[from] StorageError),
}

/// What one pass did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub dry_run: bool,
    /// Reviews decided.
    pub reviewed: u64,
    /// Links removed.
    pub unlinked: u64,
    /// Contents whose bytes were deleted (dry: would be).
    pub deleted: u64,
    /// Their bytes, as storage reported them before deleting.
    pub bytes_reclaimed: u64,
    /// Deletions that failed (their tombstones stay, and the content is
    /// claimed again once their lease has passed).
    pub failures: u64,
    /// Every decision, in order (empty when the pass was asked to keep
    /// none: a pass over a large queue would hold them all in memory).
    pub verdicts: Vec<Verdict>,
    /// Seconds the pass took.
    pub seconds: f64,
}

/// Called with every link a review removed (the node drops what it cached).
pub type OnUnlink = Arc<dyn Fn(&RepoName, &Digest) + Send + Sync>;

/// The collector of one node. Cheap to share.
pub struct Collector {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    config: GcConfig,
    /// This collector's name in the tombstones it writes.
    id: String,
    metrics: Arc<GcMetrics>,
    on_unlink: Option<OnUnlink>,
    /// One pass at a time on this node.
    pass: tokio::sync::Mutex<()>,
}

impl Collector {
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, config: GcConfig) -> Self {
        let id = format!("gc-{}", uuid::Uuid::new_v4().simple());
        let metrics = Arc::new(GcMetrics::new(&config));
        Collector {
            meta,
            blobs,
            config,
            id,
            metrics,
            on_unlink: None,
            pass: tokio::sync::Mutex::new(()),
        }
    }

    /// Calls `f` with every link a review removes.
    pub fn on_unlink(mut self, f: OnUnlink) -> Self {
        self.on_unlink = Some(f);
        self
    }

    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    pub fn metrics(&self) -> Arc<GcMetrics> {
        Arc::clone(&self.metrics)
    }

    fn policy(&self, limit: usize, dry_run: bool) -> ReviewPolicy {
        ReviewPolicy {
            now_unix: now_unix(),
            review_delay_secs: self.config.review_delay.as_secs(),
            orphan_age_secs: self.config.orphan_age.as_secs(),
            lease_secs: self.config.lease.as_secs(),
            holder: self.id.clone(),
            limit,
            dry_run,
        }
    }

    /// Runs one pass now: decides every due review (at most `limit`) and
    /// deletes what is doomed. A dry run decides the same reviews in a
    /// transaction that is rolled back (at most `limit`, default
    /// [`DRY_RUN_LIMIT`]) and deletes nothing.
    pub async fn run_pass(
        &self,
        dry_run: bool,
        limit: Option<usize>,
    ) -> Result<PassReport, GcError> {
        self.run_pass_with(dry_run, limit, true).await
    }

    /// [`Collector::run_pass`], keeping the list of verdicts in the report
    /// only when `keep_verdicts` (the counts are there either way). The
    /// background loop keeps none: nobody reads them, and on a queue of a
    /// hundred thousand reviews they are tens of megabytes.
    pub async fn run_pass_with(
        &self,
        dry_run: bool,
        limit: Option<usize>,
        keep_verdicts: bool,
    ) -> Result<PassReport, GcError> {
        let _one = self.pass.lock().await;
        let started = std::time::Instant::now();
        let mut report = PassReport {
            dry_run,
            ..PassReport::default()
        };
        let result = if dry_run {
            self.dry_pass(limit.unwrap_or(DRY_RUN_LIMIT), &mut report)
                .await
        } else {
            self.real_pass(limit, keep_verdicts, &mut report).await
        };
        if !keep_verdicts {
            report.verdicts = Vec::new();
        }
        report.seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                if !dry_run {
                    self.metrics.pass_completed(now_unix());
                }
                // The queue's state for the metrics, read after the pass.
                self.refresh_status().await;
                Ok(report)
            }
            Err(e) => {
                self.metrics.pass_failed();
                Err(e)
            }
        }
    }

    async fn dry_pass(&self, limit: usize, report: &mut PassReport) -> Result<(), GcError> {
        let verdicts = self.meta.gc_review(&self.policy(limit, true)).await?;
        for v in &verdicts {
            report.reviewed += 1;
            match v {
                Verdict::Unlinked { .. } => report.unlinked += 1,
                Verdict::Doomed { digest, .. } => {
                    report.deleted += 1;
                    report.bytes_reclaimed += self.blobs.stat(digest).await?.unwrap_or(0);
                }
                Verdict::Kept { .. } => {}
            }
        }
        report.verdicts = verdicts;
        Ok(())
    }

    async fn real_pass(
        &self,
        limit: Option<usize>,
        keep_verdicts: bool,
        report: &mut PassReport,
    ) -> Result<(), GcError> {
        let mut left = limit.unwrap_or(usize::MAX);
        let started = tokio::time::Instant::now();
        let pace = self.config.max_reviews_per_sec.filter(|r| *r > 0);
        let most = match pace {
            Some(rate) => self.config.batch.min((rate / PACED_SLICES).max(1) as usize),
            None => self.config.batch,
        };
        while left > 0 {
            let batch = most.min(left);
            let verdicts = self.meta.gc_review(&self.policy(batch, false)).await?;
            if verdicts.is_empty() {
                break;
            }
            left = left.saturating_sub(verdicts.len());
            self.apply(&verdicts, report).await;
            if keep_verdicts {
                report.verdicts.extend(verdicts);
            }
            if let Some(rate) = pace {
                // Paced on the pass's average, so a slow batch is not
                // followed by a pause as well.
                let due = started + Duration::from_secs_f64(report.reviewed as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
        }
        Ok(())
    }

    /// Carries out one batch of verdicts: counts them, forgets unlinked
    /// links, and deletes doomed bytes under their tombstones, at most
    /// [`DELETE_CONCURRENCY`] at a time. Concurrently, because every
    /// tombstone of the batch was committed before the first deletion, and
    /// each refuses pushes of its digest until released: one after another
    /// against a slow object store, the last of a batch of 16 stood for 16
    /// deletions.
    async fn apply(&self, verdicts: &[Verdict], report: &mut PassReport) {
        let mut doomed = Vec::new();
        for verdict in verdicts {
            report.reviewed += 1;
            match verdict {
                Verdict::Unlinked { repo, digest, .. } => {
                    report.unlinked += 1;
                    self.metrics.reviewed(ReviewKind::Link, "unlinked");
                    tracing::debug!(%repo, %digest, "gc: link removed");
                    if let Some(f) = &self.on_unlink {
                        f(repo, digest);
                    }
                }
                Verdict::Kept { kind, .. } => self.metrics.reviewed(*kind, "kept"),
                Verdict::Doomed {
                    digest,
                    lease_until_unix,
                    ..
                } => {
                    self.metrics.reviewed(ReviewKind::Content, "doomed");
                    doomed.push((digest.clone(), *lease_until_unix));
                }
            }
        }
        let outcomes: Vec<_> = futures_util::stream::iter(doomed)
            .map(|(digest, lease_until)| async move {
                let outcome = self.delete(&digest, lease_until).await;
                (digest, outcome)
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        for (digest, outcome) in outcomes {
            match outcome {
                Ok(Some(bytes)) => {
                    report.deleted += 1;
                    report.bytes_reclaimed += bytes;
                    self.metrics.deleted(bytes);
                }
                Ok(None) => {}
                Err(e) => {
                    report.failures += 1;
                    self.metrics.delete_failed();
                    tracing::warn!(%digest, error = %e,
                        "gc: deleting bytes failed; the tombstone stays and the content is claimed again after its lease");
                }
            }
        }
    }

    /// Deletes the bytes of `digest` under this collector's tombstone, then
    /// releases it; the bytes deleted (`None`: the lease ran too short to
    /// start, and the tombstone is left for a later claim).
    async fn delete(&self, digest: &Digest, lease_until: u64) -> Result<Option<u64>, GcError> {
        if now_unix().saturating_add(LEASE_MARGIN_SECS) >= lease_until {
            tracing::warn!(%digest, "gc: lease too short to delete; left for a later claim");
            return Ok(None);
        }
        let size = self.blobs.stat(digest).await?.unwrap_or(0);
        match self.blobs.delete(digest).await {
            Ok(()) | Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%digest, bytes = size, "gc: content deleted");
        // Released as soon as metadata lets it: a tombstone left standing
        // refuses pushes of its digest until its lease passes. Retried while
        // the lease still has its margin; past that another collector may
        // claim it anyway.
        let mut pause = RELEASE_PAUSE;
        loop {
            match self.meta.gc_release(digest, &self.id).await {
                Ok(true) => break,
                Ok(false) => {
                    tracing::warn!(%digest, "gc: the tombstone was no longer this collector's");
                    break;
                }
                Err(e) if now_unix().saturating_add(LEASE_MARGIN_SECS) < lease_until => {
                    tracing::debug!(%digest, error = %e, "gc: releasing a tombstone; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RELEASE_PAUSE_MAX);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(size))
    }

    /// Lists the blob store and queues an orphan review of every digest
    /// metadata does not know; how many it queued.
    pub async fn scan_orphans(&self) -> Result<u64, GcError> {
        let stored = self.blobs.list().await?;
        let queued = self.meta.gc_enqueue_orphans(&stored, now_unix()).await?;
        if queued > 0 {
            tracing::info!(
                queued,
                stored = stored.len(),
                "gc: storage holds bytes metadata does not know; queued for review"
            );
        }
        Ok(queued)
    }

    /// The queue now (asks metadata).
    pub async fn status(&self) -> Result<GcStatus, GcError> {
        let status = self.meta.gc_status(&self.policy(0, false)).await?;
        self.metrics.set_status(&status, now_unix());
        Ok(status)
    }

    async fn refresh_status(&self) {
        if let Err(e) = self.status().await {
            tracing::debug!(error = %e, "gc: reading the queue's state");
        }
        match self
            .meta
            .largest_namespaces(metrics::NAMESPACES_EXPORTED)
            .await
        {
            Ok(n) => self.metrics.set_namespaces(n),
            Err(e) => tracing::debug!(error = %e, "gc: reading namespace usage"),
        }
    }

    /// Checks that storage and metadata agree (see [`CheckReport`]).
    pub async fn check(&self) -> Result<CheckReport, GcError> {
        check::run(
            &*self.meta,
            &*self.blobs,
            &self.policy(0, false),
            &self.config,
        )
        .await
    }

    /// Runs passes every interval and orphan scans every scan interval,
    /// until the runtime stops. A failed pass is logged and counted; the
    /// next one tries again.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            self.refresh_status().await;
            let mut next_scan = tokio::time::Instant::now() + self.config.orphan_scan_interval;
            loop {
                tokio::time::sleep(self.config.interval).await;
                match self.run_pass_with(false, None, false).await {
                    Ok(r) if r.reviewed > 0 => tracing::info!(
                        reviewed = r.reviewed,
                        unlinked = r.unlinked,
                        deleted = r.deleted,
                        bytes = r.bytes_reclaimed,
                        failures = r.failures,
                        seconds = r.seconds,
                        "gc: pass done"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "gc: pass failed"),
                }
                if tokio::time::Instant::now() >= next_scan {
                    next_scan = tokio::time::Instant::now() + self.config.orphan_scan_interval;
                    if let Err(e) = self.scan_orphans().await {
                        tracing::warn!(error = %e, "gc: orphan scan failed");
                    }
                }
            }
        })
    }
}
