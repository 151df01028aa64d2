//! End-to-end tcp proxying (App Mesh tcpRoute through a GatewayRoute `tcpRoute`, a Bowline
//! extension): the real control plane and gateway, in-process TCP echo upstreams on loopback.
//!
//! * the 75/25 split of a VirtualRouter tcpRoute is exactly the smooth weighted round robin over
//!   connections; an edit of the weights applies to new connections while an open one keeps
//!   working;
//! * bytes echo both ways, a 1 MiB payload included; a client's half-close reaches the upstream
//!   and the upstream's reply still comes back;
//! * an idle connection is closed after the route's idle timeout;
//! * a refused endpoint is skipped (connection-error retry) while a healthy one remains;
//! * a tcp listener with TLS terminates it (no ALPN) and proxies the plaintext; the gateway's
//!   client policy originates TLS to a tcp node (no ALPN either).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bowline_tests::{
    Stack, TcpEcho, TestPki, eventually, free_port, metric_value, metrics, patience, tcp_greeting,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// A VirtualNode `name` with a tcp listener on 5432, and its Service and EndpointSlice: one
/// endpoint per `(address, port)`.
fn node(name: &str, endpoints: &[(&str, u16)]) -> String {
    let mut out = format!(
        r#"
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualNode
metadata: {{name: {name}, namespace: edge}}
spec:
  listeners:
    - portMapping: {{port: 5432, protocol: tcp}}
  serviceDiscovery:
    dns: {{hostname: {name}.edge.svc.cluster.local}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: edge}}
spec:
  ports: [{{name: db, port: 5432}}]
"#
    );
    for (i, (address, port)) in endpoints.iter().enumerate() {
        out += &format!(
            r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: edge
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: db, port: {port}}}]
endpoints:
  - addresses: ["{address}"]
"#
        );
    }
    out
}

/// Gateway `edge/gw` with a tcp listener on `gw_port` (`tls`: its listener TLS, if any; `spec`:
/// more of the gateway's spec) and a tcpRoute to virtual service `db` (with `idle`, if any, as
/// its idle timeout).
fn gateway(gw_port: u16, tls: &str, spec: &str, idle: &str) -> String {
    format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualGateway
metadata: {{name: gw, namespace: edge}}
spec:
  listeners:
    - portMapping: {{port: {gw_port}, protocol: tcp}}
      {tls}
  {spec}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: GatewayRoute
metadata: {{name: db, namespace: edge}}
spec:
  tcpRoute:
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: db}}}}}}
    {idle}
"#
    )
}

/// Virtual service `db` provided by node `node`.
fn db_provided_by(node: &str) -> String {
    format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: db, namespace: edge}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: {node}}}}}}}
"#
    )
}

/// Virtual service `db` provided by router `db`, whose tcpRoute splits between nodes a and b.
fn router(a: u32, b: u32) -> String {
    format!(
        r#"apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {{name: db, namespace: edge}}
spec:
  provider: {{virtualRouter: {{virtualRouterRef: {{name: db}}}}}}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualRouter
metadata: {{name: db, namespace: edge}}
spec:
  listeners:
    - portMapping: {{port: 5432, protocol: tcp}}
  routes:
    - name: split
      tcpRoute:
        action:
          weightedTargets:
            - {{virtualNodeRef: {{name: a}}, weight: {a}}}
            - {{virtualNodeRef: {{name: b}}, weight: {b}}}
"#
    )
}

/// The gateway with a 75/25 split between two echo upstreams.
struct Split {
    stack: Stack,
    gw: SocketAddr,
    _a: TcpEcho,
    _b: TcpEcho,
}

async fn split(tls: &str, idle: &str) -> Split {
    let (a, b) = (
        TcpEcho::start("a").await.unwrap(),
        TcpEcho::start("b").await.unwrap(),
    );
    let gw_port = free_port();
    let files = vec![
        ("gateway.yaml", gateway(gw_port, tls, "", idle)),
        ("router.yaml", router(75, 25)),
        (
            "nodes.yaml",
            node("a", &[("127.0.0.1", a.port())]) + &node("b", &[("127.0.0.1", b.port())]),
        ),
    ];
    let stack = Stack::start(&files, "edge/gw").await;
    Split {
        stack,
        gw: addr(gw_port),
        _a: a,
        _b: b,
    }
}

/// Waits until connections to `gw` reach an upstream (the first config may still be arriving).
async fn wait_proxying(gw: SocketAddr) {
    eventually("the tcp listener proxies", || async move {
        tcp_greeting(gw).await.map(|_| ())
    })
    .await;
}

