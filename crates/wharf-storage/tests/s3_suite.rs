//! The S3 backend against the shared blob-store suite on a real
//! S3-compatible server, plus what only it can show: an upload begun on one
//! node and finished on another, appends racing through different nodes,
//! the objects it leaves (or not) in the bucket, presigned redirects, and
//! fast `Unavailable` from a store that is down or hangs.
//!
//! The server comes from the `WHARF_TEST_S3_*` variables, which
//! `scripts/garage.sh start DIR PORT` writes to `DIR/env` (and
//! `scripts/test.sh` sources). Each case works below a prefix of its own in
//! the bucket and removes it when done. Without the variables the cases that
//! need a server are skipped, unless `CI` is set or `WHARF_REQUIRE_S3=1`,
//! where they fail: CI must not pass by testing nothing.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore};
use wharf_storage::s3::{S3Config, S3Store, PART_SIZE};
use wharf_storage::suite::{body, collect, content, sha256, upload_id};
use wharf_storage::{BlobStore, StorageError};

/// The server's configuration, or `None` (after saying so) when the tests
/// that need one are to be skipped.
fn config_or_skip() -> Option<S3Config> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let names = [
        "WHARF_TEST_S3_ENDPOINT",
        "WHARF_TEST_S3_BUCKET",
        "WHARF_TEST_S3_REGION",
        "WHARF_TEST_S3_ACCESS_KEY_ID",
        "WHARF_TEST_S3_SECRET_ACCESS_KEY",
    ];
    let values: Vec<Option<String>> = names.iter().map(|n| var(n)).collect();
    if let [Some(endpoint), Some(bucket), Some(region), Some(key), Some(secret)] = values.as_slice()
    {
        return Some(S3Config::new(endpoint, bucket, region, key, secret));
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    let required = var("CI").is_some() || var("WHARF_REQUIRE_S3").as_deref() == Some("1");
    if required {
        panic!(
            "S3 tests required (CI or WHARF_REQUIRE_S3=1) but {} unset: run \
             `bash scripts/garage.sh start DIR 13900 && source DIR/env` first",
            missing.join(", ")
        );
    }
    println!(
        "skipped: {} unset; run `bash scripts/garage.sh start DIR 13900 && source DIR/env`",
        missing.join(", ")
    );
    None
}

/// A prefix no other case (or run) uses.
fn unique_prefix(case: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "wharf-tests/{case}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A direct client to the bucket, to look at (and clean up) the objects a
/// store leaves, bypassing the store.
fn raw_client(config: &S3Config) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(&config.endpoint)
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(&config.secret_access_key)
        .with_client_options(ClientOptions::new().with_allow_http(config.allow_http))
        .build()
        .unwrap()
}

/// A case's prefix of the bucket: lists what is in it, and empties it when
/// dropped.
struct Prefix {
    config: S3Config,
    raw: AmazonS3,
    prefix: String,
}

impl Prefix {
    fn new(config: &S3Config, case: &str) -> Prefix {
        Prefix {
            config: config.clone(),
            raw: raw_client(config),
            prefix: unique_prefix(case),
        }
    }

    /// A store below this prefix: one "node" of a cluster sharing it.
    fn store(&self, config: &S3Config) -> S3Store {
        let mut config = config.clone();
        config.prefix = self.prefix.clone();
        config.presign_redirects = true;
        S3Store::new(config).unwrap()
    }

    /// Every object below the prefix, relative to it, sorted.
    async fn keys(&self) -> Vec<String> {
        let base = format!("{}/", self.prefix);
        let mut keys: Vec<String> = self
            .raw
            .list(Some(&Path::from(self.prefix.as_str())))
            .map_ok(|o| o.location.as_ref().trim_start_matches(&base).to_owned())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Drop cannot await: clean up on a runtime of its own, with a client
        // of its own (pooled connections belong to the runtime that opened
        // them, which is blocked here).
        let raw = raw_client(&self.config);
        let prefix = Path::from(self.prefix.as_str());
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let keys = raw.list(Some(&prefix)).map_ok(|o| o.location).boxed();
                raw.delete_stream(keys)
                    .try_collect::<Vec<_>>()
                    .await
                    .map(drop)
            })
        })
        .join();
        if let Ok(Err(e)) = cleaned {
            eprintln!("could not clean up test prefix {}: {e}", self.prefix);
        }
    }
}

wharf_storage::blob_store_suite!({
    let Some(config) = config_or_skip() else {
        return;
    };
    async move {
        let prefix = Prefix::new(&config, "suite");
        (prefix.store(&config), prefix)
    }
});

