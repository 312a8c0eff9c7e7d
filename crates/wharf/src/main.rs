//! The `wharf` binary: parses the command line and runs a subcommand.
//!
//! `wharf serve` runs a complete registry with the embedded default: blobs on
//! the local filesystem and metadata in an embedded database under the data
//! directory, with no other service needed.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use wharf_admission::{AdaptiveConfig, Admission, ClassLimits};
use wharf_api::admin::{metrics_app, probes_app, NodeState};
use wharf_api::admin_api::{admin_api_router, with_admin_token, AdminApi};
use wharf_api::gc_api::gc_router;
use wharf_api::{app_with, serve_with, AppState, ConnStats, MinRate, ServerConfig};
use wharf_guard::{BreakerConfig, Guard, GuardConfig, GuardedBlobStore, GuardedMetaStore};
use wharf_meta::MetaStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::BlobStore;
use wharf_tenants::Directory;

mod admin_cli;
mod backup_cli;
mod budget;
mod config;
mod config_view;
#[cfg(test)]
mod example_config;
mod fleet_cli;
mod gc_cli;
mod help;
mod log_sink;
mod startup;

use config::{Config, ServeArgs};
use startup::{local_dependencies, spawn_probes};

/// What `wharf --version` (and `wharf SUBCOMMAND --version`) prints after
/// the name: the version and the commit the binary was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WHARF_GIT_COMMIT"),
    ")"
);

/// Wharf: an OCI Distribution registry that keeps answering.
#[derive(Parser, Debug)]
#[command(name = "wharf", version = VERSION, propagate_version = true, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry.
    Serve(ServeArgs),
    /// Check a configuration without serving anything, by the same checks
    /// `wharf serve` makes before it listens: the configuration (printed
    /// with its key names, values and where each came from), the files
    /// (htpasswd, grants, signing key, token keys, admin token hash), the
    /// blob store and the metadata store probed with the configured
    /// credentials, the schema version, and whether the pools of all nodes
    /// fit what each shared dependency accepts. Changes nothing: no
    /// migration, no directory, file or object is created. Lists every
    /// problem and exits 1 if there is any (2 if the configuration itself
    /// cannot be read). Takes the flags of `serve`.
    ///
    /// With --storage it checks instead that the blob store and metadata
    /// agree: every digest metadata holds is stored, and nothing stored is
    /// unreferenced past its review (exits non-zero otherwise). It opens
    /// the configured stores itself; while a running node holds the
    /// embedded database, it asks that node's admin API (--admin-listen,
    /// token from WHARF_ADMIN_TOKEN) instead.
    Check(CheckArgs),
    /// Apply the metadata schema migrations this build needs to the
    /// PostgreSQL database of --metadata-url, and say which were applied
    /// (none when the schema is current; a schema newer than this build is
    /// refused). Several at once take turns. The embedded store has none.
    /// Takes the flags of `serve`; run it before starting nodes of a new
    /// version (docs/operations.md, "Upgrading").
    Migrate(ServeArgs),
    /// Generate a token signing key: writes `DIR/<time>-<kid>.private.pem`
    /// (P-256, PKCS#8, mode 0600: give it to --token-signing-key) and
    /// `DIR/<time>-<kid>.public.pem` (copy it into every node's
    /// --token-keys directory), and prints the key id.
    Keygen {
        /// Directory to write the key pair into (created if missing).
        dir: std::path::PathBuf,
    },
    /// Manage tenants, users and robot accounts through the admin API of
    /// a running server (docs/admin.md).
    Admin(admin_cli::AdminArgs),
    /// The fleet of cells: `simulate` runs the fleet simulator (README,
    /// "Fleet simulator"); `serve` and `migrate` run the fleet service;
    /// `cells`, `tenants`, `plan`, `apply` and `moves` manage it through
    /// its API (docs/fleet.md).
    Fleet(fleet_cli::FleetArgs),
    /// Garbage collection and retention on a running server, through its
    /// admin API: `run` (with --dry-run), `status`, `scan-orphans`,
    /// `check`, `retention [--dry-run] [--tenant T]` (docs/operations.md,
    /// "Garbage collection"; docs/admin.md, "Retention").
    Gc(gc_cli::GcArgs),
    /// Back up every tenant of a running node (accounts, repositories,
    /// manifests, tags and the blobs they link) into a new directory,
    /// through its admin API, while it serves (docs/backup.md).
    Backup(backup_cli::BackupArgs),
    /// Restore a `wharf backup` directory into a running node over empty
    /// stores, through its admin API (docs/backup.md).
    Restore(backup_cli::RestoreArgs),
}

