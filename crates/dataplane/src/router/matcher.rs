//! Compiled route matchers. Regular expressions are compiled once per config update, header names
//! parsed into [`HeaderName`]s and methods into [`Method`]s, so matching a request allocates
//! nothing (query parameters and cookies are parsed once per request, and only when a route
//! needs them; a header sent several times is matched on its values joined with `,`, as RFC 9110
//! combines them, which allocates only then).

use std::borrow::Cow;

use bowline_model::ir;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, COOKIE, ORIGIN};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use super::CompileError;
use super::index::PathKey;

/// What a route matches a request on.
#[derive(Debug, Default)]
pub(super) struct Matcher {
    path: Option<PathMatcher>,
    method: Option<Method>,
    port: Option<u16>,
    scheme: Option<Box<str>>,
    headers: Box<[HeaderMatcher]>,
    query: Box<[QueryMatcher]>,
    cookies: Box<[QueryMatcher]>,
    /// The route has a CORS policy: a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) matches the method condition when the method it asks
    /// for does, so the policy can answer it. (Also when a route that delegated to this one's
    /// table has a policy: see [`QueryCache::cors_in_chain`].)
    cors_preflight: bool,
}

#[derive(Debug)]
enum PathMatcher {
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatcher {
    name: HeaderName,
    value: ValueMatcher,
    invert: bool,
}

#[derive(Debug)]
struct QueryMatcher {
    name: Box<str>,
    value: ValueMatcher,
    invert: bool,
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Regex(Regex),
    Range { start: i64, end: i64 },
    Present,
}

/// The parts of a request that routes match on.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Path without query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Port of the listener the request arrived on.
    pub port: u16,
    /// Scheme of the listener (`http`).
    pub scheme: &'a str,
}

/// Query parameters and cookies, parsed on first use and then shared by every route tried.
#[derive(Debug, Default)]
pub(super) struct QueryCache<'a> {
    params: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    cookies: Option<Vec<(&'a str, &'a str)>>,
    /// A route the request went through (delegating) has a CORS policy.
    pub(super) cors_in_chain: bool,
}

impl<'a> QueryCache<'a> {
    /// The cookies of every `Cookie` header, in order: `name=value` pairs separated by `;`,
    /// trimmed, surrounding double quotes removed from values. Pairs without `=` and headers that
    /// are not UTF-8 are skipped.
    fn cookies(&mut self, headers: &'a HeaderMap) -> &[(&'a str, &'a str)] {
        self.cookies.get_or_insert_with(|| {
            let mut out = Vec::new();
            for value in headers.get_all(COOKIE) {
                let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
                    continue;
                };
                for pair in value.split(';') {
                    let Some((name, v)) = pair.split_once('=') else {
                        continue;
                    };
                    let name = name.trim_matches([' ', '\t']);
                    let v = v.trim_matches([' ', '\t']);
                    let v = v
                        .strip_prefix('"')
                        .and_then(|x| x.strip_suffix('"'))
                        .unwrap_or(v);
                    if !name.is_empty() {
                        out.push((name, v));
                    }
                }
            }
            out
        })
    }

    fn get(&mut self, query: Option<&'a str>) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        self.params.get_or_insert_with(|| {
            query
                .unwrap_or_default()
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect()
        })
    }
}

/// Decodes `%XX` escapes and `+` (space) of a query component; borrows when there is nothing to
/// decode. Invalid escapes are kept as they are.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// === impl Matcher ===

