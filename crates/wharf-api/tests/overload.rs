//! Overload protection over real sockets: the connection cap and its
//! waiting room, admission
//! classes, tenant shares, the bounded wait, header-read and idle timeouts,
//! the minimum upload rate and the graceful drain on shutdown.
//!
//! Each test starts its own server (`serve_with` on `127.0.0.1:0`, over a
//! temporary directory) with small limits, holds slots the way a real
//! client would (a blob `GET` whose body is not read holds a pull slot until
//! the body is sent; an upload body sent slowly holds a push slot), and
//! checks what the next client sees on the wire. Every wait is bounded, so a
//! hang fails the test instead of hanging the suite.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{error_code, header, image_manifest, sha256, OCI_MANIFEST};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wharf_admission::{Admission, Class, ClassLimits};
use wharf_api::{AppState, ConnStats, MinRate, ServerConfig};
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

/// The longest any single step may take before the test fails, and the
/// generous upper bound of timing assertions (the machine may be loaded).
const WAIT: Duration = Duration::from_secs(10);

/// A blob big enough that its response cannot fit in the socket buffers of
/// a client that stops reading, so the server stays mid-body.
const BIG: usize = 16 << 20;

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// With `max_connections = 3` and three connections open, a fourth is
/// answered at once with the canned `503` (whether or not it sent a
/// request), a real HTTP client parses that answer, and once one of the
/// three closes a new connection is served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_the_extra_connection_at_once_with_503() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            max_connections: 3,
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(srv.addr).await;
        let r = request(&mut s, &get(srv.addr, "/v2/", true)).await;
        assert_eq!(r.status, 200, "a connection under the cap is served");
        held.push(s);
    }
    eventually("three connections open", || {
        srv.stats.open.load(Ordering::Relaxed) == 3
    })
    .await;

    // The fourth sends a pull and gets the refusal, fast, then EOF.
    let started = Instant::now();
    let mut s = connect(srv.addr).await;
    s.write_all(get(srv.addr, "/v2/a/app/manifests/latest", true).as_bytes())
        .await
        .unwrap();
    let r = within(WAIT, "the refusal", read_response(&mut s))
        .await
        .expect("a refusal, not a reset");
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.code(), "UNAVAILABLE", "{r:?}");
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    assert_closed(&mut s, WAIT).await;

    // A fifth that sends nothing is answered all the same.
    let started = Instant::now();
    let mut s = connect(srv.addr).await;
    let r = within(WAIT, "the refusal", read_response(&mut s))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(started.elapsed() < Duration::from_secs(1));

    assert_eq!(srv.stats.accepted_total.load(Ordering::Relaxed), 3);
    assert_eq!(srv.stats.refused_total.load(Ordering::Relaxed), 2);

    // The three held connections are still served.
    let r = request(&mut held[0], &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200);

    // One closes; its slot is given back and a new connection is served.
    drop(held.pop());
    eventually("the closed connection's slot to be freed", || {
        srv.stats.open.load(Ordering::Relaxed) == 2
    })
    .await;
    let mut s = connect(srv.addr).await;
    let r = request(&mut s, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(srv.stats.accepted_total.load(Ordering::Relaxed), 4);
}

/// Past the cap, a connection waits in the waiting room: each request on it
/// is answered `503` with `Retry-After: 1` at once, the connection is kept,
/// a request sent again at once is answered only after that second (the
/// node does not spend a request's work on a client that ignores
/// `Retry-After`), and once a slot frees the same connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_connection_waits_is_paced_and_is_served_when_a_slot_frees() {
    let (srv, held) = one_slot_taken(4).await;

    let mut w = connect(srv.addr).await;
    let started = Instant::now();
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    let first = started.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.header("connection"),
        None,
        "the waiting connection is kept"
    );
    assert_eq!(r.code(), "UNAVAILABLE");
    assert!(
        first < Duration::from_millis(500),
        "first refusal took {first:?}"
    );
    assert_eq!(srv.stats.waiting.load(Ordering::Relaxed), 1);

    // Asked again at once: answered, but a second after the first answer.
    let again = Instant::now();
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    let paced = again.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        paced >= Duration::from_millis(800) && paced < Duration::from_secs(3),
        "the repeated request was answered after {paced:?}, not about 1 s"
    );
    assert_eq!(srv.stats.refused_total.load(Ordering::Relaxed), 2);

    // The held connection goes; the waiting one gets its slot.
    drop(held);
    eventually("the held slot to be freed", || {
        srv.stats.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let r = request(&mut w, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(&mut w, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200, "served from then on: {r:?}");
    assert_eq!(srv.stats.waiting.load(Ordering::Relaxed), 0);
    assert_eq!(srv.stats.open.load(Ordering::Relaxed), 1);
    assert_eq!(srv.stats.promoted_total.load(Ordering::Relaxed), 1);
}

/// A waiting connection whose refused request has a body (or asks to
/// close) cannot be kept without reading that body: it gets the `503` with
/// `Connection: close` and is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_connection_that_sends_a_body_is_refused_and_closed() {
    let (srv, _held) = one_slot_taken(4).await;
    // A pull with a body: not a push, so no reserved connection for it.
    let mut w = connect(srv.addr).await;
    let head = format!(
        "GET /v2/a/app/manifests/1 HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello",
        srv.addr
    );
    let r = request(&mut w, &head).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut w, WAIT).await;
    // Connection: close is honoured the same way.
    let mut w = connect(srv.addr).await;
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", false)).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut w, WAIT).await;
    eventually("the waiting room to be empty", || {
        srv.stats.waiting.load(Ordering::Relaxed) == 0
    })
    .await;
}

