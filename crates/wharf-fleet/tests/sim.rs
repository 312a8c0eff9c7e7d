//! The incident replay: the permissive policy reproduces the incident,
//! Wharf's policy does not, and a seed replays exactly.

use wharf_fleet::sim::{replay, run, PolicyKind, SimConfig};

fn small() -> SimConfig {
    SimConfig {
        hours: 24 * 4,
        ..SimConfig::incident(11, PolicyKind::Wharf)
    }
}

#[test]
fn incident_replay_permissive_fails_and_wharf_holds() {
    let cfg = small();
    let crunch = cfg.crunch.clone().unwrap().at_hour;
    let r = replay(&cfg);

    // Permissive: the two control-plane components end up on one cell...
    let p = &r.permissive;
    let coloc = p
        .events
        .iter()
        .find(|e| e.kind == "colocated" && e.text.contains("k8s-api"))
        .expect("control-plane components co-located");
    assert_eq!(coloc.hour, crunch);
    assert!(p.max_aa_violations() > 0);
    // ...whose shared proxy reaches its connection limit...
    let (limit_hour, limit_cell) = p.first_proxy_limit.expect("proxy reached its limit");
    assert!(limit_hour >= crunch);
    assert_eq!(limit_cell.0, 0);
    // ...and requests wait past their deadline, at known times, only after
    // the crunch.
    assert!(p.total_timeouts() > 0);
    assert!(p.timeouts.iter().all(|&(h, _, n)| h >= crunch && n > 0));
    // Its alerts fire only at capacity: no warning came before.
    assert!(!p.saturations.is_empty());
    assert_eq!(p.unwarned_saturations(), p.saturations.len());

    // Wharf: no rule broken at any hour, the control-plane component was
    // refused with an alert instead...
    let w = &r.wharf;
    assert_eq!(w.max_aa_violations(), 0);
    assert!(w.first_colocation.is_none());
    assert!(w
        .events
        .iter()
        .any(|e| e.kind == "refused" && e.text.contains("anti-affinity group k8s-api")));
    // ...warnings fired, and every dimension that reached capacity (if
    // any) was warned about strictly earlier...
    assert!(w.warnings > 0);
    assert_eq!(w.unwarned_saturations(), 0);
    assert!(w
        .criticals
        .iter()
        .all(|c| c.warned_at.is_some_and(|at| at <= c.hour)));
    // ...and no request in the modelled data path passed its deadline.
    assert_eq!(w.total_timeouts(), 0);
    assert!(w.timeouts.is_empty());
    assert!(w.first_proxy_limit.is_none());
}

#[test]
fn a_seed_replays_exactly_and_seeds_differ() {
    let cfg = SimConfig {
        hours: 48,
        ..small()
    };
    let a = run(&cfg);
    let b = run(&cfg);
    assert_eq!(a, b);
    let c = run(&SimConfig { seed: 12, ..cfg });
    assert_ne!(a.hours, c.hours);
}

#[test]
fn both_policies_see_the_same_workload() {
    let r = replay(&SimConfig {
        hours: 30,
        crunch: None,
        ..small()
    });
    // Without a crunch nothing forces the policies apart: the same tenants
    // are placed, and every dimension the data-path model does not touch
    // (all but connections, which the permissive model routes through
    // shared proxies) measures the same hour by hour.
    assert_eq!(r.wharf.final_placeables, r.permissive.final_placeables);
    for (a, b) in r.wharf.hours.iter().zip(&r.permissive.hours) {
        assert_eq!(a.worst[1..], b.worst[1..], "hour {}", a.hour);
        assert_eq!(a.unplaced, b.unplaced);
    }
}

#[test]
fn report_writes_markdown_and_pngs() {
    let r = replay(&SimConfig {
        hours: 48,
        ..small()
    });
    let dir = std::env::temp_dir().join(format!("wharf-fleet-report-{}", std::process::id()));
    let files = wharf_fleet::report::write(&dir, "test", &[&r.wharf, &r.permissive]).unwrap();
    assert_eq!(files.len(), 9);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| requests past deadline (504) |"));
    let png = std::fs::read(dir.join("wharf-utilisation.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_busy_fleet_keeps_every_rule_through_drains_failures_and_growth() {
    let cfg = SimConfig {
        hours: 24 * 4,
        cells: 40,
        tenants: 4_000,
        arrivals_per_day: 200.0,
        failure_per_cell_day: 0.1,
        drain_every_hours: 12,
        add_cell_every_hours: 24,
        growth_min_per_day: 0.02,
        ..SimConfig::scale(5, PolicyKind::Wharf)
    };
    let r = run(&cfg);
    // Every step the planner made was accepted by the applier.
    assert!(
        r.events.iter().all(|e| e.kind != "applier"),
        "{:?}",
        r.events
    );
    assert!(r.events.iter().any(|e| e.kind == "failed"));
    assert!(r.events.iter().any(|e| e.kind == "retired"));
    assert!(r.moves > 0);
    assert_eq!(r.max_aa_violations(), 0);
    assert_eq!(r.total_timeouts(), 0);
    assert_eq!(r.unwarned_saturations(), 0);
}
