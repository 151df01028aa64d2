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
    /// Where and how to log each request this listener answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// An access log: one line per request, in Envoy's command-operator format as App Mesh uses it
/// (`%START_TIME%`, `%REQ(:METHOD)%`, `%RESPONSE_CODE%`, `%DURATION%`…).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLog {
    /// File to append to; `/dev/stdout` and `/dev/stderr` write to the proxy's own streams.
    pub path: String,
    pub format: AccessLogFormat,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessLogFormat {
    /// A line template; a missing trailing newline is added.
    Text(String),
    /// One JSON object per line: each key's value is a template.
    Json(Vec<JsonLogField>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonLogField {
    pub key: String,
    pub value: String,
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
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
