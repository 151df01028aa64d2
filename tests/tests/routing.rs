//! End-to-end routing: the real `bowline-control-plane` and `bowline-gateway` with
//! `bowline-echo` upstreams, exercising the Bowline routing extensions of GatewayRoutes and
//! router routes: cookie routing, regex rewrites with capture groups, redirects, direct
//! responses, request and response header changes, CORS, wildcard hosts, and mirroring (to a
//! recording upstream, to a closed port and to an upstream that never answers).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bowline_tests::{Echo, HttpClient, Recorder, Silent, Stack, eventually, free_port};
use bytes::Bytes;

/// A virtual service `name` provided by a virtual node reached at 127.0.0.1:`port`.
fn service(name: &str, port: u16) -> String {
    format!(
        r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: {name}, namespace: web}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: {name}}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {{name: {name}, namespace: web}}
spec:
  listeners:
    - portMapping: {{port: {port}, protocol: http}}
  serviceDiscovery:
    dns: {{hostname: 127.0.0.1}}
"#
    )
}

fn gateway(gw_port: u16, routes: &str) -> String {
    format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: web}}
spec:
  listeners:
    - portMapping: {{port: {gw_port}, protocol: http}}
{routes}"#
    )
}

const FILTER_ROUTES: &str = r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: shop-beta, namespace: web}
spec:
  httpRoute:
    match:
      prefix: /shop
      cookies:
        - name: channel
          match: {exact: beta}
    action:
      target: {virtualService: {virtualServiceRef: {name: beta}}}
      rewrite: {prefix: {defaultPrefix: DISABLED}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: shop, namespace: web}
spec:
  httpRoute:
    match: {prefix: /shop}
    action:
      target: {virtualService: {virtualServiceRef: {name: main}}}
      rewrite: {prefix: {defaultPrefix: DISABLED}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: users, namespace: web}
spec:
  httpRoute:
    match: {prefix: /users/}
    action:
      target: {virtualService: {virtualServiceRef: {name: main}}}
      rewrite:
        regex: {pattern: "^/users/(\\d+)/orders/(\\d+)$", substitution: "/v2/orders/${2}/by/$1"}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: to-https, namespace: web}
spec:
  httpRoute:
    match: {prefix: /secure}
    action:
      redirect: {scheme: https, statusCode: 301}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: moved, namespace: web}
spec:
  httpRoute:
    match: {prefix: /old/}
    action:
      redirect:
        hostname: new.example.com
        path: {prefix: /new/}
        statusCode: 308
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: maintenance, namespace: web}
spec:
  httpRoute:
    match: {path: {exact: /status}}
    action:
      directResponse: {status: 503, body: "down for maintenance"}
    responseHeaders:
      add: [{name: retry-after, value: "120"}]
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: headers, namespace: web}
spec:
  httpRoute:
    match: {prefix: /headers}
    action:
      target: {virtualService: {virtualServiceRef: {name: main}}}
      rewrite: {prefix: {defaultPrefix: DISABLED}}
    requestHeaders:
      set: [{name: x-env, value: prod}]
      add: [{name: x-tag, value: gateway}]
      remove: [x-secret]
    responseHeaders:
      add: [{name: x-served-by, value: bowline}]
      remove: [x-echo-name]
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: api, namespace: web}
spec:
  httpRoute:
    match: {prefix: /api, method: GET}
    action:
      target: {virtualService: {virtualServiceRef: {name: main}}}
      rewrite: {prefix: {defaultPrefix: DISABLED}}
    cors:
      allowOrigins: ["https://app.example.com", "https://*.example.org"]
      allowMethods: [GET, PUT]
      allowHeaders: [x-token]
      exposeHeaders: [x-trace]
      maxAge: {unit: s, value: 600}
      allowCredentials: true
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {name: tenants, namespace: web}
spec:
  httpRoute:
    match:
      prefix: /
      hostname: {wildcard: "*.tenants.example"}
    action:
      target: {virtualService: {virtualServiceRef: {name: beta}}}
"#;

struct Env {
    _stack: Stack,
    gw: SocketAddr,
    gw_port: u16,
    client: HttpClient,
}

