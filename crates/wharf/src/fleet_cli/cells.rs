//! `wharf fleet cells`: add, list, change the nodes or limits of, drain and retire
//! cells through the fleet API (`/fleet/v1/cells`).
//!
//! Owns: the flags and the printing. Must never: decide anything.

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use wharf_fleet::Dimension;

use super::{pct, FleetConnection};

/// Cells: add one, list them, change a cell's nodes, drain or retire one.
#[derive(Args, Debug)]
pub(crate) struct CellsArgs {
    #[command(flatten)]
    connection: FleetConnection,
    #[command(subcommand)]
    command: CellsCommand,
}

#[derive(Subcommand, Debug)]
enum CellsCommand {
    /// Add a cell: its id, zone, capacity on each of the five dimensions,
    /// and the admin URLs of its nodes (whose /metrics the service
    /// scrapes). No tenant is placed on it until its nodes have been read
    /// twice (rates need two readings).
    Add(AddArgs),
    /// List the cells: state, how fresh their figures are, tenants, and
    /// utilisation per dimension.
    List,
    /// Replace a registered cell's nodes (their admin URLs), e.g. after a
    /// node moved to another address or the cell gained one: the service
    /// scrapes the new list from its next round, and moves started from
    /// then on use it.
    SetNodes {
        /// The cell's id.
        id: u32,
        /// An admin base URL of one of its nodes; repeat for each node.
        /// The list replaces the old one whole.
        #[arg(long = "node", value_name = "URL", required = true)]
        nodes: Vec<String>,
    },
    /// Change a registered cell's capacity (only the dimensions given),
    /// threshold or warning ratio, e.g. after its nodes grew: placement and
    /// the rebalancer use the new figures from their next decision.
    SetLimits(SetLimitsArgs),
    /// Start draining a cell: no tenant is placed on it any more, and the
    /// planner moves its tenants away (`wharf fleet plan`, `apply`).
    Drain {
        /// The cell's id.
        id: u32,
    },
    /// Retire a cell. Only an empty cell (no tenant, no move in flight)
    /// can be retired; drain it first.
    Retire {
        /// The cell's id.
        id: u32,
    },
}

#[derive(Args, Debug)]
struct AddArgs {
    /// The cell's id (its HAProxy backend is `cell_<id>`).
    #[arg(long)]
    id: u32,
    /// Its failure domain (cells of one zone fail together).
    #[arg(long)]
    zone: u16,
    /// An admin base URL of one of its nodes, e.g. http://10.0.1.5:5001;
    /// repeat for each node.
    #[arg(long = "node", value_name = "URL", required = true)]
    nodes: Vec<String>,
    /// Capacity: connections its nodes may hold to shared dependencies
    /// (the sum of their pools).
    #[arg(long, value_name = "N")]
    connections: u64,
    /// Capacity: stored bytes.
    #[arg(long, value_name = "BYTES")]
    storage_bytes: u64,
    /// Capacity: pull requests per second.
    #[arg(long, value_name = "RPS")]
    pull_rps: f64,
    /// Capacity: push requests per second.
    #[arg(long, value_name = "RPS")]
    push_rps: f64,
    /// Capacity: bandwidth in bytes per second, both directions.
    #[arg(long, value_name = "BYTES_PER_S")]
    bandwidth: u64,
    /// The most of any dimension placements and moves may use (0.7 = 70%).
    /// Default: the service's --threshold.
    #[arg(long, value_name = "RATIO")]
    threshold: Option<f64>,
    /// Where the warning alert fires. Default: the service's --warn.
    #[arg(long, value_name = "RATIO")]
    warn: Option<f64>,
}

#[derive(Args, Debug)]
struct SetLimitsArgs {
    /// The cell's id.
    id: u32,
    /// Capacity: connections its nodes may hold to shared dependencies.
    #[arg(long, value_name = "N")]
    connections: Option<u64>,
    /// Capacity: stored bytes.
    #[arg(long, value_name = "BYTES")]
    storage_bytes: Option<u64>,
    /// Capacity: pull requests per second.
    #[arg(long, value_name = "RPS")]
    pull_rps: Option<f64>,
    /// Capacity: push requests per second.
    #[arg(long, value_name = "RPS")]
    push_rps: Option<f64>,
    /// Capacity: bandwidth in bytes per second, both directions.
    #[arg(long, value_name = "BYTES_PER_S")]
    bandwidth: Option<u64>,
    /// The most of any dimension placements and moves may use (0.7 = 70%).
    #[arg(long, value_name = "RATIO")]
    threshold: Option<f64>,
    /// Where the warning alert fires.
    #[arg(long, value_name = "RATIO")]
    warn: Option<f64>,
}

