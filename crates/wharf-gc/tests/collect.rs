//! The collector against real stores: what it reclaims, exactly; and a race
//! of pushers sharing layers against a collector running with a zero delay,
//! on the embedded store and (when `WHARF_TEST_POSTGRES_URL` is set) on
//! PostgreSQL with two collectors, as two nodes would run them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf_core::{Digest, Reference, RegistryError, RepoName};
use wharf_gc::{Collector, GcConfig};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::MetaStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;
use wharf_storage::BlobStore;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn config(delay_secs: u64) -> GcConfig {
    GcConfig {
        review_delay: Duration::from_secs(delay_secs),
        orphan_age: Duration::from_secs(delay_secs),
        interval: Duration::from_millis(20),
        batch: 16,
        ..GcConfig::default()
    }
}

fn registry(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>) -> Registry {
    Registry::new(
        blobs,
        meta,
        RegistryConfig {
            // Short, so a link collected through another node is seen soon.
            link_cache_ttl: Duration::from_millis(200),
            tag_cache_ttl: Duration::from_millis(200),
            ..RegistryConfig::default()
        },
    )
}

async fn embedded() -> (Arc<dyn MetaStore>, Arc<dyn BlobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let meta = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
    let blobs = FsStore::open(dir.path().join("blobs")).await.unwrap();
    (Arc::new(meta), Arc::new(blobs), dir)
}

/// Bytes of a blob unique to `seed`, `len` long.
fn blob(seed: &str, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut n: u64 = seed.bytes().fold(1469598103934665603, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    while out.len() < len {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// An image manifest over `config` and `layers`.
fn manifest(config: &Bytes, layers: &[Bytes]) -> Bytes {
    let desc = |media: &str, b: &Bytes| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            Digest::sha256_of(b),
            b.len()
        )
    };
    let layers: Vec<String> = layers
        .iter()
        .map(|l| desc("application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{},"layers":[{}]}}"#,
        desc("application/vnd.oci.image.config.v1+json", config),
        layers.join(",")
    ))
}

async fn push_blob(reg: &Registry, r: &RepoName, b: &Bytes) -> Result<(), RegistryError> {
    let d = Digest::sha256_of(b);
    match reg.stat_blob(r, &d).await {
        Ok(_) => return Ok(()),
        Err(RegistryError::BlobUnknown(_)) => {}
        Err(e) => return Err(e),
    }
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(b.clone())]);
    reg.push_blob(r, &d, Box::pin(body), None).await.map(|_| ())
}

async fn read_all(reg: &Registry, r: &RepoName, d: &Digest) -> Result<Vec<u8>, String> {
    let read = reg
        .get_blob(r, d, None)
        .await
        .map_err(|e| format!("{d}: {e}"))?;
    let chunks: Vec<Bytes> = read
        .stream
        .try_collect()
        .await
        .map_err(|e| format!("{d}: {e}"))?;
    Ok(chunks.concat())
}

/// Runs passes until one decides nothing (a link review queues a content
/// review due at once, so one pass may leave work for the next).
async fn collect_all(c: &Collector) -> wharf_gc::PassReport {
    let mut total = wharf_gc::PassReport::default();
    for _ in 0..20 {
        let r = c.run_pass(false, None).await.unwrap();
        if r.reviewed == 0 {
            return total;
        }
        total.reviewed += r.reviewed;
        total.deleted += r.deleted;
        total.bytes_reclaimed += r.bytes_reclaimed;
        total.unlinked += r.unlinked;
    }
    panic!("the queue never emptied");
}

async fn stored_bytes(blobs: &dyn BlobStore) -> u64 {
    let mut sum = 0;
    for d in blobs.list().await.unwrap() {
        sum += blobs.stat(&d).await.unwrap().unwrap_or(0);
    }
    sum
}

