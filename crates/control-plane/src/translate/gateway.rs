//! VirtualGateway → IR, with App Mesh semantics.
//!
//! * Each listener (`portMapping`) becomes an [`ir::Listener`] with its own route table.
//! * The GatewayRoutes a gateway serves are those whose `virtualGatewayRef` names it or, when the
//!   ref is unset (as in App Mesh manifests), those in a namespace selected by the gateway's
//!   `namespaceSelector` (unset: only the gateway's own namespace) that match its
//!   `gatewayRouteSelector` (unset: all).
//! * A GatewayRoute with `match.port` goes to the listener with that port; otherwise to every
//!   listener of its protocol (httpRoute → http, http2Route → http2, grpcRoute → grpc).
//! * Hostname matches group routes into virtual hosts. The engine picks one virtual host per
//!   request (exact, then longest suffix, then any), so every virtual host also carries, in the
//!   overall route order, the routes of less specific host matches that cover its hosts (the
//!   any-host routes, and suffix routes whose suffix its host ends with).
//! * A target VirtualService provided by a VirtualRouter becomes a `Delegate` to the router's
//!   route table for the target port (built once, one any-host virtual host); one provided by a
//!   VirtualNode becomes a `Forward` to that node's cluster.
//! * Rewrites follow App Mesh: the Host becomes the target virtual service's name unless
//!   `rewrite.hostname.defaultTargetHostname: DISABLED`; for a prefix match the matched prefix is
//!   replaced with `rewrite.prefix.value`, or by default with `/` unless
//!   `rewrite.prefix.defaultPrefix: DISABLED` (App Mesh: `/chapter/page` → `/page` and
//!   `/chapter1` → `/1` for the prefix `/chapter`, which takes two IR routes: `/chapter/` and
//!   `/chapter`, both rewritten to `/`); `rewrite.path.exact` replaces the whole path.
//! * Bowline extensions (not in App Mesh; see docs/resources.md): cookie and regex query matches,
//!   wildcard hostnames (`*.example.com` becomes the suffix `.example.com`), redirects and direct
//!   responses instead of a target, regex path rewrites (a gateway route's `rewrite.regex`
//!   replaces its default prefix rewrite), router route rewrites, request and response header
//!   changes, mirrors (to a virtual node, or a virtual service provided by one) and CORS. The
//!   filters of a resource route go on every IR route it becomes.
//! * Listener `connectionPool`: the circuit breakers of the clusters the listener's routes
//!   reach; see [`pool`].
//! * TLS (listener termination, the client policy's origination): see [`tls`].
//! * tcp listeners and GatewayRoute `tcpRoute` (Bowline extensions): see [`tcp`].

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bowline_model::appmesh::{
    DefaultRewrite, GatewayRouteTarget, GrpcRouteMetadata, HeaderMatchMethod,
    HttpGatewayRouteAction, HttpGatewayRouteMatch, HttpHeaderMatch, HttpPathMatch, PortProtocol,
    Route as RouterRoute, RouteAction, VirtualGatewaySpec,
};
use bowline_model::ir;
use bowline_model::manifest::{Kind, Meta, Resource};

use super::{
    CONNECT_TIMEOUT_MS, Diagnostic, Inputs, OrderKey, Translation, cluster_name,
    gateway_table_name, listener_name, router_table_name,
};
use crate::discovery;

mod routing;

use self::routing::Filters;
mod pool;
mod sidecar;
mod tcp;
mod tls;

pub use self::sidecar::{SidecarTarget, sidecar};

/// Translates one VirtualGateway. An unknown gateway yields an empty snapshot and a diagnostic.
pub fn gateway(inputs: &Inputs<'_>, namespace: &str, name: &str) -> Translation {
    let mut cx = Cx::new(inputs);
    let mut snapshot = ir::Snapshot::default();
    match inputs.world.virtual_gateway(namespace, name) {
        None => cx.diag(
            Kind::VirtualGateway,
            namespace,
            name,
            "",
            "not found; the gateway gets an empty configuration until it exists",
        ),
        Some(gw) => cx.gateway(namespace, name, &gw.spec, &mut snapshot),
    }
    snapshot
        .route_tables
        .extend(cx.router_tables.values().cloned());
    let client_policy = inputs
        .world
        .virtual_gateway(namespace, name)
        .and_then(|gw| gw.spec.backend_defaults.as_ref())
        .and_then(|d| d.client_policy.as_ref())
        .and_then(|p| p.tls.as_ref());
    let gw_at = At {
        kind: Kind::VirtualGateway,
        namespace,
        name,
        path: "spec",
    };
    let policy = client_policy.map(|tls| ClientPolicy {
        at: gw_at,
        path: "backendDefaults.clientPolicy.tls".into(),
        tls,
    });
    cx.build_clusters(&mut snapshot, |_| policy.clone());
    if let Some(gw) = inputs.world.virtual_gateway(namespace, name) {
        pool::apply(&mut snapshot, &gw.spec);
    }
    snapshot.normalize();
    Translation {
        snapshot,
        diagnostics: cx.diagnostics,
    }
}

struct ClusterSpec {
    namespace: String,
    node: String,
    port: u16,
    protocol: ir::Protocol,
}

/// A client policy's TLS and where it is written (for diagnostics): the VirtualGateway's or
/// VirtualNode's `spec`, and the path under it.
#[derive(Clone)]
struct ClientPolicy<'p> {
    at: At<'p>,
    path: String,
    tls: &'p bowline_model::appmesh::ClientPolicyTls,
}

/// Which listeners a route family goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl Family {
    fn protocol(self) -> ir::Protocol {
        match self {
            Family::Http => ir::Protocol::Http,
            Family::Http2 => ir::Protocol::Http2,
            Family::Grpc => ir::Protocol::Grpc,
            Family::Tcp => ir::Protocol::Tcp,
        }
    }

    fn field(self) -> &'static str {
        match self {
            Family::Http => "httpRoute",
            Family::Http2 => "http2Route",
            Family::Grpc => "grpcRoute",
            Family::Tcp => "tcpRoute",
        }
    }
}

