//! The move executor: copies a tenant from one cell to another through the
//! nodes' admin APIs, and fences, verifies and hands over to the route flip.
//!
//! A move, as [`HttpMover`] runs it (the contract is [`crate::executor`]'s):
//!
//! 1. **pre-copy** while the source stays live: the source's export (one
//!    NDJSON record per tenant, user, robot, repository, blob link,
//!    manifest and tag), every blob the destination lacks copied byte for
//!    byte (content-addressed: the destination checks the digest, a copy is
//!    idempotent) under a garbage-collection hold named after the move,
//!    then the records imported (`mode=sync`: the destination becomes an
//!    exact mirror, deletions included);
//! 2. **deltas**: the same pass again until one changes at most
//!    [`MoverConfig::small_delta`] records (or [`MoverConfig::max_passes`]);
//! 3. **fence**: the tenant's writes refused on the source (`503` with
//!    `Retry-After`, pulls untouched), and every source node asked until it
//!    has the fence and no write of the tenant in flight. The fence is
//!    leased ([`MoverConfig::fence_lease`]) and renewed every third of its
//!    lease while the move holds it: if the service dies, the fence lapses
//!    by itself seconds later and the tenant writes at home again; if the
//!    renewals fail for most of a lease, the move stops and lowers it;
//! 4. **final delta and check**: one more pass, then both cells' exports
//!    compared record for record (every manifest, tag and blob by digest);
//!    any difference lowers the fence and fails the move;
//! 5. **flip**: the service makes the destination the tenant's home and
//!    routes it there; the destination's holds are released;
//! 6. **grace**: the source keeps serving reads for stragglers (its fence
//!    stays up, so nothing can be written where it would be lost), then
//!    everything of the tenant is removed from it.
//!
//! A move resumed after the service restarts starts over from what the
//! cells hold (every pass is idempotent). Before the flip it lowers a
//! fence an earlier run left up (if its lease has not lapsed already) and
//! pre-copies again, against what the destination holds, before a new
//! fence: no fence lasts the service's downtime, and each lasts about a
//! lease at most when the service dies under it. Just before the flip the
//! lease is stretched to [`MoverConfig::flip_lease`] so that the flip ends
//! inside it; after the flip the source's fence stands without a lease,
//! and a resumed move only finishes the grace and the removal. A move
//! cancelled before its flip, or failed before it, is rolled back
//! ([`HttpMover::rollback`]): fence down on the source, the destination's
//! partial copy and holds removed.
//!
//! Owns: the copy, the fence's timing, the check, the removal. Must never:
//! decide where a tenant goes, flip a route itself, remove the source's
//! copy before the flip has been recorded, or remove the destination's copy
//! after it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::executor::{CellEndpoints, MoveAborted, MoveControl, MoveExecutor, MoveTask};

/// How moves are run.
#[derive(Clone, Debug)]
pub struct MoverConfig {
    /// The nodes' admin token (plain), sent as `Authorization: Bearer`.
    pub node_token: Option<String>,
    /// A delta pass changing at most this many records ends the pre-copy.
    pub small_delta: u64,
    /// Pre-copy passes at most before fencing anyway.
    pub max_passes: u32,
    /// What fenced clients are told to wait (`Retry-After`).
    pub fence_retry_after: u32,
    /// How long to wait for every source node to have the fence and no
    /// write in flight before giving up on this attempt.
    pub fence_settle: Duration,
    /// The fence's lease: the move renews it every third of it while it
    /// holds the fence, and a fence nobody renews lapses by itself, so a
    /// service that dies mid-move cannot keep the tenant's writes refused.
    pub fence_lease: Duration,
    /// The lease given just before the route flip (which must not be
    /// interrupted once started), so that the flip ends inside it; after
    /// the flip the source's fence stands without a lease until removal.
    pub flip_lease: Duration,
    /// How long the source keeps serving reads after the flip.
    pub grace: Duration,
    /// Blobs copied at once.
    pub blob_concurrency: usize,
    /// Blob copies started per second at most (0: no limit), so a move's
    /// pre-copy takes only its share of the source's and the
    /// destination's capacity.
    pub max_blobs_per_sec: u32,
    /// Connect timeout of every call.
    pub connect_timeout: Duration,
    /// Timeout of a call that is not a blob copy or an export/import.
    pub call_timeout: Duration,
    /// Timeout of one blob copy, export or import.
    pub transfer_timeout: Duration,
}

impl Default for MoverConfig {
    fn default() -> Self {
        MoverConfig {
            node_token: None,
            small_delta: 20,
            max_passes: 5,
            fence_retry_after: 2,
            fence_settle: Duration::from_secs(10),
            fence_lease: Duration::from_secs(3),
            flip_lease: Duration::from_secs(10),
            grace: Duration::from_secs(60),
            blob_concurrency: 4,
            max_blobs_per_sec: 0,
            connect_timeout: Duration::from_secs(3),
            call_timeout: Duration::from_secs(10),
            transfer_timeout: Duration::from_secs(600),
        }
    }
}

/// The executor that copies over HTTP.
pub struct HttpMover {
    config: MoverConfig,
    client: reqwest::Client,
    /// When the next blob copy may start (the rate limit), shared by every
    /// move this executor runs.
    next_copy: tokio::sync::Mutex<tokio::time::Instant>,
}

