//! Telemetry: request metrics and the Prometheus text format.
//!
//! Owns: [`RequestMetrics`] (latency histograms by route, method and status;
//! bytes in and out) and [`Exposition`], a writer of the Prometheus text
//! format that every other component's numbers are rendered through at
//! scrape time. Names follow the house rules: `wharf_` prefix, base units,
//! `_total` and `_seconds` suffixes.
//!
//! Must never: allocate or lock on a hot path beyond one short map lookup,
//! or let label cardinality grow with client input (routes are the fixed
//! endpoint names, statuses the numeric code, methods a fixed set).
//!
//! Written by hand rather than with a client crate: the format is a page of
//! text, and our gauges are read from live counters at scrape time, which a
//! registry-of-metrics crate would make us copy into its own types first.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub mod process;

/// Access-log lines the log writer dropped because its queue was full
/// (`wharf_log_lines_dropped_total`; the writer is the `wharf` binary's).
pub static LOG_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with fixed buckets, updated without locks.
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The key of a request series.
type SeriesKey = (&'static str, &'static str, u16);

/// Request latency and traffic, recorded by the HTTP layer.
#[derive(Default)]
pub struct RequestMetrics {
    series: RwLock<HashMap<SeriesKey, Arc<Histogram>>>,
    /// Request body bytes received.
    pub bytes_in: AtomicU64,
    /// Response body bytes sent.
    pub bytes_out: AtomicU64,
}

impl RequestMetrics {
    /// Records one request. `route` and `method` must come from fixed sets.
    pub fn observe(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        latency: Duration,
    ) {
        let key = (route, method, status);
        if let Some(h) = self
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            h.observe(latency);
            return;
        }
        let h = self
            .series
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(Histogram::new(&LATENCY_BUCKETS)))
            .clone();
        h.observe(latency);
    }

    /// How many requests were recorded for `route` with `status`.
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((r, _, s), _)| *r == route && *s == status)
            .map(|(_, h)| h.count())
            .sum()
    }

    /// Writes this component's series.
    pub fn render(&self, out: &mut Exposition) {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<_> = series.iter().collect();
        sorted.sort_by_key(|(k, _)| **k);
        out.header(
            "wharf_http_request_duration_seconds",
            "histogram",
            "Time from request start to response headers, by route, method and status.",
        );
        for ((route, method, status), h) in sorted {
            let status = status.to_string();
            let labels = [
                ("route", *route),
                ("method", *method),
                ("status", status.as_str()),
            ];
            out.histogram_series("wharf_http_request_duration_seconds", &labels, h);
        }
        out.counter(
            "wharf_http_request_bytes_total",
            "Request body bytes received.",
            &[],
            self.bytes_in.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "wharf_http_response_bytes_total",
            "Response body bytes sent.",
            &[],
            self.bytes_out.load(Ordering::Relaxed) as f64,
        );
    }
}

/// A Prometheus text-format document being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
    /// Metric names whose HELP/TYPE lines were written, so each family is
    /// introduced once however many series it has.
    seen: BTreeMap<String, ()>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        if self.seen.insert(name.to_string(), ()).is_none() {
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = writeln!(self.text, "{name}{} {value}", labels_text(labels));
    }

    /// A gauge sample (the family's HELP/TYPE written the first time).
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, "gauge", help);
        self.sample(name, labels, value);
    }

    /// A counter sample; `name` must end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(name.ends_with("_total"), "{name}");
        self.header(name, "counter", help);
        self.sample(name, labels, value);
    }

    /// Writes one histogram series (buckets, sum, count) under `name`.
    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.header(name, "histogram", help);
        self.histogram_series(name, labels, h);
    }

    fn histogram_series(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = h
                .bounds
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", le.as_str()));
            self.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        self.sample(
            &format!("{name}_sum"),
            labels,
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = RequestMetrics::default();
        m.observe("manifest", "GET", 200, Duration::from_micros(300));
        m.observe("manifest", "GET", 200, Duration::from_millis(3));
        m.observe("manifest", "GET", 200, Duration::from_secs(30));
        m.observe("blob", "GET", 404, Duration::from_millis(1));
        assert_eq!(m.count("manifest", 200), 3);
        let mut e = Exposition::new();
        m.render(&mut e);
        let text = e.finish();
        assert!(text.contains("# TYPE wharf_http_request_duration_seconds histogram"));
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} in\n{text}"))
                .to_string()
        };
        assert!(line("wharf_http_request_duration_seconds_bucket{route=\"manifest\",method=\"GET\",status=\"200\",le=\"0.0005\"}").ends_with(" 1"));
        assert!(line("wharf_http_request_duration_seconds_bucket{route=\"manifest\",method=\"GET\",status=\"200\",le=\"0.005\"}").ends_with(" 2"));
        assert!(line("wharf_http_request_duration_seconds_bucket{route=\"manifest\",method=\"GET\",status=\"200\",le=\"+Inf\"}").ends_with(" 3"));
        assert!(line("wharf_http_request_duration_seconds_count{route=\"manifest\",method=\"GET\",status=\"200\"}").ends_with(" 3"));
        // One HELP line per family, however many series.
        assert_eq!(
            text.matches("# HELP wharf_http_request_duration_seconds ")
                .count(),
            1
        );
    }

    #[test]
    fn labels_are_escaped() {
        let mut e = Exposition::new();
        e.gauge("wharf_x", "x", &[("a", "q\"uote\\")], 1.0);
        assert!(e.finish().contains(r#"wharf_x{a="q\"uote\\"} 1"#));
    }
}
