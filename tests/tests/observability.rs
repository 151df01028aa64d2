//! Observability through the real binaries: access logs in App Mesh's `logging.accessLog`
//! formats, and the per-route metrics.

use std::net::SocketAddr;

use anyhow::ensure;
use bowline_tests::{Echo, HttpClient, Stack, eventually, free_port, one_route};

/// `one_route`'s gateway with a `logging` block.
fn with_logging(gw_port: u16, upstream: u16, logging: &str) -> Vec<(&'static str, String)> {
    one_route(gw_port, upstream)
        .into_iter()
        .map(|(name, text)| {
            let listener = format!("    - portMapping: {{port: {gw_port}, protocol: http}}\n");
            (
                name,
                text.replacen(&listener, &format!("{listener}{logging}"), 1),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_logs_follow_the_app_mesh_formats() {
    let echo = Echo::start("app").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text_log = dir.path().join("text.log");
    let json_log = dir.path().join("json.log");
    let client = HttpClient::http1();

    // Text format (as in the howto-k8s-envoy-logging-custom-format walkthrough).
    let gw_port = free_port();
    let logging = format!(
        "  logging:\n    accessLog:\n      file:\n        path: {}\n        format:\n          text: \"texttesting %PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_HOST% %ROUTE_NAME%\"\n",
        text_log.display()
    );
    let _text = Stack::start(&with_logging(gw_port, echo.port(), &logging), "edge/gw").await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let r = client
        .get(gw, "shop.example", "/logged?x=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let want = format!(
        "texttesting HTTP/1.1 GET /logged?x=1 200 127.0.0.1:{} gatewayroute/edge/all\n",
        echo.port()
    );
    eventually("the text line is written", || {
        let (text_log, want) = (text_log.clone(), want.clone());
        async move {
            let got = std::fs::read_to_string(&text_log).unwrap_or_default();
            ensure!(got == want, "{got:?} != {want:?}");
            Ok(())
        }
    })
    .await;

    // JSON format; a 404 carries the proxy's reason in %RESPONSE_FLAGS%.
    let gw_port = free_port();
    let logging = format!(
        "  logging:\n    accessLog:\n      file:\n        path: {}\n        format:\n          json:\n            - key: protocol\n              value: \"%PROTOCOL%\"\n            - key: status\n              value: \"%RESPONSE_CODE%\"\n            - key: agent\n              value: \"%REQ(USER-AGENT)%\"\n",
        json_log.display()
    );
    let _json = Stack::start(&with_logging(gw_port, echo.port(), &logging), "edge/gw").await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let r = client
        .get(gw, "shop.example", "/", &[("user-agent", "say \"hi\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the JSON line is written", || {
        let json_log = json_log.clone();
        async move {
            let got = std::fs::read_to_string(&json_log).unwrap_or_default();
            let line: serde_json::Value = serde_json::from_str(got.trim())?;
            ensure!(
                line == serde_json::json!({"protocol": "HTTP/1.1", "status": "200", "agent": "say \"hi\""}),
                "{line}"
            );
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_and_latency_per_route() {
    let echo = Echo::start("app").unwrap();
    let gw_port = free_port();
    let stack = Stack::start(&one_route(gw_port, echo.port()), "edge/gw").await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let client = HttpClient::http1();
    for _ in 0..5 {
        assert_eq!(client.get(gw, "x", "/", &[]).await.unwrap().status, 200);
    }
    let m = client
        .get(stack.gw_admin, "", "/metrics", &[])
        .await
        .unwrap()
        .body;
    for want in [
        "bowline_requests_total{route=\"gatewayroute/edge/all\",status_class=\"2xx\"} 5",
        "bowline_request_duration_seconds_count{route=\"gatewayroute/edge/all\"} 5",
        "bowline_config_updates_total{result=\"ack\"} 1",
    ] {
        assert!(m.contains(want), "{want} missing from\n{m}");
    }
}
