//! The service layer's one error type, and the table that gives each error
//! its OCI error code and HTTP status.
//!
//! `RegistryError::classify` is the only place a status is chosen: handlers
//! never pick one themselves, so the JSON code and the status cannot drift
//! apart.

use crate::digest::Digest;
use crate::immutable::ImmutableRefusal;

/// Error codes from the OCI distribution spec, plus `UNAVAILABLE` and
/// `UNKNOWN` for failures the spec leaves to the implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in the error JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// Everything that can go wrong in the registry service, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    /// A lookup of a blob by a string that is no digest at all: nothing
    /// can be stored under it, so it is as unknown as a missing blob.
    #[error("blob unknown to registry: {0}")]
    BlobUnknownText(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk did not start where the upload ends (`size` bytes so far).
    #[error("chunk out of order: upload has {size} bytes, chunk starts at {start}")]
    UploadOutOfOrder { size: u64, start: u64 },
    /// A `Range` request that the blob of `size` bytes cannot satisfy.
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("manifest references a blob unknown to this repository: {0}")]
    ManifestBlobUnknown(Digest),
    /// An index on `PUT` lists a child manifest this repository lacks.
    #[error("manifest references a manifest unknown to this repository: {0}")]
    ManifestChildUnknown(Digest),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest is {size} bytes; the limit is {limit}")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("invalid content length or range: {0}")]
    SizeInvalid(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("requested access to the resource is denied: {0}")]
    Denied(String),
    /// A move or delete of a tag an immutable-tag rule protects. Boxed: it
    /// carries the rule, and errors are returned on every path.
    #[error("requested access to the resource is denied: {0}")]
    TagImmutable(Box<ImmutableRefusal>),
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    /// A request whose parameters or headers are malformed or too large
    /// (the spec's `UNSUPPORTED`: "an invalid set of parameters").
    #[error("invalid request: {0}")]
    InvalidParameters(String),
    #[error("too many requests: {reason}")]
    TooManyRequests { reason: String, retry_after: u32 },
    #[error("service unavailable: {reason}")]
    Unavailable { reason: String, retry_after: u32 },
    /// A path under `/v2/` that names no API endpoint.
    #[error("no such endpoint: {0}")]
    EndpointUnknown(String),
    /// A known endpoint called with a method it does not serve.
    #[error("method not allowed on this endpoint: {0}")]
    MethodNotAllowed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// The OCI code and HTTP status of this error. The one place they are
    /// chosen; exhaustive on purpose, so a new variant must be classified.
    pub fn classify(&self) -> (ErrorCode, u16) {
        use ErrorCode as C;
        match self {
            RegistryError::BlobUnknown(_) | RegistryError::BlobUnknownText(_) => {
                (C::BlobUnknown, 404)
            }
            RegistryError::BlobUploadUnknown => (C::BlobUploadUnknown, 404),
            RegistryError::BlobUploadInvalid(_) => (C::BlobUploadInvalid, 400),
            RegistryError::UploadOutOfOrder { .. } => (C::BlobUploadInvalid, 416),
            RegistryError::RangeNotSatisfiable { .. } => (C::SizeInvalid, 416),
            RegistryError::DigestInvalid(_) => (C::DigestInvalid, 400),
            RegistryError::ManifestBlobUnknown(_) => (C::ManifestBlobUnknown, 400),
            RegistryError::ManifestChildUnknown(_) => (C::ManifestUnknown, 400),
            RegistryError::ManifestInvalid(_) => (C::ManifestInvalid, 400),
            RegistryError::ManifestTooLarge { .. } => (C::ManifestInvalid, 413),
            RegistryError::ManifestUnknown(_) => (C::ManifestUnknown, 404),
            RegistryError::NameInvalid(_) => (C::NameInvalid, 400),
            RegistryError::NameUnknown(_) => (C::NameUnknown, 404),
            RegistryError::SizeInvalid(_) => (C::SizeInvalid, 400),
            RegistryError::Unauthorized => (C::Unauthorized, 401),
            RegistryError::Denied(_) => (C::Denied, 403),
            // 403 as for any refusal: clients do not retry it (409 would
            // invite a retry, and the spec pairs no code with it), and
            // Docker Hub answers an immutable tag the same way.
            RegistryError::TagImmutable(_) => (C::Denied, 403),
            RegistryError::Unsupported(_) => (C::Unsupported, 405),
            RegistryError::InvalidParameters(_) => (C::Unsupported, 400),
            RegistryError::TooManyRequests { .. } => (C::TooManyRequests, 429),
            RegistryError::Unavailable { .. } => (C::Unavailable, 503),
            RegistryError::EndpointUnknown(_) => (C::Unsupported, 404),
            RegistryError::MethodNotAllowed(_) => (C::Unsupported, 405),
            RegistryError::Internal(_) => (C::Unknown, 500),
        }
    }

    /// Seconds a client should wait before retrying, where that is known.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            RegistryError::TooManyRequests { retry_after, .. }
            | RegistryError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The OCI error body: `{"errors":[{"code","message","detail"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let (code, _) = self.classify();
        let detail = match self {
            RegistryError::UploadOutOfOrder { size, start } => {
                serde_json::json!({ "size": size, "start": start })
            }
            RegistryError::RangeNotSatisfiable { size } => serde_json::json!({ "size": size }),
            RegistryError::ManifestTooLarge { size, limit } => {
                serde_json::json!({ "size": size, "limit": limit })
            }
            RegistryError::BlobUnknown(d)
            | RegistryError::ManifestBlobUnknown(d)
            | RegistryError::ManifestChildUnknown(d) => {
                serde_json::json!({ "digest": d.to_string() })
            }
            RegistryError::TagImmutable(refusal) => refusal.detail(),
            _ => serde_json::Value::Null,
        };
        let mut entry = serde_json::json!({ "code": code.as_str(), "message": self.to_string() });
        if !detail.is_null() {
            entry["detail"] = detail;
        }
        serde_json::json!({ "errors": [entry] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code_and_status() {
        let d = Digest::sha256_of(b"x");
        let s = String::new;
        let table: Vec<(RegistryError, &str, u16)> = vec![
            (RegistryError::BlobUnknown(d.clone()), "BLOB_UNKNOWN", 404),
            (RegistryError::BlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404),
            (
                RegistryError::BlobUploadInvalid(s()),
                "BLOB_UPLOAD_INVALID",
                400,
            ),
            (
                RegistryError::UploadOutOfOrder { size: 1, start: 2 },
                "BLOB_UPLOAD_INVALID",
                416,
            ),
            (
                RegistryError::RangeNotSatisfiable { size: 1 },
                "SIZE_INVALID",
                416,
            ),
            (RegistryError::DigestInvalid(s()), "DIGEST_INVALID", 400),
            (
                RegistryError::ManifestBlobUnknown(d.clone()),
                "MANIFEST_BLOB_UNKNOWN",
                400,
            ),
            (
                RegistryError::ManifestChildUnknown(d.clone()),
                "MANIFEST_UNKNOWN",
                400,
            ),
            (RegistryError::ManifestInvalid(s()), "MANIFEST_INVALID", 400),
            (
                RegistryError::ManifestTooLarge { size: 2, limit: 1 },
                "MANIFEST_INVALID",
                413,
            ),
            (RegistryError::ManifestUnknown(s()), "MANIFEST_UNKNOWN", 404),
            (RegistryError::NameInvalid(s()), "NAME_INVALID", 400),
            (RegistryError::NameUnknown(s()), "NAME_UNKNOWN", 404),
            (RegistryError::SizeInvalid(s()), "SIZE_INVALID", 400),
            (RegistryError::Unauthorized, "UNAUTHORIZED", 401),
            (RegistryError::Denied(s()), "DENIED", 403),
            (
                RegistryError::TagImmutable(Box::new(ImmutableRefusal {
                    repository: "acme/app".parse().unwrap(),
                    tag: "v1".parse().unwrap(),
                    digest: d.clone(),
                    action: crate::immutable::ImmutableAction::Move,
                    rule: crate::immutable::ImmutableTagRule {
                        tag: "v.*".into(),
                        repository: None,
                    },
                })),
                "DENIED",
                403,
            ),
            (RegistryError::Unsupported(s()), "UNSUPPORTED", 405),
            (RegistryError::InvalidParameters(s()), "UNSUPPORTED", 400),
            (
                RegistryError::TooManyRequests {
                    reason: s(),
                    retry_after: 1,
                },
                "TOOMANYREQUESTS",
                429,
            ),
            (
                RegistryError::Unavailable {
                    reason: s(),
                    retry_after: 1,
                },
                "UNAVAILABLE",
                503,
            ),
            (RegistryError::EndpointUnknown(s()), "UNSUPPORTED", 404),
            (RegistryError::MethodNotAllowed(s()), "UNSUPPORTED", 405),
            (RegistryError::Internal(s()), "UNKNOWN", 500),
        ];
        for (err, code, status) in table {
            let (c, st) = err.classify();
            assert_eq!((c.as_str(), st), (code, status), "{err:?}");
            let body = err.to_json();
            assert_eq!(body["errors"][0]["code"], code);
            assert!(body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn retry_after_only_on_refusals() {
        assert_eq!(
            RegistryError::Unavailable {
                reason: "x".into(),
                retry_after: 3
            }
            .retry_after(),
            Some(3)
        );
        assert_eq!(RegistryError::Unauthorized.retry_after(), None);
    }
}
