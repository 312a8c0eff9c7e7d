//! Plans of moves, and the one applier that re-checks them (Nomad's split:
//! schedulers propose, one applier verifies against the state it applies to).
//!
//! Owns: [`rebalance`] (bring every active cell within the threshold on
//! every dimension), [`drain`] (empty one cell), both as ordered steps of
//! concurrent moves with at most K moves in or out of any cell per step, and
//! [`apply_step`] / [`apply`], which refuse a step that would break a hard
//! rule. While a placeable moves it occupies both cells, for use and for
//! anti-affinity alike.
//! Must never: let a step take a cell above the threshold or put two members
//! of an anti-affinity group together, even for the length of a move; when
//! no such plan exists, it says what capacity is missing instead.

use std::collections::BTreeMap;
use std::fmt;

use crate::alert::{Alert, Severity};
use crate::model::{
    utilisation, CellId, CellState, Dimension, Fleet, Load, Location, PlaceableId, Policy, Scope,
    ZoneId, DIMS,
};
use crate::place::{filter, Reason};

/// Why a move is in a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum MoveWhy {
    /// Its cell was above the threshold on this dimension.
    Relieve {
        /// The cell relieved.
        cell: CellId,
        /// Its worst dimension when the move was chosen.
        dimension: Dimension,
        /// That dimension's utilisation (after the step's earlier moves).
        utilisation: f64,
    },
    /// Its cell is being emptied.
    Drain {
        /// The cell drained.
        cell: CellId,
    },
}

/// One move of one placeable.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// What moves.
    pub placeable: PlaceableId,
    /// From this cell.
    pub from: CellId,
    /// To this cell.
    pub to: CellId,
    /// Storage bytes copied.
    pub bytes: u64,
    /// Why.
    pub why: MoveWhy,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} ({})",
            self.placeable,
            self.from,
            self.to,
            Dimension::Storage.format(self.bytes as f64)
        )?;
        match &self.why {
            MoveWhy::Relieve {
                cell,
                dimension,
                utilisation,
            } => write!(
                f,
                ": relieves {cell}, {dimension} at {:.1}%",
                utilisation * 100.0
            ),
            MoveWhy::Drain { cell } => write!(f, ": drains {cell}"),
        }
    }
}

/// Moves that run at the same time; the next step starts when all finish.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Step {
    /// The moves.
    pub moves: Vec<Move>,
}

/// An ordered list of steps.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Storage bytes copied by all moves.
    pub bytes_moved: u64,
    /// Storage bytes any plan must copy: each cell's storage above the
    /// threshold (all of it for a drained cell), summed.
    pub lower_bound_bytes: u64,
}

impl Plan {
    /// Number of moves.
    pub fn moves(&self) -> usize {
        self.steps.iter().map(|s| s.moves.len()).sum()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} move(s) in {} step(s), {} copied (lower bound {})",
            self.moves(),
            self.steps.len(),
            Dimension::Storage.format(self.bytes_moved as f64),
            Dimension::Storage.format(self.lower_bound_bytes as f64)
        )?;
        for (i, s) in self.steps.iter().enumerate() {
            for m in &s.moves {
                writeln!(f, "  step {}: {m}", i + 1)?;
            }
        }
        Ok(())
    }
}

/// A cell the plan could not bring within the threshold (or empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    /// The cell.
    pub cell: CellId,
    /// Its zone.
    pub zone: ZoneId,
    /// What is still above the threshold per dimension, or for a drain
    /// everything still on it.
    pub excess: Load,
    /// Whether it was being drained.
    pub drain: bool,
}

/// Capacity that, added in one zone, would let the plan finish: a new cell
/// there with at least this capacity on each dimension takes the placeables
/// the stuck cells must shed.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    /// Where to add it (no zone-scoped anti-affinity rule keeps the
    /// placeables out of it).
    pub zone: ZoneId,
    /// Capacity per dimension (raw, so that the placeables fit within the
    /// threshold).
    pub capacity: Load,
}

