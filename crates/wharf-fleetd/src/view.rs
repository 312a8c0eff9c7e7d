//! The fleet as the placement engine sees it: stored cells, tenants and
//! moves plus the latest scrape readings, turned into a
//! [`wharf_fleet::Fleet`] and a [`wharf_fleet::Policy`].
//!
//! Owns: that translation, and its two choices:
//!
//! - **Per-cell thresholds.** `wharf_fleet`'s policy has one threshold per
//!   dimension for the whole fleet (the service's default, e.g. 70%). A cell
//!   with its own threshold `t` is shown to the engine with its capacity
//!   scaled by `t / T` (`T` the fleet's), so that `used / scaled ≤ T` holds
//!   exactly when `used / capacity ≤ t`. Cells at the default threshold are
//!   shown as they are, so refusals' "needs N more" are in real units.
//! - **Use.** A tenant's demand is the larger of the reservation asked for
//!   at placement and what its home cell measured for it; a cell's base use
//!   is what it measured beyond its homed tenants (its nodes' pools, traffic
//!   of tenants homed elsewhere, tenants nobody placed). A cell never read
//!   is `Unknown`; one read too long ago keeps its last reading time, so the
//!   engine's stale rule names its age. A tenant with a move in flight
//!   occupies both cells, as the engine's `Moving` state means. A tenant
//!   placed but not yet created on its cell is pinned there.
//!
//! Must never: decide anything (that is `wharf_fleet`'s), or do I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use wharf_fleet::{
    AntiAffinity, Cell, CellId, CellState, Dimension, Fleet, Kind, Load, Placeable, PlaceableId,
    Policy, Scope, ZoneId, DIMS,
};

use crate::scrape::CellReading;
use crate::store::{CellLifecycle, CellRecord, GroupScope, MoveRecord, TenantRecord, TenantRules};

/// The fleet-wide knobs the engine applies.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// The default threshold per dimension (also what new cells get).
    pub threshold: [f64; DIMS],
    /// The default warning level.
    pub warn: [f64; DIMS],
    /// Moves in or out of one cell per plan step.
    pub max_moves_per_cell: usize,
    /// Seconds a reading stays fresh.
    pub staleness_bound: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = Policy::default();
        PolicyConfig {
            threshold: p.threshold,
            warn: p.warn,
            max_moves_per_cell: p.max_moves_per_cell,
            staleness_bound: 120,
        }
    }
}

/// How fresh a cell's figures are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// Read within the staleness bound.
    Fresh,
    /// Read, but longer ago than the bound.
    Stale,
    /// Never read.
    Unknown,
}

/// The engine's view, and the names behind its ids.
pub struct View {
    /// The fleet, with every cell, tenant and move in flight.
    pub fleet: Fleet,
    /// The policy decisions apply.
    pub policy: Policy,
    /// The time decisions are made at (unix seconds).
    pub now: u64,
    /// The stored cells, by fleet index.
    pub cells: Vec<CellRecord>,
    /// The readings, by cell id.
    pub readings: BTreeMap<u32, CellReading>,
    tenant_names: HashMap<PlaceableId, String>,
    tenant_index: HashMap<String, usize>,
}

/// The tenant id the engine knows a tenant being placed by (never a
/// stored id: those start at 1 and stay far below).
pub const NEW_TENANT: PlaceableId = PlaceableId(u32::MAX);

/// The engine's rules for `r`.
pub fn placeable(id: PlaceableId, demand: Load, r: &TenantRules) -> Placeable {
    Placeable {
        id,
        kind: Kind::Tenant,
        demand,
        growth_per_day: 0.0,
        anti_affinity: r
            .anti_affinity
            .iter()
            .map(|g| AntiAffinity {
                group: g.group.clone(),
                scope: match g.scope {
                    GroupScope::Cell => Scope::Cell,
                    GroupScope::Zone => Scope::Zone,
                },
            })
            .collect(),
        pinned_to: r.pinned_to.iter().map(|&c| CellId(c)).collect(),
        excluded: r.excluded.iter().map(|&c| CellId(c)).collect(),
    }
}

