//! Translation of `networking.k8s.io/v1` Ingresses into the snapshot of a gateway started with
//! `--ingress-class NAME`. Pure: the TLS material is returned as files to write, never written.
//!
//! ## What is served
//!
//! Every Ingress whose class ([`bowline_model::ingress::class_of`]: `spec.ingressClassName`, else
//! the `kubernetes.io/ingress.class` annotation) is NAME, and every Ingress without a class when
//! the IngressClass NAME carries `ingressclass.kubernetes.io/is-default-class: "true"`. When an
//! IngressClass NAME exists, its `spec.controller` must be `bowline.io/gateway-controller`;
//! otherwise nothing is served (with a diagnostic).
//!
//! ## IR names
//!
//! | object | name |
//! |---|---|
//! | listeners | `http-<http port>` and, when a TLS host is usable, `http-<https port>` |
//! | route table (shared by both listeners) | `ingress/<class>` |
//! | virtual host | the rule host (`foo.example.com`, `*.example.com`) or `*` (no host) |
//! | route | `ingress/<namespace>/<name>/rules[i]/paths[j]`, `ingress/<namespace>/<name>/defaultBackend` |
//! | cluster and its endpoints (one per Service port) | `ingress/<namespace>/<service>/<port>` |
//! | cluster of an Ingress whose annotations change how backends are reached | `ingress/<namespace>/<service>/<port>/<ingress>` |
//!
//! ## Precedence
//!
//! Hosts: exact, then `*.` wildcards (exactly one label), then rules without a host. Within a
//! host: `Exact` paths, then `Prefix` (and `ImplementationSpecific`, treated as `Prefix`) paths,
//! longest first; the default backend last. On a host where an Ingress sets `use-regex` or
//! `rewrite-target`, every path is a case-insensitive regex anchored at the start, longest (as
//! written) first, as ingress-nginx orders its `~*` locations. A `Prefix` path matches element-wise: `/foo` (or
//! `/foo/`) is the IR routes exact `/foo` and prefix `/foo/`, so it matches `/foo`, `/foo/` and
//! `/foo/bar` but not `/foobar`. The rules of every Ingress for one host are merged; when two
//! define the same host, path type and path (or two define a default backend, or a TLS host),
//! the oldest Ingress (`creationTimestamp`; without one, newest) wins, then namespace/name, and
//! the other gets a diagnostic.
//!
//! ## Backends
//!
//! `service.port.number` must be a port of the Service; `service.port.name` is resolved to the
//! Service port of that name. Endpoints come from EndpointSlices exactly as for a VirtualNode
//! ([`crate::discovery::resolve_service`]). A Service (or port name) that does not exist makes the
//! path answer 503.
//!
//! ## Annotations
//!
//! [`bowline_model::ingress::annotations`] parses them; each problem becomes a diagnostic of the
//! Ingress. Route-level ones (rewrites, redirects, timeouts, CORS, access, limits, body size)
//! shape the Ingress's routes, upstream ones its clusters ([`annotate`]); a canary Ingress adds
//! header, cookie and weight routes to the main Ingress's paths.
//!
//! ## TLS
//!
//! `spec.tls[].secretName` names a `kubernetes.io/tls` Secret of the Ingress's namespace
//! (`tls.crt` / `tls.key` from `data` or `stringData`). Its PEM is checked here (certificates,
//! a private key that matches the first one) and returned as two [`TlsFile`]s named after their
//! content under the TLS directory the control plane owns; the HTTPS listener serves it for
//! `spec.tls[].hosts` by SNI. A missing or unusable Secret skips that entry's hosts on the HTTPS
//! port (they are never served without TLS there) and keeps the rest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bowline_model::ingress::annotations::{self, Annotations, Canary, ProxySsl};
use bowline_model::ingress::{self, Selection};
use bowline_model::ir;
use bowline_model::manifest::Kind;
use bowline_model::proto;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use self::annotate::{CanaryPick, RoutePolicy, Upstream};
use super::{Diagnostic, Inputs, Translation};
use crate::discovery;

mod annotate;

/// What a gateway started with `--ingress-class` serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IngressTarget {
    pub class: String,
    pub http_port: u16,
    pub https_port: u16,
}

/// A file the control plane must write (private key material: owner-only permissions) before
/// the snapshot that names it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFile {
    pub path: PathBuf,
    pub contents: Arc<[u8]>,
}

/// The result of translating the Ingresses of one class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressTranslation {
    pub translation: Translation,
    pub files: Vec<TlsFile>,
    /// Ingresses of other classes, for debug logs (`namespace/name: why`).
    pub ignored: Vec<String>,
}

/// The route table of the Ingress listeners of a class.
pub fn ingress_table_name(class: &str) -> String {
    format!("ingress/{class}")
}

/// The cluster of one Service port used as an Ingress backend.
pub fn ingress_cluster_name(namespace: &str, service: &str, port: u16) -> String {
    format!("ingress/{namespace}/{service}/{port}")
}

/// One served Ingress, in precedence order, with its annotations.
struct Served<'a> {
    namespace: &'a str,
    name: &'a str,
    ingress: &'a Ingress,
    ann: Annotations,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathKind {
    Exact,
    Prefix,
    /// Any path of a host where an Ingress sets `use-regex` or `rewrite-target`: a
    /// case-insensitive regular expression anchored at the start (ingress-nginx's `~*`).
    Regex,
}

