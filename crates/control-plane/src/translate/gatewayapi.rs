//! Translation of a Gateway API Gateway (`gateway.networking.k8s.io/v1`) and the HTTPRoutes and
//! GRPCRoutes attached to it into the snapshot of `bowline-gateway --gateway NAMESPACE/NAME`.
//! Pure: TLS material is returned as files to write. Which routes attach to which listener, and
//! which references resolve, is decided by [`bowline_model::gatewayapi::status`] (the same code
//! computes the objects' status).
//!
//! ## IR names
//!
//! | object | name |
//! |---|---|
//! | listener (one per port of the programmed listeners) | `http-<port>` |
//! | route table of a port | `gatewayapi/<namespace>/<gateway>/<port>` |
//! | virtual host | the effective hostname (`foo.example.com`, `*.example.com`) or `*` |
//! | route | `httproute/<namespace>/<name>/rules[i]/matches[j]`, `grpcroute/…` |
//! | cluster and its endpoints (one per Service port) | `gatewayapi/<namespace>/<service>/<port>` (`…/grpc` for GRPCRoute backends) |
//!
//! ## Hosts and precedence
//!
//! Each attached route serves, on each listener, the intersection of its hostnames with the
//! listener's hostname; a wildcard `*.example.com` matches one or more labels. Every listener
//! hostname has a virtual host even without routes, so a request for a more specific listener
//! never reaches the routes of a less specific one (listener isolation). Within a host, routes
//! are ordered as the specification says: an exact path, then a regular expression, then the
//! longest prefix; then a method match; then the most header matches; then the most query
//! parameter matches; then the oldest route (`creationTimestamp`; routes without one come after),
//! then namespace/name, then rule and match order. `PathPrefix` matches element-wise (`/foo`
//! matches `/foo` and `/foo/bar`, not `/foobar`).
//!
//! ## Backends
//!
//! A rule forwards to its backendRefs by weight. References that do not resolve (see the route's
//! `ResolvedRefs` condition) and weights of 0 are left out; when nothing is left, or the rule has
//! no backendRefs, it answers 500. A Service port with `appProtocol: kubernetes.io/h2c` is
//! reached over h2c. Filters of a backendRef apply to the whole rule when the rule has a single
//! backend (otherwise they are reported and not applied).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::Path;

use bowline_model::gatewayapi::status::{self, Analysis, Attached, RouteRef};
use bowline_model::gatewayapi::{
    self, Gateway, GrpcRouteRule, HeaderModifier, HttpBackendRef, HttpRouteFilter, HttpRouteRule,
    PathModifier, ValueMatch,
};
use bowline_model::ir;
use bowline_model::manifest::Kind;

use super::ingress::{TlsFile, certificate_files, tls_material};
use super::{CONNECT_TIMEOUT_MS, Diagnostic, Inputs, Translation};
use crate::discovery;

/// The result of translating one Gateway.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayApiTranslation {
    pub translation: Translation,
    pub files: Vec<TlsFile>,
}

/// The route table of one port of a Gateway.
pub fn table_name(namespace: &str, gateway: &str, port: u16) -> String {
    format!("gatewayapi/{namespace}/{gateway}/{port}")
}

/// The cluster of one Service port used as a backend.
pub fn cluster_name(namespace: &str, service: &str, port: u16, grpc: bool) -> String {
    let base = format!("gatewayapi/{namespace}/{service}/{port}");
    if grpc { format!("{base}/grpc") } else { base }
}

/// Whether a Gateway API Gateway of Bowline's classes named `namespace/name` exists.
pub fn exists(inputs: &Inputs<'_>, namespace: &str, name: &str) -> bool {
    inputs.world.get(Kind::Gateway, namespace, name).is_some()
}

/// The status of every Gateway API object of Bowline's classes.
pub fn statuses(inputs: &Inputs<'_>) -> Vec<status::ObjectStatus> {
    status::analyse(inputs.world.objects().values().map(|e| e.object.as_ref())).statuses
}

