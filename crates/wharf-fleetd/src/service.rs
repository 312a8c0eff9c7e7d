//! The fleet service: [`Fleetd`] and [`serve`].
//!
//! Owns: the loop (scrape every cell, keep HAProxy's maps equal to the
//! tenants' homes, run the rebalancer on its schedule and as soon as a
//! fresh cell crosses its threshold, hand planned moves to the
//! [`MoveExecutor`] when there is one), and every decision the API asks
//! for: placing a tenant, moving one, draining and retiring a cell,
//! planning and applying. Each decision is taken under one lock, on a view
//! built from the database and the latest readings, by `wharf_fleet`
//! (`place`, `filter`, `rebalance`, `drain`, and `apply_step`, which
//! re-checks every step against that view before anything is recorded),
//! and is recorded with its reason.
//!
//! Must never: re-implement a placement rule, a score or a plan (they are
//! `wharf_fleet`'s), or sit on the data path: the nodes serve, and the
//! router HAProxy routes from its last maps, whether or not this process
//! runs (statically stable, design invariant 3).
//!
//! Applying a plan commits its first step only, and only while no move is
//! in flight: later steps are re-planned once those moves end, against the
//! state then (the planner's later steps assumed the first had finished).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use wharf_fleet::place::Reason;
use wharf_fleet::plan::{MoveWhy, NoPlan};
use wharf_fleet::{CellId, CellState, Dimension, Load, Plan, Refusal, Step, DIMS};

use crate::executor::{CellEndpoints, MoveControl, MoveExecutor, MoveTask};
use crate::provision::{Provisioned, Provisioner, TenantSpec};
use crate::router::{RouteTable, Router, RouterConfig};
use crate::scrape::{ScrapeConfig, Scraper};
use crate::store::{
    CellLifecycle, CellQuota, CellRecord, FleetStore, GroupRule, MoveRecord, MoveState, MoveUpdate,
    NewMove, NewTenant, StoreError, TenantRecord, TenantRules,
};
use crate::view::{placeable, PolicyConfig, View, NEW_TENANT};

/// How long a placement waits for every node of the cell to know a tenant
/// it created before routing it (the nodes refresh their directory every
/// few seconds).
const KNOWN_WITHIN: Duration = Duration::from_secs(10);

/// Everything `serve` needs besides its database and listener.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Thresholds, moves per step, staleness.
    pub policy: PolicyConfig,
    /// How cells are scraped.
    pub scrape: ScrapeConfig,
    /// Time between scrape rounds.
    pub scrape_interval: Duration,
    /// Time between scheduled rebalancer runs (a crossed threshold runs it
    /// at once).
    pub rebalance_interval: Duration,
    /// Whether the rebalancer applies its plan (else it only records it).
    pub auto_apply: bool,
    /// Moves an executor runs at once.
    pub max_concurrent_moves: usize,
    /// HAProxy's maps and socket; `None`: routing is not managed.
    pub router: Option<RouterConfig>,
    /// SHA-256 (hex) of the admin token; `None`: the API asks for none.
    pub admin_token_hash: Option<String>,
    /// Whether `/metrics` asks for the admin token too.
    pub metrics_need_token: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            policy: PolicyConfig::default(),
            scrape: ScrapeConfig::default(),
            scrape_interval: Duration::from_secs(15),
            rebalance_interval: Duration::from_secs(300),
            auto_apply: true,
            max_concurrent_moves: 2,
            router: None,
            admin_token_hash: None,
            metrics_need_token: false,
        }
    }
}

/// Why a request to the service failed.
#[derive(Debug)]
pub enum ServiceError {
    /// No such cell, tenant or move.
    NotFound(String),
    /// The state forbids it (or it exists already).
    Conflict(String),
    /// The request breaks a rule of its own.
    Invalid(String),
    /// The database did not answer.
    Unavailable(String),
    /// The cell placement chose refused to create the tenant: its message.
    CellRefused {
        /// The cell.
        cell: u32,
        /// What the cell said, and why.
        message: String,
    },
    /// No cell may take the tenant: the counted reasons, and each cell's.
    Refused {
        /// The one-line summary.
        message: String,
        /// Reasons counted and per cell.
        detail: Value,
    },
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ServiceError::NotFound(m),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Invalid(m) => ServiceError::Invalid(m),
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
        }
    }
}

/// A result of the service.
pub type Outcome<T = Value> = Result<T, ServiceError>;

/// Counters the metrics page shows.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) placements_refused: AtomicU64,
    pub(crate) router_errors: AtomicU64,
    pub(crate) plan_infeasible: AtomicBool,
    /// The last plan recorded as a decision, so an unchanged plan is not
    /// recorded again every run.
    last_plan: Mutex<String>,
}

/// The running fleet service.
pub struct Fleetd {
    store: FleetStore,
    pub(crate) config: ServiceConfig,
    pub(crate) scraper: Scraper,
    /// Creates placed tenants on their cells.
    provisioner: Provisioner,
    router: Option<Router>,
    executor: Option<Arc<dyn MoveExecutor>>,
    /// One decision at a time: each sees the one before it.
    decide: tokio::sync::Mutex<()>,
    pub(crate) counters: Counters,
    /// Moves this process's executor is running.
    running: Mutex<BTreeSet<i64>>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A load as JSON, each dimension by its label, rates in requests per
/// second (stored in milli-requests per second).
pub fn load_json(l: &Load) -> Value {
    let mut m = Map::new();
    for d in Dimension::ALL {
        let v = match d {
            Dimension::PullRate | Dimension::PushRate => json!(l[d] as f64 / 1000.0),
            _ => json!(l[d]),
        };
        m.insert(d.label().into(), v);
    }
    Value::Object(m)
}

/// A load from JSON written as [`load_json`] writes it; absent dimensions
/// are 0, unknown keys an error.
pub fn load_from_json(v: &Value) -> Result<Load, String> {
    let Some(m) = v.as_object() else {
        return Err("expected an object of dimensions".into());
    };
    let mut l = Load::ZERO;
    for (k, x) in m {
        let d = Dimension::ALL
            .into_iter()
            .find(|d| d.label() == k)
            .ok_or_else(|| {
                let names: Vec<_> = Dimension::ALL.iter().map(|d| d.label()).collect();
                format!("unknown dimension {k:?} (known: {})", names.join(", "))
            })?;
        let f = x
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| format!("{k} must be a number >= 0"))?;
        l[d] = match d {
            Dimension::PullRate | Dimension::PushRate => (f * 1000.0).round() as u64,
            _ => f.round() as u64,
        };
    }
    Ok(l)
}

fn ratios_json(r: &[f64; DIMS]) -> Value {
    let mut m = Map::new();
    for d in Dimension::ALL {
        m.insert(d.label().into(), json!(r[d.index()]));
    }
    Value::Object(m)
}

