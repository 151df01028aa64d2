//! The ingress-nginx annotations of an Ingress (`nginx.ingress.kubernetes.io/NAME`, or the same
//! NAME under `bowline.io/`), parsed strictly into [`Annotations`].
//!
//! Every annotation under either prefix is accounted for: a supported one with a good value is
//! applied; a bad value, an unsupported annotation, an unknown one and a raw-nginx one
//! (`configuration-snippet`, …) each produce a [`Problem`] of severity `Ignored` naming the
//! annotation, and the Ingress is served without it. When both prefixes set the same NAME, the
//! `bowline.io/` one wins and the other is reported.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::ir;
use crate::manifest::Problem;

/// Prefixes of the annotations, the preferred one last.
pub const PREFIXES: [&str; 2] = ["nginx.ingress.kubernetes.io/", "bowline.io/"];

/// Annotations that hold raw nginx configuration: refused.
const RAW_NGINX: [&str; 5] = [
    "configuration-snippet",
    "server-snippet",
    "stream-snippet",
    "auth-snippet",
    "modsecurity-snippet",
];

/// Annotations ingress-nginx documents that Bowline does not implement.
const NOT_SUPPORTED: &[&str] = &[
    "affinity-mode",
    "affinity-canary-behavior",
    "auth-realm",
    "auth-secret",
    "auth-secret-type",
    "auth-type",
    "auth-tls-secret",
    "auth-tls-verify-depth",
    "auth-tls-verify-client",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-proxy-set-headers",
    "enable-global-auth",
    "client-body-buffer-size",
    "custom-http-errors",
    "default-backend",
    "from-to-www-redirect",
    "http2-push-preload",
    "global-rate-limit",
    "global-rate-limit-window",
    "global-rate-limit-key",
    "global-rate-limit-ignored-cidrs",
    "limit-rate",
    "limit-rate-after",
    "preserve-trailing-slash",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-request-buffering",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-http-version",
    "proxy-ssl-ciphers",
    "proxy-ssl-protocols",
    "proxy-ssl-verify-depth",
    "enable-rewrite-log",
    "satisfy",
    "server-alias",
    "service-upstream",
    "session-cookie-conditional-samesite-none",
    "session-cookie-change-on-failure",
    "session-cookie-hash",
    "ssl-passthrough",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "x-forwarded-prefix",
    "upstream-vhost",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-buffer-size",
    "proxy-max-temp-file-size",
    "ssl-ciphers",
    "ssl-prefer-server-ciphers",
    "connection-proxy-header",
    "enable-access-log",
    "enable-opentracing",
    "opentracing-trust-incoming-span",
    "enable-influxdb",
    "influxdb-measurement",
    "influxdb-port",
    "influxdb-host",
    "influxdb-server-name",
    "enable-modsecurity",
    "enable-owasp-core-rules",
    "modsecurity-transaction-id",
    "mirror-request-body",
    "mirror-target",
    "mirror-host",
    "temporal-redirect-code",
];

/// Annotations a canary Ingress takes from its main Ingress, with [`CORS_SETTINGS`]
/// (ingress-nginx applies only the canary, load-balancing and affinity annotations of a canary
/// Ingress).
const CANARY_INHERITS: &[&str] = &[
    "rewrite-target",
    "use-regex",
    "app-root",
    "ssl-redirect",
    "force-ssl-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "backend-protocol",
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "enable-cors",
    "whitelist-source-range",
    "denylist-source-range",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-whitelist",
    "proxy-body-size",
];

/// The settings of `enable-cors`.
const CORS_SETTINGS: [&str; 6] = [
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

/// The default `cors-allow-methods` of ingress-nginx.
pub const CORS_DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// The default `cors-allow-headers` of ingress-nginx.
pub const CORS_DEFAULT_HEADERS: &str = "DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Authorization";
/// The default `cors-max-age` of ingress-nginx, in seconds.
pub const CORS_DEFAULT_MAX_AGE: u64 = 1_728_000;
/// The default `session-cookie-name`.
pub const DEFAULT_SESSION_COOKIE: &str = "INGRESSCOOKIE";
/// The default `limit-burst-multiplier`.
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// How the gateway speaks to the backends (`backend-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// gRPC over h2c.
    Grpc,
    /// gRPC over TLS (HTTP/2, ALPN `h2`).
    Grpcs,
}

