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
    /// TLS termination; `None` serves plaintext (HTTP/1.1 and h2c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
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
    /// TLS origination to the endpoints; `None` connects in plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
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
/// `http/1.1`), `http2` and `grpc` clusters HTTP/2 over TLS (ALPN `h2`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// Sent as SNI (unless it is an IP address) and, when `subject_alternative_names` is empty,
    /// the name the endpoint's certificate must be valid for.
    pub server_name: String,
    /// Path of the PEM bundle of authorities the endpoint's certificate must chain to. Required:
    /// the proxy has no system roots.
    pub trust_chain: String,
    /// When set, the endpoint's certificate must carry one of these subject alternative names
    /// (as in [`TlsValidation`]) instead of being valid for `server_name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<TlsClientCertificate>,
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
    /// Checks what the engine relies on: a server name (DNS name or IP address), a trust bundle,
    /// file paths.
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
        check_file("trustChain", &self.trust_chain)?;
        check_subject_alternative_names(
            "subjectAlternativeNames",
            &self.subject_alternative_names,
        )?;
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