/// A waiting connection that cannot send a whole request head within the
/// header timeout (a slow-header client) is refused and closed, even when a
/// slot is free by then: slots go to clients with real requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_client_in_the_waiting_room_gets_no_slot() {
    let (srv, held) = one_slot_taken(4).await;
    let mut slow = connect(srv.addr).await;
    slow.write_all(b"GET /v2/a/app/manifests/1 HTTP/1.1\r\nHo")
        .await
        .unwrap();
    eventually("the slow client to wait", || {
        srv.stats.waiting.load(Ordering::Relaxed) == 1
    })
    .await;
    drop(held);
    eventually("the held slot to be freed", || {
        srv.stats.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let r = within(WAIT, "the refusal", read_response(&mut slow))
        .await
        .expect("a refusal, not a reset");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(srv.stats.promoted_total.load(Ordering::Relaxed), 0);
    assert_eq!(srv.stats.open.load(Ordering::Relaxed), 0);
}

/// The waiting room is bounded: past it a connection gets the canned `503`
/// with `Connection: close` at once and is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_waiting_room_a_connection_is_refused_and_closed() {
    let (srv, _held) = one_slot_taken(1).await;
    let mut w = connect(srv.addr).await;
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    assert_eq!((r.status, r.header("connection")), (503, None));
    let started = Instant::now();
    let mut x = connect(srv.addr).await;
    let r = request(&mut x, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_closed(&mut x, WAIT).await;
    assert_eq!(srv.stats.waiting.load(Ordering::Relaxed), 1);
}

/// While connections wait, a served connection idle between requests is
/// closed after about 2 s (long before its 30 s idle timeout), and the
/// waiting connection gets its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_connections_wait_an_idle_served_connection_gives_up_its_slot() {
    let (srv, mut held) = one_slot_taken(4).await;
    let mut w = connect(srv.addr).await;
    let started = Instant::now();
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_closed(&mut held, WAIT).await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(6),
        "the idle connection was closed after {closed_after:?}"
    );
    drop(held);
    eventually("the idle connection's slot to be freed", || {
        srv.stats.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    assert_eq!(r.status, 404, "served (no such manifest): {r:?}");
}

/// A real HTTP client keeps its connection in the waiting room: each of its
/// pulls is answered (`503` with `Retry-After`), none is a protocol error,
/// and it is served once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_http_client_in_the_waiting_room_sees_503s_then_is_served() {
    let (srv, held) = one_slot_taken(4).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = within(
            WAIT,
            "a refusal",
            client.get(srv.url("/v2/a/app/manifests/1")).send(),
        )
        .await
        .expect("an answer, not an error");
        assert_eq!(r.status(), 503);
        assert_eq!(header(&r, "retry-after"), "1");
        assert_eq!(error_code(r).await, "UNAVAILABLE");
    }
    drop(held);
    let r = within(
        WAIT,
        "an answer",
        client.get(srv.url("/v2/a/app/manifests/1")).send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404, "served (no such manifest)");
}

/// On shutdown, connections in the waiting room are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_waiting_connections() {
    let (mut srv, _held) = one_slot_taken(4).await;
    let mut w = connect(srv.addr).await;
    let r = request(&mut w, &get(srv.addr, "/v2/a/app/manifests/1", true)).await;
    assert_eq!(r.status, 503);
    srv.stop.take().unwrap().send(()).unwrap();
    assert_closed(&mut w, WAIT).await;
    eventually("the waiting room to be empty", || {
        srv.stats.waiting.load(Ordering::Relaxed) == 0
    })
    .await;
}

