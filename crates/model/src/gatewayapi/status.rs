//! The Gateway API's attachment rules and the status they produce, as pure functions of a set of
//! objects: which listeners of which Gateways each route attaches to (parentRefs with
//! `sectionName` and `port`, `allowedRoutes` by namespace and kind, hostname intersection),
//! which backend and certificate references resolve (existence, kind, ReferenceGrant), and the
//! conditions the specification defines for GatewayClasses, Gateways, their listeners and every
//! route parent. Both the control plane (translation, `/status`) and `meshctl validate` use it.
//!
//! Only objects of Bowline's classes get status: GatewayClasses whose `controllerName` is
//! [`CONTROLLER`], their Gateways, and the parents of routes that name such a Gateway.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, Service};
use serde::Serialize;

use super::{
    BackendObjectReference, CONTROLLER, GROUP, Gateway, GatewayClass, GrpcRoute, HttpRoute,
    Listener, ParentReference, ReferenceGrant, RouteGroupKind, SecretObjectReference,
};
use crate::appmesh::LabelSelector;
use crate::manifest::Object;

// === status types ===

/// A status condition as the Gateway API writes it (`lastTransitionTime` and
/// `observedGeneration` are left out: standalone objects have neither).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// The status of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub kind: String,
    /// Empty for GatewayClasses.
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<RouteParentStatus>,
}

impl ObjectStatus {
    /// `Kind ns/name` (or `Kind name`).
    pub fn object(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// One line per condition: `Kind ns/name: [listener x | parent ns/name section s]:
    /// Type=Status (Reason): message`.
    pub fn lines(&self) -> Vec<String> {
        let o = self.object();
        self.located()
            .into_iter()
            .map(|(at, c)| {
                format!(
                    "{o}: {at}{}={} ({}): {}",
                    c.type_, c.status, c.reason, c.message
                )
            })
            .collect()
    }

    /// For each of [`ObjectStatus::lines`], whether the condition reports a problem (a `False`
    /// condition, or `Conflicted=True`).
    pub fn problem_flags(&self) -> Vec<bool> {
        self.located()
            .into_iter()
            .map(|(_, c)| (c.type_ == "Conflicted") == c.is_true())
            .collect()
    }

    /// Every condition with the prefix that says whose it is.
    fn located(&self) -> Vec<(String, &Condition)> {
        let mut out: Vec<(String, &Condition)> =
            self.conditions.iter().map(|c| (String::new(), c)).collect();
        for l in &self.listeners {
            let at = format!(
                "listener {} (attachedRoutes {}): ",
                l.name, l.attached_routes
            );
            out.extend(l.conditions.iter().map(|c| (at.clone(), c)));
        }
        for p in &self.parents {
            let r = &p.parent_ref;
            let mut at = format!(
                "parent {}/{}",
                r.namespace.as_deref().unwrap_or(&self.namespace),
                r.name
            );
            if let Some(s) = &r.section_name {
                at.push_str(&format!(" section {s}"));
            }
            if let Some(port) = r.port {
                at.push_str(&format!(" port {port}"));
            }
            at.push_str(": ");
            out.extend(p.conditions.iter().map(|c| (at.clone(), c)));
        }
        out
    }
}

// === inputs ===

/// A route of either kind.
#[derive(Clone, Copy, Debug)]
pub enum RouteRef<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
}

