//! [`Directory`]: the tenant directory as one node holds it.
//!
//! Owns: the current snapshot (swapped whole, so a reader sees one
//! version and never waits on I/O), loading it from the metadata store,
//! refreshing it in the background, the mutations the admin API makes
//! (each written through the store, then reloaded), and the lookups the
//! request path makes from memory.
//!
//! Must never: call the store on the request path (every lookup reads the
//! snapshot); drop the snapshot because the store failed (a metadata outage
//! must not log anyone out); run bcrypt on the async runtime; or hand out a
//! robot secret twice (only its hash is stored).
//!
//! Consistency: a node's mutations are serialized, and each one checks its
//! rules (names free, hostname unique, tenant present) against a snapshot
//! read from the store just before writing. Names are claimed with
//! create-only writes, so two nodes can never both create tenant, user or
//! robot `x`; the other rules are checked, not enforced by the store, so
//! two admins racing on two nodes could in theory both claim one hostname
//! (the snapshot then resolves it the same way everywhere, see
//! `Snapshot::build`).

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio::task::JoinHandle;
use wharf_auth::{hash_secret, Action, Actions, Grant, Identity, RepoPattern};
use wharf_core::{
    now_unix, ImmutableTagRule, ImmutableTagSource, Quota, QuotaSource, RepoName, Tag,
};
use wharf_meta::{MetaStore, RefreshScope};
use wharf_retention::CompiledPolicy;

use crate::error::DirectoryError;
use crate::immutable;
use crate::model::{
    DeletedTenant, NewTenant, Retired, Revocation, Revoked, Robot, RobotView, RoleBinding,
    RoleSpec, Tenant, TenantPatch, Usage, User, UserView, KIND_DELETED_TENANT, KIND_RETIRED,
    KIND_REVOCATION, KIND_ROBOT, KIND_TENANT, KIND_USER, REVOCATION_ALL,
};
use crate::snapshot::{Credential, Snapshot, SubjectStatus};
use crate::validate::{self, clip, pattern_in_tenant};

mod moving;
mod notify;

pub use moving::{AccountsImported, TenantExport};

/// How long a deleted user's name is remembered: longer than the longest
/// token lifetime (an hour), so no token of a deleted user outlives it.
const RETIRED_KEEP_SECS: u64 = 2 * 3600;

/// How long a deleted tenant's name stays untaken: longer than any node
/// serves what it cached of the old tenant (tags, blob links and manifests
/// for 2 s by default, the directory refresh) and lets in-flight pushes of
/// the old tenant's users land, so the purge at re-creation catches them.
pub const TENANT_NAME_SETTLE: Duration = Duration::from_secs(5);

/// The node caches' lifetime the settle time outlasts, for messages.
const CACHE_SECS: u64 = 2;

/// bcrypt cost of stored passwords (about 50 ms a check on these machines).
pub const BCRYPT_COST: u32 = 10;
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_LEN: usize = 8;
/// The longest password accepted, in bytes: bcrypt reads at most 72 bytes
/// including a terminating NUL, and a longer password would be silently
/// cut, so it is refused instead.
pub const MAX_PASSWORD_LEN: usize = 71;
/// Robot secrets start with this, so secret scanners can recognise them.
pub const ROBOT_SECRET_PREFIX: &str = "wharf_robot_";
/// The most role bindings of one user.
pub const MAX_ROLE_BINDINGS: usize = 32;
/// The most grants of one robot.
pub const MAX_ROBOT_GRANTS: usize = 32;

/// A robot's secret, shown once when the robot is created. `Debug` never
/// prints it, and it is deliberately not `Serialize`: the admin API copies
/// it into its one response with [`RobotSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct RobotSecret(String);

impl RobotSecret {
    /// `wharf_robot_` and 256 random bits in base64url.
    fn generate() -> Result<RobotSecret, DirectoryError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            tracing::error!(error = %e, "the operating system's random generator failed");
            DirectoryError::Unavailable("no randomness available for a robot secret".into())
        })?;
        Ok(RobotSecret(format!(
            "{ROBOT_SECRET_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A new account id: 128 random bits, so no two accounts ever share one.
fn new_id(prefix: &str) -> Result<String, DirectoryError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "the operating system's random generator failed");
        DirectoryError::Unavailable("no randomness available for an account id".into())
    })?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

impl std::fmt::Debug for RobotSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RobotSecret(<redacted>)")
    }
}

