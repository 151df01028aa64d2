//! Load balancing and resilience, App Mesh fields → IR.
//!
//! * A VirtualNode listener's `healthCheck`, `outlierDetection`, `connectionPool` and `timeout`
//!   apply to the cluster of that listener port, as App Mesh applies them to the node: every
//!   caller of the node gets them. `loadBalancer` (a Bowline extension) picks the cluster's
//!   policy.
//! * A router route's `retryPolicy` and `timeout.idle` apply to its forward action.
//! * A tcp node listener's `timeout.tcp.idle` goes on its cluster, for tcp proxying.
//!
//! Validation ([`bowline_model::validate`]) has already rejected documents with values out of
//! range; values that still do not fit (a negative duration read through the model's types) are
//! dropped rather than guessed.

use bowline_model::appmesh::{
    ConnectionPool, Duration, HealthCheckPolicy, HttpTimeout, ListenerTimeout, LoadBalancer,
    LoadBalancerPolicy, OutlierDetection, PortProtocol, Route as RouterRoute, TcpTimeout,
    VirtualNodeListener, VirtualNodeSpec,
};
use bowline_model::ir;

/// Fills the load-balancing and resilience fields of the cluster of `node`'s listener on `port`.
pub(super) fn apply_node_listener(cluster: &mut ir::Cluster, node: &VirtualNodeSpec, port: u16) {
    let Some(listener) = node
        .listeners
        .iter()
        .flatten()
        .find(|l| l.port_mapping.port == i64::from(port))
    else {
        return;
    };
    apply_listener(cluster, listener);
}

fn apply_listener(cluster: &mut ir::Cluster, l: &VirtualNodeListener) {
    if let Some(lb) = &l.load_balancer {
        let (policy, hash_on) = load_balancer(lb);
        cluster.lb_policy = policy;
        cluster.hash_on = hash_on;
    }
    cluster.health_check = l.health_check.as_ref().and_then(health_check);
    cluster.outlier_detection = l.outlier_detection.as_ref().and_then(outlier_detection);
    cluster.circuit_breakers = l.connection_pool.as_ref().and_then(circuit_breakers);
    if l.port_mapping.protocol != PortProtocol::Tcp {
        let t = l
            .timeout
            .as_ref()
            .and_then(|t| listener_timeout(t, l.port_mapping.protocol));
        cluster.request_timeout_ms = per_request_ms(t.and_then(|t| t.per_request.as_ref()));
        cluster.idle_timeout_ms = t.and_then(|t| t.idle.as_ref()).and_then(positive_ms);
    }
    if l.port_mapping.protocol == PortProtocol::Tcp {
        cluster.tcp_idle_timeout_ms = tcp_idle_ms(l.timeout.as_ref().and_then(|t| t.tcp.as_ref()));
    }
}

/// A tcp idle timeout (a route's or a tcp node listener's `timeout.idle`) in milliseconds.
/// Unlike the HTTP timeouts, 0 is kept: it disables the timeout (Envoy's `0s`, which App Mesh
/// passes through).
pub(super) fn tcp_idle_ms(t: Option<&TcpTimeout>) -> Option<u64> {
    t?.idle.as_ref()?.as_millis()
}

fn load_balancer(lb: &LoadBalancer) -> (ir::LbPolicy, Option<ir::HashOn>) {
    let policy = match lb.policy {
        LoadBalancerPolicy::RoundRobin => ir::LbPolicy::RoundRobin,
        LoadBalancerPolicy::LeastRequest => ir::LbPolicy::LeastRequest,
        LoadBalancerPolicy::Random => ir::LbPolicy::Random,
        LoadBalancerPolicy::RingHash => ir::LbPolicy::RingHash,
        LoadBalancerPolicy::PeakEwma => ir::LbPolicy::PeakEwma,
        LoadBalancerPolicy::Maglev => ir::LbPolicy::Maglev,
    };
    if !matches!(policy, ir::LbPolicy::RingHash | ir::LbPolicy::Maglev) {
        return (policy, None);
    }
    let hash_on = lb.hash_on.as_ref().and_then(|h| {
        if h.source_ip == Some(true) {
            Some(ir::HashOn::SourceIp)
        } else if let Some(hd) = &h.header {
            Some(ir::HashOn::Header {
                name: hd.name.to_ascii_lowercase(),
            })
        } else {
            h.cookie.as_ref().map(|c| ir::HashOn::Cookie {
                name: c.name.clone(),
                // Max-Age has a resolution of a second; a sub-second TTL still lasts one.
                ttl_seconds: c
                    .ttl
                    .as_ref()
                    .and_then(Duration::as_millis)
                    .map_or(0, |ms| ms.div_ceil(1000)),
                path: c.path.clone(),
                domain: None,
                secure: false,
                same_site: None,
            })
        }
    });
    match hash_on {
        Some(h) => (policy, Some(h)),
        // Validation requires hashOn for hash policies; without it, fall back to the default.
        None => (ir::LbPolicy::RoundRobin, None),
    }
}