/// No plan satisfies every rule.
#[derive(Clone, Debug, PartialEq)]
pub struct NoPlan {
    /// The steps that could be made before getting stuck (each is valid
    /// and worth applying).
    pub partial: Plan,
    /// Cells still above the threshold (or not empty, for a drain).
    pub stuck: Vec<Stuck>,
    /// What to add, and where.
    pub shortfall: Vec<Shortfall>,
    /// Placeables that must leave a stuck cell but are pinned, so no new
    /// capacity elsewhere helps them.
    pub pinned: Vec<PlaceableId>,
}

impl NoPlan {
    /// One critical alert per stuck cell, labelled with its worst dimension.
    pub fn alerts(&self) -> Vec<Alert> {
        let add = self.shortfall_text();
        self.stuck
            .iter()
            .map(|s| {
                let worst = Dimension::ALL
                    .into_iter()
                    .max_by_key(|&d| s.excess[d])
                    .unwrap_or(Dimension::Storage);
                Alert {
                    name: if s.drain {
                        "wharf_fleet_drain_impossible"
                    } else {
                        "wharf_fleet_rebalance_impossible"
                    },
                    severity: Severity::Critical,
                    labels: vec![
                        ("cell", s.cell.to_string()),
                        ("zone", s.zone.to_string()),
                        ("dimension", worst.label().to_string()),
                    ],
                    message: format!("cell {}: no valid plan; {add}", s.cell),
                }
            })
            .collect()
    }

    fn shortfall_text(&self) -> String {
        if self.shortfall.is_empty() {
            return "no added capacity helps (pinned placeables)".into();
        }
        let parts: Vec<String> = self
            .shortfall
            .iter()
            .map(|s| {
                let dims: Vec<String> = Dimension::ALL
                    .into_iter()
                    .filter(|&d| s.capacity[d] > 0)
                    .map(|d| format!("{} {}", d.format(s.capacity[d] as f64), d))
                    .collect();
                format!("in {}: a cell with {}", s.zone, dims.join(", "))
            })
            .collect();
        format!("add {}", parts.join("; "))
    }
}

impl fmt::Display for NoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "no plan keeps every rule: {} cell(s) stuck after {} move(s)",
            self.stuck.len(),
            self.partial.moves()
        )?;
        for s in &self.stuck {
            let over: Vec<String> = Dimension::ALL
                .into_iter()
                .filter(|&d| s.excess[d] > 0)
                .map(|d| format!("{} {}", d.format(s.excess[d] as f64), d))
                .collect();
            let what = if s.drain {
                "still holds"
            } else {
                "still over by"
            };
            writeln!(
                f,
                "  cell {} ({}): {what} {}",
                s.cell,
                s.zone,
                over.join(", ")
            )?;
        }
        if !self.pinned.is_empty() {
            let p: Vec<String> = self.pinned.iter().map(|p| p.to_string()).collect();
            writeln!(f, "  pinned, cannot move: {}", p.join(", "))?;
        }
        writeln!(f, "  {}", self.shortfall_text())
    }
}

/// The most a cell of `capacity` may use on `d` within the threshold.
pub fn allowed(policy: &Policy, d: Dimension, capacity: u64) -> u64 {
    let mut a = (capacity as f64 * policy.threshold[d.index()]).floor() as u64;
    while a > 0 && !policy.within(d, a, capacity) {
        a -= 1;
    }
    while policy.within(d, a + 1, capacity) {
        a += 1;
    }
    a
}

/// What a cell using `used` has above the threshold, per dimension.
pub fn excess(policy: &Policy, used: &Load, capacity: &Load) -> Load {
    let mut e = Load::ZERO;
    for d in Dimension::ALL {
        e[d] = used[d].saturating_sub(allowed(policy, d, capacity[d]));
    }
    e
}