fn ratios_from_json(v: &Value, default: [f64; DIMS]) -> Result<[f64; DIMS], String> {
    let mut out = default;
    if v.is_null() {
        return Ok(out);
    }
    if let Some(f) = v.as_f64() {
        return if f > 0.0 && f <= 1.0 {
            Ok([f; DIMS])
        } else {
            Err("a threshold must be in (0, 1]".into())
        };
    }
    let m = v
        .as_object()
        .ok_or("a threshold is a number or an object of dimensions")?;
    for (k, x) in m {
        let d = Dimension::ALL
            .into_iter()
            .find(|d| d.label() == k)
            .ok_or_else(|| format!("unknown dimension {k:?}"))?;
        let f = x
            .as_f64()
            .filter(|f| *f > 0.0 && *f <= 1.0)
            .ok_or_else(|| format!("threshold {k} must be in (0, 1]"))?;
        out[d.index()] = f;
    }
    Ok(out)
}

/// Whether `name` can be a tenant name: one repository name component,
/// as the registry and its admin API accept it (`[a-z0-9]+((\.|_|__|-+)
/// [a-z0-9]+)*`, at most 64 bytes), which is also a single map word.
pub fn valid_tenant_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 64 {
        return false;
    }
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of letters and digits…
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // …then one separator: `.`, `_`, `__` or any number of `-`.
        match b[i] {
            b'.' => i += 1,
            b'_' if b.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn valid_admin_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() <= 2048
        && !u.contains(char::is_whitespace)
        && !u.contains('@')
}

