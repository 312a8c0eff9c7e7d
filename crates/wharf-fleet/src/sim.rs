//! A deterministic fleet simulation: one seed drives tenants arriving,
//! growing, bursting and leaving, cells added, failing, drained and taken
//! away in a capacity crunch, hour by hour, through the same `place`,
//! `rebalance`, `drain` and `apply_step` the fleet service runs.
//!
//! Owns: the workload model ([`SimConfig`], [`Rng`]), the two policies
//! compared ([`PolicyKind`]: Wharf's, and the permissive one of the
//! incident), the modelled data path (one shared proxy per cell with a
//! fixed connection limit, or a bounded pool per node), and the results
//! ([`SimResult`]). The workload draws come from their own random stream,
//! so both policies see the same tenants, sizes, bursts and failures.
//! Must never: read the clock, use ambient randomness or do I/O; a seed
//! replays exactly.

use crate::model::{
    utilisation, AntiAffinity, Cell, CellId, CellState, Dimension, Fleet, Kind, Load, Location,
    Placeable, Policy, Scope, DIMS,
};
use crate::place::place;
use crate::plan::{anti_affinity_violations, apply_step, drain, rebalance};

/// splitmix64: small, fast, and the same on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with this median and shape.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Pareto with minimum `xm` and tail index `alpha`.
    pub fn pareto(&mut self, xm: f64, alpha: f64) -> f64 {
        xm / self.unit().powf(1.0 / alpha)
    }

    /// Poisson with mean `lambda` (normal approximation above 50).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 50.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let l = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.unit();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

/// Which placement policy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// Wharf: hard rules never relaxed (refuse and alert), warnings at the
    /// warn level, rebalancing, a bounded connection pool per node.
    Wharf,
    /// The incident's design: under a crunch it relaxes anti-affinity (then
    /// the threshold) to place anyway, never rebalances, alerts only at
    /// capacity, and all of a cell's traffic shares one proxy.
    Permissive,
}

impl PolicyKind {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Wharf => "wharf",
            PolicyKind::Permissive => "permissive",
        }
    }
}

/// A capacity crunch: cells taken away at an hour, capacity given back later.
#[derive(Clone, Debug, PartialEq)]
pub struct Crunch {
    /// When the cells go.
    pub at_hour: u32,
    /// How many: cells c1, c2, … (c0 stays).
    pub cells_removed: u32,
    /// After this many hours, as many new cells are added (0: never).
    pub restore_after_hours: u32,
}

/// Every knob of a simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The one seed.
    pub seed: u64,
    /// Simulated hours.
    pub hours: u32,
    /// Failure domains.
    pub zones: u16,
    /// Cells at the start.
    pub cells: u32,
    /// Tenants at the start.
    pub tenants: u32,
    /// New tenants per day (Poisson).
    pub arrivals_per_day: f64,
    /// Share of tenants leaving per day.
    pub departures_per_day: f64,
    /// Nodes per cell; each owns connections/nodes of the cell's pool.
    pub nodes_per_cell: u32,
    /// Capacity of every cell (connections: the sum of its nodes' pools,
    /// as `wharf check` computes it; rates in milli-requests per second).
    pub cell_capacity: Load,
    /// Median tenant storage in bytes (log-normal).
    pub storage_median: f64,
    /// Log-normal shape of tenant storage and request rates.
    pub size_sigma: f64,
    /// Median peak pull rate of a tenant in requests per second.
    pub pull_median: f64,
    /// Push rate as a share of pull rate.
    pub push_share: f64,
    /// Bytes per pull, for bandwidth.
    pub bytes_per_pull: f64,
    /// Minimum daily growth (Pareto); most grow near it, a few much faster.
    pub growth_min_per_day: f64,
    /// Pareto tail index of growth (smaller: heavier tail).
    pub growth_alpha: f64,
    /// No tenant is larger than this share of a cell on any dimension.
    pub max_tenant_share: f64,
    /// Seconds a request holds a connection (Little's law).
    pub request_seconds: f64,
    /// Share of requests that also call the control-plane API (token and
    /// tenant checks), holding one more connection each. Permissive: these
    /// go through the shared proxy of the cells hosting the control-plane
    /// components. Wharf: through each node's own local path.
    pub api_call_share: f64,
    /// A request not answered within this many seconds is a 504.
    pub deadline_seconds: f64,
    /// Wharf's admission wait bound per node, in seconds (must be below
    /// the deadline: past it, refuse with 503 at once).
    pub admission_wait_seconds: f64,
    /// Per tenant per hour chance of a burst.
    pub burst_chance: f64,
    /// Load multiplier during a burst.
    pub burst_factor: f64,
    /// Burst length in hours.
    pub burst_hours: u32,
    /// Per cell per day chance of failing (usage unknown).
    pub failure_per_cell_day: f64,
    /// Hours a failed cell stays unknown.
    pub failure_hours: u32,
    /// Add one cell every this many hours (0: never).
    pub add_cell_every_hours: u32,
    /// Drain (and then retire) one cell every this many hours (0: never).
    pub drain_every_hours: u32,
    /// The crunch, if any.
    pub crunch: Option<Crunch>,
    /// Two critical control-plane components that must not share a cell,
    /// pinned to the system cells c0–c2 (and the cells restored after a
    /// crunch), each holding this many connections (0: none).
    pub control_plane_connections: u64,
    /// Share of tenants with a replica that must live in another zone.
    pub replicated_share: f64,
    /// Which policy.
    pub policy: PolicyKind,
    /// Moves in or out of one cell per step (one step runs per hour).
    pub max_moves_per_cell: usize,
    /// Wharf: hours after a refusal or an impossible plan until an operator
    /// adds a cell (0: never).
    pub operator_response_hours: u32,
}

