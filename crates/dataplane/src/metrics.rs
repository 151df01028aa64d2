//! Prometheus metrics of the engine, registered once into one [`Registry`] passed down by the
//! binary (every family lives under the `bowline_` prefix).
//!
//! The data path never looks a label set up per request: the router hands each compiled route and
//! cluster a small stats handle ([`RouteStats`], [`ClusterStats`]) that resolves its counter the
//! first time a status class or error reason is seen and then only increments an atomic.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A shared name used as a label value (cloning it allocates nothing).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Name(Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Name,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    cluster: Name,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// Route label of requests that matched no route.
pub const NO_ROUTE: &str = "-";

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

// === impl ProxyMetrics ===

/// Metrics of the HTTP data path.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_rejected: Counter,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    retries: Family<ClusterLabels, Counter>,
    retry_budget_exhausted: Family<ClusterLabels, Counter>,
    outlier_ejections: Family<ClusterLabels, Counter>,
    circuit_breaker_overflows: Family<OverflowLabels, Counter>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    /// Families of tcp proxying ([`crate::tcp`]).
    pub(crate) tcp: crate::tcp::TcpMetrics,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            requests: Family::default(),
            upstream_errors: Family::default(),
            connections_open: Family::default(),
            connections_rejected: Counter::default(),
            durations: Family::new_with_constructor(duration_histogram),
            retries: Family::default(),
            retry_budget_exhausted: Family::default(),
            outlier_ejections: Family::default(),
            circuit_breaker_overflows: Family::default(),
            endpoint_healthy: Family::default(),
            tcp: crate::tcp::TcpMetrics::default(),
        }
    }
}

/// Buckets from 0.5 ms to ~16 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Name,
}

impl ProxyMetrics {
    /// Registers the data-path families into `registry` (prefix `bowline_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reg = registry.sub_registry_with_prefix("bowline");
        reg.register(
            "requests",
            "Requests answered, by route and status class",
            m.requests.clone(),
        );
        reg.register(
            "upstream_errors",
            "Requests that failed to get a response from a cluster, by reason",
            m.upstream_errors.clone(),
        );
        reg.register(
            "connections_open",
            "Downstream connections currently open, by listener",
            m.connections_open.clone(),
        );
        reg.register(
            "request_duration_seconds",
            "Time from request received to response headers sent, by route",
            m.durations.clone(),
        );
        reg.register(
            "connections_rejected",
            "Downstream connections closed at once because the connection limit was reached",
            m.connections_rejected.clone(),
        );
        m.register_resilience(reg);
        m.tcp.register(reg);
        m
    }

    /// Counts a connection refused by the connection limit.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// The stats handle of one route.
    pub fn route(&self, route: &str) -> RouteStats {
        let route = Name(Arc::from(route));
        RouteStats {
            family: self.requests.clone(),
            durations: self.durations.clone(),
            duration: OnceLock::new(),
            route,
            by_class: Default::default(),
        }
    }

    /// The stats handle of one cluster.
    pub fn cluster(&self, cluster: &str) -> ClusterStats {
        ClusterStats {
            family: self.upstream_errors.clone(),
            cluster: Name(Arc::from(cluster)),
            by_reason: Default::default(),
        }
    }

    /// The open-connections gauge of one listener.
    pub fn connections(&self, listener: &str) -> Gauge {
        self.connections_open
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .clone()
    }
}

// === impl RouteStats ===

/// Request counters of one route, one per status class, and its latency histogram, each resolved
/// on first use: a table of thousands of routes costs no metric memory for routes never hit.
#[derive(Debug)]
pub struct RouteStats {
    family: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    duration: OnceLock<Histogram>,
    route: Name,
    by_class: [OnceLock<Counter>; 5],
}

impl RouteStats {
    /// The route's name (`-` for requests that matched none).
    pub fn name(&self) -> &str {
        &self.route.0
    }

    /// Counts one answered request and how long it took to answer.
    pub fn record_timed(&self, status: http::StatusCode, elapsed: std::time::Duration) {
        self.duration
            .get_or_init(|| {
                self.durations
                    .get_or_create(&RouteLabels {
                        route: self.route.clone(),
                    })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
        self.record(status);
    }

    /// Counts one answered request.
    pub fn record(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class]
            .get_or_init(|| {
                self.family
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        status_class: STATUS_CLASSES[class],
                    })
                    .clone()
            })
            .inc();
    }
}

