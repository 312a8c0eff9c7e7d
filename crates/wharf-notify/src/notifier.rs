//! [`Notifier`]: a bounded queue and a delivery task per endpoint.
//!
//! Owns: the lanes (one per endpoint id: a bounded channel, the task that
//! empties it, the endpoint's counters), the delivery of one event to one
//! endpoint (signed, with a timeout, retried with exponential back-off
//! until it succeeds, is refused for good, runs out of attempts or gets
//! too old), and the log lines about an endpoint's state.
//!
//! Must never: wait on a request's path ([`Notifier::notify`] serializes
//! the event once and `try_send`s; a full queue drops and counts), or let
//! a lane's task keep the notifier alive (it holds a weak reference, and
//! stops when its queue's senders are gone).
//!
//! A node's endpoints (from its configuration) have lanes from the start
//! and for the process's life, so their metrics exist at zero. A tenant's
//! endpoints get a lane on their first event; a lane with nothing queued
//! for [`NotifyConfig::idle_stop`] is removed (its metrics with it), so a
//! deleted endpoint costs nothing for long. Events queued for an endpoint
//! are delivered as it was configured when they were queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use wharf_telemetry::Exposition;

use crate::event::{Action, Event, MEDIA_TYPE};
use crate::sign;
use crate::target::Target;

/// How deliveries are made.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// This node's name, as events carry it.
    pub node: String,
    /// Events one endpoint's queue holds; one more is dropped.
    pub queue_size: usize,
    /// The longest one delivery attempt may take (connecting included).
    pub timeout: Duration,
    /// Attempts per event and endpoint, the first included.
    pub max_attempts: u32,
    /// An event queued longer ago than this is given up (not sent again).
    pub max_age: Duration,
    /// The wait after the first failed attempt; doubled after each.
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    /// A tenant endpoint's lane with nothing queued for this long stops.
    pub idle_stop: Duration,
    /// The `User-Agent` of deliveries.
    pub user_agent: String,
}

/// Default of [`NotifyConfig::queue_size`].
pub const DEFAULT_QUEUE_SIZE: usize = 1024;
/// Default of [`NotifyConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`NotifyConfig::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Default of [`NotifyConfig::max_age`].
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            node: "wharf".into(),
            queue_size: DEFAULT_QUEUE_SIZE,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_age: DEFAULT_MAX_AGE,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            idle_stop: Duration::from_secs(600),
            user_agent: "wharf".into(),
        }
    }
}

impl NotifyConfig {
    /// The wait after failed attempt `n` (from 1).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_base
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// Why an event was given up for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// Every attempt failed.
    Attempts = 0,
    /// It was older than the maximum age before it could be delivered.
    Expired = 1,
    /// The endpoint answered 4xx (but 408 and 429): sending it again
    /// would be refused again.
    Rejected = 2,
}

impl GaveUp {
    pub(crate) const ALL: [GaveUp; 3] = [GaveUp::Attempts, GaveUp::Expired, GaveUp::Rejected];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GaveUp::Attempts => "attempts",
            GaveUp::Expired => "expired",
            GaveUp::Rejected => "rejected",
        }
    }
}

/// One endpoint's counters.
#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed: [AtomicU64; 3],
    attempts_failed: AtomicU64,
    /// From a failed attempt until the next delivery succeeds.
    failing: AtomicBool,
    /// Dropping since the last event that found room (for logging once).
    dropping: AtomicBool,
}

/// What an endpoint's metrics say now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub id: String,
    /// Events put in its queue.
    pub queued: u64,
    /// Events it took (2xx).
    pub delivered: u64,
    /// Events dropped because its queue was full.
    pub dropped: u64,
    /// Events given up after every attempt failed.
    pub failed_attempts: u64,
    /// Events given up for being older than the maximum age.
    pub failed_expired: u64,
    /// Events it refused for good (4xx).
    pub failed_rejected: u64,
    /// Attempts that failed (each retry counts).
    pub attempts_failed: u64,
    /// Events waiting in its queue (the one being delivered is not).
    pub depth: u64,
    pub capacity: u64,
    /// Whether its last attempt failed.
    pub failing: bool,
}

impl EndpointStats {
    /// Events given up, whatever the reason.
    pub fn failed(&self) -> u64 {
        self.failed_attempts + self.failed_expired + self.failed_rejected
    }
}

