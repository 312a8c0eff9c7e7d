//! Turns a [`RegistryError`] into the OCI error response: the status and
//! code from the one table in `wharf-core`, the JSON body, and
//! `Retry-After` on refusals. The only place an error becomes HTTP.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use wharf_core::RegistryError;

/// The response for `err`; without a body for `HEAD` requests.
pub fn error_response(err: &RegistryError, head: bool) -> Response {
    let (_, status) = err.classify();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A refusal is the node working as designed, and under a surge there
    // are thousands a second: they are counted in metrics, logged at debug.
    if err.retry_after().is_some() {
        tracing::debug!(error = %err, "request refused");
    } else if status.is_server_error() {
        tracing::warn!(error = %err, "request failed");
    }
    let body = err.to_json().to_string();
    let len = body.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(body)
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(secs) = err.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    match err {
        RegistryError::RangeNotSatisfiable { size } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        RegistryError::UploadOutOfOrder { size, .. } => {
            h.insert(header::RANGE, crate::headers::upload_range(*size));
        }
        _ => {}
    }
    resp
}
