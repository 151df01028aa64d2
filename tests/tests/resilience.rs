//! End-to-end load balancing and resilience: the real `bowline-control-plane` and
//! `bowline-gateway` binaries with `bowline-echo` upstreams, driven by manifest files that use
//! App Mesh's fields (retryPolicy, healthCheck, outlierDetection, connectionPool) and Bowline's
//! `loadBalancer`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, ensure};
use bowline_tests::{
    Echo, HttpClient, Reply, Stack, eventually, free_port, load, metric_value, metrics,
    node_manifest, router_manifest, service_manifest,
};

const NS: &str = "shop";

/// A VirtualGateway on `port` with a GatewayRoute per (prefix, virtual service).
fn gateway(port: u16, routes: &[(&str, &str)]) -> String {
    let mut out = format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: {NS}}}
spec:
  listeners:
    - portMapping: {{port: {port}, protocol: http}}
"#
    );
    for (i, (prefix, vs)) in routes.iter().enumerate() {
        out += &format!(
            r#"---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: route-{i}, namespace: {NS}}}
spec:
  httpRoute:
    match: {{prefix: "{prefix}"}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: {vs}}}}}}}
"#
        );
    }
    out
}

/// A VirtualNode `name` on port 8080 whose listener carries `extras` (flow-style YAML fields),
/// a virtual service of the same name provided by it, and a Service with one EndpointSlice per
/// echo.
fn node(name: &str, protocol: &str, extras: &[&str], echos: &[&Echo]) -> String {
    let ports: Vec<u16> = echos.iter().map(|e| e.port()).collect();
    node_manifest(NS, name, protocol, extras, &ports)
}

/// A virtual service provided by the node of the same name.
fn node_service(name: &str) -> String {
    service_manifest(NS, name, "virtualNode")
}

/// A virtual service `name` provided by a router whose one route sends everything to the node
/// `node`, with `retry` as its retryPolicy (flow-style YAML).
fn routed_service(name: &str, node: &str, retry: &str) -> String {
    service_manifest(NS, name, "virtualRouter")
        + &router_manifest(
            NS,
            name,
            "http",
            "httpRoute",
            "{prefix: /}",
            node,
            Some(retry),
        )
}

struct Env {
    stack: Stack,
    gw: SocketAddr,
    client: HttpClient,
}

