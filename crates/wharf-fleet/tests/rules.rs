//! One test per refusal reason, explanation and plan rule.

use wharf_fleet::alert::Severity;
use wharf_fleet::plan::{anti_affinity_violations, over_threshold_cells};
use wharf_fleet::*;

const GIB: u64 = 1 << 30;

/// Capacity: 1000 connections, 100 GiB, 1000 req/s pull, 100 req/s push, 1 GiB/s.
fn cap() -> Load {
    Load([1000, 100 * GIB, 1_000_000, 100_000, GIB])
}

fn storage(gib: u64) -> Load {
    Load([1, gib * GIB, 1, 1, 1])
}

fn fleet(n: u32, zones: u16) -> Fleet {
    Fleet::new(
        (0..n)
            .map(|i| Cell::new(i, (i as u16) % zones, cap()))
            .collect(),
    )
}

fn add(f: &mut Fleet, id: u32, demand: Load) -> usize {
    f.add_placeable(Placeable::tenant(id, demand))
}

fn put(f: &mut Fleet, id: u32, demand: Load, cell: usize) -> usize {
    let pi = add(f, id, demand);
    f.assign(pi, cell);
    pi
}

fn aa(p: &mut Placeable, group: &str, scope: Scope) {
    p.anti_affinity.push(AntiAffinity {
        group: group.into(),
        scope,
    });
}

fn only_reason(f: &Fleet, pi: usize) -> Reason {
    let r = place(f, pi, &Policy::default(), 0).expect_err("should be refused");
    assert_eq!(r.rejections.len(), 1);
    r.rejections[0].reason.clone()
}

#[test]
fn refuses_retired_cell() {
    let mut f = fleet(1, 1);
    f.cell_mut(0).state = CellState::Retired;
    let p = add(&mut f, 1, storage(1));
    assert_eq!(only_reason(&f, p), Reason::Retired);
}

#[test]
fn refuses_excluded_cell() {
    let mut f = fleet(1, 1);
    let mut t = Placeable::tenant(1, storage(1));
    t.excluded.push(CellId(0));
    let p = f.add_placeable(t);
    assert_eq!(only_reason(&f, p), Reason::Excluded);
}

#[test]
fn refuses_cell_outside_pins() {
    let mut f = fleet(2, 1);
    let mut t = Placeable::tenant(1, storage(1));
    t.pinned_to.push(CellId(1));
    let p = f.add_placeable(t);
    let got = place(&f, p, &Policy::default(), 0).unwrap();
    assert_eq!(got.cell, CellId(1));
    f.cell_mut(1).state = CellState::Draining;
    let r = place(&f, p, &Policy::default(), 0).unwrap_err();
    assert_eq!(r.rejections[0].reason, Reason::NotPinned);
    assert_eq!(r.rejections[1].reason, Reason::Draining);
}

#[test]
fn refuses_draining_cell() {
    let mut f = fleet(1, 1);
    f.cell_mut(0).state = CellState::Draining;
    let p = add(&mut f, 1, storage(1));
    assert_eq!(only_reason(&f, p), Reason::Draining);
}

#[test]
fn refuses_cell_with_unknown_usage() {
    let mut f = fleet(1, 1);
    f.cell_mut(0).state = CellState::Unknown;
    let p = add(&mut f, 1, storage(1));
    assert_eq!(only_reason(&f, p), Reason::UsageUnknown);
}

#[test]
fn refuses_stale_cell_and_says_how_stale() {
    let mut f = fleet(1, 1);
    f.cell_mut(0).last_seen = 100;
    f.cell_mut(0).staleness_bound = 60;
    let p = add(&mut f, 1, storage(1));
    let r = place(&f, p, &Policy::default(), 161).unwrap_err();
    assert_eq!(r.rejections[0].reason, Reason::Stale { age: 61, bound: 60 });
    assert!(r.to_string().contains("last read 61 s ago > bound 60 s"));
    // At exactly the bound it is still fresh.
    assert!(place(&f, p, &Policy::default(), 160).is_ok());
}

#[test]
fn refuses_cell_holding_a_cell_scoped_group_member() {
    let mut f = fleet(2, 2);
    let mut a = Placeable::tenant(1, storage(1));
    aa(&mut a, "api", Scope::Cell);
    let mut b = Placeable::tenant(2, storage(1));
    aa(&mut b, "api", Scope::Cell);
    let a = f.add_placeable(a);
    f.assign(a, 0);
    let b = f.add_placeable(b);
    let got = place(&f, b, &Policy::default(), 0).unwrap();
    assert_eq!(got.cell, CellId(1), "must avoid the member's cell");
    f.cell_mut(1).state = CellState::Draining;
    let r = place(&f, b, &Policy::default(), 0).unwrap_err();
    assert_eq!(
        r.rejections[0].reason,
        Reason::AntiAffinity {
            group: "api".into(),
            scope: Scope::Cell,
            with: PlaceableId(1)
        }
    );
}

