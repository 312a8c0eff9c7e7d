//! `wharf fleet serve` and its client commands through the real binary,
//! scraping two real `wharf serve` nodes: migrate, add a cell, see its
//! pools read from the nodes' /metrics, place a tenant (the service
//! creates it on the node with its hostname and quota, and its route lands
//! in the map file), place one the cell holds already (fine) and one whose
//! name the cell holds with other settings (refused with the cell's
//! message, nothing routed), finish a placement a crashed service left
//! half done, have a placement refused with its reasons, ask where a
//! tenant lives and what the rebalancer would do.
//!
//! Needs PostgreSQL (`WHARF_TEST_POSTGRES_URL`); skipped without it unless
//! `CI` or `WHARF_REQUIRE_POSTGRES=1` is set.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Wharf;

const URL_VAR: &str = "WHARF_TEST_POSTGRES_URL";

fn server() -> Option<String> {
    if let Some(u) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
        return Some(u);
    }
    let set = |v: &str| std::env::var(v).is_ok_and(|x| !x.is_empty());
    assert!(
        !(set("CI") || std::env::var("WHARF_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")),
        "{URL_VAR} is not set, but PostgreSQL is required"
    );
    eprintln!("fleet_service: skipped: set {URL_VAR}");
    None
}

/// A database of its own, dropped at the end.
struct Db {
    admin: String,
    name: String,
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn sql(url: &str, stmt: &str) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(stmt).await.unwrap();
}

impl Db {
    fn create(admin: &str) -> Db {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let name = format!("fleet_cli_{:016x}", h.finish());
        block(sql(admin, &format!("CREATE DATABASE \"{name}\"")));
        Db {
            admin: admin.into(),
            name,
        }
    }

    fn url(&self) -> String {
        let sep = if self.admin.contains('?') { '&' } else { '?' };
        format!("{}{sep}dbname={}", self.admin, self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            block(sql(
                &a,
                &format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"),
            ))
        })
        .join();
    }
}

struct Fleetd(Child);