impl SetLimitsArgs {
    /// The request body: only what was given.
    fn body(&self) -> Value {
        let mut capacity = serde_json::Map::new();
        let dims = [
            (Dimension::Connections, self.connections.map(|v| json!(v))),
            (Dimension::Storage, self.storage_bytes.map(|v| json!(v))),
            (Dimension::PullRate, self.pull_rps.map(|v| json!(v))),
            (Dimension::PushRate, self.push_rps.map(|v| json!(v))),
            (Dimension::Bandwidth, self.bandwidth.map(|v| json!(v))),
        ];
        for (d, v) in dims {
            if let Some(v) = v {
                capacity.insert(d.label().into(), v);
            }
        }
        let mut body = serde_json::Map::new();
        if !capacity.is_empty() {
            body.insert("capacity".into(), Value::Object(capacity));
        }
        if let Some(t) = self.threshold {
            body.insert("threshold".into(), json!(t));
        }
        if let Some(w) = self.warn {
            body.insert("warn".into(), json!(w));
        }
        Value::Object(body)
    }
}

pub(crate) fn run(a: CellsArgs) -> Result<(), String> {
    let c = a.connection.client()?;
    match a.command {
        CellsCommand::Add(x) => {
            let v = c.post(
                "/fleet/v1/cells",
                &json!({
                    "id": x.id, "zone": x.zone, "nodes": x.nodes,
                    "capacity": {
                        "connections": x.connections, "storage_bytes": x.storage_bytes,
                        "pull_requests_per_second": x.pull_rps,
                        "push_requests_per_second": x.push_rps,
                        "bandwidth_bytes_per_second": x.bandwidth,
                    },
                    "threshold": x.threshold, "warn": x.warn,
                }),
            )?;
            c.print(&v, |v| {
                format!(
                    "cell {} added in zone {} ({})",
                    v["cell"]["id"],
                    v["cell"]["zone"],
                    v["cell"]["backend"].as_str().unwrap_or("")
                )
            });
        }
        CellsCommand::List => {
            let v = c.get("/fleet/v1/cells")?;
            c.print(&v, list_text);
        }
        CellsCommand::SetNodes { id, nodes } => {
            let v = c.put(
                &format!("/fleet/v1/cells/{id}/nodes"),
                &json!({"nodes": nodes}),
            )?;
            c.print(&v, |v| {
                let nodes: Vec<&str> = v["cell"]["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                format!("cell {id}: nodes {}", nodes.join(" "))
            });
        }
        CellsCommand::SetLimits(x) => {
            let body = x.body();
            if body.as_object().is_some_and(|m| m.is_empty()) {
                return Err(
                    "nothing to change: give a capacity flag, --threshold or --warn".into(),
                );
            }
            let v = c.patch(&format!("/fleet/v1/cells/{}", x.id), &body)?;
            c.print(&v, |v| {
                let cell = &v["cell"];
                format!(
                    "cell {}: capacity {}, threshold {}, warn {}",
                    x.id, cell["capacity"], cell["threshold"], cell["warn"]
                )
            });
        }
        CellsCommand::Drain { id } => {
            let v = c.post(&format!("/fleet/v1/cells/{id}/drain"), &json!({}))?;
            c.print(&v, |v| {
                format!("cell {id}: {}", v["cell"]["state"].as_str().unwrap_or("?"))
            });
        }
        CellsCommand::Retire { id } => {
            let v = c.post(&format!("/fleet/v1/cells/{id}/retire"), &json!({}))?;
            c.print(&v, |v| {
                format!("cell {id}: {}", v["cell"]["state"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(())
}

fn list_text(v: &Value) -> String {
    let mut out = format!(
        "{:>5} {:>5} {:<9} {:<8} {:>7}  {:>5} {:>5} {:>5} {:>5} {:>5}\n",
        "CELL", "ZONE", "STATE", "USAGE", "TENANTS", "CONN", "STOR", "PULL", "PUSH", "BW"
    );
    for c in v["cells"].as_array().into_iter().flatten() {
        let u = &c["utilisation"];
        let d = |d: Dimension| pct(&u[d.label()]);
        out.push_str(&format!(
            "{:>5} {:>5} {:<9} {:<8} {:>7}  {:>5} {:>5} {:>5} {:>5} {:>5}\n",
            c["id"],
            c["zone"],
            c["state"].as_str().unwrap_or("?"),
            c["usage"].as_str().unwrap_or("?"),
            c["tenants"],
            d(Dimension::Connections),
            d(Dimension::Storage),
            d(Dimension::PullRate),
            d(Dimension::PushRate),
            d(Dimension::Bandwidth),
        ));
        if let Some(e) = c["last_error"].as_str() {
            out.push_str(&format!("      last scrape failed: {e}\n"));
        }
    }
    out
}