fn main() -> std::process::ExitCode {
    let cli: Cli = help::parse();
    match cli.command {
        Command::Admin(args) => admin_cli::run(args),
        Command::Fleet(args) => fleet_cli::run_fleet(args),
        Command::Gc(args) => gc_cli::run_gc(args),
        Command::Backup(args) => backup_cli::run_backup(args),
        Command::Restore(args) => backup_cli::run_restore(args),
        Command::Keygen { dir } => match keygen(&dir) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wharf: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Check(CheckArgs {
            serve,
            storage: true,
            ..
        }) => check_storage(&serve),
        Command::Check(CheckArgs {
            serve: args, json, ..
        }) => check_config(&args, json),
        Command::Migrate(args) => migrate(&args),
        Command::Serve(args) => {
            let config = match load_config(&args) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config.log, config.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let code = match runtime.block_on(serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    // Logged once, to stderr like every log line.
                    tracing::error!("wharf: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
            log_sink::flush(Duration::from_secs(5));
            code
        }
    }
}

/// Applies every tenant's retention policy every `every`, as `wharf gc
/// retention` does on demand: each deletion re-checked right before it is
/// made and logged with its rule (what it deletes, garbage collection then
/// reclaims). Several nodes may run it at once; the re-checks make a
/// deletion another node already made a skip, nothing worse.
fn spawn_retention(registry: Registry, directory: Directory, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            for (tenant, policy) in directory.retention_policies() {
                let now = wharf_core::now_unix();
                match registry.apply_retention(&tenant, &policy, now, false).await {
                    Ok(r) if !r.deleted.is_empty() || !r.skipped.is_empty() => tracing::info!(
                        %tenant,
                        deleted = r.deleted.len(),
                        skipped = r.skipped.len(),
                        "retention: policy applied"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%tenant, error = %e, "retention: pass failed"),
                }
            }
        }
    });
}

/// `wharf check`: the flags of `serve`, and what to check.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Check that blob storage and metadata agree instead of the
    /// configuration.
    #[arg(long)]
    storage: bool,
    /// Print the result as one JSON object (`config`: every key with its
    /// value and origin; `notes`; `problems`) instead of text.
    #[arg(long)]
    json: bool,
}

/// The configuration of `serve`, `check` and `migrate`; one that cannot be
/// read is printed and becomes exit status 2.
fn load_config(args: &ServeArgs) -> Result<Config, std::process::ExitCode> {
    Config::load(args).map_err(|e| {
        eprintln!("wharf: {e}");
        std::process::ExitCode::from(2)
    })
}

