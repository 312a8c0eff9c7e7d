//! The fleet service's own `/metrics`, what the fleet alerts read.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `wharf_fleet_cell_utilisation` | `cell`, `dimension` | use / capacity (0.7 = 70%) |
//! | `wharf_fleet_cell_threshold` | `cell`, `dimension`, `severity` (`warning`, `critical`) | the cell's warning level and threshold |
//! | `wharf_fleet_scrape_age_seconds` | `cell` | age of the cell's figures (since it was added, if never read) |
//! | `wharf_fleet_scrape_failures_total` | `cell` | scrape rounds that failed |
//! | `wharf_fleet_placements_refused_total` | | placements no cell could take |
//! | `wharf_fleet_plan_infeasible` | | 1 while no plan keeps every rule |
//! | `wharf_fleet_move_step_age_seconds` | `move`, `tenant` | time in the current step, per move in flight |
//! | `wharf_fleet_moves` | `state` | moves per state |
//! | `wharf_fleet_router_errors_total` | | failed pushes of the routes |
//! | `wharf_fleet_store_up` | | 0 when the fleet's database did not answer this scrape |
//!
//! Owns: rendering those through `wharf_telemetry::Exposition`. Must never:
//! change state, or fail the page when the database is down (the figures
//! that need it are left out and `wharf_fleet_store_up` says 0).

use std::sync::atomic::Ordering;

use wharf_fleet::Dimension;
use wharf_telemetry::Exposition;

use crate::service::Fleetd;
use crate::store::MoveState;

/// The page.
pub async fn render(f: &Fleetd) -> String {
    let mut out = Exposition::new();
    let now = f.now();
    let cells = f.store().cells().await;
    let store_up = cells.is_ok();
    let readings = f.scraper.readings();
    if let Ok(cells) = &cells {
        for c in cells
            .iter()
            .filter(|c| c.state != crate::store::CellLifecycle::Retired)
        {
            let cell = c.id.to_string();
            for d in Dimension::ALL {
                for (severity, v) in [
                    ("warning", c.warn[d.index()]),
                    ("critical", c.threshold[d.index()]),
                ] {
                    out.gauge(
                        "wharf_fleet_cell_threshold",
                        "A cell's warning level and threshold per dimension (ratio of capacity).",
                        &[
                            ("cell", &cell),
                            ("dimension", d.label()),
                            ("severity", severity),
                        ],
                        v,
                    );
                }
            }
        }
    }
    if let Ok(view) = f.view().await {
        for (ci, c) in view.cells.iter().enumerate() {
            if c.state == crate::store::CellLifecycle::Retired {
                continue;
            }
            let cell = c.id.to_string();
            for d in Dimension::ALL {
                out.gauge(
                    "wharf_fleet_cell_utilisation",
                    "A cell's use over its capacity per dimension (reservations and moves in flight included).",
                    &[("cell", &cell), ("dimension", d.label())],
                    view.utilisation(ci, d),
                );
            }
        }
    }
    let created = |id: u32| {
        cells
            .as_ref()
            .ok()
            .and_then(|cs| cs.iter().find(|c| c.id == id))
            .map(|c| c.created_unix)
    };
    for (id, r) in &readings {
        let cell = id.to_string();
        // A cell never read has had no figures since it was added.
        if let Some(seen) = r.last_seen.or_else(|| created(*id)) {
            out.gauge(
                "wharf_fleet_scrape_age_seconds",
                "Age of a cell's figures (since it was added, if never read).",
                &[("cell", &cell)],
                now.saturating_sub(seen) as f64,
            );
        }
        out.counter(
            "wharf_fleet_scrape_failures_total",
            "Scrape rounds of a cell that failed.",
            &[("cell", &cell)],
            r.failures_total as f64,
        );
    }
    out.counter(
        "wharf_fleet_placements_refused_total",
        "Placements no cell could take.",
        &[],
        f.counters.placements_refused.load(Ordering::Relaxed) as f64,
    );
    out.gauge(
        "wharf_fleet_plan_infeasible",
        "1 while the last plan found no way to keep every rule.",
        &[],
        f64::from(u8::from(f.counters.plan_infeasible.load(Ordering::Relaxed))),
    );
    out.counter(
        "wharf_fleet_router_errors_total",
        "Failed pushes of the routes to the map files or HAProxy.",
        &[],
        f.counters.router_errors.load(Ordering::Relaxed) as f64,
    );
    let mut store_ok = store_up;
    match f
        .store()
        .moves(Some(&[MoveState::Planned, MoveState::Running]), 10_000)
        .await
    {
        Ok(ms) => {
            for m in ms {
                out.gauge(
                    "wharf_fleet_move_step_age_seconds",
                    "Time a move in flight has spent in its current step.",
                    &[("move", &m.id.to_string()), ("tenant", &m.tenant)],
                    now.saturating_sub(m.step_since_unix) as f64,
                );
            }
        }
        Err(_) => store_ok = false,
    }
    match f.store().move_counts().await {
        Ok(counts) => {
            for (s, n) in counts {
                out.gauge(
                    "wharf_fleet_moves",
                    "Moves per state.",
                    &[("state", s.as_str())],
                    n as f64,
                );
            }
        }
        Err(_) => store_ok = false,
    }
    out.gauge(
        "wharf_fleet_store_up",
        "0 when the fleet's database did not answer while this page was written.",
        &[],
        f64::from(u8::from(store_ok)),
    );
    out.finish()
}
