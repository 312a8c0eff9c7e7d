//! `load` mode: closed-loop clients on keep-alive HTTP/1.1 connections.
//!
//! Each client is one task with at most one connection and one request in
//! flight. It sends, waits for the whole answer or the deadline, records one
//! sample, and goes again. A server that closes the connection (after a
//! `Connection: close`, a refusal, an error) gets a fresh one on the next
//! request; the connect time counts in that request's latency, as it would
//! for a real client. A request past its deadline is a hang: its connection
//! is dropped (closed), as a proxy or client giving up would.
//!
//! Samples are kept raw (16 bytes each, at most `max_requests` of them) and
//! turned into percentiles at the end by [`crate::stats`], so the numbers are
//! exact, not bucketed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST, RETRY_AFTER};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::stats::{self, Outcome, Sample};
use crate::target::RequestSpec;

/// A stretch of the run with a fixed number of active clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub clients: usize,
    pub secs: f64,
}

impl Stage {
    /// `CLIENTS:SECONDS`
    pub fn parse(s: &str) -> Result<Stage, String> {
        let (c, d) = s
            .split_once(':')
            .ok_or_else(|| format!("bad --stage {s:?}: expected CLIENTS:SECONDS"))?;
        let clients = c
            .parse()
            .map_err(|_| format!("bad client count in {s:?}"))?;
        let secs: f64 = d.parse().map_err(|_| format!("bad seconds in {s:?}"))?;
        if secs.is_nan() || secs <= 0.0 {
            return Err(format!("stage {s:?}: seconds must be positive"));
        }
        Ok(Stage { clients, secs })
    }
}

/// Everything a `load` run needs; built and checked by `main`.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub authority: String,
    pub targets: Vec<RequestSpec>,
    pub stages: Vec<Stage>,
    pub max_requests: u64,
    pub deadline: Duration,
    pub refusal_pause: Duration,
    /// After a 429/503, also wait what its `Retry-After` asks (whole
    /// seconds), at most this long; `None`: ignore the header.
    pub honor_retry_after: Option<Duration>,
    pub error_pause: Duration,
    pub label: String,
}

impl Plan {
    /// Seconds from the start to the start of each stage, and the total.
    pub fn bounds(&self) -> Vec<f64> {
        let mut t = 0.0;
        let mut b = vec![0.0];
        for s in &self.stages {
            t += s.secs;
            b.push(t);
        }
        b
    }

    fn total(&self) -> Duration {
        Duration::from_secs_f64(self.stages.iter().map(|s| s.secs).sum())
    }

    /// The stage running `at` after the start, if any (called before every
    /// request, so it does not allocate).
    fn stage_at(&self, at: Duration) -> Option<usize> {
        let t = at.as_secs_f64();
        let mut end = 0.0;
        for (i, s) in self.stages.iter().enumerate() {
            end += s.secs;
            if t < end {
                return Some(i);
            }
        }
        None
    }

    /// When client `id`, idle in stage `from`, becomes active again.
    fn next_active(&self, id: usize, from: usize) -> Option<Duration> {
        let b = self.bounds();
        (from + 1..self.stages.len())
            .find(|&i| id < self.stages[i].clients)
            .map(|i| Duration::from_secs_f64(b[i]))
    }
}

/// What one client brings back.
#[derive(Default)]
struct ClientLog {
    samples: Vec<Sample>,
    /// Why connections failed or requests went unanswered, by kind.
    errors: BTreeMap<String, u64>,
    budget_hit: bool,
}

/// Counters shared by all clients.
#[derive(Default)]
struct Shared {
    issued: AtomicU64,
    connections: AtomicU64,
}

