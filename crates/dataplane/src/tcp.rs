//! L4 proxying on `tcp` listeners (App Mesh `tcpRoute`), shared by the gateway and the sidecar.
//!
//! Per accepted connection, in order:
//!
//! 1. TLS termination when the listener has TLS (the listener's certificates, SNI and client
//!    validation, without ALPN: the bytes are not HTTP to the proxy).
//! 2. A cluster, by the route's weights: the smooth weighted round robin of the HTTP routes
//!    ([`Schedule`]), over connections, continued across config updates that keep the split.
//! 3. The cluster's circuit breaker: `maxConnections` bounds the connections proxied to it; a
//!    connection beyond the limit is closed at once (a tcp pool has no queue).
//! 4. An endpoint, by the cluster's load balancer. The hash policies hash the client's IP
//!    address; a header or cookie hash (which a connection does not have) falls back to a random
//!    key, like an HTTP request without the header.
//! 5. A connection to it within the cluster's connect timeout (TCP, then TLS when the cluster
//!    originates TLS). A failed connect feeds outlier detection and is retried on another endpoint
//!    (App Mesh's `connection-error` event) up to [`MAX_CONNECT_ATTEMPTS`] attempts in all, never
//!    more than the cluster has endpoints, and within the cluster's retry budget. A success resets
//!    the endpoint's consecutive failures.
//! 6. Bytes copied both ways ([`pipe`]) until both directions have ended: a peer's end of stream
//!    is passed on as a half-close (the other direction keeps flowing), an error on either side
//!    closes both, and so does the idle timeout when no byte has moved either way for that long.
//!
//! The idle timeout is the route's, else the chosen cluster's (the node listener's
//! `timeout.tcp.idle`), else [`DEFAULT_IDLE_TIMEOUT`]; 0 in either disables it.
//!
//! A connection keeps the route and clusters it started with: config updates apply to new
//! connections, and a removed listener stops accepting while its open connections go on. On
//! shutdown they are not cut short: the proxy's drain waits for them until its deadline.

mod pipe;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bowline_model::ir;
use bowline_model::proto::Kind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

pub use self::pipe::{End, Piped, Side, pipe};
use crate::accesslog::{AccessLogger, TcpRecord};
use crate::breaker::Permit;
use crate::lb::{self, HashPolicy, Tried};
use crate::metrics::UpstreamErrorReason;
use crate::resilience::{ClusterPolicy, InFlight};
use crate::retry::RetryPermit;
use crate::router::{
    Cluster, CompileContext, CompileError, Router, Schedule, Schedules, UpstreamProtocol,
};
use crate::tls::{self, ClientTls, ServerTls};
use crate::upstream::{Stream, connect_stream};

/// Idle timeout when neither the route nor the cluster sets one: Envoy's `tcp_proxy` default,
/// which App Mesh's Envoy runs with.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Connect attempts per connection, the first included (each to another endpoint when there is
/// one).
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// `%RESPONSE_FLAGS%` of a connection the peers closed.
const CLOSED: &str = "-";

// === compile ===

/// The compiled [`ir::TcpProxy`] of one listener.
#[derive(Debug)]
pub struct TcpRoute {
    /// For logs and metrics.
    pub name: String,
    targets: Box<[Target]>,
    schedule: Arc<Schedule>,
    /// `None`: the cluster's; `Some(None)`: disabled.
    idle: Option<Option<Duration>>,
    access_log: Option<AccessLogger>,
}

#[derive(Debug)]
struct Target {
    cluster: Arc<Cluster>,
    stats: TcpStats,
}

/// Checks how a listener's protocol and its route table or tcp proxy fit together; returns
/// whether it is a tcp listener. The error names the field.
pub(crate) fn check_listener(l: &ir::Listener) -> Result<bool, (&'static str, String)> {
    let tcp = l.protocol == ir::Protocol::Tcp;
    match (tcp, &l.tcp_proxy) {
        (true, None) => Err(("tcpProxy", "a tcp listener needs a tcp proxy".into())),
        (false, Some(_)) => Err((
            "tcpProxy",
            "only tcp listeners proxy connections; this one routes requests".into(),
        )),
        (true, Some(_)) if !l.route_table.is_empty() => Err((
            "routeTable",
            "a tcp listener has no route table; its tcp proxy decides".into(),
        )),
        _ => Ok(tcp),
    }
}

