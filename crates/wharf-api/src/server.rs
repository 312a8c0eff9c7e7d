//! The listener loop: accepts connections under a hard cap, serves each
//! with HTTP/1.1 or HTTP/2, bounds how long a client may take to send its
//! headers or sit idle, and drains gracefully on shutdown.
//!
//! Owns: the connection cap (design invariant 1: no unbounded queue). Past
//! the cap a new connection is not left in the kernel's backlog to time out:
//! it waits in a bounded *waiting room*, where each request it sends is read
//! and answered at once with a canned `503` and `Retry-After: 1` (or served,
//! as soon as a slot is free), and the connection is then left unread for
//! that second. A client that ignores `Retry-After` and asks again at once
//! gets its answer a second later instead of costing the node a request (or
//! a new TCP connection) each time: thousands of clients retrying without
//! pause cannot take the CPU from the connections being served. Past the
//! waiting room too, a connection is answered the canned `503` and closed.
//! Must never: spawn unbounded work for refused connections (the waiting
//! room and the closing refusals each have their own small budget; past
//! them connections are simply closed), or keep a waiting client more than
//! about a second without an answer.
//!
//! Why a waiting room rather than serving every connection: on two cores, a
//! node serving 2,000 connections spends about 1.6 times the CPU per request
//! it spends on 64 (every request's connection state is cold in the cache),
//! so a surge of clients would cut what the node gets done by a third even
//! if none were refused (docs/benchmarks.md, "Overload").

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

/// Limits of the listener.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once; more wait in the waiting room.
    pub max_connections: usize,
    /// Connections in the waiting room at once (each request answered `503`
    /// unless a slot is free); more are answered `503` and closed.
    pub max_waiting: usize,
    /// A client must send a request's headers within this time.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
    /// Serve TLS (HTTP/1.1 and HTTP/2 by ALPN) with this certificate instead
    /// of plain HTTP. The handshake must finish within the header timeout.
    pub tls: Option<Arc<crate::tls::TlsServer>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 4096,
            max_waiting: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
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
    /// Connections in the waiting room now (past the cap, not served).
    pub waiting: AtomicUsize,
    /// The cap on `waiting`.
    pub waiting_limit: AtomicUsize,
    pub accepted_total: AtomicU64,
    /// Refusals at the cap: each canned `503` (a waiting connection may be
    /// answered several), and each connection closed when even the refusal
    /// budget was spent.
    pub refused_total: AtomicU64,
    /// Waiting connections that got a slot and were then served.
    pub promoted_total: AtomicU64,
    /// Connections closed for idling.
    pub idle_closed_total: AtomicU64,
    /// Connections closed because no whole request arrived within the
    /// header timeout (HTTP/2's, and HTTP/1.1's first request).
    pub header_timeouts_total: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_failed_total: AtomicU64,
}

/// The header timeout of connections accepted while at least half the
/// connection cap is in use, and how long a waiting connection may stay
/// silent.
const PRESSURED_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// While connections wait, a served connection idle between requests this
/// long is closed (gracefully), so that its slot goes to one that waits.
const PRESSURED_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a waiting connection is left unread after a refusal: what the
/// refusal's `Retry-After` asks.
const WAIT_PACE: Duration = Duration::from_secs(1);

/// An HTTP/1.1 and HTTP/2 connection builder with `header_timeout`.
fn http_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // HTTP/2 multiplexes requests on one connection: each still passes
    // admission as a request, and one connection may not open more than
    // this many at once.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS);
    builder
}

/// Requests one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;

/// TLS handshakes in progress at once; past them a new connection is closed
/// without one (a refusal needs a handshake to be read).
const HANDSHAKE_BUDGET: usize = 512;

/// Refusals answered at once, at most this many at a time.
const REFUSAL_BUDGET: usize = 1024;