/// Writes `msg` and reads its echo.
async fn echo(conn: &mut BufReader<TcpStream>, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
    conn.get_mut().write_all(msg).await?;
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(patience(), conn.read_exact(&mut back)).await??;
    Ok(back)
}

/// The value of `bowline_tcp_connections_total` for the gateway's listener and a node.
async fn connections_to(env: &Split, node: &str) -> f64 {
    let text = metrics(env.stack.gw_admin).await.unwrap();
    let series = format!(
        r#"bowline_tcp_connections_total{{listener="tcp-{}",cluster="node/edge/{node}/5432"}}"#,
        env.gw.port()
    );
    metric_value(&text, &series)
}

#[tokio::test]
async fn a_weighted_split_is_the_smooth_round_robin_over_connections() {
    let env = split("", "").await;
    wait_proxying(env.gw).await;
    let before = (
        connections_to(&env, "a").await,
        connections_to(&env, "b").await,
    );
    let mut names = Vec::new();
    for _ in 0..40 {
        let (mut conn, name) = tcp_greeting(env.gw).await.unwrap();
        assert_eq!(echo(&mut conn, b"ping").await.unwrap(), b"ping");
        names.push(name);
    }
    // 75/25 reduces to the smooth cycle a a b a, repeated; the connections made while waiting
    // for the listener may have started it anywhere.
    let cycle = ["a", "a", "b", "a"];
    let offset = (0..4)
        .find(|o| (0..names.len()).all(|i| names[i] == cycle[(o + i) % 4]))
        .unwrap_or_else(|| panic!("{names:?} is not the 75/25 cycle a a b a"));
    let after = (
        connections_to(&env, "a").await,
        connections_to(&env, "b").await,
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (30.0, 10.0),
        "offset {offset}"
    );
}

#[tokio::test]
async fn bytes_echo_both_ways_and_a_half_close_passes_through() {
    let env = split("", "").await;
    wait_proxying(env.gw).await;
    let (conn, _) = tcp_greeting(env.gw).await.unwrap();
    let (mut r, mut w) = tokio::io::split(conn);
    // 1 MiB written while its echo is read back: both directions at once, with back-pressure.
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w
    });
    let mut back = vec![0; payload.len()];
    tokio::time::timeout(patience(), r.read_exact(&mut back))
        .await
        .expect("the echo of 1 MiB in time")
        .unwrap();
    assert!(back == payload, "the echo of 1 MiB differs");
    let mut w = writer.await.unwrap();
    // The client ends its stream: the upstream sees the end (it answers `eof <bytes>`) and its
    // answer, sent after the half-close, still comes back before the close.
    w.write_all(b"last words").await.unwrap();
    w.shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(patience(), r.read_to_string(&mut rest))
        .await
        .expect("the upstream's close in time")
        .unwrap();
    assert_eq!(rest, format!("last wordseof {}\n", (1 << 20) + 10));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let env = split("", "timeout: {idle: {unit: ms, value: 1000}}").await;
    wait_proxying(env.gw).await;
    let (mut conn, _) = tcp_greeting(env.gw).await.unwrap();
    assert_eq!(echo(&mut conn, b"ping").await.unwrap(), b"ping");
    let quiet_since = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(patience(), conn.read_to_end(&mut rest))
        .await
        .expect("the gateway closes an idle connection");
    let idle = quiet_since.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    // Nothing moved after the echo; the close cannot come before the timeout.
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

#[tokio::test]
async fn a_refused_endpoint_is_skipped_while_a_healthy_one_remains() {
    let live = TcpEcho::start("live").await.unwrap();
    let gw_port = free_port();
    // The node's endpoints: 127.0.0.2 refuses (nothing listens there), 127.0.0.1 answers.
    let files = vec![
        ("gateway.yaml", gateway(gw_port, "", "", "")),
        ("service.yaml", db_provided_by("a")),
        (
            "nodes.yaml",
            node(
                "a",
                &[("127.0.0.2", live.port()), ("127.0.0.1", live.port())],
            ),
        ),
    ];
    let stack = Stack::start(&files, "edge/gw").await;
    let gw = addr(gw_port);
    wait_proxying(gw).await;
    for i in 0..20 {
        let (mut conn, name) = tcp_greeting(gw).await.unwrap();
        assert_eq!(name, "live", "connection {i}");
        assert_eq!(echo(&mut conn, b"ok").await.unwrap(), b"ok");
    }
    let text = metrics(stack.gw_admin).await.unwrap();
    let refused = metric_value(
        &text,
        r#"bowline_upstream_errors_total{cluster="node/edge/a/5432",reason="connect_refused"}"#,
    );
    assert!(refused >= 1.0, "the dead endpoint was never tried:\n{text}");
}

