//! Configuration of `wharf serve`: defaults, then a TOML file, then
//! environment variables, then flags; later sources win.
//!
//! Owns: the [`ServeArgs`] flags (clap reads the environment for each, so a
//! flag beats its variable), the [`FileConfig`] TOML shape, and merging them
//! into one [`Config`]. Must never: open files other than the config file,
//! or start anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Where the registry listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Where the admin port listens unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:5001";
/// Where data lives unless told otherwise (relative to the working dir).
pub const DEFAULT_DATA_DIR: &str = "./wharf-data";
/// Reviews a garbage-collection pass decides per second unless told
/// otherwise: 720,000 an hour, far above what a registry's pushes and
/// deletes queue (docs/operations.md, "Sizing"), and slow enough that a
/// pass on a shared machine left pull p99 where it was without one.
pub const DEFAULT_GC_MAX_REVIEWS_PER_SEC: u32 = 200;

/// Flags of `wharf serve`. Each can also be set by the environment variable
/// shown, or in the TOML file given by `--config` under the flag's name with
/// `_` for `-`. Limits left unset are derived from the machine (see
/// [`Limits::derive`]); `wharf check` prints the values in force on a
/// machine, and a start logs them (`config_view`).
#[derive(Args, Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML configuration file. Its keys are the long flag names with `_`
    /// for `-` (e.g. `data_dir = "/var/lib/wharf"`).
    #[arg(long, env = "WHARF_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on for registry traffic [default: 127.0.0.1:5000].
    /// Port 0 picks a free port (see --addr-file).
    #[arg(long, env = "WHARF_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Directory holding blobs, upload sessions and the embedded metadata
    /// database [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Once listening, write the bound address (`ip:port`) to this file.
    #[arg(long, env = "WHARF_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Address of the admin port: /healthz, /readyz and /metrics
    /// [default: 127.0.0.1:5001]. Port 0 picks a free port.
    #[arg(long, env = "WHARF_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Once listening, write the admin port's address to this file.
    #[arg(long, env = "WHARF_ADMIN_ADDR_FILE")]
    pub admin_addr_file: Option<PathBuf>,

    /// Metadata in PostgreSQL instead of the embedded store, e.g.
    /// `postgres://wharf@db:5432/wharf`. Every node of a cluster points at
    /// the same database, each through its own pool (--metadata-pool).
    #[arg(long, env = "WHARF_METADATA_URL")]
    pub metadata_url: Option<String>,

    /// Apply pending PostgreSQL schema migrations at start. Without it, a
    /// database whose schema is behind this build stops the start with a
    /// message to run `wharf migrate` (docs/operations.md, "Upgrading")
    /// [default: off].
    #[arg(long, env = "WHARF_MIGRATE", num_args = 0..=1, default_missing_value = "true")]
    pub migrate: Option<bool>,

    /// Blobs in an S3-compatible object store at this endpoint (e.g.
    /// `http://garage:3900`) instead of under --data-dir. Every node of a
    /// cluster points at the same bucket, each through its own pool.
    #[arg(long, env = "WHARF_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// The bucket (it must exist) [required with --s3-endpoint].
    #[arg(long, env = "WHARF_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// The region requests are signed for [default: us-east-1].
    #[arg(long, env = "WHARF_S3_REGION")]
    pub s3_region: Option<String>,

    /// Access key id [required with --s3-endpoint; prefer the variable].
    #[arg(long, env = "WHARF_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// Secret access key [required with --s3-endpoint; prefer the variable,
    /// a flag shows in the process list].
    #[arg(long, env = "WHARF_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Key prefix inside the bucket, so registries can share one [default: none].
    #[arg(long, env = "WHARF_S3_PREFIX")]
    pub s3_prefix: Option<String>,

    /// Answer whole-blob GETs with a 307 to a presigned URL of the object
    /// store, which then serves the bytes [default: off].
    #[arg(long, env = "WHARF_S3_PRESIGN_REDIRECTS", num_args = 0..=1, default_missing_value = "true")]
    pub s3_presign_redirects: Option<bool>,

    /// Connections the object store accepts in all, for the connection
    /// budget (unchecked when not given: S3 stores do not report it).
    #[arg(long, env = "WHARF_STORAGE_MAX_CONNECTIONS")]
    pub storage_max_connections: Option<usize>,

    /// How many nodes share this configuration's database and object store:
    /// their pools together must fit 80% of what each accepts, checked at
    /// start and by `wharf check` [default: 1].
    #[arg(long, env = "WHARF_CLUSTER_NODES")]
    pub cluster_nodes: Option<usize>,

    /// Log filter, e.g. `info`, `warn` or `wharf=debug,info` (the
    /// tracing-subscriber `EnvFilter` syntax); a filter that does not parse
    /// is refused [default: info].
    #[arg(long, env = "WHARF_LOG")]
    pub log: Option<String>,

    /// Log line format: `text` (one human-readable line per event) or
    /// `json` (one JSON object per line, for log collectors)
    /// [default: text].
    #[arg(long, env = "WHARF_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Memory for cached manifests, in MiB [default: 64].
    #[arg(long, env = "WHARF_MANIFEST_CACHE_MIB")]
    pub manifest_cache_mib: Option<usize>,

    /// Memory for cached small blobs (image configs and other blobs of at
    /// most 256 KiB, served without a storage read), in MiB; 0 turns it off
    /// [default: 32].
    #[arg(long, env = "WHARF_SMALL_BLOB_CACHE_MIB")]
    pub small_blob_cache_mib: Option<usize>,

    /// Entries in each of the maps of what the node last knew (tags,
    /// manifests and blob links it served), from which it answers pulls
    /// while the metadata store is unreachable; each entry takes a few
    /// hundred bytes; 0 turns that off [default: 100000].
    #[arg(long, env = "WHARF_LAST_KNOWN_ENTRIES")]
    pub last_known_entries: Option<usize>,

    /// Memory for the embedded metadata store's page cache, in MiB: the
    /// pages of meta.redb kept in memory; the others are read from the file
    /// when needed. Unused with --metadata-url [default: 256].
    #[arg(long, env = "WHARF_METADATA_CACHE_MIB")]
    pub metadata_cache_mib: Option<usize>,

    /// Upload sessions older than this many hours are removed [default: 24].
    #[arg(long, env = "WHARF_UPLOAD_EXPIRY_HOURS")]
    pub upload_expiry_hours: Option<u64>,

    /// Run the garbage collector on this node: passes every
    /// --gc-interval-secs review what is due and delete bytes nothing holds
    /// (docs/operations.md, "Garbage collection") [default: true].
    #[arg(long, env = "WHARF_GC_ENABLED", num_args = 0..=1, default_missing_value = "true")]
    pub gc_enabled: Option<bool>,

    /// Seconds a blob link or content stays untouched before it is
    /// reviewed for collection; 0 reviews at once (safe, but racing pushes
    /// retry more) [default: 86400].
    #[arg(long, env = "WHARF_GC_REVIEW_DELAY_SECS")]
    pub gc_review_delay_secs: Option<u64>,

    /// Seconds between garbage-collection passes [default: 60].
    #[arg(long, env = "WHARF_GC_INTERVAL_SECS")]
    pub gc_interval_secs: Option<u64>,

    /// Seconds bytes metadata does not know (crash leftovers) wait after a
    /// storage scan finds them before they are reviewed [default: 86400].
    #[arg(long, env = "WHARF_GC_ORPHAN_AGE_SECS")]
    pub gc_orphan_age_secs: Option<u64>,

    /// Seconds between scans of the blob store for such bytes
    /// [default: 86400].
    #[arg(long, env = "WHARF_GC_ORPHAN_SCAN_INTERVAL_SECS")]
    pub gc_orphan_scan_interval_secs: Option<u64>,

    /// Seconds between runs of the tenants' retention policies on this node
    /// (docs/admin.md, "Retention"); 0 runs them only on demand (`wharf gc
    /// retention`) [default: 3600].
    #[arg(long, env = "WHARF_RETENTION_INTERVAL_SECS")]
    pub retention_interval_secs: Option<u64>,

    /// Seconds a collector's tombstone is its own: a collector that dies
    /// mid-deletion leaves its tombstones, and the content they cover is
    /// claimed again (and pushes of it refused with 503) until then. More
    /// than 30: a deletion starts only with 30 s of lease left
    /// [default: 600].
    #[arg(long, env = "WHARF_GC_LEASE_SECS")]
    pub gc_lease_secs: Option<u64>,

    /// Most reviews a garbage-collection pass decides per second, pausing
    /// between batches to keep to it, so a long pass leaves the CPU and the
    /// metadata store to pulls and pushes (an unpaced pass on PostgreSQL
    /// raised pull p99 by a tenth to a quarter; docs/benchmarks.md); 0: as
    /// fast as metadata answers [default: 200].
    #[arg(long, env = "WHARF_GC_MAX_REVIEWS_PER_SEC")]
    pub gc_max_reviews_per_sec: Option<u32>,

    /// Upload sessions one tenant (namespace) may have open at once; one
    /// more is refused `429` until some finish or expire [default: 512].
    #[arg(long, env = "WHARF_MAX_UPLOADS_PER_TENANT")]
    pub max_uploads_per_tenant: Option<u64>,

    /// Upload sessions one user or robot may have open at once [default: 64].
    #[arg(long, env = "WHARF_MAX_UPLOADS_PER_USER")]
    pub max_uploads_per_user: Option<u64>,

    /// Client connections served at once. A connection past them is not
    /// refused: it waits in the waiting room (--max-waiting-connections),
    /// where each request it sends is answered `503` with `Retry-After: 1`
    /// until a slot frees and the connection is served; a push or admin
    /// request may be served at once on a few reserved connections
    /// [default: from the open-file limit: (soft limit - 256) / 2, within
    /// 64..=16384].
    #[arg(long, env = "WHARF_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Connections past the cap kept waiting for a slot: each request on one
    /// is answered `503` with `Retry-After: 1` (or served once a slot is
    /// free), and the connection is not read again for that second; more are
    /// answered `503` and closed [default: from the open-file limit: (soft
    /// limit - 256) / 4, within 64..=16384].
    #[arg(long, env = "WHARF_MAX_WAITING_CONNECTIONS")]
    pub max_waiting_connections: Option<usize>,

    /// Pull requests (blob and manifest GET/HEAD) in flight at once
    /// [default: 128 per core, within 32..=4096, at most the connection cap].
    #[arg(long, env = "WHARF_PULL_LIMIT")]
    pub pull_limit: Option<usize>,

    /// Push requests (uploads, manifest PUT, deletes) in flight at once
    /// [default: 32 per core, within 8..=1024].
    #[arg(long, env = "WHARF_PUSH_LIMIT")]
    pub push_limit: Option<usize>,

    /// Other requests (/v2/, tags, catalog, referrers) in flight at once
    /// [default: 16 per core, within 8..=512].
    #[arg(long, env = "WHARF_ADMIN_LIMIT")]
    pub admin_limit: Option<usize>,

    /// Fraction of a class's limit one tenant (first path component of the
    /// repository name) may hold once the class is half full; over it,
    /// `429` [default: 0.5].
    #[arg(long, env = "WHARF_TENANT_SHARE")]
    pub tenant_share: Option<f64>,

    /// Longest a request waits for a slot in its class before `503`, in ms
    /// [default: 50]. At most as many requests as the class limit wait.
    #[arg(long, env = "WHARF_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u64>,

    /// Lower each class's limit while its latency climbs (gradient-style
    /// adaptive limit), never above the configured limit [default: off].
    #[arg(long, env = "WHARF_ADAPTIVE", num_args = 0..=1, default_missing_value = "true")]
    pub adaptive: Option<bool>,

    /// A client must send a request's headers within this many seconds
    /// [default: 10].
    #[arg(long, env = "WHARF_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,

    /// A connection with no bytes moving for this many seconds is closed
    /// [default: 60].
    #[arg(long, env = "WHARF_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,

    /// Slowest an upload body may arrive, in bytes per second, averaged
    /// after a 30 s grace [default: 16384].
    #[arg(long, env = "WHARF_MIN_UPLOAD_RATE")]
    pub min_upload_rate: Option<u64>,

    /// Blob storage calls in flight at once from this node (its pool)
    /// [default: 16 per core, within 16..=256].
    #[arg(long, env = "WHARF_STORAGE_POOL")]
    pub storage_pool: Option<usize>,

    /// Metadata calls in flight at once from this node (its pool)
    /// [default: 8 per core, within 8..=64].
    #[arg(long, env = "WHARF_METADATA_POOL")]
    pub metadata_pool: Option<usize>,

    /// Deadline of one storage or metadata call, in ms; past it the request
    /// gets `503`. The calls of one request share it: each gets what the
    /// earlier ones left [default: 10000].
    #[arg(long, env = "WHARF_DEPENDENCY_DEADLINE_MS")]
    pub dependency_deadline_ms: Option<u64>,

    /// On SIGTERM, requests in flight get this many seconds to finish
    /// [default: 30].
    #[arg(long, env = "WHARF_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,

    /// How clients authenticate [default: none]. `none`: anyone may do
    /// anything. `htpasswd`: HTTP Basic against --htpasswd, with --grants.
    /// `token`: Docker bearer tokens verified with --token-keys (issued by
    /// this node's /auth/token when --token-signing-key is given, or by
    /// another token service at --token-realm).
    #[arg(long, env = "WHARF_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// Serve a non-loopback --listen address with `--auth none`, on
    /// purpose: anyone who reaches it may push, overwrite and delete
    /// (logged as a warning at every start). Without this flag such a
    /// start is refused [default: off].
    #[arg(long, env = "WHARF_ALLOW_UNAUTHENTICATED", num_args = 0..=1, default_missing_value = "true")]
    pub allow_unauthenticated: Option<bool>,

    /// htpasswd file of users, bcrypt entries only (`htpasswd -B`). The
    /// users of `--auth htpasswd`, and of /auth/token in token mode.
    #[arg(long, env = "WHARF_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,

    /// TOML file of what each htpasswd user may do:
    /// `[[user]] name = "alice" grants = ["acme/*:pull,push", "public/*:pull"]`
    /// (actions: pull, push, delete). Users not listed may do nothing.
    /// Without it every htpasswd user may do everything.
    #[arg(long, env = "WHARF_GRANTS")]
    pub grants: Option<PathBuf>,

    /// Repositories anyone may pull without credentials: `acme/*` (every
    /// repository under acme/) or `public/app`. Repeatable or
    /// comma-separated [default: none].
    #[arg(long, env = "WHARF_ANONYMOUS_PULL", value_delimiter = ',')]
    pub anonymous_pull: Option<Vec<String>>,

    /// The token endpoint URL that 401 challenges advertise
    /// [default: http://<bound --listen address>/auth/token]. Set it when
    /// clients reach this node by another name, or tokens come from
    /// another service.
    #[arg(long, env = "WHARF_TOKEN_REALM")]
    pub token_realm: Option<String>,

    /// The service name: the `aud` tokens must carry and the `service` of
    /// challenges [default: wharf].
    #[arg(long, env = "WHARF_TOKEN_SERVICE")]
    pub token_service: Option<String>,

    /// The `iss` tokens must carry (and that this node signs with)
    /// [default: wharf].
    #[arg(long, env = "WHARF_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// Directory of `*.pem` public keys that tokens are verified with
    /// (private keys there count by their public half). To rotate: add the
    /// new key here on every node, switch the signer, and remove the old
    /// key once the token lifetime has passed [default: the public half of
    /// --token-signing-key].
    #[arg(long, env = "WHARF_TOKEN_KEYS")]
    pub token_keys: Option<PathBuf>,

    /// The private key (PEM) this node signs tokens with when it serves
    /// /auth/token, or a directory whose last-sorting private key is used
    /// (`wharf keygen` writes one). Without it, /auth/token is not served.
    #[arg(long, env = "WHARF_TOKEN_SIGNING_KEY")]
    pub token_signing_key: Option<PathBuf>,

    /// Lifetime of issued tokens in seconds, within 60..=3600 [default: 300].
    #[arg(long, env = "WHARF_TOKEN_LIFETIME_SECS")]
    pub token_lifetime_secs: Option<u64>,

    /// File holding `sha256:<hex>`, the SHA-256 of the token the admin API
    /// (`/admin/v1` on the admin port) requires as `Authorization: Bearer`
    /// (`wharf admin token` makes one). Without it the admin API is open
    /// to whoever reaches the admin port (loopback by default). Its
    /// variable differs from the admin CLI's WHARF_ADMIN_TOKEN_FILE, which
    /// names the plain token.
    #[arg(long, env = "WHARF_ADMIN_TOKEN_HASH_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Serve the admin API on a non-loopback --admin-listen without an
    /// admin token, on purpose (logged as a warning at every start).
    /// Without this flag such a start is refused [default: off].
    #[arg(long, env = "WHARF_ADMIN_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub admin_insecure: Option<bool>,

    /// `/metrics` on the admin port requires the admin token too (probes,
    /// /healthz and /readyz, never do) [default: off].
    #[arg(long, env = "WHARF_METRICS_REQUIRE_TOKEN", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_require_token: Option<bool>,

    /// Serve the registry port over TLS with this certificate chain (PEM,
    /// the node's own certificate first), HTTP/2 and HTTP/1.1 by ALPN.
    /// Needs --tls-key. The pair is read again when either file changes
    /// (checked every few seconds) or on SIGHUP; a bad new pair is refused
    /// with a log line and the old one keeps serving [default: plain HTTP].
    #[arg(long, env = "WHARF_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "WHARF_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require a client certificate signed by one of these CAs (PEM
    /// bundle) on every TLS connection [default: none required].
    #[arg(long, env = "WHARF_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve the admin port over TLS too, with the same certificate (and
    /// client CA, when given) [default: off].
    #[arg(long, env = "WHARF_ADMIN_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub admin_tls: Option<bool>,
    /// The access log: one line per request on the registry port (time,
    /// request id, client, tenant, user, method, path with credentials
    /// redacted, status, bytes, duration), at INFO on the log target
    /// `wharf::access`, written when the response is over. `off` writes
    /// none (responses still carry their `X-Request-Id`); `--log` filters it
    /// like any target (docs/operations.md, "Access log") [default: on].
    #[arg(long, env = "WHARF_ACCESS_LOG", value_enum)]
    pub access_log: Option<Switch>,

    /// This node's name, as the events it sends carry it (`node`)
    /// [default: the machine's host name].
    #[arg(long, env = "WHARF_NODE_NAME")]
    pub node_name: Option<String>,

    /// Send every event (manifest pushes, tag moves, deletes; pulls with
    /// --notify-pulls) to this webhook: `URL` or `NAME=URL`, http or https,
    /// each signed with --notify-secret-file (docs/notifications.md). NAME
    /// is its `endpoint` label in metrics [default: node-1, node-2, … in
    /// order]. Repeatable; the variable takes several separated by spaces
    /// [default: none].
    #[arg(long, env = "WHARF_NOTIFY_ENDPOINT", value_delimiter = ' ')]
    pub notify_endpoint: Option<Vec<String>>,

    /// File holding the secret (16 to 256 visible ASCII characters, one
    /// line) that signs deliveries to the --notify-endpoint webhooks
    /// (X-Wharf-Signature: HMAC-SHA256) [required with --notify-endpoint].
    #[arg(long, env = "WHARF_NOTIFY_SECRET_FILE")]
    pub notify_secret_file: Option<PathBuf>,

    /// The --notify-endpoint webhooks get manifest pull events too (one
    /// per manifest GET: many) [default: off].
    #[arg(long, env = "WHARF_NOTIFY_PULLS", num_args = 0..=1, default_missing_value = "true")]
    pub notify_pulls: Option<bool>,

    /// Events waiting per webhook (each endpoint has its own queue); one
    /// more is dropped and counted in wharf_notify_events_dropped_total
    /// [default: 1024].
    #[arg(long, env = "WHARF_NOTIFY_QUEUE_SIZE")]
    pub notify_queue_size: Option<usize>,

    /// Longest one delivery attempt may take, connecting included, in ms
    /// [default: 5000].
    #[arg(long, env = "WHARF_NOTIFY_TIMEOUT_MS")]
    pub notify_timeout_ms: Option<u64>,

    /// Attempts per event and webhook, the first included; between two,
    /// 1 s doubling up to 60 s [default: 6].
    #[arg(long, env = "WHARF_NOTIFY_MAX_ATTEMPTS")]
    pub notify_max_attempts: Option<u32>,

    /// An event not delivered this many seconds after it happened is given
    /// up [default: 900].
    #[arg(long, env = "WHARF_NOTIFY_MAX_AGE_SECS")]
    pub notify_max_age_secs: Option<u64>,
}