/// The canned refusal at the cap; `keep_alive` leaves the connection open
/// (in the waiting room) instead of announcing its close.
fn refusal_bytes(keep_alive: bool) -> Vec<u8> {
    let body = wharf_core::RegistryError::Unavailable {
        reason: "too many connections to this node".into(),
        retry_after: 1,
    }
    .to_json()
    .to_string();
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n{connection}\r\n{body}",
        body.len(),
        WAIT_PACE.as_secs(),
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
    let refusal = Arc::new(refusal_bytes(false));
    stats.limit.store(config.max_connections, Ordering::Relaxed);
    stats
        .waiting_limit
        .store(config.max_waiting, Ordering::Relaxed);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Past the grace period, connections still open are closed outright.
    let (abort_tx, abort_rx) = watch::channel(false);
    // Under connection pressure, new connections get a much shorter time to
    // send their headers: slow-header clients then churn out of their slots
    // in seconds instead of holding them for the full timeout, and normal
    // clients keep finding free slots.
    let strict_timeout = config.header_read_timeout.min(PRESSURED_HEADER_TIMEOUT);
    let reserve_size = (config.max_connections / 16).clamp(4, 256);
    let reserve = Arc::new(Semaphore::new(reserve_size));
    let room = Arc::new(Room {
        seats: Arc::new(Semaphore::new(config.max_waiting)),
        slots: slots.clone(),
        reserve: reserve.clone(),
        refusal: refusal_bytes(true),
        closing: refusal.clone(),
        header_timeout: strict_timeout,
    });
    let admit = Arc::new(Admit {
        slots: slots.clone(),
        refusals: Arc::new(Semaphore::new(REFUSAL_BUDGET)),
        refusal,
        reserve: reserve.clone(),
        room,
        stats: stats.clone(),
        builder: Arc::new(http_builder(config.header_read_timeout)),
        strict: Arc::new(http_builder(strict_timeout)),
        header_timeout: config.header_read_timeout,
        strict_timeout,
        pressure_at: (config.max_connections / 2).max(1),
        app,
        stop: stop_rx,
        abort: abort_rx,
        idle_timeout: config.idle_timeout,
    });
    let handshakes = Arc::new(Semaphore::new(HANDSHAKE_BUDGET));

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
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
        let Some(tls) = &config.tls else {
            admit.dispatch(Stream::Plain(stream), peer);
            continue;
        };
        // A TLS connection is admitted once its handshake is done (only then
        // can it be read, or told to wait): a bounded number of handshakes
        // at a time, each within the header timeout (the short one under
        // pressure).
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            stats.refused_total.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let within = if admit.pressured() {
            admit.strict_timeout
        } else {
            admit.header_timeout
        };
        let (acceptor, admit, mut stop) =
            (tls.acceptor().clone(), admit.clone(), stop_tx.subscribe());
        tokio::spawn(async move {
            let shaken = tokio::select! {
                r = tokio::time::timeout(within, acceptor.accept(stream)) => r,
                _ = stop.changed() => return,
            };
            drop(permit);
            match shaken {
                Ok(Ok(tls)) => admit.dispatch(Stream::Tls(Box::new(tls)), peer),
                Ok(Err(e)) => {
                    admit.stats.tls_failed_total.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    admit.stats.tls_failed_total.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake not finished within {within:?}");
                }
            }
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
            "shutdown grace period over: closing the connections still open"
        );
        let _ = abort_tx.send(true);
        // Each connection task ends at its next poll; wait for them (briefly)
        // so that what they hold (admission slots, the registry) is released
        // before this returns.
        let _ = tokio::time::timeout(Duration::from_secs(2), slots.acquire_many(all)).await;
    }
    let reserved = u32::try_from(reserve_size).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(2), reserve.acquire_many(reserved)).await;
    Ok(())
}

