//! Who may do what on the registry port: the per-request check, and the
//! token endpoint (`/auth/token`).
//!
//! Owns: reading the `Authorization` header, deciding what a request needs
//! (its [`Need`]: pull, push, delete on one or two repositories, the
//! catalog, or just valid credentials for `/v2/`), checking it against the
//! configured [`Auth`] mode, and answering `401` with the right
//! `WWW-Authenticate` challenge. The token protocol itself (scopes, keys,
//! signatures, htpasswd) is `wharf-auth`; this module only wires it to HTTP.
//!
//! Must never: log or echo a token, a password or a hash; run bcrypt on the
//! async runtime; let an unauthenticated request take an admission slot
//! (the check runs before admission, so it must stay cheap: a token check is
//! one ES256 verification; a password check is a cached SHA-256 lookup, and
//! bcrypt only on a miss, bounded and off the runtime).
//!
//! What a request needs, by method: `GET`/`HEAD` pull; `DELETE` delete;
//! `POST`/`PUT`/`PATCH` pull and push (as distribution does). Upload
//! sessions need pull and push whatever the method (an upload belongs to a
//! push). A cross-repository mount also needs pull on `from`. The catalog
//! needs `registry:catalog:*`. `/v2/`, and paths that do not parse, need
//! valid credentials, even when anonymous pulls are configured (see
//! [`anonymous_allows`]), so an anonymous client learns nothing from them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use wharf_auth::{
    Access, Action, Actions, BasicChallenge, BearerChallenge, BearerError, Grant, Htpasswd,
    Identity, Issuer, LoginLimiter, Principal, RefreshToken, RepoPattern, Resource, Scope,
    Verifier,
};
use wharf_core::{now_unix, RegistryError, RepoName};
use wharf_meta::{MetaStore, RefreshRecord};
use wharf_tenants::validate::ROBOT_SEPARATOR;
use wharf_tenants::{verify_password, Credential, Directory, SubjectStatus};

use crate::caller::Caller;
use crate::error::error_response;
use crate::headers;
use crate::routes::Endpoint;

/// Where the token endpoint is served, on the registry port.
pub const TOKEN_PATH: &str = "/auth/token";
/// An `Authorization` header longer than this is refused before it is
/// decoded (a token is at most `wharf_auth::token::MAX_TOKEN_LEN`).
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;
/// How long a successful password check is remembered.
const LOGIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// The most remembered password checks.
const LOGIN_CACHE_MAX: usize = 4096;
/// Longest a password check waits for a bcrypt slot before `503`.
const BCRYPT_MAX_WAIT: Duration = Duration::from_secs(2);
/// The most password checks waiting for a bcrypt slot; more get `503`.
const BCRYPT_MAX_WAITERS: usize = 64;
/// The most refresh tokens one identity holds; a new one past it replaces
/// the oldest.
pub const REFRESH_PER_IDENTITY: usize = 20;
/// How long a refresh token lives.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest `POST /auth/token` form accepted.
pub const MAX_FORM_LEN: usize = 16 * 1024;
/// How long a `POST /auth/token` form may take to arrive, in full, before
/// the request holds an admission slot (a form is a few hundred bytes: a
/// client slower than this is trickling on purpose).
pub const FORM_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How the registry port authenticates requests.
#[derive(Clone, Default)]
pub enum Auth {
    /// Everyone may do everything (the default; for a registry on loopback
    /// or behind something that authenticates).
    #[default]
    None,
    /// HTTP Basic against an htpasswd file, with per-user grants.
    Htpasswd {
        users: Arc<Users>,
        challenge: BasicChallenge,
        /// Repositories anyone may pull without credentials.
        anonymous_pull: Arc<[RepoPattern]>,
    },
    /// Bearer tokens (the Docker token protocol), verified locally.
    Token {
        verifier: Arc<Verifier>,
        challenge: BearerChallenge,
        /// Repositories anyone may pull without a token.
        anonymous_pull: Arc<[RepoPattern]>,
        /// The accounts this node issues tokens for. With them, a token
        /// naming a subject is honoured only while it carries that
        /// subject's current identity and credential generation: the
        /// token of a deleted, re-created, downgraded, password-changed or
        /// revoked account is refused at once although its signature is
        /// good, and a subject nobody knows gets nothing. `None` trusts
        /// the issuer's word alone (tokens from an external issuer).
        identities: Option<Arc<Users>>,
    },
}

/// Who may log in and what each may do: the users of an htpasswd file
/// (the operator's own, with the grants file), and the tenant directory's
/// users and robot accounts (with their roles and grants), which come
/// first. Failed logins are rate limited per client and per account.
pub struct Users {
    htpasswd: Arc<Htpasswd>,
    /// `None` (no grants file): every htpasswd user may do everything.
    grants: Option<HashMap<String, Vec<Grant>>>,
    /// Tenants' users and robots, answered from memory.
    directory: Option<Directory>,
    /// Failed logins per client and per account.
    limiter: LoginLimiter,
    /// SHA-256 of `user:password` → when the successful check expires.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    /// bcrypt runs at once (one per core).
    bcrypt_slots: Semaphore,
    /// Checks waiting for a slot.
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({:?})", self.htpasswd)
    }
}

