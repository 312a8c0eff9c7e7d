//! By-hand benchmark (not a test): place 100,000 tenants on 1,000 cells,
//! plan a rebalance after a crunch, and simulate 30 days of the scale
//! fleet. Run with
//! `cargo run --release -p wharf-fleet --example bench [-- --quick]`.

use std::time::Instant;

use wharf_fleet::plan::{allowed, over_threshold_cells};
use wharf_fleet::sim::{run, PolicyKind, Rng, SimConfig};
use wharf_fleet::{apply, place, rebalance, Cell, Dimension, Fleet, Load, Placeable, Policy};

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (cells, tenants, days) = if quick {
        (100, 10_000, 3)
    } else {
        (1_000, 100_000, 30)
    };
    let cfg = SimConfig::scale(1, PolicyKind::Wharf);
    let cap = cfg.cell_capacity;
    let policy = Policy::default();
    let mut fleet = Fleet::new(
        (0..cells)
            .map(|i| Cell::new(i, (i % 5) as u16, cap))
            .collect(),
    );
    let mut rng = Rng::new(42);
    let max = |d: Dimension| (cap[d] as f64 * 0.05) as u64;
    let mut times = Vec::with_capacity(tenants as usize);
    let mut refused = 0;
    let start = Instant::now();
    for i in 0..tenants {
        let pull = rng.lognormal(0.7, 1.1);
        let storage = rng.lognormal(6.0 * 1_073_741_824.0, 1.1);
        let demand = Load([
            ((pull * 1.15 * 0.25 * 1.3).ceil() as u64).min(max(Dimension::Connections)),
            (storage as u64).min(max(Dimension::Storage)),
            ((pull * 1000.0) as u64).min(max(Dimension::PullRate)),
            ((pull * 150.0) as u64).min(max(Dimension::PushRate)),
            ((pull * 8.0 * 1_048_576.0) as u64).min(max(Dimension::Bandwidth)),
        ]);
        let pi = fleet.add_placeable(Placeable::tenant(i, demand));
        let t = Instant::now();
        let r = place(&fleet, pi, &policy, 0);
        times.push(t.elapsed().as_secs_f64());
        match r {
            Ok(p) => fleet.assign(pi, p.cell_index),
            Err(_) => refused += 1,
        }
    }
    let place_total = start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let p99 = times[(times.len() - 1) * 99 / 100];
    let worst = times[times.len() - 1];
    let mean_max_util: f64 = (0..fleet.cells().len())
        .map(|c| fleet.max_utilisation(c).0)
        .sum::<f64>()
        / cells as f64;
    println!(
        "placement: {tenants} tenants on {cells} cells in {place_total:.2} s; per placement mean {:.1} us, p99 {:.1} us, max {:.1} us; {refused} refused; mean cell max utilisation {:.1}%",
        mean * 1e6,
        p99 * 1e6,
        worst * 1e6,
        mean_max_util * 100.0
    );

    // Crunch: one cell in ten loses a third of its capacity.
    for ci in (0..fleet.cells().len()).step_by(10) {
        let c = fleet.cells()[ci].capacity;
        fleet.set_capacity(ci, c.scaled(2.0 / 3.0));
    }
    let over = over_threshold_cells(&fleet, &policy).len();
    let lb: u64 = (0..fleet.cells().len())
        .map(|ci| {
            let c = fleet.cells()[ci].capacity[Dimension::Storage];
            fleet.used(ci)[Dimension::Storage].saturating_sub(allowed(
                &policy,
                Dimension::Storage,
                c,
            ))
        })
        .sum();
    let t = Instant::now();
    let plan = rebalance(&fleet, &policy, 0);
    let plan_time = t.elapsed().as_secs_f64();
    match plan {
        Ok(plan) => {
            let t = Instant::now();
            let after = apply(&fleet, &plan, &policy, 0).expect("the applier accepts the plan");
            let apply_time = t.elapsed().as_secs_f64();
            assert!(over_threshold_cells(&after, &policy).is_empty());
            println!(
                "rebalance after crunch: {over} cells over; plan {:.2} s ({} moves in {} steps), re-checked by the applier in {apply_time:.2} s; bytes moved {:.1} GiB vs lower bound {:.1} GiB (ratio {:.3}); plan's own lower bound {:.1} GiB",
                plan_time,
                plan.moves(),
                plan.steps.len(),
                plan.bytes_moved as f64 / 1_073_741_824.0,
                lb as f64 / 1_073_741_824.0,
                plan.bytes_moved as f64 / lb.max(1) as f64,
                plan.lower_bound_bytes as f64 / 1_073_741_824.0,
            );
        }
        Err(np) => println!("rebalance after crunch: no plan ({plan_time:.2} s): {np}"),
    }
    println!(
        "peak memory after placement and plan: {:?} KiB (VmHWM)",
        peak_rss_kib()
    );

    let sim_cfg = SimConfig {
        hours: 24 * days,
        cells,
        tenants,
        ..SimConfig::scale(7, PolicyKind::Wharf)
    };
    let t = Instant::now();
    let r = run(&sim_cfg);
    let sim_time = t.elapsed().as_secs_f64();
    println!(
        "simulation: {days} days, {tenants} tenants at the start on {cells} cells: {sim_time:.1} s; {} moves, {:.1} GiB moved, {} warnings, {} refused, max anti-affinity pairs together {}, 504s {}, {} placeables and {} cells at the end",
        r.moves,
        r.bytes_moved as f64 / 1_073_741_824.0,
        r.warnings,
        r.refusals,
        r.max_aa_violations(),
        r.total_timeouts(),
        r.final_placeables,
        r.final_cells
    );
    println!("peak memory: {:?} KiB (VmHWM)", peak_rss_kib());
}