impl Drop for Fleetd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wharf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Sum of a node's dependency pools, read from its own /metrics.
fn pools(admin: &str) -> f64 {
    let body = reqwest::blocking::get(format!("{admin}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    body.lines()
        .filter(|l| l.starts_with("wharf_dependency_pool_size{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn fleet_service_scrapes_real_nodes_and_places_through_the_cli() {
    let Some(admin_url) = server() else { return };
    let db = Db::create(&admin_url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let o = wharf(&["fleet", "migrate", "--database-url", &db.url()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("2 migration(s) applied"),
        "{:?}",
        text(&o)
    );

    // The nodes ask for their admin token; the service holds it.
    std::fs::write(d.join("node-token"), "node-secret\n").unwrap();
    let node_hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(b"node-secret"))
    };
    std::fs::write(d.join("node-token.sha256"), format!("sha256:{node_hash}\n")).unwrap();
    let node_token = d.join("node-token.sha256");
    let node_token = node_token.to_str().unwrap();
    let n1 = Wharf::start_with(
        &d.join("n1"),
        &["--storage-pool", "5", "--admin-token-file", node_token],
    );
    let n2 = Wharf::start_with(
        &d.join("n2"),
        &["--storage-pool", "7", "--admin-token-file", node_token],
    );
    let expected_pools = pools(&n1.admin) + pools(&n2.admin);
    assert!(expected_pools >= 12.0);

    std::fs::write(d.join("token"), "fleet-secret\n").unwrap();
    let hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(b"fleet-secret"))
    };
    std::fs::write(d.join("token.sha256"), format!("sha256:{hash}\n")).unwrap();
    let maps = d.join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    let addr_file = d.join("fleet-addr");
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["fleet", "serve", "--database-url", &db.url()])
        .args(["--listen", "127.0.0.1:0", "--scrape-interval", "1"])
        .args(["--log", "warn"])
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--admin-token-file")
        .arg(d.join("token.sha256"))
        .arg("--haproxy-maps")
        .arg(&maps)
        .arg("--node-token-file")
        .arg(d.join("node-token"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _fleetd = Fleetd(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        assert!(Instant::now() < deadline, "wharf fleet serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let url = format!("http://{addr}");
    let token = d.join("token");
    let cli = |args: &[&str]| -> Output {
        let mut v = vec!["fleet"];
        v.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&v)
            .arg("--url")
            .arg(&url)
            .arg("--token-file")
            .arg(&token)
            .output()
            .unwrap()
    };

    let o = cli(&[
        "cells",
        "add",
        "--id",
        "1",
        "--zone",
        "1",
        "--node",
        &n1.admin,
        "--node",
        &n2.admin,
        "--connections",
        "100",
        "--storage-bytes",
        "1000000000",
        "--pull-rps",
        "100",
        "--push-rps",
        "10",
        "--bandwidth",
        "100000000",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("cell 1 added in zone 1 (cell_1)"));

    // The scrape loop reads both nodes twice (rates need two readings).
    let deadline = Instant::now() + Duration::from_secs(20);
    let cell = loop {
        let o = cli(&["cells", "list", "--json"]);
        assert!(o.status.success(), "{:?}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let c = v["cells"][0].clone();
        if c["usage"] == "fresh" {
            break c;
        }
        assert!(Instant::now() < deadline, "cell never read: {c}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        cell["used"]["connections"].as_f64(),
        Some(expected_pools),
        "{cell}"
    );
    let o = cli(&["cells", "list"]);
    assert!(text(&o).0.contains("fresh"), "{:?}", text(&o));

    // The node's tenant, through its admin API (with its token).
    let http = reqwest::blocking::Client::new();
    // The two nodes keep separate directories here (a real cell's share
    // one), and the service creates a tenant on the first node that
    // answers it: a tenant is looked for on both, and one the cell must
    // hold already is put on both.
    let on_node = |name: &str| -> (u16, serde_json::Value) {
        let mut found = (404, serde_json::Value::Null);
        for node in [&n1.admin, &n2.admin] {
            let r = http
                .get(format!("{node}/admin/v1/tenants/{name}"))
                .bearer_auth("node-secret")
                .send()
                .unwrap();
            found = (
                r.status().as_u16(),
                r.json().unwrap_or(serde_json::Value::Null),
            );
            if found.0 == 200 {
                break;
            }
        }
        found
    };
    let create_on_node = |body: serde_json::Value| {
        for node in [&n1.admin, &n2.admin] {
            let r = http
                .post(format!("{node}/admin/v1/tenants"))
                .bearer_auth("node-secret")
                .json(&body)
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "{:?}", r.text());
        }
    };
    assert_eq!(on_node("acme").0, 404);

    let o = cli(&[
        "tenants",
        "place",
        "acme",
        "--hostname",
        "acme.example",
        "--storage-bytes",
        "1000",
        "--quota-bytes",
        "5000000",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .starts_with("tenant acme -> cell 1: 1/1 cells fit"),
        "{:?}",
        text(&o)
    );
    assert!(
        text(&o)
            .0
            .contains("cell 1: tenant acme created; routed to cell_1"),
        "{:?}",
        text(&o)
    );
    // Created on the cell by the service, with its hostname and quota.
    let (status, t) = on_node("acme");
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["hostname"], "acme.example", "{t}");
    assert_eq!(t["quota"]["bytes"], 5_000_000, "{t}");

    // A tenant the cell holds already with the same settings is fine.
    create_on_node(serde_json::json!({"name": "beta", "hostname": "beta.example"}));
    let o = cli(&["tenants", "place", "beta", "--hostname", "Beta.Example"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("tenant beta already there"),
        "{:?}",
        text(&o)
    );
    // The same name held with another hostname: the cell's refusal, and
    // nothing placed or routed.
    create_on_node(serde_json::json!({"name": "gamma", "hostname": "other.example"}));
    let o = cli(&["tenants", "place", "gamma", "--hostname", "gamma.example"]);
    assert!(!o.status.success(), "{:?}", text(&o));
    let err = text(&o).1;
    assert!(err.contains("cell 1 refused tenant gamma"), "{err}");
    assert!(err.contains("tenant gamma exists"), "{err}");
    assert!(
        err.contains("it has hostname other.example, not gamma.example"),
        "{err}"
    );
    assert!(err.contains("409 CELL_REFUSED"), "{err}");
    let o = cli(&["tenants", "where", "gamma"]);
    assert!(!o.status.success(), "{:?}", text(&o));
    assert_eq!(on_node("gamma").1["hostname"], "other.example");

    // A service that stopped between recording a placement and the cell's
    // answer left this row: the running service's loop finishes it.
    block(sql(
        &db.url(),
        "INSERT INTO fleet.tenants (name, cell, hostname, demand, rules, created_unix, on_cell) \
         VALUES ('delta', 1, 'delta.example', '{0,0,0,0,0}', '{}', 0, false)",
    ));
    // (n1 and n2 are separate directories here, not one cell's: n2 never
    // learns the tenants, and each placement waits its 10 s for it.)
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let tenants_map = std::fs::read_to_string(maps.join("tenants.map")).unwrap();
        if tenants_map.lines().any(|l| l == "delta cell_1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delta never finished: {tenants_map}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(on_node("delta").1["hostname"], "delta.example");
    let o = cli(&["tenants", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<(&str, bool)> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap(), t["on_cell"] == true))
        .collect();
    assert_eq!(
        names,
        vec![("acme", true), ("beta", true), ("delta", true)],
        "{v}"
    );
    let tenants_map = std::fs::read_to_string(maps.join("tenants.map")).unwrap();
    assert!(
        tenants_map.lines().any(|l| l == "acme cell_1"),
        "{tenants_map}"
    );
    assert!(
        !tenants_map.lines().any(|l| l.starts_with("gamma ")),
        "{tenants_map}"
    );
    let hosts_map = std::fs::read_to_string(maps.join("hosts.map")).unwrap();
    assert!(
        hosts_map.lines().any(|l| l == "acme.example cell_1"),
        "{hosts_map}"
    );

    let o = cli(&["tenants", "place", "huge", "--storage-bytes", "900000000"]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(
        err.contains("0/1 cells fit tenant huge: 1 storage over threshold (409 PLACEMENT_REFUSED)"),
        "{err}"
    );
    assert!(
        err.contains("cell 1: storage would be 90.0% > 70%"),
        "{err}"
    );

    let o = cli(&["tenants", "where", "acme"]);
    assert_eq!(
        text(&o).0.trim(),
        "acme: cell 1 (cell_1), hostname acme.example"
    );
    let o = cli(&["plan"]);
    assert_eq!(text(&o).0.trim(), "rebalance: nothing to do");
    let o = cli(&["moves", "list"]);
    assert!(
        o.status.success() && text(&o).0.trim().is_empty(),
        "{:?}",
        text(&o)
    );
    let o = cli(&["decisions-do-not-exist"]);
    assert!(!o.status.success());

    // A wrong token is refused.
    std::fs::write(d.join("wrong"), "nope\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["fleet", "tenants", "list", "--url", &url, "--token-file"])
        .arg(d.join("wrong"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).1.contains("401 UNAUTHORIZED"), "{:?}", text(&o));

    // The service's own metrics carry the cell's figures.
    let m = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("wharf_fleet_cell_utilisation{cell=\"1\",dimension=\"connections\"}"));
    // The cell's refusal of gamma, and huge's.
    assert!(m.contains("wharf_fleet_placements_refused_total 2"), "{m}");
    drop((n1, n2));
}

/// Starts `wharf fleet serve` on `db` with its address written to
/// `addr_file`; the child with its stderr piped.
fn start_serve(db: &Db, addr_file: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["fleet", "serve", "--database-url", &db.url()])
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--no-moves"])
        .arg("--addr-file")
        .arg(addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The service's address once it has written it (bounded wait).
fn wait_addr(addr_file: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = std::fs::read_to_string(addr_file) {
            return a;
        }
        assert!(Instant::now() < deadline, "wharf fleet serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_fleet_service_per_database_and_a_cells_nodes_can_be_replaced() {
    let Some(admin_url) = server() else { return };
    let db = Db::create(&admin_url);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = wharf(&["fleet", "migrate", "--database-url", &db.url()]);
    assert!(o.status.success(), "{:?}", text(&o));

    let first = Fleetd(start_serve(&db, &d.join("a1")));
    let url = format!("http://{}", wait_addr(&d.join("a1")));

    // A second service on the same database refuses to start, and says why.
    let mut second = start_serve(&db, &d.join("a2"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second wharf fleet serve on the same database kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("another fleet service is running on this database"),
        "{err}"
    );
    assert!(!d.join("a2").exists(), "the second service never listened");

    // The nodes of a registered cell are replaced whole; cells add on the
    // same id stays a conflict.
    let cli = |args: &[&str]| -> Output {
        let mut v = vec!["fleet"];
        v.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&v)
            .args(["--url", &url])
            .output()
            .unwrap()
    };
    let add = [
        "cells",
        "add",
        "--id",
        "1",
        "--zone",
        "1",
        "--node",
        "http://127.0.0.1:9",
        "--connections",
        "100",
        "--storage-bytes",
        "1000000000",
        "--pull-rps",
        "100",
        "--push-rps",
        "10",
        "--bandwidth",
        "100000000",
    ];
    let o = cli(&add);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = cli(&add);
    assert!(
        !o.status.success(),
        "a second cells add of cell 1 was accepted"
    );
    assert!(text(&o).1.contains("exists already"), "{:?}", text(&o));
    let o = cli(&[
        "cells",
        "set-nodes",
        "1",
        "--node",
        "http://127.0.0.1:10/",
        "--node",
        "http://127.0.0.1:11",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o)
            .0
            .contains("cell 1: nodes http://127.0.0.1:10 http://127.0.0.1:11"),
        "{:?}",
        text(&o)
    );
    let o = cli(&["cells", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["cells"][0]["nodes"],
        serde_json::json!(["http://127.0.0.1:10", "http://127.0.0.1:11"])
    );
    let o = cli(&["cells", "set-nodes", "7", "--node", "http://127.0.0.1:10"]);
    assert!(
        !o.status.success(),
        "set-nodes of an unknown cell was accepted"
    );
    let o = cli(&["cells", "set-nodes", "1", "--node", "ftp://x"]);
    assert!(
        !o.status.success(),
        "a node URL that is not http(s) was accepted"
    );

    // Once the first has stopped, the lock is free: a new one starts.
    drop(first);
    let _again = Fleetd(start_serve(&db, &d.join("a3")));
    wait_addr(&d.join("a3"));
}
