//! Validation of mesh resources: every problem at once, each with its field path.
//!
//! [`object`] checks one object on its own (field constraints, one-of rules, AWS-only fields that
//! are reported as ignored); [`references`] checks a set of objects for references to objects that
//! do not exist.
//!
//! The rules are App Mesh's documented constraints (the `appmesh.k8s.aws/v1beta2` CRDs, the App
//! Mesh API reference and the controller's admission webhooks), plus the Kubernetes basics of
//! Service and EndpointSlice. Paths use the document's own field names:
//! `spec.routes[1].httpRoute.match.prefix`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::appmesh::TcpGatewayRoute;
use crate::appmesh::{
    BackendDefaults, BackendTlsValidationTrust, ClientPolicy, ConnectionPool, Duration,
    GatewayConnectionPool, GatewayRouteHostnameMatch, GatewayRouteSpec, GatewayRouteTarget,
    GrpcGatewayRoute, GrpcRetryPolicy, GrpcRoute, GrpcRouteMetadata, HeaderMatchMethod,
    HealthCheckPolicy, HttpCookieMatch, HttpCors, HttpDirectResponse, HttpGatewayRoute,
    HttpHeaderMatch, HttpHeaderModifier, HttpMirror, HttpPathMatch, HttpQueryParameter,
    HttpRedirect, HttpRetryPolicy, HttpRoute, HttpRouteMatch, HttpTimeout, LabelSelector,
    ListenerTimeout, ListenerTls, Logging, MeshReference, MeshSpec, ObjectReference,
    OutlierDetection, PathRegexRewrite, PortProtocol, RouteAction, SniCertificate,
    SubjectAlternativeNames, TcpRoute, TcpTimeout, VirtualGatewaySpec, VirtualNodeSpec,
    VirtualRouterSpec, VirtualServiceSpec,
};
use crate::appmesh::{LoadBalancer, LoadBalancerHashOn, LoadBalancerPolicy};
use crate::manifest::{Kind, Meta, Object, ObjectKey, Problem, Resource, Source};

/// HTTP methods App Mesh matches on.
pub const HTTP_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];
/// Valid `httpRetryEvents`.
pub const HTTP_RETRY_EVENTS: [&str; 4] = [
    "server-error",
    "gateway-error",
    "client-error",
    "stream-error",
];
/// Valid `tcpRetryEvents`.
pub const TCP_RETRY_EVENTS: [&str; 1] = ["connection-error"];
/// Valid `grpcRetryEvents`.
pub const GRPC_RETRY_EVENTS: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Message prefix of the notes about fields Bowline parses but does not apply yet.
pub const NOT_YET_ENFORCED: &str = "accepted; not yet enforced:";
/// Message prefix of the notes about fields that only mean something on AWS.
pub const AWS_ONLY: &str = "AWS only:";

const AWS_NAME: &str = "App Mesh's name for the object; Bowline uses metadata.name";
/// Why a VirtualGateway listener's `healthCheck` does nothing (sources in docs/resources.md).
const GATEWAY_HEALTH_CHECK: &str = "no effect, as in App Mesh: a listener's health check is \
     run by the proxies that send to that listener, and no route sends to a virtual gateway; \
     probe the gateway itself with GET /ready on its admin address";
const SDS: &str = "SDS (SPIRE) certificates; Bowline issues workload identities itself";
const GATEWAY_ACM_CERTIFICATE: &str =
    "ACM certificates are not available; the listener is not served (rather than in plaintext)";
const GATEWAY_SDS: &str = "SDS (SPIRE) certificates and trust are not available; the listener is \
     not served (rather than without them)";
const GATEWAY_ACM_TRUST: &str = "ACM Private CA trust is not available; requests to the backends \
     the policy applies to are refused (rather than sent unverified)";
const GATEWAY_CLIENT_SDS: &str = "SDS (SPIRE) certificates and trust are not available; requests \
     to the backends the policy applies to are refused (rather than sent without them)";

/// Checks one object. Errors reject it; `Ignored` notes name fields that have no effect.
pub fn object(object: &Object) -> Vec<Problem> {
    let mut c = Checker::default();
    let spec = Path::new("spec");
    match object {
        Object::Mesh(r) => c.mesh(&spec, &r.spec),
        Object::VirtualNode(r) => c.virtual_node(&spec, &r.metadata, &r.spec),
        Object::VirtualService(r) => c.virtual_service(&spec, &r.metadata, &r.spec),
        Object::VirtualRouter(r) => c.virtual_router(&spec, &r.spec),
        Object::VirtualGateway(r) => c.virtual_gateway(&spec, &r.spec),
        Object::GatewayRoute(r) => c.gateway_route(&spec, &r.spec),
        Object::Service(s) => c.service(&spec, s),
        Object::EndpointSlice(s) => c.endpoint_slice(s),
        Object::Pod(p) => c.pod(p),
        Object::Namespace(_) | Object::Secret(_) => {}
        Object::Ingress(i) => c.problems.extend(crate::ingress::validate_ingress(i)),
        Object::IngressClass(i) => c.problems.extend(crate::ingress::validate_ingress_class(i)),
        Object::GatewayClass(_)
        | Object::Gateway(_)
        | Object::HttpRoute(_)
        | Object::GrpcRoute(_)
        | Object::ReferenceGrant(_) => c.problems.extend(crate::gatewayapi::validate(object)),
    }
    c.problems
}

/// Checks that every reference between `objects` resolves: virtual service providers, router
/// targets, gateway route targets and gateways, node backends. A reference without a namespace
/// points into the referrer's namespace. Where the target has listeners, the referring `port`
/// must name one of them (and is required when there are several).
///
/// Problems carry the referrer's source and `Kind ns/name`.
pub fn references(objects: &[(Source, Object)]) -> Vec<Problem> {
    references_in(objects.iter().map(|(s, o)| (Some(s), o)))
}

/// [`references`] over any collection, for callers that keep objects without a [`Source`].
pub fn references_in<'a>(
    objects: impl IntoIterator<Item = (Option<&'a Source>, &'a Object)>,
) -> Vec<Problem> {
    let objects: Vec<(Option<&Source>, &Object)> = objects.into_iter().collect();
    let index: HashMap<ObjectKey, &Object> = objects.iter().map(|(_, o)| (o.key(), *o)).collect();
    let mut out = Vec::new();
    for (source, object) in &objects {
        let mut r = RefChecker {
            index: &index,
            problems: Vec::new(),
        };
        let spec = Path::new("spec");
        match object {
            Object::VirtualService(o) => r.virtual_service(&spec, o),
            Object::VirtualRouter(o) => r.virtual_router(&spec, o),
            Object::VirtualNode(o) => r.virtual_node(&spec, o),
            Object::GatewayRoute(o) => r.gateway_route(&spec, o),
            _ => {}
        }
        let key = object.key().to_string();
        out.extend(r.problems.into_iter().map(|mut p| {
            p.source = source.cloned();
            p.object = Some(key.clone());
            p
        }));
    }
    out
}

// === Path ===

/// A field path in document terms: `spec.routes[1].httpRoute`.
#[derive(Clone, Debug)]
struct Path(String);

impl Path {
    fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    fn f(&self, field: &str) -> Path {
        Path(format!("{}.{field}", self.0))
    }

    fn i(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === Checker: helpers ===

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

/// `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn join_ports(ports: &[i64]) -> String {
    ports
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one line that says what is wrong with a regular expression.
fn regex_error(e: &regex::Error) -> String {
    let msg = e.to_string();
    msg.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(msg.trim())
        .to_string()
}

impl Checker {
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.problems.push(Problem::error(path.0.clone(), message));
    }

    fn aws_only(&mut self, path: &Path, why: &str) {
        self.problems.push(Problem::ignored(
            path.0.clone(),
            format!("{AWS_ONLY} {why}"),
        ));
    }

    fn not_enforced(&mut self, path: &Path, what: &str) {
        self.problems.push(Problem::ignored(
            path.0.clone(),
            format!("{NOT_YET_ENFORCED} {what}"),
        ));
    }

    fn range(&mut self, path: &Path, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.error(
                path,
                format!("must be between {min} and {max} (got {value})"),
            );
        }
    }

    fn at_least(&mut self, path: &Path, value: i64, min: i64) {
        if value < min {
            self.error(path, format!("must be at least {min} (got {value})"));
        }
    }

    fn port(&mut self, path: &Path, port: i64) {
        self.range(path, port, 1, 65535);
    }

    fn duration(&mut self, path: &Path, d: &Duration) {
        if d.value < 0 {
            self.error(
                &path.f("value"),
                format!("must not be negative (got {})", d.value),
            );
        }
    }

    /// Exactly one of the named members is set.
    fn exactly_one(&mut self, path: &Path, members: &[(&str, bool)]) {
        let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
        let set: Vec<&str> = members
            .iter()
            .filter(|(_, s)| *s)
            .map(|(n, _)| *n)
            .collect();
        if set.len() != 1 {
            let got = if set.is_empty() {
                "none is".to_string()
            } else {
                format!("{} are", join_and(&set))
            };
            self.error(
                path,
                format!("exactly one of {} must be set ({got})", join_and(&names)),
            );
        }
    }

    /// A list with a bounded number of entries (App Mesh's MinItems/MaxItems).
    fn count(&mut self, path: &Path, len: usize, min: usize, max: usize) {
        let entries = |n: usize| if n == 1 { "entry" } else { "entries" };
        if len < min {
            self.error(
                path,
                format!("must have at least {min} {} (got {len})", entries(min)),
            );
        } else if len > max {
            self.error(
                path,
                format!("must have at most {max} {} (got {len})", entries(max)),
            );
        }
    }

    fn not_empty(&mut self, path: &Path, value: &str) {
        if value.is_empty() {
            self.error(path, "must not be empty");
        }
    }

    fn starts_with_slash(&mut self, path: &Path, value: &str) {
        if !value.starts_with('/') {
            self.error(path, "must start with \"/\"");
        }
    }

