//! Golden tests: `testdata/<case>/input.yaml` → `testdata/<case>/expected.yaml`, the snapshot and
//! diagnostics of every VirtualGateway of the input. `BLESS=1 cargo test -p bowline-control-plane`
//! rewrites the expected files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bowline_model::appmesh::{LabelSelector, LabelSelectorRequirement};
use bowline_model::ir;
use bowline_model::manifest::{self, Parsed};
use pretty_assertions::assert_eq;
use serde::{Deserialize, Serialize};

use super::*;
use crate::discovery::DnsTable;
use crate::world::World;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Expected {
    gateways: Vec<GatewayCase>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayCase {
    gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<String>,
    snapshot: ir::Snapshot,
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/testdata")
}

/// Reads a manifest as the store does; every document must be valid.
pub(super) fn world_from(file: &str, text: &str) -> World {
    let mut docs = Vec::new();
    for parsed in manifest::parse_file(Path::new(file), text) {
        match parsed {
            Parsed::Object { source, object, .. } => docs.push((source, *object)),
            Parsed::Skipped { .. } => {}
            Parsed::Invalid { problems, .. } => {
                let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
                panic!("invalid test input:\n{}", msgs.join("\n"));
            }
        }
    }
    World::from_documents(1, docs)
}

fn translate_all(world: &World) -> Expected {
    let dns = DnsTable::default();
    let inputs = Inputs { world, dns: &dns };
    let gateways = world
        .virtual_gateways()
        .map(|(_, gw)| {
            let ns = gw.metadata.namespace();
            let t = gateway(&inputs, ns, &gw.metadata.name);
            GatewayCase {
                gateway: format!("{ns}/{}", gw.metadata.name),
                diagnostics: t.diagnostics.iter().map(ToString::to_string).collect(),
                snapshot: t.snapshot,
            }
        })
        .collect();
    Expected { gateways }
}

#[test]
fn golden() {
    golden_cases(&testdata(), 11, |name, world| {
        let got = translate_all(world);
        assert!(
            !got.gateways.is_empty(),
            "{name}: the input has no VirtualGateway"
        );
        got
    });
}

/// The sidecar golden cases (`testdata-sidecar/<case>`): every VirtualNode's sidecar, its
/// inbound listeners on 10.0.0.1, the application on 127.0.0.1 (listener 9090 mapped to 19090),
/// the outbound listener on 15001.
#[test]
fn golden_sidecars() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/testdata-sidecar");
    let target = SidecarTarget {
        outbound_port: 15001,
        inbound_address: "10.0.0.1".into(),
        app_address: "127.0.0.1".into(),
        app_ports: [(9090, 19090)].into_iter().collect(),
    };
    golden_cases(&dir, 1, |_, world| {
        let dns = DnsTable::default();
        let inputs = Inputs { world, dns: &dns };
        let sidecars = world
            .virtual_nodes()
            .map(|(_, node)| {
                let ns = node.metadata.namespace();
                let t = sidecar(&inputs, ns, &node.metadata.name, &target);
                GatewayCase {
                    gateway: format!("sidecar {ns}/{}", node.metadata.name),
                    diagnostics: t.diagnostics.iter().map(ToString::to_string).collect(),
                    snapshot: t.snapshot,
                }
            })
            .collect();
        Expected { gateways: sidecars }
    });
}

/// Runs every `<dir>/<case>/input.yaml` through `translate` (twice: it must be deterministic)
/// and compares with `expected.yaml`, or rewrites it when `BLESS` is set.
pub(super) fn golden_cases<T>(dir: &Path, at_least: usize, translate: impl Fn(&str, &World) -> T)
where
    T: std::fmt::Debug + PartialEq + Serialize + for<'de> Deserialize<'de>,
{
    let bless = std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= at_least,
        "golden cases are missing: {cases:?}"
    );
    let mut failed = Vec::new();
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let input = std::fs::read_to_string(dir.join("input.yaml")).expect("input");
        let world = world_from("input.yaml", &input);
        let got = translate(&name, &world);
        // Deterministic: a second run gives the same result.
        assert_eq!(got, translate(&name, &world), "{name}: not deterministic");
        let expected_path = dir.join("expected.yaml");
        if bless {
            let text = format!(
                "# Generated by `BLESS=1 cargo test -p bowline-control-plane`; review the diff.\n{}",
                serde_yaml::to_string(&got).expect("yaml")
            );
            std::fs::write(&expected_path, text).expect("write expected");
            continue;
        }
        let text = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{name}: {e}; run with BLESS=1 to create it"));
        let expected: T = serde_yaml::from_str(&text).expect("expected.yaml parses");
        if expected != got {
            eprintln!("=== golden case {name} differs ===");
            assert_eq!(expected, got, "{name}");
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "golden cases differ: {failed:?}");
}