/// A pass asked to keep no verdicts (the background loop, or
/// `POST /admin/v1/gc/run?verdicts=false`) counts and deletes the same.
#[tokio::test]
async fn a_pass_without_verdicts_counts_the_same() {
    let (meta, blobs, _dir) = embedded().await;
    let reg = registry(meta.clone(), blobs.clone());
    let r = repo("acme/app");
    let (layer, cfg) = (blob("layer", 4000), blob("config", 100));
    for b in [&layer, &cfg] {
        push_blob(&reg, &r, b).await.unwrap();
    }
    let m = manifest(&cfg, std::slice::from_ref(&layer));
    let md = Digest::sha256_of(&m);
    reg.put_manifest(
        &r,
        &Reference::Digest(md.clone()),
        Some(MANIFEST),
        m.clone(),
    )
    .await
    .unwrap();
    reg.delete_manifest(&r, &Reference::Digest(md))
        .await
        .unwrap();
    let c = Collector::new(meta.clone(), blobs.clone(), config(0));
    let dry = c.run_pass(true, None).await.unwrap();
    assert!(!dry.verdicts.is_empty());
    let mut pass = c.run_pass_with(false, None, false).await.unwrap();
    let mut deleted = pass.deleted;
    let mut bytes = pass.bytes_reclaimed;
    assert!(pass.reviewed > 0);
    assert!(pass.verdicts.is_empty(), "{:?}", pass.verdicts);
    for _ in 0..5 {
        pass = c.run_pass_with(false, None, false).await.unwrap();
        assert!(pass.verdicts.is_empty());
        deleted += pass.deleted;
        bytes += pass.bytes_reclaimed;
    }
    assert_eq!(deleted, 3);
    assert_eq!(bytes, (layer.len() + cfg.len() + m.len()) as u64);
    assert!(blobs.list().await.unwrap().is_empty());
}

/// `max_reviews_per_sec` paces a pass: 40 reviews at 100 a second, in
/// batches of 5 (a twentieth of a second's reviews, below the configured
/// 8), take at least the 0.35 s the batches after the first must wait,
/// and the pass still decides them all.
#[tokio::test]
async fn a_pass_keeps_to_its_review_rate() {
    let (meta, blobs, _dir) = embedded().await;
    let reg = registry(meta.clone(), blobs.clone());
    let r = repo("acme/app");
    for i in 0..40 {
        push_blob(&reg, &r, &blob(&format!("unused-{i}"), 100))
            .await
            .unwrap();
    }
    let paced = GcConfig {
        batch: 8,
        max_reviews_per_sec: Some(100),
        ..config(0)
    };
    let c = Collector::new(meta.clone(), blobs.clone(), paced);
    let t0 = Instant::now();
    let pass = c.run_pass_with(false, None, false).await.unwrap();
    let took = t0.elapsed();
    assert!(pass.reviewed >= 40, "{pass:?}");
    assert!(
        took >= Duration::from_millis(350),
        "{} reviews in {took:?}",
        pass.reviewed
    );
    let unpaced = Collector::new(meta.clone(), blobs.clone(), config(0));
    let rest = collect_all(&unpaced).await;
    assert_eq!(pass.deleted + rest.deleted, 40);
}

#[tokio::test]
async fn collects_exactly_the_bytes_only_deleted_images_held() {
    let (meta, blobs, _dir) = embedded().await;
    let reg = registry(meta.clone(), blobs.clone());
    let r = repo("acme/app");
    let shared = blob("shared", 5000);
    let (only_a, only_b) = (blob("only-a", 7000), blob("only-b", 3000));
    let (ca, cb) = (blob("config-a", 100), blob("config-b", 120));
    for b in [&shared, &only_a, &only_b, &ca, &cb] {
        push_blob(&reg, &r, b).await.unwrap();
    }
    let (ma, mb) = (
        manifest(&ca, &[shared.clone(), only_a.clone()]),
        manifest(&cb, &[shared.clone(), only_b.clone()]),
    );
    for (m, t) in [(&ma, "a"), (&mb, "b")] {
        reg.put_manifest(
            &r,
            &Reference::Tag(t.parse().unwrap()),
            Some(MANIFEST),
            m.clone(),
        )
        .await
        .unwrap();
    }
    let c = Collector::new(meta.clone(), blobs.clone(), config(0));
    // Untagging reclaims nothing: the manifest stays, pullable by digest.
    reg.delete_manifest(&r, &Reference::Tag("b".parse().unwrap()))
        .await
        .unwrap();
    let before = stored_bytes(&*blobs).await;
    assert_eq!(collect_all(&c).await.deleted, 0);
    assert_eq!(stored_bytes(&*blobs).await, before);

    let mb_digest = Digest::sha256_of(&mb);
    reg.delete_manifest(&r, &Reference::Digest(mb_digest.clone()))
        .await
        .unwrap();
    let dry = c.run_pass(true, None).await.unwrap();
    let report = collect_all(&c).await;
    let expected = (only_b.len() + cb.len() + mb.len()) as u64;
    assert_eq!(report.deleted, 3);
    assert_eq!(report.bytes_reclaimed, expected);
    assert_eq!(
        dry.bytes_reclaimed, expected,
        "the dry run foresaw the same bytes"
    );
    assert_eq!(stored_bytes(&*blobs).await, before - expected);
    for b in [&shared, &only_a, &ca] {
        assert_eq!(
            read_all(&reg, &r, &Digest::sha256_of(b)).await.unwrap(),
            b.to_vec()
        );
    }
    let check = c.check().await.unwrap();
    assert!(check.clean, "{check:?}");
    assert_eq!(check.stored, 4);
}

