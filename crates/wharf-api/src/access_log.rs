//! The access log: one event per request on the registry port, at `INFO`
//! on its own target ([`TARGET`], `wharf::access`), written when the
//! response is over (its last byte handed to the connection, or the client
//! gone), so that the bytes it counts are the bytes actually sent.
//!
//! Owns: the request id (a client's or proxy's `X-Request-Id` when it is
//! well formed, otherwise one made here), which every response carries back
//! and handlers find as [`RequestId`] among the request's extensions; the
//! [`AccessLogLayer`] tower layer that writes the line; the redaction of
//! credentials from the query string it logs.
//!
//! Must never: log a credential (a password, a token, a presigned
//! signature), read or buffer a body (it only counts the bytes passing
//! through), or decide anything about the request. The tenant and user it
//! logs come from the router, which hands them over as an [`AccessNote`]
//! in the response's extensions; this layer does not parse paths or
//! credentials itself.
//!
//! What it costs: when the target is disabled (`--access-log off`, or a
//! `--log` filter that leaves out `wharf::access`) only the request id is
//! made and returned. Otherwise each request costs a few small allocations
//! (the path, the log record, a body wrapper) and the formatting of one
//! event; the `wharf` binary queues the formatted line to a writer thread
//! of its own, so the request never waits on the write (docs/benchmarks.md,
//! "Access log").

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::server::ClientAddr;

/// The tracing target of access log events (`--log wharf::access=off,info`
/// keeps everything else).
pub const TARGET: &str = "wharf::access";

/// The header carrying the request id, in both directions.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one is replaced.
const MAX_ID_LEN: usize = 128;

/// The request's id, among the request's extensions (for log lines of
/// handlers that want to name the request).
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

/// What only the router knows about a request, handed to the access log
/// in the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct AccessNote {
    /// The tenant (namespace) of the repository the request named.
    pub tenant: Option<String>,
    /// The verified user or robot; `None` for anonymous access (or with
    /// authentication off).
    pub user: Option<String>,
}

/// Makes request ids: a random per-process prefix and a counter, so ids
/// are unique across restarts and nodes without coordination.
struct Ids {
    prefix: u64,
    next: AtomicU64,
}

impl Ids {
    fn new() -> Ids {
        use std::hash::{BuildHasher as _, Hasher as _};
        // RandomState is seeded from the OS's randomness; no new dependency
        // for 48 random bits.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        Ids {
            prefix: h.finish() & 0xffff_ffff_ffff,
            next: AtomicU64::new(1),
        }
    }

    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut s = String::with_capacity(24);
        let _ = write!(s, "{:012x}-{n:x}", self.prefix);
        HeaderValue::try_from(s).expect("hex digits and a dash")
    }
}

/// A request id a client or proxy sent, if it is one worth keeping: 1 to
/// [`MAX_ID_LEN`] letters, digits, `-`, `_`, `.`, `:` (nothing that could
/// forge a log line or field).
fn given_id(value: &HeaderValue) -> Option<HeaderValue> {
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'));
    ok.then(|| value.clone())
}

/// The tower layer that writes the access log (see the module doc).
#[derive(Clone)]
pub struct AccessLogLayer {
    ids: Arc<Ids>,
    /// Write log lines; `false` still gives every response its request id.
    enabled: bool,
}

impl AccessLogLayer {
    /// A layer that logs every request (subject to the log filter).
    pub fn new() -> AccessLogLayer {
        AccessLogLayer {
            ids: Arc::new(Ids::new()),
            enabled: true,
        }
    }

    /// A layer that only gives requests their ids (`--access-log off`).
    pub fn ids_only() -> AccessLogLayer {
        AccessLogLayer {
            enabled: false,
            ..AccessLogLayer::new()
        }
    }
}

impl Default for AccessLogLayer {
    fn default() -> Self {
        AccessLogLayer::new()
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            ids: self.ids.clone(),
            enabled: self.enabled,
        }
    }
}

/// The service [`AccessLogLayer`] wraps around the router.
#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    ids: Arc<Ids>,
    enabled: bool,
}

impl<S> tower::Service<Request<Body>> for AccessLog<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let id = req
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(given_id)
            .unwrap_or_else(|| self.ids.make());
        req.extensions_mut().insert(RequestId(id.clone()));
        // Checked per request: the filter is the subscriber's, and the
        // check is a cached callsite interest, not a filter evaluation.
        let logged = self.enabled && tracing::enabled!(target: TARGET, tracing::Level::INFO);
        if !logged {
            let fut = self.inner.call(req);
            return Box::pin(async move {
                let mut resp = fut.await?;
                resp.headers_mut().insert(REQUEST_ID_HEADER.clone(), id);
                Ok(resp)
            });
        }
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let method = req.method().clone();
        let path = redacted(req.uri());
        // Only a request with a body gets a counting wrapper.
        let received = (!req.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
        let req = match &received {
            Some(counter) => {
                let counter = counter.clone();
                req.map(|inner| {
                    Body::new(CountIn {
                        inner,
                        received: counter,
                    })
                })
            }
            None => req,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let note = resp.extensions_mut().remove::<AccessNote>();
            let record = Record {
                started,
                id: id.clone(),
                client,
                method,
                path,
                status: resp.status().as_u16(),
                note: note.unwrap_or_default(),
                received,
            };
            // A streamed body's length is in its header, not its hint.
            let declared = resp
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            resp.headers_mut().insert(REQUEST_ID_HEADER.clone(), id);
            Ok(resp.map(|inner| {
                Body::new(Logged {
                    length: inner.size_hint().exact().or(declared),
                    inner,
                    record: Some(record),
                    sent: 0,
                    ended: false,
                })
            }))
        })
    }
}

