//! Pooled upstream connections.
//!
//! Request bodies are [`UpstreamBody`]s: streamed, or kept for a retry to replay.
//!
//! * `http` clusters: a hyper-util legacy [`Client`] (HTTP/1.1 keep-alive pool keyed by endpoint),
//!   one per connect timeout, shared by every cluster with that timeout.
//! * `http2`/`grpc` clusters: one multiplexed HTTP/2 prior-knowledge connection per endpoint
//!   ([`H2Endpoint`]), so the request's `:authority` can carry the virtual host while the
//!   connection goes to the endpoint picked by the load balancer.
//!
//! [`Upstreams`] outlives config updates: compiling a new config reuses the clients and
//! connections of the previous one, so a route or endpoint change does not drop warm
//! connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::metrics::UpstreamErrorReason;

mod body;

pub use self::body::{Recorded, RecordedSlot, UpstreamBody};

/// HTTP/1.1 client shared by the `http` clusters with one connect timeout.
pub type Http1Client = Client<HttpConnector, UpstreamBody>;

const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A request that got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
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

impl UpstreamError {
    pub fn reason(&self) -> UpstreamErrorReason {
        match self {
            Self::ConnectRefused { .. } => UpstreamErrorReason::ConnectRefused,
            Self::ConnectTimeout { .. } => UpstreamErrorReason::ConnectTimeout,
            Self::Connect { .. } => UpstreamErrorReason::ConnectFailed,
            Self::Reset { .. } => UpstreamErrorReason::Reset,
        }
    }

    /// Classifies a connect failure by walking its cause chain down to the I/O error.
    fn from_connect(
        addr: SocketAddr,
        timeout: Duration,
        err: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        match find_io_error(&*err).map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => Self::ConnectRefused { addr },
            Some(std::io::ErrorKind::TimedOut) => Self::ConnectTimeout { addr, timeout },
            _ => Self::Connect { addr, source: err },
        }
    }
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

/// The upstream clients and connections, kept across config updates.
#[derive(Debug, Default)]
pub struct Upstreams {
    inner: Mutex<Inner>,
    /// Endpoint and cluster state of load balancing and resilience, and health checks.
    resilience: crate::resilience::Registry,
}

#[derive(Debug, Default)]
struct Inner {
    http1: HashMap<Duration, Http1Client>,
    h2: HashMap<(SocketAddr, Duration), Arc<H2Endpoint>>,
}

impl Upstreams {
    /// The HTTP/1.1 client for clusters with this connect timeout.
    pub fn http1(&self, connect_timeout: Duration) -> Http1Client {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .http1
            .entry(connect_timeout)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.enforce_http(true);
                connector.set_connect_timeout(Some(connect_timeout));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    // The proxy sets Host itself (the client would use the endpoint address).
                    .set_host(false)
                    .build(connector)
            })
            .clone()
    }

    /// The HTTP/2 connection slot of one endpoint.
    pub fn h2(&self, addr: SocketAddr, connect_timeout: Duration) -> Arc<H2Endpoint> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .h2
            .entry((addr, connect_timeout))
            .or_insert_with(|| Arc::new(H2Endpoint::new(addr, connect_timeout)))
            .clone()
    }

    /// Forgets HTTP/2 endpoints that no compiled config refers to any more (their connections
    /// close once the last request on them finishes).
    pub fn prune(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.h2.retain(|_, ep| Arc::strong_count(ep) > 1);
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
}

/// Sends a request over an HTTP/1.1 pool. The URI carries the endpoint as its authority.
pub async fn send_http1(
    client: &Http1Client,
    addr: SocketAddr,
    connect_timeout: Duration,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    client.request(req).await.map_err(|e| {
        if e.is_connect() {
            UpstreamError::from_connect(addr, connect_timeout, Box::new(e))
        } else {
            UpstreamError::Reset {
                addr,
                source: Box::new(e),
            }
        }
    })
}

// === impl H2Endpoint ===

/// One endpoint's shared HTTP/2 connection, established on first use and re-established when it
/// closes. Requests take the current connection without locking. One connect runs at a time;
/// requests that waited for a connect that failed fail with it instead of trying again one after
/// the other.
#[derive(Debug)]
pub struct H2Endpoint {
    addr: SocketAddr,
    connect_timeout: Duration,
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
    fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            addr,
            connect_timeout,
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
        match self.connect().await {
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
                timeout: self.connect_timeout,
            },
            _ => UpstreamError::Connect {
                addr,
                source: f.message.clone().into(),
            },
        }
    }

    async fn connect(&self) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = self.addr;
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(UpstreamError::from_connect(
                    addr,
                    self.connect_timeout,
                    Box::new(e),
                ));
            }
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    addr,
                    timeout: self.connect_timeout,
                });
            }
        };
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .handshake(TokioIo::new(tcp))
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
        self.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    /// Sends a request on the endpoint's connection. The URI's authority becomes `:authority`.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.sender().await?;
        let addr = self.addr;
        sender.ready().await.map_err(|e| UpstreamError::Reset {
            addr,
            source: Box::new(e),
        })?;
        sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Reset {
                addr,
                source: Box::new(e),
            })
    }
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
        let ep = Arc::new(H2Endpoint::new(addr, Duration::from_secs(1)));
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
        let ep = Arc::new(H2Endpoint::new(addr, Duration::from_secs(1)));
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
}
