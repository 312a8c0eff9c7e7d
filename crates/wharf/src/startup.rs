//! Start-up preparation of a node, the one validation path of `wharf
//! serve` and `wharf check`: the authentication files, the blob store and
//! the metadata store probed with the configured credentials, the schema
//! version, and the connection budget; then, for `serve`, the stores
//! opened, and the watch that turns a node ready once a dependency that did
//! not answer at start does.
//!
//! Owns: everything a node does before it binds a listener, and which of
//! its findings stop a start (a definite misconfiguration: every one is
//! listed) and which only delay readiness (a dependency that does not
//! answer yet). Must never: change anything in check mode (no directory,
//! file, schema or object created), apply a migration it was not told to,
//! bind, serve, or start the registry's background work (collector, sweeps,
//! retention); `serve` does that with what this module returns. Nor print a
//! secret: dependencies are named by endpoint and bucket, or
//! user@host:port/database.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_api::admin::StartGate;
use wharf_guard::{BreakerState, Guard};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::postgres::{
    schema_ahead, PostgresConfig, PostgresStore, ProbeFailure as PgFailure, SCHEMA_VERSION,
};
use wharf_meta::MetaStore;
use wharf_storage::fs::FsStore;
use wharf_storage::s3::{ProbeFailure as S3Failure, S3Config, S3Store};
use wharf_storage::BlobStore;
use wharf_tenants::Directory;

use crate::budget;
use crate::config::{self, Config};

/// Which command is preparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `wharf serve`: stores are opened (and created when new), migrations
    /// applied if `--migrate` says so, a dependency that does not answer
    /// yet only keeps the node not ready.
    Serve,
    /// `wharf check`: the same checks, nothing changed; a dependency that
    /// does not answer is a finding.
    Check,
}

/// What the checks found.
#[derive(Default)]
pub struct Report {
    /// What stops a start, one per problem, each saying what to do.
    pub problems: Vec<String>,
    /// What was checked and found good (or would be done), for `wharf check`.
    pub notes: Vec<String>,
    /// Dependencies that did not answer (a serving node waits for them).
    pub pending: Vec<Pending>,
}

/// A shared dependency that did not answer at start.
pub struct Pending {
    /// The guard's name: `blob_storage` or `metadata`.
    pub name: &'static str,
    /// The dependency and its address, e.g. `metadata (PostgreSQL
    /// wharf@db:5432/wharf)`.
    pub what: String,
    /// The dependency's own error text.
    pub error: String,
    probe: Probe,
}

#[derive(Clone)]
enum Probe {
    S3(S3Store),
    Postgres(PostgresStore),
}

/// The stores a node serves from, opened and checked, and what it read.
pub struct Prepared {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetaStore>,
    pub auth: AuthFiles,
    /// Dependencies to wait for before turning ready ([`watch_pending`]).
    pub pending: Vec<Pending>,
}

/// The dependency and address of the configured S3 store.
fn s3_name(s3: &config::S3Settings) -> String {
    format!(
        "blob storage (S3 {}, bucket {})",
        s3.endpoint.trim_end_matches('/'),
        s3.bucket
    )
}

/// The dependency and address of the configured PostgreSQL.
fn pg_name(store: &PostgresStore) -> String {
    format!("metadata (PostgreSQL {})", store.address())
}

fn s3_store(config: &Config, s3: &config::S3Settings) -> Result<S3Store, String> {
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
    S3Store::new(c).map_err(|e| format!("{}: {e}", s3_name(s3)))
}

fn pg_store(config: &Config, url: &str) -> Result<PostgresStore, String> {
    PostgresStore::open(PostgresConfig {
        url: url.to_string(),
        pool_size: config.limits.metadata_pool,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: config.limits.dependency_deadline,
    })
    .map_err(|e| format!("metadata (PostgreSQL): {e}"))
}