#[tokio::test]
async fn orphans_in_storage_are_found_and_collected_after_their_age() {
    let (meta, blobs, _dir) = embedded().await;
    let stray = blob("crash-leftover", 900);
    blobs
        .put(&Digest::sha256_of(&stray), stray.clone())
        .await
        .unwrap();
    let c = Collector::new(meta.clone(), blobs.clone(), config(0));
    let check = c.check().await.unwrap();
    assert!(!check.clean);
    assert_eq!(check.unreviewed_count, 1);
    assert_eq!(c.scan_orphans().await.unwrap(), 1);
    let report = collect_all(&c).await;
    assert_eq!((report.deleted, report.bytes_reclaimed), (1, 900));
    assert!(c.check().await.unwrap().clean);
    // With an orphan age, a fresh scan's finding waits.
    blobs.put(&Digest::sha256_of(&stray), stray).await.unwrap();
    let patient = Collector::new(meta, blobs, config(3600));
    assert_eq!(patient.scan_orphans().await.unwrap(), 1);
    assert_eq!(collect_all(&patient).await.deleted, 0);
}

/// What the race's pushers did.
#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    acknowledged: AtomicU64,
    blob_unknown: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    deletes: AtomicU64,
    /// The longest a push was refused before it got through, in ms.
    longest_refused_ms: AtomicU64,
}