impl Env {
    async fn start(gw_port: u16, manifests: String) -> Env {
        let stack = Stack::start(&[("mesh.yaml", manifests)], &format!("{NS}/gw")).await;
        let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
        Env {
            stack,
            gw,
            client: HttpClient::http1(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.client
            .get(self.gw, "shop.example", path, headers)
            .await
    }

    async fn metrics(&self) -> String {
        metrics(self.stack.gw_admin).await.unwrap()
    }

    /// Waits until `path` answers 200 (the config is in service).
    async fn wait_routed(&self, path: &str) {
        eventually(&format!("the gateway routes {path}"), || async move {
            let r = self.get(path, &[]).await?;
            ensure!(r.status == 200, "status {}: {}", r.status, r.body);
            Ok(())
        })
        .await;
    }
}

/// The cluster name of node `name` (as translation names it).
fn cluster(name: &str) -> String {
    format!("node/{NS}/{name}/8080")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_killed_under_load_fails_no_request() {
    let a = Echo::start("a").unwrap();
    let mut b = Echo::start("b").unwrap();
    let gw_port = free_port();
    let manifests = gateway(gw_port, &[("/", "app")])
        + &routed_service(
            "app",
            "app",
            "{maxRetries: 3, perRetryTimeout: {unit: s, value: 2}, httpRetryEvents: [server-error, gateway-error], tcpRetryEvents: [connection-error]}",
        )
        + &node(
            "app",
            "http",
            &[
                "outlierDetection: {maxServerErrors: 2, maxEjectionPercent: 50, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}}",
            ],
            &[&a, &b],
        );
    let env = Env::start(gw_port, manifests).await;
    env.wait_routed("/").await;

    // Three clients at a time: within the retry budget's floor of three retries in flight, so
    // every failed attempt can be retried whatever the timing.
    let stop = Arc::new(AtomicBool::new(false));
    let (client, gw) = (env.client.clone(), env.gw);
    let runner = tokio::spawn(load(3, stop.clone(), move || {
        let client = client.clone();
        async move {
            let r = client.get(gw, "shop.example", "/items", &[]).await?;
            if r.status != 200 {
                bail!("status {}: {}", r.status, r.body);
            }
            Ok(())
        }
    }));
    eventually("both endpoints serve the load", || async {
        ensure!(a.stat("requests").await? >= 50 && b.stat("requests").await? >= 50);
        Ok(())
    })
    .await;
    b.kill();
    let served = a.stat("requests").await.unwrap();
    eventually("a serves 300 more requests after b died", || async {
        ensure!(a.stat("requests").await? >= served + 300);
        Ok(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = runner.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    let text = env.metrics().await;
    let c = cluster("app");
    assert!(
        metric_value(&text, &format!(r#"bowline_retries_total{{cluster="{c}"}}"#)) >= 1.0,
        "failed attempts were retried:\n{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            &format!(r#"bowline_outlier_ejections_total{{cluster="{c}"}}"#)
        ),
        1.0,
        "the dead endpoint was ejected:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_health_check_takes_a_stopped_endpoint_out_of_rotation() {
    let a = Echo::start("a").unwrap();
    let mut b = Echo::start("b").unwrap();
    let gw_port = free_port();
    // App Mesh's minimums: a 5 s interval and 2 failures, so b is out about 10 s after it stops.
    let manifests = gateway(gw_port, &[("/", "app")])
        + &node_service("app")
        + &node(
            "app",
            "http",
            &[
                "healthCheck: {protocol: http, path: /__echo/health, healthyThreshold: 2, unhealthyThreshold: 2, intervalMillis: 5000, timeoutMillis: 2000}",
            ],
            &[&a, &b],
        );
    let env = Env::start(gw_port, manifests).await;
    env.wait_routed("/").await;
    let c = cluster("app");
    let series = |echo: &Echo| {
        format!(
            r#"bowline_endpoint_healthy{{cluster="{c}",endpoint="{}"}}"#,
            echo.addr
        )
    };
    let (a_series, b_series) = (series(&a), series(&b));
    eventually("both endpoints were checked healthy", || async {
        let text = env.metrics().await;
        ensure!(
            metric_value(&text, &a_series) == 1.0 && metric_value(&text, &b_series) == 1.0,
            "{text}"
        );
        Ok(())
    })
    .await;
    b.kill();
    eventually("b is checked unhealthy", || async {
        let text = env.metrics().await;
        ensure!(text.contains(&format!("{b_series} 0")), "not yet:\n{text}");
        Ok(())
    })
    .await;
    // No retries on this route: every request succeeding means none went to b.
    for _ in 0..30 {
        let r = env.get("/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.echo_name().as_deref(), Some("a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circuit_breakers_answer_503_naming_the_limit() {
    let h1 = Echo::start("h1").unwrap();
    let h2 = Echo::start("h2").unwrap();
    let gw_port = free_port();
    let manifests = gateway(gw_port, &[("/", "app"), ("/h2", "grpcish")])
        + &node_service("app")
        + &node(
            "app",
            "http",
            &["connectionPool: {http: {maxConnections: 1, maxPendingRequests: 1}}"],
            &[&h1],
        )
        + &node_service("grpcish")
        + &node(
            "grpcish",
            "http2",
            &["connectionPool: {http2: {maxRequests: 1}}"],
            &[&h2],
        );
    let env = Arc::new(Env::start(gw_port, manifests).await);
    env.wait_routed("/").await;
    env.wait_routed("/h2/").await;

    // HTTP/1.1: one connection, held; one request may wait for it; the next overflows.
    let holder = {
        let env = env.clone();
        tokio::spawn(async move { env.get("/__echo/hold", &[]).await })
    };
    eventually("the held request reaches h1", || async {
        ensure!(h1.stat("held").await? == 1);
        Ok(())
    })
    .await;
    // Two more: whichever finds the queue full is answered at once; the other waits for the
    // connection, so it cannot answer first.
    let (tx, mut answers) = tokio::sync::mpsc::channel(2);
    for _ in 0..2 {
        let (env, tx) = (env.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(env.get("/", &[]).await).await;
        });
    }
    let overflowed = answers.recv().await.unwrap().unwrap();
    assert_eq!(overflowed.status, 503, "{}", overflowed.body);
    assert_eq!(
        overflowed.headers["x-bowline-overflow"],
        "max-pending-requests"
    );
    h1.release().await.unwrap();
    assert_eq!(holder.await.unwrap().unwrap().status, 200);
    let waited = answers.recv().await.unwrap().unwrap();
    assert_eq!(waited.status, 200, "{}", waited.body);

    // HTTP/2: one request at a time.
    let holder = {
        let env = env.clone();
        tokio::spawn(async move { env.get("/h2/__echo/hold", &[]).await })
    };
    eventually("the held request reaches h2", || async {
        ensure!(h2.stat("held").await? == 1);
        Ok(())
    })
    .await;
    let r = env.get("/h2/", &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-bowline-overflow"], "max-requests");
    h2.release().await.unwrap();
    assert_eq!(holder.await.unwrap().unwrap().status, 200);
    assert_eq!(env.get("/h2/", &[]).await.unwrap().status, 200);

    let text = env.metrics().await;
    for (node, limit) in [("app", "max-pending-requests"), ("grpcish", "max-requests")] {
        let series = format!(
            r#"bowline_circuit_breaker_overflows_total{{cluster="{}",limit="{limit}"}}"#,
            cluster(node)
        );
        assert_eq!(metric_value(&text, &series), 1.0, "{series}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_cookies_and_header_hashing_keep_clients_on_one_endpoint() {
    let a = Echo::start("a").unwrap();
    let b = Echo::start("b").unwrap();
    let gw_port = free_port();
    let manifests = gateway(gw_port, &[("/", "app"), ("/by-user", "users")])
        + &node_service("app")
        + &node(
            "app",
            "http",
            &[
                "loadBalancer: {policy: RING_HASH, hashOn: {cookie: {name: bowline-sticky, ttl: {unit: s, value: 3600}, path: /}}}",
            ],
            &[&a, &b],
        )
        + &node_service("users")
        + &node(
            "users",
            "http",
            &["loadBalancer: {policy: MAGLEV, hashOn: {header: {name: x-user}}}"],
            &[&a, &b],
        );
    let env = Env::start(gw_port, manifests).await;
    env.wait_routed("/").await;

    let mut sessions: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let first = env.get("/", &[]).await.unwrap();
        assert_eq!(first.status, 200, "{}", first.body);
        let set = first.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.starts_with("bowline-sticky=") && set.ends_with("; Path=/; Max-Age=3600; HttpOnly"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let name = first.echo_name().unwrap();
        for _ in 0..5 {
            let r = env.get("/", &[("cookie", &cookie)]).await.unwrap();
            assert_eq!(r.echo_name().as_deref(), Some(name.as_str()), "{cookie}");
            assert!(r.headers.get("set-cookie").is_none(), "set once");
        }
        *sessions.entry(name).or_default() += 1;
    }
    assert_eq!(sessions.len(), 2, "sessions spread over both: {sessions:?}");

    let mut users: BTreeSet<String> = BTreeSet::new();
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let first = env.get("/by-user", &[("x-user", user)]).await.unwrap();
        let name = first.echo_name().unwrap();
        for _ in 0..5 {
            let r = env.get("/by-user", &[("x-user", user)]).await.unwrap();
            assert_eq!(r.echo_name().as_deref(), Some(name.as_str()), "{user}");
        }
        users.insert(name);
    }
    assert_eq!(users.len(), 2, "users spread over both: {users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_retry_budget_bounds_retries_when_every_attempt_fails() {
    let up = Echo::start("down").unwrap();
    let gw_port = free_port();
    let manifests = gateway(gw_port, &[("/", "app")])
        + &routed_service(
            "app",
            "app",
            "{maxRetries: 5, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [server-error]}",
        )
        + &node("app", "http", &[], &[&up]);
    let env = Arc::new(Env::start(gw_port, manifests).await);
    env.wait_routed("/").await;
    let warmup = up.stat("requests").await.unwrap();

    // 30 requests at once, each failing slowly on every attempt.
    const CLIENTS: u64 = 30;
    const MAX_RETRIES: u64 = 5;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move { env.get("/delay/300/status/503", &[]).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.headers.get("x-bowline-error").is_none(),
            "the upstream's answer, not the gateway's"
        );
    }
    let attempts = up.stat("requests").await.unwrap() - warmup;
    let concurrent = up.stat("maxConcurrentRetries").await.unwrap();
    // Retries in flight never exceed max(3, 20 % of the 30 requests in flight) = 6, so the
    // 150 retries asked for are mostly refused.
    assert!(concurrent <= 6, "{concurrent} retries at once");
    assert!(attempts > CLIENTS, "some attempts were retried: {attempts}");
    assert!(
        attempts < CLIENTS * (1 + MAX_RETRIES),
        "the budget refused retries: {attempts} attempts"
    );
    let text = env.metrics().await;
    let series = format!(
        r#"bowline_retry_budget_exhausted_total{{cluster="{}"}}"#,
        cluster("app")
    );
    assert!(metric_value(&text, &series) >= 1.0, "{series}:\n{text}");
}
