//! `wharf fleet serve` and `wharf fleet migrate`: run the fleet service
//! (`wharf_fleetd`) and manage its database's schema.
//!
//! Owns: the flags, turning them into a `wharf_fleetd::ServiceConfig`,
//! binding the listener, the runtime and shutdown on Ctrl-C / SIGTERM.
//! Must never: contain the service's logic (that is `wharf-fleetd`'s).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tracing_subscriber::EnvFilter;
use wharf_fleet::DIMS;
use wharf_fleetd::mover::{HttpMover, MoverConfig};
use wharf_fleetd::router::RouterConfig;
use wharf_fleetd::scrape::ScrapeConfig;
use wharf_fleetd::view::PolicyConfig;
use wharf_fleetd::{FleetStore, Fleetd, MoveExecutor, ServiceConfig, StoreConfig};

/// The fleet database's connection flags, shared by `serve` and `migrate`.
#[derive(Args, Debug)]
pub(crate) struct DatabaseArgs {
    /// The fleet's own PostgreSQL database (not a cell's metadata
    /// database), as a URL: postgres://user@host:5432/fleet.
    #[arg(
        long,
        env = "WHARF_FLEET_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        help_heading = "Database"
    )]
    database_url: String,
    /// Connections the service holds to it at most.
    #[arg(long, default_value_t = 8, value_name = "N", help_heading = "Database")]
    database_pool: usize,
    /// Seconds to open a connection, and separately to wait for a free one.
    #[arg(
        long,
        default_value_t = 5,
        value_name = "SECS",
        help_heading = "Database"
    )]
    database_connect_timeout: u64,
    /// Seconds any statement may run (the server's statement_timeout).
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECS",
        help_heading = "Database"
    )]
    database_statement_timeout: u64,
}

impl DatabaseArgs {
    fn config(&self) -> StoreConfig {
        StoreConfig {
            url: self.database_url.clone(),
            pool_size: self.database_pool,
            connect_timeout: Duration::from_secs(self.database_connect_timeout.max(1)),
            statement_timeout: Duration::from_secs(self.database_statement_timeout.max(1)),
        }
    }
}

/// `wharf fleet migrate`.
#[derive(Args, Debug)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

