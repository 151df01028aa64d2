//! The ConfigDiscovery gRPC server: the delta protocol of `proto/bowline/v1/config.proto`.
//!
//! Per stream:
//! 1. The first request names the node (kind `gateway`, namespace, name) and lists what the
//!    proxy already holds (`initial_resource_versions`).
//! 2. The server computes the node's snapshot from the current inputs and sends the delta against
//!    what the proxy holds: resources added or changed, keys removed. The first response of a
//!    stream is always sent, even when empty, so that the proxy learns the system version it is
//!    in sync with.
//! 3. Nothing else is sent until that response's nonce is answered (at most one unacknowledged
//!    response per stream). An ACK makes the sent delta part of what the proxy holds. A NACK is
//!    logged and recorded; the proxy is taken to still hold its previously acknowledged set, and
//!    the rejected content is not sent again until the snapshot changes.
//! 4. On every new version of the inputs (manifests, DNS answers) the snapshot is recomputed and,
//!    when it differs from what the proxy holds, the delta is sent.
//!
//! Streams end with `UNAVAILABLE` when the control plane shuts down, so proxies reconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bowline_model::proto::{Kind, pb};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::Metrics;
use crate::snapshots::{Served, Snapshots};
use crate::translate::SidecarTarget;
use crate::translate::ingress::IngressTarget;

/// Resources added or changed, and keys removed, to bring a proxy from `held` to `want`.
pub fn diff(
    held: &BTreeMap<String, String>,
    want: &[(String, pb::Resource)],
) -> (Vec<pb::Resource>, Vec<String>) {
    let changed = want
        .iter()
        .filter(|(k, r)| held.get(k) != Some(&r.version))
        .map(|(_, r)| r.clone())
        .collect();
    let wanted: BTreeSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    let removed = held
        .keys()
        .filter(|k| !wanted.contains(k.as_str()))
        .cloned()
        .collect();
    (changed, removed)
}

/// `kind/name` → the wire key; `None` for a kind this server does not know.
fn resource_key(key: &str) -> Option<pb::ResourceKey> {
    let (kind, name) = key.split_once('/')?;
    let kind = [
        Kind::Listener,
        Kind::RouteTable,
        Kind::Cluster,
        Kind::Endpoints,
    ]
    .into_iter()
    .find(|k| k.as_str() == kind)?;
    Some(pb::ResourceKey {
        r#type: kind.to_type() as i32,
        name: name.to_string(),
    })
}

/// What a gateway node asks for: its VirtualGateway (namespace and name) and/or the Ingresses
/// of a class (with both ports set); `None` when it asks for nothing valid.
pub fn served(node: &pb::Node) -> Option<Served> {
    let gateway = (!node.namespace.is_empty() && !node.name.is_empty())
        .then(|| (node.namespace.clone(), node.name.clone()));
    let port = |p: u32| u16::try_from(p).ok().filter(|p| *p != 0);
    if node.kind == "sidecar" {
        let s = node.sidecar.as_ref()?;
        let mut app_ports = BTreeMap::new();
        for (l, a) in &s.app_ports {
            app_ports.insert(port(*l)?, port(*a)?);
        }
        return Some(Served {
            gateway: Some(gateway?),
            ingress: None,
            sidecar: Some(SidecarTarget {
                outbound_port: port(s.outbound_port)?,
                inbound_address: s.inbound_address.clone(),
                app_address: s.app_address.clone(),
                app_ports,
            }),
        });
    }
    if node.kind != "gateway" {
        return None;
    }
    let ingress = if node.ingress_class.is_empty() {
        None
    } else {
        Some(IngressTarget {
            class: node.ingress_class.clone(),
            http_port: port(node.ingress_http_port)?,
            https_port: port(node.ingress_https_port)?,
        })
    };
    if gateway.is_none() && ingress.is_none() {
        return None;
    }
    Some(Served {
        gateway,
        ingress,
        sidecar: None,
    })
}

// === proxies ===

/// Who a proxy says it is.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub identity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub build_version: String,
    /// The IngressClass whose Ingresses the gateway serves (`--ingress-class`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ingress_class: String,
}

/// The last rejected update of a proxy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    pub system_version: String,
    pub nonce: String,
    pub message: String,
    pub at_unix_seconds: u64,
}

