//! Route filters: request and response header changes, mirrors and CORS, compiled once per
//! config update, and the [`FilterChain`] of the routes one request went through (a gateway
//! route that delegates, then a router route: outer first).
//!
//! Header changes are `remove`, then `set`, then `add`, with names and values parsed when
//! compiling, so applying them clones reference-counted values and allocates nothing. Across a
//! chain every route's changes apply, outer first (the inner route's `set` wins); the innermost
//! CORS policy decides; mirrors add up. A request whose routes have no filters pays for one
//! length check per hook.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bowline_model::ir;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use hyper::body::Incoming;

use super::client::{ClientPolicy, ClientSlot, Refusal, Zones};
use super::cors::CorsPolicy;
use super::mirror::{self, MirrorPolicy};
use super::{Cluster, CompileError, MAX_DELEGATIONS};
use crate::proxy::ProxyBody;
use crate::upstream::UpstreamBody;

/// Headers that describe the connection or the framing: header changes may not touch them.
const PROTECTED: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The filters of one route; routes without any have none (`Option<Box<_>>`).
#[derive(Debug)]
pub struct RouteFilters {
    request_headers: Option<HeaderMods>,
    response_headers: Option<HeaderMods>,
    mirrors: Box<[MirrorPolicy]>,
    cors: Option<CorsPolicy>,
    /// Access control, per-client limits and the body limit.
    client: Option<ClientPolicy>,
}

/// The header changes of one weighted cluster of a forward route (Gateway API filters of one
/// backendRef among several), applied after the route's when that cluster is chosen.
#[derive(Debug)]
pub struct BackendHeaders {
    request: Option<HeaderMods>,
    response: Option<HeaderMods>,
}

/// Compiled header changes.
#[derive(Debug)]
struct HeaderMods {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

/// The filters of the routes a request went through, outer first.
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterChain<'r> {
    routes: [Option<&'r RouteFilters>; MAX_DELEGATIONS + 1],
    len: usize,
}

/// The CORS policy that applies to a response, and the allowed origin to answer.
#[derive(Debug)]
pub struct CorsOrigin<'r> {
    policy: &'r CorsPolicy,
    origin: HeaderValue,
}

// === impl RouteFilters ===

impl RouteFilters {
    /// The filters of a route, or `None` when it has none.
    pub(super) fn compile(
        r: &ir::Route,
        clusters: &HashMap<String, Arc<Cluster>>,
        zones: &mut Zones<'_>,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Option<Box<RouteFilters>>, CompileError> {
        let client = ClientPolicy::compile(r, zones, err)?;
        if r.request_headers.is_empty()
            && r.response_headers.is_empty()
            && r.mirrors.is_empty()
            && r.cors.is_none()
            && client.is_none()
        {
            return Ok(None);
        }
        if !r.mirrors.is_empty()
            && matches!(
                r.action,
                ir::RouteAction::DirectResponse(_) | ir::RouteAction::Redirect(_)
            )
        {
            return Err(err(
                "mirrors",
                "mirrors apply to requests that are forwarded; this route answers itself".into(),
            ));
        }
        let mut mirrors = Vec::with_capacity(r.mirrors.len());
        for (i, m) in r.mirrors.iter().enumerate() {
            let cluster = clusters.get(&m.cluster).ok_or_else(|| {
                err(
                    &format!("mirrors[{i}].cluster"),
                    format!("unknown cluster {:?}", m.cluster),
                )
            })?;
            crate::tcp::check_http_cluster(cluster)
                .map_err(|e| err(&format!("mirrors[{i}].cluster"), e))?;
            if m.percent > 100 {
                return Err(err(
                    &format!("mirrors[{i}].percent"),
                    format!("{} is not a percentage (0..=100)", m.percent),
                ));
            }
            mirrors.push(MirrorPolicy::new(cluster.clone(), m.percent));
        }
        Ok(Some(Box::new(RouteFilters {
            request_headers: HeaderMods::compile(&r.request_headers, "requestHeaders", err)?,
            response_headers: HeaderMods::compile(&r.response_headers, "responseHeaders", err)?,
            mirrors: mirrors.into(),
            cors: r
                .cors
                .as_ref()
                .map(|c| CorsPolicy::compile(c, err))
                .transpose()?,
            client,
        })))
    }

    pub(super) fn has_cors(&self) -> bool {
        self.cors.is_some()
    }
}

// === impl BackendHeaders ===

