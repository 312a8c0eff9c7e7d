//! Body wrappers: counting bytes for metrics, holding an admission slot
//! until a response has been fully sent, and refusing request bodies that
//! trickle in slower than a minimum rate.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use wharf_admission::Permit;
use wharf_telemetry::RequestMetrics;

use crate::tenant_traffic::TenantCounters;

/// Which counter a [`Counted`] body adds to.
#[derive(Clone, Copy)]
pub enum Direction {
    In,
    Out,
}

/// A body that counts its data bytes and keeps an admission permit (if
/// any) until it is finished or dropped: a pull holds its slot for as long
/// as its bytes stream.
pub struct Counted {
    inner: Body,
    metrics: Arc<RequestMetrics>,
    /// The request's tenant's counters, which count the bytes too.
    tenant: Option<Arc<TenantCounters>>,
    direction: Direction,
    _permit: Option<Permit>,
}

impl Counted {
    pub fn wrap(
        inner: Body,
        metrics: Arc<RequestMetrics>,
        tenant: Option<Arc<TenantCounters>>,
        direction: Direction,
        permit: Option<Permit>,
    ) -> Body {
        Body::new(Counted {
            inner,
            metrics,
            tenant,
            direction,
            _permit: permit,
        })
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                let counter = match self.direction {
                    Direction::In => &self.metrics.bytes_in,
                    Direction::Out => &self.metrics.bytes_out,
                };
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(t) = &self.tenant {
                    let counter = match self.direction {
                        Direction::In => &t.bytes_in,
                        Direction::Out => &t.bytes_out,
                    };
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
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

/// The slowest an upload body may arrive.
#[derive(Clone, Copy, Debug)]
pub struct MinRate {
    /// Bytes per second required on average, after the grace period.
    pub bytes_per_sec: u64,
    /// Time allowed before the average is enforced, and the longest
    /// silence between two chunks.
    pub grace: Duration,
}

impl Default for MinRate {
    fn default() -> Self {
        MinRate {
            bytes_per_sec: 16 * 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// A request body stream that fails with `TimedOut` once it falls below its
/// minimum rate: a client trickling bytes cannot hold a slot for ever. The
/// bytes received so far are kept by the upload, which stays resumable.
pub struct RateChecked<S> {
    inner: S,
    rate: MinRate,
    start: tokio::time::Instant,
    received: u64,
    last_chunk: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<S> RateChecked<S> {
    pub fn new(inner: S, rate: MinRate) -> Self {
        let now = tokio::time::Instant::now();
        RateChecked {
            inner,
            rate,
            start: now,
            received: 0,
            last_chunk: now,
            timer: Box::pin(tokio::time::sleep_until(now + rate.grace)),
        }
    }

    /// When the next byte must have arrived by.
    fn deadline(&self) -> tokio::time::Instant {
        let by_rate = self.start
            + self.rate.grace
            + Duration::from_secs_f64(self.received as f64 / self.rate.bytes_per_sec.max(1) as f64);
        by_rate.min(self.last_chunk + self.rate.grace)
    }
}

impl<S> Stream for RateChecked<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                self.last_chunk = tokio::time::Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => {
                let deadline = self.deadline();
                self.timer.as_mut().reset(deadline);
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "request body slower than {} bytes/s (received {} bytes)",
                            self.rate.bytes_per_sec, self.received
                        ),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_grace_period() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let rate = MinRate {
            bytes_per_sec: 1000,
            grace: Duration::from_secs(5),
        };
        let mut checked = RateChecked::new(stream, rate);
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert_eq!(checked.next().await.unwrap().unwrap().as_ref(), b"abc");
        let start = tokio::time::Instant::now();
        let err = checked.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(start.elapsed() <= Duration::from_secs(5));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let rate = MinRate {
            bytes_per_sec: 1000,
            grace: Duration::from_secs(2),
        };
        let mut checked = RateChecked::new(tokio_stream_from(rx), rate);
        let sender = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tx.send(Ok(Bytes::from(vec![0u8; 1000]))).await.unwrap();
            }
        });
        let mut total = 0;
        while let Some(chunk) = checked.next().await {
            total += chunk.unwrap().len();
        }
        assert_eq!(total, 20_000);
        sender.await.unwrap();
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