/// How a virtual host matches hosts; ordered exact, suffix, any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostKey {
    Exact(String),
    Suffix(String),
    Any,
}

impl HostKey {
    /// Whether every host matched by `other` is also matched by `self`.
    fn covers(&self, other: &HostKey) -> bool {
        match (self, other) {
            (HostKey::Any, _) => true,
            (HostKey::Exact(a), HostKey::Exact(b)) => a == b,
            (HostKey::Suffix(s), HostKey::Exact(h) | HostKey::Suffix(h)) => h.ends_with(s.as_str()),
            _ => false,
        }
    }

    fn to_ir(&self) -> ir::HostMatch {
        match self {
            HostKey::Exact(h) => ir::HostMatch::Exact(h.clone()),
            HostKey::Suffix(s) => ir::HostMatch::Suffix(s.clone()),
            HostKey::Any => ir::HostMatch::Any,
        }
    }

    fn vhost_name(&self) -> String {
        match self {
            HostKey::Exact(h) => h.clone(),
            HostKey::Suffix(s) => format!("*{s}"),
            HostKey::Any => "*".into(),
        }
    }
}

/// One resource route, possibly several IR routes that must stay together and in order.
struct Candidate {
    key: OrderKey,
    host: HostKey,
    routes: Vec<ir::Route>,
}

struct Cx<'a> {
    inputs: Inputs<'a>,
    diagnostics: Vec<Diagnostic>,
    seen: HashSet<Diagnostic>,
    router_tables: BTreeMap<String, ir::RouteTable>,
    clusters: BTreeMap<String, ClusterSpec>,
}

/// The object a diagnostic is about, and the field path of the part being translated.
#[derive(Clone, Copy)]
struct At<'s> {
    kind: Kind,
    namespace: &'s str,
    name: &'s str,
    path: &'s str,
}

impl<'a> Cx<'a> {
    fn new(inputs: &Inputs<'a>) -> Self {
        Cx {
            inputs: *inputs,
            diagnostics: Vec::new(),
            seen: HashSet::new(),
            router_tables: BTreeMap::new(),
            clusters: BTreeMap::new(),
        }
    }

    fn diag(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let d = Diagnostic::new(self.inputs.world, kind, namespace, name, path, message);
        if self.seen.insert(d.clone()) {
            self.diagnostics.push(d);
        }
    }

    fn diag_at(&mut self, at: At<'_>, sub: &str, message: impl Into<String>) {
        let path = join(at.path, sub);
        self.diag(at.kind, at.namespace, at.name, path, message);
    }

