//! The route writer against a real HAProxy (`/usr/sbin/haproxy`, or
//! `WHARF_TEST_HAPROXY`): two tiny backends stand for two cells, HAProxy
//! routes by the maps the router writes and pushes through the runtime
//! API, and requests are checked to reach the right cell by Host and by
//! path, after changes, removals, and a restart of the fleet side (whose
//! first sync reconciles against what HAProxy holds).
//!
//! Skipped (passing, with a note) when no haproxy binary exists, unless
//! `WHARF_REQUIRE_HAPROXY=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use wharf_fleetd::router::{RouteTable, Router, RouterConfig};

fn haproxy_binary() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var("WHARF_TEST_HAPROXY").unwrap_or_else(|_| "/usr/sbin/haproxy".into()),
    );
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("WHARF_REQUIRE_HAPROXY").map_or(true, |v| v != "1"),
        "WHARF_REQUIRE_HAPROXY=1 but {} does not exist",
        p.display()
    );
    eprintln!("router_haproxy: skipped: no {}", p.display());
    None
}

/// A backend answering every request with its name.
async fn backend(name: &'static str) -> String {
    let app = axum::Router::new().fallback(move || async move { name });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// HAProxy in the foreground, killed when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(bin: &Path, dir: &Path, cell1: &str, cell2: &str) -> Haproxy {
    let d = dir.display();
    // The frontend listens on a unix socket in the test's directory, so no
    // port is picked and dropped.
    let cfg = format!(
        r#"global
    stats socket {d}/admin.sock mode 600 level admin
    stats timeout 5s

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend registry
    bind unix@{d}/fe.sock
    http-request set-var(txn.host) req.hdr(host),field(1,:),lower
    use_backend %[var(txn.host),map({d}/hosts.map)] if {{ var(txn.host),map({d}/hosts.map) -m found }}
    use_backend %[path,field(3,/),map({d}/tenants.map)] if {{ path,field(3,/),map({d}/tenants.map) -m found }}
    default_backend no_route

backend no_route
    http-request return status 404 content-type text/plain string "no route"

backend cell_1
    server s1 {cell1}

backend cell_2
    server s2 {cell2}
"#
    );
    std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start haproxy");
    let h = Haproxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(dir.join("admin.sock").exists() && dir.join("fe.sock").exists()) {
        assert!(Instant::now() < deadline, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    h
}

/// Sends a GET through HAProxy; `(status, body)`.
async fn get(dir: &Path, host: &str, path: &str) -> (u16, String) {
    let mut s = UnixStream::connect(dir.join("fe.sock")).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn router(dir: &Path) -> Router {
    Router::new(RouterConfig {
        maps_dir: dir.to_path_buf(),
        socket: Some(dir.join("admin.sock")),
        timeout: Duration::from_secs(2),
    })
}

#[tokio::test]
async fn route_changes_reach_the_running_haproxy() {
    let Some(bin) = haproxy_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // HAProxy starts from empty maps, as from a first deployment.
    std::fs::write(dir.join("hosts.map"), "").unwrap();
    std::fs::write(dir.join("tenants.map"), "").unwrap();
    let (b1, b2) = (backend("cell-1").await, backend("cell-2").await);
    let _haproxy = start_haproxy(&bin, dir, &b1, &b2);

    assert_eq!(get(dir, "x", "/v2/acme/app/manifests/1").await.0, 404);

    let r = router(dir);
    let table = RouteTable::from_homes([("acme", None, 1), ("beta", Some("reg.beta.example"), 2)]);
    let report = r.sync(&table).await.unwrap();
    assert!(report.files_written);
    assert_eq!(report.commands, 3, "two tenants and one host added");
    assert_eq!(
        get(dir, "x", "/v2/acme/app/manifests/1").await,
        (200, "cell-1".into())
    );
    assert_eq!(
        get(dir, "REG.beta.example:443", "/v2/other/x/tags/list").await,
        (200, "cell-2".into()),
        "by Host, whatever the path"
    );

    // A move flips acme to cell 2; beta loses its hostname.
    let table = RouteTable::from_homes([("acme", None, 2), ("beta", None, 2)]);
    let report = r.sync(&table).await.unwrap();
    assert_eq!(report.commands, 2, "one set, one del");
    assert_eq!(
        get(dir, "x", "/v2/acme/app/manifests/1").await,
        (200, "cell-2".into())
    );
    assert_eq!(get(dir, "reg.beta.example", "/v2/nobody/x").await.0, 404);
    let tenants = std::fs::read_to_string(dir.join("tenants.map")).unwrap();
    assert!(tenants.lines().any(|l| l == "acme cell_2"), "{tenants}");

    // Nothing changed: nothing sent.
    assert_eq!(r.sync(&table).await.unwrap(), Default::default());

    // The fleet service restarts with a table HAProxy does not hold: its
    // first sync asks HAProxy what it holds and repairs the difference.
    let restarted = router(dir);
    let table = RouteTable::from_homes([("acme", None, 1), ("gamma", Some("g.example"), 2)]);
    let report = restarted.sync(&table).await.unwrap();
    assert_eq!(
        report.commands, 4,
        "set acme, del beta, add gamma and g.example"
    );
    assert_eq!(
        get(dir, "x", "/v2/acme/app/manifests/1").await,
        (200, "cell-1".into())
    );
    assert_eq!(get(dir, "x", "/v2/beta/app/manifests/1").await.0, 404);
    assert_eq!(
        get(dir, "g.example", "/v2/z/x").await,
        (200, "cell-2".into())
    );
}

#[tokio::test]
async fn a_restarted_haproxy_loads_the_files_and_a_dead_one_fails_fast() {
    let Some(bin) = haproxy_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (b1, b2) = (backend("cell-1").await, backend("cell-2").await);
    let r = router(dir);
    let table = RouteTable::from_homes([("acme", Some("acme.example"), 2)]);

    // HAProxy is not running: the files are still written, the push
    // fails promptly, and the next sync tries again.
    let started = Instant::now();
    let e = r.sync(&table).await.unwrap_err();
    assert!(e.contains("admin.sock"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(std::fs::read_to_string(dir.join("hosts.map"))
        .unwrap()
        .contains("acme.example cell_2"));

    // An HAProxy started now loads the maps from the files.
    let _haproxy = start_haproxy(&bin, dir, &b1, &b2);
    assert_eq!(
        get(dir, "acme.example", "/v2/x/y").await,
        (200, "cell-2".into())
    );
    // The retry finds HAProxy already holding every route.
    let report = r.sync(&table).await.unwrap();
    assert_eq!(report.commands, 0);
}
