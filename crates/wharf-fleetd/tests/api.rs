//! The fleet admin API end to end: a real PostgreSQL database, fake
//! registry nodes serving `/metrics`, the API over HTTP on a loopback
//! listener, and the service's loop turned by hand (`scrape_now`, `tick`)
//! so that each step is deterministic.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use wharf_fleetd::router::RouterConfig;
use wharf_fleetd::{Fleetd, MoveControl, MoveExecutor, MoveTask, ServiceConfig};

use common::{node_text, FakeNode};

const TOKEN: &str = "fleet-test-token";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start(fleetd: Arc<Fleetd>) -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = wharf_fleetd::api::app(fleetd);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
}

fn config(router: Option<RouterConfig>) -> ServiceConfig {
    let mut c = ServiceConfig {
        admin_token_hash: Some(hex::encode(Sha256::digest(TOKEN.as_bytes()))),
        router,
        ..ServiceConfig::default()
    };
    c.policy.staleness_bound = 3600;
    c
}

/// A cell of 100 connections, 1,000,000 bytes, 100 pulls/s, 10 pushes/s,
/// 1,000,000 B/s.
fn cell_body(id: u32, zone: u32, node: &FakeNode) -> Value {
    json!({
        "id": id, "zone": zone, "nodes": [node.url],
        "capacity": {"connections": 100, "storage_bytes": 1_000_000,
                     "pull_requests_per_second": 100, "push_requests_per_second": 10,
                     "bandwidth_bytes_per_second": 1_000_000},
    })
}

fn storage(bytes: u64) -> Value {
    json!({"storage_bytes": bytes})
}

