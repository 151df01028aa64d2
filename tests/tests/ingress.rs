//! End-to-end Ingress (`networking.k8s.io/v1`): the real control plane with a manifests
//! directory and the real gateway started with `--ingress-class` alone, echo upstreams behind
//! Services and EndpointSlices, certificates made by rcgen.
//!
//! Checked: Exact vs element-wise Prefix (`/foo` vs `/foobar`), longest prefix first, exact host
//! before wildcard, a wildcard matches one label only, the default backend, a backend port by
//! name, a missing Service answers 503, TLS by SNI for two hosts from two Secrets, an Ingress of
//! another class is not served, the default class picks up Ingresses without a class; and the
//! example of docs/ingress.md.

use std::net::SocketAddr;

use anyhow::ensure;
use bowline_tests::{
    Echo, HttpClient, Stack, TestPki, TlsConn, TlsOptions, conformance, eventually, free_port,
};

/// The suite of the conformance report the tables feed (`cargo xtask conformance`).
const SUITE: &str = "ingress";

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Starts the control plane and a gateway serving only the Ingresses of `class`.
async fn start_ingress(
    files: &[(&str, String)],
    class: &str,
    http_port: u16,
    https_port: u16,
) -> Stack {
    let (http, https) = (http_port.to_string(), https_port.to_string());
    Stack::start_gateway_with(
        files,
        &[
            "--ingress-class",
            class,
            "--ingress-http-port",
            &http,
            "--ingress-https-port",
            &https,
        ],
    )
    .await
}

/// Waits until `host` + `path` is answered by the echo named `echo`.
async fn wait_for_echo(gw: SocketAddr, host: &str, path: &str, echo: &str) {
    let client = HttpClient::http1();
    eventually(&format!("{host}{path} is served by {echo}"), || async {
        let r = client.get(gw, host, path, &[]).await?;
        ensure!(r.echo_name().as_deref() == Some(echo), "{r:?}");
        anyhow::Ok(())
    })
    .await;
}

/// A Service in `shop` whose port `port` (named `port_name`) has one endpoint: the echo.
fn service(name: &str, port: u16, port_name: &str, echo: &Echo) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: {port_name}, port: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {upstream}}}]
endpoints:
  - addresses: ["127.0.0.1"]
"#,
        upstream = echo.port()
    )
}

/// Indents PEM text for a YAML block scalar.
fn block(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

fn tls_secret(name: &str, chain: &str, key: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        block(chain),
        block(key)
    )
}

const INGRESSES: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: bowline
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: bowline.io/gateway-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: main, namespace: shop}
spec:
  ingressClassName: bowline
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  tls:
    - {hosts: [a.example.com], secretName: a-tls}
    - {hosts: [b.example.com], secretName: b-tls}
  rules:
    - host: app.example.com
      http:
        paths:
          - {path: /foo, pathType: Prefix, backend: {service: {name: prefix, port: {number: 80}}}}
          - {path: /foo/bar/, pathType: Prefix, backend: {service: {name: longer, port: {number: 80}}}}
          - {path: /exact, pathType: Exact, backend: {service: {name: exact, port: {number: 80}}}}
          - {path: /named, pathType: Prefix, backend: {service: {name: named, port: {name: web}}}}
          - {path: /gone, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
    - host: "*.example.com"
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: wild, port: {number: 80}}}}
    - host: a.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: exact, port: {number: 80}}}}
    - host: b.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: longer, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: classless, namespace: shop}
spec:
  rules:
    - host: classless.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: exact, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs, namespace: shop}
