//! `wharf-load`: the load generator of Wharf's overload benchmark
//! (`scripts/bench/overload.sh`), run by hand, never by CI.
//!
//! It only ever targets loopback: every target address must be an IP literal
//! in `127.0.0.0/8` or `::1`, and anything else is refused before a single
//! packet is sent. It is a tool for measuring a server on the same machine,
//! not for loading anyone else's.
//!
//! Two modes, each bounded in time (and `load` also in request count), each
//! stopping by itself:
//!
//! - `load`: closed-loop clients, each on its own keep-alive HTTP/1.1
//!   connection (reconnecting when the server closes it), cycling through a
//!   mix of URLs. Every request has a deadline; one still unanswered when it
//!   passes counts as a *hang* (the request a proxy in front would have
//!   turned into a `504`). Outcomes are counted by kind (2xx, 429, 503, other
//!   status, connection refused, reset/closed without a response, hang) with
//!   latency percentiles per kind, goodput, and a per-second time series.
//!   The client count can change in stages (`--stage 64:5 --stage 2000:30
//!   --stage 64:10`) to model a surge and what follows it.
//! - `slowloris`: N connections that each send a request head one byte at a
//!   time, every few seconds, never finishing it; reports when and how the
//!   server closed them.
//!
//! Output: one JSON document on stdout, a human summary on stderr.
//!
//! Layout: `target` parses and checks addresses and URL specs, `load` and
//! `slowloris` are the two modes, `stats` turns the raw samples into the
//! report.
//!
//! Must never: target a non-loopback address, run without a time bound, or
//! keep unbounded per-request state (samples are capped by `--max-requests`).
//! Raise the open-file limit in the calling shell (`ulimit -n`), not here.

#![forbid(unsafe_code)]

mod load;
mod slowloris;
mod stats;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "wharf-load",
    about = "Loopback-only load generator for Wharf's overload benchmark"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Closed-loop clients on keep-alive connections, for a bounded time and
    /// request count; counts every outcome, with latencies and a time series.
    Load(LoadArgs),
    /// Connections that trickle an unfinished request head, one byte at a
    /// time; reports when the server closed them.
    Slowloris(SlowArgs),
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// A request to send: `[METHOD ]URL[|Header: value]...`, e.g.
    /// `http://127.0.0.1:5000/v2/a/b/manifests/1|Accept: application/vnd.oci.image.manifest.v1+json`.
    /// Repeat for a mix; client i starts at spec i and cycles through all.
    /// All specs must name the same loopback `ip:port`.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Concurrent clients (one stage of --duration seconds). Ignored when
    /// --stage is given.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds to run (one stage of --clients clients).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// `CLIENTS:SECONDS`, repeatable: stages run one after another; clients
    /// beyond a stage's count close their connections and wait.
    #[arg(long = "stage")]
    stages: Vec<String>,
    /// At most this many requests in total (a hard bound; the run stops
    /// early when it is reached and says so).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// A request not answered in full within this many milliseconds counts
    /// as a hang; its connection is dropped.
    #[arg(long, default_value_t = 2000)]
    deadline_ms: u64,
    /// After a 429 or 503, the client waits this long before its next
    /// request (0: retry at once, the harshest load).
    #[arg(long, default_value_t = 0)]
    refusal_pause_ms: u64,
    /// After a 429 or 503, also wait what its `Retry-After` header asks, up
    /// to this many milliseconds (as a well-behaved client would). Off when
    /// not given: refused clients come back at once.
    #[arg(long)]
    honor_retry_after_max_ms: Option<u64>,
    /// After a refused or reset connection, the client waits this long
    /// before trying again (so a dead server does not make it spin).
    #[arg(long, default_value_t = 10)]
    error_pause_ms: u64,
    /// A free-form name copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(clap::Args, Debug)]
struct SlowArgs {
    /// Target: `ip:port` or `http://ip:port[/path]`, loopback only.
    #[arg(long)]
    addr: String,
    /// Path in the unfinished request line (default `/v2/`, or the URL's).
    #[arg(long)]
    path: Option<String>,
    /// Connections held at once.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Seconds to run; every connection is closed by then.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Milliseconds between two bytes on one connection.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
    /// Open a new connection when the server closes one (a persistent
    /// attacker); without it each slot connects once.
    #[arg(long)]
    reconnect: bool,
    /// With --reconnect: wait this long before reconnecting a slot.
    #[arg(long, default_value_t = 200)]
    reconnect_pause_ms: u64,
    /// At most this many connection attempts in total.
    #[arg(long, default_value_t = 1_000_000)]
    max_connects: u64,
    /// A free-form name copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Load(a) => plan_load(a).and_then(|p| runtime().block_on(load::run(p))),
        Mode::Slowloris(a) => plan_slow(a).and_then(|p| runtime().block_on(slowloris::run(p))),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A duration in seconds is positive and at most an hour (NaN is not).
fn within_an_hour(secs: f64) -> bool {
    secs > 0.0 && secs <= 3600.0
}

fn plan_load(a: LoadArgs) -> Result<load::Plan, String> {
    let mut specs = Vec::new();
    for u in &a.urls {
        specs.push(target::parse_spec(u)?);
    }
    let addr = specs[0].addr;
    if let Some(other) = specs.iter().find(|s| s.addr != addr) {
        return Err(format!(
            "all --url specs must name the same ip:port ({addr} vs {})",
            other.addr
        ));
    }
    let stages = if a.stages.is_empty() {
        vec![load::Stage {
            clients: a.clients,
            secs: a.duration,
        }]
    } else {
        a.stages
            .iter()
            .map(|s| load::Stage::parse(s))
            .collect::<Result<_, _>>()?
    };
    let total: f64 = stages.iter().map(|s| s.secs).sum();
    if !within_an_hour(total) {
        return Err(format!("total duration {total} s is not within (0, 3600]"));
    }
    if stages.iter().any(|s| s.clients > 100_000) {
        return Err("more than 100000 clients in a stage".into());
    }
    if a.deadline_ms == 0 || a.max_requests == 0 {
        return Err("--deadline-ms and --max-requests must be positive".into());
    }
    Ok(load::Plan {
        addr,
        authority: specs[0].authority.clone(),
        targets: specs.into_iter().map(|s| s.request).collect(),
        stages,
        max_requests: a.max_requests,
        deadline: Duration::from_millis(a.deadline_ms),
        refusal_pause: Duration::from_millis(a.refusal_pause_ms),
        honor_retry_after: a.honor_retry_after_max_ms.map(Duration::from_millis),
        error_pause: Duration::from_millis(a.error_pause_ms),
        label: a.label,
    })
}

fn plan_slow(a: SlowArgs) -> Result<slowloris::Plan, String> {
    let (addr, authority, url_path) = target::parse_addr(&a.addr)?;
    if !within_an_hour(a.duration) {
        return Err(format!("--duration {} is not within (0, 3600]", a.duration));
    }
    if a.connections == 0 || a.connections > 100_000 {
        return Err("--connections must be within 1..=100000".into());
    }
    let path = a.path.or(url_path).unwrap_or_else(|| "/v2/".into());
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ') {
        return Err(format!("bad --path {path:?}"));
    }
    Ok(slowloris::Plan {
        addr,
        authority,
        path,
        connections: a.connections,
        duration: Duration::from_secs_f64(a.duration),
        interval: Duration::from_millis(a.interval_ms.max(1)),
        reconnect: a.reconnect,
        reconnect_pause: Duration::from_millis(a.reconnect_pause_ms),
        max_connects: a.max_connects,
        label: a.label,
    })
}
