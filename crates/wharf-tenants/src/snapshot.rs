//! One consistent, immutable view of the directory, indexed for the request
//! path.
//!
//! Owns: turning a store's [`DirectorySnapshot`] into maps (tenants, users,
//! robots by name; tenants by hostname; compiled immutable-tag rules by
//! tenant), deciding which records count, and the credential and grant
//! lookups answered from them.
//!
//! Must never: fail a whole load because of one bad record (a record that
//! does not parse, or whose key disagrees with its content, is skipped and
//! logged: the identities it would grant are simply absent, which fails
//! closed), or let a record widen access: users and robots of a tenant that
//! does not exist (orphans left by an interrupted tenant deletion) are
//! inactive, and grants or roles outside their tenant are dropped.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wharf_auth::{verify_secret, Grant, Identity};
use wharf_meta::DirectorySnapshot;
use wharf_retention::{CompiledPolicy, Policy};

use crate::immutable::TenantRules;
use crate::model::{
    DeletedTenant, Retired, Revocation, Robot, Tenant, User, KIND_DELETED_TENANT, KIND_RETIRED,
    KIND_REVOCATION, KIND_ROBOT, KIND_TENANT, KIND_USER, REVOCATION_ALL,
};
use crate::notify::{NotifyRecord, KIND_NOTIFY};
use crate::validate::{self, pattern_in_tenant, split_host, ROBOT_SEPARATOR};

/// What the node checks a password against. `Debug` never shows the hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    User {
        name: String,
        tenant: String,
        bcrypt_hash: String,
    },
    Robot {
        name: String,
        tenant: String,
        /// SHA-256 hex of the robot's secret.
        secret_hash: String,
        revoked: bool,
        expires_unix: Option<u64>,
    },
}

impl Credential {
    /// The subject a token issued on it carries.
    pub fn subject(&self) -> &str {
        match self {
            Credential::User { name, .. } | Credential::Robot { name, .. } => name,
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Credential::User { tenant, .. } | Credential::Robot { tenant, .. } => tenant,
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Credential::User { .. } => "User",
            Credential::Robot { .. } => "Robot",
        };
        f.debug_struct(kind)
            .field("name", &self.subject())
            .field("tenant", &self.tenant())
            .finish_non_exhaustive()
    }
}

/// Whether `password` is right for `cred` at `now_unix`: bcrypt for users
/// (tens of milliseconds: run it off the async runtime), a constant-time
/// SHA-256 comparison for robots, which are refused when revoked or expired.
pub fn verify_password(cred: &Credential, password: &str, now_unix: u64) -> bool {
    match cred {
        Credential::User { bcrypt_hash, .. } => {
            bcrypt::verify(password, bcrypt_hash).unwrap_or(false)
        }
        Credential::Robot {
            secret_hash,
            revoked,
            expires_unix,
            ..
        } => {
            let live = !revoked && expires_unix.is_none_or(|at| now_unix < at);
            // Hash and compare even when dead, so timing tells nothing.
            let matches = verify_secret(password, secret_hash);
            live && matches
        }
    }
}

/// Whether a token's subject may still act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectStatus {
    /// The directory knows nothing of it: another identity source (an
    /// htpasswd file, anonymous access) may; with the directory as the only
    /// source, refuse it. A deleted user is in this state.
    NotInDirectory,
    /// A user, or a robot neither revoked nor expired, of an existing tenant.
    Active,
    /// A revoked or expired robot, any unknown `tenant+name` robot name, or
    /// an identity whose tenant is gone.
    Inactive,
}

/// A record left behind by an interrupted tenant deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Orphan {
    pub kind: &'static str,
    pub key: String,
    pub tenant: String,
}

