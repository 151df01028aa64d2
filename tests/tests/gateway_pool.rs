//! VirtualGateway listener `connectionPool` through the real `bowline-control-plane` and
//! `bowline-gateway`: the listener's limits are the circuit breakers of the clusters its routes
//! reach. Requests beyond them are answered 503 with `x-bowline-overflow` naming the limit while
//! the admitted ones succeed; where the node listener has a looser pool of its own, the
//! gateway's stricter limit wins. Requests are held at the upstream (`/__echo/hold`) and the
//! test waits on the upstream's count of held requests, never on time.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::ensure;
use bowline_tests::{
    Echo, HttpClient, Reply, Stack, eventually, free_port, gateway_manifest,
    gateway_route_manifest, metric_value, metrics, node_manifest, service_manifest,
};

const NS: &str = "pool";

/// A gateway with an http listener (`maxConnections: 1, maxPendingRequests: 1`) routing to node
/// `web` (http, whose own pool allows 5 connections) and an http2 listener (`maxRequests: 1`)
/// routing to node `api` (http2, no pool of its own).
fn manifests(http_port: u16, h2_port: u16, web: &Echo, api: &Echo) -> String {
    gateway_manifest(
        NS,
        &[
            format!(
                "{{portMapping: {{port: {http_port}, protocol: http}}, connectionPool: {{http: {{maxConnections: 1, maxPendingRequests: 1}}}}}}"
            ),
            format!(
                "{{portMapping: {{port: {h2_port}, protocol: http2}}, connectionPool: {{http2: {{maxRequests: 1}}}}}}"
            ),
        ],
    ) + &gateway_route_manifest(NS, "web", "httpRoute", "{prefix: /}", "web")
        + &gateway_route_manifest(NS, "api", "http2Route", "{prefix: /}", "api")
        + &service_manifest(NS, "web", "virtualNode")
        + &node_manifest(
            NS,
            "web",
            "http",
            &["connectionPool: {http: {maxConnections: 5}}"],
            &[web.port()],
        )
        + &service_manifest(NS, "api", "virtualNode")
        + &node_manifest(NS, "api", "http2", &[], &[api.port()])
}

struct Env {
    stack: Stack,
    http: SocketAddr,
    h2: SocketAddr,
}

impl Env {
    /// GET `path` on the http listener over HTTP/1.1.
    async fn web(&self, path: &str) -> anyhow::Result<Reply> {
        HttpClient::http1()
            .get(self.http, "web.example", path, &[])
            .await
    }

    /// GET `path` on the http2 listener over h2c.
    async fn api(&self, path: &str) -> anyhow::Result<Reply> {
        HttpClient::h2c()
            .get(self.h2, "api.example", path, &[])
            .await
    }
}

async fn wait_held(echo: &Echo, n: u64) {
    eventually(&format!("{n} request(s) held at {}", echo.name), || async {
        let held = echo.stat("held").await?;
        ensure!(held == n, "{held} held");
        Ok(())
    })
    .await;
}

fn overflows(text: &str, node: &str, limit: &str) -> f64 {
    metric_value(
        text,
        &format!(
            r#"bowline_circuit_breaker_overflows_total{{cluster="node/{NS}/{node}/8080",limit="{limit}"}}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_listener_pools_answer_503_beyond_their_limits() {
    let web = Echo::start("web").unwrap();
    let api = Echo::start("api").unwrap();
    let (http_port, h2_port) = (free_port(), free_port());
    let stack = Stack::start(
        &[("mesh.yaml", manifests(http_port, h2_port, &web, &api))],
        &format!("{NS}/gw"),
    )
    .await;
    let env = Arc::new(Env {
        stack,
        http: format!("127.0.0.1:{http_port}").parse().unwrap(),
        h2: format!("127.0.0.1:{h2_port}").parse().unwrap(),
    });
    eventually("both listeners route", || async {
        let (w, a) = (env.web("/").await?, env.api("/").await?);
        ensure!(
            w.status == 200 && a.status == 200,
            "{} {}",
            w.status,
            a.status
        );
        Ok(())
    })
    .await;

    // http listener: one connection (the node's own pool would allow 5), held; one request may
    // wait for it; any further one overflows.
    let holder = {
        let env = env.clone();
        tokio::spawn(async move { env.web("/__echo/hold").await })
    };
    wait_held(&web, 1).await;
    // Two more at once: whichever finds the queue full is answered at once; the other waits
    // for the connection, so it cannot answer first.
    let (tx, mut answers) = tokio::sync::mpsc::channel(2);
    for _ in 0..2 {
        let (env, tx) = (env.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(env.web("/").await).await;
        });
    }
    let overflowed = answers.recv().await.unwrap().unwrap();
    assert_eq!(overflowed.status, 503, "{}", overflowed.body);
    assert_eq!(overflowed.headers["x-bowline-error"], "overflow");
    assert_eq!(
        overflowed.headers["x-bowline-overflow"],
        "max-pending-requests"
    );
    web.release().await.unwrap();
    let held = holder.await.unwrap().unwrap();
    assert_eq!(held.status, 200, "{}", held.body);
    let waited = answers.recv().await.unwrap().unwrap();
    assert_eq!(waited.status, 200, "{}", waited.body);
    assert_eq!(waited.echo_name().as_deref(), Some("web"));

    // http2 listener: one request in flight.
    let holder = {
        let env = env.clone();
        tokio::spawn(async move { env.api("/__echo/hold").await })
    };
    wait_held(&api, 1).await;
    let r = env.api("/").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-bowline-overflow"], "max-requests");
    api.release().await.unwrap();
    let held = holder.await.unwrap().unwrap();
    assert_eq!(held.status, 200, "{}", held.body);
    let r = env.api("/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo_name().as_deref(), Some("api"));

    let text = metrics(env.stack.gw_admin).await.unwrap();
    assert_eq!(
        overflows(&text, "web", "max-pending-requests"),
        1.0,
        "{text}"
    );
    assert_eq!(overflows(&text, "api", "max-requests"), 1.0, "{text}");
}
