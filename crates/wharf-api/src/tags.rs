//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n` and
//! `last`, with a `Link` header when more may follow.

use axum::body::Body;
use axum::response::Response;
use wharf_core::RepoName;
use wharf_registry::Registry;

use crate::headers::{self, set};
use crate::{Req, Result};

/// Most entries one page may hold.
const MAX_PAGE: usize = 10_000;
/// Catalog page size when the client gives no `n`.
const CATALOG_DEFAULT_PAGE: usize = 1_000;

/// A JSON `200` with a `Link` to the next page when `more`.
fn page(body: serde_json::Value, next: Option<String>) -> Result {
    let body = body.to_string();
    let len = body.len();
    let mut r = Response::new(Body::from(body));
    set(&mut r, "content-type", "application/json");
    set(&mut r, "content-length", len.to_string());
    if let Some(next) = next {
        set(&mut r, "link", format!("<{next}>; rel=\"next\""));
    }
    Ok(r)
}

/// Fetches one more entry than asked, to know whether a next page exists.
fn split_page(mut items: Vec<String>, n: usize) -> (Vec<String>, Option<String>) {
    if items.len() > n {
        items.truncate(n);
        let last = items.last().cloned();
        (items, last)
    } else {
        (items, None)
    }
}

pub async fn get_tags(reg: &Registry, repo: &RepoName, req: &Req) -> Result {
    let (n, last) = headers::pagination(&req.uri, MAX_PAGE, MAX_PAGE)?;
    let tags = if n == 0 {
        // Still a 404 for an unknown repository.
        reg.list_tags(repo, None, 0).await?
    } else {
        reg.list_tags(repo, last.as_deref(), n + 1).await?
    };
    let (tags, more) = split_page(tags, n);
    let next = more.map(|l| format!("/v2/{repo}/tags/list?n={n}&last={l}"));
    page(
        serde_json::json!({ "name": repo.as_str(), "tags": tags }),
        next,
    )
}

pub async fn get_catalog(reg: &Registry, req: &Req) -> Result {
    let (n, last) = headers::pagination(&req.uri, CATALOG_DEFAULT_PAGE, MAX_PAGE)?;
    let repos = if n == 0 {
        Vec::new()
    } else {
        reg.catalog(last.as_deref(), n + 1).await?
    };
    let (repos, more) = split_page(repos, n);
    let next = more.map(|l| format!("/v2/_catalog?n={n}&last={l}"));
    page(serde_json::json!({ "repositories": repos }), next)
}