impl BackendHeaders {
    /// The header changes of a weighted cluster (`at` is its path), or `None` when it has none.
    pub(super) fn compile(
        wc: &ir::WeightedCluster,
        at: &str,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Option<BackendHeaders>, CompileError> {
        let Some(h) = &wc.headers else {
            return Ok(None);
        };
        let request = HeaderMods::compile(&h.request, &format!("{at}.headers.request"), err)?;
        let response = HeaderMods::compile(&h.response, &format!("{at}.headers.response"), err)?;
        Ok((request.is_some() || response.is_some())
            .then_some(BackendHeaders { request, response }))
    }

    /// Applies the request header changes (after the route's).
    #[inline]
    pub fn on_request(&self, headers: &mut HeaderMap) {
        if let Some(m) = &self.request {
            m.apply(headers);
        }
    }

    /// Applies the response header changes (after the route's).
    #[inline]
    pub fn on_response(&self, headers: &mut HeaderMap) {
        if let Some(m) = &self.response {
            m.apply(headers);
        }
    }
}

// === impl HeaderMods ===

impl HeaderMods {
    fn compile(
        m: &ir::HeaderMods,
        at: &str,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Option<HeaderMods>, CompileError> {
        if m.is_empty() {
            return Ok(None);
        }
        let name = |path: String, n: &str| -> Result<HeaderName, CompileError> {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| err(&path, format!("{n:?} is not a header name")))?;
            if PROTECTED.contains(&name.as_str()) {
                return Err(err(
                    &path,
                    format!("{n:?} describes the connection or the framing and cannot be changed"),
                ));
            }
            Ok(name)
        };
        let pairs = |field: &str, list: &[ir::HeaderPair]| {
            list.iter()
                .enumerate()
                .map(|(i, h)| {
                    let n = name(format!("{at}.{field}[{i}].name"), &h.name)?;
                    let v = HeaderValue::from_str(&h.value).map_err(|_| {
                        err(
                            &format!("{at}.{field}[{i}].value"),
                            format!("{:?} is not a header value", h.value),
                        )
                    })?;
                    Ok((n, v))
                })
                .collect::<Result<Box<[_]>, CompileError>>()
        };
        Ok(Some(HeaderMods {
            remove: m
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| name(format!("{at}.remove[{i}]"), n))
                .collect::<Result<_, _>>()?,
            set: pairs("set", &m.set)?,
            add: pairs("add", &m.add)?,
        }))
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in self.set.iter() {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in self.add.iter() {
            headers.append(name.clone(), value.clone());
        }
    }
}

// === impl FilterChain ===

impl<'r> FilterChain<'r> {
    /// Records the next route of the chain (at most one per delegation).
    pub(super) fn push(&mut self, filters: Option<&'r RouteFilters>) {
        if let Some(f) = filters
            && self.len < self.routes.len()
        {
            self.routes[self.len] = Some(f);
            self.len += 1;
        }
    }

    /// Whether no route of the chain has filters.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &'r RouteFilters> + '_ {
        self.routes[..self.len].iter().flatten().copied()
    }

    /// Whether a route of the chain judges the client's address (access control or limits).
    #[inline]
    pub fn needs_client(&self) -> bool {
        !self.is_empty()
            && self
                .iter()
                .any(|f| f.client.as_ref().is_some_and(|c| c.needs_client()))
    }

    /// Checks the client against every route's access list and limits, outer route first. The
    /// slots of the concurrency limits that admitted it are pushed to `slots`; on refusal,
    /// those taken so far are released when `slots` is dropped.
    pub fn admit(&self, client: IpAddr, slots: &mut Vec<ClientSlot>) -> Result<(), Refusal> {
        for c in self.iter().filter_map(|f| f.client.as_ref()) {
            c.admit(client, slots)?;
        }
        Ok(())
    }

    /// The request body limit of the innermost route that sets one (`Some(0)`: no limit).
    #[inline]
    pub fn max_body(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        self.iter()
            .rev()
            .find_map(|f| f.client.as_ref().and_then(|c| c.max_body))
    }

