//! Blob storage: where the bytes of blobs and manifests live.
//!
//! Owns: the [`BlobStore`] trait (a small, content-addressed contract:
//! stat, ranged read, durable put, resumable uploads that verify their digest
//! while streaming, delete, list), the filesystem backend ([`fs::FsStore`]),
//! the S3-compatible backend ([`s3::S3Store`], for nodes that share one
//! object store), and the shared behaviour suite ([`suite`]) that every
//! backend must pass.
//!
//! Must never: know about repositories, tags, manifests or HTTP. It stores
//! bytes by digest and upload bytes by upload id, nothing more. A blob is
//! visible under its digest only once its bytes are verified and durable
//! (invariant 6 of the design): a crash at any point leaves either the whole
//! verified blob or nothing.

// One exception, justified where it is: `fs::map_piece` maps immutable
// blob files to send them without an extra copy.
#![deny(unsafe_code)]

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use wharf_core::{Digest, UploadId};

pub mod fs;
pub mod s3;
pub mod suite;

/// A stream of blob bytes. Blob bodies are always streams, never whole
/// vectors, so memory stays flat whatever the blob's size.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// What a storage call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No blob with that digest, or no upload with that id.
    #[error("not found")]
    NotFound,
    /// The uploaded bytes hash to `actual`, not the `expected` digest. The
    /// upload has been discarded and nothing was stored.
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// An append did not start at the end of the upload (`size` bytes).
    #[error("upload has {size} bytes; append must start there")]
    OffsetMismatch { size: u64 },
    /// The request body failed part-way (client went away, timed out). The
    /// bytes received before the failure are kept, and the upload can be
    /// resumed from its new size.
    #[error("request body failed: {0}")]
    Body(String),
    /// The backend cannot be reached or refused the call.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The most [`BlobStore::read_small`] reserves up front, whatever size it
/// is told.
pub const SMALL_READ_MAX: u64 = 4 << 20;

/// A content-addressed blob store with resumable uploads.
///
/// Implementations must be safe to call concurrently from many tasks, and
/// must make a blob visible under its digest only after its content was
/// verified against that digest and made durable.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of the blob `digest`, or `None` when it is not stored.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Streams the blob, or the bytes `range` of it (which the caller has
    /// checked lies inside the blob). `NotFound` when it is not stored.
    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError>;

    /// The whole of small content (a manifest) of `size` bytes, as recorded
    /// in metadata. `NotFound` when it is not stored. By default the bytes of
    /// [`BlobStore::get`], collected; a backend may answer faster.
    async fn read_small(&self, digest: &Digest, size: u64) -> Result<Bytes, StorageError> {
        let mut stream = self.get(digest, None).await?;
        let mut buf = bytes::BytesMut::with_capacity(size.min(SMALL_READ_MAX) as usize);
        while let Some(chunk) = futures_util::TryStreamExt::try_next(&mut stream).await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Stores small content (manifests) in one call: verifies that `bytes`
    /// hash to `digest`, then stores them durably. Storing content that is
    /// already there is a no-op.
    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StorageError>;

    /// Removes the blob. `NotFound` when it was not stored.
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError>;

    /// Every stored blob's digest (for garbage collection and checks).
    async fn list(&self) -> Result<Vec<Digest>, StorageError>;

    /// Opens an empty upload session `id`.
    async fn upload_start(&self, id: &UploadId) -> Result<(), StorageError>;

    /// How many bytes upload `id` holds. `NotFound` for an unknown id.
    async fn upload_size(&self, id: &UploadId) -> Result<u64, StorageError>;

    /// Appends `body` to upload `id`, which must currently hold exactly
    /// `offset` bytes (else `OffsetMismatch`, and nothing is written).
    /// Returns the new size. Concurrent appends to one upload are serialised.
    async fn upload_append(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
    ) -> Result<u64, StorageError>;

    /// Verifies that the upload's bytes hash to `digest`; if so, makes them
    /// the durable blob `digest` and ends the session, returning the size.
    /// On a mismatch the session is discarded and `DigestMismatch` returned.
    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, StorageError>;

    /// Discards upload `id`. `NotFound` for an unknown id.
    async fn upload_cancel(&self, id: &UploadId) -> Result<(), StorageError>;

    /// The ids of all open upload sessions (for expiry of abandoned ones).
    async fn upload_list(&self) -> Result<Vec<UploadId>, StorageError>;

    /// A URL, valid for `ttl`, from which a client can fetch the blob
    /// directly (a presigned GET of an object store), or `None` when the
    /// node must serve the bytes itself. The caller has checked that the
    /// blob exists. Backends offer none unless they say otherwise.
    async fn redirect_url(
        &self,
        digest: &Digest,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        let _ = (digest, ttl);
        Ok(None)
    }
}