/// One event on its way to one endpoint.
struct Delivery {
    target: Arc<Target>,
    body: Bytes,
    event_id: Arc<str>,
    action: Action,
    queued_at: Instant,
}

struct Lane {
    tx: mpsc::Sender<Delivery>,
    counters: Arc<Counters>,
}

struct Inner {
    config: NotifyConfig,
    clients: Clients,
    node_targets: Vec<Arc<Target>>,
    node_wants_pulls: bool,
    lanes: RwLock<HashMap<String, Lane>>,
}

/// Sends events to endpoints without ever holding up the caller. Cheap to
/// clone; create it inside the Tokio runtime that is to run deliveries.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("node", &self.inner.config.node)
            .field("node_targets", &self.inner.node_targets.len())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier sending every event to `node_targets` (besides the
    /// endpoints each call names), with their lanes started now.
    pub fn new(config: NotifyConfig, node_targets: Vec<Target>) -> Result<Notifier, String> {
        if config.queue_size == 0 || config.max_attempts == 0 {
            return Err("the notification queue size and attempts must be at least 1".into());
        }
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.timeout)
                .timeout(config.timeout)
                .user_agent(config.user_agent.clone())
                .pool_max_idle_per_host(2)
        };
        let built = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| format!("the notification HTTP client cannot be built: {e}"))
        };
        let clients = Clients {
            any: built(builder())?,
            // No proxy: a proxy would resolve the name itself, out of
            // `PublicOnly`'s reach.
            public: built(
                builder()
                    .no_proxy()
                    .dns_resolver(Arc::new(crate::public::PublicOnly)),
            )?,
        };
        let mut seen = std::collections::HashSet::new();
        for t in &node_targets {
            if !seen.insert(t.id.clone()) {
                return Err(format!("two notification endpoints are named {}", t.id));
            }
        }
        let node_targets: Vec<Arc<Target>> = node_targets.into_iter().map(Arc::new).collect();
        let notifier = Notifier {
            inner: Arc::new(Inner {
                node_wants_pulls: node_targets.iter().any(|t| t.pulls),
                config,
                clients,
                node_targets,
                lanes: RwLock::new(HashMap::new()),
            }),
        };
        {
            let mut lanes = notifier
                .inner
                .lanes
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for t in &notifier.inner.node_targets {
                notifier.open_lane(&mut lanes, &t.id, true);
            }
        }
        Ok(notifier)
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.inner.config
    }

    /// This node's name, for events.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The node's own endpoints.
    pub fn node_targets(&self) -> &[Arc<Target>] {
        &self.inner.node_targets
    }

    /// Whether an event of `action` would go anywhere, given the tenant's
    /// endpoints: for the caller to skip the work of making one (a
    /// metadata read before a delete) when nobody listens.
    pub fn wants(&self, action: Action, tenant_targets: &[Arc<Target>]) -> bool {
        if action.is_pull() {
            self.inner.node_wants_pulls || tenant_targets.iter().any(|t| t.pulls)
        } else {
            !self.inner.node_targets.is_empty() || !tenant_targets.is_empty()
        }
    }

    /// Queues `event` for the node's endpoints and `tenant_targets` (a
    /// pull only for those that want pulls). Never waits: an endpoint
    /// whose queue is full does not get it, and its drop is counted.
    pub fn notify(&self, event: &Event, tenant_targets: &[Arc<Target>]) {
        let pull = event.action.is_pull();
        let mut targets = self
            .inner
            .node_targets
            .iter()
            .chain(tenant_targets)
            .filter(|t| t.pulls || !pull)
            .peekable();
        if targets.peek().is_none() {
            return;
        }
        let body = event.body();
        let event_id: Arc<str> = Arc::from(event.id.as_str());
        let now = Instant::now();
        for target in targets {
            self.enqueue(Delivery {
                target: Arc::clone(target),
                body: body.clone(),
                event_id: Arc::clone(&event_id),
                action: event.action,
                queued_at: now,
            });
        }
    }

    fn enqueue(&self, delivery: Delivery) {
        let id = delivery.target.id.clone();
        {
            let lanes = self.inner.lanes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(lane) = lanes.get(&id) {
                offer(&id, lane, delivery);
                return;
            }
        }
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(endpoint = %id, "event notification outside the runtime: dropped");
            return;
        }
        let mut lanes = self.inner.lanes.write().unwrap_or_else(|p| p.into_inner());
        let lane = self.open_lane(&mut lanes, &id, false);
        offer(&id, lane, delivery);
    }

    /// Endpoint `id`'s lane in `lanes`, opened (and its task started) if
    /// it has none.
    fn open_lane<'a>(
        &self,
        lanes: &'a mut HashMap<String, Lane>,
        id: &str,
        permanent: bool,
    ) -> &'a Lane {
        if !lanes.contains_key(id) {
            let (tx, rx) = mpsc::channel(self.inner.config.queue_size);
            let counters = Arc::new(Counters::default());
            let worker = Worker {
                id: id.to_string(),
                config: self.inner.config.clone(),
                clients: self.inner.clients.clone(),
                counters: Arc::clone(&counters),
                notifier: Arc::downgrade(&self.inner),
                permanent,
            };
            tokio::spawn(worker.run(rx));
            lanes.insert(id.to_string(), Lane { tx, counters });
        }
        &lanes[id]
    }

    /// Every endpoint with a lane now, by id.
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        let lanes = self.inner.lanes.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<EndpointStats> = lanes.iter().map(|(id, l)| stats_of(id, l)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Endpoint `id`'s metrics, if it has a lane now.
    pub fn endpoint(&self, id: &str) -> Option<EndpointStats> {
        let lanes = self.inner.lanes.read().unwrap_or_else(|p| p.into_inner());
        lanes.get(id).map(|l| stats_of(id, l))
    }

    /// Writes the `wharf_notify_*` metrics.
    pub fn render(&self, out: &mut Exposition) {
        crate::metrics::render(&self.endpoints(), out);
    }
}

