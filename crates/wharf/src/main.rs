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
use wharf_guard::{
    BreakerConfig, BreakerState, Guard, GuardConfig, GuardedBlobStore, GuardedMetaStore,
};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::postgres::{PostgresConfig, PostgresStore};
use wharf_meta::MetaStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;
use wharf_storage::s3::{S3Config, S3Store};
use wharf_storage::BlobStore;
use wharf_tenants::Directory;

mod admin_cli;
mod budget;
mod config;
mod fleet_cli;
mod gc_cli;
mod help;

use config::{Config, ServeArgs};

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
    /// Check a configuration without serving anything: prints the limits
    /// in force (derived from this machine where unset) and whether the
    /// pools of all nodes fit what each shared dependency accepts. With
    /// --metadata-url it connects to read the database's limit (applying
    /// pending migrations, as a start would). Exits non-zero if the
    /// configuration is refused. Takes the flags of `serve`.
    ///
    /// With --storage it checks instead that the blob store and metadata
    /// agree: every digest metadata holds is stored, and nothing stored is
    /// unreferenced past its review (exits non-zero otherwise). It opens
    /// the configured stores itself; while a running node holds the
    /// embedded database, it asks that node's admin API (--admin-listen,
    /// token from WHARF_ADMIN_TOKEN) instead.
    Check(CheckArgs),
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
}

