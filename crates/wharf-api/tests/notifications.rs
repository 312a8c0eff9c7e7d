//! Event notifications on a real server, delivered to real HTTP receivers
//! started here on `127.0.0.1:0`: what each event carries (every field)
//! and that its signature verifies; a receiver that is slow or down never
//! holds a push up; retries deliver once a receiver is back; a full queue
//! drops and counts (on the admin port's `/metrics`); a tenant's endpoints
//! get that tenant's events only; and the admin API's notification routes.
//!
//! Receivers verify signatures with an HMAC written here from its
//! definition over SHA-256, not with the code that signs.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use wharf_api::auth::{Auth, Users};
use wharf_auth::{BasicChallenge, Htpasswd, LimiterConfig, LoginLimiter};
use wharf_meta::MetaStore;
use wharf_notify::{Notifier, NotifyConfig, Secret, Target};
use wharf_tenants::{Directory, NewTenant, NotifyEndpointInput, Role, RoleSpec};

const NODE: &str = "test-node";
const NODE_SECRET: &str = "node-secret-0123456789";
const ACME_SECRET: &str = "acme-secret-0123456789";
const GLOBEX_SECRET: &str = "globex-secret-0123456789";

// ---- a receiver ----

/// One delivery as a receiver saw it.
#[derive(Clone, Debug)]
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    /// The one event of the envelope.
    fn event(&self) -> Value {
        let v: Value = serde_json::from_slice(&self.body).unwrap();
        let events = v["events"].as_array().expect("an events array");
        assert_eq!(events.len(), 1, "{v}");
        events[0].clone()
    }

    /// Whether its signature verifies with `secret` (checked here from
    /// the HMAC's definition).
    fn verifies(&self, secret: &str) -> bool {
        let ts = self.header("x-wharf-timestamp");
        let mut message = ts.as_bytes().to_vec();
        message.push(b'.');
        message.extend_from_slice(&self.body);
        let expected = format!(
            "sha256={}",
            hex::encode(hmac_sha256(secret.as_bytes(), &message))
        );
        self.header("x-wharf-signature") == expected
    }
}

/// HMAC-SHA256 as RFC 2104 defines it.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// An HTTP receiver that records what it is sent. While shut, it holds
/// every request (it has taken it, it does not answer) until opened.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Delivery>>>,
    /// Requests it is holding now.
    held: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<Semaphore>,
    addr: SocketAddr,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    use std::sync::atomic::Ordering::SeqCst;
    r.held.fetch_add(1, SeqCst);
    r.gate.acquire().await.unwrap().forget();
    r.gate.add_permits(1);
    r.held.fetch_sub(1, SeqCst);
    r.seen.lock().unwrap().push(Delivery { headers, body });
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    async fn on(listener: tokio::net::TcpListener) -> Receiver {
        let r = Receiver {
            seen: Arc::default(),
            held: Arc::default(),
            gate: Arc::new(Semaphore::new(1)),
            addr: listener.local_addr().unwrap(),
        };
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.seen().iter().map(Delivery::event).collect()
    }

    fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn shut(&self) {
        self.gate.acquire().await.unwrap().forget();
    }

    fn open(&self) {
        self.gate.add_permits(1);
    }

    /// Waits until it has seen `n` deliveries (at most 10 s).
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        assert!(
            eventually(Duration::from_secs(10), || self.seen().len() >= n).await,
            "expected {n} deliveries, got {:?}",
            self.events()
        );
        self.seen()
    }
}

async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// An address nobody listens on (for now).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---- the node ----

fn config() -> NotifyConfig {
    NotifyConfig {
        node: NODE.into(),
        // Longer than any receiver here is held shut.
        timeout: Duration::from_secs(20),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        max_attempts: 40,
        ..NotifyConfig::default()
    }
}

fn node_target(url: &str) -> Target {
    Target::new(
        "node-1".into(),
        url,
        Secret::new(NODE_SECRET.as_bytes()),
        false,
    )
    .unwrap()
}

