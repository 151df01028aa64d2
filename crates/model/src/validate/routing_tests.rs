//! Validation of the Bowline routing extensions (not in App Mesh) on GatewayRoutes and router
//! routes: every rule, with its field path.

use std::path::Path as FsPath;

use pretty_assertions::assert_eq;

use super::*;
use crate::manifest::{Parsed, parse_file};

/// A document of `kind` named `ns/x` with `spec` (YAML at column 0), in `api_version`.
fn doc_in(api_version: &str, kind: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: x\n  namespace: ns\nspec:\n{spec}"
    )
}

fn doc(kind: &str, spec: &str) -> String {
    doc_in("mesh.bowline.io/v1alpha1", kind, spec)
}

fn problems(yaml: &str) -> Vec<String> {
    parse_file(FsPath::new("t.yaml"), yaml)
        .into_iter()
        .flat_map(|p| match p {
            Parsed::Object { problems, .. } | Parsed::Invalid { problems, .. } => problems,
            Parsed::Skipped { kind, .. } => panic!("{kind} skipped"),
        })
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

const FULL_GATEWAY_ROUTE: &str = r#"httpRoute:
  match:
    prefix: /api
    hostname: {wildcard: "*.example.com"}
    cookies:
      - {name: session}
      - {name: channel, match: {exact: beta}}
      - {name: uid, match: {regex: "u[0-9]+"}, invert: true}
    queryParameters:
      - {name: v, match: {regex: "[0-9]+"}}
  action:
    target: {virtualService: {virtualServiceRef: {name: vs}}}
    rewrite:
      regex: {pattern: "^/api/(\\d+)", substitution: "/v${1}"}
  requestHeaders:
    add: [{name: x-add, value: "1"}]
    set: [{name: X-Set, value: two}]
    remove: [x-secret]
  responseHeaders:
    remove: [server]
  mirror:
    - {virtualNodeRef: {name: shadow}, percent: 25}
    - {virtualServiceRef: {name: shadow}}
  cors:
    allowOrigins: ["https://app.example.com", "https://*.example.org", "*"]
    allowMethods: [GET, PUT, "*"]
    allowHeaders: [x-token, "*"]
    exposeHeaders: [x-trace]
    maxAge: {unit: s, value: 600}
    allowCredentials: true
"#;

#[test]
fn valid_extensions_have_no_problems() {
    let router = r#"listeners: [{portMapping: {port: 8080, protocol: http}}]
routes:
  - name: moved
    httpRoute:
      match: {prefix: /old/}
      action:
        redirect: {scheme: https, hostname: new.example.com, port: 8443, path: {prefix: /new/}, statusCode: 301}
  - name: teapot
    httpRoute:
      match: {path: {exact: /tea}}
      action: {directResponse: {status: 418, body: "short and stout"}}
  - name: rewritten
    http2Route:
      match: {prefix: /a, cookies: [{name: c}]}
      action:
        weightedTargets: [{virtualNodeRef: {name: n}, weight: 1}]
        rewrite: {prefix: {value: /b}}
      requestHeaders: {set: [{name: x-route, value: rewritten}]}
      mirror: [{virtualNodeRef: {name: shadow}, port: 8080}]
"#;
    for yaml in [
        doc("GatewayRoute", FULL_GATEWAY_ROUTE),
        doc("VirtualRouter", router),
        // App Mesh documents may carry the extensions too.
        doc_in(
            "appmesh.k8s.aws/v1beta2",
            "GatewayRoute",
            FULL_GATEWAY_ROUTE,
        ),
        doc(
            "GatewayRoute",
            "httpRoute:\n  match: {prefix: /}\n  action: {redirect: {scheme: https}}\n",
        ),
    ] {
        assert_eq!(problems(&yaml), Vec::<String>::new(), "{yaml}");
    }
}

#[test]
fn gateway_route_extension_errors() {
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "matches",
            r#"httpRoute:
  match:
    prefix: /
    hostname: {wildcard: "example.com"}
    cookies: [{name: "bad name", match: {exact: a, regex: "("}}]
    queryParameters: [{name: q, match: {regex: "["}}]
  action: {target: {virtualService: {virtualServiceRef: {name: vs}}}}
"#,
            vec![
                r#"spec.httpRoute.match.hostname.wildcard: must be "*." followed by a domain, such as "*.example.com" (got "example.com")"#,
                "spec.httpRoute.match.queryParameters[0].match.regex: invalid regular expression: unclosed character class",
                r#"spec.httpRoute.match.cookies[0].name: "bad name" is not a cookie name"#,
                "spec.httpRoute.match.cookies[0].match: exactly one of exact and regex must be set (exact and regex are)",
                "spec.httpRoute.match.cookies[0].match.regex: invalid regular expression: unclosed group",
            ],
        ),
        (
            "answers",
            r#"httpRoute:
  match: {path: {exact: /x}}
  action:
    target: {virtualService: {virtualServiceRef: {name: vs}}}
    redirect: {scheme: ftp, hostname: "a:80", port: 0, path: {prefix: /y, exact: z}, statusCode: 200}
    rewrite: {hostname: {defaultTargetHostname: DISABLED}}
  mirror: [{virtualNodeRef: {name: n}}]
"#,
            vec![
                "spec.httpRoute.action: exactly one of target, redirect and directResponse must be set (target and redirect are)",
                r#"spec.httpRoute.action.redirect.scheme: must be one of http, https (got "ftp")"#,
                r#"spec.httpRoute.action.redirect.hostname: "a:80" is not a host name"#,
                "spec.httpRoute.action.redirect.port: must be between 1 and 65535 (got 0)",
                "spec.httpRoute.action.redirect.path: exactly one of exact and prefix must be set (exact and prefix are)",
                r#"spec.httpRoute.action.redirect.path.exact: must start with "/""#,
                "spec.httpRoute.action.redirect.path.prefix: requires match.prefix",
                "spec.httpRoute.action.redirect.statusCode: must be 301, 302, 303, 307 or 308 (got 200)",
                "spec.httpRoute.action.rewrite: requires a target",
                "spec.httpRoute.mirror: requires a route that forwards (not a redirect or direct response)",
            ],
        ),
        (
            "direct response",
            r#"http2Route:
  match: {prefix: /x}
  action:
    directResponse: {status: 99}
"#,
            vec![
                "spec.http2Route.action.directResponse.status: must be between 200 and 599 (got 99)",
            ],
        ),
        (
            "rewrite regex",
            r#"httpRoute:
  match: {prefix: /x}
  action:
    target: {virtualService: {virtualServiceRef: {name: vs}}}
    rewrite:
      prefix: {value: /y/}
      regex: {pattern: "^/x/(\\d+)", substitution: "/$1a"}
"#,
            vec![
                "spec.httpRoute.action.rewrite: regex and prefix or path are mutually exclusive",
                r#"spec.httpRoute.action.rewrite.regex.substitution: refers to group "1a", which the pattern does not have (write "${1}x" to follow group 1 with text)"#,
            ],
        ),
        (
            "filters",
            r#"httpRoute:
  match: {prefix: /}
  action: {target: {virtualService: {virtualServiceRef: {name: vs}}}}
  requestHeaders:
    set: [{name: Host, value: a}, {name: x-a, value: "1"}, {name: X-A, value: "2"}]
    add: [{name: "bad name", value: "x"}, {name: x-b, value: "line\nbreak"}]
    remove: [content-length]
  responseHeaders: {add: []}
  mirror:
    - {virtualNodeRef: {name: n}, virtualServiceRef: {name: vs}, percent: 101, port: 0}
  cors:
    allowOrigins: ["example.com", "https://a.*.example"]
    allowMethods: [FETCH]
    allowHeaders: ["bad header"]
    maxAge: {unit: s, value: -1}
"#,
            vec![
                r#"spec.httpRoute.requestHeaders.add[0].name: "bad name" is not a header name"#,
                "spec.httpRoute.requestHeaders.add[1].value: must not contain control characters",
                r#"spec.httpRoute.requestHeaders.set[0].name: "Host" describes the connection or the framing and cannot be changed"#,
                r#"spec.httpRoute.requestHeaders.set[2].name: duplicate header "X-A" (also spec.httpRoute.requestHeaders.set[1])"#,
                r#"spec.httpRoute.requestHeaders.remove[0]: "content-length" describes the connection or the framing and cannot be changed"#,
                "spec.httpRoute.responseHeaders.add: must have at least 1 entry (got 0)",
                "spec.httpRoute.mirror[0]: exactly one of virtualNodeRef and virtualServiceRef must be set (virtualNodeRef and virtualServiceRef are)",
                "spec.httpRoute.mirror[0].port: must be between 1 and 65535 (got 0)",
                "spec.httpRoute.mirror[0].percent: must be between 0 and 100 (got 101)",
                r#"spec.httpRoute.cors.allowOrigins[0]: "example.com" is not "*", "scheme://host[:port]" or "scheme://*.domain[:port]""#,
                r#"spec.httpRoute.cors.allowOrigins[1]: "https://a.*.example" is not "*", "scheme://host[:port]" or "scheme://*.domain[:port]""#,
                r#"spec.httpRoute.cors.allowMethods[0]: must be one of CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE (got "FETCH")"#,
                r#"spec.httpRoute.cors.allowHeaders[0]: "bad header" is not a header name"#,
                "spec.httpRoute.cors.maxAge.value: must not be negative (got -1)",
            ],
        ),
    ];
    for (name, spec, want) in cases {
        let yaml = doc("GatewayRoute", spec);
        assert_eq!(problems(&yaml), want, "case: {name}");
    }
}

