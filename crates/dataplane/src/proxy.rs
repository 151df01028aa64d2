//! The HTTP proxy: one server per listener (HTTP/1.1 and HTTP/2 prior knowledge on the same port,
//! behind TLS on listeners that have it: see [`crate::tls`]),
//! routing each request with the [`Router`] in service and forwarding it to a cluster endpoint
//! over pooled connections, bodies streamed both ways. Connections accepted on `tcp` listeners
//! go to [`crate::tcp`] instead (same binding, connection cap and drain).
//!
//! Config updates ([`Proxy::apply`]) compile the snapshot, bind the listeners it adds, then swap
//! the router in with one atomic store: each request loads the router once, so it is served by
//! exactly one version and no request fails because of a swap. Listeners an update removes stop
//! accepting; their open connections finish what they are doing and close.

mod body;
pub(crate) mod edge;
mod error;
mod grpc;
mod headers;
mod upgrade;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bowline_model::ir;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, SET_COOKIE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

pub use self::body::ProxyBody;
use self::edge::ConnectionLimit;
pub use self::edge::{EdgeConfig, parse_trusted};
pub use self::error::{ProxyError, X_BOWLINE_ERROR, X_BOWLINE_OVERFLOW, respond};
pub use self::headers::strip_hop_by_hop;
use crate::accesslog;
use crate::lb::Tried;
use crate::metrics::{ProxyMetrics, RouteStats, UpstreamErrorReason};
use crate::retry;
use crate::router::{
    CompileContext, CompileError, RedirectRequest, RequestHead, RouteError, RoutedAction, Router,
    UpstreamProtocol, client_address, strip_port,
};
use crate::tls;
use crate::upstream::Upstreams;

const LISTEN_BACKLOG: u32 = 1024;

/// Settings of the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Address listeners bind when the IR gives none.
    pub bind: IpAddr,
    /// Limits and the trust boundary of the edge.
    pub edge: EdgeConfig,
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
    edge: EdgeConfig,
    connections: ConnectionLimit,
    /// Set when the whole proxy drains (shutdown): HTTP/1 responses ask clients to close, and
    /// connections stay open for [`DRAIN_GRACE`] before they are shut down.
    draining: AtomicBool,
}

/// How long a draining proxy keeps serving open connections before shutting them down
/// gracefully. HTTP/1 clients see `Connection: close` on every response meanwhile, so they move
/// to another process (SO_REUSEPORT hand-over) instead of racing an idle-connection close.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

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
    /// The peer is a trusted proxy: its forwarding headers are kept.
    trusted: bool,
    peer: SocketAddr,
    /// `https` when the connection is TLS, otherwise `http`.
    scheme: &'static str,
    /// The TLS server name the client asked for (SNI), kept only where the listener detects
    /// misdirected requests.
    sni: Option<Box<str>>,
}

/// What forwarding a request chose, for the access log.
#[derive(Debug, Default)]
struct Trace {
    upstream: Option<SocketAddr>,
}

// === impl Proxy ===

