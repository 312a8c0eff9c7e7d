//! The admin API: tenants, users, robot accounts, quotas and usage (and,
//! in modules of their own, retention, fences, tenant moves and a
//! tenant's webhooks, `admin_notify`), as JSON over HTTP under `/admin/v1`
//! on the admin port (described by `docs/admin-api.yaml`; `wharf admin …`
//! is its command-line client).
//!
//! Owns: the admin routes, checking the operator's admin token, reading
//! request JSON into the directory's input types, and shaping answers
//! (times as RFC 3339, errors in the OCI error envelope with codes
//! `UNAUTHORIZED`, `NOT_FOUND`, `CONFLICT`, `INVALID`, `UNAVAILABLE`).
//! What a tenant, user or robot may be is `wharf-tenants`' business.
//!
//! Must never: return or log a password, a robot secret (other than once,
//! in the answer that created it), a hash (but in a tenant-move export,
//! `admin_move`) or the admin token; accept a body larger than
//! [`MAX_BODY`] (but a tenant-move import or blob copy, which stream theirs
//! with bounds of their own); or serve these routes on the registry port.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_auth::{parse_grant, verify_secret, Grant};
use wharf_tenants::{Directory, DirectoryError, NewTenant, RoleSpec, TenantPatch};

use crate::admin_rights::tenant_caller;
pub(crate) use crate::admin_rights::Caller;
use crate::auth::rfc3339;
use base64::Engine as _;

/// The largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What the admin routes need.
pub struct AdminApi {
    pub(crate) directory: Directory,
    /// SHA-256 (hex) of the admin token; `None`: no token asked for (the
    /// admin port is then open to whoever can reach it: loopback by
    /// default).
    token_hash: Option<String>,
    /// The registry retention is applied through; `None`: the retention
    /// route answers `503` (an admin API serving the directory alone).
    pub(crate) registry: Option<wharf_registry::Registry>,
    /// This node's per-tenant traffic (writes in flight, for the fence
    /// routes); `None`: reported as none.
    pub(crate) traffic: Option<Arc<crate::tenant_traffic::TenantTraffic>>,
    /// Tenant accounts' logins (the directory's users and robots), for the
    /// few routes they may call on their own tenant
    /// (`crate::admin_rights`): its own failed-login limiter and cache,
    /// apart from the registry port's.
    pub(crate) logins: crate::auth::Users,
    /// Whose passwords the registry port checks (for unlocking accounts);
    /// `None` with `--auth none`.
    registry_logins: Option<Arc<crate::auth::Users>>,
    /// The registry port's notifier, whose counters the notification
    /// routes show; `None`: shown as none.
    pub(crate) notifier: Option<wharf_notify::Notifier>,
}

impl AdminApi {
    pub fn new(directory: Directory, token_hash: Option<String>) -> AdminApi {
        AdminApi {
            logins: crate::auth::Users::directory_only(directory.clone()),
            directory,
            token_hash: token_hash.map(|h| h.to_ascii_lowercase()),
            registry: None,
            traffic: None,
            registry_logins: None,
            notifier: None,
        }
    }

    /// Shows the delivery counters of `notifier` (the registry port's)
    /// with each tenant's notification endpoints.
    pub fn with_notifier(mut self, notifier: Option<wharf_notify::Notifier>) -> AdminApi {
        self.notifier = notifier;
        self
    }

    /// Serves `POST /admin/v1/logins/unlock` over `users`, the registry
    /// port's (and its token endpoint's) password checks.
    pub fn with_logins(mut self, users: Option<Arc<crate::auth::Users>>) -> AdminApi {
        self.registry_logins = users;
        self
    }

    /// Serves the routes that act on the registry's content (retention)
    /// through `registry`.
    pub fn with_registry(mut self, registry: wharf_registry::Registry) -> AdminApi {
        self.registry = Some(registry);
        self
    }

    /// Reports this node's writes in flight per tenant from `traffic` (the
    /// registry port's, so the fence routes see the writes it counts).
    pub fn with_traffic(mut self, traffic: Arc<crate::tenant_traffic::TenantTraffic>) -> AdminApi {
        self.traffic = Some(traffic);
        self
    }
}

