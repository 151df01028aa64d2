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
    /// Name of the [`RouteTable`] that routes this listener's requests; empty for `tcp`
    /// listeners, which have none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route_table: String,
    /// Where and how to log each request this listener answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// TLS termination; `None` serves plaintext (HTTP/1.1 and h2c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// What a `tcp` listener does with each connection it accepts (set exactly for `tcp`
    /// listeners): L4 proxying to a cluster chosen by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_proxy: Option<TcpProxy>,
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
    /// The host ends with this value (for example `.example.com`), case-insensitively. A
    /// Gateway API wildcard host `*.example.com` (one or more labels before `example.com`, never
    /// `example.com` itself) is this variant with the value `.example.com`: the IR has no
    /// separate wildcard variant. A leading `*` is ignored (`*.example.com` ≡ `.example.com`).
    Suffix(String),
    /// Exactly one DNS label followed by this domain, case-insensitively: `example.com` matches
    /// `foo.example.com` but neither `foo.bar.example.com` nor `example.com` (the Ingress
    /// wildcard `*.example.com`). Written without the `*.`. Chosen after exact hosts and before
    /// suffixes.
    Wildcard(String),
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
    /// Changes to the request headers before the request goes upstream. Across a delegation
    /// chain, every route's changes apply, outer route first.
    #[serde(default, skip_serializing_if = "HeaderMods::is_empty")]
    pub request_headers: HeaderMods,
    /// Changes to the response headers (upstream responses, direct responses and redirects),
    /// outer route first across a delegation chain.
    #[serde(default, skip_serializing_if = "HeaderMods::is_empty")]
    pub response_headers: HeaderMods,
    /// Copies of the request sent to other clusters, fire-and-forget, when the request is
    /// forwarded (the routes of a delegation chain add up). Responses of mirrors are discarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Cross-origin resource sharing. The innermost route of a delegation chain that has a
    /// policy decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    /// Which client addresses may use the route (ingress-nginx `whitelist-source-range` /
    /// `denylist-source-range`); others are answered 403. Every route of a delegation chain
    /// must admit the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Box<ClientAccess>>,
    /// Request-rate and concurrency limits per client address (ingress-nginx `limit-rps`,
    /// `limit-rpm`, `limit-connections`). Every route of a delegation chain applies its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_limits: Option<Box<ClientLimits>>,
    /// Largest request body in bytes, answered 413 beyond; `Some(0)` lifts the listener's
    /// limit for this route; `None` keeps it. The innermost route of a chain that sets one
    /// decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
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
    /// Negates the result for a present header or parameter. A missing one matches only an
    /// inverted `Present` match (Envoy's, and so App Mesh's, semantics): an inverted value match
    /// requires it to be present with another value.
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
    /// Cookies by name (case-sensitive), read from every `Cookie` header of the request (the
    /// first cookie of a name counts; surrounding double quotes of a value are removed). A
    /// missing cookie matches only an inverted match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<KeyValueMatch>,
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
    /// Replace every match of a regular expression in the path (without query). Exclusive with
    /// `prefix` and `full_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<RegexRewrite>,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.prefix.is_none()
            && self.full_path.is_none()
            && self.host.is_none()
            && self.regex.is_none()
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
    /// Answer with a redirect to a URL derived from the request's.
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
    /// Header changes when this cluster is chosen, after the route's (Gateway API filters of
    /// one backendRef among several). Boxed: most clusters have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Box<BackendHeaders>>,
}

impl WeightedCluster {
    /// A cluster and its weight, without header changes of its own.
    pub fn new(cluster: String, weight: u32) -> Self {
        WeightedCluster {
            cluster,
            weight,
            headers: None,
        }
    }
}

/// The header changes of one weighted cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendHeaders {
    /// Changes to the request headers when the cluster is chosen.
    #[serde(default, skip_serializing_if = "HeaderMods::is_empty")]
    pub request: HeaderMods,
    /// Changes to the response headers when the cluster was chosen.
    #[serde(default, skip_serializing_if = "HeaderMods::is_empty")]
    pub response: HeaderMods,
}

