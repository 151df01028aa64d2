//! End-to-end Gateway API (`gateway.networking.k8s.io/v1`): the real control plane with a
//! manifests directory holding the upstream conformance base (`base.yaml` of
//! `/work/shared/corpus/gateway-api`, listener ports moved to free ports, a GatewayClass of
//! Bowline's controller, EndpointSlices pointing at echo upstreams named after each Service) and
//! the real gateway started with `--gateway gateway-conformance-infra/same-namespace`.
//!
//! Data-driven: [`CASES`] is a table of conformance files and, for each, requests with what the
//! conformance suite expects of them (backend, status, path and host seen upstream, headers,
//! redirect location). Each file is written as the only route file in turn (the control plane
//! reloads it) and every request of it is checked (a mirror's copy is counted by its echo, and
//! weights 70/30/0 over 100 requests); [`OWN_GATEWAY_CASES`] does the same for files
//! that bring their own Gateway (listener hostnames, listener isolation), each served by a
//! gateway of its own. A GRPCRoute file is called with a tonic client over h2c. Also checked: the
//! status of `meshctl
//! validate` and the control plane's `/status`, an HTTPS listener with a TLS Secret, and the
//! example of docs/gateway-api.md.
//! Skipped when the corpus is absent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure};
use bowline_tests::{
    Echo, HttpClient, Reply, Stack, TestPki, TlsConn, TlsOptions, binary, conformance, eventually,
    free_port, tls_get, try_eventually,
};

fn corpus() -> Option<PathBuf> {
    let relative = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/gateway-api");
    [relative, PathBuf::from("/work/shared/corpus/gateway-api")]
        .into_iter()
        .find(|p| p.is_dir())
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: conformance-gatewayclass}\nspec: {controllerName: bowline.io/gateway-controller}\n";

/// The Services of `base.yaml` that tests send to, by namespace; each gets an echo named after
/// it.
const BACKENDS: [(&str, &str); 9] = [
    ("gateway-conformance-infra", "infra-backend-v1"),
    ("gateway-conformance-infra", "infra-backend-v2"),
    ("gateway-conformance-infra", "infra-backend-v3"),
    ("gateway-conformance-web-backend", "web-backend"),
    ("gateway-conformance-app-backend", "app-backend-v1"),
    ("gateway-conformance-app-backend", "app-backend-v2"),
    ("gateway-conformance-infra", "grpc-infra-backend-v1"),
    ("gateway-conformance-infra", "grpc-infra-backend-v2"),
    ("gateway-conformance-infra", "grpc-infra-backend-v3"),
];

