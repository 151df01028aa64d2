//! The intermediate representation: the only thing a proxy understands.
//!
//! Shape (after Envoy): [`Listener`] → [`RouteTable`] (virtual hosts → ordered routes) →
//! [`Cluster`] → [`ClusterEndpoints`]. Every object has a unique name within its type. The control
//! plane produces one [`Snapshot`] per proxy with pure functions; the engine compiles it into
//! lookup structures once per update.
//!
//! Route order is significant: the first route of a virtual host whose match accepts the request
//! wins. Translation sorts routes (priority, then specificity) so the engine never has to.

use serde::{Deserialize, Serialize};

/// Everything one proxy needs. Collections are kept sorted by name so that snapshots compare and
/// serialize deterministically (golden files).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_tables: Vec<RouteTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ClusterEndpoints>,
}

impl Snapshot {
    /// Sorts every collection by name (the canonical order).
    pub fn normalize(&mut self) {
        self.listeners.sort_by(|a, b| a.name.cmp(&b.name));
        self.route_tables.sort_by(|a, b| a.name.cmp(&b.name));
        self.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        self.endpoints.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    }
}

/// Application protocol of a listener or cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

/// A socket the proxy accepts connections on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    /// IP address to bind; empty means the proxy's default (its `--bind` flag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Name of the [`RouteTable`] that routes this listener's requests.
    pub route_table: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    pub name: String,
    /// Matched by the request's host: exact hosts first, then the longest suffix, then any.
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HostMatch {
    /// Any host.
    Any,
    /// The host (without port), compared case-insensitively.
    Exact(String),
    /// The host ends with this value (for example `.example.com`), case-insensitively.
    Suffix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    pub name: String,
    pub hosts: Vec<HostMatch>,
    /// In order: the first match wins.
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Stable name for metrics and logs (for example `gatewayroute/ns/name`).
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// The path starts with this value (character-wise, as App Mesh matches prefixes).
    Prefix(String),
    /// The path (without query) equals this value.
    Exact(String),
    /// The whole path (without query) matches this regular expression.
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// The whole value matches this regular expression.
    Regex(String),
    /// The value is an integer in `[start, end)`.
    Range {
        start: i64,
        end: i64,
    },
    /// The header or parameter is present, whatever its value.
    Present,
}

/// A match on a header (name compared case-insensitively) or query parameter (case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueMatch {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: StringMatch,
    /// Negates the result (a missing header matches an inverted match).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// Every present condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<KeyValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<KeyValueMatch>,
    /// The listener port the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replace the path prefix matched by the route's `PathMatch::Prefix` with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Replace the whole path (the query string is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_path: Option<String>,
    /// Replace the Host header / `:authority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.prefix.is_none() && self.full_path.is_none() && self.host.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    /// Send to one of the clusters, chosen by weight.
    Forward(ForwardAction),
    /// Apply the rewrite, then route again in another route table (a gateway route whose target
    /// is a virtual service with a router). The delegated table's host matching is skipped:
    /// it has one virtual host matching any host.
    Delegate(DelegateAction),
    /// Answer without an upstream.
    DirectResponse(DirectResponse),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardAction {
    /// Chosen by weight; weights of 0 are never chosen. At least one entry.
    pub clusters: Vec<WeightedCluster>,
    #[serde(default, skip_serializing_if = "Rewrite::is_empty")]
    pub rewrite: Rewrite,
    /// Per-request timeout in milliseconds (from request start to response headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries of failed attempts (App Mesh `retryPolicy`); `None`: one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Stream idle timeout in milliseconds (App Mesh route `timeout.idle`): the longest wait for
    /// the response headers after the request was sent, and between two response body frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegateAction {
    pub route_table: String,
    #[serde(default, skip_serializing_if = "Rewrite::is_empty")]
    pub rewrite: Rewrite,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// How a cluster picks an endpoint for a request. Every policy honours endpoint weights and skips
/// endpoints that are unhealthy (active health checks) or ejected (outlier detection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two choices: of two endpoints drawn by weight, the one with fewer requests in
    /// flight per unit of weight.
    LeastRequest,
    /// Drawn at random by weight.
    Random,
    /// Consistent hashing on a ring with virtual nodes in proportion to weight; needs
    /// [`Cluster::hash_on`].
    RingHash,
    /// Maglev consistent hashing (lookup table of prime size, filled in proportion to weight);
    /// needs [`Cluster::hash_on`].
    Maglev,
}

