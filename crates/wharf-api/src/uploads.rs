//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic, or
//! mount) and `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use futures_util::{StreamExt, TryStreamExt};
use wharf_core::{Digest, RegistryError, RepoName, UploadId};
use wharf_registry::{ByteStream, Registry};

use crate::body::RateChecked;
use crate::headers::{self, set};
use crate::{AppState, Req, Result};

/// The request body as a byte stream that fails if it trickles in below
/// the minimum rate.
fn stream(state: &AppState, body: Body) -> ByteStream {
    let raw = body.into_data_stream().map_err(std::io::Error::other);
    RateChecked::new(raw, state.min_rate).boxed()
}

fn query_digest(req: &Req) -> Result<Option<Digest>> {
    headers::query(&req.uri, "digest")
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| RegistryError::DigestInvalid(e.to_string()))
        })
        .transpose()
}

/// `201 Created` for a blob now in `repo`.
fn created(repo: &RepoName, digest: &Digest) -> Result {
    let mut r = headers::empty(201);
    set(&mut r, "location", format!("/v2/{repo}/blobs/{digest}"));
    set(&mut r, "docker-content-digest", digest.to_string());
    Ok(r)
}

/// `status` with the headers describing an open upload session.
fn session(status: u16, repo: &RepoName, id: &UploadId, size: u64) -> Result {
    let mut r = headers::empty(status);
    set(&mut r, "location", format!("/v2/{repo}/blobs/uploads/{id}"));
    r.headers_mut().insert("range", headers::upload_range(size));
    set(&mut r, "docker-upload-uuid", id.as_str());
    Ok(r)
}

/// Starts an upload: a mount (`?mount=&from=`), a monolithic upload
/// (`?digest=` with the blob as body), or an empty session (`202`).
pub async fn post_upload(state: &AppState, repo: &RepoName, req: &Req, body: Body) -> Result {
    let reg = &state.registry;
    // The verified subject owns the session it opens.
    let owner = req.caller.subject.as_deref();
    if let Some(mount) = headers::query(&req.uri, "mount") {
        let digest: Digest = mount
            .parse()
            .map_err(|e: wharf_core::digest::DigestError| {
                RegistryError::DigestInvalid(e.to_string())
            })?;
        // A missing or invalid `from` just means "not mountable": fall back
        // to a normal upload, as the spec asks.
        let from = headers::query(&req.uri, "from").and_then(|f| f.parse::<RepoName>().ok());
        if let Some(from) = from {
            if reg.mount_blob(repo, &digest, &from).await?.is_some() {
                return created(repo, &digest);
            }
        }
    } else if let Some(digest) = query_digest(req)? {
        reg.push_blob(repo, &digest, stream(state, body), owner)
            .await?;
        return created(repo, &digest);
    }
    let id = reg.start_upload(repo, owner).await?;
    session(202, repo, &id, 0)
}

/// Upload progress: `204` with `Range`.
pub async fn get_upload(reg: &Registry, repo: &RepoName, id: &UploadId) -> Result {
    let size = reg.upload_size(repo, id).await?;
    session(204, repo, id, size)
}

/// Parses `Content-Range: <start>-<end>` (also accepting a `bytes ` or
/// `bytes=` prefix, which some clients send) into its start and length
/// (never 0, and `start + length - 1` never overflows). Public (as
/// `wharf_api::parse_content_range`) for the fuzz targets.
pub fn content_range(v: &str) -> Result<(u64, u64)> {
    let bad = || RegistryError::SizeInvalid(format!("bad Content-Range {v:?}"));
    let s = v.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    // Checked: `0-18446744073709551615` covers 2^64 bytes, which no length
    // can say, and must not wrap to an empty chunk.
    let len = b
        .checked_sub(a)
        .and_then(|n| n.checked_add(1))
        .ok_or_else(bad)?;
    Ok((a, len))
}

/// Appends a chunk: `202` with the new `Range`.
pub async fn patch_upload(
    state: &AppState,
    repo: &RepoName,
    id: &UploadId,
    req: &Req,
    body: Body,
) -> Result {
    let range = headers::get(&req.headers, "content-range")
        .map(content_range)
        .transpose()?;
    if let (Some((_, len)), Some(cl)) = (range, headers::content_length(&req.headers)?) {
        if len != cl {
            return Err(RegistryError::SizeInvalid(format!(
                "Content-Range covers {len} bytes but Content-Length is {cl}"
            )));
        }
    }
    let size = state
        .registry
        .patch_upload(repo, id, range.map(|(start, _)| start), stream(state, body))
        .await?;
    session(202, repo, id, size)
}

/// Completes an upload with `?digest=` (and perhaps a last chunk): `201`.
pub async fn put_upload(
    state: &AppState,
    repo: &RepoName,
    id: &UploadId,
    req: &Req,
    body: Body,
) -> Result {
    let digest = query_digest(req)?.ok_or_else(|| {
        RegistryError::DigestInvalid("the digest query parameter is required".into())
    })?;
    let body = headers::has_body(&req.headers)?.then(|| stream(state, body));
    state
        .registry
        .finish_upload(repo, id, &digest, body)
        .await?;
    created(repo, &digest)
}

/// Cancels an upload: `204`.
pub async fn delete_upload(reg: &Registry, repo: &RepoName, id: &UploadId) -> Result {
    reg.cancel_upload(repo, id).await?;
    Ok(headers::empty(204))
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn parses_content_ranges() {
        assert_eq!(content_range("0-9").unwrap(), (0, 10));
        assert_eq!(content_range("bytes 10-19/*").unwrap(), (10, 10));
        assert_eq!(content_range("bytes=5-5").unwrap(), (5, 1));
        assert!(content_range("9-0").is_err());
        assert!(content_range("x").is_err());
        assert!(content_range("0-18446744073709551615").is_err());
        assert_eq!(
            content_range("1-18446744073709551615").unwrap(),
            (1, u64::MAX)
        );
    }
}