/// A feature turned `on` or `off`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How clients authenticate.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    None,
    Htpasswd,
    Token,
}

/// The authentication settings, checked but not loaded (files are read by
/// `serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub htpasswd: Option<PathBuf>,
    pub grants: Option<PathBuf>,
    pub anonymous_pull: Vec<wharf_auth::RepoPattern>,
    pub token_realm: Option<String>,
    pub token_service: String,
    pub token_issuer: String,
    pub token_keys: Option<PathBuf>,
    pub token_signing_key: Option<PathBuf>,
    pub token_lifetime: Duration,
}

impl AuthSettings {
    fn from_args(a: &ServeArgs) -> Result<AuthSettings, String> {
        let mode = a.auth.unwrap_or_default();
        let anonymous_pull =
            wharf_api::auth::parse_patterns(a.anonymous_pull.as_deref().unwrap_or_default())
                .map_err(|e| format!("--anonymous-pull: {e}"))?;
        let lifetime = a.token_lifetime_secs.unwrap_or(300);
        if !(60..=3600).contains(&lifetime) {
            return Err(format!(
                "--token-lifetime-secs must be within 60..=3600, not {lifetime}"
            ));
        }
        match mode {
            // Users come from --htpasswd, the tenant directory, or both.
            AuthMode::None | AuthMode::Htpasswd => {}
            AuthMode::Token => {
                if a.token_keys.is_none() && a.token_signing_key.is_none() {
                    return Err("--auth token needs --token-keys (or --token-signing-key)".into());
                }
            }
        }
        Ok(AuthSettings {
            mode,
            htpasswd: a.htpasswd.clone(),
            grants: a.grants.clone(),
            anonymous_pull,
            token_realm: a.token_realm.clone(),
            token_service: a.token_service.clone().unwrap_or_else(|| "wharf".into()),
            token_issuer: a.token_issuer.clone().unwrap_or_else(|| "wharf".into()),
            token_keys: a.token_keys.clone(),
            token_signing_key: a.token_signing_key.clone(),
            token_lifetime: Duration::from_secs(lifetime),
        })
    }
}

