//! Per-tenant traffic on this node: the write fence as the registry port
//! applies it, the writes in flight a fence waits for, and the per-tenant
//! series the fleet service scrapes to learn each tenant's load.
//!
//! Owns: [`TenantTraffic`] (counters per tenant of the directory, the
//! write guard, the cached stored-bytes figures and their refresher) and
//! the `wharf_tenant_*` metric families.
//!
//! Must never: label a series with a name that is not a tenant of the
//! directory (cardinality stays bounded by the directory, whatever paths
//! clients send); query the metadata store while rendering metrics (stored
//! bytes come from a cache refreshed in the background); or let a write
//! that passed the fence check go uncounted: the count is raised before
//! the fence is read, so a write the fence did not stop is in
//! `writes_in_flight` until it finishes.
//!
//! # What counts
//!
//! - A request belongs to a tenant when its repository's namespace is one
//!   (requests without a repository, such as `/v2/` and the catalog, are
//!   not labelled); it is counted once its credentials are accepted (a
//!   `401` is not the tenant's load). `class="pull"` counts `GET` and `HEAD`, `class="push"`
//!   every other method.
//! - Bytes are request and response body bytes of those requests.
//! - A *write* is what the fence refuses: upload start (`POST`, mounts
//!   included), upload `PATCH` and `PUT`, manifest `PUT`, and manifest,
//!   tag and blob `DELETE`. Reading an upload's status and cancelling it
//!   are not writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::Method;
use wharf_core::RegistryError;
use wharf_meta::MetaStore;
use wharf_telemetry::Exposition;
use wharf_tenants::Directory;

use crate::routes::Endpoint;

/// How often stored bytes are read from metadata by default.
pub const STORED_REFRESH: Duration = Duration::from_secs(15);

/// The counters of one tenant on this node.
#[derive(Debug, Default)]
pub struct TenantCounters {
    /// `GET` and `HEAD` requests.
    pub pulls: AtomicU64,
    /// Every other request.
    pub pushes: AtomicU64,
    /// Request body bytes received.
    pub bytes_in: AtomicU64,
    /// Response body bytes sent.
    pub bytes_out: AtomicU64,
    /// Writes that passed the fence check and have not finished.
    pub writes_in_flight: AtomicU64,
}

/// Per-tenant traffic of one node; shared by the registry port (which
/// counts), the admin API (fence status) and the admin port (metrics).
#[derive(Default)]
pub struct TenantTraffic {
    /// The directory that says which names are tenants and which are
    /// fenced; `None`: nothing is counted or fenced.
    directory: Option<Directory>,
    counters: RwLock<HashMap<String, Arc<TenantCounters>>>,
    /// Bytes each tenant stores, as metadata last reported them.
    stored: Mutex<Stored>,
}

#[derive(Default)]
struct Stored {
    bytes: HashMap<String, u64>,
    read_at: Option<Instant>,
}

/// Holds one write in flight; dropped when the write is done.
pub struct WriteGuard(Arc<TenantCounters>);

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.0.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether `method` on `endpoint` is a write the fence refuses.
pub fn is_write(endpoint: &Endpoint, method: &Method) -> bool {
    match endpoint {
        Endpoint::Manifest(..) => matches!(*method, Method::PUT | Method::DELETE),
        Endpoint::Blob(..) => *method == Method::DELETE,
        Endpoint::Uploads(_) => *method == Method::POST,
        Endpoint::Upload(..) => matches!(*method, Method::PATCH | Method::PUT),
        Endpoint::Base | Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::Referrers(..) => false,
    }
}

impl TenantTraffic {
    /// Traffic of the tenants of `directory`.
    pub fn new(directory: Directory) -> TenantTraffic {
        TenantTraffic {
            directory: Some(directory),
            ..TenantTraffic::default()
        }
    }

