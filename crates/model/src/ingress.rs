//! `networking.k8s.io/v1` Ingress and IngressClass: the constants Bowline recognizes, which
//! Ingresses a gateway serves ([`class_of`], [`served_by`]), and validation with field paths
//! ([`validate_ingress`], [`validate_ingress_class`]).
//!
//! Validation follows the API server's rules for the fields Bowline routes on (pathType, paths,
//! hosts, backends): a document the API server would refuse is refused here too, so the same
//! directory behaves the same with and without a cluster. The annotations of ingress-nginx
//! (`nginx.ingress.kubernetes.io/…`) and their `bowline.io/…` twins are parsed by
//! [`annotations`]: a bad value, an unsupported or a refused annotation is reported (severity
//! `Ignored`), never an error, and the Ingress is served without it.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use crate::manifest::Problem;

pub mod annotations;

/// `spec.controller` of the IngressClasses Bowline serves.
pub const CONTROLLER: &str = "bowline.io/gateway-controller";
/// The annotation that makes an IngressClass the default for Ingresses without a class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated class annotation, honoured when `spec.ingressClassName` is absent.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Prefixes of the ingress-nginx annotations (and Bowline's twins).
pub const ANNOTATION_PREFIXES: [&str; 2] = annotations::PREFIXES;

/// The class an Ingress asks for: `spec.ingressClassName`, else the deprecated
/// `kubernetes.io/ingress.class` annotation; `None` when it names none.
pub fn class_of(ingress: &Ingress) -> Option<&str> {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CLASS_ANNOTATION))
                .map(String::as_str)
        })
        .filter(|c| !c.is_empty())
}

/// Whether an IngressClass is marked as the default class.
pub fn is_default_class(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Whether an IngressClass belongs to Bowline.
pub fn is_ours(class: &IngressClass) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
}

/// Why an Ingress is or is not served by the gateway of class `served` (whose IngressClass is
/// `class`, when it exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Served: its class is `served`, or it has none and `served` is the default class.
    Served,
    /// Not for this gateway (another class, or no class while `served` is not the default).
    OtherClass,
}

/// Which Ingresses the gateway of class `served` serves. `class` is the IngressClass named
/// `served` when it exists; an Ingress without a class is served only when that class is the
/// default one. The caller checks that `class` is ours.
pub fn served_by(ingress: &Ingress, served: &str, class: Option<&IngressClass>) -> Selection {
    match class_of(ingress) {
        Some(c) if c == served => Selection::Served,
        Some(_) => Selection::OtherClass,
        None if class.is_some_and(is_default_class) => Selection::Served,
        None => Selection::OtherClass,
    }
}

/// Checks an Ingress. Errors reject it; `Ignored` notes name annotations that are not applied
/// (bad values, unsupported, refused or unknown ones).
pub fn validate_ingress(ingress: &Ingress) -> Vec<Problem> {
    let (_, mut problems) = annotations::parse(ingress.metadata.annotations.as_ref());
    let Some(spec) = &ingress.spec else {
        problems.push(Problem::error("spec", "is required"));
        return problems;
    };
    if let Some(b) = &spec.default_backend {
        backend("spec.defaultBackend", b, &mut problems);
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(host) = &rule.host {
            host_check(&format!("{at}.host"), host, &mut problems);
        }
        let Some(http) = &rule.http else { continue };
        if http.paths.is_empty() {
            problems.push(Problem::error(
                format!("{at}.http.paths"),
                "must have at least one path",
            ));
        }
        for (j, p) in http.paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{j}]");
            let path = p.path.as_deref().unwrap_or_default();
            match p.path_type.as_str() {
                "Exact" | "Prefix" => {
                    if !path.starts_with('/') {
                        problems.push(Problem::error(
                            format!("{at}.path"),
                            "must be an absolute path (start with /)",
                        ));
                    } else if path.contains("//") {
                        problems.push(Problem::error(format!("{at}.path"), "must not contain //"));
                    }
                }
                "ImplementationSpecific" => {
                    if !path.is_empty() && !path.starts_with('/') {
                        problems.push(Problem::error(
                            format!("{at}.path"),
                            "must be an absolute path (start with /)",
                        ));
                    }
                }
                _ => problems.push(Problem::error(
                    format!("{at}.pathType"),
                    "must be Exact, Prefix or ImplementationSpecific",
                )),
            }
            backend(&format!("{at}.backend"), &p.backend, &mut problems);
        }
    }
    if spec.default_backend.is_none() && spec.rules.as_ref().is_none_or(Vec::is_empty) {
        problems.push(Problem::error(
            "spec",
            "either defaultBackend or rules must be specified",
        ));
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        for (j, host) in tls.hosts.iter().flatten().enumerate() {
            host_check(&format!("spec.tls[{i}].hosts[{j}]"), host, &mut problems);
        }
    }
    problems
}

/// Checks an IngressClass.
pub fn validate_ingress_class(class: &IngressClass) -> Vec<Problem> {
    let mut problems = Vec::new();
    if class
        .spec
        .as_ref()
        .and_then(|s| s.controller.as_deref())
        .is_none_or(str::is_empty)
    {
        problems.push(Problem::error("spec.controller", "is required"));
    }
    if let Some(v) = class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        && v != "true"
        && v != "false"
    {
        problems.push(Problem::ignored(
            format!("metadata.annotations[{DEFAULT_CLASS_ANNOTATION:?}]"),
            "only \"true\" makes the class the default",
        ));
    }
    problems
}

