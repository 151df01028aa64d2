//! Compiled route matchers. Regular expressions are compiled once per config update, header names
//! parsed into [`HeaderName`]s and methods into [`Method`]s, so matching a request allocates
//! nothing (query parameters are parsed once per request, and only when a route needs them).

use std::borrow::Cow;

use bowline_model::ir;
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use super::CompileError;

/// What a route matches a request on.
#[derive(Debug, Default)]
pub(super) struct Matcher {
    path: Option<PathMatcher>,
    method: Option<Method>,
    port: Option<u16>,
    scheme: Option<Box<str>>,
    headers: Box<[HeaderMatcher]>,
    query: Box<[QueryMatcher]>,
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

/// Query parameters, decoded on first use and then shared by every route tried.
#[derive(Debug, Default)]
pub(super) struct QueryCache<'a> {
    params: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
}

impl<'a> QueryCache<'a> {
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
        })
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
            let value = req
                .headers
                .get(&h.name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok());
            if h.value.matches(value) == h.invert {
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
                if q.value.matches(value) == q.invert {
                    return false;
                }
            }
        }
        true
    }
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
