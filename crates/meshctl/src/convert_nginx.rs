//! `meshctl convert --from ingress-nginx`: Ingress objects (with ingress-nginx annotations, under
//! `nginx.ingress.kubernetes.io/` or `bowline.io/`) become Gateway API objects.
//!
//! | input | output |
//! |---|---|
//! | IngressClass `C` (or a class only named by Ingresses) | GatewayClass `C` (controller `bowline.io/gateway-controller`) |
//! | the Ingresses of class `C` in namespace `N` | Gateway `N/C`: listener `http` (80), one HTTPS listener (443) per TLS secret and host |
//! | Ingress `N/I` | HTTPRoute `N/I` (one per host when its rules have several hosts), and `N/I-ssl-redirect` when HTTP is redirected to HTTPS |
//! | canary Ingress | rules and weights merged into the HTTPRoute of the Ingress it shadows |
//!
//! What Gateway API cannot express is listed with the Ingress, the annotation and why. Other
//! documents (Service, Deployment, …) pass through unchanged. The objects are plain
//! `serde_json` values: meshctl does not depend on the Gateway API model.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bowline_model::ingress::{self as model_ingress, ANNOTATION_PREFIXES};
use bowline_model::manifest::{Object, Parsed, Source};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use serde_json::{Value as Json, json};
use serde_yaml::Value;

use crate::convert::{InputFile, Notes, parse};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
/// The class of Ingresses that name none when no IngressClass is the default (ingress-nginx's).
const FALLBACK_CLASS: &str = "nginx";

/// What each annotation that is not converted cannot become, by annotation name (after the
/// prefix). Annotations not in this table get a generic reason.
const NOT_EXPRESSIBLE: &[(&str, &str)] = &[
    (
        "affinity",
        "session affinity has no Gateway API field (Bowline's own resources have consistent hashing)",
    ),
    (
        "limit-rps",
        "rate limits have no Gateway API field (Bowline's API plans rate-limit)",
    ),
    ("limit-rpm", "rate limits have no Gateway API field"),
    (
        "limit-connections",
        "connection limits have no Gateway API field",
    ),
    (
        "whitelist-source-range",
        "source address filters have no Gateway API field",
    ),
    (
        "denylist-source-range",
        "source address filters have no Gateway API field",
    ),
    (
        "proxy-connect-timeout",
        "Gateway API has no connect timeout (Bowline connects with a 1 s timeout)",
    ),
    (
        "proxy-body-size",
        "request body limits have no Gateway API field",
    ),
    (
        "backend-protocol",
        "the backend protocol belongs to the Service port's appProtocol in Gateway API",
    ),
    (
        "configuration-snippet",
        "nginx configuration snippets have no equivalent",
    ),
    (
        "server-snippet",
        "nginx configuration snippets have no equivalent",
    ),
    (
        "auth-url",
        "external authentication has no Gateway API field",
    ),
    (
        "auth-type",
        "basic/digest authentication has no Gateway API field",
    ),
    (
        "canary-by-cookie",
        "HTTPRoute matches path, headers, query parameters and method, not cookies",
    ),
    (
        "upstream-hash-by",
        "consistent hashing has no Gateway API field",
    ),
    (
        "load-balance",
        "load-balancing policies have no Gateway API field (`ewma` is the PEAK_EWMA policy of Bowline's VirtualNode listener loadBalancer)",
    ),
];

/// A Gateway: one per (namespace, class).
#[derive(Default)]
struct GatewayPlan {
    /// `(secret, host)` of each HTTPS listener, in order; `host` empty for none.
    tls: Vec<(String, String)>,
}

/// One Ingress and where it was.
struct Found<'a> {
    source: Source,
    ingress: &'a Ingress,
}

