//! A tenant's notification endpoints: the webhooks its events (pushes,
//! tag moves, deletes and, if asked, pulls in its repositories) go to,
//! besides the node's own (`wharf_notify`, docs/notifications.md).
//!
//! Owns: the stored record (kind [`KIND_NOTIFY`], key `tenant/id`), the
//! view the admin API shows ([`NotifyEndpointView`]), the input that
//! creates or replaces one ([`NotifyEndpointInput`]), the limit per
//! tenant ([`MAX_NOTIFY_ENDPOINTS`]), and turning records into
//! [`wharf_notify::Target`]s for the request path.
//!
//! Must never: put an endpoint's secret in a view, an error or `Debug`
//! (it is stored as given, since signing needs it, and shown only once:
//! in the answer that generated it); or give one tenant's events to
//! another tenant's endpoint (a target's id starts with its tenant, and
//! the snapshot indexes targets by tenant).

use serde::{Deserialize, Serialize};
use wharf_notify::target::{check_id, check_secret, check_url};
use wharf_notify::{Secret, Target};

/// Directory record kind of a tenant's notification endpoint (key
/// `tenant/id`).
pub const KIND_NOTIFY: &str = "notify-endpoint";

/// The most notification endpoints one tenant may have (each is a queue,
/// a delivery task and a set of metric series on every node that serves
/// the tenant's events).
pub const MAX_NOTIFY_ENDPOINTS: usize = 4;

/// A notification endpoint as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NotifyRecord {
    pub tenant: String,
    pub id: String,
    pub url: String,
    /// The HMAC key of its deliveries.
    pub secret: String,
    #[serde(default)]
    pub pulls: bool,
    pub created_unix: u64,
    /// The tenant account that set it (`None`: the operator). An endpoint
    /// a tenant set delivers to public addresses only
    /// (`wharf_notify::public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
}

impl std::fmt::Debug for NotifyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyRecord")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("url", &self.url)
            .field("pulls", &self.pulls)
            .field("set_by", &self.set_by)
            .finish_non_exhaustive()
    }
}

impl NotifyRecord {
    /// The record's key.
    pub fn key(tenant: &str, id: &str) -> String {
        format!("{tenant}/{id}")
    }

    pub fn view(&self) -> NotifyEndpointView {
        NotifyEndpointView {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
            url: self.url.clone(),
            pulls: self.pulls,
            created_unix: self.created_unix,
            set_by: self.set_by.clone(),
        }
    }

    /// What the request path sends to: id `tenant/id`.
    pub fn target(&self) -> Result<Target, String> {
        Target::new(
            NotifyRecord::key(&self.tenant, &self.id),
            &self.url,
            Secret::new(self.secret.as_bytes()),
            self.pulls,
        )
        .map(|t| t.with_public_only(self.set_by.is_some()))
    }

    /// The rules a record must meet to be written.
    pub fn check(&self) -> Result<(), String> {
        check_id(&self.id)?;
        check_url(&self.url)?;
        check_secret(&self.secret)
    }
}

/// A notification endpoint as the admin API shows it: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotifyEndpointView {
    pub tenant: String,
    pub id: String,
    pub url: String,
    /// Whether it gets `manifest.pull` events.
    pub pulls: bool,
    pub created_unix: u64,
    /// The tenant account that set it; `None`: the operator.
    pub set_by: Option<String>,
}

/// What the admin API sends to create or replace an endpoint.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyEndpointInput {
    pub url: String,
    /// The signing secret; absent: a new one is generated when the
    /// endpoint is created, and kept when it is replaced.
    #[serde(default)]
    pub secret: Option<String>,
    /// Absent: off when created, kept when replaced.
    #[serde(default)]
    pub pulls: Option<bool>,
}

impl std::fmt::Debug for NotifyEndpointInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyEndpointInput")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("pulls", &self.pulls)
            .finish()
    }
}

/// A secret the directory generated for a new endpoint, shown once.
/// `Debug` never prints it and it is not `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedSecret(pub(crate) String);

impl GeneratedSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for GeneratedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GeneratedSecret(<redacted>)")
    }
}