fn stats_of(id: &str, lane: &Lane) -> EndpointStats {
    let c = &lane.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let capacity = lane.tx.max_capacity() as u64;
    EndpointStats {
        id: id.to_string(),
        queued: load(&c.queued),
        delivered: load(&c.delivered),
        dropped: load(&c.dropped),
        failed_attempts: load(&c.failed[GaveUp::Attempts as usize]),
        failed_expired: load(&c.failed[GaveUp::Expired as usize]),
        failed_rejected: load(&c.failed[GaveUp::Rejected as usize]),
        attempts_failed: load(&c.attempts_failed),
        depth: capacity.saturating_sub(lane.tx.capacity() as u64),
        capacity,
        failing: c.failing.load(Ordering::Relaxed),
    }
}

/// Puts `delivery` in `lane`'s queue if there is room, else counts it
/// dropped.
fn offer(id: &str, lane: &Lane, delivery: Delivery) {
    let c = &lane.counters;
    match lane.tx.try_send(delivery) {
        Ok(()) => {
            c.queued.fetch_add(1, Ordering::Relaxed);
            if c.dropping.swap(false, Ordering::Relaxed) {
                tracing::info!(endpoint = %id, "notification queue has room again");
            }
        }
        Err(e) => {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            let action = match &e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => {
                    d.action.as_str()
                }
            };
            if !c.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(endpoint = %id, action,
                    "notification queue full: dropping events for this endpoint \
                     (wharf_notify_events_dropped_total) until it has room");
            } else {
                tracing::debug!(endpoint = %id, action, "notification dropped: queue full");
            }
        }
    }
}

/// What one attempt came to.
enum Verdict {
    Delivered,
    /// Worth another attempt, because of this.
    Retry(String),
    /// Refused for good, with this status.
    Rejected(u16),
    /// Not to be sent at all, because of this.
    Forbidden(String),
}

/// The HTTP clients deliveries go through: one for the operator's
/// endpoints, one that connects to public addresses only for those a
/// tenant set (`crate::public`).
#[derive(Clone)]
struct Clients {
    any: reqwest::Client,
    public: reqwest::Client,
}