/// What one copy pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Records in the source's export.
    pub records: u64,
    /// Blobs the destination lacked and got.
    pub blobs_copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Records the import created, updated or deleted.
    pub changed: u64,
    /// Records left for the next pass: a manifest whose blobs or children
    /// the export did not list yet, a tag of such a manifest.
    pub deferred: u64,
}

impl PassStats {
    /// The size of the pass's delta: what it had to change.
    pub fn delta(&self) -> u64 {
        self.blobs_copied + self.changed + self.deferred
    }

    fn json(&self) -> Value {
        json!({
            "records": self.records,
            "blobs_copied": self.blobs_copied,
            "bytes_copied": self.bytes_copied,
            "changed": self.changed,
            "deferred": self.deferred,
        })
    }
}

/// What one move's passes remember from the one before: the records the
/// destination was last given, and the blobs known to be there (held by
/// the move, so they stay). A pass then checks and sends only what changed.
#[derive(Default)]
pub struct PassMemory {
    /// The whole records of the last pass's export, as imported.
    last: Option<BTreeSet<String>>,
    /// Blob digests known to be on the destination.
    on_destination: BTreeSet<String>,
}

/// A failed step: the message says which cell, which call and why.
type Step<T> = Result<T, String>;

impl HttpMover {
    /// An executor with `config`.
    pub fn new(config: MoverConfig) -> Result<HttpMover, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("mover HTTP client: {e}"))?;
        Ok(HttpMover {
            config,
            client,
            next_copy: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    /// Waits for this copy's turn under `max_blobs_per_sec`.
    async fn pace(&self) {
        if self.config.max_blobs_per_sec == 0 {
            return;
        }
        let gap = Duration::from_secs(1) / self.config.max_blobs_per_sec;
        let start = {
            let mut next = self.next_copy.lock().await;
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + gap;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    fn cell<'a>(&'a self, cell: &'a CellEndpoints) -> Cell<'a> {
        Cell { mover: self, cell }
    }

    /// One copy pass from `from` to `to` (steps 1, 2 and 4 of the module
    /// doc). `paced`: blob copies keep to `max_blobs_per_sec`: the bulk
    /// pre-copy only; the deltas run at full speed so that they catch up
    /// with a tenant that keeps pushing, and the fenced pass must be short.
    pub async fn copy_pass(
        &self,
        tenant: &str,
        from: &CellEndpoints,
        to: &CellEndpoints,
        hold: &str,
        paced: bool,
        memory: &mut PassMemory,
    ) -> Step<PassStats> {
        let (src, dst) = (self.cell(from), self.cell(to));
        // An export taken while the tenant pushes is not a snapshot: a tag
        // can name a manifest pushed after the manifests were listed. What
        // is not whole yet waits for the next pass (under the fence the
        // export is whole, and the check compares everything).
        let (export, deferred) = whole_records(src.export(tenant).await?);
        let mut stats = PassStats {
            records: export.len() as u64,
            deferred,
            ..PassStats::default()
        };
        let blobs: BTreeMap<String, u64> = export
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r["kind"] == "blob")
            .filter_map(|r| Some((r["digest"].as_str()?.to_string(), r["size"].as_u64()?)))
            .collect();
        let unknown = blobs
            .into_iter()
            .filter(|(d, _)| !memory.on_destination.contains(d));
        let copied: Vec<(String, Option<u64>)> = stream::iter(unknown)
            .map(|(digest, size)| {
                let (src, dst) = (&src, &dst);
                async move {
                    if dst.has_blob(&digest).await? {
                        return Ok((digest, None));
                    }
                    if paced {
                        self.pace().await;
                    }
                    src.copy_blob(&digest, dst, hold).await?;
                    Ok::<_, String>((digest, Some(size)))
                }
            })
            .buffer_unordered(self.config.blob_concurrency.max(1))
            .try_collect()
            .await?;
        for (digest, size) in copied {
            if let Some(size) = size {
                stats.blobs_copied += 1;
                stats.bytes_copied += size;
            }
            memory.on_destination.insert(digest);
        }
        let now: BTreeSet<String> = export.iter().cloned().collect();
        stats.changed = match memory
            .last
            .as_ref()
            .and_then(|last| changes_only(last, &export))
        {
            Some(diff) => dst.import(tenant, &diff, "merge").await?,
            None => dst.import(tenant, &export, "sync").await?,
        };
        memory.last = Some(now);
        Ok(stats)
    }

    /// Puts up (or renews) the fence on `cell`, leased for `lease` or,
    /// without, standing until taken down.
    async fn put_fence(
        &self,
        tenant: &str,
        cell: &CellEndpoints,
        lease: Option<Duration>,
    ) -> Step<()> {
        let mut body = json!({"retry_after_secs": self.config.fence_retry_after});
        if let Some(lease) = lease {
            body["lease_secs"] = json!(lease.as_secs().max(1));
        }
        self.cell(cell)
            .any(reqwest::Method::PUT, &fence_path(tenant), Some(body))
            .await
            .map(drop)
    }

    /// Waits until every node of `cell` has the fence and no write of the
    /// tenant in flight; how long that took.
    async fn settle(&self, tenant: &str, cell: &CellEndpoints) -> Step<Duration> {
        let c = self.cell(cell);
        let started = Instant::now();
        let deadline = started + self.config.fence_settle;
        for node in &cell.nodes {
            loop {
                let state = c
                    .call(node, reqwest::Method::GET, &fence_path(tenant), None)
                    .await;
                let settled = match &state {
                    Ok(v) => {
                        v["fenced"] == true
                            && v["applied"] == true
                            && v["writes_in_flight"].as_u64() == Some(0)
                    }
                    Err(_) => false,
                };
                if settled {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "cell {}: node {node} did not settle the fence within {:?}: {}",
                        cell.id,
                        self.config.fence_settle,
                        match state {
                            Ok(v) => v.to_string(),
                            Err(e) => e,
                        }
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(started.elapsed())
    }

    /// Runs `work` while renewing the fence's lease on `cell` every third
    /// of it (`since`: when the request that last put the fence up was
    /// sent). Renewals that fail until the lease could end before the
    /// next one succeeds stop `work` with [`Stop::Failed`]: from then on
    /// the source may take writes the final pass would miss.
    async fn keeping_fence<T>(
        &self,
        tenant: &str,
        cell: &CellEndpoints,
        since: Instant,
        work: impl std::future::Future<Output = Result<T, Stop>>,
    ) -> Result<T, Stop> {
        let lease = self.config.fence_lease;
        let every = lease / 3;
        let renew = async {
            let mut last_ok = since;
            loop {
                tokio::time::sleep(every).await;
                let sent = Instant::now();
                let error =
                    match tokio::time::timeout(every, self.put_fence(tenant, cell, Some(lease)))
                        .await
                    {
                        Ok(Ok(())) => {
                            last_ok = sent;
                            continue;
                        }
                        Ok(Err(e)) => e,
                        Err(_) => format!("no answer within {every:?}"),
                    };
                tracing::warn!(tenant, cell = cell.id, %error, "move: cannot renew the fence's lease");
                if last_ok.elapsed() + every >= lease {
                    return format!(
                        "the fence's lease on cell {} was not renewed for {:?} (lease {lease:?}): {error}",
                        cell.id,
                        last_ok.elapsed()
                    );
                }
            }
        };
        tokio::select! {
            biased;
            out = work => out,
            lost = renew => Err(Stop::Failed(lost)),
        }
    }

    async fn unfence(&self, tenant: &str, cell: &CellEndpoints) -> Step<()> {
        self.cell(cell)
            .any(reqwest::Method::DELETE, &fence_path(tenant), None)
            .await
            .map(drop)
    }

    /// Whether both cells hold the same records of `tenant` (step 4). The
    /// difference, if any, as a short description.
    pub async fn compare(
        &self,
        tenant: &str,
        from: &CellEndpoints,
        to: &CellEndpoints,
    ) -> Step<Option<String>> {
        let a: BTreeSet<String> = self.cell(from).export(tenant).await?.into_iter().collect();
        let b: BTreeSet<String> = self.cell(to).export(tenant).await?.into_iter().collect();
        if a == b {
            return Ok(None);
        }
        let only_a: Vec<_> = a.difference(&b).take(3).collect();
        let only_b: Vec<_> = b.difference(&a).take(3).collect();
        Ok(Some(format!(
            "{} records only on the source (e.g. {only_a:?}), {} only on the destination (e.g. {only_b:?})",
            a.difference(&b).count(),
            b.difference(&a).count(),
        )))
    }

    /// Removes the destination's partial copy of a move that will not
    /// happen: fence down on the source, holds released and the tenant's
    /// content and record removed on the destination.
    pub async fn rollback(&self, task: &MoveTask) -> Step<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.unfence(&task.tenant, &task.from).await {
            errors.push(e);
        }
        let dst = self.cell(&task.to);
        if let Err(e) = dst.release_holds(&hold_name(task.id)).await {
            errors.push(e);
        }
        if let Err(e) = dst.remove_tenant(&task.tenant).await {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The fenced pass and the check after it.
    async fn final_pass(
        &self,
        tenant: &str,
        from: &CellEndpoints,
        to: &CellEndpoints,
        hold: &str,
        memory: &mut PassMemory,
    ) -> Step<(PassStats, Option<String>)> {
        let stats = self
            .copy_pass(tenant, from, to, hold, false, memory)
            .await?;
        let difference = self.compare(tenant, from, to).await?;
        Ok((stats, difference))
    }

    /// Whether the source's directory holds `tenant`'s fence (one node
    /// answers for the cell: the fence is in the tenant's record there).
    async fn fenced_on(&self, tenant: &str, cell: &CellEndpoints) -> bool {
        self.cell(cell)
            .any(reqwest::Method::GET, &fence_path(tenant), None)
            .await
            .is_ok_and(|v| v["fenced"] == true)
    }

    /// Steps 1-5: everything up to and including the flip. How long the
    /// tenant's writes were fenced (from raising the fence to the flip).
    async fn before_flip(&self, task: &MoveTask, control: &MoveControl) -> Result<Duration, Stop> {
        let hold = hold_name(task.id);
        let mut memory = PassMemory::default();
        let fence_recorded = control.fence_recorded().await?.is_some();
        if fence_recorded {
            // Resumed after a restart in its fenced state. The fence comes
            // down (if its lease has not lapsed already) and goes up anew
            // after a delta pass, so that no fence lasts the service's
            // downtime plus a whole final pass.
            let up = self.fenced_on(&task.tenant, &task.from).await;
            tracing::info!(move_id = task.id, tenant = %task.tenant, fence_still_up = up,
                "move: resumed after its fence; the fence comes down for a delta pass and goes up anew");
            // What the destination holds stands for what earlier passes
            // gave it, so the next pass sends only the difference.
            memory = self.cell(&task.to).memory_of(&task.tenant).await;
        }
        // A fence left up by an earlier attempt comes down first: the
        // pre-copy runs with the tenant writable.
        self.unfence(&task.tenant, &task.from)
            .await
            .map_err(Stop::Failed)?;
        if fence_recorded {
            control.fence_down().await?;
        }
        self.pre_copy(task, control, &hold, &mut memory).await?;
        self.fenced_pass(task, control, &hold, &mut memory).await
    }

    /// Steps 1 and 2: the copy passes until the delta is small.
    async fn pre_copy(
        &self,
        task: &MoveTask,
        control: &MoveControl,
        hold: &str,
        memory: &mut PassMemory,
    ) -> Result<(), Stop> {
        let mut pass = 0u32;
        loop {
            pass += 1;
            let stats = self
                .copy_pass(&task.tenant, &task.from, &task.to, hold, pass == 1, memory)
                .await
                .map_err(Stop::Failed)?;
            let step = if pass == 1 { "pre-copy" } else { "delta" };
            let mut counters = stats.json();
            counters["pass"] = json!(pass);
            control.step(step, counters).await?;
            tracing::info!(move_id = task.id, tenant = %task.tenant, pass,
                delta = stats.delta(), records = stats.records, "move: copy pass");
            if stats.delta() <= self.config.small_delta || pass >= self.config.max_passes {
                return Ok(());
            }
        }
    }

    /// Steps 3 to 5: the fence, the final pass, the check and the flip. The fence's
    /// lease is renewed throughout; just before the flip it is stretched
    /// to [`MoverConfig::flip_lease`], so that the flip ends inside it.
    async fn fenced_pass(
        &self,
        task: &MoveTask,
        control: &MoveControl,
        hold: &str,
        memory: &mut PassMemory,
    ) -> Result<Duration, Stop> {
        let fence_raised = Instant::now();
        let (tenant, from) = (&task.tenant, &task.from);
        let fenced = self
            .put_fence(tenant, from, Some(self.config.fence_lease))
            .await;
        let checked = match fenced {
            Ok(()) => {
                self.keeping_fence(
                    tenant,
                    from,
                    fence_raised,
                    self.final_under_fence(task, control, hold, memory),
                )
                .await
            }
            Err(e) => Err(Stop::Failed(e)),
        };
        match checked {
            Ok(()) => {}
            // The caller rolls a cancel back and lowers the fence when the
            // fleet database is lost.
            Err(Stop::Aborted(a)) => return Err(Stop::Aborted(a)),
            Err(Stop::Failed(e)) => {
                let _ = self.unfence(tenant, from).await;
                return Err(Stop::Failed(e));
            }
        }
        if let Err(e) = self
            .put_fence(tenant, from, Some(self.config.flip_lease))
            .await
        {
            let _ = self.unfence(tenant, from).await;
            return Err(Stop::Failed(format!(
                "cannot stretch the fence's lease for the flip: {e}"
            )));
        }
        let flipping = Instant::now();
        control.flip_route().await?;
        if flipping.elapsed() >= self.config.flip_lease {
            tracing::error!(move_id = task.id, %tenant, took = ?flipping.elapsed(),
                "move: the route flip outlasted the fence's lease; writes on the source after it may be lost");
        }
        Ok(fence_raised.elapsed())
    }

    /// Under the fence: it settles on every source node, then the final
    /// pass and the check, recorded as `verified` when both cells agree.
    async fn final_under_fence(
        &self,
        task: &MoveTask,
        control: &MoveControl,
        hold: &str,
        memory: &mut PassMemory,
    ) -> Result<(), Stop> {
        let settle = self
            .settle(&task.tenant, &task.from)
            .await
            .map_err(Stop::Failed)?;
        control.fence_up().await?;
        let fenced = Instant::now();
        let mut check = self
            .final_pass(&task.tenant, &task.from, &task.to, hold, memory)
            .await;
        if matches!(check, Ok((_, Some(_)))) {
            // The changes-only pass left a difference: once more with the
            // whole export, which replaces everything on the destination.
            memory.last = None;
            check = self
                .final_pass(&task.tenant, &task.from, &task.to, hold, memory)
                .await;
        }
        let (stats, difference) = check.map_err(Stop::Failed)?;
        if let Some(d) = difference {
            return Err(Stop::Failed(format!(
                "the copies differ after the final delta: {d}"
            )));
        }
        let mut counters = stats.json();
        counters["fence_settle_ms"] = json!(settle.as_millis() as u64);
        counters["final_ms"] = json!(fenced.elapsed().as_millis() as u64);
        control.step("verified", counters).await?;
        Ok(())
    }

    /// Step 6: the grace period, then the source's copy removed. `fenced`:
    /// how long writes were refused, when this run raised the fence.
    async fn after_flip(
        &self,
        task: &MoveTask,
        control: &MoveControl,
        fenced: Option<Duration>,
    ) -> Step<()> {
        let fence_ms = fenced.map(|d| d.as_millis() as u64);
        // Writes go to the destination from now on; the source keeps its
        // fence, now without a lease (a straggler's write there would be
        // lost), until removal.
        if let Err(e) = self.put_fence(&task.tenant, &task.from, None).await {
            tracing::warn!(move_id = task.id, error = %e,
                "move: cannot make the source's fence last until removal; its lease stands");
        }
        let _ = control.fence_down().await;
        if let Err(e) = self.cell(&task.to).release_holds(&hold_name(task.id)).await {
            tracing::warn!(move_id = task.id, error = %e, "move: cannot release holds yet");
        }
        let _ = control
            .step(
                "grace",
                json!({"grace_secs": self.config.grace.as_secs(), "fence_ms": fence_ms}),
            )
            .await;
        tokio::time::sleep(self.config.grace).await;
        let src = self.cell(&task.from);
        src.remove_tenant(&task.tenant).await?;
        let _ = control
            .step("source-removed", json!({"fence_ms": fence_ms}))
            .await;
        Ok(())
    }
}

/// Why [`HttpMover::before_flip`] stopped.
enum Stop {
    Failed(String),
    Aborted(MoveAborted),
}

impl From<MoveAborted> for Stop {
    fn from(a: MoveAborted) -> Self {
        Stop::Aborted(a)
    }
}

#[async_trait]
impl MoveExecutor for HttpMover {
    async fn execute(&self, task: MoveTask, control: MoveControl) -> Result<(), String> {
        let mut fenced = None;
        if !task.flipped {
            match self.before_flip(&task, &control).await {
                Ok(d) => fenced = Some(d),
                Err(Stop::Aborted(MoveAborted::Cancelled)) => {
                    return match self.rollback(&task).await {
                        Ok(()) => Err("cancelled; rolled back".into()),
                        Err(e) => Err(format!("cancelled; rollback incomplete: {e}")),
                    };
                }
                Err(Stop::Aborted(MoveAborted::Store(e))) => {
                    // The fleet's database is unreachable: leave the tenant
                    // writable at home; a restart resumes the move.
                    let _ = self.unfence(&task.tenant, &task.from).await;
                    return Err(format!("fleet database: {e}"));
                }
                Err(Stop::Failed(e)) => {
                    // Nothing of a move that failed before its flip stays
                    // on the destination: no partial copy, no hold keeping
                    // its blobs from the collector. A retry copies anew.
                    return match self.rollback(&task).await {
                        Ok(()) => Err(format!("{e} (the destination's copy removed)")),
                        Err(r) => Err(format!("{e} (the destination's copy not removed yet: {r})")),
                    };
                }
            }
        }
        self.after_flip(&task, &control, fenced).await
    }

    async fn roll_back(&self, task: MoveTask) -> Result<(), String> {
        self.rollback(&task).await
    }
}

fn hold_name(move_id: i64) -> String {
    format!("fleet-move-{move_id}")
}

fn fence_path(tenant: &str) -> String {
    format!("/admin/v1/tenants/{tenant}/fence")
}

/// One cell's nodes as seen by the mover: a call goes to the first node
/// that answers.
struct Cell<'a> {
    mover: &'a HttpMover,
    cell: &'a CellEndpoints,
}

impl Cell<'_> {
    fn request(&self, node: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", node.trim_end_matches('/'));
        let b = self.mover.client.request(method, url);
        match &self.mover.config.node_token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// A JSON call to one node: the answer's JSON on 2xx, else the error.
    async fn call(
        &self,
        node: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Step<Value> {
        let mut b = self
            .request(node, method.clone(), path)
            .timeout(self.mover.config.call_timeout);
        if let Some(body) = body {
            b = b.json(&body);
        }
        let resp = b
            .send()
            .await
            .map_err(|e| format!("cell {}: {method} {node}{path}: {e}", self.cell.id))?;
        answer(self.cell.id, &method, node, path, resp).await
    }

    /// The call on the first node that answers at all (an HTTP error
    /// answer is final: every node of a cell shares its data).
    async fn any(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Step<Value> {
        let mut last = format!("cell {} has no nodes", self.cell.id);
        for node in &self.cell.nodes {
            match self.call(node, method.clone(), path, body.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.contains(" -> ") => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Runs `f` against the first node that can be reached.
    async fn first_node<T, F, Fut>(&self, f: F) -> Step<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, (bool, String)>>,
    {
        let mut last = format!("cell {} has no nodes", self.cell.id);
        for node in &self.cell.nodes {
            match f(node.clone()).await {
                Ok(v) => return Ok(v),
                // A node that answered with an error speaks for the cell.
                Err((true, e)) => return Err(e),
                Err((false, e)) => last = e,
            }
        }
        Err(last)
    }

    async fn export(&self, tenant: &str) -> Step<Vec<String>> {
        let path = format!("/admin/v1/tenants/{tenant}/export");
        self.first_node(|node| {
            let path = path.clone();
            async move {
                let resp = self
                    .request(&node, reqwest::Method::GET, &path)
                    .timeout(self.mover.config.transfer_timeout)
                    .send()
                    .await
                    .map_err(|e| {
                        (
                            false,
                            format!("cell {}: export from {node}: {e}", self.cell.id),
                        )
                    })?;
                if !resp.status().is_success() {
                    let e = answer(self.cell.id, &reqwest::Method::GET, &node, &path, resp)
                        .await
                        .err()
                        .unwrap_or_default();
                    return Err((true, e));
                }
                let text = resp.text().await.map_err(|e| {
                    (
                        false,
                        format!("cell {}: export from {node}: {e}", self.cell.id),
                    )
                })?;
                Ok(text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect())
            }
        })
        .await
    }

    /// Pass memory as if this cell's copy of `tenant` had been given by
    /// an earlier pass: its records, and its blobs as present. Empty when
    /// it cannot be read (the next pass then checks everything).
    async fn memory_of(&self, tenant: &str) -> PassMemory {
        let Ok(lines) = self.export(tenant).await else {
            return PassMemory::default();
        };
        let on_destination = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["kind"] == "blob")
            .filter_map(|r| r["digest"].as_str().map(str::to_string))
            .collect();
        PassMemory {
            last: Some(lines.into_iter().collect()),
            on_destination,
        }
    }

    /// [`Cell::import_once`], waiting out (bounded) the few seconds a cell
    /// keeps a deleted tenant's name from being taken again: a move
    /// requested right after a cancelled one whose rollback removed the
    /// tenant here.
    async fn import(&self, tenant: &str, lines: &[String], mode: &str) -> Step<u64> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.import_once(tenant, lines, mode).await {
                Err(e)
                    if tries < 20 && e.contains("-> 409") && e.contains("can be taken again") =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    async fn import_once(&self, tenant: &str, lines: &[String], mode: &str) -> Step<u64> {
        let path = format!("/admin/v1/tenants/{tenant}/import?mode={mode}");
        let mut body = lines.join("\n");
        body.push('\n');
        let answer_json = self
            .first_node(|node| {
                let (path, body) = (path.clone(), body.clone());
                async move {
                    let resp = self
                        .request(&node, reqwest::Method::POST, &path)
                        .timeout(self.mover.config.transfer_timeout)
                        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| {
                            (
                                false,
                                format!("cell {}: import on {node}: {e}", self.cell.id),
                            )
                        })?;
                    answer(self.cell.id, &reqwest::Method::POST, &node, &path, resp)
                        .await
                        .map_err(|e| (true, e))
                }
            })
            .await?;
        Ok(changed_of(&answer_json))
    }

    async fn has_blob(&self, digest: &str) -> Step<bool> {
        let path = format!("/admin/v1/blobs/{digest}");
        self.first_node(|node| {
            let path = path.clone();
            async move {
                let resp = self
                    .request(&node, reqwest::Method::HEAD, &path)
                    .timeout(self.mover.config.call_timeout)
                    .send()
                    .await
                    .map_err(|e| {
                        (
                            false,
                            format!("cell {}: HEAD {node}{path}: {e}", self.cell.id),
                        )
                    })?;
                match resp.status().as_u16() {
                    200 => Ok(true),
                    404 => Ok(false),
                    s => Err((
                        true,
                        format!("cell {}: HEAD {node}{path} -> {s}", self.cell.id),
                    )),
                }
            }
        })
        .await
    }

    /// Streams one blob from this cell into `dst` under `hold`.
    async fn copy_blob(&self, digest: &str, dst: &Cell<'_>, hold: &str) -> Step<()> {
        let get = format!("/admin/v1/blobs/{digest}");
        let put = format!("/admin/v1/blobs/{digest}?hold={hold}");
        let source = self
            .first_node(|node| {
                let get = get.clone();
                async move {
                    let resp = self
                        .request(&node, reqwest::Method::GET, &get)
                        .timeout(self.mover.config.transfer_timeout)
                        .send()
                        .await
                        .map_err(|e| {
                            (
                                false,
                                format!("cell {}: GET {node}{get}: {e}", self.cell.id),
                            )
                        })?;
                    if resp.status().is_success() {
                        Ok(resp)
                    } else {
                        Err((
                            true,
                            format!(
                                "cell {}: GET {node}{get} -> {}",
                                self.cell.id,
                                resp.status()
                            ),
                        ))
                    }
                }
            })
            .await?;
        let len = source.content_length();
        // A streamed body cannot be sent twice: one destination node; a
        // failure fails the pass, and the next attempt copies again.
        let node = dst
            .cell
            .nodes
            .first()
            .ok_or_else(|| format!("cell {} has no nodes", dst.cell.id))?;
        let mut req = dst
            .request(node, reqwest::Method::PUT, &put)
            .timeout(self.mover.config.transfer_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(len) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        let resp = req
            .body(reqwest::Body::wrap_stream(source.bytes_stream()))
            .send()
            .await
            .map_err(|e| format!("cell {}: PUT {node}{put}: {e}", dst.cell.id))?;
        answer(dst.cell.id, &reqwest::Method::PUT, node, &put, resp)
            .await
            .map(drop)
    }

    async fn release_holds(&self, hold: &str) -> Step<()> {
        self.any(
            reqwest::Method::DELETE,
            &format!("/admin/v1/holds/{hold}"),
            None,
        )
        .await
        .map(drop)
    }

    /// Removes every repository of the tenant, then its record (users and
    /// robots with it). A tenant already gone is not an error.
    async fn remove_tenant(&self, tenant: &str) -> Step<()> {
        for path in [
            format!("/admin/v1/tenants/{tenant}/content"),
            format!("/admin/v1/tenants/{tenant}?force=true"),
        ] {
            match self.any(reqwest::Method::DELETE, &path, None).await {
                Ok(_) => {}
                Err(e) if e.contains("-> 404") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What a record is about: its kind and the repository and name or digest
/// it describes (`None` for kinds whose key is not known here).
fn record_key(line: &str) -> Option<String> {
    let r: Value = serde_json::from_str(line).ok()?;
    let kind = r["kind"].as_str()?;
    let part = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    match kind {
        "tenant" => Some("tenant".into()),
        "repository" => Some(format!("repository {}", part("name"))),
        "blob" | "manifest" => Some(format!("{kind} {} {}", part("repo"), part("digest"))),
        "tag" => Some(format!("tag {} {}", part("repo"), part("tag"))),
        "refresh" => Some(format!("refresh {}", r["record"]["hash"].as_str()?)),
        "user" | "robot" => {
            let rec = &r["record"];
            let name = rec["name"].as_str().or(rec["id"].as_str())?;
            Some(format!("{kind} {name}"))
        }
        _ => None,
    }
}

/// The lines of `now` a destination holding `last` needs, as an import in
/// merge mode takes them (the tenant line first, each repository's line
/// before its records), or `None` when something of `last` was removed (or
/// is of a kind whose changes this cannot tell): only a whole import in
/// sync mode removes.
fn changes_only(last: &BTreeSet<String>, now: &[String]) -> Option<Vec<String>> {
    let now_keys: BTreeSet<String> = now.iter().map(|l| record_key(l)).collect::<Option<_>>()?;
    let now_lines: BTreeSet<&String> = now.iter().collect();
    for gone in last.iter().filter(|l| !now_lines.contains(l)) {
        if !now_keys.contains(&record_key(gone)?) {
            return None;
        }
    }
    let mut out = Vec::new();
    let mut repo_line: Option<&String> = None;
    for line in now {
        let key = record_key(line)?;
        if key == "tenant" {
            out.push(line.clone());
            continue;
        }
        if key.starts_with("repository ") {
            repo_line = Some(line);
            if !last.contains(line) {
                out.push(line.clone());
                repo_line = None;
            }
            continue;
        }
        if !last.contains(line) {
            if let Some(r) = repo_line.take() {
                out.push(r.clone());
            }
            out.push(line.clone());
        }
    }
    Some(out)
}

/// The records of an export that form a whole: every manifest whose blobs
/// (config, layers) are linked in its repository and whose children are
/// manifests of it, and every tag of such a manifest (repeated until
/// nothing more drops: an index goes with a child that went). The kept
/// lines in their order, and how many were dropped.
fn whole_records(lines: Vec<String>) -> (Vec<String>, u64) {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let parsed: Vec<Option<Value>> = lines.iter().map(|l| serde_json::from_str(l).ok()).collect();
    let field = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    let mut blobs: BTreeSet<(String, String)> = BTreeSet::new();
    // Each manifest's repository, digest, and what it needs: blobs, children.
    let mut needs: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
    for r in parsed.iter().flatten() {
        match r["kind"].as_str() {
            Some("blob") => {
                blobs.insert((field(r, "repo"), field(r, "digest")));
            }
            Some("manifest") => {
                let doc: Value = STANDARD
                    .decode(field(r, "body"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
                let digests = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|d| d["digest"].as_str().map(str::to_string))
                        .collect()
                };
                let mut b = digests(&doc["layers"]);
                b.extend(doc["config"]["digest"].as_str().map(str::to_string));
                let children = digests(&doc["manifests"]);
                needs.insert((field(r, "repo"), field(r, "digest")), (b, children));
            }
            _ => {}
        }
    }
    let mut kept: BTreeSet<(String, String)> = needs.keys().cloned().collect();
    loop {
        let before = kept.len();
        kept.retain(|(repo, digest)| {
            let (b, children) = &needs[&(repo.clone(), digest.clone())];
            b.iter().all(|d| blobs.contains(&(repo.clone(), d.clone())))
                && children
                    .iter()
                    .all(|c| needs.contains_key(&(repo.clone(), c.clone())))
        });
        // A child that went takes its indexes with it.
        let gone: BTreeSet<_> = needs
            .keys()
            .filter(|k| !kept.contains(*k))
            .cloned()
            .collect();
        kept.retain(|(repo, digest)| {
            needs[&(repo.clone(), digest.clone())]
                .1
                .iter()
                .all(|c| !gone.contains(&(repo.clone(), c.clone())))
        });
        if kept.len() == before {
            break;
        }
    }
    let mut out = Vec::with_capacity(lines.len());
    let mut dropped = 0u64;
    for (line, r) in lines.into_iter().zip(parsed) {
        let keep = match r.as_ref().and_then(|r| r["kind"].as_str().map(|k| (k, r))) {
            Some(("manifest", r)) => kept.contains(&(field(r, "repo"), field(r, "digest"))),
            Some(("tag", r)) => kept.contains(&(field(r, "repo"), field(r, "digest"))),
            _ => true,
        };
        if keep {
            out.push(line);
        } else {
            dropped += 1;
        }
    }
    (out, dropped)
}

/// The JSON of a 2xx answer (`null` when it has no body), or an error that
/// names the cell, the call and the status (` -> STATUS`, which
/// [`Cell::any`] reads as "the node answered").
async fn answer(
    cell: u32,
    method: &reqwest::Method,
    node: &str,
    path: &str,
    resp: reqwest::Response,
) -> Step<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    let detail: String = text.chars().take(300).collect();
    Err(format!(
        "cell {cell}: {method} {node}{path} -> {} {detail}",
        status.as_u16()
    ))
}

/// `created + updated + deleted` of an import's answer: its total if it
/// has one, else the sum over its kinds.
fn changed_of(v: &Value) -> u64 {
    let sum = |o: &Value| {
        ["created", "updated", "deleted"]
            .iter()
            .filter_map(|k| o[*k].as_u64())
            .sum::<u64>()
    };
    if let Some(total) = v.get("total") {
        return sum(total);
    }
    if v.get("created").is_some() {
        return sum(v);
    }
    v.as_object()
        .map(|o| o.values().filter(|x| x.is_object()).map(sum).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_answer_counts_what_changed() {
        let v = json!({"total": {"created": 2, "updated": 1, "unchanged": 9, "deleted": 3}});
        assert_eq!(changed_of(&v), 6);
        let flat = json!({"created": 1, "updated": 0, "unchanged": 4, "deleted": 0});
        assert_eq!(changed_of(&flat), 1);
        let kinds = json!({"tag": {"created": 1, "unchanged": 2}, "manifest": {"deleted": 2}});
        assert_eq!(changed_of(&kinds), 3);
        assert_eq!(changed_of(&Value::Null), 0);
    }

    fn manifest_line(repo: &str, digest: &str, doc: Value) -> String {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine as _;
        json!({"kind": "manifest", "repo": repo, "digest": digest,
               "body": STANDARD.encode(doc.to_string())})
        .to_string()
    }

    #[test]
    fn records_not_whole_yet_wait_for_the_next_pass() {
        let blob =
            |d: &str| json!({"kind": "blob", "repo": "t/a", "digest": d, "size": 1}).to_string();
        let tag = |t: &str, d: &str| {
            json!({"kind": "tag", "repo": "t/a", "tag": t, "digest": d}).to_string()
        };
        let image = |layer: &str| json!({"config": {"digest": "c"}, "layers": [{"digest": layer}]});
        let lines = vec![
            json!({"kind": "repository", "name": "t/a"}).to_string(),
            blob("c"),
            blob("l1"),
            manifest_line("t/a", "m1", image("l1")),
            // Its layer was linked after the blobs were listed.
            manifest_line("t/a", "m2", image("l2")),
            // An index over m1 and m2 goes with m2.
            manifest_line(
                "t/a",
                "i",
                json!({"manifests": [{"digest": "m1"}, {"digest": "m2"}]}),
            ),
            tag("one", "m1"),
            tag("two", "m2"),
            tag("multi", "i"),
            // A tag of a manifest pushed after the manifests were listed.
            tag("late", "m9"),
        ];
        let (kept, dropped) = whole_records(lines.clone());
        assert_eq!(dropped, 5);
        let want: Vec<String> = [0, 1, 2, 3, 6].iter().map(|&i| lines[i].clone()).collect();
        assert_eq!(kept, want);
        // A whole export passes untouched.
        let whole: Vec<String> = lines[..4].to_vec();
        assert_eq!(whole_records(whole.clone()), (whole, 0));
    }

    #[test]
    fn a_pass_sends_only_what_changed_unless_something_went() {
        let repo = |n: &str| json!({"kind": "repository", "name": n}).to_string();
        let tag = |r: &str, t: &str, d: &str| {
            json!({"kind": "tag", "repo": r, "tag": t, "digest": d}).to_string()
        };
        let tenant = json!({"kind": "tenant", "record": {"name": "t"}}).to_string();
        let first = vec![
            tenant.clone(),
            repo("t/a"),
            tag("t/a", "1", "m1"),
            repo("t/b"),
            tag("t/b", "1", "m2"),
        ];
        let last: BTreeSet<String> = first.iter().cloned().collect();
        // A tag moved in t/b and one added in t/a: the tenant line, each
        // repository's line before its changes, the changes.
        let now = vec![
            tenant.clone(),
            repo("t/a"),
            tag("t/a", "1", "m1"),
            tag("t/a", "2", "m3"),
            repo("t/b"),
            tag("t/b", "1", "m4"),
        ];
        let diff = changes_only(&last, &now).unwrap();
        assert_eq!(
            diff,
            vec![
                tenant.clone(),
                repo("t/a"),
                tag("t/a", "2", "m3"),
                repo("t/b"),
                tag("t/b", "1", "m4")
            ]
        );
        // Nothing changed: the tenant line alone.
        assert_eq!(changes_only(&last, &first).unwrap(), vec![tenant.clone()]);
        // A tag deleted: only a whole sync import removes it.
        let fewer = vec![
            tenant.clone(),
            repo("t/a"),
            tag("t/a", "1", "m1"),
            repo("t/b"),
        ];
        assert_eq!(changes_only(&last, &fewer), None);
        // A record whose key is unknown here: the whole import too.
        let odd = vec![tenant, json!({"kind": "something"}).to_string()];
        assert_eq!(changes_only(&last, &odd), None);
    }

    #[test]
    fn a_pass_delta_counts_blobs_and_records() {
        let s = PassStats {
            records: 100,
            blobs_copied: 3,
            bytes_copied: 10,
            changed: 4,
            deferred: 2,
        };
        assert_eq!(s.delta(), 9);
        assert_eq!(hold_name(12), "fleet-move-12");
        assert_eq!(fence_path("acme"), "/admin/v1/tenants/acme/fence");
    }
}