/// The schema step for a database at `found`: fine, migrated (when told
/// and serving), or a problem saying what to run.
async fn schema_step(
    store: &PostgresStore,
    found: i32,
    mode: Mode,
    migrate: bool,
) -> Result<String, String> {
    let what = pg_name(store);
    if found == SCHEMA_VERSION {
        return Ok(format!(
            "{what}: schema at version {found}, as this build expects"
        ));
    }
    if found > SCHEMA_VERSION {
        return Err(format!("{what}: {}", schema_ahead(found)));
    }
    let state = match found {
        0 => "holds no Wharf schema yet (an empty database)".to_string(),
        v => format!("has schema version {v}, behind this build's {SCHEMA_VERSION}"),
    };
    match (mode, migrate) {
        (Mode::Serve, true) => {
            let applied = store
                .migrate()
                .await
                .map_err(|e| format!("{what}: applying migrations: {e}"))?;
            Ok(format!(
                "{what}: {state}; applied migrations {applied:?} (--migrate)"
            ))
        }
        (Mode::Check, true) => Ok(format!(
            "{what}: {state}; a start with --migrate would apply migrations {}..={SCHEMA_VERSION}",
            found + 1
        )),
        (_, false) => Err(format!(
            "{what}: the database {state}: run `wharf migrate` with the same configuration \
             (back up first: docs/operations.md, \"Upgrading\"), or start with --migrate"
        )),
    }
}

/// The connection budget with the database's limit (`None`: no database,
/// or not known).
fn budget_step(config: &Config, metadata_limit: Option<usize>, report: &mut Report) {
    let results = budget::check(
        config.cluster_nodes,
        &config.shared_dependencies(metadata_limit),
    );
    let lines = budget::describe(config.cluster_nodes, &results);
    if budget::all_fit(&results) {
        report
            .notes
            .extend(lines.into_iter().map(|l| format!("connection budget: {l}")));
    } else {
        report
            .problems
            .push(format!("connection budget: {}", lines.join("; ")));
    }
}

/// `--data-dir` for a check: usable as it is, or creatable (nothing is
/// created).
fn data_dir_step(dir: &Path, embedded: bool, report: &mut Report) {
    if dir.exists() {
        if !dir.is_dir() {
            report.problems.push(format!(
                "--data-dir {} exists and is not a directory",
                dir.display()
            ));
            return;
        }
        let meta = dir.join("meta.redb");
        let store = match (embedded, meta.exists()) {
            (false, _) => String::new(),
            (true, true) => format!("; embedded metadata in {}", meta.display()),
            (true, false) => {
                "; a start creates a new, empty embedded metadata store in it".to_string()
            }
        };
        report
            .notes
            .push(format!("data directory {} exists{store}", dir.display()));
        return;
    }
    let mut up = dir.parent();
    while let Some(p) = up {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        up = p.parent();
    }
    match up {
        Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => report.problems.push(format!(
            "--data-dir {}: {} is not a directory",
            dir.display(),
            p.display()
        )),
        _ => report.notes.push(format!(
            "data directory {} does not exist: a start creates it{}",
            dir.display(),
            if embedded {
                ", with a new, empty embedded metadata store"
            } else {
                ""
            }
        )),
    }
}

/// The shared stores built while checking, for `serve` to use.
#[derive(Default)]
pub struct Shared {
    s3: Option<S3Store>,
    postgres: Option<PostgresStore>,
}

/// A dependency that did not answer: for `serve`, one to wait for; for a
/// check, a problem.
fn unreachable(
    report: &mut Report,
    mode: Mode,
    name: &'static str,
    what: String,
    error: String,
    probe: Probe,
) {
    match mode {
        Mode::Serve => report.pending.push(Pending {
            name,
            what,
            error,
            probe,
        }),
        Mode::Check => report.problems.push(format!(
            "{what} did not answer: {error} (a node would start, stay not ready and wait for it)"
        )),
    }
}