impl Matcher {
    pub(super) fn compile(
        m: &ir::RouteMatch,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Matcher, CompileError> {
        let path = match &m.path {
            None => None,
            Some(ir::PathMatch::Prefix(p)) => Some(PathMatcher::Prefix(p.as_str().into())),
            Some(ir::PathMatch::Exact(p)) => Some(PathMatcher::Exact(p.as_str().into())),
            Some(ir::PathMatch::Regex(re)) => Some(PathMatcher::Regex(
                whole(re).map_err(|e| err("match.path.regex", e))?,
            )),
        };
        let method = match &m.method {
            None => None,
            Some(s) => Some(
                Method::from_bytes(s.to_ascii_uppercase().as_bytes())
                    .map_err(|_| err("match.method", format!("{s:?} is not an HTTP method")))?,
            ),
        };
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let at = format!("match.headers[{i}]");
                Ok(HeaderMatcher {
                    name: HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                        err(
                            &format!("{at}.name"),
                            format!("{:?} is not a header name", h.name),
                        )
                    })?,
                    value: ValueMatcher::compile(&h.matcher, &at, err)?,
                    invert: h.invert,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        let query = m
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let at = format!("match.queryParameters[{i}]");
                Ok(QueryMatcher {
                    name: q.name.as_str().into(),
                    value: ValueMatcher::compile(&q.matcher, &at, err)?,
                    invert: q.invert,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        let cookies = m
            .cookies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("match.cookies[{i}]");
                if c.name.is_empty() {
                    return Err(err(&format!("{at}.name"), "empty cookie name".into()));
                }
                Ok(QueryMatcher {
                    name: c.name.as_str().into(),
                    value: ValueMatcher::compile(&c.matcher, &at, err)?,
                    invert: c.invert,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        let scheme = match m.scheme.as_deref() {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
                Some(s.to_ascii_lowercase().into())
            }
            Some(s) => {
                return Err(err("match.scheme", format!("{s:?} is not http or https")));
            }
        };
        Ok(Matcher {
            path,
            method,
            port: m.port,
            scheme,
            headers,
            query,
            cookies,
            cors_preflight: false,
        })
    }

    /// Lets CORS preflights through the method condition (see `cors_preflight`).
    pub(super) fn set_cors_preflight(&mut self, on: bool) {
        self.cors_preflight = on;
    }

    /// The key the route index files this matcher under.
    pub(super) fn path_key(&self) -> PathKey<'_> {
        match &self.path {
            Some(PathMatcher::Prefix(p)) => PathKey::Prefix(p),
            Some(PathMatcher::Exact(p)) => PathKey::Exact(p),
            Some(PathMatcher::Regex(_)) | None => PathKey::Any,
        }
    }

    /// The prefix this matcher matched, when it matches on a path prefix.
    pub(super) fn prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatcher::Prefix(p)) => Some(p),
            _ => None,
        }
    }

    pub(super) fn has_path_match(&self) -> bool {
        self.path.is_some()
    }

    pub(super) fn matches<'a>(
        &self,
        req: &RequestHead<'a>,
        path: &str,
        query: &mut QueryCache<'a>,
    ) -> bool {
        if let Some(m) = &self.method
            && m != req.method
            && !((self.cors_preflight || query.cors_in_chain) && is_preflight_for(req, m))
        {
            return false;
        }
        if let Some(p) = self.port
            && p != req.port
        {
            return false;
        }
        if let Some(s) = &self.scheme
            && **s != *req.scheme
        {
            return false;
        }
        let path_ok = match &self.path {
            None => true,
            Some(PathMatcher::Prefix(p)) => path.starts_with(&**p),
            Some(PathMatcher::Exact(p)) => path == &**p,
            Some(PathMatcher::Regex(re)) => re.is_match(path),
        };
        if !path_ok {
            return false;
        }
        for h in self.headers.iter() {
            let mut values = req.headers.get_all(&h.name).iter();
            let ok = match (values.next(), values.next()) {
                (None, _) => h.value.decide(Value::Absent, h.invert),
                (Some(v), None) => h.value.decide(Value::of(v.as_bytes()), h.invert),
                (Some(_), Some(_)) => {
                    let joined = join_values(req.headers.get_all(&h.name).iter());
                    let v = joined.as_deref().map_or(Value::Opaque, Value::Text);
                    h.value.decide(v, h.invert)
                }
            };
            if !ok {
                return false;
            }
        }
        if !self.query.is_empty() {
            let params = query.get(req.query);
            for q in self.query.iter() {
                let value = params
                    .iter()
                    .find(|(k, _)| *k == *q.name)
                    .map(|(_, v)| v.as_ref());
                if !q
                    .value
                    .decide(value.map_or(Value::Absent, Value::Text), q.invert)
                {
                    return false;
                }
            }
        }
        if !self.cookies.is_empty() {
            let cookies = query.cookies(req.headers);
            for c in self.cookies.iter() {
                let value = cookies
                    .iter()
                    .find(|(k, _)| **k == *c.name)
                    .map(|(_, v)| *v);
                if !c
                    .value
                    .decide(value.map_or(Value::Absent, Value::Text), c.invert)
                {
                    return false;
                }
            }
        }
        true
    }
}