fn blob_key(digest: &wharf_core::Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

#[tokio::test]
async fn an_upload_begun_on_one_node_is_finished_on_another() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "two-nodes");
    let a = prefix.store(&config);
    let b = prefix.store(&config);
    let bytes = content(1_500_000, 31);
    let id = upload_id(1);

    a.upload_start(&id).await.unwrap();
    a.upload_append(&id, 0, body(bytes.slice(..400_000), 9000))
        .await
        .unwrap();
    // Node b knows nothing in memory: all it learns is in the bucket.
    assert_eq!(b.upload_list().await.unwrap(), vec![id.clone()]);
    assert_eq!(b.upload_size(&id).await.unwrap(), 400_000);
    b.upload_append(&id, 400_000, body(bytes.slice(400_000..1_000_000), 9000))
        .await
        .unwrap();
    // a's hash state is stale now; it must notice and not append at its
    // old end.
    assert!(matches!(
        a.upload_append(&id, 400_000, body(content(10, 1), 5)).await,
        Err(StorageError::OffsetMismatch { size: 1_000_000 })
    ));
    a.upload_append(&id, 1_000_000, body(bytes.slice(1_000_000..), 9000))
        .await
        .unwrap();
    let digest = sha256(&bytes);
    assert_eq!(
        b.stat(&digest).await.unwrap(),
        None,
        "visible before commit"
    );
    assert_eq!(
        b.upload_commit(&id, &digest).await.unwrap(),
        bytes.len() as u64
    );
    assert!(collect(a.get(&digest, None).await.unwrap()).await == bytes.to_vec());
    assert!(matches!(
        a.upload_size(&id).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(prefix.keys().await, vec![blob_key(&digest)]);
}

#[tokio::test]
async fn a_restarted_node_resumes_and_commits_by_reading_back() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "restart");
    let bytes = content(900_000, 32);
    let id = upload_id(2);
    {
        let before = prefix.store(&config);
        before.upload_start(&id).await.unwrap();
        before
            .upload_append(&id, 0, body(bytes.slice(..300_000), 4096))
            .await
            .unwrap();
    }
    let after = prefix.store(&config);
    assert_eq!(after.upload_size(&id).await.unwrap(), 300_000);
    after
        .upload_append(&id, 300_000, body(bytes.slice(300_000..), 4096))
        .await
        .unwrap();
    let digest = sha256(&bytes);
    after.upload_commit(&id, &digest).await.unwrap();
    assert!(collect(after.get(&digest, None).await.unwrap()).await == bytes.to_vec());
}

#[tokio::test]
async fn a_wrong_digest_on_another_node_leaves_nothing_at_all() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "wrong-digest");
    let a = prefix.store(&config);
    let b = prefix.store(&config);
    let bytes = content(700_000, 33);
    let id = upload_id(3);
    a.upload_start(&id).await.unwrap();
    a.upload_append(&id, 0, body(bytes.slice(..200_000), 8192))
        .await
        .unwrap();
    a.upload_append(&id, 200_000, body(bytes.slice(200_000..), 8192))
        .await
        .unwrap();
    let wrong = sha256(b"not these bytes");
    match b.upload_commit(&id, &wrong).await {
        Err(StorageError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha256(&bytes));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(a.stat(&sha256(&bytes)).await.unwrap(), None);
    assert_eq!(prefix.keys().await, Vec::<String>::new());
}

#[tokio::test]
async fn only_upload_objects_exist_until_commit_and_cancel_leaves_none() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "objects");
    let store = prefix.store(&config);
    let bytes = content(200_000, 34);
    let committed = upload_id(4);
    let cancelled = upload_id(5);
    for id in [&committed, &cancelled] {
        store.upload_start(id).await.unwrap();
        store
            .upload_append(id, 0, body(bytes.clone(), 4096))
            .await
            .unwrap();
    }
    let keys = prefix.keys().await;
    assert!(
        keys.iter().all(|k| k.starts_with("uploads/")),
        "objects outside uploads/ before commit: {keys:?}"
    );
    store.upload_cancel(&cancelled).await.unwrap();
    assert!(prefix
        .keys()
        .await
        .iter()
        .all(|k| !k.starts_with(&format!("uploads/{cancelled}/"))));
    let digest = sha256(&bytes);
    store.upload_commit(&committed, &digest).await.unwrap();
    assert_eq!(prefix.keys().await, vec![blob_key(&digest)]);
}