/// The tcp side of a listener: its compiled proxy (`tcp` listeners only), the access log the
/// listener keeps (a tcp listener's goes to its proxy, which logs connections) and its TLS (for
/// tcp, without ALPN).
pub(crate) type CompiledListener = (
    Option<Arc<TcpRoute>>,
    Option<AccessLogger>,
    Option<Arc<ServerTls>>,
);

/// Compiles the tcp proxy of listener `l`, if it has one; every cluster must exist and one must
/// have a weight above 0.
pub(crate) fn compile_listener(
    l: &ir::Listener,
    clusters: &HashMap<String, Arc<Cluster>>,
    cx: CompileContext<'_>,
    schedules: &mut Schedules<'_>,
    access_log: Option<AccessLogger>,
    tls: Option<Arc<ServerTls>>,
) -> Result<CompiledListener, CompileError> {
    let Some(tp) = &l.tcp_proxy else {
        return Ok((None, access_log, tls));
    };
    let err = |path: String, reason: String| CompileError {
        resource: Kind::Listener.key(&l.name),
        path,
        reason,
    };
    let mut targets = Vec::with_capacity(tp.clusters.len());
    let mut weights = Vec::with_capacity(tp.clusters.len());
    let mut key = format!("tcp/{}/{}|", l.name, tp.name);
    for (i, wc) in tp.clusters.iter().enumerate() {
        let cluster = clusters.get(&wc.cluster).ok_or_else(|| {
            err(
                format!("tcpProxy.clusters[{i}].cluster"),
                format!("unknown cluster {:?}", wc.cluster),
            )
        })?;
        targets.push(Target {
            cluster: cluster.clone(),
            stats: cx.metrics.tcp.stats(&l.name, &wc.cluster),
        });
        weights.push(wc.weight);
        key.push_str(&format!("{}={},", wc.cluster, wc.weight));
    }
    let schedule = schedules.get(key, &weights).ok_or_else(|| {
        err(
            "tcpProxy.clusters".into(),
            "no cluster has a weight above 0".into(),
        )
    })?;
    let route = TcpRoute {
        name: tp.name.clone(),
        targets: targets.into(),
        schedule,
        idle: tp.idle_timeout_ms.map(idle_from_ms),
        access_log,
    };
    let tls = tls.map(|t| Arc::new(t.without_alpn()));
    Ok((Some(Arc::new(route)), None, tls))
}

/// An idle timeout in milliseconds, 0 meaning none.
fn idle_from_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// The idle timeout of connections proxied to cluster `c` when their route sets none.
pub(crate) fn cluster_idle_timeout(c: &ir::Cluster) -> Option<Duration> {
    c.tcp_idle_timeout_ms
        .map_or(Some(DEFAULT_IDLE_TIMEOUT), idle_from_ms)
}

/// A cluster's TLS origination, without ALPN for `tcp` clusters.
pub(crate) fn upstream_tls(tls: ClientTls, protocol: UpstreamProtocol) -> ClientTls {
    match protocol {
        UpstreamProtocol::Tcp => tls.without_alpn(),
        UpstreamProtocol::Http1 | UpstreamProtocol::Http2 => tls,
    }
}

/// HTTP routes (forwards, mirrors) cannot send to a tcp cluster.
pub(crate) fn check_http_cluster(c: &Cluster) -> Result<(), String> {
    match c.protocol {
        UpstreamProtocol::Tcp => Err(format!(
            "cluster {:?} is a tcp cluster: only a tcp listener can send to it",
            c.name
        )),
        UpstreamProtocol::Http1 | UpstreamProtocol::Http2 => Ok(()),
    }
}

