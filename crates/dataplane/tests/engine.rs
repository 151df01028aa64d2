//! The engine in process: a fake control plane, tiny hyper upstreams and real clients, all on
//! 127.0.0.1 with ephemeral ports. Waits are bounded retries or explicit signals, never sleeps.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bowline_dataplane::config::{Backoff, Node};
use bowline_dataplane::test_util::{FakeControlPlane, FakeStream};
use bowline_dataplane::{Engine, EngineConfig};
use bowline_model::ir;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

const PATIENCE: Duration = Duration::from_secs(10);

/// Retries `f` until it succeeds, for up to [`PATIENCE`].
async fn eventually<F, Fut, T>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > PATIENCE => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === upstream ===

/// A tiny upstream (HTTP/1.1 and h2c) that answers with what it received as JSON.
/// `/hang` never answers; `/slow` reports arrival and waits for `release`; `/trailers` answers
/// with a gRPC-like trailer.
struct Upstream {
    addr: SocketAddr,
    arrived: tokio::sync::Mutex<mpsc::Receiver<()>>,
    release: Arc<Notify>,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived_tx, arrived_rx) = mpsc::channel(16);
        let release = Arc::new(Notify::new());
        let rel = release.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (arrived, release) = (arrived_tx.clone(), rel.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (arrived, release) = (arrived.clone(), release.clone());
                        async move {
                            Ok::<_, Infallible>(upstream_answer(name, req, arrived, release).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            arrived: tokio::sync::Mutex::new(arrived_rx),
            release,
            _task: task,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_answer(
    name: &str,
    req: Request<Incoming>,
    arrived: mpsc::Sender<()>,
    release: Arc<Notify>,
) -> Response<UpBody> {
    let path = req.uri().path().to_string();
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if path == "/slow" {
        let released = release.notified();
        let _ = arrived.send(()).await;
        released.await;
    }
    let h = |k: &str| {
        req.headers()
            .get_all(k)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let json = serde_json::json!({
        "name": name,
        "version": format!("{:?}", req.version()),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "authority": req.uri().authority().map(|a| a.as_str()).unwrap_or(""),
        "host": h("host"),
        "xff": h("x-forwarded-for"),
        "xfp": h("x-forwarded-proto"),
        "secret": h("x-secret"),
        "te": h("te"),
    });
    let body = Bytes::from(json.to_string());
    if path.starts_with("/trailers") {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = futures_util::stream::iter([
            Ok::<_, Infallible>(Frame::data(body)),
            Ok(Frame::trailers(trailers)),
        ]);
        // `Trailer` announces the trailer to HTTP/1.1 clients (HTTP/2 needs no announcement).
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        resp.headers_mut()
            .insert("trailer", "grpc-status".parse().unwrap());
        return resp;
    }
    Response::new(BodyExt::boxed(Full::new(body)))
}

// === clients ===

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    trailers: Option<HeaderMap>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn field(&self, k: &str) -> String {
        self.json()[k].as_str().unwrap_or_default().to_string()
    }
}

/// Resolves every name to 127.0.0.1, so requests can name any host.
#[derive(Clone)]
struct Loopback;

impl tower_service::Service<Name> for Loopback {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter()))
    }
}

#[derive(Clone)]
struct HttpClient {
    client: Client<HttpConnector<Loopback>, Empty<Bytes>>,
    h2: bool,
}

