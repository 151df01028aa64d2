//! Protocol types generated from `proto/bowline/v1/config.proto`, and conversion between them and
//! the [`ir`](crate::ir). Encoding (`From<&ir::X>`) cannot fail; decoding (`TryFrom<pb::X>`)
//! rejects what the IR cannot express, with the path of the offending field.

use crate::ir;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("bowline.v1");
}

use pb::{host_match, path_match, route, string_match};

/// A resource on the wire that does not decode into the IR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {path}: {reason}")]
pub struct InvalidResource {
    /// `type/name` of the resource.
    pub resource: String,
    /// Field path inside the resource.
    pub path: String,
    pub reason: String,
}

/// The kind of a resource, as used in keys such as `listener/http-8080`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Listener,
    RouteTable,
    Cluster,
    Endpoints,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::RouteTable => "routeTable",
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoints",
        }
    }

    pub fn from_type(t: pb::ResourceType) -> Option<Self> {
        match t {
            pb::ResourceType::Listener => Some(Kind::Listener),
            pb::ResourceType::RouteTable => Some(Kind::RouteTable),
            pb::ResourceType::Cluster => Some(Kind::Cluster),
            pb::ResourceType::Endpoints => Some(Kind::Endpoints),
            pb::ResourceType::Unspecified => None,
        }
    }

    pub fn to_type(self) -> pb::ResourceType {
        match self {
            Kind::Listener => pb::ResourceType::Listener,
            Kind::RouteTable => pb::ResourceType::RouteTable,
            Kind::Cluster => pb::ResourceType::Cluster,
            Kind::Endpoints => pb::ResourceType::Endpoints,
        }
    }

    /// The key of a resource of this kind: `kind/name`.
    pub fn key(self, name: &str) -> String {
        format!("{}/{}", self.as_str(), name)
    }
}

impl pb::Resource {
    /// The kind carried in this resource, if any.
    pub fn resource_kind(&self) -> Option<Kind> {
        use pb::resource::Kind as K;
        Some(match self.kind.as_ref()? {
            K::Listener(_) => Kind::Listener,
            K::RouteTable(_) => Kind::RouteTable,
            K::Cluster(_) => Kind::Cluster,
            K::Endpoints(_) => Kind::Endpoints,
        })
    }
}

/// Splits a snapshot into wire resources, each with a content version, keyed by `kind/name`.
pub fn snapshot_to_resources(snapshot: &ir::Snapshot) -> Vec<(String, pb::Resource)> {
    use pb::resource::Kind as K;
    let mut out = Vec::new();
    let mut push = |kind: Kind, name: &str, k: K| {
        let mut res = pb::Resource {
            name: name.to_string(),
            version: String::new(),
            kind: Some(k),
        };
        res.version = digest(&prost::Message::encode_to_vec(&res));
        out.push((kind.key(name), res));
    };
    for l in &snapshot.listeners {
        push(Kind::Listener, &l.name, K::Listener(l.into()));
    }
    for r in &snapshot.route_tables {
        push(Kind::RouteTable, &r.name, K::RouteTable(r.into()));
    }
    for c in &snapshot.clusters {
        push(Kind::Cluster, &c.name, K::Cluster(c.into()));
    }
    for e in &snapshot.endpoints {
        push(Kind::Endpoints, &e.cluster, K::Endpoints(e.into()));
    }
    out
}

/// Rebuilds a snapshot from wire resources (any order). Fails on the first invalid resource.
pub fn resources_to_snapshot<'a>(
    resources: impl IntoIterator<Item = &'a pb::Resource>,
) -> Result<ir::Snapshot, InvalidResource> {
    merge_resources(
        ir::Snapshot::default(),
        std::iter::empty(),
        resources.into_iter().cloned(),
    )
}

/// Applies a delta to `snapshot`: drops the `removed` resources (kind and resource name), then
/// converts each of `added` (consuming it, so no wire message outlives the call) and puts it in
/// place of the one of the same kind and name. The result is normalized (sorted by name). Fails on
/// the first invalid resource, naming it and the field.
pub fn merge_resources<'a>(
    snapshot: ir::Snapshot,
    removed: impl IntoIterator<Item = (Kind, &'a str)>,
    added: impl IntoIterator<Item = pb::Resource>,
) -> Result<ir::Snapshot, InvalidResource> {
    use pb::resource::Kind as K;
    use std::collections::BTreeMap;
    fn by_name<T>(items: Vec<T>, name: impl Fn(&T) -> &str) -> BTreeMap<String, T> {
        items
            .into_iter()
            .map(|t| (name(&t).to_string(), t))
            .collect()
    }
    let mut listeners = by_name(snapshot.listeners, |l| &l.name);
    let mut tables = by_name(snapshot.route_tables, |t| &t.name);
    let mut clusters = by_name(snapshot.clusters, |c| &c.name);
    let mut endpoints = by_name(snapshot.endpoints, |e| &e.cluster);
    for (kind, name) in removed {
        match kind {
            Kind::Listener => listeners.remove(name).map(drop),
            Kind::RouteTable => tables.remove(name).map(drop),
            Kind::Cluster => clusters.remove(name).map(drop),
            Kind::Endpoints => endpoints.remove(name).map(drop),
        };
    }
    for res in added {
        let kind = res.resource_kind();
        let mismatch = |inner: &str| InvalidResource {
            resource: kind.map_or_else(|| res.name.clone(), |k| k.key(&res.name)),
            path: "name".into(),
            reason: format!("the resource is named {:?} but carries {inner:?}", res.name),
        };
        match res.kind {
            Some(K::Listener(l)) if l.name != res.name => return Err(mismatch(&l.name)),
            Some(K::RouteTable(t)) if t.name != res.name => return Err(mismatch(&t.name)),
            Some(K::Cluster(c)) if c.name != res.name => return Err(mismatch(&c.name)),
            Some(K::Endpoints(e)) if e.cluster != res.name => return Err(mismatch(&e.cluster)),
            Some(K::Listener(l)) => {
                listeners.insert(res.name, l.try_into()?);
            }
            Some(K::RouteTable(t)) => {
                tables.insert(res.name, t.try_into()?);
            }
            Some(K::Cluster(c)) => {
                clusters.insert(res.name, c.try_into()?);
            }
            Some(K::Endpoints(e)) => {
                endpoints.insert(res.name, e.try_into()?);
            }
            None => {
                return Err(InvalidResource {
                    resource: res.name,
                    path: "kind".into(),
                    reason: "resource carries no payload".into(),
                });
            }
        }
    }
    Ok(ir::Snapshot {
        listeners: listeners.into_values().collect(),
        route_tables: tables.into_values().collect(),
        clusters: clusters.into_values().collect(),
        endpoints: endpoints.into_values().collect(),
    })
}

/// A short, stable content digest (FNV-1a, 64 bit) rendered as hex.
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

// === encode: IR → proto ===

fn protocol_to(p: ir::Protocol) -> i32 {
    (match p {
        ir::Protocol::Http => pb::Protocol::Http,
        ir::Protocol::Http2 => pb::Protocol::Http2,
        ir::Protocol::Grpc => pb::Protocol::Grpc,
        ir::Protocol::Tcp => pb::Protocol::Tcp,
    }) as i32
}

impl From<&ir::Listener> for pb::Listener {
    fn from(l: &ir::Listener) -> Self {
        pb::Listener {
            name: l.name.clone(),
            address: l.address.clone(),
            port: u32::from(l.port),
            protocol: protocol_to(l.protocol),
            route_table: l.route_table.clone(),
            access_log: l.access_log.as_ref().map(access_log_to),
            tls: l.tls.as_ref().map(tls_listener_to),
            tcp_proxy: l.tcp_proxy.as_ref().map(tcp_proxy_to),
        }
    }
}

fn access_log_to(a: &ir::AccessLog) -> pb::AccessLog {
    use pb::access_log::Format;
    pb::AccessLog {
        path: a.path.clone(),
        format: Some(match &a.format {
            ir::AccessLogFormat::Text(t) => Format::Text(t.clone()),
            ir::AccessLogFormat::Json(fields) => Format::Json(pb::AccessLogJson {
                fields: fields
                    .iter()
                    .map(|f| pb::AccessLogJsonField {
                        key: f.key.clone(),
                        value: f.value.clone(),
                    })
                    .collect(),
            }),
        }),
    }
}

fn access_log_from(cx: &Ctx, a: pb::AccessLog) -> Result<ir::AccessLog, InvalidResource> {
    use pb::access_log::Format;
    if a.path.is_empty() {
        return Err(cx.err("accessLog.path", "path is empty"));
    }
    let format = match a.format {
        Some(Format::Text(t)) => ir::AccessLogFormat::Text(t),
        Some(Format::Json(j)) => ir::AccessLogFormat::Json(
            j.fields
                .into_iter()
                .map(|f| ir::JsonLogField {
                    key: f.key,
                    value: f.value,
                })
                .collect(),
        ),
        None => return Err(cx.err("accessLog.format", "no format")),
    };
    Ok(ir::AccessLog {
        path: a.path,
        format,
    })
}

