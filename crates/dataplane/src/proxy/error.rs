//! Every way a request can fail inside the proxy, and the one place where a failure becomes an
//! HTTP response: a short text body that says why, and an `x-bowline-error` header with a stable
//! reason for scripts and tests.
//!
//! | status | `x-bowline-error` | when |
//! |---|---|---|
//! | 404 | `no_route` | no virtual host or route matches |
//! | 404 | `no_listener` | the listener was removed while the connection drains |
//! | 421 | `misdirected` | the host is served by another certificate entry of the listener than the connection's SNI chose (listeners that detect misdirected requests) |
//! | 400 | `request_body` | the client's body could not be read (a retryable request's, read first) |
//! | 500 | `delegation_depth` | more than 4 delegations |
//! | 500 | `invalid_rewrite` | a rewrite produced an invalid path |
//! | 502 | `upstream_reset` | the upstream closed or broke the exchange |
//! | 503 | `no_endpoints` | the cluster has no endpoints |
//! | 503 | `connect_refused`, `connect_timeout`, `connect_failed` | no connection to the endpoint |
//! | 504 | `upstream_timeout` | no response headers within the route's timeout |
//! | 504 | `send_timeout` | a write of the request to the upstream stayed blocked past the cluster's send timeout |
//! | 502 | `upgrade_unsupported` | an Upgrade request routed to an HTTP/2 cluster |
//! | 413 | `body_too_large` | the request's `Content-Length` exceeds the limit |
//! | 414 | `uri_too_long` | the request target exceeds the limit |
//! | 431 | `headers_too_large` | too many request headers (HTTP/2; hyper answers HTTP/1.1 itself) |
//! | 503 | `overflow` | a circuit breaker (connection pool limit) tripped; `x-bowline-overflow` names it |
//! | 403 | `client_denied` | the route's access list refuses the client's address |
//! | 503 or the route's | `rate_limited` | the client exceeded a request rate of the route's zone; with `Retry-After` |
//! | 503 or the route's | `client_concurrency` | the client has too many requests in flight in the route's zone |

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::metrics::UpstreamErrorReason;
use crate::router::Refusal;
use crate::router::RouteError;
use crate::upstream::UpstreamError;

/// Response header naming why the proxy answered instead of an upstream.
pub static X_BOWLINE_ERROR: HeaderName = HeaderName::from_static("x-bowline-error");

/// Response header naming the connection pool limit that tripped: `max-connections`,
/// `max-pending-requests` or `max-requests`.
pub static X_BOWLINE_OVERFLOW: HeaderName = HeaderName::from_static("x-bowline-overflow");

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no listener on port {port}")]
    NoListener { port: u16 },
    #[error("no route for host {host:?} path {path:?}")]
    NoRoute { host: String, path: String },
    #[error(
        "host {host:?} is not served on this connection (TLS server name {sni:?}): open a new connection for it"
    )]
    Misdirected { host: String, sni: Option<String> },
    #[error("{0}")]
    Delegation(RouteError),
    #[error("rewritten path {path:?} is not a valid path")]
    InvalidRewrite { path: String },
    #[error("cluster {cluster:?} has no endpoints")]
    NoEndpoints { cluster: String },
    #[error(
        "route {route:?}: this share of its requests goes to a backend that cannot be resolved"
    )]
    UnresolvedBackend { route: String },
    #[error("cluster {cluster:?}: {source}")]
    Upstream {
        cluster: String,
        #[source]
        source: UpstreamError,
    },
    #[error("cluster {cluster:?}: no response within {timeout:?}")]
    Timeout { cluster: String, timeout: Duration },
    #[error("request target longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request headers exceed the limit of {limit}")]
    HeadersTooLarge { limit: String },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("cluster {cluster:?} speaks HTTP/2: it cannot take an HTTP/1.1 Upgrade")]
    UpgradeUnsupported { cluster: String },
    #[error("the request body could not be read: {reason}")]
    RequestBody { reason: String },
    #[error("client {client}: {}", refusal_text(refusal))]
    Refused {
        client: std::net::IpAddr,
        refusal: Refusal,
    },
    #[error("cluster {cluster:?}: circuit breaker open: {} reached", limit.as_str())]
    Overflow {
        cluster: String,
        limit: crate::breaker::Overflow,
    },
}

