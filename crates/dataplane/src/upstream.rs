//! Pooled upstream connections.
//!
//! * `http` clusters: HTTP/1.1 keep-alive connections per endpoint ([`H1Endpoint`]): idle
//!   connections are reused most recent first and come back when their response ends.
//! * `http2`/`grpc` clusters: one multiplexed HTTP/2 prior-knowledge connection per endpoint
//!   ([`H2Endpoint`]), so the request's `:authority` can carry the virtual host while the
//!   connection goes to the endpoint picked by the load balancer.
//! * Clusters with TLS: the same over TLS ([`ClientTls`]): [`dial`] runs the handshake after TCP,
//!   before the HTTP/1.1 or HTTP/2 handshake. Connections are shared by clusters with equal
//!   endpoint, timeouts ([`ConnTimeouts`]) and TLS settings.
//! * A send timeout (ingress-nginx `proxy-send-timeout`) bounds how long one write to the
//!   upstream may stay blocked: a connection whose writes make no progress for that long fails
//!   the request with [`UpstreamError::SendTimeout`] (504).
//!
//! [`Upstreams`] outlives config updates: compiling a new config reuses the clients and
//! connections of the previous one, so a route or endpoint change does not drop warm
//! connections.
//!
//! Request bodies are [`UpstreamBody`]s: the downstream body streamed through, possibly kept for
//! a retry to replay or teed for a mirror, or a body the proxy holds.

mod body;
mod h1;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

pub use self::body::{Recorded, RecordedSlot, Tee, UpstreamBody};
pub use self::h1::{H1Endpoint, PooledConn};
use crate::metrics::UpstreamErrorReason;
use crate::tls::{ClientTls, ClientTlsStream, TlsFiles};

const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A request that got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {addr} accepted no data for {timeout:?} while the request was sent")]
    SendTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connection refused by {addr}")]
    ConnectRefused { addr: SocketAddr },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("upstream {addr} failed: {source}")]
    Reset {
        addr: SocketAddr,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A send that got no response: why, and the request itself when it was never written (its
/// connection could not be opened), so that it can go to another endpoint as it is, its body
/// unread. Boxed: only a failed send pays for it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<Box<Request<UpstreamBody>>>,
}

impl SendError {
    /// A failure before `req` was written: the request comes back.
    pub fn unsent(error: UpstreamError, req: Request<UpstreamBody>) -> Self {
        SendError {
            error,
            unsent: Some(Box::new(req)),
        }
    }
}

impl From<UpstreamError> for SendError {
    fn from(error: UpstreamError) -> Self {
        SendError {
            error,
            unsent: None,
        }
    }
}

impl UpstreamError {
    pub fn reason(&self) -> UpstreamErrorReason {
        match self {
            Self::ConnectRefused { .. } => UpstreamErrorReason::ConnectRefused,
            Self::ConnectTimeout { .. } => UpstreamErrorReason::ConnectTimeout,
            Self::Connect { .. } => UpstreamErrorReason::ConnectFailed,
            Self::Reset { .. } => UpstreamErrorReason::Reset,
            Self::SendTimeout { .. } => UpstreamErrorReason::SendTimeout,
        }
    }

    /// A failed exchange on an established connection: a send timeout when a write stayed
    /// blocked past the connection's send timeout, otherwise a reset.
    pub(crate) fn from_exchange(addr: SocketAddr, err: hyper::Error) -> Self {
        let stalled = find_io_error(&err)
            .and_then(|io| io.get_ref())
            .and_then(|e| e.downcast_ref::<SendStalled>())
            .map(|s| s.0);
        match stalled {
            Some(timeout) => Self::SendTimeout { addr, timeout },
            None => Self::Reset {
                addr,
                source: Box::new(err),
            },
        }
    }

    /// Classifies a connect failure by walking its cause chain down to the I/O error.
    pub(crate) fn from_connect(
        addr: SocketAddr,
        timeout: Duration,
        err: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        match find_io_error(&*err).map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => Self::ConnectRefused { addr },
            Some(std::io::ErrorKind::TimedOut) => Self::ConnectTimeout { addr, timeout },
            _ => match find_tls_error(&*err) {
                // The handshake failed: say why (a certificate not valid for the name, ...).
                Some(tls) => Self::Connect {
                    addr,
                    source: Box::new(tls),
                },
                None => Self::Connect { addr, source: err },
            },
        }
    }
}

