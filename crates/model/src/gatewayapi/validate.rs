//! Validation of Gateway API objects: the rules the CRDs' schemas and CEL expressions enforce
//! for the fields Bowline reads, so a document the API server would refuse is refused here too.
//! Fields of the experimental channel that are accepted but have no effect are `Ignored` notes.

use std::collections::{BTreeSet, HashMap};

use crate::manifest::{Object, Problem};

use super::{
    GatewayClassSpec, GatewaySpec, GrpcRouteSpec, HeaderModifier, HttpPathMatch, HttpRouteFilter,
    HttpRouteSpec, ParentReference, ReferenceGrantSpec, ValueMatch,
};

/// Checks one Gateway API object; other kinds yield nothing.
pub fn validate(object: &Object) -> Vec<Problem> {
    let mut c = Checker::default();
    match object {
        Object::GatewayClass(o) => c.gateway_class(&o.spec),
        Object::Gateway(o) => c.gateway(&o.spec),
        Object::HttpRoute(o) => c.http_route(&o.spec),
        Object::GrpcRoute(o) => c.grpc_route(&o.spec),
        Object::ReferenceGrant(o) => c.reference_grant(&o.spec),
        _ => {}
    }
    c.problems
}

/// A Gateway API duration (`1h`, `30s`, `1m30s`, `500ms`: one to four number+unit parts, units
/// `h`, `m`, `s`, `ms`) in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration such as \"10s\", \"1m30s\" or \"500ms\"");
    let mut total: u64 = 0;
    let mut parts = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += n * unit;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// A hostname as the Gateway API allows it: a lower-case DNS name, optionally with a leading