/// What deciding a new connection's fate needs, shared by the accept loop
/// and the TLS handshake tasks.
struct Admit {
    /// The cap's slots.
    slots: Arc<Semaphore>,
    /// Closing refusals answered at once.
    refusals: Arc<Semaphore>,
    /// The canned closing `503`.
    refusal: Arc<Vec<u8>>,
    /// The connections kept for pushes and admin requests.
    reserve: Arc<Semaphore>,
    room: Arc<Room>,
    stats: Arc<ConnStats>,
    /// HTTP builders with the configured and the pressured header timeout.
    builder: Arc<auto::Builder<TokioExecutor>>,
    strict: Arc<auto::Builder<TokioExecutor>>,
    header_timeout: Duration,
    strict_timeout: Duration,
    /// Open connections past which the node counts as pressured.
    pressure_at: usize,
    app: Router,
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    idle_timeout: Duration,
}

impl Admit {
    /// What serving one connection needs, with the pressured (`strict`)
    /// or the configured header timeout.
    fn ctx(&self, strict: bool, peer: SocketAddr) -> ConnCtx {
        let (builder, header_timeout) = if strict {
            (&self.strict, self.strict_timeout)
        } else {
            (&self.builder, self.header_timeout)
        };
        ConnCtx {
            app: self.app.clone(),
            builder: builder.clone(),
            header_timeout,
            stats: self.stats.clone(),
            stop: self.stop.clone(),
            abort: self.abort.clone(),
            idle_timeout: self.idle_timeout,
            peer,
        }
    }

    fn pressured(&self) -> bool {
        self.stats.open.load(Ordering::Relaxed) >= self.pressure_at
    }