impl BackendProtocol {
    /// HTTPS or GRPCS.
    pub fn is_tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::Grpcs)
    }
}

/// TLS to HTTPS and GRPCS backends (`proxy-ssl-*`). Without `verify` the backend's certificate
/// is not checked, as ingress-nginx's `proxy_ssl_verify off` default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySsl {
    /// `proxy-ssl-secret`: (namespace, name) of a Secret with `ca.crt` (the authorities that
    /// `verify` checks against) and optionally `tls.crt` and `tls.key` (a client certificate).
    pub secret: Option<(String, String)>,
    /// `proxy-ssl-verify: on`.
    pub verify: bool,
    /// `proxy-ssl-name`: the name sent as SNI and verified; default the Service's
    /// `<name>.<namespace>.svc`.
    pub name: Option<String>,
}

/// `permanent-redirect` / `temporal-redirect`: every path of the Ingress answers a redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlRedirect {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    /// `None`: the URL has no path (`https://example.com`), so the Location is `/`.
    pub path: Option<String>,
    pub status: u16,
}

/// The canary settings of an Ingress with `canary: "true"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Canary {
    pub by_header: Option<String>,
    pub header_value: Option<String>,
    /// A regular expression searched in the header value (unanchored, as PCRE does).
    pub header_pattern: Option<String>,
    pub by_cookie: Option<String>,
    pub weight: u32,
    pub weight_total: u32,
}

/// `affinity: cookie` and its `session-cookie-*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub cookie: String,
    /// `session-cookie-max-age`, else `session-cookie-expires`; `None`: a session cookie.
    pub max_age_seconds: Option<u64>,
    /// `session-cookie-path`; `None`: the Ingress's path.
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-secure`.
    pub secure: bool,
    /// `session-cookie-samesite`: `None`, `Lax` or `Strict`.
    pub same_site: Option<String>,
}

/// `upstream-hash-by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashBy {
    /// `$remote_addr`, `$binary_remote_addr`.
    ClientAddress,
    /// `$http_NAME`: the header (lower case, `_` read as `-`).
    Header(String),
    /// Any other nginx value: variables and text (`$host$request_uri`, `user-$arg_id`).
    Template(Vec<ir::HashPart>),
}

/// `load-balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    /// `ewma`: Bowline's least-request balancer (power of two choices).
    Ewma,
}

/// Per-client-address rate and connection limits (`limit-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub rps: Option<u32>,
    pub rpm: Option<u32>,
    pub burst_multiplier: u32,
    pub connections: Option<u32>,
    /// `limit-whitelist`: addresses exempt from the limits.
    pub exempt: Vec<String>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rps.is_none() && self.rpm.is_none() && self.connections.is_none()
    }
}

/// The annotations of one Ingress that Bowline applies. Defaults are ingress-nginx's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotations {
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    pub app_root: Option<String>,
    pub ssl_redirect: bool,
    pub force_ssl_redirect: bool,
    pub redirect: Option<UrlRedirect>,
    pub backend_protocol: BackendProtocol,
    pub proxy_ssl: ProxySsl,
    /// Set when `canary: "true"`.
    pub canary: Option<Canary>,
    pub affinity: Option<Affinity>,
    pub hash_by: Option<HashBy>,
    pub load_balance: Option<LoadBalance>,
    pub connect_timeout_seconds: Option<u64>,
    pub read_timeout_seconds: Option<u64>,
    /// `proxy-send-timeout`: the longest one write to the backend may stay blocked.
    pub send_timeout_seconds: Option<u64>,
    pub cors: Option<ir::Cors>,
    /// `whitelist-source-range`.
    pub allow_sources: Vec<String>,
    /// `denylist-source-range`.
    pub deny_sources: Vec<String>,
    pub limits: Limits,
    /// `proxy-body-size` in bytes; `Some(0)`: no limit.
    pub body_size: Option<u64>,
}