impl BackendHeaders {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
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
    /// A share of the requests, weighed with `clusters`, answered 500 instead: the weight of
    /// backends that cannot be resolved (Gateway API: requests that would have gone to an
    /// invalid backendRef get 500). 0: none.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub unresolved_weight: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
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
    /// Peak EWMA (ingress-nginx `load-balance: ewma`, Linkerd's balancer): power of two
    /// choices by latency. Each endpoint keeps a moving average of its time to response
    /// headers that jumps to a slower observation at once and decays over 10 s; of two
    /// endpoints drawn by weight, the one with the lower (average + 0.1 ms) × (requests in
    /// flight + 1) wins. Failed attempts count as slow ones (1 s at least).
    PeakEwma,
}

/// A named group of interchangeable endpoints (one virtual node, one port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    /// How to speak to the endpoints: `http` (HTTP/1.1), `http2`/`grpc` (h2c), `tcp` (bytes,
    /// reachable only through a [`TcpProxy`]; a tcp proxy may also send to the other kinds).
    pub protocol: Protocol,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// TLS origination to the endpoints; `None` connects in plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
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
    /// Idle timeout in milliseconds of connections a [`TcpProxy`] sends to this cluster (the
    /// node listener's `timeout.tcp.idle`), used when the proxy sets none; 0 disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_idle_timeout_ms: Option<u64>,
    /// Send timeout in milliseconds of HTTP connections to the endpoints (ingress-nginx
    /// `proxy-send-timeout`): the longest one write of a request may stay blocked because the
    /// endpoint reads nothing; beyond it the request fails with 504. Not a limit on sending the
    /// whole request. `None` or 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout_ms: Option<u64>,
}

impl Cluster {
    /// A round-robin cluster of `protocol` in plaintext, without health checks, outlier
    /// detection, circuit breakers or timeouts beyond the connect timeout.
    pub fn new(name: impl Into<String>, protocol: Protocol, connect_timeout_ms: u64) -> Cluster {
        Cluster {
            name: name.into(),
            protocol,
            lb_policy: LbPolicy::RoundRobin,
            connect_timeout_ms,
            tls: None,
            hash_on: None,
            health_check: None,
            outlier_detection: None,
            circuit_breakers: None,
            idle_timeout_ms: None,
            request_timeout_ms: None,
            tcp_idle_timeout_ms: None,
            send_timeout_ms: None,
        }
    }
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

/// L4 proxying of a `tcp` listener (App Mesh `tcpRoute`): each accepted connection goes to one
/// of the clusters, chosen by weight (a smooth weighted round robin over connections), then to
/// an endpoint picked by that cluster's load balancer, and bytes are copied both ways until both
/// sides have closed, either side fails, or the connection stays idle too long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpProxy {
    /// Stable name for metrics and logs (for example `gatewayroute/ns/name`).
    pub name: String,
    /// Chosen by weight per connection; weights of 0 are never chosen. At least one entry.
    pub clusters: Vec<WeightedCluster>,
    /// Closes a connection when no byte moved in either direction for this many milliseconds;
    /// 0 disables it. `None`: the chosen cluster's [`Cluster::tcp_idle_timeout_ms`], else the
    /// engine's default (one hour, Envoy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

// === routing filters (redirects, rewrites, header changes, mirrors, CORS) ===

impl Route {
    /// A route without filters.
    pub fn new(name: impl Into<String>, matcher: RouteMatch, action: RouteAction) -> Route {
        Route {
            name: name.into(),
            matcher,
            action,
            request_headers: HeaderMods::default(),
            response_headers: HeaderMods::default(),
            mirrors: Vec::new(),
            cors: None,
            access: None,
            client_limits: None,
            max_request_body_bytes: None,
        }
    }
}

// === TLS ===

/// Which connections a TLS listener accepts (App Mesh listener `tls.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS only.
    #[default]
    Strict,
    /// TLS and plaintext on the same port, told apart by the first byte of the connection (a
    /// TLS ClientHello record or not). A client certificate is requested from TLS clients and
    /// verified when presented, but not required.
    Permissive,
    /// Plaintext only: the certificates are not loaded.
    Disabled,
}