impl Found<'_> {
    fn ns(&self) -> &str {
        self.ingress
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    fn name(&self) -> &str {
        self.ingress.metadata.name.as_deref().unwrap_or_default()
    }

    /// `file (document N): Ingress ns/name`.
    fn at(&self) -> String {
        format!("{}: Ingress {}/{}", self.source, self.ns(), self.name())
    }

    /// The annotation `key` under either prefix: its full name and value.
    fn annotation(&self, key: &str) -> Option<(String, &str)> {
        let annotations = self.ingress.metadata.annotations.as_ref()?;
        ANNOTATION_PREFIXES.iter().find_map(|prefix| {
            let full = format!("{prefix}{key}");
            annotations.get(&full).map(|v| (full, v.as_str()))
        })
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.annotation(key).map(|(_, v)| v)
    }

    fn is_canary(&self) -> bool {
        self.value("canary") == Some("true")
    }

    /// The ingress-nginx annotations, as (name after the prefix, full name, value).
    fn nginx_annotations(&self) -> Vec<(&str, &str, &str)> {
        let mut out = Vec::new();
        for (full, value) in self.ingress.metadata.annotations.iter().flatten() {
            for prefix in ANNOTATION_PREFIXES {
                if let Some(key) = full.strip_prefix(prefix) {
                    out.push((key, full.as_str(), value.as_str()));
                }
            }
        }
        out
    }
}

/// Everything read from the inputs.
struct Inputs<'a> {
    ingresses: Vec<Found<'a>>,
    /// Services by namespace/name, to turn named backend ports into numbers.
    services: HashMap<(String, String), &'a Service>,
    /// Names of the IngressClasses given.
    classes: BTreeSet<String>,
    default_class: Option<String>,
}

