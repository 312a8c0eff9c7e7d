//! The admin port: liveness, readiness and metrics, apart from client
//! traffic so that a flood of registry requests cannot hide a node's state
//! from its load balancer or its monitoring.
//!
//! Owns: [`NodeState`] (what the node knows about its own saturation and
//! dependencies) and [`admin_app`], the router serving `/healthz`,
//! `/readyz` and `/metrics` over it.
//!
//! Must never: touch a dependency to answer (a probe that waits on a slow
//! database would itself pile up), or block: every answer is read from
//! counters the request path already keeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use wharf_admission::{Admission, Class};
use wharf_guard::Guard;
use wharf_telemetry::{process, Exposition, RequestMetrics};

use crate::server::ConnStats;

/// Connections open at or above this fraction of the cap count as saturated.
const CONNECTIONS_SATURATED: f64 = 0.95;

/// Everything the admin port reports on. Cheap to share.
pub struct NodeState {
    /// Admission budgets (absent when the node runs without them).
    pub admission: Option<Admission>,
    /// The client listener's connection counters.
    pub connections: Arc<ConnStats>,
    /// Request latency and traffic.
    pub requests: Arc<RequestMetrics>,
    /// One guard per dependency, all exported in metrics.
    pub guards: Vec<Guard>,
    /// The names of the guards whose open breaker makes this node not
    /// ready: node-local dependencies only (its own disk, its embedded
    /// database). A dependency shared by every node (PostgreSQL, the object
    /// store) must not: it would drain every node at once, and the load
    /// balancer's bare refusals would replace the node's own answers, which
    /// keep serving pulls of known content and refuse the rest fast, with
    /// `Retry-After` and an OCI error body.
    pub local_dependencies: Vec<&'static str>,
    /// Set once shutdown begins: the node drains and looks not ready.
    pub shutting_down: AtomicBool,
    /// The garbage collector's counters and last-read queue state.
    pub gc: Option<Arc<wharf_gc::GcMetrics>>,
    /// What is running: the version and the commit it was built from,
    /// exported as `wharf_build_info`.
    pub build: Option<BuildInfo>,
    /// Per-tenant traffic, fences and stored bytes (`wharf_tenant_*`).
    pub tenants: Option<Arc<crate::tenant_traffic::TenantTraffic>>,
    /// Event notification queues and deliveries (`wharf_notify_*`).
    pub notify: Option<wharf_notify::Notifier>,
    /// The registry, for its caches' sizes (`wharf_cache_*`).
    pub registry: Option<wharf_registry::Registry>,
    /// Dependencies not yet reached at start: the node is not ready until
    /// each has answered once. Only the start fills it; a dependency that
    /// fails later is the guards' business (a node that was ready keeps
    /// serving what it can).
    pub start: Arc<StartGate>,
}

/// The dependencies a starting node still waits for, each with why.
#[derive(Debug, Default)]
pub struct StartGate {
    waiting: std::sync::Mutex<Vec<(&'static str, String)>>,
}

impl StartGate {
    /// `dependency` has not answered yet, because of `why`.
    pub fn wait_for(&self, dependency: &'static str, why: String) {
        let mut w = self.waiting.lock().expect("start gate poisoned");
        w.retain(|(d, _)| *d != dependency);
        w.push((dependency, why));
    }

    /// `dependency` answered.
    pub fn reached(&self, dependency: &'static str) {
        let mut w = self.waiting.lock().expect("start gate poisoned");
        w.retain(|(d, _)| *d != dependency);
    }

    /// The first dependency still awaited, and why.
    pub fn first(&self) -> Option<(&'static str, String)> {
        let w = self.waiting.lock().expect("start gate poisoned");
        w.first().cloned()
    }
}

/// The running binary's identity, for `wharf_build_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The package version (`wharf --version`).
    pub version: String,
    /// The git commit it was built from, or `unknown`.
    pub commit: String,
}

/// Why the node is not ready, if it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    ShuttingDown,
    ConnectionsSaturated,
    ClassSaturated(&'static str),
    DependencyDown(&'static str),
    /// Starting: this dependency has not answered yet (and why).
    Starting(&'static str, String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::ShuttingDown => f.write_str("shutting down"),
            NotReady::ConnectionsSaturated => f.write_str("connections near the cap"),
            NotReady::ClassSaturated(c) => write!(f, "{c} requests at their limit with waiters"),
            NotReady::DependencyDown(d) => write!(f, "{d} unreachable (circuit open)"),
            NotReady::Starting(d, why) => write!(f, "starting: waiting for {d} ({why})"),
        }
    }
}