// === impl ClusterStats ===

/// Why a request to a cluster got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorReason {
    NoEndpoints,
    ConnectRefused,
    ConnectTimeout,
    ConnectFailed,
    Timeout,
    Reset,
    SendTimeout,
}

impl UpstreamErrorReason {
    const ALL: usize = 7;

    /// The label value, also sent as the `x-bowline-error` response header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoEndpoints => "no_endpoints",
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectFailed => "connect_failed",
            Self::Timeout => "upstream_timeout",
            Self::Reset => "upstream_reset",
            Self::SendTimeout => "send_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Error counters of one cluster, one per reason, resolved on first use.
#[derive(Debug)]
pub struct ClusterStats {
    family: Family<UpstreamErrorLabels, Counter>,
    cluster: Name,
    by_reason: [OnceLock<Counter>; UpstreamErrorReason::ALL],
}

impl ClusterStats {
    pub fn record_error(&self, reason: UpstreamErrorReason) {
        self.by_reason[reason.index()]
            .get_or_init(|| {
                self.family
                    .get_or_create(&UpstreamErrorLabels {
                        cluster: self.cluster.clone(),
                        reason: reason.as_str(),
                    })
                    .clone()
            })
            .inc();
    }
}

// === impl ConfigMetrics ===

/// Metrics of the config client.
#[derive(Clone, Debug, Default)]
pub struct ConfigMetrics {
    updates: Family<ResultLabels, Counter>,
    applied: Family<VersionLabels, Gauge>,
    applied_at: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ConfigMetrics {
    /// Registers the config families into `registry` (prefix `bowline_config_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reg = registry.sub_registry_with_prefix("bowline_config");
        reg.register(
            "updates",
            "Config updates received, by result (ack or nack)",
            m.updates.clone(),
        );
        reg.register(
            "applied_info",
            "The system version of the config in service (value 1)",
            m.applied.clone(),
        );
        reg.register(
            "applied_timestamp_seconds",
            "Unix time at which the config in service was applied",
            m.applied_at.clone(),
        );
        m
    }

    pub(crate) fn ack(&self, previous: Option<&str>, version: &str) {
        self.updates
            .get_or_create(&ResultLabels { result: "ack" })
            .inc();
        if let Some(prev) = previous {
            self.applied.remove(&VersionLabels {
                version: prev.to_string(),
            });
        }
        self.applied
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.applied_at.set(now);
    }

