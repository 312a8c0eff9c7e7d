//! `wharf fleet simulate`: runs the fleet simulator (`wharf_fleet::sim`)
//! from the command line and writes its report.
//!
//! Owns: the flags (one per simulation knob, each overriding the chosen
//! preset) and writing the report into the directory named by `--out`.
//! Must never: contain placement or simulation logic; that lives in
//! `wharf-fleet`, so the simulator runs the same code as the fleet service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use wharf_fleet::sim::{replay, run, Crunch, PolicyKind, SimConfig, SimResult};
use wharf_fleet::Dimension;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Which {
    /// Wharf's policy only.
    Wharf,
    /// The permissive policy only.
    Permissive,
    /// Both, on the same workload (the default with --incident).
    Both,
}

#[derive(Args, Debug)]
pub(crate) struct SimulateArgs {
    /// Directory to write report.md and the PNG plots into (created if
    /// missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The one seed every random draw comes from; a seed replays exactly.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Preset: the incident replay (crunch on day 1 at 08:00 takes away
    /// cells c1-c4 for 30 hours; both policies).
    #[arg(long, conflicts_with = "scale")]
    incident: bool,
    /// Preset: 1,000 cells, 100,000 tenants, 30 days, failures, a cell added
    /// every 12 h and one drained every 48 h.
    #[arg(long)]
    scale: bool,
    /// Which policy to run [default: both with --incident, else wharf].
    #[arg(long, value_enum)]
    policy: Option<Which>,

    /// Simulated hours.
    #[arg(long, help_heading = "Fleet")]
    hours: Option<u32>,
    /// Failure domains.
    #[arg(long, help_heading = "Fleet")]
    zones: Option<u16>,
    /// Cells at the start.
    #[arg(long, help_heading = "Fleet")]
    cells: Option<u32>,
    /// Nodes per cell (each owns connections/nodes of the cell's pool).
    #[arg(long, help_heading = "Fleet")]
    nodes_per_cell: Option<u32>,
    /// Connections per cell: the sum of its nodes' pools (what `wharf
    /// check` verifies fits the database), and in the permissive model the
    /// shared proxy's connection limit.
    #[arg(long, help_heading = "Fleet")]
    cell_connections: Option<u64>,
    /// Storage per cell, GiB.
    #[arg(long, help_heading = "Fleet")]
    cell_storage_gib: Option<f64>,
    /// Pull requests per second per cell.
    #[arg(long, help_heading = "Fleet")]
    cell_pull_rps: Option<f64>,
    /// Push requests per second per cell.
    #[arg(long, help_heading = "Fleet")]
    cell_push_rps: Option<f64>,
    /// Bandwidth per cell, MiB/s.
    #[arg(long, help_heading = "Fleet")]
    cell_bandwidth_mibps: Option<f64>,
    /// Add one cell every this many hours (0: never).
    #[arg(long, help_heading = "Fleet")]
    add_cell_every_hours: Option<u32>,
    /// Drain and retire one cell every this many hours (0: never).
    #[arg(long, help_heading = "Fleet")]
    drain_every_hours: Option<u32>,
    /// Per cell per day chance of failing (usage unknown).
    #[arg(long, help_heading = "Fleet")]
    failure_per_cell_day: Option<f64>,
    /// Hours a failed cell stays unknown.
    #[arg(long, help_heading = "Fleet")]
    failure_hours: Option<u32>,

    /// Hour of the capacity crunch (enables one if the preset has none).
    #[arg(long, help_heading = "Crunch")]
    crunch_at_hour: Option<u32>,
    /// Cells the crunch takes away (c1, c2, ...; c0 stays).
    #[arg(long, help_heading = "Crunch")]
    crunch_cells: Option<u32>,
    /// Hours until as many cells come back (0: never).
    #[arg(long, help_heading = "Crunch")]
    crunch_restore_after_hours: Option<u32>,
    /// No crunch, whatever the preset says.
    #[arg(long, help_heading = "Crunch")]
    no_crunch: bool,