impl NodeState {
    pub fn new(
        admission: Option<Admission>,
        connections: Arc<ConnStats>,
        requests: Arc<RequestMetrics>,
        guards: Vec<Guard>,
        local_dependencies: Vec<&'static str>,
    ) -> NodeState {
        NodeState {
            admission,
            connections,
            requests,
            guards,
            local_dependencies,
            shutting_down: AtomicBool::new(false),
            gc: None,
            build: None,
            tenants: None,
            notify: None,
            registry: None,
            start: Arc::new(StartGate::default()),
        }
    }

    /// `Ok` when the node should receive traffic, else the first reason not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(NotReady::ShuttingDown);
        }
        if let Some((dependency, why)) = self.start.first() {
            return Err(NotReady::Starting(dependency, why));
        }
        let open = self.connections.open.load(Ordering::Relaxed) as f64;
        let limit = self.connections.limit.load(Ordering::Relaxed) as f64;
        if limit > 0.0 && open >= limit * CONNECTIONS_SATURATED {
            return Err(NotReady::ConnectionsSaturated);
        }
        if let Some(a) = &self.admission {
            for c in Class::ALL {
                let s = a.stats(c);
                if s.in_flight >= s.limit && s.waiting > 0 {
                    return Err(NotReady::ClassSaturated(c.as_str()));
                }
            }
        }
        if let Some(g) = self
            .guards
            .iter()
            .find(|g| g.is_open() && self.local_dependencies.contains(&g.name()))
        {
            return Err(NotReady::DependencyDown(g.name()));
        }
        Ok(())
    }

    /// The Prometheus text exposition of every bounded resource and counter.
    pub fn render_metrics(&self) -> String {
        let mut out = Exposition::new();
        self.render_connections(&mut out);
        if let Some(a) = &self.admission {
            render_admission(a, &mut out);
        }
        self.requests.render(&mut out);
        self.render_dependencies(&mut out);
        if let Some(gc) = &self.gc {
            gc.render(&mut out);
        }
        if let Some(tenants) = &self.tenants {
            tenants.render(&mut out);
        }
        if let Some(notify) = &self.notify {
            notify.render(&mut out);
        }
        if let Some(registry) = &self.registry {
            render_caches(registry, &mut out);
        }
        out.gauge(
            "wharf_ready",
            "1 when /readyz answers ready, else 0.",
            &[],
            if self.readiness().is_ok() { 1.0 } else { 0.0 },
        );
        if let Some(b) = &self.build {
            out.gauge(
                "wharf_build_info",
                "Always 1; the labels say which version and commit this node runs.",
                &[("version", &b.version), ("commit", &b.commit)],
                1.0,
            );
        }
        out.counter(
            "wharf_log_lines_dropped_total",
            "Access-log lines dropped because the log writer's queue was full (the node was writing its log slower than it served).",
            &[],
            wharf_telemetry::LOG_LINES_DROPPED.load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        if let Some(p) = process::sample() {
            out.gauge(
                "wharf_process_resident_memory_bytes",
                "Resident memory of the process.",
                &[],
                p.resident_bytes as f64,
            );
            out.gauge(
                "wharf_process_open_fds",
                "Open file descriptors.",
                &[],
                p.open_fds as f64,
            );
            if let Some(max) = p.max_fds {
                out.gauge(
                    "wharf_process_max_fds",
                    "Soft limit on open file descriptors.",
                    &[],
                    max as f64,
                );
            }
        }
        out.finish()
    }

    fn render_connections(&self, out: &mut Exposition) {
        let c = &self.connections;
        let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as f64;
        let load64 = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.gauge(
            "wharf_connections_open",
            "Client connections being served.",
            &[],
            load(&c.open),
        );
        out.gauge(
            "wharf_connections_limit",
            "Cap on client connections served; more wait (503 per request) or are refused.",
            &[],
            load(&c.limit),
        );
        out.gauge(
            "wharf_connections_waiting",
            "Client connections past the cap, waiting for a slot (each request answered 503).",
            &[],
            load(&c.waiting),
        );
        out.gauge(
            "wharf_connections_waiting_limit",
            "Cap on waiting connections; more are answered 503 and closed.",
            &[],
            load(&c.waiting_limit),
        );
        out.counter(
            "wharf_connections_promoted_total",
            "Waiting connections that got a slot and were served.",
            &[],
            load64(&c.promoted_total),
        );
        out.counter(
            "wharf_connections_accepted_total",
            "Client connections accepted under the cap.",
            &[],
            load64(&c.accepted_total),
        );
        out.counter(
            "wharf_connections_refused_total",
            "Refusals at the connection cap: canned 503s (several per waiting connection) and connections closed past every budget.",
            &[],
            load64(&c.refused_total),
        );
        out.counter(
            "wharf_connections_idle_closed_total",
            "Client connections closed for idling.",
            &[],
            load64(&c.idle_closed_total),
        );
        out.counter(
            "wharf_connections_header_timeouts_total",
            "Client connections closed because no whole request arrived within the header timeout.",
            &[],
            load64(&c.header_timeouts_total),
        );
        out.counter(
            "wharf_tls_handshake_failures_total",
            "TLS handshakes that failed or did not finish within the header timeout.",
            &[],
            load64(&c.tls_failed_total),
        );
    }

    fn render_dependencies(&self, out: &mut Exposition) {
        let stats: Vec<_> = self.guards.iter().map(|g| g.stats()).collect();
        type Field = fn(&wharf_guard::GuardStats) -> f64;
        let gauges: [(&str, &str, Field); 3] = [
            (
                "wharf_dependency_pool_size",
                "Calls this node may have in flight to the dependency.",
                |s| s.size as f64,
            ),
            (
                "wharf_dependency_pool_in_use",
                "Calls in flight to the dependency.",
                |s| s.in_use as f64,
            ),
            (
                "wharf_dependency_breaker_open",
                "1 while the dependency's circuit breaker is open.",
                |s| f64::from(u8::from(s.breaker == wharf_guard::BreakerState::Open)),
            ),
        ];
        for (name, help, f) in gauges {
            for s in &stats {
                out.gauge(name, help, &[("dependency", s.name)], f(s));
            }
        }
        let counters: [(&str, &str, Field); 6] = [
            (
                "wharf_dependency_calls_total",
                "Calls that reached the dependency.",
                |s| s.calls_total as f64,
            ),
            (
                "wharf_dependency_busy_total",
                "Calls refused because no slot freed in time.",
                |s| s.busy_total as f64,
            ),
            (
                "wharf_dependency_timeouts_total",
                "Calls that passed their deadline.",
                |s| s.timeouts_total as f64,
            ),
            (
                "wharf_dependency_failures_total",
                "Calls the dependency failed.",
                |s| s.failures_total as f64,
            ),
            (
                "wharf_dependency_rejected_open_total",
                "Calls refused by an open circuit breaker.",
                |s| s.rejected_open_total as f64,
            ),
            (
                "wharf_dependency_wait_seconds_total",
                "Time calls spent waiting for a slot.",
                |s| s.wait_seconds_total,
            ),
        ];
        for (name, help, f) in counters {
            for s in &stats {
                out.counter(name, help, &[("dependency", s.name)], f(s));
            }
        }
        for g in &self.guards {
            out.histogram(
                "wharf_dependency_call_duration_seconds",
                "Duration of calls that reached the dependency.",
                &[("dependency", g.name())],
                g.latency(),
            );
        }
    }
}

