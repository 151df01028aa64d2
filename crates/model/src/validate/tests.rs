use std::path::Path as FsPath;

use pretty_assertions::assert_eq;

use super::*;
use crate::manifest::{Parsed, Severity, parse_file};

/// A mesh document of `kind` named `ns/x` with `spec` (YAML at column 0).
fn doc(kind: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: mesh.bowline.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: x\n  namespace: ns\nspec:\n{spec}"
    )
}

/// Every problem of every document in `yaml`, as `path: message` (`path: ignored: message`).
fn all_problems(yaml: &str) -> Vec<Problem> {
    parse_file(FsPath::new("t.yaml"), yaml)
        .into_iter()
        .flat_map(|p| match p {
            Parsed::Object { problems, .. } | Parsed::Invalid { problems, .. } => problems,
            Parsed::Skipped { kind, .. } => panic!("{kind} skipped"),
        })
        .collect()
}

fn short(p: &Problem) -> String {
    match p.severity {
        Severity::Error => format!("{}: {}", p.path, p.message),
        Severity::Ignored => format!("{}: ignored: {}", p.path, p.message),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    all_problems(yaml)
        .iter()
        .filter(|p| p.is_error())
        .map(short)
        .collect()
}

fn ignored(yaml: &str) -> Vec<String> {
    let problems = all_problems(yaml);
    assert!(
        problems.iter().all(|p| !p.is_error()),
        "unexpected errors: {problems:#?}"
    );
    problems.iter().map(short).collect()
}

const TARGET: &str = "weightedTargets: [{virtualNodeRef: {name: n}, weight: 1}]";

/// Bad documents and every error each must produce, in order.
#[test]
fn bad_documents() {
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "router: many problems in one document",
            doc(
                "VirtualRouter",
                r#"listeners:
  - portMapping: {port: 8080, protocol: http}
  - portMapping: {port: 8080, protocol: http}
routes:
  - name: a
    httpRoute:
      match: {prefix: "api"}
      action:
        weightedTargets:
          - {virtualNodeRef: {name: n}, weight: 0}
  - name: a
    priority: 1001
    httpRoute:
      match:
        path: {exact: "x", regex: "("}
        method: FETCH
        scheme: ftp
        headers:
          - name: h
            match: {range: {start: 5, end: 5}}
      action:
        weightedTargets: []
  - name: c
    tcpRoute:
      action:
        weightedTargets:
          - {virtualNodeRef: {name: n}, virtualNodeARN: "arn:x", weight: 101, port: 70000}
  - name: d
"#,
            ),
            vec![
                "spec.listeners[1].portMapping.port: port 8080 is already used by spec.listeners[0]",
                r#"spec.routes[0].httpRoute.match.prefix: must start with "/""#,
                "spec.routes[0].httpRoute.action.weightedTargets: the weights must not all be 0",
                r#"spec.routes[1].name: duplicate route name "a" (also spec.routes[0])"#,
                "spec.routes[1].priority: must be between 0 and 1000 (got 1001)",
                "spec.routes[1].httpRoute.match.path: exactly one of exact and regex must be set (exact and regex are)",
                r#"spec.routes[1].httpRoute.match.path.exact: must start with "/""#,
                "spec.routes[1].httpRoute.match.path.regex: invalid regular expression: unclosed group",
                r#"spec.routes[1].httpRoute.match.method: must be one of CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE (got "FETCH")"#,
                r#"spec.routes[1].httpRoute.match.scheme: must be one of http, https (got "ftp")"#,
                "spec.routes[1].httpRoute.match.headers[0].match.range: start (5) must be less than end (5)",
                "spec.routes[1].httpRoute.action.weightedTargets: must have at least 1 entry (got 0)",
                "spec.routes[2].tcpRoute.action.weightedTargets[0]: exactly one of virtualNodeRef and virtualNodeARN must be set (virtualNodeRef and virtualNodeARN are)",
                "spec.routes[2].tcpRoute.action.weightedTargets[0].weight: must be between 0 and 100 (got 101)",
                "spec.routes[2].tcpRoute.action.weightedTargets[0].port: must be between 1 and 65535 (got 70000)",
                "spec.routes[3]: exactly one of grpcRoute, httpRoute, http2Route and tcpRoute must be set (none is)",
            ],
        ),
        (
            "router: a match port names a listener (none: every listener)",
            doc(
                "VirtualRouter",
                &format!(
                    r#"listeners:
  - portMapping: {{port: 8080, protocol: http}}
  - portMapping: {{port: 8090, protocol: http}}
routes:
  - name: a
    httpRoute:
      match: {{prefix: /}}
      action: {{{TARGET}}}
  - name: b
    http2Route:
      match: {{prefix: /, port: 9090}}
      action: {{{TARGET}}}
  - name: c
    tcpRoute:
      action: {{{TARGET}}}
"#
                ),
            ),
            vec![
                "spec.routes[1].http2Route.match.port: 9090 is not a listener port of this router (8080, 8090)",
            ],
        ),
        (
            "router: retry policies and gRPC matches",
            doc(
                "VirtualRouter",
                &format!(
                    r#"routes:
  - name: r
    httpRoute:
      match: {{prefix: /, queryParameters: []}}
      action: {{{TARGET}}}
      retryPolicy:
        maxRetries: -1
        perRetryTimeout: {{unit: ms, value: -5}}
        httpRetryEvents: [server-error, boom]
        tcpRetryEvents: [connection-error, connection-error]
      timeout: {{perRequest: {{unit: s, value: -1}}}}
  - name: g
    grpcRoute:
      match: {{methodName: Get}}
      action: {{{TARGET}}}
      retryPolicy: {{maxRetries: 1, perRetryTimeout: {{unit: s, value: 1}}}}
  - name: h
    http2Route:
      match: {{prefix: /}}
      action: {{{TARGET}}}
      retryPolicy: {{maxRetries: 1, perRetryTimeout: {{unit: s, value: 1}}}}
"#
                ),
            ),
            vec![
                "spec.routes[0].httpRoute.match.queryParameters: must have at least 1 entry (got 0)",
                r#"spec.routes[0].httpRoute.retryPolicy.httpRetryEvents[1]: unknown retry event "boom"; must be one of server-error, gateway-error, client-error, stream-error"#,
                "spec.routes[0].httpRoute.retryPolicy.tcpRetryEvents: must have at most 1 entry (got 2)",
                "spec.routes[0].httpRoute.retryPolicy.maxRetries: must be at least 0 (got -1)",
                "spec.routes[0].httpRoute.retryPolicy.perRetryTimeout.value: must not be negative (got -5)",
                "spec.routes[0].httpRoute.timeout.perRequest.value: must not be negative (got -1)",
                "spec.routes[1].grpcRoute.match.methodName: requires serviceName",
                "spec.routes[1].grpcRoute.retryPolicy: at least one of grpcRetryEvents, httpRetryEvents and tcpRetryEvents must be set",
                "spec.routes[2].http2Route.retryPolicy: at least one of httpRetryEvents and tcpRetryEvents must be set",
            ],
        ),
        (
            "router: empty listeners",
            doc("VirtualRouter", "listeners: []"),
            vec!["spec.listeners: must have at least 1 entry (got 0)"],
        ),
        (
            "node: listener policies, discovery and backends",
            doc(
                "VirtualNode",
                r#"listeners:
  - portMapping: {port: 0, protocol: http}
    healthCheck: {protocol: http, healthyThreshold: 1, unhealthyThreshold: 11, intervalMillis: 100, timeoutMillis: 70000}
    outlierDetection:
      maxServerErrors: 0
      maxEjectionPercent: 101
      interval: {unit: s, value: -1}
      baseEjectionDuration: {unit: ms, value: 10}
    connectionPool: {tcp: {maxConnections: 0}, http: {maxConnections: 1}}
  - portMapping: {port: 9090, protocol: grpc}
    healthCheck: {protocol: http2, path: "", healthyThreshold: 2, unhealthyThreshold: 2, intervalMillis: 5000, timeoutMillis: 2000, port: 65536}
serviceDiscovery:
  dns: {hostname: ""}
  awsCloudMap: {namespaceName: a, serviceName: b}
backends:
  - virtualService: {virtualServiceRef: {name: a}}
  - virtualService: {virtualServiceRef: {name: a, namespace: ns}}
  - virtualService: {}
"#,
            ),
            vec![
                "spec.listeners[0].portMapping.port: must be between 1 and 65535 (got 0)",
                "spec.listeners[0].healthCheck.healthyThreshold: must be between 2 and 10 (got 1)",
                "spec.listeners[0].healthCheck.unhealthyThreshold: must be between 2 and 10 (got 11)",
                "spec.listeners[0].healthCheck.intervalMillis: must be between 5000 and 300000 (got 100)",
                "spec.listeners[0].healthCheck.timeoutMillis: must be between 2000 and 60000 (got 70000)",
                "spec.listeners[0].healthCheck.path: is required when protocol is http or http2",
                "spec.listeners[0].outlierDetection.maxServerErrors: must be at least 1 (got 0)",
                "spec.listeners[0].outlierDetection.maxEjectionPercent: must be between 0 and 100 (got 101)",
                "spec.listeners[0].outlierDetection.interval.value: must not be negative (got -1)",
                "spec.listeners[0].connectionPool: exactly one of tcp, http, http2 and grpc must be set (tcp and http are)",
                "spec.listeners[0].connectionPool.tcp: does not match the listener protocol http",
                "spec.listeners[0].connectionPool.tcp.maxConnections: must be at least 1 (got 0)",
                "spec.listeners[1].healthCheck.port: must be between 1 and 65535 (got 65536)",
                "spec.listeners[1].healthCheck.path: must not be empty",
                "spec.serviceDiscovery: exactly one of awsCloudMap and dns must be set (awsCloudMap and dns are)",
                "spec.serviceDiscovery.dns.hostname: must not be empty",
                "spec.backends[1].virtualService.virtualServiceRef: duplicate backend: same virtual service as spec.backends[0]",
                "spec.backends[2].virtualService: exactly one of virtualServiceRef and virtualServiceARN must be set (none is)",
            ],
        ),
        (
            "node: listeners need service discovery",
            doc(
                "VirtualNode",
                "listeners:\n  - portMapping: {port: 8080, protocol: http}",
            ),
            vec!["spec.serviceDiscovery: is required when listeners are set"],
        ),
        (
            "node: TLS",
            doc(
                "VirtualNode",
                r#"listeners:
  - portMapping: {port: 8080, protocol: http}
    tls:
      mode: STRICT
      certificate: {file: {certificateChain: "", privateKey: /k}, sds: {secretName: s}}
      validation: {trust: {}}
serviceDiscovery: {dns: {hostname: a.b}}
backendDefaults:
  clientPolicy:
    tls:
      ports: [0]
      validation: {trust: {file: {certificateChain: /ca}, acm: {certificateAuthorityARNs: []}}}
"#,
            ),
            vec![
                "spec.listeners[0].tls.certificate: exactly one of acm, file and sds must be set (file and sds are)",
                "spec.listeners[0].tls.certificate.file.certificateChain: must not be empty",
                "spec.listeners[0].tls.validation.trust: exactly one of file and sds must be set (none is)",
                "spec.backendDefaults.clientPolicy.tls.ports[0]: must be between 1 and 65535 (got 0)",
                "spec.backendDefaults.clientPolicy.tls.validation.trust: exactly one of acm, file and sds must be set (acm and file are)",
                "spec.backendDefaults.clientPolicy.tls.validation.trust.acm.certificateAuthorityARNs: must have at least 1 entry (got 0)",
            ],
        ),
        (
            "service: both providers",
            doc(
                "VirtualService",
                r#"provider:
  virtualNode: {virtualNodeRef: {name: n}}
  virtualRouter: {}
"#,
            ),
            vec![
                "spec.provider: exactly one of virtualNode and virtualRouter must be set (virtualNode and virtualRouter are)",
                "spec.provider.virtualRouter: exactly one of virtualRouterRef and virtualRouterARN must be set (none is)",
            ],
        ),
        (
            "gateway: no listeners",
            doc("VirtualGateway", "listeners: []"),
            vec!["spec.listeners: must have at least 1 entry (got 0)"],
        ),
        (
            "gateway: listener protocols, pools and TLS",
            doc(
                "VirtualGateway",
                r#"listeners:
  - portMapping: {port: 8080, protocol: tcp}
  - portMapping: {port: 8443, protocol: http}
    healthCheck: {protocol: tcp, healthyThreshold: 2, unhealthyThreshold: 2, intervalMillis: 5000, timeoutMillis: 2000}
    connectionPool: {grpc: {maxRequests: 0}}
    tls: {mode: STRICT, certificate: {}}
  - portMapping: {port: 8443, protocol: http2}
"#,
            ),
            vec![
                r#"spec.listeners[1].healthCheck.protocol: must be http, http2 or grpc for a virtual gateway (got "tcp")"#,
                "spec.listeners[1].connectionPool.grpc: does not match the listener protocol http",
                "spec.listeners[1].connectionPool.grpc.maxRequests: must be at least 1 (got 0)",
                "spec.listeners[1].tls.certificate: exactly one of acm, file and sds must be set (none is)",
                "spec.listeners[2].portMapping.port: port 8443 is already used by spec.listeners[1]",
            ],
        ),
        (
            "gateway route: several route kinds, rewrites",
            doc(
                "GatewayRoute",
                r#"priority: -1
httpRoute:
  match: {prefix: /a, path: {exact: b}}
  action:
    target: {virtualService: {virtualServiceRef: {name: vs}}, port: 0}
    rewrite:
      prefix: {defaultPrefix: ENABLED, value: x}
      path: {exact: /y}
http2Route:
  match: {}
  action: {target: {virtualService: {}}}
"#,
            ),
            vec![
                "spec: exactly one of grpcRoute, httpRoute, http2Route and tcpRoute must be set (httpRoute and http2Route are)",
                "spec.priority: must be between 0 and 1000 (got -1)",
                "spec.httpRoute.match: only one of prefix and path may be set (both are)",
                r#"spec.httpRoute.match.path.exact: must start with "/""#,
                "spec.httpRoute.action.target.port: must be between 1 and 65535 (got 0)",
                "spec.httpRoute.action.rewrite.prefix: defaultPrefix and value are mutually exclusive",
                r#"spec.httpRoute.action.rewrite.prefix.value: must start and end with "/""#,
                "spec.http2Route.match: at least one of prefix, path and hostname must be set",
                "spec.http2Route.action.target.virtualService: exactly one of virtualServiceRef and virtualServiceARN must be set (none is)",
            ],
        ),
        (
            "gateway route: rewrite needs the matching match",
            doc(
                "GatewayRoute",
                r#"httpRoute:
  match: {hostname: {exact: a.example.com, suffix: .example.com}, method: get}
  action:
    target: {virtualService: {virtualServiceRef: {name: vs}}}
    rewrite: {prefix: {value: /a/}, path: {exact: /b}}
"#,
            ),
            vec![
                "spec.httpRoute.match.hostname: exactly one of exact, suffix and wildcard must be set (exact and suffix are)",
                r#"spec.httpRoute.match.method: must be one of CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE (got "get")"#,
                "spec.httpRoute.action.rewrite.prefix: requires match.prefix",
                "spec.httpRoute.action.rewrite.path: requires match.path",
            ],
        ),
        (
            "gateway route: gRPC match",
            doc(
                "GatewayRoute",
                r#"grpcRoute:
  match: {metadata: [{name: "", match: {regex: "[", prefix: p}}], port: 70000}
  action: {target: {virtualService: {virtualServiceRef: {name: vs}}}}
"#,
            ),
            vec![
                "spec.grpcRoute.match: at least one of serviceName and hostname must be set",
                "spec.grpcRoute.match.metadata[0].name: must not be empty",
                "spec.grpcRoute.match.metadata[0].match: exactly one of exact, prefix, suffix, regex and range must be set (prefix and regex are)",
                "spec.grpcRoute.match.metadata[0].match.regex: invalid regular expression: unclosed character class",
                "spec.grpcRoute.match.port: must be between 1 and 65535 (got 70000)",
            ],
        ),
        (
            "mesh: label selector",
            "apiVersion: appmesh.k8s.aws/v1beta2\nkind: Mesh\nmetadata: {name: m}\nspec:\n  namespaceSelector:\n    matchExpressions:\n      - {key: a, operator: In}\n      - {key: b, operator: Exists, values: [x]}\n      - {key: c, operator: Has}\n".to_string(),
            vec![
                "spec.namespaceSelector.matchExpressions[0].values: must not be empty for operator In",
                "spec.namespaceSelector.matchExpressions[1].values: must be empty for operator Exists",
                r#"spec.namespaceSelector.matchExpressions[2].operator: must be one of In, NotIn, Exists, DoesNotExist (got "Has")"#,
            ],
        ),
        (
            "Service ports",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n    - {port: 0}\n    - {port: 80, targetPort: 70000, protocol: HTTP, name: web}\n    - {port: 81, name: web}\n".to_string(),
            vec![
                "spec.ports[0].port: must be between 1 and 65535 (got 0)",
                "spec.ports[0].name: is required when a Service has several ports",
                "spec.ports[1].targetPort: must be between 1 and 65535 (got 70000)",
                r#"spec.ports[1].protocol: must be one of TCP, UDP, SCTP (got "HTTP")"#,
                r#"spec.ports[2].name: duplicate port name "web" (also spec.ports[1])"#,
            ],
        ),
        (
            "EndpointSlice address type and addresses",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints:\n  - addresses: [10.0.0.300]\n  - addresses: []\nports: [{port: 0}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: f}\naddressType: IPv5\nendpoints: []\n".to_string(),
            vec![
                r#"endpoints[0].addresses[0]: "10.0.0.300" is not a valid IPv4 address"#,
                "endpoints[1].addresses: must have at least 1 entry (got 0)",
                "ports[0].port: must be between 1 and 65535 (got 0)",
                r#"addressType: must be one of IPv4, IPv6, FQDN (got "IPv5")"#,
            ],
        ),
    ];
    for (name, yaml, want) in cases {
        assert_eq!(errors(&yaml), want, "case: {name}");
    }
}