    fn regex(&mut self, path: &Path, re: &str) {
        if let Err(e) = regex::Regex::new(re) {
            self.error(
                path,
                format!("invalid regular expression: {}", regex_error(&e)),
            );
        }
    }

    fn one_of_values(&mut self, path: &Path, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.error(
                path,
                format!("must be one of {} (got {value:?})", allowed.join(", ")),
            );
        }
    }

    /// Listener ports are unique within one object.
    fn unique_ports(&mut self, path: &Path, ports: impl IntoIterator<Item = i64>) {
        let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, port) in ports.into_iter().enumerate() {
            if let Some(first) = seen.get(&port) {
                self.error(
                    &path.i(i).f("portMapping").f("port"),
                    format!("port {port} is already used by {}", path.i(*first)),
                );
            } else {
                seen.insert(port, i);
            }
        }
    }

    fn label_selector(&mut self, path: &Path, s: &LabelSelector) {
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let p = path.f("matchExpressions").i(i);
            self.not_empty(&p.f("key"), &e.key);
            let values = e.values.as_ref().map_or(0, Vec::len);
            match e.operator.as_str() {
                "In" | "NotIn" if values == 0 => {
                    self.error(
                        &p.f("values"),
                        format!("must not be empty for operator {}", e.operator),
                    );
                }
                "Exists" | "DoesNotExist" if values > 0 => {
                    self.error(
                        &p.f("values"),
                        format!("must be empty for operator {}", e.operator),
                    );
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => self.error(
                    &p.f("operator"),
                    format!("must be one of In, NotIn, Exists, DoesNotExist (got {other:?})"),
                ),
            }
        }
    }

    fn mesh_ref(&mut self, path: &Path, r: Option<&MeshReference>) {
        if let Some(r) = r
            && r.uid.is_some()
        {
            self.problems.push(Problem::ignored(
                path.f("uid").0,
                "the Kubernetes UID of the mesh; the reference is by name",
            ));
        }
    }

    /// `xRef` or `xARN`: exactly one; an ARN is noted as ignored.
    fn ref_or_arn(
        &mut self,
        path: &Path,
        (ref_name, has_ref): (&str, bool),
        (arn_name, arn): (&str, Option<&String>),
        ignored_what: &str,
    ) {
        self.exactly_one(path, &[(ref_name, has_ref), (arn_name, arn.is_some())]);
        if arn.is_some() {
            self.aws_only(
                &path.f(arn_name),
                &format!(
                    "an ARN names an App Mesh object in AWS; Bowline resolves only {ref_name}, so {ignored_what}"
                ),
            );
        }
    }
}

// === Checker: common structures ===

impl Checker {
    fn health_check(&mut self, path: &Path, hc: &HealthCheckPolicy, gateway: bool) {
        self.range(&path.f("healthyThreshold"), hc.healthy_threshold, 2, 10);
        self.range(&path.f("unhealthyThreshold"), hc.unhealthy_threshold, 2, 10);
        self.range(&path.f("intervalMillis"), hc.interval_millis, 5000, 300_000);
        self.range(&path.f("timeoutMillis"), hc.timeout_millis, 2000, 60_000);
        if let Some(port) = hc.port {
            self.port(&path.f("port"), port);
        }
        if gateway && hc.protocol == PortProtocol::Tcp {
            self.error(
                &path.f("protocol"),
                "must be http, http2 or grpc for a virtual gateway (got \"tcp\")",
            );
        }
        let http = matches!(hc.protocol, PortProtocol::Http | PortProtocol::Http2);
        match &hc.path {
            None if http => self.error(
                &path.f("path"),
                "is required when protocol is http or http2",
            ),
            Some(p) if http => self.not_empty(&path.f("path"), p),
            _ => {}
        }
    }

    fn outlier_detection(&mut self, path: &Path, o: &OutlierDetection) {
        self.at_least(&path.f("maxServerErrors"), o.max_server_errors, 1);
        self.range(
            &path.f("maxEjectionPercent"),
            o.max_ejection_percent,
            0,
            100,
        );
        self.duration(&path.f("interval"), &o.interval);
        self.duration(&path.f("baseEjectionDuration"), &o.base_ejection_duration);
    }

    /// A connection pool has exactly one member, the one of the listener's protocol.
    fn connection_pool(&mut self, path: &Path, pool: &ConnectionPool, protocol: PortProtocol) {
        let members = [
            ("tcp", pool.tcp.is_some(), PortProtocol::Tcp),
            ("http", pool.http.is_some(), PortProtocol::Http),
            ("http2", pool.http2.is_some(), PortProtocol::Http2),
            ("grpc", pool.grpc.is_some(), PortProtocol::Grpc),
        ];
        self.pool_members(path, &members, protocol);
        if let Some(t) = &pool.tcp {
            self.at_least(&path.f("tcp").f("maxConnections"), t.max_connections, 1);
        }
        self.http_pools(
            path,
            pool.http.as_ref(),
            pool.http2.as_ref(),
            pool.grpc.as_ref(),
        );
    }

    fn gateway_connection_pool(
        &mut self,
        path: &Path,
        pool: &GatewayConnectionPool,
        protocol: PortProtocol,
    ) {
        let members = [
            ("http", pool.http.is_some(), PortProtocol::Http),
            ("http2", pool.http2.is_some(), PortProtocol::Http2),
            ("grpc", pool.grpc.is_some(), PortProtocol::Grpc),
        ];
        self.pool_members(path, &members, protocol);
        self.http_pools(
            path,
            pool.http.as_ref(),
            pool.http2.as_ref(),
            pool.grpc.as_ref(),
        );
    }

    fn pool_members(
        &mut self,
        path: &Path,
        members: &[(&str, bool, PortProtocol)],
        protocol: PortProtocol,
    ) {
        let named: Vec<(&str, bool)> = members.iter().map(|(n, s, _)| (*n, *s)).collect();
        self.exactly_one(path, &named);
        for (name, set, proto) in members {
            if *set && *proto != protocol {
                self.error(
                    &path.f(name),
                    format!(
                        "does not match the listener protocol {}",
                        protocol_name(protocol)
                    ),
                );
            }
        }
    }

    fn http_pools(
        &mut self,
        path: &Path,
        http: Option<&crate::appmesh::HttpConnectionPool>,
        http2: Option<&crate::appmesh::RequestConnectionPool>,
        grpc: Option<&crate::appmesh::RequestConnectionPool>,
    ) {
        if let Some(h) = http {
            self.at_least(&path.f("http").f("maxConnections"), h.max_connections, 1);
            if let Some(p) = h.max_pending_requests {
                self.at_least(&path.f("http").f("maxPendingRequests"), p, 1);
            }
        }
        if let Some(h) = http2 {
            self.at_least(&path.f("http2").f("maxRequests"), h.max_requests, 1);
        }
        if let Some(g) = grpc {
            self.at_least(&path.f("grpc").f("maxRequests"), g.max_requests, 1);
        }
    }

    fn http_timeout(&mut self, path: &Path, t: &HttpTimeout) {
        if let Some(d) = &t.per_request {
            self.duration(&path.f("perRequest"), d);
        }
        if let Some(d) = &t.idle {
            self.duration(&path.f("idle"), d);
        }
    }

    fn tcp_timeout(&mut self, path: &Path, t: &TcpTimeout) {
        if let Some(d) = &t.idle {
            self.duration(&path.f("idle"), d);
        }
    }

    fn listener_timeout(&mut self, path: &Path, t: &ListenerTimeout) {
        if let Some(x) = &t.tcp {
            self.tcp_timeout(&path.f("tcp"), x);
        }
        for (name, x) in [("http", &t.http), ("http2", &t.http2), ("grpc", &t.grpc)] {
            if let Some(x) = x {
                self.http_timeout(&path.f(name), x);
            }
        }
    }

    /// `gateway`: a VirtualGateway listener, whose TLS the gateway serves (a VirtualNode's is
    /// the sidecar's).
    fn listener_tls(&mut self, path: &Path, tls: &ListenerTls, gateway: bool) {
        let cert = &tls.certificate;
        let cp = path.f("certificate");
        let extra = tls.certificates.as_deref().unwrap_or_default();
        if !cert.is_unset() || extra.is_empty() {
            self.exactly_one(
                &cp,
                &[
                    ("acm", cert.acm.is_some()),
                    ("file", cert.file.is_some()),
                    ("sds", cert.sds.is_some()),
                ],
            );
        }
        if cert.acm.is_some() {
            self.aws_only(
                &cp.f("acm"),
                if gateway {
                    GATEWAY_ACM_CERTIFICATE
                } else {
                    "ACM certificates are not available; the listener gets no certificate from it"
                },
            );
        }
        if let Some(f) = &cert.file {
            self.not_empty(&cp.f("file").f("certificateChain"), &f.certificate_chain);
            self.not_empty(&cp.f("file").f("privateKey"), &f.private_key);
        }
        if let Some(s) = &cert.sds {
            self.aws_only(&cp.f("sds"), if gateway { GATEWAY_SDS } else { SDS });
            self.not_empty(&cp.f("sds").f("secretName"), &s.secret_name);
        }
        self.sni_certificates(&path.f("certificates"), extra, !cert.is_unset());
        if let Some(v) = &tls.validation {
            let tp = path.f("validation").f("trust");
            self.exactly_one(
                &tp,
                &[
                    ("file", v.trust.file.is_some()),
                    ("sds", v.trust.sds.is_some()),
                ],
            );
            if let Some(f) = &v.trust.file {
                self.not_empty(&tp.f("file").f("certificateChain"), &f.certificate_chain);
            }
            if v.trust.sds.is_some() {
                self.aws_only(&tp.f("sds"), if gateway { GATEWAY_SDS } else { SDS });
            }
            if let Some(sans) = &v.subject_alternative_names {
                self.subject_alternative_names(
                    &path.f("validation").f("subjectAlternativeNames"),
                    sans,
                );
            }
        }
    }