impl Default for Annotations {
    fn default() -> Self {
        Annotations {
            rewrite_target: None,
            use_regex: false,
            app_root: None,
            ssl_redirect: true,
            force_ssl_redirect: false,
            redirect: None,
            backend_protocol: BackendProtocol::Http,
            proxy_ssl: ProxySsl::default(),
            canary: None,
            affinity: None,
            hash_by: None,
            load_balance: None,
            connect_timeout_seconds: None,
            read_timeout_seconds: None,
            send_timeout_seconds: None,
            cors: None,
            allow_sources: Vec::new(),
            deny_sources: Vec::new(),
            limits: Limits {
                burst_multiplier: DEFAULT_BURST_MULTIPLIER,
                ..Limits::default()
            },
            body_size: None,
        }
    }
}

/// The annotations of an Ingress by NAME (prefix removed), with the full key they came from.
struct Found<'a> {
    values: BTreeMap<&'a str, (&'a str, &'a str)>,
    problems: Vec<Problem>,
}

impl<'a> Found<'a> {
    /// The value of NAME, marking it as used.
    fn take(&mut self, name: &str) -> Option<(&'a str, &'a str)> {
        self.values.remove(name)
    }

    fn bad(&mut self, key: &str, message: impl std::fmt::Display) {
        self.problems.push(Problem::ignored(
            at(key),
            format!("{message}; the annotation is not applied"),
        ));
    }

    fn note(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem::ignored(at(key), message));
    }

    /// Reads the boolean `switch` (off by default); while it is off, each of `dependents` that is
    /// set is reported as having no effect.
    fn switch(&mut self, switch: &str, dependents: &[&str]) -> bool {
        let on = self.parsed(switch, boolean).unwrap_or(false);
        if !on {
            for name in dependents {
                if let Some((key, _)) = self.take(name) {
                    self.note(key, format!("has no effect without {switch}: \"true\""));
                }
            }
        }
        on
    }

    fn parsed<T>(&mut self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let (key, value) = self.take(name)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(why) => {
                self.bad(key, format!("{value:?} {why}"));
                None
            }
        }
    }
}

/// The field path of an annotation.
pub fn at(key: &str) -> String {
    format!("metadata.annotations[{key:?}]")
}

/// Parses the annotations of an Ingress. Problems are notes (severity `Ignored`), in key order.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> (Annotations, Vec<Problem>) {
    let mut found = Found {
        values: BTreeMap::new(),
        problems: Vec::new(),
    };
    for (k, v) in annotations.into_iter().flatten() {
        let Some((prefix, name)) = PREFIXES
            .iter()
            .find_map(|p| k.strip_prefix(p).map(|n| (*p, n)))
        else {
            continue;
        };
        if let Some((other, _)) = found.values.get(name).copied() {
            // Keys are visited in order; keep the bowline.io/ one.
            let (kept, dropped) = if prefix == PREFIXES[1] {
                (k.as_str(), other)
            } else {
                (other, k.as_str())
            };
            found.note(
                dropped,
                format!("{kept:?} is also set and takes precedence; this one is not used"),
            );
            if prefix != PREFIXES[1] {
                continue;
            }
        }
        found.values.insert(name, (k.as_str(), v.as_str()));
    }
    let is_canary = found
        .values
        .get("canary")
        .is_some_and(|(_, v)| boolean(v) == Ok(true));
    if is_canary {
        for name in CANARY_INHERITS.iter().chain(&CORS_SETTINGS) {
            if let Some((key, _)) = found.take(name) {
                found.note(
                    key,
                    "ignored on a canary Ingress: the main Ingress's setting applies (as in ingress-nginx)",
                );
            }
        }
    }
    let mut a = Annotations::default();
    rewrites(&mut found, &mut a);
    redirects(&mut found, &mut a);
    upstream(&mut found, &mut a);
    canary(&mut found, &mut a);
    a.cors = cors(&mut found);
    access(&mut found, &mut a);
    for (name, (key, _)) in std::mem::take(&mut found.values) {
        let message = if RAW_NGINX.contains(&name) {
            "refused: it holds raw nginx configuration, which Bowline (not nginx) cannot run or translate; the Ingress is served without it".to_string()
        } else if NOT_SUPPORTED.contains(&name) {
            "not supported by Bowline; the Ingress is served without it".to_string()
        } else {
            "unknown annotation (not an ingress-nginx annotation Bowline knows); the Ingress is served without it".to_string()
        };
        found.note(key, message);
    }
    found
        .problems
        .sort_by(|x, y| x.path.cmp(&y.path).then(x.message.cmp(&y.message)));
    (a, found.problems)
}