/// Converts every file; the result has one list of documents per file.
pub(crate) fn convert(files: &[InputFile], notes: &mut Notes) -> Vec<Vec<Value>> {
    // Pass 1: parse everything, so that canaries, classes and Services anywhere are known.
    let mut parsed: Vec<Vec<(Source, Vec<Parsed>)>> = Vec::new();
    for file in files {
        let mut docs = Vec::new();
        for doc in &file.docs {
            let source = doc.source(&file.name);
            let mut ok = Vec::new();
            for p in parse(&source, &doc.value) {
                match p {
                    Ok(p) => ok.push(p),
                    Err(errors) => notes.errors.extend(errors),
                }
            }
            docs.push((source, ok));
        }
        parsed.push(docs);
    }
    if !notes.errors.is_empty() {
        return Vec::new();
    }
    let mut inputs = Inputs {
        ingresses: Vec::new(),
        services: HashMap::new(),
        classes: BTreeSet::new(),
        default_class: None,
    };
    for (source, docs) in parsed.iter().flatten() {
        for p in docs {
            let Parsed::Object { object, .. } = p else {
                continue;
            };
            match object.as_ref() {
                Object::Ingress(i) => inputs.ingresses.push(Found {
                    source: source.clone(),
                    ingress: i,
                }),
                Object::Service(s) => {
                    let ns = s.metadata.namespace.clone().unwrap_or("default".into());
                    let name = s.metadata.name.clone().unwrap_or_default();
                    inputs.services.insert((ns, name), s);
                }
                Object::IngressClass(c) => {
                    let name = c.metadata.name.clone().unwrap_or_default();
                    if model_ingress::is_default_class(c) {
                        inputs.default_class = Some(name.clone());
                    }
                    inputs.classes.insert(name);
                }
                _ => {}
            }
        }
    }
    let plan = Plan::new(&inputs, notes);

    // Pass 2: every document in order, Ingresses and IngressClasses replaced.
    let mut classes_done: BTreeSet<String> = BTreeSet::new();
    let mut gateways_done: BTreeSet<(String, String)> = BTreeSet::new();
    let mut next_ingress = 0;
    let mut out = Vec::new();
    for (file, docs) in files.iter().zip(&parsed) {
        let mut file_out = Vec::new();
        for (doc, (_, items)) in file.docs.iter().zip(docs) {
            let mut replaced = false;
            let mut produced: Vec<Json> = Vec::new();
            for p in items {
                let Parsed::Object { object, .. } = p else {
                    continue;
                };
                match object.as_ref() {
                    Object::IngressClass(c) => {
                        replaced = true;
                        let name = c.metadata.name.clone().unwrap_or_default();
                        if classes_done.insert(name.clone()) {
                            produced.push(gateway_class(&name));
                        }
                    }
                    Object::Ingress(_) => {
                        replaced = true;
                        let found = &inputs.ingresses[next_ingress];
                        next_ingress += 1;
                        if found.is_canary() {
                            continue;
                        }
                        let class = plan.class_of(found, &inputs);
                        if classes_done.insert(class.clone()) {
                            produced.push(gateway_class(&class));
                        }
                        let key = (found.ns().to_string(), class.clone());
                        if gateways_done.insert(key.clone()) {
                            produced.push(plan.gateway(&key));
                        }
                        produced.extend(plan.routes.get(&found.at()).cloned().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            if replaced {
                file_out.extend(produced.iter().map(to_yaml));
            } else {
                file_out.push(doc.value.clone());
            }
        }
        out.push(file_out);
    }
    notes.notes.extend(plan.notes);
    out
}

fn to_yaml(j: &Json) -> Value {
    serde_yaml::to_value(j).expect("a JSON value is valid YAML")
}

fn gateway_class(name: &str) -> Json {
    json!({
        "apiVersion": GATEWAY_API,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": model_ingress::CONTROLLER},
    })
}

/// The Gateways and HTTPRoutes to write, computed once over all Ingresses.
struct Plan {
    gateways: BTreeMap<(String, String), GatewayPlan>,
    /// HTTPRoutes of each main Ingress, by [`Found::at`].
    routes: HashMap<String, Vec<Json>>,
    notes: Vec<String>,
}

/// The rules of one HTTPRoute under construction: one host (or none) of one Ingress.
struct HostRoutes {
    host: Option<String>,
    rules: Vec<Rule>,
}

/// One HTTPRoute rule: its path match, the backends and what the annotations add.
struct Rule {
    /// `(type, value)`; `None` for the catch-all rule of a default backend.
    path: Option<(&'static str, String)>,
    backends: Vec<Json>,
    filters: Vec<Json>,
    headers: Vec<Json>,
    timeouts: Option<Json>,
}

impl Rule {
    fn to_json(&self) -> Json {
        let mut rule = serde_json::Map::new();
        let mut m = serde_json::Map::new();
        if let Some((ty, value)) = &self.path {
            m.insert("path".into(), json!({"type": ty, "value": value}));
        }
        if !self.headers.is_empty() {
            m.insert("headers".into(), Json::Array(self.headers.clone()));
        }
        if !m.is_empty() {
            rule.insert("matches".into(), json!([m]));
        }
        if !self.filters.is_empty() {
            rule.insert("filters".into(), Json::Array(self.filters.clone()));
        }
        if !self.backends.is_empty() {
            rule.insert("backendRefs".into(), Json::Array(self.backends.clone()));
        }
        if let Some(t) = &self.timeouts {
            rule.insert("timeouts".into(), t.clone());
        }
        Json::Object(rule)
    }
}

impl Plan {
    fn new(inputs: &Inputs<'_>, notes: &mut Notes) -> Plan {
        let mut plan = Plan {
            gateways: BTreeMap::new(),
            routes: HashMap::new(),
            notes: Vec::new(),
        };
        for found in inputs.ingresses.iter().filter(|f| !f.is_canary()) {
            let class = plan.class_of(found, inputs);
            let gw = plan
                .gateways
                .entry((found.ns().to_string(), class))
                .or_default();
            for tls in found
                .ingress
                .spec
                .iter()
                .flat_map(|s| s.tls.iter().flatten())
            {
                let Some(secret) = tls.secret_name.clone() else {
                    plan.notes.push(format!(
                        "{}: spec.tls: not converted: a TLS entry without secretName uses the controller's default certificate, which a Gateway listener cannot name",
                        found.at()
                    ));
                    continue;
                };
                let hosts = tls.hosts.clone().unwrap_or_default();
                let hosts = if hosts.is_empty() {
                    vec![String::new()]
                } else {
                    hosts
                };
                for host in hosts {
                    if !gw.tls.iter().any(|(_, h)| *h == host) {
                        gw.tls.push((secret.clone(), host));
                    }
                }
            }
        }
        for found in &inputs.ingresses {
            if found.is_canary() {
                continue;
            }
            let canaries: Vec<&Found<'_>> = inputs
                .ingresses
                .iter()
                .filter(|c| c.is_canary() && c.ns() == found.ns())
                .filter(|c| shadows(c.ingress, found.ingress))
                .collect();
            let routes = plan.ingress_routes(found, &canaries, inputs);
            plan.routes.insert(found.at(), routes);
        }
        for canary in inputs.ingresses.iter().filter(|c| c.is_canary()) {
            let main = inputs.ingresses.iter().find(|m| {
                !m.is_canary() && m.ns() == canary.ns() && shadows(canary.ingress, m.ingress)
            });
            match main {
                Some(m) => plan.notes.push(format!(
                    "{}: merged into HTTPRoute {}/{} (the canary of Ingress {}/{})",
                    canary.at(),
                    m.ns(),
                    m.name(),
                    m.ns(),
                    m.name()
                )),
                None => notes.notes.push(format!(
                    "{}: not converted: a canary Ingress needs a main Ingress with the same host and path in its namespace, and there is none",
                    canary.at()
                )),
            }
        }
        plan
    }

    /// The class of an Ingress: its own, else the default IngressClass, else `nginx`.
    fn class_of(&self, found: &Found<'_>, inputs: &Inputs<'_>) -> String {
        model_ingress::class_of(found.ingress)
            .map(str::to_string)
            .or_else(|| inputs.default_class.clone())
            .unwrap_or_else(|| FALLBACK_CLASS.to_string())
    }

    fn gateway(&self, key: &(String, String)) -> Json {
        let (ns, class) = key;
        let mut listeners = vec![json!({"name": "http", "protocol": "HTTP", "port": 80})];
        if let Some(gw) = self.gateways.get(key) {
            for (secret, host) in &gw.tls {
                let mut l = serde_json::Map::new();
                l.insert("name".into(), json!(https_listener(secret, host, &gw.tls)));
                if !host.is_empty() {
                    l.insert("hostname".into(), json!(host));
                }
                l.insert("protocol".into(), json!("HTTPS"));
                l.insert("port".into(), json!(443));
                l.insert(
                    "tls".into(),
                    json!({"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]}),
                );
                listeners.push(Json::Object(l));
            }
        }
        json!({
            "apiVersion": GATEWAY_API,
            "kind": "Gateway",
            "metadata": {"name": class, "namespace": ns},
            "spec": {"gatewayClassName": class, "listeners": listeners},
        })
    }

    fn note(&mut self, found: &Found<'_>, path: &str, what: &str) {
        self.notes.push(format!("{}: {path}: {what}", found.at()));
    }

    /// The HTTPRoutes of one main Ingress and its canaries.
    fn ingress_routes(
        &mut self,
        found: &Found<'_>,
        canaries: &[&Found<'_>],
        inputs: &Inputs<'_>,
    ) -> Vec<Json> {
        let spec = found.ingress.spec.clone().unwrap_or_default();
        let use_regex = found.value("use-regex") == Some("true");
        let mut groups: Vec<HostRoutes> = Vec::new();
        let group_of = |groups: &mut Vec<HostRoutes>, host: Option<String>| -> usize {
            if let Some(i) = groups.iter().position(|g| g.host == host) {
                return i;
            }
            groups.push(HostRoutes {
                host,
                rules: Vec::new(),
            });
            groups.len() - 1
        };
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let g = group_of(&mut groups, rule.host.clone());
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let at = format!("spec.rules[{ri}].http.paths[{pi}]");
                let Some(backend) = self.backend(found, &at, &p.backend, inputs) else {
                    continue;
                };
                groups[g].rules.push(Rule {
                    path: Some(path_match(p, use_regex)),
                    backends: vec![backend],
                    filters: Vec::new(),
                    headers: Vec::new(),
                    timeouts: None,
                });
            }
        }
        if let Some(b) = &spec.default_backend
            && let Some(backend) = self.backend(found, "spec.defaultBackend", b, inputs)
        {
            let g = group_of(&mut groups, None);
            groups[g].rules.push(Rule {
                path: None,
                backends: vec![backend],
                filters: Vec::new(),
                headers: Vec::new(),
                timeouts: None,
            });
        }
        for canary in canaries {
            self.merge_canary(found, canary, &mut groups, inputs);
        }
        self.annotations(found, &mut groups);

        let class = self.class_of(found, inputs);
        let gw_key = (found.ns().to_string(), class.clone());
        let tls = self
            .gateways
            .get(&gw_key)
            .map(|g| g.tls.clone())
            .unwrap_or_default();
        let has_tls = spec.tls.as_ref().is_some_and(|t| !t.is_empty());
        let force = found.value("force-ssl-redirect") == Some("true");
        let redirect = (has_tls && found.value("ssl-redirect") != Some("false")) || force;
        let several = groups.len() > 1;
        let mut routes = Vec::new();
        for group in &groups {
            if group.rules.is_empty() {
                let host = group.host.as_deref().unwrap_or("(no host)");
                self.note(
                    found,
                    "spec.rules",
                    &format!("not converted: no path of host {host} could be converted, so it gets no HTTPRoute"),
                );
                continue;
            }
            let name = match (&group.host, several) {
                (_, false) => found.name().to_string(),
                (Some(h), true) => format!("{}-{}", found.name(), h.replace('*', "wildcard")),
                (None, true) => format!("{}-default", found.name()),
            };
            let hostnames: Vec<String> = group.host.iter().cloned().collect();
            let https: Vec<Json> = tls
                .iter()
                .filter(|(_, h)| {
                    h.is_empty() || group.host.as_ref().is_none_or(|g| host_covers(h, g))
                })
                .map(|(s, h)| json!({"name": class, "sectionName": https_listener(s, h, &tls)}))
                .collect();
            let parents = if redirect && !https.is_empty() {
                https
            } else {
                vec![json!({"name": class})]
            };
            let rules: Vec<Json> = group.rules.iter().map(Rule::to_json).collect();
            routes.push(http_route(found.ns(), &name, &parents, &hostnames, rules));
            if redirect && !tls.is_empty() {
                let filter = json!({"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}});
                routes.push(http_route(
                    found.ns(),
                    &format!("{name}-ssl-redirect"),
                    &[json!({"name": class, "sectionName": "http"})],
                    &hostnames,
                    vec![json!({"filters": [filter]})],
                ));
            }
        }
        routes
    }

    /// A Service backend as a backendRef; `None` (with a note) when it cannot be one.
    fn backend(
        &mut self,
        found: &Found<'_>,
        at: &str,
        b: &IngressBackend,
        inputs: &Inputs<'_>,
    ) -> Option<Json> {
        let Some(svc) = &b.service else {
            self.note(
                found,
                &format!("{at}.backend.resource"),
                "not converted: resource backends have no Gateway API equivalent; the path is left out",
            );
            return None;
        };
        let port = svc.port.as_ref();
        let number = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_ref()),
        ) {
            (Some(n), _) => Some(n),
            (None, Some(name)) => inputs
                .services
                .get(&(found.ns().to_string(), svc.name.clone()))
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.ports.as_ref())
                .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(name)))
                .map(|p| p.port),
            (None, None) => None,
        };
        let Some(number) = number else {
            self.note(
                found,
                &format!("{at}.backend.service.port"),
                "not converted: a backendRef needs a port number, and the named port is not in a Service given with -f; the path is left out",
            );
            return None;
        };
        Some(json!({"name": svc.name, "port": number}))
    }

    /// Adds the rules and weights of a canary Ingress to the rules with its host and path.
    fn merge_canary(
        &mut self,
        main: &Found<'_>,
        canary: &Found<'_>,
        groups: &mut [HostRoutes],
        inputs: &Inputs<'_>,
    ) {
        let use_regex = main.value("use-regex") == Some("true");
        let spec = canary.ingress.spec.clone().unwrap_or_default();
        let header = canary.value("canary-by-header");
        let header_match = header.map(|name| {
            match (
                canary.value("canary-by-header-value"),
                canary.value("canary-by-header-pattern"),
            ) {
                (Some(v), _) => json!({"name": name, "value": v}),
                (None, Some(p)) => json!({"type": "RegularExpression", "name": name, "value": p}),
                (None, None) => json!({"name": name, "value": "always"}),
            }
        });
        let weight: Option<i64> = canary.value("canary-weight").and_then(|w| w.parse().ok());
        let total: i64 = canary
            .value("canary-weight-total")
            .and_then(|w| w.parse().ok())
            .unwrap_or(100);
        if header.is_some() && canary.value("canary-by-header-value").is_none() {
            self.note(
                canary,
                "metadata.annotations.canary-by-header",
                "converted as a match on the value \"always\"; ingress-nginx's \"never\" (never the canary) has no HTTPRoute equivalent",
            );
        }
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let Some(group) = groups.iter_mut().find(|g| g.host == rule.host) else {
                continue;
            };
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let at = format!("spec.rules[{ri}].http.paths[{pi}]");
                let Some(backend) = self.backend(canary, &at, &p.backend, inputs) else {
                    continue;
                };
                let matched = path_match(p, use_regex);
                let Some(pos) = group
                    .rules
                    .iter()
                    .position(|r| r.path.as_ref() == Some(&matched) && r.headers.is_empty())
                else {
                    continue;
                };
                if let Some(w) = weight {
                    let main_rule = &mut group.rules[pos];
                    if let Some(first) = main_rule.backends.first_mut() {
                        first["weight"] = json!((total - w).max(0));
                    }
                    let mut weighted = backend.clone();
                    weighted["weight"] = json!(w.clamp(0, total));
                    main_rule.backends.push(weighted);
                }
                if let Some(h) = &header_match {
                    group.rules.insert(
                        pos,
                        Rule {
                            path: Some(matched),
                            backends: vec![backend],
                            filters: Vec::new(),
                            headers: vec![h.clone()],
                            timeouts: None,
                        },
                    );
                }
            }
        }
        for (key, full, _) in canary.nginx_annotations() {
            if !matches!(
                key,
                "canary"
                    | "canary-by-header"
                    | "canary-by-header-value"
                    | "canary-by-header-pattern"
                    | "canary-weight"
                    | "canary-weight-total"
            ) {
                let why = not_expressible(key);
                self.note(
                    canary,
                    &format!("metadata.annotations.{full}"),
                    &format!("not converted: {why}"),
                );
            }
        }
    }

    /// Applies the main Ingress's annotations to its rules; notes what it cannot express.
    fn annotations(&mut self, found: &Found<'_>, groups: &mut [HostRoutes]) {
        let timeout = ["proxy-read-timeout", "proxy-send-timeout"]
            .iter()
            .filter_map(|k| found.value(k))
            .filter_map(|v| v.parse::<u64>().ok())
            .max();
        for (key, full, value) in found.nginx_annotations() {
            let at = format!("metadata.annotations.{full}");
            match key {
                "use-regex" | "ssl-redirect" | "force-ssl-redirect" | "canary" => {}
                "permanent-redirect-code" | "temporal-redirect-code" => {}
                "proxy-read-timeout" | "proxy-send-timeout" => match (value.parse::<u64>(), timeout) {
                    (Ok(_), Some(secs)) => self.note(
                        found,
                        &at,
                        &format!(
                            "converted to timeouts.backendRequest {secs}s (the larger of the read and send timeouts): a limit on the whole backend request, where nginx limits the time between two reads or writes"
                        ),
                    ),
                    _ => self.note(found, &at, "not converted: not a number of seconds"),
                },
                "rewrite-target" => {
                    if has_capture(value) {
                        self.note(
                            found,
                            &at,
                            "not converted: capture groups ($1, …) cannot be expressed by HTTPRoute's URLRewrite, which replaces a prefix or the full path",
                        );
                        continue;
                    }
                    for rule in groups.iter_mut().flat_map(|g| g.rules.iter_mut()) {
                        let path = match rule.path.as_ref().map(|(t, _)| *t) {
                            Some("PathPrefix") | None => {
                                json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": value})
                            }
                            Some(_) => json!({"type": "ReplaceFullPath", "replaceFullPath": value}),
                        };
                        rule.filters
                            .push(json!({"type": "URLRewrite", "urlRewrite": {"path": path}}));
                    }
                }
                "app-root" => {
                    for g in groups.iter_mut() {
                        g.rules.insert(
                            0,
                            Rule {
                                path: Some(("Exact", "/".to_string())),
                                backends: Vec::new(),
                                filters: vec![json!({
                                    "type": "RequestRedirect",
                                    "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": value}, "statusCode": 302},
                                })],
                                headers: Vec::new(),
                                timeouts: None,
                            },
                        );
                    }
                }
                "permanent-redirect" | "temporal-redirect" => {
                    let (code_key, default_code) = if key == "permanent-redirect" {
                        ("permanent-redirect-code", 301)
                    } else {
                        ("temporal-redirect-code", 302)
                    };
                    let code = found
                        .value(code_key)
                        .and_then(|c| c.parse::<u16>().ok())
                        .unwrap_or(default_code);
                    let code = if matches!(code, 301 | 302) {
                        code
                    } else {
                        self.note(
                            found,
                            &format!("metadata.annotations.{code_key}"),
                            &format!(
                                "not converted: HTTPRoute redirects use 301 or 302, not {code}; {default_code} is used"
                            ),
                        );
                        default_code
                    };
                    let Some(redirect) = request_redirect(value, code) else {
                        self.note(
                            found,
                            &at,
                            "not converted: not an absolute http(s) URL",
                        );
                        continue;
                    };
                    for rule in groups.iter_mut().flat_map(|g| g.rules.iter_mut()) {
                        rule.backends.clear();
                        rule.filters = vec![redirect.clone()];
                    }
                }
                "enable-cors" => self.note(
                    found,
                    &at,
                    "not converted: Gateway API's CORS filter is experimental (HTTPRoute filter type CORS, experimental channel); add it by hand where the implementation supports it, or use Bowline's route cors field",
                ),
                _ => {
                    let why = not_expressible(key);
                    self.note(found, &at, &format!("not converted: {why}"));
                }
            }
        }
        if let Some(secs) = timeout {
            for rule in groups.iter_mut().flat_map(|g| g.rules.iter_mut()) {
                if !rule.backends.is_empty() {
                    rule.timeouts = Some(json!({"backendRequest": format!("{secs}s")}));
                }
            }
        }
    }
}