/// The tenant directory of one node. Cloning is cheap: clones share one
/// snapshot and one store.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn MetaStore>,
    /// Readers clone the `Arc` under a lock held for nanoseconds; loads
    /// build a new snapshot off to the side and swap it in.
    current: RwLock<Arc<Snapshot>>,
    /// One load at a time, so snapshots are installed in the order they
    /// were read and a slow old read never replaces a newer one.
    loads: tokio::sync::Mutex<()>,
    /// One mutation at a time on this node (check, write, reload).
    writes: tokio::sync::Mutex<()>,
    /// When (Unix ms, this node's clock, taken before the read) the store
    /// was last seen to hold exactly the snapshot: a load, or a version
    /// check that found nothing new. A leased fence whose end is before
    /// this has lapsed for sure; one whose end is after may have been
    /// renewed since, so it stands until a later read says otherwise.
    confirmed_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.snap();
        f.debug_struct("Directory")
            .field("version", &snap.version)
            .field("tenants", &snap.tenants.len())
            .field("users", &snap.users.len())
            .field("robots", &snap.robots.len())
            .finish()
    }
}

impl Directory {
    /// An empty directory over `store`; call [`Directory::load`] before
    /// serving (or use [`Directory::open`]).
    pub fn new(store: Arc<dyn MetaStore>) -> Directory {
        Directory {
            inner: Arc::new(Inner {
                store,
                current: RwLock::new(Arc::new(Snapshot::default())),
                loads: tokio::sync::Mutex::new(()),
                writes: tokio::sync::Mutex::new(()),
                confirmed_ms: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// [`Directory::new`], then a first [`Directory::load`].
    pub async fn open(store: Arc<dyn MetaStore>) -> Result<Directory, DirectoryError> {
        let dir = Directory::new(store);
        dir.load().await?;
        Ok(dir)
    }

    fn snap(&self) -> Arc<Snapshot> {
        let guard = self
            .inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&guard)
    }

    /// The directory version the snapshot was read at (0 before any load).
    pub fn version(&self) -> u64 {
        self.snap().version
    }

    /// Reads the whole directory and swaps it in. On error the current
    /// snapshot stays.
    pub async fn load(&self) -> Result<(), DirectoryError> {
        self.fresh().await.map(drop)
    }

    /// Loads, and returns what was loaded.
    async fn fresh(&self) -> Result<Arc<Snapshot>, DirectoryError> {
        let _one_at_a_time = self.inner.loads.lock().await;
        let asked = now_unix_ms();
        let records = self.inner.store.directory_snapshot().await?;
        let snap = Arc::new(Snapshot::build(records));
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::clone(&snap);
        drop(current);
        self.confirmed(asked);
        Ok(snap)
    }

    fn confirmed(&self, asked_ms: u64) {
        self.inner
            .confirmed_ms
            .fetch_max(asked_ms, std::sync::atomic::Ordering::AcqRel);
    }

    /// When the store was last seen to hold exactly this snapshot (Unix
    /// ms by this node's clock; 0 before any load).
    pub fn confirmed_unix_ms(&self) -> u64 {
        self.inner
            .confirmed_ms
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Loads only if the store's directory version differs from the
    /// snapshot's; `true` if it loaded.
    pub async fn refresh(&self) -> Result<bool, DirectoryError> {
        let asked = now_unix_ms();
        let version = self.inner.store.directory_version().await?;
        if version == self.version() {
            self.confirmed(asked);
            return Ok(false);
        }
        self.load().await?;
        Ok(true)
    }

    /// Refreshes every `every` (the first time at once) until every clone
    /// of this directory is dropped or the task is aborted. A failed or
    /// slow refresh (longer than `every`, at least a second) keeps the
    /// current snapshot; the first failure is logged as a warning, repeats
    /// at debug, and the recovery at info.
    pub fn spawn_refresher(&self, every: Duration) -> JoinHandle<()> {
        let every = every.max(Duration::from_millis(10));
        let deadline = every.max(Duration::from_secs(1));
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let dir = Directory { inner };
                let outcome = match tokio::time::timeout(deadline, dir.refresh()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("refresh took longer than {deadline:?}")),
                };
                match outcome {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(version = dir.version(), "tenant directory refreshes again");
                    }
                    Ok(()) => {}
                    Err(error) if failing => {
                        tracing::debug!(%error, "tenant directory refresh failed again")
                    }
                    Err(error) => {
                        failing = true;
                        tracing::warn!(%error, version = dir.version(),
                            "tenant directory refresh failed; serving the last snapshot");
                    }
                }
            }
        })
    }

    // ---- request path: from memory only ----

    /// What to check `user`'s password against (`tenant+name` is a robot).
    pub fn credential(&self, user: &str) -> Option<Credential> {
        self.snap().credential(user)
    }

    /// What `subject` may do now: a user's roles as grants, a robot's
    /// grants; `None` for an unknown subject or a revoked or expired robot.
    pub fn grants_of(&self, subject: &str) -> Option<Vec<Grant>> {
        self.grants_of_at(subject, now_unix())
    }

    /// [`Directory::grants_of`] at `now_unix`.
    pub fn grants_of_at(&self, subject: &str, now_unix: u64) -> Option<Vec<Grant>> {
        self.snap().grants_of(subject, now_unix)
    }

    /// Whether a token naming `subject` may still be honoured.
    pub fn subject_active(&self, subject: &str, now_unix: u64) -> SubjectStatus {
        self.snap().subject_status(subject, now_unix)
    }

    /// The identity `subject` stands for now (`None`: unknown, deleted,
    /// revoked, expired, or its tenant is gone). A token is honoured only
    /// while the identity it carries is this one.
    pub fn identity_of(&self, subject: &str, now_unix: u64) -> Option<Identity> {
        self.snap().identity_of(subject, now_unix)
    }

    /// The registry-wide session generation, which the operator's own
    /// (htpasswd) accounts join into theirs.
    pub fn revocation_generation(&self) -> u64 {
        self.snap().revocation
    }

    /// The tenant whose hostname `host` (a `Host` header value) is.
    /// Case-insensitive, a trailing dot ignored. A hostname configured
    /// without a port matches the host with any port or none; one
    /// configured with a port matches only that port.
    pub fn tenant_for_host(&self, host: &str) -> Option<String> {
        self.snap().tenant_for_host(host).map(str::to_string)
    }

    /// The share of a node's request slots `namespace`'s tenant may hold.
    pub fn concurrency_share(&self, namespace: &str) -> Option<f64> {
        self.snap().tenants.get(namespace)?.concurrency_share
    }

    /// Whether `name` is a tenant of the snapshot.
    pub fn knows_tenant(&self, name: &str) -> bool {
        self.snap().tenants.contains_key(name)
    }

    // ---- admin reads: from memory ----

    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        self.snap().tenants.get(name).cloned()
    }

    /// `tenant`'s retention policy, compiled with the snapshot; `None` if
    /// it has none (or is unknown).
    pub fn retention_policy(&self, tenant: &str) -> Option<Arc<CompiledPolicy>> {
        self.snap().retention.get(tenant).cloned()
    }

    /// Every tenant with a retention policy, by name.
    pub fn retention_policies(&self) -> Vec<(String, Arc<CompiledPolicy>)> {
        let snap = self.snap();
        let mut all: Vec<(String, Arc<CompiledPolicy>)> = snap
            .retention
            .iter()
            .map(|(t, p)| (t.clone(), Arc::clone(p)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut all: Vec<Tenant> = self.snap().tenants.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The users of `tenant`, by name.
    pub fn users(&self, tenant: &str) -> Result<Vec<UserView>, DirectoryError> {
        let snap = self.snap();
        require_tenant(&snap, tenant)?;
        let mut all: Vec<UserView> = snap
            .users
            .values()
            .filter(|u| u.tenant == tenant)
            .map(User::view)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The robots of `tenant` (revoked ones included), by name.
    pub fn robots(&self, tenant: &str) -> Result<Vec<RobotView>, DirectoryError> {
        let snap = self.snap();
        require_tenant(&snap, tenant)?;
        let mut all: Vec<RobotView> = snap
            .robots
            .values()
            .filter(|r| r.tenant == tenant)
            .map(Robot::view)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// What `tenant` holds (asks the store) and its quota.
    pub async fn usage(&self, tenant: &str) -> Result<Usage, DirectoryError> {
        let quota = require_tenant(&self.snap(), tenant)?.quota;
        let used = self.inner.store.namespace_usage(tenant, None).await?;
        let uploads = self.inner.store.upload_usage(tenant, None).await?;
        Ok(Usage {
            tenant: tenant.to_string(),
            bytes: used.bytes,
            repositories: used.repositories,
            upload_sessions: uploads.sessions,
            upload_bytes: uploads.bytes,
            quota,
        })
    }

    // ---- mutations: through the store, then reloaded ----

    pub async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, DirectoryError> {
        let tenant = Tenant {
            name: new.name,
            hostname: new.hostname,
            quota: new.quota,
            concurrency_share: new.concurrency_share,
            created_unix: now_unix(),
            sessions_generation: 0,
            immutable_tags: new.immutable_tags,
            retention: new.retention,
            fence: None,
        };
        check_tenant(&tenant)?;
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        if snap.tenants.contains_key(&tenant.name) {
            return Err(DirectoryError::Conflict(format!(
                "tenant {} exists",
                tenant.name
            )));
        }
        check_hostname_free(&snap, &tenant)?;
        self.clear_old_name(&snap, &tenant.name).await?;
        if !self.put(KIND_TENANT, &tenant.name, &tenant, true).await? {
            return Err(DirectoryError::Conflict(format!(
                "tenant {} exists",
                tenant.name
            )));
        }
        self.load().await?;
        Ok(tenant)
    }

    /// Before tenant `name` is created: purges whatever a deleted tenant of
    /// the name left (an interrupted purge, a push a node let through from
    /// its caches; purging again is harmless), refuses while the deletion
    /// is younger than [`TENANT_NAME_SETTLE`], and removes records an
    /// interrupted deletion left, so they do not come back to life in the
    /// new tenant.
    async fn clear_old_name(&self, snap: &Snapshot, name: &str) -> Result<(), DirectoryError> {
        if let Some(deleted_ms) = snap.deleted_tenants.get(name) {
            // Whatever the old tenant left (an interrupted purge, a push a
            // node let through from its caches) goes first; purging again
            // is harmless.
            self.inner.store.purge_namespace(name).await?;
            let age_ms = now_unix_ms().saturating_sub(*deleted_ms);
            let settle_ms = TENANT_NAME_SETTLE.as_millis() as u64;
            if age_ms < settle_ms {
                return Err(DirectoryError::Conflict(format!(
                    "tenant {} was deleted {} s ago; its name can be taken again in {} s, \
                     once every node's caches ({CACHE_SECS} s) have dropped its content",
                    name,
                    age_ms / 1000,
                    (settle_ms - age_ms).div_ceil(1000),
                )));
            }
            self.inner
                .store
                .directory_delete(KIND_DELETED_TENANT, name)
                .await?;
        }
        // Records an interrupted deletion left must not come back to life
        // in a new tenant of the same name.
        for orphan in snap.orphans.iter().filter(|o| o.tenant == name) {
            self.inner
                .store
                .directory_delete(orphan.kind, &orphan.key)
                .await?;
        }
        Ok(())
    }

    pub async fn update_tenant(
        &self,
        name: &str,
        patch: &TenantPatch,
    ) -> Result<Tenant, DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        let mut tenant = require_tenant(&snap, name)?.clone();
        patch.apply(&mut tenant);
        check_tenant(&tenant)?;
        check_hostname_free(&snap, &tenant)?;
        self.put(KIND_TENANT, name, &tenant, false).await?;
        self.load().await?;
        Ok(tenant)
    }

    /// Deletes `name`, everything its namespace holds in metadata (blob
    /// links, manifests, tags, referrers, repositories, upload sessions:
    /// see [`MetaStore::purge_namespace`]; blob bytes stay in storage until
    /// garbage collection), and its users and robots. Refused while its
    /// namespace holds repositories, unless `force`.
    ///
    /// A tombstone (kind [`KIND_DELETED_TENANT`]) is written first and
    /// kept: a tenant created later under the name purges the namespace
    /// again, so neither an interrupted deletion nor a push a node let
    /// through from its caches leaks into it, and that creation is refused
    /// for [`TENANT_NAME_SETTLE`] after the deletion.
    pub async fn delete_tenant(&self, name: &str, force: bool) -> Result<(), DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, name)?;
        if !force {
            let used = self.inner.store.namespace_usage(name, None).await?;
            if used.repositories > 0 {
                return Err(DirectoryError::Conflict(format!(
                    "tenant {name} still holds {} repositories ({} bytes): delete its content \
                     first (`wharf admin content delete {name}`, or one repository with \
                     `wharf admin repo delete {name}/REPO`), or the tenant with everything it \
                     holds (`wharf admin tenant delete {name} --force`)",
                    used.repositories, used.bytes
                )));
            }
        }
        // The tombstone before anything else: whatever step below is cut
        // short, the name cannot be taken again without a purge.
        let tombstone = DeletedTenant {
            deleted_unix_ms: now_unix_ms(),
        };
        self.put(KIND_DELETED_TENANT, name, &tombstone, false)
            .await?;
        // Then the tenant: from the next load on, every node treats its
        // users and robots as inactive, even if removing them is cut short.
        if !self.inner.store.directory_delete(KIND_TENANT, name).await? {
            return Err(DirectoryError::NotFound(format!("tenant {name}")));
        }
        // Its content. Should this fail, the tenant is gone all the same;
        // the tombstone makes its re-creation purge.
        match self.inner.store.purge_namespace(name).await {
            Ok(counts) => tracing::info!(
                tenant = name,
                ?counts,
                "purged a deleted tenant's namespace"
            ),
            Err(e) => tracing::warn!(tenant = name, error = %e,
                "could not purge a deleted tenant's namespace; done when the name is taken again"),
        }
        let users = snap.users.values().filter(|u| u.tenant == name);
        let robots = snap.robots.values().filter(|r| r.tenant == name);
        let orphans = snap.orphans.iter().filter(|o| o.tenant == name);
        let endpoints = snap.notify_records.iter().filter(|(_, r)| r.tenant == name);
        let doomed: Vec<(&str, &str)> = users
            .map(|u| (KIND_USER, u.name.as_str()))
            .chain(robots.map(|r| (KIND_ROBOT, r.name.as_str())))
            .chain(endpoints.map(|(key, _)| (crate::notify::KIND_NOTIFY, key.as_str())))
            .chain(orphans.map(|o| (o.kind, o.key.as_str())))
            .collect();
        let retired: Vec<String> = snap
            .users
            .values()
            .filter(|u| u.tenant == name)
            .map(|u| u.name.clone())
            .collect();
        self.retire_users(&snap, &retired).await;
        self.forget_refresh(RefreshScope::Tenant(name.to_string()))
            .await;
        for (kind, key) in doomed {
            if let Err(e) = self.inner.store.directory_delete(kind, key).await {
                // Already inert; swept when a tenant of this name is created.
                tracing::warn!(tenant = name, kind, key, error = %e,
                    "left a record of a deleted tenant behind");
                break;
            }
        }
        self.load().await
    }

    /// Creates user `name` in `tenant`, or updates it (a `None` password
    /// keeps the current one; `roles` replace the current ones). `Ok(true)`
    /// if it was created. User names are unique across tenants.
    pub async fn put_user(
        &self,
        tenant: &str,
        name: &str,
        password: Option<&str>,
        roles: &[RoleSpec],
    ) -> Result<bool, DirectoryError> {
        validate::user_name(name).map_err(DirectoryError::Invalid)?;
        if let Some(password) = password {
            check_password(password)?;
        }
        let roles = role_bindings(tenant, roles)?;
        let new_hash = match password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };

        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        match snap.users.get(name) {
            // Only the operator (the admin token) reaches this, so naming
            // the other tenant tells nobody anything they may not know.
            Some(existing) if existing.tenant != tenant => Err(DirectoryError::Conflict(format!(
                "user name {name} is taken by tenant {other}: user names are unique across \
                 all tenants (they are login names). Choose another name (e.g. {tenant}-{name}), \
                 or remove that user first (`wharf admin user delete {other} {name}`)",
                other = existing.tenant
            ))),
            Some(existing) => {
                // What the user may do changes: tokens issued before stop
                // being honoured at once.
                let changed = new_hash.is_some() || roles != existing.roles;
                let user = User {
                    password_hash: new_hash.unwrap_or_else(|| existing.password_hash.clone()),
                    roles,
                    generation: existing.generation + u64::from(changed),
                    ..existing.clone()
                };
                self.put(KIND_USER, name, &user, false).await?;
                self.load().await?;
                Ok(false)
            }
            None => {
                let Some(password_hash) = new_hash else {
                    return Err(DirectoryError::Invalid(
                        "a new user needs a password".into(),
                    ));
                };
                let user = User {
                    name: name.to_string(),
                    tenant: tenant.to_string(),
                    password_hash,
                    roles,
                    created_unix: now_unix(),
                    id: new_id("u_")?,
                    generation: 0,
                };
                // A record of a deleted tenant may still hold the name.
                let orphaned = snap
                    .orphans
                    .iter()
                    .any(|o| o.kind == KIND_USER && o.key == name);
                if !self.put(KIND_USER, name, &user, !orphaned).await? {
                    return Err(DirectoryError::Conflict(format!(
                        "user name {name} is taken: another request created it a moment \
                         ago, or it belonged to a user being removed. List the tenants' users \
                         (`wharf admin user list TENANT`), or choose another name"
                    )));
                }
                self.load().await?;
                Ok(true)
            }
        }
    }

    pub async fn delete_user(&self, tenant: &str, name: &str) -> Result<(), DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        let not_found =
            || DirectoryError::NotFound(format!("user {} in tenant {tenant}", clip(name)));
        match snap.users.get(name) {
            Some(u) if u.tenant == tenant => {}
            _ => return Err(not_found()),
        }
        if !self.inner.store.directory_delete(KIND_USER, name).await? {
            return Err(not_found());
        }
        self.retire_users(&snap, &[name.to_string()]).await;
        if let Some(u) = snap.users.get(name) {
            self.forget_refresh(RefreshScope::Identity(u.id.clone()))
                .await;
        }
        self.load().await
    }

    /// Remembers deleted users' names, so that tokens already issued to
    /// them are refused (a name the directory has never heard of may be an
    /// htpasswd user, and is not refused). Names retired longer ago than
    /// any token can live are forgotten here. Best effort: a failure is
    /// logged, and such a user's tokens then live out their lifetime.
    async fn retire_users(&self, snap: &Snapshot, names: &[String]) {
        let now = now_unix();
        for name in names {
            let r = Retired { retired_unix: now };
            if let Err(e) = self.put(KIND_RETIRED, name, &r, false).await {
                tracing::warn!(user = %clip(name), error = %e, "could not retire a deleted user's name");
            }
        }
        for (name, when) in &snap.retired {
            if now.saturating_sub(*when) > RETIRED_KEEP_SECS && !names.contains(name) {
                let _ = self.inner.store.directory_delete(KIND_RETIRED, name).await;
            }
        }
    }

    /// Creates robot `<tenant>+<short>` with `grants` (each inside the
    /// tenant; `*` is stored as pull,push,delete), expiring `expires_in`
    /// from now. Returns its secret, which is not kept and cannot be shown
    /// again.
    pub async fn create_robot(
        &self,
        tenant: &str,
        short: &str,
        grants: Vec<Grant>,
        expires_in: Option<Duration>,
    ) -> Result<(RobotView, RobotSecret), DirectoryError> {
        validate::robot_short_name(short).map_err(DirectoryError::Invalid)?;
        let grants = robot_grants(tenant, grants)?;
        let now = now_unix();
        let expires_unix = match expires_in {
            Some(d) if d.as_secs() == 0 => {
                return Err(DirectoryError::Invalid(
                    "a robot must live at least one second".into(),
                ))
            }
            Some(d) => Some(now.saturating_add(d.as_secs())),
            None => None,
        };
        let secret = RobotSecret::generate()?;
        let name = validate::robot_name(tenant, short);
        let robot = Robot {
            name: name.clone(),
            tenant: tenant.to_string(),
            secret_hash: hash_secret(secret.expose()),
            grants,
            expires_unix,
            revoked: false,
            created_unix: now,
            id: new_id("r_")?,
        };

        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        // Create-only: a revoked robot keeps its name, so tokens naming it
        // stay refused.
        if !self.put(KIND_ROBOT, &name, &robot, true).await? {
            return Err(DirectoryError::Conflict(format!("robot {name} exists")));
        }
        self.load().await?;
        Ok((robot.view(), secret))
    }

    /// Revokes robot `<tenant>+<short>`: its secret stops working and
    /// tokens naming it are refused. The record stays (see
    /// [`Directory::subject_active`]). Revoking twice is not an error.
    pub async fn revoke_robot(
        &self,
        tenant: &str,
        short: &str,
    ) -> Result<RobotView, DirectoryError> {
        let name = validate::robot_name(tenant, short);
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        let mut robot = match snap.robots.get(&name) {
            Some(r) if r.tenant == tenant => r.clone(),
            _ => return Err(DirectoryError::NotFound(format!("robot {}", clip(&name)))),
        };
        if !robot.revoked {
            robot.revoked = true;
            self.put(KIND_ROBOT, &name, &robot, false).await?;
            self.load().await?;
        }
        self.forget_refresh(RefreshScope::Identity(robot.id.clone()))
            .await;
        Ok(robot.view())
    }

    /// Ends every session of user `name` of `tenant`: its access tokens
    /// stop being honoured at once (its generation changes) and its refresh
    /// tokens are deleted. Its password still works for a new login.
    pub async fn revoke_user_sessions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Revoked, DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        let mut user = match snap.users.get(name) {
            Some(u) if u.tenant == tenant => u.clone(),
            _ => {
                return Err(DirectoryError::NotFound(format!(
                    "user {} in tenant {tenant}",
                    clip(name)
                )))
            }
        };
        user.generation += 1;
        self.put(KIND_USER, name, &user, false).await?;
        self.load().await?;
        let refresh_tokens = self
            .inner
            .store
            .refresh_revoke(&RefreshScope::Identity(user.id.clone()))
            .await?;
        Ok(Revoked { refresh_tokens })
    }

    /// Ends every session of every user and robot of `tenant`.
    pub async fn revoke_tenant_sessions(&self, tenant: &str) -> Result<Revoked, DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        let mut t = require_tenant(&snap, tenant)?.clone();
        t.sessions_generation += 1;
        self.put(KIND_TENANT, tenant, &t, false).await?;
        self.load().await?;
        let refresh_tokens = self
            .inner
            .store
            .refresh_revoke(&RefreshScope::Tenant(tenant.to_string()))
            .await?;
        Ok(Revoked { refresh_tokens })
    }

    /// Ends every session of the registry: every tenant's accounts and the
    /// operator's own.
    pub async fn revoke_all_sessions(&self) -> Result<Revoked, DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        let next = Revocation {
            generation: snap.revocation.saturating_add(1),
        };
        self.put(KIND_REVOCATION, REVOCATION_ALL, &next, false)
            .await?;
        self.load().await?;
        let refresh_tokens = self.inner.store.refresh_revoke(&RefreshScope::All).await?;
        Ok(Revoked { refresh_tokens })
    }

    /// Deletes refresh tokens that can no longer be used anyway (their
    /// identity is gone or revoked); best effort, as they are refused at
    /// use in any case.
    async fn forget_refresh(&self, which: RefreshScope) {
        if let Err(e) = self.inner.store.refresh_revoke(&which).await {
            tracing::warn!(error = %e, "could not delete refresh tokens of a removed account");
        }
    }

    async fn put<T: serde::Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        create_only: bool,
    ) -> Result<bool, DirectoryError> {
        let json = serde_json::to_string(value).map_err(|e| {
            tracing::error!(kind, key, error = %e, "cannot serialize a directory record");
            DirectoryError::Invalid("the record cannot be serialized".into())
        })?;
        Ok(self
            .inner
            .store
            .directory_put(kind, key, &json, create_only)
            .await?)
    }
}