/// The rustls error inside an I/O error of the chain, if any.
fn find_tls_error(err: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    find_io_error(err)?
        .get_ref()?
        .downcast_ref::<rustls::Error>()
        .cloned()
}

fn find_io_error<'a>(mut err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    loop {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        err = err.source()?;
    }
}

// === impl Upstreams ===

/// The upstream clients and connections, kept across config updates, and the TLS files they
/// and the listeners use.
#[derive(Debug, Default)]
pub struct Upstreams {
    inner: Mutex<Inner>,
    tls_files: TlsFiles,
    /// Endpoint and cluster state of load balancing and resilience, and health checks.
    resilience: crate::resilience::Registry,
}

#[derive(Debug, Default)]
struct Inner {
    h1: HashMap<EndpointKey, Arc<H1Endpoint>>,
    h2: HashMap<(SocketAddr, ConnTimeouts), Arc<H2Endpoint>>,
    tls: TlsPools,
}

/// An endpoint's connections are shared by clusters with the same address, timeouts and TLS
/// settings (their key; `None`: plaintext).
type EndpointKey = (SocketAddr, ConnTimeouts, Option<Arc<str>>);

/// The HTTP/2 connections of clusters with TLS, by endpoint, timeouts and TLS key.
#[derive(Debug, Default)]
struct TlsPools {
    h2: HashMap<(SocketAddr, ConnTimeouts, Arc<str>), Arc<H2Endpoint>>,
}

/// The timeouts of a cluster's connections to one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnTimeouts {
    /// TCP connect and TLS handshake together.
    pub connect: Duration,
    /// The longest a write to the endpoint may stay blocked (the endpoint reads nothing);
    /// `None`: no limit.
    pub send: Option<Duration>,
}

impl ConnTimeouts {
    /// Only a connect timeout.
    pub fn connect(connect: Duration) -> Self {
        ConnTimeouts {
            connect,
            send: None,
        }
    }
}

impl Upstreams {
    /// The HTTP/1.1 connections of one endpoint of a cluster with this connect timeout and TLS
    /// (`None`: plaintext).
    pub fn h1(
        &self,
        addr: SocketAddr,
        timeouts: ConnTimeouts,
        tls: Option<&Arc<ClientTls>>,
    ) -> Arc<H1Endpoint> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .h1
            .entry((addr, timeouts, tls.map(|t| t.key().clone())))
            .or_insert_with(|| Arc::new(H1Endpoint::new(addr, timeouts, tls.cloned())))
            .clone()
    }

    /// The HTTP/2 connection slot of one endpoint.
    pub fn h2(&self, addr: SocketAddr, timeouts: ConnTimeouts) -> Arc<H2Endpoint> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .h2
            .entry((addr, timeouts))
            .or_insert_with(|| Arc::new(H2Endpoint::new(addr, timeouts)))
            .clone()
    }

    /// Forgets endpoints that no compiled config refers to any more (their connections close
    /// once the last request on them finishes).
    pub fn prune(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.h1.retain(|_, ep| Arc::strong_count(ep) > 1);
        inner.h2.retain(|_, ep| Arc::strong_count(ep) > 1);
        inner.tls.prune();
        drop(inner);
        self.tls_files.prune();
    }

    /// Load-balancing and resilience state, kept across config updates like connections.
    pub fn resilience(&self) -> &crate::resilience::Registry {
        &self.resilience
    }

    /// Number of HTTP/2 endpoints held (for tests).
    pub fn h2_endpoints(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .h2
            .len()
    }

    /// The TLS files of listeners and clusters.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls_files
    }

    /// The HTTP/2 connection slot of one endpoint of a cluster with this TLS (`None`: h2c, as
    /// [`Upstreams::h2`]).
    pub fn h2_tls(
        &self,
        addr: SocketAddr,
        timeouts: ConnTimeouts,
        tls: Option<&Arc<ClientTls>>,
    ) -> Arc<H2Endpoint> {
        let Some(tls) = tls else {
            return self.h2(addr, timeouts);
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .tls
            .h2
            .entry((addr, timeouts, tls.key().clone()))
            .or_insert_with(|| {
                let mut ep = H2Endpoint::new(addr, timeouts);
                ep.tls = Some(tls.clone());
                Arc::new(ep)
            })
            .clone()
    }
}

