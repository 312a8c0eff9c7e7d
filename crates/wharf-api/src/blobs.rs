//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use wharf_core::{Digest, RepoName};
use wharf_registry::{ByteRange, ByteStream, Registry};

use crate::headers::{self, set};
use crate::{AppState, Req, Result};

/// The bytes of `stream` when its first piece already holds all `want` of
/// them (most configs and small layers: the store reads the first piece
/// whole). Such a body is in memory already, and a body of known length
/// frees its admission slot as soon as the handler returns. Otherwise the
/// stream, with the piece read put back in front.
async fn whole_in_first_piece(
    mut stream: ByteStream,
    want: u64,
) -> std::result::Result<Bytes, ByteStream> {
    match stream.next().await {
        Some(Ok(first)) if first.len() as u64 == want => Ok(first),
        None if want == 0 => Ok(Bytes::new()),
        first => Err(futures_util::stream::iter(first).chain(stream).boxed()),
    }
}

/// Serves a blob, whole or one byte range (`206`), or just its headers.
pub async fn get_blob(state: &AppState, repo: &RepoName, digest: &Digest, req: &Req) -> Result {
    let reg = &state.registry;
    let range = headers::get(&req.headers, "range").and_then(ByteRange::parse);
    let mut resp = if req.method == Method::HEAD {
        // HEAD reports the whole blob; ranges only shape bodies.
        let size = reg.stat_blob(repo, digest).await?;
        let mut r = Response::new(Body::empty());
        set(&mut r, "content-length", size.to_string());
        r
    } else if let Some(url) = redirect(state, repo, digest, range.is_some()).await? {
        // The object store serves the bytes; clients (docker, containerd,
        // skopeo) follow a 307 for a blob GET.
        let mut r = headers::empty(307);
        set(&mut r, "location", url);
        set(&mut r, "docker-content-digest", digest.to_string());
        return Ok(r);
    } else {
        let read = reg.get_blob(repo, digest, range).await?;
        let want = read.range.as_ref().map_or(read.size, |r| r.end - r.start);
        let body = match whole_in_first_piece(read.stream, want).await {
            Ok(bytes) => Body::from(bytes),
            Err(rest) => Body::from_stream(rest),
        };
        let mut r = Response::new(body);
        match &read.range {
            Some(range) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                set(
                    &mut r,
                    "content-length",
                    (range.end - range.start).to_string(),
                );
                set(
                    &mut r,
                    "content-range",
                    format!("bytes {}-{}/{}", range.start, range.end - 1, read.size),
                );
            }
            None => set(&mut r, "content-length", read.size.to_string()),
        }
        r
    };
    set(&mut resp, "content-type", "application/octet-stream");
    set(&mut resp, "docker-content-digest", digest.to_string());
    set(&mut resp, "etag", format!("\"{digest}\""));
    set(&mut resp, "accept-ranges", "bytes");
    // Content addressed by digest never changes.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=31536000, immutable"),
    );
    Ok(resp)
}

/// How long a presigned blob URL handed to a client stays valid.
const REDIRECT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// A presigned URL for a whole-blob GET, when the storage offers one.
/// Ranged reads are served by the node, so their `206` semantics stay ours.
async fn redirect(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    ranged: bool,
) -> Result<Option<String>> {
    if ranged || !state.blob_redirects {
        return Ok(None);
    }
    state
        .registry
        .blob_redirect(repo, digest, REDIRECT_TTL)
        .await
}

/// Removes the blob from the repository: `202`.
pub async fn delete_blob(reg: &Registry, repo: &RepoName, digest: &Digest) -> Result {
    reg.delete_blob(repo, digest).await?;
    Ok(headers::empty(202))
}