/// `wharf fleet serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Apply pending schema migrations at start (else a database that is
    /// not current is refused: run `wharf fleet migrate`).
    #[arg(long, help_heading = "Database")]
    migrate: bool,

    /// Address of the fleet API and /metrics.
    #[arg(long, default_value = "127.0.0.1:5100", value_name = "ADDR")]
    listen: SocketAddr,
    /// Write the address actually bound (useful with port 0) to this file
    /// once listening.
    #[arg(long, value_name = "FILE")]
    addr_file: Option<PathBuf>,
    /// File holding one line `sha256:<hex>`: the SHA-256 of the admin
    /// token clients send as `Authorization: Bearer <token>` (the node's
    /// --admin-token-file format; `wharf admin token` makes a pair).
    /// Required when --listen is not a loopback address.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Ask for the admin token on /metrics too.
    #[arg(long)]
    metrics_require_token: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "WHARF_LOG", default_value = "info")]
    log: String,

    /// Seconds between scrapes of every cell's nodes.
    #[arg(
        long,
        default_value_t = 15,
        value_name = "SECS",
        help_heading = "Scraping"
    )]
    scrape_interval: u64,
    /// Seconds one node's /metrics may take, all told.
    #[arg(
        long,
        default_value_t = 5,
        value_name = "SECS",
        help_heading = "Scraping"
    )]
    scrape_timeout: u64,
    /// Seconds to connect to a node.
    #[arg(
        long,
        default_value_t = 2,
        value_name = "SECS",
        help_heading = "Scraping"
    )]
    scrape_connect_timeout: u64,
    /// Scrapes in flight at once per cell.
    #[arg(long, default_value_t = 4, value_name = "N", help_heading = "Scraping")]
    scrape_concurrency: usize,
    /// File whose first line is the nodes' admin token (plain, as `wharf
    /// admin --token-file` reads it): sent to their /metrics if it asks for
    /// one, and to their admin API when a tenant moves (export, import,
    /// fence, blobs), which always does off loopback.
    #[arg(long, value_name = "FILE", help_heading = "Scraping")]
    node_token_file: Option<PathBuf>,
    /// Seconds a cell's figures stay fresh; older, the cell gets no new
    /// tenants and is not relieved by the rebalancer.
    #[arg(
        long,
        default_value_t = 120,
        value_name = "SECS",
        help_heading = "Scraping"
    )]
    staleness_bound: u64,

    /// The most of any capacity dimension placements and moves may use
    /// (default for new cells; the fleet-wide threshold).
    #[arg(
        long,
        default_value_t = 0.7,
        value_name = "RATIO",
        help_heading = "Placement"
    )]
    threshold: f64,
    /// Where the warning alert fires (default for new cells).
    #[arg(
        long,
        default_value_t = 0.6,
        value_name = "RATIO",
        help_heading = "Placement"
    )]
    warn: f64,
    /// Moves in or out of one cell per plan step.
    #[arg(
        long,
        default_value_t = 2,
        value_name = "N",
        help_heading = "Placement"
    )]
    max_moves_per_cell: usize,
    /// Seconds between scheduled rebalancer runs (a cell crossing its
    /// threshold runs it at the next scrape).
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECS",
        help_heading = "Placement"
    )]
    rebalance_interval: u64,
    /// Only record what the rebalancer would do; never apply it on its
    /// own (`wharf fleet apply` still does).
    #[arg(long, help_heading = "Placement")]
    no_auto_apply: bool,

    /// Seconds the source cell keeps serving a moved tenant's reads after
    /// the route flip (clients holding a connection to it), before the
    /// tenant's data there is removed.
    #[arg(
        long,
        default_value_t = 60,
        value_name = "SECS",
        help_heading = "Moves"
    )]
    move_grace_secs: u64,
    /// A copy pass changing at most this many records (blobs copied plus
    /// records created, updated or deleted) ends the pre-copy: the tenant
    /// is then fenced for the final delta.
    #[arg(long, default_value_t = 20, value_name = "N", help_heading = "Moves")]
    move_small_delta: u64,
    /// Pre-copy passes at most before fencing anyway.
    #[arg(long, default_value_t = 5, value_name = "N", help_heading = "Moves")]
    move_max_passes: u32,
    /// What a fenced tenant's pushes are told to wait (`Retry-After`, s).
    #[arg(long, default_value_t = 2, value_name = "SECS", help_heading = "Moves")]
    move_retry_after: u32,
    /// The lease of a move's write fence (s): the move renews it every
    /// third of it, and a fence nobody renews (the service died or lost
    /// the source cell) lapses by itself about this long after the last
    /// renewal, so the tenant's pushes are never refused for longer.
    #[arg(long, default_value_t = 3, value_name = "SECS", help_heading = "Moves")]
    move_fence_lease_secs: u64,
    /// Blob copies a move's bulk pre-copy starts per second at most, so
    /// that copying a tenant takes only a share of both cells' capacity
    /// (0: no limit). The delta passes and the fenced pass are not paced.
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Moves")]
    move_max_blobs_per_sec: u32,
    /// Moves run at once.
    #[arg(long, default_value_t = 2, value_name = "N", help_heading = "Moves")]
    max_concurrent_moves: usize,
    /// Never run moves: requested and planned moves stay `planned` (for a
    /// fleet whose nodes cannot export or import yet).
    #[arg(long, help_heading = "Moves")]
    no_moves: bool,

    /// Directory of the router's hosts.map and tenants.map, spelled as the
    /// HAProxy configuration spells it. Without it routing is not managed.
    #[arg(long, value_name = "DIR", help_heading = "Routing")]
    haproxy_maps: Option<PathBuf>,
    /// HAProxy's runtime API socket (stats socket … level admin): route
    /// changes are applied to the running HAProxy as well as the files.
    #[arg(
        long,
        value_name = "PATH",
        requires = "haproxy_maps",
        help_heading = "Routing"
    )]
    haproxy_socket: Option<PathBuf>,
    /// Seconds one runtime API exchange may take.
    #[arg(
        long,
        default_value_t = 2,
        value_name = "SECS",
        help_heading = "Routing"
    )]
    haproxy_timeout: u64,
}