/// Where a path (or default backend) came from and where it goes.
struct PathRoute {
    route_name: String,
    action: ir::RouteAction,
    owner: String,
    /// Insertion order: Ingress precedence, then rule, then path.
    seq: usize,
    /// Index of the owning Ingress in the served list.
    ingress: usize,
    /// CORS, client access, client limits and body size, from the Ingress's annotations.
    policy: RoutePolicy,
    /// Plaintext requests are redirected to HTTPS (`ssl-redirect`, `force-ssl-redirect`).
    to_https: bool,
    canary: Option<CanaryRoute>,
}

/// A canary Ingress's backend for a main path.
struct CanaryRoute {
    route_name: String,
    spec: Canary,
    action: ir::ForwardAction,
}

/// Translates the Ingresses of `target.class`; certificate files go under `tls_dir`.
pub fn ingress(inputs: &Inputs<'_>, target: &IngressTarget, tls_dir: &Path) -> IngressTranslation {
    let mut cx = Cx {
        inputs,
        out: IngressTranslation::default(),
        clusters: BTreeMap::new(),
        tls_dir,
    };
    let world = inputs.world;
    let class = world.ingress_class("", &target.class);
    if let Some(c) = class
        && !ingress::is_ours(c)
    {
        cx.diag(
            Kind::IngressClass,
            "",
            &target.class,
            "spec.controller",
            format!(
                "is {:?}, not {:?}: the class belongs to another controller and none of its Ingresses is served",
                controller(c),
                ingress::CONTROLLER
            ),
        );
        return cx.finish(Vec::new());
    }
    let served = select(&mut cx, target, class);
    let certificates = cx.certificates(&served, tls_dir);
    let https_served = !certificates.is_empty() && target.https_port != target.http_port;
    let tls_names: Vec<&str> = if https_served {
        certificates
            .iter()
            .flat_map(|c| c.server_names.iter().map(String::as_str))
            .collect()
    } else {
        Vec::new()
    };
    let (hosts, default_backend, app_roots) = cx.paths(&served, &tls_names);
    let vhosts = virtual_hosts(
        hosts,
        default_backend.as_ref(),
        &app_roots,
        target.https_port,
    );
    let table = ingress_table_name(&target.class);
    let mut listeners = vec![listener(target.http_port, &table, None)];
    if !certificates.is_empty() {
        if target.https_port == target.http_port {
            cx.diag(
                Kind::IngressClass,
                "",
                &target.class,
                "",
                format!(
                    "the HTTPS port {} is also the HTTP port; TLS hosts are not served",
                    target.https_port
                ),
            );
        } else {
            listeners.push(listener(
                target.https_port,
                &table,
                Some(ir::ListenerTls {
                    mode: ir::TlsMode::Strict,
                    certificates,
                    client_validation: None,
                    detect_misdirected: false,
                }),
            ));
        }
    }
    let mut out = cx.finish(listeners);
    out.translation.snapshot.route_tables.push(ir::RouteTable {
        name: table,
        virtual_hosts: vhosts,
    });
    out.translation.snapshot.normalize();
    out
}

/// The Ingresses the gateway of `target.class` serves, oldest first (then namespace/name); the
/// others are noted in `ignored`.
fn select<'w>(
    cx: &mut Cx<'w>,
    target: &IngressTarget,
    class: Option<&IngressClass>,
) -> Vec<Served<'w>> {
    let world = cx.inputs.world;
    let mut served: Vec<Served<'_>> = Vec::new();
    for (_, ing) in world.ingresses() {
        let namespace = ing.metadata.namespace.as_deref().unwrap_or("default");
        let name = ing.metadata.name.as_deref().unwrap_or_default();
        match ingress::served_by(ing, &target.class, class) {
            Selection::Served => served.push(Served {
                namespace,
                name,
                ingress: ing,
                ann: Annotations::default(),
            }),
            Selection::OtherClass => cx.out.ignored.push(format!(
                "{namespace}/{name}: class {:?} is not {:?}",
                ingress::class_of(ing).unwrap_or("<none>"),
                target.class
            )),
        }
    }
    served.sort_by(|a, b| {
        // Oldest first; without a timestamp, after every Ingress that has one.
        let ts = |s: &Served<'_>| {
            let t = s.ingress.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (t.is_none(), t)
        };
        (ts(a), a.namespace, a.name).cmp(&(ts(b), b.namespace, b.name))
    });
    for s in &mut served {
        let (ann, problems) = annotations::parse(s.ingress.metadata.annotations.as_ref());
        s.ann = ann;
        for p in problems {
            cx.diag(Kind::Ingress, s.namespace, s.name, p.path, p.message);
        }
    }
    served
}

/// host → (path type, path) → route.
type Hosts = BTreeMap<HostKey, BTreeMap<(PathKind, String), PathRoute>>;

/// host → (route name, path) of its `app-root` redirect.
type AppRoots = BTreeMap<HostKey, (String, String)>;