fn scaled_capacity(c: &CellRecord, fleet_threshold: &[f64; DIMS]) -> Load {
    let mut cap = Load(c.capacity);
    for d in Dimension::ALL {
        let (t, ft) = (c.threshold[d.index()], fleet_threshold[d.index()]);
        if t != ft && ft > 0.0 {
            cap[d] = (c.capacity[d.index()] as f64 * (t / ft)).floor() as u64;
        }
    }
    cap
}

impl View {
    /// Builds the view. `moves` are those in flight; one that no longer
    /// fits what is stored (a tenant gone, a cell unknown) is left out and
    /// logged.
    pub fn build(
        config: &PolicyConfig,
        cells: Vec<CellRecord>,
        tenants: &[TenantRecord],
        moves: &[MoveRecord],
        readings: BTreeMap<u32, CellReading>,
        now: u64,
    ) -> View {
        let policy = Policy {
            threshold: config.threshold,
            warn: config.warn,
            max_moves_per_cell: config.max_moves_per_cell,
            growth_horizon_days: 0.0,
        };
        let mut fleet = Fleet::default();
        for c in &cells {
            let reading = readings.get(&c.id);
            let seen = reading.and_then(|r| r.last_seen);
            let state = match (c.state, seen) {
                (CellLifecycle::Retired, _) => CellState::Retired,
                (CellLifecycle::Draining, _) => CellState::Draining,
                (CellLifecycle::Active, None) => CellState::Unknown,
                (CellLifecycle::Active, Some(_)) => CellState::Active,
            };
            fleet.add_cell(Cell {
                id: CellId(c.id),
                zone: ZoneId(c.zone),
                capacity: scaled_capacity(c, &config.threshold),
                base: Load::ZERO,
                state,
                last_seen: seen.unwrap_or(0),
                staleness_bound: config.staleness_bound,
            });
        }
        let mut tenant_names = HashMap::new();
        let mut tenant_index = HashMap::new();
        // A tenant's measured use is the largest any cell's reading gives
        // it, and every cell's base is its total less what its reading
        // gives the tenants known here, wherever they now live. Right after
        // a move the readings lag (the nodes count stored bytes every few
        // seconds): the old cell's still holds the tenant, the new one's
        // not yet. Read by the tenant's home alone, the old cell kept the
        // tenant's bytes as base and the new cell got only its reservation,
        // so the old cell still looked full and the next turn moved
        // another tenant out, and the one after moved the first back.
        let known: HashSet<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
        let mut measured_of: HashMap<&str, Load> = HashMap::new();
        let mut measured_here: HashMap<u32, Load> = HashMap::new();
        for (&cell, r) in &readings {
            for (name, l) in r.tenants.iter().filter(|(n, _)| known.contains(n.as_str())) {
                let m = measured_of.entry(name.as_str()).or_default();
                for d in Dimension::ALL {
                    m[d] = m[d].max(l[d]);
                }
                let h = measured_here.entry(cell).or_default();
                *h = h.plus(l);
            }
        }
        for t in tenants {
            if fleet.cell_idx(CellId(t.cell)).is_none() {
                continue;
            }
            let measured = measured_of
                .get(t.name.as_str())
                .copied()
                .unwrap_or(Load::ZERO);
            let mut demand = Load(t.demand);
            for d in Dimension::ALL {
                demand[d] = demand[d].max(measured[d]);
            }
            let id = PlaceableId(t.id);
            // Placed but not created on its cell yet: it stays where it was
            // placed (a plan must not move what does not exist).
            let pi = if t.on_cell {
                fleet.add_placeable(placeable(id, demand, &t.rules))
            } else {
                let mut rules = t.rules.clone();
                rules.pinned_to = vec![t.cell];
                fleet.add_placeable(placeable(id, demand, &rules))
            };
            tenant_names.insert(id, t.name.clone());
            tenant_index.insert(t.name.clone(), pi);
        }
        for m in moves.iter().filter(|m| m.state.in_flight()) {
            let (Some(&pi), Some(from), Some(to)) = (
                tenant_index.get(&m.tenant),
                fleet.cell_idx(CellId(m.from)),
                fleet.cell_idx(CellId(m.to)),
            ) else {
                tracing::warn!(move_id = m.id, "a move in flight names what is gone");
                continue;
            };
            // Before and after its route flip alike, a moving tenant
            // occupies both cells.
            fleet.assign(pi, from);
            fleet.begin_move(pi, to);
        }
        for (t, &pi) in tenants
            .iter()
            .filter_map(|t| tenant_index.get(&t.name).map(|pi| (t, pi)))
        {
            if fleet.location(pi) == wharf_fleet::Location::Unplaced {
                if let Some(ci) = fleet.cell_idx(CellId(t.cell)) {
                    fleet.assign(pi, ci);
                }
            }
        }
        for (ci, c) in cells.iter().enumerate() {
            if let Some(r) = readings.get(&c.id) {
                let here = measured_here.get(&c.id).copied().unwrap_or(Load::ZERO);
                fleet.set_base(ci, r.total.minus(&here));
            }
        }
        View {
            fleet,
            policy,
            now,
            cells,
            readings,
            tenant_names,
            tenant_index,
        }
    }