/// The one validation path: every check `wharf serve` makes before it
/// listens, every problem listed. In [`Mode::Check`] nothing is changed.
/// Also returns the authentication files read (when they were good) and
/// the shared stores built (for `serve` to use).
pub async fn check(config: &Config, mode: Mode) -> (Report, Option<AuthFiles>, Shared) {
    let mut report = Report::default();
    let mut shared = Shared::default();
    let auth = match AuthFiles::read(&config.auth) {
        Ok(files) => {
            report.notes.push(files.describe(&config.auth));
            Some(files)
        }
        Err(e) => {
            report.problems.extend(e.lines().map(str::to_string));
            None
        }
    };
    if let Some(file) = &config.admin_token_file {
        // Read and checked with the configuration (Config::load).
        report.notes.push(format!(
            "admin token hash file {}: a sha256 hash",
            file.display()
        ));
    }
    let local = config.s3.is_none() || config.metadata_url.is_none();
    if mode == Mode::Check && local {
        data_dir_step(&config.data_dir, config.metadata_url.is_none(), &mut report);
    }
    // Both probes at once: a start waits for the slower, not the sum.
    let s3 = config.s3.as_ref().map(|s3| s3_store(config, s3));
    let pg = config
        .metadata_url
        .as_ref()
        .map(|url| pg_store(config, url));
    let (s3_answer, pg_answer) = tokio::join!(
        async {
            match &s3 {
                Some(Ok(store)) => Some(store.probe().await),
                _ => None,
            }
        },
        async {
            match &pg {
                Some(Ok(store)) => Some(store.probe().await),
                _ => None,
            }
        }
    );
    if let (Some(settings), Some(built)) = (&config.s3, s3) {
        let what = s3_name(settings);
        match (built, s3_answer) {
            (Err(e), _) => report.problems.push(e),
            (Ok(store), Some(Ok(()))) => {
                report.notes.push(format!("{what}: answered"));
                shared.s3 = Some(store);
            }
            (Ok(_), Some(Err(S3Failure::Misconfigured(cause)))) => {
                report.problems.push(format!("{what}: {cause}"));
            }
            (Ok(store), Some(Err(S3Failure::Unreachable(error)))) => {
                let probe = Probe::S3(store.clone());
                unreachable(&mut report, mode, "blob_storage", what, error, probe);
                shared.s3 = Some(store);
            }
            (Ok(_), None) => {}
        }
    }
    // The budget needs the database's limit: checked now, or (serving)
    // once the database answers.
    let mut metadata_limit = None;
    let mut budget_now = true;
    let mut schema = None;
    if let Some(built) = pg {
        match (built, pg_answer) {
            (Err(e), _) => report.problems.push(e),
            (Ok(store), Some(Ok(info))) => {
                let what = pg_name(&store);
                report.notes.push(format!(
                    "{what}: answered; accepts {} connections from ordinary roles",
                    info.connection_limit
                ));
                metadata_limit = Some(info.connection_limit);
                schema = Some((store.clone(), info.schema_version));
                shared.postgres = Some(store);
            }
            (Ok(store), Some(Err(PgFailure::Misconfigured(cause)))) => {
                report
                    .problems
                    .push(format!("{}: {cause}", pg_name(&store)));
            }
            (Ok(store), Some(Err(PgFailure::Unreachable(error)))) => {
                let what = pg_name(&store);
                let probe = Probe::Postgres(store.clone());
                unreachable(&mut report, mode, "metadata", what, error, probe);
                budget_now = mode == Mode::Check;
                shared.postgres = Some(store);
            }
            (Ok(_), None) => {}
        }
    }
    if budget_now {
        budget_step(config, metadata_limit, &mut report);
    }
    // Last, so that a start refused for anything else migrates nothing.
    if let Some((store, found)) = schema {
        let mode = match report.problems.is_empty() {
            true => mode,
            false => Mode::Check,
        };
        match schema_step(&store, found, mode, config.migrate).await {
            Ok(note) => report.notes.push(note),
            Err(problem) => report.problems.push(problem),
        }
    }
    (report, auth, shared)
}

