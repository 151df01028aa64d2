//! VirtualNode → IR for the sidecar next to the node's application, with App Mesh semantics.
//!
//! * **Inbound**: each node listener becomes a listener on the sidecar's inbound address and the
//!   listener's port, terminating the listener's `tls` (file certificates; `validation` asks
//!   for a client certificate: mutual TLS), and forwarding to the application at the
//!   sidecar's application address and port (the listener port unless mapped) in the
//!   listener's protocol: a tcp listener proxies bytes, the others route every request.
//! * **Outbound**: one HTTP listener on `127.0.0.1` and the sidecar's outbound port. Each
//!   backend VirtualService is a virtual host for the names an application calls it by
//!   (`<name>`, `<name>.<namespace>`, `<name>.<namespace>.svc`,
//!   `<name>.<namespace>.svc.cluster.local` and its `awsName`, any port), whose requests take the
//!   service's provider as a VirtualGateway target would: its router's route table, or its
//!   node's cluster. Requests to other hosts get 404.
//! * The node's `logging.accessLog` logs the requests of every listener.
//! * **Client policy**: a cluster reached through a backend takes that backend's
//!   `clientPolicy.tls`, else the node's `backendDefaults.clientPolicy.tls`, and originates TLS
//!   as the gateway's client policy does (see [`super::tls`]).

use std::collections::{BTreeMap, BTreeSet};

use bowline_model::appmesh::{
    ClientPolicyTls, GatewayRouteTarget, GatewayRouteVirtualService, PortProtocol, VirtualNodeSpec,
};
use bowline_model::ir;
use bowline_model::manifest::Kind;

use super::{At, ClientPolicy, Cx, access_log, protocol};
use crate::translate::{Inputs, Translation, listener_name};

/// Where a sidecar listens and where its application is (from the sidecar's flags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SidecarTarget {
    /// Port of the outbound listener on 127.0.0.1.
    pub outbound_port: u16,
    /// Address the inbound listeners bind (empty: the proxy's bind address).
    pub inbound_address: String,
    /// Address of the application.
    pub app_address: String,
    /// Node listener port → application port, where they differ.
    pub app_ports: BTreeMap<u16, u16>,
}

/// The name of the outbound listener's route table.
pub const OUTBOUND_TABLE: &str = "outbound";

/// Translates the sidecar of one VirtualNode. An unknown node yields an empty snapshot and a
/// diagnostic.
pub fn sidecar(
    inputs: &Inputs<'_>,
    namespace: &str,
    name: &str,
    target: &SidecarTarget,
) -> Translation {
    let mut cx = Cx::new(inputs);
    let mut snapshot = ir::Snapshot::default();
    let Some(node) = inputs.world.virtual_node(namespace, name) else {
        cx.diag(
            Kind::VirtualNode,
            namespace,
            name,
            "",
            "not found; the sidecar gets an empty configuration until it exists",
        );
        return Translation {
            snapshot,
            diagnostics: cx.diagnostics,
        };
    };
    let node_at = At {
        kind: Kind::VirtualNode,
        namespace,
        name,
        path: "spec",
    };
    cx.inbound(node_at, &node.spec, target, &mut snapshot);
    let policies = cx.outbound(node_at, &node.spec, target, &mut snapshot);
    snapshot
        .route_tables
        .extend(cx.router_tables.values().cloned());
    cx.build_clusters(&mut snapshot, |cluster| policies.get(cluster).cloned());
    snapshot.normalize();
    Translation {
        snapshot,
        diagnostics: cx.diagnostics,
    }
}

