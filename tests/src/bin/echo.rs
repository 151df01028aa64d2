//! `bowline-echo`: a tiny upstream for the quickstart and the end-to-end tests.
//!
//! It answers every request with its own name and what it received, as JSON:
//! `{"name":"blue","method":"GET","path":"/x?y=1","host":"...","version":"HTTP/1.1","headers":{...},"bodyBytes":0}`
//! and a header `x-echo-name`. It speaks HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port.
//! On start it prints `listening on ADDR` on stdout, so it can be started on port 0.
//!
//! For resilience tests, path segments choose the answer: `/delay/MS` waits MS milliseconds and
//! `/status/N` answers status N (they combine: `/delay/300/status/503`). Paths under `/__echo/`
//! are its own and are not counted: `/__echo/health` answers 200; `/__echo/hold` waits until
//! `/__echo/release` is requested; `/__echo/stats` reports
//! `{"requests":N,"retries":N,"held":N,"maxConcurrentRetries":N}` (a retry is a request with
//! `x-bowline-attempt` of 2 or more).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Counters of `/__echo/stats`.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    retries: AtomicU64,
    retries_in_flight: AtomicU64,
    max_concurrent_retries: AtomicU64,
    held: AtomicU64,
    release: Notify,
}

static STATS: std::sync::LazyLock<Stats> = std::sync::LazyLock::new(Stats::default);

/// Counts a retry in flight until dropped.
struct RetryInFlight;

impl RetryInFlight {
    fn start() -> RetryInFlight {
        let now = STATS.retries_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        STATS
            .max_concurrent_retries
            .fetch_max(now, Ordering::SeqCst);
        RetryInFlight
    }
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        STATS.retries_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "bowline-echo",
    about = "An upstream that echoes what it received"
)]
struct Args {
    /// Name reported in every answer.
    #[arg(long, env = "ECHO_NAME", default_value = "echo")]
    name: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ECHO_LISTEN", default_value = "127.0.0.1:0")]
    listen: Vec<SocketAddr>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let mut tasks = Vec::new();
    for addr in args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!("listening on {}", listener.local_addr()?);
        tasks.push(tokio::spawn(serve(listener, name)));
    }
    tokio::select! {
        _ = futures_wait(tasks) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn futures_wait(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn serve(listener: TcpListener, name: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(req, name));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(own) = path.strip_prefix("/__echo/") {
        return Ok(own_answer(own, name).await);
    }
    STATS.requests.fetch_add(1, Ordering::SeqCst);
    let attempt: u64 = parts
        .headers
        .get("x-bowline-attempt")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1);
    let _retry = (attempt >= 2).then(|| {
        STATS.retries.fetch_add(1, Ordering::SeqCst);
        RetryInFlight::start()
    });
    let mut status = 200u16;
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    while let Some(seg) = segments.next() {
        match (
            seg,
            segments.clone().next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            ("delay", Some(ms)) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                segments.next();
            }
            ("status", Some(n)) => {
                status = u16::try_from(n).unwrap_or(500);
                segments.next();
            }
            _ => {}
        }
    }
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").and_then(|h| h.first().cloned()))
        .unwrap_or_default();
    let report = serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "host": host,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "bodyBytes": body_bytes,
    });
    let mut body = serde_json::to_vec(&report).unwrap_or_default();
    body.push(b'\n');
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-name", name)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// The echo's own paths (not counted).
async fn own_answer(path: &str, name: &'static str) -> Response<Full<Bytes>> {
    let json = match path {
        "hold" => {
            let released = STATS.release.notified();
            STATS.held.fetch_add(1, Ordering::SeqCst);
            released.await;
            STATS.held.fetch_sub(1, Ordering::SeqCst);
            serde_json::json!({"name": name, "held": true})
        }
        "release" => {
            STATS.release.notify_waiters();
            serde_json::json!({"name": name, "released": true})
        }
        "stats" => serde_json::json!({
            "name": name,
            "requests": STATS.requests.load(Ordering::SeqCst),
            "retries": STATS.retries.load(Ordering::SeqCst),
            "held": STATS.held.load(Ordering::SeqCst),
            "maxConcurrentRetries": STATS.max_concurrent_retries.load(Ordering::SeqCst),
        }),
        _ => serde_json::json!({"name": name}),
    };
    let mut body = json.to_string().into_bytes();
    body.push(b'\n');
    Response::builder()
        .header("content-type", "application/json")
        .header("x-echo-name", name)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
