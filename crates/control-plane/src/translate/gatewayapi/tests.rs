//! Golden tests: `gatewayapi/testdata/<case>/input.yaml` → `expected.yaml`, the translation of
//! every Gateway of Bowline's classes with the TLS directory `/run/bowline/tls`, and the status
//! of every object. `BLESS=1 cargo test -p bowline-control-plane gatewayapi` rewrites them.

use std::path::{Path, PathBuf};

use bowline_model::ir;
use pretty_assertions::assert_eq;
use serde::{Deserialize, Serialize};

use super::*;
use crate::discovery::DnsTable;
use crate::translate::tests::{golden_cases, world_from};
use crate::world::World;

const TLS_DIR: &str = "/run/bowline/tls";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expected {
    /// One line per status condition.
    status: Vec<String>,
    gateways: Vec<GatewayCase>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayCase {
    gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
    snapshot: ir::Snapshot,
}

fn run(world: &World) -> Expected {
    let dns = DnsTable::default();
    let inputs = Inputs { world, dns: &dns };
    let analysis = status::analyse(world.objects().values().map(|e| e.object.as_ref()));
    let gateways = analysis
        .gateways
        .iter()
        .map(|g| {
            let (ns, name) = (g.gateway.namespace(), g.gateway.name());
            let t = gateway_api(&inputs, ns, name, Path::new(TLS_DIR));
            GatewayCase {
                gateway: format!("{ns}/{name}"),
                diagnostics: t
                    .translation
                    .diagnostics
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                files: t
                    .files
                    .iter()
                    .map(|f| f.path.display().to_string())
                    .collect(),
                snapshot: t.translation.snapshot,
            }
        })
        .collect();
    Expected {
        status: analysis.statuses.iter().flat_map(|s| s.lines()).collect(),
        gateways,
    }
}

#[test]
fn golden() {
    let dir: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/gatewayapi/testdata");
    golden_cases(&dir, 1, |name, world| {
        let got = run(world);
        assert!(
            !got.gateways.is_empty(),
            "{name}: no Gateway of Bowline's classes"
        );
        got
    });
}

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: bowline}
spec: {controllerName: bowline.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: bowline
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {ports: [{port: 80}]}
"#;

/// The translation of Gateway `default/gw` of [`BASE`] with `extra` documents.
fn translate_with(extra: &str) -> GatewayApiTranslation {
    let world = world_from("t.yaml", &format!("{BASE}---\n{extra}"));
    let dns = DnsTable::default();
    let inputs = Inputs {
        world: &world,
        dns: &dns,
    };
    gateway_api(&inputs, "default", "gw", Path::new(TLS_DIR))
}

fn routes_of(extra: &str) -> Vec<(String, ir::RouteMatch, ir::RouteAction)> {
    let t = translate_with(extra);
    let table = &t.translation.snapshot.route_tables[0];
    table.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.matcher.clone(), r.action.clone()))
        .collect()
}

#[test]
fn precedence_exact_then_longest_prefix_then_method_headers_age() {
    let routes = routes_of(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-new, namespace: default, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /a}}, {path: {value: /a/b}}, {path: {type: Exact, value: /a}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: z-old, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /a}}, {path: {value: /a}, headers: [{name: h, value: v}]}, {path: {value: /a}, method: GET}]
    backendRefs: [{name: a, port: 80}]
"#,
    );
    let names: Vec<String> = routes
        .iter()
        .map(|(n, m, _)| format!("{n} {:?}", m.path.as_ref().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            "httproute/default/b-new/rules[0]/matches[2] Exact(\"/a\")",
            "httproute/default/b-new/rules[0]/matches[1] Exact(\"/a/b\")",
            "httproute/default/b-new/rules[0]/matches[1] Prefix(\"/a/b/\")",
            "httproute/default/z-old/rules[0]/matches[2] Exact(\"/a\")",
            "httproute/default/z-old/rules[0]/matches[2] Prefix(\"/a/\")",
            "httproute/default/z-old/rules[0]/matches[1] Exact(\"/a\")",
            "httproute/default/z-old/rules[0]/matches[1] Prefix(\"/a/\")",
            "httproute/default/z-old/rules[0]/matches[0] Exact(\"/a\")",
            "httproute/default/z-old/rules[0]/matches[0] Prefix(\"/a/\")",
            "httproute/default/b-new/rules[0]/matches[0] Exact(\"/a\")",
            "httproute/default/b-new/rules[0]/matches[0] Prefix(\"/a/\")",
        ]
    );
}

#[test]
fn no_usable_backend_answers_500() {
    let routes = routes_of(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: Exact, value: /zero}}]
    backendRefs: [{name: a, port: 80, weight: 0}]
  - matches: [{path: {type: Exact, value: /none}}]
  - matches: [{path: {type: Exact, value: /missing}}]
    backendRefs: [{name: gone, port: 80}]
  - matches: [{path: {type: Exact, value: /ok}}]
    backendRefs: [{name: a, port: 80, weight: 2}, {name: gone, port: 80}]
"#,
    );
    let internal = ir::RouteAction::DirectResponse(ir::DirectResponse {
        status: 500,
        body: String::new(),
    });
    let by_path = |p: &str| {
        routes
            .iter()
            .find(|(_, m, _)| m.path == Some(ir::PathMatch::Exact(p.into())))
            .map(|(_, _, a)| a.clone())
            .unwrap()
    };
    for p in ["/zero", "/none", "/missing"] {
        assert_eq!(by_path(p), internal, "{p}");
    }
    let ir::RouteAction::Forward(f) = by_path("/ok") else {
        panic!("/ok does not forward");
    };
    assert_eq!(
        f.clusters,
        [ir::WeightedCluster::new(
            "gatewayapi/default/a/80".into(),
            2
        )]
    );
}

#[test]
fn header_filters_of_one_backend_among_several_apply_to_that_backend() {
    let extra = r#"
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: route, value: "yes"}]}
    backendRefs:
    - name: a
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: backend, value: a}]}
      - type: ResponseHeaderModifier
        responseHeaderModifier: {remove: [server]}
      - type: URLRewrite
        urlRewrite: {hostname: elsewhere.example}
    - name: b
      port: 80
"#;
    let t = translate_with(extra);
    let route = &t.translation.snapshot.route_tables[0].virtual_hosts[0].routes[0];
    assert_eq!(route.request_headers.set[0].name, "route", "the rule's own");
    let ir::RouteAction::Forward(f) = &route.action else {
        panic!("the rule forwards");
    };
    let a = &f.clusters[0];
    assert_eq!(a.cluster, "gatewayapi/default/a/80");
    let headers = a.headers.as_deref().expect("a's own header changes");
    assert_eq!(
        headers.request.set,
        [ir::HeaderPair {
            name: "backend".into(),
            value: "a".into()
        }]
    );
    assert_eq!(headers.response.remove, ["server"]);
    assert_eq!(
        f.clusters[1],
        ir::WeightedCluster::new("gatewayapi/default/b/80".into(), 1)
    );
    assert!(
        f.rewrite.is_empty(),
        "one backend's rewrite is not the rule's"
    );
    let diagnostics: Vec<String> = t
        .translation
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        diagnostics
            .iter()
            .any(|d| d.contains("spec.rules[0].backendRefs[0].filters[2]")
                && d.contains("URLRewrite on one backend among several is not supported")),
        "{diagnostics:#?}"
    );
}
