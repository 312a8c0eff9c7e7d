//! `slowloris` mode: connections that never finish their request head.
//!
//! Each of N slots connects, sends the first byte of
//! `GET <path> HTTP/1.1\r\nHost: …\r\nX-Slow: aaaa…` at once and one more
//! byte every interval, and never sends the blank line that would end the
//! head. It reads at the same time, to see whether and how the server ends
//! the connection: with an answer (say a `408` or a `503`), with a bare
//! close, or with a reset. With `--reconnect` a closed slot connects again
//! after a pause (an attacker who keeps trying); without it, once.
//!
//! Every connection is dropped at the end of the duration; connection
//! attempts are capped by `--max-connects`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::percentile;

/// Everything a `slowloris` run needs; built and checked by `main`.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
    pub connections: usize,
    pub duration: Duration,
    pub interval: Duration,
    pub reconnect: bool,
    pub reconnect_pause: Duration,
    pub max_connects: u64,
    pub label: String,
}

/// How one connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Still open when the run ended (we closed it).
    StillOpen,
    /// The server closed it without a byte of answer.
    Closed,
    /// The server reset it (or a write failed).
    Reset,
    /// The server answered with this status line's code, then closed.
    Answered(u16),
    /// Could not connect (no connection was made).
    ConnectError(String),
}

impl End {
    fn key(&self) -> String {
        match self {
            End::StillOpen => "still_open_at_end".into(),
            End::Closed => "closed_without_answer".into(),
            End::Reset => "reset".into(),
            End::Answered(code) => format!("answered_{code}"),
            End::ConnectError(k) => format!("connect_error: {k}"),
        }
    }
}

/// One connection's life, in milliseconds from the start of the run.
struct Life {
    open_ms: u64,
    end_ms: u64,
    end: End,
}

pub async fn run(plan: Plan) -> Result<Value, String> {
    let plan = Arc::new(plan);
    let attempts = Arc::new(AtomicU64::new(0));
    let start_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    let tasks: Vec<_> = (0..plan.connections)
        .map(|_| tokio::spawn(slot(plan.clone(), attempts.clone(), start)))
        .collect();
    let mut lives = Vec::new();
    for t in tasks {
        lives.extend(t.await.map_err(|e| format!("slot task failed: {e}"))?);
    }
    let report = report(&plan, &lives, start_unix_ms, start.elapsed());
    eprintln!(
        "wharf-load slowloris -> {}: {} attempts, {} connected, {} closed by the server (first at {} s, last at {} s; lifetime p50 {} s, max {} s), {} still open at the end, peak {} open",
        report["target"].as_str().unwrap_or(""),
        report["connect_attempts"],
        report["connected"],
        report["closed_by_server"],
        report["first_close_s"],
        report["last_close_s"],
        report["server_closed_lifetime_s"]["p50"],
        report["server_closed_lifetime_s"]["max"],
        report["still_open_at_end"],
        report["peak_open"],
    );
    eprintln!("  endings: {}", report["endings"]);
    Ok(report)
}

async fn slot(plan: Arc<Plan>, attempts: Arc<AtomicU64>, start: Instant) -> Vec<Life> {
    let end = start + plan.duration;
    let ms = |t: Instant| t.saturating_duration_since(start).as_millis() as u64;
    let mut lives = Vec::new();
    while Instant::now() < end && attempts.fetch_add(1, Ordering::Relaxed) < plan.max_connects {
        let t0 = Instant::now();
        let stream = match tokio::time::timeout_at(end.into(), TcpStream::connect(plan.addr)).await
        {
            Err(_) => break, // still connecting when the run ended
            Ok(Err(e)) => {
                lives.push(Life {
                    open_ms: ms(t0),
                    end_ms: ms(Instant::now()),
                    end: End::ConnectError(format!("{}", e.kind())),
                });
                if !plan.reconnect {
                    break;
                }
                tokio::time::sleep(plan.reconnect_pause).await;
                continue;
            }
            Ok(Ok(s)) => s,
        };
        let opened = Instant::now();
        let how = trickle(stream, &plan, end).await;
        lives.push(Life {
            open_ms: ms(opened),
            end_ms: ms(Instant::now()),
            end: how.clone(),
        });
        if how == End::StillOpen || !plan.reconnect {
            break;
        }
        tokio::time::sleep_until((Instant::now() + plan.reconnect_pause).min(end).into()).await;
    }
    lives
}