/// A header, parameter or cookie value as matchers see it.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Absent,
    /// Present, but not UTF-8: only presence can match it.
    Opaque,
    Text(&'a str),
}

impl<'a> Value<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        std::str::from_utf8(bytes).map_or(Value::Opaque, Value::Text)
    }
}

/// A CORS preflight asking for `method`.
fn is_preflight_for(req: &RequestHead<'_>, method: &Method) -> bool {
    *req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|v| v.as_bytes() == method.as_str().as_bytes())
}

/// The values of a repeated header joined with `,`; `None` if one is not UTF-8.
fn join_values<'h>(values: impl Iterator<Item = &'h http::HeaderValue>) -> Option<String> {
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(std::str::from_utf8(v.as_bytes()).ok()?);
    }
    Some(out)
}

/// Compiles a regular expression that must match a whole value.
fn whole(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regular expression: {e}"))
}

// === impl ValueMatcher ===

impl ValueMatcher {
    fn compile(
        m: &ir::StringMatch,
        at: &str,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<ValueMatcher, CompileError> {
        Ok(match m {
            ir::StringMatch::Exact(s) => ValueMatcher::Exact(s.as_str().into()),
            ir::StringMatch::Prefix(s) => ValueMatcher::Prefix(s.as_str().into()),
            ir::StringMatch::Suffix(s) => ValueMatcher::Suffix(s.as_str().into()),
            ir::StringMatch::Regex(re) => {
                ValueMatcher::Regex(whole(re).map_err(|e| err(&format!("{at}.match.regex"), e))?)
            }
            ir::StringMatch::Range { start, end } => {
                if start >= end {
                    return Err(err(
                        &format!("{at}.match.range"),
                        format!("empty range [{start}, {end})"),
                    ));
                }
                ValueMatcher::Range {
                    start: *start,
                    end: *end,
                }
            }
            ir::StringMatch::Present => ValueMatcher::Present,
        })
    }

    /// Whether a header, parameter or cookie passes this match, `invert`ed or not. Envoy's
    /// (and so App Mesh's) rule: an absent one passes only an inverted presence match; an
    /// inverted value match needs it present with a value that does not match.
    fn decide(&self, value: Value<'_>, invert: bool) -> bool {
        match value {
            Value::Absent => invert && matches!(self, ValueMatcher::Present),
            Value::Opaque => matches!(self, ValueMatcher::Present) != invert,
            Value::Text(v) => self.matches(Some(v)) != invert,
        }
    }

    /// Whether a value (`None`: absent) matches, before inversion.
    fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else {
            return false;
        };
        match self {
            ValueMatcher::Exact(s) => v == &**s,
            ValueMatcher::Prefix(s) => v.starts_with(&**s),
            ValueMatcher::Suffix(s) => v.ends_with(&**s),
            ValueMatcher::Regex(re) => re.is_match(v),
            ValueMatcher::Range { start, end } => v
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| *start <= n && n < *end),
            ValueMatcher::Present => true,
        }
    }
}