impl<'a> Cx<'a> {
    /// One listener per node listener, forwarding to the application.
    fn inbound(
        &mut self,
        node_at: At<'_>,
        spec: &VirtualNodeSpec,
        target: &SidecarTarget,
        snapshot: &mut ir::Snapshot,
    ) {
        let mut ports = BTreeSet::new();
        for (i, l) in spec.listeners.iter().flatten().enumerate() {
            let path = format!("spec.listeners[{i}]");
            let at = At {
                path: &path,
                ..node_at
            };
            let Some(port) = u16::try_from(l.port_mapping.port).ok().filter(|p| *p != 0) else {
                self.diag_at(
                    at,
                    "portMapping.port",
                    format!("{} is not a port; listener skipped", l.port_mapping.port),
                );
                continue;
            };
            if !ports.insert(port) {
                self.diag_at(
                    at,
                    "portMapping.port",
                    format!("port {port} is used by an earlier listener; listener skipped"),
                );
                continue;
            }
            if port == target.outbound_port {
                self.diag_at(
                    at,
                    "portMapping.port",
                    format!(
                        "port {port} is the sidecar's outbound port; listener skipped (start the sidecar with another --outbound-port)"
                    ),
                );
                continue;
            }
            let Ok(tls) = self.listener_tls(at, l.tls.as_ref()) else {
                continue;
            };
            let proto = protocol(l.port_mapping.protocol);
            let app_port = target.app_ports.get(&port).copied().unwrap_or(port);
            let cluster = format!("inbound|{port}");
            snapshot.clusters.push(ir::Cluster::new(
                cluster.clone(),
                proto,
                super::CONNECT_TIMEOUT_MS,
            ));
            snapshot.endpoints.push(ir::ClusterEndpoints {
                cluster: cluster.clone(),
                endpoints: vec![ir::Endpoint {
                    address: target.app_address.clone(),
                    port: app_port,
                    weight: 1,
                }],
            });
            let forward = vec![ir::WeightedCluster::new(cluster.clone(), 1)];
            let (route_table, tcp_proxy) = if l.port_mapping.protocol == PortProtocol::Tcp {
                (
                    String::new(),
                    Some(ir::TcpProxy {
                        name: cluster.clone(),
                        clusters: forward,
                        idle_timeout_ms: None,
                    }),
                )
            } else {
                snapshot.route_tables.push(ir::RouteTable {
                    name: cluster.clone(),
                    virtual_hosts: vec![ir::VirtualHost {
                        name: "*".into(),
                        hosts: vec![ir::HostMatch::Any],
                        routes: vec![ir::Route::new(
                            cluster.clone(),
                            ir::RouteMatch {
                                path: Some(ir::PathMatch::Prefix("/".into())),
                                ..Default::default()
                            },
                            ir::RouteAction::Forward(ir::ForwardAction {
                                clusters: forward,
                                rewrite: ir::Rewrite::default(),
                                timeout_ms: None,
                                retry: None,
                                idle_timeout_ms: None,
                                unresolved_weight: 0,
                            }),
                        )],
                    }],
                });
                (cluster.clone(), None)
            };
            snapshot.listeners.push(ir::Listener {
                name: format!("inbound_{}", listener_name(proto, port)),
                address: target.inbound_address.clone(),
                port,
                protocol: proto,
                route_table,
                access_log: access_log(spec.logging.as_ref()),
                tls,
                tcp_proxy,
            });
        }
    }

