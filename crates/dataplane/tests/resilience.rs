//! Load balancing and resilience through the proxy in process: snapshots applied with
//! `Proxy::apply`, tiny hyper upstreams whose behaviour the request path chooses, real clients.
//! Everything waits on explicit signals or bounded retries, never on sleeps.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bowline_dataplane::metrics::ProxyMetrics;
use bowline_dataplane::proxy::{Proxy, ProxyConfig};
use bowline_model::ir;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Notify;

const PATIENCE: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === upstream ===

/// An upstream (HTTP/1.1 and h2c) whose answer the path picks:
/// `/status/N` answers N (after reading the body); `/fail-first/N` answers N to a first attempt
/// (no `x-bowline-attempt`); `/hang-first` never answers a first attempt; `/hold` waits for
/// `release`; `/stall` sends the headers and one chunk, then nothing; `/grpc-unavailable-first`
/// answers a trailers-only gRPC UNAVAILABLE to a first attempt; anything else answers 200 with
/// `{"name", "attempt", "bodyBytes"}`.
struct Upstream {
    addr: SocketAddr,
    name: &'static str,
    requests: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    async fn start(name: &'static str) -> Upstream {
        Upstream::start_with(name, None).await
    }

    /// An upstream that answers every request with `status`.
    async fn failing(name: &'static str, status: u16) -> Upstream {
        Upstream::start_with(name, Some(status)).await
    }

    async fn start_with(name: &'static str, fail: Option<u16>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (r, h, rel) = (requests.clone(), held.clone(), release.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, h, rel) = (r.clone(), h.clone(), rel.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (r, h, rel) = (r.clone(), h.clone(), rel.clone());
                        async move {
                            Ok::<_, Infallible>(answer(name, fail, req, &r, &h, &rel).await)
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
            name,
            requests,
            held,
            release,
            task,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection (the port refuses from now on).
    fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &str,
    fail: Option<u16>,
    req: Request<Incoming>,
    requests: &AtomicUsize,
    held: &AtomicUsize,
    release: &Notify,
) -> Response<UpBody> {
    requests.fetch_add(1, Ordering::SeqCst);
    let attempt: u32 = req
        .headers()
        .get("x-bowline-attempt")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1);
    let path = req.uri().path().to_string();
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map_or(0, |b| b.to_bytes().len());
    let status = |s: u16| {
        let mut resp = Response::new(BodyExt::boxed(Full::new(Bytes::from(format!("{s}\n")))));
        *resp.status_mut() = StatusCode::from_u16(s).unwrap();
        resp
    };
    if let Some(s) = fail {
        return status(s);
    }
    if let Some(s) = path.strip_prefix("/status/") {
        return status(s.parse().unwrap());
    }
    if let Some(s) = path.strip_prefix("/fail-first/")
        && attempt == 1
    {
        return status(s.parse().unwrap());
    }
    if path == "/hang-first" && attempt == 1 {
        std::future::pending::<()>().await;
    }
    if path == "/hold" {
        let released = release.notified();
        held.fetch_add(1, Ordering::SeqCst);
        released.await;
        held.fetch_sub(1, Ordering::SeqCst);
    }
    if path == "/stall" {
        let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"partial"),
        ))])
        .chain(futures_util::stream::pending());
        return Response::new(BodyExt::boxed(StreamBody::new(frames)));
    }
    if path == "/grpc-unavailable-first" && attempt == 1 {
        let mut resp = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
        resp.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        resp.headers_mut()
            .insert("grpc-status", "14".parse().unwrap());
        return resp;
    }
    let json = serde_json::json!({"name": name, "attempt": attempt, "bodyBytes": body_bytes});
    Response::new(BodyExt::boxed(Full::new(Bytes::from(json.to_string()))))
}

use futures_util::StreamExt as _;

// === proxy and client ===

struct Env {
    proxy: Proxy,
    registry: Registry,
    port: u16,
    clusters: Vec<ir::Cluster>,
    endpoints: Vec<ir::ClusterEndpoints>,
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<String, String>,
}