/// Starts the stack with `routes` and `services`, and waits until `probe` (a GET) answers 200.
async fn start(gw_port: u16, routes: &str, services: String, probe: &str) -> Env {
    let files = vec![
        ("gateway.yaml", gateway(gw_port, routes)),
        ("services.yaml", services),
    ];
    let stack = Stack::start(&files, "web/gw").await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let client = HttpClient::http1();
    eventually("the gateway routes", || {
        let client = client.clone();
        async move {
            let r = client.get(gw, "shop.example", probe, &[]).await?;
            ensure!(r.status == 200, "status {}: {}", r.status, r.body);
            Ok(())
        }
    })
    .await;
    Env {
        _stack: stack,
        gw,
        gw_port,
        client,
    }
}

fn header<'a>(r: &'a bowline_tests::Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matches_actions_and_filters() {
    let main = Echo::start("main").unwrap();
    let beta = Echo::start("beta").unwrap();
    let gw_port = free_port();
    let services = service("main", main.port()) + &service("beta", beta.port());
    let env = start(gw_port, FILTER_ROUTES, services, "/shop").await;
    let (c, gw) = (&env.client, env.gw);

    // Cookie routing: `channel=beta` among other cookies, in one header or several.
    let r = c.get(gw, "shop.example", "/shop/cart", &[]).await.unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("main"), "{}", r.body);
    let r = c
        .get(
            gw,
            "shop.example",
            "/shop/cart",
            &[("cookie", "a=1; channel=beta")],
        )
        .await
        .unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("beta"), "{}", r.body);
    let r = c
        .get(
            gw,
            "shop.example",
            "/shop/cart",
            &[("cookie", "channel=stable")],
        )
        .await
        .unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("main"), "{}", r.body);
    let h2 = HttpClient::h2c();
    let r = h2
        .get(
            gw,
            "shop.example",
            "/shop/cart",
            &[("cookie", "a=1"), ("cookie", "channel=beta")],
        )
        .await
        .unwrap();
    assert_eq!(
        r.echo_name().as_deref(),
        Some("beta"),
        "h2 cookies: {}",
        r.body
    );

    // Regex rewrite with capture groups; the query is kept.
    let r = c
        .get(gw, "shop.example", "/users/42/orders/7?full=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.echo_field("path").as_deref(),
        Some("/v2/orders/7/by/42?full=1")
    );

    // Redirects: status and Location.
    let r = c
        .get(gw, "shop.example:8080", "/secure/login?next=%2F", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        header(&r, "location"),
        Some("https://shop.example/secure/login?next=%2F")
    );
    let host = format!("shop.example:{}", env.gw_port);
    let r = c.get(gw, &host, "/old/items/1?x=y", &[]).await.unwrap();
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        header(&r, "location"),
        Some(format!("http://new.example.com:{}/new/items/1?x=y", env.gw_port).as_str())
    );
    assert!(r.body.is_empty());

    // Direct response, with a response header added.
    let r = c.get(gw, "shop.example", "/status", &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "down for maintenance");
    assert_eq!(header(&r, "retry-after"), Some("120"));
    assert!(header(&r, "x-bowline-error").is_none(), "not a proxy error");

    // Request headers set/added/removed as the upstream sees them; response headers changed.
    let r = c
        .get(
            gw,
            "shop.example",
            "/headers",
            &[
                ("x-env", "dev"),
                ("x-tag", "client"),
                ("x-secret", "hunter2"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json().unwrap()["headers"].clone();
    assert_eq!(seen["x-env"], serde_json::json!(["prod"]));
    assert_eq!(seen["x-tag"], serde_json::json!(["client", "gateway"]));
    assert!(seen.get("x-secret").is_none(), "{seen}");
    assert_eq!(header(&r, "x-served-by"), Some("bowline"));
    assert!(header(&r, "x-echo-name").is_none());

    // CORS preflight, answered by the gateway (the route matches GET only).
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "x-token"),
    ];
    let r = c
        .request("OPTIONS", gw, "shop.example", "/api/items", &preflight)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.echo_name().is_none(),
        "answered by the gateway: {}",
        r.body
    );
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("x-token"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    // A foreign origin gets no CORS headers.
    let r = c
        .request(
            "OPTIONS",
            gw,
            "shop.example",
            "/api/items",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
    // The actual request goes upstream and gets the CORS response headers.
    let r = c
        .get(
            gw,
            "shop.example",
            "/api/items",
            &[("origin", "https://shop.example.org")],
        )
        .await
        .unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("main"), "{}", r.body);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://shop.example.org")
    );
    assert_eq!(header(&r, "access-control-expose-headers"), Some("x-trace"));
    assert_eq!(header(&r, "vary"), Some("origin"));
    // Without Origin: no CORS headers.
    let r = c.get(gw, "shop.example", "/api/items", &[]).await.unwrap();
    assert!(header(&r, "access-control-allow-origin").is_none());

    // Wildcard hostnames: one or more labels, never the bare domain.
    for (host, want) in [
        ("a.tenants.example", Some("beta")),
        ("a.b.tenants.example", Some("beta")),
    ] {
        let r = c.get(gw, host, "/anything", &[]).await.unwrap();
        assert_eq!(r.echo_name().as_deref(), want, "{host}: {}", r.body);
    }
    let r = c
        .get(gw, "tenants.example", "/anything", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{host}: {}", r.body);
}

