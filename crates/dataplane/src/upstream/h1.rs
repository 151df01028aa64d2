//! HTTP/1.1 keep-alive connections of one endpoint.
//!
//! Each endpoint keeps a stack of idle connections. A request takes the most recently used one
//! (its socket and buffers are the warmest), or dials a new one when none is idle, and the
//! connection comes back to the stack when the response that used it is done: its
//! [`PooledConn`] rides in the response body's guards and returns it on drop. Nothing is spawned
//! per request, and the future of a send is small: a connection is dialled in place, not raced
//! against a checkout.
//!
//! A connection the upstream closed while it sat idle is noticed before the request is written
//! (the request comes back untouched and goes on the next connection), so a keep-alive timeout
//! on the upstream's side never fails a request. When no connection can be opened at all, the
//! request comes back untouched in the [`SendError`], body unread, for the caller to send
//! elsewhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::{ConnTimeouts, SendError, UpstreamBody, UpstreamError, dial};
use crate::tls::ClientTls;

/// How long a connection may sit idle before it is closed instead of reused. Below the common
/// upstream keep-alive timeouts (nginx: 75 s), so the upstream rarely closes one first.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint; more are closed as their responses end.
const MAX_IDLE: usize = 1024;

/// The HTTP/1.1 connections of one endpoint (one setting of timeouts and TLS).
#[derive(Debug)]
pub struct H1Endpoint {
    addr: SocketAddr,
    timeouts: ConnTimeouts,
    tls: Option<Arc<ClientTls>>,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// A connection lent to one request. Dropping it hands the connection back to its endpoint; a
/// connection whose response was abandoned half-read is closed by hyper and skipped later.
#[derive(Debug)]
pub struct PooledConn {
    sender: Option<http1::SendRequest<UpstreamBody>>,
    pool: Arc<H1Endpoint>,
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender);
        }
    }
}