/// `$target.field = $args.field.or($file.field)` for each field: flags (and
/// their environment variables) win over the file.
/// Also records where each field's value came from.
macro_rules! overlay {
    ($args:ident, $file:ident, $sources:ident; $($field:ident),* $(,)?) => {{
        $(
            if $args.$field.is_some() {
                $sources.insert(stringify!($field), Source::Given);
            } else if $file.$field.is_some() {
                $sources.insert(stringify!($field), Source::File);
            }
        )*
        ServeArgs {
            config: $args.config,
            $($field: $args.$field.or($file.$field),)*
        }
    }};
}

/// Where a configuration value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A flag or its environment variable (clap merges the two).
    Given,
    /// The `--config` file.
    File,
}

/// What the machine offers, read once at start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    pub cores: usize,
    /// Soft limit on open files (`None`: unlimited or unknown).
    pub open_files: Option<u64>,
}

impl Machine {
    pub fn read() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            open_files: wharf_telemetry::process::fd_limit(),
        }
    }
}

/// The node's limits, after defaults were derived from the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_waiting: usize,
    pub pull: usize,
    pub push: usize,
    pub admin: usize,
    pub tenant_share: f64,
    pub max_wait: Duration,
    pub adaptive: bool,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub min_upload_rate: u64,
    pub storage_pool: usize,
    pub metadata_pool: usize,
    pub dependency_deadline: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    /// Fills what `a` leaves unset from `m`. Every connection and every blob
    /// being read holds a file descriptor, so the connection cap keeps half
    /// the open-file limit (less a reserve for the store) for them.
    pub fn derive(a: &ServeArgs, m: Machine) -> Result<Limits, String> {
        let per_core = |n: usize, lo: usize, hi: usize| (m.cores * n).clamp(lo, hi);
        let fds = m.open_files.unwrap_or(65536).min(1 << 20) as usize;
        let max_connections = a
            .max_connections
            .unwrap_or_else(|| (fds.saturating_sub(256) / 2).clamp(64, 16384));
        let limits = Limits {
            max_connections,
            max_waiting: a
                .max_waiting_connections
                .unwrap_or_else(|| (fds.saturating_sub(256) / 4).clamp(64, 16384)),
            pull: a
                .pull_limit
                .unwrap_or_else(|| per_core(128, 32, 4096).min(max_connections)),
            push: a.push_limit.unwrap_or_else(|| per_core(32, 8, 1024)),
            admin: a.admin_limit.unwrap_or_else(|| per_core(16, 8, 512)),
            tenant_share: a.tenant_share.unwrap_or(0.5),
            max_wait: Duration::from_millis(a.max_wait_ms.unwrap_or(50)),
            adaptive: a.adaptive.unwrap_or(false),
            header_timeout: Duration::from_secs(a.header_timeout_secs.unwrap_or(10)),
            idle_timeout: Duration::from_secs(a.idle_timeout_secs.unwrap_or(60)),
            min_upload_rate: a.min_upload_rate.unwrap_or(16 * 1024),
            storage_pool: a.storage_pool.unwrap_or_else(|| per_core(16, 16, 256)),
            metadata_pool: a.metadata_pool.unwrap_or_else(|| per_core(8, 8, 64)),
            dependency_deadline: Duration::from_millis(a.dependency_deadline_ms.unwrap_or(10_000)),
            shutdown_grace: Duration::from_secs(a.shutdown_grace_secs.unwrap_or(30)),
        };
        limits.check()?;
        Ok(limits)
    }

    fn check(&self) -> Result<(), String> {
        let positive = [
            ("max-connections", self.max_connections),
            ("pull-limit", self.pull),
            ("push-limit", self.push),
            ("admin-limit", self.admin),
            ("storage-pool", self.storage_pool),
            ("metadata-pool", self.metadata_pool),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("--{name} must be at least 1"));
        }
        if !(self.tenant_share > 0.0 && self.tenant_share <= 1.0) {
            return Err(format!(
                "--tenant-share must be in (0, 1], not {}",
                self.tenant_share
            ));
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err("timeouts must be at least 1 second".into());
        }
        if self.dependency_deadline.is_zero() {
            return Err("--dependency-deadline-ms must be at least 1".into());
        }
        Ok(())
    }
}

