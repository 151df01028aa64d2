//! gRPC retried on UNAVAILABLE through the real `bowline-control-plane` and `bowline-gateway`:
//! a tonic client makes unary calls over h2c to a grpc listener; the upstream (`bowline-echo
//! --grpc-unavailable N`) answers its first N calls with a trailers-only `grpc-status: 14` and
//! then echoes the message with `grpc-status: 0`. A router route with
//! `retryPolicy.grpcRetryEvents: [unavailable]` turns the failures into retries the client
//! never sees; a route without a retry policy hands the client the UNAVAILABLE.

use std::net::SocketAddr;

use anyhow::ensure;
use bowline_tests::{
    Echo, HttpClient, Stack, eventually, free_port, gateway_manifest, gateway_route_manifest,
    metric_value, metrics, node_manifest, router_manifest, service_manifest,
};
use http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

const NS: &str = "grpc";

/// A grpc gateway listener with one GatewayRoute per (gRPC service, virtual service), each
/// virtual service provided by a router whose one route sends the service's calls to a grpc
/// node of the same name, with `retry` (flow-style YAML) as its retryPolicy when given.
fn manifests(gw_port: u16, routes: &[(&str, &str, Option<&str>, &Echo)]) -> String {
    let mut out = gateway_manifest(
        NS,
        &[format!(
            "{{portMapping: {{port: {gw_port}, protocol: grpc}}}}"
        )],
    );
    for (service, name, retry, echo) in routes {
        let matcher = format!("{{serviceName: {service}}}");
        out += &gateway_route_manifest(NS, name, "grpcRoute", &matcher, name);
        out += &service_manifest(NS, name, "virtualRouter");
        out += &router_manifest(NS, name, "grpc", "grpcRoute", &matcher, name, *retry);
        out += &node_manifest(NS, name, "grpc", &[], &[echo.port()]);
    }
    out
}

/// One unary call of `path` with a `google.protobuf.StringValue` message.
async fn call(
    channel: &Channel,
    path: &'static str,
    message: &str,
) -> Result<tonic::Response<String>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(message.to_string()),
        PathAndQuery::from_static(path),
        ProstCodec::<String, String>::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_call_is_retried_on_unavailable_and_only_with_the_policy() {
    // Two UNAVAILABLE answers, then OK: within maxRetries 2.
    let flaky = Echo::start_with("flaky", &["--grpc-unavailable", "2"]).unwrap();
    let plain = Echo::start_with("plain", &["--grpc-unavailable", "1"]).unwrap();
    let gw_port = free_port();
    let retry =
        "{maxRetries: 2, perRetryTimeout: {unit: s, value: 5}, grpcRetryEvents: [unavailable]}";
    let stack = Stack::start(
        &[(
            "mesh.yaml",
            manifests(
                gw_port,
                &[
                    ("retry.Echo", "retried", Some(retry), &flaky),
                    ("plain.Echo", "unretried", None, &plain),
                ],
            ),
        )],
        &format!("{NS}/gw"),
    )
    .await;
    // In service once the applied config holds both routes and both endpoints (calls would use
    // up the upstreams' scripted failures, so the test waits on the config, not on calls).
    let wanted = [
        format!("route/{NS}/retried/all"),
        format!("route/{NS}/unretried/all"),
        format!("\"port\": {}", flaky.port()),
        format!("\"port\": {}", plain.port()),
    ];
    eventually("the gateway serves both gRPC routes", || async {
        let dump = HttpClient::http1()
            .get(stack.gw_admin, "", "/config_dump", &[])
            .await?
            .body;
        let missing: Vec<&String> = wanted.iter().filter(|w| !dump.contains(*w)).collect();
        ensure!(missing.is_empty(), "missing {missing:?}");
        Ok(())
    })
    .await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let channel = Channel::from_shared(format!("http://{gw}"))
        .unwrap()
        .connect()
        .await
        .expect("h2c to the gateway's grpc listener");

    // With the policy: two retries, and the client sees OK and its message back.
    let resp = call(&channel, "/retry.Echo/Say", "hello through retries")
        .await
        .expect("the retries hide the UNAVAILABLE answers");
    assert_eq!(resp.get_ref(), "hello through retries");
    let md = resp.metadata();
    assert_eq!(md.get("x-echo-name").unwrap(), "flaky");
    assert_eq!(
        md.get("x-echo-attempt").unwrap(),
        "3",
        "the answered call was the third attempt (x-bowline-attempt: 3)"
    );
    assert_eq!(flaky.stat("grpcCalls").await.unwrap(), 3);
    assert_eq!(flaky.stat("retries").await.unwrap(), 2);

    // Without it: the client gets the upstream's UNAVAILABLE, after one attempt.
    let status = call(&channel, "/plain.Echo/Say", "hello once")
        .await
        .expect_err("no retry policy: the UNAVAILABLE reaches the client");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "echo: unavailable");
    assert_eq!(plain.stat("grpcCalls").await.unwrap(), 1);
    assert_eq!(plain.stat("retries").await.unwrap(), 0);

    // A later call on the policy's route succeeds at once (the upstream recovered).
    let resp = call(&channel, "/retry.Echo/Say", "again").await.unwrap();
    assert_eq!(resp.metadata().get("x-echo-attempt").unwrap(), "1");
    assert_eq!(flaky.stat("grpcCalls").await.unwrap(), 4);

    let text = metrics(stack.gw_admin).await.unwrap();
    for (node, retries) in [("retried", 2.0), ("unretried", 0.0)] {
        let series = format!(r#"bowline_retries_total{{cluster="node/{NS}/{node}/8080"}}"#);
        assert_eq!(metric_value(&text, &series), retries, "{series}:\n{text}");
    }
}
