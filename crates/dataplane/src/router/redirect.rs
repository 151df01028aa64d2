//! Redirect responses. The `Location` is the request's URL with the parts the redirect sets
//! replaced:
//!
//! * scheme: the redirect's, else the listener's;
//! * host: the redirect's, else the request's (`Host` / `:authority` without port);
//! * port: the redirect's; else, when the redirect changes the scheme, none (the new scheme's
//!   default); else the port the client used in `Host` / `:authority` (so a gateway behind a port
//!   mapping redirects to the port the client sees, as Envoy does; Gateway API uses the listener
//!   port, the same when clients connect to the listener directly). Port 80 with `http` and 443
//!   with `https` are left out;
//! * path: replaced whole, or its matched prefix replaced (the router computes it), else the
//!   client's path as it sent it (not a path an earlier route rewrote);
//! * query: the client's, kept (left out with `dropQuery`).
//!
//! Without any host (an HTTP/1.0 request without `Host` and a redirect that sets none) the
//! `Location` is the path alone, which RFC 9110 allows.

use bowline_model::ir;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use super::{CompileError, replace_prefix, strip_port};
use crate::proxy::ProxyBody;

/// A compiled redirect.
#[derive(Debug)]
pub struct Redirect {
    scheme: Option<&'static str>,
    host: Option<Box<str>>,
    port: Option<u16>,
    path: Option<RedirectPath>,
    pub status: StatusCode,
    drop_query: bool,
}

#[derive(Debug)]
enum RedirectPath {
    Full(Box<str>),
    Prefix(Box<str>),
}

/// The request as a redirect sees it.
#[derive(Clone, Copy, Debug)]
pub struct RedirectRequest<'a> {
    /// Scheme of the listener.
    pub scheme: &'a str,
    /// `Host` / `:authority` as sent, port included.
    pub authority: Option<&'a str>,
    /// The client's path (without query).
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    pub(super) fn compile(
        r: &ir::Redirect,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Redirect, CompileError> {
        let scheme = match r.scheme.as_deref() {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("http") => Some("http"),
            Some(s) if s.eq_ignore_ascii_case("https") => Some("https"),
            Some(s) => {
                return Err(err(
                    "redirect.scheme",
                    format!("{s:?} is not http or https"),
                ));
            }
        };
        let host = match r.host.as_deref() {
            None => None,
            Some(h) => {
                let ok = !h.is_empty()
                    && strip_port(h) == h
                    && h.parse::<http::uri::Authority>().is_ok();
                if !ok {
                    return Err(err(
                        "redirect.host",
                        format!("{h:?} is not a host name (without port)"),
                    ));
                }
                Some(h.to_ascii_lowercase().into())
            }
        };
        if r.port == Some(0) {
            return Err(err("redirect.port", "0 is not a port".into()));
        }
        let path = match &r.path {
            None => None,
            Some(ir::RedirectPath::FullPath(p)) => {
                if !p.starts_with('/') || p.contains('?') || valid_path(p).is_none() {
                    return Err(err(
                        "redirect.path.fullPath",
                        format!("{p:?} is not an absolute path"),
                    ));
                }
                Some(RedirectPath::Full(p.as_str().into()))
            }
            Some(ir::RedirectPath::Prefix(p)) => {
                if p.contains('?') || valid_path(&format!("/{p}")).is_none() {
                    return Err(err(
                        "redirect.path.prefix",
                        format!("{p:?} is not a path prefix"),
                    ));
                }
                Some(RedirectPath::Prefix(p.as_str().into()))
            }
        };
        let status = match r.status {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(r.status).expect("a status"),
            s => {
                return Err(err(
                    "redirect.status",
                    format!("{s} is not a redirect status (301, 302, 303, 307, 308)"),
                ));
            }
        };
        Ok(Redirect {
            scheme,
            host,
            port: r.port,
            path,
            status,
            drop_query: r.drop_query,
        })
    }

    /// Whether the path is a prefix replacement (which needs the route's prefix match).
    pub(super) fn replaces_prefix(&self) -> bool {
        matches!(self.path, Some(RedirectPath::Prefix(_)))
    }

    /// The new path for a path the route matched (`matched`: its matched prefix), when the
    /// redirect sets one.
    pub(super) fn path(&self, matched: Option<&str>, path: &str) -> Option<String> {
        match self.path.as_ref()? {
            RedirectPath::Full(p) => Some(p.to_string()),
            RedirectPath::Prefix(replacement) => {
                let rest = path.get(matched.map_or(0, str::len)..).unwrap_or_default();
                Some(replace_prefix(replacement, rest))
            }
        }
    }

    /// The `Location` for a request; `path` is the one [`Redirect::path`] gave, if any.
    pub fn location(&self, req: &RedirectRequest<'_>, path: Option<&str>) -> Option<HeaderValue> {
        let scheme = self.scheme.unwrap_or(req.scheme);
        let authority = req.authority.unwrap_or_default();
        let host = match &self.host {
            Some(h) => &**h,
            None => strip_port(authority),
        };
        let port = match (self.port, self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => request_port(authority),
        };
        let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
        let path = path.unwrap_or(req.path);
        let mut out = String::with_capacity(
            scheme.len() + host.len() + path.len() + req.query.map_or(0, str::len) + 16,
        );
        if !host.is_empty() {
            out.push_str(scheme);
            out.push_str("://");
            out.push_str(host);
            if let Some(p) = port {
                out.push(':');
                out.push_str(&p.to_string());
            }
        }
        out.push_str(if path.is_empty() { "/" } else { path });
        if let Some(q) = req.query.filter(|_| !self.drop_query) {
            out.push('?');
            out.push_str(q);
        }
        HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
    }

    /// The redirect response (empty body).
    pub fn respond(&self, location: HeaderValue) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(LOCATION, location);
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        resp
    }
}