spec:
  ingressClassName: nginx
  rules:
    - host: theirs.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: longer, port: {number: 80}}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_class_routes_hosts_paths_backends_and_tls() {
    let names = ["prefix", "longer", "exact", "named", "wild", "fallback"];
    let echoes: Vec<Echo> = names.iter().map(|n| Echo::start(n).unwrap()).collect();
    let mut manifests = INGRESSES.to_string();
    for e in &echoes {
        manifests += &if e.name == "named" {
            service(&e.name, 8080, "web", e)
        } else {
            service(&e.name, 80, "http", e)
        };
    }
    let pki = TestPki::new("ingress-ca");
    for host in ["a", "b"] {
        let cert = pki.issue(host, &[&format!("{host}.example.com")], &[]);
        let chain = std::fs::read_to_string(&cert.chain).unwrap();
        let key = std::fs::read_to_string(&cert.key).unwrap();
        manifests += &tls_secret(&format!("{host}-tls"), &chain, &key);
    }
    let http_port = free_port();
    let https_port = free_port();
    let stack = start_ingress(
        &[("ingress.yaml", manifests)],
        "bowline",
        http_port,
        https_port,
    )
    .await;
    let client = HttpClient::http1();
    let gw = addr(http_port);
    // (host, path, expected status, expected upstream)
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        // Prefix is element-wise; Exact is exact.
        ("app.example.com", "/foo", 200, Some("prefix")),
        ("app.example.com", "/foo/", 200, Some("prefix")),
        ("app.example.com", "/foo/x", 200, Some("prefix")),
        ("app.example.com", "/foobar", 200, Some("fallback")),
        ("app.example.com", "/exact", 200, Some("exact")),
        ("app.example.com", "/exact/x", 200, Some("fallback")),
        // The longest prefix wins (a trailing slash is ignored).
        ("app.example.com", "/foo/bar", 200, Some("longer")),
        ("app.example.com", "/foo/bar/baz", 200, Some("longer")),
        // Port by name.
        ("app.example.com", "/named", 200, Some("named")),
        // A missing Service answers 503.
        ("app.example.com", "/gone", 503, None),
        // Exact host before the wildcard; the wildcard matches one label only.
        ("app.example.com", "/other", 200, Some("fallback")),
        ("x.example.com", "/anything", 200, Some("wild")),
        ("a.b.example.com", "/", 200, Some("fallback")),
        ("example.com", "/", 200, Some("fallback")),
        // Unknown hosts get the default backend.
        ("unknown.test", "/", 200, Some("fallback")),
        // The default class serves Ingresses without a class; another class is not served.
        ("classless.example.com", "/", 200, Some("exact")),
        ("theirs.test", "/", 200, Some("fallback")),
    ];
    wait_for_echo(gw, "app.example.com", "/foo", "prefix").await;
    for (host, path, status, upstream) in cases {
        let r = client.get(gw, host, path, &[]).await.unwrap();
        conformance::record(
            SUITE,
            "rules",
            &format!("{host}{path}"),
            r.status == *status
                && upstream.is_none_or(|u| {
                    r.echo_name().as_deref() == Some(u)
                        && r.echo_field("path").as_deref() == Some(path)
                }),
        );
        assert_eq!(r.status, *status, "{host}{path}: {r:?}");
        if let Some(u) = upstream {
            assert_eq!(r.echo_name().as_deref(), Some(*u), "{host}{path}: {r:?}");
            assert_eq!(r.echo_field("path").as_deref(), Some(*path), "{host}{path}");
        }
    }

    // The control plane shows the snapshot and says why /gone answers 503.
    let dump = stack
        .ingress_config_dump(&client, http_port, https_port)
        .await
        .unwrap();
    assert_eq!(dump.status, 200, "{dump:?}");
    let dump = dump.json().unwrap();
    assert_eq!(dump["ingressClass"], "bowline");
    assert!(
        dump["diagnostics"].as_array().unwrap().iter().any(|d| d
            .as_str()
            .unwrap()
            .contains("Ingress shop/main: spec.rules[0].http.paths[4].backend.service.name: Service shop/missing not found; the path answers 503")),
        "{dump:#}"
    );

    // TLS by SNI: each host gets its own certificate and its own routes.
    for (host, upstream) in [("a.example.com", "exact"), ("b.example.com", "longer")] {
        let ca = pki.ca_path();
        let mut conn = eventually("the HTTPS listener serves the Secret", || async {
            TlsConn::connect(addr(https_port), host, TlsOptions::new(&ca)).await
        })
        .await;
        assert_eq!(conn.peer_dns_names(), [host.to_string()]);
        let r = conn.get(host, "/").await.unwrap();
        assert_eq!(r.echo_name().as_deref(), Some(upstream), "{host}: {r:?}");
    }
    // A host without a TLS entry has no certificate on the HTTPS port.
    assert!(
        TlsConn::connect(
            addr(https_port),
            "app.example.com",
            TlsOptions::new(&pki.ca_path())
        )
        .await
        .is_err()
    );
    drop(stack);
}