fn not_expressible(key: &str) -> &'static str {
    NOT_EXPRESSIBLE
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| *why)
        .unwrap_or("Gateway API has no field for it")
}

/// Whether the canary Ingress `canary` has a host and path of `main`.
fn shadows(canary: &Ingress, main: &Ingress) -> bool {
    let pairs = |i: &Ingress| -> BTreeSet<(Option<String>, Option<String>)> {
        i.spec
            .iter()
            .flat_map(|s| s.rules.iter().flatten())
            .flat_map(|r| {
                r.http
                    .iter()
                    .flat_map(|h| h.paths.iter())
                    .map(|p| (r.host.clone(), p.path.clone()))
            })
            .collect()
    };
    !pairs(canary).is_disjoint(&pairs(main))
}

/// `Exact`/`Prefix` → `Exact`/`PathPrefix`; `ImplementationSpecific` → `RegularExpression` with
/// `use-regex`, else `PathPrefix` (what ingress-nginx does).
fn path_match(p: &HTTPIngressPath, use_regex: bool) -> (&'static str, String) {
    let value = p.path.clone().unwrap_or_else(|| "/".to_string());
    let ty = match p.path_type.as_str() {
        "Exact" => "Exact",
        "Prefix" => "PathPrefix",
        _ if use_regex => "RegularExpression",
        _ => "PathPrefix",
    };
    (ty, value)
}