/// `*.` wildcard label, never an IP address.
pub(super) fn hostname_ok(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && h.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

const HOSTNAME_RULE: &str = "must be a lower-case DNS name, optionally with a leading \"*.\" wildcard label (not an IP address)";

/// An HTTP header name (RFC 7230 token).
fn header_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::error(path, message));
    }

    fn ignored(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::ignored(path, message));
    }

    fn gateway_class(&mut self, s: &GatewayClassSpec) {
        if s.controller_name.is_empty() {
            self.error("spec.controllerName", "is required");
        }
        if s.parameters_ref.is_some() {
            self.ignored(
                "spec.parametersRef",
                "Bowline's GatewayClasses take no parameters",
            );
        }
    }

    fn gateway(&mut self, s: &GatewaySpec) {
        if s.gateway_class_name.is_empty() {
            self.error("spec.gatewayClassName", "is required");
        }
        if s.listeners.is_empty() || s.listeners.len() > 64 {
            self.error("spec.listeners", "must have 1 to 64 listeners");
        }
        let mut names = HashMap::new();
        let mut combos = HashMap::new();
        for (i, l) in s.listeners.iter().enumerate() {
            let at = format!("spec.listeners[{i}]");
            if l.name.is_empty() {
                self.error(format!("{at}.name"), "is required");
            } else if let Some(first) = names.insert(l.name.as_str(), i) {
                self.error(
                    format!("{at}.name"),
                    format!("{:?} is also the name of spec.listeners[{first}]: listener names must be unique", l.name),
                );
            }
            if !(1..=65535).contains(&l.port) {
                self.error(format!("{at}.port"), "must be between 1 and 65535");
            }
            if let Some(h) = &l.hostname
                && !hostname_ok(h)
            {
                self.error(format!("{at}.hostname"), HOSTNAME_RULE);
            }
            let combo = (
                l.port,
                l.protocol.as_str(),
                l.hostname.as_deref().unwrap_or(""),
            );
            if let Some(first) = combos.insert(combo, i) {
                self.error(
                    at.clone(),
                    format!("spec.listeners[{first}] has the same port, protocol and hostname: the combination must be unique"),
                );
            }
            match l.protocol.as_str() {
                "HTTPS" | "TLS" if l.tls.is_none() => {
                    self.error(
                        format!("{at}.tls"),
                        format!("is required for protocol {}", l.protocol),
                    );
                }
                "HTTP" | "TCP" | "UDP" => {
                    if l.tls.is_some() {
                        self.error(
                            format!("{at}.tls"),
                            format!("must not be set for protocol {}", l.protocol),
                        );
                    }
                    if matches!(l.protocol.as_str(), "TCP" | "UDP") && l.hostname.is_some() {
                        self.error(
                            format!("{at}.hostname"),
                            format!("must not be set for protocol {}", l.protocol),
                        );
                    }
                }
                "" => self.error(format!("{at}.protocol"), "is required"),
                _ => {}
            }
            if let Some(tls) = &l.tls {
                let mode = tls.mode.as_deref().unwrap_or("Terminate");
                match mode {
                    "Terminate" => {
                        if tls.certificate_refs.is_empty() && tls.options.is_empty() {
                            self.error(
                                format!("{at}.tls.certificateRefs"),
                                "certificateRefs or options must be specified when mode is Terminate",
                            );
                        }
                    }
                    "Passthrough" => {}
                    _ => self.error(format!("{at}.tls.mode"), "must be Terminate or Passthrough"),
                }
                if tls.certificate_refs.len() > 64 {
                    self.error(format!("{at}.tls.certificateRefs"), "at most 64 references");
                }
                if tls.frontend_validation.is_some() {
                    self.ignored(
                        format!("{at}.tls.frontendValidation"),
                        "client certificate validation is not supported yet",
                    );
                }
                if !tls.options.is_empty() {
                    self.ignored(format!("{at}.tls.options"), "no option is implemented");
                }
            }
            if let Some(ar) = &l.allowed_routes {
                if let Some(ns) = &ar.namespaces {
                    match ns.from.as_deref().unwrap_or("Same") {
                        "Same" | "All" => {}
                        "Selector" => {
                            if ns.selector.is_none() {
                                self.error(
                                    format!("{at}.allowedRoutes.namespaces.selector"),
                                    "is required when from is Selector",
                                );
                            }
                        }
                        _ => self.error(
                            format!("{at}.allowedRoutes.namespaces.from"),
                            "must be All, Same or Selector",
                        ),
                    }
                }
                if ar.kinds.len() > 8 {
                    self.error(format!("{at}.allowedRoutes.kinds"), "at most 8 kinds");
                }
            }
        }
        if s.addresses.len() > 16 {
            self.error("spec.addresses", "at most 16 addresses");
        }
        if s.infrastructure.is_some() {
            self.ignored(
                "spec.infrastructure",
                "the gateway's infrastructure is deployed by the Helm chart, not from this field",
            );
        }
        for (field, v) in [
            ("spec.tls", &s.tls),
            ("spec.allowedListeners", &s.allowed_listeners),
            ("spec.backendTLS", &s.backend_tls),
        ] {
            if v.is_some() {
                self.ignored(field, "not supported yet");
            }
        }
    }

    fn parent_refs(&mut self, refs: &[ParentReference]) {
        if refs.len() > 32 {
            self.error("spec.parentRefs", "at most 32 parent references");
        }
        let mut seen = BTreeSet::new();
        for (i, p) in refs.iter().enumerate() {
            let at = format!("spec.parentRefs[{i}]");
            if p.name.is_empty() {
                self.error(format!("{at}.name"), "is required");
            }
            if let Some(port) = p.port
                && !(1..=65535).contains(&port)
            {
                self.error(format!("{at}.port"), "must be between 1 and 65535");
            }
            let key = (
                p.group.clone().unwrap_or_else(|| super::GROUP.into()),
                p.kind.clone().unwrap_or_else(|| "Gateway".into()),
                p.namespace.clone(),
                p.name.clone(),
                p.section_name.clone(),
                p.port,
            );
            if !seen.insert(key) {
                self.error(
                    at,
                    "duplicates another parent reference (same group, kind, namespace, name, sectionName and port)",
                );
            }
        }
    }

    fn hostnames(&mut self, hostnames: &[String]) {
        if hostnames.len() > 16 {
            self.error("spec.hostnames", "at most 16 hostnames");
        }
        for (i, h) in hostnames.iter().enumerate() {
            if !hostname_ok(h) {
                self.error(format!("spec.hostnames[{i}]"), HOSTNAME_RULE);
            }
        }
    }

    fn http_route(&mut self, s: &HttpRouteSpec) {
        self.parent_refs(&s.parent_refs);
        self.hostnames(&s.hostnames);
        if s.rules.len() > 16 {
            self.error("spec.rules", "at most 16 rules");
        }
        let mut names = HashMap::new();
        for (i, r) in s.rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            self.rule_name(&mut names, &at, r.name.as_deref(), i);
            if r.matches.len() > 64 {
                self.error(format!("{at}.matches"), "at most 64 matches");
            }
            let mut prefix_only = true;
            for (j, m) in r.matches.iter().enumerate() {
                let mat = format!("{at}.matches[{j}]");
                if let Some(p) = &m.path {
                    self.path_match(&format!("{mat}.path"), p);
                    if p.type_.as_deref().unwrap_or("PathPrefix") != "PathPrefix" {
                        prefix_only = false;
                    }
                }
                self.value_matches(&format!("{mat}.headers"), &m.headers, true);
                self.value_matches(&format!("{mat}.queryParams"), &m.query_params, false);
                if let Some(method) = &m.method
                    && !matches!(
                        method.as_str(),
                        "GET"
                            | "HEAD"
                            | "POST"
                            | "PUT"
                            | "DELETE"
                            | "CONNECT"
                            | "OPTIONS"
                            | "TRACE"
                            | "PATCH"
                    )
                {
                    self.error(
                        format!("{mat}.method"),
                        "must be GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH",
                    );
                }
            }
            self.filters(&format!("{at}.filters"), &r.filters, prefix_only, true);
            let has_redirect = r.filters.iter().any(|f| f.type_ == "RequestRedirect");
            let has_rewrite = r.filters.iter().any(|f| f.type_ == "URLRewrite");
            if has_redirect && has_rewrite {
                self.error(
                    format!("{at}.filters"),
                    "RequestRedirect and URLRewrite filters cannot be used together",
                );
            }
            if has_redirect && !r.backend_refs.is_empty() {
                self.error(
                    format!("{at}.backendRefs"),
                    "must be empty when a RequestRedirect filter is used",
                );
            }
            self.backend_refs(&at, &r.backend_refs, prefix_only);
            if let Some(t) = &r.timeouts {
                let mut parsed = [None, None];
                for (k, (field, v)) in [
                    ("request", &t.request),
                    ("backendRequest", &t.backend_request),
                ]
                .into_iter()
                .enumerate()
                {
                    if let Some(v) = v {
                        match parse_duration_ms(v) {
                            Ok(ms) => parsed[k] = Some(ms),
                            Err(e) => self.error(format!("{at}.timeouts.{field}"), e),
                        }
                    }
                }
                if let [Some(req), Some(backend)] = parsed
                    && req != 0
                    && (backend > req || backend == 0)
                {
                    self.error(
                        format!("{at}.timeouts.backendRequest"),
                        "must not be greater than timeouts.request",
                    );
                }
            }
            if r.retry.is_some() {
                self.ignored(format!("{at}.retry"), "retries are not supported yet");
            }
            if r.session_persistence.is_some() {
                self.ignored(
                    format!("{at}.sessionPersistence"),
                    "session persistence is not supported yet",
                );
            }
        }
    }

    fn grpc_route(&mut self, s: &GrpcRouteSpec) {
        self.parent_refs(&s.parent_refs);
        self.hostnames(&s.hostnames);
        if s.rules.len() > 16 {
            self.error("spec.rules", "at most 16 rules");
        }
        let mut names = HashMap::new();
        for (i, r) in s.rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            self.rule_name(&mut names, &at, r.name.as_deref(), i);
            if r.matches.len() > 64 {
                self.error(format!("{at}.matches"), "at most 64 matches");
            }
            for (j, m) in r.matches.iter().enumerate() {
                let mat = format!("{at}.matches[{j}]");
                if let Some(method) = &m.method {
                    let regex = match method.type_.as_deref().unwrap_or("Exact") {
                        "Exact" => false,
                        "RegularExpression" => true,
                        _ => {
                            self.error(
                                format!("{mat}.method.type"),
                                "must be Exact or RegularExpression",
                            );
                            false
                        }
                    };
                    if method.service.is_none() && method.method.is_none() {
                        self.error(
                            format!("{mat}.method"),
                            "one or both of service and method must be specified",
                        );
                    }
                    for (field, v) in [("service", &method.service), ("method", &method.method)] {
                        let Some(v) = v else { continue };
                        if regex {
                            if let Err(e) = regex::Regex::new(v) {
                                self.error(
                                    format!("{mat}.method.{field}"),
                                    format!("invalid regular expression: {e}"),
                                );
                            }
                        } else if v.is_empty() || v.contains('/') {
                            self.error(
                                format!("{mat}.method.{field}"),
                                "must be a non-empty name without \"/\"",
                            );
                        }
                    }
                }
                self.value_matches(&format!("{mat}.headers"), &m.headers, true);
            }
            for (j, f) in r.filters.iter().enumerate() {
                if !matches!(
                    f.type_.as_str(),
                    "RequestHeaderModifier"
                        | "ResponseHeaderModifier"
                        | "RequestMirror"
                        | "ExtensionRef"
                ) {
                    self.error(
                        format!("{at}.filters[{j}].type"),
                        "must be RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef",
                    );
                }
            }
            self.filters(&format!("{at}.filters"), &r.filters, false, false);
            self.backend_refs(&at, &r.backend_refs, false);
            if r.session_persistence.is_some() {
                self.ignored(
                    format!("{at}.sessionPersistence"),
                    "session persistence is not supported yet",
                );
            }
        }
    }

    fn rule_name<'a>(
        &mut self,
        names: &mut HashMap<&'a str, usize>,
        at: &str,
        name: Option<&'a str>,
        i: usize,
    ) {
        let Some(name) = name else { return };
        if name.is_empty() || !crate::ir::is_dns_name(name) || name.contains('.') {
            self.error(
                format!("{at}.name"),
                "must be a lower-case RFC 1123 label (letters, digits and '-')",
            );
        } else if let Some(first) = names.insert(name, i) {
            self.error(
                format!("{at}.name"),
                format!(
                    "{name:?} is also the name of spec.rules[{first}]: rule names must be unique"
                ),
            );
        }
    }

    fn path_match(&mut self, at: &str, p: &HttpPathMatch) {
        let value = p.value.as_deref().unwrap_or("/");
        match p.type_.as_deref().unwrap_or("PathPrefix") {
            "Exact" | "PathPrefix" => {
                if !value.starts_with('/') {
                    self.error(
                        format!("{at}.value"),
                        "must be an absolute path (start with /)",
                    );
                } else if value.contains("//") {
                    self.error(format!("{at}.value"), "must not contain //");
                } else if value.contains("/./")
                    || value.contains("/../")
                    || value.contains("%2f")
                    || value.contains("%2F")
                    || value.contains('#')
                    || value.ends_with("/..")
                    || value.ends_with("/.")
                {
                    self.error(
                        format!("{at}.value"),
                        "must not contain /./, /../, %2f, %2F or #, nor end with /. or /..",
                    );
                }
            }
            "RegularExpression" => {
                if let Err(e) = regex::Regex::new(value) {
                    self.error(
                        format!("{at}.value"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            _ => self.error(
                format!("{at}.type"),
                "must be Exact, PathPrefix or RegularExpression",
            ),
        }
    }

    fn value_matches(&mut self, at: &str, matches: &[ValueMatch], header: bool) {
        if matches.len() > 16 {
            self.error(at, "at most 16 matches");
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, m) in matches.iter().enumerate() {
            let p = format!("{at}[{i}]");
            if header && !header_name_ok(&m.name) {
                self.error(format!("{p}.name"), "must be an HTTP header name");
            } else if m.name.is_empty() {
                self.error(format!("{p}.name"), "is required");
            }
            let key = if header {
                m.name.to_ascii_lowercase()
            } else {
                m.name.clone()
            };
            if let Some(first) = names.insert(key, i) {
                self.error(
                    format!("{p}.name"),
                    format!(
                        "{:?} is also matched by {at}[{first}]: names must be unique",
                        m.name
                    ),
                );
            }
            match m.type_.as_deref().unwrap_or("Exact") {
                "Exact" => {}
                "RegularExpression" => {
                    if let Err(e) = regex::Regex::new(&m.value) {
                        self.error(
                            format!("{p}.value"),
                            format!("invalid regular expression: {e}"),
                        );
                    }
                }
                _ => self.error(format!("{p}.type"), "must be Exact or RegularExpression"),
            }
        }
    }

    fn header_modifier(&mut self, at: &str, m: &HeaderModifier) {
        let mut names: HashMap<String, &str> = HashMap::new();
        for (list, headers) in [("set", &m.set), ("add", &m.add)] {
            for (i, h) in headers.iter().enumerate() {
                let p = format!("{at}.{list}[{i}].name");
                if !header_name_ok(&h.name) {
                    self.error(p, "must be an HTTP header name");
                } else if names
                    .insert(format!("{list}/{}", h.name.to_ascii_lowercase()), list)
                    .is_some()
                {
                    self.error(
                        p,
                        format!("{:?} is listed twice: names must be unique", h.name),
                    );
                }
            }
        }
        let mut removed = BTreeSet::new();
        for (i, r) in m.remove.iter().enumerate() {
            if !header_name_ok(r) {
                self.error(format!("{at}.remove[{i}]"), "must be an HTTP header name");
            } else if !removed.insert(r.to_ascii_lowercase()) {
                self.error(
                    format!("{at}.remove[{i}]"),
                    format!("{r:?} is listed twice"),
                );
            }
        }
    }

    /// Filters of a rule (or of a backendRef, `route_level` false): the field named by `type`
    /// must be set and no other.
    fn filters(&mut self, at: &str, filters: &[HttpRouteFilter], prefix_only: bool, http: bool) {
        if filters.len() > 16 {
            self.error(at, "at most 16 filters");
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, f) in filters.iter().enumerate() {
            let p = format!("{at}[{i}]");
            let fields = [
                (
                    "RequestHeaderModifier",
                    "requestHeaderModifier",
                    f.request_header_modifier.is_some(),
                ),
                (
                    "ResponseHeaderModifier",
                    "responseHeaderModifier",
                    f.response_header_modifier.is_some(),
                ),
                ("RequestMirror", "requestMirror", f.request_mirror.is_some()),
                (
                    "RequestRedirect",
                    "requestRedirect",
                    f.request_redirect.is_some(),
                ),
                ("URLRewrite", "urlRewrite", f.url_rewrite.is_some()),
                ("CORS", "cors", f.cors.is_some()),
                ("ExtensionRef", "extensionRef", f.extension_ref.is_some()),
                ("ExternalAuth", "externalAuth", f.external_auth.is_some()),
            ];
            let Some((_, field, _)) = fields.iter().find(|(t, _, _)| *t == f.type_) else {
                self.error(
                    format!("{p}.type"),
                    format!(
                        "{:?} is not a filter type; use RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect, URLRewrite, CORS or ExtensionRef",
                        f.type_
                    ),
                );
                continue;
            };
            for (t, other, set) in fields {
                if t == f.type_ && !set {
                    self.error(format!("{p}.{other}"), format!("is required for type {t}"));
                } else if t != f.type_ && set {
                    self.error(
                        format!("{p}.{other}"),
                        format!("must not be set for type {}", f.type_),
                    );
                }
            }
            if f.type_ != "RequestMirror"
                && f.type_ != "ExtensionRef"
                && let Some(first) = seen.insert(field, i)
            {
                self.error(
                    format!("{p}.type"),
                    format!(
                        "{} is already used by {at}[{first}]; it may be used once",
                        f.type_
                    ),
                );
            }
            if let Some(m) = &f.request_header_modifier {
                self.header_modifier(&format!("{p}.requestHeaderModifier"), m);
            }
            if let Some(m) = &f.response_header_modifier {
                self.header_modifier(&format!("{p}.responseHeaderModifier"), m);
            }
            if let Some(m) = &f.request_mirror {
                let mp = format!("{p}.requestMirror");
                if m.percent.is_some() && m.fraction.is_some() {
                    self.error(mp.clone(), "percent and fraction are mutually exclusive");
                }
                if let Some(pc) = m.percent
                    && !(0..=100).contains(&pc)
                {
                    self.error(format!("{mp}.percent"), "must be between 0 and 100");
                }
                if let Some(fr) = &m.fraction {
                    let d = fr.denominator.unwrap_or(100);
                    if d < 1 || fr.numerator < 0 || fr.numerator > d {
                        self.error(
                            format!("{mp}.fraction"),
                            "numerator must be between 0 and denominator, denominator at least 1",
                        );
                    }
                }
                self.backend_port(
                    &format!("{mp}.backendRef"),
                    m.backend_ref.kind.as_deref(),
                    m.backend_ref.group.as_deref(),
                    m.backend_ref.port,
                );
            }
            if let Some(r) = &f.request_redirect {
                let rp = format!("{p}.requestRedirect");
                if let Some(s) = &r.scheme
                    && s != "http"
                    && s != "https"
                {
                    self.error(format!("{rp}.scheme"), "must be http or https");
                }
                if let Some(h) = &r.hostname
                    && (!hostname_ok(h) || h.starts_with("*."))
                {
                    self.error(format!("{rp}.hostname"), "must be a lower-case DNS name");
                }
                if let Some(port) = r.port
                    && !(1..=65535).contains(&port)
                {
                    self.error(format!("{rp}.port"), "must be between 1 and 65535");
                }
                if let Some(code) = r.status_code
                    && code != 301
                    && code != 302
                    && (!http || !matches!(code, 303 | 307 | 308))
                {
                    self.error(
                        format!("{rp}.statusCode"),
                        "must be 301, 302, 303, 307 or 308",
                    );
                }
                if let Some(pm) = &r.path {
                    self.path_modifier(&format!("{rp}.path"), pm, prefix_only);
                }
            }
            if let Some(u) = &f.url_rewrite {
                let up = format!("{p}.urlRewrite");
                if let Some(h) = &u.hostname
                    && (!hostname_ok(h) || h.starts_with("*."))
                {
                    self.error(format!("{up}.hostname"), "must be a lower-case DNS name");
                }
                if let Some(pm) = &u.path {
                    self.path_modifier(&format!("{up}.path"), pm, prefix_only);
                }
            }
            if let Some(c) = &f.cors {
                let cp = format!("{p}.cors");
                for (k, o) in c.allow_origins.iter().enumerate() {
                    if o != "*" && !o.contains("://") {
                        self.error(
                            format!("{cp}.allowOrigins[{k}]"),
                            "must be \"*\" or scheme://host[:port] (the host may start with \"*.\")",
                        );
                    }
                }
                if let Some(age) = c.max_age
                    && age < 1
                {
                    self.error(format!("{cp}.maxAge"), "must be at least 1");
                }
                if c.allow_credentials == Some(true) && c.allow_origins.iter().any(|o| o == "*") {
                    self.ignored(
                        format!("{cp}.allowOrigins"),
                        "with allowCredentials, \"*\" answers with the request's Origin",
                    );
                }
            }
            if f.external_auth.is_some() {
                self.ignored(
                    format!("{p}.externalAuth"),
                    "not supported yet; requests matching the rule answer 500",
                );
            }
        }
    }

    fn path_modifier(&mut self, at: &str, m: &super::PathModifier, prefix_only: bool) {
        match m.type_.as_str() {
            "ReplaceFullPath" => {
                if m.replace_full_path.is_none() {
                    self.error(
                        format!("{at}.replaceFullPath"),
                        "is required for type ReplaceFullPath",
                    );
                }
                if m.replace_prefix_match.is_some() {
                    self.error(
                        format!("{at}.replacePrefixMatch"),
                        "must not be set for type ReplaceFullPath",
                    );
                }
            }
            "ReplacePrefixMatch" => {
                if m.replace_prefix_match.is_none() {
                    self.error(
                        format!("{at}.replacePrefixMatch"),
                        "is required for type ReplacePrefixMatch",
                    );
                }
                if m.replace_full_path.is_some() {
                    self.error(
                        format!("{at}.replaceFullPath"),
                        "must not be set for type ReplacePrefixMatch",
                    );
                }
                if !prefix_only {
                    self.error(
                        at,
                        "ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match",
                    );
                }
            }
            _ => self.error(
                format!("{at}.type"),
                "must be ReplaceFullPath or ReplacePrefixMatch",
            ),
        }
        for v in [&m.replace_full_path, &m.replace_prefix_match]
            .into_iter()
            .flatten()
        {
            if !v.starts_with('/') {
                self.error(at, format!("{v:?} must be an absolute path (start with /)"));
            }
        }
    }

    fn backend_port(
        &mut self,
        at: &str,
        kind: Option<&str>,
        group: Option<&str>,
        port: Option<i64>,
    ) {
        let service = kind.unwrap_or("Service") == "Service" && group.unwrap_or("").is_empty();
        match port {
            None if service => {
                self.error(format!("{at}.port"), "is required for a Service reference")
            }
            Some(p) if !(1..=65535).contains(&p) => {
                self.error(format!("{at}.port"), "must be between 1 and 65535")
            }
            _ => {}
        }
    }

    fn backend_refs(&mut self, at: &str, refs: &[super::HttpBackendRef], prefix_only: bool) {
        if refs.len() > 16 {
            self.error(format!("{at}.backendRefs"), "at most 16 backend references");
        }
        for (i, b) in refs.iter().enumerate() {
            let p = format!("{at}.backendRefs[{i}]");
            if b.name.is_empty() {
                self.error(format!("{p}.name"), "is required");
            }
            self.backend_port(&p, b.kind.as_deref(), b.group.as_deref(), b.port);
            if let Some(w) = b.weight
                && !(0..=1_000_000).contains(&w)
            {
                self.error(format!("{p}.weight"), "must be between 0 and 1000000");
            }
            self.filters(&format!("{p}.filters"), &b.filters, prefix_only, true);
        }
    }

    fn reference_grant(&mut self, s: &ReferenceGrantSpec) {
        if s.from.is_empty() || s.from.len() > 16 {
            self.error("spec.from", "must have 1 to 16 entries");
        }
        if s.to.is_empty() || s.to.len() > 16 {
            self.error("spec.to", "must have 1 to 16 entries");
        }
        for (i, f) in s.from.iter().enumerate() {
            if f.kind.is_empty() {
                self.error(format!("spec.from[{i}].kind"), "is required");
            }
            if f.namespace.is_empty() {
                self.error(format!("spec.from[{i}].namespace"), "is required");
            }
        }
        for (i, t) in s.to.iter().enumerate() {
            if t.kind.is_empty() {
                self.error(format!("spec.to[{i}].kind"), "is required");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("1.5s").is_err());
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("1h1m1s1ms1h").is_err());
    }

    fn errors(yaml: &str) -> Vec<String> {
        match crate::manifest::parse_file(std::path::Path::new("t.yaml"), yaml).remove(0) {
            crate::manifest::Parsed::Invalid { problems, .. } => problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_and_rules_name_their_path() {
        let e = errors(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - matches: [{path: {value: /a}, bogus: 1}]\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("spec.rules[0].matches[0].bogus: unknown field `bogus`"),
            "{e:?}"
        );
        let e = errors(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  gatewayClassName: c
  listeners:
  - {name: a, port: 80, protocol: HTTPS}
  - {name: a, port: 0, protocol: HTTP, hostname: "10.0.0.1"}
"#,
        );
        assert_eq!(
            e,
            [
                "spec.listeners[0].tls: is required for protocol HTTPS",
                "spec.listeners[1].name: \"a\" is also the name of spec.listeners[0]: listener names must be unique",
                "spec.listeners[1].port: must be between 1 and 65535",
                format!("spec.listeners[1].hostname: {HOSTNAME_RULE}").as_str(),
            ]
        );
        let e = errors(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  rules:
  - matches: [{path: {type: Exact, value: /a}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}
    - {type: RequestRedirect, requestRedirect: {statusCode: 300}}
    backendRefs: [{name: s}]
"#,
        );
        assert_eq!(
            e,
            [
                "spec.rules[0].filters[0].urlRewrite.path: ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match",
                "spec.rules[0].filters[1].requestRedirect.statusCode: must be 301, 302, 303, 307 or 308",
                "spec.rules[0].filters: RequestRedirect and URLRewrite filters cannot be used together",
                "spec.rules[0].backendRefs: must be empty when a RequestRedirect filter is used",
                "spec.rules[0].backendRefs[0].port: is required for a Service reference",
            ]
        );
    }

    #[test]
    fn hostnames() {
        assert!(hostname_ok("foo.example.com"));
        assert!(hostname_ok("*.example.com"));
        assert!(!hostname_ok("*.*.example.com"));
        assert!(!hostname_ok("10.0.0.1"));
        assert!(!hostname_ok("Foo.com"));
    }
}