/// The example of docs/ingress.md, with its EndpointSlice port replaced by an echo's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_example_routes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ingress.md"))
        .unwrap();
    let start = doc
        .find("<!-- e2e: ingress-example -->")
        .expect("marker in docs/ingress.md");
    let rest = &doc[start..];
    let yaml_start = rest.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml_len = rest[yaml_start..].find("```").unwrap();
    let yaml = &rest[yaml_start..yaml_start + yaml_len];
    let web = Echo::start("web").unwrap();
    let api = Echo::start("api").unwrap();
    let yaml = yaml
        .replace("port: 9001", &format!("port: {}", web.port()))
        .replace("port: 9002", &format!("port: {}", api.port()));
    let http_port = free_port();
    let _stack = start_ingress(&[("example.yaml", yaml)], "bowline", http_port, free_port()).await;
    let client = HttpClient::http1();
    let gw = addr(http_port);
    wait_for_echo(gw, "shop.example.com", "/", "web").await;
    for (path, upstream) in [
        ("/", "web"),
        ("/api", "api"),
        ("/api/v1/items", "api"),
        ("/apix", "web"),
    ] {
        let r = client.get(gw, "shop.example.com", path, &[]).await.unwrap();
        assert_eq!(r.echo_name().as_deref(), Some(upstream), "{path}: {r:?}");
    }
}

/// The ingress corpus (`/work/shared/corpus`, `../shared/corpus` in CI), when present.
fn corpus_file(name: &str) -> Option<String> {
    let relative =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/ingress");
    [relative, "/work/shared/corpus/ingress".into()]
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| std::fs::read_to_string(p).unwrap())
}

/// An EndpointSlice giving Service `default/<service>` (port name `http`) the echo as endpoint.
fn slice_for(service: &str, echo: &Echo) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-e2e\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n",
        echo.port()
    )
}

/// The path-type examples table of the Ingress documentation, from the corpus file that gives
/// each configuration of the table its own host (class `nginx`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_path_types_follow_the_specification_table() {
    let Some(text) = corpus_file("path-types.yaml") else {
        eprintln!("skipping: no ingress corpus");
        return;
    };
    let services = [
        "svc-root",
        "svc-exact-foo",
        "svc-exact-foo-slash",
        "svc-prefix-foo",
        "svc-prefix-foo-slash",
        "svc-aaa-bb",
        "svc-aaa-bbb",
        "svc-aaa-bbb-slash",
        "svc-aaa",
    ];
    let echoes: Vec<Echo> = services.iter().map(|s| Echo::start(s).unwrap()).collect();
    let mut slices = String::new();
    for e in &echoes {
        slices += &slice_for(&e.name, e);
    }
    let http_port = free_port();
    let _stack = start_ingress(
        &[("path-types.yaml", text), ("slices.yaml", slices)],
        "nginx",
        http_port,
        free_port(),
    )
    .await;
    let client = HttpClient::http1();
    let gw = addr(http_port);
    wait_for_echo(gw, "prefix-root.example.com", "/x", "svc-root").await;
    // (host prefix, request path, expected Service or None for no match)
    let table: &[(&str, &str, Option<&str>)] = &[
        ("prefix-root", "/anything/at/all", Some("svc-root")),
        ("exact-foo", "/foo", Some("svc-exact-foo")),
        ("exact-foo", "/bar", None),
        ("exact-foo", "/foo/", None),
        ("exact-foo-slash", "/foo", None),
        ("prefix-foo", "/foo", Some("svc-prefix-foo")),
        ("prefix-foo", "/foo/", Some("svc-prefix-foo")),
        ("prefix-foo-slash", "/foo", Some("svc-prefix-foo-slash")),
        ("prefix-foo-slash", "/foo/", Some("svc-prefix-foo-slash")),
        ("prefix-aaa-bb", "/aaa/bbb", None),
        ("prefix-aaa-bbb", "/aaa/bbb", Some("svc-aaa-bbb")),
        (
            "prefix-aaa-bbb-slash",
            "/aaa/bbb",
            Some("svc-aaa-bbb-slash"),
        ),
        ("prefix-aaa-bbb", "/aaa/bbb/", Some("svc-aaa-bbb")),
        ("prefix-aaa-bbb", "/aaa/bbb/ccc", Some("svc-aaa-bbb")),
        ("prefix-aaa-bbb", "/aaa/bbbxyz", None),
        ("multi-prefix", "/aaa/ccc", Some("svc-aaa")),
        ("multi-prefix", "/aaa/bbb", Some("svc-aaa-bbb")),
        ("multi-prefix", "/ccc", Some("svc-root")),
        ("prefix-aaa", "/ccc", None),
        ("mixed", "/foo", Some("svc-exact-foo")),
        ("mixed", "/foo/x", Some("svc-prefix-foo")),
    ];
    for (host, path, want) in table {
        let host = format!("{host}.example.com");
        let r = client.get(gw, &host, path, &[]).await.unwrap();
        conformance::record(
            SUITE,
            "pathType",
            &format!("{host}{path}"),
            match want {
                Some(svc) => r.echo_name().as_deref() == Some(*svc),
                None => r.status == 404,
            },
        );
        match want {
            Some(svc) => assert_eq!(r.echo_name().as_deref(), Some(*svc), "{host}{path}: {r:?}"),
            // No rule and no default backend: 404.
            None => assert_eq!(r.status, 404, "{host}{path}: {r:?}"),
        }
    }
}

