//! A circuit breaker: closed while the dependency works; open (refusing
//! at once) for a cool-off after `failures_to_open` consecutive failures;
//! then half-open, letting exactly one probe through, whose outcome closes
//! or re-opens it.
//!
//! A verdict counts only against the breaker it was asked of: a call let
//! through before the breaker last closed that fails afterwards (a connect
//! attempt started during a partition, timing out after the heal) tells of
//! the outage already over, and is ignored. Without that, such leftovers
//! re-opened a breaker moments after it had closed, and the node refused
//! for another cool-off although the dependency answered.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures_to_open: u32,
    /// How long it stays open before a probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures_to_open: 5,
            open_for: Duration::from_secs(2),
        }
    }
}

/// The breaker's state, as exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open: a gauge value.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<Current>,
}

struct Current {
    state: State,
    /// How many times the breaker closed after being open: a ticket issued
    /// under an earlier count is a leftover of an outage that has ended.
    closes: u64,
}

/// Permission for one call; report how it went.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    /// Whether this call is the half-open probe.
    probe: bool,
    /// `closes` when the ticket was issued.
    issued: u64,
    reported: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: Mutex::new(Current {
                state: State::Closed { failures: 0 },
                closes: 0,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for one call, or `None` while open (or while the probe of a
    /// half-open breaker is still out).
    pub fn allow(&self) -> Option<Ticket<'_>> {
        let mut c = self.lock();
        let probe = match c.state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                c.state = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => return None,
            State::HalfOpen { probing: true } => return None,
            State::HalfOpen { probing: false } => {
                c.state = State::HalfOpen { probing: true };
                true
            }
        };
        Some(Ticket {
            breaker: self,
            probe,
            issued: c.closes,
            reported: false,
        })
    }
}

impl Ticket<'_> {
    /// The dependency answered: closed, whenever the call was let through
    /// (an answer arriving now says the dependency works now).
    pub fn success(mut self) {
        self.reported = true;
        let mut c = self.breaker.lock();
        if !matches!(c.state, State::Closed { .. }) {
            c.closes += 1;
        }
        c.state = State::Closed { failures: 0 };
    }

    pub fn failure(mut self) {
        self.reported = true;
        let b = self.breaker;
        let mut c = b.lock();
        if self.issued != c.closes {
            // Let through before the breaker last closed: a leftover of
            // that outage, not news of a new one.
            return;
        }
        let open = State::Open {
            until: Instant::now() + b.config.open_for,
        };
        c.state = match c.state {
            _ if self.probe => open,
            State::Closed { failures } if failures + 1 >= b.config.failures_to_open => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            // Already open (another call's failure opened it): stay open.
            State::Open { until } => State::Open { until },
            State::HalfOpen { .. } => open,
        };
    }

    /// The call never reached the dependency: no verdict.
    pub fn neutral(mut self) {
        self.reported = true;
        self.release_probe();
    }

    /// A probe that gives no verdict frees the half-open slot for the next
    /// one, unless the breaker has closed (or re-opened) since it was issued.
    fn release_probe(&self) {
        if !self.probe {
            return;
        }
        let mut c = self.breaker.lock();
        if self.issued == c.closes && matches!(c.state, State::HalfOpen { probing: true }) {
            c.state = State::HalfOpen { probing: false };
        }
    }
}

impl Drop for Ticket<'_> {
    /// A call dropped mid-way (its request was cancelled) gives no verdict,
    /// but must not leave a half-open breaker waiting for it for ever.
    fn drop(&mut self) {
        if !self.reported {
            self.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures_to_open: 2,
            open_for: Duration::from_secs(1),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker();
        b.allow().unwrap().failure();
        b.allow().unwrap().success();
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_and_a_failed_probe_reopens() {
        let b = breaker();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        assert!(b.allow().is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.allow().unwrap();
        assert!(b.allow().is_none(), "a second probe must wait");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.allow().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_let_through_before_the_breaker_closed_cannot_reopen_it() {
        let b = breaker();
        // Let through while closed, before the outage is noticed; each
        // takes the whole outage to fail (a connect timing out).
        let old_1 = b.allow().unwrap();
        let old_2 = b.allow().unwrap();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        // The outage ends: the probe answers and closes the breaker.
        b.allow().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        // The leftovers fail now: ignored, not counted.
        old_1.failure();
        old_2.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        // A new failure counts from zero as before: one is not enough.
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_probe_failing_after_another_success_keeps_it_closed() {
        let b = breaker();
        let before = b.allow().unwrap(); // let through while closed
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.allow().unwrap();
        // The older call's answer arrives: the dependency works.
        before.success();
        assert_eq!(b.state(), BreakerState::Closed);
        // The probe, stuck since, fails: no new outage from it.
        probe.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        // Nor does a stale probe dropped unreported disturb the state.
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.allow().unwrap();
        assert!(b.allow().is_none());
        drop(probe);
        assert!(
            b.allow().is_some(),
            "an abandoned current probe frees the slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_half_open_slot() {
        let b = breaker();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.allow().unwrap());
        assert!(b.allow().is_some());
    }
}
