//! The fleet admin API: JSON over HTTP under `/fleet/v1` (described by
//! `docs/fleet-api.yaml`; `wharf fleet …` is its command-line client), and
//! the service's own `/metrics`.
//!
//! Owns: the routes, the admin token check (the node's scheme: the server
//! holds `sha256:<hex>` of the token, the client sends
//! `Authorization: Bearer <token>`, compared by hash in constant time with
//! `wharf_auth::verify_secret`), reading bodies (at most [`MAX_BODY`]
//! bytes of JSON) and the OCI-style error envelope
//! (`{"errors":[{"code","message","detail"}]}`), each error's status chosen
//! in one place ([`ApiError`]).
//!
//! Must never: decide anything (each handler makes one `service` call), or
//! return the token or its hash.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::service::{Fleetd, ServiceError};
use crate::store::MoveState;

/// The largest request body read.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the admin token file (`sha256:<64 hex>`), as the node does.
pub use wharf_auth::parse_token_hash;

/// An API failure: one status per kind, chosen here only.
pub struct ApiError(ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, detail) = match self.0 {
            ServiceError::NotFound(m) => (StatusCode::NOT_FOUND, "NOT_FOUND", m, Value::Null),
            ServiceError::Conflict(m) => (StatusCode::CONFLICT, "CONFLICT", m, Value::Null),
            ServiceError::Invalid(m) => (StatusCode::BAD_REQUEST, "INVALID", m, Value::Null),
            ServiceError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                m,
                Value::Null,
            ),
            ServiceError::CellRefused { cell, message } => (
                StatusCode::CONFLICT,
                "CELL_REFUSED",
                message,
                json!({"cell": cell}),
            ),
            ServiceError::Refused { message, detail } => {
                (StatusCode::CONFLICT, "PLACEMENT_REFUSED", message, detail)
            }
        };
        let mut err = json!({"code": code, "message": message});
        if !detail.is_null() {
            err["detail"] = detail;
        }
        let mut resp = json_response(status, &json!({"errors": [err]}));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn unauthorized() -> Response {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"errors": [{"code": "UNAUTHORIZED",
            "message": "a valid admin token is required (Authorization: Bearer <token>)"}]}),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"wharf-fleet\""),
    );
    resp
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

type Answer = Result<Response, ApiError>;

fn ok(v: Value) -> Answer {
    Ok(json_response(StatusCode::OK, &v))
}

fn created(v: Value) -> Answer {
    Ok(json_response(StatusCode::CREATED, &v))
}

fn authorized(fleetd: &Fleetd, headers: &HeaderMap) -> bool {
    let Some(expected) = &fleetd.config.admin_token_hash else {
        return true;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .filter(|v| v.len() <= 1024)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            wharf_auth::verify_secret(token.trim(), expected)
        }
        _ => false,
    }
}

async fn require_token(
    State(fleetd): State<Arc<Fleetd>>,
    request: Request,
    next: Next,
) -> Response {
    let open = request.uri().path() == "/healthz"
        || (request.uri().path() == "/metrics" && !fleetd.config.metrics_need_token);
    if open || authorized(&fleetd, request.headers()) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

/// The fleet service's routes.
pub fn app(fleetd: Arc<Fleetd>) -> Router {
    Router::new()
        .route("/fleet/v1/cells", get(list_cells).post(add_cell))
        .route("/fleet/v1/cells/{id}", get(get_cell).patch(set_cell_limits))
        .route("/fleet/v1/cells/{id}/nodes", put(set_cell_nodes))
        .route("/fleet/v1/cells/{id}/drain", post(drain_cell))
        .route("/fleet/v1/cells/{id}/retire", post(retire_cell))
        .route("/fleet/v1/tenants", get(list_tenants).post(place_tenant))
        .route("/fleet/v1/tenants/{name}", get(get_tenant))
        .route("/fleet/v1/tenants/{name}/move", post(move_tenant))
        .route("/fleet/v1/plan", get(get_plan))
        .route("/fleet/v1/plan/apply", post(apply_plan))
        .route("/fleet/v1/moves", get(list_moves))
        .route("/fleet/v1/moves/{id}", get(get_move))
        .route("/fleet/v1/moves/{id}/cancel", post(cancel_move))
        .route("/fleet/v1/decisions", get(list_decisions))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            ApiError(ServiceError::NotFound("no such route".into())).into_response()
        })
        .layer(middleware::from_fn_with_state(
            fleetd.clone(),
            require_token,
        ))
        .with_state(fleetd)
}

async fn read_json(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let invalid = |m: String| ApiError(ServiceError::Invalid(m));
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.trim_start().starts_with("application/json") {
            return Err(invalid(format!(
                "Content-Type must be application/json, not {ct:?}"
            )));
        }
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| invalid(format!("the body is longer than {MAX_BODY} bytes")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("the body must be a JSON object".into()));
    }
    Ok(v)
}