impl<'a> RouteRef<'a> {
    pub fn kind(&self) -> &'static str {
        match self {
            RouteRef::Http(_) => "HTTPRoute",
            RouteRef::Grpc(_) => "GRPCRoute",
        }
    }

    pub fn namespace(&self) -> &'a str {
        match self {
            RouteRef::Http(r) => r.namespace(),
            RouteRef::Grpc(r) => r.namespace(),
        }
    }

    pub fn name(&self) -> &'a str {
        match self {
            RouteRef::Http(r) => r.name(),
            RouteRef::Grpc(r) => r.name(),
        }
    }

    pub fn creation_timestamp(&self) -> Option<&'a str> {
        match self {
            RouteRef::Http(r) => r.creation_timestamp.as_deref(),
            RouteRef::Grpc(r) => r.creation_timestamp.as_deref(),
        }
    }

    fn parent_refs(&self) -> &'a [ParentReference] {
        match self {
            RouteRef::Http(r) => &r.spec.parent_refs,
            RouteRef::Grpc(r) => &r.spec.parent_refs,
        }
    }

    fn hostnames(&self) -> &'a [String] {
        match self {
            RouteRef::Http(r) => &r.spec.hostnames,
            RouteRef::Grpc(r) => &r.spec.hostnames,
        }
    }

    /// Every backend reference of the route with its field path: rule backends, their filters'
    /// mirrors, and the rules' mirrors.
    pub fn backend_refs(&self) -> Vec<(String, BackendObjectReference)> {
        let mut out = Vec::new();
        let rules: Vec<(&[super::HttpRouteFilter], &[super::HttpBackendRef])> = match self {
            RouteRef::Http(r) => r
                .spec
                .rules
                .iter()
                .map(|r| (&r.filters[..], &r.backend_refs[..]))
                .collect(),
            RouteRef::Grpc(r) => r
                .spec
                .rules
                .iter()
                .map(|r| (&r.filters[..], &r.backend_refs[..]))
                .collect(),
        };
        let mirrors = |at: &str, filters: &[super::HttpRouteFilter], out: &mut Vec<_>| {
            for (k, f) in filters.iter().enumerate() {
                if let Some(m) = &f.request_mirror {
                    out.push((
                        format!("{at}.filters[{k}].requestMirror.backendRef"),
                        m.backend_ref.clone(),
                    ));
                }
            }
        };
        for (i, (filters, backends)) in rules.into_iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            for (j, b) in backends.iter().enumerate() {
                let bat = format!("{at}.backendRefs[{j}]");
                out.push((bat.clone(), b.object_ref()));
                mirrors(&bat, &b.filters, &mut out);
            }
            mirrors(&at, filters, &mut out);
        }
        out
    }
}

/// The Gateway API objects of a world, indexed.
#[derive(Default)]
pub struct Objects<'a> {
    classes: BTreeMap<&'a str, &'a GatewayClass>,
    gateways: BTreeMap<(&'a str, &'a str), &'a Gateway>,
    routes: Vec<RouteRef<'a>>,
    grants: Vec<&'a ReferenceGrant>,
    services: BTreeMap<(&'a str, &'a str), &'a Service>,
    secrets: BTreeMap<(&'a str, &'a str), &'a Secret>,
    namespace_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
}

/// A backend reference that resolves: a port of an existing Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBackend {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    /// The Service port's `appProtocol` (`kubernetes.io/h2c` asks for HTTP/2 without TLS).
    pub app_protocol: Option<String>,
}

/// Why a reference does not resolve: the condition reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

