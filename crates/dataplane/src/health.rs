//! Active health checks (App Mesh listener `healthCheck`): one task per cluster, check and
//! endpoint, probing every `interval` with a `timeout`:
//!
//! | protocol | healthy when |
//! |---|---|
//! | `http` | `GET path` over HTTP/1.1 is answered 200–399 |
//! | `http2` | the same over HTTP/2 prior knowledge (h2c) |
//! | `grpc` | `grpc.health.v1.Health/Check` (empty service name) over h2c answers `SERVING` |
//! | `tcp` | a connection is accepted |
//!
//! An endpoint becomes unhealthy after `unhealthyThreshold` failed probes in a row and healthy
//! again after `healthyThreshold` successes in a row. Endpoints start healthy (a new endpoint
//! takes traffic at once; App Mesh's minimum interval is 5 s), and the first probe runs when the
//! task starts. Status 200–399 is healthy, as for Kubernetes HTTP probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bowline_model::ir;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, info};

use crate::metrics::ResilienceStats;
use crate::resilience::EndpointState;

const USER_AGENT: &str = "bowline-health-check";
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Starts checking the endpoint `addr` (at the check's port, if it names one).
pub fn spawn(
    addr: SocketAddr,
    check: ir::HealthCheck,
    state: Arc<EndpointState>,
    stats: ResilienceStats,
) -> JoinHandle<()> {
    let span = tracing::info_span!("health_check", endpoint = %addr);
    tokio::spawn(run(addr, check, state, stats).instrument(span))
}

/// Restores the endpoint when its checks stop (unless newer checks own it by then).
struct Owner {
    state: Arc<EndpointState>,
    generation: u64,
    stats: ResilienceStats,
    endpoint: String,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.state.owns_checks(self.generation) {
            self.state.set_healthy(true);
            self.stats.forget_endpoint(&self.endpoint);
        }
    }
}

async fn run(
    addr: SocketAddr,
    check: ir::HealthCheck,
    state: Arc<EndpointState>,
    stats: ResilienceStats,
) {
    let target = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    let owner = Owner {
        generation: state.claim_checks(),
        state,
        stats,
        endpoint: addr.to_string(),
    };
    let mut machine = Verdict::new(owner.state.healthy(), &check);
    let mut interval = tokio::time::interval(Duration::from_millis(check.interval_ms.max(1)));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let timeout = Duration::from_millis(check.timeout_ms.max(1));
        let result = match tokio::time::timeout(timeout, probe(target, &check)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let changed = machine.observe(result.is_ok());
        if !owner.state.owns_checks(owner.generation) {
            return;
        }
        if let Some(healthy) = changed {
            match &result {
                Ok(()) => info!(healthy, "endpoint health changed"),
                Err(why) => info!(healthy, %why, "endpoint health changed"),
            }
        }
        owner.state.set_healthy(machine.healthy);
        owner
            .stats
            .set_endpoint_health(&owner.endpoint, machine.healthy);
    }
}

/// Consecutive results against the thresholds.
#[derive(Debug)]
struct Verdict {
    healthy: bool,
    successes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Verdict {
    fn new(healthy: bool, check: &ir::HealthCheck) -> Verdict {
        Verdict {
            healthy,
            successes: 0,
            failures: 0,
            healthy_threshold: check.healthy_threshold.max(1),
            unhealthy_threshold: check.unhealthy_threshold.max(1),
        }
    }

    /// Counts one probe; returns the new verdict when it changed.
    fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.healthy && self.successes >= self.healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.healthy && self.failures >= self.unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// One probe; the error says why it failed.
async fn probe(target: SocketAddr, check: &ir::HealthCheck) -> Result<(), String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    let path = check.path.as_deref().unwrap_or("/");
    let authority = target.to_string();
    match check.protocol {
        ir::Protocol::Tcp => Ok(()),
        ir::Protocol::Http => {
            let (mut send, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(http::header::HOST, &authority)
                .header(http::header::USER_AGENT, USER_AGENT)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            http_verdict(resp.status())
        }
        ir::Protocol::Http2 => {
            let mut send = h2c(io).await?;
            let req = Request::builder()
                .method(Method::GET)
                .uri(format!("http://{authority}{path}"))
                .header(http::header::USER_AGENT, USER_AGENT)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            http_verdict(resp.status())
        }
        ir::Protocol::Grpc => {
            let mut send = h2c(io).await?;
            let req = Request::builder()
                .method(Method::POST)
                .uri(format!("http://{authority}{GRPC_HEALTH_CHECK}"))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("te", "trailers")
                .header(http::header::USER_AGENT, USER_AGENT)
                // An empty HealthCheckRequest (service ""), uncompressed, length 0.
                .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                .map_err(|e| e.to_string())?;
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            if resp.status() != StatusCode::OK {
                return Err(format!("HTTP status {}", resp.status()));
            }
            let header_status = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let collected = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            let status = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or(header_status);
            if status.as_deref() != Some("0") {
                return Err(format!(
                    "grpc-status {}",
                    status.as_deref().unwrap_or("missing")
                ));
            }
            match serving_status(&collected.to_bytes()) {
                Some(SERVING) => Ok(()),
                Some(s) => Err(format!("serving status {s}")),
                None => Err("no HealthCheckResponse".into()),
            }
        }
    }
}

async fn h2c(io: TokioIo<TcpStream>) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

fn http_verdict(status: StatusCode) -> Result<(), String> {
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("HTTP status {status}"))
    }
}