/// The merged configuration `wharf serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub addr_file: Option<PathBuf>,
    pub admin_listen: SocketAddr,
    pub admin_addr_file: Option<PathBuf>,
    pub log: String,
    pub log_format: LogFormat,
    pub manifest_cache_bytes: usize,
    pub small_blob_cache_bytes: usize,
    /// Entries in each last-known map.
    pub last_known_entries: usize,
    /// The embedded metadata store's page cache (unused with PostgreSQL).
    pub metadata_cache_bytes: usize,
    pub upload_expiry: Duration,
    /// Open upload sessions per tenant namespace, and per user.
    pub max_uploads_per_tenant: u64,
    pub max_uploads_per_user: u64,
    /// The garbage collector of this node.
    pub gc: wharf_gc::GcConfig,
    /// How often this node applies the tenants' retention policies; `None`:
    /// only on demand.
    pub retention_interval: Option<Duration>,
    pub limits: Limits,
    /// Nodes sharing this configuration's dependencies (for the budget).
    pub cluster_nodes: usize,
    /// PostgreSQL URL; `None`: the embedded store under the data directory.
    pub metadata_url: Option<String>,
    /// S3-compatible storage; `None`: files under the data directory.
    pub s3: Option<S3Settings>,
    /// The object store's connection limit, if the operator gave it.
    pub storage_max_connections: Option<usize>,
    /// Who may do what on the registry port.
    pub auth: AuthSettings,
    /// The admin API's token hash file, if any.
    pub admin_token_file: Option<PathBuf>,
    /// The SHA-256 (hex) that file holds, read and checked with the rest
    /// of the configuration (so `wharf check` refuses what `serve` would).
    pub admin_token_hash: Option<String>,
    /// An open admin API on a non-loopback address is wanted.
    pub admin_insecure: bool,
    /// An unauthenticated registry on a non-loopback address is wanted.
    pub allow_unauthenticated: bool,
    /// `/metrics` asks for the admin token.
    pub metrics_require_token: bool,
    /// Pending schema migrations are applied at start.
    pub migrate: bool,
    /// The keys given by flag, environment or file (the rest are defaults
    /// or derived from [`Config::machine`]).
    pub sources: std::collections::BTreeMap<&'static str, Source>,
    /// What the machine offered when the configuration was resolved.
    pub machine: Machine,
    /// The registry port's TLS files; `None`: plain HTTP.
    pub tls: Option<wharf_api::tls::TlsFiles>,
    /// The admin port serves the same TLS.
    pub admin_tls: bool,
    /// Write the access log (`--access-log`).
    pub access_log: bool,
    /// This node's name in events.
    pub node_name: String,
    /// Event notifications: the node's webhooks and how deliveries are
    /// made.
    pub notify: NotifySettings,
}

