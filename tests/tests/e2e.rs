//! End-to-end: the real `bowline-control-plane` and `bowline-gateway` binaries on loopback, with
//! `bowline-echo` upstreams, driven by manifest files. One test binary (see STYLE.md §30).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use bowline_tests::{Echo, HttpClient, Stack, eventually, free_port, load};

/// The upstreams every scenario uses.
struct Upstreams {
    front: Echo,
    blue: Echo,
    green: Echo,
    red: Echo,
}

impl Upstreams {
    fn start() -> Upstreams {
        Upstreams {
            front: Echo::start("front").unwrap(),
            blue: Echo::start("blue").unwrap(),
            green: Echo::start("green").unwrap(),
            red: Echo::start("red").unwrap(),
        }
    }
}

/// Gateway, routes and discovery for namespace `shop`, with the color router split `weights`
/// (blue, green) and a `color: red` header route.
fn manifests(gw_port: u16, up: &Upstreams, dead_port: u16) -> Vec<(&'static str, String)> {
    let gateway = format!(
        r#"
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: shop}}
spec:
  listeners:
    - portMapping: {{port: {gw_port}, protocol: http}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: color, namespace: shop}}
spec:
  httpRoute:
    match: {{prefix: /color}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: color}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: front, namespace: shop}}
spec:
  httpRoute:
    match: {{prefix: /front}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: front}}}}}}
      rewrite:
        prefix: {{defaultPrefix: DISABLED}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: legacy, namespace: shop}}
spec:
  httpRoute:
    match: {{prefix: /legacy/}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: front}}}}}}
      rewrite:
        prefix: {{value: /v2/}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: api, namespace: shop}}
spec:
  httpRoute:
    match:
      prefix: /front
      hostname: {{exact: api.example.com}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: green}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: internal, namespace: shop}}
spec:
  httpRoute:
    match:
      prefix: /front
      hostname: {{suffix: .internal.example}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: red}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: dead, namespace: shop}}
spec:
  httpRoute:
    match: {{prefix: /dead}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: dead}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: empty, namespace: shop}}
spec:
  httpRoute:
    match: {{prefix: /empty}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: empty}}}}}}
"#
    );
    let mut services = String::new();
    for (vs, node) in [
        ("front", "front"),
        ("green", "green"),
        ("red", "red"),
        ("dead", "dead"),
        ("empty", "empty"),
    ] {
        services += &format!(
            r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: {vs}, namespace: shop}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: {node}}}}}}}
"#
        );
    }
    services += r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {name: color, namespace: shop}
spec:
  provider: {virtualRouter: {virtualRouterRef: {name: color}}}
"#;
    let mut discovery = String::new();
    for (name, port) in [
        ("front", up.front.port()),
        ("blue", up.blue.port()),
        ("green", up.green.port()),
        ("red", up.red.port()),
        ("dead", dead_port),
        ("empty", 0),
    ] {
        discovery += &format!(
            r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {{name: {name}, namespace: shop}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
  serviceDiscovery:
    dns: {{hostname: {name}.shop.svc.cluster.local}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: http, port: 8080, targetPort: {port}}}]
"#
        );
        if port != 0 {
            discovery += &format!(
                r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: ["127.0.0.1"]
"#
            );
        }
    }
    vec![
        ("gateway.yaml", gateway),
        ("services.yaml", services),
        ("discovery.yaml", discovery),
        ("router.yaml", router(75, 25, "/")),
    ]
}

/// The color router: header `color: red` → red, then blue/green by weight.
fn router(blue: u32, green: u32, prefix: &str) -> String {
    format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualRouter
metadata: {{name: color, namespace: shop}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
  routes:
    - name: by-header
      priority: 10
      httpRoute:
        match:
          prefix: /
          headers:
            - name: color
              match: {{exact: red}}
        action:
          weightedTargets:
            - virtualNodeRef: {{name: red}}
              weight: 1
    - name: by-weight
      priority: 20
      httpRoute:
        match: {{prefix: "{prefix}"}}
        action:
          weightedTargets:
            - virtualNodeRef: {{name: blue}}
              weight: {blue}
            - virtualNodeRef: {{name: green}}
              weight: {green}
"#
    )
}

struct Env {
    stack: Stack,
    gw: SocketAddr,
    client: HttpClient,
    _up: Upstreams,
}