    /// The counters of `tenant`, if it is a tenant of the directory.
    pub fn counters(&self, tenant: &str) -> Option<Arc<TenantCounters>> {
        let directory = self.directory.as_ref()?;
        if let Some(c) = self.read_counters().get(tenant) {
            return Some(Arc::clone(c));
        }
        if !directory.knows_tenant(tenant) {
            return None;
        }
        let mut all = self
            .counters
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Arc::clone(all.entry(tenant.to_string()).or_default()))
    }

    fn read_counters(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<TenantCounters>>> {
        self.counters
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a write of `tenant` (whose counters are `counters`): counted
    /// in flight first, then refused with `503 UNAVAILABLE` and the fence's
    /// `Retry-After` if the tenant is fenced.
    pub fn begin_write(
        &self,
        tenant: &str,
        counters: &Arc<TenantCounters>,
    ) -> Result<WriteGuard, RegistryError> {
        // SeqCst on both sides: a fence GET that sees the fence in this
        // node's snapshot and then reads the count sees this write, unless
        // this write's fence check below sees the fence too.
        counters.writes_in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = WriteGuard(Arc::clone(counters));
        let fence = self.directory.as_ref().and_then(|d| d.fence(tenant));
        match fence {
            Some(f) => Err(RegistryError::Unavailable {
                reason: format!(
                    "tenant {tenant} is being moved to another cell and takes no writes \
                     for a few seconds; pulls keep working; retry the write after \
                     {} s",
                    f.retry_after_secs
                ),
                retry_after: f.retry_after_secs,
            }),
            None => Ok(guard),
        }
    }

    /// Writes of `tenant` in flight on this node.
    pub fn writes_in_flight(&self, tenant: &str) -> u64 {
        self.read_counters()
            .get(tenant)
            .map_or(0, |c| c.writes_in_flight.load(Ordering::SeqCst))
    }

    /// Reads every tenant's stored bytes from `meta`: one query for all.
    pub async fn refresh_stored(&self, meta: &dyn MetaStore) -> Result<(), wharf_meta::MetaError> {
        let Some(directory) = &self.directory else {
            return Ok(());
        };
        let tenants = directory.tenants();
        // Largest first: asking for a margin beyond the tenants' count
        // leaves room for namespaces that are not tenants.
        let n = tenants.len().saturating_mul(2).saturating_add(64);
        let largest = meta.largest_namespaces(n).await?;
        let mut bytes: HashMap<String, u64> = largest.into_iter().collect();
        bytes.retain(|ns, _| tenants.iter().any(|t| &t.name == ns));
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored.bytes = bytes;
        stored.read_at = Some(Instant::now());
        Ok(())
    }

    /// Refreshes stored bytes every `every` until `self` is the last
    /// reference left.
    pub fn spawn_stored_refresher(
        self: &Arc<Self>,
        meta: Arc<dyn MetaStore>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = this.refresh_stored(&*meta).await {
                    tracing::debug!(error = %e, "reading tenants' stored bytes failed");
                }
            }
        })
    }

    /// The `wharf_tenant_*` families, one series per tenant of the
    /// directory (counters of tenants no longer in it are dropped here).
    pub fn render(&self, out: &mut Exposition) {
        let Some(directory) = &self.directory else {
            return;
        };
        let tenants = directory.tenants();
        {
            let mut all = self
                .counters
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            all.retain(|name, _| tenants.iter().any(|t| &t.name == name));
        }
        let all = self.read_counters();
        let zero = TenantCounters::default();
        let of = |name: &str| all.get(name).map_or(&zero, |c| &**c);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        for t in &tenants {
            for (class, n) in [("pull", &of(&t.name).pulls), ("push", &of(&t.name).pushes)] {
                out.counter(
                    "wharf_tenant_requests_total",
                    "Requests for a tenant's repositories on this node: pull (GET, HEAD) or push (every other method).",
                    &[("tenant", &t.name), ("class", class)],
                    load(n),
                );
            }
        }
        for t in &tenants {
            let c = of(&t.name);
            for (direction, n) in [("in", &c.bytes_in), ("out", &c.bytes_out)] {
                out.counter(
                    "wharf_tenant_bytes_total",
                    "Body bytes of a tenant's requests on this node: in (request bodies) or out (response bodies).",
                    &[("tenant", &t.name), ("direction", direction)],
                    load(n),
                );
            }
        }
        let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if stored.read_at.is_some() {
            for t in &tenants {
                out.gauge(
                    "wharf_tenant_stored_bytes",
                    "Bytes a tenant stores in this cell (distinct blobs and manifests), as metadata last reported them (read every ~15 s).",
                    &[("tenant", &t.name)],
                    stored.bytes.get(&t.name).copied().unwrap_or(0) as f64,
                );
            }
        }
        for t in &tenants {
            out.gauge(
                "wharf_tenant_fenced",
                "1 while this node's directory holds a write fence for the tenant (it is being moved), else 0.",
                &[("tenant", &t.name)],
                if t.fence.is_some_and(|f| directory.fence_stands(&f)) { 1.0 } else { 0.0 },
            );
        }
        for t in &tenants {
            out.gauge(
                "wharf_tenant_writes_in_flight",
                "A tenant's writes on this node that passed the fence check and have not finished.",
                &[("tenant", &t.name)],
                load(&of(&t.name).writes_in_flight),
            );
        }
    }
}