/// For `serve`: runs [`check`] and, when nothing stops the start, opens the
/// stores (creating the data directory and an empty embedded store on a
/// first start). Every problem found is in the error, one per line.
pub async fn prepare(config: &Config) -> Result<Prepared, String> {
    let (report, auth, shared) = check(config, Mode::Serve).await;
    for note in &report.notes {
        tracing::info!("start-up check: {note}");
    }
    if !report.problems.is_empty() {
        return Err(refusal(&report.problems));
    }
    let auth = auth.expect("no problem, so the files were read");
    for p in &report.pending {
        tracing::warn!(
            dependency = p.name,
            "{} did not answer at start: {}; the node stays not ready until it does",
            p.what,
            p.error
        );
    }
    let blobs: Arc<dyn BlobStore> = match shared.s3 {
        Some(store) => Arc::new(store),
        None => {
            let data = &config.data_dir;
            let store = FsStore::open(data)
                .await
                .map_err(|e| format!("opening blob storage in {}: {e}", data.display()))?;
            Arc::new(store)
        }
    };
    let meta: Arc<dyn MetaStore> = match shared.postgres {
        Some(store) => Arc::new(store),
        None => {
            let path = config.data_dir.join("meta.redb");
            let store = EmbeddedStore::open_with_cache(&path, config.metadata_cache_bytes)
                .map_err(|e| format!("opening metadata in {}: {e}", path.display()))?;
            Arc::new(store)
        }
    };
    Ok(Prepared {
        blobs,
        meta,
        auth,
        pending: report.pending,
    })
}

/// The message a start refused for `problems` ends with.
pub fn refusal(problems: &[String]) -> String {
    match problems {
        [one] => format!("refusing to start: {one}"),
        many => format!(
            "refusing to start, {} problems:\n  - {}",
            many.len(),
            many.join("\n  - ")
        ),
    }
}

/// How often a dependency that did not answer at start is asked again.
const PENDING_PROBE_EVERY: Duration = Duration::from_secs(1);

/// How often, at most, a dependency still not answering is logged again.
const PENDING_LOG_EVERY: Duration = Duration::from_secs(60);

/// Keeps `gate` closed on each pending dependency and asks it again every
/// second; once it answers, what the start would have checked with its
/// answer (the schema, the connection budget) is checked, and the gate
/// opens. A definite misconfiguration found then stops the process, as it
/// would have stopped the start. Logs a warning when a dependency is still
/// not answering, at most once a minute, and a line when it answers.
pub fn watch_pending(pending: Vec<Pending>, gate: Arc<StartGate>, config: Config) {
    for p in &pending {
        gate.wait_for(p.name, p.error.clone());
    }
    for p in pending {
        let gate = gate.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let since = Instant::now();
            let mut logged = Instant::now();
            let mut tick = tokio::time::interval(PENDING_PROBE_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let outcome = match &p.probe {
                    Probe::S3(store) => match store.probe().await {
                        Ok(()) => Ok(()),
                        Err(S3Failure::Misconfigured(m)) => Err(Some(m)),
                        Err(S3Failure::Unreachable(e)) => {
                            gate.wait_for(p.name, e);
                            Err(None)
                        }
                    },
                    Probe::Postgres(store) => pg_late(store, &config, &gate, p.name).await,
                };
                match outcome {
                    Ok(()) => {
                        gate.reached(p.name);
                        tracing::info!(
                            dependency = p.name,
                            waited_secs = since.elapsed().as_secs(),
                            "{} answered: no longer waiting for it",
                            p.what
                        );
                        return;
                    }
                    Err(Some(problem)) => {
                        tracing::error!("wharf: {}", refusal(&[format!("{}: {problem}", p.what)]));
                        std::process::exit(1);
                    }
                    Err(None) => {
                        if logged.elapsed() >= PENDING_LOG_EVERY {
                            logged = Instant::now();
                            let why = gate
                                .first()
                                .filter(|(d, _)| *d == p.name)
                                .map(|(_, w)| w)
                                .unwrap_or_default();
                            tracing::warn!(
                                dependency = p.name,
                                waited_secs = since.elapsed().as_secs(),
                                "{} still does not answer: {why}; the node stays not ready",
                                p.what
                            );
                        }
                    }
                }
            }
        });
    }
}

