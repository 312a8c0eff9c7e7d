//! The listener loop: accepts connections under a hard cap, serves each
//! with HTTP/1.1 or HTTP/2, bounds how long a client may take to send its
//! headers or sit idle, and drains gracefully on shutdown.
//!
//! Owns: the connection cap (design invariant 1: no unbounded queue). At the
//! cap a new connection is not left in the kernel's backlog to time out: it
//! is accepted, answered at once with a canned `503` and `Retry-After`, and
//! closed. Must never: spawn unbounded work for refused connections (their
//! answers have their own small budget; past it they are simply closed).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Limits of the listener.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once; more are refused with a fast `503`.
    pub max_connections: usize,
    /// A client must send a request's headers within this time.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Connection counters, for metrics.
#[derive(Default, Debug)]
pub struct ConnStats {
    /// Connections being served now.
    pub open: AtomicUsize,
    /// The cap on `open`.
    pub limit: AtomicUsize,
    pub accepted_total: AtomicU64,
    /// Connections refused at the cap (answered `503`, or closed when even
    /// the refusal budget was spent).
    pub refused_total: AtomicU64,
    /// Connections closed for idling.
    pub idle_closed_total: AtomicU64,
}

/// Refusals answered at once, at most this many at a time.
const REFUSAL_BUDGET: usize = 1024;

fn refusal_bytes() -> Vec<u8> {
    let body = wharf_core::RegistryError::Unavailable {
        reason: "too many connections to this node".into(),
        retry_after: 1,
    }
    .to_json()
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets requests in flight finish within the grace period, and
/// returns.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    config: ServerConfig,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSAL_BUDGET));
    let refusal = Arc::new(refusal_bytes());
    stats.limit.store(config.max_connections, Ordering::Relaxed);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin, and keep serving the open ones.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused_total.fetch_add(1, Ordering::Relaxed);
            if let Ok(r) = refusals.clone().try_acquire_owned() {
                let bytes = refusal.clone();
                tokio::spawn(async move {
                    refuse(stream, &bytes).await;
                    drop(r);
                });
            }
            continue;
        };
        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let app = app.clone();
        let builder = builder.clone();
        let stats = stats.clone();
        let mut stop = stop_rx.clone();
        let idle_timeout = config.idle_timeout;
        tokio::spawn(async move {
            let activity = Arc::new(AtomicU64::new(0));
            let clock = tokio::time::Instant::now();
            let io = TokioIo::new(Tracked {
                inner: stream,
                activity: activity.clone(),
                clock,
            });
            let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(app));
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                let idle_for = Duration::from_millis(
                    (clock.elapsed().as_millis() as u64)
                        .saturating_sub(activity.load(Ordering::Relaxed)),
                );
                let check_in = idle_timeout
                    .saturating_sub(idle_for)
                    .max(Duration::from_millis(100));
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = tokio::time::sleep(check_in), if !closing => {
                        let idle = (clock.elapsed().as_millis() as u64)
                            .saturating_sub(activity.load(Ordering::Relaxed));
                        if idle >= idle_timeout.as_millis() as u64 {
                            stats.idle_closed_total.fetch_add(1, Ordering::Relaxed);
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                    _ = stop.changed(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }

    // Stop accepting (the listener is dropped here), ask every connection to
    // finish its request in flight and close, and wait for them, bounded.
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = stats.open.load(Ordering::Relaxed),
            "shutdown grace period over with connections still open"
        );
    }
    Ok(())
}

/// Answers a refused connection with the canned `503`, then closes it
/// gently: reading what the client sent first, so the close is a FIN the
/// client can read the answer before, not a reset.
async fn refuse(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// A connection that remembers when bytes last moved (milliseconds since
/// `clock`), for the idle timeout.
struct Tracked {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    clock: tokio::time::Instant,
}

impl Tracked {
    fn touch(&self) {
        self.activity
            .store(self.clock.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
