//! Learns each cell's real use by scraping every node's admin `/metrics`.
//!
//! Owns: one [`CellScraper`] per cell, each with its own bounded HTTP client
//! (connect and request timeouts, a cap on concurrent scrapes, a cap on the
//! body read) so that one slow cell cannot hold up another; turning the
//! nodes' counters into rates between two scrapes; and mapping the figures
//! onto `wharf_fleet`'s five dimensions, per tenant and per cell, in a
//! [`CellReading`].
//!
//! What a node exports, and what it becomes:
//!
//! | node metric | dimension | how |
//! |---|---|---|
//! | `wharf_dependency_pool_size{dependency}` | Connections | summed over dependencies and nodes (the pools are the cell's own, so they are its base use) |
//! | `wharf_tenant_stored_bytes{tenant}` | Storage | the largest any node reports (the nodes share one store, so each reports the same figure) |
//! | `wharf_tenant_requests_total{tenant,class="pull"}` | PullRate | rate, summed over nodes, in milli-requests per second |
//! | `wharf_tenant_requests_total{tenant,class="push"}` | PushRate | likewise |
//! | `wharf_tenant_bytes_total{tenant,direction="in"\|"out"}` | Bandwidth | rate of both directions, summed over nodes |
//! | `wharf_tenant_fenced{tenant}` | — | the tenant's write fence is up on some node |
//!
//! A cell's reading is only renewed when every node answered and each had a
//! previous sample to take rates from; otherwise the old reading ages, and
//! past the staleness bound the placement engine treats the cell as stale
//! (`wharf_fleet`'s rule: no new tenants, not relieved by a rebalance).
//!
//! Must never: decide anything, or retry a failed node within one round
//! (the next round is the retry); a reading that could not be taken is
//! reported as such, never as zero use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wharf_fleet::{Dimension, Load};

use crate::prom::{self, Sample};
use crate::store::CellRecord;

/// How cells are scraped.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    /// Bounds opening a connection to a node.
    pub connect_timeout: Duration,
    /// Bounds one whole scrape of one node.
    pub request_timeout: Duration,
    /// Scrapes in flight at once per cell.
    pub max_concurrent: usize,
    /// The largest metrics body read from a node.
    pub max_body: usize,
    /// The nodes' admin token, if their `/metrics` asks for one.
    pub token: Option<String>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_concurrent: 4,
            max_body: 8 << 20,
            token: None,
        }
    }
}

/// What the fleet knows of a cell's use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellReading {
    /// When (unix seconds) the current figures were taken; `None`: never.
    pub last_seen: Option<u64>,
    /// When the last round was tried.
    pub last_attempt: Option<u64>,
    /// Rounds that failed (some node did not answer or answered garbage).
    pub failures_total: u64,
    /// Why the last round failed, if it did.
    pub last_error: Option<String>,
    /// The cell's whole measured use (Connections: the nodes' pools).
    pub total: Load,
    /// Each tenant's measured use (Connections is always 0: pools are the
    /// cell's, not a tenant's).
    pub tenants: BTreeMap<String, Load>,
    /// Tenants whose write fence is up.
    pub fenced: BTreeSet<String>,
}

/// One tenant's raw figures from one node.
#[derive(Clone, Debug, Default, PartialEq)]
struct TenantRaw {
    pull: f64,
    push: f64,
    bytes: f64,
    stored: f64,
    fenced: bool,
}

/// One node's figures at one moment.
#[derive(Clone, Debug)]
struct NodeSample {
    at: Instant,
    pools: f64,
    tenants: BTreeMap<String, TenantRaw>,
}

