//! The PostgreSQL backend against the shared behaviour suite, plus what only
//! a store shared by several nodes over the network must do: stay consistent
//! under concurrent pushes from two nodes, migrate idempotently when nodes
//! start together, and answer `Unavailable` promptly when its pool is
//! exhausted, a statement runs too long or the server goes away.
//!
//! The server comes from `WHARF_TEST_POSTGRES_URL` (a URL such as
//! `postgres://wharf@127.0.0.1:15432/wharf`; `scripts/postgres.sh` starts a
//! throwaway one) and needs a role that may create databases. Each test
//! creates its own database, named after the test plus a random suffix, and
//! drops it at the end, so tests are independent and run in parallel.
//!
//! Without the variable every test prints one "skipped" line and passes, so
//! `cargo test` works on a machine without PostgreSQL, unless `CI` or
//! `WHARF_REQUIRE_POSTGRES=1` is set: then every test fails, saying why.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use wharf_core::{Digest, RepoName, Tag};
use wharf_meta::postgres::{PostgresConfig, PostgresStore, MIGRATIONS, SCHEMA_VERSION};
use wharf_meta::{ManifestRecord, MetaError, MetaStore};

const URL_VAR: &str = "WHARF_TEST_POSTGRES_URL";

/// The admin URL of the test server, or `None` when the tests are to be
/// skipped. Panics when the environment requires PostgreSQL but names none.
fn server() -> Option<String> {
    if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty()) {
        return Some(url);
    }
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty());
    let required = set("CI") || std::env::var("WHARF_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{URL_VAR} is not set, but CI or WHARF_REQUIRE_POSTGRES=1 requires the PostgreSQL \
         suite: start a server with `bash scripts/postgres.sh start DIR PORT` and export \
         {URL_VAR}=postgres://wharf@127.0.0.1:PORT/wharf"
    );
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| {
        // Straight to the process's stderr: the test harness captures
        // `eprintln!` of passing tests, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "postgres_suite: skipped: set {URL_VAR} (e.g. postgres://wharf@127.0.0.1:15432/wharf; \
             `bash scripts/postgres.sh start DIR 15432` starts one) to run the PostgreSQL tests"
        );
    });
    None
}