// === focused tests ===

const BASE: &str = r#"
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw, namespace: demo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
    - portMapping: {port: 9090, protocol: http}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: web, namespace: demo}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: web}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: web, namespace: demo}
spec:
  listeners:
    - portMapping: {port: 80, protocol: http}
  serviceDiscovery:
    dns: {hostname: 127.0.0.1}
"#;

fn translate(extra: &str, ns: &str, name: &str) -> Translation {
    let world = world_from("test.yaml", &format!("{BASE}{extra}"));
    let dns = DnsTable::default();
    gateway(
        &Inputs {
            world: &world,
            dns: &dns,
        },
        ns,
        name,
    )
}

fn route_names(t: &Translation, table: &str) -> Vec<Vec<String>> {
    let table = t
        .snapshot
        .route_tables
        .iter()
        .find(|rt| rt.name == table)
        .unwrap_or_else(|| panic!("no table {table}"));
    table
        .virtual_hosts
        .iter()
        .map(|v| v.routes.iter().map(|r| r.name.clone()).collect())
        .collect()
}

#[test]
fn unknown_gateway_is_empty_with_a_diagnostic() {
    let t = translate("", "demo", "nope");
    assert_eq!(t.snapshot, ir::Snapshot::default());
    assert_eq!(t.diagnostics.len(), 1);
    assert_eq!(
        t.diagnostics[0].to_string(),
        "VirtualGateway demo/nope: not found; the gateway gets an empty configuration until it exists"
    );
}

#[test]
fn ip_literal_hostname_is_its_own_endpoint() {
    let t = translate(
        r#"
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: r, namespace: demo}
spec:
  httpRoute:
    match: {prefix: /}
    action:
      target: {virtualService: {virtualServiceRef: {name: web}}}
"#,
        "demo",
        "gw",
    );
    assert_eq!(t.diagnostics, vec![]);
    assert_eq!(
        t.snapshot.endpoints,
        vec![ir::ClusterEndpoints {
            cluster: "node/demo/web/80".into(),
            endpoints: vec![ir::Endpoint {
                address: "127.0.0.1".into(),
                port: 80,
                weight: 1,
            }],
        }]
    );
    // Without match.port the route goes to both http listeners.
    assert_eq!(
        route_names(&t, "gateway/demo/gw/8080"),
        [["gatewayroute/demo/r"]]
    );
    assert_eq!(
        route_names(&t, "gateway/demo/gw/9090"),
        [["gatewayroute/demo/r"]]
    );
}

#[test]
fn match_port_selects_one_listener() {
    let t = translate(
        r#"
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: r, namespace: demo}
spec:
  httpRoute:
    match: {prefix: /, port: 9090}
    action:
      target: {virtualService: {virtualServiceRef: {name: web}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: wrong-port, namespace: demo}
spec:
  httpRoute:
    match: {prefix: /, port: 7000}
    action:
      target: {virtualService: {virtualServiceRef: {name: web}}}
"#,
        "demo",
        "gw",
    );
    assert_eq!(
        route_names(&t, "gateway/demo/gw/8080"),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        route_names(&t, "gateway/demo/gw/9090"),
        [["gatewayroute/demo/r"]]
    );
    let d: Vec<String> = t.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        d,
        [
            "test.yaml (document 4): GatewayRoute demo/wrong-port: spec.httpRoute.match.port: VirtualGateway demo/gw has no listener on port 7000; route skipped"
        ]
    );
}