impl<'a> Objects<'a> {
    pub fn new(objects: impl IntoIterator<Item = &'a Object>) -> Self {
        let mut o = Objects::default();
        for object in objects {
            match object {
                Object::GatewayClass(c) => {
                    o.classes.insert(c.name(), c);
                }
                Object::Gateway(g) => {
                    o.gateways.insert((g.namespace(), g.name()), g);
                }
                Object::HttpRoute(r) => o.routes.push(RouteRef::Http(r)),
                Object::GrpcRoute(r) => o.routes.push(RouteRef::Grpc(r)),
                Object::ReferenceGrant(g) => o.grants.push(g),
                Object::Service(s) => {
                    o.services.insert(k8s_key(&s.metadata), s);
                }
                Object::Secret(s) => {
                    o.secrets.insert(k8s_key(&s.metadata), s);
                }
                Object::Namespace(n) => {
                    let name = n.metadata.name.as_deref().unwrap_or_default();
                    let mut labels = n.metadata.labels.clone().unwrap_or_default();
                    labels
                        .entry("kubernetes.io/metadata.name".into())
                        .or_insert_with(|| name.to_string());
                    o.namespace_labels.insert(name, labels);
                }
                _ => {}
            }
        }
        o
    }

    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&'a Gateway> {
        self.gateways.get(&(namespace, name)).copied()
    }

    /// Whether the Gateway's class is one of Bowline's.
    pub fn is_ours(&self, gateway: &Gateway) -> bool {
        self.classes
            .get(gateway.spec.gateway_class_name.as_str())
            .is_some_and(|c| c.spec.controller_name == CONTROLLER)
    }

    /// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects (of `from_group`) in
    /// `from_ns` refer to the `to_kind` (of `to_group`) named `to_name`.
    fn granted(
        &self,
        (from_group, from_kind, from_ns): (&str, &str, &str),
        (to_group, to_kind, to_ns, to_name): (&str, &str, &str, &str),
    ) -> bool {
        self.grants.iter().any(|g| {
            g.namespace() == to_ns
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
    }

    /// Resolves a backend reference of a `route_kind` route in `route_ns`.
    pub fn resolve_backend(
        &self,
        route_kind: &str,
        route_ns: &str,
        r: &BackendObjectReference,
    ) -> Result<ResolvedBackend, Unresolved> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            return Err(Unresolved {
                reason: "InvalidKind",
                message: format!(
                    "backend {kind:?} of group {group:?} is not supported; only core Services are"
                ),
            });
        }
        let ns = r.namespace.as_deref().unwrap_or(route_ns);
        if ns != route_ns
            && !self.granted((GROUP, route_kind, route_ns), ("", "Service", ns, &r.name))
        {
            return Err(Unresolved {
                reason: "RefNotPermitted",
                message: format!(
                    "Service {ns}/{} is in another namespace and no ReferenceGrant in {ns} allows {route_kind}s of {route_ns} to refer to it",
                    r.name
                ),
            });
        }
        let Some(svc) = self.services.get(&(ns, r.name.as_str())) else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("Service {ns}/{} not found", r.name),
            });
        };
        let port = r.port.unwrap_or_default();
        let sp = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ps| ps.iter().find(|p| i64::from(p.port) == port));
        let Some(sp) = sp else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("Service {ns}/{} has no port {port}", r.name),
            });
        };
        Ok(ResolvedBackend {
            namespace: ns.to_string(),
            name: r.name.clone(),
            port: u16::try_from(port).unwrap_or_default(),
            app_protocol: sp.app_protocol.clone(),
        })
    }

    /// Resolves a listener's certificate reference: a `kubernetes.io/tls` Secret with `tls.crt`
    /// and `tls.key`, in the Gateway's namespace or granted to it.
    pub fn resolve_certificate(
        &self,
        gateway_ns: &str,
        r: &SecretObjectReference,
    ) -> Result<&'a Secret, Unresolved> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            return Err(Unresolved {
                reason: "InvalidCertificateRef",
                message: format!("{kind:?} of group {group:?} is not a Secret"),
            });
        }
        let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
        if ns != gateway_ns
            && !self.granted((GROUP, "Gateway", gateway_ns), ("", "Secret", ns, &r.name))
        {
            return Err(Unresolved {
                reason: "RefNotPermitted",
                message: format!(
                    "Secret {ns}/{} is in another namespace and no ReferenceGrant in {ns} allows Gateways of {gateway_ns} to refer to it",
                    r.name
                ),
            });
        }
        let Some(secret) = self.secrets.get(&(ns, r.name.as_str())).copied() else {
            return Err(Unresolved {
                reason: "InvalidCertificateRef",
                message: format!("Secret {ns}/{} not found", r.name),
            });
        };
        if secret
            .type_
            .as_deref()
            .is_some_and(|t| t != "kubernetes.io/tls")
        {
            return Err(Unresolved {
                reason: "InvalidCertificateRef",
                message: format!(
                    "Secret {ns}/{} has type {:?}, not \"kubernetes.io/tls\"",
                    r.name,
                    secret.type_.as_deref().unwrap_or_default()
                ),
            });
        }
        let has = |k: &str| {
            secret.data.as_ref().is_some_and(|d| d.contains_key(k))
                || secret
                    .string_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(k))
        };
        if !has("tls.crt") || !has("tls.key") {
            return Err(Unresolved {
                reason: "InvalidCertificateRef",
                message: format!("Secret {ns}/{} needs tls.crt and tls.key", r.name),
            });
        }
        Ok(secret)
    }
}