#[test]
fn zone_scope_keeps_members_out_of_the_whole_zone() {
    // Cells 0 and 2 are in zone 0, cell 1 in zone 1.
    let mut f = fleet(3, 2);
    let mut a = Placeable::tenant(1, storage(1));
    aa(&mut a, "db", Scope::Zone);
    let a = f.add_placeable(a);
    f.assign(a, 0);
    // The second member declares only cell scope; the first member's zone
    // scope still applies.
    let mut b = Placeable::tenant(2, storage(1));
    aa(&mut b, "db", Scope::Cell);
    let b = f.add_placeable(b);
    f.cell_mut(1).state = CellState::Draining;
    let r = place(&f, b, &Policy::default(), 0).unwrap_err();
    assert_eq!(
        r.rejections[2].reason,
        Reason::AntiAffinity {
            group: "db".into(),
            scope: Scope::Zone,
            with: PlaceableId(1)
        }
    );
}

#[test]
fn over_threshold_names_dimension_percentage_and_capacity_needed() {
    let mut f = fleet(1, 1);
    put(&mut f, 1, storage(60), 0);
    let p = add(&mut f, 2, storage(23));
    let r = place(&f, p, &Policy::default(), 0).unwrap_err();
    let Reason::OverThreshold(over) = &r.rejections[0].reason else {
        panic!("wrong reason {:?}", r.rejections[0].reason)
    };
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].dimension, Dimension::Storage);
    assert!((over[0].would_be - 0.83).abs() < 1e-9);
    // 83 GiB at 70% needs 118.57 GiB of capacity: 18.57 GiB more.
    let more = over[0].needs_more as f64 / GIB as f64;
    assert!((more - 18.571).abs() < 0.01, "{more}");
    // And that capacity is exactly enough.
    let mut bigger = cap();
    bigger[Dimension::Storage] += over[0].needs_more;
    f.set_capacity(0, bigger);
    assert!(place(&f, p, &Policy::default(), 0).is_ok());
    bigger[Dimension::Storage] -= 1;
    f.set_capacity(0, bigger);
    assert!(place(&f, p, &Policy::default(), 0).is_err());
    let text = r.to_string();
    assert!(
        text.contains(
            "cell c0: storage would be 83.0% > 70%; needs 18.6 GiB more storage capacity"
        ),
        "{text}"
    );
}

#[test]
fn over_threshold_lists_every_dimension_worst_first() {
    let mut f = fleet(1, 1);
    let p = add(&mut f, 1, Load([900, 80 * GIB, 1, 1, 1]));
    let Reason::OverThreshold(over) = only_reason(&f, p) else {
        panic!()
    };
    let dims: Vec<_> = over.iter().map(|o| o.dimension).collect();
    assert_eq!(dims, vec![Dimension::Connections, Dimension::Storage]);
}

#[test]
fn summary_counts_reasons_across_cells_kubernetes_style() {
    let mut f = fleet(6, 3);
    for c in 0..3 {
        put(&mut f, 100 + c as u32, storage(65), c);
    }
    f.cell_mut(3).state = CellState::Draining;
    let mut a = Placeable::tenant(1, storage(1));
    aa(&mut a, "X", Scope::Cell);
    let a = f.add_placeable(a);
    f.assign(a, 4);
    assert!(anti_affinity_violations(&f).is_empty());
    let mut b = Placeable::tenant(2, storage(10));
    aa(&mut b, "X", Scope::Cell);
    let b = f.add_placeable(b);
    f.cell_mut(5).state = CellState::Unknown;
    let r = place(&f, b, &Policy::default(), 0).unwrap_err();
    assert_eq!(
        r.summary(),
        vec![
            ("storage over threshold".to_string(), 3),
            ("anti-affinity group X (cell)".to_string(), 1),
            ("draining".to_string(), 1),
            ("usage unknown".to_string(), 1),
        ]
    );
    assert_eq!(
        r.headline(),
        "0/6 cells fit p2: 3 storage over threshold, 1 anti-affinity group X (cell), 1 draining, 1 usage unknown"
    );
    let alert = r.alert();
    assert_eq!(alert.name, "wharf_fleet_placement_refused");
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.label("reason"), Some("storage over threshold"));
}

