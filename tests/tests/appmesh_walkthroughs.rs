//! The App Mesh walkthroughs of the corpus (`/work/shared/corpus/appmesh`, `../shared/corpus` in
//! CI) that ingress through a VirtualGateway, loaded UNCHANGED plus EndpointSlice documents that
//! put their Services on `bowline-echo` upstreams, served by the real gateway; each request is one
//! the walkthrough's README sends, with the outcome it documents. Every walkthrough also runs from
//! the output of `meshctl convert`, which must route the same. Skipped when the corpus is absent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::ensure;
use bowline_tests::{
    ControlPlane, Echo, HttpClient, Sidecar, Stack, TestPki, TlsConn, TlsOptions, binary,
    can_mount, eventually, free_port,
};

fn corpus() -> Option<PathBuf> {
    let relative = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    [relative, PathBuf::from("/work/shared/corpus")]
        .into_iter()
        .find(|p| p.join("appmesh").is_dir())
}

/// The walkthrough's manifests as published, or `None` without a corpus.
fn walkthrough(name: &str, file: &str) -> Option<String> {
    let path = corpus()?.join("appmesh").join(name).join(file);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// `meshctl convert` of `text`: mesh.bowline.io manifests.
fn converted(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("manifests.yaml");
    std::fs::write(&input, text).unwrap();
    let out = Command::new(binary("meshctl"))
        .args(["convert", "-f"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(!yaml.contains("apiVersion: appmesh.k8s.aws/"), "{yaml}");
    yaml
}

/// An EndpointSlice for the Service `ns/service` (port `http`) on the echo `up`.
fn endpoints(ns: &str, service: &str, up: &Echo) -> String {
    endpoints_named(ns, service, "http", up)
}

/// As [`endpoints`], for the Service port named `port_name`.
fn endpoints_named(ns: &str, service: &str, port_name: &str, up: &Echo) -> String {
    slice(ns, service, port_name, up.addr)
}

/// An EndpointSlice for the Service `ns/service`: its port `port_name` at `addr`.
fn slice(ns: &str, service: &str, port_name: &str, addr: SocketAddr) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-test\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {}}}]\nendpoints:\n  - addresses: [\"{}\"]\n",
        addr.port(),
        addr.ip()
    )
}

/// One echo per color, named after it, behind the Service `color-<color>`.
fn colors(ns: &str, names: &[&str]) -> (Vec<Echo>, String) {
    let mut ups = Vec::new();
    let mut text = String::new();
    for c in names {
        let up = Echo::start(c).unwrap();
        text.push_str(&endpoints(ns, &format!("color-{c}"), &up));
        ups.push(up);
    }
    (ups, text)
}

/// What answers `GET path` (with `headers`) through the gateway's listener on `port`: the echo
/// name, or the status when no echo answered.
async fn who(port: u16, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = HttpClient::http1().get(addr, "", path, headers).await?;
    Ok(r.echo_name()
        .unwrap_or_else(|| format!("status {}", r.status)))
}