fn k8s_key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default(),
    )
}

/// Kubernetes label selector semantics (empty selects everything); an unknown operator selects
/// nothing.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector.matches(labels).unwrap_or(false)
}

// === hostnames ===

/// Whether `host` (a name or `*.` wildcard) is matched by the wildcard `pattern` (`*.x`
/// matches one or more labels before `x`, never `x` itself).
pub fn wildcard_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => false,
    }
}

/// The intersection of a listener hostname and a route hostname: the more specific of the two
/// when one covers the other, `None` when they are disjoint.
pub fn intersect(listener: &str, route: &str) -> Option<String> {
    if listener == route {
        return Some(route.to_string());
    }
    if wildcard_covers(listener, route) {
        return Some(route.to_string());
    }
    if wildcard_covers(route, listener) {
        return Some(listener.to_string());
    }
    None
}

/// The hostnames a route serves on a listener; an empty list means any host.
pub fn effective_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    match listener {
        None => route.to_vec(),
        Some(l) if route.is_empty() => vec![l.to_string()],
        Some(l) => {
            let mut out: Vec<String> = route.iter().filter_map(|r| intersect(l, r)).collect();
            out.dedup();
            out
        }
    }
}

// === analysis ===

/// A route attached to a listener, with the hostnames it serves there (empty: any host).
#[derive(Clone, Debug)]
pub struct Attached<'a> {
    pub route: RouteRef<'a>,
    pub hostnames: Vec<String>,
}

/// One listener of a Gateway.
#[derive(Clone, Debug)]
pub struct ListenerAnalysis<'a> {
    pub listener: &'a Listener,
    /// Accepted, not conflicted, and (for HTTPS) at least one usable certificate: it is served.
    pub programmed: bool,
    /// The Secrets of its certificate references that resolve, in order.
    pub certificates: Vec<&'a Secret>,
    pub routes: Vec<Attached<'a>>,
    pub status: ListenerStatus,
}

/// One Gateway of Bowline's classes.
#[derive(Clone, Debug)]
pub struct GatewayAnalysis<'a> {
    pub gateway: &'a Gateway,
    pub listeners: Vec<ListenerAnalysis<'a>>,
}

/// Everything the attachment rules decide, plus the status of every object concerned.
pub struct Analysis<'a> {
    pub objects: Objects<'a>,
    pub gateways: Vec<GatewayAnalysis<'a>>,
    pub statuses: Vec<ObjectStatus>,
}

/// Analyses the Gateway API objects among `objects`.
pub fn analyse<'a>(objects: impl IntoIterator<Item = &'a Object>) -> Analysis<'a> {
    let objects = Objects::new(objects);
    let mut statuses = Vec::new();
    for c in objects.classes.values() {
        if c.spec.controller_name == CONTROLLER {
            statuses.push(ObjectStatus {
                kind: "GatewayClass".into(),
                namespace: String::new(),
                name: c.name().into(),
                conditions: vec![Condition::new(
                    "Accepted",
                    true,
                    "Accepted",
                    "served by Bowline",
                )],
                listeners: Vec::new(),
                parents: Vec::new(),
            });
        }
    }
    let mut gateways: Vec<GatewayAnalysis<'_>> = objects
        .gateways
        .values()
        .filter(|g| objects.is_ours(g))
        .map(|g| GatewayAnalysis {
            gateway: g,
            listeners: listeners(&objects, g),
        })
        .collect();
    let mut route_statuses = Vec::new();
    let mut routes = objects.routes.clone();
    routes.sort_by(|a, b| {
        (a.namespace(), a.name(), a.kind()).cmp(&(b.namespace(), b.name(), b.kind()))
    });
    for route in routes {
        if let Some(s) = attach(&objects, &mut gateways, route) {
            route_statuses.push(s);
        }
    }
    for g in &gateways {
        statuses.push(gateway_status(g));
    }
    statuses.extend(route_statuses);
    Analysis {
        objects,
        gateways,
        statuses,
    }
}