fn node_sample(samples: &[Sample], at: Instant) -> NodeSample {
    let mut s = NodeSample {
        at,
        pools: 0.0,
        tenants: BTreeMap::new(),
    };
    for x in samples {
        if !x.value.is_finite() {
            continue;
        }
        if x.name == "wharf_dependency_pool_size" {
            s.pools += x.value.max(0.0);
            continue;
        }
        let Some(tenant) = x.label("tenant") else {
            continue;
        };
        let t = || TenantRaw::default();
        match x.name.as_str() {
            "wharf_tenant_requests_total" => {
                let e = s.tenants.entry(tenant.to_string()).or_insert_with(t);
                match x.label("class") {
                    Some("pull") => e.pull += x.value,
                    Some("push") => e.push += x.value,
                    _ => {}
                }
            }
            "wharf_tenant_bytes_total" => {
                if matches!(x.label("direction"), Some("in") | Some("out")) {
                    s.tenants.entry(tenant.to_string()).or_insert_with(t).bytes += x.value;
                }
            }
            "wharf_tenant_stored_bytes" => {
                s.tenants.entry(tenant.to_string()).or_insert_with(t).stored += x.value;
            }
            "wharf_tenant_fenced" => {
                s.tenants.entry(tenant.to_string()).or_insert_with(t).fenced |= x.value > 0.0;
            }
            _ => {}
        }
    }
    s
}

/// Per-second increase of a counter from `prev` to `cur` over `secs`; a
/// counter that went down was reset (the node restarted), so all of `cur`
/// is new since then.
fn rate(prev: f64, cur: f64, secs: f64) -> f64 {
    let delta = if cur >= prev { cur - prev } else { cur };
    if secs > 0.0 {
        delta / secs
    } else {
        0.0
    }
}

/// One node's contribution to its cell between two samples: per tenant
/// (rates, stored bytes), its pools, and fenced tenants.
fn node_use(prev: &NodeSample, cur: &NodeSample) -> (BTreeMap<String, Load>, u64) {
    let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
    let zero = TenantRaw::default();
    let mut out = BTreeMap::new();
    for (name, c) in &cur.tenants {
        let p = prev.tenants.get(name).unwrap_or(&zero);
        let mut l = Load::ZERO;
        l[Dimension::Storage] = c.stored.max(0.0) as u64;
        l[Dimension::PullRate] = (rate(p.pull, c.pull, secs) * 1000.0).round() as u64;
        l[Dimension::PushRate] = (rate(p.push, c.push, secs) * 1000.0).round() as u64;
        l[Dimension::Bandwidth] = rate(p.bytes, c.bytes, secs).round() as u64;
        out.insert(name.clone(), l);
    }
    (out, cur.pools as u64)
}

/// Folds every node's contribution into a cell's figures: rates add up,
/// stored bytes (shared by the nodes) take the largest report.
fn combine(nodes: &[(BTreeMap<String, Load>, u64)]) -> (Load, BTreeMap<String, Load>) {
    let mut tenants: BTreeMap<String, Load> = BTreeMap::new();
    let mut pools = 0u64;
    for (per_tenant, p) in nodes {
        pools = pools.saturating_add(*p);
        for (name, l) in per_tenant {
            let e = tenants.entry(name.clone()).or_default();
            let storage = e[Dimension::Storage].max(l[Dimension::Storage]);
            *e = e.plus(l);
            e[Dimension::Storage] = storage;
        }
    }
    let mut total = Load::ZERO;
    for l in tenants.values() {
        total = total.plus(l);
    }
    total[Dimension::Connections] = pools;
    (total, tenants)
}

/// Scrapes one cell's nodes.
pub struct CellScraper {
    cell: u32,
    nodes: Vec<String>,
    client: reqwest::Client,
    limit: Arc<Semaphore>,
    config: ScrapeConfig,
    previous: Mutex<HashMap<String, NodeSample>>,
    reading: Mutex<CellReading>,
}

impl CellScraper {
    /// A scraper for `cell`'s `nodes` (admin base URLs).
    pub fn new(cell: u32, nodes: Vec<String>, config: ScrapeConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(config.max_concurrent.max(1))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cell {cell}: HTTP client: {e}"))?;
        Ok(CellScraper {
            cell,
            nodes,
            client,
            limit: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            previous: Mutex::new(HashMap::new()),
            reading: Mutex::new(CellReading::default()),
        })
    }