impl HttpClient {
    fn http1() -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new())
                .build(HttpConnector::new_with_resolver(Loopback)),
            h2: false,
        }
    }

    fn h2c() -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(HttpConnector::new_with_resolver(Loopback)),
            h2: true,
        }
    }

    async fn get(
        &self,
        port: u16,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        // The host goes in Host (HTTP/1.1) or :authority (HTTP/2); every name resolves to
        // 127.0.0.1.
        let mut req = Request::get(format!("http://{host}:{port}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        let resp = tokio::time::timeout(PATIENCE, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        })
    }
}

// === config ===

fn cluster(name: &str, protocol: ir::Protocol) -> ir::Cluster {
    ir::Cluster {
        name: name.into(),
        protocol,
        lb_policy: ir::LbPolicy::RoundRobin,
        connect_timeout_ms: 1000,
        tls: None,
        hash_on: None,
        health_check: None,
        outlier_detection: None,
        circuit_breakers: None,
        idle_timeout_ms: None,
        request_timeout_ms: None,
        tcp_idle_timeout_ms: None,
        send_timeout_ms: None,
    }
}

fn endpoints(cluster: &str, ports: &[u16]) -> ir::ClusterEndpoints {
    ir::ClusterEndpoints {
        cluster: cluster.into(),
        endpoints: ports
            .iter()
            .map(|&port| ir::Endpoint {
                address: "127.0.0.1".into(),
                port,
                weight: 1,
            })
            .collect(),
    }
}

fn fwd(clusters: &[(&str, u32)], rewrite: ir::Rewrite, timeout_ms: Option<u64>) -> ir::RouteAction {
    ir::RouteAction::Forward(ir::ForwardAction {
        clusters: clusters
            .iter()
            .map(|(c, w)| ir::WeightedCluster::new((*c).into(), *w))
            .collect(),
        rewrite,
        timeout_ms,
        retry: None,
        idle_timeout_ms: None,
        unresolved_weight: 0,
    })
}

fn route(name: &str, prefix: &str, action: ir::RouteAction) -> ir::Route {
    ir::Route::new(
        name,
        ir::RouteMatch {
            path: Some(ir::PathMatch::Prefix(prefix.into())),
            ..Default::default()
        },
        action,
    )
}

struct Ports {
    blue: u16,
    green: u16,
    grpc: u16,
    dead: u16,
}

/// The test config: listener `port` → `main`; `/color` splits blue/green by `weights` after a
/// `/color` → `/` rewrite with a host rewrite; `/dead`, `/empty`, `/hang` (200 ms timeout),
/// `/grpc` (h2c cluster) and a direct response.
fn config(port: u16, p: &Ports, weights: (u32, u32)) -> ir::Snapshot {
    let routes = vec![
        route(
            "color",
            "/color",
            fwd(
                &[("blue", weights.0), ("green", weights.1)],
                ir::Rewrite {
                    prefix: Some("/".into()),
                    host: Some("color.internal".into()),
                    ..Default::default()
                },
                None,
            ),
        ),
        route(
            "dead",
            "/dead",
            fwd(&[("dead", 1)], ir::Rewrite::default(), None),
        ),
        route(
            "empty",
            "/empty",
            fwd(&[("empty", 1)], ir::Rewrite::default(), None),
        ),
        route(
            "hang",
            "/hang",
            fwd(&[("blue", 1)], ir::Rewrite::default(), Some(200)),
        ),
        route(
            "plain",
            "/plain",
            fwd(&[("blue", 1)], ir::Rewrite::default(), None),
        ),
        route(
            "slow",
            "/slow",
            fwd(&[("blue", 1)], ir::Rewrite::default(), None),
        ),
        route(
            "grpc",
            "/grpc",
            fwd(
                &[("grpc", 1)],
                ir::Rewrite {
                    prefix: Some("/trailers".into()),
                    ..Default::default()
                },
                None,
            ),
        ),
        route(
            "teapot",
            "/teapot",
            ir::RouteAction::DirectResponse(ir::DirectResponse {
                status: 418,
                body: "short and stout".into(),
            }),
        ),
    ];
    let mut s = ir::Snapshot {
        listeners: vec![ir::Listener {
            name: "http".into(),
            address: String::new(),
            port,
            protocol: ir::Protocol::Http,
            route_table: "main".into(),
            access_log: None,
            tls: None,
            tcp_proxy: None,
        }],
        route_tables: vec![ir::RouteTable {
            name: "main".into(),
            virtual_hosts: vec![ir::VirtualHost {
                name: "shop".into(),
                hosts: vec![ir::HostMatch::Exact("shop.example".into())],
                routes,
            }],
        }],
        clusters: vec![
            cluster("blue", ir::Protocol::Http),
            cluster("green", ir::Protocol::Http),
            cluster("dead", ir::Protocol::Http),
            cluster("empty", ir::Protocol::Http),
            cluster("grpc", ir::Protocol::Grpc),
        ],
        endpoints: vec![
            endpoints("blue", &[p.blue]),
            endpoints("green", &[p.green]),
            endpoints("dead", &[p.dead]),
            endpoints("grpc", &[p.grpc]),
        ],
    };
    s.normalize();
    s
}

// === harness ===

struct Env {
    engine: Engine,
    stream: FakeStream,
    _cp: FakeControlPlane,
    port: u16,
    ports: Ports,
    blue: Upstream,
    _green: Upstream,
    _grpc: Upstream,
    http1: HttpClient,
    h2: HttpClient,
}

async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = HttpClient::http1()
        .get(addr.port(), "127.0.0.1", path, &[])
        .await
        .unwrap();
    (r.status.as_u16(), r.body)
}

