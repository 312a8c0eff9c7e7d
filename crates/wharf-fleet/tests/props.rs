//! Property tests on random fleets. The checks here recompute every rule
//! from the raw state (use summed from scratch, anti-affinity from
//! locations) instead of calling the crate's own filter.

use proptest::prelude::*;
use wharf_fleet::model::utilisation;
use wharf_fleet::*;

const GIB: u64 = 1 << 30;

#[derive(Clone, Debug)]
struct Spec {
    cells: Vec<(u16, u64, u8)>, // zone, capacity scale, state (0..=9: 0 draining, 1 unknown, 2 stale)
    tenants: Vec<(u64, u64, u64, u8, u8, u8)>, // storage MiB, conns, pull, group, pin, exclude
}

fn cap(scale: u64) -> Load {
    Load([
        100 * scale,
        100 * GIB * scale,
        100_000 * scale,
        10_000 * scale,
        GIB * scale,
    ])
}

fn build(spec: &Spec) -> Fleet {
    let mut f = Fleet::new(Vec::new());
    for (i, &(zone, scale, state)) in spec.cells.iter().enumerate() {
        let mut c = Cell::new(i as u32, zone, cap(scale));
        c.staleness_bound = 100;
        c.last_seen = 1000;
        match state {
            0 => c.state = CellState::Draining,
            1 => c.state = CellState::Unknown,
            2 => c.last_seen = 0,
            _ => {}
        }
        f.add_cell(c);
    }
    let n = spec.cells.len() as u32;
    for (i, &(mib, conns, pull, group, pin, excl)) in spec.tenants.iter().enumerate() {
        let mut p = Placeable::tenant(
            i as u32,
            Load([conns, mib << 20, pull, pull / 10, (mib << 20) / 100]),
        );
        if group < 4 {
            p.anti_affinity.push(AntiAffinity {
                group: format!("g{group}"),
                scope: if group % 2 == 0 {
                    Scope::Cell
                } else {
                    Scope::Zone
                },
            });
        }
        if pin < 2 {
            p.pinned_to = vec![CellId(pin as u32 % n), CellId((pin as u32 + 1) % n)];
        }
        if excl < 3 {
            p.excluded = vec![CellId(excl as u32 % n)];
        }
        f.add_placeable(p);
    }
    f
}

fn spec(max_cells: usize, max_tenants: usize) -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec((0u16..3, 1u64..3, 0u8..10), 1..=max_cells),
        prop::collection::vec(
            (
                1u64..20_000,
                0u64..30,
                0u64..20_000,
                0u8..12,
                0u8..12,
                0u8..12,
            ),
            0..=max_tenants,
        ),
    )
        .prop_map(|(cells, tenants)| Spec { cells, tenants })
}

/// Use of a cell recomputed from every placeable's location.
fn used_from_scratch(f: &Fleet, ci: usize) -> Load {
    let mut u = f.cells()[ci].base;
    for (pi, loc) in f.locations().iter().enumerate() {
        let on = match *loc {
            Location::At(c) => c == ci,
            Location::Moving { from, to } => from == ci || to == ci,
            _ => false,
        };
        if on {
            u = u.plus(&f.placeables()[pi].demand);
        }
    }
    u
}

fn cells_of(loc: Location) -> Vec<usize> {
    match loc {
        Location::At(c) => vec![c],
        Location::Moving { from, to } => vec![from, to],
        _ => vec![],
    }
}

