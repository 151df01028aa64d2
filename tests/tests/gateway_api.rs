//! End-to-end Gateway API (`gateway.networking.k8s.io/v1`): the real control plane with a
//! manifests directory holding the upstream conformance base (`base.yaml` of
//! `/work/shared/corpus/gateway-api`, listener ports moved to free ports, a GatewayClass of
//! Bowline's controller, EndpointSlices pointing at echo upstreams named after each Service) and
//! the real gateway started with `--gateway gateway-conformance-infra/same-namespace`.
//!
//! Data-driven: [`CASES`] is a table of conformance files and, for each, requests with what the
//! conformance suite expects of them (backend, status, path and host seen upstream, headers,
//! redirect location, CORS headers). Each file is written as the only route file in turn (the
//! control plane reloads it; the requests wait for the gateway's new config version) and every
//! request of it is checked (a mirror's copy is counted by its echo, and weights 70/30/0 over
//! 100 requests, or 500 gRPC calls); [`OWN_GATEWAY_CASES`] does the same for files served by a
//! Gateway other than `same-namespace` (their own: listener hostnames, ports, isolation; or
//! another of `base.yaml`: HTTPS listeners with the Secret the suite creates, a second Gateway),
//! each by a gateway of its own, listener ports 80, 443, 8080 and 8090 moved to free ports. A
//! GRPCRoute case is a call with a tonic client over h2c. Also checked: the status of `meshctl
//! validate` and the control plane's `/status`, an HTTPS listener with a TLS Secret, and the
//! example of docs/gateway-api.md.
//! Skipped when the corpus is absent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
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

/// Free ports standing for the listener ports of the manifests (80, 443, 8080, 8090).
struct Ports([(u16, u16); 4]);

impl Ports {
    fn new() -> Ports {
        Ports([80, 443, 8080, 8090].map(|p| (p, free_port())))
    }