/// The port of a `Host` / `:authority`, if it has one.
fn request_port(authority: &str) -> Option<u16> {
    let host = strip_port(authority);
    let rest = authority.get(host.len()..)?;
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    rest.strip_prefix(':')?.parse().ok()
}

fn valid_path(p: &str) -> Option<http::uri::PathAndQuery> {
    http::uri::PathAndQuery::try_from(p).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(r: ir::Redirect) -> Result<Redirect, CompileError> {
        Redirect::compile(&r, &|path: &str, reason: String| CompileError {
            resource: "routeTable/t".into(),
            path: path.into(),
            reason,
        })
    }

    fn redirect() -> ir::Redirect {
        ir::Redirect {
            scheme: None,
            host: None,
            port: None,
            path: None,
            status: 302,
            drop_query: false,
        }
    }

    fn location(r: &Redirect, authority: Option<&str>, uri: &str, matched: Option<&str>) -> String {
        let (path, query) = uri
            .split_once('?')
            .map_or((uri, None), |(p, q)| (p, Some(q)));
        let new_path = r.path(matched, path);
        let req = RedirectRequest {
            scheme: "http",
            authority,
            path,
            query,
        };
        r.location(&req, new_path.as_deref())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn locations() {
        let https = compile(ir::Redirect {
            scheme: Some("HTTPS".into()),
            ..redirect()
        })
        .unwrap();
        assert_eq!(
            location(&https, Some("shop.example:8080"), "/a?b=1", None),
            "https://shop.example/a?b=1"
        );
        assert_eq!(
            location(&https, Some("[::1]:8080"), "/", None),
            "https://[::1]/"
        );
        let as_written = compile(ir::Redirect {
            drop_query: true,
            ..redirect()
        })
        .unwrap();
        assert_eq!(
            location(&as_written, Some("shop.example"), "/a?b=1", None),
            "http://shop.example/a"
        );

        let same = compile(redirect()).unwrap();
        assert_eq!(
            location(&same, Some("shop.example:8080"), "/a", None),
            "http://shop.example:8080/a"
        );
        assert_eq!(
            location(&same, Some("shop.example"), "/a", None),
            "http://shop.example/a"
        );
        assert_eq!(
            location(&same, Some("shop.example:80"), "/a", None),
            "http://shop.example/a"
        );
        assert_eq!(location(&same, None, "/a?x", None), "/a?x");

        let moved = compile(ir::Redirect {
            host: Some("New.Example".into()),
            port: Some(8443),
            scheme: Some("https".into()),
            path: Some(ir::RedirectPath::FullPath("/landing".into())),
            status: 301,
            drop_query: false,
        })
        .unwrap();
        assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            location(&moved, Some("old.example:8080"), "/x/y?q", None),
            "https://new.example:8443/landing?q"
        );
        let https443 = compile(ir::Redirect {
            port: Some(443),
            scheme: Some("https".into()),
            ..redirect()
        })
        .unwrap();
        assert_eq!(location(&https443, Some("a:1"), "/", None), "https://a/");

        let prefix = compile(ir::Redirect {
            path: Some(ir::RedirectPath::Prefix("/v2/".into())),
            ..redirect()
        })
        .unwrap();
        assert!(prefix.replaces_prefix());
        assert_eq!(
            location(&prefix, Some("a"), "/v1/items?x=1", Some("/v1/")),
            "http://a/v2/items?x=1"
        );
        assert_eq!(
            location(&prefix, Some("a"), "/v1", Some("/v1")),
            "http://a/v2/"
        );
    }

    #[test]
    fn invalid_redirects_name_the_field() {
        for (r, path) in [
            (
                ir::Redirect {
                    status: 200,
                    ..redirect()
                },
                "redirect.status",
            ),
            (
                ir::Redirect {
                    scheme: Some("ftp".into()),
                    ..redirect()
                },
                "redirect.scheme",
            ),
            (
                ir::Redirect {
                    host: Some("a.example:80".into()),
                    ..redirect()
                },
                "redirect.host",
            ),
            (
                ir::Redirect {
                    port: Some(0),
                    ..redirect()
                },
                "redirect.port",
            ),
            (
                ir::Redirect {
                    path: Some(ir::RedirectPath::FullPath("x".into())),
                    ..redirect()
                },
                "redirect.path.fullPath",
            ),
            (
                ir::Redirect {
                    path: Some(ir::RedirectPath::Prefix("/a?b".into())),
                    ..redirect()
                },
                "redirect.path.prefix",
            ),
        ] {
            assert_eq!(compile(r).unwrap_err().path, path);
        }
    }

    #[test]
    fn responds_with_status_and_location() {
        let r = compile(ir::Redirect {
            status: 308,
            ..redirect()
        })
        .unwrap();
        let resp = r.respond(HeaderValue::from_static("http://a/"));
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(resp.headers()[LOCATION], "http://a/");
        assert_eq!(resp.headers()[CONTENT_LENGTH], "0");
    }
}