fn protocol(p: PortProtocol) -> ir::Protocol {
    match p {
        PortProtocol::Http => ir::Protocol::Http,
        PortProtocol::Http2 => ir::Protocol::Http2,
        PortProtocol::Grpc => ir::Protocol::Grpc,
        PortProtocol::Tcp => ir::Protocol::Tcp,
    }
}

fn health_check(hc: &HealthCheckPolicy) -> Option<ir::HealthCheck> {
    let proto = protocol(hc.protocol);
    let http = matches!(proto, ir::Protocol::Http | ir::Protocol::Http2);
    Some(ir::HealthCheck {
        protocol: proto,
        interval_ms: u64::try_from(hc.interval_millis).ok().filter(|v| *v > 0)?,
        timeout_ms: u64::try_from(hc.timeout_millis).ok().filter(|v| *v > 0)?,
        healthy_threshold: u32::try_from(hc.healthy_threshold)
            .ok()
            .filter(|v| *v > 0)?,
        unhealthy_threshold: u32::try_from(hc.unhealthy_threshold)
            .ok()
            .filter(|v| *v > 0)?,
        // App Mesh ignores the path of tcp and grpc checks.
        path: if http {
            Some(hc.path.clone().filter(|p| p.starts_with('/'))?)
        } else {
            None
        },
        // The listener port is the endpoint port already; another port is checked as given.
        port: hc
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
    })
}

fn outlier_detection(o: &OutlierDetection) -> Option<ir::OutlierDetection> {
    Some(ir::OutlierDetection {
        max_server_errors: u32::try_from(o.max_server_errors).ok().filter(|v| *v > 0)?,
        interval_ms: o.interval.as_millis()?,
        base_ejection_duration_ms: o.base_ejection_duration.as_millis()?,
        max_ejection_percent: u32::try_from(o.max_ejection_percent)
            .ok()
            .filter(|v| *v <= 100)?,
    })
}

fn limit(v: i64) -> Option<u32> {
    u32::try_from(v).ok().filter(|v| *v > 0)
}

pub(super) fn circuit_breakers(pool: &ConnectionPool) -> Option<ir::CircuitBreakers> {
    let b = if let Some(t) = &pool.tcp {
        ir::CircuitBreakers {
            max_connections: limit(t.max_connections),
            ..Default::default()
        }
    } else if let Some(h) = &pool.http {
        ir::CircuitBreakers {
            max_connections: limit(h.max_connections),
            max_pending_requests: h.max_pending_requests.and_then(limit),
            ..Default::default()
        }
    } else if let Some(r) = pool.http2.as_ref().or(pool.grpc.as_ref()) {
        ir::CircuitBreakers {
            max_requests: limit(r.max_requests),
            ..Default::default()
        }
    } else {
        return None;
    };
    Some(b).filter(|b| *b != ir::CircuitBreakers::default())
}

/// The timeouts of the listener's own protocol.
fn listener_timeout(t: &ListenerTimeout, p: PortProtocol) -> Option<&HttpTimeout> {
    match p {
        PortProtocol::Http => t.http.as_ref(),
        PortProtocol::Http2 => t.http2.as_ref(),
        PortProtocol::Grpc => t.grpc.as_ref(),
        PortProtocol::Tcp => None,
    }
}

/// App Mesh's per-request timeout when a route or node listener sets none (Envoy's route
/// default, which App Mesh documents): 15 s.
pub(super) const DEFAULT_PER_REQUEST_MS: u64 = 15_000;