fn main() -> std::process::ExitCode {
    let cli: Cli = help::parse();
    match cli.command {
        Command::Admin(args) => admin_cli::run(args),
        Command::Fleet(args) => fleet_cli::run_fleet(args),
        Command::Gc(args) => gc_cli::run_gc(args),
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
        }) => check_storage(&serve),
        Command::Check(CheckArgs { serve: args, .. }) => match Config::load(&args) {
            Ok(config) => {
                println!("{:#?}", config.limits);
                // A shared database's limit is read from the server itself
                // (connecting applies its migrations, as a start would).
                let metadata_limit = match &config.metadata_url {
                    Some(_) => {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("tokio runtime");
                        match runtime.block_on(open_metadata(&config)) {
                            Ok((_, limit)) => limit,
                            Err(e) => {
                                println!("cannot read the database's limit: {e}");
                                return std::process::ExitCode::FAILURE;
                            }
                        }
                    }
                    None => None,
                };
                let deps = config.shared_dependencies(metadata_limit);
                let results = budget::check(config.cluster_nodes, &deps);
                if results.is_empty() {
                    println!("no shared dependency configured: no connection budget to check");
                }
                for line in budget::describe(config.cluster_nodes, &results) {
                    println!("{line}");
                }
                if budget::all_fit(&results) {
                    std::process::ExitCode::SUCCESS
                } else {
                    std::process::ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("wharf: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let config = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_logging(&config.log, config.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    // Logged once, to stderr like every log line.
                    tracing::error!("wharf: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
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
}

/// `wharf check --storage`: 0 when storage and metadata agree, 1 when they
/// do not (the findings are printed), 2 when the check could not run.
fn check_storage(args: &ServeArgs) -> std::process::ExitCode {
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wharf: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let direct = runtime.block_on(async {
        let blobs = open_storage(&config).await?;
        let (meta, _) = open_metadata(&config).await?;
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
        .with_writer(std::io::stderr);
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
    tracing::info!(?l, "limits in force (unset ones derived from this machine)");
    let blobs = open_storage(&config).await?;
    let (meta, metadata_limit) = open_metadata(&config).await?;
    let results = budget::check(
        config.cluster_nodes,
        &config.shared_dependencies(metadata_limit),
    );
    for line in budget::describe(config.cluster_nodes, &results) {
        tracing::info!("connection budget: {line}");
    }
    if !budget::all_fit(&results) {
        return Err(format!(
            "refusing to start: {}",
            budget::describe(config.cluster_nodes, &results).join("; ")
        ));
    }
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
    let mut state = AppState::new(registry);
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
    let node = Arc::new(node);

    let auth = LoadedAuth::load(&config.auth, &directory, refresh_store)?;
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
            .with_logins(auth.users.clone()),
    );
    state.directory = Some(directory);
    let listener = bind(config.listen, config.addr_file.as_deref()).await?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    (state.auth, state.token_service) = auth.into_state(&config.auth, bound)?;
    let admin_listener = bind(config.admin_listen, config.admin_addr_file.as_deref()).await?;
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

/// Authentication files read at start, before anything is bound.
struct LoadedAuth {
    users: Option<Arc<wharf_api::auth::Users>>,
    keys: wharf_auth::KeySet,
    signing: Option<wharf_auth::SigningKey>,
    /// Where the token endpoint keeps refresh tokens.
    store: Arc<dyn MetaStore>,
}

impl LoadedAuth {
    fn load(
        a: &config::AuthSettings,
        directory: &Directory,
        store: Arc<dyn MetaStore>,
    ) -> Result<LoadedAuth, String> {
        use config::AuthMode;
        if a.mode == AuthMode::None {
            return Ok(LoadedAuth {
                users: None,
                keys: wharf_auth::KeySet::new(),
                signing: None,
                store,
            });
        }
        // The tenant directory's users and robots, and the operator's
        // htpasswd users if a file is given.
        let users = match &a.htpasswd {
            Some(path) => wharf_api::auth::Users::load(path, a.grants.as_deref())?
                .with_directory(directory.clone()),
            None => wharf_api::auth::Users::directory_only(directory.clone()),
        };
        let users = Some(Arc::new(users));
        let signing = match (&a.mode, &a.token_signing_key) {
            (AuthMode::Token, Some(path)) if path.is_dir() => {
                Some(wharf_auth::SigningKey::load_newest(path).map_err(|e| e.to_string())?)
            }
            (AuthMode::Token, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                Some(
                    wharf_auth::SigningKey::from_pem(&text)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                )
            }
            _ => None,
        };
        let mut keys = match (&a.mode, &a.token_keys) {
            (AuthMode::Token, Some(dir)) => {
                wharf_auth::KeySet::load_dir(dir).map_err(|e| e.to_string())?
            }
            _ => wharf_auth::KeySet::new(),
        };
        if let Some(k) = &signing {
            keys.insert(k.public_key());
        }
        if a.mode == AuthMode::Token && keys.is_empty() {
            return Err("--token-keys holds no key: no token could ever verify".into());
        }
        Ok(LoadedAuth {
            users,
            keys,
            signing,
            store,
        })
    }

    /// The state's auth mode and token endpoint, once the listener's
    /// address (for the default realm) is known.
    fn into_state(
        self,
        a: &config::AuthSettings,
        bound: SocketAddr,
    ) -> Result<
        (
            wharf_api::auth::Auth,
            Option<Arc<wharf_api::auth::TokenService>>,
        ),
        String,
    > {
        use config::AuthMode;
        use wharf_api::auth::{Auth, TokenService};
        let anonymous: Arc<[wharf_auth::RepoPattern]> = a.anonymous_pull.clone().into();
        let basic = wharf_auth::BasicChallenge::new("wharf").map_err(|e| e.to_string())?;
        match a.mode {
            AuthMode::None => Ok((Auth::None, None)),
            AuthMode::Htpasswd => {
                let users = self.users.ok_or("--auth htpasswd needs --htpasswd")?;
                tracing::info!(users = ?users, anonymous_pull = anonymous.len(), "htpasswd authentication");
                Ok((
                    Auth::Htpasswd {
                        users,
                        challenge: basic,
                        anonymous_pull: anonymous,
                    },
                    None,
                ))
            }
            AuthMode::Token => {
                let realm = a
                    .token_realm
                    .clone()
                    .unwrap_or_else(|| format!("http://{bound}/auth/token"));
                let challenge = wharf_auth::BearerChallenge::new(&realm, &a.token_service)
                    .map_err(|e| format!("--token-realm or --token-service: {e}"))?;
                let kids: Vec<&str> = self.keys.kids().collect();
                tracing::info!(?kids, %realm, service = %a.token_service, "token authentication");
                let verifier =
                    wharf_auth::Verifier::new(self.keys.clone(), &a.token_issuer, &a.token_service);
                let identities = self.users.clone();
                let tokens = match (self.signing, self.users) {
                    (Some(key), Some(users)) => {
                        tracing::info!(kid = key.kid(), "serving /auth/token");
                        let issuer =
                            wharf_auth::Issuer::new(key, &a.token_issuer, &a.token_service)
                                .with_lifetime(a.token_lifetime);
                        Some(Arc::new(TokenService::new(
                            users,
                            issuer,
                            &a.token_service,
                            basic,
                            anonymous.clone(),
                            self.store,
                        )))
                    }
                    _ => None,
                };
                Ok((
                    Auth::Token {
                        verifier: Arc::new(verifier),
                        challenge,
                        anonymous_pull: anonymous,
                        identities,
                    },
                    tokens,
                ))
            }
        }
    }
}

/// While a dependency's breaker is open, probes it twice a second with a
/// cheap call through its guard, so the breaker closes as soon as the
/// dependency answers again, not only when the next client request happens
/// to be the one let through (and its neighbours refused meanwhile).
fn spawn_probes(
    storage_guard: Guard,
    blobs: Arc<dyn BlobStore>,
    meta_guard: Guard,
    meta: Arc<dyn MetaStore>,
) {
    let probe_digest: wharf_core::Digest =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .expect("the digest of nothing");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if storage_guard.stats().breaker != BreakerState::Closed {
                let unavailable = |e: &wharf_storage::StorageError| {
                    !matches!(e, wharf_storage::StorageError::NotFound)
                };
                let _ = storage_guard
                    .run(true, unavailable, blobs.stat(&probe_digest))
                    .await;
            }
            if meta_guard.stats().breaker != BreakerState::Closed {
                let unavailable =
                    |e: &wharf_meta::MetaError| matches!(e, wharf_meta::MetaError::Unavailable(_));
                let _ = meta_guard
                    .run(true, unavailable, meta.list_repos(None, 1))
                    .await;
            }
        }
    });
}

/// The dependencies only this node uses (its own disk, its embedded
/// database): if one fails, draining this node helps; a shared one failing
/// would drain every node at once, so it does not count (see NodeState).
fn local_dependencies(config: &Config) -> Vec<&'static str> {
    let mut local = Vec::new();
    if config.s3.is_none() {
        local.push("blob_storage");
    }
    if config.metadata_url.is_none() {
        local.push("metadata");
    }
    local
}

/// The blob store the configuration names.
async fn open_storage(config: &Config) -> Result<Arc<dyn BlobStore>, String> {
    match &config.s3 {
        Some(s3) => {
            let mut c = S3Config::new(
                &s3.endpoint,
                &s3.bucket,
                &s3.region,
                &s3.access_key_id,
                &s3.secret_access_key,
            );
            c.prefix = s3.prefix.clone();
            c.presign_redirects = s3.presign_redirects;
            c.pool_max_idle_per_host = config.limits.storage_pool;
            c.request_timeout = c.request_timeout.max(config.limits.dependency_deadline);
            let store = S3Store::new(c).map_err(|e| format!("configuring S3 storage: {e}"))?;
            Ok(Arc::new(store))
        }
        None => {
            let data = &config.data_dir;
            let store = FsStore::open(data)
                .await
                .map_err(|e| format!("opening blob storage in {}: {e}", data.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// The metadata store the configuration names, and (for a shared one) the
/// number of connections it accepts.
async fn open_metadata(config: &Config) -> Result<(Arc<dyn MetaStore>, Option<usize>), String> {
    match &config.metadata_url {
        Some(url) => {
            let store = PostgresStore::connect(PostgresConfig {
                url: url.clone(),
                pool_size: config.limits.metadata_pool,
                connect_timeout: Duration::from_secs(5),
                statement_timeout: config.limits.dependency_deadline,
            })
            .await
            .map_err(|e| format!("connecting to PostgreSQL metadata: {e}"))?;
            let limit = store.server_connection_limit();
            Ok((Arc::new(store), Some(limit)))
        }
        None => {
            let path = config.data_dir.join("meta.redb");
            let store = EmbeddedStore::open(&path)
                .map_err(|e| format!("opening metadata in {}: {e}", path.display()))?;
            Ok((Arc::new(store), None))
        }
    }
}

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