/// The path and query to log: each query parameter whose name suggests a
/// credential has its value replaced by `REDACTED` (the name is kept, so
/// the line still says what was sent). Names are compared without case.
pub fn redacted(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => {
                out.push_str(name);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Query parameter names that carry credentials: passwords, tokens
/// (`access_token`, `refresh_token`, `token`), secrets, keys, and the
/// signatures and credentials of presigned URLs (`X-Amz-Signature`,
/// `X-Amz-Credential`).
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "token",
        "secret",
        "key",
        "signature",
        "credential",
        "auth",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// What the line says, gathered as the request goes.
struct Record {
    started: Instant,
    id: HeaderValue,
    client: Option<SocketAddr>,
    method: Method,
    path: String,
    status: u16,
    note: AccessNote,
    /// The request body's bytes so far, when it had a body.
    received: Option<Arc<AtomicU64>>,
}

impl Record {
    fn write(self, sent: u64, completed: bool) {
        let client = match self.client {
            Some(c) => c.ip().to_string(),
            None => "-".to_string(),
        };
        let received = self
            .received
            .as_ref()
            .map_or(0, |r| r.load(Ordering::Relaxed));
        let duration_ms = (self.started.elapsed().as_micros() as f64) / 1000.0;
        tracing::info!(
            target: TARGET,
            request_id = self.id.to_str().unwrap_or("-"),
            client = %client,
            tenant = self.note.tenant.as_deref().unwrap_or("-"),
            user = self.note.user.as_deref().unwrap_or("anonymous"),
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes_sent = sent,
            bytes_received = received,
            duration_ms,
            completed,
            "request"
        );
    }
}

/// A response body that counts what it hands to the connection and writes
/// the access log line when it is dropped: after its last frame, or
/// earlier when the client went away (`completed=false`).
struct Logged {
    inner: Body,
    record: Option<Record>,
    sent: u64,
    /// The body said it had no more frames (or failed).
    ended: bool,
    /// The body's length, when known: hyper stops polling a body once it
    /// has sent that many bytes, without asking for the end.
    length: Option<u64>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Some(Err(_)) | None => self.ended = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            // A HEAD answer's body is never sent; hyper drops it as is.
            let completed = self.ended
                || self.inner.is_end_stream()
                || self.length.is_some_and(|n| self.sent >= n)
                || record.method == Method::HEAD;
            record.write(self.sent, completed);
        }
    }
}

/// A request body that counts the bytes read from it.
struct CountIn {
    inner: Body,
    received: Arc<AtomicU64>,
}

impl HttpBody for CountIn {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                self.received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_query_are_redacted_and_the_rest_kept() {
        let uri: Uri = "/auth/token?account=alice&password=hunter2&scope=repository:a/b:pull&refresh_token=xyz&X-Amz-Signature=abc&n=10"
            .parse()
            .unwrap();
        assert_eq!(
            redacted(&uri),
            "/auth/token?account=alice&password=REDACTED&scope=repository:a/b:pull&refresh_token=REDACTED&X-Amz-Signature=REDACTED&n=10"
        );
        let plain: Uri = "/v2/acme/app/tags/list".parse().unwrap();
        assert_eq!(redacted(&plain), "/v2/acme/app/tags/list");
        let flag: Uri = "/v2/x/blobs/uploads/?mount&from=a/b".parse().unwrap();
        assert_eq!(redacted(&flag), "/v2/x/blobs/uploads/?mount&from=a/b");
    }

    #[test]
    fn request_ids_are_kept_only_when_harmless() {
        let ok = HeaderValue::from_static("req-1.a_b:c");
        assert_eq!(given_id(&ok), Some(ok.clone()));
        for bad in ["", "a b", "a\"b", "x=1"] {
            assert_eq!(given_id(&HeaderValue::from_static(bad)), None, "{bad:?}");
        }
        let long = HeaderValue::try_from("a".repeat(MAX_ID_LEN + 1)).unwrap();
        assert_eq!(given_id(&long), None);
        let ids = Ids::new();
        let (a, b) = (ids.make(), ids.make());
        assert_ne!(a, b);
        assert!(given_id(&a).is_some(), "our own ids pass our own check");
    }
}