/// Every account's password.
fn pw(user: &str) -> String {
    format!("{user}-password")
}

/// A node with tenants acme and globex (user alice of acme, user gina of
/// globex, robot acme+ci), an operator account `op` in its htpasswd file,
/// anonymous pulls of `acme/*`, request ids, and `notifier`.
struct Node {
    server: Server,
    directory: Directory,
    notifier: Notifier,
    robot_secret: String,
}

impl Node {
    async fn start(config: NotifyConfig, node_targets: Vec<Target>) -> Node {
        let stores = Stores::open().await;
        let meta: Arc<dyn MetaStore> = stores.meta.clone();
        let directory = Directory::open(meta).await.unwrap();
        for name in ["acme", "globex"] {
            directory
                .create_tenant(NewTenant {
                    name: name.into(),
                    ..NewTenant::default()
                })
                .await
                .unwrap();
        }
        let admin = [RoleSpec::tenant_wide(Role::Admin)];
        directory
            .put_user("acme", "alice", Some(&pw("alice")), &admin)
            .await
            .unwrap();
        directory
            .put_user("globex", "gina", Some(&pw("gina")), &admin)
            .await
            .unwrap();
        let grants = vec![wharf_auth::parse_grant("acme/*:pull,push,delete").unwrap()];
        let (_, robot_secret) = directory
            .create_robot("acme", "ci", grants, None)
            .await
            .unwrap();
        let htpasswd =
            Htpasswd::parse(&format!("op:{}\n", bcrypt::hash(pw("op"), 4).unwrap())).unwrap();
        let users = Users::new(htpasswd, None)
            .with_directory(directory.clone())
            .with_limiter(LoginLimiter::new(LimiterConfig {
                client_failures: 1000,
                pair_failures: 1000,
                ..LimiterConfig::default()
            }));
        let notifier = Notifier::new(config, node_targets).unwrap();
        let registry = stores.registry();
        let (d, n) = (directory.clone(), notifier.clone());
        let server = Server::start_over_with_ids(stores, registry, move |s| {
            s.auth = Auth::Htpasswd {
                users: Arc::new(users),
                challenge: BasicChallenge::new("wharf").unwrap(),
                anonymous_pull: wharf_api::auth::parse_patterns(&["acme/*".to_string()])
                    .unwrap()
                    .into(),
            };
            s.directory = Some(d);
            s.notifier = Some(n);
        })
        .await;
        Node {
            server,
            directory,
            notifier,
            robot_secret: robot_secret.expose().to_string(),
        }
    }

    async fn tenant_endpoint(&self, tenant: &str, url: &str, secret: &str, pulls: bool) {
        self.directory
            .put_notify_endpoint(
                tenant,
                "hooks",
                NotifyEndpointInput {
                    url: url.into(),
                    secret: Some(secret.into()),
                    pulls: Some(pulls),
                },
                None,
            )
            .await
            .unwrap();
    }

    /// `method path` as `user` (`None`: anonymous), with request id `id`.
    fn req(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        id: &str,
    ) -> reqwest::RequestBuilder {
        let mut r = self.server.req(method, path).header("x-request-id", id);
        if let Some(u) = user {
            let password = if u == "acme+ci" {
                self.robot_secret.clone()
            } else {
                pw(u)
            };
            r = r.basic_auth(u, Some(password));
        }
        r
    }

    async fn blob(&self, repo: &str, user: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let path = format!("/v2/{repo}/blobs/uploads/?digest={d}");
        let r = self
            .req(Method::POST, &path, Some(user), "blob")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        d
    }

    /// An image manifest over a config and a layer of `seed`, its blobs
    /// pushed.
    async fn image(&self, repo: &str, user: &str, seed: &str) -> String {
        let config = format!("{{\"seed\":\"{seed}\"}}");
        let layer = format!("layer of {seed}");
        let cd = self.blob(repo, user, config.as_bytes()).await;
        let ld = self.blob(repo, user, layer.as_bytes()).await;
        image_manifest(&cd, config.len(), &ld, layer.len(), "")
    }

