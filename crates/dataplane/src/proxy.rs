//! The HTTP proxy: one server per listener (HTTP/1.1 and HTTP/2 prior knowledge on the same port),
//! routing each request with the [`Router`] in service and forwarding it to a cluster endpoint
//! over pooled connections, bodies streamed both ways.
//!
//! Config updates ([`Proxy::apply`]) compile the snapshot, bind the listeners it adds, then swap
//! the router in with one atomic store: each request loads the router once, so it is served by
//! exactly one version and no request fails because of a swap. Listeners an update removes stop
//! accepting; their open connections finish what they are doing and close.

mod body;
mod error;
mod headers;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bowline_model::ir;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, SET_COOKIE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

pub use self::body::ProxyBody;
pub use self::error::{ProxyError, X_BOWLINE_ERROR, X_BOWLINE_OVERFLOW, respond};
pub use self::headers::strip_hop_by_hop;
use crate::lb::Tried;
use crate::metrics::{ProxyMetrics, RouteStats, UpstreamErrorReason};
use crate::retry;
use crate::router::{
    CompileContext, CompileError, RequestHead, RouteError, RoutedAction, Router, UpstreamProtocol,
    strip_port,
};
use crate::upstream::Upstreams;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const LISTEN_BACKLOG: u32 = 1024;

/// Settings of the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Address listeners bind when the IR gives none.
    pub bind: IpAddr,
}

/// A config update the proxy could not put in service; the previous config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("listener/{listener}: address: cannot listen on {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the proxy is shutting down")]
    Draining,
}

/// The proxy. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    router: ArcSwap<Router>,
    upstreams: Upstreams,
    metrics: ProxyMetrics,
    bind: IpAddr,
    server: auto::Builder<TokioExecutor>,
    listeners: Mutex<Listeners>,
}

#[derive(Debug, Default)]
struct Listeners {
    running: HashMap<SocketAddr, Running>,
    /// Removed listeners whose connections are still finishing.
    draining: Vec<watch::Sender<bool>>,
    /// Set by [`Proxy::drain`]: no listener opens any more.
    closed: bool,
}

#[derive(Debug)]
struct Running {
    name: String,
    /// Set to `true` to stop accepting and close connections gracefully; closed once the
    /// accept loop and every connection are gone.
    drain: watch::Sender<bool>,
}

/// What every request of one connection shares.
#[derive(Debug)]
struct ConnCtx {
    port: u16,
    client_ip: HeaderValue,
}

// === impl Proxy ===

impl Proxy {
    pub fn new(config: ProxyConfig, metrics: ProxyMetrics) -> Proxy {
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        server.http2().timer(TokioTimer::new());
        Proxy {
            shared: Arc::new(Shared {
                router: ArcSwap::from_pointee(Router::empty(&metrics)),
                upstreams: Upstreams::default(),
                metrics,
                bind: config.bind,
                server,
                listeners: Mutex::default(),
            }),
        }
    }

    /// The router in service.
    pub fn router(&self) -> Arc<Router> {
        self.shared.router.load_full()
    }