    /// The name of placeable `id` (`new tenant` for [`NEW_TENANT`]).
    pub fn tenant_name(&self, id: PlaceableId) -> String {
        if id == NEW_TENANT {
            return "the new tenant".into();
        }
        self.tenant_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    /// The fleet index of tenant `name`.
    pub fn tenant_idx(&self, name: &str) -> Option<usize> {
        self.tenant_index.get(name).copied()
    }

    /// A cell's use on `d` against its real capacity.
    pub fn utilisation(&self, ci: usize, d: Dimension) -> f64 {
        let used = self.fleet.used(ci)[d];
        let cap = self.cells[ci].capacity[d.index()];
        wharf_fleet::model::utilisation(used, cap)
    }

    /// How fresh cell `ci`'s figures are.
    pub fn freshness(&self, ci: usize) -> Freshness {
        match self
            .readings
            .get(&self.cells[ci].id)
            .and_then(|r| r.last_seen)
        {
            None => Freshness::Unknown,
            Some(_) if self.fleet.cells()[ci].is_stale(self.now) => Freshness::Stale,
            Some(_) => Freshness::Fresh,
        }
    }

    /// Whether some active, fresh cell is above its threshold on a
    /// dimension: the rebalancer's trigger.
    pub fn threshold_crossed(&self) -> bool {
        (0..self.cells.len()).any(|ci| {
            self.fleet.cells()[ci].state == CellState::Active
                && self.freshness(ci) == Freshness::Fresh
                && !self.fleet.within_threshold(ci, &self.policy)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MoveState;

    fn cell(id: u32, threshold: f64) -> CellRecord {
        CellRecord {
            id,
            zone: id as u16,
            state: CellLifecycle::Active,
            capacity: [100, 1000, 1000, 1000, 1000],
            threshold: [threshold; DIMS],
            warn: [0.6; DIMS],
            nodes: vec![],
            created_unix: 0,
            updated_unix: 0,
        }
    }

    fn tenant(id: u32, name: &str, cell: u32, storage: u64) -> TenantRecord {
        TenantRecord {
            id,
            name: name.into(),
            cell,
            hostname: None,
            demand: [0, storage, 0, 0, 0],
            rules: TenantRules::default(),
            created_unix: 0,
            on_cell: true,
            quota: Default::default(),
        }
    }

    fn reading(at: u64, total_storage: u64, tenants: &[(&str, u64)]) -> CellReading {
        let mut r = CellReading {
            last_seen: Some(at),
            ..CellReading::default()
        };
        r.total[Dimension::Connections] = 20;
        r.total[Dimension::Storage] = total_storage;
        for (n, s) in tenants {
            let mut l = Load::ZERO;
            l[Dimension::Storage] = *s;
            r.tenants.insert(n.to_string(), l);
        }
        r
    }

    #[test]
    fn a_cells_own_threshold_scales_its_capacity() {
        let c = cell(1, 0.35);
        let cap = scaled_capacity(&c, &[0.7; DIMS]);
        assert_eq!(cap[Dimension::Storage], 500);
        assert_eq!(
            scaled_capacity(&cell(1, 0.7), &[0.7; DIMS]),
            Load(c.capacity)
        );
    }

    #[test]
    fn use_is_measured_or_reserved_and_the_rest_is_base() {
        let cfg = PolicyConfig::default();
        let readings = BTreeMap::from([(1, reading(1000, 600, &[("a", 300), ("b", 100)]))]);
        let v = View::build(
            &cfg,
            vec![cell(1, 0.7), cell(2, 0.7)],
            &[tenant(1, "a", 1, 50), tenant(2, "b", 1, 200)],
            &[],
            readings,
            1010,
        );
        // a: measured 300 > reserved 50; b: reserved 200 > measured 100;
        // base: 600 - (300 + 100) = 200; connections from the pools.
        assert_eq!(v.fleet.used(0)[Dimension::Storage], 300 + 200 + 200);
        assert_eq!(v.fleet.used(0)[Dimension::Connections], 20);
        assert_eq!(v.freshness(0), Freshness::Fresh);
        assert_eq!(v.freshness(1), Freshness::Unknown);
        assert_eq!(v.fleet.cells()[1].state, CellState::Unknown);
        // 700/1000 is at the threshold, not above it.
        assert!(!v.threshold_crossed());
    }

    /// Just after tenant a moved from cell 1 to cell 2 neither reading
    /// has caught up: cell 1's still counts a, cell 2's does not yet. The
    /// view puts a's measured bytes on cell 2 and takes them off cell 1,
    /// so cell 1 no longer looks over its threshold (which made the
    /// rebalancer move a second tenant out, then the first one back).
    #[test]
    fn a_moved_tenant_counts_where_it_is_now_before_the_readings_catch_up() {
        let cfg = PolicyConfig::default();
        let readings = BTreeMap::from([
            (
                1,
                reading(1000, 850, &[("a", 400), ("b", 400), ("gone", 20)]),
            ),
            (2, reading(1000, 100, &[("c", 50)])),
        ]);
        let v = View::build(
            &cfg,
            vec![cell(1, 0.7), cell(2, 0.7)],
            &[
                tenant(1, "a", 2, 10),
                tenant(2, "b", 1, 10),
                tenant(3, "c", 2, 10),
            ],
            &[],
            readings,
            1005,
        );
        // Cell 1: base 850 - (400 + 400) = 50 (the unknown tenant's 20
        // stays in it), plus b. Cell 2: base 50, plus c and a.
        assert_eq!(v.fleet.used(0)[Dimension::Storage], 50 + 400);
        assert_eq!(v.fleet.used(1)[Dimension::Storage], 50 + 50 + 400);
        assert!(!v.threshold_crossed(), "neither cell is over 700 of 1000");
    }

    #[test]
    fn moving_tenants_occupy_both_cells_and_old_readings_are_stale() {
        let cfg = PolicyConfig::default();
        let readings = BTreeMap::from([(1, reading(0, 0, &[])), (2, reading(1000, 0, &[]))]);
        let m = MoveRecord {
            id: 1,
            tenant: "a".into(),
            from: 1,
            to: 2,
            state: MoveState::Planned,
            step: "planned".into(),
            counters: serde_json::json!({}),
            reason: String::new(),
            started_unix: 0,
            updated_unix: 0,
            step_since_unix: 0,
            error: None,
            fence_start_unix: None,
            fence_end_unix: None,
        };
        let v = View::build(
            &cfg,
            vec![cell(1, 0.7), cell(2, 0.7)],
            &[tenant(1, "a", 1, 100)],
            &[m],
            readings,
            1000,
        );
        assert_eq!(v.fleet.used(0)[Dimension::Storage], 100);
        assert_eq!(v.fleet.used(1)[Dimension::Storage], 100);
        assert_eq!(v.freshness(0), Freshness::Stale);
        assert_eq!(v.tenant_name(PlaceableId(1)), "a");
    }
}