/// A README request and its documented outcome: path, request headers, the echo that answers.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// Waits until the gateway routes `path`, then checks every (path, headers, expected) case.
async fn expect(port: u16, cases: &[Case<'_>]) {
    let (path, headers, want) = cases[0];
    eventually("the first route", || async move {
        let got = who(port, path, headers).await?;
        ensure!(got == want, "{path}: {got}");
        Ok(())
    })
    .await;
    for (path, headers, want) in cases {
        let got = who(port, path, headers).await.unwrap();
        assert_eq!(&got, want, "GET {path} {headers:?}");
    }
}

/// The walkthroughs' gateways all listen on 8088 (as published): one stack at a time.
static LISTENER_8088: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The ingress a test adds in front of a walkthrough that has none (its README calls the service
/// from a client pod through that pod's sidecar): a VirtualGateway `test-ingress` on `port` and a
/// GatewayRoute from `/` to the VirtualService `service`. Not part of what is converted.
fn test_ingress(ns: &str, service: &str, port: u16) -> String {
    test_ingress_for(ns, service, port, "http")
}

/// As [`test_ingress`], with a listener and GatewayRoute of `protocol` (`http`, `http2` or
/// `grpc`; a grpc route matches every method of `color.ColorService`, as App Mesh requires a
/// service name or hostname).
fn test_ingress_for(ns: &str, service: &str, port: u16, protocol: &str) -> String {
    let (route, matcher) = match protocol {
        "grpc" => ("grpcRoute", "{serviceName: color.ColorService}"),
        "http2" => ("http2Route", "{prefix: /}"),
        _ => ("httpRoute", "{prefix: /}"),
    };
    format!(
        "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualGateway\nmetadata: {{name: test-ingress, namespace: {ns}}}\nspec:\n  listeners:\n    - portMapping: {{port: {port}, protocol: {protocol}}}\n---\napiVersion: mesh.bowline.io/v1alpha1\nkind: GatewayRoute\nmetadata: {{name: test-ingress, namespace: {ns}}}\nspec:\n  {route}:\n    match: {matcher}\n    action:\n      target: {{virtualService: {{virtualServiceRef: {{name: {service}}}}}}}\n"
    )
}

/// Starts a stack for the walkthrough as published, then for its `meshctl convert` output, and
/// runs `check` against each.
async fn each_form<F, Fut>(manifests: &str, discovery: &str, gateway: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _one_at_a_time = LISTENER_8088.lock().await;
    for (label, text) in [
        ("unchanged", manifests.to_string()),
        ("converted", converted(manifests)),
    ] {
        eprintln!("{gateway}: {label}");
        let stack = Stack::start(
            &[
                ("manifests.yaml", text),
                ("discovery.yaml", discovery.to_string()),
            ],
            gateway,
        )
        .await;
        check().await;
        drop(stack);
    }
}

/// Runs `cases` against the walkthrough as published and as converted, each in its own stack.
async fn run(manifests: &str, discovery: &str, gateway: &str, port: u16, cases: &[Case<'_>]) {
    each_form(manifests, discovery, gateway, || expect(port, cases)).await;
}

/// A color walkthrough whose VirtualGateway `ingress-gw` listens on 8088: its `manifests.yaml`
/// with one echo per color, and `cases` through the gateway.
async fn color_gateway(ns: &str, cases: &[Case<'_>]) {
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let (_ups, discovery) = colors(ns, &["white", "blue", "red", "yellow", "green"]);
    run(
        &manifests,
        &discovery,
        &format!("{ns}/ingress-gw"),
        8088,
        cases,
    )
    .await;
}

/// howto-k8s-ingress-gateway: `/paths/<color>` by path prefix and `/headers` by the
/// `color_header` header (exact, regex, prefix, present; white otherwise).
#[tokio::test]
async fn ingress_gateway_routes_by_path_and_header() {
    color_gateway(
        "howto-k8s-ingress-gateway",
        &[
            ("/paths/red", &[], "red"),
            ("/paths/blue", &[], "blue"),
            ("/paths/green", &[], "green"),
            ("/paths/yellow", &[], "yellow"),
            ("/headers", &[("color_header", "blue")], "blue"),
            ("/headers", &[("color_header", "xgreenx")], "green"),
            ("/headers", &[("color_header", "redish")], "red"),
            ("/headers", &[("color_header", "anything")], "yellow"),
            ("/headers", &[], "white"),
        ],
    )
    .await;
}

/// howto-k8s-http-ingress-v2: GatewayRoute prefix, exact path, header, query parameter, prefix
/// rewrite and path rewrite matches.
#[tokio::test]
async fn http_ingress_v2_gateway_route_matches_and_rewrites() {
    color_gateway(
        "howto-k8s-http-ingress-v2",
        &[
            ("/paths/red", &[], "red"),
            ("/paths/blue", &[], "blue"),
            ("/paths/green", &[], "green"),
            ("/", &[("color_header", "yellow")], "yellow"),
            ("/query?color_type=white", &[], "white"),
            ("/test/", &[], "red"),
            ("/rewrite/path/blue", &[], "blue"),
        ],
    )
    .await;
}

/// howto-k8s-http-headers: the color router picks the node by the `color_header` header (exact,
/// regex, prefix, present; white otherwise), reached through a test ingress.
#[tokio::test]
async fn http_headers_router_matches_headers() {
    let ns = "howto-k8s-http-headers";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let (_ups, mut discovery) = colors(ns, &["white", "blue", "red", "yellow", "green"]);
    let port = free_port();
    discovery.push_str(&test_ingress(ns, "color", port));
    run(
        &manifests,
        &discovery,
        &format!("{ns}/test-ingress"),
        port,
        &[
            ("/", &[], "white"),
            ("/", &[("color_header", "blue")], "blue"),
            ("/", &[("color_header", "a-green-one")], "green"),
            ("/", &[("color_header", "redder")], "red"),
            ("/", &[("color_header", "purple")], "yellow"),
        ],
    )
    .await;
}

/// The `retries` count of an echo's `/__echo/stats`.
async fn retries(up: &Echo) -> anyhow::Result<u64> {
    let r = HttpClient::http1()
        .get(up.addr, "", "/__echo/stats", &[])
        .await?;
    r.json()
        .and_then(|j| j["retries"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no retries in {}", r.body))
}

/// howto-k8s-retry-policy: the route retries server errors 4 times (`maxRetries: 4`,
/// `httpRetryEvents: [server-error]`), reached through a test ingress.
#[tokio::test]
async fn retry_policy_retries_server_errors() {
    let ns = "howto-k8s-retry-policy";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let blue = Echo::start("blue").unwrap();
    let port = free_port();
    let discovery = endpoints(ns, "color", &blue) + &test_ingress(ns, "color", port);
    let blue = &blue;
    each_form(
        &manifests,
        &discovery,
        &format!("{ns}/test-ingress"),
        || async move {
            expect(port, &[("/", &[], "blue")]).await;
            let before = retries(blue).await.unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let r = HttpClient::http1()
                .get(addr, "", "/status/503", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 503, "{}", r.body);
            assert_eq!(
                retries(blue).await.unwrap() - before,
                4,
                "retries of one request"
            );
        },
    )
    .await;
}

/// howto-k8s-connection-pools: the gateway listener's pool (`maxConnections: 5`,
/// `maxPendingRequests: 5`) lets 10 slow requests through at once; the rest get 503 with
/// `x-bowline-overflow`.
#[tokio::test]
async fn connection_pools_bound_concurrent_requests() {
    let ns = "howto-k8s-connection-pools";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let (_ups, discovery) = colors(ns, &["red", "green"]);
    each_form(
        &manifests,
        &discovery,
        &format!("{ns}/ingress-gw"),
        || async {
            expect(
                8088,
                &[("/paths/red", &[], "red"), ("/paths/green", &[], "green")],
            )
            .await;
            let addr = SocketAddr::from(([127, 0, 0, 1], 8088));
            let client = HttpClient::http1();
            let replies = futures_util::future::join_all((0..20).map(|_| {
                let client = client.clone();
                async move {
                    client
                        .get(addr, "", "/paths/red/delay/2500", &[])
                        .await
                        .unwrap()
                }
            }))
            .await;
            let served = replies.iter().filter(|r| r.status == 200).count();
            let overflow = replies
                .iter()
                .filter(|r| r.status == 503 && r.headers.contains_key("x-bowline-overflow"))
                .count();
            assert_eq!((served, overflow), (10, 10), "served and overflowed of 20");
        },
    )
    .await;
}

/// One unary call of `path` through the gRPC listener on 9111 with a
/// `google.protobuf.StringValue` message and `metadata`; the message echoed back.
async fn grpc_call(
    path: &'static str,
    metadata: &[(&'static str, &'static str)],
) -> Result<String, tonic::Status> {
    grpc_call_on(9111, path, metadata).await
}

/// As [`grpc_call`], through the listener on `port`.
async fn grpc_call_on(
    port: u16,
    path: &'static str,
    metadata: &[(&'static str, &'static str)],
) -> Result<String, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new("hi".to_string());
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let response = grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<String, String>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

/// howto-k8s-grpc-ingress-v2: the grpc GatewayRoute matches the gRPC service name, then (later
/// steps of the walkthrough) metadata exact, present and inverted; what it does not match is not
/// routed.
#[tokio::test]
async fn grpc_ingress_v2_routes_by_service_and_metadata() {
    let ns = "howto-k8s-grpc-ingress-v2";
    if corpus().is_none() {
        eprintln!("skipping: no corpus");
        return;
    }
    let greeter = Echo::start("greeter").unwrap();
    let discovery = endpoints_named(ns, "greeter", "grpc", &greeter);
    let iphone: &[(&str, &str)] = &[("device", "iphone")];
    let android: &[(&str, &str)] = &[("device", "android")];
    // (step, calls routed, calls not routed)
    type Call = (&'static str, &'static [(&'static str, &'static str)]);
    let steps: [(&str, Vec<Call>, Vec<Call>); 5] = [
        (
            "manifests.yaml",
            vec![("/Hello/SayHello", &[])],
            vec![("/Hello2/SayHello", &[])],
        ),
        (
            "manifests-servicename-hello2.yaml",
            vec![("/Hello2/SayHello", &[])],
            vec![("/Hello/SayHello", &[])],
        ),
        (
            "manifests-metadata-exact.yaml",
            vec![("/Hello/SayHello", iphone)],
            vec![("/Hello/SayHello", android), ("/Hello/SayHello", &[])],
        ),
        (
            "manifests-metadata-present.yaml",
            vec![("/Hello/SayHello", android)],
            vec![("/Hello/SayHello", &[])],
        ),
        (
            "manifests-metadata-invert.yaml",
            vec![("/Hello/SayHello", &[])],
            vec![("/Hello/SayHello", iphone)],
        ),
    ];
    for (file, routed, refused) in &steps {
        let manifests = walkthrough(ns, file).unwrap();
        each_form(
            &manifests,
            &discovery,
            &format!("{ns}/ingress-gw"),
            || async {
                let (path, metadata) = routed[0];
                eventually("the grpc route", || async move {
                    let got = grpc_call(path, metadata).await?;
                    ensure!(got == "hi", "{got}");
                    Ok(())
                })
                .await;
                for (path, metadata) in routed {
                    assert_eq!(
                        grpc_call(path, metadata).await.unwrap(),
                        "hi",
                        "{file}: {path} {metadata:?}"
                    );
                }
                for (path, metadata) in refused {
                    let got = grpc_call(path, metadata).await;
                    assert!(
                        got.is_err(),
                        "{file}: {path} {metadata:?} was routed: {got:?}"
                    );
                }
            },
        )
        .await;
    }
}

// === Walkthroughs with AWS Cloud Map discovery ===
//
// Their VirtualNodes discover pods through `awsCloudMap`: Bowline resolves the pods each node's
// `podSelector` selects, known from the Services that select them (http2, grpc) or from Pod
// documents (outlier-detection, whose colorapp Service has no selector). Pods listen on their
// node's listener port, so the Pod-based echoes listen on 127.0.0.x:8080 (one address per pod)
// and share a lock: one such stack at a time.

/// The Pod-based walkthroughs' pods listen on port 8080 of their own loopback addresses.
static PODS_8080: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running Pod `name` in `ns` with `labels` (flow YAML) at `ip`.
fn pod(ns: &str, name: &str, labels: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\nspec: {{containers: [{{name: app, image: colorapp}}]}}\nstatus: {{phase: Running, podIP: \"{ip}\", conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    )
}

/// Counts who answers `n` requests of `path` through the listener on `port`: the echo's name
/// for a 200, else `status N`.
async fn tally(client: &HttpClient, port: u16, path: &str, n: usize) -> BTreeMap<String, usize> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = client.get(addr, "", path, &[]).await.unwrap();
        let who = match r.echo_name() {
            Some(name) if r.status == 200 => name,
            _ => format!("status {}", r.status),
        };
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

/// howto-k8s-http2: the color router's http2 route splits 1:1:1 over red, blue and green,
/// whose listeners speak HTTP/2 (h2c); the client's sidecar is stood in for by a test ingress.
#[tokio::test]
async fn http2_weighted_targets_over_h2c() {
    let ns = "howto-k8s-http2";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let mut ups = Vec::new();
    let mut discovery = String::new();
    for color in ["red", "blue", "green"] {
        let up = Echo::start(color).unwrap();
        // The walkthrough's Service per node (`red`, port `http2`) selects the node's pods.
        discovery.push_str(&endpoints_named(ns, color, "http2", &up));
        ups.push(up);
    }
    let port = free_port();
    discovery.push_str(&test_ingress_for(ns, "color", port, "http2"));
    each_form(
        &manifests,
        &discovery,
        &format!("{ns}/test-ingress"),
        || async {
            let client = HttpClient::h2c();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            eventually("the color route", || async {
                let r = client.get(addr, "", "/", &[]).await?;
                ensure!(r.status == 200, "status {}: {}", r.status, r.body);
                Ok(())
            })
            .await;
            let r = client.get(addr, "", "/", &[]).await.unwrap();
            assert_eq!(
                r.echo_field("version").as_deref(),
                Some("HTTP/2.0"),
                "the upstream speaks HTTP/2: {}",
                r.body
            );
            // 1:1:1; each color's share of 90 is 30, and below 10 is beyond chance.
            let seen = tally(&client, port, "/", 90).await;
            assert_eq!(
                seen.keys().collect::<Vec<_>>(),
                ["blue", "green", "red"],
                "{seen:?}"
            );
            assert!(seen.values().all(|n| *n >= 10), "{seen:?}");
        },
    )
    .await;
}

/// howto-k8s-grpc: the router's grpc route matches `color.ColorService/GetColor` only; after
/// `manifests-all-methods.yaml` every method of the service is routed.
#[tokio::test]
async fn grpc_routes_by_service_and_method() {
    let ns = "howto-k8s-grpc";
    if corpus().is_none() {
        eprintln!("skipping: no corpus");
        return;
    }
    let server = Echo::start("server").unwrap();
    let port = free_port();
    // The walkthrough's Service `server` (port `http`) selects the server node's pods.
    let discovery = endpoints(ns, "server", &server) + &test_ingress_for(ns, "color", port, "grpc");
    for (file, routed, refused) in [
        (
            "manifests.yaml",
            &["/color.ColorService/GetColor"][..],
            &["/color.ColorService/SetColor", "/other.Service/GetColor"][..],
        ),
        (
            "manifests-all-methods.yaml",
            &[
                "/color.ColorService/GetColor",
                "/color.ColorService/SetColor",
            ][..],
            &["/other.Service/GetColor"][..],
        ),
    ] {
        let manifests = walkthrough(ns, file).unwrap();
        each_form(
            &manifests,
            &discovery,
            &format!("{ns}/test-ingress"),
            || async {
                eventually("the grpc route", || async {
                    let got = grpc_call_on(port, routed[0], &[]).await?;
                    ensure!(got == "hi", "{got}");
                    Ok(())
                })
                .await;
                for path in routed {
                    assert_eq!(
                        grpc_call_on(port, path, &[]).await.unwrap(),
                        "hi",
                        "{file}: {path}"
                    );
                }
                for path in refused {
                    let got = grpc_call_on(port, path, &[]).await;
                    assert!(got.is_err(), "{file}: {path} was routed: {got:?}");
                }
            },
        )
        .await;
    }
}

/// howto-k8s-outlier-detection: four colorapp pods; after one of them is faulted (the
/// walkthrough's `/fault`), its 5 server errors eject it (`maxServerErrors: 5`,
/// `maxEjectionPercent: 50`) and the other three serve everything.
#[tokio::test]
async fn outlier_detection_ejects_the_faulty_pod() {
    let ns = "howto-k8s-outlier-detection";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let _pods = PODS_8080.lock().await;
    let mut ups = Vec::new();
    let mut discovery = String::new();
    for i in 1..=4 {
        let ip = format!("127.0.0.{}", 40 + i);
        let name = format!("colorapp-{i}");
        ups.push(Echo::start_on(&name, SocketAddr::new(ip.parse().unwrap(), 8080)).unwrap());
        discovery.push_str(&pod(ns, &name, "{app: colorapp}", &ip));
    }
    let port = free_port();
    discovery.push_str(&test_ingress(ns, "colorapp", port));
    let ups = &ups;
    each_form(
        &manifests,
        &discovery,
        &format!("{ns}/test-ingress"),
        || async move {
            let client = HttpClient::http1();
            eventually("all four pods serve", || async {
                let seen = tally(&client, port, "/", 40).await;
                ensure!(
                    seen.len() == 4 && seen.keys().all(|k| k.starts_with("colorapp-")),
                    "{seen:?}"
                );
                Ok(())
            })
            .await;
            let faulty = &ups[0];
            HttpClient::http1()
                .get(faulty.addr, "", "/__echo/fault", &[])
                .await
                .unwrap();
            // Round robin over four: 40 requests give the faulty pod its 5 errors, and more.
            let seen = tally(&client, port, "/", 40).await;
            assert!(seen.get("status 500").is_some_and(|n| *n >= 5), "{seen:?}");
            let after = tally(&client, port, "/", 60).await;
            assert_eq!(after.get("status 500"), None, "ejected: {after:?}");
            assert_eq!(after.len(), 3, "the other three serve: {after:?}");
            HttpClient::http1()
                .get(faulty.addr, "", "/__echo/recover", &[])
                .await
                .unwrap();
        },
    )
    .await;
}

/// howto-k8s-timeout-policy: with the walkthrough's 60 s `perRequest` timeouts (route and node
/// listeners) a slow colorapp answer (16 s here, 45 s in the walkthrough) arrives; with
/// `manifests-no-timeouts.yaml`, App Mesh's 15 s default cuts it off with 504. The four stacks
/// (two files, each as published and converted) run at once, each on its own ingress port.
#[tokio::test]
async fn timeout_policy_lifts_the_15_s_default() {
    let ns = "howto-k8s-timeout-policy";
    if corpus().is_none() {
        eprintln!("skipping: no corpus");
        return;
    }
    let _pods = PODS_8080.lock().await;
    let mut ups = Vec::new();
    let mut pods = String::new();
    for (i, color) in ["blue", "red"].into_iter().enumerate() {
        let ip = format!("127.0.0.{}", 51 + i);
        ups.push(Echo::start_on(color, SocketAddr::new(ip.parse().unwrap(), 8080)).unwrap());
        pods.push_str(&pod(
            ns,
            &format!("colorapp-{color}"),
            &format!("{{app: colorapp, version: {color}}}"),
            &ip,
        ));
    }
    let mut runs = Vec::new();
    for (file, want) in [("manifests.yaml", 200), ("manifests-no-timeouts.yaml", 504)] {
        let manifests = walkthrough(ns, file).unwrap();
        for (label, text) in [
            ("unchanged", manifests.clone()),
            ("converted", converted(&manifests)),
        ] {
            let port = free_port();
            let discovery = pods.clone() + &test_ingress(ns, "colorapp", port);
            runs.push(async move {
                let stack = Stack::start(
                    &[("manifests.yaml", text), ("discovery.yaml", discovery)],
                    &format!("{ns}/test-ingress"),
                )
                .await;
                eventually("the colorapp route", || async move {
                    let got = who(port, "/", &[]).await?;
                    ensure!(got == "blue" || got == "red", "{got}");
                    Ok(())
                })
                .await;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let started = std::time::Instant::now();
                let r = HttpClient::http1()
                    .with_timeout(std::time::Duration::from_secs(30))
                    .get(addr, "", "/delay/16000", &[])
                    .await
                    .unwrap();
                assert_eq!(r.status, want, "{file} ({label}): {}", r.body);
                if want == 504 {
                    let took = started.elapsed();
                    assert!(
                        took >= std::time::Duration::from_secs(15),
                        "{file} ({label}): cut off after {took:?}, before 15 s"
                    );
                }
                drop(stack);
            });
        }
    }
    futures_util::future::join_all(runs).await;
}

// === Walkthroughs with TLS between sidecars ===
//
// howto-k8s-tls-file-based and howto-k8s-mtls-file-based: the front node calls the color
// service through its sidecar; blue and green serve their listener over TLS (mutual TLS in the
// second) with certificates from files under /certs, which the unchanged YAML names. Each
// sidecar runs in its own mount namespace with the test's certificates bind-mounted on /certs
// (App Mesh mounted them from Secrets); so these tests need root, and are skipped without.
// Pods listen on port 8080 of their own loopback address, as the nodes' listeners say.

/// The certificates the TLS walkthroughs name, issued for their nodes' DNS names: CA 1 signs
/// front's and blue's, CA 2 green's (so green is trusted only through the CA 1 + CA 2 bundle of
/// the walkthroughs' second step).
struct MeshCerts {
    dir: tempfile::TempDir,
    ca1: TestPki,
    _ca2: TestPki,
}

fn mesh_certs(ns: &str) -> MeshCerts {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = TestPki::new("ca_1");
    let ca2 = TestPki::new("ca_2");
    let put = |name: &str, from: &Path| {
        std::fs::copy(from, dir.path().join(name)).unwrap();
    };
    put("ca_1_cert.pem", &ca1.ca_path());
    let bundle = std::fs::read_to_string(ca1.ca_path()).unwrap()
        + &std::fs::read_to_string(ca2.ca_path()).unwrap();
    std::fs::write(dir.path().join("ca_1_ca_2_bundle.pem"), bundle).unwrap();
    for (file, ca, dns) in [
        (
            "colorapp-blue",
            &ca1,
            format!("color-blue.{ns}.svc.cluster.local"),
        ),
        (
            "colorapp-green",
            &ca2,
            format!("color-green.{ns}.svc.cluster.local"),
        ),
        ("front", &ca1, format!("front.{ns}.svc.cluster.local")),
    ] {
        let cert = ca.issue(file, &[&dns], &[]);
        put(&format!("{file}_cert_chain.pem"), &cert.chain);
        put(&format!("{file}_key.pem"), &cert.key);
    }
    MeshCerts {
        dir,
        ca1,
        _ca2: ca2,
    }
}

/// What the color service answers front's application for `color_header: <color>`, through
/// front's sidecar: the echo's name, or the status.
async fn through_front(front: &Sidecar, ns: &str, color: &str) -> anyhow::Result<String> {
    let r = HttpClient::http1()
        .get(
            front.outbound,
            &format!("color.{ns}.svc.cluster.local:8080"),
            "/",
            &[("color_header", color)],
        )
        .await?;
    Ok(match r.echo_name() {
        Some(name) if r.status == 200 => name,
        _ => format!("status {}", r.status),
    })
}

/// Runs one TLS walkthrough step (`file`) as published and as converted: front, blue, green and
/// red sidecars in front of their echoes; `want` maps each color to what front gets.
async fn tls_walkthrough(ns: &str, file: &str, want: &[(&str, &str)], mtls: bool) {
    let Some(manifests) = walkthrough(ns, file) else {
        eprintln!("skipping: no corpus");
        return;
    };
    if !can_mount() {
        eprintln!("skipping: mount namespaces need root (the YAML names /certs)");
        return;
    }
    let _pods = PODS_8080.lock().await;
    let certs = mesh_certs(ns);
    let pods = [("front", 80), ("blue", 81), ("green", 82), ("red", 83)];
    let mut apps = Vec::new();
    let mut discovery = String::new();
    for (name, last) in pods {
        let app = Echo::start(name).unwrap();
        let service = if name == "front" {
            "front".to_string()
        } else {
            format!("color-{name}")
        };
        let pod: SocketAddr = format!("127.0.0.{last}:8080").parse().unwrap();
        discovery.push_str(&slice(ns, &service, "http", pod));
        apps.push((name, pod, app));
    }
    for (label, text) in [
        ("unchanged", manifests.clone()),
        ("converted", converted(&manifests)),
    ] {
        eprintln!("{ns} {file}: {label}");
        let cp = ControlPlane::start(&[
            ("manifests.yaml", text),
            ("discovery.yaml", discovery.clone()),
        ])
        .await;
        let mut sidecars = Vec::new();
        for (name, pod, app) in &apps {
            let args = [
                "--inbound-address".to_string(),
                pod.ip().to_string(),
                "--app-port".into(),
                format!("8080={}", app.port()),
            ];
            let sidecar = Sidecar::start(
                &cp,
                &format!("sidecar-{name}"),
                &format!("{ns}/{name}"),
                &args,
                Some((certs.dir.path(), Path::new("/certs"))),
            )
            .await;
            sidecars.push(sidecar);
        }
        let front = &sidecars[0];
        let (color, expected) = want[0];
        eventually("front reaches the color service", || async move {
            let got = through_front(front, ns, color).await?;
            ensure!(got == expected, "{color}: {got}");
            Ok(())
        })
        .await;
        for (color, expected) in want {
            let got = through_front(front, ns, color).await.unwrap();
            assert_eq!(&got, expected, "{file} ({label}): color_header {color}");
        }
        // Blue's listener is TLS only: plaintext does not reach the application.
        let blue = apps[1].1;
        let plain = HttpClient::http1().get(blue, "", "/", &[]).await;
        assert!(
            plain.as_ref().map_or(true, |r| r.status != 200),
            "plaintext reached blue: {plain:?}"
        );
        // A TLS client without a client certificate: refused under mutual TLS only.
        let sni = format!("color-blue.{ns}.svc.cluster.local");
        let anonymous =
            match TlsConn::connect(blue, &sni, TlsOptions::new(&certs.ca1.ca_path())).await {
                Ok(mut conn) => conn.get(&sni, "/").await.map(|r| r.status),
                Err(e) => Err(e),
            };
        if mtls {
            assert!(
                anonymous.is_err(),
                "blue served a client without a certificate: {anonymous:?}"
            );
        } else {
            assert_eq!(anonymous.unwrap(), 200, "blue serves TLS clients");
        }
        drop(sidecars);
    }
}

/// howto-k8s-tls-file-based: front's client policy trusts CA 1, so blue (CA 1) answers over
/// TLS, green (CA 2) is refused until `manifests-add-green.yaml` trusts the bundle, and red,
/// whose listener has no TLS, cannot be reached under the enforced policy.
#[tokio::test]
async fn tls_file_based_between_sidecars() {
    let ns = "howto-k8s-tls-file-based";
    tls_walkthrough(
        ns,
        "manifests.yaml",
        &[
            ("blue", "blue"),
            ("green", "status 503"),
            ("red", "status 503"),
        ],
        false,
    )
    .await;
    tls_walkthrough(
        ns,
        "manifests-add-green.yaml",
        &[("green", "green"), ("blue", "blue"), ("red", "status 503")],
        false,
    )
    .await;
}

/// howto-k8s-mtls-file-based: as the TLS walkthrough, with front presenting its certificate and
/// blue and green requiring one from CA 1 with front's name.
#[tokio::test]
async fn mtls_file_based_between_sidecars() {
    let ns = "howto-k8s-mtls-file-based";
    tls_walkthrough(
        ns,
        "manifests.yaml",
        &[
            ("blue", "blue"),
            ("green", "status 503"),
            ("red", "status 503"),
        ],
        true,
    )
    .await;
    tls_walkthrough(
        ns,
        "manifests-add-green.yaml",
        &[("green", "green"), ("blue", "blue"), ("red", "status 503")],
        true,
    )
    .await;
}

/// howto-k8s-multiple-listeners: the gateway's listeners on 8080 and 8090 (as published) each
/// take their GatewayRoute to the router listener and node listener of the same port, so a
/// request on 8080 reaches the node's `main` port and one on 8090 its `misc` port.
#[tokio::test]
async fn multiple_listeners_keep_their_ports() {
    let ns = "colors";
    let Some(manifests) = walkthrough("howto-k8s-multiple-listeners", "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let main = Echo::start("main").unwrap();
    let misc = Echo::start("misc").unwrap();
    let discovery = format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: color-white-test\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: color-white}}\naddressType: IPv4\nports: [{{name: main, port: {}}}, {{name: misc, port: {}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n",
        main.port(),
        misc.port()
    );
    each_form(
        &manifests,
        &discovery,
        &format!("{ns}/colors-gw"),
        || async {
            expect(8080, &[("/", &[], "main")]).await;
            expect(8090, &[("/", &[], "misc"), ("/any/path", &[], "misc")]).await;
        },
    )
    .await;
}

/// howto-k8s-cloudmap, through front's sidecar: colorapp-blue and colorapp-red register their
/// pods in one Cloud Map service (`colorapp`), told apart by `attributes`; the router splits
/// 1:1 between the nodes, each reaching only its own pods (a third pod of the app, selected by
/// neither node, gets nothing).
#[tokio::test]
async fn cloudmap_nodes_share_a_service_by_attributes() {
    let ns = "howto-k8s-cloudmap";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let _pods = PODS_8080.lock().await;
    let mut apps = Vec::new();
    let mut discovery = String::new();
    for (i, version) in ["blue", "red", "green"].into_iter().enumerate() {
        let ip = format!("127.0.0.{}", 91 + i);
        apps.push(Echo::start_on(version, SocketAddr::new(ip.parse().unwrap(), 8080)).unwrap());
        discovery.push_str(&pod(
            ns,
            &format!("colorapp-{version}"),
            &format!("{{app: colorapp, version: {version}}}"),
            &ip,
        ));
    }
    for (label, text) in [
        ("unchanged", manifests.clone()),
        ("converted", converted(&manifests)),
    ] {
        eprintln!("{ns}: {label}");
        let cp = ControlPlane::start(&[
            ("manifests.yaml", text),
            ("discovery.yaml", discovery.clone()),
        ])
        .await;
        // Front's own listener (8080) on an address of its own.
        let inbound = ["--inbound-address".to_string(), "127.0.0.90".into()];
        let front =
            Sidecar::start(&cp, "sidecar-front", &format!("{ns}/front"), &inbound, None).await;
        let host = format!("colorapp.{ns}.svc.cluster.local:8080");
        let client = HttpClient::http1();
        let ask = || async {
            let r = client.get(front.outbound, &host, "/", &[]).await?;
            ensure!(r.status == 200, "status {}: {}", r.status, r.body);
            Ok(r.echo_name().unwrap_or_default())
        };
        eventually("front reaches colorapp", ask).await;
        let mut seen = BTreeMap::new();
        for _ in 0..40 {
            *seen.entry(ask().await.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(
            seen.keys().map(String::as_str).collect::<Vec<_>>(),
            ["blue", "red"],
            "{label}: {seen:?}"
        );
        assert!(
            seen.values().all(|n| *n >= 8),
            "{label}: 1:1 split: {seen:?}"
        );
    }
}

/// howto-k8s-envoy-logging-custom-format: front's sidecar logs each request in the node's text
/// format, blue's in its JSON format (both to stdout, as published).
#[tokio::test]
async fn envoy_logging_custom_format_in_sidecars() {
    let ns = "howto-k8s-envoy-logging-custom-format";
    let Some(manifests) = walkthrough(ns, "manifests.yaml") else {
        eprintln!("skipping: no corpus");
        return;
    };
    let _pods = PODS_8080.lock().await;
    let blue_app = Echo::start("blue").unwrap();
    let blue_pod: SocketAddr = "127.0.0.101:8080".parse().unwrap();
    let discovery = slice(ns, "color-blue", "http", blue_pod);
    for text in [manifests.clone(), converted(&manifests)] {
        let cp = ControlPlane::start(&[
            ("manifests.yaml", text),
            ("discovery.yaml", discovery.clone()),
        ])
        .await;
        let blue = Sidecar::start(
            &cp,
            "sidecar-blue",
            &format!("{ns}/blue"),
            &[
                "--inbound-address".into(),
                blue_pod.ip().to_string(),
                "--app-port".into(),
                format!("8080={}", blue_app.port()),
            ],
            None,
        )
        .await;
        let front = Sidecar::start(
            &cp,
            "sidecar-front",
            &format!("{ns}/front"),
            &["--inbound-address".into(), "127.0.0.100".into()],
            None,
        )
        .await;
        let host = format!("color.{ns}.svc.cluster.local:8080");
        eventually("front reaches blue", || async {
            let r = HttpClient::http1()
                .get(front.outbound, &host, "/", &[])
                .await?;
            ensure!(
                r.echo_name().as_deref() == Some("blue"),
                "{}: {}",
                r.status,
                r.body
            );
            Ok(())
        })
        .await;
        eventually(
            "both sidecars log the request in their node's format",
            || async {
                let front_log = front.proc.output();
                let blue_log = blue.proc.output();
                ensure!(
                    front_log
                        .lines()
                        .any(|l| l.starts_with("texttestingtesting HTTP/1.1:")),
                    "front:\n{front_log}"
                );
                ensure!(
                    blue_log
                        .lines()
                        .any(|l| l.contains(r#"{"protocol":"jsontestingtesting HTTP/1.1"}"#)),
                    "blue:\n{blue_log}"
                );
                Ok(())
            },
        )
        .await;
    }
}
