//! VirtualGateway listener `connectionPool` → the circuit breakers of the clusters the listener's
//! routes forward to.
//!
//! App Mesh's API reference defines the gateway's pool toward its upstreams:
//! `http.maxConnections` is the "maximum number of outbound TCP connections Envoy can establish
//! concurrently with all hosts in upstream cluster", `http.maxPendingRequests` the "number of
//! overflowing requests after max_connections Envoy will queue to upstream cluster", and
//! `http2`/`grpc` `maxRequests` the "maximum number of inflight requests Envoy can concurrently
//! support across hosts in upstream cluster" (VirtualGatewayHttpConnectionPool,
//! VirtualGatewayHttp2ConnectionPool, VirtualGatewayGrpcConnectionPool). So:
//!
//! * a listener's limits go on every cluster its routes forward to, directly or through the
//!   route table of a virtual router they delegate to. Mirrors do not count: mirrored copies
//!   never take a cluster's limits (the engine bounds them on its own);
//! * limits are counted per cluster, whoever sends to it. A cluster that also has its node
//!   listener's limits, or that several listeners reach, gets the smaller value of each limit
//!   (an unset limit takes the other's value).
//!
//! This runs on the finished snapshot, so every way a route reaches a cluster counts.

use std::collections::{BTreeMap, HashMap, HashSet};

use bowline_model::appmesh::{ConnectionPool, GatewayConnectionPool, VirtualGatewaySpec};
use bowline_model::ir;

use super::port_of;
use crate::translate::resilience::circuit_breakers;

/// Applies the limits of `spec`'s listeners to the clusters of `snapshot` they reach.
pub(super) fn apply(snapshot: &mut ir::Snapshot, spec: &VirtualGatewaySpec) {
    let mut pools: BTreeMap<u16, ir::CircuitBreakers> = BTreeMap::new();
    let mut ports = HashSet::new();
    for l in &spec.listeners {
        // Translation skips a later listener on a port already used; so does this.
        let Some(port) = port_of(l.port_mapping.port).filter(|p| ports.insert(*p)) else {
            continue;
        };
        if let Some(limits) = l.connection_pool.as_ref().and_then(limits) {
            pools.insert(port, limits);
        }
    }
    if pools.is_empty() {
        return;
    }
    let tables: HashMap<&str, &ir::RouteTable> = snapshot
        .route_tables
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut reached: BTreeMap<String, ir::CircuitBreakers> = BTreeMap::new();
    for listener in &snapshot.listeners {
        let Some(pool) = pools.get(&listener.port) else {
            continue;
        };
        for cluster in forwarded(&tables, &listener.route_table) {
            let limits = reached.entry(cluster.to_string()).or_default();
            *limits = stricter(Some(limits), pool);
        }
    }
    for c in &mut snapshot.clusters {
        if let Some(limits) = reached.get(&c.name) {
            c.circuit_breakers = Some(stricter(c.circuit_breakers.as_ref(), limits));
        }
    }
}

/// A gateway listener's pool as circuit breakers (the node listener pool's conversion: the
/// members and their meaning are the same).
fn limits(pool: &GatewayConnectionPool) -> Option<ir::CircuitBreakers> {
    circuit_breakers(&ConnectionPool {
        tcp: None,
        http: pool.http.clone(),
        http2: pool.http2.clone(),
        grpc: pool.grpc.clone(),
    })
}

/// The clusters the routes of `table` forward to, through delegations too.
fn forwarded<'s>(tables: &HashMap<&str, &'s ir::RouteTable>, table: &str) -> HashSet<&'s str> {
    let mut out = HashSet::new();
    let mut seen = HashSet::new();
    let mut todo = vec![table];
    while let Some(name) = todo.pop() {
        let Some(t) = tables.get(name) else {
            continue;
        };
        if !seen.insert(t.name.as_str()) {
            continue;
        }
        for route in t.virtual_hosts.iter().flat_map(|v| &v.routes) {
            match &route.action {
                ir::RouteAction::Forward(f) => {
                    out.extend(f.clusters.iter().map(|w| w.cluster.as_str()));
                }
                ir::RouteAction::Delegate(d) => todo.push(d.route_table.as_str()),
                ir::RouteAction::DirectResponse(_) | ir::RouteAction::Redirect(_) => {}
            }
        }
    }
    out
}

/// Each limit the smaller of the two; a limit one side leaves unset takes the other's.
fn stricter(a: Option<&ir::CircuitBreakers>, b: &ir::CircuitBreakers) -> ir::CircuitBreakers {
    let min = |x: Option<u32>, y: Option<u32>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let a = a.cloned().unwrap_or_default();
    ir::CircuitBreakers {
        max_connections: min(a.max_connections, b.max_connections),
        max_pending_requests: min(a.max_pending_requests, b.max_pending_requests),
        max_requests: min(a.max_requests, b.max_requests),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(c: Option<u32>, p: Option<u32>, r: Option<u32>) -> ir::CircuitBreakers {
        ir::CircuitBreakers {
            max_connections: c,
            max_pending_requests: p,
            max_requests: r,
        }
    }

    #[test]
    fn the_smaller_value_of_each_limit_wins() {
        let node = limits(Some(10), None, Some(3));
        let gateway = limits(Some(5), Some(8), Some(7));
        assert_eq!(
            stricter(Some(&node), &gateway),
            limits(Some(5), Some(8), Some(3))
        );
        assert_eq!(stricter(None, &gateway), gateway);
        assert_eq!(
            stricter(
                Some(&limits(None, None, Some(2))),
                &limits(Some(1), Some(1), None)
            ),
            limits(Some(1), Some(1), Some(2))
        );
    }
}
