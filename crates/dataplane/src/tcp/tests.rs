//! Unit tests of tcp proxying: the pipe over in-memory streams (idle timeouts on a paused
//! clock), and the proxy over loopback sockets with in-process upstreams.

use std::net::SocketAddr;
use std::time::Duration;

use bowline_model::ir;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::metrics::ProxyMetrics;
use crate::proxy::{EdgeConfig, Proxy, ProxyConfig};
use crate::router::{CompileContext, Router, Schedule};
use crate::upstream::Upstreams;

const PATIENCE: Duration = Duration::from_secs(10);

// === pipe ===

/// A pipe between two in-memory connections (buffers of `buffer` bytes) running in a task: the
/// client's end, the upstream's end, the task and the pipe's counters.
struct Piping {
    client: DuplexStream,
    upstream: DuplexStream,
    task: JoinHandle<(Piped, End)>,
    stats: TcpStats,
}

fn piping(buffer: usize, idle: Option<Duration>) -> Piping {
    let (client, mut client_end) = duplex(buffer);
    let (mut upstream_end, upstream) = duplex(buffer);
    let stats = TcpStats::default();
    let counted = stats.clone();
    let task =
        tokio::spawn(async move { pipe(&mut client_end, &mut upstream_end, idle, &counted).await });
    Piping {
        client,
        upstream,
        task,
        stats,
    }
}

#[tokio::test]
async fn bytes_flow_both_ways_and_a_half_close_passes_through() {
    let Piping {
        mut client,
        mut upstream,
        task,
        stats,
    } = piping(1024, Some(Duration::from_secs(60)));
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    // The upstream sees the client's end of stream (its read returns)...
    let mut got = Vec::new();
    upstream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ping");
    // ...while the other direction still flows.
    upstream.write_all(b"pong after eof").await.unwrap();
    upstream.shutdown().await.unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"pong after eof");
    let (piped, end) = task.await.unwrap();
    assert!(matches!(end, End::Closed), "{end:?}");
    assert_eq!(
        piped,
        Piped {
            received: 4,
            sent: 14
        }
    );
    assert_eq!((stats.received.get(), stats.sent.get()), (4, 14));
}

#[tokio::test]
async fn a_large_transfer_passes_whole_through_small_buffers() {
    let Piping {
        mut client,
        upstream,
        task,
        ..
    } = piping(4096, None);
    // An echo upstream that closes after the client's end of stream.
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(upstream);
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut client);
    let sent = payload.clone();
    let write = async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let (_, read) = tokio::join!(write, r.read_to_end(&mut back));
    read.unwrap();
    assert!(back == payload, "the echo differs from the payload");
    echo.await.unwrap();
    let (piped, end) = task.await.unwrap();
    assert!(matches!(end, End::Closed), "{end:?}");
    assert_eq!((piped.received, piped.sent), (1 << 20, 1 << 20));
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_last_byte_in_either_direction() {
    let start = Instant::now();
    let Piping {
        mut client,
        mut upstream,
        task,
        ..
    } = piping(1024, Some(Duration::from_secs(1)));
    let mut byte = [0u8; 1];
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.write_all(b"a").await.unwrap();
    upstream.read_exact(&mut byte).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    upstream.write_all(b"b").await.unwrap();
    client.read_exact(&mut byte).await.unwrap();
    assert!(
        !task.is_finished(),
        "traffic in either direction keeps it open"
    );
    let (_, end) = task.await.unwrap();
    assert!(matches!(end, End::IdleTimeout), "{end:?}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2600) && elapsed < Duration::from_millis(2700),
        "closed {elapsed:?} after start; the last byte moved at 1.6 s"
    );
    // Both sides were closed: each reads its end of stream.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    upstream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_an_idle_timeout_a_quiet_connection_stays_open() {
    let Piping {
        mut client,
        mut upstream,
        task,
        ..
    } = piping(1024, None);
    tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
    assert!(!task.is_finished());
    client.shutdown().await.unwrap();
    upstream.shutdown().await.unwrap();
    let (_, end) = task.await.unwrap();
    assert!(matches!(end, End::Closed), "{end:?}");
}

