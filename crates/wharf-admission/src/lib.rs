//! Admission control: decides, at once, whether a request may start.
//!
//! Owns: the in-flight budgets of a node, one per request [`Class`] (pulls,
//! pushes, admin/metadata work), so a flood of one class cannot starve
//! another; the fair share of each tenant inside a class; the short, bounded
//! wait a request may spend for a slot; and the adaptive limit that shrinks a
//! class's budget when its latency climbs.
//!
//! Must never: queue without a bound, block a thread, or know about HTTP.
//! A refusal is a value ([`Refusal`]) that the HTTP edge turns into `503`
//! (node busy) or `429` (tenant over its share) with `Retry-After`.
//!
//! The fair-share rule is work-conserving: while a class is less than half
//! full any tenant may take a slot; past that, a tenant holding its share
//! (a fraction of the class limit) is refused with `429` while other tenants
//! keep being admitted up to the class limit.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

mod adaptive;
pub use adaptive::{AdaptiveConfig, AdaptiveLimit};

/// The kinds of work with separate budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Reads of content: blob and manifest `GET`/`HEAD`.
    Pull,
    /// Writes: uploads, manifest `PUT`, deletes.
    Push,
    /// Everything else: `/v2/`, tags lists, catalog, referrers.
    Admin,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Pull, Class::Push, Class::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Pull => "pull",
            Class::Push => "push",
            Class::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::Pull => 0,
            Class::Push => 1,
            Class::Admin => 2,
        }
    }
}

/// Limits of one class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassLimits {
    /// Requests of this class in flight at once (the starting point when
    /// the adaptive limit is on; it never grows past this).
    pub max_in_flight: usize,
    /// Fraction of `max_in_flight` one tenant may hold once the class is
    /// half full (0 < share <= 1).
    pub tenant_share: f64,
    /// How long a request may wait for a slot before it is refused.
    pub max_wait: Duration,
    /// How many requests may be waiting at once; beyond that, refuse now.
    pub max_waiters: usize,
    /// Shrink the limit when latency climbs (see [`AdaptiveLimit`]).
    pub adaptive: Option<AdaptiveConfig>,
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The class is at its limit for everyone: `503`.
    NodeBusy { class: Class, retry_after: Duration },
    /// This tenant holds its share of a busy class: `429`.
    TenantOverShare { class: Class, retry_after: Duration },
}

impl Refusal {
    pub fn class(&self) -> Class {
        match self {
            Refusal::NodeBusy { class, .. } | Refusal::TenantOverShare { class, .. } => *class,
        }
    }

    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::NodeBusy { retry_after, .. }
            | Refusal::TenantOverShare { retry_after, .. } => *retry_after,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NodeBusy { .. } => "node_busy",
            Refusal::TenantOverShare { .. } => "tenant_share",
        }
    }
}

/// Counters of one class, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub limit: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub admitted_total: u64,
    pub refused_node_total: u64,
    pub refused_tenant_total: u64,
}

struct ClassState {
    limits: ClassLimits,
    /// The limit in force (lowered by the adaptive limit).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    admitted: AtomicU64,
    refused_node: AtomicU64,
    refused_tenant: AtomicU64,
    /// In-flight count per tenant; entries are removed at zero so the map
    /// holds only tenants with work in flight.
    /// Keys are shared with the permits, so admitting a request of a
    /// tenant already in flight allocates nothing.
    tenants: Mutex<HashMap<Arc<str>, usize>>,
    /// Woken whenever a slot is released.
    released: Notify,
    adaptive: Option<AdaptiveLimit>,
}

/// A node's admission controller. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    classes: Arc<[ClassState; 3]>,
    /// Per-tenant shares overriding each class's `tenant_share`.
    shares: Option<TenantShares>,
}

/// Looks up a tenant's own share of each class (a fraction in (0, 1]);
/// `None` keeps the class's default. Called on every admission, so it must
/// answer from memory.
pub type TenantShares = Arc<dyn Fn(&str) -> Option<f64> + Send + Sync>;

/// A slot held by an admitted request; released on drop.
pub struct Permit {
    admission: Admission,
    class: Class,
    tenant: Arc<str>,
    started: Instant,
}

