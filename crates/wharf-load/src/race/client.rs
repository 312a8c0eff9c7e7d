//! One pusher's HTTP/1.1 client: one keep-alive connection at a time,
//! reopened when the server closes it, every exchange bounded by a deadline.
//!
//! A request is resent on a fresh connection only when hyper hands it back
//! unsent (the kept-alive connection had closed under it); once any byte of
//! it may have reached the server it is never replayed: the caller sees the
//! error and counts it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST,
};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A whole answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// What `Retry-After: <seconds>` asks for (zero without one).
    pub fn retry_after(&self) -> Duration {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs)
    }
}

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where requests go and as whom.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The `Host` sent.
    pub authority: String,
    /// Sent as `Authorization` with every request (HTTP Basic), if the
    /// registry asks for credentials.
    pub auth: Option<HeaderValue>,
}

pub struct Client {
    addr: SocketAddr,
    authority: String,
    deadline: Duration,
    auth: Option<HeaderValue>,
    conn: Option<Conn>,
    /// Connections opened so far.
    pub connections: u64,
}

impl Client {
    pub fn new(to: &Endpoint, deadline: Duration) -> Client {
        Client {
            addr: to.addr,
            authority: to.authority.clone(),
            deadline,
            auth: to.auth.clone(),
            conn: None,
            connections: 0,
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        self.connections += 1;
        self.conn = Some(Conn { sender, task });
        Ok(())
    }

    /// Sends one request and reads the whole answer, within the deadline.
    /// `path` is the path and query (`/v2/...`).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Resp, String> {
        match tokio::time::timeout(
            self.deadline,
            self.exchange(method.clone(), path, headers, body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(format!(
                    "{method} {path}: no whole answer within {} ms",
                    self.deadline.as_millis()
                ))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Resp, String> {
        let len = body.len();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.authority.as_str());
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if len > 0 || method == Method::PUT || method == Method::POST || method == Method::PATCH {
            req = req.header(CONTENT_LENGTH, len);
        }
        let mut req = req
            .body(Full::new(body))
            .map_err(|e| format!("{method} {path}: bad request: {e}"))?;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            if self.conn.is_none() {
                self.connect()
                    .await
                    .map_err(|e| format!("{method} {path}: {e}"))?;
            }
            let c = self.conn.as_mut().expect("connected above");
            if c.sender.ready().await.is_err() {
                // Closed while idle: nothing was sent; open another.
                self.conn = None;
                if attempt < 3 {
                    continue;
                }
                return Err(format!("{method} {path}: connection closed before sending"));
            }
            match c.sender.try_send_request(req).await {
                Ok(r) => break r,
                Err(mut e) => {
                    self.conn = None;
                    match e.take_message() {
                        Some(back) if attempt < 3 => req = back,
                        _ => return Err(format!("{method} {path}: no response: {}", e.error())),
                    }
                }
            }
        };
        let status = resp.status().as_u16();
        let close = resp
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (parts, body) = resp.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conn = None;
                return Err(format!("{method} {path}: body cut short: {e}"));
            }
        };
        if close {
            self.conn = None;
        }
        Ok(Resp {
            status,
            headers: parts.headers,
            body,
        })
    }
}