pub async fn run(plan: Plan) -> Result<serde_json::Value, String> {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::default());
    let clients = plan.stages.iter().map(|s| s.clients).max().unwrap_or(0);
    let start_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(client(id, plan.clone(), shared.clone(), start)))
        .collect();
    let mut samples = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut budget_hit = false;
    for t in tasks {
        let log = t.await.map_err(|e| format!("client task failed: {e}"))?;
        samples.extend(log.samples);
        for (k, v) in log.errors {
            *errors.entry(k).or_default() += v;
        }
        budget_hit |= log.budget_hit;
    }
    let elapsed = start.elapsed();
    let report = stats::load_report(
        &plan,
        &samples,
        errors,
        stats::RunFacts {
            start_unix_ms,
            elapsed,
            connections: shared.connections.load(Ordering::Relaxed),
            budget_hit,
        },
    );
    stats::print_load_summary(&report);
    Ok(report)
}

async fn client(id: usize, plan: Arc<Plan>, shared: Arc<Shared>, start: Instant) -> ClientLog {
    let mut log = ClientLog::default();
    let mut conn: Option<Conn> = None;
    let mut next = id % plan.targets.len();
    let end = start + plan.total();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let Some(stage) = plan.stage_at(now - start) else {
            break;
        };
        if id >= plan.stages[stage].clients {
            // Not part of this stage: leave, as a client that went away.
            conn = None;
            match plan.next_active(id, stage) {
                Some(at) => {
                    tokio::time::sleep_until((start + at).into()).await;
                    continue;
                }
                None => break,
            }
        }
        if shared.issued.fetch_add(1, Ordering::Relaxed) >= plan.max_requests {
            log.budget_hit = true;
            break;
        }
        let spec = &plan.targets[next];
        next = (next + 1) % plan.targets.len();
        let t0 = Instant::now();
        let answer = match tokio::time::timeout(
            plan.deadline,
            exchange(&mut conn, &plan, spec, &shared, &mut log.errors),
        )
        .await
        {
            Ok(a) => a,
            Err(_) => {
                conn = None;
                Answer::of(Outcome::Hang)
            }
        };
        let lat = t0.elapsed();
        log.samples.push(Sample {
            start_ms: (t0 - start).as_millis() as u32,
            lat_us: lat.as_micros().min(u32::MAX as u128) as u32,
            bytes: answer.bytes.min(u32::MAX as u64) as u32,
            outcome: answer.outcome,
            no_retry_after: answer.no_retry_after,
        });
        let pause = match answer.outcome {
            Outcome::TooMany | Outcome::Unavailable => {
                plan.refusal_pause
                    + plan
                        .honor_retry_after
                        .map_or(Duration::ZERO, |cap| answer.retry_after.min(cap))
            }
            Outcome::Refused | Outcome::Reset => plan.error_pause,
            _ => Duration::ZERO,
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }
    log
}

/// A client connection: the request half, and the task driving the socket
/// (aborted, so the socket closes, when the connection is dropped). The task
/// ends with the connection's error, if it had one.
struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    task: JoinHandle<Option<String>>,
}