    /// The free port standing for listener port `port`.
    fn of(&self, port: u16) -> u16 {
        self.0
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, free)| *free)
            .unwrap_or_else(|| panic!("no free port stands for listener port {port}"))
    }

    /// `text` with the listener ports of its Gateways, and the `port` of its routes'
    /// `parentRefs` (a listener's), moved to the free ones; the other ports (backendRefs,
    /// filters, Services) are left as written.
    fn apply(&self, text: &str) -> String {
        text.split("\n---\n")
            .map(|doc| {
                let gateway = doc.contains("\nkind: Gateway\n");
                // The indentation of the `parentRefs:` key whose block the line is in.
                let mut parent_refs: Option<usize> = None;
                doc.split('\n')
                    .map(|line| {
                        let body = line.trim_start();
                        let indent = line.len() - body.len();
                        if parent_refs
                            .is_some_and(|i| indent < i || (indent == i && !body.starts_with("- ")))
                        {
                            parent_refs = None;
                        }
                        if body.starts_with("parentRefs:") {
                            parent_refs = Some(indent);
                        }
                        let listener = gateway || parent_refs.is_some();
                        let port = body
                            .trim_start_matches("- ")
                            .strip_prefix("port: ")
                            .and_then(|p| p.parse::<u16>().ok())
                            .filter(|p| listener && self.0.iter().any(|(from, _)| from == p));
                        match port {
                            Some(p) => line
                                .replace(&format!("port: {p}"), &format!("port: {}", self.of(p))),
                            None => line.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
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
    /// The Host header (`example.com` when empty); `{port}` stands for the listener's free port.
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    /// Other statuses the suite accepts besides `status` (CORS preflights: 200 or 204).
    or_status: &'static [u16],
    /// The echo that must answer.
    backend: Option<&'static str>,
    /// The path (and query) the backend must see.
    upstream_path: Option<&'static str>,
    upstream_host: Option<&'static str>,
    /// Request headers the backend must see (name, value; several values joined with `,`); an
    /// empty value: absent.
    upstream_headers: &'static [(&'static str, &'static str)],
    /// Response headers (name, value; several values joined with `,`); an empty value: absent.
    response_headers: &'static [(&'static str, &'static str)],
    /// Response headers that must have one of these values, whitespace aside (the suite's
    /// `ValidHeaderValues` with `IgnoreWhitespace`).
    response_header_options: &'static [(&'static str, &'static [&'static str])],
    /// The end of the `Location` header; `{port}` stands for the listener's free port.
    location: Option<&'static str>,
    /// The listener port of the manifests the request goes to (moved to a free one, see
    /// [`Ports`]).
    port: u16,
    /// Sent over TLS with this SNI, trusting the test CA that issued the listeners' certificate.
    sni: Option<&'static str>,
    /// A unary gRPC call of `path` over h2c instead (see [`check_grpc`]): `headers` are its
    /// metadata, a non-empty `host` its authority; `status` 200 stands for OK and 404 for the
    /// UNIMPLEMENTED the suite expects of a call no route matches.
    grpc: bool,
}

const fn get(path: &'static str, backend: &'static str) -> Req {
    Req {
        method: "GET",
        host: "",
        path,
        headers: &[],
        status: 200,
        or_status: &[],
        backend: Some(backend),
        upstream_path: None,
        upstream_host: None,
        upstream_headers: &[],
        response_headers: &[],
        response_header_options: &[],
        location: None,
        port: 80,
        sni: None,
        grpc: false,
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

/// A GET over TLS to the HTTPS listeners (port 443 of the manifests), with SNI and Host `host`.
const fn tls(host: &'static str, path: &'static str, backend: &'static str) -> Req {
    Req {
        sni: Some(host),
        port: 443,
        ..at(host, path, backend)
    }
}

/// A CORS preflight (`OPTIONS`) the gateway answers itself: 200 unless `or_status` says more.
const fn preflight(path: &'static str) -> Req {
    Req {
        method: "OPTIONS",
        ..status(path, 200)
    }
}

/// A preflight to `/cors-1` of `httproute-cors.yaml` from an allowed origin (a literal), and
/// every header the suite expects of its answer.
macro_rules! cors_1_preflight {
    ($origin:literal) => {
        Req {
            headers: &[
                ("Origin", $origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
            or_status: &[204],
            response_headers: &[
                ("access-control-allow-origin", $origin),
                ("access-control-max-age", "3600"),
                ("access-control-allow-credentials", "true"),
            ],
            response_header_options: &[
                (
                    "access-control-allow-methods",
                    &["GET, OPTIONS", "OPTIONS, GET"],
                ),
                (
                    "access-control-allow-headers",
                    &["x-header-1, x-header-2", "x-header-2, x-header-1"],
                ),
                (
                    "access-control-expose-headers",
                    &["x-header-3, x-header-4", "x-header-4, x-header-3"],
                ),
            ],
            ..preflight("/cors-1")
        }
    };
}

/// A GET to `/detect-misdirected-requests` over TLS with SNI `sni` and Host `host`.
const fn misdirected(sni: &'static str, host: &'static str, code: u16) -> Req {
    Req {
        host,
        ..tls_status(sni, "/detect-misdirected-requests", code)
    }
}

/// The same, answered by `backend`.
const fn directed(sni: &'static str, host: &'static str, backend: &'static str) -> Req {
    Req {
        host,
        ..tls(sni, "/detect-misdirected-requests", backend)
    }
}

/// A GET over TLS with SNI and Host `host` that answers `code`.
const fn tls_status(host: &'static str, path: &'static str, code: u16) -> Req {
    Req {
        status: code,
        backend: None,
        ..tls(host, path, "")
    }
}

/// The gRPC methods of the conformance suite's echo service.
const ECHO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo";
const ECHO_TWO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo";

/// A gRPC call of `method` (a path such as [`ECHO`]) that `backend` must answer.
const fn grpc(method: &'static str, backend: &'static str) -> Req {
    Req {
        method: "POST",
        grpc: true,
        ..get(method, backend)
    }
}

/// A gRPC call of `method` that no route matches: UNIMPLEMENTED.
const fn grpc_unrouted(method: &'static str) -> Req {
    Req {
        status: 404,
        backend: None,
        ..grpc(method, "")
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
    (
        "GatewayHTTPListenerIsolation",
        "gateway-http-listener-isolation-with-hostname-intersection.yaml",
        "gateway-conformance-infra/http-listener-isolation-with-hostname-intersection",
        &[
            at("bar.com", "/empty-hostname", "infra-backend-v1"),
            missing("bar.com", "/wildcard-example-com"),
            missing("bar.com", "/wildcard-foo-example-com"),
            missing("bar.com", "/abc-foo-example-com"),
            missing("bar.example.com", "/empty-hostname"),
            at(
                "bar.example.com",
                "/wildcard-example-com",
                "infra-backend-v1",
            ),
            missing("bar.example.com", "/wildcard-foo-example-com"),
            missing("bar.example.com", "/abc-foo-example-com"),
            missing("bar.foo.example.com", "/empty-hostname"),
            missing("bar.foo.example.com", "/wildcard-example-com"),
            at(
                "bar.foo.example.com",
                "/wildcard-foo-example-com",
                "infra-backend-v1",
            ),
            missing("bar.foo.example.com", "/abc-foo-example-com"),
            missing("abc.foo.example.com", "/empty-hostname"),
            missing("abc.foo.example.com", "/wildcard-example-com"),
            missing("abc.foo.example.com", "/wildcard-foo-example-com"),
            at(
                "abc.foo.example.com",
                "/abc-foo-example-com",
                "infra-backend-v1",
            ),
        ],
    ),
    (
        // Listeners on ports 80, 8080 and 8090; routes attached by `parentRefs[].port`. The
        // Host carries the port, as the suite sends it.
        "HTTPRouteParentRefPort",
        "httproute-listener-port-matching.yaml",
        "gateway-conformance-infra/httproute-listener-port-matching",
        &[
            at("foo.com", "/", "infra-backend-v1"),
            Req {
                port: 8080,
                ..at("foo.com:{port}", "/", "infra-backend-v2")
            },
            Req {
                port: 8080,
                ..at("bar.com:{port}", "/", "infra-backend-v2")
            },
            Req {
                port: 8090,
                ..at("foo.com:{port}", "/", "infra-backend-v3")
            },
            Req {
                port: 8090,
                ..missing("bar.com:{port}", "/")
            },
        ],
    ),
    (
        // A route shared by two Gateways is served by each, next to each one's own route.
        "HTTPRoute",
        "httproute-multiple-gateways.yaml",
        "gateway-conformance-infra/same-namespace",
        &[
            get("/shared", "infra-backend-v1"),
            get("/", "infra-backend-v2"),
        ],
    ),
    (
        "HTTPRoute",
        "httproute-multiple-gateways.yaml",
        "gateway-conformance-infra/all-namespaces",
        &[
            get("/shared", "infra-backend-v1"),
            get("/", "infra-backend-v3"),
        ],
    ),
    (
        // Without a port in the filter: the scheme's well-known port when the filter sets the
        // scheme (left out of the Location), else the listener's; the suite accepts a
        // well-known port written out or left out, these cases expect it left out.
        "HTTPRoutePortRedirect",
        "httproute-redirect-port-and-scheme.yaml",
        "gateway-conformance-infra/same-namespace",
        &[
            redirect(
                "/scheme-nil-and-port-nil",
                302,
                "http://example.org:{port}/scheme-nil-and-port-nil",
            ),
            redirect(
                "/scheme-nil-and-port-80",
                302,
                "http://example.org/scheme-nil-and-port-80",
            ),
            redirect(
                "/scheme-nil-and-port-8080",
                302,
                "http://example.org:8080/scheme-nil-and-port-8080",
            ),
            redirect(
                "/scheme-https-and-port-nil",
                302,
                "https://example.org/scheme-https-and-port-nil",
            ),
            redirect(
                "/scheme-https-and-port-443",
                302,
                "https://example.org/scheme-https-and-port-443",
            ),
            redirect(
                "/scheme-https-and-port-8443",
                302,
                "https://example.org:8443/scheme-https-and-port-8443",
            ),
        ],
    ),
    (
        "HTTPRoutePortRedirect",
        "httproute-redirect-port-and-scheme.yaml",
        "gateway-conformance-infra/same-namespace-with-http-listener-on-8080",
        &[
            Req {
                port: 8080,
                ..redirect(
                    "/scheme-nil-and-port-nil",
                    302,
                    "http://example.org:{port}/scheme-nil-and-port-nil",
                )
            },
            Req {
                port: 8080,
                ..redirect(
                    "/scheme-nil-and-port-80",
                    302,
                    "http://example.org/scheme-nil-and-port-80",
                )
            },
            Req {
                port: 8080,
                ..redirect(
                    "/scheme-https-and-port-nil",
                    302,
                    "https://example.org/scheme-https-and-port-nil",
                )
            },
        ],
    ),
    (
        "HTTPRoutePortRedirect",
        "httproute-redirect-port-and-scheme.yaml",
        "gateway-conformance-infra/same-namespace-with-https-listener",
        &[
            Req {
                location: Some("https://example.org:{port}/scheme-nil-and-port-nil"),
                ..tls_status("example.org", "/scheme-nil-and-port-nil", 302)
            },
            Req {
                location: Some("https://example.org/scheme-nil-and-port-443"),
                ..tls_status("example.org", "/scheme-nil-and-port-443", 302)
            },
            Req {
                location: Some("https://example.org:8443/scheme-nil-and-port-8443"),
                ..tls_status("example.org", "/scheme-nil-and-port-8443", 302)
            },
            Req {
                location: Some("http://example.org/scheme-http-and-port-nil"),
                ..tls_status("example.org", "/scheme-http-and-port-nil", 302)
            },
            Req {
                location: Some("http://example.org/scheme-http-and-port-80"),
                ..tls_status("example.org", "/scheme-http-and-port-80", 302)
            },
            Req {
                location: Some("http://example.org:8080/scheme-http-and-port-8080"),
                ..tls_status("example.org", "/scheme-http-and-port-8080", 302)
            },
        ],
    ),
    (
        // The HTTPS listeners of `base.yaml`, with the certificate of `tls_secret`; SNI and Host
        // alike.
        "HTTPRoute",
        "httproute-https-listener.yaml",
        "gateway-conformance-infra/same-namespace-with-https-listener",
        &[
            tls("example.org", "/", "infra-backend-v1"),
            tls_status("unknown-example.org", "/", 404),
            tls("second-example.org", "/", "infra-backend-v2"),
        ],
    ),
    (
        // Four HTTPS listeners on one port sharing one certificate: a Host that belongs to
        // another listener than the SNI chose answers 421; a Host no listener serves is routed
        // (404) on the listener without a hostname.
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        "httproute-https-listener-detect-misdirected-requests.yaml",
        "gateway-conformance-infra/same-namespace-with-https-listener",
        &[
            directed("example.org", "example.org", "infra-backend-v1"),
            misdirected("example.org", "second-example.org", 421),
            misdirected("example.org", "unknown-example.org", 404),
            directed(
                "second-example.org",
                "second-example.org",
                "infra-backend-v2",
            ),
            misdirected("second-example.org", "example.org", 421),
            misdirected("second-example.org", "unknown-example.org", 421),
            directed(
                "third-example.wildcard.org",
                "third-example.wildcard.org",
                "infra-backend-v3",
            ),
            directed(
                "third-example.wildcard.org",
                "fith-example.wildcard.org",
                "infra-backend-v3",
            ),
            misdirected(
                "third-example.wildcard.org",
                "fourth-example.wildcard.org",
                421,
            ),
            misdirected("third-example.wildcard.org", "second-example.org", 421),
            misdirected("third-example.wildcard.org", "unknown-example.org", 421),
            directed(
                "fourth-example.wildcard.org",
                "fourth-example.wildcard.org",
                "infra-backend-v1",
            ),
            misdirected(
                "fourth-example.wildcard.org",
                "fith-example.wildcard.org",
                421,
            ),
            directed("unknown-example.org", "example.org", "infra-backend-v1"),
            misdirected("unknown-example.org", "unknown-example.org", 404),
        ],
    ),
    (
        // The authority picks the listener (by hostname) and so the route.
        "GRPCRoute",
        "grpcroute-listener-hostname-matching.yaml",
        "gateway-conformance-infra/grpcroute-listener-hostname-matching",
        &[
            Req {
                host: "bar.com",
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                host: "foo.bar.com",
                ..grpc(ECHO, "grpc-infra-backend-v2")
            },
            Req {
                host: "baz.bar.com",
                ..grpc(ECHO, "grpc-infra-backend-v3")
            },
            Req {
                host: "boo.bar.com",
                ..grpc(ECHO, "grpc-infra-backend-v3")
            },
            Req {
                host: "multiple.prefixes.bar.com",
                ..grpc(ECHO, "grpc-infra-backend-v3")
            },
            Req {
                host: "multiple.prefixes.foo.com",
                ..grpc(ECHO, "grpc-infra-backend-v3")
            },
            Req {
                host: "foo.com",
                ..grpc_unrouted(ECHO)
            },
            Req {
                host: "no.matching.host",
                ..grpc_unrouted(ECHO)
            },
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
    (
        "HTTPRoute",
        "httproute-header-matching.yaml",
        &[
            Req {
                headers: &[("Version", "one")],
                ..get("/", "infra-backend-v1")
            },
            Req {
                headers: &[("Version", "two")],
                ..get("/", "infra-backend-v2")
            },
            Req {
                headers: &[("Version", "two"), ("Color", "orange")],
                ..get("/", "infra-backend-v1")
            },
            Req {
                headers: &[("Version", "two"), ("Color", "blue")],
                ..get("/", "infra-backend-v2")
            },
            Req {
                headers: &[("Color", "orange")],
                ..status("/", 404)
            },
            Req {
                headers: &[("Some-Other-Header", "one")],
                ..status("/", 404)
            },
            Req {
                headers: &[("Color", "blue")],
                ..get("/", "infra-backend-v1")
            },
            Req {
                headers: &[("Color", "green")],
                ..get("/", "infra-backend-v1")
            },
            Req {
                headers: &[("Color", "red")],
                ..get("/", "infra-backend-v2")
            },
            Req {
                headers: &[("Color", "yellow")],
                ..get("/", "infra-backend-v2")
            },
            Req {
                headers: &[("Color", "purple")],
                ..status("/", 404)
            },
        ],
    ),
    (
        "HTTPRoute",
        "httproute-matching-across-routes.yaml",
        &[
            at("example.com", "/", "infra-backend-v1"),
            at("example.com", "/example", "infra-backend-v1"),
            at("example.net", "/example", "infra-backend-v1"),
            Req {
                headers: &[("Version", "one")],
                ..at("example.com", "/example", "infra-backend-v1")
            },
            at("example.com", "/v2", "infra-backend-v2"),
            // The v2 matches are limited to example.com.
            at("example.net", "/v2", "infra-backend-v1"),
            at("example.com", "/v2/example", "infra-backend-v2"),
            Req {
                headers: &[("Version", "two")],
                ..at("example.com", "/", "infra-backend-v2")
            },
        ],
    ),
    (
        "HTTPRouteNamedRouteRule",
        "httproute-named-rule.yaml",
        &[
            get("/named", "infra-backend-v1"),
            get("/unnamed", "infra-backend-v2"),
        ],
    ),
    (
        // EndpointSlices written by hand (IPv4 and IPv6) and a headless Service (see
        // `as_the_suite_sets_up`).
        "HTTPRoute",
        "httproute-service-types.yaml",
        &[
            get("/manual-endpointslices", "infra-backend-v1"),
            get("/headless", "infra-backend-v1"),
            get("/headless-manual-endpointslices", "infra-backend-v1"),
        ],
    ),
    (
        "HTTPRoute303RedirectStatusCode",
        "httproute-303-redirect.yaml",
        &[Req {
            method: "POST",
            ..redirect("/see-other", 303, "/see-other")
        }],
    ),
    (
        "HTTPRoute307RedirectStatusCode",
        "httproute-307-redirect.yaml",
        &[redirect("/temporary", 307, "/temporary")],
    ),
    (
        "HTTPRoute308RedirectStatusCode",
        "httproute-308-redirect.yaml",
        &[redirect("/permanent", 308, "/permanent")],
    ),
    (
        // Filters of a rule's single backendRef.
        "HTTPRouteBackendRequestRedirect",
        "httproute-backend-request-redirect.yaml",
        &[
            redirect("/full/original", 302, "/redirected-full"),
            redirect("/prefix/original", 302, "/redirected-prefix/original"),
        ],
    ),
    (
        "HTTPRouteBackendURLRewrite",
        "httproute-backend-url-rewrite.yaml",
        &[
            Req {
                upstream_path: Some("/rewritten-full"),
                ..get("/full/original", "infra-backend-v1")
            },
            Req {
                upstream_path: Some("/rewritten-prefix/original"),
                ..get("/prefix/original", "infra-backend-v1")
            },
        ],
    ),
    (
        // RequestHeaderModifier on the single backendRef of each rule.
        "HTTPRouteBackendRequestHeaderModification",
        "httproute-request-header-modifier-backend.yaml",
        &[
            Req {
                headers: &[("Some-Other-Header", "val")],
                upstream_headers: &[
                    ("some-other-header", "val"),
                    ("x-header-set", "set-overwrites-values"),
                ],
                ..get("/set", "infra-backend-v1")
            },
            Req {
                headers: &[
                    ("Some-Other-Header", "val"),
                    ("X-Header-Set", "some-other-value"),
                ],
                upstream_headers: &[
                    ("some-other-header", "val"),
                    ("x-header-set", "set-overwrites-values"),
                ],
                ..get("/set", "infra-backend-v1")
            },
            Req {
                headers: &[("Some-Other-Header", "val")],
                upstream_headers: &[
                    ("some-other-header", "val"),
                    ("x-header-add", "add-appends-values"),
                ],
                ..get("/add", "infra-backend-v1")
            },
            Req {
                headers: &[
                    ("Some-Other-Header", "val"),
                    ("X-Header-Add", "some-other-value"),
                ],
                upstream_headers: &[
                    ("some-other-header", "val"),
                    ("x-header-add", "some-other-value,add-appends-values"),
                ],
                ..get("/add", "infra-backend-v1")
            },
            Req {
                headers: &[("X-Header-Remove", "val")],
                upstream_headers: &[("x-header-remove", "")],
                ..get("/remove", "infra-backend-v1")
            },
            Req {
                headers: &[
                    ("X-Header-Set-2", "set-val-2"),
                    ("X-Header-Add-2", "add-val-2"),
                    ("X-Header-Remove-2", "remove-val-2"),
                    ("Another-Header", "another-header-val"),
                ],
                upstream_headers: &[
                    ("x-header-set-1", "header-set-1"),
                    ("x-header-set-2", "header-set-2"),
                    ("x-header-add-1", "header-add-1"),
                    ("x-header-add-2", "add-val-2,header-add-2"),
                    ("x-header-add-3", "header-add-3"),
                    ("another-header", "another-header-val"),
                    ("x-header-remove-1", ""),
                    ("x-header-remove-2", ""),
                ],
                ..get("/multiple", "infra-backend-v1")
            },
            Req {
                // The filter names the headers in canonical case, the request in lowercase.
                headers: &[
                    ("x-header-set", "original-val-set"),
                    ("x-header-add", "original-val-add"),
                    ("x-header-remove", "original-val-remove"),
                    ("Another-Header", "another-header-val"),
                ],
                upstream_headers: &[
                    ("x-header-set", "header-set"),
                    ("x-header-add", "original-val-add,header-add"),
                    ("another-header", "another-header-val"),
                    ("x-header-remove", ""),
                ],
                ..get("/case-insensitivity", "infra-backend-v1")
            },
        ],
    ),
    (
        // Seven ReferenceGrants, none of which allows the route's backendRef.
        "ReferenceGrant",
        "httproute-invalid-reference-grant.yaml",
        &[status("/", 500)],
    ),
    (
        // The ReferenceGrant allows app-backend-v1 only: the rule to app-backend-v2 answers 500,
        // the other is served.
        "ReferenceGrant",
        "httproute-partially-invalid-via-invalid-reference-grant.yaml",
        &[status("/v2", 500), get("/", "app-backend-v1")],
    ),
    (
        "HTTPRouteCORS",
        "httproute-cors.yaml",
        &[
            // Preflights from allowed origins: exact, wildcard, and a wildcard matching several
            // labels.
            cors_1_preflight!("https://www.foo.com"),
            cors_1_preflight!("https://www.bar.com"),
            cors_1_preflight!("https://xpto.www.bar.com"),
            // A preflight from another origin is not allowed.
            Req {
                headers: &[
                    ("Origin", "https://foobar.com"),
                    ("access-control-request-method", "GET"),
                ],
                or_status: &[204, 403],
                response_headers: &[("access-control-allow-origin", "")],
                ..preflight("/cors-1")
            },
            // Simple requests reach the backend, with the origin allowed or not.
            Req {
                headers: &[
                    ("Origin", "https://www.foo.com"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
                response_headers: &[("access-control-allow-origin", "https://www.foo.com")],
                ..get("/cors-1", "infra-backend-v1")
            },
            Req {
                headers: &[
                    ("Origin", "https://www.bar.com"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
                response_headers: &[("access-control-allow-origin", "https://www.bar.com")],
                ..get("/cors-1", "infra-backend-v1")
            },
            Req {
                headers: &[
                    ("Origin", "https://foobar.com"),
                    ("access-control-request-method", "GET"),
                ],
                response_headers: &[("access-control-allow-origin", "")],
                ..get("/cors-1", "infra-backend-v1")
            },
            // allowMethods ["*"], without credentials.
            Req {
                headers: &[
                    ("Origin", "https://www.foo.com"),
                    ("access-control-request-method", "POST"),
                ],
                or_status: &[204],
                response_headers: &[
                    ("access-control-allow-origin", "https://www.foo.com"),
                    ("access-control-allow-credentials", ""),
                ],
                response_header_options: &[("access-control-allow-methods", &["POST", "*"])],
                ..preflight("/cors-2")
            },
            Req {
                headers: &[
                    ("Origin", "https://www.foo.com"),
                    ("access-control-request-method", "POST"),
                ],
                response_headers: &[("access-control-allow-credentials", "")],
                ..preflight("/cors-2")
            },
            // allowOrigins ["*"]: the origin echoed, or `*`.
            Req {
                headers: &[
                    ("Origin", "https://foobar.com"),
                    ("access-control-request-method", "PUT"),
                ],
                or_status: &[204],
                response_headers: &[("access-control-allow-credentials", "")],
                response_header_options: &[
                    ("access-control-allow-origin", &["https://foobar.com", "*"]),
                    ("access-control-allow-methods", &["PUT"]),
                ],
                ..preflight("/cors-wildcard-origin")
            },
            Req {
                headers: &[
                    ("Origin", "https://foobar.com:12345"),
                    ("access-control-request-method", "PUT"),
                ],
                or_status: &[204],
                response_headers: &[("access-control-allow-credentials", "")],
                response_header_options: &[
                    (
                        "access-control-allow-origin",
                        &["https://foobar.com:12345", "*"],
                    ),
                    ("access-control-allow-methods", &["PUT"]),
                ],
                ..preflight("/cors-wildcard-origin")
            },
            Req {
                method: "PUT",
                headers: &[("Origin", "https://foobar.com:12345")],
                response_header_options: &[(
                    "access-control-allow-origin",
                    &["https://foobar.com:12345", "*"],
                )],
                ..get("/cors-wildcard-origin", "infra-backend-v1")
            },
            Req {
                method: "PUT",
                headers: &[("Origin", "https://foobar.com")],
                response_headers: &[("access-control-allow-credentials", "")],
                response_header_options: &[(
                    "access-control-allow-origin",
                    &["https://foobar.com", "*"],
                )],
                ..get("/cors-wildcard-origin", "infra-backend-v1")
            },
            // Everything allowed with credentials: the origin, method and headers echoed.
            Req {
                headers: &[
                    ("Origin", "https://other.foo.com"),
                    ("access-control-request-method", "PUT"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
                response_headers: &[
                    ("access-control-allow-origin", "https://other.foo.com"),
                    ("access-control-allow-methods", "PUT"),
                    ("access-control-allow-credentials", "true"),
                ],
                response_header_options: &[(
                    "access-control-allow-headers",
                    &["x-header-1, x-header-2", "x-header-2, x-header-1"],
                )],
                ..preflight("/cors-wildcard-methods-headers")
            },
            Req {
                headers: &[
                    ("Origin", "https://other.foo.com"),
                    ("access-control-request-method", "PUT"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
                response_headers: &[("access-control-allow-credentials", "")],
                response_header_options: &[
                    (
                        "access-control-allow-origin",
                        &["https://other.foo.com", "*"],
                    ),
                    ("access-control-allow-methods", &["PUT", "*"]),
                    (
                        "access-control-allow-headers",
                        &["x-header-1, x-header-2", "x-header-2, x-header-1", "*"],
                    ),
                ],
                ..preflight("/cors-wildcard-methods-headers-unauth")
            },
            Req {
                headers: &[
                    ("Origin", "https://other.foo.com"),
                    ("Authorization", "Bearer test"),
                ],
                response_headers: &[
                    ("access-control-allow-origin", "https://other.foo.com"),
                    ("access-control-allow-credentials", "true"),
                ],
                ..get("/cors-wildcard-methods-headers", "infra-backend-v1")
            },
            // Credentials on a route that does not allow them: the origin echoed (not `*`),
            // without allow-credentials.
            Req {
                headers: &[
                    ("Origin", "https://other.foo.com"),
                    ("Authorization", "Bearer test"),
                ],
                response_headers: &[
                    ("access-control-allow-origin", "https://other.foo.com"),
                    ("access-control-allow-credentials", ""),
                ],
                ..get("/cors-wildcard-methods-headers-unauth", "infra-backend-v1")
            },
        ],
    ),
    (
        "GRPCRoute",
        "grpcroute-exact-method-matching.yaml",
        &[
            grpc(ECHO, "grpc-infra-backend-v1"),
            grpc(ECHO_TWO, "grpc-infra-backend-v2"),
        ],
    ),
    (
        "GRPCRoute",
        "grpcroute-header-matching.yaml",
        &[
            Req {
                headers: &[("Version", "one")],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[("Version", "two")],
                ..grpc(ECHO, "grpc-infra-backend-v2")
            },
            Req {
                headers: &[("Version", "two"), ("Color", "orange")],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[("Version", "two"), ("Color", "blue")],
                ..grpc(ECHO, "grpc-infra-backend-v2")
            },
            Req {
                headers: &[("Color", "orange")],
                ..grpc_unrouted(ECHO)
            },
            Req {
                headers: &[("Some-Other-Header", "one")],
                ..grpc_unrouted(ECHO)
            },
            Req {
                headers: &[("Color", "blue")],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[("Color", "green")],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[("Color", "red")],
                ..grpc(ECHO, "grpc-infra-backend-v2")
            },
            Req {
                headers: &[("Color", "yellow")],
                ..grpc(ECHO, "grpc-infra-backend-v2")
            },
            Req {
                headers: &[("Color", "purple")],
                ..grpc_unrouted(ECHO)
            },
        ],
    ),
    (
        "GRPCRouteNamedRouteRule",
        "grpcroute-named-rule.yaml",
        &[
            grpc(ECHO, "grpc-infra-backend-v1"),
            grpc(ECHO_TWO, "grpc-infra-backend-v2"),
        ],
    ),
    (
        // The suite compares the status, method and backend of each call (the request headers
        // its cases list are not compared, and its Echo rules after the first, which add and
        // remove, are never reached: they match what the first does). The headers checked
        // here are those the file's filters set on the calls that reach them.
        "GRPCRouteRequestHeaderModifier",
        "grpcroute-request-header-modifier.yaml",
        &[
            Req {
                headers: &[("Some-Other-Header", "this-header-should-be-set")],
                upstream_headers: &[
                    ("some-other-header", "this-header-should-be-set"),
                    ("x-header-set", "set-overwrites-values"),
                ],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[
                    ("Some-Other-Header", "this-header-should-be-set"),
                    ("X-Header-Set", "this-value-should-be-overwritten"),
                ],
                upstream_headers: &[
                    ("some-other-header", "this-header-should-be-set"),
                    ("x-header-set", "set-overwrites-values"),
                ],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[("Some-Other-Header", "this-header-should-be-set")],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[
                    ("Some-Other-Header", "this-header-should-be-set"),
                    ("X-Header-Add", "this-value-should-be-appended"),
                ],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[("X-Header-Remove", "this-should-be-removed")],
                ..grpc(ECHO, "grpc-infra-backend-v1")
            },
            Req {
                headers: &[
                    ("X-Header-Set-2", "set-header-2"),
                    ("X-Header-Add-2", "add-header-2"),
                    ("X-Header-Remove-2", "should-be-removed-2"),
                    ("Some-Other-Header", "another-header-val"),
                ],
                upstream_headers: &[
                    ("x-header-set-1", "header-set-1"),
                    ("x-header-set-2", "header-set-2"),
                    ("x-header-add-1", "header-add-1"),
                    ("x-header-add-2", "add-header-2,header-add-2"),
                    ("x-header-remove-2", ""),
                    ("some-other-header", "another-header-val"),
                ],
                ..grpc(ECHO_TWO, "grpc-infra-backend-v2")
            },
            Req {
                // The filter names the headers in canonical case, the call in lowercase.
                headers: &[
                    ("x-header-set-1", "original-set-1"),
                    ("x-header-add-1", "existing-add-1"),
                    ("x-header-remove-1", "should-be-removed-1"),
                ],
                upstream_headers: &[
                    ("x-header-set-1", "header-set-1"),
                    ("x-header-set-2", "header-set-2"),
                    ("x-header-add-1", "existing-add-1,header-add-1"),
                    ("x-header-add-2", "header-add-2"),
                    ("x-header-remove-1", ""),
                ],
                ..grpc(ECHO_TWO, "grpc-infra-backend-v2")
            },
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

/// The values of header `name` (lowercase) in the echo's JSON object of headers, joined with `,`.
fn header_values(headers: &serde_json::Value, name: &str) -> String {
    headers[name.to_ascii_lowercase()]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks the request headers the echo reports against `r.upstream_headers`.
fn check_upstream_headers(headers: &serde_json::Value, r: &Req) -> anyhow::Result<()> {
    for (name, value) in r.upstream_headers {
        let got = header_values(headers, name);
        ensure!(
            got == *value,
            "upstream header {name}: {got:?} != {value:?}: {headers}"
        );
    }
    Ok(())
}

/// Checks one request to the listener of `r.port`; `ca` is the CA of the HTTPS listeners'
/// certificate. The error says what differs.
async fn check(
    client: &HttpClient,
    ports: &Ports,
    ca: Option<&Path>,
    r: &Req,
) -> anyhow::Result<()> {
    let port = ports.of(r.port);
    let gw = addr(port);
    let host = if r.host.is_empty() {
        "example.com".to_string()
    } else {
        r.host.replace("{port}", &port.to_string())
    };
    if r.grpc {
        return check_grpc(gw, &host, r).await;
    }
    let reply: Reply = match r.sni {
        Some(sni) => {
            ensure!(
                r.method == "GET" && r.headers.is_empty(),
                "a TLS case is a GET without headers"
            );
            let ca = ca.context("a TLS case needs the test CA")?;
            tls_get(gw, sni, &host, r.path, TlsOptions::new(ca)).await?
        }
        None => {
            client
                .request(r.method, gw, &host, r.path, r.headers)
                .await?
        }
    };
    ensure!(
        reply.status == r.status || r.or_status.contains(&reply.status),
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
    check_upstream_headers(&json["headers"], r).with_context(|| format!("{reply:?}"))?;
    let response_header = |name: &str| {
        reply
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    for (name, value) in r.response_headers {
        let got = response_header(name);
        ensure!(got == *value, "response header {name}: {got:?}: {reply:?}");
    }
    let squashed = |s: &str| s.split_whitespace().collect::<String>();
    for (name, options) in r.response_header_options {
        let got = response_header(name);
        ensure!(
            options.iter().any(|o| squashed(o) == squashed(&got)),
            "response header {name}: {got:?} is none of {options:?}: {reply:?}"
        );
    }
    if let Some(l) = r.location {
        let got = response_header("location");
        // Without a port in the filter, the redirect keeps the listener's port.
        let l = l.replace("{port}", &port.to_string());
        if !got.ends_with(&l) {
            bail!("location {got:?} does not end with {l:?}");
        }
    }
    Ok(())
}

/// Checks one gRPC call of `r.path` (with `r.headers` as metadata, and `authority` unless
/// `r.host` is empty) over h2c: the suite compares the status, and for an OK answer the method
/// and the backend the echo reports; `r.upstream_headers` are checked too.
async fn check_grpc(gw: SocketAddr, authority: &str, r: &Req) -> anyhow::Result<()> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{gw}"))?;
    if !r.host.is_empty() {
        endpoint = endpoint.origin(format!("http://{authority}").parse()?);
    }
    let channel = endpoint.connect_lazy();
    match (r.status, grpc_call(&channel, r.path, r.headers).await?) {
        (200, Ok(answer)) => {
            let meta = |name: &str| {
                answer
                    .metadata()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            if let Some(b) = r.backend {
                ensure!(meta("x-echo-name") == b, "backend: {:?}", answer.metadata());
            }
            ensure!(
                meta("x-echo-path") == r.path,
                "method: {:?}",
                answer.metadata()
            );
            ensure!(
                answer.get_ref() == "hello",
                "message: {:?}",
                answer.get_ref()
            );
            let headers: serde_json::Value =
                serde_json::from_str(&meta("x-echo-headers")).unwrap_or_default();
            check_upstream_headers(&headers, r)
        }
        (404, Err(status)) if status.code() == tonic::Code::Unimplemented => Ok(()),
        (want, got) => bail!("wanted {want} (200: OK, 404: UNIMPLEMENTED), got {got:?}"),
    }
}

/// One unary gRPC call of `path` with a `google.protobuf.StringValue` message (`bowline-echo`
/// echoes it back) and `metadata`; the outer error is a transport failure.
async fn grpc_call(
    channel: &tonic::transport::Channel,
    path: &str,
    metadata: &[(&str, &str)],
) -> anyhow::Result<Result<tonic::Response<String>, tonic::Status>> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await?;
    let mut request = tonic::Request::new("hello".to_string());
    for (name, value) in metadata {
        request.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())?,
            value.parse()?,
        );
    }
    Ok(grpc
        .unary(
            request,
            http::uri::PathAndQuery::try_from(path)?,
            tonic_prost::ProstCodec::<String, String>::default(),
        )
        .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_tables() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: no gateway-api corpus");
        return;
    };
    let echos = backends();
    let ports = Ports::new();
    let base_text = std::fs::read_to_string(dir.join("base.yaml")).unwrap();
    let files = [
        ("class.yaml", CLASS.to_string()),
        ("base.yaml", ports.apply(&base_text)),
        ("endpoints.yaml", endpoints(&echos)),
    ];
    let stack = Stack::start_gateway_with(
        &files,
        &["--gateway", "gateway-conformance-infra/same-namespace"],
    )
    .await;
    let gw = addr(ports.of(80));
    let client = HttpClient::http1();
    for (feature, file, requests) in CASES {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        // Once the gateway's config version changes, no request can be answered by the
        // previous file's routes.
        let before = stack.gateway_version().await.unwrap();
        stack.write_manifest("case.yaml", &as_the_suite_sets_up(file, &text, &echos));
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
                try_eventually(|| check(&client, &ports, None, r)).await,
            );
        }
    }

    // RequestMirror: v1 answers, v2 gets a copy.
    let text = std::fs::read_to_string(dir.join("httproute-request-mirror.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    let mirror = &echos[1];
    let before = mirror.stat("requests").await.unwrap();
    let mirrored = try_eventually(|| async {
        check(&client, &ports, None, &get("/mirror", "infra-backend-v1")).await?;
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
        check(
            &client,
            &ports,
            None,
            &get("/multi-mirror", "infra-backend-v1"),
        )
        .await?;
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
        eventually(&format!("{path} is served"), || {
            check(&client, &ports, None, &req)
        })
        .await;
        let before = mirror.stat("requests").await.unwrap();
        for _ in 0..200 {
            check(&client, &ports, None, &req).await.unwrap();
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

    // Header changes of each backendRef among several: the `Backend` header names the backend
    // that answers, for each of 100 requests.
    let text =
        std::fs::read_to_string(dir.join("httproute-request-header-modifier-backend-weights.yaml"))
            .unwrap();
    stack.write_manifest("case.yaml", &text);
    let tagged_by_its_backend = |r: &bowline_tests::Reply| -> anyhow::Result<String> {
        let name = r.echo_name().unwrap_or_default();
        let tag = header_values(&r.json().unwrap_or_default()["headers"], "backend");
        ensure!(
            r.status == 200 && tag == name,
            "Backend {tag:?} at {name:?}: {r:?}"
        );
        Ok(name)
    };
    eventually(
        "both backends answer with their own Backend header",
        || async {
            // The previous file's route is gone once requests carry the header.
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                let r = client.get(gw, "example.com", "/", &[]).await?;
                seen.insert(tagged_by_its_backend(&r)?);
            }
            ensure!(seen.len() == 2, "{seen:?}");
            anyhow::Ok(())
        },
    )
    .await;
    let mut tagged = Ok(());
    for _ in 0..100 {
        let r = client.get(gw, "example.com", "/", &[]).await.unwrap();
        if let Err(e) = tagged_by_its_backend(&r) {
            tagged = Err(e);
            break;
        }
    }
    checked(
        "HTTPRouteBackendRequestHeaderModification",
        "httproute-request-header-modifier-backend-weights.yaml: each of 100 requests carries its backend's Backend header",
        tagged,
    );

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

    // GRPCRoute weights 70/30/0: each backend's share of 500 calls within 5 points of its
    // weight, in one of up to 10 rounds, as the suite counts them.
    let text = std::fs::read_to_string(dir.join("grpcroute-weight.yaml")).unwrap();
    stack.write_manifest("case.yaml", &text);
    let channel = tonic::transport::Channel::from_shared(format!("http://{gw}"))
        .unwrap()
        .connect_lazy();
    let answered_by = |answer: Result<tonic::Response<String>, tonic::Status>| match answer {
        Ok(a) => a
            .metadata()
            .get("x-echo-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        Err(status) => format!("{:?}", status.code()),
    };
    eventually("the weighted GRPCRoute is served", || async {
        // The previous file's route is gone once both gRPC backends answer.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(answered_by(grpc_call(&channel, ECHO, &[]).await?));
        }
        ensure!(
            seen.contains("grpc-infra-backend-v1") && seen.contains("grpc-infra-backend-v2"),
            "{seen:?}"
        );
        anyhow::Ok(())
    })
    .await;
    let mut rounds = Vec::new();
    let mut ok = false;
    for _ in 0..10 {
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..500 {
            let answer = grpc_call(&channel, ECHO, &[]).await.unwrap();
            *counts.entry(answered_by(answer)).or_default() += 1;
        }
        let n = |b: &str| counts.get(b).copied().unwrap_or(0);
        let near = |b: &str, share: f64| (f64::from(n(b)) / 500.0 - share).abs() <= 0.05;
        ok = near("grpc-infra-backend-v1", 0.7)
            && near("grpc-infra-backend-v2", 0.3)
            && n("grpc-infra-backend-v1") + n("grpc-infra-backend-v2") == 500;
        rounds.push(counts);
        if ok {
            break;
        }
    }
    conformance::record(
        SUITE,
        "GRPCRoute",
        "grpcroute-weight.yaml: weights 70/30/0 over 500 calls, within 5 points",
        ok,
    );
    assert!(ok, "{rounds:?}");

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
    let pki = TestPki::new("gateway-api-conformance");
    let secret = tls_secret(&pki);
    let ca = pki.ca_path();
    let client = HttpClient::http1();
    for (feature, file, gateway, requests) in OWN_GATEWAY_CASES {
        let ports = Ports::new();
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let files = [
            ("class.yaml", CLASS.to_string()),
            ("base.yaml", ports.apply(&base_text)),
            ("endpoints.yaml", endpoints(&echos)),
            ("secret.yaml", secret.clone()),
            ("case.yaml", ports.apply(&text)),
        ];
        let stack = Stack::start_gateway_with(&files, &["--gateway", gateway]).await;
        // A file served by several of its Gateways names the Gateway of each case.
        let shared = OWN_GATEWAY_CASES.iter().filter(|c| c.1 == *file).count() > 1;
        for r in *requests {
            let host = r.host.replace("{port}", &r.port.to_string());
            let mut what = format!("{file}: {} {host}{}", r.method, r.path);
            if r.port != 80 {
                what += &format!(" (listener port {})", r.port);
            }
            if shared {
                what += &format!(" (Gateway {gateway})");
            }
            checked(
                feature,
                &what,
                try_eventually(|| check(&client, &ports, Some(&ca), r)).await,
            );
        }
        drop(stack);
    }
}

/// The `kubernetes.io/tls` Secret `gateway-conformance-infra/tls-validity-checks-certificate`
/// that the HTTPS listeners of `base.yaml` refer to (the suite creates it before its tests), with
/// a certificate of `pki` for the hosts the cases send.
fn tls_secret(pki: &TestPki) -> String {
    let cert = pki.issue(
        "tls-validity-checks",
        &[
            "example.org",
            "second-example.org",
            "unknown-example.org",
            "*.wildcard.org",
        ],
        &[],
    );
    let pem = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        pem(&cert.chain),
        pem(&cert.key)
    )
}

/// The file as the suite sets it up before its requests: the EndpointSlices that
/// `httproute-service-types.yaml` leaves empty (the suite patches in the addresses of
/// infra-backend-v1's Pods) get infra-backend-v1's echo, and its Service `headless` (a selector
/// of infra-backend-v1's Pods) gets the EndpointSlice the EndpointSlice controller would make.
fn as_the_suite_sets_up(file: &str, text: &str, echos: &[Echo]) -> String {
    if file != "httproute-service-types.yaml" {
        return text.to_string();
    }
    let port = echos[0].port();
    let mut docs: Vec<String> = text
        .split("\n---\n")
        .map(|doc| {
            if doc.contains("\nkind: EndpointSlice\n") && doc.contains("\naddressType: IPv4\n") {
                format!(
                    "{}\nendpoints: [{{addresses: [127.0.0.1]}}]\n",
                    doc.replace("port: 3000", &format!("port: {port}"))
                        .trim_end()
                )
            } else {
                doc.to_string()
            }
        })
        .collect();
    docs.push(format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: headless-1, namespace: gateway-conformance-infra, labels: {{kubernetes.io/service-name: headless}}}}\naddressType: IPv4\nports: [{{name: first-port, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
    ));
    docs.join("\n---\n")
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
