//! The App Mesh walkthroughs of the corpus (`/work/shared/corpus/appmesh`, `../shared/corpus` in
//! CI) that ingress through a VirtualGateway, loaded UNCHANGED plus EndpointSlice documents that
//! put their Services on `bowline-echo` upstreams, served by the real gateway; each request is one
//! the walkthrough's README sends, with the outcome it documents. Every walkthrough also runs from
//! the output of `meshctl convert`, which must route the same. Skipped when the corpus is absent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::ensure;
use bowline_tests::{Echo, HttpClient, Stack, binary, eventually, free_port};

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
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-test\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n",
        up.port()
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
    format!(
        "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualGateway\nmetadata: {{name: test-ingress, namespace: {ns}}}\nspec:\n  listeners:\n    - portMapping: {{port: {port}, protocol: http}}\n---\napiVersion: mesh.bowline.io/v1alpha1\nkind: GatewayRoute\nmetadata: {{name: test-ingress, namespace: {ns}}}\nspec:\n  httpRoute:\n    match: {{prefix: /}}\n    action:\n      target: {{virtualService: {{virtualServiceRef: {{name: {service}}}}}}}\n"
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
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9111").connect_lazy();
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