/// The task that empties one lane.
struct Worker {
    id: String,
    config: NotifyConfig,
    clients: Clients,
    counters: Arc<Counters>,
    notifier: Weak<Inner>,
    /// A node endpoint's lane never stops.
    permanent: bool,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Delivery>) {
        loop {
            let next = if self.permanent {
                rx.recv().await
            } else {
                match tokio::time::timeout(self.config.idle_stop, rx.recv()).await {
                    Ok(next) => next,
                    Err(_idle) if self.retire(&rx) => return,
                    Err(_idle) => continue,
                }
            };
            let Some(delivery) = next else {
                // The notifier is gone.
                return;
            };
            self.deliver(delivery).await;
        }
    }

    /// Removes this lane if nothing is queued; `true` if it did. Senders
    /// offer under the map's read lock, so once the lane is out of the map
    /// (under its write lock) nothing more can arrive.
    fn retire(&self, rx: &mpsc::Receiver<Delivery>) -> bool {
        let Some(inner) = self.notifier.upgrade() else {
            return true;
        };
        let mut lanes = inner.lanes.write().unwrap_or_else(|p| p.into_inner());
        if !rx.is_empty() {
            return false;
        }
        lanes.remove(&self.id);
        tracing::debug!(endpoint = %self.id, "idle notification endpoint lane stopped");
        true
    }

    async fn deliver(&self, d: Delivery) {
        let c = &self.counters;
        let mut attempt = 1u32;
        loop {
            if d.queued_at.elapsed() > self.config.max_age {
                self.give_up(&d, GaveUp::Expired, "it is older than the maximum age");
                return;
            }
            match self.attempt(&d, attempt).await {
                Verdict::Delivered => {
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                    if c.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(endpoint = %self.id, "notification endpoint takes deliveries again");
                    }
                    return;
                }
                Verdict::Rejected(status) => {
                    c.attempts_failed.fetch_add(1, Ordering::Relaxed);
                    self.failed_attempt(&d, &format!("it answered {status}"));
                    self.give_up(&d, GaveUp::Rejected, &format!("it answered {status}"));
                    return;
                }
                Verdict::Forbidden(why) => {
                    c.attempts_failed.fetch_add(1, Ordering::Relaxed);
                    self.failed_attempt(&d, &why);
                    self.give_up(&d, GaveUp::Rejected, &why);
                    return;
                }
                Verdict::Retry(why) => {
                    c.attempts_failed.fetch_add(1, Ordering::Relaxed);
                    self.failed_attempt(&d, &why);
                    if attempt >= self.config.max_attempts {
                        self.give_up(&d, GaveUp::Attempts, &why);
                        return;
                    }
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    fn failed_attempt(&self, d: &Delivery, why: &str) {
        if !self.counters.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(endpoint = %self.id, origin = %d.target.origin(), error = %why,
                "notification endpoint failing; retrying with back-off");
        } else {
            tracing::debug!(endpoint = %self.id, error = %why, "notification attempt failed");
        }
    }

    fn give_up(&self, d: &Delivery, why: GaveUp, detail: &str) {
        self.counters.failed[why as usize].fetch_add(1, Ordering::Relaxed);
        self.counters.failing.store(true, Ordering::Relaxed);
        tracing::warn!(endpoint = %self.id, event = %d.event_id, action = d.action.as_str(),
            reason = why.as_str(), error = %detail, "notification given up");
    }

    async fn attempt(&self, d: &Delivery, n: u32) -> Verdict {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        let signature = sign::signature(d.target.secret.expose(), timestamp, &d.body);
        let client = if d.target.public_only {
            // A host given as an address is never resolved, so it is
            // judged here (the resolver judges names).
            if let Some(ip) = crate::public::literal_ip(&d.target.url) {
                if !crate::public::is_public(ip) {
                    return Verdict::Forbidden(format!(
                        "a tenant's endpoint may reach public addresses only, not {ip}"
                    ));
                }
            }
            &self.clients.public
        } else {
            &self.clients.any
        };
        let sent = client
            .post(d.target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE)
            .header(sign::TIMESTAMP_HEADER, timestamp)
            .header(sign::SIGNATURE_HEADER, signature)
            .header(sign::EVENT_ID_HEADER, &*d.event_id)
            .header(sign::ATTEMPT_HEADER, n)
            .body(d.body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Verdict::Delivered,
            Ok(r) => {
                let status = r.status().as_u16();
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    Verdict::Rejected(status)
                } else {
                    Verdict::Retry(format!("it answered {status}"))
                }
            }
            Err(e) if e.is_timeout() => Verdict::Retry(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
            // Without the URL: its path or query may hold a token.
            Err(e) => Verdict::Retry(error_chain(&e.without_url())),
        }
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c = NotifyConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..NotifyConfig::default()
        };
        let waits: Vec<u128> = (1..=7).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(c.backoff(200), Duration::from_millis(1000));
    }
}