#[test]
fn score_prefers_lowest_resulting_max_utilisation_then_lower_id() {
    let mut f = fleet(4, 1);
    put(&mut f, 1, storage(30), 0);
    put(&mut f, 2, storage(10), 1);
    put(&mut f, 3, storage(10), 2);
    put(&mut f, 4, storage(20), 3);
    let p = add(&mut f, 5, storage(5));
    let got = place(&f, p, &Policy::default(), 0).unwrap();
    assert_eq!(got.cell, CellId(1), "c1 and c2 tie at 15%: lower id wins");
    assert!((got.score - 0.15).abs() < 1e-9);
    assert_eq!(got.score_dimension, Dimension::Storage);
    assert_eq!(got.fitting, 4);
    assert!(got.to_string().contains("p5 -> cell c1: 4/4 cells fit"));
}

#[test]
fn growth_horizon_reserves_future_demand() {
    let mut f = fleet(1, 1);
    let mut t = Placeable::tenant(1, storage(60));
    t.growth_per_day = 0.05;
    let p = f.add_placeable(t);
    assert!(place(&f, p, &Policy::default(), 0).is_ok());
    let policy = Policy {
        growth_horizon_days: 4.0,
        ..Policy::default()
    };
    // 60 GiB * 1.2 = 72 GiB > 70 GiB.
    assert!(matches!(
        place(&f, p, &policy, 0).unwrap_err().rejections[0].reason,
        Reason::OverThreshold(_)
    ));
}

#[test]
fn rebalance_brings_cells_under_threshold_moving_few_bytes() {
    let mut f = fleet(3, 1);
    // c0 at 80 GiB: 10 GiB over 70. Tenants of 40, 20, 11, 9 GiB.
    put(&mut f, 1, storage(40), 0);
    put(&mut f, 2, storage(20), 0);
    put(&mut f, 3, storage(11), 0);
    put(&mut f, 4, storage(9), 0);
    let policy = Policy::default();
    let plan = rebalance(&f, &policy, 0).unwrap();
    let after = apply(&f, &plan, &policy, 0).unwrap();
    assert!(over_threshold_cells(&after, &policy).is_empty());
    assert_eq!(plan.lower_bound_bytes, 10 * GIB - excess_slack());
    assert!(
        plan.bytes_moved <= 11 * GIB,
        "moved {} GiB",
        plan.bytes_moved / GIB
    );
    assert!(plan.to_string().contains("relieves c0, storage at 80.0%"));
}

/// 70% of 100 GiB is not a whole number of bytes: 70 GiB rounds down by
/// one byte at most.
fn excess_slack() -> u64 {
    let a = wharf_fleet::plan::allowed(&Policy::default(), Dimension::Storage, 100 * GIB);
    a - 70 * GIB
}

#[test]
fn rebalance_respects_moves_per_cell_per_step() {
    let mut f = fleet(4, 1);
    for i in 0..9 {
        put(&mut f, i, storage(10), 0);
    }
    // 90 GiB: must shed at least 2 tenants; with K = 1 that takes two steps.
    let policy = Policy {
        max_moves_per_cell: 1,
        ..Policy::default()
    };
    let plan = rebalance(&f, &policy, 0).unwrap();
    assert_eq!(plan.steps.len(), 2);
    assert!(plan.steps.iter().all(|s| s.moves.len() == 1));
    apply(&f, &plan, &policy, 0).unwrap();
}

#[test]
fn a_moving_member_blocks_its_group_on_both_cells() {
    let mut f = fleet(3, 3);
    let mut a = Placeable::tenant(1, storage(1));
    aa(&mut a, "g", Scope::Cell);
    let a = f.add_placeable(a);
    f.assign(a, 0);
    f.begin_move(a, 1);
    let mut b = Placeable::tenant(2, storage(1));
    aa(&mut b, "g", Scope::Cell);
    let b = f.add_placeable(b);
    let got = place(&f, b, &Policy::default(), 0).unwrap();
    assert_eq!(got.cell, CellId(2), "c0 and c1 are both occupied by p1");
    // And the moving tenant's demand counts on both cells.
    assert_eq!(f.used(0), storage(1));
    assert_eq!(f.used(1), storage(1));
    f.finish_move(a);
    assert_eq!(f.used(0), Load::ZERO);
}