impl Permit {
    pub fn class(&self) -> Class {
        self.class
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let state = self.admission.state(self.class);
        if let Some(a) = &state.adaptive {
            let new = a.record(self.started.elapsed());
            state.limit.store(new, Ordering::Relaxed);
        }
        {
            let mut tenants = state.tenants.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = tenants.get_mut(&*self.tenant) {
                *n -= 1;
                if *n == 0 {
                    tenants.remove(&*self.tenant);
                }
            }
        }
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        state.released.notify_one();
    }
}

enum Attempt {
    /// Admitted; the tenant's key in the in-flight map, for the permit.
    Admitted(Arc<str>),
    Full,
    TenantFull,
}

impl Admission {
    /// A controller with `limits` for pull, push and admin work.
    pub fn new(pull: ClassLimits, push: ClassLimits, admin: ClassLimits) -> Admission {
        let state = |limits: ClassLimits| ClassState {
            limit: AtomicUsize::new(limits.max_in_flight),
            adaptive: limits
                .adaptive
                .clone()
                .map(|c| AdaptiveLimit::new(c, limits.max_in_flight)),
            limits,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            refused_node: AtomicU64::new(0),
            refused_tenant: AtomicU64::new(0),
            tenants: Mutex::new(HashMap::new()),
            released: Notify::new(),
        };
        Admission {
            classes: Arc::new([state(pull), state(push), state(admin)]),
            shares: None,
        }
    }

    /// Gives tenants their own shares (from the tenant directory); call
    /// before the controller is cloned.
    pub fn with_tenant_shares(mut self, shares: TenantShares) -> Admission {
        self.shares = Some(shares);
        self
    }

    fn state(&self, class: Class) -> &ClassState {
        &self.classes[class.index()]
    }

    /// The limits a class was configured with.
    pub fn limits(&self, class: Class) -> &ClassLimits {
        &self.state(class).limits
    }

    /// Counters of `class`.
    pub fn stats(&self, class: Class) -> ClassStats {
        let s = self.state(class);
        ClassStats {
            limit: s.limit.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            waiting: s.waiting.load(Ordering::Relaxed),
            admitted_total: s.admitted.load(Ordering::Relaxed),
            refused_node_total: s.refused_node.load(Ordering::Relaxed),
            refused_tenant_total: s.refused_tenant.load(Ordering::Relaxed),
        }
    }

    /// True when any class is at its limit with requests already waiting
    /// for a slot (the node should look not-ready to a load balancer).
    pub fn saturated(&self) -> bool {
        Class::ALL.iter().any(|&c| {
            let s = self.state(c);
            s.in_flight.load(Ordering::Relaxed) >= s.limit.load(Ordering::Relaxed)
                && s.waiting.load(Ordering::Relaxed) > 0
        })
    }

    fn try_admit(&self, class: Class, tenant: &str) -> Attempt {
        let s = self.state(class);
        let limit = s.limit.load(Ordering::Relaxed).max(1);
        // Looked up before the lock is taken: the lookup reads the
        // directory snapshot, which is not this lock's business.
        let fraction = self
            .shares
            .as_ref()
            .and_then(|f| f(tenant))
            .filter(|f| *f > 0.0 && *f <= 1.0)
            .unwrap_or(s.limits.tenant_share);
        let mut tenants = s.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let in_flight = s.in_flight.load(Ordering::Acquire);
        if in_flight >= limit {
            return Attempt::Full;
        }
        let held = tenants.get(tenant).copied().unwrap_or(0);
        let share = ((limit as f64) * fraction).ceil().max(1.0) as usize;
        if in_flight * 2 >= limit && held >= share {
            return Attempt::TenantFull;
        }
        let key = match tenants.get_key_value(tenant) {
            Some((k, _)) => k.clone(),
            None => Arc::from(tenant),
        };
        *tenants.entry(key.clone()).or_insert(0) += 1;
        s.in_flight.fetch_add(1, Ordering::AcqRel);
        Attempt::Admitted(key)
    }

    fn permit(&self, class: Class, tenant: Arc<str>) -> Permit {
        self.state(class).admitted.fetch_add(1, Ordering::Relaxed);
        Permit {
            admission: self.clone(),
            class,
            tenant,
            started: Instant::now(),
        }
    }