/// A named group of interchangeable endpoints (one virtual node, one port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    /// How to speak to the endpoints: `http` (HTTP/1.1), `http2`/`grpc` (h2c), `tcp`.
    pub protocol: Protocol,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// The request key of the hash policies (`RingHash`, `Maglev`); set exactly for those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Active health checks of every endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Passive health: endpoints that keep failing are ejected for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits on concurrent connections and requests; beyond them requests are answered 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// Stream idle timeout in milliseconds for requests to this cluster (the node listener's
    /// `timeout.<protocol>.idle`); the shorter of this and the route's applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Per-request timeout in milliseconds for requests to this cluster (the node listener's
    /// `timeout.<protocol>.perRequest`); the shorter of this and the route's applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// An IP address (v4 or v6).
    pub address: String,
    pub port: u16,
    pub weight: u32,
}

/// The current endpoints of one cluster (may be empty: requests then get 503).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpoints {
    pub cluster: String,
    pub endpoints: Vec<Endpoint>,
}

/// What a hash policy hashes to pick an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashOn {
    /// The client's IP address (IP hash).
    SourceIp,
    /// The value of a request header (name in lower case); requests without it are spread at
    /// random.
    Header { name: String },
    /// A cookie (sticky sessions). A request without it gets an endpoint and a `Set-Cookie` with a
    /// fresh value, so the client's next requests stick to that endpoint.
    #[serde(rename_all = "camelCase")]
    Cookie {
        name: String,
        /// `Max-Age` of the cookie set; 0 makes a session cookie.
        #[serde(default, skip_serializing_if = "is_zero")]
        ttl_seconds: u64,
        /// `Path` of the cookie set; none: the cookie has no `Path` attribute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A condition under which a failed attempt is retried (App Mesh's retry events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryOn {
    /// `server-error`: status 500–508, 510, 511, or no response (connect failure, reset, per-try
    /// timeout).
    ServerError,
    /// `gateway-error`: status 502, 503, 504, or no response.
    GatewayError,
    /// `client-error`: status 409.
    ClientError,
    /// `stream-error`: the HTTP/2 stream was refused (`REFUSED_STREAM`).
    StreamError,
    /// `connection-error` (tcp): no connection to the endpoint.
    ConnectionError,
    /// gRPC status `CANCELLED` (1).
    Cancelled,
    /// gRPC status `DEADLINE_EXCEEDED` (4).
    DeadlineExceeded,
    /// gRPC status `INTERNAL` (13).
    Internal,
    /// gRPC status `RESOURCE_EXHAUSTED` (8).
    ResourceExhausted,
    /// gRPC status `UNAVAILABLE` (14).
    Unavailable,
}

/// Retries of a route (App Mesh `retryPolicy`). Retries back off exponentially with jitter and
/// are bounded per cluster by a retry budget; only requests whose body can be replayed are
/// retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Timeout of each attempt (the first included) in milliseconds; `None`: only the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_retry_timeout_ms: Option<u64>,
    /// At least one.
    pub retry_on: Vec<RetryOn>,
}

/// Active health checking of a cluster's endpoints (App Mesh listener `healthCheck`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `http`/`http2`: a GET of `path` answered 200–399; `grpc`: `grpc.health.v1.Health/Check`
    /// answered `SERVING`; `tcp`: a connection is accepted.
    pub protocol: Protocol,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes that make an unhealthy endpoint healthy (at least 1).
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy (at least 1).
    pub unhealthy_threshold: u32,
    /// Request path (`http`, `http2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port to check instead of the endpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Outlier detection (App Mesh listener `outlierDetection`, Envoy's consecutive 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive server errors (5xx, or no response) that eject an endpoint (at least 1).
    pub max_server_errors: u32,
    /// Period after which an endpoint's ejection count decays by one.
    pub interval_ms: u64,
    /// An ejection lasts this long times the number of times the endpoint was ejected.
    pub base_ejection_duration_ms: u64,
    /// At most this share (0–100) of the cluster's endpoints is ejected at once, but at least one.
    pub max_ejection_percent: u32,
}

/// Connection pool limits, enforced as circuit breakers (App Mesh listener `connectionPool`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakers {
    /// Concurrent connections (HTTP/1.1: requests in flight, one per connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests that may wait for a connection when `max_connections` are busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Concurrent requests (HTTP/2, gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}