impl From<&ir::RouteTable> for pb::RouteTable {
    fn from(t: &ir::RouteTable) -> Self {
        pb::RouteTable {
            name: t.name.clone(),
            virtual_hosts: t.virtual_hosts.iter().map(Into::into).collect(),
        }
    }
}

impl From<&ir::VirtualHost> for pb::VirtualHost {
    fn from(v: &ir::VirtualHost) -> Self {
        pb::VirtualHost {
            name: v.name.clone(),
            hosts: v
                .hosts
                .iter()
                .map(|h| pb::HostMatch {
                    kind: Some(match h {
                        ir::HostMatch::Any => host_match::Kind::Any(true),
                        ir::HostMatch::Exact(s) => host_match::Kind::Exact(s.clone()),
                        ir::HostMatch::Suffix(s) => host_match::Kind::Suffix(s.clone()),
                        ir::HostMatch::Wildcard(s) => host_match::Kind::Wildcard(s.clone()),
                    }),
                })
                .collect(),
            routes: v.routes.iter().map(Into::into).collect(),
        }
    }
}

fn rewrite_to(r: &ir::Rewrite) -> Option<pb::Rewrite> {
    (!r.is_empty()).then(|| pb::Rewrite {
        prefix: r.prefix.clone(),
        full_path: r.full_path.clone(),
        host: r.host.clone(),
        regex_pattern: r.regex.as_ref().map(|x| x.pattern.clone()),
        regex_substitution: r.regex.as_ref().map(|x| x.substitution.clone()),
    })
}

fn string_match_to(m: &ir::StringMatch) -> pb::StringMatch {
    use string_match::Kind as K;
    pb::StringMatch {
        kind: Some(match m {
            ir::StringMatch::Exact(s) => K::Exact(s.clone()),
            ir::StringMatch::Prefix(s) => K::Prefix(s.clone()),
            ir::StringMatch::Suffix(s) => K::Suffix(s.clone()),
            ir::StringMatch::Regex(s) => K::Regex(s.clone()),
            ir::StringMatch::Range { start, end } => K::Range(pb::Range {
                start: *start,
                end: *end,
            }),
            ir::StringMatch::Present => K::Present(true),
        }),
    }
}

fn kv_to(m: &ir::KeyValueMatch) -> pb::KeyValueMatch {
    pb::KeyValueMatch {
        name: m.name.clone(),
        r#match: Some(string_match_to(&m.matcher)),
        invert: m.invert,
    }
}

impl From<&ir::Route> for pb::Route {
    fn from(r: &ir::Route) -> Self {
        let m = &r.matcher;
        pb::Route {
            name: r.name.clone(),
            r#match: Some(pb::RouteMatch {
                path: m.path.as_ref().map(|p| pb::PathMatch {
                    kind: Some(match p {
                        ir::PathMatch::Prefix(s) => path_match::Kind::Prefix(s.clone()),
                        ir::PathMatch::Exact(s) => path_match::Kind::Exact(s.clone()),
                        ir::PathMatch::Regex(s) => path_match::Kind::Regex(s.clone()),
                    }),
                }),
                method: m.method.clone().unwrap_or_default(),
                headers: m.headers.iter().map(kv_to).collect(),
                query_parameters: m.query_parameters.iter().map(kv_to).collect(),
                port: m.port.map(u32::from).unwrap_or(0),
                scheme: m.scheme.clone().unwrap_or_default(),
                cookies: m.cookies.iter().map(kv_to).collect(),
            }),
            action: Some(match &r.action {
                ir::RouteAction::Forward(f) => route::Action::Forward(pb::ForwardAction {
                    clusters: weighted_to(&f.clusters),
                    rewrite: rewrite_to(&f.rewrite),
                    timeout_ms: f.timeout_ms.unwrap_or(0),
                    retry: f.retry.as_ref().map(retry_to),
                    idle_timeout_ms: f.idle_timeout_ms.unwrap_or(0),
                    unresolved_weight: f.unresolved_weight,
                }),
                ir::RouteAction::Delegate(d) => route::Action::Delegate(pb::DelegateAction {
                    route_table: d.route_table.clone(),
                    rewrite: rewrite_to(&d.rewrite),
                }),
                ir::RouteAction::DirectResponse(d) => {
                    route::Action::DirectResponse(pb::DirectResponse {
                        status: u32::from(d.status),
                        body: d.body.clone(),
                    })
                }
                ir::RouteAction::Redirect(r) => route::Action::Redirect(redirect_to(r)),
            }),
            request_headers: header_mods_to(&r.request_headers),
            response_headers: header_mods_to(&r.response_headers),
            mirrors: r
                .mirrors
                .iter()
                .map(|m| pb::Mirror {
                    cluster: m.cluster.clone(),
                    percent: m.percent,
                })
                .collect(),
            cors: r.cors.as_deref().map(cors_to),
            access: r.access.as_deref().map(|a| pb::ClientAccess {
                allow: a.allow.clone(),
                deny: a.deny.clone(),
            }),
            client_limits: r.client_limits.as_deref().map(client_limits_to),
            max_request_body_bytes: r.max_request_body_bytes,
        }
    }
}

impl From<&ir::Cluster> for pb::Cluster {
    fn from(c: &ir::Cluster) -> Self {
        pb::Cluster {
            name: c.name.clone(),
            protocol: protocol_to(c.protocol),
            lb_policy: lb_policy_to(c.lb_policy),
            connect_timeout_ms: c.connect_timeout_ms,
            tls: c.tls.as_ref().map(tls_upstream_to),
            hash_on: c.hash_on.as_ref().map(hash_on_to),
            health_check: c.health_check.as_ref().map(health_check_to),
            outlier_detection: c.outlier_detection.as_ref().map(outlier_to),
            circuit_breakers: c.circuit_breakers.as_ref().map(breakers_to),
            idle_timeout_ms: c.idle_timeout_ms.unwrap_or(0),
            request_timeout_ms: c.request_timeout_ms.unwrap_or(0),
            tcp_idle_timeout_ms: c.tcp_idle_timeout_ms,
            send_timeout_ms: c.send_timeout_ms.unwrap_or(0),
        }
    }
}

impl From<&ir::ClusterEndpoints> for pb::ClusterEndpoints {
    fn from(e: &ir::ClusterEndpoints) -> Self {
        pb::ClusterEndpoints {
            cluster: e.cluster.clone(),
            endpoints: e
                .endpoints
                .iter()
                .map(|ep| pb::Endpoint {
                    address: ep.address.clone(),
                    port: u32::from(ep.port),
                    weight: ep.weight,
                })
                .collect(),
        }
    }
}

// === decode: proto → IR ===