#[derive(Clone, Copy, PartialEq)]
enum Goal {
    Relieve,
    Drain(usize),
}

fn is_source(fleet: &Fleet, ci: usize, policy: &Policy, now: u64, goal: Goal) -> bool {
    let cell = &fleet.cells()[ci];
    match goal {
        Goal::Drain(d) => d == ci,
        Goal::Relieve => {
            cell.state == CellState::Active
                && !cell.is_stale(now)
                && !fleet.within_threshold(ci, policy)
        }
    }
}

fn at_rest_members(fleet: &Fleet, ci: usize) -> Vec<usize> {
    let mut v: Vec<usize> = fleet
        .members(ci)
        .iter()
        .copied()
        .filter(|&pi| fleet.location(pi) == Location::At(ci))
        .collect();
    v.sort_unstable();
    v
}

/// Candidates to leave cell `ci`, best first. Relief: least storage bytes
/// per unit of excess removed (excess counted up to what is left, each
/// dimension relative to its capacity), ties by placeable id. Drain: the
/// hardest to fit first (largest share of a cell on any dimension).
fn candidates(fleet: &Fleet, ci: usize, left: &Load, goal: Goal) -> Vec<usize> {
    let cap = fleet.cells()[ci].capacity;
    let members = at_rest_members(fleet, ci);
    let ps = fleet.placeables();
    match goal {
        Goal::Drain(_) => {
            let mut v: Vec<(f64, usize)> = members
                .into_iter()
                .map(|pi| {
                    let s = Dimension::ALL
                        .into_iter()
                        .map(|d| utilisation(ps[pi].demand[d], cap[d]))
                        .fold(0.0, f64::max);
                    (s, pi)
                })
                .collect();
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(ps[a.1].id.cmp(&ps[b.1].id)));
            v.into_iter().map(|x| x.1).collect()
        }
        Goal::Relieve => {
            let mut v: Vec<(f64, usize)> = members
                .into_iter()
                .filter_map(|pi| {
                    let dem = &ps[pi].demand;
                    let mut relief = 0.0;
                    for d in Dimension::ALL {
                        if left[d] > 0 {
                            relief += dem[d].min(left[d]) as f64 / cap[d].max(1) as f64;
                        }
                    }
                    if relief <= 0.0 {
                        return None;
                    }
                    let cost = (dem[Dimension::Storage] as f64 + 1_048_576.0) / relief;
                    Some((cost, pi))
                })
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0).then(ps[a.1].id.cmp(&ps[b.1].id)));
            let mut order: Vec<usize> = v.into_iter().map(|x| x.1).collect();
            // A single placeable that removes the whole excess goes first
            // when it copies at most twice what must be copied anyway:
            // shedding many small ones would overshoot on the last one.
            let bytes = |pi: usize| ps[pi].demand[Dimension::Storage];
            let fixer = order
                .iter()
                .copied()
                .filter(|&pi| Dimension::ALL.iter().all(|&d| ps[pi].demand[d] >= left[d]))
                .min_by(|&a, &b| bytes(a).cmp(&bytes(b)).then(ps[a].id.cmp(&ps[b].id)));
            if let (Some(f), Some(&first)) = (fixer, order.first()) {
                let must = left[Dimension::Storage].max(bytes(first));
                if bytes(f) <= must.saturating_mul(2) {
                    order.retain(|&x| x != f);
                    order.insert(0, f);
                }
            }
            order
        }
    }
}

fn best_destination(
    fleet: &Fleet,
    pi: usize,
    src: usize,
    policy: &Policy,
    now: u64,
    count: &[usize],
    k: usize,
) -> Option<usize> {
    let mut best: Option<(f64, CellId, usize)> = None;
    for (ci, cell) in fleet.cells().iter().enumerate() {
        if ci == src || count[ci] >= k {
            continue;
        }
        if let Ok((score, _)) = filter(fleet, pi, ci, policy, now) {
            let better = match best {
                None => true,
                Some((s, id, _)) => score < s || (score == s && cell.id < id),
            };
            if better {
                best = Some((score, cell.id, ci));
            }
        }
    }
    best.map(|b| b.2)
}