impl ProxyError {
    /// The status and `x-bowline-error` value.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoListener { .. } => (StatusCode::NOT_FOUND, "no_listener"),
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            Self::Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, "misdirected"),
            Self::Delegation(_) => (StatusCode::INTERNAL_SERVER_ERROR, "delegation_depth"),
            Self::InvalidRewrite { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "invalid_rewrite"),
            Self::UnresolvedBackend { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "unresolved_backend")
            }
            Self::NoEndpoints { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                UpstreamErrorReason::NoEndpoints.as_str(),
            ),
            Self::Upstream { source, .. } => {
                let reason = source.reason();
                let status = match reason {
                    UpstreamErrorReason::Reset => StatusCode::BAD_GATEWAY,
                    UpstreamErrorReason::SendTimeout => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                (status, reason.as_str())
            }
            Self::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                UpstreamErrorReason::Timeout.as_str(),
            ),
            Self::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UpgradeUnsupported { .. } => (StatusCode::BAD_GATEWAY, "upgrade_unsupported"),
            Self::Overflow { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overflow"),
            Self::RequestBody { .. } => (StatusCode::BAD_REQUEST, "request_body"),
            Self::Refused { refusal, .. } => match refusal {
                Refusal::Denied => (StatusCode::FORBIDDEN, "client_denied"),
                Refusal::Rate { status, .. } => (*status, "rate_limited"),
                Refusal::Concurrency { status, .. } => (*status, "client_concurrency"),
            },
        }
    }

    /// The upstream error reason, for the cluster's error counters.
    pub fn upstream_reason(&self) -> Option<UpstreamErrorReason> {
        match self {
            Self::NoEndpoints { .. } => Some(UpstreamErrorReason::NoEndpoints),
            Self::Upstream { source, .. } => Some(source.reason()),
            Self::Timeout { .. } => Some(UpstreamErrorReason::Timeout),
            _ => None,
        }
    }
}

/// Turns a failure into the response the client gets.
pub fn respond(err: &ProxyError) -> Response<ProxyBody> {
    let (status, reason) = err.classify();
    let mut resp = Response::new(ProxyBody::full(format!("{err}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(&X_BOWLINE_ERROR, HeaderValue::from_static(reason));
    if let ProxyError::Overflow { limit, .. } = err {
        h.insert(
            &X_BOWLINE_OVERFLOW,
            HeaderValue::from_static(limit.as_str()),
        );
    }
    if let ProxyError::Refused {
        refusal: Refusal::Rate { retry_after, .. },
        ..
    } = err
    {
        // Whole seconds, rounded up: a client that waits that long is admitted.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

fn refusal_text(r: &Refusal) -> String {
    match r {
        Refusal::Denied => "address not allowed by the route".into(),
        Refusal::Rate { zone, .. } => format!("request rate limit of zone {zone:?} exceeded"),
        Refusal::Concurrency { zone, limit, .. } => {
            format!("more than {limit} requests in flight in zone {zone:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(resp: Response<ProxyBody>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn errors_become_responses() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (
                ProxyError::NoRoute {
                    host: "x".into(),
                    path: "/y".into(),
                },
                404,
                "no_route",
                "no route for host \"x\" path \"/y\"\n",
            ),
            (
                ProxyError::NoEndpoints {
                    cluster: "shop/empty".into(),
                },
                503,
                "no_endpoints",
                "cluster \"shop/empty\" has no endpoints\n",
            ),
            (
                ProxyError::Upstream {
                    cluster: "shop/dead".into(),
                    source: UpstreamError::ConnectRefused { addr },
                },
                503,
                "connect_refused",
                "cluster \"shop/dead\": connection refused by 127.0.0.1:1\n",
            ),
            (
                ProxyError::Upstream {
                    cluster: "c".into(),
                    source: UpstreamError::ConnectTimeout {
                        addr,
                        timeout: Duration::from_millis(250),
                    },
                },
                503,
                "connect_timeout",
                "cluster \"c\": connect to 127.0.0.1:1 timed out after 250ms\n",
            ),
            (
                ProxyError::Timeout {
                    cluster: "c".into(),
                    timeout: Duration::from_secs(2),
                },
                504,
                "upstream_timeout",
                "cluster \"c\": no response within 2s\n",
            ),
            (
                ProxyError::Delegation(RouteError::TooManyDelegations { route: "r".into() }),
                500,
                "delegation_depth",
                "route \"r\" delegates more than 4 times\n",
            ),
            (
                ProxyError::Overflow {
                    cluster: "c".into(),
                    limit: crate::breaker::Overflow::MaxPendingRequests,
                },
                503,
                "overflow",
                "cluster \"c\": circuit breaker open: max-pending-requests reached\n",
            ),
        ];
        for (err, status, reason, body) in cases {
            let resp = respond(&err);
            assert_eq!(resp.status().as_u16(), status, "{err}");
            assert_eq!(resp.headers()[&X_BOWLINE_ERROR], reason, "{err}");
            let overflow = resp.headers().get(&X_BOWLINE_OVERFLOW);
            match &err {
                ProxyError::Overflow { limit, .. } => {
                    assert_eq!(overflow.unwrap(), limit.as_str());
                }
                _ => assert!(overflow.is_none(), "{err}"),
            }
            assert_eq!(text(resp).await, body);
        }
    }
}
