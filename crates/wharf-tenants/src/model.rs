//! What the directory holds, as stored (JSON in directory records) and as
//! shown to the admin API.
//!
//! Owns: [`Tenant`], its [`TenantQuota`], its immutable-tag rules (as
//! written: [`crate::immutable`] checks and compiles them) and its
//! retention policy (as written: `wharf_retention` checks it); the inputs that create and
//! change one ([`NewTenant`], [`TenantPatch`]); [`Role`]s and their
//! bindings; the stored user and robot records; and the views the admin API
//! may serialize ([`UserView`], [`RobotView`], [`Usage`]).
//!
//! Must never: let a password or secret hash reach a view. The stored
//! records (`User`, `Robot`) are crate-private and do not print their
//! hashes in `Debug`; everything public that is `Serialize` holds no hash.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wharf_auth::{parse_grant, Action, Actions, Grant, RepoPattern};
use wharf_core::{ImmutableTagRule, Quota};
use wharf_retention::Policy;

/// Directory record kind of a [`Tenant`].
pub const KIND_TENANT: &str = "tenant";
/// Directory record kind of a user.
pub const KIND_USER: &str = "user";
/// Directory record kind of a robot account.
pub const KIND_ROBOT: &str = "robot";
/// Directory record kind of a deleted user's name (value: [`Retired`]),
/// kept for longer than any token lives, so tokens issued to the user are
/// refused, not honoured until they expire.
pub const KIND_RETIRED: &str = "retired-user";
/// Directory record kind of the registry-wide session generation (key
/// [`REVOCATION_ALL`], value: [`Revocation`]): bumping it ends every
/// token and refresh token issued before.
pub const KIND_REVOCATION: &str = "revocation";
/// The key of the one [`KIND_REVOCATION`] record.
pub const REVOCATION_ALL: &str = "all";

/// A generation of sessions: tokens issued under an older one are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub generation: u64,
}

/// Directory record kind of a deleted tenant's name (key: the name, value:
/// [`DeletedTenant`]): written before the tenant record goes and kept, so
/// that a tenant created later under the name first purges whatever the
/// deletion (or a node still serving the old tenant from its caches) left.
pub const KIND_DELETED_TENANT: &str = "deleted-tenant";

/// When a tenant was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedTenant {
    /// Milliseconds since the Unix epoch.
    pub deleted_unix_ms: u64,
}

/// When a user was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub retired_unix: u64,
}

/// A customer: owns the namespace `name/` and the users and robots bound to
/// it. It holds no secret, so it is its own view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The namespace: first path component of the tenant's repositories.
    pub name: String,
    /// A hostname (with an optional port) whose requests belong to this
    /// tenant, unique across tenants.
    #[serde(default)]
    pub hostname: Option<String>,
    /// What the namespace may hold.
    #[serde(default)]
    pub quota: TenantQuota,
    /// The largest fraction of a node's request slots the tenant may hold
    /// at once; `None` leaves it to the node's default.
    #[serde(default)]
    pub concurrency_share: Option<f64>,
    /// When it was created, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Bumped to end every session (tokens, refresh tokens) of the
    /// tenant's users and robots at once.
    #[serde(default)]
    pub sessions_generation: u64,
    /// Tags that, once pushed, cannot be moved or deleted; only the
    /// operator (the admin API) changes them.
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableTagRule>,
    /// What retention deletes from the tenant's repositories
    /// (`wharf_retention` gives the rules their meaning); `None`: nothing.
    /// Checked when written; only the operator (the admin API) sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Policy>,
    /// The write fence of a tenant being moved to another cell: while it
    /// stands, every node of the cell refuses the tenant's writes on the
    /// registry port (`503`, `Retry-After`); pulls go on. Operational state
    /// of this cell: only the admin API's fence routes set it, and a
    /// tenant moved to another cell does not take it along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

/// A tenant's write fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    /// What refused writes are told to wait (`Retry-After`), in seconds.
    pub retry_after_secs: u32,
    /// When the fence was put up, seconds since the Unix epoch.
    pub since_unix: u64,
    /// When a leased fence lapses by itself unless renewed, milliseconds
    /// since the Unix epoch; `None`: it stands until taken down. A mover
    /// that dies cannot leave the tenant's writes refused for longer than
    /// its lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_unix_ms: Option<u64>,
}

impl Fence {
    /// Whether the fence still stood at `unix_ms` (a lease past its end
    /// does not).
    pub fn stands_at(&self, unix_ms: u64) -> bool {
        self.until_unix_ms.is_none_or(|until| unix_ms < until)
    }
}