/// The corpus files that need only core features, routed as the Ingress documentation they come
/// from describes (each on its own stack, class `nginx`, one echo per Service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_core_examples_route_as_documented() {
    type Case<'a> = (&'a str, &'a str, Option<&'a str>);
    // (feature, corpus file, Services, cases)
    let files: &[(&str, &str, &[&str], &[Case<'_>])] = &[
        (
            "defaultBackend",
            "default-backend.yaml",
            &["test"],
            &[
                ("any.example.com", "/", Some("test")),
                ("", "/x/y", Some("test")),
            ],
        ),
        (
            "rules",
            "name-virtual-hosts.yaml",
            &["service1", "service2", "service3"],
            &[
                ("first.bar.com", "/", Some("service1")),
                ("second.bar.com", "/x", Some("service2")),
                ("third.bar.com", "/", Some("service3")),
                ("", "/", Some("service3")),
            ],
        ),
        (
            "host wildcards",
            "host-wildcards.yaml",
            &["service1", "service2"],
            &[
                ("foo.bar.com", "/", Some("service1")),
                ("bar.foo.com", "/", Some("service2")),
                ("baz.bar.foo.com", "/", None),
                ("foo.com", "/", None),
            ],
        ),
    ];
    for (feature, file, services, cases) in files {
        let Some(text) = corpus_file(file) else {
            eprintln!("skipping: no ingress corpus");
            return;
        };
        let echoes: Vec<Echo> = services.iter().map(|s| Echo::start(s).unwrap()).collect();
        let slices: String = echoes.iter().map(|e| slice_for(&e.name, e)).collect();
        let http_port = free_port();
        let _stack = start_ingress(
            &[(file, text), ("slices.yaml", slices)],
            "nginx",
            http_port,
            free_port(),
        )
        .await;
        let gw = addr(http_port);
        let (host, path, first) = cases[0];
        wait_for_echo(gw, host, path, first.unwrap()).await;
        for (host, path, want) in *cases {
            let r = HttpClient::http1().get(gw, host, path, &[]).await.unwrap();
            conformance::record(
                SUITE,
                feature,
                &format!("{file}: {host}{path}"),
                match want {
                    Some(svc) => r.echo_name().as_deref() == Some(*svc),
                    None => r.status == 404,
                },
            );
            match want {
                Some(svc) => {
                    assert_eq!(
                        r.echo_name().as_deref(),
                        Some(*svc),
                        "{file}: {host}{path}: {r:?}"
                    )
                }
                None => assert_eq!(r.status, 404, "{file}: {host}{path}: {r:?}"),
            }
        }
    }
}

/// `--gateway` and `--ingress-class` together: one process serves the VirtualGateway's listener
/// and the Ingress listener, each with its own routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_a_virtual_gateway_and_ingresses_together() {
    let mesh = Echo::start("mesh").unwrap();
    let web = Echo::start("web").unwrap();
    let gw_port = free_port();
    let http_port = free_port();
    let mut files = bowline_tests::one_route(gw_port, mesh.port());
    files.push((
        "ingress.yaml",
        format!(
            "{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: shop}}\nspec:\n  ingressClassName: bowline\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n",
            service("web", 80, "http", &web)
        ),
    ));
    let (http, https) = (http_port.to_string(), free_port().to_string());
    let _stack = Stack::start_with(
        &files,
        "edge/gw",
        &[
            "--ingress-class",
            "bowline",
            "--ingress-http-port",
            &http,
            "--ingress-https-port",
            &https,
        ],
    )
    .await;
    wait_for_echo(addr(http_port), "any.example.com", "/x", "web").await;
    wait_for_echo(addr(gw_port), "any.example.com", "/x", "mesh").await;
}