/// The grants file: `[[user]] name = "alice" grants = ["acme/*:pull,push"]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    user: Vec<UserGrants>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserGrants {
    name: String,
    #[serde(default)]
    grants: Vec<String>,
}

pub use wharf_auth::parse_grant;

/// Parses the TOML grants file.
pub fn parse_grants(text: &str) -> Result<HashMap<String, Vec<Grant>>, String> {
    let file: GrantsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for u in file.user {
        let grants = u
            .grants
            .iter()
            .map(|g| parse_grant(g))
            .collect::<Result<Vec<_>, _>>()?;
        if out.insert(u.name.clone(), grants).is_some() {
            return Err(format!("user {:?} appears twice", u.name));
        }
    }
    Ok(out)
}

/// Repository patterns, each entry possibly comma-separated.
pub fn parse_patterns<S: AsRef<str>>(list: &[S]) -> Result<Vec<RepoPattern>, String> {
    list.iter()
        .flat_map(|s| s.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("{e}")))
        .collect()
}

/// The outcome of a password check.
pub(crate) enum Login {
    Ok,
    Wrong,
}

impl Users {
    /// `grants`: `None` lets every user do everything.
    pub fn new(htpasswd: Htpasswd, grants: Option<HashMap<String, Vec<Grant>>>) -> Users {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Users {
            htpasswd: Arc::new(htpasswd),
            grants,
            directory: None,
            limiter: LoginLimiter::default(),
            cache: Mutex::new(HashMap::new()),
            bcrypt_slots: Semaphore::new(cores.clamp(1, 16)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Also accepts the tenant directory's users and robot accounts (they
    /// take precedence over an htpasswd user of the same name).
    pub fn with_directory(mut self, directory: Directory) -> Users {
        self.directory = Some(directory);
        self
    }

    /// Replaces the failed-login limits.
    pub fn with_limiter(mut self, limiter: LoginLimiter) -> Users {
        self.limiter = limiter;
        self
    }

    /// Users of the tenant directory only (no htpasswd file).
    pub fn directory_only(directory: Directory) -> Users {
        let empty = Htpasswd::parse("").expect("an empty htpasswd file parses");
        Users::new(empty, Some(HashMap::new())).with_directory(directory)
    }

    /// Ends the failed-login blocks of `user` on this node, from `client`
    /// only (with that address's own count) or from everywhere; how many
    /// entries were forgotten. Each node keeps its own counts, so a
    /// cluster's operator asks every node.
    pub fn unlock(&self, user: &str, client: Option<IpAddr>) -> usize {
        self.limiter.unlock(user, client)
    }

    /// The directory's view of `subject` now.
    fn status(&self, subject: &str) -> SubjectStatus {
        match &self.directory {
            Some(d) => d.subject_active(subject, now_unix()),
            None => SubjectStatus::NotInDirectory,
        }
    }

    /// Reads the htpasswd file and, if given, the grants file.
    pub fn load(htpasswd: &Path, grants: Option<&Path>) -> Result<Users, String> {
        let file = Htpasswd::load(htpasswd).map_err(|e| format!("{}: {e}", htpasswd.display()))?;
        let grants = match grants {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("reading {}: {e}", p.display()))?;
                Some(parse_grants(&text).map_err(|e| format!("{}: {e}", p.display()))?)
            }
            None => None,
        };
        Ok(Users::new(file, grants))
    }

    /// Whether `password` is `user`'s: from the cache, or one bcrypt on a
    /// blocking thread. `Err` (`503`) when too many checks are waiting,
    /// `429` when this client got `user`'s password wrong too often lately,
    /// or too many passwords overall (refused before any password is
    /// checked). A check remembered as right within the cache's lifetime is
    /// never refused by the limiter: a stranger's failures cannot stop the
    /// requests of a user who is already logged in.
    ///
    /// Failures are logged at `INFO` (`failed login`) and refusals by the
    /// limiter at `WARN` (`login refused: locked out`), each with the user
    /// name as sent (at most 64 characters), the client's address and
    /// `via` (where the password was presented); never the password.
    pub(crate) async fn login(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
        via: &'static str,
    ) -> Result<Login, RegistryError> {
        let key = self.cache_key(user, password);
        if self.status(user) != SubjectStatus::Inactive && self.remembered(&key) {
            return Ok(Login::Ok);
        }
        let now = Instant::now();
        let address = || client.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        if let Err(wait) = self.limiter.check(client, user, now) {
            tracing::warn!(user = %clip(user), client = %address(), via,
                retry_after_secs = wait.as_secs().max(1),
                "login refused: locked out after too many failed logins from this client \
                 (ends by itself after retry_after_secs; `wharf admin user unlock` ends it now)");
            return Err(RegistryError::TooManyRequests {
                reason: "too many failed logins from this address; try again later".into(),
                retry_after: wait.as_secs().max(1) as u32,
            });
        }
        let outcome = self.check_password(user, password, key).await?;
        match outcome {
            Login::Ok => self.limiter.succeeded(client, user, Instant::now()),
            Login::Wrong => {
                tracing::info!(user = %clip(user), client = %address(), via,
                    "failed login: wrong password, or no such active user or robot");
                self.limiter.failed(client, user, Instant::now())
            }
        }
        Ok(outcome)
    }

    /// The login cache's key: the stored hash is part of it, so once a
    /// password is changed a remembered check of the old one never matches.
    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let credential = self.directory.as_ref().and_then(|d| d.credential(user));
        let stored = match &credential {
            Some(Credential::User { bcrypt_hash, .. }) => bcrypt_hash.clone(),
            Some(Credential::Robot { secret_hash, .. }) => secret_hash.clone(),
            None => self.htpasswd.fingerprint(user).unwrap_or_default(),
        };
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update(b":");
        h.update(password.as_bytes());
        h.update(b":");
        h.update(stored.as_bytes());
        h.finalize().into()
    }