#[test]
fn problems_carry_file_document_and_object() {
    let yaml = format!(
        "{}---\n{}",
        doc("VirtualNode", "serviceDiscovery: {dns: {hostname: a.b}}"),
        doc("VirtualGateway", "listeners: []")
    );
    let shown: Vec<String> = all_problems(&yaml)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "t.yaml (document 1): VirtualGateway ns/x: spec.listeners: must have at least 1 entry (got 0)"
        ]
    );
}

#[test]
fn aws_only_fields_are_ignored_with_the_reason() {
    let node = doc(
        "VirtualNode",
        r#"awsName: x_ns
listeners:
  - portMapping: {port: 8443, protocol: http}
    tls:
      mode: STRICT
      certificate: {acm: {certificateARN: "arn:aws:acm:cert"}}
      validation: {trust: {sds: {secretName: ca}}}
serviceDiscovery:
  awsCloudMap: {namespaceName: ns.local, serviceName: x, ipPreference: IPv6_ONLY}
backends:
  - virtualService: {virtualServiceARN: "arn:aws:appmesh:vs"}
backendDefaults:
  clientPolicy:
    tls:
      mode: STRICT
      certificate: {sds: {secretName: me}}
      validation: {trust: {acm: {certificateAuthorityARNs: ["arn:aws:acm-pca:ca"]}}}
meshRef: {name: m, uid: "1234"}
"#,
    );
    assert_eq!(
        ignored(&node),
        [
            "spec.awsName: ignored: AWS only: App Mesh's name for the object; Bowline uses metadata.name",
            "spec.listeners[0].tls.certificate.acm: ignored: AWS only: ACM certificates are not available; the listener gets no certificate from it",
            "spec.listeners[0].tls.validation.trust.sds: ignored: AWS only: SDS (SPIRE) certificates; Bowline issues workload identities itself",
            "spec.serviceDiscovery.awsCloudMap.ipPreference: ignored: AWS only: App Mesh's IP version preference for Envoy; not applied",
            "spec.serviceDiscovery.awsCloudMap: ignored: without spec.podSelector no pods are registered in this Cloud Map service for the node",
            "spec.backends[0].virtualService.virtualServiceARN: ignored: AWS only: an ARN names an App Mesh object in AWS; Bowline resolves only virtualServiceRef, so this backend is not added",
            "spec.backendDefaults.clientPolicy.tls.certificate.sds: ignored: AWS only: SDS (SPIRE) certificates; Bowline issues workload identities itself",
            "spec.backendDefaults.clientPolicy.tls.validation.trust.acm: ignored: AWS only: ACM Private CA trust is not available",
            "spec.backendDefaults.clientPolicy.tls.mode: ignored: not part of App Mesh's ClientPolicyTLS: the Kubernetes API server pruned it from App Mesh objects, so it never had an effect",
            "spec.meshRef.uid: ignored: the Kubernetes UID of the mesh; the reference is by name",
        ]
    );

    let mesh = "apiVersion: appmesh.k8s.aws/v1beta2\nkind: Mesh\nmetadata: {name: m}\nspec:\n  awsName: m\n  meshOwner: \"111122223333\"\n  egressFilter: {type: ALLOW_ALL}\n  serviceDiscovery: {ipPreference: IPv4_PREFERRED}\n";
    assert_eq!(
        ignored(mesh),
        [
            "spec.awsName: ignored: AWS only: App Mesh's name for the object; Bowline uses metadata.name",
            "spec.egressFilter: ignored: accepted; not yet enforced: egress filtering",
            "spec.serviceDiscovery.ipPreference: ignored: AWS only: App Mesh's IP version preference for Envoy; not applied",
            "spec.meshOwner: ignored: AWS only: the AWS account that owns a shared mesh",
        ]
    );

    let service = doc(
        "VirtualService",
        "awsName: x.ns.pvt.aws.local\nprovider: {virtualRouter: {virtualRouterARN: \"arn:aws:appmesh:vr\"}}",
    );
    assert_eq!(
        ignored(&service),
        [
            r#"spec.awsName: ignored: AWS only: App Mesh's name for the virtual service; Bowline serves it as "x.ns.svc.cluster.local", not "x.ns.pvt.aws.local""#,
            "spec.provider.virtualRouter.virtualRouterARN: ignored: AWS only: an ARN names an App Mesh object in AWS; Bowline resolves only virtualRouterRef, so the virtual service has no provider",
        ]
    );
}

