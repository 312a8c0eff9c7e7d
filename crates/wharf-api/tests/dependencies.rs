//! A slow or failing dependency turns into fast, honest `503`s through the
//! HTTP API, not piled-up requests: the guard's deadline, its bounded pool
//! and its circuit breaker, seen from a client on a real socket.
//!
//! The real filesystem store sits underneath; [`Faulty`] only adds delay or
//! failure in front of its reads (and of the presigned-URL question a
//! redirecting node asks first), switched at run time by the test.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Method;
use wharf_core::{Digest, UploadId};
use wharf_guard::{BreakerConfig, Guard, GuardConfig, GuardedBlobStore};
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;
use wharf_storage::{BlobStore, ByteStream, StorageError};

mod common;
use common::{error_code, header, sha256};

/// The filesystem store with switchable faults on `stat` and `get`.
struct Faulty {
    inner: FsStore,
    /// Delay added before each read, in milliseconds.
    delay_ms: AtomicU64,
    /// When set, reads fail as if the backend were unreachable.
    failing: AtomicBool,
}

impl Faulty {
    async fn fault(&self) -> Result<(), StorageError> {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.failing.load(Ordering::Relaxed) {
            return Err(StorageError::Unavailable("injected failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for Faulty {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.fault().await?;
        self.inner.stat(digest).await
    }
    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        self.fault().await?;
        self.inner.get(digest, range).await
    }
    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StorageError> {
        self.inner.put(digest, bytes).await
    }
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        self.inner.delete(digest).await
    }
    async fn list(&self) -> Result<Vec<Digest>, StorageError> {
        self.inner.list().await
    }
    async fn upload_start(&self, id: &UploadId) -> Result<(), StorageError> {
        self.inner.upload_start(id).await
    }
    async fn upload_size(&self, id: &UploadId) -> Result<u64, StorageError> {
        self.inner.upload_size(id).await
    }
    async fn upload_append(
        &self,
        id: &UploadId,
        offset: u64,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        self.inner.upload_append(id, offset, body).await
    }
    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, StorageError> {
        self.inner.upload_commit(id, digest).await
    }
    async fn upload_cancel(&self, id: &UploadId) -> Result<(), StorageError> {
        self.inner.upload_cancel(id).await
    }
    async fn upload_list(&self) -> Result<Vec<UploadId>, StorageError> {
        self.inner.upload_list().await
    }
    /// Asked before a GET when redirects are on; offers none (so the node
    /// then reads the blob itself: two calls in one request).
    async fn redirect_url(
        &self,
        _digest: &Digest,
        _ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.fault().await?;
        Ok(None)
    }
}

struct Node {
    base: String,
    client: reqwest::Client,
    faults: Arc<Faulty>,
    guard: Guard,
    _dir: tempfile::TempDir,
}

/// A server whose blob storage has a pool of `pool` slots, a 300 ms
/// deadline, and a breaker that opens after 3 failures for 500 ms.
async fn start(pool: usize) -> Node {
    start_with(pool, false).await
}

/// The same, answering whole-blob GETs with redirects when the storage
/// offers them (`redirects`).
async fn start_with(pool: usize, redirects: bool) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faulty {
        inner: FsStore::open(dir.path()).await.unwrap(),
        delay_ms: AtomicU64::new(0),
        failing: AtomicBool::new(false),
    });
    let guard = Guard::new(GuardConfig {
        name: "blob_storage",
        max_concurrent: pool,
        max_wait: Duration::from_millis(50),
        deadline: Duration::from_millis(300),
        breaker: BreakerConfig {
            failures_to_open: 3,
            open_for: Duration::from_millis(500),
        },
    });
    let blobs = GuardedBlobStore::new(faults.clone(), guard.clone());
    let meta = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
    let registry = Registry::new(Arc::new(blobs), Arc::new(meta), RegistryConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut state = wharf_api::AppState::new(registry);
    state.blob_redirects = redirects;
    tokio::spawn(wharf_api::serve(
        listener,
        wharf_api::app_with(state),
        std::future::pending(),
    ));
    Node {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        faults,
        guard,
        _dir: dir,
    }
}

impl Node {
    async fn push(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .client
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.base))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        d
    }

    /// `GET` of a blob: status, OCI code (if an error), Retry-After, time.
    async fn pull(&self, repo: &str, digest: &str) -> (u16, String, String, Duration) {
        let started = Instant::now();
        let r = self
            .client
            .request(
                Method::GET,
                format!("{}/v2/{repo}/blobs/{digest}", self.base),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = header(&r, "retry-after");
        let code = if status >= 400 {
            error_code(r).await
        } else {
            r.bytes().await.unwrap();
            String::new()
        };
        (status, code, retry, started.elapsed())
    }
}