    /// Whether a check under `key` succeeded lately; a hit keeps it
    /// remembered for another [`LOGIN_CACHE_TTL`].
    fn remembered(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        let mut cache = self.cache.lock().expect("login cache");
        match cache.get_mut(key) {
            Some(exp) if *exp > now => {
                *exp = now + LOGIN_CACHE_TTL;
                true
            }
            _ => false,
        }
    }

    async fn check_password(
        &self,
        user: &str,
        password: &str,
        key: [u8; 32],
    ) -> Result<Login, RegistryError> {
        // A revoked or expired robot, a deleted user, or a user whose tenant
        // is gone, is refused; an unknown name too. Each costs the same as
        // a wrong password of an existing account of its kind, so the time
        // of the answer tells nothing about which names exist.
        let inactive = self.status(user) == SubjectStatus::Inactive;
        let credential = match inactive {
            true => None,
            false => self.directory.as_ref().and_then(|d| d.credential(user)),
        };
        let busy = || RegistryError::Unavailable {
            reason: "too many password checks in progress".into(),
            retry_after: 1,
        };
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= BCRYPT_MAX_WAITERS {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(busy());
        }
        let permit = tokio::time::timeout(BCRYPT_MAX_WAIT, self.bcrypt_slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = match permit {
            Ok(Ok(p)) => p,
            _ => return Err(busy()),
        };
        let file = self.htpasswd.clone();
        let (u, p) = (user.to_string(), password.to_string());
        let robot_form = user.contains(ROBOT_SEPARATOR);
        let ok = tokio::task::spawn_blocking(move || match credential {
            Some(c) => verify_password(&c, &p, now_unix()),
            None if robot_form => {
                // What checking a robot's secret costs, for nothing.
                let _ = wharf_auth::verify_secret(&p, &wharf_auth::hash_secret(""));
                false
            }
            None if inactive => {
                file.spend_one_check(&p);
                false
            }
            None => file.verify(&u, &p),
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Ok(Login::Wrong);
        }
        let mut cache = self.cache.lock().expect("login cache");
        if cache.len() >= LOGIN_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, exp| *exp > now);
            if cache.len() >= LOGIN_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now() + LOGIN_CACHE_TTL);
        Ok(Login::Ok)
    }

    /// What `user` may do on `resource`.
    pub(crate) fn actions_on(&self, user: &str, resource: &Resource) -> Actions {
        if let Some(grants) = self.directory_grants(user) {
            return Principal::new(user, grants).actions_on(resource);
        }
        match &self.grants {
            None => Actions::ALL,
            Some(grants) => Principal::new(user, grants.get(user).cloned().unwrap_or_default())
                .actions_on(resource),
        }
    }

    /// The identity `subject` stands for now: a directory user or robot
    /// (which take precedence), or an htpasswd user, whose generation is a
    /// fingerprint of its stored hash joined with the registry-wide session
    /// generation. `None` for anyone else, including a deleted or revoked
    /// account.
    pub fn identity(&self, subject: &str) -> Option<Identity> {
        let global = match &self.directory {
            Some(d) => match d.subject_active(subject, now_unix()) {
                SubjectStatus::Active => return d.identity_of(subject, now_unix()),
                SubjectStatus::Inactive => return None,
                SubjectStatus::NotInDirectory => d.revocation_generation(),
            },
            None => 0,
        };
        let fingerprint = self.htpasswd.fingerprint(subject)?;
        Some(Identity {
            id: format!("htpasswd:{subject}"),
            generation: format!("h{fingerprint}.{global}"),
        })
    }