    /// Names and addresses of the listeners accepting connections.
    pub fn listening(&self) -> Vec<(String, SocketAddr)> {
        let l = self.lock_listeners();
        let mut v: Vec<_> = l
            .running
            .iter()
            .map(|(addr, r)| (r.name.clone(), *addr))
            .collect();
        v.sort();
        v
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Compiles `snapshot`, binds the listeners it adds and puts it in service; stops the
    /// listeners it removes. On error the router in service stays (a listener moving to another
    /// address on the same port has let go of its port by then). Must run inside a Tokio
    /// runtime.
    pub fn apply(&self, snapshot: &ir::Snapshot) -> Result<(), ApplyError> {
        let shared = &self.shared;
        let current = shared.router.load_full();
        let router = Router::compile(
            snapshot,
            CompileContext {
                upstreams: &shared.upstreams,
                metrics: &shared.metrics,
                previous: Some(&current),
            },
        )?;
        drop(current);
        let desired: Vec<(SocketAddr, String)> = router
            .listeners()
            .iter()
            .map(|l| {
                (
                    SocketAddr::new(l.address.unwrap_or(shared.bind), l.port),
                    l.name.clone(),
                )
            })
            .collect();
        let wanted: HashSet<SocketAddr> = desired.iter().map(|(a, _)| *a).collect();
        let mut listeners = self.lock_listeners();
        if listeners.closed {
            return Err(ApplyError::Draining);
        }
        listeners.draining.retain(|d| !d.is_closed());
        let removed: Vec<SocketAddr> = listeners
            .running
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        // A listener that moves to another address on the same port must let go of it first.
        for (addr, _) in &desired {
            if listeners.running.contains_key(addr) {
                continue;
            }
            if let Some(old) = removed.iter().find(|r| r.port() == addr.port())
                && let Some(r) = listeners.running.remove(old)
            {
                info!(listener = %r.name, addr = %old, "stopped listening (address changed)");
                stop(&mut listeners, r);
            }
        }
        let mut bound = Vec::new();
        for (addr, name) in &desired {
            if listeners.running.contains_key(addr) {
                continue;
            }
            let listener = bind(*addr).map_err(|source| ApplyError::Bind {
                listener: name.clone(),
                addr: *addr,
                source,
            })?;
            bound.push((*addr, name.as_str(), listener));
        }
        // Names may change while the address stays.
        for (addr, name) in &desired {
            if let Some(r) = listeners.running.get_mut(addr)
                && r.name != *name
            {
                r.name = name.clone();
            }
        }
        shared.router.store(Arc::new(router));
        for (addr, name, listener) in bound {
            let (tx, rx) = watch::channel(false);
            let gauge = shared.metrics.connections(name);
            let span = tracing::info_span!("listener", listener = %name, %addr);
            tokio::spawn(
                accept_loop(shared.clone(), listener, addr.port(), rx, gauge).instrument(span),
            );
            info!(listener = %name, %addr, "listening");
            listeners.running.insert(
                addr,
                Running {
                    name: name.to_string(),
                    drain: tx,
                },
            );
        }
        for addr in removed {
            if let Some(r) = listeners.running.remove(&addr) {
                info!(listener = %r.name, %addr, "stopped listening");
                stop(&mut listeners, r);
            }
        }
        drop(listeners);
        shared.upstreams.prune();
        shared.upstreams.resilience().sync(&shared.router.load());
        Ok(())
    }

    /// Stops accepting on every listener and lets open connections finish their requests.
    /// Returns `false` if some were still open at `deadline`.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let senders: Vec<watch::Sender<bool>> = {
            let mut l = self.lock_listeners();
            l.closed = true;
            let mut senders: Vec<_> = l.running.drain().map(|(_, r)| r.drain).collect();
            senders.append(&mut l.draining);
            senders
        };
        for s in &senders {
            s.send_replace(true);
        }
        let all = futures_util::future::join_all(senders.iter().map(|s| s.closed()));
        tokio::time::timeout(deadline, all).await.is_ok()
    }
}

fn stop(listeners: &mut Listeners, r: Running) {
    r.drain.send_replace(true);
    listeners.draining.push(r.drain);
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    mut drain: watch::Receiver<bool>,
    gauge: Gauge,
) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = drain.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = serve_connection(
            shared.clone(),
            stream,
            peer,
            port,
            drain.clone(),
            gauge.clone(),
        );
        tokio::spawn(conn.instrument(tracing::debug_span!("conn", %peer)));
    }
    debug!("accept loop stopped");
}

/// Decrements the open-connections gauge when the connection ends.
struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    mut drain: watch::Receiver<bool>,
    gauge: Gauge,
) {
    gauge.inc();
    let _open = OpenConnection(gauge);
    let _ = stream.set_nodelay(true);
    let ctx = Arc::new(ConnCtx {
        port,
        client_ip: HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a header value"),
    });
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &ctx, req).await) }
    });
    let conn = shared.server.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(%error, "connection closed with an error");
    }
}

/// Serves one request with the router in service when it arrived.
async fn handle(shared: &Shared, ctx: &ConnCtx, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let router = shared.router.load_full();
    let (stats, result) = forward(&router, ctx, req, start).await;
    let resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            debug!(error = %err, "request failed");
            respond(&err)
        }
    };
    stats.record(resp.status());
    resp
}

