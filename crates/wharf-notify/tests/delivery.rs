//! Deliveries to real HTTP receivers on `127.0.0.1:0`: signed, retried
//! after a receiver comes back, isolated from each other, dropped and
//! counted when a queue is full, never waited for by the caller.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::Semaphore;
use wharf_notify::{sign, Action, Actor, Event, Notifier, NotifyConfig, Secret, Target};

/// What a receiver saw of one delivery.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver: records deliveries, answers `status`, and (while `gate`
/// has no permits) holds each request until one is added.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<Mutex<StatusCode>>,
    gate: Arc<Semaphore>,
    addr: SocketAddr,
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Held here while the gate is shut.
    let permit = r.gate.acquire().await.unwrap();
    permit.forget();
    r.gate.add_permits(1);
    r.seen.lock().unwrap().push(Seen { headers, body });
    *r.status.lock().unwrap()
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let r = Receiver {
            seen: Arc::default(),
            status: Arc::new(Mutex::new(StatusCode::OK)),
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

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Holds every request from now on until [`Receiver::open`].
    async fn shut(&self) {
        self.gate.acquire().await.unwrap().forget();
    }

    fn open(&self) {
        self.gate.add_permits(1);
    }
}

fn target(id: &str, url: &str, secret: &str) -> Target {
    Target::new(id.into(), url, Secret::new(secret.as_bytes()), false).unwrap()
}

fn event(tag: &str) -> Event {
    let mut e = Event::new(
        Action::ManifestPush,
        "acme/app",
        Actor::anonymous(),
        Some("req-1".into()),
        "test-node",
    );
    e.tag = Some(tag.into());
    e
}

fn fast() -> NotifyConfig {
    NotifyConfig {
        node: "test-node".into(),
        // Longer than any receiver here is held shut.
        timeout: Duration::from_secs(10),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..NotifyConfig::default()
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

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn a_delivery_is_signed_over_timestamp_and_body() {
    let r = Receiver::start().await;
    let secret = "whsec_a-test-secret-of-some-length";
    let n = Notifier::new(fast(), vec![target("node-1", &r.url(), secret)]).unwrap();
    let e = event("v1");
    n.notify(&e, &[]);
    assert!(eventually(Duration::from_secs(5), || r.seen().len() == 1).await);
    let got = &r.seen()[0];
    assert_eq!(
        got.body,
        e.body(),
        "the body is the event's envelope, byte for byte"
    );
    assert_eq!(header(got, "content-type"), wharf_notify::event::MEDIA_TYPE);
    assert_eq!(header(got, sign::EVENT_ID_HEADER), e.id);
    assert_eq!(header(got, sign::ATTEMPT_HEADER), "1");
    let ts: u64 = header(got, sign::TIMESTAMP_HEADER).parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) <= 5, "timestamp {ts} is now ({now})");
    let sig = header(got, sign::SIGNATURE_HEADER);
    assert!(sign::verify(secret.as_bytes(), ts, &got.body, sig), "{sig}");
    assert!(!sign::verify(
        b"another-secret-entirely",
        ts,
        &got.body,
        sig
    ));
    assert!(
        eventually(Duration::from_secs(2), || n
            .endpoint("node-1")
            .unwrap()
            .delivered
            == 1)
        .await
    );
    let s = n.endpoint("node-1").unwrap();
    assert_eq!(
        (s.queued, s.dropped, s.failed(), s.failing),
        (1, 0, 0, false)
    );
}

