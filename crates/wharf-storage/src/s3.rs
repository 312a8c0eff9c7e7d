//! The S3-compatible backend: blobs as objects in one bucket of any S3 API
//! (Garage, MinIO, Ceph RGW, AWS S3), so that many stateless nodes share
//! one store.
//!
//! Owns: the object layout below the configured `prefix` of the bucket,
//!
//! ```text
//! blobs/<algorithm>/<hex>                        verified blobs
//! uploads/<upload id>/session                    marker: the session is open
//! uploads/<upload id>/parts/<offset>-<token>     the bytes of one append
//! ```
//!
//! (`<offset>` is 20 zero-padded decimal digits, `<token>` a random name
//! per write), and a per-node cache of upload hash state.
//!
//! Must never: make an object appear under `blobs/` before its bytes were
//! hashed and found equal to its digest; hold a whole blob in memory; keep
//! anything only in memory that correctness depends on; or wait on the
//! store without a bound.
//!
//! # How the contract is kept
//!
//! *Verification and atomic visibility.* An upload's bytes live under
//! `uploads/<id>/` until commit. Commit hashes them (or takes the hash this
//! node computed while they streamed in), and only when the hash equals the
//! digest does it write `blobs/<alg>/<hex>`: by a server-side copy when the
//! upload is one object (the usual single-`PATCH` push; Garage copies only
//! metadata), otherwise by a multipart upload fed with the parts in order,
//! hashed on the way, and *completed only if the hash matched* (aborted
//! otherwise). An S3 PUT, copy or multipart completion makes the whole
//! object visible at once and only once it is stored, so a reader sees the
//! verified blob or nothing; a crash anywhere leaves at most unreferenced
//! upload objects or an incomplete multipart upload, never a blob. Small
//! `put`s (manifests) are hashed in memory first and then written with one
//! PUT. Requests are signed with the SHA-256 of their payload
//! (`x-amz-content-sha256`), so the server also rejects bytes damaged in
//! transit. Durability is the store's: a deployment must acknowledge writes
//! only once on disk (Garage: `data_fsync` and `metadata_fsync`, as
//! `scripts/garage.sh` sets them).
//!
//! *Resumable, on any node.* Everything about a session is in the bucket:
//! the marker says it is open, and each append is one object whose name
//! holds its start offset, so the session's size is the end of the chain of
//! parts that starts at offset 0 (one LIST). Another node, or this one after
//! a restart, continues from that. An append writes its part only after
//! checking that the chain ends exactly at the client's offset
//! (`OffsetMismatch` otherwise, and nothing is written). Appends to one
//! session are serialised on a node by a per-session lock. Across nodes
//! (a client's chunk retried through another node while the first still
//! writes it), a writer lists again after writing its part, and the append
//! succeeds only if its part is then the only one at its offset; otherwise
//! it removes its part and answers `OffsetMismatch`. Since the store's
//! writes and listings are consistent (each writer lists after its own
//! write is complete), two racing writers cannot both find their part
//! alone, so at most one succeeds; both may fail (each saw the other), and
//! the client then resumes from the size it is given. The store offers no conditional write that would settle this
//! in one request (Garage ignores `If-None-Match` on PUT). While racers
//! have not yet removed their parts, the chain takes the part with the
//! smallest name at each offset, a choice every node makes alike from the
//! listing alone; and whatever happens, the digest check at commit keeps
//! wrong bytes from becoming a blob.
//!
//! *The hash cache.* While an append streams, the node hashes it, and keeps
//! the hash state with the session's size and last part. Commit on the same
//! node, at the same size and last part, then needs no read-back; in every
//! other case (another node appended, a restart, sha512) commit reads the
//! parts back once. The cache is bounded ([`MAX_CACHED_UPLOADS`]); losing an
//! entry costs one read-back, nothing else.
//!
//! *Bounded memory.* An append buffers at most one part ([`PART_SIZE`],
//! 8 MiB) before a plain PUT; a larger body turns into a multipart upload
//! with at most [`PARTS_IN_FLIGHT`] parts in flight behind the buffer, so
//! about 24 MiB per append whatever the body's size. Reads go in pieces of
//! [`READ_PIECE`] (4 MiB), each a ranged GET that completes at the store's
//! speed (so a slow client never holds an S3 request open past its timeout),
//! and a blob stream holds one piece at a time.
//!
//! *Connections and timeouts.* The `object_store` crate's HTTP client
//! (reqwest) owns this node's connection pool to the store: at most
//! `pool_max_idle_per_host` idle connections are kept, reused and closed
//! after 30 s idle; connections in use are one per request in flight, which
//! the node's storage guard (`wharf-guard`) bounds by bounding calls (each
//! call has one request in flight, an append or commit up to
//! `1 + PARTS_IN_FLIGHT`). Every request has `connect_timeout` for the
//! connection and `request_timeout` for the whole exchange. A request is
//! retried at most once, and only within `request_timeout` of its start
//! (after a 5xx or 429, or a transport error that left it unsent or hit an
//! idempotent request): one retry rides over a pooled connection the store
//! closed, more would add load to a store that is already struggling. Every failure to reach or use the store (refused,
//! timed out, 5xx, denied) is [`StorageError::Unavailable`], which the
//! guard counts towards opening its breaker.
//!
//! *Redirects.* With `presign_redirects`, [`BlobStore::redirect_url`]
//! returns a presigned GET URL of the blob, so pulls can go straight to the
//! store; the URL names `endpoint` as configured, which clients must then be
//! able to reach.
//!
//! Why `object_store`: the Apache Arrow project's S3 client is small next to
//! the AWS SDK, speaks plain S3 (path-style, any endpoint), and gives
//! streaming multipart uploads, ranged GETs, presigning and the client's
//! pool and timeouts in one place.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use wharf_core::{Algorithm, Digest, Hasher, UploadId};