/// TLS termination on a listener. PEM files are read by the proxy, watched, and reloaded when
/// they change (new handshakes use the new certificate; open connections keep theirs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    pub mode: TlsMode,
    /// The certificates served, chosen by the client's SNI: an exact server name first, then a
    /// wildcard (`*.example.com` matches one label), then the certificate without server names
    /// (at most one). At least one unless the mode is `disabled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<TlsCertificate>,
    /// Client certificate validation (mutual TLS). In `strict` mode a client certificate is
    /// required; in `permissive` mode it is verified when presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<TlsValidation>,
    /// Answer 421 (Misdirected Request) to a request whose host selects another entry of
    /// `certificates` than the connection's SNI did (or the default entry, without SNI): the
    /// client reused a connection for a host that another listener serves (HTTP/2 connection
    /// coalescing, or a client that sends a Host unlike its SNI). Gateway API HTTPS listeners
    /// sharing a port set it; each has its own entry, even when they share a certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detect_misdirected: bool,
}

/// A certificate chain and its private key, as PEM files, and the SNI names it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// Path of the PEM certificate chain, leaf first.
    pub certificate_chain: String,
    /// Path of the PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: String,
    /// Lower-case DNS names (`api.example.com`) or wildcards (`*.example.com`); empty: the
    /// default certificate, served when no other certificate's name matches or without SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
}

/// How a peer's certificate is validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsValidation {
    /// Path of the PEM bundle of trusted certificate authorities.
    pub trust_chain: String,
    /// The peer certificate must carry one of these subject alternative names (DNS names
    /// compared case-insensitively, URIs and IP addresses exactly); empty: any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<String>,
}

/// A client certificate presented to upstreams (mutual TLS), as PEM files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsClientCertificate {
    pub certificate_chain: String,
    pub private_key: String,
}

/// TLS origination to a cluster's endpoints: `http` clusters speak HTTP/1.1 over TLS (ALPN
/// `http/1.1`), `http2` and `grpc` clusters HTTP/2 over TLS (ALPN `h2`), `tcp` clusters carry
/// the proxied bytes over TLS (no ALPN).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// Sent as SNI (unless it is an IP address) and, when `subject_alternative_names` is empty,
    /// the name the endpoint's certificate must be valid for.
    pub server_name: String,
    /// Path of the PEM bundle of authorities the endpoint's certificate must chain to. Required
    /// unless `skip_verification`: the proxy has no system roots.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trust_chain: String,
    /// When set, the endpoint's certificate must carry one of these subject alternative names
    /// (as in [`TlsValidation`]) instead of being valid for `server_name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<TlsClientCertificate>,
    /// The endpoint's certificate is not verified: the connection is encrypted, but the
    /// endpoint is not authenticated (ingress-nginx's default for HTTPS backends,
    /// `proxy_ssl_verify off`). `trust_chain` and `subject_alternative_names` are then empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verification: bool,
}

/// A TLS setting the engine cannot serve: the field (relative to the `tls` object) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTls {
    pub path: String,
    pub reason: String,
}

impl InvalidTls {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidTls {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A regular-expression path rewrite: every non-overlapping match of `pattern` in the path is
/// replaced with `substitution`, where `$1` / `${1}` stand for a numbered capture group, `${name}`
/// for a named one and `$$` for a literal `$` (Rust `regex` replacement syntax; a reference to a
/// group the pattern does not have is an error). A result without a leading `/` gets one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

/// A header name and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

/// Header changes, applied in this order: `remove`, then `set` (replaces every value of the
/// header), then `add` (appends a value). Names are case-insensitive. Connection-level headers
/// (`host`, `content-length`, `transfer-encoding`, `connection`, …) and pseudo-headers cannot be
/// changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMods {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderPair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderPair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderMods {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// Where a redirect points. Unset parts come from the request: the scheme of the listener, the
/// request's host, its port (or the default port of a new scheme), its path and its query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name (without port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port; left out of the URL when it is the scheme's default (80 for http, 443 for https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RedirectPath>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// The `Location` leaves out the request's query string (nginx's `return 301 URL`, which
    /// ingress-nginx's redirect annotations use); by default it is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_query: bool,
}

/// The path of a redirect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RedirectPath {
    /// Replace the whole path.
    FullPath(String),
    /// Replace the prefix matched by the route's `PathMatch::Prefix` (as a prefix rewrite does).
    Prefix(String),
}