/// A real HTTP client (reqwest/hyper) connecting to a node at its
/// connection cap should see the `503` with `Retry-After`, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_http_client_sees_the_connection_cap_503() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            max_connections: 1,
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;
    let mut held = connect(srv.addr).await;
    let r = request(&mut held, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200);
    let mut failures = Vec::new();
    for _ in 0..20 {
        let r = reqwest::Client::new()
            .get(srv.url("/v2/a/app/manifests/latest"))
            .timeout(WAIT)
            .send()
            .await;
        match r {
            Ok(r) => {
                assert_eq!(r.status(), 503);
                assert_eq!(header(&r, "retry-after"), "1");
                assert_eq!(error_code(r).await, "UNAVAILABLE");
            }
            Err(e) => failures.push(format!("{e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 requests saw no 503: {:?}",
        failures.len(),
        failures.first()
    );
}

/// At the connection cap pulls are refused, but a push (or any request
/// that is not a pull) is served on one of a few reserved connections: a
/// flood of pulls that fills the cap cannot starve pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_push_is_served_on_a_reserved_connection() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            max_connections: 2,
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(srv.addr).await;
        let r = request(&mut s, &get(srv.addr, "/v2/", true)).await;
        assert_eq!(r.status, 200);
        held.push(s);
    }
    let client = reqwest::Client::new();
    let pull = client
        .get(srv.url("/v2/a/app/manifests/latest"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 503, "a pull at the cap is refused");
    let push = client
        .post(srv.url("/v2/a/app/blobs/uploads/"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), 202, "a push at the cap is served");
    let ping = client
        .get(srv.url("/v2/"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200, "the client's /v2/ probe too");
}

/// With the pull class full (its two slots held by blob `GET`s whose bodies
/// are not read), another pull gets `503` with `Retry-After`, while a push
/// and admin requests (`/v2/`, tags list) are served; once a pull slot is
/// freed, pulls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_are_isolated_when_the_pull_class_is_full() {
    let srv = TestServer::start(Opts::admission(Admission::new(
        limits(2),
        limits(2),
        limits(2),
    )))
    .await;
    let big = srv.push_blob("acme/big", &big_blob()).await;
    srv.push_image("acme/app", "v1").await;

    let held1 = hold_blob_get(srv.addr, "acme/big", &big).await;
    let _held2 = hold_blob_get(srv.addr, "acme/big", &big).await;
    assert_eq!(srv.stats_of(Class::Pull).in_flight, 2);

    // Another pull: refused at once.
    let r = srv.send(Method::GET, "/v2/acme/app/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    let r = srv.send(Method::HEAD, "/v2/acme/app/manifests/v1").await;
    assert_eq!(r.status(), 503, "a manifest HEAD is a pull too");
    assert_eq!(header(&r, "retry-after"), "1");

    // Pushes and admin work are not affected, nor are a pusher's layer
    // checks (blob HEAD is push work).
    let r = srv
        .send(Method::HEAD, &format!("/v2/acme/big/blobs/{big}"))
        .await;
    assert_eq!(r.status(), 200, "blob HEAD while pulls are full");
    let r = srv.send(Method::POST, "/v2/acme/new/blobs/uploads/").await;
    assert_eq!(r.status(), 202, "push while pulls are full");
    let r = srv.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 200, "base endpoint while pulls are full");
    let r = srv.send(Method::GET, "/v2/acme/app/tags/list").await;
    assert_eq!(r.status(), 200, "tags list while pulls are full");
    let tags: serde_json::Value = r.json().await.unwrap();
    assert_eq!(tags["tags"][0], "v1");

    let pull = srv.stats_of(Class::Pull);
    assert_eq!(pull.refused_node_total, 2);
    assert_eq!(pull.in_flight, 2);
    assert_eq!(srv.stats_of(Class::Push).refused_node_total, 0);
    assert_eq!(srv.stats_of(Class::Admin).refused_node_total, 0);

    // A pull slot frees when its client goes away.
    drop(held1);
    eventually("the dropped pull's slot to be freed", || {
        srv.stats_of(Class::Pull).in_flight == 1
    })
    .await;
    let r = srv.send(Method::GET, "/v2/acme/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
}

/// With the push class full (its one slot held by an upload chunk whose
/// body is still arriving), a client pushing a large body is refused with
/// `503`, and sees that answer rather than a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_with_a_large_body_still_sees_its_503() {
    let srv = TestServer::start(Opts::admission(Admission::new(
        limits(4),
        limits(1),
        limits(4),
    )))
    .await;
    let r = srv.send(Method::POST, "/v2/t/up/blobs/uploads/").await;
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    let mut held = connect(srv.addr).await;
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789",
        srv.addr
    );
    held.write_all(head.as_bytes()).await.unwrap();
    eventually("the slow PATCH to hold the push slot", || {
        srv.stats_of(Class::Push).in_flight == 1
    })
    .await;

    let big = big_blob();
    let d = sha256(&big);
    let mut failures = Vec::new();
    for _ in 0..10 {
        let r = srv
            .client
            .post(srv.url(&format!("/v2/t/other/blobs/uploads/?digest={d}")))
            .body(big.clone())
            .timeout(WAIT)
            .send()
            .await;
        match r {
            Ok(r) => {
                assert_eq!(r.status(), 503);
                assert_eq!(header(&r, "retry-after"), "1");
            }
            Err(e) => failures.push(format!("{e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 10 refused pushes saw no answer: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(srv.stats_of(Class::Push).refused_node_total, 10);
}

/// Pull class of 4 with `tenant_share = 0.5` (a share of 2 slots): tenant
/// `a` holding 2 slots (the class now half full) gets `429` with
/// `Retry-After`, while tenant `b` is admitted up to the class limit; with
/// the class full everyone gets `503`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_over_its_share_gets_429_while_another_tenant_is_admitted() {
    let mut pull = limits(4);
    pull.tenant_share = 0.5;
    let srv = TestServer::start(Opts::admission(Admission::new(pull, limits(4), limits(4)))).await;
    let big = big_blob();
    let a_big = srv.push_blob("a/big", &big).await;
    let b_big = srv.push_blob("b/big", &big).await;
    let small = srv.push_blob("a/small", b"small").await;
    srv.push_blob("b/small", b"small").await;

    let _a1 = hold_blob_get(srv.addr, "a/big", &a_big).await;
    let _a2 = hold_blob_get(srv.addr, "a/big", &a_big).await;
    assert_eq!(srv.stats_of(Class::Pull).in_flight, 2);

    let r = srv
        .send(Method::GET, &format!("/v2/a/small/blobs/{small}"))
        .await;
    assert_eq!(
        r.status(),
        429,
        "tenant a holds its share of a half-full class"
    );
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");

    // Tenant b is admitted (and, reading its body, gives the slot back).
    let r = srv
        .send(Method::GET, &format!("/v2/b/small/blobs/{small}"))
        .await;
    assert_eq!(r.status(), 200, "tenant b is under its share");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"small");
    // ... and may take slots up to the class limit.
    let _b1 = hold_blob_get(srv.addr, "b/big", &b_big).await;
    let _b2 = hold_blob_get(srv.addr, "b/big", &b_big).await;
    assert_eq!(srv.stats_of(Class::Pull).in_flight, 4);

    // The class is full: node busy for everyone.
    for repo in ["b/small", "a/small"] {
        let r = srv
            .send(Method::GET, &format!("/v2/{repo}/blobs/{small}"))
            .await;
        assert_eq!(r.status(), 503, "{repo} with the class full");
        assert_eq!(header(&r, "retry-after"), "1");
        assert_eq!(error_code(r).await, "UNAVAILABLE");
    }
    let pull = srv.stats_of(Class::Pull);
    assert_eq!(pull.refused_tenant_total, 1);
    assert_eq!(pull.refused_node_total, 2);
}

/// The share is work-conserving: with `tenant_share = 0.25` of a class of
/// 4 (a share of 1 slot), a lone tenant may still take slots while the
/// class is under half full, and is refused with `429` from half full on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_tenant_may_exceed_its_share_until_the_class_is_half_full() {
    let mut pull = limits(4);
    pull.tenant_share = 0.25;
    let srv = TestServer::start(Opts::admission(Admission::new(pull, limits(4), limits(4)))).await;
    let big = srv.push_blob("solo/big", &big_blob()).await;

    let _h1 = hold_blob_get(srv.addr, "solo/big", &big).await;
    let _h2 = hold_blob_get(srv.addr, "solo/big", &big).await;
    assert_eq!(srv.stats_of(Class::Pull).in_flight, 2);
    let r = srv
        .send(Method::GET, &format!("/v2/solo/big/blobs/{big}"))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "1");
    // Another tenant still gets in.
    let r = srv.send(Method::GET, "/v2/other/app/manifests/v1").await;
    assert_eq!(r.status(), 404, "admitted, and the manifest is unknown");
}

