//! The ingress-nginx annotations in IR terms: regex paths and rewrites, redirects, canary
//! routes, and the upstream settings that make an Ingress use its own clusters.

use bowline_model::ingress::annotations::{
    self, Annotations, BackendProtocol, Canary, HashBy, LoadBalance, ProxySsl, UrlRedirect,
};
use bowline_model::ir;

use super::super::CONNECT_TIMEOUT_MS;

/// The cluster settings an Ingress's annotations choose for its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Upstream {
    pub protocol: ir::Protocol,
    pub lb_policy: ir::LbPolicy,
    pub hash_on: Option<ir::HashOn>,
    pub connect_timeout_ms: u64,
    /// `proxy-send-timeout`.
    pub send_timeout_ms: Option<u64>,
    /// TLS to the backend (`backend-protocol: HTTPS` or `GRPCS`), with the `proxy-ssl-*`
    /// settings.
    pub tls: Option<ProxySsl>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            protocol: ir::Protocol::Http,
            lb_policy: ir::LbPolicy::RoundRobin,
            hash_on: None,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            send_timeout_ms: None,
            tls: None,
        }
    }
}

// === impl Upstream ===

impl Upstream {
    /// The settings of `routing` (protocol, connect and send timeouts) with the balancing of `balancing`
    /// (the same Ingress, or a canary's: ingress-nginx applies a canary's own load-balance,
    /// upstream-hash-by and affinity). `cookie_path` is the path of the affinity cookie when
    /// `session-cookie-path` is not set.
    pub fn of(routing: &Annotations, balancing: &Annotations, cookie_path: &str) -> Upstream {
        let protocol = match routing.backend_protocol {
            BackendProtocol::Http | BackendProtocol::Https => ir::Protocol::Http,
            BackendProtocol::Grpc | BackendProtocol::Grpcs => ir::Protocol::Grpc,
        };
        let tls = routing
            .backend_protocol
            .is_tls()
            .then(|| routing.proxy_ssl.clone());
        let connect_timeout_ms = routing
            .connect_timeout_seconds
            .map_or(CONNECT_TIMEOUT_MS, |s| s.saturating_mul(1000));
        // ingress-nginx: affinity, then upstream-hash-by, then load-balance.
        let (lb_policy, hash_on) = if let Some(a) = &balancing.affinity {
            let cookie = ir::HashOn::Cookie {
                name: a.cookie.clone(),
                ttl_seconds: a.max_age_seconds.unwrap_or(0),
                path: Some(a.path.clone().unwrap_or_else(|| cookie_path.to_string())),
                domain: a.domain.clone(),
                secure: a.secure,
                same_site: a.same_site.clone(),
            };
            (ir::LbPolicy::RingHash, Some(cookie))
        } else if let Some(h) = &balancing.hash_by {
            let on = match h {
                HashBy::ClientAddress => ir::HashOn::SourceIp,
                HashBy::Header(name) => ir::HashOn::Header { name: name.clone() },
                HashBy::Template(parts) => ir::HashOn::Template {
                    parts: parts.clone(),
                },
            };
            (ir::LbPolicy::RingHash, Some(on))
        } else {
            match balancing.load_balance {
                Some(LoadBalance::Ewma) => (ir::LbPolicy::PeakEwma, None),
                Some(LoadBalance::RoundRobin) | None => (ir::LbPolicy::RoundRobin, None),
            }
        };
        Upstream {
            protocol,
            lb_policy,
            hash_on,
            connect_timeout_ms,
            send_timeout_ms: routing.send_timeout_seconds.map(|s| s.saturating_mul(1000)),
            tls,
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Upstream::default()
    }
}

/// The per-route settings of an Ingress's annotations: CORS, client access
/// (`whitelist-source-range`, `denylist-source-range`), client limits (`limit-*`) and the body
/// size (`proxy-body-size`). Access, limits and body size are not applied to redirects: nginx
/// answers those in its rewrite phase, before access checks and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RoutePolicy {
    cors: Option<Box<ir::Cors>>,
    access: Option<Box<ir::ClientAccess>>,
    client_limits: Option<Box<ir::ClientLimits>>,
    max_request_body_bytes: Option<u64>,
}

// === impl RoutePolicy ===

