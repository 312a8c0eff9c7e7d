//! Upload sessions against tenant limits on a real server: bytes held by
//! open sessions count towards the byte quota, a body that would pass it is
//! refused, sessions are capped per tenant and per user, and finished or
//! cancelled sessions free their place. Also: a tenant deleted and created
//! again under the same name never reads the old tenant's content.
//!
//! Every server shares one metadata store between its registry and its
//! tenant directory, as the binary does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use wharf_meta::MetaStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_tenants::{Directory, NewTenant, Role, RoleSpec, TenantQuota};

const KIB: usize = 1024;

/// A tenant with an optional byte quota.
fn tenant(name: &str, bytes: Option<u64>) -> NewTenant {
    NewTenant {
        name: name.into(),
        quota: TenantQuota {
            bytes,
            repositories: None,
        },
        ..NewTenant::default()
    }
}

fn pw(user: &str) -> String {
    format!("{user}-password")
}

/// Bytes of `len` that no other call with another `seed` produces.
fn filler(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed ^ (i % 251) as u8).collect()
}

/// A server over one metadata store shared with its directory, with the
/// registry's session caps, and (with `basic`) HTTP Basic against the
/// directory's users.
struct Setup {
    server: Server,
    directory: Directory,
}

impl Setup {
    async fn new(tenants: Vec<NewTenant>, caps: (u64, u64), basic: bool) -> Setup {
        let stores = Stores::open().await;
        let meta: Arc<dyn MetaStore> = stores.meta.clone();
        let directory = Directory::open(meta).await.unwrap();
        for t in tenants {
            directory.create_tenant(t).await.unwrap();
        }
        let config = RegistryConfig {
            max_uploads_per_tenant: caps.0,
            max_uploads_per_user: caps.1,
            ..RegistryConfig::default()
        };
        let registry = Registry::new(stores.blobs.clone(), stores.meta.clone(), config)
            .with_quotas(Arc::new(directory.clone()));
        let d = directory.clone();
        let server = Server::start_over(stores, registry, move |s| {
            if basic {
                s.auth = directory_basic_auth(d.clone());
            }
            s.directory = Some(d);
        })
        .await;
        Setup { server, directory }
    }

    async fn user(&self, tenant: &str, name: &str, role: Role) {
        self.directory
            .put_user(
                tenant,
                name,
                Some(&pw(name)),
                &[RoleSpec::tenant_wide(role)],
            )
            .await
            .unwrap();
    }

    /// Sends `method path` with `body`, as `user` (Basic) if given.
    async fn send(&self, method: Method, path: &str, user: Option<&str>, body: &[u8]) -> Outcome {
        let mut r = self.server.req(method, path).body(body.to_vec());
        if let Some(u) = user {
            r = r.basic_auth(u, Some(pw(u)));
        }
        Outcome::of(r.send().await.unwrap()).await
    }