    /// Serves `stream` on a free slot, seats it in the waiting room, or
    /// refuses it (see the module doc); never waits itself.
    fn dispatch(self: &Arc<Self>, stream: Stream, peer: SocketAddr) {
        let stats = &self.stats;
        // While connections wait, a new one queues behind them (the waiting
        // room gives it a slot at its first request if one is free), so a
        // client reconnecting fast cannot take the slots they wait for.
        let queued =
            stats.waiting.load(Ordering::Relaxed) > 0 && self.room.seats.available_permits() > 0;
        let slot = if queued {
            None
        } else {
            self.slots.clone().try_acquire_owned().ok()
        };
        let Some(slot) = slot else {
            if let Ok(seat) = self.room.seats.clone().try_acquire_owned() {
                let room = self.room.clone();
                tokio::spawn(room.wait(stream, self.ctx(true, peer), seat));
                return;
            }
            let Ok(r) = self.refusals.clone().try_acquire_owned() else {
                stats.refused_total.fetch_add(1, Ordering::Relaxed);
                return;
            };
            // At the cap, read the request head first: a push or an admin
            // request (not a pull) may still be served on one of the few
            // reserved connections, so a flood of pulls that fills the cap
            // cannot starve pushes at the connection level either.
            let bytes = self.refusal.clone();
            let reserve = self.reserve.clone();
            let conn = self.ctx(true, peer);
            tokio::spawn(async move {
                let mut stream = stream;
                let head = read_head(&mut stream, Duration::from_millis(200)).await;
                let admitted = (!head.is_empty() && !is_pull(&head))
                    .then(|| reserve.try_acquire_owned().ok())
                    .flatten();
                drop(r);
                match admitted {
                    Some(reserved) => conn.serve_admitted(stream, head, reserved).await,
                    None => {
                        conn.stats.refused_total.fetch_add(1, Ordering::Relaxed);
                        refuse(&mut stream, &bytes).await;
                    }
                }
            });
            return;
        };
        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        // `open` already counts this connection.
        let pressured = stats.open.load(Ordering::Relaxed) > self.pressure_at;
        let conn = self.ctx(pressured, peer);
        let header_timeout = conn.header_timeout;
        tokio::spawn(async move {
            // hyper-util's auto builder waits for the first bytes (to tell
            // HTTP/1 from HTTP/2) with no timer of its own: a client that
            // connects and says nothing is bounded here instead.
            let (mut stop, mut abort) = (conn.stop.clone(), conn.abort.clone());
            let mut stream = stream;
            let first = tokio::select! {
                r = tokio::time::timeout(header_timeout, stream.first_bytes()) => r.ok().flatten(),
                _ = stop.changed() => None,
                _ = abort.changed() => None,
            };
            let stats = conn.stats.clone();
            if let Some((prefix, h2)) = first {
                conn.run(Prefixed::new(stream, prefix), h2).await;
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

/// A client connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// Waits for the client's first bytes: `None` if it closes first.
    /// Returns what had to be read to see them (TLS), to be read again, and
    /// whether the client speaks HTTP/2 (chosen in the TLS handshake, or
    /// the HTTP/2 preface on a plain connection).
    async fn first_bytes(&mut self) -> Option<(Vec<u8>, bool)> {
        match self {
            Stream::Plain(s) => {
                let mut first = [0u8; 3];
                match s.peek(&mut first).await {
                    Ok(n) if n > 0 => Some((Vec::new(), first[..n] == *b"PRI")),
                    _ => None,
                }
            }
            Stream::Tls(s) => {
                let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                let mut buf = vec![0u8; 4096];
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        buf.truncate(n);
                        Some((buf, h2))
                    }
                    _ => None,
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The waiting room: connections past the cap, each answered `503` per
/// request until a slot is free (see the module doc).
struct Room {
    /// One per waiting connection.
    seats: Arc<Semaphore>,
    /// The cap's slots, taken by a waiting connection when one is free.
    slots: Arc<Semaphore>,
    /// The connections kept for pushes and admin requests.
    reserve: Arc<Semaphore>,
    /// The canned `503`s: keeping the connection, and closing it.
    refusal: Vec<u8>,
    closing: Arc<Vec<u8>>,
    /// How long a waiting connection may take to send a request head.
    header_timeout: Duration,
}

impl Room {
    /// Keeps `stream` in the waiting room: reads each request head, serves
    /// the connection from there on if a slot (or, for a push, a reserved
    /// one) is free, and otherwise answers the canned `503` and reads
    /// nothing more for [`WAIT_PACE`]. Leaves (closing the connection) when
    /// the client is silent past the header timeout or cannot finish a
    /// request head within it, sends something that cannot be answered and
    /// kept (a body, HTTP/1.0, HTTP/2), or the node shuts down.
    async fn wait(self: Arc<Self>, mut stream: Stream, conn: ConnCtx, seat: OwnedSemaphorePermit) {
        let stats = conn.stats.clone();
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        let mut stop = conn.stop.clone();
        let leave = |stats: &ConnStats| stats.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut answered_before = false;
        loop {
            let head = tokio::select! {
                head = read_head(&mut stream, self.header_timeout) => head,
                _ = stop.changed() => Vec::new(),
            };
            if head.is_empty() || *stop.borrow() {
                // A connection that never asked anything still gets the
                // refusal (as past the waiting room); one that was answered
                // and went quiet is closed like any idle keep-alive one.
                if !answered_before {
                    stats.refused_total.fetch_add(1, Ordering::Relaxed);
                    refuse(&mut stream, &self.closing).await;
                }
                break;
            }
            // A client that could not send a whole request head within the
            // header timeout (a slow-header attack) gets no slot: it is
            // refused and closed, so it cannot take the slots the clients
            // waiting with real requests are owed.
            if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                stats.refused_total.fetch_add(1, Ordering::Relaxed);
                refuse(&mut stream, &self.closing).await;
                break;
            }
            // A push or an admin request may take one of the reserved
            // connections, as at the cap.
            let reserved = if is_pull(&head) {
                None
            } else {
                self.reserve.clone().try_acquire_owned().ok()
            };
            let slot = reserved.or_else(|| self.slots.clone().try_acquire_owned().ok());
            if let Some(slot) = slot {
                leave(&stats);
                drop(seat);
                stats.promoted_total.fetch_add(1, Ordering::Relaxed);
                conn.serve_admitted(stream, head, slot).await;
                return;
            }
            stats.refused_total.fetch_add(1, Ordering::Relaxed);
            if !can_stay(&head) {
                refuse(&mut stream, &self.closing).await;
                break;
            }
            let answered =
                tokio::time::timeout(Duration::from_secs(1), stream.write_all(&self.refusal));
            if !matches!(answered.await, Ok(Ok(()))) {
                break;
            }
            answered_before = true;
            tokio::select! {
                _ = tokio::time::sleep(WAIT_PACE) => {}
                _ = stop.changed() => break,
            }
        }
        leave(&stats);
        drop(seat);
    }
}

/// Whether a refused request leaves its connection fit to keep: a whole
/// HTTP/1.1 request head with nothing after it (no body, nothing
/// pipelined) that does not ask to close.
fn can_stay(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return false,
    }
    if req.version != Some(1) {
        return false;
    }
    req.headers.iter().all(|h| {
        let v = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("content-length") {
            v == b"0"
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            false
        } else if h.name.eq_ignore_ascii_case("connection") {
            !v.eq_ignore_ascii_case(b"close")
        } else {
            true
        }
    })
}

/// What serving one connection needs, cloned out of the accept loop (`ctx`
/// there).
struct ConnCtx {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// The header timeout `builder` applies to HTTP/1.1; the first request
    /// of any connection must arrive within it.
    header_timeout: Duration,
    stats: Arc<ConnStats>,
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    idle_timeout: Duration,
    /// The client's address, handed to every request as [`ClientAddr`].
    peer: SocketAddr,
}

/// The address of the client a request came from (a request extension):
/// failed logins are counted per client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ConnCtx {
    /// Serves a connection admitted after its request head was read (into
    /// `head`): counted as accepted and open while it lasts, `slot` (a
    /// cap's or a reserved one) held until it ends.
    async fn serve_admitted(self, stream: Stream, head: Vec<u8>, slot: OwnedSemaphorePermit) {
        let stats = self.stats.clone();
        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        // The head was read: an HTTP/1.1 request (HTTP/2 cannot be kept).
        self.run(Prefixed::new(stream, head), false).await;
        stats.open.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
    }

    /// Serves HTTP on `stream` until the client goes, the connection idles
    /// out, or shutdown asks it to finish (or, past the grace, to stop).
    ///
    /// HTTP/1.1's header timeout is hyper's; an HTTP/2 connection (`h2`)
    /// has none there, so here it must deliver a whole request within the
    /// same time or be closed: a client cannot hold a slot by opening
    /// HTTP/2 and never completing a request's headers.
    async fn run(mut self, stream: Prefixed, h2: bool) {
        let idle_timeout = self.idle_timeout;
        let activity = Arc::new(AtomicU64::new(0));
        let clock = tokio::time::Instant::now();
        let io = TokioIo::new(Tracked::new(stream, activity.clone(), clock, h2));
        let peer = ClientAddr(self.peer);
        let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = requested.clone();
        let app = self.app.map_request(move |mut req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(peer);
            req
        });
        let first_request_by = tokio::time::sleep(self.header_timeout);
        tokio::pin!(first_request_by);
        let mut first_checked = !h2;
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, TowerToHyperService::new(app));
        tokio::pin!(conn);
        let mut closing = false;
        // While connections wait for a slot, one idle between requests for
        // the shorter pressured timeout is asked to close (gracefully: a
        // request still being answered finishes first), so it does not keep
        // its slot from them. The check comes at least that often.
        let pressured_idle = idle_timeout.min(PRESSURED_IDLE_TIMEOUT);
        loop {
            let idle_for = Duration::from_millis(
                (clock.elapsed().as_millis() as u64)
                    .saturating_sub(activity.load(Ordering::Relaxed)),
            );
            let check_in = idle_timeout
                .saturating_sub(idle_for)
                .min(pressured_idle)
                .max(Duration::from_millis(100));
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = &mut first_request_by, if !first_checked => {
                    first_checked = true;
                    if !requested.load(Ordering::Relaxed) {
                        self.stats.header_timeouts_total.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                _ = tokio::time::sleep(check_in) => {
                    let idle = (clock.elapsed().as_millis() as u64)
                        .saturating_sub(activity.load(Ordering::Relaxed));
                    let waiters = self.stats.waiting.load(Ordering::Relaxed) > 0;
                    if !closing && waiters && idle >= pressured_idle.as_millis() as u64 {
                        self.stats.idle_closed_total.fetch_add(1, Ordering::Relaxed);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
                    } else if idle >= idle_timeout.as_millis() as u64 {
                        // No byte moved either way for the whole idle
                        // timeout. Between requests a graceful close does;
                        // in the middle of one (a client that stopped
                        // reading or sending) nothing graceful can finish,
                        // so the connection is dropped and its slots freed.
                        self.stats.idle_closed_total.fetch_add(1, Ordering::Relaxed);
                        if closing {
                            break;
                        }
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                }
                _ = self.stop.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = self.abort.changed() => break,
            }
        }
    }
}

/// A TCP stream whose first reads return bytes already taken from it (a
/// request head read to decide whether to serve the connection).
struct Prefixed {
    stream: Stream,
    prefix: Vec<u8>,
    /// How much of `prefix` was handed out.
    pos: usize,
}

impl Prefixed {
    fn new(stream: Stream, prefix: Vec<u8>) -> Prefixed {
        Prefixed {
            stream,
            prefix,
            pos: 0,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Reads what a client sends first, up to the end of its request head (at
/// most 16 KiB, at most `within`): an HTTP client treats an answer that
/// arrives before it has sent its request as a protocol error, not as the
/// refusal it is, and the head says whether the request is a pull.
async fn read_head(stream: &mut Stream, within: Duration) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024);
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    head
}

/// Whether a request head is a pull (a blob or manifest `GET`/`HEAD`):
/// those are what floods are made of, and they are refused at the cap.
fn is_pull(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return false;
    };
    let contains = |needle: &[u8]| path.windows(needle.len()).any(|w| w == needle);
    // A blob HEAD is how pushers ask "do you have this layer?" (pulls GET
    // blobs), so it counts as push work, as in `classify`.
    path.starts_with(b"/v2/")
        && match method {
            b"GET" => {
                contains(b"/manifests/") || (contains(b"/blobs/") && !contains(b"/blobs/uploads"))
            }
            b"HEAD" => contains(b"/manifests/"),
            _ => false,
        }
}

/// Answers a refused connection (its head already read) with the canned
/// `503`, then closes it gently: the rest of what the client sends is
/// drained for a moment, so the close is a FIN the client can read the
/// answer before, not a reset that destroys it. Bounded in time and bytes.
async fn refuse(stream: &mut Stream, answer: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        drain(stream, 256 * 1024).await;
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Reads and discards up to `budget` bytes, until the peer closes.
async fn drain(stream: &mut Stream, budget: usize) {
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < budget {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// After a response, how long a closing connection keeps reading (and
/// discarding) what the client still sends, and how much of it.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// A connection that remembers when bytes last moved (milliseconds since
/// `clock`), for the idle timeout, and closes with a lingering drain.
///
/// When hyper closes a connection whose request body it did not read (a
/// refusal or an error answered before the body), closing the socket with
/// unread bytes would make the kernel send a reset, and the client would
/// lose the answer it has not read yet. So shutdown sends FIN, then keeps
/// reading and discarding for a bounded time and byte count.
///
/// An HTTP/2 connection's writes are also coalesced (see [`Coalesce`]).
struct Tracked {
    inner: Prefixed,
    activity: Arc<AtomicU64>,
    clock: tokio::time::Instant,
    /// Set once the write side is shut: the drain's deadline and budget.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    /// HTTP/2 only: the writes held for the next flush.
    coalesce: Option<Coalesce>,
}

/// Writes held back until a flush, and that flush put off by one turn of
/// the scheduler.
///
/// HTTP/2 answers each stream from a task of its own, and the connection
/// flushes as soon as the first answer is ready: with a few streams in
/// flight that is one TLS record and one system call per response, most of
/// the CPU of a small answer. Held here, and with the first flush after a
/// write deferred once (the connection task wakes itself and goes to the
/// back of the run queue, behind the stream tasks just spawned), the
/// answers ready by then leave together. Never holds more than
/// [`COALESCE_MAX`] bytes, nor a flush longer than one turn.
struct Coalesce {
    buf: Vec<u8>,
    /// How much of `buf` has already gone to the connection.
    sent: usize,
    /// The flush asked for was put off once already.
    deferred: bool,
}

/// The most an HTTP/2 connection holds back before writing.
const COALESCE_MAX: usize = 64 * 1024;

impl Tracked {
    fn new(
        inner: Prefixed,
        activity: Arc<AtomicU64>,
        clock: tokio::time::Instant,
        coalesce: bool,
    ) -> Tracked {
        Tracked {
            inner,
            activity,
            clock,
            linger: None,
            coalesce: coalesce.then(|| Coalesce {
                buf: Vec::with_capacity(16 * 1024),
                sent: 0,
                deferred: false,
            }),
        }
    }

    fn touch(&self) {
        self.activity
            .store(self.clock.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Writes out what is held, if anything.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(c) = self.coalesce.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while c.sent < c.buf.len() {
            match std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &c.buf[c.sent..])) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => c.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
            self.activity
                .store(self.clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        c.buf.clear();
        c.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Holds `bufs` (as much as fits) for the next flush; `None` when
    /// this connection does not coalesce or the bytes should go straight
    /// through (nothing held, and more than the holding limit).
    fn poll_hold(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Option<Poll<std::io::Result<usize>>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let c = self.coalesce.as_ref()?;
        if c.buf.is_empty() && total >= COALESCE_MAX {
            return None;
        }
        if c.buf.len() >= COALESCE_MAX {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        let c = self.coalesce.as_mut()?;
        let mut room = COALESCE_MAX - c.buf.len();
        let mut held = 0;
        for b in bufs {
            let n = b.len().min(room);
            c.buf.extend_from_slice(&b[..n]);
            held += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        Some(Poll::Ready(Ok(held)))
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
        if let Some(r) = this.poll_hold(cx, &[std::io::IoSlice::new(buf)]) {
            return r;
        }
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
        if let Some(r) = this.poll_hold(cx, bufs) {
            return r;
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.coalesce.is_some() || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(c) = this.coalesce.as_mut() {
            if c.sent < c.buf.len() && !c.deferred {
                // Once: behind the tasks already woken, whose answers may
                // join this write.
                c.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            std::task::ready!(this.poll_drain(cx))?;
            if let Some(c) = this.coalesce.as_mut() {
                c.deferred = false;
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            std::task::ready!(this.poll_drain(cx))?;
            if let Err(e) = std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx)) {
                return Poll::Ready(Err(e));
            }
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), LINGER_BYTES));
        }
        let Some((deadline, budget)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut sink = [0u8; 8192];
        loop {
            if *budget == 0 || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => *budget = budget.saturating_sub(buf.filled().len()),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_pull, Prefixed, Stream, Tracked, COALESCE_MAX};
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// A served end (wrapped, `coalesce` as asked) and the client's end.
    async fn pair(coalesce: bool) -> (Tracked, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap());
        let (served, client) = tokio::join!(l.accept(), client);
        let served = Prefixed::new(Stream::Plain(served.unwrap().0), Vec::new());
        let clock = tokio::time::Instant::now();
        (
            Tracked::new(served, Arc::new(AtomicU64::new(0)), clock, coalesce),
            client.unwrap(),
        )
    }

    /// What the client can read within 200 ms.
    async fn readable(client: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut got = vec![0u8; 4 * COALESCE_MAX];
        match tokio::time::timeout(std::time::Duration::from_millis(200), client.read(&mut got))
            .await
        {
            Ok(Ok(n)) => got[..n].to_vec(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn http2_writes_wait_for_a_flush_put_off_once() {
        let (mut served, mut client) = pair(true).await;
        served.write_all(b"first answer;").await.unwrap();
        served.write_all(b"second answer").await.unwrap();
        assert!(readable(&mut client).await.is_empty(), "held until a flush");
        // The first flush asks to be polled again (and wakes itself)...
        assert_eq!(
            flush_counting_polls(&mut served).await,
            2,
            "the flush is put off once, not more"
        );
        // ... and the second sends everything held, together.
        assert_eq!(readable(&mut client).await, b"first answer;second answer");
        // With nothing held, a flush is not put off.
        assert_eq!(flush_counting_polls(&mut served).await, 1);
    }

    /// Flushes `served`, returning how many polls the flush took.
    async fn flush_counting_polls(served: &mut Tracked) -> usize {
        let mut polls = 0;
        poll_fn(|cx| {
            polls += 1;
            Pin::new(&mut *served).poll_flush(cx)
        })
        .await
        .unwrap();
        polls
    }

    #[tokio::test]
    async fn http2_holds_at_most_its_limit_and_large_writes_go_straight_through() {
        let (mut served, mut client) = pair(true).await;
        // A write larger than the limit, with nothing held, is not held.
        let big = vec![7u8; COALESCE_MAX + 1];
        let n = poll_fn(|cx| Pin::new(&mut served).poll_write(cx, &big))
            .await
            .unwrap();
        assert!(n > 0);
        let mut got = 0;
        while got < n {
            got += readable(&mut client).await.len();
        }
        assert_eq!(got, n, "sent without a flush");
        // Small writes fill the hold up to its limit; the next one sends
        // what was held first.
        let chunk = vec![1u8; 1000];
        let mut held = 0;
        while held < COALESCE_MAX {
            held += served.write(&chunk).await.unwrap();
        }
        assert_eq!(held, COALESCE_MAX, "the hold stops at its limit");
        assert!(readable(&mut client).await.is_empty());
        served.write_all(&chunk).await.unwrap();
        let mut got = 0;
        while got < COALESCE_MAX {
            let n = readable(&mut client).await.len();
            assert!(n > 0, "the full hold was sent before more was taken");
            got += n;
        }
        assert_eq!(got, COALESCE_MAX);
        served.flush().await.unwrap();
        assert_eq!(readable(&mut client).await.len(), chunk.len());
    }

    #[tokio::test]
    async fn http1_writes_are_not_held() {
        let (mut served, mut client) = pair(false).await;
        served.write_all(b"an answer").await.unwrap();
        assert_eq!(readable(&mut client).await, b"an answer");
    }

    #[tokio::test]
    async fn a_shutdown_sends_what_is_held() {
        let (mut served, mut client) = pair(true).await;
        served.write_all(b"last words").await.unwrap();
        let shut = tokio::spawn(async move { served.shutdown().await });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        drop(client);
        shut.await.unwrap().unwrap();
    }

    #[test]
    fn pulls_are_reads_of_manifests_and_blob_gets() {
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let head = |s: String| is_pull(format!("{s} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert!(head("GET /v2/acme/app/manifests/1".into()));
        assert!(head("HEAD /v2/acme/app/manifests/1".into()));
        assert!(head(format!("GET /v2/acme/app/blobs/{d}")));
        // Pushers ask for layers with HEAD; uploads are pushes whatever
        // the method; anything else is not a pull either.
        assert!(!head(format!("HEAD /v2/acme/app/blobs/{d}")));
        assert!(!head("GET /v2/acme/app/blobs/uploads/abc".into()));
        assert!(!head("PUT /v2/acme/app/manifests/1".into()));
        assert!(!head("GET /v2/".into()));
        assert!(!head("GET /metrics".into()));
        assert!(!is_pull(b""));
    }
}