#[test]
fn applier_rejects_a_step_that_breaks_anti_affinity_during_the_move() {
    let mut f = fleet(3, 3);
    let mut a = Placeable::tenant(1, storage(1));
    aa(&mut a, "g", Scope::Cell);
    let mut b = Placeable::tenant(2, storage(1));
    aa(&mut b, "g", Scope::Cell);
    let a = f.add_placeable(a);
    f.assign(a, 0);
    let b = f.add_placeable(b);
    f.assign(b, 1);
    // Swapping them in one step would put both on both cells.
    let step = Step {
        moves: vec![mv(1, 0, 1), mv(2, 1, 0)],
    };
    let err = apply_step(&mut f.clone(), &step, &Policy::default(), 0).unwrap_err();
    assert!(
        matches!(
            err,
            Violation::Rejected {
                reason: Reason::AntiAffinity { .. },
                ..
            }
        ) || matches!(err, Violation::AntiAffinity { .. }),
        "{err:?}"
    );
}

fn mv(p: u32, from: u32, to: u32) -> Move {
    Move {
        placeable: PlaceableId(p),
        from: CellId(from),
        to: CellId(to),
        bytes: 0,
        why: wharf_fleet::plan::MoveWhy::Drain { cell: CellId(from) },
    }
}

#[test]
fn applier_rejects_too_many_moves_per_cell() {
    let mut f = fleet(3, 1);
    put(&mut f, 1, storage(1), 0);
    put(&mut f, 2, storage(1), 0);
    put(&mut f, 3, storage(1), 0);
    let step = Step {
        moves: vec![mv(1, 0, 1), mv(2, 0, 2), mv(3, 0, 1)],
    };
    let err = apply_step(&mut f, &step, &Policy::default(), 0).unwrap_err();
    assert_eq!(
        err,
        Violation::TooManyMoves {
            cell: CellId(0),
            moves: 3,
            limit: 2
        }
    );
}

#[test]
fn applier_rejects_moves_that_overfill_a_destination_together() {
    let mut f = fleet(2, 1);
    put(&mut f, 1, storage(40), 0);
    put(&mut f, 2, storage(40), 0);
    let step = Step {
        moves: vec![mv(1, 0, 1), mv(2, 0, 1)],
    };
    let err = apply_step(&mut f, &step, &Policy::default(), 0).unwrap_err();
    assert!(matches!(
        err,
        Violation::Rejected {
            reason: Reason::OverThreshold(_),
            ..
        }
    ));
}

#[test]
fn applier_rejects_a_move_from_the_wrong_cell_or_to_a_draining_one() {
    let mut f = fleet(3, 1);
    put(&mut f, 1, storage(1), 0);
    let err = apply_step(
        &mut f.clone(),
        &Step {
            moves: vec![mv(1, 1, 2)],
        },
        &Policy::default(),
        0,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Violation::NotAt {
            placeable: PlaceableId(1),
            expected: CellId(1)
        }
    );
    f.cell_mut(2).state = CellState::Draining;
    let err = apply_step(
        &mut f,
        &Step {
            moves: vec![mv(1, 0, 2)],
        },
        &Policy::default(),
        0,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Violation::Rejected {
            reason: Reason::Draining,
            ..
        }
    ));
}

#[test]
fn no_plan_says_what_capacity_where_and_alerts() {
    // Two zones; zone 1's only cell is draining. c0 is over, c2 is full.
    let mut f = fleet(3, 2);
    f.cell_mut(1).state = CellState::Draining;
    put(&mut f, 1, storage(50), 0);
    put(&mut f, 2, storage(30), 0);
    put(&mut f, 3, storage(65), 2);
    let policy = Policy::default();
    let np = rebalance(&f, &policy, 0).unwrap_err();
    assert_eq!(np.stuck.len(), 1);
    assert_eq!(np.stuck[0].cell, CellId(0));
    assert!(np.stuck[0].excess[Dimension::Storage] >= 10 * GIB - 1);
    assert_eq!(np.shortfall.len(), 1);
    let need = np.shortfall[0].capacity[Dimension::Storage] as f64 / GIB as f64;
    // Shedding the 30 GiB tenant needs 30/0.7 = 42.9 GiB of new capacity.
    assert!((need - 42.857).abs() < 0.01, "{need}");
    let alerts = np.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].name, "wharf_fleet_rebalance_impossible");
    assert_eq!(alerts[0].label("dimension"), Some("storage_bytes"));
    assert!(np.to_string().contains("add in z0: a cell with"), "{np}");
    // Adding what it says makes a plan exist.
    let mut g = f.clone();
    let mut c = Cell::new(9, np.shortfall[0].zone.0, np.shortfall[0].capacity);
    c.base = Load::ZERO;
    g.add_cell(c);
    let plan = rebalance(&g, &policy, 0).unwrap();
    let after = apply(&g, &plan, &policy, 0).unwrap();
    assert!(over_threshold_cells(&after, &policy).is_empty());
}