/// A copy of the request sent to another cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests mirrored, 0..=100 (spread evenly: 25 mirrors one request in four).
    pub percent: u32,
}

/// A cross-origin resource sharing policy. Preflight requests (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) are answered by the proxy; other requests with an allowed
/// `Origin` get the `Access-Control-Allow-*` response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Origins (`scheme://host[:port]`) allowed, compared case-insensitively: exact origins,
    /// `*` for any, or a wildcard host such as `https://*.example.com` (one or more labels).
    pub allow_origins: Vec<String>,
    /// Methods allowed in preflights; `*` for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed in preflights; `*` for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may expose to scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
}

/// Access control by client address. The client address is the connection's peer, or, when
/// the peer is a trusted proxy, the last `X-Forwarded-For` entry that is not a trusted proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientAccess {
    /// CIDR ranges or single addresses allowed; empty: every address not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// CIDR ranges or single addresses refused; checked first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Limits per client address (see [`ClientAccess`] for which address counts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientLimits {
    /// Routes naming the same zone share their counters (one zone per Ingress, say); the
    /// counters survive config updates while the zone's limits stay the same.
    pub zone: String,
    /// Request rates, each enforced on its own (a client must stay within all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rates: Vec<RateLimit>,
    /// Most requests of one client address in flight at once (until the response has ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Client addresses (CIDR ranges or single addresses) the limits do not apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<String>,
    /// Status of a refused request: 503 (ingress-nginx's default) or 429 (with `Retry-After`).
    pub status: u16,
}

/// `requests` per `period_seconds`, with `burst` more requests allowed at once (a GCRA, as
/// nginx's `limit_req ... burst=N nodelay`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub requests: u32,
    pub period_seconds: u32,
    #[serde(default)]
    pub burst: u32,
}

/// Checks that every `$name` / `${name}` of a [`RegexRewrite`] substitution names a group of
/// `re` (`$1a` names a group `1a`: write `${1}a`), so mistakes are reported instead of expanding
/// to nothing. `$$` is a literal `$`.
pub fn check_substitution(re: &regex::Regex, substitution: &str) -> Result<(), String> {
    let bytes = substitution.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let rest = &substitution[i + 1..];
        if rest.starts_with('$') {
            i += 2;
            continue;
        }
        let (name, used) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => return Err(format!("unclosed \"${{\" at byte {i}")),
            }
        } else {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&rest[..len], len)
        };
        if name.is_empty() {
            return Err(format!(
                "\"$\" at byte {i} names no group (write \"$$\" for a literal \"$\")"
            ));
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            return Err(format!(
                "refers to group {name:?}, which the pattern does not have (write \"${{1}}x\" to follow group 1 with text)"
            ));
        }
        i += 1 + used;
    }
    Ok(())
}
fn check_file(path: impl Into<String>, value: &str) -> Result<(), InvalidTls> {
    if value.is_empty() {
        return Err(InvalidTls::new(path, "a file path is required"));
    }
    Ok(())
}

fn check_subject_alternative_names(path: &str, names: &[String]) -> Result<(), InvalidTls> {
    match names.iter().position(String::is_empty) {
        Some(i) => Err(InvalidTls::new(
            format!("{path}[{i}]"),
            "empty subject alternative name",
        )),
        None => Ok(()),
    }
}

