//! Event notifications on the real binary: webhooks from the
//! configuration (`--notify-endpoint`, `--notify-secret-file`,
//! `--node-name`) get signed events; a receiver that holds its requests
//! fills the queue and the drops show on the admin port's `/metrics`
//! while pushes go on; and `wharf admin notification` sets, lists, shows
//! and deletes a tenant's webhooks, which then get that tenant's events.
//!
//! The receivers are small HTTP servers on `127.0.0.1:0` written here
//! over `std::net`; they check signatures with an HMAC computed from its
//! definition over SHA-256.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

mod common;
use common::{data, sha256, Wharf};

/// One request a receiver took.
#[derive(Clone, Debug)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn event(&self) -> Value {
        let v: Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
        v["events"][0].clone()
    }

    /// Whether `X-Wharf-Signature` is the HMAC-SHA256 with `secret` of
    /// `X-Wharf-Timestamp`, `.` and the body.
    fn verifies(&self, secret: &str) -> bool {
        let mut message = self.header("x-wharf-timestamp").as_bytes().to_vec();
        message.push(b'.');
        message.extend_from_slice(&self.body);
        self.header("x-wharf-signature")
            == format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), &message))
            )
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

/// An HTTP/1.1 receiver: one request per connection, answered `204`;
/// while shut, it reads each request and holds its answer.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Delivery>>>,
    open: Arc<(Mutex<bool>, Condvar)>,
    held: Arc<AtomicUsize>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            open: Arc::new((Mutex::new(true), Condvar::new())),
            held: Arc::default(),
        };
        let me = r.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(conn));
            }
        });
        r
    }

    fn serve(&self, conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut headers = Vec::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.held.fetch_sub(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(Delivery { headers, body });
        let mut conn = conn;
        let _ = conn.write_all(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_open(&self, open: bool) {
        let (lock, cv) = &*self.open;
        *lock.lock().unwrap() = open;
        cv.notify_all();
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    fn wait_for(&self, n: usize) -> Vec<Delivery> {
        assert!(
            eventually(Duration::from_secs(15), || self.seen().len() >= n),
            "expected {n} deliveries, got {}",
            self.seen().len()
        );
        self.seen()
    }
}

fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Pushes an image (two blobs of `seed`, then the manifest) as `tag`;
/// returns the manifest's digest and the `X-Request-Id` of its `PUT`.
fn push_image(w: &Wharf, repo: &str, tag: &str, seed: u8) -> (String, String) {
    let blob = |bytes: Vec<u8>| {
        let d = sha256(&bytes);
        let r = client()
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", w.base))
            .body(bytes)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        d
    };
    let config = blob(data(100, seed));
    let layer = blob(data(300, seed));
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":100}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":300}}]}}"#
    );
    let r = client()
        .put(format!("{}/v2/{repo}/manifests/{tag}", w.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    (sha256(body.as_bytes()), id)
}

/// The value of sample `series` in the admin port's `/metrics`.
fn metric(w: &Wharf, series: &str) -> Option<f64> {
    let text = client()
        .get(format!("{}/metrics", w.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

const SECRET: &str = "bin-test-secret-0123456789";

#[test]
fn configured_webhooks_get_signed_events_and_a_full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("notify.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let rx = Receiver::start();
    rx.set_open(false);
    let endpoint = format!("audit={}", rx.url());
    let w = Wharf::start_with(
        &dir.path().join("data"),
        &[
            "--notify-endpoint",
            &endpoint,
            "--notify-secret-file",
            secret_file.to_str().unwrap(),
            "--notify-queue-size",
            "2",
            "--node-name",
            "bin-node-1",
        ],
    );
    // The endpoint's series exist from the start.
    assert_eq!(
        metric(&w, r#"wharf_notify_events_dropped_total{endpoint="audit"}"#),
        Some(0.0)
    );
    let (d0, id0) = push_image(&w, "acme/app", "t0", 0);
    assert!(
        eventually(Duration::from_secs(10), || rx.held() == 1),
        "the receiver holds the first delivery"
    );
    let mut pushed = vec![(d0, id0)];
    for i in 1..=5u8 {
        // Each push is answered though the queue is full.
        pushed.push(push_image(&w, "acme/app", &format!("t{i}"), i));
    }
    assert_eq!(
        metric(&w, r#"wharf_notify_events_dropped_total{endpoint="audit"}"#),
        Some(3.0)
    );
    assert_eq!(
        metric(&w, r#"wharf_notify_events_queued_total{endpoint="audit"}"#),
        Some(3.0)
    );
    assert_eq!(
        metric(&w, r#"wharf_notify_queue_depth{endpoint="audit"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(&w, r#"wharf_notify_queue_capacity{endpoint="audit"}"#),
        Some(2.0)
    );
    rx.set_open(true);
    let got = rx.wait_for(3);
    for (i, d) in got.iter().enumerate() {
        assert!(
            d.verifies(SECRET),
            "delivery {i} is signed with the secret file's secret"
        );
        assert!(!d.verifies("another-secret-0123456789"));
        let e = d.event();
        let (digest, request_id) = &pushed[i];
        assert_eq!(e["action"], "manifest.push");
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["repository"], "acme/app");
        assert_eq!(e["tag"], format!("t{i}"));
        assert_eq!(&e["digest"], digest);
        assert_eq!(&e["request_id"], request_id, "the push's X-Request-Id");
        assert_eq!(e["node"], "bin-node-1");
        assert_eq!(e["actor"]["kind"], "anonymous");
        assert_eq!(
            e["media_type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert!(e["size"].as_u64().unwrap() > 0);
        assert_eq!(
            d.header("content-type"),
            "application/vnd.wharf.events.v1+json"
        );
        assert!(
            d.header("user-agent").starts_with("wharf/"),
            "{:?}",
            d.headers
        );
    }
    assert!(eventually(Duration::from_secs(5), || {
        metric(
            &w,
            r#"wharf_notify_events_delivered_total{endpoint="audit"}"#,
        ) == Some(3.0)
    }));
    assert_eq!(
        metric(&w, r#"wharf_notify_endpoint_failing{endpoint="audit"}"#),
        Some(0.0)
    );
}

/// `wharf admin --url ADMIN ARGS…`: exit code, stdout, stderr.
fn wharf_admin(w: &Wharf, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["admin", "--url", &w.admin])
        .args(args)
        .env_remove("WHARF_ADMIN_TOKEN")
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_URL")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn wharf_admin_notification_sets_lists_shows_and_deletes_a_tenants_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start(&dir.path().join("data"));
    let ok = |args: &[&str]| {
        let (code, out, err) = wharf_admin(&w, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    ok(&["tenant", "create", "acme"]);
    ok(&["tenant", "create", "beta"]);
    let given = Receiver::start();
    let generated = Receiver::start();
    let beta = Receiver::start();
    let secret_file = dir.path().join("acme.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();

    // With a secret from a file: not echoed.
    let out = ok(&[
        "notification",
        "set",
        "acme",
        "ci",
        &given.url(),
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], "ci");
    assert_eq!(shown["url"], given.url());
    assert_eq!(shown["pulls"], false);
    assert!(
        !out.contains(SECRET) && shown.get("secret").is_none(),
        "{out}"
    );
    // Without: generated, and printed alone with --secret-only.
    let out = ok(&[
        "notification",
        "set",
        "acme",
        "gen",
        &generated.url(),
        "--pulls",
        "--secret-only",
    ]);
    let generated_secret = out.trim().to_string();
    assert!(generated_secret.starts_with("whsec_"), "{out}");
    ok(&["notification", "set", "beta", "ci", &beta.url()]);

    let out = ok(&["notification", "list", "acme"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ci", "gen"]);
    assert!(
        !out.contains(SECRET) && !out.contains(&generated_secret),
        "{out}"
    );

    // In force at once: acme's push reaches acme's webhooks, each signed
    // with its own secret, and not beta's.
    let (digest, _) = push_image(&w, "acme/app", "v1", 7);
    let got = given.wait_for(1);
    assert!(got[0].verifies(SECRET));
    assert_eq!(got[0].event()["digest"], digest);
    let got = generated.wait_for(1);
    assert!(got[0].verifies(&generated_secret));
    assert!(!got[0].verifies(SECRET));
    // Pulls only to the one that asked.
    let r = client()
        .get(format!("{}/v2/acme/app/manifests/v1", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = generated.wait_for(2);
    assert_eq!(got[1].event()["action"], "manifest.pull");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(given.seen().len(), 1);
    assert!(
        beta.seen().is_empty(),
        "beta's webhook gets none of acme's events"
    );

    // `show` has this node's counters.
    assert!(eventually(Duration::from_secs(5), || {
        let out = ok(&["notification", "show", "acme", "ci"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["delivery"]["delivered"] == 1
    }));

    // Refused: by the command line (exit 2) and by the server (exit 1),
    // each saying why; and a bad body to the API is a 400 with a JSON
    // error.
    let (code, _, err) = wharf_admin(
        &w,
        &["notification", "set", "acme", "x", "ftp://example.com/"],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("http:// or https://"), "{err}");
    let (code, _, err) = wharf_admin(&w, &["notification", "set", "nobody", "x", &given.url()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404 NOT_FOUND"), "{err}");
    let r = client()
        .put(format!("{}/admin/v1/tenants/acme/notifications/x", w.admin))
        .json(&serde_json::json!({"url": "gopher://example.com/"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "INVALID");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("http:// or https://"),
        "{body}"
    );

    ok(&["notification", "delete", "acme", "ci"]);
    let (code, _, err) = wharf_admin(&w, &["notification", "show", "acme", "ci"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404 NOT_FOUND"), "{err}");
    push_image(&w, "acme/app", "v2", 8);
    generated.wait_for(3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        given.seen().len(),
        1,
        "a deleted webhook gets no more events"
    );
}