    pub(crate) fn nack(&self) {
        self.updates
            .get_or_create(&ResultLabels { result: "nack" })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn route_and_cluster_counters_share_the_family() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::register(&mut registry);
        let a = m.route("gatewayroute/shop/a");
        a.record(http::StatusCode::OK);
        a.record(http::StatusCode::NO_CONTENT);
        a.record(http::StatusCode::SERVICE_UNAVAILABLE);
        // A second handle for the same route (after a config update) adds to the same series.
        m.route("gatewayroute/shop/a")
            .record(http::StatusCode::CREATED);
        m.cluster("c")
            .record_error(UpstreamErrorReason::ConnectRefused);
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"bowline_requests_total{route="gatewayroute/shop/a",status_class="2xx"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bowline_requests_total{route="gatewayroute/shop/a",status_class="5xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bowline_upstream_errors_total{cluster="c",reason="connect_refused"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn applied_version_replaces_the_previous_one() {
        let mut registry = Registry::default();
        let m = ConfigMetrics::register(&mut registry);
        m.ack(None, "v1");
        m.ack(Some("v1"), "v2");
        m.nack();
        let text = encode(&registry);
        assert!(
            text.contains(r#"bowline_config_applied_info{version="v2"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"version="v1""#), "{text}");
        assert!(
            text.contains(r#"bowline_config_updates_total{result="ack"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bowline_config_updates_total{result="nack"} 1"#),
            "{text}"
        );
    }
}

// === resilience metrics ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverflowLabels {
    cluster: Name,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    cluster: Name,
    endpoint: String,
}

/// The limits a circuit breaker names when it trips (label values and `x-bowline-overflow`).
pub const OVERFLOW_LIMITS: [&str; 3] = ["max-connections", "max-pending-requests", "max-requests"];

impl ProxyMetrics {
    fn register_resilience(&self, reg: &mut Registry) {
        reg.register("retries", "Retries sent to a cluster", self.retries.clone());
        reg.register(
            "retry_budget_exhausted",
            "Retries not sent because the cluster's retry budget was spent",
            self.retry_budget_exhausted.clone(),
        );
        reg.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection, by cluster",
            self.outlier_ejections.clone(),
        );
        reg.register(
            "circuit_breaker_overflows",
            "Requests answered 503 because a connection pool limit was reached, by cluster and limit",
            self.circuit_breaker_overflows.clone(),
        );
        reg.register(
            "endpoint_healthy",
            "Active health check verdict of an endpoint (1 healthy, 0 unhealthy)",
            self.endpoint_healthy.clone(),
        );
    }

    /// The resilience counters of one cluster, resolved once (at config compile).
    pub fn resilience(&self, cluster: &str) -> ResilienceStats {
        let name = Name(Arc::from(cluster));
        let labels = ClusterLabels {
            cluster: name.clone(),
        };
        ResilienceStats {
            retries: self.retries.get_or_create(&labels).clone(),
            budget_exhausted: self.retry_budget_exhausted.get_or_create(&labels).clone(),
            ejections: self.outlier_ejections.get_or_create(&labels).clone(),
            overflows: OVERFLOW_LIMITS.map(|limit| {
                self.circuit_breaker_overflows
                    .get_or_create(&OverflowLabels {
                        cluster: name.clone(),
                        limit,
                    })
                    .clone()
            }),
            endpoint_healthy: self.endpoint_healthy.clone(),
            cluster: name,
        }
    }
}

/// Counters of one cluster's retries, ejections and breaker overflows; endpoint health gauges.
#[derive(Clone, Debug)]
pub struct ResilienceStats {
    pub retries: Counter,
    pub budget_exhausted: Counter,
    pub ejections: Counter,
    /// Indexed like [`OVERFLOW_LIMITS`].
    pub overflows: [Counter; 3],
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    cluster: Name,
}

impl ResilienceStats {
    /// Sets the health gauge of `endpoint`.
    pub fn set_endpoint_health(&self, endpoint: &str, healthy: bool) {
        self.endpoint_healthy
            .get_or_create(&self.endpoint_labels(endpoint))
            .set(i64::from(healthy));
    }

    /// Removes the health gauge of `endpoint` (its checks stopped).
    pub fn forget_endpoint(&self, endpoint: &str) {
        self.endpoint_healthy
            .remove(&self.endpoint_labels(endpoint));
    }

    fn endpoint_labels(&self, endpoint: &str) -> EndpointLabels {
        EndpointLabels {
            cluster: self.cluster.clone(),
            endpoint: endpoint.to_string(),
        }
    }
}

#[cfg(test)]
mod resilience_tests {
    use super::*;

    #[test]
    fn resilience_families_are_exposed_per_cluster() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::register(&mut registry);
        let s = m.resilience("node/shop/a/8080");
        s.retries.inc();
        s.ejections.inc();
        s.overflows[1].inc();
        s.set_endpoint_health("10.0.0.1:80", false);
        s.set_endpoint_health("10.0.0.2:80", true);
        s.forget_endpoint("10.0.0.2:80");
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"bowline_retries_total{cluster="node/shop/a/8080"} 1"#,
            r#"bowline_retry_budget_exhausted_total{cluster="node/shop/a/8080"} 0"#,
            r#"bowline_outlier_ejections_total{cluster="node/shop/a/8080"} 1"#,
            r#"bowline_circuit_breaker_overflows_total{cluster="node/shop/a/8080",limit="max-pending-requests"} 1"#,
            r#"bowline_endpoint_healthy{cluster="node/shop/a/8080",endpoint="10.0.0.1:80"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("10.0.0.2:80"), "{text}");
    }
}