/// The hosts where ingress-nginx makes every path a case-insensitive regular expression: those
/// of a (non-canary) Ingress that sets `use-regex` or `rewrite-target`.
fn regex_hosts(served: &[Served<'_>]) -> BTreeSet<HostKey> {
    let mut out = BTreeSet::new();
    for s in served {
        if s.ann.canary.is_some() || !(s.ann.use_regex || s.ann.rewrite_target.is_some()) {
            continue;
        }
        let rules = s.ingress.spec.as_ref().and_then(|sp| sp.rules.as_ref());
        for rule in rules.into_iter().flatten() {
            out.insert(HostKey::of(rule.host.as_deref()));
        }
    }
    out
}

/// The path of an affinity cookie without `session-cookie-path`: the Ingress's only path, else
/// `/`.
fn cookie_path(s: &Served<'_>) -> String {
    let rules = s.ingress.spec.as_ref().and_then(|sp| sp.rules.as_ref());
    let paths: Vec<_> = rules
        .into_iter()
        .flatten()
        .filter_map(|r| r.http.as_ref())
        .flat_map(|h| h.paths.iter())
        .collect();
    let regex = s.ann.use_regex || s.ann.rewrite_target.is_some();
    match paths.as_slice() {
        [p] if !regex => {
            let raw = p.path.as_deref().unwrap_or_default();
            if p.path_type == "Exact" {
                raw.to_string()
            } else {
                normalize_prefix(raw)
            }
        }
        _ => "/".into(),
    }
}

// === impl Cx ===

impl Cx<'_> {
    /// The routes of the served Ingresses by host and path, the default backend, and the
    /// `app-root` redirects. Canary Ingresses are folded into the main Ingress's paths.
    fn paths(
        &mut self,
        served: &[Served<'_>],
        tls_names: &[&str],
    ) -> (Hosts, Option<PathRoute>, AppRoots) {
        let regex = regex_hosts(served);
        // The first (oldest) definition of a host and path, or of the default backend, wins.
        let mut hosts: Hosts = BTreeMap::new();
        let mut default_backend: Option<PathRoute> = None;
        let mut app_roots = AppRoots::new();
        let mut seq = 0;
        for (idx, s) in served.iter().enumerate() {
            if s.ann.canary.is_some() {
                continue;
            }
            let owner = format!("Ingress {}/{}", s.namespace, s.name);
            let Some(spec) = &s.ingress.spec else {
                continue;
            };
            let up = Upstream::of(&s.ann, &s.ann, &cookie_path(s));
            let policy = RoutePolicy::of(&s.ann, format!("ingress/{}/{}", s.namespace, s.name));
            if let Some(b) = &spec.default_backend {
                let route_name = format!("ingress/{}/{}/defaultBackend", s.namespace, s.name);
                match &default_backend {
                    Some(first) => {
                        let msg = format!(
                            "the default backend is already set by {} (older); this one is not used",
                            first.owner
                        );
                        self.on_ingress(s, "spec.defaultBackend", msg);
                    }
                    None => {
                        let action = self.route_action(s, "spec.defaultBackend", b, &up, None);
                        default_backend = Some(PathRoute {
                            route_name,
                            action,
                            owner: owner.clone(),
                            seq,
                            ingress: idx,
                            policy: policy.clone(),
                            to_https: false,
                            canary: None,
                        });
                        seq += 1;
                    }
                }
            }
            for (i, rule) in spec.rules.iter().flatten().enumerate() {
                let host = HostKey::of(rule.host.as_deref());
                let Some(http) = &rule.http else {
                    continue;
                };
                let is_regex = regex.contains(&host);
                let to_https =
                    s.ann.force_ssl_redirect || (s.ann.ssl_redirect && host.has_tls(tls_names));
                for (j, p) in http.paths.iter().enumerate() {
                    let at = format!("spec.rules[{i}].http.paths[{j}]");
                    let raw = p.path.as_deref().filter(|r| !r.is_empty()).unwrap_or("/");
                    let Some(key) = self.path_key(s, &at, &p.path_type, raw, is_regex) else {
                        continue;
                    };
                    let routes = hosts.entry(host.clone()).or_default();
                    if let Some(first) = routes.get(&key) {
                        let msg = format!(
                            "{} path {:?} of host {} is already routed by {} (older); this one is not used",
                            p.path_type,
                            key.1,
                            host.display(),
                            first.owner
                        );
                        self.on_ingress(s, at, msg);
                        continue;
                    }
                    let rewrite = match (&s.ann.rewrite_target, is_regex) {
                        (Some(t), true) => match annotate::rewrite(raw, t) {
                            Ok(r) => Some(r),
                            Err(why) => {
                                let key = annotation_key(s, "rewrite-target");
                                let msg = format!(
                                    "{t:?} {why}; path {raw:?} is served without the rewrite"
                                );
                                self.on_ingress(s, annotations::at(&key), msg);
                                None
                            }
                        },
                        _ => None,
                    };
                    let action =
                        self.route_action(s, &format!("{at}.backend"), &p.backend, &up, rewrite);
                    if let Some(root) = &s.ann.app_root
                        && !app_roots.contains_key(&host)
                        && matches_root(&key)
                    {
                        let name = format!("ingress/{}/{}/app-root", s.namespace, s.name);
                        app_roots.insert(host.clone(), (name, root.clone()));
                    }
                    routes.insert(
                        key,
                        PathRoute {
                            route_name: format!(
                                "ingress/{}/{}/rules[{i}]/paths[{j}]",
                                s.namespace, s.name
                            ),
                            action,
                            owner: owner.clone(),
                            seq,
                            ingress: idx,
                            policy: policy.clone(),
                            to_https,
                            canary: None,
                        },
                    );
                    seq += 1;
                }
            }
        }
        self.canaries(served, &regex, &mut hosts);
        if default_backend.is_some() {
            hosts.entry(HostKey::Any).or_default();
        }
        (hosts, default_backend, app_roots)
    }

    /// Attaches each canary Ingress's paths to the main Ingress paths with the same host, path
    /// type and path (ingress-nginx: at most one canary per path; the oldest wins).
    fn canaries(&mut self, served: &[Served<'_>], regex: &BTreeSet<HostKey>, hosts: &mut Hosts) {
        for s in served {
            let Some(c) = &s.ann.canary else {
                continue;
            };
            let Some(spec) = &s.ingress.spec else {
                continue;
            };
            if spec.default_backend.is_some() {
                self.on_ingress(
                    s,
                    "spec.defaultBackend",
                    "not used: a canary Ingress only adds backends to the paths of a main Ingress",
                );
            }
            for (i, rule) in spec.rules.iter().flatten().enumerate() {
                let host = HostKey::of(rule.host.as_deref());
                let Some(http) = &rule.http else {
                    continue;
                };
                for (j, p) in http.paths.iter().enumerate() {
                    let at = format!("spec.rules[{i}].http.paths[{j}]");
                    let raw = p.path.as_deref().filter(|r| !r.is_empty()).unwrap_or("/");
                    let Some(key) = self.path_key(s, &at, &p.path_type, raw, regex.contains(&host))
                    else {
                        continue;
                    };
                    let Some(main) = hosts.get(&host).and_then(|r| r.get(&key)) else {
                        let msg = format!(
                            "canary: no main Ingress routes {} path {:?} of host {}; this path is not used",
                            p.path_type,
                            key.1,
                            host.display()
                        );
                        self.on_ingress(s, at, msg);
                        continue;
                    };
                    if let Some(other) = &main.canary {
                        let msg = format!(
                            "canary: path {:?} of host {} already has the canary {} (older); this one is not used",
                            key.1,
                            host.display(),
                            other.route_name
                        );
                        self.on_ingress(s, at, msg);
                        continue;
                    }
                    let ir::RouteAction::Forward(main_fwd) = &main.action else {
                        let msg = format!(
                            "canary: the main path ({}) does not forward to a Service; the canary is not applied",
                            main.owner
                        );
                        self.on_ingress(s, at, msg);
                        continue;
                    };
                    let main_fwd = main_fwd.clone();
                    let up = Upstream::of(&served[main.ingress].ann, &s.ann, &cookie_path(s));
                    let ir::RouteAction::Forward(canary) =
                        self.backend(s, &format!("{at}.backend"), &p.backend, &up)
                    else {
                        // backend() said why the Service cannot be used.
                        continue;
                    };
                    if let Some(main) = hosts.get_mut(&host).and_then(|r| r.get_mut(&key)) {
                        main.canary = Some(CanaryRoute {
                            route_name: format!(
                                "ingress/{}/{}/rules[{i}]/paths[{j}]",
                                s.namespace, s.name
                            ),
                            spec: c.clone(),
                            action: ir::ForwardAction {
                                clusters: canary.clusters,
                                ..main_fwd
                            },
                        });
                    }
                }
            }
        }
    }

    /// The key of a path: its type and (normalized) path, or the path as written on a regex
    /// host. `None` (with a diagnostic) when a regex host's path is not a regular expression.
    fn path_key(
        &mut self,
        s: &Served<'_>,
        at: &str,
        path_type: &str,
        raw: &str,
        regex: bool,
    ) -> Option<(PathKind, String)> {
        if regex {
            if let Err(why) = annotate::compile_path(raw) {
                let msg = format!(
                    "{raw:?} {why}; its host uses regular expressions (use-regex or rewrite-target), so the path is not served"
                );
                self.on_ingress(s, format!("{at}.path"), msg);
                return None;
            }
            return Some((PathKind::Regex, raw.to_string()));
        }
        Some(match path_type {
            "Exact" => (PathKind::Exact, raw.to_string()),
            _ => (PathKind::Prefix, normalize_prefix(raw)),
        })
    }

    /// The action of a path: the Ingress's redirect, or its backend with the Ingress's rewrite and
    /// read timeout.
    fn route_action(
        &mut self,
        s: &Served<'_>,
        at: &str,
        b: &IngressBackend,
        up: &Upstream,
        rewrite: Option<ir::RegexRewrite>,
    ) -> ir::RouteAction {
        if let Some(r) = &s.ann.redirect {
            return ir::RouteAction::Redirect(annotate::url_redirect(r));
        }
        let mut action = self.backend(s, at, b, up);
        if let ir::RouteAction::Forward(f) = &mut action {
            f.rewrite.regex = rewrite;
            f.idle_timeout_ms = s.ann.read_timeout_seconds.map(|t| t.saturating_mul(1000));
        }
        action
    }
}

/// The full key of an annotation as the Ingress wrote it (the `bowline.io/` twin when set).
fn annotation_key(s: &Served<'_>, name: &str) -> String {
    let set = s.ingress.metadata.annotations.as_ref();
    annotations::PREFIXES
        .iter()
        .rev()
        .map(|p| format!("{p}{name}"))
        .find(|k| set.is_some_and(|a| a.contains_key(k)))
        .unwrap_or_else(|| format!("{}{name}", annotations::PREFIXES[0]))
}

/// Whether a path receives a request for `/` (where `app-root` redirects).
fn matches_root((kind, path): &(PathKind, String)) -> bool {
    match kind {
        PathKind::Exact | PathKind::Prefix => path == "/",
        PathKind::Regex => regex::Regex::new(&format!("^(?:{})$", annotate::regex_match(path)))
            .is_ok_and(|re| re.is_match("/")),
    }
}

/// The virtual hosts, in the host map's order, each with its routes in precedence order and the
/// default backend last. On a regex host, paths go longest first (as written), then in
/// definition order, as ingress-nginx orders its `~*` locations.
fn virtual_hosts(
    hosts: Hosts,
    default_backend: Option<&PathRoute>,
    app_roots: &AppRoots,
    https_port: u16,
) -> Vec<ir::VirtualHost> {
    let mut vhosts = Vec::new();
    for (host, paths) in hosts {
        let mut ordered: Vec<((PathKind, String), PathRoute)> = paths.into_iter().collect();
        ordered.sort_by(|((ka, pa), ra), ((kb, pb), rb)| {
            if *ka == PathKind::Regex && *kb == PathKind::Regex {
                (Reverse(pa.len()), ra.seq).cmp(&(Reverse(pb.len()), rb.seq))
            } else {
                (ka, Reverse(pa.len()), pa).cmp(&(kb, Reverse(pb.len()), pb))
            }
        });
        let mut routes = Vec::new();
        if let Some((name, root)) = app_roots.get(&host) {
            let matcher = ir::RouteMatch {
                path: Some(ir::PathMatch::Exact("/".into())),
                ..ir::RouteMatch::default()
            };
            let redirect = ir::Redirect {
                scheme: None,
                host: None,
                port: None,
                path: Some(ir::RedirectPath::FullPath(root.clone())),
                status: 302,
                // nginx: `return 302 $scheme://$http_host<app-root>`, no query.
                drop_query: true,
            };
            routes.push(ir::Route::new(
                name,
                matcher,
                ir::RouteAction::Redirect(redirect),
            ));
        }
        for ((kind, path), r) in ordered {
            for m in path_matches(kind, &path) {
                emit(&mut routes, &r, m, https_port);
            }
        }
        if let Some(d) = default_backend {
            emit(
                &mut routes,
                d,
                ir::PathMatch::Prefix("/".into()),
                https_port,
            );
        }
        vhosts.push(ir::VirtualHost {
            name: host.display(),
            hosts: vec![host.to_ir()],
            routes,
        });
    }
    // Exact hosts first, then wildcards, then any (the host map's order, made explicit).
    vhosts.sort_by_key(|v| match v.hosts.first() {
        Some(ir::HostMatch::Exact(_)) => 0,
        Some(ir::HostMatch::Wildcard(_)) => 1,
        Some(ir::HostMatch::Suffix(_)) => 2,
        _ => 3,
    });

    vhosts
}

/// The IR routes of one path match of a path: the HTTPS redirect of plaintext requests, the
/// canary's header and cookie routes, then the path's own route (with the canary's weight).
fn emit(routes: &mut Vec<ir::Route>, r: &PathRoute, m: ir::PathMatch, https_port: u16) {
    let base = ir::RouteMatch {
        path: Some(m),
        ..ir::RouteMatch::default()
    };
    if r.to_https {
        let matcher = ir::RouteMatch {
            scheme: Some("http".into()),
            ..base.clone()
        };
        let redirect = ir::RouteAction::Redirect(annotate::https_redirect(https_port));
        routes.push(ir::Route::new(&r.route_name, matcher, redirect));
    }
    let mut action = r.action.clone();
    if let Some(c) = &r.canary {
        for (matcher, pick) in annotate::canary_matches(&c.spec, &base) {
            let route = match pick {
                CanaryPick::Canary => ir::Route::new(
                    &c.route_name,
                    matcher,
                    ir::RouteAction::Forward(c.action.clone()),
                ),
                CanaryPick::Main => ir::Route::new(&r.route_name, matcher, r.action.clone()),
            };
            routes.push(r.policy.apply(route));
        }
        if let ir::RouteAction::Forward(f) = &r.action
            && c.spec.weight > 0
        {
            let split = annotate::weighted(f, &c.action, c.spec.weight, c.spec.weight_total);
            action = ir::RouteAction::Forward(split);
        }
    }
    routes.push(r.policy.apply(ir::Route::new(&r.route_name, base, action)));
}

/// Adds `extra` (an Ingress translation) to `base` (a gateway's). A listener of `extra` on a
/// port `base` already uses is dropped with a diagnostic; other objects have distinct names.
pub fn merge(base: &mut Translation, extra: Translation) {
    let ports: Vec<u16> = base.snapshot.listeners.iter().map(|l| l.port).collect();
    for l in extra.snapshot.listeners {
        if ports.contains(&l.port) {
            base.diagnostics.push(Diagnostic {
                source: None,
                object: format!("listener {}", l.name),
                path: String::new(),
                message: format!(
                    "port {} is already served by the gateway; the Ingress listener is not served",
                    l.port
                ),
            });
        } else {
            base.snapshot.listeners.push(l);
        }
    }
    base.snapshot
        .route_tables
        .extend(extra.snapshot.route_tables);
    base.snapshot.clusters.extend(extra.snapshot.clusters);
    base.snapshot.endpoints.extend(extra.snapshot.endpoints);
    for d in extra.diagnostics {
        if !base.diagnostics.contains(&d) {
            base.diagnostics.push(d);
        }
    }
    base.snapshot.normalize();
}

fn controller(c: &IngressClass) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.controller.as_deref())
        .unwrap_or_default()
}