/// One late probe of PostgreSQL: `Ok` once it answered and its schema and
/// budget are good, `Err(Some(problem))` for what stops the start,
/// `Err(None)` while it does not answer (the gate then holds its error).
async fn pg_late(
    store: &PostgresStore,
    config: &Config,
    gate: &StartGate,
    name: &'static str,
) -> Result<(), Option<String>> {
    match store.probe().await {
        Ok(info) => {
            let note = schema_step(store, info.schema_version, Mode::Serve, config.migrate)
                .await
                .map_err(Some)?;
            tracing::info!("start-up check: {note}");
            let mut report = Report::default();
            budget_step(config, Some(info.connection_limit), &mut report);
            if let Some(problem) = report.problems.pop() {
                return Err(Some(problem));
            }
            for n in report.notes {
                tracing::info!("start-up check: {n}");
            }
            Ok(())
        }
        Err(PgFailure::Misconfigured(m)) => Err(Some(m)),
        Err(PgFailure::Unreachable(e)) => {
            gate.wait_for(name, e);
            Err(None)
        }
    }
}

/// The authentication files, read and checked (htpasswd, grants, signing
/// key, token keys) before the metadata store is known.
pub struct AuthFiles {
    htpasswd: Option<wharf_api::auth::Users>,
    keys: wharf_auth::KeySet,
    signing: Option<wharf_auth::SigningKey>,
}

