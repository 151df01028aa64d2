//! Prometheus metrics of the control plane, registered under the `bowline_control_plane` prefix.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The metric families; cheap to clone (every metric is an `Arc` inside).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub connected_proxies: Gauge,
    pub responses: Counter,
    pub acks: Counter,
    pub nacks: Counter,
    pub world_version: Gauge,
    pub dns_version: Gauge,
}

impl Metrics {
    /// Creates the metrics and the registry that encodes them.
    pub fn new() -> (Self, Registry) {
        let mut registry = Registry::with_prefix("bowline_control_plane");
        let m = Metrics::default();
        registry.register(
            "connected_proxies",
            "Proxies with an open ConfigDiscovery stream",
            m.connected_proxies.clone(),
        );
        registry.register(
            "config_responses",
            "ConfigDiscovery responses sent",
            m.responses.clone(),
        );
        registry.register(
            "config_acks",
            "ConfigDiscovery responses acknowledged (applied) by proxies",
            m.acks.clone(),
        );
        registry.register(
            "config_nacks",
            "ConfigDiscovery responses rejected by proxies",
            m.nacks.clone(),
        );
        registry.register(
            "world_version",
            "Version of the set of objects being served",
            m.world_version.clone(),
        );
        registry.register(
            "dns_version",
            "Version of the table of DNS-resolved addresses",
            m.dns_version.clone(),
        );
        (m, registry)
    }
}

/// The registry in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}
