//! The engine: config client + proxy + admin server, wired together. A binary builds an
//! [`EngineConfig`], calls [`Engine::start`], waits for a signal and calls [`Engine::shutdown`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bowline_model::ir;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{AdminServer, AdminState};
use crate::config::{Applied, Apply, Backoff, ClientConfig, ConfigClient, Node};
use crate::metrics::{ConfigMetrics, ProxyMetrics};
use crate::proxy::{ApplyError, EdgeConfig, Proxy, ProxyConfig};
use crate::readiness::{Latch, Readiness};

/// Everything the engine needs to start.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `http://host:port` of the control plane's gRPC server.
    pub control_plane: String,
    /// Who this proxy is.
    pub node: Node,
    /// Address listeners bind when the IR gives none.
    pub bind: IpAddr,
    /// Address of the admin server (port 0 picks one).
    pub admin_addr: SocketAddr,
    pub backoff: Backoff,
    /// Request limits and the trust boundary for forwarding headers.
    pub edge: EdgeConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen on the admin address {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running engine.
pub struct Engine {
    proxy: Proxy,
    readiness: Readiness,
    applied: watch::Receiver<Option<Arc<Applied>>>,
    admin_addr: SocketAddr,
    stop_config: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Applies config updates to the proxy and releases the readiness latch on the first success.
struct ProxyApply {
    proxy: Proxy,
    ready: Mutex<Option<Latch>>,
}

impl Apply for ProxyApply {
    type Error = ApplyError;

    fn apply(&self, _version: &str, snapshot: &ir::Snapshot) -> Result<(), ApplyError> {
        self.proxy.apply(snapshot)?;
        if let Some(latch) = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            latch.release();
            info!("first config applied: ready");
        }
        Ok(())
    }
}

// === impl Engine ===

impl Engine {
    /// Binds the admin server and starts the config client; listeners come with the config.
    pub async fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let mut registry = Registry::default();
        let proxy_metrics = ProxyMetrics::register(&mut registry);
        let config_metrics = ConfigMetrics::register(&mut registry);
        let readiness = Readiness::default();
        let proxy = Proxy::new(
            ProxyConfig {
                bind: config.bind,
                edge: config.edge.clone(),
            },
            proxy_metrics,
        );
        let client = ConfigClient::new(
            ClientConfig {
                control_plane: config.control_plane.clone(),
                node: config.node.clone(),
                backoff: config.backoff,
            },
            ProxyApply {
                proxy: proxy.clone(),
                ready: Mutex::new(Some(readiness.register("config"))),
            },
            config_metrics,
        );
        let applied = client.subscribe();

        let admin = AdminServer::bind(config.admin_addr)
            .await
            .map_err(|source| EngineError::Admin {
                addr: config.admin_addr,
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| EngineError::Admin {
            addr: config.admin_addr,
            source,
        })?;
        let (stop_admin, mut admin_stopped) = watch::channel(false);
        let admin_task = tokio::spawn(admin.serve(
            AdminState {
                registry: Arc::new(registry),
                readiness: readiness.clone(),
                config: applied.clone(),
            },
            async move {
                let _ = admin_stopped.wait_for(|s| *s).await;
            },
        ));

        let (stop_config, config_stopped) = watch::channel(false);
        info!(
            control_plane = %config.control_plane,
            node = %format_args!("{}/{}", config.node.namespace, config.node.name),
            ingress_class = config.node.ingress.as_ref().map(|i| i.class.as_str()),
            "starting"
        );
        let client_task = tokio::spawn(client.run(config_stopped));

        Ok(Engine {
            proxy,
            readiness,
            applied,
            admin_addr,
            stop_config,
            stop_admin,
            tasks: vec![client_task, admin_task],
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The config in service (`None` before the first).
    pub fn config(&self) -> watch::Receiver<Option<Arc<Applied>>> {
        self.applied.clone()
    }

    /// Listeners accepting connections: name and bound address.
    pub fn listening(&self) -> Vec<(String, SocketAddr)> {
        self.proxy.listening()
    }

    /// Stops taking config, stops accepting, lets in-flight requests finish for up to
    /// `drain_timeout`, then stops the admin server. Returns `false` if connections were still
    /// open at the deadline.
    pub async fn shutdown(self, drain_timeout: Duration) -> bool {
        let _draining = self.readiness.register("draining");
        self.stop_config.send_replace(true);
        info!(?drain_timeout, "draining");
        let drained = self.proxy.drain(drain_timeout).await;
        if drained {
            info!("drained");
        } else {
            warn!(
                ?drain_timeout,
                "connections still open at the drain deadline"
            );
        }
        self.stop_admin.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        drained
    }
}
