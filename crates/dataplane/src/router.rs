//! The routing table: an IR [`Snapshot`](ir::Snapshot) compiled once per config update into lookup
//! structures, then matched against each request without allocating.
//!
//! Per listener port: a host map (exact hosts in a hash map, suffixes longest first, then any) →
//! per virtual host, routes in order (first match wins) with precompiled matchers → an action:
//! forward to a cluster picked by a precomputed weighted schedule, delegate to another route
//! table (rewrite, then route again, at most [`MAX_DELEGATIONS`] times), or answer directly.
//! Compiling checks every reference (route tables, clusters), regular expression and weight, and
//! reports the first problem with the resource and field path, which becomes the NACK reason.
//!
//! Per-request cost does not grow with the number of hosts and routes: hosts are found with a
//! hash map and a suffix trie ([`host`]), and the routes of a large virtual host through a path
//! trie that yields only the candidate routes, in order ([`index`]). Routes may also redirect
//! ([`redirect`]), rewrite paths with regular expressions ([`rewrite`]), change headers, mirror
//! requests and answer CORS ([`filters`], [`mirror`], [`cors`]).

mod client;
mod cors;
mod filters;
mod host;
mod index;
mod matcher;
mod mirror;
mod redirect;
mod rewrite;
mod schedule;
mod trie;

#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bowline_model::ir;
use bowline_model::proto::Kind;
use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

pub use self::client::{ClientSlot, Refusal, client_address};
use self::client::{Zone, Zones};
pub use self::cors::CorsPolicy;
pub use self::filters::{BackendHeaders, CorsOrigin, FilterChain, RouteFilters};
use self::host::HostMap;
pub use self::host::strip_port;
use self::index::RouteIndex;
pub use self::matcher::RequestHead;
use self::matcher::{Matcher, QueryCache};
pub use self::mirror::{MIRROR_BODY_CAP, MIRROR_TIMEOUT, MIRRORS_IN_FLIGHT};
pub use self::redirect::{Redirect, RedirectRequest};
use self::rewrite::RegexRewrite;
pub use self::schedule::Schedule;
use crate::accesslog::AccessLogger;
use crate::metrics::{ClusterStats, NO_ROUTE, ProxyMetrics, RouteStats};
use crate::tls::{ClientTls, ServerTls, TlsError};
use crate::upstream::{
    ConnTimeouts, H1Endpoint, H2Endpoint, PooledConn, SendError, UpstreamBody, UpstreamError,
    Upstreams,
};

/// Delegations one request may go through; one more answers 500.
pub const MAX_DELEGATIONS: usize = 4;

/// Connect timeout of clusters that set none (0).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What compiling needs besides the snapshot: the long-lived upstream connections and metrics,
/// and the router in service, whose weighted schedules continue where they are when a split or
/// an endpoint list does not change (a 75/25 split stays exact across unrelated updates).
#[derive(Clone, Copy, Debug)]
pub struct CompileContext<'a> {
    pub upstreams: &'a Upstreams,
    pub metrics: &'a ProxyMetrics,
    pub previous: Option<&'a Router>,
}

/// A snapshot that cannot be served, with the resource and field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {path}: {reason}")]
pub struct CompileError {
    /// `kind/name` of the resource, as in the protocol's keys.
    pub resource: String,
    /// Field path inside the resource.
    pub path: String,
    pub reason: String,
}

/// Why a request could not be routed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route")]
    NoRoute,
    #[error("route {route:?} delegates more than {MAX_DELEGATIONS} times")]
    TooManyDelegations { route: String },
}

/// The compiled configuration of one snapshot.
#[derive(Debug)]
pub struct Router {
    listeners: Box<[Listener]>,
    tables: Box<[Table]>,
    no_route: RouteStats,
    /// Schedules by identity and weights, for the next compile to continue.
    schedules: HashMap<String, Arc<Schedule>>,
    /// Every cluster of the snapshot, by name.
    clusters: Box<[Arc<Cluster>]>,
    /// Per-client limit zones by name, for the next compile to keep their counters.
    zones: HashMap<String, Arc<Zone>>,
}

