//! `wharf fleet plan`, `wharf fleet apply` and `wharf fleet decisions`:
//! the rebalancer's proposal (a dry run), applying its first step, and the
//! record of what the service decided and why, through the fleet API
//! (`/fleet/v1/plan`, `/fleet/v1/plan/apply`, `/fleet/v1/decisions`).
//!
//! Owns: printing plans and decisions. Must never: plan anything itself.

use clap::Args;
use serde_json::{json, Value};

use super::FleetConnection;

/// `wharf fleet plan`.
#[derive(Args, Debug)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    connection: FleetConnection,
}

/// `wharf fleet apply`.
#[derive(Args, Debug)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    connection: FleetConnection,
}

/// `wharf fleet decisions`.
#[derive(Args, Debug)]
pub(crate) struct DecisionsArgs {
    #[command(flatten)]
    connection: FleetConnection,
    /// Show at most this many, newest first.
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: u32,
}

fn plan_text(plan: &Value) -> String {
    let mut out = String::new();
    for s in plan["steps"].as_array().into_iter().flatten() {
        for m in s["moves"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  step {}: {} cell {} -> cell {} ({} bytes): {}\n",
                s["step"],
                m["tenant"].as_str().unwrap_or("?"),
                m["from"],
                m["to"],
                m["storage_bytes"],
                m["reason"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

fn plans_text(v: &Value) -> String {
    let mut out = String::new();
    for p in v["plans"].as_array().into_iter().flatten() {
        let goal = p["goal"].as_str().unwrap_or("?");
        if p["feasible"].as_bool() == Some(true) {
            let plan = &p["plan"];
            if plan["moves"] == 0 {
                out.push_str(&format!("{goal}: nothing to do\n"));
            } else {
                out.push_str(&format!(
                    "{goal}: {} move(s), {} bytes copied (lower bound {})\n",
                    plan["moves"], plan["bytes_moved"], plan["lower_bound_bytes"]
                ));
                out.push_str(&plan_text(plan));
            }
        } else {
            let np = &p["no_plan"];
            out.push_str(&format!("{goal}: NO PLAN KEEPS EVERY RULE\n"));
            for line in np["text"].as_str().unwrap_or("").lines() {
                out.push_str(&format!("  {line}\n"));
            }
            let partial = plan_text(&np["partial"]);
            if !partial.is_empty() {
                out.push_str("  the part that can be done:\n");
                out.push_str(&partial);
            }
        }
    }
    out
}

pub(crate) fn run_plan(a: PlanArgs) -> Result<(), String> {
    let c = a.connection.client()?;
    let v = c.get("/fleet/v1/plan")?;
    c.print(&v, |v| {
        let mut s = plans_text(v);
        if v["moves_in_flight"].as_u64().unwrap_or(0) > 0 {
            s.push_str(&format!(
                "{} move(s) in flight: `wharf fleet apply` waits for them\n",
                v["moves_in_flight"]
            ));
        }
        s
    });
    Ok(())
}

pub(crate) fn run_apply(a: ApplyArgs) -> Result<(), String> {
    let c = a.connection.client()?;
    let v = c.post("/fleet/v1/plan/apply", &json!({}))?;
    c.print(&v, |v| {
        let mut s = String::new();
        let recorded = v["recorded"].as_array().cloned().unwrap_or_default();
        if recorded.is_empty() {
            s.push_str("no move recorded\n");
        }
        for m in &recorded {
            s.push_str(&format!(
                "move {}: {} cell {} -> cell {}, planned: {}\n",
                m["move"],
                m["tenant"].as_str().unwrap_or("?"),
                m["from"],
                m["to"],
                m["reason"].as_str().unwrap_or("")
            ));
        }
        for r in v["refused"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "refused by the applier ({}): {}\n",
                r["goal"].as_str().unwrap_or("?"),
                r["violation"].as_str().unwrap_or("?")
            ));
        }
        if v["plans"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["feasible"] == false))
        {
            s.push_str("no plan keeps every rule: see `wharf fleet plan`\n");
        }
        s
    });
    Ok(())
}

pub(crate) fn run_decisions(a: DecisionsArgs) -> Result<(), String> {
    let c = a.connection.client()?;
    let v = c.get(&format!("/fleet/v1/decisions?limit={}", a.limit.max(1)))?;
    c.print(&v, |v| {
        let mut s = String::new();
        for d in v["decisions"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "{} {} {}: {}\n",
                d["at"].as_str().unwrap_or("?"),
                d["kind"].as_str().unwrap_or("?"),
                d["subject"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or("")
            ));
        }
        s
    });
    Ok(())
}