impl H1Endpoint {
    pub fn new(addr: SocketAddr, timeouts: ConnTimeouts, tls: Option<Arc<ClientTls>>) -> Self {
        Self {
            addr,
            timeouts,
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends a request on an idle connection, or on a new one. The response's body must be read
    /// (or dropped) before the returned connection is dropped for the connection to be reused.
    /// A request that was never written (no connection could be opened) comes back in the error.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, PooledConn), SendError> {
        // hyper writes the URI as it is: an HTTP/1.1 request to an endpoint is origin-form.
        if req.uri().scheme().is_some() {
            let path = req.uri().path_and_query().cloned();
            *req.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lend(sender))),
                Err(mut e) => match e.take_message() {
                    // Closed before the request was written: the next connection takes it.
                    Some(unsent) => req = unsent,
                    None => return Err(self.reset(e.into_error()).into()),
                },
            }
        }
        // Boxed: dialling (TCP, TLS, handshake) is the cold path; the send future stays small.
        let mut sender = match Box::pin(self.connect()).await {
            Ok(sender) => sender,
            Err(e) => return Err(SendError::unsent(e, req)),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.lend(sender))),
            Err(mut e) => {
                let unsent = e.take_message().map(Box::new);
                Err(SendError {
                    error: self.reset(e.into_error()),
                    unsent,
                })
            }
        }
    }

    /// Idle connections held (for tests).
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lend(self: &Arc<Self>, sender: http1::SendRequest<UpstreamBody>) -> PooledConn {
        PooledConn {
            sender: Some(sender),
            pool: self.clone(),
        }
    }

    fn reset(&self, e: hyper::Error) -> UpstreamError {
        UpstreamError::from_exchange(self.addr, e)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection still open; older ones past the idle timeout are
    /// closed on the way.
    fn take_idle(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.lock();
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            if now.duration_since(c.since) >= IDLE_TIMEOUT {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            if !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    fn put(&self, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            return;
        }
        let now = Instant::now();
        // The oldest connection leaves once it has idled too long, so a burst's connections do
        // not stay open for ever once traffic settles.
        if idle
            .first()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        idle.push(Idle { sender, since: now });
    }

    /// Dials the endpoint and runs the HTTP/1.1 connection (upgrades allowed) in its own task.
    async fn connect(&self) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = self.addr;
        let io = dial(addr, self.timeouts, self.tls.as_ref()).await?;
        let (sender, conn) =
            http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| UpstreamError::Connect {
                    addr,
                    source: Box::new(e),
                })?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream HTTP/1.1 connection closed");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An upstream that counts its connections and answers `hi`; `close_after` closes each
    /// connection after that many requests.
    async fn upstream(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"hi"),
                        )))
                    });
                    let _ = server::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, conns)
    }

    fn request(addr: SocketAddr) -> Request<UpstreamBody> {
        Request::builder()
            .uri(format!("http://{addr}/"))
            .header(http::header::HOST, addr.to_string())
            .body(UpstreamBody::empty())
            .unwrap()
    }

    async fn get(ep: &Arc<H1Endpoint>, addr: SocketAddr) -> Bytes {
        let (resp, conn) = ep.send(request(addr)).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        drop(conn);
        body
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, conns) = upstream(true).await;
        let ep = Arc::new(H1Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
            None,
        ));
        for _ in 0..5 {
            assert_eq!(get(&ep, addr).await, "hi");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(ep.idle(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_one_connection_each() {
        let (addr, conns) = upstream(true).await;
        let ep = Arc::new(H1Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
            None,
        ));
        let (a, ca) = ep.send(request(addr)).await.unwrap();
        let (b, cb) = ep.send(request(addr)).await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        drop((a.into_body().collect().await, ca));
        drop((b.into_body().collect().await, cb));
        assert_eq!(ep.idle(), 2);
        assert_eq!(get(&ep, addr).await, "hi");
        assert_eq!(conns.load(Ordering::SeqCst), 2, "an idle one was reused");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let (addr, conns) = upstream(false).await;
        let ep = Arc::new(H1Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
            None,
        ));
        for _ in 0..3 {
            assert_eq!(get(&ep, addr).await, "hi");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    /// A POST of `len` bytes held by the proxy, to `addr`.
    fn post(addr: SocketAddr, len: usize) -> Request<UpstreamBody> {
        let mut req = request(addr);
        *req.method_mut() = http::Method::POST;
        *req.body_mut() = UpstreamBody::full(Bytes::from(vec![b'x'; len]));
        req
    }

    const BIG: usize = 32 << 20;

    #[tokio::test]
    async fn a_write_blocked_past_the_send_timeout_fails_the_request() {
        // The upstream accepts and never reads: once the socket buffers are full, the write
        // stays blocked.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(tcp);
        });
        let timeouts = ConnTimeouts {
            connect: Duration::from_secs(1),
            send: Some(Duration::from_millis(200)),
        };
        let ep = Arc::new(H1Endpoint::new(addr, timeouts, None));
        let err = ep.send(post(addr, BIG)).await.unwrap_err();
        match err.error {
            UpstreamError::SendTimeout { timeout, .. } => {
                assert_eq!(timeout, Duration::from_millis(200));
            }
            other => panic!("expected a send timeout, got {other}"),
        }
        held.abort();
    }

    #[tokio::test]
    async fn the_send_timeout_bounds_each_write_not_the_whole_request() {
        // The upstream reads 1 MiB every 20 ms: sending 32 MiB takes far longer than the
        // timeout, but no single write waits anywhere near it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut seen = Vec::new();
            let body_start = loop {
                let n = tcp.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let mut left = BIG - (seen.len() - body_start);
            while left > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                left -= tcp.read(&mut buf[..left.min(1 << 20)]).await.unwrap();
            }
            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            std::future::pending::<()>().await;
        });
        let timeouts = ConnTimeouts {
            connect: Duration::from_secs(1),
            send: Some(Duration::from_millis(500)),
        };
        let ep = Arc::new(H1Endpoint::new(addr, timeouts, None));
        let started = std::time::Instant::now();
        let (resp, _conn) = ep.send(post(addr, BIG)).await.unwrap();
        assert!(
            started.elapsed() > Duration::from_millis(500),
            "the whole send outlasts the timeout"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }

    #[tokio::test]
    async fn refused_connects_are_classified() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let ep = Arc::new(H1Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
            None,
        ));
        let err = ep.send(request(addr)).await.unwrap_err();
        assert!(
            matches!(err.error, UpstreamError::ConnectRefused { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_request_that_found_no_connection_comes_back_untouched() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ep = Arc::new(H1Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
            None,
        ));
        let mut req = request(addr);
        *req.method_mut() = http::Method::POST;
        *req.body_mut() = UpstreamBody::full(Bytes::from_static(b"not read"));
        let err = ep.send(req).await.unwrap_err();
        let unsent = err.unsent.expect("the request comes back");
        assert_eq!(unsent.method(), http::Method::POST);
        // Origin-form, as it would have been written.
        assert_eq!(unsent.uri(), "/");
        let body = unsent.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "not read");
    }
}