const HTTP_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

fn listeners<'a>(objects: &Objects<'a>, g: &'a Gateway) -> Vec<ListenerAnalysis<'a>> {
    let ls = &g.spec.listeners;
    let mut out = Vec::new();
    for l in ls {
        let mut conditions = Vec::new();
        let supported_protocol = matches!(l.protocol.as_str(), "HTTP" | "HTTPS");
        let passthrough = l
            .tls
            .as_ref()
            .and_then(|t| t.mode.as_deref())
            .is_some_and(|m| m == "Passthrough");
        // HTTP and HTTPS on one port cannot be told apart by Bowline's listeners.
        let protocol_conflict = ls
            .iter()
            .any(|o| o.port == l.port && o.protocol != l.protocol);
        // Kinds.
        let mut supported_kinds = Vec::new();
        let mut invalid_kinds = Vec::new();
        let requested = l
            .allowed_routes
            .as_ref()
            .map(|a| &a.kinds[..])
            .unwrap_or_default();
        if requested.is_empty() {
            if supported_protocol {
                for k in HTTP_KINDS {
                    supported_kinds.push(RouteGroupKind {
                        group: Some(GROUP.into()),
                        kind: k.into(),
                    });
                }
            }
        } else {
            for k in requested {
                let group = k.group.as_deref().unwrap_or(GROUP);
                if supported_protocol && group == GROUP && HTTP_KINDS.contains(&k.kind.as_str()) {
                    supported_kinds.push(RouteGroupKind {
                        group: Some(GROUP.into()),
                        kind: k.kind.clone(),
                    });
                } else {
                    invalid_kinds.push(format!("{group}/{}", k.kind));
                }
            }
        }
        // Certificates.
        let mut certificates = Vec::new();
        let mut cert_problem: Option<Unresolved> = None;
        if l.protocol == "HTTPS" && !passthrough {
            for r in l.tls.iter().flat_map(|t| &t.certificate_refs) {
                match objects.resolve_certificate(g.namespace(), r) {
                    Ok(s) => certificates.push(s),
                    Err(e) => {
                        cert_problem.get_or_insert(e);
                    }
                }
            }
        }
        let accepted = if !supported_protocol {
            Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!(
                    "protocol {} is not supported; use HTTP or HTTPS",
                    l.protocol
                ),
            )
        } else if passthrough {
            Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                "TLS mode Passthrough is not supported; use Terminate",
            )
        } else if protocol_conflict {
            Condition::new(
                "Accepted",
                false,
                "ProtocolConflict",
                format!(
                    "another listener uses port {} with another protocol",
                    l.port
                ),
            )
        } else {
            Condition::new("Accepted", true, "Accepted", "listener accepted")
        };
        conditions.push(Condition::new(
            "Conflicted",
            protocol_conflict,
            if protocol_conflict {
                "ProtocolConflict"
            } else {
                "NoConflicts"
            },
            if protocol_conflict {
                format!(
                    "another listener uses port {} with another protocol",
                    l.port
                )
            } else {
                "no conflicts".into()
            },
        ));
        let resolved = if !invalid_kinds.is_empty() {
            Condition::new(
                "ResolvedRefs",
                false,
                "InvalidRouteKinds",
                format!(
                    "route kinds {} are not supported here; supported: HTTPRoute, GRPCRoute",
                    invalid_kinds.join(", ")
                ),
            )
        } else if let Some(p) = &cert_problem {
            Condition::new("ResolvedRefs", false, p.reason, p.message.clone())
        } else {
            Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "all references resolved",
            )
        };
        let programmed = accepted.is_true()
            && (l.protocol != "HTTPS" || (!certificates.is_empty() && cert_problem.is_none()));
        let programmed_cond = if programmed {
            Condition::new("Programmed", true, "Programmed", "listener served")
        } else {
            Condition::new(
                "Programmed",
                false,
                "Invalid",
                if accepted.is_true() {
                    resolved.message.clone()
                } else {
                    accepted.message.clone()
                },
            )
        };
        conditions.insert(0, accepted);
        conditions.push(resolved);
        conditions.push(programmed_cond);
        out.push(ListenerAnalysis {
            listener: l,
            programmed,
            certificates,
            routes: Vec::new(),
            status: ListenerStatus {
                name: l.name.clone(),
                supported_kinds,
                attached_routes: 0,
                conditions,
            },
        });
    }
    out
}

