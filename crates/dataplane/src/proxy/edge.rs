//! Edge hardening: request limits, the connection cap, and the forwarding headers
//! (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Request-Id`) with a trust boundary.
//!
//! Limits that hyper enforces while parsing (header bytes, header count, the header-read timeout
//! against slowloris) are set on the server builder by [`EdgeConfig::configure`]; the rest are
//! checked once per request by [`EdgeConfig::check`] before routing.
//!
//! Ambiguous HTTP/1.1 framing never reaches an upstream: hyper rejects (400) differing
//! duplicate `Content-Length`s, a `Transfer-Encoding` that does not end in `chunked`, and
//! `Transfer-Encoding` in HTTP/1.0; when both `Transfer-Encoding` and `Content-Length` are sent,
//! `Transfer-Encoding` wins and the connection is closed after the response (RFC 9112 §6.3), and
//! the proxy always re-frames the request it sends upstream, so no bytes can be smuggled past it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;

use super::error::ProxyError;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits and trust settings of the proxy's edge. Defaults follow what nginx and Envoy ship.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Time a client has to send a complete request head (slowloris protection).
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) in bytes: 431 beyond.
    pub max_request_header_bytes: usize,
    /// Most request headers: 431 beyond.
    pub max_request_headers: usize,
    /// Longest request target (path + query) in bytes: 414 beyond.
    pub max_uri_bytes: usize,
    /// Largest request body by `Content-Length`, in bytes: 413 beyond. `None`: no limit.
    pub max_request_body_bytes: Option<u64>,
    /// Most concurrent client connections across all listeners; beyond, new connections are
    /// closed at once.
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-*` and `X-Request-Id` headers are believed (other proxies, load
    /// balancers). Everyone else's are replaced.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            header_read_timeout: Duration::from_secs(10),
            max_request_header_bytes: 64 * 1024,
            max_request_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_request_body_bytes: None,
            max_connections: 16 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl EdgeConfig {
    /// Puts the parse-time limits on the server builder.
    pub fn configure(&self, server: &mut auto::Builder<TokioExecutor>) {
        // hyper's read buffer must hold at least 8 KiB.
        let buf = self.max_request_header_bytes.max(8 * 1024);
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(buf)
            .max_headers(self.max_request_headers);
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_request_header_bytes).unwrap_or(u32::MAX));
    }

    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// Checks the limits hyper does not enforce for every protocol (HTTP/2 has no URI limit of
    /// its own, and no header-count limit).
    pub fn check(&self, path_and_query_len: usize, headers: &HeaderMap) -> Result<(), ProxyError> {
        if path_and_query_len > self.max_uri_bytes {
            return Err(ProxyError::UriTooLong {
                limit: self.max_uri_bytes,
            });
        }
        if headers.len() > self.max_request_headers {
            return Err(ProxyError::HeadersTooLarge {
                limit: format!("{} headers", self.max_request_headers),
            });
        }
        Ok(())
    }

    /// Checks the request's `Content-Length` against the body limit in force: the route's
    /// (`Some(0)`: none), else [`EdgeConfig::max_request_body_bytes`]. Runs once the route is
    /// known.
    pub fn check_body(
        &self,
        route_limit: Option<u64>,
        headers: &HeaderMap,
    ) -> Result<(), ProxyError> {
        let limit = match route_limit {
            Some(0) => return Ok(()),
            Some(n) => n,
            None => match self.max_request_body_bytes {
                Some(n) => n,
                None => return Ok(()),
            },
        };
        if let Some(len) = headers.get(CONTENT_LENGTH)
            && let Some(len) = std::str::from_utf8(len.as_bytes())
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            && len > limit
        {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so `10.0.0.0/8` matches `::ffff:10.1.2.3`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `10.0.0.0/8`, `fd00::/8` or a single address (`192.168.1.10`).
pub fn parse_trusted(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
}

/// Counts open client connections against [`EdgeConfig::max_connections`].
#[derive(Debug, Default)]
pub struct ConnectionLimit {
    open: AtomicUsize,
}

impl ConnectionLimit {
    /// Takes a slot, or `None` when `max` connections are open.
    pub fn acquire(&self, max: usize) -> Option<ConnectionSlot<'_>> {
        let mut cur = self.open.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(ConnectionSlot(self)),
                Err(now) => cur = now,
            }
        }
    }
}

/// Releases its slot when dropped.
#[derive(Debug)]
pub struct ConnectionSlot<'a>(&'a ConnectionLimit);

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets the forwarding headers of a request about to go upstream.
///
/// From a trusted peer, `X-Forwarded-For` gets the peer appended and the other headers are kept
/// when present; from anyone else, all of them are replaced, so clients cannot spoof their
/// address, scheme, host or request id.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    trusted: bool,
    client_ip: &HeaderValue,
    scheme: &'static str,
    host: Option<&HeaderValue>,
) {
    let xff = match trusted
        .then(|| join_forwarded_for(headers, client_ip))
        .flatten()
    {
        Some(chain) => chain,
        None => client_ip.clone(),
    };
    headers.insert(&X_FORWARDED_FOR, xff);
    if !trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if (!trusted || !headers.contains_key(&X_FORWARDED_HOST))
        && let Some(host) = host
    {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    } else if !trusted && host.is_none() {
        headers.remove(&X_FORWARDED_HOST);
    }
    if !trusted || !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(&X_REQUEST_ID, request_id());
    }
}

/// The existing `X-Forwarded-For` values (several lines are one list) followed by `client_ip`.
fn join_forwarded_for(headers: &HeaderMap, client_ip: &HeaderValue) -> Option<HeaderValue> {
    let mut values = headers.get_all(&X_FORWARDED_FOR).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for v in values.chain(std::iter::once(client_ip)) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// A random request id in UUID v4 form, from the per-thread non-cryptographic generator (an id
/// must be unique, not secret; this costs a few nanoseconds instead of a ChaCha block).
pub fn request_id() -> HeaderValue {
    let hi = crate::lb::random_u64().to_le_bytes();
    let lo = crate::lb::random_u64().to_le_bytes();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi);
    b[8..].copy_from_slice(&lo);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0x0f)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn the_route_body_limit_overrides_the_listener_limit() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("2000"));
        let unlimited = EdgeConfig::default();
        let limited = EdgeConfig {
            max_request_body_bytes: Some(1000),
            ..EdgeConfig::default()
        };
        let too_large = |r: Result<(), ProxyError>| match r {
            Err(ProxyError::BodyTooLarge { limit }) => Some(limit),
            Ok(()) => None,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(too_large(unlimited.check_body(None, &h)), None);
        assert_eq!(too_large(limited.check_body(None, &h)), Some(1000));
        assert_eq!(
            too_large(limited.check_body(Some(0), &h)),
            None,
            "0 lifts it"
        );
        assert_eq!(too_large(limited.check_body(Some(4096), &h)), None);
        assert_eq!(too_large(unlimited.check_body(Some(1999), &h)), Some(1999));
        assert_eq!(too_large(unlimited.check_body(Some(2000), &h)), None);
        // Without Content-Length there is nothing to check.
        assert_eq!(
            too_large(limited.check_body(Some(1), &HeaderMap::new())),
            None
        );
    }

    #[test]
    fn untrusted_peers_cannot_spoof_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, ip("6.6.6.6"));
        h.insert(&X_FORWARDED_PROTO, ip("https"));
        h.insert(&X_FORWARDED_HOST, ip("evil.example"));
        h.insert(&X_REQUEST_ID, ip("chosen-by-client"));
        set_forwarding_headers(
            &mut h,
            false,
            &ip("10.1.1.1"),
            "http",
            Some(&ip("shop.example")),
        );
        assert_eq!(
            h.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            [ip("10.1.1.1")]
        );
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");
        assert_ne!(h[&X_REQUEST_ID], "chosen-by-client");
        assert_eq!(h[&X_REQUEST_ID].len(), 36);
    }

    #[test]
    fn trusted_peers_extend_the_chain_and_keep_the_rest() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, ip("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, ip("2.2.2.2"));
        h.insert(&X_FORWARDED_PROTO, ip("https"));
        h.insert(&X_REQUEST_ID, ip("abc"));
        set_forwarding_headers(
            &mut h,
            true,
            &ip("10.0.0.5"),
            "http",
            Some(&ip("shop.example")),
        );
        assert_eq!(
            h.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            [ip("1.1.1.1, 2.2.2.2, 10.0.0.5")]
        );
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");
        assert_eq!(h[&X_REQUEST_ID], "abc");
    }

    #[test]
    fn trusted_peer_without_prior_headers_starts_the_chain() {
        let mut h = HeaderMap::new();
        set_forwarding_headers(&mut h, true, &ip("10.0.0.5"), "https", None);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.5");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert!(h.contains_key(&X_REQUEST_ID));
    }

    #[test]
    fn trust_matches_ranges_and_mapped_addresses() {
        let cfg = EdgeConfig {
            trusted_proxies: vec![
                parse_trusted("10.0.0.0/8").unwrap(),
                parse_trusted("fd00::1").unwrap(),
            ],
            ..EdgeConfig::default()
        };
        assert!(cfg.trusts("10.200.1.1".parse().unwrap()));
        assert!(cfg.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(cfg.trusts("fd00::1".parse().unwrap()));
        assert!(!cfg.trusts("fd00::2".parse().unwrap()));
        assert!(!cfg.trusts("11.0.0.1".parse().unwrap()));
        assert!(parse_trusted("ten").unwrap_err().contains("\"ten\""));
    }

    #[test]
    fn limits_name_what_was_exceeded() {
        let cfg = EdgeConfig {
            max_uri_bytes: 10,
            max_request_headers: 2,
            max_request_body_bytes: Some(5),
            ..EdgeConfig::default()
        };
        let mut h = HeaderMap::new();
        assert!(cfg.check(10, &h).is_ok());
        assert!(matches!(
            cfg.check(11, &h),
            Err(ProxyError::UriTooLong { limit: 10 })
        ));
        h.insert(CONTENT_LENGTH, ip("6"));
        assert!(matches!(
            cfg.check_body(None, &h),
            Err(ProxyError::BodyTooLarge { limit: 5 })
        ));
        h.insert(CONTENT_LENGTH, ip("5"));
        assert!(cfg.check_body(None, &h).is_ok());
        h.insert("a", ip("1"));
        h.insert("b", ip("1"));
        assert!(matches!(
            cfg.check(1, &h),
            Err(ProxyError::HeadersTooLarge { .. })
        ));
    }

    #[test]
    fn connection_slots_are_released() {
        let limit = ConnectionLimit::default();
        let a = limit.acquire(2).unwrap();
        let _b = limit.acquire(2).unwrap();
        assert!(limit.acquire(2).is_none());
        drop(a);
        assert!(limit.acquire(2).is_some());
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_ne!(request_id(), id);
    }
}
