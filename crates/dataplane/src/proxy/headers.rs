//! Hop-by-hop headers: they describe one connection and must not be forwarded (RFC 9110 §7.6.1).

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` is one of the hop-by-hop headers handled below.
#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes `Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`,
/// `Transfer-Encoding`, `Upgrade`, and `TE` unless it asks for trailers (gRPC needs
/// `te: trailers`). Allocates only when `Connection` names other headers.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present instead of six hashed
    // lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(&CONNECTION) {
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(&CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.is_empty()
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("keep-alive")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    // `Connection: te` must not drop `te: trailers`; TE is handled below.
                    if name != TE {
                        listed.push(name);
                    }
                }
            }
        }
        for name in listed {
            headers.remove(name);
        }
        headers.remove(&CONNECTION);
    }
    if headers.contains_key(&KEEP_ALIVE) {
        headers.remove(&KEEP_ALIVE);
    }
    if headers.contains_key(&PROXY_CONNECTION) {
        headers.remove(&PROXY_CONNECTION);
    }
    if headers.contains_key(&TRANSFER_ENCODING) {
        headers.remove(&TRANSFER_ENCODING);
    }
    if headers.contains_key(&UPGRADE) {
        headers.remove(&UPGRADE);
    }
    if headers.contains_key(&TE) {
        let trailers = headers.get_all(&TE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .eq_ignore_ascii_case("trailers")
                })
            })
        });
        if trailers {
            headers.insert(&TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(&TE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "x-other"),
            ("x-custom-hop", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
            ("host", "a.example"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["host: a.example", "x-end-to-end: kept"]);
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = map(&[
            ("te", "gzip, trailers;q=1"),
            ("content-type", "application/grpc"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(
            names(&h),
            ["content-type: application/grpc", "te: trailers"]
        );
        let mut h = map(&[("te", "trailers"), ("connection", "te")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["te: trailers"]);
    }

    #[test]
    fn leaves_clean_maps_alone() {
        let mut h = map(&[("accept", "*/*"), ("x-forwarded-for", "10.0.0.1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept: */*", "x-forwarded-for: 10.0.0.1"]);
    }
}
