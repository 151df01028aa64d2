//! The key a request is balanced by: a hash of the client IP, of a header or of a cookie for the
//! hash policies (random when the header or cookie is missing), a random draw otherwise.
//!
//! Sticky sessions: a request without the cookie is balanced by a fresh random value, which the
//! response sets as the cookie (`Set-Cookie: name=value; Path=…; Max-Age=…; HttpOnly`); the
//! client's next requests carry it and hash to the same endpoint.

use bowline_model::ir;
use http::header::{COOKIE, HeaderName};
use http::{HeaderMap, HeaderValue};

use super::hash::{hash_bytes, random_u64};

/// A compiled [`ir::HashOn`].
#[derive(Debug)]
pub enum HashPolicy {
    SourceIp,
    Header(HeaderName),
    Cookie(CookiePolicy),
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
            } => {
                let mut attributes = String::new();
                if let Some(p) = path {
                    attributes.push_str("; Path=");
                    attributes.push_str(p);
                }
                if *ttl_seconds > 0 {
                    attributes.push_str(&format!("; Max-Age={ttl_seconds}"));
                }
                attributes.push_str("; HttpOnly");
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
        })
    }

    /// The key of a request from `client_ip` (its textual form) with `headers`.
    pub fn key(&self, client_ip: &[u8], headers: &HeaderMap) -> RequestKey {
        let hash = match self {
            HashPolicy::SourceIp => Some(hash_bytes(client_ip)),
            HashPolicy::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
            HashPolicy::Cookie(c) => match cookie(headers, &c.name) {
                Some(v) => Some(hash_bytes(v.as_bytes())),
                None => return c.fresh(),
            },
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