/// `wharf check`: 0 when a start would go ahead, 1 when it would be
/// refused (every problem listed), 2 when the configuration cannot be read.
fn check_config(args: &ServeArgs, json: bool) -> std::process::ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (report, _, _) = runtime.block_on(startup::check(&config, startup::Mode::Check));
    if json {
        let out = serde_json::json!({
            "config": config_view::entries(&config),
            "notes": report.notes,
            "problems": report.problems,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("# configuration in force (flags and environment > --config file > defaults)");
        for line in config_view::render(&config) {
            println!("{line}");
        }
        println!();
        for note in &report.notes {
            println!("ok: {note}");
        }
        for problem in &report.problems {
            println!("PROBLEM: {problem}");
        }
    }
    if report.problems.is_empty() {
        if !json {
            println!("wharf check: a start with this configuration would go ahead");
        }
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!(
            "wharf check: {} problem(s): a start would be refused",
            report.problems.len()
        );
        std::process::ExitCode::FAILURE
    }
}

/// `wharf migrate`: 0 when the schema is current afterwards, 1 otherwise,
/// 2 when the configuration cannot be read.
fn migrate(args: &ServeArgs) -> std::process::ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(startup::migrate(&config)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf migrate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `wharf check --storage`: 0 when storage and metadata agree, 1 when they
/// do not (the findings are printed), 2 when the check could not run.
fn check_storage(args: &ServeArgs) -> std::process::ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let direct = runtime.block_on(async {
        let (blobs, meta) = startup::open_stores(&config).await?;
        let collector = wharf_gc::Collector::new(meta, blobs, config.gc.clone());
        collector.check().await.map_err(|e| e.to_string())
    });
    let clean = match direct {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            Ok(report.clean)
        }
        // The embedded database is held by a running node: ask it.
        Err(e) if config.metadata_url.is_none() && e.contains("already open") => {
            gc_cli::gc_check_remote(&format!("http://{}", config.admin_listen))
        }
        Err(e) => Err(e),
    };
    match clean {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("wharf check: storage and metadata disagree (see above)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wharf check: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The version and commit this binary was built from (`build.rs` reads the
/// commit from git; `unknown` outside a checkout).
fn build_info() -> wharf_api::admin::BuildInfo {
    wharf_api::admin::BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("WHARF_GIT_COMMIT").to_string(),
    }
}

/// Logs to stderr in the chosen format. The filter was checked when the
/// configuration was loaded, so it parses.
fn init_logging(filter: &str, format: config::LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_sink::sink());
    match format {
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let data = &config.data_dir;
    let build = build_info();
    tracing::info!(version = %build.version, commit = %build.commit, "wharf starting");
    if config.allow_unauthenticated && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen,
            "THE REGISTRY IS OPEN: --auth none on a non-loopback address \
             (--allow-unauthenticated); anyone who reaches it can push, overwrite and delete");
    }
    let l = &config.limits;
    for e in config_view::entries(&config) {
        if let Some(value) = e.value {
            tracing::info!("configuration: {} = {value}  # {}", e.key, e.origin);
        }
    }
    let startup::Prepared {
        blobs,
        meta,
        auth,
        pending,
    } = startup::prepare(&config).await?;
    let guard = |name, size| {
        Guard::new(GuardConfig {
            name,
            max_concurrent: size,
            // A call that cannot get a slot quickly is better refused than
            // queued: the client retries, the node stays responsive.
            max_wait: Duration::from_millis(100),
            deadline: l.dependency_deadline,
            // Open for a second at a time: with the background probes
            // below, a dependency that is back is used again within ~1.5 s.
            breaker: BreakerConfig {
                open_for: Duration::from_secs(1),
                ..BreakerConfig::default()
            },
        })
    };
    let storage_guard = guard("blob_storage", l.storage_pool);
    let meta_guard = guard("metadata", l.metadata_pool);
    spawn_probes(
        storage_guard.clone(),
        blobs.clone(),
        meta_guard.clone(),
        meta.clone(),
    );
    let guarded_meta: Arc<dyn MetaStore> =
        Arc::new(GuardedMetaStore::new(meta, meta_guard.clone()));
    // Tenants, users and robots: loaded now and refreshed in the
    // background, so every check on the request path is answered from
    // memory. If metadata is unreachable at start, the node starts with
    // an empty directory and picks it up as soon as metadata answers.
    let directory = Directory::new(guarded_meta.clone());
    match directory.load().await {
        Ok(()) => tracing::info!(
            tenants = directory.tenants().len(),
            "tenant directory loaded"
        ),
        Err(e) => tracing::warn!("tenant directory not loaded yet: {e}"),
    }
    directory.spawn_refresher(DIRECTORY_REFRESH);
    let refresh_store = guarded_meta.clone();
    // Per-tenant counters, the write fence and stored bytes (read in the
    // background, never per scrape).
    let traffic = Arc::new(wharf_api::tenant_traffic::TenantTraffic::new(
        directory.clone(),
    ));
    traffic.spawn_stored_refresher(
        guarded_meta.clone(),
        wharf_api::tenant_traffic::STORED_REFRESH,
    );
    let guarded_blobs: Arc<dyn BlobStore> =
        Arc::new(GuardedBlobStore::new(blobs, storage_guard.clone()));
    let gc_meta = guarded_meta.clone();
    let registry = Registry::new(
        guarded_blobs.clone(),
        guarded_meta,
        RegistryConfig {
            manifest_cache_bytes: config.manifest_cache_bytes,
            small_blob_cache_bytes: config.small_blob_cache_bytes,
            last_known_entries: config.last_known_entries,
            upload_expiry: config.upload_expiry,
            max_uploads_per_tenant: config.max_uploads_per_tenant,
            max_uploads_per_user: config.max_uploads_per_user,
            ..RegistryConfig::default()
        },
    )
    .with_quotas(Arc::new(directory.clone()))
    .with_immutable_tags(Arc::new(directory.clone()));
    match registry.expire_uploads(true).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed expired or orphaned upload sessions"),
        Err(e) => tracing::warn!("upload sweep at start-up failed: {e}"),
    }
    let sweeper = registry.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweeper.upload_sweep_interval());
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.expire_uploads(false).await {
                tracing::warn!("upload sweep failed: {e}");
            }
        }
    });
    // The garbage collector: through the same guarded, bounded paths to
    // each dependency as requests take; what it unlinks, this node forgets.
    let forget = registry.clone();
    let collector = Arc::new(
        wharf_gc::Collector::new(gc_meta, guarded_blobs, config.gc.clone()).on_unlink(Arc::new(
            move |repo: &wharf_core::RepoName, digest: &wharf_core::Digest| {
                forget.forget_link(repo, digest)
            },
        )),
    );
    if config.gc.enabled {
        tracing::info!(gc = ?config.gc, "garbage collector running");
        collector.clone().spawn();
    }
    if let Some(every) = config.retention_interval {
        spawn_retention(registry.clone(), directory.clone(), every);
    }
    let pruned = refresh_store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_PRUNE_EVERY);
        loop {
            tick.tick().await;
            match pruned.refresh_prune(wharf_core::now_unix()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired refresh tokens removed"),
                Err(e) => tracing::debug!("refresh token pruning failed: {e}"),
            }
        }
    });

    let class = |max_in_flight: usize| ClassLimits {
        max_in_flight,
        tenant_share: l.tenant_share,
        max_wait: l.max_wait,
        max_waiters: max_in_flight,
        adaptive: l.adaptive.then(AdaptiveConfig::default),
    };
    let shares = directory.clone();
    let admission = Admission::new(class(l.pull), class(l.push), class(l.admin))
        .with_tenant_shares(Arc::new(move |t: &str| shares.concurrency_share(t)));
    let notifier = start_notifier(&config)?;
    let mut state = AppState::new(registry);
    state.notifier = Some(notifier.clone());
    state.admission = Some(admission.clone());
    state.traffic = traffic.clone();
    state.blob_redirects = config.s3.as_ref().is_some_and(|s| s.presign_redirects);
    state.min_rate = MinRate {
        bytes_per_sec: l.min_upload_rate,
        ..MinRate::default()
    };
    let connections = Arc::new(ConnStats::default());
    let mut node = NodeState::new(
        Some(admission),
        connections.clone(),
        state.metrics.clone(),
        vec![storage_guard, meta_guard],
        local_dependencies(&config),
    );
    node.gc = Some(collector.metrics());
    node.build = Some(build);
    node.tenants = Some(traffic.clone());
    node.notify = Some(notifier.clone());
    node.registry = Some(state.registry.clone());
    let node = Arc::new(node);

    let auth = auth.into_loaded(&config.auth, &directory, refresh_store);
    startup::watch_pending(pending, node.start.clone(), config.clone());
    let admin_token = config.admin_token_hash.clone();
    if config.admin_insecure && admin_token.is_none() && !config.admin_listen.ip().is_loopback() {
        tracing::warn!(admin = %config.admin_listen,
            "THE ADMIN API IS OPEN: no admin token, on a non-loopback address (--admin-insecure); \
             anyone who reaches it can manage every tenant");
    }
    let admin_api = Arc::new(
        AdminApi::new(directory.clone(), admin_token)
            .with_registry(state.registry.clone())
            .with_traffic(traffic)
            .with_logins(auth.users.clone())
            .with_notifier(Some(notifier)),
    );
    state.directory = Some(directory);
    let listener = bind(config.listen, config.addr_file.as_deref()).await?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    (state.auth, state.token_service) = auth.into_state(&config.auth, bound, scheme)?;
    let admin_listener = bind(config.admin_listen, config.admin_addr_file.as_deref()).await?;
    // TLS: the pair checked with the configuration is read again here and
    // then watched, so that a renewed certificate is served without a
    // restart.
    let tls = match &config.tls {
        Some(files) => {
            let tls = wharf_api::tls::TlsServer::load(files.clone())?;
            tls.spawn_reloader("registry", Duration::from_secs(5));
            tracing::info!(
                cert = %files.cert.display(),
                client_ca = ?files.client_ca.as_ref().map(|p| p.display().to_string()),
                admin = config.admin_tls,
                "serving TLS (HTTP/2 and HTTP/1.1)"
            );
            Some(tls)
        }
        None => None,
    };
    tracing::info!(
        addr = %listener.local_addr().map_err(|e| e.to_string())?,
        admin = %admin_listener.local_addr().map_err(|e| e.to_string())?,
        data_dir = %data.display(),
        "wharf listening"
    );

    // On SIGTERM: turn not-ready first (a load balancer stops sending new
    // work), then stop accepting and drain. The admin port keeps answering
    // until the drain is over, so the not-ready state is observable.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signalled = node.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signalled.shutting_down.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin_config = ServerConfig {
        max_connections: 64,
        tls: if config.admin_tls { tls.clone() } else { None },
        ..ServerConfig::default()
    };
    let metrics = metrics_app(node.clone());
    let metrics = match config.metrics_require_token {
        true => with_admin_token(metrics, admin_api.clone()),
        false => metrics,
    };
    let admin_router = probes_app(node)
        .merge(metrics)
        .merge(with_admin_token(gc_router(collector), admin_api.clone()))
        .merge(admin_api_router(admin_api));
    let (admin_done_tx, admin_done_rx) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(serve_with(
        admin_listener,
        admin_router,
        admin_config,
        Arc::new(ConnStats::default()),
        async move {
            let _ = admin_done_rx.await;
        },
    ));
    let server_config = ServerConfig {
        max_connections: l.max_connections,
        max_waiting: l.max_waiting,
        header_read_timeout: l.header_timeout,
        idle_timeout: l.idle_timeout,
        shutdown_grace: l.shutdown_grace,
        tls,
    };
    let access_log = match config.access_log {
        true => wharf_api::access_log::AccessLogLayer::new(),
        false => wharf_api::access_log::AccessLogLayer::ids_only(),
    };
    let served = serve_with(
        listener,
        app_with(state).layer(access_log),
        server_config,
        connections,
        stopped(stop_rx),
    )
    .await;
    let _ = admin_done_tx.send(());
    let _ = admin.await;
    served.map_err(|e| format!("serving: {e}"))?;
    tracing::info!("wharf stopped");
    Ok(())
}