/// The node's webhooks and how deliveries are made (checked, the secret
/// read, with the rest of the configuration).
#[derive(Clone, PartialEq)]
pub struct NotifySettings {
    /// Each webhook's name and URL, in order.
    pub endpoints: Vec<(String, String)>,
    pub secret_file: Option<PathBuf>,
    /// What that file holds.
    pub secret: Option<String>,
    pub pulls: bool,
    pub queue_size: usize,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("endpoints", &self.endpoints.len())
            .field("secret_file", &self.secret_file)
            .field("pulls", &self.pulls)
            .field("queue_size", &self.queue_size)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl NotifySettings {
    fn from_args(a: &ServeArgs) -> Result<NotifySettings, String> {
        let defaults = wharf_notify::NotifyConfig::default();
        let mut endpoints: Vec<(String, String)> = Vec::new();
        for (i, given) in a.notify_endpoint.iter().flatten().enumerate() {
            let given = given.trim();
            if given.is_empty() {
                continue;
            }
            // NAME=URL when what comes before the first `=` is no URL's
            // start (a URL's query may hold `=`).
            let named = given
                .split_once('=')
                .filter(|(name, _)| !name.contains(':') && !name.contains('/'));
            let (name, url) = if given.contains("://") && named.is_none() {
                (format!("node-{}", i + 1), given.to_string())
            } else {
                match named {
                    Some((name, url)) => (name.to_string(), url.to_string()),
                    None => {
                        return Err(format!(
                            "--notify-endpoint {given:?} is neither URL nor NAME=URL \
                             (e.g. https://hooks.example.com/wharf)"
                        ))
                    }
                }
            };
            wharf_notify::target::check_id(&name).map_err(|e| format!("--notify-endpoint: {e}"))?;
            wharf_notify::target::check_url(&url).map_err(|e| format!("--notify-endpoint: {e}"))?;
            if endpoints.iter().any(|(n, _)| *n == name) {
                return Err(format!("--notify-endpoint: two endpoints are named {name}"));
            }
            endpoints.push((name, url));
        }
        let secret = match &a.notify_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--notify-secret-file {}: {e}", path.display()))?;
                let secret = text.trim().to_string();
                wharf_notify::target::check_secret(&secret)
                    .map_err(|e| format!("--notify-secret-file {}: {e}", path.display()))?;
                Some(secret)
            }
            None => None,
        };
        if !endpoints.is_empty() && secret.is_none() {
            return Err(
                "--notify-endpoint needs --notify-secret-file (the secret deliveries are \
                 signed with; e.g. `openssl rand -hex 32 > notify.secret`)"
                    .into(),
            );
        }
        let positive = |v: Option<u64>, name: &str, default: u64| match v {
            Some(0) => Err(format!("--{name} must be at least 1")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        Ok(NotifySettings {
            endpoints,
            secret_file: a.notify_secret_file.clone(),
            secret,
            pulls: a.notify_pulls.unwrap_or(false),
            queue_size: positive(
                a.notify_queue_size.map(|v| v as u64),
                "notify-queue-size",
                defaults.queue_size as u64,
            )? as usize,
            timeout: Duration::from_millis(positive(
                a.notify_timeout_ms,
                "notify-timeout-ms",
                defaults.timeout.as_millis() as u64,
            )?),
            max_attempts: positive(
                a.notify_max_attempts.map(u64::from),
                "notify-max-attempts",
                u64::from(defaults.max_attempts),
            )?
            .min(u64::from(u32::MAX)) as u32,
            max_age: Duration::from_secs(positive(
                a.notify_max_age_secs,
                "notify-max-age-secs",
                defaults.max_age.as_secs(),
            )?),
        })
    }
}

/// The machine's host name, for `--node-name`'s default.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wharf".into())
}

/// Where and how to reach an S3-compatible store.
#[derive(Clone, PartialEq)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub prefix: String,
    pub presign_redirects: bool,
}

impl std::fmt::Debug for S3Settings {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("prefix", &self.prefix)
            .field("presign_redirects", &self.presign_redirects)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    fn from_args(a: &ServeArgs) -> Result<Option<S3Settings>, String> {
        let Some(endpoint) = a.s3_endpoint.clone() else {
            return Ok(None);
        };
        let need = |v: &Option<String>, flag: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("--s3-endpoint needs {flag}"))
        };
        Ok(Some(S3Settings {
            bucket: need(&a.s3_bucket, "--s3-bucket")?,
            access_key_id: need(&a.s3_access_key_id, "--s3-access-key-id")?,
            secret_access_key: need(&a.s3_secret_access_key, "--s3-secret-access-key")?,
            region: a.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
            prefix: a.s3_prefix.clone().unwrap_or_default(),
            presign_redirects: a.s3_presign_redirects.unwrap_or(false),
            endpoint,
        }))
    }
}

impl Config {
    /// The dependencies this node shares with the other nodes of its
    /// cluster, with its pool to each and each one's connection limit.
    /// The embedded defaults (local files, embedded metadata) are not
    /// shared, so they have no budget to keep.
    ///
    /// `metadata_limit` is what the database accepts (read from the server
    /// at start; `None` when not known, as in `wharf check` offline).
    pub fn shared_dependencies(
        &self,
        metadata_limit: Option<usize>,
    ) -> Vec<crate::budget::Dependency> {
        let mut deps = Vec::new();
        if self.metadata_url.is_some() {
            deps.push(crate::budget::Dependency {
                name: "PostgreSQL (max_connections less reserved)",
                per_node: self.limits.metadata_pool,
                limit: metadata_limit,
            });
        }
        if self.s3.is_some() {
            deps.push(crate::budget::Dependency {
                name: "the object store (--storage-max-connections)",
                per_node: self.limits.storage_pool,
                limit: self.storage_max_connections,
            });
        }
        deps
    }
}