/// The directory as of one version.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub version: u64,
    pub tenants: HashMap<String, Tenant>,
    pub users: HashMap<String, User>,
    pub robots: HashMap<String, Robot>,
    /// Host without port → (tenant, the port it was configured with).
    pub hosts: HashMap<String, (String, Option<u16>)>,
    pub orphans: Vec<Orphan>,
    /// Names of deleted users → when they were deleted.
    pub retired: HashMap<String, u64>,
    /// The registry-wide session generation (see [`KIND_REVOCATION`]).
    pub revocation: u64,
    /// Names of deleted tenants → when they were deleted (ms since the
    /// epoch).
    pub deleted_tenants: HashMap<String, u64>,
    /// Tenant → its immutable-tag rules, compiled (only tenants that have
    /// some).
    pub immutable: HashMap<String, TenantRules>,
    /// Tenant → its retention policy, compiled (only tenants that have
    /// one whose rules still compile: they were checked when written).
    pub retention: HashMap<String, Arc<CompiledPolicy>>,
    /// Notification endpoints of existing tenants, by key (`tenant/id`).
    pub notify_records: HashMap<String, NotifyRecord>,
    /// Tenant → where its events go (only tenants that have endpoints).
    pub notify: HashMap<String, Arc<[Arc<wharf_notify::Target>]>>,
}

impl Snapshot {
    pub fn build(store: DirectorySnapshot) -> Snapshot {
        let mut snap = Snapshot {
            version: store.version,
            ..Snapshot::default()
        };
        let mut users = Vec::new();
        let mut robots = Vec::new();
        let mut endpoints = Vec::new();
        for rec in store.records {
            match rec.kind.as_str() {
                KIND_TENANT => match serde_json::from_str::<Tenant>(&rec.value) {
                    Ok(t) if t.name == rec.key && validate::tenant_name(&t.name).is_ok() => {
                        snap.tenants.insert(t.name.clone(), t);
                    }
                    _ => skip(&rec.kind, &rec.key),
                },
                KIND_USER => match serde_json::from_str::<User>(&rec.value) {
                    Ok(u) if u.name == rec.key && validate::user_name(&u.name).is_ok() => {
                        users.push(u)
                    }
                    _ => skip(&rec.kind, &rec.key),
                },
                KIND_ROBOT => match serde_json::from_str::<Robot>(&rec.value) {
                    Ok(r) if r.name == rec.key && robot_name_ok(&r) => robots.push(r),
                    _ => skip(&rec.kind, &rec.key),
                },
                KIND_REVOCATION if rec.key == REVOCATION_ALL => {
                    match serde_json::from_str::<Revocation>(&rec.value) {
                        Ok(r) => snap.revocation = r.generation,
                        // Unreadable: every session ends rather than none.
                        Err(_) => {
                            skip(&rec.kind, &rec.key);
                            snap.revocation = u64::MAX;
                        }
                    }
                }
                KIND_RETIRED => match serde_json::from_str::<Retired>(&rec.value) {
                    Ok(r) => {
                        snap.retired.insert(rec.key.clone(), r.retired_unix);
                    }
                    _ => skip(&rec.kind, &rec.key),
                },
                KIND_DELETED_TENANT => match serde_json::from_str::<DeletedTenant>(&rec.value) {
                    Ok(d) => {
                        snap.deleted_tenants
                            .insert(rec.key.clone(), d.deleted_unix_ms);
                    }
                    _ => skip(&rec.kind, &rec.key),
                },
                KIND_NOTIFY => match serde_json::from_str::<NotifyRecord>(&rec.value) {
                    Ok(e) if NotifyRecord::key(&e.tenant, &e.id) == rec.key => endpoints.push(e),
                    _ => skip(&rec.kind, &rec.key),
                },
                other => tracing::debug!(kind = other, "ignoring unknown directory record kind"),
            }
        }
        for mut u in users {
            if !snap.tenants.contains_key(&u.tenant) {
                snap.orphans.push(Orphan {
                    kind: KIND_USER,
                    key: u.name,
                    tenant: u.tenant,
                });
                continue;
            }
            if u.id.is_empty() {
                u.id = legacy_id(KIND_USER, &u.name, u.created_unix);
            }
            let tenant = u.tenant.clone();
            u.roles
                .retain(|b| keep_inside(&b.repositories, &tenant, KIND_USER, &u.name));
            snap.users.insert(u.name.clone(), u);
        }
        for mut r in robots {
            if !snap.tenants.contains_key(&r.tenant) {
                snap.orphans.push(Orphan {
                    kind: KIND_ROBOT,
                    key: r.name,
                    tenant: r.tenant,
                });
                continue;
            }
            if r.id.is_empty() {
                r.id = legacy_id(KIND_ROBOT, &r.name, r.created_unix);
            }
            let tenant = r.tenant.clone();
            r.grants
                .retain(|g| keep_inside(&g.pattern, &tenant, KIND_ROBOT, &r.name));
            snap.robots.insert(r.name.clone(), r);
        }
        let mut targets: HashMap<String, Vec<Arc<wharf_notify::Target>>> = HashMap::new();
        endpoints.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        for e in endpoints {
            let key = NotifyRecord::key(&e.tenant, &e.id);
            if !snap.tenants.contains_key(&e.tenant) {
                snap.orphans.push(Orphan {
                    kind: KIND_NOTIFY,
                    key,
                    tenant: e.tenant,
                });
                continue;
            }
            // Checked when written; one a later build refuses sends
            // nothing rather than something unintended.
            match e.check().and_then(|()| e.target()) {
                Ok(target) => targets
                    .entry(e.tenant.clone())
                    .or_default()
                    .push(Arc::new(target)),
                Err(error) => {
                    tracing::warn!(endpoint = %key, %error, "ignoring a notification endpoint");
                    continue;
                }
            }
            snap.notify_records.insert(key, e);
        }
        snap.notify = targets
            .into_iter()
            .map(|(tenant, list)| (tenant, Arc::from(list)))
            .collect();
        for t in snap.tenants.values() {
            let rules = TenantRules::build(&t.name, &t.immutable_tags);
            if !rules.is_empty() {
                snap.immutable.insert(t.name.clone(), rules);
            }
            match t.retention.as_ref().map(Policy::compile) {
                None => {}
                Some(Ok(policy)) => {
                    snap.retention.insert(t.name.clone(), Arc::new(policy));
                }
                // Checked when written; a policy a later build refuses
                // deletes nothing rather than something unintended.
                Some(Err(e)) => tracing::warn!(
                    tenant = %t.name,
                    error = %e,
                    "ignoring a retention policy that no longer compiles"
                ),
            }
        }
        // Hostnames are unique when written; should two tenants still claim
        // one (two admins racing), the first by name wins on every node.
        let mut names: Vec<&String> = snap.tenants.keys().collect();
        names.sort();
        for name in names {
            let Some(host) = snap.tenants[name].hostname.as_deref() else {
                continue;
            };
            let Some((bare, port)) = split_host(host) else {
                continue;
            };
            if let Some((other, _)) = snap.hosts.get(bare) {
                tracing::warn!(hostname = host, tenant = %name, kept = %other, "hostname claimed by two tenants");
                continue;
            }
            snap.hosts.insert(bare.to_string(), (name.clone(), port));
        }
        snap
    }