/// What the control plane knows of one connected proxy (one stream).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyInfo {
    pub id: u64,
    pub node: NodeInfo,
    pub peer: Option<String>,
    pub connected_since_unix_seconds: u64,
    /// System version the proxy last acknowledged.
    pub acked_version: Option<String>,
    pub acked_resources: usize,
    pub last_nack: Option<Nack>,
    /// Nonce of the response awaiting an answer.
    pub pending_nonce: Option<String>,
}

/// The connected proxies, by stream id.
#[derive(Clone, Debug, Default)]
pub struct Proxies(Arc<Mutex<BTreeMap<u64, ProxyInfo>>>);

impl Proxies {
    pub fn list(&self) -> Vec<ProxyInfo> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyInfo>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ProxyInfo)) {
        if let Some(p) = self.lock().get_mut(&id) {
            f(p);
        }
    }
}

/// Removes a proxy from the registry when its stream ends, however it ends.
struct Registration {
    id: u64,
    proxies: Proxies,
    metrics: Metrics,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.proxies.lock().remove(&self.id);
        self.metrics.connected_proxies.dec();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// === server ===

/// The `ConfigDiscovery` service.
pub struct ConfigDiscoveryService {
    snapshots: Snapshots,
    proxies: Proxies,
    metrics: Metrics,
    drain: watch::Receiver<bool>,
    next_id: AtomicU64,
}

impl ConfigDiscoveryService {
    pub fn new(
        snapshots: Snapshots,
        proxies: Proxies,
        metrics: Metrics,
        drain: watch::Receiver<bool>,
    ) -> Self {
        ConfigDiscoveryService {
            snapshots,
            proxies,
            metrics,
            drain,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn into_server(self) -> pb::config_discovery_server::ConfigDiscoveryServer<Self> {
        pb::config_discovery_server::ConfigDiscoveryServer::new(self)
    }
}

#[tonic::async_trait]
impl pb::config_discovery_server::ConfigDiscovery for ConfigDiscoveryService {
    type StreamStream = ReceiverStream<Result<pb::DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4);
        let stream = ProxyStream {
            id,
            peer,
            snapshots: self.snapshots.clone(),
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
            drain: self.drain.clone(),
            tx,
        };
        let inbound = request.into_inner();
        tokio::spawn(
            stream
                .run(inbound)
                .instrument(info_span!("config_stream", id, peer = ?peer)),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A response awaiting its ACK or NACK.
struct Pending {
    nonce: String,
    system_version: String,
    /// What the proxy holds once it applies the response.
    held_after: BTreeMap<String, String>,
}

struct ProxyStream {
    id: u64,
    peer: Option<SocketAddr>,
    snapshots: Snapshots,
    proxies: Proxies,
    metrics: Metrics,
    drain: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::DiscoveryResponse, Status>>,
}

impl ProxyStream {
    async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<pb::DiscoveryRequest, Status>> + Unpin,
    ) {
        let first = tokio::select! {
            m = inbound.next() => m,
            _ = crate::drained(&mut self.drain) => return,
        };
        let first = match first {
            Some(Ok(r)) => r,
            Some(Err(status)) => {
                debug!(%status, "stream failed before the first request");
                return;
            }
            None => return,
        };
        let node = match first.node {
            Some(n) if served(&n).is_some() => n,
            _ => {
                let _ = self
                    .tx
                    .send(Err(Status::invalid_argument(
                        "the first request must name the node: kind \"gateway\" with a namespace and name, an ingress class with its ports, or both; or kind \"sidecar\" with its VirtualNode's namespace and name and its outbound and application ports",
                    )))
                    .await;
                return;
            }
        };
        let gateway = if node.kind == "sidecar" {
            format!("sidecar {}/{}", node.namespace, node.name)
        } else if node.ingress_class.is_empty() {
            format!("{}/{}", node.namespace, node.name)
        } else if node.name.is_empty() {
            format!("ingress class {}", node.ingress_class)
        } else {
            format!(
                "{}/{} + ingress class {}",
                node.namespace, node.name, node.ingress_class
            )
        };
        let span = info_span!("proxy", gateway = %gateway);
        self.serve(
            node,
            first.initial_resource_versions.into_iter().collect(),
            inbound,
        )
        .instrument(span)
        .await;
    }

    async fn serve(
        mut self,
        node: pb::Node,
        mut held: BTreeMap<String, String>,
        mut inbound: impl Stream<Item = Result<pb::DiscoveryRequest, Status>> + Unpin,
    ) {
        self.proxies.lock().insert(
            self.id,
            ProxyInfo {
                id: self.id,
                node: NodeInfo {
                    kind: node.kind.clone(),
                    namespace: node.namespace.clone(),
                    name: node.name.clone(),
                    identity: node.identity.clone(),
                    build_version: node.build_version.clone(),
                    ingress_class: node.ingress_class.clone(),
                },
                peer: self.peer.map(|p| p.to_string()),
                connected_since_unix_seconds: unix_now(),
                acked_version: None,
                acked_resources: held.len(),
                last_nack: None,
                pending_nonce: None,
            },
        );
        self.metrics.connected_proxies.inc();
        let _registration = Registration {
            id: self.id,
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
        };
        info!(held = held.len(), build = %node.build_version, "proxy connected");

        let mut changes = self.snapshots.subscribe();
        let mut nonces = 0u64;
        let mut pending: Option<Pending> = None;
        // The system version the proxy rejected last; not sent again until the snapshot changes.
        let mut rejected: Option<String> = None;
        let mut first_response = true;
        let mut dirty = true;
        // Checked by `run`.
        let served = served(&node).unwrap_or(Served {
            gateway: None,
            ingress: None,
            sidecar: None,
        });
        loop {
            if pending.is_none() && dirty {
                dirty = false;
                let computed = self.snapshots.served(&served);
                if rejected.as_deref() != Some(computed.system_version.as_str()) {
                    let (changed, removed) = diff(&held, &computed.resources);
                    if first_response || !changed.is_empty() || !removed.is_empty() {
                        first_response = false;
                        nonces += 1;
                        let nonce = nonces.to_string();
                        let mut held_after = held.clone();
                        for k in &removed {
                            held_after.remove(k);
                        }
                        for (k, r) in &computed.resources {
                            held_after.insert(k.clone(), r.version.clone());
                        }
                        let response = pb::DiscoveryResponse {
                            system_version: computed.system_version.clone(),
                            nonce: nonce.clone(),
                            removed: removed.iter().filter_map(|k| resource_key(k)).collect(),
                            resources: changed,
                        };
                        debug!(
                            nonce,
                            version = computed.system_version,
                            changed = response.resources.len(),
                            removed = response.removed.len(),
                            "sending configuration"
                        );
                        self.proxies
                            .update(self.id, |p| p.pending_nonce = Some(nonce.clone()));
                        if self.tx.send(Ok(response)).await.is_err() {
                            break;
                        }
                        self.metrics.responses.inc();
                        pending = Some(Pending {
                            nonce,
                            system_version: computed.system_version.clone(),
                            held_after,
                        });
                    }
                }
            }
            tokio::select! {
                msg = inbound.next() => match msg {
                    None => {
                        debug!("proxy closed the stream");
                        break;
                    }
                    Some(Err(status)) => {
                        debug!(%status, "stream failed");
                        break;
                    }
                    Some(Ok(req)) => {
                        let Some(p) = pending.take_if(|p| p.nonce == req.response_nonce) else {
                            debug!(nonce = req.response_nonce, "ignoring a request that answers no pending response");
                            continue;
                        };
                        match req.error_detail {
                            None => {
                                held = p.held_after;
                                rejected = None;
                                self.metrics.acks.inc();
                                let resources = held.len();
                                self.proxies.update(self.id, |info| {
                                    info.acked_version = Some(p.system_version.clone());
                                    info.acked_resources = resources;
                                    info.pending_nonce = None;
                                });
                                debug!(nonce = p.nonce, version = p.system_version, "proxy applied the configuration (ACK)");
                            }
                            Some(error) => {
                                warn!(
                                    nonce = p.nonce,
                                    version = p.system_version,
                                    error = error.message,
                                    "proxy rejected the configuration (NACK); it keeps serving its previous one"
                                );
                                self.metrics.nacks.inc();
                                let nack = Nack {
                                    system_version: p.system_version.clone(),
                                    nonce: p.nonce.clone(),
                                    message: error.message,
                                    at_unix_seconds: unix_now(),
                                };
                                self.proxies.update(self.id, |info| {
                                    info.last_nack = Some(nack);
                                    info.pending_nonce = None;
                                });
                                rejected = Some(p.system_version);
                            }
                        }
                        dirty = true;
                    }
                },
                open = changes.changed() => {
                    if !open {
                        break;
                    }
                    dirty = true;
                }
                _ = crate::drained(&mut self.drain) => {
                    let _ = self.tx.send(Err(Status::unavailable("control plane shutting down"))).await;
                    break;
                }
            }
        }
        info!("proxy disconnected");
    }
}

#[cfg(test)]
mod tests;