/// `server()` or return from the calling test (it passes, skipped).
macro_rules! server_or_skip {
    () => {
        match server() {
            Some(url) => url,
            None => return,
        }
    };
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server ({URL_VAR}): {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own for one test, dropped (with any connections still
/// open to it) when this is dropped, even if the test panicked.
struct TestDb {
    admin_url: String,
    name: String,
}

impl TestDb {
    async fn create(admin_url: &str) -> TestDb {
        let name = db_name();
        admin_client(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDb {
            admin_url: admin_url.to_string(),
            name,
        }
    }

    /// The server URL, pointed at this database (a later `dbname`
    /// parameter overrides the URL's path).
    fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}dbname={}", self.admin_url, self.name)
    }

    fn config(&self, pool_size: usize) -> PostgresConfig {
        PostgresConfig {
            url: self.url(),
            pool_size,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }

    /// A plain client on this database, outside any store's pool.
    async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on
        // another future: do it on a thread with a runtime of its own.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = admin_client(&url).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// `wt_<test name>_<random>`, at most 63 bytes (PostgreSQL's identifier
/// limit). libtest names each test's thread after the test; the suite's
/// tests create their store on that thread.
fn db_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let thread = std::thread::current();
    let case: String = thread
        .name()
        .unwrap_or("case")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    // The tail: the test's own name, not its module path.
    let case = &case[case.len().saturating_sub(44)..];
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("wt_{case}_{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// A fresh store on a fresh database of its own.
async fn fresh(admin_url: String) -> (PostgresStore, TestDb) {
    let db = TestDb::create(&admin_url).await;
    let store = PostgresStore::connect(db.config(4))
        .await
        .expect("connect to the test database");
    (store, db)
}

mod shared_suite {
    // The block runs first in every generated test: without a server it
    // returns from the test (skipped); otherwise it yields the constructor.
    wharf_meta::meta_store_suite!({
        let admin_url = server_or_skip!();
        move || super::fresh(admin_url)
    });

    use super::server;
}

// ---- fixtures ----

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

fn manifest(seed: &str, subject: Option<&Digest>) -> ManifestRecord {
    ManifestRecord {
        digest: Digest::sha256_of(seed.as_bytes()),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_string(),
        size: 200,
        artifact_type: None,
        annotations: None,
        subject: subject.cloned(),
        references: Vec::new(),
    }
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, MetaError>, what: &str) {
    match result {
        Err(MetaError::Unavailable(_)) => {}
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// Polls `check` until it holds, for at most five seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every listed tag resolves, on both nodes alike, to a stored manifest.
async fn assert_consistent(nodes: &[&PostgresStore], r: &RepoName) {
    let tags = nodes[0].list_tags(r, None, 1000).await.unwrap();
    for node in nodes {
        assert_eq!(node.list_tags(r, None, 1000).await.unwrap(), tags);
    }
    for t in &tags {
        let digest = nodes[0]
            .resolve_tag(r, &tag(t))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("listed tag {t} does not resolve"));
        for node in nodes {
            assert_eq!(
                node.resolve_tag(r, &tag(t)).await.unwrap().as_ref(),
                Some(&digest)
            );
            assert!(
                node.get_manifest(r, &digest).await.unwrap().is_some(),
                "tag {t} points at {digest}, which is not stored"
            );
        }
    }
}

// ---- what only this backend must do ----

/// Two nodes (two stores, two pools) push to the same tag, the same
/// manifest and the same blobs at once, over and over, while one of them
/// also deletes manifests the tag may point at: no call fails, and both
/// end up seeing the same consistent state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_pushing_the_same_tag_stay_consistent() {
    const ROUNDS: usize = 60;
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;
    let a = Arc::new(PostgresStore::connect(db.config(3)).await.unwrap());
    let b = Arc::new(PostgresStore::connect(db.config(3)).await.unwrap());
    let r = repo("race/app");
    let base = manifest("base", None);
    a.put_manifest(&r, &base, None).await.unwrap();

    let mut nodes = JoinSet::new();
    for (node, store) in [("a", Arc::clone(&a)), ("b", Arc::clone(&b))] {
        let (r, subject) = (r.clone(), base.digest.clone());
        nodes.spawn(async move {
            for i in 0..ROUNDS {
                // Its own manifest under the contested tag.
                let own = manifest(&format!("{node}-{i}"), Some(&subject));
                store
                    .put_manifest(&r, &own, Some(&tag("latest")))
                    .await
                    .unwrap();
                // The very same manifest and tag as the other node.
                let same = manifest(&format!("same-{i}"), None);
                store
                    .put_manifest(&r, &same, Some(&tag("same")))
                    .await
                    .unwrap();
                let blob = Digest::sha256_of(format!("blob-{i}").as_bytes());
                store.link_blob(&r, &blob, i as u64).await.unwrap();
                // Node b deletes the manifest it pushed last round, which
                // "latest" may still point at (then the tag goes too).
                if node == "b" && i > 0 {
                    let previous = manifest(&format!("b-{}", i - 1), Some(&subject));
                    assert!(store.delete_manifest(&r, &previous.digest).await.unwrap());
                }
            }
        });
    }
    while let Some(done) = nodes.join_next().await {
        done.expect("a node's task panicked");
    }

    assert_consistent(&[&a, &b], &r).await;
    let latest = a.resolve_tag(&r, &tag("latest")).await.unwrap();
    let last_a = manifest(&format!("a-{}", ROUNDS - 1), Some(&base.digest)).digest;
    let last_b = manifest(&format!("b-{}", ROUNDS - 1), Some(&base.digest)).digest;
    assert!(
        latest == Some(last_a.clone()) || latest == Some(last_b.clone()),
        "latest is {latest:?}, not either node's last push"
    );
    let same = manifest(&format!("same-{}", ROUNDS - 1), None).digest;
    assert_eq!(b.resolve_tag(&r, &tag("same")).await.unwrap(), Some(same));
    for i in 0..ROUNDS {
        let blob = Digest::sha256_of(format!("blob-{i}").as_bytes());
        assert_eq!(b.blob_size(&r, &blob).await.unwrap(), Some(i as u64));
    }
    // All of a's pushes and only b's last survive as referrers of base.
    let referrers = b.referrers(&r, &base.digest).await.unwrap();
    assert_eq!(referrers.len(), ROUNDS + 1);
    assert!(referrers.iter().any(|m| m.digest == last_b));
    assert_eq!(a.list_repos(None, 10).await.unwrap(), vec!["race/app"]);
    assert_eq!(a.pool_stats().in_use, 0);
    assert_eq!(b.pool_stats().in_use, 0);
}

/// Connecting again migrates nothing, and so do several nodes starting at
/// once on a fresh database: one of them creates the schema, the others
/// wait on the advisory lock and find it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let admin = server_or_skip!();
    let versions = |db: &TestDb| {
        let url = db.url();
        async move {
            let rows = admin_client(&url)
                .await
                .query(
                    "SELECT version FROM wharf.schema_version ORDER BY version",
                    &[],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
        }
    };
    // Every migration this build has (versions may have gaps while branches
    // adding migrations are merged), the last one being SCHEMA_VERSION.
    let expected: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(expected.last(), Some(&SCHEMA_VERSION));

    // Sequentially: the second start finds the schema current.
    let db = TestDb::create(&admin).await;
    let first = PostgresStore::connect(db.config(2)).await.unwrap();
    first
        .put_manifest(&repo("app"), &manifest("m", None), Some(&tag("v1")))
        .await
        .unwrap();
    let second = PostgresStore::connect(db.config(2)).await.unwrap();
    assert_eq!(versions(&db).await, expected);
    assert_eq!(
        second.resolve_tag(&repo("app"), &tag("v1")).await.unwrap(),
        Some(manifest("m", None).digest),
        "a second start lost data"
    );

    // Concurrently, several rounds on fresh databases.
    for _ in 0..3 {
        let db = TestDb::create(&admin).await;
        let mut starts = JoinSet::new();
        for _ in 0..4 {
            let config = db.config(2);
            starts.spawn(async move { PostgresStore::connect(config).await });
        }
        let mut stores = Vec::new();
        while let Some(started) = starts.join_next().await {
            stores.push(started.unwrap().expect("a concurrent start failed"));
        }
        assert_eq!(versions(&db).await, expected);
        stores[0]
            .link_blob(&repo("app"), &Digest::sha256_of(b"x"), 1)
            .await
            .unwrap();
        for store in &stores {
            assert!(store.repo_exists(&repo("app")).await.unwrap());
        }
    }
}

/// With all `pool_size` connections busy (each call stuck behind a lock
/// held elsewhere), the next call waits at most the wait timeout and fails
/// with `Unavailable`; the stats show the pool full and the waiter; and the
/// busy calls complete once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_pool_fails_fast_with_unavailable() {
    const N: usize = 3;
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;
    let wait = Duration::from_millis(300);
    let store = Arc::new(
        PostgresStore::connect(PostgresConfig {
            connect_timeout: wait,
            ..db.config(N)
        })
        .await
        .unwrap(),
    );
    let r = repo("app");
    store
        .put_manifest(&r, &manifest("m", None), Some(&tag("v1")))
        .await
        .unwrap();

    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE wharf.tags IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut stuck = JoinSet::new();
    for _ in 0..N {
        let (store, r) = (Arc::clone(&store), r.clone());
        stuck.spawn(async move { store.list_tags(&r, None, 10).await });
    }
    eventually("every connection in use", || store.pool_stats().in_use == N).await;

    let start = Instant::now();
    let waiter = {
        let (store, r) = (Arc::clone(&store), r.clone());
        tokio::spawn(async move { store.resolve_tag(&r, &tag("v1")).await })
    };
    eventually("one caller waiting", || store.pool_stats().waiting == 1).await;
    let stats = store.pool_stats();
    assert_eq!((stats.max_size, stats.open, stats.in_use), (N, N, N));
    assert_unavailable(waiter.await.unwrap(), "call on a full pool");
    let took = start.elapsed();
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "a call on a full pool took {took:?}, wait timeout {wait:?}"
    );

    locker.batch_execute("ROLLBACK").await.unwrap();
    while let Some(done) = stuck.join_next().await {
        assert_eq!(done.unwrap().unwrap(), vec!["v1"]);
    }
    let stats = store.pool_stats();
    assert_eq!((stats.in_use, stats.waiting), (0, 0));
    assert_eq!(
        store.resolve_tag(&r, &tag("v1")).await.unwrap(),
        Some(manifest("m", None).digest)
    );
}

/// A statement stuck longer than `statement_timeout` is cancelled by the
/// server and reported `Unavailable`; the store works again afterwards.
#[tokio::test]
async fn statement_timeout_is_unavailable() {
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;
    let limit = Duration::from_millis(400);
    let store = PostgresStore::connect(PostgresConfig {
        statement_timeout: limit,
        ..db.config(2)
    })
    .await
    .unwrap();
    let r = repo("app");

    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE wharf.blobs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let start = Instant::now();
    assert_unavailable(
        store.link_blob(&r, &Digest::sha256_of(b"b"), 1).await,
        "write behind a lock",
    );
    let took = start.elapsed();
    assert!(
        took >= limit && took < limit + Duration::from_secs(2),
        "took {took:?}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();

    assert!(
        !store.repo_exists(&r).await.unwrap(),
        "the timed-out write half-applied"
    );
    store
        .link_blob(&r, &Digest::sha256_of(b"b"), 1)
        .await
        .unwrap();
    assert!(store.repo_exists(&r).await.unwrap());
}

/// A call whose future is dropped midway (as a caller's deadline does)
/// leaves nothing running on the server: its statement is cancelled and its
/// connection closed, not handed back busy to the pool.
#[tokio::test]
async fn abandoned_call_is_cancelled_on_the_server() {
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;
    let store = PostgresStore::connect(db.config(2)).await.unwrap();
    let r = repo("app");
    store
        .put_manifest(&r, &manifest("m", None), Some(&tag("v1")))
        .await
        .unwrap();

    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE wharf.tags IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        store.resolve_tag(&r, &tag("v1")),
    )
    .await;
    assert!(abandoned.is_err(), "the call should still be stuck");

    // Only the locker's own session remains waiting-free in this database.
    let stuck = "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND application_name = 'wharf' AND wait_event_type = 'Lock'";
    let start = Instant::now();
    loop {
        let n: i64 = locker.query_one(stuck, &[]).await.unwrap().get(0);
        if n == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "an abandoned statement still waits on the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.pool_stats().in_use, 0);
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        store.resolve_tag(&r, &tag("v1")).await.unwrap(),
        Some(manifest("m", None).digest)
    );
}

/// A server that is not there (a closed port) fails `connect` at once, and
/// one that goes away under a running store (its TCP path cut) turns every
/// call into a prompt `Unavailable`, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_is_unavailable_quickly() {
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;

    // Nothing listens on a port just released.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let start = Instant::now();
    let result = PostgresStore::connect(PostgresConfig {
        url: format!("postgres://wharf@127.0.0.1:{closed_port}/wharf"),
        ..db.config(2)
    })
    .await;
    assert_unavailable(result, "connect to a closed port");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );

    // A store reaching the server through a proxy that is then killed.
    let parsed: tokio_postgres::Config = db.url().parse().unwrap();
    let upstream = match (&parsed.get_hosts()[0], parsed.get_ports().first()) {
        (tokio_postgres::config::Host::Tcp(host), port) => {
            format!("{host}:{}", port.copied().unwrap_or(5432))
        }
        _ => panic!("{URL_VAR} must name a TCP host for this test"),
    };
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    let proxy_task = tokio::spawn(async move {
        let mut links = JoinSet::new();
        loop {
            let (mut inbound, _) = proxy.accept().await.unwrap();
            let upstream = upstream.clone();
            links.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
        // Aborting this task drops `links`, which aborts every link.
    });
    let mut url = format!(
        "host=127.0.0.1 port={proxy_port} dbname={}",
        parsed.get_dbname().unwrap()
    );
    if let Some(user) = parsed.get_user() {
        url.push_str(&format!(" user={user}"));
    }
    let store = PostgresStore::connect(PostgresConfig {
        url,
        ..db.config(2)
    })
    .await
    .unwrap();
    let r = repo("app");
    store
        .link_blob(&r, &Digest::sha256_of(b"b"), 1)
        .await
        .unwrap();

    proxy_task.abort();
    let _ = proxy_task.await;
    for call in 0..3 {
        let start = Instant::now();
        assert_unavailable(
            store.repo_exists(&r).await,
            "call after the server went away",
        );
        assert_unavailable(
            store.link_blob(&r, &Digest::sha256_of(b"c"), 1).await,
            "write after the server went away",
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "calls {call} after the server went away took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(store.pool_stats().in_use, 0);
}

/// A pool bigger than the server could ever accept is refused at start.
#[tokio::test]
async fn pool_larger_than_the_server_accepts_is_refused() {
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;
    let store = PostgresStore::connect(db.config(2)).await.unwrap();
    let limit = store.server_connection_limit();
    assert!(limit >= 2, "server accepts {limit} connections");
    match PostgresStore::connect(db.config(limit + 1)).await {
        Err(MetaError::Internal(message)) => assert!(message.contains("pool_size"), "{message}"),
        other => panic!("expected the pool to be refused, got {other:?}"),
    }
}

/// Rows stored by a build before migration 7 get the upgrade's time as
/// push time and as pull time (see `wharf_meta::retention`), and writes
/// after it name their own.
#[tokio::test]
async fn migration_7_gives_rows_stored_before_it_the_upgrade_time() {
    let admin = server_or_skip!();
    let db = TestDb::create(&admin).await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE SCHEMA wharf; CREATE TABLE wharf.schema_version ( \
             version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < 7) {
        c.batch_execute(sql).await.unwrap();
        c.execute(
            "INSERT INTO wharf.schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .unwrap();
    }
    // As a build at schema 6 stored them.
    let old = manifest("old", None);
    let digest = old.digest.to_string();
    c.execute(
        "INSERT INTO wharf.manifests (repo, digest, subject, record) \
         VALUES ('acme/app', $1, NULL, $2::text::jsonb)",
        &[&digest, &serde_json::to_string(&old).unwrap()],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO wharf.tags (repo, tag, digest) VALUES ('acme/app', 'v1', $1)",
        &[&digest],
    )
    .await
    .unwrap();

    let before = wharf_core::now_unix();
    let store = PostgresStore::connect(db.config(2)).await.unwrap();
    let snap = store.retention_snapshot("acme").await.unwrap();
    let (t, m) = (&snap[0].tags[0], &snap[0].manifests[0]);
    assert!(t.pushed_unix + 1 >= before, "{t:?}");
    assert!(m.pushed_unix + 1 >= before, "{m:?}");
    assert_eq!(m.last_pulled_unix, Some(m.pushed_unix));

    // New writes carry their own times (the defaults are gone).
    let new = manifest("new", None);
    store
        .put_manifest(&repo("acme/app"), &new, Some(&tag("v2")))
        .await
        .unwrap();
    let snap = store.retention_snapshot("acme").await.unwrap();
    let fresh = snap[0].manifests.iter().find(|m| m.digest == new.digest);
    assert_eq!(fresh.unwrap().last_pulled_unix, None, "never pulled");
}