/// A route's or an HTTP node listener's `perRequest` in milliseconds, as App Mesh reads it:
/// absent is [`DEFAULT_PER_REQUEST_MS`], 0 disables the limit.
pub(super) fn per_request_ms(d: Option<&Duration>) -> Option<u64> {
    match d {
        None => Some(DEFAULT_PER_REQUEST_MS),
        Some(d) => positive_ms(d),
    }
}

fn positive_ms(d: &Duration) -> Option<u64> {
    d.as_millis().filter(|ms| *ms > 0)
}

// === routes ===

/// The retry policy of a router route for the protocol it is translated for.
pub(super) fn route_retry(r: &RouterRoute, proto: ir::Protocol) -> Option<ir::RetryPolicy> {
    let (http, tcp, grpc, max_retries, per_retry) = match proto {
        ir::Protocol::Http | ir::Protocol::Http2 => {
            let route = if proto == ir::Protocol::Http {
                r.http_route.as_ref()?
            } else {
                r.http2_route.as_ref()?
            };
            let p = route.retry_policy.as_ref()?;
            (
                p.http_retry_events.as_deref(),
                p.tcp_retry_events.as_deref(),
                None,
                p.max_retries,
                &p.per_retry_timeout,
            )
        }
        ir::Protocol::Grpc => {
            let p = r.grpc_route.as_ref()?.retry_policy.as_ref()?;
            (
                p.http_retry_events.as_deref(),
                p.tcp_retry_events.as_deref(),
                p.grpc_retry_events.as_deref(),
                p.max_retries,
                &p.per_retry_timeout,
            )
        }
        ir::Protocol::Tcp => return None,
    };
    let mut retry_on = Vec::new();
    let events = http
        .unwrap_or_default()
        .iter()
        .chain(tcp.unwrap_or_default())
        .chain(grpc.unwrap_or_default());
    for e in events {
        if let Some(on) = retry_event(e)
            && !retry_on.contains(&on)
        {
            retry_on.push(on);
        }
    }
    if retry_on.is_empty() {
        return None;
    }
    Some(ir::RetryPolicy {
        max_retries: u32::try_from(max_retries.max(0)).unwrap_or(u32::MAX),
        per_retry_timeout_ms: positive_ms(per_retry),
        retry_on,
    })
}

/// App Mesh's event names (validated to be one of these).
fn retry_event(e: &str) -> Option<ir::RetryOn> {
    Some(match e {
        "server-error" => ir::RetryOn::ServerError,
        "gateway-error" => ir::RetryOn::GatewayError,
        "client-error" => ir::RetryOn::ClientError,
        "stream-error" => ir::RetryOn::StreamError,
        "connection-error" => ir::RetryOn::ConnectionError,
        "cancelled" => ir::RetryOn::Cancelled,
        "deadline-exceeded" => ir::RetryOn::DeadlineExceeded,
        "internal" => ir::RetryOn::Internal,
        "resource-exhausted" => ir::RetryOn::ResourceExhausted,
        "unavailable" => ir::RetryOn::Unavailable,
        _ => return None,
    })
}

/// The stream idle timeout of a router route for the protocol it is translated for.
pub(super) fn route_idle_ms(r: &RouterRoute, proto: ir::Protocol) -> Option<u64> {
    let timeout = match proto {
        ir::Protocol::Http => r.http_route.as_ref()?.timeout.as_ref(),
        ir::Protocol::Http2 => r.http2_route.as_ref()?.timeout.as_ref(),
        ir::Protocol::Grpc => r.grpc_route.as_ref()?.timeout.as_ref(),
        ir::Protocol::Tcp => None,
    }?;
    timeout.idle.as_ref().and_then(positive_ms)
}

#[cfg(test)]
mod tests {
    use bowline_model::appmesh::DurationUnit;

    use super::*;

    #[test]
    fn per_request_timeouts_default_to_15_s_and_0_disables_them() {
        let d = |unit, value| Duration { unit, value };
        assert_eq!(per_request_ms(None), Some(15_000));
        assert_eq!(
            per_request_ms(Some(&d(DurationUnit::Seconds, 60))),
            Some(60_000)
        );
        assert_eq!(
            per_request_ms(Some(&d(DurationUnit::Milliseconds, 0))),
            None
        );
    }
}
