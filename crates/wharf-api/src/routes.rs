//! The one parser of `/v2/…` paths: turns a raw request path into an
//! [`Endpoint`] whose parts are already valid domain values.
//!
//! Repository names contain slashes, so the path is read from its end: the
//! last one or two segments say which endpoint it is, and everything before
//! them is the name. The path is parsed as received (percent-encoded): no
//! name, tag, digest or upload id may contain `%`, so an encoded slash or dot
//! can never sneak past the grammar.

use std::str::FromStr;

use wharf_core::{Digest, Reference, RegistryError, RepoName, UploadId};

/// Every endpoint of the distribution API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// The repository an endpoint names, if any.
pub fn repo_of(endpoint: &Endpoint) -> Option<&RepoName> {
    match endpoint {
        Endpoint::Base | Endpoint::Catalog => None,
        Endpoint::Tags(r)
        | Endpoint::Manifest(r, _)
        | Endpoint::Blob(r, _)
        | Endpoint::Uploads(r)
        | Endpoint::Upload(r, _)
        | Endpoint::Referrers(r, _) => Some(r),
    }
}

fn name(s: &str) -> Result<RepoName, RegistryError> {
    RepoName::from_str(s).map_err(|e| RegistryError::NameInvalid(e.to_string()))
}

fn digest(s: &str) -> Result<Digest, RegistryError> {
    Digest::from_str(s).map_err(|e| RegistryError::DigestInvalid(e.to_string()))
}

/// Parses a request path. Paths outside `/v2/` or of no known shape are
/// `EndpointUnknown`; a known shape with a bad name, digest, tag or id gets
/// the error for that part.
pub fn parse(path: &str) -> Result<Endpoint, RegistryError> {
    let unknown = || RegistryError::EndpointUnknown(path.to_string());
    let rest = path.strip_prefix("/v2").ok_or_else(unknown)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/').ok_or_else(unknown)?;
    if rest == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    if let Some(n) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(Endpoint::Uploads(name(n)?));
    }
    if let Some(n) = rest.strip_suffix("/tags/list") {
        return Ok(Endpoint::Tags(name(n)?));
    }
    let (prefix, last) = rest.rsplit_once('/').ok_or_else(unknown)?;
    let (n, kind) = prefix.rsplit_once('/').ok_or_else(unknown)?;
    match kind {
        "manifests" => {
            let reference = Reference::from_str(last).map_err(|e| match e {
                wharf_core::names::ReferenceError::Digest(e) => {
                    RegistryError::DigestInvalid(e.to_string())
                }
                wharf_core::names::ReferenceError::Tag(e) => {
                    RegistryError::ManifestInvalid(e.to_string())
                }
            })?;
            Ok(Endpoint::Manifest(name(n)?, reference))
        }
        "blobs" => Ok(Endpoint::Blob(name(n)?, digest(last)?)),
        "referrers" => Ok(Endpoint::Referrers(name(n)?, digest(last)?)),
        "uploads" => {
            let n = n.strip_suffix("/blobs").ok_or_else(unknown)?;
            let id = UploadId::from_str(last).map_err(|_| RegistryError::BlobUploadUnknown)?;
            Ok(Endpoint::Upload(name(n)?, id))
        }
        _ => Err(unknown()),
    }
}