/// With `max_wait` > 0, a pull that finds its class full waits, and is
/// admitted (and served) when a slot frees; while `max_waiters` requests
/// already wait, another is refused at once rather than queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_admitted_when_a_slot_frees_and_extra_waiters_are_refused() {
    let mut pull = limits(1);
    pull.max_wait = Duration::from_secs(30);
    pull.max_waiters = 1;
    let srv = TestServer::start(Opts::admission(Admission::new(pull, limits(4), limits(4)))).await;
    let big = srv.push_blob("t/big", &big_blob()).await;
    let small = srv.push_blob("t/small", b"small blob").await;

    let held = hold_blob_get(srv.addr, "t/big", &big).await;
    assert_eq!(srv.stats_of(Class::Pull).in_flight, 1);

    let client = srv.client.clone();
    let url = srv.url(&format!("/v2/t/small/blobs/{small}"));
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let r = client.get(url).timeout(WAIT * 4).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        (status, body, started.elapsed())
    });
    eventually("the second pull to wait for a slot", || {
        srv.stats_of(Class::Pull).waiting == 1
    })
    .await;
    assert!(
        !waiter.is_finished(),
        "the waiter was answered while waiting"
    );

    // max_waiters (1) already wait: the next pull is refused now, not after
    // max_wait.
    let started = Instant::now();
    let r = srv
        .send(Method::GET, &format!("/v2/t/small/blobs/{small}"))
        .await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    assert!(took < Duration::from_secs(3), "refusal took {took:?}");
    assert!(!waiter.is_finished());

    // Free the slot: the waiter is admitted and served.
    drop(held);
    let (status, body, took) = within(WAIT, "the waiter", waiter).await.unwrap();
    assert_eq!(status, 200, "the waiter is admitted once the slot frees");
    assert_eq!(body.as_ref(), b"small blob");
    assert!(
        took < Duration::from_secs(30),
        "waited {took:?}, past max_wait"
    );
    let pull = srv.stats_of(Class::Pull);
    assert_eq!(pull.waiting, 0);
    assert_eq!(pull.refused_node_total, 1);
}

