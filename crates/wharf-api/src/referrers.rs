//! `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: an image index of
//! the manifests whose subject is `<digest>`.

use axum::body::Body;
use axum::response::Response;
use wharf_core::{media, Digest, RepoName};
use wharf_registry::Registry;

use crate::headers::{self, set};
use crate::{Req, Result};

pub async fn get_referrers(reg: &Registry, repo: &RepoName, subject: &Digest, req: &Req) -> Result {
    let filter = headers::query(&req.uri, "artifactType").filter(|t| !t.is_empty());
    let manifests = reg.referrers(repo, subject, filter.as_deref()).await?;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let len = body.len();
    let mut r = Response::new(Body::from(body));
    set(&mut r, "content-type", media::OCI_INDEX);
    set(&mut r, "content-length", len.to_string());
    if filter.is_some() {
        set(&mut r, "oci-filters-applied", "artifactType");
    }
    Ok(r)
}
