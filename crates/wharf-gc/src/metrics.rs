//! The collector's metrics: counters the passes bump, and the queue's state
//! as the last pass (or status call) read it, so that a scrape is answered
//! from memory and never waits on metadata.
//!
//! Must never: grow with client input. Namespaces are exported for the
//! [`NAMESPACES_EXPORTED`] largest only: without authentication anyone can
//! create namespaces.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use wharf_meta::gc::{GcStatus, ReviewKind};
use wharf_telemetry::Exposition;

use crate::GcConfig;

/// How many namespaces `wharf_namespace_stored_bytes` covers.
pub const NAMESPACES_EXPORTED: usize = 500;

const KINDS: [ReviewKind; 3] = [ReviewKind::Link, ReviewKind::Content, ReviewKind::Orphan];
const VERDICTS: [&str; 3] = ["unlinked", "kept", "doomed"];

fn kind_name(k: ReviewKind) -> &'static str {
    match k {
        ReviewKind::Link => "link",
        ReviewKind::Content => "content",
        ReviewKind::Orphan => "orphan",
    }
}

/// Counters and gauges of one node's collector.
pub struct GcMetrics {
    enabled: bool,
    review_delay_secs: u64,
    interval_secs: u64,
    /// Reviews by (kind, verdict), indexed as `KINDS` × `VERDICTS`.
    reviews: [AtomicU64; 9],
    deleted: AtomicU64,
    bytes: AtomicU64,
    delete_failures: AtomicU64,
    passes: AtomicU64,
    pass_failures: AtomicU64,
    last_pass_unix: AtomicU64,
    status: Mutex<Option<(GcStatus, u64)>>,
    namespaces: Mutex<Vec<(String, u64)>>,
}

impl GcMetrics {
    pub(crate) fn new(config: &GcConfig) -> GcMetrics {
        GcMetrics {
            enabled: config.enabled,
            review_delay_secs: config.review_delay.as_secs(),
            interval_secs: config.interval.as_secs(),
            reviews: Default::default(),
            deleted: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            delete_failures: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            pass_failures: AtomicU64::new(0),
            last_pass_unix: AtomicU64::new(0),
            status: Mutex::new(None),
            namespaces: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn reviewed(&self, kind: ReviewKind, verdict: &str) {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let v = VERDICTS.iter().position(|x| *x == verdict).unwrap_or(1);
        self.reviews[k * 3 + v].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deleted(&self, bytes: u64) {
        self.deleted.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn delete_failed(&self) {
        self.delete_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn pass_completed(&self, now: u64) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.last_pass_unix.store(now, Ordering::Relaxed);
    }

    pub(crate) fn pass_failed(&self) {
        self.pass_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_status(&self, status: &GcStatus, now: u64) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some((status.clone(), now));
    }

    pub(crate) fn set_namespaces(&self, n: Vec<(String, u64)>) {
        *self.namespaces.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// Reviews decided so far with `verdict`, of every kind.
    pub fn reviews_with(&self, verdict: &str) -> u64 {
        let v = VERDICTS.iter().position(|x| *x == verdict).unwrap_or(1);
        (0..3)
            .map(|k| self.reviews[k * 3 + v].load(Ordering::Relaxed))
            .sum()
    }

    /// Writes every series into `out`.
    pub fn render(&self, out: &mut Exposition) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.gauge(
            "wharf_gc_enabled",
            "1 when the garbage collector runs on this node.",
            &[],
            if self.enabled { 1.0 } else { 0.0 },
        );
        out.gauge(
            "wharf_gc_review_delay_seconds",
            "How long links and content stay untouched before they are reviewed.",
            &[],
            self.review_delay_secs as f64,
        );
        out.gauge(
            "wharf_gc_interval_seconds",
            "Pause between garbage-collection passes.",
            &[],
            self.interval_secs as f64,
        );
        for (k, kind) in KINDS.iter().enumerate() {
            for (v, verdict) in VERDICTS.iter().enumerate() {
                out.counter(
                    "wharf_gc_reviews_total",
                    "Reviews this node decided, by kind and verdict.",
                    &[("kind", kind_name(*kind)), ("verdict", verdict)],
                    load(&self.reviews[k * 3 + v]),
                );
            }
        }
        out.counter(
            "wharf_gc_blobs_deleted_total",
            "Contents (blobs and manifests) whose bytes this node deleted.",
            &[],
            load(&self.deleted),
        );
        out.counter(
            "wharf_gc_bytes_reclaimed_total",
            "Bytes this node deleted from blob storage.",
            &[],
            load(&self.bytes),
        );
        out.counter(
            "wharf_gc_delete_failures_total",
            "Storage deletions that failed (retried after the tombstone's lease).",
            &[],
            load(&self.delete_failures),
        );
        out.counter(
            "wharf_gc_passes_total",
            "Garbage-collection passes completed on this node.",
            &[],
            load(&self.passes),
        );
        out.counter(
            "wharf_gc_pass_failures_total",
            "Garbage-collection passes that ended with an error.",
            &[],
            load(&self.pass_failures),
        );
        out.gauge(
            "wharf_gc_last_pass_timestamp_seconds",
            "When the last pass on this node completed (0: none yet).",
            &[],
            load(&self.last_pass_unix),
        );
        let status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((s, at)) = status {
            out.gauge(
                "wharf_gc_queue_depth",
                "Reviews queued, due or not (shared by the cell's nodes).",
                &[],
                s.queued as f64,
            );
            out.gauge(
                "wharf_gc_reviews_due",
                "Reviews due now.",
                &[],
                s.due as f64,
            );
            out.gauge(
                "wharf_gc_oldest_due_age_seconds",
                "How long the oldest due review has been overdue (0: none due).",
                &[],
                s.oldest_due_unix.map_or(0, |d| at.saturating_sub(d)) as f64,
            );
            out.gauge(
                "wharf_gc_tombstones",
                "Deletions in progress (or left by a dead collector until their lease).",
                &[],
                s.tombstones as f64,
            );
        }
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (ns, bytes) in &namespaces {
            out.gauge(
                "wharf_namespace_stored_bytes",
                "Bytes a tenant namespace stores, each distinct digest once (largest namespaces only).",
                &[("namespace", ns)],
                *bytes as f64,
            );
        }
    }
}