impl AuthFiles {
    /// Reads the files `a` names; every one must be there and well formed.
    /// Every file that is not is named, one per line.
    pub fn read(a: &config::AuthSettings) -> Result<AuthFiles, String> {
        use config::AuthMode;
        if a.mode == AuthMode::None {
            return Ok(AuthFiles {
                htpasswd: None,
                keys: wharf_auth::KeySet::new(),
                signing: None,
            });
        }
        let mut problems = Vec::new();
        let htpasswd = match &a.htpasswd {
            Some(path) => wharf_api::auth::Users::load(path, a.grants.as_deref())
                .map_err(|e| problems.push(format!("--htpasswd: {e}")))
                .ok(),
            None => None,
        };
        let signing = match (&a.mode, &a.token_signing_key) {
            (AuthMode::Token, Some(path)) if path.is_dir() => {
                wharf_auth::SigningKey::load_newest(path).map_err(|e| e.to_string())
            }
            (AuthMode::Token, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    wharf_auth::SigningKey::from_pem(&text).map_err(|e| e.to_string())
                }),
            _ => Err(String::new()),
        };
        let signing = match (signing, &a.token_signing_key) {
            (Ok(key), _) => Some(key),
            (Err(e), Some(path)) if a.mode == AuthMode::Token => {
                problems.push(format!("--token-signing-key {}: {e}", path.display()));
                None
            }
            (Err(_), _) => None,
        };
        let mut keys = match (&a.mode, &a.token_keys) {
            (AuthMode::Token, Some(dir)) => wharf_auth::KeySet::load_dir(dir)
                .map_err(|e| problems.push(format!("--token-keys {}: {e}", dir.display())))
                .unwrap_or_else(|()| wharf_auth::KeySet::new()),
            _ => wharf_auth::KeySet::new(),
        };
        if let Some(k) = &signing {
            keys.insert(k.public_key());
        }
        if a.mode == AuthMode::Token && keys.is_empty() && problems.is_empty() {
            problems.push("--token-keys holds no key: no token could ever verify".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        Ok(AuthFiles {
            htpasswd,
            keys,
            signing,
        })
    }

    /// What was read, for `wharf check`.
    fn describe(&self, a: &config::AuthSettings) -> String {
        let mut parts = vec![format!("auth {:?}", a.mode).to_lowercase()];
        if let Some(p) = &a.htpasswd {
            parts.push(format!("htpasswd file {} read", p.display()));
        }
        if let Some(p) = &a.grants {
            parts.push(format!("grants file {} read", p.display()));
        }
        if let Some(k) = &self.signing {
            parts.push(format!(
                "signing key {} (kid {})",
                a.token_signing_key
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display(),
                k.kid()
            ));
        }
        if a.mode == config::AuthMode::Token {
            parts.push(format!("{} verification key(s)", self.keys.kids().count()));
        }
        parts.join(", ")
    }

    /// The loaded authentication, once the tenant directory (whose users
    /// and robots log in too) and the refresh-token store are known.
    pub fn into_loaded(
        self,
        a: &config::AuthSettings,
        directory: &Directory,
        store: Arc<dyn MetaStore>,
    ) -> LoadedAuth {
        let users = match (a.mode, self.htpasswd) {
            (config::AuthMode::None, _) => None,
            (_, Some(users)) => Some(users.with_directory(directory.clone())),
            (_, None) => Some(wharf_api::auth::Users::directory_only(directory.clone())),
        };
        LoadedAuth {
            users: users.map(Arc::new),
            keys: self.keys,
            signing: self.signing,
            store,
        }
    }
}

/// Authentication ready to serve with.
pub struct LoadedAuth {
    pub users: Option<Arc<wharf_api::auth::Users>>,
    keys: wharf_auth::KeySet,
    signing: Option<wharf_auth::SigningKey>,
    /// Where the token endpoint keeps refresh tokens.
    store: Arc<dyn MetaStore>,
}

impl LoadedAuth {
    /// The state's auth mode and token endpoint, once the listener's
    /// address (for the default realm) is known.
    pub fn into_state(
        self,
        a: &config::AuthSettings,
        bound: SocketAddr,
        scheme: &str,
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
                    .unwrap_or_else(|| format!("{scheme}://{bound}/auth/token"));
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
pub fn spawn_probes(
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
pub fn local_dependencies(config: &Config) -> Vec<&'static str> {
    let mut local = Vec::new();
    if config.s3.is_none() {
        local.push("blob_storage");
    }
    if config.metadata_url.is_none() {
        local.push("metadata");
    }
    local
}

/// The stores the configuration names, for `wharf check --storage`: a
/// database must answer and hold the schema this build expects (nothing is
/// migrated).
pub async fn open_stores(
    config: &Config,
) -> Result<(Arc<dyn BlobStore>, Arc<dyn MetaStore>), String> {
    let blobs: Arc<dyn BlobStore> = match &config.s3 {
        Some(s3) => Arc::new(s3_store(config, s3)?),
        None => {
            let data = &config.data_dir;
            Arc::new(
                FsStore::open(data)
                    .await
                    .map_err(|e| format!("opening blob storage in {}: {e}", data.display()))?,
            )
        }
    };
    let meta: Arc<dyn MetaStore> = match &config.metadata_url {
        Some(url) => {
            let store = pg_store(config, url)?;
            let info = store
                .probe()
                .await
                .map_err(|e| format!("{}: {e}", pg_name(&store)))?;
            schema_step(&store, info.schema_version, Mode::Check, false).await?;
            Arc::new(store)
        }
        None => {
            let path = config.data_dir.join("meta.redb");
            Arc::new(
                EmbeddedStore::open_with_cache(&path, config.metadata_cache_bytes)
                    .map_err(|e| format!("opening metadata in {}: {e}", path.display()))?,
            )
        }
    };
    Ok((blobs, meta))
}

/// `wharf migrate`: applies the metadata schema migrations the database
/// lacks; what was done, one line each.
pub async fn migrate(config: &Config) -> Result<Vec<String>, String> {
    let Some(url) = &config.metadata_url else {
        return Ok(vec![format!(
            "the embedded metadata store ({}) has no schema migrations: a node creates its \
             tables, and brings a file of an earlier version to its own form, when it first \
             opens it; nothing to do",
            config.data_dir.join("meta.redb").display()
        )]);
    };
    let store = pg_store(config, url)?;
    let what = pg_name(&store);
    let info = store.probe().await.map_err(|e| format!("{what}: {e}"))?;
    if info.schema_version > SCHEMA_VERSION {
        return Err(format!("{what}: {}", schema_ahead(info.schema_version)));
    }
    let applied = store
        .migrate()
        .await
        .map_err(|e| format!("{what}: applying migrations: {e}"))?;
    Ok(match applied.as_slice() {
        [] => vec![format!(
            "{what}: schema already at version {SCHEMA_VERSION}: nothing to apply"
        )],
        versions => versions
            .iter()
            .map(|v| format!("{what}: applied migration {v}"))
            .chain([format!("{what}: schema now at version {SCHEMA_VERSION}")])
            .collect(),
    })
}