#[tokio::test]
async fn a_slow_store_is_a_fast_503_at_the_deadline() {
    let n = start(8).await;
    let d = n.push("a/app", b"layer bytes").await;
    n.faults.delay_ms.store(5_000, Ordering::Relaxed);
    let (status, code, retry, took) = n.pull("a/app", &d).await;
    assert_eq!(status, 503);
    assert_eq!(code, "UNAVAILABLE");
    assert!(!retry.is_empty(), "Retry-After missing");
    assert!(
        took < Duration::from_secs(2),
        "answered after {took:?}, not at the 300 ms deadline"
    );
    assert_eq!(n.guard.stats().timeouts_total, 1);
}

#[tokio::test]
async fn the_calls_of_one_request_share_one_deadline() {
    // Each storage call takes 200 ms, inside the 300 ms deadline; a GET on
    // a redirecting node makes two (is there a presigned URL? none: read
    // the blob), 400 ms in all. The second gets only the 100 ms the first
    // left: the answer is a 503 at the deadline, not a 200 after two.
    let n = start_with(8, true).await;
    let d = n.push("a/app", b"layer bytes").await;
    n.faults.delay_ms.store(200, Ordering::Relaxed);
    let (status, code, retry, took) = n.pull("a/app", &d).await;
    assert_eq!(status, 503, "answered {status} after {took:?}");
    assert_eq!(code, "UNAVAILABLE");
    assert!(!retry.is_empty(), "Retry-After missing");
    assert!(
        took < Duration::from_secs(2),
        "answered after {took:?}, not at the 300 ms deadline"
    );
    // The storage was not at fault for the call cut short: no timeout
    // counted against it, the breaker stays closed.
    let st = n.guard.stats();
    assert_eq!(st.timeouts_total, 0);
    assert!(!n.guard.is_open());
    // A request that is not slow in all is served as before.
    n.faults.delay_ms.store(50, Ordering::Relaxed);
    assert_eq!(n.pull("a/app", &d).await.0, 200);
}

#[tokio::test]
async fn a_full_pool_refuses_instead_of_queueing() {
    let n = start(2).await;
    let d = n.push("a/app", b"layer bytes").await;
    n.faults.delay_ms.store(250, Ordering::Relaxed);
    // Twelve GETs (one storage call each) at once against two slots. Were
    // they queued, the last would answer after 6 x 250 ms (inside the 300 ms deadline); refused, every
    // one is answered within one call plus the 50 ms wait for a slot.
    let started = Instant::now();
    let heads: Vec<_> = (0..12)
        .map(|_| {
            let (base, client, d) = (n.base.clone(), n.client.clone(), d.clone());
            tokio::spawn(async move {
                let r = client
                    .get(format!("{base}/v2/a/app/blobs/{d}"))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), header(&r, "retry-after"))
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for h in heads {
        match h.await.unwrap() {
            (200, _) => ok += 1,
            (503, retry) => {
                assert!(!retry.is_empty(), "Retry-After missing");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "all answered after {took:?}"
    );
    assert!(ok >= 2, "the pool's slots were used: {ok}");
    assert!(refused >= 1, "no refusal with 12 callers and 2 slots");
    assert_eq!(n.guard.stats().busy_total, refused as u64);
}

#[tokio::test]
async fn the_breaker_opens_on_repeated_failure_and_closes_by_probing() {
    let n = start(8).await;
    let d = n.push("a/app", b"layer bytes").await;
    n.faults.failing.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        assert_eq!(n.pull("a/app", &d).await.0, 503);
    }
    assert!(n.guard.is_open(), "three failures open the breaker");
    // While open, the store is not even called: refused at once.
    n.faults.failing.store(false, Ordering::Relaxed);
    n.faults.delay_ms.store(5_000, Ordering::Relaxed);
    let (status, _, _, took) = n.pull("a/app", &d).await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_millis(100), "took {took:?}");
    assert!(n.guard.stats().rejected_open_total >= 1);
    // The store recovers; after the open period one probe gets through,
    // succeeds, and the breaker closes.
    n.faults.delay_ms.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(n.pull("a/app", &d).await.0, 200);
    assert!(!n.guard.is_open());
    assert_eq!(n.pull("a/app", &d).await.0, 200);
}