    /// `subjectAlternativeNames.match.exact`: names, none empty.
    fn subject_alternative_names(&mut self, path: &Path, sans: &SubjectAlternativeNames) {
        let p = path.f("match").f("exact");
        for (i, name) in sans.matchers.exact.iter().flatten().enumerate() {
            self.not_empty(&p.i(i), name);
        }
    }

    /// The Bowline `certificates` extension of listener TLS: files, valid server names each
    /// served once, one default certificate at most (`certificate` counts as one when set).
    fn sni_certificates(&mut self, path: &Path, certs: &[SniCertificate], has_default: bool) {
        let mut default = has_default.then(|| "certificate".to_string());
        let mut names: HashMap<String, Path> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            let p = path.i(i);
            self.not_empty(
                &p.f("file").f("certificateChain"),
                &c.file.certificate_chain,
            );
            self.not_empty(&p.f("file").f("privateKey"), &c.file.private_key);
            let server_names = c.server_names.as_deref().unwrap_or_default();
            if server_names.is_empty() {
                match &default {
                    Some(first) => self.error(
                        &p,
                        format!(
                            "{first} is already the default certificate (without serverNames); \
                             at most one may be"
                        ),
                    ),
                    None => default = Some(p.to_string()),
                }
            }
            for (j, name) in server_names.iter().enumerate() {
                let np = p.f("serverNames").i(j);
                let lower = name.to_ascii_lowercase();
                if !crate::ir::is_server_name_pattern(&lower) {
                    self.error(
                        &np,
                        format!("{name:?} is not a DNS name or a *. wildcard of one label"),
                    );
                } else if let Some(first) = names.get(&lower) {
                    self.error(&np, format!("{name:?} is also served by {first}"));
                } else {
                    names.insert(lower, np);
                }
            }
        }
    }

    /// `gateway`: the backend defaults of a VirtualGateway, which the gateway applies.
    fn client_policy(&mut self, path: &Path, cp: &ClientPolicy, gateway: bool) {
        let Some(tls) = &cp.tls else {
            return;
        };
        let p = path.f("tls");
        for (i, port) in tls.ports.iter().flatten().enumerate() {
            self.port(&p.f("ports").i(i), *port);
        }
        if let Some(cert) = &tls.certificate {
            let cp = p.f("certificate");
            self.exactly_one(
                &cp,
                &[("file", cert.file.is_some()), ("sds", cert.sds.is_some())],
            );
            if let Some(f) = &cert.file {
                self.not_empty(&cp.f("file").f("certificateChain"), &f.certificate_chain);
                self.not_empty(&cp.f("file").f("privateKey"), &f.private_key);
            }
            if cert.sds.is_some() {
                self.aws_only(&cp.f("sds"), if gateway { GATEWAY_CLIENT_SDS } else { SDS });
            }
        }
        self.backend_trust(
            &p.f("validation").f("trust"),
            &tls.validation.trust,
            gateway,
        );
        if let Some(sans) = &tls.validation.subject_alternative_names {
            self.subject_alternative_names(&p.f("validation").f("subjectAlternativeNames"), sans);
        }
        if tls.mode.is_some() {
            self.problems.push(Problem::ignored(
                p.f("mode").0,
                "not part of App Mesh's ClientPolicyTLS: the Kubernetes API server pruned it \
                 from App Mesh objects, so it never had an effect",
            ));
        }
    }

    fn backend_trust(&mut self, path: &Path, t: &BackendTlsValidationTrust, gateway: bool) {
        self.exactly_one(
            path,
            &[
                ("acm", t.acm.is_some()),
                ("file", t.file.is_some()),
                ("sds", t.sds.is_some()),
            ],
        );
        if let Some(acm) = &t.acm {
            self.aws_only(
                &path.f("acm"),
                if gateway {
                    GATEWAY_ACM_TRUST
                } else {
                    "ACM Private CA trust is not available"
                },
            );
            self.count(
                &path.f("acm").f("certificateAuthorityARNs"),
                acm.certificate_authority_arns.len(),
                1,
                3,
            );
        }
        if let Some(f) = &t.file {
            self.not_empty(&path.f("file").f("certificateChain"), &f.certificate_chain);
        }
        if t.sds.is_some() {
            self.aws_only(
                &path.f("sds"),
                if gateway { GATEWAY_CLIENT_SDS } else { SDS },
            );
        }
    }

    /// `gateway`: a VirtualGateway's, which the gateway applies (a VirtualNode's is the
    /// sidecar's).
    fn backend_defaults(&mut self, path: &Path, d: &BackendDefaults, gateway: bool) {
        if let Some(cp) = &d.client_policy {
            self.client_policy(&path.f("clientPolicy"), cp, gateway);
        }
    }

    /// Access logs (a gateway's, or a node's sidecar's).
    fn logging(&mut self, path: &Path, l: &Logging) {
        if let Some(f) = l.access_log.as_ref().and_then(|a| a.file.as_ref()) {
            let p = path.f("accessLog").f("file");
            self.not_empty(&p.f("path"), &f.path);
            if let Some(format) = &f.format {
                self.exactly_one(
                    &p.f("format"),
                    &[
                        ("json", format.json.is_some()),
                        ("text", format.text.is_some()),
                    ],
                );
                if let Some(text) = &format.text
                    && let Err(e) = crate::accesslog::parse(text)
                {
                    self.error(&p.f("format").f("text"), e);
                }
                for (i, field) in format.json.iter().flatten().enumerate() {
                    self.not_empty(&p.f("format").f("json").i(i).f("key"), &field.key);
                    if let Err(e) = crate::accesslog::parse(&field.value) {
                        self.error(&p.f("format").f("json").i(i).f("value"), e);
                    }
                }
            }
        }
    }
}

fn protocol_name(p: PortProtocol) -> &'static str {
    match p {
        PortProtocol::Http => "http",
        PortProtocol::Http2 => "http2",
        PortProtocol::Grpc => "grpc",
        PortProtocol::Tcp => "tcp",
    }
}

// === Checker: matches ===

impl Checker {
    fn path_match(&mut self, path: &Path, m: &HttpPathMatch) {
        self.exactly_one(
            path,
            &[("exact", m.exact.is_some()), ("regex", m.regex.is_some())],
        );
        if let Some(e) = &m.exact {
            self.starts_with_slash(&path.f("exact"), e);
        }
        if let Some(r) = &m.regex {
            self.regex(&path.f("regex"), r);
        }
    }

    fn header_method(&mut self, path: &Path, m: &HeaderMatchMethod) {
        self.exactly_one(
            path,
            &[
                ("exact", m.exact.is_some()),
                ("prefix", m.prefix.is_some()),
                ("suffix", m.suffix.is_some()),
                ("regex", m.regex.is_some()),
                ("range", m.range.is_some()),
            ],
        );
        if let Some(r) = &m.regex {
            self.regex(&path.f("regex"), r);
        }
        if let Some(r) = &m.range
            && r.start >= r.end
        {
            self.error(
                &path.f("range"),
                format!("start ({}) must be less than end ({})", r.start, r.end),
            );
        }
    }

    fn headers(&mut self, path: &Path, headers: &[HttpHeaderMatch]) {
        self.name_matches(path, headers.iter().map(|h| (&h.name, h.matcher.as_ref())));
    }

    fn metadata(&mut self, path: &Path, metadata: &[GrpcRouteMetadata]) {
        self.name_matches(path, metadata.iter().map(|h| (&h.name, h.matcher.as_ref())));
    }

    /// Header matches and gRPC metadata matches: 1..=10 entries, each named, each match valid.
    fn name_matches<'a>(
        &mut self,
        path: &Path,
        entries: impl ExactSizeIterator<Item = (&'a String, Option<&'a HeaderMatchMethod>)>,
    ) {
        self.count(path, entries.len(), 1, 10);
        for (i, (name, matcher)) in entries.enumerate() {
            self.not_empty(&path.i(i).f("name"), name);
            if let Some(m) = matcher {
                self.header_method(&path.i(i).f("match"), m);
            }
        }
    }

    fn query_parameters(&mut self, path: &Path, q: &[HttpQueryParameter]) {
        self.count(path, q.len(), 1, 10);
        for (i, q) in q.iter().enumerate() {
            self.not_empty(&path.i(i).f("name"), &q.name);
            if let Some(m) = &q.matcher {
                self.query_parameter_match(&path.i(i).f("match"), m);
            }
        }
    }

    fn method(&mut self, path: &Path, method: Option<&String>) {
        if let Some(m) = method {
            self.one_of_values(path, m, &HTTP_METHODS);
        }
    }

    fn hostname_match(&mut self, path: &Path, h: &GatewayRouteHostnameMatch) {
        self.exactly_one(
            path,
            &[
                ("exact", h.exact.is_some()),
                ("suffix", h.suffix.is_some()),
                ("wildcard", h.wildcard.is_some()),
            ],
        );
        if let Some(w) = &h.wildcard {
            self.wildcard_host(&path.f("wildcard"), w);
        }
        if let Some(e) = &h.exact {
            self.not_empty(&path.f("exact"), e);
        }
        if let Some(s) = &h.suffix {
            self.not_empty(&path.f("suffix"), s);
        }
    }

    /// A port in a route match: valid, and one of the router's listener ports. (Without one, the
    /// route applies to every listener.)
    fn match_port(&mut self, path: &Path, port: Option<i64>, listener_ports: &[i64]) {
        let Some(p) = port else {
            return;
        };
        self.port(path, p);
        if (1..=65535).contains(&p) && !listener_ports.is_empty() && !listener_ports.contains(&p) {
            self.error(
                path,
                format!(
                    "{p} is not a listener port of this router ({})",
                    join_ports(listener_ports)
                ),
            );
        }
    }
}

// === Checker: Mesh ===