fn gateway_status(g: &GatewayAnalysis<'_>) -> ObjectStatus {
    let gw = g.gateway;
    let any_programmed = g.listeners.iter().any(|l| l.programmed);
    let any_accepted = g
        .listeners
        .iter()
        .any(|l| l.status.conditions.first().is_some_and(Condition::is_true));
    let accepted = if !gw.spec.addresses.is_empty() {
        Condition::new(
            "Accepted",
            false,
            "UnsupportedAddress",
            "spec.addresses is not supported: the gateway's addresses come from its deployment",
        )
    } else if !any_accepted {
        Condition::new(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is valid",
        )
    } else {
        Condition::new("Accepted", true, "Accepted", "gateway accepted")
    };
    let programmed = if accepted.is_true() && any_programmed {
        Condition::new(
            "Programmed",
            true,
            "Programmed",
            "served by bowline-gateway --gateway NAMESPACE/NAME",
        )
    } else {
        Condition::new("Programmed", false, "Invalid", "no listener can be served")
    };
    ObjectStatus {
        kind: "Gateway".into(),
        namespace: gw.namespace().into(),
        name: gw.name().into(),
        conditions: vec![accepted, programmed],
        listeners: g.listeners.iter().map(|l| l.status.clone()).collect(),
        parents: Vec::new(),
    }
}

/// Attaches `route` to the listeners its parentRefs select and returns its status (`None` when
/// no parentRef names a Gateway of Bowline's classes).
fn attach<'a>(
    objects: &Objects<'a>,
    gateways: &mut [GatewayAnalysis<'a>],
    route: RouteRef<'a>,
) -> Option<ObjectStatus> {
    let route_ns = route.namespace();
    let resolved = resolved_refs(objects, route);
    let mut parents = Vec::new();
    for p in route.parent_refs() {
        if p.group.as_deref().unwrap_or(GROUP) != GROUP
            || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let ns = p.namespace.as_deref().unwrap_or(route_ns);
        let Some(g) = gateways
            .iter_mut()
            .find(|g| g.gateway.namespace() == ns && g.gateway.name() == p.name)
        else {
            // A Gateway that does not exist: reported when nothing else claims the name.
            if objects.gateway(ns, &p.name).is_none() {
                parents.push(RouteParentStatus {
                    parent_ref: p.clone(),
                    controller_name: CONTROLLER.into(),
                    conditions: vec![
                        Condition::new(
                            "Accepted",
                            false,
                            "NoMatchingParent",
                            format!("Gateway {ns}/{} not found", p.name),
                        ),
                        resolved.clone(),
                    ],
                });
            }
            continue;
        };
        let accepted = attach_to(objects, g, route, p);
        parents.push(RouteParentStatus {
            parent_ref: p.clone(),
            controller_name: CONTROLLER.into(),
            conditions: vec![accepted, resolved.clone()],
        });
    }
    if parents.is_empty() {
        return None;
    }
    Some(ObjectStatus {
        kind: route.kind().into(),
        namespace: route_ns.into(),
        name: route.name().into(),
        conditions: Vec::new(),
        listeners: Vec::new(),
        parents,
    })
}