fn rewrites(f: &mut Found<'_>, a: &mut Annotations) {
    a.use_regex = f.parsed("use-regex", boolean).unwrap_or(false);
    a.rewrite_target = f.parsed("rewrite-target", |v| {
        if !v.starts_with('/') {
            return Err(
                "is not a path (it must start with /; redirects to URLs are not supported)".into(),
            );
        }
        if v.contains(char::is_whitespace) {
            return Err("contains whitespace".into());
        }
        nginx_substitution(v, None).map(|_| v.to_string())
    });
    a.app_root = f.parsed("app-root", |v| absolute_path(v).map(|_| v.to_string()));
}

fn redirects(f: &mut Found<'_>, a: &mut Annotations) {
    a.ssl_redirect = f.parsed("ssl-redirect", boolean).unwrap_or(true);
    a.force_ssl_redirect = f.parsed("force-ssl-redirect", boolean).unwrap_or(false);
    let code = f.parsed("permanent-redirect-code", |v| match v.parse::<u16>() {
        Ok(c @ (301 | 302 | 303 | 307 | 308)) => Ok(c),
        _ => Err("is not a redirect status (301, 302, 303, 307 or 308); 301 is used".into()),
    });
    let permanent_key = f
        .values
        .get("permanent-redirect")
        .map(|(k, _)| k.to_string());
    let permanent = f.parsed("permanent-redirect", url);
    let temporal = f.parsed("temporal-redirect", url);
    // ingress-nginx reads temporal-redirect first.
    a.redirect = match (temporal, permanent) {
        (Some(t), p) => {
            if let (Some(_), Some(key)) = (p, permanent_key) {
                f.note(
                    &key,
                    "temporal-redirect is also set and takes precedence (as in ingress-nginx); this one is not used",
                );
            }
            Some(UrlRedirect { status: 302, ..t })
        }
        (None, Some(p)) => Some(UrlRedirect {
            status: code.unwrap_or(301),
            ..p
        }),
        (None, None) => None,
    };
}

/// `proxy-ssl-secret`, `proxy-ssl-verify`, `proxy-ssl-name`, `proxy-ssl-server-name`: only with
/// an HTTPS or GRPCS `backend-protocol`.
fn proxy_ssl(f: &mut Found<'_>, a: &mut Annotations) {
    const NAMES: [&str; 4] = [
        "proxy-ssl-secret",
        "proxy-ssl-verify",
        "proxy-ssl-name",
        "proxy-ssl-server-name",
    ];
    if !a.backend_protocol.is_tls() {
        for name in NAMES {
            if let Some((key, _)) = f.take(name) {
                f.note(
                    key,
                    "has no effect: backend-protocol is not HTTPS or GRPCS (the backend is spoken to in plaintext)",
                );
            }
        }
        return;
    }
    let ssl = &mut a.proxy_ssl;
    ssl.secret = f.parsed("proxy-ssl-secret", |v| {
        let (ns, name) = v
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or("is not namespace/secretName")?;
        Ok((ns.to_string(), name.to_string()))
    });
    let verify_key = f
        .take("proxy-ssl-verify")
        .and_then(|(key, value)| match on_off(value) {
            Ok(on) => on.then_some(key),
            Err(why) => {
                f.bad(key, format!("{value:?} {why}"));
                None
            }
        });
    ssl.name = f.parsed("proxy-ssl-name", |v| {
        let v = v.trim().to_ascii_lowercase();
        if ir::is_dns_name(&v) {
            Ok(v)
        } else {
            Err("is not a DNS name".into())
        }
    });
    if let Some((key, value)) = f.take("proxy-ssl-server-name") {
        if on_off(value) == Ok(false) {
            f.bad(
                key,
                "\"off\" is not supported: Bowline always sends the server name (SNI) to TLS backends",
            );
        } else if let Err(why) = on_off(value) {
            f.bad(key, format!("{value:?} {why}"));
        }
    }
    if let Some(key) = verify_key {
        a.proxy_ssl.verify = true;
        if a.proxy_ssl.secret.is_none() {
            f.note(
                key,
                "needs proxy-ssl-secret (a Secret with ca.crt) to verify against; the backend's requests are refused (answered 503) rather than sent unverified",
            );
        }
    }
}