/// A request that waits for a full class is refused with `503` once
/// `max_wait` has passed, not held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_refused_with_503_when_max_wait_passes() {
    let mut pull = limits(1);
    pull.max_wait = Duration::from_millis(300);
    pull.max_waiters = 4;
    let srv = TestServer::start(Opts::admission(Admission::new(pull, limits(4), limits(4)))).await;
    let big = srv.push_blob("t/big", &big_blob()).await;
    let _held = hold_blob_get(srv.addr, "t/big", &big).await;

    let started = Instant::now();
    let r = srv
        .send(Method::GET, &format!("/v2/t/big/blobs/{big}"))
        .await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(
        took >= Duration::from_millis(250) && took < WAIT,
        "refused after {took:?}; max_wait is 300ms"
    );
    assert_eq!(srv.stats_of(Class::Pull).waiting, 0);
}

/// A client that sends half a request line and stops is disconnected
/// after about `header_read_timeout`, while another client is served in
/// the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_closes_a_client_that_stops_mid_request_line() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            header_read_timeout: Duration::from_millis(300),
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;

    let started = Instant::now();
    let mut slow = connect(srv.addr).await;
    slow.write_all(b"GET /v2/ HT").await.unwrap();

    // Others are served meanwhile, each on a connection of its own.
    for _ in 0..2 {
        let mut other = connect(srv.addr).await;
        let r = request(&mut other, &get(srv.addr, "/v2/", false)).await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rest = read_until_closed(&mut slow, WAIT).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < WAIT,
        "closed after {took:?}; header_read_timeout is 300ms"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        !text.starts_with("HTTP/1.1 2"),
        "the half request was served: {text}"
    );
    assert_eq!(
        srv.stats.idle_closed_total.load(Ordering::Relaxed),
        0,
        "it was the header timeout, not the idle timeout, that closed it"
    );
    // The server still serves new connections.
    let mut other = connect(srv.addr).await;
    let r = request(&mut other, &get(srv.addr, "/v2/", false)).await;
    assert_eq!(r.status, 200);
}

/// Once half the connection cap is in use, newly accepted connections get a
/// short header timeout (2 s), so slow-header clients cannot hold slots for
/// the full configured timeout while normal clients wait; connections
/// accepted before the pressure keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_connection_pressure_slow_headers_get_a_short_timeout() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(30),
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;
    // Two slow clients fill half the cap, under the normal timeout.
    let mut early = Vec::new();
    for _ in 0..2 {
        let mut s = connect(srv.addr).await;
        s.write_all(b"GET /v2/ HT").await.unwrap();
        early.push(s);
    }
    eventually("two connections open", || {
        srv.stats.open.load(Ordering::Relaxed) == 2
    })
    .await;
    // A third slow client arrives under pressure.
    let started = Instant::now();
    let mut late = connect(srv.addr).await;
    late.write_all(b"GET /v2/ HT").await.unwrap();
    read_until_closed(&mut late, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}; the pressured header timeout is 2 s"
    );
    // The early ones still hold their connections (30 s timeout).
    for s in &mut early {
        let mut byte = [0u8; 1];
        let still_open = tokio::time::timeout(Duration::from_millis(200), s.read(&mut byte))
            .await
            .is_err();
        assert!(still_open, "an early slow client was closed too");
    }
}

/// Between two requests on a keep-alive connection the server is waiting
/// for the next request's headers, so `header_read_timeout` bounds that
/// gap (hyper starts it when it starts reading a request head): a
/// keep-alive connection idles at most the shorter of the two timeouts.
/// Documented in docs/operations.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_idle_between_requests_is_closed_at_the_header_timeout() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;
    let mut s = connect(srv.addr).await;
    let r = request(&mut s, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200);
    let started = Instant::now();
    read_until_closed(&mut s, WAIT).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "idle keep-alive connection closed after {took:?}, not near the 300 ms header timeout"
    );
}

/// A client that connects and sends nothing at all has not sent its
/// headers within `header_read_timeout` either, and should be closed then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_closes_a_client_that_sends_nothing() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;
    let started = Instant::now();
    let mut silent = connect(srv.addr).await;
    read_until_closed(&mut silent, WAIT).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

/// An idle keep-alive connection is closed after about `idle_timeout`,
/// while one that keeps making requests more often than that stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_keep_alive_connection() {
    let idle_timeout = Duration::from_secs(1);
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            idle_timeout,
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;

    let mut idle = connect(srv.addr).await;
    let r = request(&mut idle, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"));
    let idle_since = Instant::now();

    // A busy connection: a request every 100ms for a second and a half.
    let mut busy = connect(srv.addr).await;
    let mut last = Instant::now();
    let mut starved = false;
    while idle_since.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last.elapsed() > idle_timeout / 3 {
            // This machine is too loaded to keep the busy client busy.
            starved = true;
            break;
        }
        let r = request(&mut busy, &get(srv.addr, "/v2/", true)).await;
        assert_eq!(r.status, 200, "a busy connection was closed");
        last = Instant::now();
    }

    read_until_closed(&mut idle, WAIT).await;
    let took = idle_since.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}; idle_timeout is 1s"
    );
    assert!(srv.stats.idle_closed_total.load(Ordering::Relaxed) >= 1);
    // The busy connection outlived idle_timeout by being busy (each of its
    // requests above was served on the same connection).
    if starved {
        eprintln!("the busy-connection check was cut short: the test was starved of CPU");
    }
}