    /// `PUT` of `manifest` under `reference`; returns the status.
    async fn put(&self, repo: &str, reference: &str, manifest: &str, user: &str, id: &str) -> u16 {
        self.req(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(user),
            id,
        )
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }

    async fn call(&self, method: Method, path: &str, user: Option<&str>, id: &str) -> u16 {
        self.req(method, path, user, id)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Checks `e` field by field against `expected` (every key of an event,
/// `id` and `time` checked for their form), and that it has no other.
#[track_caller]
fn assert_event(e: &Value, expected: Value) {
    let obj = e.as_object().expect("an event object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "actor",
            "digest",
            "id",
            "media_type",
            "node",
            "previous_digest",
            "repository",
            "request_id",
            "size",
            "tag",
            "tenant",
            "time"
        ],
        "{e}"
    );
    let id = e["id"].as_str().unwrap();
    assert!(
        id.len() == 36 && id.bytes().filter(|b| *b == b'-').count() == 4,
        "a UUID: {id}"
    );
    let time = e["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T" && &time[19..20] == ".",
        "RFC 3339 with milliseconds: {time}"
    );
    // Fixed width, so the text orders as the time does.
    let now = std::time::SystemTime::now();
    let (earliest, latest) = (
        wharf_notify::event::rfc3339_millis(now - Duration::from_secs(60)),
        wharf_notify::event::rfc3339_millis(now + Duration::from_secs(1)),
    );
    assert!(
        earliest.as_str() <= time && time <= latest.as_str(),
        "{time} is within the last minute ({earliest} to {latest})"
    );
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&e[k], v, "{k} of {e}");
    }
    assert_eq!(e["node"], NODE);
}

// ---- the tests ----