#[test]
fn accepted_but_not_enforced_fields_are_noted_and_enforced_ones_are_not() {
    let node = doc(
        "VirtualNode",
        r#"listeners:
  - portMapping: {port: 8080, protocol: http}
    healthCheck: {protocol: http, path: /ping, healthyThreshold: 2, unhealthyThreshold: 2, intervalMillis: 5000, timeoutMillis: 2000}
    outlierDetection: {maxServerErrors: 5, maxEjectionPercent: 50, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}}
    connectionPool: {http: {maxConnections: 10, maxPendingRequests: 5}}
    timeout: {http: {perRequest: {unit: s, value: 5}, idle: {unit: s, value: 60}}}
    loadBalancer: {policy: RING_HASH, hashOn: {cookie: {name: sticky, ttl: {unit: s, value: 3600}, path: /}}}
serviceDiscovery: {dns: {hostname: x.ns.svc.cluster.local, responseType: ENDPOINTS}}
backends:
  - virtualService:
      virtualServiceRef: {name: y}
      clientPolicy: {tls: {validation: {trust: {file: {certificateChain: /ca.pem}}}}}
backendGroups: [{name: g}]
logging: {accessLog: {file: {path: /dev/stdout}}}
"#,
    );
    assert_eq!(
        ignored(&node),
        [
            "spec.serviceDiscovery.dns.responseType: ignored: accepted; not yet enforced: DNS response type",
            "spec.backendGroups: ignored: accepted; not yet enforced: BackendGroup objects are not read; their backends are not added",
        ]
    );

    let router = doc(
        "VirtualRouter",
        &format!(
            r#"listeners: [{{portMapping: {{port: 8080, protocol: http}}}}]
routes:
  - name: r
    httpRoute:
      match: {{prefix: /}}
      action: {{{TARGET}}}
      retryPolicy: {{maxRetries: 2, perRetryTimeout: {{unit: ms, value: 500}}, httpRetryEvents: [server-error]}}
      timeout: {{perRequest: {{unit: s, value: 5}}, idle: {{unit: s, value: 30}}}}
  - name: g
    grpcRoute:
      match: {{serviceName: pkg.Svc}}
      action: {{{TARGET}}}
      retryPolicy: {{maxRetries: 2, perRetryTimeout: {{unit: ms, value: 500}}, grpcRetryEvents: [unavailable]}}
  - name: t
    tcpRoute:
      action: {{{TARGET}}}
      timeout: {{idle: {{unit: s, value: 5}}}}
"#
        ),
    );
    // tcp idle timeouts are enforced where tcp is proxied (gateway tcp listeners).
    assert_eq!(ignored(&router), Vec::<String>::new());
}