fn has_capture(target: &str) -> bool {
    let bytes = target.as_bytes();
    bytes
        .windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_digit() || w[1] == b'{'))
}

/// A RequestRedirect filter to the absolute URL `url`.
fn request_redirect(url: &str, code: u16) -> Option<Json> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (authority, None),
    };
    if host.is_empty() {
        return None;
    }
    let mut r = serde_json::Map::new();
    r.insert("scheme".into(), json!(scheme));
    r.insert("hostname".into(), json!(host));
    if let Some(p) = port {
        r.insert("port".into(), json!(p));
    }
    r.insert(
        "path".into(),
        json!({"type": "ReplaceFullPath", "replaceFullPath": if path.is_empty() { "/" } else { path }}),
    );
    r.insert("statusCode".into(), json!(code));
    Some(json!({"type": "RequestRedirect", "requestRedirect": r}))
}

/// Whether the listener hostname `listener` (possibly `*.example.com`) accepts `host`.
fn host_covers(listener: &str, host: &str) -> bool {
    match listener.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|h| h.ends_with('.') && h.len() > 1),
        None => listener == host,
    }
}

/// The listener name of a TLS secret: `https-<secret>`, with the host's position when the
/// secret serves several hosts.
fn https_listener(secret: &str, host: &str, all: &[(String, String)]) -> String {
    let same: Vec<&(String, String)> = all.iter().filter(|(s, _)| s == secret).collect();
    if same.len() <= 1 {
        return format!("https-{secret}");
    }
    let i = same.iter().position(|(_, h)| h == host).unwrap_or(0);
    format!("https-{secret}-{i}")
}

fn http_route(
    ns: &str,
    name: &str,
    parents: &[Json],
    hostnames: &[String],
    rules: Vec<Json>,
) -> Json {
    let mut spec = serde_json::Map::new();
    spec.insert("parentRefs".into(), json!(parents));
    if !hostnames.is_empty() {
        spec.insert("hostnames".into(), json!(hostnames));
    }
    spec.insert("rules".into(), Json::Array(rules));
    json!({
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}
