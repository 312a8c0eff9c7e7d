//! What the fleet service's integration tests share: a database of its own
//! per test on the server named by `WHARF_TEST_POSTGRES_URL` (the tests
//! that need one skip without it, and fail when `CI` or
//! `WHARF_REQUIRE_POSTGRES=1` says PostgreSQL is required), and fake
//! registry nodes whose admin `/metrics` serve text the test sets and
//! whose admin API creates tenants (placement asks it to; the real nodes'
//! answers are tested in crates/wharf/tests/fleet_service.rs).

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_postgres::NoTls;
use wharf_fleetd::{FleetStore, StoreConfig};

const URL_VAR: &str = "WHARF_TEST_POSTGRES_URL";

/// The test server's URL, or `None` when PostgreSQL tests are skipped.
pub fn server() -> Option<String> {
    if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty()) {
        return Some(url);
    }
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty());
    let required = set("CI") || std::env::var("WHARF_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{URL_VAR} is not set, but CI or WHARF_REQUIRE_POSTGRES=1 requires the PostgreSQL \
         tests: start a server with `bash scripts/postgres.sh start DIR PORT` and export \
         {URL_VAR}=<the URL it prints>"
    );
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "wharf-fleetd: PostgreSQL tests skipped: set {URL_VAR} \
             (`bash scripts/postgres.sh start DIR 26432` prints one)"
        );
    });
    None
}

/// `server()` or return from the calling test (it passes, skipped).
#[macro_export]
macro_rules! server_or_skip {
    () => {
        match common::server() {
            Some(url) => url,
            None => return,
        }
    };
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server ({URL_VAR}): {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn db_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("fleetd_test_{:016x}", h.finish())
}

/// A database of its own for one test, dropped when this is.
pub struct TestDb {
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates the database.
    pub async fn create(admin_url: &str) -> TestDb {
        let name = db_name();
        admin_client(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDb {
            admin_url: admin_url.to_string(),
            name,
        }
    }

    /// The server URL, pointed at this database.
    pub fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}dbname={}", self.admin_url, self.name)
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> FleetStore {
        let store = FleetStore::connect(StoreConfig {
            url: self.url(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        })
        .await
        .expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                admin_client(&url)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// A fake registry node: its admin port serves `/metrics` with whatever
/// text the test last set (or 500 while `down`), and `POST
/// /admin/v1/tenants` / `GET /admin/v1/tenants/{name}` over a map of
/// tenants (`409` for a name it holds).
#[derive(Clone)]
pub struct FakeNode {
    /// Its admin base URL.
    pub url: String,
    text: Arc<Mutex<String>>,
    down: Arc<Mutex<bool>>,
    /// While set, its admin API answers `503` (the node is there, its
    /// directory is not).
    admin_down: Arc<Mutex<bool>>,
    /// The tenants created on it, by name.
    pub tenants: Arc<Mutex<std::collections::BTreeMap<String, serde_json::Value>>>,
}

impl FakeNode {
    /// Starts one on 127.0.0.1, port chosen by the system.
    pub async fn start() -> FakeNode {
        let text = Arc::new(Mutex::new(String::new()));
        let down = Arc::new(Mutex::new(false));
        let (t, d) = (text.clone(), down.clone());
        let tenants = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let (created, read) = (tenants.clone(), tenants.clone());
        let admin_down = Arc::new(Mutex::new(false));
        let unavailable = admin_down.clone();
        // Bodies as text: this crate's axum has no `json` feature.
        let error = |status: axum::http::StatusCode, code: &str, message: String| {
            let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
            (status, body.to_string())
        };
        let app = axum::Router::new()
            .route(
                "/admin/v1/tenants",
                post(move |body: String| {
                    let (created, unavailable) = (created.clone(), unavailable.clone());
                    async move {
                        if *unavailable.lock().unwrap() {
                            return error(
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "UNAVAILABLE",
                                "metadata store unavailable".into(),
                            );
                        }
                        let body: serde_json::Value =
                            serde_json::from_str(&body).unwrap_or_default();
                        let name = body["name"].as_str().unwrap_or("").to_string();
                        let mut m = created.lock().unwrap();
                        if m.contains_key(&name) {
                            return error(
                                axum::http::StatusCode::CONFLICT,
                                "CONFLICT",
                                format!("tenant {name} exists"),
                            );
                        }
                        m.insert(name, body.clone());
                        (axum::http::StatusCode::CREATED, body.to_string())
                    }
                }),
            )
            .route(
                "/admin/v1/tenants/{name}",
                get(
                    move |axum::extract::Path(name): axum::extract::Path<String>| {
                        let read = read.clone();
                        async move {
                            read.lock()
                                .unwrap()
                                .get(&name)
                                .map(|t| t.to_string())
                                .ok_or(axum::http::StatusCode::NOT_FOUND)
                        }
                    },
                ),
            )
            .route(
                "/metrics",
                get(move || {
                    let (t, d) = (t.clone(), d.clone());
                    async move {
                        if *d.lock().unwrap() {
                            return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                        }
                        let body = t.lock().unwrap().clone();
                        Ok(body)
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeNode {
            url,
            text,
            down,
            admin_down,
            tenants,
        }
    }

    /// Sets the node's metrics text.
    pub fn set(&self, text: &str) {
        *self.text.lock().unwrap() = text.to_string();
    }

    /// Makes the admin API's tenant creation answer `503` (or work again).
    pub fn set_admin_down(&self, down: bool) {
        *self.admin_down.lock().unwrap() = down;
    }

    /// Makes `/metrics` fail (or work again).
    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }
}

/// Metrics text of a node with a pool of `pool` and, per tenant,
/// `(name, pulls so far, stored bytes)`.
pub fn node_text(pool: u64, tenants: &[(&str, u64, u64)]) -> String {
    let mut s = format!(
        "# TYPE wharf_dependency_pool_size gauge\n\
         wharf_dependency_pool_size{{dependency=\"metadata\"}} {pool}\n"
    );
    for (name, pulls, stored) in tenants {
        s.push_str(&format!(
            "wharf_tenant_requests_total{{tenant=\"{name}\",class=\"pull\"}} {pulls}\n\
             wharf_tenant_requests_total{{tenant=\"{name}\",class=\"push\"}} 0\n\
             wharf_tenant_bytes_total{{tenant=\"{name}\",direction=\"in\"}} 0\n\
             wharf_tenant_bytes_total{{tenant=\"{name}\",direction=\"out\"}} 0\n\
             wharf_tenant_stored_bytes{{tenant=\"{name}\"}} {stored}\n\
             wharf_tenant_fenced{{tenant=\"{name}\"}} 0\n"
        ));
    }
    s
}
