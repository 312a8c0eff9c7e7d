//! Moving a tenant between cells, node side, on real servers: the write
//! fence (every kind of write refused with `503`, `Retry-After` and
//! `UNAVAILABLE` while pulls and other tenants go on; writes in flight
//! counted), export and import between two servers with their own data
//! directories (the second export equals the first, times included; a
//! sync import mirrors deletions), blob copies (digest checked, named
//! holds that keep a blob through garbage collection until released),
//! purges that bring usage to zero and let the collector reclaim the
//! bytes, and the per-tenant metrics; and a tenant user's access and
//! refresh tokens, issued by one cell, honoured by the other after the
//! copy (both cells sign with one key), while a user deleted before the
//! last pass is not.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use wharf_api::auth::{Auth, TokenService, Users};
use wharf_api::tenant_traffic::TenantTraffic;
use wharf_auth::{BasicChallenge, BearerChallenge, Issuer, KeySet, SigningKey, Verifier};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::MetaStore;
use wharf_storage::fs::FsStore;
use wharf_tenants::{Directory, NewTenant, Role, RoleSpec};

const TOKEN: &str = "move-admin-token";
const SERVICE: &str = "wharf-test";
const ISSUER: &str = "wharf-test-issuer";
const REALM: &str = "http://registry.test/auth/token";

/// One cell of one node: the registry port, the admin port (admin API and
/// `/metrics`), over its own data directory.
struct Cell {
    s: Server,
    admin: String,
    http: reqwest::Client,
    directory: Directory,
    meta: Arc<EmbeddedStore>,
    blobs: Arc<FsStore>,
}

impl Cell {
    async fn start(tenants: &[&str]) -> Cell {
        Cell::start_with(tenants, None).await
    }

