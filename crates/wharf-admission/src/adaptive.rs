//! A gradient-style adaptive concurrency limit.
//!
//! Latency that rises above what the class shows when unloaded means work is
//! queueing somewhere (usually a slow dependency). Every `window` samples the
//! limit is multiplied by `min_latency / recent_latency` (so it shrinks in
//! proportion to the slowdown) and given a small allowance to probe upwards,
//! always within `[min_limit, max_limit]`. The unloaded latency is the
//! smallest recent sample, slowly forgotten so that a permanent shift is
//! eventually accepted as the new normal.

use std::sync::Mutex;
use std::time::Duration;

/// Tuning of an adaptive limit.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// The limit never goes below this.
    pub min_limit: usize,
    /// Samples between limit updates.
    pub window: usize,
    /// Latency ratio tolerated before shrinking (e.g. 2.0: shrink only once
    /// recent latency is more than twice the unloaded latency).
    pub tolerance: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            min_limit: 4,
            window: 50,
            tolerance: 2.0,
        }
    }
}

/// The adaptive limit of one class.
pub struct AdaptiveLimit {
    config: AdaptiveConfig,
    /// The configured ceiling.
    max_limit: usize,
    state: Mutex<State>,
}

struct State {
    limit: f64,
    /// Smallest latency seen (seconds), decayed upwards slowly.
    min_latency: f64,
    /// Sum and count of the current window's samples.
    sum: f64,
    count: usize,
}

impl AdaptiveLimit {
    pub fn new(config: AdaptiveConfig, max_limit: usize) -> AdaptiveLimit {
        AdaptiveLimit {
            max_limit: max_limit.max(1),
            state: Mutex::new(State {
                limit: max_limit.max(1) as f64,
                min_latency: f64::INFINITY,
                sum: 0.0,
                count: 0,
            }),
            config,
        }
    }

    /// Records one request's latency; returns the limit now in force.
    pub fn record(&self, latency: Duration) -> usize {
        let sample = latency.as_secs_f64().max(1e-6);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.sum += sample;
        s.count += 1;
        if sample < s.min_latency {
            s.min_latency = sample;
        }
        if s.count >= self.config.window {
            let recent = s.sum / s.count as f64;
            let ratio = (s.min_latency * self.config.tolerance / recent).min(1.0);
            let gradient = ratio.clamp(0.5, 1.0);
            // Probe upwards by about the square root of the limit when
            // latency is fine; shrink with the gradient when it is not.
            let probe = if gradient >= 1.0 { s.limit.sqrt() } else { 0.0 };
            s.limit = (s.limit * gradient + probe)
                .clamp(self.config.min_limit as f64, self.max_limit as f64);
            // Forget the unloaded latency slowly (1% a window).
            s.min_latency *= 1.01;
            s.sum = 0.0;
            s.count = 0;
        }
        s.limit.round() as usize
    }

    /// The limit now in force.
    pub fn limit(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .limit
            .round() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AdaptiveConfig {
        AdaptiveConfig {
            min_limit: 2,
            window: 10,
            tolerance: 2.0,
        }
    }

    #[test]
    fn shrinks_when_latency_climbs_and_recovers_when_it_falls() {
        let a = AdaptiveLimit::new(cfg(), 100);
        for _ in 0..10 {
            a.record(Duration::from_millis(2));
        }
        assert_eq!(a.limit(), 100, "steady latency keeps the ceiling");
        // A dependency slows down tenfold.
        for _ in 0..60 {
            a.record(Duration::from_millis(20));
        }
        let low = a.limit();
        assert!(low < 20, "limit should have shrunk, is {low}");
        assert!(low >= 2);
        // Back to normal: the limit climbs again.
        for _ in 0..300 {
            a.record(Duration::from_millis(2));
        }
        assert!(
            a.limit() > low * 3,
            "limit should recover, is {}",
            a.limit()
        );
    }

    #[test]
    fn tolerates_modest_jitter() {
        let a = AdaptiveLimit::new(cfg(), 50);
        a.record(Duration::from_millis(10));
        for i in 0..100 {
            a.record(Duration::from_millis(10 + (i % 8)));
        }
        assert_eq!(a.limit(), 50);
    }

    #[test]
    fn never_leaves_its_bounds() {
        let a = AdaptiveLimit::new(cfg(), 8);
        a.record(Duration::from_micros(10));
        for _ in 0..1000 {
            a.record(Duration::from_secs(1));
        }
        assert_eq!(a.limit(), 2);
    }
}