    /// The outbound listener and its virtual hosts; returns the client policy of each cluster
    /// a backend reached.
    fn outbound<'s>(
        &mut self,
        node_at: At<'s>,
        spec: &'s VirtualNodeSpec,
        target: &SidecarTarget,
        snapshot: &mut ir::Snapshot,
    ) -> BTreeMap<String, ClientPolicy<'s>> {
        let defaults: Option<&'s ClientPolicyTls> = spec
            .backend_defaults
            .as_ref()
            .and_then(|d| d.client_policy.as_ref())
            .and_then(|p| p.tls.as_ref());
        let mut policies = BTreeMap::new();
        let mut virtual_hosts = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, b) in spec.backends.iter().flatten().enumerate() {
            let sub = format!("backends[{i}]");
            let Some(vs_ref) = &b.virtual_service.virtual_service_ref else {
                // An ARN-only backend: reported by validation.
                continue;
            };
            let vs_ns = vs_ref
                .namespace
                .clone()
                .unwrap_or_else(|| node_at.namespace.to_string());
            if !seen.insert((vs_ns.clone(), vs_ref.name.clone())) {
                continue;
            }
            let before: BTreeSet<String> = self.clusters.keys().cloned().collect();
            let goal = GatewayRouteTarget {
                virtual_service: GatewayRouteVirtualService {
                    virtual_service_ref: Some(vs_ref.clone()),
                    ..Default::default()
                },
                port: None,
            };
            let Some((action, vs_name)) = self.target(node_at, &sub, &goal) else {
                continue;
            };
            let (policy, policy_path) = match b
                .virtual_service
                .client_policy
                .as_ref()
                .and_then(|p| p.tls.as_ref())
            {
                Some(tls) => (
                    Some(tls),
                    format!("backends[{i}].virtualService.clientPolicy.tls"),
                ),
                None => (defaults, "backendDefaults.clientPolicy.tls".to_string()),
            };
            if let Some(tls) = policy {
                for cluster in self.clusters.keys() {
                    if !before.contains(cluster) {
                        policies.insert(
                            cluster.clone(),
                            ClientPolicy {
                                at: node_at,
                                path: policy_path.clone(),
                                tls,
                            },
                        );
                    }
                }
            }
            let mut hosts: Vec<ir::HostMatch> = vec![
                vs_ref.name.clone(),
                format!("{}.{vs_ns}", vs_ref.name),
                format!("{}.{vs_ns}.svc", vs_ref.name),
                vs_name,
            ]
            .into_iter()
            .chain(
                self.inputs
                    .world
                    .virtual_service(&vs_ns, &vs_ref.name)
                    .and_then(|vs| vs.spec.aws_name.clone()),
            )
            .map(|h| ir::HostMatch::Exact(h.to_ascii_lowercase()))
            .collect();
            hosts.sort_by_key(|h| format!("{h:?}"));
            hosts.dedup();
            virtual_hosts.push(ir::VirtualHost {
                name: format!("{vs_ns}/{}", vs_ref.name),
                hosts,
                routes: vec![ir::Route::new(
                    format!("backend/{vs_ns}/{}", vs_ref.name),
                    ir::RouteMatch {
                        path: Some(ir::PathMatch::Prefix("/".into())),
                        ..Default::default()
                    },
                    action.with_rewrite(ir::Rewrite::default()),
                )],
            });
        }
        // A short name two backends share (`color` in two namespaces) goes to neither.
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for vh in &virtual_hosts {
            for h in &vh.hosts {
                if let ir::HostMatch::Exact(name) = h {
                    owners
                        .entry(name.clone())
                        .or_default()
                        .push(vh.name.clone());
                }
            }
        }
        for (name, names) in owners.into_iter().filter(|(_, n)| n.len() > 1) {
            let host = ir::HostMatch::Exact(name.clone());
            self.diag_at(
                node_at,
                "backends",
                format!(
                    "the name {name:?} fits the backends {}; neither is called by it (use a longer name, like <name>.<namespace>)",
                    names.join(" and ")
                ),
            );
            for vh in &mut virtual_hosts {
                vh.hosts.retain(|h| h != &host);
            }
        }
        snapshot.route_tables.push(ir::RouteTable {
            name: OUTBOUND_TABLE.into(),
            virtual_hosts,
        });
        snapshot.listeners.push(ir::Listener {
            name: format!(
                "outbound_{}",
                listener_name(ir::Protocol::Http, target.outbound_port)
            ),
            address: "127.0.0.1".into(),
            port: target.outbound_port,
            protocol: ir::Protocol::Http,
            route_table: OUTBOUND_TABLE.into(),
            access_log: access_log(spec.logging.as_ref()),
            tls: None,
            tcp_proxy: None,
        });
        policies
    }
}