    /// Tenants at the start.
    #[arg(long, help_heading = "Tenants")]
    tenants: Option<u32>,
    /// New tenants per day (Poisson).
    #[arg(long, help_heading = "Tenants")]
    arrivals_per_day: Option<f64>,
    /// Share of tenants leaving per day.
    #[arg(long, help_heading = "Tenants")]
    departures_per_day: Option<f64>,
    /// Median tenant storage, GiB (log-normal).
    #[arg(long, help_heading = "Tenants")]
    storage_median_gib: Option<f64>,
    /// Log-normal shape of tenant storage and request rates.
    #[arg(long, help_heading = "Tenants")]
    size_sigma: Option<f64>,
    /// Median peak pull rate of a tenant, requests per second.
    #[arg(long, help_heading = "Tenants")]
    pull_median_rps: Option<f64>,
    /// Push rate as a share of pull rate.
    #[arg(long, help_heading = "Tenants")]
    push_share: Option<f64>,
    /// Bytes per pull, MiB (bandwidth).
    #[arg(long, help_heading = "Tenants")]
    mib_per_pull: Option<f64>,
    /// Minimum daily growth (Pareto).
    #[arg(long, help_heading = "Tenants")]
    growth_min_per_day: Option<f64>,
    /// Pareto tail index of growth (smaller: heavier tail).
    #[arg(long, help_heading = "Tenants")]
    growth_alpha: Option<f64>,
    /// Largest share of a cell one tenant may take on any dimension.
    #[arg(long, help_heading = "Tenants")]
    max_tenant_share: Option<f64>,
    /// Share of tenants with a replica that must live in another zone.
    #[arg(long, help_heading = "Tenants")]
    replicated_share: Option<f64>,
    /// Per tenant per hour chance of a burst.
    #[arg(long, help_heading = "Tenants")]
    burst_chance: Option<f64>,
    /// Load multiplier during a burst.
    #[arg(long, help_heading = "Tenants")]
    burst_factor: Option<f64>,
    /// Burst length, hours.
    #[arg(long, help_heading = "Tenants")]
    burst_hours: Option<u32>,

    /// Seconds a request holds a connection.
    #[arg(long, help_heading = "Data path")]
    request_seconds: Option<f64>,
    /// Share of requests that also call the control-plane API.
    #[arg(long, help_heading = "Data path")]
    api_call_share: Option<f64>,
    /// A request not answered within this many seconds is a 504.
    #[arg(long, help_heading = "Data path")]
    deadline_seconds: Option<f64>,
    /// Wharf's admission wait bound per node, seconds (below the deadline).
    #[arg(long, help_heading = "Data path")]
    admission_wait_seconds: Option<f64>,
    /// Connections each of the two control-plane components holds (0: no
    /// control-plane components).
    #[arg(long, help_heading = "Data path")]
    control_plane_connections: Option<u64>,

    /// Moves in or out of one cell per plan step (one step per hour).
    #[arg(long, help_heading = "Policy")]
    max_moves_per_cell: Option<usize>,
    /// Hours from a Wharf refusal or impossible plan until an operator
    /// adds a cell (0: never).
    #[arg(long, help_heading = "Policy")]
    operator_response_hours: Option<u32>,
}

const GIB: f64 = 1_073_741_824.0;