#[test]
fn namespace_and_route_selectors() {
    let extra = r#"
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {gateway: gw2}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw2, namespace: demo}
spec:
  namespaceSelector: {matchLabels: {gateway: gw2}}
  gatewayRouteSelector:
    matchExpressions:
      - {key: expose, operator: NotIn, values: ["false"]}
  listeners:
    - portMapping: {port: 8080, protocol: http}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: a, namespace: team-a}
spec:
  httpRoute:
    match: {prefix: /a/}
    action:
      target: {virtualService: {virtualServiceRef: {name: web, namespace: demo}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: hidden, namespace: team-a, labels: {expose: "false"}}
spec:
  httpRoute:
    match: {prefix: /hidden/}
    action:
      target: {virtualService: {virtualServiceRef: {name: web, namespace: demo}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: b, namespace: team-b}
spec:
  httpRoute:
    match: {prefix: /b/}
    action:
      target: {virtualService: {virtualServiceRef: {name: web, namespace: demo}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: pinned, namespace: team-b}
spec:
  virtualGatewayRef: {name: gw2, namespace: demo}
  httpRoute:
    match: {prefix: /pinned/}
    action:
      target: {virtualService: {virtualServiceRef: {name: web, namespace: demo}}}
"#;
    let t = translate(extra, "demo", "gw2");
    assert_eq!(
        route_names(&t, "gateway/demo/gw2/8080"),
        [["gatewayroute/team-b/pinned", "gatewayroute/team-a/a"]]
    );
    // The first gateway has no selector: only its own namespace, where there is no route.
    let t = translate(extra, "demo", "gw");
    assert_eq!(
        route_names(&t, "gateway/demo/gw/8080"),
        Vec::<Vec<String>>::new()
    );
}

#[test]
fn label_selector_semantics() {
    let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
        .into_iter()
        .collect();
    let req = |op: &str, values: &[&str]| LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }]),
    };
    assert_eq!(LabelSelector::default().matches(&labels), Ok(true));
    assert_eq!(req("In", &["web", "api"]).matches(&labels), Ok(true));
    assert_eq!(req("In", &["api"]).matches(&labels), Ok(false));
    assert_eq!(req("NotIn", &["api"]).matches(&labels), Ok(true));
    assert_eq!(req("Exists", &[]).matches(&labels), Ok(true));
    assert_eq!(req("DoesNotExist", &[]).matches(&labels), Ok(false));
    assert!(req("Near", &[]).matches(&labels).is_err());
    let ml = LabelSelector {
        match_labels: Some(
            [("app".to_string(), "api".to_string())]
                .into_iter()
                .collect(),
        ),
        match_expressions: None,
    };
    assert_eq!(ml.matches(&labels), Ok(false));
}

#[test]
fn order_key_sorts_priority_then_specificity_then_name() {
    let m = |path: Option<ir::PathMatch>, headers: usize| ir::RouteMatch {
        path,
        headers: (0..headers)
            .map(|i| ir::KeyValueMatch {
                name: format!("h{i}"),
                matcher: ir::StringMatch::Present,
                invert: false,
            })
            .collect(),
        ..Default::default()
    };
    let mut keys = [
        OrderKey::new(
            None,
            &m(Some(ir::PathMatch::Prefix("/".into())), 0),
            false,
            "z".into(),
        ),
        OrderKey::new(None, &m(None, 0), false, "none".into()),
        OrderKey::new(
            None,
            &m(Some(ir::PathMatch::Prefix("/a/".into())), 1),
            false,
            "b".into(),
        ),
        OrderKey::new(
            None,
            &m(Some(ir::PathMatch::Prefix("/a/".into())), 0),
            false,
            "a".into(),
        ),
        OrderKey::new(
            None,
            &m(Some(ir::PathMatch::Regex("/x".into())), 0),
            false,
            "re".into(),
        ),
        OrderKey::new(
            None,
            &m(Some(ir::PathMatch::Exact("/x".into())), 0),
            false,
            "ex".into(),
        ),
        OrderKey::new(Some(7), &m(None, 0), false, "p7".into()),
        OrderKey::new(Some(0), &m(None, 0), false, "p0".into()),
    ];
    keys.sort();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["p0", "p7", "ex", "re", "b", "a", "z", "none"]);
}