#[tokio::test]
async fn retries_deliver_once_a_receiver_that_was_down_comes_back() {
    // A port nobody listens on, for now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = NotifyConfig {
        max_attempts: 30,
        ..fast()
    };
    let url = format!("http://{addr}/hook");
    let n = Notifier::new(config, vec![target("down", &url, "0123456789abcdef")]).unwrap();
    let e = event("v1");
    let started = Instant::now();
    n.notify(&e, &[]);
    println!(
        "notify with the receiver down returned in {:?}",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(5), || n
            .endpoint("down")
            .unwrap()
            .attempts_failed
            >= 2)
        .await,
        "attempts fail while it is down"
    );
    assert!(n.endpoint("down").unwrap().failing);
    // The receiver comes back on the same address.
    let back = tokio::net::TcpListener::bind(addr).await.unwrap();
    let r = Receiver::serve(back).await;
    assert!(eventually(Duration::from_secs(10), || r.seen().len() == 1).await);
    let got = &r.seen()[0];
    assert_eq!(got.body, e.body());
    let attempt: u32 = header(got, sign::ATTEMPT_HEADER).parse().unwrap();
    assert!(attempt >= 3, "delivered by a retry (attempt {attempt})");
    let ts: u64 = header(got, sign::TIMESTAMP_HEADER).parse().unwrap();
    assert!(sign::verify(
        b"0123456789abcdef",
        ts,
        &got.body,
        header(got, sign::SIGNATURE_HEADER)
    ));
    assert!(
        eventually(Duration::from_secs(2), || !n
            .endpoint("down")
            .unwrap()
            .failing)
        .await
    );
    let s = n.endpoint("down").unwrap();
    assert_eq!((s.delivered, s.failed()), (1, 0));
}

