//! A real Wharf server on `127.0.0.1:0` over a temporary data directory,
//! and small helpers to push content through its HTTP API.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::{Client, Method, Response};
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: Client,
    /// Data directory (kept alive by `_dir` unless given by the caller).
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start_in(dir.path()).await;
        s._dir = Some(dir);
        s
    }

    /// Starts a server over an existing data directory (for restarts).
    pub async fn start_in(data: &Path) -> Server {
        Server::start_configured(data, |_| {}).await
    }

    /// Starts a server over a temporary directory with `configure` applied
    /// to its state (auth, limits).
    pub async fn start_with(configure: impl FnOnce(&mut wharf_api::AppState)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start_configured(dir.path(), configure).await;
        s._dir = Some(dir);
        s
    }

    /// Starts a server over `registry`, which the caller built on
    /// `stores` (to share its metadata store with a tenant directory), with
    /// `configure` applied to its state. The server keeps the stores'
    /// directory alive.
    pub async fn start_over(
        stores: Stores,
        registry: Registry,
        configure: impl FnOnce(&mut wharf_api::AppState),
    ) -> Server {
        let mut s = Server::start_registry(stores.dir.path(), registry, configure, false).await;
        s._dir = Some(stores.dir);
        s
    }

    /// [`Server::start_over`], with request ids (the access log layer,
    /// writing no lines) as the binary has them.
    pub async fn start_over_with_ids(
        stores: Stores,
        registry: Registry,
        configure: impl FnOnce(&mut wharf_api::AppState),
    ) -> Server {
        let mut s = Server::start_registry(stores.dir.path(), registry, configure, true).await;
        s._dir = Some(stores.dir);
        s
    }

    async fn start_configured(
        data: &Path,
        configure: impl FnOnce(&mut wharf_api::AppState),
    ) -> Server {
        let blobs = FsStore::open(data).await.unwrap();
        let meta = EmbeddedStore::open(data.join("meta.redb")).unwrap();
        let registry = Registry::new(Arc::new(blobs), Arc::new(meta), RegistryConfig::default());
        Server::start_registry(data, registry, configure, false).await
    }

    async fn start_registry(
        data: &Path,
        registry: Registry,
        configure: impl FnOnce(&mut wharf_api::AppState),
        ids: bool,
    ) -> Server {
        let mut state = wharf_api::AppState::new(registry);
        configure(&mut state);
        let app = match ids {
            true => {
                wharf_api::app_with(state).layer(wharf_api::access_log::AccessLogLayer::ids_only())
            }
            false => wharf_api::app_with(state),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            wharf_api::serve(listener, app, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            base: format!("http://{addr}"),
            client: Client::builder().build().unwrap(),
            data: data.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Stops the server and waits until it has let go of its data directory.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends `GET path` over a bare socket, byte for byte as given (HTTP
    /// clients normalise `..` and `%2e%2e` away before sending, which would
    /// hide what the server does with them). Returns the status and body.
    pub async fn raw_get(&self, path: &str) -> (u16, String) {
        self.raw_get_with(path, "").await
    }

    /// [`Server::raw_get`] with `extra` header lines (each ending `\r\n`).
    pub async fn raw_get_with(&self, path: &str, extra: &str) -> (u16, String) {
        let (status, _, body) = self.raw_get_full(path, extra).await;
        (status, body)
    }

    /// [`Server::raw_get_with`], also returning the response's header
    /// block (status line and header lines, as received).
    pub async fn raw_get_full(&self, path: &str, extra: &str) -> (u16, String, String) {
        let addr = self.base.trim_start_matches("http://");
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
        let (status, text) = self.raw_request(&head).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_string(), body.to_string())
    }

    /// Sends `head` (a whole request head, ending `\r\n\r\n`) over a bare
    /// socket exactly as given; returns the status and the whole response.
    pub async fn raw_request(&self, head: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        sock.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("an HTTP status line");
        (status, text)
    }

    /// A client whose connections come from `ip` (another loopback
    /// address, so a test can be two people at once).
    pub fn client_from(&self, ip: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    }

    /// Pushes `bytes` as a blob of `repo` monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
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
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
        d
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &str,
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a small image (config + one layer) tagged `tag`; returns the
    /// manifest's body and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (String, String) {
        let config = format!("{{\"seed\":\"{seed}\"}}");
        let layer = format!("layer of {seed}");
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        let body = image_manifest(&cd, config.len(), &ld, layer.len(), "");
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
        assert_eq!(
            r.status(),
            201,
            "push manifest: {}",
            r.text().await.unwrap()
        );
        let d = sha256(body.as_bytes());
        (body, d)
    }
}

/// The stores of a server, opened before it starts, for a test that needs
/// them itself: a tenant directory must share the registry's metadata
/// store (the embedded store cannot be opened twice), and a test may look
/// at the blob store's files.
pub struct Stores {
    pub blobs: Arc<FsStore>,
    pub meta: Arc<EmbeddedStore>,
    /// The data directory both live in.
    pub dir: tempfile::TempDir,
}

impl Stores {
    /// Opens both stores in a new temporary directory.
    pub async fn open() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FsStore::open(dir.path()).await.unwrap());
        let meta = Arc::new(EmbeddedStore::open(dir.path().join("meta.redb")).unwrap());
        Stores { blobs, meta, dir }
    }

    /// A registry over these stores, with the default configuration.
    pub fn registry(&self) -> Registry {
        Registry::new(
            self.blobs.clone(),
            self.meta.clone(),
            RegistryConfig::default(),
        )
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI image manifest over one config and one layer; `extra` is appended
/// inside the top-level object (e.g. `,"subject":{…}`).
pub fn image_manifest(
    config: &str,
    config_len: usize,
    layer: &str,
    layer_len: usize,
    extra: &str,
) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{layer_len}}}]{extra}}}"#
    )
}