#[test]
fn load_balancer_policies_and_hash_keys() {
    let node = |lb: &str, protocol: &str| {
        doc(
            "VirtualNode",
            &format!(
                "listeners:\n  - portMapping: {{port: 8080, protocol: {protocol}}}\n    loadBalancer: {lb}\nserviceDiscovery: {{dns: {{hostname: x.ns.svc}}}}\n"
            ),
        )
    };
    let p = "spec.listeners[0].loadBalancer";
    for ok in [
        "{policy: ROUND_ROBIN}",
        "{policy: LEAST_REQUEST}",
        "{policy: RANDOM}",
        "{policy: RING_HASH, hashOn: {sourceIp: true}}",
        "{policy: MAGLEV, hashOn: {header: {name: x-user}}}",
        "{policy: MAGLEV, hashOn: {cookie: {name: sid}}}",
    ] {
        assert_eq!(errors(&node(ok, "http")), Vec::<String>::new(), "{ok}");
    }
    let cases: [(&str, &str, Vec<String>); 7] = [
        (
            "{policy: RING_HASH}",
            "http",
            vec![format!("{p}.hashOn: is required when policy is RING_HASH")],
        ),
        (
            "{policy: RANDOM, hashOn: {sourceIp: true}}",
            "http",
            vec![format!(
                "{p}.hashOn: is only allowed when policy is RING_HASH or MAGLEV (got RANDOM)"
            )],
        ),
        (
            "{policy: MAGLEV, hashOn: {sourceIp: true, header: {name: a}}}",
            "http",
            vec![format!(
                "{p}.hashOn: exactly one of sourceIp, header and cookie must be set (sourceIp and header are)"
            )],
        ),
        (
            "{policy: MAGLEV, hashOn: {sourceIp: false}}",
            "http",
            vec![format!("{p}.hashOn.sourceIp: must be true when set")],
        ),
        (
            "{policy: MAGLEV, hashOn: {header: {name: \"bad name\"}}}",
            "http",
            vec![format!(
                "{p}.hashOn.header.name: \"bad name\" is not a header name"
            )],
        ),
        (
            "{policy: RING_HASH, hashOn: {cookie: {name: sid, path: nope, ttl: {unit: s, value: -1}}}}",
            "http",
            vec![
                format!("{p}.hashOn.cookie.ttl.value: must not be negative (got -1)"),
                format!("{p}.hashOn.cookie.path: must start with \"/\""),
            ],
        ),
        (
            "{policy: RING_HASH, hashOn: {cookie: {name: sid}}}",
            "tcp",
            vec![format!(
                "{p}.hashOn: header and cookie hashing need an http, http2 or grpc listener (got \"tcp\")"
            )],
        ),
    ];
    for (lb, protocol, want) in cases {
        assert_eq!(errors(&node(lb, protocol)), want, "{lb}");
    }
}