#[tokio::test]
async fn a_slow_endpoint_delays_neither_the_caller_nor_another_endpoint() {
    let slow = Receiver::start().await;
    let quick = Receiver::start().await;
    slow.shut().await;
    let n = Notifier::new(
        fast(),
        vec![
            target("slow", &slow.url(), "0123456789abcdef"),
            target("quick", &quick.url(), "0123456789abcdef"),
        ],
    )
    .unwrap();
    let started = Instant::now();
    for i in 0..5 {
        n.notify(&event(&format!("t{i}")), &[]);
    }
    let took = started.elapsed();
    println!("5 notifies with one endpoint blocked returned in {took:?}");
    assert!(
        eventually(Duration::from_secs(5), || quick.seen().len() == 5).await,
        "the quick endpoint got every event while the slow one holds its first"
    );
    assert!(
        slow.seen().is_empty(),
        "the slow one is still holding the first"
    );
    // One held by the receiver, four waiting behind it.
    assert_eq!(n.endpoint("slow").unwrap().depth, 4);
    slow.open();
    assert!(eventually(Duration::from_secs(5), || slow.seen().len() == 5).await);
    // In order.
    let tags: Vec<String> = slow
        .seen()
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
            v["events"][0]["tag"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4"]);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let r = Receiver::start().await;
    r.shut().await;
    let config = NotifyConfig {
        queue_size: 3,
        ..fast()
    };
    let n = Notifier::new(config, vec![target("small", &r.url(), "0123456789abcdef")]).unwrap();
    n.notify(&event("first"), &[]);
    // The first is taken out of the queue and held by the receiver.
    assert!(
        eventually(Duration::from_secs(5), || n
            .endpoint("small")
            .unwrap()
            .depth
            == 0)
        .await
    );
    let started = Instant::now();
    for i in 0..10 {
        n.notify(&event(&format!("t{i}")), &[]);
    }
    println!(
        "10 notifies into a queue of 3 returned in {:?}",
        started.elapsed()
    );
    let s = n.endpoint("small").unwrap();
    assert_eq!((s.queued, s.dropped, s.depth, s.capacity), (4, 7, 3, 3));
    let mut out = wharf_telemetry::Exposition::new();
    n.render(&mut out);
    let text = out.finish();
    assert!(
        text.contains(r#"wharf_notify_events_dropped_total{endpoint="small"} 7"#),
        "{text}"
    );
    r.open();
    assert!(eventually(Duration::from_secs(5), || r.seen().len() == 4).await);
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_a_5xx_is() {
    let r = Receiver::start().await;
    *r.status.lock().unwrap() = StatusCode::BAD_REQUEST;
    let config = NotifyConfig {
        max_attempts: 3,
        ..fast()
    };
    let n = Notifier::new(config, vec![target("e", &r.url(), "0123456789abcdef")]).unwrap();
    n.notify(&event("a"), &[]);
    assert!(
        eventually(Duration::from_secs(5), || n
            .endpoint("e")
            .unwrap()
            .failed_rejected
            == 1)
        .await
    );
    assert_eq!(r.seen().len(), 1, "refused for good: sent once");
    *r.status.lock().unwrap() = StatusCode::SERVICE_UNAVAILABLE;
    n.notify(&event("b"), &[]);
    assert!(
        eventually(Duration::from_secs(5), || n
            .endpoint("e")
            .unwrap()
            .failed_attempts
            == 1)
        .await
    );
    assert_eq!(r.seen().len(), 4, "three attempts of the second");
    let s = n.endpoint("e").unwrap();
    assert_eq!((s.attempts_failed, s.delivered, s.failing), (4, 0, true));
}

#[tokio::test]
async fn pulls_go_only_to_endpoints_that_ask_and_tenant_lanes_retire_when_idle() {
    let r = Receiver::start().await;
    let config = NotifyConfig {
        idle_stop: Duration::from_millis(300),
        ..fast()
    };
    let n = Notifier::new(config, vec![]).unwrap();
    let quiet = Arc::new(target("acme/quiet", &r.url(), "0123456789abcdef"));
    let mut wants = target("acme/pulls", &r.url(), "0123456789abcdef");
    wants.pulls = true;
    let wants = Arc::new(wants);
    let tenant = [quiet, wants];
    let mut pull = event("v1");
    pull.action = Action::ManifestPull;
    assert!(n.wants(Action::ManifestPull, &tenant));
    assert!(!n.wants(Action::ManifestPull, &tenant[..1]));
    assert!(!n.wants(Action::ManifestPush, &[]));
    n.notify(&pull, &tenant);
    assert!(eventually(Duration::from_secs(5), || r.seen().len() == 1).await);
    assert!(
        n.endpoint("acme/quiet").is_none(),
        "no lane for an endpoint that got nothing"
    );
    assert_eq!(n.endpoint("acme/pulls").unwrap().delivered, 1);
    assert!(
        eventually(Duration::from_secs(5), || n
            .endpoint("acme/pulls")
            .is_none())
        .await,
        "an idle tenant lane stops"
    );
    // And opens again on the next event.
    n.notify(&pull, &tenant);
    assert!(eventually(Duration::from_secs(5), || r.seen().len() == 2).await);
}

#[tokio::test]
async fn a_public_only_endpoint_never_reaches_a_private_address() {
    let r = Receiver::start().await;
    let config = NotifyConfig {
        max_attempts: 2,
        ..fast()
    };
    let by_name = r.url().replace("127.0.0.1", "localhost");
    let n = Notifier::new(
        config,
        vec![
            target("literal", &r.url(), "0123456789abcdef").with_public_only(true),
            target("name", &by_name, "0123456789abcdef").with_public_only(true),
            // The same receiver, set by the operator: reached.
            target("operator", &r.url(), "0123456789abcdef"),
        ],
    )
    .unwrap();
    n.notify(&event("a"), &[]);
    let done =
        |id: &str, f: fn(&wharf_notify::EndpointStats) -> u64| n.endpoint(id).map_or(0, |s| f(&s));
    assert!(
        eventually(Duration::from_secs(10), || done("literal", |s| s
            .failed_rejected)
            == 1
            && done("name", |s| s.failed_attempts) == 1
            && done("operator", |s| s.delivered) == 1)
        .await,
        "{:?}",
        n.endpoints()
    );
    // An address is refused without a try; a name that resolves only to
    // private addresses finds nothing to connect to, every attempt.
    assert_eq!(r.seen().len(), 1, "only the operator's endpoint got it");
    assert_eq!(n.endpoint("literal").unwrap().attempts_failed, 1);
    assert_eq!(n.endpoint("name").unwrap().attempts_failed, 2);
}