/// The `status` field (1, varint) of a length-prefixed `HealthCheckResponse`; 0 (UNKNOWN) when
/// the message leaves it out.
fn serving_status(frame: &[u8]) -> Option<u64> {
    let (header, rest) = frame.split_at_checked(5)?;
    if header[0] != 0 {
        return None; // compressed: we asked for none
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut msg = rest.get(..len)?;
    let mut status = 0;
    while let Some((&tag, tail)) = msg.split_first() {
        msg = tail;
        let (value, tail) = varint(msg)?;
        match tag {
            0x08 => {
                status = value;
                msg = tail;
            }
            // Length-delimited fields of later versions: skip them.
            t if t & 7 == 2 => msg = tail.get(usize::try_from(value).ok()?..)?,
            t if t & 7 == 0 => msg = tail,
            _ => return None,
        }
    }
    Some(status)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http::Response;
    use hyper::body::Incoming;
    use hyper_util::server::conn::auto;
    use tokio::net::TcpListener;

    fn check(protocol: ir::Protocol, path: Option<&str>) -> ir::HealthCheck {
        ir::HealthCheck {
            protocol,
            interval_ms: 5000,
            timeout_ms: 2000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            path: path.map(Into::into),
            port: None,
        }
    }

    /// Status, headers and body of an answer.
    type Answer = (u16, Vec<(&'static str, &'static str)>, Vec<u8>);

    /// A server answering every request with `answer(path)`.
    async fn server(answer: fn(&str) -> Answer) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            let (status, headers, body) = answer(req.uri().path());
                            let mut resp = Response::builder().status(status);
                            for (k, v) in headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
                        });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_accept_2xx_and_3xx_only() {
        let addr = server(|path| match path {
            "/ok" => (204, vec![], vec![]),
            "/moved" => (302, vec![("location", "/ok")], vec![]),
            _ => (503, vec![], vec![]),
        })
        .await;
        for proto in [ir::Protocol::Http, ir::Protocol::Http2] {
            assert!(
                probe(addr, &check(proto, Some("/ok"))).await.is_ok(),
                "{proto:?}"
            );
            assert!(probe(addr, &check(proto, Some("/moved"))).await.is_ok());
            let err = probe(addr, &check(proto, Some("/down"))).await.unwrap_err();
            assert!(err.contains("503"), "{err}");
        }
    }

    #[tokio::test]
    async fn grpc_probes_want_serving() {
        // HealthCheckResponse { status: SERVING } and { status: NOT_SERVING }.
        let serving = server(|_| {
            (
                200,
                vec![("content-type", "application/grpc"), ("grpc-status", "0")],
                vec![0, 0, 0, 0, 2, 0x08, 0x01],
            )
        })
        .await;
        assert!(
            probe(serving, &check(ir::Protocol::Grpc, None))
                .await
                .is_ok()
        );
        let not_serving = server(|_| {
            (
                200,
                vec![("content-type", "application/grpc"), ("grpc-status", "0")],
                vec![0, 0, 0, 0, 2, 0x08, 0x02],
            )
        })
        .await;
        let err = probe(not_serving, &check(ir::Protocol::Grpc, None))
            .await
            .unwrap_err();
        assert_eq!(err, "serving status 2");
        let unimplemented = server(|_| {
            (
                200,
                vec![("content-type", "application/grpc"), ("grpc-status", "12")],
                vec![],
            )
        })
        .await;
        let err = probe(unimplemented, &check(ir::Protocol::Grpc, None))
            .await
            .unwrap_err();
        assert_eq!(err, "grpc-status 12");
    }

    #[tokio::test]
    async fn tcp_probes_want_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(probe(addr, &check(ir::Protocol::Tcp, None)).await.is_ok());
        drop(listener);
        assert!(probe(addr, &check(ir::Protocol::Tcp, None)).await.is_err());
    }

    #[test]
    fn thresholds_flip_the_verdict() {
        let mut v = Verdict::new(true, &check(ir::Protocol::Tcp, None));
        assert_eq!(v.observe(false), None);
        assert_eq!(v.observe(false), None);
        assert_eq!(v.observe(true), None, "a success resets the failures");
        assert_eq!(v.observe(false), None);
        assert_eq!(v.observe(false), None);
        assert_eq!(v.observe(false), Some(false), "third failure in a row");
        assert_eq!(v.observe(true), None);
        assert_eq!(v.observe(true), Some(true), "second success in a row");
    }

    #[test]
    fn serving_status_parses_the_response_message() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x01]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None);
        assert_eq!(serving_status(&[0, 0, 0]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_marks_a_failing_endpoint_unhealthy_and_restores_it_when_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let state = Arc::new(EndpointState::default());
        let stats = crate::metrics::ProxyMetrics::default().resilience("c");
        let mut c = check(ir::Protocol::Tcp, None);
        c.interval_ms = 10;
        c.unhealthy_threshold = 2;
        let task = spawn(addr, c, state.clone(), stats);
        while state.healthy() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let _ = task.await;
        assert!(
            state.healthy(),
            "stopped checks leave the endpoint to the others"
        );
    }
}
