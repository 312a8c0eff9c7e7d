//! `wharf fleet tenants`: place, find, move and list tenants through the
//! fleet API (`/fleet/v1/tenants`).
//!
//! Owns: the flags and the printing. Must never: decide anything (the
//! service places with `wharf_fleet::place` and explains a refusal).

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::{segment, FleetConnection};

/// Tenants: place, where, move, list.
#[derive(Args, Debug)]
pub(crate) struct TenantsArgs {
    #[command(flatten)]
    connection: FleetConnection,
    #[command(subcommand)]
    command: TenantsCommand,
}

#[derive(Subcommand, Debug)]
enum TenantsCommand {
    /// Place a new tenant on the cell that keeps every hard rule (state,
    /// freshness, pins, anti-affinity, every dimension within the
    /// threshold) with the lowest resulting utilisation, have that cell
    /// create it (name, hostname, quota) through a node's admin API, and
    /// route it. When no cell fits, prints why, counted across cells and
    /// cell by cell, and exits non-zero; when the cell refuses the tenant
    /// (its name or hostname taken there), prints the cell's message,
    /// routes nothing and exits non-zero. Placing again the same tenant
    /// with the same settings finishes a placement whose cell could not be
    /// reached.
    Place(PlaceArgs),
    /// Say which cell a tenant lives in, and any move in flight.
    Where {
        /// The tenant.
        name: String,
    },
    /// Request a move of a tenant to --to, or without it to the cell
    /// placement would choose among the others. The move is re-checked
    /// and recorded as planned for the move executor.
    Move {
        /// The tenant.
        name: String,
        /// The destination cell's id.
        #[arg(long)]
        to: Option<u32>,
    },
    /// List the tenants with their home cells.
    List,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GroupScope {
    /// Never two members in one cell.
    Cell,
    /// Never two members in one zone.
    Zone,
}

#[derive(Args, Debug)]
struct PlaceArgs {
    /// The tenant's name (the first component of its repositories).
    name: String,
    /// Its own hostname, routed to its cell by Host header.
    #[arg(long)]
    hostname: Option<String>,
    /// The tenant's quota of stored bytes on its cell (the node's tenant
    /// quota; unlimited without it).
    #[arg(long, value_name = "BYTES", help_heading = "Quota")]
    quota_bytes: Option<u64>,
    /// The tenant's quota of repositories on its cell.
    #[arg(long, value_name = "N", help_heading = "Quota")]
    quota_repositories: Option<u64>,
    /// Reserve this many stored bytes (measured use replaces a smaller
    /// reservation once the cell's nodes report it).
    #[arg(long, value_name = "BYTES", help_heading = "Reservation")]
    storage_bytes: Option<u64>,
    /// Reserve pull requests per second.
    #[arg(long, value_name = "RPS", help_heading = "Reservation")]
    pull_rps: Option<f64>,
    /// Reserve push requests per second.
    #[arg(long, value_name = "RPS", help_heading = "Reservation")]
    push_rps: Option<f64>,
    /// Reserve bandwidth in bytes per second.
    #[arg(long, value_name = "BYTES_PER_S", help_heading = "Reservation")]
    bandwidth: Option<u64>,
    /// Join an anti-affinity group: no two members share a cell (or a
    /// zone, with --group-scope zone). Repeat for several groups.
    #[arg(long = "group", value_name = "NAME", help_heading = "Rules")]
    groups: Vec<String>,
    /// How far apart the groups' members stay.
    #[arg(long, value_enum, default_value = "cell", help_heading = "Rules")]
    group_scope: GroupScope,
    /// Only these cells may take it (repeat).
    #[arg(long = "pin", value_name = "CELL", help_heading = "Rules")]
    pins: Vec<u32>,
    /// Never this cell (repeat).
    #[arg(long = "exclude", value_name = "CELL", help_heading = "Rules")]
    excluded: Vec<u32>,
}

pub(crate) fn run(a: TenantsArgs) -> Result<(), String> {
    let c = a.connection.client()?;
    match a.command {
        TenantsCommand::Place(p) => {
            let mut demand = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    demand.insert(k.into(), v);
                }
            };
            put("storage_bytes", p.storage_bytes.map(Value::from));
            put("pull_requests_per_second", p.pull_rps.map(Value::from));
            put("push_requests_per_second", p.push_rps.map(Value::from));
            put("bandwidth_bytes_per_second", p.bandwidth.map(Value::from));
            let scope = match p.group_scope {
                GroupScope::Cell => "cell",
                GroupScope::Zone => "zone",
            };
            let mut quota = serde_json::Map::new();
            if let Some(b) = p.quota_bytes {
                quota.insert("bytes".into(), b.into());
            }
            if let Some(r) = p.quota_repositories {
                quota.insert("repositories".into(), r.into());
            }
            let body = json!({
                "name": p.name, "hostname": p.hostname, "demand": demand, "quota": quota,
                "anti_affinity": p.groups.iter().map(|g| json!({"group": g, "scope": scope})).collect::<Vec<_>>(),
                "pinned_to": p.pins, "excluded": p.excluded,
            });
            let v = c.post("/fleet/v1/tenants", &body)?;
            c.print(&v, |v| {
                format!(
                    "{}\ncell {}: tenant {} {}; routed to {}",
                    v["reason"].as_str().unwrap_or(""),
                    v["cell"],
                    v["tenant"].as_str().unwrap_or("?"),
                    v["created_on_cell"].as_str().unwrap_or("created"),
                    v["backend"].as_str().unwrap_or("?")
                )
            });
        }
        TenantsCommand::Where { name } => {
            let v = c.get(&format!("/fleet/v1/tenants/{}", segment(&name)))?;
            c.print(&v, |v| {
                let mut s = format!(
                    "{}: cell {} ({})",
                    v["tenant"].as_str().unwrap_or("?"),
                    v["cell"],
                    v["backend"].as_str().unwrap_or("")
                );
                if let Some(h) = v["hostname"].as_str() {
                    s.push_str(&format!(", hostname {h}"));
                }
                if v["fenced"].as_bool() == Some(true) {
                    s.push_str(", writes fenced");
                }
                let m = &v["move"];
                if !m.is_null() {
                    s.push_str(&format!(
                        "\nmoving: move {} to cell {}, {} ({})",
                        m["id"],
                        m["to"],
                        m["state"].as_str().unwrap_or("?"),
                        m["step"].as_str().unwrap_or("?")
                    ));
                }
                s
            });
        }
        TenantsCommand::Move { name, to } => {
            let v = c.post(
                &format!("/fleet/v1/tenants/{}/move", segment(&name)),
                &json!({ "to": to }),
            )?;
            c.print(&v, |v| super::moves::line(&v["move"]));
        }
        TenantsCommand::List => {
            let v = c.get("/fleet/v1/tenants")?;
            c.print(&v, |v| {
                let mut out = format!("{:<32} {:>5}  HOSTNAME\n", "TENANT", "CELL");
                for t in v["tenants"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<32} {:>5}  {}\n",
                        t["tenant"].as_str().unwrap_or("?"),
                        t["cell"],
                        t["hostname"].as_str().unwrap_or("-")
                    ));
                }
                out
            });
        }
    }
    Ok(())
}
