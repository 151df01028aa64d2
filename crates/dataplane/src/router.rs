//! The routing table: an IR [`Snapshot`](ir::Snapshot) compiled once per config update into lookup
//! structures, then matched against each request without allocating.
//!
//! Per listener port: a host map (exact hosts in a hash map, suffixes longest first, then any) →
//! per virtual host, routes in order (first match wins) with precompiled matchers → an action:
//! forward to a cluster picked by a precomputed weighted schedule, delegate to another route
//! table (rewrite, then route again, at most [`MAX_DELEGATIONS`] times), or answer directly.
//! Compiling checks every reference (route tables, clusters), regular expression and weight, and
//! reports the first problem with the resource and field path, which becomes the NACK reason.

mod host;
mod matcher;
mod schedule;

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

use self::host::HostMap;
pub use self::host::strip_port;
pub use self::matcher::RequestHead;
use self::matcher::{Matcher, QueryCache};
pub use self::schedule::Schedule;
use crate::metrics::{ClusterStats, NO_ROUTE, ProxyMetrics, RouteStats};
use crate::upstream::{
    H2Endpoint, Http1Client, UpstreamBody, UpstreamError, Upstreams, send_http1,
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
}

/// A listener of the snapshot, with its route table resolved.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// Address to bind; `None` means the proxy's default bind address.
    pub address: Option<IpAddr>,
    pub port: u16,
    pub protocol: ir::Protocol,
    /// `http` (TLS comes later).
    pub scheme: &'static str,
    table: usize,
}

#[derive(Debug)]
struct Table {
    hosts: HostMap,
    vhosts: Box<[VirtualHost]>,
}

#[derive(Debug)]
struct VirtualHost {
    routes: Box<[Route]>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    matcher: Matcher,
    action: Action,
    pub stats: RouteStats,
}

#[derive(Debug)]
enum Action {
    Forward(Forward),
    Delegate { table: usize, rewrite: Rewrite },
    Direct(Direct),
}

/// Where a forward route sends requests.
#[derive(Debug)]
pub struct Forward {
    clusters: Box<[Arc<Cluster>]>,
    schedule: Arc<Schedule>,
    rewrite: Rewrite,
    /// From request start to response headers.
    pub timeout: Option<Duration>,
    /// Retries of failed attempts.
    pub retry: Option<crate::retry::RetryPolicy>,
    /// Stream idle timeout.
    pub idle_timeout: Option<Duration>,
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
}

/// A compiled cluster: its endpoints, load-balancing schedule and connections.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    endpoints: Box<[Endpoint]>,
    http1: Option<Http1Client>,
    pub stats: ClusterStats,
    /// Load balancing, health, outlier detection, circuit breakers and timeouts.
    pub resilience: crate::resilience::ClusterPolicy,
}

/// One endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port`, the authority of HTTP/1.1 upstream request URIs.
    pub authority: Authority,
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
    /// The rewritten path (without query), if a rewrite changed it.
    pub path: Option<String>,
    /// The last host rewrite applied, if any.
    pub host: Option<&'r HostRewrite>,
}

