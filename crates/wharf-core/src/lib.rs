//! Wharf's domain types: the vocabulary every other crate speaks.
//!
//! Owns: content digests ([`Digest`]), repository names ([`RepoName`]),
//! tags and references ([`Tag`], [`Reference`]), upload session ids
//! ([`UploadId`]), the media types Wharf understands ([`media`]), manifest
//! parsing and validation ([`manifest`]), tenant quotas and immutable-tag
//! rules as the registry looks them up ([`quota`], [`immutable`]), and the
//! single error type of the service layer with its OCI code and HTTP status
//! ([`error`]).
//!
//! Must never: do I/O, know about HTTP frameworks, or let an invalid value be
//! constructed. Every type here is parsed once, at the edge, and is valid for
//! the rest of its life; no bare `String` carries a name or digest past it.

#![forbid(unsafe_code)]

pub mod digest;
pub mod error;
pub mod immutable;
pub mod manifest;
pub mod media;
pub mod names;
pub mod quota;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{ErrorCode, RegistryError};
pub use immutable::{ImmutableAction, ImmutableRefusal, ImmutableTagRule, ImmutableTagSource};
pub use names::{Reference, RepoName, Tag, UploadId};
pub use quota::{Quota, QuotaSource};

/// Seconds since the Unix epoch, now (0 if the clock is before it): the time
/// stamps of upload sessions, token lifetimes and directory records.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