fn cell_id(s: &str) -> Result<u32, ApiError> {
    s.trim_start_matches('c')
        .parse()
        .map_err(|_| ApiError(ServiceError::Invalid(format!("{s:?} is not a cell id"))))
}

async fn list_cells(State(f): State<Arc<Fleetd>>) -> Answer {
    ok(f.cells().await?)
}

async fn add_cell(State(f): State<Arc<Fleetd>>, headers: HeaderMap, body: Body) -> Answer {
    let req = read_json(&headers, body).await?;
    created(f.add_cell(&req).await?)
}

async fn get_cell(State(f): State<Arc<Fleetd>>, Path(id): Path<String>) -> Answer {
    ok(f.cell(cell_id(&id)?).await?)
}

async fn set_cell_limits(
    State(f): State<Arc<Fleetd>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let req = read_json(&headers, body).await?;
    ok(f.set_cell_limits(cell_id(&id)?, &req).await?)
}

async fn set_cell_nodes(
    State(f): State<Arc<Fleetd>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let req = read_json(&headers, body).await?;
    ok(f.set_cell_nodes(cell_id(&id)?, &req).await?)
}

async fn drain_cell(State(f): State<Arc<Fleetd>>, Path(id): Path<String>) -> Answer {
    ok(f.drain_cell(cell_id(&id)?).await?)
}

async fn retire_cell(State(f): State<Arc<Fleetd>>, Path(id): Path<String>) -> Answer {
    ok(f.retire_cell(cell_id(&id)?).await?)
}

async fn list_tenants(State(f): State<Arc<Fleetd>>) -> Answer {
    ok(f.tenants().await?)
}

async fn place_tenant(State(f): State<Arc<Fleetd>>, headers: HeaderMap, body: Body) -> Answer {
    let req = read_json(&headers, body).await?;
    created(f.place_tenant(&req).await?)
}

async fn get_tenant(State(f): State<Arc<Fleetd>>, Path(name): Path<String>) -> Answer {
    ok(f.tenant(&name).await?)
}

async fn move_tenant(
    State(f): State<Arc<Fleetd>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let req = read_json(&headers, body).await?;
    let to = match &req["to"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| ApiError(ServiceError::Invalid("to must be a cell id".into())))?,
        ),
    };
    created(f.request_move(&name, to).await?)
}

async fn get_plan(State(f): State<Arc<Fleetd>>) -> Answer {
    ok(f.plan().await?)
}

async fn apply_plan(State(f): State<Arc<Fleetd>>) -> Answer {
    ok(f.apply("applied by an operator").await?)
}

#[derive(Deserialize)]
struct MovesQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_moves(State(f): State<Arc<Fleetd>>, Query(q): Query<MovesQuery>) -> Answer {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            MoveState::ALL
                .into_iter()
                .find(|m| m.as_str() == s)
                .ok_or_else(|| {
                    ApiError(ServiceError::Invalid(format!(
                        "state must be one of planned, running, done, failed, cancelled; not {s:?}"
                    )))
                })?,
        ),
    };
    ok(f.moves(state, q.limit.unwrap_or(100)).await?)
}

fn move_id(s: &str) -> Result<i64, ApiError> {
    s.parse()
        .map_err(|_| ApiError(ServiceError::Invalid(format!("{s:?} is not a move id"))))
}

async fn get_move(State(f): State<Arc<Fleetd>>, Path(id): Path<String>) -> Answer {
    ok(f.get_move(move_id(&id)?).await?)
}

async fn cancel_move(State(f): State<Arc<Fleetd>>, Path(id): Path<String>) -> Answer {
    ok(f.cancel_move(move_id(&id)?).await?)
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<i64>,
}

async fn list_decisions(State(f): State<Arc<Fleetd>>, Query(q): Query<LimitQuery>) -> Answer {
    ok(f.decisions(q.limit.unwrap_or(50)).await?)
}

async fn metrics(State(f): State<Arc<Fleetd>>) -> Response {
    let text = crate::metrics::render(&f).await;
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_hold_a_hash_line() {
        let hex = "Ab".repeat(32);
        assert_eq!(
            parse_token_hash(&format!("sha256:{hex}\n")).unwrap(),
            hex.to_ascii_lowercase()
        );
        assert!(parse_token_hash("sha256:abc").is_err());
        assert!(parse_token_hash("plain-token").is_err());
    }

    #[test]
    fn cell_ids_may_carry_the_c_prefix() {
        assert_eq!(cell_id("3").ok(), Some(3));
        assert_eq!(cell_id("c3").ok(), Some(3));
        assert!(cell_id("x").is_err());
    }

    #[test]
    fn refusals_are_409_with_their_reasons() {
        let r = ApiError(ServiceError::Refused {
            message: "0/2 cells fit tenant a: 2 draining".into(),
            detail: json!({"reasons": [{"reason": "draining", "cells": 2}]}),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let r = ApiError(ServiceError::CellRefused {
            cell: 2,
            message: "cell 2 refused tenant a: tenant a exists".into(),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let r = ApiError(ServiceError::Unavailable("db".into())).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