impl Proxy {
    pub fn new(config: ProxyConfig, metrics: ProxyMetrics) -> Proxy {
        let mut server = auto::Builder::new(TokioExecutor::new());
        config.edge.configure(&mut server);
        Proxy {
            shared: Arc::new(Shared {
                router: ArcSwap::from_pointee(Router::empty(&metrics)),
                upstreams: Upstreams::default(),
                metrics,
                bind: config.bind,
                server,
                listeners: Mutex::default(),
                edge: config.edge,
                connections: ConnectionLimit::default(),
                draining: AtomicBool::new(false),
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
            self.shared.draining.store(true, Ordering::Relaxed);
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
    // A new gateway process can bind the same ports while this one drains (hand-over without
    // refusing connections; see docs/gateway.md on `net.ipv4.tcp_migrate_req`).
    socket.set_reuseport(true)?;
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
    let Some(_slot) = shared.connections.acquire(shared.edge.max_connections) else {
        shared.metrics.connection_rejected();
        debug!(
            max = shared.edge.max_connections,
            "connection limit reached; closing"
        );
        return;
    };
    gauge.inc();
    let _open = OpenConnection(gauge);
    let _ = stream.set_nodelay(true);
    // A tcp listener proxies the connection's bytes instead of serving HTTP on it.
    if let Some(accepted) = crate::tcp::accepts(&shared.router.load(), port) {
        crate::tcp::serve(accepted, stream, peer, drain).await;
        return;
    }
    let listener_tls = shared
        .router
        .load()
        .listener(port)
        .and_then(|l| l.tls.clone());
    let Some(stream) = tls::accept(listener_tls.as_deref(), stream).await else {
        return;
    };
    let sni = listener_tls
        .as_deref()
        .filter(|t| t.detects_misdirected())
        .and_then(|_| stream.server_name())
        .map(Box::from);
    let ctx = Arc::new(ConnCtx {
        port,
        client_ip: HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a header value"),
        trusted: shared.edge.trusts(peer.ip()),
        peer,
        scheme: if stream.is_tls() { "https" } else { "http" },
        sni,
    });
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        let ctx = ctx.clone();
        // The request's future is large (routing, retries, the upstream send): it is built in
        // one heap allocation on first poll, so what hyper and tokio move around (into the h1
        // dispatcher, into a task per h2 stream) is this small wrapper, not kilobytes of state.
        async move { Ok::<_, Infallible>(Box::pin(handle(&shared, &ctx, req)).await) }
    });
    let conn = shared
        .server
        .serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.changed() => {
            if shared.draining.load(Ordering::Relaxed) {
                // Shutdown: keep serving a moment (responses carry `Connection: close`), then
                // close what is left gracefully. A removed listener closes at once.
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = tokio::time::sleep(DRAIN_GRACE) => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            } else {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
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
    let close = shared.draining.load(Ordering::Relaxed) && req.version() < Version::HTTP_2;
    let access_log = router
        .listener(ctx.port)
        .and_then(|l| l.access_log.as_ref());
    let record = access_log.map(|log| log.capture(&req, ctx.peer));
    let is_grpc = grpc::is_grpc(req.headers());
    let mut trace = Trace::default();
    let (stats, result) = match shared.edge.check(
        req.uri().path_and_query().map_or(0, |p| p.as_str().len()),
        req.headers(),
    ) {
        Ok(()) => forward(&router, &shared.edge, ctx, req, start, &mut trace).await,
        Err(e) => (router.no_route_stats(), Err(e)),
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            debug!(error = %err, "request failed");
            if is_grpc {
                grpc::respond(&err)
            } else {
                respond(&err)
            }
        }
    };
    stats.record_timed(resp.status(), start.elapsed());
    if let (Some(log), Some(record)) = (access_log, &record) {
        log.log(
            record,
            &accesslog::Outcome {
                status: resp.status(),
                headers: resp.headers(),
                duration: start.elapsed(),
                route: stats.name(),
                upstream: trace.upstream,
            },
        );
    }
    let mut resp = resp;
    if close {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Routes and forwards a request. Failures come back as [`ProxyError`]s, turned into responses
/// by [`respond`] only.
async fn forward<'r>(
    router: &'r Router,
    edge: &EdgeConfig,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    start: Instant,
    trace: &mut Trace,
) -> (&'r RouteStats, Result<Response<ProxyBody>, ProxyError>) {
    let no_route = router.no_route_stats();
    let Some(listener) = router.listener(ctx.port) else {
        return (no_route, Err(ProxyError::NoListener { port: ctx.port }));
    };
    let (mut parts, body) = req.into_parts();
    let grpc_timeout = grpc::timeout(&parts.headers);
    // The absolute-form / HTTP/2 `:authority` wins over `Host`.
    let authority = parts.uri.authority().map(Authority::as_str).or_else(|| {
        parts
            .headers
            .get(HOST)
            .and_then(|h| std::str::from_utf8(h.as_bytes()).ok())
    });
    let host = strip_port(authority.unwrap_or_default());
    // The client's host for X-Forwarded-Host: the Host header is reused as it is (no copy).
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(HOST).cloned(),
    };
    let head = RequestHead {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        port: listener.port,
        scheme: ctx.scheme,
    };
    // A TLS connection reused for a host another certificate entry serves: 421, so that the
    // client opens a connection of its own for that host.
    if ctx.scheme == "https"
        && let Some(tls) = &listener.tls
        && tls.misdirected(ctx.sni.as_deref(), host)
    {
        let err = ProxyError::Misdirected {
            host: host.to_string(),
            sni: ctx.sni.as_deref().map(str::to_string),
        };
        return (no_route, Err(err));
    }
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
    // Client policies (router/client.rs): access control and per-client limits, then the body
    // limit of the route. A request holds its concurrency slots until its response has ended.
    let mut slots = Vec::new();
    if routed.filters.needs_client() {
        let client = client_address(ctx.peer.ip(), &parts.headers, |ip| edge.trusts(ip));
        if let Err(refusal) = routed.filters.admit(client, &mut slots) {
            return (stats, Err(ProxyError::Refused { client, refusal }));
        }
    }
    if let Err(e) = edge.check_body(routed.filters.max_body(), &parts.headers) {
        return (stats, Err(e));
    }
    // Route filters (router/filters.rs): CORS preflights are answered here.
    if let Some(resp) = routed.filters.preflight(&parts.method, &parts.headers) {
        return (stats, Ok(resp));
    }
    let cors = routed.filters.cors_origin(&parts.headers);
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
            routed.filters.on_response(resp.headers_mut(), cors);
            return (stats, Ok(resp));
        }
        RoutedAction::Redirect(r) => {
            let req = RedirectRequest {
                scheme: ctx.scheme,
                authority,
                path: parts.uri.path(),
                query: parts.uri.query(),
            };
            let Some(location) = r.location(&req, routed.path.as_deref()) else {
                let path = routed.path.unwrap_or_default();
                return (stats, Err(ProxyError::InvalidRewrite { path }));
            };
            let mut resp = r.respond(location);
            routed.filters.on_response(resp.headers_mut(), cors);
            return (stats, Ok(resp));
        }
        RoutedAction::Forward(f) => f,
    };
    if fwd.draws_unresolved() {
        let err = ProxyError::UnresolvedBackend {
            route: routed.route.name.to_string(),
        };
        return (stats, Err(err));
    }
    let (cluster, backend_headers) = fwd.pick_with_headers();
    // HTTP/1.1 Upgrade (WebSocket…): only an HTTP/1.1 upstream can switch protocols.
    let upgrade = upgrade::requested(parts.version, &parts.headers);
    if upgrade.is_some() && cluster.protocol != UpstreamProtocol::Http1 {
        let err = ProxyError::UpgradeUnsupported {
            cluster: cluster.name.clone(),
        };
        return (stats, Err(err));
    }
    let key = cluster
        .resilience
        .request_key(ctx.client_ip.as_bytes(), &parts.uri, &parts.headers);
    let Some((first, endpoint)) = cluster.pick_for(key.hash, Tried::NONE) else {
        cluster.stats.record_error(UpstreamErrorReason::NoEndpoints);
        let err = ProxyError::NoEndpoints {
            cluster: cluster.name.clone(),
        };
        return (stats, Err(err));
    };
    trace.upstream = Some(endpoint.addr);

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
    parts.uri = match cluster.protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {
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
            // Origin-form: the connection already goes to the endpoint.
            Uri::from(path_and_query)
        }
        UpstreamProtocol::Http2 => {
            // HTTP/2 carries the host in `:authority`, not in `Host`.
            let host_header = parts.headers.remove(HOST);
            parts.version = Version::HTTP_2;
            let authority = match (routed.host, parts.uri.authority()) {
                (Some(h), _) => h.authority.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => host_header
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .unwrap_or_else(|| endpoint.authority.clone()),
            };
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = Some(path_and_query);
            Uri::from_parts(uri).expect("scheme, authority and path make a URI")
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    let client_upgrade = match upgrade.clone() {
        Some(protocol) => {
            upgrade::restore(&mut parts.headers, protocol);
            upgrade::take(&mut parts.extensions)
        }
        None => None,
    };
    edge::set_forwarding_headers(
        &mut parts.headers,
        ctx.trusted,
        &ctx.client_ip,
        ctx.scheme,
        original_host.as_ref(),
    );
    routed.filters.on_request(&mut parts.headers);
    if let Some(h) = backend_headers {
        h.on_request(&mut parts.headers);
    }

    let body = routed.filters.mirror(&parts, body);
    // Retries, circuit breakers, timeouts and outlier detection wrap the upstream send.
    let req = Request::from_parts(parts, body);
    match retry::send(cluster, fwd, first, &key, req, start, grpc_timeout).await {
        Ok(mut resp) => {
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                && let (Some(protocol), Some(client)) = (upgrade, client_upgrade)
            {
                let upstream = hyper::upgrade::on(&mut resp);
                upgrade::splice(client, upstream);
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                upgrade::restore(&mut parts.headers, protocol);
                return (
                    stats,
                    Ok(Response::from_parts(parts, ProxyBody::Tracked(body))),
                );
            }
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            routed.filters.on_response(&mut parts.headers, cors);
            if let Some(h) = backend_headers {
                h.on_response(&mut parts.headers);
            }
            if let Some(cookie) = key.set_cookie {
                parts.headers.append(SET_COOKIE, cookie);
            }
            let body = if slots.is_empty() {
                ProxyBody::Tracked(body)
            } else {
                ProxyBody::Holding(Box::new((body, slots)))
            };
            (stats, Ok(Response::from_parts(parts, body)))
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
