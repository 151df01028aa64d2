//! The Bowline control plane (standalone mode): a manifest directory store, service discovery,
//! translation of resources into IR snapshots, the ConfigDiscovery gRPC server and the admin
//! HTTP server.
//!
//! Flow: [`store`] (watch a directory) → `watch<Arc<World>>` → [`discovery`] (DNS names of the
//! world, refreshed on TTL) → `watch<Arc<DnsTable>>` → [`snapshots`] ([`translate`] per proxy,
//! cached per input version) → [`xds`] streams (delta, ACK/NACK) and [`admin`].
//!
//! `Args` (flags and environment) → [`Config`] → [`App::build`] (binds, loads, spawns) →
//! [`App::shutdown`] + [`App::join`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod discovery;
pub mod metrics;
pub mod snapshots;
pub mod store;
pub mod translate;
pub mod world;
pub mod xds;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Command-line flags; each can also be set through its environment variable.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "bowline-control-plane",
    version,
    about = "The Bowline control plane"
)]
pub struct Args {
    /// Directory of Kubernetes-style manifests to load and watch (standalone mode).
    #[arg(long, env = "BOWLINE_MANIFESTS", value_name = "DIR")]
    pub manifests: PathBuf,
    /// Address of the ConfigDiscovery gRPC server.
    #[arg(long, env = "BOWLINE_GRPC_ADDR", default_value = "0.0.0.0:15010")]
    pub grpc_addr: SocketAddr,
    /// Address of the admin HTTP server (live, ready, metrics, debug).
    #[arg(long, env = "BOWLINE_ADMIN_ADDR", default_value = "127.0.0.1:15011")]
    pub admin_addr: SocketAddr,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (`info`, `bowline_control_plane=debug,info`).
    #[arg(long, env = "BOWLINE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, env = "BOWLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Directory where the PEM of Ingress TLS Secrets is written for gateways on this host to
    /// read (owner-only permissions). Default: a private temporary directory, removed on exit.
    #[arg(long, env = "BOWLINE_INGRESS_TLS_DIR", value_name = "DIR")]
    pub ingress_tls_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The effective configuration of the server (logging is set up by the binary).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub manifests: PathBuf,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_tls_dir: Option<PathBuf>,
}

impl From<&Args> for Config {
    fn from(a: &Args) -> Self {
        Config {
            manifests: a.manifests.clone(),
            grpc_addr: a.grpc_addr,
            admin_addr: a.admin_addr,
            ingress_tls_dir: a.ingress_tls_dir.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (exit code 64).
    #[error(transparent)]
    Manifests(#[from] store::Error),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether the error comes from the configuration (as opposed to the environment).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Manifests(_))
    }
}

/// A running control plane.
pub struct App {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub readiness: Arc<admin::Readiness>,
    drain: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<Result<(), Error>>)>,
    stopped: mpsc::UnboundedReceiver<&'static str>,
}

impl App {
    /// Binds both ports, loads the manifests, and starts every component.
    pub async fn build(config: Config) -> Result<App, Error> {
        info!(config = %serde_json::to_string(&config).unwrap_or_default(), "starting");
        let (drain, drain_rx) = watch::channel(false);
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { what, addr, source })
        };
        let admin_listener = bind("admin", config.admin_addr).await?;
        let grpc_listener = bind("gRPC", config.grpc_addr).await?;
        let admin_addr = local_addr(&admin_listener, config.admin_addr);
        let grpc_addr = local_addr(&grpc_listener, config.grpc_addr);

        let readiness = Arc::new(admin::Readiness::default());
        let (metrics, registry) = metrics::Metrics::new();
        let proxies = xds::Proxies::default();
        let snapshots_cell = Arc::new(OnceLock::new());
        let (stopped_tx, stopped) = mpsc::unbounded_channel();
        let mut tasks: Vec<(&'static str, JoinHandle<Result<(), Error>>)> = Vec::new();
        let mut spawn = |what: &'static str,
                         fut: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
        >| {
            let stopped_tx = stopped_tx.clone();
            tasks.push((
                what,
                tokio::spawn(async move {
                    let r = fut.await;
                    let _ = stopped_tx.send(what);
                    r
                }),
            ));
        };

        // Admin first, so that /live answers while the manifests load.
        let admin_state = admin::AdminState {
            readiness: readiness.clone(),
            snapshots: snapshots_cell.clone(),
            proxies: proxies.clone(),
            metrics: metrics.clone(),
            registry: Arc::new(registry),
        };
        let shutdown = shutdown_future(drain_rx.clone());
        spawn(
            "admin server",
            Box::pin(async move {
                admin::serve(admin_listener, admin_state, shutdown)
                    .await
                    .map_err(|e| Error::Serve {
                        what: "admin server",
                        source: Box::new(e),
                    })
            }),
        );
        info!(addr = %admin_addr, "admin server listening");

        let (world_rx, store_task) =
            store::spawn(config.manifests.clone(), drain_rx.clone()).await?;
        spawn("manifest store", Box::pin(flatten(store_task)));
        readiness.set_manifests_loaded();

        let (dns_rx, dns_task) = discovery::spawn_dns(
            world_rx.clone(),
            Arc::new(discovery::SystemResolver::new()),
            drain_rx.clone(),
        );
        spawn("DNS discovery", Box::pin(flatten(dns_task)));

        let snapshots = snapshots::Snapshots::new(world_rx, dns_rx)
            .with_ingress_tls_dir(config.ingress_tls_dir.clone());
        let _ = snapshots_cell.set(snapshots.clone());

        let service =
            xds::ConfigDiscoveryService::new(snapshots, proxies, metrics, drain_rx.clone());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let shutdown = shutdown_future(drain_rx.clone());
        spawn(
            "gRPC server",
            Box::pin(async move {
                tonic::transport::Server::builder()
                    .add_service(service.into_server())
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .map_err(|e| Error::Serve {
                        what: "gRPC server",
                        source: Box::new(e),
                    })
            }),
        );
        readiness.set_grpc_listening();
        info!(addr = %grpc_addr, "gRPC ConfigDiscovery server listening");

        Ok(App {
            grpc_addr,
            admin_addr,
            readiness,
            drain,
            tasks,
            stopped,
        })
    }

    /// Starts a graceful shutdown: servers stop accepting, streams close.
    pub fn shutdown(&self) {
        let _ = self.drain.send(true);
    }

    /// Waits for every component to stop; the first error wins.
    pub async fn join(self) -> Result<(), Error> {
        let mut result = Ok(());
        for (what, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "{what} stopped with an error");
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Err(e) => warn!(error = %e, "{what} task failed"),
            }
        }
        info!("stopped");
        result
    }
}

/// Runs until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut app = App::build(config).await?;
    tokio::select! {
        _ = shutdown => info!("shutting down"),
        Some(what) = app.stopped.recv() => warn!("{what} stopped unexpectedly; shutting down"),
    }
    app.shutdown();
    app.join().await
}

fn local_addr(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

/// Completes once the drain signal is raised (or its sender is gone).
pub(crate) async fn drained(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}

async fn shutdown_future(mut rx: watch::Receiver<bool>) {
    drained(&mut rx).await
}

async fn flatten(task: JoinHandle<()>) -> Result<(), Error> {
    task.await.map_err(|e| Error::Serve {
        what: "task",
        source: Box::new(e),
    })
}
