//! A streamed request body survives a failed connect: through the real `bowline-control-plane`
//! and `bowline-gateway`, a chunked HTTP/1.1 body (and an HTTP/2 body without a length) larger
//! than the retry replay limit goes to a cluster whose endpoints are a refused port and a live
//! recorder. Whenever the refused endpoint is picked first, the request (never written, so
//! never read) is retried on the live one and arrives there byte for byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use bowline_tests::{
    Recorder, Stack, eventually, free_port, gateway_manifest, gateway_route_manifest,
    node_manifest, router_manifest, service_manifest,
};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const NS: &str = "stream";
/// Larger than the 64 KiB a retry may keep, so only the untouched request can be sent again.
const BODY_CHUNKS: usize = 20;
const CHUNK: usize = 16 * 1024;

/// A gateway listener of `protocol` routing everything through a router with `connection-error`
/// retries to a node whose endpoints are 127.0.0.1:`dead` and 127.0.0.1:`live`.
fn manifests(protocol: &str, gw_port: u16, dead: u16, live: u16) -> String {
    let route = format!("{protocol}Route");
    let retry = "{maxRetries: 2, perRetryTimeout: {unit: s, value: 10}, tcpRetryEvents: [connection-error]}";
    gateway_manifest(
        NS,
        &[format!(
            "{{portMapping: {{port: {gw_port}, protocol: {protocol}}}}}"
        )],
    ) + &gateway_route_manifest(NS, "all", &route, "{prefix: /}", "upload")
        + &service_manifest(NS, "upload", "virtualRouter")
        + &router_manifest(
            NS,
            "upload",
            protocol,
            &route,
            "{prefix: /}",
            "upload",
            Some(retry),
        )
        + &node_manifest(NS, "upload", protocol, &[], &[dead, live])
}

type Body = BoxBody<Bytes, Infallible>;

/// A client whose request bodies have no length: chunked over HTTP/1.1, a plain stream of DATA
/// frames over h2c.
fn client(h2: bool) -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(HttpConnector::new())
}

/// The `n`th upload: `BODY_CHUNKS` chunks whose bytes say which upload and chunk they are.
fn upload(n: usize) -> Vec<Bytes> {
    (0..BODY_CHUNKS)
        .map(|c| Bytes::from(vec![b'a' + ((n * BODY_CHUNKS + c) % 26) as u8; CHUNK]))
        .collect()
}

/// POSTs `chunks` as a body without a length; returns the status and the response body.
async fn post(
    client: &Client<HttpConnector, Body>,
    gw: SocketAddr,
    chunks: Vec<Bytes>,
) -> anyhow::Result<(u16, Bytes)> {
    let frames = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(c))),
    );
    let req = http::Request::post(format!("http://{gw}/upload"))
        .header(http::header::HOST, "upload.example")
        .body(StreamBody::new(frames).boxed())?;
    ensure!(
        req.headers().get(http::header::CONTENT_LENGTH).is_none(),
        "the body must have no length"
    );
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .context("request timed out")??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn a_streamed_body_reaches_the_live_endpoint_intact(protocol: &str) {
    let mut live = Recorder::start().await.unwrap();
    // Bound and released: connections to it are refused.
    let dead = free_port();
    let gw_port = free_port();
    let _stack = Stack::start(
        &[("mesh.yaml", manifests(protocol, gw_port, dead, live.port()))],
        &format!("{NS}/gw"),
    )
    .await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let client = client(protocol == "http2");
    eventually("the gateway routes uploads", || async {
        let empty = Full::new(Bytes::new()).boxed();
        let req = http::Request::get(format!("http://{gw}/"))
            .header(http::header::HOST, "upload.example")
            .body(empty)?;
        let status = client.request(req).await?.status();
        ensure!(status == 200, "status {status}");
        Ok(())
    })
    .await;
    live.received();

    // Round robin over two endpoints: uploads alternate between being first sent to the dead
    // one and to the live one. Upload until two were retried (bounded), every one intact.
    let mut retried = 0;
    for n in 0..12 {
        let chunks = upload(n);
        let sent: Bytes = chunks.concat().into();
        let (status, body) = post(&client, gw, chunks).await.unwrap();
        assert_eq!(
            status,
            200,
            "upload {n}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(body, "recorded");
        let got = live.next().await.unwrap();
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, "/upload");
        assert!(
            got.body == sent,
            "upload {n} arrived changed: {} bytes of {}",
            got.body.len(),
            sent.len()
        );
        match got.headers.get("x-bowline-attempt") {
            None => {}
            Some(v) => {
                assert_eq!(v, "2", "upload {n}: one retry after the refused connect");
                retried += 1;
                if retried == 2 {
                    break;
                }
            }
        }
    }
    assert_eq!(retried, 2, "the refused endpoint was picked first twice");
    assert!(live.received().is_empty(), "one request per upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunked_http1_body_is_retried_whole_after_a_refused_connect() {
    a_streamed_body_reaches_the_live_endpoint_intact("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_h2c_streamed_body_is_retried_whole_after_a_refused_connect() {
    a_streamed_body_reaches_the_live_endpoint_intact("http2").await;
}