impl Checker {
    fn mesh(&mut self, spec: &Path, s: &MeshSpec) {
        if s.aws_name.is_some() {
            self.aws_only(&spec.f("awsName"), AWS_NAME);
        }
        if let Some(sel) = &s.namespace_selector {
            self.label_selector(&spec.f("namespaceSelector"), sel);
        }
        if s.egress_filter.is_some() {
            self.not_enforced(&spec.f("egressFilter"), "egress filtering");
        }
        if let Some(sd) = &s.service_discovery
            && sd.ip_preference.is_some()
        {
            self.aws_only(
                &spec.f("serviceDiscovery").f("ipPreference"),
                "App Mesh's IP version preference for Envoy; not applied",
            );
        }
        if s.mesh_owner.is_some() {
            self.aws_only(
                &spec.f("meshOwner"),
                "the AWS account that owns a shared mesh",
            );
        }
    }
}

// === Checker: VirtualService ===

/// The host name Bowline serves a virtual service under.
pub fn virtual_service_hostname(meta: &Meta) -> String {
    if meta.name.contains('.') {
        meta.name.clone()
    } else {
        format!("{}.{}.svc.cluster.local", meta.name, meta.namespace())
    }
}

impl Checker {
    fn virtual_service(&mut self, spec: &Path, meta: &Meta, s: &VirtualServiceSpec) {
        if let Some(aws_name) = &s.aws_name {
            let served = virtual_service_hostname(meta);
            let why = if *aws_name == served {
                format!(
                    "App Mesh's name for the virtual service; Bowline serves it as {served:?} too"
                )
            } else {
                format!(
                    "App Mesh's name for the virtual service; Bowline serves it as {served:?}, not {aws_name:?}"
                )
            };
            self.aws_only(&spec.f("awsName"), &why);
        }
        if let Some(p) = &s.provider {
            let pp = spec.f("provider");
            self.exactly_one(
                &pp,
                &[
                    ("virtualNode", p.virtual_node.is_some()),
                    ("virtualRouter", p.virtual_router.is_some()),
                ],
            );
            if let Some(n) = &p.virtual_node {
                self.ref_or_arn(
                    &pp.f("virtualNode"),
                    ("virtualNodeRef", n.virtual_node_ref.is_some()),
                    ("virtualNodeARN", n.virtual_node_arn.as_ref()),
                    "the virtual service has no provider",
                );
            }
            if let Some(r) = &p.virtual_router {
                self.ref_or_arn(
                    &pp.f("virtualRouter"),
                    ("virtualRouterRef", r.virtual_router_ref.is_some()),
                    ("virtualRouterARN", r.virtual_router_arn.as_ref()),
                    "the virtual service has no provider",
                );
            }
        }
        self.mesh_ref(&spec.f("meshRef"), s.mesh_ref.as_ref());
    }
}

// === Checker: VirtualNode ===