/// A client that stops reading a response moves no bytes: the idle timeout
/// should close its connection and so free the pull slot it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_frees_the_slot_of_a_client_that_stopped_reading() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            idle_timeout: Duration::from_millis(500),
            ..quiet_config()
        },
        admission: Some(Admission::new(limits(2), limits(2), limits(2))),
        ..Opts::default()
    })
    .await;
    let big = srv.push_blob("t/big", &big_blob()).await;
    let mut stalled = hold_blob_get(srv.addr, "t/big", &big).await;
    assert_eq!(srv.stats_of(Class::Pull).in_flight, 1);
    eventually("the stalled reader's pull slot to be freed", || {
        srv.stats_of(Class::Pull).in_flight == 0
    })
    .await;
    // Reading now finds the response cut short.
    let got = read_until_closed(&mut stalled, WAIT).await;
    assert!(got.len() < BIG);
}

/// An upload chunk whose body arrives far below `MinRate` is cut off after
/// the grace period (an error response or a closed connection), its push
/// slot is freed, the bytes that did arrive are kept, and the upload
/// resumes from there to a complete blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_body_below_the_minimum_rate_is_cut_off_and_stays_resumable() {
    let srv = TestServer::start(Opts {
        admission: Some(Admission::new(limits(4), limits(4), limits(4))),
        min_rate: MinRate {
            bytes_per_sec: 64 * 1024,
            grace: Duration::from_millis(400),
        },
        ..Opts::default()
    })
    .await;
    let r = srv.send(Method::POST, "/v2/t/up/blobs/uploads/").await;
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");

    let content: Vec<u8> = (0..100u8).collect();
    let mut s = connect(srv.addr).await;
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n",
        srv.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // 48 bytes over 100ms, then nothing: far below 64 KiB/s.
    for chunk in content[..48].chunks(16) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = within(WAIT, "the cut-off", read_response(&mut s)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < WAIT,
        "cut off after {took:?}; grace is 400ms"
    );
    match answer {
        // An answer, if any, is an OCI error.
        Ok(r) => {
            assert_eq!(r.status, 400, "{r:?}");
            assert_eq!(r.code(), "BLOB_UPLOAD_INVALID", "{r:?}");
        }
        // Or the connection was closed.
        Err(e) => eprintln!("cut off by closing the connection: {e}"),
    }
    assert_closed(&mut s, WAIT).await;
    eventually("the trickling upload's push slot to be freed", || {
        srv.stats_of(Class::Push).in_flight == 0
    })
    .await;

    // The bytes that arrived are kept, and the upload resumes after them.
    let r = srv.send(Method::GET, &loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-47");
    let r = srv
        .client
        .patch(srv.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", "48-99")
        .body(content[48..].to_vec())
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-99");
    let d = sha256(&content);
    let r = srv
        .client
        .put(srv.url(&format!("{loc}?digest={d}")))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = srv.send(Method::GET, &format!("/v2/t/up/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[..]);
}

/// A manifest `PUT` whose body stalls should not hold a push slot for ever
/// (it is read without the minimum rate, and the idle timeout cannot cut a
/// request in progress).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_manifest_body_does_not_hold_a_push_slot_for_ever() {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            idle_timeout: Duration::from_millis(500),
            ..quiet_config()
        },
        admission: Some(Admission::new(limits(4), limits(1), limits(4))),
        min_rate: MinRate {
            bytes_per_sec: 64 * 1024,
            grace: Duration::from_millis(400),
        },
    })
    .await;
    let mut s = connect(srv.addr).await;
    let head = format!(
        "PUT /v2/t/app/manifests/v1 HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: 500\r\n\r\n{{\"schema",
        srv.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    eventually("the stalled PUT to be admitted", || {
        srv.stats_of(Class::Push).in_flight == 1
    })
    .await;
    eventually("the stalled PUT's push slot to be freed", || {
        srv.stats_of(Class::Push).in_flight == 0
    })
    .await;
}