#[tokio::test]
async fn a_broken_side_ends_the_pipe_and_is_named() {
    let Piping {
        mut client,
        upstream,
        task,
        ..
    } = piping(1024, None);
    drop(upstream);
    client.write_all(b"into the void").await.unwrap();
    let (_, end) = task.await.unwrap();
    assert!(matches!(end, End::Failed(Side::Upstream, _)), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_too_large_to_represent_means_none() {
    let Piping {
        mut client,
        mut upstream,
        task,
        ..
    } = piping(1024, Some(Duration::from_millis(u64::MAX)));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!task.is_finished());
    client.shutdown().await.unwrap();
    upstream.shutdown().await.unwrap();
    assert!(matches!(task.await.unwrap().1, End::Closed));
}

// === fixtures ===

/// An upstream that greets each connection with `<name>\n`, then echoes until the client's end
/// of stream, then closes.
struct Named {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Named {
    async fn start(name: &'static str) -> Named {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    w.write_all(format!("{name}\n").as_bytes()).await?;
                    tokio::io::copy(&mut r, &mut w).await?;
                    w.shutdown().await
                });
            }
        });
        Named { addr, task }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tcp cluster with the IR's defaults.
fn cluster(name: &str) -> ir::Cluster {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "protocol": "tcp",
        "connectTimeoutMs": 1000,
    }))
    .expect("a valid cluster")
}

/// A tcp listener `tcp` on `port` (0: any) proxying to `clusters` (name, weight, endpoint ports
/// on 127.0.0.1).
fn snapshot(port: u16, clusters: &[(&str, u32, &[u16])]) -> ir::Snapshot {
    let mut s = ir::Snapshot {
        listeners: vec![ir::Listener {
            name: "tcp".into(),
            address: String::new(),
            port,
            protocol: ir::Protocol::Tcp,
            route_table: String::new(),
            access_log: None,
            tls: None,
            tcp_proxy: Some(ir::TcpProxy {
                name: "gatewayroute/test/tcp".into(),
                clusters: clusters
                    .iter()
                    .map(|(name, weight, _)| ir::WeightedCluster::new(name.to_string(), *weight))
                    .collect(),
                idle_timeout_ms: None,
            }),
        }],
        ..Default::default()
    };
    for (name, _, ports) in clusters {
        s.clusters.push(cluster(name));
        s.endpoints.push(ir::ClusterEndpoints {
            cluster: name.to_string(),
            endpoints: ports
                .iter()
                .map(|&port| ir::Endpoint {
                    address: "127.0.0.1".into(),
                    port,
                    weight: 1,
                })
                .collect(),
        });
    }
    s
}

/// A proxy on 127.0.0.1 serving `s` (whose listener port must be free), and its metrics.
fn proxy(s: &ir::Snapshot) -> (Proxy, Registry) {
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let proxy = Proxy::new(
        ProxyConfig {
            bind: "127.0.0.1".parse().unwrap(),
            edge: EdgeConfig::default(),
        },
        metrics,
    );
    proxy.apply(s).unwrap();
    (proxy, registry)
}

fn free_port() -> u16 {
    dead_port()
}

/// Connects and reads the upstream's greeting line.
async fn greeting(port: u16) -> std::io::Result<(BufReader<TcpStream>, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no greeting in time"))??;
    Ok((stream, line.trim_end().to_string()))
}

/// Writes `msg` and reads its echo.
async fn echo(stream: &mut BufReader<TcpStream>, msg: &str) -> String {
    stream.get_mut().write_all(msg.as_bytes()).await.unwrap();
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    String::from_utf8(back).unwrap()
}

fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry).unwrap();
    out
}

// === proxying ===

