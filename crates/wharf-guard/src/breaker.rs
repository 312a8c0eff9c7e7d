//! A circuit breaker: closed while the dependency works; open (refusing
//! at once) for a cool-off after `failures_to_open` consecutive failures;
//! then half-open, letting exactly one probe through, whose outcome closes
//! or re-opens it.

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
    state: Mutex<State>,
}

/// Permission for one call; report how it went.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    /// Whether this call is the half-open probe.
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for one call, or `None` while open (or while the probe of a
    /// half-open breaker is still out).
    pub fn allow(&self) -> Option<Ticket<'_>> {
        let mut s = self.lock();
        let probe = match *s {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => return None,
            State::HalfOpen { probing: true } => return None,
            State::HalfOpen { probing: false } => {
                *s = State::HalfOpen { probing: true };
                true
            }
        };
        Some(Ticket {
            breaker: self,
            probe,
            reported: false,
        })
    }
}

impl Ticket<'_> {
    pub fn success(mut self) {
        self.reported = true;
        *self.breaker.lock() = State::Closed { failures: 0 };
    }

    pub fn failure(mut self) {
        self.reported = true;
        let b = self.breaker;
        let mut s = b.lock();
        let open = State::Open {
            until: Instant::now() + b.config.open_for,
        };
        *s = match *s {
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
        if self.probe {
            *self.breaker.lock() = State::HalfOpen { probing: false };
        }
    }
}

impl Drop for Ticket<'_> {
    /// A call dropped mid-way (its request was cancelled) gives no verdict,
    /// but must not leave a half-open breaker waiting for it for ever.
    fn drop(&mut self) {
        if !self.reported && self.probe {
            *self.breaker.lock() = State::HalfOpen { probing: false };
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
    async fn an_abandoned_probe_frees_the_half_open_slot() {
        let b = breaker();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.allow().unwrap());
        assert!(b.allow().is_some());
    }
}