/// `text` with the Gateways' listener ports 80 and 443 moved to `http` and `https`.
fn with_ports(text: &str, http: u16, https: u16) -> String {
    text.split("\n---\n")
        .map(|doc| {
            if doc.contains("\nkind: Gateway\n") {
                doc.replace("port: 80\n", &format!("port: {http}\n"))
                    .replace("port: 443\n", &format!("port: {https}\n"))
            } else {
                doc.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// An echo per backend Service, named after it.
fn backends() -> Vec<Echo> {
    BACKENDS
        .iter()
        .map(|(_, name)| Echo::start(name).unwrap())
        .collect()
}

/// One EndpointSlice per backend Service, its ports (named as the Service's) on the echo.
fn endpoints(echos: &[Echo]) -> String {
    let mut out = String::new();
    for ((ns, name), echo) in BACKENDS.iter().zip(echos) {
        let ports = if *name == "infra-backend-v1" {
            format!(
                "[{{name: first-port, port: {p}}}, {{name: second-port, port: {p}}}, {{name: third-port, port: {p}}}]",
                p = echo.port()
            )
        } else {
            format!("[{{port: {}}}]", echo.port())
        };
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: {ports}\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
        ));
    }
    out
}

/// A request and what the conformance suite expects of it.
struct Req {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    /// The echo that must answer.
    backend: Option<&'static str>,
    /// The path (and query) the backend must see.
    upstream_path: Option<&'static str>,
    upstream_host: Option<&'static str>,
    /// Request headers the backend must see (name, value); an empty value: absent.
    upstream_headers: &'static [(&'static str, &'static str)],
    response_headers: &'static [(&'static str, &'static str)],
    /// The end of the `Location` header; `{port}` stands for the listener's port.
    location: Option<&'static str>,
}

const fn get(path: &'static str, backend: &'static str) -> Req {
    Req {
        method: "GET",
        host: "",
        path,
        headers: &[],
        status: 200,
        backend: Some(backend),
        upstream_path: None,
        upstream_host: None,
        upstream_headers: &[],
        response_headers: &[],
        location: None,
    }
}

const fn status(path: &'static str, status: u16) -> Req {
    Req {
        status,
        backend: None,
        ..get(path, "")
    }
}

const fn redirect(path: &'static str, code: u16, location: &'static str) -> Req {
    Req {
        location: Some(location),
        ..status(path, code)
    }
}

const fn at(host: &'static str, path: &'static str, backend: &'static str) -> Req {
    Req {
        host,
        ..get(path, backend)
    }
}

const fn missing(host: &'static str, path: &'static str) -> Req {
    Req {
        host,
        ..status(path, 404)
    }
}

/// Conformance files served by a gateway of their own (each with the Gateway API conformance
/// feature it checks) (`--gateway namespace/name`: a Gateway of
/// the file or of `base.yaml`, whose listeners share the file's ports), and their requests.
const OWN_GATEWAY_CASES: &[(&str, &str, &str, &[Req])] = &[
    (
        "HTTPRoute",
        "httproute-hostname-intersection.yaml",
        "gateway-conformance-infra/httproute-hostname-intersection",
        &[
            at("very.specific.com", "/s1", "infra-backend-v1"),
            missing("non.matching.com", "/s1"),
            at("foo.wildcard.io", "/s2", "infra-backend-v2"),
            at("foo.bar.wildcard.io", "/s2", "infra-backend-v2"),
            missing("wildcard.io", "/s2"),
            at("very.specific.com", "/s3", "infra-backend-v3"),
            at("foo.anotherwildcard.io", "/s4", "infra-backend-v1"),
            missing("anotherwildcard.io", "/s4"),
            missing("specific.but.wrong.com", "/s5"),
            missing("wildcard.io", "/s5"),
        ],
    ),
    (
        "HTTPRoute",
        "httproute-cross-namespace.yaml",
        "gateway-conformance-infra/backend-namespaces",
        &[at("example.com", "/", "web-backend")],
    ),
    (
        "Gateway",
        "httproute-listener-hostname-matching.yaml",
        "gateway-conformance-infra/httproute-listener-hostname-matching",
        &[
            at("bar.com", "/", "infra-backend-v1"),
            at("foo.bar.com", "/", "infra-backend-v2"),
            at("baz.bar.com", "/", "infra-backend-v3"),
            at("boo.foo.com", "/", "infra-backend-v3"),
            at("multiple.prefixes.bar.com", "/", "infra-backend-v3"),
            missing("foo.com", "/"),
            missing("no.matching.host", "/"),
        ],
    ),
    (
        "GatewayHTTPListenerIsolation",
        "gateway-http-listener-isolation.yaml",
        "gateway-conformance-infra/http-listener-isolation",
        &[
            at("bar.com", "/empty-hostname", "infra-backend-v1"),
            missing("bar.com", "/wildcard-example-com"),
            at(
                "foo.example.com",
                "/wildcard-example-com",
                "infra-backend-v1",
            ),
            missing("foo.example.com", "/empty-hostname"),
            at(
                "bar.foo.example.com",
                "/wildcard-foo-example-com",
                "infra-backend-v1",
            ),
            missing("bar.foo.example.com", "/wildcard-example-com"),
            at(
                "abc.foo.example.com",
                "/abc-foo-example-com",
                "infra-backend-v1",
            ),
            missing("abc.foo.example.com", "/wildcard-foo-example-com"),
        ],
    ),
];

/// Conformance files and their requests (from the upstream conformance tests of each file), each
/// with the Gateway API conformance feature it checks (the report's row).
const CASES: &[(&str, &str, &[Req])] = &[
    (
        "HTTPRoute",
        "httproute-simple-same-namespace.yaml",
        &[get("/", "infra-backend-v1")],
    ),
    (
        "HTTPRoute",
        "httproute-exact-path-matching.yaml",
        &[
            get("/one", "infra-backend-v1"),
            get("/two", "infra-backend-v2"),
            status("/one/example", 404),
            status("/", 404),
        ],
    ),
    (
        "HTTPRoute",
        "httproute-matching.yaml",
        &[
            get("/", "infra-backend-v1"),
            get("/example", "infra-backend-v1"),
            get("/v2", "infra-backend-v2"),
            get("/v2/example", "infra-backend-v2"),
            Req {
                headers: &[("version", "two")],
                ..get("/", "infra-backend-v2")
            },
        ],
    ),
    (
        "HTTPRoute",
        "httproute-path-match-order.yaml",
        &[
            get("/match", "infra-backend-v1"),
            get("/match/exact", "infra-backend-v2"),
            get("/match/exact/one", "infra-backend-v3"),
            get("/match/", "infra-backend-v3"),
            get("/match/exact/two", "infra-backend-v3"),
            get("/match/prefix", "infra-backend-v1"),
            get("/match/prefixone", "infra-backend-v3"),
            get("/match/prefix/one", "infra-backend-v2"),
            get("/match/prefix/one/two", "infra-backend-v2"),
        ],
    ),
    (
        "HTTPRouteQueryParamMatching",
        "httproute-query-param-matching.yaml",
        &[
            get("/?animal=whale", "infra-backend-v1"),
            get("/?animal=dolphin", "infra-backend-v2"),
            get("/?animal=dolphin&color=blue", "infra-backend-v3"),
            get("/?ANIMAL=Whale", "infra-backend-v3"),
            get("/path1?animal=whale", "infra-backend-v1"),
            status("/?animal=horse", 404),
        ],
    ),
    (
        "HTTPRouteMethodMatching",
        "httproute-method-matching.yaml",
        &[
            Req {
                method: "POST",
                ..get("/", "infra-backend-v1")
            },
            get("/", "infra-backend-v2"),
            Req {
                method: "HEAD",
                ..status("/", 404)
            },
        ],
    ),
    (
        "HTTPRoutePathRewrite",
        "httproute-rewrite-path.yaml",
        &[
            Req {
                upstream_path: Some("/one/two"),
                ..get("/prefix/one/two", "infra-backend-v1")
            },
            Req {
                upstream_path: Some("/three"),
                ..get("/strip-prefix/three", "infra-backend-v1")
            },
            Req {
                upstream_path: Some("/"),
                ..get("/strip-prefix", "infra-backend-v1")
            },
            Req {
                upstream_path: Some("/one"),
                ..get("/full/one/two", "infra-backend-v1")
            },
        ],
    ),
    (
        "HTTPRouteHostRewrite",
        "httproute-rewrite-host.yaml",
        &[Req {
            host: "rewrite.example",
            upstream_host: Some("one.example.org"),
            ..get("/one", "infra-backend-v1")
        }],
    ),
    (
        "HTTPRoute",
        "httproute-request-header-modifier.yaml",
        &[
            Req {
                upstream_headers: &[("x-header-set", "set-overwrites-values")],
                headers: &[("X-Header-Set", "some-other-value")],
                ..get("/set", "infra-backend-v1")
            },
            Req {
                upstream_headers: &[("x-header-remove", "")],
                headers: &[("X-Header-Remove", "val")],
                ..get("/remove", "infra-backend-v1")
            },
        ],
    ),
    (
        "HTTPRouteResponseHeaderModification",
        "httproute-response-header-modifier.yaml",
        &[Req {
            response_headers: &[("x-header-set", "set-overwrites-values")],
            ..get("/set", "infra-backend-v1")
        }],
    ),
    (
        "HTTPRoute",
        "httproute-redirect-host-and-status.yaml",
        &[
            redirect(
                "/hostname-redirect",
                302,
                "//example.org:{port}/hostname-redirect",
            ),
            redirect(
                "/host-and-status",
                301,
                "//example.org:{port}/host-and-status",
            ),
        ],
    ),
    (
        "HTTPRoutePathRedirect",
        "httproute-redirect-path.yaml",
        &[redirect(
            "/original-prefix/lemon",
            302,
            "/replacement-prefix/lemon",
        )],
    ),
    (
        "HTTPRoutePortRedirect",
        "httproute-redirect-port.yaml",
        &[
            redirect("/port", 302, "http://example.com:8083/port"),
            redirect(
                "/port-and-host",
                302,
                "http://example.org:8083/port-and-host",
            ),
            redirect(
                "/port-and-status",
                301,
                "http://example.com:8083/port-and-status",
            ),
            redirect(
                "/port-and-host-and-status",
                302,
                "http://example.org:8083/port-and-host-and-status",
            ),
        ],
    ),
    (
        // Without a port, the scheme's well-known port, left out of the Location.
        "HTTPRouteSchemeRedirect",
        "httproute-redirect-scheme.yaml",
        &[
            redirect("/scheme", 302, "https://example.com/scheme"),
            redirect(
                "/scheme-and-host",
                302,
                "https://example.org/scheme-and-host",
            ),
            redirect(
                "/scheme-and-status",
                301,
                "https://example.com/scheme-and-status",
            ),
            redirect(
                "/scheme-and-host-and-status",
                302,
                "https://example.org/scheme-and-host-and-status",
            ),
        ],
    ),
    (
        // `/delay/MS` makes the echo wait (its path segments); the timeouts are 500ms.
        "HTTPRouteRequestTimeout",
        "httproute-timeout-request.yaml",
        &[
            status("/request-timeout/delay/1000", 504),
            get("/disable-request-timeout/delay/1000", "infra-backend-v1"),
        ],
    ),
    (
        "HTTPRouteBackendTimeout",
        "httproute-timeout-backend-request.yaml",
        &[
            status("/backend-timeout/delay/1000", 504),
            get("/disable-backend-timeout/delay/1000", "infra-backend-v1"),
        ],
    ),
    (
        "HTTPRoute",
        "httproute-invalid-nonexistent-backendref.yaml",
        &[status("/", 500)],
    ),
    (
        "HTTPRoute",
        "httproute-invalid-backendref-unknown-kind.yaml",
        &[status("/", 500)],
    ),
    (
        "ReferenceGrant",
        "httproute-invalid-cross-namespace-backend-ref.yaml",
        &[status("/", 500)],
    ),
    (
        "ReferenceGrant",
        "httproute-reference-grant.yaml",
        &[get("/", "web-backend")],
    ),
    (
        "HTTPRoute",
        "httproute-omitted-backendrefs.yaml",
        &[
            status("/omitted-no-forward", 500),
            status("/empty-no-forward", 500),
            get("/", "infra-backend-v1"),
        ],
    ),
];

/// The suite of the conformance report these tables feed (`cargo xtask conformance`).
const SUITE: &str = "gateway-api";

/// Records the outcome of one case for `feature`, then fails the test if it failed.
fn checked(feature: &str, what: &str, result: anyhow::Result<()>) {
    conformance::record(SUITE, feature, what, result.is_ok());
    if let Err(e) = result {
        panic!("timed out waiting for {what}: {e:#}");
    }
}

/// Checks one request; the error says what differs.
async fn check(client: &HttpClient, gw: SocketAddr, r: &Req) -> anyhow::Result<()> {
    let host = if r.host.is_empty() {
        "example.com"
    } else {
        r.host
    };
    let reply: Reply = client
        .request(r.method, gw, host, r.path, r.headers)
        .await?;
    ensure!(
        reply.status == r.status,
        "status {} != {}: {reply:?}",
        reply.status,
        r.status
    );
    if let Some(b) = r.backend {
        ensure!(
            reply.echo_name().as_deref() == Some(b),
            "backend: {reply:?}"
        );
    }
    if let Some(p) = r.upstream_path {
        ensure!(
            reply.echo_field("path").as_deref() == Some(p),
            "upstream path: {reply:?}"
        );
    }
    if let Some(h) = r.upstream_host {
        ensure!(
            reply.echo_field("host").as_deref() == Some(h),
            "upstream host: {reply:?}"
        );
    }
    let json = reply.json().unwrap_or_default();
    for (name, value) in r.upstream_headers {
        let got = json["headers"][*name][0].as_str().unwrap_or_default();
        ensure!(
            got == *value,
            "upstream header {name}: {got:?} != {value:?}: {reply:?}"
        );
    }
    for (name, value) in r.response_headers {
        let got = reply
            .headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ensure!(got == *value, "response header {name}: {got:?}: {reply:?}");
    }
    if let Some(l) = r.location {
        let got = reply
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Without a port in the filter, the redirect keeps the listener's port.
        let l = l.replace("{port}", &gw.port().to_string());
        if !got.ends_with(&l) {
            bail!("location {got:?} does not end with {l:?}");
        }
    }
    Ok(())
}

/// One unary gRPC call of `path` with a `google.protobuf.StringValue` message (`bowline-echo`
/// echoes it back).
async fn grpc_call(
    channel: &tonic::transport::Channel,
    path: &'static str,
) -> anyhow::Result<tonic::Response<String>> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await?;
    Ok(grpc
        .unary(
            tonic::Request::new("hello".to_string()),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<String, String>::default(),
        )
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_tables() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: no gateway-api corpus");
        return;
    };
    let echos = backends();
    let (http, https) = (free_port(), free_port());
    let base_text = std::fs::read_to_string(dir.join("base.yaml")).unwrap();
    let files = [
        ("class.yaml", CLASS.to_string()),
        ("base.yaml", with_ports(&base_text, http, https)),
        ("endpoints.yaml", endpoints(&echos)),
    ];
    let stack = Stack::start_gateway_with(
        &files,
        &["--gateway", "gateway-conformance-infra/same-namespace"],
    )
    .await;
    let gw = addr(http);
    let client = HttpClient::http1();
    for (feature, file, requests) in CASES {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        // Once the gateway's config version changes, no request can be answered by the
        // previous file's routes.
        let before = stack.gateway_version().await.unwrap();
        stack.write_manifest("case.yaml", &text);
        eventually(&format!("the gateway takes up {file}"), || async {
            let now = stack.gateway_version().await?;
            ensure!(now != before, "still version {now}");
            anyhow::Ok(())
        })
        .await;
        for r in *requests {
            let what = format!("{file}: {} {}", r.method, r.path);
            checked(
                feature,
                &what,
                try_eventually(|| check(&client, gw, r)).await,
            );
        }
    }

    // RequestMirror: v1 answers, v2 gets a copy.
    let text = std::fs::read_to_string(dir.join("httproute-request-mirror.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    let mirror = &echos[1];
    let before = mirror.stat("requests").await.unwrap();
    let mirrored = try_eventually(|| async {
        check(&client, gw, &get("/mirror", "infra-backend-v1")).await?;
        let now = mirror.stat("requests").await?;
        ensure!(
            now > before,
            "infra-backend-v2 saw no copy ({now} requests)"
        );
        anyhow::Ok(())
    })
    .await;
    checked(
        "HTTPRouteRequestMirror",
        "httproute-request-mirror.yaml: /mirror is mirrored to infra-backend-v2",
        mirrored,
    );

    // Several RequestMirrors: v1 answers, v2 and v3 each get a copy.
    let text =
        std::fs::read_to_string(dir.join("httproute-request-multiple-mirrors.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    let mirrors = [&echos[1], &echos[2]];
    let mut before = Vec::new();
    for m in mirrors {
        before.push(m.stat("requests").await.unwrap());
    }
    let mirrored = try_eventually(|| async {
        check(&client, gw, &get("/multi-mirror", "infra-backend-v1")).await?;
        for (m, was) in mirrors.iter().zip(&before) {
            let now = m.stat("requests").await?;
            ensure!(now > *was, "{} saw no copy ({now} requests)", m.name);
        }
        anyhow::Ok(())
    })
    .await;
    checked(
        "HTTPRouteRequestMultipleMirrors",
        "httproute-request-multiple-mirrors.yaml: /multi-mirror is mirrored to infra-backend-v2 and v3",
        mirrored,
    );

    // Mirrors of a share of the requests: 20% (`percent`) and 25/50 (`fraction`) of 200
    // requests reach infra-backend-v2, within a tolerance of about 5 standard deviations.
    let text =
        std::fs::read_to_string(dir.join("httproute-request-percentage-mirror.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    for (path, share) in [("/percent-mirror", 20), ("/percent-mirror-fraction", 50)] {
        let req = get(path, "infra-backend-v1");
        eventually(&format!("{path} is served"), || check(&client, gw, &req)).await;
        let before = mirror.stat("requests").await.unwrap();
        for _ in 0..200 {
            check(&client, gw, &req).await.unwrap();
        }
        let (low, high) = (2 * share - 30, 2 * share + 30);
        let copies = try_eventually(|| async {
            let copies = mirror.stat("requests").await? - before;
            ensure!(copies >= low, "{copies} copies of 200, fewer than {low}");
            anyhow::Ok(copies)
        })
        .await;
        let result = match copies {
            Ok(n) if n > high => Err(anyhow::anyhow!("{n} copies of 200, more than {high}")),
            other => other.map(|_| ()),
        };
        checked(
            "HTTPRouteRequestPercentageMirror",
            &format!("httproute-request-percentage-mirror.yaml: {path} mirrors {share}%"),
            result,
        );
    }

    // Weighted backends: 70/30/0, within the conformance suite's tolerance.
    let text = std::fs::read_to_string(dir.join("httproute-weight.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    eventually("the weighted route is served", || async {
        let r = client.get(gw, "example.com", "/", &[]).await?;
        let name = r.echo_name().unwrap_or_default();
        ensure!(
            name == "infra-backend-v1" || name == "infra-backend-v2",
            "{r:?}"
        );
        // The previous file's route is gone once v2 answers too.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let r = client.get(gw, "example.com", "/", &[]).await?;
            seen.insert(r.echo_name().unwrap_or_default());
        }
        ensure!(seen.contains("infra-backend-v2"), "{seen:?}");
        anyhow::Ok(())
    })
    .await;
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..100 {
        let r = client.get(gw, "example.com", "/", &[]).await.unwrap();
        *counts.entry(r.echo_name().unwrap_or_default()).or_default() += 1;
    }
    let n = |b: &str| counts.get(b).copied().unwrap_or(0);
    conformance::record(
        SUITE,
        "HTTPRoute",
        "httproute-weight.yaml: weights 70/30/0 over 100 requests",
        (60..=80).contains(&n("infra-backend-v1"))
            && (20..=40).contains(&n("infra-backend-v2"))
            && n("infra-backend-v3") == 0,
    );
    assert!((60..=80).contains(&n("infra-backend-v1")), "{counts:?}");
    assert!((20..=40).contains(&n("infra-backend-v2")), "{counts:?}");
    assert_eq!(n("infra-backend-v3"), 0, "{counts:?}");

    // A rule whose backends are half unresolvable: their share answers 500 (the spec's
    // "requests that would have been sent to an invalid backend receive 500").
    stack.write_manifest(
        "case.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: mixed-backends, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [mixed.example.com]\n  rules:\n    - backendRefs:\n        - {name: infra-backend-v1, port: 8080, weight: 1}\n        - {name: does-not-exist, port: 8080, weight: 1}\n",
    );
    eventually("the mixed route is served", || async {
        // The previous file's route (70/30 over v1 and v2) is gone once no v2 answers and
        // some 500 does.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let r = client.get(gw, "mixed.example.com", "/", &[]).await?;
            seen.insert(
                r.echo_name()
                    .filter(|_| r.status == 200)
                    .unwrap_or(r.status.to_string()),
            );
        }
        ensure!(
            seen.contains("500") && !seen.contains("infra-backend-v2"),
            "{seen:?}"
        );
        anyhow::Ok(())
    })
    .await;
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..100 {
        let r = client.get(gw, "mixed.example.com", "/", &[]).await.unwrap();
        let who = match r.echo_name() {
            Some(name) if r.status == 200 => name,
            _ => format!("status {}", r.status),
        };
        *counts.entry(who).or_default() += 1;
    }
    let n = |b: &str| counts.get(b).copied().unwrap_or(0);
    let ok = (30..=70).contains(&n("status 500")) && n("status 500") + n("infra-backend-v1") == 100;
    conformance::record(
        SUITE,
        "HTTPRoute",
        "mixed.example.com: backendRefs 1:1 valid and unresolvable: about half answer 500",
        ok,
    );
    assert!(ok, "{counts:?}");

    // HTTPRouteBackendProtocolH2C: the Service port's appProtocol kubernetes.io/h2c makes the
    // backend speak HTTP/2 without TLS.
    let text = std::fs::read_to_string(dir.join("httproute-backend-protocol-h2c.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    let got = try_eventually(|| async {
        let r = client.get(gw, "example.com", "/", &[]).await?;
        ensure!(
            r.echo_name().as_deref() == Some("infra-backend-v1")
                && r.echo_field("version").as_deref() == Some("HTTP/2.0"),
            "{r:?}"
        );
        anyhow::Ok(())
    })
    .await;
    checked(
        "HTTPRouteBackendProtocolH2C",
        "httproute-backend-protocol-h2c.yaml: / reaches infra-backend-v1 over h2c",
        got,
    );

    // GRPCRoute: exact service/method matches over h2c to h2c backends.
    let text = std::fs::read_to_string(dir.join("grpcroute-exact-method-matching.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw}"))
        .unwrap()
        .connect_lazy();
    for (path, backend) in [
        (
            "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo",
            "grpc-infra-backend-v1",
        ),
        (
            "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo",
            "grpc-infra-backend-v2",
        ),
    ] {
        let served = try_eventually(|| async {
            let r = grpc_call(&channel, path).await?;
            let name = r
                .metadata()
                .get("x-echo-name")
                .and_then(|v| v.to_str().ok());
            ensure!(name == Some(backend), "{:?}", r.metadata());
            ensure!(r.get_ref() == "hello", "{:?}", r.get_ref());
            anyhow::Ok(())
        })
        .await;
        checked(
            "GRPCRoute",
            &format!("grpcroute-exact-method-matching.yaml: gRPC {path} is served by {backend}"),
            served,
        );
    }

    // The status as the control plane computes it.
    let text =
        std::fs::read_to_string(dir.join("httproute-invalid-nonexistent-backendref.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    eventually("/status reports BackendNotFound", || async {
        let r = client.get(stack.cp_admin, "", "/status", &[]).await?;
        ensure!(r.status == 200, "{r:?}");
        let j = r.json().unwrap_or_default();
        let route = j["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "invalid-nonexistent-backend-ref");
        let Some(route) = route else {
            bail!("no route status: {j}")
        };
        let conds = &route["parents"][0]["conditions"];
        ensure!(
            conds[0]["type"] == "Accepted" && conds[0]["status"] == "True",
            "{route}"
        );
        ensure!(conds[1]["reason"] == "BackendNotFound", "{route}");
        anyhow::Ok(())
    })
    .await;

    // meshctl validate prints the same conditions.
    let out = std::process::Command::new(binary("meshctl"))
        .args(["validate", "-f"])
        .arg(&stack.manifests)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("HTTPRoute gateway-conformance-infra/invalid-nonexistent-backend-ref: parent gateway-conformance-infra/same-namespace: ResolvedRefs=False (BackendNotFound)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Gateway gateway-conformance-infra/same-namespace: Programmed=True"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_tables_own_gateways() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: no gateway-api corpus");
        return;
    };
    let echos = backends();
    let base_text = std::fs::read_to_string(dir.join("base.yaml")).unwrap();
    let client = HttpClient::http1();
    for (feature, file, gateway, requests) in OWN_GATEWAY_CASES {
        let (http, https) = (free_port(), free_port());
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let files = [
            ("class.yaml", CLASS.to_string()),
            ("base.yaml", with_ports(&base_text, http, https)),
            ("endpoints.yaml", endpoints(&echos)),
            ("case.yaml", with_ports(&text, http, https)),
        ];
        let stack = Stack::start_gateway_with(&files, &["--gateway", gateway]).await;
        for r in *requests {
            let what = format!("{file}: {} {}{}", r.method, r.host, r.path);
            checked(
                feature,
                &what,
                try_eventually(|| check(&client, addr(http), r)).await,
            );
        }
        drop(stack);
    }
}

/// The example of docs/gateway-api.md: its first `yaml` block, with the listener port and the
/// endpoint port replaced by free ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_example() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/gateway-api.md"),
    )
    .unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block") + 8;
    let end = start + doc[start..].find("```").unwrap();
    let echo = Echo::start("store-v1").unwrap();
    let port = free_port();
    let example = doc[start..end]
        .replace("port: 8080", &format!("port: {port}"))
        .replace("port: 9001", &format!("port: {}", echo.port()));
    let stack =
        Stack::start_gateway_with(&[("example.yaml", example)], &["--gateway", "shop/web"]).await;
    let client = HttpClient::http1();
    let gw = addr(port);
    eventually("the documented route", || async {
        let r = client
            .get(gw, "shop.example.com", "/store/items", &[])
            .await?;
        ensure!(r.echo_name().as_deref() == Some("store-v1"), "{r:?}");
        ensure!(r.echo_field("path").as_deref() == Some("/items"), "{r:?}");
        let r = client.get(gw, "shop.example.com", "/other", &[]).await?;
        ensure!(r.status == 404, "{r:?}");
        anyhow::Ok(())
    })
    .await;
    drop(stack);
}

/// An HTTPS listener terminates TLS with the `kubernetes.io/tls` Secret of its certificateRefs
/// (chosen by SNI for the listener's hostname) and routes like an HTTP one; a certificateRef to
/// another namespace without a ReferenceGrant leaves its listener unprogrammed
/// (`ResolvedRefs=False`, `RefNotPermitted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_with_a_secret() {
    let pki = TestPki::new("gateway-api-ca");
    let cert = pki.issue("secure", &["secure.example.com"], &[]);
    let pem = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let echo = Echo::start("secure").unwrap();
    let (https, other) = (free_port(), free_port());
    let manifests = format!(
        r#"{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: shop}}
spec:
  gatewayClassName: conformance-gatewayclass
  listeners:
  - name: https
    port: {https}
    protocol: HTTPS
    hostname: secure.example.com
    tls: {{certificateRefs: [{{name: secure-tls}}]}}
  - name: foreign
    port: {other}
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: secure-tls, namespace: elsewhere}}]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: secure-tls, namespace: shop}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{chain}  tls.key: |
{key}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: shop}}
spec:
  parentRefs: [{{name: web, sectionName: https}}]
  rules: [{{backendRefs: [{{name: secure, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: shop}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: secure-1, namespace: shop, labels: {{kubernetes.io/service-name: secure}}}}
addressType: IPv4
ports: [{{port: {upstream}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"#,
        chain = pem(&cert.chain),
        key = pem(&cert.key),
        upstream = echo.port(),
    );
    let stack =
        Stack::start_gateway_with(&[("web.yaml", manifests)], &["--gateway", "shop/web"]).await;
    let ca = pki.ca_path();
    eventually("HTTPS is served with the Secret's certificate", || async {
        let r = tls_get(
            addr(https),
            "secure.example.com",
            "secure.example.com",
            "/",
            TlsOptions::new(&ca),
        )
        .await?;
        ensure!(r.echo_name().as_deref() == Some("secure"), "{r:?}");
        anyhow::Ok(())
    })
    .await;
    let client = HttpClient::http1();
    let r = client
        .get(stack.cp_admin, "", "/status", &[])
        .await
        .unwrap();
    let j = r.json().unwrap();
    let gw = j["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Gateway" && s["name"] == "web")
        .unwrap();
    let foreign = &gw["listeners"][1];
    let resolved = foreign["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved["reason"], "RefNotPermitted", "{gw}");
    assert!(
        TlsConn::connect(addr(other), "x.example.com", TlsOptions::new(&ca))
            .await
            .is_err(),
        "the listener without a usable certificate is not served"
    );
}