/// The `nodes` of a request: at least one http(s) admin URL, without
/// credentials, each without a trailing `/`.
fn nodes_of(req: &Value) -> Result<Vec<String>, ServiceError> {
    let bad = |m: &str| ServiceError::Invalid(m.into());
    let nodes: Vec<String> = req["nodes"]
        .as_array()
        .ok_or_else(|| bad("nodes must list the nodes' admin URLs"))?
        .iter()
        .map(|n| n.as_str().map(|s| s.trim_end_matches('/').to_string()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("nodes must be strings"))?;
    if nodes.is_empty() || !nodes.iter().all(|n| valid_admin_url(n)) {
        return Err(bad(
            "nodes must list at least one http(s) admin URL, without credentials",
        ));
    }
    Ok(nodes)
}

/// A refusal, with tenant names instead of placeable ids and cells by
/// their numbers.
fn refusal_error(view: &View, refusal: &Refusal, tenant: &str) -> ServiceError {
    let summary = refusal.summary();
    let parts: Vec<String> = summary.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let message = format!(
        "0/{} cells fit tenant {tenant}: {}",
        refusal.rejections.len(),
        if parts.is_empty() {
            "there are no cells".to_string()
        } else {
            parts.join(", ")
        }
    );
    let detail = json!({
        "cells_considered": refusal.rejections.len(),
        "reasons": summary.iter().map(|(k, n)| json!({"reason": k, "cells": n})).collect::<Vec<_>>(),
        "rejections": refusal.rejections.iter().map(|r| json!({
            "cell": r.cell.0,
            "reason": reason_text(view, &r.reason),
        })).collect::<Vec<_>>(),
    });
    ServiceError::Refused { message, detail }
}

fn reason_text(view: &View, r: &Reason) -> String {
    match r {
        Reason::AntiAffinity { group, scope, with } => format!(
            "anti-affinity group {group}: tenant {} is already in this {scope}",
            view.tenant_name(*with)
        ),
        other => other.to_string(),
    }
}

fn move_why(why: &MoveWhy) -> String {
    match why {
        MoveWhy::Relieve {
            cell,
            dimension,
            utilisation,
        } => format!(
            "relieves cell {}: {dimension} at {:.1}% of its threshold-scaled capacity",
            cell.0,
            utilisation * 100.0
        ),
        MoveWhy::Drain { cell } => format!("drains cell {}", cell.0),
    }
}

fn plan_json(view: &View, plan: &Plan) -> Value {
    json!({
        "moves": plan.moves(),
        "steps": plan.steps.iter().enumerate().map(|(i, s)| json!({
            "step": i + 1,
            "moves": s.moves.iter().map(|m| json!({
                "tenant": view.tenant_name(m.placeable),
                "from": m.from.0,
                "to": m.to.0,
                "storage_bytes": m.bytes,
                "reason": move_why(&m.why),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "bytes_moved": plan.bytes_moved,
        "lower_bound_bytes": plan.lower_bound_bytes,
    })
}

fn no_plan_json(view: &View, np: &NoPlan) -> Value {
    json!({
        "partial": plan_json(view, &np.partial),
        "stuck": np.stuck.iter().map(|s| json!({
            "cell": s.cell.0,
            "zone": s.zone.0,
            "drain": s.drain,
            "excess": load_json(&s.excess),
        })).collect::<Vec<_>>(),
        "shortfall": np.shortfall.iter().map(|s| json!({
            "zone": s.zone.0,
            "capacity": load_json(&s.capacity),
        })).collect::<Vec<_>>(),
        "pinned": np.pinned.iter().map(|p| view.tenant_name(*p)).collect::<Vec<_>>(),
        "text": np.to_string(),
    })
}

/// What the planner proposes now: the rebalance and one drain per
/// draining cell, each a plan or why none exists.
struct Proposal {
    /// `(goal, plan or none)`, the rebalance first.
    plans: Vec<(String, Result<Plan, NoPlan>)>,
}

impl Proposal {
    fn infeasible(&self) -> bool {
        self.plans.iter().any(|(_, p)| p.is_err())
    }

    fn first_steps(&self) -> Vec<(&str, &Step)> {
        self.plans
            .iter()
            .filter_map(|(goal, p)| {
                let plan = match p {
                    Ok(plan) => plan,
                    Err(np) => &np.partial,
                };
                plan.steps.first().map(|s| (goal.as_str(), s))
            })
            .collect()
    }

    fn json(&self, view: &View) -> Value {
        Value::Array(
            self.plans
                .iter()
                .map(|(goal, p)| match p {
                    Ok(plan) => {
                        json!({"goal": goal, "feasible": true, "plan": plan_json(view, plan)})
                    }
                    Err(np) => {
                        json!({"goal": goal, "feasible": false, "no_plan": no_plan_json(view, np)})
                    }
                })
                .collect(),
        )
    }
}

fn propose(view: &View) -> Proposal {
    let mut plans = vec![(
        "rebalance".to_string(),
        wharf_fleet::rebalance(&view.fleet, &view.policy, view.now),
    )];
    for (ci, c) in view.fleet.cells().iter().enumerate() {
        let holds = view
            .fleet
            .members(ci)
            .iter()
            .any(|&pi| view.fleet.location(pi) == wharf_fleet::Location::At(ci));
        if c.state == CellState::Draining && holds {
            plans.push((
                format!("drain cell {}", c.id.0),
                wharf_fleet::drain(&view.fleet, ci, &view.policy, view.now),
            ));
        }
    }
    Proposal { plans }
}

impl Fleetd {
    /// A service over `store`. `executor`: what runs moves; `None` leaves
    /// them `planned`.
    pub fn new(
        store: FleetStore,
        config: ServiceConfig,
        executor: Option<Arc<dyn MoveExecutor>>,
    ) -> Arc<Fleetd> {
        Fleetd::with_clock(store, config, executor, Box::new(unix_now))
    }

    /// The same with a clock of its own (unix seconds), for tests.
    pub fn with_clock(
        store: FleetStore,
        config: ServiceConfig,
        executor: Option<Arc<dyn MoveExecutor>>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Arc<Fleetd> {
        Arc::new(Fleetd {
            scraper: Scraper::new(config.scrape.clone()),
            provisioner: Provisioner::new(
                config.scrape.token.clone(),
                config.scrape.connect_timeout,
                config.scrape.request_timeout,
            ),
            router: config.router.clone().map(Router::new),
            store,
            config,
            executor,
            decide: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            running: Mutex::new(BTreeSet::new()),
            clock,
        })
    }

    /// Now, in unix seconds, on the service's clock.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// The database.
    pub fn store(&self) -> &FleetStore {
        &self.store
    }

    pub(crate) async fn view(&self) -> Outcome<View> {
        let cells = self.store.cells().await?;
        let tenants = self.store.tenants().await?;
        let moves = self
            .store
            .moves(Some(&[MoveState::Planned, MoveState::Running]), i64::MAX)
            .await?;
        self.scraper.sync(&cells);
        Ok(View::build(
            &self.config.policy,
            cells,
            &tenants,
            &moves,
            self.scraper.readings(),
            self.now(),
        ))
    }

    async fn decision(&self, kind: &str, subject: &str, reason: &str, detail: Value) {
        if let Err(e) = self
            .store
            .record_decision(kind, subject, reason, &detail, self.now())
            .await
        {
            tracing::error!(kind, subject, error = %e, "cannot record a decision");
        }
        tracing::info!(kind, subject, "{reason}");
    }

    // ---- cells -----------------------------------------------------------

    /// Adds a cell: `{id, zone, capacity, threshold?, warn?, nodes}`.
    pub async fn add_cell(&self, req: &Value) -> Outcome {
        let bad = |m: String| ServiceError::Invalid(m);
        let id = req["id"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("id must be a cell number".into()))?;
        let zone = req["zone"]
            .as_u64()
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| bad("zone must be a number below 65536".into()))?;
        let capacity =
            load_from_json(&req["capacity"]).map_err(|e| bad(format!("capacity: {e}")))?;
        if Dimension::ALL.iter().any(|&d| capacity[d] == 0) {
            return Err(bad(
                "capacity must name every dimension, each above 0".into()
            ));
        }
        let threshold = ratios_from_json(&req["threshold"], self.config.policy.threshold)
            .map_err(|e| bad(format!("threshold: {e}")))?;
        let warn = ratios_from_json(&req["warn"], self.config.policy.warn)
            .map_err(|e| bad(format!("warn: {e}")))?;
        let nodes = nodes_of(req)?;
        let _d = self.decide.lock().await;
        let now = self.now();
        let cell = self
            .store
            .add_cell(
                &CellRecord {
                    id,
                    zone,
                    state: CellLifecycle::Active,
                    capacity: capacity.0,
                    threshold,
                    warn,
                    nodes,
                    created_unix: now,
                    updated_unix: now,
                },
                now,
            )
            .await?;
        self.decision(
            "cell-add",
            &format!("c{id}"),
            &format!("cell {id} added in zone {zone}; no tenant is placed on it until its nodes have been read"),
            json!({"cell": id}),
        )
        .await;
        self.scraper.sync(&self.store.cells().await?);
        Ok(json!({"cell": cell_brief(&cell)}))
    }

    /// Changes a registered cell's limits: `{capacity, threshold, warn}`,
    /// each optional; a capacity names only the dimensions that change.
    /// The planner and placement use the new figures from their next
    /// decision; tenants already placed stay where they are until the
    /// rebalancer moves them.
    pub async fn set_cell_limits(&self, id: u32, req: &Value) -> Outcome {
        let bad = |m: String| ServiceError::Invalid(m);
        let Some(m) = req.as_object() else {
            return Err(bad(
                "expected an object with capacity, threshold or warn".into()
            ));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !["capacity", "threshold", "warn"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown field {k:?} (a cell's limits are capacity, threshold and warn)"
            )));
        }
        if m.is_empty() {
            return Err(bad(
                "nothing to change: give capacity, threshold or warn".into()
            ));
        }
        let _d = self.decide.lock().await;
        let before = self.store.cell(id).await?;
        let mut capacity = before.capacity;
        if let Some(c) = m.get("capacity") {
            let given = load_from_json(c).map_err(|e| bad(format!("capacity: {e}")))?;
            // Only the dimensions named change (load_from_json checked the
            // names; an absent one reads as 0).
            for d in Dimension::ALL
                .into_iter()
                .filter(|d| c.get(d.label()).is_some())
            {
                if given[d] == 0 {
                    return Err(bad(format!("capacity {} must be above 0", d.label())));
                }
                capacity[d.index()] = given[d];
            }
        }
        let threshold = ratios_from_json(
            req.get("threshold").unwrap_or(&Value::Null),
            before.threshold,
        )
        .map_err(|e| bad(format!("threshold: {e}")))?;
        let warn = ratios_from_json(req.get("warn").unwrap_or(&Value::Null), before.warn)
            .map_err(|e| bad(format!("warn: {e}")))?;
        let cell = self
            .store
            .set_cell_limits(id, capacity, threshold, warn, self.now())
            .await?;
        self.decision(
            "cell-limits",
            &format!("c{id}"),
            &format!("cell {id}'s limits changed"),
            json!({
                "cell": id,
                "capacity": load_json(&Load(cell.capacity)),
                "threshold": ratios_json(&cell.threshold),
                "warn": ratios_json(&cell.warn),
                "before": {
                    "capacity": load_json(&Load(before.capacity)),
                    "threshold": ratios_json(&before.threshold),
                    "warn": ratios_json(&before.warn),
                },
            }),
        )
        .await;
        Ok(json!({"cell": cell_brief(&cell)}))
    }

    /// Replaces a registered cell's nodes (their admin addresses): `{nodes}`.
    /// The next scrape reads the new ones, and moves started from now on
    /// use them (a move in flight keeps the addresses it started with
    /// until the service restarts).
    pub async fn set_cell_nodes(&self, id: u32, req: &Value) -> Outcome {
        let nodes = nodes_of(req)?;
        let _d = self.decide.lock().await;
        let before = self.store.cell(id).await?;
        let cell = self.store.set_cell_nodes(id, &nodes, self.now()).await?;
        self.decision(
            "cell-nodes",
            &format!("c{id}"),
            &format!(
                "cell {id}'s nodes set to {} (were {})",
                cell.nodes.join(" "),
                before.nodes.join(" ")
            ),
            json!({"cell": id, "nodes": cell.nodes, "before": before.nodes}),
        )
        .await;
        self.scraper.sync(&self.store.cells().await?);
        Ok(json!({"cell": cell_brief(&cell)}))
    }

    /// Every cell with its state, freshness and use.
    pub async fn cells(&self) -> Outcome {
        let view = self.view().await?;
        Ok(
            json!({"cells": (0..view.cells.len()).map(|ci| cell_json(&view, ci)).collect::<Vec<_>>()}),
        )
    }

    /// One cell.
    pub async fn cell(&self, id: u32) -> Outcome {
        let view = self.view().await?;
        let ci = view
            .fleet
            .cell_idx(CellId(id))
            .ok_or_else(|| ServiceError::NotFound(format!("no cell {id}")))?;
        Ok(cell_json(&view, ci))
    }

    /// Starts draining a cell: no tenant arrives; the planner empties it.
    pub async fn drain_cell(&self, id: u32) -> Outcome {
        let _d = self.decide.lock().await;
        let c = self
            .store
            .set_cell_state(
                id,
                &[CellLifecycle::Active],
                CellLifecycle::Draining,
                self.now(),
            )
            .await?;
        self.decision(
            "drain",
            &format!("c{id}"),
            &format!("cell {id} is draining: no new tenants; its tenants are planned away"),
            json!({"cell": id}),
        )
        .await;
        Ok(json!({"cell": cell_brief(&c)}))
    }

    /// Retires an empty cell.
    pub async fn retire_cell(&self, id: u32) -> Outcome {
        let _d = self.decide.lock().await;
        let c = self
            .store
            .set_cell_state(
                id,
                &[CellLifecycle::Active, CellLifecycle::Draining],
                CellLifecycle::Retired,
                self.now(),
            )
            .await?;
        self.decision(
            "retire",
            &format!("c{id}"),
            &format!("cell {id} retired"),
            json!({"cell": id}),
        )
        .await;
        self.scraper.sync(&self.store.cells().await?);
        Ok(json!({"cell": cell_brief(&c)}))
    }

    // ---- tenants ---------------------------------------------------------

    /// Places a new tenant: `{name, hostname?, quota?, demand?,
    /// anti_affinity?, pinned_to?, excluded?}`, then has its cell create it
    /// (name, hostname, quota) and routes it. A placement no cell takes is
    /// [`ServiceError::Refused`]; one the chosen cell refuses is
    /// [`ServiceError::CellRefused`] with the cell's message, and is
    /// forgotten (nothing routed). When the cell cannot be reached the
    /// placement stays recorded, unrouted: the loop, or the same request
    /// again, finishes it.
    pub async fn place_tenant(&self, req: &Value) -> Outcome {
        let bad = |m: String| ServiceError::Invalid(m);
        let name = req["name"]
            .as_str()
            .filter(|n| valid_tenant_name(n))
            .ok_or_else(|| {
                bad("name must be a tenant name: [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*, at most 64 bytes".into())
            })?
            .to_string();
        let hostname = match &req["hostname"] {
            Value::Null => None,
            Value::String(h) if valid_hostname(&h.to_ascii_lowercase()) => {
                Some(h.to_ascii_lowercase())
            }
            _ => return Err(bad("hostname must be a DNS name".into())),
        };
        let quota: CellQuota = match &req["quota"] {
            Value::Null => CellQuota::default(),
            q => serde_json::from_value(q.clone()).map_err(|e| {
                bad(format!(
                    "quota: {e} (an object of bytes and repositories, each a count)"
                ))
            })?,
        };
        let demand = if req["demand"].is_null() {
            Load::ZERO
        } else {
            load_from_json(&req["demand"]).map_err(|e| bad(format!("demand: {e}")))?
        };
        let rules: TenantRules = serde_json::from_value(json!({
            "anti_affinity": req.get("anti_affinity").cloned().unwrap_or(json!([])),
            "pinned_to": req.get("pinned_to").cloned().unwrap_or(json!([])),
            "excluded": req.get("excluded").cloned().unwrap_or(json!([])),
        }))
        .map_err(|e| bad(format!("rules: {e}")))?;
        if rules
            .anti_affinity
            .iter()
            .any(|g: &GroupRule| g.group.is_empty() || g.group.len() > 128)
        {
            return Err(bad("an anti-affinity group needs a name".into()));
        }

        let _d = self.decide.lock().await;
        let mut view = self.view().await?;
        if view.tenant_idx(&name).is_some() {
            // The same placement again, after its cell could not be
            // reached or the service stopped between the two steps: finish
            // it. Anything else is a second placement of the name.
            let t = self.store.tenant(&name).await?;
            if t.on_cell || t.hostname != hostname || t.quota != quota {
                return Err(ServiceError::Conflict(format!(
                    "tenant {name} is placed already"
                )));
            }
            drop(_d);
            let reason = format!(
                "tenant {name} -> cell {}: placed earlier, created on the cell now",
                t.cell
            );
            return self.finish_placement(t, reason).await;
        }
        let pi = view
            .fleet
            .add_placeable(placeable(NEW_TENANT, demand, &rules));
        match wharf_fleet::place(&view.fleet, pi, &view.policy, view.now) {
            Ok(p) => {
                let reason = format!(
                    "tenant {name} -> cell {}: {}/{} cells fit; lowest resulting max utilisation {:.1}% ({})",
                    p.cell.0,
                    p.fitting,
                    p.total,
                    p.score * 100.0,
                    p.score_dimension
                );
                // Step 1, recorded before the cell is asked: a tenant the
                // cell creates is never unknown to the fleet.
                let t = self
                    .store
                    .add_tenant(
                        &NewTenant {
                            name: name.clone(),
                            cell: p.cell.0,
                            hostname,
                            demand,
                            rules,
                            quota,
                        },
                        self.now(),
                    )
                    .await?;
                self.decision(
                    "place",
                    &name,
                    &reason,
                    json!({"cell": p.cell.0, "fitting": p.fitting, "total": p.total,
                           "score": p.score, "dimension": p.score_dimension.label()}),
                )
                .await;
                drop(_d);
                self.finish_placement(t, reason).await
            }
            Err(refusal) => {
                self.counters
                    .placements_refused
                    .fetch_add(1, Ordering::Relaxed);
                let err = refusal_error(&view, &refusal, &name);
                if let ServiceError::Refused { message, detail } = &err {
                    self.decision("refuse", &name, message, detail.clone())
                        .await;
                }
                Err(err)
            }
        }
    }

    /// Step 2 of a placement: the tenant created on its cell, then routed
    /// (step 3). Idempotent: a tenant the cell holds already with these
    /// settings is fine.
    async fn finish_placement(&self, t: TenantRecord, reason: String) -> Outcome {
        let nodes = self.store.cell(t.cell).await?.nodes;
        let spec = TenantSpec {
            name: &t.name,
            hostname: t.hostname.as_deref(),
            quota: t.quota,
        };
        let outcome = self.provisioner.create(t.cell, &nodes, &spec).await;
        let created = match outcome {
            Provisioned::Created => "created",
            Provisioned::AlreadyThere => "already there",
            Provisioned::Refused(message) => {
                let _d = self.decide.lock().await;
                let dropped = self.store.drop_placement(&t.name).await?;
                self.counters
                    .placements_refused
                    .fetch_add(1, Ordering::Relaxed);
                let text = format!("cell {} refused tenant {}: {message}", t.cell, t.name);
                if dropped {
                    self.decision(
                        "refuse",
                        &t.name,
                        &format!("{text}; the placement is withdrawn, nothing routed"),
                        json!({"cell": t.cell, "cell_message": message}),
                    )
                    .await;
                }
                return Err(ServiceError::CellRefused {
                    cell: t.cell,
                    message: text,
                });
            }
            Provisioned::Unreachable(why) => {
                return Err(ServiceError::Unavailable(format!(
                    "tenant {} is placed on cell {} but the cell could not create it yet ({why}); \
                     it is not routed until it does: the service retries, or place it again",
                    t.name, t.cell
                )));
            }
        };
        let late = self
            .provisioner
            .wait_known(&nodes, &t.name, KNOWN_WITHIN)
            .await;
        if !late.is_empty() {
            tracing::warn!(tenant = %t.name, nodes = ?late,
                "routing a tenant some nodes of its cell do not know yet");
        }
        let t = self.store.set_on_cell(&t.name).await?;
        self.decision(
            "create",
            &t.name,
            &format!(
                "tenant {} on cell {}: {created}; routed to {}",
                t.name,
                t.cell,
                crate::router::backend(t.cell)
            ),
            json!({"cell": t.cell, "outcome": created}),
        )
        .await;
        self.sync_routes().await;
        Ok(
            json!({"tenant": t.name, "cell": t.cell, "hostname": t.hostname,
                  "quota": t.quota, "backend": crate::router::backend(t.cell),
                  "created_on_cell": created, "reason": reason}),
        )
    }

    /// Finishes placements left half done (the cell unreachable, or the
    /// service stopped between recording a placement and the cell's
    /// answer). A refusal withdraws the placement, as for a request.
    async fn finish_placements(&self) {
        let pending: Vec<TenantRecord> = match self.store.tenants().await {
            Ok(ts) => ts.into_iter().filter(|t| !t.on_cell).collect(),
            Err(_) => return,
        };
        for t in pending {
            let name = t.name.clone();
            let reason = format!("tenant {name} -> cell {}: finished by the service", t.cell);
            match self.finish_placement(t, reason).await {
                Ok(_) => tracing::info!(tenant = %name, "a placement left half done is finished"),
                Err(e) => {
                    tracing::warn!(tenant = %name, error = ?e, "a placement is not finished yet")
                }
            }
        }
    }

    /// Where tenant `name` lives, and any move in flight.
    pub async fn tenant(&self, name: &str) -> Outcome {
        let t = self.store.tenant(name).await?;
        let moving = self
            .store
            .moves(Some(&[MoveState::Planned, MoveState::Running]), i64::MAX)
            .await?
            .into_iter()
            .find(|m| m.tenant == t.name);
        let fenced = self
            .scraper
            .readings()
            .get(&t.cell)
            .is_some_and(|r| r.fenced.contains(&t.name));
        Ok(json!({
            "tenant": t.name,
            "cell": t.cell,
            "backend": crate::router::backend(t.cell),
            "hostname": t.hostname,
            "demand": load_json(&Load(t.demand)),
            "rules": t.rules,
            "created": rfc3339(t.created_unix),
            "on_cell": t.on_cell,
            "quota": t.quota,
            "fenced": fenced,
            "move": moving.map(|m| move_json(&m, self.now())),
        }))
    }

    /// Every tenant with its home cell.
    pub async fn tenants(&self) -> Outcome {
        let ts = self.store.tenants().await?;
        Ok(json!({"tenants": ts.iter().map(|t| json!({
            "tenant": t.name, "cell": t.cell, "hostname": t.hostname,
            "created": rfc3339(t.created_unix), "on_cell": t.on_cell,
        })).collect::<Vec<_>>()}))
    }

    /// Requests a move of tenant `name`, to cell `to` or, without one, to
    /// the cell placement would choose among the others. The move is
    /// re-checked by the applier and recorded `planned`.
    pub async fn request_move(&self, name: &str, to: Option<u32>) -> Outcome {
        let _d = self.decide.lock().await;
        let view = self.view().await?;
        let pi = view
            .tenant_idx(name)
            .ok_or_else(|| ServiceError::NotFound(format!("no tenant {name}")))?;
        if self.store.tenant(name).await.is_ok_and(|t| !t.on_cell) {
            return Err(ServiceError::Conflict(format!(
                "tenant {name} is placed but not created on its cell yet"
            )));
        }
        let wharf_fleet::Location::At(from) = view.fleet.location(pi) else {
            return Err(ServiceError::Conflict(format!(
                "tenant {name} has a move in flight already"
            )));
        };
        let from_id = view.fleet.cells()[from].id;
        let to_id = match to {
            Some(t) => {
                let ci = view
                    .fleet
                    .cell_idx(CellId(t))
                    .ok_or_else(|| ServiceError::NotFound(format!("no cell {t}")))?;
                if ci == from {
                    return Err(ServiceError::Conflict(format!(
                        "tenant {name} lives in cell {t} already"
                    )));
                }
                if let Err(r) = wharf_fleet::filter(&view.fleet, pi, ci, &view.policy, view.now) {
                    let reason = reason_text(&view, &r);
                    self.decision(
                        "refuse",
                        name,
                        &format!("move of tenant {name} to cell {t} refused: {reason}"),
                        json!({"to": t, "reason": reason}),
                    )
                    .await;
                    return Err(ServiceError::Refused {
                        message: format!("tenant {name} cannot move to cell {t}: {reason}"),
                        detail: json!({"rejections": [{"cell": t, "reason": reason}]}),
                    });
                }
                CellId(t)
            }
            None => {
                // Placement's choice among the other cells: the same engine
                // with the tenant lifted off and its home closed to it.
                let mut work = view.fleet.clone();
                work.unassign(pi);
                work.cell_mut(from).state = CellState::Draining;
                match wharf_fleet::place(&work, pi, &view.policy, view.now) {
                    Ok(p) => p.cell,
                    Err(refusal) => {
                        self.counters
                            .placements_refused
                            .fetch_add(1, Ordering::Relaxed);
                        let err = refusal_error(&view, &refusal, name);
                        if let ServiceError::Refused { message, detail } = &err {
                            self.decision("refuse", name, message, detail.clone()).await;
                        }
                        return Err(err);
                    }
                }
            }
        };
        let reason = format!(
            "requested by an operator: cell {} -> cell {}",
            from_id.0, to_id.0
        );
        let step = Step {
            moves: vec![wharf_fleet::Move {
                placeable: view.fleet.placeables()[pi].id,
                from: from_id,
                to: to_id,
                bytes: view.fleet.placeables()[pi].demand[Dimension::Storage],
                why: MoveWhy::Relieve {
                    cell: from_id,
                    dimension: Dimension::Storage,
                    utilisation: 0.0,
                },
            }],
        };
        let mut check = view.fleet.clone();
        if let Err(v) = wharf_fleet::apply_step(&mut check, &step, &view.policy, view.now) {
            return Err(ServiceError::Conflict(format!(
                "the applier refused the move: {v}"
            )));
        }
        let ids = self
            .store
            .add_moves(
                &[NewMove {
                    tenant: name.to_string(),
                    from: from_id.0,
                    to: to_id.0,
                    reason: reason.clone(),
                }],
                self.now(),
            )
            .await?;
        self.decision(
            "move",
            name,
            &reason,
            json!({"move": ids[0], "from": from_id.0, "to": to_id.0}),
        )
        .await;
        let m = self.store.get_move(ids[0]).await?;
        Ok(json!({"move": move_json(&m, self.now())}))
    }

    // ---- plans -----------------------------------------------------------

    /// What the rebalancer (and the drains) would do now, without doing it.
    pub async fn plan(&self) -> Outcome {
        let view = self.view().await?;
        let p = propose(&view);
        let in_flight = self
            .store
            .moves(Some(&[MoveState::Planned, MoveState::Running]), i64::MAX)
            .await?
            .len();
        // A tenant in flight still counts on its source, so a plan made
        // meanwhile may find no way; the gauge only follows plans that
        // could be applied.
        if in_flight == 0 {
            self.counters
                .plan_infeasible
                .store(p.infeasible(), Ordering::Relaxed);
        }
        Ok(json!({
            "at": rfc3339(view.now),
            "moves_in_flight": in_flight,
            "plans": p.json(&view),
        }))
    }

    /// Applies the first step of each plan (rebalance, drains) after the
    /// applier re-checked it, and records its moves `planned`. Refused
    /// while moves are in flight.
    pub async fn apply(&self, trigger: &str) -> Outcome {
        let _d = self.decide.lock().await;
        let in_flight = self
            .store
            .moves(Some(&[MoveState::Planned, MoveState::Running]), i64::MAX)
            .await?;
        if !in_flight.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "{} move(s) are in flight; a new plan is applied once they end",
                in_flight.len()
            )));
        }
        let view = self.view().await?;
        let proposal = propose(&view);
        let infeasible = proposal.infeasible();
        self.counters
            .plan_infeasible
            .store(infeasible, Ordering::Relaxed);
        let mut work = view.fleet.clone();
        let mut recorded = Vec::new();
        let mut refused = Vec::new();
        for (goal, step) in proposal.first_steps() {
            match wharf_fleet::apply_step(&mut work, step, &view.policy, view.now) {
                Ok(()) => {
                    let moves: Vec<NewMove> = step
                        .moves
                        .iter()
                        .map(|m| NewMove {
                            tenant: view.tenant_name(m.placeable),
                            from: m.from.0,
                            to: m.to.0,
                            reason: format!("{goal}: {}", move_why(&m.why)),
                        })
                        .collect();
                    let ids = self.store.add_moves(&moves, self.now()).await?;
                    for (id, m) in ids.into_iter().zip(&moves) {
                        recorded.push(json!({"move": id, "tenant": m.tenant, "from": m.from,
                                             "to": m.to, "reason": m.reason}));
                    }
                }
                Err(v) => refused.push(json!({"goal": goal, "violation": v.to_string()})),
            }
        }
        let plans = proposal.json(&view);
        let text = format!(
            "{trigger}: {} move(s) recorded{}{}",
            recorded.len(),
            if refused.is_empty() {
                String::new()
            } else {
                format!(", {} step(s) refused by the applier", refused.len())
            },
            if infeasible {
                "; no plan keeps every rule (see detail)"
            } else {
                ""
            }
        );
        let key = format!("{plans}{recorded:?}{refused:?}");
        let changed = {
            let mut last = self
                .counters
                .last_plan
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *last != key;
            *last = key;
            changed
        };
        if !recorded.is_empty() || (changed && (infeasible || !refused.is_empty())) {
            self.decision(
                if infeasible {
                    "plan-infeasible"
                } else {
                    "rebalance"
                },
                "fleet",
                &text,
                json!({"recorded": recorded, "refused": refused, "plans": plans}),
            )
            .await;
        }
        Ok(json!({"recorded": recorded, "refused": refused, "plans": plans}))
    }

    // ---- moves -----------------------------------------------------------

    /// Moves, newest first.
    pub async fn moves(&self, state: Option<MoveState>, limit: i64) -> Outcome {
        let states = state.map(|s| vec![s]);
        let ms = self
            .store
            .moves(states.as_deref(), limit.clamp(1, 10_000))
            .await?;
        let now = self.now();
        Ok(json!({"moves": ms.iter().map(|m| move_json(m, now)).collect::<Vec<_>>()}))
    }

    /// One move.
    pub async fn get_move(&self, id: i64) -> Outcome {
        let m = self.store.get_move(id).await?;
        Ok(move_json(&m, self.now()))
    }

    /// Cancels a move whose route has not flipped.
    pub async fn cancel_move(&self, id: i64) -> Outcome {
        let _d = self.decide.lock().await;
        let m = self.store.cancel_move(id, self.now()).await?;
        self.decision(
            "cancel",
            &m.tenant,
            &format!("move {id} of tenant {} cancelled by an operator", m.tenant),
            json!({"move": id}),
        )
        .await;
        Ok(move_json(&m, self.now()))
    }

    /// The most recent decisions.
    pub async fn decisions(&self, limit: i64) -> Outcome {
        let ds = self.store.decisions(limit.clamp(1, 10_000)).await?;
        Ok(json!({"decisions": ds.iter().map(|d| json!({
            "id": d.id, "at": rfc3339(d.at_unix), "kind": d.kind, "subject": d.subject,
            "reason": d.reason, "detail": d.detail,
        })).collect::<Vec<_>>()}))
    }

    pub(crate) async fn flip_move(&self, id: i64) -> Result<(), crate::executor::MoveAborted> {
        let m = {
            let _d = self.decide.lock().await;
            self.store.flip_move(id, self.now()).await?
        };
        self.decision(
            "route",
            &m.tenant,
            &format!(
                "tenant {} now routed to cell {} (move {id})",
                m.tenant, m.to
            ),
            json!({"move": id, "cell": m.to}),
        )
        .await;
        self.sync_routes().await;
        Ok(())
    }

    // ---- the loop --------------------------------------------------------

    /// The routes every tenant's home cell gives.
    pub async fn route_table(&self) -> Outcome<RouteTable> {
        let ts = self.store.tenants().await?;
        Ok(RouteTable::from_homes(
            ts.iter()
                .filter(|t| t.on_cell)
                .map(|t| (t.name.as_str(), t.hostname.as_deref(), t.cell)),
        ))
    }

    /// Pushes the routes to the files and HAProxy, if routing is managed.
    /// A failure is logged and counted; the next call retries.
    pub async fn sync_routes(&self) {
        let Some(router) = &self.router else { return };
        let table = match self.route_table().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = ?e, "cannot read routes");
                return;
            }
        };
        match router.sync(&table).await {
            Ok(r) if r.files_written || r.commands > 0 => {
                tracing::info!(commands = r.commands, "routes pushed to HAProxy")
            }
            Ok(_) => {}
            Err(e) => {
                self.counters.router_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot push routes to HAProxy");
            }
        }
    }

    /// One scrape round over every cell.
    pub async fn scrape_now(&self) -> Outcome<()> {
        let cells = self.store.cells().await?;
        self.scraper.sync(&cells);
        self.scraper.scrape_all(self.now()).await;
        Ok(())
    }

    /// Hands planned moves to the executor, up to the concurrency cap.
    async fn start_moves(self: &Arc<Self>) -> Outcome<()> {
        let Some(exec) = self.executor.clone() else {
            return Ok(());
        };
        let mut planned = self.store.moves(Some(&[MoveState::Planned]), 1000).await?;
        planned.sort_by_key(|m| m.id);
        // Moves left running by a service that stopped: resumed first (they
        // may hold a fence), then the planned ones.
        let orphaned: Vec<MoveRecord> = {
            let listed = self.store.moves(Some(&[MoveState::Running]), 1000).await?;
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            listed
                .into_iter()
                .filter(|m| !running.contains(&m.id))
                .collect()
        };
        self.roll_back_cancelled(&exec).await?;
        let cells: BTreeMap<u32, CellRecord> = self
            .store
            .cells()
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let resumed = orphaned.into_iter().map(|m| (m, true));
        for (m, resume) in resumed.chain(planned.into_iter().map(|m| (m, false))) {
            {
                let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                if !resume && running.len() >= self.config.max_concurrent_moves.max(1) {
                    break;
                }
            }
            let started = self
                .store
                .update_move(
                    m.id,
                    &MoveUpdate {
                        state: Some(MoveState::Running),
                        step: Some(if resume { "resumed" } else { "started" }.into()),
                        ..MoveUpdate::default()
                    },
                    self.now(),
                )
                .await;
            if started.is_err() {
                continue; // cancelled meanwhile
            }
            let endpoints = |id: u32| CellEndpoints {
                id,
                nodes: cells.get(&id).map(|c| c.nodes.clone()).unwrap_or_default(),
            };
            let tenant = self.store.tenant(&m.tenant).await.ok();
            let task = MoveTask {
                id: m.id,
                tenant: m.tenant.clone(),
                hostname: tenant.as_ref().and_then(|t| t.hostname.clone()),
                from: endpoints(m.from),
                to: endpoints(m.to),
                flipped: tenant.is_some_and(|t| t.cell == m.to),
            };
            if resume {
                tracing::info!(move_id = m.id, tenant = %m.tenant, flipped = task.flipped,
                    "resuming a move left running by an earlier start");
            }
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(m.id);
            let me = self.clone();
            let exec = exec.clone();
            tokio::spawn(async move {
                let control = MoveControl {
                    fleetd: me.clone(),
                    id: task.id,
                };
                let id = task.id;
                let result = exec.execute(task, control).await;
                let update = match &result {
                    Ok(()) => MoveUpdate {
                        state: Some(MoveState::Done),
                        step: Some("done".into()),
                        ..MoveUpdate::default()
                    },
                    Err(e) => MoveUpdate {
                        state: Some(MoveState::Failed),
                        step: Some("failed".into()),
                        error: Some(e.clone()),
                        ..MoveUpdate::default()
                    },
                };
                match me.store.update_move(id, &update, me.now()).await {
                    Ok(_) => {}
                    // Cancelled while it ran: the executor rolled back.
                    Err(crate::store::StoreError::Conflict(_)) => {
                        let step = if result.is_ok()
                            || matches!(&result, Err(e) if e.ends_with("rolled back"))
                        {
                            "rolled-back"
                        } else {
                            "rolling-back"
                        };
                        let _ = me.store.set_cancelled_step(id, step, me.now()).await;
                    }
                    Err(e) => {
                        tracing::warn!(move_id = id, error = %e, "cannot record a move's end")
                    }
                }
                me.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        }
        Ok(())
    }

    /// Rolls back cancelled moves that no executor of this process is
    /// running and that are not rolled back yet (their step says so). A
    /// move whose tenant has since gone home to its destination by another
    /// move is only marked: its destination's copy is the tenant's now.
    async fn roll_back_cancelled(self: &Arc<Self>, exec: &Arc<dyn MoveExecutor>) -> Outcome<()> {
        let cancelled = self
            .store
            .moves(Some(&[MoveState::Cancelled]), 1000)
            .await?;
        let cells: BTreeMap<u32, CellRecord> = self
            .store
            .cells()
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        for m in cancelled {
            if m.step == "rolled-back"
                || self
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&m.id)
            {
                continue;
            }
            let tenant = self.store.tenant(&m.tenant).await.ok();
            let in_flight = self
                .store
                .moves(Some(&[MoveState::Planned, MoveState::Running]), 1000)
                .await?
                .iter()
                .any(|o| o.tenant == m.tenant);
            if tenant.as_ref().is_some_and(|t| t.cell == m.to) || in_flight {
                let _ = self
                    .store
                    .set_cancelled_step(m.id, "rolled-back", self.now())
                    .await;
                continue;
            }
            let endpoints = |id: u32| CellEndpoints {
                id,
                nodes: cells.get(&id).map(|c| c.nodes.clone()).unwrap_or_default(),
            };
            let task = MoveTask {
                id: m.id,
                tenant: m.tenant.clone(),
                hostname: tenant.and_then(|t| t.hostname),
                from: endpoints(m.from),
                to: endpoints(m.to),
                flipped: false,
            };
            match exec.roll_back(task).await {
                Ok(()) => {
                    let _ = self
                        .store
                        .set_cancelled_step(m.id, "rolled-back", self.now())
                        .await;
                    tracing::info!(move_id = m.id, tenant = %m.tenant, "cancelled move rolled back");
                }
                Err(e) => tracing::warn!(move_id = m.id, tenant = %m.tenant, error = %e,
                    "cannot roll back a cancelled move yet; retrying on the next turn"),
            }
        }
        Ok(())
    }

    /// One turn of the loop: scrape, routes, the rebalancer when due or
    /// when a threshold was crossed, moves to the executor. Whether the
    /// rebalancer ran.
    pub async fn tick(self: &Arc<Self>, rebalance_due: bool) -> bool {
        if let Err(e) = self.scrape_now().await {
            tracing::warn!(error = ?e, "scrape round skipped");
        }
        self.finish_placements().await;
        self.sync_routes().await;
        let crossed = match self.view().await {
            Ok(v) => v.threshold_crossed(),
            Err(_) => false,
        };
        let ran = rebalance_due || crossed;
        if ran {
            let r = if self.config.auto_apply {
                self.apply(if crossed {
                    "threshold crossed"
                } else {
                    "scheduled rebalance"
                })
                .await
            } else {
                self.plan().await
            };
            match r {
                Ok(_) | Err(ServiceError::Conflict(_)) => {}
                Err(e) => tracing::warn!(error = ?e, "rebalancer skipped"),
            }
        }
        if let Err(e) = self.start_moves().await {
            tracing::warn!(error = ?e, "cannot start moves");
        }
        ran
    }
}