impl ListenerTls {
    /// Checks what the engine relies on: at least one certificate unless disabled, file paths,
    /// valid server names each served by one certificate, one default certificate at most.
    pub fn check(&self) -> Result<(), InvalidTls> {
        if self.certificates.is_empty() && self.mode != TlsMode::Disabled {
            return Err(InvalidTls::new(
                "certificates",
                "at least one certificate is required unless the mode is disabled",
            ));
        }
        let mut names: std::collections::HashMap<&str, usize> = Default::default();
        let mut default: Option<usize> = None;
        for (i, c) in self.certificates.iter().enumerate() {
            let p = format!("certificates[{i}]");
            check_file(format!("{p}.certificateChain"), &c.certificate_chain)?;
            check_file(format!("{p}.privateKey"), &c.private_key)?;
            if c.server_names.is_empty()
                && let Some(first) = default.replace(i)
            {
                return Err(InvalidTls::new(
                    p,
                    format!(
                        "certificates[{first}] is already the default certificate (without \
                         serverNames); at most one may be"
                    ),
                ));
            }
            for (j, n) in c.server_names.iter().enumerate() {
                let np = format!("{p}.serverNames[{j}]");
                if !is_server_name_pattern(n) {
                    return Err(InvalidTls::new(
                        np,
                        format!("{n:?} is not a lower-case DNS name or *.wildcard"),
                    ));
                }
                if let Some(first) = names.insert(n, i) {
                    return Err(InvalidTls::new(
                        np,
                        format!("{n:?} is also served by certificates[{first}]"),
                    ));
                }
            }
        }
        if let Some(v) = &self.client_validation {
            check_file("clientValidation.trustChain", &v.trust_chain)?;
            check_subject_alternative_names(
                "clientValidation.subjectAlternativeNames",
                &v.subject_alternative_names,
            )?;
        }
        Ok(())
    }
}

impl UpstreamTls {
    /// Checks what the engine relies on: a server name (DNS name or IP address), a trust bundle
    /// (unless verification is skipped), file paths.
    pub fn check(&self) -> Result<(), InvalidTls> {
        if !is_dns_name(&self.server_name) && self.server_name.parse::<std::net::IpAddr>().is_err()
        {
            return Err(InvalidTls::new(
                "serverName",
                format!(
                    "{:?} is not a lower-case DNS name or an IP address",
                    self.server_name
                ),
            ));
        }
        if self.skip_verification {
            if !self.trust_chain.is_empty() {
                return Err(InvalidTls::new(
                    "trustChain",
                    "must be empty when skipVerification is set (nothing is verified)",
                ));
            }
            if !self.subject_alternative_names.is_empty() {
                return Err(InvalidTls::new(
                    "subjectAlternativeNames",
                    "must be empty when skipVerification is set (nothing is verified)",
                ));
            }
        } else {
            check_file("trustChain", &self.trust_chain)?;
            check_subject_alternative_names(
                "subjectAlternativeNames",
                &self.subject_alternative_names,
            )?;
        }
        if let Some(c) = &self.client_certificate {
            check_file("clientCertificate.certificateChain", &c.certificate_chain)?;
            check_file("clientCertificate.privateKey", &c.private_key)?;
        }
        Ok(())
    }
}

/// Whether `name` is a valid TLS server name pattern: a lower-case DNS name, or `*.` followed
/// by one (a wildcard of exactly one label).
pub fn is_server_name_pattern(name: &str) -> bool {
    is_dns_name(name.strip_prefix("*.").unwrap_or(name))
}

/// Whether `name` is a lower-case DNS name: labels of 1 to 63 letters, digits and inner hyphens
/// (underscores are tolerated), at most 253 characters, not all-numeric at the end.
pub fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut last = "";
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return false;
        }
        last = label;
    }
    !last.bytes().all(|b| b.is_ascii_digit())
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
        /// `Domain` of the cookie set; none: no `Domain` attribute (the host only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        /// The cookie set is `Secure` (sent back over HTTPS only).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        secure: bool,
        /// `SameSite` of the cookie set: `None`, `Lax` or `Strict`; none: no attribute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        same_site: Option<String>,
    },
    /// The concatenation of `parts` (nginx's `hash $host$request_uri`); a request for which it
    /// is empty is spread at random. At least one part.
    Template { parts: Vec<HashPart> },
}

/// One part of a [`HashOn::Template`]; a missing header, parameter or cookie is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashPart {
    Literal(String),
    /// The client's IP address.
    ClientIp,
    /// The request's host, without port, in lower case.
    Host,
    /// The path, without the query.
    Path,
    /// The path and the query, as the request line has them.
    RequestUri,
    /// The query string, without `?`.
    Query,
    /// A request header (name in lower case).
    Header(String),
    /// The value of a query parameter.
    QueryParam(String),
    /// The value of a cookie.
    Cookie(String),
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
