//! What moving a tenant between cells asks of the directory: its write
//! fence, and its records (tenant, users, robots) exported whole and
//! imported as given.
//!
//! Owns: [`Directory::set_fence`] and [`Directory::fence`], and the export
//! ([`Directory::export_accounts`], [`Directory::export_refresh`]) and
//! import ([`Directory::import_accounts`]) of a tenant's stored records:
//! the accounts with their ids, generations and hashes, and the tenant's
//! refresh tokens (hashed), so that an access token or a refresh token a
//! node of one cell issued is honoured by the other after a move.
//! Failed-login counts are not records: they live in each node's memory
//! (`wharf_auth::limiter`) and stay behind, as the fence does.
//!
//! Must never: hand the stored records (which hold password and secret
//! hashes) to anything but the tenant-move export, which the admin API
//! serves behind the admin token so that the accounts can be recreated
//! identically on the other cell; carry a fence from one cell to another
//! (it is this cell's operational state); or import a record that reaches
//! outside its tenant (names, role patterns and grants are checked as the
//! admin mutations check them).

use std::collections::BTreeSet;

use serde_json::Value;
use wharf_meta::{Upsert, UpsertCounts};

use super::*;
use crate::model::{
    Fence, DEFAULT_FENCE_RETRY_SECS, MAX_FENCE_LEASE_SECS, MAX_FENCE_RETRY_SECS,
    MIN_FENCE_LEASE_SECS, MIN_FENCE_RETRY_SECS,
};

/// A tenant's records as stored, for a move to another cell.
#[derive(Clone, Debug)]
pub struct TenantExport {
    /// The tenant record, without its fence.
    pub tenant: Value,
    /// Its users as stored (password hash, roles, id, generation), by name.
    pub users: Vec<Value>,
    /// Its robots as stored (secret hash, grants, expiry, revocation), by
    /// name.
    pub robots: Vec<Value>,
    /// Its refresh tokens as stored (the hash of the secret, the identity
    /// and generation they were issued for, expiry), by hash.
    pub refresh: Vec<Value>,
}

/// What [`Directory::import_accounts`] did, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountsImported {
    pub tenant: UpsertCounts,
    pub users: UpsertCounts,
    pub robots: UpsertCounts,
    pub refresh: UpsertCounts,
}

/// The most refresh tokens an import keeps per identity (the source cell
/// already bounds them, more tightly).
const IMPORTED_REFRESH_PER_IDENTITY: usize = 1000;

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, DirectoryError> {
    serde_json::to_value(v)
        .map_err(|e| DirectoryError::Invalid(format!("a record cannot be serialized: {e}")))
}

fn from_value<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, DirectoryError> {
    serde_json::from_value(v)
        .map_err(|e| DirectoryError::Invalid(format!("bad {what} record: {e}")))
}

impl Directory {
    /// `tenant`'s write fence if it stands, from the snapshot (the request
    /// path asks). See [`Directory::fence_stands`].
    pub fn fence(&self, tenant: &str) -> Option<Fence> {
        self.snap()
            .tenants
            .get(tenant)?
            .fence
            .filter(|f| self.fence_stands(f))
    }

    /// Whether `fence` (from this directory's snapshot) refuses writes. A
    /// fence without a lease does until taken down. A leased one has
    /// lapsed only once a read of the store made after its end found it
    /// not renewed: a node that cannot reach the store keeps refusing
    /// rather than let a write through that a move would then lose.
    pub fn fence_stands(&self, fence: &Fence) -> bool {
        fence.stands_at(self.confirmed_unix_ms())
    }