fn init_logging(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn first_line(path: &PathBuf) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn service_config(a: &ServeArgs) -> Result<ServiceConfig, String> {
    for (name, v) in [("--threshold", a.threshold), ("--warn", a.warn)] {
        if !(v > 0.0 && v <= 1.0) {
            return Err(format!("{name} must be in (0, 1]"));
        }
    }
    if a.warn > a.threshold {
        return Err("--warn must not be above --threshold".into());
    }
    if a.scrape_interval == 0 || a.scrape_timeout == 0 || a.scrape_connect_timeout == 0 {
        return Err("scrape intervals and timeouts must be at least 1 s".into());
    }
    let admin_token_hash = match &a.admin_token_file {
        Some(p) => Some(wharf_fleetd::api::parse_token_hash(&first_line(p)?)?),
        None if !a.listen.ip().is_loopback() => {
            return Err(format!(
                "--listen {} is not a loopback address: give --admin-token-file",
                a.listen
            ))
        }
        None => None,
    };
    let token = match &a.node_token_file {
        Some(p) => Some(first_line(p)?).filter(|t| !t.is_empty()),
        None => None,
    };
    Ok(ServiceConfig {
        policy: PolicyConfig {
            threshold: [a.threshold; DIMS],
            warn: [a.warn; DIMS],
            max_moves_per_cell: a.max_moves_per_cell.max(1),
            staleness_bound: a.staleness_bound.max(1),
        },
        scrape: ScrapeConfig {
            connect_timeout: Duration::from_secs(a.scrape_connect_timeout),
            request_timeout: Duration::from_secs(a.scrape_timeout),
            max_concurrent: a.scrape_concurrency.max(1),
            token,
            ..ScrapeConfig::default()
        },
        scrape_interval: Duration::from_secs(a.scrape_interval),
        rebalance_interval: Duration::from_secs(a.rebalance_interval.max(1)),
        auto_apply: !a.no_auto_apply,
        max_concurrent_moves: a.max_concurrent_moves.max(1),
        router: a.haproxy_maps.as_ref().map(|dir| RouterConfig {
            maps_dir: dir.clone(),
            socket: a.haproxy_socket.clone(),
            timeout: Duration::from_secs(a.haproxy_timeout.max(1)),
        }),
        admin_token_hash,
        metrics_need_token: a.metrics_require_token,
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Attempts at the service lock, half a second apart, before refusing.
const LOCK_TRIES: u32 = 6;

async fn serve(a: ServeArgs) -> Result<(), String> {
    let config = service_config(&a)?;
    let store = FleetStore::connect(a.database.config())
        .await
        .map_err(|e| e.to_string())?;
    if a.migrate {
        let n = store.migrate().await.map_err(|e| e.to_string())?;
        tracing::info!(applied = n, "fleet schema migrations");
    }
    let version = store.schema_version().await.map_err(|e| e.to_string())?;
    if version != wharf_fleetd::store::SCHEMA_VERSION {
        return Err(format!(
            "the fleet database is at schema version {version}, this build needs {}: \
             run `wharf fleet migrate` (or serve --migrate)",
            wharf_fleetd::store::SCHEMA_VERSION
        ));
    }
    // One service per database: two would run the same moves. A service
    // that has just stopped may hold it for a moment more, until its
    // database session ends: a few tries, then a clear refusal.
    let mut tries = 0;
    let lock = loop {
        tries += 1;
        match store.lock_service().await {
            Ok(l) => break l,
            Err(wharf_fleetd::StoreError::Conflict(e)) if tries < LOCK_TRIES => {
                tracing::debug!(error = %e, "the fleet service lock is taken; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let guard = tokio::spawn(keep_service_lock(store.clone(), lock));
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", a.listen))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--listen {}: {e}", a.listen))?;
    if let Some(f) = &a.addr_file {
        // Written whole or not at all: a reader never sees half an address.
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .and_then(|()| std::fs::rename(&tmp, f))
            .map_err(|e| format!("--addr-file {}: {e}", f.display()))?;
    }
    tracing::info!(addr = %bound, routing = config.router.is_some(), "fleet service listening");
    let executor: Option<Arc<dyn MoveExecutor>> = if a.no_moves {
        None
    } else {
        Some(Arc::new(HttpMover::new(MoverConfig {
            node_token: config.scrape.token.clone(),
            small_delta: a.move_small_delta,
            max_passes: a.move_max_passes.max(1),
            fence_retry_after: a.move_retry_after.clamp(1, 60),
            fence_lease: Duration::from_secs(a.move_fence_lease_secs.clamp(2, 300)),
            grace: Duration::from_secs(a.move_grace_secs),
            max_blobs_per_sec: a.move_max_blobs_per_sec,
            ..MoverConfig::default()
        })?))
    };
    let fleetd = Fleetd::new(store, config, executor);
    let lost = async {
        match guard.await {
            Ok(e) => e,
            Err(e) => format!("the service lock's watcher stopped: {e}"),
        }
    };
    tokio::select! {
        r = wharf_fleetd::serve(fleetd, listener, shutdown_signal()) => r.map_err(|e| format!("serving: {e}")),
        e = lost => Err(e),
    }
}

/// Watches the service lock: when its connection closes (the database
/// restarted, say), takes it again; returns (and the service stops) only
/// when another service took it meanwhile.
async fn keep_service_lock(
    store: FleetStore,
    mut lock: wharf_fleetd::store::ServiceLock,
) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if lock.held() {
            continue;
        }
        match store.lock_service().await {
            Ok(l) => {
                tracing::info!("fleet service lock taken again after its connection closed");
                lock = l;
            }
            Err(wharf_fleetd::StoreError::Conflict(e)) => return e,
            Err(e) => tracing::warn!(error = %e, "cannot take the fleet service lock again yet"),
        }
    }
}

/// Runs `wharf fleet serve`.
pub(crate) fn run_serve(a: ServeArgs) -> ExitCode {
    init_logging(&a.log);
    let result = runtime().and_then(|rt| rt.block_on(serve(a)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf fleet serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `wharf fleet migrate`.
pub(crate) fn run_migrate(a: MigrateArgs) -> ExitCode {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let store = FleetStore::connect(a.database.config())
                .await
                .map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())
        })
    });
    match result {
        Ok(n) => {
            println!(
                "fleet database at schema version {} ({n} migration(s) applied)",
                wharf_fleetd::store::SCHEMA_VERSION
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf fleet migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct P {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        let mut v = vec!["serve", "--database-url", "postgres://x@h/fleet"];
        v.extend_from_slice(args);
        P::try_parse_from(v).unwrap().a
    }

    #[test]
    fn a_public_listener_needs_a_token() {
        let e = service_config(&parse(&["--listen", "0.0.0.0:5100"])).unwrap_err();
        assert!(e.contains("--admin-token-file"), "{e}");
        assert!(service_config(&parse(&[])).is_ok());
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(service_config(&parse(&["--threshold", "1.5"])).is_err());
        assert!(service_config(&parse(&["--threshold", "0.5", "--warn", "0.6"])).is_err());
        let c = service_config(&parse(&["--threshold", "0.8", "--no-auto-apply"])).unwrap();
        assert_eq!(c.policy.threshold, [0.8; DIMS]);
        assert!(!c.auto_apply);
        assert!(c.router.is_none());
    }

    #[test]
    fn routing_needs_the_maps_directory() {
        let mut v = vec!["serve", "--database-url", "u", "--haproxy-socket", "/s"];
        assert!(P::try_parse_from(&v).is_err());
        v.extend_from_slice(&["--haproxy-maps", "/etc/haproxy/maps"]);
        let c = service_config(&P::try_parse_from(&v).unwrap().a).unwrap();
        let r = c.router.unwrap();
        assert_eq!(r.maps_dir, PathBuf::from("/etc/haproxy/maps"));
        assert_eq!(r.socket, Some(PathBuf::from("/s")));
    }
}