// === impl TcpRoute ===

impl TcpRoute {
    /// The next target by weight.
    #[inline]
    fn pick(&self) -> &Target {
        &self.targets[self.schedule.next()]
    }

    /// The idle timeout of a connection to `cluster` (`None`: never).
    fn idle_timeout(&self, cluster: &Cluster) -> Option<Duration> {
        self.idle.unwrap_or(cluster.tcp_idle_timeout)
    }
}

// === metrics ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpLabels {
    listener: String,
    cluster: String,
}

/// The tcp families (prefix `bowline_`), registered with the other proxy metrics.
#[derive(Clone, Debug, Default)]
pub struct TcpMetrics {
    connections: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
}

impl TcpMetrics {
    pub(crate) fn register(&self, reg: &mut Registry) {
        reg.register(
            "tcp_connections",
            "Connections a tcp listener proxied to a cluster (connected upstream)",
            self.connections.clone(),
        );
        reg.register(
            "tcp_received_bytes",
            "Bytes received from clients of a tcp listener and sent to a cluster",
            self.received.clone(),
        );
        reg.register(
            "tcp_sent_bytes",
            "Bytes received from a cluster and sent to clients of a tcp listener",
            self.sent.clone(),
        );
    }

    /// The counters of one listener and cluster, resolved once (at config compile).
    pub fn stats(&self, listener: &str, cluster: &str) -> TcpStats {
        let labels = TcpLabels {
            listener: listener.to_string(),
            cluster: cluster.to_string(),
        };
        TcpStats {
            connections: self.connections.get_or_create(&labels).clone(),
            received: self.received.get_or_create(&labels).clone(),
            sent: self.sent.get_or_create(&labels).clone(),
        }
    }
}

/// Counters of the connections of one listener to one cluster.
#[derive(Clone, Debug, Default)]
pub struct TcpStats {
    pub connections: Counter,
    /// Client → upstream bytes, counted as they are written upstream.
    pub received: Counter,
    /// Upstream → client bytes, counted as they are written to the client.
    pub sent: Counter,
}

// === serve ===

/// A connection accepted on a tcp listener, with what serving it needs.
#[derive(Debug)]
pub struct Accepted {
    route: Arc<TcpRoute>,
    tls: Option<Arc<ServerTls>>,
}

/// Whether the listener in service on `port` proxies tcp; the config a new connection gets.
pub fn accepts(router: &Router, port: u16) -> Option<Accepted> {
    let l = router.listener(port)?;
    Some(Accepted {
        route: l.tcp.clone()?,
        tls: l.tls.clone(),
    })
}

/// What happened to one connection, for the access log.
#[derive(Debug)]
struct Outcome {
    upstream: Option<SocketAddr>,
    piped: Piped,
    flags: &'static str,
}

/// Serves one connection accepted on a tcp listener, to the end. `drain` is held so that the
/// proxy's drain waits for the connection.
pub async fn serve(
    accepted: Accepted,
    stream: TcpStream,
    peer: SocketAddr,
    _drain: watch::Receiver<bool>,
) {
    let started = SystemTime::now();
    let start = Instant::now();
    let Some(client) = tls::accept(accepted.tls.as_deref(), stream).await else {
        return;
    };
    let route = accepted.route;
    let mut out = Outcome {
        upstream: None,
        piped: Piped::default(),
        flags: CLOSED,
    };
    proxy(&route, client, peer, &mut out).await;
    if let Some(log) = &route.access_log {
        log.log_tcp(&TcpRecord {
            start: started,
            peer,
            upstream: out.upstream,
            bytes_received: out.piped.received,
            bytes_sent: out.piped.sent,
            duration: start.elapsed(),
            route: &route.name,
            flags: out.flags,
        });
    }
}