/// nginx's `on` / `off`.
fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("is not \"on\" or \"off\"".into()),
    }
}

fn upstream(f: &mut Found<'_>, a: &mut Annotations) {
    if let Some((key, value)) = f.take("backend-protocol") {
        match value.to_ascii_uppercase().as_str() {
            "HTTP" => a.backend_protocol = BackendProtocol::Http,
            "HTTPS" => a.backend_protocol = BackendProtocol::Https,
            "GRPC" => a.backend_protocol = BackendProtocol::Grpc,
            "GRPCS" => a.backend_protocol = BackendProtocol::Grpcs,
            "AJP" | "FCGI" | "AUTO_HTTP" => f.bad(
                key,
                format!("{value:?} is not supported (HTTP, HTTPS, GRPC and GRPCS are)"),
            ),
            _ => f.bad(
                key,
                format!("{value:?} is not one of HTTP, HTTPS, GRPC, GRPCS, AJP, FCGI"),
            ),
        }
    }
    proxy_ssl(f, a);
    if let Some((key, value)) = f.take("affinity") {
        if value == "cookie" {
            let cookie = f
                .parsed("session-cookie-name", |v| {
                    if !v.is_empty() && v.bytes().all(is_token_byte) {
                        Ok(v.to_string())
                    } else {
                        Err("is not a cookie name".into())
                    }
                })
                .unwrap_or_else(|| DEFAULT_SESSION_COOKIE.to_string());
            let max_age = f.parsed("session-cookie-max-age", seconds);
            let expires = f.parsed("session-cookie-expires", seconds);
            let path = f.parsed("session-cookie-path", |v| {
                absolute_path(v).map(|_| v.to_string())
            });
            let domain = f.parsed("session-cookie-domain", |v| {
                let d = v.trim().to_ascii_lowercase();
                if ir::is_dns_name(d.trim_start_matches('.')) {
                    Ok(d)
                } else {
                    Err("is not a domain".into())
                }
            });
            let secure = f.parsed("session-cookie-secure", boolean).unwrap_or(false);
            let same_site = f.parsed("session-cookie-samesite", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "none" => Ok("None".to_string()),
                    "lax" => Ok("Lax".to_string()),
                    "strict" => Ok("Strict".to_string()),
                    _ => Err("is not None, Lax or Strict".into()),
                }
            });
            a.affinity = Some(Affinity {
                cookie,
                max_age_seconds: max_age.or(expires),
                path,
                domain,
                secure,
                same_site,
            });
        } else {
            f.bad(
                key,
                format!("{value:?} is not \"cookie\" (the only affinity type)"),
            );
        }
    }
    for name in [
        "session-cookie-name",
        "session-cookie-max-age",
        "session-cookie-expires",
        "session-cookie-path",
        "session-cookie-domain",
        "session-cookie-secure",
        "session-cookie-samesite",
    ] {
        if let Some((key, _)) = f.take(name) {
            f.note(key, "has no effect without affinity: \"cookie\"");
        }
    }
    a.hash_by = f.parsed("upstream-hash-by", hash_by);
    a.load_balance = f.parsed("load-balance", |v| match v {
        "round_robin" => Ok(LoadBalance::RoundRobin),
        "ewma" => Ok(LoadBalance::Ewma),
        _ => Err("is not round_robin or ewma".into()),
    });
    a.connect_timeout_seconds = f.parsed("proxy-connect-timeout", seconds);
    a.read_timeout_seconds = f.parsed("proxy-read-timeout", seconds);
    a.send_timeout_seconds = f.parsed("proxy-send-timeout", seconds);
}

