//! gRPC at the edge: the client's `grpc-timeout` bounds the request like a route timeout (the
//! retry loop takes the shortest deadline), and
//! when the proxy itself answers a gRPC request it answers in gRPC terms: HTTP 200 with
//! `grpc-status` and `grpc-message` in a trailers-only response, so gRPC clients see a status
//! code (UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED…) instead of a protocol error.

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::error::{ProxyError, X_BOWLINE_ERROR};

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Whether a request is gRPC (`content-type: application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's `grpc-timeout` (`1S`, `250m`, `100u`… as the gRPC spec writes it), if valid.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for a failure the proxy answers itself (the gRPC spec's HTTP mapping, with
/// timeouts as DEADLINE_EXCEEDED and limits as RESOURCE_EXHAUSTED).
fn status_code(err: &ProxyError, http: StatusCode) -> u8 {
    match err {
        ProxyError::Timeout { .. } => 4,
        ProxyError::BodyTooLarge { .. }
        | ProxyError::HeadersTooLarge { .. }
        | ProxyError::UriTooLong { .. } => 8,
        _ => match http.as_u16() {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        },
    }
}

/// Turns a failure into a trailers-only gRPC response.
pub fn respond(err: &ProxyError) -> Response<ProxyBody> {
    let (http, reason) = err.classify();
    let mut resp = Response::new(ProxyBody::empty());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        &GRPC_STATUS,
        HeaderValue::from(u16::from(status_code(err, http))),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&err.to_string())) {
        h.insert(&GRPC_MESSAGE, v);
    }
    h.insert(&X_BOWLINE_ERROR, HeaderValue::from_static(reason));
    resp
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII, and `%` itself.
fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        for (v, d) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("100u", Duration::from_micros(100)),
            ("7n", Duration::from_nanos(7)),
        ] {
            assert_eq!(timeout(&h(&[("grpc-timeout", v)])), Some(d), "{v}");
        }
        for bad in ["", "S", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(timeout(&h(&[("grpc-timeout", bad)])), None, "{bad:?}");
        }
    }

    #[test]
    fn failures_become_grpc_statuses() {
        assert!(is_grpc(&h(&[("content-type", "application/grpc+proto")])));
        assert!(!is_grpc(&h(&[("content-type", "application/json")])));
        let cases = [
            (
                ProxyError::Timeout {
                    cluster: "c".into(),
                    timeout: Duration::from_secs(1),
                },
                "4",
            ),
            (
                ProxyError::NoEndpoints {
                    cluster: "c".into(),
                },
                "14",
            ),
            (
                ProxyError::NoRoute {
                    host: "h".into(),
                    path: "/pkg.Svc/M".into(),
                },
                "12",
            ),
        ];
        for (err, code) in cases {
            let resp = respond(&err);
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["grpc-status"], code, "{err}");
            assert_eq!(resp.headers()["content-type"], "application/grpc");
            assert!(resp.headers().contains_key("grpc-message"));
        }
        assert_eq!(percent_encode("50% off\n"), "50%25 off%0A");
    }
}
