//! `wharf-load`: the load generator of Wharf's overload benchmark
//! (`scripts/bench/overload.sh`, run by hand, never by CI) and the pushers
//! of the garbage-collection race test (`gc-race`: tests/e2e and
//! tests/cluster run a minute of it, `scripts/bench/gc-race.sh` longer).
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
//! - `gc-race`: pushers that share layers, move and delete tags and delete
//!   manifests while the garbage collector runs, then a check that every tag
//!   they hold pulls byte-identical (issue 12's race test); `gc-verify`
//!   repeats that check later from the state `gc-race` wrote (after a final
//!   collection, or a crash and restart). Both exit 1 when a check fails.
//!
//! Output: one JSON document on stdout, a human summary on stderr.
//!
//! Layout: `target` parses and checks addresses and URL specs, `load`,
//! `slowloris` and `race` are the modes, `stats` turns the raw samples of
//! `load` into the report.
//!
//! Must never: target a non-loopback address, run without a time bound, or
//! keep unbounded per-request state (samples are capped by `--max-requests`).
//! Raise the open-file limit in the calling shell (`ulimit -n`), not here.

#![forbid(unsafe_code)]

mod load;
mod race;
mod slowloris;
mod stats;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "wharf-load",
    about = "Loopback-only load generator for Wharf's overload benchmark and garbage-collection race test"
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
    /// Pushers racing the garbage collector: shared layers, moved and
    /// deleted tags, deleted manifests; then every held tag is pulled and
    /// checked byte for byte.
    GcRace(RaceArgs),
    /// Pulls and checks every tag in a state file written by
    /// `gc-race --state-out`.
    GcVerify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
struct RaceArgs {
    /// Base URL: `http://ip:port` of a node or a load balancer (loopback).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    credentials: Credentials,
    /// Concurrent pushers, each on its own connection.
    #[arg(long, default_value_t = 8)]
    pushers: usize,
    /// Seconds to race (then the final deletions and the check).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// At most this many pushes in total (the race stops when reached).
    #[arg(long, default_value_t = 1_000_000)]
    max_pushes: u64,
    /// Seed of every random choice and byte [the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Repositories are PREFIX/r0, PREFIX/r1, ...
    #[arg(long, default_value = "gc-race")]
    prefix: String,
    #[arg(long, default_value_t = 4)]
    repos: usize,
    /// Tags each pusher cycles through (its own: pN-0, pN-1, ...).
    #[arg(long, default_value_t = 8)]
    tags_per_pusher: usize,
    /// Layers in the pool images share.
    #[arg(long, default_value_t = 16)]
    shared_layers: usize,
    /// Smallest and largest layer, in bytes.
    #[arg(long, default_value_t = 1024)]
    min_layer_bytes: usize,
    #[arg(long, default_value_t = 8192)]
    max_layer_bytes: usize,
    /// Chance that a turn deletes a held tag.
    #[arg(long, default_value_t = 0.10)]
    p_delete_tag: f64,
    /// Chance that a turn deletes a held manifest by digest.
    #[arg(long, default_value_t = 0.10)]
    p_delete_manifest: f64,
    /// Chance that a turn pulls a held image (by digest, bytes checked).
    #[arg(long, default_value_t = 0.10)]
    p_pull: f64,
    /// Chance that a push sends a lately deleted or untagged image again.
    #[arg(long, default_value_t = 0.15)]
    p_repush: f64,
    /// Chance that a missing blob is mounted from another repository the
    /// pusher put it in, rather than uploaded.
    #[arg(long, default_value_t = 0.3)]
    p_mount: f64,
    /// Connections each pusher uploads an image's blobs on at once (as
    /// docker does, up to its max-concurrent-uploads).
    #[arg(long, default_value_t = 3)]
    upload_concurrency: usize,
    /// Tries of one operation (refused with 503/429/MANIFEST_BLOB_UNKNOWN)
    /// before it counts as given up, a failure.
    #[arg(long, default_value_t = 40)]
    max_tries: u32,
    /// Longest wait for one whole answer, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    deadline_ms: u64,
    /// Longest pause after a 503/429 (its Retry-After, capped), in ms.
    #[arg(long, default_value_t = 1000)]
    max_pause_ms: u64,
    /// After the race, delete this fraction of the held images by digest
    /// (leaves the collector work; the rest are checked).
    #[arg(long, default_value_t = 0.0)]
    final_delete_fraction: f64,
    /// Pause before the final check, in ms (node-local tag caches expire).
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// Write the held tags (JSON) here, for a later `gc-verify`.
    #[arg(long)]
    state_out: Option<std::path::PathBuf>,
    /// A free-form name copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// HTTP Basic credentials for a registry that asks for them (`--auth
/// htpasswd`, a user of the htpasswd file or of the tenant directory).
#[derive(clap::Args, Debug)]
struct Credentials {
    /// The user every request is sent as.
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// A file holding the user's password (its first line).
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<std::path::PathBuf>,
}

impl Credentials {
    /// The `Authorization` header value, if credentials were given.
    fn header(&self) -> Result<Option<hyper::header::HeaderValue>, String> {
        use base64::Engine;
        let (Some(user), Some(file)) = (&self.user, &self.password_file) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--password-file {}: {e}", file.display()))?;
        let password = text.lines().next().unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        hyper::header::HeaderValue::from_str(&format!("Basic {token}"))
            .map(Some)
            .map_err(|_| "--user: not usable in a header".to_string())
    }
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Base URL: `http://ip:port` of a node or a load balancer (loopback).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    credentials: Credentials,
    /// A state file written by `gc-race --state-out`.
    #[arg(long)]
    state: std::path::PathBuf,
    /// Concurrent checkers.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 30_000)]
    deadline_ms: u64,
    #[arg(long, default_value_t = 1000)]
    max_pause_ms: u64,
    #[arg(long, default_value_t = 40)]
    max_tries: u32,
    #[arg(long, default_value = "")]
    label: String,
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
        Mode::GcRace(a) => plan_race(a)
            .and_then(|p| runtime().block_on(race::run(p)))
            .map(checked),
        Mode::GcVerify(a) => plan_verify(a)
            .and_then(|p| runtime().block_on(race::run_verify(p)))
            .map(checked),
    };
    match result {
        Ok(report) if report["ok"] == false => {
            println!("{report}");
            ExitCode::from(1)
        }
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

/// A checking mode's report, with `ok` saying whether its checks passed.
fn checked((report, ok): (serde_json::Value, bool)) -> serde_json::Value {
    debug_assert_eq!(report["ok"], ok);
    report
}

/// A probability is within [0, 1] (NaN is not).
fn probability(name: &str, p: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("--{name} {p} is not within [0, 1]"))
    }
}