/// The shortest `Retry-After` a fence may give.
pub const MIN_FENCE_RETRY_SECS: u32 = 1;
/// The longest: a move's fence lasts seconds, and clients must not give
/// up on the tenant for longer than that.
pub const MAX_FENCE_RETRY_SECS: u32 = 60;
/// The `Retry-After` of a fence put up without one.
pub const DEFAULT_FENCE_RETRY_SECS: u32 = 5;
/// The shortest lease a fence may be given.
pub const MIN_FENCE_LEASE_SECS: u32 = 1;
/// The longest: a lease exists so that a fence nobody renews comes down
/// by itself within seconds.
pub const MAX_FENCE_LEASE_SECS: u32 = 300;

/// A tenant's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Bytes of distinct blobs and manifests across its repositories.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Repositories holding anything.
    #[serde(default)]
    pub repositories: Option<u64>,
}

impl From<TenantQuota> for Quota {
    fn from(q: TenantQuota) -> Quota {
        Quota {
            max_bytes: q.bytes,
            max_repositories: q.repositories,
        }
    }
}

/// What the admin API sends to create a tenant.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub quota: TenantQuota,
    #[serde(default)]
    pub concurrency_share: Option<f64>,
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableTagRule>,
    #[serde(default)]
    pub retention: Option<Policy>,
}

/// A change to a tenant. Each field: absent (`None`) keeps the value,
/// `null` (`Some(None)`) clears it, a value (`Some(Some(v))`) sets it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default, deserialize_with = "present")]
    pub hostname: Option<Option<String>>,
    /// `null` lifts both limits; an object changes the limits it names.
    #[serde(default, deserialize_with = "present")]
    pub quota: Option<Option<QuotaPatch>>,
    #[serde(default, deserialize_with = "present")]
    pub concurrency_share: Option<Option<f64>>,
    /// A list replaces the tenant's immutable-tag rules; `null` or `[]`
    /// lifts them all.
    #[serde(default, deserialize_with = "present")]
    pub immutable_tags: Option<Option<Vec<ImmutableTagRule>>>,
    /// A policy replaces the tenant's retention policy; `null` removes it
    /// (retention then deletes nothing).
    #[serde(default, deserialize_with = "present")]
    pub retention: Option<Option<Policy>>,
}

/// A change to a tenant's limits, field by field as in [`TenantPatch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaPatch {
    #[serde(default, deserialize_with = "present")]
    pub bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub repositories: Option<Option<u64>>,
}

/// With `#[serde(default)]`, tells an absent field (`None`) from `null`
/// (`Some(None)`).
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl TenantPatch {
    pub(crate) fn apply(&self, tenant: &mut Tenant) {
        if let Some(hostname) = &self.hostname {
            tenant.hostname = hostname.clone();
        }
        match self.quota {
            None => {}
            Some(None) => tenant.quota = TenantQuota::default(),
            Some(Some(q)) => {
                if let Some(bytes) = q.bytes {
                    tenant.quota.bytes = bytes;
                }
                if let Some(repositories) = q.repositories {
                    tenant.quota.repositories = repositories;
                }
            }
        }
        if let Some(share) = self.concurrency_share {
            tenant.concurrency_share = share;
        }
        if let Some(rules) = &self.immutable_tags {
            tenant.immutable_tags = rules.clone().unwrap_or_default();
        }
        if let Some(policy) = &self.retention {
            tenant.retention = policy.clone();
        }
    }
}

/// What a user may do on the repositories of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Pull, push and delete.
    Admin,
    /// Pull and push.
    Push,
    /// Pull.
    Pull,
}

impl Role {
    pub fn actions(self) -> Actions {
        let pull = Actions::only(Action::Pull);
        match self {
            Role::Admin => pull.with(Action::Push).with(Action::Delete),
            Role::Push => pull.with(Action::Push),
            Role::Pull => pull,
        }
    }
}

/// A role over some of the tenant's repositories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBinding {
    pub role: Role,
    /// Always inside the tenant (`acme/*`, `acme/team/*`, `acme/app`).
    #[serde(with = "as_string")]
    pub repositories: RepoPattern,
}

impl RoleBinding {
    pub fn grant(&self) -> Grant {
        Grant::new(self.repositories.clone(), self.role.actions())
    }
}

/// A role as the admin API asks for it: without `repositories` it covers
/// the whole tenant (`<tenant>/*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub role: Role,
    #[serde(default, with = "opt_as_string")]
    pub repositories: Option<RepoPattern>,
}

