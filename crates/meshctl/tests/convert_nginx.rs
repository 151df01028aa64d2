//! `meshctl convert --from ingress-nginx`: Ingresses with ingress-nginx annotations become
//! GatewayClass, Gateway and HTTPRoute objects; what Gateway API cannot express is listed.

use std::process::Command;

use pretty_assertions::assert_eq;
use serde::Deserialize;
use serde_json::{Value, json};

/// Converts `yaml`; the output documents as JSON values and the notes.
fn convert(yaml: &str) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ingress.yaml");
    std::fs::write(&input, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["convert", "--from", "ingress-nginx", "-f"])
        .arg(&input)
        .output()
        .unwrap();
    let notes = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{notes}");
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect();
    (docs, notes)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 8080}]
";

#[test]
fn paths_tls_default_backend_and_named_ports() {
    let yaml = format!(
        "{SERVICE}---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: public}}
spec: {{controller: k8s.io/ingress-nginx}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: site
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/use-regex: \"true\"
    nginx.ingress.kubernetes.io/proxy-read-timeout: \"30\"
    nginx.ingress.kubernetes.io/affinity: cookie
spec:
  ingressClassName: public
  tls: [{{hosts: [shop.example.com], secretName: shop-tls}}]
  defaultBackend: {{service: {{name: web, port: {{number: 8080}}}}}}
  rules:
    - host: shop.example.com
      http:
        paths:
          - {{path: /exact, pathType: Exact, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
          - {{path: /api, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 8080}}}}}}}}
          - {{path: \"/v[0-9]+/\", pathType: ImplementationSpecific, backend: {{service: {{name: web, port: {{number: 8080}}}}}}}}
"
    );
    let (docs, notes) = convert(&yaml);
    assert_eq!(docs[0]["kind"], "Service", "other kinds pass through first");
    assert_eq!(
        docs[1],
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "public"}, "spec": {"controllerName": "bowline.io/gateway-controller"}})
    );
    let gw = of_kind(&docs, "Gateway");
    assert_eq!(gw.len(), 1);
    assert_eq!(
        gw[0]["spec"]["listeners"],
        json!([
            {"name": "http", "protocol": "HTTP", "port": 80},
            {"name": "https-shop-tls", "hostname": "shop.example.com", "protocol": "HTTPS", "port": 443,
             "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "shop-tls"}]}}
        ])
    );
    let routes = of_kind(&docs, "HTTPRoute");
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "site-shop.example.com",
            "site-shop.example.com-ssl-redirect",
            "site-default",
            "site-default-ssl-redirect"
        ]
    );
    let site = routes[0];
    assert_eq!(
        site["spec"]["parentRefs"],
        json!([{"name": "public", "sectionName": "https-shop-tls"}])
    );
    let timeout = json!({"backendRequest": "30s"});
    assert_eq!(
        site["spec"]["rules"],
        json!([
            {"matches": [{"path": {"type": "Exact", "value": "/exact"}}], "backendRefs": [{"name": "web", "port": 8080}], "timeouts": timeout},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "web", "port": 8080}], "timeouts": timeout},
            {"matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+/"}}], "backendRefs": [{"name": "web", "port": 8080}], "timeouts": timeout},
        ])
    );
    assert_eq!(
        routes[1]["spec"]["rules"],
        json!([{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}])
    );
    assert_eq!(
        routes[2]["spec"]["rules"],
        json!([{"backendRefs": [{"name": "web", "port": 8080}], "timeouts": timeout}])
    );
    assert!(
        notes.contains("ingress.yaml (document 2): Ingress shop/site: metadata.annotations.nginx.ingress.kubernetes.io/affinity: not converted: session affinity"),
        "{notes}"
    );
}