fn mirror_routes(node: &str) -> String {
    format!(
        r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: {node}, namespace: web}}
spec:
  httpRoute:
    match: {{prefix: /{node}}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: main}}}}}}
      rewrite: {{prefix: {{defaultPrefix: DISABLED}}}}
    requestHeaders:
      set: [{{name: x-mirrored-route, value: {node}}}]
    mirror:
      - virtualNodeRef: {{name: {node}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirroring_never_touches_the_real_response() {
    let main = Echo::start("main").unwrap();
    let mut recorder = Recorder::start().await.unwrap();
    let silent = Silent::start().await.unwrap();
    let closed = free_port();
    let gw_port = free_port();
    let routes = ["recorder", "closed", "silent"]
        .iter()
        .map(|n| mirror_routes(n))
        .collect::<String>();
    let services = service("main", main.port())
        + &service("recorder", recorder.port())
        + &service("closed", closed)
        + &service("silent", silent.addr.port());
    let env = start(gw_port, &routes, services, "/recorder/ready").await;
    let (c, gw) = (&env.client, env.gw);
    // The probe itself was mirrored; the recorder saw it.
    let first = recorder.next().await.unwrap();
    assert_eq!(first.path, "/recorder/ready");
    recorder.received();

    // A request without a body: the copy has the upstream request's path, query and headers.
    let r = c
        .get(
            gw,
            "shop.example",
            "/recorder/items?id=3",
            &[("x-trace", "t1")],
        )
        .await
        .unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("main"), "{}", r.body);
    let copy = recorder.next().await.unwrap();
    assert_eq!(copy.method, "GET");
    assert_eq!(copy.path, "/recorder/items?id=3");
    assert_eq!(copy.headers["x-trace"], "t1");
    assert_eq!(copy.headers["x-mirrored-route"], "recorder");
    assert_eq!(copy.headers["host"], "main.web.svc.cluster.local");

    // A small body is copied whole; the real upstream gets it too.
    let body = Bytes::from(vec![b'x'; 10_000]);
    let r = c
        .send(
            "POST",
            gw,
            "shop.example",
            "/recorder/upload",
            &[("x-seq", "small")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["bodyBytes"], 10_000);
    let copy = recorder.next().await.unwrap();
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.body, body);

    // A body above the 64 KiB cap is not mirrored; the real request is unaffected.
    let big = Bytes::from(vec![b'y'; 100_000]);
    let r = c
        .send(
            "POST",
            gw,
            "shop.example",
            "/recorder/upload",
            &[("x-seq", "big")],
            big,
        )
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bodyBytes"], 100_000);
    let r = c
        .get(gw, "shop.example", "/recorder/after", &[("x-seq", "after")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let copy = recorder.next().await.unwrap();
    assert_eq!(
        copy.headers["x-seq"], "after",
        "the big body was not copied"
    );

    // A mirror to a closed port, and one to an upstream that never answers: the real responses
    // are 200 and do not wait for the mirror (the clusters' connect timeout is 1 s, the mirror
    // timeout 10 s).
    for path in ["/closed/x", "/silent/x"] {
        for _ in 0..5 {
            let started = Instant::now();
            let r = c.get(gw, "shop.example", path, &[]).await.unwrap();
            let took = started.elapsed();
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(r.echo_name().as_deref(), Some("main"));
            assert!(
                took < Duration::from_secs(1),
                "{path} took {took:?}: the mirror delayed the real response"
            );
        }
    }
}