/// A listener of the snapshot, with its route table resolved.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// Address to bind; `None` means the proxy's default bind address.
    pub address: Option<IpAddr>,
    pub port: u16,
    pub protocol: ir::Protocol,
    /// `https` for TLS-only listeners, otherwise `http` (a permissive listener's connections
    /// tell their own).
    pub scheme: &'static str,
    table: usize,
    /// The listener's access log, if it has one.
    pub access_log: Option<AccessLogger>,
    /// TLS termination (`None`: plaintext).
    pub tls: Option<Arc<ServerTls>>,
    /// L4 proxying (`tcp` listeners; they have no route table, and their access log is the
    /// proxy's).
    pub tcp: Option<Arc<crate::tcp::TcpRoute>>,
}

#[derive(Debug)]
struct Table {
    hosts: HostMap,
    vhosts: Box<[VirtualHost]>,
}

#[derive(Debug)]
struct VirtualHost {
    routes: Box<[Route]>,
    /// Which routes may match a path, in order.
    index: RouteIndex,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    matcher: Matcher,
    action: Action,
    pub stats: RouteStats,
    /// Header changes, mirrors and CORS; `None` for most routes.
    filters: Option<Box<RouteFilters>>,
}

#[derive(Debug)]
enum Action {
    Forward(Forward),
    Delegate { table: usize, rewrite: Rewrite },
    Direct(Direct),
    Redirect(Redirect),
}

/// Where a forward route sends requests.
#[derive(Debug)]
pub struct Forward {
    clusters: Box<[Arc<Cluster>]>,
    /// Header changes of each cluster (by index), when any cluster has some.
    backend_headers: Option<Box<[Option<BackendHeaders>]>>,
    schedule: Arc<Schedule>,
    rewrite: Rewrite,
    /// From request start to response headers.
    pub timeout: Option<Duration>,
    /// Retries of failed attempts.
    pub retry: Option<crate::retry::RetryPolicy>,
    /// Stream idle timeout.
    pub idle_timeout: Option<Duration>,
    /// (unresolved weight, total weight) when a share of the requests answers 500.
    unresolved: Option<(u32, u32)>,
}

/// A direct response.
#[derive(Debug)]
pub struct Direct {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Debug, Default)]
struct Rewrite {
    /// Replacement of the prefix matched by the route.
    prefix: Option<Box<str>>,
    full_path: Option<Box<str>>,
    host: Option<HostRewrite>,
    regex: Option<RegexRewrite>,
}

/// A host rewrite, precomputed in the forms requests need.
#[derive(Debug)]
pub struct HostRewrite {
    pub host: Box<str>,
    /// For the `Host` header (HTTP/1.1 upstreams).
    pub header: HeaderValue,
    /// For `:authority` (HTTP/2 upstreams).
    pub authority: Authority,
}

/// How a cluster speaks to its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (`http` clusters).
    Http1,
    /// HTTP/2 prior knowledge (`http2` and `grpc` clusters).
    Http2,
    /// Bytes (`tcp` clusters): reached only by tcp listeners ([`crate::tcp`]).
    Tcp,
}

/// A compiled cluster: its endpoints, load-balancing schedule and connections.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    endpoints: Box<[Endpoint]>,
    pub stats: ClusterStats,
    /// Load balancing, health, outlier detection, circuit breakers and timeouts.
    pub resilience: crate::resilience::ClusterPolicy,
    /// TLS origination (`None`: plaintext), for tcp proxying; HTTP clients hold their own.
    pub tls: Option<Arc<ClientTls>>,
    /// Idle timeout of connections a tcp listener proxies to this cluster when its route sets
    /// none (`None`: never).
    pub tcp_idle_timeout: Option<Duration>,
}

/// One endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port`, the authority of HTTP/1.1 upstream request URIs.
    pub authority: Authority,
    /// The endpoint's keep-alive connections (HTTP/1.1 clusters).
    pub h1: Option<Arc<H1Endpoint>>,
    /// The endpoint's shared connection (HTTP/2 clusters).
    pub h2: Option<Arc<H2Endpoint>>,
    /// Health, ejection and load, kept across config updates.
    pub state: Arc<crate::resilience::EndpointState>,
}

/// The outcome of routing one request.
#[derive(Debug)]
pub struct Routed<'r> {
    pub route: &'r Route,
    pub action: RoutedAction<'r>,
    /// The rewritten path (without query), if a rewrite changed it. For a redirect: the
    /// `Location` path, if the redirect sets one.
    pub path: Option<String>,
    /// The last host rewrite applied, if any.
    pub host: Option<&'r HostRewrite>,
    /// The filters of the routes the request went through.
    pub filters: FilterChain<'r>,
}