#[test]
fn canaries_redirects_and_rewrites() {
    let yaml = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main
  namespace: shop
  annotations:
    bowline.io/rewrite-target: /v2
    nginx.ingress.kubernetes.io/enable-cors: \"true\"
spec:
  ingressClassName: nginx
  rules:
    - host: a.example.com
      http:
        paths: [{path: /app, pathType: Prefix, backend: {service: {name: stable, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main-canary
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/canary: \"true\"
    nginx.ingress.kubernetes.io/canary-weight: \"20\"
    nginx.ingress.kubernetes.io/canary-by-header: X-Canary
    nginx.ingress.kubernetes.io/canary-by-header-value: yes-please
    nginx.ingress.kubernetes.io/canary-by-cookie: canary
spec:
  ingressClassName: nginx
  rules:
    - host: a.example.com
      http:
        paths: [{path: /app, pathType: Prefix, backend: {service: {name: next, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: moved
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: https://new.example.com:8443/home
    nginx.ingress.kubernetes.io/limit-rps: \"5\"
spec:
  ingressClassName: nginx
  rules:
    - host: old.example.com
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: stable, port: {number: 80}}}}]
";
    let (docs, notes) = convert(yaml);
    let routes = of_kind(&docs, "HTTPRoute");
    assert_eq!(routes.len(), 2, "the canary is merged: {docs:?}");
    let rewrite = json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}});
    assert_eq!(
        routes[0]["spec"]["rules"],
        json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/app"}, "headers": [{"name": "X-Canary", "value": "yes-please"}]}],
             "filters": [rewrite], "backendRefs": [{"name": "next", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
             "filters": [rewrite],
             "backendRefs": [{"name": "stable", "port": 80, "weight": 80}, {"name": "next", "port": 80, "weight": 20}]},
        ])
    );
    assert_eq!(
        routes[1]["spec"]["rules"],
        json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "filters": [{"type": "RequestRedirect", "requestRedirect": {
                    "scheme": "https", "hostname": "new.example.com", "port": 8443,
                    "path": {"type": "ReplaceFullPath", "replaceFullPath": "/home"}, "statusCode": 301}}]}])
    );
    for expected in [
        "Ingress shop/main: metadata.annotations.nginx.ingress.kubernetes.io/enable-cors: not converted: Gateway API's CORS filter is experimental",
        "Ingress shop/main-canary: merged into HTTPRoute shop/main",
        "Ingress shop/main-canary: metadata.annotations.nginx.ingress.kubernetes.io/canary-by-cookie: not converted: HTTPRoute matches",
        "Ingress shop/moved: metadata.annotations.nginx.ingress.kubernetes.io/limit-rps: not converted: rate limits",
    ] {
        assert!(notes.contains(expected), "{expected}\nnot in:\n{notes}");
    }
}

#[test]
fn capture_groups_in_rewrite_target_are_reported() {
    let yaml =
        std::fs::read_to_string("/work/shared/corpus/ingress/rewrite-target.yaml").or_else(|_| {
            std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/corpus/ingress/rewrite-target.yaml"),
            )
        });
    let Ok(yaml) = yaml else {
        eprintln!("skipping: no ingress corpus");
        return;
    };
    let (docs, notes) = convert(&yaml);
    let routes = of_kind(&docs, "HTTPRoute");
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0]["spec"]["rules"][0]["matches"][0]["path"],
        json!({"type": "RegularExpression", "value": "/something(/|$)(.*)"})
    );
    assert!(routes[0]["spec"]["rules"][0].get("filters").is_none());
    assert!(
        notes.contains("Ingress default/rewrite: metadata.annotations.nginx.ingress.kubernetes.io/rewrite-target: not converted: capture groups"),
        "{notes}"
    );
}

#[test]
fn a_host_with_nothing_convertible_gets_no_route_and_says_why() {
    let (docs, notes) = convert(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a}
spec:
  rules:
    - host: a.example.com
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {name: web}}}}]
",
    );
    assert!(of_kind(&docs, "HTTPRoute").is_empty(), "{docs:?}");
    for expected in [
        "Ingress default/a: spec.rules[0].http.paths[0].backend.service.port: not converted: a backendRef needs a port number",
        "Ingress default/a: spec.rules: not converted: no path of host a.example.com could be converted",
    ] {
        assert!(notes.contains(expected), "{expected}\nnot in:\n{notes}");
    }
}