fn base_url(url: &str) -> Result<(std::net::SocketAddr, String), String> {
    let (addr, authority, path) = target::parse_addr(url)?;
    if path.is_some_and(|p| p != "/v2/" && p != "/v2") {
        return Err(format!("--url {url}: give the base URL (http://ip:port)"));
    }
    Ok((addr, authority))
}

fn plan_race(a: RaceArgs) -> Result<race::Plan, String> {
    let (addr, authority) = base_url(&a.url)?;
    // Longer than `load`'s hour: the race is also run by hand for hours.
    if !(a.duration > 0.0 && a.duration <= 6.0 * 3600.0) {
        return Err(format!(
            "--duration {} is not within (0, 21600]",
            a.duration
        ));
    }
    if a.pushers == 0 || a.pushers > 1000 {
        return Err("--pushers must be within 1..=1000".into());
    }
    if a.upload_concurrency == 0 || a.upload_concurrency > 16 {
        return Err("--upload-concurrency must be within 1..=16".into());
    }
    if a.repos == 0 || a.tags_per_pusher == 0 || a.max_tries == 0 || a.max_pushes == 0 {
        return Err(
            "--repos, --tags-per-pusher, --max-tries and --max-pushes must be positive".into(),
        );
    }
    if a.min_layer_bytes == 0
        || a.min_layer_bytes > a.max_layer_bytes
        || a.max_layer_bytes > 64 << 20
    {
        return Err("need 0 < --min-layer-bytes <= --max-layer-bytes <= 64 MiB".into());
    }
    if a.prefix.is_empty()
        || !a
            .prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
    {
        return Err(format!(
            "--prefix {:?}: lowercase letters, digits, - _ . / only",
            a.prefix
        ));
    }
    let p_delete_tag = probability("p-delete-tag", a.p_delete_tag)?;
    let p_delete_manifest = probability("p-delete-manifest", a.p_delete_manifest)?;
    let p_pull = probability("p-pull", a.p_pull)?;
    if p_delete_tag + p_delete_manifest + p_pull >= 1.0 {
        return Err(
            "--p-delete-tag + --p-delete-manifest + --p-pull must leave room for pushes".into(),
        );
    }
    Ok(race::Plan {
        to: race::Endpoint {
            addr,
            authority,
            auth: a.credentials.header()?,
        },
        pushers: a.pushers,
        duration: Duration::from_secs_f64(a.duration),
        max_pushes: a.max_pushes,
        seed: a.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }),
        prefix: a.prefix,
        repos: a.repos,
        tags_per_pusher: a.tags_per_pusher,
        shape: race::image::Shape {
            shared: a.shared_layers,
            min_layer: a.min_layer_bytes,
            max_layer: a.max_layer_bytes,
        },
        p_delete_tag,
        p_delete_manifest,
        p_pull,
        p_repush: probability("p-repush", a.p_repush)?,
        p_mount: probability("p-mount", a.p_mount)?,
        upload_lanes: a.upload_concurrency,
        max_tries: a.max_tries,
        deadline: Duration::from_millis(a.deadline_ms.max(1)),
        max_pause: Duration::from_millis(a.max_pause_ms),
        final_delete: probability("final-delete-fraction", a.final_delete_fraction)?,
        settle: Duration::from_millis(a.settle_ms),
        state_out: a.state_out,
        label: a.label,
    })
}

fn plan_verify(a: VerifyArgs) -> Result<race::VerifyPlan, String> {
    let (addr, authority) = base_url(&a.url)?;
    if a.clients == 0 || a.clients > 1000 || a.max_tries == 0 {
        return Err("--clients must be within 1..=1000 and --max-tries positive".into());
    }
    Ok(race::VerifyPlan {
        to: race::Endpoint {
            addr,
            authority,
            auth: a.credentials.header()?,
        },
        state: a.state,
        clients: a.clients,
        deadline: Duration::from_millis(a.deadline_ms.max(1)),
        max_pause: Duration::from_millis(a.max_pause_ms),
        max_tries: a.max_tries,
        label: a.label,
    })
}
