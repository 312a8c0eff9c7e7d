//! The HTTP API: OCI Distribution v1.1 (and Docker Registry v2) endpoints
//! over a [`Registry`].
//!
//! Owns: routing (`/v2/*` goes through the one parser in [`routes`]),
//! reading headers and query parameters into domain values, and writing
//! responses (status, headers, bodies). Handlers are thin: parse, one call
//! to the registry, shape the answer. Modules are named after spec resources.
//!
//! Must never: decide registry behaviour (that is `wharf-registry`), choose
//! an error status itself (every error goes through [`error::error_response`],
//! which uses the one table in `wharf-core`), or buffer a blob body in memory.
//!
//! Authentication ([`auth`]) runs right after the path is parsed and before
//! admission, so requests without valid credentials never hold a slot; the
//! token endpoint (`/auth/token`, outside `/v2/`) is routed here too, in
//! the admin class.
//!
//! Events of manifest pushes, tag moves, deletes and pulls are made by the
//! manifest handlers from what the registry did and queued after the
//! response is made (`events`, over `wharf_notify`): a webhook never holds
//! a request up.
//!
//! [`app`] builds the router from state; [`serve`] runs it on a listener the
//! caller bound, until the caller's shutdown future resolves, so tests bind
//! `127.0.0.1:0` and hand the listener in.

#![forbid(unsafe_code)]

use std::future::Future;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Uri};
use axum::response::Response;
use axum::Router;
use http_body::Body as _;
use wharf_admission::{Admission, Class, Refusal};
use wharf_core::RegistryError;
use wharf_registry::Registry;
use wharf_telemetry::RequestMetrics;

pub use body::MinRate;

pub mod access_log;
pub mod admin;
pub mod admin_api;
mod admin_fence;
mod admin_move;
mod admin_notify;
mod admin_retention;
mod admin_rights;
pub mod auth;
mod blobs;
mod body;
pub mod caller;
pub mod error;
mod events;
pub mod gc_api;
mod headers;
mod manifests;
mod referrers;
pub mod routes;
pub mod server;
mod tags;
pub mod tenant_traffic;
pub mod tls;
mod uploads;

use routes::Endpoint;

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    /// Admission control; `None` admits everything (tests of pure API
    /// behaviour).
    pub admission: Option<Admission>,
    pub metrics: Arc<RequestMetrics>,
    /// The slowest an upload body may arrive.
    pub min_rate: MinRate,
    /// Answer whole-blob GETs with a redirect to the storage's presigned
    /// URL, when it offers one.
    pub blob_redirects: bool,
    /// How requests are authenticated ([`auth::Auth::None`]: not at all).
    pub auth: auth::Auth,
    /// The token endpoint (`/auth/token`), when this node issues tokens.
    pub token_service: Option<Arc<auth::TokenService>>,
    /// The tenant directory (hostnames of tenants), when there is one.
    pub directory: Option<wharf_tenants::Directory>,
    /// Per-tenant counters and the write fence (build it over the same
    /// directory; the default counts and fences nothing).
    pub traffic: Arc<tenant_traffic::TenantTraffic>,
    /// Where events of pushes, tag moves, deletes and pulls go (the
    /// node's endpoints, and each tenant's from the directory); `None`:
    /// no events are made.
    pub notifier: Option<wharf_notify::Notifier>,
}

impl AppState {
    /// State with no admission control and default limits.
    pub fn new(registry: Registry) -> AppState {
        AppState {
            registry,
            admission: None,
            metrics: Arc::new(RequestMetrics::default()),
            min_rate: MinRate::default(),
            blob_redirects: false,
            auth: auth::Auth::None,
            token_service: None,
            directory: None,
            traffic: Arc::new(tenant_traffic::TenantTraffic::default()),
            notifier: None,
        }
    }
}

/// Builds the registry's router with no admission control.
pub fn app(registry: Registry) -> Router {
    app_with(AppState::new(registry))
}