    /// Turns the clusters the routes reached into IR clusters and endpoints, each with the TLS
    /// of the client policy `policy_of` gives for it (none: plaintext).
    fn build_clusters<'p>(
        &mut self,
        snapshot: &mut ir::Snapshot,
        policy_of: impl Fn(&str) -> Option<ClientPolicy<'p>>,
    ) {
        let inputs = self.inputs;
        for (cname, c) in std::mem::take(&mut self.clusters) {
            let tls = match policy_of(&cname) {
                None => Ok(None),
                Some(p) => self.cluster_tls(p.at, &p.path, p.tls, &cname, &c),
            };
            let mut cluster = ir::Cluster {
                tls: tls.clone().ok().flatten(),
                ..ir::Cluster::new(cname.clone(), c.protocol, CONNECT_TIMEOUT_MS)
            };
            let node = inputs.world.virtual_node(&c.namespace, &c.node);
            if let Some(node) = node {
                super::resilience::apply_node_listener(&mut cluster, &node.spec, c.port);
            }
            snapshot.clusters.push(cluster);
            let endpoints = match node.filter(|_| tls.is_ok()) {
                Some(node) => {
                    let resolved = discovery::resolve(inputs.world, inputs.dns, &node.spec, c.port);
                    for note in resolved.notes {
                        self.diag(
                            Kind::VirtualNode,
                            &c.namespace,
                            &c.node,
                            "spec.serviceDiscovery",
                            note,
                        );
                    }
                    resolved.endpoints
                }
                None => Vec::new(),
            };
            snapshot.endpoints.push(ir::ClusterEndpoints {
                cluster: cname,
                endpoints,
            });
        }
    }

    // === gateway ===

    fn gateway(
        &mut self,
        ns: &str,
        name: &str,
        spec: &VirtualGatewaySpec,
        snapshot: &mut ir::Snapshot,
    ) {
        let gw_at = At {
            kind: Kind::VirtualGateway,
            namespace: ns,
            name,
            path: "spec",
        };
        // Listeners by port.
        let mut listeners: BTreeMap<u16, ir::Protocol> = BTreeMap::new();
        let mut listener_tls: BTreeMap<u16, Option<ir::ListenerTls>> = BTreeMap::new();
        for (i, l) in spec.listeners.iter().enumerate() {
            let path = format!("listeners[{i}].portMapping");
            let Some(port) = port_of(l.port_mapping.port) else {
                self.diag_at(
                    gw_at,
                    &format!("{path}.port"),
                    format!("{} is not a port; listener skipped", l.port_mapping.port),
                );
                continue;
            };
            let protocol = match l.port_mapping.protocol {
                PortProtocol::Http => ir::Protocol::Http,
                PortProtocol::Http2 => ir::Protocol::Http2,
                PortProtocol::Grpc => ir::Protocol::Grpc,
                // Bowline extension: served by GatewayRoute tcpRoutes.
                PortProtocol::Tcp => ir::Protocol::Tcp,
            };
            if listeners.contains_key(&port) {
                self.diag_at(
                    gw_at,
                    &format!("{path}.port"),
                    format!("port {port} is used by an earlier listener; listener skipped"),
                );
                continue;
            }
            let listener_path = format!("spec.listeners[{i}]");
            let at = At {
                path: &listener_path,
                ..gw_at
            };
            let Ok(tls) = self.listener_tls(at, l.tls.as_ref()) else {
                continue;
            };
            listener_tls.insert(port, tls);
            listeners.insert(port, protocol);
        }

        let mut per_port: BTreeMap<u16, Vec<Candidate>> =
            listeners.keys().map(|p| (*p, Vec::new())).collect();
        let world = self.inputs.world;
        for (_, gr) in world.gateway_routes() {
            let gr_ns = gr.metadata.namespace();
            if !self.serves(ns, name, spec, gr_ns, &gr.metadata, gr) {
                continue;
            }
            let Some(t) = self.gateway_route(gr_ns, &gr.metadata.name, gr) else {
                continue;
            };
            let at = At {
                kind: Kind::GatewayRoute,
                namespace: gr_ns,
                name: &gr.metadata.name,
                path: "spec",
            };
            let ports: Vec<u16> = match t.port {
                Some(p) => match listeners.get(&p) {
                    Some(proto) if *proto == t.family.protocol() => vec![p],
                    Some(proto) => {
                        self.diag_at(
                            at,
                            &format!("{}.match.port", t.family.field()),
                            format!(
                                "the gateway listener on port {p} speaks {}, not {}; route skipped",
                                super::protocol_str(*proto),
                                super::protocol_str(t.family.protocol())
                            ),
                        );
                        continue;
                    }
                    None => {
                        self.diag_at(
                            at,
                            &format!("{}.match.port", t.family.field()),
                            format!(
                                "VirtualGateway {ns}/{name} has no listener on port {p}; route skipped"
                            ),
                        );
                        continue;
                    }
                },
                None => listeners
                    .iter()
                    .filter(|(_, proto)| **proto == t.family.protocol())
                    .map(|(p, _)| *p)
                    .collect(),
            };
            if ports.is_empty() {
                self.diag_at(
                    at,
                    t.family.field(),
                    format!(
                        "VirtualGateway {ns}/{name} has no {} listener; route skipped",
                        super::protocol_str(t.family.protocol())
                    ),
                );
                continue;
            }
            for p in ports {
                if let Some(list) = per_port.get_mut(&p) {
                    list.push(Candidate {
                        key: t.key.clone(),
                        host: t.host.clone(),
                        routes: t.routes.clone(),
                    });
                }
            }
        }

        let access_log = access_log(spec.logging.as_ref());
        for (port, protocol) in &listeners {
            if *protocol == ir::Protocol::Tcp {
                let cands = per_port.remove(port).unwrap_or_default();
                let tls = listener_tls.remove(port).flatten();
                if let Some(l) = self.tcp_listener(gw_at, *port, cands, access_log.clone(), tls) {
                    snapshot.listeners.push(l);
                }
                continue;
            }
            let table = gateway_table_name(ns, name, *port);
            snapshot.listeners.push(ir::Listener {
                name: listener_name(*protocol, *port),
                address: String::new(),
                port: *port,
                protocol: *protocol,
                route_table: table.clone(),
                access_log: access_log.clone(),
                tls: listener_tls.remove(port).flatten(),
                tcp_proxy: None,
            });
            let cands = per_port.remove(port).unwrap_or_default();
            snapshot.route_tables.push(ir::RouteTable {
                name: table,
                virtual_hosts: virtual_hosts(cands),
            });
        }
    }

    /// Whether the gateway serves this GatewayRoute (see the module documentation).
    fn serves(
        &mut self,
        gw_ns: &str,
        gw_name: &str,
        gw: &VirtualGatewaySpec,
        gr_ns: &str,
        gr_meta: &Meta,
        gr: &Resource<bowline_model::appmesh::GatewayRouteSpec>,
    ) -> bool {
        if let Some(r) = &gr.spec.virtual_gateway_ref {
            return r.name == gw_name && r.namespace.as_deref().unwrap_or(gr_ns) == gw_ns;
        }
        let ns_ok = match &gw.namespace_selector {
            None => gr_ns == gw_ns,
            Some(sel) => {
                let labels = self.inputs.world.namespace_labels(gr_ns);
                match sel.matches(&labels) {
                    Ok(ok) => ok,
                    Err(e) => {
                        self.diag(
                            Kind::VirtualGateway,
                            gw_ns,
                            gw_name,
                            "spec.namespaceSelector",
                            format!("{e}; selects nothing"),
                        );
                        false
                    }
                }
            }
        };
        if !ns_ok {
            return false;
        }
        match &gw.gateway_route_selector {
            None => true,
            Some(sel) => match sel.matches(&gr_meta.labels) {
                Ok(ok) => ok,
                Err(e) => {
                    self.diag(
                        Kind::VirtualGateway,
                        gw_ns,
                        gw_name,
                        "spec.gatewayRouteSelector",
                        format!("{e}; selects nothing"),
                    );
                    false
                }
            },
        }
    }

    // === gateway routes ===

    fn gateway_route(
        &mut self,
        ns: &str,
        name: &str,
        gr: &Resource<bowline_model::appmesh::GatewayRouteSpec>,
    ) -> Option<GatewayRouteIr> {
        let spec = &gr.spec;
        let set = usize::from(spec.http_route.is_some())
            + usize::from(spec.http2_route.is_some())
            + usize::from(spec.grpc_route.is_some())
            + usize::from(spec.tcp_route.is_some());
        let base = At {
            kind: Kind::GatewayRoute,
            namespace: ns,
            name,
            path: "spec",
        };
        if set != 1 {
            self.diag_at(
                base,
                "",
                "exactly one of httpRoute, http2Route, grpcRoute and tcpRoute must be set; route skipped",
            );
            return None;
        }
        let route_name = format!("gatewayroute/{ns}/{name}");
        if let Some(r) = &spec.tcp_route {
            let at = At {
                path: "spec.tcpRoute",
                ..base
            };
            return self.tcp_gateway_route(at, route_name, spec.priority, r);
        }
        if let Some((family, r)) = spec
            .http_route
            .as_ref()
            .map(|r| (Family::Http, r))
            .or_else(|| spec.http2_route.as_ref().map(|r| (Family::Http2, r)))
        {
            let path = format!("spec.{}", family.field());
            let at = At {
                path: &path,
                ..base
            };
            let mut t = self.http_gateway_route(
                at,
                family,
                route_name,
                spec.priority,
                &r.matcher,
                &r.action,
            )?;
            let filters = self.route_filters(
                at,
                r.request_headers.as_ref(),
                r.response_headers.as_ref(),
                r.mirror.as_deref(),
                r.cors.as_ref(),
            );
            for route in &mut t.routes {
                filters.apply(route);
            }
            return Some(t);
        }
        let r = spec.grpc_route.as_ref()?;
        let path = "spec.grpcRoute";
        let at = At { path, ..base };
        let m = &r.matcher;
        let mut matcher = ir::RouteMatch::default();
        if let Some(svc) = &m.service_name {
            matcher.path = Some(ir::PathMatch::Prefix(format!("/{svc}/")));
        }
        matcher.headers = self.metadata(at, "match.metadata", m.metadata.as_deref())?;
        matcher.port = self.match_port(at, m.port)?;
        let host = host_key(m.hostname.as_ref());
        let (action, vs_name) = self.target(at, "action.target", &r.action.target)?;
        let host_rewrite = r
            .action
            .rewrite
            .as_ref()
            .and_then(|rw| rw.hostname.as_ref())
            .and_then(|h| h.default_target_hostname);
        let rewrite = ir::Rewrite {
            host: (host_rewrite != Some(DefaultRewrite::Disabled)).then_some(vs_name),
            ..Default::default()
        };
        let key = OrderKey::new(
            spec.priority,
            &matcher,
            host != HostKey::Any,
            format!("{ns}/{name}"),
        );
        Some(GatewayRouteIr {
            family: Family::Grpc,
            port: matcher.port,
            key,
            host,
            routes: vec![ir::Route::new(
                route_name,
                matcher,
                action.with_rewrite(rewrite),
            )],
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn http_gateway_route(
        &mut self,
        at: At<'_>,
        family: Family,
        route_name: String,
        priority: Option<i64>,
        m: &HttpGatewayRouteMatch,
        action: &HttpGatewayRouteAction,
    ) -> Option<GatewayRouteIr> {
        let mut matcher = ir::RouteMatch {
            path: self.path_match(at, m.prefix.as_deref(), m.path.as_ref())?,
            method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
            ..Default::default()
        };
        matcher.headers = self.headers(at, "match.headers", m.headers.as_deref())?;
        matcher.query_parameters = self.query(at, m.query_parameters.as_deref())?;
        matcher.cookies = self.cookies(at, m.cookies.as_deref())?;
        matcher.port = self.match_port(at, m.port)?;
        let host = host_key(m.hostname.as_ref());
        if let Some(answer) = self.answer(
            at,
            action.redirect.as_ref(),
            action.direct_response.as_ref(),
        ) {
            let key = OrderKey::new(
                priority,
                &matcher,
                host != HostKey::Any,
                format!("{}/{}", at.namespace, at.name),
            );
            return Some(GatewayRouteIr {
                family,
                port: matcher.port,
                key,
                host,
                routes: vec![ir::Route::new(route_name, matcher, answer?)],
            });
        }
        let (target, vs_name) = self.target(at, "action.target", &action.target)?;

        let rw = action.rewrite.clone().unwrap_or_default();
        let host_rewrite = rw.hostname.and_then(|h| h.default_target_hostname);
        let base_rewrite = ir::Rewrite {
            host: (host_rewrite != Some(DefaultRewrite::Disabled)).then_some(vs_name),
            ..Default::default()
        };
        let key = OrderKey::new(
            priority,
            &matcher,
            host != HostKey::Any,
            format!("{}/{}", at.namespace, at.name),
        );
        let mk = |matcher: ir::RouteMatch, rewrite: ir::Rewrite| {
            ir::Route::new(
                route_name.clone(),
                matcher,
                target.clone().with_rewrite(rewrite),
            )
        };
        let mut routes = Vec::new();
        if let Some(p) = &rw.path {
            routes.push(mk(
                matcher.clone(),
                ir::Rewrite {
                    full_path: Some(p.exact.clone()),
                    ..base_rewrite
                },
            ));
        } else if let Some(re) = &rw.regex {
            let regex = self.regex_rewrite(at, "action.rewrite.regex", re)?;
            routes.push(mk(
                matcher.clone(),
                ir::Rewrite {
                    regex: Some(regex),
                    ..base_rewrite
                },
            ));
        } else if let Some(ir::PathMatch::Prefix(prefix)) = matcher.path.clone() {
            let pr = rw.prefix.unwrap_or_default();
            match (pr.value, pr.default_prefix) {
                (Some(value), _) => routes.push(mk(
                    matcher.clone(),
                    ir::Rewrite {
                        prefix: (value != prefix).then_some(value),
                        ..base_rewrite
                    },
                )),
                (None, Some(DefaultRewrite::Disabled)) => {
                    routes.push(mk(matcher.clone(), base_rewrite));
                }
                (None, _) if prefix == "/" => routes.push(mk(matcher.clone(), base_rewrite)),
                (None, _) => {
                    let stripped = ir::Rewrite {
                        prefix: Some("/".into()),
                        ..base_rewrite
                    };
                    if !prefix.ends_with('/') {
                        // `/chapter/page` → `/page` before `/chapter1` → `/1`.
                        let mut with_slash = matcher.clone();
                        with_slash.path = Some(ir::PathMatch::Prefix(format!("{prefix}/")));
                        routes.push(mk(with_slash, stripped.clone()));
                    }
                    routes.push(mk(matcher.clone(), stripped));
                }
            }
        } else {
            routes.push(mk(matcher.clone(), base_rewrite));
        }
        Some(GatewayRouteIr {
            family,
            port: matcher.port,
            key,
            host,
            routes,
        })
    }

    fn match_port(&mut self, at: At<'_>, port: Option<i64>) -> Option<Option<u16>> {
        match port {
            None => Some(None),
            Some(p) => match port_of(p) {
                Some(p) => Some(Some(p)),
                None => {
                    self.diag_at(
                        at,
                        "match.port",
                        format!("{p} is not a port; route skipped"),
                    );
                    None
                }
            },
        }
    }

    /// The action toward a target VirtualService, and the service's name (for Host rewrites).
    fn target(
        &mut self,
        at: At<'_>,
        sub: &str,
        target: &GatewayRouteTarget,
    ) -> Option<(Action, String)> {
        let p = self.provider(at, sub, target)?;
        let vs_at = p.at();
        let referrer = format!("{} {}/{}", at.kind, at.namespace, at.name);
        match &p.kind {
            ProviderKind::Router { namespace, name } => {
                let table = self.router_table(vs_at, &referrer, namespace, name, target.port)?;
                Some((Action::Delegate(table), p.vs_name))
            }
            ProviderKind::Node { namespace, name } => {
                let at = At {
                    path: "spec.provider.virtualNode.virtualNodeRef",
                    ..vs_at
                };
                let cluster = self.node_cluster(at, &referrer, namespace, name, target.port)?;
                Some((Action::Forward(cluster), p.vs_name))
            }
        }
    }

    /// The virtual service a gateway route targets and its provider; diagnostics when there is
    /// none.
    fn provider(&mut self, at: At<'_>, sub: &str, target: &GatewayRouteTarget) -> Option<Provider> {
        let world = self.inputs.world;
        let Some(vs_ref) = &target.virtual_service.virtual_service_ref else {
            self.diag_at(
                at,
                &format!("{sub}.virtualService"),
                "virtualServiceRef is required (virtualServiceARN is AWS only); route skipped",
            );
            return None;
        };
        let vs_ns = vs_ref.namespace.as_deref().unwrap_or(at.namespace);
        let Some(vs) = world.virtual_service(vs_ns, &vs_ref.name) else {
            self.diag_at(
                at,
                &format!("{sub}.virtualService.virtualServiceRef"),
                format!(
                    "VirtualService {vs_ns}/{} not found; route skipped",
                    vs_ref.name
                ),
            );
            return None;
        };
        let vs_at = At {
            kind: Kind::VirtualService,
            namespace: vs_ns,
            name: &vs.metadata.name,
            path: "spec.provider",
        };
        let referrer = format!("{} {}/{}", at.kind, at.namespace, at.name);
        let provider = vs.spec.provider.clone().unwrap_or_default();
        let kind = if let Some(r) = provider
            .virtual_router
            .as_ref()
            .and_then(|r| r.virtual_router_ref.as_ref())
        {
            Some(ProviderKind::Router {
                namespace: r.namespace.clone().unwrap_or_else(|| vs_ns.to_string()),
                name: r.name.clone(),
            })
        } else {
            provider
                .virtual_node
                .as_ref()
                .and_then(|n| n.virtual_node_ref.as_ref())
                .map(|n| ProviderKind::Node {
                    namespace: n.namespace.clone().unwrap_or_else(|| vs_ns.to_string()),
                    name: n.name.clone(),
                })
        };
        if let Some(kind) = kind {
            return Some(Provider {
                vs_name: virtual_service_name(vs),
                vs_namespace: vs_ns.to_string(),
                vs: vs.metadata.name.clone(),
                kind,
            });
        }
        self.diag_at(
            vs_at,
            "",
            format!("no virtualRouterRef or virtualNodeRef provider; {referrer} skipped"),
        );
        None
    }

    // === routers ===

    /// The route table of a router for the target port, built once per snapshot.
    fn router_table(
        &mut self,
        vs_at: At<'_>,
        referrer: &str,
        ns: &str,
        name: &str,
        port: Option<i64>,
    ) -> Option<String> {
        let (router, port, proto) =
            self.router_listener(vs_at, referrer, ns, name, port, Traffic::Http)?;
        let router_at = router_at(ns, name);
        let table = router_table_name(ns, name, port);
        if self.router_tables.contains_key(&table) {
            return Some(table);
        }
        let mut cands = Vec::new();
        for (i, r) in router.spec.routes.iter().flatten().enumerate() {
            let path = format!("spec.routes[{i}]");
            let at = At {
                path: &path,
                ..router_at
            };
            if let Some(c) = self.router_route(at, ns, name, r, port, proto) {
                cands.push(c);
            }
        }
        cands.sort_by(|a, b| a.key.cmp(&b.key));
        let routes: Vec<ir::Route> = cands.into_iter().flat_map(|c| c.routes).collect();
        self.router_tables.insert(
            table.clone(),
            ir::RouteTable {
                name: table.clone(),
                virtual_hosts: vec![ir::VirtualHost {
                    name: HostKey::Any.vhost_name(),
                    hosts: vec![ir::HostMatch::Any],
                    routes,
                }],
            },
        );
        Some(table)
    }

    /// A router and its listener on the target port (or its only one), which must suit
    /// `traffic`: a tcp listener for tcp, another for HTTP. Diagnostics when there is none.
    fn router_listener(
        &mut self,
        vs_at: At<'_>,
        referrer: &str,
        ns: &str,
        name: &str,
        port: Option<i64>,
        traffic: Traffic,
    ) -> Option<(
        &'a Resource<bowline_model::appmesh::VirtualRouterSpec>,
        u16,
        ir::Protocol,
    )> {
        let world = self.inputs.world;
        let Some(router) = world.virtual_router(ns, name) else {
            let ref_at = At {
                path: "spec.provider.virtualRouter.virtualRouterRef",
                ..vs_at
            };
            self.diag_at(
                ref_at,
                "",
                format!("VirtualRouter {ns}/{name} not found; {referrer} skipped"),
            );
            return None;
        };
        let listeners = listener_ports(
            router
                .spec
                .listeners
                .iter()
                .flatten()
                .map(|l| &l.port_mapping),
        );
        let router_at = router_at(ns, name);
        let (port, proto) = self.pick_listener(router_at, referrer, &listeners, port)?;
        let tcp = proto == ir::Protocol::Tcp;
        let problem = match traffic {
            Traffic::Http if tcp => {
                "is a tcp listener, which only a GatewayRoute tcpRoute can send to".to_string()
            }
            Traffic::Tcp if !tcp => format!(
                "speaks {}, and a tcpRoute needs a tcp listener",
                super::protocol_str(proto)
            ),
            _ => return Some((router, port, proto)),
        };
        self.diag_at(
            router_at,
            "listeners",
            format!("the listener on port {port} {problem}; {referrer} skipped"),
        );
        None
    }

    /// Picks the listener a target port names, or the only listener when none is named.
    fn pick_listener(
        &mut self,
        at: At<'_>,
        referrer: &str,
        listeners: &[(u16, ir::Protocol)],
        port: Option<i64>,
    ) -> Option<(u16, ir::Protocol)> {
        match port {
            Some(p) => {
                let found = listeners
                    .iter()
                    .find(|(lp, _)| i64::from(*lp) == p)
                    .copied();
                if found.is_none() {
                    self.diag_at(
                        at,
                        "listeners",
                        format!(
                            "no listener on port {p} (asked by {referrer}); {referrer} skipped"
                        ),
                    );
                }
                found
            }
            None => match listeners {
                [only] => Some(*only),
                [] => {
                    self.diag_at(at, "listeners", format!("no listener; {referrer} skipped"));
                    None
                }
                _ => {
                    self.diag_at(
                        at,
                        "listeners",
                        format!(
                            "{} listeners and {referrer} names no port; {referrer} skipped",
                            listeners.len()
                        ),
                    );
                    None
                }
            },
        }
    }

    fn router_route(
        &mut self,
        at: At<'_>,
        ns: &str,
        router: &str,
        r: &RouterRoute,
        port: u16,
        proto: ir::Protocol,
    ) -> Option<Candidate> {
        let route_name = format!("route/{ns}/{router}/{}", r.name);
        let order_name = format!("{ns}/{router}/{}", r.name);
        let (matcher, action, filters) = match proto {
            ir::Protocol::Http | ir::Protocol::Http2 => {
                let (field, hr) = if proto == ir::Protocol::Http {
                    ("httpRoute", r.http_route.as_ref()?)
                } else {
                    ("http2Route", r.http2_route.as_ref()?)
                };
                let path = join(at.path, field);
                let at = At { path: &path, ..at };
                let m = &hr.matcher;
                if m.port.is_some_and(|p| p != i64::from(port)) {
                    return None;
                }
                let mut matcher = ir::RouteMatch {
                    path: self.path_match(at, m.prefix.as_deref(), m.path.as_ref())?,
                    method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
                    scheme: m.scheme.as_ref().map(|s| s.to_ascii_lowercase()),
                    port: m.port.and_then(port_of),
                    ..Default::default()
                };
                matcher.headers = self.headers(at, "match.headers", m.headers.as_deref())?;
                matcher.query_parameters = self.query(at, m.query_parameters.as_deref())?;
                matcher.cookies = self.cookies(at, m.cookies.as_deref())?;
                let timeout = hr.timeout.as_ref().and_then(|t| t.per_request);
                let a = &hr.action;
                let action = match self.answer(at, a.redirect.as_ref(), a.direct_response.as_ref())
                {
                    Some(answer) => answer?,
                    None => ir::RouteAction::Forward(ir::ForwardAction {
                        clusters: self.weighted(at, a)?,
                        rewrite: self.router_rewrite(at, a)?,
                        timeout_ms: super::resilience::per_request_ms(timeout.as_ref()),
                        retry: None,
                        idle_timeout_ms: None,
                        unresolved_weight: 0,
                    }),
                };
                let filters = self.route_filters(
                    at,
                    hr.request_headers.as_ref(),
                    hr.response_headers.as_ref(),
                    hr.mirror.as_deref(),
                    hr.cors.as_ref(),
                );
                (matcher, action, filters)
            }
            ir::Protocol::Grpc => {
                let gr = r.grpc_route.as_ref()?;
                let path = join(at.path, "grpcRoute");
                let at = At { path: &path, ..at };
                let m = &gr.matcher;
                if m.port.is_some_and(|p| p != i64::from(port)) {
                    return None;
                }
                let path = match (&m.service_name, &m.method_name) {
                    (Some(s), Some(method)) => Some(ir::PathMatch::Exact(format!("/{s}/{method}"))),
                    (Some(s), None) => Some(ir::PathMatch::Prefix(format!("/{s}/"))),
                    (None, None) => None,
                    (None, Some(_)) => {
                        self.diag_at(
                            at,
                            "match.methodName",
                            "methodName requires serviceName; route skipped",
                        );
                        return None;
                    }
                };
                let mut matcher = ir::RouteMatch {
                    path,
                    port: m.port.and_then(port_of),
                    ..Default::default()
                };
                matcher.headers = self.metadata(at, "match.metadata", m.metadata.as_deref())?;
                let timeout = gr.timeout.as_ref().and_then(|t| t.per_request);
                let action = ir::RouteAction::Forward(ir::ForwardAction {
                    clusters: self.weighted(at, &gr.action)?,
                    rewrite: ir::Rewrite::default(),
                    timeout_ms: super::resilience::per_request_ms(timeout.as_ref()),
                    retry: None,
                    idle_timeout_ms: None,
                    unresolved_weight: 0,
                });
                (matcher, action, Filters::default())
            }
            // Tcp listeners are refused before (`router_table`); tcpRoutes are translated by `tcp`.
            ir::Protocol::Tcp => return None,
        };
        let key = OrderKey::new(r.priority, &matcher, false, order_name);
        let mut route = ir::Route::new(route_name, matcher, action);
        if let ir::RouteAction::Forward(f) = &mut route.action {
            f.retry = super::resilience::route_retry(r, proto);
            f.idle_timeout_ms = super::resilience::route_idle_ms(r, proto);
        }
        filters.apply(&mut route);
        Some(Candidate {
            key,
            host: HostKey::Any,
            routes: vec![route],
        })
    }

    /// `weightedTargets` → weighted clusters. Targets that cannot be resolved are dropped with a
    /// diagnostic; a route left without targets is skipped.
    fn weighted(&mut self, at: At<'_>, action: &RouteAction) -> Option<Vec<ir::WeightedCluster>> {
        self.weighted_for(at, action, Traffic::Http)
    }

    /// [`Cx::weighted`] for `traffic` (tcp may go to any node listener, HTTP not to tcp ones).
    fn weighted_for(
        &mut self,
        at: At<'_>,
        action: &RouteAction,
        traffic: Traffic,
    ) -> Option<Vec<ir::WeightedCluster>> {
        let mut out = Vec::new();
        for (i, t) in action.weighted_targets.iter().enumerate() {
            let sub = format!("action.weightedTargets[{i}]");
            let referrer = format!(
                "the target at {} {}/{} {}",
                at.kind,
                at.namespace,
                at.name,
                join(at.path, &sub)
            );
            let Some(node_ref) = &t.virtual_node_ref else {
                self.diag_at(
                    at,
                    &sub,
                    "virtualNodeRef is required (virtualNodeARN is AWS only); target dropped",
                );
                continue;
            };
            let ns = node_ref.namespace.as_deref().unwrap_or(at.namespace);
            let path = join(at.path, &format!("{sub}.virtualNodeRef"));
            let ref_at = At { path: &path, ..at };
            let Some(cluster) =
                self.node_cluster_for(ref_at, &referrer, ns, &node_ref.name, t.port, traffic)
            else {
                continue;
            };
            let weight = match u32::try_from(t.weight) {
                Ok(w) => w,
                Err(_) => {
                    self.diag_at(
                        at,
                        &format!("{sub}.weight"),
                        format!("{} is not a weight; using 0", t.weight),
                    );
                    0
                }
            };
            out.push(ir::WeightedCluster::new(cluster, weight));
        }
        if out.is_empty() {
            self.diag_at(
                at,
                "action.weightedTargets",
                "no usable target; route skipped",
            );
            return None;
        }
        Some(out)
    }

    // === nodes ===

    /// The cluster of a node for a port (or its only listener), registered once per snapshot, for
    /// HTTP traffic.
    fn node_cluster(
        &mut self,
        ref_at: At<'_>,
        referrer: &str,
        ns: &str,
        name: &str,
        port: Option<i64>,
    ) -> Option<String> {
        self.node_cluster_for(ref_at, referrer, ns, name, port, Traffic::Http)
    }

    /// [`Cx::node_cluster`] for `traffic`: HTTP routes cannot send to a tcp listener (only a
    /// tcp proxy can); a tcp proxy may send to any listener, bytes are bytes.
    fn node_cluster_for(
        &mut self,
        ref_at: At<'_>,
        referrer: &str,
        ns: &str,
        name: &str,
        port: Option<i64>,
        traffic: Traffic,
    ) -> Option<String> {
        let Some(node) = self.inputs.world.virtual_node(ns, name) else {
            self.diag_at(
                ref_at,
                "",
                format!("VirtualNode {ns}/{name} not found; {referrer} skipped"),
            );
            return None;
        };
        let listeners = listener_ports(
            node.spec
                .listeners
                .iter()
                .flatten()
                .map(|l| &l.port_mapping),
        );
        let node_at = At {
            kind: Kind::VirtualNode,
            namespace: ns,
            name,
            path: "spec",
        };
        let (port, proto) = self.pick_listener(node_at, referrer, &listeners, port)?;
        if proto == ir::Protocol::Tcp && traffic == Traffic::Http {
            self.diag_at(
                node_at,
                "listeners",
                format!(
                    "the listener on port {port} is a tcp listener, which only a tcp route can send to; {referrer} skipped"
                ),
            );
            return None;
        }
        let cname = cluster_name(ns, name, port);
        self.clusters.entry(cname.clone()).or_insert(ClusterSpec {
            namespace: ns.to_string(),
            node: name.to_string(),
            port,
            protocol: proto,
        });
        Some(cname)
    }

    // === matches ===

    fn path_match(
        &mut self,
        at: At<'_>,
        prefix: Option<&str>,
        path: Option<&HttpPathMatch>,
    ) -> Option<Option<ir::PathMatch>> {
        if let Some(p) = prefix {
            return Some(Some(ir::PathMatch::Prefix(p.to_string())));
        }
        let Some(path) = path else {
            return Some(None);
        };
        if let Some(e) = &path.exact {
            return Some(Some(ir::PathMatch::Exact(e.clone())));
        }
        if let Some(re) = &path.regex {
            if let Err(e) = check_regex(re) {
                self.diag_at(at, "match.path.regex", format!("{e}; route skipped"));
                return None;
            }
            return Some(Some(ir::PathMatch::Regex(re.clone())));
        }
        Some(None)
    }

    fn headers(
        &mut self,
        at: At<'_>,
        sub: &str,
        headers: Option<&[HttpHeaderMatch]>,
    ) -> Option<Vec<ir::KeyValueMatch>> {
        let mut out = Vec::new();
        for (i, h) in headers.unwrap_or_default().iter().enumerate() {
            let m = self.header_method(at, &format!("{sub}[{i}].match"), h.matcher.as_ref())?;
            out.push(ir::KeyValueMatch {
                name: h.name.to_ascii_lowercase(),
                matcher: m,
                invert: h.invert.unwrap_or(false),
            });
        }
        Some(out)
    }

    fn metadata(
        &mut self,
        at: At<'_>,
        sub: &str,
        metadata: Option<&[GrpcRouteMetadata]>,
    ) -> Option<Vec<ir::KeyValueMatch>> {
        let mut out = Vec::new();
        for (i, h) in metadata.unwrap_or_default().iter().enumerate() {
            let m = self.header_method(at, &format!("{sub}[{i}].match"), h.matcher.as_ref())?;
            out.push(ir::KeyValueMatch {
                name: h.name.to_ascii_lowercase(),
                matcher: m,
                invert: h.invert.unwrap_or(false),
            });
        }
        Some(out)
    }

    /// App Mesh header match: one of exact, prefix, suffix, regex, range; none means present.
    fn header_method(
        &mut self,
        at: At<'_>,
        sub: &str,
        m: Option<&HeaderMatchMethod>,
    ) -> Option<ir::StringMatch> {
        let Some(m) = m else {
            return Some(ir::StringMatch::Present);
        };
        Some(if let Some(v) = &m.exact {
            ir::StringMatch::Exact(v.clone())
        } else if let Some(v) = &m.prefix {
            ir::StringMatch::Prefix(v.clone())
        } else if let Some(v) = &m.suffix {
            ir::StringMatch::Suffix(v.clone())
        } else if let Some(v) = &m.regex {
            if let Err(e) = check_regex(v) {
                self.diag_at(at, &format!("{sub}.regex"), format!("{e}; route skipped"));
                return None;
            }
            ir::StringMatch::Regex(v.clone())
        } else if let Some(r) = &m.range {
            ir::StringMatch::Range {
                start: r.start,
                end: r.end,
            }
        } else {
            ir::StringMatch::Present
        })
    }
}

/// A translated GatewayRoute before it is placed on listeners.
struct GatewayRouteIr {
    family: Family,
    port: Option<u16>,
    key: OrderKey,
    host: HostKey,
    routes: Vec<ir::Route>,
}

#[derive(Clone)]
enum Action {
    Delegate(String),
    Forward(String),
}

/// What traffic a target receives: HTTP routes need an HTTP-family listener of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Traffic {
    Http,
    Tcp,
}

/// The virtual service a gateway route targets, and its provider.
struct Provider {
    /// The name the service is served under (for Host rewrites).
    vs_name: String,
    vs_namespace: String,
    vs: String,
    kind: ProviderKind,
}

enum ProviderKind {
    Router { namespace: String, name: String },
    Node { namespace: String, name: String },
}

impl Provider {
    /// The service's `spec.provider`, for diagnostics.
    fn at(&self) -> At<'_> {
        At {
            kind: Kind::VirtualService,
            namespace: &self.vs_namespace,
            name: &self.vs,
            path: "spec.provider",
        }
    }
}