/// The in-memory caches, each beside its bound: a node's resident memory
/// levels off once they are full (docs/operations.md, "Memory").
fn render_caches(registry: &wharf_registry::Registry, out: &mut Exposition) {
    // One family after another: a family's samples stay together.
    let caches = registry.cache_usage();
    for c in &caches {
        out.gauge(
            "wharf_cache_entries",
            "Entries an in-memory cache holds.",
            &[("cache", c.name)],
            c.entries as f64,
        );
    }
    for c in &caches {
        if let Some(bytes) = c.bytes {
            out.gauge(
                "wharf_cache_bytes",
                "Memory a byte-bounded cache counts against its budget.",
                &[("cache", c.name)],
                bytes as f64,
            );
        }
    }
    for c in caches.iter().filter(|c| c.bytes.is_some()) {
        out.gauge(
            "wharf_cache_budget_bytes",
            "The byte budget of a byte-bounded cache.",
            &[("cache", c.name)],
            c.bound as f64,
        );
    }
    for c in caches.iter().filter(|c| c.bytes.is_none()) {
        out.gauge(
            "wharf_cache_max_entries",
            "The most entries a bounded map keeps.",
            &[("cache", c.name)],
            c.bound as f64,
        );
    }
}

fn render_admission(a: &Admission, out: &mut Exposition) {
    let stats: Vec<_> = Class::ALL
        .iter()
        .map(|&c| (c.as_str(), a.stats(c)))
        .collect();
    for (class, s) in &stats {
        out.gauge(
            "wharf_requests_in_flight",
            "Requests admitted and not yet answered in full, by class.",
            &[("class", class)],
            s.in_flight as f64,
        );
    }
    for (class, s) in &stats {
        out.gauge(
            "wharf_requests_in_flight_limit",
            "The in-flight limit in force, by class (lowered by the adaptive limit).",
            &[("class", class)],
            s.limit as f64,
        );
    }
    for (class, s) in &stats {
        out.gauge(
            "wharf_requests_waiting",
            "Requests waiting (bounded) for a slot, by class.",
            &[("class", class)],
            s.waiting as f64,
        );
    }
    for (class, s) in &stats {
        out.counter(
            "wharf_requests_admitted_total",
            "Requests admitted, by class.",
            &[("class", class)],
            s.admitted_total as f64,
        );
    }
    for (class, s) in &stats {
        for (reason, n) in [
            ("node_busy", s.refused_node_total),
            ("tenant_share", s.refused_tenant_total),
        ] {
            out.counter(
                "wharf_requests_shed_total",
                "Requests refused at once: node_busy answered 503, tenant_share 429.",
                &[("class", class), ("reason", reason)],
                n as f64,
            );
        }
    }
}