#[test]
fn router_route_extension_errors() {
    let spec = r#"listeners: [{portMapping: {port: 8080, protocol: http}}]
routes:
  - name: both
    httpRoute:
      match: {path: {exact: /x}}
      action:
        weightedTargets: [{virtualNodeRef: {name: n}, weight: 1}]
        directResponse: {status: 200}
  - name: rewrites
    httpRoute:
      match: {path: {exact: /x}}
      action:
        weightedTargets: [{virtualNodeRef: {name: n}, weight: 1}]
        rewrite: {prefix: {value: /a}, path: {exact: b}}
  - name: answer-rewrite
    httpRoute:
      match: {prefix: /}
      action:
        redirect: {}
        rewrite: {regex: {pattern: "(", substitution: x}}
  - name: grpc
    grpcRoute:
      match: {serviceName: s}
      action:
        weightedTargets: [{virtualNodeRef: {name: n}, weight: 1}]
        redirect: {}
"#;
    assert_eq!(
        problems(&doc("VirtualRouter", spec)),
        [
            "spec.routes[0].httpRoute.action: exactly one of weightedTargets, redirect and directResponse must be set (weightedTargets and directResponse are)",
            "spec.routes[1].httpRoute.action.rewrite: exactly one of prefix, path and regex must be set",
            "spec.routes[1].httpRoute.action.rewrite.prefix: requires match.prefix",
            r#"spec.routes[1].httpRoute.action.rewrite.path.exact: must start with "/""#,
            "spec.routes[2].httpRoute.action.rewrite: requires weightedTargets",
            "spec.routes[2].httpRoute.action.rewrite.regex.pattern: invalid regular expression: unclosed group",
            "spec.routes[3].grpcRoute.action.redirect: only httpRoute and http2Route support this",
        ]
    );
}