fn listener(port: u16, table: &str, tls: Option<ir::ListenerTls>) -> ir::Listener {
    ir::Listener {
        name: super::listener_name(ir::Protocol::Http, port),
        address: String::new(),
        port,
        protocol: ir::Protocol::Http,
        route_table: table.to_string(),
        access_log: None,
        tls,
        tcp_proxy: None,
    }
}

/// `/foo/` → `/foo`; `` → `/` (the spec ignores a trailing slash of a Prefix path).
fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

/// The IR path matches of one Ingress path, in order.
fn path_matches(kind: PathKind, path: &str) -> Vec<ir::PathMatch> {
    match kind {
        PathKind::Exact => vec![ir::PathMatch::Exact(path.to_string())],
        PathKind::Prefix if path == "/" => vec![ir::PathMatch::Prefix("/".into())],
        PathKind::Prefix => vec![
            ir::PathMatch::Exact(path.to_string()),
            ir::PathMatch::Prefix(format!("{path}/")),
        ],
        PathKind::Regex => vec![ir::PathMatch::Regex(annotate::regex_match(path))],
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostKey {
    Exact(String),
    /// The domain after `*.`.
    Wildcard(String),
    Any,
}

// === impl HostKey ===

impl HostKey {
    fn of(host: Option<&str>) -> HostKey {
        match host.map(str::to_ascii_lowercase) {
            None => HostKey::Any,
            Some(h) if h.is_empty() => HostKey::Any,
            Some(h) => match h.strip_prefix("*.") {
                Some(d) => HostKey::Wildcard(d.to_string()),
                None => HostKey::Exact(h),
            },
        }
    }

    /// Whether one of the HTTPS listener's certificate names (`tls_names`) covers the host.
    fn has_tls(&self, tls_names: &[&str]) -> bool {
        let wildcard_of = |h: &str| h.split_once('.').map(|(_, d)| format!("*.{d}"));
        match self {
            HostKey::Exact(h) => tls_names
                .iter()
                .any(|n| n == h || wildcard_of(h).is_some_and(|w| *n == w)),
            HostKey::Wildcard(d) => tls_names.iter().any(|n| n.strip_prefix("*.") == Some(d)),
            HostKey::Any => false,
        }
    }

    fn display(&self) -> String {
        match self {
            HostKey::Exact(h) => h.clone(),
            HostKey::Wildcard(d) => format!("*.{d}"),
            HostKey::Any => "*".into(),
        }
    }

    fn to_ir(&self) -> ir::HostMatch {
        match self {
            HostKey::Exact(h) => ir::HostMatch::Exact(h.clone()),
            HostKey::Wildcard(d) => ir::HostMatch::Wildcard(d.clone()),
            HostKey::Any => ir::HostMatch::Any,
        }
    }
}

struct Cx<'a> {
    inputs: &'a Inputs<'a>,
    out: IngressTranslation,
    clusters: BTreeMap<String, (ir::Cluster, ir::ClusterEndpoints)>,
    /// Where the PEM files of Secrets go.
    tls_dir: &'a Path,
}

impl Cx<'_> {
    fn diag(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let d = Diagnostic::new(self.inputs.world, kind, namespace, name, path, message);
        if !self.out.translation.diagnostics.contains(&d) {
            self.out.translation.diagnostics.push(d);
        }
    }

    /// A diagnostic about a field of a served Ingress.
    fn on_ingress(&mut self, s: &Served<'_>, path: impl Into<String>, message: impl Into<String>) {
        self.diag(Kind::Ingress, s.namespace, s.name, path, message);
    }

    fn finish(mut self, listeners: Vec<ir::Listener>) -> IngressTranslation {
        let snapshot = &mut self.out.translation.snapshot;
        snapshot.listeners = listeners;
        for (_, (c, e)) in std::mem::take(&mut self.clusters) {
            snapshot.clusters.push(c);
            snapshot.endpoints.push(e);
        }
        snapshot.normalize();
        self.out
    }

    /// The action of a backend: forward to the Service port's cluster, or 503 when the Service
    /// or the named port does not exist.
    fn backend(
        &mut self,
        s: &Served<'_>,
        at: &str,
        b: &IngressBackend,
        up: &Upstream,
    ) -> ir::RouteAction {
        let unavailable = ir::RouteAction::DirectResponse(ir::DirectResponse {
            status: 503,
            body: String::new(),
        });
        let Some(svc_ref) = &b.service else {
            return unavailable;
        };
        let world = self.inputs.world;
        let Some(svc) = world.service(s.namespace, &svc_ref.name) else {
            let msg = format!(
                "Service {}/{} not found; the path answers 503",
                s.namespace, svc_ref.name
            );
            self.on_ingress(s, format!("{at}.service.name"), msg);
            return unavailable;
        };
        let port_ref = svc_ref.port.clone().unwrap_or_default();
        let number = match (&port_ref.name, port_ref.number) {
            (_, Some(n)) => u16::try_from(n).ok(),
            (Some(name), None) => {
                let found = svc
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.ports.as_ref())
                    .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name)))
                    .and_then(|p| u16::try_from(p.port).ok());
                if found.is_none() {
                    let msg = format!(
                        "Service {}/{} has no port named {name:?}; the path answers 503",
                        s.namespace, svc_ref.name
                    );
                    self.on_ingress(s, format!("{at}.service.port.name"), msg);
                }
                found
            }
            (None, None) => None,
        };
        let Some(port) = number else {
            return unavailable;
        };
        // An Ingress whose annotations change the cluster gets its own.
        let mut cluster = ingress_cluster_name(s.namespace, &svc_ref.name, port);
        if !up.is_default() {
            cluster = format!("{cluster}/{}", s.name);
        }
        if !self.clusters.contains_key(&cluster) {
            let resolved = discovery::resolve_service(
                world,
                self.inputs.dns,
                s.namespace,
                &svc_ref.name,
                port,
            );
            for note in &resolved.notes {
                // Discovery words its notes for VirtualNodes.
                let note = note.replace("the node has no endpoints", "the backend answers 503");
                self.on_ingress(s, at, note);
            }
            let tls = match &up.tls {
                None => Ok(None),
                Some(ssl) => self.backend_tls(s, ssl, &svc_ref.name).map(Some),
            };
            // A backend whose TLS cannot be set up as asked gets no endpoints (503), rather
            // than plaintext or an unverified connection.
            let endpoints = if tls.is_ok() {
                resolved.endpoints
            } else {
                Vec::new()
            };
            self.clusters.insert(
                cluster.clone(),
                (
                    ir::Cluster {
                        lb_policy: up.lb_policy,
                        tls: tls.ok().flatten(),
                        hash_on: up.hash_on.clone(),
                        send_timeout_ms: up.send_timeout_ms,
                        ..ir::Cluster::new(cluster.clone(), up.protocol, up.connect_timeout_ms)
                    },
                    ir::ClusterEndpoints {
                        cluster: cluster.clone(),
                        endpoints,
                    },
                ),
            );
        }
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: vec![ir::WeightedCluster::new(cluster, 1)],
            rewrite: ir::Rewrite::default(),
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        })
    }

    /// The TLS to an HTTPS or GRPCS backend (the Service `service` of the Ingress): the
    /// `proxy-ssl-name` or `<service>.<namespace>.svc` as the server name; with
    /// `proxy-ssl-secret`, its `ca.crt` as the trust bundle (checked only with
    /// `proxy-ssl-verify: on`) and its `tls.crt`/`tls.key` as a client certificate. `Err` (with
    /// a diagnostic) when verification is asked and cannot be done.
    fn backend_tls(
        &mut self,
        s: &Served<'_>,
        ssl: &ProxySsl,
        service: &str,
    ) -> Result<ir::UpstreamTls, ()> {
        let mut out = ir::UpstreamTls {
            server_name: ssl
                .name
                .clone()
                .unwrap_or_else(|| format!("{service}.{}.svc", s.namespace)),
            skip_verification: !ssl.verify,
            ..Default::default()
        };
        // The annotation as written (the `bowline.io/` one wins, as when parsing).
        let annotation_at = |name: &str| {
            let written = s.ingress.metadata.annotations.as_ref();
            let key = annotations::PREFIXES
                .iter()
                .rev()
                .map(|p| format!("{p}{name}"))
                .find(|k| written.is_some_and(|a| a.contains_key(k)))
                .unwrap_or_else(|| format!("{}{name}", annotations::PREFIXES[0]));
            annotations::at(&key)
        };
        let verify_at = annotation_at("proxy-ssl-verify");
        let Some((ns, name)) = &ssl.secret else {
            if ssl.verify {
                // Reported by the annotation parser.
                return Err(());
            }
            return Ok(out);
        };
        let at = annotation_at("proxy-ssl-secret");
        let owner = format!("{ns}-{name}");
        let Some(secret) = self.inputs.world.secret(ns, name) else {
            let consequence = if ssl.verify {
                "the backend answers 503 (its certificate cannot be verified)"
            } else {
                "no client certificate is presented"
            };
            self.on_ingress(
                s,
                at,
                format!("Secret {ns}/{name} not found; {consequence}"),
            );
            return if ssl.verify { Err(()) } else { Ok(out) };
        };
        let field = |key: &str| secret_field(secret, key);
        match field("ca.crt") {
            Some(ca) if ssl.verify => {
                let path = self
                    .tls_dir
                    .join(format!("{owner}.{}.ca.crt", proto::digest(&ca)));
                if !self.out.files.iter().any(|f| f.path == path) {
                    self.out.files.push(TlsFile {
                        path: path.clone(),
                        contents: ca.into(),
                    });
                }
                out.trust_chain = path.display().to_string();
            }
            Some(_) => {}
            None if ssl.verify => {
                self.on_ingress(
                    s,
                    verify_at,
                    format!(
                        "Secret {ns}/{name} has no ca.crt to verify the backend against; the backend answers 503"
                    ),
                );
                return Err(());
            }
            None => {}
        }
        if field("tls.crt").is_some() || field("tls.key").is_some() {
            match key_pair(secret, &format!("Secret {ns}/{name}")) {
                Ok(pem) => {
                    let cert = certificate_files(
                        &mut self.out.files,
                        self.tls_dir,
                        &owner,
                        pem,
                        Vec::new(),
                    );
                    out.client_certificate = Some(ir::TlsClientCertificate {
                        certificate_chain: cert.certificate_chain,
                        private_key: cert.private_key,
                    });
                }
                Err(why) => {
                    self.on_ingress(s, at, format!("{why}; the backend answers 503"));
                    return Err(());
                }
            }
        }
        Ok(out)
    }

    /// The certificates of the HTTPS listener, from `spec.tls` of the served Ingresses in
    /// precedence order. The first Ingress to claim a host (or the default certificate, for an
    /// entry without hosts) wins.
    fn certificates(&mut self, served: &[Served<'_>], tls_dir: &Path) -> Vec<ir::TlsCertificate> {
        let mut claimed: BTreeMap<String, String> = BTreeMap::new();
        let mut certs: Vec<ir::TlsCertificate> = Vec::new();
        for s in served {
            let owner = format!("Ingress {}/{}", s.namespace, s.name);
            let entries = s.ingress.spec.as_ref().and_then(|sp| sp.tls.as_ref());
            for (i, tls) in entries.into_iter().flatten().enumerate() {
                let at = format!("spec.tls[{i}]");
                let mut names = Vec::new();
                for host in tls.hosts.iter().flatten() {
                    let host = host.to_ascii_lowercase();
                    match claimed.get(&host) {
                        Some(first) => {
                            let msg = format!(
                                "TLS for host {host} is already set by {first} (older); this entry does not serve it"
                            );
                            self.on_ingress(s, format!("{at}.hosts"), msg);
                        }
                        None => names.push(host),
                    }
                }
                let default = tls.hosts.as_ref().is_none_or(Vec::is_empty);
                if default && claimed.contains_key("") {
                    let msg = format!(
                        "the default certificate (an entry without hosts) is already set by {} (older); this entry is not used",
                        claimed[""]
                    );
                    self.on_ingress(s, at, msg);
                    continue;
                }
                if names.is_empty() && !default {
                    continue;
                }
                let Some(secret_name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                    let msg = "no secretName: these hosts are not served on the HTTPS port";
                    self.on_ingress(s, format!("{at}.secretName"), msg);
                    continue;
                };
                let material = match self.inputs.world.secret(s.namespace, secret_name) {
                    None => Err(format!("Secret {}/{secret_name} not found", s.namespace)),
                    Some(sec) => tls_material(sec),
                };
                let (chain, key) = match material {
                    Ok(m) => m,
                    Err(why) => {
                        let msg = format!(
                            "{why}; hosts [{}] are not served on the HTTPS port",
                            if default {
                                "*".to_string()
                            } else {
                                names.join(", ")
                            }
                        );
                        self.on_ingress(s, format!("{at}.secretName"), msg);
                        continue;
                    }
                };
                for n in &names {
                    claimed.insert(n.clone(), owner.clone());
                }
                if default {
                    claimed.insert(String::new(), owner.clone());
                }
                certs.push(certificate_files(
                    &mut self.out.files,
                    tls_dir,
                    &format!("{}.{secret_name}", s.namespace),
                    (chain, key),
                    names,
                ));
            }
        }
        certs
    }
}