    /// `user` as a principal for the token endpoint, bound to its current
    /// identity; `None` for a subject no source knows (it gets nothing,
    /// whatever it asks for). Without a grants file every htpasswd user
    /// may do everything, which repository patterns cannot say, so its
    /// grants are made from what is requested.
    fn principal(&self, user: &str, requested: &Scope) -> Option<Principal> {
        let identity = self.identity(user)?;
        if let Some(grants) = self.directory_grants(user) {
            return Some(Principal::new(user, grants).with_identity(identity));
        }
        let grants = match &self.grants {
            Some(g) => g.get(user).cloned().unwrap_or_default(),
            None => requested
                .entries()
                .iter()
                .filter_map(|a| match a.resource() {
                    Resource::Repository(r) => Some(Grant::new(
                        RepoPattern::Exact(r.clone()),
                        Actions::only(Action::Pull)
                            .with(Action::Push)
                            .with(Action::Delete),
                    )),
                    _ => None,
                })
                .collect(),
        };
        Some(Principal::new(user, grants).with_identity(identity))
    }

    /// Whether `tenant`'s write fence is up on this cell (a tenant move is
    /// in its last pass): its refresh tokens must then stay as they are.
    fn fenced(&self, tenant: &str) -> bool {
        !tenant.is_empty()
            && self
                .directory
                .as_ref()
                .is_some_and(|d| d.fence(tenant).is_some())
    }

    /// The tenant of a directory subject; empty for the operator's own.
    fn tenant_of(&self, subject: &str) -> String {
        self.directory
            .as_ref()
            .and_then(|d| d.credential(subject))
            .map(|c| c.tenant().to_string())
            .unwrap_or_default()
    }
}

/// At most 64 characters of a name a client sent, for a log line.
fn clip(name: &str) -> String {
    name.chars().take(64).collect()
}

impl Users {
    /// The grants of a directory user or robot; `None` when the directory
    /// does not know `user` (an htpasswd user) — an inactive one gets none.
    fn directory_grants(&self, user: &str) -> Option<Vec<Grant>> {
        let d = self.directory.as_ref()?;
        match d.subject_active(user, now_unix()) {
            SubjectStatus::NotInDirectory => None,
            SubjectStatus::Inactive => Some(Vec::new()),
            SubjectStatus::Active => Some(d.grants_of(user).unwrap_or_default()),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Valid credentials of anyone (or anonymous access, when configured).
    Credentials,
    /// Each of these actions on its resource.
    Access(Vec<(Resource, Action)>),
}

impl Need {
    /// The scope a client should ask a token for.
    fn scope(&self) -> Scope {
        match self {
            Need::Credentials => Scope::new(),
            Need::Access(list) => list
                .iter()
                .map(|(r, a)| Access::new(r.clone(), Actions::only(*a)))
                .collect(),
        }
    }
}

/// What `endpoint` called with `method` (and `uri`'s query) needs.
pub fn need(endpoint: Result<&Endpoint, &RegistryError>, method: &Method, uri: &Uri) -> Need {
    use Endpoint as E;
    let repo_actions = |repo: &RepoName, actions: &[Action]| -> Vec<(Resource, Action)> {
        actions
            .iter()
            .map(|a| (Resource::Repository(repo.clone()), *a))
            .collect()
    };
    let by_method = |repo: &RepoName| match *method {
        Method::GET | Method::HEAD => repo_actions(repo, &[Action::Pull]),
        Method::DELETE => repo_actions(repo, &[Action::Delete]),
        _ => repo_actions(repo, &[Action::Pull, Action::Push]),
    };
    let list = match endpoint {
        Err(_) | Ok(E::Base) => return Need::Credentials,
        Ok(E::Catalog) => vec![(Resource::catalog(), Action::All)],
        Ok(E::Tags(r) | E::Referrers(r, _) | E::Manifest(r, _) | E::Blob(r, _)) => by_method(r),
        Ok(E::Upload(r, _)) => repo_actions(r, &[Action::Pull, Action::Push]),
        Ok(E::Uploads(r)) => {
            let mut list = repo_actions(r, &[Action::Pull, Action::Push]);
            // The handler mounts only from a `from` that parses, so only such
            // a `from` needs checking: any other falls back to an upload.
            if headers::query(uri, "mount").is_some() {
                if let Some(from) =
                    headers::query(uri, "from").and_then(|f| f.parse::<RepoName>().ok())
                {
                    list.push((Resource::Repository(from), Action::Pull));
                }
            }
            list
        }
    };
    Need::Access(list)
}

/// Whether anonymous access configured as `patterns` covers `need`.
fn anonymous_allows(patterns: &[RepoPattern], need: &Need) -> bool {
    match need {
        // Never anonymous, even with anonymous pulls configured: clients
        // (Docker, containers/image) learn from `GET /v2/` whether and how
        // to authenticate, and a `200` there makes them send no credentials
        // for the pushes that follow. An anonymous Docker pull in token mode
        // works through an anonymous token from /auth/token instead.
        Need::Credentials => false,
        Need::Access(list) => list
            .iter()
            .all(|(r, a)| anonymous_may_pull(patterns, r, *a)),
    }
}

fn anonymous_may_pull(patterns: &[RepoPattern], resource: &Resource, action: Action) -> bool {
    match resource {
        Resource::Repository(repo) => {
            action == Action::Pull && patterns.iter().any(|p| p.matches(repo))
        }
        _ => false,
    }
}

/// The `Authorization` header's credentials, as [`presented`] reads them.
pub enum Presented<'a> {
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(&'a str),
    /// Present but unreadable (not ASCII, not base64, no `:`).
    Malformed,
}

/// The credentials of `headers` (`Basic` or `Bearer`, schemes matched
/// without regard to case); `Err` when the header is longer than
/// [`MAX_AUTHORIZATION_LEN`]. Public for the fuzz targets.
pub fn presented(headers: &HeaderMap) -> Result<Presented<'_>, RegistryError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Presented::None);
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(RegistryError::InvalidParameters(format!(
            "the Authorization header is longer than {MAX_AUTHORIZATION_LEN} bytes"
        )));
    }
    let Ok(value) = value.to_str() else {
        return Ok(Presented::Malformed);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Presented::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        return Ok(match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((user, password)) => Presented::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => Presented::Malformed,
        });
    }
    Ok(Presented::Malformed)
}