#[tokio::test]
async fn a_large_append_streams_through_a_multipart_upload() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "large");
    let store = prefix.store(&config);
    // More than two parts, and not a multiple of the part size.
    let bytes = content(2 * PART_SIZE + 12_345, 35);
    let id = upload_id(6);
    store.upload_start(&id).await.unwrap();
    assert_eq!(
        store
            .upload_append(&id, 0, body(bytes.clone(), 64 * 1024))
            .await
            .unwrap(),
        bytes.len() as u64
    );
    // A second large append makes the commit compose two objects.
    let more = content(PART_SIZE + 7, 36);
    store
        .upload_append(&id, bytes.len() as u64, body(more.clone(), 100_000))
        .await
        .unwrap();
    let mut all = bytes.to_vec();
    all.extend_from_slice(&more);
    let digest = sha256(&all);
    assert_eq!(
        store.upload_commit(&id, &digest).await.unwrap(),
        all.len() as u64
    );
    // Read through a second node, so nothing comes from a cache.
    let other = prefix.store(&config);
    assert!(collect(other.get(&digest, None).await.unwrap()).await == all);
    let start = PART_SIZE as u64 - 3;
    let end = 2 * PART_SIZE as u64 + 5;
    let got = collect(other.get(&digest, Some(start..end)).await.unwrap()).await;
    assert!(got == all[start as usize..end as usize]);
    assert_eq!(prefix.keys().await, vec![blob_key(&digest)]);
}

#[tokio::test]
async fn racing_appends_through_different_nodes_never_both_succeed() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "race");
    let nodes: Vec<S3Store> = (0..4).map(|_| prefix.store(&config)).collect();
    let id = upload_id(7);
    nodes[0].upload_start(&id).await.unwrap();
    // Two writers per node, all claiming offset 0 with different bytes.
    let mut tasks = Vec::new();
    for seed in 0..8u8 {
        let node = nodes[usize::from(seed) % nodes.len()].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let bytes = content(200_000, 40 + seed);
            node.upload_append(&id, 0, body(bytes.clone(), 4096))
                .await
                .map(|_| bytes)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(bytes) => winners.push(bytes),
            Err(StorageError::OffsetMismatch { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(
        winners.len() <= 1,
        "{} appends at offset 0 succeeded",
        winners.len()
    );
    // Losers took their parts away: only the winner's is left.
    let parts = prefix
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("uploads/{id}/parts/")))
        .count();
    assert_eq!(parts, winners.len());
    let other = prefix.store(&config);
    let bytes = match winners.pop() {
        Some(bytes) => bytes,
        None => {
            // Every writer saw a rival: the client resumes from 0.
            assert_eq!(other.upload_size(&id).await.unwrap(), 0);
            let bytes = content(200_000, 99);
            other
                .upload_append(&id, 0, body(bytes.clone(), 4096))
                .await
                .unwrap();
            bytes
        }
    };
    assert_eq!(other.upload_size(&id).await.unwrap(), 200_000);
    let digest = sha256(&bytes);
    other.upload_commit(&id, &digest).await.unwrap();
    assert!(collect(other.get(&digest, None).await.unwrap()).await == bytes.to_vec());
}

#[tokio::test]
async fn a_presigned_url_serves_the_blob() {
    let Some(config) = config_or_skip() else {
        return;
    };
    let prefix = Prefix::new(&config, "presign");
    let store = prefix.store(&config);
    let bytes = content(123_456, 37);
    let digest = sha256(&bytes);
    store.put(&digest, bytes.clone()).await.unwrap();
    let url = store
        .redirect_url(&digest, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("presigning is on");
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    assert!(response.bytes().await.unwrap() == bytes);

    // Off by default: the node serves the bytes itself.
    let mut plain = config.clone();
    plain.prefix = prefix.prefix.clone();
    let plain = S3Store::new(plain).unwrap();
    assert_eq!(
        plain
            .redirect_url(&digest, Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
}

/// A store whose endpoint is `addr`, with short timeouts.
fn store_at(addr: std::net::SocketAddr) -> S3Config {
    let mut config = S3Config::new(
        format!("http://{addr}"),
        "wharf",
        "garage",
        "GKtest",
        "secretsecretsecret",
    );
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn a_store_that_is_down_is_unavailable_at_once() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = store_at(addr);
    let store = S3Store::new(config.clone()).unwrap();
    let digest = sha256(b"x");
    let started = Instant::now();
    assert!(matches!(
        store.stat(&digest).await,
        Err(StorageError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .upload_append(&upload_id(1), 0, body(content(10, 1), 5))
            .await,
        Err(StorageError::Unavailable(_))
    ));
    let bound = 2 * (config.connect_timeout + config.request_timeout);
    assert!(
        started.elapsed() < bound,
        "took {:?}, bound {bound:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_store_that_hangs_is_unavailable_within_the_request_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = store_at(addr);
    let store = S3Store::new(config.clone()).unwrap();
    let started = Instant::now();
    assert!(matches!(
        store.stat(&sha256(b"y")).await,
        Err(StorageError::Unavailable(_))
    ));
    assert!(matches!(
        store.upload_size(&upload_id(1)).await,
        Err(StorageError::Unavailable(_))
    ));
    // Two calls, each at most one try and one retry of request_timeout
    // (plus backoff and slack): bounded, whatever the store does.
    let bound = 2 * (2 * config.request_timeout + Duration::from_millis(500));
    assert!(
        started.elapsed() < bound,
        "took {:?}, bound {bound:?}",
        started.elapsed()
    );
    holder.abort();
}