impl QuotaSource for Directory {
    /// The tenant's quota, `None` for an unknown tenant or no limit.
    fn quota(&self, namespace: &str) -> Option<Quota> {
        let quota: Quota = self.snap().tenants.get(namespace)?.quota.into();
        quota.is_limited().then_some(quota)
    }
}

impl ImmutableTagSource for Directory {
    /// From the rules compiled with the snapshot; an unknown tenant has
    /// none.
    fn protecting(&self, repo: &RepoName, tag: &Tag) -> Option<ImmutableTagRule> {
        let snap = self.snap();
        snap.immutable
            .get(repo.namespace())?
            .protecting(repo, tag)
            .cloned()
    }

    fn guards(&self, repo: &RepoName) -> bool {
        self.snap()
            .immutable
            .get(repo.namespace())
            .is_some_and(|rules| rules.guards(repo))
    }
}

/// Milliseconds since the Unix epoch.
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn require_tenant<'a>(snap: &'a Snapshot, name: &str) -> Result<&'a Tenant, DirectoryError> {
    snap.tenants
        .get(name)
        .ok_or_else(|| DirectoryError::NotFound(format!("tenant {}", clip(name))))
}

fn check_tenant(t: &Tenant) -> Result<(), DirectoryError> {
    validate::tenant_name(&t.name).map_err(DirectoryError::Invalid)?;
    if let Some(host) = &t.hostname {
        validate::hostname(host).map_err(DirectoryError::Invalid)?;
    }
    if let Some(share) = t.concurrency_share {
        validate::concurrency_share(share).map_err(DirectoryError::Invalid)?;
    }
    immutable::check_rules(&t.immutable_tags).map_err(DirectoryError::Invalid)?;
    if let Some(policy) = &t.retention {
        policy
            .compile()
            .map_err(|e| DirectoryError::Invalid(format!("retention: {e}")))?;
    }
    Ok(())
}

