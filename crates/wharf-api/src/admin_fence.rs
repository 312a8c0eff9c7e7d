//! The admin API's tenant write fence: `PUT`, `DELETE` and `GET` of
//! `/admin/v1/tenants/{tenant}/fence`, what a tenant move (the fleet
//! service) uses to stop a tenant's writes on every node of this cell for
//! the seconds of its final copy.
//!
//! Owns: the fence routes, their JSON, and the forced directory refresh a
//! `GET` makes so a caller polling every node converges fast.
//!
//! Must never: fence or unfence anything but through the directory (the
//! fence lives in the tenant's record in the metadata store, so every node
//! of the cell applies it after its refresh); wait on the metadata store
//! without a bound; or say a fence is applied on this node before this
//! node's own directory snapshot holds it.
//!
//! # The answer
//!
//! Every route answers `200` with `{"tenant", "fenced", "retry_after_secs",
//! "since", "applied", "writes_in_flight", "refreshed"}`: `fenced` and
//! `retry_after_secs` as the directory holds them after the refresh,
//! `since` (RFC 3339, or `null`) when the fence went up, `applied` whether
//! this node's snapshot (which its registry port checks) has the fence,
//! `writes_in_flight` this node's writes of the tenant that passed the
//! fence check and have not finished, and `refreshed` whether the refresh
//! before the answer reached the metadata store (`false`: the figures are
//! this node's last snapshot), and `until` (RFC 3339, or `null`) when a
//! leased fence lapses. A `PUT` body `{"retry_after_secs": n,
//! "lease_secs": l}` is optional: `retry_after_secs` 1 to 60 (default 5);
//! with `lease_secs` (1 to 300) the fence lapses by itself that many
//! seconds after this `PUT` unless another renews it, so that a mover that
//! dies cannot keep the tenant's writes refused. A lapsed fence answers
//! `fenced: false`, as one taken down does.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin_api::{answer, known_tenant, read_json, AdminApi, Answer, Failure};
use crate::auth::rfc3339;

/// The longest a fence route waits for the directory refresh.
const REFRESH_BOUND: Duration = Duration::from_secs(2);

/// The fence routes, to merge into the admin API's router.
pub(crate) fn routes() -> Router<Arc<AdminApi>> {
    Router::new().route(
        "/admin/v1/tenants/{tenant}/fence",
        get(get_fence).put(put_fence).delete(delete_fence),
    )
}

/// `PUT …/fence`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FenceInput {
    #[serde(default)]
    retry_after_secs: Option<u32>,
    #[serde(default)]
    lease_secs: Option<u32>,
}

async fn put_fence(
    State(api): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body,
) -> Answer {
    let bytes = axum::body::to_bytes(body, crate::admin_api::MAX_BODY)
        .await
        .map_err(|_| Failure::invalid("the body is too long"))?;
    let input: FenceInput = if bytes.iter().all(u8::is_ascii_whitespace) {
        FenceInput::default()
    } else {
        read_json(&headers, Body::from(bytes)).await?
    };
    api.directory
        .set_fence(&tenant, true, input.retry_after_secs, input.lease_secs)
        .await?;
    match input.lease_secs {
        Some(lease) => tracing::debug!(%tenant, lease, "admin: tenant write fence up (leased)"),
        None => tracing::info!(%tenant, "admin: tenant write fence up"),
    }
    status(&api, &tenant).await
}

async fn delete_fence(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    api.directory.set_fence(&tenant, false, None, None).await?;
    tracing::info!(%tenant, "admin: tenant write fence down");
    status(&api, &tenant).await
}

async fn get_fence(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    status(&api, &tenant).await
}

/// Refreshes this node's directory (bounded), then reports.
async fn status(api: &AdminApi, tenant: &str) -> Answer {
    let refreshed = match tokio::time::timeout(REFRESH_BOUND, api.directory.refresh()).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "fence status: directory refresh failed");
            false
        }
        Err(_) => false,
    };
    let t = known_tenant(api, tenant)?;
    let applied = api.directory.fence(tenant);
    let in_flight = api
        .traffic
        .as_ref()
        .map_or(0, |tr| tr.writes_in_flight(tenant));
    let fence = t.fence.filter(|f| api.directory.fence_stands(f));
    answer(
        StatusCode::OK,
        json!({
            "tenant": tenant,
            "fenced": fence.is_some(),
            "retry_after_secs": fence.map_or(wharf_tenants::DEFAULT_FENCE_RETRY_SECS, |f| f.retry_after_secs),
            "since": fence.map_or(Value::Null, |f| Value::from(rfc3339(f.since_unix))),
            "until": fence
                .and_then(|f| f.until_unix_ms)
                .map_or(Value::Null, |ms| Value::from(rfc3339(ms / 1000))),
            "applied": applied.is_some(),
            "writes_in_flight": in_flight,
            "refreshed": refreshed,
        }),
    )
}
