//! `wharf fleet`: the fleet's command line. `simulate` runs the fleet
//! simulator; `serve` and `migrate` run the fleet service
//! (`wharf-fleetd`); the rest are clients of its admin API
//! (`docs/fleet-api.yaml`).
//!
//! Owns: the flags and help of every `wharf fleet` command, one file per
//! resource (`cells`, `tenants`, `plan` with `apply` and `decisions`,
//! `moves`), the client connection
//! ([`FleetConnection`]: `--url`, `--token-file`, `--json`) and how
//! answers are printed. Must never: decide anything (placement and plans
//! are `wharf-fleet`'s, reached through the service) or reach the fleet's
//! database except through `serve` and `migrate`.
//!
//! The connection is a small type of its own rather than `admin_cli`'s
//! `Connection`: the fleet service is another server with its own URL and
//! token, and `admin_cli` is being split into modules; the two could share
//! one type once that settles.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

mod cells;
mod moves;
mod plan;
mod serve;
mod simulate;
mod tenants;

/// Where the fleet service listens unless told otherwise.
pub(crate) const DEFAULT_FLEET_URL: &str = "http://127.0.0.1:5100";
/// The environment variable holding the fleet admin token itself.
const TOKEN_ENV: &str = "WHARF_FLEET_TOKEN";

/// The fleet: simulate it, run its service, manage it.
#[derive(Args, Debug)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Simulate a fleet hour by hour from one seed, through the same
    /// placement, rebalancing and plan-checking code the fleet service
    /// runs, and write a markdown report with PNG plots into --out.
    ///
    /// Without a preset: a week of 12 cells and 1,000 tenants, no crunch.
    /// `--incident` replays the 504 incident (a capacity crunch that puts
    /// two control-plane components on one shared proxy) under both the
    /// permissive policy and Wharf's. `--scale` runs 1,000 cells and
    /// 100,000 tenants for 30 days. Every other flag overrides the preset.
    Simulate(Box<simulate::SimulateArgs>),
    /// Run the fleet service: its admin API and /metrics on --listen, a
    /// loop that scrapes every cell's nodes, keeps the router HAProxy's
    /// maps equal to the tenants' homes, and runs the rebalancer on a
    /// schedule and whenever a cell crosses its threshold.
    ///
    /// The service keeps its state in a PostgreSQL database of its own
    /// (--database-url). Nothing on the data path depends on it: when it is
    /// down, nodes keep serving and HAProxy keeps its last maps.
    ///
    /// One service per database: it holds a PostgreSQL advisory lock for
    /// as long as it runs, and a second one started on the same database
    /// refuses to start (after a few seconds of trying), naming the
    /// database session that holds the lock.
    Serve(Box<serve::ServeArgs>),
    /// Apply the fleet database's schema migrations and exit (`serve
    /// --migrate` does the same at start).
    Migrate(serve::MigrateArgs),
    /// Cells: add one, list them with their use, drain or retire one.
    Cells(cells::CellsArgs),
    /// Tenants: place a new one, say where one lives, move one, list them.
    Tenants(tenants::TenantsArgs),
    /// Show what the rebalancer would do now (a dry run): the moves that
    /// bring every cell within its threshold, the moves that empty each
    /// draining cell, and, when no plan keeps every rule, what is stuck
    /// and what capacity to add where.
    Plan(plan::PlanArgs),
    /// Apply the first step of the current plans: its moves, re-checked
    /// against the latest state, are recorded as planned for the move
    /// executor. Refused while moves are in flight.
    Apply(plan::ApplyArgs),
    /// Moves: list them, show one, cancel one.
    Moves(moves::MovesArgs),
    /// What the service decided and why, newest first: placements and
    /// their refusals (by the rules or by the cell), tenants created on
    /// their cells, rebalancer runs (threshold crossed or scheduled) with
    /// the moves they recorded, route flips, drains, cancels.
    Decisions(plan::DecisionsArgs),
}

/// Runs `wharf fleet …`.
pub fn run_fleet(args: FleetArgs) -> ExitCode {
    match args.command {
        FleetCommand::Simulate(a) => simulate::run_simulate(&a),
        FleetCommand::Serve(a) => serve::run_serve(*a),
        FleetCommand::Migrate(a) => serve::run_migrate(a),
        FleetCommand::Cells(a) => finish("cells", cells::run(a)),
        FleetCommand::Tenants(a) => finish("tenants", tenants::run(a)),
        FleetCommand::Plan(a) => finish("plan", plan::run_plan(a)),
        FleetCommand::Apply(a) => finish("apply", plan::run_apply(a)),
        FleetCommand::Moves(a) => finish("moves", moves::run(a)),
        FleetCommand::Decisions(a) => finish("decisions", plan::run_decisions(a)),
    }
}