fn canary(f: &mut Found<'_>, a: &mut Annotations) {
    let names = [
        "canary-by-header",
        "canary-by-header-value",
        "canary-by-header-pattern",
        "canary-by-cookie",
        "canary-weight",
        "canary-weight-total",
    ];
    if !f.switch("canary", &names) {
        return;
    }
    let mut c = Canary {
        weight_total: 100,
        ..Canary::default()
    };
    let non_empty = |v: &str| {
        if v.is_empty() {
            Err("is empty".to_string())
        } else {
            Ok(v.to_string())
        }
    };
    c.by_header = f.parsed("canary-by-header", |v| {
        if !v.is_empty() && v.bytes().all(is_token_byte) {
            Ok(v.to_string())
        } else {
            Err("is not a header name".into())
        }
    });
    c.header_value = f.parsed("canary-by-header-value", non_empty);
    c.header_pattern = f.parsed("canary-by-header-pattern", |v| {
        regex::Regex::new(v).map(|_| v.to_string()).map_err(|e| {
            let e = e.to_string();
            let why = e
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            format!("is not a regular expression ({why})")
        })
    });
    if c.header_value.is_some() {
        c.header_pattern = None;
    }
    c.by_cookie = f.parsed("canary-by-cookie", |v| {
        if !v.is_empty() && v.bytes().all(is_token_byte) {
            Ok(v.to_string())
        } else {
            Err("is not a cookie name".into())
        }
    });
    if let Some(total) = f.parsed("canary-weight-total", positive) {
        c.weight_total = total;
    }
    let total = c.weight_total;
    c.weight = f
        .parsed("canary-weight", |v| match v.parse::<u32>() {
            Ok(n) if n <= total && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!("is not a whole number between 0 and {total}")),
        })
        .unwrap_or(0);
    a.canary = Some(c);
}

fn cors(f: &mut Found<'_>) -> Option<ir::Cors> {
    if !f.switch("enable-cors", &CORS_SETTINGS) {
        return None;
    }
    let list = |allowed: fn(u8) -> bool| {
        move |v: &str| -> Result<Vec<String>, String> {
            let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
            match items
                .iter()
                .find(|i| i.is_empty() || !i.bytes().all(allowed))
            {
                Some(i) => Err(format!("has an invalid entry {i:?}")),
                None => Ok(items),
            }
        }
    };
    let methods = f
        .parsed("cors-allow-methods", list(|b| b.is_ascii_alphabetic()))
        .unwrap_or_else(|| split(CORS_DEFAULT_METHODS));
    let headers = f
        .parsed(
            "cors-allow-headers",
            list(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        )
        .unwrap_or_else(|| split(CORS_DEFAULT_HEADERS));
    let expose = f
        .parsed(
            "cors-expose-headers",
            list(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*'),
        )
        .unwrap_or_default();
    let origins = f
        .parsed("cors-allow-origin", |v| {
            let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
            match items.iter().find(|o| !cors_origin(o)) {
                Some(o) => Err(format!(
                    "has an invalid origin {o:?} (expected *, or http(s)://host[:port] with an optional *. label)"
                )),
                None => Ok(items),
            }
        })
        .unwrap_or_else(|| vec!["*".to_string()]);
    let credentials = f.parsed("cors-allow-credentials", boolean).unwrap_or(true);
    let max_age = f
        .parsed("cors-max-age", seconds)
        .unwrap_or(CORS_DEFAULT_MAX_AGE);
    Some(ir::Cors {
        allow_origins: origins,
        allow_methods: methods,
        allow_headers: headers,
        expose_headers: expose,
        max_age_seconds: Some(max_age),
        allow_credentials: credentials,
    })
}

fn access(f: &mut Found<'_>, a: &mut Annotations) {
    a.allow_sources = f
        .parsed("whitelist-source-range", cidrs)
        .unwrap_or_default();
    a.deny_sources = f.parsed("denylist-source-range", cidrs).unwrap_or_default();
    // The engine spaces requests at least a nanosecond apart.
    let rate = |v: &str| match positive(v) {
        Ok(n) if n > 1_000_000 => Err("is above 1000000".to_string()),
        r => r,
    };
    a.limits.rps = f.parsed("limit-rps", rate);
    a.limits.rpm = f.parsed("limit-rpm", rate);
    a.limits.connections = f.parsed("limit-connections", positive);
    if let Some(m) = f.parsed("limit-burst-multiplier", positive) {
        a.limits.burst_multiplier = m;
    }
    let exempt_key = f.values.get("limit-whitelist").map(|(k, _)| *k);
    a.limits.exempt = f.parsed("limit-whitelist", cidrs).unwrap_or_default();
    if let Some(key) = exempt_key
        && a.limits.is_empty()
    {
        f.note(
            key,
            "has no effect without limit-rps, limit-rpm or limit-connections",
        );
    }
    a.body_size = f.parsed("proxy-body-size", size);
}

fn split(list: &str) -> Vec<String> {
    list.split(',').map(|s| s.trim().to_string()).collect()
}

/// ingress-nginx reads booleans with Go's `strconv.ParseBool`.
fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("is not a boolean (\"true\" or \"false\")".into()),
    }
}