/// The admin router over `node`: [`probes_app`] and [`metrics_app`].
pub fn admin_app(node: Arc<NodeState>) -> Router {
    probes_app(node.clone()).merge(metrics_app(node))
}

/// `/healthz` and `/readyz`, which load balancers and orchestrators ask
/// without credentials.
pub fn probes_app(node: Arc<NodeState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(node)
}

/// `/metrics` alone, so that it can be put behind the admin token.
pub fn metrics_app(node: Arc<NodeState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(node)
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(node): State<Arc<NodeState>>) -> Response {
    match node.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(node): State<Arc<NodeState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.render_metrics(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wharf_guard::{BreakerConfig, GuardConfig};

    fn guard(name: &'static str) -> Guard {
        Guard::new(GuardConfig {
            name,
            max_concurrent: 4,
            max_wait: Duration::from_millis(10),
            deadline: Duration::from_secs(1),
            breaker: BreakerConfig {
                failures_to_open: 1,
                open_for: Duration::from_secs(60),
            },
        })
    }

    async fn fail_once(g: &Guard) {
        let r: Result<(), _> = g
            .run(true, |_: &String| true, async { Err("down".to_string()) })
            .await;
        assert!(r.is_err());
        assert!(g.is_open());
    }

    fn node(guards: Vec<Guard>, local: Vec<&'static str>) -> NodeState {
        NodeState::new(
            None,
            Arc::new(ConnStats::default()),
            Arc::new(RequestMetrics::default()),
            guards,
            local,
        )
    }

    #[tokio::test]
    async fn a_local_dependency_down_drains_the_node() {
        let disk = guard("blob_storage");
        fail_once(&disk).await;
        let n = node(vec![disk], vec!["blob_storage"]);
        assert_eq!(n.readiness(), Err(NotReady::DependencyDown("blob_storage")));
    }

    #[tokio::test]
    async fn a_shared_dependency_down_does_not() {
        let db = guard("metadata");
        fail_once(&db).await;
        let n = node(vec![db], vec!["blob_storage"]);
        assert_eq!(n.readiness(), Ok(()));
        assert!(n
            .render_metrics()
            .contains("wharf_dependency_breaker_open{dependency=\"metadata\"} 1"));
    }

    #[tokio::test]
    async fn shutting_down_and_a_full_connection_cap_are_not_ready() {
        let n = node(vec![], vec![]);
        assert_eq!(n.readiness(), Ok(()));
        n.connections.limit.store(100, Ordering::Relaxed);
        n.connections.open.store(95, Ordering::Relaxed);
        assert_eq!(n.readiness(), Err(NotReady::ConnectionsSaturated));
        n.connections.open.store(10, Ordering::Relaxed);
        n.shutting_down.store(true, Ordering::Relaxed);
        assert_eq!(n.readiness(), Err(NotReady::ShuttingDown));
    }

    #[tokio::test]
    async fn a_dependency_not_reached_at_start_holds_readiness_until_it_is() {
        let n = node(vec![], vec![]);
        n.start.wait_for("metadata", "connection refused".into());
        n.start.wait_for("blob_storage", "timed out".into());
        n.start.wait_for("metadata", "still refused".into());
        assert_eq!(
            n.readiness(),
            Err(NotReady::Starting("blob_storage", "timed out".into()))
        );
        n.start.reached("blob_storage");
        let why = n.readiness().unwrap_err();
        assert_eq!(why, NotReady::Starting("metadata", "still refused".into()));
        assert!(why.to_string().contains("waiting for metadata"), "{why}");
        n.start.reached("metadata");
        assert_eq!(n.readiness(), Ok(()));
    }
}