fn lower_bound(fleet: &Fleet, policy: &Policy, now: u64, goal: Goal) -> u64 {
    (0..fleet.cells().len())
        .filter(|&ci| is_source(fleet, ci, policy, now, goal))
        .map(|ci| match goal {
            Goal::Drain(_) => at_rest_members(fleet, ci)
                .iter()
                .map(|&pi| fleet.placeables()[pi].demand[Dimension::Storage])
                .sum(),
            Goal::Relieve => {
                excess(policy, &fleet.used(ci), &fleet.cells()[ci].capacity)[Dimension::Storage]
            }
        })
        .sum()
}

fn plan_with(fleet: &Fleet, policy: &Policy, now: u64, goal: Goal) -> Result<Plan, NoPlan> {
    let mut work = fleet.clone();
    if let Goal::Drain(ci) = goal {
        work.cell_mut(ci).state = CellState::Draining;
    }
    let k = policy.max_moves_per_cell.max(1);
    let mut plan = Plan {
        lower_bound_bytes: lower_bound(&work, policy, now, goal),
        ..Plan::default()
    };
    loop {
        let n = work.cells().len();
        let sources: Vec<usize> = {
            let mut s: Vec<usize> = (0..n)
                .filter(|&ci| is_source(&work, ci, policy, now, goal))
                .filter(|&ci| match goal {
                    Goal::Drain(_) => !at_rest_members(&work, ci).is_empty(),
                    Goal::Relieve => true,
                })
                .collect();
            s.sort_by_key(|&ci| work.cells()[ci].id);
            s
        };
        if sources.is_empty() {
            return Ok(plan);
        }
        let mut count = vec![0usize; n];
        let mut leaving = vec![Load::ZERO; n];
        let mut step = Step::default();
        let mut moving = Vec::new();
        for &ci in &sources {
            while count[ci] < k {
                let cap = work.cells()[ci].capacity;
                let after = work.used(ci).minus(&leaving[ci]);
                let left = excess(policy, &after, &cap);
                if goal == Goal::Relieve && left == Load::ZERO {
                    break;
                }
                let mut chosen = None;
                for pi in candidates(&work, ci, &left, goal) {
                    if let Some(dest) = best_destination(&work, pi, ci, policy, now, &count, k) {
                        chosen = Some((pi, dest));
                        break;
                    }
                }
                let Some((pi, dest)) = chosen else { break };
                let why = match goal {
                    Goal::Drain(_) => MoveWhy::Drain {
                        cell: work.cells()[ci].id,
                    },
                    Goal::Relieve => {
                        let (u, d) = Dimension::ALL
                            .into_iter()
                            .map(|d| (utilisation(after[d], cap[d]), d))
                            .fold((f64::NEG_INFINITY, Dimension::Connections), |a, b| {
                                if b.0 > a.0 {
                                    b
                                } else {
                                    a
                                }
                            });
                        MoveWhy::Relieve {
                            cell: work.cells()[ci].id,
                            dimension: d,
                            utilisation: u,
                        }
                    }
                };
                let p = &work.placeables()[pi];
                let bytes = p.demand[Dimension::Storage];
                leaving[ci] = leaving[ci].plus(&p.demand);
                step.moves.push(Move {
                    placeable: p.id,
                    from: work.cells()[ci].id,
                    to: work.cells()[dest].id,
                    bytes,
                    why,
                });
                work.begin_move(pi, dest);
                moving.push(pi);
                count[ci] += 1;
                count[dest] += 1;
                plan.bytes_moved += bytes;
            }
        }
        if step.moves.is_empty() {
            return Err(no_plan(&work, policy, goal, plan, &sources));
        }
        for pi in moving {
            work.finish_move(pi);
        }
        plan.steps.push(step);
    }
}

