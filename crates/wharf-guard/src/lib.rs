//! Guards around the node's dependencies (blob storage, metadata).
//!
//! Owns: [`Guard`], which gives each dependency a bounded number of call
//! slots (the node's own pool to it: design invariant 2), a deadline on
//! every call, and a [`Breaker`] that opens after repeated failures and
//! closes again by letting a probe through; and the wrappers
//! [`GuardedBlobStore`] and [`GuardedMetaStore`] that put any backend behind
//! one. Every guard exports its size, use, wait and failures ([`GuardStats`]).
//!
//! Must never: wait without a bound, retry on its own (a retry doubles the
//! load on a dependency that is already struggling), or turn a client error
//! (unknown digest, bad offset) into a dependency failure.
//!
//! A slow or failing dependency therefore turns into fast `503`s: calls find
//! no free slot (busy), hit their deadline, or meet an open breaker, and each
//! of those is `Unavailable` to the registry.
//!
//! One request may make several calls in a row (a pull resolves its tag,
//! then reads the manifest; falling back to what the node last saw when
//! metadata is unreachable). Inside [`request_scope`] the deadline-bound
//! calls of one request share one deadline: each may take only what the
//! earlier ones left of it, so a request waits on its dependencies at most
//! one deadline in all, not one per call. A stalled database once held a
//! pull 10 s on its tag and 5 s more on its manifest (tests/faults/run.sh,
//! pg-stall), past the client's 15 s.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wharf_telemetry::{Histogram, LATENCY_BUCKETS};

mod breaker;
mod meta;
mod storage;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use meta::GuardedMetaStore;
pub use storage::GuardedBlobStore;

tokio::task_local! {
    /// Time the current request spent in deadline-bound calls so far.
    static SPENT: Cell<Duration>;
}

/// Runs one request: within `fut`, the deadline-bound calls of every guard
/// together take at most a deadline (each call's deadline is what is left
/// of it; when nothing is left, a call fails as a timeout without reaching
/// the dependency). Outside a scope (background work, a task the request
/// spawned) every call has its whole deadline.
pub async fn request_scope<F: Future>(fut: F) -> F::Output {
    SPENT.scope(Cell::new(Duration::ZERO), fut).await
}

/// What is left of the current request's deadline `full`, or all of it
/// outside a request.
fn left_of(full: Duration) -> Duration {
    SPENT
        .try_with(|spent| full.saturating_sub(spent.get()))
        .unwrap_or(full)
}

fn charge(took: Duration) {
    let _ = SPENT.try_with(|spent| spent.set(spent.get() + took));
}

/// Limits of one dependency guard.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// Name used in errors and metrics, e.g. `blob_storage`.
    pub name: &'static str,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// How long a call may wait for a free slot.
    pub max_wait: Duration,
    /// Deadline of one call (not of a streamed body).
    pub deadline: Duration,
    pub breaker: BreakerConfig,
}

/// Why a guarded call did not reach the dependency or did not finish.
#[derive(Debug)]
pub enum GuardError<E> {
    /// No free slot within `max_wait`.
    Busy,
    /// The call took longer than its deadline.
    Timeout,
    /// The breaker is open: the dependency failed repeatedly.
    Open,
    /// The dependency answered with an error.
    Inner(E),
}

impl<E: std::fmt::Display> std::fmt::Display for GuardError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuardError::Busy => f.write_str("all connections busy"),
            GuardError::Timeout => f.write_str("deadline exceeded"),
            GuardError::Open => f.write_str("circuit open after repeated failures"),
            GuardError::Inner(e) => e.fmt(f),
        }
    }
}

/// Counters of a guard, for metrics.
#[derive(Clone, Debug, Default)]
pub struct GuardStats {
    pub name: &'static str,
    pub size: usize,
    pub in_use: usize,
    pub calls_total: u64,
    pub busy_total: u64,
    pub timeouts_total: u64,
    pub failures_total: u64,
    pub rejected_open_total: u64,
    /// Total seconds spent waiting for a slot.
    pub wait_seconds_total: f64,
    /// Total seconds spent in calls.
    pub call_seconds_total: f64,
    pub breaker: BreakerState,
}