fn config(a: &SimulateArgs) -> Result<SimConfig, String> {
    let mut c = if a.scale {
        SimConfig::scale(a.seed, PolicyKind::Wharf)
    } else {
        let mut c = SimConfig::incident(a.seed, PolicyKind::Wharf);
        if !a.incident {
            c.crunch = None;
        }
        c
    };
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field { c.$field = v; } )* };
    }
    set!(
        hours,
        zones,
        cells,
        nodes_per_cell,
        add_cell_every_hours,
        drain_every_hours,
        failure_per_cell_day,
        failure_hours,
        tenants,
        arrivals_per_day,
        departures_per_day,
        size_sigma,
        push_share,
        growth_min_per_day,
        growth_alpha,
        max_tenant_share,
        replicated_share,
        burst_chance,
        burst_factor,
        burst_hours,
        request_seconds,
        api_call_share,
        deadline_seconds,
        admission_wait_seconds,
        control_plane_connections,
        max_moves_per_cell,
        operator_response_hours
    );
    if let Some(v) = a.cell_connections {
        c.cell_capacity[Dimension::Connections] = v;
    }
    if let Some(v) = a.cell_storage_gib {
        c.cell_capacity[Dimension::Storage] = (v * GIB) as u64;
    }
    if let Some(v) = a.cell_pull_rps {
        c.cell_capacity[Dimension::PullRate] = (v * 1000.0) as u64;
    }
    if let Some(v) = a.cell_push_rps {
        c.cell_capacity[Dimension::PushRate] = (v * 1000.0) as u64;
    }
    if let Some(v) = a.cell_bandwidth_mibps {
        c.cell_capacity[Dimension::Bandwidth] = (v * 1_048_576.0) as u64;
    }
    if let Some(v) = a.storage_median_gib {
        c.storage_median = v * GIB;
    }
    if let Some(v) = a.pull_median_rps {
        c.pull_median = v;
    }
    if let Some(v) = a.mib_per_pull {
        c.bytes_per_pull = v * 1_048_576.0;
    }
    if a.crunch_at_hour.is_some()
        || a.crunch_cells.is_some()
        || a.crunch_restore_after_hours.is_some()
    {
        let base = c.crunch.clone().unwrap_or(Crunch {
            at_hour: 32,
            cells_removed: 4,
            restore_after_hours: 30,
        });
        c.crunch = Some(Crunch {
            at_hour: a.crunch_at_hour.unwrap_or(base.at_hour),
            cells_removed: a.crunch_cells.unwrap_or(base.cells_removed),
            restore_after_hours: a
                .crunch_restore_after_hours
                .unwrap_or(base.restore_after_hours),
        });
    }
    if a.no_crunch {
        c.crunch = None;
    }
    if c.cells == 0 || c.zones == 0 || c.hours == 0 {
        return Err("--cells, --zones and --hours must be at least 1".into());
    }
    if c.admission_wait_seconds >= c.deadline_seconds {
        return Err("--admission-wait-seconds must be below --deadline-seconds".into());
    }
    Ok(c)
}

fn summary(r: &SimResult) -> String {
    format!(
        "{}: anti-affinity pairs together (max) {}, 504s {}, 503s {}, warnings {}, capacity reached {} ({} unwarned), refused {}, relaxed {}, moves {}, {:.1} GiB moved",
        r.config.policy.name(),
        r.max_aa_violations(),
        r.total_timeouts(),
        r.total_refused_fast(),
        r.warnings,
        r.saturations.len(),
        r.unwarned_saturations(),
        r.refusals,
        r.relaxed,
        r.moves,
        r.bytes_moved as f64 / GIB
    )
}

/// Runs `wharf fleet simulate`.
pub(crate) fn run_simulate(a: &SimulateArgs) -> ExitCode {
    let cfg = match config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wharf fleet simulate: {e}");
            return ExitCode::from(2);
        }
    };
    let which = a.policy.unwrap_or(if a.incident {
        Which::Both
    } else {
        Which::Wharf
    });
    let results: Vec<SimResult> = match which {
        Which::Both => {
            let r = replay(&cfg);
            vec![r.wharf, r.permissive]
        }
        Which::Wharf => vec![run(&SimConfig {
            policy: PolicyKind::Wharf,
            ..cfg.clone()
        })],
        Which::Permissive => vec![run(&SimConfig {
            policy: PolicyKind::Permissive,
            ..cfg.clone()
        })],
    };
    let title = if a.incident {
        "Fleet simulation: incident replay".to_string()
    } else {
        format!("Fleet simulation, seed {}", cfg.seed)
    };
    let refs: Vec<&SimResult> = results.iter().collect();
    match wharf_fleet::report::write(&a.out, &title, &refs) {
        Ok(files) => {
            for r in &results {
                println!("{}", summary(r));
            }
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf fleet simulate: writing {}: {e}", a.out.display());
            ExitCode::FAILURE
        }
    }
}