/// `401 UNAUTHORIZED` with `challenge` as `WWW-Authenticate`.
fn unauthorized(challenge: String, head: bool) -> Response {
    let mut resp = error_response(&RegistryError::Unauthorized, head);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Checks that the request with `headers` may do what it `need`s: who
/// sent it (as verified: the token's subject, the user whose password was
/// checked; no subject for anonymous access or with auth off), or the
/// refusal to send.
pub async fn check(
    auth: &Auth,
    need: &Need,
    headers: &HeaderMap,
    head: bool,
    client: Option<IpAddr>,
) -> Result<Caller, Response> {
    let creds = match auth {
        Auth::None => return Ok(Caller::default()),
        _ => presented(headers).map_err(|e| error_response(&e, head))?,
    };
    match auth {
        Auth::None => Ok(Caller::default()),
        Auth::Token {
            verifier,
            challenge,
            anonymous_pull,
            identities,
        } => {
            let token = match creds {
                Presented::Bearer(token) => token,
                // Basic or nothing: a token must be fetched from the realm.
                _ if anonymous_allows(anonymous_pull, need) => return Ok(Caller::default()),
                _ => {
                    return Err(unauthorized(
                        challenge.header_value(&need.scope(), None),
                        head,
                    ))
                }
            };
            let verified = match verifier.verify(token) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(reason = %e, "bearer token refused");
                    return Err(unauthorized(
                        challenge.header_value(&need.scope(), Some(BearerError::InvalidToken)),
                        head,
                    ));
                }
            };
            let stale = identities
                .as_ref()
                .is_some_and(|users| !token_identity_is_current(users, verified.claims()));
            if stale {
                tracing::debug!(
                    subject = verified.subject(),
                    "token refused: its account was changed, revoked or removed since"
                );
                return Err(unauthorized(
                    challenge.header_value(&need.scope(), Some(BearerError::InvalidToken)),
                    head,
                ));
            }
            let allowed = match need {
                Need::Credentials => true,
                Need::Access(list) => list.iter().all(|(r, a)| {
                    verified.claims().access.covers(r, *a)
                        || anonymous_may_pull(anonymous_pull, r, *a)
                }),
            };
            if allowed {
                let subject = verified.subject();
                Ok(Caller {
                    subject: (!subject.is_empty()).then(|| subject.to_string()),
                })
            } else {
                tracing::debug!(subject = verified.subject(), "token lacks the scope needed");
                Err(unauthorized(
                    challenge.header_value(&need.scope(), Some(BearerError::InsufficientScope)),
                    head,
                ))
            }
        }
        Auth::Htpasswd {
            users,
            challenge,
            anonymous_pull,
        } => {
            let (user, password) = match creds {
                Presented::Basic { user, password } => (user, password),
                Presented::None if anonymous_allows(anonymous_pull, need) => {
                    return Ok(Caller::default())
                }
                _ => return Err(unauthorized(challenge.header_value(), head)),
            };
            match users.login(&user, &password, client, "basic").await {
                Err(busy) => return Err(error_response(&busy, head)),
                Ok(Login::Wrong) => {
                    tracing::debug!(user = %user, "wrong password or unknown user");
                    return Err(unauthorized(challenge.header_value(), head));
                }
                Ok(Login::Ok) => {}
            }
            let allowed = match need {
                Need::Credentials => true,
                Need::Access(list) => list.iter().all(|(r, a)| {
                    users.actions_on(&user, r).covers(*a)
                        || anonymous_may_pull(anonymous_pull, r, *a)
                }),
            };
            if allowed {
                Ok(Caller {
                    subject: Some(user),
                })
            } else {
                // Known user, not allowed: asking again cannot help, so 403
                // (a bearer client instead gets 401 to fetch a wider token).
                Err(error_response(
                    &RegistryError::Denied(format!("{user} may not {}", need.scope())),
                    head,
                ))
            }
        }
    }
}