/// The node's event notifier over its configured webhooks (a tenant's
/// come from the directory with each event).
fn start_notifier(config: &Config) -> Result<wharf_notify::Notifier, String> {
    let n = &config.notify;
    let targets = n
        .endpoints
        .iter()
        .map(|(name, url)| {
            let secret = n.secret.as_deref().unwrap_or_default();
            wharf_notify::Target::new(
                name.clone(),
                url,
                wharf_notify::Secret::new(secret.as_bytes()),
                n.pulls,
            )
        })
        .collect::<Result<Vec<_>, String>>()?;
    for t in &targets {
        tracing::info!(endpoint = %t.id, origin = %t.origin(), pulls = t.pulls,
            "event notifications to this webhook");
    }
    wharf_notify::Notifier::new(
        wharf_notify::NotifyConfig {
            node: config.node_name.clone(),
            queue_size: n.queue_size,
            timeout: n.timeout,
            max_attempts: n.max_attempts,
            max_age: n.max_age,
            user_agent: format!("wharf/{}", env!("CARGO_PKG_VERSION")),
            ..wharf_notify::NotifyConfig::default()
        },
        targets,
    )
}

/// Writes a new signing key pair into `dir` (see `Command::Keygen`).
fn keygen(dir: &Path) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let key = wharf_auth::SigningKey::generate();
    let now = wharf_auth::token::now_unix();
    // Names sort by time, so `--token-signing-key DIR` picks the newest.
    let stem = format!(
        "{}-{}",
        wharf_api::auth::rfc3339(now).replace(':', ""),
        &key.kid()[..4]
    );
    let write = |name: String, text: String, mode: u32| -> Result<std::path::PathBuf, String> {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    };
    let private = write(format!("{stem}.private.pem"), key.to_pkcs8_pem(), 0o600)?;
    let public = write(
        format!("{stem}.public.pem"),
        key.public_key().to_pem(),
        0o644,
    )?;
    println!("kid {}", key.kid());
    println!("private key (keep secret): {}", private.display());
    println!("public key: {}", public.display());
    Ok(())
}

/// How often each node asks metadata whether the tenant directory changed
/// (a change made through any node's admin API is in force everywhere
/// within about this long).
const DIRECTORY_REFRESH: Duration = Duration::from_secs(1);

/// How often expired refresh tokens are deleted from metadata.
const REFRESH_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Binds `addr`; if asked, writes the bound address to `addr_file` via a
/// temporary file and a rename, so a reader never sees half an address.
async fn bind(addr: SocketAddr, addr_file: Option<&Path>) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    if let Some(path) = addr_file {
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(listener)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: not ready, finishing requests in flight");
}
