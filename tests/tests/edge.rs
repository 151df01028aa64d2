//! Edge hardening, end to end: request limits, slowloris, smuggling, the connection cap and the
//! forwarding-header trust boundary, against the real binaries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bowline_tests::{Echo, HttpClient, Stack, eventually, free_port, one_route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Env {
    stack: Stack,
    gw: SocketAddr,
    _echo: Echo,
}

async fn start(gateway_args: &[&str]) -> Env {
    let echo = Echo::start("app").unwrap();
    let gw_port = free_port();
    let stack = Stack::start_with(&one_route(gw_port, echo.port()), "edge/gw", gateway_args).await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    Env {
        stack,
        gw,
        _echo: echo,
    }
}

/// Sends raw bytes on a new connection and reads until the server closes it (or 10 s pass).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_requests_get_431_414_and_413() {
    let env = start(&[
        "--max-request-header-bytes",
        "8192",
        "--max-request-headers",
        "20",
        "--max-uri-bytes",
        "1024",
        "--max-request-body-bytes",
        "1000",
    ])
    .await;
    let big = "a".repeat(10_000);
    let r = raw(
        env.gw,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 431, "{r}");

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        env.gw,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 431, "{r}");

    let long = "b".repeat(2000);
    let r = raw(
        env.gw,
        format!("GET /{long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 414, "{r}");
    assert!(r.contains("x-bowline-error: uri_too_long"), "{r}");

    let r = raw(
        env.gw,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert!(
        r.contains("body larger than 1000 bytes"),
        "the body says why: {r}"
    );

    // HTTP/2 gets the same URI limit.
    let h2 = HttpClient::h2c();
    let r = h2.get(env.gw, "x", &format!("/{long}"), &[]).await.unwrap();
    assert_eq!(r.status, 414, "{}", r.body);
    // And normal requests flow.
    let r = HttpClient::http1()
        .get(env.gw, "x", "/ok", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_is_closed_after_the_header_timeout_while_traffic_flows() {
    let env = start(&["--header-read-timeout", "1s"]).await;
    let mut slow = TcpStream::connect(env.gw).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        .await
        .unwrap();
    let opened = Instant::now();
    // Normal traffic is served while the slow client dribbles.
    let client = HttpClient::http1();
    for _ in 0..10 {
        let r = client.get(env.gw, "x", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let _ = slow.write_all(b"X-B: 2\r\n").await;
    // The gateway closes the slow connection (possibly after a 408) once the timeout passes.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow connection was not closed");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || status_of(&text) == 408, "{text}");
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        opened.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smuggling_attempts_never_reach_the_upstream_as_requests() {
    let env = start(&[]).await;
    // CL.TE: Transfer-Encoding wins, the connection closes after the response, and the bytes
    // after the chunked body are not a second request.
    let r = raw(
        env.gw,
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains("\"/first\""), "{r}");
    assert!(
        !r.contains("/smuggled"),
        "a smuggled request was served: {r}"
    );
    assert_eq!(
        r.matches("HTTP/1.1 ").count(),
        1,
        "exactly one response: {r}"
    );

    // Conflicting Content-Length values, and a Transfer-Encoding that is not chunked: 400.
    let r = raw(
        env.gw,
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    let r = raw(
        env.gw,
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    let r = raw(
        env.gw,
        b"POST /x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_headers_respect_the_trust_boundary() {
    let untrusted = start(&[]).await;
    let client = HttpClient::http1();
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "mine"),
    ];
    let r = client
        .get(untrusted.gw, "shop.example", "/", &spoof)
        .await
        .unwrap();
    let h = &r.json().unwrap()["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{}",
        r.body
    );
    assert_eq!(
        h["x-forwarded-proto"],
        serde_json::json!(["http"]),
        "{}",
        r.body
    );
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!(["shop.example"]),
        "{}",
        r.body
    );
    assert_ne!(h["x-request-id"], serde_json::json!(["mine"]), "{}", r.body);
    assert_eq!(
        h["x-request-id"][0].as_str().map(str::len),
        Some(36),
        "{}",
        r.body
    );

    let trusted = start(&["--trusted-proxies", "127.0.0.0/8"]).await;
    let r = client
        .get(trusted.gw, "shop.example", "/", &spoof)
        .await
        .unwrap();
    let h = &r.json().unwrap()["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["6.6.6.6, 127.0.0.1"]),
        "{}",
        r.body
    );
    assert_eq!(
        h["x-forwarded-proto"],
        serde_json::json!(["https"]),
        "{}",
        r.body
    );
    assert_eq!(h["x-request-id"], serde_json::json!(["mine"]), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_cap_are_closed() {
    let env = start(&["--max-connections", "2"]).await;
    // Two kept-alive connections hold the two slots (a request on each proves it is served).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(env.gw).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let r = raw(
        env.gw,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.is_empty(),
        "a third connection is closed without an answer: {r}"
    );
    drop(held);
    eventually("a slot frees up", || async {
        let r = raw(
            env.gw,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        ensure!(status_of(&r) == 200, "{r}");
        Ok(())
    })
    .await;
    let metrics = HttpClient::http1()
        .get(env.stack.gw_admin, "", "/metrics", &[])
        .await
        .unwrap();
    // At least the one above; retries in `eventually` may have met the cap too.
    let rejected: u64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("bowline_connections_rejected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rejected counter in {}", metrics.body));
    assert!(rejected >= 1, "{}", metrics.body);
}