#[test]
fn drain_empties_the_cell_or_says_why_not() {
    let mut f = fleet(3, 1);
    put(&mut f, 1, storage(20), 0);
    put(&mut f, 2, storage(20), 0);
    put(&mut f, 3, storage(20), 0);
    let policy = Policy::default();
    let plan = drain(&f, 0, &policy, 0).unwrap();
    let mut g = f.clone();
    g.cell_mut(0).state = CellState::Draining;
    let after = apply(&g, &plan, &policy, 0).unwrap();
    assert!(after.members(0).is_empty());
    assert_eq!(plan.bytes_moved, 60 * GIB);
    assert_eq!(plan.lower_bound_bytes, 60 * GIB);
    // Too much to drain into one remaining cell.
    let mut h = fleet(2, 1);
    put(&mut h, 1, storage(40), 0);
    put(&mut h, 2, storage(40), 0);
    let np = drain(&h, 0, &policy, 0).unwrap_err();
    assert_eq!(np.partial.moves(), 1);
    assert!(np.stuck[0].drain);
    assert_eq!(np.alerts()[0].name, "wharf_fleet_drain_impossible");
}

#[test]
fn pinned_placeables_are_reported_not_given_a_shortfall() {
    let mut f = fleet(2, 1);
    let mut t = Placeable::tenant(1, storage(80));
    t.pinned_to.push(CellId(0));
    let t = f.add_placeable(t);
    f.assign(t, 0);
    let np = rebalance(&f, &Policy::default(), 0).unwrap_err();
    assert_eq!(np.pinned, vec![PlaceableId(1)]);
    assert!(np.shortfall.is_empty());
    assert!(np.to_string().contains("pinned, cannot move: p1"));
}

#[test]
fn utilisation_alerts_warn_before_threshold_and_go_critical_above_it() {
    let mut f = fleet(3, 1);
    put(&mut f, 1, storage(59), 0);
    put(&mut f, 2, storage(65), 1);
    put(&mut f, 3, storage(75), 2);
    let alerts = utilisation_alerts(&f, &Policy::default(), 0);
    let got: Vec<_> = alerts
        .iter()
        .map(|a| (a.label("cell").unwrap().to_string(), a.severity))
        .collect();
    assert_eq!(
        got,
        vec![
            ("c1".to_string(), Severity::Warning),
            ("c2".to_string(), Severity::Critical)
        ]
    );
    assert!(alerts[0]
        .to_string()
        .contains("storage at 65.0% (warn 60%, threshold 70%)"));
}

#[test]
fn stale_cells_raise_an_alert() {
    let mut f = fleet(1, 1);
    f.cell_mut(0).staleness_bound = 10;
    let alerts = utilisation_alerts(&f, &Policy::default(), 11);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].name, "wharf_fleet_cell_usage_unknown");
}

#[test]
fn a_refused_step_leaves_the_fleet_as_it_was() {
    let mut f = fleet(3, 1);
    put(&mut f, 1, storage(30), 0);
    put(&mut f, 2, storage(30), 0);
    put(&mut f, 3, storage(50), 2);
    let before: Vec<_> = (0..3).map(|c| f.used(c)).collect();
    // The first move alone is fine; the second overfills c1 with it.
    let step = Step {
        moves: vec![mv(1, 0, 1), mv(3, 2, 1)],
    };
    assert!(apply_step(&mut f, &step, &Policy::default(), 0).is_err());
    let after: Vec<_> = (0..3).map(|c| f.used(c)).collect();
    assert_eq!(before, after);
    assert_eq!(f.location(0), Location::At(0));
    assert_eq!(f.location(2), Location::At(2));
    assert_eq!(f.members(1).len(), 0);
}

#[test]
fn plans_and_placements_explain_themselves() {
    let mut f = fleet(2, 1);
    put(&mut f, 1, storage(50), 0);
    put(&mut f, 2, storage(30), 0);
    let plan = rebalance(&f, &Policy::default(), 0).unwrap();
    let text = plan.to_string();
    assert!(
        text.starts_with("1 move(s) in 1 step(s), 30.0 GiB copied"),
        "{text}"
    );
    assert!(
        text.contains("step 1: p2 c0 -> c1 (30.0 GiB): relieves c0, storage at 80.0%"),
        "{text}"
    );
}