    /// The nodes scraped.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The latest reading.
    pub fn reading(&self) -> CellReading {
        self.reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn fetch(&self, node: &str) -> Result<String, String> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| "scraper closed".to_string())?;
        let url = format!("{}/metrics", node.trim_end_matches('/'));
        let mut req = self.client.get(&url);
        if let Some(t) = &self.config.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > self.config.max_body {
                return Err(format!(
                    "{url}: body larger than {} bytes",
                    self.config.max_body
                ));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| format!("{url}: body is not UTF-8"))
    }

    /// One round: scrapes every node at once (within the cell's cap), and
    /// renews the reading if all answered and each had a previous sample.
    /// `now` is unix seconds, recorded as the reading's time.
    pub async fn scrape(self: &Arc<Self>, now: u64) -> CellReading {
        let mut set = JoinSet::new();
        for node in self.nodes.clone() {
            let me = self.clone();
            set.spawn(async move {
                let r = me.fetch(&node).await.and_then(|text| {
                    prom::parse(&text)
                        .map(|s| node_sample(&s, Instant::now()))
                        .map_err(|e| format!("{node}: {e}"))
                });
                (node, r)
            });
        }
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((node, Ok(s))) => samples.push((node, s)),
                Ok((_, Err(e))) => errors.push(e),
                Err(e) => errors.push(format!("scrape task: {e}")),
            }
        }
        let mut contributions = Vec::new();
        let mut warming = false;
        {
            let mut prev = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            for (node, s) in samples {
                match prev.get(&node) {
                    Some(p) => contributions.push(node_use(p, &s)),
                    None => warming = true,
                }
                prev.insert(node, s);
            }
        }
        let mut r = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        r.last_attempt = Some(now);
        if self.nodes.is_empty() {
            errors.push("the cell has no nodes to scrape".into());
        }
        if !errors.is_empty() {
            errors.sort();
            r.failures_total += 1;
            r.last_error = Some(errors.join("; "));
            tracing::warn!(cell = self.cell, error = %errors.join("; "), "cell scrape failed");
        } else if !warming {
            let (total, tenants) = combine(&contributions);
            r.fenced = tenants_fenced(&self.previous.lock().unwrap_or_else(|p| p.into_inner()));
            r.total = total;
            r.tenants = tenants;
            r.last_seen = Some(now);
            r.last_error = None;
        }
        r.clone()
    }
}

