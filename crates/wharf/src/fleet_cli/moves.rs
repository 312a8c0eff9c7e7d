//! `wharf fleet moves`: list, show and cancel tenant moves through the
//! fleet API (`/fleet/v1/moves`).
//!
//! Owns: the flags and the printing. Must never: run a move (that is the
//! service's move executor).

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::FleetConnection;

/// Moves: list, show, cancel.
#[derive(Args, Debug)]
pub(crate) struct MovesArgs {
    #[command(flatten)]
    connection: FleetConnection,
    #[command(subcommand)]
    command: MovesCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum State {
    /// Recorded, waiting for the executor.
    Planned,
    /// Being copied, fenced or flipped.
    Running,
    /// Finished.
    Done,
    /// Stopped by an error.
    Failed,
    /// Stopped by an operator.
    Cancelled,
}

#[derive(Subcommand, Debug)]
enum MovesCommand {
    /// List moves, newest first.
    List {
        /// Only moves in this state.
        #[arg(long, value_enum)]
        state: Option<State>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one move: its state, step, counters, fence times and error.
    Show {
        /// The move's id.
        id: i64,
    },
    /// Cancel a move that has not flipped its route yet; the tenant stays
    /// where it is.
    Cancel {
        /// The move's id.
        id: i64,
    },
}

/// One move on one line.
pub(crate) fn line(m: &Value) -> String {
    format!(
        "move {}: {} cell {} -> cell {}, {} (step {}, {} s){}",
        m["id"],
        m["tenant"].as_str().unwrap_or("?"),
        m["from"],
        m["to"],
        m["state"].as_str().unwrap_or("?"),
        m["step"].as_str().unwrap_or("?"),
        m["step_age_seconds"],
        m["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

pub(crate) fn run(a: MovesArgs) -> Result<(), String> {
    let c = a.connection.client()?;
    match a.command {
        MovesCommand::List { state, limit } => {
            let mut path = format!("/fleet/v1/moves?limit={limit}");
            if let Some(s) = state {
                let s = s.to_possible_value().map(|p| p.get_name().to_string());
                path.push_str(&format!("&state={}", s.unwrap_or_default()));
            }
            let v = c.get(&path)?;
            c.print(&v, |v| {
                v["moves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| line(m) + "\n")
                    .collect()
            });
        }
        MovesCommand::Show { id } => {
            let v = c.get(&format!("/fleet/v1/moves/{id}"))?;
            c.print(&v, |v| {
                format!(
                    "{}\nreason: {}\nstarted {}, updated {}\nfence: {} .. {}\ncounters: {}",
                    line(v),
                    v["reason"].as_str().unwrap_or(""),
                    v["started"].as_str().unwrap_or("?"),
                    v["updated"].as_str().unwrap_or("?"),
                    v["fence_start"].as_str().unwrap_or("-"),
                    v["fence_end"].as_str().unwrap_or("-"),
                    v["counters"]
                )
            });
        }
        MovesCommand::Cancel { id } => {
            let v = c.post(&format!("/fleet/v1/moves/{id}/cancel"), &json!({}))?;
            c.print(&v, line);
        }
    }
    Ok(())
}