struct Ctx<'a> {
    resource: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: impl Into<String>, reason: impl Into<String>) -> InvalidResource {
        InvalidResource {
            resource: self.resource.to_string(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    fn port(&self, path: &str, p: u32, allow_zero: bool) -> Result<u16, InvalidResource> {
        match u16::try_from(p) {
            Ok(0) if !allow_zero => Err(self.err(path, "port must be in 1..=65535")),
            Ok(p) => Ok(p),
            Err(_) => Err(self.err(path, format!("port {p} is out of range"))),
        }
    }

    fn protocol(&self, path: &str, p: i32) -> Result<ir::Protocol, InvalidResource> {
        match pb::Protocol::try_from(p) {
            Ok(pb::Protocol::Http) => Ok(ir::Protocol::Http),
            Ok(pb::Protocol::Http2) => Ok(ir::Protocol::Http2),
            Ok(pb::Protocol::Grpc) => Ok(ir::Protocol::Grpc),
            Ok(pb::Protocol::Tcp) => Ok(ir::Protocol::Tcp),
            _ => Err(self.err(path, format!("unknown protocol {p}"))),
        }
    }
}

impl TryFrom<pb::Listener> for ir::Listener {
    type Error = InvalidResource;
    fn try_from(l: pb::Listener) -> Result<Self, Self::Error> {
        let key = Kind::Listener.key(&l.name);
        let cx = Ctx { resource: &key };
        let tls = l.tls.map(|t| tls_listener_from(&cx, t)).transpose()?;
        let tcp_proxy = l.tcp_proxy.map(|t| tcp_proxy_from(&cx, t)).transpose()?;
        Ok(ir::Listener {
            port: cx.port("port", l.port, false)?,
            protocol: cx.protocol("protocol", l.protocol)?,
            access_log: l.access_log.map(|a| access_log_from(&cx, a)).transpose()?,
            name: l.name,
            address: l.address,
            route_table: l.route_table,
            tls,
            tcp_proxy,
        })
    }
}

impl TryFrom<pb::RouteTable> for ir::RouteTable {
    type Error = InvalidResource;
    fn try_from(t: pb::RouteTable) -> Result<Self, Self::Error> {
        let key = Kind::RouteTable.key(&t.name);
        let cx = Ctx { resource: &key };
        let mut vhosts = Vec::with_capacity(t.virtual_hosts.len());
        for (i, v) in t.virtual_hosts.into_iter().enumerate() {
            let p = format!("virtualHosts[{i}]");
            let mut hosts = Vec::with_capacity(v.hosts.len());
            for (j, h) in v.hosts.into_iter().enumerate() {
                hosts.push(match h.kind {
                    Some(host_match::Kind::Any(_)) => ir::HostMatch::Any,
                    Some(host_match::Kind::Exact(s)) => ir::HostMatch::Exact(s),
                    Some(host_match::Kind::Suffix(s)) => ir::HostMatch::Suffix(s),
                    Some(host_match::Kind::Wildcard(s)) => ir::HostMatch::Wildcard(s),
                    None => return Err(cx.err(format!("{p}.hosts[{j}]"), "empty host match")),
                });
            }
            let mut routes = Vec::with_capacity(v.routes.len());
            for (j, r) in v.routes.into_iter().enumerate() {
                routes.push(route_from(&cx, &format!("{p}.routes[{j}]"), r)?);
            }
            vhosts.push(ir::VirtualHost {
                name: v.name,
                hosts,
                routes,
            });
        }
        Ok(ir::RouteTable {
            name: t.name,
            virtual_hosts: vhosts,
        })
    }
}

fn rewrite_from(
    cx: &Ctx,
    path: &str,
    r: Option<pb::Rewrite>,
) -> Result<ir::Rewrite, InvalidResource> {
    let Some(r) = r else {
        return Ok(ir::Rewrite::default());
    };
    let regex = match (r.regex_pattern, r.regex_substitution) {
        (None, None) => None,
        (Some(pattern), Some(substitution)) => Some(ir::RegexRewrite {
            pattern,
            substitution,
        }),
        (Some(_), None) => {
            return Err(cx.err(
                format!("{path}.regexSubstitution"),
                "a regex rewrite needs a substitution",
            ));
        }
        (None, Some(_)) => {
            return Err(cx.err(
                format!("{path}.regexPattern"),
                "a regex rewrite needs a pattern",
            ));
        }
    };
    Ok(ir::Rewrite {
        prefix: r.prefix,
        full_path: r.full_path,
        host: r.host,
        regex,
    })
}

fn kv_from(
    cx: &Ctx,
    path: &str,
    m: pb::KeyValueMatch,
) -> Result<ir::KeyValueMatch, InvalidResource> {
    use string_match::Kind as K;
    let matcher = match m.r#match.and_then(|m| m.kind) {
        Some(K::Exact(s)) => ir::StringMatch::Exact(s),
        Some(K::Prefix(s)) => ir::StringMatch::Prefix(s),
        Some(K::Suffix(s)) => ir::StringMatch::Suffix(s),
        Some(K::Regex(s)) => ir::StringMatch::Regex(s),
        Some(K::Range(r)) => ir::StringMatch::Range {
            start: r.start,
            end: r.end,
        },
        Some(K::Present(_)) => ir::StringMatch::Present,
        None => return Err(cx.err(format!("{path}.match"), "empty match")),
    };
    if m.name.is_empty() {
        return Err(cx.err(format!("{path}.name"), "name is empty"));
    }
    Ok(ir::KeyValueMatch {
        name: m.name,
        matcher,
        invert: m.invert,
    })
}

fn route_from(cx: &Ctx, path: &str, r: pb::Route) -> Result<ir::Route, InvalidResource> {
    let m = r.r#match.unwrap_or_default();
    let matcher = ir::RouteMatch {
        path: match m.path.and_then(|p| p.kind) {
            Some(path_match::Kind::Prefix(s)) => Some(ir::PathMatch::Prefix(s)),
            Some(path_match::Kind::Exact(s)) => Some(ir::PathMatch::Exact(s)),
            Some(path_match::Kind::Regex(s)) => Some(ir::PathMatch::Regex(s)),
            None => None,
        },
        method: (!m.method.is_empty()).then_some(m.method),
        headers: m
            .headers
            .into_iter()
            .enumerate()
            .map(|(i, h)| kv_from(cx, &format!("{path}.match.headers[{i}]"), h))
            .collect::<Result<_, _>>()?,
        query_parameters: m
            .query_parameters
            .into_iter()
            .enumerate()
            .map(|(i, h)| kv_from(cx, &format!("{path}.match.queryParameters[{i}]"), h))
            .collect::<Result<_, _>>()?,
        port: match m.port {
            0 => None,
            p => Some(cx.port(&format!("{path}.match.port"), p, false)?),
        },
        scheme: (!m.scheme.is_empty()).then_some(m.scheme),
        cookies: m
            .cookies
            .into_iter()
            .enumerate()
            .map(|(i, c)| kv_from(cx, &format!("{path}.match.cookies[{i}]"), c))
            .collect::<Result<_, _>>()?,
    };
    let action = match r.action {
        Some(route::Action::Forward(f)) => {
            if f.clusters.is_empty() {
                return Err(cx.err(
                    format!("{path}.forward.clusters"),
                    "no cluster to forward to",
                ));
            }
            ir::RouteAction::Forward(ir::ForwardAction {
                clusters: f
                    .clusters
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let at = format!("{path}.forward.clusters[{i}].headers");
                        let headers = match c.headers {
                            None => None,
                            Some(h) => Some(Box::new(ir::BackendHeaders {
                                request: header_mods_from(cx, &format!("{at}.request"), h.request)?,
                                response: header_mods_from(
                                    cx,
                                    &format!("{at}.response"),
                                    h.response,
                                )?,
                            })),
                        };
                        Ok(ir::WeightedCluster {
                            headers,
                            ..ir::WeightedCluster::new(c.cluster, c.weight)
                        })
                    })
                    .collect::<Result<_, InvalidResource>>()?,
                rewrite: rewrite_from(cx, &format!("{path}.forward.rewrite"), f.rewrite)?,
                timeout_ms: (f.timeout_ms != 0).then_some(f.timeout_ms),
                retry: f
                    .retry
                    .map(|r| retry_from(cx, &format!("{path}.forward.retry"), r))
                    .transpose()?,
                idle_timeout_ms: (f.idle_timeout_ms != 0).then_some(f.idle_timeout_ms),
                unresolved_weight: f.unresolved_weight,
            })
        }
        Some(route::Action::Delegate(d)) => ir::RouteAction::Delegate(ir::DelegateAction {
            route_table: d.route_table,
            rewrite: rewrite_from(cx, &format!("{path}.delegate.rewrite"), d.rewrite)?,
        }),
        Some(route::Action::DirectResponse(d)) => {
            let status = u16::try_from(d.status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| {
                    cx.err(
                        format!("{path}.directResponse.status"),
                        format!("{} is not an HTTP status", d.status),
                    )
                })?;
            ir::RouteAction::DirectResponse(ir::DirectResponse {
                status,
                body: d.body,
            })
        }
        Some(route::Action::Redirect(rd)) => {
            ir::RouteAction::Redirect(redirect_from(cx, &format!("{path}.redirect"), rd)?)
        }
        None => return Err(cx.err(format!("{path}.action"), "route has no action")),
    };
    let mut mirrors = Vec::with_capacity(r.mirrors.len());
    for (i, m) in r.mirrors.into_iter().enumerate() {
        if m.cluster.is_empty() {
            return Err(cx.err(format!("{path}.mirrors[{i}].cluster"), "cluster is empty"));
        }
        if m.percent > 100 {
            return Err(cx.err(
                format!("{path}.mirrors[{i}].percent"),
                format!("{} is not a percentage (0..=100)", m.percent),
            ));
        }
        mirrors.push(ir::Mirror {
            cluster: m.cluster,
            percent: m.percent,
        });
    }
    Ok(ir::Route {
        name: r.name,
        matcher,
        action,
        request_headers: header_mods_from(
            cx,
            &format!("{path}.requestHeaders"),
            r.request_headers,
        )?,
        response_headers: header_mods_from(
            cx,
            &format!("{path}.responseHeaders"),
            r.response_headers,
        )?,
        mirrors,
        cors: r.cors.map(|c| Box::new(cors_from(c))),
        access: r.access.map(|a| {
            Box::new(ir::ClientAccess {
                allow: a.allow,
                deny: a.deny,
            })
        }),
        client_limits: r
            .client_limits
            .map(|l| client_limits_from(cx, &format!("{path}.clientLimits"), l))
            .transpose()?
            .map(Box::new),
        max_request_body_bytes: r.max_request_body_bytes,
    })
}