/// Hostnames are unique by their host part, whatever the ports, so a
/// request's host never has two candidate tenants.
fn check_hostname_free(snap: &Snapshot, t: &Tenant) -> Result<(), DirectoryError> {
    let Some(host) = &t.hostname else {
        return Ok(());
    };
    match snap.hostname_owner(host, &t.name) {
        Some(other) => Err(DirectoryError::Conflict(format!(
            "hostname {host} belongs to tenant {other}"
        ))),
        None => Ok(()),
    }
}

fn check_password(password: &str) -> Result<(), DirectoryError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DirectoryError::Invalid(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(DirectoryError::Invalid(format!(
            "a password may have at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

async fn hash_password(password: &str) -> Result<String, DirectoryError> {
    let password = password.to_string();
    let hashed =
        tokio::task::spawn_blocking(move || bcrypt::non_truncating_hash(password, BCRYPT_COST))
            .await;
    match hashed {
        Ok(Ok(hash)) => Ok(hash),
        Ok(Err(e)) => Err(DirectoryError::Invalid(format!(
            "the password cannot be hashed: {e}"
        ))),
        Err(e) => {
            tracing::error!(error = %e, "password hashing task failed");
            Err(DirectoryError::Unavailable(
                "password hashing failed".into(),
            ))
        }
    }
}

fn tenant_wide(tenant: &str) -> Result<RepoPattern, DirectoryError> {
    tenant
        .parse()
        .map(RepoPattern::Under)
        .map_err(|_| DirectoryError::NotFound(format!("tenant {}", clip(tenant))))
}

fn outside(pattern: &RepoPattern, tenant: &str) -> DirectoryError {
    DirectoryError::Invalid(format!(
        "repository pattern {pattern} is outside tenant {tenant} (use {tenant}/*, {tenant}/<repo> or {tenant}/<path>/*)"
    ))
}

fn role_bindings(tenant: &str, roles: &[RoleSpec]) -> Result<Vec<RoleBinding>, DirectoryError> {
    if roles.len() > MAX_ROLE_BINDINGS {
        return Err(DirectoryError::Invalid(format!(
            "a user may have at most {MAX_ROLE_BINDINGS} roles"
        )));
    }
    roles
        .iter()
        .map(|spec| {
            let repositories = match &spec.repositories {
                Some(p) => p.clone(),
                None => tenant_wide(tenant)?,
            };
            if !pattern_in_tenant(&repositories, tenant) {
                return Err(outside(&repositories, tenant));
            }
            Ok(RoleBinding {
                role: spec.role,
                repositories,
            })
        })
        .collect()
}

fn robot_grants(tenant: &str, grants: Vec<Grant>) -> Result<Vec<Grant>, DirectoryError> {
    if grants.is_empty() {
        return Err(DirectoryError::Invalid(
            "a robot needs at least one grant".into(),
        ));
    }
    if grants.len() > MAX_ROBOT_GRANTS {
        return Err(DirectoryError::Invalid(format!(
            "a robot may have at most {MAX_ROBOT_GRANTS} grants"
        )));
    }
    grants
        .into_iter()
        .map(|g| {
            if !pattern_in_tenant(&g.pattern, tenant) {
                return Err(outside(&g.pattern, tenant));
            }
            // Stored as the actions it means, so it prints as a grant that
            // parses back.
            let actions = if g.actions.is_all() {
                Actions::only(Action::Pull)
                    .with(Action::Push)
                    .with(Action::Delete)
            } else {
                g.actions
            };
            if actions.is_empty() {
                return Err(DirectoryError::Invalid(format!(
                    "grant on {} names no action",
                    g.pattern
                )));
            }
            Ok(Grant::new(g.pattern, actions))
        })
        .collect()
}