impl TlsPools {
    fn prune(&mut self) {
        self.h2.retain(|_, ep| Arc::strong_count(ep) > 1);
    }
}

/// A connection to an endpoint as tokio I/O (what the tcp proxy copies bytes over), plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream>),
}

/// Connects to an endpoint: TCP (no delay), then the TLS handshake for clusters with TLS, both
/// within the connect timeout.
pub(crate) async fn connect_stream(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Arc<ClientTls>>,
) -> Result<Stream, UpstreamError> {
    let connecting = async {
        let failed = |e: std::io::Error| UpstreamError::from_connect(addr, timeout, Box::new(e));
        let tcp = TcpStream::connect(addr).await.map_err(failed)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => Ok(Stream::Tls(Box::new(
                tls.connect(tcp).await.map_err(failed)?,
            ))),
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or(Err(UpstreamError::ConnectTimeout { addr, timeout }))
}

/// [`connect_stream`], as hyper I/O for the HTTP/1.1 and HTTP/2 handshakes, with the send
/// timeout watching its writes.
pub(crate) async fn dial(
    addr: SocketAddr,
    timeouts: ConnTimeouts,
    tls: Option<&Arc<ClientTls>>,
) -> Result<Conn, UpstreamError> {
    let io = match connect_stream(addr, timeouts.connect, tls).await? {
        Stream::Plain(s) => ConnIo::Plain(TokioIo::new(s)),
        Stream::Tls(s) => ConnIo::Tls(Box::new(TokioIo::new(*s))),
    };
    Ok(Conn {
        io,
        send_deadline: timeouts.send.map(|timeout| SendDeadline {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }),
    })
}

/// A connection to an endpoint, plain or TLS, and its send timeout.
#[derive(Debug)]
pub struct Conn {
    io: ConnIo,
    /// Only clusters with a send timeout allocate its timer.
    send_deadline: Option<SendDeadline>,
}

#[derive(Debug)]
enum ConnIo {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<ClientTlsStream>>),
}

