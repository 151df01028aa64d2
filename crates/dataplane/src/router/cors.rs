//! Cross-origin resource sharing (the Fetch standard's CORS protocol), answered by the proxy.
//!
//! * A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) to a route with a
//!   policy is answered `200` without reaching the upstream. When the origin is allowed, the
//!   answer carries `Access-Control-Allow-Origin`, `-Allow-Methods`, `-Allow-Headers`,
//!   `-Expose-Headers`, `-Max-Age` and `-Allow-Credentials`; otherwise it carries none, and the
//!   browser refuses the request.
//! * Any other request with an allowed `Origin` is forwarded, and the response gets
//!   `Access-Control-Allow-Origin`, `-Allow-Credentials` and `-Expose-Headers` (replacing the
//!   upstream's own).
//!
//! `Access-Control-Allow-Origin` is `*` when any origin is allowed, credentials are not, and the
//! request carries none (no `Authorization`, no `Cookie`); otherwise it echoes the request's
//! origin, with `Vary: Origin` (what the Gateway API conformance suite expects; to a browser both
//! answers refuse a credentialed request without `Access-Control-Allow-Credentials`). `*` in the allowed methods or
//! headers echoes what the preflight asks for (browsers do not honour `*` with credentials).
//! Every header value is built when the config is compiled.

use bowline_model::ir;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, CONTENT_LENGTH,
    COOKIE, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::CompileError;
use crate::proxy::ProxyBody;

/// A compiled CORS policy.
#[derive(Debug)]
pub struct CorsPolicy {
    any_origin: bool,
    /// Lower-case exact origins.
    exact: Box<[Box<str>]>,
    /// `scheme://*.suffix[:port]` as (lower-case `scheme://`, lower-case `.suffix[:port]`).
    wildcards: Box<[(Box<str>, Box<str>)]>,
    /// `None`: echo the requested method.
    allow_methods: Option<HeaderValue>,
    /// `None` with `echo_headers`: echo the requested headers; `None` without: send none.
    allow_headers: Option<HeaderValue>,
    echo_headers: bool,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
}

static TRUE: HeaderValue = HeaderValue::from_static("true");
static STAR: HeaderValue = HeaderValue::from_static("*");
static ORIGIN_VARY: HeaderValue = HeaderValue::from_static("origin");

impl CorsPolicy {
    pub(super) fn compile(
        c: &ir::Cors,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<CorsPolicy, CompileError> {
        let mut any_origin = false;
        let mut exact = Vec::new();
        let mut wildcards = Vec::new();
        if c.allow_origins.is_empty() {
            return Err(err("cors.allowOrigins", "no origin is allowed".into()));
        }
        for (i, o) in c.allow_origins.iter().enumerate() {
            let lower = o.to_ascii_lowercase();
            if lower == "*" {
                any_origin = true;
            } else if let Some((scheme, host)) = lower.split_once("://")
                && !scheme.is_empty()
                && !host.is_empty()
                && !host.contains('/')
            {
                if let Some(suffix) = host.strip_prefix('*') {
                    if !suffix.starts_with('.') || suffix.contains('*') {
                        return Err(err(
                            &format!("cors.allowOrigins[{i}]"),
                            format!(
                                "{o:?}: a wildcard must be a whole leftmost label (\"https://*.example.com\")"
                            ),
                        ));
                    }
                    wildcards.push((format!("{scheme}://").into(), suffix.into()));
                } else if host.contains('*') {
                    return Err(err(
                        &format!("cors.allowOrigins[{i}]"),
                        format!("{o:?}: a wildcard must be a whole leftmost label"),
                    ));
                } else {
                    exact.push(lower.into());
                }
            } else {
                return Err(err(
                    &format!("cors.allowOrigins[{i}]"),
                    format!("{o:?} is not an origin (\"scheme://host[:port]\" or \"*\")"),
                ));
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if m != "*" && Method::from_bytes(m.as_bytes()).is_err() {
                return Err(err(
                    &format!("cors.allowMethods[{i}]"),
                    format!("{m:?} is not an HTTP method"),
                ));
            }
        }
        let names = |field: &str, list: &[String]| -> Result<(), CompileError> {
            for (i, h) in list.iter().enumerate() {
                if h != "*" && HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(err(
                        &format!("cors.{field}[{i}]"),
                        format!("{h:?} is not a header name"),
                    ));
                }
            }
            Ok(())
        };
        names("allowHeaders", &c.allow_headers)?;
        names("exposeHeaders", &c.expose_headers)?;
        let list = |field: &str, items: &[String]| -> Result<Option<HeaderValue>, CompileError> {
            if items.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&items.join(", "))
                .map(Some)
                .map_err(|_| err(&format!("cors.{field}"), "not a header value".into()))
        };
        let star = |items: &[String]| items.iter().any(|x| x == "*");
        let allow_methods = if star(&c.allow_methods) {
            None
        } else if c.allow_methods.is_empty() {
            // The Fetch standard's CORS-safelisted methods.
            Some(HeaderValue::from_static("GET, HEAD, POST"))
        } else {
            list("allowMethods", &c.allow_methods)?
        };
        let echo_headers = star(&c.allow_headers);
        let allow_headers = if echo_headers {
            None
        } else {
            list("allowHeaders", &c.allow_headers)?
        };
        Ok(CorsPolicy {
            any_origin,
            exact: exact.into(),
            wildcards: wildcards.into(),
            allow_methods,
            allow_headers,
            echo_headers,
            expose_headers: list("exposeHeaders", &c.expose_headers)?,
            max_age: c.max_age_seconds.map(HeaderValue::from),
            allow_credentials: c.allow_credentials,
        })
    }