impl Checker {
    fn virtual_node(&mut self, spec: &Path, meta: &Meta, s: &VirtualNodeSpec) {
        if s.aws_name.is_some() {
            self.aws_only(&spec.f("awsName"), AWS_NAME);
        }
        if let Some(sel) = &s.pod_selector {
            self.label_selector(&spec.f("podSelector"), sel);
        }
        let listeners = s.listeners.as_deref().unwrap_or_default();
        let lp = spec.f("listeners");
        for (i, l) in listeners.iter().enumerate() {
            let p = lp.i(i);
            let protocol = l.port_mapping.protocol;
            self.port(&p.f("portMapping").f("port"), l.port_mapping.port);
            if let Some(hc) = &l.health_check {
                self.health_check(&p.f("healthCheck"), hc, false);
            }
            if let Some(o) = &l.outlier_detection {
                self.outlier_detection(&p.f("outlierDetection"), o);
            }
            if let Some(pool) = &l.connection_pool {
                self.connection_pool(&p.f("connectionPool"), pool, protocol);
            }
            if let Some(t) = &l.timeout {
                self.listener_timeout(&p.f("timeout"), t);
            }
            if let Some(tls) = &l.tls {
                self.listener_tls(&p.f("tls"), tls, false);
            }
            if let Some(lb) = &l.load_balancer {
                self.load_balancer(&p.f("loadBalancer"), lb, protocol);
            }
        }
        self.unique_ports(&lp, listeners.iter().map(|l| l.port_mapping.port));

        let sdp = spec.f("serviceDiscovery");
        match &s.service_discovery {
            None if !listeners.is_empty() => {
                self.error(&sdp, "is required when listeners are set");
            }
            None => {}
            Some(sd) => {
                self.exactly_one(
                    &sdp,
                    &[
                        ("awsCloudMap", sd.aws_cloud_map.is_some()),
                        ("dns", sd.dns.is_some()),
                    ],
                );
                if let Some(cm) = &sd.aws_cloud_map {
                    let cmp = sdp.f("awsCloudMap");
                    self.not_empty(&cmp.f("namespaceName"), &cm.namespace_name);
                    self.not_empty(&cmp.f("serviceName"), &cm.service_name);
                    if cm.ip_preference.is_some() {
                        self.aws_only(
                            &cmp.f("ipPreference"),
                            "App Mesh's IP version preference for Envoy; not applied",
                        );
                    }
                    if s.pod_selector.is_none() {
                        self.problems.push(Problem::ignored(
                            cmp.0.clone(),
                            "without spec.podSelector no pods are registered in this Cloud Map service for the node",
                        ));
                    }
                }
                if let Some(dns) = &sd.dns {
                    self.not_empty(&sdp.f("dns").f("hostname"), &dns.hostname);
                    if dns.response_type.is_some() {
                        self.not_enforced(&sdp.f("dns").f("responseType"), "DNS response type");
                    }
                    if dns.ip_preference.is_some() {
                        self.aws_only(
                            &sdp.f("dns").f("ipPreference"),
                            "App Mesh's IP version preference for Envoy; not applied",
                        );
                    }
                }
            }
        }

        let bp = spec.f("backends");
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, b) in s.backends.iter().flatten().enumerate() {
            let p = bp.i(i).f("virtualService");
            let vs = &b.virtual_service;
            self.ref_or_arn(
                &p,
                ("virtualServiceRef", vs.virtual_service_ref.is_some()),
                ("virtualServiceARN", vs.virtual_service_arn.as_ref()),
                "this backend is not added",
            );
            if let Some(r) = &vs.virtual_service_ref {
                let ns = r.namespace.as_deref().unwrap_or(meta.namespace());
                let key = (ns, r.name.as_str());
                if let Some(first) = seen.get(&key) {
                    self.error(
                        &p.f("virtualServiceRef"),
                        format!(
                            "duplicate backend: same virtual service as {}",
                            bp.i(*first)
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
            }
            if let Some(cp) = &vs.client_policy {
                self.client_policy(&p.f("clientPolicy"), cp, false);
            }
        }
        if let Some(d) = &s.backend_defaults {
            self.backend_defaults(&spec.f("backendDefaults"), d, false);
        }
        if let Some(groups) = &s.backend_groups {
            self.not_enforced(
                &spec.f("backendGroups"),
                "BackendGroup objects are not read; their backends are not added",
            );
            for (i, g) in groups.iter().enumerate() {
                self.not_empty(&spec.f("backendGroups").i(i).f("name"), &g.name);
            }
        }
        if let Some(l) = &s.logging {
            self.logging(&spec.f("logging"), l);
        }
        self.mesh_ref(&spec.f("meshRef"), s.mesh_ref.as_ref());
    }
}

// === Checker: VirtualRouter ===

impl Checker {
    fn virtual_router(&mut self, spec: &Path, s: &VirtualRouterSpec) {
        if s.aws_name.is_some() {
            self.aws_only(&spec.f("awsName"), AWS_NAME);
        }
        let lp = spec.f("listeners");
        let listeners = s.listeners.as_deref().unwrap_or_default();
        if s.listeners.is_some() {
            self.count(&lp, listeners.len(), 1, usize::MAX);
        }
        for (i, l) in listeners.iter().enumerate() {
            self.port(&lp.i(i).f("portMapping").f("port"), l.port_mapping.port);
        }
        self.unique_ports(&lp, listeners.iter().map(|l| l.port_mapping.port));
        let mut ports: Vec<i64> = Vec::new();
        for l in listeners {
            // A duplicate listener port is reported above; count it once here.
            if !ports.contains(&l.port_mapping.port) {
                ports.push(l.port_mapping.port);
            }
        }

        let rp = spec.f("routes");
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, r) in s.routes.iter().flatten().enumerate() {
            let p = rp.i(i);
            self.not_empty(&p.f("name"), &r.name);
            if let Some(first) = names.get(r.name.as_str()) {
                self.error(
                    &p.f("name"),
                    format!("duplicate route name {:?} (also {})", r.name, rp.i(*first)),
                );
            } else {
                names.insert(&r.name, i);
            }
            self.exactly_one(
                &p,
                &[
                    ("grpcRoute", r.grpc_route.is_some()),
                    ("httpRoute", r.http_route.is_some()),
                    ("http2Route", r.http2_route.is_some()),
                    ("tcpRoute", r.tcp_route.is_some()),
                ],
            );
            if let Some(prio) = r.priority {
                self.range(&p.f("priority"), prio, 0, 1000);
            }
            if let Some(h) = &r.http_route {
                self.http_route(&p.f("httpRoute"), h, &ports);
            }
            if let Some(h) = &r.http2_route {
                self.http_route(&p.f("http2Route"), h, &ports);
            }
            if let Some(g) = &r.grpc_route {
                self.grpc_route(&p.f("grpcRoute"), g, &ports);
            }
            if let Some(t) = &r.tcp_route {
                self.tcp_route(&p.f("tcpRoute"), t, &ports);
            }
        }
        self.mesh_ref(&spec.f("meshRef"), s.mesh_ref.as_ref());
    }

    fn http_route(&mut self, path: &Path, r: &HttpRoute, ports: &[i64]) {
        self.http_route_match(&path.f("match"), &r.matcher, ports);
        self.route_action(&path.f("action"), &r.action);
        self.router_route_extensions(path, r);
        if let Some(rp) = &r.retry_policy {
            self.http_retry_policy(&path.f("retryPolicy"), rp);
        }
        if let Some(t) = &r.timeout {
            self.http_timeout(&path.f("timeout"), t);
        }
    }

    fn http_route_match(&mut self, path: &Path, m: &HttpRouteMatch, ports: &[i64]) {
        self.exactly_one(
            path,
            &[("prefix", m.prefix.is_some()), ("path", m.path.is_some())],
        );
        if let Some(prefix) = &m.prefix {
            self.starts_with_slash(&path.f("prefix"), prefix);
        }
        if let Some(pm) = &m.path {
            self.path_match(&path.f("path"), pm);
        }
        self.method(&path.f("method"), m.method.as_ref());
        if let Some(s) = &m.scheme {
            self.one_of_values(&path.f("scheme"), s, &["http", "https"]);
        }
        if let Some(h) = &m.headers {
            self.headers(&path.f("headers"), h);
        }
        if let Some(q) = &m.query_parameters {
            self.query_parameters(&path.f("queryParameters"), q);
        }
        self.match_port(&path.f("port"), m.port, ports);
        if let Some(c) = &m.cookies {
            self.cookies(&path.f("cookies"), c);
        }
    }

    fn grpc_route(&mut self, path: &Path, r: &GrpcRoute, ports: &[i64]) {
        let mp = path.f("match");
        let m = &r.matcher;
        if m.method_name.is_some() && m.service_name.is_none() {
            self.error(&mp.f("methodName"), "requires serviceName");
        }
        if let Some(md) = &m.metadata {
            self.metadata(&mp.f("metadata"), md);
        }
        self.match_port(&mp.f("port"), m.port, ports);
        self.route_action(&path.f("action"), &r.action);
        self.http_only_actions(&path.f("action"), &r.action);
        if let Some(rp) = &r.retry_policy {
            self.grpc_retry_policy(&path.f("retryPolicy"), rp);
        }
        if let Some(t) = &r.timeout {
            self.http_timeout(&path.f("timeout"), t);
        }
    }

    fn tcp_route(&mut self, path: &Path, r: &TcpRoute, ports: &[i64]) {
        let port = r.matcher.as_ref().and_then(|m| m.port);
        self.match_port(&path.f("match").f("port"), port, ports);
        self.route_action(&path.f("action"), &r.action);
        self.http_only_actions(&path.f("action"), &r.action);
        if let Some(t) = &r.timeout {
            self.tcp_timeout(&path.f("timeout"), t);
        }
    }

    fn route_action(&mut self, path: &Path, a: &RouteAction) {
        let wp = path.f("weightedTargets");
        // A redirect or direct response has no targets (checked with the extensions).
        if a.redirect.is_none() && a.direct_response.is_none() {
            self.count(&wp, a.weighted_targets.len(), 1, 10);
        }
        for (i, t) in a.weighted_targets.iter().enumerate() {
            let p = wp.i(i);
            self.ref_or_arn(
                &p,
                ("virtualNodeRef", t.virtual_node_ref.is_some()),
                ("virtualNodeARN", t.virtual_node_arn.as_ref()),
                "this target gets no traffic",
            );
            self.range(&p.f("weight"), t.weight, 0, 100);
            if let Some(port) = t.port {
                self.port(&p.f("port"), port);
            }
        }
        if !a.weighted_targets.is_empty() && a.weighted_targets.iter().all(|t| t.weight == 0) {
            self.error(&wp, "the weights must not all be 0");
        }
    }

    /// Retry events: 1..=`max` entries (App Mesh's limits: http 25, tcp 1, grpc 5), each known.
    fn retry_events(
        &mut self,
        path: &Path,
        events: Option<&Vec<String>>,
        allowed: &[&str],
        max: usize,
    ) {
        let Some(events) = events else {
            return;
        };
        self.count(path, events.len(), 1, max);
        for (i, e) in events.iter().enumerate() {
            if !allowed.contains(&e.as_str()) {
                self.error(
                    &path.i(i),
                    format!(
                        "unknown retry event {e:?}; must be one of {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn http_retry_policy(&mut self, path: &Path, r: &HttpRetryPolicy) {
        if r.http_retry_events.is_none() && r.tcp_retry_events.is_none() {
            self.error(
                path,
                "at least one of httpRetryEvents and tcpRetryEvents must be set",
            );
        }
        self.retry_events(
            &path.f("httpRetryEvents"),
            r.http_retry_events.as_ref(),
            &HTTP_RETRY_EVENTS,
            25,
        );
        self.retry_events(
            &path.f("tcpRetryEvents"),
            r.tcp_retry_events.as_ref(),
            &TCP_RETRY_EVENTS,
            1,
        );
        self.at_least(&path.f("maxRetries"), r.max_retries, 0);
        self.duration(&path.f("perRetryTimeout"), &r.per_retry_timeout);
    }

    fn grpc_retry_policy(&mut self, path: &Path, r: &GrpcRetryPolicy) {
        if r.grpc_retry_events.is_none()
            && r.http_retry_events.is_none()
            && r.tcp_retry_events.is_none()
        {
            self.error(
                path,
                "at least one of grpcRetryEvents, httpRetryEvents and tcpRetryEvents must be set",
            );
        }
        self.retry_events(
            &path.f("grpcRetryEvents"),
            r.grpc_retry_events.as_ref(),
            &GRPC_RETRY_EVENTS,
            5,
        );
        self.retry_events(
            &path.f("httpRetryEvents"),
            r.http_retry_events.as_ref(),
            &HTTP_RETRY_EVENTS,
            25,
        );
        self.retry_events(
            &path.f("tcpRetryEvents"),
            r.tcp_retry_events.as_ref(),
            &TCP_RETRY_EVENTS,
            1,
        );
        self.at_least(&path.f("maxRetries"), r.max_retries, 0);
        self.duration(&path.f("perRetryTimeout"), &r.per_retry_timeout);
    }
}

// === Checker: VirtualGateway ===

impl Checker {
    fn virtual_gateway(&mut self, spec: &Path, s: &VirtualGatewaySpec) {
        if s.aws_name.is_some() {
            self.aws_only(&spec.f("awsName"), AWS_NAME);
        }
        for (name, sel) in [
            ("namespaceSelector", &s.namespace_selector),
            ("podSelector", &s.pod_selector),
            ("gatewayRouteSelector", &s.gateway_route_selector),
        ] {
            if let Some(sel) = sel {
                self.label_selector(&spec.f(name), sel);
            }
        }
        let lp = spec.f("listeners");
        self.count(&lp, s.listeners.len(), 1, usize::MAX);
        for (i, l) in s.listeners.iter().enumerate() {
            let p = lp.i(i);
            let protocol = l.port_mapping.protocol;
            // tcp (a Bowline extension) is served by GatewayRoute tcpRoutes.
            self.port(&p.f("portMapping").f("port"), l.port_mapping.port);
            if let Some(hc) = &l.health_check {
                self.problems
                    .push(Problem::ignored(p.f("healthCheck").0, GATEWAY_HEALTH_CHECK));
                self.health_check(&p.f("healthCheck"), hc, true);
            }
            if let Some(pool) = &l.connection_pool {
                self.gateway_connection_pool(&p.f("connectionPool"), pool, protocol);
            }
            if let Some(tls) = &l.tls {
                self.listener_tls(&p.f("tls"), tls, true);
            }
        }
        self.unique_ports(&lp, s.listeners.iter().map(|l| l.port_mapping.port));
        if let Some(d) = &s.backend_defaults {
            self.backend_defaults(&spec.f("backendDefaults"), d, true);
        }
        if let Some(l) = &s.logging {
            self.logging(&spec.f("logging"), l);
        }
        self.mesh_ref(&spec.f("meshRef"), s.mesh_ref.as_ref());
    }
}

// === Checker: GatewayRoute ===

impl Checker {
    fn gateway_route(&mut self, spec: &Path, s: &GatewayRouteSpec) {
        if s.aws_name.is_some() {
            self.aws_only(&spec.f("awsName"), AWS_NAME);
        }
        self.exactly_one(
            spec,
            &[
                ("grpcRoute", s.grpc_route.is_some()),
                ("httpRoute", s.http_route.is_some()),
                ("http2Route", s.http2_route.is_some()),
                ("tcpRoute", s.tcp_route.is_some()),
            ],
        );
        if let Some(prio) = s.priority {
            self.range(&spec.f("priority"), prio, 0, 1000);
        }
        if let Some(r) = &s.tcp_route {
            self.tcp_gateway_route(&spec.f("tcpRoute"), r);
        }
        if let Some(r) = &s.http_route {
            self.http_gateway_route(&spec.f("httpRoute"), r);
        }
        if let Some(r) = &s.http2_route {
            self.http_gateway_route(&spec.f("http2Route"), r);
        }
        if let Some(r) = &s.grpc_route {
            self.grpc_gateway_route(&spec.f("grpcRoute"), r);
        }
        if let Some(g) = &s.virtual_gateway_ref {
            self.not_empty(&spec.f("virtualGatewayRef").f("name"), &g.name);
            if g.uid.is_some() {
                self.problems.push(Problem::ignored(
                    spec.f("virtualGatewayRef").f("uid").0,
                    "the Kubernetes UID of the gateway; the reference is by name",
                ));
            }
        }
        self.mesh_ref(&spec.f("meshRef"), s.mesh_ref.as_ref());
    }

    fn gateway_target(&mut self, path: &Path, t: &GatewayRouteTarget) {
        let vs = &t.virtual_service;
        self.ref_or_arn(
            &path.f("virtualService"),
            ("virtualServiceRef", vs.virtual_service_ref.is_some()),
            ("virtualServiceARN", vs.virtual_service_arn.as_ref()),
            "the route has no target",
        );
        if let Some(port) = t.port {
            self.port(&path.f("port"), port);
        }
    }

    fn http_gateway_route(&mut self, path: &Path, r: &HttpGatewayRoute) {
        let mp = path.f("match");
        let m = &r.matcher;
        if m.prefix.is_some() && m.path.is_some() {
            self.error(&mp, "only one of prefix and path may be set (both are)");
        } else if m.prefix.is_none() && m.path.is_none() && m.hostname.is_none() {
            self.error(&mp, "at least one of prefix, path and hostname must be set");
        }
        if let Some(prefix) = &m.prefix {
            self.starts_with_slash(&mp.f("prefix"), prefix);
        }
        if let Some(pm) = &m.path {
            self.path_match(&mp.f("path"), pm);
        }
        if let Some(h) = &m.hostname {
            self.hostname_match(&mp.f("hostname"), h);
        }
        if let Some(h) = &m.headers {
            self.headers(&mp.f("headers"), h);
        }
        self.method(&mp.f("method"), m.method.as_ref());
        if let Some(q) = &m.query_parameters {
            self.query_parameters(&mp.f("queryParameters"), q);
        }
        if let Some(port) = m.port {
            self.port(&mp.f("port"), port);
        }

        if let Some(c) = &m.cookies {
            self.cookies(&mp.f("cookies"), c);
        }

        let ap = path.f("action");
        if !self.gateway_route_extensions(path, r) {
            self.gateway_target(&ap.f("target"), &r.action.target);
        }
        if let Some(rw) = &r.action.rewrite {
            let rp = ap.f("rewrite");
            if let Some(prefix) = &rw.prefix {
                let pp = rp.f("prefix");
                if m.prefix.is_none() {
                    self.error(&pp, "requires match.prefix");
                }
                if prefix.default_prefix.is_some() && prefix.value.is_some() {
                    self.error(&pp, "defaultPrefix and value are mutually exclusive");
                }
                if let Some(v) = &prefix.value
                    && !(v.starts_with('/') && v.ends_with('/'))
                {
                    self.error(&pp.f("value"), "must start and end with \"/\"");
                }
            }
            if let Some(p) = &rw.path {
                if m.path.is_none() {
                    self.error(&rp.f("path"), "requires match.path");
                }
                self.starts_with_slash(&rp.f("path").f("exact"), &p.exact);
            }
        }
    }

    fn grpc_gateway_route(&mut self, path: &Path, r: &GrpcGatewayRoute) {
        let mp = path.f("match");
        let m = &r.matcher;
        if m.service_name.is_none() && m.hostname.is_none() {
            self.error(&mp, "at least one of serviceName and hostname must be set");
        }
        if let Some(h) = &m.hostname {
            self.hostname_match(&mp.f("hostname"), h);
        }
        if let Some(md) = &m.metadata {
            self.metadata(&mp.f("metadata"), md);
        }
        if let Some(port) = m.port {
            self.port(&mp.f("port"), port);
        }
        self.gateway_target(&path.f("action").f("target"), &r.action.target);
    }

    /// Bowline extension: a gateway route for tcp listeners.
    fn tcp_gateway_route(&mut self, path: &Path, r: &TcpGatewayRoute) {
        if let Some(port) = r.matcher.as_ref().and_then(|m| m.port) {
            self.port(&path.f("match").f("port"), port);
        }
        self.gateway_target(&path.f("action").f("target"), &r.action.target);
        if let Some(t) = &r.timeout {
            self.tcp_timeout(&path.f("timeout"), t);
        }
    }
}

// === Checker: Kubernetes kinds ===

impl Checker {
    fn service(&mut self, spec: &Path, s: &Service) {
        let ports = s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let pp = spec.f("ports");
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, p) in ports.iter().enumerate() {
            let path = pp.i(i);
            self.port(&path.f("port"), i64::from(p.port));
            match &p.target_port {
                Some(IntOrString::Int(t)) => self.port(&path.f("targetPort"), i64::from(*t)),
                Some(IntOrString::String(t)) => self.not_empty(&path.f("targetPort"), t),
                None => {}
            }
            if let Some(proto) = &p.protocol {
                self.one_of_values(&path.f("protocol"), proto, &["TCP", "UDP", "SCTP"]);
            }
            match p.name.as_deref() {
                None | Some("") if ports.len() > 1 => {
                    self.error(
                        &path.f("name"),
                        "is required when a Service has several ports",
                    );
                }
                Some(n) if !n.is_empty() => {
                    if let Some(first) = names.get(n) {
                        self.error(
                            &path.f("name"),
                            format!("duplicate port name {n:?} (also {})", pp.i(*first)),
                        );
                    } else {
                        names.insert(n, i);
                    }
                }
                _ => {}
            }
        }
    }

    /// A Pod matters for its labels and `status.podIP` (AWS Cloud Map discovery).
    fn pod(&mut self, p: &Pod) {
        let status = p.status.as_ref();
        if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref())
            && ip.parse::<IpAddr>().is_err()
        {
            self.error(
                &Path::new("status").f("podIP"),
                format!("{ip:?} is not an IP address"),
            );
        }
    }

    fn endpoint_slice(&mut self, s: &EndpointSlice) {
        let at = Path::new("addressType");
        let kind = s.address_type.as_str();
        self.one_of_values(&at, kind, &["IPv4", "IPv6", "FQDN"]);
        for (i, e) in s.endpoints.iter().flatten().enumerate() {
            let ap = Path::new("endpoints").i(i).f("addresses");
            self.count(&ap, e.addresses.len(), 1, 100);
            for (j, a) in e.addresses.iter().enumerate() {
                let ok = match kind {
                    "IPv4" => a.parse::<Ipv4Addr>().is_ok(),
                    "IPv6" => a.parse::<Ipv6Addr>().is_ok(),
                    _ => !a.is_empty(),
                };
                if !ok {
                    self.error(&ap.i(j), format!("{a:?} is not a valid {kind} address"));
                }
            }
        }
        for (i, p) in s.ports.iter().flatten().enumerate() {
            if let Some(port) = p.port {
                self.port(&Path::new("ports").i(i).f("port"), i64::from(port));
            }
        }
    }
}

// === Checker: Bowline routing extensions (not in App Mesh) ===

/// Headers header changes may not touch: they describe the connection or the framing.
pub const PROTECTED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Redirect status codes.
pub const REDIRECT_STATUS_CODES: [i64; 5] = [301, 302, 303, 307, 308];

/// An RFC 9110 token (header names, cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Checker {
    fn query_parameter_match(&mut self, path: &Path, m: &crate::appmesh::QueryParameterMatch) {
        self.exactly_one(
            path,
            &[("exact", m.exact.is_some()), ("regex", m.regex.is_some())],
        );
        if let Some(r) = &m.regex {
            self.regex(&path.f("regex"), r);
        }
    }

    fn wildcard_host(&mut self, path: &Path, w: &str) {
        let ok = w
            .strip_prefix("*.")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('*') && !rest.starts_with('.'));
        if !ok {
            self.error(
                path,
                format!(
                    "must be \"*.\" followed by a domain, such as \"*.example.com\" (got {w:?})"
                ),
            );
        }
    }

    fn cookies(&mut self, path: &Path, cookies: &[HttpCookieMatch]) {
        self.count(path, cookies.len(), 1, 10);
        for (i, c) in cookies.iter().enumerate() {
            let p = path.i(i);
            if !is_token(&c.name) {
                self.error(&p.f("name"), format!("{:?} is not a cookie name", c.name));
            }
            if let Some(m) = &c.matcher {
                self.exactly_one(
                    &p.f("match"),
                    &[("exact", m.exact.is_some()), ("regex", m.regex.is_some())],
                );
                if let Some(r) = &m.regex {
                    self.regex(&p.f("match").f("regex"), r);
                }
            }
        }
    }

    /// Extensions of a router httpRoute / http2Route.
    fn router_route_extensions(&mut self, path: &Path, r: &HttpRoute) {
        let ap = path.f("action");
        let a = &r.action;
        // Without an answer, weightedTargets are required (checked with the action).
        if a.redirect.is_some() || a.direct_response.is_some() {
            self.answer_or_targets(
                &ap,
                !a.weighted_targets.is_empty(),
                "weightedTargets",
                a.redirect.as_ref(),
                a.direct_response.as_ref(),
                r.matcher.prefix.is_some(),
            );
        }
        if let Some(rw) = &a.rewrite {
            let rp = ap.f("rewrite");
            if a.weighted_targets.is_empty() {
                self.error(&rp, "requires weightedTargets");
            }
            let set = usize::from(rw.prefix.is_some())
                + usize::from(rw.path.is_some())
                + usize::from(rw.regex.is_some());
            if set != 1 {
                self.error(&rp, "exactly one of prefix, path and regex must be set");
            }
            if let Some(prefix) = &rw.prefix {
                if r.matcher.prefix.is_none() {
                    self.error(&rp.f("prefix"), "requires match.prefix");
                }
                if prefix.value.contains('?') {
                    self.error(&rp.f("prefix").f("value"), "must not contain \"?\"");
                }
            }
            if let Some(p) = &rw.path {
                self.starts_with_slash(&rp.f("path").f("exact"), &p.exact);
            }
            if let Some(re) = &rw.regex {
                self.regex_rewrite(&rp.f("regex"), re);
            }
        }
        self.route_filters(
            path,
            r.request_headers.as_ref(),
            r.response_headers.as_ref(),
            r.mirror.as_deref(),
            r.cors.as_ref(),
            a.redirect.is_some() || a.direct_response.is_some(),
        );
    }

    /// Extensions of a GatewayRoute httpRoute / http2Route. Returns whether the route answers
    /// itself (redirect or direct response), so it has no target.
    fn gateway_route_extensions(&mut self, path: &Path, r: &HttpGatewayRoute) -> bool {
        let ap = path.f("action");
        let a = &r.action;
        let t = &a.target;
        let has_target = t.virtual_service.virtual_service_ref.is_some()
            || t.virtual_service.virtual_service_arn.is_some()
            || t.port.is_some();
        let answers = a.redirect.is_some() || a.direct_response.is_some();
        if answers {
            self.answer_or_targets(
                &ap,
                has_target,
                "target",
                a.redirect.as_ref(),
                a.direct_response.as_ref(),
                r.matcher.prefix.is_some(),
            );
            if a.rewrite.is_some() {
                self.error(&ap.f("rewrite"), "requires a target");
            }
        }
        if let Some(re) = a.rewrite.as_ref().and_then(|rw| rw.regex.as_ref()) {
            let rw = a.rewrite.as_ref().expect("rewrite is set");
            if rw.prefix.is_some() || rw.path.is_some() {
                self.error(
                    &ap.f("rewrite"),
                    "regex and prefix or path are mutually exclusive",
                );
            }
            self.regex_rewrite(&ap.f("rewrite").f("regex"), re);
        }
        self.route_filters(
            path,
            r.request_headers.as_ref(),
            r.response_headers.as_ref(),
            r.mirror.as_deref(),
            r.cors.as_ref(),
            answers,
        );
        answers
    }

    /// Exactly one of targets, `redirect` and `directResponse`, and their own rules.
    fn answer_or_targets(
        &mut self,
        ap: &Path,
        has_targets: bool,
        targets: &str,
        redirect: Option<&HttpRedirect>,
        direct: Option<&HttpDirectResponse>,
        has_prefix_match: bool,
    ) {
        self.exactly_one(
            ap,
            &[
                (targets, has_targets),
                ("redirect", redirect.is_some()),
                ("directResponse", direct.is_some()),
            ],
        );
        if let Some(r) = redirect {
            let rp = ap.f("redirect");
            if let Some(s) = &r.scheme {
                self.one_of_values(&rp.f("scheme"), s, &["http", "https"]);
            }
            if let Some(h) = &r.hostname {
                let ok = !h.is_empty()
                    && !h.contains([':', '/', '?', '#', '@', ' '])
                    && h.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    self.error(&rp.f("hostname"), format!("{h:?} is not a host name"));
                }
            }
            if let Some(p) = r.port {
                self.port(&rp.f("port"), p);
            }
            if let Some(path) = &r.path {
                let pp = rp.f("path");
                self.exactly_one(
                    &pp,
                    &[
                        ("exact", path.exact.is_some()),
                        ("prefix", path.prefix.is_some()),
                    ],
                );
                if let Some(e) = &path.exact {
                    self.starts_with_slash(&pp.f("exact"), e);
                }
                if path.prefix.is_some() && !has_prefix_match {
                    self.error(&pp.f("prefix"), "requires match.prefix");
                }
                for (field, v) in [("exact", &path.exact), ("prefix", &path.prefix)] {
                    if let Some(v) = v
                        && v.contains(['?', '#', ' '])
                    {
                        self.error(&pp.f(field), "must be a path without query or fragment");
                    }
                }
            }
            if let Some(code) = r.status_code
                && !REDIRECT_STATUS_CODES.contains(&code)
            {
                self.error(
                    &rp.f("statusCode"),
                    format!("must be 301, 302, 303, 307 or 308 (got {code})"),
                );
            }
        }
        if let Some(d) = direct {
            self.range(&ap.f("directResponse").f("status"), d.status, 200, 599);
        }
    }

