//! The garbage-collection routes of the admin API (`/admin/v1/gc…` on the
//! admin port, behind the admin token like the rest of it): the queue's
//! status, a pass now (or a dry run), an orphan scan, and the storage
//! check. `wharf gc …` is their command-line client.
//!
//! Must never: let a client that goes away cut a pass short (a pass runs in
//! a task of its own and finishes), or serve these routes on the registry
//! port.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use wharf_gc::{Collector, GcError};

/// The routes over `collector`, to merge into the admin router (wrap them
/// with the admin token check).
pub fn gc_router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/admin/v1/gc", get(status))
        .route("/admin/v1/gc/run", post(run))
        .route("/admin/v1/gc/scan-orphans", post(scan_orphans))
        .route("/admin/v1/gc/check", get(check))
        .with_state(collector)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn failed(e: GcError) -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "errors": [{ "code": "UNAVAILABLE", "message": e.to_string() }] }),
    )
}

async fn status(State(c): State<Arc<Collector>>) -> Response {
    match c.status().await {
        Ok(s) => {
            let now = wharf_core::now_unix();
            let config = c.config();
            answer(
                StatusCode::OK,
                json!({
                    "queued": s.queued,
                    "due": s.due,
                    "oldest_due_unix": s.oldest_due_unix,
                    "oldest_due_age_secs": s.oldest_due_unix.map(|d| now.saturating_sub(d)),
                    "tombstones": s.tombstones,
                    "holds": s.holds,
                    "enabled": config.enabled,
                    "review_delay_secs": config.review_delay.as_secs(),
                    "interval_secs": config.interval.as_secs(),
                    "orphan_age_secs": config.orphan_age.as_secs(),
                }),
            )
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
    /// `verdicts=false` leaves the list of decisions out of the answer
    /// (and out of memory during the pass); the counts are always there.
    #[serde(default = "yes")]
    verdicts: bool,
}

fn yes() -> bool {
    true
}

async fn run(State(c): State<Arc<Collector>>, Query(q): Query<RunQuery>) -> Response {
    // Its own task: the pass finishes even if the client stops waiting.
    let pass = tokio::spawn(async move { c.run_pass_with(q.dry_run, q.limit, q.verdicts).await });
    match pass.await {
        Ok(Ok(report)) => answer(StatusCode::OK, json!(report)),
        Ok(Err(e)) => failed(e),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "errors": [{ "code": "INTERNAL", "message": e.to_string() }] }),
        ),
    }
}

async fn scan_orphans(State(c): State<Arc<Collector>>) -> Response {
    match c.scan_orphans().await {
        Ok(queued) => answer(StatusCode::OK, json!({ "queued": queued })),
        Err(e) => failed(e),
    }
}

async fn check(State(c): State<Arc<Collector>>) -> Response {
    match c.check().await {
        Ok(report) => answer(StatusCode::OK, json!(report)),
        Err(e) => failed(e),
    }
}