#[tokio::test]
async fn placement_plans_moves_and_decisions_through_the_api() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let fleetd = Fleetd::new(db.store().await, config(None), None);
    let api = Api::start(fleetd.clone()).await;
    let nodes = [
        FakeNode::start().await,
        FakeNode::start().await,
        FakeNode::start().await,
    ];
    for n in &nodes {
        n.set(&node_text(10, &[]));
    }

    // The token is required, and checked.
    let plain = reqwest::get(format!("{}/fleet/v1/cells", api.base))
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 401);
    assert!(plain.headers().contains_key("www-authenticate"));

    // Cells: zones 1, 2, 2.
    for (i, zone) in [(1, 1), (2, 2), (3, 2)] {
        let (s, v) = api
            .post(
                "/fleet/v1/cells",
                cell_body(i, zone, &nodes[i as usize - 1]),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = api
        .post("/fleet/v1/cells", cell_body(1, 1, &nodes[0]))
        .await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (409, Some("CONFLICT"))
    );
    let (s, v) = api
        .post("/fleet/v1/cells", json!({"id": 9, "zone": 1, "nodes": []}))
        .await;
    assert_eq!((s, v["errors"][0]["code"].as_str()), (400, Some("INVALID")));

    // Never read: every cell's use is unknown, so nothing is placed.
    let (s, v) = api.post("/fleet/v1/tenants", json!({"name": "acme"})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["errors"][0]["code"], "PLACEMENT_REFUSED");
    assert_eq!(
        v["errors"][0]["detail"]["reasons"],
        json!([{"reason": "usage unknown", "cells": 3}])
    );

    // Two rounds give rates, so the cells are read.
    fleetd.scrape_now().await.unwrap();
    fleetd.scrape_now().await.unwrap();
    let (_, v) = api.get("/fleet/v1/cells").await;
    for c in v["cells"].as_array().unwrap() {
        assert_eq!(c["usage"], "fresh", "{c}");
        assert_eq!(c["used"]["connections"], 10);
        assert_eq!(c["utilisation"]["connections"], 0.1);
    }

    // Placement: the lowest resulting maximum utilisation, ties to the
    // lower id; the reason is recorded.
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "acme", "demand": storage(300_000)}),
        )
        .await;
    assert_eq!((s, v["cell"].as_u64()), (201, Some(1)), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("3/3 cells fit"));
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "beta", "hostname": "Reg.Beta.Example", "demand": storage(150_000),
                   "anti_affinity": [{"group": "g", "scope": "zone"}]}),
        )
        .await;
    assert_eq!((s, v["cell"].as_u64()), (201, Some(2)), "{v}");
    // Another member of g may not share zone 2, and cell 1 is fuller
    // than it could take.
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "gamma", "demand": storage(450_000),
                   "anti_affinity": [{"group": "g", "scope": "zone"}]}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let e = &v["errors"][0];
    assert_eq!(
        e["message"],
        "0/3 cells fit tenant gamma: 1 anti-affinity group g (cell), \
         1 anti-affinity group g (zone), 1 storage over threshold"
    );
    let rej = e["detail"]["rejections"].as_array().unwrap();
    assert!(rej[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("storage would be 75.0% > 70%"));
    assert!(rej[1]["reason"]
        .as_str()
        .unwrap()
        .contains("tenant beta is already in this cell"));
    assert!(rej[2]["reason"]
        .as_str()
        .unwrap()
        .contains("tenant beta is already in this zone"));
    let (s, _) = api.post("/fleet/v1/tenants", json!({"name": "acme"})).await;
    assert_eq!(s, 409);
    let (s, _) = api
        .post("/fleet/v1/tenants", json!({"name": "Not A Name"}))
        .await;
    assert_eq!(s, 400);

    let (s, v) = api.get("/fleet/v1/tenants/beta").await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            v["cell"].as_u64(),
            v["hostname"].as_str(),
            v["backend"].as_str()
        ),
        (Some(2), Some("reg.beta.example"), Some("cell_2"))
    );
    let (_, v) = api.get("/fleet/v1/tenants").await;
    assert_eq!(v["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(api.get("/fleet/v1/tenants/nobody").await.0, 404);

    // acme grows to 600,000 stored bytes, and a tenant nobody placed
    // stores 150,000 there too: cell 1 is at 75%, above its 70%.
    nodes[0].set(&node_text(
        10,
        &[("acme", 0, 600_000), ("stranger", 0, 150_000)],
    ));
    fleetd.scrape_now().await.unwrap();
    let (_, v) = api.get("/fleet/v1/cells/1").await;
    assert_eq!(v["utilisation"]["storage_bytes"], 0.75, "{v}");

    // The dry run says what the rebalancer would do, and why.
    let (s, v) = api.get("/fleet/v1/plan").await;
    assert_eq!(s, 200, "{v}");
    let plan = &v["plans"][0];
    assert_eq!(
        (plan["goal"].as_str(), plan["feasible"].as_bool()),
        (Some("rebalance"), Some(true)),
        "{v}"
    );
    let mv = &plan["plan"]["steps"][0]["moves"][0];
    // To cell 3 (60% after), not cell 2 (beta's 15% + 60% = 75%).
    assert_eq!(
        (
            mv["tenant"].as_str(),
            mv["from"].as_u64(),
            mv["to"].as_u64()
        ),
        (Some("acme"), Some(1), Some(3)),
        "{v}"
    );
    assert!(mv["reason"]
        .as_str()
        .unwrap()
        .starts_with("relieves cell 1: storage at 75.0%"));
    assert_eq!(
        api.get("/fleet/v1/moves").await.1["moves"],
        json!([]),
        "a dry run records nothing"
    );

    // Applying records the first step's moves, planned.
    let (s, v) = api.post("/fleet/v1/plan/apply", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let recorded = v["recorded"].as_array().unwrap();
    assert_eq!(recorded.len(), 1, "{v}");
    let id = recorded[0]["move"].as_i64().unwrap();
    let (_, m) = api.get(&format!("/fleet/v1/moves/{id}")).await;
    assert_eq!(
        (m["state"].as_str(), m["tenant"].as_str()),
        (Some("planned"), Some("acme"))
    );
    let (s, v) = api.post("/fleet/v1/plan/apply", json!({})).await;
    assert_eq!(s, 409, "one plan at a time: {v}");
    let (_, v) = api.get("/fleet/v1/tenants/acme").await;
    assert_eq!(v["move"]["id"].as_i64(), Some(id));
    let (s, _) = api.post("/fleet/v1/tenants/acme/move", json!({})).await;
    assert_eq!(s, 409, "a move is in flight already");

    // The metrics page shows the move, the use and the thresholds.
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "wharf_fleet_moves{state=\"planned\"} 1",
        "wharf_fleet_cell_utilisation{cell=\"1\",dimension=\"storage_bytes\"} 0.75",
        "wharf_fleet_cell_threshold{cell=\"2\",dimension=\"storage_bytes\",severity=\"critical\"} 0.7",
        "wharf_fleet_cell_threshold{cell=\"2\",dimension=\"storage_bytes\",severity=\"warning\"} 0.6",
        "wharf_fleet_scrape_failures_total{cell=\"3\"} 0",
        "wharf_fleet_placements_refused_total 2",
        "wharf_fleet_plan_infeasible 0",
        "wharf_fleet_store_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(text.contains(&format!(
        "wharf_fleet_move_step_age_seconds{{move=\"{id}\",tenant=\"acme\"}}"
    )));
    assert!(text.contains("wharf_fleet_scrape_age_seconds{cell=\"1\"}"));

    // Cancel it; a second cancel is a conflict.
    let (s, v) = api
        .post(&format!("/fleet/v1/moves/{id}/cancel"), json!({}))
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")));
    assert_eq!(
        api.post(&format!("/fleet/v1/moves/{id}/cancel"), json!({}))
            .await
            .0,
        409
    );

    // An operator's move to a named cell is checked by the same filters.
    let (s, v) = api
        .post("/fleet/v1/tenants/acme/move", json!({"to": 2}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("storage would be 75.0% > 70%"));
    // Chosen by the engine among the other cells: cell 1 would be at 90%,
    // cell 3 at 15%.
    let (s, v) = api.post("/fleet/v1/tenants/beta/move", json!({})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["move"]["to"].as_u64(), v["move"]["state"].as_str()),
        (Some(3), Some("planned"))
    );

    // Draining a cell closes it to placements; retiring one with tenants
    // is refused.
    assert_eq!(api.post("/fleet/v1/cells/3/drain", json!({})).await.0, 200);
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "delta", "pinned_to": [3]}),
        )
        .await;
    assert_eq!(s, 409);
    let reasons = &v["errors"][0]["detail"]["reasons"];
    assert!(reasons.to_string().contains("draining"), "{reasons}");
    let (s, v) = api.post("/fleet/v1/cells/1/retire", json!({})).await;
    assert_eq!(s, 409, "{v}");

    // Every decision is on record, newest first.
    let (_, v) = api.get("/fleet/v1/decisions?limit=50").await;
    let kinds: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    for k in [
        "cell-add",
        "place",
        "create",
        "refuse",
        "rebalance",
        "cancel",
        "move",
        "drain",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert_eq!(kinds[0], "refuse", "{kinds:?}");
    let (_, v) = api.get("/fleet/v1/moves?state=planned").await;
    assert_eq!(v["moves"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/fleet/v1/moves?state=lost").await.0, 400);
}

#[tokio::test]
async fn a_cell_that_stops_answering_goes_stale_and_gets_no_tenants() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let mut cfg = config(None);
    cfg.policy.staleness_bound = 100;
    let clock = Arc::new(Mutex::new(1_000_000u64));
    let c = clock.clone();
    let fleetd = Fleetd::with_clock(
        db.store().await,
        cfg,
        None,
        Box::new(move || *c.lock().unwrap()),
    );
    let api = Api::start(fleetd.clone()).await;
    let node = FakeNode::start().await;
    node.set(&node_text(10, &[]));
    assert_eq!(
        api.post("/fleet/v1/cells", cell_body(1, 1, &node)).await.0,
        201
    );
    fleetd.scrape_now().await.unwrap();
    fleetd.scrape_now().await.unwrap();
    node.set_down(true);
    *clock.lock().unwrap() += 101;
    fleetd.scrape_now().await.unwrap();
    let (_, v) = api.get("/fleet/v1/cells/1").await;
    assert_eq!(v["usage"], "stale", "{v}");
    assert_eq!(v["scrape_failures"], 1);
    assert!(v["last_error"].as_str().unwrap().contains("500"), "{v}");
    let (s, v) = api.post("/fleet/v1/tenants", json!({"name": "acme"})).await;
    assert_eq!(s, 409);
    assert!(v["errors"][0]["detail"]["rejections"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("usage stale: last read 101 s ago > bound 100 s"));
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("wharf_fleet_scrape_age_seconds{cell=\"1\"} 101"));
    assert!(text.contains("wharf_fleet_scrape_failures_total{cell=\"1\"} 1"));
}

/// An executor that walks the contract and records what it was handed.
struct Walker {
    seen: Mutex<Vec<MoveTask>>,
}

#[async_trait]
impl MoveExecutor for Walker {
    async fn execute(&self, task: MoveTask, control: MoveControl) -> Result<(), String> {
        self.seen.lock().unwrap().push(task);
        let e = |e: wharf_fleetd::MoveAborted| e.to_string();
        control
            .step("copy", json!({"bytes_copied": 42}))
            .await
            .map_err(e)?;
        control.fence_up().await.map_err(e)?;
        control.flip_route().await.map_err(e)?;
        control.fence_down().await.map_err(e)?;
        Ok(())
    }
}

#[tokio::test]
async fn an_executor_runs_a_move_and_its_route_flip_reaches_the_maps() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let maps = tempfile::tempdir().unwrap();
    let walker = Arc::new(Walker {
        seen: Mutex::new(Vec::new()),
    });
    let fleetd = Fleetd::new(
        db.store().await,
        config(Some(RouterConfig {
            maps_dir: maps.path().to_path_buf(),
            socket: None,
            timeout: Duration::from_secs(1),
        })),
        Some(walker.clone()),
    );
    let api = Api::start(fleetd.clone()).await;
    let (n1, n2) = (FakeNode::start().await, FakeNode::start().await);
    n1.set(&node_text(10, &[]));
    n2.set(&node_text(10, &[]));
    api.post("/fleet/v1/cells", cell_body(1, 1, &n1)).await;
    api.post("/fleet/v1/cells", cell_body(2, 1, &n2)).await;
    fleetd.tick(false).await;
    fleetd.tick(false).await;
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "acme", "hostname": "acme.example"}),
        )
        .await;
    assert_eq!((s, v["cell"].as_u64()), (201, Some(1)), "{v}");
    let tenants_map = maps.path().join("tenants.map");
    assert!(std::fs::read_to_string(&tenants_map)
        .unwrap()
        .contains("acme cell_1"));

    let (s, v) = api
        .post("/fleet/v1/tenants/acme/move", json!({"to": 2}))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["move"]["id"].as_i64().unwrap();
    fleetd.tick(false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let (_, m) = api.get(&format!("/fleet/v1/moves/{id}")).await;
        if m["state"] == "done" || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m["state"], "done", "{m}");
    assert_eq!(m["counters"]["bytes_copied"], 42);
    assert!(m["fence_start"].is_string() && m["fence_end"].is_string());
    let seen = walker.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].from.id, seen[0].to.id, seen[0].hostname.as_deref()),
        (1, 2, Some("acme.example"))
    );
    assert_eq!(seen[0].to.nodes, vec![n2.url.clone()]);
    assert_eq!(api.get("/fleet/v1/tenants/acme").await.1["cell"], 2);
    let map = std::fs::read_to_string(&tenants_map).unwrap();
    assert!(map.contains("acme cell_2"), "{map}");
    let hosts = std::fs::read_to_string(maps.path().join("hosts.map")).unwrap();
    assert!(hosts.contains("acme.example cell_2"), "{hosts}");
}