impl Reply {
    fn name(&self) -> String {
        let body = self.body.as_deref().unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(body)
            .map(|j| j["name"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.body.as_deref().unwrap()).unwrap()
    }
}

impl Env {
    async fn start(
        clusters: Vec<ir::Cluster>,
        endpoints: Vec<ir::ClusterEndpoints>,
        action: ir::ForwardAction,
    ) -> Env {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(&mut registry);
        let proxy = Proxy::new(
            ProxyConfig {
                bind: "127.0.0.1".parse().unwrap(),
                edge: Default::default(),
            },
            metrics,
        );
        let port = free_port();
        let snap = snapshot(port, clusters.clone(), endpoints.clone(), action);
        proxy.apply(&snap).unwrap();
        Env {
            proxy,
            registry,
            port,
            clusters,
            endpoints,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Applies the same cluster with another route action.
    fn apply(&self, action: ir::ForwardAction) {
        let snapshot = snapshot(
            self.port,
            self.clusters.clone(),
            self.endpoints.clone(),
            action,
        );
        self.proxy.apply(&snapshot).unwrap();
    }

    fn h2c(&mut self) {
        self.client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            PATIENCE,
            self.client.request(req.body(Full::new(body)).unwrap()),
        )
        .await
        .expect("answered in time")
        .expect("a response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = match tokio::time::timeout(PATIENCE, resp.into_body().collect()).await {
            Ok(Ok(b)) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("body timed out".into()),
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], Bytes::new()).await
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// The value of a metric line starting with `series`.
    fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn cluster(protocol: ir::Protocol) -> ir::Cluster {
    ir::Cluster {
        name: "c".into(),
        protocol,
        lb_policy: ir::LbPolicy::RoundRobin,
        connect_timeout_ms: 1000,
        hash_on: None,
        health_check: None,
        outlier_detection: None,
        circuit_breakers: None,
        idle_timeout_ms: None,
        request_timeout_ms: None,
        tcp_idle_timeout_ms: None,
        send_timeout_ms: None,
        tls: None,
    }
}

fn endpoints(ports: &[u16]) -> Vec<ir::ClusterEndpoints> {
    vec![ir::ClusterEndpoints {
        cluster: "c".into(),
        endpoints: ports
            .iter()
            .map(|&port| ir::Endpoint {
                address: "127.0.0.1".into(),
                port,
                weight: 1,
            })
            .collect(),
    }]
}

fn forward(retry: Option<ir::RetryPolicy>) -> ir::ForwardAction {
    ir::ForwardAction {
        clusters: vec![ir::WeightedCluster::new("c".into(), 1)],
        rewrite: ir::Rewrite::default(),
        timeout_ms: Some(8000),
        retry,
        idle_timeout_ms: None,
        unresolved_weight: 0,
    }
}

fn retry(max_retries: u32, on: &[ir::RetryOn]) -> Option<ir::RetryPolicy> {
    Some(ir::RetryPolicy {
        max_retries,
        per_retry_timeout_ms: None,
        retry_on: on.to_vec(),
    })
}

fn snapshot(
    port: u16,
    clusters: Vec<ir::Cluster>,
    endpoints: Vec<ir::ClusterEndpoints>,
    action: ir::ForwardAction,
) -> ir::Snapshot {
    let mut s = ir::Snapshot {
        listeners: vec![ir::Listener {
            name: "http".into(),
            address: String::new(),
            port,
            protocol: ir::Protocol::Http,
            route_table: "rt".into(),
            access_log: None,
            tls: None,
            tcp_proxy: None,
        }],
        route_tables: vec![ir::RouteTable {
            name: "rt".into(),
            virtual_hosts: vec![ir::VirtualHost {
                name: "*".into(),
                hosts: vec![ir::HostMatch::Any],
                routes: vec![ir::Route::new(
                    "r",
                    ir::RouteMatch::default(),
                    ir::RouteAction::Forward(action),
                )],
            }],
        }],
        clusters,
        endpoints,
    };
    s.normalize();
    s
}

/// Polls `check` until it returns true, for at most [`PATIENCE`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// === retries ===

#[tokio::test]
async fn connection_errors_are_retried_on_another_endpoint() {
    let up = Upstream::start("live").await;
    let dead = free_port();
    let env = Env::start(
        vec![cluster(ir::Protocol::Http)],
        endpoints(&[dead, up.port()]),
        forward(retry(1, &[ir::RetryOn::ConnectionError])),
    )
    .await;
    for _ in 0..20 {
        let r = env.get("/").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.name(), "live");
    }
    // Round robin over [dead, live] sends each request to the dead endpoint first (the retry
    // takes the live one's turn), and the retry to the live one.
    assert_eq!(env.metric(r#"bowline_retries_total{cluster="c"}"#), 20.0);
    assert_eq!(
        env.metric(r#"bowline_upstream_errors_total{cluster="c",reason="connect_refused"}"#),
        20.0
    );
    // A body of known length is read first, so it survives a connect failure.
    let r = env
        .request("POST", "/", &[], Bytes::from(vec![b'x'; 2048]))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bodyBytes"], 2048);
}

#[tokio::test]
async fn bodies_of_unknown_length_are_recorded_for_retries() {
    let up = Upstream::start("a").await;
    let env = Env::start(
        vec![cluster(ir::Protocol::Http)],
        endpoints(&[up.port()]),
        forward(retry(1, &[ir::RetryOn::ServerError])),
    )
    .await;
    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;
    let client: Client<HttpConnector, Chunks> = Client::builder(TokioExecutor::new()).build_http();
    let send = |size: usize| {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..4)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'y'; size / 4]))))
            .collect();
        let req = Request::post(format!("http://127.0.0.1:{}/fail-first/503", env.port))
            .body(StreamBody::new(futures_util::stream::iter(chunks)))
            .unwrap();
        client.request(req)
    };
    // Chunked (no Content-Length): kept while it streams, replayed on the retry.
    let resp = send(4000).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["bodyBytes"], 4000);
    assert_eq!(json["attempt"], 2);
    // Above 64 KiB the copy is dropped: the first answer stands.
    let resp = send(80_000).await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn server_errors_are_retried_and_small_bodies_replayed() {
    let up = Upstream::start("a").await;
    let env = Env::start(
        vec![cluster(ir::Protocol::Http)],
        endpoints(&[up.port()]),
        forward(retry(2, &[ir::RetryOn::ServerError])),
    )
    .await;
    let r = env.get("/fail-first/503").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["attempt"], 2, "the retry says it is one");
    // A small body is replayed on the retry.
    let body = Bytes::from(vec![b'x'; 10_000]);
    let r = env.request("POST", "/fail-first/500", &[], body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bodyBytes"], 10_000);
    // A body above 64 KiB is streamed and not retried: the upstream's 500 is the answer.
    let big = Bytes::from(vec![b'x'; 100_000]);
    let before = up.requests();
    let r = env.request("POST", "/fail-first/500", &[], big).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(up.requests() - before, 1);
    // Client errors other than 409 are answers, not failures.
    let before = up.requests();
    assert_eq!(env.get("/status/404").await.status, 404);
    assert_eq!(up.requests() - before, 1);
}