#[derive(Debug)]
pub enum RoutedAction<'r> {
    Forward(&'r Forward),
    Direct(&'r Direct),
    Redirect(&'r Redirect),
}

// === impl Router ===

impl Router {
    /// A router with no listeners (before the first config).
    pub fn empty(metrics: &ProxyMetrics) -> Router {
        Router {
            listeners: Box::new([]),
            tables: Box::new([]),
            no_route: metrics.route(NO_ROUTE),
            schedules: HashMap::new(),
            clusters: Box::new([]),
            zones: HashMap::new(),
        }
    }

    /// Compiles a snapshot. Every reference must resolve.
    pub fn compile(
        snapshot: &ir::Snapshot,
        cx: CompileContext<'_>,
    ) -> Result<Router, CompileError> {
        let mut schedules = Schedules {
            previous: cx.previous.map(|r| &r.schedules),
            next: HashMap::new(),
        };
        let clusters = compile_clusters(snapshot, cx, &mut schedules)?;
        let mut zones = Zones {
            previous: cx.previous.map(|r| &r.zones),
            next: HashMap::new(),
        };
        let table_index: HashMap<&str, usize> = snapshot
            .route_tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let tables = snapshot
            .route_tables
            .iter()
            .map(|t| compile_table(t, &table_index, &clusters, cx, &mut schedules, &mut zones))
            .collect::<Result<Box<[_]>, _>>()?;
        let mut ports: HashMap<u16, &str> = HashMap::new();
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for l in &snapshot.listeners {
            let err = |path: &str, reason: String| CompileError {
                resource: Kind::Listener.key(&l.name),
                path: path.into(),
                reason,
            };
            if let Some(other) = ports.insert(l.port, &l.name) {
                return Err(err(
                    "port",
                    format!("port {} is also used by listener {other:?}", l.port),
                ));
            }
            let address = match l.address.as_str() {
                "" => None,
                a => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| err("address", format!("{a:?} is not an IP address")))?,
                ),
            };
            let is_tcp =
                crate::tcp::check_listener(l).map_err(|(path, reason)| err(path, reason))?;
            let table = if is_tcp {
                usize::MAX
            } else {
                *table_index.get(l.route_table.as_str()).ok_or_else(|| {
                    err(
                        "routeTable",
                        format!("unknown route table {:?}", l.route_table),
                    )
                })?
            };
            let access_log = l
                .access_log
                .as_ref()
                .map(AccessLogger::compile)
                .transpose()
                .map_err(|e| match e.split_once(": ") {
                    Some((path, reason)) => err(&format!("accessLog.{path}"), reason.to_string()),
                    None => err("accessLog", e),
                })?;
            let tls = ServerTls::compile(l.tls.as_ref(), cx.upstreams.tls_files())
                .map_err(|e: TlsError| err(&e.path, e.reason))?;
            let (tcp, access_log, tls) =
                crate::tcp::compile_listener(l, &clusters, cx, &mut schedules, access_log, tls)?;
            listeners.push(Listener {
                name: l.name.clone(),
                address,
                port: l.port,
                protocol: l.protocol,
                scheme: match &tls {
                    Some(t) if !t.permissive() => "https",
                    _ => "http",
                },
                table,
                access_log,
                tls,
                tcp,
            });
        }
        let mut all: Vec<Arc<Cluster>> = clusters.into_values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Router {
            listeners: listeners.into(),
            tables,
            no_route: cx.metrics.route(NO_ROUTE),
            schedules: schedules.next,
            zones: zones.next,
            clusters: all.into(),
        })
    }

    /// Every cluster of the snapshot, sorted by name.
    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The listener on a port.
    #[inline]
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    /// Stats of requests that matched no route.
    pub fn no_route_stats(&self) -> &RouteStats {
        &self.no_route
    }

    /// Routes a request that arrived on `listener` for `host` (without port).
    pub fn route<'r>(
        &'r self,
        listener: &'r Listener,
        host: &str,
        req: &RequestHead<'_>,
    ) -> Result<Routed<'r>, RouteError> {
        // A tcp listener has no table (an HTTP connection accepted before an update made its port
        // a tcp listener gets no route).
        let mut table = self.tables.get(listener.table).ok_or(RouteError::NoRoute)?;
        let mut cur_host: &str = host;
        let mut path: Cow<'_, str> = Cow::Borrowed(req.path);
        let mut host_rw: Option<&'r HostRewrite> = None;
        let mut query = QueryCache::default();
        let mut delegations = 0;
        let mut filters = FilterChain::default();
        loop {
            let vhost = &table.vhosts[table.hosts.find(cur_host).ok_or(RouteError::NoRoute)?];
            let route = vhost
                .index
                .find(&path, |i| {
                    vhost.routes[i].matcher.matches(req, &path, &mut query)
                })
                .map(|i| &vhost.routes[i])
                .ok_or(RouteError::NoRoute)?;
            filters.push(route.filters.as_deref());
            query.cors_in_chain |= route.filters.as_ref().is_some_and(|f| f.has_cors());
            let finish = |path: Cow<'_, str>| match path {
                Cow::Owned(p) => Some(p),
                Cow::Borrowed(_) => None,
            };
            match &route.action {
                Action::Direct(d) => {
                    return Ok(Routed {
                        route,
                        action: RoutedAction::Direct(d),
                        path: finish(path),
                        host: host_rw,
                        filters,
                    });
                }
                Action::Redirect(r) => {
                    return Ok(Routed {
                        route,
                        action: RoutedAction::Redirect(r),
                        path: r.path(route.matcher.prefix(), &path),
                        host: host_rw,
                        filters,
                    });
                }
                Action::Forward(f) => {
                    f.rewrite
                        .apply(route.matcher.prefix(), &mut path, &mut host_rw);
                    return Ok(Routed {
                        route,
                        action: RoutedAction::Forward(f),
                        path: finish(path),
                        host: host_rw,
                        filters,
                    });
                }
                Action::Delegate { table: t, rewrite } => {
                    if delegations == MAX_DELEGATIONS {
                        return Err(RouteError::TooManyDelegations {
                            route: route.name.clone(),
                        });
                    }
                    delegations += 1;
                    rewrite.apply(route.matcher.prefix(), &mut path, &mut host_rw);
                    if let Some(h) = host_rw {
                        cur_host = &h.host;
                    }
                    table = &self.tables[*t];
                }
            }
        }
    }
}