impl Config {
    /// Merges flags/environment (`args`) over the file named by `--config`.
    pub fn load(args: &ServeArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        Config::merge(args.clone(), file, Machine::read())
    }

    fn merge(args: ServeArgs, file: ServeArgs, machine: Machine) -> Result<Config, String> {
        let mut sources = std::collections::BTreeMap::new();
        let a = overlay!(args, file, sources;
            listen, data_dir, addr_file, admin_listen, admin_addr_file, metadata_url, migrate,
            cluster_nodes, log, log_format, s3_endpoint, s3_bucket, s3_region, s3_access_key_id,
            s3_secret_access_key, s3_prefix, s3_presign_redirects, storage_max_connections,
            manifest_cache_mib, small_blob_cache_mib, last_known_entries, metadata_cache_mib,
            upload_expiry_hours, max_uploads_per_tenant, max_uploads_per_user,
            gc_enabled, gc_review_delay_secs, gc_interval_secs, gc_orphan_age_secs,
            gc_orphan_scan_interval_secs, gc_lease_secs, gc_max_reviews_per_sec,
            retention_interval_secs, max_connections,
            max_waiting_connections,
            pull_limit,
            push_limit, admin_limit, tenant_share, max_wait_ms, adaptive,
            header_timeout_secs, idle_timeout_secs, min_upload_rate, storage_pool,
            metadata_pool, dependency_deadline_ms, shutdown_grace_secs, auth, htpasswd,
            grants, anonymous_pull, token_realm, token_service, token_issuer, token_keys,
            token_signing_key, token_lifetime_secs, admin_token_file, admin_insecure,
            metrics_require_token, allow_unauthenticated, tls_cert, tls_key, tls_client_ca,
            admin_tls, access_log, node_name, notify_endpoint, notify_secret_file, notify_pulls,
            notify_queue_size, notify_timeout_ms, notify_max_attempts, notify_max_age_secs,
        );
        let limits = Limits::derive(&a, machine)?;
        let s3 = S3Settings::from_args(&a)?;
        let auth = AuthSettings::from_args(&a)?;
        let node_name = match a.node_name.as_deref().map(str::trim) {
            None | Some("") => host_name(),
            Some(n)
                if n.len() <= 253
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
            {
                n.to_string()
            }
            Some(n) => {
                return Err(format!(
                    "--node-name {n:?} must be at most 253 letters, digits, '.', '-' and '_'"
                ))
            }
        };
        let notify = NotifySettings::from_args(&a)?;
        let admin_listen: SocketAddr = a
            .admin_listen
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default"));
        let admin_insecure = a.admin_insecure.unwrap_or(false);
        if !admin_listen.ip().is_loopback() && a.admin_token_file.is_none() && !admin_insecure {
            return Err(format!(
                "--admin-listen {admin_listen} is not a loopback address and no --admin-token-file \
                 is given: anyone who reaches it could manage every tenant. Make a token with \
                 `wharf admin token`, or pass --admin-insecure if the network is yours alone"
            ));
        }
        let listen: SocketAddr = a
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let allow_unauthenticated = a.allow_unauthenticated.unwrap_or(false);
        if auth.mode == AuthMode::None && !listen.ip().is_loopback() && !allow_unauthenticated {
            return Err(format!(
                "--listen {listen} is not a loopback address and --auth is none: anyone who \
                 reaches it could push, overwrite and delete every image. Set --auth token or \
                 --auth htpasswd (docs/auth.md), or pass --allow-unauthenticated if that is \
                 what you want"
            ));
        }
        let log = a.log.unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(format!(
                "--log {log:?} is not a log filter ({e}); try `info`, `warn` or \
                 `wharf=debug,info`"
            ));
        }
        let admin_token_hash = match &a.admin_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
                Some(
                    wharf_api::admin_api::parse_token_hash(&text)
                        .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        let metrics_require_token = a.metrics_require_token.unwrap_or(false);
        if metrics_require_token && a.admin_token_file.is_none() {
            return Err("--metrics-require-token needs --admin-token-file".into());
        }
        if a.max_uploads_per_tenant == Some(0) || a.max_uploads_per_user == Some(0) {
            return Err(
                "--max-uploads-per-tenant and --max-uploads-per-user must be at least 1".into(),
            );
        }
        if a.gc_interval_secs == Some(0) || a.gc_orphan_scan_interval_secs == Some(0) {
            return Err(
                "--gc-interval-secs and --gc-orphan-scan-interval-secs must be at least 1".into(),
            );
        }
        // wharf_gc starts a deletion only with 30 s of its lease left.
        if a.gc_lease_secs.is_some_and(|l| l <= 30) {
            return Err("--gc-lease-secs must be more than 30".into());
        }
        let defaults = wharf_gc::GcConfig::default();
        let secs_or = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
        let gc = wharf_gc::GcConfig {
            enabled: a.gc_enabled.unwrap_or(true),
            review_delay: secs_or(a.gc_review_delay_secs, defaults.review_delay),
            interval: secs_or(a.gc_interval_secs, defaults.interval),
            orphan_age: secs_or(a.gc_orphan_age_secs, defaults.orphan_age),
            orphan_scan_interval: secs_or(
                a.gc_orphan_scan_interval_secs,
                defaults.orphan_scan_interval,
            ),
            lease: secs_or(a.gc_lease_secs, defaults.lease),
            max_reviews_per_sec: Some(
                a.gc_max_reviews_per_sec
                    .unwrap_or(DEFAULT_GC_MAX_REVIEWS_PER_SEC),
            )
            .filter(|r| *r > 0),
            ..defaults
        };
        let tls = match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => {
                let files = wharf_api::tls::TlsFiles {
                    cert,
                    key,
                    client_ca: a.tls_client_ca,
                };
                // Read now, so that `wharf check` refuses a bad pair too.
                wharf_api::tls::TlsServer::load(files.clone())?;
                Some(files)
            }
            (None, None) if a.tls_client_ca.is_some() => {
                return Err("--tls-client-ca needs --tls-cert and --tls-key".into())
            }
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together: give both".into()),
        };
        let admin_tls = a.admin_tls.unwrap_or(false);
        if admin_tls && tls.is_none() {
            return Err("--admin-tls needs --tls-cert and --tls-key".into());
        }
        let nodes = a.cluster_nodes.unwrap_or(1);
        if nodes > 1 && (a.metadata_url.is_none() || s3.is_none()) {
            return Err(format!(
                "--cluster-nodes {nodes} needs shared storage: --metadata-url and --s3-endpoint \
                 (without them each node would keep data of its own)"
            ));
        }
        Ok(Config {
            limits,
            listen,
            data_dir: a.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            addr_file: a.addr_file,
            admin_listen,
            admin_addr_file: a.admin_addr_file,
            log,
            log_format: a.log_format.unwrap_or_default(),
            manifest_cache_bytes: a.manifest_cache_mib.unwrap_or(64) * 1024 * 1024,
            small_blob_cache_bytes: a.small_blob_cache_mib.unwrap_or(32) * 1024 * 1024,
            last_known_entries: a.last_known_entries.unwrap_or(100_000),
            metadata_cache_bytes: a
                .metadata_cache_mib
                .map_or(wharf_meta::embedded::DEFAULT_CACHE_BYTES, |m| {
                    m * 1024 * 1024
                }),
            upload_expiry: Duration::from_secs(a.upload_expiry_hours.unwrap_or(24) * 3600),
            max_uploads_per_tenant: a
                .max_uploads_per_tenant
                .unwrap_or(wharf_registry::DEFAULT_MAX_UPLOADS_PER_TENANT),
            max_uploads_per_user: a
                .max_uploads_per_user
                .unwrap_or(wharf_registry::DEFAULT_MAX_UPLOADS_PER_USER),
            gc,
            retention_interval: match a.retention_interval_secs.unwrap_or(3600) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            cluster_nodes: a.cluster_nodes.unwrap_or(1).max(1),
            s3,
            storage_max_connections: a.storage_max_connections,
            metadata_url: a.metadata_url,
            auth,
            admin_token_file: a.admin_token_file,
            admin_token_hash,
            admin_insecure,
            allow_unauthenticated,
            metrics_require_token,
            migrate: a.migrate.unwrap_or(false),
            sources,
            machine,
            tls,
            admin_tls,
            access_log: a.access_log != Some(Switch::Off),
            node_name,
            notify,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Machine = Machine {
        cores: 2,
        open_files: Some(1024),
    };

    fn merge(args: ServeArgs, file: &str) -> Result<Config, String> {
        Config::merge(args, toml::from_str(file).unwrap(), SMALL)
    }

    #[test]
    fn defaults() {
        let c = merge(ServeArgs::default(), "").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.log, "info");
        assert!(c.access_log, "the access log is on by default");
    }

    #[test]
    fn the_access_log_is_turned_off_by_flag_or_file() {
        let off = ServeArgs {
            access_log: Some(Switch::Off),
            ..Default::default()
        };
        assert!(!merge(off, "access_log = \"on\"").unwrap().access_log);
        assert!(
            !merge(ServeArgs::default(), "access_log = \"off\"")
                .unwrap()
                .access_log
        );
        assert!(
            merge(ServeArgs::default(), "access_log = \"on\"")
                .unwrap()
                .access_log
        );
        assert!(toml::from_str::<ServeArgs>("access_log = \"maybe\"").is_err());
    }

    #[test]
    fn an_unauthenticated_registry_off_loopback_needs_the_flag() {
        let off_loopback = || ServeArgs {
            listen: Some("0.0.0.0:5000".parse().unwrap()),
            ..Default::default()
        };
        let err = merge(off_loopback(), "").unwrap_err();
        assert!(
            err.contains("--auth") && err.contains("--allow-unauthenticated"),
            "{err}"
        );
        let on_purpose = ServeArgs {
            allow_unauthenticated: Some(true),
            ..off_loopback()
        };
        assert!(merge(on_purpose, "").unwrap().allow_unauthenticated);
        let from_file = merge(off_loopback(), "allow_unauthenticated = true").unwrap();
        assert!(from_file.allow_unauthenticated);
        let v6_loopback = ServeArgs {
            listen: Some("[::1]:5000".parse().unwrap()),
            ..Default::default()
        };
        assert!(merge(v6_loopback, "").is_ok(), "loopback needs no flag");
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused() {
        let bad = ServeArgs {
            log: Some("wharf=loud".into()),
            ..Default::default()
        };
        let err = merge(bad, "").unwrap_err();
        assert!(err.contains("--log") && err.contains("wharf=loud"), "{err}");
        let good = ServeArgs {
            log: Some("wharf=debug,info".into()),
            ..Default::default()
        };
        assert_eq!(merge(good, "").unwrap().log, "wharf=debug,info");
        let json = merge(ServeArgs::default(), "log_format = \"json\"").unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert_eq!(
            merge(ServeArgs::default(), "").unwrap().log_format,
            LogFormat::Text
        );
    }

    #[test]
    fn an_open_admin_api_off_loopback_needs_a_token_or_the_insecure_flag() {
        let off_loopback = || ServeArgs {
            admin_listen: Some("0.0.0.0:5001".parse().unwrap()),
            ..Default::default()
        };
        let err = merge(off_loopback(), "").unwrap_err();
        assert!(
            err.contains("--admin-token-file") && err.contains("--admin-insecure"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let hash_file = dir.path().join("admin.sha256");
        std::fs::write(&hash_file, format!("sha256:{}\n", "ab".repeat(32))).unwrap();
        let with_token = ServeArgs {
            admin_token_file: Some(hash_file.clone()),
            ..off_loopback()
        };
        let c = merge(with_token, "").unwrap();
        assert_eq!(c.admin_token_hash, Some("ab".repeat(32)));
        let missing = ServeArgs {
            admin_token_file: Some(dir.path().join("nope")),
            ..off_loopback()
        };
        assert!(merge(missing, "")
            .unwrap_err()
            .contains("--admin-token-file"));
        let on_purpose = ServeArgs {
            admin_insecure: Some(true),
            ..off_loopback()
        };
        assert!(merge(on_purpose, "").unwrap().admin_insecure);
        assert!(
            merge(ServeArgs::default(), "").is_ok(),
            "loopback needs neither"
        );
        let metrics = ServeArgs {
            metrics_require_token: Some(true),
            ..Default::default()
        };
        assert!(merge(metrics, "")
            .unwrap_err()
            .contains("--admin-token-file"));
    }

    #[test]
    fn upload_session_caps_default_and_are_set_by_flag_or_file() {
        let c = merge(ServeArgs::default(), "").unwrap();
        assert_eq!(
            (c.max_uploads_per_tenant, c.max_uploads_per_user),
            (512, 64)
        );
        let args = ServeArgs {
            max_uploads_per_user: Some(3),
            ..Default::default()
        };
        let c = merge(args, "max_uploads_per_tenant = 9").unwrap();
        assert_eq!((c.max_uploads_per_tenant, c.max_uploads_per_user), (9, 3));
        let zero = ServeArgs {
            max_uploads_per_tenant: Some(0),
            ..Default::default()
        };
        assert!(merge(zero, "").unwrap_err().contains("at least 1"));
    }

    #[test]
    fn cache_bounds_default_and_are_set_by_flag_or_file() {
        let c = merge(ServeArgs::default(), "").unwrap();
        assert_eq!(
            (
                c.manifest_cache_bytes >> 20,
                c.small_blob_cache_bytes >> 20,
                c.last_known_entries
            ),
            (64, 32, 100_000)
        );
        let args = ServeArgs {
            small_blob_cache_mib: Some(2),
            ..Default::default()
        };
        let c = merge(args, "last_known_entries = 500\nmanifest_cache_mib = 1").unwrap();
        assert_eq!(
            (
                c.manifest_cache_bytes >> 20,
                c.small_blob_cache_bytes >> 20,
                c.last_known_entries
            ),
            (1, 2, 500)
        );
    }

    #[test]
    fn notification_endpoints_need_a_secret_and_take_names() {
        let c = merge(ServeArgs::default(), "").unwrap();
        assert!(c.notify.endpoints.is_empty() && c.notify.secret.is_none());
        assert_eq!(c.notify.queue_size, 1024);
        assert_eq!(c.notify.max_attempts, 6);
        assert!(!c.notify.pulls);
        assert!(!c.node_name.is_empty(), "the host name by default");
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("notify.secret");
        std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        let err = merge(
            ServeArgs::default(),
            "notify_endpoint = [\"http://127.0.0.1:9/hook\"]",
        )
        .unwrap_err();
        assert!(err.contains("--notify-secret-file"), "{err}");
        let args = ServeArgs {
            notify_endpoint: Some(vec![
                "http://127.0.0.1:9/a".into(),
                "audit=https://hooks.example/b?token=t".into(),
            ]),
            notify_secret_file: Some(secret.clone()),
            node_name: Some("node-a".into()),
            ..Default::default()
        };
        let c = merge(args, "notify_pulls = true\nnotify_queue_size = 8").unwrap();
        assert_eq!(
            c.notify.endpoints,
            [
                ("node-1".to_string(), "http://127.0.0.1:9/a".to_string()),
                ("audit".into(), "https://hooks.example/b?token=t".into())
            ]
        );
        assert_eq!(c.notify.secret.as_deref(), Some("0123456789abcdef0123"));
        assert!(c.notify.pulls);
        assert_eq!(c.notify.queue_size, 8);
        assert_eq!(c.node_name, "node-a");
        let shown = crate::config_view::render(&c).join("\n");
        assert!(
            !shown.contains("0123456789abcdef") && !shown.contains("token=t"),
            "{shown}"
        );
        assert!(
            shown.contains("audit=https://hooks.example/b?<hidden>"),
            "{shown}"
        );
        for (file, says) in [
            ("notify_endpoint = [\"ftp://x/\"]", "http:// or https://"),
            (
                "notify_endpoint = [\"hooks.example\"]",
                "neither URL nor NAME=URL",
            ),
            ("notify_endpoint = [\"Bad=http://x/\"]", "endpoint id"),
            (
                "notify_endpoint = [\"a=http://x/\", \"a=http://y/\"]",
                "two endpoints",
            ),
            ("notify_queue_size = 0", "--notify-queue-size"),
            ("node_name = \"a b\"", "--node-name"),
        ] {
            let args = ServeArgs {
                notify_secret_file: Some(secret.clone()),
                ..Default::default()
            };
            let err = merge(args, file).unwrap_err();
            assert!(err.contains(says), "{file}: {err}");
        }
        std::fs::write(&secret, "short\n").unwrap();
        let args = ServeArgs {
            notify_secret_file: Some(secret),
            ..Default::default()
        };
        assert!(merge(args, "").unwrap_err().contains("16 to 256"));
    }

    #[test]
    fn flags_beat_file() {
        let args = ServeArgs {
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            pull_limit: Some(7),
            ..Default::default()
        };
        let file = "listen = \"127.0.0.1:7000\"\ndata_dir = \"/f\"\nlog = \"debug\"\npull_limit = 9\npush_limit = 3";
        let c = merge(args, file).unwrap();
        assert_eq!(c.listen.port(), 8000, "flag wins");
        assert_eq!(c.limits.pull, 7, "flag wins");
        assert_eq!(c.limits.push, 3, "file fills what flags leave");
        assert_eq!(c.data_dir, PathBuf::from("/f"));
        assert_eq!(c.log, "debug");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<ServeArgs>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<ServeArgs>("config = \"x\"").is_err());
    }

    #[test]
    fn limits_follow_the_machine() {
        let small = Limits::derive(&ServeArgs::default(), SMALL).unwrap();
        assert_eq!(small.max_connections, (1024 - 256) / 2);
        assert_eq!(small.max_waiting, (1024 - 256) / 4);
        assert_eq!(small.pull, 256);
        assert_eq!(small.push, 64);
        assert_eq!(small.storage_pool, 32);
        let big = Machine {
            cores: 64,
            open_files: Some(1 << 20),
        };
        let big = Limits::derive(&ServeArgs::default(), big).unwrap();
        assert_eq!(big.max_connections, 16384, "capped");
        assert_eq!(big.pull, 4096, "capped");
        let few_fds = Machine {
            cores: 64,
            open_files: Some(300),
        };
        let few = Limits::derive(&ServeArgs::default(), few_fds).unwrap();
        assert_eq!(few.max_connections, 64, "floor");
        assert_eq!(few.max_waiting, 64, "floor");
        assert_eq!(few.pull, 64, "never more pulls than connections");
    }

    #[test]
    fn auth_settings_from_file_and_flags() {
        let c = merge(ServeArgs::default(), "").unwrap();
        assert_eq!(c.auth.mode, AuthMode::None);
        assert_eq!(c.auth.token_service, "wharf");
        assert_eq!(c.auth.token_lifetime, Duration::from_secs(300));
        let c = merge(
            ServeArgs {
                anonymous_pull: Some(vec!["acme/*".into(), "public/app,x/*".into()]),
                ..Default::default()
            },
            r#"
auth = "token"
token_keys = "/keys"
token_service = "registry.example"
anonymous_pull = ["ignored/*"]
"#,
        )
        .unwrap();
        assert_eq!(c.auth.mode, AuthMode::Token);
        assert_eq!(c.auth.token_service, "registry.example");
        let pulls: Vec<String> = c
            .auth
            .anonymous_pull
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            pulls,
            ["acme/*", "public/app", "x/*"],
            "flags win over the file"
        );
    }

    #[test]
    fn incomplete_auth_settings_are_refused() {
        for file in [
            "auth = \"token\"",
            "auth = \"token\"\ntoken_keys = \"/k\"\ntoken_lifetime_secs = 5",
            "anonymous_pull = [\"ACME/*\"]",
        ] {
            assert!(merge(ServeArgs::default(), file).is_err(), "{file}");
        }
    }

    #[test]
    fn users_may_come_from_the_tenant_directory_alone() {
        // No --htpasswd: the directory's users and robots log in.
        for file in [
            "auth = \"htpasswd\"",
            "auth = \"token\"\ntoken_signing_key = \"/k.pem\"",
        ] {
            assert!(merge(ServeArgs::default(), file).is_ok(), "{file}");
        }
    }

    #[test]
    fn nonsense_limits_are_refused() {
        for args in [
            ServeArgs {
                pull_limit: Some(0),
                ..Default::default()
            },
            ServeArgs {
                tenant_share: Some(1.5),
                ..Default::default()
            },
            ServeArgs {
                header_timeout_secs: Some(0),
                ..Default::default()
            },
        ] {
            assert!(Limits::derive(&args, SMALL).is_err(), "{args:?}");
        }
    }
}