/// Reads an admin token file (`sha256:<64 hex>`): the one reader the node
/// and the fleet service share, in `wharf_auth`.
pub use wharf_auth::parse_token_hash;

/// The admin API's routes, to merge into the admin port's router.
pub fn admin_api_router(api: Arc<AdminApi>) -> Router {
    Router::new()
        .route("/admin/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/admin/v1/tenants/{tenant}",
            get(get_tenant).patch(patch_tenant).delete(delete_tenant),
        )
        .route("/admin/v1/tenants/{tenant}/usage", get(usage))
        .route("/admin/v1/tenants/{tenant}/users", get(list_users))
        .route(
            "/admin/v1/tenants/{tenant}/users/{user}",
            put(put_user).delete(delete_user),
        )
        .route(
            "/admin/v1/tenants/{tenant}/users/{user}/sessions",
            delete(revoke_user_sessions),
        )
        .route(
            "/admin/v1/tenants/{tenant}/sessions",
            delete(revoke_tenant_sessions),
        )
        .route("/admin/v1/sessions", delete(revoke_all_sessions))
        .route("/admin/v1/logins/unlock", post(unlock_logins))
        .route(
            "/admin/v1/tenants/{tenant}/robots",
            get(list_robots).post(create_robot),
        )
        .route(
            "/admin/v1/tenants/{tenant}/robots/{robot}",
            delete(revoke_robot),
        )
        .merge(crate::admin_retention::routes())
        .merge(crate::admin_fence::routes())
        .merge(crate::admin_move::routes())
        .merge(crate::admin_notify::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(api.clone(), require_token))
        .with_state(api)
}

/// `router` behind the same admin token check as the admin API (for
/// `/metrics` when the operator asks for it).
pub fn with_admin_token(router: Router, api: Arc<AdminApi>) -> Router {
    router.layer(middleware::from_fn_with_state(api, require_token))
}

/// An admin API failure: status, code, message.
pub(crate) struct Failure(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
);

impl Failure {
    pub(crate) fn invalid(msg: impl Into<String>) -> Failure {
        Failure(StatusCode::BAD_REQUEST, "INVALID", msg.into())
    }
}

