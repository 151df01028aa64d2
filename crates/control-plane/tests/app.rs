//! The whole control plane in process on 127.0.0.1:0: readiness, admin endpoints, a manifest
//! edit reaching the config dump, graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use bowline_control_plane::{App, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MANIFESTS: &str = r#"apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw, namespace: demo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: r, namespace: demo}
spec:
  httpRoute:
    match: {prefix: /}
    action:
      target: {virtualService: {virtualServiceRef: {name: web}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: web, namespace: demo}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: web}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: web, namespace: demo}
spec:
  listeners:
    - portMapping: {port: 80, protocol: http}
  serviceDiscovery:
    dns: {hostname: ADDRESS}
"#;

/// A minimal HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_admin_endpoints_and_follows_manifest_edits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, MANIFESTS.replace("ADDRESS", "10.0.0.1")).unwrap();
    let app = App::build(Config {
        manifests: dir.path().to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        ingress_tls_dir: None,
    })
    .await
    .expect("build");
    assert_ne!(app.grpc_addr.port(), 0);
    let admin = app.admin_addr;

    assert_eq!(get(admin, "/live").await.0, 200);
    assert_eq!(get(admin, "/ready").await, (200, "ready\n".to_string()));
    let (status, body) = get(admin, "/debug/proxies").await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"proxies":[]}"#);

    let (status, body) = get(admin, "/config_dump?gateway=demo/gw").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["snapshot"]["listeners"][0]["name"], "http-8080");
    assert_eq!(
        dump["snapshot"]["endpoints"][0]["endpoints"][0]["address"],
        "10.0.0.1"
    );
    assert_eq!(get(admin, "/config_dump").await.0, 400);
    assert_eq!(get(admin, "/config_dump?gateway=nope").await.0, 400);
    let (_, unknown) = get(admin, "/config_dump?gateway=demo/other").await;
    assert!(unknown.contains("not found"), "{unknown}");

    let (status, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("bowline_control_plane_connected_proxies 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bowline_control_plane_world_version 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bowline_control_plane_config_nacks_total 0"),
        "{metrics}"
    );

    // An edit reaches the config dump without a restart (bounded retries, no fixed sleep).
    std::fs::write(&file, MANIFESTS.replace("ADDRESS", "10.0.0.2")).unwrap();
    let mut seen = String::new();
    for _ in 0..200 {
        let (_, body) = get(admin, "/config_dump?gateway=demo/gw").await;
        if body.contains("10.0.0.2") {
            seen = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.contains("10.0.0.2"), "the edit was not picked up");

    app.shutdown();
    tokio::time::timeout(Duration::from_secs(10), app.join())
        .await
        .expect("stops within 10 s")
        .expect("clean stop");
}