/// On shutdown: new connections are refused, an idle keep-alive connection
/// is closed at once, an upload chunk in flight is finished and answered,
/// and `serve_with` returns as soon as it has, well within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_connections_and_drains_the_request_in_flight() {
    let grace = Duration::from_secs(20);
    let mut srv = TestServer::start(Opts {
        config: ServerConfig {
            shutdown_grace: grace,
            ..quiet_config()
        },
        admission: Some(Admission::new(limits(4), limits(4), limits(4))),
        ..Opts::default()
    })
    .await;
    let r = srv.send(Method::POST, "/v2/t/up/blobs/uploads/").await;
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");

    let mut idle = connect(srv.addr).await;
    let r = request(&mut idle, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200);

    let content = vec![7u8; 2000];
    let mut s = connect(srv.addr).await;
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 2000\r\n\r\n",
        srv.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&content[..1000]).await.unwrap();
    eventually("the PATCH to be admitted", || {
        srv.stats_of(Class::Push).in_flight == 1
    })
    .await;

    let shutdown_at = Instant::now();
    srv.trigger_shutdown();

    // The listener closes promptly (a connection that raced the shutdown
    // signal may still have been accepted; that is not a failure)...
    within(WAIT, "new connections to be refused", async {
        loop {
            match TcpStream::connect(srv.addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                // Caught while the listener was closing.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("connecting after shutdown: {e}"),
                Ok(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        shutdown_at.elapsed() < Duration::from_secs(5),
        "the listener stayed open {:?} after shutdown",
        shutdown_at.elapsed()
    );
    // ... and stays closed while the drain goes on.
    for _ in 0..3 {
        let e = TcpStream::connect(srv.addr)
            .await
            .expect_err("a connection accepted during the drain");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }

    // The idle keep-alive connection is closed without waiting for it.
    read_until_closed(&mut idle, Duration::from_secs(2)).await;

    // The chunk in flight is finished and answered.
    assert!(!srv.task_finished(), "serve_with returned before the drain");
    s.write_all(&content[1000..]).await.unwrap();
    let r = within(WAIT, "the drained PATCH", read_response(&mut s))
        .await
        .expect("the PATCH in flight is answered");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("range"), Some("0-1999"));
    assert_closed(&mut s, WAIT).await;

    let result = within(WAIT, "serve_with to return", srv.join()).await;
    result.expect("serve_with returns Ok");
    let took = shutdown_at.elapsed();
    assert!(took < grace, "serve_with returned after {took:?}");
    assert_eq!(srv.stats.open.load(Ordering::Relaxed), 0);
}

/// A request that cannot finish (its client stopped reading) does not keep
/// `serve_with` from returning: it returns once `shutdown_grace` is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_after_the_grace_period_despite_a_stuck_request() {
    let grace = Duration::from_millis(500);
    let mut srv = TestServer::start(Opts {
        config: ServerConfig {
            shutdown_grace: grace,
            ..quiet_config()
        },
        admission: Some(Admission::new(limits(2), limits(2), limits(2))),
        ..Opts::default()
    })
    .await;
    let big = srv.push_blob("t/big", &big_blob()).await;
    let _stuck = hold_blob_get(srv.addr, "t/big", &big).await;

    let started = Instant::now();
    srv.trigger_shutdown();
    let result = within(WAIT, "serve_with to return", srv.join()).await;
    result.expect("serve_with returns Ok");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < WAIT,
        "returned after {took:?}; shutdown_grace is 500ms"
    );
    let r = TcpStream::connect(srv.addr).await;
    assert!(r.is_err(), "a connection after shutdown was accepted");
}

/// Once `serve_with` has returned, nothing it served should still be
/// running: a connection that outlived the grace period should be closed
/// (else it keeps its admission slot and the registry, and so the data
/// directory's database, open after the server "stopped").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_still_open_after_the_grace_period_are_closed() {
    let mut srv = TestServer::start(Opts {
        config: ServerConfig {
            shutdown_grace: Duration::from_millis(300),
            ..quiet_config()
        },
        admission: Some(Admission::new(limits(2), limits(2), limits(2))),
        ..Opts::default()
    })
    .await;
    let big = srv.push_blob("t/big", &big_blob()).await;
    let mut stuck = hold_blob_get(srv.addr, "t/big", &big).await;
    srv.trigger_shutdown();
    within(WAIT, "serve_with to return", srv.join())
        .await
        .unwrap();
    eventually("the stuck request's slot to be freed", || {
        srv.stats_of(Class::Pull).in_flight == 0
    })
    .await;
    let got = read_until_closed(&mut stuck, WAIT).await;
    assert!(got.len() < BIG);
}

// ---------------------------------------------------------------------------
// A server with limits, and raw HTTP/1.1 over sockets
// ---------------------------------------------------------------------------

struct Opts {
    config: ServerConfig,
    admission: Option<Admission>,
    min_rate: MinRate,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            config: quiet_config(),
            admission: None,
            min_rate: MinRate::default(),
        }
    }
}

impl Opts {
    fn admission(a: Admission) -> Opts {
        Opts {
            admission: Some(a),
            ..Opts::default()
        }
    }
}

/// A node serving one connection at most, with a waiting room of
/// `max_waiting`, and the connection that holds its slot (served once).
async fn one_slot_taken(max_waiting: usize) -> (TestServer, TcpStream) {
    let srv = TestServer::start(Opts {
        config: ServerConfig {
            max_connections: 1,
            max_waiting,
            ..quiet_config()
        },
        ..Opts::default()
    })
    .await;
    let mut held = connect(srv.addr).await;
    let r = request(&mut held, &get(srv.addr, "/v2/", true)).await;
    assert_eq!(r.status, 200, "the first connection is served: {r:?}");
    (srv, held)
}