    /// The CORS policy in force: the innermost route's.
    pub fn cors(&self) -> Option<&'r CorsPolicy> {
        self.iter().rev().find_map(|f| f.cors.as_ref())
    }

    /// The proxy's answer to a CORS preflight, when a policy applies to the request.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
        if self.is_empty() || !CorsPolicy::is_preflight(method, headers) {
            return None;
        }
        let mut resp = self.cors()?.preflight(headers);
        self.on_response(resp.headers_mut(), None);
        Some(resp)
    }

    /// The allowed origin of a request, to answer in the response's CORS headers.
    pub fn cors_origin(&self, headers: &HeaderMap) -> Option<CorsOrigin<'r>> {
        if self.is_empty() {
            return None;
        }
        let policy = self.cors()?;
        let origin = policy.allowed_origin(headers)?;
        Some(CorsOrigin { policy, origin })
    }

    /// Applies the request header changes.
    #[inline]
    pub fn on_request(&self, headers: &mut HeaderMap) {
        for f in self.iter() {
            if let Some(m) = &f.request_headers {
                m.apply(headers);
            }
        }
    }

    /// Applies the response header changes and the CORS headers.
    #[inline]
    pub fn on_response(&self, headers: &mut HeaderMap, cors: Option<CorsOrigin<'_>>) {
        if let Some(c) = cors {
            c.policy.apply(headers, c.origin);
        }
        for f in self.iter() {
            if let Some(m) = &f.response_headers {
                m.apply(headers);
            }
        }
    }

    /// Starts the mirrors of the chain that sample this request (fire-and-forget) and returns
    /// the body to send upstream: the downstream body itself, or a tee that keeps a copy for
    /// the mirrors. `head` is the upstream request as it is about to be sent.
    #[inline]
    pub fn mirror(&self, head: &http::request::Parts, body: Incoming) -> UpstreamBody {
        if self.is_empty() {
            return UpstreamBody::Streaming(body);
        }
        mirror::start(self.iter().flat_map(|f| f.mirrors.iter()), head, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};

    fn compile(m: ir::HeaderMods) -> Result<Option<HeaderMods>, CompileError> {
        HeaderMods::compile(&m, "requestHeaders", &|path: &str, reason: String| {
            CompileError {
                resource: "routeTable/t".into(),
                path: path.into(),
                reason,
            }
        })
    }

    fn pair(n: &str, v: &str) -> ir::HeaderPair {
        ir::HeaderPair {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn header_changes_remove_then_set_then_add() {
        let m = compile(ir::HeaderMods {
            add: vec![pair("x-add", "2"), pair("X-Set", "appended")],
            set: vec![pair("x-set", "new")],
            remove: vec!["X-Remove".into(), "x-set".into()],
        })
        .unwrap()
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-add", HeaderValue::from_static("1"));
        h.append("x-set", HeaderValue::from_static("old-1"));
        h.append("x-set", HeaderValue::from_static("old-2"));
        h.append("x-remove", HeaderValue::from_static("gone"));
        h.append("x-keep", HeaderValue::from_static("kept"));
        m.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-add"), ["1", "2"]);
        assert_eq!(all("x-set"), ["new", "appended"]);
        assert!(all("x-remove").is_empty());
        assert_eq!(all("x-keep"), ["kept"]);
        assert!(compile(ir::HeaderMods::default()).unwrap().is_none());
    }

    #[test]
    fn protected_and_invalid_headers_are_rejected() {
        for (m, path) in [
            (
                ir::HeaderMods {
                    set: vec![pair("Host", "x")],
                    ..Default::default()
                },
                "requestHeaders.set[0].name",
            ),
            (
                ir::HeaderMods {
                    remove: vec!["ok".into(), "content-length".into()],
                    ..Default::default()
                },
                "requestHeaders.remove[1]",
            ),
            (
                ir::HeaderMods {
                    add: vec![pair("x-ok", "fine"), pair("bad name", "x")],
                    ..Default::default()
                },
                "requestHeaders.add[1].name",
            ),
            (
                ir::HeaderMods {
                    add: vec![pair("x-bad", "line\nbreak")],
                    ..Default::default()
                },
                "requestHeaders.add[0].value",
            ),
            (
                ir::HeaderMods {
                    set: vec![pair(":path", "/")],
                    ..Default::default()
                },
                "requestHeaders.set[0].name",
            ),
        ] {
            let e = compile(m).expect_err("rejected");
            assert_eq!(e.path, path, "{e}");
        }
        // The list is the connection-level headers of RFC 9110 plus the framing ones.
        for n in [
            HOST,
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            CONNECTION,
            TE,
            TRAILER,
            UPGRADE,
        ] {
            assert!(PROTECTED.contains(&n.as_str()), "{n}");
        }
    }
}