const GIB: f64 = 1_073_741_824.0;

impl SimConfig {
    /// The incident replay: 12 cells in 3 zones, two control-plane
    /// components on the system cells, a crunch on day 1 at 08:00 taking
    /// away 4 cells (c1–c4, including two of the three system cells) for 30
    /// hours, a week in all.
    pub fn incident(seed: u64, policy: PolicyKind) -> SimConfig {
        SimConfig {
            seed,
            hours: 24 * 7,
            zones: 3,
            cells: 12,
            tenants: 1_000,
            arrivals_per_day: 20.0,
            departures_per_day: 0.002,
            nodes_per_cell: 5,
            cell_capacity: Load([
                250,
                (2048.0 * GIB) as u64,
                400_000,
                60_000,
                (3.0 * GIB) as u64,
            ]),
            storage_median: 3.5 * GIB,
            size_sigma: 1.1,
            pull_median: 1.0,
            push_share: 0.15,
            bytes_per_pull: 8.0 * 1_048_576.0,
            growth_min_per_day: 0.002,
            growth_alpha: 1.6,
            max_tenant_share: 0.05,
            request_seconds: 0.25,
            api_call_share: 0.3,
            deadline_seconds: 30.0,
            admission_wait_seconds: 2.0,
            burst_chance: 0.002,
            burst_factor: 4.0,
            burst_hours: 2,
            failure_per_cell_day: 0.0,
            failure_hours: 4,
            add_cell_every_hours: 0,
            drain_every_hours: 0,
            crunch: Some(Crunch {
                at_hour: 32,
                cells_removed: 4,
                restore_after_hours: 30,
            }),
            // One watch connection from each of the 60 nodes.
            control_plane_connections: 60,
            replicated_share: 0.05,
            policy,
            max_moves_per_cell: 2,
            operator_response_hours: 6,
        }
    }

    /// The scale run: 1,000 cells in 5 zones, 100,000 tenants, 30 days,
    /// with failures, a cell added every 12 hours and one drained every 48,
    /// four moves per cell per step.
    pub fn scale(seed: u64, policy: PolicyKind) -> SimConfig {
        SimConfig {
            hours: 24 * 30,
            zones: 5,
            cells: 1_000,
            tenants: 100_000,
            arrivals_per_day: 500.0,
            departures_per_day: 0.001,
            failure_per_cell_day: 0.002,
            add_cell_every_hours: 12,
            drain_every_hours: 48,
            crunch: None,
            control_plane_connections: 60,
            operator_response_hours: 12,
            max_moves_per_cell: 4,
            ..SimConfig::incident(seed, policy)
        }
    }
}

/// One thing that happened, for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Simulated hour.
    pub hour: u32,
    /// Short kind, e.g. `refused`, `colocated`, `proxy-limit`.
    pub kind: &'static str,
    /// What happened.
    pub text: String,
}

/// Measurements of one hour.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HourStats {
    /// The hour.
    pub hour: u32,
    /// Percentiles across serving cells of each cell's highest measured
    /// utilisation: p50, p90, p99, max.
    pub percentiles: [f64; 4],
    /// Highest measured utilisation of each dimension over all cells.
    pub worst: [f64; DIMS],
    /// (cell, dimension) pairs that crossed the warning level this hour.
    pub warnings: u32,
    /// Pairs that crossed the critical level (the threshold) this hour.
    pub criticals: u32,
    /// Pairs that reached capacity (100%) for the first time this hour.
    pub saturations: u32,
    /// Moves started this hour.
    pub moves: u32,
    /// Bytes copied by those moves.
    pub bytes_moved: u64,
    /// Requests past their deadline (504) this hour.
    pub timeouts: u64,
    /// Requests refused at once (503) this hour.
    pub refused_fast: u64,
    /// Anti-affinity pairs together at the end of the hour.
    pub aa_violations: u32,
    /// Placeables waiting for a cell.
    pub unplaced: u32,
}

/// A (cell, dimension) that reached capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct Saturation {
    /// The cell.
    pub cell: CellId,
    /// The dimension.
    pub dimension: Dimension,
    /// When it reached 100%.
    pub hour: u32,
    /// When its warning first fired, if before.
    pub warned_at: Option<u32>,
}