    fn regex_rewrite(&mut self, path: &Path, r: &PathRegexRewrite) {
        self.regex(&path.f("pattern"), &r.pattern);
        if let Ok(re) = regex::Regex::new(&r.pattern)
            && let Err(e) = crate::ir::check_substitution(&re, &r.substitution)
        {
            self.error(&path.f("substitution"), e);
        }
    }

    fn route_filters(
        &mut self,
        path: &Path,
        request: Option<&HttpHeaderModifier>,
        response: Option<&HttpHeaderModifier>,
        mirror: Option<&[HttpMirror]>,
        cors: Option<&HttpCors>,
        answers: bool,
    ) {
        if let Some(m) = request {
            self.header_modifier(&path.f("requestHeaders"), m);
        }
        if let Some(m) = response {
            self.header_modifier(&path.f("responseHeaders"), m);
        }
        if let Some(mirrors) = mirror {
            let mp = path.f("mirror");
            self.count(&mp, mirrors.len(), 1, 4);
            if answers {
                self.error(
                    &mp,
                    "requires a route that forwards (not a redirect or direct response)",
                );
            }
            for (i, m) in mirrors.iter().enumerate() {
                let p = mp.i(i);
                self.exactly_one(
                    &p,
                    &[
                        ("virtualNodeRef", m.virtual_node_ref.is_some()),
                        ("virtualServiceRef", m.virtual_service_ref.is_some()),
                    ],
                );
                if let Some(port) = m.port {
                    self.port(&p.f("port"), port);
                }
                if let Some(pct) = m.percent {
                    self.range(&p.f("percent"), pct, 0, 100);
                }
            }
        }
        if let Some(c) = cors {
            self.cors(&path.f("cors"), c);
        }
    }

