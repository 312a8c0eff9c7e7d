//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::BytesMut;
use futures_util::{StreamExt, TryStreamExt};
use wharf_core::{media, Reference, RegistryError, RepoName};
use wharf_notify::Action;

use crate::body::RateChecked;
use crate::events;
use crate::headers::{self, set};
use crate::{AppState, Req, Result};

/// Whether a client's `Accept` headers allow a manifest of `media_type`.
/// A client that names no manifest type at all (no header, `*/*`,
/// `application/json`) takes what is stored; one that lists manifest types
/// gets only those.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut named_manifest_types = false;
    for value in headers.get_all("accept") {
        let Ok(value) = value.to_str() else { continue };
        for t in value.split(',').map(media::essence) {
            if t == media_type || t == "*/*" {
                return true;
            }
            named_manifest_types |= media::is_manifest_type(t);
        }
    }
    !named_manifest_types
}

/// Serves a manifest's exact stored bytes (or, for `HEAD`, its headers);
/// a `GET` is a `manifest.pull` event for endpoints that asked for pulls.
pub async fn get_manifest(state: &AppState, repo: &RepoName, r: &Reference, req: &Req) -> Result {
    let m = state.registry.get_manifest(repo, r).await?;
    if !accepts(&req.headers, &m.media_type) {
        return Err(RegistryError::ManifestUnknown(format!(
            "{repo} {r} is a {} and the request's Accept header does not include it",
            m.media_type
        )));
    }
    let len = m.bytes.len();
    let mut resp = if req.method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(m.bytes))
    };
    let digest = m.digest.to_string();
    set(&mut resp, "content-type", &m.media_type);
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_LENGTH, len.into());
    set(&mut resp, "etag", format!("\"{digest}\""));
    if req.method == Method::GET && events::listening(state, repo, Action::ManifestPull) {
        let mut e = events::event(state, req, Action::ManifestPull, repo, r);
        e.digest = Some(digest.clone());
        e.media_type = Some(m.media_type.clone());
        e.size = Some(len as u64);
        events::attach(&mut resp, vec![e]);
    }
    set(&mut resp, "docker-content-digest", digest);
    Ok(resp)
}

/// Stores a manifest: `201` with `Location`, its digest, and `OCI-Subject`
/// when it refers to another manifest. A `manifest.push` event, and a
/// `tag.move` when a push by tag moved the tag.
pub async fn put_manifest(
    state: &AppState,
    repo: &RepoName,
    r: &Reference,
    req: &Req,
    body: Body,
) -> Result {
    let limit = media::MAX_MANIFEST_BYTES;
    let too_large = |size: u64| RegistryError::ManifestTooLarge {
        size,
        limit: limit as u64,
    };
    if let Some(len) = headers::content_length(&req.headers)? {
        if len > limit as u64 {
            return Err(too_large(len));
        }
    }
    // Read under the same minimum rate as blob uploads: a stalled body must
    // not hold a push slot for ever.
    let raw = body.into_data_stream().map_err(std::io::Error::other);
    let mut stream = RateChecked::new(raw, state.min_rate);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::ManifestInvalid(format!("reading the manifest body failed: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    let bytes = buf.freeze();
    let reg = &state.registry;
    // Where the tag pointed before, to tell a move from a first push:
    // read only when someone listens, and an event is no reason to fail
    // the push.
    let listening = events::listening(state, repo, Action::ManifestPush);
    let previous = match r {
        Reference::Tag(t) if listening => reg.tag_target(repo, t).await.unwrap_or_else(|e| {
            tracing::debug!(%repo, tag = %t, error = %e, "tag not read for its event");
            None
        }),
        _ => None,
    };
    let content_type = headers::get(&req.headers, "content-type");
    let out = reg.put_manifest(repo, r, content_type, bytes).await?;
    let mut resp = headers::empty(201);
    set(
        &mut resp,
        "location",
        format!("/v2/{repo}/manifests/{}", out.digest),
    );
    set(&mut resp, "docker-content-digest", out.digest.to_string());
    if let Some(subject) = &out.subject {
        set(&mut resp, "oci-subject", subject.to_string());
    }
    if listening {
        let described = |action| {
            let mut e = events::event(state, req, action, repo, r);
            e.digest = Some(out.digest.to_string());
            e.media_type = Some(out.media_type.clone());
            e.size = Some(out.size);
            e
        };
        let mut made = vec![described(Action::ManifestPush)];
        if let Some(previous) = previous.filter(|p| *p != out.digest) {
            let mut moved = described(Action::TagMove);
            moved.previous_digest = Some(previous.to_string());
            made.push(moved);
        }
        events::attach(&mut resp, made);
    }
    Ok(resp)
}

/// Deletes a tag, or a manifest by digest: `202`, and a `tag.delete` or
/// `manifest.delete` event describing what was deleted.
pub async fn delete_manifest(
    state: &AppState,
    repo: &RepoName,
    r: &Reference,
    req: &Req,
) -> Result {
    let reg = &state.registry;
    let action = match r {
        Reference::Tag(_) => Action::TagDelete,
        Reference::Digest(_) => Action::ManifestDelete,
    };
    // What is about to go, for the event: read only when someone listens,
    // and no reason to fail the delete.
    let listening = events::listening(state, repo, action);
    let before = match listening {
        true => reg.describe_manifest(repo, r).await.unwrap_or_else(|e| {
            tracing::debug!(%repo, reference = %r, error = %e, "manifest not read for its event");
            None
        }),
        false => None,
    };
    reg.delete_manifest(repo, r).await?;
    let mut resp = headers::empty(202);
    if listening {
        let mut e = events::event(state, req, action, repo, r);
        e.digest = match (r, &before) {
            (_, Some(b)) => Some(b.digest.to_string()),
            (Reference::Digest(d), None) => Some(d.to_string()),
            (Reference::Tag(_), None) => None,
        };
        e.media_type = before.as_ref().map(|b| b.media_type.clone());
        e.size = before.as_ref().map(|b| b.size);
        events::attach(&mut resp, vec![e]);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("accept", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn negotiates_on_accept() {
        assert!(accepts(&with_accept(&[]), media::OCI_INDEX));
        assert!(accepts(&with_accept(&["*/*"]), media::OCI_INDEX));
        assert!(accepts(
            &with_accept(&["application/json"]),
            media::OCI_INDEX
        ));
        assert!(accepts(
            &with_accept(&[media::DOCKER_MANIFEST, media::OCI_INDEX]),
            media::OCI_INDEX
        ));
        assert!(accepts(
            &with_accept(&[&format!(
                "{}; q=0.5, {}",
                media::DOCKER_MANIFEST,
                media::OCI_MANIFEST
            )]),
            media::OCI_MANIFEST
        ));
        assert!(!accepts(
            &with_accept(&[media::DOCKER_MANIFEST]),
            media::OCI_INDEX
        ));
    }
}