async fn start() -> Env {
    start_with(&[]).await
}

/// The shop stack with extra gateway flags.
async fn start_with(gateway_args: &[&str]) -> Env {
    let up = Upstreams::start();
    let gw_port = free_port();
    let dead_port = free_port(); // nothing listens there
    let files = manifests(gw_port, &up, dead_port);
    let stack = Stack::start_with(&files, "shop/gw", gateway_args).await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let client = HttpClient::http1();
    // The first config is applied before /ready; routes are live from here.
    eventually("gateway routes /front", || {
        let client = client.clone();
        async move {
            let r = client.get(gw, "shop.example", "/front", &[]).await?;
            ensure!(r.status == 200, "status {}: {}", r.status, r.body);
            Ok(())
        }
    })
    .await;
    Env {
        stack,
        gw,
        client,
        _up: up,
    }
}

/// Counts which upstream answered `n` GETs of `path`.
async fn tally(
    env: &Env,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = env
            .client
            .get(env.gw, "shop.example", path, headers)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        *counts.entry(r.echo_name().unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_routing_over_http1_and_h2c() {
    let env = start().await;
    let r = env
        .client
        .get(env.gw, "shop.example", "/color", &[("color", "red")])
        .await
        .unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("red"), "{}", r.body);
    // Case-insensitive header name, exact value: `Red` is not `red`.
    let r = env
        .client
        .get(env.gw, "shop.example", "/color", &[("Color", "Red")])
        .await
        .unwrap();
    assert_ne!(r.echo_name().as_deref(), Some("red"), "{}", r.body);
    // The same over HTTP/2 prior knowledge (h2c).
    let h2 = HttpClient::h2c();
    let r = h2
        .get(env.gw, "shop.example", "/color", &[("color", "red")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo_name().as_deref(), Some("red"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_split_lands_within_five_percent() {
    let env = start().await;
    let counts = tally(&env, "/color", &[], 1000).await;
    let blue = counts.get("blue").copied().unwrap_or(0);
    let green = counts.get("green").copied().unwrap_or(0);
    assert_eq!(blue + green, 1000, "{counts:?}");
    assert!(
        (700..=800).contains(&blue),
        "75 % ± 5 % of 1000 to blue: {counts:?}"
    );
    assert!(
        (200..=300).contains(&green),
        "25 % ± 5 % of 1000 to green: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_rewrites_and_host_rewrite() {
    let env = start().await;
    // Default prefix rewrite: the matched `/color` becomes `/`.
    let r = env
        .client
        .get(
            env.gw,
            "shop.example",
            "/color/shades?x=1",
            &[("color", "red")],
        )
        .await
        .unwrap();
    assert_eq!(
        r.echo_field("path").as_deref(),
        Some("/shades?x=1"),
        "{}",
        r.body
    );
    let r = env
        .client
        .get(env.gw, "shop.example", "/color", &[("color", "red")])
        .await
        .unwrap();
    assert_eq!(r.echo_field("path").as_deref(), Some("/"), "{}", r.body);
    // Default hostname rewrite: Host becomes the target virtual service's name.
    assert_eq!(
        r.echo_field("host").as_deref(),
        Some("color.shop.svc.cluster.local"),
        "{}",
        r.body
    );
    // Explicit value: `/legacy/items` → `/v2/items`.
    let r = env
        .client
        .get(env.gw, "shop.example", "/legacy/items", &[])
        .await
        .unwrap();
    assert_eq!(
        r.echo_field("path").as_deref(),
        Some("/v2/items"),
        "{}",
        r.body
    );
    // defaultPrefix DISABLED keeps the path as sent.
    let r = env
        .client
        .get(env.gw, "shop.example", "/front/a/b", &[])
        .await
        .unwrap();
    assert_eq!(
        r.echo_field("path").as_deref(),
        Some("/front/a/b"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostname_exact_and_suffix_match() {
    let env = start().await;
    let cases = [
        ("api.example.com", "green"),
        ("API.example.com:8080", "green"),
        ("db.internal.example", "red"),
        ("a.b.internal.example", "red"),
        ("shop.example", "front"),
    ];
    for (host, want) in cases {
        let r = env.client.get(env.gw, host, "/front", &[]).await.unwrap();
        assert_eq!(
            r.echo_name().as_deref(),
            Some(want),
            "Host {host}: {}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_route_is_404_and_unreachable_upstream_is_503_fast() {
    let env = start().await;
    let r = env
        .client
        .get(env.gw, "shop.example", "/nowhere", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body.to_lowercase().contains("no route"),
        "404 body says why: {}",
        r.body
    );

    for path in ["/dead", "/empty"] {
        let started = Instant::now();
        let r = env
            .client
            .get(env.gw, "shop.example", path, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(!r.body.is_empty(), "{path}: 503 has a body");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: 503 took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_edit_under_load_fails_nothing() {
    // One worker: the gateway runs its single-threaded runtime (as in the benchmark), serving
    // h1 and h2c load and applying the update on the same thread.
    let env = start_with(&["--worker-threads", "1"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (client, gw) = (env.client.clone(), env.gw);
    let h2 = HttpClient::h2c();
    let runner = tokio::spawn(load(8, stop.clone(), move || {
        let (client, h2) = (client.clone(), h2.clone());
        async move {
            for c in [&client, &h2] {
                let r = c.get(gw, "shop.example", "/color/x", &[]).await?;
                if r.status != 200 {
                    bail!("status {}: {}", r.status, r.body);
                }
            }
            Ok(())
        }
    }));
    // Wait for some traffic, then move everything to green while requests run.
    let before = env.stack.gateway_version().await.unwrap();
    env.stack
        .write_manifest("router.yaml", &router(0, 100, "/"));
    eventually("all traffic on green", || {
        let env = &env;
        async move {
            let counts = tally(env, "/color", &[], 20).await;
            ensure!(counts.get("green") == Some(&20), "{counts:?}");
            Ok(())
        }
    })
    .await;
    assert_ne!(env.stack.gateway_version().await.unwrap(), before);
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = runner.await.unwrap();
    assert!(ok > 0, "the load ran");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_edit_is_rejected_with_file_and_path_and_routing_stays() {
    let env = start().await;
    let version = env.stack.gateway_version().await.unwrap();
    env.stack
        .write_manifest("router.yaml", &router(0, 100, "no-slash"));
    eventually("the control plane reports the bad document", || {
        let out = env.stack.control_plane.output();
        async move {
            ensure!(
                out.contains("router.yaml")
                    && out.contains("spec.routes[1].httpRoute.match.prefix"),
                "log so far:\n{out}"
            );
            Ok(())
        }
    })
    .await;
    // The last good router still serves: the 75/25 split, not the rejected 0/100.
    let counts = tally(&env, "/color", &[], 40).await;
    assert_eq!(counts.get("blue"), Some(&30), "{counts:?}");
    assert_eq!(
        env.stack.gateway_version().await.unwrap(),
        version,
        "no new config was pushed"
    );
    // A later good edit is applied.
    env.stack
        .write_manifest("router.yaml", &router(0, 100, "/"));
    eventually("the good edit applies", || {
        let env = &env;
        async move {
            let counts = tally(env, "/color", &[], 10).await;
            ensure!(counts.get("green") == Some(&10), "{counts:?}");
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_survives_the_control_plane_and_catches_up_after_restart() {
    let mut env = start().await;
    env.stack.kill_control_plane();
    // Still serving the last config.
    let counts = tally(&env, "/color", &[], 20).await;
    assert_eq!(counts.values().sum::<usize>(), 20, "{counts:?}");
    let r = env
        .client
        .get(env.gw, "shop.example", "/color", &[("color", "red")])
        .await
        .unwrap();
    assert_eq!(r.echo_name().as_deref(), Some("red"));
    // Change routing while the control plane is down; the gateway cannot know yet.
    env.stack
        .write_manifest("router.yaml", &router(0, 100, "/"));
    let counts = tally(&env, "/color", &[], 20).await;
    assert_eq!(
        counts.get("blue"),
        Some(&15),
        "old split still serves: {counts:?}"
    );
    // Restart: the gateway reconnects and picks up the change.
    env.stack.restart_control_plane().await;
    eventually(
        "the gateway applies the change made while the control plane was down",
        || {
            let env = &env;
            async move {
                let counts = tally(env, "/color", &[], 10).await;
                ensure!(counts.get("green") == Some(&10), "{counts:?}");
                Ok(())
            }
        },
    )
    .await;
    assert!(env.stack.gateway.running(), "the gateway never exited");
}