/// Placement has the cell create the tenant before routing it: a cell that
/// cannot answer leaves the placement recorded and unrouted until the loop
/// finishes it; a cell holding the name with other settings refuses, and
/// the refusal is the caller's, with nothing kept or routed.
#[tokio::test]
async fn placement_creates_the_tenant_on_its_cell_before_routing_it() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let maps = tempfile::tempdir().unwrap();
    let fleetd = Fleetd::new(
        db.store().await,
        config(Some(RouterConfig {
            maps_dir: maps.path().to_path_buf(),
            socket: None,
            timeout: Duration::from_secs(1),
        })),
        None,
    );
    let api = Api::start(fleetd.clone()).await;
    let node = FakeNode::start().await;
    node.set(&node_text(10, &[]));
    api.post("/fleet/v1/cells", cell_body(1, 1, &node)).await;
    fleetd.tick(false).await;
    fleetd.tick(false).await;
    let routed = |name: &str| {
        std::fs::read_to_string(maps.path().join("tenants.map"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == format!("{name} cell_1"))
    };

    // Created with its hostname and quota, then routed.
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "acme", "hostname": "acme.example", "quota": {"bytes": 5000}}),
        )
        .await;
    assert_eq!(
        (s, v["created_on_cell"].as_str()),
        (201, Some("created")),
        "{v}"
    );
    let on_node = node.tenants.lock().unwrap().get("acme").cloned().unwrap();
    assert_eq!(on_node["hostname"], "acme.example");
    assert_eq!(on_node["quota"], json!({"bytes": 5000}));
    assert!(routed("acme"));

    // The cell cannot create it: recorded, not routed, not movable.
    node.set_admin_down(true);
    let (s, v) = api.post("/fleet/v1/tenants", json!({"name": "beta"})).await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{v}"
    );
    let (_, v) = api.get("/fleet/v1/tenants/beta").await;
    assert_eq!(v["on_cell"], false, "{v}");
    assert!(!routed("beta"));
    let (s, v) = api.post("/fleet/v1/tenants/beta/move", json!({})).await;
    assert_eq!(s, 409, "{v}");
    // Another placement of the name with other settings is refused; the
    // same one again waits on the cell as well.
    let (s, _) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "beta", "hostname": "b.example"}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = api.post("/fleet/v1/tenants", json!({"name": "beta"})).await;
    assert_eq!(s, 503);
    fleetd.tick(false).await;
    assert!(!routed("beta"));
    // The cell is back: the loop finishes the placement.
    node.set_admin_down(false);
    fleetd.tick(false).await;
    assert!(node.tenants.lock().unwrap().contains_key("beta"));
    assert_eq!(api.get("/fleet/v1/tenants/beta").await.1["on_cell"], true);
    assert!(routed("beta"));

    // The cell holds gamma with another hostname: refused with the cell's
    // message, nothing kept or routed.
    node.tenants.lock().unwrap().insert(
        "gamma".into(),
        json!({"name": "gamma", "hostname": "other.example"}),
    );
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "gamma", "hostname": "gamma.example"}),
        )
        .await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (409, Some("CELL_REFUSED")),
        "{v}"
    );
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("cell 1 refused tenant gamma: tenant gamma exists"),
        "{msg}"
    );
    assert!(
        msg.contains("hostname other.example, not gamma.example"),
        "{msg}"
    );
    assert_eq!(v["errors"][0]["detail"]["cell"], 1);
    assert_eq!(api.get("/fleet/v1/tenants/gamma").await.0, 404);
    assert!(!routed("gamma"));
    // With its own settings it is the same tenant: fine.
    let (s, v) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "gamma", "hostname": "Other.Example"}),
        )
        .await;
    assert_eq!(
        (s, v["created_on_cell"].as_str()),
        (201, Some("already there")),
        "{v}"
    );
    assert!(routed("gamma"));
}