/// Builds the registry's router over `state`.
pub fn app_with(state: AppState) -> Router {
    // Shared behind one `Arc`: the router hands each request its own
    // clone of the state, which is then one reference count, not eight.
    Router::new().fallback(dispatch).with_state(Arc::new(state))
}

pub use admin_api::{parse_admin_body, AdminBody};
pub use server::{serve_with, ConnStats, ServerConfig};
pub use uploads::content_range as parse_content_range;

/// Serves `app` on `listener` with default limits until `shutdown`
/// resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stats = Arc::new(ConnStats::default());
    serve_with(listener, app, ServerConfig::default(), stats, shutdown).await
}

/// What every handler returns.
type Result<T = Response> = std::result::Result<T, RegistryError>;

/// The request parts handlers need, without the body.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// Who sent it, as authentication verified.
    pub caller: caller::Caller,
    /// Its `X-Request-Id` (set by the access log layer, when present).
    pub request_id: Option<String>,
}

/// What admission and metrics need to know about a request.
struct Classified {
    class: Class,
    /// A fixed name for metrics labels.
    route: &'static str,
    /// Whose share the request counts against.
    tenant: String,
}

/// The share key of work that belongs to no tenant (`/v2/`, the catalog,
/// paths that do not parse, the token endpoint): the client's address
/// (IPv6 per /64), so that one address cannot take the whole class from
/// everyone else's logins.
fn client_share_key(client: Option<std::net::IpAddr>) -> String {
    use std::net::IpAddr;
    match client {
        None => String::new(),
        Some(IpAddr::V4(v4)) => format!("@{v4}"),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("@{v4}"),
            None => format!("@{:x}/64", u128::from(v6) >> 64),
        },
    }
}