/// Every pair of group members together (cell, or zone if either member
/// declared zone scope), from locations.
fn aa_clashes(f: &Fleet) -> usize {
    let ps = f.placeables();
    let grouped: Vec<usize> = (0..ps.len())
        .filter(|&i| !ps[i].anti_affinity.is_empty())
        .collect();
    let mut n = 0;
    for (i, &a) in grouped.iter().enumerate() {
        for &b in &grouped[i + 1..] {
            for x in &ps[a].anti_affinity {
                for y in &ps[b].anti_affinity {
                    if x.group != y.group {
                        continue;
                    }
                    let zone = x.scope == Scope::Zone || y.scope == Scope::Zone;
                    for ca in cells_of(f.location(a)) {
                        for cb in cells_of(f.location(b)) {
                            if ca == cb || (zone && f.cells()[ca].zone == f.cells()[cb].zone) {
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    n
}

fn within(policy: &Policy, used: &Load, capacity: &Load) -> bool {
    Dimension::ALL
        .iter()
        .all(|&d| utilisation(used[d], capacity[d]) <= policy.threshold[d.index()])
}

/// Brute force: the cells where `pi` may go, with the resulting max
/// utilisation.
fn valid_cells(f: &Fleet, pi: usize, policy: &Policy, now: u64) -> Vec<(usize, f64)> {
    let p = &f.placeables()[pi];
    let mut out = Vec::new();
    for (ci, c) in f.cells().iter().enumerate() {
        if c.state != CellState::Active || now.saturating_sub(c.last_seen) > c.staleness_bound {
            continue;
        }
        if p.excluded.contains(&c.id) || (!p.pinned_to.is_empty() && !p.pinned_to.contains(&c.id)) {
            continue;
        }
        let mut trial = f.clone();
        trial.assign(pi, ci);
        if aa_clashes(&trial) > aa_clashes(f) {
            continue;
        }
        let after = used_from_scratch(f, ci).plus(&p.demand);
        if !within(policy, &after, &c.capacity) {
            continue;
        }
        let score = Dimension::ALL
            .iter()
            .map(|&d| utilisation(after[d], c.capacity[d]))
            .fold(f64::NEG_INFINITY, f64::max);
        out.push((ci, score));
    }
    out
}

/// Applies a plan step by step, checking from scratch, during each step
/// (moving placeables on both cells) and after it, that no group is
/// together and no cell that received anything is above the threshold.
fn check_plan(f: &Fleet, plan: &Plan, policy: &Policy, now: u64) -> Result<Fleet, String> {
    let mut state = f.clone();
    for (i, step) in plan.steps.iter().enumerate() {
        let mut during = state.clone();
        for m in &step.moves {
            let pi = during.placeable_idx(m.placeable).unwrap();
            let to = during.cell_idx(m.to).unwrap();
            during.begin_move(pi, to);
        }
        if aa_clashes(&during) > 0 {
            return Err(format!("step {i}: anti-affinity broken during the step"));
        }
        for m in &step.moves {
            let to = during.cell_idx(m.to).unwrap();
            let c = &during.cells()[to];
            if c.state != CellState::Active {
                return Err(format!("step {i}: moves into non-active {}", c.id));
            }
            if !within(policy, &used_from_scratch(&during, to), &c.capacity) {
                return Err(format!(
                    "step {i}: {} above threshold during the step",
                    c.id
                ));
            }
        }
        apply_step(&mut state, step, policy, now).map_err(|v| format!("applier: {v}"))?;
        if aa_clashes(&state) > 0 {
            return Err(format!("step {i}: anti-affinity broken after the step"));
        }
    }
    Ok(state)
}

/// Places tenants ignoring the threshold (but not anti-affinity), so that
/// cells start overfull.
fn overfill(f: &mut Fleet, seed: u64) {
    let n = f.cells().len();
    for pi in 0..f.placeables().len() {
        let mut tries = 0;
        let mut c = (seed as usize + pi * 7) % n;
        loop {
            let p = &f.placeables()[pi];
            let cell = &f.cells()[c];
            let ok = !p.excluded.contains(&cell.id)
                && (p.pinned_to.is_empty() || p.pinned_to.contains(&cell.id))
                && f.anti_affinity_conflict(pi, c).is_none();
            if ok {
                f.assign(pi, c);
                break;
            }
            tries += 1;
            if tries >= n {
                break;
            }
            c = (c + 1) % n;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placement_keeps_every_rule_and_refuses_only_when_nothing_fits(s in spec(6, 30)) {
        let policy = Policy::default();
        let now = 1050;
        let mut f = build(&s);
        for pi in 0..f.placeables().len() {
            let brute = valid_cells(&f, pi, &policy, now);
            match place(&f, pi, &policy, now) {
                Ok(p) => {
                    prop_assert!(!brute.is_empty());
                    let best = brute.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
                    let first = brute.iter().find(|b| b.1 == best).unwrap().0;
                    prop_assert_eq!(p.cell_index, first, "score or tie-break differs from brute force");
                    f.assign(pi, p.cell_index);
                    prop_assert_eq!(aa_clashes(&f), 0);
                    let c = &f.cells()[p.cell_index];
                    prop_assert!(within(&policy, &used_from_scratch(&f, p.cell_index), &c.capacity));
                }
                Err(r) => {
                    prop_assert!(brute.is_empty(), "refused but {:?} fit", brute);
                    prop_assert_eq!(r.rejections.len(), f.cells().len());
                }
            }
        }
    }

    #[test]
    fn every_plan_step_keeps_every_rule(s in spec(6, 30), seed in 0u64..100, k in 1usize..4) {
        let policy = Policy { max_moves_per_cell: k, ..Policy::default() };
        let now = 1050;
        let mut f = build(&s);
        overfill(&mut f, seed);
        match rebalance(&f, &policy, now) {
            Ok(plan) => {
                let after = check_plan(&f, &plan, &policy, now).map_err(TestCaseError::fail)?;
                for (ci, c) in after.cells().iter().enumerate() {
                    if c.state == CellState::Active && !c.is_stale(now) {
                        prop_assert!(within(&policy, &used_from_scratch(&after, ci), &c.capacity),
                            "{} still over after the plan", c.id);
                    }
                }
                prop_assert!(plan.bytes_moved >= plan.lower_bound_bytes);
            }
            Err(np) => {
                check_plan(&f, &np.partial, &policy, now).map_err(TestCaseError::fail)?;
                prop_assert!(!np.stuck.is_empty());
                prop_assert_eq!(np.alerts().len(), np.stuck.len());
            }
        }
    }

    #[test]
    fn drain_plans_keep_every_rule_and_empty_the_cell(s in spec(6, 30), seed in 0u64..100) {
        let policy = Policy::default();
        let now = 1050;
        let mut f = build(&s);
        for pi in 0..f.placeables().len() {
            if let Ok(p) = place(&f, pi, &policy, now) {
                f.assign(pi, p.cell_index);
            }
        }
        let target = seed as usize % f.cells().len();
        f.cell_mut(target).state = CellState::Draining;
        match drain(&f, target, &policy, now) {
            Ok(plan) => {
                let after = check_plan(&f, &plan, &policy, now).map_err(TestCaseError::fail)?;
                prop_assert!(after.members(target).is_empty());
            }
            Err(np) => {
                check_plan(&f, &np.partial, &policy, now).map_err(TestCaseError::fail)?;
                prop_assert!(np.stuck[0].drain);
            }
        }
    }

    #[test]
    fn with_slack_a_plan_is_found_and_leaves_every_cell_under(
        cells in 2usize..8,
        sizes in prop::collection::vec(1u64..=5, 1..80),
        seed in 0u64..1000,
    ) {
        // Slack stated: every tenant is at most 5% of a cell on every
        // dimension, all tenants together at most half of the fleet's
        // capacity within the threshold, no anti-affinity, pins or bad cells.
        let policy = Policy::default();
        let mut f = Fleet::new((0..cells as u32).map(|i| Cell::new(i, (i % 2) as u16, cap(1))).collect());
        let budget = cells as u64 * 35; // percent points: half of 70% per cell
        let mut total = 0;
        for (i, &pct) in sizes.iter().enumerate() {
            if total + pct > budget { break; }
            total += pct;
            let c = cap(1);
            let d = Load([c.0[0] * pct / 100, c.0[1] * pct / 100, c.0[2] * pct / 100, c.0[3] * pct / 100, c.0[4] * pct / 100]);
            f.add_placeable(Placeable::tenant(i as u32, d));
        }
        overfill(&mut f, seed);
        let plan = rebalance(&f, &policy, 0).map_err(|np| TestCaseError::fail(np.to_string()))?;
        let after = check_plan(&f, &plan, &policy, 0).map_err(TestCaseError::fail)?;
        for (ci, c) in after.cells().iter().enumerate() {
            prop_assert!(within(&policy, &used_from_scratch(&after, ci), &c.capacity));
        }
    }

    #[test]
    fn same_input_same_output(s in spec(6, 30), seed in 0u64..100) {
        let policy = Policy::default();
        let mut a = build(&s);
        overfill(&mut a, seed);
        let b = a.clone();
        for pi in 0..a.placeables().len() {
            prop_assert_eq!(place(&a, pi, &policy, 1050), place(&b, pi, &policy, 1050));
        }
        prop_assert_eq!(rebalance(&a, &policy, 1050), rebalance(&b, &policy, 1050));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2))]

    /// 200 cells, 10,000 tenants: place all, lose 20 cells' worth of
    /// capacity, rebalance; every step keeps every rule.
    #[test]
    fn large_fleet_places_and_rebalances_within_rules(seed in 0u64..1_000_000) {
        let policy = Policy::default();
        let mut f = Fleet::new((0..200u32).map(|i| Cell::new(i, (i % 5) as u16, cap(1))).collect());
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        for i in 0..10_000u32 {
            let mib = 100 + next() % 2100;
            let mut p = Placeable::tenant(i, Load([next() % 2, mib << 20, next() % 400, next() % 40, (mib << 20) / 200]));
            if i % 50 == 0 {
                p.anti_affinity.push(AntiAffinity { group: format!("cp{}", i / 500), scope: Scope::Zone });
            }
            let pi = f.add_placeable(p);
            if let Ok(pl) = place(&f, pi, &policy, 0) {
                f.assign(pi, pl.cell_index);
            }
        }
        prop_assert_eq!(aa_clashes(&f), 0);
        for ci in 0..f.cells().len() {
            prop_assert!(within(&policy, &used_from_scratch(&f, ci), &f.cells()[ci].capacity));
        }
        // Crunch: 20 cells lose a third of their capacity.
        for ci in 0..20 {
            let c = f.cells()[ci].capacity;
            f.set_capacity(ci, c.scaled(2.0 / 3.0));
        }
        let plan = rebalance(&f, &policy, 0).map_err(|np| TestCaseError::fail(np.to_string()))?;
        prop_assert!(plan.moves() > 0);
        let after = apply(&f, &plan, &policy, 0).map_err(|(i, v)| TestCaseError::fail(format!("step {i}: {v}")))?;
        prop_assert_eq!(aa_clashes(&after), 0);
        for ci in 0..after.cells().len() {
            prop_assert!(within(&policy, &used_from_scratch(&after, ci), &after.cells()[ci].capacity));
        }
    }
}