/// The send timeout of a connection: armed when a write finds the socket full, disarmed by
/// the next write that makes progress (nginx's `proxy_send_timeout`: "between two successive
/// write operations, not for the transmission of the whole request").
#[derive(Debug)]
struct SendDeadline {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

/// The I/O error of a write that stayed blocked past the send timeout; found again in hyper's
/// error by [`UpstreamError::from_exchange`].
#[derive(Debug, thiserror::Error)]
#[error("no write progress for {0:?}")]
struct SendStalled(Duration);

impl Conn {
    /// Passes a write's outcome through, arming the send timeout while writes are blocked and
    /// failing the write once it expires.
    #[inline]
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let Some(d) = &mut self.send_deadline else {
            return r;
        };
        if r.is_ready() {
            d.armed = false;
            return r;
        }
        if !d.armed {
            d.armed = true;
            d.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + d.timeout);
        }
        match d.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                SendStalled(d.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Read for Conn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        this.watch(cx, r)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            ConnIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.watch(cx, r)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(s) => hyper::rt::Write::is_write_vectored(s),
            ConnIo::Tls(s) => hyper::rt::Write::is_write_vectored(s.as_ref()),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        this.watch(cx, r)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// === impl H2Endpoint ===

/// One endpoint's shared HTTP/2 connection, established on first use and re-established when it
/// closes. Requests take the current connection without locking. One connect runs at a time;
/// requests that waited for a connect that failed fail with it instead of trying again one after
/// the other.
#[derive(Debug)]
pub struct H2Endpoint {
    addr: SocketAddr,
    timeouts: ConnTimeouts,
    /// TLS before HTTP/2 (`None`: h2c).
    tls: Option<Arc<ClientTls>>,
    current: ArcSwapOption<http2::SendRequest<UpstreamBody>>,
    /// Held while connecting; holds the last connect failure.
    connecting: tokio::sync::Mutex<Option<ConnectFailure>>,
    /// Number of failed connects.
    failures: AtomicU64,
}

#[derive(Debug)]
struct ConnectFailure {
    reason: UpstreamErrorReason,
    message: String,
}

impl H2Endpoint {
    fn new(addr: SocketAddr, timeouts: ConnTimeouts) -> Self {
        Self {
            addr,
            timeouts,
            tls: None,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
        }
    }

    fn live(&self) -> Option<http2::SendRequest<UpstreamBody>> {
        self.current
            .load()
            .as_deref()
            .filter(|s| !s.is_closed())
            .cloned()
    }

    async fn sender(&self) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let failures_before = self.failures.load(Ordering::Acquire);
        let mut last_failure = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        if self.failures.load(Ordering::Acquire) != failures_before
            && let Some(f) = &*last_failure
        {
            return Err(self.replay(f));
        }
        // Boxed: dialling is the cold path; the send future stays small.
        match Box::pin(self.connect()).await {
            Ok(sender) => {
                *last_failure = None;
                Ok(sender)
            }
            Err(e) => {
                *last_failure = Some(ConnectFailure {
                    reason: e.reason(),
                    message: e.to_string(),
                });
                self.failures.fetch_add(1, Ordering::Release);
                Err(e)
            }
        }
    }

    /// The error of a connect another request just attempted.
    fn replay(&self, f: &ConnectFailure) -> UpstreamError {
        let addr = self.addr;
        match f.reason {
            UpstreamErrorReason::ConnectRefused => UpstreamError::ConnectRefused { addr },
            UpstreamErrorReason::ConnectTimeout => UpstreamError::ConnectTimeout {
                addr,
                timeout: self.timeouts.connect,
            },
            _ => UpstreamError::Connect {
                addr,
                source: f.message.clone().into(),
            },
        }
    }

    async fn connect(&self) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let io = dial(self.addr, self.timeouts, self.tls.as_ref()).await?;
        let sender = h2_handshake(self.addr, io).await?;
        self.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    /// Whether connections to the endpoint use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends a request on the endpoint's connection. The URI's authority becomes `:authority`.
    /// When no connection can be had, the request comes back untouched in the error.
    pub async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, SendError> {
        let addr = self.addr;
        let reset = |e: hyper::Error| UpstreamError::Reset {
            addr,
            source: Box::new(e),
        };
        let mut sender = match self.sender().await {
            Ok(sender) => sender,
            Err(e) => return Err(SendError::unsent(e, req)),
        };
        if let Err(e) = sender.ready().await {
            return Err(SendError::unsent(reset(e), req));
        }
        sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::from_exchange(addr, e).into())
    }
}

/// The HTTP/2 handshake on a connected stream; the connection runs in its own task.
async fn h2_handshake(
    addr: SocketAddr,
    io: Conn,
) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Connect {
            addr,
            source: Box::new(e),
        })?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%addr, %error, "upstream HTTP/2 connection closed");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn h2_requests_share_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<
                            bytes::Bytes,
                        >::new(
                        )))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let ep = Arc::new(H2Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
        ));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let ep = ep.clone();
                tokio::spawn(async move { ep.sender().await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refused_connects_are_classified() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ep = Arc::new(H2Endpoint::new(
            addr,
            ConnTimeouts::connect(Duration::from_secs(1)),
        ));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let ep = ep.clone();
                tokio::spawn(async move { ep.sender().await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert_eq!(err.reason(), UpstreamErrorReason::ConnectRefused, "{err}");
        }
        assert!(ep.failures.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn a_request_that_found_no_connection_comes_back_untouched() {
        use http_body_util::BodyExt;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ep = H2Endpoint::new(addr, ConnTimeouts::connect(Duration::from_secs(1)));
        let req = Request::post("http://svc.example/pkg.Svc/Call")
            .body(UpstreamBody::full(bytes::Bytes::from_static(b"not read")))
            .unwrap();
        let err = ep.send(req).await.unwrap_err();
        assert_eq!(err.error.reason(), UpstreamErrorReason::ConnectRefused);
        let unsent = err.unsent.expect("the request comes back");
        assert_eq!(unsent.uri(), "http://svc.example/pkg.Svc/Call");
        let body = unsent.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "not read");
    }
}