#[test]
fn valid_documents_have_no_problems() {
    let cases = [
        doc(
            "VirtualRouter",
            &format!(
                r#"listeners: [{{portMapping: {{port: 8080, protocol: http}}}}]
routes:
  - name: a
    priority: 0
    httpRoute:
      match:
        path: {{regex: "^/api/v[0-9]+$"}}
        method: GET
        scheme: https
        headers: [{{name: x-user, match: {{range: {{start: 1, end: 10}}}}, invert: true}}]
        queryParameters: [{{name: q, match: {{exact: v}}}}]
        port: 8080
      action: {{{TARGET}}}
  - name: b
    grpcRoute:
      match: {{serviceName: pkg.Svc, methodName: Get, metadata: [{{name: m}}]}}
      action: {{{TARGET}}}
"#
            ),
        ),
        doc(
            "GatewayRoute",
            r#"priority: 1000
httpRoute:
  match: {prefix: /test/}
  action:
    target: {virtualService: {virtualServiceRef: {name: vs}}}
    rewrite: {prefix: {value: /red/}, hostname: {defaultTargetHostname: DISABLED}}
"#,
        ),
        doc(
            "GatewayRoute",
            r#"http2Route:
  match: {hostname: {suffix: .example.com}}
  action: {target: {virtualService: {virtualServiceRef: {name: vs}}}}
"#,
        ),
        doc(
            "VirtualGateway",
            "listeners:\n  - portMapping: {port: 8080, protocol: http}\n  - portMapping: {port: 8090, protocol: grpc}",
        ),
    ];
    for yaml in cases {
        assert_eq!(all_problems(&yaml), Vec::<Problem>::new(), "{yaml}");
    }
}