/// Translates the Gateway `namespace/name`; TLS files go under `tls_dir`.
pub fn gateway_api(
    inputs: &Inputs<'_>,
    namespace: &str,
    name: &str,
    tls_dir: &Path,
) -> GatewayApiTranslation {
    let analysis = status::analyse(inputs.world.objects().values().map(|e| e.object.as_ref()));
    let mut cx = Cx {
        inputs,
        analysis: &analysis,
        out: GatewayApiTranslation::default(),
        clusters: BTreeMap::new(),
    };
    let Some(g) = analysis
        .gateways
        .iter()
        .find(|g| g.gateway.namespace() == namespace && g.gateway.name() == name)
    else {
        if let Some(gw) = analysis.objects.gateway(namespace, name) {
            cx.diag(
                Kind::Gateway,
                namespace,
                name,
                "spec.gatewayClassName",
                format!(
                    "GatewayClass {:?} does not exist or its controllerName is not {:?}: the Gateway is not served",
                    gw.spec.gateway_class_name,
                    gatewayapi::CONTROLLER
                ),
            );
        }
        return cx.finish(Vec::new(), Vec::new());
    };
    for s in analysis
        .statuses
        .iter()
        .filter(|s| s.kind == "Gateway" && s.namespace == namespace && s.name == name)
    {
        for l in &s.listeners {
            for c in l
                .conditions
                .iter()
                .filter(|c| (c.type_ == "Programmed" || c.type_ == "ResolvedRefs") && !c.is_true())
            {
                let i = g
                    .gateway
                    .spec
                    .listeners
                    .iter()
                    .position(|x| x.name == l.name)
                    .unwrap_or(0);
                cx.diag(
                    Kind::Gateway,
                    namespace,
                    name,
                    format!("spec.listeners[{i}]"),
                    format!("{} {}: {}", c.type_, c.reason, c.message),
                );
            }
        }
    }
    // Ports in order; each port's programmed listeners.
    let mut ports: BTreeMap<u16, Vec<&status::ListenerAnalysis<'_>>> = BTreeMap::new();
    for l in g.listeners.iter().filter(|l| l.programmed) {
        if let Ok(port) = u16::try_from(l.listener.port) {
            ports.entry(port).or_default().push(l);
        }
    }
    let mut listeners = Vec::new();
    let mut tables = Vec::new();
    for (port, ls) in ports {
        let table = table_name(namespace, name, port);
        let tls = cx.listener_tls(g.gateway, &ls, tls_dir);
        if ls.iter().any(|l| l.listener.protocol == "HTTPS") && tls.is_none() {
            continue;
        }
        let mut hosts: BTreeMap<HostKey, Vec<Entry>> = BTreeMap::new();
        let listener_hosts: Vec<Option<&str>> =
            ls.iter().map(|l| l.listener.hostname.as_deref()).collect();
        for l in &ls {
            hosts
                .entry(HostKey::of(l.listener.hostname.as_deref()))
                .or_default();
            for a in &l.routes {
                let entries = cx.entries(a, port);
                let keys: Vec<HostKey> = if a.hostnames.is_empty() {
                    vec![HostKey::of(l.listener.hostname.as_deref())]
                } else {
                    a.hostnames.iter().map(|h| HostKey::of(Some(h))).collect()
                };
                let own = l.listener.hostname.as_deref();
                for k in keys {
                    // Listener isolation: a host that a more specific listener of this port
                    // matches belongs to that listener's routes only.
                    if listener_hosts
                        .iter()
                        .any(|other| more_specific(*other, own) && other_matches(*other, &k))
                    {
                        continue;
                    }
                    let v = hosts.entry(k).or_default();
                    for e in &entries {
                        if !v.iter().any(|x| {
                            x.route.name == e.route.name && x.route.matcher == e.route.matcher
                        }) {
                            v.push(e.clone());
                        }
                    }
                }
            }
        }
        tables.push(ir::RouteTable {
            name: table.clone(),
            virtual_hosts: virtual_hosts(hosts),
        });
        listeners.push(ir::Listener {
            name: super::listener_name(ir::Protocol::Http, port),
            address: String::new(),
            port,
            protocol: ir::Protocol::Http,
            route_table: table,
            access_log: None,
            tls,
            tcp_proxy: None,
        });
    }
    cx.finish(listeners, tables)
}