impl From<DirectoryError> for Failure {
    fn from(e: DirectoryError) -> Failure {
        match e {
            DirectoryError::NotFound(m) => Failure(StatusCode::NOT_FOUND, "NOT_FOUND", m),
            DirectoryError::Conflict(m) => Failure(StatusCode::CONFLICT, "CONFLICT", m),
            DirectoryError::Invalid(m) => Failure::invalid(m),
            DirectoryError::Unavailable(m) => {
                Failure(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m)
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let Failure(status, code, message) = self;
        let body = json!({ "errors": [{ "code": code, "message": message }] });
        let mut resp = (status, json_body(&body)).into_response();
        set_json(&mut resp);
        match status {
            StatusCode::UNAUTHORIZED => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wharf-admin\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

pub(crate) type Answer = Result<Response, Failure>;

fn json_body(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn set_json(resp: &mut Response) {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) fn answer(status: StatusCode, v: Value) -> Answer {
    let mut resp = (status, json_body(&v)).into_response();
    set_json(&mut resp);
    Ok(resp)
}

/// A view as JSON, with `*_unix` times turned into RFC 3339 (`created`,
/// `expires`).
pub(crate) fn view(v: impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for (from, to) in [("created_unix", "created"), ("expires_unix", "expires")] {
            if let Some(t) = map.remove(from) {
                let t = t.as_u64().map_or(Value::Null, |s| Value::from(rfc3339(s)));
                map.insert(to.into(), t);
            }
        }
    }
    v
}

/// Every admin request passes here first: the caller is authorized once
/// for all routes (and for unknown paths), and put in the request's
/// extensions as a [`Caller`].
async fn require_token(
    State(api): State<Arc<AdminApi>>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<crate::server::ClientAddr>()
        .map(|c| c.0.ip());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match authorize(&api, request.headers(), &method, &path, client).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Who the caller is: the operator with the admin token (or anyone, when
/// none is configured), or a tenant's account with its own password on
/// the routes `crate::admin_rights` opens to it.
async fn authorize(
    api: &AdminApi,
    headers: &HeaderMap,
    method: &axum::http::Method,
    path: &str,
    client: Option<std::net::IpAddr>,
) -> Result<Caller, Failure> {
    let Some(expected) = &api.token_hash else {
        return Ok(Caller::Operator);
    };
    let denied = || {
        Failure(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid admin token is required (Authorization: Bearer <token>; `wharf admin` \
             reads it from --token-file or WHARF_ADMIN_TOKEN_FILE), or a tenant account's own \
             user name and password (Basic) for its tenant's usage and deletions"
                .into(),
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .filter(|v| v.len() <= 1024)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(denied)?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(denied)?;
        let (user, password) = decoded.split_once(':').ok_or_else(denied)?;
        return tenant_caller(api, method, path, user, password, client).await;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(denied());
    }
    if verify_secret(token.trim(), expected) {
        Ok(Caller::Operator)
    } else {
        tracing::debug!("admin API: wrong admin token");
        Err(denied())
    }
}

/// Reads a JSON body of type `T`, of at most [`MAX_BODY`] bytes.
pub(crate) async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Failure> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.trim_start().starts_with("application/json") {
            return Err(Failure::invalid(format!(
                "Content-Type must be application/json, not {ct:?}"
            )));
        }
    }
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Failure::invalid(format!("the body is longer than {MAX_BODY} bytes")))?;
    serde_json::from_slice(&body).map_err(|e| Failure::invalid(format!("bad JSON body: {e}")))
}

async fn not_found() -> Answer {
    Err(Failure(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such admin API route (see docs/admin-api.yaml)".into(),
    ))
}

async fn list_tenants(State(api): State<Arc<AdminApi>>) -> Answer {
    let tenants: Vec<Value> = api.directory.tenants().into_iter().map(view).collect();
    answer(StatusCode::OK, json!({ "tenants": tenants }))
}

async fn create_tenant(State(api): State<Arc<AdminApi>>, headers: HeaderMap, body: Body) -> Answer {
    let new: NewTenant = read_json(&headers, body).await?;
    let tenant = api.directory.create_tenant(new).await?;
    tracing::info!(tenant = %tenant.name, "admin: tenant created");
    answer(StatusCode::CREATED, view(tenant))
}

pub(crate) fn known_tenant(api: &AdminApi, name: &str) -> Result<wharf_tenants::Tenant, Failure> {
    api.directory.tenant(name).ok_or_else(|| {
        Failure(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no tenant {name:?}"),
        )
    })
}

async fn get_tenant(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    answer(StatusCode::OK, view(known_tenant(&api, &tenant)?))
}

async fn patch_tenant(
    State(api): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body,
) -> Answer {
    let patch: TenantPatch = read_json(&headers, body).await?;
    let t = api.directory.update_tenant(&tenant, &patch).await?;
    tracing::info!(tenant = %t.name, "admin: tenant changed");
    answer(StatusCode::OK, view(t))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: Option<String>,
}

async fn delete_tenant(
    State(api): State<Arc<AdminApi>>,
    Path(tenant): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Answer {
    let force = match q.force.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(Failure::invalid(format!("force={other:?}: true or false"))),
    };
    api.directory.delete_tenant(&tenant, force).await?;
    tracing::info!(%tenant, force, "admin: tenant deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn usage(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    let u = api.directory.usage(&tenant).await?;
    answer(StatusCode::OK, view(u))
}

async fn list_users(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    let users: Vec<Value> = api
        .directory
        .users(&tenant)?
        .into_iter()
        .map(view)
        .collect();
    answer(StatusCode::OK, json!({ "users": users }))
}

/// `PUT …/users/{user}`: the password (required to create) and roles.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInput {
    #[serde(default)]
    password: Option<String>,
    /// Absent on an update: the roles stay as they are.
    #[serde(default)]
    roles: Option<Vec<RoleSpec>>,
}

async fn put_user(
    State(api): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path((tenant, user)): Path<(String, String)>,
    body: Body,
) -> Answer {
    let input: UserInput = read_json(&headers, body).await?;
    let roles = match input.roles {
        Some(roles) => roles,
        // Keep what the user has (a password change alone).
        None => api
            .directory
            .users(&tenant)?
            .into_iter()
            .find(|u| u.name == user)
            .map(|u| {
                u.roles
                    .into_iter()
                    .map(|b| RoleSpec {
                        role: b.role,
                        repositories: Some(b.repositories),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let created = api
        .directory
        .put_user(&tenant, &user, input.password.as_deref(), &roles)
        .await?;
    tracing::info!(%tenant, %user, created, "admin: user written");
    let shown = api
        .directory
        .users(&tenant)?
        .into_iter()
        .find(|u| u.name == user)
        .map(view)
        .unwrap_or(Value::Null);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(status, shown)
}

async fn delete_user(
    State(api): State<Arc<AdminApi>>,
    Path((tenant, user)): Path<(String, String)>,
) -> Answer {
    api.directory.delete_user(&tenant, &user).await?;
    tracing::info!(%tenant, %user, "admin: user deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_user_sessions(
    State(api): State<Arc<AdminApi>>,
    Path((tenant, user)): Path<(String, String)>,
) -> Answer {
    let r = api.directory.revoke_user_sessions(&tenant, &user).await?;
    tracing::info!(%tenant, %user, refresh_tokens = r.refresh_tokens, "admin: user's sessions revoked");
    answer(
        StatusCode::OK,
        json!({ "revoked_refresh_tokens": r.refresh_tokens }),
    )
}

async fn revoke_tenant_sessions(
    State(api): State<Arc<AdminApi>>,
    Path(tenant): Path<String>,
) -> Answer {
    let r = api.directory.revoke_tenant_sessions(&tenant).await?;
    tracing::info!(%tenant, refresh_tokens = r.refresh_tokens, "admin: tenant's sessions revoked");
    answer(
        StatusCode::OK,
        json!({ "revoked_refresh_tokens": r.refresh_tokens }),
    )
}

async fn revoke_all_sessions(State(api): State<Arc<AdminApi>>) -> Answer {
    let r = api.directory.revoke_all_sessions().await?;
    tracing::warn!(
        refresh_tokens = r.refresh_tokens,
        "admin: every session revoked"
    );
    answer(
        StatusCode::OK,
        json!({ "revoked_refresh_tokens": r.refresh_tokens }),
    )
}

/// `POST /admin/v1/logins/unlock`: which account to unlock, and from
/// which address (all of them when absent).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockInput {
    user: String,
    #[serde(default)]
    client: Option<String>,
}

/// Ends an account's failed-login blocks on this node now, instead of when
/// they run out (at most 15 minutes after the last failure).
async fn unlock_logins(State(api): State<Arc<AdminApi>>, headers: HeaderMap, body: Body) -> Answer {
    let input: UnlockInput = read_json(&headers, body).await?;
    if input.user.is_empty() || input.user.len() > 256 {
        return Err(Failure::invalid("user must be 1 to 256 bytes"));
    }
    let client = match input.client.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<std::net::IpAddr>()
                .map_err(|_| Failure::invalid(format!("client {c:?} is not an IP address")))?,
        ),
    };
    let Some(users) = &api.registry_logins else {
        return Err(Failure(
            StatusCode::CONFLICT,
            "CONFLICT",
            "this node checks no passwords (it runs with --auth none): nothing is locked".into(),
        ));
    };
    let cleared = users.unlock(&input.user, client);
    tracing::info!(user = %input.user, client = ?client, cleared, "admin: failed logins unlocked");
    answer(
        StatusCode::OK,
        json!({ "user": input.user, "client": input.client, "cleared": cleared }),
    )
}

async fn list_robots(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    let robots: Vec<Value> = api
        .directory
        .robots(&tenant)?
        .into_iter()
        .map(view)
        .collect();
    answer(StatusCode::OK, json!({ "robots": robots }))
}

/// `POST …/robots`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RobotInput {
    name: String,
    grants: Vec<String>,
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// The longest a robot may be created for (ten years).
const MAX_ROBOT_LIFETIME_SECS: u64 = 10 * 366 * 24 * 3600;

async fn create_robot(
    State(api): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body,
) -> Answer {
    let input: RobotInput = read_json(&headers, body).await?;
    let grants = input
        .grants
        .iter()
        .map(|g| parse_grant(g).map_err(Failure::invalid))
        .collect::<Result<Vec<Grant>, _>>()?;
    let expires_in = match input.expires_in_secs {
        Some(0) => return Err(Failure::invalid("expires_in_secs must be at least 1")),
        Some(s) if s > MAX_ROBOT_LIFETIME_SECS => {
            return Err(Failure::invalid(format!(
                "expires_in_secs must be at most {MAX_ROBOT_LIFETIME_SECS}"
            )))
        }
        Some(s) => Some(Duration::from_secs(s)),
        None => None,
    };
    let short = input
        .name
        .strip_prefix(&format!("{tenant}+"))
        .unwrap_or(&input.name);
    let (robot, secret) = api
        .directory
        .create_robot(&tenant, short, grants, expires_in)
        .await?;
    tracing::info!(%tenant, robot = %robot.name, "admin: robot created");
    let mut shown = view(robot);
    shown["secret"] = Value::from(secret.expose());
    answer(StatusCode::CREATED, shown)
}

async fn revoke_robot(
    State(api): State<Arc<AdminApi>>,
    Path((tenant, robot)): Path<(String, String)>,
) -> Answer {
    let short = robot.strip_prefix(&format!("{tenant}+")).unwrap_or(&robot);
    api.directory.revoke_robot(&tenant, short).await?;
    tracing::info!(%tenant, %robot, "admin: robot revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The admin API's JSON request bodies, for [`parse_admin_body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminBody {
    /// `POST /admin/v1/tenants`
    NewTenant,
    /// `PATCH /admin/v1/tenants/{tenant}`
    TenantPatch,
    /// `PUT …/users/{user}`
    User,
    /// `POST /admin/v1/logins/unlock`
    Unlock,
    /// `POST …/robots`
    Robot,
    /// `PUT …/fence`
    Fence,
    /// One NDJSON line of a tenant import.
    ImportLine,
}

impl AdminBody {
    /// Every body, in declaration order.
    pub const ALL: [AdminBody; 7] = [
        AdminBody::NewTenant,
        AdminBody::TenantPatch,
        AdminBody::User,
        AdminBody::Unlock,
        AdminBody::Robot,
        AdminBody::Fence,
        AdminBody::ImportLine,
    ];
}

/// Deserializes `bytes` as the body `kind`, with the types its route reads
/// (unknown fields refused the same way); `Err` carries serde's reason.
/// Public for the fuzz targets: a route's checks after decoding are not run.
pub fn parse_admin_body(kind: AdminBody, bytes: &[u8]) -> Result<(), String> {
    fn de<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
        serde_json::from_slice::<T>(bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    match kind {
        AdminBody::NewTenant => de::<NewTenant>(bytes),
        AdminBody::TenantPatch => de::<TenantPatch>(bytes),
        AdminBody::User => de::<UserInput>(bytes),
        AdminBody::Unlock => de::<UnlockInput>(bytes),
        AdminBody::Robot => de::<RobotInput>(bytes),
        AdminBody::Fence => de::<crate::admin_fence::FenceInput>(bytes),
        AdminBody::ImportLine => de::<crate::admin_move::Line>(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_holds_a_sha256_line() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_token_hash(&format!("sha256:{hex}\n")).unwrap(), hex);
        assert_eq!(
            parse_token_hash(&format!("sha256:{}", hex.to_uppercase())).unwrap(),
            hex
        );
        assert!(parse_token_hash("plain-token").is_err());
        assert!(parse_token_hash("sha256:abc").is_err());
        assert!(parse_token_hash(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn views_show_times_as_rfc3339() {
        let v = view(json!({"name": "x", "created_unix": 0, "expires_unix": null}));
        assert_eq!(v["created"], "1970-01-01T00:00:00Z");
        assert!(v["expires"].is_null());
        assert!(v.get("created_unix").is_none());
    }
}
