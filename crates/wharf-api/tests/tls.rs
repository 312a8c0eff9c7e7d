//! TLS on the listener, over real sockets: the certificate served, HTTP/2
//! chosen by ALPN and still going through admission per request, the
//! header timeout on HTTP/2, reloading a renewed pair without a restart
//! (and refusing a bad one while the old pair keeps serving), and client
//! certificates when a client CA is configured.
//!
//! Certificates are made by the test (rcgen): a CA, and server and client
//! certificates it signs. Clients are reqwest over rustls, trusting only
//! that CA, and raw rustls connections where the test needs the wire.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use wharf_admission::{Admission, ClassLimits};
use wharf_api::tls::{TlsFiles, TlsServer};
use wharf_api::{AppState, ConnStats, ServerConfig};
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

/// The longest any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// A client trusting the test CA completes the handshake, gets the served
/// certificate, and speaks HTTP/2 when it offers it (HTTP/1.1 when it
/// offers only that); a client that does not trust the CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_certificate_over_http2_and_http11() {
    let pki = Pki::new();
    let srv = Server::start(&pki, None, Opts::default()).await;

    let r = get(&pki.client(), &srv.url("/v2/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(peer_cert(&r), pki.server.der, "the configured certificate");
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let h1 = pki.client_builder().http1_only().build().unwrap();
    let r = get(&h1, &srv.url("/v2/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let e = untrusting.get(srv.url("/v2/")).send().await.unwrap_err();
    assert!(
        e.is_connect(),
        "a client without the CA fails the handshake: {e:?}"
    );

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new();
    let r = plain.get(format!("http://{}/v2/", srv.addr)).send().await;
    assert!(
        r.as_ref().map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP served on the TLS port: {r:?}"
    );
}

/// HTTP/2 multiplexes requests on one connection, and each one still passes
/// admission: with the one pull slot held by a blob download whose body is
/// not read, a manifest GET on the same connection is refused `503` with
/// `Retry-After`, and served once the download is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_pass_admission_one_by_one() {
    let pki = Pki::new();
    let one = ClassLimits {
        max_in_flight: 1,
        tenant_share: 1.0,
        max_wait: Duration::ZERO,
        max_waiters: 0,
        adaptive: None,
    };
    let admission = Admission::new(one.clone(), one.clone(), one);
    let srv = Server::start(
        &pki,
        None,
        Opts {
            admission: Some(admission.clone()),
            ..Opts::default()
        },
    )
    .await;
    let client = pki.client();
    let big = vec![7u8; 16 << 20];
    let digest = srv.push_blob(&client, "acme/big", &big).await;
    let manifest = srv.push_image(&client, "acme/app", "v1").await;

    let held = get(&client, &srv.url(&format!("/v2/acme/big/blobs/{digest}"))).await;
    assert_eq!(held.status(), 200);
    assert_eq!(held.version(), reqwest::Version::HTTP_2);
    assert_eq!(admission.stats(wharf_admission::Class::Pull).in_flight, 1);

    let r = get(&client, &srv.url("/v2/acme/app/manifests/v1")).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 503, "the pull class is full");
    assert_eq!(r.headers()["retry-after"], "1");

    drop(held);
    let deadline = Instant::now() + WAIT;
    while admission.stats(wharf_admission::Class::Pull).in_flight > 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped download kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = get(&client, &srv.url("/v2/acme/app/manifests/v1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), manifest.as_slice());
}

/// An HTTP/2 client that completes the handshake and the connection
/// preface but never sends a whole request is closed after the header
/// timeout, as an HTTP/1.1 client that never finishes its headers is; one
/// that sends a request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_a_request_is_closed_at_the_header_timeout() {
    let pki = Pki::new();
    let srv = Server::start(
        &pki,
        None,
        Opts {
            header_timeout: Duration::from_millis(500),
            ..Opts::default()
        },
    )
    .await;

    let mut tls = pki.raw_connect(srv.addr, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and an empty SETTINGS frame: a valid HTTP/2
    // start, and then nothing.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // the server's SETTINGS and its ACK
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent HTTP/2 connection was kept open");
    assert_eq!(srv.stats.header_timeouts_total.load(Ordering::Relaxed), 1);

    // A real client is unaffected, also past the timeout on one connection.
    let client = pki.client();
    for _ in 0..3 {
        let r = get(&client, &srv.url("/v2/")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(srv.stats.header_timeouts_total.load(Ordering::Relaxed), 1);
}

/// A renewed pair written over the files is served to new connections
/// without a restart; a pair whose key does not match its certificate is
/// refused, and the pair in use keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_pair_is_served_and_a_bad_one_refused() {
    let pki = Pki::new();
    let srv = Server::start(&pki, None, Opts::default()).await;
    srv.tls.spawn_reloader("test", Duration::from_millis(50));
    let client = pki.client_builder().http1_only().build().unwrap();
    let fresh = || {
        // A new connection per request, so each sees the pair of the moment.
        pki.client_builder()
            .http1_only()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    assert_eq!(
        peer_cert(&get(&client, &srv.url("/v2/")).await),
        pki.server.der
    );

    let renewed = pki.issue("127.0.0.1");
    renewed.write(&srv.cert_path, &srv.key_path);
    wait_for("the renewed certificate", || async {
        peer_cert(&get(&fresh(), &srv.url("/v2/")).await) == renewed.der
    })
    .await;
    assert!(srv.tls.reloads.load(Ordering::Relaxed) >= 1);

    // A key of another pair over the key file: refused.
    let failures = srv.tls.reload_failures.load(Ordering::Relaxed);
    let other = pki.issue("127.0.0.1");
    std::fs::write(&srv.key_path, &other.key_pem).unwrap();
    wait_for("the bad pair to be refused", || async {
        srv.tls.reload_failures.load(Ordering::Relaxed) > failures
    })
    .await;
    let r = get(&fresh(), &srv.url("/v2/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        peer_cert(&r),
        renewed.der,
        "the previous pair keeps serving"
    );
    let e = srv.tls.reload().unwrap_err();
    assert!(e.contains("does not belong to the certificate"), "{e}");
}

/// With a client CA, a client without a certificate cannot complete the
/// handshake; one with a certificate from that CA is served; one with a
/// certificate from another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let pki = Pki::new();
    let srv = Server::start(&pki, Some(&pki.ca_path), Opts::default()).await;

    let e = pki.client().get(srv.url("/v2/")).send().await.unwrap_err();
    assert!(
        e.is_connect() || e.is_request(),
        "served without a client certificate: {e:?}"
    );

    let alice = pki.issue("alice");
    let with_cert = pki
        .client_builder()
        .identity(
            reqwest::Identity::from_pem(
                &[alice.cert_pem.as_bytes(), alice.key_pem.as_bytes()].concat(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let r = get(&with_cert, &srv.url("/v2/")).await;
    assert_eq!(r.status(), 200);

    let stranger = Pki::new().issue("mallory");
    let with_other = pki
        .client_builder()
        .identity(
            reqwest::Identity::from_pem(
                &[stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes()].concat(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let e = with_other.get(srv.url("/v2/")).send().await.unwrap_err();
    assert!(
        e.is_connect() || e.is_request(),
        "served a certificate of another CA: {e:?}"
    );
}

/// Files that cannot serve are refused at load with the file named.
#[test]
fn bad_files_are_refused_with_their_name() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    pki.server.write(&cert, &key);
    std::fs::write(&key, pki.issue("x").key_pem).unwrap();
    let e = TlsServer::load(TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
    })
    .unwrap_err();
    assert!(e.contains("k.pem") && e.contains("does not belong"), "{e}");
    std::fs::write(&key, "-----BEGIN NOTHING-----\n").unwrap();
    let e = TlsServer::load(TlsFiles {
        cert,
        key,
        client_ca: None,
    })
    .unwrap_err();
    assert!(e.contains("k.pem"), "{e}");
}

// ---------------------------------------------------------------------------
// Certificates, a TLS server, clients
// ---------------------------------------------------------------------------

/// A test CA and a server certificate it signed, with the CA in a file.
struct Pki {
    ca: rcgen::CertifiedKey<rcgen::KeyPair>,
    ca_params: rcgen::CertificateParams,
    ca_path: PathBuf,
    server: Issued,
    _dir: tempfile::TempDir,
}

/// A certificate and key the CA issued.
struct Issued {
    der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl Issued {
    fn write(&self, cert: &Path, key: &Path) {
        // The key first: a poll between the two writes sees a mismatch and
        // refuses it; the certificate then completes the pair.
        std::fs::write(key, &self.key_pem).unwrap();
        std::fs::write(cert, &self.cert_pem).unwrap();
    }
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wharf test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, cert.pem()).unwrap();
        let mut pki = Pki {
            ca: rcgen::CertifiedKey {
                cert,
                signing_key: key,
            },
            ca_params: params,
            ca_path,
            server: Issued {
                der: Vec::new(),
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            _dir: dir,
        };
        pki.server = pki.issue("127.0.0.1");
        pki
    }

    /// A certificate for `name` (an IP address or a DNS name), signed by
    /// the CA, good for servers and clients.
    fn issue(&self, name: &str) -> Issued {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![match name.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(name.try_into().unwrap()),
        }];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca.signing_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert.pem().as_bytes()).unwrap(),
            )
            .tls_info(true)
            .timeout(WAIT)
    }

    fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// A raw TLS connection offering `alpn`, trusting the CA.
    async fn raw_connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .unwrap()
            .unwrap()
    }
}

#[derive(Default)]
struct Opts {
    admission: Option<Admission>,
    header_timeout: Duration,
}

struct Server {
    addr: SocketAddr,
    tls: Arc<TlsServer>,
    stats: Arc<ConnStats>,
    cert_path: PathBuf,
    key_path: PathBuf,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(pki: &Pki, client_ca: Option<&Path>, opts: Opts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        pki.server.write(&cert_path, &key_path);
        let tls = TlsServer::load(TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
            client_ca: client_ca.map(Path::to_path_buf),
        })
        .unwrap();
        let blobs = FsStore::open(dir.path()).await.unwrap();
        let meta = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
        let registry = Registry::new(Arc::new(blobs), Arc::new(meta), RegistryConfig::default());
        let mut state = AppState::new(registry);
        state.admission = opts.admission;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ConnStats::default());
        let (tx, rx) = oneshot::channel::<()>();
        let header_read_timeout = if opts.header_timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            opts.header_timeout
        };
        tokio::spawn(wharf_api::serve_with(
            listener,
            wharf_api::app_with(state),
            ServerConfig {
                header_read_timeout,
                tls: Some(tls.clone()),
                ..ServerConfig::default()
            },
            stats.clone(),
            async {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            tls,
            stats,
            cert_path,
            key_path,
            _stop: tx,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn push_blob(&self, client: &reqwest::Client, repo: &str, bytes: &[u8]) -> String {
        let d = format!("sha256:{}", hex::encode(sha2_digest(bytes)));
        let r = client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(bytes.to_vec())
            .timeout(WAIT * 3)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
        d
    }

    /// Pushes a small image; returns its manifest bytes.
    async fn push_image(&self, client: &reqwest::Client, repo: &str, tag: &str) -> Vec<u8> {
        let config = br#"{"seed":"tls"}"#;
        let layer = b"a layer over TLS";
        let cd = self.push_blob(client, repo, config).await;
        let ld = self.push_blob(client, repo, layer).await;
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
        })
        .to_string()
        .into_bytes();
        let r = client
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "push manifest: {}",
            r.text().await.unwrap()
        );
        body
    }
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    tokio::time::timeout(WAIT, client.get(url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url} timed out"))
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"))
}

/// The certificate the server presented on `r`'s connection.
fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS response with the peer certificate")
        .to_vec()
}

async fn wait_for<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