    fn header_modifier(&mut self, path: &Path, m: &HttpHeaderModifier) {
        let check_name = |c: &mut Checker, p: &Path, name: &str| {
            if !is_token(name) {
                c.error(p, format!("{name:?} is not a header name"));
            } else if PROTECTED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                c.error(
                    p,
                    format!(
                        "{name:?} describes the connection or the framing and cannot be changed"
                    ),
                );
            }
        };
        for (field, list) in [("add", &m.add), ("set", &m.set)] {
            let Some(list) = list else { continue };
            let lp = path.f(field);
            self.count(&lp, list.len(), 1, 16);
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, h) in list.iter().enumerate() {
                check_name(self, &lp.i(i).f("name"), &h.name);
                if h.value
                    .bytes()
                    .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
                {
                    self.error(&lp.i(i).f("value"), "must not contain control characters");
                }
                if let Some(first) = seen.insert(h.name.to_ascii_lowercase(), i) {
                    self.error(
                        &lp.i(i).f("name"),
                        format!("duplicate header {:?} (also {})", h.name, lp.i(first)),
                    );
                }
            }
        }
        if let Some(list) = &m.remove {
            let lp = path.f("remove");
            self.count(&lp, list.len(), 1, 16);
            for (i, n) in list.iter().enumerate() {
                check_name(self, &lp.i(i), n);
            }
        }
    }

    fn cors(&mut self, path: &Path, c: &HttpCors) {
        let op = path.f("allowOrigins");
        self.count(&op, c.allow_origins.len(), 1, 64);
        for (i, o) in c.allow_origins.iter().enumerate() {
            if !valid_origin(o) {
                self.error(
                    &op.i(i),
                    format!("{o:?} is not \"*\", \"scheme://host[:port]\" or \"scheme://*.domain[:port]\""),
                );
            }
        }
        for (i, m) in c.allow_methods.iter().flatten().enumerate() {
            if m != "*" {
                self.one_of_values(&path.f("allowMethods").i(i), m, &HTTP_METHODS);
            }
        }
        for (field, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (i, h) in list.iter().flatten().enumerate() {
                if h != "*" && !is_token(h) {
                    self.error(&path.f(field).i(i), format!("{h:?} is not a header name"));
                }
            }
        }
        if let Some(d) = &c.max_age {
            self.duration(&path.f("maxAge"), d);
        }
    }

    /// Bowline extensions are errors on gRPC and TCP routes.
    fn http_only_actions(&mut self, path: &Path, a: &RouteAction) {
        for (field, set) in [
            ("redirect", a.redirect.is_some()),
            ("directResponse", a.direct_response.is_some()),
            ("rewrite", a.rewrite.is_some()),
        ] {
            if set {
                self.error(&path.f(field), "only httpRoute and http2Route support this");
            }
        }
    }
}

/// `*`, `scheme://host[:port]` or `scheme://*.domain[:port]`.
fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, host)) = o.split_once("://") else {
        return false;
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !host.is_empty()
        && !host.contains(['*', '/', '?', '#', '@', ' '])
}

// === RefChecker ===

struct RefChecker<'a> {
    index: &'a HashMap<ObjectKey, &'a Object>,
    problems: Vec<Problem>,
}

/// The listener ports of a virtual node or router, in document order.
fn listener_ports(object: &Object) -> Vec<i64> {
    match object {
        Object::VirtualNode(n) => n
            .spec
            .listeners
            .iter()
            .flatten()
            .map(|l| l.port_mapping.port)
            .collect(),
        Object::VirtualRouter(r) => r
            .spec
            .listeners
            .iter()
            .flatten()
            .map(|l| l.port_mapping.port)
            .collect(),
        Object::VirtualGateway(g) => g
            .spec
            .listeners
            .iter()
            .map(|l| l.port_mapping.port)
            .collect(),
        _ => Vec::new(),
    }
}