fn no_plan(work: &Fleet, policy: &Policy, goal: Goal, partial: Plan, sources: &[usize]) -> NoPlan {
    let mut stuck = Vec::new();
    let mut pinned = Vec::new();
    let mut per_zone: BTreeMap<ZoneId, Load> = BTreeMap::new();
    let mut zones: Vec<ZoneId> = work
        .cells()
        .iter()
        .filter(|c| c.state != CellState::Retired)
        .map(|c| c.zone)
        .collect();
    zones.sort();
    zones.dedup();
    for &ci in sources {
        let cell = &work.cells()[ci];
        let used = work.used(ci);
        let mut left = match goal {
            Goal::Drain(_) => {
                let mut l = Load::ZERO;
                for pi in at_rest_members(work, ci) {
                    l = l.plus(&work.placeables()[pi].demand);
                }
                l
            }
            Goal::Relieve => excess(policy, &used, &cell.capacity),
        };
        stuck.push(Stuck {
            cell: cell.id,
            zone: cell.zone,
            excess: left,
            drain: matches!(goal, Goal::Drain(_)),
        });
        for pi in candidates(work, ci, &left, goal) {
            if left == Load::ZERO && goal == Goal::Relieve {
                break;
            }
            let p = &work.placeables()[pi];
            if !p.pinned_to.is_empty() {
                pinned.push(p.id);
                continue;
            }
            let zone = zones.iter().copied().find(|&z| {
                !p.anti_affinity.iter().any(|aa| {
                    work.group(&aa.group).iter().any(|&o| {
                        if o == pi {
                            return false;
                        }
                        let zone_scoped = aa.scope == Scope::Zone
                            || work.placeables()[o]
                                .anti_affinity
                                .iter()
                                .any(|x| x.group == aa.group && x.scope == Scope::Zone);
                        let (occ, n) = work.occupied(o);
                        zone_scoped && occ[..n].iter().any(|&c| work.cells()[c].zone == z)
                    })
                })
            });
            let Some(zone) = zone else { continue };
            let e = per_zone.entry(zone).or_default();
            *e = e.plus(&policy.reserved(p));
            left = left.minus(&p.demand);
        }
    }
    let shortfall = per_zone
        .into_iter()
        .map(|(zone, need)| {
            let mut capacity = Load::ZERO;
            for d in Dimension::ALL {
                if need[d] == 0 {
                    continue;
                }
                let mut c = (need[d] as f64 / policy.threshold[d.index()]).ceil() as u64;
                while !policy.within(d, need[d], c) {
                    c += 1;
                }
                capacity[d] = c;
            }
            Shortfall { zone, capacity }
        })
        .collect();
    pinned.sort();
    pinned.dedup();
    NoPlan {
        partial,
        stuck,
        shortfall,
        pinned,
    }
}

/// A plan bringing every active, freshly read cell within the threshold on
/// every dimension. Greedy: each over-threshold cell (by id) sheds the
/// placeables with the fewest storage bytes per unit of excess removed,
/// each to the passing cell with the lowest resulting maximum utilisation,
/// at most `max_moves_per_cell` moves touching a cell per step. Cells that
/// are draining, unknown or stale are not relieved here.
pub fn rebalance(fleet: &Fleet, policy: &Policy, now: u64) -> Result<Plan, NoPlan> {
    plan_with(fleet, policy, now, Goal::Relieve)
}

/// A plan emptying cell `ci` (treated as draining while planning: nothing
/// moves in). Apply it to a fleet where the cell is already draining.
pub fn drain(fleet: &Fleet, ci: usize, policy: &Policy, now: u64) -> Result<Plan, NoPlan> {
    plan_with(fleet, policy, now, Goal::Drain(ci))
}