async fn proxy(route: &TcpRoute, mut client: tls::ServerIo, peer: SocketAddr, out: &mut Outcome) {
    let target = route.pick();
    let cluster = &target.cluster;
    let policy = &cluster.resilience;
    let _active = policy.state().start();
    let _permit = match acquire(policy).await {
        Ok(p) => p,
        Err(reason) => {
            debug!(cluster = %cluster.name, "circuit breaker open: max-connections reached");
            out.flags = reason;
            return;
        }
    };
    let Some((_in_flight, upstream)) = connect(cluster, balance_key(policy, peer.ip()), out).await
    else {
        return;
    };
    target.stats.connections.inc();
    let idle = route.idle_timeout(cluster);
    let (piped, end) = match upstream {
        Stream::Plain(mut s) => pipe(&mut client, &mut s, idle, &target.stats).await,
        Stream::Tls(mut s) => pipe(&mut client, s.as_mut(), idle, &target.stats).await,
    };
    out.piped = piped;
    out.flags = match end {
        End::Closed => CLOSED,
        End::IdleTimeout => "idle_timeout",
        End::Failed(Side::Client, error) => {
            debug!(%error, "client connection failed");
            "downstream_reset"
        }
        End::Failed(Side::Upstream, error) => {
            debug!(%error, cluster = %cluster.name, "upstream connection failed");
            cluster.stats.record_error(UpstreamErrorReason::Reset);
            UpstreamErrorReason::Reset.as_str()
        }
    };
}

/// The cluster's connection limit, as a pool without a queue (so this never waits).
async fn acquire(policy: &ClusterPolicy) -> Result<Option<Permit>, &'static str> {
    let Some(limits) = policy.limits else {
        return Ok(None);
    };
    match policy
        .state()
        .breaker
        .acquire(&limits.without_queue())
        .await
    {
        Ok(p) => Ok(Some(p)),
        Err(o) => {
            policy.stats.overflows[o.index()].inc();
            Err("overflow")
        }
    }
}

/// The key a connection from `ip` is balanced by: the client address for the source-IP hash
/// (hashed as the HTTP path hashes it), random otherwise.
fn balance_key(policy: &ClusterPolicy, ip: IpAddr) -> u64 {
    match &policy.hash {
        Some(HashPolicy::SourceIp) => lb::hash_bytes(ip.to_string().as_bytes()),
        Some(HashPolicy::Header(_) | HashPolicy::Cookie(_) | HashPolicy::Template(_)) | None => {
            lb::random_u64()
        }
    }
}

/// Connects to an endpoint of `cluster`, trying others when a connect fails (see the module
/// documentation). Records the endpoint tried last and why it failed in `out`.
async fn connect(cluster: &Cluster, key: u64, out: &mut Outcome) -> Option<(InFlight, Stream)> {
    let policy = &cluster.resilience;
    let endpoints = cluster.endpoints();
    if endpoints.is_empty() {
        cluster.stats.record_error(UpstreamErrorReason::NoEndpoints);
        out.flags = UpstreamErrorReason::NoEndpoints.as_str();
        return None;
    }
    let attempts = endpoints.len().min(MAX_CONNECT_ATTEMPTS);
    let mut tried = Tried::NONE;
    let mut _retry: Option<RetryPermit> = None;
    for attempt in 1..=attempts {
        let (i, endpoint) = cluster.pick_for(key, tried)?;
        tried.insert(i);
        out.upstream = Some(endpoint.addr);
        let in_flight = endpoint.state.start();
        match connect_stream(endpoint.addr, cluster.connect_timeout, cluster.tls.as_ref()).await {
            Ok(upstream) => {
                policy.record_outcome(endpoints, i, false);
                return Some((in_flight, upstream));
            }
            Err(error) => {
                debug!(%error, cluster = %cluster.name, attempt, "connect failed");
                policy.record_outcome(endpoints, i, true);
                cluster.stats.record_error(error.reason());
                out.flags = error.reason().as_str();
            }
        }
        if attempt == attempts {
            break;
        }
        match RetryPermit::take(policy.state()) {
            Some(permit) => {
                policy.stats.retries.inc();
                _retry = Some(permit);
            }
            None => {
                policy.stats.budget_exhausted.inc();
                break;
            }
        }
    }
    None
}
