//! The key a request is balanced by: a hash of the client IP, of a header or of a cookie for the
//! hash policies (random when the header or cookie is missing), a random draw otherwise.
//!
//! Sticky sessions: a request without the cookie is balanced by a fresh random value, which the
//! response sets as the cookie (`Set-Cookie: name=value; Path=…; Domain=…; Max-Age=…;
//! HttpOnly; Secure; SameSite=…`, the optional ones when asked); the
//! client's next requests carry it and hash to the same endpoint.

use bowline_model::ir;
use http::header::{COOKIE, HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Uri};

use super::hash::{hash_bytes, random_u64};

/// A compiled [`ir::HashOn`].
#[derive(Debug)]
pub enum HashPolicy {
    SourceIp,
    Header(HeaderName),
    Cookie(CookiePolicy),
    Template(Box<[Part]>),
}

/// A compiled [`ir::HashPart`].
#[derive(Debug)]
pub enum Part {
    Literal(Box<str>),
    ClientIp,
    Host,
    Path,
    RequestUri,
    Query,
    Header(HeaderName),
    QueryParam(Box<str>),
    Cookie(Box<str>),
}

#[derive(Debug)]
pub struct CookiePolicy {
    name: Box<str>,
    /// `; Path=/x; Max-Age=60; HttpOnly`, appended to `name=value`.
    attributes: Box<str>,
}

/// What a request is balanced by.
#[derive(Debug)]
pub struct RequestKey {
    pub hash: u64,
    /// The cookie to set on the response (sticky sessions, first request).
    pub set_cookie: Option<HeaderValue>,
}

impl RequestKey {
    /// A random key (policies that do not hash).
    #[inline]
    pub fn random() -> RequestKey {
        RequestKey {
            hash: random_u64(),
            set_cookie: None,
        }
    }
}

impl HashPolicy {
    /// Compiles a hash key; the error names the offending field under `hashOn`.
    pub fn compile(h: &ir::HashOn) -> Result<HashPolicy, (&'static str, String)> {
        Ok(match h {
            ir::HashOn::SourceIp => HashPolicy::SourceIp,
            ir::HashOn::Header { name } => {
                HashPolicy::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    (
                        "hashOn.header.name",
                        format!("{name:?} is not a header name"),
                    )
                })?)
            }
            ir::HashOn::Cookie {
                name,
                ttl_seconds,
                path,
                domain,
                secure,
                same_site,
            } => {
                let mut attributes = String::new();
                if let Some(p) = path {
                    attributes.push_str("; Path=");
                    attributes.push_str(p);
                }
                if let Some(d) = domain {
                    let ok = !d.is_empty()
                        && d.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                    if !ok {
                        return Err((
                            "hashOn.cookie.domain",
                            format!("{d:?} is not a cookie domain"),
                        ));
                    }
                    attributes.push_str("; Domain=");
                    attributes.push_str(d);
                }
                if *ttl_seconds > 0 {
                    attributes.push_str(&format!("; Max-Age={ttl_seconds}"));
                }
                attributes.push_str("; HttpOnly");
                if *secure {
                    attributes.push_str("; Secure");
                }
                if let Some(s) = same_site {
                    if !matches!(s.as_str(), "None" | "Lax" | "Strict") {
                        return Err((
                            "hashOn.cookie.sameSite",
                            format!("{s:?} is not None, Lax or Strict"),
                        ));
                    }
                    attributes.push_str("; SameSite=");
                    attributes.push_str(s);
                }
                let probe = format!("{name}=0000000000000000{attributes}");
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    return Err((
                        "hashOn.cookie.name",
                        format!("{name:?} is not a cookie name"),
                    ));
                }
                if HeaderValue::from_str(&probe).is_err()
                    || path.as_ref().is_some_and(|p| p.contains(';'))
                {
                    return Err((
                        "hashOn.cookie.path",
                        format!("{path:?} is not a cookie path"),
                    ));
                }
                HashPolicy::Cookie(CookiePolicy {
                    name: name.as_str().into(),
                    attributes: attributes.into(),
                })
            }
            ir::HashOn::Template { parts } => {
                if parts.is_empty() {
                    return Err(("hashOn.template.parts", "no parts".into()));
                }
                let compiled = parts
                    .iter()
                    .map(|p| {
                        Ok(match p {
                            ir::HashPart::Literal(s) => Part::Literal(s.as_str().into()),
                            ir::HashPart::ClientIp => Part::ClientIp,
                            ir::HashPart::Host => Part::Host,
                            ir::HashPart::Path => Part::Path,
                            ir::HashPart::RequestUri => Part::RequestUri,
                            ir::HashPart::Query => Part::Query,
                            ir::HashPart::Header(n) => Part::Header(
                                HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                                    (
                                        "hashOn.template.parts",
                                        format!("{n:?} is not a header name"),
                                    )
                                })?,
                            ),
                            ir::HashPart::QueryParam(n) => Part::QueryParam(n.as_str().into()),
                            ir::HashPart::Cookie(n) => Part::Cookie(n.as_str().into()),
                        })
                    })
                    .collect::<Result<Vec<_>, (&'static str, String)>>()?;
                HashPolicy::Template(compiled.into())
            }
        })
    }

    /// The key of a request from `client_ip` (its textual form) for `uri` with `headers`.
    pub fn key(&self, client_ip: &[u8], uri: &Uri, headers: &HeaderMap) -> RequestKey {
        let hash = match self {
            HashPolicy::SourceIp => Some(hash_bytes(client_ip)),
            HashPolicy::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
            HashPolicy::Cookie(c) => match cookie(headers, &c.name) {
                Some(v) => Some(hash_bytes(v.as_bytes())),
                None => return c.fresh(),
            },
            HashPolicy::Template(parts) => {
                let value = template(parts, client_ip, uri, headers);
                (!value.is_empty()).then(|| hash_bytes(&value))
            }
        };
        match hash {
            Some(hash) => RequestKey {
                hash,
                set_cookie: None,
            },
            None => RequestKey::random(),
        }
    }
}

impl CookiePolicy {
    /// A new session: a random value to balance by and to set.
    fn fresh(&self) -> RequestKey {
        let value = format!("{:016x}", random_u64());
        let set_cookie =
            HeaderValue::from_str(&format!("{}={value}{}", self.name, self.attributes))
                .expect("validated when compiled");
        RequestKey {
            hash: hash_bytes(value.as_bytes()),
            set_cookie: Some(set_cookie),
        }
    }
}

/// The bytes a template hashes for one request.
fn template(parts: &[Part], client_ip: &[u8], uri: &Uri, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for p in parts {
        match p {
            Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
            Part::ClientIp => out.extend_from_slice(client_ip),
            Part::Host => {
                let host = uri
                    .host()
                    .or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()))
                    .map(crate::router::strip_port)
                    .unwrap_or_default();
                out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
            }
            Part::Path => out.extend_from_slice(uri.path().as_bytes()),
            Part::RequestUri => out.extend_from_slice(
                uri.path_and_query()
                    .map_or(uri.path(), |pq| pq.as_str())
                    .as_bytes(),
            ),
            Part::Query => out.extend_from_slice(uri.query().unwrap_or_default().as_bytes()),
            Part::Header(name) => {
                if let Some(v) = headers.get(name) {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            Part::QueryParam(name) => {
                let value = uri.query().unwrap_or_default().split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == &**name).then_some(v)
                });
                out.extend_from_slice(value.unwrap_or_default().as_bytes());
            }
            Part::Cookie(name) => {
                out.extend_from_slice(cookie(headers, name).unwrap_or_default().as_bytes());
            }
        }
    }
    out
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}