/// A bounded, deadline-enforcing, breaker-protected path to one dependency.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    config: GuardConfig,
    slots: Semaphore,
    breaker: Breaker,
    calls: AtomicU64,
    busy: AtomicU64,
    timeouts: AtomicU64,
    failures: AtomicU64,
    rejected_open: AtomicU64,
    wait_micros: AtomicU64,
    call_micros: AtomicU64,
    /// Latency of calls that reached the dependency.
    latency: Histogram,
    /// Whether the breaker's opening was logged (and not yet its closing).
    reported_open: std::sync::atomic::AtomicBool,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Guard {
        Guard {
            inner: Arc::new(GuardInner {
                slots: Semaphore::new(config.max_concurrent.max(1)),
                breaker: Breaker::new(config.breaker.clone()),
                config,
                calls: AtomicU64::new(0),
                busy: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                rejected_open: AtomicU64::new(0),
                wait_micros: AtomicU64::new(0),
                call_micros: AtomicU64::new(0),
                latency: Histogram::new(&LATENCY_BUCKETS),
                reported_open: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.inner.config.name
    }

    /// Latency of the calls that reached the dependency.
    pub fn latency(&self) -> &Histogram {
        &self.inner.latency
    }

    /// Whether the breaker is open (the dependency counts as unreachable).
    pub fn is_open(&self) -> bool {
        self.inner.breaker.state() == BreakerState::Open
    }

    pub fn stats(&self) -> GuardStats {
        let i = &self.inner;
        let size = i.config.max_concurrent.max(1);
        GuardStats {
            name: i.config.name,
            size,
            in_use: size - i.slots.available_permits(),
            calls_total: i.calls.load(Ordering::Relaxed),
            busy_total: i.busy.load(Ordering::Relaxed),
            timeouts_total: i.timeouts.load(Ordering::Relaxed),
            failures_total: i.failures.load(Ordering::Relaxed),
            rejected_open_total: i.rejected_open.load(Ordering::Relaxed),
            wait_seconds_total: i.wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
            call_seconds_total: i.call_micros.load(Ordering::Relaxed) as f64 / 1e6,
            breaker: i.breaker.state(),
        }
    }

    /// Runs `call` within the guard. `is_failure` says which of the
    /// dependency's errors count against its health (not client errors).
    /// With `deadline` false the call may run as long as it needs (a
    /// streamed upload is paced by its client, not by the dependency).
    pub async fn run<T, E, F>(
        &self,
        deadline: bool,
        is_failure: impl Fn(&E) -> bool,
        call: F,
    ) -> Result<T, GuardError<E>>
    where
        E: std::fmt::Display,
        F: Future<Output = Result<T, E>>,
    {
        let i = &self.inner;
        let limit = left_of(i.config.deadline);
        if deadline && limit.is_zero() {
            // The request already waited a whole deadline on its
            // dependencies: no verdict on this one, which was not asked.
            return Err(GuardError::Timeout);
        }
        let Some(ticket) = i.breaker.allow() else {
            i.rejected_open.fetch_add(1, Ordering::Relaxed);
            return Err(GuardError::Open);
        };
        let waited = tokio::time::Instant::now();
        let slot = match tokio::time::timeout(i.config.max_wait, i.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                i.busy.fetch_add(1, Ordering::Relaxed);
                // Busy is our own limit, not the dependency's failure.
                ticket.neutral();
                return Err(GuardError::Busy);
            }
        };
        let started = tokio::time::Instant::now();
        add_micros(&i.wait_micros, started - waited);
        i.calls.fetch_add(1, Ordering::Relaxed);
        let result = if deadline {
            match tokio::time::timeout(limit, call).await {
                Ok(r) => r.map_err(GuardError::Inner),
                Err(_) => Err(GuardError::Timeout),
            }
        } else {
            call.await.map_err(GuardError::Inner)
        };
        drop(slot);
        let took = started.elapsed();
        if deadline {
            charge(took);
        }
        add_micros(&i.call_micros, took);
        i.latency.observe(took);
        let failed = match &result {
            // Cut short by the request's deadline, not the call's own: the
            // dependency did not get its full time, so no verdict.
            Err(GuardError::Timeout) if limit < i.config.deadline => {
                ticket.neutral();
                false
            }
            Err(GuardError::Timeout) => {
                i.timeouts.fetch_add(1, Ordering::Relaxed);
                ticket.failure();
                true
            }
            Err(GuardError::Inner(e)) if is_failure(e) => {
                i.failures.fetch_add(1, Ordering::Relaxed);
                ticket.failure();
                true
            }
            _ => {
                ticket.success();
                false
            }
        };
        // Log the transition, once, with the cause: clients only get a
        // generic 503, so this is where an operator finds what went wrong.
        if failed && i.breaker.state() == BreakerState::Open {
            if !i.reported_open.swap(true, Ordering::Relaxed) {
                if let Err(e) = &result {
                    tracing::warn!(dependency = i.config.name, error = %e, "circuit opened");
                }
            }
        } else if !failed && i.reported_open.swap(false, Ordering::Relaxed) {
            tracing::info!(
                dependency = i.config.name,
                "circuit closed: dependency answering again"
            );
        }
        result
    }
}

fn add_micros(counter: &AtomicU64, d: Duration) {
    counter.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize) -> Guard {
        Guard::new(GuardConfig {
            name: "test",
            max_concurrent: max,
            max_wait: Duration::from_millis(50),
            deadline: Duration::from_millis(200),
            breaker: BreakerConfig {
                failures_to_open: 3,
                open_for: Duration::from_secs(1),
            },
        })
    }

    async fn ok() -> Result<u32, String> {
        Ok(7)
    }

    async fn fail() -> Result<u32, String> {
        Err("down".into())
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_bounded_and_busy_is_fast() {
        let g = guard(1);
        let g2 = g.clone();
        let holder = tokio::spawn(async move {
            g2.run(false, |_: &String| true, async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(1)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(g.stats().in_use, 1);
        let start = tokio::time::Instant::now();
        let r = g.run(true, |_: &String| true, ok()).await;
        assert!(matches!(r, Err(GuardError::Busy)));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert_eq!(g.stats().busy_total, 1);
        assert!(holder.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_turns_a_hang_into_an_error() {
        let g = guard(4);
        let r = g
            .run(true, |_: &String| true, async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<u32, String>(1)
            })
            .await;
        assert!(matches!(r, Err(GuardError::Timeout)));
        assert_eq!(g.stats().timeouts_total, 1);
        assert_eq!(g.stats().in_use, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_then_probes_closed() {
        let g = guard(4);
        for _ in 0..3 {
            assert!(matches!(
                g.run(true, |_: &String| true, fail()).await,
                Err(GuardError::Inner(_))
            ));
        }
        assert_eq!(g.stats().breaker, BreakerState::Open);
        // Open: refused without calling the dependency.
        assert!(matches!(
            g.run(true, |_: &String| true, ok()).await,
            Err(GuardError::Open)
        ));
        assert_eq!(g.stats().rejected_open_total, 1);
        // After the cool-off one probe goes through; its success closes it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(g.run(true, |_: &String| true, ok()).await.unwrap(), 7);
        assert_eq!(g.stats().breaker, BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_one_deadline_in_all_not_one_per_call() {
        let g = guard(4);
        let hang = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<u32, String>(1)
        };
        let start = tokio::time::Instant::now();
        let (first, second) = request_scope(async {
            let first = g.run(true, |_: &String| true, hang()).await;
            let second = g.run(true, |_: &String| true, hang()).await;
            (first, second)
        })
        .await;
        assert!(matches!(first, Err(GuardError::Timeout)));
        assert!(matches!(second, Err(GuardError::Timeout)));
        // 200 ms (the deadline) in all: the second call got nothing left
        // and was not made.
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert_eq!(g.stats().calls_total, 1);
        assert_eq!(g.stats().timeouts_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_cut_short_by_its_request_gives_no_verdict() {
        let g = guard(4);
        let slow = |ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<u32, String>(1)
        };
        let results = request_scope(async {
            let mut out = Vec::new();
            // 150 ms answered; then each slow call gets the 50 ms left, is
            // cut short, and counts neither against the breaker nor as the
            // dependency's timeout; then nothing is left at all.
            out.push(g.run(true, |_: &String| true, slow(150)).await.is_ok());
            for _ in 0..4 {
                out.push(g.run(true, |_: &String| true, slow(150)).await.is_ok());
            }
            out
        })
        .await;
        assert_eq!(results, vec![true, false, false, false, false]);
        let st = g.stats();
        assert_eq!(
            st.calls_total, 2,
            "one answered, one cut short, three not made"
        );
        assert_eq!(st.timeouts_total, 0);
        assert_eq!(st.breaker, BreakerState::Closed);
        // Outside a request every call has its whole deadline again.
        assert_eq!(g.run(true, |_: &String| true, slow(150)).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_without_a_deadline_do_not_spend_the_requests() {
        let g = guard(4);
        let r = request_scope(async {
            // A streamed body paced by its client: minutes, no deadline.
            g.run(false, |_: &String| true, async {
                tokio::time::sleep(Duration::from_secs(120)).await;
                Ok::<u32, String>(1)
            })
            .await
            .unwrap();
            g.run(true, |_: &String| true, ok()).await
        })
        .await;
        assert_eq!(r.unwrap(), 7);
    }

    #[tokio::test]
    async fn client_errors_do_not_count() {
        let g = guard(4);
        for _ in 0..10 {
            let _ = g.run(true, |_: &String| false, fail()).await;
        }
        assert_eq!(g.stats().breaker, BreakerState::Closed);
        assert_eq!(g.stats().failures_total, 0);
    }
}