fn classify(endpoint: Option<&Endpoint>, method: &Method) -> Classified {
    use Endpoint as E;
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (class, route, repo) = match endpoint {
        None => (Class::Admin, "unknown", None),
        Some(E::Base) => (Class::Admin, "base", None),
        Some(E::Catalog) => (Class::Admin, "catalog", None),
        Some(E::Tags(r)) => (Class::Admin, "tags", Some(r)),
        Some(E::Referrers(r, _)) => (Class::Admin, "referrers", Some(r)),
        Some(E::Manifest(r, _)) if read => (Class::Pull, "manifest", Some(r)),
        Some(E::Manifest(r, _)) => (Class::Push, "manifest", Some(r)),
        // A blob HEAD is a pusher asking whether a layer is there (pullers
        // GET blobs): push work, so a flood of pulls cannot shed pushes.
        Some(E::Blob(r, _)) if *method == Method::GET => (Class::Pull, "blob", Some(r)),
        Some(E::Blob(r, _)) if read => (Class::Push, "blob", Some(r)),
        Some(E::Blob(r, _)) => (Class::Push, "blob", Some(r)),
        Some(E::Uploads(r)) => (Class::Push, "uploads", Some(r)),
        Some(E::Upload(r, _)) => (Class::Push, "upload", Some(r)),
    };
    Classified {
        class,
        route,
        tenant: repo.map(|r| r.namespace().to_string()).unwrap_or_default(),
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

fn refusal_error(r: Refusal) -> RegistryError {
    let retry_after = r.retry_after().as_secs().max(1) as u32;
    match r {
        Refusal::NodeBusy { class, .. } => RegistryError::Unavailable {
            reason: format!("this node is at its limit for {} requests", class.as_str()),
            retry_after,
        },
        Refusal::TenantOverShare { class, .. } => RegistryError::TooManyRequests {
            reason: format!(
                "this namespace is using its full share of the node's {} capacity",
                class.as_str()
            ),
            retry_after,
        },
    }
}

/// Answers every request ([`answer`]) and hands the access log what only
/// routing learns: the tenant and the verified user. Each request's calls
/// to its dependencies share one deadline ([`wharf_guard::request_scope`]):
/// however many it makes, it waits on them at most that long in all.
async fn dispatch(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let mut note = access_log::AccessNote::default();
    let mut response = wharf_guard::request_scope(answer(&state, request, &mut note)).await;
    response.extensions_mut().insert(note);
    response
}

/// Routes a request: parse the path once, authenticate it, admit it (or
/// refuse at once), then match endpoint and method; record its latency and
/// bytes, and what the access log needs in `note`.
async fn answer(
    state: &Arc<AppState>,
    request: Request<Body>,
    note: &mut access_log::AccessNote,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let client = parts
        .extensions
        .get::<server::ClientAddr>()
        .map(|c| c.0.ip());
    let head = parts.method == Method::HEAD;
    let host = match request_host(parts.version, &parts.uri, &parts.headers) {
        Ok(host) => host,
        Err(e) => {
            let resp = finish(error::error_response(&e, head));
            state.metrics.observe(
                "unknown",
                method_label(&parts.method),
                400,
                started.elapsed(),
            );
            return resp;
        }
    };
    let request_id = parts
        .extensions
        .get::<access_log::RequestId>()
        .map(|id| id.as_str().to_string());
    let mut req = Req {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        caller: caller::Caller::default(),
        request_id,
    };
    let token_service = match &state.token_service {
        Some(t) if req.uri.path() == auth::TOKEN_PATH => Some(t.clone()),
        _ => None,
    };
    let endpoint = routes::parse(req.uri.path());
    let mut c = match token_service {
        Some(_) => Classified {
            class: Class::Admin,
            route: "token",
            tenant: String::new(),
        },
        None => classify(endpoint.as_ref().ok(), &req.method),
    };
    if c.tenant.is_empty() {
        c.tenant = client_share_key(client);
    } else {
        note.tenant = Some(c.tenant.clone());
    }
    // A request answered before it reaches a handler (refused, or its
    // token form unreadable), recorded like any other.
    let early = |resp: Response| {
        let resp = finish(resp);
        state.metrics.observe(
            c.route,
            method_label(&req.method),
            resp.status().as_u16(),
            started.elapsed(),
        );
        resp
    };
    // The token form is read whole before admission: a stranger trickling
    // it holds a connection, not a slot of the class every login needs.
    let body = match &token_service {
        Some(_) => match auth::preread_token_form(&req.method, body).await {
            Ok(body) => body,
            Err(e) => return early(error::error_response(&e, head)),
        },
        None => body,
    };
    // Before admission, so that requests without valid credentials never
    // hold a slot; the token endpoint checks its own credentials.
    if token_service.is_none() {
        let refusal = host_tenant_refusal(state, &endpoint, host.as_deref(), &req.uri);
        let checked = match refusal {
            Some(refusal) => Err(error::error_response(&refusal, head)),
            None if matches!(state.auth, auth::Auth::None) => Ok(caller::Caller::default()),
            None => {
                let need = auth::need(endpoint.as_ref(), &req.method, &req.uri);
                auth::check(&state.auth, &need, &req.headers, head, client).await
            }
        };
        match checked {
            Ok(caller) => {
                note.user.clone_from(&caller.subject);
                req.caller = caller;
            }
            Err(resp) => return early(resp),
        }
    }
    // The tenant's counters (only a tenant of the directory has some),
    // and its write fence: a write is counted in flight before the fence
    // is read, and refused before it takes an admission slot.
    let tenant = endpoint.as_ref().ok().and_then(routes::repo_of);
    let counters = tenant.and_then(|r| state.traffic.counters(r.namespace()));
    let mut _write = None;
    if let (Some(repo), Some(counters)) = (tenant, &counters) {
        let read = matches!(req.method, Method::GET | Method::HEAD);
        let class = if read {
            &counters.pulls
        } else {
            &counters.pushes
        };
        class.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = endpoint
            .as_ref()
            .expect("a repository comes from a parsed endpoint");
        if tenant_traffic::is_write(endpoint, &req.method) {
            match state.traffic.begin_write(repo.namespace(), counters) {
                Ok(guard) => _write = Some(guard),
                Err(e) => return early(error::error_response(&e, head)),
            }
        }
    }
    let permit = match &state.admission {
        Some(a) => match a.acquire(c.class, &c.tenant).await {
            Ok(p) => Some(p),
            Err(refusal) => return early(error::error_response(&refusal_error(refusal), head)),
        },
        None => None,
    };
    let body = body::Counted::wrap(
        body,
        state.metrics.clone(),
        counters.clone(),
        body::Direction::In,
        None,
    );
    let response = match (token_service, endpoint) {
        (Some(t), _) => match t
            .handle(&req.method, &req.uri, &req.headers, body, client)
            .await
        {
            Ok(mut r) => {
                // Who the token was issued to (none for an anonymous one).
                if let Some(who) = r.extensions_mut().remove::<caller::Caller>() {
                    note.user = who.subject;
                }
                r
            }
            Err(RegistryError::Unauthorized) => t.unauthorized(head),
            Err(e) => error::error_response(&e, head),
        },
        (None, Ok(endpoint)) => route(state, endpoint, &req, body)
            .await
            .unwrap_or_else(|e| error::error_response(&e, head)),
        (None, Err(e)) => {
            error::error_response(&routes::refusal(req.uri.path(), &req.method, e), head)
        }
    };
    let mut response = finish(response);
    // The registry has done its part and the answer is made: its events
    // are queued now, without waiting.
    events::send(state, &mut response);
    state.metrics.observe(
        c.route,
        method_label(&req.method),
        response.status().as_u16(),
        started.elapsed(),
    );
    let (parts, body) = response.into_parts();
    // A body already in memory (manifests, errors, small JSON) is done with
    // the node's resources: its slot is freed now rather than when the
    // client has read it. Otherwise, in a surge, admitted requests hold
    // their slots while thousands of connections share the CPU, and the
    // slots, not the work, become what limits goodput.
    if let Some(n) = body
        .size_hint()
        .exact()
        .filter(|n| *n <= IN_MEMORY_BODY_MAX)
    {
        state
            .metrics
            .bytes_out
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = &counters {
            c.bytes_out
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        drop(permit);
        return Response::from_parts(parts, body);
    }
    let body = body::Counted::wrap(
        body,
        state.metrics.clone(),
        counters,
        body::Direction::Out,
        permit,
    );
    Response::from_parts(parts, body)
}

/// The largest response body treated as already in memory (a manifest is
/// at most 4 MiB).
const IN_MEMORY_BODY_MAX: u64 = 4 * 1024 * 1024;

/// The host a request is for, checked so that the tenant-hostname rule
/// fails closed: at most one `Host` header, required in HTTP/1.1; a
/// request-target in absolute form, or HTTP/2's `:authority` (both reach
/// here as the URI's authority), must agree with `Host` when both are
/// given; a port must be digits that fit a port number. `None` only for an
/// HTTP/1.0 request without `Host` or authority.
fn request_host(
    version: axum::http::Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<String>> {
    let bad = |why: &str| Err(RegistryError::InvalidParameters(why.to_string()));
    let mut hosts = headers.get_all(axum::http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return bad("the request has more than one Host header");
    }
    let header = match header.map(|h| h.to_str()) {
        Some(Ok(h)) => Some(h.trim().to_ascii_lowercase()),
        Some(Err(_)) => return bad("the Host header is not ASCII"),
        None => None,
    };
    let authority = uri.authority().map(|a| a.as_str().to_ascii_lowercase());
    let host = match (authority, header) {
        (Some(a), Some(h)) if a != h => {
            return bad("the request's target names another host than its Host header")
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) if version == axum::http::Version::HTTP_10 => return Ok(None),
        (None, None) => return bad("the request has no Host header"),
    };
    if !host_is_well_formed(&host) {
        return bad("the Host header is not a host with an optional port");
    }
    Ok(Some(host))
}

/// A name or an IPv4 address, or an IPv6 address in brackets, optionally
/// followed by `:` and a port of 1 to 5 digits at most 65535.
fn host_is_well_formed(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, tail)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => match tail {
                "" => (v6, None),
                t => match t.strip_prefix(':') {
                    Some(p) => (v6, Some(p)),
                    None => return false,
                },
            },
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    let name_ok = host.starts_with('[')
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    name_ok && port_ok
}

/// A request that came in on a tenant's own hostname may only reach that
/// tenant's repositories; anything else is refused (`DENIED`) before
/// credentials are even looked at, without naming the tenant (the client
/// may not be one of its users).
fn host_tenant_refusal(
    state: &AppState,
    endpoint: &std::result::Result<Endpoint, RegistryError>,
    host: Option<&str>,
    uri: &Uri,
) -> Option<RegistryError> {
    let directory = state.directory.as_ref()?;
    let tenant = directory.tenant_for_host(host?)?;
    // A mount reads from `from` (when it parses; otherwise the handler
    // falls back to a plain upload).
    let from: Option<wharf_core::RepoName> = match endpoint.as_ref().ok()? {
        Endpoint::Uploads(_) if headers::query(uri, "mount").is_some() => {
            headers::query(uri, "from").and_then(|f| f.parse().ok())
        }
        _ => None,
    };
    let mut repos: Vec<&wharf_core::RepoName> = match endpoint.as_ref().ok()? {
        Endpoint::Base => return None,
        Endpoint::Catalog => {
            return Some(RegistryError::Denied(
                "this hostname serves one tenant only; it has no catalog".into(),
            ))
        }
        Endpoint::Tags(r)
        | Endpoint::Referrers(r, _)
        | Endpoint::Manifest(r, _)
        | Endpoint::Blob(r, _)
        | Endpoint::Upload(r, _)
        | Endpoint::Uploads(r) => vec![r],
    };
    repos.extend(from.as_ref());
    repos
        .into_iter()
        .find(|r| r.namespace() != tenant)
        .map(|r| RegistryError::Denied(format!("this hostname does not serve {r}")))
}

/// Headers every response carries.
fn finish(mut response: Response) -> Response {
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn route(state: &AppState, endpoint: Endpoint, req: &Req, body: Body) -> Result {
    use Endpoint as E;
    let reg = &state.registry;
    let m = &req.method;
    match endpoint {
        E::Base if matches!(*m, Method::GET | Method::HEAD) => Ok(headers::empty(200)),
        E::Catalog if *m == Method::GET => tags::get_catalog(reg, req).await,
        E::Tags(repo) if *m == Method::GET => tags::get_tags(reg, &repo, req).await,
        E::Manifest(repo, r) => match *m {
            Method::GET | Method::HEAD => manifests::get_manifest(state, &repo, &r, req).await,
            Method::PUT => manifests::put_manifest(state, &repo, &r, req, body).await,
            Method::DELETE => manifests::delete_manifest(state, &repo, &r, req).await,
            _ => not_allowed(req),
        },
        E::Blob(repo, d) => match *m {
            Method::GET | Method::HEAD => blobs::get_blob(state, &repo, &d, req).await,
            Method::DELETE => blobs::delete_blob(reg, &repo, &d).await,
            _ => not_allowed(req),
        },
        E::Uploads(repo) if *m == Method::POST => {
            uploads::post_upload(state, &repo, req, body).await
        }
        E::Upload(repo, id) => match *m {
            Method::GET => uploads::get_upload(reg, &repo, &id).await,
            Method::PATCH => uploads::patch_upload(state, &repo, &id, req, body).await,
            Method::PUT => uploads::put_upload(state, &repo, &id, req, body).await,
            Method::DELETE => uploads::delete_upload(reg, &repo, &id).await,
            _ => not_allowed(req),
        },
        E::Referrers(repo, d) if *m == Method::GET => {
            referrers::get_referrers(reg, &repo, &d, req).await
        }
        _ => not_allowed(req),
    }
}

fn not_allowed(req: &Req) -> Result {
    Err(RegistryError::MethodNotAllowed(format!(
        "{} {}",
        req.method,
        req.uri.path()
    )))
}
