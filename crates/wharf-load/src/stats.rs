//! Turns raw samples into the JSON report and the human summary.
//!
//! Attribution: a request belongs to the stage in which it *started* (so a
//! stage's counts are the answers to the load that stage offered), and to
//! the one-second bucket in which it *ended* (so the time series shows when
//! answers came back). Goodput of a stage = its 2xx answers ÷ its length.
//! Percentiles are exact (nearest rank over sorted samples).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::load::Plan;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Any 2xx, whole body read.
    Ok,
    /// 429 Too Many Requests.
    TooMany,
    /// 503 Service Unavailable.
    Unavailable,
    /// Any other status.
    Other,
    /// The connection was refused (nothing listening, or backlog refusal).
    Refused,
    /// The connection failed, closed or reset without a whole answer.
    Reset,
    /// No whole answer before the deadline.
    Hang,
}

pub const OUTCOMES: [Outcome; 7] = [
    Outcome::Ok,
    Outcome::TooMany,
    Outcome::Unavailable,
    Outcome::Other,
    Outcome::Refused,
    Outcome::Reset,
    Outcome::Hang,
];

impl Outcome {
    pub fn key(self) -> &'static str {
        match self {
            Outcome::Ok => "ok_2xx",
            Outcome::TooMany => "s429",
            Outcome::Unavailable => "s503",
            Outcome::Other => "other_status",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Hang => "hang",
        }
    }
}

/// One request, as recorded by its client.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Milliseconds from the start of the run to the request's start.
    pub start_ms: u32,
    /// Latency in microseconds (connect, if any, to last body byte).
    pub lat_us: u32,
    /// Body bytes received.
    pub bytes: u32,
    pub outcome: Outcome,
    /// A 429/503 that came without a `Retry-After` header.
    pub no_retry_after: bool,
}

impl Sample {
    fn end_us(&self) -> u64 {
        self.start_ms as u64 * 1000 + self.lat_us as u64
    }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u32>) -> Value {
    us.map_or(Value::Null, |u| json!(u as f64 / 1000.0))
}

fn latency(mut lats: Vec<u32>) -> Value {
    lats.sort_unstable();
    json!({
        "count": lats.len(),
        "p50_ms": ms(percentile(&lats, 0.50)),
        "p99_ms": ms(percentile(&lats, 0.99)),
        "max_ms": ms(lats.last().copied()),
    })
}

/// Counts, latencies and goodput of `samples` over `secs` seconds.
fn summary<'a>(samples: impl Iterator<Item = &'a Sample>, secs: f64) -> Value {
    let mut by: BTreeMap<&'static str, Vec<u32>> = BTreeMap::new();
    let (mut n, mut ok_bytes, mut no_retry_after) = (0u64, 0u64, 0u64);
    for s in samples {
        n += 1;
        by.entry(s.outcome.key()).or_default().push(s.lat_us);
        if s.outcome == Outcome::Ok {
            ok_bytes += s.bytes as u64;
        }
        no_retry_after += s.no_retry_after as u64;
    }
    let count = |o: Outcome| by.get(o.key()).map_or(0, |v| v.len() as u64);
    let ok = count(Outcome::Ok);
    let answered = ok + count(Outcome::TooMany) + count(Outcome::Unavailable);
    let mut outcomes = serde_json::Map::new();
    for o in OUTCOMES {
        outcomes.insert(
            o.key().into(),
            latency(by.remove(o.key()).unwrap_or_default()),
        );
    }
    json!({
        "secs": secs,
        "requests": n,
        "answered_2xx_429_503": answered,
        "not_answered": n - answered,
        "refusals_without_retry_after": no_retry_after,
        "goodput_rps": round(ok as f64 / secs, 1),
        "goodput_bytes_per_s": round(ok_bytes as f64 / secs, 0),
        "outcomes": outcomes,
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Facts about the run beyond the samples.
pub struct RunFacts {
    pub start_unix_ms: u64,
    pub elapsed: Duration,
    pub connections: u64,
    pub budget_hit: bool,
}

pub fn load_report(
    plan: &Plan,
    samples: &[Sample],
    errors: BTreeMap<String, u64>,
    facts: RunFacts,
) -> Value {
    let bounds = plan.bounds();
    let total = *bounds.last().unwrap_or(&0.0);
    let stages: Vec<Value> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let (a, b) = (bounds[i], bounds[i + 1]);
            let (a_ms, b_ms) = ((a * 1000.0) as u32, (b * 1000.0) as u32);
            let mut v = summary(
                samples
                    .iter()
                    .filter(|s| s.start_ms >= a_ms && s.start_ms < b_ms),
                st.secs,
            );
            v["clients"] = json!(st.clients);
            v["start_s"] = json!(a);
            v["end_s"] = json!(b);
            v
        })
        .collect();

    // Per-second buckets by completion time, up to the last answer.
    let last_us = samples.iter().map(Sample::end_us).max().unwrap_or(0);
    let nb = (last_us / 1_000_000 + 1) as usize;
    let mut ok_lat: Vec<Vec<u32>> = vec![Vec::new(); nb];
    let mut ok_bytes = vec![0u64; nb];
    let mut counts = vec![[0u64; 7]; nb];
    for s in samples {
        let b = (s.end_us() / 1_000_000) as usize;
        let k = OUTCOMES.iter().position(|&o| o == s.outcome).unwrap_or(0);
        counts[b][k] += 1;
        if s.outcome == Outcome::Ok {
            ok_lat[b].push(s.lat_us);
            ok_bytes[b] += s.bytes as u64;
        }
    }
    let series: Vec<Value> = (0..nb)
        .map(|b| {
            let lats = &mut ok_lat[b];
            lats.sort_unstable();
            let mut v = json!({
                "t": b,
                "ok_bytes": ok_bytes[b],
                "ok_p50_ms": ms(percentile(lats, 0.50)),
                "ok_p99_ms": ms(percentile(lats, 0.99)),
                "ok_max_ms": ms(lats.last().copied()),
            });
            for (k, o) in OUTCOMES.iter().enumerate() {
                v[o.key()] = json!(counts[b][k]);
            }
            v
        })
        .collect();

    json!({
        "mode": "load",
        "label": plan.label,
        "target": plan.addr.to_string(),
        "requests_mix": plan.targets.iter().map(|t| format!("{} {}", t.method, t.path)).collect::<Vec<_>>(),
        "deadline_ms": plan.deadline.as_millis() as u64,
        "max_requests": plan.max_requests,
        "refusal_pause_ms": plan.refusal_pause.as_millis() as u64,
        "honor_retry_after_max_ms": plan.honor_retry_after.map(|d| d.as_millis() as u64),
        "generator_cpu_s": own_cpu_seconds(),
        "error_pause_ms": plan.error_pause.as_millis() as u64,
        "start_unix_ms": facts.start_unix_ms,
        "elapsed_s": round(facts.elapsed.as_secs_f64(), 3),
        "budget_exhausted": facts.budget_hit,
        "connections_opened": facts.connections,
        "total": summary(samples.iter(), total),
        "stages": stages,
        "series": series,
        "errors": errors,
    })
}

/// CPU time (user + system) this process has used, from `/proc/self/stat`
/// (Linux; its ticks are USER_HZ, 100 a second). `None` elsewhere.
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses: state is the
    // first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn f(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    }
}