impl Action {
    fn with_rewrite(self, rewrite: ir::Rewrite) -> ir::RouteAction {
        match self {
            Action::Delegate(route_table) => ir::RouteAction::Delegate(ir::DelegateAction {
                route_table,
                rewrite,
            }),
            Action::Forward(cluster) => ir::RouteAction::Forward(ir::ForwardAction {
                clusters: vec![ir::WeightedCluster::new(cluster, 1)],
                rewrite,
                timeout_ms: None,
                retry: None,
                idle_timeout_ms: None,
                unresolved_weight: 0,
            }),
        }
    }
}

/// Builds the virtual hosts of one listener from its candidates (see the module documentation).
fn virtual_hosts(mut cands: Vec<Candidate>) -> Vec<ir::VirtualHost> {
    cands.sort_by(|a, b| a.key.cmp(&b.key));
    let hosts: BTreeSet<HostKey> = cands.iter().map(|c| c.host.clone()).collect();
    hosts
        .into_iter()
        .map(|h| ir::VirtualHost {
            name: h.vhost_name(),
            hosts: vec![h.to_ir()],
            routes: cands
                .iter()
                .filter(|c| c.host.covers(&h))
                .flat_map(|c| c.routes.iter().cloned())
                .collect(),
        })
        .collect()
}