#[tokio::test]
async fn retries_stop_at_max_retries_with_the_last_answer() {
    let up = Upstream::start("a").await;
    let env = Env::start(
        vec![cluster(ir::Protocol::Http)],
        endpoints(&[up.port()]),
        forward(retry(2, &[ir::RetryOn::GatewayError])),
    )
    .await;
    let r = env.get("/status/503").await;
    assert_eq!(r.status, 503, "the upstream's answer: {r:?}");
    assert!(r.headers.get("x-bowline-error").is_none(), "{r:?}");
    assert_eq!(up.requests(), 3, "one attempt and two retries");
    // 500 is a server error, not a gateway error.
    let before = up.requests();
    assert_eq!(env.get("/status/500").await.status, 500);
    assert_eq!(up.requests() - before, 1);
}

#[tokio::test]
async fn a_per_try_timeout_moves_on_to_a_retry() {
    let up = Upstream::start("a").await;
    let mut action = forward(retry(1, &[ir::RetryOn::ServerError]));
    if let Some(r) = &mut action.retry {
        r.per_retry_timeout_ms = Some(100);
    }
    let env = Env::start(
        vec![cluster(ir::Protocol::Http)],
        endpoints(&[up.port()]),
        action,
    )
    .await;
    let r = env.get("/hang-first").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["attempt"], 2);
}