/// Specificity of a listener hostname: none, then wildcards by length, then exact names.
fn specificity(h: Option<&str>) -> (u8, usize) {
    match h {
        None => (0, 0),
        Some(h) if h.starts_with("*.") => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

fn more_specific(a: Option<&str>, b: Option<&str>) -> bool {
    specificity(a) > specificity(b)
}

/// Whether the listener hostname `listener` matches every request of the host key.
fn other_matches(listener: Option<&str>, key: &HostKey) -> bool {
    let Some(l) = listener else { return false };
    match key {
        HostKey::Exact(h) | HostKey::Wildcard(h) => l == h || status::wildcard_covers(l, h),
        HostKey::Any => false,
    }
}

/// One IR route with its precedence key.
#[derive(Clone, Debug)]
struct Entry {
    key: Precedence,
    route: ir::Route,
}

/// The specification's precedence, most specific first: path kind (exact, regex, prefix) and
/// length, a method match, header and query match counts, then the route's age, namespace/name,
/// rule and match index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    path_rank: u8,
    path_len: Reverse<usize>,
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    /// (no timestamp, timestamp): routes with one first, oldest first.
    created: (bool, String),
    namespace: String,
    name: String,
    rule: usize,
    index: usize,
}

fn virtual_hosts(hosts: BTreeMap<HostKey, Vec<Entry>>) -> Vec<ir::VirtualHost> {
    let mut out: Vec<(HostKey, ir::VirtualHost)> = hosts
        .into_iter()
        .map(|(k, mut entries)| {
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            let vh = ir::VirtualHost {
                name: k.display(),
                hosts: vec![k.to_ir()],
                routes: entries.into_iter().map(|e| e.route).collect(),
            };
            (k, vh)
        })
        .collect();
    out.sort_by(|(a, _), (b, _)| a.rank().cmp(&b.rank()));
    out.into_iter().map(|(_, v)| v).collect()
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostKey {
    Exact(String),
    /// `*.example.com`, kept with the `*`.
    Wildcard(String),
    Any,
}

impl HostKey {
    fn of(h: Option<&str>) -> HostKey {
        match h {
            None | Some("") => HostKey::Any,
            Some(h) if h.starts_with("*.") => HostKey::Wildcard(h.to_ascii_lowercase()),
            Some(h) => HostKey::Exact(h.to_ascii_lowercase()),
        }
    }

    /// Exact hosts first, then wildcards (longest first), then any.
    fn rank(&self) -> (u8, Reverse<usize>, &str) {
        match self {
            HostKey::Exact(h) => (0, Reverse(0), h),
            HostKey::Wildcard(h) => (1, Reverse(h.len()), h),
            HostKey::Any => (2, Reverse(0), ""),
        }
    }

    fn display(&self) -> String {
        match self {
            HostKey::Exact(h) | HostKey::Wildcard(h) => h.clone(),
            HostKey::Any => "*".into(),
        }
    }

    fn to_ir(&self) -> ir::HostMatch {
        match self {
            HostKey::Exact(h) => ir::HostMatch::Exact(h.clone()),
            // One or more labels: the IR's suffix match.
            HostKey::Wildcard(h) => ir::HostMatch::Suffix(h[1..].to_string()),
            HostKey::Any => ir::HostMatch::Any,
        }
    }
}

/// A path match before element-wise expansion.
#[derive(Clone, Debug)]
enum PathSpec {
    Exact(String),
    /// Normalized: no trailing `/` except for `/` itself.
    Prefix(String),
    Regex(String),
}

impl PathSpec {
    fn rank(&self) -> (u8, usize) {
        match self {
            PathSpec::Exact(p) => (0, p.len()),
            PathSpec::Regex(p) => (1, p.len()),
            PathSpec::Prefix(p) => (2, p.len()),
        }
    }

    /// The IR matches, each with the rewrite/redirect path to use for it when the rule replaces
    /// the matched prefix with `replacement`.
    fn expand(&self, replacement: Option<&str>) -> Vec<(ir::PathMatch, Option<PathRewrite>)> {
        let repl = replacement.map(|r| r.trim_end_matches('/'));
        match self {
            PathSpec::Exact(p) => vec![(ir::PathMatch::Exact(p.clone()), None)],
            PathSpec::Regex(p) => vec![(ir::PathMatch::Regex(p.clone()), None)],
            PathSpec::Prefix(p) if p == "/" => vec![(
                ir::PathMatch::Prefix("/".into()),
                repl.map(|r| PathRewrite::Prefix(format!("{r}/"))),
            )],
            PathSpec::Prefix(p) => vec![
                (
                    ir::PathMatch::Exact(p.clone()),
                    repl.map(|r| {
                        PathRewrite::Full(if r.is_empty() { "/".into() } else { r.into() })
                    }),
                ),
                (
                    ir::PathMatch::Prefix(format!("{p}/")),
                    repl.map(|r| PathRewrite::Prefix(format!("{r}/"))),
                ),
            ],
        }
    }
}

#[derive(Clone, Debug)]
enum PathRewrite {
    Full(String),
    Prefix(String),
}

/// One match of a rule, in IR terms but before path expansion.
struct MatchSpec {
    path: PathSpec,
    method: Option<String>,
    headers: Vec<ir::KeyValueMatch>,
    query: Vec<ir::KeyValueMatch>,
}

impl MatchSpec {
    /// What a rule without matches matches: every path.
    fn everything() -> MatchSpec {
        MatchSpec {
            path: PathSpec::Prefix("/".into()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }
}

fn value_matches(ms: &[ValueMatch]) -> Vec<ir::KeyValueMatch> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for m in ms {
        // The first entry of a name counts (the spec's rule for duplicates).
        if seen.contains(&m.name.to_ascii_lowercase()) {
            continue;
        }
        seen.push(m.name.to_ascii_lowercase());
        out.push(ir::KeyValueMatch {
            name: m.name.clone(),
            matcher: match m.type_.as_deref() {
                Some("RegularExpression") => ir::StringMatch::Regex(m.value.clone()),
                _ => ir::StringMatch::Exact(m.value.clone()),
            },
            invert: false,
        });
    }
    out
}

fn http_matches(rule: &HttpRouteRule) -> Vec<MatchSpec> {
    if rule.matches.is_empty() {
        return vec![MatchSpec::everything()];
    }
    rule.matches
        .iter()
        .map(|m| {
            let value = m
                .path
                .as_ref()
                .and_then(|p| p.value.clone())
                .unwrap_or_else(|| "/".into());
            let path = match m.path.as_ref().and_then(|p| p.type_.as_deref()) {
                Some("Exact") => PathSpec::Exact(value),
                Some("RegularExpression") => PathSpec::Regex(value),
                _ => {
                    let t = value.trim_end_matches('/');
                    PathSpec::Prefix(if t.is_empty() { "/".into() } else { t.into() })
                }
            };
            MatchSpec {
                path,
                method: m.method.clone(),
                headers: value_matches(&m.headers),
                query: value_matches(&m.query_params),
            }
        })
        .collect()
}

fn grpc_matches(rule: &GrpcRouteRule) -> Vec<MatchSpec> {
    if rule.matches.is_empty() {
        return vec![MatchSpec::everything()];
    }
    rule.matches
        .iter()
        .map(|m| {
            let path = match &m.method {
                None => PathSpec::Prefix("/".into()),
                Some(mm) => {
                    let regex = mm.type_.as_deref() == Some("RegularExpression");
                    match (mm.service.as_deref(), mm.method.as_deref(), regex) {
                        (Some(s), Some(me), false) => PathSpec::Exact(format!("/{s}/{me}")),
                        (Some(s), None, false) => PathSpec::Prefix(format!("/{s}")),
                        (None, Some(me), false) => {
                            PathSpec::Regex(format!("/[^/]+/{}", regex::escape(me)))
                        }
                        (s, me, _) => PathSpec::Regex(format!(
                            "/{}/{}",
                            s.unwrap_or("[^/]+"),
                            me.unwrap_or("[^/]+")
                        )),
                    }
                }
            };
            MatchSpec {
                path,
                method: None,
                headers: value_matches(&m.headers),
                query: Vec::new(),
            }
        })
        .collect()
}

fn header_mods(m: &HeaderModifier) -> ir::HeaderMods {
    let pair = |h: &gatewayapi::HttpHeader| ir::HeaderPair {
        name: h.name.to_ascii_lowercase(),
        value: h.value.clone(),
    };
    ir::HeaderMods {
        add: m.add.iter().map(pair).collect(),
        set: m.set.iter().map(pair).collect(),
        remove: m.remove.iter().map(|r| r.to_ascii_lowercase()).collect(),
    }
}

fn extend_mods(into: &mut ir::HeaderMods, from: ir::HeaderMods) {
    into.add.extend(from.add);
    into.set.extend(from.set);
    into.remove.extend(from.remove);
}

struct Cx<'a> {
    inputs: &'a Inputs<'a>,
    analysis: &'a Analysis<'a>,
    out: GatewayApiTranslation,
    clusters: BTreeMap<String, (ir::Cluster, ir::ClusterEndpoints)>,
}

/// What a rule does, filters included, independent of its matches.
struct RuleAction {
    /// `None`: forward to `clusters` (500 when empty).
    redirect: Option<gatewayapi::RequestRedirect>,
    rewrite: Option<gatewayapi::UrlRewrite>,
    clusters: Vec<ir::WeightedCluster>,
    /// The weight of backendRefs that cannot be resolved: their share answers 500.
    unresolved_weight: u32,
    request_headers: ir::HeaderMods,
    response_headers: ir::HeaderMods,
    mirrors: Vec<ir::Mirror>,
    cors: Option<Box<ir::Cors>>,
    timeout_ms: Option<u64>,
    /// A filter Bowline cannot apply (ExtensionRef, ExternalAuth): the rule answers 500.
    unsupported: bool,
}

impl Cx<'_> {
    fn diag(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let d = Diagnostic::new(self.inputs.world, kind, namespace, name, path, message);
        if !self.out.translation.diagnostics.contains(&d) {
            self.out.translation.diagnostics.push(d);
        }
    }

    fn on_route(
        &mut self,
        route: RouteRef<'_>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let kind = match route {
            RouteRef::Http(_) => Kind::HttpRoute,
            RouteRef::Grpc(_) => Kind::GrpcRoute,
        };
        self.diag(kind, route.namespace(), route.name(), path, message);
    }

    fn finish(
        mut self,
        listeners: Vec<ir::Listener>,
        tables: Vec<ir::RouteTable>,
    ) -> GatewayApiTranslation {
        let snapshot = &mut self.out.translation.snapshot;
        snapshot.listeners = listeners;
        snapshot.route_tables = tables;
        for (_, (c, e)) in std::mem::take(&mut self.clusters) {
            snapshot.clusters.push(c);
            snapshot.endpoints.push(e);
        }
        snapshot.normalize();
        self.out
    }

    /// TLS of a port: the first usable certificate of every HTTPS listener, served for the
    /// listener's hostname (the default certificate for a listener without one).
    fn listener_tls(
        &mut self,
        gw: &Gateway,
        ls: &[&status::ListenerAnalysis<'_>],
        tls_dir: &Path,
    ) -> Option<ir::ListenerTls> {
        let mut certificates: Vec<ir::TlsCertificate> = Vec::new();
        for l in ls.iter().filter(|l| l.listener.protocol == "HTTPS") {
            let i = gw
                .spec
                .listeners
                .iter()
                .position(|x| x.name == l.listener.name)
                .unwrap_or(0);
            let mut chosen = None;
            for secret in &l.certificates {
                let ns = secret.metadata.namespace.as_deref().unwrap_or("default");
                let sname = secret.metadata.name.as_deref().unwrap_or_default();
                match tls_material(secret) {
                    Ok((chain, key)) => {
                        chosen = Some((ns.to_string(), sname.to_string(), chain, key));
                        break;
                    }
                    Err(why) => self.diag(
                        Kind::Gateway,
                        gw.namespace(),
                        gw.name(),
                        format!("spec.listeners[{i}].tls.certificateRefs"),
                        format!("{why}; the certificate is not used"),
                    ),
                }
            }
            let Some((ns, sname, chain, key)) = chosen else {
                self.diag(
                    Kind::Gateway,
                    gw.namespace(),
                    gw.name(),
                    format!("spec.listeners[{i}]"),
                    "no usable certificate: the listener is not served",
                );
                continue;
            };
            certificates.push(certificate_files(
                &mut self.out.files,
                tls_dir,
                &format!("{ns}.{sname}"),
                (chain, key),
                l.listener.hostname.iter().cloned().collect(),
            ));
        }
        if certificates.is_empty() {
            return None;
        }
        Some(ir::ListenerTls {
            mode: ir::TlsMode::Strict,
            certificates,
            client_validation: None,
            // Each HTTPS listener has its own entry: a request for another listener's
            // hostname on this connection gets 421.
            detect_misdirected: true,
        })
    }

    /// The IR routes of an attached route, with their precedence keys.
    fn entries(&mut self, a: &Attached<'_>, port: u16) -> Vec<Entry> {
        let route = a.route;
        type RuleParts<'r> = (
            Vec<MatchSpec>,
            &'r [HttpRouteFilter],
            &'r [HttpBackendRef],
            Option<&'r gatewayapi::HttpRouteTimeouts>,
        );
        let (prefix, parts): (&str, Vec<RuleParts<'_>>) = match route {
            RouteRef::Http(r) => (
                "httproute",
                r.spec
                    .rules
                    .iter()
                    .map(|rule| {
                        let parts: RuleParts<'_> = (
                            http_matches(rule),
                            &rule.filters,
                            &rule.backend_refs,
                            rule.timeouts.as_ref(),
                        );
                        parts
                    })
                    .collect(),
            ),
            RouteRef::Grpc(r) => (
                "grpcroute",
                r.spec
                    .rules
                    .iter()
                    .map(|rule| {
                        let parts: RuleParts<'_> =
                            (grpc_matches(rule), &rule.filters, &rule.backend_refs, None);
                        parts
                    })
                    .collect(),
            ),
        };
        let rules: Vec<(Vec<MatchSpec>, RuleAction)> = parts
            .into_iter()
            .enumerate()
            .map(|(i, (matches, filters, backends, timeouts))| {
                let at = format!("spec.rules[{i}]");
                let action = self.rule_action(route, &at, filters, backends, timeouts);
                (matches, action)
            })
            .collect();
        let ts = route.creation_timestamp();
        let mut out = Vec::new();
        for (i, (matches, action)) in rules.into_iter().enumerate() {
            for (j, m) in matches.into_iter().enumerate() {
                let (rank, len) = m.path.rank();
                let key = Precedence {
                    path_rank: rank,
                    path_len: Reverse(len),
                    no_method: m.method.is_none(),
                    headers: Reverse(m.headers.len()),
                    query: Reverse(m.query.len()),
                    created: (ts.is_none(), ts.unwrap_or_default().to_string()),
                    namespace: route.namespace().to_string(),
                    name: route.name().to_string(),
                    rule: i,
                    index: j,
                };
                let replacement = action
                    .redirect
                    .as_ref()
                    .and_then(|r| r.path.as_ref())
                    .or(action.rewrite.as_ref().and_then(|r| r.path.as_ref()))
                    .and_then(|p| match p.type_.as_str() {
                        "ReplacePrefixMatch" => p.replace_prefix_match.as_deref(),
                        _ => None,
                    });
                for (path, rewrite_path) in m.path.expand(replacement) {
                    let matcher = ir::RouteMatch {
                        path: Some(path),
                        method: m.method.clone(),
                        headers: m.headers.clone(),
                        query_parameters: m.query.clone(),
                        ..ir::RouteMatch::default()
                    };
                    let ir_action = self.ir_action(&action, rewrite_path, port);
                    let name = format!(
                        "{prefix}/{}/{}/rules[{i}]/matches[{j}]",
                        route.namespace(),
                        route.name()
                    );
                    let mut r = ir::Route::new(name, matcher, ir_action);
                    if !action.unsupported {
                        r.request_headers = action.request_headers.clone();
                        r.response_headers = action.response_headers.clone();
                        r.mirrors = action.mirrors.clone();
                        r.cors = action.cors.clone();
                    }
                    out.push(Entry {
                        key: key.clone(),
                        route: r,
                    });
                }
            }
        }
        // Expanded routes of one match share a name; routes of one table must be unique by
        // (name, match), which holds.
        out
    }

    fn ir_action(
        &self,
        a: &RuleAction,
        rewrite_path: Option<PathRewrite>,
        port: u16,
    ) -> ir::RouteAction {
        let internal_error = ir::RouteAction::DirectResponse(ir::DirectResponse {
            status: 500,
            body: String::new(),
        });
        if a.unsupported {
            return internal_error;
        }
        if let Some(r) = &a.redirect {
            let path = match (&r.path, rewrite_path) {
                (_, Some(PathRewrite::Full(p))) => Some(ir::RedirectPath::FullPath(p)),
                (_, Some(PathRewrite::Prefix(p))) => Some(ir::RedirectPath::Prefix(p)),
                (Some(pm), None) => pm.replace_full_path.clone().map(ir::RedirectPath::FullPath),
                (None, None) => None,
            };
            // The spec: without a port, the well-known port of the redirect's scheme, else the
            // listener's port.
            let port = match (r.port, r.scheme.as_deref()) {
                (Some(p), _) => u16::try_from(p).ok(),
                (None, Some("https")) => Some(443),
                (None, Some(_)) => Some(80),
                (None, None) => Some(port),
            };
            return ir::RouteAction::Redirect(ir::Redirect {
                scheme: r.scheme.clone(),
                host: r.hostname.clone(),
                port,
                path,
                status: r
                    .status_code
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(302),
                drop_query: false,
            });
        }
        if a.clusters.is_empty() {
            return internal_error;
        }
        let mut rewrite = ir::Rewrite::default();
        if let Some(u) = &a.rewrite {
            rewrite.host = u.hostname.clone();
            match (&u.path, rewrite_path) {
                (_, Some(PathRewrite::Full(p))) => rewrite.full_path = Some(p),
                (_, Some(PathRewrite::Prefix(p))) => rewrite.prefix = Some(p),
                (
                    Some(PathModifier {
                        replace_full_path: Some(p),
                        ..
                    }),
                    None,
                ) => rewrite.full_path = Some(p.clone()),
                _ => {}
            }
        }
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: a.clusters.clone(),
            rewrite,
            timeout_ms: a.timeout_ms,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: a.unresolved_weight,
        })
    }

    fn rule_action(
        &mut self,
        route: RouteRef<'_>,
        at: &str,
        filters: &[HttpRouteFilter],
        backends: &[HttpBackendRef],
        timeouts: Option<&gatewayapi::HttpRouteTimeouts>,
    ) -> RuleAction {
        let grpc = matches!(route, RouteRef::Grpc(_));
        let mut a = RuleAction {
            redirect: None,
            rewrite: None,
            clusters: Vec::new(),
            unresolved_weight: 0,
            request_headers: ir::HeaderMods::default(),
            response_headers: ir::HeaderMods::default(),
            mirrors: Vec::new(),
            cors: None,
            timeout_ms: None,
            unsupported: false,
        };
        self.apply_filters(route, &format!("{at}.filters"), filters, &mut a, grpc);
        if backends.len() == 1 {
            self.apply_filters(
                route,
                &format!("{at}.backendRefs[0].filters"),
                &backends[0].filters,
                &mut a,
                grpc,
            );
        }
        for (j, b) in backends.iter().enumerate() {
            let bat = format!("{at}.backendRefs[{j}]");
            // Filters of one backend among several: its header changes apply when it is
            // chosen; the other filter types cannot be split by backend.
            let mut own = ir::BackendHeaders::default();
            if backends.len() > 1 {
                for (k, f) in b.filters.iter().enumerate() {
                    if let Some(m) = &f.request_header_modifier {
                        extend_mods(&mut own.request, header_mods(m));
                    } else if let Some(m) = &f.response_header_modifier {
                        extend_mods(&mut own.response, header_mods(m));
                    } else {
                        self.on_route(
                            route,
                            format!("{bat}.filters[{k}]"),
                            format!(
                                "filter type {} on one backend among several is not supported (only RequestHeaderModifier and ResponseHeaderModifier are); it is not applied",
                                f.type_
                            ),
                        );
                    }
                }
            }
            let weight = u32::try_from(b.weight()).unwrap_or(0);
            let Some(cluster) = self.backend(route, &bat, &b.object_ref(), grpc) else {
                // The spec: requests that would have gone to an invalid backend get 500.
                a.unresolved_weight = a.unresolved_weight.saturating_add(weight);
                continue;
            };
            if weight == 0 {
                continue;
            }
            a.clusters.push(ir::WeightedCluster {
                headers: (!own.is_empty()).then(|| Box::new(own)),
                ..ir::WeightedCluster::new(cluster, weight)
            });
        }
        if a.redirect.is_none() && a.clusters.is_empty() && !a.unsupported {
            self.on_route(
                route,
                format!("{at}.backendRefs"),
                "no backend can receive requests (none, none resolved, or all weights 0): the rule answers 500",
            );
        }
        if let Some(t) = timeouts {
            let parse = |v: &Option<String>| {
                v.as_deref()
                    .and_then(|v| gatewayapi::parse_duration_ms(v).ok())
                    .filter(|ms| *ms > 0)
            };
            a.timeout_ms = match (parse(&t.request), parse(&t.backend_request)) {
                (Some(r), Some(b)) => Some(r.min(b)),
                (r, b) => r.or(b),
            };
        }
        a
    }

    fn apply_filters(
        &mut self,
        route: RouteRef<'_>,
        at: &str,
        filters: &[HttpRouteFilter],
        a: &mut RuleAction,
        grpc: bool,
    ) {
        for (k, f) in filters.iter().enumerate() {
            let fat = format!("{at}[{k}]");
            if let Some(m) = &f.request_header_modifier {
                extend_mods(&mut a.request_headers, header_mods(m));
            }
            if let Some(m) = &f.response_header_modifier {
                extend_mods(&mut a.response_headers, header_mods(m));
            }
            if let Some(r) = &f.request_redirect {
                a.redirect = Some(r.clone());
            }
            if let Some(u) = &f.url_rewrite {
                a.rewrite = Some(u.clone());
            }
            if let Some(m) = &f.request_mirror {
                let percent = match (&m.fraction, m.percent) {
                    (Some(fr), _) => {
                        let d = fr.denominator.unwrap_or(100).max(1);
                        u32::try_from(fr.numerator * 100 / d).unwrap_or(100)
                    }
                    (None, Some(p)) => u32::try_from(p).unwrap_or(100),
                    (None, None) => 100,
                };
                if let Some(cluster) = self.backend(
                    route,
                    &format!("{fat}.requestMirror.backendRef"),
                    &m.backend_ref,
                    grpc,
                ) {
                    a.mirrors.push(ir::Mirror { cluster, percent });
                }
            }
            if let Some(c) = &f.cors {
                a.cors = Some(Box::new(ir::Cors {
                    allow_origins: c.allow_origins.clone(),
                    allow_methods: c.allow_methods.clone(),
                    allow_headers: c.allow_headers.clone(),
                    expose_headers: c.expose_headers.clone(),
                    max_age_seconds: c.max_age.and_then(|m| u64::try_from(m).ok()),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                }));
            }
            if f.extension_ref.is_some() || f.external_auth.is_some() {
                a.unsupported = true;
                self.on_route(
                    route,
                    fat,
                    format!(
                        "filter type {} is not supported: the rule answers 500",
                        f.type_
                    ),
                );
            }
        }
    }

    /// The cluster of a backend reference, created on first use; `None` when it does not
    /// resolve (reported).
    fn backend(
        &mut self,
        route: RouteRef<'_>,
        at: &str,
        r: &gatewayapi::BackendObjectReference,
        grpc: bool,
    ) -> Option<String> {
        let resolved =
            match self
                .analysis
                .objects
                .resolve_backend(route.kind(), route.namespace(), r)
            {
                Ok(b) => b,
                Err(e) => {
                    self.on_route(route, at, format!("{} ({})", e.message, e.reason));
                    return None;
                }
            };
        let name = cluster_name(&resolved.namespace, &resolved.name, resolved.port, grpc);
        if !self.clusters.contains_key(&name) {
            let protocol = if grpc {
                ir::Protocol::Grpc
            } else if resolved.app_protocol.as_deref() == Some("kubernetes.io/h2c") {
                ir::Protocol::Http2
            } else {
                ir::Protocol::Http
            };
            let found = discovery::resolve_service(
                self.inputs.world,
                self.inputs.dns,
                &resolved.namespace,
                &resolved.name,
                resolved.port,
            );
            for note in &found.notes {
                let note = note.replace("the node has no endpoints", "the backend answers 503");
                self.on_route(route, at, note);
            }
            self.clusters.insert(
                name.clone(),
                (
                    ir::Cluster::new(name.clone(), protocol, CONNECT_TIMEOUT_MS),
                    ir::ClusterEndpoints {
                        cluster: name.clone(),
                        endpoints: found.endpoints,
                    },
                ),
            );
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests;