fn cell_brief(c: &CellRecord) -> Value {
    json!({
        "id": c.id, "zone": c.zone, "state": c.state, "backend": crate::router::backend(c.id),
        "capacity": load_json(&Load(c.capacity)),
        "threshold": ratios_json(&c.threshold), "warn": ratios_json(&c.warn),
        "nodes": c.nodes, "created": rfc3339(c.created_unix), "updated": rfc3339(c.updated_unix),
    })
}

fn cell_json(view: &View, ci: usize) -> Value {
    let c = &view.cells[ci];
    let mut v = cell_brief(c);
    let reading = view.readings.get(&c.id);
    let mut util = Map::new();
    for d in Dimension::ALL {
        util.insert(d.label().into(), json!(view.utilisation(ci, d)));
    }
    let tenants = view
        .fleet
        .members(ci)
        .iter()
        .filter(|&&pi| view.fleet.location(pi) == wharf_fleet::Location::At(ci))
        .count();
    let m = v.as_object_mut().expect("an object");
    m.insert("usage".into(), json!(view.freshness(ci)));
    m.insert("used".into(), load_json(&view.fleet.used(ci)));
    m.insert("utilisation".into(), Value::Object(util));
    m.insert("tenants".into(), json!(tenants));
    m.insert(
        "last_read".into(),
        json!(reading.and_then(|r| r.last_seen).map(rfc3339)),
    );
    m.insert(
        "read_age_seconds".into(),
        json!(reading
            .and_then(|r| r.last_seen)
            .map(|s| view.now.saturating_sub(s))),
    );
    m.insert(
        "scrape_failures".into(),
        json!(reading.map_or(0, |r| r.failures_total)),
    );
    m.insert(
        "last_error".into(),
        json!(reading.and_then(|r| r.last_error.clone())),
    );
    v
}