#[test]
fn mirror_references_resolve() {
    let yaml = format!(
        "{}---\n{}---\n{}",
        doc("GatewayRoute", FULL_GATEWAY_ROUTE),
        doc_in(
            "mesh.bowline.io/v1alpha1",
            "VirtualService",
            "provider: {virtualNode: {virtualNodeRef: {name: shadow}}}"
        )
        .replace("name: x", "name: vs"),
        doc(
            "VirtualNode",
            "listeners:\n  - portMapping: {port: 8080, protocol: http}\n  - portMapping: {port: 9090, protocol: http}\nserviceDiscovery: {dns: {hostname: shadow.ns.svc.cluster.local}}"
        )
        .replace("name: x", "name: shadow"),
    );
    let objects: Vec<(Source, Object)> = parse_file(FsPath::new("t.yaml"), &yaml)
        .into_iter()
        .filter_map(|p| match p {
            Parsed::Object { source, object, .. } => Some((source, *object)),
            _ => None,
        })
        .collect();
    assert_eq!(objects.len(), 3);
    let shown: Vec<String> = references(&objects)
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        shown,
        [
            // The route's target resolves to the same node, which has two listeners.
            "spec.httpRoute.action.target.port: is required: VirtualNode ns/shadow (the provider of VirtualService ns/vs) has several listeners (8080, 9090)",
            "spec.httpRoute.mirror[0].port: is required: VirtualNode ns/shadow has several listeners (8080, 9090)",
            "spec.httpRoute.mirror[1].virtualServiceRef: VirtualService ns/shadow does not exist",
        ]
    );
}