    /// Starts a session in `repo`: the outcome and its location.
    async fn start(&self, repo: &str, user: Option<&str>) -> (Outcome, String) {
        let o = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                user,
                b"",
            )
            .await;
        let location = o.location.clone();
        (o, location)
    }

    /// Starts a session that must be accepted; its location.
    async fn open(&self, repo: &str, user: Option<&str>) -> String {
        let (o, location) = self.start(repo, user).await;
        o.expect(202, "", &format!("start a session in {repo}"));
        location
    }

    /// Files left in the store's `uploads/` directory.
    fn upload_files(&self) -> usize {
        std::fs::read_dir(self.server.data.join("uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// The session-cap refusal, which only this file asks about.
impl Outcome {
    /// 429 with a `Retry-After` and a message saying how many sessions
    /// are open, the limit, and what to do.
    #[track_caller]
    fn expect_too_many_sessions(&self, open: u64, limit: u64, what: &str) {
        self.expect(429, "TOOMANYREQUESTS", what);
        let secs: u64 = self.retry_after.parse().unwrap_or(0);
        assert!(secs >= 1, "{what}: Retry-After {:?}", self.retry_after);
        for part in [
            format!("{open} upload sessions open"),
            format!("at most {limit}"),
            "finish or cancel some".to_string(),
        ] {
            assert!(self.message.contains(&part), "{what}: {part:?} in {self:?}");
        }
    }
}

// ---- A: open sessions and the byte quota ----

/// The attack of issue 10 (point 6): a tenant with a 64 KiB quota parks
/// 60 KiB in each of ten open sessions. Only the first fits; each further
/// push is refused 403 naming the quota and its session ended; usage shows
/// the bytes held by the open session, and they count once finished.
#[tokio::test]
async fn open_sessions_count_towards_the_quota() {
    let s = Setup::new(
        vec![tenant("acme", Some(64 * KIB as u64))],
        (512, 64),
        false,
    )
    .await;
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(s.open("acme/app", None).await);
    }
    assert_eq!(s.directory.usage("acme").await.unwrap().upload_sessions, 10);

    let chunks: Vec<Vec<u8>> = (0..10).map(|i| filler(i, 60 * KIB)).collect();
    s.send(Method::PATCH, &sessions[0], None, &chunks[0])
        .await
        .expect(202, "", "first 60 KiB of a 64 KiB quota");
    for (i, session) in sessions.iter().enumerate().skip(1) {
        s.send(Method::PATCH, session, None, &chunks[i])
            .await
            .expect_quota_refusal(&format!("session {i}: 60 KiB more"));
        s.send(Method::GET, session, None, b"").await.expect(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            &format!("refused session {i} is ended"),
        );
    }
    let usage = s.directory.usage("acme").await.unwrap();
    assert_eq!(
        (
            usage.bytes,
            usage.upload_sessions,
            usage.upload_bytes,
            usage.repositories
        ),
        (0, 1, 60 * KIB as u64, 0),
        "{usage:?}"
    );
    assert_eq!(s.upload_files(), 1, "refused sessions left bytes behind");

    // A monolithic push does not fit beside the parked bytes either.
    let small = filler(42, 8 * KIB);
    s.send(
        Method::POST,
        &format!("/v2/acme/other/blobs/uploads/?digest={}", sha256(&small)),
        None,
        &small,
    )
    .await
    .expect_quota_refusal("8 KiB beside 60 KiB held by a session");

    // Finished, the session's bytes are content and it holds nothing.
    s.send(
        Method::PUT,
        &format!("{}?digest={}", sessions[0], sha256(&chunks[0])),
        None,
        b"",
    )
    .await
    .expect(201, "", "finish the one that fits");
    let usage = s.directory.usage("acme").await.unwrap();
    assert_eq!(
        (usage.bytes, usage.upload_sessions, usage.upload_bytes),
        (60 * KIB as u64, 0, 0)
    );
}

/// One PATCH, PUT or monolithic body larger than the quota is refused 403
/// naming the quota, its bytes are discarded and its session ended.
#[tokio::test]
async fn a_single_chunk_cannot_pass_the_quota() {
    let s = Setup::new(
        vec![tenant("acme", Some(64 * KIB as u64))],
        (512, 64),
        false,
    )
    .await;
    let big = filler(7, 100 * KIB);
    let digest = sha256(&big);

    let session = s.open("acme/app", None).await;
    s.send(Method::PATCH, &session, None, &big)
        .await
        .expect_quota_refusal("one 100 KiB chunk");
    s.send(Method::GET, &session, None, b"").await.expect(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "the refused session",
    );

    let session = s.open("acme/app", None).await;
    s.send(
        Method::PUT,
        &format!("{session}?digest={digest}"),
        None,
        &big,
    )
    .await
    .expect_quota_refusal("a 100 KiB final chunk");
    s.send(Method::GET, &session, None, b"").await.expect(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "the refused session",
    );

    s.send(
        Method::POST,
        &format!("/v2/acme/app/blobs/uploads/?digest={digest}"),
        None,
        &big,
    )
    .await
    .expect_quota_refusal("a 100 KiB monolithic push");
    s.send(
        Method::GET,
        &format!("/v2/acme/app/blobs/{digest}"),
        None,
        b"",
    )
    .await
    .expect(404, "BLOB_UNKNOWN", "nothing stored");

    let usage = s.directory.usage("acme").await.unwrap();
    assert_eq!(
        (usage.bytes, usage.upload_sessions, usage.upload_bytes),
        (0, 0, 0)
    );
    assert_eq!(s.upload_files(), 0, "refused bytes left behind");

    // What fits still does.
    let fits = filler(8, 64 * KIB);
    let session = s.open("acme/app", None).await;
    s.send(Method::PATCH, &session, None, &fits)
        .await
        .expect(202, "", "exactly the quota");
}

// ---- A: session caps ----

#[tokio::test]
async fn sessions_are_capped_per_user() {
    let s = Setup::new(vec![tenant("acme", None)], (100, 3), true).await;
    s.user("acme", "alice", Role::Push).await;
    s.user("acme", "bob", Role::Push).await;
    for i in 0..3 {
        s.open(&format!("acme/app{i}"), Some("alice")).await;
    }
    let (o, _) = s.start("acme/app", Some("alice")).await;
    o.expect_too_many_sessions(3, 3, "alice's fourth session");
    assert!(o.message.contains("alice"), "{o:?}");
    let blob = b"monolithic";
    s.send(
        Method::POST,
        &format!("/v2/acme/app/blobs/uploads/?digest={}", sha256(blob)),
        Some("alice"),
        blob,
    )
    .await
    .expect_too_many_sessions(3, 3, "alice's monolithic push needs a session too");

    // Another user of the same tenant is not held back by alice's.
    for _ in 0..3 {
        s.open("acme/app", Some("bob")).await;
    }
    s.start("acme/app", Some("bob"))
        .await
        .0
        .expect_too_many_sessions(3, 3, "bob's fourth session");
    assert_eq!(s.directory.usage("acme").await.unwrap().upload_sessions, 6);
}

#[tokio::test]
async fn sessions_are_capped_per_tenant() {
    let s = Setup::new(
        vec![tenant("acme", None), tenant("globex", None)],
        (3, 64),
        false,
    )
    .await;
    s.open("acme", None).await;
    s.open("acme/app", None).await;
    s.open("acme/team/lib", None).await;
    let (o, _) = s.start("acme/app", None).await;
    o.expect_too_many_sessions(3, 3, "acme's fourth session");
    assert!(o.message.contains("tenant acme"), "{o:?}");
    // Neighbours are counted apart.
    for _ in 0..3 {
        s.open("globex/app", None).await;
    }
    s.start("globex/app", None)
        .await
        .0
        .expect_too_many_sessions(3, 3, "globex's fourth session");
}

#[tokio::test]
async fn finished_or_cancelled_sessions_free_their_place() {
    let s = Setup::new(vec![tenant("acme", None)], (2, 64), false).await;
    let first = s.open("acme/app", None).await;
    let second = s.open("acme/app", None).await;
    s.start("acme/app", None)
        .await
        .0
        .expect_too_many_sessions(2, 2, "a third session");

    s.send(Method::DELETE, &first, None, b"")
        .await
        .expect(204, "", "cancel the first");
    s.open("acme/app", None).await;
    s.start("acme/app", None)
        .await
        .0
        .expect_too_many_sessions(2, 2, "again full");

    let blob = b"finished blob";
    s.send(Method::PATCH, &second, None, blob)
        .await
        .expect(202, "", "a chunk");
    s.send(
        Method::PUT,
        &format!("{second}?digest={}", sha256(blob)),
        None,
        b"",
    )
    .await
    .expect(201, "", "finish the second");
    s.open("acme/app", None).await;
    assert_eq!(s.directory.usage("acme").await.unwrap().upload_sessions, 2);
}

// ---- B: a deleted tenant's name taken again ----

/// Pushes a small image to `repo` as `user`, tag `v1`: (manifest digest,
/// layer digest).
async fn push_image(s: &Setup, repo: &str, user: &str) -> (String, String) {
    let config = b"{\"seed\":\"old\"}".to_vec();
    let layer = b"layer of the old tenant".to_vec();
    for blob in [&config, &layer] {
        s.send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
            Some(user),
            blob,
        )
        .await
        .expect(201, "", "push a blob");
    }
    let manifest = image_manifest(
        &sha256(&config),
        config.len(),
        &sha256(&layer),
        layer.len(),
        "",
    );
    let r = s
        .server
        .req(Method::PUT, &format!("/v2/{repo}/manifests/v1"))
        .basic_auth(user, Some(pw(user)))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "push the manifest");
    (sha256(manifest.as_bytes()), sha256(&layer))
}