fn tenants_fenced(samples: &HashMap<String, NodeSample>) -> BTreeSet<String> {
    samples
        .values()
        .flat_map(|s| s.tenants.iter().filter(|(_, t)| t.fenced))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Every cell's scraper, kept in step with the cells the store lists.
#[derive(Default)]
pub struct Scraper {
    config: ScrapeConfig,
    cells: Mutex<BTreeMap<u32, Arc<CellScraper>>>,
}

impl Scraper {
    /// A scraper with no cells yet.
    pub fn new(config: ScrapeConfig) -> Scraper {
        Scraper {
            config,
            cells: Mutex::new(BTreeMap::new()),
        }
    }

    /// Scrapes exactly the cells given that are not retired: a new cell
    /// (or one whose nodes changed) gets a fresh scraper, a gone one is
    /// dropped.
    pub fn sync(&self, cells: &[CellRecord]) {
        let mut map = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: BTreeSet<u32> = cells
            .iter()
            .filter(|c| c.state != crate::store::CellLifecycle::Retired)
            .map(|c| c.id)
            .collect();
        map.retain(|id, _| wanted.contains(id));
        for c in cells.iter().filter(|c| wanted.contains(&c.id)) {
            if map.get(&c.id).is_some_and(|s| s.nodes() == c.nodes) {
                continue;
            }
            match CellScraper::new(c.id, c.nodes.clone(), self.config.clone()) {
                Ok(s) => {
                    map.insert(c.id, Arc::new(s));
                }
                Err(e) => tracing::error!(cell = c.id, error = %e, "cannot scrape cell"),
            }
        }
    }

    /// One round over every cell at once; each cell bounds its own nodes.
    pub async fn scrape_all(&self, now: u64) {
        let cells: Vec<Arc<CellScraper>> = self
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut set = JoinSet::new();
        for c in cells {
            set.spawn(async move { c.scrape(now).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// Every cell's latest reading.
    pub fn readings(&self) -> BTreeMap<u32, CellReading> {
        self.cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, s)| (*id, s.reading()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, at: Instant) -> NodeSample {
        node_sample(&prom::parse(text).unwrap(), at)
    }

    #[test]
    fn counters_become_rates_in_each_dimension_unit() {
        let t0 = Instant::now();
        let a = sample(
            "wharf_dependency_pool_size{dependency=\"metadata\"} 16\n\
             wharf_dependency_pool_size{dependency=\"blob_storage\"} 32\n\
             wharf_tenant_requests_total{tenant=\"acme\",class=\"pull\"} 100\n\
             wharf_tenant_requests_total{tenant=\"acme\",class=\"push\"} 10\n\
             wharf_tenant_bytes_total{tenant=\"acme\",direction=\"in\"} 1000\n\
             wharf_tenant_bytes_total{tenant=\"acme\",direction=\"out\"} 5000\n\
             wharf_tenant_stored_bytes{tenant=\"acme\"} 4096\n",
            t0,
        );
        let b = sample(
            "wharf_dependency_pool_size{dependency=\"metadata\"} 16\n\
             wharf_dependency_pool_size{dependency=\"blob_storage\"} 32\n\
             wharf_tenant_requests_total{tenant=\"acme\",class=\"pull\"} 300\n\
             wharf_tenant_requests_total{tenant=\"acme\",class=\"push\"} 15\n\
             wharf_tenant_bytes_total{tenant=\"acme\",direction=\"in\"} 3000\n\
             wharf_tenant_bytes_total{tenant=\"acme\",direction=\"out\"} 23000\n\
             wharf_tenant_stored_bytes{tenant=\"acme\"} 8192\n\
             wharf_tenant_fenced{tenant=\"acme\"} 0\n",
            t0 + Duration::from_secs(10),
        );
        let (tenants, pools) = node_use(&a, &b);
        assert_eq!(pools, 48);
        let acme = tenants["acme"];
        assert_eq!(acme[Dimension::PullRate], 20_000, "20 req/s in milli");
        assert_eq!(acme[Dimension::PushRate], 500);
        assert_eq!(acme[Dimension::Bandwidth], 2_000, "(2000 + 18000) B / 10 s");
        assert_eq!(acme[Dimension::Storage], 8192);
        assert_eq!(acme[Dimension::Connections], 0);
    }

    #[test]
    fn a_counter_that_went_down_was_reset() {
        assert_eq!(rate(100.0, 30.0, 10.0), 3.0);
        assert_eq!(rate(100.0, 130.0, 10.0), 3.0);
        assert_eq!(rate(1.0, 2.0, 0.0), 0.0);
    }

    #[test]
    fn nodes_add_rates_but_share_stored_bytes() {
        let mut l1 = Load::ZERO;
        l1[Dimension::PullRate] = 1000;
        l1[Dimension::Storage] = 500;
        let mut l2 = Load::ZERO;
        l2[Dimension::PullRate] = 3000;
        l2[Dimension::Storage] = 700;
        let n1 = (BTreeMap::from([("acme".to_string(), l1)]), 16);
        let n2 = (BTreeMap::from([("acme".to_string(), l2)]), 16);
        let (total, tenants) = combine(&[n1, n2]);
        assert_eq!(tenants["acme"][Dimension::PullRate], 4000);
        assert_eq!(tenants["acme"][Dimension::Storage], 700);
        assert_eq!(total[Dimension::Connections], 32);
        assert_eq!(total[Dimension::PullRate], 4000);
    }

    #[test]
    fn fenced_tenants_are_seen() {
        let s = sample(
            "wharf_tenant_fenced{tenant=\"a\"} 1\nwharf_tenant_fenced{tenant=\"b\"} 0\n",
            Instant::now(),
        );
        let f = tenants_fenced(&HashMap::from([("n".to_string(), s)]));
        assert_eq!(f, BTreeSet::from(["a".to_string()]));
    }
}