/// Weighted schedules by key (identity and weights): reused from the previous router when the
/// key is the same.
pub(crate) struct Schedules<'a> {
    previous: Option<&'a HashMap<String, Arc<Schedule>>>,
    next: HashMap<String, Arc<Schedule>>,
}

impl Schedules<'_> {
    pub(crate) fn get(&mut self, key: String, weights: &[u32]) -> Option<Arc<Schedule>> {
        let schedule = match self.previous.and_then(|p| p.get(&key)) {
            Some(s) => s.clone(),
            None => Arc::new(Schedule::new(weights)?),
        };
        self.next.insert(key, schedule.clone());
        Some(schedule)
    }
}

fn compile_clusters(
    snapshot: &ir::Snapshot,
    cx: CompileContext<'_>,
    schedules: &mut Schedules<'_>,
) -> Result<HashMap<String, Arc<Cluster>>, CompileError> {
    let endpoints: HashMap<&str, &ir::ClusterEndpoints> = snapshot
        .endpoints
        .iter()
        .map(|e| (e.cluster.as_str(), e))
        .collect();
    let mut out = HashMap::with_capacity(snapshot.clusters.len());
    for c in &snapshot.clusters {
        let protocol = match c.protocol {
            ir::Protocol::Http => UpstreamProtocol::Http1,
            ir::Protocol::Http2 | ir::Protocol::Grpc => UpstreamProtocol::Http2,
            ir::Protocol::Tcp => UpstreamProtocol::Tcp,
        };
        let connect_timeout = match c.connect_timeout_ms {
            0 => DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let timeouts = ConnTimeouts {
            connect: connect_timeout,
            send: c
                .send_timeout_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
        };
        let tls = match &c.tls {
            None => None,
            Some(t) => Some(Arc::new(
                ClientTls::compile(
                    t,
                    protocol == UpstreamProtocol::Http2,
                    cx.upstreams.tls_files(),
                )
                .map_err(|e| CompileError {
                    resource: Kind::Cluster.key(&c.name),
                    path: e.path,
                    reason: e.reason,
                })
                .map(|t| crate::tcp::upstream_tls(t, protocol))?,
            )),
        };
        let mut eps = Vec::new();
        let mut specs = Vec::new();
        let mut weights = Vec::new();
        let mut key = format!("cluster/{}|", c.name);
        for (i, ep) in endpoints
            .get(c.name.as_str())
            .map(|e| e.endpoints.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ip = ep.address.parse::<IpAddr>().map_err(|_| CompileError {
                resource: Kind::Endpoints.key(&c.name),
                path: format!("endpoints[{i}].address"),
                reason: format!("{:?} is not an IP address", ep.address),
            })?;
            let addr = SocketAddr::new(ip, ep.port);
            specs.push(crate::resilience::EndpointSpec {
                addr,
                weight: ep.weight.max(1),
            });
            eps.push(Endpoint {
                addr,
                authority: Authority::from_maybe_shared(Bytes::from(addr.to_string()))
                    .expect("a socket address is an authority"),
                h1: (protocol == UpstreamProtocol::Http1)
                    .then(|| cx.upstreams.h1(addr, timeouts, tls.as_ref())),
                h2: (protocol == UpstreamProtocol::Http2)
                    .then(|| cx.upstreams.h2_tls(addr, timeouts, tls.as_ref())),
                state: cx.upstreams.resilience().endpoint(&c.name, addr),
            });
            // An unset weight (0) counts as 1: endpoints are drained by removing them.
            weights.push(ep.weight.max(1));
            key.push_str(&format!("{addr}={},", ep.weight.max(1)));
        }
        let lb = schedules.get(key, &weights);
        let resilience = crate::resilience::ClusterPolicy::compile(
            c,
            &specs,
            lb,
            cx.upstreams.resilience(),
            cx.metrics,
        )?;
        out.insert(
            c.name.clone(),
            Arc::new(Cluster {
                name: c.name.clone(),
                protocol,
                connect_timeout,
                endpoints: eps.into(),
                stats: cx.metrics.cluster(&c.name),
                resilience,
                tcp_idle_timeout: crate::tcp::cluster_idle_timeout(c),
                tls,
            }),
        );
    }
    Ok(out)
}

fn compile_table(
    t: &ir::RouteTable,
    tables: &HashMap<&str, usize>,
    clusters: &HashMap<String, Arc<Cluster>>,
    cx: CompileContext<'_>,
    schedules: &mut Schedules<'_>,
    zones: &mut Zones<'_>,
) -> Result<Table, CompileError> {
    let resource = Kind::RouteTable.key(&t.name);
    let mut vhosts = Vec::with_capacity(t.virtual_hosts.len());
    for (i, v) in t.virtual_hosts.iter().enumerate() {
        let mut routes = Vec::with_capacity(v.routes.len());
        for (j, r) in v.routes.iter().enumerate() {
            let at = format!("virtualHosts[{i}].routes[{j}]");
            let err = |path: &str, reason: String| CompileError {
                resource: resource.clone(),
                path: format!("{at}.{path}"),
                reason,
            };
            let mut matcher = Matcher::compile(&r.matcher, &err)?;
            let filters = RouteFilters::compile(r, clusters, zones, &err)?;
            matcher.set_cors_preflight(filters.as_ref().is_some_and(|f| f.has_cors()));
            let action = match &r.action {
                ir::RouteAction::Forward(f) => {
                    let mut picked = Vec::with_capacity(f.clusters.len());
                    let mut weights = Vec::with_capacity(f.clusters.len());
                    let mut backend_headers = Vec::with_capacity(f.clusters.len());
                    for (k, wc) in f.clusters.iter().enumerate() {
                        backend_headers.push(BackendHeaders::compile(
                            wc,
                            &format!("forward.clusters[{k}]"),
                            &err,
                        )?);
                        let c = clusters.get(&wc.cluster).ok_or_else(|| {
                            err(
                                &format!("forward.clusters[{k}].cluster"),
                                format!("unknown cluster {:?}", wc.cluster),
                            )
                        })?;
                        crate::tcp::check_http_cluster(c)
                            .map_err(|e| err(&format!("forward.clusters[{k}].cluster"), e))?;
                        picked.push(c.clone());
                        weights.push(wc.weight);
                    }
                    let mut key = format!("route/{}/{i}/{}|", t.name, r.name);
                    for wc in &f.clusters {
                        key.push_str(&format!("{}={},", wc.cluster, wc.weight));
                    }
                    let schedule = schedules.get(key, &weights).ok_or_else(|| {
                        err("forward.clusters", "no cluster has a weight above 0".into())
                    })?;
                    Action::Forward(Forward {
                        clusters: picked.into(),
                        backend_headers: backend_headers
                            .iter()
                            .any(Option::is_some)
                            .then(|| backend_headers.into()),
                        schedule,
                        rewrite: Rewrite::compile(&f.rewrite, &matcher, "forward.rewrite", &err)?,
                        timeout: f.timeout_ms.filter(|&ms| ms > 0).map(Duration::from_millis),
                        retry: f.retry.as_ref().map(crate::retry::RetryPolicy::compile),
                        idle_timeout: f
                            .idle_timeout_ms
                            .filter(|&ms| ms > 0)
                            .map(Duration::from_millis),
                        unresolved: (f.unresolved_weight > 0).then(|| {
                            let total = weights.iter().copied().fold(0u32, u32::saturating_add);
                            (
                                f.unresolved_weight,
                                total.saturating_add(f.unresolved_weight),
                            )
                        }),
                    })
                }
                ir::RouteAction::Delegate(d) => Action::Delegate {
                    table: *tables.get(d.route_table.as_str()).ok_or_else(|| {
                        err(
                            "delegate.routeTable",
                            format!("unknown route table {:?}", d.route_table),
                        )
                    })?,
                    rewrite: Rewrite::compile(&d.rewrite, &matcher, "delegate.rewrite", &err)?,
                },
                ir::RouteAction::DirectResponse(d) => Action::Direct(Direct {
                    status: StatusCode::from_u16(d.status).map_err(|_| {
                        err(
                            "directResponse.status",
                            format!("{} is not an HTTP status", d.status),
                        )
                    })?,
                    body: Bytes::from(d.body.clone()),
                }),
                ir::RouteAction::Redirect(rd) => {
                    let redirect = Redirect::compile(rd, &err)?;
                    if redirect.replaces_prefix()
                        && matcher.prefix().is_none()
                        && matcher.has_path_match()
                    {
                        return Err(err(
                            "redirect.path.prefix",
                            "a prefix redirect needs a prefix path match".into(),
                        ));
                    }
                    Action::Redirect(redirect)
                }
            };
            routes.push(Route {
                name: r.name.clone(),
                matcher,
                action,
                stats: cx.metrics.route(&r.name),
                filters,
            });
        }
        let index = RouteIndex::new(routes.iter().map(|r| r.matcher.path_key()));
        vhosts.push(VirtualHost {
            routes: routes.into(),
            index,
        });
    }
    Ok(Table {
        hosts: HostMap::new(t.virtual_hosts.iter().map(|v| v.hosts.as_slice())),
        vhosts: vhosts.into(),
    })
}

// === impl Rewrite ===

impl Rewrite {
    fn compile(
        r: &ir::Rewrite,
        matcher: &Matcher,
        at: &str,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Rewrite, CompileError> {
        let paths = usize::from(r.prefix.is_some())
            + usize::from(r.full_path.is_some())
            + usize::from(r.regex.is_some());
        if paths > 1 {
            return Err(err(at, "prefix, fullPath and regex are exclusive".into()));
        }
        if r.prefix.is_some() && matcher.prefix().is_none() && matcher.has_path_match() {
            return Err(err(
                &format!("{at}.prefix"),
                "a prefix rewrite needs a prefix path match".into(),
            ));
        }
        if let Some(p) = &r.full_path
            && (!p.starts_with('/')
                || p.contains('?')
                || http::uri::PathAndQuery::try_from(p.as_str()).is_err())
        {
            return Err(err(
                &format!("{at}.fullPath"),
                format!("{p:?} is not an absolute path"),
            ));
        }
        if let Some(p) = &r.prefix
            && (p.contains('?') || http::uri::PathAndQuery::try_from(format!("/{p}")).is_err())
        {
            return Err(err(
                &format!("{at}.prefix"),
                format!("{p:?} is not a path prefix"),
            ));
        }
        let host = match &r.host {
            None => None,
            Some(h) => {
                let bad = || err(&format!("{at}.host"), format!("{h:?} is not a host"));
                Some(HostRewrite {
                    host: strip_port(h).to_ascii_lowercase().into(),
                    header: HeaderValue::from_str(h).map_err(|_| bad())?,
                    authority: h.parse::<Authority>().map_err(|_| bad())?,
                })
            }
        };
        let regex = match &r.regex {
            None => None,
            Some(x) => Some(
                RegexRewrite::compile(&x.pattern, &x.substitution)
                    .map_err(|(field, reason)| err(&format!("{at}.regex.{field}"), reason))?,
            ),
        };
        Ok(Rewrite {
            prefix: r.prefix.as_deref().map(Into::into),
            full_path: r.full_path.as_deref().map(Into::into),
            host,
            regex,
        })
    }

    /// Applies the rewrite to the path (whose `matched` prefix the route matched) and records a
    /// host rewrite.
    fn apply<'r>(
        &'r self,
        matched: Option<&str>,
        path: &mut Cow<'_, str>,
        host: &mut Option<&'r HostRewrite>,
    ) {
        if let Some(full) = &self.full_path {
            *path = Cow::Owned(full.to_string());
        } else if let Some(replacement) = &self.prefix {
            let rest = path.get(matched.map_or(0, str::len)..).unwrap_or_default();
            *path = Cow::Owned(replace_prefix(replacement, rest));
        } else if let Some(re) = &self.regex
            && let Some(p) = re.apply(path)
        {
            *path = Cow::Owned(p);
        }
        if let Some(h) = &self.host {
            *host = Some(h);
        }
    }
}

/// `replacement` followed by `rest`, with one slash dropped when both bring one, and a leading
/// slash guaranteed: `/red/x` with `/red` → `/` gives `/x`, and `/red` gives `/`.
pub fn replace_prefix(replacement: &str, rest: &str) -> String {
    let rest = if replacement.ends_with('/') {
        rest.strip_prefix('/').unwrap_or(rest)
    } else {
        rest
    };
    let mut out = String::with_capacity(1 + replacement.len() + rest.len());
    let has_leading_slash =
        replacement.starts_with('/') || (replacement.is_empty() && rest.starts_with('/'));
    if !has_leading_slash {
        out.push('/');
    }
    out.push_str(replacement);
    out.push_str(rest);
    out
}

// === impl Forward ===

impl Forward {
    /// The next cluster by weight.
    #[inline]
    pub fn pick(&self) -> &Arc<Cluster> {
        self.pick_with_headers().0
    }

    /// The next cluster by weight, with its own header changes if it has any.
    #[inline]
    pub fn pick_with_headers(&self) -> (&Arc<Cluster>, Option<&BackendHeaders>) {
        let i = self.schedule.next();
        let headers = self.backend_headers.as_ref().and_then(|h| h[i].as_ref());
        (&self.clusters[i], headers)
    }

    /// Whether this request falls in the share of unresolved backends (answered 500): a random
    /// draw by weight, only for routes that have such a share.
    #[inline]
    pub fn draws_unresolved(&self) -> bool {
        self.unresolved
            .is_some_and(|(u, total)| crate::lb::random_u64() % u64::from(total) < u64::from(u))
    }
}

// === impl Cluster ===

impl Cluster {
    /// An endpoint by the cluster's load-balancing policy, for a request without a hash key;
    /// `None` when the cluster has no endpoints.
    #[inline]
    pub fn pick(&self) -> Option<&Endpoint> {
        self.pick_for(crate::lb::random_u64(), crate::lb::Tried::NONE)
            .map(|(_, e)| e)
    }

    /// An endpoint (and its index) for a request balanced by `key`, avoiding those `tried`
    /// when others can take it; `None` when the cluster has no endpoints.
    #[inline]
    pub fn pick_for(&self, key: u64, tried: crate::lb::Tried) -> Option<(usize, &Endpoint)> {
        let balancer = self.resilience.balancer.as_ref()?;
        let i = balancer.pick(&self.endpoints[..], key, tried)?;
        Some((i, &self.endpoints[i]))
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Sends a request to one of this cluster's endpoints. The request URI must carry the
    /// endpoint's authority (HTTP/1.1) or the virtual host (HTTP/2). An HTTP/1.1 connection
    /// comes back with the response: it returns to the endpoint when dropped, so hold it until
    /// the response body is done. A request that was never written comes back in the error.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Option<PooledConn>), SendError> {
        match (&endpoint.h1, &endpoint.h2) {
            (Some(h1), _) => h1.send(req).await.map(|(resp, conn)| (resp, Some(conn))),
            (None, Some(h2)) => h2.send(req).await.map(|resp| (resp, None)),
            (None, None) => Err(UpstreamError::Connect {
                addr: endpoint.addr,
                source: "the cluster has no transport".into(),
            }
            .into()),
        }
    }
}