/// The human summary, on stderr.
pub fn print_load_summary(r: &Value) {
    eprintln!(
        "wharf-load {} -> {}: {} requests in {} s, {} connections opened, generator CPU {} s{}",
        if r["label"] == "" {
            "load".to_string()
        } else {
            r["label"].as_str().unwrap_or("").to_string()
        },
        r["target"].as_str().unwrap_or(""),
        r["total"]["requests"],
        r["elapsed_s"],
        r["connections_opened"],
        f(&r["generator_cpu_s"]),
        if r["budget_exhausted"] == true {
            " (request budget exhausted: stopped early)"
        } else {
            ""
        },
    );
    let stages = r["stages"].as_array().cloned().unwrap_or_default();
    for (i, s) in stages.iter().enumerate() {
        eprintln!(
            "  stage {} ({} clients, {}-{} s): goodput {} req/s, {} MB/s",
            i + 1,
            s["clients"],
            s["start_s"],
            s["end_s"],
            s["goodput_rps"],
            f(&json!(
                s["goodput_bytes_per_s"].as_f64().unwrap_or(0.0) / 1e6
            )),
        );
        for o in OUTCOMES {
            let v = &s["outcomes"][o.key()];
            if v["count"].as_u64().unwrap_or(0) > 0 {
                eprintln!(
                    "    {:<13} {:>9}  p50 {:>8} ms  p99 {:>8} ms  max {:>8} ms",
                    o.key(),
                    v["count"],
                    f(&v["p50_ms"]),
                    f(&v["p99_ms"]),
                    f(&v["max_ms"]),
                );
            }
        }
    }
    if let Some(e) = r["errors"].as_object() {
        for (k, v) in e {
            eprintln!("  error: {k}: {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&[7u32], 0.99), Some(7));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn summary_counts_and_goodput() {
        let s = |outcome, lat_us, bytes| Sample {
            start_ms: 0,
            lat_us,
            bytes,
            outcome,
            no_retry_after: outcome == Outcome::Unavailable,
        };
        let samples = [
            s(Outcome::Ok, 1000, 100),
            s(Outcome::Ok, 3000, 100),
            s(Outcome::Unavailable, 500, 0),
            s(Outcome::Hang, 2_000_000, 0),
        ];
        let v = summary(samples.iter(), 2.0);
        assert_eq!(v["requests"], 4);
        assert_eq!(v["answered_2xx_429_503"], 3);
        assert_eq!(v["not_answered"], 1);
        assert_eq!(v["refusals_without_retry_after"], 1);
        assert_eq!(v["goodput_rps"], 1.0);
        assert_eq!(v["goodput_bytes_per_s"], 100.0);
        assert_eq!(v["outcomes"]["ok_2xx"]["count"], 2);
        assert_eq!(v["outcomes"]["ok_2xx"]["p50_ms"], 1.0);
        assert_eq!(v["outcomes"]["ok_2xx"]["max_ms"], 3.0);
        assert_eq!(v["outcomes"]["hang"]["count"], 1);
    }
}