/// The `Accepted` condition of one parentRef to a Gateway of ours, attaching the route to every
/// listener that accepts it.
fn attach_to<'a>(
    objects: &Objects<'a>,
    g: &mut GatewayAnalysis<'a>,
    route: RouteRef<'a>,
    p: &ParentReference,
) -> Condition {
    let gw_ns = g.gateway.namespace();
    let route_ns = route.namespace();
    let selected: Vec<usize> = g
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            p.section_name
                .as_deref()
                .is_none_or(|s| s == l.listener.name)
                && p.port.is_none_or(|port| port == l.listener.port)
        })
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "no listener of the Gateway has this sectionName/port",
        );
    }
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|&i| {
            let l = &g.listeners[i];
            let kind_ok = l
                .status
                .supported_kinds
                .iter()
                .any(|k| k.kind == route.kind());
            let from = l
                .listener
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref());
            let ns_ok = match from.and_then(|f| f.from.as_deref()).unwrap_or("Same") {
                "All" => true,
                "Selector" => {
                    let labels = objects
                        .namespace_labels
                        .get(route_ns)
                        .cloned()
                        .unwrap_or_default();
                    from.and_then(|f| f.selector.as_ref())
                        .is_some_and(|s| selects(s, &labels))
                }
                _ => route_ns == gw_ns,
            };
            kind_ok && ns_ok
        })
        .collect();
    if allowed.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            format!(
                "no selected listener allows {}s from namespace {route_ns}",
                route.kind()
            ),
        );
    }
    let mut attached = false;
    for i in allowed {
        let l = &mut g.listeners[i];
        let hostnames = effective_hostnames(l.listener.hostname.as_deref(), route.hostnames());
        if hostnames.is_empty() && !route.hostnames().is_empty() {
            continue;
        }
        attached = true;
        l.status.attached_routes += 1;
        l.routes.push(Attached { route, hostnames });
    }
    if !attached {
        return Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no hostname of the route intersects the hostname of a selected listener",
        );
    }
    Condition::new("Accepted", true, "Accepted", "route accepted")
}

/// The `ResolvedRefs` condition of a route (the same for every parent): the first backend
/// reference that does not resolve decides the reason; the message names every one.
fn resolved_refs(objects: &Objects<'_>, route: RouteRef<'_>) -> Condition {
    let mut first: Option<&'static str> = None;
    let mut messages = Vec::new();
    for (at, r) in route.backend_refs() {
        if let Err(e) = objects.resolve_backend(route.kind(), route.namespace(), &r) {
            first.get_or_insert(e.reason);
            messages.push(format!("{at}: {}", e.message));
        }
    }
    match first {
        None => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all references resolved",
        ),
        Some(reason) => Condition::new("ResolvedRefs", false, reason, messages.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_intersection() {
        assert_eq!(
            intersect("*.example.com", "foo.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect("foo.example.com", "*.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.foo.example.com").as_deref(),
            Some("*.foo.example.com")
        );
        assert_eq!(intersect("*.example.com", "example.com"), None);
        assert_eq!(intersect("a.com", "b.com"), None);
        assert_eq!(
            effective_hostnames(
                Some("*.wildcard.io"),
                &["foo.wildcard.io".into(), "bar.com".into()]
            ),
            ["foo.wildcard.io"]
        );
        assert_eq!(effective_hostnames(None, &[]), Vec::<String>::new());
        assert_eq!(effective_hostnames(Some("a.com"), &[]), ["a.com"]);
    }
}