/// Sends the head a byte at a time until the server ends the connection or
/// the run ends.
async fn trickle(stream: TcpStream, plan: &Plan, end: Instant) -> End {
    let _ = stream.set_nodelay(true);
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wharf-load-slowloris\r\nX-Slow: ",
        plan.path, plan.authority
    );
    let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
    let (mut rd, mut wr) = stream.into_split();
    let mut next_send = Instant::now();
    let mut answer: Vec<u8> = Vec::new();
    let mut buf = [0u8; 1024];
    let mut writing = true;
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => {
                    return match status_of(&answer) {
                        Some(code) => End::Answered(code),
                        None => End::Closed,
                    }
                }
                Ok(n) => {
                    // An answer: stop sending, read on until the server closes.
                    writing = false;
                    if answer.len() < 64 {
                        answer.extend_from_slice(&buf[..n.min(64)]);
                    }
                }
                Err(_) => return status_of(&answer).map_or(End::Reset, End::Answered),
            },
            _ = tokio::time::sleep_until(next_send.into()), if writing => {
                let b = [bytes.next().unwrap_or(b'a')];
                if wr.write_all(&b).await.is_err() {
                    return match status_of(&answer) {
                        Some(code) => End::Answered(code),
                        None => End::Reset,
                    };
                }
                next_send += plan.interval;
            }
            _ = tokio::time::sleep_until(end.into()) => return End::StillOpen,
        }
    }
}

/// The status code of `HTTP/1.x NNN …`, if `answer` starts with one.
fn status_of(answer: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(answer.get(..12)?).ok()?;
    if !s.starts_with("HTTP/1.") {
        return None;
    }
    s.get(9..12)?.parse().ok()
}

fn report(plan: &Plan, lives: &[Life], start_unix_ms: u64, elapsed: Duration) -> Value {
    let mut endings: BTreeMap<String, u64> = BTreeMap::new();
    for l in lives {
        *endings.entry(l.end.key()).or_default() += 1;
    }
    let connected: Vec<&Life> = lives
        .iter()
        .filter(|l| !matches!(l.end, End::ConnectError(_)))
        .collect();
    let server_closed: Vec<&Life> = connected
        .iter()
        .copied()
        .filter(|l| l.end != End::StillOpen)
        .collect();
    let mut lifetimes: Vec<u64> = server_closed.iter().map(|l| l.end_ms - l.open_ms).collect();
    lifetimes.sort_unstable();
    let secs = |v: Option<u64>| v.map_or(Value::Null, |m| json!(m as f64 / 1000.0));
    let first_close = server_closed.iter().map(|l| l.end_ms).min();
    let last_close = server_closed.iter().map(|l| l.end_ms).max();

    // Per second: connections opened, closed by the server, and open at the
    // end of the second.
    let nb = (elapsed.as_secs() + 1) as usize;
    let mut opened = vec![0i64; nb];
    let mut closed = vec![0i64; nb];
    for l in &connected {
        opened[((l.open_ms / 1000) as usize).min(nb - 1)] += 1;
        if l.end != End::StillOpen {
            closed[((l.end_ms / 1000) as usize).min(nb - 1)] += 1;
        }
    }
    let mut open = 0i64;
    let mut peak = 0i64;
    let series: Vec<Value> = (0..nb)
        .map(|b| {
            open += opened[b] - closed[b];
            peak = peak.max(open);
            json!({"t": b, "opened": opened[b], "closed_by_server": closed[b], "open": open})
        })
        .collect();
    json!({
        "mode": "slowloris",
        "label": plan.label,
        "target": plan.addr.to_string(),
        "connections": plan.connections,
        "duration_s": plan.duration.as_secs_f64(),
        "interval_ms": plan.interval.as_millis() as u64,
        "reconnect": plan.reconnect,
        "start_unix_ms": start_unix_ms,
        "elapsed_s": elapsed.as_secs_f64(),
        "generator_cpu_s": crate::stats::own_cpu_seconds(),
        "connect_attempts": lives.len(),
        "connected": connected.len(),
        "closed_by_server": server_closed.len(),
        "still_open_at_end": connected.len() - server_closed.len(),
        "peak_open": peak,
        "first_close_s": secs(first_close),
        "last_close_s": secs(last_close),
        "server_closed_lifetime_s": {
            "min": secs(lifetimes.first().copied()),
            "p50": secs(percentile(&lifetimes, 0.5)),
            "p99": secs(percentile(&lifetimes, 0.99)),
            "max": secs(lifetimes.last().copied()),
        },
        "endings": endings,
        "series": series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.1 408 "), Some(408));
        assert_eq!(status_of(b"HTTP/1.1 40"), None);
        assert_eq!(status_of(b"garbage garbage"), None);
    }
}
