//! The admin server, on its own address (never a data port), shared by every proxy binary:
//!
//! * `GET /live`: 200 `live` while the process runs.
//! * `GET /ready`: 200 `ready` once every readiness latch is released (for proxies: the first
//!   config is applied and its listeners are bound), else 503 naming what is pending.
//! * `GET /config_dump`: JSON `{"version": ..., "snapshot": ...}` of the config in service
//!   (`null`s before the first one).
//! * `GET /metrics`: Prometheus text format.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use crate::config::Applied;
use crate::readiness::Readiness;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub readiness: Readiness,
    pub config: watch::Receiver<Option<Arc<Applied>>>,
}

/// A bound admin server; [`AdminServer::serve`] runs it.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
}

// === impl AdminServer ===

impl AdminServer {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<AdminServer> {
        Ok(AdminServer {
            listener: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, state: AdminState, shutdown: impl Future<Output = ()>) {
        let state = Arc::new(state);
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "admin server listening");
        }
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        warn!(%error, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            let conn = async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &req)) }
                });
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                if let Err(error) = result {
                    debug!(%error, "admin connection failed");
                }
            };
            tokio::spawn(conn.instrument(tracing::debug_span!("admin", %peer)));
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            let pending = state.readiness.pending();
            if pending.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", pending.join(", ")),
                )
            }
        }
        "/config_dump" => {
            let applied = state.config.borrow().clone();
            let body = match &applied {
                Some(a) => serde_json::to_vec_pretty(&**a),
                None => serde_json::to_vec_pretty(&serde_json::json!({
                    "version": null,
                    "snapshot": null,
                })),
            };
            match body {
                Ok(json) => {
                    let mut resp = Response::new(Full::new(Bytes::from(json)));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    resp
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::prometheus_text::encode(&mut out, &state.registry) {
                Ok(()) => {
                    let mut resp = Response::new(Full::new(Bytes::from(out)));
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        ),
                    );
                    resp
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /config_dump, /metrics\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ConfigMetrics;
    use bowline_model::ir;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let resp = client
            .get(format!("http://{addr}{path}").parse().unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn endpoints() {
        let mut registry = Registry::default();
        let metrics = ConfigMetrics::register(&mut registry);
        let readiness = Readiness::default();
        let latch = readiness.register("config");
        let (config_tx, config) = watch::channel(None);
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = AdminState {
            registry: Arc::new(registry),
            readiness: readiness.clone(),
            config,
        };
        let task = tokio::spawn(server.serve(state, async move {
            let _ = stopped.await;
        }));

        assert_eq!(get(addr, "/live").await, (200, "live\n".into()));
        assert_eq!(
            get(addr, "/ready").await,
            (503, "not ready: config\n".into())
        );
        let (status, body) = get(addr, "/config_dump").await;
        assert_eq!(status, 200);
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(j["version"].is_null());

        config_tx.send_replace(Some(Arc::new(Applied {
            version: "v7".into(),
            snapshot: ir::Snapshot {
                clusters: vec![ir::Cluster {
                    name: "c".into(),
                    protocol: ir::Protocol::Http,
                    lb_policy: ir::LbPolicy::RoundRobin,
                    connect_timeout_ms: 1,
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
                ..Default::default()
            },
        })));
        metrics.ack(None, "v7");
        latch.release();

        assert_eq!(get(addr, "/ready").await, (200, "ready\n".into()));
        let (_, body) = get(addr, "/config_dump").await;
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["version"], "v7");
        assert_eq!(j["snapshot"]["clusters"][0]["name"], "c");
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains(r#"bowline_config_applied_info{version="v7"} 1"#),
            "{body}"
        );
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop.send(()).unwrap();
        task.await.unwrap();
    }
}
