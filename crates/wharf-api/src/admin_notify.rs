//! The admin API's notification routes: a tenant's webhook endpoints
//! (docs/notifications.md, "A tenant's endpoints"; `wharf admin
//! notification`).
//!
//! - `GET /admin/v1/tenants/{tenant}/notifications`: `{"endpoints": [...]}`
//! - `GET …/notifications/{id}`: one endpoint.
//! - `PUT …/notifications/{id}` with `{"url", "secret"?, "pulls"?}`:
//!   creates it (`201`) or replaces it (`200`). Without `secret`, a new
//!   endpoint gets a generated one, returned as `secret` in this answer
//!   only; a replaced one keeps its own.
//! - `DELETE …/notifications/{id}`: `204`.
//!
//! An endpoint is shown as `{"tenant", "id", "url", "pulls", "created",
//! "set_by", "delivery"}`, where `set_by` is the tenant account that set it
//! (`null`: the operator) and `delivery` what this node has done for it
//! lately (its `wharf_notify_*` counters; `null` when it has had no event
//! here since its lane was last idle).
//!
//! The operator (admin token) may set any endpoint. A tenant's account
//! with the admin role over the whole tenant may call these routes too,
//! for its own tenant (`crate::admin_rights`): an endpoint it sets must
//! be on the public internet, checked when it is written (its host
//! resolved now) and again at every delivery (`wharf_notify::public`), and
//! an endpoint the operator set is not its to replace or delete (`409`).
//!
//! Owns: those routes and their JSON. What an endpoint may be (URL,
//! secret, id, how many) is `wharf_tenants::notify`'s and
//! `wharf_notify::target`'s business.
//!
//! Must never: show an endpoint's secret (but the generated one, once),
//! log it or its URL's query; or let a tenant account point this node at
//! an address that is not public (an endpoint makes the node send requests
//! to an address of its setter's choosing: into the operator's own
//! network only the operator may).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use wharf_tenants::{NotifyEndpointInput, NotifyEndpointView};

use crate::admin_api::{answer, read_json, view, AdminApi, Answer, Caller, Failure};

/// The notification routes, to merge into the admin API's router.
pub(crate) fn routes() -> Router<Arc<AdminApi>> {
    Router::new()
        .route("/admin/v1/tenants/{tenant}/notifications", get(list))
        .route(
            "/admin/v1/tenants/{tenant}/notifications/{id}",
            get(show).put(put).delete(remove),
        )
}

/// An endpoint as shown, with this node's delivery counters for it.
fn shown(api: &AdminApi, endpoint: NotifyEndpointView) -> Value {
    let key = format!("{}/{}", endpoint.tenant, endpoint.id);
    let delivery = api
        .notifier
        .as_ref()
        .and_then(|n| n.endpoint(&key))
        .map_or(Value::Null, |s| {
            json!({
                "queued": s.queued,
                "delivered": s.delivered,
                "dropped": s.dropped,
                "failed": s.failed(),
                "attempts_failed": s.attempts_failed,
                "queue_depth": s.depth,
                "failing": s.failing,
            })
        });
    let mut v = view(endpoint);
    v["delivery"] = delivery;
    v
}

async fn list(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    let endpoints: Vec<Value> = api
        .directory
        .notify_endpoints(&tenant)?
        .into_iter()
        .map(|e| shown(&api, e))
        .collect();
    answer(StatusCode::OK, json!({ "endpoints": endpoints }))
}

async fn show(
    State(api): State<Arc<AdminApi>>,
    Path((tenant, id)): Path<(String, String)>,
) -> Answer {
    let endpoint = api.directory.notify_endpoint(&tenant, &id)?;
    answer(StatusCode::OK, shown(&api, endpoint))
}

/// The tenant account that calls, if it is one.
fn tenant_account(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Operator => None,
        Caller::Tenant { subject, .. } => Some(subject),
    }
}

async fn put(
    State(api): State<Arc<AdminApi>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    body: Body,
) -> Answer {
    let input: NotifyEndpointInput = read_json(&headers, body).await?;
    let by = tenant_account(&caller);
    if by.is_some() {
        let url = wharf_notify::target::check_url(&input.url).map_err(Failure::invalid)?;
        wharf_notify::public::check_public_target(&url)
            .await
            .map_err(Failure::invalid)?;
    }
    let (endpoint, created, secret) = api
        .directory
        .put_notify_endpoint(&tenant, &id, input, by)
        .await?;
    tracing::info!(%tenant, endpoint = %id, created, pulls = endpoint.pulls,
        set_by = by.unwrap_or("operator"), "admin: notification endpoint written");
    let mut v = shown(&api, endpoint);
    if let Some(secret) = secret {
        v["secret"] = Value::from(secret.expose());
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(status, v)
}

async fn remove(
    State(api): State<Arc<AdminApi>>,
    Extension(caller): Extension<Caller>,
    Path((tenant, id)): Path<(String, String)>,
) -> Answer {
    let by = tenant_account(&caller);
    api.directory
        .delete_notify_endpoint(&tenant, &id, by)
        .await?;
    tracing::info!(%tenant, endpoint = %id, by = by.unwrap_or("operator"),
        "admin: notification endpoint deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