impl RoutePolicy {
    /// The policy of an Ingress; `zone` names its limit counters (one zone per Ingress).
    pub fn of(a: &Annotations, zone: String) -> RoutePolicy {
        let access = (!a.allow_sources.is_empty() || !a.deny_sources.is_empty()).then(|| {
            Box::new(ir::ClientAccess {
                allow: a.allow_sources.clone(),
                deny: a.deny_sources.clone(),
            })
        });
        let l = &a.limits;
        let client_limits = (!l.is_empty()).then(|| {
            // nginx limit_req: burst = rate × limit-burst-multiplier, nodelay.
            let rate = |requests: u32, period_seconds: u32| ir::RateLimit {
                requests,
                period_seconds,
                burst: requests.saturating_mul(l.burst_multiplier),
            };
            let mut rates = Vec::new();
            rates.extend(l.rpm.map(|n| rate(n, 60)));
            rates.extend(l.rps.map(|n| rate(n, 1)));
            Box::new(ir::ClientLimits {
                zone,
                rates,
                max_concurrent: l.connections,
                exempt: l.exempt.clone(),
                status: 503,
            })
        });
        RoutePolicy {
            cors: a.cors.clone().map(Box::new),
            access,
            client_limits,
            max_request_body_bytes: a.body_size,
        }
    }

    /// `route` with the policy.
    pub fn apply(&self, mut route: ir::Route) -> ir::Route {
        route.cors = self.cors.clone();
        if !matches!(route.action, ir::RouteAction::Redirect(_)) {
            route.access = self.access.clone();
            route.client_limits = self.client_limits.clone();
            route.max_request_body_bytes = self.max_request_body_bytes;
        }
        route
    }
}

/// The IR match of a path of a host where ingress-nginx uses case-insensitive regular
/// expressions (`location ~* "^PATH"`): the path as written, anchored at the start only.
pub(super) fn regex_match(raw: &str) -> String {
    format!("(?i)(?:{raw}).*")
}

/// Checks that a path compiles as the regular expression of a regex host, giving its groups.
pub(super) fn compile_path(raw: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("(?i){raw}")).map_err(|e| {
        format!(
            "is not a regular expression ({})",
            annotations::regex_error(&e)
        )
    })
}

/// The rewrite of `rewrite-target` on a path of a regex host, as nginx's
/// `rewrite "(?i)PATH" TARGET break;`: when the path matches, the whole path becomes TARGET with
/// the path's groups substituted.
pub(super) fn rewrite(raw: &str, target: &str) -> Result<ir::RegexRewrite, String> {
    let re = compile_path(raw)?;
    let substitution = annotations::nginx_substitution(target, Some(&re))?;
    Ok(ir::RegexRewrite {
        pattern: format!("(?i)^.*?(?:{raw}).*$"),
        substitution,
    })
}

/// The redirect of `permanent-redirect` / `temporal-redirect`.
pub(super) fn url_redirect(r: &UrlRedirect) -> ir::Redirect {
    ir::Redirect {
        scheme: Some(r.scheme.clone()),
        host: Some(r.host.clone()),
        port: Some(r.port.unwrap_or(if r.scheme == "https" { 443 } else { 80 })),
        path: Some(ir::RedirectPath::FullPath(
            r.path.clone().unwrap_or_else(|| "/".into()),
        )),
        status: r.status,
        // nginx's `return CODE URL` sends the URL as written, without the request's query.
        drop_query: true,
    }
}

/// The `ssl-redirect` / `force-ssl-redirect` of a plaintext request: 308 to HTTPS.
pub(super) fn https_redirect(https_port: u16) -> ir::Redirect {
    ir::Redirect {
        scheme: Some("https".into()),
        host: None,
        port: Some(https_port),
        path: None,
        status: 308,
        drop_query: false,
    }
}