impl Conn {
    /// Why the connection ended, once it has (waiting a moment for its task
    /// to finish): e.g. the server sent bytes before any request, which an
    /// HTTP/1.1 client must treat as an error and close.
    async fn end_reason(&mut self) -> String {
        match tokio::time::timeout(Duration::from_millis(20), &mut self.task).await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => "closed by the server".into(),
            _ => "closed".into(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Answer {
    outcome: Outcome,
    bytes: u64,
    no_retry_after: bool,
    /// What a `Retry-After: <seconds>` header asked for (zero without one).
    retry_after: Duration,
}

impl Answer {
    fn of(outcome: Outcome) -> Answer {
        Answer {
            outcome,
            bytes: 0,
            no_retry_after: false,
            retry_after: Duration::ZERO,
        }
    }
}

fn note(errors: &mut BTreeMap<String, u64>, what: String) {
    *errors.entry(what).or_default() += 1;
}

async fn connect(plan: &Plan, shared: &Shared) -> std::io::Result<Conn> {
    let stream = TcpStream::connect(plan.addr).await?;
    let _ = stream.set_nodelay(true);
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let task = tokio::spawn(async move { connection.await.err().map(|e| e.to_string()) });
    Ok(Conn { sender, task })
}

/// One request and its whole answer, on `conn` (opened if needed).
async fn exchange(
    conn: &mut Option<Conn>,
    plan: &Plan,
    spec: &RequestSpec,
    shared: &Shared,
    errors: &mut BTreeMap<String, u64>,
) -> Answer {
    // A kept-alive connection the server has closed since is not an error:
    // open another (once) before sending anything.
    for attempt in 0..2 {
        if conn.is_none() {
            match connect(plan, shared).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    note(errors, format!("connect: {}", e.kind()));
                    return Answer::of(if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        Outcome::Refused
                    } else {
                        Outcome::Reset
                    });
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        if c.sender.ready().await.is_ok() {
            break;
        }
        let why = c.end_reason().await;
        *conn = None;
        if attempt == 1 {
            note(errors, format!("closed before the request was sent: {why}"));
            return Answer::of(Outcome::Reset);
        }
    }
    let c = conn.as_mut().expect("ready above");
    let mut req = Request::builder()
        .method(spec.method.clone())
        .uri(spec.path.as_str())
        .header(HOST, plan.authority.as_str());
    for (k, v) in &spec.headers {
        req = req.header(k, v);
    }
    let req = req.body(Empty::new()).expect("request from checked parts");
    let resp = match c.sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            note(errors, format!("no response: {e}"));
            return Answer::of(Outcome::Reset);
        }
    };
    let status = resp.status();
    let close = resp
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let retry_after = resp.headers().get(RETRY_AFTER);
    let has_retry_after = retry_after.is_some();
    // Delta-seconds only; an HTTP-date is counted as present but not waited.
    let retry_after = retry_after
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    bytes += d.len() as u64;
                }
            }
            Err(e) => {
                *conn = None;
                note(errors, format!("body cut short: {e}"));
                return Answer::of(Outcome::Reset);
            }
        }
    }
    if close {
        *conn = None;
    }
    let outcome = match status.as_u16() {
        200..=299 => Outcome::Ok,
        429 => Outcome::TooMany,
        503 => Outcome::Unavailable,
        _ => Outcome::Other,
    };
    Answer {
        outcome,
        bytes,
        no_retry_after: matches!(outcome, Outcome::TooMany | Outcome::Unavailable)
            && !has_retry_after,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(stages: &[(usize, f64)]) -> Plan {
        Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            authority: "127.0.0.1:1".into(),
            targets: vec![],
            stages: stages
                .iter()
                .map(|&(clients, secs)| Stage { clients, secs })
                .collect(),
            max_requests: 1,
            deadline: Duration::from_secs(2),
            refusal_pause: Duration::ZERO,
            honor_retry_after: None,
            error_pause: Duration::ZERO,
            label: String::new(),
        }
    }

    #[test]
    fn stages_parse() {
        assert_eq!(
            Stage::parse("2000:30").unwrap(),
            Stage {
                clients: 2000,
                secs: 30.0
            }
        );
        assert!(Stage::parse("2000").is_err());
        assert!(Stage::parse("10:0").is_err());
        assert!(Stage::parse("x:1").is_err());
    }

    #[test]
    fn stage_lookup_and_reentry() {
        let p = plan(&[(64, 5.0), (2000, 30.0), (64, 10.0)]);
        assert_eq!(p.bounds(), vec![0.0, 5.0, 35.0, 45.0]);
        assert_eq!(p.stage_at(Duration::from_secs(0)), Some(0));
        assert_eq!(p.stage_at(Duration::from_secs(5)), Some(1));
        assert_eq!(p.stage_at(Duration::from_millis(44_999)), Some(2));
        assert_eq!(p.stage_at(Duration::from_secs(45)), None);
        // A surge-only client is idle in stage 0, active in 1, gone after.
        assert_eq!(p.next_active(100, 0), Some(Duration::from_secs(5)));
        assert_eq!(p.next_active(100, 1), None);
        assert_eq!(p.total(), Duration::from_secs(45));
    }
}
