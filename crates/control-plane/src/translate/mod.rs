//! Translation from resources to IR: pure functions of a [`World`] and a [`DnsTable`].
//!
//! [`gateway`] builds the snapshot of one VirtualGateway. Problems (references to missing
//! objects, ports that do not exist, …) never fail a whole gateway: the affected route or target
//! is skipped and a [`Diagnostic`] says why.
//!
//! ## IR names
//!
//! | object | name |
//! |---|---|
//! | listener (one per gateway portMapping) | `<protocol>-<port>`, e.g. `http-8088` |
//! | route table of a gateway listener (none for tcp listeners, which carry a tcp proxy) | `gateway/<namespace>/<gateway>/<port>` |
//! | route table of a virtual router listener | `router/<namespace>/<router>/<port>` |
//! | virtual host | `*` (any host), the exact host, or `*<suffix>` |
//! | route from a GatewayRoute | `gatewayroute/<namespace>/<name>` |
//! | route from a VirtualRouter route | `route/<namespace>/<router>/<route>` |
//! | cluster and its endpoints (one per VirtualNode listener port) | `node/<namespace>/<node>/<port>` |
//!
//! Gateway API Gateways are translated by [`gatewayapi`], Ingresses by [`ingress`].
//!
//! ## Route order
//!
//! Within a virtual host the first matching route wins, so routes are sorted by:
//! 1. explicit `priority`, ascending; routes without a priority come after all that have one;
//! 2. specificity: an exact path before a regex path before a prefix, longer prefixes before
//!    shorter ones (no path counts as an empty prefix), then routes with more conditions
//!    (headers, query parameters, cookies, method, scheme, port, hostname) before those with
//!    fewer;
//! 3. namespace/name of the resource (then the route name inside a router), so the order is total
//!    and deterministic.

mod gateway;
pub mod gatewayapi;
pub mod ingress;
mod resilience;
#[cfg(test)]
mod tests;

use std::cmp::{Ordering, Reverse};
use std::fmt;

use bowline_model::ir;
use bowline_model::manifest::{Kind, Source};
use serde::Serialize;

use crate::discovery::DnsTable;
use crate::world::World;

pub use gateway::{SidecarTarget, gateway, sidecar};

/// Connect timeout of every cluster. App Mesh has no field for it; one second is short enough to
/// fail over quickly inside a cluster network and long enough for a cold TCP handshake.
pub const CONNECT_TIMEOUT_MS: u64 = 1000;

/// What translation reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub world: &'a World,
    pub dns: &'a DnsTable,
}

/// The result of translating one proxy's configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Normalized (`Snapshot::normalize`) and deterministic.
    pub snapshot: ir::Snapshot,
    /// Why something the resources ask for is not in the snapshot. Deduplicated, in the order
    /// found.
    pub diagnostics: Vec<Diagnostic>,
}

/// A problem found while translating, located like a manifest [`Problem`]
/// (`file (document N): Kind ns/name: path: message`).
///
/// [`Problem`]: bowline_model::manifest::Problem
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    pub source: Option<Source>,
    /// `Kind namespace/name`.
    pub object: String,
    /// Field path inside the object; empty for the whole object.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.source {
            write!(f, "{s}: ")?;
        }
        write!(f, "{}: ", self.object)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl Diagnostic {
    pub(crate) fn new(
        world: &World,
        kind: Kind,
        namespace: &str,
        name: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let ns = if kind.namespaced() { namespace } else { "" };
        Diagnostic {
            source: world.source_of(kind, ns, name).cloned(),
            object: if ns.is_empty() {
                format!("{kind} {name}")
            } else {
                format!("{kind} {ns}/{name}")
            },
            path: path.into(),
            message: message.into(),
        }
    }
}

// === names ===

pub fn listener_name(protocol: ir::Protocol, port: u16) -> String {
    format!("{}-{port}", protocol_str(protocol))
}

pub fn gateway_table_name(namespace: &str, gateway: &str, port: u16) -> String {
    format!("gateway/{namespace}/{gateway}/{port}")
}

pub fn router_table_name(namespace: &str, router: &str, port: u16) -> String {
    format!("router/{namespace}/{router}/{port}")
}

pub fn cluster_name(namespace: &str, node: &str, port: u16) -> String {
    format!("node/{namespace}/{node}/{port}")
}

pub fn protocol_str(p: ir::Protocol) -> &'static str {
    match p {
        ir::Protocol::Http => "http",
        ir::Protocol::Http2 => "http2",
        ir::Protocol::Grpc => "grpc",
        ir::Protocol::Tcp => "tcp",
    }
}

// === label selectors ===

// === route order ===

/// The sort key of a route (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderKey {
    pub priority: Option<i64>,
    pub path_rank: u8,
    pub prefix_len: usize,
    pub conditions: usize,
    pub name: String,
}

impl OrderKey {
    pub fn new(priority: Option<i64>, m: &ir::RouteMatch, has_host: bool, name: String) -> Self {
        let (path_rank, prefix_len) = match &m.path {
            Some(ir::PathMatch::Exact(_)) => (0, 0),
            Some(ir::PathMatch::Regex(_)) => (1, 0),
            Some(ir::PathMatch::Prefix(p)) => (2, p.len()),
            None => (2, 0),
        };
        let conditions = m.headers.len()
            + m.query_parameters.len()
            + usize::from(m.method.is_some())
            + usize::from(m.scheme.is_some())
            + usize::from(m.port.is_some())
            + usize::from(has_host)
            + m.cookies.len();
        OrderKey {
            priority,
            path_rank,
            prefix_len,
            conditions,
            name,
        }
    }

    fn tuple(&self) -> impl Ord + '_ {
        (
            // `None` sorts after every priority.
            self.priority.map_or((1, 0), |p| (0, p)),
            self.path_rank,
            Reverse(self.prefix_len),
            Reverse(self.conditions),
            &self.name,
        )
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