/// A step or state that breaks a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// A move names an id the fleet does not know.
    UnknownId(String),
    /// The placeable is not at rest on the move's source.
    NotAt {
        /// The placeable.
        placeable: PlaceableId,
        /// Where the move expected it.
        expected: CellId,
    },
    /// More moves touch a cell in one step than allowed.
    TooManyMoves {
        /// The cell.
        cell: CellId,
        /// How many.
        moves: usize,
        /// The limit.
        limit: usize,
    },
    /// The destination fails a filter.
    Rejected {
        /// The placeable.
        placeable: PlaceableId,
        /// The destination.
        cell: CellId,
        /// The rule.
        reason: Reason,
    },
    /// A cell receiving placeables is above the threshold.
    OverThreshold {
        /// The cell.
        cell: CellId,
        /// The dimension.
        dimension: Dimension,
        /// Its utilisation.
        utilisation: f64,
    },
    /// Two members of a group share a cell (or a zone, for zone scope).
    AntiAffinity {
        /// The group.
        group: String,
        /// One member.
        a: PlaceableId,
        /// The other.
        b: PlaceableId,
        /// Where (one of the cells, for zone scope).
        cell: CellId,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnknownId(s) => write!(f, "unknown id {s}"),
            Violation::NotAt {
                placeable,
                expected,
            } => write!(f, "{placeable} is not at rest on {expected}"),
            Violation::TooManyMoves { cell, moves, limit } => {
                write!(f, "{moves} moves touch {cell} in one step > {limit}")
            }
            Violation::Rejected {
                placeable,
                cell,
                reason,
            } => write!(f, "{placeable} cannot go to {cell}: {reason}"),
            Violation::OverThreshold {
                cell,
                dimension,
                utilisation,
            } => write!(
                f,
                "{cell}: {dimension} at {:.1}% is above the threshold",
                utilisation * 100.0
            ),
            Violation::AntiAffinity { group, a, b, cell } => {
                write!(
                    f,
                    "anti-affinity group {group}: {a} and {b} together at {cell}"
                )
            }
        }
    }
}

/// Applies one step to `fleet`, re-checking every rule: each placeable is at
/// rest on its source, at most K moves touch a cell, each destination
/// passes every filter, and with all the step's placeables occupying both
/// of their cells no destination is above the threshold and no group is
/// together. On error the fleet is left as it was.
pub fn apply_step(
    fleet: &mut Fleet,
    step: &Step,
    policy: &Policy,
    now: u64,
) -> Result<(), Violation> {
    let mut begun = Vec::new();
    let r = try_step(fleet, step, policy, now, &mut begun);
    if r.is_err() {
        for &pi in begun.iter().rev() {
            fleet.cancel_move(pi);
        }
    }
    r
}

fn try_step(
    fleet: &mut Fleet,
    step: &Step,
    policy: &Policy,
    now: u64,
    begun: &mut Vec<usize>,
) -> Result<(), Violation> {
    let mut resolved = Vec::with_capacity(step.moves.len());
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for m in &step.moves {
        let pi = fleet
            .placeable_idx(m.placeable)
            .ok_or_else(|| Violation::UnknownId(m.placeable.to_string()))?;
        let from = fleet
            .cell_idx(m.from)
            .ok_or_else(|| Violation::UnknownId(m.from.to_string()))?;
        let to = fleet
            .cell_idx(m.to)
            .ok_or_else(|| Violation::UnknownId(m.to.to_string()))?;
        if fleet.location(pi) != Location::At(from) || from == to {
            return Err(Violation::NotAt {
                placeable: m.placeable,
                expected: m.from,
            });
        }
        *count.entry(from).or_default() += 1;
        *count.entry(to).or_default() += 1;
        resolved.push((pi, to));
    }
    let limit = policy.max_moves_per_cell.max(1);
    for (&ci, &moves) in &count {
        if moves > limit {
            return Err(Violation::TooManyMoves {
                cell: fleet.cells()[ci].id,
                moves,
                limit,
            });
        }
    }
    for &(pi, to) in &resolved {
        if let Err(reason) = filter(fleet, pi, to, policy, now) {
            return Err(Violation::Rejected {
                placeable: fleet.placeables()[pi].id,
                cell: fleet.cells()[to].id,
                reason,
            });
        }
        fleet.begin_move(pi, to);
        begun.push(pi);
    }
    for &(pi, to) in &resolved {
        if let Some(v) = over_threshold(fleet, to, policy) {
            return Err(v);
        }
        let (occ, n) = fleet.occupied(pi);
        for &c in &occ[..n] {
            if let Some((group, _, other)) = fleet.anti_affinity_conflict(pi, c) {
                return Err(Violation::AntiAffinity {
                    group: group.to_string(),
                    a: fleet.placeables()[pi].id,
                    b: fleet.placeables()[other].id,
                    cell: fleet.cells()[c].id,
                });
            }
        }
    }
    for &(pi, _) in &resolved {
        fleet.finish_move(pi);
    }
    Ok(())
}

