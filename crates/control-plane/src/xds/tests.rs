//! The delta diff, and the stream state machine driven through the real tonic service over TCP
//! on 127.0.0.1 with the generated client.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bowline_model::manifest::{self, Parsed};
use bowline_model::proto::{Kind, pb};
use pretty_assertions::assert_eq;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::discovery::DnsTable;
use crate::world::World;

fn res(name: &str, version: &str) -> (String, pb::Resource) {
    (
        Kind::Cluster.key(name),
        pb::Resource {
            name: name.into(),
            version: version.into(),
            kind: None,
        },
    )
}

fn held(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn diff_from_nothing_sends_everything() {
    let want = vec![res("a", "1"), res("b", "1")];
    let (changed, removed) = diff(&BTreeMap::new(), &want);
    assert_eq!(changed.len(), 2);
    assert!(removed.is_empty());
}

#[test]
fn diff_of_equal_sets_is_empty() {
    let want = vec![res("a", "1"), res("b", "2")];
    let (changed, removed) = diff(&held(&[("cluster/a", "1"), ("cluster/b", "2")]), &want);
    assert!(changed.is_empty());
    assert!(removed.is_empty());
}

#[test]
fn diff_sends_changed_and_added_and_removes_the_rest() {
    let want = vec![res("a", "1"), res("b", "3"), res("c", "1")];
    let (changed, removed) = diff(
        &held(&[
            ("cluster/a", "1"),
            ("cluster/b", "2"),
            ("listener/x", "9"),
            ("cluster/z", "1"),
        ]),
        &want,
    );
    let names: Vec<&str> = changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(removed, ["cluster/z", "listener/x"]);
}

#[test]
fn resource_keys_parse_known_kinds_only() {
    assert_eq!(
        resource_key("routeTable/gateway/demo/gw/80"),
        Some(pb::ResourceKey {
            r#type: pb::ResourceType::RouteTable as i32,
            name: "gateway/demo/gw/80".into(),
        })
    );
    assert_eq!(resource_key("bogus/x"), None);
    assert_eq!(resource_key("nokind"), None);
}

// === the stream, over TCP ===

fn world(version: u64, endpoint_ip: &str, extra: &str) -> Arc<World> {
    let text = format!(
        r#"
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {{name: gw, namespace: demo}}
spec:
  listeners:
    - portMapping: {{port: 8080, protocol: http}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {{name: r, namespace: demo}}
spec:
  httpRoute:
    match: {{prefix: /}}
    action:
      target: {{virtualService: {{virtualServiceRef: {{name: web}}}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {{name: web, namespace: demo}}
spec:
  provider: {{virtualNode: {{virtualNodeRef: {{name: web}}}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {{name: web, namespace: demo}}
spec:
  listeners:
    - portMapping: {{port: 80, protocol: http}}
  serviceDiscovery:
    dns: {{hostname: "{endpoint_ip}"}}
{extra}"#
    );
    let docs = manifest::parse_file(Path::new("w.yaml"), &text)
        .into_iter()
        .map(|p| match p {
            Parsed::Object { source, object, .. } => (source, *object),
            other => panic!("bad test world: {other:?}"),
        });
    Arc::new(World::from_documents(version, docs))
}

struct Harness {
    world: watch::Sender<Arc<World>>,
    _dns: watch::Sender<Arc<DnsTable>>,
    drain: watch::Sender<bool>,
    proxies: Proxies,
    metrics: Metrics,
    addr: SocketAddr,
}

async fn start() -> Harness {
    let (world_tx, world_rx) = watch::channel(world(1, "10.0.0.1", ""));
    let (dns_tx, dns_rx) = watch::channel(Arc::new(DnsTable::default()));
    let (drain_tx, drain_rx) = watch::channel(false);
    let proxies = Proxies::default();
    let (metrics, _registry) = Metrics::new();
    let service = ConfigDiscoveryService::new(
        Snapshots::new(world_rx, dns_rx),
        proxies.clone(),
        metrics.clone(),
        drain_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut shutdown = drain_rx;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { crate::drained(&mut shutdown).await },
            ),
    );
    Harness {
        world: world_tx,
        _dns: dns_tx,
        drain: drain_tx,
        proxies,
        metrics,
        addr,
    }
}

/// A proxy's side of one stream.
struct Client {
    tx: mpsc::Sender<pb::DiscoveryRequest>,
    rx: tonic::Streaming<pb::DiscoveryResponse>,
}

impl Client {
    async fn connect(
        addr: SocketAddr,
        node: pb::Node,
        initial: BTreeMap<String, String>,
    ) -> Result<Client, Status> {
        let mut client =
            pb::config_discovery_client::ConfigDiscoveryClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
        let (tx, rx) = mpsc::channel(4);
        tx.send(pb::DiscoveryRequest {
            node: Some(node),
            initial_resource_versions: initial.into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        let rx = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Client { tx, rx })
    }

    async fn recv(&mut self) -> Result<pb::DiscoveryResponse, Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within 10 s"),
        }
    }

    async fn ack(&self, nonce: &str) {
        self.answer(nonce, None).await;
    }

    async fn nack(&self, nonce: &str, message: &str) {
        self.answer(
            nonce,
            Some(pb::ErrorDetail {
                message: message.into(),
            }),
        )
        .await;
    }

    async fn answer(&self, nonce: &str, error_detail: Option<pb::ErrorDetail>) {
        self.tx
            .send(pb::DiscoveryRequest {
                response_nonce: nonce.into(),
                error_detail,
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn gateway_node() -> pb::Node {
    pb::Node {
        kind: "gateway".into(),
        namespace: "demo".into(),
        name: "gw".into(),
        identity: String::new(),
        build_version: "test".into(),
        ..pb::Node::default()
    }
}

fn keys(r: &pb::DiscoveryResponse) -> Vec<String> {
    let mut k: Vec<String> = r
        .resources
        .iter()
        .map(|r| r.resource_kind().expect("kind").key(&r.name))
        .collect();
    k.sort();
    k
}

fn versions(r: &pb::DiscoveryResponse) -> BTreeMap<String, String> {
    r.resources
        .iter()
        .map(|r| (r.resource_kind().unwrap().key(&r.name), r.version.clone()))
        .collect()
}

const ENDPOINTS: &str = "endpoints/node/demo/web/80";

#[tokio::test]
async fn first_response_then_ack_then_update_delta() {
    let h = start().await;
    let mut c = Client::connect(h.addr, gateway_node(), BTreeMap::new())
        .await
        .unwrap();
    let first = c.recv().await.unwrap();
    assert_eq!(first.nonce, "1");
    assert!(first.removed.is_empty());
    assert_eq!(
        keys(&first),
        [
            "cluster/node/demo/web/80",
            ENDPOINTS,
            "listener/http-8080",
            "routeTable/gateway/demo/gw/8080",
        ]
    );
    let snapshot =
        bowline_model::proto::resources_to_snapshot(first.resources.iter()).expect("valid IR");
    assert_eq!(snapshot.endpoints[0].endpoints[0].address, "10.0.0.1");
    let proxies = h.proxies.list();
    assert_eq!(proxies.len(), 1);
    assert_eq!(proxies[0].node.name, "gw");
    assert_eq!(h.metrics.connected_proxies.get(), 1);

    c.ack(&first.nonce).await;
    h.world.send_replace(world(2, "10.0.0.2", ""));
    let second = c.recv().await.unwrap();
    assert_eq!(second.nonce, "2");
    assert_eq!(keys(&second), [ENDPOINTS], "only the endpoints changed");
    assert!(second.removed.is_empty());
    assert_ne!(second.system_version, first.system_version);
    // The second response is only sent once the first is acknowledged.
    let info = &h.proxies.list()[0];
    assert_eq!(
        info.acked_version.as_deref(),
        Some(first.system_version.as_str())
    );
    assert_eq!(info.pending_nonce.as_deref(), Some("2"));
    assert_eq!(h.metrics.acks.get(), 1);
}

#[tokio::test]
async fn nack_keeps_the_acked_state_and_is_recorded() {
    let h = start().await;
    let mut c = Client::connect(h.addr, gateway_node(), BTreeMap::new())
        .await
        .unwrap();
    let first = c.recv().await.unwrap();
    c.ack(&first.nonce).await;

    h.world.send_replace(world(2, "10.0.0.2", ""));
    let second = c.recv().await.unwrap();
    assert_eq!(keys(&second), [ENDPOINTS]);
    c.nack(&second.nonce, "endpoints: bad address").await;

    // A new world with the same snapshot for this gateway: the rejected content is not resent.
    let unrelated = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n";
    h.world.send_replace(world(3, "10.0.0.2", unrelated));
    // A real change: the delta is computed against the last ACKed set (endpoints at 10.0.0.1)
    // and adds the new route table.
    h.world.send_replace(world(
        4,
        "10.0.0.3",
        r#"---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: s, namespace: demo}
spec:
  httpRoute:
    match: {prefix: /s/}
    action:
      target: {virtualService: {virtualServiceRef: {name: web}}}
"#,
    ));
    let third = c.recv().await.unwrap();
    assert_eq!(third.nonce, "3");
    assert_ne!(third.system_version, second.system_version);
    assert_eq!(keys(&third), [ENDPOINTS, "routeTable/gateway/demo/gw/8080"]);
    let snapshot = bowline_model::proto::resources_to_snapshot(third.resources.iter()).unwrap();
    assert_eq!(snapshot.endpoints[0].endpoints[0].address, "10.0.0.3");

    let info = &h.proxies.list()[0];
    assert_eq!(
        info.acked_version.as_deref(),
        Some(first.system_version.as_str())
    );
    let nack = info.last_nack.as_ref().expect("NACK recorded");
    assert_eq!(nack.message, "endpoints: bad address");
    assert_eq!(nack.system_version, second.system_version);
    assert_eq!(nack.nonce, "2");
    assert_eq!(h.metrics.nacks.get(), 1);
    assert_eq!(h.metrics.acks.get(), 1);
}

#[tokio::test]
async fn reconnect_with_initial_versions_gets_only_the_difference() {
    let h = start().await;
    let mut c = Client::connect(h.addr, gateway_node(), BTreeMap::new())
        .await
        .unwrap();
    let first = c.recv().await.unwrap();
    c.ack(&first.nonce).await;
    let mut holding = versions(&first);
    drop(c);

    // While disconnected the endpoints change; the proxy also holds a cluster that is gone.
    h.world.send_replace(world(2, "10.0.0.9", ""));
    holding.insert("cluster/node/demo/old/80".into(), "0123".into());
    let mut c = Client::connect(h.addr, gateway_node(), holding.clone())
        .await
        .unwrap();
    let again = c.recv().await.unwrap();
    assert_eq!(again.nonce, "1");
    assert_eq!(keys(&again), [ENDPOINTS]);
    assert_eq!(
        again.removed,
        [pb::ResourceKey {
            r#type: pb::ResourceType::Cluster as i32,
            name: "node/demo/old/80".into(),
        }]
    );

    // A proxy that already holds everything still gets an (empty) first response.
    c.ack(&again.nonce).await;
    let mut current = holding;
    current.remove("cluster/node/demo/old/80");
    current.extend(versions(&again));
    let mut c2 = Client::connect(h.addr, gateway_node(), current)
        .await
        .unwrap();
    let in_sync = c2.recv().await.unwrap();
    assert!(in_sync.resources.is_empty() && in_sync.removed.is_empty());
    assert_eq!(in_sync.system_version, again.system_version);
}

#[tokio::test]
async fn wrong_nodes_are_refused() {
    let h = start().await;
    // A sidecar must say where it listens and where its application is.
    let unwired_sidecar = pb::Node {
        kind: "sidecar".into(),
        ..gateway_node()
    };
    let mut c = Client::connect(h.addr, unwired_sidecar, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(
        c.recv().await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let nameless = pb::Node {
        name: String::new(),
        ..gateway_node()
    };
    let mut c = Client::connect(h.addr, nameless, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(
        c.recv().await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert!(h.proxies.list().is_empty());
}

#[tokio::test]
async fn drain_closes_streams_with_unavailable() {
    let h = start().await;
    let mut c = Client::connect(h.addr, gateway_node(), BTreeMap::new())
        .await
        .unwrap();
    let first = c.recv().await.unwrap();
    c.ack(&first.nonce).await;
    h.drain.send_replace(true);
    assert_eq!(c.recv().await.unwrap_err().code(), tonic::Code::Unavailable);
    // The registration goes away with the stream.
    for _ in 0..10_000 {
        if h.proxies.list().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(h.proxies.list().is_empty());
    assert_eq!(h.metrics.connected_proxies.get(), 0);
}

#[test]
fn ingress_nodes_name_a_class_and_both_ports() {
    let ingress_only = pb::Node {
        namespace: String::new(),
        name: String::new(),
        ingress_class: "bowline".into(),
        ingress_http_port: 8080,
        ingress_https_port: 8443,
        ..gateway_node()
    };
    let target = IngressTarget {
        class: "bowline".into(),
        http_port: 8080,
        https_port: 8443,
    };
    assert_eq!(
        served(&ingress_only),
        Some(Served {
            gateway: None,
            ingress: Some(target.clone()),
            sidecar: None,
        })
    );
    let both = pb::Node {
        ingress_class: "bowline".into(),
        ingress_http_port: 8080,
        ingress_https_port: 8443,
        ..gateway_node()
    };
    assert_eq!(
        served(&both),
        Some(Served {
            gateway: Some(("demo".into(), "gw".into())),
            ingress: Some(target),
            sidecar: None,
        })
    );
    let no_ports = pb::Node {
        ingress_http_port: 0,
        ..ingress_only.clone()
    };
    assert_eq!(served(&no_ports), None);
    let nothing = pb::Node {
        ingress_class: String::new(),
        ..ingress_only
    };
    assert_eq!(served(&nothing), None);
}

#[test]
fn sidecar_nodes_name_their_virtual_node_and_wiring() {
    let wiring = pb::SidecarNode {
        outbound_port: 15001,
        inbound_address: "10.0.0.7".into(),
        app_address: "127.0.0.1".into(),
        app_ports: [(8080, 18080)].into_iter().collect(),
    };
    let node = pb::Node {
        kind: "sidecar".into(),
        namespace: "demo".into(),
        name: "blue".into(),
        sidecar: Some(wiring.clone()),
        ..Default::default()
    };
    assert_eq!(
        served(&node),
        Some(Served {
            gateway: Some(("demo".into(), "blue".into())),
            ingress: None,
            sidecar: Some(crate::translate::SidecarTarget {
                outbound_port: 15001,
                inbound_address: "10.0.0.7".into(),
                app_address: "127.0.0.1".into(),
                app_ports: [(8080, 18080)].into_iter().collect(),
            }),
        })
    );
    for bad in [
        pb::SidecarNode {
            outbound_port: 0,
            ..wiring.clone()
        },
        pb::SidecarNode {
            app_ports: [(8080, 0)].into_iter().collect(),
            ..wiring.clone()
        },
    ] {
        let node = pb::Node {
            sidecar: Some(bad),
            ..node.clone()
        };
        assert_eq!(served(&node), None);
    }
    let nameless = pb::Node {
        name: String::new(),
        ..node
    };
    assert_eq!(served(&nameless), None);
}