use crate::{BlobStore, ByteStream, StorageError};

/// Size of the parts of multipart uploads (S3 wants at least 5 MiB for all
/// but the last), and the most an append buffers before it starts one.
pub const PART_SIZE: usize = 8 << 20;

/// Parts of one multipart upload sent at once, behind the one being filled.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Size of the ranged GETs that blob streams and read-backs are made of.
pub const READ_PIECE: u64 = 4 << 20;

/// Upload sessions whose hash state a node keeps at most (entries not in
/// use are dropped beyond this).
pub const MAX_CACHED_UPLOADS: usize = 1024;

/// How to reach the bucket, and the limits of this node's client to it.
#[derive(Clone)]
pub struct S3Config {
    /// Base URL of the S3 API, e.g. `http://127.0.0.1:3900`. Requests are
    /// path-style (`<endpoint>/<bucket>/<key>`), which every S3-compatible
    /// store accepts.
    pub endpoint: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// The region requests are signed for (Garage: its `s3_region`).
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Key prefix below which this store keeps everything (no leading or
    /// trailing `/` needed); empty for the bucket's root. Lets several
    /// registries, or test cases, share a bucket.
    pub prefix: String,
    /// Allow a plain `http://` endpoint (tests, a store on loopback).
    pub allow_http: bool,
    /// Idle connections kept open to the store for reuse.
    pub pool_max_idle_per_host: usize,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one whole request, from connecting to the last byte of the
    /// response (a part upload or a [`READ_PIECE`] read must fit in it).
    pub request_timeout: Duration,
    /// Hand out presigned GET URLs ([`BlobStore::redirect_url`]).
    pub presign_redirects: bool,
}

impl S3Config {
    /// A configuration with the given location and credentials and the
    /// default limits: 16 idle connections, 3 s to connect, 30 s per
    /// request, no prefix, no redirects; plain HTTP allowed only when the
    /// endpoint is `http://`.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        region: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> S3Config {
        let endpoint = endpoint.into();
        S3Config {
            allow_http: endpoint.starts_with("http://"),
            endpoint,
            bucket: bucket.into(),
            region: region.into(),
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            prefix: String::new(),
            pool_max_idle_per_host: 16,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            presign_redirects: false,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("presign_redirects", &self.presign_redirects)
            .finish()
    }
}

/// A [`BlobStore`] in an S3-compatible bucket. Cheap to clone; clones share
/// the connection pool and the hash cache.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: AmazonS3,
    /// The configured prefix, without surrounding `/`; empty for none.
    prefix: String,
    presign: bool,
    /// Per upload session: the lock that serialises this node's appends and
    /// commit, and the hash state when this node knows it.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Known>>>>>,
}

/// The hash of an upload's bytes, valid while the session still ends where
/// it ended when the hash was taken.
struct Known {
    size: u64,
    /// The session's last part (`None` while it is empty).
    last: Option<Path>,
    hasher: Hasher,
}