/// Applies a whole plan to a copy of `fleet`; on error, the index of the
/// failing step and the violation.
pub fn apply(
    fleet: &Fleet,
    plan: &Plan,
    policy: &Policy,
    now: u64,
) -> Result<Fleet, (usize, Violation)> {
    let mut f = fleet.clone();
    for (i, s) in plan.steps.iter().enumerate() {
        apply_step(&mut f, s, policy, now).map_err(|v| (i, v))?;
    }
    Ok(f)
}

fn over_threshold(fleet: &Fleet, ci: usize, policy: &Policy) -> Option<Violation> {
    let cap = fleet.cells()[ci].capacity;
    let used = fleet.used(ci);
    for d in Dimension::ALL {
        if !policy.within(d, used[d], cap[d]) {
            return Some(Violation::OverThreshold {
                cell: fleet.cells()[ci].id,
                dimension: d,
                utilisation: utilisation(used[d], cap[d]),
            });
        }
    }
    None
}

/// Every anti-affinity pair together in the current state (moving
/// placeables occupy both cells), each pair once.
pub fn anti_affinity_violations(fleet: &Fleet) -> Vec<Violation> {
    let mut out = Vec::new();
    for pi in 0..fleet.placeables().len() {
        let (occ, n) = fleet.occupied(pi);
        for &c in &occ[..n] {
            let p = &fleet.placeables()[pi];
            for aa in &p.anti_affinity {
                for &o in fleet.group(&aa.group) {
                    if o <= pi {
                        continue;
                    }
                    let (oocc, on) = fleet.occupied(o);
                    let zone_scoped = aa.scope == Scope::Zone
                        || fleet.placeables()[o]
                            .anti_affinity
                            .iter()
                            .any(|x| x.group == aa.group && x.scope == Scope::Zone);
                    let clash = oocc[..on].iter().any(|&oc| {
                        oc == c || (zone_scoped && fleet.cells()[oc].zone == fleet.cells()[c].zone)
                    });
                    if clash {
                        out.push(Violation::AntiAffinity {
                            group: aa.group.clone(),
                            a: p.id,
                            b: fleet.placeables()[o].id,
                            cell: fleet.cells()[c].id,
                        });
                    }
                }
            }
        }
    }
    out.dedup();
    out
}

/// Cells above the threshold on some dimension (worst dimension each).
pub fn over_threshold_cells(fleet: &Fleet, policy: &Policy) -> Vec<Violation> {
    (0..fleet.cells().len())
        .filter_map(|ci| over_threshold(fleet, ci, policy))
        .collect()
}

/// Total use per dimension across placeable-bearing cells (for reports).
pub fn total_use(fleet: &Fleet) -> Load {
    let mut t = [0u64; DIMS];
    for ci in 0..fleet.cells().len() {
        let u = fleet.used(ci);
        for (i, v) in t.iter_mut().enumerate() {
            *v += u.0[i];
        }
    }
    Load(t)
}