/// The OCI error code of a response body.
pub async fn error_code(r: Response) -> String {
    let v: serde_json::Value = r.json().await.expect("an OCI error body");
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A response's status, OCI error code and message, and the headers the
/// tests look at.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub challenge: String,
    pub retry_after: String,
    pub location: String,
    pub body: String,
}

impl Outcome {
    pub async fn of(r: Response) -> Outcome {
        let status = r.status().as_u16();
        let (challenge, retry_after) = (header(&r, "www-authenticate"), header(&r, "retry-after"));
        let location = header(&r, "location");
        let body = r.text().await.unwrap();
        Outcome::parse(status, [challenge, retry_after, location], body)
    }

    /// From a raw response: its status, header block and body.
    pub fn raw(status: u16, head: &str, body: String) -> Outcome {
        let find = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let headers = [
            find("www-authenticate"),
            find("retry-after"),
            find("location"),
        ];
        Outcome::parse(status, headers, body)
    }

    /// `headers`: the challenge, `Retry-After` and `Location`.
    fn parse(status: u16, headers: [String; 3], body: String) -> Outcome {
        let [challenge, retry_after, location] = headers;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let first = &v["errors"][0];
        Outcome {
            status,
            code: first["code"].as_str().unwrap_or("").to_string(),
            message: first["message"].as_str().unwrap_or("").to_string(),
            challenge,
            retry_after,
            location,
            body,
        }
    }

    /// Asserts `status` and `code` (`""`: no error body expected).
    #[track_caller]
    pub fn expect(&self, status: u16, code: &str, what: &str) {
        assert_eq!(
            (self.status, self.code.as_str()),
            (status, code),
            "{what}: {self:?}"
        );
    }

    /// Asserts 429 `TOOMANYREQUESTS` with a `Retry-After` of at least 1 s.
    #[track_caller]
    pub fn expect_too_many(&self, what: &str) {
        self.expect(429, "TOOMANYREQUESTS", what);
        let secs: u64 = self.retry_after.parse().unwrap_or(0);
        assert!(secs >= 1, "{what}: Retry-After {:?}", self.retry_after);
    }

    /// Asserts 403 `DENIED` naming a quota.
    #[track_caller]
    pub fn expect_quota_refusal(&self, what: &str) {
        self.expect(403, "DENIED", what);
        assert!(self.message.contains("quota"), "{what}: {self:?}");
    }
}

/// Basic authentication against `directory`'s users, with failed-login
/// limits no test reaches, for a server whose tests log in as tenant users.
pub fn directory_basic_auth(directory: wharf_tenants::Directory) -> wharf_api::auth::Auth {
    let users = wharf_api::auth::Users::directory_only(directory).with_limiter(
        wharf_auth::LoginLimiter::new(wharf_auth::LimiterConfig {
            client_failures: 1000,
            pair_failures: 1000,
            ..wharf_auth::LimiterConfig::default()
        }),
    );
    wharf_api::auth::Auth::Htpasswd {
        users: Arc::new(users),
        challenge: wharf_auth::BasicChallenge::new("wharf").unwrap(),
        anonymous_pull: Arc::from(Vec::new()),
    }
}