impl Known {
    fn matches(&self, session: &Session) -> bool {
        self.size == session.size && self.last.as_ref() == session.chain.last().map(|s| &s.path)
    }
}

/// One append's object.
struct Segment {
    path: Path,
    size: u64,
}

/// What the bucket says about an upload session.
struct Session {
    /// The marker exists: the session is open.
    open: bool,
    /// The parts from offset 0 on, each starting where the previous ended.
    chain: Vec<Segment>,
    /// Where the chain ends: the session's size.
    size: u64,
    /// How many parts start at each offset: more than one only while
    /// writers on different nodes race (see the module documentation).
    starts: BTreeMap<u64, usize>,
}

impl S3Store {
    /// A store on the bucket `config` names. Makes no request: an
    /// unreachable store shows as `Unavailable` on the first call.
    pub fn new(config: S3Config) -> Result<S3Store, StorageError> {
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_pool_max_idle_per_host(config.pool_max_idle_per_host)
            .with_pool_idle_timeout(Duration::from_secs(30));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 1,
            retry_timeout: config.request_timeout,
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| StorageError::Unavailable(format!("s3 configuration: {e}")))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                store,
                prefix: config.prefix.trim_matches('/').to_owned(),
                presign: config.presign_redirects,
                uploads: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Asks the bucket for one key under the store's prefix, with the
    /// configured credentials: what a node does before it turns ready.
    /// Changes nothing.
    ///
    /// A failure is [`ProbeFailure::Misconfigured`] when the store answered
    /// and asking again cannot help (access denied, an unknown key id, a
    /// signature that does not match the secret, no such bucket, a wrong
    /// region), and [`ProbeFailure::Unreachable`] otherwise (refused, timed
    /// out, a 5xx).
    pub async fn probe(&self) -> Result<(), ProbeFailure> {
        let prefix = self.key("blobs");
        let mut listing = self.inner.store.list(Some(&prefix));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(classify(&e)),
        }
    }

    fn key(&self, rest: &str) -> Path {
        if self.inner.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.inner.prefix))
        }
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        self.key(&format!(
            "blobs/{}/{}",
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }

    fn upload_dir(&self, id: &UploadId) -> Path {
        self.key(&format!("uploads/{}", id.as_str()))
    }

    fn marker_key(&self, id: &UploadId) -> Path {
        self.key(&format!("uploads/{}/session", id.as_str()))
    }

    fn part_key(&self, id: &UploadId, offset: u64) -> Path {
        self.key(&format!(
            "uploads/{}/parts/{offset:020}-{}",
            id.as_str(),
            token()
        ))
    }

    /// The lock and hash cache of session `id` on this node.
    fn upload_cell(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Option<Known>>> {
        let mut map = self.inner.uploads.lock().expect("upload map poisoned");
        if map.len() >= MAX_CACHED_UPLOADS && !map.contains_key(id.as_str()) {
            // Only the map holds these: nobody waits on them.
            map.retain(|_, cell| Arc::strong_count(cell) > 1);
        }
        map.entry(id.as_str().to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }

    fn forget_upload(&self, id: &UploadId) {
        self.inner
            .uploads
            .lock()
            .expect("upload map poisoned")
            .remove(id.as_str());
    }

    /// Every object under `dir`.
    async fn list_under(&self, dir: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(unavailable)
    }

    /// Reads session `id`'s state from the bucket (one LIST).
    async fn session(&self, id: &UploadId) -> Result<Session, StorageError> {
        let dir = self.upload_dir(id);
        let objects = self.list_under(&dir).await?;
        let marker = self.marker_key(id);
        let parts_dir = format!("{}/parts/", dir.as_ref());
        let mut open = false;
        let mut starts: BTreeMap<u64, usize> = BTreeMap::new();
        // Per start offset, the part with the smallest name: a choice every
        // node makes alike from the listing alone, with no clock involved.
        let mut first: BTreeMap<u64, ObjectMeta> = BTreeMap::new();
        for object in objects {
            if object.location == marker {
                open = true;
                continue;
            }
            let Some(offset) = object
                .location
                .as_ref()
                .strip_prefix(&parts_dir)
                .and_then(|name| name.split_once('-'))
                .and_then(|(offset, _)| offset.parse::<u64>().ok())
            else {
                continue;
            };
            if object.size == 0 {
                continue;
            }
            *starts.entry(offset).or_default() += 1;
            let beaten = first
                .get(&offset)
                .is_some_and(|held| held.location.as_ref() < object.location.as_ref());
            if !beaten {
                first.insert(offset, object);
            }
        }
        let mut chain = Vec::new();
        let mut size = 0u64;
        while let Some(part) = first.remove(&size) {
            size += part.size;
            chain.push(Segment {
                path: part.location,
                size: part.size,
            });
        }
        Ok(Session {
            open,
            chain,
            size,
            starts,
        })
    }

    /// Removes everything of session `id`, the marker first so that other
    /// nodes see the session gone before its parts go. `false` when there
    /// was nothing.
    async fn remove_session(&self, id: &UploadId) -> Result<bool, StorageError> {
        let objects = self.list_under(&self.upload_dir(id)).await?;
        if objects.is_empty() {
            return Ok(false);
        }
        let marker = self.marker_key(id);
        if objects.iter().any(|o| o.location == marker) {
            self.delete_key(&marker).await?;
        }
        let rest: Vec<Path> = objects
            .into_iter()
            .map(|o| o.location)
            .filter(|p| *p != marker)
            .collect();
        self.delete_keys(rest).await?;
        Ok(true)
    }

    async fn delete_key(&self, key: &Path) -> Result<(), StorageError> {
        match self.inner.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete_keys(&self, keys: Vec<Path>) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut results = self
            .inner
            .store
            .delete_stream(futures_util::stream::iter(keys.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// Reads `key` (of `size` bytes) piece by piece, handing each to `f`.
    async fn read_pieces(
        &self,
        key: &Path,
        size: u64,
        mut f: impl FnMut(Bytes),
    ) -> Result<(), StorageError> {
        let mut pos = 0;
        while pos < size {
            let end = (pos + READ_PIECE).min(size);
            f(self.read_range(key, pos..end).await?);
            pos = end;
        }
        Ok(())
    }

    async fn read_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        let want = range.end - range.start;
        let bytes = self
            .inner
            .store
            .get_range(key, range)
            .await
            .map_err(not_found_or_unavailable)?;
        if bytes.len() as u64 != want {
            return Err(StorageError::Unavailable(format!(
                "s3: short read of {key}: {} of {want} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Writes `body` to the new object `key`: one PUT when it fits in a
    /// part, else a multipart upload. Feeds `hasher` on the way. Returns the
    /// bytes written and, when the body failed part-way, its error: what
    /// arrived before the failure is still written. An error of the store
    /// leaves nothing behind (the multipart upload is aborted).
    async fn write_part_object(
        &self,
        key: &Path,
        body: &mut ByteStream,
        hasher: &mut Option<Hasher>,
    ) -> Result<(u64, Option<String>), StorageError> {
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut buffered_len = 0usize;
        let mut writer: Option<WriteMultipart> = None;
        let mut written = 0u64;
        let mut body_error = None;
        while let Some(next) = body.next().await {
            let chunk = match next {
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => chunk,
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            written += chunk.len() as u64;
            if let Some(w) = writer.as_mut() {
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.take().expect("writer is set").abort().await;
                    return Err(unavailable(e));
                }
                w.put(chunk);
                continue;
            }
            buffered_len += chunk.len();
            buffered.push(chunk);
            if buffered_len >= PART_SIZE {
                let upload = self
                    .inner
                    .store
                    .put_multipart(key)
                    .await
                    .map_err(unavailable)?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                for piece in buffered.drain(..) {
                    w.put(piece);
                }
                writer = Some(w);
            }
        }
        match writer {
            Some(mut w) => {
                if let Err(e) = w.wait_for_capacity(0).await {
                    let _ = w.abort().await;
                    return Err(unavailable(e));
                }
                w.finish().await.map_err(unavailable)?;
            }
            None if written > 0 => {
                self.inner
                    .store
                    .put(key, PutPayload::from_iter(buffered))
                    .await
                    .map_err(unavailable)?;
            }
            None => {}
        }
        Ok((written, body_error))
    }

    /// The digest of the concatenation of `parts`, read back from the store.
    async fn hash_parts(
        &self,
        parts: &[Segment],
        algorithm: Algorithm,
    ) -> Result<Digest, StorageError> {
        let mut hasher = Hasher::new(algorithm);
        for part in parts {
            self.read_pieces(&part.path, part.size, |bytes| hasher.update(&bytes))
                .await?;
        }
        Ok(hasher.finish())
    }

    /// Makes the upload made of `parts` the blob `digest` if its bytes hash
    /// to it; `cached` is their digest when this node already knows it.
    /// Returns the content's digest when it differs, having written nothing.
    async fn publish(
        &self,
        parts: &[Segment],
        digest: &Digest,
        cached: Option<Digest>,
    ) -> Result<Result<(), Digest>, StorageError> {
        let verified = match cached {
            Some(actual) if actual != *digest => return Ok(Err(actual)),
            Some(_) => true,
            None => false,
        };
        if self.stat(digest).await?.is_some() {
            // Already stored (the same content pushed before): only check
            // these bytes, write nothing.
            if !verified {
                let actual = self.hash_parts(parts, digest.algorithm()).await?;
                if actual != *digest {
                    return Ok(Err(actual));
                }
            }
            return Ok(Ok(()));
        }
        let target = self.blob_key(digest);
        match parts {
            [] => {
                let actual = Digest::of(digest.algorithm(), b"");
                if actual != *digest {
                    return Ok(Err(actual));
                }
                self.inner
                    .store
                    .put(&target, PutPayload::new())
                    .await
                    .map_err(unavailable)?;
                Ok(Ok(()))
            }
            [only] => {
                if !verified {
                    let actual = self.hash_parts(parts, digest.algorithm()).await?;
                    if actual != *digest {
                        return Ok(Err(actual));
                    }
                }
                // A server-side copy: the object appears whole or not at all.
                self.inner
                    .store
                    .copy(&only.path, &target)
                    .await
                    .map_err(not_found_or_unavailable)?;
                Ok(Ok(()))
            }
            _ => self.compose(parts, &target, digest, verified).await,
        }
    }

    /// Writes the concatenation of `parts` to `target` through a multipart
    /// upload, hashing on the way unless `verified` already holds the
    /// digest. The upload is completed only when the hash equals `digest`;
    /// otherwise it is aborted and the content's digest returned.
    async fn compose(
        &self,
        parts: &[Segment],
        target: &Path,
        digest: &Digest,
        verified: bool,
    ) -> Result<Result<(), Digest>, StorageError> {
        let upload = self
            .inner
            .store
            .put_multipart(target)
            .await
            .map_err(unavailable)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = (!verified).then(|| Hasher::new(digest.algorithm()));
        let copied = async {
            for part in parts {
                let mut pos = 0;
                while pos < part.size {
                    let end = (pos + READ_PIECE).min(part.size);
                    let bytes = self.read_range(&part.path, pos..end).await?;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&bytes);
                    }
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(unavailable)?;
                    writer.put(bytes);
                    pos = end;
                }
            }
            writer.wait_for_capacity(0).await.map_err(unavailable)
        }
        .await;
        if let Err(e) = copied {
            let _ = writer.abort().await;
            return Err(e);
        }
        if let Some(actual) = hasher.map(Hasher::finish) {
            if actual != *digest {
                let _ = writer.abort().await;
                return Ok(Err(actual));
            }
        }
        writer.finish().await.map_err(unavailable)?;
        Ok(Ok(()))
    }
}

/// A unique name part for one write: 64 random bits.
fn token() -> String {
    use std::hash::{BuildHasher, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's randomness: a cheap random source
    // without another dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(now.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// Why [`S3Store::probe`] got no good answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The store answered, and the answer will not change by asking again:
    /// the configuration (or the store's) must be fixed. In plain words,
    /// with what to do.
    Misconfigured(String),
    /// No answer, or a passing one (refused, timed out, a 5xx): the
    /// client's own text.
    Unreachable(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Misconfigured(m) | ProbeFailure::Unreachable(m) => f.write_str(m),
        }
    }
}

/// Sorts a failed request by the HTTP status and the S3 error code in the
/// answer's body (the client puts both in its message).
fn classify(e: &object_store::Error) -> ProbeFailure {
    let text = e.to_string();
    let status = text
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3).and_then(|digits| digits.parse::<u16>().ok()));
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&close)? + start;
        Some(text[start..end].to_string())
    };
    let code = tag("Code").unwrap_or_default();
    let said = match tag("Message") {
        Some(m) if !code.is_empty() => format!("{code}: {m}"),
        Some(m) => m,
        None if !code.is_empty() => code.clone(),
        None => status.map_or_else(|| text.clone(), |s| format!("HTTP {s}")),
    };
    let misconfigured = |what: &str| ProbeFailure::Misconfigured(format!("{said}: {what}"));
    match (status, code.as_str()) {
        (_, "NoSuchBucket") | (Some(404), _) => misconfigured(
            "the bucket does not exist; create it, or fix --s3-bucket (WHARF_S3_BUCKET)",
        ),
        (_, "InvalidAccessKeyId") => misconfigured(
            "the store does not know this access key id; fix --s3-access-key-id \
             (WHARF_S3_ACCESS_KEY_ID)",
        ),
        (_, "SignatureDoesNotMatch") => misconfigured(
            "the secret access key does not match the key id; fix \
             WHARF_S3_SECRET_ACCESS_KEY",
        ),
        (_, "AuthorizationHeaderMalformed") => misconfigured(
            "the store refused how requests are signed, often a wrong region; check \
             --s3-region (WHARF_S3_REGION)",
        ),
        (Some(401 | 403), _) => misconfigured(
            "access denied: check the key id and secret (WHARF_S3_ACCESS_KEY_ID, \
             WHARF_S3_SECRET_ACCESS_KEY) and that the key may read and write this bucket",
        ),
        (Some(s), _) if (400..500).contains(&s) && s != 408 && s != 429 => {
            misconfigured("the store refused the request; check the endpoint, region and bucket")
        }
        _ => ProbeFailure::Unreachable(text),
    }
}

/// Any failure to reach or use the store.
fn unavailable(e: object_store::Error) -> StorageError {
    StorageError::Unavailable(format!("s3: {e}"))
}

fn not_found_or_unavailable(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => unavailable(other),
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match self.inner.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let key = self.blob_key(digest);
        let (start, end) = match range {
            Some(r) if r.start < r.end => (r.start, r.end),
            // Nothing to read: still answer NotFound for a missing blob.
            other => {
                let meta = self
                    .inner
                    .store
                    .head(&key)
                    .await
                    .map_err(not_found_or_unavailable)?;
                other.map_or((0, meta.size), |r| (r.start, r.end))
            }
        };
        if start >= end {
            return Ok(futures_util::stream::empty().boxed());
        }
        // The first piece now, so that a missing blob is NotFound here
        // rather than an error inside the stream.
        let first_end = (start + READ_PIECE).min(end);
        let first = self.read_range(&key, start..first_end).await?;
        let this = self.clone();
        let rest = futures_util::stream::try_unfold(first_end, move |pos| {
            let this = this.clone();
            let key = key.clone();
            async move {
                if pos >= end {
                    return Ok(None);
                }
                let next = (pos + READ_PIECE).min(end);
                match this.read_range(&key, pos..next).await {
                    Ok(bytes) => Ok(Some((bytes, next))),
                    Err(e) => Err(io::Error::other(e.to_string())),
                }
            }
        });
        Ok(futures_util::stream::iter([Ok(first)]).chain(rest).boxed())
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StorageError> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            return Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        if self.stat(digest).await?.is_some() {
            return Ok(());
        }
        self.inner
            .store
            .put(&self.blob_key(digest), PutPayload::from(bytes))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        // S3's DELETE succeeds for a missing key too: look first.
        if self.stat(digest).await?.is_none() {
            return Err(StorageError::NotFound);
        }
        self.delete_key(&self.blob_key(digest)).await
    }

    async fn list(&self) -> Result<Vec<Digest>, StorageError> {
        let dir = self.key("blobs");
        let base = format!("{}/", dir.as_ref());
        let mut out: Vec<Digest> = self
            .list_under(&dir)
            .await?
            .into_iter()
            .filter_map(|o| {
                let (alg, hex) = o.location.as_ref().strip_prefix(&base)?.split_once('/')?;
                format!("{alg}:{hex}").parse().ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn upload_start(&self, id: &UploadId) -> Result<(), StorageError> {
        let cell = self.upload_cell(id);
        let mut known = cell.lock().await;
        if !self.list_under(&self.upload_dir(id)).await?.is_empty() {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("upload {id} exists"),
            )));
        }
        self.inner
            .store
            .put(&self.marker_key(id), PutPayload::new())
            .await
            .map_err(unavailable)?;
        *known = Some(Known {
            size: 0,
            last: None,
            hasher: Hasher::new(Algorithm::Sha256),
        });
        Ok(())
    }

    async fn upload_size(&self, id: &UploadId) -> Result<u64, StorageError> {
        let session = self.session(id).await?;
        if !session.open {
            return Err(StorageError::NotFound);
        }
        Ok(session.size)
    }

    async fn upload_append(
        &self,
        id: &UploadId,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, StorageError> {
        let cell = self.upload_cell(id);
        let mut known = cell.lock().await;
        let session = self.session(id).await?;
        if !session.open {
            *known = None;
            return Err(StorageError::NotFound);
        }
        if offset != session.size {
            return Err(StorageError::OffsetMismatch { size: session.size });
        }
        // Take the hash state only if it describes exactly these bytes; it
        // stays taken (unknown) if anything below fails.
        let mut hasher = known
            .take()
            .filter(|k| k.matches(&session))
            .map(|k| k.hasher);
        let key = self.part_key(id, offset);
        let (written, body_error) = self.write_part_object(&key, &mut body, &mut hasher).await?;

        let size = if written == 0 {
            *known = hasher.map(|hasher| Known {
                size: session.size,
                last: session.chain.last().map(|s| s.path.clone()),
                hasher,
            });
            session.size
        } else {
            // Did another node end the session, or write a part at this
            // offset too, while this one was being written? This part counts
            // only if it is alone at its offset now: of two racing writers
            // at most one can see that (see the module documentation).
            let after = self.session(id).await?;
            if !after.open {
                let _ = self.delete_key(&key).await;
                return Err(StorageError::NotFound);
            }
            let alone =
                after.starts.get(&offset) == Some(&1) && after.chain.iter().any(|s| s.path == key);
            if !alone {
                self.delete_key(&key).await?;
                let size = self.session(id).await?.size;
                return Err(StorageError::OffsetMismatch { size });
            }
            let size = offset + written;
            *known = hasher.map(|hasher| Known {
                size,
                last: Some(key),
                hasher,
            });
            size
        };
        match body_error {
            Some(e) => Err(StorageError::Body(e)),
            None => Ok(size),
        }
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, StorageError> {
        let cell = self.upload_cell(id);
        let mut known = cell.lock().await;
        let session = self.session(id).await?;
        if !session.open {
            *known = None;
            drop(known);
            self.forget_upload(id);
            return Err(StorageError::NotFound);
        }
        let cached = known
            .take()
            .filter(|k| k.matches(&session) && k.hasher.algorithm() == digest.algorithm())
            .map(|k| k.hasher.finish());
        let outcome = self.publish(&session.chain, digest, cached).await?;

        // The blob is in place (or the bytes were wrong): end the session.
        // Its marker goes first; parts left behind by a failure after that
        // are swept by cancel, which upload expiry calls on what
        // upload_list still shows.
        let marker = self.marker_key(id);
        self.delete_key(&marker).await?;
        drop(known);
        self.forget_upload(id);
        if let Err(e) = self.remove_session(id).await {
            tracing::warn!(upload = %id, error = %e, "upload parts left behind after commit");
        }
        match outcome {
            Ok(()) => Ok(session.size),
            Err(actual) => Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                actual,
            }),
        }
    }

    async fn upload_cancel(&self, id: &UploadId) -> Result<(), StorageError> {
        let cell = self.upload_cell(id);
        let mut known = cell.lock().await;
        *known = None;
        let existed = self.remove_session(id).await;
        drop(known);
        self.forget_upload(id);
        if existed? {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }

    async fn upload_list(&self) -> Result<Vec<UploadId>, StorageError> {
        let dir = self.key("uploads");
        let listing = self
            .inner
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<UploadId> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.parse().ok())
            .collect();
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }

    async fn redirect_url(
        &self,
        digest: &Digest,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        if !self.inner.presign {
            return Ok(None);
        }
        // `Default::default()` is the GET method (the `http` crate's
        // default), named this way to avoid a dependency for one constant.
        let url = self
            .inner
            .store
            .signed_url(Default::default(), &self.blob_key(digest), ttl)
            .await
            .map_err(unavailable)?;
        Ok(Some(url.to_string()))
    }
}
