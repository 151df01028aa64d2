use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::*;
use crate::metrics::ProxyMetrics;
use crate::router::{CompileContext, CompileError, Router};
use crate::test_util::FakeControlPlane;
use crate::upstream::Upstreams;

/// Compiles what it is given, like the proxy does, without binding anything.
#[derive(Default)]
struct CompileOnly {
    upstreams: Upstreams,
    metrics: ProxyMetrics,
    router: ArcSwapOption<Router>,
}

impl Apply for Arc<CompileOnly> {
    type Error = CompileError;

    fn apply(&self, _version: &str, snapshot: &ir::Snapshot) -> Result<(), CompileError> {
        let r = Router::compile(
            snapshot,
            CompileContext {
                upstreams: &self.upstreams,
                metrics: &self.metrics,
                previous: None,
            },
        )?;
        self.router.store(Some(Arc::new(r)));
        Ok(())
    }
}

fn snapshot(cluster_of_route: &str, port: u16) -> ir::Snapshot {
    let mut s = ir::Snapshot {
        listeners: vec![ir::Listener {
            name: "http".into(),
            address: String::new(),
            port: 8080,
            protocol: ir::Protocol::Http,
            route_table: "rt".into(),
            access_log: None,
            tls: None,
            tcp_proxy: None,
        }],
        route_tables: vec![ir::RouteTable {
            name: "rt".into(),
            virtual_hosts: vec![ir::VirtualHost {
                name: "any".into(),
                hosts: vec![ir::HostMatch::Any],
                routes: vec![ir::Route::new(
                    "r",
                    ir::RouteMatch::default(),
                    ir::RouteAction::Forward(ir::ForwardAction {
                        clusters: vec![ir::WeightedCluster::new(cluster_of_route.into(), 1)],
                        rewrite: ir::Rewrite::default(),
                        timeout_ms: None,
                        retry: None,
                        idle_timeout_ms: None,
                        unresolved_weight: 0,
                    }),
                )],
            }],
        }],
        clusters: vec![ir::Cluster {
            name: "web".into(),
            protocol: ir::Protocol::Http,
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
        }],
        endpoints: vec![ir::ClusterEndpoints {
            cluster: "web".into(),
            endpoints: vec![ir::Endpoint {
                address: "127.0.0.1".into(),
                port,
                weight: 1,
            }],
        }],
    };
    s.normalize();
    s
}

struct Harness {
    cp: FakeControlPlane,
    applier: Arc<CompileOnly>,
    applied: watch::Receiver<Option<Arc<Applied>>>,
    _shutdown: watch::Sender<bool>,
}

async fn start() -> Harness {
    let cp = FakeControlPlane::start().await;
    let applier = Arc::new(CompileOnly::default());
    let client = ConfigClient::new(
        ClientConfig {
            control_plane: cp.url(),
            node: Node {
                kind: "gateway".into(),
                namespace: "shop".into(),
                name: "gw".into(),
                build_version: "test".into(),
                ingress: None,
                sidecar: None,
            },
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
        },
        applier.clone(),
        ConfigMetrics::default(),
    );
    let applied = client.subscribe();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(client.run(rx));
    Harness {
        cp,
        applier,
        applied,
        _shutdown: tx,
    }
}

fn version(h: &Harness) -> Option<String> {
    h.applied.borrow().as_ref().map(|a| a.version.clone())
}

#[tokio::test]
async fn first_request_names_the_node_and_holds_nothing() {
    let h = start().await;
    let stream = h.cp.next_stream().await;
    let node = stream.first.node.clone().unwrap();
    assert_eq!(
        (
            node.kind.as_str(),
            node.namespace.as_str(),
            node.name.as_str()
        ),
        ("gateway", "shop", "gw")
    );
    assert!(stream.first.initial_resource_versions.is_empty());
    assert_eq!(version(&h), None, "nothing applied yet: not ready");
}