/// PEM text.
pub(crate) type Pem = Arc<[u8]>;

/// The certificate of a Secret's PEM chain and key, served for `server_names`: the two files
/// are named after `owner` (`namespace.secret`) and their content, so a changed Secret gets new
/// files and the gateway reloads them; each file is queued once in `files`.
pub(crate) fn certificate_files(
    files: &mut Vec<TlsFile>,
    tls_dir: &Path,
    owner: &str,
    (chain, key): (Pem, Pem),
    server_names: Vec<String>,
) -> ir::TlsCertificate {
    let mut both = chain.to_vec();
    both.extend_from_slice(&key);
    let stem = format!("{owner}.{}", proto::digest(&both));
    let chain_path = tls_dir.join(format!("{stem}.crt"));
    let key_path = tls_dir.join(format!("{stem}.key"));
    for (path, contents) in [(&chain_path, chain), (&key_path, key)] {
        if !files.iter().any(|f| &f.path == path) {
            files.push(TlsFile {
                path: path.clone(),
                contents,
            });
        }
    }
    ir::TlsCertificate {
        certificate_chain: chain_path.display().to_string(),
        private_key: key_path.display().to_string(),
        server_names,
    }
}

/// The bytes of a Secret's `key`, from `stringData` or (base64-decoded) `data`.
pub(crate) fn secret_field(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.0.clone())
        })
}