impl TryFrom<pb::Cluster> for ir::Cluster {
    type Error = InvalidResource;
    fn try_from(c: pb::Cluster) -> Result<Self, Self::Error> {
        let key = Kind::Cluster.key(&c.name);
        let cx = Ctx { resource: &key };
        let tls = c.tls.map(|t| tls_upstream_from(&cx, t)).transpose()?;
        let lb_policy = lb_policy_from(&cx, c.lb_policy)?;
        let hash_on = c.hash_on.map(|h| hash_on_from(&cx, h)).transpose()?;
        let hashing = matches!(lb_policy, ir::LbPolicy::RingHash | ir::LbPolicy::Maglev);
        if hashing && hash_on.is_none() {
            return Err(cx.err("hashOn", "required by the ringHash and maglev policies"));
        }
        if !hashing && hash_on.is_some() {
            return Err(cx.err(
                "hashOn",
                "only the ringHash and maglev policies hash requests",
            ));
        }
        Ok(ir::Cluster {
            protocol: cx.protocol("protocol", c.protocol)?,
            lb_policy,
            connect_timeout_ms: c.connect_timeout_ms,
            hash_on,
            health_check: c
                .health_check
                .map(|h| health_check_from(&cx, h))
                .transpose()?,
            outlier_detection: c
                .outlier_detection
                .map(|o| outlier_from(&cx, o))
                .transpose()?,
            circuit_breakers: c
                .circuit_breakers
                .map(|b| breakers_from(&cx, b))
                .transpose()?,
            idle_timeout_ms: (c.idle_timeout_ms != 0).then_some(c.idle_timeout_ms),
            request_timeout_ms: (c.request_timeout_ms != 0).then_some(c.request_timeout_ms),
            tcp_idle_timeout_ms: c.tcp_idle_timeout_ms,
            send_timeout_ms: (c.send_timeout_ms != 0).then_some(c.send_timeout_ms),
            name: c.name,
            tls,
        })
    }
}

impl TryFrom<pb::ClusterEndpoints> for ir::ClusterEndpoints {
    type Error = InvalidResource;
    fn try_from(e: pb::ClusterEndpoints) -> Result<Self, Self::Error> {
        let key = Kind::Endpoints.key(&e.cluster);
        let cx = Ctx { resource: &key };
        let mut endpoints = Vec::with_capacity(e.endpoints.len());
        for (i, ep) in e.endpoints.into_iter().enumerate() {
            if ep.address.parse::<std::net::IpAddr>().is_err() {
                return Err(cx.err(
                    format!("endpoints[{i}].address"),
                    format!("{:?} is not an IP address", ep.address),
                ));
            }
            endpoints.push(ir::Endpoint {
                port: cx.port(&format!("endpoints[{i}].port"), ep.port, false)?,
                address: ep.address,
                weight: ep.weight,
            });
        }
        Ok(ir::ClusterEndpoints {
            cluster: e.cluster,
            endpoints,
        })
    }
}

// === routing filters: encode and decode ===

fn redirect_to(r: &ir::Redirect) -> pb::Redirect {
    use pb::redirect::Path as P;
    pb::Redirect {
        scheme: r.scheme.clone(),
        host: r.host.clone(),
        port: r.port.map(u32::from).unwrap_or(0),
        path: r.path.as_ref().map(|p| match p {
            ir::RedirectPath::FullPath(s) => P::FullPath(s.clone()),
            ir::RedirectPath::Prefix(s) => P::Prefix(s.clone()),
        }),
        status: u32::from(r.status),
        drop_query: r.drop_query,
    }
}

/// Redirect statuses the IR accepts.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

fn redirect_from(cx: &Ctx, path: &str, r: pb::Redirect) -> Result<ir::Redirect, InvalidResource> {
    use pb::redirect::Path as P;
    let status = u16::try_from(r.status)
        .ok()
        .filter(|s| REDIRECT_STATUSES.contains(s))
        .ok_or_else(|| {
            cx.err(
                format!("{path}.status"),
                format!(
                    "{} is not a redirect status (301, 302, 303, 307, 308)",
                    r.status
                ),
            )
        })?;
    Ok(ir::Redirect {
        scheme: r.scheme,
        host: r.host,
        port: match r.port {
            0 => None,
            p => Some(cx.port(&format!("{path}.port"), p, false)?),
        },
        path: r.path.map(|p| match p {
            P::FullPath(s) => ir::RedirectPath::FullPath(s),
            P::Prefix(s) => ir::RedirectPath::Prefix(s),
        }),
        status,
        drop_query: r.drop_query,
    })
}