fn backend(at: &str, b: &IngressBackend, problems: &mut Vec<Problem>) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => problems.push(Problem::error(
            at,
            "service and resource are mutually exclusive",
        )),
        (None, None) => problems.push(Problem::error(at, "service or resource is required")),
        (None, Some(_)) => problems.push(Problem::error(
            format!("{at}.resource"),
            "resource backends are not supported; use service",
        )),
        (Some(s), None) => {
            if s.name.is_empty() {
                problems.push(Problem::error(format!("{at}.service.name"), "is required"));
            }
            match &s.port {
                None => problems.push(Problem::error(format!("{at}.service.port"), "is required")),
                Some(p) => match (&p.name, p.number) {
                    (Some(_), Some(_)) => problems.push(Problem::error(
                        format!("{at}.service.port"),
                        "name and number are mutually exclusive",
                    )),
                    (None, None) => problems.push(Problem::error(
                        format!("{at}.service.port"),
                        "name or number is required",
                    )),
                    (None, Some(n)) if !(1..=65535).contains(&n) => problems.push(Problem::error(
                        format!("{at}.service.port.number"),
                        "must be between 1 and 65535",
                    )),
                    (Some(n), None) if n.is_empty() => problems.push(Problem::error(
                        format!("{at}.service.port.name"),
                        "must not be empty",
                    )),
                    _ => {}
                },
            }
        }
    }
}

fn host_check(at: &str, host: &str, problems: &mut Vec<Problem>) {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && !name.contains('*')
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        problems.push(Problem::error(
            at,
            "must be a lower-case DNS name, optionally with a leading \"*.\" wildcard label (not an IP address)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(yaml: &str) -> Ingress {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn errors(i: &Ingress) -> Vec<String> {
        validate_ingress(i)
            .into_iter()
            .filter(Problem::is_error)
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn path_type_and_paths_are_checked() {
        let i = ingress(
            r#"
metadata: {name: a}
spec:
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /ok, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}
      - {path: /x, pathType: Regex, backend: {service: {name: s, port: {number: 80}}}}
      - {path: rel, pathType: Exact, backend: {service: {name: s, port: {name: http}}}}
"#,
        );
        assert_eq!(
            errors(&i),
            [
                "spec.rules[0].http.paths[1].pathType: must be Exact, Prefix or ImplementationSpecific",
                "spec.rules[0].http.paths[2].path: must be an absolute path (start with /)",
            ]
        );
    }

    #[test]
    fn hosts_backends_and_empty_spec_are_checked() {
        let i = ingress(
            r#"
metadata: {name: a}
spec:
  defaultBackend: {service: {name: s, port: {number: 0}}}
  rules:
  - host: "*.*.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: s, port: {}}}}
  - host: 10.0.0.1
  tls:
  - hosts: [Upper.example.com]
"#,
        );
        assert_eq!(
            errors(&i),
            [
                "spec.defaultBackend.service.port.number: must be between 1 and 65535",
                "spec.rules[0].host: must be a lower-case DNS name, optionally with a leading \"*.\" wildcard label (not an IP address)",
                "spec.rules[0].http.paths[0].backend.service.port: name or number is required",
                "spec.rules[1].host: must be a lower-case DNS name, optionally with a leading \"*.\" wildcard label (not an IP address)",
                "spec.tls[0].hosts[0]: must be a lower-case DNS name, optionally with a leading \"*.\" wildcard label (not an IP address)",
            ]
        );
        assert_eq!(
            errors(&ingress("metadata: {name: a}\nspec: {}\n")),
            ["spec: either defaultBackend or rules must be specified"]
        );
    }

    #[test]
    fn nginx_annotations_are_reported_not_rejected() {
        let i = ingress(
            r#"
metadata:
  name: a
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$1
    nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers x;"
    kubernetes.io/ingress.class: bowline
spec:
  defaultBackend: {service: {name: s, port: {number: 80}}}
"#,
        );
        let problems = validate_ingress(&i);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].is_error());
        assert_eq!(
            problems[0].path,
            "metadata.annotations[\"nginx.ingress.kubernetes.io/configuration-snippet\"]"
        );
        assert!(
            problems[0]
                .message
                .starts_with("refused: it holds raw nginx configuration")
        );
        assert_eq!(class_of(&i), Some("bowline"));
    }

    #[test]
    fn class_selection() {
        let class: IngressClass = serde_yaml::from_str(
            r#"
metadata:
  name: bowline
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: bowline.io/gateway-controller}
"#,
        )
        .unwrap();
        assert!(is_ours(&class) && is_default_class(&class));
        let named = ingress(
            "metadata: {name: a}\nspec: {ingressClassName: bowline, defaultBackend: {service: {name: s, port: {number: 80}}}}\n",
        );
        let other = ingress(
            "metadata: {name: a}\nspec: {ingressClassName: nginx, defaultBackend: {service: {name: s, port: {number: 80}}}}\n",
        );
        let none = ingress(
            "metadata: {name: a}\nspec: {defaultBackend: {service: {name: s, port: {number: 80}}}}\n",
        );
        assert_eq!(
            served_by(&named, "bowline", Some(&class)),
            Selection::Served
        );
        assert_eq!(
            served_by(&other, "bowline", Some(&class)),
            Selection::OtherClass
        );
        assert_eq!(served_by(&none, "bowline", Some(&class)), Selection::Served);
        assert_eq!(served_by(&none, "bowline", None), Selection::OtherClass);
    }
}