/// Every kind of event, each field checked, each delivery's signature
/// verified; failed requests make none.
#[tokio::test]
async fn events_carry_every_field_and_a_signature_that_verifies() {
    let node_rx = Receiver::start().await;
    let acme_rx = Receiver::start().await;
    let n = Node::start(config(), vec![node_target(&node_rx.url())]).await;
    n.tenant_endpoint("acme", &acme_rx.url(), ACME_SECRET, false)
        .await;

    // A push by tag, by a tenant's user.
    let m1 = n.image("acme/app", "alice", "one").await;
    let d1 = sha256(m1.as_bytes());
    assert_eq!(
        n.put("acme/app", "v1", &m1, "alice", "req-push-1").await,
        201
    );
    let actor_alice = json!({"kind": "user", "name": "alice"});
    let push1 = json!({
        "action": "manifest.push", "tenant": "acme", "repository": "acme/app",
        "digest": d1, "tag": "v1", "previous_digest": null,
        "media_type": OCI_MANIFEST, "size": m1.len(),
        "actor": actor_alice, "request_id": "req-push-1",
    });
    let got = node_rx.wait_for(1).await;
    assert_event(&got[0].event(), push1.clone());
    assert!(got[0].verifies(NODE_SECRET), "node endpoint signature");
    assert!(!got[0].verifies(ACME_SECRET));
    assert_eq!(
        got[0].header("content-type"),
        "application/vnd.wharf.events.v1+json"
    );
    assert_eq!(got[0].header("x-wharf-event-id"), got[0].event()["id"]);
    assert_eq!(got[0].header("x-wharf-delivery-attempt"), "1");
    let got = acme_rx.wait_for(1).await;
    assert_event(&got[0].event(), push1);
    assert!(got[0].verifies(ACME_SECRET), "tenant endpoint signature");
    assert_eq!(
        got[0].event()["id"],
        node_rx.events()[0]["id"],
        "one event, one id, whichever endpoint"
    );

    // The tag moved to another manifest, by the tenant's robot: a push
    // and then a move.
    let m2 = n.image("acme/app", "acme+ci", "two").await;
    let d2 = sha256(m2.as_bytes());
    assert_eq!(
        n.put("acme/app", "v1", &m2, "acme+ci", "req-move").await,
        201
    );
    let got = node_rx.wait_for(3).await;
    let robot = json!({"kind": "robot", "name": "acme+ci"});
    assert_event(
        &got[1].event(),
        json!({"action": "manifest.push", "digest": d2, "tag": "v1", "previous_digest": null,
               "size": m2.len(), "actor": robot, "request_id": "req-move"}),
    );
    assert_event(
        &got[2].event(),
        json!({"action": "tag.move", "tenant": "acme", "repository": "acme/app",
               "digest": d2, "tag": "v1", "previous_digest": d1,
               "media_type": OCI_MANIFEST, "size": m2.len(), "actor": robot,
               "request_id": "req-move"}),
    );
    assert_ne!(got[1].event()["id"], got[2].event()["id"]);

    // The same manifest again: a push, no move. Then by digest: no tag.
    assert_eq!(
        n.put("acme/app", "v1", &m2, "acme+ci", "req-again").await,
        201
    );
    assert_eq!(
        n.put("acme/app", &d1, &m1, "alice", "req-digest").await,
        201
    );
    let got = node_rx.wait_for(5).await;
    assert_eq!(got[3].event()["action"], "manifest.push");
    assert_eq!(got[3].event()["request_id"], "req-again");
    assert_event(
        &got[4].event(),
        json!({"action": "manifest.push", "digest": d1, "tag": null, "previous_digest": null,
               "size": m1.len(), "actor": actor_alice, "request_id": "req-digest"}),
    );

    // Pulls make no event unless an endpoint asks; HEAD never does.
    assert_eq!(
        n.call(Method::GET, "/v2/acme/app/manifests/v1", None, "req-pull-0")
            .await,
        200
    );
    n.tenant_endpoint("acme", &acme_rx.url(), ACME_SECRET, true)
        .await;
    assert_eq!(
        n.call(Method::HEAD, "/v2/acme/app/manifests/v1", None, "req-head")
            .await,
        200
    );
    assert_eq!(
        n.call(Method::GET, "/v2/acme/app/manifests/v1", None, "req-pull")
            .await,
        200
    );
    let got = acme_rx.wait_for(6).await;
    assert_event(
        &got[5].event(),
        json!({"action": "manifest.pull", "tenant": "acme", "repository": "acme/app",
               "digest": d2, "tag": "v1", "previous_digest": null,
               "media_type": OCI_MANIFEST, "size": m2.len(),
               "actor": {"kind": "anonymous", "name": null}, "request_id": "req-pull"}),
    );
    assert!(got[5].verifies(ACME_SECRET));

    // Deletes, by the operator's own account: the tag (its event names
    // the manifest it pointed at), then a manifest by digest.
    let op = json!({"kind": "operator", "name": "op"});
    assert_eq!(
        n.call(
            Method::DELETE,
            "/v2/acme/app/manifests/v1",
            Some("op"),
            "req-untag"
        )
        .await,
        202
    );
    assert_eq!(
        n.call(
            Method::DELETE,
            &format!("/v2/acme/app/manifests/{d1}"),
            Some("op"),
            "req-del"
        )
        .await,
        202
    );
    let got = node_rx.wait_for(7).await;
    assert_event(
        &got[5].event(),
        json!({"action": "tag.delete", "tenant": "acme", "repository": "acme/app",
               "digest": d2, "tag": "v1", "previous_digest": null,
               "media_type": OCI_MANIFEST, "size": m2.len(), "actor": op,
               "request_id": "req-untag"}),
    );
    assert_event(
        &got[6].event(),
        json!({"action": "manifest.delete", "tenant": "acme", "repository": "acme/app",
               "digest": d1, "tag": null, "previous_digest": null,
               "media_type": OCI_MANIFEST, "size": m1.len(), "actor": op,
               "request_id": "req-del"}),
    );
    for d in node_rx.seen() {
        assert!(d.verifies(NODE_SECRET), "{:?}", d.event());
    }
    for d in acme_rx.seen() {
        assert!(d.verifies(ACME_SECRET), "{:?}", d.event());
    }

    // What fails makes no event: an unknown tag deleted, a manifest
    // whose blobs are missing, a push the caller may not make.
    assert_eq!(
        n.call(
            Method::DELETE,
            "/v2/acme/app/manifests/v1",
            Some("op"),
            "req-404"
        )
        .await,
        404
    );
    let orphan = image_manifest(&sha256(b"x"), 1, &sha256(b"y"), 1, "");
    assert_eq!(
        n.put("acme/app", "bad", &orphan, "alice", "req-400").await,
        400
    );
    let refused = n.put("acme/app", "v9", &m2, "gina", "req-403").await;
    assert!(refused == 401 || refused == 403, "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node_rx.seen().len(), 7, "{:?}", node_rx.events());
    let s = n.notifier.endpoint("node-1").unwrap();
    assert_eq!((s.queued, s.delivered, s.dropped, s.failed()), (7, 7, 0, 0));
}

/// A tenant's endpoint gets its tenant's events and no other's; the
/// node's get all.
#[tokio::test]
async fn a_tenants_endpoints_get_only_its_own_events() {
    let node_rx = Receiver::start().await;
    let acme_rx = Receiver::start().await;
    let globex_rx = Receiver::start().await;
    let n = Node::start(config(), vec![node_target(&node_rx.url())]).await;
    n.tenant_endpoint("acme", &acme_rx.url(), ACME_SECRET, true)
        .await;
    n.tenant_endpoint("globex", &globex_rx.url(), GLOBEX_SECRET, true)
        .await;
    let a = n.image("acme/app", "alice", "a").await;
    let g = n.image("globex/app", "gina", "g").await;
    assert_eq!(n.put("acme/app", "v1", &a, "alice", "a1").await, 201);
    assert_eq!(n.put("globex/app", "v1", &g, "gina", "g1").await, 201);
    assert_eq!(n.put("globex/app/sub", "v1", &g, "gina", "g2").await, 400);
    assert_eq!(
        n.call(
            Method::GET,
            "/v2/globex/app/manifests/v1",
            Some("gina"),
            "g3"
        )
        .await,
        200
    );
    assert_eq!(
        n.call(
            Method::GET,
            "/v2/acme/app/manifests/v1",
            Some("alice"),
            "a2"
        )
        .await,
        200
    );
    node_rx.wait_for(2).await;
    acme_rx.wait_for(2).await;
    globex_rx.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = |r: &Receiver| -> Vec<(String, String)> {
        r.events()
            .iter()
            .map(|e| {
                (
                    e["repository"].as_str().unwrap().to_string(),
                    e["request_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        ids(&acme_rx),
        [
            ("acme/app".into(), "a1".into()),
            ("acme/app".into(), "a2".into())
        ]
    );
    assert_eq!(
        ids(&globex_rx),
        [
            ("globex/app".into(), "g1".into()),
            ("globex/app".into(), "g3".into())
        ]
    );
    // The node's endpoint does not want pulls.
    assert_eq!(
        ids(&node_rx),
        [
            ("acme/app".into(), "a1".into()),
            ("globex/app".into(), "g1".into())
        ]
    );
    assert!(acme_rx.seen().iter().all(|d| d.verifies(ACME_SECRET)));
    assert!(globex_rx.seen().iter().all(|d| d.verifies(GLOBEX_SECRET)));
}

/// Pushes a fresh image `count` times, timing each manifest `PUT` (the
/// request events are made by), and returns the times sorted.
async fn time_pushes(n: &Node, label: &str, count: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let m = n
            .image("acme/timed", "alice", &format!("{label}-{i}"))
            .await;
        let started = Instant::now();
        assert_eq!(
            n.put("acme/timed", &format!("{label}-{i}"), &m, "alice", "t")
                .await,
            201
        );
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn summary(times: &[Duration]) -> String {
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    )
}

/// A receiver that holds every request, or one that is down, does not
/// delay a push: the push is answered while the receiver still holds
/// the first delivery. The push times with each are printed, not asserted
/// (docs/benchmarks.md, "Event notifications").
#[tokio::test]
async fn a_slow_or_down_receiver_never_delays_a_push() {
    const PUSHES: usize = 40;
    // Without any endpoint (no event is made).
    let n = Node::start(config(), vec![]).await;
    let none = time_pushes(&n, "none", PUSHES).await;

    // A receiver that answers at once.
    let quick = Receiver::start().await;
    let n = Node::start(config(), vec![node_target(&quick.url())]).await;
    let with_quick = time_pushes(&n, "quick", PUSHES).await;
    quick.wait_for(PUSHES).await;

    // A receiver that takes every request and answers none.
    let slow = Receiver::start().await;
    slow.shut().await;
    let n = Node::start(config(), vec![node_target(&slow.url())]).await;
    let m = n.image("acme/app", "alice", "first").await;
    assert_eq!(n.put("acme/app", "first", &m, "alice", "first").await, 201);
    assert!(
        eventually(Duration::from_secs(5), || slow.held() == 1).await,
        "the receiver holds the first delivery"
    );
    let with_slow = time_pushes(&n, "slow", PUSHES).await;
    // Behaviour, not timing: every push was answered while the receiver
    // was still holding the first delivery and had finished none.
    assert_eq!(slow.held(), 1);
    assert!(slow.seen().is_empty());
    let s = n.notifier.endpoint("node-1").unwrap();
    assert_eq!(
        (s.queued, s.delivered, s.depth),
        (PUSHES as u64 + 1, 0, PUSHES as u64)
    );
    slow.open();
    slow.wait_for(PUSHES + 1).await;

    // An endpoint nobody listens on: every attempt is refused.
    let down = closed_port();
    let n = Node::start(config(), vec![node_target(&format!("http://{down}/hook"))]).await;
    let with_down = time_pushes(&n, "down", PUSHES).await;
    assert!(n.notifier.endpoint("node-1").unwrap().attempts_failed > 0);

    println!("manifest PUT, {PUSHES} pushes each (debug build, loopback):");
    println!("  no endpoint:             {}", summary(&none));
    println!("  receiver answering:      {}", summary(&with_quick));
    println!("  receiver holding (slow): {}", summary(&with_slow));
    println!("  receiver down:           {}", summary(&with_down));
}

#[tokio::test]
async fn retries_deliver_after_the_receiver_comes_back() {
    let addr = closed_port();
    let url = format!("http://{addr}/hook");
    let n = Node::start(config(), vec![node_target(&url)]).await;
    let m = n.image("acme/app", "alice", "retry").await;
    assert_eq!(n.put("acme/app", "v1", &m, "alice", "req-retry").await, 201);
    assert!(
        eventually(Duration::from_secs(5), || {
            n.notifier.endpoint("node-1").unwrap().attempts_failed >= 3
        })
        .await,
        "attempts fail while the receiver is down"
    );
    let s = n.notifier.endpoint("node-1").unwrap();
    assert!(s.failing && s.delivered == 0, "{s:?}");

    let rx = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let got = rx.wait_for(1).await;
    assert_event(
        &got[0].event(),
        json!({"action": "manifest.push", "digest": sha256(m.as_bytes()), "tag": "v1",
               "request_id": "req-retry"}),
    );
    assert!(got[0].verifies(NODE_SECRET));
    let attempt: u32 = got[0].header("x-wharf-delivery-attempt").parse().unwrap();
    assert!(attempt >= 4, "delivered by a retry: attempt {attempt}");
    assert!(
        eventually(Duration::from_secs(5), || !n
            .notifier
            .endpoint("node-1")
            .unwrap()
            .failing)
        .await
    );
    let s = n.notifier.endpoint("node-1").unwrap();
    assert_eq!((s.delivered, s.failed()), (1, 0));
}

/// The admin port's `/metrics`, served over `notifier` as the binary
/// does.
async fn admin_metrics(notifier: &Notifier) -> String {
    let mut node = wharf_api::admin::NodeState::new(
        None,
        Arc::new(wharf_api::ConnStats::default()),
        Arc::new(wharf_telemetry::RequestMetrics::default()),
        vec![],
        vec![],
    );
    node.notify = Some(notifier.clone());
    let app = wharf_api::admin::admin_app(Arc::new(node));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_pushes_go_on() {
    let rx = Receiver::start().await;
    rx.shut().await;
    let config = NotifyConfig {
        queue_size: 2,
        ..config()
    };
    let n = Node::start(config, vec![node_target(&rx.url())]).await;
    let m = n.image("acme/app", "alice", "full").await;
    assert_eq!(n.put("acme/app", "t0", &m, "alice", "t0").await, 201);
    assert!(eventually(Duration::from_secs(5), || rx.held() == 1).await);
    for i in 1..=6 {
        let m = n.image("acme/app", "alice", &format!("full-{i}")).await;
        assert_eq!(
            n.put("acme/app", &format!("t{i}"), &m, "alice", &format!("t{i}"))
                .await,
            201,
            "a push with the queue full succeeds"
        );
    }
    let s = n.notifier.endpoint("node-1").unwrap();
    assert_eq!((s.queued, s.dropped, s.depth, s.capacity), (3, 4, 2, 2));
    let text = admin_metrics(&n.notifier).await;
    for line in [
        r#"wharf_notify_events_dropped_total{endpoint="node-1"} 4"#,
        r#"wharf_notify_events_queued_total{endpoint="node-1"} 3"#,
        r#"wharf_notify_queue_depth{endpoint="node-1"} 2"#,
        r#"wharf_notify_queue_capacity{endpoint="node-1"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    rx.open();
    let got = rx.wait_for(3).await;
    let tags: Vec<Value> = got.iter().map(|d| d.event()["tag"].clone()).collect();
    assert_eq!(tags, ["t0", "t1", "t2"], "the queued ones, in order");
}

/// The admin API over `directory` and `notifier`, with admin token `token`.
async fn admin_api(directory: Directory, notifier: Notifier, token: &str) -> String {
    let api = wharf_api::admin_api::AdminApi::new(directory, Some(wharf_auth::hash_secret(token)))
        .with_notifier(Some(notifier));
    let app = wharf_api::admin_api::admin_api_router(Arc::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/admin/v1")
}

#[tokio::test]
async fn the_admin_api_sets_lists_and_deletes_a_tenants_endpoints() {
    const TOKEN: &str = "admin-token-for-tests";
    let n = Node::start(config(), vec![]).await;
    let base = admin_api(n.directory.clone(), n.notifier.clone(), TOKEN).await;
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, body: Option<Value>| {
        let mut r = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let text = r.text().await.unwrap();
            (
                status,
                ct,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            )
        }
    };
    let rx = Receiver::start().await;

    // Created without a secret: one is generated and shown this once.
    let (status, _, created) = call(
        Method::PUT,
        "/tenants/acme/notifications/ci",
        Some(json!({"url": rx.url()})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["id"], "ci");
    assert_eq!(created["url"], rx.url());
    assert_eq!(created["pulls"], false);
    assert!(created["created"].as_str().unwrap().ends_with('Z'));
    assert!(created["delivery"].is_null());

    // It is in force: a push reaches it, signed with that secret.
    let m = n.image("acme/app", "alice", "admin").await;
    assert_eq!(n.put("acme/app", "v1", &m, "alice", "via-admin").await, 201);
    let got = rx.wait_for(1).await;
    assert!(got[0].verifies(&secret));
    assert_eq!(got[0].event()["request_id"], "via-admin");

    // Listed and shown without the secret, with this node's counters.
    assert!(
        eventually(Duration::from_secs(5), || {
            n.notifier
                .endpoint("acme/ci")
                .is_some_and(|s| s.delivered == 1)
        })
        .await
    );
    let (status, _, list) = call(Method::GET, "/tenants/acme/notifications", None).await;
    assert_eq!(status, 200);
    let endpoints = list["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert!(endpoints[0].get("secret").is_none(), "{list}");
    assert!(!list.to_string().contains(&secret));
    assert_eq!(endpoints[0]["delivery"]["delivered"], 1);
    assert_eq!(endpoints[0]["delivery"]["failing"], false);
    let (status, _, one) = call(Method::GET, "/tenants/acme/notifications/ci", None).await;
    assert_eq!((status, &one["url"]), (200, &json!(rx.url())));

    // Replaced: the secret stays unless given; no secret in the answer.
    let (status, _, replaced) = call(
        Method::PUT,
        "/tenants/acme/notifications/ci",
        Some(json!({"url": rx.url(), "pulls": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(replaced["pulls"], true);
    assert!(replaced.get("secret").is_none(), "{replaced}");
    assert_eq!(
        n.directory.notify_targets("acme").unwrap()[0]
            .secret
            .expose(),
        secret.as_bytes()
    );

    // Bad input: 400 with a JSON error that says what is wrong.
    for (body, says) in [
        (json!({"url": "ftp://example.com/x"}), "http:// or https://"),
        (json!({"url": "not a url"}), "does not parse"),
        (json!({"url": "http://u:p@example.com/"}), "credentials"),
        (
            json!({"url": "http://example.com/", "secret": "short"}),
            "16 to 256 bytes",
        ),
        (
            json!({"url": "http://example.com/", "colour": "red"}),
            "unknown field",
        ),
        (json!({}), "missing field `url`"),
    ] {
        let (status, ct, err) = call(
            Method::PUT,
            "/tenants/acme/notifications/ci",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert_eq!(err["errors"][0]["code"], "INVALID", "{err}");
        let message = err["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, _, err) = call(
        Method::PUT,
        "/tenants/acme/notifications/Not_An_Id",
        Some(json!({"url": rx.url()})),
    )
    .await;
    assert_eq!(
        (status, &err["errors"][0]["code"]),
        (400, &json!("INVALID"))
    );
    let (status, _, err) = call(
        Method::PUT,
        "/tenants/nobody/notifications/ci",
        Some(json!({"url": rx.url()})),
    )
    .await;
    assert_eq!(
        (status, &err["errors"][0]["code"]),
        (404, &json!("NOT_FOUND"))
    );

    // A tenant's own admin may set its endpoints, but only on the public
    // internet: this receiver, on loopback, is the operator's to choose.
    let r = client
        .put(format!("{base}/tenants/acme/notifications/mine"))
        .basic_auth("alice", Some(pw("alice")))
        .json(&json!({"url": rx.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("public internet")),
        "{body}"
    );

    // Deleted: gone, and its events with it.
    let (status, _, _) = call(Method::DELETE, "/tenants/acme/notifications/ci", None).await;
    assert_eq!(status, 204);
    let (status, _, _) = call(Method::DELETE, "/tenants/acme/notifications/ci", None).await;
    assert_eq!(status, 404);
    let (_, _, list) = call(Method::GET, "/tenants/acme/notifications", None).await;
    assert_eq!(list, json!({"endpoints": []}));
    assert_eq!(n.put("acme/app", "v2", &m, "alice", "after").await, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.seen().len(), 1);
}