    fn refuse(&self, class: Class, tenant_full: bool) -> Refusal {
        let s = self.state(class);
        // Suggest a retry after about one wait period, at least a second
        // (Retry-After is in whole seconds).
        let retry_after = Duration::from_secs(1);
        if tenant_full {
            s.refused_tenant.fetch_add(1, Ordering::Relaxed);
            Refusal::TenantOverShare { class, retry_after }
        } else {
            s.refused_node.fetch_add(1, Ordering::Relaxed);
            Refusal::NodeBusy { class, retry_after }
        }
    }

    /// Admits a request of `class` for `tenant`, waiting at most the class's
    /// `max_wait` for a slot, and only if fewer than `max_waiters` already
    /// wait. A tenant over its share is refused at once: waiting would only
    /// let it crowd the queue.
    pub async fn acquire(&self, class: Class, tenant: &str) -> Result<Permit, Refusal> {
        match self.try_admit(class, tenant) {
            Attempt::Admitted(key) => return Ok(self.permit(class, key)),
            Attempt::TenantFull => return Err(self.refuse(class, true)),
            Attempt::Full => {}
        }
        let s = self.state(class);
        if s.limits.max_wait.is_zero() {
            return Err(self.refuse(class, false));
        }
        if s.waiting.fetch_add(1, Ordering::AcqRel) >= s.limits.max_waiters {
            s.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(class, false));
        }
        let deadline = tokio::time::Instant::now() + s.limits.max_wait;
        let result = loop {
            let notified = s.released.notified();
            match self.try_admit(class, tenant) {
                Attempt::Admitted(key) => break Ok(self.permit(class, key)),
                Attempt::TenantFull => break Err(self.refuse(class, true)),
                Attempt::Full => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break Err(self.refuse(class, false));
            }
        };
        s.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, share: f64, wait_ms: u64) -> ClassLimits {
        ClassLimits {
            max_in_flight: max,
            tenant_share: share,
            max_wait: Duration::from_millis(wait_ms),
            max_waiters: max,
            adaptive: None,
        }
    }

    fn admission(max: usize, share: f64, wait_ms: u64) -> Admission {
        Admission::new(
            limits(max, share, wait_ms),
            limits(max, share, wait_ms),
            limits(max, share, wait_ms),
        )
    }

    #[tokio::test]
    async fn cap_holds_and_refuses_as_node_busy() {
        let a = admission(4, 1.0, 0);
        let mut held = Vec::new();
        for i in 0..4 {
            held.push(a.acquire(Class::Pull, &format!("t{i}")).await.unwrap());
        }
        let r = a.acquire(Class::Pull, "t9").await.err().unwrap();
        assert!(matches!(
            r,
            Refusal::NodeBusy {
                class: Class::Pull,
                ..
            }
        ));
        assert_eq!(a.stats(Class::Pull).in_flight, 4);
        assert_eq!(a.stats(Class::Pull).refused_node_total, 1);
        held.pop();
        assert!(a.acquire(Class::Pull, "t9").await.is_ok());
    }

    #[tokio::test]
    async fn classes_are_isolated() {
        let a = admission(2, 1.0, 0);
        let _p1 = a.acquire(Class::Pull, "t").await.unwrap();
        let _p2 = a.acquire(Class::Pull, "t").await.unwrap();
        assert!(a.acquire(Class::Pull, "t").await.is_err());
        // Pushes and admin work still get in.
        assert!(a.acquire(Class::Push, "t").await.is_ok());
        assert!(a.acquire(Class::Admin, "t").await.is_ok());
    }

    #[tokio::test]
    async fn tenant_share_holds_while_others_get_in() {
        let a = admission(10, 0.5, 0);
        let mut noisy = Vec::new();
        // Below half full anyone is admitted; the noisy tenant reaches its
        // share of 5 and is then refused with 429.
        for _ in 0..5 {
            noisy.push(a.acquire(Class::Pull, "noisy").await.unwrap());
        }
        let r = a.acquire(Class::Pull, "noisy").await.err().unwrap();
        assert!(matches!(r, Refusal::TenantOverShare { .. }), "{r:?}");
        // A quiet tenant is still admitted up to the class limit.
        let mut quiet = Vec::new();
        for _ in 0..5 {
            quiet.push(a.acquire(Class::Pull, "quiet").await.unwrap());
        }
        let r = a.acquire(Class::Pull, "quiet").await.err().unwrap();
        assert!(matches!(r, Refusal::NodeBusy { .. }), "{r:?}");
        assert_eq!(a.stats(Class::Pull).refused_tenant_total, 1);
    }

    #[tokio::test]
    async fn one_tenant_alone_may_use_half_then_share() {
        // Work-conserving: a lone tenant is not cut off below half full.
        let a = admission(4, 0.25, 0);
        let _x = a.acquire(Class::Push, "solo").await.unwrap();
        let _y = a.acquire(Class::Push, "solo").await.unwrap();
        assert!(matches!(
            a.acquire(Class::Push, "solo").await,
            Err(Refusal::TenantOverShare { .. })
        ));
    }

    #[tokio::test]
    async fn a_tenant_share_from_the_directory_overrides_the_default() {
        // Default share 0.5 of 10 = 5; "small" is given 0.2 (2 slots) and
        // "big" 0.8 (8 slots), each counted once the class is half full.
        let shares: TenantShares = Arc::new(|t: &str| match t {
            "small" => Some(0.2),
            "big" => Some(0.8),
            "broken" => Some(7.0),
            _ => None,
        });
        let a = admission(10, 0.5, 0).with_tenant_shares(shares);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(a.acquire(Class::Pull, "filler").await.unwrap());
        }
        held.push(a.acquire(Class::Pull, "small").await.unwrap());
        held.push(a.acquire(Class::Pull, "small").await.unwrap());
        assert!(matches!(
            a.acquire(Class::Pull, "small").await,
            Err(Refusal::TenantOverShare { .. })
        ));
        // The filler tenant is at the default share (5 of 10).
        assert!(matches!(
            a.acquire(Class::Pull, "filler").await,
            Err(Refusal::TenantOverShare { .. })
        ));
        held.push(a.acquire(Class::Pull, "big").await.unwrap());
        drop(held);

        // Big may hold 8 of 10; a nonsense share (7.0) falls back to the
        // default 5 instead of lifting the limit.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(a.acquire(Class::Pull, "big").await.unwrap());
        }
        assert!(matches!(
            a.acquire(Class::Pull, "big").await,
            Err(Refusal::TenantOverShare { .. })
        ));
        drop(held);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(a.acquire(Class::Pull, "broken").await.unwrap());
        }
        assert!(matches!(
            a.acquire(Class::Pull, "broken").await,
            Err(Refusal::TenantOverShare { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_wait_admits_when_a_slot_frees() {
        let a = admission(1, 1.0, 100);
        let p = a.acquire(Class::Pull, "t").await.unwrap();
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire(Class::Pull, "u").await.is_ok() });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(a.stats(Class::Pull).waiting, 1);
        drop(p);
        assert!(
            waiter.await.unwrap(),
            "waiter admitted once the slot was released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_wait_gives_up_at_the_deadline() {
        let a = admission(1, 1.0, 100);
        let _p = a.acquire(Class::Pull, "t").await.unwrap();
        let start = tokio::time::Instant::now();
        let r = a.acquire(Class::Pull, "u").await;
        assert!(matches!(r, Err(Refusal::NodeBusy { .. })));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(a.stats(Class::Pull).waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_bounded() {
        let mut l = limits(1, 1.0, 1000);
        l.max_waiters = 2;
        let a = Admission::new(l.clone(), l.clone(), l);
        let _p = a.acquire(Class::Pull, "t").await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let a = a.clone();
            waiters.push(tokio::spawn(async move {
                a.acquire(Class::Pull, "w").await.is_ok()
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(a.stats(Class::Pull).waiting, 2);
        // The third is refused at once, without waiting.
        let start = tokio::time::Instant::now();
        assert!(a.acquire(Class::Pull, "w").await.is_err());
        assert_eq!(start.elapsed(), Duration::ZERO);
        for w in waiters {
            assert!(!w.await.unwrap());
        }
    }
}