/// The routes a canary adds in front of its main route, for one IR path match, in ingress-nginx's
/// precedence: the header, then the cookie (each `always` → canary, `never` → main, anything
/// else falls through); the weight split is the main route's action.
pub(super) fn canary_matches(
    c: &Canary,
    base: &ir::RouteMatch,
) -> Vec<(ir::RouteMatch, CanaryPick)> {
    let mut out = Vec::new();
    let with_header = |m: ir::StringMatch| ir::RouteMatch {
        headers: vec![ir::KeyValueMatch {
            name: c.by_header.clone().unwrap_or_default().to_ascii_lowercase(),
            matcher: m,
            invert: false,
        }],
        ..base.clone()
    };
    if c.by_header.is_some() {
        if let Some(v) = &c.header_value {
            out.push((
                with_header(ir::StringMatch::Exact(v.clone())),
                CanaryPick::Canary,
            ));
        } else if let Some(p) = &c.header_pattern {
            // ngx.re.match searches: the pattern may match anywhere in the value.
            let searched = ir::StringMatch::Regex(format!("(?s).*?(?:{p}).*"));
            out.push((with_header(searched), CanaryPick::Canary));
        } else {
            out.push((
                with_header(ir::StringMatch::Exact("always".into())),
                CanaryPick::Canary,
            ));
            out.push((
                with_header(ir::StringMatch::Exact("never".into())),
                CanaryPick::Main,
            ));
        }
    }
    if let Some(cookie) = &c.by_cookie {
        for (value, pick) in [("always", CanaryPick::Canary), ("never", CanaryPick::Main)] {
            out.push((
                ir::RouteMatch {
                    cookies: vec![ir::KeyValueMatch {
                        name: cookie.clone(),
                        matcher: ir::StringMatch::Exact(value.into()),
                        invert: false,
                    }],
                    ..base.clone()
                },
                pick,
            ));
        }
    }
    out
}

/// Where a canary route sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CanaryPick {
    Canary,
    Main,
}

/// The main action with the canary's weight split in: `weight` of `total` requests go to the
/// canary's clusters.
pub(super) fn weighted(
    main: &ir::ForwardAction,
    canary: &ir::ForwardAction,
    weight: u32,
    total: u32,
) -> ir::ForwardAction {
    let mut clusters = Vec::new();
    let rest = total - weight.min(total);
    for c in &main.clusters {
        if rest > 0 {
            clusters.push(ir::WeightedCluster {
                weight: c.weight.saturating_mul(rest),
                ..c.clone()
            });
        }
    }
    for c in &canary.clusters {
        if weight > 0 {
            clusters.push(ir::WeightedCluster {
                weight: c.weight.saturating_mul(weight),
                ..c.clone()
            });
        }
    }
    ir::ForwardAction {
        clusters,
        ..main.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_replace_the_whole_path_like_nginx() {
        let r = rewrite("/something(/|$)(.*)", "/$2").unwrap();
        let re = regex::Regex::new(&r.pattern).unwrap();
        for (path, want) in [
            ("/something", "/"),
            ("/something/", "/"),
            ("/something/new", "/new"),
            ("/SOMETHING/a/b", "/a/b"),
        ] {
            let got = re.replace_all(path, r.substitution.as_str());
            let got = if got.starts_with('/') {
                got.to_string()
            } else {
                format!("/{got}")
            };
            assert_eq!(got, want, "{path}");
        }
        // Without groups, everything under the path becomes the target.
        let r = rewrite("/app", "/").unwrap();
        let re = regex::Regex::new(&r.pattern).unwrap();
        assert_eq!(re.replace_all("/app/x/y", r.substitution.as_str()), "/");
        assert!(rewrite("/a(", "/").is_err());
    }

    #[test]
    fn regex_paths_match_from_the_start_case_insensitively() {
        let re = regex::Regex::new(&format!("^(?:{})$", regex_match("/foo/bar/(.+)"))).unwrap();
        assert!(re.is_match("/foo/bar/1") && re.is_match("/FOO/Bar/x/y"));
        assert!(!re.is_match("/foo/bar/") && !re.is_match("/x/foo/bar/1"));
    }

    #[test]
    fn weights_split_between_main_and_canary() {
        let fwd = |c: &str| ir::ForwardAction {
            clusters: vec![ir::WeightedCluster::new(c.into(), 1)],
            rewrite: ir::Rewrite::default(),
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        };
        let w = |a: ir::ForwardAction| -> Vec<(String, u32)> {
            a.clusters
                .into_iter()
                .map(|c| (c.cluster, c.weight))
                .collect()
        };
        assert_eq!(
            w(weighted(&fwd("m"), &fwd("c"), 30, 100)),
            [("m".to_string(), 70), ("c".to_string(), 30)]
        );
        assert_eq!(
            w(weighted(&fwd("m"), &fwd("c"), 100, 100)),
            [("c".to_string(), 100)]
        );
        assert_eq!(
            w(weighted(&fwd("m"), &fwd("c"), 0, 100)),
            [("m".to_string(), 100)]
        );
    }
}
