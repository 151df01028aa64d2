//! `bowline-load`: a small load generator for tests that must run inside a network namespace
//! (`ip netns exec NS bowline-load …`), where the test process itself cannot connect.
//!
//! - `bowline-load --url URL [--concurrency N] [--h2] --stop-file PATH`: sends GETs until PATH
//!   exists; prints `progress ok=N failed=M` after every 200 answers and a final JSON summary
//!   `{"ok":N,"failed":M,"failures":[...],"retriedUnprocessed":R}` (the first 20 failures). A
//!   failure is a transport error or a status other than 200; requests the server provably did
//!   not process (HTTP/2 GOAWAY NO_ERROR or REFUSED_STREAM) are retried, as RFC 9113 allows,
//!   and counted in `retriedUnprocessed`.
//! - `bowline-load --wait-ready URL`: polls URL until it answers 200 (60 s at most; exit 1).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(name = "bowline-load", about = "Load generator for Bowline's tests")]
struct Args {
    /// The URL to GET.
    #[arg(long)]
    url: Option<String>,
    /// Concurrent request loops (each keeps its connection alive).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    h2: bool,
    /// Stop once this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Poll this URL until it answers 200, then exit.
    #[arg(long)]
    wait_ready: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(args.h2)
        .build(HttpConnector::new());
    if let Some(url) = args.wait_ready {
        let uri: http::Uri = url.parse()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{url} did not answer 200 within 60 s");
    }
    let uri: http::Uri = args
        .url
        .ok_or_else(|| anyhow::anyhow!("--url is required"))?
        .parse()?;
    let stop = args
        .stop_file
        .ok_or_else(|| anyhow::anyhow!("--stop-file is required"))?;
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let retried = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, uri, stop) = (client.clone(), uri.clone(), stop.clone());
        let (ok, failed, failures) = (ok.clone(), failed.clone(), failures.clone());
        let retried = retried.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.exists() {
                let mut attempts = 0;
                let result = loop {
                    attempts += 1;
                    match client.get(uri.clone()).await {
                        Ok(r) if r.status() == 200 => {
                            break r
                                .into_body()
                                .collect()
                                .await
                                .map(drop)
                                .map_err(|e| e.to_string());
                        }
                        Ok(r) => break Err(format!("status {}", r.status())),
                        // RFC 9113 §8.7: a request the server refused or never processed (a
                        // stream above GOAWAY's last stream id) may be retried; browsers and
                        // proxies do. hyper's pool surfaces it as an error instead.
                        Err(e) if attempts < 3 && unprocessed(&e) => {
                            retried.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => break Err(format!("{e:?}")),
                    }
                };
                let answered = match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed) + 1,
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut f = failures.lock().await;
                        if f.len() < 20 {
                            f.push(e);
                        }
                        ok.load(Ordering::Relaxed)
                    }
                };
                if answered % 200 == 0 {
                    println!(
                        "progress ok={answered} failed={}",
                        failed.load(Ordering::Relaxed)
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let summary = serde_json::json!({
        "ok": ok.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "failures": *failures.lock().await,
        "retriedUnprocessed": retried.load(Ordering::Relaxed),
    });
    println!("{summary}");
    Ok(())
}

/// Whether the server provably did not process the request: HTTP/2 GOAWAY with NO_ERROR for a
/// stream it never started, or REFUSED_STREAM.
fn unprocessed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = err.source();
    }
    false
}