// === references ===

fn objects(yaml: &str) -> Vec<(Source, Object)> {
    parse_file(FsPath::new("refs.yaml"), yaml)
        .into_iter()
        .map(|p| match p {
            Parsed::Object { source, object, .. } => (source, *object),
            other => panic!("not an object: {other:?}"),
        })
        .collect()
}

fn shown_references(yaml: &str) -> Vec<String> {
    references(&objects(yaml))
        .iter()
        .map(ToString::to_string)
        .collect()
}

const NODES: &str = r#"apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: one, namespace: app}
spec:
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  serviceDiscovery: {dns: {hostname: one.app.svc.cluster.local}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: two, namespace: app}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
    - portMapping: {port: 8090, protocol: http}
  serviceDiscovery: {dns: {hostname: two.app.svc.cluster.local}}
"#;

#[test]
fn missing_references_are_errors_with_their_path() {
    let yaml = r#"apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: color, namespace: colorapp}
spec:
  provider: {virtualRouter: {virtualRouterRef: {name: color-router}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: r, namespace: colorapp}
spec:
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  routes:
    - name: a
      httpRoute:
        match: {prefix: /}
        action:
          weightedTargets:
            - {virtualNodeRef: {name: red}, weight: 1}
            - {virtualNodeRef: {name: blue, namespace: other}, weight: 1}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: front}
spec:
  backends: [{virtualService: {virtualServiceRef: {name: color}}}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: gr, namespace: colorapp}
spec:
  virtualGatewayRef: {name: gw}
  httpRoute:
    match: {prefix: /}
    action: {target: {virtualService: {virtualServiceRef: {name: nope}}}}
"#;
    assert_eq!(
        shown_references(yaml),
        [
            "refs.yaml (document 0): VirtualService colorapp/color: spec.provider.virtualRouter.virtualRouterRef: VirtualRouter colorapp/color-router does not exist",
            "refs.yaml (document 1): VirtualRouter colorapp/r: spec.routes[0].httpRoute.action.weightedTargets[0].virtualNodeRef: VirtualNode colorapp/red does not exist",
            "refs.yaml (document 1): VirtualRouter colorapp/r: spec.routes[0].httpRoute.action.weightedTargets[1].virtualNodeRef: VirtualNode other/blue does not exist",
            "refs.yaml (document 2): VirtualNode default/front: spec.backends[0].virtualService.virtualServiceRef: VirtualService default/color does not exist",
            "refs.yaml (document 3): GatewayRoute colorapp/gr: spec.httpRoute.action.target.virtualService.virtualServiceRef: VirtualService colorapp/nope does not exist",
            "refs.yaml (document 3): GatewayRoute colorapp/gr: spec.virtualGatewayRef: VirtualGateway colorapp/gw does not exist",
        ]
    );
}