#[tokio::test]
async fn an_edit_of_the_weights_applies_to_new_connections_while_open_ones_keep_working() {
    let env = split("", "").await;
    wait_proxying(env.gw).await;
    let (mut open, name) = tcp_greeting(env.gw).await.unwrap();
    env.stack.write_manifest("router.yaml", &router(0, 100));
    // Once the edit is in service, every new connection goes to b.
    eventually("new connections go to b", || async move {
        for _ in 0..4 {
            let (_, name) = tcp_greeting(env.gw).await?;
            ensure!(name == "b", "a connection went to {name}");
        }
        Ok(())
    })
    .await;
    for _ in 0..8 {
        assert_eq!(tcp_greeting(env.gw).await.unwrap().1, "b");
    }
    // The connection opened before the edit still reaches its upstream.
    assert_eq!(
        echo(&mut open, b"still here").await.unwrap(),
        b"still here",
        "the connection to {name}"
    );
}

/// A TLS client that trusts `ca`, offering ALPN `h2` and `http/1.1`.
fn tls_client(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Reads one line.
async fn line<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>) -> String {
    let mut line = String::new();
    tokio::time::timeout(patience(), s.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    line
}

#[tokio::test]
async fn a_tcp_listener_with_tls_terminates_it_and_proxies_the_plaintext() {
    let pki = TestPki::new("tcp test CA");
    let cert = pki.issue("db", &["db.example.com"], &[]);
    let tls = format!(
        "tls: {{mode: STRICT, certificate: {{file: {{certificateChain: {:?}, privateKey: {:?}}}}}}}",
        cert.chain.display().to_string(),
        cert.key.display().to_string()
    );
    let env = split(&tls, "").await;
    let connector = tls_client(&pki.ca_path());
    let connect = || async {
        let tcp = TcpStream::connect(env.gw).await?;
        let name = rustls_pki_types::ServerName::try_from("db.example.com")?;
        anyhow::Ok(connector.connect(name, tcp).await?)
    };
    eventually("the tcp listener terminates TLS", || async {
        connect().await.map(|_| ())
    })
    .await;
    let stream = connect().await.unwrap();
    // The bytes are not HTTP to the gateway: it agrees to no application protocol.
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let mut stream = BufReader::new(stream);
    let greeting = line(&mut stream).await;
    assert!(greeting == "a\n" || greeting == "b\n", "{greeting:?}");
    stream.get_mut().write_all(b"secret\n").await.unwrap();
    assert_eq!(line(&mut stream).await, "secret\n");
    stream.get_mut().shutdown().await.unwrap();
    assert_eq!(line(&mut stream).await, "eof 7\n");
}

#[tokio::test]
async fn the_client_policy_originates_tls_to_a_tcp_node() {
    let pki = TestPki::new("mesh CA");
    let cert = pki.issue("secure", &["secure.edge.svc.cluster.local"], &[]);
    let secure = TcpEcho::start_tls("secure", &cert).await.unwrap();
    let gw_port = free_port();
    let policy = format!(
        "backendDefaults: {{clientPolicy: {{tls: {{validation: {{trust: {{file: {{certificateChain: {:?}}}}}}}}}}}}}",
        pki.ca_path().display().to_string()
    );
    let files = vec![
        ("gateway.yaml", gateway(gw_port, "", &policy, "")),
        ("service.yaml", db_provided_by("secure")),
        (
            "nodes.yaml",
            node("secure", &[("127.0.0.1", secure.port())]),
        ),
    ];
    let _stack = Stack::start(&files, "edge/gw").await;
    let gw = addr(gw_port);
    wait_proxying(gw).await;
    let (mut conn, greeting) = tcp_greeting(gw).await.unwrap();
    // TLS to the node, verified against the mesh CA for its DNS name, claiming no protocol.
    assert_eq!(greeting, "secure tls alpn=-");
    assert_eq!(echo(&mut conn, b"over tls").await.unwrap(), b"over tls");
    conn.get_mut().shutdown().await.unwrap();
    assert_eq!(line(&mut conn).await, "eof 8\n");
}