#[tokio::test]
async fn an_infeasible_plan_says_what_to_add_and_raises_the_gauge() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let fleetd = Fleetd::new(db.store().await, config(None), None);
    let api = Api::start(fleetd.clone()).await;
    let node = FakeNode::start().await;
    node.set(&node_text(10, &[]));
    assert_eq!(
        api.post("/fleet/v1/cells", cell_body(1, 4, &node)).await.0,
        201
    );
    fleetd.scrape_now().await.unwrap();
    fleetd.scrape_now().await.unwrap();
    let (s, _) = api
        .post(
            "/fleet/v1/tenants",
            json!({"name": "acme", "demand": storage(100_000)}),
        )
        .await;
    assert_eq!(s, 201);
    // acme grows past the threshold of the only cell.
    node.set(&node_text(10, &[("acme", 0, 800_000)]));
    fleetd.scrape_now().await.unwrap();

    // The scheduled run finds the threshold crossed and no way out.
    assert!(
        fleetd.tick(false).await,
        "a crossed threshold runs the rebalancer"
    );
    let (_, v) = api.get("/fleet/v1/plan").await;
    let p = &v["plans"][0];
    assert_eq!(p["feasible"], false, "{v}");
    assert_eq!(p["no_plan"]["stuck"][0]["cell"], 1);
    assert_eq!(p["no_plan"]["shortfall"][0]["zone"], 4, "{v}");
    assert!(p["no_plan"]["text"]
        .as_str()
        .unwrap()
        .contains("add in z4: a cell with"));
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l == "wharf_fleet_plan_infeasible 1"),
        "{text}"
    );
    let (_, v) = api.get("/fleet/v1/decisions").await;
    let kinds: Vec<_> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds[0], "plan-infeasible", "{kinds:?}");
    // The same infeasible plan again is not recorded twice.
    fleetd.tick(false).await;
    let (_, v) = api.get("/fleet/v1/decisions").await;
    assert_eq!(v["decisions"].as_array().unwrap().len(), kinds.len());
}