fn host_key(m: Option<&bowline_model::appmesh::GatewayRouteHostnameMatch>) -> HostKey {
    match m {
        Some(h) => match (&h.exact, &h.suffix, &h.wildcard) {
            (Some(e), _, _) => HostKey::Exact(e.to_ascii_lowercase()),
            (None, Some(s), _) => HostKey::Suffix(s.to_ascii_lowercase()),
            // `*.example.com`: one or more labels before `example.com`.
            (None, None, Some(w)) => {
                HostKey::Suffix(w.strip_prefix('*').unwrap_or(w).to_ascii_lowercase())
            }
            (None, None, None) => HostKey::Any,
        },
        None => HostKey::Any,
    }
}

/// The name a virtual service is served under, which a GatewayRoute rewrites the Host to by
/// default: the model's single definition (`metadata.name` when it contains a dot, else
/// `<name>.<namespace>.svc.cluster.local`). App Mesh used `spec.awsName`, which Bowline reports as
/// ignored; in App Mesh's Kubernetes manifests the two are the same FQDN.
fn virtual_service_name(vs: &Resource<bowline_model::appmesh::VirtualServiceSpec>) -> String {
    bowline_model::validate::virtual_service_hostname(&vs.metadata)
}

fn protocol(p: PortProtocol) -> ir::Protocol {
    match p {
        PortProtocol::Http => ir::Protocol::Http,
        PortProtocol::Http2 => ir::Protocol::Http2,
        PortProtocol::Grpc => ir::Protocol::Grpc,
        PortProtocol::Tcp => ir::Protocol::Tcp,
    }
}

