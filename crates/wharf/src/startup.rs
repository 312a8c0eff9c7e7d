//! Start-up preparation of a node, shared by `wharf serve` and `wharf
//! check`: opening the blob and metadata stores the configuration names,
//! checking the connection budget, loading the authentication files, and
//! the background probes and readiness rules of the dependencies.
//!
//! Owns: everything a node does before it binds a listener. Must never:
//! bind, serve, or start the registry's background work (collector,
//! sweeps, retention); `serve` does that with what this module returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use wharf_guard::{BreakerState, Guard};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::postgres::{PostgresConfig, PostgresStore};
use wharf_meta::MetaStore;
use wharf_storage::fs::FsStore;
use wharf_storage::s3::{S3Config, S3Store};
use wharf_storage::BlobStore;
use wharf_tenants::Directory;

use crate::budget;
use crate::config::{self, Config};

/// The stores a node serves from, opened and checked.
pub struct Prepared {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetaStore>,
}

/// Opens the stores and checks that every node's pools fit what each
/// shared dependency accepts (refusing to start otherwise).
pub async fn prepare(config: &Config) -> Result<Prepared, String> {
    let blobs = open_storage(config).await?;
    let (meta, metadata_limit) = open_metadata(config).await?;
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
    Ok(Prepared { blobs, meta })
}

/// Authentication files read at start, before anything is bound.
pub struct LoadedAuth {
    users: Option<Arc<wharf_api::auth::Users>>,
    keys: wharf_auth::KeySet,
    signing: Option<wharf_auth::SigningKey>,
    /// Where the token endpoint keeps refresh tokens.
    store: Arc<dyn MetaStore>,
}

impl LoadedAuth {
    pub fn load(
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
    pub fn into_state(
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

/// The blob store the configuration names.
pub async fn open_storage(config: &Config) -> Result<Arc<dyn BlobStore>, String> {
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
pub async fn open_metadata(config: &Config) -> Result<(Arc<dyn MetaStore>, Option<usize>), String> {
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