async fn start() -> Env {
    let cp = FakeControlPlane::start().await;
    let (blue, green, grpc) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
        Upstream::start("grpc").await,
    );
    let ports = Ports {
        blue: blue.port(),
        green: green.port(),
        grpc: grpc.port(),
        dead: free_port(),
    };
    let engine = Engine::start(EngineConfig {
        control_plane: cp.url(),
        node: Node {
            kind: "gateway".into(),
            namespace: "shop".into(),
            name: "gw".into(),
            build_version: "test".into(),
            ingress: None,
            sidecar: None,
        },
        bind: "127.0.0.1".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        edge: Default::default(),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
        },
    })
    .await
    .unwrap();
    let mut stream = cp.next_stream().await;
    assert_eq!(
        admin_get(engine.admin_addr(), "/ready").await,
        (503, "not ready: config\n".into())
    );
    let port = free_port();
    let answer = stream.push("v1", &config(port, &ports, (75, 25))).await;
    assert_eq!(answer.error_detail, None);
    assert_eq!(admin_get(engine.admin_addr(), "/ready").await.0, 200);
    Env {
        engine,
        stream,
        _cp: cp,
        port,
        ports,
        blue,
        _green: green,
        _grpc: grpc,
        http1: HttpClient::http1(),
        h2: HttpClient::h2c(),
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_rewrites_over_http1_and_h2c() {
    let env = start().await;
    for client in [&env.http1, &env.h2] {
        // HTTP/2 has no `Connection` header: the hop-by-hop check runs over HTTP/1.1.
        let hop: &[(&str, &str)] = if client.h2 {
            &[]
        } else {
            &[("connection", "x-secret"), ("x-secret", "1")]
        };
        let r = client
            .get(env.port, "shop.example", "/color/shades?x=1", hop)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.field("path"), "/shades?x=1");
        assert_eq!(
            r.field("host"),
            "color.internal",
            "Host rewritten: {}",
            r.body
        );
        assert_eq!(r.field("version"), "HTTP/1.1");
        assert_eq!(r.field("xff"), "127.0.0.1");
        assert_eq!(r.field("xfp"), "http");
        assert_eq!(
            r.field("secret"),
            "",
            "headers named by Connection are dropped"
        );
        let r = client
            .get(env.port, "shop.example", "/color", &[])
            .await
            .unwrap();
        assert_eq!(r.field("path"), "/");
        // Without a host rewrite the upstream sees the client's host (`:authority` becomes
        // `Host` for an HTTP/1.1 upstream).
        let r = client
            .get(env.port, "shop.example", "/plain", &[])
            .await
            .unwrap();
        assert_eq!(r.field("host"), format!("shop.example:{}", env.port));
    }
    // Direct response.
    let r = env
        .http1
        .get(env.port, "shop.example", "/teapot", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (418, "short and stout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_exact() {
    let env = start().await;
    let mut counts = BTreeMap::new();
    for _ in 0..100 {
        let r = env
            .http1
            .get(env.port, "shop.example", "/color", &[])
            .await
            .unwrap();
        *counts.entry(r.field("name")).or_insert(0) += 1;
    }
    assert_eq!(counts.get("blue"), Some(&75), "{counts:?}");
    assert_eq!(counts.get("green"), Some(&25), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_cluster_gets_authority_and_trailers_pass_through() {
    let env = start().await;
    for client in [&env.http1, &env.h2] {
        let r = client
            .get(env.port, "shop.example", "/grpc/x", &[("te", "trailers")])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.field("version"), "HTTP/2.0");
        assert_eq!(r.field("path"), "/trailers/x");
        assert_eq!(r.field("authority"), format!("shop.example:{}", env.port));
        assert_eq!(r.field("te"), "trailers");
        let trailers = r
            .trailers
            .unwrap_or_else(|| panic!("trailers (h2 client: {}) {:?}", client.h2, r.headers));
        assert_eq!(trailers["grpc-status"], "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_404_503_504_with_reasons() {
    let env = start().await;
    let r = env
        .http1
        .get(env.port, "shop.example", "/nowhere", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        "no route for host \"shop.example\" path \"/nowhere\"\n"
    );
    assert_eq!(r.headers["x-bowline-error"], "no_route");
    let r = env
        .h2
        .get(env.port, "other.example", "/color", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404, "unknown host");

    let started = Instant::now();
    let r = env
        .http1
        .get(env.port, "shop.example", "/dead", &[])
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-bowline-error"], "connect_refused");
    assert_eq!(
        r.body,
        format!(
            "cluster \"dead\": connection refused by 127.0.0.1:{}\n",
            env.ports.dead
        )
    );

    let r = env
        .http1
        .get(env.port, "shop.example", "/empty", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-bowline-error"], "no_endpoints");
    assert_eq!(r.body, "cluster \"empty\" has no endpoints\n");

    let started = Instant::now();
    let r = env
        .h2
        .get(env.port, "shop.example", "/hang", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.headers["x-bowline-error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let (status, metrics) = admin_get(env.engine.admin_addr(), "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"bowline_requests_total{route="-",status_class="4xx"} 2"#,
        r#"bowline_requests_total{route="dead",status_class="5xx"} 1"#,
        r#"bowline_upstream_errors_total{cluster="dead",reason="connect_refused"} 1"#,
        r#"bowline_upstream_errors_total{cluster="empty",reason="no_endpoints"} 1"#,
        r#"bowline_upstream_errors_total{cluster="blue",reason="upstream_timeout"} 1"#,
        r#"bowline_config_applied_info{version="v1"} 1"#,
        r#"bowline_config_updates_total{result="ack"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_keeps_serving_and_config_dump_shows_the_version() {
    let mut env = start().await;
    let mut bad = config(env.port, &env.ports, (0, 100));
    bad.route_tables[0].virtual_hosts[0].routes[0].action =
        fwd(&[("missing", 1)], ir::Rewrite::default(), None);
    let answer = env.stream.push("v2", &bad).await;
    assert!(
        answer
            .error_detail
            .unwrap()
            .message
            .contains("unknown cluster \"missing\"")
    );
    let (_, dump) = admin_get(env.engine.admin_addr(), "/config_dump").await;
    let j: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(j["version"], "v1");
    assert_eq!(j["snapshot"]["listeners"][0]["port"], env.port);
    let r = env
        .http1
        .get(env.port, "shop.example", "/color", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_swaps_under_load_fail_nothing() {
    let mut env = start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = if i % 2 == 0 {
            env.http1.clone()
        } else {
            env.h2.clone()
        };
        let (stop, served, port) = (stop.clone(), served.clone(), env.port);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match client.get(port, "shop.example", "/color/x", &[]).await {
                    Ok(r) if r.status == 200 => {
                        ok += 1;
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("{}: {}", r.status, r.body)),
                    Err(e) => failures.push(e),
                }
            }
            (ok, failures)
        }));
    }
    // Swap weights back and forth, and add then remove a second listener, while requests run.
    let extra = free_port();
    for n in 0..20u32 {
        let weights = if n % 2 == 0 { (0, 100) } else { (100, 0) };
        let mut s = config(env.port, &env.ports, weights);
        if n % 4 < 2 {
            let mut l = s.listeners[0].clone();
            l.name = "extra".into();
            l.port = extra;
            s.listeners.push(l);
            s.normalize();
        }
        let before = served.load(Ordering::Relaxed);
        let answer = env.stream.push(&format!("v{}", n + 2), &s).await;
        assert_eq!(answer.error_detail, None);
        // Let some requests run on this version.
        let target = if weights.1 == 100 { "green" } else { "blue" };
        eventually("requests reach the new target", || {
            let c = env.http1.clone();
            let port = env.port;
            async move {
                let r = c.get(port, "shop.example", "/color/x", &[]).await?;
                (r.field("name") == target)
                    .then_some(())
                    .ok_or_else(|| r.body.clone())
            }
        })
        .await;
        eventually("the load runs on this version", || {
            let served = served.clone();
            async move {
                let n = served.load(Ordering::Relaxed);
                (n >= before + 100)
                    .then_some(())
                    .ok_or_else(|| format!("{n} served"))
            }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures) = (0, Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failures.extend(f);
    }
    eprintln!(
        "{ok} requests across 20 config swaps, {} failed",
        failures.len()
    );
    assert!(ok >= 2000, "the load ran: {ok}");
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_the_config() {
    let mut env = start().await;
    let second = free_port();
    let mut s = config(env.port, &env.ports, (75, 25));
    let mut l = s.listeners[0].clone();
    l.name = "second".into();
    l.port = second;
    s.listeners.push(l);
    s.normalize();
    assert_eq!(env.stream.push("v2", &s).await.error_detail, None);
    assert_eq!(
        env.engine.listening(),
        [
            (
                "http".to_string(),
                SocketAddr::from(([127, 0, 0, 1], env.port))
            ),
            (
                "second".to_string(),
                SocketAddr::from(([127, 0, 0, 1], second))
            ),
        ]
    );
    let r = env
        .http1
        .get(second, "shop.example", "/teapot", &[])
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 418);

    // Remove the first listener: it stops accepting, the second keeps serving.
    s.listeners.retain(|l| l.name == "second");
    assert_eq!(env.stream.push("v3", &s).await.error_detail, None);
    eventually("the removed port refuses connections", || async {
        match tokio::net::TcpStream::connect(("127.0.0.1", env.port)).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    let r = HttpClient::http1()
        .get(second, "shop.example", "/teapot", &[])
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 418);

    // A port that cannot be bound is a NACK; the config in service stays.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s2 = s.clone();
    s2.listeners[0].port = taken.local_addr().unwrap().port();
    let answer = env.stream.push("v4", &s2).await;
    let reason = answer.error_detail.unwrap().message;
    assert!(
        reason.starts_with("listener/second: address: cannot listen on"),
        "{reason}"
    );
    let r = HttpClient::http1()
        .get(second, "shop.example", "/teapot", &[])
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 418);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let env = start().await;
    let client = env.http1.clone();
    let port = env.port;
    let in_flight =
        tokio::spawn(async move { client.get(port, "shop.example", "/slow", &[]).await });
    // Wait until the upstream holds the request.
    tokio::time::timeout(PATIENCE, env.blue.arrived.lock().await.recv())
        .await
        .unwrap()
        .unwrap();
    let admin = env.engine.admin_addr();
    let shutdown = tokio::spawn(env.engine.shutdown(PATIENCE));
    eventually("the listener stops accepting", || async {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    assert_eq!(
        admin_get(admin, "/ready").await.0,
        503,
        "not ready while draining"
    );
    env.blue.release.notify_one();
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(shutdown.await.unwrap(), "drained before the deadline");
}

#[tokio::test]
async fn grpc_requests_get_grpc_statuses_and_honour_grpc_timeout() {
    let env = start().await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    // No route: UNIMPLEMENTED, as a trailers-only gRPC response.
    let r = env
        .h2
        .get(env.port, "shop.example", "/pkg.Svc/Nope", &grpc)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "12");
    assert_eq!(r.headers["x-bowline-error"], "no_route");
    // No endpoints: UNAVAILABLE.
    let r = env
        .h2
        .get(env.port, "shop.example", "/empty", &grpc)
        .await
        .unwrap();
    assert_eq!(r.headers["grpc-status"], "14");
    // The client's deadline bounds a request whose route has no timeout: DEADLINE_EXCEEDED.
    let started = std::time::Instant::now();
    let with_deadline = [grpc[0], grpc[1], ("grpc-timeout", "100m")];
    let r = env
        .h2
        .get(env.port, "shop.example", "/slow", &with_deadline)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["grpc-status"], "4");
    assert!(started.elapsed() < PATIENCE, "took {:?}", started.elapsed());
    env.blue.release.notify_one();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_policies_deny_rate_limit_and_cap_in_flight_requests() {
    let mut env = start().await;
    let mut s = config(env.port, &env.ports, (1, 0));
    let routes = &mut s.route_tables[0].virtual_hosts[0].routes;
    let mut denied = route(
        "denied",
        "/denied",
        fwd(&[("blue", 1)], ir::Rewrite::default(), None),
    );
    denied.access = Some(Box::new(ir::ClientAccess {
        allow: vec!["10.0.0.0/8".into()],
        deny: vec![],
    }));
    let mut limited = route(
        "rate",
        "/rate",
        fwd(&[("blue", 1)], ir::Rewrite::default(), None),
    );
    limited.client_limits = Some(Box::new(ir::ClientLimits {
        zone: "rate".into(),
        rates: vec![ir::RateLimit {
            requests: 1,
            period_seconds: 3600,
            burst: 1,
        }],
        max_concurrent: None,
        exempt: vec![],
        status: 429,
    }));
    let slow = routes.iter_mut().find(|r| r.name == "slow").unwrap();
    slow.client_limits = Some(Box::new(ir::ClientLimits {
        zone: "slow".into(),
        rates: vec![],
        max_concurrent: Some(1),
        exempt: vec![],
        status: 503,
    }));
    routes.insert(0, denied);
    routes.insert(0, limited);
    let answer = env.stream.push("v2", &s).await;
    assert_eq!(answer.error_detail, None);

    // 127.0.0.1 is outside the allow list.
    let r = env
        .http1
        .get(env.port, "shop.example", "/denied", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.headers["x-bowline-error"], "client_denied");
    assert_eq!(
        r.body,
        "client 127.0.0.1: address not allowed by the route\n"
    );

    // One request and a burst of one, then 429 with Retry-After, over both protocols.
    assert_eq!(
        env.http1
            .get(env.port, "shop.example", "/rate", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        env.h2
            .get(env.port, "shop.example", "/rate", &[])
            .await
            .unwrap()
            .status,
        200
    );
    let r = env
        .h2
        .get(env.port, "shop.example", "/rate", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers["x-bowline-error"], "rate_limited");
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry_after), "{retry_after}");

    // An unrelated config update keeps the zone's counters.
    let answer = env.stream.push("v3", &s).await;
    assert_eq!(answer.error_detail, None);
    let r = env
        .http1
        .get(env.port, "shop.example", "/rate", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 429, "the allowance survived the update");

    // One request in flight per client: the second is refused until the first has ended.
    let client = env.http1.clone();
    let port = env.port;
    let first = tokio::spawn(async move { client.get(port, "shop.example", "/slow", &[]).await });
    tokio::time::timeout(PATIENCE, env.blue.arrived.lock().await.recv())
        .await
        .unwrap()
        .unwrap();
    let r = env
        .h2
        .get(env.port, "shop.example", "/slow", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-bowline-error"], "client_concurrency");
    assert_eq!(
        r.body,
        "client 127.0.0.1: more than 1 requests in flight in zone \"slow\"\n"
    );
    env.blue.release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status, 200);
    // The slot is released once the first response has ended.
    let client = env.h2.clone();
    let second = tokio::spawn(async move { client.get(port, "shop.example", "/slow", &[]).await });
    tokio::time::timeout(PATIENCE, env.blue.arrived.lock().await.recv())
        .await
        .unwrap()
        .unwrap();
    env.blue.release.notify_one();
    assert_eq!(second.await.unwrap().unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_policies_with_bad_ranges_are_nacked() {
    let mut env = start().await;
    let mut s = config(env.port, &env.ports, (1, 0));
    s.route_tables[0].virtual_hosts[0].routes[0].access = Some(Box::new(ir::ClientAccess {
        allow: vec!["10.0.0.0/33".into()],
        deny: vec![],
    }));
    let answer = env.stream.push("v2", &s).await;
    let detail = answer.error_detail.expect("a NACK").message;
    assert!(detail.contains("access.allow[0]"), "{detail}");
    assert!(detail.contains("10.0.0.0/33"), "{detail}");
    // The last good config keeps serving.
    let r = env
        .http1
        .get(env.port, "shop.example", "/plain", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}