async fn pull_manifest(s: &Setup, path: &str, user: &str) -> Outcome {
    let r = s
        .server
        .req(Method::GET, path)
        .basic_auth(user, Some(pw(user)))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    Outcome::of(r).await
}

#[tokio::test]
async fn a_tenant_recreated_under_a_deleted_name_cannot_read_the_old_content() {
    let s = Setup::new(vec![tenant("acme", None)], (512, 64), true).await;
    s.user("acme", "alice", Role::Push).await;
    let (manifest, layer) = push_image(&s, "acme/app", "alice").await;
    // Served once, so this node holds it in its caches.
    pull_manifest(&s, "/v2/acme/app/manifests/v1", "alice")
        .await
        .expect(200, "", "the old tenant's pull");
    s.open("acme/app", Some("alice")).await;

    s.directory.delete_tenant("acme", true).await.unwrap();
    tokio::time::sleep(wharf_tenants::directory::TENANT_NAME_SETTLE + Duration::from_millis(200))
        .await;
    s.directory
        .create_tenant(tenant("acme", None))
        .await
        .unwrap();
    s.user("acme", "mallory", Role::Pull).await;

    for path in [
        "/v2/acme/app/manifests/v1".to_string(),
        format!("/v2/acme/app/manifests/{manifest}"),
    ] {
        pull_manifest(&s, &path, "mallory")
            .await
            .expect(404, "MANIFEST_UNKNOWN", &path);
    }
    s.send(
        Method::GET,
        &format!("/v2/acme/app/blobs/{layer}"),
        Some("mallory"),
        b"",
    )
    .await
    .expect(404, "BLOB_UNKNOWN", "the old layer");
    let tags = s
        .send(Method::GET, "/v2/acme/app/tags/list", Some("mallory"), b"")
        .await;
    assert_ne!(tags.status, 200, "old tags listed: {tags:?}");
    let usage = s.directory.usage("acme").await.unwrap();
    assert_eq!(
        (
            usage.bytes,
            usage.repositories,
            usage.upload_sessions,
            usage.upload_bytes
        ),
        (0, 0, 0, 0)
    );
}

#[tokio::test]
async fn recreating_too_soon_is_refused_with_the_reason() {
    let s = Setup::new(vec![tenant("acme", None)], (512, 64), true).await;
    s.user("acme", "alice", Role::Push).await;
    push_image(&s, "acme/app", "alice").await;
    s.directory.delete_tenant("acme", true).await.unwrap();
    match s.directory.create_tenant(tenant("acme", None)).await {
        Err(wharf_tenants::DirectoryError::Conflict(msg)) => {
            assert!(
                msg.starts_with("tenant acme was deleted 0 s ago; its name can be taken again in"),
                "{msg}"
            );
            assert!(
                msg.ends_with("once every node's caches (2 s) have dropped its content"),
                "{msg}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.directory.tenant("acme").is_none());
}