#[tokio::test]
async fn a_cells_limits_change_through_the_api_and_placement_follows_them() {
    let url = server_or_skip!();
    let db = common::TestDb::create(&url).await;
    let fleetd = Fleetd::new(db.store().await, config(None), None);
    let api = Api::start(fleetd.clone()).await;
    let node = FakeNode::start().await;
    node.set(&node_text(10, &[]));
    let (s, v) = api.post("/fleet/v1/cells", cell_body(1, 1, &node)).await;
    assert_eq!(s, 201, "{v}");
    fleetd.scrape_now().await.unwrap();
    fleetd.scrape_now().await.unwrap();

    // 800,000 bytes do not fit under 70% of 1,000,000.
    let big = json!({"name": "acme", "demand": storage(800_000)});
    let (s, v) = api.post("/fleet/v1/tenants", big.clone()).await;
    assert_eq!(s, 409, "{v}");

    // Bad input is refused, naming what is wrong; nothing changes.
    for (body, want) in [
        (json!({}), "nothing to change"),
        (json!({"zone": 2}), "unknown field \"zone\""),
        (
            json!({"capacity": {"storage_bytes": 0}}),
            "storage_bytes must be above 0",
        ),
        (json!({"capacity": {"disks": 3}}), "unknown dimension"),
        (json!({"threshold": 1.5}), "threshold"),
    ] {
        let (s, v) = api
            .call("PATCH", "/fleet/v1/cells/1", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let (s, _) = api
        .call(
            "PATCH",
            "/fleet/v1/cells/7",
            Some(json!({"threshold": 0.8})),
        )
        .await;
    assert_eq!(s, 404);

    // The cell grows: only storage changes, and the tenant now fits.
    let (s, v) = api
        .call(
            "PATCH",
            "/fleet/v1/cells/1",
            Some(json!({"capacity": {"storage_bytes": 2_000_000}, "warn": 0.5})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = &v["cell"];
    assert_eq!(c["capacity"]["storage_bytes"], 2_000_000);
    assert_eq!(c["capacity"]["connections"], 100, "other dimensions kept");
    assert_eq!(c["warn"]["storage_bytes"], 0.5);
    assert_eq!(c["threshold"]["storage_bytes"], 0.7, "threshold kept");
    let (s, v) = api.post("/fleet/v1/tenants", big).await;
    assert_eq!((s, v["cell"].as_u64()), (201, Some(1)), "{v}");

    // On record, with the figures before.
    let (_, v) = api.get("/fleet/v1/decisions").await;
    let d = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "cell-limits")
        .expect("a cell-limits decision");
    assert_eq!(
        d["detail"]["before"]["capacity"]["storage_bytes"], 1_000_000,
        "{d}"
    );
}