/// The error a request for `path` gets when [`parse`] refused it with `e`.
/// A lookup (`GET`, `HEAD`, `DELETE`) of something that cannot exist is
/// "not found": a manifest by a reference that is neither a tag nor a
/// digest is `MANIFEST_UNKNOWN` (404), as the OCI conformance suite
/// expects, and a blob by a string that is no digest `BLOB_UNKNOWN` (404),
/// as for any blob the registry lacks. A `PUT` under such a reference stays
/// the `400` that names what is wrong, and so does a referrers request (the
/// spec lists `400` for it, and a registry with the referrers API must not
/// answer it `404`).
pub fn refusal(path: &str, method: &axum::http::Method, e: RegistryError) -> RegistryError {
    use axum::http::Method;
    let lookup = matches!(*method, Method::GET | Method::HEAD | Method::DELETE);
    let bad_reference = matches!(
        e,
        RegistryError::DigestInvalid(_) | RegistryError::ManifestInvalid(_)
    );
    if !(lookup && bad_reference) {
        return e;
    }
    let Some((prefix, last)) = path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.rsplit_once('/'))
    else {
        return e;
    };
    let shown: String = last.chars().take(128).collect();
    if let Some(n) = prefix
        .strip_suffix("/manifests")
        .filter(|n| name(n).is_ok())
    {
        return RegistryError::ManifestUnknown(format!("{n}:{shown}"));
    }
    let is_blob = prefix
        .strip_suffix("/blobs")
        .is_some_and(|n| name(n).is_ok());
    if is_blob && matches!(e, RegistryError::DigestInvalid(_)) {
        return RegistryError::BlobUnknownText(shown);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn a_lookup_by_an_impossible_reference_is_not_found() {
        use axum::http::Method;
        let code = |m: Method, path: &str| {
            let e = parse(path).unwrap_err();
            refusal(path, &m, e).classify().0.as_str()
        };
        let bad = "/v2/a/b/manifests/.INVALID_MANIFEST_NAME";
        assert_eq!(code(Method::GET, bad), "MANIFEST_UNKNOWN");
        assert_eq!(code(Method::HEAD, bad), "MANIFEST_UNKNOWN");
        assert_eq!(code(Method::DELETE, bad), "MANIFEST_UNKNOWN");
        assert_eq!(code(Method::PUT, bad), "MANIFEST_INVALID");
        assert_eq!(
            code(Method::GET, "/v2/a/manifests/sha256:xyz"),
            "MANIFEST_UNKNOWN"
        );
        // A bad name is still a bad name.
        assert_eq!(
            code(Method::GET, "/v2/A/manifests/-bad"),
            "MANIFEST_INVALID"
        );
        // Blobs: a lookup by no digest at all is not found; the referrers
        // API keeps its 400.
        for m in [Method::GET, Method::HEAD, Method::DELETE] {
            assert_eq!(code(m, "/v2/a/b/blobs/sha256:1234"), "BLOB_UNKNOWN");
        }
        assert_eq!(
            code(Method::GET, "/v2/a/blobs/not-a-digest"),
            "BLOB_UNKNOWN"
        );
        assert_eq!(code(Method::GET, "/v2/A/blobs/sha256:1234"), "NAME_INVALID");
        assert_eq!(
            code(Method::GET, "/v2/a/referrers/sha256:1234"),
            "DIGEST_INVALID"
        );
    }

    #[test]
    fn parses_every_endpoint() {
        let r = |s: &str| -> RepoName { s.parse().unwrap() };
        assert_eq!(parse("/v2/").unwrap(), Endpoint::Base);
        assert_eq!(parse("/v2").unwrap(), Endpoint::Base);
        assert_eq!(parse("/v2/_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(
            parse("/v2/a/b/tags/list").unwrap(),
            Endpoint::Tags(r("a/b"))
        );
        assert_eq!(
            parse("/v2/a/manifests/latest").unwrap(),
            Endpoint::Manifest(r("a"), "latest".parse().unwrap())
        );
        assert_eq!(
            parse(&format!("/v2/a/b/c/manifests/{}", d())).unwrap(),
            Endpoint::Manifest(r("a/b/c"), d().parse().unwrap())
        );
        assert_eq!(
            parse(&format!("/v2/a/blobs/{}", d())).unwrap(),
            Endpoint::Blob(r("a"), d().parse().unwrap())
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/").unwrap(),
            Endpoint::Uploads(r("a"))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads").unwrap(),
            Endpoint::Uploads(r("a"))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/abc-123").unwrap(),
            Endpoint::Upload(r("a"), "abc-123".parse().unwrap())
        );
        assert_eq!(
            parse(&format!("/v2/a/referrers/{}", d())).unwrap(),
            Endpoint::Referrers(r("a"), d().parse().unwrap())
        );
    }

    #[test]
    fn names_may_contain_endpoint_words() {
        let r = |s: &str| -> RepoName { s.parse().unwrap() };
        assert_eq!(
            parse("/v2/x/blobs/manifests/v1").unwrap(),
            Endpoint::Manifest(r("x/blobs"), "v1".parse().unwrap())
        );
        assert_eq!(
            parse("/v2/x/tags/tags/list").unwrap(),
            Endpoint::Tags(r("x/tags"))
        );
        assert_eq!(
            parse("/v2/x/blobs/blobs/uploads/").unwrap(),
            Endpoint::Uploads(r("x/blobs"))
        );
    }

    #[test]
    fn refuses_bad_parts() {
        let code = |p: &str| parse(p).unwrap_err().classify().0.as_str();
        assert_eq!(code("/v2/A/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a/../b/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a%2fb/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a/%2e%2e/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a/blobs/sha256:1234"), "DIGEST_INVALID");
        assert_eq!(code("/v2/a/manifests/sha256:xyz"), "DIGEST_INVALID");
        assert_eq!(code("/v2/a/manifests/-bad"), "MANIFEST_INVALID");
        // No endpoint ends in `/../<x>`: refused as unknown, never resolved.
        assert_eq!(code("/v2/a/blobs/uploads/../x"), "UNSUPPORTED");
        assert_eq!(code(&format!("/v2/../blobs/{}", d())), "NAME_INVALID");
        assert_eq!(code("/v2/a/blobs/uploads/a.b"), "BLOB_UPLOAD_UNKNOWN");
        assert_eq!(code("/v3/"), "UNSUPPORTED");
        assert_eq!(code("/v2/a"), "UNSUPPORTED");
        assert_eq!(code("/v2/a/nope/x"), "UNSUPPORTED");
        assert_eq!(code("/v2//manifests/x"), "NAME_INVALID");
    }

    #[test]
    fn never_panics_on_arbitrary_paths() {
        // A cheap deterministic fuzz: every short path over a hostile alphabet.
        let alphabet = [
            "/",
            "a",
            "v2",
            "blobs",
            "uploads",
            "manifests",
            "tags",
            "list",
            ":",
            ".",
            "%2f",
            "",
        ];
        let mut count = 0;
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for e in alphabet {
                        let p = format!("/v2/{a}/{b}/{c}{e}");
                        let _ = parse(&p);
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, alphabet.len().pow(4));
    }
}
