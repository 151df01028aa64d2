//! The config client: keeps one `ConfigDiscovery.Stream` open to the control plane and turns its
//! deltas into applied configs.
//!
//! Each response is merged into a copy of the [`Snapshot`](ir::Snapshot) in service (wire
//! resources are converted to IR as they are merged and not kept) and handed to an [`Apply`]
//! implementation (the proxy compiles it and
//! binds its listeners). Only when that succeeds is the copy kept and the response ACKed;
//! otherwise it is NACKed with the reason (resource and field) and the previous config keeps
//! serving. When the stream breaks, the client keeps the last good config and reconnects with
//! jittered exponential backoff, announcing the versions it holds so the control plane sends only
//! what changed. The applied config is published on a [`watch`] channel; its first value is the
//! readiness latch of the proxies.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bowline_model::ir;
use bowline_model::proto::pb::config_discovery_client::ConfigDiscoveryClient;
use bowline_model::proto::{self, Kind, pb};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info, warn};

use crate::metrics::ConfigMetrics;

/// Who the proxy is, sent on the first request of every stream.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// `gateway` or `sidecar`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub build_version: String,
    /// The Ingresses served besides (or instead of) the VirtualGateway `namespace/name`.
    pub ingress: Option<IngressNode>,
    /// A sidecar's local wiring (kind `sidecar`; `namespace/name` is its VirtualNode).
    pub sidecar: Option<SidecarNode>,
}

/// Where a sidecar listens and where its application is (see `SidecarNode` in the protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SidecarNode {
    pub outbound_port: u16,
    /// Empty: the engine's bind address.
    pub inbound_address: String,
    pub app_address: String,
    /// VirtualNode listener port → application port, where they differ.
    pub app_ports: std::collections::BTreeMap<u16, u16>,
}

/// A gateway started with `--ingress-class`: the class and the ports of its listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressNode {
    pub class: String,
    pub http_port: u16,
    pub https_port: u16,
}

/// Reconnection delays: doubling from `initial` up to `max`, each randomized to 50–100 %.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Settings of the config client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` of the control plane's gRPC server.
    pub control_plane: String,
    pub node: Node,
    pub backoff: Backoff,
}

/// Puts a complete snapshot in service, or explains why it cannot.
pub trait Apply: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Validates and installs `snapshot` (system version `version`). On error nothing changed.
    fn apply(&self, version: &str, snapshot: &ir::Snapshot) -> Result<(), Self::Error>;
}

/// The config in service.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// The system version of the response that brought it.
    pub version: String,
    pub snapshot: ir::Snapshot,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("invalid control plane address {url:?}")]
    InvalidUri {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the control plane")]
    Connect(#[source] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
}

/// Displays an error with its causes, `a: b: c`, skipping causes the message already shows.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            source = s.source();
        }
        f.write_str(&shown)
    }
}

/// The client. Run it with [`ConfigClient::run`].
pub struct ConfigClient<A> {
    config: ClientConfig,
    applier: A,
    metrics: ConfigMetrics,
    /// Content version of each resource held, by key (`kind/name`). The resources themselves
    /// live only as IR, in the applied snapshot: no wire copy is kept.
    versions: BTreeMap<String, String>,
    applied: watch::Sender<Option<Arc<Applied>>>,
}

// === impl ConfigClient ===

impl<A: Apply> ConfigClient<A> {
    pub fn new(config: ClientConfig, applier: A, metrics: ConfigMetrics) -> Self {
        ConfigClient {
            config,
            applier,
            metrics,
            versions: BTreeMap::new(),
            applied: watch::Sender::new(None),
        }
    }

