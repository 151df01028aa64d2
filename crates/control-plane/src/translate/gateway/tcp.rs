//! tcp listeners of a VirtualGateway and GatewayRoute `tcpRoute` (Bowline extensions: App Mesh
//! gateways have neither) → listeners with an [`ir::TcpProxy`].
//!
//! * A `tcpRoute` attaches to the gateway's tcp listener on its `match.port`, or to every tcp
//!   listener without one, as the other route kinds attach to theirs; a `tcpRoute` naming an
//!   HTTP-family listener, or an HTTP-family route naming a tcp listener, is skipped with a
//!   diagnostic. A tcp listener serves the first of its routes in route order (priority, then a
//!   route with `match.port` before one without, then namespace/name); the others are reported
//!   as unused there. A tcp listener without a route is not served at all (a port that resets
//!   every connection helps nobody).
//! * The target virtual service resolves as for the other routes. Provided by a virtual node:
//!   the node's listener (`target.port`, or its only one) and its cluster, whatever the
//!   listener's protocol (bytes are bytes). Provided by a virtual router: the router's listener,
//!   which must be a tcp listener, then the first of the router's `tcpRoute`s in App Mesh's order
//!   whose `match.port` is unset or that listener's port, and its weighted targets.
//! * Idle timeout: the GatewayRoute's `timeout.idle`, else the router route's, else (per
//!   cluster, in the engine) the node listener's `timeout.tcp.idle`, else one hour (Envoy's
//!   default, which App Mesh runs with). 0 disables it, as Envoy's `0s`.
//!
//! Until its listener is built, a translated tcpRoute travels as one IR route whose forward
//! action holds the weighted clusters and the idle timeout, so that the placement of routes on
//! listeners stays one piece of code.

use bowline_model::appmesh::{GatewayRouteTarget, TcpGatewayRoute, TcpRoute};
use bowline_model::ir;
use bowline_model::manifest::Kind;

use super::{
    At, Candidate, Cx, Family, GatewayRouteIr, HostKey, ProviderKind, Traffic, port_of, router_at,
};
use crate::translate::{OrderKey, listener_name, resilience};

/// What a tcp target resolves to: weighted clusters and the router route's idle timeout.
type TcpTarget = (Vec<ir::WeightedCluster>, Option<u64>);

impl Cx<'_> {
    /// A GatewayRoute's `tcpRoute`, before it is placed on listeners.
    pub(super) fn tcp_gateway_route(
        &mut self,
        at: At<'_>,
        route_name: String,
        priority: Option<i64>,
        r: &TcpGatewayRoute,
    ) -> Option<GatewayRouteIr> {
        let port = self.match_port(at, r.matcher.as_ref().and_then(|m| m.port))?;
        let (clusters, router_idle) = self.tcp_target(at, &r.action.target)?;
        let matcher = ir::RouteMatch {
            port,
            ..Default::default()
        };
        let key = OrderKey::new(
            priority,
            &matcher,
            false,
            format!("{}/{}", at.namespace, at.name),
        );
        let action = ir::RouteAction::Forward(ir::ForwardAction {
            clusters,
            rewrite: ir::Rewrite::default(),
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: resilience::tcp_idle_ms(r.timeout.as_ref()).or(router_idle),
            unresolved_weight: 0,
        });
        Some(GatewayRouteIr {
            family: Family::Tcp,
            port,
            key,
            host: HostKey::Any,
            routes: vec![ir::Route::new(route_name, matcher, action)],
        })
    }

    fn tcp_target(&mut self, at: At<'_>, target: &GatewayRouteTarget) -> Option<TcpTarget> {
        let p = self.provider(at, "action.target", target)?;
        let vs_at = p.at();
        let referrer = format!("{} {}/{}", at.kind, at.namespace, at.name);
        match &p.kind {
            ProviderKind::Node { namespace, name } => {
                let at = At {
                    path: "spec.provider.virtualNode.virtualNodeRef",
                    ..vs_at
                };
                let cluster = self.node_cluster_for(
                    at,
                    &referrer,
                    namespace,
                    name,
                    target.port,
                    Traffic::Tcp,
                )?;
                Some((vec![ir::WeightedCluster::new(cluster, 1)], None))
            }
            ProviderKind::Router { namespace, name } => {
                self.router_tcp_route(vs_at, &referrer, namespace, name, target.port)
            }
        }
    }

    /// The weighted targets and idle timeout of the tcpRoute a router serves on its tcp listener
    /// (see the module documentation).
    fn router_tcp_route(
        &mut self,
        vs_at: At<'_>,
        referrer: &str,
        ns: &str,
        name: &str,
        port: Option<i64>,
    ) -> Option<TcpTarget> {
        let (router, port, _) =
            self.router_listener(vs_at, referrer, ns, name, port, Traffic::Tcp)?;
        let router_at = router_at(ns, name);
        let mut routes: Vec<(OrderKey, usize, &TcpRoute)> = Vec::new();
        for (i, r) in router.spec.routes.iter().flatten().enumerate() {
            let Some(t) = &r.tcp_route else { continue };
            let match_port = t.matcher.as_ref().and_then(|m| m.port);
            if match_port.is_some_and(|p| p != i64::from(port)) {
                continue;
            }
            let matcher = ir::RouteMatch {
                port: match_port.and_then(port_of),
                ..Default::default()
            };
            let key = OrderKey::new(
                r.priority,
                &matcher,
                false,
                format!("{ns}/{name}/{}", r.name),
            );
            routes.push((key, i, t));
        }
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, i, t) in routes {
            let path = format!("spec.routes[{i}].tcpRoute");
            let at = At {
                path: &path,
                ..router_at
            };
            if let Some(clusters) = self.weighted_for(at, &t.action, Traffic::Tcp) {
                return Some((clusters, resilience::tcp_idle_ms(t.timeout.as_ref())));
            }
        }
        self.diag_at(
            router_at,
            "routes",
            format!("no tcpRoute serves the listener on port {port}; {referrer} skipped"),
        );
        None
    }

    /// The listener of a gateway's tcp listener on `port`, from the tcpRoutes placed on it.
    pub(super) fn tcp_listener(
        &mut self,
        gw_at: At<'_>,
        port: u16,
        mut cands: Vec<Candidate>,
        access_log: Option<ir::AccessLog>,
        tls: Option<ir::ListenerTls>,
    ) -> Option<ir::Listener> {
        cands.sort_by(|a, b| a.key.cmp(&b.key));
        let mut cands = cands.into_iter();
        let Some(first) = cands.next() else {
            self.diag_at(
                gw_at,
                "listeners",
                format!(
                    "no GatewayRoute tcpRoute attaches to the tcp listener on port {port}; listener skipped"
                ),
            );
            return None;
        };
        for other in cands {
            let (ns, name) = other.key.name.split_once('/').unwrap_or(("", ""));
            self.diag(
                Kind::GatewayRoute,
                ns,
                name,
                "spec.tcpRoute",
                format!(
                    "the tcp listener on port {port} serves GatewayRoute {} (it comes first by priority, port and name); this route is not used there",
                    first.key.name
                ),
            );
        }
        let route = first.routes.into_iter().next()?;
        let ir::RouteAction::Forward(f) = route.action else {
            return None;
        };
        Some(ir::Listener {
            name: listener_name(ir::Protocol::Tcp, port),
            address: String::new(),
            port,
            protocol: ir::Protocol::Tcp,
            route_table: String::new(),
            access_log,
            tls,
            tcp_proxy: Some(ir::TcpProxy {
                name: route.name,
                clusters: f.clusters,
                idle_timeout_ms: f.idle_timeout_ms,
            }),
        })
    }
}