fn port_of(p: i64) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// Regular expressions match the whole value; check that the engine will accept them.
fn check_regex(re: &str) -> Result<(), String> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map(|_| ())
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

/// A VirtualRouter's `spec`, for diagnostics.
fn router_at<'s>(ns: &'s str, name: &'s str) -> At<'s> {
    At {
        kind: Kind::VirtualRouter,
        namespace: ns,
        name,
        path: "spec",
    }
}

fn join(base: &str, sub: &str) -> String {
    match (base.is_empty(), sub.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => sub.to_string(),
        (false, false) => format!("{base}.{sub}"),
    }
}

/// The (port, protocol) of each listener whose port is valid.
fn listener_ports<'a>(
    mappings: impl Iterator<Item = &'a bowline_model::appmesh::PortMapping>,
) -> Vec<(u16, ir::Protocol)> {
    mappings
        .filter_map(|m| Some((port_of(m.port)?, protocol(m.protocol))))
        .collect()
}

/// The gateway's `logging.accessLog.file`, for every listener: App Mesh (Envoy) semantics, the
/// default text format when none is given. Templates were validated with the document.
fn access_log(logging: Option<&bowline_model::appmesh::Logging>) -> Option<ir::AccessLog> {
    let file = logging?.access_log.as_ref()?.file.as_ref()?;
    let format = match &file.format {
        Some(f) if f.json.is_some() => ir::AccessLogFormat::Json(
            f.json
                .iter()
                .flatten()
                .map(|j| ir::JsonLogField {
                    key: j.key.clone(),
                    value: j.value.clone(),
                })
                .collect(),
        ),
        Some(f) if f.text.is_some() => {
            ir::AccessLogFormat::Text(f.text.clone().unwrap_or_default())
        }
        _ => ir::AccessLogFormat::Text(bowline_model::accesslog::DEFAULT_TEXT.to_string()),
    };
    Some(ir::AccessLog {
        path: file.path.clone(),
        format,
    })
}