/// Everything a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SimResult {
    /// The configuration run.
    pub config: SimConfig,
    /// One entry per hour.
    pub hours: Vec<HourStats>,
    /// Notable events, in order.
    pub events: Vec<Event>,
    /// Every (cell, dimension) that reached capacity.
    pub saturations: Vec<Saturation>,
    /// Every (cell, dimension) whose measured use crossed the threshold
    /// (the critical level), with when its warning fired.
    pub criticals: Vec<Saturation>,
    /// (hour, cell, requests past deadline) for each cell-hour with any.
    pub timeouts: Vec<(u32, CellId, u64)>,
    /// First hour a shared proxy was at its connection limit, and where.
    pub first_proxy_limit: Option<(u32, CellId)>,
    /// Cell-hours a proxy or node pool was at its limit.
    pub limit_hours: u32,
    /// First hour two members of an anti-affinity group were together.
    pub first_colocation: Option<u32>,
    /// Placeables refused at least once (Wharf).
    pub refusals: u32,
    /// Relaxed placements (permissive only).
    pub relaxed: u32,
    /// Moves started, and bytes they copied.
    pub moves: u64,
    /// Bytes moved in all.
    pub bytes_moved: u64,
    /// Placeables and cells at the end.
    pub final_placeables: u32,
    /// Serving cells at the end.
    pub final_cells: u32,
    /// Warnings that fired (first crossing per cell and dimension).
    pub warnings: u32,
}

impl SimResult {
    /// Requests past their deadline in all.
    pub fn total_timeouts(&self) -> u64 {
        self.hours.iter().map(|h| h.timeouts).sum()
    }

    /// Requests refused at once in all.
    pub fn total_refused_fast(&self) -> u64 {
        self.hours.iter().map(|h| h.refused_fast).sum()
    }

    /// The most anti-affinity pairs together in any hour.
    pub fn max_aa_violations(&self) -> u32 {
        self.hours
            .iter()
            .map(|h| h.aa_violations)
            .max()
            .unwrap_or(0)
    }

    /// Saturations with no warning before them.
    pub fn unwarned_saturations(&self) -> usize {
        self.saturations
            .iter()
            .filter(|s| s.warned_at.is_none_or(|w| w >= s.hour))
            .count()
    }

    /// Shortest lead time (hours from warning to saturation), if any
    /// dimension saturated.
    pub fn min_lead_hours(&self) -> Option<u32> {
        self.saturations
            .iter()
            .filter_map(|s| s.warned_at.map(|w| s.hour.saturating_sub(w)))
            .min()
    }
}

/// Per-tenant workload state the fleet does not hold.
#[derive(Clone, Debug)]
struct Workload {
    /// Peak rates at the reservation: pull, push (req/s).
    pull: f64,
    push: f64,
    storage: f64,
    growth: f64,
    burst_until: u32,
    /// Control-plane connection hold (connections), 0 for tenants.
    cp_conns: f64,
}

struct Sim {
    cfg: SimConfig,
    policy: Policy,
    fleet: Fleet,
    work: Vec<Workload>,
    wrng: Rng,
    next_cell: u32,
    next_placeable: u32,
    pending: Vec<usize>,
    system_cells: Vec<CellId>,
    cp: Vec<usize>,
    drains: Vec<usize>,
    recover_at: Vec<(u32, usize)>,
    operator_add_at: Option<u32>,
    restore_at: Option<(u32, u32)>,
    refused: Vec<bool>,
    warned: Vec<[Option<u32>; DIMS]>,
    critical: Vec<[bool; DIMS]>,
    saturated: Vec<[bool; DIMS]>,
    out: SimResult,
}