#[test]
fn ports_must_name_a_listener_of_the_target() {
    let yaml = format!(
        r#"{NODES}---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {{name: r, namespace: app}}
spec:
  listeners: [{{portMapping: {{port: 80, protocol: http}}}}]
  routes:
    - name: a
      httpRoute:
        match: {{prefix: /}}
        action:
          weightedTargets:
            - {{virtualNodeRef: {{name: one}}, weight: 1, port: 9999}}
            - {{virtualNodeRef: {{name: one}}, weight: 1}}
            - {{virtualNodeRef: {{name: two}}, weight: 1}}
            - {{virtualNodeRef: {{name: two, namespace: app}}, weight: 1, port: 8090}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {{name: two, namespace: app}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: two}}}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {{name: gw, namespace: app}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
    - portMapping: {{port: 8443, protocol: http}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {{name: gr, namespace: app}}
spec:
  virtualGatewayRef: {{name: gw}}
  httpRoute:
    match: {{prefix: /, port: 9443}}
    action: {{target: {{virtualService: {{virtualServiceRef: {{name: two}}}}}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {{name: any-port, namespace: app}}
spec:
  virtualGatewayRef: {{name: gw}}
  http2Route:
    match: {{prefix: /}}
    action: {{target: {{virtualService: {{virtualServiceRef: {{name: two}}}}, port: 8080}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {{name: ok, namespace: app}}
spec:
  virtualGatewayRef: {{name: gw}}
  httpRoute:
    match: {{prefix: /, port: 8443}}
    action: {{target: {{virtualService: {{virtualServiceRef: {{name: two}}}}, port: 8090}}}}
"#
    );
    assert_eq!(
        shown_references(&yaml),
        [
            "refs.yaml (document 2): VirtualRouter app/r: spec.routes[0].httpRoute.action.weightedTargets[0].port: VirtualNode app/one has no listener on port 9999 (listeners: 8080)",
            "refs.yaml (document 2): VirtualRouter app/r: spec.routes[0].httpRoute.action.weightedTargets[2].port: is required: VirtualNode app/two has several listeners (8080, 8090)",
            "refs.yaml (document 5): GatewayRoute app/gr: spec.httpRoute.action.target.port: is required: VirtualNode app/two (the provider of VirtualService app/two) has several listeners (8080, 8090)",
            "refs.yaml (document 5): GatewayRoute app/gr: spec.httpRoute.match.port: VirtualGateway app/gw has no listener on port 9443 (listeners: 8080, 8443)",
        ]
    );
}

#[test]
fn references_resolve_across_the_set_and_into_the_referrers_namespace() {
    let yaml = format!(
        r#"{NODES}---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {{name: one, namespace: app}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: one}}}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {{name: client, namespace: other}}
spec:
  backends:
    - virtualService: {{virtualServiceRef: {{name: one, namespace: app}}}}
    - virtualService: {{virtualServiceARN: "arn:aws:appmesh:vs"}}
"#
    );
    assert_eq!(shown_references(&yaml), Vec::<String>::new());
}

#[test]
fn gateway_tls_is_enforced_and_its_sni_certificates_are_checked() {
    let good = doc(
        "VirtualGateway",
        r#"listeners:
  - portMapping: {port: 8443, protocol: http}
    tls:
      mode: STRICT
      certificate: {file: {certificateChain: /certs/default.pem, privateKey: /certs/default.key}}
      certificates:
        - file: {certificateChain: /certs/api.pem, privateKey: /certs/api.key}
          serverNames: [api.example.com, "*.api.example.com"]
      validation:
        trust: {file: {certificateChain: /certs/clients.pem}}
        subjectAlternativeNames: {match: {exact: [spiffe://example/client]}}
  - portMapping: {port: 9443, protocol: http}
    tls:
      mode: PERMISSIVE
      certificates:
        - file: {certificateChain: /certs/only.pem, privateKey: /certs/only.key}
backendDefaults:
  clientPolicy:
    tls:
      ports: [8080]
      certificate: {file: {certificateChain: /certs/gw.pem, privateKey: /certs/gw.key}}
      validation:
        trust: {file: {certificateChain: /certs/ca.pem}}
        subjectAlternativeNames: {match: {exact: [backend.example.com]}}
"#,
    );
    assert_eq!(ignored(&good), Vec::<String>::new());

    let bad = doc(
        "VirtualGateway",
        r#"listeners:
  - portMapping: {port: 8443, protocol: http}
    tls:
      mode: STRICT
      certificate: {file: {certificateChain: /c.pem, privateKey: /c.key}}
      certificates:
        - file: {certificateChain: /a.pem, privateKey: ""}
        - file: {certificateChain: /b.pem, privateKey: /b.key}
          serverNames: [api.example.com, "a.*.com", API.example.com]
      validation:
        trust: {file: {certificateChain: /ca.pem}}
        subjectAlternativeNames: {match: {exact: [""]}}
  - portMapping: {port: 9443, protocol: http}
    tls: {mode: STRICT}
"#,
    );
    assert_eq!(
        errors(&bad),
        [
            "spec.listeners[0].tls.certificates[0].file.privateKey: must not be empty",
            "spec.listeners[0].tls.certificates[0]: certificate is already the default certificate (without serverNames); at most one may be",
            r#"spec.listeners[0].tls.certificates[1].serverNames[1]: "a.*.com" is not a DNS name or a *. wildcard of one label"#,
            r#"spec.listeners[0].tls.certificates[1].serverNames[2]: "API.example.com" is also served by spec.listeners[0].tls.certificates[1].serverNames[0]"#,
            "spec.listeners[0].tls.validation.subjectAlternativeNames.match.exact[0]: must not be empty",
            "spec.listeners[1].tls.certificate: exactly one of acm, file and sds must be set (none is)",
        ]
    );

    let aws = doc(
        "VirtualGateway",
        r#"listeners:
  - portMapping: {port: 8443, protocol: http}
    tls:
      mode: STRICT
      certificate: {acm: {certificateARN: "arn:aws:acm:cert"}}
      validation: {trust: {sds: {secretName: ca}}}
backendDefaults:
  clientPolicy:
    tls:
      certificate: {sds: {secretName: me}}
      validation: {trust: {acm: {certificateAuthorityARNs: ["arn:aws:acm-pca:ca"]}}}
"#,
    );
    assert_eq!(
        ignored(&aws),
        [
            "spec.listeners[0].tls.certificate.acm: ignored: AWS only: ACM certificates are not available; the listener is not served (rather than in plaintext)",
            "spec.listeners[0].tls.validation.trust.sds: ignored: AWS only: SDS (SPIRE) certificates and trust are not available; the listener is not served (rather than without them)",
            "spec.backendDefaults.clientPolicy.tls.certificate.sds: ignored: AWS only: SDS (SPIRE) certificates and trust are not available; requests to the backends the policy applies to are refused (rather than sent without them)",
            "spec.backendDefaults.clientPolicy.tls.validation.trust.acm: ignored: AWS only: ACM Private CA trust is not available; requests to the backends the policy applies to are refused (rather than sent unverified)",
        ]
    );
}

// === tcp gateway routes (Bowline extension) ===

#[test]
fn tcp_gateway_routes_are_checked_like_the_others() {
    let bad = doc(
        "GatewayRoute",
        r#"tcpRoute:
  match: {port: 70000}
  action: {target: {virtualService: {}, port: 0}}
  timeout: {idle: {unit: s, value: -1}}
"#,
    );
    let both = doc(
        "GatewayRoute",
        r#"tcpRoute:
  action: {target: {virtualService: {virtualServiceRef: {name: db}}}}
httpRoute:
  match: {prefix: /}
  action: {target: {virtualService: {virtualServiceRef: {name: db}}}}
"#,
    );
    let shown = |yaml: &str| -> Vec<String> { all_problems(yaml).iter().map(short).collect() };
    assert_eq!(
        shown(&bad),
        [
            "spec.tcpRoute.match.port: must be between 1 and 65535 (got 70000)",
            "spec.tcpRoute.action.target.virtualService: exactly one of virtualServiceRef and virtualServiceARN must be set (none is)",
            "spec.tcpRoute.action.target.port: must be between 1 and 65535 (got 0)",
            "spec.tcpRoute.timeout.idle.value: must not be negative (got -1)",
        ]
    );
    assert_eq!(
        shown(&both),
        [
            "spec: exactly one of grpcRoute, httpRoute, http2Route and tcpRoute must be set (httpRoute and tcpRoute are)"
        ]
    );
    let good = [
        doc(
            "GatewayRoute",
            r#"priority: 10
tcpRoute:
  match: {port: 5432}
  action: {target: {virtualService: {virtualServiceRef: {name: db}}, port: 5432}}
  timeout: {idle: {unit: s, value: 0}}
"#,
        ),
        doc(
            "VirtualGateway",
            "listeners:\n  - portMapping: {port: 5432, protocol: tcp}\n  - portMapping: {port: 8080, protocol: http}",
        ),
    ];
    for yaml in good {
        assert_eq!(all_problems(&yaml), Vec::<Problem>::new(), "{yaml}");
    }
}

#[test]
fn tcp_gateway_route_ports_name_listeners_of_the_gateway_and_the_target() {
    let yaml = format!(
        r#"{NODES}---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {{name: two, namespace: app}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: two}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: app}}
spec:
  listeners: [{{portMapping: {{port: 5432, protocol: tcp}}}}]
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: db, namespace: app}}
spec:
  virtualGatewayRef: {{name: gw}}
  tcpRoute:
    match: {{port: 5433}}
    action: {{target: {{virtualService: {{virtualServiceRef: {{name: two}}}}}}}}
"#
    );
    assert_eq!(
        shown_references(&yaml),
        [
            "refs.yaml (document 4): GatewayRoute app/db: spec.tcpRoute.action.target.port: is required: VirtualNode app/two (the provider of VirtualService app/two) has several listeners (8080, 8090)",
            "refs.yaml (document 4): GatewayRoute app/db: spec.tcpRoute.match.port: VirtualGateway app/gw has no listener on port 5433 (listeners: 5432)",
        ]
    );
}

#[test]
fn gateway_listener_pools_are_enforced_and_health_checks_explained() {
    let gw = doc(
        "VirtualGateway",
        r#"listeners:
  - portMapping: {port: 8080, protocol: http}
    connectionPool: {http: {maxConnections: 1, maxPendingRequests: 1}}
    healthCheck: {protocol: http, path: /ping, healthyThreshold: 2, unhealthyThreshold: 2, intervalMillis: 5000, timeoutMillis: 2000}
  - portMapping: {port: 8081, protocol: http2}
    connectionPool: {http2: {maxRequests: 1}}
  - portMapping: {port: 8082, protocol: grpc}
    connectionPool: {grpc: {maxRequests: 3}}
"#,
    );
    assert_eq!(
        ignored(&gw),
        [
            "spec.listeners[0].healthCheck: ignored: no effect, as in App Mesh: a listener's health check is run by the proxies that send to that listener, and no route sends to a virtual gateway; probe the gateway itself with GET /ready on its admin address",
        ]
    );
}