fn header_mods_to(m: &ir::HeaderMods) -> Option<pb::HeaderMods> {
    let pairs = |v: &[ir::HeaderPair]| {
        v.iter()
            .map(|h| pb::HeaderPair {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    (!m.is_empty()).then(|| pb::HeaderMods {
        add: pairs(&m.add),
        set: pairs(&m.set),
        remove: m.remove.clone(),
    })
}

fn header_mods_from(
    cx: &Ctx,
    path: &str,
    m: Option<pb::HeaderMods>,
) -> Result<ir::HeaderMods, InvalidResource> {
    let Some(m) = m else {
        return Ok(ir::HeaderMods::default());
    };
    let pairs = |field: &str, v: Vec<pb::HeaderPair>| {
        v.into_iter()
            .enumerate()
            .map(|(i, h)| {
                if h.name.is_empty() {
                    return Err(cx.err(format!("{path}.{field}[{i}].name"), "name is empty"));
                }
                Ok(ir::HeaderPair {
                    name: h.name,
                    value: h.value,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let add = pairs("add", m.add)?;
    let set = pairs("set", m.set)?;
    if let Some(i) = m.remove.iter().position(String::is_empty) {
        return Err(cx.err(format!("{path}.remove[{i}]"), "name is empty"));
    }
    Ok(ir::HeaderMods {
        add,
        set,
        remove: m.remove,
    })
}

fn cors_to(c: &ir::Cors) -> pb::Cors {
    pb::Cors {
        allow_origins: c.allow_origins.clone(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_seconds: c.max_age_seconds,
        allow_credentials: c.allow_credentials,
    }
}

fn cors_from(c: pb::Cors) -> ir::Cors {
    ir::Cors {
        allow_origins: c.allow_origins,
        allow_methods: c.allow_methods,
        allow_headers: c.allow_headers,
        expose_headers: c.expose_headers,
        max_age_seconds: c.max_age_seconds,
        allow_credentials: c.allow_credentials,
    }
}

fn client_limits_to(l: &ir::ClientLimits) -> pb::ClientLimits {
    pb::ClientLimits {
        zone: l.zone.clone(),
        rates: l
            .rates
            .iter()
            .map(|r| pb::RateLimit {
                requests: r.requests,
                period_seconds: r.period_seconds,
                burst: r.burst,
            })
            .collect(),
        max_concurrent: l.max_concurrent,
        exempt: l.exempt.clone(),
        status: u32::from(l.status),
    }
}

fn client_limits_from(
    cx: &Ctx,
    path: &str,
    l: pb::ClientLimits,
) -> Result<ir::ClientLimits, InvalidResource> {
    let status = u16::try_from(l.status)
        .ok()
        .filter(|s| (400..600).contains(s))
        .ok_or_else(|| {
            cx.err(
                format!("{path}.status"),
                format!("{} is not an HTTP error status (400..=599)", l.status),
            )
        })?;
    Ok(ir::ClientLimits {
        zone: l.zone,
        rates: l
            .rates
            .into_iter()
            .map(|r| ir::RateLimit {
                requests: r.requests,
                period_seconds: r.period_seconds,
                burst: r.burst,
            })
            .collect(),
        max_concurrent: l.max_concurrent,
        exempt: l.exempt,
        status,
    })
}

// === TLS ===

fn tls_listener_to(t: &ir::ListenerTls) -> pb::TlsListener {
    pb::TlsListener {
        mode: (match t.mode {
            ir::TlsMode::Strict => pb::TlsMode::Strict,
            ir::TlsMode::Permissive => pb::TlsMode::Permissive,
            ir::TlsMode::Disabled => pb::TlsMode::Disabled,
        }) as i32,
        certificates: t
            .certificates
            .iter()
            .map(|c| pb::TlsCertificate {
                certificate_chain: c.certificate_chain.clone(),
                private_key: c.private_key.clone(),
                server_names: c.server_names.clone(),
            })
            .collect(),
        client_validation: t.client_validation.as_ref().map(|v| pb::TlsValidation {
            trust_chain: v.trust_chain.clone(),
            subject_alternative_names: v.subject_alternative_names.clone(),
        }),
        detect_misdirected: t.detect_misdirected,
    }
}

fn tls_upstream_to(t: &ir::UpstreamTls) -> pb::TlsUpstream {
    pb::TlsUpstream {
        server_name: t.server_name.clone(),
        trust_chain: t.trust_chain.clone(),
        subject_alternative_names: t.subject_alternative_names.clone(),
        client_certificate: t
            .client_certificate
            .as_ref()
            .map(|c| pb::TlsClientCertificate {
                certificate_chain: c.certificate_chain.clone(),
                private_key: c.private_key.clone(),
            }),
        skip_verification: t.skip_verification,
    }
}

fn tls_listener_from(cx: &Ctx, t: pb::TlsListener) -> Result<ir::ListenerTls, InvalidResource> {
    let mode = match pb::TlsMode::try_from(t.mode) {
        Ok(pb::TlsMode::Strict) => ir::TlsMode::Strict,
        Ok(pb::TlsMode::Permissive) => ir::TlsMode::Permissive,
        Ok(pb::TlsMode::Disabled) => ir::TlsMode::Disabled,
        _ => return Err(cx.err("tls.mode", format!("unknown TLS mode {}", t.mode))),
    };
    let tls = ir::ListenerTls {
        mode,
        certificates: t
            .certificates
            .into_iter()
            .map(|c| ir::TlsCertificate {
                certificate_chain: c.certificate_chain,
                private_key: c.private_key,
                server_names: c.server_names,
            })
            .collect(),
        client_validation: t.client_validation.map(|v| ir::TlsValidation {
            trust_chain: v.trust_chain,
            subject_alternative_names: v.subject_alternative_names,
        }),
        detect_misdirected: t.detect_misdirected,
    };
    tls.check()
        .map_err(|e| cx.err(format!("tls.{}", e.path), e.reason))?;
    Ok(tls)
}

fn tls_upstream_from(cx: &Ctx, t: pb::TlsUpstream) -> Result<ir::UpstreamTls, InvalidResource> {
    let tls = ir::UpstreamTls {
        server_name: t.server_name,
        trust_chain: t.trust_chain,
        subject_alternative_names: t.subject_alternative_names,
        client_certificate: t.client_certificate.map(|c| ir::TlsClientCertificate {
            certificate_chain: c.certificate_chain,
            private_key: c.private_key,
        }),
        skip_verification: t.skip_verification,
    };
    tls.check()
        .map_err(|e| cx.err(format!("tls.{}", e.path), e.reason))?;
    Ok(tls)
}

// === resilience: load balancing, retries, health checks, outlier detection, circuit breakers ===

fn lb_policy_to(p: ir::LbPolicy) -> i32 {
    (match p {
        ir::LbPolicy::RoundRobin => pb::LbPolicy::RoundRobin,
        ir::LbPolicy::LeastRequest => pb::LbPolicy::LeastRequest,
        ir::LbPolicy::Random => pb::LbPolicy::Random,
        ir::LbPolicy::RingHash => pb::LbPolicy::RingHash,
        ir::LbPolicy::Maglev => pb::LbPolicy::Maglev,
        ir::LbPolicy::PeakEwma => pb::LbPolicy::PeakEwma,
    }) as i32
}

fn lb_policy_from(cx: &Ctx, p: i32) -> Result<ir::LbPolicy, InvalidResource> {
    match pb::LbPolicy::try_from(p) {
        Ok(pb::LbPolicy::RoundRobin | pb::LbPolicy::Unspecified) => Ok(ir::LbPolicy::RoundRobin),
        Ok(pb::LbPolicy::LeastRequest) => Ok(ir::LbPolicy::LeastRequest),
        Ok(pb::LbPolicy::Random) => Ok(ir::LbPolicy::Random),
        Ok(pb::LbPolicy::RingHash) => Ok(ir::LbPolicy::RingHash),
        Ok(pb::LbPolicy::Maglev) => Ok(ir::LbPolicy::Maglev),
        Ok(pb::LbPolicy::PeakEwma) => Ok(ir::LbPolicy::PeakEwma),
        Err(_) => Err(cx.err("lbPolicy", format!("unknown policy {p}"))),
    }
}

fn hash_on_to(h: &ir::HashOn) -> pb::LbHashOn {
    use pb::lb_hash_on::Kind as K;
    pb::LbHashOn {
        kind: Some(match h {
            ir::HashOn::SourceIp => K::SourceIp(true),
            ir::HashOn::Header { name } => K::Header(pb::LbHashHeader { name: name.clone() }),
            ir::HashOn::Cookie {
                name,
                ttl_seconds,
                path,
                domain,
                secure,
                same_site,
            } => K::Cookie(pb::LbHashCookie {
                name: name.clone(),
                ttl_seconds: *ttl_seconds,
                path: path.clone().unwrap_or_default(),
                domain: domain.clone().unwrap_or_default(),
                secure: *secure,
                same_site: same_site.clone().unwrap_or_default(),
            }),
            ir::HashOn::Template { parts } => K::Template(pb::LbHashTemplate {
                parts: parts.iter().map(hash_part_to).collect(),
            }),
        }),
    }
}

fn hash_part_to(p: &ir::HashPart) -> pb::LbHashPart {
    use pb::lb_hash_part::Part as P;
    pb::LbHashPart {
        part: Some(match p {
            ir::HashPart::Literal(s) => P::Literal(s.clone()),
            ir::HashPart::ClientIp => P::ClientIp(true),
            ir::HashPart::Host => P::Host(true),
            ir::HashPart::Path => P::Path(true),
            ir::HashPart::RequestUri => P::RequestUri(true),
            ir::HashPart::Query => P::Query(true),
            ir::HashPart::Header(n) => P::Header(n.clone()),
            ir::HashPart::QueryParam(n) => P::QueryParam(n.clone()),
            ir::HashPart::Cookie(n) => P::Cookie(n.clone()),
        }),
    }
}

fn hash_part_from(cx: &Ctx, i: usize, p: pb::LbHashPart) -> Result<ir::HashPart, InvalidResource> {
    use pb::lb_hash_part::Part as P;
    let named = |kind: &str, n: String| {
        if n.is_empty() {
            Err(cx.err(
                format!("hashOn.template.parts[{i}].{kind}"),
                "name is empty",
            ))
        } else {
            Ok(n)
        }
    };
    Ok(match p.part {
        Some(P::Literal(s)) => ir::HashPart::Literal(s),
        Some(P::ClientIp(_)) => ir::HashPart::ClientIp,
        Some(P::Host(_)) => ir::HashPart::Host,
        Some(P::Path(_)) => ir::HashPart::Path,
        Some(P::RequestUri(_)) => ir::HashPart::RequestUri,
        Some(P::Query(_)) => ir::HashPart::Query,
        Some(P::Header(n)) => ir::HashPart::Header(named("header", n)?),
        Some(P::QueryParam(n)) => ir::HashPart::QueryParam(named("queryParam", n)?),
        Some(P::Cookie(n)) => ir::HashPart::Cookie(named("cookie", n)?),
        None => return Err(cx.err(format!("hashOn.template.parts[{i}]"), "empty part")),
    })
}

fn hash_on_from(cx: &Ctx, h: pb::LbHashOn) -> Result<ir::HashOn, InvalidResource> {
    use pb::lb_hash_on::Kind as K;
    match h.kind {
        Some(K::SourceIp(_)) => Ok(ir::HashOn::SourceIp),
        Some(K::Header(hd)) => {
            if hd.name.is_empty() {
                return Err(cx.err("hashOn.header.name", "name is empty"));
            }
            Ok(ir::HashOn::Header { name: hd.name })
        }
        Some(K::Cookie(c)) => {
            if c.name.is_empty() {
                return Err(cx.err("hashOn.cookie.name", "name is empty"));
            }
            Ok(ir::HashOn::Cookie {
                name: c.name,
                ttl_seconds: c.ttl_seconds,
                path: (!c.path.is_empty()).then_some(c.path),
                domain: (!c.domain.is_empty()).then_some(c.domain),
                secure: c.secure,
                same_site: (!c.same_site.is_empty()).then_some(c.same_site),
            })
        }
        Some(K::Template(t)) => {
            if t.parts.is_empty() {
                return Err(cx.err("hashOn.template.parts", "no parts"));
            }
            let parts = t
                .parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| hash_part_from(cx, i, p))
                .collect::<Result<_, _>>()?;
            Ok(ir::HashOn::Template { parts })
        }
        None => Err(cx.err("hashOn", "empty hash key")),
    }
}

fn retry_on_to(r: ir::RetryOn) -> pb::RetryOn {
    match r {
        ir::RetryOn::ServerError => pb::RetryOn::ServerError,
        ir::RetryOn::GatewayError => pb::RetryOn::GatewayError,
        ir::RetryOn::ClientError => pb::RetryOn::ClientError,
        ir::RetryOn::StreamError => pb::RetryOn::StreamError,
        ir::RetryOn::ConnectionError => pb::RetryOn::ConnectionError,
        ir::RetryOn::Cancelled => pb::RetryOn::Cancelled,
        ir::RetryOn::DeadlineExceeded => pb::RetryOn::DeadlineExceeded,
        ir::RetryOn::Internal => pb::RetryOn::Internal,
        ir::RetryOn::ResourceExhausted => pb::RetryOn::ResourceExhausted,
        ir::RetryOn::Unavailable => pb::RetryOn::Unavailable,
    }
}

fn retry_to(r: &ir::RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_retries: r.max_retries,
        per_retry_timeout_ms: r.per_retry_timeout_ms.unwrap_or(0),
        retry_on: r.retry_on.iter().map(|e| retry_on_to(*e) as i32).collect(),
    }
}

fn retry_from(
    cx: &Ctx,
    path: &str,
    r: pb::RetryPolicy,
) -> Result<ir::RetryPolicy, InvalidResource> {
    let mut retry_on = Vec::with_capacity(r.retry_on.len());
    for (i, e) in r.retry_on.iter().enumerate() {
        retry_on.push(match pb::RetryOn::try_from(*e) {
            Ok(pb::RetryOn::ServerError) => ir::RetryOn::ServerError,
            Ok(pb::RetryOn::GatewayError) => ir::RetryOn::GatewayError,
            Ok(pb::RetryOn::ClientError) => ir::RetryOn::ClientError,
            Ok(pb::RetryOn::StreamError) => ir::RetryOn::StreamError,
            Ok(pb::RetryOn::ConnectionError) => ir::RetryOn::ConnectionError,
            Ok(pb::RetryOn::Cancelled) => ir::RetryOn::Cancelled,
            Ok(pb::RetryOn::DeadlineExceeded) => ir::RetryOn::DeadlineExceeded,
            Ok(pb::RetryOn::Internal) => ir::RetryOn::Internal,
            Ok(pb::RetryOn::ResourceExhausted) => ir::RetryOn::ResourceExhausted,
            Ok(pb::RetryOn::Unavailable) => ir::RetryOn::Unavailable,
            Ok(pb::RetryOn::Unspecified) | Err(_) => {
                return Err(cx.err(
                    format!("{path}.retryOn[{i}]"),
                    format!("unknown retry event {e}"),
                ));
            }
        });
    }
    if retry_on.is_empty() {
        return Err(cx.err(format!("{path}.retryOn"), "no retry event"));
    }
    Ok(ir::RetryPolicy {
        max_retries: r.max_retries,
        per_retry_timeout_ms: (r.per_retry_timeout_ms != 0).then_some(r.per_retry_timeout_ms),
        retry_on,
    })
}

fn health_check_to(h: &ir::HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        protocol: protocol_to(h.protocol),
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        path: h.path.clone().unwrap_or_default(),
        port: h.port.map(u32::from).unwrap_or(0),
    }
}

fn health_check_from(cx: &Ctx, h: pb::HealthCheck) -> Result<ir::HealthCheck, InvalidResource> {
    let protocol = cx.protocol("healthCheck.protocol", h.protocol)?;
    for (field, v) in [("intervalMs", h.interval_ms), ("timeoutMs", h.timeout_ms)] {
        if v == 0 {
            return Err(cx.err(format!("healthCheck.{field}"), "must be above 0"));
        }
    }
    for (field, v) in [
        ("healthyThreshold", h.healthy_threshold),
        ("unhealthyThreshold", h.unhealthy_threshold),
    ] {
        if v == 0 {
            return Err(cx.err(format!("healthCheck.{field}"), "must be at least 1"));
        }
    }
    let path = (!h.path.is_empty()).then_some(h.path);
    if let Some(p) = &path
        && !p.starts_with('/')
    {
        return Err(cx.err(
            "healthCheck.path",
            format!("{p:?} does not start with \"/\""),
        ));
    }
    if matches!(protocol, ir::Protocol::Http | ir::Protocol::Http2) && path.is_none() {
        return Err(cx.err("healthCheck.path", "required for http and http2 checks"));
    }
    Ok(ir::HealthCheck {
        protocol,
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        path,
        port: match h.port {
            0 => None,
            p => Some(cx.port("healthCheck.port", p, false)?),
        },
    })
}

fn outlier_to(o: &ir::OutlierDetection) -> pb::OutlierDetection {
    pb::OutlierDetection {
        max_server_errors: o.max_server_errors,
        interval_ms: o.interval_ms,
        base_ejection_duration_ms: o.base_ejection_duration_ms,
        max_ejection_percent: o.max_ejection_percent,
    }
}

fn outlier_from(
    cx: &Ctx,
    o: pb::OutlierDetection,
) -> Result<ir::OutlierDetection, InvalidResource> {
    if o.max_server_errors == 0 {
        return Err(cx.err("outlierDetection.maxServerErrors", "must be at least 1"));
    }
    if o.max_ejection_percent > 100 {
        return Err(cx.err(
            "outlierDetection.maxEjectionPercent",
            format!("{} is above 100", o.max_ejection_percent),
        ));
    }
    Ok(ir::OutlierDetection {
        max_server_errors: o.max_server_errors,
        interval_ms: o.interval_ms,
        base_ejection_duration_ms: o.base_ejection_duration_ms,
        max_ejection_percent: o.max_ejection_percent,
    })
}

fn breakers_to(b: &ir::CircuitBreakers) -> pb::CircuitBreakers {
    pb::CircuitBreakers {
        max_connections: b.max_connections,
        max_pending_requests: b.max_pending_requests,
        max_requests: b.max_requests,
    }
}

fn breakers_from(cx: &Ctx, b: pb::CircuitBreakers) -> Result<ir::CircuitBreakers, InvalidResource> {
    for (field, v) in [
        ("maxConnections", b.max_connections),
        ("maxPendingRequests", b.max_pending_requests),
        ("maxRequests", b.max_requests),
    ] {
        if v == Some(0) {
            return Err(cx.err(format!("circuitBreakers.{field}"), "must be at least 1"));
        }
    }
    Ok(ir::CircuitBreakers {
        max_connections: b.max_connections,
        max_pending_requests: b.max_pending_requests,
        max_requests: b.max_requests,
    })
}

// === tcp proxying: encode and decode ===

fn weighted_to(clusters: &[ir::WeightedCluster]) -> Vec<pb::WeightedCluster> {
    clusters
        .iter()
        .map(|c| pb::WeightedCluster {
            cluster: c.cluster.clone(),
            weight: c.weight,
            headers: c.headers.as_ref().map(|h| {
                Box::new(pb::BackendHeaders {
                    request: header_mods_to(&h.request),
                    response: header_mods_to(&h.response),
                })
            }),
        })
        .collect()
}

fn tcp_proxy_to(t: &ir::TcpProxy) -> pb::TcpProxy {
    pb::TcpProxy {
        name: t.name.clone(),
        clusters: weighted_to(&t.clusters),
        idle_timeout_ms: t.idle_timeout_ms,
    }
}

fn tcp_proxy_from(cx: &Ctx, t: pb::TcpProxy) -> Result<ir::TcpProxy, InvalidResource> {
    if t.clusters.is_empty() {
        return Err(cx.err("tcpProxy.clusters", "no cluster to forward to"));
    }
    let mut clusters = Vec::with_capacity(t.clusters.len());
    for (i, c) in t.clusters.into_iter().enumerate() {
        if c.cluster.is_empty() {
            return Err(cx.err(
                format!("tcpProxy.clusters[{i}].cluster"),
                "cluster is empty",
            ));
        }
        clusters.push(ir::WeightedCluster::new(c.cluster, c.weight));
    }
    Ok(ir::TcpProxy {
        name: t.name,
        clusters,
        idle_timeout_ms: t.idle_timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ir::Snapshot {
        let mut s = ir::Snapshot {
            listeners: vec![ir::Listener {
                name: "http-8080".into(),
                address: String::new(),
                port: 8080,
                protocol: ir::Protocol::Http,
                route_table: "rt".into(),
                access_log: None,
                tls: None,
                tcp_proxy: None,
            }],
            route_tables: vec![ir::RouteTable {
                name: "rt".into(),
                virtual_hosts: vec![ir::VirtualHost {
                    name: "any".into(),
                    hosts: vec![
                        ir::HostMatch::Any,
                        ir::HostMatch::Suffix(".example.com".into()),
                        ir::HostMatch::Wildcard("example.org".into()),
                    ],
                    routes: vec![
                        ir::Route {
                            name: "r".into(),
                            matcher: ir::RouteMatch {
                                path: Some(ir::PathMatch::Prefix("/a".into())),
                                method: Some("GET".into()),
                                headers: vec![ir::KeyValueMatch {
                                    name: "x".into(),
                                    matcher: ir::StringMatch::Range { start: 1, end: 5 },
                                    invert: true,
                                }],
                                query_parameters: vec![],
                                port: Some(8080),
                                scheme: None,
                                cookies: vec![ir::KeyValueMatch {
                                    name: "session".into(),
                                    matcher: ir::StringMatch::Regex("[a-z]+".into()),
                                    invert: false,
                                }],
                            },
                            action: ir::RouteAction::Forward(ir::ForwardAction {
                                clusters: vec![ir::WeightedCluster {
                                    headers: Some(Box::new(ir::BackendHeaders {
                                        request: ir::HeaderMods {
                                            set: vec![ir::HeaderPair {
                                                name: "backend".into(),
                                                value: "c".into(),
                                            }],
                                            ..Default::default()
                                        },
                                        response: ir::HeaderMods {
                                            remove: vec!["server".into()],
                                            ..Default::default()
                                        },
                                    })),
                                    ..ir::WeightedCluster::new("c".into(), 1)
                                }],
                                rewrite: ir::Rewrite {
                                    regex: Some(ir::RegexRewrite {
                                        pattern: "^/a/(\\d+)".into(),
                                        substitution: "/b/${1}".into(),
                                    }),
                                    ..Default::default()
                                },
                                timeout_ms: Some(1500),
                                retry: Some(ir::RetryPolicy {
                                    max_retries: 3,
                                    per_retry_timeout_ms: Some(500),
                                    retry_on: vec![
                                        ir::RetryOn::ServerError,
                                        ir::RetryOn::Unavailable,
                                    ],
                                }),
                                idle_timeout_ms: Some(30_000),
                                unresolved_weight: 3,
                            }),
                            request_headers: ir::HeaderMods {
                                add: vec![ir::HeaderPair {
                                    name: "x-add".into(),
                                    value: "1".into(),
                                }],
                                set: vec![ir::HeaderPair {
                                    name: "x-set".into(),
                                    value: "2".into(),
                                }],
                                remove: vec!["x-remove".into()],
                            },
                            response_headers: ir::HeaderMods {
                                remove: vec!["server".into()],
                                ..Default::default()
                            },
                            mirrors: vec![ir::Mirror {
                                cluster: "c".into(),
                                percent: 50,
                            }],
                            cors: Some(Box::new(ir::Cors {
                                allow_origins: vec!["https://*.example.com".into()],
                                allow_methods: vec!["GET".into()],
                                allow_headers: vec!["x-token".into()],
                                expose_headers: vec!["x-trace".into()],
                                max_age_seconds: Some(600),
                                allow_credentials: true,
                            })),
                            access: Some(Box::new(ir::ClientAccess {
                                allow: vec!["10.0.0.0/8".into()],
                                deny: vec!["10.1.2.3".into()],
                            })),
                            client_limits: Some(Box::new(ir::ClientLimits {
                                zone: "ingress/shop/web".into(),
                                rates: vec![ir::RateLimit {
                                    requests: 5,
                                    period_seconds: 1,
                                    burst: 25,
                                }],
                                max_concurrent: Some(10),
                                exempt: vec!["192.168.0.0/16".into()],
                                status: 503,
                            })),
                            max_request_body_bytes: Some(0),
                        },
                        ir::Route::new(
                            "moved",
                            ir::RouteMatch::default(),
                            ir::RouteAction::Redirect(ir::Redirect {
                                scheme: Some("https".into()),
                                host: Some("new.example.com".into()),
                                port: Some(8443),
                                path: Some(ir::RedirectPath::Prefix("/new/".into())),
                                status: 308,
                                drop_query: false,
                            }),
                        ),
                    ],
                }],
            }],
            clusters: vec![ir::Cluster {
                name: "c".into(),
                protocol: ir::Protocol::Http2,
                lb_policy: ir::LbPolicy::RingHash,
                connect_timeout_ms: 1000,
                tls: None,
                hash_on: Some(ir::HashOn::Cookie {
                    name: "sticky".into(),
                    ttl_seconds: 3600,
                    path: Some("/".into()),
                    domain: None,
                    secure: false,
                    same_site: None,
                }),
                health_check: Some(ir::HealthCheck {
                    protocol: ir::Protocol::Grpc,
                    interval_ms: 5000,
                    timeout_ms: 2000,
                    healthy_threshold: 2,
                    unhealthy_threshold: 3,
                    path: None,
                    port: Some(9001),
                }),
                outlier_detection: Some(ir::OutlierDetection {
                    max_server_errors: 5,
                    interval_ms: 10_000,
                    base_ejection_duration_ms: 30_000,
                    max_ejection_percent: 50,
                }),
                circuit_breakers: Some(ir::CircuitBreakers {
                    max_connections: None,
                    max_pending_requests: None,
                    max_requests: Some(100),
                }),
                idle_timeout_ms: Some(60_000),
                request_timeout_ms: Some(15_000),
                tcp_idle_timeout_ms: None,
                send_timeout_ms: Some(30_000),
            }],
            endpoints: vec![ir::ClusterEndpoints {
                cluster: "c".into(),
                endpoints: vec![ir::Endpoint {
                    address: "::1".into(),
                    port: 9000,
                    weight: 1,
                }],
            }],
        };
        s.normalize();
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let wire = snapshot_to_resources(&s);
        assert_eq!(wire.len(), 4);
        let back = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn versions_follow_content() {
        let a = snapshot_to_resources(&sample());
        let mut changed = sample();
        changed.endpoints[0].endpoints[0].port = 9001;
        let b = snapshot_to_resources(&changed);
        assert_eq!(a[0].1.version, b[0].1.version, "listener unchanged");
        assert_ne!(a[3].1.version, b[3].1.version, "endpoints changed");
    }

    #[test]
    fn invalid_routing_filters_name_the_field() {
        let encode = |s: &ir::Snapshot| {
            snapshot_to_resources(s)
                .into_iter()
                .find(|(k, _)| k.starts_with("routeTable/"))
                .unwrap()
                .1
        };
        let mut s = sample();
        let ir::RouteAction::Redirect(r) = &mut s.route_tables[0].virtual_hosts[0].routes[1].action
        else {
            panic!("second route redirects")
        };
        r.status = 200;
        let err = resources_to_snapshot([&encode(&s)]).unwrap_err();
        assert_eq!(err.path, "virtualHosts[0].routes[1].redirect.status");

        let mut s = sample();
        s.route_tables[0].virtual_hosts[0].routes[0].mirrors[0].percent = 101;
        let err = resources_to_snapshot([&encode(&s)]).unwrap_err();
        assert_eq!(err.path, "virtualHosts[0].routes[0].mirrors[0].percent");

        let mut s = sample();
        s.route_tables[0].virtual_hosts[0].routes[0]
            .request_headers
            .set[0]
            .name
            .clear();
        let err = resources_to_snapshot([&encode(&s)]).unwrap_err();
        assert_eq!(
            err.path,
            "virtualHosts[0].routes[0].requestHeaders.set[0].name"
        );

        let mut wire = encode(&sample());
        let Some(pb::resource::Kind::RouteTable(t)) = &mut wire.kind else {
            panic!("a route table")
        };
        let Some(route::Action::Forward(f)) = &mut t.virtual_hosts[0].routes[0].action else {
            panic!("a forward")
        };
        f.rewrite.as_mut().unwrap().regex_substitution = None;
        let err = resources_to_snapshot([&wire]).unwrap_err();
        assert_eq!(
            err.path,
            "virtualHosts[0].routes[0].forward.rewrite.regexSubstitution"
        );
    }

    #[test]
    fn every_load_balancing_policy_round_trips() {
        for (policy, hash_on) in [
            (ir::LbPolicy::RoundRobin, None),
            (ir::LbPolicy::LeastRequest, None),
            (ir::LbPolicy::Random, None),
            (ir::LbPolicy::PeakEwma, None),
            (ir::LbPolicy::RingHash, Some(ir::HashOn::SourceIp)),
            (
                ir::LbPolicy::Maglev,
                Some(ir::HashOn::Header {
                    name: "x-user".into(),
                }),
            ),
        ] {
            let mut s = sample();
            s.clusters[0].lb_policy = policy;
            s.clusters[0].hash_on = hash_on;
            let wire = snapshot_to_resources(&s);
            let back = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap();
            assert_eq!(back, s, "{policy:?}");
        }
    }

    #[test]
    fn invalid_resilience_fields_name_the_field() {
        type Mutation = fn(&mut ir::Snapshot);
        let cases: [(Mutation, &str, &str); 6] = [
            (|s| s.clusters[0].hash_on = None, "cluster/c", "hashOn"),
            (
                |s| s.clusters[0].lb_policy = ir::LbPolicy::Random,
                "cluster/c",
                "hashOn",
            ),
            (
                |s| {
                    if let Some(o) = &mut s.clusters[0].outlier_detection {
                        o.max_ejection_percent = 101;
                    }
                },
                "cluster/c",
                "outlierDetection.maxEjectionPercent",
            ),
            (
                |s| {
                    if let Some(h) = &mut s.clusters[0].health_check {
                        h.unhealthy_threshold = 0;
                    }
                },
                "cluster/c",
                "healthCheck.unhealthyThreshold",
            ),
            (
                |s| {
                    if let Some(b) = &mut s.clusters[0].circuit_breakers {
                        b.max_requests = Some(0);
                    }
                },
                "cluster/c",
                "circuitBreakers.maxRequests",
            ),
            (
                |s| {
                    let ir::RouteAction::Forward(f) =
                        &mut s.route_tables[0].virtual_hosts[0].routes[0].action
                    else {
                        unreachable!("the sample route forwards")
                    };
                    if let Some(r) = &mut f.retry {
                        r.retry_on.clear();
                    }
                },
                "routeTable/rt",
                "virtualHosts[0].routes[0].forward.retry.retryOn",
            ),
        ];
        for (mutate, resource, path) in cases {
            let mut s = sample();
            mutate(&mut s);
            let wire = snapshot_to_resources(&s);
            let err = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap_err();
            assert_eq!(
                (err.resource.as_str(), err.path.as_str()),
                (resource, path),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_endpoint_names_the_field() {
        let mut s = sample();
        s.endpoints[0].endpoints[0].address = "not-an-ip".into();
        let wire = snapshot_to_resources(&s);
        let err = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap_err();
        assert_eq!(err.resource, "endpoints/c");
        assert_eq!(err.path, "endpoints[0].address");
    }

    fn tls_sample() -> ir::Snapshot {
        let mut s = sample();
        s.listeners[0].tls = Some(ir::ListenerTls {
            mode: ir::TlsMode::Permissive,
            certificates: vec![
                ir::TlsCertificate {
                    certificate_chain: "/certs/default.pem".into(),
                    private_key: "/certs/default.key".into(),
                    server_names: vec![],
                },
                ir::TlsCertificate {
                    certificate_chain: "/certs/api.pem".into(),
                    private_key: "/certs/api.key".into(),
                    server_names: vec!["api.example.com".into(), "*.api.example.com".into()],
                },
            ],
            client_validation: Some(ir::TlsValidation {
                trust_chain: "/certs/clients.pem".into(),
                subject_alternative_names: vec!["spiffe://example/ns/a/sa/b".into()],
            }),
            detect_misdirected: true,
        });
        s.clusters[0].tls = Some(ir::UpstreamTls {
            server_name: "c.shop.svc.cluster.local".into(),
            trust_chain: "/certs/ca.pem".into(),
            subject_alternative_names: vec![],
            client_certificate: Some(ir::TlsClientCertificate {
                certificate_chain: "/certs/gw.pem".into(),
                private_key: "/certs/gw.key".into(),
            }),
            skip_verification: false,
        });
        s
    }

    #[test]
    fn tls_round_trip() {
        let s = tls_sample();
        let wire = snapshot_to_resources(&s);
        let back = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap();
        assert_eq!(back, s);
    }

    fn tls_error(edit: impl FnOnce(&mut ir::Snapshot)) -> InvalidResource {
        let mut s = tls_sample();
        edit(&mut s);
        let wire = snapshot_to_resources(&s);
        resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap_err()
    }

    #[test]
    fn invalid_tls_names_the_field() {
        let err = tls_error(|s| {
            let tls = s.listeners[0].tls.as_mut().unwrap();
            tls.certificates[1].server_names[1] = "API.example.com".into();
        });
        assert_eq!(err.resource, "listener/http-8080");
        assert_eq!(err.path, "tls.certificates[1].serverNames[1]");

        let err = tls_error(|s| {
            let tls = s.listeners[0].tls.as_mut().unwrap();
            tls.certificates[1].server_names.clear();
        });
        assert_eq!(err.path, "tls.certificates[1]");
        assert!(err.reason.contains("default"), "{err}");

        let err = tls_error(|s| {
            let tls = s.listeners[0].tls.as_mut().unwrap();
            tls.certificates[0].server_names = vec!["api.example.com".into()];
        });
        assert_eq!(err.path, "tls.certificates[1].serverNames[0]");

        let err = tls_error(|s| {
            let tls = s.listeners[0].tls.as_mut().unwrap();
            tls.certificates.clear();
        });
        assert_eq!(err.path, "tls.certificates");

        let err = tls_error(|s| {
            let tls = s.listeners[0].tls.as_mut().unwrap();
            tls.client_validation.as_mut().unwrap().trust_chain.clear();
        });
        assert_eq!(err.path, "tls.clientValidation.trustChain");

        let err = tls_error(|s| s.clusters[0].tls.as_mut().unwrap().server_name.clear());
        assert_eq!(err.resource, "cluster/c");
        assert_eq!(err.path, "tls.serverName");

        let err = tls_error(|s| {
            let tls = s.clusters[0].tls.as_mut().unwrap();
            tls.client_certificate.as_mut().unwrap().private_key.clear();
        });
        assert_eq!(err.path, "tls.clientCertificate.privateKey");
    }

    #[test]
    fn disabled_tls_needs_no_certificate() {
        let mut s = tls_sample();
        let tls = s.listeners[0].tls.as_mut().unwrap();
        tls.mode = ir::TlsMode::Disabled;
        tls.certificates.clear();
        let wire = snapshot_to_resources(&s);
        let back = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn server_name_patterns() {
        for ok in ["example.com", "*.example.com", "a-b.c_d.io", "localhost"] {
            assert!(ir::is_server_name_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "Example.com",
            "*.",
            "a..b",
            "-a.com",
            "a*.com",
            "*.*.com",
            "10.0.0.1",
        ] {
            assert!(!ir::is_server_name_pattern(bad), "{bad}");
        }
    }

    fn tcp_sample() -> ir::Snapshot {
        let mut s = sample();
        s.listeners.push(ir::Listener {
            name: "tcp-9000".into(),
            address: String::new(),
            port: 9000,
            protocol: ir::Protocol::Tcp,
            route_table: String::new(),
            access_log: None,
            tls: None,
            tcp_proxy: Some(ir::TcpProxy {
                name: "gatewayroute/shop/db".into(),
                clusters: vec![
                    ir::WeightedCluster::new("c".into(), 3),
                    ir::WeightedCluster::new("d".into(), 1),
                ],
                // 0 (disabled) must survive the round trip, unlike an unset value.
                idle_timeout_ms: Some(0),
            }),
        });
        let mut d = s.clusters[0].clone();
        d.name = "d".into();
        d.protocol = ir::Protocol::Tcp;
        d.lb_policy = ir::LbPolicy::RoundRobin;
        d.hash_on = None;
        d.tcp_idle_timeout_ms = Some(1_000);
        s.clusters.push(d);
        s.clusters[0].tcp_idle_timeout_ms = Some(0);
        s.normalize();
        s
    }

    #[test]
    fn tcp_proxy_round_trip() {
        let s = tcp_sample();
        let wire = snapshot_to_resources(&s);
        let back = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap();
        assert_eq!(back, s);
        let mut unset = s.clone();
        unset.listeners[1]
            .tcp_proxy
            .as_mut()
            .unwrap()
            .idle_timeout_ms = None;
        unset.clusters[0].tcp_idle_timeout_ms = None;
        let wire = snapshot_to_resources(&unset);
        let back = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap();
        assert_eq!(back, unset);
    }

    #[test]
    fn invalid_tcp_proxy_names_the_field() {
        for (edit, path) in [
            (
                (|t: &mut ir::TcpProxy| t.clusters.clear()) as fn(&mut ir::TcpProxy),
                "tcpProxy.clusters",
            ),
            (
                |t: &mut ir::TcpProxy| t.clusters[1].cluster.clear(),
                "tcpProxy.clusters[1].cluster",
            ),
        ] {
            let mut s = tcp_sample();
            edit(s.listeners[1].tcp_proxy.as_mut().unwrap());
            let wire = snapshot_to_resources(&s);
            let err = resources_to_snapshot(wire.iter().map(|(_, r)| r)).unwrap_err();
            assert_eq!(
                (err.resource.as_str(), err.path.as_str()),
                ("listener/tcp-9000", path),
                "{err}"
            );
        }
    }
}
