//! The access log and the failed-login lines, on a real server with the
//! [`AccessLogLayer`] around its router, as `wharf serve` runs it.
//!
//! The log is captured in JSON (one object per line, as `--log-format
//! json` writes it) by a subscriber installed once for this test binary;
//! each test finds its own lines by the request ids it sent or got back,
//! or by names only it uses, so tests running at once do not mix.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{image_manifest, sha256, OCI_MANIFEST};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use wharf_admission::{Admission, Class, ClassLimits};
use wharf_api::access_log::AccessLogLayer;
use wharf_api::auth::{Auth, Users};
use wharf_api::AppState;
use wharf_auth::{BasicChallenge, Htpasswd, LimiterConfig, LoginLimiter};
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

/// Everything logged by this test binary, JSON lines.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured events for which `pick` holds.
fn events(pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    let bytes = captured().lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| pick(v))
        .collect()
}

/// The access log line of request `id`, waited for (it is written when
/// the response is over, which may be just after the client has it).
async fn access_line(id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = events(|v| v["target"] == "wharf::access" && v["request_id"] == id);
        match found.len() {
            0 => {}
            1 => return found[0].clone(),
            n => panic!("{n} access lines for {id}"),
        }
        assert!(Instant::now() < deadline, "no access line for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server whose router has the access log layer, with `configure`
/// applied to its state.
struct Logged {
    addr: SocketAddr,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Logged {
    async fn start(configure: impl FnOnce(&mut AppState)) -> Logged {
        captured();
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsStore::open(dir.path()).await.unwrap();
        let meta = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
        let registry = Registry::new(Arc::new(blobs), Arc::new(meta), RegistryConfig::default());
        let mut state = AppState::new(registry);
        configure(&mut state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let app = wharf_api::app_with(state).layer(AccessLogLayer::new());
        tokio::spawn(async move {
            let _ = wharf_api::serve(listener, app, async {
                let _ = rx.await;
            })
            .await;
        });
        Logged {
            addr,
            client: reqwest::Client::new(),
            stop: Some(tx),
            _dir: dir,
        }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("http://{}{path}", self.addr))
    }

    /// Pushes `bytes` as a blob of `repo` in one `POST`.
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> (String, reqwest::Response) {
        let d = sha256(bytes);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        (d, r)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn id_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .expect("every response carries its request id")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn every_request_is_logged_once_with_its_fields_when_it_is_over() {
    let s = Logged::start(|_| {}).await;
    let config = b"{\"access\":\"log\"}".to_vec();
    let (d, pushed) = s.push_blob("acme/app", &config).await;
    let push = access_line(&id_of(&pushed)).await;
    assert_eq!(push["method"], "POST");
    assert_eq!(push["status"], 201);
    assert_eq!(push["bytes_received"], config.len());
    assert_eq!(push["tenant"], "acme");
    assert_eq!(
        push["path"],
        format!("/v2/acme/app/blobs/uploads/?digest={d}")
    );

    let body = image_manifest(&d, config.len(), &d, config.len(), "");
    let r = s
        .req(Method::PUT, "/v2/acme/app/manifests/v1")
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A request id given by a client (or a proxy) is kept and returned.
    let r = s
        .req(Method::GET, "/v2/acme/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .header("x-request-id", "proxy-7f3a.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(id_of(&r), "proxy-7f3a.1");
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
    let line = access_line("proxy-7f3a.1").await;
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].is_string(), "{line}");
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["user"], "anonymous", "auth is off");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v2/acme/app/manifests/v1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_sent"], body.len());
    assert_eq!(line["bytes_received"], 0);
    assert_eq!(line["completed"], true);
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");

    // One that is not worth keeping is replaced by one of ours; a 404 is
    // logged like the rest.
    let r = s
        .req(Method::GET, "/v2/acme/app/manifests/nope")
        .header("x-request-id", "two words")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let id = id_of(&r);
    assert_ne!(id, "two words");
    let line = access_line(&id).await;
    assert_eq!(line["status"], 404);
    assert!(line["bytes_sent"].as_u64().unwrap() > 0, "the error body");
    // Requests outside any repository have no tenant.
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(access_line(&id_of(&r)).await["tenant"], "-");
}

#[tokio::test]
async fn credentials_in_the_query_string_never_reach_the_log() {
    let s = Logged::start(|_| {}).await;
    let r = s
        .req(
            Method::GET,
            "/v2/redact/app/tags/list?n=5&access_token=s3cr3t-t0ken&X-Amz-Signature=abcdef0123",
        )
        .send()
        .await
        .unwrap();
    let line = access_line(&id_of(&r)).await;
    assert_eq!(
        line["path"],
        "/v2/redact/app/tags/list?n=5&access_token=REDACTED&X-Amz-Signature=REDACTED"
    );
    let all = String::from_utf8(captured().lock().unwrap().clone()).unwrap();
    assert!(!all.contains("s3cr3t-t0ken") && !all.contains("abcdef0123"));
}

#[tokio::test]
async fn a_streamed_blob_is_logged_with_the_bytes_sent_when_it_ends_or_the_client_goes() {
    let s = Logged::start(|_| {}).await;
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let (d, _) = s.push_blob("stream/app", &big).await;

    let r = s
        .req(Method::GET, &format!("/v2/stream/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    let id = id_of(&r);
    assert_eq!(r.bytes().await.unwrap().len(), big.len());
    let line = access_line(&id).await;
    assert_eq!(line["bytes_sent"], big.len());
    assert_eq!(line["completed"], true);

    // A client that reads a little and goes: the line comes when the
    // server notices, with what was handed to the connection so far.
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "GET /v2/stream/app/blobs/{d} HTTP/1.1\r\nHost: {}\r\nX-Request-Id: gone-early\r\n\r\n",
        s.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0);
    drop(sock);
    let line = access_line("gone-early").await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["completed"], false, "{line}");
    let sent = line["bytes_sent"].as_u64().unwrap();
    assert!(sent < big.len() as u64, "{line}");
}

#[tokio::test]
async fn refusals_by_admission_are_logged_with_their_status() {
    // A pull class of 2 where one tenant may hold half once it is half full.
    let pull = ClassLimits {
        max_in_flight: 2,
        tenant_share: 0.5,
        max_wait: Duration::ZERO,
        max_waiters: 0,
        adaptive: None,
    };
    let other = ClassLimits {
        tenant_share: 1.0,
        ..pull.clone()
    };
    let admission = Admission::new(pull, other.clone(), other);
    let held = admission.clone();
    let s = Logged::start(|st| st.admission = Some(admission)).await;
    let _busy = held.acquire(Class::Pull, "shed").await.unwrap();
    let r = s
        .req(Method::GET, "/v2/shed/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let line = access_line(&id_of(&r)).await;
    assert_eq!(
        (line["status"].clone(), line["tenant"].clone()),
        (429.into(), "shed".into())
    );
    let _full = held.acquire(Class::Pull, "someone").await.unwrap();
    let r = s
        .req(Method::GET, "/v2/other/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(access_line(&id_of(&r)).await["status"], 503);
}

#[tokio::test]
async fn users_failed_logins_and_lockouts_are_logged_without_the_password() {
    let line = format!("alogger:{}\n", bcrypt::hash("right-pw", 4).unwrap());
    let users = Users::new(Htpasswd::parse(&line).unwrap(), None).with_limiter(LoginLimiter::new(
        LimiterConfig {
            pair_failures: 1,
            ..LimiterConfig::default()
        },
    ));
    let s = Logged::start(|st| {
        st.auth = Auth::Htpasswd {
            users: Arc::new(users),
            challenge: BasicChallenge::new("wharf").unwrap(),
            anonymous_pull: Arc::from(Vec::new()),
        };
    })
    .await;
    let r = s
        .req(Method::GET, "/v2/logins/app/tags/list")
        .basic_auth("alogger", Some("right-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "logged in; no such repository");
    assert_eq!(access_line(&id_of(&r)).await["user"], "alogger");

    // Two wrong passwords: the second blocks the pair (one free failure).
    for _ in 0..2 {
        let r = s
            .req(Method::GET, "/v2/")
            .basic_auth("alogger", Some("Wr0ng-pa55"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(access_line(&id_of(&r)).await["user"], "anonymous");
    }
    let r = s
        .req(Method::GET, "/v2/")
        .basic_auth("alogger", Some("Wr0ng-pa55"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "locked out");
    let failed = events(|v| v["user"] == "alogger" && v["target"] == "wharf_api::auth");
    let (fails, lockouts): (Vec<_>, Vec<_>) = failed
        .iter()
        .partition(|v| v["message"].as_str().unwrap().starts_with("failed login"));
    assert_eq!(fails.len(), 2, "{failed:?}");
    assert_eq!(lockouts.len(), 1, "{failed:?}");
    for f in &fails {
        assert_eq!(f["level"], "INFO");
        assert_eq!(f["client"], "127.0.0.1");
        assert_eq!(f["via"], "basic");
    }
    let lockout = lockouts[0];
    assert_eq!(lockout["level"], "WARN");
    assert_eq!(lockout["client"], "127.0.0.1");
    assert!(lockout["message"].as_str().unwrap().contains("locked out"));
    assert!(lockout["retry_after_secs"].as_u64().unwrap() >= 1);
    let all = String::from_utf8(captured().lock().unwrap().clone()).unwrap();
    assert!(!all.contains("Wr0ng-pa55") && !all.contains("right-pw"));
}