#[derive(Debug)]
pub enum RoutedAction<'r> {
    Forward(&'r Forward),
    Direct(&'r Direct),
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
        let table_index: HashMap<&str, usize> = snapshot
            .route_tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let tables = snapshot
            .route_tables
            .iter()
            .map(|t| compile_table(t, &table_index, &clusters, cx, &mut schedules))
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
            if l.protocol == ir::Protocol::Tcp {
                return Err(err(
                    "protocol",
                    "tcp listeners are not supported yet".into(),
                ));
            }
            let address = match l.address.as_str() {
                "" => None,
                a => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| err("address", format!("{a:?} is not an IP address")))?,
                ),
            };
            let table = *table_index.get(l.route_table.as_str()).ok_or_else(|| {
                err(
                    "routeTable",
                    format!("unknown route table {:?}", l.route_table),
                )
            })?;
            listeners.push(Listener {
                name: l.name.clone(),
                address,
                port: l.port,
                protocol: l.protocol,
                scheme: "http",
                table,
            });
        }
        let mut all: Vec<Arc<Cluster>> = clusters.into_values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Router {
            listeners: listeners.into(),
            tables,
            no_route: cx.metrics.route(NO_ROUTE),
            schedules: schedules.next,
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
        let mut table = &self.tables[listener.table];
        let mut cur_host: &str = host;
        let mut path: Cow<'_, str> = Cow::Borrowed(req.path);
        let mut host_rw: Option<&'r HostRewrite> = None;
        let mut query = QueryCache::default();
        let mut delegations = 0;
        loop {
            let vhost = table.hosts.find(cur_host).ok_or(RouteError::NoRoute)?;
            let route = table.vhosts[vhost]
                .routes
                .iter()
                .find(|r| r.matcher.matches(req, &path, &mut query))
                .ok_or(RouteError::NoRoute)?;
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
struct Schedules<'a> {
    previous: Option<&'a HashMap<String, Arc<Schedule>>>,
    next: HashMap<String, Arc<Schedule>>,
}

impl Schedules<'_> {
    fn get(&mut self, key: String, weights: &[u32]) -> Option<Arc<Schedule>> {
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
            ir::Protocol::Tcp => {
                return Err(CompileError {
                    resource: Kind::Cluster.key(&c.name),
                    path: "protocol".into(),
                    reason: "tcp clusters are not supported yet".into(),
                });
            }
        };
        let connect_timeout = match c.connect_timeout_ms {
            0 => DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
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
                h2: (protocol == UpstreamProtocol::Http2)
                    .then(|| cx.upstreams.h2(addr, connect_timeout)),
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
                http1: (protocol == UpstreamProtocol::Http1)
                    .then(|| cx.upstreams.http1(connect_timeout)),
                stats: cx.metrics.cluster(&c.name),
                resilience,
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
            let matcher = Matcher::compile(&r.matcher, &err)?;
            let action = match &r.action {
                ir::RouteAction::Forward(f) => {
                    let mut picked = Vec::with_capacity(f.clusters.len());
                    let mut weights = Vec::with_capacity(f.clusters.len());
                    for (k, wc) in f.clusters.iter().enumerate() {
                        let c = clusters.get(&wc.cluster).ok_or_else(|| {
                            err(
                                &format!("forward.clusters[{k}].cluster"),
                                format!("unknown cluster {:?}", wc.cluster),
                            )
                        })?;
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
                        schedule,
                        rewrite: Rewrite::compile(&f.rewrite, &matcher, "forward.rewrite", &err)?,
                        timeout: f.timeout_ms.filter(|&ms| ms > 0).map(Duration::from_millis),
                        retry: f.retry.as_ref().map(crate::retry::RetryPolicy::compile),
                        idle_timeout: f
                            .idle_timeout_ms
                            .filter(|&ms| ms > 0)
                            .map(Duration::from_millis),
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
            };
            routes.push(Route {
                name: r.name.clone(),
                matcher,
                action,
                stats: cx.metrics.route(&r.name),
            });
        }
        vhosts.push(VirtualHost {
            routes: routes.into(),
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
        if r.prefix.is_some() && r.full_path.is_some() {
            return Err(err(at, "prefix and fullPath are exclusive".into()));
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
        Ok(Rewrite {
            prefix: r.prefix.as_deref().map(Into::into),
            full_path: r.full_path.as_deref().map(Into::into),
            host,
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
        &self.clusters[self.schedule.next()]
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
    /// endpoint's authority (HTTP/1.1) or the virtual host (HTTP/2).
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match (&self.http1, &endpoint.h2) {
            (Some(client), _) => send_http1(client, endpoint.addr, self.connect_timeout, req).await,
            (None, Some(h2)) => h2.send(req).await,
            (None, None) => Err(UpstreamError::Connect {
                addr: endpoint.addr,
                source: "the cluster has no transport".into(),
            }),
        }
    }
}