fn finish(what: &str, r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf fleet {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a client command reaches the fleet service.
#[derive(Args, Debug)]
pub(crate) struct FleetConnection {
    /// Base URL of the fleet service (`wharf fleet serve --listen`).
    #[arg(
        long,
        env = "WHARF_FLEET_URL",
        default_value = DEFAULT_FLEET_URL,
        global = true,
        value_name = "URL",
        help_heading = "Connection"
    )]
    url: String,

    /// File whose first line is the fleet admin token (the token itself,
    /// not the `sha256:` line given to `serve --admin-token-file`).
    /// Without it the token is taken from WHARF_FLEET_TOKEN; without
    /// either, requests carry none (enough for a service started without
    /// --admin-token-file).
    #[arg(
        long,
        env = "WHARF_FLEET_TOKEN_FILE",
        global = true,
        value_name = "FILE",
        help_heading = "Connection"
    )]
    token_file: Option<PathBuf>,

    /// Print the service's JSON answer as it is, instead of a summary.
    #[arg(long, global = true, help_heading = "Connection")]
    json: bool,
}

/// A checked connection to the fleet service.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
    /// Whether to print raw JSON.
    pub(crate) json: bool,
}

impl FleetConnection {
    /// Checks the URL and reads the token before anything is sent.
    pub(crate) fn client(&self) -> Result<Client, String> {
        let url =
            reqwest::Url::parse(&self.url).map_err(|e| format!("--url {:?}: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--url {:?}: the scheme must be http or https",
                self.url
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("--url must not hold credentials: give the token with --token-file".into());
        }
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading the token from {}: {e}", path.display()))?;
                let t = text.lines().next().unwrap_or("").trim().to_string();
                if t.is_empty() {
                    return Err(format!("{} holds no token", path.display()));
                }
                if t.starts_with("sha256:") {
                    return Err(format!(
                        "{} holds the token's hash (serve's --admin-token-file); \
                         --token-file wants the token itself",
                        path.display()
                    ));
                }
                Some(t)
            }
            None => std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        };
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Client {
            base: self.url.trim_end_matches('/').to_string(),
            token,
            http,
            json: self.json,
        })
    }
}

impl Client {
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().map_err(|e| format!("{url}: {e}"))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(v);
        }
        Err(error_text(status.as_u16(), &v))
    }

    /// GET `path`; the answer, or the error envelope as text.
    pub(crate) fn get(&self, path: &str) -> Result<Value, String> {
        self.send(reqwest::Method::GET, path, None)
    }

    /// POST `body` to `path`.
    pub(crate) fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    /// PUT `body` to `path`.
    pub(crate) fn put(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(reqwest::Method::PUT, path, Some(body))
    }

    /// PATCH `body` to `path`.
    pub(crate) fn patch(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(reqwest::Method::PATCH, path, Some(body))
    }

    /// Prints `v` as JSON if asked to, else as `human` writes it.
    pub(crate) fn print(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            let text = human(v);
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
}

/// An error answer for people: the message, then each counted reason and
/// each cell's rejection when the service sent them.
fn error_text(status: u16, v: &Value) -> String {
    let Some(e) = v["errors"].get(0) else {
        return format!(
            "HTTP {status}: {}",
            v.as_str().unwrap_or(&v.to_string()).trim()
        );
    };
    let mut out = format!(
        "{} ({status} {})",
        e["message"].as_str().unwrap_or("?"),
        e["code"].as_str().unwrap_or("?")
    );
    if let Some(rej) = e["detail"]["rejections"].as_array() {
        for r in rej {
            out.push_str(&format!(
                "\n  cell {}: {}",
                r["cell"],
                r["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// A path segment, percent-encoded where needed.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A ratio as a percentage.
pub(crate) fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|f| format!("{:.0}%", f * 100.0))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        fleet: Wrapped,
    }

    #[derive(Subcommand, Debug)]
    enum Wrapped {
        Fleet(FleetArgs),
    }

    #[test]
    fn every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                assert!(
                    sub.get_about().is_some() || sub.get_long_about().is_some(),
                    "{p} has no help"
                );
                for arg in sub.get_arguments() {
                    assert!(
                        arg.get_help().is_some() || arg.get_long_help().is_some(),
                        "{p} --{} has no help",
                        arg.get_id()
                    );
                }
                walk(sub, &p);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        walk(&cmd, "wharf");
    }

    #[test]
    fn error_answers_list_their_reasons() {
        let v = serde_json::json!({"errors": [{"code": "PLACEMENT_REFUSED",
            "message": "0/2 cells fit tenant a: 2 draining",
            "detail": {"rejections": [{"cell": 1, "reason": "draining"}]}}]});
        assert_eq!(
            error_text(409, &v),
            "0/2 cells fit tenant a: 2 draining (409 PLACEMENT_REFUSED)\n  cell 1: draining"
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("acme"), "acme");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