    /// Puts up `tenant`'s write fence, telling refused writers to retry
    /// after `retry_after_secs` (default [`DEFAULT_FENCE_RETRY_SECS`]), or
    /// takes it down (`up` false). With `lease_secs` the fence lapses by
    /// itself that many seconds from now unless put up again (renewed);
    /// without, it stands until taken down. Putting up a fence that still
    /// stands keeps its `since`; taking down an absent fence is no error.
    /// Stored in the tenant's record, so every node of the cell refuses
    /// the tenant's writes once its directory refresh has read it (and
    /// each node stops at the lease's end by its own clock).
    pub async fn set_fence(
        &self,
        tenant: &str,
        up: bool,
        retry_after_secs: Option<u32>,
        lease_secs: Option<u32>,
    ) -> Result<Tenant, DirectoryError> {
        let retry = retry_after_secs.unwrap_or(DEFAULT_FENCE_RETRY_SECS);
        if !(MIN_FENCE_RETRY_SECS..=MAX_FENCE_RETRY_SECS).contains(&retry) {
            return Err(DirectoryError::Invalid(format!(
                "retry_after_secs must be {MIN_FENCE_RETRY_SECS} to {MAX_FENCE_RETRY_SECS}"
            )));
        }
        if let Some(lease) = lease_secs {
            if !(MIN_FENCE_LEASE_SECS..=MAX_FENCE_LEASE_SECS).contains(&lease) {
                return Err(DirectoryError::Invalid(format!(
                    "lease_secs must be {MIN_FENCE_LEASE_SECS} to {MAX_FENCE_LEASE_SECS}"
                )));
            }
        }
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        let mut t = require_tenant(&snap, tenant)?.clone();
        let now_ms = now_unix_ms();
        let standing = t.fence.filter(|f| self.fence_stands(f));
        let fence = up.then(|| Fence {
            retry_after_secs: retry,
            since_unix: standing.map_or_else(now_unix, |f| f.since_unix),
            until_unix_ms: lease_secs.map(|l| now_ms + u64::from(l) * 1000),
        });
        if t.fence != fence {
            t.fence = fence;
            self.put(KIND_TENANT, tenant, &t, false).await?;
            self.load().await?;
        }
        Ok(t)
    }