/// A whole number above 0.
fn positive(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err("is not a whole number above 0".into()),
    }
}

/// A whole number of seconds above 0 (ingress-nginx timeouts are unitless seconds).
fn seconds(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err("is not a whole number of seconds above 0".into()),
    }
}

/// An nginx size (`client_max_body_size`): bytes, or a number with `k`, `m` or `g`.
pub fn size(v: &str) -> Result<u64, String> {
    let (digits, unit) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a size (bytes, or a number followed by k, m or g)".into());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| "is too large".to_string())
}

/// A comma-separated list of IP addresses and CIDRs.
fn cidrs(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim) {
        if !is_cidr(item) {
            return Err(format!("has {item:?}, which is not an IP address or CIDR"));
        }
        out.push(item.to_string());
    }
    Ok(out)
}

/// An IP address, or an address and a prefix length that fits it.
pub fn is_cidr(s: &str) -> bool {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.is_none_or(|l| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_digit())
            && l.parse::<u8>().is_ok_and(|n| n <= max)
    })
}

fn absolute_path(v: &str) -> Result<(), String> {
    if v.starts_with('/') && !v.contains(['?', '#']) && !v.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err("is not an absolute path (starting with /, without query or whitespace)".into())
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn cors_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

/// An absolute `http` or `https` URL without query: the target of a redirect annotation.
fn url(v: &str) -> Result<UrlRedirect, String> {
    let bad = || "is not an absolute http or https URL without query".to_string();
    let (scheme, rest) = if let Some(r) = v.strip_prefix("https://") {
        ("https", r)
    } else if let Some(r) = v.strip_prefix("http://") {
        ("http", r)
    } else {
        return Err(bad());
    };
    if v.contains(['?', '#']) || v.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(p.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(bad)?),
        ),
        None => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    if !ir::is_dns_name(&host) && host.parse::<IpAddr>().is_err() {
        return Err(bad());
    }
    Ok(UrlRedirect {
        scheme: scheme.into(),
        host,
        port,
        path: path.map(str::to_string),
        status: 301,
    })
}