/// Whether the token with `claims` carries the current identity of its
/// subject. Anonymous tokens (subject `""`) carry only what anonymous
/// access allows, and need none.
fn token_identity_is_current(users: &Users, claims: &wharf_auth::Claims) -> bool {
    if claims.sub.is_empty() {
        return true;
    }
    let (Some(uid), Some(generation)) = (&claims.uid, &claims.gen) else {
        return false;
    };
    users
        .identity(&claims.sub)
        .is_some_and(|now| now.id == *uid && now.generation == *generation)
}

/// The token endpoint: checks Basic credentials (or a refresh token) and
/// signs a token for what was asked and is granted.
///
/// `GET` takes Basic credentials (or none: an anonymous token carrying only
/// the anonymous pulls); `POST` is the OAuth2 form (`grant_type=password`
/// or `refresh_token`). Refresh tokens, issued only for `POST` with
/// `access_type=offline`, are kept hashed in the metadata store, so every
/// node of a cluster honours and revokes them alike. Each is bound to the
/// identity and credential generation it was issued for (a password or
/// role change, a deletion or a revocation ends it), used once (a refresh
/// answers with a new one and the old one is gone), and an identity holds
/// at most [`REFRESH_PER_IDENTITY`]. While the tenant's write fence is up
/// (a move's last pass), its refresh tokens are left as they are: a refresh
/// answers with the same token, a password login with none.
pub struct TokenService {
    users: Arc<Users>,
    issuer: Issuer,
    /// The service tokens are for (the issuer signs for no other).
    service: String,
    challenge: BasicChallenge,
    anonymous_pull: Arc<[RepoPattern]>,
    /// Where refresh tokens are kept.
    store: Arc<dyn MetaStore>,
}

impl TokenService {
    pub fn new(
        users: Arc<Users>,
        issuer: Issuer,
        service: impl Into<String>,
        challenge: BasicChallenge,
        anonymous_pull: Arc<[RepoPattern]>,
        store: Arc<dyn MetaStore>,
    ) -> TokenService {
        TokenService {
            users,
            issuer,
            service: service.into(),
            challenge,
            anonymous_pull,
            store,
        }
    }

    fn anonymous(&self) -> Principal {
        let grants = self
            .anonymous_pull
            .iter()
            .map(|p| Grant::new(p.clone(), Actions::only(Action::Pull)))
            .collect();
        Principal::new("", grants)
    }

    /// Keeps a new refresh token for `principal` (its hash, in the
    /// metadata store) and returns its secret.
    async fn new_refresh(
        &self,
        principal: &Principal,
        service: &str,
    ) -> Result<String, RegistryError> {
        let identity = principal
            .identity()
            .ok_or_else(|| RegistryError::Internal("a principal without identity".into()))?;
        let token = RefreshToken::generate().map_err(|e| RegistryError::Internal(e.to_string()))?;
        let now = now_unix();
        let record = RefreshRecord {
            hash: token.hash(),
            subject: principal.subject().to_string(),
            identity: identity.id.clone(),
            generation: identity.generation.clone(),
            tenant: self.users.tenant_of(principal.subject()),
            service: service.to_string(),
            created_unix: now,
            expires_unix: now.saturating_add(REFRESH_LIFETIME.as_secs()),
        };
        self.store
            .refresh_put(&record, REFRESH_PER_IDENTITY, now)
            .await
            .map_err(wharf_registry::meta_err)?;
        Ok(token.secret().to_string())
    }