impl RoleSpec {
    /// `role` over the whole tenant.
    pub fn tenant_wide(role: Role) -> RoleSpec {
        RoleSpec {
            role,
            repositories: None,
        }
    }
}

/// A user as stored (kind [`KIND_USER`], key = name).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct User {
    pub name: String,
    pub tenant: String,
    /// bcrypt, cost [`crate::BCRYPT_COST`].
    pub password_hash: String,
    pub roles: Vec<RoleBinding>,
    pub created_unix: u64,
    /// Never given to another account (see [`wharf_auth::Identity`]);
    /// empty in records written before ids existed (the snapshot derives
    /// one).
    #[serde(default)]
    pub id: String,
    /// Bumped by every change of the password or roles, and by a
    /// revocation of the user's sessions.
    #[serde(default)]
    pub generation: u64,
}

impl User {
    pub fn view(&self) -> UserView {
        UserView {
            name: self.name.clone(),
            tenant: self.tenant.clone(),
            roles: self.roles.clone(),
            created_unix: self.created_unix,
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A robot account as stored (kind [`KIND_ROBOT`], key = name).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Robot {
    /// `<tenant>+<short>`.
    pub name: String,
    pub tenant: String,
    /// SHA-256 hex of the secret ([`wharf_auth::hash_secret`]).
    pub secret_hash: String,
    #[serde(with = "grants_as_strings")]
    pub grants: Vec<Grant>,
    pub expires_unix: Option<u64>,
    pub revoked: bool,
    pub created_unix: u64,
    /// As a user's [`User::id`].
    #[serde(default)]
    pub id: String,
}

impl Robot {
    pub fn view(&self) -> RobotView {
        RobotView {
            name: self.name.clone(),
            tenant: self.tenant.clone(),
            grants: self.grants.clone(),
            expires_unix: self.expires_unix,
            revoked: self.revoked,
            created_unix: self.created_unix,
        }
    }

    /// Usable: not revoked and not expired at `now_unix`.
    pub fn active_at(&self, now_unix: u64) -> bool {
        !self.revoked && self.expires_unix.is_none_or(|at| now_unix < at)
    }
}

impl fmt::Debug for Robot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Robot")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("grants", &self.grants)
            .field("expires_unix", &self.expires_unix)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A user as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub tenant: String,
    pub roles: Vec<RoleBinding>,
    pub created_unix: u64,
}

/// A robot account as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotView {
    /// `<tenant>+<short>`: the user name it logs in with.
    pub name: String,
    pub tenant: String,
    /// `acme/app:pull,push` strings.
    #[serde(with = "grants_as_strings")]
    pub grants: Vec<Grant>,
    pub expires_unix: Option<u64>,
    pub revoked: bool,
    pub created_unix: u64,
}

/// What a tenant holds against its quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub tenant: String,
    pub bytes: u64,
    pub repositories: u64,
    /// Upload sessions open in the tenant's repositories.
    pub upload_sessions: u64,
    /// Bytes those sessions hold (they count against the byte quota).
    pub upload_bytes: u64,
    pub quota: TenantQuota,
}

/// What a revocation of sessions ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Refresh tokens deleted from the metadata store.
    pub refresh_tokens: u64,
}

/// A value kept as its `Display` form and read back with `FromStr`.
mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// [`as_string`] for an optional value.
mod opt_as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

/// Grants as `acme/app:pull,push` strings, the form operators write.
mod grants_as_strings {
    use super::*;
    use serde::de::Error as _;
    use serde::ser::SerializeSeq as _;