/// One pusher: pushes images sharing `pool`'s layers under its own tags,
/// moves and deletes them, until `stop`; returns what it believes each tag
/// holds (manifest bytes and blobs).
async fn pusher(
    reg: Registry,
    me: usize,
    pool: Arc<Vec<Bytes>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> BTreeMap<(RepoName, String), (Bytes, Vec<Bytes>)> {
    let mut held = BTreeMap::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = repo(&format!("acme/app{}", me % 3));
        let t = format!("p{me}-{}", n % 4);
        let config = blob(&format!("config-{me}-{n}"), 64);
        let layers: Vec<Bytes> = (0..3)
            .map(|i| pool[(me * 7 + n * 3 + i * 5) % pool.len()].clone())
            .collect();
        let m = manifest(&config, &layers);
        tally.attempted.fetch_add(1, Ordering::Relaxed);
        // A refused push is retried, as a client does, for as long as a
        // tombstone can honestly stand: the deletions of one batch (run
        // concurrently) and the release. A minute is far beyond that even on
        // a loaded machine; a tombstone left for its lease (ten minutes)
        // would fail here.
        let first_try = std::time::Instant::now();
        let deadline = first_try + Duration::from_secs(60);
        let mut tries = 0;
        let mut last = String::new();
        loop {
            tries += 1;
            assert!(
                std::time::Instant::now() < deadline,
                "a push never got through in 60 s ({tries} tries): {last}"
            );
            let mut pushed = Ok(());
            for b in std::iter::once(&config).chain(&layers) {
                pushed = push_blob(&reg, &r, b).await;
                if pushed.is_err() {
                    break;
                }
            }
            let result = match pushed {
                Ok(()) => reg
                    .put_manifest(
                        &r,
                        &Reference::Tag(t.parse().unwrap()),
                        Some(MANIFEST),
                        m.clone(),
                    )
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                    if tries > 1 {
                        let ms = first_try.elapsed().as_millis() as u64;
                        tally.longest_refused_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                    let mut blobs = layers.clone();
                    blobs.push(config.clone());
                    held.insert((r.clone(), t.clone()), (m.clone(), blobs));
                    break;
                }
                Err(RegistryError::ManifestBlobUnknown(d)) => {
                    last = format!("blob unknown {d}");
                    tally.blob_unknown.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(RegistryError::Unavailable { reason, .. }) => {
                    last = reason;
                    tally.unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    tally.other.fetch_add(1, Ordering::Relaxed);
                    panic!("pusher {me}: unexpected refusal {e}");
                }
            }
        }
        // Now and then delete what a tag holds: by tag, or the manifest by
        // digest (its bytes then become garbage, unless shared).
        if n.is_multiple_of(5) {
            let key = (r.clone(), t.clone());
            let reference = if n.is_multiple_of(10) {
                Reference::Digest(Digest::sha256_of(&m))
            } else {
                Reference::Tag(t.parse().unwrap())
            };
            reg.delete_manifest(&r, &reference).await.unwrap();
            held.remove(&key);
            tally.deletes.fetch_add(1, Ordering::Relaxed);
        }
    }
    held
}

/// The race: pushers on `regs` (round robin), a collector per `collectors`
/// passing every 100 ms with a zero delay, for `run`. Then every tag must
/// pull byte-identical, and after a final collection the check is clean.
async fn race(regs: Vec<Registry>, collectors: Vec<Arc<Collector>>, run: Duration) {
    let pool: Arc<Vec<Bytes>> = Arc::new(
        (0..12)
            .map(|i| blob(&format!("layer-{i}"), 2048 + i * 100))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for me in 0..8 {
        tasks.push(tokio::spawn(pusher(
            regs[me % regs.len()].clone(),
            me,
            pool.clone(),
            stop.clone(),
            tally.clone(),
        )));
    }
    let mut gc_tasks = Vec::new();
    for c in &collectors {
        let (c, stop) = (c.clone(), stop.clone());
        gc_tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.run_pass(false, None).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut held = BTreeMap::new();
    for t in tasks {
        held.extend(t.await.unwrap());
    }
    for t in gc_tasks {
        t.await.unwrap();
    }
    let reclaimed: u64 = collectors
        .iter()
        .map(|c| c.metrics().reviews_with("doomed"))
        .sum();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "race: {} pushes attempted, {} acknowledged, {} MANIFEST_BLOB_UNKNOWN and {} unavailable \
         refusals (all retried; the longest a push waited: {} ms), {} other, {} deletes, {} contents \
         reclaimed during the race",
        load(&tally.attempted),
        load(&tally.acknowledged),
        load(&tally.blob_unknown),
        load(&tally.unavailable),
        load(&tally.longest_refused_ms),
        load(&tally.other),
        load(&tally.deletes),
        reclaimed
    );
    assert_eq!(load(&tally.attempted), load(&tally.acknowledged));
    assert_eq!(load(&tally.other), 0);
    assert!(
        reclaimed > 0,
        "the collector reclaimed nothing during the race"
    );

    // Every acknowledged tag pulls, byte-identical, through every node.
    let verify = |reg: Registry, held: BTreeMap<(RepoName, String), (Bytes, Vec<Bytes>)>| async move {
        for ((r, t), (m, blobs)) in &held {
            let got = reg
                .get_manifest(r, &Reference::Tag(t.parse().unwrap()))
                .await
                .unwrap_or_else(|e| panic!("{r}:{t}: {e}"));
            assert_eq!(&got.bytes, m, "{r}:{t}");
            for b in blobs {
                let d = Digest::sha256_of(b);
                assert_eq!(
                    read_all(&reg, r, &d).await.unwrap(),
                    b.to_vec(),
                    "{r}:{t} {d}"
                );
            }
        }
    };
    for reg in &regs {
        verify(reg.clone(), held.clone()).await;
    }
    // A final collection leaves nothing unreferenced, and nothing needed
    // went with it.
    collect_all(&collectors[0]).await;
    let check = collectors[0].check().await.unwrap();
    assert!(check.clean, "{check:?}");
    verify(regs[0].clone(), held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_racing_a_zero_delay_collector_lose_nothing_embedded() {
    let (meta, blobs, _dir) = embedded().await;
    let reg = registry(meta.clone(), blobs.clone());
    let c = Arc::new(Collector::new(meta, blobs, config(0)));
    race(vec![reg], vec![c], Duration::from_secs(6)).await;
}

mod postgres {
    use super::*;
    use wharf_meta::postgres::{PostgresConfig, PostgresStore};

    /// A database of its own on the test server, dropped at the end.
    struct Db {
        admin: String,
        name: String,
    }

    async fn exec(url: &str, sql: &str) {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let running = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = running.await;
    }

    impl Db {
        async fn create() -> Option<Db> {
            let admin = std::env::var("WHARF_TEST_POSTGRES_URL")
                .ok()
                .filter(|u| !u.is_empty())?;
            let name = format!("gc_race_{}", uuid::Uuid::new_v4().simple());
            exec(&admin, &format!("CREATE DATABASE {name}")).await;
            Some(Db { admin, name })
        }

        async fn store(&self) -> Arc<dyn MetaStore> {
            let sep = if self.admin.contains('?') { '&' } else { '?' };
            Arc::new(
                PostgresStore::connect(PostgresConfig {
                    url: format!("{}{sep}dbname={}", self.admin, self.name),
                    pool_size: 8,
                    connect_timeout: Duration::from_secs(5),
                    statement_timeout: Duration::from_secs(10),
                })
                .await
                .unwrap(),
            )
        }

        async fn drop_now(self) {
            exec(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            )
            .await;
        }
    }

    /// Two nodes (each its own store pool and registry) over one database
    /// and one blob directory, each with its own collector.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pushes_racing_two_zero_delay_collectors_lose_nothing_postgres() {
        let Some(db) = Db::create().await else {
            eprintln!("skipped: WHARF_TEST_POSTGRES_URL is not set");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut regs = Vec::new();
        let mut collectors = Vec::new();
        for _ in 0..2 {
            let meta = db.store().await;
            let blobs: Arc<dyn BlobStore> =
                Arc::new(FsStore::open(dir.path().join("blobs")).await.unwrap());
            regs.push(registry(meta.clone(), blobs.clone()));
            collectors.push(Arc::new(Collector::new(meta, blobs, config(0))));
        }
        let started = Instant::now();
        race(regs, collectors, Duration::from_secs(6)).await;
        eprintln!("postgres race took {:?}", started.elapsed());
        db.drop_now().await;
    }

    /// The S3-compatible store (Garage in the test command) under a prefix
    /// of this test's own, when `WHARF_TEST_S3_*` say where it is.
    fn s3_or_skip() -> Option<wharf_storage::s3::S3Config> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut c = wharf_storage::s3::S3Config::new(
            &var("WHARF_TEST_S3_ENDPOINT")?,
            &var("WHARF_TEST_S3_BUCKET")?,
            &var("WHARF_TEST_S3_REGION")?,
            &var("WHARF_TEST_S3_ACCESS_KEY_ID")?,
            &var("WHARF_TEST_S3_SECRET_ACCESS_KEY")?,
        );
        c.prefix = format!("gc-race-{}", uuid::Uuid::new_v4().simple());
        Some(c)
    }

    /// The same race with the bytes in S3: two nodes over one database and
    /// one bucket, as a cell runs. With a three-second review delay rather
    /// than none: an upload to the object store takes long enough (about
    /// 350 ms a layer here, Garage syncing every write, 8 pushers at once)
    /// that zero-delay collectors, passing every 100 ms, reclaim a push's
    /// first layers before its manifest arrives, again and again (a push was
    /// seen starved for 14 s idle, and past the deadline on a loaded
    /// machine); with one second, for 9 s.
    /// Safety is what this race is about, and it is the same with a delay:
    /// deleted images and replaced tags still become garbage during the run,
    /// and every review still races the pushes that touch its digest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pushes_racing_two_short_delay_collectors_lose_nothing_postgres_and_s3() {
        let Some(s3) = s3_or_skip() else {
            eprintln!("skipped: WHARF_TEST_S3_* are not set");
            return;
        };
        let Some(db) = Db::create().await else {
            eprintln!("skipped: WHARF_TEST_POSTGRES_URL is not set");
            return;
        };
        let mut regs = Vec::new();
        let mut collectors = Vec::new();
        for _ in 0..2 {
            let meta = db.store().await;
            let blobs: Arc<dyn BlobStore> =
                Arc::new(wharf_storage::s3::S3Store::new(s3.clone()).unwrap());
            regs.push(registry(meta.clone(), blobs.clone()));
            collectors.push(Arc::new(Collector::new(meta, blobs, config(3))));
        }
        // Longer: each push takes longer against the object store.
        race(regs, collectors, Duration::from_secs(12)).await;
        db.drop_now().await;
    }
}