    pub fn credential(&self, user: &str) -> Option<Credential> {
        if user.contains(ROBOT_SEPARATOR) {
            let r = self.robots.get(user)?;
            Some(Credential::Robot {
                name: r.name.clone(),
                tenant: r.tenant.clone(),
                secret_hash: r.secret_hash.clone(),
                revoked: r.revoked,
                expires_unix: r.expires_unix,
            })
        } else {
            let u = self.users.get(user)?;
            Some(Credential::User {
                name: u.name.clone(),
                tenant: u.tenant.clone(),
                bcrypt_hash: u.password_hash.clone(),
            })
        }
    }

    pub fn grants_of(&self, subject: &str, now_unix: u64) -> Option<Vec<Grant>> {
        if subject.contains(ROBOT_SEPARATOR) {
            let r = self.robots.get(subject)?;
            r.active_at(now_unix).then(|| r.grants.clone())
        } else {
            let u = self.users.get(subject)?;
            Some(u.roles.iter().map(|b| b.grant()).collect())
        }
    }

    pub fn subject_status(&self, subject: &str, now_unix: u64) -> SubjectStatus {
        if subject.contains(ROBOT_SEPARATOR) {
            match self.robots.get(subject) {
                Some(r) if r.active_at(now_unix) => SubjectStatus::Active,
                _ => SubjectStatus::Inactive,
            }
        } else if self.users.contains_key(subject) {
            SubjectStatus::Active
        } else if self.retired.contains_key(subject)
            || self
                .orphans
                .iter()
                .any(|o| o.kind == KIND_USER && o.key == subject)
        {
            SubjectStatus::Inactive
        } else {
            SubjectStatus::NotInDirectory
        }
    }