    /// With `key`, the registry port runs in token mode over the
    /// directory's users, signing with `key` (as every node of a fleet).
    async fn start_with(tenants: &[&str], key: Option<&SigningKey>) -> Cell {
        let stores = Stores::open().await;
        let (meta, blobs) = (stores.meta.clone(), stores.blobs.clone());
        let dyn_meta: Arc<dyn MetaStore> = meta.clone();
        let directory = Directory::open(dyn_meta.clone()).await.unwrap();
        for t in tenants {
            directory
                .create_tenant(NewTenant {
                    name: t.to_string(),
                    ..NewTenant::default()
                })
                .await
                .unwrap();
        }
        let traffic = Arc::new(TenantTraffic::new(directory.clone()));
        traffic.spawn_stored_refresher(dyn_meta.clone(), Duration::from_millis(50));
        let registry = stores
            .registry()
            .with_quotas(Arc::new(directory.clone()))
            .with_immutable_tags(Arc::new(directory.clone()));
        let api = wharf_api::admin_api::AdminApi::new(
            directory.clone(),
            Some(wharf_auth::hash_secret(TOKEN)),
        )
        .with_registry(registry.clone())
        .with_traffic(traffic.clone());
        let mut node = wharf_api::admin::NodeState::new(
            None,
            Arc::new(wharf_api::ConnStats::default()),
            Arc::new(wharf_telemetry::RequestMetrics::default()),
            vec![],
            vec![],
        );
        node.tenants = Some(traffic.clone());
        let app = wharf_api::admin_api::admin_api_router(Arc::new(api))
            .merge(wharf_api::admin::metrics_app(Arc::new(node)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let d = directory.clone();
        let tokens = key.map(|key| {
            let users = Arc::new(Users::directory_only(directory.clone()));
            let mut keys = KeySet::new();
            keys.insert(key.public_key());
            let service = TokenService::new(
                users.clone(),
                Issuer::new(key.clone(), ISSUER, SERVICE),
                SERVICE,
                BasicChallenge::new("wharf").unwrap(),
                Arc::from(Vec::new()),
                dyn_meta.clone(),
            );
            (users, keys, service)
        });
        let s = Server::start_over(stores, registry, |state| {
            state.directory = Some(d);
            state.traffic = traffic;
            if let Some((users, keys, service)) = tokens {
                state.auth = Auth::Token {
                    verifier: Arc::new(Verifier::new(keys, ISSUER, SERVICE)),
                    challenge: BearerChallenge::new(REALM, SERVICE).unwrap(),
                    anonymous_pull: Arc::from(Vec::new()),
                    identities: Some(users),
                };
                state.token_service = Some(Arc::new(service));
            }
        })
        .await;
        Cell {
            s,
            admin,
            http: reqwest::Client::new(),
            directory,
            meta,
            blobs,
        }
    }

    fn admin_req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
    }

    /// An admin call expected to answer `status`; its JSON.
    async fn admin_json(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.admin_req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn fence(&self, tenant: &str) -> Value {
        let (status, v) = self
            .admin_json(
                Method::GET,
                &format!("/admin/v1/tenants/{tenant}/fence"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn export(&self, tenant: &str) -> Vec<String> {
        let r = self
            .admin_req(Method::GET, &format!("/admin/v1/tenants/{tenant}/export"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), "application/x-ndjson");
        let text = r.text().await.unwrap();
        text.lines().map(str::to_string).collect()
    }

    async fn import(&self, tenant: &str, mode: &str, lines: &[String]) -> (u16, Value) {
        let body = lines.join("\n") + "\n";
        let r = self
            .admin_req(
                Method::POST,
                &format!("/admin/v1/tenants/{tenant}/import?mode={mode}"),
            )
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn usage(&self, tenant: &str) -> Value {
        let (status, v) = self
            .admin_json(
                Method::GET,
                &format!("/admin/v1/tenants/{tenant}/usage"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// A collector over this cell's stores that reviews at once.
    fn collector(&self) -> wharf_gc::Collector {
        wharf_gc::Collector::new(
            self.meta.clone(),
            self.blobs.clone(),
            wharf_gc::GcConfig {
                review_delay: Duration::ZERO,
                orphan_age: Duration::ZERO,
                ..wharf_gc::GcConfig::default()
            },
        )
    }

    async fn stored(&self, digest: &str) -> bool {
        use wharf_storage::BlobStore as _;
        self.blobs
            .stat(&digest.parse().unwrap())
            .await
            .unwrap()
            .is_some()
    }

    async fn metrics(&self) -> String {
        self.admin_req(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The value of the one sample `series` (name and labels, as rendered).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts a refusal by the fence, `Retry-After` `secs`.
#[track_caller]
fn expect_fenced(o: &Outcome, secs: u32, what: &str) {
    o.expect(503, "UNAVAILABLE", what);
    assert_eq!(o.retry_after, secs.to_string(), "{what}: {o:?}");
    assert!(o.message.contains("being moved"), "{what}: {o:?}");
}

/// Starts an upload session in `repo`; its location path.
async fn open_upload(s: &Server, repo: &str) -> String {
    let r = s
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    header(&r, "location")
}

#[tokio::test]
async fn the_fence_refuses_every_kind_of_write_while_pulls_and_other_tenants_go_on() {
    let cell = Cell::start(&["acme", "beta"]).await;
    let s = &cell.s;
    let (body, digest) = s.push_image("acme/app", "v1", "one").await;
    let layer = sha256(b"layer of one");
    let beta_layer = s.push_blob("beta/app", b"beta layer").await;
    let session = open_upload(s, "acme/app").await;

    let (status, v) = cell
        .admin_json(
            Method::PUT,
            "/admin/v1/tenants/acme/fence",
            Some(json!({"retry_after_secs": 7})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["fenced"], true);
    let v = cell.fence("acme").await;
    assert_eq!(
        (
            &v["fenced"],
            &v["applied"],
            &v["retry_after_secs"],
            &v["writes_in_flight"]
        ),
        (&json!(true), &json!(true), &json!(7), &json!(0)),
        "{v}"
    );
    assert!(v["since"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(cell.fence("beta").await["fenced"], false);

    let bytes = b"new bytes".to_vec();
    let d = sha256(&bytes);
    let writes: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "upload start",
            s.req(Method::POST, "/v2/acme/app/blobs/uploads/"),
        ),
        (
            "monolithic upload",
            s.req(
                Method::POST,
                &format!("/v2/acme/app/blobs/uploads/?digest={d}"),
            )
            .body(bytes.clone()),
        ),
        (
            "mount within the tenant",
            s.req(
                Method::POST,
                &format!("/v2/acme/other/blobs/uploads/?mount={layer}&from=acme/app"),
            ),
        ),
        (
            "mount from another tenant",
            s.req(
                Method::POST,
                &format!("/v2/acme/other/blobs/uploads/?mount={beta_layer}&from=beta/app"),
            ),
        ),
        (
            "upload PATCH",
            s.req(Method::PATCH, &session)
                .header("content-type", "application/octet-stream")
                .body(bytes.clone()),
        ),
        (
            "upload PUT",
            s.req(Method::PUT, &format!("{session}?digest={d}"))
                .body(bytes.clone()),
        ),
        (
            "manifest PUT",
            s.req(Method::PUT, "/v2/acme/app/manifests/v2")
                .header("content-type", OCI_MANIFEST)
                .body(body.clone()),
        ),
        (
            "tag DELETE",
            s.req(Method::DELETE, "/v2/acme/app/manifests/v1"),
        ),
        (
            "manifest DELETE",
            s.req(Method::DELETE, &format!("/v2/acme/app/manifests/{digest}")),
        ),
        (
            "blob DELETE",
            s.req(Method::DELETE, &format!("/v2/acme/app/blobs/{layer}")),
        ),
    ];
    for (what, r) in writes {
        expect_fenced(&Outcome::of(r.send().await.unwrap()).await, 7, what);
    }

    let pulls = [
        (Method::GET, "/v2/acme/app/manifests/v1".to_string()),
        (Method::HEAD, format!("/v2/acme/app/manifests/{digest}")),
        (Method::GET, format!("/v2/acme/app/blobs/{layer}")),
        (Method::HEAD, format!("/v2/acme/app/blobs/{layer}")),
        (Method::GET, "/v2/acme/app/tags/list".to_string()),
        (Method::GET, format!("/v2/acme/app/referrers/{digest}")),
        (Method::GET, "/v2/_catalog".to_string()),
        (Method::GET, session.clone()),
    ];
    for (m, path) in pulls {
        let r = s.req(m.clone(), &path).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "{m} {path} while fenced: {}",
            r.status()
        );
    }
    // Another tenant pushes as ever, and nothing of the fenced one changed.
    s.push_image("beta/app", "v1", "beta").await;
    let r = s
        .req(Method::GET, "/v2/acme/app/tags/list")
        .send()
        .await
        .unwrap();
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
    assert_eq!(cell.fence("acme").await["writes_in_flight"], 0);
}

#[tokio::test]
async fn a_leased_fence_lapses_by_itself_when_nobody_renews_it() {
    let cell = Cell::start(&["acme"]).await;
    let path = "/admin/v1/tenants/acme/fence";
    for bad in [0, 301] {
        let (status, v) = cell
            .admin_json(Method::PUT, path, Some(json!({"lease_secs": bad})))
            .await;
        assert_eq!(status, 400, "lease {bad}: {v}");
    }
    let lease = json!({"retry_after_secs": 1, "lease_secs": 1});
    let (status, v) = cell
        .admin_json(Method::PUT, path, Some(lease.clone()))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["fenced"], true, "{v}");
    assert!(v["until"].as_str().unwrap().ends_with('Z'), "{v}");
    let since = v["since"].clone();
    let upload = || cell.s.req(Method::POST, "/v2/acme/app/blobs/uploads/");
    expect_fenced(
        &Outcome::of(upload().send().await.unwrap()).await,
        1,
        "leased",
    );

    // Renewed within its lease: still up past the first lease's end, with
    // the same start.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = cell.admin_json(Method::PUT, path, Some(lease)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let v = cell.fence("acme").await;
    assert_eq!(
        (&v["fenced"], &v["applied"]),
        (&json!(true), &json!(true)),
        "{v}"
    );
    assert_eq!(v["since"], since, "a renewal keeps the start");
    expect_fenced(
        &Outcome::of(upload().send().await.unwrap()).await,
        1,
        "renewed",
    );

    // Nobody renews it: it lapses, and the tenant pushes again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let v = cell.fence("acme").await;
    assert_eq!(
        (&v["fenced"], &v["applied"], &v["until"], &v["since"]),
        (&json!(false), &json!(false), &Value::Null, &Value::Null),
        "{v}"
    );
    cell.s.push_image("acme/app", "v1", "after the lease").await;
}

#[tokio::test]
async fn clearing_the_fence_lets_pushes_through_again() {
    let cell = Cell::start(&["acme"]).await;
    let (status, _) = cell
        .admin_json(Method::PUT, "/admin/v1/tenants/acme/fence", None)
        .await;
    assert_eq!(status, 200);
    let v = cell.fence("acme").await;
    assert_eq!(v["retry_after_secs"], 5, "the default: {v}");
    let r = cell
        .s
        .req(Method::POST, "/v2/acme/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    expect_fenced(&Outcome::of(r).await, 5, "fenced");

    let (status, v) = cell
        .admin_json(Method::DELETE, "/admin/v1/tenants/acme/fence", None)
        .await;
    assert_eq!(status, 200, "{v}");
    let v = cell.fence("acme").await;
    assert_eq!(
        (&v["fenced"], &v["applied"]),
        (&json!(false), &json!(false))
    );
    assert!(v["since"].is_null());
    cell.s.push_image("acme/app", "v1", "after").await;

    // Out-of-range Retry-After is refused; an unknown tenant is not found.
    let (status, v) = cell
        .admin_json(
            Method::PUT,
            "/admin/v1/tenants/acme/fence",
            Some(json!({"retry_after_secs": 61})),
        )
        .await;
    assert_eq!((status, &v["errors"][0]["code"]), (400, &json!("INVALID")));
    let (status, _) = cell
        .admin_json(Method::PUT, "/admin/v1/tenants/nobody/fence", None)
        .await;
    assert_eq!(status, 404);
    let r = cell
        .http
        .get(format!("{}/admin/v1/tenants/acme/fence", cell.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the admin token is required");
}

#[tokio::test]
async fn writes_in_flight_counts_a_write_held_open_until_it_finishes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cell = Cell::start(&["acme"]).await;
    let session = open_upload(&cell.s, "acme/app").await;
    // A PATCH whose body arrives in two halves, the second held back.
    let addr = cell.s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {session} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 10\r\nConnection: close\r\n\r\nfirst"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut counted = false;
    for _ in 0..100 {
        if cell.fence("acme").await["writes_in_flight"] == 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the open PATCH is a write in flight");

    // The fence stops new writes; the one that passed stays counted.
    let (status, _) = cell
        .admin_json(Method::PUT, "/admin/v1/tenants/acme/fence", None)
        .await;
    assert_eq!(status, 200);
    let r = cell
        .s
        .req(Method::POST, "/v2/acme/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    expect_fenced(&Outcome::of(r).await, 5, "a new write");
    let v = cell.fence("acme").await;
    assert_eq!(
        (&v["applied"], &v["writes_in_flight"]),
        (&json!(true), &json!(1))
    );

    sock.write_all(b"-half").await.unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(cell.fence("acme").await["writes_in_flight"], 0);
}

/// Pushes to cell `a` what the export tests move: an image, an index of
/// two images with a referrer of the index, a lone blob in a repository of
/// its own, a nested repository; and the accounts.
async fn fill(a: &Cell) -> (String, String, String) {
    a.directory
        .update_tenant(
            "acme",
            &serde_json::from_value(json!({
                "quota": {"bytes": 1_000_000_000u64, "repositories": 50},
                "concurrency_share": 0.5,
                "immutable_tags": [{"tag": "release-.*"}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    a.directory
        .put_user(
            "acme",
            "alice",
            Some("alice-password"),
            &[RoleSpec::tenant_wide(Role::Push)],
        )
        .await
        .unwrap();
    a.directory
        .create_robot(
            "acme",
            "ci",
            vec![wharf_auth::parse_grant("acme/app:pull,push").unwrap()],
            None,
        )
        .await
        .unwrap();
    let s = &a.s;
    s.push_image("acme/app", "v1", "one").await;
    let (b1, d1) = s.push_image("acme/app", "amd64", "amd").await;
    let (b2, d2) = s.push_image("acme/app", "arm64", "arm").await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d1}","size":{}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{d2}","size":{}}}]}}"#,
        b1.len(),
        b2.len()
    );
    let r = s.put_manifest("acme/app", "multi", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201);
    let index_digest = sha256(index.as_bytes());
    let sig_cfg = s.push_blob("acme/app", b"{\"sig\":true}").await;
    let sig_layer = s.push_blob("acme/app", b"signature").await;
    let sig = image_manifest(
        &sig_cfg,
        12,
        &sig_layer,
        9,
        &format!(
            r#","subject":{{"mediaType":"{OCI_INDEX}","digest":"{index_digest}","size":{}}}"#,
            index.len()
        ),
    );
    let sig_digest = sha256(sig.as_bytes());
    let r = s
        .put_manifest("acme/app", &sig_digest, OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    s.push_blob("acme/lonely", b"a blob no manifest uses").await;
    s.push_image("acme/team/web", "latest", "web").await;
    // A pull, so a pull time is recorded and exported.
    let r = s
        .req(Method::GET, "/v2/acme/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (d1, index_digest, sig_digest)
}

/// Copies every blob line's bytes from `a` to `b` under hold `hold`.
async fn copy_blobs(a: &Cell, b: &Cell, lines: &[String], hold: &str) {
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["kind"] != "blob" {
            continue;
        }
        let d = v["digest"].as_str().unwrap();
        let bytes = a
            .admin_req(Method::GET, &format!("/admin/v1/blobs/{d}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, v["size"].as_u64().unwrap());
        let r = b
            .admin_req(Method::PUT, &format!("/admin/v1/blobs/{d}?hold={hold}"))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(r.status() == 201 || r.status() == 200, "{}", r.status());
    }
}

fn kinds(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["kind"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn export_and_import_between_two_servers_reproduce_the_tenant_exactly() {
    let a = Cell::start(&["acme"]).await;
    let b = Cell::start(&[]).await;
    let (child, index_digest, sig_digest) = fill(&a).await;
    // Later than every push on `a`: an import that stamped its own times
    // would show.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The recorded pull lands off the request path.
    let mut lines = a.export("acme").await;
    for _ in 0..50 {
        if lines.iter().any(|l| l.contains("\"last_pulled\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        lines = a.export("acme").await;
    }
    assert!(
        lines.iter().any(|l| l.contains("\"last_pulled\"")),
        "a pull time"
    );

    // The order: accounts, then per repository its lines, children and
    // subjects before what needs them.
    let k = kinds(&lines);
    assert_eq!(&k[..3], ["tenant", "user", "robot"]);
    assert!(lines[1].contains("password_hash") && lines[2].contains("secret_hash"));
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains("\"kind\":\"manifest\"") && l.contains(needle))
            .unwrap()
    };
    assert!(
        pos(&format!("\"digest\":\"{child}\"")) < pos(&format!("\"digest\":\"{index_digest}\""))
    );
    assert!(
        pos(&format!("\"digest\":\"{index_digest}\""))
            < pos(&format!("\"digest\":\"{sig_digest}\""))
    );
    let repos: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("\"kind\":\"repository\""))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(repos, ["acme/app", "acme/lonely", "acme/team/web"]);

    // A manifest before its blobs are there is refused, naming the digest.
    let (status, v) = b.import("acme", "merge", &lines).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("sha256:"),
        "{v}"
    );
    assert!(
        b.directory.tenant("acme").is_some(),
        "the accounts came first"
    );

    copy_blobs(&a, &b, &lines, "move-1").await;
    let (status, v) = b.import("acme", "merge", &lines).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["manifests"]["created"], 6, "{v}");
    assert_eq!(v["tags"]["created"], 5, "{v}");
    // The refused import had got as far as the accounts and the first
    // repository: they stay, and this pass finds them as they should be.
    assert_eq!(v["users"]["unchanged"], 1, "{v}");
    assert_eq!(v["robots"]["unchanged"], 1, "{v}");
    assert_eq!(v["repositories"]["created"], 2, "{v}");
    assert_eq!(
        b.export("acme").await,
        lines,
        "B's export is A's, line for line"
    );

    // Again: nothing to do.
    let (status, v) = b.import("acme", "merge", &lines).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["created"], &v["updated"], &v["deleted"]),
        (&json!(0), &json!(0), &json!(0)),
        "{v}"
    );
    assert!(v["unchanged"].as_u64().unwrap() > 20, "{v}");

    // B serves the tenant: the index by tag, its referrer, the same bytes.
    let from = |c: &Cell| {
        let c = c.s.req(Method::GET, "/v2/acme/app/manifests/multi");
        async move { c.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(from(&b).await, from(&a).await);
    let r =
        b.s.req(
            Method::GET,
            &format!("/v2/acme/app/referrers/{index_digest}"),
        )
        .send()
        .await
        .unwrap();
    let refs: Value = r.json().await.unwrap();
    assert_eq!(refs["manifests"][0]["digest"], sig_digest.as_str());
    assert_eq!(
        a.usage("acme").await["bytes"],
        b.usage("acme").await["bytes"]
    );
    let (status, v) = b
        .admin_json(Method::DELETE, "/admin/v1/holds/move-1", None)
        .await;
    assert_eq!(status, 200);
    assert!(v["released"].as_u64().unwrap() > 5, "{v}");
}

#[tokio::test]
async fn a_sync_import_deletes_what_was_removed_on_the_source() {
    let a = Cell::start(&["acme"]).await;
    let b = Cell::start(&[]).await;
    let (_, _, sig_digest) = fill(&a).await;
    let lines = a.export("acme").await;
    copy_blobs(&a, &b, &lines, "move-2").await;
    assert_eq!(b.import("acme", "merge", &lines).await.0, 200);

    // On A: a tag, a manifest, a repository and a user go.
    let r =
        a.s.req(Method::DELETE, "/v2/acme/app/manifests/v1")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    let r =
        a.s.req(
            Method::DELETE,
            &format!("/v2/acme/app/manifests/{sig_digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (status, _) = a
        .admin_json(
            Method::DELETE,
            "/admin/v1/tenants/acme/repositories/acme/lonely",
            None,
        )
        .await;
    assert_eq!(status, 200);
    a.directory.delete_user("acme", "alice").await.unwrap();
    // The final pass of a move runs fenced on both cells: the admin API's
    // export and import are not writes the fence stops.
    for cell in [&a, &b] {
        let (status, _) = cell
            .admin_json(Method::PUT, "/admin/v1/tenants/acme/fence", None)
            .await;
        assert_eq!(status, 200);
    }
    let lines = a.export("acme").await;

    // A merge leaves B's extra content; a sync removes it.
    let (status, v) = b.import("acme", "merge", &lines).await;
    assert_eq!((status, &v["deleted"]), (200, &json!(0)), "{v}");
    assert_ne!(b.export("acme").await, lines);
    let (status, v) = b.import("acme", "sync", &lines).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tags"]["deleted"], 1, "{v}");
    assert_eq!(v["manifests"]["deleted"], 1, "{v}");
    assert_eq!(v["repositories"]["deleted"], 1, "{v}");
    assert_eq!(v["users"]["deleted"], 1, "{v}");
    assert!(v["blobs"]["deleted"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(b.export("acme").await, lines, "B mirrors A");
    assert_eq!(
        b.fence("acme").await["fenced"],
        true,
        "B keeps its own fence"
    );
    let r =
        b.s.req(Method::GET, "/v2/acme/app/manifests/v1")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_blob_put_with_the_wrong_digest_is_refused_and_stores_nothing() {
    let cell = Cell::start(&["acme"]).await;
    let wrong = sha256(b"other bytes");
    let r = cell
        .admin_req(Method::PUT, &format!("/admin/v1/blobs/{wrong}"))
        .body(b"these bytes".to_vec())
        .send()
        .await
        .unwrap();
    let o = Outcome::of(r).await;
    o.expect(400, "DIGEST_INVALID", "mismatch");
    assert!(!cell.stored(&wrong).await);
    assert!(!cell.stored(&sha256(b"these bytes")).await);
    let r = cell
        .admin_req(Method::GET, &format!("/admin/v1/blobs/{wrong}"))
        .send()
        .await
        .unwrap();
    Outcome::of(r)
        .await
        .expect(404, "BLOB_UNKNOWN", "not stored");

    let right = sha256(b"these bytes");
    for (want, written) in [(201, true), (200, false)] {
        let r = cell
            .admin_req(Method::PUT, &format!("/admin/v1/blobs/{right}"))
            .body(b"these bytes".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        let v: Value = r.json().await.unwrap();
        assert_eq!((&v["size"], &v["written"]), (&json!(11), &json!(written)));
    }
    let r = cell
        .admin_req(Method::HEAD, &format!("/admin/v1/blobs/{right}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "content-length")),
        (200, "11".into())
    );
    let r = cell
        .admin_req(Method::PUT, "/admin/v1/blobs/sha256:nope")
        .body("x")
        .send()
        .await
        .unwrap();
    Outcome::of(r)
        .await
        .expect(400, "DIGEST_INVALID", "bad digest");
}

#[tokio::test]
async fn a_named_hold_keeps_an_unreferenced_blob_through_gc_until_released() {
    let cell = Cell::start(&["acme"]).await;
    let bytes = b"copied ahead of its manifest".to_vec();
    let d = sha256(&bytes);
    let r = cell
        .admin_req(Method::PUT, &format!("/admin/v1/blobs/{d}?hold=move-7"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A review of its content is due at once (linked and unlinked again,
    // as a sync would), and the collector reviews with no delay.
    let repo: wharf_core::RepoName = "acme/app".parse().unwrap();
    let digest: wharf_core::Digest = d.parse().unwrap();
    cell.meta
        .link_blob(&repo, &digest, bytes.len() as u64)
        .await
        .unwrap();
    assert!(cell.meta.unlink_blob(&repo, &digest).await.unwrap());
    let gc = cell.collector();
    gc.scan_orphans().await.unwrap();
    let pass = gc.run_pass(false, None).await.unwrap();
    assert!(pass.reviewed >= 1, "{pass:?}");
    assert_eq!(pass.deleted, 0, "{pass:?}");
    assert!(cell.stored(&d).await, "the hold kept it");

    let (status, v) = cell
        .admin_json(Method::DELETE, "/admin/v1/holds/move-7", None)
        .await;
    assert_eq!((status, &v["released"]), (200, &json!(1)), "{v}");
    let pass = gc.run_pass(false, None).await.unwrap();
    assert_eq!(pass.deleted, 1, "{pass:?}");
    assert!(!cell.stored(&d).await, "released, it is collected");
    let (status, v) = cell
        .admin_json(Method::DELETE, "/admin/v1/holds/bad%20id", None)
        .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn purges_bring_usage_to_zero_and_the_collector_reclaims_the_bytes() {
    let cell = Cell::start(&["acme", "beta"]).await;
    let s = &cell.s;
    s.push_image("acme/a", "v1", "a").await;
    s.push_image("acme/b", "v1", "b").await;
    s.push_image("beta/x", "v1", "x").await;
    let a_layer = sha256(b"layer of a");
    let b_layer = sha256(b"layer of b");

    let (status, v) = cell
        .admin_json(
            Method::DELETE,
            "/admin/v1/tenants/acme/repositories/acme/a",
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["repositories"], &v["manifests"], &v["tags"], &v["blobs"]),
        (&json!(1), &json!(1), &json!(1), &json!(2)),
        "{v}"
    );
    assert_eq!(cell.usage("acme").await["repositories"], 1);
    let r = s
        .req(Method::GET, "/v2/acme/a/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = cell
        .admin_json(
            Method::DELETE,
            "/admin/v1/tenants/acme/repositories/acme/a",
            None,
        )
        .await;
    assert_eq!(status, 404, "gone already");
    let (status, _) = cell
        .admin_json(
            Method::DELETE,
            "/admin/v1/tenants/acme/repositories/beta/x",
            None,
        )
        .await;
    assert_eq!(status, 400, "another tenant's repository");

    let (status, v) = cell
        .admin_json(Method::DELETE, "/admin/v1/tenants/acme/content", None)
        .await;
    assert_eq!((status, &v["repositories"]), (200, &json!(1)), "{v}");
    let u = cell.usage("acme").await;
    assert_eq!(
        (&u["bytes"], &u["repositories"]),
        (&json!(0), &json!(0)),
        "{u}"
    );
    assert!(cell.directory.tenant("acme").is_some(), "the tenant stays");
    assert_ne!(cell.usage("beta").await["bytes"], 0);

    assert!(cell.stored(&a_layer).await && cell.stored(&b_layer).await);
    let pass = cell.collector().run_pass(false, None).await.unwrap();
    assert!(pass.deleted >= 6, "{pass:?}");
    assert!(!cell.stored(&a_layer).await && !cell.stored(&b_layer).await);
    assert!(cell.stored(&sha256(b"layer of x")).await, "beta's stay");
}

#[tokio::test]
async fn per_tenant_metrics_count_requests_bytes_stored_bytes_and_the_fence() {
    let cell = Cell::start(&["acme", "beta"]).await;
    let s = &cell.s;
    // Pushes: 2 blob uploads + 1 manifest PUT.
    let (body, _) = s.push_image("acme/app", "v1", "m").await;
    let pushed_in = b"{\"seed\":\"m\"}".len() + b"layer of m".len() + body.len();
    // Pulls: 3 manifest GETs.
    for _ in 0..3 {
        let r = s
            .req(Method::GET, "/v2/acme/app/manifests/v1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), body);
    }
    // Nothing for a name that is not a tenant, nor for the catalog.
    s.req(Method::GET, "/v2/nobody/app/tags/list")
        .send()
        .await
        .unwrap();
    s.req(Method::GET, "/v2/_catalog").send().await.unwrap();

    let stored = cell.usage("acme").await["bytes"].as_f64().unwrap();
    let mut m = String::new();
    for _ in 0..100 {
        m = cell.metrics().await;
        if sample(&m, "wharf_tenant_stored_bytes{tenant=\"acme\"}") == Some(stored) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let get = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("{series} in\n{m}"));
    assert_eq!(
        get("wharf_tenant_requests_total{tenant=\"acme\",class=\"pull\"}"),
        3.0
    );
    assert_eq!(
        get("wharf_tenant_requests_total{tenant=\"acme\",class=\"push\"}"),
        3.0
    );
    assert_eq!(
        get("wharf_tenant_bytes_total{tenant=\"acme\",direction=\"in\"}"),
        pushed_in as f64
    );
    assert_eq!(
        get("wharf_tenant_bytes_total{tenant=\"acme\",direction=\"out\"}"),
        (3 * body.len()) as f64
    );
    assert_eq!(get("wharf_tenant_stored_bytes{tenant=\"acme\"}"), stored);
    assert_eq!(get("wharf_tenant_stored_bytes{tenant=\"beta\"}"), 0.0);
    assert_eq!(
        get("wharf_tenant_requests_total{tenant=\"beta\",class=\"pull\"}"),
        0.0
    );
    assert_eq!(get("wharf_tenant_fenced{tenant=\"acme\"}"), 0.0);
    assert!(!m.contains("tenant=\"nobody\""), "{m}");
    assert!(!m.contains("tenant=\"\""), "{m}");

    cell.admin_json(Method::PUT, "/admin/v1/tenants/acme/fence", None)
        .await;
    let m = cell.metrics().await;
    assert_eq!(
        sample(&m, "wharf_tenant_fenced{tenant=\"acme\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "wharf_tenant_fenced{tenant=\"beta\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn an_import_refuses_lines_out_of_place_or_outside_the_tenant() {
    let cell = Cell::start(&["acme"]).await;
    let lines = cell.export("acme").await;
    assert_eq!(kinds(&lines), ["tenant"]);
    let repo_line =
        json!({"kind": "repository", "name": "other/app", "created": "2024-01-01T00:00:00Z"});
    let mut bad = lines.clone();
    bad.push(repo_line.to_string());
    let (status, v) = cell.import("acme", "merge", &bad).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{v}"
    );
    let (status, v) = cell.import("acme", "merge", &[repo_line.to_string()]).await;
    assert_eq!(status, 400, "no tenant line first: {v}");
    let (status, v) = cell.import("acme", "mirror", &lines).await;
    assert_eq!(status, 400, "{v}");
}

/// An admin call as tenant account `user` with `password` (HTTP Basic);
/// the status and the error code, if any.
async fn as_account(
    cell: &Cell,
    user: Option<(&str, &str)>,
    method: Method,
    path: &str,
) -> (u16, String) {
    let mut r = cell.http.request(method, format!("{}{path}", cell.admin));
    if let Some((u, p)) = user {
        r = r.basic_auth(u, Some(p));
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let code = v["errors"][0]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

#[tokio::test]
async fn a_tenant_admin_deletes_its_own_repositories_and_content_and_nothing_else() {
    let cell = Cell::start(&["acme", "beta"]).await;
    let s = &cell.s;
    let d = &cell.directory;
    let pattern = |p: &str| RoleSpec {
        role: Role::Admin,
        repositories: Some(p.parse().unwrap()),
    };
    d.put_user(
        "acme",
        "alice",
        Some("alice-password"),
        &[RoleSpec::tenant_wide(Role::Admin)],
    )
    .await
    .unwrap();
    d.put_user(
        "acme",
        "bob",
        Some("bob-password"),
        &[RoleSpec::tenant_wide(Role::Push)],
    )
    .await
    .unwrap();
    d.put_user(
        "acme",
        "carol",
        Some("carol-password"),
        &[pattern("acme/team/*")],
    )
    .await
    .unwrap();
    d.put_user(
        "beta",
        "eve",
        Some("eve-password"),
        &[RoleSpec::tenant_wide(Role::Admin)],
    )
    .await
    .unwrap();
    for repo in ["acme/app", "acme/team/x", "acme/keep", "beta/app"] {
        s.push_image(repo, "v1", repo).await;
    }
    let alice = Some(("alice", "alice-password"));
    let repo_path = |r: &str| format!("/admin/v1/tenants/acme/repositories/{r}");

    // Without credentials: 401; with a wrong password: 401.
    for (user, what) in [
        (None, "anonymous"),
        (Some(("alice", "wrong-password")), "wrong password"),
    ] {
        for path in [
            repo_path("acme/app"),
            "/admin/v1/tenants/acme/content".into(),
        ] {
            let got = as_account(&cell, user, Method::DELETE, &path).await;
            assert_eq!(got, (401, "UNAUTHORIZED".into()), "{what} {path}");
        }
    }
    // Another tenant's admin: 403 on every route of acme.
    let eve = Some(("eve", "eve-password"));
    for (m, path) in [
        (Method::DELETE, repo_path("acme/app")),
        (Method::DELETE, "/admin/v1/tenants/acme/content".into()),
        (Method::GET, "/admin/v1/tenants/acme/usage".into()),
    ] {
        assert_eq!(
            as_account(&cell, eve, m.clone(), &path).await,
            (403, "DENIED".into()),
            "eve: {m} {path}"
        );
    }
    // Own tenant, but not a route open to tenant accounts: 403.
    for (m, path) in [
        (Method::GET, "/admin/v1/tenants"),
        (Method::GET, "/admin/v1/tenants/acme"),
        (Method::DELETE, "/admin/v1/tenants/acme"),
        (Method::GET, "/admin/v1/tenants/acme/users"),
        (Method::GET, "/admin/v1/tenants/acme/export"),
        (Method::PUT, "/admin/v1/tenants/acme/fence"),
    ] {
        assert_eq!(
            as_account(&cell, alice, m.clone(), path).await,
            (403, "DENIED".into()),
            "alice: {m} {path}"
        );
    }
    // Rights inside the tenant: push is not delete; a narrower admin role
    // deletes its repositories only, and not the whole content.
    let bob = Some(("bob", "bob-password"));
    assert_eq!(
        as_account(&cell, bob, Method::DELETE, &repo_path("acme/app"))
            .await
            .0,
        403
    );
    assert_eq!(
        as_account(&cell, bob, Method::GET, "/admin/v1/tenants/acme/usage")
            .await
            .0,
        200,
        "any account of the tenant reads its usage"
    );
    let carol = Some(("carol", "carol-password"));
    assert_eq!(
        as_account(&cell, carol, Method::DELETE, &repo_path("acme/app"))
            .await
            .0,
        403
    );
    assert_eq!(
        as_account(
            &cell,
            carol,
            Method::DELETE,
            "/admin/v1/tenants/acme/content"
        )
        .await
        .0,
        403
    );
    assert_eq!(
        as_account(&cell, carol, Method::DELETE, &repo_path("acme/team/x"))
            .await
            .0,
        200
    );

    // The tenant admin deletes a repository: gone, and usage follows at once.
    let before = cell.usage("acme").await;
    assert_eq!(
        as_account(&cell, alice, Method::DELETE, &repo_path("acme/app"))
            .await
            .0,
        200
    );
    let after = cell.usage("acme").await;
    assert_eq!(after["repositories"], 1, "{after}");
    assert!(
        after["bytes"].as_u64().unwrap() < before["bytes"].as_u64().unwrap(),
        "{before} -> {after}"
    );
    let r = s
        .req(Method::GET, "/v2/acme/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Under an immutable-tag rule, the tenant admin cannot purge what it
    // guards; the operator can.
    let (status, v) = cell
        .admin_json(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"immutable_tags": [{"tag": "v.*"}]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        as_account(&cell, alice, Method::DELETE, &repo_path("acme/keep")).await,
        (403, "DENIED".into())
    );
    assert_eq!(
        as_account(
            &cell,
            alice,
            Method::DELETE,
            "/admin/v1/tenants/acme/content"
        )
        .await,
        (403, "DENIED".into())
    );
    let (status, _) = cell
        .admin_json(
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"immutable_tags": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        as_account(
            &cell,
            alice,
            Method::DELETE,
            "/admin/v1/tenants/acme/content"
        )
        .await
        .0,
        200
    );
    let u = cell.usage("acme").await;
    assert_eq!(
        (&u["bytes"], &u["repositories"]),
        (&json!(0), &json!(0)),
        "{u}"
    );
    // The other tenant is untouched.
    let r = s
        .req(Method::GET, "/v2/beta/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(cell.usage("beta").await["repositories"], 1);
}

/// `method path` on `cell`'s admin port as `user`, with a JSON `body`:
/// the status and the answer.
async fn account_json(
    cell: &Cell,
    user: (&str, &str),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = cell
        .http
        .request(method, format!("{}{path}", cell.admin))
        .basic_auth(user.0, Some(user.1));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_tenant_admin_sets_its_own_notification_endpoints_on_the_public_internet_only() {
    let cell = Cell::start(&["acme", "beta"]).await;
    let d = &cell.directory;
    for (tenant, user, role) in [
        ("acme", "alice", Role::Admin),
        ("acme", "bob", Role::Push),
        ("beta", "eve", Role::Admin),
    ] {
        d.put_user(
            tenant,
            user,
            Some(&format!("{user}-password")),
            &[RoleSpec::tenant_wide(role)],
        )
        .await
        .unwrap();
    }
    let alice = ("alice", "alice-password");
    let hooks = "/admin/v1/tenants/acme/notifications";
    // The operator's endpoint, on the operator's own network.
    let (status, v) = cell
        .admin_json(
            Method::PUT,
            &format!("{hooks}/ops"),
            Some(json!({"url": "http://10.0.0.5:9000/hook"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["set_by"], Value::Null, "{v}");

    // Not public: refused when written, with the rule named.
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://[::1]:9000/hook",
        "http://localhost:5001/admin/v1/tenants",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5:9000/hook",
        "http://[::ffff:192.168.1.1]/",
    ] {
        let (status, v) = account_json(
            &cell,
            alice,
            Method::PUT,
            &format!("{hooks}/ci"),
            Some(json!({ "url": url })),
        )
        .await;
        assert_eq!(status, 400, "{url}: {v}");
        let m = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(m.contains("public internet"), "{url}: {m}");
    }
    // Public: written, marked as the tenant's, its secret shown once.
    let (status, v) = account_json(
        &cell,
        alice,
        Method::PUT,
        &format!("{hooks}/ci"),
        Some(json!({"url": "https://93.184.216.34/hook"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["set_by"], "alice", "{v}");
    assert!(
        v["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{v}"
    );
    let targets = d.notify_targets("acme").unwrap();
    let public_only: Vec<(String, bool)> = targets
        .iter()
        .map(|t| (t.id.clone(), t.public_only))
        .collect();
    assert!(
        public_only.contains(&("acme/ci".into(), true)),
        "{public_only:?}"
    );
    assert!(
        public_only.contains(&("acme/ops".into(), false)),
        "{public_only:?}"
    );

    // It reads the list (the operator's included), but may not change the
    // operator's endpoint.
    let (status, v) = account_json(&cell, alice, Method::GET, hooks, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(2), "{v}");
    for (m, body) in [
        (Method::PUT, Some(json!({"url": "https://93.184.216.34/x"}))),
        (Method::DELETE, None),
    ] {
        let (status, v) =
            account_json(&cell, alice, m.clone(), &format!("{hooks}/ops"), body).await;
        assert_eq!(
            (status, v["errors"][0]["code"].as_str()),
            (409, Some("CONFLICT")),
            "{m}: {v}"
        );
    }
    // Other accounts: a pusher of the tenant, and another tenant's admin.
    for (user, path) in [
        (("bob", "bob-password"), hooks.to_string()),
        (("eve", "eve-password"), hooks.to_string()),
        (("eve", "eve-password"), format!("{hooks}/ci")),
    ] {
        let (status, v) = account_json(&cell, user, Method::GET, &path, None).await;
        assert_eq!(status, 403, "{}: {path}: {v}", user.0);
    }
    // Its own endpoint it deletes.
    let (status, _) =
        account_json(&cell, alice, Method::DELETE, &format!("{hooks}/ci"), None).await;
    assert_eq!(status, 204);
    assert_eq!(d.notify_endpoints("acme").unwrap().len(), 1);
}

/// `POST /auth/token` on `cell` with `form` (and the service); the status
/// and the answer's JSON.
async fn post_token(cell: &Cell, form: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("service", SERVICE), ("client_id", "test")];
    all.extend_from_slice(form);
    let r = cell
        .s
        .req(Method::POST, "/auth/token")
        .form(&all)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A password login of `user` asking for a refresh token: (access token,
/// refresh token).
async fn offline_login(cell: &Cell, user: &str, scope: &str) -> (String, String) {
    let (status, v) = post_token(
        cell,
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", &format!("{user}-password")),
            ("access_type", "offline"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "login of {user}: {v}");
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// The status of a manifest pull on `cell` with bearer `token`.
async fn pull_with(cell: &Cell, token: &str, path: &str) -> u16 {
    cell.s
        .req(Method::GET, path)
        .header("Accept", OCI_MANIFEST)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Pushes a small image tagged `tag` into `acme/app` with bearer `token`
/// (monolithic blob uploads); the manifest's status.
async fn push_with(cell: &Cell, token: &str, tag: &str) -> u16 {
    let config = format!("{{\"seed\":\"{tag}\"}}");
    let layer = format!("layer of {tag}");
    for blob in [&config, &layer] {
        let r = cell
            .s
            .req(
                Method::POST,
                &format!(
                    "/v2/acme/app/blobs/uploads/?digest={}",
                    sha256(blob.as_bytes())
                ),
            )
            .bearer_auth(token)
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        if r.status() != 201 {
            return r.status().as_u16();
        }
    }
    let body = image_manifest(
        &sha256(config.as_bytes()),
        config.len(),
        &sha256(layer.as_bytes()),
        layer.len(),
        "",
    );
    cell.s
        .req(Method::PUT, &format!("/v2/acme/app/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One copy pass as a move makes it: export from `a`, blobs to `b`, the
/// records imported in `mode`.
async fn pass(a: &Cell, b: &Cell, mode: &str) -> Value {
    let lines = a.export("acme").await;
    copy_blobs(a, b, &lines, "move-tokens").await;
    let (status, v) = b.import("acme", mode, &lines).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(b.export("acme").await, lines, "B mirrors A");
    v
}

#[tokio::test]
async fn a_users_access_and_refresh_tokens_from_one_cell_are_honoured_by_the_other() {
    let key = SigningKey::generate();
    let a = Cell::start_with(&["acme"], Some(&key)).await;
    let b = Cell::start_with(&[], Some(&key)).await;
    let (push, pull) = (
        &[RoleSpec::tenant_wide(Role::Push)],
        &[RoleSpec::tenant_wide(Role::Pull)],
    );
    for (user, roles) in [("alice", push), ("bob", pull), ("carol", pull)] {
        a.directory
            .put_user("acme", user, Some(&format!("{user}-password")), roles)
            .await
            .unwrap();
    }
    // Bob's password changed once: his generation is not the first.
    a.directory
        .put_user("acme", "bob", Some("bob-password"), pull)
        .await
        .unwrap();
    let (alice_tok, alice_rt) = offline_login(&a, "alice", "repository:acme/app:pull,push").await;
    assert_eq!(
        push_with(&a, &alice_tok, "v1").await,
        201,
        "alice pushes on A"
    );
    let scope = "repository:acme/app:pull";
    let (bob_tok, bob_rt) = offline_login(&a, "bob", scope).await;
    let (carol_tok, carol_rt) = offline_login(&a, "carol", scope).await;
    // A refresh token already used on A (rotated there) must not be usable
    // on B; its successor must.
    let (status, v) = post_token(
        &a,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &bob_rt),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let bob_rt2 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(bob_rt2, bob_rt);

    // Pre-copy, then Carol is deleted on A, then the fenced final pass.
    let v = pass(&a, &b, "merge").await;
    assert_eq!(v["users"]["created"], 3, "{v}");
    assert_eq!(
        v["refresh_tokens"]["created"], 3,
        "alice, bob's second, carol: {v}"
    );
    a.directory.delete_user("acme", "carol").await.unwrap();
    // Alice refreshes on A between the passes: B must end with her new
    // refresh token only.
    let (status, v) = post_token(
        &a,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &alice_rt),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let alice_rt2 = v["refresh_token"].as_str().unwrap().to_string();
    let (status, _) = a
        .admin_json(Method::PUT, "/admin/v1/tenants/acme/fence", None)
        .await;
    assert_eq!(status, 200);
    // Under the fence A's refresh tokens stay as they are: a refresh
    // answers with the same token, so the last pass copies them exactly.
    let (status, v) = post_token(
        &a,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &bob_rt2),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["refresh_token"],
        bob_rt2.as_str(),
        "not rotated under the fence"
    );
    let v = pass(&a, &b, "sync").await;
    assert_eq!(v["users"]["deleted"], 1, "carol: {v}");
    assert_eq!(
        (
            &v["refresh_tokens"]["created"],
            &v["refresh_tokens"]["deleted"]
        ),
        (&json!(1), &json!(1)),
        "alice's new one in, her used one out: {v}"
    );

    // Ids, generations, hashes and grants came along: A's tokens work on B.
    let records = |c: &Cell| {
        let lines = c.directory.export_accounts("acme").unwrap();
        lines.users
    };
    assert_eq!(
        records(&a),
        records(&b),
        "the user records, ids and generations included"
    );
    assert_eq!(
        pull_with(&b, &bob_tok, "/v2/acme/app/manifests/v1").await,
        200
    );
    assert_eq!(
        pull_with(&b, &alice_tok, "/v2/acme/app/manifests/v1").await,
        200
    );
    assert_eq!(
        push_with(&b, &alice_tok, "v2").await,
        201,
        "alice's push grant holds on B"
    );
    for (rt, want) in [(&alice_rt, 401), (&alice_rt2, 200)] {
        let (status, v) = post_token(
            &b,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", scope),
            ],
        )
        .await;
        assert_eq!(status, want, "alice's refresh tokens on B: {v}");
    }
    // Bob's password is the same on B (the hash came along).
    let (status, _) = post_token(
        &b,
        &[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "bob-password"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "bob's password on B");
    // His current refresh token works on B, once; the used one never.
    let (status, _) = post_token(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &bob_rt),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 401, "a refresh token used on A is refused on B");
    let (status, v) = post_token(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &bob_rt2),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let fresh = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        pull_with(&b, &fresh, "/v2/acme/app/manifests/v1").await,
        200
    );
    assert_ne!(
        v["refresh_token"],
        bob_rt2.as_str(),
        "B is not fenced: it rotates"
    );
    // Carol, deleted on A before the last pass, is nobody on B.
    assert_eq!(
        pull_with(&b, &carol_tok, "/v2/acme/app/manifests/v1").await,
        401
    );
    let (status, _) = post_token(
        &b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &carol_rt),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 401, "carol's refresh token");
    let (status, _) = post_token(
        &b,
        &[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "carol-password"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, 401, "carol's password");
}