#[tokio::test]
async fn good_update_is_acked_and_published() {
    let h = start().await;
    let mut stream = h.cp.next_stream().await;
    let s = snapshot("web", 9000);
    let answer = stream.push("v1", &s).await;
    assert_eq!(answer.error_detail, None, "ACK");
    let applied = h.applied.borrow().clone().unwrap();
    assert_eq!(applied.version, "v1");
    assert_eq!(applied.snapshot, s);
    assert!(h.applier.router.load().is_some());
}

#[tokio::test]
async fn bad_update_is_nacked_with_the_reason_and_the_old_config_stays() {
    let h = start().await;
    let mut stream = h.cp.next_stream().await;
    assert_eq!(
        stream.push("v1", &snapshot("web", 9000)).await.error_detail,
        None
    );

    let answer = stream.push("v2", &snapshot("nowhere", 9000)).await;
    let reason = answer.error_detail.expect("NACK").message;
    assert_eq!(
        reason,
        r#"routeTable/rt: virtualHosts[0].routes[0].forward.clusters[0].cluster: unknown cluster "nowhere""#
    );
    assert_eq!(version(&h).as_deref(), Some("v1"), "the old config stays");

    // The next good update is a delta against what the proxy really holds (v1), and applies.
    let answer = stream.push("v3", &snapshot("web", 9001)).await;
    assert_eq!(answer.error_detail, None);
    let applied = h.applied.borrow().clone().unwrap();
    assert_eq!(applied.version, "v3");
    assert_eq!(applied.snapshot.endpoints[0].endpoints[0].port, 9001);
}

#[tokio::test]
async fn resource_without_payload_and_unknown_removal_are_nacked() {
    let h = start().await;
    let mut stream = h.cp.next_stream().await;
    let answer = stream
        .send(pb::DiscoveryResponse {
            system_version: "v1".into(),
            nonce: String::new(),
            resources: vec![pb::Resource {
                name: "empty".into(),
                version: "1".into(),
                kind: None,
            }],
            removed: vec![],
        })
        .await;
    assert_eq!(
        answer.error_detail.unwrap().message,
        "empty: kind: resource carries no payload"
    );
    let answer = stream
        .send(pb::DiscoveryResponse {
            system_version: "v1".into(),
            nonce: String::new(),
            resources: vec![],
            removed: vec![pb::ResourceKey {
                r#type: 0,
                name: "x".into(),
            }],
        })
        .await;
    assert!(
        answer
            .error_detail
            .unwrap()
            .message
            .starts_with("removed[0]: unknown resource type 0"),
    );
    assert_eq!(version(&h), None);
}

#[tokio::test]
async fn removals_apply() {
    let h = start().await;
    let mut stream = h.cp.next_stream().await;
    assert_eq!(
        stream.push("v1", &snapshot("web", 9000)).await.error_detail,
        None
    );
    let mut s = snapshot("web", 9000);
    s.endpoints.clear();
    assert_eq!(stream.push("v2", &s).await.error_detail, None);
    let applied = h.applied.borrow().clone().unwrap();
    assert!(applied.snapshot.endpoints.is_empty());
}

#[tokio::test]
async fn reconnect_announces_the_versions_held_and_keeps_serving() {
    let h = start().await;
    let mut stream = h.cp.next_stream().await;
    let s = snapshot("web", 9000);
    assert_eq!(stream.push("v1", &s).await.error_detail, None);
    drop(stream); // the control plane goes away

    let mut stream = h.cp.next_stream().await;
    let held: BTreeMap<String, String> = stream
        .first
        .initial_resource_versions
        .clone()
        .into_iter()
        .collect();
    let want: BTreeMap<String, String> = proto::snapshot_to_resources(&s)
        .into_iter()
        .map(|(k, r)| (k, r.version))
        .collect();
    assert_eq!(held, want);
    assert_eq!(
        version(&h).as_deref(),
        Some("v1"),
        "still serving the last good config"
    );

    // Nothing changed: an empty delta still moves the version forward.
    let answer = stream.push("v2", &s).await;
    assert_eq!(answer.error_detail, None);
    assert_eq!(version(&h).as_deref(), Some("v2"));
    assert_eq!(h.applied.borrow().as_ref().unwrap().snapshot, s);
}