    /// The identity `subject` stands for now, if it may act: an active user
    /// or robot of an existing tenant. Its generation joins the account's
    /// own, its tenant's session generation and the registry-wide one, so
    /// a revocation at any of the three levels changes it.
    pub fn identity_of(&self, subject: &str, now_unix: u64) -> Option<Identity> {
        let (id, own, tenant) = if subject.contains(ROBOT_SEPARATOR) {
            let r = self.robots.get(subject).filter(|r| r.active_at(now_unix))?;
            (&r.id, 0, &r.tenant)
        } else {
            let u = self.users.get(subject)?;
            (&u.id, u.generation, &u.tenant)
        };
        let tenant = self.tenants.get(tenant)?;
        Some(Identity {
            id: id.clone(),
            generation: format!("{own}.{}.{}", tenant.sessions_generation, self.revocation),
        })
    }

    /// See [`crate::Directory::tenant_for_host`] for the rules.
    pub fn tenant_for_host(&self, host: &str) -> Option<&str> {
        let host = host.trim().to_ascii_lowercase();
        let (bare, port) = split_host(&host)?;
        let bare = bare.strip_suffix('.').unwrap_or(bare);
        let (tenant, want) = self.hosts.get(bare)?;
        match want {
            None => Some(tenant),
            Some(p) if port == Some(*p) => Some(tenant),
            Some(_) => None,
        }
    }

    /// The tenant, if any, whose hostname has the same host part as
    /// `hostname`, other than `except`.
    pub fn hostname_owner(&self, hostname: &str, except: &str) -> Option<&str> {
        let (bare, _) = split_host(hostname)?;
        self.tenants
            .values()
            .filter(|t| t.name != except)
            .find(|t| {
                t.hostname
                    .as_deref()
                    .and_then(split_host)
                    .is_some_and(|(b, _)| b == bare)
            })
            .map(|t| t.name.as_str())
    }
}

/// An id for a record written before ids existed: stable across loads and
/// nodes, and different for a name deleted and created again (its creation
/// time differs), though not as strongly as a random id.
fn legacy_id(kind: &str, name: &str, created_unix: u64) -> String {
    let digest = Sha256::digest(format!("{kind}\0{name}\0{created_unix}").as_bytes());
    format!("legacy-{}", hex::encode(&digest[..12]))
}

fn robot_name_ok(r: &Robot) -> bool {
    match r.name.split_once(ROBOT_SEPARATOR) {
        Some((tenant, short)) => tenant == r.tenant && validate::user_name(short).is_ok(),
        None => false,
    }
}

fn keep_inside(pattern: &wharf_auth::RepoPattern, tenant: &str, kind: &str, name: &str) -> bool {
    let inside = pattern_in_tenant(pattern, tenant);
    if !inside {
        tracing::warn!(kind, name, pattern = %pattern, "dropping a pattern outside its tenant");
    }
    inside
}