#[tokio::test]
async fn grpc_unavailable_is_retried_over_h2c() {
    let up = Upstream::start("a").await;
    let mut env = Env::start(
        vec![cluster(ir::Protocol::Grpc)],
        endpoints(&[up.port()]),
        forward(retry(1, &[ir::RetryOn::Unavailable])),
    )
    .await;
    env.h2c();
    let r = env
        .request(
            "POST",
            "/grpc-unavailable-first",
            &[("content-type", "application/grpc")],
            Bytes::from_static(&[0, 0, 0, 0, 0]),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["attempt"], 2);
    assert_eq!(r.json()["bodyBytes"], 5, "the message was replayed");
}

// === circuit breakers ===

#[tokio::test]
async fn max_requests_answers_503_naming_the_limit() {
    let up = Upstream::start("a").await;
    let mut c = cluster(ir::Protocol::Http2);
    c.circuit_breakers = Some(ir::CircuitBreakers {
        max_requests: Some(1),
        ..Default::default()
    });
    let env = Arc::new(Env::start(vec![c], endpoints(&[up.port()]), forward(None)).await);
    let holder = {
        let env = env.clone();
        tokio::spawn(async move { env.get("/hold").await })
    };
    until("the first request reaches the upstream", async || {
        up.held.load(Ordering::SeqCst) == 1
    })
    .await;
    let r = env.get("/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.headers["x-bowline-overflow"], "max-requests");
    assert_eq!(r.headers["x-bowline-error"], "overflow");
    up.release.notify_waiters();
    assert_eq!(holder.await.unwrap().status, 200);
    assert_eq!(env.get("/").await.status, 200, "the permit came back");
    assert_eq!(
        env.metric(r#"bowline_circuit_breaker_overflows_total{cluster="c",limit="max-requests"}"#),
        1.0
    );
    drop(env);
}

#[tokio::test]
async fn max_connections_queues_max_pending_requests_then_overflows() {
    let up = Upstream::start("a").await;
    let mut c = cluster(ir::Protocol::Http);
    c.circuit_breakers = Some(ir::CircuitBreakers {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        max_requests: None,
    });
    let env = Arc::new(Env::start(vec![c], endpoints(&[up.port()]), forward(None)).await);
    let holder = {
        let env = env.clone();
        tokio::spawn(async move { env.get("/hold").await })
    };
    until("the first request holds the connection", async || {
        up.held.load(Ordering::SeqCst) == 1
    })
    .await;
    // Two more: one waits for the connection, the other finds the queue full.
    let (e1, e2) = (env.clone(), env.clone());
    let b = tokio::spawn(async move { e1.get("/").await });
    let c = tokio::spawn(async move { e2.get("/").await });
    // The one that overflows finishes first: the other cannot until the connection is free.
    let (overflowed, waiting) = match futures_util::future::select(b, c).await {
        futures_util::future::Either::Left((r, other))
        | futures_util::future::Either::Right((r, other)) => (r.unwrap(), other),
    };
    assert_eq!(overflowed.status, 503, "{overflowed:?}");
    assert_eq!(
        overflowed.headers["x-bowline-overflow"],
        "max-pending-requests"
    );
    up.release.notify_waiters();
    assert_eq!(holder.await.unwrap().status, 200);
    assert_eq!(
        waiting.await.unwrap().status,
        200,
        "the waiting request was served"
    );
}

// === outlier detection, health checks, timeouts ===

#[tokio::test]
async fn consecutive_server_errors_eject_an_endpoint() {
    let bad = Upstream::failing("bad", 500).await;
    let good = Upstream::start("good").await;
    let mut c = cluster(ir::Protocol::Http);
    c.outlier_detection = Some(ir::OutlierDetection {
        max_server_errors: 2,
        interval_ms: 10_000,
        base_ejection_duration_ms: 60_000,
        max_ejection_percent: 50,
    });
    let env = Env::start(
        vec![c],
        endpoints(&[bad.port(), good.port()]),
        forward(None),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(env.get("/").await.status.as_u16());
    }
    // Round robin: bad, good, bad (the second 500 in a row ejects it), then only good.
    assert_eq!(statuses, [500, 200, 500, 200, 200, 200, 200, 200, 200, 200]);
    assert_eq!(bad.requests(), 2, "{}", bad.name);
    assert_eq!(
        env.metric(r#"bowline_outlier_ejections_total{cluster="c"}"#),
        1.0
    );
}

#[tokio::test]
async fn health_checks_take_a_stopped_endpoint_out() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut c = cluster(ir::Protocol::Http);
    c.health_check = Some(ir::HealthCheck {
        protocol: ir::Protocol::Http,
        interval_ms: 20,
        timeout_ms: 1000,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        path: Some("/health".into()),
        port: None,
    });
    let env = Env::start(vec![c], endpoints(&[a.port(), b.port()]), forward(None)).await;
    until("both endpoints were checked", async || {
        a.requests() > 0 && b.requests() > 0
    })
    .await;
    b.kill();
    let b_series = format!(
        r#"bowline_endpoint_healthy{{cluster="c",endpoint="127.0.0.1:{}"}}"#,
        b.port()
    );
    until("b is unhealthy", async || {
        env.metrics().contains(&format!("{b_series} 0"))
    })
    .await;
    for _ in 0..20 {
        let r = env.get("/").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.name(), "a");
    }
    // An update that keeps the cluster keeps its checks and their verdict.
    let router = env.proxy.router();
    let healthy = |r: &bowline_dataplane::router::Router| -> Vec<bool> {
        r.clusters()[0]
            .endpoints()
            .iter()
            .map(|e| e.state.healthy())
            .collect()
    };
    assert_eq!(healthy(&router), [true, false]);
    let mut action = forward(None);
    action.timeout_ms = Some(7000);
    env.apply(action);
    let router = env.proxy.router();
    assert_eq!(
        healthy(&router),
        [true, false],
        "the verdict survived the update"
    );
}

#[tokio::test]
async fn idle_timeouts_bound_headers_and_body_stalls() {
    let up = Upstream::start("a").await;
    let mut c = cluster(ir::Protocol::Http);
    c.idle_timeout_ms = Some(200);
    let env = Env::start(vec![c], endpoints(&[up.port()]), forward(None)).await;
    let r = env.get("/hang-first").await;
    assert_eq!(r.status, 504, "{r:?}");
    let r = env.get("/stall").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_err(), "the stalled body is cut: {r:?}");
    // A request that keeps moving is unaffected.
    assert_eq!(env.get("/").await.status, 200);
}

// === load balancing ===

#[tokio::test]
async fn sticky_cookies_keep_a_client_on_one_endpoint() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut c = cluster(ir::Protocol::Http);
    c.lb_policy = ir::LbPolicy::RingHash;
    c.hash_on = Some(ir::HashOn::Cookie {
        name: "sticky".into(),
        ttl_seconds: 60,
        path: Some("/".into()),
        domain: None,
        secure: false,
        same_site: None,
    });
    let env = Env::start(vec![c], endpoints(&[a.port(), b.port()]), forward(None)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let first = env.get("/").await;
        let set = first.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(set.ends_with("; Path=/; Max-Age=60; HttpOnly"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let name = first.name();
        for _ in 0..3 {
            let r = env
                .request("GET", "/", &[("cookie", &cookie)], Bytes::new())
                .await;
            assert_eq!(r.name(), name, "{cookie}");
            assert!(r.headers.get("set-cookie").is_none());
        }
        seen.insert(name);
    }
    assert_eq!(
        seen.len(),
        2,
        "sessions spread over both endpoints: {seen:?}"
    );
}
