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
//! [`app`] builds the router from state; [`serve`] runs it on a listener the
//! caller bound, until the caller's shutdown future resolves, so tests bind
//! `127.0.0.1:0` and hand the listener in.

#![forbid(unsafe_code)]

use std::future::Future;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Uri};
use axum::response::Response;
use axum::Router;
use wharf_core::RegistryError;
use wharf_registry::Registry;

mod blobs;
pub mod error;
mod headers;
mod manifests;
mod referrers;
pub mod routes;
pub mod server;
mod tags;
mod uploads;

use routes::Endpoint;

/// Builds the registry's router.
pub fn app(registry: Registry) -> Router {
    Router::new().fallback(dispatch).with_state(registry)
}

pub use server::{serve_with, ConnStats, ServerConfig};

/// Serves `app` on `listener` with default limits until `shutdown`
/// resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stats = std::sync::Arc::new(ConnStats::default());
    serve_with(listener, app, ServerConfig::default(), stats, shutdown).await
}

/// What every handler returns.
type Result<T = Response> = std::result::Result<T, RegistryError>;

/// The request parts handlers need, without the body.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// Routes every request: parse the path once, then match endpoint and method.
async fn dispatch(State(reg): State<Registry>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let req = Req {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    };
    let result = match routes::parse(req.uri.path()) {
        Ok(endpoint) => route(&reg, endpoint, &req, body).await,
        Err(e) => Err(e),
    };
    let mut response = result.unwrap_or_else(|e| error::error_response(&e, req.method == Method::HEAD));
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn route(reg: &Registry, endpoint: Endpoint, req: &Req, body: Body) -> Result {
    use Endpoint as E;
    let m = &req.method;
    match endpoint {
        E::Base if matches!(*m, Method::GET | Method::HEAD) => Ok(headers::empty(200)),
        E::Catalog if *m == Method::GET => tags::get_catalog(reg, req).await,
        E::Tags(repo) if *m == Method::GET => tags::get_tags(reg, &repo, req).await,
        E::Manifest(repo, r) => match *m {
            Method::GET | Method::HEAD => manifests::get_manifest(reg, &repo, &r, req).await,
            Method::PUT => manifests::put_manifest(reg, &repo, &r, req, body).await,
            Method::DELETE => manifests::delete_manifest(reg, &repo, &r).await,
            _ => not_allowed(req),
        },
        E::Blob(repo, d) => match *m {
            Method::GET | Method::HEAD => blobs::get_blob(reg, &repo, &d, req).await,
            Method::DELETE => blobs::delete_blob(reg, &repo, &d).await,
            _ => not_allowed(req),
        },
        E::Uploads(repo) if *m == Method::POST => uploads::post_upload(reg, &repo, req, body).await,
        E::Upload(repo, id) => match *m {
            Method::GET => uploads::get_upload(reg, &repo, &id).await,
            Method::PATCH => uploads::patch_upload(reg, &repo, &id, req, body).await,
            Method::PUT => uploads::put_upload(reg, &repo, &id, req, body).await,
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