fn diurnal(hour: u32) -> f64 {
    // Peak 1.0 at 14:00, trough 0.3 at 02:00.
    let h = (hour % 24) as f64;
    0.65 + 0.35 * ((h - 8.0) / 24.0 * std::f64::consts::TAU).sin()
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let policy = Policy {
            max_moves_per_cell: cfg.max_moves_per_cell,
            warn: match cfg.policy {
                PolicyKind::Wharf => [0.6; DIMS],
                PolicyKind::Permissive => [1.0; DIMS],
            },
            ..Policy::default()
        };
        let out = SimResult {
            config: cfg.clone(),
            hours: Vec::new(),
            events: Vec::new(),
            saturations: Vec::new(),
            criticals: Vec::new(),
            timeouts: Vec::new(),
            first_proxy_limit: None,
            limit_hours: 0,
            first_colocation: None,
            refusals: 0,
            relaxed: 0,
            moves: 0,
            bytes_moved: 0,
            final_placeables: 0,
            final_cells: 0,
            warnings: 0,
        };
        Sim {
            wrng: Rng::new(cfg.seed ^ 0x5EED_F1EE_7000_0001),
            policy,
            fleet: Fleet::new(Vec::new()),
            work: Vec::new(),
            next_cell: 0,
            next_placeable: 0,
            pending: Vec::new(),
            system_cells: vec![CellId(0), CellId(1), CellId(2)],
            cp: Vec::new(),
            drains: Vec::new(),
            recover_at: Vec::new(),
            operator_add_at: None,
            restore_at: None,
            refused: Vec::new(),
            warned: Vec::new(),
            critical: Vec::new(),
            saturated: Vec::new(),
            cfg,
            out,
        }
    }

    fn event(&mut self, hour: u32, kind: &'static str, text: String) {
        if self.out.events.len() < 2_000 {
            self.out.events.push(Event { hour, kind, text });
        }
    }

    fn add_cell(&mut self, hour: u32) -> usize {
        let id = self.next_cell;
        self.next_cell += 1;
        let mut c = Cell::new(
            id,
            (id % self.cfg.zones as u32) as u16,
            self.cfg.cell_capacity,
        );
        c.last_seen = hour as u64 * 3600;
        c.staleness_bound = 2 * 3600;
        let ci = self.fleet.add_cell(c);
        self.warned.push([None; DIMS]);
        self.critical.push([false; DIMS]);
        self.saturated.push([false; DIMS]);
        ci
    }

    fn reservation(&self, w: &Workload) -> Load {
        let cap = &self.cfg.cell_capacity;
        let max = |d: Dimension| (cap[d] as f64 * self.cfg.max_tenant_share) as u64;
        let conns = if w.cp_conns > 0.0 {
            w.cp_conns.ceil() as u64
        } else {
            (((w.pull + w.push) * self.cfg.request_seconds * (1.0 + self.cfg.api_call_share)).ceil()
                as u64)
                .min(max(Dimension::Connections))
        };
        Load([
            conns,
            (w.storage as u64).min(max(Dimension::Storage)),
            ((w.pull * 1000.0) as u64).min(max(Dimension::PullRate)),
            ((w.push * 1000.0) as u64).min(max(Dimension::PushRate)),
            ((w.pull * self.cfg.bytes_per_pull) as u64).min(max(Dimension::Bandwidth)),
        ])
    }

    /// The largest storage and pull rate a tenant may have: the tenant share
    /// of a cell on storage, and on every rate-driven dimension.
    fn max_sizes(&self) -> (f64, f64) {
        let cap = &self.cfg.cell_capacity;
        let s = self.cfg.max_tenant_share;
        let storage = cap[Dimension::Storage] as f64 * s;
        let by_pull = cap[Dimension::PullRate] as f64 * s / 1000.0;
        let by_push = cap[Dimension::PushRate] as f64 * s / 1000.0 / self.cfg.push_share.max(1e-9);
        let by_bw = cap[Dimension::Bandwidth] as f64 * s / self.cfg.bytes_per_pull;
        let by_conn = cap[Dimension::Connections] as f64 * s
            / self.cfg.request_seconds
            / (1.0 + self.cfg.api_call_share)
            / (1.0 + self.cfg.push_share);
        (storage, by_pull.min(by_push).min(by_bw).min(by_conn))
    }

    fn new_tenant(&mut self) -> Vec<usize> {
        let (max_storage, max_pull) = self.max_sizes();
        let r = &mut self.wrng;
        let pull = r
            .lognormal(self.cfg.pull_median, self.cfg.size_sigma)
            .min(max_pull);
        let w = Workload {
            pull,
            push: pull * self.cfg.push_share,
            storage: r
                .lognormal(self.cfg.storage_median, self.cfg.size_sigma)
                .min(max_storage),
            growth: r
                .pareto(self.cfg.growth_min_per_day, self.cfg.growth_alpha)
                .min(0.2),
            burst_until: 0,
            cp_conns: 0.0,
        };
        let replicated = r.chance(self.cfg.replicated_share);
        let copies = if replicated { 2 } else { 1 };
        let group = format!("t{}-replicas", self.next_placeable);
        let mut out = Vec::new();
        for _ in 0..copies {
            let mut p = Placeable::tenant(self.next_placeable, self.reservation(&w));
            self.next_placeable += 1;
            p.growth_per_day = w.growth;
            if replicated {
                p.anti_affinity.push(AntiAffinity {
                    group: group.clone(),
                    scope: Scope::Zone,
                });
            }
            out.push(self.fleet.add_placeable(p));
            self.work.push(w.clone());
        }
        out
    }

    fn now(hour: u32) -> u64 {
        hour as u64 * 3600
    }

    /// Places `pi` under the run's policy; returns whether it was placed.
    fn place_one(&mut self, pi: usize, hour: u32) -> bool {
        let now = Self::now(hour);
        match place(&self.fleet, pi, &self.policy, now) {
            Ok(p) => {
                self.fleet.assign(pi, p.cell_index);
                let was_refused = self.refused.get(pi).copied().unwrap_or(false);
                if was_refused && self.fleet.placeables()[pi].kind == Kind::ControlPlane {
                    self.event(hour, "placed", format!("{p}"));
                }
                true
            }
            Err(refusal) => match self.cfg.policy {
                PolicyKind::Wharf => {
                    if self.refused.len() <= pi {
                        self.refused.resize(pi + 1, false);
                    }
                    let first = !self.refused[pi];
                    self.refused[pi] = true;
                    if first {
                        self.out.refusals += 1;
                    }
                    if first
                        && (self.fleet.placeables()[pi].kind == Kind::ControlPlane
                            || self.out.refusals <= 10)
                    {
                        let alert = refusal.alert();
                        self.event(hour, "refused", format!("{alert}"));
                    }
                    if self.cfg.operator_response_hours > 0 && self.operator_add_at.is_none() {
                        self.operator_add_at = Some(hour + self.cfg.operator_response_hours);
                    }
                    false
                }
                PolicyKind::Permissive => self.place_relaxed(pi, hour),
            },
        }
    }

    /// The permissive policy's fallback: ignore anti-affinity, then the
    /// threshold, and take the serving cell with the lowest resulting
    /// maximum utilisation (pins still hold: they are node selectors).
    fn place_relaxed(&mut self, pi: usize, hour: u32) -> bool {
        let p = &self.fleet.placeables()[pi];
        let mut best: Option<(bool, f64, usize)> = None;
        for (ci, c) in self.fleet.cells().iter().enumerate() {
            if c.state != CellState::Active
                || p.excluded.contains(&c.id)
                || (!p.pinned_to.is_empty() && !p.pinned_to.contains(&c.id))
            {
                continue;
            }
            let used = self.fleet.used(ci).plus(&p.demand);
            let fits = Dimension::ALL
                .iter()
                .all(|&d| self.policy.within(d, used[d], c.capacity[d]));
            let score = Dimension::ALL
                .iter()
                .map(|&d| utilisation(used[d], c.capacity[d]))
                .fold(0.0, f64::max);
            let key = (!fits, score, ci);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
        let Some((over, _, ci)) = best else {
            return false;
        };
        let conflict = self
            .fleet
            .anti_affinity_conflict(pi, ci)
            .map(|(g, _, o)| (g.to_string(), self.fleet.placeables()[o].id));
        let id = self.fleet.placeables()[pi].id;
        let kind = self.fleet.placeables()[pi].kind;
        self.fleet.assign(pi, ci);
        self.out.relaxed += 1;
        let cell = self.fleet.cells()[ci].id;
        if let Some((g, other)) = conflict {
            if self.out.first_colocation.is_none() {
                self.out.first_colocation = Some(hour);
            }
            self.event(
                hour,
                "colocated",
                format!(
                    "{id} ({kind:?}) placed on {cell} with {other} despite anti-affinity group {g}"
                ),
            );
        } else if over && self.out.relaxed <= 20 {
            self.event(
                hour,
                "over-threshold",
                format!("{id} placed on {cell} above the threshold"),
            );
        }
        true
    }

    fn setup(&mut self) {
        for _ in 0..self.cfg.cells {
            self.add_cell(0);
        }
        if self.cfg.control_plane_connections > 0 {
            for home in [0usize, 1] {
                let w = Workload {
                    pull: 0.0,
                    push: 0.0,
                    storage: GIB,
                    growth: 0.0,
                    burst_until: 0,
                    cp_conns: self.cfg.control_plane_connections as f64,
                };
                let mut p = Placeable::tenant(self.next_placeable, self.reservation(&w));
                self.next_placeable += 1;
                p.kind = Kind::ControlPlane;
                p.anti_affinity.push(AntiAffinity {
                    group: "k8s-api".into(),
                    scope: Scope::Cell,
                });
                p.pinned_to = self.system_cells.clone();
                let pi = self.fleet.add_placeable(p);
                self.work.push(w);
                self.cp.push(pi);
                if home < self.fleet.cells().len() {
                    self.fleet.assign(pi, home);
                }
            }
        }
        for _ in 0..self.cfg.tenants {
            for pi in self.new_tenant() {
                if !self.place_one(pi, 0) {
                    self.pending.push(pi);
                }
            }
        }
    }

    fn step(&mut self, hour: u32) {
        let now = Self::now(hour);
        let mut stats = HourStats {
            hour,
            ..HourStats::default()
        };
        // Readings: serving cells report every hour.
        for ci in 0..self.fleet.cells().len() {
            if self.fleet.cells()[ci].state == CellState::Active {
                self.fleet.cell_mut(ci).last_seen = now;
            }
        }
        // Failures and recoveries.
        let mut still = Vec::new();
        for (at, ci) in std::mem::take(&mut self.recover_at) {
            if at <= hour {
                if self.fleet.cells()[ci].state == CellState::Unknown {
                    let c = self.fleet.cell_mut(ci);
                    c.state = CellState::Active;
                    c.last_seen = now;
                }
            } else {
                still.push((at, ci));
            }
        }
        self.recover_at = still;
        let ncells = self.fleet.cells().len();
        let pf = self.cfg.failure_per_cell_day / 24.0;
        for ci in 0..ncells {
            // Drawn per (cell, hour) so that cells one policy adds and the
            // other does not leave the workload stream untouched.
            let id = self.fleet.cells()[ci].id.0 as u64;
            let mut r = Rng::new(self.cfg.seed ^ (id << 32) ^ hour as u64 ^ 0xFA11);
            if r.chance(pf) && self.fleet.cells()[ci].state == CellState::Active {
                self.fleet.cell_mut(ci).state = CellState::Unknown;
                self.recover_at.push((hour + self.cfg.failure_hours, ci));
                let id = self.fleet.cells()[ci].id;
                self.event(
                    hour,
                    "failed",
                    format!("cell {id}: usage unknown for {} h", self.cfg.failure_hours),
                );
            }
        }
        // Crunch and its restoration.
        if let Some(cr) = self.cfg.crunch.clone() {
            if cr.at_hour == hour {
                let mut evicted = 0;
                for ci in 1..=(cr.cells_removed as usize).min(ncells.saturating_sub(1)) {
                    self.fleet.cell_mut(ci).state = CellState::Retired;
                    for pi in self.fleet.members(ci).to_vec() {
                        if let Location::Moving { from, to } = self.fleet.location(pi) {
                            let keep = if from == ci { to } else { from };
                            self.fleet.unassign(pi);
                            self.fleet.assign(pi, keep);
                            continue;
                        }
                        self.fleet.unassign(pi);
                        self.pending.push(pi);
                        evicted += 1;
                    }
                }
                self.event(
                    hour,
                    "crunch",
                    format!(
                        "capacity crunch: cells c1-c{} taken away, {evicted} placeables evicted",
                        cr.cells_removed
                    ),
                );
                if cr.restore_after_hours > 0 {
                    self.restore_at = Some((hour + cr.restore_after_hours, cr.cells_removed));
                }
            }
        }
        if let Some((at, n)) = self.restore_at {
            if at == hour {
                for _ in 0..n {
                    let ci = self.add_cell(hour);
                    let id = self.fleet.cells()[ci].id;
                    if self.system_cells.len() < 3 + 2 {
                        self.system_cells.push(id);
                    }
                }
                for &pi in &self.cp.clone() {
                    self.fleet.set_pins(pi, self.system_cells.clone());
                }
                self.restore_at = None;
                self.event(
                    hour,
                    "restored",
                    format!("{n} cells added back after the crunch"),
                );
            }
        }
        if self.cfg.add_cell_every_hours > 0
            && hour > 0
            && hour.checked_rem(self.cfg.add_cell_every_hours) == Some(0)
        {
            self.add_cell(hour);
        }
        if self.operator_add_at == Some(hour) {
            let ci = self.add_cell(hour);
            let id = self.fleet.cells()[ci].id;
            self.operator_add_at = None;
            self.event(
                hour,
                "operator",
                format!("operator added cell {id} after an alert"),
            );
        }
        // Drains.
        if self.cfg.drain_every_hours > 0
            && hour > 0
            && hour.checked_rem(self.cfg.drain_every_hours) == Some(0)
        {
            // The oldest serving cell outside the system cells.
            let target = (0..self.fleet.cells().len()).find(|&ci| {
                self.fleet.cells()[ci].state == CellState::Active
                    && !self.drains.contains(&ci)
                    && ci > 2
            });
            if let Some(ci) = target {
                self.fleet.cell_mut(ci).state = CellState::Draining;
                self.drains.push(ci);
                let id = self.fleet.cells()[ci].id;
                self.event(hour, "drain", format!("cell {id} draining"));
            }
        }
        self.run_drains(hour, &mut stats);
        // Workload: departures, arrivals, growth, bursts.
        let n = self.fleet.placeables().len();
        let leaving = self
            .wrng
            .poisson(self.cfg.departures_per_day / 24.0 * n as f64);
        for _ in 0..leaving {
            let pi = self.wrng.below(n as u64) as usize;
            if self.fleet.placeables()[pi].kind == Kind::Tenant
                && self.fleet.location(pi) != Location::Gone
            {
                if let Location::Moving { .. } = self.fleet.location(pi) {
                    continue;
                }
                self.fleet.remove_placeable(pi);
                self.pending.retain(|&x| x != pi);
            }
        }
        let arriving = self.wrng.poisson(self.cfg.arrivals_per_day / 24.0);
        let mut new = Vec::new();
        for _ in 0..arriving {
            new.extend(self.new_tenant());
        }
        for pi in 0..self.work.len() {
            if self.wrng.chance(self.cfg.burst_chance) {
                self.work[pi].burst_until = hour + self.cfg.burst_hours;
            }
            let (max_storage, max_pull) = self.max_sizes();
            let w = &mut self.work[pi];
            if w.cp_conns > 0.0 {
                continue;
            }
            let g = 1.0 + w.growth / 24.0;
            w.storage = (w.storage * g).min(max_storage);
            let rg = 1.0 + w.growth / 96.0;
            w.pull = (w.pull * rg).min(max_pull);
            w.push = (w.push * rg).min(max_pull * self.cfg.push_share);
        }
        if hour.checked_rem(6) == Some(0) {
            for pi in 0..self.work.len() {
                if self.fleet.location(pi) == Location::Gone {
                    continue;
                }
                let r = self.reservation(&self.work[pi].clone());
                self.fleet.set_demand(pi, r);
            }
        }
        // Placement of pending and new placeables.
        let mut waiting = std::mem::take(&mut self.pending);
        waiting.extend(new);
        for pi in waiting {
            if self.fleet.location(pi) != Location::Unplaced {
                continue;
            }
            if !self.place_one(pi, hour) {
                self.pending.push(pi);
            }
        }
        // Rebalance (Wharf only): one step per hour, re-checked by the applier.
        if self.cfg.policy == PolicyKind::Wharf {
            let over = (0..self.fleet.cells().len()).any(|ci| {
                self.fleet.cells()[ci].state == CellState::Active
                    && !self.fleet.within_threshold(ci, &self.policy)
            });
            if over {
                let (step, stuck) = match rebalance(&self.fleet, &self.policy, now) {
                    Ok(plan) => (plan.steps.into_iter().next(), None),
                    Err(np) => (np.partial.steps.first().cloned(), Some(np)),
                };
                if let Some(np) = stuck {
                    for a in np.alerts().into_iter().take(3) {
                        self.event(hour, "no-plan", a.to_string());
                    }
                    if self.cfg.operator_response_hours > 0 && self.operator_add_at.is_none() {
                        self.operator_add_at = Some(hour + self.cfg.operator_response_hours);
                    }
                }
                if let Some(step) = step {
                    self.apply(&step, hour, &mut stats);
                }
            }
        }
        self.measure(hour, &mut stats);
        stats.unplaced = self.pending.len() as u32;
        self.out.hours.push(stats);
    }

    fn apply(&mut self, step: &crate::plan::Step, hour: u32, stats: &mut HourStats) {
        let now = Self::now(hour);
        match apply_step(&mut self.fleet, step, &self.policy, now) {
            Ok(()) => {
                stats.moves += step.moves.len() as u32;
                let b: u64 = step.moves.iter().map(|m| m.bytes).sum();
                stats.bytes_moved += b;
                self.out.moves += step.moves.len() as u64;
                self.out.bytes_moved += b;
            }
            Err(v) => self.event(hour, "applier", format!("step refused by the applier: {v}")),
        }
    }

    fn run_drains(&mut self, hour: u32, stats: &mut HourStats) {
        let now = Self::now(hour);
        for ci in self.drains.clone() {
            if self.fleet.members(ci).is_empty() {
                self.fleet.cell_mut(ci).state = CellState::Retired;
                self.drains.retain(|&x| x != ci);
                let id = self.fleet.cells()[ci].id;
                self.event(hour, "retired", format!("cell {id} drained and retired"));
                continue;
            }
            match self.cfg.policy {
                PolicyKind::Wharf => match drain(&self.fleet, ci, &self.policy, now) {
                    Ok(plan) => {
                        if let Some(s) = plan.steps.first() {
                            self.apply(&s.clone(), hour, stats);
                        }
                    }
                    Err(np) => {
                        if let Some(s) = np.partial.steps.first() {
                            self.apply(&s.clone(), hour, stats);
                        } else if let Some(a) = np.alerts().into_iter().next() {
                            self.event(hour, "no-plan", a.to_string());
                        }
                    }
                },
                PolicyKind::Permissive => {
                    for pi in self.fleet.members(ci).to_vec() {
                        if self.fleet.location(pi) != Location::At(ci) {
                            continue;
                        }
                        self.fleet.unassign(pi);
                        let b = self.fleet.placeables()[pi].demand[Dimension::Storage];
                        if self.place_one(pi, hour) {
                            stats.moves += 1;
                            stats.bytes_moved += b;
                            self.out.moves += 1;
                            self.out.bytes_moved += b;
                        } else {
                            self.pending.push(pi);
                        }
                    }
                }
            }
        }
    }

    fn measure(&mut self, hour: u32, stats: &mut HourStats) {
        let n = self.fleet.cells().len();
        let day = diurnal(hour);
        let mut use_: Vec<[f64; DIMS]> = vec![[0.0; DIMS]; n];
        let mut req: Vec<f64> = vec![0.0; n];
        let mut cp_conns: Vec<f64> = vec![0.0; n];
        let mut cp_hosts: Vec<f64> = vec![0.0; n];
        for pi in 0..self.work.len() {
            let (cells, k) = self.fleet.occupied(pi);
            if k == 0 {
                continue;
            }
            let w = &self.work[pi];
            let burst = if w.burst_until > hour {
                self.cfg.burst_factor
            } else {
                1.0
            };
            let f = day * burst;
            let rate = (w.pull + w.push) * f;
            let local_api = match self.cfg.policy {
                PolicyKind::Wharf => self.cfg.api_call_share,
                PolicyKind::Permissive => 0.0,
            };
            let conns = rate * self.cfg.request_seconds * (1.0 + local_api) + w.cp_conns;
            // A moving tenant's traffic stays on its old cell until the
            // route flips; its copy adds storage to both.
            let serving = cells[0];
            for &c in &cells[..k] {
                use_[c][Dimension::Storage.index()] += w.storage;
            }
            let u = &mut use_[serving];
            u[Dimension::Connections.index()] += conns;
            u[Dimension::PullRate.index()] += w.pull * f * 1000.0;
            u[Dimension::PushRate.index()] += w.push * f * 1000.0;
            u[Dimension::Bandwidth.index()] += w.pull * f * self.cfg.bytes_per_pull;
            req[serving] += rate;
            cp_conns[serving] += w.cp_conns;
            if w.cp_conns > 0.0 {
                cp_hosts[serving] += 1.0;
            }
        }
        // Permissive: every node's API calls go through the shared proxies
        // of the cells hosting the control-plane components, split by how
        // many components each hosts.
        let mut api_conns: Vec<f64> = vec![0.0; n];
        let hosts: f64 = cp_hosts.iter().sum();
        if self.cfg.policy == PolicyKind::Permissive && hosts > 0.0 {
            let total: f64 =
                req.iter().sum::<f64>() * self.cfg.api_call_share * self.cfg.request_seconds;
            for ci in 0..n {
                api_conns[ci] = total * cp_hosts[ci] / hosts;
                use_[ci][Dimension::Connections.index()] += api_conns[ci];
            }
        }
        let mut maxes = Vec::with_capacity(n);
        for ci in 0..n {
            let cell = &self.fleet.cells()[ci];
            if cell.state == CellState::Retired {
                continue;
            }
            let mut m: f64 = 0.0;
            for d in Dimension::ALL {
                let i = d.index();
                let u = use_[ci][i] / cell.capacity[d].max(1) as f64;
                m = m.max(u);
                stats.worst[i] = stats.worst[i].max(u);
                if u >= self.policy.warn[i] && self.warned[ci][i].is_none() {
                    self.warned[ci][i] = Some(hour);
                    stats.warnings += 1;
                    self.out.warnings += 1;
                }
                if u > self.policy.threshold[i] && !self.critical[ci][i] {
                    self.critical[ci][i] = true;
                    stats.criticals += 1;
                    self.out.criticals.push(Saturation {
                        cell: cell.id,
                        dimension: d,
                        hour,
                        warned_at: self.warned[ci][i],
                    });
                }
                if u >= 1.0 && !self.saturated[ci][i] {
                    self.saturated[ci][i] = true;
                    stats.saturations += 1;
                    self.out.saturations.push(Saturation {
                        cell: cell.id,
                        dimension: d,
                        hour,
                        warned_at: self.warned[ci][i],
                    });
                }
            }
            maxes.push(m);
            // The data path.
            let limit = cell.capacity[Dimension::Connections] as f64;
            let r = req[ci];
            let need = r * self.cfg.request_seconds;
            match self.cfg.policy {
                PolicyKind::Permissive => {
                    // One proxy: long-lived control-plane connections first,
                    // requests share the rest; past the limit the proxy
                    // stops accepting and the excess waits into a 504.
                    let avail = (limit - cp_conns[ci]).max(0.0);
                    let need = need + api_conns[ci];
                    if need > avail && need > 0.0 {
                        let frac = (need - avail) / need;
                        let calls = need / self.cfg.request_seconds;
                        let lost = (calls * 3600.0 * frac).round() as u64;
                        stats.timeouts += lost;
                        self.out.timeouts.push((hour, cell.id, lost));
                        self.out.limit_hours += 1;
                        if self.out.first_proxy_limit.is_none() {
                            self.out.first_proxy_limit = Some((hour, cell.id));
                            self.event(
                                hour,
                                "proxy-limit",
                                format!(
                                    "cell {}: shared proxy at its limit of {limit:.0} connections ({:.0} held by control-plane components, {need:.0} wanted by requests, {:.0} of them API calls from every cell)",
                                    cell.id, cp_conns[ci], api_conns[ci]
                                ),
                            );
                        }
                    }
                }
                PolicyKind::Wharf => {
                    // Each node owns limit/nodes connections; requests are
                    // spread over the nodes. A node admits what its pool
                    // serves within the admission wait bound and refuses the
                    // rest at once (503): the wait never reaches the deadline.
                    let nodes = self.cfg.nodes_per_cell.max(1) as f64;
                    let pool = limit / nodes;
                    let per_node = need * (1.0 + self.cfg.api_call_share) / nodes;
                    if per_node > pool && r > 0.0 {
                        let frac = (per_node - pool) / per_node;
                        stats.refused_fast += (r * 3600.0 * frac).round() as u64;
                        self.out.limit_hours += 1;
                    }
                    debug_assert!(self.cfg.admission_wait_seconds < self.cfg.deadline_seconds);
                }
            }
        }
        maxes.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if maxes.is_empty() {
                0.0
            } else {
                maxes[((maxes.len() - 1) as f64 * p).round() as usize]
            }
        };
        stats.percentiles = [pct(0.5), pct(0.9), pct(0.99), pct(1.0)];
        let v = anti_affinity_violations(&self.fleet).len() as u32;
        stats.aa_violations = v;
        if v > 0 && self.out.first_colocation.is_none() {
            self.out.first_colocation = Some(hour);
        }
    }
}

/// Runs a simulation from its seed. Same config, same result.
pub fn run(cfg: &SimConfig) -> SimResult {
    let mut sim = Sim::new(cfg.clone());
    sim.setup();
    for hour in 0..cfg.hours {
        sim.step(hour);
    }
    sim.out.final_placeables = sim
        .fleet
        .locations()
        .iter()
        .filter(|l| matches!(l, Location::At(_) | Location::Moving { .. }))
        .count() as u32;
    sim.out.final_cells = sim
        .fleet
        .cells()
        .iter()
        .filter(|c| c.state != CellState::Retired)
        .count() as u32;
    sim.out
}

/// Both policies on the same workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// Wharf's policy.
    pub wharf: SimResult,
    /// The permissive policy.
    pub permissive: SimResult,
}

/// Runs `cfg` once under each policy.
pub fn replay(cfg: &SimConfig) -> Replay {
    let mut w = cfg.clone();
    w.policy = PolicyKind::Wharf;
    let mut p = cfg.clone();
    p.policy = PolicyKind::Permissive;
    Replay {
        wharf: run(&w),
        permissive: run(&p),
    }
}
