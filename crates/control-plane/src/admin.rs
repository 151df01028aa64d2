//! The admin HTTP server: liveness, readiness, proxies, config dumps and metrics, on its own port.
//!
//! | path | answer |
//! |---|---|
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once the first manifest load is done and gRPC is listening, else 503 |
//! | `GET /debug/proxies` | JSON: every connected proxy, its acknowledged version and last NACK |
//! | `GET /config_dump?gateway=ns/name` | JSON: the IR snapshot of that gateway, with diagnostics |
//! | `GET /status` | JSON: the status conditions of the Gateway API objects (GatewayClasses, Gateways and their listeners, each route's parents) |
//! | `GET /metrics` | Prometheus text format |

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{self, Metrics};
use crate::snapshots::Snapshots;
use crate::xds::Proxies;

/// Readiness latches.
#[derive(Debug, Default)]
pub struct Readiness {
    manifests_loaded: AtomicBool,
    grpc_listening: AtomicBool,
}

impl Readiness {
    pub fn set_manifests_loaded(&self) {
        self.manifests_loaded.store(true, Ordering::Release);
    }

    pub fn set_grpc_listening(&self) {
        self.grpc_listening.store(true, Ordering::Release);
    }

    /// What is still missing; empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.manifests_loaded.load(Ordering::Acquire) {
            out.push("manifests not loaded");
        }
        if !self.grpc_listening.load(Ordering::Acquire) {
            out.push("gRPC not listening");
        }
        out
    }
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub readiness: Arc<Readiness>,
    /// Unset until the manifests are loaded.
    pub snapshots: Arc<std::sync::OnceLock<Snapshots>>,
    pub proxies: Proxies,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/debug/proxies", get(proxies))
        .route("/config_dump", get(config_dump))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(s): State<AdminState>) -> Response {
    let missing = s.readiness.missing();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join(", ")),
        )
            .into_response()
    }
}

async fn proxies(State(s): State<AdminState>) -> Response {
    axum::Json(json!({ "proxies": s.proxies.list() })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DumpQuery {
    gateway: Option<String>,
    /// The snapshot of a gateway started with `--ingress-class` (and `--gateway` when `gateway`
    /// is given too).
    ingress_class: Option<String>,
    http_port: Option<u16>,
    https_port: Option<u16>,
    /// The snapshot of the sidecar of this VirtualNode (`<namespace>/<name>`), with its
    /// outbound port (default 15001) and the application on 127.0.0.1 at the listener ports.
    sidecar: Option<String>,
    outbound_port: Option<u16>,
}

async fn config_dump(State(s): State<AdminState>, Query(q): Query<DumpQuery>) -> Response {
    let sidecar = q.sidecar.is_some();
    let gateway = match q.gateway.as_deref().or(q.sidecar.as_deref()) {
        None if q.ingress_class.is_none() => {
            return (
                StatusCode::BAD_REQUEST,
                "missing query parameter: gateway=<namespace>/<name>, ingressClass=<name> or sidecar=<namespace>/<name>\n",
            )
                .into_response();
        }
        None => None,
        Some(g) => match g
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
        {
            Some((ns, name)) => Some((ns.to_string(), name.to_string())),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("gateway and sidecar must be <namespace>/<name>, got {g:?}\n"),
                )
                    .into_response();
            }
        },
    };
    let Some(snapshots) = s.snapshots.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "manifests not loaded yet\n",
        )
            .into_response();
    };
    // With `ingressClass`, a gateway started with `--ingress-class` (the ports default as the
    // gateway's flags do).
    let served = crate::snapshots::Served {
        gateway,
        ingress: q
            .ingress_class
            .as_ref()
            .map(|class| crate::translate::ingress::IngressTarget {
                class: class.clone(),
                http_port: q.http_port.unwrap_or(80),
                https_port: q.https_port.unwrap_or(443),
            }),
        sidecar: sidecar.then(|| crate::translate::SidecarTarget {
            outbound_port: q.outbound_port.unwrap_or(15001),
            inbound_address: String::new(),
            app_address: "127.0.0.1".into(),
            app_ports: Default::default(),
        }),
    };
    let c = snapshots.served(&served);
    let mut head = if sidecar {
        json!({ "sidecar": q.sidecar })
    } else {
        json!({ "gateway": q.gateway })
    };
    if let Some(class) = &q.ingress_class {
        head["ingressClass"] = json!(class);
    }
    dump(head, &c)
}

/// A snapshot, its versions and diagnostics, after the fields that say whose it is.
fn dump(mut head: serde_json::Value, c: &crate::snapshots::Computed) -> Response {
    let diagnostics: Vec<String> = c
        .translation
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(m) = head.as_object_mut() {
        m.insert("systemVersion".into(), json!(c.system_version));
        m.insert("worldVersion".into(), json!(c.inputs_version.0));
        m.insert("dnsVersion".into(), json!(c.inputs_version.1));
        m.insert("diagnostics".into(), json!(diagnostics));
        m.insert("snapshot".into(), json!(c.translation.snapshot));
    }
    axum::Json(head).into_response()
}

/// The Gateway API status of the current world, computed as a controller would write it.
async fn status(State(s): State<AdminState>) -> Response {
    let Some(snapshots) = s.snapshots.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "manifests not loaded yet\n",
        )
            .into_response();
    };
    let world = snapshots.world();
    let dns = snapshots.dns();
    let inputs = crate::translate::Inputs {
        world: &world,
        dns: &dns,
    };
    axum::Json(json!({
        "worldVersion": world.version,
        "statuses": crate::translate::gatewayapi::statuses(&inputs),
    }))
    .into_response()
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    if let Some(snapshots) = s.snapshots.get() {
        s.metrics
            .world_version
            .set(i64::try_from(snapshots.world().version).unwrap_or(i64::MAX));
        s.metrics
            .dns_version
            .set(i64::try_from(snapshots.dns().version).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&s.registry),
    )
        .into_response()
}