    /// `GET` or `POST /auth/token`.
    pub async fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
        client: Option<IpAddr>,
    ) -> crate::Result {
        match *method {
            Method::GET => self.get_token(uri, headers, client).await,
            Method::POST => self.post_token(body, client).await,
            _ => Err(RegistryError::MethodNotAllowed(format!(
                "{method} /auth/token"
            ))),
        }
    }

    /// Verifies `user`'s password; `Err` is the response to send.
    async fn login(&self, user: &str, password: &str, client: Option<IpAddr>) -> crate::Result<()> {
        match self
            .users
            .login(user, password, client, "token endpoint")
            .await?
        {
            Login::Ok => Ok(()),
            Login::Wrong => {
                tracing::debug!(user = %user, "token endpoint: wrong password or unknown user");
                Err(RegistryError::Unauthorized)
            }
        }
    }

    async fn get_token(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> crate::Result {
        let query = uri.query().unwrap_or("");
        let scope = parse_scope(headers::form_values(query, "scope"))?;
        let service = service_param(headers::form_values(query, "service").next(), &self.service);
        let principal = match presented(headers)? {
            Presented::Basic { user, password } => {
                self.login(&user, &password, client).await?;
                self.users
                    .principal(&user, &scope)
                    .ok_or(RegistryError::Unauthorized)?
            }
            Presented::None => self.anonymous(),
            Presented::Bearer(_) | Presented::Malformed => return Err(RegistryError::Unauthorized),
        };
        // `offline_token=true` (which `docker login` sends) gets no refresh
        // token: Docker would keep it instead of the password and use it on
        // every later login, and it lives only in this node's memory, so a
        // restart or another node behind a load balancer would log the
        // client out. Without one, Docker keeps using Basic credentials.
        self.respond(&principal, &scope, &service, None, false)
    }

    async fn post_token(&self, body: Body, client: Option<IpAddr>) -> crate::Result {
        let bytes = read_form(body).await?;
        let form = std::str::from_utf8(&bytes)
            .map_err(|_| RegistryError::InvalidParameters("the form is not UTF-8".into()))?;
        let param = |k| headers::form_values(form, k).next();
        let scope = parse_scope(headers::form_values(form, "scope"))?;
        let service = service_param(param("service"), &self.service);
        match param("grant_type").as_deref() {
            Some("password") => {
                let user = param("username").unwrap_or_default();
                let password = param("password").unwrap_or_default();
                self.login(&user, &password, client).await?;
                let principal = self
                    .users
                    .principal(&user, &scope)
                    .ok_or(RegistryError::Unauthorized)?;
                // The issuer refuses other services; check before storing.
                self.issuer
                    .check_service(&service)
                    .map_err(|e| RegistryError::InvalidParameters(e.to_string()))?;
                // Under a move's fence the tenant's refresh tokens are
                // copied as they are: none is added (OAuth lets a server
                // answer without one; the client keeps using its password).
                let offline = param("access_type").as_deref() == Some("offline");
                let refresh = if offline && !self.users.fenced(&self.users.tenant_of(&user)) {
                    Some(self.new_refresh(&principal, &service).await?)
                } else {
                    None
                };
                self.respond(&principal, &scope, &service, refresh, true)
            }
            Some("refresh_token") => {
                let secret = param("refresh_token").unwrap_or_default();
                // Taken out whatever follows: a refresh token is used once.
                let record = self
                    .store
                    .refresh_take(&wharf_auth::hash_secret(&secret))
                    .await
                    .map_err(wharf_registry::meta_err)?
                    .ok_or(RegistryError::Unauthorized)?;
                let current = self.users.identity(&record.subject);
                let honoured = record.expires_unix > now_unix()
                    && record.service == service
                    && current.is_some_and(|i| {
                        i.id == record.identity && i.generation == record.generation
                    });
                if !honoured {
                    tracing::info!(subject = %clip(&record.subject), client = ?client,
                        "refresh token refused: expired, for another service, or its account changed");
                    return Err(RegistryError::Unauthorized);
                }
                let principal = self
                    .users
                    .principal(&record.subject, &scope)
                    .ok_or(RegistryError::Unauthorized)?;
                // Under a move's fence the token is not rotated: it is put
                // back as it was and answered again, so the copy the move
                // makes of the tenant's refresh tokens stays exact.
                let next = if self.users.fenced(&record.tenant) {
                    self.store
                        .refresh_put(&record, REFRESH_PER_IDENTITY, now_unix())
                        .await
                        .map_err(wharf_registry::meta_err)?;
                    secret.into_owned()
                } else {
                    self.new_refresh(&principal, &service).await?
                };
                self.respond(&principal, &scope, &service, Some(next), true)
            }
            _ => Err(RegistryError::InvalidParameters(
                "grant_type must be password or refresh_token".into(),
            )),
        }
    }

    fn respond(
        &self,
        principal: &Principal,
        scope: &Scope,
        service: &str,
        refresh: Option<String>,
        oauth: bool,
    ) -> crate::Result {
        let issued = self
            .issuer
            .issue(principal, scope, service)
            .map_err(|e| RegistryError::InvalidParameters(e.to_string()))?;
        tracing::debug!(
            subject = principal.subject(),
            jti = %issued.jti,
            access = %issued.access,
            "token issued"
        );
        let mut body = serde_json::json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": rfc3339(issued.issued_at),
        });
        if oauth {
            body["scope"] = issued.access.to_string().into();
        }
        if let Some(r) = refresh {
            body["refresh_token"] = r.into();
        }
        let text = body.to_string();
        let mut resp = Response::new(Body::from(text));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let subject = principal.subject();
        resp.extensions_mut().insert(Caller {
            subject: (!subject.is_empty()).then(|| subject.to_string()),
        });
        Ok(resp)
    }

    /// `401` for the token endpoint, with its Basic challenge.
    pub fn unauthorized(&self, head: bool) -> Response {
        unauthorized(self.challenge.header_value(), head)
    }
}