#[tokio::test]
async fn connections_follow_the_weighted_schedule() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let port = free_port();
    let (_proxy, registry) = proxy(&snapshot(
        port,
        &[("a", 3, &[a.port()]), ("b", 1, &[b.port()])],
    ));
    let expected = Schedule::new(&[3, 1]).unwrap();
    for i in 0..8 {
        let (mut conn, name) = greeting(port).await.unwrap();
        assert_eq!(name, ["a", "b"][expected.next()], "connection {i}");
        assert_eq!(echo(&mut conn, "hello").await, "hello");
    }
    let text = metrics_text(&registry);
    for line in [
        r#"bowline_tcp_connections_total{listener="tcp",cluster="a"} 6"#,
        r#"bowline_tcp_connections_total{listener="tcp",cluster="b"} 2"#,
        r#"bowline_tcp_received_bytes_total{listener="tcp",cluster="a"} 30"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn a_refused_endpoint_is_skipped_while_another_takes_connections() {
    let live = Named::start("live").await;
    let port = free_port();
    let mut s = snapshot(port, &[("c", 1, &[dead_port(), live.port()])]);
    s.clusters[0].outlier_detection = Some(ir::OutlierDetection {
        max_server_errors: 1,
        interval_ms: 10_000,
        base_ejection_duration_ms: 30_000,
        max_ejection_percent: 50,
    });
    let (_proxy, registry) = proxy(&s);
    for _ in 0..4 {
        let (_, name) = greeting(port).await.unwrap();
        assert_eq!(name, "live");
    }
    let text = metrics_text(&registry);
    // One refusal ejected the dead endpoint: later connections went straight to the live one.
    for line in [
        r#"bowline_upstream_errors_total{cluster="c",reason="connect_refused"} 1"#,
        r#"bowline_outlier_ejections_total{cluster="c"} 1"#,
        r#"bowline_retries_total{cluster="c"} 1"#,
        r#"bowline_tcp_connections_total{listener="tcp",cluster="c"} 4"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

/// Reads until the end of stream, which must come without data.
async fn closed_without_data(stream: TcpStream) {
    let mut stream = stream;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "got {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let up = Named::start("up").await;
    let port = free_port();
    let mut s = snapshot(port, &[("c", 1, &[up.port()])]);
    s.clusters[0].circuit_breakers = Some(ir::CircuitBreakers {
        max_connections: Some(1),
        ..Default::default()
    });
    let (_proxy, registry) = proxy(&s);
    let (held, _) = greeting(port).await.unwrap();
    closed_without_data(TcpStream::connect(("127.0.0.1", port)).await.unwrap()).await;
    let text = metrics_text(&registry);
    let line = r#"bowline_circuit_breaker_overflows_total{cluster="c",limit="max-connections"} 1"#;
    assert!(text.contains(line), "{line} in\n{text}");
    // Once the first connection is gone, its slot is free again.
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok((_, name)) = greeting(port).await
            && name == "up"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_cluster_without_endpoints_closes_the_connection() {
    let port = free_port();
    let (_proxy, registry) = proxy(&snapshot(port, &[("c", 1, &[])]));
    closed_without_data(TcpStream::connect(("127.0.0.1", port)).await.unwrap()).await;
    let text = metrics_text(&registry);
    let line = r#"bowline_upstream_errors_total{cluster="c",reason="no_endpoints"} 1"#;
    assert!(text.contains(line), "{line} in\n{text}");
}

#[tokio::test]
async fn updates_apply_to_new_connections_while_open_ones_keep_going() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let port = free_port();
    let (proxy, _) = proxy(&snapshot(port, &[("a", 1, &[a.port()])]));
    let (mut first, name) = greeting(port).await.unwrap();
    assert_eq!(name, "a");
    proxy
        .apply(&snapshot(port, &[("b", 1, &[b.port()])]))
        .unwrap();
    let (_, name) = greeting(port).await.unwrap();
    assert_eq!(name, "b");
    assert_eq!(echo(&mut first, "still here").await, "still here");
    // Removing the listener stops accepting; the open connection still works.
    proxy.apply(&ir::Snapshot::default()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(echo(&mut first, "and here").await, "and here");
}

#[tokio::test]
async fn the_source_ip_hash_keeps_a_client_on_one_endpoint() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let port = free_port();
    let mut s = snapshot(port, &[("c", 1, &[a.port(), b.port()])]);
    s.clusters[0].lb_policy = ir::LbPolicy::Maglev;
    s.clusters[0].hash_on = Some(ir::HashOn::SourceIp);
    let (_proxy, _) = proxy(&s);
    let (_, first) = greeting(port).await.unwrap();
    for _ in 0..6 {
        assert_eq!(greeting(port).await.unwrap().1, first);
    }
}

// === compile ===

fn compile(s: &ir::Snapshot) -> Result<Router, CompileError> {
    let (u, m) = (Upstreams::default(), ProxyMetrics::default());
    Router::compile(
        s,
        CompileContext {
            upstreams: &u,
            metrics: &m,
            previous: None,
        },
    )
}

#[test]
fn invalid_tcp_listeners_name_the_field() {
    let base = || snapshot(9000, &[("a", 1, &[9001])]);
    let mut cases: Vec<(ir::Snapshot, &str)> = Vec::new();

    let mut s = base();
    s.listeners[0].tcp_proxy = None;
    cases.push((
        s,
        "listener/tcp: tcpProxy: a tcp listener needs a tcp proxy",
    ));

    let mut s = base();
    s.listeners[0].route_table = "main".into();
    cases.push((
        s,
        "listener/tcp: routeTable: a tcp listener has no route table",
    ));

    let mut s = base();
    s.listeners[0].protocol = ir::Protocol::Http;
    cases.push((
        s,
        "listener/tcp: tcpProxy: only tcp listeners proxy connections",
    ));

    let mut s = base();
    s.listeners[0].tcp_proxy.as_mut().unwrap().clusters[0].cluster = "ghost".into();
    cases.push((
        s,
        r#"listener/tcp: tcpProxy.clusters[0].cluster: unknown cluster "ghost""#,
    ));

    let mut s = base();
    s.listeners[0].tcp_proxy.as_mut().unwrap().clusters[0].weight = 0;
    cases.push((
        s,
        "listener/tcp: tcpProxy.clusters: no cluster has a weight above 0",
    ));

    for (s, want) in cases {
        let err = compile(&s).unwrap_err().to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
    }
}

#[test]
fn idle_timeouts_come_from_the_route_then_the_cluster_then_the_default() {
    let mut s = snapshot(9000, &[("a", 1, &[9001]), ("b", 1, &[9002])]);
    s.clusters[0].tcp_idle_timeout_ms = Some(5_000);
    s.clusters[1].tcp_idle_timeout_ms = Some(0);
    let with_route_idle = |s: &ir::Snapshot, ms: Option<u64>| {
        let mut s = s.clone();
        s.listeners[0].tcp_proxy.as_mut().unwrap().idle_timeout_ms = ms;
        let router = compile(&s).unwrap();
        let route = router.listeners()[0].tcp.clone().unwrap();
        let mut idle = std::collections::BTreeMap::new();
        for _ in 0..2 {
            let c = &route.pick().cluster;
            idle.insert(c.name.clone(), route.idle_timeout(c));
        }
        idle
    };
    let secs = |s| Some(Duration::from_secs(s));
    let by_cluster = with_route_idle(&s, None);
    assert_eq!(by_cluster["a"], secs(5));
    assert_eq!(by_cluster["b"], None, "0 disables it");
    let by_route = with_route_idle(&s, Some(2_000));
    assert_eq!((by_route["a"], by_route["b"]), (secs(2), secs(2)));
    let disabled = with_route_idle(&s, Some(0));
    assert_eq!((disabled["a"], disabled["b"]), (None, None));
    s.clusters[0].tcp_idle_timeout_ms = None;
    s.clusters[1].tcp_idle_timeout_ms = None;
    let default = with_route_idle(&s, None);
    assert_eq!(default["a"], Some(DEFAULT_IDLE_TIMEOUT));
}

#[test]
fn http_routes_cannot_mirror_to_a_tcp_cluster() {
    let mut s = snapshot(9000, &[("t", 1, &[9001])]);
    let mut h = cluster("h");
    h.protocol = ir::Protocol::Http;
    s.clusters.push(h);
    let mut route = ir::Route::new(
        "r",
        ir::RouteMatch::default(),
        ir::RouteAction::Forward(ir::ForwardAction {
            clusters: vec![ir::WeightedCluster::new("h".into(), 1)],
            rewrite: ir::Rewrite::default(),
            timeout_ms: None,
            retry: None,
            idle_timeout_ms: None,
            unresolved_weight: 0,
        }),
    );
    route.mirrors.push(ir::Mirror {
        cluster: "t".into(),
        percent: 100,
    });
    s.route_tables.push(ir::RouteTable {
        name: "main".into(),
        virtual_hosts: vec![ir::VirtualHost {
            name: "*".into(),
            hosts: vec![ir::HostMatch::Any],
            routes: vec![route],
        }],
    });
    s.listeners.push(ir::Listener {
        name: "http".into(),
        address: String::new(),
        port: 9100,
        protocol: ir::Protocol::Http,
        route_table: "main".into(),
        access_log: None,
        tls: None,
        tcp_proxy: None,
    });
    let err = compile(&s).unwrap_err().to_string();
    assert_eq!(
        err,
        r#"routeTable/main: virtualHosts[0].routes[0].mirrors[0].cluster: cluster "t" is a tcp cluster: only a tcp listener can send to it"#
    );
}
