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
//! "delivery"}`, where `delivery` is what this node has done for it lately
//! (its `wharf_notify_*` counters; `null` when it has had no event here
//! since its lane was last idle).
//!
//! Owns: those routes and their JSON. What an endpoint may be (URL,
//! secret, id, how many) is `wharf_tenants::notify`'s and
//! `wharf_notify::target`'s business.
//!
//! Must never: show an endpoint's secret (but the generated one, once),
//! log it or its URL's query; or be open to tenant accounts (an endpoint
//! makes this node send requests to an address of the caller's choosing:
//! only the operator chooses, `crate::admin_rights`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use wharf_tenants::{NotifyEndpointInput, NotifyEndpointView};

use crate::admin_api::{answer, read_json, view, AdminApi, Answer};

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

async fn put(
    State(api): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    body: Body,
) -> Answer {
    let input: NotifyEndpointInput = read_json(&headers, body).await?;
    let (endpoint, created, secret) = api
        .directory
        .put_notify_endpoint(&tenant, &id, input)
        .await?;
    tracing::info!(%tenant, endpoint = %id, created, pulls = endpoint.pulls,
        "admin: notification endpoint written");
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
    Path((tenant, id)): Path<(String, String)>,
) -> Answer {
    api.directory.delete_notify_endpoint(&tenant, &id).await?;
    tracing::info!(%tenant, endpoint = %id, "admin: notification endpoint deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