/// A move as JSON.
pub fn move_json(m: &MoveRecord, now: u64) -> Value {
    json!({
        "id": m.id, "tenant": m.tenant, "from": m.from, "to": m.to, "state": m.state,
        "step": m.step, "step_age_seconds": now.saturating_sub(m.step_since_unix),
        "counters": m.counters, "reason": m.reason, "started": rfc3339(m.started_unix),
        "updated": rfc3339(m.updated_unix), "error": m.error,
        "fence_start": m.fence_start_unix.map(rfc3339), "fence_end": m.fence_end_unix.map(rfc3339),
    })
}

/// Unix seconds as RFC 3339 UTC (`2026-12-06T22:49:45Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Serves the API and `/metrics` on `listener` and runs the loop until
/// `shutdown` resolves. Routes are pushed once before anything else, so a
/// restarted HAProxy that loaded older files is made consistent.
pub async fn serve(
    fleetd: Arc<Fleetd>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    fleetd.sync_routes().await;
    let app = crate::api::app(fleetd.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let looper = {
        let fleetd = fleetd.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut scrape = tokio::time::interval(fleetd.config.scrape_interval);
            scrape.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_rebalance = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = scrape.tick() => {}
                    _ = stop.changed() => return,
                }
                let due = last_rebalance.elapsed() >= fleetd.config.rebalance_interval;
                if fleetd.tick(due).await {
                    last_rebalance = tokio::time::Instant::now();
                }
            }
        })
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    });
    let stopper = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let r = server.await;
    stopper.abort();
    looper.abort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_round_trip_through_json_in_each_dimensions_unit() {
        let l = Load([10, 1 << 30, 2500, 500, 1 << 20]);
        let j = load_json(&l);
        assert_eq!(j["pull_requests_per_second"], json!(2.5));
        assert_eq!(load_from_json(&j).unwrap(), l);
        assert!(load_from_json(&json!({"disk": 1})).is_err());
        assert!(load_from_json(&json!({"storage_bytes": -1})).is_err());
    }

    #[test]
    fn thresholds_are_a_number_or_per_dimension() {
        let d = [0.7; DIMS];
        assert_eq!(ratios_from_json(&Value::Null, d).unwrap(), d);
        assert_eq!(ratios_from_json(&json!(0.5), d).unwrap(), [0.5; DIMS]);
        let r = ratios_from_json(&json!({"storage_bytes": 0.8}), d).unwrap();
        assert_eq!(r[Dimension::Storage.index()], 0.8);
        assert!(ratios_from_json(&json!(1.5), d).is_err());
        assert!(ratios_from_json(&json!({"storage_bytes": 0}), d).is_err());
    }

    #[test]
    fn names_and_urls_are_checked() {
        for good in ["acme", "acme-01.x_y", "a__b", "a---b", "0"] {
            assert!(valid_tenant_name(good), "{good:?}");
        }
        for bad in [
            "", "Acme", "a b", "-a", "a-", "a..b", "a___b", "a._b", "a/b", "a;b",
        ] {
            assert!(!valid_tenant_name(bad), "{bad:?}");
        }
        assert!(valid_hostname("reg.acme.example"));
        assert!(!valid_hostname("reg..acme"));
        assert!(!valid_hostname("a b"));
        assert!(valid_admin_url("http://10.0.0.1:9090"));
        assert!(!valid_admin_url("http://u:p@h"));
        assert!(!valid_admin_url("ftp://h"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_597_385), "2026-12-06T22:49:45Z");
    }
}
