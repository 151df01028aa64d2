//! Translation of the Bowline routing extensions (not in App Mesh) of gateway and router routes:
//! regex query and cookie matches, redirects and direct responses, regex and router rewrites,
//! header changes, mirrors and CORS. Values validation would reject are dropped with a
//! diagnostic here too, so a snapshot never carries what the engine refuses.

use bowline_model::appmesh::{
    HttpCookieMatch, HttpCors, HttpDirectResponse, HttpHeaderModifier, HttpMirror,
    HttpQueryParameter, HttpRedirect, PathRegexRewrite, RouteAction,
};
use bowline_model::ir;
use bowline_model::validate::{PROTECTED_HEADERS, REDIRECT_STATUS_CODES};

use super::{At, Cx, check_regex, port_of};

/// Default redirect status (Gateway API's).
const DEFAULT_REDIRECT_STATUS: u16 = 302;

/// The filters of one resource route, put on each IR route it becomes.
#[derive(Clone, Debug, Default)]
pub(super) struct Filters {
    request_headers: ir::HeaderMods,
    response_headers: ir::HeaderMods,
    mirrors: Vec<ir::Mirror>,
    cors: Option<ir::Cors>,
}

impl Filters {
    pub(super) fn apply(&self, route: &mut ir::Route) {
        route.request_headers = self.request_headers.clone();
        route.response_headers = self.response_headers.clone();
        route.cors = self.cors.clone().map(Box::new);
        // A route that answers itself sends nothing upstream to copy.
        if matches!(
            route.action,
            ir::RouteAction::Forward(_) | ir::RouteAction::Delegate(_)
        ) {
            route.mirrors = self.mirrors.clone();
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Cx<'_> {
    /// Query parameter matches: `exact`, `regex` (extension), or present.
    pub(super) fn query(
        &mut self,
        at: At<'_>,
        params: Option<&[HttpQueryParameter]>,
    ) -> Option<Vec<ir::KeyValueMatch>> {
        let mut out = Vec::new();
        for (i, q) in params.unwrap_or_default().iter().enumerate() {
            let m = q.matcher.as_ref();
            let matcher = match (
                m.and_then(|m| m.exact.clone()),
                m.and_then(|m| m.regex.clone()),
            ) {
                (Some(v), _) => ir::StringMatch::Exact(v),
                (None, Some(re)) => {
                    if let Err(e) = check_regex(&re) {
                        let sub = format!("match.queryParameters[{i}].match.regex");
                        self.diag_at(at, &sub, format!("{e}; route skipped"));
                        return None;
                    }
                    ir::StringMatch::Regex(re)
                }
                (None, None) => ir::StringMatch::Present,
            };
            out.push(ir::KeyValueMatch {
                name: q.name.clone(),
                matcher,
                invert: false,
            });
        }
        Some(out)
    }

    /// Cookie matches: `exact`, `regex`, or present; `invert`.
    pub(super) fn cookies(
        &mut self,
        at: At<'_>,
        cookies: Option<&[HttpCookieMatch]>,
    ) -> Option<Vec<ir::KeyValueMatch>> {
        let mut out = Vec::new();
        for (i, c) in cookies.unwrap_or_default().iter().enumerate() {
            let m = c.matcher.as_ref();
            let matcher = match (
                m.and_then(|m| m.exact.clone()),
                m.and_then(|m| m.regex.clone()),
            ) {
                (Some(v), _) => ir::StringMatch::Exact(v),
                (None, Some(re)) => {
                    if let Err(e) = check_regex(&re) {
                        let sub = format!("match.cookies[{i}].match.regex");
                        self.diag_at(at, &sub, format!("{e}; route skipped"));
                        return None;
                    }
                    ir::StringMatch::Regex(re)
                }
                (None, None) => ir::StringMatch::Present,
            };
            if c.name.is_empty() {
                self.diag_at(
                    at,
                    &format!("match.cookies[{i}].name"),
                    "empty; route skipped",
                );
                return None;
            }
            out.push(ir::KeyValueMatch {
                name: c.name.clone(),
                matcher,
                invert: c.invert.unwrap_or(false),
            });
        }
        Some(out)
    }

    /// A redirect or direct response action: `None` when the route has neither; `Some(None)`
    /// when it has one that cannot be served (diagnosed; the route is skipped).
    pub(super) fn answer(
        &mut self,
        at: At<'_>,
        redirect: Option<&HttpRedirect>,
        direct: Option<&HttpDirectResponse>,
    ) -> Option<Option<ir::RouteAction>> {
        if let Some(r) = redirect {
            return Some(self.redirect(at, r));
        }
        let d = direct?;
        let Some(status) = u16::try_from(d.status)
            .ok()
            .filter(|s| (200..=599).contains(s))
        else {
            self.diag_at(
                at,
                "action.directResponse.status",
                format!(
                    "{} is not a status between 200 and 599; route skipped",
                    d.status
                ),
            );
            return Some(None);
        };
        Some(Some(ir::RouteAction::DirectResponse(ir::DirectResponse {
            status,
            body: d.body.clone().unwrap_or_default(),
        })))
    }

    fn redirect(&mut self, at: At<'_>, r: &HttpRedirect) -> Option<ir::RouteAction> {
        let status = match r.status_code {
            None => DEFAULT_REDIRECT_STATUS,
            Some(c) if REDIRECT_STATUS_CODES.contains(&c) => c as u16,
            Some(c) => {
                self.diag_at(
                    at,
                    "action.redirect.statusCode",
                    format!("{c} is not a redirect status; route skipped"),
                );
                return None;
            }
        };
        let port = match r.port {
            None => None,
            Some(p) => match port_of(p) {
                Some(p) => Some(p),
                None => {
                    self.diag_at(
                        at,
                        "action.redirect.port",
                        format!("{p} is not a port; route skipped"),
                    );
                    return None;
                }
            },
        };
        let scheme = r.scheme.as_ref().map(|s| s.to_ascii_lowercase());
        if let Some(s) = &scheme
            && s != "http"
            && s != "https"
        {
            self.diag_at(
                at,
                "action.redirect.scheme",
                format!("{s:?} is not http or https; route skipped"),
            );
            return None;
        }
        let path = r.path.as_ref().and_then(|p| match (&p.exact, &p.prefix) {
            (Some(e), _) => Some(ir::RedirectPath::FullPath(e.clone())),
            (None, Some(x)) => Some(ir::RedirectPath::Prefix(x.clone())),
            (None, None) => None,
        });
        Some(ir::RouteAction::Redirect(ir::Redirect {
            scheme,
            host: r.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
            port,
            path,
            status,
            drop_query: false,
        }))
    }

    pub(super) fn regex_rewrite(
        &mut self,
        at: At<'_>,
        sub: &str,
        r: &PathRegexRewrite,
    ) -> Option<ir::RegexRewrite> {
        let re = match regex::Regex::new(&r.pattern) {
            Ok(re) => re,
            Err(e) => {
                self.diag_at(
                    at,
                    &format!("{sub}.pattern"),
                    format!(
                        "invalid regular expression {:?}: {e}; route skipped",
                        r.pattern
                    ),
                );
                return None;
            }
        };
        if let Err(e) = ir::check_substitution(&re, &r.substitution) {
            self.diag_at(
                at,
                &format!("{sub}.substitution"),
                format!("{e}; route skipped"),
            );
            return None;
        }
        Some(ir::RegexRewrite {
            pattern: r.pattern.clone(),
            substitution: r.substitution.clone(),
        })
    }

    /// A router route's `action.rewrite` (extension).
    pub(super) fn router_rewrite(&mut self, at: At<'_>, a: &RouteAction) -> Option<ir::Rewrite> {
        let Some(rw) = &a.rewrite else {
            return Some(ir::Rewrite::default());
        };
        if let Some(p) = &rw.prefix {
            return Some(ir::Rewrite {
                prefix: Some(p.value.clone()),
                ..Default::default()
            });
        }
        if let Some(p) = &rw.path {
            return Some(ir::Rewrite {
                full_path: Some(p.exact.clone()),
                ..Default::default()
            });
        }
        let regex = match &rw.regex {
            Some(re) => Some(self.regex_rewrite(at, "action.rewrite.regex", re)?),
            None => None,
        };
        Some(ir::Rewrite {
            regex,
            ..Default::default()
        })
    }

    /// Header changes, mirrors and CORS. Entries that cannot be applied are dropped with a
    /// diagnostic; the route is kept.
    pub(super) fn route_filters(
        &mut self,
        at: At<'_>,
        request: Option<&HttpHeaderModifier>,
        response: Option<&HttpHeaderModifier>,
        mirror: Option<&[HttpMirror]>,
        cors: Option<&HttpCors>,
    ) -> Filters {
        let mut f = Filters {
            request_headers: self.header_mods(at, "requestHeaders", request),
            response_headers: self.header_mods(at, "responseHeaders", response),
            ..Default::default()
        };
        for (i, m) in mirror.unwrap_or_default().iter().enumerate() {
            let sub = format!("mirror[{i}]");
            if let Some(cluster) = self.mirror_cluster(at, &sub, m) {
                let percent = m.percent.unwrap_or(100).clamp(0, 100) as u32;
                f.mirrors.push(ir::Mirror { cluster, percent });
            }
        }
        if let Some(c) = cors {
            f.cors = Some(ir::Cors {
                allow_origins: c.allow_origins.clone(),
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                max_age_seconds: c
                    .max_age
                    .as_ref()
                    .and_then(|d| d.as_millis())
                    .map(|ms| ms / 1000),
                allow_credentials: c.allow_credentials.unwrap_or(false),
            });
        }
        f
    }

    fn header_mods(
        &mut self,
        at: At<'_>,
        field: &str,
        m: Option<&HttpHeaderModifier>,
    ) -> ir::HeaderMods {
        let Some(m) = m else {
            return ir::HeaderMods::default();
        };
        let name_ok = |cx: &mut Self, sub: String, name: &str| {
            let ok =
                is_token(name) && !PROTECTED_HEADERS.contains(&name.to_ascii_lowercase().as_str());
            if !ok {
                cx.diag_at(
                    at,
                    &sub,
                    format!("{name:?} cannot be changed; entry dropped"),
                );
            }
            ok
        };
        let pairs = |cx: &mut Self,
                     list: &Option<Vec<bowline_model::appmesh::HttpHeaderValue>>,
                     kind: &str| {
            let mut out = Vec::new();
            for (i, h) in list.iter().flatten().enumerate() {
                let sub = format!("{field}.{kind}[{i}]");
                if !name_ok(cx, format!("{sub}.name"), &h.name) {
                    continue;
                }
                if h.value
                    .bytes()
                    .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
                {
                    cx.diag_at(
                        at,
                        &format!("{sub}.value"),
                        "control characters; entry dropped",
                    );
                    continue;
                }
                out.push(ir::HeaderPair {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value.clone(),
                });
            }
            out
        };
        let add = pairs(self, &m.add, "add");
        let set = pairs(self, &m.set, "set");
        let mut remove = Vec::new();
        for (i, n) in m.remove.iter().flatten().enumerate() {
            if name_ok(self, format!("{field}.remove[{i}]"), n) {
                remove.push(n.to_ascii_lowercase());
            }
        }
        ir::HeaderMods { add, set, remove }
    }

    /// The cluster a mirror copies to: a virtual node's, or that of the virtual node providing
    /// a virtual service.
    fn mirror_cluster(&mut self, at: At<'_>, sub: &str, m: &HttpMirror) -> Option<String> {
        let referrer = format!(
            "the mirror at {} {}/{} {}",
            at.kind,
            at.namespace,
            at.name,
            super::join(at.path, sub)
        );
        if let Some(n) = &m.virtual_node_ref {
            let ns = n.namespace.as_deref().unwrap_or(at.namespace);
            let path = super::join(at.path, &format!("{sub}.virtualNodeRef"));
            let ref_at = At { path: &path, ..at };
            return self.node_cluster(ref_at, &referrer, ns, &n.name, m.port);
        }
        let Some(vs_ref) = &m.virtual_service_ref else {
            self.diag_at(
                at,
                sub,
                "virtualNodeRef or virtualServiceRef is required; mirror dropped",
            );
            return None;
        };
        let world = self.inputs.world;
        let vs_ns = vs_ref.namespace.as_deref().unwrap_or(at.namespace);
        let Some(vs) = world.virtual_service(vs_ns, &vs_ref.name) else {
            self.diag_at(
                at,
                &format!("{sub}.virtualServiceRef"),
                format!(
                    "VirtualService {vs_ns}/{} not found; mirror dropped",
                    vs_ref.name
                ),
            );
            return None;
        };
        let node = vs
            .spec
            .provider
            .as_ref()
            .and_then(|p| p.virtual_node.as_ref())
            .and_then(|n| n.virtual_node_ref.as_ref());
        let Some(n) = node else {
            self.diag_at(
                at,
                &format!("{sub}.virtualServiceRef"),
                format!(
                    "VirtualService {vs_ns}/{} is not provided by a virtual node (mirrors go to one node); mirror dropped",
                    vs_ref.name
                ),
            );
            return None;
        };
        let ns = n.namespace.as_deref().unwrap_or(vs_ns);
        let vs_at = At {
            kind: bowline_model::manifest::Kind::VirtualService,
            namespace: vs_ns,
            name: &vs.metadata.name,
            path: "spec.provider.virtualNode.virtualNodeRef",
        };
        self.node_cluster(vs_at, &referrer, ns, &n.name, m.port)
    }
}