fn skip(kind: &str, key: &str) {
    tracing::warn!(
        kind,
        key,
        "skipping a directory record that does not parse or match its key"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_meta::DirectoryRecord;

    fn rec(kind: &str, key: &str, value: serde_json::Value) -> DirectoryRecord {
        DirectoryRecord {
            kind: kind.into(),
            key: key.into(),
            value: value.to_string(),
        }
    }

    fn tenant(name: &str, hostname: Option<&str>) -> DirectoryRecord {
        rec(
            KIND_TENANT,
            name,
            serde_json::json!({"name": name, "hostname": hostname, "created_unix": 1}),
        )
    }

    fn robot(name: &str, tenant: &str, grants: &[&str]) -> DirectoryRecord {
        rec(
            KIND_ROBOT,
            name,
            serde_json::json!({"name": name, "tenant": tenant, "secret_hash": "00",
                "grants": grants, "expires_unix": null, "revoked": false, "created_unix": 1}),
        )
    }

    fn user(name: &str, tenant: &str, pattern: &str) -> DirectoryRecord {
        rec(
            KIND_USER,
            name,
            serde_json::json!({"name": name, "tenant": tenant, "password_hash": "x",
                "roles": [{"role": "admin", "repositories": pattern}], "created_unix": 1}),
        )
    }

    fn build(records: Vec<DirectoryRecord>) -> Snapshot {
        Snapshot::build(DirectorySnapshot {
            version: 7,
            records,
        })
    }

    #[test]
    fn bad_records_are_skipped_not_fatal() {
        let s = build(vec![
            tenant("acme", None),
            rec(KIND_TENANT, "broken", serde_json::json!("not an object")),
            rec(
                KIND_TENANT,
                "other",
                serde_json::json!({"name": "acme", "created_unix": 1}),
            ),
            robot("acme+ci", "globex", &[]),
            robot("acme+x", "acme", &[]),
            rec("future-kind", "k", serde_json::json!({})),
        ]);
        assert_eq!(s.version, 7);
        assert_eq!(s.tenants.len(), 1);
        // A robot whose name claims another tenant is refused outright.
        assert!(!s.robots.contains_key("acme+ci"));
        assert!(s.robots.contains_key("acme+x"));
    }

    #[test]
    fn orphans_are_inactive_and_remembered() {
        let s = build(vec![
            user("bob", "gone", "gone/*"),
            robot("gone+ci", "gone", &["gone/*:pull"]),
        ]);
        assert_eq!(s.subject_status("bob", 0), SubjectStatus::Inactive);
        assert_eq!(s.subject_status("gone+ci", 0), SubjectStatus::Inactive);
        assert!(s.credential("bob").is_none());
        assert!(s.grants_of("gone+ci", 0).is_none());
        assert_eq!(s.orphans.len(), 2);
    }

    #[test]
    fn out_of_tenant_patterns_written_behind_our_back_are_dropped() {
        let s = build(vec![
            tenant("acme", None),
            user("eve", "acme", "globex/*"),
            robot("acme+ci", "acme", &["globex/app:pull", "acme/app:pull"]),
        ]);
        assert_eq!(s.grants_of("eve", 0), Some(vec![]));
        let g = s.grants_of("acme+ci", 0).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].to_string(), "acme/app:pull");
    }

    #[test]
    fn hostname_lookup_rules() {
        let s = build(vec![
            tenant("acme", Some("reg.acme.io")),
            tenant("globex", Some("globex.example:5000")),
        ]);
        assert_eq!(s.tenant_for_host("reg.acme.io"), Some("acme"));
        assert_eq!(s.tenant_for_host("REG.Acme.IO:443"), Some("acme"));
        assert_eq!(s.tenant_for_host("reg.acme.io."), Some("acme"));
        assert_eq!(s.tenant_for_host("globex.example:5000"), Some("globex"));
        assert_eq!(s.tenant_for_host("globex.example"), None);
        assert_eq!(s.tenant_for_host("globex.example:5001"), None);
        assert_eq!(s.tenant_for_host("other.example"), None);
        assert_eq!(s.tenant_for_host("reg.acme.io:x"), None);
        assert_eq!(s.tenant_for_host("[::1]:5000"), None);
        assert_eq!(s.hostname_owner("reg.acme.io:8443", "globex"), Some("acme"));
        assert_eq!(s.hostname_owner("reg.acme.io", "acme"), None);
    }

    #[test]
    fn a_doubly_claimed_hostname_goes_to_the_first_tenant_by_name() {
        let s = build(vec![
            tenant("zeta", Some("shared.example")),
            tenant("alpha", Some("shared.example:5000")),
        ]);
        assert_eq!(s.tenant_for_host("shared.example:5000"), Some("alpha"));
        assert_eq!(s.tenant_for_host("shared.example"), None);
    }

    #[test]
    fn credential_debug_hides_the_hash() {
        let c = Credential::User {
            name: "alice".into(),
            tenant: "acme".into(),
            bcrypt_hash: "$2b$10$abcdef".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("abcdef"),
            "{shown}"
        );
    }

    #[test]
    fn robot_secrets_are_refused_when_revoked_or_expired() {
        let secret = "wharf_robot_s3cret";
        let cred = |revoked, expires_unix| Credential::Robot {
            name: "acme+ci".into(),
            tenant: "acme".into(),
            secret_hash: wharf_auth::hash_secret(secret),
            revoked,
            expires_unix,
        };
        assert!(verify_password(&cred(false, None), secret, 5));
        assert!(!verify_password(&cred(false, None), "wrong", 5));
        assert!(verify_password(&cred(false, Some(6)), secret, 5));
        assert!(!verify_password(&cred(false, Some(5)), secret, 5));
        assert!(!verify_password(&cred(true, None), secret, 5));
    }
}