    /// `tenant`'s stored records, users and robots by name. From the
    /// snapshot: a caller that needs the latest refreshes first.
    pub fn export_accounts(&self, tenant: &str) -> Result<TenantExport, DirectoryError> {
        let snap = self.snap();
        let mut t = require_tenant(&snap, tenant)?.clone();
        t.fence = None;
        let mut users: Vec<&User> = snap.users.values().filter(|u| u.tenant == tenant).collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let mut robots: Vec<&Robot> = snap
            .robots
            .values()
            .filter(|r| r.tenant == tenant)
            .collect();
        robots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TenantExport {
            tenant: to_value(&t)?,
            users: users.into_iter().map(to_value).collect::<Result<_, _>>()?,
            robots: robots.into_iter().map(to_value).collect::<Result<_, _>>()?,
            refresh: Vec::new(),
        })
    }

    /// `tenant`'s live refresh tokens as the store holds them now, by hash
    /// (expired ones stay behind: a store drops them at its next write).
    pub async fn export_refresh(&self, tenant: &str) -> Result<Vec<Value>, DirectoryError> {
        let now = now_unix();
        let mut records = self.inner.store.refresh_list(tenant).await?;
        records.retain(|r| r.expires_unix > now);
        records.sort_by(|a, b| a.hash.cmp(&b.hash));
        records.iter().map(to_value).collect()
    }

    /// Makes tenant `name`'s records those of `export` (another cell's
    /// [`Directory::export_accounts`]): the tenant created or updated (its
    /// fence here left as it is), each user and robot created or updated
    /// exactly as given; with `sync`, users and robots of the tenant that
    /// `export` does not list are deleted. Every record is checked as the
    /// admin mutations check theirs; a user name taken by another tenant
    /// here is a conflict.
    pub async fn import_accounts(
        &self,
        name: &str,
        export: TenantExport,
        sync: bool,
    ) -> Result<AccountsImported, DirectoryError> {
        let mut tenant: Tenant = from_value("tenant", export.tenant)?;
        if tenant.name != name {
            return Err(DirectoryError::Invalid(format!(
                "the tenant record is {}, not {name}",
                clip(&tenant.name)
            )));
        }
        check_tenant(&tenant)?;
        let users: Vec<User> = export
            .users
            .into_iter()
            .map(|v| from_value("user", v))
            .collect::<Result<_, _>>()?;
        let robots: Vec<Robot> = export
            .robots
            .into_iter()
            .map(|v| from_value("robot", v))
            .collect::<Result<_, _>>()?;
        for u in &users {
            check_imported_user(name, u)?;
        }
        for r in &robots {
            check_imported_robot(name, r)?;
        }
        let refresh: Vec<wharf_meta::RefreshRecord> = export
            .refresh
            .into_iter()
            .map(|v| from_value("refresh token", v))
            .collect::<Result<_, _>>()?;
        for r in &refresh {
            if r.tenant != name
                || r.hash.len() != 64
                || !r.hash.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(DirectoryError::Invalid(format!(
                    "a refresh token of {} is not one of tenant {name}'s, or its hash is not SHA-256 hex",
                    clip(&r.subject)
                )));
            }
        }

        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        let mut done = AccountsImported::default();
        match snap.tenants.get(name) {
            None => {
                check_hostname_free(&snap, &tenant)?;
                tenant.fence = None;
                self.clear_old_name(&snap, name).await?;
                if !self.put(KIND_TENANT, name, &tenant, true).await? {
                    return Err(DirectoryError::Conflict(format!("tenant {name} exists")));
                }
                done.tenant.count(Upsert::Created);
            }
            Some(current) => {
                tenant.fence = current.fence;
                if *current == tenant {
                    done.tenant.count(Upsert::Unchanged);
                } else {
                    check_hostname_free(&snap, &tenant)?;
                    self.put(KIND_TENANT, name, &tenant, false).await?;
                    done.tenant.count(Upsert::Updated);
                }
            }
        }
        for user in &users {
            let outcome = match snap.users.get(&user.name) {
                Some(u) if u.tenant != name => {
                    return Err(DirectoryError::Conflict(format!(
                        "user name {} belongs to another tenant here",
                        user.name
                    )))
                }
                Some(u) if u == user => Upsert::Unchanged,
                Some(_) => {
                    self.put(KIND_USER, &user.name, user, false).await?;
                    Upsert::Updated
                }
                None => {
                    let orphaned = snap
                        .orphans
                        .iter()
                        .any(|o| o.kind == KIND_USER && o.key == user.name);
                    if !self.put(KIND_USER, &user.name, user, !orphaned).await? {
                        return Err(DirectoryError::Conflict(format!(
                            "user name {} is taken",
                            user.name
                        )));
                    }
                    Upsert::Created
                }
            };
            done.users.count(outcome);
        }
        for robot in &robots {
            let outcome = match snap.robots.get(&robot.name) {
                Some(r) if r == robot => Upsert::Unchanged,
                Some(_) => {
                    self.put(KIND_ROBOT, &robot.name, robot, false).await?;
                    Upsert::Updated
                }
                None => {
                    self.put(KIND_ROBOT, &robot.name, robot, false).await?;
                    Upsert::Created
                }
            };
            done.robots.count(outcome);
        }
        if sync {
            let keep_users: BTreeSet<&str> = users.iter().map(|u| u.name.as_str()).collect();
            let keep_robots: BTreeSet<&str> = robots.iter().map(|r| r.name.as_str()).collect();
            let gone_users: Vec<&User> = snap
                .users
                .values()
                .filter(|u| u.tenant == name && !keep_users.contains(u.name.as_str()))
                .collect();
            for u in &gone_users {
                if self
                    .inner
                    .store
                    .directory_delete(KIND_USER, &u.name)
                    .await?
                {
                    done.users.deleted += 1;
                }
                self.forget_refresh(RefreshScope::Identity(u.id.clone()))
                    .await;
            }
            let retired: Vec<String> = gone_users.iter().map(|u| u.name.clone()).collect();
            self.retire_users(&snap, &retired).await;
            for r in snap
                .robots
                .values()
                .filter(|r| r.tenant == name && !keep_robots.contains(r.name.as_str()))
            {
                if self
                    .inner
                    .store
                    .directory_delete(KIND_ROBOT, &r.name)
                    .await?
                {
                    done.robots.deleted += 1;
                }
                self.forget_refresh(RefreshScope::Identity(r.id.clone()))
                    .await;
            }
        }
        self.import_refresh(name, &users, &robots, refresh, sync, &mut done)
            .await?;
        self.load().await?;
        Ok(done)
    }

    /// Keeps the imported refresh tokens of the tenant's accounts (one of an
    /// account the import does not list could never be honoured, and is
    /// left out, as is one expired meanwhile); with `sync`, the tenant's tokens here that the source no
    /// longer has (used there since, or revoked) are deleted, so none can
    /// be used twice.
    async fn import_refresh(
        &self,
        name: &str,
        users: &[User],
        robots: &[Robot],
        refresh: Vec<wharf_meta::RefreshRecord>,
        sync: bool,
        done: &mut AccountsImported,
    ) -> Result<(), DirectoryError> {
        let here: std::collections::BTreeMap<String, wharf_meta::RefreshRecord> = self
            .inner
            .store
            .refresh_list(name)
            .await?
            .into_iter()
            .map(|r| (r.hash.clone(), r))
            .collect();
        let known = |r: &wharf_meta::RefreshRecord| {
            users
                .iter()
                .any(|u| u.name == r.subject && u.id == r.identity)
                || robots
                    .iter()
                    .any(|b| b.name == r.subject && b.id == r.identity)
        };
        let now = now_unix();
        let mut kept = BTreeSet::new();
        for r in refresh.iter().filter(|r| known(r) && r.expires_unix > now) {
            kept.insert(r.hash.clone());
            let outcome = match here.get(&r.hash) {
                Some(h) if h == r => Upsert::Unchanged,
                Some(_) => Upsert::Updated,
                None => Upsert::Created,
            };
            if outcome != Upsert::Unchanged {
                self.inner
                    .store
                    .refresh_put(r, IMPORTED_REFRESH_PER_IDENTITY, now)
                    .await?;
            }
            done.refresh.count(outcome);
        }
        if sync {
            for hash in here.keys().filter(|h| !kept.contains(*h)) {
                if self.inner.store.refresh_take(hash).await?.is_some() {
                    done.refresh.deleted += 1;
                }
            }
        }
        Ok(())
    }
}