    /// Whether an `Origin` value is allowed.
    fn allows(&self, origin: &[u8]) -> bool {
        if self.any_origin {
            return true;
        }
        if self
            .exact
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
        {
            return true;
        }
        self.wildcards.iter().any(|(scheme, suffix)| {
            let (s, x) = (scheme.as_bytes(), suffix.as_bytes());
            origin.len() > s.len() + x.len()
                && origin[..s.len()].eq_ignore_ascii_case(s)
                && origin[origin.len() - x.len()..].eq_ignore_ascii_case(x)
                && !origin[s.len()..origin.len() - x.len()].contains(&b'/')
        })
    }

    /// The `Access-Control-Allow-Origin` to answer when the request's `Origin` is allowed: `*`
    /// or the origin itself.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        if !self.allows(origin.as_bytes()) {
            return None;
        }
        let credentialed = headers.contains_key(AUTHORIZATION) || headers.contains_key(COOKIE);
        Some(
            if self.any_origin && !self.allow_credentials && !credentialed {
                STAR.clone()
            } else {
                origin.clone()
            },
        )
    }

    /// Whether a request is a CORS preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        *method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = StatusCode::OK;
        let out = resp.headers_mut();
        out.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let Some(origin) = self.allowed_origin(headers) else {
            return resp;
        };
        self.set_origin(out, origin);
        match &self.allow_methods {
            Some(v) => {
                out.insert(ACCESS_CONTROL_ALLOW_METHODS, v.clone());
            }
            None => {
                if let Some(m) = headers.get(ACCESS_CONTROL_REQUEST_METHOD) {
                    out.insert(ACCESS_CONTROL_ALLOW_METHODS, m.clone());
                }
            }
        }
        match (&self.allow_headers, self.echo_headers) {
            (Some(v), _) => {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            (None, true) => {
                if let Some(h) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    out.insert(ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
                }
            }
            (None, false) => {}
        }
        if let Some(v) = &self.expose_headers {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if let Some(age) = &self.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        resp
    }

    /// Adds the CORS headers of an actual (non-preflight) request's response.
    pub fn apply(&self, out: &mut HeaderMap, origin: HeaderValue) {
        self.set_origin(out, origin);
        match &self.expose_headers {
            Some(v) => {
                out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            None => {
                out.remove(ACCESS_CONTROL_EXPOSE_HEADERS);
            }
        }
    }

    /// Sets `Access-Control-Allow-Origin` to what [`CorsPolicy::allowed_origin`] chose.
    fn set_origin(&self, out: &mut HeaderMap, origin: HeaderValue) {
        let echoed = origin != STAR;
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if echoed {
            out.append(VARY, ORIGIN_VARY.clone());
        }
        if self.allow_credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        } else {
            out.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(c: ir::Cors) -> Result<CorsPolicy, CompileError> {
        CorsPolicy::compile(&c, &|path: &str, reason: String| CompileError {
            resource: "routeTable/t".into(),
            path: path.into(),
            reason,
        })
    }

    fn cors(origins: &[&str]) -> ir::Cors {
        ir::Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_matching() {
        let p = compile(cors(&[
            "https://App.example.com",
            "https://*.shop.example",
            "http://*.dev:8080",
        ]))
        .unwrap();
        for (origin, want) in [
            ("https://app.example.com", true),
            ("HTTPS://APP.EXAMPLE.COM", true),
            ("http://app.example.com", false),
            ("https://app.example.com:8443", false),
            ("https://a.shop.example", true),
            ("https://a.b.shop.example", true),
            ("https://shop.example", false),
            ("https://.shop.example", false),
            ("http://a.shop.example", false),
            ("https://a.shop.example:8443", false),
            ("https://evil/x.shop.example", false),
            ("http://x.dev:8080", true),
            ("http://x.dev", false),
            ("null", false),
        ] {
            assert_eq!(p.allows(origin.as_bytes()), want, "{origin}");
        }
        assert!(compile(cors(&["*"])).unwrap().allows(b"https://anything"));
    }

    #[test]
    fn invalid_policies_name_the_field() {
        for (c, path) in [
            (cors(&[]), "cors.allowOrigins"),
            (cors(&["example.com"]), "cors.allowOrigins[0]"),
            (cors(&["*", "https://a.*.example"]), "cors.allowOrigins[1]"),
            (cors(&["https://*example.com"]), "cors.allowOrigins[0]"),
            (
                ir::Cors {
                    allow_methods: vec!["GET".into(), "BAD METHOD".into()],
                    ..cors(&["*"])
                },
                "cors.allowMethods[1]",
            ),
            (
                ir::Cors {
                    expose_headers: vec!["bad header".into()],
                    ..cors(&["*"])
                },
                "cors.exposeHeaders[0]",
            ),
        ] {
            assert_eq!(compile(c).unwrap_err().path, path);
        }
    }

    #[test]
    fn preflight_answers() {
        let p = compile(ir::Cors {
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["x-token".into(), "content-type".into()],
            expose_headers: vec!["x-trace".into()],
            max_age_seconds: Some(600),
            allow_credentials: true,
            ..cors(&["https://app.example"])
        })
        .unwrap();
        let req = headers(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(CorsPolicy::is_preflight(&Method::OPTIONS, &req));
        assert!(!CorsPolicy::is_preflight(&Method::GET, &req));
        let resp = p.preflight(&req);
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-token, content-type");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[VARY], "origin");

        // A foreign origin gets an answer without CORS headers.
        let resp = p.preflight(&headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ]));
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!resp.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));

        // Wildcards echo what is asked; any origin without credentials is `*`.
        let p = compile(ir::Cors {
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            ..cors(&["*"])
        })
        .unwrap();
        let resp = p.preflight(&headers(&[
            ("origin", "https://x.example"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-a, x-b"),
        ]));
        let h = resp.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "PATCH");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
        assert!(!h.contains_key(VARY));
        assert!(!h.contains_key(ACCESS_CONTROL_MAX_AGE));
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));

        // Without allowMethods: the safelisted methods.
        let p = compile(cors(&["*"])).unwrap();
        let resp = p.preflight(&headers(&[
            ("origin", "https://x.example"),
            ("access-control-request-method", "GET"),
        ]));
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_ALLOW_METHODS],
            "GET, HEAD, POST"
        );
    }

    #[test]
    fn actual_responses_get_origin_and_exposed_headers() {
        let p = compile(ir::Cors {
            expose_headers: vec!["x-trace".into()],
            ..cors(&["https://*.example"])
        })
        .unwrap();
        let req = headers(&[("origin", "https://a.example")]);
        let origin = p.allowed_origin(&req).unwrap();
        let mut out = headers(&[
            ("access-control-allow-origin", "https://upstream.example"),
            ("vary", "accept-encoding"),
        ]);
        p.apply(&mut out, origin);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
        let vary: Vec<_> = out.get_all(VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "origin"]);
        assert!(
            p.allowed_origin(&headers(&[("origin", "https://b.other")]))
                .is_none()
        );
        assert!(p.allowed_origin(&HeaderMap::new()).is_none());
    }

    #[test]
    fn any_origin_echoes_the_origin_of_a_credentialed_request() {
        let p = compile(cors(&["*"])).unwrap();
        let plain = headers(&[("origin", "https://a.example")]);
        assert_eq!(p.allowed_origin(&plain).unwrap(), "*");
        for credential in [("authorization", "Bearer t"), ("cookie", "s=1")] {
            let req = headers(&[("origin", "https://a.example"), credential]);
            let origin = p.allowed_origin(&req).unwrap();
            assert_eq!(origin, "https://a.example", "{credential:?}");
            let mut out = HeaderMap::new();
            p.apply(&mut out, origin);
            assert_eq!(out[VARY], "origin");
            assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        }
    }
}