    /// The applied config: `None` until the first update is applied.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Applied>>> {
        self.applied.subscribe()
    }

    /// Streams config until `shutdown` becomes `true` (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let backoff = self.config.backoff;
        let mut delay = backoff.initial;
        let mut attempt = 0u64;
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            attempt += 1;
            let mut progressed = false;
            let span = tracing::info_span!("config", attempt);
            let result = tokio::select! {
                r = self.stream(&mut progressed).instrument(span) => r,
                _ = shutdown.changed() => return,
            };
            if let Err(error) = result {
                let error = ErrorChain(&error);
                let serving = match self.applied.borrow().as_ref() {
                    Some(a) => format!("serving version {:?}", a.version),
                    None => "no config yet".to_string(),
                };
                if progressed || attempt == 1 {
                    warn!(%error, url = %self.config.control_plane, "config stream down; {serving}; reconnecting");
                } else {
                    debug!(%error, attempt, "config stream still down");
                }
            }
            if progressed {
                delay = backoff.initial;
            }
            let sleep = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
            delay = (delay * 2).min(backoff.max);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One stream: connect, subscribe, apply responses until it ends. `progressed` is set once a
    /// response arrives (the backoff then starts over).
    async fn stream(&mut self, progressed: &mut bool) -> Result<(), StreamError> {
        let url = self.config.control_plane.clone();
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|source| StreamError::InvalidUri { url, source })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = endpoint.connect().await.map_err(StreamError::Connect)?;
        let mut client = ConfigDiscoveryClient::new(channel);

        let (tx, rx) = mpsc::channel(4);
        let node = &self.config.node;
        let first = pb::DiscoveryRequest {
            node: Some(pb::Node {
                kind: node.kind.clone(),
                namespace: node.namespace.clone(),
                name: node.name.clone(),
                identity: String::new(),
                build_version: node.build_version.clone(),
                ingress_class: node
                    .ingress
                    .as_ref()
                    .map(|i| i.class.clone())
                    .unwrap_or_default(),
                ingress_http_port: node.ingress.as_ref().map_or(0, |i| i.http_port.into()),
                ingress_https_port: node.ingress.as_ref().map_or(0, |i| i.https_port.into()),
                sidecar: node.sidecar.as_ref().map(|s| pb::SidecarNode {
                    outbound_port: s.outbound_port.into(),
                    inbound_address: s.inbound_address.clone(),
                    app_address: s.app_address.clone(),
                    app_ports: s
                        .app_ports
                        .iter()
                        .map(|(l, a)| (u32::from(*l), u32::from(*a)))
                        .collect(),
                }),
            }),
            initial_resource_versions: self.versions.clone().into_iter().collect(),
            response_nonce: String::new(),
            error_detail: None,
        };
        let held = first.initial_resource_versions.len();
        tx.send(first).await.map_err(|_| StreamError::Closed)?;
        let mut responses = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        info!(held, "config stream open");
        while let Some(resp) = responses.message().await? {
            *progressed = true;
            let answer = self.handle(resp);
            if tx.send(answer).await.is_err() {
                return Err(StreamError::Closed);
            }
        }
        Err(StreamError::Closed)
    }

    /// Applies one response and returns the ACK or NACK.
    fn handle(&mut self, resp: pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        let nonce = resp.nonce.clone();
        let version = resp.system_version.clone();
        let error_detail = match self.update(resp) {
            Ok(()) => {
                info!(%version, resources = self.versions.len(), "config applied");
                None
            }
            Err(reason) => {
                warn!(%version, %reason, "config rejected (NACK); the previous config keeps serving");
                self.metrics.nack();
                Some(pb::ErrorDetail { message: reason })
            }
        };
        pb::DiscoveryRequest {
            node: None,
            initial_resource_versions: Default::default(),
            response_nonce: nonce,
            error_detail,
        }
    }

    fn update(&mut self, resp: pb::DiscoveryResponse) -> Result<(), String> {
        let mut versions = self.versions.clone();
        let mut removed = Vec::with_capacity(resp.removed.len());
        for (i, key) in resp.removed.iter().enumerate() {
            let kind = pb::ResourceType::try_from(key.r#type)
                .ok()
                .and_then(Kind::from_type)
                .ok_or_else(|| {
                    format!(
                        "removed[{i}]: unknown resource type {} for {:?}",
                        key.r#type, key.name
                    )
                })?;
            versions.remove(&kind.key(&key.name));
            removed.push((kind, key.name.as_str()));
        }
        for res in &resp.resources {
            let kind = res
                .resource_kind()
                .ok_or_else(|| format!("{}: kind: resource carries no payload", res.name))?;
            versions.insert(kind.key(&res.name), res.version.clone());
        }
        let previous = self
            .applied
            .borrow()
            .as_ref()
            .map(|a| a.snapshot.clone())
            .unwrap_or_default();
        let snapshot =
            proto::merge_resources(previous, removed, resp.resources).map_err(|e| e.to_string())?;
        self.applier
            .apply(&resp.system_version, &snapshot)
            .map_err(|e| e.to_string())?;
        self.versions = versions;
        let previous = self.applied.borrow().as_ref().map(|a| a.version.clone());
        self.metrics.ack(previous.as_deref(), &resp.system_version);
        self.applied.send_replace(Some(Arc::new(Applied {
            version: resp.system_version,
            snapshot,
        })));
        Ok(())
    }
}