/// Routes and forwards a request. Failures come back as [`ProxyError`]s, turned into responses
/// by [`respond`] only.
async fn forward<'r>(
    router: &'r Router,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    start: Instant,
) -> (&'r RouteStats, Result<Response<ProxyBody>, ProxyError>) {
    let no_route = router.no_route_stats();
    let Some(listener) = router.listener(ctx.port) else {
        return (no_route, Err(ProxyError::NoListener { port: ctx.port }));
    };
    let (mut parts, body) = req.into_parts();
    // The absolute-form / HTTP/2 `:authority` wins over `Host`.
    let authority = parts.uri.authority().map(Authority::as_str).or_else(|| {
        parts
            .headers
            .get(HOST)
            .and_then(|h| std::str::from_utf8(h.as_bytes()).ok())
    });
    let host = strip_port(authority.unwrap_or_default());
    let head = RequestHead {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        port: listener.port,
        scheme: listener.scheme,
    };
    let routed = match router.route(listener, host, &head) {
        Ok(r) => r,
        Err(RouteError::NoRoute) => {
            let err = ProxyError::NoRoute {
                host: host.to_string(),
                path: parts.uri.path().to_string(),
            };
            return (no_route, Err(err));
        }
        Err(e) => return (no_route, Err(ProxyError::Delegation(e))),
    };
    let stats = &routed.route.stats;
    let fwd = match routed.action {
        RoutedAction::Direct(d) => {
            let mut resp = Response::new(ProxyBody::full(d.body.clone()));
            *resp.status_mut() = d.status;
            if !d.body.is_empty() {
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            return (stats, Ok(resp));
        }
        RoutedAction::Forward(f) => f,
    };
    let cluster = fwd.pick();
    let key = cluster
        .resilience
        .request_key(ctx.client_ip.as_bytes(), &parts.headers);
    let Some((first, endpoint)) = cluster.pick_for(key.hash, Tried::NONE) else {
        cluster.stats.record_error(UpstreamErrorReason::NoEndpoints);
        let err = ProxyError::NoEndpoints {
            cluster: cluster.name.clone(),
        };
        return (stats, Err(err));
    };

    // The upstream request: same method, headers and body; new URI.
    let path_and_query = match &routed.path {
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(path) => match rewritten(path, parts.uri.query()) {
            Some(pq) => pq,
            None => {
                let err = ProxyError::InvalidRewrite { path: path.clone() };
                return (stats, Err(err));
            }
        },
    };
    let authority = match cluster.protocol {
        UpstreamProtocol::Http1 => {
            match routed.host {
                Some(h) => {
                    parts.headers.insert(HOST, h.header.clone());
                }
                None if !parts.headers.contains_key(HOST) => {
                    // HTTP/2 client: `:authority` becomes `Host`.
                    if let Some(a) = parts.uri.authority()
                        && let Ok(v) = HeaderValue::from_str(a.as_str())
                    {
                        parts.headers.insert(HOST, v);
                    }
                }
                None => {}
            }
            parts.version = Version::HTTP_11;
            endpoint.authority.clone()
        }
        UpstreamProtocol::Http2 => {
            // HTTP/2 carries the host in `:authority`, not in `Host`.
            let host_header = parts.headers.remove(HOST);
            parts.version = Version::HTTP_2;
            match (routed.host, parts.uri.authority()) {
                (Some(h), _) => h.authority.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => host_header
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .unwrap_or_else(|| endpoint.authority.clone()),
            }
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(&X_FORWARDED_FOR, ctx.client_ip.clone());
    parts.headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(listener.scheme),
    );

    // Retries, circuit breakers, timeouts and outlier detection wrap the upstream send.
    let req = Request::from_parts(parts, body);
    match retry::send(cluster, fwd, first, &key, req, start).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(cookie) = key.set_cookie {
                parts.headers.append(SET_COOKIE, cookie);
            }
            (
                stats,
                Ok(Response::from_parts(parts, ProxyBody::Tracked(body))),
            )
        }
        Err(err) => (stats, Err(err)),
    }
}

/// A rewritten path with the original query.
fn rewritten(path: &str, query: Option<&str>) -> Option<PathAndQuery> {
    let mut s = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    s.push_str(path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(s)).ok()
}