/// An imported user must be a user of `tenant` whose roles stay inside it.
fn check_imported_user(tenant: &str, u: &User) -> Result<(), DirectoryError> {
    validate::user_name(&u.name).map_err(DirectoryError::Invalid)?;
    if u.tenant != tenant {
        return Err(DirectoryError::Invalid(format!(
            "user {} belongs to tenant {}, not {tenant}",
            clip(&u.name),
            clip(&u.tenant)
        )));
    }
    if u.password_hash.is_empty() || u.roles.len() > MAX_ROLE_BINDINGS {
        return Err(DirectoryError::Invalid(format!(
            "user {} has no password hash or too many roles",
            clip(&u.name)
        )));
    }
    match u
        .roles
        .iter()
        .find(|b| !pattern_in_tenant(&b.repositories, tenant))
    {
        Some(b) => Err(outside(&b.repositories, tenant)),
        None => Ok(()),
    }
}

/// An imported robot must be named `<tenant>+<short>` and grant nothing
/// outside the tenant.
fn check_imported_robot(tenant: &str, r: &Robot) -> Result<(), DirectoryError> {
    let short = r.name.strip_prefix(&format!("{tenant}+")).ok_or_else(|| {
        DirectoryError::Invalid(format!(
            "robot {} is not named {tenant}+<name>",
            clip(&r.name)
        ))
    })?;
    validate::robot_short_name(short).map_err(DirectoryError::Invalid)?;
    if r.tenant != tenant || r.grants.len() > MAX_ROBOT_GRANTS {
        return Err(DirectoryError::Invalid(format!(
            "robot {} belongs to another tenant or has too many grants",
            clip(&r.name)
        )));
    }
    match r
        .grants
        .iter()
        .find(|g| !pattern_in_tenant(&g.pattern, tenant))
    {
        Some(g) => Err(outside(&g.pattern, tenant)),
        None => Ok(()),
    }
}