/// An nginx value of variables (`$name` or `${name}`) and text: `$remote_addr` alone is the
/// client address, `$http_x_user` alone the `x-user` header, anything else a template of
/// `$remote_addr`, `$binary_remote_addr`, `$host`, `$http_NAME`, `$uri`, `$document_uri`,
/// `$request_uri`, `$args`, `$query_string`, `$arg_NAME` and `$cookie_NAME` (`$http_host` is
/// the Host header as sent).
fn hash_by(v: &str) -> Result<HashBy, String> {
    let mut parts: Vec<ir::HashPart> = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix('$') else {
            let end = rest.find('$').unwrap_or(rest.len());
            match parts.last_mut() {
                Some(ir::HashPart::Literal(l)) => l.push_str(&rest[..end]),
                _ => parts.push(ir::HashPart::Literal(rest[..end].to_string())),
            }
            rest = &rest[end..];
            continue;
        };
        let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let (name, next) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').ok_or_else(|| {
                    format!("is not an nginx value: \"${{\" without \"}}\" in {v:?}")
                })?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .bytes()
                    .position(|b| !is_name(b))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() || !name.bytes().all(is_name) {
            return Err(format!(
                "is not an nginx value: bad variable name after \"$\" in {v:?}"
            ));
        }
        let part = match name {
            "remote_addr" | "binary_remote_addr" => ir::HashPart::ClientIp,
            "host" => ir::HashPart::Host,
            "uri" | "document_uri" => ir::HashPart::Path,
            "request_uri" => ir::HashPart::RequestUri,
            "args" | "query_string" => ir::HashPart::Query,
            n if n.len() > 5 && n.starts_with("http_") => {
                ir::HashPart::Header(n[5..].to_ascii_lowercase().replace('_', "-"))
            }
            n if n.len() > 4 && n.starts_with("arg_") => {
                ir::HashPart::QueryParam(n[4..].to_string())
            }
            n if n.len() > 7 && n.starts_with("cookie_") => {
                ir::HashPart::Cookie(n[7..].to_string())
            }
            other => {
                return Err(format!(
                    "is not supported: ${other} (Bowline hashes on $remote_addr, $host, $uri, $request_uri, $args, $http_NAME, $arg_NAME, $cookie_NAME and text)"
                ));
            }
        };
        parts.push(part);
        rest = next;
    }
    match parts.as_slice() {
        [] => Err("is empty".into()),
        [ir::HashPart::ClientIp] => Ok(HashBy::ClientAddress),
        [ir::HashPart::Header(h)] => Ok(HashBy::Header(h.clone())),
        _ if parts.iter().all(|p| matches!(p, ir::HashPart::Literal(_))) => {
            Err("has no variable: every request would go to the same backend".into())
        }
        _ => Ok(HashBy::Template(parts)),
    }
}

/// What is wrong with a regular expression, on one line (the parser's message draws the pattern
/// over several lines; its last line says what is wrong).
pub fn regex_error(e: &regex::Error) -> String {
    let e = e.to_string();
    e.lines()
        .last()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string()
}

/// Converts an nginx rewrite replacement into the IR's substitution syntax: `$1`..`$9` (and
/// `${N}`) become `${N}`, `$name` / `${name}` a named group. With the path's regular expression
/// `re`, a numbered group it does not have expands to nothing (as in nginx) and a name that is
/// not one of its groups is an error (nginx variables are not supported). A `$` before anything
/// else is literal.
pub fn nginx_substitution(target: &str, re: Option<&regex::Regex>) -> Result<String, String> {
    let mut out = String::with_capacity(target.len() + 8);
    let mut rest = target;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, used) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(end) => (&b[..end], end + 2),
                None => return Err("has an unclosed \"${\"".into()),
            }
        } else if after.starts_with(|c: char| c.is_ascii_digit()) {
            // nginx reads one digit: `$10` is group 1 followed by 0.
            (&after[..1], 1)
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..len], len)
        };
        rest = &after[used..];
        if name.is_empty() {
            out.push_str("$$");
            continue;
        }
        match (name.parse::<usize>(), re) {
            (Ok(n), Some(re)) if n >= re.captures_len() => {}
            (Ok(n), _) => out.push_str(&format!("${{{n}}}")),
            (Err(_), Some(re)) if !re.capture_names().flatten().any(|g| g == name) => {
                return Err(format!(
                    "uses ${name}, which is not a capture group of the path (nginx variables are not supported)"
                ));
            }
            (Err(_), _) => out.push_str(&format!("${{{name}}}")),
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
