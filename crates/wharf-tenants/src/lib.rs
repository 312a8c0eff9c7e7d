//! The tenant directory: tenants, their users and robot accounts, and their
//! limits — kept in the metadata store, answered from each node's memory.
//!
//! A tenant owns a namespace (the first path component of its repository
//! names, [`wharf_core::RepoName::namespace`]), users (unique across all
//! tenants, because `docker login` sends only a user name) with roles over
//! the tenant's repositories, robot accounts (`<tenant>+<name>`, a random
//! secret, explicit grants), a quota, an optional hostname, an optional
//! share of a node's request slots, immutable-tag rules, and an optional
//! retention policy (`wharf_retention`, compiled with each snapshot).
//!
//! Layout:
//!
//! - [`model`]: the records as stored (JSON in `wharf_meta` directory
//!   records of kinds `tenant`, `user`, `robot`) and the views the admin API
//!   may serialize.
//! - [`validate`]: the grammar of names and hostnames, and the rule that a
//!   repository pattern stays inside its tenant.
//! - [`immutable`]: immutable-tag rules: their limits, compiled with each
//!   snapshot, and which one protects a tag (the registry asks through
//!   [`wharf_core::ImmutableTagSource`], implemented by [`Directory`]).
//! - [`snapshot`]: one immutable, indexed version of the directory, the
//!   [`Credential`] and grant lookups, and [`verify_password`].
//! - [`notify`]: a tenant's notification endpoints (webhooks of its
//!   events, `wharf_notify`): the stored record with its signing secret,
//!   the view without it, and the limit per tenant.
//! - [`directory`]: [`Directory`], which holds the current snapshot, loads
//!   and refreshes it, and makes the admin mutations.
//! - [`error`]: [`DirectoryError`], what every call can fail with.
//!
//! Owns: the directory's rules (names, uniqueness, patterns inside the
//! tenant, roles to actions), password hashing (bcrypt, cost 10) and robot
//! secrets (256 random bits, stored as SHA-256 via `wharf_auth`).
//!
//! Must never: make a request wait on the metadata store (design invariant
//! 3: every lookup answers from the in-memory snapshot, refreshed in the
//! background, and kept when the store fails); put a password or secret
//! hash or a notification endpoint's secret into anything the admin API
//! serializes (but the tenant-move export,
//! [`Directory::export_accounts`], which exists to recreate accounts
//! identically on another cell), or print one in `Debug`;
//! grant a user or robot anything outside its tenant; or know about HTTP
//! (errors are values the API layer maps to responses).
//!
//! Dependencies beyond the workspace's own: `bcrypt` for passwords (the
//! hash `docker login` credentials have always been stored with in
//! htpasswd), `getrandom` and `base64` for robot secrets, `serde_json` for
//! records, `regex` for immutable-tag rules (linear-time matching, bounded
//! compiled size).

#![forbid(unsafe_code)]

pub mod directory;
pub mod error;
pub mod immutable;
pub mod model;
pub mod notify;
pub mod snapshot;
pub mod validate;

pub use directory::{
    AccountsImported, Directory, RobotSecret, TenantExport, BCRYPT_COST, MAX_PASSWORD_LEN,
    MAX_ROBOT_GRANTS, MAX_ROLE_BINDINGS, MIN_PASSWORD_LEN, ROBOT_SECRET_PREFIX,
};
pub use error::DirectoryError;
pub use model::{
    Fence, NewTenant, QuotaPatch, Revoked, RobotView, Role, RoleBinding, RoleSpec, Tenant,
    TenantPatch, TenantQuota, Usage, UserView, DEFAULT_FENCE_RETRY_SECS, MAX_FENCE_LEASE_SECS,
    MAX_FENCE_RETRY_SECS, MIN_FENCE_LEASE_SECS, MIN_FENCE_RETRY_SECS,
};
pub use notify::{
    GeneratedSecret, NotifyEndpointInput, NotifyEndpointView, KIND_NOTIFY, MAX_NOTIFY_ENDPOINTS,
};
pub use snapshot::{verify_password, Credential, SubjectStatus};

#[cfg(test)]
mod tests;