/// Reads a token form whole, at most [`MAX_FORM_LEN`] bytes within
/// [`FORM_READ_TIMEOUT`].
async fn read_form(body: Body) -> crate::Result<bytes::Bytes> {
    match tokio::time::timeout(FORM_READ_TIMEOUT, axum::body::to_bytes(body, MAX_FORM_LEN)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(RegistryError::InvalidParameters(format!(
            "the form is longer than {MAX_FORM_LEN} bytes, or was cut short"
        ))),
        Err(_) => Err(RegistryError::InvalidParameters(format!(
            "the form did not arrive within {} s",
            FORM_READ_TIMEOUT.as_secs()
        ))),
    }
}

/// `POST /auth/token`'s body read before admission: an unauthenticated
/// client trickling a form holds a connection, never one of the node's
/// request slots. Other requests' bodies are left alone.
pub async fn preread_token_form(method: &Method, body: Body) -> crate::Result<Body> {
    if *method != Method::POST {
        return Ok(body);
    }
    read_form(body).await.map(Body::from)
}

fn parse_scope<'a>(
    params: impl Iterator<Item = std::borrow::Cow<'a, str>>,
) -> crate::Result<Scope> {
    let params: Vec<_> = params.collect();
    Scope::parse_all(params.iter().map(|p| p.as_ref()))
        .map_err(|e| RegistryError::InvalidParameters(e.to_string()))
}

/// The `service` asked for; this endpoint's own when absent (the issuer
/// refuses any other).
fn service_param(given: Option<std::borrow::Cow<'_, str>>, own: &str) -> String {
    given.map_or_else(|| own.to_string(), |s| s.into_owned())
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-11-25T11:07:59Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> Resource {
        Resource::Repository(s.parse().unwrap())
    }

    fn need_of(method: Method, path_and_query: &str) -> Need {
        let uri: Uri = path_and_query.parse().unwrap();
        let ep = crate::routes::parse(uri.path());
        need(ep.as_ref(), &method, &uri)
    }

    #[test]
    fn needs_by_method_and_endpoint() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(need_of(Method::GET, "/v2/"), Need::Credentials);
        assert_eq!(need_of(Method::GET, "/v2/A/tags/list"), Need::Credentials);
        assert_eq!(
            need_of(Method::GET, "/v2/_catalog"),
            Need::Access(vec![(Resource::catalog(), Action::All)])
        );
        assert_eq!(
            need_of(Method::HEAD, "/v2/acme/app/manifests/v1"),
            Need::Access(vec![(repo("acme/app"), Action::Pull)])
        );
        assert_eq!(
            need_of(Method::PUT, "/v2/acme/app/manifests/v1"),
            Need::Access(vec![
                (repo("acme/app"), Action::Pull),
                (repo("acme/app"), Action::Push)
            ])
        );
        assert_eq!(
            need_of(Method::DELETE, &format!("/v2/acme/app/blobs/{d}")),
            Need::Access(vec![(repo("acme/app"), Action::Delete)])
        );
        assert_eq!(
            need_of(Method::GET, "/v2/acme/app/blobs/uploads/abc"),
            Need::Access(vec![
                (repo("acme/app"), Action::Pull),
                (repo("acme/app"), Action::Push)
            ])
        );
        assert_eq!(
            need_of(
                Method::POST,
                &format!("/v2/acme/app/blobs/uploads/?mount={d}&from=globex/base")
            ),
            Need::Access(vec![
                (repo("acme/app"), Action::Pull),
                (repo("acme/app"), Action::Push),
                (repo("globex/base"), Action::Pull)
            ])
        );
    }

    #[test]
    fn anonymous_pull_covers_only_pulls_of_matching_repositories() {
        let p = parse_patterns(&["public/*,acme/app"]).unwrap();
        let pull = |r: &str| Need::Access(vec![(repo(r), Action::Pull)]);
        assert!(anonymous_allows(&p, &pull("public/x")));
        assert!(anonymous_allows(&p, &pull("acme/app")));
        assert!(!anonymous_allows(&p, &pull("acme/other")));
        assert!(!anonymous_allows(&p, &pull("publicx/y")));
        assert!(!anonymous_allows(
            &p,
            &Need::Access(vec![(repo("public/x"), Action::Push)])
        ));
        assert!(!anonymous_allows(&p, &Need::Credentials));
    }

    #[test]
    fn grants_file_parses_and_refuses_nonsense() {
        let g = parse_grants(
            r#"
[[user]]
name = "alice"
grants = ["acme/*:pull,push", "public/app:pull"]
"#,
        )
        .unwrap();
        assert_eq!(g["alice"].len(), 2);
        assert!(g["alice"][0].actions.covers(Action::Push));
        assert!(parse_grant("acme/*:fly").is_err());
        assert!(parse_grant("ACME/*:pull").is_err());
        assert!(parse_grant("acme").is_err());
        assert!(parse_grants("[[user]]\nname = \"a\"\n[[user]]\nname = \"a\"\n").is_err());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