/// Limits no test reaches unless it lowers them.
fn quiet_config() -> ServerConfig {
    ServerConfig {
        max_connections: 64,
        max_waiting: 0,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        tls: None,
    }
}

/// A class of `max` slots: no tenant share, no waiting.
fn limits(max: usize) -> ClassLimits {
    ClassLimits {
        max_in_flight: max,
        tenant_share: 1.0,
        max_wait: Duration::ZERO,
        max_waiters: 0,
        adaptive: None,
    }
}

struct TestServer {
    addr: SocketAddr,
    client: reqwest::Client,
    admission: Option<Admission>,
    stats: Arc<ConnStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(opts: Opts) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsStore::open(dir.path()).await.unwrap();
        let meta = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
        let registry = Registry::new(Arc::new(blobs), Arc::new(meta), RegistryConfig::default());
        let mut state = AppState::new(registry);
        state.admission = opts.admission.clone();
        state.min_rate = opts.min_rate;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ConnStats::default());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(wharf_api::serve_with(
            listener,
            wharf_api::app_with(state),
            opts.config,
            stats.clone(),
            async {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            client: reqwest::Client::new(),
            admission: opts.admission,
            stats,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a bodiless request with reqwest, bounded in time.
    async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        within(
            WAIT,
            &format!("{method} {path}"),
            self.client.request(method.clone(), self.url(path)).send(),
        )
        .await
        .unwrap()
    }

    fn stats_of(&self, class: Class) -> wharf_admission::ClassStats {
        self.admission
            .as_ref()
            .expect("a server with admission control")
            .stats(class)
    }

    /// Pushes `bytes` as a blob of `repo` in one request; returns its digest.
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(bytes.to_vec())
            .timeout(WAIT * 2)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap());
        d
    }

    /// Pushes a small image tagged `tag`.
    async fn push_image(&self, repo: &str, tag: &str) {
        let config = br#"{"seed":"overload"}"#;
        let layer = b"a layer";
        let cd = self.push_blob(repo, config).await;
        let ld = self.push_blob(repo, layer).await;
        let body = image_manifest(&cd, config.len(), &ld, layer.len(), "");
        let r = self
            .client
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "push manifest: {}",
            r.text().await.unwrap()
        );
    }

    /// Resolves the shutdown future handed to `serve_with`.
    fn trigger_shutdown(&mut self) {
        let _ = self.stop.take().expect("not yet shut down").send(());
    }

    fn task_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for `serve_with` to return.
    async fn join(&mut self) -> std::io::Result<()> {
        self.task
            .take()
            .expect("not yet joined")
            .await
            .expect("serve_with does not panic")
    }
}

fn big_blob() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// Runs `f`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    within(WAIT, "connect", TcpStream::connect(addr))
        .await
        .unwrap()
}

/// A `GET` request head.
fn get(addr: SocketAddr, path: &str, keep_alive: bool) -> String {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn}\r\n\r\n")
}

/// Sends `head` on `s` and reads the whole response.
async fn request(s: &mut TcpStream, head: &str) -> RawResponse {
    s.write_all(head.as_bytes()).await.unwrap();
    within(WAIT, "a response", read_response(s))
        .await
        .expect("a response")
}

/// Starts `GET` of a big blob on a socket with a small receive buffer and
/// reads only the response head: the server is left mid-body, holding the
/// request's pull slot, until the socket is dropped.
async fn hold_blob_get(addr: SocketAddr, repo: &str, digest: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = within(WAIT, "connect", sock.connect(addr)).await.unwrap();
    s.write_all(get(addr, &format!("/v2/{repo}/blobs/{digest}"), true).as_bytes())
        .await
        .unwrap();
    let (status, headers, _) = within(WAIT, "the blob's response head", read_head(&mut s))
        .await
        .expect("a response head");
    assert_eq!(status, 200, "holding GET of {repo}: {headers:?}");
    s
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The OCI error code of the body.
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an OCI error body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        v["errors"][0]["code"].as_str().unwrap_or("").to_string()
    }
}

/// Reads a response head; returns its status, headers and any body bytes
/// read with it.
async fn read_head(s: &mut TcpStream) -> std::io::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before a full response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, buf[end + 4..].to_vec()))
}

/// Reads one response with a `Content-Length` body (or none).
async fn read_response(s: &mut TcpStream) -> std::io::Result<RawResponse> {
    let (status, headers, mut body) = read_head(s).await?;
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().expect("a numeric Content-Length"))
        .unwrap_or(0);
    let mut chunk = [0u8; 4096];
    while body.len() < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed mid-body",
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Reads until the server closes the connection (EOF or reset), failing the
/// test if it is still open after `limit`; returns what was read.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    within(limit, "the server to close the connection", async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    got
}

/// The server has closed `s` (nothing more to read).
async fn assert_closed(s: &mut TcpStream, limit: Duration) {
    let rest = read_until_closed(s, limit).await;
    assert!(
        rest.is_empty(),
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