    pub fn serialize<S: Serializer>(grants: &[Grant], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(grants.len()))?;
        for g in grants {
            seq.serialize_element(&g.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Grant>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|g| parse_grant(g).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_actions() {
        assert_eq!(Role::Admin.actions().to_string(), "pull,push,delete");
        assert_eq!(Role::Push.actions().to_string(), "pull,push");
        assert_eq!(Role::Pull.actions().to_string(), "pull");
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let p: TenantPatch =
            serde_json::from_str(r#"{"hostname":null,"quota":{"bytes":5}}"#).unwrap();
        assert_eq!(p.hostname, Some(None));
        assert_eq!(p.concurrency_share, None);
        let q = p.quota.unwrap().unwrap();
        assert_eq!((q.bytes, q.repositories), (Some(Some(5)), None));

        let mut t = Tenant {
            name: "acme".into(),
            hostname: Some("reg.acme.io".into()),
            quota: TenantQuota {
                bytes: Some(1),
                repositories: Some(2),
            },
            concurrency_share: Some(0.5),
            created_unix: 1,
            sessions_generation: 0,
            immutable_tags: vec![ImmutableTagRule {
                tag: "v.*".into(),
                repository: None,
            }],
            retention: None,
            fence: None,
        };
        p.apply(&mut t);
        assert_eq!(t.hostname, None);
        assert_eq!(t.quota.bytes, Some(5));
        assert_eq!(t.quota.repositories, Some(2));
        assert_eq!(t.concurrency_share, Some(0.5));
        assert_eq!(t.immutable_tags.len(), 1, "absent: kept");

        let replace: TenantPatch = serde_json::from_str(
            r#"{"immutable_tags":[{"tag":"a"},{"tag":"b","repository":"team/.*"}]}"#,
        )
        .unwrap();
        replace.apply(&mut t);
        assert_eq!(t.immutable_tags.len(), 2);
        assert_eq!(t.immutable_tags[1].repository.as_deref(), Some("team/.*"));
        for lift in [r#"{"immutable_tags":null}"#, r#"{"immutable_tags":[]}"#] {
            let mut t = t.clone();
            serde_json::from_str::<TenantPatch>(lift)
                .unwrap()
                .apply(&mut t);
            assert!(t.immutable_tags.is_empty(), "{lift}");
        }

        let clear: TenantPatch =
            serde_json::from_str(r#"{"quota":null,"concurrency_share":null}"#).unwrap();
        clear.apply(&mut t);
        assert_eq!(t.quota, TenantQuota::default());
        assert_eq!(t.concurrency_share, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<TenantPatch>(r#"{"hostnme":"x"}"#).is_err());
        assert!(serde_json::from_str::<NewTenant>(r#"{"name":"a","x":1}"#).is_err());
        assert!(serde_json::from_str::<RoleSpec>(r#"{"role":"pull","repos":"a/*"}"#).is_err());
    }

    #[test]
    fn role_specs_read_patterns_and_default_to_none() {
        let s: RoleSpec = serde_json::from_str(r#"{"role":"push"}"#).unwrap();
        assert_eq!(s, RoleSpec::tenant_wide(Role::Push));
        let s: RoleSpec =
            serde_json::from_str(r#"{"role":"admin","repositories":"acme/team/*"}"#).unwrap();
        assert_eq!(s.repositories.unwrap().to_string(), "acme/team/*");
        assert!(serde_json::from_str::<RoleSpec>(r#"{"role":"root"}"#).is_err());
        assert!(
            serde_json::from_str::<RoleSpec>(r#"{"role":"pull","repositories":"ACME/*"}"#).is_err()
        );
    }

    #[test]
    fn stored_records_round_trip_and_debug_hides_hashes() {
        let robot = Robot {
            name: "acme+ci".into(),
            tenant: "acme".into(),
            secret_hash: "0123abcd".into(),
            grants: vec![parse_grant("acme/app:pull,push").unwrap()],
            expires_unix: Some(10),
            revoked: false,
            created_unix: 1,
            id: "r1".into(),
        };
        let json = serde_json::to_string(&robot).unwrap();
        assert!(
            json.contains(r#""grants":["acme/app:pull,push"]"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Robot>(&json).unwrap(), robot);
        assert!(!format!("{robot:?}").contains("0123abcd"));

        let user = User {
            name: "alice".into(),
            tenant: "acme".into(),
            password_hash: "$2b$10$secret".into(),
            roles: vec![RoleBinding {
                role: Role::Pull,
                repositories: "acme/*".parse().unwrap(),
            }],
            created_unix: 1,
            id: "u1".into(),
            generation: 3,
        };
        let json = serde_json::to_string(&user).unwrap();
        assert!(json.contains(r#""repositories":"acme/*""#), "{json}");
        assert_eq!(serde_json::from_str::<User>(&json).unwrap(), user);
        assert!(!format!("{user:?}").contains("secret"));
    }

    #[test]
    fn robot_activity_follows_revocation_and_expiry() {
        let mut r = Robot {
            name: "acme+ci".into(),
            tenant: "acme".into(),
            secret_hash: String::new(),
            grants: vec![],
            expires_unix: Some(100),
            revoked: false,
            created_unix: 1,
            id: String::new(),
        };
        assert!(r.active_at(99));
        assert!(!r.active_at(100));
        r.expires_unix = None;
        assert!(r.active_at(u64::MAX));
        r.revoked = true;
        assert!(!r.active_at(0));
    }
}