/// The PEM chain and key of a `kubernetes.io/tls` Secret, checked: at least one certificate and
/// a private key that matches the first.
pub(crate) fn tls_material(secret: &Secret) -> Result<(Pem, Pem), String> {
    let name = format!(
        "Secret {}/{}",
        secret.metadata.namespace.as_deref().unwrap_or("default"),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    if let Some(t) = secret.type_.as_deref()
        && t != "kubernetes.io/tls"
    {
        return Err(format!("{name} has type {t:?}, not \"kubernetes.io/tls\""));
    }
    key_pair(secret, &name)
}

/// The PEM `tls.crt` and `tls.key` of a Secret of any type (`proxy-ssl-secret` is usually
/// generic), checked as in [`tls_material`]; `name` names the Secret in errors.
fn key_pair(secret: &Secret, name: &str) -> Result<(Pem, Pem), String> {
    let field = |key: &str| secret_field(secret, key);
    let chain = field("tls.crt").ok_or_else(|| format!("{name} has no tls.crt"))?;
    let key = field("tls.key").ok_or_else(|| format!("{name} has no tls.key"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name}: tls.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name}: tls.crt holds no PEM certificate"));
    }
    let private = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("{name}: tls.key holds no PEM private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, private, &provider)
        .map_err(|e| format!("{name}: tls.key does not fit tls.crt: {e}"))?;
    Ok((chain.into(), key.into()))
}

#[cfg(test)]
mod tests;