impl<'a> RefChecker<'a> {
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.problems.push(Problem::error(path.0.clone(), message));
    }

    /// Resolves a reference; reports it when the object does not exist.
    fn resolve<S>(
        &mut self,
        path: &Path,
        from: &Resource<S>,
        kind: Kind,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<(ObjectKey, &'a Object)> {
        let key = ObjectKey {
            kind,
            namespace: namespace.unwrap_or(from.metadata.namespace()).to_string(),
            name: name.to_string(),
        };
        let index: &'a HashMap<ObjectKey, &'a Object> = self.index;
        match index.get(&key) {
            Some(o) => Some((key, *o)),
            None => {
                self.error(path, format!("{key} does not exist"));
                None
            }
        }
    }

    fn resolve_ref<S>(
        &mut self,
        path: &Path,
        from: &Resource<S>,
        kind: Kind,
        r: &ObjectReference,
    ) -> Option<(ObjectKey, &'a Object)> {
        self.resolve(path, from, kind, &r.name, r.namespace.as_deref())
    }

    /// `port` must be a listener port of `target` when it has listeners; required when it has
    /// several (as App Mesh requires for targets). `what` names the target in messages.
    fn port(&mut self, path: &Path, port: Option<i64>, target: &Object, what: &str) {
        let ports = listener_ports(target);
        match port {
            Some(p) if !ports.is_empty() && !ports.contains(&p) => self.error(
                path,
                format!(
                    "{what} has no listener on port {p} (listeners: {})",
                    join_ports(&ports)
                ),
            ),
            None if ports.len() > 1 => self.error(
                path,
                format!(
                    "is required: {what} has several listeners ({})",
                    join_ports(&ports)
                ),
            ),
            _ => {}
        }
    }

    fn virtual_service(&mut self, spec: &Path, o: &Resource<VirtualServiceSpec>) {
        let Some(p) = &o.spec.provider else {
            return;
        };
        let pp = spec.f("provider");
        if let Some(r) = p
            .virtual_node
            .as_ref()
            .and_then(|n| n.virtual_node_ref.as_ref())
        {
            let path = pp.f("virtualNode").f("virtualNodeRef");
            self.resolve_ref(&path, o, Kind::VirtualNode, r);
        }
        if let Some(r) = p
            .virtual_router
            .as_ref()
            .and_then(|n| n.virtual_router_ref.as_ref())
        {
            let path = pp.f("virtualRouter").f("virtualRouterRef");
            self.resolve_ref(&path, o, Kind::VirtualRouter, r);
        }
    }

    fn virtual_router(&mut self, spec: &Path, o: &Resource<VirtualRouterSpec>) {
        for (i, r) in o.spec.routes.iter().flatten().enumerate() {
            let rp = spec.f("routes").i(i);
            let actions = [
                ("grpcRoute", r.grpc_route.as_ref().map(|x| &x.action)),
                ("httpRoute", r.http_route.as_ref().map(|x| &x.action)),
                ("http2Route", r.http2_route.as_ref().map(|x| &x.action)),
                ("tcpRoute", r.tcp_route.as_ref().map(|x| &x.action)),
            ];
            for (name, action) in actions {
                let Some(action) = action else { continue };
                let wp = rp.f(name).f("action").f("weightedTargets");
                for (j, t) in action.weighted_targets.iter().enumerate() {
                    let Some(node) = &t.virtual_node_ref else {
                        continue;
                    };
                    let tp = wp.i(j);
                    if let Some((key, target)) =
                        self.resolve_ref(&tp.f("virtualNodeRef"), o, Kind::VirtualNode, node)
                    {
                        self.port(&tp.f("port"), t.port, target, &key.to_string());
                    }
                }
            }
            for (name, route) in [("httpRoute", &r.http_route), ("http2Route", &r.http2_route)] {
                if let Some(route) = route {
                    self.mirrors(&rp.f(name).f("mirror"), o, route.mirror.as_deref());
                }
            }
        }
    }

    /// Mirror targets (Bowline extension) resolve; a node's `port` names one of its listeners.
    fn mirrors<S>(&mut self, path: &Path, from: &Resource<S>, mirrors: Option<&[HttpMirror]>) {
        for (i, m) in mirrors.unwrap_or_default().iter().enumerate() {
            let mp = path.i(i);
            if let Some(node) = &m.virtual_node_ref
                && let Some((key, target)) =
                    self.resolve_ref(&mp.f("virtualNodeRef"), from, Kind::VirtualNode, node)
            {
                self.port(&mp.f("port"), m.port, target, &key.to_string());
            }
            if let Some(vs) = &m.virtual_service_ref {
                self.resolve_ref(&mp.f("virtualServiceRef"), from, Kind::VirtualService, vs);
            }
        }
    }

    fn virtual_node(&mut self, spec: &Path, o: &Resource<VirtualNodeSpec>) {
        for (i, b) in o.spec.backends.iter().flatten().enumerate() {
            if let Some(r) = &b.virtual_service.virtual_service_ref {
                let path = spec
                    .f("backends")
                    .i(i)
                    .f("virtualService")
                    .f("virtualServiceRef");
                self.resolve_ref(&path, o, Kind::VirtualService, r);
            }
        }
    }

    fn gateway_route(&mut self, spec: &Path, o: &Resource<GatewayRouteSpec>) {
        let s = &o.spec;
        let targets = [
            ("grpcRoute", s.grpc_route.as_ref().map(|r| &r.action.target)),
            ("httpRoute", s.http_route.as_ref().map(|r| &r.action.target)),
            (
                "http2Route",
                s.http2_route.as_ref().map(|r| &r.action.target),
            ),
            ("tcpRoute", s.tcp_route.as_ref().map(|r| &r.action.target)),
        ];
        for (name, target) in targets {
            let Some(target) = target else { continue };
            let Some(vs_ref) = &target.virtual_service.virtual_service_ref else {
                continue;
            };
            let tp = spec.f(name).f("action").f("target");
            let path = tp.f("virtualService").f("virtualServiceRef");
            let Some((vs_key, vs)) = self.resolve_ref(&path, o, Kind::VirtualService, vs_ref)
            else {
                continue;
            };
            // The target port names a listener of the virtual service's provider.
            let Object::VirtualService(vs) = vs else {
                continue;
            };
            let provider = vs.spec.provider.as_ref().and_then(|p| {
                let ns = vs.metadata.namespace();
                let (kind, r) = if let Some(r) = p
                    .virtual_node
                    .as_ref()
                    .and_then(|n| n.virtual_node_ref.as_ref())
                {
                    (Kind::VirtualNode, r)
                } else {
                    let r = p
                        .virtual_router
                        .as_ref()
                        .and_then(|n| n.virtual_router_ref.as_ref())?;
                    (Kind::VirtualRouter, r)
                };
                let key = ObjectKey {
                    kind,
                    namespace: r.namespace.clone().unwrap_or_else(|| ns.to_string()),
                    name: r.name.clone(),
                };
                self.index.get(&key).map(|o| (key, *o))
            });
            if let Some((key, provider)) = provider {
                self.port(
                    &tp.f("port"),
                    target.port,
                    provider,
                    &format!("{key} (the provider of {vs_key})"),
                );
            }
        }

        for (name, route) in [("httpRoute", &s.http_route), ("http2Route", &s.http2_route)] {
            if let Some(route) = route {
                self.mirrors(&spec.f(name).f("mirror"), o, route.mirror.as_deref());
            }
        }

        if let Some(g) = &s.virtual_gateway_ref {
            let path = spec.f("virtualGatewayRef");
            if let Some((key, gateway)) = self.resolve(
                &path,
                o,
                Kind::VirtualGateway,
                &g.name,
                g.namespace.as_deref(),
            ) {
                let ports = [
                    ("grpcRoute", s.grpc_route.as_ref().map(|r| r.matcher.port)),
                    ("httpRoute", s.http_route.as_ref().map(|r| r.matcher.port)),
                    ("http2Route", s.http2_route.as_ref().map(|r| r.matcher.port)),
                    (
                        "tcpRoute",
                        s.tcp_route
                            .as_ref()
                            .map(|r| r.matcher.as_ref().and_then(|m| m.port)),
                    ),
                ];
                // Without a port, a route applies to every listener of its protocol.
                for (name, port) in ports {
                    if let Some(Some(port)) = port {
                        let mp = spec.f(name).f("match").f("port");
                        self.port(&mp, Some(port), gateway, &key.to_string());
                    }
                }
            }
        }
    }
}

// === Checker: load balancing (Bowline extension) ===

fn lb_policy_name(p: LoadBalancerPolicy) -> &'static str {
    match p {
        LoadBalancerPolicy::RoundRobin => "ROUND_ROBIN",
        LoadBalancerPolicy::LeastRequest => "LEAST_REQUEST",
        LoadBalancerPolicy::Random => "RANDOM",
        LoadBalancerPolicy::RingHash => "RING_HASH",
        LoadBalancerPolicy::Maglev => "MAGLEV",
        LoadBalancerPolicy::PeakEwma => "PEAK_EWMA",
    }
}

impl Checker {
    fn load_balancer(&mut self, path: &Path, lb: &LoadBalancer, protocol: PortProtocol) {
        let hashing = matches!(
            lb.policy,
            LoadBalancerPolicy::RingHash | LoadBalancerPolicy::Maglev
        );
        let hp = path.f("hashOn");
        match &lb.hash_on {
            None if hashing => self.error(
                &hp,
                format!("is required when policy is {}", lb_policy_name(lb.policy)),
            ),
            Some(_) if !hashing => self.error(
                &hp,
                format!(
                    "is only allowed when policy is RING_HASH or MAGLEV (got {})",
                    lb_policy_name(lb.policy)
                ),
            ),
            Some(h) => self.hash_on(&hp, h, protocol),
            None => {}
        }
    }

    fn hash_on(&mut self, path: &Path, h: &LoadBalancerHashOn, protocol: PortProtocol) {
        self.exactly_one(
            path,
            &[
                ("sourceIp", h.source_ip.is_some()),
                ("header", h.header.is_some()),
                ("cookie", h.cookie.is_some()),
            ],
        );
        if h.source_ip == Some(false) {
            self.error(&path.f("sourceIp"), "must be true when set");
        }
        if protocol == PortProtocol::Tcp && (h.header.is_some() || h.cookie.is_some()) {
            self.error(
                path,
                "header and cookie hashing need an http, http2 or grpc listener (got \"tcp\")",
            );
        }
        if let Some(hd) = &h.header
            && !is_token(&hd.name)
        {
            self.error(
                &path.f("header").f("name"),
                format!("{:?} is not a header name", hd.name),
            );
        }
        if let Some(c) = &h.cookie {
            let cp = path.f("cookie");
            if !is_token(&c.name) {
                self.error(&cp.f("name"), format!("{:?} is not a cookie name", c.name));
            }
            if let Some(ttl) = &c.ttl {
                self.duration(&cp.f("ttl"), ttl);
            }
            if let Some(p) = &c.path {
                self.starts_with_slash(&cp.f("path"), p);
                if p.bytes()
                    .any(|b| b == b';' || b.is_ascii_control() || !b.is_ascii())
                {
                    self.error(
                        &cp.f("path"),
                        "must not contain \";\", control or non-ASCII characters",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
